#include "config.h"

/* Endpoint identity (signed markers) and the guard stores that keep an
 * endpoint offline while it is unreachable or not the one it should be.
 * See endpoint.h. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "buf.h"
#include "crypto.h"
#include "endpoint.h"
#include "error.h"
#include "log.h"
#include "registry.h"

#define MARK_MAGIC "PFSE"
#define MARK_VERSION 1
#define MARK_MAX 8192

const char *endpoint_state_name(enum endpoint_state s)
{
    switch (s) {
    case ENDPOINT_OK: return "ok";
    case ENDPOINT_UNREACHABLE: return "unreachable";
    case ENDPOINT_UNMARKED: return "unmarked";
    case ENDPOINT_FOREIGN: return "foreign";
    case ENDPOINT_MISPLACED: return "misplaced";
    case ENDPOINT_BAD_MARKER: return "bad-marker";
    case ENDPOINT_REPLACED: return "replaced";
    }
    return "?";
}

/* ------------------------------------------------------------ marker */

static int mark_tbs(const char *vault_id, unsigned index, unsigned n, uint64_t signer_id,
                    uint8_t **out, size_t *outlen)
{
    struct wbuf b;

    wbuf_init(&b);
    wbuf_put_bytes(&b, MARK_MAGIC, 4);
    wbuf_put_u8(&b, MARK_VERSION);
    wbuf_put_str(&b, vault_id);
    wbuf_put_u32(&b, index);
    wbuf_put_u32(&b, n);
    wbuf_put_u64(&b, signer_id);
    *out = wbuf_steal(&b, outlen);
    return *out ? 0 : -ENOMEM;
}

int endpoint_mark_encode(const char *vault_id, unsigned index, unsigned n, EVP_PKEY *signer,
                         uint64_t signer_id, uint8_t **out, size_t *outlen)
{
    uint8_t *tbs = NULL;
    size_t tbslen = 0;
    int rc = mark_tbs(vault_id, index, n, signer_id, &tbs, &tbslen);

    if (rc == 0)
        rc = sig_sign_container(signer, tbs, tbslen, out, outlen);
    free(tbs);
    return rc;
}

enum endpoint_state endpoint_mark_verify(struct meta *m, const char *vault_id,
                                         const char *root_fp, unsigned index,
                                         const uint8_t *raw, size_t len, char *why,
                                         size_t whylen)
{
    struct registry_record r = { 0 };
    struct rbuf b, t;
    const uint8_t *tbs = NULL, *sig = NULL, *magic = NULL, *vid = NULL;
    size_t tbslen = 0, siglen = 0, vidlen = 0;
    uint8_t version = 0;
    uint32_t idx = 0, n = 0;
    uint64_t signer_id = 0;
    EVP_PKEY *key = NULL;
    enum endpoint_state st = ENDPOINT_OK;

    rbuf_init(&b, raw, len);
    rbuf_get_blob(&b, &tbs, &tbslen, 4096);
    rbuf_get_blob(&b, &sig, &siglen, 2048);
    rbuf_init(&t, tbs, rbuf_end(&b) < 0 ? 0 : tbslen);
    rbuf_get_ref(&t, &magic, 4);
    rbuf_get_u8(&t, &version);
    rbuf_get_blob(&t, &vid, &vidlen, 64);
    rbuf_get_u32(&t, &idx);
    rbuf_get_u32(&t, &n);
    rbuf_get_u64(&t, &signer_id);
    if (rbuf_end(&b) < 0 || rbuf_end(&t) < 0 || memcmp(magic, MARK_MAGIC, 4) ||
        version != MARK_VERSION) {
        snprintf(why, whylen, "its endpoint marker is malformed");
        return ENDPOINT_BAD_MARKER;
    }
    if (vidlen != strlen(vault_id) || memcmp(vid, vault_id, vidlen)) {
        snprintf(why, whylen, "it belongs to another vault (its marker names vault %.*s)",
                 (int)(vidlen > 32 ? 32 : vidlen), (const char *)vid);
        return ENDPOINT_FOREIGN;
    }
    if (!root_fp) {
        snprintf(why, whylen, "the configuration pins no vault root: its marker cannot be "
                 "checked");
        return ENDPOINT_BAD_MARKER;
    }
    if (registry_verified_key(m, vault_id, root_fp, signer_id, &r, &key) < 0 ||
        !(r.roles & ROLE_SYSADMIN)) {
        snprintf(why, whylen, "its marker is not signed by a sysadmin of this vault");
        st = ENDPOINT_BAD_MARKER;
    } else if (sig_verify(key, tbs, tbslen, sig, siglen) < 0) {
        snprintf(why, whylen, "its marker's signature does not verify (edited or forged)");
        st = ENDPOINT_BAD_MARKER;
    } else if (idx != index) {
        snprintf(why, whylen, "it holds the marker of endpoint %u, not of endpoint %u "
                 "(endpoints swapped or misconfigured)", idx, index);
        st = ENDPOINT_MISPLACED;
    }
    (void)n;
    EVP_PKEY_free(key);
    registry_record_clear(&r);
    return st;
}

enum endpoint_state endpoint_mark_read(struct store *s, struct meta *m, const char *vault_id,
                                       const char *root_fp, unsigned index, char *why,
                                       size_t whylen, uint8_t **raw, size_t *rawlen)
{
    void *data = NULL;
    size_t len = 0;
    int rc = store_get(s, ENDPOINT_MARK_OBJECT, &data, &len);
    enum endpoint_state st;

    if (rc == -ENOENT) {
        snprintf(why, whylen, "it holds no endpoint marker (a new, emptied or replaced "
                 "endpoint: a sysadmin marks it with pactfs-admin endpoint-mark)");
        return ENDPOINT_UNMARKED;
    }
    if (rc < 0) {
        snprintf(why, whylen, "its marker cannot be read: %s", pfs_err_msg());
        return ENDPOINT_UNREACHABLE;
    }
    if (len > MARK_MAX) {
        free(data);
        snprintf(why, whylen, "its endpoint marker is malformed");
        return ENDPOINT_BAD_MARKER;
    }
    st = endpoint_mark_verify(m, vault_id, root_fp, index, data, len, why, whylen);
    if (raw && st == ENDPOINT_OK) {
        *raw = data;
        *rawlen = len;
    } else {
        free(data);
    }
    return st;
}

int endpoint_mark_write(struct store *s, const char *vault_id, unsigned index, unsigned n,
                        EVP_PKEY *signer, uint64_t signer_id)
{
    uint8_t *raw = NULL;
    size_t len = 0;
    int rc = endpoint_mark_encode(vault_id, index, n, signer, signer_id, &raw, &len);

    if (rc == 0)
        rc = store_put(s, ENDPOINT_MARK_OBJECT, raw, len);
    if (rc == 0)
        rc = store_sync(s);
    free(raw);
    return rc;
}

/* ------------------------------------------------------------- guards */

struct guard {
    struct endpoint_set *es;
    unsigned index;
    pthread_rwlock_t lock;         /* read: an operation on inner; write: a swap */
    struct store *inner;           /* NULL while offline */
    pthread_mutex_t slock;         /* state, why */
    enum endpoint_state state;     /* ENDPOINT_OK iff inner is used */
    enum endpoint_state reported;  /* what the last check's caller was told */
    char why[400];
    int is_dir;
    dev_t dev;                     /* the directory opened (is_dir) */
    ino_t ino;
    int have_id;
    int had_marker;                /* a marker verified: one is required from now on */
    uint8_t *mark;                 /* the marker bytes that verified */
    size_t marklen;
};

struct endpoint_set {
    const struct pactfs_conf *conf;
    struct meta *meta;
    pthread_mutex_t *meta_lock;
    unsigned n;
    struct store *guards[EC_MAX_FRAGS];
};

static struct guard *guard_of(struct store *s)
{
    return s->impl;
}

/* Written under slock, read without it on every operation. */
static enum endpoint_state guard_get_state(struct guard *g)
{
    return __atomic_load_n(&g->state, __ATOMIC_ACQUIRE);
}

static void guard_set_state(struct guard *g, enum endpoint_state st)
{
    __atomic_store_n(&g->state, st, __ATOMIC_RELEASE);
}

/* Lose the endpoint at once (put-time identity check): no more writes go
 * to it; the next check closes it and tells the caller. */
static void guard_lose(struct guard *g, enum endpoint_state st, const char *why)
{
    pthread_mutex_lock(&g->slock);
    if (g->state == ENDPOINT_OK) {
        guard_set_state(g, st);
        snprintf(g->why, sizeof g->why, "%s", why);
    }
    pthread_mutex_unlock(&g->slock);
}

static int offline_refusal(struct store *s)
{
    struct guard *g = guard_of(s);
    char why[400];

    pthread_mutex_lock(&g->slock);
    snprintf(why, sizeof why, "%s", g->why);
    pthread_mutex_unlock(&g->slock);
    return pfs_err(-EIO, "endpoint %u (%s) is offline: %s; nothing is written to it until it "
                   "is back (the fragments it misses are repaired then)", g->index,
                   s->desc, why);
}

/* The directory at the configured path is still the one opened. */
static int dir_still_same(struct store *s, struct guard *g)
{
    const char *path = g->es->conf->endpoints[g->index].path;
    struct stat st;
    char why[400];

    if (stat(path, &st) == 0 && st.st_dev == g->dev && st.st_ino == g->ino)
        return 1;
    snprintf(why, sizeof why, "its directory %s was removed, renamed or replaced while in use",
             path);
    guard_lose(g, ENDPOINT_REPLACED, why);
    (void)s;
    return 0;
}

static int get_into_by_get(struct store *s, const char *name, void *buf, size_t len)
{
    void *data = NULL;
    size_t got = 0;
    int rc = store_get(s, name, &data, &got);

    if (rc == 0 && got != len)
        rc = -EBADMSG;
    if (rc == 0)
        memcpy(buf, data, len);
    free(data);
    return rc;
}

/* Run op on the inner store while online; else the offline answer. */
#define GUARDED(s, call, offline_rc)                                            \
    do {                                                                        \
        struct guard *g_ = guard_of(s);                                         \
        int rc_;                                                                \
        pthread_rwlock_rdlock(&g_->lock);                                       \
        if (g_->inner && guard_get_state(g_) == ENDPOINT_OK) {                  \
            struct store *in_ = g_->inner;                                      \
            rc_ = (call);                                                       \
        } else {                                                                \
            rc_ = (offline_rc);                                                 \
        }                                                                       \
        pthread_rwlock_unlock(&g_->lock);                                       \
        return rc_;                                                             \
    } while (0)

static int guard_put_any(struct store *s, const char *name, const void *data, size_t len,
                         int fresh)
{
    struct guard *g = guard_of(s);
    int rc;

    pthread_rwlock_rdlock(&g->lock);
    if (g->inner && guard_get_state(g) == ENDPOINT_OK && (!g->is_dir || dir_still_same(s, g)))
        rc = fresh ? store_put_new(g->inner, name, data, len)
                   : store_put(g->inner, name, data, len);
    else
        rc = offline_refusal(s);
    pthread_rwlock_unlock(&g->lock);
    return rc;
}

static int guard_put(struct store *s, const char *name, const void *data, size_t len)
{
    return guard_put_any(s, name, data, len, 0);
}

static int guard_put_new(struct store *s, const char *name, const void *data, size_t len)
{
    return guard_put_any(s, name, data, len, 1);
}

static int guard_get(struct store *s, const char *name, void **data, size_t *len)
{
    GUARDED(s, store_get(in_, name, data, len), -ENOENT);
}

static int guard_get_into(struct store *s, const char *name, void *buf, size_t len)
{
    GUARDED(s, in_->ops->get_into ? in_->ops->get_into(in_, name, buf, len)
                                  : get_into_by_get(in_, name, buf, len), -ENOENT);
}

static int guard_get_range(struct store *s, const char *name, uint64_t off, void *buf,
                           size_t len)
{
    GUARDED(s, store_get_range(in_, name, off, buf, len), -ENOENT);
}

static int guard_del(struct store *s, const char *name)
{
    GUARDED(s, store_del(in_, name), offline_refusal(s));
}

static int guard_stat(struct store *s, const char *name, uint64_t *size)
{
    GUARDED(s, store_stat(in_, name, size), -ENOENT);
}

static int guard_list(struct store *s, int (*cb)(void *, const char *, uint64_t), void *arg)
{
    GUARDED(s, store_list(in_, cb, arg), 0);
}

static int guard_sync(struct store *s)
{
    GUARDED(s, store_sync(in_), 0);
}

static int guard_space(struct store *s, struct store_space_info *out)
{
    GUARDED(s, store_space(in_, out), -ENOTSUP);
}

static void guard_close(struct store *s)
{
    struct guard *g = guard_of(s);

    store_close(g->inner);
    free(g->mark);
    pthread_rwlock_destroy(&g->lock);
    pthread_mutex_destroy(&g->slock);
    free(g);
    free(s->desc);
    free(s);
}

static const struct store_ops guard_ops = {
    .type = "guard",
    .put = guard_put,
    .get = guard_get,
    .del = guard_del,
    .stat = guard_stat,
    .list = guard_list,
    .sync = guard_sync,
    .space = guard_space,
    .close = guard_close,
    .get_into = guard_get_into,
    .get_range = guard_get_range,
    .put_new = guard_put_new,
};

/* ---------------------------------------------------------------- set */

int endpoint_open_store(const struct endpoint_conf *e, unsigned i, int create,
                        struct store **out)
{
    char label[32];

    if (e->type == ENDPOINT_DIR)
        return store_dir_open(e->path, create, out);
    snprintf(label, sizeof label, "endpoint %u", i);   /* 0-based, as pactfs status */
    struct store_s3_config sc = {
        .url = e->url, .bucket = e->bucket, .region = e->region,
        .access_key = e->access_key, .secret_key = e->secret_key,
        .ca_file = e->tls.ca_file, .cert_file = e->tls.cert_file, .key_file = e->tls.key_file,
        .label = label,
    };
    return store_s3_open(&sc, create, out);
}

static void meta_locked(struct endpoint_set *es, int on)
{
    if (es->meta_lock) {
        if (on)
            pthread_mutex_lock(es->meta_lock);
        else
            pthread_mutex_unlock(es->meta_lock);
    }
}

/* The marker of an online endpoint, read through the store in use. */
static enum endpoint_state check_online(struct endpoint_set *es, struct guard *g, char *why,
                                        size_t whylen)
{
    void *data = NULL;
    size_t len = 0;
    enum endpoint_state st = ENDPOINT_OK;
    int rc;

    pthread_rwlock_rdlock(&g->lock);
    rc = g->inner ? store_get(g->inner, ENDPOINT_MARK_OBJECT, &data, &len) : -EIO;
    pthread_rwlock_unlock(&g->lock);
    if (rc == 0 && g->mark && len == g->marklen && !memcmp(data, g->mark, len)) {
        free(data);
        return ENDPOINT_OK;      /* the very marker that verified */
    }
    if (rc == -ENOENT) {
        if (es->conf->endpoint_markers_required || g->had_marker) {
            snprintf(why, whylen, "its endpoint marker disappeared (emptied or replaced "
                     "endpoint?)");
            st = ENDPOINT_UNMARKED;
        }
    } else if (rc < 0) {
        snprintf(why, whylen, "its marker cannot be read: %s", pfs_err_msg());
        st = ENDPOINT_UNREACHABLE;
    } else {
        meta_locked(es, 1);
        st = endpoint_mark_verify(es->meta, es->conf->vault_id, es->conf->root_fingerprint,
                                  g->index, data, len, why, whylen);
        meta_locked(es, 0);
        if (st == ENDPOINT_OK) {
            free(g->mark);
            g->mark = data;
            g->marklen = len;
            g->had_marker = 1;
            data = NULL;
        }
    }
    free(data);
    return st;
}

/* An offline endpoint: open it afresh and check its marker; swap it in if
 * it is good.  Configuration errors (S3) come back negative at mount. */
static int try_online(struct endpoint_set *es, struct guard *g, int at_mount)
{
    const struct endpoint_conf *e = &es->conf->endpoints[g->index];
    struct store *fresh = NULL;
    enum endpoint_state st;
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    struct stat sb;
    char why[400] = "";
    int rc = endpoint_open_store(e, g->index, 0, &fresh);

    if (rc < 0) {
        if (at_mount && e->type != ENDPOINT_DIR && rc != -EHOSTUNREACH)
            return rc;
        snprintf(why, sizeof why, "%s", e->type == ENDPOINT_DIR && rc == -ENOENT
                 ? "its directory is missing" : pfs_err_msg());
        st = ENDPOINT_UNREACHABLE;
    } else {
        int need = es->conf->endpoint_markers_required || g->had_marker;

        meta_locked(es, 1);
        st = endpoint_mark_read(fresh, es->meta, es->conf->vault_id, es->conf->root_fingerprint,
                                g->index, why, sizeof why, &raw, &rawlen);
        meta_locked(es, 0);
        /* A directory renamed away and back is the one it was. */
        if (st == ENDPOINT_UNMARKED && e->type == ENDPOINT_DIR && g->have_id &&
            !es->conf->endpoint_markers_required && stat(e->path, &sb) == 0 &&
            sb.st_dev == g->dev && sb.st_ino == g->ino)
            need = 0;
        if (st == ENDPOINT_UNMARKED && !need) {
            st = ENDPOINT_OK;
            if (at_mount)
                log_info("endpoint %u (%s) holds no endpoint marker; this vault does not require "
                         "them yet (a sysadmin runs pactfs-admin endpoint-mark)", g->index,
                         fresh->desc);
        }
        if (st == ENDPOINT_OK && e->type == ENDPOINT_DIR && stat(e->path, &sb) < 0) {
            snprintf(why, sizeof why, "its directory is missing");
            st = ENDPOINT_UNREACHABLE;
        }
    }
    if (st != ENDPOINT_OK) {
        store_close(fresh);
        pthread_mutex_lock(&g->slock);
        guard_set_state(g, st);
        snprintf(g->why, sizeof g->why, "%s", why);
        pthread_mutex_unlock(&g->slock);
        return 0;
    }
    pthread_rwlock_wrlock(&g->lock);
    store_close(g->inner);
    g->inner = fresh;
    if (e->type == ENDPOINT_DIR) {
        g->dev = sb.st_dev;
        g->ino = sb.st_ino;
        g->have_id = 1;
    }
    if (raw) {
        free(g->mark);
        g->mark = raw;
        g->marklen = rawlen;
        g->had_marker = 1;
    }
    pthread_mutex_lock(&g->slock);
    guard_set_state(g, ENDPOINT_OK);
    g->why[0] = '\0';
    pthread_mutex_unlock(&g->slock);
    pthread_rwlock_unlock(&g->lock);
    return 0;
}

/* Close the store of an endpoint that went offline. */
static void take_offline(struct guard *g)
{
    pthread_rwlock_wrlock(&g->lock);
    store_close(g->inner);
    g->inner = NULL;
    pthread_rwlock_unlock(&g->lock);
}

static int guard_new(struct endpoint_set *es, unsigned i, struct store **out)
{
    const struct endpoint_conf *e = &es->conf->endpoints[i];
    struct store *s = calloc(1, sizeof *s);
    struct guard *g = calloc(1, sizeof *g);
    char desc[4200];
    pthread_rwlockattr_t ra;

    if (e->type == ENDPOINT_DIR)
        snprintf(desc, sizeof desc, "dir:%s", e->path);
    else
        snprintf(desc, sizeof desc, "s3:%s/%s", e->url, e->bucket);
    if (!s || !g || !(s->desc = strdup(desc))) {
        free(s);
        free(g);
        return -ENOMEM;
    }
    g->es = es;
    g->index = i;
    g->is_dir = e->type == ENDPOINT_DIR;
    g->state = g->reported = ENDPOINT_UNREACHABLE;
    snprintf(g->why, sizeof g->why, "not opened yet");
    pthread_rwlockattr_init(&ra);
    /* A swap must not wait behind an endless stream of operations. */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&g->lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&g->slock, NULL);
    s->ops = &guard_ops;
    s->impl = g;
    *out = s;
    return 0;
}

int endpoint_set_open(const struct pactfs_conf *c, struct meta *meta, unsigned *offline,
                      struct endpoint_set **out)
{
    struct endpoint_set *es = calloc(1, sizeof *es);
    int rc = 0;

    if (!es)
        return -ENOMEM;
    es->conf = c;
    es->meta = meta;
    es->n = c->n_endpoints;
    *offline = 0;
    for (unsigned i = 0; rc == 0 && i < es->n; i++) {
        rc = guard_new(es, i, &es->guards[i]);
        if (rc == 0)
            rc = try_online(es, guard_of(es->guards[i]), 1);
    }
    if (rc < 0) {
        char keep[512];

        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        endpoint_set_free(es);
        return pfs_err(rc, "%s", keep);
    }
    for (unsigned i = 0; i < es->n; i++) {
        struct guard *g = guard_of(es->guards[i]);

        g->reported = g->state;
        if (g->state != ENDPOINT_OK) {
            (*offline)++;
            log_warning("endpoint %u (%s) is offline: %s; reading with parity, writes store the "
                        "other fragments (degraded) and it is checked again every few seconds",
                        i, es->guards[i]->desc, g->why);
        }
    }
    *out = es;
    return 0;
}

void endpoint_set_free(struct endpoint_set *es)
{
    if (!es)
        return;
    for (unsigned i = 0; i < es->n; i++)
        store_close(es->guards[i]);
    free(es);
}

struct store *endpoint_set_store(struct endpoint_set *es, unsigned i)
{
    return i < es->n ? es->guards[i] : NULL;
}

void endpoint_set_meta_lock(struct endpoint_set *es, pthread_mutex_t *lock)
{
    es->meta_lock = lock;
}

int endpoint_set_markers_required(const struct endpoint_set *es)
{
    return es->conf->endpoint_markers_required;
}

enum endpoint_state endpoint_set_state(struct endpoint_set *es, unsigned i, char *why,
                                       size_t whylen)
{
    struct guard *g = guard_of(es->guards[i]);
    enum endpoint_state st;

    pthread_mutex_lock(&g->slock);
    st = g->state;
    snprintf(why, whylen, "%s", g->why);
    pthread_mutex_unlock(&g->slock);
    return st;
}

unsigned endpoint_set_check(struct endpoint_set *es, endpoint_change_cb cb, void *arg)
{
    unsigned changes = 0;

    for (unsigned i = 0; i < es->n; i++) {
        struct guard *g = guard_of(es->guards[i]);
        char why[400] = "";
        enum endpoint_state st = guard_get_state(g);

        if (st == ENDPOINT_OK && g->is_dir && !dir_still_same(es->guards[i], g))
            st = guard_get_state(g);
        if (st == ENDPOINT_OK) {
            st = check_online(es, g, why, sizeof why);
            if (st != ENDPOINT_OK)
                guard_lose(g, st, why);
        }
        if (st != ENDPOINT_OK) {
            if (st == ENDPOINT_REPLACED)
                g->had_marker = 1;   /* whatever is there now must prove itself */
            if (g->inner)
                take_offline(g);
            try_online(es, g, 0);
        }
        pthread_mutex_lock(&g->slock);
        st = g->state;
        snprintf(why, sizeof why, "%s", g->why);
        pthread_mutex_unlock(&g->slock);
        if (st != g->reported) {
            enum endpoint_state before = g->reported;

            g->reported = st;
            changes++;
            if (cb)
                cb(arg, i, before, st, why);
        }
    }
    return changes;
}
