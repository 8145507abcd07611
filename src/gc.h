/* The deletion queue's garbage collection, shared by the daemon (its
 * syncer and unmount) and pactfs-fsck --gc. */
#ifndef PACTFS_GC_H
#define PACTFS_GC_H

#include <stdint.h>

struct meta;
struct object_layer;

/* Serialises gc's metadata calls with the caller's other users of the same
 * handle (the daemon's meta_lock); NULL when the caller is alone (fsck). */
struct gc_lock {
    void (*lock)(void *arg);
    void (*unlock)(void *arg);
    void *arg;
};

/* Delete the fragments of every chunk in the deletion queue, batch by
 * batch.  Before a batch's fragments go, meta_sync makes the commit that
 * queued them durable (a crash must not bring back records pointing at
 * deleted fragments); an entry leaves the queue, in one transaction per
 * batch, only once all its fragments are gone, so an interrupted run
 * loses nothing and a rerun finds what is left.  A chunk whose fragments
 * cannot be deleted is logged and stays queued; the run stops when a
 * batch makes no progress.  *deleted (may be NULL) counts the chunks
 * deleted.  0 when the queue was emptied, else a negative errno (the
 * first failure). */
int gc_run(struct meta *m, struct object_layer *ol, const struct gc_lock *lk,
           uint32_t pack_grace_s, uint64_t *deleted);

/* Packs (docs/format-objects.md): a queue entry of a packed chunk removes
 * only its standalone (repaired) fragments; when it leaves the queue, its
 * pack goes on the free list if no record names the pack any more.  Then
 * gc_run deletes each pack on the free list for more than pack_grace_s
 * seconds whose id was also made that long ago, if still no record names
 * it (one found again is taken off the list).  The grace covers a pack
 * made durable whose other chunks are not committed yet: a writer that
 * commits more than pack_grace_s after writing a pack may find it gone. */
int gc_sweep_packs(struct meta *m, struct object_layer *ol, const struct gc_lock *lk,
                   uint32_t pack_grace_s, uint64_t *deleted);

#endif
