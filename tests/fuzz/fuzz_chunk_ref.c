#include "config.h"

/* The object layer with hostile metadata and hostile fragments, and the
 * small key containers read from the metadata store.
 *
 * Setup: four directory endpoints, an object layer k=2 m=1 over them, and a
 * few real chunks written under a fixed data key.  Input: u8 op, then
 * (integers big-endian, read with rbuf):
 *   0 edited ref     u8 base chunk, u8 mask, then the fields whose mask bit
 *                    is set: 0 chunk_id[16], 1 u64 version, 2 u32 plain_len,
 *                    3 u32 sealed_len, 4 u8 k,m,rotation, 5 u8 i + sum[32],
 *                    6 u64 ino + u64 idx.  object_verify_chunk, then
 *                    object_get_chunk; whatever opens must be the base
 *                    chunk's own plaintext at its own (ino, idx, version).
 *   1 hostile frags  u8 k, m, rotation, u8 flags, u64 ino, idx, version,
 *                    u32 plain_len, then one blob per fragment: written to
 *                    the endpoints with matching checksums in the ref (as a
 *                    database and endpoint operator together could), then
 *                    verify, get and repair.  flags bit 0: keep each blob's
 *                    own length instead of fitting it to the fragment size;
 *                    bit 1: do not record fragment 0's checksum (a corrupt
 *                    fragment, so decode and repair run).
 *   2 dek_unwrap     u64 ino, wrapped DEK (the rest)
 *   3 envelope_open  u64 folder id, u32 key version, blob vault id,
 *                    envelope (the rest), with the built-in test key
 *   4 folder_meta_open  blob associated data, sealed value (the rest)
 */

#include <errno.h>
#include <stdbool.h>

#include "buf.h"
#include "crypto.h"
#include "envelope.h"
#include "erasure.h"
#include "error.h"
#include "fuzz.h"
#include "object.h"
#include "store.h"

FUZZ_TARGET("chunk_ref", 1500);

#define NSTORES 4
#define NBASE 3
#define FUZZ_PLAIN_MAX (256u * 1024u)   /* larger refs: verify only */
#define FRAG_BLOB_MAX (64u * 1024u)

struct base_chunk {
    uint64_t ino, idx, version;
    uint32_t len;
    struct chunk_ref ref;
};

static char scratch[256];
static struct store *stores[NSTORES];
static struct object_layer *layer;
static struct base_chunk base[NBASE];
static uint8_t dek[DEK_LEN];
static struct folder_keys *fkeys;
static EVP_PKEY *member_key;
static uint32_t seal_overhead;

/* Deterministic plaintext of a base chunk, so reads can be checked. */
static uint8_t plain_byte(unsigned chunk, size_t i)
{
    return (uint8_t)(chunk * 131 + i * 7 + (i >> 8));
}

static void fixed_key(uint8_t *k, size_t n, uint8_t tweak)
{
    for (size_t i = 0; i < n; i++)
        k[i] = (uint8_t)(tweak ^ (i * 29));
}

static void teardown(void)
{
    object_layer_free(layer);
    layer = NULL;
    for (unsigned i = 0; i < NSTORES; i++) {
        store_close(stores[i]);
        stores[i] = NULL;
    }
    folder_keys_free(fkeys);
    fkeys = NULL;
    EVP_PKEY_free(member_key);
    member_key = NULL;
    fuzz_rm_tree(scratch);
}

static void die(const char *what)
{
    fprintf(stderr, "fuzz: setup failed (%s): %s\n", what, pfs_err_msg());
    exit(2);
}

static void put_base_chunks(void)
{
    static const uint32_t lens[NBASE] = { 1000, 4096, 1 };
    uint8_t *plain = malloc(4096);

    if (!plain)
        die("malloc");
    for (unsigned c = 0; c < NBASE; c++) {
        base[c] = (struct base_chunk){ .ino = 7 + c, .idx = c * 3, .version = c + 1,
                                       .len = lens[c] };
        for (size_t i = 0; i < lens[c]; i++)
            plain[i] = plain_byte(c, i);
        if (object_put_chunk(layer, dek, base[c].ino, base[c].idx, base[c].version, plain,
                             lens[c], &base[c].ref) != 0)
            die("object_put_chunk");
    }
    free(plain);
    if (object_layer_sync(layer) != 0)
        die("object_layer_sync");
    seal_overhead = base[0].ref.sealed_len - base[0].ref.plain_len;
}

static void setup_once(void)
{
    uint8_t fk[FOLDER_KEY_LEN];
    char path[512];

    if (layer)
        return;
    fuzz_scratch_dir(scratch, sizeof scratch, "chunk");
    atexit(teardown);
    for (unsigned i = 0; i < NSTORES; i++) {
        snprintf(path, sizeof path, "%s/ep%u", scratch, i);
        if (store_dir_open(path, 1, &stores[i]) != 0)
            die("store_dir_open");
    }
    if (object_layer_new(stores, NSTORES, 2, 1, &layer) != 0)
        die("object_layer_new");
    fixed_key(dek, sizeof dek, 0x3c);
    fixed_key(fk, sizeof fk, 0xc3);
    if (!(fkeys = folder_keys_derive(fk, 1)))
        die("folder_keys_derive");
    member_key = fuzz_test_key();
    put_base_chunks();
}

/* ---- op 0: a real ref with edited fields ---- */

static void read_overrides(struct rbuf *r, uint8_t mask, struct chunk_ref *ref,
                           uint64_t *ino, uint64_t *idx)
{
    uint8_t i = 0;

    if (mask & 1)
        rbuf_get_bytes(r, ref->chunk_id, CHUNK_ID_LEN);
    if (mask & 2)
        rbuf_get_u64(r, &ref->version);
    if (mask & 4) {
        rbuf_get_u32(r, &ref->plain_len);
        ref->sealed_len = ref->plain_len + seal_overhead;   /* may wrap: fine */
    }
    if (mask & 8)
        rbuf_get_u32(r, &ref->sealed_len);
    if (mask & 16) {
        rbuf_get_u8(r, &ref->k);
        rbuf_get_u8(r, &ref->m);
        rbuf_get_u8(r, &ref->rotation);
    }
    if (mask & 32) {
        rbuf_get_u8(r, &i);
        rbuf_get_bytes(r, ref->sums[i % EC_MAX_FRAGS], FRAG_SUM_LEN);
    }
    if (mask & 64) {
        rbuf_get_u64(r, ino);
        rbuf_get_u64(r, idx);
    }
}

static void fuzz_edited_ref(struct rbuf *r)
{
    uint8_t which = 0, mask = 0;
    uint32_t bad = 0;
    const struct base_chunk *b;
    struct chunk_ref ref;
    uint64_t ino, idx;
    uint8_t *plain;
    int rc;

    rbuf_get_u8(r, &which);
    rbuf_get_u8(r, &mask);
    b = &base[which % NBASE];
    ref = b->ref;
    ino = b->ino;
    idx = b->idx;
    read_overrides(r, mask, &ref, &ino, &idx);
    if (r->err)
        return;
    rc = object_verify_chunk(layer, &ref, &bad);
    FUZZ_ASSERT(rc == 0 || rc == -EIO);
    if (ref.plain_len > FUZZ_PLAIN_MAX)
        return;
    plain = malloc(ref.plain_len ? ref.plain_len : 1);
    FUZZ_ASSERT(plain);
    rc = object_get_chunk(layer, dek, ino, idx, &ref, plain, &bad);
    if (rc == 0) {
        /* Only the chunk itself, where it belongs, may ever open. */
        fuzz_accepted++;
        FUZZ_ASSERT(ino == b->ino && idx == b->idx && ref.version == b->version);
        FUZZ_ASSERT(ref.plain_len == b->len);
        for (size_t i = 0; i < b->len; i++)
            FUZZ_ASSERT(plain[i] == plain_byte((unsigned)(b - base), i));
    } else {
        FUZZ_ASSERT(rc == -EIO || rc == -ENOMEM);
    }
    free(plain);
}

/* ---- op 1: fragments with arbitrary bytes ---- */

static const uint8_t hostile_id[CHUNK_ID_LEN] = {
    0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0,
};

/* Fragment length the object layer will expect for this ref, or 0 if the
 * coding is one ec_new refuses. */
static size_t expected_fraglen(const struct chunk_ref *ref)
{
    struct ec_codec *c;
    size_t len;

    if (ref->k < 1 || (unsigned)ref->k + ref->m > EC_MAX_FRAGS || ec_new(ref->k, ref->m, &c))
        return 0;
    len = ec_fragment_len(c, ref->sealed_len);
    ec_free(c);
    return len;
}

/* Write fragment i (blob fitted to fraglen unless keep_len) and record its
 * checksum in the ref. */
static void plant_fragment(struct chunk_ref *ref, unsigned i, const uint8_t *blob,
                           size_t bloblen, size_t fraglen, bool keep_len)
{
    size_t len = keep_len ? bloblen : fraglen;
    uint8_t *frag = calloc(1, len ? len : 1);
    char name[OBJECT_NAME_MAX];

    FUZZ_ASSERT(frag);
    memcpy(frag, blob, bloblen < len ? bloblen : len);
    sha256(frag, len, ref->sums[i]);
    object_fragment_name(ref->chunk_id, i, name);
    store_put(stores[object_fragment_store(layer, ref, i)], name, frag, len);
    free(frag);
}

static void fuzz_hostile_fragments(struct rbuf *r)
{
    struct chunk_ref ref = { 0 };
    uint8_t flags = 0;
    uint64_t ino = 0, idx = 0;
    uint32_t bad = 0;
    size_t fraglen;
    unsigned nf;
    uint8_t *plain;
    int rc;

    memcpy(ref.chunk_id, hostile_id, CHUNK_ID_LEN);
    rbuf_get_u8(r, &ref.k);
    rbuf_get_u8(r, &ref.m);
    rbuf_get_u8(r, &ref.rotation);
    rbuf_get_u8(r, &flags);
    rbuf_get_u64(r, &ino);
    rbuf_get_u64(r, &idx);
    rbuf_get_u64(r, &ref.version);
    rbuf_get_u32(r, &ref.plain_len);
    ref.plain_len %= FUZZ_PLAIN_MAX + 1;
    ref.sealed_len = ref.plain_len + seal_overhead;
    fraglen = expected_fraglen(&ref);
    nf = (unsigned)ref.k + ref.m;
    if (r->err || fraglen == 0 || nf > NSTORES || ref.rotation >= NSTORES)
        return;   /* check_ref refuses these; op 0 covers that */
    for (unsigned i = 0; i < nf; i++) {
        const uint8_t *blob = NULL;
        size_t bloblen = 0;
        if (rbuf_get_blob(r, &blob, &bloblen, FRAG_BLOB_MAX) == 0)
            plant_fragment(&ref, i, blob, bloblen, fraglen, flags & 1);
    }
    if (flags & 2)
        memset(ref.sums[0], 0, FRAG_SUM_LEN);
    rc = object_verify_chunk(layer, &ref, &bad);
    FUZZ_ASSERT(rc == 0 || rc == -EIO);
    if (rc == 0 && bad)
        object_repair_chunk(layer, &ref, bad);
    plain = malloc(ref.plain_len ? ref.plain_len : 1);
    FUZZ_ASSERT(plain);
    rc = object_get_chunk(layer, dek, ino, idx, &ref, plain, &bad);
    if (rc == 0)
        fuzz_accepted++;
    free(plain);
    object_delete_chunk(layer, &ref);
}

/* ---- ops 2-4: key containers ---- */

static void fuzz_dek_unwrap(struct rbuf *r)
{
    uint64_t ino = 0;
    const uint8_t *in;
    size_t inlen;
    uint8_t out[DEK_LEN];

    rbuf_get_u64(r, &ino);
    inlen = rbuf_remaining(r);
    if (rbuf_get_ref(r, &in, inlen) != 0)
        return;
    if (dek_unwrap(fkeys, ino, in, inlen, out) == 0) {
        fuzz_accepted++;
        FUZZ_ASSERT(inlen == DEK_WRAPPED_LEN);
    }
}

static void fuzz_envelope_open(struct rbuf *r)
{
    uint64_t folder = 0;
    uint32_t version = 0;
    const uint8_t *vault, *env;
    size_t vaultlen = 0, envlen;
    char vault_id[256];
    uint8_t fk[FOLDER_KEY_LEN];

    rbuf_get_u64(r, &folder);
    rbuf_get_u32(r, &version);
    rbuf_get_blob(r, &vault, &vaultlen, sizeof vault_id - 1);
    envlen = rbuf_remaining(r);
    if (rbuf_get_ref(r, &env, envlen) != 0)
        return;
    memcpy(vault_id, vault, vaultlen);
    vault_id[vaultlen] = '\0';
    if (envelope_open(member_key, vault_id, folder, version, env, envlen, fk) == 0)
        fuzz_accepted++;
}

static void fuzz_folder_meta_open(struct rbuf *r)
{
    const uint8_t *ad, *in;
    size_t adlen = 0, inlen, outlen = 0;
    uint8_t *out = NULL;

    rbuf_get_blob(r, &ad, &adlen, 4096);
    inlen = rbuf_remaining(r);
    if (rbuf_get_ref(r, &in, inlen) != 0)
        return;
    if (folder_meta_open(fkeys, ad, adlen, in, inlen, &out, &outlen) == 0) {
        fuzz_accepted++;
        FUZZ_ASSERT(out && outlen + 1 + AEAD_OVERHEAD == inlen && out[outlen] == '\0');
    } else {
        FUZZ_ASSERT(out == NULL);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rbuf r;
    uint8_t op = 0;

    setup_once();
    rbuf_init(&r, data, size);
    if (rbuf_get_u8(&r, &op) != 0)
        return 0;
    switch (op % 5) {
    case 0: fuzz_edited_ref(&r); break;
    case 1: fuzz_hostile_fragments(&r); break;
    case 2: fuzz_dek_unwrap(&r); break;
    case 3: fuzz_envelope_open(&r); break;
    default: fuzz_folder_meta_open(&r); break;
    }
    return 0;
}
