#include "config.h"

/* The endpoint watcher of a mount: every ENDPOINT_CHECK_MS it checks each
 * endpoint's identity and reachability (endpoint_set_check): an endpoint
 * whose marker is gone, replaced or foreign, or whose directory was
 * renamed away, goes offline (never written to); one that is back is used
 * again without a remount.  Every change is logged (syslog priority err
 * when lost) and audited: endpoint-lost (result EIO, the reason in the
 * path field) and endpoint-back. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "endpoint.h"
#include "fs_internal.h"
#include "log.h"
#include "vault.h"

struct fs_epwatch {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;
};

static unsigned check_ms(void)
{
    const char *e = getenv("PACTFS_ENDPOINT_CHECK_MS");   /* tests only */
    long v = e ? atol(e) : 0;

    return v >= 100 && v <= 600000 ? (unsigned)v : ENDPOINT_CHECK_MS;
}

static void on_change(void *arg, unsigned i, enum endpoint_state before,
                      enum endpoint_state now, const char *why)
{
    struct fs *fs = arg;
    struct store *s = endpoint_set_store(fs->v->eps, i);
    char what[600];

    (void)before;
    if (now == ENDPOINT_OK) {
        log_info("endpoint %u (%s) is back: reads, writes and repairs use it "
                 "again", i, s->desc);
        snprintf(what, sizeof what, "endpoint %u %s", i, s->desc);
        fs_audit(fs, NULL, "endpoint-back", what, 0, 0);
        return;
    }
    log_error("endpoint %u (%s) lost, now offline (%s): %s; nothing is "
              "written to it, reads use parity and writes go on degraded while at most m "
              "endpoints are offline", i, s->desc, endpoint_state_name(now), why);
    snprintf(what, sizeof what, "endpoint %u %s: %s: %s", i, s->desc,
             endpoint_state_name(now), why);
    fs_audit(fs, NULL, "endpoint-lost", what, -EIO, 0);
    fs_health_note_error(fs, what);
}

static void *watch_main(void *arg)
{
    struct fs *fs = arg;
    struct fs_epwatch *w = fs->epwatch;
    unsigned ms = check_ms();

    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (long)(ms % 1000) * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&w->cond, &w->lock, &ts);
        if (w->stop)
            break;
        pthread_mutex_unlock(&w->lock);
        endpoint_set_check(fs->v->eps, on_change, fs);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int fs_endpoints_start(struct fs *fs)
{
    struct fs_epwatch *w = calloc(1, sizeof *w);
    int e;

    if (!w)
        return -ENOMEM;
    /* The watcher reads the registry through the mount's metadata handle. */
    endpoint_set_meta_lock(fs->v->eps, &fs->meta_lock);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    fs->epwatch = w;
    /* Endpoints offline from the start are logged at open; audit them too. */
    for (unsigned i = 0; i < fs->v->conf.n_endpoints; i++) {
        char why[400];
        enum endpoint_state st = endpoint_set_state(fs->v->eps, i, why, sizeof why);

        if (st != ENDPOINT_OK)
            on_change(fs, i, ENDPOINT_OK, st, why);
    }
    e = pthread_create(&w->thread, NULL, watch_main, fs);
    if (e) {
        fs->epwatch = NULL;
        free(w);
        return -e;
    }
    return 0;
}

void fs_endpoints_stop(struct fs *fs)
{
    struct fs_epwatch *w = fs->epwatch;

    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    free(w);
    fs->epwatch = NULL;
    endpoint_set_meta_lock(fs->v->eps, NULL);
}
