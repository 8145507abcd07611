#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "buf.h"
#include "secmem.h"
#include "tap.h"

static void test_roundtrip_big_endian(void)
{
    struct wbuf w;
    struct rbuf r;
    uint8_t *data, u8 = 0;
    uint16_t u16 = 0;
    uint32_t u32 = 0;
    uint64_t u64 = 0;
    const uint8_t *blob, *ref;
    size_t len, bloblen = 0;
    char raw[3] = { 0 };

    wbuf_init(&w);
    wbuf_put_u8(&w, 0xab);
    wbuf_put_u16(&w, 0x1234);
    wbuf_put_u32(&w, 0xdeadbeef);
    wbuf_put_u64(&w, 0x0102030405060708ULL);
    wbuf_put_str(&w, "hello");
    wbuf_put_bytes(&w, "xyz", 3);
    wbuf_put_blob(&w, NULL, 0);
    REQUIRE(wbuf_status(&w) == 0);
    data = wbuf_steal(&w, &len);
    REQUIRE(data);
    CHECK_EQ_INT(len, 1 + 2 + 4 + 8 + 4 + 5 + 3 + 4);
    /* big-endian on the wire */
    CHECK(data[1] == 0x12 && data[2] == 0x34);
    CHECK(data[3] == 0xde && data[6] == 0xef);
    CHECK(data[7] == 0x01 && data[14] == 0x08);

    rbuf_init(&r, data, len);
    CHECK(rbuf_get_u8(&r, &u8) == 0 && u8 == 0xab);
    CHECK(rbuf_get_u16(&r, &u16) == 0 && u16 == 0x1234);
    CHECK(rbuf_get_u32(&r, &u32) == 0 && u32 == 0xdeadbeef);
    CHECK(rbuf_get_u64(&r, &u64) == 0 && u64 == 0x0102030405060708ULL);
    CHECK(rbuf_get_blob(&r, &blob, &bloblen, 64) == 0 && bloblen == 5);
    CHECK(memcmp(blob, "hello", 5) == 0);
    CHECK(rbuf_get_bytes(&r, raw, 2) == 0 && memcmp(raw, "xy", 2) == 0);
    CHECK(rbuf_get_ref(&r, &ref, 1) == 0 && *ref == 'z');
    CHECK(rbuf_get_blob(&r, &blob, &bloblen, 0) == 0 && bloblen == 0);
    CHECK_EQ_INT(rbuf_remaining(&r), 0);
    CHECK_EQ_INT(rbuf_end(&r), 0);
    free(data);
}

static void test_truncated_input_is_sticky(void)
{
    const uint8_t three[3] = { 1, 2, 3 };
    struct rbuf r;
    uint32_t v = 7;
    uint8_t b = 0;

    rbuf_init(&r, three, sizeof three);
    CHECK_EQ_INT(rbuf_get_u32(&r, &v), -EBADMSG);
    CHECK_EQ_INT(v, 7);                      /* untouched on error */
    /* sticky: even a read that would fit now fails */
    CHECK_EQ_INT(rbuf_get_u8(&r, &b), -EBADMSG);
    CHECK_EQ_INT(rbuf_end(&r), -EBADMSG);
}

static void test_blob_bounds(void)
{
    /* length says 5, only 2 bytes follow */
    const uint8_t short_blob[] = { 0, 0, 0, 5, 'a', 'b' };
    /* length 4 is present, but above the caller's max of 3 */
    const uint8_t big_blob[] = { 0, 0, 0, 4, 'a', 'b', 'c', 'd' };
    /* a huge length must not wrap around */
    const uint8_t huge[] = { 0xff, 0xff, 0xff, 0xff, 'a' };
    const uint8_t *p = NULL;
    size_t n = 0;
    struct rbuf r;

    rbuf_init(&r, short_blob, sizeof short_blob);
    CHECK_EQ_INT(rbuf_get_blob(&r, &p, &n, 100), -EBADMSG);
    rbuf_init(&r, big_blob, sizeof big_blob);
    CHECK_EQ_INT(rbuf_get_blob(&r, &p, &n, 3), -EBADMSG);
    rbuf_init(&r, big_blob, sizeof big_blob);
    CHECK_EQ_INT(rbuf_get_blob(&r, &p, &n, 4), 0);
    CHECK_EQ_INT(n, 4);
    rbuf_init(&r, huge, sizeof huge);
    CHECK_EQ_INT(rbuf_get_blob(&r, &p, &n, SIZE_MAX), -EBADMSG);
}

static void test_trailing_bytes_rejected(void)
{
    const uint8_t data[] = { 1, 2, 3 };
    struct rbuf r;
    uint16_t v;

    rbuf_init(&r, data, sizeof data);
    CHECK_EQ_INT(rbuf_get_u16(&r, &v), 0);
    CHECK_EQ_INT(rbuf_remaining(&r), 1);
    CHECK_EQ_INT(rbuf_end(&r), -EBADMSG);
}

static void test_secure_writer_grows(void)
{
    struct wbuf w;
    uint8_t *out, *slot;
    size_t len;

    wbuf_init_secure(&w);
    for (unsigned i = 0; i < 3000; i++)
        wbuf_put_u32(&w, i);
    slot = wbuf_reserve(&w, 4);
    REQUIRE(slot);
    memcpy(slot, "tail", 4);
    out = wbuf_steal(&w, &len);
    REQUIRE(out);
    CHECK_EQ_INT(len, 3000 * 4 + 4);
    CHECK(out[4 * 2999 + 2] == (2999 >> 8) && out[4 * 2999 + 3] == (2999 & 0xff));
    CHECK(memcmp(out + len - 4, "tail", 4) == 0);
    secmem_free(out, len);
    CHECK(w.data == NULL && w.len == 0);
}

static void test_secmem_basics(void)
{
    uint8_t *p = secmem_alloc(100);
    char *s;
    int zero = 1;

    REQUIRE(p);
    for (int i = 0; i < 100; i++)
        zero &= p[i] == 0;
    CHECK(zero);
    memset(p, 0x5a, 100);
    secmem_wipe(p, 50);
    CHECK(p[0] == 0 && p[49] == 0 && p[50] == 0x5a);
    secmem_free(p, 100);
    s = secmem_strdup("secret");
    REQUIRE(s);
    CHECK(strcmp(s, "secret") == 0);
    secmem_free_str(s);
    secmem_free(NULL, 10);   /* no-op */
}

static void test_harden_process(void)
{
    struct rlimit rl;

    CHECK_EQ_INT(secmem_harden_process(), 0);
    REQUIRE(getrlimit(RLIMIT_CORE, &rl) == 0);
    CHECK(rl.rlim_cur == 0 && rl.rlim_max == 0);
    CHECK_EQ_INT(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
}

int main(void)
{
    RUN(test_roundtrip_big_endian);
    RUN(test_truncated_input_is_sticky);
    RUN(test_blob_bounds);
    RUN(test_trailing_bytes_rejected);
    RUN(test_secure_writer_grows);
    RUN(test_secmem_basics);
    RUN(test_harden_process);
    return tap_done();
}
