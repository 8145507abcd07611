#include "config.h"

/* The in-memory inode table: which inodes the kernel holds (lookup counts),
 * which are open, and which jobs still use them.  An inode whose link count
 * reached zero stays in the metadata (nlink 0, data intact) until its last
 * reference goes, then it is deleted; a crash leaves it as an orphan that
 * the next mount deletes.
 *
 * On PostgreSQL (a session per mount, fs->session) every open inode is also
 * held in the store (table holds, while nopen > 0), and an inode with no
 * link left is deleted only when no other live session holds it: the last
 * close on any workstation deletes it (fs_watch.c deletes those of dead
 * sessions). */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fs_internal.h"
#include "log.h"
#include "meta_shared.h"

#define ITAB_INITIAL_BUCKETS 1024

int fs_itab_init(struct fs_itab *t)
{
    memset(t, 0, sizeof *t);
    t->nbuckets = ITAB_INITIAL_BUCKETS;
    t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
    if (!t->buckets)
        return pfs_err(-ENOMEM, "out of memory for the inode table");
    pthread_mutex_init(&t->lock, NULL);
    return 0;
}

static size_t itab_slot(const struct fs_itab *t, uint64_t ino)
{
    return (size_t)((ino * 0x9E3779B97F4A7C15ull) >> 20) & (t->nbuckets - 1);
}

static struct fs_inode *itab_lookup(struct fs_itab *t, uint64_t ino)
{
    for (struct fs_inode *in = t->buckets[itab_slot(t, ino)]; in; in = in->hnext)
        if (in->ino == ino)
            return in;
    return NULL;
}

/* Double the bucket array when the table gets crowded (best effort). */
static void itab_grow(struct fs_itab *t)
{
    size_t n = t->nbuckets * 2;
    struct fs_inode **b = calloc(n, sizeof *b);
    if (!b)
        return;
    struct fs_inode **old = t->buckets;
    size_t oldn = t->nbuckets;
    t->buckets = b;
    t->nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        struct fs_inode *in = old[i];
        while (in) {
            struct fs_inode *next = in->hnext;
            size_t s = itab_slot(t, in->ino);
            in->hnext = b[s];
            b[s] = in;
            in = next;
        }
    }
    free(old);
}

static void itab_unlink(struct fs_itab *t, struct fs_inode *in)
{
    struct fs_inode **pp = &t->buckets[itab_slot(t, in->ino)];
    while (*pp && *pp != in)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = in->hnext;
        t->count--;
    }
}

static struct fs_inode *inode_new(uint64_t ino, uint64_t folder_id, uint32_t mode)
{
    struct fs_inode *in = calloc(1, sizeof *in);
    if (!in)
        return NULL;
    in->ino = ino;
    in->folder_id = folder_id;
    in->mode = mode;
    pthread_mutex_init(&in->lock, NULL);
    pthread_cond_init(&in->cond, NULL);
    return in;
}

static void inode_free(struct fs_inode *in)
{
    pthread_mutex_destroy(&in->lock);
    pthread_cond_destroy(&in->cond);
    free(in->name);
    free(in->row);
    free(in);
}

static void ref_take(struct fs_inode *in, enum fs_ref kind, uint64_t n)
{
    if (kind == FS_REF_LOOKUP)
        in->nlookup += n;
    else if (kind == FS_REF_OPEN)
        in->nopen += (unsigned)n;
    else
        in->nref += (unsigned)n;
}

/* Make the store's hold of in match whether this mount has it open
 * (nothing without a session).  After the last close here, an inode with
 * no link left that nobody else holds is deleted. */
static void hold_sync(struct fs *fs, struct fs_inode *in)
{
    uint64_t session = __atomic_load_n(&fs->session, __ATOMIC_ACQUIRE);
    if (!session)
        return;
    struct meta_inode mi;
    int gone = 0;
    pthread_mutex_lock(&in->lock);
    pthread_mutex_lock(&fs->itab.lock);
    int want = in->nopen > 0;
    pthread_mutex_unlock(&fs->itab.lock);
    if (want != in->held) {
        pthread_mutex_lock(&fs->meta_lock);
        int r = meta_hold_set(fs->v->meta, session, in->ino, want);
        if (r == 0)
            in->held = want;
        if (r == 0 && !want)
            gone = meta_inode_get(fs->v->meta, in->ino, &mi) == 0 && mi.nlink == 0;
        pthread_mutex_unlock(&fs->meta_lock);
        if (r < 0)
            log_error("cannot %s inode %llu as open in the metadata store: %s",
                      want ? "record" : "clear", (unsigned long long)in->ino, pfs_err_msg());
    }
    pthread_mutex_unlock(&in->lock);
    if (gone)   /* unlinked on another workstation while open here */
        fs_inode_delete_now(fs, in->ino);
}

/* After a new session: hold again what is open. */
static void rehold(struct fs *fs, struct fs_inode *in)
{
    pthread_mutex_lock(&in->lock);
    in->held = 0;
    pthread_mutex_unlock(&in->lock);
    hold_sync(fs, in);
}

struct fs_inode *fs_inode_get(struct fs *fs, uint64_t ino, uint64_t folder_id, uint32_t mode,
                              enum fs_ref kind)
{
    struct fs_itab *t = &fs->itab;
    pthread_mutex_lock(&t->lock);
    struct fs_inode *in = itab_lookup(t, ino);
    if (!in) {
        in = inode_new(ino, folder_id, mode);
        if (!in) {
            pthread_mutex_unlock(&t->lock);
            return NULL;
        }
        if (t->count >= t->nbuckets)
            itab_grow(t);
        size_t s = itab_slot(t, ino);
        in->hnext = t->buckets[s];
        t->buckets[s] = in;
        t->count++;
    }
    ref_take(in, kind, 1);
    pthread_mutex_unlock(&t->lock);
    if (kind == FS_REF_OPEN)
        hold_sync(fs, in);
    return in;
}

void fs_inode_note_mode(struct fs_inode *in, uint32_t mode)
{
    __atomic_store_n(&in->mode, mode, __ATOMIC_RELAXED);
}

void fs_inode_hold(struct fs *fs, struct fs_inode *in)
{
    pthread_mutex_lock(&fs->itab.lock);
    in->nref++;
    pthread_mutex_unlock(&fs->itab.lock);
}

struct fs_inode *fs_inode_find(struct fs *fs, uint64_t ino)
{
    struct fs_itab *t = &fs->itab;
    pthread_mutex_lock(&t->lock);
    struct fs_inode *in = itab_lookup(t, ino);
    if (in)
        in->nref++;
    pthread_mutex_unlock(&t->lock);
    return in;
}

/* Delete ino unless another live session holds it open or it got a link
 * again (meta_lock held): one transaction with the inode row taken. */
static int delete_unheld_locked(struct fs *fs, uint64_t session, uint64_t ino)
{
    struct meta *m = fs->v->meta;
    int r = meta_begin(m);
    int began = r == 0;
    if (r == 0)
        r = meta_inode_lock(m, ino);
    if (r == 0)
        r = meta_orphan_unheld(m, session, ino);
    if (r == 1)
        r = meta_inode_delete(m, ino);
    if (began && r == 0)
        r = meta_commit(m);
    else if (began)
        meta_rollback(m);
    return r;
}

int fs_inode_delete_now(struct fs *fs, uint64_t ino)
{
    uint64_t session = __atomic_load_n(&fs->session, __ATOMIC_ACQUIRE);
    pthread_mutex_lock(&fs->meta_lock);
    int r = session ? delete_unheld_locked(fs, session, ino) : meta_inode_delete(fs->v->meta, ino);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0 && r != -ENOENT)
        log_error("cannot delete unlinked inode %llu: %s",
                  (unsigned long long)ino, pfs_err_msg());
    else
        fs_data_gc_kick(fs);
    return r == -ENOENT ? 0 : r;
}

/* The last reference went (the caller wrote back what it could, and no job
 * holds the inode): wipe the DEK, and delete the inode if nothing links to
 * it any more.  No write-back here: a put it queued would hold a reference
 * to an inode about to be freed. */
/* Delete a batch of retired inodes (fs_inode_delete_now's checks for each)
 * in one transaction: an rm -rf spent a fifth of the daemon's time in one
 * transaction per forgotten inode, then a tenth in seven statements per
 * inode (meta_inodes_delete makes them seven per batch).  On an error the batch is rolled back
 * and deleted one by one, which reports what failed. */
static void delete_batch(struct fs *fs, const uint64_t *inos, size_t n)
{
    if (!n)
        return;
    uint64_t session = __atomic_load_n(&fs->session, __ATOMIC_ACQUIRE);
    struct meta *m = fs->v->meta;
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_begin(m);
    /* without sessions (SQLite) no other mount holds one open: all at once */
    if (r == 0 && !session)
        r = meta_inodes_delete(m, inos, n);
    for (size_t i = 0; r == 0 && session && i < n; i++) {
        int d = meta_inode_lock(m, inos[i]);
        if (d == 0)
            d = meta_orphan_unheld(m, session, inos[i]);
        if (d == 1)
            d = meta_inode_delete(m, inos[i]);
        r = d == -ENOENT ? 0 : d;   /* gone already (another mount's sweep) */
    }
    if (r == 0)
        r = meta_commit(m);
    else
        meta_rollback(m);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0)
        for (size_t i = 0; i < n; i++)
            fs_inode_delete_now(fs, inos[i]);
    else
        fs_data_gc_kick(fs);
}

#define RETIRE_BATCH 128

void fs_inode_retired_flush(struct fs *fs)
{
    pthread_mutex_lock(&fs->retired_lock);
    uint64_t *list = fs->retired;
    size_t n = fs->nretired;
    fs->retired = NULL;
    fs->nretired = fs->capretired = 0;
    pthread_mutex_unlock(&fs->retired_lock);
    delete_batch(fs, list, n);
    free(list);
}

/* The row goes with the next batch (a full one is deleted here). */
static void delete_later(struct fs *fs, uint64_t ino)
{
    int full = 0;
    pthread_mutex_lock(&fs->retired_lock);
    if (fs->nretired == fs->capretired) {
        size_t cap = fs->capretired ? fs->capretired * 2 : 64;
        uint64_t *p = realloc(fs->retired, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&fs->retired_lock);
            fs_inode_delete_now(fs, ino);
            return;
        }
        fs->retired = p;
        fs->capretired = cap;
    }
    fs->retired[fs->nretired++] = ino;
    full = fs->nretired >= RETIRE_BATCH;
    pthread_mutex_unlock(&fs->retired_lock);
    if (full)
        fs_inode_retired_flush(fs);
}

static void inode_retire(struct fs *fs, struct fs_inode *in, int unlinked)
{
    if (in->file)
        fs_data_detach(fs, in);
    if (unlinked)
        delete_later(fs, in->ino);
    inode_free(in);
}

static void put_ref(struct fs *fs, struct fs_inode *in, enum fs_ref kind, uint64_t n)
{
    struct fs_itab *t = &fs->itab;
    pthread_mutex_lock(&t->lock);
    if (kind == FS_REF_LOOKUP)
        in->nlookup = in->nlookup > n ? in->nlookup - n : 0;
    else if (kind == FS_REF_OPEN)
        in->nopen = in->nopen > n ? in->nopen - (unsigned)n : 0;
    else
        in->nref = in->nref > n ? in->nref - (unsigned)n : 0;
    int last = in->nlookup == 0 && in->nopen == 0 && in->nref == 0;
    int unlinked = in->unlinked;
    if (last) {
        /* Keep it findable while it writes back: take an op ref again. */
        in->nref = 1;
    }
    pthread_mutex_unlock(&t->lock);
    if (!last)
        return;

    /* (a withdrawn file has nothing to write back: its loss, if any, was
     * audited at the withdrawal) */
    if (in->file && !unlinked && !fs_data_withdrawn(in) && fs_data_flush(fs, in) < 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", pfs_err_msg());
        if (fs_data_keep_for_retry(fs, in)) {
            log_error("write-back of inode %llu failed: %s; its data stays in "
                      "memory and is retried", (unsigned long long)in->ino, why);
            return;   /* our op reference keeps it */
        }
        log_error("write-back of inode %llu failed: %s; nothing is kept to retry",
                  (unsigned long long)in->ino, why);
    }

    pthread_mutex_lock(&t->lock);
    in->nref--;
    last = in->nlookup == 0 && in->nopen == 0 && in->nref == 0;
    unlinked = in->unlinked;
    if (last)
        itab_unlink(t, in);
    pthread_mutex_unlock(&t->lock);
    if (last)
        inode_retire(fs, in, unlinked);
}

void fs_inode_put(struct fs *fs, struct fs_inode *in, enum fs_ref kind, uint64_t n)
{
    if (kind != FS_REF_OPEN || !__atomic_load_n(&fs->session, __ATOMIC_ACQUIRE)) {
        put_ref(fs, in, kind, n);
        return;
    }
    fs_inode_hold(fs, in);   /* in stays while its hold goes */
    put_ref(fs, in, kind, n);
    hold_sync(fs, in);
    put_ref(fs, in, FS_REF_OP, 1);
}

void fs_inode_rehold_all(struct fs *fs)
{
    fs_itab_each_file(fs, rehold);
}

void fs_inode_forget(struct fs *fs, uint64_t ino, uint64_t nlookup)
{
    struct fs_itab *t = &fs->itab;
    pthread_mutex_lock(&t->lock);
    struct fs_inode *in = itab_lookup(t, ino);
    pthread_mutex_unlock(&t->lock);
    if (in)
        fs_inode_put(fs, in, FS_REF_LOOKUP, nlookup);
}

void fs_inode_set_name(struct fs *fs, uint64_t ino, uint64_t parent, const char *name)
{
    struct fs_itab *t = &fs->itab;
    char *copy = strdup(name);
    pthread_mutex_lock(&t->lock);
    struct fs_inode *in = itab_lookup(t, ino);
    if (in && copy) {
        free(in->name);
        in->name = copy;
        in->parent = parent;
        copy = NULL;
    }
    pthread_mutex_unlock(&t->lock);
    free(copy);
}

int fs_inode_name(struct fs *fs, uint64_t ino, uint64_t *parent, char *name, size_t cap)
{
    struct fs_itab *t = &fs->itab;
    int r = -ENOENT;
    pthread_mutex_lock(&t->lock);
    struct fs_inode *in = itab_lookup(t, ino);
    if (in && in->name) {
        *parent = in->parent;
        snprintf(name, cap, "%s", in->name);
        r = 0;
    }
    pthread_mutex_unlock(&t->lock);
    return r;
}

int fs_inode_mark_unlinked(struct fs *fs, uint64_t ino)
{
    struct fs_itab *t = &fs->itab;
    pthread_mutex_lock(&t->lock);
    struct fs_inode *in = itab_lookup(t, ino);
    if (in)
        in->unlinked = 1;
    pthread_mutex_unlock(&t->lock);
    return in != NULL;
}

/* Call fn for every inode with a data state (folder_id 0), or every inode
 * of folder_id: collected under the lock (with a reference each), acted on
 * outside it. */
static void itab_each(struct fs *fs, uint64_t folder_id,
                      void (*fn)(struct fs *fs, struct fs_inode *in))
{
    struct fs_itab *t = &fs->itab;
    pthread_mutex_lock(&t->lock);
    size_t n = 0;
    struct fs_inode **list = malloc((t->count + 1) * sizeof *list);
    if (list) {
        for (size_t i = 0; i < t->nbuckets; i++)
            for (struct fs_inode *in = t->buckets[i]; in; in = in->hnext)
                if (folder_id ? in->folder_id == folder_id : in->file != NULL) {
                    in->nref++;
                    list[n++] = in;
                }
    }
    pthread_mutex_unlock(&t->lock);
    for (size_t i = 0; i < n; i++) {
        fn(fs, list[i]);
        fs_inode_put(fs, list[i], FS_REF_OP, 1);
    }
    free(list);
}

void fs_itab_each_file(struct fs *fs, void (*fn)(struct fs *fs, struct fs_inode *in))
{
    itab_each(fs, 0, fn);
}

void fs_itab_each_in_folder(struct fs *fs, uint64_t folder_id,
                            void (*fn)(struct fs *fs, struct fs_inode *in))
{
    if (folder_id)
        itab_each(fs, folder_id, fn);
}

/* At unmount: every inode the kernel still held goes (unlinked ones are
 * deleted now rather than left as orphans). */
void fs_itab_destroy(struct fs *fs)
{
    struct fs_itab *t = &fs->itab;
    for (;;) {
        struct fs_inode *in = NULL;
        pthread_mutex_lock(&t->lock);
        for (size_t i = 0; i < t->nbuckets && !in; i++)
            in = t->buckets[i];
        if (in) {
            itab_unlink(t, in);
            /* A job (read-ahead, write-back) may hold the last reference:
             * its put must not free what is freed below. */
            in->nref++;
        }
        pthread_mutex_unlock(&t->lock);
        if (!in)
            break;
        /* Write back first, then let the jobs that did it drop their
         * references before the inode is freed. */
        if (in->file && !in->unlinked && fs_data_flush(fs, in) < 0)
            log_error("write-back of inode %llu failed at unmount: %s",
                      (unsigned long long)in->ino, pfs_err_msg());
        fs_data_quiesce(fs);
        inode_retire(fs, in, in->unlinked);
    }
    fs_inode_retired_flush(fs);
    free(t->buckets);
    t->buckets = NULL;
    pthread_mutex_destroy(&t->lock);
}
