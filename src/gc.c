/* The deletion queue's garbage collection (gc.h). */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

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
 * transaction; an entry already gone is not an error. */
static int gc_mark_done(struct meta *m, const struct gc_lock *lk, const uint64_t *ids,
                        unsigned n)
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
           uint64_t *deleted)
{
    struct gc_batch *b = malloc(sizeof *b);
    uint64_t *done_ids = malloc(GC_BATCH * sizeof *done_ids);
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
            done_ids[done++] = b->ids[i];
        }
        r = gc_mark_done(m, lk, done_ids, done);
        if (r < 0 && rc == 0)
            rc = r;
        if (r == 0 && deleted)
            *deleted += done;
        if (done == 0 || r < 0)
            break;   /* nothing progresses: the rest waits for the next run */
    }
    free(done_ids);
    free(b);
    return rc;
}
