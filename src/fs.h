/* The FUSE front end: translates libfuse low-level calls into vault
 * operations.  It never formats bytes itself (that is envelope.c, object.c
 * and meta_*.c).
 *
 *   fs_ops.c    one function per FUSE operation, permission checks, audit
 *   fs_inode.c  in-memory inode table (lookup counts, cached attributes,
 *               open-unlinked files kept until the last release/forget)
 *   fs_data.c   file data: bounded plaintext chunk cache with read-ahead,
 *               write-back of dirty chunks (sealed, coded and scattered in
 *               parallel by a worker pool on flush/fsync/release/pressure)
 */
#ifndef PACTFS_FS_H
#define PACTFS_FS_H

#include "vault.h"

struct audit_ship;

struct fs_options {
    int foreground;     /* informational; daemonizing is the caller's job */
    int debug;          /* libfuse debug output */
    int read_only;      /* mount read-only (also forced for read-only grants) */
    int allow_other;
    int ready_fd;       /* >= 0: write one byte here once the mount is live, then close */
    struct mount_peers *peers;   /* other mounts of the vault here (NULL: alone) */
    const char *mountpoint;    /* for the status file */
    const char *status_path;   /* NULL: none; JSON for `pactfs status` */
    const char *metrics_path;  /* NULL: none; Prometheus text exposition */
    struct audit_ship *ship;   /* NULL: audit shipping off */
};

/* Mount v (already unlocked) at mountpoint and serve until unmounted or a
 * SIGINT/SIGTERM/SIGHUP; all dirty data is flushed and durable before it
 * returns.  0 on a clean end; -errno (with pfs_err) if the mount failed. */
int fs_mount_and_serve(struct vault *v, const char *mountpoint, const struct fs_options *o);

#endif
