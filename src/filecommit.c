#include "config.h"

/* The per-file commitment (layout and rationale in filecommit.h and
 * docs/format-metadata.md). */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "error.h"
#include "filecommit.h"
#include "secmem.h"
#include "vec.h"

int fc_key_derive(const uint8_t dek[32], uint8_t key[FC_KEY_LEN])
{
    return hkdf_sha256(dek, 32, NULL, 0, FC_KEY_LABEL, strlen(FC_KEY_LABEL), key, FC_KEY_LEN);
}

void fc_ref_digest(const struct chunk_ref *ref, uint8_t out[SHA256_LEN])
{
    uint8_t b[CHUNK_ID_LEN + 8 + 4 + 4 + 3 + EC_MAX_FRAGS * FRAG_SUM_LEN];
    size_t n = 0;
    unsigned nf = (unsigned)ref->k + ref->m;

    if (nf > EC_MAX_FRAGS)
        nf = EC_MAX_FRAGS;   /* such a ref never opens anyway */
    memcpy(b, ref->chunk_id, CHUNK_ID_LEN);
    n += CHUNK_ID_LEN;
    for (int i = 0; i < 8; i++)
        b[n++] = (uint8_t)(ref->version >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        b[n++] = (uint8_t)(ref->plain_len >> (24 - 8 * i));
    for (int i = 0; i < 4; i++)
        b[n++] = (uint8_t)(ref->sealed_len >> (24 - 8 * i));
    b[n++] = ref->k;
    b[n++] = ref->m;
    b[n++] = ref->rotation;
    for (unsigned i = 0; i < nf; i++) {
        memcpy(b + n, ref->sums[i], FRAG_SUM_LEN);
        n += FRAG_SUM_LEN;
    }
    sha256(b, n, out);
}

/* ---- the sorted list ---- */

void fc_list_init(struct fc_list *l)
{
    memset(l, 0, sizeof *l);
}

void fc_list_free(struct fc_list *l)
{
    free(l->e);
    fc_list_init(l);
}

int fc_list_copy(struct fc_list *dst, const struct fc_list *src)
{
    struct fc_entry *e = NULL;

    if (src->n) {
        e = malloc(src->n * sizeof *e);
        if (!e)
            return pfs_err(-ENOMEM, "out of memory for a chunk list");
        memcpy(e, src->e, src->n * sizeof *e);
    }
    free(dst->e);
    dst->e = e;
    dst->n = dst->cap = src->n;
    return 0;
}

/* First position whose idx >= idx. */
static size_t lower_bound(const struct fc_list *l, uint64_t idx)
{
    size_t lo = 0, hi = l->n;

    if (l->n && l->e[l->n - 1].idx < idx)
        return l->n;   /* appending: the common case */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->e[mid].idx < idx)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int fc_list_set(struct fc_list *l, uint64_t idx, const struct chunk_ref *ref)
{
    size_t pos = lower_bound(l, idx);

    if (pos == l->n || l->e[pos].idx != idx) {
        if (vec_reserve(&l->e, &l->cap, l->n + 1, sizeof *l->e, 16) < 0)
            return pfs_err(-ENOMEM, "out of memory for a chunk list");
        memmove(l->e + pos + 1, l->e + pos, (l->n - pos) * sizeof *l->e);
        l->n++;
    }
    l->e[pos].idx = idx;
    l->e[pos].version = ref->version;
    fc_ref_digest(ref, l->e[pos].digest);
    return 0;
}

void fc_list_truncate(struct fc_list *l, uint64_t from)
{
    l->n = lower_bound(l, from);
}

const struct fc_entry *fc_list_find(const struct fc_list *l, uint64_t idx)
{
    size_t pos = lower_bound(l, idx);

    return pos < l->n && l->e[pos].idx == idx ? &l->e[pos] : NULL;
}

int fc_entry_matches(const struct fc_entry *e, const struct chunk_ref *ref)
{
    uint8_t d[SHA256_LEN];

    if (!e || e->version != ref->version)
        return 0;
    fc_ref_digest(ref, d);
    return crypto_memcmp(d, e->digest, SHA256_LEN) == 0;
}

/* ---- the record ---- */

int fc_parse(const uint8_t *in, size_t len, struct fc_record *out)
{
    struct rbuf r;
    uint8_t layout = 0, alg = 0;

    if (!in || len == 0)
        return pfs_err(-EBADMSG, "no commitment record (file not upgraded to format 2, "
                       "or the record was removed)");
    rbuf_init(&r, in, len);
    rbuf_get_u8(&r, &layout);
    rbuf_get_u8(&r, &alg);
    rbuf_get_u64(&r, &out->generation);
    rbuf_get_u64(&r, &out->nchunks);
    rbuf_get_bytes(&r, out->mac, FC_MAC_LEN);
    if (rbuf_end(&r) != 0)
        return pfs_err(-EBADMSG, "commitment record has %zu bytes, expected %d", len,
                       FC_RECORD_LEN);
    if (layout != FC_LAYOUT || alg != FC_ALG_HMAC_SHA256)
        return pfs_err(-EBADMSG, "commitment record has unknown layout %u / algorithm %u",
                       layout, alg);
    if (out->generation == 0)
        return pfs_err(-EBADMSG, "commitment record has generation 0");
    return 0;
}

static int compute_mac(const uint8_t key[FC_KEY_LEN], uint64_t ino, uint64_t size,
                       uint64_t generation, const struct fc_list *l, uint8_t mac[FC_MAC_LEN])
{
    struct wbuf w;
    uint8_t *msg;
    size_t n;
    int rc;

    wbuf_init(&w);
    wbuf_put_bytes(&w, FC_KEY_LABEL, strlen(FC_KEY_LABEL));
    wbuf_put_u64(&w, ino);
    wbuf_put_u64(&w, size);
    wbuf_put_u64(&w, generation);
    wbuf_put_u64(&w, l->n);
    for (size_t i = 0; i < l->n; i++) {
        wbuf_put_u64(&w, l->e[i].idx);
        wbuf_put_u64(&w, l->e[i].version);
        wbuf_put_bytes(&w, l->e[i].digest, SHA256_LEN);
    }
    msg = wbuf_steal(&w, &n);
    if (!msg)
        return pfs_err(-ENOMEM, "out of memory for a file commitment");
    rc = hmac_sha256(key, FC_KEY_LEN, msg, n, mac);
    free(msg);
    return rc;
}

int fc_seal(const uint8_t key[FC_KEY_LEN], uint64_t ino, uint64_t size, uint64_t generation,
            const struct fc_list *l, uint8_t out[FC_RECORD_LEN])
{
    uint8_t mac[FC_MAC_LEN];
    size_t n = 0;

    if (generation == 0)
        return pfs_err(-EINVAL, "commitment generation 0");
    if (compute_mac(key, ino, size, generation, l, mac) < 0)
        return -EIO;
    out[n++] = FC_LAYOUT;
    out[n++] = FC_ALG_HMAC_SHA256;
    for (int i = 0; i < 8; i++)
        out[n++] = (uint8_t)(generation >> (56 - 8 * i));
    for (int i = 0; i < 8; i++)
        out[n++] = (uint8_t)((uint64_t)l->n >> (56 - 8 * i));
    memcpy(out + n, mac, FC_MAC_LEN);
    return 0;
}

int fc_verify(const uint8_t key[FC_KEY_LEN], uint64_t ino, uint64_t size,
              const struct fc_list *l, const uint8_t *in, size_t len,
              uint64_t min_generation, struct fc_record *rec)
{
    struct fc_record r;
    uint8_t mac[FC_MAC_LEN];
    int rc = fc_parse(in, len, &r);

    if (rc < 0)
        return pfs_err(-EBADMSG, "check \"commitment record\" failed: %s", pfs_err_msg());
    if (r.nchunks != l->n)
        return pfs_err(-EBADMSG, "check \"chunk count\" failed: the commitment covers %llu "
                       "chunk records, the metadata has %zu (a record was deleted or added)",
                       (unsigned long long)r.nchunks, l->n);
    if (compute_mac(key, ino, size, r.generation, l, mac) < 0)
        return -EIO;
    if (crypto_memcmp(mac, r.mac, FC_MAC_LEN) != 0)
        return pfs_err(-EBADMSG, "check \"commitment MAC\" failed: the size (%llu) or a chunk "
                       "record (index, version, fragments) is not the one last committed",
                       (unsigned long long)size);
    if (r.generation < min_generation)
        return pfs_err(-EBADMSG, "check \"generation\" failed: commitment generation %llu is "
                       "older than %llu already verified (an older state was put back)",
                       (unsigned long long)r.generation, (unsigned long long)min_generation);
    if (rec)
        *rec = r;
    return 0;
}
