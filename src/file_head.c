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

#define FH_MAGIC "PFFH"
#define FH_VERSION 1
#define FH_ENTRY_LEN 16

void file_head_clear(struct file_head *h)
{
    free(h->e);
    memset(h, 0, sizeof *h);
}

/* ------------------------------------------------------------- encoding */

int file_head_sign(EVP_PKEY *signer, const char *vault_id, uint64_t signer_id,
                   struct file_head *h, uint8_t **blob, size_t *blob_len)
{
    struct wbuf b;
    uint8_t *tbs;
    size_t tbslen = 0;
    int rc;

    h->signer_id = signer_id;
    wbuf_init(&b);
    wbuf_put_bytes(&b, FH_MAGIC, 4);
    wbuf_put_u8(&b, FH_VERSION);
    wbuf_put_str(&b, vault_id);
    wbuf_put_u64(&b, h->counter);
    wbuf_put_u64(&b, h->signer_id);
    wbuf_put_u64(&b, (uint64_t)h->time);
    wbuf_put_u32(&b, (uint32_t)h->n);
    for (size_t i = 0; i < h->n; i++) {
        wbuf_put_u64(&b, h->e[i].ino);
        wbuf_put_u64(&b, h->e[i].generation);
    }
    tbs = wbuf_steal(&b, &tbslen);
    if (!tbs)
        return pfs_err(-ENOMEM, "out of memory encoding the file head");
    rc = sig_sign_container(signer, tbs, tbslen, blob, blob_len);
    free(tbs);
    return rc;
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
    rc = sig_container_open(blob, len, FILE_HEAD_MAX_BLOB, FH_MAGIC, FH_VERSION, vault_id, &r,
                            c, &why);
    if (rc == -EXDEV)
        return pfs_err(-EBADMSG, "the signed file head names another vault");
    if (rc == 0) {
        rbuf_get_u64(&r, &h->counter);
        rbuf_get_u64(&r, &h->signer_id);
        rbuf_get_u64(&r, &t);
        rbuf_get_u32(&r, &n);
        h->time = (int64_t)t;
        why = r.err ? "header" : !h->counter ? "zero counter"
              : (size_t)n * FH_ENTRY_LEN != rbuf_remaining(&r) ? "entry count" : NULL;
    }
    if (!why && !(h->e = calloc(n ? n : 1, sizeof *h->e)))
        return pfs_err(-ENOMEM, "out of memory decoding the file head");
    /* sorted, each inode once, no zero floor */
    for (uint32_t i = 0; !why && i < n; i++, h->n = i) {
        rbuf_get_u64(&r, &h->e[i].ino);
        rbuf_get_u64(&r, &h->e[i].generation);
        if (r.err || (i && h->e[i - 1].ino >= h->e[i].ino) || !h->e[i].generation)
            why = "entries not sorted, or a zero generation";
    }
    if (!why && rbuf_end(&r) < 0)
        why = "trailing bytes";
    if (!why)
        return 0;
    file_head_clear(h);
    return pfs_err(-EBADMSG, "the signed file head is malformed (%s)", why);
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

    if (o->n == mg->cap) {
        size_t cap = mg->cap ? mg->cap * 2 : 256;
        struct fh_entry *e = realloc(o->e, cap * sizeof *e);

        if (!e)
            return pfs_err(-ENOMEM, "out of memory computing the file head");
        o->e = e;
        mg->cap = cap;
    }
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

int file_head_load(struct meta *m, const char *vault_id, const char *root_fp,
                   struct file_head *h, uint8_t **raw, size_t *raw_len)
{
    struct registry_record r = { 0 };
    struct sig_container c = { 0 };
    EVP_PKEY *key = NULL;
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = meta_param_get(m, FILE_HEAD_PARAM, &blob, &len);

    memset(h, 0, sizeof *h);
    if (rc < 0)
        return rc == -ENOENT ? pfs_err(-ENOENT, "the metadata holds no signed file head") : rc;
    rc = file_head_decode(vault_id, blob, len, h, &c);
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
    if (rc == 0 && raw) {
        *raw = blob;
        *raw_len = len;
    } else {
        free(blob);
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

/* ------------------------------------------------------------ advancing */

/* Entry-wise maximum of a and b into out (counter: the larger). */
static int merge_heads(const struct file_head *a, const struct file_head *b,
                       struct file_head *out)
{
    size_t i = 0, j = 0, n = 0;

    memset(out, 0, sizeof *out);
    out->e = calloc(a->n + b->n + 1, sizeof *out->e);
    if (!out->e)
        return pfs_err(-ENOMEM, "out of memory merging file heads");
    while (i < a->n || j < b->n) {
        if (j == b->n || (i < a->n && a->e[i].ino < b->e[j].ino))
            out->e[n++] = a->e[i++];
        else if (i == a->n || b->e[j].ino < a->e[i].ino)
            out->e[n++] = b->e[j++];
        else {
            out->e[n] = a->e[i];
            if (b->e[j].generation > out->e[n].generation)
                out->e[n].generation = b->e[j].generation;
            n++, i++, j++;
        }
    }
    out->n = n;
    out->counter = a->counter > b->counter ? a->counter : b->counter;
    return 0;
}

int file_head_advance(struct meta *m, const char *vault_id, const char *root_fp,
                      EVP_PKEY *signer, uint64_t signer_id, const struct file_head *known,
                      struct file_head *out, uint8_t **raw, size_t *raw_len,
                      int *rolled_back, size_t *behind, uint64_t *first_behind)
{
    struct file_head stored = { 0 }, prev = { 0 }, cur = { 0 };
    int rc, in_txn;

    memset(out, 0, sizeof *out);
    *raw = NULL;
    *raw_len = 0;
    *rolled_back = 0;
    rc = meta_begin(m);
    in_txn = rc == 0;
    /* Two mounts at once (PostgreSQL): the second waits here until the
     * first committed, then builds on its head. */
    if (rc == 0)
        rc = meta_head_lock(m);
    if (rc == 0) {
        rc = file_head_load(m, vault_id, root_fp, &stored, NULL, NULL);
        if (rc == -ENOENT || rc == -EBADMSG) {
            /* none yet, or altered: build on what this mount verified */
            *rolled_back = known && known->counter && rc == -ENOENT ? 1 : rc == -EBADMSG;
            rc = 0;
        }
    }
    if (rc == 0 && known && known->counter &&
        (stored.counter < known->counter ||
         file_head_not_older(known, &stored, "the head this mount verified") < 0))
        *rolled_back = 1;
    if (rc == 0)
        rc = known ? merge_heads(known, &stored, &prev) : merge_heads(&stored, &stored, &prev);
    if (rc == 0)
        rc = file_head_compute(m, &prev, &cur, behind, first_behind);
    if (rc == 0) {
        cur.counter = prev.counter + 1;
        cur.time = (int64_t)time(NULL);
        rc = file_head_sign(signer, vault_id, signer_id, &cur, raw, raw_len);
    }
    if (rc == 0)
        rc = meta_param_set(m, FILE_HEAD_PARAM, *raw, *raw_len);
    if (rc == 0 && in_txn)
        rc = meta_commit(m);
    else if (in_txn)
        meta_rollback(m);
    if (rc == 0) {
        *out = cur;
        memset(&cur, 0, sizeof cur);
    } else if (*raw) {
        free(*raw);
        *raw = NULL;
    }
    file_head_clear(&stored);
    file_head_clear(&prev);
    file_head_clear(&cur);
    return rc;
}

int file_head_resign(struct meta *m, const char *vault_id, const char *root_fp,
                     uint64_t if_signer, EVP_PKEY *signer, uint64_t signer_id)
{
    struct file_head h;
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = file_head_load(m, vault_id, root_fp, &h, NULL, NULL);

    if (rc == -ENOENT || rc == -EBADMSG)
        return 0;                 /* nothing verified to carry over */
    if (rc == 0 && h.signer_id == if_signer) {
        h.counter++;              /* the same floors, a new head: anchors take it */
        h.time = (int64_t)time(NULL);
        rc = file_head_sign(signer, vault_id, signer_id, &h, &blob, &len);
        if (rc == 0)
            rc = meta_param_set(m, FILE_HEAD_PARAM, blob, len);
    }
    free(blob);
    file_head_clear(&h);
    return rc;
}
