#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "crypto.h"
#include "erasure.h"
#include "error.h"
#include "log.h"
#include "object.h"
#include "store.h"
#include "vec.h"
#include "workq.h"

/* Sealed chunk (docs/format-objects.md):
 *   u8 format (1) || u8 alg (1 = AES-256-GCM) || nonce(12) || ct || tag(16)
 * AD = "pactfs v1 chunk" || u8 format || u8 alg || u64 ino || u64 idx || u64 version
 * The sealed bytes are zero padded to k * fraglen and split into k data
 * fragments; m parity fragments follow.  Fragment i goes to endpoint
 * (rotation + i) % n as "<chunk id hex>.<i>".
 *
 * Packs: a chunk sealed to at most pack_max bytes is not written on its own.
 * Its fragments are appended, in memory, to the open pack, one part per
 * endpoint (fragment i to the part of endpoint (rotation + i) % n), and the
 * ref records the pack id and each fragment's offset.  object_layer_sync
 * writes each part as one object "<pack id hex>.p" and then syncs the
 * endpoints, so a batch of small files costs one object and one fdatasync
 * per endpoint instead of one per fragment, and the pack is durable before
 * the commit that points at it (rule 1 of docs/design-fuse.md).  Each
 * fragment is still checked by its SHA-256 in the ref. */

#define CHUNK_FORMAT 1
#define CHUNK_ALG_AES256GCM 1
#define CHUNK_HEADER_LEN 2
#define CHUNK_AD_LABEL "pactfs v1 chunk"
#define CHUNK_SEAL_OVERHEAD (CHUNK_HEADER_LEN + AEAD_OVERHEAD)
#define JOB_MSG_LEN 256
#define POOL_MAX_THREADS 32
/* An open pack takes chunks until it holds this many bytes (all parts) or
 * chunks; later small chunks go standalone until the next sync writes it. */
#define PACK_BYTES_MAX (8u << 20)
#define PACK_CHUNKS_MAX 4096
#define PACK_SUFFIX ".p"

/* ---- a small I/O pool: fragments of one chunk go to endpoints in parallel ---- */

enum io_op { IO_PUT, IO_PUT_NEW, IO_GET, IO_DEL, IO_SYNC };

struct io_job {
    enum io_op op;
    struct store *store;
    char name[OBJECT_NAME_MAX];
    const uint8_t *src;       /* IO_PUT, IO_PUT_NEW: bytes to write */
    uint8_t *dst;             /* IO_GET: where good bytes go (NULL: check only) */
    size_t len;               /* expected fragment length */
    const uint8_t *want_sum;  /* IO_GET: expected SHA-256, or NULL: not checked
                                 here (object_get_chunk's first try, which
                                 the chunk's GCM tag checks instead) */
    int ranged;               /* IO_GET: fraglen bytes at off of pack */
    uint64_t off;
    char pack[OBJECT_NAME_MAX];
    uint8_t *sum_out;         /* IO_PUT: SHA-256 of what was written */
    int rc;
    char msg[JOB_MSG_LEN];    /* pfs_err text: the slot is per thread */
    struct object_layer *ol;  /* for the endpoint's health figures */
    unsigned ep;              /* endpoint index */
};

struct object_layer {
    struct store **stores;
    unsigned n, k, m;
    unsigned write_min;       /* fewest fragments a put must store */
    pthread_mutex_t stats_lock;              /* stats, and id_lead below */
    struct object_endpoint_stats *stats;   /* n of them */
    struct ec_codec *codec;
    struct workq *pool;       /* fragments of one chunk in parallel */
    uint8_t id_lead;          /* first byte of new chunk ids (stats_lock) */
    unsigned id_lead_left;    /* ids still to take it */
    size_t pack_max;          /* chunks sealed to at most this are packed */
    pthread_mutex_t pack_lock;  /* open, failed */
    struct pack *open;        /* being filled by puts */
    struct pack *failed;      /* written in part: retried by the next sync */
    pthread_mutex_t sync_lock;  /* one object_layer_sync at a time */
    object_lost_fn lost_cb;   /* a pack part lost at a tolerant sync */
    void *lost_arg;
};

/* What a pack remembers of each chunk, to report a lost part's fragments. */
struct pack_chunk {
    uint64_t ino, idx;
    struct chunk_ref ref;
};

/* A pack being filled or written: one part (growing buffer) per endpoint. */
struct pack_part {
    uint8_t *buf;
    size_t len, cap;
    int written;              /* stored on its endpoint */
    int tried;                /* a put was attempted: retry with an atomic put */
};

struct pack {
    uint8_t id[PACK_ID_LEN];
    size_t bytes;             /* all parts */
    unsigned nchunks;
    size_t capchunks;
    struct pack_chunk *chunks;  /* nchunks of them (grown as needed) */
    struct pack *next;
    struct pack_part parts[]; /* n */
};

/* New chunk ids share their first byte for ID_LEAD_RUN ids in a row: it names
 * the fan-out directory of every fragment of the chunk ("<id hex>.<i>", see
 * store_dir.c), so the fragments of the files one batch commits land in one
 * directory per endpoint and the batch's sync fsyncs that one instead of one
 * per file.  The byte is drawn afresh after each run, so the directories
 * still fill evenly; the other 15 bytes stay random (120 bits: unique). */
#define ID_LEAD_RUN 128

/* Read straight into the destination when the backend can. */
static int job_get_into(struct io_job *j)
{
    uint8_t sum[SHA256_LEN];
    int rc = j->store->ops->get_into(j->store, j->name, j->dst, j->len);

    if (rc || !j->want_sum)
        return rc;
    sha256(j->dst, j->len, sum);
    if (crypto_memcmp(sum, j->want_sum, SHA256_LEN) != 0)
        return pfs_err(-EBADMSG, "endpoint %s: fragment %s fails its checksum",
                       j->store->desc, j->name);
    return 0;
}

static int job_get(struct io_job *j)
{
    void *data = NULL;
    size_t got = 0;
    uint8_t sum[SHA256_LEN];
    int rc = store_get(j->store, j->name, &data, &got);

    if (rc)
        return rc;
    if (got != j->len) {
        rc = pfs_err(-EBADMSG, "endpoint %s: fragment %s has %zu bytes, expected %zu",
                     j->store->desc, j->name, got, j->len);
    } else {
        if (j->want_sum)
            sha256(data, got, sum);
        if (j->want_sum && crypto_memcmp(sum, j->want_sum, SHA256_LEN) != 0)
            rc = pfs_err(-EBADMSG, "endpoint %s: fragment %s fails its checksum",
                         j->store->desc, j->name);
        else if (j->dst)
            memcpy(j->dst, data, got);
    }
    free(data);
    return rc;
}

/* A packed fragment: fraglen bytes at off of the pack's part; a fragment
 * that is missing or bad there may have been repaired as a standalone
 * object (j->name), which is tried next. */
static int job_get_packed(struct io_job *j)
{
    uint8_t sum[SHA256_LEN], *tmp = NULL, *dst = j->dst;
    int rc;

    if (!dst && !(dst = tmp = malloc(j->len ? j->len : 1)))
        return pfs_err(-ENOMEM, "out of memory reading fragment %s", j->name);
    rc = store_get_range(j->store, j->pack, j->off, dst, j->len);
    if (rc == 0 && j->want_sum) {
        sha256(dst, j->len, sum);
        if (crypto_memcmp(sum, j->want_sum, SHA256_LEN) != 0)
            rc = pfs_err(-EBADMSG, "endpoint %s: fragment %s (at %llu in pack %s) fails its "
                         "checksum", j->store->desc, j->name, (unsigned long long)j->off,
                         j->pack);
    } else if (rc == -ENOENT) {
        pfs_err(rc, "endpoint %s: fragment %s missing (its pack %s is gone)", j->store->desc,
                j->name, j->pack);
    }
    free(tmp);
    if (rc == 0 || rc == -ENOMEM)
        return rc;
    char why[JOB_MSG_LEN];
    snprintf(why, sizeof why, "%s", pfs_err_msg());
    int alt = j->dst && j->store->ops->get_into ? job_get_into(j) : job_get(j);
    if (alt == -ENOENT)   /* never repaired: the pack's problem is the one to tell */
        return pfs_err(rc, "%s", why);
    return alt;
}

static int64_t now_us(clockid_t clk)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* What the status shows of each endpoint: the last operation's outcome and
 * latency, counts, and the last error. */
static void job_account(struct io_job *j, int64_t latency_us)
{
    struct object_endpoint_stats *st;
    /* A missing fragment is the fragment's problem, not the endpoint's. */
    int failed = j->rc && !(j->op == IO_GET && j->rc == -ENOENT);

    if (!j->ol)
        return;
    st = &j->ol->stats[j->ep];
    pthread_mutex_lock(&j->ol->stats_lock);
    st->ops++;
    st->last_ok = !failed;
    if (j->op == IO_PUT || j->op == IO_PUT_NEW)   /* only a put proves it takes data */
        st->put_failing = failed;
    if (failed) {
        st->errors++;
        st->last_error_time = now_us(CLOCK_REALTIME) / 1000000;
        snprintf(st->last_error, sizeof st->last_error, "%s", j->msg);
    } else {
        st->last_latency_us = (uint64_t)latency_us;
    }
    pthread_mutex_unlock(&j->ol->stats_lock);
}

static void job_run(struct io_job *j)
{
    int64_t t0 = now_us(CLOCK_MONOTONIC);

    switch (j->op) {
    case IO_PUT:
    case IO_PUT_NEW:   /* a fresh chunk id: no temp name and rename needed */
        if (j->sum_out)
            sha256(j->src, j->len, j->sum_out);
        j->rc = j->op == IO_PUT_NEW ? store_put_new(j->store, j->name, j->src, j->len)
                                    : store_put(j->store, j->name, j->src, j->len);
        break;
    case IO_GET:
        if (j->ranged)
            j->rc = job_get_packed(j);
        else
            j->rc = j->dst && j->store->ops->get_into ? job_get_into(j) : job_get(j);
        break;
    case IO_DEL:
        j->rc = store_del(j->store, j->name);
        if (j->rc == -ENOENT)
            j->rc = 0;
        break;
    case IO_SYNC:
        j->rc = store_sync(j->store);
        break;
    }
    if (j->rc)
        snprintf(j->msg, sizeof j->msg, "%s", pfs_err_msg());
    job_account(j, now_us(CLOCK_MONOTONIC) - t0);
}

static void run_job_at(void *arg, unsigned i)
{
    job_run(&((struct io_job *)arg)[i]);
}

/* Run jobs[0..count-1] in parallel (the pool and the caller); returns when
 * all are done. */
static void run_jobs(struct object_layer *ol, struct io_job *jobs, unsigned count)
{
    workq_for(ol->pool, count, run_job_at, jobs);
}

/* ---- layer lifecycle ---- */

static int pool_start(struct object_layer *ol)
{
    unsigned want = 2 * ol->n;

    return workq_new(want < POOL_MAX_THREADS ? want : POOL_MAX_THREADS, "storage I/O",
                     &ol->pool);
}

int object_layer_new(struct store **stores, unsigned n, unsigned k, unsigned m,
                     struct object_layer **out)
{
    struct object_layer *ol;
    int rc;

    *out = NULL;
    if (k < 1 || n < k + m || n > 255)
        return pfs_err(-EINVAL, "storage layout k=%u m=%u needs at least %u endpoints, "
                       "have %u", k, m, k + m, n);
    ol = calloc(1, sizeof *ol);
    if (!ol)
        return pfs_err(-ENOMEM, "out of memory creating the object layer");
    ol->stores = calloc(n, sizeof *ol->stores);
    if (!ol->stores) {
        free(ol);
        return pfs_err(-ENOMEM, "out of memory creating the object layer");
    }
    memcpy(ol->stores, stores, n * sizeof *stores);
    ol->n = n;
    ol->k = k;
    ol->m = m;
    ol->write_min = k + m;
    ol->stats = calloc(n, sizeof *ol->stats);
    if (!ol->stats) {
        free(ol->stores);
        free(ol);
        return pfs_err(-ENOMEM, "out of memory creating the object layer");
    }
    pthread_mutex_init(&ol->stats_lock, NULL);
    pthread_mutex_init(&ol->pack_lock, NULL);
    pthread_mutex_init(&ol->sync_lock, NULL);
    rc = ec_new(k, m, &ol->codec);
    if (rc) {
        pthread_mutex_destroy(&ol->sync_lock);
        pthread_mutex_destroy(&ol->pack_lock);
        pthread_mutex_destroy(&ol->stats_lock);
        free(ol->stats);
        free(ol->stores);
        free(ol);
        return rc;
    }
    rc = pool_start(ol);
    if (rc) {
        object_layer_free(ol);
        return rc;
    }
    *out = ol;
    return 0;
}

static void pack_free(struct object_layer *ol, struct pack *p)
{
    if (!p)
        return;
    for (unsigned i = 0; i < ol->n; i++)
        free(p->parts[i].buf);
    free(p->chunks);
    free(p);
}

static void pack_list_free(struct object_layer *ol, struct pack *p)
{
    while (p) {
        struct pack *next = p->next;
        pack_free(ol, p);
        p = next;
    }
}

void object_layer_free(struct object_layer *ol)
{
    if (!ol)
        return;
    workq_free(ol->pool);
    ec_free(ol->codec);
    unsigned lost = ol->open ? ol->open->nchunks : 0;
    for (struct pack *p = ol->failed; p; p = p->next)
        lost += p->nchunks;
    if (lost)   /* their commits never happened: nothing points at them */
        log_warning("%u small chunks put but never made durable are dropped", lost);
    pack_list_free(ol, ol->open);
    pack_list_free(ol, ol->failed);
    pthread_mutex_destroy(&ol->sync_lock);
    pthread_mutex_destroy(&ol->pack_lock);
    pthread_mutex_destroy(&ol->stats_lock);
    free(ol->stats);
    free(ol->stores);
    free(ol);
}

int object_layer_set_write_min(struct object_layer *ol, unsigned min)
{
    if (min < ol->k || min > ol->k + ol->m)
        return pfs_err(-EINVAL, "a write needs between k = %u and k + m = %u fragments, "
                       "not %u", ol->k, ol->k + ol->m, min);
    ol->write_min = min;
    return 0;
}

unsigned object_layer_write_min(const struct object_layer *ol)
{
    return ol->write_min;
}

void object_layer_set_lost_cb(struct object_layer *ol, object_lost_fn fn, void *arg)
{
    ol->lost_cb = fn;
    ol->lost_arg = arg;
}

int object_layer_set_pack_max(struct object_layer *ol, size_t max)
{
    if (max > PACK_MAX_LIMIT)
        return pfs_err(-EINVAL, "pack_max = %zu is above the limit of %d bytes", max,
                       PACK_MAX_LIMIT);
    ol->pack_max = max;
    return 0;
}

void object_layer_endpoint_stats(struct object_layer *ol, unsigned i,
                                 struct object_endpoint_stats *out)
{
    memset(out, 0, sizeof *out);
    if (i >= ol->n)
        return;
    pthread_mutex_lock(&ol->stats_lock);
    *out = ol->stats[i];
    pthread_mutex_unlock(&ol->stats_lock);
}

unsigned object_layer_nstores(const struct object_layer *ol)
{
    return ol->n;
}

struct store *object_layer_store(const struct object_layer *ol, unsigned i)
{
    return i < ol->n ? ol->stores[i] : NULL;
}

void object_fragment_name(const uint8_t chunk_id[CHUNK_ID_LEN], unsigned frag, char *out)
{
    char hex[2 * CHUNK_ID_LEN + 1];

    hex_encode(chunk_id, CHUNK_ID_LEN, hex);
    snprintf(out, OBJECT_NAME_MAX, "%s.%u", hex, frag);
}

void object_pack_name(const uint8_t pack[PACK_ID_LEN], char *out)
{
    char hex[2 * PACK_ID_LEN + 1];

    hex_encode(pack, PACK_ID_LEN, hex);
    snprintf(out, OBJECT_NAME_MAX, "%s" PACK_SUFFIX, hex);
}

uint32_t object_pack_time(const uint8_t pack[PACK_ID_LEN])
{
    const uint8_t *t = pack + PACK_ID_LEN - 4;

    return (uint32_t)t[0] << 24 | (uint32_t)t[1] << 16 | (uint32_t)t[2] << 8 | t[3];
}

unsigned object_fragment_store(const struct object_layer *ol, const struct chunk_ref *ref,
                               unsigned frag)
{
    return (ref->rotation + frag) % ol->n;
}

/* ---- helpers shared by put and get ---- */

static int chunk_ad(uint64_t ino, uint64_t idx, uint64_t version, struct wbuf *ad)
{
    wbuf_init(ad);
    wbuf_put_bytes(ad, CHUNK_AD_LABEL, strlen(CHUNK_AD_LABEL));
    wbuf_put_u8(ad, CHUNK_FORMAT);
    wbuf_put_u8(ad, CHUNK_ALG_AES256GCM);
    wbuf_put_u64(ad, ino);
    wbuf_put_u64(ad, idx);
    wbuf_put_u64(ad, version);
    if (wbuf_status(ad)) {
        wbuf_free(ad);
        return pfs_err(-ENOMEM, "out of memory sealing a chunk");
    }
    return 0;
}

static void chunk_id_hex(const struct chunk_ref *ref, char *out)
{
    hex_encode(ref->chunk_id, CHUNK_ID_LEN, out);
}

/* The codec for a ref: the layer's, or a temporary one when the chunk was
 * written under another (k, m). */
static int codec_for(struct object_layer *ol, const struct chunk_ref *ref,
                     struct ec_codec **c)
{
    if (ref->k == ol->k && ref->m == ol->m) {
        *c = ol->codec;
        return 0;
    }
    return ec_new(ref->k, ref->m, c);
}

static void codec_release(struct object_layer *ol, struct ec_codec *c)
{
    if (c != ol->codec)
        ec_free(c);
}

/* The metadata store is untrusted input: check a ref before using it. */
static int check_ref(const struct object_layer *ol, const struct chunk_ref *ref)
{
    char id[2 * CHUNK_ID_LEN + 1];

    chunk_id_hex(ref, id);
    if (ref->k < 1 || (unsigned)ref->k + ref->m > EC_MAX_FRAGS ||
        (unsigned)ref->k + ref->m > ol->n || ref->rotation >= ol->n)
        return pfs_err(-EIO, "chunk %s: bad coding in metadata (k=%u m=%u rotation=%u, "
                       "%u endpoints)", id, ref->k, ref->m, ref->rotation, ol->n);
    if (ref->plain_len == 0 ||
        (uint64_t)ref->plain_len + CHUNK_SEAL_OVERHEAD != ref->sealed_len)
        return pfs_err(-EIO, "chunk %s: inconsistent lengths in metadata (plain %u, "
                       "sealed %u)", id, ref->plain_len, ref->sealed_len);
    if (ref->packed && ref->sealed_len > PACK_MAX_LIMIT)
        return pfs_err(-EIO, "chunk %s: a packed chunk of %u bytes in metadata (packs hold "
                       "chunks up to %d)", id, ref->sealed_len, PACK_MAX_LIMIT);
    return 0;
}

static void fill_job(struct io_job *j, enum io_op op, struct object_layer *ol,
                     const struct chunk_ref *ref, unsigned frag, size_t len)
{
    memset(j, 0, sizeof *j);
    j->op = op;
    j->ol = ol;
    j->ep = object_fragment_store(ol, ref, frag);
    j->store = ol->stores[j->ep];
    object_fragment_name(ref->chunk_id, frag, j->name);
    j->len = len;
    if (op == IO_GET && ref->packed) {
        j->ranged = 1;
        j->off = ref->pack_offs[frag];
        object_pack_name(ref->pack, j->pack);
    }
}

/* ---- put ---- */

static int new_chunk_id(struct object_layer *ol, uint8_t id[CHUNK_ID_LEN])
{
    uint8_t lead;
    int rc = crypto_random(id, CHUNK_ID_LEN);

    if (rc)
        return rc;
    pthread_mutex_lock(&ol->stats_lock);
    if (ol->id_lead_left == 0) {
        ol->id_lead = id[0];   /* random: this id starts the next run */
        ol->id_lead_left = ID_LEAD_RUN;
    }
    ol->id_lead_left--;
    lead = ol->id_lead;
    pthread_mutex_unlock(&ol->stats_lock);
    id[0] = lead;
    return 0;
}

static int seal_into(const uint8_t dek[32], uint64_t ino, uint64_t idx, uint64_t version,
                     const void *plain, size_t len, uint8_t *out)
{
    struct wbuf ad;
    int rc = chunk_ad(ino, idx, version, &ad);

    if (rc)
        return rc;
    out[0] = CHUNK_FORMAT;
    out[1] = CHUNK_ALG_AES256GCM;
    rc = aead_seal(dek, ad.data, ad.len, plain, len, out + CHUNK_HEADER_LEN);
    wbuf_free(&ad);
    return rc;
}

static void delete_fragments(struct object_layer *ol, const struct chunk_ref *ref,
                             unsigned nfrags)
{
    struct io_job jobs[EC_MAX_FRAGS];

    for (unsigned i = 0; i < nfrags; i++)
        fill_job(&jobs[i], IO_DEL, ol, ref, i, 0);
    run_jobs(ol, jobs, nfrags);
}

static int new_pack(struct object_layer *ol, struct pack **out)
{
    struct pack *p = calloc(1, sizeof *p + ol->n * sizeof p->parts[0]);
    uint32_t now = (uint32_t)time(NULL);
    int rc;

    if (!p)
        return pfs_err(-ENOMEM, "out of memory starting a pack");
    rc = crypto_random(p->id, PACK_ID_LEN - 4);
    if (rc) {
        free(p);
        return rc;
    }
    for (int i = 0; i < 4; i++)
        p->id[PACK_ID_LEN - 1 - i] = (uint8_t)(now >> (8 * i));
    *out = p;
    return 0;
}

static int part_append(struct pack_part *part, const uint8_t *src, size_t len, uint32_t *off)
{
    if (part->len + len > part->cap) {
        size_t cap = part->cap ? part->cap : 64 * 1024;
        while (cap < part->len + len)
            cap *= 2;
        uint8_t *b = realloc(part->buf, cap);
        if (!b)
            return pfs_err(-ENOMEM, "out of memory filling a pack");
        part->buf = b;
        part->cap = cap;
    }
    memcpy(part->buf + part->len, src, len);
    *off = (uint32_t)part->len;
    part->len += len;
    return 0;
}

/* Any endpoint whose last put failed: then puts go standalone, so a
 * degraded write records exactly which fragments are missing. */
static int any_put_failing(struct object_layer *ol)
{
    int failing = 0;

    pthread_mutex_lock(&ol->stats_lock);
    for (unsigned i = 0; i < ol->n && !failing; i++)
        failing = ol->stats[i].put_failing;
    pthread_mutex_unlock(&ol->stats_lock);
    return failing;
}

/* Append the coded fragments of out to the open pack: 1 if packed, 0 if
 * the chunk is to go standalone (not small, no room, an endpoint failing or
 * a pack waiting for its retry), or -errno. */
static int pack_chunk(struct object_layer *ol, uint64_t ino, uint64_t idx,
                      struct chunk_ref *out, uint8_t **frags, size_t fraglen)
{
    unsigned nf = out->k + out->m;
    int rc = 0;

    if (out->sealed_len > ol->pack_max || any_put_failing(ol))
        return 0;
    pthread_mutex_lock(&ol->pack_lock);
    if (ol->failed || (ol->open && (ol->open->bytes + nf * fraglen > PACK_BYTES_MAX ||
                                    ol->open->nchunks == PACK_CHUNKS_MAX))) {
        pthread_mutex_unlock(&ol->pack_lock);
        return 0;
    }
    if (!ol->open)
        rc = new_pack(ol, &ol->open);
    if (rc == 0 && vec_reserve(&ol->open->chunks, &ol->open->capchunks,
                               ol->open->nchunks + 1, sizeof *ol->open->chunks, 64) < 0)
        rc = pfs_err(-ENOMEM, "out of memory filling a pack");
    for (unsigned i = 0; rc == 0 && i < nf; i++) {
        struct pack_part *part = &ol->open->parts[object_fragment_store(ol, out, i)];
        rc = part_append(part, frags[i], fraglen, &out->pack_offs[i]);
    }
    if (rc == 0) {
        /* (a failed append leaves dead bytes in a part, named by no ref) */
        ol->open->bytes += nf * fraglen;
        memcpy(out->pack, ol->open->id, PACK_ID_LEN);
        out->packed = 1;
        struct pack_chunk *pc = &ol->open->chunks[ol->open->nchunks++];
        pc->ino = ino;
        pc->idx = idx;
        pc->ref = *out;
    }
    pthread_mutex_unlock(&ol->pack_lock);
    return rc ? rc : 1;
}

int object_put_chunk(struct object_layer *ol, const uint8_t dek[32], uint64_t ino,
                     uint64_t idx, uint64_t version, const void *plain, size_t len,
                     struct chunk_ref *out)
{
    return object_put_chunk_degraded(ol, dek, ino, idx, version, plain, len, out, NULL);
}

int object_put_chunk_degraded(struct object_layer *ol, const uint8_t dek[32], uint64_t ino,
                              uint64_t idx, uint64_t version, const void *plain, size_t len,
                              struct chunk_ref *out, uint32_t *missing)
{
    unsigned nf = ol->k + ol->m;
    size_t sealed_len, fraglen;
    uint8_t *buf, *frags[EC_MAX_FRAGS];
    struct io_job jobs[EC_MAX_FRAGS];
    int rc;

    /* A hole or an empty tail is metadata; a chunk always holds bytes. */
    if (len == 0 || len > UINT32_MAX - CHUNK_SEAL_OVERHEAD)
        return pfs_err(-EINVAL, "chunk of %zu bytes cannot be stored (1 to 4 GiB)", len);
    memset(out, 0, sizeof *out);
    sealed_len = len + CHUNK_SEAL_OVERHEAD;
    fraglen = ec_fragment_len(ol->codec, sealed_len);
    buf = malloc(nf * fraglen);
    if (!buf)
        return pfs_err(-ENOMEM, "out of memory sealing a chunk of %zu bytes", len);
    rc = seal_into(dek, ino, idx, version, plain, len, buf);
    if (rc == 0)
        rc = new_chunk_id(ol, out->chunk_id);
    if (rc) {
        free(buf);
        return rc;
    }
    memset(buf + sealed_len, 0, ol->k * fraglen - sealed_len);
    for (unsigned i = 0; i < nf; i++)
        frags[i] = buf + i * fraglen;
    ec_encode(ol->codec, fraglen, frags);

    out->version = version;
    out->plain_len = (uint32_t)len;
    out->sealed_len = (uint32_t)sealed_len;
    out->k = (uint8_t)ol->k;
    out->m = (uint8_t)ol->m;
    out->rotation = (uint8_t)(idx % ol->n);
    /* small: the sums now, in this thread (a pack has no per-fragment job);
     * a small chunk that is not packed after all keeps them */
    int summed = sealed_len <= ol->pack_max;
    for (unsigned i = 0; summed && i < nf; i++)
        sha256(frags[i], fraglen, out->sums[i]);
    rc = pack_chunk(ol, ino, idx, out, frags, fraglen);
    if (rc != 0) {
        free(buf);
        if (rc > 0 && missing)
            *missing = 0;
        return rc < 0 ? rc : 0;
    }
    for (unsigned i = 0; i < nf; i++) {
        fill_job(&jobs[i], IO_PUT_NEW, ol, out, i, fraglen);
        jobs[i].src = frags[i];
        jobs[i].sum_out = summed ? NULL : out->sums[i];
    }
    run_jobs(ol, jobs, nf);
    free(buf);
    uint32_t failed = 0;
    unsigned stored = 0, first = nf;
    for (unsigned i = 0; i < nf; i++) {
        if (jobs[i].rc) {
            failed |= 1u << i;
            if (first == nf)
                first = i;
        } else {
            stored++;
        }
    }
    if (failed && (!missing || stored < ol->write_min)) {
        /* Leave no orphan fragments of a chunk nobody will reference. */
        delete_fragments(ol, out, nf);
        if (!missing)
            return pfs_err(jobs[first].rc, "%s", jobs[first].msg);
        return pfs_err(-EIO, "only %u of %u fragments could be stored and this vault "
                       "needs %u (coding.min_write_fragments); first problem: %s", stored,
                       nf, ol->write_min, jobs[first].msg);
    }
    if (missing) {
        *missing = failed;
        if (failed)   /* the caller logs which endpoint and why */
            pfs_err(jobs[first].rc, "%s", jobs[first].msg);
    }
    return 0;
}

/* ---- get ---- */

/* Fetch fragments [from, to) into frags, checking size and (with check_sums)
 * sum; sets present[] and bad bits. */
static void fetch_fragments(struct object_layer *ol, const struct chunk_ref *ref,
                            unsigned from, unsigned to, size_t fraglen, uint8_t **frags,
                            int check_sums, uint8_t *present, uint32_t *bad,
                            char *first_msg)
{
    struct io_job jobs[EC_MAX_FRAGS];
    unsigned count = to - from;

    for (unsigned i = 0; i < count; i++) {
        fill_job(&jobs[i], IO_GET, ol, ref, from + i, fraglen);
        jobs[i].dst = frags ? frags[from + i] : NULL;
        jobs[i].want_sum = check_sums ? ref->sums[from + i] : NULL;
    }
    run_jobs(ol, jobs, count);
    for (unsigned i = 0; i < count; i++) {
        present[from + i] = jobs[i].rc == 0;
        if (jobs[i].rc) {
            *bad |= 1u << (from + i);
            if (!first_msg[0])
                snprintf(first_msg, JOB_MSG_LEN, "%s", jobs[i].msg);
        }
    }
}

static unsigned count_present(const uint8_t *present, unsigned n)
{
    unsigned c = 0;

    for (unsigned i = 0; i < n; i++)
        c += present[i] != 0;
    return c;
}

/* Data fragments that came unhashed, checked against their sums now; one
 * that fails is fetched again the checked way (for a packed fragment that
 * tries its standalone copy, where a repair put it). */
static void check_fetched(struct object_layer *ol, const struct chunk_ref *ref,
                          uint8_t **frags, size_t fraglen, uint8_t *present, uint32_t *bad,
                          char *first_msg)
{
    uint8_t sum[SHA256_LEN];

    for (unsigned i = 0; i < ref->k; i++) {
        if (!present[i])
            continue;
        sha256(frags[i], fraglen, sum);
        if (crypto_memcmp(sum, ref->sums[i], SHA256_LEN) == 0)
            continue;
        present[i] = 0;
        fetch_fragments(ol, ref, i, i + 1, fraglen, frags, 1, present, bad, first_msg);
    }
}

/* Gather the fragments of ref into buf ((k+m) * fraglen bytes, data first)
 * and rebuild whatever is missing.  Data fragments are fetched first; parity
 * only when one of them is bad (or always, with all_frags).  check_data 0:
 * the data fragments are fetched unhashed, for a caller whose GCM tag
 * checks them; *unchecked then says that all came and none was hashed (if
 * one did not come, the others are hashed before parity is fetched). */
static int gather_chunk(struct object_layer *ol, const struct chunk_ref *ref,
                        struct ec_codec *codec, size_t fraglen, uint8_t *buf,
                        int all_frags, int check_data, uint32_t *bad, int *unchecked)
{
    unsigned k = ref->k, nf = ref->k + ref->m, good;
    uint8_t *frags[EC_MAX_FRAGS], present[EC_MAX_FRAGS] = {0};
    char first_msg[JOB_MSG_LEN] = "", id[2 * CHUNK_ID_LEN + 1];
    int rc;

    for (unsigned i = 0; i < nf; i++)
        frags[i] = buf + i * fraglen;
    *bad = 0;
    if (unchecked)
        *unchecked = 0;
    check_data = check_data || all_frags;
    fetch_fragments(ol, ref, 0, all_frags ? nf : k, fraglen, frags, check_data, present, bad,
                    first_msg);
    if (!all_frags && *bad == 0) {
        if (unchecked)
            *unchecked = !check_data;
        return 0;   /* fast path: the data fragments are the sealed chunk */
    }
    if (!check_data)
        check_fetched(ol, ref, frags, fraglen, present, bad, first_msg);
    if (!all_frags)
        fetch_fragments(ol, ref, k, nf, fraglen, frags, 1, present, bad, first_msg);
    good = count_present(present, nf);
    chunk_id_hex(ref, id);
    if (good < k)
        return pfs_err(-EIO, "chunk %s: only %u of %u fragments good, %u needed (first "
                       "problem: %s); run pactfs-fsck", id, good, nf, k, first_msg);
    rc = ec_decode(codec, fraglen, frags, present);
    if (rc)
        return pfs_err(rc, "chunk %s: cannot rebuild from %u good fragments: %s", id, good,
                       pfs_err_msg());
    return 0;
}

static int open_sealed(const uint8_t dek[32], uint64_t ino, uint64_t idx,
                       const struct chunk_ref *ref, const uint8_t *sealed, void *plain)
{
    struct rbuf r;
    uint8_t format = 0, alg = 0;
    const uint8_t *box;
    struct wbuf ad;
    char id[2 * CHUNK_ID_LEN + 1];
    int rc;

    chunk_id_hex(ref, id);
    rbuf_init(&r, sealed, ref->sealed_len);
    rbuf_get_u8(&r, &format);
    rbuf_get_u8(&r, &alg);
    rbuf_get_ref(&r, &box, ref->sealed_len - CHUNK_HEADER_LEN);
    if (rbuf_end(&r) || format != CHUNK_FORMAT || alg != CHUNK_ALG_AES256GCM)
        return pfs_err(-EIO, "chunk %s: unknown format %u / algorithm %u; a newer pactfs "
                       "wrote it, or it is damaged", id, format, alg);
    rc = chunk_ad(ino, idx, ref->version, &ad);
    if (rc)
        return rc;
    rc = aead_open(dek, ad.data, ad.len, box, ref->sealed_len - CHUNK_HEADER_LEN, plain);
    wbuf_free(&ad);
    if (rc) {
        /* GCM may have written unauthenticated bytes: never hand them out. */
        memset(plain, 0, ref->plain_len);
        return pfs_err(-EIO, "chunk %s (version %llu): authentication failed: wrong key, or "
                       "fragments of another file, offset or version", id,
                       (unsigned long long)ref->version);
    }
    return 0;
}

int object_get_chunk(struct object_layer *ol, const uint8_t dek[32], uint64_t ino,
                     uint64_t idx, const struct chunk_ref *ref, void *plain,
                     uint32_t *bad_mask)
{
    struct ec_codec *codec;
    size_t fraglen;
    uint8_t *buf;
    uint32_t bad = 0;
    int rc = check_ref(ol, ref);

    if (bad_mask)
        *bad_mask = 0;
    if (rc)
        return rc;
    rc = codec_for(ol, ref, &codec);
    if (rc)
        return rc;
    fraglen = ec_fragment_len(codec, ref->sealed_len);
    buf = malloc((size_t)(ref->k + ref->m) * fraglen);
    if (!buf) {
        codec_release(ol, codec);
        return pfs_err(-ENOMEM, "out of memory reading a chunk");
    }
    /* The data fragments as they come, unhashed: the chunk's GCM tag (under
     * this file's DEK, bound to ino, idx and version) authenticates every
     * byte of them, and hashing them too was a third of a sequential
     * read's CPU.  A tag that fails over unhashed fragments sends the read
     * the checked way: fetched again with their recorded sums, which name
     * a bad fragment (bad_mask: the caller has it repaired), parity
     * rebuilding it. */
    int unchecked = 0;
    rc = gather_chunk(ol, ref, codec, fraglen, buf, 0, 0, &bad, &unchecked);
    if (rc == 0)
        rc = open_sealed(dek, ino, idx, ref, buf, plain);
    if (rc && unchecked) {
        rc = gather_chunk(ol, ref, codec, fraglen, buf, 0, 1, &bad, NULL);
        if (rc == 0)
            rc = open_sealed(dek, ino, idx, ref, buf, plain);
    }
    free(buf);
    codec_release(ol, codec);
    if (bad_mask)
        *bad_mask = bad;
    return rc;
}

/* ---- verify, repair, delete, sync: no key involved ---- */

int object_verify_chunk(struct object_layer *ol, const struct chunk_ref *ref,
                        uint32_t *bad_mask)
{
    uint8_t present[EC_MAX_FRAGS] = {0};
    char first_msg[JOB_MSG_LEN] = "", id[2 * CHUNK_ID_LEN + 1];
    struct ec_codec *codec;
    size_t fraglen;
    unsigned nf = ref->k + ref->m, good;
    uint32_t bad = 0;
    int rc = check_ref(ol, ref);

    *bad_mask = 0;
    if (rc)
        return rc;
    rc = codec_for(ol, ref, &codec);
    if (rc)
        return rc;
    fraglen = ec_fragment_len(codec, ref->sealed_len);
    codec_release(ol, codec);
    fetch_fragments(ol, ref, 0, nf, fraglen, NULL, 1, present, &bad, first_msg);
    *bad_mask = bad;
    good = count_present(present, nf);
    chunk_id_hex(ref, id);
    if (good < ref->k)
        return pfs_err(-EIO, "chunk %s: only %u of %u fragments good, %u needed (first "
                       "problem: %s); it cannot be repaired", id, good, nf, ref->k, first_msg);
    return 0;
}

static int write_back(struct object_layer *ol, const struct chunk_ref *ref, uint8_t **frags,
                      size_t fraglen, uint32_t todo)
{
    struct io_job jobs[EC_MAX_FRAGS];
    uint8_t sum[SHA256_LEN];
    unsigned count = 0;
    char id[2 * CHUNK_ID_LEN + 1];

    chunk_id_hex(ref, id);
    for (unsigned i = 0; i < (unsigned)ref->k + ref->m; i++) {
        if (!(todo & (1u << i)))
            continue;
        /* A rebuilt fragment must match the recorded sum before it is written. */
        sha256(frags[i], fraglen, sum);
        if (crypto_memcmp(sum, ref->sums[i], SHA256_LEN) != 0)
            return pfs_err(-EIO, "chunk %s: rebuilt fragment %u does not match its "
                           "recorded checksum; metadata and fragments disagree", id, i);
        fill_job(&jobs[count], IO_PUT, ol, ref, i, fraglen);
        jobs[count++].src = frags[i];
    }
    run_jobs(ol, jobs, count);
    for (unsigned i = 0; i < count; i++)
        if (jobs[i].rc)
            return pfs_err(jobs[i].rc, "chunk %s: repair write failed: %s", id, jobs[i].msg);
    return 0;
}

int object_repair_chunk(struct object_layer *ol, const struct chunk_ref *ref,
                        uint32_t bad_mask)
{
    struct ec_codec *codec;
    size_t fraglen;
    uint8_t *buf, *frags[EC_MAX_FRAGS];
    uint32_t bad = 0, all = (1u << (ref->k + ref->m)) - 1;
    int rc = check_ref(ol, ref);

    if (rc)
        return rc;
    if ((bad_mask & all) == 0)
        return 0;
    rc = codec_for(ol, ref, &codec);
    if (rc)
        return rc;
    fraglen = ec_fragment_len(codec, ref->sealed_len);
    buf = malloc((size_t)(ref->k + ref->m) * fraglen);
    if (!buf) {
        codec_release(ol, codec);
        return pfs_err(-ENOMEM, "out of memory repairing a chunk");
    }
    for (unsigned i = 0; i < (unsigned)ref->k + ref->m; i++)
        frags[i] = buf + i * fraglen;
    /* Fetch everything: a fragment thought good may have gone bad since. */
    rc = gather_chunk(ol, ref, codec, fraglen, buf, 1, 1, &bad, NULL);
    if (rc == 0)
        rc = write_back(ol, ref, frags, fraglen, (bad | bad_mask) & all);
    free(buf);
    codec_release(ol, codec);
    return rc;
}

int object_delete_chunk(struct object_layer *ol, const struct chunk_ref *ref)
{
    struct io_job jobs[EC_MAX_FRAGS];
    unsigned nf;
    int rc = check_ref(ol, ref);

    if (rc)
        return rc;
    nf = ref->k + ref->m;
    for (unsigned i = 0; i < nf; i++)
        fill_job(&jobs[i], IO_DEL, ol, ref, i, 0);
    run_jobs(ol, jobs, nf);
    for (unsigned i = 0; i < nf; i++)
        if (jobs[i].rc)
            return pfs_err(jobs[i].rc, "%s", jobs[i].msg);
    return 0;
}

/* One job of op per endpoint (calloc'd; NULL when out of memory). */
static struct io_job *endpoint_jobs(struct object_layer *ol, enum io_op op)
{
    struct io_job *jobs = calloc(ol->n, sizeof *jobs);

    for (unsigned i = 0; jobs && i < ol->n; i++) {
        jobs[i].op = op;
        jobs[i].store = ol->stores[i];
        jobs[i].ol = ol;
        jobs[i].ep = i;
    }
    return jobs;
}

int object_delete_pack(struct object_layer *ol, const uint8_t pack[PACK_ID_LEN])
{
    struct io_job *jobs = endpoint_jobs(ol, IO_DEL);
    int rc = 0;

    if (!jobs)
        return pfs_err(-ENOMEM, "out of memory deleting a pack");
    for (unsigned i = 0; i < ol->n; i++)
        object_pack_name(pack, jobs[i].name);
    run_jobs(ol, jobs, ol->n);
    for (unsigned i = 0; i < ol->n && rc == 0; i++)
        if (jobs[i].rc)
            rc = pfs_err(jobs[i].rc, "%s", jobs[i].msg);
    free(jobs);
    return rc;
}

unsigned object_layer_packs_waiting(struct object_layer *ol)
{
    unsigned n = 0;

    pthread_mutex_lock(&ol->pack_lock);
    for (struct pack *p = ol->failed; p; p = p->next)
        n++;
    pthread_mutex_unlock(&ol->pack_lock);
    return n;
}

/* The put job of every unwritten part of the packs in list (a first try
 * writes in place under the fresh name; a retry replaces atomically). */
static unsigned packs_jobs(struct object_layer *ol, struct pack *list, struct io_job *jobs)
{
    unsigned at = 0;

    for (struct pack *p = list; p; p = p->next)
        for (unsigned i = 0; i < ol->n; i++) {
            struct pack_part *part = &p->parts[i];
            if (!part->len || part->written)
                continue;
            if (jobs) {
                struct io_job *j = &jobs[at];
                j->op = part->tried ? IO_PUT : IO_PUT_NEW;
                j->store = ol->stores[i];
                j->ol = ol;
                j->ep = i;
                j->src = part->buf;
                j->len = part->len;
                object_pack_name(p->id, j->name);
                part->tried = 1;
            }
            at++;
        }
    return at;
}

/* A tolerated loss: the fragments in p's unwritten parts are missing; tell
 * the owner (to queue repairs) chunk by chunk, or say what fsck restores. */
static void pack_report_lost(struct object_layer *ol, struct pack *p, const char *why)
{
    char name[OBJECT_NAME_MAX];

    object_pack_name(p->id, name);
    log_warning("pack %s: its part on an endpoint could not be written (%s); its chunks "
                "are read from the other endpoints and their missing fragments are "
                "repaired when the endpoint is back", name, why);
    for (unsigned c = 0; ol->lost_cb && c < p->nchunks; c++) {
        const struct chunk_ref *ref = &p->chunks[c].ref;
        uint32_t missing = 0;
        for (unsigned i = 0; i < (unsigned)ref->k + ref->m; i++) {
            const struct pack_part *part = &p->parts[object_fragment_store(ol, ref, i)];
            if (!part->written)
                missing |= 1u << i;
        }
        if (missing) {
            pfs_err(-EIO, "%s", why);
            ol->lost_cb(ol->lost_arg, p->chunks[c].ino, p->chunks[c].idx, ref, missing);
        }
    }
}

/* Write the packs in list.  Packs fully written, or missing parts on no
 * more endpoints than degraded writes allow, are freed; the rest come back
 * in *keep for the next sync.  0 or the first error. */
static int packs_write(struct object_layer *ol, struct pack *list, struct pack **keep)
{
    unsigned count = packs_jobs(ol, list, NULL), at = 0;
    struct io_job *jobs = calloc(count ? count : 1, sizeof *jobs);
    int rc = 0;

    *keep = NULL;
    if (!jobs) {
        *keep = list;
        return pfs_err(-ENOMEM, "out of memory writing packs");
    }
    packs_jobs(ol, list, jobs);
    run_jobs(ol, jobs, count);
    while (list) {
        struct pack *p = list;
        unsigned failed = 0;
        const char *why = "";
        list = p->next;
        for (unsigned i = 0; i < ol->n; i++) {
            struct pack_part *part = &p->parts[i];
            if (!part->len || part->written)
                continue;
            struct io_job *j = &jobs[at++];
            if (j->rc == 0) {
                part->written = 1;
                continue;
            }
            failed++;
            why = j->msg;
            if (rc == 0)
                rc = pfs_err(j->rc, "%s", j->msg);
        }
        if (failed && failed <= ol->k + ol->m - ol->write_min) {
            pack_report_lost(ol, p, why);
            failed = 0;
        }
        if (failed) {
            p->next = *keep;
            *keep = p;
        } else {
            pack_free(ol, p);
        }
    }
    free(jobs);
    return *keep ? rc : 0;
}

static int endpoints_sync(struct object_layer *ol)
{
    struct io_job *jobs = endpoint_jobs(ol, IO_SYNC);
    int rc = 0;

    if (!jobs)
        return pfs_err(-ENOMEM, "out of memory syncing endpoints");
    run_jobs(ol, jobs, ol->n);
    unsigned nfailed = 0;
    for (unsigned i = 0; i < ol->n; i++)
        if (jobs[i].rc && nfailed++ == 0)
            rc = pfs_err(jobs[i].rc, "%s", jobs[i].msg);
    /* A degraded put already left the failing endpoints' fragments missing
     * (and queued for repair); their sync failing loses nothing more, as
     * long as every chunk still has write_min fragments elsewhere. */
    if (rc && ol->write_min < ol->k + ol->m && nfailed <= ol->k + ol->m - ol->write_min)
        rc = 0;
    free(jobs);
    return rc;
}

int object_layer_sync(struct object_layer *ol)
{
    struct pack *list, *keep = NULL;
    int rc, rs;

    /* One at a time: a sync that returns must cover the packs a concurrent
     * one took, whose chunks its caller may be about to commit. */
    pthread_mutex_lock(&ol->sync_lock);
    pthread_mutex_lock(&ol->pack_lock);
    list = ol->failed;
    if (ol->open) {
        ol->open->next = list;
        list = ol->open;
    }
    ol->open = NULL;
    ol->failed = NULL;
    pthread_mutex_unlock(&ol->pack_lock);
    rc = list ? packs_write(ol, list, &keep) : 0;
    if (keep) {   /* only a sync sets failed, and this one holds sync_lock */
        pthread_mutex_lock(&ol->pack_lock);
        ol->failed = keep;
        pthread_mutex_unlock(&ol->pack_lock);
    }
    rs = endpoints_sync(ol);
    pthread_mutex_unlock(&ol->sync_lock);
    return rc ? rc : rs;
}
