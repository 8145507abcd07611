/* One pool of worker threads for every parallel job in pactfs: the storage
 * I/O of a chunk's fragments (object.c), the chunks fsck verifies at once,
 * a mount's write-back, read-ahead, repair and gc jobs (fs_data.c).
 *
 * Two ways to use it:
 * - workq_for: run fn(arg, i) for every i < n in parallel and return when
 *   all have run; the calling thread works too, so a pool with no free
 *   thread still makes progress;
 * - workq_push: queue one item to run later on a pool thread (the item
 *   lives until its run function has returned).
 * Items run in queue order; workq_stop (or workq_free) runs what is queued,
 * items those push included, then stops the threads.
 */
#ifndef PACTFS_WORKQ_H
#define PACTFS_WORKQ_H

struct workq;

struct workq_item {
    void (*run)(struct workq_item *it);
    struct workq_item *next;          /* the queue's */
};

/* nthreads pool threads (at least 1).  0 or -errno with a message naming
 * what the pool is for. */
int workq_new(unsigned nthreads, const char *what, struct workq **out);
/* Run what is queued, then stop the threads (NULL: nothing).  Once they
 * have stopped, workq_push refuses items; the pool stays valid to push to
 * (and be refused) until workq_free. */
void workq_stop(struct workq *q);
/* workq_stop, then free the pool (NULL: nothing). */
void workq_free(struct workq *q);
unsigned workq_threads(const struct workq *q);

/* Queue it: 0, or -ESHUTDOWN when the pool's threads have stopped and
 * it would never run -- the item stays the caller's, to run or free. */
int workq_push(struct workq *q, struct workq_item *it);

/* fn(arg, i) for i in 0..n-1, spread over the pool and the caller. */
void workq_for(struct workq *q, unsigned n, void (*fn)(void *arg, unsigned i), void *arg);

#endif
