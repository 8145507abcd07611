#include "config.h"

/* workq: the one worker pool (parallel for, queued items, shutdown). */

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "tap.h"
#include "workq.h"

struct counts {
    _Atomic unsigned hits[1000];
};

static void count_at(void *arg, unsigned i)
{
    struct counts *c = arg;

    atomic_fetch_add(&c->hits[i], 1);
}

static int each_once(struct counts *c, unsigned n)
{
    for (unsigned i = 0; i < 1000; i++)
        if (atomic_load(&c->hits[i]) != (i < n ? 1u : 0u))
            return 0;
    return 1;
}

static void test_for_runs_each_index_once(void)
{
    static struct counts c;
    struct workq *q;
    const unsigned sizes[] = { 0, 1, 2, 3, 4, 17, 1000 };

    REQUIRE(workq_new(3, "test", &q) == 0);
    CHECK_EQ_INT((int)workq_threads(q), 3);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        memset(&c, 0, sizeof c);
        workq_for(q, sizes[s], count_at, &c);
        CHECK(each_once(&c, sizes[s]));
    }
    workq_free(q);
}

/* Several threads share one pool, as the object layer's callers do. */
struct caller {
    struct workq *q;
    struct counts c;
    int ok;
};

static void *call_many(void *arg)
{
    struct caller *k = arg;

    k->ok = 1;
    for (int round = 0; round < 50; round++) {
        memset(&k->c, 0, sizeof k->c);
        workq_for(k->q, 40, count_at, &k->c);
        k->ok &= each_once(&k->c, 40);
    }
    return NULL;
}

static void test_shared_by_concurrent_callers(void)
{
    static struct caller k[4];
    pthread_t t[4];
    struct workq *q;

    REQUIRE(workq_new(2, "test", &q) == 0);
    for (int i = 0; i < 4; i++) {
        k[i].q = q;
        REQUIRE(pthread_create(&t[i], NULL, call_many, &k[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK(k[i].ok);
    }
    workq_free(q);
}

/* Items that block every pool thread: workq_for still finishes (the caller
 * does the work and takes back its unstarted helpers). */
struct gate {
    struct workq_item item;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int open, ran;
};

static void gate_run(struct workq_item *it)
{
    struct gate *g = (struct gate *)it;

    pthread_mutex_lock(&g->lock);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    g->ran++;
    pthread_mutex_unlock(&g->lock);
}

static void test_for_with_busy_pool_and_push(void)
{
    static struct counts c;
    struct gate g[2];
    struct workq *q;

    REQUIRE(workq_new(2, "test", &q) == 0);
    for (int i = 0; i < 2; i++) {
        memset(&g[i], 0, sizeof g[i]);
        pthread_mutex_init(&g[i].lock, NULL);
        pthread_cond_init(&g[i].cond, NULL);
        g[i].item.run = gate_run;
        workq_push(q, &g[i].item);
    }
    memset(&c, 0, sizeof c);
    workq_for(q, 100, count_at, &c);      /* must not wait for the gates */
    CHECK(each_once(&c, 100));
    for (int i = 0; i < 2; i++) {
        pthread_mutex_lock(&g[i].lock);
        g[i].open = 1;
        pthread_cond_broadcast(&g[i].cond);
        pthread_mutex_unlock(&g[i].lock);
    }
    workq_free(q);                         /* runs what is queued, then joins */
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(g[i].ran, 1);
        pthread_cond_destroy(&g[i].cond);
        pthread_mutex_destroy(&g[i].lock);
    }
}

/* What a mount's data path counts on (fs_data.c): one thread runs items
 * in queue order; workq_stop runs what is queued, items those push
 * included; an item pushed once the threads are gone stays queued and
 * never runs; workq_for then runs on the caller alone. */
struct rec {
    struct workq_item item;
    struct workq *q;
    int id;
    int *order;
    _Atomic int *n;
    struct rec *child;          /* pushed by this one when it runs */
};

static void rec_run(struct workq_item *it)
{
    struct rec *r = (struct rec *)it;

    r->order[atomic_fetch_add(r->n, 1)] = r->id;
    if (r->child)
        workq_push(r->q, &r->child->item);
}

static void test_stop_drains_in_order_then_refuses_work(void)
{
    static struct counts c;
    struct rec r[6];
    int order[6] = { 0 };
    _Atomic int n = 0;
    struct gate g;
    struct workq *q;

    REQUIRE(workq_new(1, "test", &q) == 0);
    memset(&g, 0, sizeof g);
    pthread_mutex_init(&g.lock, NULL);
    pthread_cond_init(&g.cond, NULL);
    g.item.run = gate_run;
    CHECK_EQ_INT(workq_push(q, &g.item), 0);   /* holds the one thread */
    for (int i = 0; i < 6; i++)
        r[i] = (struct rec){ .item.run = rec_run, .q = q, .id = i + 1, .order = order,
                             .n = &n };
    r[2].child = &r[4];                   /* 5 is pushed by 3 as it runs */
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(workq_push(q, &r[i].item), 0);
    pthread_mutex_lock(&g.lock);
    g.open = 1;
    pthread_cond_broadcast(&g.cond);
    pthread_mutex_unlock(&g.lock);
    workq_stop(q);
    CHECK_EQ_INT(atomic_load(&n), 5);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(order[i], i + 1);
    CHECK_EQ_INT((int)workq_threads(q), 0);
    /* after the stop: refused, so the caller can run or free it (a job
     * left queued was leaked: LeakSanitizer caught unmount's last gc) */
    CHECK_EQ_INT(workq_push(q, &r[5].item), -ESHUTDOWN);
    memset(&c, 0, sizeof c);
    workq_for(q, 10, count_at, &c);       /* the caller alone */
    CHECK(each_once(&c, 10));
    workq_free(q);
    CHECK_EQ_INT(atomic_load(&n), 5);
    pthread_cond_destroy(&g.cond);
    pthread_mutex_destroy(&g.lock);
    workq_stop(NULL);
    workq_free(NULL);
}

/* cache.workers allows up to 256 write-back threads. */
static void test_up_to_256_threads(void)
{
    static struct counts c;
    struct workq *q;

    REQUIRE(workq_new(256, "test", &q) == 0);
    CHECK_EQ_INT((int)workq_threads(q), 256);
    memset(&c, 0, sizeof c);
    workq_for(q, 1000, count_at, &c);
    CHECK(each_once(&c, 1000));
    workq_free(q);
}

int main(void)
{
    RUN(test_for_runs_each_index_once);
    RUN(test_shared_by_concurrent_callers);
    RUN(test_for_with_busy_pool_and_push);
    RUN(test_stop_drains_in_order_then_refuses_work);
    RUN(test_up_to_256_threads);
    return tap_done();
}
