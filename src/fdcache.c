/* Short-lived cache of read-only descriptors (fdcache.h). */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fdcache.h"

struct fdslot {
    char name[FDCACHE_NAME_MAX + 1];
    int fd;             /* -1: free slot */
    unsigned users;     /* uses in progress */
    int stale;          /* no longer handed out; closed when users reach 0 */
    uint64_t size;
    int64_t opened_ms;  /* monotonic */
    uint64_t last_use;  /* for eviction: the least recently taken goes */
};

struct fdcache {
    pthread_mutex_t lock;
    unsigned nslots;
    unsigned ttl_ms;
    uint64_t clock;     /* counts takes and offers */
    struct fdslot slot[];
};

static int64_t now_ms(void)
{
    struct timespec ts;

    /* coarse is enough for a lifetime in the hundreds of ms, and costs no
     * system call */
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct fdcache *fdcache_new(unsigned slots, unsigned ttl_ms)
{
    struct fdcache *c = calloc(1, sizeof *c + (size_t)slots * sizeof c->slot[0]);

    if (!c)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    c->nslots = slots;
    c->ttl_ms = ttl_ms;
    for (unsigned i = 0; i < slots; i++)
        c->slot[i].fd = -1;
    return c;
}

/* Forget slot i; returns the descriptor to close, or -1.  lock held. */
static int slot_retire(struct fdslot *s)
{
    int fd = -1;

    if (s->fd < 0)
        return -1;
    s->stale = 1;
    if (s->users == 0) {
        fd = s->fd;
        s->fd = -1;
        s->stale = 0;
        s->name[0] = '\0';
    }
    return fd;
}

void fdcache_free(struct fdcache *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < c->nslots; i++)
        if (c->slot[i].fd >= 0)
            close(c->slot[i].fd);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int fdcache_take(struct fdcache *c, const char *name, uint64_t *size)
{
    int fd = -1, gone = -1;
    int64_t now = now_ms();

    pthread_mutex_lock(&c->lock);
    for (unsigned i = 0; i < c->nslots; i++) {
        struct fdslot *s = &c->slot[i];
        if (s->fd < 0 || s->stale || strcmp(s->name, name) != 0)
            continue;
        if (now - s->opened_ms > (int64_t)c->ttl_ms) {
            gone = slot_retire(s);   /* too old: the caller opens it afresh */
            break;
        }
        s->users++;
        s->last_use = ++c->clock;
        *size = s->size;
        fd = s->fd;
        break;
    }
    pthread_mutex_unlock(&c->lock);
    if (gone >= 0)
        close(gone);
    return fd;
}

void fdcache_offer(struct fdcache *c, const char *name, int fd, uint64_t size)
{
    struct fdslot *pick = NULL;
    int gone = -1;

    if (strlen(name) > FDCACHE_NAME_MAX)
        return;
    pthread_mutex_lock(&c->lock);
    for (unsigned i = 0; i < c->nslots; i++) {
        struct fdslot *s = &c->slot[i];
        if (s->fd >= 0 && !s->stale && strcmp(s->name, name) == 0) {
            pick = NULL;   /* another reader kept it first: this one stays the caller's */
            goto out;
        }
        if (s->fd < 0) {
            if (!pick || pick->fd >= 0)
                pick = s;
        } else if (s->users == 0 && (!pick || (pick->fd >= 0 && s->last_use < pick->last_use))) {
            pick = s;
        }
    }
    if (!pick)
        goto out;   /* every slot in use: not kept */
    gone = slot_retire(pick);
    strcpy(pick->name, name);
    pick->fd = fd;
    pick->users = 1;
    pick->stale = 0;
    pick->size = size;
    pick->opened_ms = now_ms();
    pick->last_use = ++c->clock;
out:
    pthread_mutex_unlock(&c->lock);
    if (gone >= 0)
        close(gone);
}

void fdcache_done(struct fdcache *c, int fd)
{
    int gone = fd;

    pthread_mutex_lock(&c->lock);
    for (unsigned i = 0; i < c->nslots; i++) {
        struct fdslot *s = &c->slot[i];
        if (s->fd != fd)
            continue;
        if (s->users > 0)
            s->users--;
        gone = s->stale ? slot_retire(s) : -1;
        break;
    }
    pthread_mutex_unlock(&c->lock);
    if (gone >= 0)
        close(gone);
}

void fdcache_drop(struct fdcache *c, const char *name)
{
    int gone = -1;

    pthread_mutex_lock(&c->lock);
    for (unsigned i = 0; i < c->nslots; i++) {
        struct fdslot *s = &c->slot[i];
        if (s->fd >= 0 && !s->stale && strcmp(s->name, name) == 0) {
            gone = slot_retire(s);
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (gone >= 0)
        close(gone);
}
