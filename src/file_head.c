#include "config.h"

/* The signed file head (layout and rationale in file_head.h and
 * docs/format-metadata.md, "Signed file head"). */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "error.h"
#include "file_head.h"
#include "filecommit.h"
#include "meta_shared.h"
#include "registry.h"
#include "vec.h"

#define FH_MAGIC "PFFH"
#define FH_VERSION_1 1
#define FH_VERSION 2
#define FH_ENTRY_LEN 16
#define FH_BREF_LEN (8 + SHA256_LEN)
#define FB_MAGIC "PFFB"
#define FB_VERSION 1
#define FB_MAX_ENTRIES (1u << FILE_HEAD_BUCKET_SHIFT)

static uint64_t bucket_of(uint64_t ino)
{
    return ino >> FILE_HEAD_BUCKET_SHIFT;
}

void file_head_clear(struct file_head *h)
{
    free(h->e);
    free(h->b);
    memset(h, 0, sizeof *h);
}

void file_head_delta_clear(struct fh_delta *d)
{
    for (size_t i = 0; i < d->nc; i++)
        free(d->c[i].e);
    free(d->c);
    free(d->b);
    memset(d, 0, sizeof *d);
}

/* ------------------------------------------------------------- encoding */

static void put_header(struct wbuf *b, uint8_t version, const char *vault_id,
                       const struct file_head *h)
{
    wbuf_put_bytes(b, FH_MAGIC, 4);
    wbuf_put_u8(b, version);
    wbuf_put_str(b, vault_id);
    wbuf_put_u64(b, h->counter);
    wbuf_put_u64(b, h->signer_id);
    wbuf_put_u64(b, (uint64_t)h->time);
}

static int sign_tbs(EVP_PKEY *signer, struct wbuf *b, uint8_t **blob, size_t *blob_len)
{
    size_t tbslen = 0;
    uint8_t *tbs = wbuf_steal(b, &tbslen);
    int rc;

    if (!tbs)
        return pfs_err(-ENOMEM, "out of memory encoding the file head");
    rc = sig_sign_container(signer, tbs, tbslen, blob, blob_len);
    free(tbs);
    return rc;
}

static void put_entries(struct wbuf *b, const struct fh_entry *e, size_t n)
{
    wbuf_put_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        wbuf_put_u64(b, e[i].ino);
        wbuf_put_u64(b, e[i].generation);
    }
}

/* Format 2: the root over h->b; format 1: every floor, h->e. */
static int sign_head(EVP_PKEY *signer, const char *vault_id, uint64_t signer_id,
                     uint8_t version, struct file_head *h, uint8_t **blob, size_t *blob_len)
{
    struct wbuf b;

    h->signer_id = signer_id;
    wbuf_init(&b);
    put_header(&b, version, vault_id, h);
    if (version == FH_VERSION_1)
        put_entries(&b, h->e, h->n);
    else
        wbuf_put_u32(&b, (uint32_t)h->nb);
    for (size_t i = 0; version != FH_VERSION_1 && i < h->nb; i++) {
        wbuf_put_u64(&b, h->b[i].id);
        wbuf_put_bytes(&b, h->b[i].hash, SHA256_LEN);
    }
    return sign_tbs(signer, &b, blob, blob_len);
}

int file_head_sign(EVP_PKEY *signer, const char *vault_id, uint64_t signer_id,
                   struct file_head *h, uint8_t **blob, size_t *blob_len)
{
    return sign_head(signer, vault_id, signer_id, FH_VERSION, h, blob, blob_len);
}

int file_head_sign_v1(EVP_PKEY *signer, const char *vault_id, uint64_t signer_id,
                      struct file_head *h, uint8_t **blob, size_t *blob_len)
{
    return sign_head(signer, vault_id, signer_id, FH_VERSION_1, h, blob, blob_len);
}

/* n entries from r: sorted, each inode once, no zero floor, and (bucket
 * non-NULL) each in *bucket.  NULL or what is wrong. */
static const char *get_entries(struct rbuf *r, uint32_t n, const uint64_t *bucket,
                               struct fh_entry **out, size_t *nout)
{
    struct fh_entry *e;

    if ((size_t)n * FH_ENTRY_LEN != rbuf_remaining(r))
        return "entry count";
    if (!(e = calloc(n ? n : 1, sizeof *e)))
        return "out of memory";
    for (uint32_t i = 0; i < n; i++) {
        rbuf_get_u64(r, &e[i].ino);
        rbuf_get_u64(r, &e[i].generation);
        if (r->err || (i && e[i - 1].ino >= e[i].ino) || !e[i].generation ||
            (bucket && bucket_of(e[i].ino) != *bucket)) {
            free(e);
            return "entries not sorted, outside their bucket, or a zero generation";
        }
    }
    *out = e;
    *nout = n;
    return NULL;
}

int file_head_decode(const char *vault_id, const uint8_t *blob, size_t len,
                     struct file_head *h, struct sig_container *c)
{
    struct rbuf r;
    const char *why = NULL;
    uint64_t t = 0;
    uint32_t n = 0;
    int rc;

    memset(h, 0, sizeof *h);
    h->version = FH_VERSION;
    rc = sig_container_open(blob, len, FILE_HEAD_MAX_BLOB, FH_MAGIC, FH_VERSION, vault_id, &r,
                            c, &why);
    if (rc == -EBADMSG && why && strcmp(why, "magic or version") == 0) {
        h->version = FH_VERSION_1;
        rc = sig_container_open(blob, len, FILE_HEAD_MAX_BLOB, FH_MAGIC, FH_VERSION_1,
                                vault_id, &r, c, &why);
    }
    if (rc == -EXDEV)
        return pfs_err(-EBADMSG, "the signed file head names another vault");
    if (rc == 0) {
        rbuf_get_u64(&r, &h->counter);
        rbuf_get_u64(&r, &h->signer_id);
        rbuf_get_u64(&r, &t);
        rbuf_get_u32(&r, &n);
        h->time = (int64_t)t;
        why = r.err ? "header" : !h->counter ? "zero counter" : NULL;
    }
    if (!why && h->version == FH_VERSION_1)
        why = get_entries(&r, n, NULL, &h->e, &h->n);
    else if (!why && (size_t)n * FH_BREF_LEN != rbuf_remaining(&r))
        why = "bucket count";
    else if (!why && !(h->b = calloc(n ? n : 1, sizeof *h->b)))
        why = "out of memory";
    for (uint32_t i = 0; !why && h->version == FH_VERSION && i < n; i++, h->nb = i) {
        rbuf_get_u64(&r, &h->b[i].id);
        rbuf_get_bytes(&r, h->b[i].hash, SHA256_LEN);
        if (r.err || (i && h->b[i - 1].id >= h->b[i].id) ||
            h->b[i].id > (UINT64_MAX >> FILE_HEAD_BUCKET_SHIFT))
            why = "buckets not sorted";
    }
    if (!why && rbuf_end(&r) < 0)
        why = "trailing bytes";
    if (!why)
        return 0;
    file_head_clear(h);
    return pfs_err(-EBADMSG, "the signed file head is malformed (%s)", why);
}

void file_head_bucket_key(uint64_t id, char *out, size_t len)
{
    snprintf(out, len, FILE_HEAD_BUCKET_PREFIX "%" PRIu64, id);
}

int file_head_bucket_encode(const char *vault_id, uint64_t id, const struct fh_entry *e,
                            size_t n, uint8_t **blob, size_t *len)
{
    struct wbuf b;

    wbuf_init(&b);
    wbuf_put_bytes(&b, FB_MAGIC, 4);
    wbuf_put_u8(&b, FB_VERSION);
    wbuf_put_str(&b, vault_id);
    wbuf_put_u64(&b, id);
    put_entries(&b, e, n);
    *blob = wbuf_steal(&b, len);
    return *blob ? 0 : pfs_err(-ENOMEM, "out of memory encoding the file head");
}

int file_head_bucket_decode(const char *vault_id, uint64_t id, const uint8_t *blob,
                            size_t len, struct fh_entry **e, size_t *n)
{
    struct rbuf r;
    const uint8_t *m = NULL, *vid = NULL;
    size_t vidlen = 0;
    uint64_t got = 0;
    uint32_t cnt = 0;
    uint8_t v = 0;
    const char *why;

    *e = NULL;
    *n = 0;
    rbuf_init(&r, blob, len);
    rbuf_get_ref(&r, &m, 4);
    rbuf_get_u8(&r, &v);
    rbuf_get_blob(&r, &vid, &vidlen, 256);
    rbuf_get_u64(&r, &got);
    rbuf_get_u32(&r, &cnt);
    why = r.err || memcmp(m, FB_MAGIC, 4) || v != FB_VERSION ? "header"
          : vidlen != strlen(vault_id) || memcmp(vid, vault_id, vidlen) ? "another vault"
          : got != id ? "another bucket" : !cnt || cnt > FB_MAX_ENTRIES ? "entry count"
          : get_entries(&r, cnt, &id, e, n);
    if (!why)
        return 0;
    return pfs_err(-EBADMSG, "file head bucket %" PRIu64 " is malformed (%s)", id, why);
}

/* ------------------------------------------------------------ ordering */

static int cmp_ino(const void *key, const void *e)
{
    uint64_t a = *(const uint64_t *)key, b = ((const struct fh_entry *)e)->ino;

    return a < b ? -1 : a > b;
}

static const struct fh_entry *find(const struct file_head *h, uint64_t ino)
{
    return h && h->n ? bsearch(&ino, h->e, h->n, sizeof *h->e, cmp_ino) : NULL;
}

uint64_t file_head_floor(const struct file_head *h, uint64_t ino)
{
    const struct fh_entry *e = find(h, ino);

    return e ? e->generation : 0;
}

int file_head_not_older(const struct file_head *prev, const struct file_head *cur,
                        const char *source)
{
    for (size_t i = 0; i < prev->n; i++) {
        uint64_t now = file_head_floor(cur, prev->e[i].ino);

        if (now < prev->e[i].generation)
            return pfs_err(-ESTALE, "the signed file head %" PRIu64 " %s inode %" PRIu64
                           " (generation %" PRIu64 ") than %s (generation %" PRIu64 "): "
                           "the file head was rolled back", cur->counter,
                           now ? "is older for" : "drops", prev->e[i].ino, now, source,
                           prev->e[i].generation);
    }
    return 0;
}

/* ------------------------------------------------ the metadata as it is */

struct merge {
    const struct file_head *prev;
    size_t pi;                    /* next entry of prev not yet merged */
    struct file_head *out;
    size_t cap;
    size_t behind;
    uint64_t first_behind;
};

static int put(struct merge *mg, uint64_t ino, uint64_t gen)
{
    struct file_head *o = mg->out;

    if (vec_reserve(&o->e, &mg->cap, o->n + 1, sizeof *o->e, 256) < 0)
        return pfs_err(-ENOMEM, "out of memory computing the file head");
    o->e[o->n].ino = ino;
    o->e[o->n].generation = gen;
    o->n++;
    return 0;
}

/* Entries of prev below ino (files no longer in the metadata) are kept. */
static int flush_prev(struct merge *mg, uint64_t below)
{
    const struct file_head *p = mg->prev;
    int rc = 0;

    while (rc == 0 && p && mg->pi < p->n && p->e[mg->pi].ino < below) {
        rc = put(mg, p->e[mg->pi].ino, p->e[mg->pi].generation);
        mg->pi++;
    }
    return rc;
}

static int merge_cb(void *arg, uint64_t ino, const uint8_t *com, size_t len)
{
    struct merge *mg = arg;
    struct fc_record rec;
    uint64_t floor = 0, gen;
    int rc;

    if (mg->out->n && mg->out->e[mg->out->n - 1].ino >= ino)
        return pfs_err(-EBADMSG, "the metadata listed inode %" PRIu64 " out of order", ino);
    rc = flush_prev(mg, ino);
    if (rc)
        return rc;
    if (mg->prev && mg->pi < mg->prev->n && mg->prev->e[mg->pi].ino == ino)
        floor = mg->prev->e[mg->pi++].generation;
    /* A malformed record keeps the floor: the file fails its check anyway. */
    gen = fc_parse(com, len, &rec) == 0 ? rec.generation : 0;
    if (gen < floor) {
        if (!mg->behind++)
            mg->first_behind = ino;
        gen = floor;
    }
    return gen ? put(mg, ino, gen) : 0;
}

int file_head_compute(struct meta *m, const struct file_head *prev, struct file_head *out,
                      size_t *behind, uint64_t *first_behind)
{
    struct merge mg = { .prev = prev, .out = out };
    int rc;

    memset(out, 0, sizeof *out);
    rc = meta_commitment_list(m, merge_cb, &mg);
    if (rc == 0)
        rc = flush_prev(&mg, UINT64_MAX);
    if (rc == 0 && prev && mg.pi < prev->n)   /* ino UINT64_MAX */
        rc = put(&mg, prev->e[mg.pi].ino, prev->e[mg.pi].generation);
    if (rc < 0) {
        file_head_clear(out);
        return rc;
    }
    if (behind)
        *behind = mg.behind;
    if (first_behind)
        *first_behind = mg.first_behind;
    return 0;
}

/* ---------------------------------------------------------- verification */

static void count(struct fh_stats *st, int written, size_t bytes)
{
    if (!st)
        return;
    if (written) {
        st->rows_written++;
        st->bytes_written += bytes;
    } else {
        st->rows_read++;
        st->bytes_read += bytes;
    }
}

/* Decode the root blob and check its signature. */
static int verify_root(struct meta *m, const char *vault_id, const char *root_fp,
                       const uint8_t *blob, size_t len, struct file_head *h)
{
    struct registry_record r = { 0 };
    struct sig_container c = { 0 };
    EVP_PKEY *key = NULL;
    int rc = file_head_decode(vault_id, blob, len, h, &c);

    /* the root key, or any account the registry verifies: every mount signs */
    if (rc == 0)
        rc = h->signer_id == REGISTRY_ROOT_SIGNER ? registry_root_key(m, root_fp, &key)
             : registry_verified_key(m, vault_id, root_fp, h->signer_id, &r, &key);
    if (rc < 0 && rc != -ENOMEM) {
        char why[512];

        snprintf(why, sizeof why, "%s", pfs_err_msg());
        rc = pfs_err(-EBADMSG, "the signed file head does not verify: %s", why);
    }
    if (rc == 0 && sig_verify(key, c.tbs, c.tbs_len, c.sig, c.sig_len) < 0)
        rc = pfs_err(-EBADMSG, "the signature of the file head (by account %" PRIu64 ") does "
                     "not verify: it was forged or altered in the metadata store",
                     h->signer_id);
    EVP_PKEY_free(key);
    registry_record_clear(&r);
    if (rc < 0)
        file_head_clear(h);
    else
        sha256(blob, len, h->raw_hash);
    return rc;
}

static int read_root(struct meta *m, uint8_t **blob, size_t *len, struct fh_stats *st)
{
    int rc = meta_param_get(m, FILE_HEAD_PARAM, blob, len);

    if (rc == 0)
        count(st, 0, *len);
    return rc == -ENOENT ? pfs_err(-ENOENT, "the metadata holds no signed file head") : rc;
}

/* Bucket b of the root numbered counter, checked against its hash. */
static int load_bucket(struct meta *m, const char *vault_id, uint64_t counter,
                       const struct fh_bref *b, struct fh_entry **e, size_t *n,
                       struct fh_stats *st)
{
    char key[64];
    uint8_t *blob = NULL, hash[SHA256_LEN];
    size_t len = 0;
    uint64_t lo = b->id << FILE_HEAD_BUCKET_SHIFT, hi = lo + FB_MAX_ENTRIES - 1;
    int rc;

    *e = NULL;
    *n = 0;
    file_head_bucket_key(b->id, key, sizeof key);
    rc = meta_param_get(m, key, &blob, &len);
    if (rc == -ENOENT)
        return pfs_err(-EBADMSG, "bucket %" PRIu64 " (inodes %" PRIu64 "-%" PRIu64 ") of the "
                       "signed file head %" PRIu64 " is missing from the metadata store: it "
                       "was deleted", b->id, lo, hi, counter);
    if (rc < 0)
        return rc;
    count(st, 0, len);
    sha256(blob, len, hash);
    if (memcmp(hash, b->hash, SHA256_LEN) != 0)
        rc = pfs_err(-EBADMSG, "bucket %" PRIu64 " (inodes %" PRIu64 "-%" PRIu64 ") of the "
                     "signed file head %" PRIu64 " does not match the hash the head signed: "
                     "it was altered, or replaced by a bucket of another (older) file head",
                     b->id, lo, hi, counter);
    else
        rc = file_head_bucket_decode(vault_id, b->id, blob, len, e, n);
    free(blob);
    return rc;
}

/* Every bucket of the format-2 root h into h->e.  strict: a bad bucket
 * fails; else it is skipped and counted in *bad. */
static int load_all_buckets(struct meta *m, const char *vault_id, struct file_head *h,
                            int strict, size_t *bad, struct fh_stats *st)
{
    size_t cap = 0;
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < h->nb; i++) {
        struct fh_entry *e = NULL;
        size_t n = 0;

        rc = load_bucket(m, vault_id, h->counter, &h->b[i], &e, &n, st);
        if (rc == -EBADMSG && !strict) {
            (*bad)++;
            rc = 0;
            continue;
        }
        if (rc == 0 && vec_reserve(&h->e, &cap, h->n + n, sizeof *h->e, 16) < 0)
            rc = pfs_err(-ENOMEM, "out of memory loading the file head");
        if (rc == 0) {
            memcpy(h->e + h->n, e, n * sizeof *e);
            h->n += n;
        }
        free(e);
    }
    return rc;
}

int file_head_load_root(struct meta *m, const char *vault_id, const char *root_fp,
                        struct file_head *h, uint8_t **raw, size_t *raw_len)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = read_root(m, &blob, &len, NULL);

    memset(h, 0, sizeof *h);
    if (rc == 0)
        rc = verify_root(m, vault_id, root_fp, blob, len, h);
    if (rc == 0 && raw) {
        *raw = blob;
        *raw_len = len;
    } else {
        free(blob);
    }
    return rc;
}

int file_head_load_buckets(struct meta *m, const char *vault_id, struct file_head *h)
{
    int rc = h->version == FH_VERSION && !h->n ? load_all_buckets(m, vault_id, h, 1, NULL,
                                                                  NULL) : 0;

    if (rc < 0)
        file_head_clear(h);
    return rc;
}

int file_head_load(struct meta *m, const char *vault_id, const char *root_fp,
                   struct file_head *h, uint8_t **raw, size_t *raw_len)
{
    int rc = file_head_load_root(m, vault_id, root_fp, h, raw, raw_len);

    if (rc == 0)
        rc = file_head_load_buckets(m, vault_id, h);
    if (rc < 0 && raw) {
        free(*raw);
        *raw = NULL;
    }
    return rc;
}

int file_head_check_anchor(const struct file_head *h, const uint8_t *raw, size_t raw_len,
                           uint64_t a_counter, const uint8_t a_hash[SHA256_LEN],
                           const char *source)
{
    uint8_t hash[SHA256_LEN];

    if (h->counter < a_counter)
        return pfs_err(-ESTALE, "the signed file head is older than %s has seen: file head %"
                       PRIu64 " < %" PRIu64 " (an older copy of it, and perhaps of files, "
                       "was put back)", source, h->counter, a_counter);
    sha256(raw, raw_len, hash);
    if (h->counter == a_counter && memcmp(hash, a_hash, SHA256_LEN) != 0)
        return pfs_err(-ESTALE, "the file head %" PRIu64 " differs from the one %s has seen "
                       "with the same counter: it was forked or replaced", h->counter, source);
    return 0;
}

/* ------------------------------------------------------ buckets in memory */

/* The entries of h in bucket id: [*lo, *hi). */
static void slice(const struct file_head *h, uint64_t id, size_t *lo, size_t *hi)
{
    uint64_t first = id << FILE_HEAD_BUCKET_SHIFT;
    size_t a = 0, b = h->n;

    while (a < b) {
        size_t mid = a + (b - a) / 2;

        if (h->e[mid].ino < first)
            a = mid + 1;
        else
            b = mid;
    }
    *lo = a;
    for (b = a; b < h->n && bucket_of(h->e[b].ino) == id; b++)
        ;
    *hi = b;
}

/* out = entry-wise maximum of a and b (sorted).  *lower counts entries of a
 * that b lists lower, *missing those b does not list; *first: the first
 * such inode (each may be NULL). */
static int max_merge(const struct fh_entry *a, size_t na, const struct fh_entry *b, size_t nb,
                     struct fh_entry **out, size_t *nout, size_t *lower, size_t *missing,
                     uint64_t *first)
{
    struct fh_entry *o = malloc((na + nb + 1) * sizeof *o);
    size_t i = 0, j = 0, n = 0, lo = 0, mi = 0;

    if (!o)
        return pfs_err(-ENOMEM, "out of memory merging file heads");
    while (i < na || j < nb) {
        if (j == nb || (i < na && a[i].ino < b[j].ino)) {
            if (!lo && !mi && first)
                *first = a[i].ino;
            mi++;
            o[n++] = a[i++];
        } else if (i == na || b[j].ino < a[i].ino) {
            o[n++] = b[j++];
        } else {
            o[n] = a[i];
            if (b[j].generation > o[n].generation)
                o[n].generation = b[j].generation;
            else if (b[j].generation < o[n].generation) {
                if (!lo && !mi && first)
                    *first = a[i].ino;
                lo++;
            }
            n++, i++, j++;
        }
    }
    *out = o;
    *nout = n;
    if (lower)
        *lower = lo;
    if (missing)
        *missing = mi;
    return 0;
}

static int same_entries(const struct fh_entry *a, size_t na, const struct fh_entry *b,
                        size_t nb)
{
    return na == nb && (!na || memcmp(a, b, na * sizeof *a) == 0);
}

int file_head_apply(struct file_head *h, const struct fh_delta *d)
{
    struct fh_bref *b = malloc((d->nb ? d->nb : 1) * sizeof *b);

    if (!b)
        return pfs_err(-ENOMEM, "out of memory updating the file head");
    if (d->full) {
        size_t n = 0;
        struct fh_entry *e;

        for (size_t i = 0; i < d->nc; i++)
            n += d->c[i].n;
        if (!(e = malloc((n ? n : 1) * sizeof *e))) {
            free(b);
            return pfs_err(-ENOMEM, "out of memory updating the file head");
        }
        n = 0;
        for (size_t i = 0; i < d->nc; i++, n += d->c[i - 1].n)
            memcpy(e + n, d->c[i].e, d->c[i].n * sizeof *e);
        free(h->e);
        h->e = e;
        h->n = n;
    }
    for (size_t i = 0; !d->full && i < d->nc; i++) {
        const struct fh_bucket *c = &d->c[i];
        size_t lo, hi;

        slice(h, c->id, &lo, &hi);
        if (c->n > hi - lo) {
            struct fh_entry *e = realloc(h->e, (h->n + c->n - (hi - lo)) * sizeof *e);

            if (!e) {
                free(b);
                return pfs_err(-ENOMEM, "out of memory updating the file head");
            }
            h->e = e;
        }
        if (c->n != hi - lo)     /* new files are mostly in the last bucket: a short move */
            memmove(h->e + lo + c->n, h->e + hi, (h->n - hi) * sizeof *h->e);
        memcpy(h->e + lo, c->e, c->n * sizeof *h->e);
        h->n = h->n - (hi - lo) + c->n;
    }
    if (d->nb)
        memcpy(b, d->b, d->nb * sizeof *b);
    free(h->b);
    h->b = b;
    h->nb = d->nb;
    h->counter = d->counter;
    h->signer_id = d->signer_id;
    h->time = d->time;
    h->version = d->version;
    memcpy(h->raw_hash, d->raw_hash, SHA256_LEN);
    return 0;
}

/* ------------------------------------------------------------ advancing */

struct pbucket {
    uint64_t id;
    size_t n;
    struct fh_entry *e;
    int force;                   /* the stored bytes do not verify: write anyway */
    uint8_t hash[SHA256_LEN];    /* of its bytes (seal) */
    uint8_t *blob;               /* its bytes, if they must be written (seal) */
    size_t len;
};

struct plan {
    struct pbucket *c;           /* changed buckets */
    size_t nc, cap;
};

static void plan_clear(struct plan *p)
{
    for (size_t i = 0; i < p->nc; i++) {
        free(p->c[i].e);
        free(p->c[i].blob);
    }
    free(p->c);
    memset(p, 0, sizeof *p);
}

/* Add bucket id with entries e (taken). */
static int plan_add(struct plan *p, uint64_t id, struct fh_entry *e, size_t n, int force)
{
    if (vec_reserve(&p->c, &p->cap, p->nc + 1, sizeof *p->c, 16) < 0) {
        free(e);
        return pfs_err(-ENOMEM, "out of memory advancing the file head");
    }
    p->c[p->nc++] = (struct pbucket){ .id = id, .n = n, .e = e, .force = force };
    return 0;
}

static struct pbucket *plan_find(struct plan *p, uint64_t id)
{
    for (size_t i = 0; i < p->nc; i++)      /* a few buckets an advance */
        if (p->c[i].id == id)
            return &p->c[i];
    return NULL;
}

static int cmp_bref(const void *key, const void *b)
{
    uint64_t x = *(const uint64_t *)key, y = ((const struct fh_bref *)b)->id;

    return x < y ? -1 : x > y;
}

static const struct fh_bref *bref_find(const struct file_head *h, uint64_t id)
{
    return h->nb ? bsearch(&id, h->b, h->nb, sizeof *h->b, cmp_bref) : NULL;
}

/* The buckets whose stored bytes differ from known's (stored: a verified
 * format-2 root, known: format 2): each read, merged with known's floors.
 * *older: known has a floor the stored head lacks or lists lower; *bad: a
 * stored bucket does not verify. */
static int plan_differing(struct meta *m, const char *vault_id, const struct file_head *known,
                          const struct file_head *stored, struct plan *p, size_t *older,
                          size_t *bad, struct fh_stats *st)
{
    size_t i = 0, j = 0;
    int rc = 0;

    while (rc == 0 && (i < stored->nb || j < known->nb)) {
        const struct fh_bref *sb = NULL, *kb = NULL;
        struct fh_entry *sent = NULL, *merged = NULL;
        size_t sn = 0, mn = 0, lo, hi, lower = 0, missing = 0;
        uint64_t id;
        int ok;

        if (j == known->nb || (i < stored->nb && stored->b[i].id < known->b[j].id))
            sb = &stored->b[i++];
        else if (i == stored->nb || known->b[j].id < stored->b[i].id)
            kb = &known->b[j++];
        else
            sb = &stored->b[i++], kb = &known->b[j++];
        if (sb && kb && memcmp(sb->hash, kb->hash, SHA256_LEN) == 0)
            continue;             /* the common case: nothing read */
        id = sb ? sb->id : kb->id;
        ok = sb && load_bucket(m, vault_id, stored->counter, sb, &sent, &sn, st) == 0;
        if (sb && !ok)
            (*bad)++;
        slice(known, id, &lo, &hi);
        rc = max_merge(known->e + lo, hi - lo, sent, sn, &merged, &mn, &lower, &missing, NULL);
        if (rc == 0 && (lower || missing))
            (*older)++;
        if (rc == 0 && mn)
            rc = plan_add(p, id, merged, mn, sb && !ok);
        else
            free(merged);
        free(sent);
    }
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The buckets of the files committed since the last advance: each floor
 * raised to the generation its row holds now. */
static int plan_dirty(struct meta *m, const struct file_head *known, const uint64_t *dirty, size_t ndirty, struct plan *p, size_t *behind,
                      uint64_t *first_behind, struct fh_stats *st)
{
    uint64_t *d = malloc((ndirty ? ndirty : 1) * sizeof *d);
    struct fh_entry *now = malloc((ndirty ? ndirty : 1) * sizeof *now);
    int rc = d && now ? 0 : pfs_err(-ENOMEM, "out of memory advancing the file head");

    if (rc == 0 && ndirty)
        memcpy(d, dirty, ndirty * sizeof *d);
    if (rc == 0)
        qsort(d, ndirty, sizeof *d, cmp_u64);
    for (size_t i = 0; rc == 0 && i < ndirty;) {
        uint64_t id = bucket_of(d[i]);
        size_t nn = 0, lo, hi, mn = 0, lower = 0;
        struct pbucket *c = plan_find(p, id);
        const struct fh_entry *base;
        size_t bn;
        struct fh_entry *merged = NULL;
        uint64_t first = 0;

        for (; rc == 0 && i < ndirty && bucket_of(d[i]) == id; i++) {
            struct meta_inode mi;
            struct fc_record rec;

            if (nn && now[nn - 1].ino == d[i])
                continue;
            rc = meta_inode_get(m, d[i], &mi);
            if (rc == -ENOENT) {      /* removed since: its floor stays */
                rc = 0;
                continue;
            }
            count(st, 0, rc == 0 ? mi.commitment_len : 0);
            if (rc == 0 && mi.commitment_len && fc_parse(mi.commitment, mi.commitment_len,
                                                         &rec) == 0 && rec.generation)
                now[nn++] = (struct fh_entry){ d[i], rec.generation };
        }
        if (rc < 0 || !nn)
            continue;
        if (c) {
            base = c->e;
            bn = c->n;
        } else {
            slice(known, id, &lo, &hi);
            base = known->e + lo;
            bn = hi - lo;
        }
        rc = max_merge(base, bn, now, nn, &merged, &mn, &lower, NULL, &first);
        if (rc == 0 && lower) {
            if (!*behind && first_behind)
                *first_behind = first;
            *behind += lower;
        }
        if (rc == 0 && same_entries(merged, mn, base, bn)) {
            free(merged);
        } else if (rc == 0 && c) {
            free(c->e);
            c->e = merged;
            c->n = mn;
        } else if (rc == 0) {
            rc = plan_add(p, id, merged, mn, 0);
        }
    }
    free(d);
    free(now);
    return rc;
}

/* Every floor of full (sorted) as one change per bucket, all written. */
static int plan_full(const struct file_head *full, struct plan *p)
{
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < full->n;) {
        uint64_t id = bucket_of(full->e[i].ino);
        size_t j = i;
        struct fh_entry *e;

        while (j < full->n && bucket_of(full->e[j].ino) == id)
            j++;
        e = malloc((j - i) * sizeof *e);
        if (!e)
            return pfs_err(-ENOMEM, "out of memory advancing the file head");
        memcpy(e, full->e + i, (j - i) * sizeof *e);
        rc = plan_add(p, id, e, j - i, 1);
        i = j;
    }
    return rc;
}

static int cmp_pbucket(const void *a, const void *b)
{
    uint64_t x = ((const struct pbucket *)a)->id, y = ((const struct pbucket *)b)->id;

    return x < y ? -1 : x > y;
}

/* An advance in three steps (file_head.h): what it read, what it will write. */
struct fh_prep {
    struct plan p;
    struct file_head base;       /* the stored root's buckets it builds on (b only) */
    int root_present;            /* the stored root as read: present, and its hash */
    uint8_t root_hash[SHA256_LEN];
    uint64_t counter;            /* of the new root */
    int full, rolled_back;
    size_t behind;
    uint64_t first_behind;
    struct fh_delta d;           /* seal */
    uint8_t *raw;                /* the signed root (seal) */
    size_t raw_len;
};

void file_head_prep_free(struct fh_prep *x)
{
    if (!x)
        return;
    plan_clear(&x->p);
    file_head_clear(&x->base);
    file_head_delta_clear(&x->d);
    free(x->raw);
    free(x);
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

int file_head_prepare(struct meta *m, const char *vault_id, const char *root_fp,
                      const struct file_head *known, const uint64_t *dirty, size_t ndirty,
                      struct fh_prep **out, struct fh_stats *stats)
{
    struct file_head none = { 0 }, stored = { 0 }, prev = { 0 }, full = { 0 };
    const struct file_head *base = NULL;
    struct fh_stats dummy;
    struct fh_stats *st = stats ? stats : &dummy;
    struct fh_prep *x = calloc(1, sizeof *x);
    uint8_t *sblob = NULL;
    size_t slen = 0, older = 0, bad = 0;
    int rc, have = 0;             /* 1: the stored root verified; 2: it is known's */

    *out = NULL;
    if (!x)
        return pfs_err(-ENOMEM, "out of memory advancing the file head");
    if (!known)
        known = &none;
    memset(st, 0, sizeof *st);
    rc = read_root(m, &sblob, &slen, st);
    if (rc == 0) {
        x->root_present = 1;
        sha256(sblob, slen, x->root_hash);
        if (known->counter && memcmp(x->root_hash, known->raw_hash, SHA256_LEN) == 0)
            have = 2;             /* this mount's own last head: nothing to verify */
        else if ((rc = verify_root(m, vault_id, root_fp, sblob, slen, &stored)) == 0)
            have = 1;
        else if (rc == -EBADMSG)
            x->rolled_back = 1, rc = 0;   /* altered: build on what this mount verified */
    } else if (rc == -ENOENT) {
        x->rolled_back = known->counter != 0;
        rc = 0;
    }
    if (have == 1 && stored.counter < known->counter)
        x->rolled_back = 1;
    base = have == 2 ? known : have == 1 ? &stored : NULL;
    if (rc == 0 && base && known->version == FH_VERSION && base->version == FH_VERSION) {
        /* incremental: the buckets another writer changed, and this mount's */
        if (have == 1)
            rc = plan_differing(m, vault_id, known, &stored, &x->p, &older, &bad, st);
        if (older || bad)
            x->rolled_back = 1;
        if (rc == 0)
            rc = plan_dirty(m, known, dirty, ndirty, &x->p, &x->behind, &x->first_behind, st);
        if (rc == 0 && base->nb && !(x->base.b = malloc(base->nb * sizeof *base->b)))
            rc = pfs_err(-ENOMEM, "out of memory advancing the file head");
        if (rc == 0 && base->nb) {
            memcpy(x->base.b, base->b, base->nb * sizeof *base->b);
            x->base.nb = base->nb;
        }
    } else if (rc == 0) {
        /* in full: the first head of this vault, a format-1 head (the
         * conversion), or a stored head that did not verify */
        if (have == 1 && stored.version == FH_VERSION)
            rc = load_all_buckets(m, vault_id, &stored, 0, &bad, st);
        if (bad || (have == 1 && known->counter &&
                    file_head_not_older(known, &stored, "the head this mount verified") < 0))
            x->rolled_back = 1;
        if (rc == 0)
            rc = max_merge(known->e, known->n, stored.e, stored.n, &prev.e, &prev.n, NULL,
                           NULL, NULL);
        if (rc == 0)
            rc = file_head_compute(m, &prev, &full, &x->behind, &x->first_behind);
        if (rc == 0)
            rc = plan_full(&full, &x->p);
        x->full = 1;
    }
    x->counter = max_u64(have == 2 ? known->counter : stored.counter, known->counter) + 1;
    free(sblob);
    file_head_clear(&stored);
    file_head_clear(&prev);
    file_head_clear(&full);
    if (rc < 0) {
        file_head_prep_free(x);
        return rc;
    }
    *out = x;
    return 0;
}

int file_head_seal(struct fh_prep *x, EVP_PKEY *signer, const char *vault_id,
                   uint64_t signer_id)
{
    struct file_head root = { 0 };
    struct plan *p = &x->p;
    struct fh_delta *d = &x->d;
    size_t nbase = x->base.nb, i = 0, j = 0;
    int rc = 0;

    if (p->nc)
        qsort(p->c, p->nc, sizeof *p->c, cmp_pbucket);
    d->b = malloc((nbase + p->nc + 1) * sizeof *d->b);
    d->c = malloc((p->nc + 1) * sizeof *d->c);
    if (!d->b || !d->c)
        return pfs_err(-ENOMEM, "out of memory advancing the file head");
    for (size_t k = 0; rc == 0 && k < p->nc; k++) {
        struct pbucket *c = &p->c[k];
        const struct fh_bref *sb = bref_find(&x->base, c->id);

        rc = file_head_bucket_encode(vault_id, c->id, c->e, c->n, &c->blob, &c->len);
        if (rc == 0)
            sha256(c->blob, c->len, c->hash);
        /* the bytes the stored root already lists (and that verified): no write */
        if (rc == 0 && !c->force && sb && memcmp(sb->hash, c->hash, SHA256_LEN) == 0) {
            free(c->blob);
            c->blob = NULL;
        }
    }
    /* the new root: base's buckets with the planned ones in their place */
    while (rc == 0 && (i < nbase || j < p->nc)) {
        if (j == p->nc || (i < nbase && x->base.b[i].id < p->c[j].id)) {
            d->b[d->nb++] = x->base.b[i++];
        } else {
            if (i < nbase && x->base.b[i].id == p->c[j].id)
                i++;
            d->b[d->nb].id = p->c[j].id;
            memcpy(d->b[d->nb].hash, p->c[j].hash, SHA256_LEN);
            d->nb++;
            j++;
        }
    }
    if (rc == 0) {
        root.counter = x->counter;
        root.time = (int64_t)time(NULL);
        root.b = d->b;
        root.nb = d->nb;
        rc = file_head_sign(signer, vault_id, signer_id, &root, &x->raw, &x->raw_len);
    }
    if (rc < 0)
        return rc;
    /* the delta takes the planned buckets' floors */
    for (size_t k = 0; k < p->nc; k++) {
        d->c[k] = (struct fh_bucket){ .id = p->c[k].id, .n = p->c[k].n, .e = p->c[k].e };
        p->c[k].e = NULL;
    }
    d->nc = p->nc;
    d->full = x->full;
    d->counter = root.counter;
    d->signer_id = signer_id;
    d->time = root.time;
    d->version = FH_VERSION;
    sha256(x->raw, x->raw_len, d->raw_hash);
    return 0;
}

/* Write the sealed buckets and root, in the caller's transaction with the
 * head lock held, if the stored root is still the one prepare read. */
static int publish_locked(struct meta *m, struct fh_prep *x, struct fh_stats *st)
{
    uint8_t *blob = NULL, hash[SHA256_LEN];
    size_t len = 0;
    char key[64];
    int rc = meta_param_get(m, FILE_HEAD_PARAM, &blob, &len);

    if (rc == 0) {
        sha256(blob, len, hash);
        count(st, 0, len);
    }
    free(blob);
    if (rc < 0 && rc != -ENOENT)
        return rc;
    if ((rc == 0) != x->root_present ||
        (rc == 0 && memcmp(hash, x->root_hash, SHA256_LEN) != 0))
        return -EAGAIN;           /* another writer advanced meanwhile */
    rc = 0;
    for (size_t k = 0; rc == 0 && k < x->p.nc; k++) {
        if (!x->p.c[k].blob)
            continue;
        file_head_bucket_key(x->p.c[k].id, key, sizeof key);
        rc = meta_param_set(m, key, x->p.c[k].blob, x->p.c[k].len);
        count(st, 1, x->p.c[k].len);
    }
    if (rc == 0) {
        rc = meta_param_set(m, FILE_HEAD_PARAM, x->raw, x->raw_len);
        count(st, 1, x->raw_len);
    }
    return rc;
}

int file_head_publish(struct meta *m, struct fh_prep *x, struct fh_stats *stats)
{
    int rc = meta_begin(m), in_txn = rc == 0;

    if (stats)
        memset(stats, 0, sizeof *stats);

    /* Two mounts at once (PostgreSQL): the second waits here until the
     * first committed, then finds the root moved (-EAGAIN). */
    if (rc == 0)
        rc = meta_head_lock(m);
    if (rc == 0)
        rc = publish_locked(m, x, stats);
    if (rc == 0 && in_txn)
        rc = meta_commit(m);
    else if (in_txn)
        meta_rollback(m);
    return rc;
}

int file_head_prep_result(struct fh_prep *x, struct fh_delta *d, uint8_t **raw,
                          size_t *raw_len, int *rolled_back, size_t *behind,
                          uint64_t *first_behind)
{
    *d = x->d;
    memset(&x->d, 0, sizeof x->d);
    *raw = x->raw;
    *raw_len = x->raw_len;
    x->raw = NULL;
    *rolled_back = x->rolled_back;
    if (behind)
        *behind = x->behind;
    if (first_behind)
        *first_behind = x->first_behind;
    return 0;
}

int file_head_advance(struct meta *m, const char *vault_id, const char *root_fp,
                      EVP_PKEY *signer, uint64_t signer_id, const struct file_head *known,
                      const uint64_t *dirty, size_t ndirty, struct fh_delta *d,
                      uint8_t **raw, size_t *raw_len, int *rolled_back, size_t *behind,
                      uint64_t *first_behind, struct fh_stats *stats)
{
    struct fh_prep *x = NULL;
    struct fh_stats wrote = { 0 };
    int rc, in_txn;

    memset(d, 0, sizeof *d);
    *raw = NULL;
    *raw_len = 0;
    *rolled_back = 0;
    rc = meta_begin(m);
    in_txn = rc == 0;
    /* everything in one transaction under the head lock: nothing moves */
    if (rc == 0)
        rc = meta_head_lock(m);
    if (rc == 0)
        rc = file_head_prepare(m, vault_id, root_fp, known, dirty, ndirty, &x, stats);
    if (rc == 0)
        rc = file_head_seal(x, signer, vault_id, signer_id);
    if (rc == 0)
        rc = publish_locked(m, x, &wrote);
    if (rc == 0 && in_txn)
        rc = meta_commit(m);
    else if (in_txn)
        meta_rollback(m);
    if (rc == 0 && stats) {
        stats->rows_read += wrote.rows_read;
        stats->bytes_read += wrote.bytes_read;
        stats->rows_written = wrote.rows_written;
        stats->bytes_written = wrote.bytes_written;
    }
    if (rc == 0)
        file_head_prep_result(x, d, raw, raw_len, rolled_back, behind, first_behind);
    file_head_prep_free(x);
    return rc;
}

/* ------------------------------------------------------------ refreshing */

static int rolled_back_msg(const struct file_head *stored, size_t lower, uint64_t ino)
{
    return pfs_err(-ESTALE, "the signed file head %" PRIu64 " %s inode %" PRIu64 " than the "
                   "head this mount verified: the file head was rolled back", stored->counter,
                   lower ? "is older for" : "drops", ino);
}

int file_head_refresh(struct meta *m, const char *vault_id, const char *root_fp,
                      const struct file_head *known, struct fh_delta *d,
                      struct fh_stats *st)
{
    struct file_head stored = { 0 };
    struct plan p = { 0 };
    uint8_t *blob = NULL, hash[SHA256_LEN];
    size_t len = 0, i = 0, j = 0;
    int rc;

    memset(d, 0, sizeof *d);
    if (st)
        memset(st, 0, sizeof *st);
    rc = read_root(m, &blob, &len, st);
    if (rc < 0)
        return rc;
    sha256(blob, len, hash);
    /* unchanged bytes (the common case): nothing to verify again */
    if (known->counter && memcmp(hash, known->raw_hash, SHA256_LEN) == 0) {
        free(blob);
        return 0;
    }
    rc = verify_root(m, vault_id, root_fp, blob, len, &stored);
    free(blob);
    if (rc == 0 && stored.counter < known->counter)
        rc = pfs_err(-ESTALE, "the signed file head in the metadata store (%" PRIu64 ") is "
                     "older than file head %" PRIu64 " this mount verified: it was rolled "
                     "back", stored.counter, known->counter);
    if (rc < 0 || stored.counter == known->counter) {
        file_head_clear(&stored);
        return rc;
    }
    if (stored.version != FH_VERSION || known->version != FH_VERSION) {
        /* a format-1 head, or this mount verified one: compare in full */
        if (stored.version == FH_VERSION)
            rc = load_all_buckets(m, vault_id, &stored, 1, NULL, st);
        if (rc == 0)
            rc = file_head_not_older(known, &stored, "the head this mount verified");
        if (rc == 0)
            rc = plan_full(&stored, &p);
        d->full = 1;
    }
    while (rc == 0 && !d->full && (i < stored.nb || j < known->nb)) {
        const struct fh_bref *sb = NULL, *kb = NULL;
        struct fh_entry *sent = NULL, *merged = NULL;
        size_t sn = 0, mn = 0, lo, hi, lower = 0, missing = 0;
        uint64_t first = 0;

        if (j == known->nb || (i < stored.nb && stored.b[i].id < known->b[j].id))
            sb = &stored.b[i++];
        else if (i == stored.nb || known->b[j].id < stored.b[i].id)
            kb = &known->b[j++];
        else
            sb = &stored.b[i++], kb = &known->b[j++];
        if (sb && kb && memcmp(sb->hash, kb->hash, SHA256_LEN) == 0)
            continue;
        slice(known, sb ? sb->id : kb->id, &lo, &hi);
        if (!sb) {
            rc = rolled_back_msg(&stored, 0, known->e[lo].ino);
            break;
        }
        rc = load_bucket(m, vault_id, stored.counter, sb, &sent, &sn, st);
        if (rc == 0)
            rc = max_merge(known->e + lo, hi - lo, sent, sn, &merged, &mn, &lower, &missing,
                           &first);
        free(merged);
        if (rc == 0 && (lower || missing))
            rc = rolled_back_msg(&stored, lower, first);
        if (rc == 0)
            rc = plan_add(&p, sb->id, sent, sn, 0);
        else
            free(sent);
    }
    if (rc == 0) {
        if (p.nc)
            qsort(p.c, p.nc, sizeof *p.c, cmp_pbucket);
        d->b = malloc((stored.nb + 1) * sizeof *d->b);
        d->c = malloc((p.nc + 1) * sizeof *d->c);
        rc = d->b && d->c ? 0 : pfs_err(-ENOMEM, "out of memory reading the file head");
    }
    if (rc == 0) {
        if (stored.nb)
            memcpy(d->b, stored.b, stored.nb * sizeof *d->b);
        d->nb = stored.nb;
        for (size_t k = 0; k < p.nc; k++) {
            d->c[k] = (struct fh_bucket){ .id = p.c[k].id, .n = p.c[k].n, .e = p.c[k].e };
            p.c[k].e = NULL;
        }
        d->nc = p.nc;
        d->counter = stored.counter;
        d->signer_id = stored.signer_id;
        d->time = stored.time;
        d->version = stored.version;
        memcpy(d->raw_hash, hash, SHA256_LEN);
    } else {
        file_head_delta_clear(d);
    }
    plan_clear(&p);
    file_head_clear(&stored);
    return rc;
}

int file_head_resign(struct meta *m, const char *vault_id, const char *root_fp,
                     uint64_t if_signer, EVP_PKEY *signer, uint64_t signer_id)
{
    struct file_head h = { 0 };
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = read_root(m, &blob, &len, NULL);

    if (rc == 0)
        rc = verify_root(m, vault_id, root_fp, blob, len, &h);
    free(blob);
    blob = NULL;
    if (rc == -ENOENT || rc == -EBADMSG)
        return 0;                 /* nothing verified to carry over */
    if (rc == 0 && h.signer_id == if_signer) {
        h.counter++;              /* the same floors, a new root: anchors take it */
        h.time = (int64_t)time(NULL);
        rc = h.version == FH_VERSION ? file_head_sign(signer, vault_id, signer_id, &h, &blob,
                                                      &len)
             : file_head_sign_v1(signer, vault_id, signer_id, &h, &blob, &len);
        if (rc == 0)
            rc = meta_param_set(m, FILE_HEAD_PARAM, blob, len);
    }
    free(blob);
    file_head_clear(&h);
    return rc;
}
