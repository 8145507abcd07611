#include "config.h"

/* Mounts of one vault on one machine: see mount_peers.h. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto.h"
#include "error.h"
#include "mount_peers.h"

struct mount_peers {
    int vault_fd;              /* CONF.lock, shared */
    int own_fd;                /* CONF.mounts/<hash>.lock, exclusive */
    char dir[PATH_MAX];
    char own_name[MOUNTPOINT_ID_LEN + 6];   /* ID.lock */
};

/* Lock files are shared by the accounts that mount the vault (a user and a
 * backup account may be different local users): read-only opens suffice
 * for flock, so a file another user made still works. */
static int open_lock(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EACCES)
        fd = open(path, O_RDONLY | O_CLOEXEC);
    return fd;
}

void mountpoint_id(const char *mountpoint, char out[MOUNTPOINT_ID_LEN + 1])
{
    char real[PATH_MAX];
    uint8_t h[SHA256_LEN];

    if (!realpath(mountpoint, real))
        snprintf(real, sizeof real, "%s", mountpoint);
    sha256(real, strlen(real), h);
    hex_encode(h, MOUNTPOINT_ID_LEN / 2, out);
}

int mount_peers_join(const char *conf_path, const char *mountpoint, struct mount_peers **out)
{
    struct mount_peers *p = calloc(1, sizeof *p);
    char path[PATH_MAX + 80];
    int rc = 0;

    *out = NULL;
    if (!p)
        return pfs_err(-ENOMEM, "out of memory");
    p->vault_fd = p->own_fd = -1;
    snprintf(path, sizeof path, "%s.lock", conf_path);
    p->vault_fd = open_lock(path);
    if (p->vault_fd < 0) {
        rc = pfs_err(-errno, "cannot open the lock %s: %s", path, strerror(errno));
        goto fail;
    }
    if (flock(p->vault_fd, LOCK_SH | LOCK_NB) < 0) {
        rc = pfs_err(-EBUSY, "a repair (pactfs-fsck) holds %s; mount when it has finished",
                     path);
        goto fail;
    }
    snprintf(p->dir, sizeof p->dir, "%s.mounts", conf_path);
    /* Sticky and world-writable like /tmp: each mount's file is its own. */
    if (mkdir(p->dir, 01777) == 0)
        chmod(p->dir, 01777);   /* past the umask */
    else if (errno != EEXIST) {
        rc = pfs_err(-errno, "cannot create %s: %s", p->dir, strerror(errno));
        goto fail;
    }
    mountpoint_id(mountpoint, p->own_name);
    memcpy(p->own_name + MOUNTPOINT_ID_LEN, ".lock", 6);
    snprintf(path, sizeof path, "%s/%s", p->dir, p->own_name);
    p->own_fd = open_lock(path);
    if (p->own_fd < 0) {
        rc = pfs_err(-errno, "cannot open the lock %s: %s", path, strerror(errno));
        goto fail;
    }
    if (flock(p->own_fd, LOCK_EX | LOCK_NB) < 0) {
        rc = pfs_err(-EBUSY, "this vault is already mounted at %s (%s is held); unmount it "
                     "first or mount at another directory", mountpoint, path);
        goto fail;
    }
    *out = p;
    return 0;
fail:
    mount_peers_leave(p);
    return rc;
}

/* Is the mount whose lock file is dir/name live?  A file nobody holds was
 * left by a crash: removed (when this user may). */
static int peer_live(const struct mount_peers *p, const char *name)
{
    char path[PATH_MAX + 80];
    int fd, live;

    snprintf(path, sizeof path, "%s/%s", p->dir, name);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return 0;
    live = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
    if (!live)
        unlink(path);
    close(fd);
    return live;
}

int mount_peers_alone(struct mount_peers *p)
{
    DIR *d;
    struct dirent *e;
    int alone = 1;

    if (!p)
        return 1;
    d = opendir(p->dir);
    if (!d)
        return 0;   /* cannot tell: assume company (the safe side) */
    while (alone && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".lock") || !strcmp(e->d_name, p->own_name))
            continue;
        if (peer_live(p, e->d_name))
            alone = 0;
    }
    closedir(d);
    return alone;
}

void mount_peers_leave(struct mount_peers *p)
{
    if (!p)
        return;
    if (p->own_fd >= 0) {
        char path[PATH_MAX + 80];
        snprintf(path, sizeof path, "%s/%s", p->dir, p->own_name);
        unlink(path);   /* while still holding it: nobody takes a dying file */
        close(p->own_fd);
    }
    if (p->vault_fd >= 0)
        close(p->vault_fd);
    free(p);
}
