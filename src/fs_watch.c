#include "config.h"

#define FUSE_USE_VERSION 34

/* Several workstations on one PostgreSQL vault (docs/design-fuse.md,
 * "Several workstations"): a thread with its own metadata connection that
 *
 *   - keeps this mount's session in the store alive (lease renewed every
 *     lease/3; expired sessions of crashed workstations are reaped) and
 *     counts the other live sessions, so fs_alone() knows whether another
 *     workstation may change the vault;
 *   - follows the change feed (meta_shared.h): woken by LISTEN/NOTIFY, or
 *     after poll_ms at the latest, it tells the kernel to drop what it
 *     cached of every inode and directory entry another session changed
 *     (fuse_lowlevel_notify_inval_inode / _entry), so this mount sees a
 *     change made elsewhere within about poll_ms (at once when notified);
 *     a notification also wakes the revocation check (fs_access.c).  A
 *     listening connection that broke is made again at once (retried with
 *     a back-off up to poll_ms while the server is unreachable), and since
 *     notifications sent meanwhile are lost, the feed and the revocation
 *     check are run right after it listens again.
 *
 * The data state of a file (fs_data) is revalidated at open while another
 * session is live (close-to-open), so the feed only has to reach the
 * kernel.  Rows of the feed are untrusted: a forged one makes the kernel
 * drop a cache, nothing else.
 */

#include <errno.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "fs_internal.h"
#include "log.h"
#include "meta.h"
#include "meta_shared.h"

#define FEED_PAGE 512
#define FEED_KEEP_S 600          /* changes older than this are pruned */
#define FEED_PRUNE_S 60
#define ABOVE_MAX 4096
#define GAP_WAIT_NS 5000000000ll /* a hole in seq: a transaction still open, or
                                    one rolled back; looked at again this long */

struct fs_watch {
    struct fs *fs;
    struct meta *m;            /* own connection */
    pthread_t thread;
    int started;
    int stop;                  /* atomic */
    uint64_t session;
    int lease_s, poll_ms;
    uint64_t floor;            /* every change <= floor has been applied */
    uint64_t above[ABOVE_MAX]; /* applied changes above a hole, sorted */
    size_t nabove;
    int seen;                  /* the last page had rows */
    int64_t gap_since;         /* when a hole above floor was first seen, or 0 */
    int64_t next_renew, next_prune;
    uint64_t applied;          /* invalidations sent (for the log) */
    int failing;               /* rounds failed in a row (connection lost) */
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int session_start(struct fs_watch *w)
{
    char host[HOST_NAME_MAX + 1] = "?";
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    int r = meta_session_reap(w->m);
    if (r == 0)
        r = meta_session_open(w->m, w->fs->v->account.id, host, w->lease_s, &w->session);
    if (r == 0)
        r = meta_session_others(w->m, w->session, &w->fs->remote_peers);
    if (r == 0)
        r = meta_change_notify(w->m);   /* the others learn of this mount at once */
    if (r == 0) {
        __atomic_store_n(&w->fs->session, w->session, __ATOMIC_RELEASE);
        log_debug("session %llu of this mount started on %s (lease %d s)",
                  (unsigned long long)w->session, host, w->lease_s);
    }
    return r;
}

static int orphan_collect(void *arg, uint64_t ino)
{
    uint64_t **list = arg;
    uint64_t n = (*list)[0] + 1;
    uint64_t *l = realloc(*list, (n + 1) * sizeof *l);
    if (!l)
        return -ENOMEM;
    l[0] = n;
    l[n] = ino;
    *list = l;
    return 0;
}

/* Inodes with no link left that no live session holds open (their holder
 * crashed, or they predate holds): deleted, each in a transaction that
 * checks again with the row taken.  Writable mounts only. */
static void orphans_reap(struct fs_watch *w)
{
    if (w->fs->opt.read_only)
        return;
    uint64_t *list = calloc(1, sizeof *list);
    if (!list)
        return;
    int r = meta_orphans_unheld_list(w->m, orphan_collect, &list);
    uint64_t done = 0;
    for (uint64_t i = 1; r == 0 && i <= list[0]; i++) {
        r = meta_begin(w->m);
        int began = r == 0;
        if (r == 0)
            r = meta_inode_lock(w->m, list[i]);
        if (r == 0)
            r = meta_orphan_unheld(w->m, 0, list[i]);
        if (r == 1 && (r = meta_inode_delete(w->m, list[i])) == 0)
            done++;
        if (began && r == 0)
            r = meta_commit(w->m);
        else if (began)
            meta_rollback(w->m);
        if (r == -ENOENT)
            r = 0;   /* someone else was quicker */
    }
    if (r < 0)
        log_error("cannot delete orphaned inodes (unlinked, no longer open "
                  "anywhere): %s", pfs_err_msg());
    if (done) {
        log_info("deleted %llu inode(s) unlinked while open on a workstation "
                 "whose session ended", (unsigned long long)done);
        fs_data_gc_kick(w->fs);
    }
    free(list);
}

static void count_others(struct fs_watch *w)
{
    uint64_t n = 1;
    int r = meta_session_others(w->m, w->session, &n);
    __atomic_store_n(&w->fs->remote_peers, r == 0 ? n : 1, __ATOMIC_RELEASE);   /* unsure: not alone */
}

static void renew(struct fs_watch *w)
{
    int r = meta_session_renew(w->m, w->session, w->lease_s);
    if (r == -ESTALE) {
        log_warning("%s; starting a new session (advisory locks this mount "
                    "held may have been taken by others meanwhile)", pfs_err_msg());
        r = session_start(w);
        if (r == 0) {
            pthread_mutex_lock(&w->fs->meta_lock);
            r = meta_set_origin(w->fs->v->meta, w->session);
            pthread_mutex_unlock(&w->fs->meta_lock);
        }
        if (r == 0)
            fs_inode_rehold_all(w->fs);
    }
    if (r == 0)
        r = meta_session_reap(w->m);
    if (r == 0)
        orphans_reap(w);
    if (r < 0) {
        log_error("cannot renew this mount's session in the metadata store: %s",
                  pfs_err_msg());
        __atomic_store_n(&w->fs->remote_peers, 1, __ATOMIC_RELEASE);   /* unsure: not alone */
    }
}

static void inval_entry(struct fs *fs, struct fuse_session *se, const struct meta_change *c)
{
    char name[NAME_MAX + 1];
    uint64_t parent;
    if (fs_inode_name(fs, c->ino, &parent, name, sizeof name) == 0 && parent == c->parent)
        fuse_lowlevel_notify_inval_entry(se, c->parent, name, strlen(name));
}

/* Changes above the floor already applied (sorted): on PostgreSQL seq is
 * taken at insert, so a transaction that commits later can fill a hole
 * below changes already seen. */
static size_t above_find(const struct fs_watch *w, uint64_t seq, int *found)
{
    size_t lo = 0, hi = w->nabove;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (w->above[mid] < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < w->nabove && w->above[lo] == seq;
    return lo;
}

/* Remember seq as applied; 0 if it already was. */
static int above_add(struct fs_watch *w, uint64_t seq)
{
    int found;
    size_t i = above_find(w, seq, &found);
    if (found)
        return 0;
    if (w->nabove == ABOVE_MAX) {     /* too many holes: give them up */
        w->floor = w->above[w->nabove - 1];
        w->nabove = 0;
        w->gap_since = 0;
        return seq > w->floor;
    }
    memmove(w->above + i + 1, w->above + i, (w->nabove - i) * sizeof *w->above);
    w->above[i] = seq;
    w->nabove++;
    return 1;
}

/* Move the floor over the changes applied without a hole below them. */
static void floor_advance(struct fs_watch *w)
{
    size_t i = 0;
    while (i < w->nabove && w->above[i] == w->floor + 1)
        w->floor = w->above[i++];
    memmove(w->above, w->above + i, (w->nabove - i) * sizeof *w->above);
    w->nabove -= i;
    if (!w->nabove)
        w->gap_since = 0;
    else if (!w->gap_since)
        w->gap_since = mono_ns();
    else if (mono_ns() - w->gap_since > GAP_WAIT_NS) {
        /* a rolled-back transaction's number: the hole never fills */
        w->floor = w->above[w->nabove - 1];
        w->nabove = 0;
        w->gap_since = 0;
    }
}

static int apply_cb(void *arg, const struct meta_change *c)
{
    struct fs_watch *w = arg;
    struct fs *fs = w->fs;
    w->seen = 1;
    if (c->seq <= w->floor || !above_add(w, c->seq))
        return 0;
    if (c->origin == w->session && c->origin != 0)
        return 0;   /* this mount's own change: its caches are current */
    struct fuse_session *se = __atomic_load_n(&fs->se, __ATOMIC_ACQUIRE);
    if (!se)
        return 0;
    log_debug("change %llu from session %llu: inode %llu (directory %llu) dropped from the "
              "kernel's caches", (unsigned long long)c->seq, (unsigned long long)c->origin,
              (unsigned long long)c->ino, (unsigned long long)c->parent);
    if (c->parent) {
        inval_entry(fs, se, c);
        fuse_lowlevel_notify_inval_inode(se, c->parent, 0, 0);
    } else {
        fuse_lowlevel_notify_inval_inode(se, c->ino, 0, 0);
    }
    w->applied++;
    return 0;
}

/* Apply every change past the floor, a page at a time. */
static int follow(struct fs_watch *w)
{
    for (int pages = 0; pages < 64; pages++) {
        uint64_t start = w->nabove ? w->above[w->nabove - 1] : w->floor;
        w->seen = 0;
        /* from the floor while there are holes (they may have filled) */
        int r = meta_change_list(w->m, w->nabove ? w->floor : start, FEED_PAGE, apply_cb, w);
        if (r < 0)
            return r;
        floor_advance(w);
        uint64_t end = w->nabove ? w->above[w->nabove - 1] : w->floor;
        if (!w->seen || end == start)
            break;
    }
    return 0;
}

static void *watch_main(void *arg)
{
    struct fs_watch *w = arg;
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        int64_t now = mono_ns();
        if (now >= w->next_renew) {
            renew(w);
            w->next_renew = now + (int64_t)w->lease_s * 1000000000 / 3;
        }
        if (now >= w->next_prune) {
            if (meta_change_prune(w->m, FEED_KEEP_S) < 0)
                log_error("cannot prune the change feed: %s", pfs_err_msg());
            w->next_prune = now + (int64_t)FEED_PRUNE_S * 1000000000;
        }
        int64_t left_ms = (w->next_renew - mono_ns()) / 1000000;
        int wait_ms = left_ms < w->poll_ms ? (int)(left_ms > 0 ? left_ms : 0) : w->poll_ms;
        /* a hole: look again soon rather than at the next notification */
        if (w->nabove && wait_ms > 100)
            wait_ms = 100;
        int r = meta_change_wait(w->m, wait_ms);
        if (r == META_CHANGE_RELISTENED)
            log_warning("the connection listening for changes to the vault was lost and "
                        "is made again; notifications sent meanwhile are lost, so this "
                        "account's access and the change feed are checked again now");
        if (r > 0)
            fs_access_poke(w->fs);   /* notified: a revoke may be among the changes */
        if (r >= 0)
            r = follow(w);
        if (r >= 0)
            count_others(w);
        if (r >= 0) {
            w->failing = 0;
            continue;
        }
        /* a lost connection is made again by the next wait: try soon, then
         * less often (up to poll_ms) while the server cannot be reached */
        if (!w->failing++)
            log_error("change feed: %s; trying again", pfs_err_msg());
        int back_ms = 250 << (w->failing < 8 ? w->failing - 1 : 7);
        if (back_ms > w->poll_ms)
            back_ms = w->poll_ms;
        struct timespec ts = { back_ms / 1000, (long)(back_ms % 1000) * 1000000 };
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int fs_watch_start(struct fs *fs)
{
    if (strcmp(fs->v->conf.meta_backend, "postgresql") != 0)
        return 0;
    struct fs_watch *w = calloc(1, sizeof *w);
    if (!w)
        return pfs_err(-ENOMEM, "out of memory");
    w->fs = fs;
    w->lease_s = (int)fs->v->conf.meta_lease_s;
    w->poll_ms = (int)fs->v->conf.meta_poll_ms;
    int r = meta_open(&fs->v->conf, &w->m);
    if (r == 0)
        meta_set_row_hook(w->m, fs_row_written, fs);   /* its orphan deletions */
    if (r == 0)
        r = session_start(w);
    if (r == 0)
        r = meta_change_last(w->m, &w->floor);
    if (r == 0) {
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_set_origin(fs->v->meta, w->session);
        pthread_mutex_unlock(&fs->meta_lock);
    }
    if (r == 0) {
        /* listening before the mount serves, so no change is missed */
        r = meta_change_wait(w->m, 0);
        r = r > 0 ? 0 : r;
    }
    if (r == 0) {
        int64_t now = mono_ns();
        w->next_renew = now + (int64_t)w->lease_s * 1000000000 / 3;
        w->next_prune = now;
        r = pthread_create(&w->thread, NULL, watch_main, w) == 0
            ? 0 : pfs_err(-EAGAIN, "cannot start the change feed thread");
    }
    if (r < 0) {
        r = pfs_err(r, "cannot join the vault's sessions in the metadata store: %s",
                    pfs_err_msg());
        if (w->m) {
            if (w->session)
                meta_session_close(w->m, w->session);
            meta_close(w->m);
        }
        free(w);
        return r;
    }
    w->started = 1;
    fs->watch = w;
    return 0;
}

void fs_watch_stop(struct fs *fs)
{
    struct fs_watch *w = fs->watch;
    if (!w)
        return;
    __atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
    if (w->started)
        pthread_join(w->thread, NULL);
    /* fs->session stays: the inodes still unlinked at teardown are deleted
     * only if no other live session holds them */
    if (meta_session_close(w->m, w->session) < 0)
        log_warning("cannot end this mount's session (it expires in %d s): %s",
                    w->lease_s, pfs_err_msg());
    meta_close(w->m);
    free(w);
    fs->watch = NULL;
}

uint64_t fs_watch_session(struct fs *fs)
{
    return fs->watch ? fs->watch->session : 0;
}
