/* A storage endpoint that is known to be unreachable: the stand-in that
 * lets the object layer read with parity while an endpoint is lost, and
 * fails every write loudly; the object layer then stores the other
 * fragments if the vault allows degraded writes (coding.min_write_fragments)
 * and queues the missing one for repair. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "store.h"

struct offline {
    char *reason;
};

static int offline_write_refused(struct store *s)
{
    struct offline *o = s->impl;

    return pfs_err(-EIO, "endpoint %s is offline (%s): nothing can be written to it until it is "
                   "restored; then run pactfs-fsck --repair", s->desc, o->reason);
}

static int offline_put(struct store *s, const char *name, const void *data, size_t len)
{
    (void)name; (void)data; (void)len;
    return offline_write_refused(s);
}

static int offline_get(struct store *s, const char *name, void **data, size_t *len)
{
    (void)s; (void)name; (void)data; (void)len;
    return -ENOENT;
}

static int offline_get_into(struct store *s, const char *name, void *buf, size_t len)
{
    (void)s; (void)name; (void)buf; (void)len;
    return -ENOENT;
}

static int offline_get_range(struct store *s, const char *name, uint64_t off, void *buf,
                             size_t len)
{
    (void)s; (void)name; (void)off; (void)buf; (void)len;
    return -ENOENT;
}

static int offline_del(struct store *s, const char *name)
{
    (void)name;
    return offline_write_refused(s);
}

static int offline_stat(struct store *s, const char *name, uint64_t *size)
{
    (void)s; (void)name; (void)size;
    return -ENOENT;
}

/* Nothing can be seen on it: an empty listing (never a reason to delete). */
static int offline_list(struct store *s, int (*cb)(void *, const char *, uint64_t), void *arg)
{
    (void)s; (void)cb; (void)arg;
    return 0;
}

static int offline_sync(struct store *s)
{
    (void)s;
    return 0;
}

static int offline_space(struct store *s, struct store_space_info *out)
{
    (void)s; (void)out;
    return -ENOTSUP;
}

static void offline_close(struct store *s)
{
    struct offline *o = s->impl;

    free(o->reason);
    free(o);
    free(s->desc);
    free(s);
}

static const struct store_ops offline_ops = {
    .type = "offline",
    .put = offline_put,
    .get = offline_get,
    .del = offline_del,
    .stat = offline_stat,
    .list = offline_list,
    .sync = offline_sync,
    .space = offline_space,
    .close = offline_close,
    .get_into = offline_get_into,
    .get_range = offline_get_range,
};

int store_offline_new(const char *desc, const char *reason, struct store **out)
{
    struct store *s = calloc(1, sizeof *s);
    struct offline *o = calloc(1, sizeof *o);

    if (!s || !o || !(s->desc = strdup(desc)) || !(o->reason = strdup(reason))) {
        if (s)
            free(s->desc);
        free(s);
        free(o);
        return -ENOMEM;
    }
    s->ops = &offline_ops;
    s->impl = o;
    *out = s;
    return 0;
}
