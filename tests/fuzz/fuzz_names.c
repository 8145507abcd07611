#include "config.h"

/* Encrypted names and the bounded reader, driven by the input.
 *
 * Input: u8 op, then per op (all integers big-endian, read with rbuf):
 *   0 name_encrypt   u64 parent, name bytes (the rest): must refuse exactly
 *                    the names that are not file names ('/', NUL, ".", "..",
 *                    empty, > NAME_MAX_PLAIN), and round-trip the others
 *   1 name_decrypt   u64 parent, ciphertext (the rest), as read from the
 *                    metadata store; a name that decrypts must be valid
 *   2 rbuf getters   u8 n, n program bytes, then the data they read; each
 *                    getter is checked against a simple model of the reader
 *   3 wbuf -> rbuf   u8 n, n program bytes, then values to write; reading
 *                    them back must give the same values and consume all
 * Output buffers are allocated to the documented size exactly, so an
 * overrun by one byte is an ASan report. */

#include <errno.h>
#include <stdbool.h>

#include "buf.h"
#include "envelope.h"
#include "error.h"
#include "fuzz.h"

FUZZ_TARGET("names", 20000);

static struct folder_keys *keys;

static void teardown(void)
{
    folder_keys_free(keys);
    keys = NULL;
}

static void setup_once(void)
{
    uint8_t fk[FOLDER_KEY_LEN];

    if (keys)
        return;
    for (unsigned i = 0; i < FOLDER_KEY_LEN; i++)
        fk[i] = (uint8_t)(0xa5 ^ i);   /* fixed, so seed ciphertexts decrypt */
    keys = folder_keys_derive(fk, 1);
    if (!keys) {
        fprintf(stderr, "fuzz: folder_keys_derive failed: %s\n", pfs_err_msg());
        exit(2);
    }
    atexit(teardown);
}

static bool is_file_name(const uint8_t *name, size_t len)
{
    if (len == 0 || len > NAME_MAX_PLAIN || memchr(name, '/', len) || memchr(name, 0, len))
        return false;
    return !(len == 1 && name[0] == '.') && !(len == 2 && name[0] == '.' && name[1] == '.');
}

/* ---- names ---- */

static void fuzz_name_encrypt(struct rbuf *r)
{
    uint64_t parent = 0;
    const uint8_t *name;
    size_t len, enclen = 0, declen = 0;
    uint8_t *enc, *enc2;
    char *dec;
    int rc;

    rbuf_get_u64(r, &parent);
    len = rbuf_remaining(r);
    rbuf_get_ref(r, &name, len);
    if (r->err)
        return;
    enc = malloc(len + SIV_TAG_LEN + 1);
    enc2 = malloc(len + SIV_TAG_LEN + 1);
    FUZZ_ASSERT(enc && enc2);
    rc = name_encrypt(keys, parent, (const char *)name, len, enc, &enclen);
    FUZZ_ASSERT((rc == 0) == is_file_name(name, len));
    if (rc == 0) {
        fuzz_accepted++;
        FUZZ_ASSERT(enclen == len + SIV_TAG_LEN + 1);
        /* Deterministic (lookups use an index). */
        FUZZ_ASSERT(name_encrypt(keys, parent, (const char *)name, len, enc2, &enclen) == 0);
        FUZZ_ASSERT(memcmp(enc, enc2, enclen) == 0);
        dec = malloc(enclen);
        FUZZ_ASSERT(dec);
        FUZZ_ASSERT(name_decrypt(keys, parent, enc, enclen, dec, &declen) == 0);
        FUZZ_ASSERT(declen == len && memcmp(dec, name, len) == 0 && dec[len] == '\0');
        /* Bound to its directory: another parent does not decrypt it. */
        FUZZ_ASSERT(name_decrypt(keys, parent + 1, enc, enclen, dec, &declen) == -EBADMSG);
        free(dec);
    } else {
        FUZZ_ASSERT(rc == -EINVAL || rc == -ENAMETOOLONG);
    }
    free(enc);
    free(enc2);
}

static void fuzz_name_decrypt(struct rbuf *r)
{
    uint64_t parent = 0;
    const uint8_t *in;
    size_t inlen, outlen = 0;
    char *out;
    int rc;

    rbuf_get_u64(r, &parent);
    inlen = rbuf_remaining(r);
    rbuf_get_ref(r, &in, inlen);
    if (r->err)
        return;
    out = malloc(inlen ? inlen : 1);
    FUZZ_ASSERT(out);
    rc = name_decrypt(keys, parent, in, inlen, out, &outlen);
    if (rc == 0) {
        fuzz_accepted++;
        FUZZ_ASSERT(outlen < inlen && out[outlen] == '\0');
        FUZZ_ASSERT(is_file_name((const uint8_t *)out, outlen));
    } else {
        FUZZ_ASSERT(rc == -EBADMSG);
    }
    free(out);
}

/* ---- the bounded reader against a model ---- */

struct model {
    size_t off, len;
    bool err;
    bool failed_at_known;   /* off copied from the reader after the failure */
};

/* What a getter of n bytes must do: advance, or fail and stay failed. */
static bool model_take(struct model *m, size_t n)
{
    if (m->err || n > m->len - m->off) {
        m->err = true;
        return false;
    }
    m->off += n;
    return true;
}

static uint64_t be_value(const uint8_t *p, size_t n)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static void check_int_getter(struct rbuf *r, struct model *m, const uint8_t *data,
                             unsigned width)
{
    size_t at = m->off;
    uint8_t v8;
    uint16_t v16;
    uint32_t v32;
    uint64_t v64 = 0, got = 0;
    int rc;

    switch (width) {
    case 1: rc = rbuf_get_u8(r, &v8); got = v8; break;
    case 2: rc = rbuf_get_u16(r, &v16); got = v16; break;
    case 4: rc = rbuf_get_u32(r, &v32); got = v32; break;
    default: rc = rbuf_get_u64(r, &v64); got = v64; break;
    }
    FUZZ_ASSERT((rc == 0) == model_take(m, width));
    if (rc == 0)
        FUZZ_ASSERT(got == be_value(data + at, width));
}

static void check_blob_getter(struct rbuf *r, struct model *m, const uint8_t *data,
                              size_t max)
{
    size_t at = m->off, n = 0;
    const uint8_t *p = NULL;
    int rc = rbuf_get_blob(r, &p, &n, max);
    bool ok = !m->err && m->len - m->off >= 4;
    uint64_t want = ok ? be_value(data + at, 4) : 0;

    ok = ok && want <= max && want <= m->len - m->off - 4;
    if (ok) {
        m->off += 4 + (size_t)want;
    } else {
        m->err = true;
    }
    FUZZ_ASSERT((rc == 0) == ok);
    if (rc == 0)
        FUZZ_ASSERT(n == want && p == data + at + 4);
}

static void run_reader_op(struct rbuf *r, struct model *m, const uint8_t *data, uint8_t op)
{
    size_t arg = op >> 3, at = m->off;
    const uint8_t *p = NULL;
    uint8_t copy[32];
    int rc;

    switch (op & 7) {
    case 0: check_int_getter(r, m, data, 1); break;
    case 1: check_int_getter(r, m, data, 2); break;
    case 2: check_int_getter(r, m, data, 4); break;
    case 3: check_int_getter(r, m, data, 8); break;
    case 4:
        rc = rbuf_get_bytes(r, copy, arg);
        FUZZ_ASSERT((rc == 0) == model_take(m, arg));
        if (rc == 0)
            FUZZ_ASSERT(memcmp(copy, data + at, arg) == 0);
        break;
    case 5:
        rc = rbuf_get_ref(r, &p, arg * 8);
        FUZZ_ASSERT((rc == 0) == model_take(m, arg * 8));
        if (rc == 0)
            FUZZ_ASSERT(p == data + at);
        break;
    case 6: check_blob_getter(r, m, data, arg * 16); break;
    default: check_blob_getter(r, m, data, SIZE_MAX); break;
    }
    FUZZ_ASSERT((r->err != 0) == m->err);
    /* Where a failed getter leaves the offset is not specified (a blob's
     * length may be consumed); after that, nothing may move it. */
    if (m->err && !m->failed_at_known) {
        FUZZ_ASSERT(r->off <= r->len);
        m->off = r->off;
        m->failed_at_known = true;
    }
    FUZZ_ASSERT(r->off == m->off);
    FUZZ_ASSERT(rbuf_remaining(r) == m->len - m->off);
}

static void fuzz_reader(struct rbuf *in)
{
    const uint8_t *prog, *data;
    uint8_t n = 0;
    size_t len;
    struct rbuf r;
    struct model m;

    rbuf_get_u8(in, &n);
    rbuf_get_ref(in, &prog, n);
    len = rbuf_remaining(in);
    rbuf_get_ref(in, &data, len);
    if (in->err)
        return;
    rbuf_init(&r, data, len);
    m = (struct model){ .off = 0, .len = len };
    for (unsigned i = 0; i < n; i++)
        run_reader_op(&r, &m, data, prog[i]);
    FUZZ_ASSERT((rbuf_end(&r) == 0) == (!m.err && m.off == m.len));
    if (!m.err)
        fuzz_accepted++;
}

/* ---- writer then reader: what is written reads back ---- */

static void fuzz_writer(struct rbuf *in)
{
    const uint8_t *prog, *vals;
    uint8_t n = 0;
    size_t vlen, vpos = 0, outlen = 0;
    struct wbuf w;
    struct rbuf r;
    uint8_t *out;

    rbuf_get_u8(in, &n);
    rbuf_get_ref(in, &prog, n);
    vlen = rbuf_remaining(in);
    rbuf_get_ref(in, &vals, vlen);
    if (in->err)
        return;
    wbuf_init(&w);
    for (unsigned i = 0; i < n; i++) {
        size_t want = (prog[i] & 3) == 3 ? 8 : (size_t)1 << (prog[i] & 3);
        size_t blob = prog[i] >> 2;

        if ((prog[i] & 4) && vpos + blob <= vlen) {
            wbuf_put_blob(&w, vals + vpos, blob >> 1);
            vpos += blob >> 1;
        } else if (vpos + want <= vlen) {
            uint64_t v = be_value(vals + vpos, want);
            switch (want) {
            case 1: wbuf_put_u8(&w, (uint8_t)v); break;
            case 2: wbuf_put_u16(&w, (uint16_t)v); break;
            case 4: wbuf_put_u32(&w, (uint32_t)v); break;
            default: wbuf_put_u64(&w, v); break;
            }
            vpos += want;
        }
    }
    FUZZ_ASSERT(wbuf_status(&w) == 0);
    out = wbuf_steal(&w, &outlen);
    /* Replay the same decisions with the reader. */
    rbuf_init(&r, out, outlen);
    vpos = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t want = (prog[i] & 3) == 3 ? 8 : (size_t)1 << (prog[i] & 3);
        size_t blob = prog[i] >> 2;

        if ((prog[i] & 4) && vpos + blob <= vlen) {
            const uint8_t *p;
            size_t got = 0;
            FUZZ_ASSERT(rbuf_get_blob(&r, &p, &got, 255) == 0);
            FUZZ_ASSERT(got == blob >> 1 && (got == 0 || memcmp(p, vals + vpos, got) == 0));
            vpos += blob >> 1;
        } else if (vpos + want <= vlen) {
            uint8_t raw[8];
            FUZZ_ASSERT(rbuf_get_bytes(&r, raw, want) == 0);
            FUZZ_ASSERT(memcmp(raw, vals + vpos, want) == 0);
            vpos += want;
        }
    }
    FUZZ_ASSERT(rbuf_end(&r) == 0);
    free(out);
    fuzz_accepted++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rbuf in;
    uint8_t op = 0;

    setup_once();
    rbuf_init(&in, data, size);
    if (rbuf_get_u8(&in, &op) != 0)
        return 0;
    switch (op % 4) {
    case 0: fuzz_name_encrypt(&in); break;
    case 1: fuzz_name_decrypt(&in); break;
    case 2: fuzz_reader(&in); break;
    default: fuzz_writer(&in); break;
    }
    return 0;
}
