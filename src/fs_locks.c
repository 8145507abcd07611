#include "config.h"

#define FUSE_USE_VERSION 34

/* Advisory locks shared by every workstation of a PostgreSQL vault
 * (docs/design-fuse.md, "Advisory locks"): fcntl POSIX and OFD locks
 * (getlk/setlk) and flock(2), kept in the metadata store's `locks` table
 * under this mount's session, so a lock an office suite takes on one
 * workstation is seen by the others.  A lock is tried in one transaction
 * that first takes the file's inode row (so two workstations never both
 * win), looks for a conflicting lock of a live session, then records it.
 * A blocking request tries again every LOCK_RETRY_MS until it gets the
 * lock or is interrupted.  Locks of a session whose lease expired (a
 * crashed or cut-off workstation) stop conflicting at once and are deleted
 * with the session.  On SQLite (every mount on one machine) the kernel
 * keeps locks itself, per mount, as before.
 */

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

#include "error.h"
#include "fs_locks.h"
#include "log.h"
#include "meta.h"
#include "meta_shared.h"

#define LOCK_RETRY_MS 50

/* The POSIX lock owners that used a handle: at its release their locks on
 * the file go (OFD locks are owned by the open file, and the kernel tells
 * a FUSE filesystem of their end only through the release). */
struct lk_owner {
    uint64_t fh, ino, owner;
    struct lk_owner *next;
};

static pthread_mutex_t owners_lock = PTHREAD_MUTEX_INITIALIZER;
static struct lk_owner *owners;
static int posix_used;   /* atomic: a POSIX lock was set (close must look) */

int fs_locks_shared(const struct fs *fs)
{
    return fs->watch != NULL;
}

static void owner_note(uint64_t fh, uint64_t ino, uint64_t owner)
{
    pthread_mutex_lock(&owners_lock);
    struct lk_owner *o = owners;
    while (o && !(o->fh == fh && o->owner == owner))
        o = o->next;
    if (!o && (o = calloc(1, sizeof *o))) {
        *o = (struct lk_owner){ fh, ino, owner, owners };
        owners = o;
    }
    pthread_mutex_unlock(&owners_lock);
}

/* One attempt in one transaction: 1 (and *c) if another holder's lock
 * conflicts, 0 when done (or when test_only finds none), -errno. */
static int lock_try(struct fs *fs, const struct meta_lock *l, struct meta_lock *c, int test_only)
{
    struct meta *m = fs->v->meta;
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_begin(m);
    int began = r == 0;
    if (r == 0)
        r = meta_inode_lock(m, l->ino);
    if (r == 0 && l->type != F_UNLCK)
        r = meta_lock_conflict(m, l, c);
    if (r == 0 && !test_only)
        r = meta_lock_set(m, l);
    if (began && r != 0)
        meta_rollback(m);   /* a conflict too: nothing changed */
    else if (began)
        r = meta_commit(m);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0 && r != -ENOLCK)
        log_error("advisory lock on inode %llu: %s",
                  (unsigned long long)l->ino, pfs_err_msg());
    return r;
}

static int errno_of(int r)
{
    return r == -ENOLCK || r == -ENOENT ? -r : EIO;
}

/* Take, change or drop l, waiting while another holder conflicts if sleep. */
static int lock_set(fuse_req_t req, struct fs *fs, const struct meta_lock *l, int sleep)
{
    struct meta_lock c;
    for (;;) {
        int r = lock_try(fs, l, &c, 0);
        if (r <= 0)
            return r < 0 ? errno_of(r) : 0;
        if (!sleep)
            return EAGAIN;
        if (fuse_req_interrupted(req))
            return EINTR;
        struct timespec ts = { 0, LOCK_RETRY_MS * 1000000L };
        nanosleep(&ts, NULL);
    }
}

static void from_flock(struct fs *fs, fuse_ino_t ino, const struct fuse_file_info *fi,
                       const struct flock *fl, struct meta_lock *l)
{
    *l = (struct meta_lock){
        .ino = ino, .session = fs_watch_session(fs), .owner = fi->lock_owner,
        .kind = META_LOCK_POSIX, .type = fl->l_type, .start = fl->l_start,
        .end = fl->l_len == 0 ? INT64_MAX : fl->l_start + fl->l_len - 1,
        .pid = fl->l_pid > 0 ? (uint32_t)fl->l_pid : 0,
    };
}

void fs_locks_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
                    struct flock *fl)
{
    struct fs *fs = fuse_req_userdata(req);
    struct meta_lock l, c;
    from_flock(fs, ino, fi, fl, &l);
    int r = lock_try(fs, &l, &c, 1);
    if (r < 0) {
        fuse_reply_err(req, errno_of(r));
        return;
    }
    if (r == 0) {
        fl->l_type = F_UNLCK;
    } else {
        fl->l_type = (short)c.type;
        fl->l_whence = SEEK_SET;
        fl->l_start = c.start;
        fl->l_len = c.end == INT64_MAX ? 0 : c.end - c.start + 1;
        fl->l_pid = (pid_t)c.pid;
    }
    fuse_reply_lock(req, fl);
}

void fs_locks_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
                    struct flock *fl, int sleep)
{
    struct fs *fs = fuse_req_userdata(req);
    struct meta_lock l;
    from_flock(fs, ino, fi, fl, &l);
    if (l.start < 0 || l.end < l.start || (l.type != F_RDLCK && l.type != F_WRLCK &&
                                           l.type != F_UNLCK)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    int e = lock_set(req, fs, &l, sleep);
    if (e == 0 && l.type != F_UNLCK) {
        __atomic_store_n(&posix_used, 1, __ATOMIC_RELEASE);
        owner_note(fi->fh, ino, l.owner);
    }
    fuse_reply_err(req, e);
}

void fs_locks_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
    struct fs *fs = fuse_req_userdata(req);
    int how = op & ~LOCK_NB;
    struct meta_lock l = {
        .ino = ino, .session = fs_watch_session(fs), .owner = fi->lock_owner,
        .kind = META_LOCK_FLOCK, .start = 0, .end = INT64_MAX,
        .type = how == LOCK_SH ? F_RDLCK : how == LOCK_EX ? F_WRLCK : F_UNLCK,
    };
    if (how != LOCK_SH && how != LOCK_EX && how != LOCK_UN) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    fuse_reply_err(req, lock_set(req, fs, &l, !(op & LOCK_NB)));
}

static void release(struct fs *fs, uint64_t ino, uint64_t owner, int kind)
{
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_lock_release(fs->v->meta, fs_watch_session(fs), ino, owner, kind);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0)
        log_warning("cannot release the advisory locks on inode %llu (they go "
                    "when this mount's session ends): %s", (unsigned long long)ino,
                    pfs_err_msg());
}

void fs_locks_flush(struct fs *fs, fuse_ino_t ino, const struct fuse_file_info *fi)
{
    if (fs_locks_shared(fs) && __atomic_load_n(&posix_used, __ATOMIC_ACQUIRE))
        release(fs, ino, fi->lock_owner, META_LOCK_POSIX);
}

void fs_locks_release(struct fs *fs, fuse_ino_t ino, const struct fuse_file_info *fi)
{
    if (!fs_locks_shared(fs))
        return;
    if (fi->flock_release)
        release(fs, ino, fi->lock_owner, META_LOCK_FLOCK);
    for (;;) {
        pthread_mutex_lock(&owners_lock);
        struct lk_owner **pp = &owners, *o;
        while ((o = *pp) && o->fh != fi->fh)
            pp = &o->next;
        if (o)
            *pp = o->next;
        pthread_mutex_unlock(&owners_lock);
        if (!o)
            break;
        release(fs, o->ino, o->owner, META_LOCK_POSIX);
        free(o);
    }
}
