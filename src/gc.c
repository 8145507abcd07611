/* The deletion queue's garbage collection (gc.h). */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "gc.h"
#include "log.h"
#include "meta.h"
#include "object.h"

#define GC_BATCH 64   /* queue entries per listing and per done transaction */

struct gc_batch {
    uint64_t ids[GC_BATCH];
    struct chunk_ref refs[GC_BATCH];
    unsigned n;
};

static void gc_lock(const struct gc_lock *lk)
{
    if (lk)
        lk->lock(lk->arg);
}

static void gc_unlock(const struct gc_lock *lk)
{
    if (lk)
        lk->unlock(lk->arg);
}

static int gc_collect(void *arg, uint64_t id, const struct chunk_ref *r)
{
    struct gc_batch *b = arg;

    if (b->n >= GC_BATCH)
        return 1;
    b->ids[b->n] = id;
    b->refs[b->n] = *r;
    b->n++;
    return 0;
}

/* The listed entries (their fragments are gone) leave the queue in one
 * transaction, and the packs they named go on the free list if no record
 * names them any more; an entry already gone is not an error. */
static int gc_mark_done(struct meta *m, const struct gc_lock *lk, const uint64_t *ids,
                        const struct chunk_ref *const *refs, unsigned n)
{
    if (n == 0)
        return 0;
    gc_lock(lk);
    int r = meta_begin(m);
    for (unsigned i = 0; r == 0 && i < n; i++) {
        r = meta_gc_done(m, ids[i]);
        if (r == -ENOENT)
            r = 0;
    }
    for (unsigned i = 0; r == 0 && i < n; i++)
        if (refs[i]->packed)
            r = meta_pack_release(m, refs[i]->pack, PACK_ID_LEN);
    if (r == 0)
        r = meta_commit(m);
    else
        meta_rollback(m);
    gc_unlock(lk);
    if (r < 0)   /* the entries come back; deleting again finds nothing */
        log_error("cannot update the deletion queue: %s", pfs_err_msg());
    return r;
}

int gc_run(struct meta *m, struct object_layer *ol, const struct gc_lock *lk,
           uint32_t pack_grace_s, uint64_t *deleted)
{
    struct gc_batch *b = malloc(sizeof *b);
    uint64_t *done_ids = malloc(GC_BATCH * sizeof *done_ids);
    const struct chunk_ref *done_refs[GC_BATCH];
    int rc = 0;

    if (deleted)
        *deleted = 0;
    if (!b || !done_ids) {
        free(b);
        free(done_ids);
        return pfs_err(-ENOMEM, "out of memory for the deletion queue");
    }
    for (;;) {
        b->n = 0;
        gc_lock(lk);
        int r = meta_gc_list(m, GC_BATCH, gc_collect, b);
        /* Commits may be deferred: the one that dropped these chunks must
         * be on disk before their fragments go. */
        if (r == 0 && b->n)
            r = meta_sync(m);
        gc_unlock(lk);
        if (r < 0 || b->n == 0) {
            if (r < 0 && rc == 0)
                rc = r;
            break;
        }
        unsigned done = 0;
        for (unsigned i = 0; i < b->n; i++) {
            r = object_delete_chunk(ol, &b->refs[i]);
            if (r < 0) {
                log_error("cannot delete old fragments: %s", pfs_err_msg());
                if (rc == 0)
                    rc = r;
                continue;
            }
            done_refs[done] = &b->refs[i];
            done_ids[done++] = b->ids[i];
        }
        r = gc_mark_done(m, lk, done_ids, done_refs, done);
        if (r < 0 && rc == 0)
            rc = r;
        if (r == 0 && deleted)
            *deleted += done;
        if (done == 0 || r < 0)
            break;   /* nothing progresses: the rest waits for the next run */
    }
    free(done_ids);
    free(b);
    int rs = gc_sweep_packs(m, ol, lk, pack_grace_s, NULL);
    return rc ? rc : rs;
}

struct pack_batch {
    uint8_t ids[GC_BATCH][PACK_ID_LEN];
    unsigned n;
};

static int pack_collect(void *arg, const uint8_t *pack, size_t len)
{
    struct pack_batch *b = arg;

    if (b->n >= GC_BATCH)
        return 1;
    if (len != PACK_ID_LEN)   /* altered: nothing of ours; dropped below */
        memset(b->ids[b->n], 0, PACK_ID_LEN);
    else
        memcpy(b->ids[b->n], pack, PACK_ID_LEN);
    b->n++;
    return 0;
}

/* Take one pack off the free list; 0 or -errno. */
static int free_pack_forget(struct meta *m, const struct gc_lock *lk, const uint8_t *id)
{
    gc_lock(lk);
    int r = meta_begin(m);
    if (r == 0)
        r = meta_free_pack_delete(m, id, PACK_ID_LEN);
    if (r == 0)
        r = meta_commit(m);
    else
        meta_rollback(m);
    gc_unlock(lk);
    return r;
}

int gc_sweep_packs(struct meta *m, struct object_layer *ol, const struct gc_lock *lk,
                   uint32_t pack_grace_s, uint64_t *deleted)
{
    static const uint8_t zero[PACK_ID_LEN];
    int64_t before = (int64_t)time(NULL) - pack_grace_s;
    struct pack_batch b;
    int rc = 0;

    if (deleted)
        *deleted = 0;
    /* one batch per run: the list is short, and the next run goes on */
    b.n = 0;
    gc_lock(lk);
    int r = meta_free_packs_list(m, before, GC_BATCH, pack_collect, &b);
    if (r == 0 && b.n)   /* the releases must be on disk before packs go */
        r = meta_sync(m);
    gc_unlock(lk);
    if (r < 0)
        return r;
    for (unsigned i = 0; i < b.n; i++) {
        const uint8_t *id = b.ids[i];
        int referenced = 1;
        if (memcmp(id, zero, PACK_ID_LEN) == 0)
            continue;
        if ((int64_t)object_pack_time(id) > before)
            continue;   /* made within the grace: a writer may not have committed yet */
        gc_lock(lk);
        r = meta_pack_referenced(m, id, PACK_ID_LEN, &referenced);
        gc_unlock(lk);
        if (r == 0 && !referenced)
            r = object_delete_pack(ol, id);
        if (r == 0)
            r = free_pack_forget(m, lk, id);
        if (r < 0) {
            log_error("cannot delete a free pack: %s", pfs_err_msg());
            if (rc == 0)
                rc = r;
            continue;
        }
        if (!referenced && deleted)
            (*deleted)++;
    }
    return rc;
}
