#include "config.h"

/* File data: chunk arithmetic, dirty chunks, write-back, the plaintext
 * chunk cache and the jobs the mount's pool (workq.h) runs.
 *
 * A chunk of an open file is in one of three places:
 *   dirty     plaintext in c->buf (never written, or changed since)
 *   pending   sealed, coded and scattered (c->ref), not yet in the
 *             metadata; its plaintext moved to the cache
 *   committed recorded in the metadata (meta_chunk_get)
 * Readers look in that order, under the inode lock, so they always see the
 * newest bytes.  A commit is: object_layer_sync (fragments durable), then
 * one meta transaction with every pending chunk and the inode's size and
 * mtime.  Fragments are therefore always durable before the metadata that
 * points at them; replaced chunks go to the deletion queue and their
 * fragments are deleted by a background job once the commit that dropped
 * them is durable (meta_sync).  Commits themselves are made durable in
 * batches: by fsync, and by the syncer thread every second.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crashpoint.h"
#include "envelope.h"
#include "error.h"
#include "gc.h"
#include "filecommit.h"
#include "fs_internal.h"
#include "log.h"
#include "meta_shared.h"
#include "secmem.h"
#include "workq.h"

#define NO_TRUNC UINT64_MAX
#define READAHEAD_CHUNKS 4
#define REF_CACHE_CHUNKS 16384
#define SYNC_PERIOD_MS 1000
#define REPAIR_PERIOD_MS 5000
#define FILE_HEAD_PERIOD_MS 5000
#define PACK_SWEEP_PERIOD_MS 600000   /* a gc pass for free packs, at least this often */
#define COMMIT_CONFLICT 1       /* commit_meta: another version was committed
                                   since this mount's changes began */
#define COMMIT_REKEYED 2        /* commit_meta: the file got a fresh DEK
                                   (pactfs-admin rekey): adopt it, write again */
#define REKEY_ROUNDS 3          /* flushes retried after adopting a new DEK */
/* The batch committer (files released while this mount is alone): after
 * the first queued file it waits this long for more, so files closed one
 * after another (tar x, cp -r) share one fragment sync, one pack object per
 * endpoint and one metadata transaction.  20 ms: tar x of 4,000 small files
 * took 1.26x less time and daemon CPU than with 3 ms (15 files a batch
 * instead of 5); nothing waits for it (close returns at once, fsync commits
 * its own file), it only delays when a closed file reaches the store. */
#define COMMIT_WINDOW_MS 20
/* Files queued beyond this are committed by the releasing thread itself. */
#define COMMIT_QUEUE_MAX 256

/* ---- types ---- */

struct fs_chunk {
    uint64_t idx;
    uint8_t *buf;              /* dirty plaintext (chunk_size bytes) or NULL */
    uint32_t len;              /* valid bytes in buf */
    uint32_t hw;               /* bytes of buf ever written (>= len): the rest
                                  is still the pool's zeros, so freeing it
                                  wipes only these (secmem_plain_free_upto) */
    int loading;               /* buf being filled from the stores */
    int writing;               /* buf being sealed and scattered */
    int queued;                /* a put job waits in the queue */
    int streamed;              /* filled whole by a sequential write and queued
                                  at once: after its put the buffer goes back
                                  to the pool for the stream's next chunk, not
                                  into the read cache (a stream is rarely read
                                  back at once, and memory touched for the
                                  first time costs ~1.5 ms per MiB on this VM
                                  against 0.07 reused: bench/README.md) */
    int version_known;
    uint64_t max_version;      /* highest version used for (ino, idx) */
    enum { REF_UNKNOWN, REF_HOLE, REF_COMMITTED, REF_PENDING } ref_state;
    struct chunk_ref ref;      /* PENDING: put, not yet committed;
                                  COMMITTED: a copy of the metadata record */
    struct fs_chunk *next;
};

struct fs_file {
    uint8_t *dek;              /* secmem, DEK_LEN */
    uint64_t size;
    int64_t mtime_ns;
    int64_t ctime_ns;          /* last data change (write, truncate): the
                                  ctime a stat reported; a commit never
                                  writes its own time (POSIX: ctime is when
                                  the inode changed, not when it was saved) */
    int size_dirty, mtime_dirty;
    uint64_t attr_gen;         /* bumps on every size/mtime change */
    struct fs_chunk **tab;
    size_t ntab, nchunks;
    unsigned inflight;         /* put jobs queued or running */
    unsigned loading;          /* chunks being loaded */
    uint64_t trunc_from;       /* chunk records >= this go at the next commit */
    int wb_error;              /* first write-back error, for flush/fsync */
    pthread_mutex_t commit_lock;
    struct chunk_ref *drop;    /* uncommitted fragments to delete */
    size_t ndrop, capdrop;
    uint64_t seq_next;         /* sequential read detection */
    uint64_t seq_write_next;   /* sequential write detection */
    uint64_t ra_until;         /* chunks below this were read ahead */
    uint64_t behind_idx[2];    /* drop-behind: the last two stored chunks a */
    uint64_t behind_ver[2];    /* sequential read served, newest first */
    unsigned behind_n;
    unsigned setattr_seq;      /* bumped (atomically) at every setattr of the
                                  inode row, and setattr_active counts those
                                  running: a commit gathered before or during
                                  one must not write its older mtime */
    unsigned setattr_active;   /* under the inode lock */
    uint64_t put_gen;          /* fs_data.put_gen after this file's last put */
    int fresh;                 /* created by this mount: no chunk version was
                                  ever used, so puts skip the max-version query
                                  (inode numbers are never reused) */
    uint8_t *fc_key;           /* secmem FC_KEY_LEN: the commitment key */
    struct fc_list fc;         /* chunk records as last verified or committed
                                  (under in->lock) */
    uint64_t fc_gen;           /* generation of that commitment */
    uint64_t base_gen;         /* the generation this mount's unsaved changes
                                  build on (open, revalidate, its own last
                                  commit): a commit that finds a newer one
                                  stored keeps both versions (fs_conflict.c) */
    /* The wrapped DEK this mount's dek came from (wrapped_len 0: created
     * here, compared by unwrapping): a row with another one was re-keyed
     * (rekey.h) and its new DEK is adopted (file_adopt_dek). */
    uint32_t key_version;
    uint32_t wrapped_len;
    uint8_t wrapped_dek[DEK_WRAPPED_LEN];
    uint8_t **retired;         /* DEK and commitment-key buffers replaced by
                                  an adoption: a reader may still hold one;
                                  wiped and freed at detach */
    size_t nretired;
    unsigned users;            /* readers using dek with in->lock dropped */
    int withdrawn;             /* the folder was withdrawn from this account:
                                  keys wiped, every use is EACCES
                                  (fs_data_withdraw) */
    /* Deferred attributes (fs_data_defer_begin): chmod, chown and utimens
     * of a file this mount created and has not saved yet, made while a
     * handle writes it, ride in its first commit instead of a transaction
     * each.  mtime goes to mtime_ns/mtime_dirty, ctime to ctime_ns. */
    int unsaved_new;           /* created here; no commit settled since */
    unsigned writers;          /* writable handles open (fs_data_writer_add) */
    struct fs_attr_overlay ov; /* under in->lock; set 0: none */
    uint64_t ov_gen;           /* bumps at every change of ov */
    /* The folded audit event of kept changes not yet appended
     * (fs_data_defer_fold): changed under commit_lock and in->lock. */
    int fold_pending;
    struct fs_caller fold_who;   /* uid and pid only */
    struct audit_detail fold;    /* the fields changed, their last values */
};

enum job_type { JOB_PUT, JOB_READAHEAD, JOB_REPAIR, JOB_GC, JOB_INVAL };

struct job {
    struct workq_item item;    /* first: the pool runs &item */
    struct fs *fs;
    enum job_type type;
    struct fs_inode *in;       /* holds an op reference (PUT, READAHEAD) */
    uint64_t idx;
    uint32_t mask;
    struct chunk_ref ref;
};

struct pending_repair {
    uint64_t ino, idx;         /* the chunk's place (the persisted queue, fs_repairq.c) */
    struct chunk_ref ref;
    uint32_t mask;
    struct pending_repair *next;
};

struct cache_entry {
    uint64_t ino, idx, version;
    uint8_t *buf;
    uint32_t len;
    size_t cost;
    int ready, stale;
    unsigned refs;
    struct cache_entry *hnext, *prev, *next;
    struct cache_entry *inext; /* next in its ibuckets chain (same ino hash) */
};

struct fs_data {
    struct fs *fs;
    struct workq *pool;        /* cache.workers threads running the jobs */
    /* job accounting */
    pthread_mutex_t qlock;
    int gc_queued;
    unsigned inode_jobs;       /* queued or running jobs holding an inode */
    pthread_cond_t idle_cond;  /* inode_jobs reached 0 */
    /* chunk cache */
    pthread_mutex_t clock;
    pthread_cond_t ccond;
    struct cache_entry **cbuckets;
    size_t cnbuckets;
    struct cache_entry **ibuckets; /* by ino alone (cnbuckets of them): what
                                      cache_drop_ino visits, not the LRU list
                                      (that scan was a fifth of rm -rf) */
    struct cache_entry *lru_head, *lru_tail;
    size_t cache_bytes, cache_budget;
    /* dirty budget */
    pthread_mutex_t dlock;
    size_t dirty_bytes, dirty_budget;
    /* object layer syncs: a put finishing takes the next put_gen; a sync
     * that started after put_gen reached g covers every put up to g */
    uint64_t put_gen, synced_gen;
    /* metadata syncer: makes deferred commits durable every SYNC_PERIOD_MS */
    pthread_t syncer;
    int syncer_started;
    int gc_wanted;              /* fs_data_gc_kick since the syncer's last pass */
    pthread_mutex_t slock;
    pthread_cond_t scond;
    int syncer_stop;
    /* degraded writes: fragments that could not be stored, retried by the
     * syncer every REPAIR_PERIOD_MS until their endpoint takes them */
    pthread_mutex_t hlock;
    struct pending_repair *repairs;
    struct fs_health health;
    uint32_t degraded_eps;     /* endpoints whose last put failed (log once) */
    int wb_trouble;            /* a put failed and none fully succeeded since */
    /* inodes whose last reference went while their write-back failed: kept
     * (with an op reference) so the data stays, flushed again each period */
    struct fs_inode **stuck;
    size_t nstuck, capstuck;
    /* batch committer: released files (each with an op reference) whose
     * puts, one shared fragment sync and commits it makes in batches */
    pthread_mutex_t cqlock;
    pthread_cond_t cqcond;      /* queued work, or stop */
    pthread_cond_t cqidle;      /* queue empty and no batch running */
    struct fs_inode **cq;
    size_t ncq, capcq;
    int cq_busy, cq_stop, cq_started;
    pthread_t committer;
};

static size_t chunk_sz(const struct fs *fs) { return fs->chunk_size; }

/* ---- dirty accounting ---- */

static void dirty_add(struct fs_data *d, size_t n)
{
    pthread_mutex_lock(&d->dlock);
    d->dirty_bytes += n;
    pthread_mutex_unlock(&d->dlock);
}

static void dirty_sub(struct fs_data *d, size_t n)
{
    pthread_mutex_lock(&d->dlock);
    d->dirty_bytes = d->dirty_bytes > n ? d->dirty_bytes - n : 0;
    pthread_mutex_unlock(&d->dlock);
}

static int dirty_over_budget(struct fs_data *d)
{
    pthread_mutex_lock(&d->dlock);
    int over = d->dirty_bytes > d->dirty_budget;
    pthread_mutex_unlock(&d->dlock);
    return over;
}

/* ---- chunk cache (LRU of plaintext chunks keyed by ino, idx and version) ---- */

static size_t cache_slot(const struct fs_data *d, uint64_t ino, uint64_t idx, uint64_t ver)
{
    uint64_t h = ino * 0x9E3779B97F4A7C15ull ^ idx * 0xC2B2AE3D27D4EB4Full ^ ver;
    h ^= h >> 29;
    return (size_t)h & (d->cnbuckets - 1);
}

static struct cache_entry *cache_find(struct fs_data *d, uint64_t ino, uint64_t idx,
                                      uint64_t ver)
{
    for (struct cache_entry *e = d->cbuckets[cache_slot(d, ino, idx, ver)]; e; e = e->hnext)
        if (!e->stale && e->ino == ino && e->idx == idx && e->version == ver)
            return e;
    return NULL;
}

static void lru_unlink(struct fs_data *d, struct cache_entry *e)
{
    if (e->prev) e->prev->next = e->next; else if (d->lru_head == e) d->lru_head = e->next;
    if (e->next) e->next->prev = e->prev; else if (d->lru_tail == e) d->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(struct fs_data *d, struct cache_entry *e)
{
    e->prev = NULL;
    e->next = d->lru_head;
    if (d->lru_head) d->lru_head->prev = e;
    d->lru_head = e;
    if (!d->lru_tail) d->lru_tail = e;
}

static size_t ino_slot(const struct fs_data *d, uint64_t ino)
{
    return cache_slot(d, ino, 0, 0);
}

static void cache_insert_locked(struct fs_data *d, struct cache_entry *e)
{
    size_t s = cache_slot(d, e->ino, e->idx, e->version);
    e->hnext = d->cbuckets[s];
    d->cbuckets[s] = e;
    s = ino_slot(d, e->ino);
    e->inext = d->ibuckets[s];
    d->ibuckets[s] = e;
    lru_push_front(d, e);
}

static void cache_remove_locked(struct fs_data *d, struct cache_entry *e)
{
    struct cache_entry **pp = &d->cbuckets[cache_slot(d, e->ino, e->idx, e->version)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    for (pp = &d->ibuckets[ino_slot(d, e->ino)]; *pp && *pp != e; pp = &(*pp)->inext)
        ;
    if (*pp)
        *pp = e->inext;
    lru_unlink(d, e);
    if (e->ready)
        d->cache_bytes -= e->cost;
    secmem_plain_free(e->buf);
    free(e);
}

/* Free unused entries from the cold end until under budget. */
static void cache_evict_locked(struct fs_data *d)
{
    struct cache_entry *e = d->lru_tail;
    while (e && d->cache_bytes > d->cache_budget) {
        struct cache_entry *prev = e->prev;
        if (e->ready && e->refs == 0)
            cache_remove_locked(d, e);
        e = prev;
    }
}

static void cache_release(struct fs_data *d, struct cache_entry *e)
{
    pthread_mutex_lock(&d->clock);
    e->refs--;
    if (e->refs == 0 && e->stale)
        cache_remove_locked(d, e);
    else
        cache_evict_locked(d);
    pthread_mutex_unlock(&d->clock);
}

/* Hand a plaintext buffer (secmem_plain_alloc) to the cache; it owns it
 * afterwards. */
static void cache_adopt(struct fs_data *d, uint64_t ino, uint64_t idx, uint64_t ver,
                        uint8_t *buf, uint32_t len, uint32_t hw, size_t cap)
{
    struct cache_entry *e = calloc(1, sizeof *e);
    if (!e) {
        secmem_plain_free(buf);
        return;
    }
    if (len < cap / 2) {   /* small tail chunks should not pin a whole chunk */
        /* Copy into a buffer of their size and give the chunk-sized one
         * back to the pool's spares, still locked, for the next file's
         * dirty chunk: unmapping its tail and locking a fresh chunk for
         * every small file cost a fifth of the daemon's time in tar x. */
        uint8_t *small = secmem_plain_alloc(len ? len : 1);
        if (small) {
            memcpy(small, buf, len);
            /* wipes the hw bytes written, not the whole chunk: wiping
             * 1 MiB per small file was 3 % of the daemon's time in tar x */
            secmem_plain_free_upto(buf, hw);
            buf = small;
        } else {
            secmem_plain_shrink(buf, len ? len : 1);
        }
        cap = len ? len : 1;
    }
    e->ino = ino; e->idx = idx; e->version = ver;
    e->buf = buf; e->len = len; e->cost = cap; e->ready = 1;
    pthread_mutex_lock(&d->clock);
    struct cache_entry *old = cache_find(d, ino, idx, ver);
    if (old)
        old->stale = 1;   /* cannot happen with unique versions; be safe */
    if (old && old->refs == 0)
        cache_remove_locked(d, old);
    cache_insert_locked(d, e);
    d->cache_bytes += e->cost;
    cache_evict_locked(d);
    pthread_mutex_unlock(&d->clock);
}

static void cache_drop_ino(struct fs_data *d, uint64_t ino)
{
    pthread_mutex_lock(&d->clock);
    struct cache_entry *e = d->ibuckets[ino_slot(d, ino)];
    while (e) {
        struct cache_entry *next = e->inext;
        if (e->ino == ino) {
            if (e->refs == 0 && e->ready)
                cache_remove_locked(d, e);
            else
                e->stale = 1;
        }
        e = next;
    }
    pthread_mutex_unlock(&d->clock);
}

static void queue_repair(struct fs *fs, const struct chunk_ref *ref, uint32_t mask);
static void repair_later(struct fs *fs, uint64_t ino, uint64_t idx, const struct chunk_ref *ref,
                         uint32_t missing);
static void endpoints_recovered(struct fs *fs, const struct chunk_ref *ref);
static void stuck_retry(struct fs *fs, int final);

static void chunk_unreadable(struct fs *fs, uint64_t ino, uint64_t idx,
                             const struct chunk_ref *ref, const char *why)
{
    char *p = fs_path(fs, ino, NULL);
    char id[2 * CHUNK_ID_LEN + 1];
    hex_encode(ref->chunk_id, CHUNK_ID_LEN, id);
    log_error("cannot read chunk %" PRIu64 " (id %s) of %s (inode %" PRIu64 "): %s",
              idx, id, p ? p : "?", ino, why);
    free(p);
}

/* The plaintext of one stored chunk version, from the cache or the stores.
 * Concurrent readers of the same chunk share one fetch.  A failure is
 * logged unless quiet (a caller that will ask for the record again first,
 * chunk_replaced, logs it if it stands). */
static int cache_acquire(struct fs *fs, uint64_t ino, uint64_t idx, const struct chunk_ref *ref,
                         const uint8_t *dek, struct cache_entry **out, int quiet)
{
    struct fs_data *d = fs->data;
    pthread_mutex_lock(&d->clock);
    for (;;) {
        struct cache_entry *e = cache_find(d, ino, idx, ref->version);
        if (!e)
            break;
        if (e->ready) {
            e->refs++;
            lru_unlink(d, e);
            lru_push_front(d, e);
            pthread_mutex_unlock(&d->clock);
            *out = e;
            return 0;
        }
        pthread_cond_wait(&d->ccond, &d->clock);
    }
    struct cache_entry *e = calloc(1, sizeof *e);
    uint8_t *buf = secmem_plain_alloc(ref->plain_len ? ref->plain_len : 1);
    if (!e || !buf) {
        pthread_mutex_unlock(&d->clock);
        free(e);
        secmem_plain_free(buf);
        return pfs_err(-ENOMEM, "out of memory for a chunk of inode %" PRIu64, ino);
    }
    e->ino = ino; e->idx = idx; e->version = ref->version; e->refs = 1;
    cache_insert_locked(d, e);
    pthread_mutex_unlock(&d->clock);

    uint32_t bad = 0;
    int r = object_get_chunk(fs->v->ol, dek, ino, idx, ref, buf, &bad);

    pthread_mutex_lock(&d->clock);
    if (r < 0) {
        e->ready = 1;   /* so remove does not skew accounting */
        e->cost = 0;
        e->buf = NULL;
        cache_remove_locked(d, e);
        secmem_plain_free(buf);
    } else {
        e->buf = buf;
        e->len = ref->plain_len;
        e->cost = ref->plain_len ? ref->plain_len : 1;
        e->ready = 1;
        d->cache_bytes += e->cost;
        cache_evict_locked(d);
    }
    pthread_cond_broadcast(&d->ccond);
    pthread_mutex_unlock(&d->clock);

    if (r < 0) {
        if (!quiet)
            chunk_unreadable(fs, ino, idx, ref, pfs_err_msg());
        return -EIO;
    }
    if (bad) {
        char *p = fs_path(fs, ino, NULL);
        char id[2 * CHUNK_ID_LEN + 1];
        hex_encode(ref->chunk_id, CHUNK_ID_LEN, id);
        log_warning("chunk %" PRIu64 " (id %s) of %s has bad fragments (mask 0x%x); "
                    "repairing in the background", idx, id, p ? p : "?", bad);
        free(p);
        queue_repair(fs, ref, bad);
    }
    *out = e;
    return 0;
}

/* ---- jobs ---- */

static void job_item_run(struct workq_item *it);

static void job_done(struct fs *fs, struct job *j);

/* Queue j on the pool, in order.  Once fs_data_stop has stopped the pool
 * (a gc the syncer queues as unmount drains the pool, a repair found by
 * unmount's last reads) a job that stores or frees something runs here,
 * in the caller, which holds no lock then; read-ahead and kernel
 * invalidation are dropped: nobody reads any more. */
static void job_push(struct fs_data *d, struct job *j)
{
    j->fs = d->fs;
    j->item.run = job_item_run;
    if (j->in) {
        pthread_mutex_lock(&d->qlock);
        d->inode_jobs++;
        pthread_mutex_unlock(&d->qlock);
    }
    if (workq_push(d->pool, &j->item) == 0)
        return;
    if (j->type == JOB_READAHEAD || j->type == JOB_INVAL) {
        job_done(d->fs, j);
        free(j);
        return;
    }
    job_item_run(&j->item);
}

static void queue_repair(struct fs *fs, const struct chunk_ref *ref, uint32_t mask)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->type = JOB_REPAIR;
    j->ref = *ref;
    j->mask = mask;
    job_push(fs->data, j);
}

/* Deletion-queue work is batched: a kick only marks it wanted and the
 * syncer queues the gc job after its next metadata sync (within
 * SYNC_PERIOD_MS), so an rm -rf of thousands of files costs a few gc
 * passes -- each one a metadata sync under meta_lock, which every
 * namespace operation waits behind -- not one per unlink. */
static void gc_queue_job(struct fs_data *d);

void fs_data_gc_kick(struct fs *fs)
{
    struct fs_data *d = fs->data;
    if (!d)
        return;
    if (__atomic_load_n(&d->syncer_started, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&d->gc_wanted, 1, __ATOMIC_RELEASE);
        return;
    }
    gc_queue_job(d);
}

static void gc_queue_job(struct fs_data *d)
{
    pthread_mutex_lock(&d->qlock);
    int already = d->gc_queued;
    d->gc_queued = 1;
    pthread_mutex_unlock(&d->qlock);
    if (already)
        return;
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        pthread_mutex_lock(&d->qlock);
        d->gc_queued = 0;
        pthread_mutex_unlock(&d->qlock);
        return;
    }
    j->type = JOB_GC;
    job_push(d, j);
}

void fs_data_cache_drop(struct fs *fs, uint64_t ino)
{
    if (fs->data)
        cache_drop_ino(fs->data, ino);
}

void fs_data_inval_later(struct fs *fs, uint64_t ino)
{
    struct job *j = fs->inval_inode ? calloc(1, sizeof *j) : NULL;
    if (!j)
        return;
    j->type = JOB_INVAL;
    j->idx = ino;
    job_push(fs->data, j);
}

/* ---- per-file chunk table ---- */

static size_t chunk_slot(const struct fs_file *f, uint64_t idx)
{
    return (size_t)(idx * 0x9E3779B97F4A7C15ull >> 24) & (f->ntab - 1);
}

static struct fs_chunk *chunk_find(struct fs_file *f, uint64_t idx)
{
    for (struct fs_chunk *c = f->tab[chunk_slot(f, idx)]; c; c = c->next)
        if (c->idx == idx)
            return c;
    return NULL;
}

static void chunk_tab_grow(struct fs_file *f)
{
    size_t n = f->ntab * 4;
    struct fs_chunk **t = calloc(n, sizeof *t);
    if (!t)
        return;
    struct fs_chunk **old = f->tab;
    size_t oldn = f->ntab;
    f->tab = t;
    f->ntab = n;
    for (size_t i = 0; i < oldn; i++) {
        struct fs_chunk *c = old[i];
        while (c) {
            struct fs_chunk *next = c->next;
            size_t s = chunk_slot(f, c->idx);
            c->next = t[s];
            t[s] = c;
            c = next;
        }
    }
    free(old);
}

static struct fs_chunk *chunk_get(struct fs_file *f, uint64_t idx)
{
    struct fs_chunk *c = chunk_find(f, idx);
    if (c)
        return c;
    c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->idx = idx;
    if (f->nchunks >= f->ntab * 2)
        chunk_tab_grow(f);
    size_t s = chunk_slot(f, idx);
    c->next = f->tab[s];
    f->tab[s] = c;
    f->nchunks++;
    return c;
}

static int drop_add(struct fs_file *f, const struct chunk_ref *ref)
{
    if (f->ndrop == f->capdrop) {
        size_t n = f->capdrop ? f->capdrop * 2 : 8;
        struct chunk_ref *p = realloc(f->drop, n * sizeof *p);
        if (!p)
            return -ENOMEM;   /* leaks fragments only; fsck finds them */
        f->drop = p;
        f->capdrop = n;
    }
    f->drop[f->ndrop++] = *ref;
    return 0;
}

/* Delete fragments that no metadata points at (superseded before commit). */
static void drop_delete(struct fs *fs, struct chunk_ref *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (object_delete_chunk(fs->v->ol, &list[i]) < 0)
            log_error("cannot delete uncommitted fragments: %s", pfs_err_msg());
    free(list);
}

/* ---- attach / detach ---- */

/* Forget c's dirty bytes and uncommitted fragments (in->lock held); its
 * record state becomes st. */
static void chunk_forget(struct fs *fs, struct fs_file *f, struct fs_chunk *c, int st)
{
    if (c->buf) {
        secmem_plain_free(c->buf);
        c->buf = NULL;
        c->len = 0;
        dirty_sub(fs->data, chunk_sz(fs));
    }
    if (c->ref_state == REF_PENDING)
        drop_add(f, &c->ref);
    c->ref_state = st;
}

static void file_free(struct fs_file *f)
{
    for (size_t i = 0; i < f->nretired; i++)   /* pairs: DEK, commitment key */
        secmem_free(f->retired[i], i % 2 ? FC_KEY_LEN : DEK_LEN);
    free(f->retired);
    secmem_free(f->dek, DEK_LEN);
    secmem_free(f->fc_key, FC_KEY_LEN);
    fc_list_free(&f->fc);
    free(f->tab);
    free(f);
}

static struct fs_file *file_new(void)
{
    struct fs_file *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->dek = secmem_alloc(DEK_LEN);
    f->fc_key = secmem_alloc(FC_KEY_LEN);
    f->ntab = 16;
    f->tab = calloc(f->ntab, sizeof *f->tab);
    fc_list_init(&f->fc);
    if (!f->dek || !f->fc_key || !f->tab) {
        file_free(f);
        return NULL;
    }
    f->trunc_from = NO_TRUNC;
    pthread_mutex_init(&f->commit_lock, NULL);
    return f;
}

/* ---- the per-file commitment (filecommit.h) ---- */

struct fc_load {
    struct fc_list *l;
    int rc;
};

static int fc_load_cb(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    struct fc_load *ld = arg;
    (void)ino;
    ld->rc = fc_list_set(ld->l, idx, r);
    return ld->rc < 0 ? ld->rc : 0;
}

/* Read every chunk record of mi and check them and mi's size against its
 * commitment, inside the commit's write transaction (meta_lock held; the
 * row mi was read and locked in that transaction, so no other commit lands
 * between the two reads).  On success *out holds the verified list and
 * *gen its generation; else -EBADMSG (pfs_err names the check) or a
 * metadata error. */
static int fc_load_locked(struct fs *fs, const struct meta_inode *mi, const uint8_t *key,
                          uint64_t min_gen, struct fc_list *out, uint64_t *gen)
{
    struct fc_list l;
    struct fc_load ld = { &l, 0 };
    struct fc_record rec;
    fc_list_init(&l);
    int r = meta_chunk_list(fs->v->meta, mi->ino, fc_load_cb, &ld);
    if (r == 0)
        r = fc_verify(key, mi->ino, mi->size, &l, mi->commitment, mi->commitment_len, min_gen,
                      &rec);
    if (r < 0) {
        fc_list_free(&l);
        return r;
    }
    fc_list_free(out);
    *out = l;
    *gen = rec.generation;
    return 0;
}

/* A file's row and chunk records as one snapshot holds them
 * (meta_inode_get_chunks: one statement).  The commitment is checked
 * against the two together, so a disagreement is never another
 * workstation's commit landing between two reads: it is tampering.  The
 * snapshot also keeps the first records themselves, which seed the
 * chunk-record cache (a small file is then read without another query),
 * and the record of one wanted index. */
#define SNAP_SEED_CHUNKS 256
#define SNAP_NO_WANT UINT64_MAX

struct fc_snap {
    struct meta_inode mi;
    struct fc_list l;
    struct chunk_ref *seed;    /* the first records, in index order */
    uint64_t *seed_idx;
    size_t nseed, capseed;
    uint64_t want;             /* SNAP_NO_WANT: none */
    int want_found;
    struct chunk_ref want_ref;
};

static void snap_init(struct fc_snap *s, uint64_t want)
{
    memset(s, 0, sizeof *s);
    fc_list_init(&s->l);
    s->want = want;
}

static void snap_free(struct fc_snap *s)
{
    fc_list_free(&s->l);
    free(s->seed);
    free(s->seed_idx);
    snap_init(s, s->want);
}

static int snap_cb(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    struct fc_snap *s = arg;
    (void)ino;
    int rc = fc_list_set(&s->l, idx, r);
    if (rc < 0)
        return rc;
    if (idx == s->want) {
        s->want_found = 1;
        s->want_ref = *r;
    }
    if (s->nseed < SNAP_SEED_CHUNKS) {
        if (s->nseed == s->capseed) {
            size_t n = s->capseed ? s->capseed * 4 : 4;
            struct chunk_ref *p = realloc(s->seed, n * sizeof *p);
            if (p)
                s->seed = p;
            uint64_t *q = p ? realloc(s->seed_idx, n * sizeof *q) : NULL;
            if (q)
                s->seed_idx = q;
            if (!p || !q)
                return 0;      /* a cache, not the check: seed fewer */
            s->capseed = n;
        }
        s->seed[s->nseed] = *r;
        s->seed_idx[s->nseed++] = idx;
    }
    return 0;
}

/* Read ino's snapshot (meta_lock held). */
static int snap_read(struct fs *fs, uint64_t ino, struct fc_snap *s)
{
    snap_free(s);
    return meta_inode_get_chunks(fs->v->meta, ino, &s->mi, snap_cb, s);
}

/* Check the snapshot against its commitment under key, never older than
 * min_gen: 0 (*gen its generation) or -EBADMSG naming the check. */
static int snap_verify(const struct fc_snap *s, const uint8_t *key, uint64_t min_gen,
                       uint64_t *gen)
{
    struct fc_record rec;
    int r = fc_verify(key, s->mi.ino, s->mi.size, &s->l, s->mi.commitment,
                      s->mi.commitment_len, min_gen, &rec);
    if (r == 0)
        *gen = rec.generation;
    return r;
}

/* f takes the verified list of s (in->lock held). */
static void snap_take_list(struct fs_file *f, struct fc_snap *s, uint64_t gen)
{
    fc_list_free(&f->fc);
    f->fc = s->l;
    fc_list_init(&s->l);
    f->fc_gen = gen;
}

/* Seed f's chunk-record cache with the verified records of s, for chunks
 * this mount holds nothing of (in->lock held).  A malformed record is not
 * seeded: its read then fails as chunk_source_once says. */
static void snap_seed(struct fs *fs, struct fs_file *f, const struct fc_snap *s)
{
    for (size_t i = 0; i < s->nseed; i++) {
        if (s->seed[i].version == 0 || s->seed[i].plain_len > fs->chunk_size)
            continue;
        struct fs_chunk *c = chunk_find(f, s->seed_idx[i]);
        if (!c && f->nchunks < REF_CACHE_CHUNKS)
            c = chunk_get(f, s->seed_idx[i]);
        if (!c || c->ref_state != REF_UNKNOWN || c->buf || c->loading || c->writing ||
            c->queued)
            continue;
        c->ref = s->seed[i];
        c->ref_state = REF_COMMITTED;
    }
}

int fs_data_commit_initial(const uint8_t *dek, struct meta_inode *mi)
{
    uint8_t *key = secmem_alloc(FC_KEY_LEN);
    struct fc_list empty;
    fc_list_init(&empty);
    int r = key ? fc_key_derive(dek, key) : -ENOMEM;
    if (r == 0)
        r = fc_seal(key, mi->ino, mi->size, 1, &empty, mi->commitment);
    if (r == 0)
        mi->commitment_len = FC_RECORD_LEN;
    secmem_free(key, FC_KEY_LEN);
    return r;
}

/* ---- a file re-keyed while open (pactfs-admin rekey, rekey.h) ---- */

static void file_note_dek(struct fs_file *f, const struct meta_inode *mi)
{
    f->key_version = mi->key_version;
    f->wrapped_len = mi->wrapped_dek_len <= sizeof f->wrapped_dek ? mi->wrapped_dek_len : 0;
    memcpy(f->wrapped_dek, mi->wrapped_dek, f->wrapped_len);
}

/* Does the row hold another DEK than the one this mount uses?  A file
 * created by this mount is compared by unwrapping the row's. */
static int file_rekeyed(struct fs *fs, struct fs_file *f, const struct meta_inode *mi)
{
    if (f->wrapped_len)
        return mi->key_version != f->key_version || mi->wrapped_dek_len != f->wrapped_len ||
               memcmp(mi->wrapped_dek, f->wrapped_dek, f->wrapped_len) != 0;
    const struct folder_keys *k = vault_folder_keys(fs->v, mi->folder_id, mi->key_version);
    uint8_t *dek = secmem_alloc(DEK_LEN);
    int same = k && dek && dek_unwrap(k, mi->ino, mi->wrapped_dek, mi->wrapped_dek_len, dek) == 0
               && memcmp(dek, f->dek, DEK_LEN) == 0;
    secmem_free(dek, DEK_LEN);
    if (same)
        file_note_dek(f, mi);
    return !same;
}

static int file_retire_keys(struct fs_file *f)
{
    uint8_t **r = realloc(f->retired, (f->nretired + 2) * sizeof *r);
    if (!r)
        return -ENOMEM;
    f->retired = r;
    r[f->nretired++] = f->dek;
    r[f->nretired++] = f->fc_key;
    return 0;
}

/* The stored row of the file has a new DEK: a dataadmin re-keyed it (its
 * commitment, under the new DEK, carries on the generations).  Take the
 * new DEK and commitment; chunks this mount put under the old DEK but has
 * not committed become dirty again (read back under the old DEK), so they
 * are sealed anew under the new one: nothing unsaved is lost.  If the new
 * generation is the re-keying of the version this mount's changes build
 * on, it becomes their base (a re-keying changes no content); otherwise
 * the next commit keeps both versions as any concurrent commit would.
 * in->lock held (dropped while puts and loads finish), meta_lock not. */
static int file_adopt_dek(struct fs *fs, struct fs_inode *in)
{
    struct fs_file *f = in->file;
    while (f->inflight || f->loading)
        pthread_cond_wait(&in->cond, &in->lock);
    if (f->withdrawn)
        return pfs_err(-EACCES, "inode %" PRIu64 ": its folder was withdrawn from this "
                       "account", in->ino);
    uint8_t *dek = secmem_alloc(DEK_LEN), *key = secmem_alloc(FC_KEY_LEN);
    size_t cs = chunk_sz(fs);
    struct fc_snap sn;
    struct meta_inode *mi = &sn.mi;
    uint64_t gen = 0;
    snap_init(&sn, SNAP_NO_WANT);
    int r = dek && key ? 0 : pfs_err(-ENOMEM, "out of memory adopting a new data key");
    pthread_mutex_lock(&fs->meta_lock);
    if (r == 0)
        r = snap_read(fs, in->ino, &sn);
    if (r == 0 && !file_rekeyed(fs, f, mi)) {
        pthread_mutex_unlock(&fs->meta_lock);
        goto out;                 /* adopted meanwhile */
    }
    const struct folder_keys *k = NULL;
    if (r == 0) {
        k = vault_folder_keys(fs->v, mi->folder_id, mi->key_version);
        if (!k && vault_folder_load(fs->v, mi->folder_id) == 0)   /* rotated since the mount */
            k = vault_folder_keys(fs->v, mi->folder_id, mi->key_version);
        if (!k)
            r = pfs_err(-EACCES, "inode %" PRIu64 " was re-keyed under folder key version %u, "
                        "which this mount does not hold: unmount and mount again", in->ino,
                        mi->key_version);
    }
    if (r == 0 && dek_unwrap(k, in->ino, mi->wrapped_dek, mi->wrapped_dek_len, dek) < 0)
        r = fs_tamper(fs, NULL, in->ino, NULL, "check \"data key\" failed: the row's new "
                      "wrapped data key does not unwrap");
    if (r == 0)
        r = fc_key_derive(dek, key);
    if (r == 0) {
        r = snap_verify(&sn, key, f->fc_gen, &gen);
        if (r == -EBADMSG)
            r = fs_tamper(fs, NULL, in->ino, NULL, pfs_err_msg());
    }
    pthread_mutex_unlock(&fs->meta_lock);
    /* this mount's uncommitted chunks, sealed under the old DEK */
    for (size_t i = 0; r == 0 && i < f->ntab; i++)
        for (struct fs_chunk *c = f->tab[i]; r == 0 && c; c = c->next) {
            if (c->ref_state != REF_PENDING || c->buf)
                continue;
            uint8_t *buf = secmem_plain_alloc(cs);
            r = buf ? object_get_chunk(fs->v->ol, f->dek, in->ino, c->idx, &c->ref, buf, NULL)
                    : -ENOMEM;
            if (r < 0) {
                secmem_plain_free(buf);
                r = pfs_err(-EIO, "inode %" PRIu64 " was re-keyed; its unsaved chunk %" PRIu64
                            " cannot be read back to seal it under the new key (%s)", in->ino,
                            c->idx, pfs_err_msg());
                break;
            }
            dirty_add(fs->data, cs);
            drop_add(f, &c->ref);
            c->buf = buf;
            c->len = c->ref.plain_len;
            c->hw = (uint32_t)cs;   /* what the decoder wrote: assume all */
            c->ref_state = REF_UNKNOWN;
        }
    if (r == 0 && file_retire_keys(f) < 0)
        r = pfs_err(-ENOMEM, "out of memory adopting a new data key");
    if (r < 0)
        goto out;
    for (size_t i = 0; i < f->ntab; i++)
        for (struct fs_chunk *c = f->tab[i]; c; c = c->next) {
            if (c->ref_state != REF_PENDING)
                c->ref_state = REF_UNKNOWN;
            c->version_known = 0;   /* max_version stays: never reused */
        }
    __atomic_store_n(&f->dek, dek, __ATOMIC_RELEASE);
    __atomic_store_n(&f->fc_key, key, __ATOMIC_RELEASE);
    dek = key = NULL;
    if (f->base_gen == f->fc_gen && gen == f->fc_gen + 1)
        f->base_gen = gen;
    snap_take_list(f, &sn, gen);
    f->fresh = 0;
    f->ra_until = 0;
    file_note_dek(f, mi);
    /* plaintext cached under this mount's own versions, whose numbers the
     * re-keying may have taken, must not serve the new records */
    cache_drop_ino(fs->data, in->ino);
out:
    snap_free(&sn);
    secmem_free(dek, DEK_LEN);
    secmem_free(key, FC_KEY_LEN);
    return r;
}

/* Read the file's row and chunk records (one snapshot), unwrap its DEK and
 * check the records against its commitment (in->lock held). */
static int file_load(struct fs *fs, struct fs_inode *in, struct fs_file *f)
{
    struct fc_snap sn;
    uint64_t gen = 0;
    snap_init(&sn, SNAP_NO_WANT);
    pthread_mutex_lock(&fs->meta_lock);
    int r = snap_read(fs, in->ino, &sn);
    pthread_mutex_unlock(&fs->meta_lock);
    const struct folder_keys *k = NULL;
    if (r == 0) {
        k = vault_folder_keys(fs->v, sn.mi.folder_id, sn.mi.key_version);
        if (!k)
            r = pfs_err(-EACCES, "inode %" PRIu64 ": folder key version %u is not held by "
                        "this account", in->ino, sn.mi.key_version);
    }
    if (r == 0 && dek_unwrap(k, in->ino, sn.mi.wrapped_dek, sn.mi.wrapped_dek_len, f->dek) < 0)
        r = pfs_err(-EIO, "inode %" PRIu64 ": its data key does not unwrap (%s)", in->ino,
                    pfs_err_msg());
    if (r == 0 && fc_key_derive(f->dek, f->fc_key) < 0)
        r = pfs_err(-EIO, "inode %" PRIu64 ": cannot derive its commitment key", in->ino);
    if (r == 0) {
        file_note_dek(f, &sn.mi);
        r = snap_verify(&sn, f->fc_key, 0, &gen);
    }
    /* The signed file head's floor: a verified commitment older than it is
     * an older version put back.  The floor may have been refreshed after
     * the snapshot was read: read it once more before calling it
     * tampering. */
    uint64_t floor = vault_file_floor(fs->v, in->ino);
    if (r == 0 && gen < floor) {
        pthread_mutex_lock(&fs->meta_lock);
        r = snap_read(fs, in->ino, &sn);
        pthread_mutex_unlock(&fs->meta_lock);
        if (r == 0 && file_rekeyed(fs, f, &sn.mi))
            r = pfs_err(-EIO, "inode %" PRIu64 " was re-keyed while it was opened: try again",
                        in->ino);
        if (r == 0)
            r = snap_verify(&sn, f->fc_key, 0, &gen);
    }
    if (r == 0 && gen < floor)
        r = pfs_err(-EBADMSG, "check \"file head\" failed: its commitment has generation %"
                    PRIu64 ", older than generation %" PRIu64 " that the signed file head "
                    "records (an older version of the file was put back in the metadata "
                    "store)", gen, floor);
    if (r == 0) {
        snap_take_list(f, &sn, gen);
        f->size = sn.mi.size;
        f->mtime_ns = sn.mi.mtime_ns;
        f->base_gen = f->fc_gen;
        snap_seed(fs, f, &sn);
    }
    snap_free(&sn);
    if (r == -EBADMSG)
        return fs_tamper(fs, NULL, in->ino, NULL, pfs_err_msg());
    return r;
}

/* Close-to-open against other mounts of the vault on this machine: at an
 * open, a file this mount has nothing unsaved of forgets what it knew of
 * the stored file (size, mtime, chunk records, versions), so it reads what
 * the other mount last committed.  A file with unsaved data keeps its own
 * view: its next commit replaces the other's. */
/* f holds changes not yet committed, or work on them (in->lock held). */
static int file_unsaved(const struct fs_file *f)
{
    int busy = !f || f->inflight || f->loading || f->size_dirty || f->mtime_dirty ||
               f->trunc_from != NO_TRUNC || f->ndrop;
    for (size_t i = 0; !busy && i < f->ntab; i++)
        for (struct fs_chunk *c = f->tab[i]; c && !busy; c = c->next)
            busy = c->buf || c->loading || c->writing || c->queued ||
                   c->ref_state == REF_PENDING;
    return busy;
}

int fs_data_revalidate(struct fs *fs, struct fs_inode *in)
{
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    if (f && f->withdrawn) {
        pthread_mutex_unlock(&in->lock);
        return -EACCES;
    }
    int busy = file_unsaved(f);
    struct fc_snap sn;
    uint64_t gen = 0;
    int r = 0;
    snap_init(&sn, SNAP_NO_WANT);
    /* The stored state, as another mount committed it (one snapshot of the
     * row and its records), must verify against its commitment and be no
     * older than what this mount saw.  Re-keyed since this mount read it:
     * take the new DEK first, then read again. */
    for (int round = 0; !busy && round < 2; round++) {
        pthread_mutex_lock(&fs->meta_lock);
        if (snap_read(fs, in->ino, &sn) < 0) {
            pthread_mutex_unlock(&fs->meta_lock);
            busy = 1;
            break;
        }
        if (file_rekeyed(fs, f, &sn.mi)) {
            pthread_mutex_unlock(&fs->meta_lock);
            r = file_adopt_dek(fs, in);
            busy = r < 0 || file_unsaved(f) || round == 1;
            continue;
        }
        r = snap_verify(&sn, f->fc_key, f->fc_gen, &gen);
        if (r == -EBADMSG)
            r = fs_tamper(fs, NULL, in->ino, NULL, pfs_err_msg());
        pthread_mutex_unlock(&fs->meta_lock);
        busy = r < 0;
        if (busy)
            break;
        for (size_t i = 0; i < f->ntab; i++)
            for (struct fs_chunk *c = f->tab[i]; c; c = c->next) {
                c->ref_state = REF_UNKNOWN;
                c->version_known = 0;
            }
        snap_take_list(f, &sn, gen);
        snap_seed(fs, f, &sn);
        f->size = sn.mi.size;
        f->mtime_ns = sn.mi.mtime_ns;
        f->base_gen = f->fc_gen;
        f->fresh = 0;
        f->ra_until = 0;
        break;
    }
    snap_free(&sn);
    pthread_mutex_unlock(&in->lock);
    return r < 0 ? -EIO : 0;
}

int fs_data_attach(struct fs *fs, struct fs_inode *in, const uint8_t *dek)
{
    pthread_mutex_lock(&in->lock);
    if (in->file) {
        pthread_mutex_unlock(&in->lock);
        return 0;
    }
    struct fs_file *f = file_new();
    int r = f ? 0 : pfs_err(-ENOMEM, "out of memory opening inode %" PRIu64, in->ino);
    if (r == 0 && dek) {
        /* created by this mount with fs_data_commit_initial: generation 1 */
        memcpy(f->dek, dek, DEK_LEN);
        f->fresh = 1;
        f->unsaved_new = 1;
        f->fc_gen = f->base_gen = 1;
        r = fc_key_derive(f->dek, f->fc_key);
    }
    else if (r == 0)
        r = file_load(fs, in, f);
    if (r == 0)
        in->file = f;
    pthread_mutex_unlock(&in->lock);
    if (r < 0 && f) {
        pthread_mutex_destroy(&f->commit_lock);
        file_free(f);
    }
    return r;
}

void fs_data_detach(struct fs *fs, struct fs_inode *in)
{
    struct fs_file *f = in->file;
    if (!f)
        return;
    in->file = NULL;
    for (size_t i = 0; i < f->ntab; i++) {
        struct fs_chunk *c = f->tab[i];
        while (c) {
            struct fs_chunk *next = c->next;
            if (c->buf) {
                secmem_plain_free(c->buf);
                dirty_sub(fs->data, chunk_sz(fs));
            }
            if (c->ref_state == REF_PENDING)
                drop_add(f, &c->ref);
            free(c);
            c = next;
        }
    }
    drop_delete(fs, f->drop, f->ndrop);
    cache_drop_ino(fs->data, in->ino);
    pthread_mutex_destroy(&f->commit_lock);
    file_free(f);
}

void fs_data_withdraw(struct fs *fs, struct fs_inode *in)
{
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    pthread_mutex_unlock(&in->lock);
    if (!f)
        return;
    /* a commit in progress seals with the commitment key: let it finish */
    pthread_mutex_lock(&f->commit_lock);
    pthread_mutex_lock(&in->lock);
    f->withdrawn = 1;   /* nothing takes the keys from now on */
    /* puts, loads and reads that took a key pointer before */
    while (f->inflight || f->loading || f->users)
        pthread_cond_wait(&in->cond, &in->lock);
    secmem_wipe(f->dek, DEK_LEN);
    secmem_wipe(f->fc_key, FC_KEY_LEN);
    for (size_t i = 0; i < f->nretired; i++)   /* pairs: DEK, commitment key */
        secmem_wipe(f->retired[i], i % 2 ? FC_KEY_LEN : DEK_LEN);
    /* unsaved changes can no longer be sealed: their plaintext goes too */
    int lost = f->size_dirty || f->mtime_dirty || f->trunc_from != NO_TRUNC;
    for (size_t i = 0; i < f->ntab; i++)
        for (struct fs_chunk *c = f->tab[i]; c; c = c->next) {
            lost |= c->buf != NULL || c->ref_state == REF_PENDING;
            if (c->buf)
                chunk_forget(fs, f, c, REF_UNKNOWN);
        }
    f->size_dirty = f->mtime_dirty = 0;
    f->trunc_from = NO_TRUNC;
    pthread_mutex_unlock(&in->lock);
    pthread_mutex_unlock(&f->commit_lock);
    cache_drop_ino(fs->data, in->ino);
    if (lost) {   /* the moment they are lost, not at some later unmount */
        char *p = fs_path(fs, in->ino, NULL);
        log_error("%s: its unsaved changes are lost: the folder was withdrawn from this "
                  "account before they were written back", p ? p : "?");
        fs_audit(fs, NULL, "writeback-lost", p, -EACCES, 0);
        free(p);
    }
}

/* ---- where the bytes of a chunk are ---- */

enum chunk_src { SRC_HOLE, SRC_DIRTY, SRC_STORED };

/* A chunk record just read (buf if rc is 0, none if -ENOENT) must be the
 * one the verified commitment lists for idx (in->lock and meta_lock held).
 * If not, another workstation may have committed since this mount verified
 * the list: read the row and every record again in one snapshot
 * (meta_inode_get_chunks) and verify them (never older).  The record of
 * idx is then taken from that snapshot: a snapshot that does not verify is
 * tampering (-EIO, reported), never a race.  Returns the record's rc (0,
 * buf refilled, or -ENOENT for a hole) when it is the listed one. */
static int chunk_committed_check(struct fs *fs, struct fs_inode *in, uint64_t idx,
                                 struct chunk_ref *buf, int rc)
{
    struct fs_file *f = in->file;
    const struct fc_entry *e = fc_list_find(&f->fc, idx);
    if (rc == 0 ? fc_entry_matches(e, buf) : e == NULL)
        return rc;
    struct fc_snap sn;
    uint64_t gen = 0;
    char what[512];
    snap_init(&sn, idx);
    int r = snap_read(fs, in->ino, &sn);
    if (r == 0 && file_rekeyed(fs, f, &sn.mi))
        r = -EKEYEXPIRED;  /* chunk_source adopts the new DEK */
    else if (r == 0)
        r = snap_verify(&sn, f->fc_key, f->fc_gen, &gen);
    if (r == 0) {
        snap_take_list(f, &sn, gen);
        if (!file_unsaved(f))
            f->base_gen = f->fc_gen;   /* nothing of ours to lose: the newer state is the base */
        rc = sn.want_found ? 0 : -ENOENT;
        if (rc == 0)
            *buf = sn.want_ref;
    }
    snap_free(&sn);
    if (r != -EBADMSG)
        return r < 0 ? r : rc;
    snprintf(what, sizeof what, "chunk %" PRIu64 " (%s): %s", idx,
             rc == 0 ? (e ? "record is not the committed version" : "record where a hole was "
                        "committed") : "record missing", pfs_err_msg());
    return fs_tamper(fs, NULL, in->ino, NULL, what);
}

/* Under in->lock (takes meta_lock briefly). */
static int chunk_source_once(struct fs *fs, struct fs_inode *in, uint64_t idx,
                             struct chunk_ref *ref, enum chunk_src *src)
{
    struct fs_chunk *c = chunk_find(in->file, idx);
    if (c && c->buf) {
        *src = SRC_DIRTY;
        return 0;
    }
    if (c && (c->ref_state == REF_PENDING || c->ref_state == REF_COMMITTED)) {
        *ref = c->ref;
        *src = SRC_STORED;
        return 0;
    }
    if (c && c->ref_state == REF_HOLE) {
        *src = SRC_HOLE;
        return 0;
    }
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_chunk_get(fs->v->meta, in->ino, idx, ref);
    if (r == 0 || r == -ENOENT)
        r = chunk_committed_check(fs, in, idx, ref, r);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0 && r != -ENOENT)
        return r;
    if (r == 0 && (ref->version == 0 || ref->plain_len > fs->chunk_size))
        return pfs_err(-EIO, "inode %" PRIu64 " chunk %" PRIu64 ": malformed chunk record",
                       in->ino, idx);
    *src = r == 0 ? SRC_STORED : SRC_HOLE;
    /* Remember the record so the next reads of this chunk skip the query
     * (bounded: very large files fall back to asking every time). */
    if (!c && in->file->nchunks < REF_CACHE_CHUNKS)
        c = chunk_get(in->file, idx);
    if (c) {
        c->ref_state = r == 0 ? REF_COMMITTED : REF_HOLE;
        if (r == 0)
            c->ref = *ref;
    }
    return 0;
}

/* The same, adopting a new DEK if the file was re-keyed since it was read:
 * the record then found is sealed under it (file_adopt_dek). */
static int chunk_source(struct fs *fs, struct fs_inode *in, uint64_t idx,
                        struct chunk_ref *ref, enum chunk_src *src)
{
    /* the keys went while in->lock was dropped: nothing may check a record
     * against a wiped commitment key (it would look like tampering) */
    if (in->file->withdrawn)
        return -EACCES;
    int r = chunk_source_once(fs, in, idx, ref, src);
    if (r == -EKEYEXPIRED) {
        r = file_adopt_dek(fs, in);
        if (r == 0)
            r = chunk_source_once(fs, in, idx, ref, src);
        if (r == -EKEYEXPIRED)
            r = pfs_err(-EIO, "inode %" PRIu64 " is being re-keyed again and again", in->ino);
    }
    return r;
}

/* cache_acquire failed (quiet) for ref, a record of chunk idx this mount
 * remembered or had just read, under dek_used.  A re-keying (pactfs-admin
 * rekey) replaces every record of a file, and the mount's deletion queue
 * then removes the fragments they named: if the row now holds another DEK
 * (or this mount adopted one meanwhile), adopt it -- which forgets the
 * remembered records -- and return 1, worth one more try (a re-keying
 * changes no content).  Otherwise return 0: the failure stands, logged
 * here, and the remembered record stays, so the handle keeps failing
 * rather than read another workstation's newer content into the version
 * its open attached (in->lock held). */
static int chunk_replaced(struct fs *fs, struct fs_inode *in, uint64_t idx,
                          const struct chunk_ref *failed, const uint8_t *dek_used)
{
    struct fs_file *f = in->file;
    if (f->dek != dek_used)
        return 1;
    char why[512];
    snprintf(why, sizeof why, "%s", pfs_err_msg());
    struct meta_inode mi;
    struct chunk_ref now;
    pthread_mutex_lock(&fs->meta_lock);
    int rekeyed = !f->withdrawn && meta_inode_get(fs->v->meta, in->ino, &mi) == 0 &&
                  file_rekeyed(fs, f, &mi);
    int saved_since = !rekeyed && meta_chunk_get(fs->v->meta, in->ino, idx, &now) == 0 &&
                      now.version != failed->version;
    pthread_mutex_unlock(&fs->meta_lock);
    if (rekeyed) {
        if (file_adopt_dek(fs, in) == 0)
            return 1;
        snprintf(why, sizeof why, "%s", pfs_err_msg());   /* why the adoption failed */
    } else if (saved_since)
        snprintf(why, sizeof why, "the file was saved again since it was opened here and the "
                 "version this handle reads is deleted: close it and open it again");
    chunk_unreadable(fs, in->ino, idx, failed, why);
    return 0;
}

/* Wait until chunk idx is neither loading nor being written (in->lock held).
 * Returns the (possibly re-created) chunk. */
static struct fs_chunk *chunk_wait_idle(struct fs_inode *in, uint64_t idx)
{
    for (;;) {
        struct fs_chunk *c = chunk_get(in->file, idx);
        if (!c || (!c->loading && !c->writing))
            return c;
        pthread_cond_wait(&in->cond, &in->lock);
    }
}

/* Give chunk c a dirty buffer holding its current bytes (in->lock held; it
 * is dropped while loading from the stores).  keep_len: how many bytes of
 * the current content matter (0 when the caller overwrites them all). */
static int chunk_make_dirty(struct fs *fs, struct fs_inode *in, struct fs_chunk *c,
                            uint32_t keep_len)
{
    size_t cs = chunk_sz(fs);
    uint8_t *buf = secmem_plain_alloc(cs);
    if (!buf)
        return pfs_err(-ENOMEM, "out of memory for a dirty chunk");
    dirty_add(fs->data, cs);
    uint32_t len = 0;
    for (int tries = 0; keep_len; tries++) {
        struct chunk_ref ref;
        enum chunk_src src;
        int r = chunk_source(fs, in, c->idx, &ref, &src);
        if (r == 0 && c->buf) {
            /* made dirty by another writer while a re-keyed DEK was
             * adopted (the lock was dropped): that buffer is the chunk */
            secmem_plain_free(buf);
            dirty_sub(fs->data, cs);
            return 0;
        }
        if (r == 0 && src == SRC_STORED) {
            const uint8_t *dek = in->file->dek;   /* the one ref is sealed under */
            c->loading = 1;
            in->file->loading++;
            pthread_mutex_unlock(&in->lock);
            struct cache_entry *e = NULL;
            r = cache_acquire(fs, in->ino, c->idx, &ref, dek, &e, 1);
            if (r == 0) {
                len = e->len < keep_len ? e->len : keep_len;
                memcpy(buf, e->buf, len);
                cache_release(fs->data, e);
            }
            pthread_mutex_lock(&in->lock);
            c->loading = 0;
            in->file->loading--;
            pthread_cond_broadcast(&in->cond);
            if (r == 0 && in->file->withdrawn)
                r = -EACCES;   /* its keys went meanwhile: keep no plaintext */
            if (r == -EIO && tries == 0 && chunk_replaced(fs, in, c->idx, &ref, dek))
                continue;      /* read it by its new record */
        }
        if (r < 0) {
            secmem_plain_free(buf);
            dirty_sub(fs->data, cs);
            return r;
        }
        if (len < keep_len)   /* hole or short chunk: zeros */
            memset(buf + len, 0, keep_len - len);
        len = keep_len;
        break;
    }
    c->buf = buf;
    c->len = len;
    c->hw = len;
    return 0;
}

/* ---- write-back ---- */

/* Queue a put of c (in->lock held). */
static void chunk_queue_put(struct fs *fs, struct fs_inode *in, struct fs_chunk *c)
{
    if (c->queued || c->writing || !c->buf)
        return;
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return;   /* stays dirty; the next flush retries */
    c->queued = 1;
    in->file->inflight++;
    fs_inode_hold(fs, in);
    j->type = JOB_PUT;
    j->in = in;
    j->idx = c->idx;
    job_push(fs->data, j);
}

static void queue_all_dirty(struct fs *fs, struct fs_inode *in)
{
    struct fs_file *f = in->file;
    for (size_t i = 0; i < f->ntab; i++)
        for (struct fs_chunk *c = f->tab[i]; c; c = c->next)
            if (c->buf && !c->loading)
                chunk_queue_put(fs, in, c);
}

static void job_put(struct fs *fs, struct fs_inode *in, uint64_t idx)
{
    struct fs_file *f = in->file;
    size_t cs = chunk_sz(fs);
    char *audit_path = NULL;   /* the first failure after a success is audited */
    pthread_mutex_lock(&in->lock);
    struct fs_chunk *c = chunk_find(f, idx);
    if (c)
        c->queued = 0;
    if (!c || !c->buf || c->writing || c->loading || f->withdrawn)
        goto done;
    int r = 0;
    if (!c->version_known && f->fresh)
        c->version_known = 1;   /* max_version stays 0 */
    if (!c->version_known) {
        uint64_t v = 0;
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_chunk_max_version(fs->v->meta, in->ino, idx, &v);
        pthread_mutex_unlock(&fs->meta_lock);
        if (r == 0) {
            if (v > c->max_version)
                c->max_version = v;
            c->version_known = 1;
        }
    }
    if (r < 0) {
        if (!f->wb_error)
            f->wb_error = -EIO;
        goto done;
    }
    uint64_t version = c->max_version + 1;
    uint8_t *buf = c->buf;
    uint32_t len = c->len, hw = c->hw;
    int streamed = c->streamed && len == cs;
    c->writing = 1;
    pthread_mutex_unlock(&in->lock);

    struct chunk_ref ref;
    uint32_t missing = 0;
    r = object_put_chunk_degraded(fs->v->ol, f->dek, in->ino, idx, version, buf, len, &ref,
                                  &missing);
    if (r == 0 && missing)
        repair_later(fs, in->ino, idx, &ref, missing);
    else if (r == 0)
        endpoints_recovered(fs, &ref);

    pthread_mutex_lock(&in->lock);
    c->writing = 0;
    c->max_version = version;   /* never reuse a version, even a failed one */
    if (r < 0) {
        char *p = fs_path(fs, in->ino, NULL);
        log_error("write-back of chunk %" PRIu64 " of %s failed (kept in "
                  "memory and retried at the next flush): %s", idx, p ? p : "?",
                  pfs_err_msg());
        fs_health_note_error(fs, pfs_err_msg());
        __atomic_add_fetch(&fs->data->health.writeback_errors, 1, __ATOMIC_RELAXED);
        if (!__atomic_exchange_n(&fs->data->wb_trouble, 1, __ATOMIC_RELAXED))
            audit_path = p, p = NULL;
        free(p);
        if (!f->wb_error)
            f->wb_error = -EIO;
    } else {
        if (c->ref_state == REF_PENDING)
            drop_add(f, &c->ref);
        c->ref = ref;
        c->ref_state = REF_PENDING;
        c->buf = NULL;
        f->put_gen = __atomic_add_fetch(&fs->data->put_gen, 1, __ATOMIC_ACQ_REL);
        if (streamed)
            secmem_plain_free_upto(buf, hw);   /* a spare for the next chunk */
        else
            cache_adopt(fs->data, in->ino, idx, version, buf, len, hw, cs);
        dirty_sub(fs->data, cs);
    }
done:
    f->inflight--;
    pthread_cond_broadcast(&in->cond);
    pthread_mutex_unlock(&in->lock);
    if (audit_path)
        fs_audit(fs, NULL, "writeback-failed", audit_path, -EIO, idx);
    free(audit_path);
}

struct commit_item {
    uint64_t idx;
    struct chunk_ref ref;
};

struct commit_set {
    struct commit_item *items;
    size_t n;
    uint64_t trunc_from, size, attr_gen, put_gen;
    int64_t mtime_ns, ctime_ns;
    int size_dirty, mtime_dirty;
    unsigned setattr_seq;
    int mtime_held;            /* a setattr was running at the gather */
    int mtime_written;         /* commit_meta wrote mtime_ns */
    struct chunk_ref *drop;
    size_t ndrop;
    struct fc_list fc;         /* the file's verified records at the gather,
                                  then (commit_meta) the committed ones */
    uint64_t fc_gen;           /* their generation, then the new one */
    uint64_t base_gen;         /* fs_file.base_gen at the gather */
    int fc_new;                /* commit_record sealed a new commitment */
    struct fs_attr_overlay ov; /* deferred attributes at the gather */
    uint64_t ov_gen;
};

/* Anything for a commit to write? */
static int commit_has_work(const struct commit_set *s)
{
    return s->n || s->trunc_from != NO_TRUNC || s->size_dirty || s->mtime_dirty || s->ov.set;
}

/* Take what the next commit must record (in->lock held). */
static int commit_gather(struct fs_file *f, struct commit_set *s)
{
    memset(s, 0, sizeof *s);
    fc_list_init(&s->fc);
    if (fc_list_copy(&s->fc, &f->fc) < 0)
        return -ENOMEM;
    s->fc_gen = f->fc_gen;
    s->base_gen = f->base_gen;
    size_t n = 0;
    for (size_t i = 0; i < f->ntab; i++)
        for (struct fs_chunk *c = f->tab[i]; c; c = c->next)
            n += c->ref_state == REF_PENDING;
    if (n) {
        s->items = malloc(n * sizeof *s->items);
        if (!s->items) {
            fc_list_free(&s->fc);
            return -ENOMEM;
        }
        for (size_t i = 0; i < f->ntab; i++)
            for (struct fs_chunk *c = f->tab[i]; c; c = c->next)
                if (c->ref_state == REF_PENDING) {
                    s->items[s->n].idx = c->idx;
                    s->items[s->n].ref = c->ref;
                    s->n++;
                }
    }
    s->put_gen = f->put_gen;
    s->trunc_from = f->trunc_from;
    f->trunc_from = NO_TRUNC;
    s->size = f->size;
    s->mtime_ns = f->mtime_ns;
    s->ctime_ns = f->ctime_ns;
    s->size_dirty = f->size_dirty;
    s->mtime_dirty = f->mtime_dirty;
    s->attr_gen = f->attr_gen;
    s->setattr_seq = __atomic_load_n(&f->setattr_seq, __ATOMIC_ACQUIRE);
    s->mtime_held = f->setattr_active > 0;
    s->drop = f->drop;
    s->ndrop = f->ndrop;
    f->drop = NULL;
    f->ndrop = f->capdrop = 0;
    s->ov = f->ov;
    s->ov_gen = f->ov_gen;
    return 0;
}

/* The new commitment of the file (meta_lock held, in the commit's
 * transaction, before its chunk records change).  The base is the list this
 * mount verified or committed last; if the stored commitment has moved on
 * (another workstation committed), the stored records must verify first. */
static int commit_record(struct fs *fs, struct fs_inode *in, struct meta_inode *mi,
                         struct commit_set *s)
{
    struct fc_record rec;
    /* A dataadmin gave the file a fresh DEK: this mount's chunks are sealed
     * under the old one (file_commit adopts the new one and writes again). */
    if (file_rekeyed(fs, in->file, mi))
        return COMMIT_REKEYED;
    int parsed = fc_parse(mi->commitment, mi->commitment_len, &rec) == 0;
    /* Someone else committed data since this mount's changes began: never
     * mix chunks of two versions; both are kept (file_commit). */
    if (parsed && rec.generation > s->base_gen &&
        (s->n || s->trunc_from != NO_TRUNC || s->size_dirty))
        return COMMIT_CONFLICT;
    if (!parsed || rec.generation != s->fc_gen) {
        int r = fc_load_locked(fs, mi, in->file->fc_key, s->fc_gen, &s->fc, &s->fc_gen);
        if (r == -EBADMSG)
            return fs_tamper(fs, NULL, in->ino, NULL, pfs_err_msg());
        if (r < 0)
            return r;
    }
    if (s->trunc_from != NO_TRUNC)
        fc_list_truncate(&s->fc, s->trunc_from);
    for (size_t i = 0; i < s->n; i++)
        if (fc_list_set(&s->fc, s->items[i].idx, &s->items[i].ref) < 0)
            return -ENOMEM;
    s->fc_gen++;
    if (fc_seal(in->file->fc_key, in->ino, s->size, s->fc_gen, &s->fc, mi->commitment) < 0)
        return -EIO;
    mi->commitment_len = FC_RECORD_LEN;
    s->fc_new = 1;
    return 0;
}

/* One file's part of a commit transaction (meta_lock held, inside it). */
static int commit_meta_body(struct fs *fs, struct fs_inode *in, struct commit_set *s,
                            const unsigned *setattr_seq)
{
    struct meta *m = fs->v->meta;
    uint64_t ino = in->ino;
    struct meta_inode mi;
    /* writers of this file on other workstations commit one at a time */
    int r = meta_inode_lock(m, ino);
    if (r == 0)
        r = meta_inode_get(m, ino, &mi);
    if (r == 0)
        r = commit_record(fs, in, &mi, s);
    if (r == 0 && s->trunc_from != NO_TRUNC)
        r = meta_chunk_truncate(m, ino, s->trunc_from);
    for (size_t i = 0; r == 0 && i < s->n; i++)
        r = meta_chunk_put(m, ino, s->items[i].idx, &s->items[i].ref);
    if (r == 0) {
        mi.size = s->size;
        /* A setattr since the gather may have set mtime explicitly (under
         * meta_lock, like this check): its value wins. */
        s->mtime_written = s->mtime_dirty && !s->mtime_held &&
            __atomic_load_n(setattr_seq, __ATOMIC_ACQUIRE) == s->setattr_seq;
        if (s->mtime_written)
            mi.mtime_ns = s->mtime_ns;
        if (s->ctime_ns > mi.ctime_ns)   /* a later setattr's ctime stays */
            mi.ctime_ns = s->ctime_ns;
        fs_attr_overlay_apply(&s->ov, &mi);
        r = meta_inode_update(m, &mi);
    }
    return r;
}

static int commit_meta(struct fs *fs, struct fs_inode *in, struct commit_set *s,
                       const unsigned *setattr_seq)
{
    struct meta *m = fs->v->meta;
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_begin(m);
    if (r < 0)
        goto out;
    r = commit_meta_body(fs, in, s, setattr_seq);
    if (r == 0)
        r = meta_commit(m);
    else
        meta_rollback(m);
    if (r == 0)
        vault_file_head_note_commit(fs->v, in->ino);   /* the signed file head follows, batched */
out:
    pthread_mutex_unlock(&fs->meta_lock);
    return r;
}

/* After a commit: chunks recorded are no longer pending (unless rewritten
 * meanwhile); on failure put back what was taken. */
static void commit_settle(struct fs_file *f, struct commit_set *s, int ok)
{
    if (ok && s->fc_new) {
        fc_list_free(&f->fc);
        f->fc = s->fc;
        fc_list_init(&s->fc);
        f->fc_gen = s->fc_gen;
    }
    if (ok) {
        f->base_gen = f->fc_gen;
        /* saved: later attribute changes take their own transaction */
        f->unsaved_new = 0;
        if (f->ov_gen == s->ov_gen)
            f->ov.set = 0;
    }
    if (ok) {
        for (size_t i = 0; i < s->n; i++) {
            struct fs_chunk *c = chunk_find(f, s->items[i].idx);
            if (c && c->ref_state == REF_PENDING &&
                c->ref.version == s->items[i].ref.version)
                c->ref_state = REF_COMMITTED;
        }
        if (f->attr_gen == s->attr_gen) {
            f->size_dirty = 0;
            if (s->mtime_written || !s->mtime_dirty)
                f->mtime_dirty = 0;   /* else a later commit writes it */
        }
        return;
    }
    if (s->trunc_from != NO_TRUNC && s->trunc_from < f->trunc_from)
        f->trunc_from = s->trunc_from;
    f->size_dirty |= s->size_dirty;
    f->mtime_dirty |= s->mtime_dirty;
    for (size_t i = 0; i < s->ndrop; i++)
        drop_add(f, &s->drop[i]);
    free(s->drop);
    s->drop = NULL;
    s->ndrop = 0;
}

/* Make every put up to put_gen durable: skipped when a sync that started
 * after that put finished has already completed (a batch of files closed
 * together pays for one sync). */
static int fragments_sync(struct fs *fs, uint64_t put_gen)
{
    struct fs_data *d = fs->data;
    if (__atomic_load_n(&d->synced_gen, __ATOMIC_ACQUIRE) >= put_gen)
        return 0;
    uint64_t start = __atomic_load_n(&d->put_gen, __ATOMIC_ACQUIRE);
    __atomic_add_fetch(&d->health.fragment_syncs, 1, __ATOMIC_RELAXED);
    int r = object_layer_sync(fs->v->ol);
    if (r < 0)
        return r;
    uint64_t cur = __atomic_load_n(&d->synced_gen, __ATOMIC_ACQUIRE);
    while (cur < start &&
           !__atomic_compare_exchange_n(&d->synced_gen, &cur, start, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
        ;
    return 0;
}

/* Version 1 of a chunk replaced nothing: no deletion queue entry to run. */
static int commit_replaced_some(const struct commit_set *s)
{
    if (s->trunc_from != NO_TRUNC)
        return 1;
    for (size_t i = 0; i < s->n; i++)
        if (s->items[i].ref.version != 1)
            return 1;
    return 0;
}

/* After a conflict whose copy now holds this mount's version: forget that
 * version here (dirty buffers, chunks put but never committed, truncation)
 * and take the stored state, the other writer's (commit_lock held). */
static int conflict_discard(struct fs *fs, struct fs_inode *in)
{
    struct fs_file *f = in->file;
    pthread_mutex_lock(&in->lock);
    while (f->inflight || f->loading)
        pthread_cond_wait(&in->cond, &in->lock);
    for (size_t i = 0; i < f->ntab; i++)
        for (struct fs_chunk *c = f->tab[i]; c; c = c->next) {
            chunk_forget(fs, f, c, REF_UNKNOWN);
            c->version_known = 0;   /* max_version stays: never reused */
        }
    f->trunc_from = NO_TRUNC;
    f->size_dirty = f->mtime_dirty = 0;
    f->attr_gen++;
    f->fresh = 0;
    f->ra_until = 0;
    struct chunk_ref *drop = f->drop;
    size_t ndrop = f->ndrop;
    f->drop = NULL;
    f->ndrop = f->capdrop = 0;
    struct fc_snap sn;
    uint64_t gen = 0;
    snap_init(&sn, SNAP_NO_WANT);
    pthread_mutex_lock(&fs->meta_lock);
    int r = snap_read(fs, in->ino, &sn);
    if (r == 0)
        r = snap_verify(&sn, f->fc_key, f->fc_gen, &gen);
    if (r == -EBADMSG)
        r = fs_tamper(fs, NULL, in->ino, NULL, pfs_err_msg());
    pthread_mutex_unlock(&fs->meta_lock);
    if (r == 0) {
        snap_take_list(f, &sn, gen);
        f->size = sn.mi.size;
        f->mtime_ns = sn.mi.mtime_ns;
        f->base_gen = f->fc_gen;
    }
    snap_free(&sn);
    pthread_mutex_unlock(&in->lock);
    drop_delete(fs, drop, ndrop);
    /* this mount's plaintext of its own versions (their numbers may be the
     * other writer's too) must not serve the other version */
    cache_drop_ino(fs->data, in->ino);
    return r;
}

static int file_commit(struct fs *fs, struct fs_inode *in)
{
    struct fs_file *f = in->file;
    struct commit_set s;
    pthread_mutex_lock(&f->commit_lock);
    pthread_mutex_lock(&in->lock);
    if (f->withdrawn) {
        pthread_mutex_unlock(&in->lock);
        pthread_mutex_unlock(&f->commit_lock);
        return pfs_err(-EACCES, "inode %" PRIu64 " is not saved: its folder was withdrawn "
                       "from this account", in->ino);
    }
    int r = commit_gather(f, &s);
    pthread_mutex_unlock(&in->lock);
    if (r < 0) {
        pthread_mutex_unlock(&f->commit_lock);
        return pfs_err(r, "out of memory committing inode %" PRIu64, in->ino);
    }
    int work = commit_has_work(&s);
    /* the kept changes' event before the commit that writes them */
    if (work)
        r = fs_data_fold_emit_held(fs, in);
    if (work && r == 0 && s.n)
        r = fragments_sync(fs, s.put_gen);
    if (work && r == 0)
        r = commit_meta(fs, in, &s, &f->setattr_seq);
    if (work && r == 0)
        __atomic_add_fetch(&fs->data->health.file_commits, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&in->lock);
    commit_settle(f, &s, r == 0);
    pthread_mutex_unlock(&in->lock);
    fc_list_free(&s.fc);
    if (r == COMMIT_CONFLICT) {
        /* both versions stay: this mount's goes to a conflict copy beside
         * the file, the file keeps the one committed first */
        r = fs_conflict_copy(fs, in);
        if (r == 0)
            r = conflict_discard(fs, in);
        if (r == 0)
            fs_data_inval_later(fs, in->ino);
    } else if (r == COMMIT_REKEYED) {
        /* re-keyed: take the new DEK; fs_data_flush puts and commits again */
        pthread_mutex_lock(&in->lock);
        r = file_adopt_dek(fs, in);
        pthread_mutex_unlock(&in->lock);
        if (r == 0)
            r = COMMIT_REKEYED;
    }
    pthread_mutex_unlock(&f->commit_lock);

    drop_delete(fs, s.drop, s.ndrop);
    int kick = r == 0 && commit_replaced_some(&s);
    free(s.items);
    if (r < 0) {
        char *p = fs_path(fs, in->ino, NULL);
        log_error("cannot commit %s: %s", p ? p : "?", pfs_err_msg());
        fs_audit(fs, NULL, "commit-failed", p, -EIO, 0);
        free(p);
        return -EIO;
    }
    if (kick)
        fs_data_gc_kick(fs);
    return r == COMMIT_REKEYED ? COMMIT_REKEYED : 0;
}

int fs_data_writeback_start(struct fs *fs, struct fs_inode *in)
{
    pthread_mutex_lock(&in->lock);
    int err = 0;
    if (in->file) {
        queue_all_dirty(fs, in);
        err = in->file->wb_error;
    }
    pthread_mutex_unlock(&in->lock);
    return err;
}

int fs_data_flush(struct fs *fs, struct fs_inode *in)
{
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    if (!f || f->withdrawn) {
        pthread_mutex_unlock(&in->lock);
        return f ? pfs_err(-EACCES, "inode %" PRIu64 " is not saved: its folder was withdrawn "
                           "from this account (its unsaved changes were discarded)", in->ino)
                 : 0;
    }
    int r = 0, err = 0;
    for (int round = 0; round < REKEY_ROUNDS; round++) {
        if (round)
            pthread_mutex_lock(&in->lock);
        queue_all_dirty(fs, in);
        while (f->inflight)
            pthread_cond_wait(&in->cond, &in->lock);
        if (!err)
            err = f->wb_error;
        f->wb_error = 0;
        pthread_mutex_unlock(&in->lock);
        r = file_commit(fs, in);
        if (r != COMMIT_REKEYED)
            break;
    }
    if (r == COMMIT_REKEYED)
        r = pfs_err(-EIO, "inode %" PRIu64 " was re-keyed %d times while being saved",
                    in->ino, REKEY_ROUNDS);
    return err ? err : r;
}

int fs_data_meta_sync(struct fs *fs)
{
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_sync(fs->v->meta);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0)
        log_error("cannot make metadata durable: %s", pfs_err_msg());
    return r < 0 ? -EIO : 0;
}

int fs_data_fsync(struct fs *fs, struct fs_inode *in)
{
    int r = fs_data_flush(fs, in);
    /* The commit (and every earlier one: the create, renames) on disk. */
    int s = fs_data_meta_sync(fs);
    return r < 0 ? r : s;
}

static void committer_drain(struct fs_data *d);

static void flush_one(struct fs *fs, struct fs_inode *in)
{
    /* kept changes are audited even when they cannot be saved */
    if (fs_data_fold_emit(fs, in) < 0)
        log_error("cannot audit the attribute changes of inode %" PRIu64, in->ino);
    /* A withdrawn file's loss was logged and audited at the withdrawal. */
    if (!fs_data_withdrawn(in) && fs_data_flush(fs, in) < 0) {
        char *p = fs_path(fs, in->ino, NULL);
        log_error("could not write back %s at unmount: its unsaved data is "
                  "lost", p ? p : "?");
        fs_audit(fs, NULL, "writeback-lost", p, -EIO, 0);
        free(p);
    }
}

void fs_data_flush_all(struct fs *fs)
{
    committer_drain(fs->data);
    fs_itab_each_file(fs, flush_one);
    stuck_retry(fs, 1);
    fs_data_quiesce(fs);
}

/* ---- batch committer ----
 *
 * tar x, cp -r and unpacking close small files one after another.  Each
 * release used to commit its file at once: its puts, an object-layer sync
 * (an fdatasync of each fragment file and an fsync of each fan-out
 * directory: a journal commit per endpoint filesystem), one metadata
 * transaction.  Now a release while the mount is alone queues the file
 * here; the committer takes every file queued (waiting COMMIT_WINDOW_MS
 * after the first for more), waits for their puts, makes all their
 * fragments durable with one fragments_sync, then commits each file as
 * fs_data_flush does (its fragments_sync is then skipped: covered).  Rule 1
 * holds: every commit still follows the sync that covers its fragments.
 * close() is unchanged (flush starts the puts and reports an earlier
 * write-back error; release never reported to the application), and fsync
 * commits its file itself (fs_data_fsync), not through the queue. */
static int ino_order(const void *a, const void *b)
{
    uint64_t x = (*(struct fs_inode *const *)a)->ino, y = (*(struct fs_inode *const *)b)->ino;
    return x < y ? -1 : x > y;
}

/* A gathered file left out of a batch's transaction: settled as done
 * (done: nothing to commit) or put back as it was, its set emptied. */
static void commit_set_leave(struct fs *fs, struct fs_inode *in, struct commit_set *cs, int done)
{
    pthread_mutex_lock(&in->lock);
    commit_settle(in->file, cs, done);
    pthread_mutex_unlock(&in->lock);
    fc_list_free(&cs->fc);
    free(cs->items);
    if (done)
        drop_delete(fs, cs->drop, cs->ndrop);
    memset(cs, 0, sizeof *cs);
}

/* The commits of a batch in one metadata transaction (their fragments are
 * synced first, rule 1).  A file whose commit lock is busy, or that has a
 * write-back error to report, is left out; if any file's part fails (a
 * conflict, a re-keying, an error) the whole transaction is rolled back and
 * every file put back as it was: fs_data_flush then commits each alone,
 * with the conflict and re-key handling of file_commit. */
static void commit_batch_meta(struct fs *fs, struct fs_inode **batch, size_t n)
{
    struct commit_set *sets = calloc(n, sizeof *sets);
    struct fs_inode **ins = calloc(n, sizeof *ins);
    if (!sets || !ins) {
        free(sets);
        free(ins);
        return;
    }
    size_t k = 0;
    uint64_t gen = 0;
    for (size_t i = 0; i < n; i++) {
        struct fs_inode *in = batch[i];
        struct fs_file *f = in->file;
        if (!f || (i && batch[i - 1] == in) || pthread_mutex_trylock(&f->commit_lock) != 0)
            continue;
        pthread_mutex_lock(&in->lock);
        int r = f->inflight || f->wb_error || f->withdrawn ? -EAGAIN
                : commit_gather(f, &sets[k]);
        pthread_mutex_unlock(&in->lock);
        struct commit_set *cs = &sets[k];
        if (r == 0 && !commit_has_work(cs)) {
            commit_set_leave(fs, in, cs, 1);   /* nothing to commit */
            r = -ENODATA;
        }
        /* the kept changes' event before the commit that writes them; if
         * it cannot be appended, the file stays out (put back as it was) */
        if (r == 0 && fs_data_fold_emit_held(fs, in) < 0) {
            commit_set_leave(fs, in, cs, 0);
            r = -EIO;
        }
        if (r < 0) {
            pthread_mutex_unlock(&f->commit_lock);
            continue;
        }
        if (cs->n && cs->put_gen > gen)
            gen = cs->put_gen;
        ins[k++] = in;
    }
    int r = 0;
    if (k && gen)
        r = fragments_sync(fs, gen);   /* covered by the batch's sync: skipped */
    int ok = 0;
    if (k && r == 0) {
        struct meta *m = fs->v->meta;
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_begin(m);
        for (size_t i = 0; r == 0 && i < k; i++)
            r = commit_meta_body(fs, ins[i], &sets[i], &ins[i]->file->setattr_seq);
        if (r == 0)
            r = meta_commit(m);
        else if (meta_rollback(m) < 0)
            log_error("cannot roll back a batch commit: %s", pfs_err_msg());
        for (size_t i = 0; r == 0 && i < k; i++)
            vault_file_head_note_commit(fs->v, ins[i]->ino);
        pthread_mutex_unlock(&fs->meta_lock);
        ok = r == 0;
    }
    for (size_t i = 0; i < k; i++) {
        struct fs_inode *in = ins[i];
        struct fs_file *f = in->file;
        struct commit_set *cs = &sets[i];
        pthread_mutex_lock(&in->lock);
        commit_settle(f, cs, ok);
        pthread_mutex_unlock(&in->lock);
        fc_list_free(&cs->fc);
        pthread_mutex_unlock(&f->commit_lock);
        if (ok) {
            __atomic_add_fetch(&fs->data->health.file_commits, 1, __ATOMIC_RELAXED);
            drop_delete(fs, cs->drop, cs->ndrop);
            if (commit_replaced_some(cs))
                fs_data_gc_kick(fs);
        }
        free(cs->items);
    }
    free(sets);
    free(ins);
}

static void commit_batch(struct fs *fs, struct fs_inode **batch, size_t n)
{
    uint64_t gen = 0;
    for (size_t i = 0; i < n; i++) {
        struct fs_inode *in = batch[i];
        pthread_mutex_lock(&in->lock);
        struct fs_file *f = in->file;
        if (f) {
            queue_all_dirty(fs, in);
            while (f->inflight)
                pthread_cond_wait(&in->cond, &in->lock);
            if (f->put_gen > gen)
                gen = f->put_gen;
        }
        pthread_mutex_unlock(&in->lock);
    }
    crash_point("batch-before-sync");
    /* A failure here is met again (sticky) by each file's own sync below,
     * which logs and audits it as a release did. */
    if (gen)
        (void)fragments_sync(fs, gen);
    crash_point("batch-after-sync");
    qsort(batch, n, sizeof *batch, ino_order);   /* row locks in one order (PostgreSQL) */
    commit_batch_meta(fs, batch, n);
    crash_point("batch-after-commit");
    /* what is left (errors to report, a conflict, a re-keying, writes since):
     * each file as a release did */
    for (size_t i = 0; i < n; i++) {
        struct fs_inode *in = batch[i];
        if (fs_data_flush(fs, in) < 0)
            log_error("write-back failed at close of inode %" PRIu64, in->ino);
        fs_inode_put(fs, in, FS_REF_OP, 1);
    }
    struct fs_data *d = fs->data;
    pthread_mutex_lock(&d->qlock);
    d->inode_jobs -= (unsigned)n;
    if (d->inode_jobs == 0)
        pthread_cond_broadcast(&d->idle_cond);
    pthread_mutex_unlock(&d->qlock);
}

static void *committer_main(void *arg)
{
    struct fs *fs = arg;
    struct fs_data *d = fs->data;
    struct fs_inode **batch = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&d->cqlock);
    for (;;) {
        while (!d->ncq && !d->cq_stop)
            pthread_cond_wait(&d->cqcond, &d->cqlock);
        if (!d->ncq)
            break;   /* stopping, nothing left */
        if (!d->cq_stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += COMMIT_WINDOW_MS * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            while (d->ncq < COMMIT_QUEUE_MAX && !d->cq_stop &&
                   pthread_cond_timedwait(&d->cqcond, &d->cqlock, &ts) == 0)
                ;
        }
        /* swap the queue with the (empty) batch array */
        struct fs_inode **q = d->cq;
        size_t n = d->ncq, qcap = d->capcq;
        d->cq = batch;
        d->capcq = cap;
        d->ncq = 0;
        batch = q;
        cap = qcap;
        d->cq_busy = 1;
        pthread_mutex_unlock(&d->cqlock);
        commit_batch(fs, batch, n);
        pthread_mutex_lock(&d->cqlock);
        d->cq_busy = 0;
        if (!d->ncq)
            pthread_cond_broadcast(&d->cqidle);
    }
    d->cq_busy = 0;
    pthread_cond_broadcast(&d->cqidle);
    pthread_mutex_unlock(&d->cqlock);
    free(batch);
    return NULL;
}

int fs_data_release(struct fs *fs, struct fs_inode *in)
{
    struct fs_data *d = fs->data;
    if (!__atomic_load_n(&d->cq_started, __ATOMIC_ACQUIRE) || !fs_alone(fs) ||
        fs_data_in_trouble(fs))
        return fs_data_flush(fs, in);
    pthread_mutex_lock(&in->lock);
    if (in->file)
        queue_all_dirty(fs, in);   /* written since the flush */
    pthread_mutex_unlock(&in->lock);
    pthread_mutex_lock(&d->cqlock);
    int queued = 0;
    if (!d->cq_stop && d->ncq < COMMIT_QUEUE_MAX) {
        if (d->ncq == d->capcq) {
            size_t nc = d->capcq ? d->capcq * 2 : 32;
            struct fs_inode **p = realloc(d->cq, nc * sizeof *p);
            if (p) {
                d->cq = p;
                d->capcq = nc;
            }
        }
        if (d->ncq < d->capcq) {
            fs_inode_hold(fs, in);
            pthread_mutex_lock(&d->qlock);
            d->inode_jobs++;
            pthread_mutex_unlock(&d->qlock);
            d->cq[d->ncq++] = in;
            queued = 1;
            if (d->ncq == 1 || d->ncq == COMMIT_QUEUE_MAX)
                pthread_cond_signal(&d->cqcond);
        }
    }
    pthread_mutex_unlock(&d->cqlock);
    return queued ? 0 : fs_data_flush(fs, in);
}

/* Every queued file committed (unmount, before the inode table goes). */
static void committer_drain(struct fs_data *d)
{
    if (!d->cq_started)
        return;
    pthread_mutex_lock(&d->cqlock);
    pthread_cond_signal(&d->cqcond);
    while (d->ncq || d->cq_busy)
        pthread_cond_wait(&d->cqidle, &d->cqlock);
    pthread_mutex_unlock(&d->cqlock);
}

/* Set *stop under m, wake the thread t waiting on c, and join it. */
static void thread_stop(pthread_mutex_t *m, pthread_cond_t *c, int *stop, pthread_t t)
{
    pthread_mutex_lock(m);
    *stop = 1;
    pthread_cond_broadcast(c);
    pthread_mutex_unlock(m);
    pthread_join(t, NULL);
}

static void committer_stop(struct fs_data *d)
{
    if (!d->cq_started)
        return;
    thread_stop(&d->cqlock, &d->cqcond, &d->cq_stop, d->committer);
    __atomic_store_n(&d->cq_started, 0, __ATOMIC_RELEASE);
    free(d->cq);
    d->cq = NULL;
    d->ncq = d->capcq = 0;
}

void fs_data_quiesce(struct fs *fs)
{
    struct fs_data *d = fs->data;
    pthread_mutex_lock(&d->qlock);
    while (d->inode_jobs)
        pthread_cond_wait(&d->idle_cond, &d->qlock);
    pthread_mutex_unlock(&d->qlock);
}

/* ---- write ---- */

int fs_data_write(struct fs *fs, struct fs_inode *in, uint64_t off, const void *data,
                  size_t size)
{
    size_t cs = chunk_sz(fs);
    const uint8_t *src = data;
    uint64_t end = off + size;
    uint64_t pos = off;
    int r = 0;
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    if (f->withdrawn) {
        pthread_mutex_unlock(&in->lock);
        return -EACCES;
    }
    int sequential = off == f->seq_write_next || off == 0;
    f->seq_write_next = end;
    while (pos < end) {
        uint64_t idx = pos / cs;
        uint32_t coff = (uint32_t)(pos % cs);
        uint32_t n = (uint32_t)((end - pos) < cs - coff ? (end - pos) : cs - coff);
        struct fs_chunk *c = chunk_wait_idle(in, idx);
        if (f->withdrawn) {   /* while the lock was dropped: keep no plaintext */
            r = -EACCES;
            break;
        }
        if (!c) {
            r = pfs_err(-ENOMEM, "out of memory writing inode %" PRIu64, in->ino);
            break;
        }
        if (!c->buf) {
            uint64_t start = idx * cs;
            uint32_t existing = f->size > start
                ? (uint32_t)(f->size - start < cs ? f->size - start : cs) : 0;
            uint32_t keep = (coff == 0 && n >= existing) ? 0 : existing;
            r = chunk_make_dirty(fs, in, c, keep);
            if (r < 0)
                break;
        }
        if (coff > c->len)
            memset(c->buf + c->len, 0, coff - c->len);
        memcpy(c->buf + coff, src + (pos - off), n);
        c->streamed = 0;
        if (coff + n > c->len)
            c->len = coff + n;
        if (c->len > c->hw)
            c->hw = c->len;
        pos += n;
        /* A completed chunk of a sequential write streams out now (random
         * writes keep their chunks dirty: they may come back to them). */
        if (sequential && c->len == cs && coff + n == cs) {
            c->streamed = 1;
            chunk_queue_put(fs, in, c);
        }
    }
    if (pos > off) {
        if (pos > f->size)
            f->size = pos;
        f->mtime_ns = f->ctime_ns = fs_now_ns();
        f->size_dirty = f->mtime_dirty = 1;
        f->attr_gen++;
    }
    pthread_mutex_unlock(&in->lock);
    if (r == 0 && dirty_over_budget(fs->data)) {
        /* Bounded memory: this writer waits for its own data to go out. */
        pthread_mutex_lock(&in->lock);
        queue_all_dirty(fs, in);
        while (f->inflight)
            pthread_cond_wait(&in->cond, &in->lock);
        pthread_mutex_unlock(&in->lock);
    }
    return r;
}

/* ---- read ---- */

static void readahead_schedule(struct fs *fs, struct fs_inode *in, uint64_t last_idx)
{
    struct fs_file *f = in->file;
    size_t cs = chunk_sz(fs);
    uint64_t nchunks = (f->size + cs - 1) / cs;
    uint64_t from = last_idx + 1 > f->ra_until ? last_idx + 1 : f->ra_until;
    uint64_t to = last_idx + 1 + READAHEAD_CHUNKS;
    if (to > nchunks)
        to = nchunks;
    for (uint64_t i = from; i < to; i++) {
        struct job *j = calloc(1, sizeof *j);
        if (!j)
            break;
        fs_inode_hold(fs, in);
        j->type = JOB_READAHEAD;
        j->in = in;
        j->idx = i;
        job_push(fs->data, j);
        f->ra_until = i + 1;
    }
}

void fs_data_prefetch(struct fs *fs, struct fs_inode *in)
{
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    if (f && f->size > 0 && f->ra_until == 0) {
        struct job *j = calloc(1, sizeof *j);
        if (j) {
            fs_inode_hold(fs, in);
            j->type = JOB_READAHEAD;
            j->in = in;
            j->idx = 0;
            job_push(fs->data, j);
            f->ra_until = 1;
        }
    }
    pthread_mutex_unlock(&in->lock);
}

static void job_readahead(struct fs *fs, struct fs_inode *in, uint64_t idx)
{
    struct chunk_ref ref;
    enum chunk_src src;
    struct fs_file *f = in->file;
    pthread_mutex_lock(&in->lock);
    struct fs_chunk *c = chunk_find(f, idx);
    int r = f->withdrawn ? -EACCES : (c && c->loading) ? -EBUSY
            : chunk_source(fs, in, idx, &ref, &src);
    const uint8_t *dek = f->dek;
    if (r == 0 && src == SRC_STORED)
        f->users++;
    pthread_mutex_unlock(&in->lock);
    if (r < 0 || src != SRC_STORED)
        return;
    struct cache_entry *e = NULL;
    if (cache_acquire(fs, in->ino, idx, &ref, dek, &e, 0) == 0)
        cache_release(fs->data, e);
    pthread_mutex_lock(&in->lock);
    if (!--f->users)
        pthread_cond_broadcast(&in->cond);
    pthread_mutex_unlock(&in->lock);
}

/* Drop-behind for sequential reads (in->lock held): when a read moves on
 * to a new stored chunk, the chunk two behind it leaves the cache (the
 * kernel may still ask for the one just behind, out of order).  A file
 * streamed once then neither fills the cache with plaintext nobody reads
 * again (the daemon's memory stays small) nor needs a fresh locked buffer
 * -- page faults, zeroing, mlock -- for every chunk: freed buffers go back
 * to the pool's spares for the read-ahead of the next ones. */
static void drop_behind(struct fs *fs, struct fs_inode *in, uint64_t idx, uint64_t ver)
{
    struct fs_file *f = in->file;
    if (f->behind_n && f->behind_idx[0] == idx)
        return;
    if (f->behind_n == 2) {
        struct fs_data *d = fs->data;
        pthread_mutex_lock(&d->clock);
        struct cache_entry *e = cache_find(d, in->ino, f->behind_idx[1], f->behind_ver[1]);
        if (e && e->ready) {
            if (e->refs == 0)
                cache_remove_locked(d, e);
            else
                e->stale = 1;   /* removed at its last release */
        }
        pthread_mutex_unlock(&d->clock);
    }
    f->behind_idx[1] = f->behind_idx[0];
    f->behind_ver[1] = f->behind_ver[0];
    f->behind_idx[0] = idx;
    f->behind_ver[0] = ver;
    if (f->behind_n < 2)
        f->behind_n++;
}

/* Copy bytes [coff, coff+n) of a chunk whose valid length is len; zeros
 * past len (a chunk cut by truncate and extended again). */
static void copy_from_chunk(uint8_t *dst, const uint8_t *chunk, uint32_t len, uint32_t coff,
                            uint32_t n)
{
    uint32_t have = len > coff ? len - coff : 0;
    if (have > n)
        have = n;
    if (have)
        memcpy(dst, chunk + coff, have);
    if (have < n)
        memset(dst + have, 0, n - have);
}

int fs_data_read(struct fs *fs, struct fs_inode *in, uint64_t off, size_t size, uint8_t *out,
                 size_t *got)
{
    size_t cs = chunk_sz(fs);
    int r = 0;
    *got = 0;
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    if (f->withdrawn) {
        pthread_mutex_unlock(&in->lock);
        return -EACCES;
    }
    if (off >= f->size || size == 0) {
        pthread_mutex_unlock(&in->lock);
        return 0;
    }
    uint64_t end = off + size < f->size ? off + size : f->size;
    int sequential = off == f->seq_next || off / cs == f->seq_next / cs;
    if (sequential)
        readahead_schedule(fs, in, (end - 1) / cs);
    else {
        f->ra_until = 0;
        f->behind_n = 0;
    }
    f->seq_next = end;

    uint64_t pos = off, retried_idx = UINT64_MAX;
    while (pos < end) {
        uint64_t idx = pos / cs;
        uint32_t coff = (uint32_t)(pos % cs);
        uint32_t n = (uint32_t)((end - pos) < cs - coff ? (end - pos) : cs - coff);
        uint8_t *dst = out + (pos - off);
        struct fs_chunk *c = chunk_find(f, idx);
        if (c && c->loading) {
            pthread_cond_wait(&in->cond, &in->lock);
            continue;
        }
        struct chunk_ref ref;
        enum chunk_src src;
        r = chunk_source(fs, in, idx, &ref, &src);
        if (r < 0)
            break;
        if (src == SRC_DIRTY) {
            c = chunk_find(f, idx);   /* the lock may have been dropped (re-keyed) */
            copy_from_chunk(dst, c->buf, c->len, coff, n);
        } else if (src == SRC_HOLE) {
            memset(dst, 0, n);
        } else {
            const uint8_t *dek = f->dek;   /* the one ref is sealed under */
            f->users++;
            pthread_mutex_unlock(&in->lock);
            struct cache_entry *e = NULL;
            r = cache_acquire(fs, in->ino, idx, &ref, dek, &e, 1);
            if (r == 0) {
                copy_from_chunk(dst, e->buf, e->len, coff, n);
                cache_release(fs->data, e);
            }
            pthread_mutex_lock(&in->lock);
            if (!--f->users)
                pthread_cond_broadcast(&in->cond);
            if (r == 0 && f->withdrawn)
                r = -EACCES;   /* its keys went meanwhile */
            if (r == -EIO && retried_idx != idx && chunk_replaced(fs, in, idx, &ref, dek)) {
                retried_idx = idx;   /* once per chunk: read it by its new record */
                r = 0;
                continue;
            }
            if (r < 0)
                break;
            if (sequential && in->file == f)
                drop_behind(fs, in, idx, ref.version);
        }
        pos += n;
    }
    pthread_mutex_unlock(&in->lock);
    *got = (size_t)(pos - off);
    return r < 0 ? -EIO : 0;
}

/* ---- truncate ---- */

/* Forget dirty and pending chunks at or past chunk keep (in->lock held). */
static void drop_chunks_from(struct fs *fs, struct fs_file *f, uint64_t keep)
{
    for (size_t i = 0; i < f->ntab; i++)
        for (struct fs_chunk *c = f->tab[i]; c; c = c->next)
            if (c->idx >= keep)
                chunk_forget(fs, f, c, REF_HOLE);   /* the commit removes the records */
}

/* The new last chunk gets cut to tail bytes so an extension reads zeros. */
static int cut_last_chunk(struct fs *fs, struct fs_inode *in, uint64_t idx, uint32_t tail)
{
    struct fs_chunk *c = chunk_get(in->file, idx);
    if (!c)
        return pfs_err(-ENOMEM, "out of memory truncating inode %" PRIu64, in->ino);
    if (c->buf) {
        if (c->len > tail)
            c->len = tail;
        return 0;
    }
    struct chunk_ref ref;
    enum chunk_src src;
    int r = chunk_source(fs, in, idx, &ref, &src);
    if (r < 0 || src != SRC_STORED || ref.plain_len <= tail)
        return r;
    return chunk_make_dirty(fs, in, c, tail);
}

int fs_data_truncate(struct fs *fs, struct fs_inode *in, uint64_t size)
{
    size_t cs = chunk_sz(fs);
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    pthread_mutex_unlock(&in->lock);
    pthread_mutex_lock(&f->commit_lock);
    pthread_mutex_lock(&in->lock);
    while (f->inflight || f->loading)
        pthread_cond_wait(&in->cond, &in->lock);
    int r = f->withdrawn ? -EACCES : 0;
    if (r == 0 && size < f->size) {
        uint64_t keep = (size + cs - 1) / cs;
        drop_chunks_from(fs, f, keep);
        if (keep < f->trunc_from)
            f->trunc_from = keep;
        if (size % cs)
            r = cut_last_chunk(fs, in, size / cs, (uint32_t)(size % cs));
        if (f->ra_until > keep)
            f->ra_until = keep;
    }
    if (r == 0) {
        f->size = size;
        f->mtime_ns = f->ctime_ns = fs_now_ns();
        f->size_dirty = f->mtime_dirty = 1;
        f->attr_gen++;
    }
    pthread_mutex_unlock(&in->lock);
    pthread_mutex_unlock(&f->commit_lock);
    if (r < 0)
        return r;
    return fs_data_flush(fs, in);
}

/* ---- attributes ---- */

/* Bytes held by the chunks known in memory (dirty buffers, put and
 * committed records); under in->lock. */
static uint64_t chunks_held(const struct fs_file *f)
{
    uint64_t n = 0;
    for (size_t i = 0; i < f->ntab; i++)
        for (const struct fs_chunk *c = f->tab[i]; c; c = c->next) {
            if (c->buf)
                n += c->len;
            else if (c->ref_state == REF_COMMITTED || c->ref_state == REF_PENDING)
                n += c->ref.plain_len;
        }
    return n;
}

/* mi was read without in->lock: a commit of this mount may have landed
 * and settled (clearing size_dirty) since, so the row can be older than
 * what this mount committed.  The commitment's generation tells. */
static int row_older_than_file(const struct meta_inode *mi, const struct fs_file *f)
{
    struct fc_record rec;
    if (fc_parse(mi->commitment, mi->commitment_len, &rec) < 0)
        return 0;
    return rec.generation < f->fc_gen;
}

void fs_data_fill_attr(struct fs_inode *in, const struct meta_inode *mi, struct stat *st)
{
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    if (f) {
        /* A size not dirty is the stored one, which another mount of the
         * vault may have changed since this file was attached -- unless
         * the row was read before this mount's own latest commit, or a
         * handle is open here: its reads serve the version its open
         * attached (close-to-open), and a larger size from a newer one
         * would have the kernel pad those reads with zeros up to it. */
        int open_here = __atomic_load_n(&in->nopen, __ATOMIC_ACQUIRE) > 0;
        int stale = !f->size_dirty && S_ISREG(mi->mode) &&
                    (open_here || row_older_than_file(mi, f));
        if (stale)
            st->st_size = (off_t)f->size;
        if (f->size_dirty) {
            st->st_size = (off_t)f->size;
            /* du while unsaved: the larger of what the metadata and the
             * memory know the chunks hold, never more than the size */
            uint64_t held = (uint64_t)st->st_blocks * 512, mem = chunks_held(f);
            if (mem > held)
                held = mem;
            if (held > f->size)
                held = f->size;
            st->st_blocks = (blkcnt_t)((held + 511) / 512);
        }
        if (f->mtime_dirty) {
            st->st_mtim.tv_sec = f->mtime_ns / 1000000000;
            st->st_mtim.tv_nsec = f->mtime_ns % 1000000000;
        }
        fs_attr_overlay_stat(&f->ov, st);
        /* exactly what the commit will write (see commit_meta) */
        if (f->ctime_ns > (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec) {
            st->st_ctim.tv_sec = f->ctime_ns / 1000000000;
            st->st_ctim.tv_nsec = f->ctime_ns % 1000000000;
        }
    }
    pthread_mutex_unlock(&in->lock);
}

int fs_data_commit_hold(struct fs_inode *in)
{
    /* No waiting for a running commit (it may be syncing fragments): the
     * bump makes a commit that gathered before this setattr leave mtime
     * alone, and attr_gen keeps its flags dirty for the next commit. */
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    if (f) {
        __atomic_add_fetch(&f->setattr_seq, 1, __ATOMIC_RELEASE);
        f->setattr_active++;
        f->attr_gen++;
    }
    pthread_mutex_unlock(&in->lock);
    return f != NULL;
}

void fs_data_commit_release(struct fs_inode *in, int mtime_set, int64_t mtime_ns)
{
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    if (f && f->setattr_active)
        f->setattr_active--;
    if (f && mtime_set) {
        f->mtime_ns = mtime_ns;
        f->mtime_dirty = 0;
        f->attr_gen++;
    }
    pthread_mutex_unlock(&in->lock);
}

/* ---- deferred attributes ----
 *
 * tar, cp -p and rsync set the owner, mode and times through the open
 * descriptor of each file they create, before they close it: three
 * transactions per file, each its own COMMIT, while the file's data waits
 * for the batch commit anyway.  Those changes are kept here instead (the
 * overlay getattr shows at once) and written by the file's first commit,
 * in the same transaction as its data.  The audit event is appended before
 * the change is kept (commit_lock held: no commit can take it in between),
 * so the write-ahead rule holds as for any change.  What a daemon crash can
 * lose: the attributes together with the data of a file that was never
 * saved -- the file then is as it was created (empty, its create-time mode,
 * owner and times), never its data with some of them.  Only while the
 * mount is the vault's only one (the batch committer's rule too), and only
 * while a writable handle is open, whose release commits the file. */

void fs_data_writer_add(struct fs_inode *in, int delta)
{
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    if (f)
        f->writers = delta < 0 && f->writers == 0 ? 0 : f->writers + (unsigned)delta;
    pthread_mutex_unlock(&in->lock);
}

int fs_data_defer_begin(struct fs *fs, struct fs_inode *in)
{
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    pthread_mutex_unlock(&in->lock);
    if (!f)
        return FS_DEFER_NO;
    /* commit_lock: no commit gathers between the event and the keeping */
    pthread_mutex_lock(&f->commit_lock);
    pthread_mutex_lock(&in->lock);
    int eligible = f->unsaved_new && f->writers > 0 && !f->withdrawn;
    int pending = f->ov.set != 0;
    pthread_mutex_unlock(&in->lock);
    if (eligible && fs_alone(fs) && !fs_data_in_trouble(fs))
        return FS_DEFER_YES;
    pthread_mutex_unlock(&f->commit_lock);
    return pending ? FS_DEFER_PENDING : FS_DEFER_NO;
}

void fs_data_defer_view(struct fs_inode *in, struct meta_inode *mi)
{
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    fs_attr_overlay_apply(&f->ov, mi);
    if (f->mtime_dirty)
        mi->mtime_ns = f->mtime_ns;
    if (f->ctime_ns > mi->ctime_ns)
        mi->ctime_ns = f->ctime_ns;
    pthread_mutex_unlock(&in->lock);
}

void fs_data_defer_keep(struct fs_inode *in, const struct meta_inode *mi, unsigned set)
{
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    fs_attr_overlay_take(&f->ov, mi, set);
    f->ov.set |= FS_OV_CTIME;   /* even alone, it makes the commit's work */
    f->ov_gen++;
    if (set & FS_OV_MTIME) {
        f->mtime_ns = mi->mtime_ns;
        f->mtime_dirty = 1;
        f->attr_gen++;
    }
    if (mi->ctime_ns > f->ctime_ns)
        f->ctime_ns = mi->ctime_ns;
    pthread_mutex_unlock(&in->lock);
}

void fs_data_defer_end(struct fs_inode *in)
{
    pthread_mutex_unlock(&in->file->commit_lock);
}

/* The folded event: chmod, chown and utimens of one file by one caller
 * (tar sets all three through the descriptor before the close) become one
 * event carrying every field, appended before anything can make them
 * durable (the commit that writes them, which waits for commit_lock) and
 * at the latest at the close of a handle.  Appended (and taken) under
 * commit_lock, so exactly once. */
int fs_data_fold_emit_held(struct fs *fs, struct fs_inode *in)
{
    struct fs_file *f = in->file;
    pthread_mutex_lock(&in->lock);
    int pending = f->fold_pending;
    struct fs_caller who = f->fold_who;
    struct audit_detail d = f->fold;
    pthread_mutex_unlock(&in->lock);
    if (!pending)
        return 0;
    const char *op = fs_setattr_op(d.set);
    char *path = fs_path(fs, in->ino, NULL);
    uint64_t ticket = 0;
    int r = fs_audit_append_detail(fs, &who, op, path, 0, 0, &d, &ticket);
    free(path);
    if (r == 0) {
        pthread_mutex_lock(&in->lock);
        f->fold_pending = 0;
        pthread_mutex_unlock(&in->lock);
        r = fs_audit_wait(fs, op, ticket);
    }
    return r < 0 ? -EIO : 0;
}

int fs_data_fold_emit(struct fs *fs, struct fs_inode *in)
{
    pthread_mutex_lock(&in->lock);
    struct fs_file *f = in->file;
    int pending = f && f->fold_pending;
    pthread_mutex_unlock(&in->lock);
    if (!pending)
        return 0;
    pthread_mutex_lock(&f->commit_lock);
    int r = fs_data_fold_emit_held(fs, in);
    pthread_mutex_unlock(&f->commit_lock);
    return r;
}

int fs_data_defer_fold(struct fs *fs, struct fs_inode *in, const struct fs_caller *who,
                       const struct audit_detail *d)
{
    struct fs_file *f = in->file;
    pthread_mutex_lock(&in->lock);
    int other = f->fold_pending && (f->fold_who.uid != who->uid || f->fold_who.pid != who->pid);
    pthread_mutex_unlock(&in->lock);
    /* another caller's changes are theirs: their event goes first */
    if (other && fs_data_fold_emit_held(fs, in) < 0)
        return -EIO;
    pthread_mutex_lock(&in->lock);
    if (!f->fold_pending) {
        memset(&f->fold, 0, sizeof f->fold);
        f->fold.file = in->ino;
        memset(&f->fold_who, 0, sizeof f->fold_who);
        f->fold_who.uid = who->uid;
        f->fold_who.pid = who->pid;
        f->fold_pending = 1;
    }
    if (d->set & AUDIT_SET_MODE)
        f->fold.mode = d->mode;
    if (d->set & AUDIT_SET_OWNER) {
        f->fold.uid = d->uid;
        f->fold.gid = d->gid;
    }
    if (d->set & AUDIT_SET_ATIME)
        f->fold.atime_ns = d->atime_ns;
    if (d->set & AUDIT_SET_MTIME)
        f->fold.mtime_ns = d->mtime_ns;
    f->fold.set |= d->set;
    pthread_mutex_unlock(&in->lock);
    return 0;
}

int64_t fs_data_size(struct fs_inode *in)
{
    pthread_mutex_lock(&in->lock);
    int64_t s = in->file ? (int64_t)in->file->size : -1;
    pthread_mutex_unlock(&in->lock);
    return s;
}

/* ---- garbage collection and repair ---- */

static void gc_meta_lock(void *arg)
{
    pthread_mutex_lock(&((struct fs *)arg)->meta_lock);
}

static void gc_meta_unlock(void *arg)
{
    pthread_mutex_unlock(&((struct fs *)arg)->meta_lock);
}

/* The deletion queue (gc.c, shared with pactfs-fsck --gc), under meta_lock;
 * a chunk that cannot be deleted now is retried at the next kick. */
int fs_data_gc_run(struct fs *fs)
{
    const struct gc_lock lk = { gc_meta_lock, gc_meta_unlock, fs };

    return gc_run(fs->v->meta, fs->v->ol, &lk, fs->v->conf.pack_grace_s, NULL);
}

/* ---- degraded writes and their repair ---- */

void fs_health_note_error(struct fs *fs, const char *msg)
{
    struct fs_data *d = fs->data;
    pthread_mutex_lock(&d->hlock);
    snprintf(d->health.last_error, sizeof d->health.last_error, "%s", msg);
    d->health.last_error_time = time(NULL);
    pthread_mutex_unlock(&d->hlock);
}

/* A put stored fewer than k+m fragments: count it, say so once per
 * endpoint going bad, and keep the missing ones for the repairer. */
static void repair_later(struct fs *fs, uint64_t ino, uint64_t idx, const struct chunk_ref *ref,
                         uint32_t missing)
{
    struct fs_data *d = fs->data;
    struct pending_repair *p = calloc(1, sizeof *p);
    char why[512];
    uint32_t eps = 0, newly;

    snprintf(why, sizeof why, "%s", pfs_err_msg());
    for (unsigned i = 0; i < (unsigned)ref->k + ref->m; i++)
        if (missing & (1u << i))
            eps |= 1u << object_fragment_store(fs->v->ol, ref, i);
    pthread_mutex_lock(&d->hlock);
    d->health.degraded_writes++;
    newly = eps & ~d->degraded_eps;
    d->degraded_eps |= eps;
    if (p) {
        p->ino = ino;
        p->idx = idx;
        p->ref = *ref;
        p->mask = missing;
        p->next = d->repairs;
        d->repairs = p;
        d->health.repair_queue++;
    } else {
        d->health.repairs_lost++;
    }
    snprintf(d->health.last_error, sizeof d->health.last_error, "%s", why);
    d->health.last_error_time = time(NULL);
    pthread_mutex_unlock(&d->hlock);
    if (newly) {
        char what[600];

        log_warning("degraded write: endpoint mask 0x%x failed (%s); writes go on "
                    "with the fragments that could be stored (at least %u), the missing ones "
                    "are repaired when the endpoint is back", newly, why,
                    object_layer_write_min(fs->v->ol));
        snprintf(what, sizeof what, "endpoint mask 0x%x: %s", newly, why);
        fs_audit(fs, NULL, "degraded-write", what, -EIO, 0);
    }
    if (!p)
        log_error("out of memory queueing a repair: run pactfs-fsck --repair");
    /* Persisted, so a crash or an unmount does not forget it. */
    if (fs_repairq_add(fs, ino, idx, ref->chunk_id) < 0)
        log_warning("%s; pactfs-fsck --repair finds the chunk anyway",
                    pfs_err_msg());
}

/* A pack part lost at a sync that degraded writes allow (object.h): its
 * chunks' fragments there are repaired like a degraded put's. */
static void pack_part_lost(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *ref,
                           uint32_t missing)
{
    repair_later(arg, ino, idx, ref, missing);
}

/* A full put: the endpoints it used are healthy again. */
static void endpoints_recovered(struct fs *fs, const struct chunk_ref *ref)
{
    struct fs_data *d = fs->data;
    uint32_t eps = 0;

    __atomic_store_n(&d->wb_trouble, 0, __ATOMIC_RELAXED);
    if (!__atomic_load_n(&d->degraded_eps, __ATOMIC_RELAXED))
        return;
    for (unsigned i = 0; i < (unsigned)ref->k + ref->m; i++)
        eps |= 1u << object_fragment_store(fs->v->ol, ref, i);
    pthread_mutex_lock(&d->hlock);
    d->degraded_eps &= ~eps;
    pthread_mutex_unlock(&d->hlock);
}

/* Repairs that failed reach the log and the audit trail, at most once a
 * minute while they keep failing (the endpoint is still down): bytes is
 * the number of chunks. */
static void repair_failures_report(struct fs *fs, uint64_t failed, uint64_t gone)
{
    static int64_t last;
    int64_t now = time(NULL);
    char what[600];

    if (gone) {
        snprintf(what, sizeof what, "%" PRIu64 " chunk(s) queued for repair have fewer than k "
                 "good fragments", gone);
        fs_audit(fs, NULL, "repair-failed", what, -EIO, gone);
    }
    if (!failed || now - __atomic_load_n(&last, __ATOMIC_RELAXED) < 60)
        return;
    __atomic_store_n(&last, now, __ATOMIC_RELAXED);
    log_warning("repair of %" PRIu64 " chunk(s) failed this pass, retried "
                "every 5 s: %s", failed, pfs_err_msg());
    snprintf(what, sizeof what, "%" PRIu64 " chunk(s) not repaired yet: %s", failed,
             pfs_err_msg());
    fs_audit(fs, NULL, "repair-failed", what, -EIO, failed);
}

/* One pass over the pending repairs (syncer thread, and at unmount): a
 * chunk whose fragments are all present again leaves the list; one that has
 * fewer than k good fragments left was deleted since (or is lost: fsck says
 * which) and leaves it too; the rest wait for the next pass. */
static void repairs_run(struct fs *fs)
{
    struct fs_data *d = fs->data;
    pthread_mutex_lock(&d->hlock);
    struct pending_repair *list = d->repairs;
    d->repairs = NULL;
    pthread_mutex_unlock(&d->hlock);

    struct pending_repair *keep = NULL;
    uint64_t done = 0, failed = 0, gone = 0;
    uint8_t (*finished)[CHUNK_ID_LEN] = NULL;
    size_t nfinished = 0, capfinished = 0;
    while (list) {
        struct pending_repair *p = list;
        list = p->next;
        uint32_t bad = 0;
        int r = object_verify_chunk(fs->v->ol, &p->ref, &bad);
        if (r == 0 && bad)
            r = object_repair_chunk(fs->v->ol, &p->ref, bad);
        if (r == 0 && bad)
            r = object_layer_sync(fs->v->ol);
        int finish = r == 0 || (r == -EIO && bad == 0);
        if (finish && nfinished == capfinished) {
            size_t cap = capfinished ? 2 * capfinished : 16;
            uint8_t (*grown)[CHUNK_ID_LEN] = realloc(finished, cap * sizeof *grown);
            if (grown) {
                finished = grown;
                capfinished = cap;
            }
        }
        if (finish && nfinished < capfinished)
            memcpy(finished[nfinished++], p->ref.chunk_id, CHUNK_ID_LEN);
        if (r == 0) {
            done += bad != 0;
            free(p);
        } else if (r == -EIO && bad == 0) {
            gone++;            /* verify found fewer than k: nothing to rebuild from */
            free(p);
        } else {
            failed++;
            p->next = keep;
            keep = p;
        }
    }
    pthread_mutex_lock(&d->hlock);
    /* Entries added meanwhile stay in front of the kept ones. */
    struct pending_repair **tail = &d->repairs;
    while (*tail)
        tail = &(*tail)->next;
    *tail = keep;
    d->health.repairs_done += done;
    d->health.repair_queue -= done + gone;
    d->health.repair_attempts_failed += failed;
    pthread_mutex_unlock(&d->hlock);
    if (done)
        log_info("repaired the missing fragments of %" PRIu64 " chunk(s) "
                 "written while an endpoint was failing", done);
    if (gone)
        log_error("%" PRIu64 " chunk(s) queued for repair no longer have k "
                  "good fragments (deleted since, or lost: run pactfs-fsck)", gone);
    repair_failures_report(fs, failed, gone);
    fs_repairq_remove(fs, (const uint8_t (*)[CHUNK_ID_LEN])finished, nfinished);
    free(finished);
}

/* A chunk named by the persisted queue: verify and repair it like the
 * ones this mount wrote (every fragment is checked: mask all). */
static int repair_loaded(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *ref)
{
    struct fs *fs = arg;
    struct fs_data *d = fs->data;
    struct pending_repair *p;

    if ((unsigned)ref->k + ref->m > EC_MAX_FRAGS)
        return 0;   /* a malformed record: reads refuse it, fsck reports it */
    p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->ino = ino;
    p->idx = idx;
    p->ref = *ref;
    p->mask = (1u << (ref->k + ref->m)) - 1;
    pthread_mutex_lock(&d->hlock);
    p->next = d->repairs;
    d->repairs = p;
    d->health.repair_queue++;
    pthread_mutex_unlock(&d->hlock);
    return 0;
}

int fs_data_in_trouble(struct fs *fs)
{
    return fs->data && __atomic_load_n(&fs->data->wb_trouble, __ATOMIC_RELAXED);
}

int fs_data_withdrawn(struct fs_inode *in)
{
    pthread_mutex_lock(&in->lock);
    int withdrawn = in->file && in->file->withdrawn;
    pthread_mutex_unlock(&in->lock);
    return withdrawn;
}

int fs_data_keep_for_retry(struct fs *fs, struct fs_inode *in)
{
    struct fs_data *d = fs->data;
    int kept = 0;
    /* A withdrawn folder's unsaved data went with its keys: a retry could
     * only fail again, on every syncer pass, for the mount's lifetime. */
    if (fs_data_withdrawn(in))
        return 0;
    pthread_mutex_lock(&d->hlock);
    if (d->nstuck == d->capstuck) {
        size_t cap = d->capstuck ? 2 * d->capstuck : 16;
        struct fs_inode **n = realloc(d->stuck, cap * sizeof *n);
        if (n) {
            d->stuck = n;
            d->capstuck = cap;
        }
    }
    if (d->nstuck < d->capstuck) {
        d->stuck[d->nstuck++] = in;
        d->health.stuck_files = d->nstuck;
        kept = 1;
    }
    pthread_mutex_unlock(&d->hlock);
    return kept;
}

/* Flush the kept inodes again; release (and so retire) those that made it,
 * or all of them when final (unmount: nothing can keep the data longer). */
static void stuck_retry(struct fs *fs, int final)
{
    struct fs_data *d = fs->data;
    pthread_mutex_lock(&d->hlock);
    struct fs_inode **list = d->stuck;
    size_t n = d->nstuck;
    d->stuck = NULL;
    d->nstuck = d->capstuck = 0;
    pthread_mutex_unlock(&d->hlock);
    for (size_t i = 0; i < n; i++) {
        if (fs_data_flush(fs, list[i]) == 0 || final)
            fs_inode_put(fs, list[i], FS_REF_OP, 1);
        else if (!fs_data_keep_for_retry(fs, list[i]))
            fs_inode_put(fs, list[i], FS_REF_OP, 1);
    }
    free(list);
    pthread_mutex_lock(&d->hlock);
    d->health.stuck_files = d->nstuck;
    pthread_mutex_unlock(&d->hlock);
}

void fs_data_health(struct fs *fs, struct fs_health *out)
{
    struct fs_data *d = fs->data;
    pthread_mutex_lock(&d->hlock);
    *out = d->health;
    pthread_mutex_unlock(&d->hlock);
    pthread_mutex_lock(&d->dlock);
    out->dirty_bytes = d->dirty_bytes;
    pthread_mutex_unlock(&d->dlock);
}

static void job_repair(struct fs *fs, const struct chunk_ref *ref, uint32_t mask)
{
    char id[2 * CHUNK_ID_LEN + 1];
    hex_encode(ref->chunk_id, CHUNK_ID_LEN, id);
    int r = object_repair_chunk(fs->v->ol, ref, mask);
    if (r < 0) {
        log_error("repair of chunk %s fragments (mask 0x%x) failed: %s", id,
                  mask, pfs_err_msg());
        repair_failures_report(fs, 1, 0);
    }
    else
        log_info("repaired chunk %s fragments (mask 0x%x)", id, mask);
}

static void job_run(struct fs *fs, struct job *j)
{
    switch (j->type) {
    case JOB_PUT:
        job_put(fs, j->in, j->idx);
        break;
    case JOB_READAHEAD:
        job_readahead(fs, j->in, j->idx);
        break;
    case JOB_REPAIR:
        job_repair(fs, &j->ref, j->mask);
        break;
    case JOB_INVAL:
        if (fs->inval_inode)
            fs->inval_inode(fs, j->idx);
        break;
    case JOB_GC:
        pthread_mutex_lock(&fs->data->qlock);
        fs->data->gc_queued = 0;
        pthread_mutex_unlock(&fs->data->qlock);
        fs_data_gc_run(fs);
        break;
    }
    job_done(fs, j);
}

/* A job's end: its inode reference goes. */
static void job_done(struct fs *fs, struct job *j)
{
    if (j->in) {
        fs_inode_put(fs, j->in, FS_REF_OP, 1);
        /* Only now may unmount free the inode table (fs_data_quiesce). */
        struct fs_data *d = fs->data;
        pthread_mutex_lock(&d->qlock);
        if (--d->inode_jobs == 0)
            pthread_cond_broadcast(&d->idle_cond);
        pthread_mutex_unlock(&d->qlock);
    }
}

static void job_item_run(struct workq_item *it)
{
    struct job *j = (struct job *)it;

    job_run(j->fs, j);
    free(j);
}

/* ---- metadata syncer ---- */

/* Metadata commits are deferred (meta_set_deferred_sync): this thread makes
 * them durable every SYNC_PERIOD_MS, so a create, rename or unlink reaches
 * the disk within about a second without each paying for an fsync.  fsync,
 * fsyncdir, the gc and unmount sync at once. */
/* The signed file head (vault_filehead.c): signed by the syncer every
 * FILE_HEAD_PERIOD_MS while this mount commits files, and at unmount, after
 * the commits it covers are durable; never on an operation's path.  The
 * advance releases meta_lock while it signs (vault_file_head_advance). */
static void fs_data_file_head_advance(struct fs *fs)
{
    pthread_mutex_lock(&fs->meta_lock);
    int r = fs->opt.read_only ? vault_file_head_refresh(fs->v)   /* writes nothing */
                              : vault_file_head_advance(fs->v, &fs->meta_lock);
    if (r == 0 && !fs->opt.read_only)
        r = meta_sync(fs->v->meta);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r == 0)
        vault_file_head_anchor(fs->v);   /* durable first: a crash never leaves it ahead */
    if (r < 0 && r != -ESTALE && r != -EBADMSG)
        log_error("cannot advance the signed file head (retried): %s",
                  pfs_err_msg());
}

static void *syncer_main(void *arg)
{
    struct fs *fs = arg;
    struct fs_data *d = fs->data;
    unsigned ticks = 0;
    pthread_mutex_lock(&d->slock);
    while (!d->syncer_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(SYNC_PERIOD_MS % 1000) * 1000000L;
        ts.tv_sec += SYNC_PERIOD_MS / 1000 + ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&d->scond, &d->slock, &ts);
        if (d->syncer_stop)
            break;
        pthread_mutex_unlock(&d->slock);
        fs_inode_retired_flush(fs);
        fs_data_meta_sync(fs);
        if (__atomic_exchange_n(&d->gc_wanted, 0, __ATOMIC_ACQ_REL))
            gc_queue_job(d);
        if (++ticks % (FILE_HEAD_PERIOD_MS / SYNC_PERIOD_MS) == 0)
            fs_data_file_head_advance(fs);
        if (ticks % (PACK_SWEEP_PERIOD_MS / SYNC_PERIOD_MS) == 0 && !fs->opt.read_only)
            gc_queue_job(d);   /* free packs whose grace ran out (gc_sweep_packs) */
        if (ticks % (REPAIR_PERIOD_MS / SYNC_PERIOD_MS) == 0) {
            /* packs that failed to be written: retried even if nothing else syncs */
            if (object_layer_packs_waiting(fs->v->ol) && object_layer_sync(fs->v->ol) < 0)
                log_warning("small files' data still waits for an endpoint: %s", pfs_err_msg());
            if (__atomic_load_n(&d->health.repair_queue, __ATOMIC_RELAXED))
                repairs_run(fs);
            if (__atomic_load_n(&d->nstuck, __ATOMIC_RELAXED))
                stuck_retry(fs, 0);
        }
        fs_status_tick(fs);
        pthread_mutex_lock(&d->slock);
    }
    pthread_mutex_unlock(&d->slock);
    return NULL;
}

static void syncer_stop(struct fs_data *d)
{
    if (!d->syncer_started)
        return;
    thread_stop(&d->slock, &d->scond, &d->syncer_stop, d->syncer);
    d->syncer_started = 0;
}

/* ---- start / stop ---- */

int fs_data_start(struct fs *fs)
{
    struct fs_data *d = calloc(1, sizeof *d);
    if (!d)
        return pfs_err(-ENOMEM, "out of memory starting the data path");
    const struct pactfs_conf *c = &fs->v->conf;
    d->fs = fs;
    d->cache_budget = (size_t)(c->cache_mib ? c->cache_mib : 256) << 20;
    d->dirty_budget = (size_t)(c->dirty_mib ? c->dirty_mib : 256) << 20;
    d->cnbuckets = 4096;
    d->cbuckets = calloc(d->cnbuckets, sizeof *d->cbuckets);
    d->ibuckets = calloc(d->cnbuckets, sizeof *d->ibuckets);
    if (!d->cbuckets || !d->ibuckets) {
        free(d->cbuckets);
        free(d->ibuckets);
        free(d);
        return pfs_err(-ENOMEM, "out of memory starting the data path");
    }
    pthread_mutex_init(&d->qlock, NULL);
    pthread_mutex_init(&d->clock, NULL);
    pthread_cond_init(&d->ccond, NULL);
    pthread_mutex_init(&d->dlock, NULL);
    pthread_mutex_init(&d->slock, NULL);
    pthread_cond_init(&d->scond, NULL);
    pthread_mutex_init(&d->hlock, NULL);
    pthread_cond_init(&d->idle_cond, NULL);
    pthread_mutex_init(&d->cqlock, NULL);
    pthread_cond_init(&d->cqcond, NULL);
    pthread_cond_init(&d->cqidle, NULL);
    fs->data = d;
    int wr = workq_new(c->workers ? c->workers : 4, "write-back", &d->pool);
    if (wr < 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", pfs_err_msg());
        fs_data_stop(fs);
        return pfs_err(wr, "%s", why);
    }
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_set_deferred_sync(fs->v->meta, 1);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0) {
        fs_data_stop(fs);
        return pfs_err(-EIO, "cannot configure the metadata store: %s", pfs_err_msg());
    }
    /* Operations no longer wait for their audit event's fdatasync: the
     * committer makes events durable within AUDIT_COMMIT_MS, and every
     * metadata sync makes them durable first (meta_set_presync). */
    if (fs->v->audit && audit_set_group_commit(fs->v->audit, AUDIT_COMMIT_MS) < 0) {
        fs_data_stop(fs);
        return pfs_err(-EIO, "cannot start the audit group commit: %s", pfs_err_msg());
    }
    uint64_t loaded = 0;
    int lr = fs_repairq_load(fs, repair_loaded, fs, &loaded);
    if (lr < 0)
        log_warning("cannot read the repair queue %s.repair: %s; "
                    "pactfs-fsck --repair finds what is missing anyway", c->audit_spool,
                    strerror(-lr));
    else if (loaded)
        log_info("%" PRIu64 " chunk(s) left with missing fragments by an "
                 "earlier mount are repaired in the background", loaded);
    int e = pthread_create(&d->syncer, NULL, syncer_main, fs);
    if (e) {
        fs_data_stop(fs);
        return pfs_err(-e, "cannot start the metadata sync thread: %s", strerror(e));
    }
    d->syncer_started = 1;
    e = pthread_create(&d->committer, NULL, committer_main, fs);
    if (e) {
        fs_data_stop(fs);
        return pfs_err(-e, "cannot start the commit thread: %s", strerror(e));
    }
    __atomic_store_n(&d->cq_started, 1, __ATOMIC_RELEASE);
    if (fs_endpoints_start(fs) < 0) {
        fs_data_stop(fs);
        return pfs_err(-EAGAIN, "cannot start the endpoint watcher thread");
    }
    fs_status_tick(fs);   /* `pactfs status` works from the start */
    object_layer_set_lost_cb(fs->v->ol, pack_part_lost, fs);
    return 0;
}

void fs_data_stop(struct fs *fs)
{
    struct fs_data *d = fs->data;
    if (!d)
        return;
    committer_stop(d);     /* commits what is queued (its puts need the pool) */
    workq_stop(d->pool);   /* runs every queued job first */
    fs_endpoints_stop(fs);
    syncer_stop(d);
    if (d->repairs)
        repairs_run(fs);   /* the endpoint may be back by now */
    if (d->repairs) {
        log_warning("%" PRIu64 " chunk(s) still miss fragments on a failing "
                    "endpoint at unmount: kept in %s.repair, repaired by the next mount once "
                    "the endpoint is back (or by pactfs-fsck --repair)",
                    d->health.repair_queue, fs->v->conf.audit_spool);
        fs_health_unmount_report(fs, d->health.repair_queue);
    }
    while (d->repairs) {
        struct pending_repair *p = d->repairs;
        d->repairs = p->next;
        free(p);
    }
    /* Every deferred commit on disk before the daemon goes (its events
     * first); and back to durable commits and events for whoever uses the
     * handles next.  The file head then covers every commit of this mount. */
    fs_data_meta_sync(fs);
    fs_data_file_head_advance(fs);
    if (fs->v->audit)
        audit_set_group_commit(fs->v->audit, 0);
    pthread_mutex_lock(&fs->meta_lock);
    meta_set_deferred_sync(fs->v->meta, 0);
    pthread_mutex_unlock(&fs->meta_lock);
    while (d->lru_head) {
        struct cache_entry *e = d->lru_head;
        e->ready = 1;
        cache_remove_locked(d, e);
    }
    free(d->cbuckets);
    free(d->ibuckets);
    free(d->stuck);   /* a retry list the syncer re-made after the last flush */
    workq_free(d->pool);
    pthread_mutex_destroy(&d->qlock);
    pthread_mutex_destroy(&d->clock);
    pthread_cond_destroy(&d->ccond);
    pthread_mutex_destroy(&d->dlock);
    pthread_mutex_destroy(&d->slock);
    pthread_cond_destroy(&d->scond);
    pthread_mutex_destroy(&d->hlock);
    pthread_cond_destroy(&d->idle_cond);
    pthread_mutex_destroy(&d->cqlock);
    pthread_cond_destroy(&d->cqcond);
    pthread_cond_destroy(&d->cqidle);
    object_layer_set_lost_cb(fs->v->ol, NULL, NULL);
    free(d);
    fs->data = NULL;
}
