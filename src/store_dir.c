#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "crashpoint.h"
#include "error.h"
#include "fdcache.h"
#include "store.h"

/* A local directory endpoint.  Object "abcdef" lives at DIR/ab/abcdef.  A put
 * writes DIR/ab/.tmp.<name>.<random> and renames it over the final name, so a
 * reader sees the whole object or none.  Names starting with '.' are never
 * valid objects, so temp files cannot collide with objects and list skips
 * them.  A put_new (a fresh chunk's fragment: a name never used before, read
 * by nobody until the commit that follows the next store_sync) creates the
 * final name with O_EXCL and writes in place: no temp name, no rename.  A
 * crash while it writes leaves that name short or empty, unreferenced, which
 * fsck --orphans reports and --delete-orphans removes once it is 10 minutes
 * old.  Durability is batched in store_sync(): the files written since the
 * last one are fdatasynced together (one journal commit covers them all
 * instead of one per file), then the fan-out directories touched by a put or
 * delete.  Until then a crash may leave a put's name with partial bytes;
 * nothing points at such an object (the metadata records a chunk only after
 * store_sync), and its checksum would not match anyway.  Fan-out directories
 * known to exist are remembered, so a put does not ask mkdir each time. */

#define TMP_PREFIX ".tmp."
#define STALE_TMP_SECONDS 3600
#define NAME_MAX_LEN 128
/* Fan-out dir names are two bytes of [0-9a-z._-]: index a 128 x 128 bitmap. */
#define FANOUT_SLOTS (128 * 128)
/* Written files kept open for the next store_sync (bounds the fds held;
 * beyond it the putter syncs the batch itself). */
#define PENDING_MAX 64
/* Larger objects start their write-back at once, so the sync finds little
 * left to write. */
#define EARLY_WRITEBACK_MIN (64 * 1024)
/* Packs read by range stay open this long (fdcache.h): a directory's small
 * files share a few packs, read one after another. */
#define READ_FDS 16
#define READ_FD_TTL_MS 500

struct dir_store {
    int rootfd;
    pthread_mutex_t dirty_lock;
    int root_dirty;                       /* a fan-out dir was created */
    uint8_t dirty[FANOUT_SLOTS / 8];      /* fan-out dirs awaiting fsync */
    uint8_t known[FANOUT_SLOTS / 8];      /* fan-out dirs seen to exist */
    int pending[PENDING_MAX];             /* written files awaiting fdatasync */
    unsigned npending;
    int sync_err;                         /* an fdatasync failed: sticky, since a
                                             retry would wrongly succeed */
    struct fdcache *reads;                /* packs read by range (NULL: none kept) */
};

static struct dir_store *impl_of(struct store *s)
{
    return s->impl;
}

static int valid_name_char(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || ch == '.' || ch == '_' ||
           ch == '-';
}

static int check_name(struct store *s, const char *name)
{
    size_t n = strnlen(name, NAME_MAX_LEN + 1);

    if (n == 0 || n > NAME_MAX_LEN || name[0] == '.')
        goto bad;
    for (size_t i = 0; i < n; i++)
        if (!valid_name_char(name[i]))
            goto bad;
    return 0;
bad:
    return pfs_err(-EINVAL, "endpoint %s: invalid object name \"%.40s\" (want 1-128 of "
                   "[0-9a-z._-], not starting with '.')", s->desc, name);
}

/* The fan-out directory of a valid name: its first two characters ('_' pads
 * a one-character name). */
static void fanout_of(const char *name, char dir[3])
{
    dir[0] = name[0];
    dir[1] = name[1] ? name[1] : '_';
    dir[2] = '\0';
}

static unsigned fanout_slot(const char dir[3])
{
    return ((unsigned)(dir[0] & 0x7f) << 7) | (unsigned)(dir[1] & 0x7f);
}

static void mark_dirty(struct dir_store *d, const char dir[3], int root_too)
{
    unsigned slot = fanout_slot(dir);

    pthread_mutex_lock(&d->dirty_lock);
    d->dirty[slot / 8] |= (uint8_t)(1u << (slot % 8));
    if (root_too)
        d->root_dirty = 1;
    pthread_mutex_unlock(&d->dirty_lock);
}

/* Object path relative to the root: "ab/name". */
static void object_path(const char *name, char *out, size_t outlen)
{
    char dir[3];

    fanout_of(name, dir);
    snprintf(out, outlen, "%s/%s", dir, name);
}

static int disk_error(struct store *s, const char *what, const char *name, int err)
{
    if (err == ENOSPC || err == EDQUOT)
        return pfs_err(-err, "endpoint %s: disk full while %s object %s; free space on "
                       "that endpoint or add capacity", s->desc, what, name);
    return pfs_err(-err, "endpoint %s: %s object %s failed: %s", s->desc, what, name,
                   strerror(err));
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (w == 0)
            return EIO;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int known_test(struct dir_store *d, const char dir[3])
{
    unsigned slot = fanout_slot(dir);

    pthread_mutex_lock(&d->dirty_lock);
    int on = (d->known[slot / 8] >> (slot % 8)) & 1;
    pthread_mutex_unlock(&d->dirty_lock);
    return on;
}

static void known_set(struct dir_store *d, const char dir[3], int on)
{
    unsigned slot = fanout_slot(dir);

    pthread_mutex_lock(&d->dirty_lock);
    if (on)
        d->known[slot / 8] |= (uint8_t)(1u << (slot % 8));
    else
        d->known[slot / 8] &= (uint8_t)~(1u << (slot % 8));
    pthread_mutex_unlock(&d->dirty_lock);
}

/* Create the fan-out directory if needed; *created tells whether it is new.
 * A directory seen before is taken to exist; a create under it that finds it
 * gone (ENOENT) forgets it and asks again (create_in_fanout).  The root is
 * marked for the next sync before the mkdir: a put that finds the directory
 * just made by another thread must not have its sync miss the root's fsync. */
static int ensure_fanout(struct store *s, const char dir[3], int *created)
{
    struct dir_store *d = impl_of(s);

    *created = 0;
    if (known_test(d, dir))
        return 0;
    mark_dirty(d, dir, 1);
    if (mkdirat(d->rootfd, dir, 0700) == 0)
        *created = 1;
    else if (errno != EEXIST)
        return disk_error(s, "creating directory for", dir, errno);
    known_set(d, dir, 1);
    return 0;
}

/* openat(rel, O_WRONLY | O_CREAT | O_EXCL) in the fan-out dir of name, which
 * is made first if missing; *created as for ensure_fanout.  fd or -errno
 * (a negative pfs_err code when the directory cannot be made). */
static int create_in_fanout(struct store *s, const char *name, const char *rel, int *created)
{
    struct dir_store *d = impl_of(s);
    char dir[3];
    int rc, fd;

    fanout_of(name, dir);
    rc = ensure_fanout(s, dir, created);
    if (rc)
        return rc;
    fd = openat(d->rootfd, rel, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == ENOENT) {   /* removed behind our back: make it again */
        known_set(d, dir, 0);
        rc = ensure_fanout(s, dir, created);
        if (rc)
            return rc;
        fd = openat(d->rootfd, rel, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    return fd >= 0 ? fd : -errno;
}

static int open_temp(struct store *s, const char *name, char *tmp, size_t tmplen,
                     int *created)
{
    char dir[3];

    fanout_of(name, dir);
    for (int attempt = 0; attempt < 8; attempt++) {
        uint64_t r;
        if (getrandom(&r, sizeof r, 0) != sizeof r)
            r = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)attempt;
        snprintf(tmp, tmplen, "%s/" TMP_PREFIX "%s.%016llx", dir, name, (unsigned long long)r);
        int fd = create_in_fanout(s, name, tmp, created);
        if (fd != -EEXIST)
            return fd;
    }
    return -EEXIST;
}

/* fdatasync and close a batch of written files; the first error is kept
 * sticky in the store (the kernel reports a lost write only once). */
static int sync_files(struct dir_store *d, const int *fds, unsigned n)
{
    int err = 0;

    for (unsigned i = 0; i < n; i++) {
        if (fdatasync(fds[i]) != 0 && !err)
            err = errno;
        close(fds[i]);
    }
    if (err) {
        pthread_mutex_lock(&d->dirty_lock);
        if (!d->sync_err)
            d->sync_err = err;
        pthread_mutex_unlock(&d->dirty_lock);
    }
    return err;
}

/* Keep fd for the next store_sync; when the batch is full, sync it here. */
static int defer_sync(struct store *s, int fd)
{
    struct dir_store *d = impl_of(s);
    int batch[PENDING_MAX];
    unsigned n = 0;

    pthread_mutex_lock(&d->dirty_lock);
    if (d->npending == PENDING_MAX) {
        n = d->npending;
        memcpy(batch, d->pending, n * sizeof *batch);
        d->npending = 0;
    }
    d->pending[d->npending++] = fd;
    pthread_mutex_unlock(&d->dirty_lock);
    return n ? sync_files(d, batch, n) : 0;
}

static int dir_put(struct store *s, const char *name, const void *data, size_t len)
{
    struct dir_store *d = impl_of(s);
    char dir[3], tmp[NAME_MAX_LEN + 64], final[NAME_MAX_LEN + 8];
    int rc, created, fd, err;

    rc = check_name(s, name);
    if (rc)
        return rc;
    fanout_of(name, dir);
    fd = open_temp(s, name, tmp, sizeof tmp, &created);
    if (fd < 0)
        return disk_error(s, "creating a temp file for", name, -fd);
    err = write_all(fd, data, len);
    if (!err && len >= EARLY_WRITEBACK_MIN)
        sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);   /* a hint: errors show at sync */
    object_path(name, final, sizeof final);
    if (!err && renameat(d->rootfd, tmp, d->rootfd, final) != 0)
        err = errno;
    if (!err && d->reads)
        fdcache_drop(d->reads, name);   /* replaced: a kept descriptor reads the old one */
    if (err) {
        close(fd);
        unlinkat(d->rootfd, tmp, 0);
        return disk_error(s, "writing", name, err);
    }
    mark_dirty(d, dir, created);
    /* the bytes and the size (not the times) must be durable by store_sync */
    err = defer_sync(s, fd);
    return err ? disk_error(s, "syncing objects before", name, err) : 0;
}

static int dir_put_new(struct store *s, const char *name, const void *data, size_t len)
{
    struct dir_store *d = impl_of(s);
    char dir[3], final[NAME_MAX_LEN + 8];
    int rc, created, fd, err;

    rc = check_name(s, name);
    if (rc)
        return rc;
    fanout_of(name, dir);
    object_path(name, final, sizeof final);
    fd = create_in_fanout(s, name, final, &created);
    if (fd == -EEXIST)
        return pfs_err(-EEXIST, "endpoint %s: object %s exists already; a new object never "
                       "replaces one (run pactfs-fsck on the vault)", s->desc, name);
    if (fd < 0)
        return disk_error(s, "creating", name, -fd);
    crash_point("put-new-after-create");
    err = write_all(fd, data, len);
    if (!err && len >= EARLY_WRITEBACK_MIN)
        sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);   /* a hint: errors show at sync */
    if (err) {
        close(fd);
        unlinkat(d->rootfd, final, 0);   /* ours: O_EXCL made it */
        return disk_error(s, "writing", name, err);
    }
    mark_dirty(d, dir, created);
    err = defer_sync(s, fd);
    return err ? disk_error(s, "syncing objects before", name, err) : 0;
}

static int read_all(int fd, uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (r == 0)
            return EIO;   /* shrank under us: cannot happen with rename-only writers */
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Open an object for reading and fstat it: 0 with *fd open, or -errno with
 * a message (-ENOENT: not there). */
static int open_object(struct store *s, const char *name, int *fd, struct stat *st)
{
    struct dir_store *d = impl_of(s);
    char path[NAME_MAX_LEN + 8];
    int rc = check_name(s, name), err;

    if (rc)
        return rc;
    object_path(name, path, sizeof path);
    *fd = openat(d->rootfd, path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        if (errno == ENOENT)
            return pfs_err(-ENOENT, "endpoint %s: object %s not found", s->desc, name);
        return disk_error(s, "opening", name, errno);
    }
    if (fstat(*fd, st) != 0) {
        err = errno;
        close(*fd);
        return disk_error(s, "reading", name, err);
    }
    return 0;
}

static int dir_get(struct store *s, const char *name, void **data, size_t *len)
{
    struct stat st;
    uint8_t *buf;
    int fd, err, rc;

    *data = NULL;
    *len = 0;
    rc = open_object(s, name, &fd, &st);
    if (rc)
        return rc;
    buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    if (!buf) {
        close(fd);
        return pfs_err(-ENOMEM, "endpoint %s: out of memory reading object %s", s->desc, name);
    }
    err = read_all(fd, buf, (size_t)st.st_size);
    close(fd);
    if (err) {
        free(buf);
        return disk_error(s, "reading", name, err);
    }
    *data = buf;
    *len = (size_t)st.st_size;
    return 0;
}

static int dir_get_into(struct store *s, const char *name, void *buf, size_t len)
{
    struct stat st;
    int fd, err, rc = open_object(s, name, &fd, &st);

    if (rc)
        return rc;
    if ((uint64_t)st.st_size != len) {
        close(fd);
        return pfs_err(-EBADMSG, "endpoint %s: object %s has %llu bytes, expected %zu",
                       s->desc, name, (unsigned long long)st.st_size, len);
    }
    err = read_all(fd, buf, len);
    close(fd);
    return err ? disk_error(s, "reading", name, err) : 0;
}

/* A range of a pack.  Packs are written once (put_new) and never rewritten
 * in place, so a descriptor kept open a moment reads what a fresh open
 * would, save for a pack removed or replaced behind our back, which is seen
 * again within READ_FD_TTL_MS (its bytes are still checked against the
 * record's sums). */
static int dir_get_range(struct store *s, const char *name, uint64_t off, void *buf,
                         size_t len)
{
    struct dir_store *d = impl_of(s);
    uint64_t size = 0;
    int err = 0, fd = d->reads ? fdcache_take(d->reads, name, &size) : -1;

    if (fd < 0) {
        struct stat st;
        int rc = open_object(s, name, &fd, &st);
        if (rc)
            return rc;
        size = (uint64_t)st.st_size;
        if (d->reads)
            fdcache_offer(d->reads, name, fd, size);
    }
    if (size < off + len) {
        err = pfs_err(-EBADMSG, "endpoint %s: object %s has %llu bytes, too short for "
                      "%zu bytes at offset %llu", s->desc, name, (unsigned long long)size,
                      len, (unsigned long long)off);
    }
    for (size_t done = 0; !err && done < len;) {
        ssize_t r = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno != EINTR)
            err = disk_error(s, "reading", name, errno);
        else if (r == 0)
            err = disk_error(s, "reading", name, EIO);   /* packs are never truncated */
        else if (r > 0)
            done += (size_t)r;
    }
    if (d->reads)
        fdcache_done(d->reads, fd);
    else
        close(fd);
    return err;
}

static int dir_del(struct store *s, const char *name)
{
    struct dir_store *d = impl_of(s);
    char dir[3], path[NAME_MAX_LEN + 8];
    int rc = check_name(s, name);

    if (rc)
        return rc;
    object_path(name, path, sizeof path);
    if (d->reads)
        fdcache_drop(d->reads, name);
    if (unlinkat(d->rootfd, path, 0) != 0) {
        if (errno == ENOENT)
            return pfs_err(-ENOENT, "endpoint %s: object %s not found", s->desc, name);
        return disk_error(s, "deleting", name, errno);
    }
    fanout_of(name, dir);
    mark_dirty(d, dir, 0);
    return 0;
}

static int dir_stat(struct store *s, const char *name, uint64_t *size)
{
    struct dir_store *d = impl_of(s);
    char path[NAME_MAX_LEN + 8];
    struct stat st;
    int rc = check_name(s, name);

    if (rc)
        return rc;
    object_path(name, path, sizeof path);
    if (fstatat(d->rootfd, path, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT)
            return pfs_err(-ENOENT, "endpoint %s: object %s not found", s->desc, name);
        return disk_error(s, "examining", name, errno);
    }
    *size = (uint64_t)st.st_size;
    return 0;
}

/* Open a directory below the root for readdir; NULL with errno on failure. */
static DIR *open_subdir(int rootfd, const char *rel)
{
    int fd = openat(rootfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dp;

    if (fd < 0)
        return NULL;
    dp = fdopendir(fd);
    if (!dp)
        close(fd);
    return dp;
}

static int is_fanout_entry(const char *n)
{
    return n[0] && n[0] != '.' && n[1] && !n[2] && valid_name_char(n[0]) &&
           valid_name_char(n[1]);
}

static int is_temp_name(const char *n)
{
    return strncmp(n, TMP_PREFIX, strlen(TMP_PREFIX)) == 0;
}

/* Visit the objects of one fan-out dir, or with sweep set remove its temp
 * files older than an hour instead (crash leftovers, never visible objects). */
static int list_fanout(struct store *s, const char *dir, int sweep,
                       int (*cb)(void *, const char *, uint64_t), void *arg)
{
    struct dir_store *d = impl_of(s);
    DIR *dp = open_subdir(d->rootfd, dir);
    struct dirent *e;
    struct stat st;
    int rc = 0;
    time_t now = time(NULL);

    if (!dp)
        return errno == ENOENT ? 0 : disk_error(s, "listing directory", dir, errno);
    while (rc == 0 && (e = readdir(dp)) != NULL) {
        if (sweep ? !is_temp_name(e->d_name) : e->d_name[0] == '.')
            continue;
        if (fstatat(dirfd(dp), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (!sweep)
            rc = cb(arg, e->d_name, (uint64_t)st.st_size);
        else if (now - st.st_mtime > STALE_TMP_SECONDS)
            unlinkat(dirfd(dp), e->d_name, 0);
    }
    closedir(dp);
    return rc;
}

static int walk(struct store *s, int sweep, int (*cb)(void *, const char *, uint64_t), void *arg)
{
    struct dir_store *d = impl_of(s);
    DIR *dp = open_subdir(d->rootfd, ".");
    struct dirent *e;
    int rc = 0;

    if (!dp)
        return disk_error(s, "listing", "directory", errno);
    while (rc == 0 && (e = readdir(dp)) != NULL) {
        if (is_fanout_entry(e->d_name))
            rc = list_fanout(s, e->d_name, sweep, cb, arg);
    }
    closedir(dp);
    return rc;
}

static int dir_list(struct store *s, int (*cb)(void *, const char *, uint64_t), void *arg)
{
    if (!cb)
        return pfs_err(-EINVAL, "endpoint %s: list needs a callback", s->desc);
    return walk(s, 0, cb, arg);
}

static int fsync_at(int rootfd, const char *rel)
{
    int fd = openat(rootfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int err = 0;

    if (fd < 0)
        return errno == ENOENT ? 0 : errno;
    if (fsync(fd) != 0)
        err = errno;
    close(fd);
    return err;
}

static int dir_sync(struct store *s)
{
    struct dir_store *d = impl_of(s);
    uint8_t todo[FANOUT_SLOTS / 8];
    int files[PENDING_MAX];
    unsigned nfiles;
    int root, err = 0;

    /* Files first: their names must not become durable pointing at bytes
     * that are not.  Take the batch so puts can go on meanwhile. */
    pthread_mutex_lock(&d->dirty_lock);
    nfiles = d->npending;
    memcpy(files, d->pending, nfiles * sizeof *files);
    d->npending = 0;
    pthread_mutex_unlock(&d->dirty_lock);
    sync_files(d, files, nfiles);
    pthread_mutex_lock(&d->dirty_lock);
    err = d->sync_err;
    pthread_mutex_unlock(&d->dirty_lock);
    if (err)
        return pfs_err(-err, "endpoint %s: writing objects to disk failed (%s); what was "
                       "written since the last sync may be lost: check the disk, then "
                       "remount", s->desc, strerror(err));

    /* Take the set and clear it, so puts can go on while we fsync. */
    pthread_mutex_lock(&d->dirty_lock);
    memcpy(todo, d->dirty, sizeof todo);
    memset(d->dirty, 0, sizeof d->dirty);
    root = d->root_dirty;
    d->root_dirty = 0;
    pthread_mutex_unlock(&d->dirty_lock);

    for (unsigned slot = 0; slot < FANOUT_SLOTS; slot++) {
        if (!(todo[slot / 8] & (1u << (slot % 8))))
            continue;
        char dir[3] = {(char)(slot >> 7), (char)(slot & 0x7f), '\0'};
        int e = fsync_at(d->rootfd, dir);
        if (e) {
            err = e;
            mark_dirty(d, dir, 0);   /* try again next time */
        }
    }
    if (root) {
        int e = fsync(d->rootfd) != 0 ? errno : 0;
        if (e) {
            err = e;
            pthread_mutex_lock(&d->dirty_lock);
            d->root_dirty = 1;
            pthread_mutex_unlock(&d->dirty_lock);
        }
    }
    if (err)
        return pfs_err(-err, "endpoint %s: cannot make writes durable (fsync): %s", s->desc,
                       strerror(err));
    return 0;
}

static int dir_space(struct store *s, struct store_space_info *out)
{
    struct statvfs v;
    struct stat st;

    if (fstatvfs(impl_of(s)->rootfd, &v) != 0 || fstat(impl_of(s)->rootfd, &st) != 0)
        return pfs_err(-errno, "endpoint %s: cannot read free space: %s", s->desc,
                       strerror(errno));
    out->total = (uint64_t)v.f_blocks * v.f_frsize;
    out->avail = (uint64_t)v.f_bavail * v.f_frsize;
    out->fs_id = (uint64_t)st.st_dev;
    return 0;
}

static void dir_close(struct store *s)
{
    struct dir_store *d = impl_of(s);

    if (d) {
        sync_files(d, d->pending, d->npending);   /* what the last puts wrote */
        d->npending = 0;
        if (d->rootfd >= 0)
            close(d->rootfd);
        fdcache_free(d->reads);
        pthread_mutex_destroy(&d->dirty_lock);
        free(d);
    }
    free(s->desc);
    free(s);
}

static const struct store_ops dir_ops = {
    .type = "dir",
    .put = dir_put,
    .put_new = dir_put_new,
    .get = dir_get,
    .del = dir_del,
    .stat = dir_stat,
    .list = dir_list,
    .sync = dir_sync,
    .space = dir_space,
    .close = dir_close,
    .get_into = dir_get_into,
    .get_range = dir_get_range,
};

static int open_root(const char *path, int create)
{
    int fd;

    if (create && mkdir(path, 0700) != 0 && errno != EEXIST)
        return pfs_err(-errno, "cannot create endpoint directory %s: %s", path,
                       strerror(errno));
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return pfs_err(-errno, "cannot open endpoint directory %s: %s%s", path,
                       strerror(errno),
                       errno == ENOENT ? " (create it, or initialise the vault)" : "");
    return fd;
}

int store_dir_open(const char *path, int create, struct store **out)
{
    struct store *s;
    struct dir_store *d;
    int fd, rc;

    *out = NULL;
    fd = open_root(path, create);
    if (fd < 0)
        return fd;
    s = calloc(1, sizeof *s);
    d = calloc(1, sizeof *d);
    if (!s || !d || asprintf(&s->desc, "dir:%s", path) < 0) {
        free(s);
        free(d);
        close(fd);
        return pfs_err(-ENOMEM, "out of memory opening endpoint %s", path);
    }
    d->rootfd = fd;
    d->reads = fdcache_new(READ_FDS, READ_FD_TTL_MS);   /* NULL: each read opens the pack */
    pthread_mutex_init(&d->dirty_lock, NULL);
    s->ops = &dir_ops;
    s->impl = d;
    rc = walk(s, 1, NULL, NULL);   /* sweep crash leftovers */
    if (rc) {
        dir_close(s);
        return rc;
    }
    *out = s;
    return 0;
}
