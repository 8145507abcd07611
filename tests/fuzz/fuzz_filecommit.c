#include "config.h"

/* The per-file commitment: its record parser and verifier with hostile
 * records and hostile chunk lists, as a database operator could write them.
 *
 * Input: u8 op, then (integers big-endian, read with rbuf):
 *   0 seal + tamper  u64 ino, u64 size, u64 generation, u8 n, n entries
 *                    (u64 idx, u64 version, u8 tweak), u8 what, u8 where,
 *                    u8 xor.  The record is sealed over the list, then one
 *                    thing is altered (what: 0 record byte, 1 size, 2 ino,
 *                    3 an entry's version, 4 an entry's index, 5 an entry's
 *                    record bytes, 6 drop an entry, 7 min generation above
 *                    the record's) unless xor is 0.  Verification must
 *                    succeed exactly when nothing changed.
 *   1 raw record     u64 ino, u64 size, u8 n, n entries as above, then the
 *                    record (the rest).  A record that parses is exactly
 *                    FC_RECORD_LEN bytes of layout 1 / alg 1 / generation
 *                    > 0; one that verifies is byte for byte the one
 *                    fc_seal makes for that generation. */

#include <errno.h>

#include "buf.h"
#include "error.h"
#include "filecommit.h"
#include "fuzz.h"

FUZZ_TARGET("filecommit", 20000);

#define ENTRIES_MAX 64

static uint8_t key[FC_KEY_LEN];

static void setup_once(void)
{
    static int done;
    uint8_t dek[32];

    if (done)
        return;
    for (unsigned i = 0; i < sizeof dek; i++)
        dek[i] = (uint8_t)(0x5a ^ (i * 3));
    if (fc_key_derive(dek, key) != 0) {
        fprintf(stderr, "fuzz: fc_key_derive failed: %s\n", pfs_err_msg());
        exit(2);
    }
    done = 1;
}

static struct chunk_ref ref_of(uint64_t version, uint8_t tweak)
{
    struct chunk_ref r;

    memset(&r, 0, sizeof r);
    r.version = version;
    r.k = 2;
    r.m = 1;
    r.plain_len = 4096u + tweak;
    r.sealed_len = r.plain_len + 29;
    r.rotation = tweak % 3;
    for (unsigned i = 0; i < CHUNK_ID_LEN; i++)
        r.chunk_id[i] = (uint8_t)(tweak + i);
    for (unsigned f = 0; f < 3; f++)
        r.sums[f][0] = (uint8_t)(tweak ^ f);
    return r;
}

/* n entries from the input; returns -1 on short input or bad list. */
static int read_list(struct rbuf *r, struct fc_list *l, struct chunk_ref *refs, uint64_t *idxs,
                     uint8_t *n_out)
{
    uint8_t n = 0;

    rbuf_get_u8(r, &n);
    n %= ENTRIES_MAX + 1;
    for (unsigned i = 0; i < n; i++) {
        uint64_t idx = 0, ver = 0;
        uint8_t tweak = 0;
        rbuf_get_u64(r, &idx);
        rbuf_get_u64(r, &ver);
        rbuf_get_u8(r, &tweak);
        if (r->err)
            return -1;
        refs[i] = ref_of(ver, tweak);
        idxs[i] = idx;
        if (fc_list_set(l, idx, &refs[i]) != 0)
            return -1;
    }
    *n_out = n;
    /* the list is sorted and each index appears once */
    for (size_t i = 1; i < l->n; i++)
        FUZZ_ASSERT(l->e[i - 1].idx < l->e[i].idx);
    return r->err ? -1 : 0;
}

static void fuzz_seal_tamper(struct rbuf *r)
{
    struct fc_list l, m;
    struct chunk_ref refs[ENTRIES_MAX];
    uint64_t idxs[ENTRIES_MAX], ino = 0, size = 0, gen = 0, min_gen = 0;
    uint8_t n = 0, what = 0, where = 0, x = 0, rec[FC_RECORD_LEN];
    int changed = 0, rc;

    fc_list_init(&l);
    fc_list_init(&m);
    rbuf_get_u64(r, &ino);
    rbuf_get_u64(r, &size);
    rbuf_get_u64(r, &gen);
    if (read_list(r, &l, refs, idxs, &n) < 0)
        goto out;
    rbuf_get_u8(r, &what);
    rbuf_get_u8(r, &where);
    rbuf_get_u8(r, &x);
    if (r->err || gen == 0)
        goto out;
    FUZZ_ASSERT(fc_seal(key, ino, size, gen, &l, rec) == 0);
    FUZZ_ASSERT(fc_list_copy(&m, &l) == 0);
    if (x) {
        switch (what % 8) {
        case 0: rec[where % FC_RECORD_LEN] ^= x; changed = 1; break;
        case 1: size ^= x; changed = 1; break;
        case 2: ino ^= x; changed = 1; break;
        case 7: min_gen = gen + x; changed = 1; break;
        default:
            if (m.n) {
                struct fc_entry *e = &m.e[where % m.n];
                if (what % 8 == 3)
                    e->version ^= x;
                else if (what % 8 == 5)
                    e->digest[x % SHA256_LEN] ^= 1;
                else if (what % 8 == 6) {
                    memmove(e, e + 1, (size_t)(m.e + m.n - e - 1) * sizeof *e);
                    m.n--;
                } else {
                    /* move to an index no other entry has */
                    uint64_t to = e->idx ^ x;
                    if (fc_list_find(&m, to))
                        break;
                    e->idx = to;
                    struct fc_entry tmp = *e;   /* keep sorted */
                    memmove(e, e + 1, (size_t)(m.e + m.n - e - 1) * sizeof *e);
                    m.n--;
                    size_t pos = 0;
                    while (pos < m.n && m.e[pos].idx < to)
                        pos++;
                    memmove(m.e + pos + 1, m.e + pos, (m.n - pos) * sizeof *e);
                    m.e[pos] = tmp;
                    m.n++;
                }
                changed = 1;
            }
            break;
        }
    }
    rc = fc_verify(key, ino, size, &m, rec, sizeof rec, min_gen, NULL);
    if (rc == 0)
        fuzz_accepted++;
    FUZZ_ASSERT(changed ? rc == -EBADMSG : rc == 0);
out:
    fc_list_free(&l);
    fc_list_free(&m);
}

static void fuzz_raw_record(struct rbuf *r)
{
    struct fc_list l;
    struct chunk_ref refs[ENTRIES_MAX];
    struct fc_record rec;
    uint64_t idxs[ENTRIES_MAX], ino = 0, size = 0;
    uint8_t n = 0, again[FC_RECORD_LEN];
    const uint8_t *in;
    size_t len;
    int rc;

    fc_list_init(&l);
    rbuf_get_u64(r, &ino);
    rbuf_get_u64(r, &size);
    if (read_list(r, &l, refs, idxs, &n) < 0)
        goto out;
    len = rbuf_remaining(r);
    if (rbuf_get_ref(r, &in, len) != 0)
        goto out;
    if (fc_parse(in, len, &rec) == 0) {
        FUZZ_ASSERT(len == FC_RECORD_LEN && in[0] == FC_LAYOUT && in[1] == FC_ALG_HMAC_SHA256);
        FUZZ_ASSERT(rec.generation > 0);
    }
    rc = fc_verify(key, ino, size, &l, in, len, 0, &rec);
    if (rc == 0) {
        fuzz_accepted++;
        FUZZ_ASSERT(rec.nchunks == l.n);
        FUZZ_ASSERT(fc_seal(key, ino, size, rec.generation, &l, again) == 0);
        FUZZ_ASSERT(memcmp(again, in, FC_RECORD_LEN) == 0);
    } else {
        FUZZ_ASSERT(rc == -EBADMSG);
    }
    /* every ref the list holds matches its own entry, no other */
    for (unsigned i = 0; i < n; i++) {
        const struct fc_entry *e = fc_list_find(&l, idxs[i]);
        FUZZ_ASSERT(e != NULL);
    }
out:
    fc_list_free(&l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rbuf r;
    uint8_t op = 0;

    setup_once();
    rbuf_init(&r, data, size);
    if (rbuf_get_u8(&r, &op) != 0)
        return 0;
    if (op % 2 == 0)
        fuzz_seal_tamper(&r);
    else
        fuzz_raw_record(&r);
    return 0;
}
