#include "config.h"

/* A fixed pool of threads over one FIFO queue (see workq.h). */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "workq.h"

#define WORKQ_MAX_THREADS 256      /* a mount's cache.workers goes up to 256 */

struct workq {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct workq_item *head, *tail;
    int stopping;
    unsigned live;                  /* threads not yet returned from worker() */
    unsigned nthreads;
    pthread_t threads[WORKQ_MAX_THREADS];
};

static struct workq_item *pop(struct workq *q)
{
    struct workq_item *it = q->head;

    if (it) {
        q->head = it->next;
        if (!q->head)
            q->tail = NULL;
    }
    return it;
}

static void *worker(void *arg)
{
    struct workq *q = arg;

    for (;;) {
        struct workq_item *it;

        pthread_mutex_lock(&q->lock);
        while (!q->head && !q->stopping)
            pthread_cond_wait(&q->cond, &q->lock);
        it = pop(q);
        if (!it)
            q->live--;     /* stopping and drained: workq_push refuses from now */
        pthread_mutex_unlock(&q->lock);
        if (!it)
            return NULL;
        it->run(it);
    }
}

void workq_stop(struct workq *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->lock);
    q->stopping = 1;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
    for (unsigned i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    q->nthreads = 0;
}

void workq_free(struct workq *q)
{
    if (!q)
        return;
    workq_stop(q);
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->lock);
    free(q);
}

int workq_new(unsigned nthreads, const char *what, struct workq **out)
{
    struct workq *q = calloc(1, sizeof *q);

    *out = NULL;
    if (!q)
        return pfs_err(-ENOMEM, "out of memory starting the %s threads", what);
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > WORKQ_MAX_THREADS)
        nthreads = WORKQ_MAX_THREADS;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_mutex_lock(&q->lock);
        q->live++;                  /* before it runs: it may be stopped at once */
        pthread_mutex_unlock(&q->lock);
        int e = pthread_create(&q->threads[i], NULL, worker, q);

        if (e) {
            pthread_mutex_lock(&q->lock);
            q->live--;
            pthread_mutex_unlock(&q->lock);
            workq_free(q);
            return pfs_err(-e, "cannot start the %s threads: %s", what, strerror(e));
        }
        q->nthreads++;
    }
    *out = q;
    return 0;
}

unsigned workq_threads(const struct workq *q)
{
    return q->nthreads;
}

int workq_push(struct workq *q, struct workq_item *it)
{
    pthread_mutex_lock(&q->lock);
    if (q->stopping && !q->live) {
        pthread_mutex_unlock(&q->lock);
        return -ESHUTDOWN;   /* nobody would ever run it: the caller keeps it */
    }
    it->next = NULL;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
    return 0;
}

/* ---- parallel for ---- */

struct for_helper {
    struct workq_item item;
    struct for_run *run;
};

struct for_run {
    pthread_mutex_t lock;
    pthread_cond_t done;
    void (*fn)(void *arg, unsigned i);
    void *arg;
    unsigned n, next;
    unsigned helpers;               /* queued or running helpers */
    struct for_helper h[WORKQ_MAX_THREADS];
};

static void for_work(struct for_run *r)
{
    for (;;) {
        unsigned i;

        pthread_mutex_lock(&r->lock);
        i = r->next < r->n ? r->next++ : r->n;
        pthread_mutex_unlock(&r->lock);
        if (i >= r->n)
            return;
        r->fn(r->arg, i);
    }
}

static void helper_run(struct workq_item *it)
{
    struct for_run *r = ((struct for_helper *)it)->run;

    for_work(r);
    pthread_mutex_lock(&r->lock);
    if (--r->helpers == 0)
        pthread_cond_signal(&r->done);
    pthread_mutex_unlock(&r->lock);
}

/* Take back the helpers no thread has started: the work is done, they
 * must not keep the caller waiting behind other jobs.  Returns how many. */
static unsigned withdraw(struct workq *q, struct for_run *r)
{
    struct workq_item **pp, *prev = NULL;
    unsigned n = 0;

    pthread_mutex_lock(&q->lock);
    for (pp = &q->head; *pp;) {
        struct workq_item *it = *pp;

        if (it->run == helper_run && ((struct for_helper *)it)->run == r) {
            *pp = it->next;
            n++;
            continue;
        }
        prev = it;
        pp = &it->next;
    }
    q->tail = prev;
    pthread_mutex_unlock(&q->lock);
    return n;
}

void workq_for(struct workq *q, unsigned n, void (*fn)(void *arg, unsigned i), void *arg)
{
    struct for_run r;
    unsigned pushed;

    if (n == 0)
        return;
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.done, NULL);
    r.fn = fn;
    r.arg = arg;
    r.n = n;
    pushed = n - 1 < q->nthreads ? n - 1 : q->nthreads;
    r.helpers = pushed;
    for (unsigned i = 0; i < pushed; i++) {
        r.h[i].item.run = helper_run;
        r.h[i].run = &r;
        if (workq_push(q, &r.h[i].item) < 0) {   /* the pool is stopping */
            pthread_mutex_lock(&r.lock);
            r.helpers--;
            pthread_mutex_unlock(&r.lock);
        }
    }
    for_work(&r);
    if (pushed) {
        unsigned back = withdraw(q, &r);

        pthread_mutex_lock(&r.lock);
        r.helpers -= back;
        while (r.helpers)
            pthread_cond_wait(&r.done, &r.lock);
        pthread_mutex_unlock(&r.lock);
    }
    pthread_cond_destroy(&r.done);
    pthread_mutex_destroy(&r.lock);
}
