/* Several mounts of one vault on one machine (docs/desktop.md).
 *
 * Every mount holds a shared flock on CONF.lock (pactfs-fsck's repairing
 * modes take it exclusively, so they never run beside a mount), and an
 * exclusive flock on its own file in CONF.mounts/, named after its
 * mountpoint: a second mount at the same mountpoint is refused, and any
 * mount can tell whether it is the only live one (another's file is
 * locked; a file left by a crashed mount is not, and is removed).
 */
#ifndef PACTFS_MOUNT_PEERS_H
#define PACTFS_MOUNT_PEERS_H

struct mount_peers;

/* Join the mounts of the vault configured at conf_path.  -EBUSY (message
 * set) if this mountpoint is already mounted or a repair holds the vault;
 * other -errno if the lock files cannot be made. */
int mount_peers_join(const char *conf_path, const char *mountpoint, struct mount_peers **out);
/* 1 if no other mount of the vault is live on this machine, 0 if one is.
 * Cheap (an open and a flock per other mount); callers cache it. */
int mount_peers_alone(struct mount_peers *p);
void mount_peers_leave(struct mount_peers *p);

/* A short name for a mountpoint (hex of the SHA-256 of its real path), for
 * the files kept per mount (lock, pid file). */
#define MOUNTPOINT_ID_LEN 16
void mountpoint_id(const char *mountpoint, char out[MOUNTPOINT_ID_LEN + 1]);

#endif
