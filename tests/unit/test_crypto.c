#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "error.h"
#include "secmem.h"
#include "tap.h"

/* Hex test vectors into a malloc'd buffer (or NULL for ""). */
static uint8_t *unhex(const char *hex, size_t *n)
{
    size_t len = strlen(hex) / 2;
    uint8_t *p = malloc(len ? len : 1);

    if (!p || hex_decode(hex, p, len) != 0) {
        free(p);
        return NULL;
    }
    *n = len;
    return p;
}

/* ---- AES-256-GCM: McGrew & Viega, "The Galois/Counter Mode of Operation",
 * test cases 13-16 (the AES-256 ones). ---- */
struct gcm_vector {
    const char *key, *iv, *pt, *aad, *ct, *tag;
};

#define K15 "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
#define P15 "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72" \
            "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
#define C15 "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa" \
            "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
static const struct gcm_vector gcm_vectors[] = {
    { "0000000000000000000000000000000000000000000000000000000000000000",
      "000000000000000000000000", "", "", "",
      "530f8afbc74536b9a963b4f1c4cb738b" },
    { "0000000000000000000000000000000000000000000000000000000000000000",
      "000000000000000000000000", "00000000000000000000000000000000", "",
      "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919" },
    { K15, "cafebabefacedbaddecaf888", P15, "", C15, "b094dac5d93471bdec1a502270e3cc6c" },
    { K15, "cafebabefacedbaddecaf888",
      "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
      "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
      "feedfacedeadbeeffeedfacedeadbeefabaddad2",
      "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
      "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
      "76fc6ece0f4e1768cddf8853bb2d551b" },
};

static void test_gcm_published_vectors(void)
{
    for (size_t i = 0; i < sizeof gcm_vectors / sizeof gcm_vectors[0]; i++) {
        const struct gcm_vector *v = &gcm_vectors[i];
        size_t kl, il, pl, al, cl, tl;
        uint8_t *key = unhex(v->key, &kl), *iv = unhex(v->iv, &il), *pt = unhex(v->pt, &pl);
        uint8_t *aad = unhex(v->aad, &al), *ct = unhex(v->ct, &cl), *tag = unhex(v->tag, &tl);
        uint8_t out[64], back[64], t[16];

        REQUIRE(key && iv && pt && aad && ct && tag && kl == 32 && il == 12 && pl == cl);
        CHECK_EQ_INT(gcm_encrypt(key, iv, aad, al, pt, pl, out, t), 0);
        CHECK_MEM(out, ct, cl);
        CHECK_MEM(t, tag, 16);
        CHECK_EQ_INT(gcm_decrypt(key, iv, aad, al, ct, cl, tag, back), 0);
        CHECK_MEM(back, pt, pl);
        tag[15] ^= 1;
        CHECK_EQ_INT(gcm_decrypt(key, iv, aad, al, ct, cl, tag, back), -EBADMSG);
        free(key); free(iv); free(pt); free(aad); free(ct); free(tag);
    }
}

static void test_aead_tamper_rejected(void)
{
    uint8_t key[32], key2[32], pt[100], out[100 + AEAD_OVERHEAD], back[100];
    const char ad[] = "chunk 7 of file 42";

    crypto_random(key, sizeof key);
    crypto_random(key2, sizeof key2);
    crypto_random(pt, sizeof pt);
    REQUIRE(aead_seal(key, ad, sizeof ad, pt, sizeof pt, out) == 0);
    CHECK_EQ_INT(aead_open(key, ad, sizeof ad, out, sizeof out, back), 0);
    CHECK_MEM(back, pt, sizeof pt);

    out[0] ^= 1;                                   /* nonce */
    CHECK_EQ_INT(aead_open(key, ad, sizeof ad, out, sizeof out, back), -EBADMSG);
    out[0] ^= 1;
    out[AEAD_NONCE_LEN + 5] ^= 0x80;               /* ciphertext */
    CHECK_EQ_INT(aead_open(key, ad, sizeof ad, out, sizeof out, back), -EBADMSG);
    out[AEAD_NONCE_LEN + 5] ^= 0x80;
    out[sizeof out - 1] ^= 1;                      /* tag */
    CHECK_EQ_INT(aead_open(key, ad, sizeof ad, out, sizeof out, back), -EBADMSG);
    out[sizeof out - 1] ^= 1;
    CHECK_EQ_INT(aead_open(key, "chunk 8 of file 42", sizeof ad, out, sizeof out, back),
                 -EBADMSG);                        /* associated data */
    CHECK_EQ_INT(aead_open(key2, ad, sizeof ad, out, sizeof out, back), -EBADMSG);
    CHECK_EQ_INT(aead_open(key, ad, sizeof ad, out, sizeof out - 1, back), -EBADMSG);
    CHECK_EQ_INT(aead_open(key, ad, sizeof ad, out, AEAD_OVERHEAD - 1, back), -EBADMSG);
    CHECK_EQ_INT(aead_open(key, ad, sizeof ad, out, sizeof out, back), 0);
}

static void test_aead_fresh_nonce_and_empty(void)
{
    uint8_t key[32] = { 1 }, a[10 + AEAD_OVERHEAD], b[10 + AEAD_OVERHEAD], e[AEAD_OVERHEAD];
    uint8_t back[10];

    REQUIRE(aead_seal(key, NULL, 0, "0123456789", 10, a) == 0);
    REQUIRE(aead_seal(key, NULL, 0, "0123456789", 10, b) == 0);
    CHECK(memcmp(a, b, AEAD_NONCE_LEN) != 0);
    CHECK(memcmp(a, b, sizeof a) != 0);
    CHECK_EQ_INT(aead_seal(key, "x", 1, NULL, 0, e), 0);
    CHECK_EQ_INT(aead_open(key, "x", 1, e, sizeof e, back), 0);
    CHECK_EQ_INT(aead_open(key, "y", 1, e, sizeof e, back), -EBADMSG);
}

/* ---- HKDF: RFC 5869 test cases 1-3 ---- */
static void check_hkdf(const char *ikm_h, const char *salt_h, const char *info_h,
                       const char *okm_h)
{
    size_t il, sl, nl, ol;
    uint8_t *ikm = unhex(ikm_h, &il), *salt = unhex(salt_h, &sl), *info = unhex(info_h, &nl);
    uint8_t *okm = unhex(okm_h, &ol), out[128];

    REQUIRE(ikm && salt && info && okm && ol <= sizeof out);
    CHECK_EQ_INT(hkdf_sha256(ikm, il, salt, sl, info, nl, out, ol), 0);
    CHECK_MEM(out, okm, ol);
    free(ikm); free(salt); free(info); free(okm);
}

static void test_hkdf_rfc5869(void)
{
    check_hkdf("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "000102030405060708090a0b0c",
               "f0f1f2f3f4f5f6f7f8f9",
               "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
               "34007208d5b887185865");
    check_hkdf("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
               "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
               "404142434445464748494a4b4c4d4e4f",
               "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
               "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
               "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
               "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
               "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef"
               "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
               "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
               "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
               "cc30c58179ec3e87c14c01d5c1f3434f1d87");
    check_hkdf("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "", "",
               "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
               "9d201395faa4b61a96c8");
}

/* ---- AES-256-SIV ---- */
static void test_siv_deterministic_and_tamper(void)
{
    uint8_t key[SIV_KEY_LEN], a[5 + SIV_TAG_LEN], b[5 + SIV_TAG_LEN], c[5 + SIV_TAG_LEN];
    uint8_t back[5];
    uint64_t parent = 7;

    crypto_random(key, sizeof key);
    REQUIRE(siv_encrypt(key, &parent, 8, "hello", 5, a) == 0);
    REQUIRE(siv_encrypt(key, &parent, 8, "hello", 5, b) == 0);
    CHECK_MEM(a, b, sizeof a);                     /* deterministic */
    CHECK(memcmp(a + SIV_TAG_LEN, "hello", 5) != 0);
    parent = 8;
    REQUIRE(siv_encrypt(key, &parent, 8, "hello", 5, c) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);            /* AD changes the output */
    CHECK_EQ_INT(siv_decrypt(key, &parent, 8, c, sizeof c, back), 0);
    CHECK_MEM(back, "hello", 5);
    CHECK_EQ_INT(siv_decrypt(key, &parent, 8, a, sizeof a, back), -EBADMSG);
    c[SIV_TAG_LEN + 2] ^= 1;
    CHECK_EQ_INT(siv_decrypt(key, &parent, 8, c, sizeof c, back), -EBADMSG);
    c[SIV_TAG_LEN + 2] ^= 1;
    c[0] ^= 1;
    CHECK_EQ_INT(siv_decrypt(key, &parent, 8, c, sizeof c, back), -EBADMSG);
    CHECK_EQ_INT(siv_decrypt(key, &parent, 8, c, SIV_TAG_LEN - 1, back), -EBADMSG);
    /* empty AD is consistent between encrypt and decrypt */
    REQUIRE(siv_encrypt(key, NULL, 0, "hello", 5, a) == 0);
    CHECK_EQ_INT(siv_decrypt(key, "", 0, a, sizeof a, back), 0);
}

/* ---- Argon2id ---- */
static void test_argon2id(void)
{
    struct pwkdf_params p, q;
    uint8_t a[32], b[32], c[32];

    REQUIRE(pwkdf_params_default(&p) == 0);
    CHECK(p.alg == PWKDF_ALG_ARGON2ID && p.t_cost >= 3 && p.m_cost_kib >= 65536);
    p.t_cost = 1;
    p.m_cost_kib = 1024;
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &p, a), 0);
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &p, b), 0);
    CHECK_MEM(a, b, 32);
    q = p;
    q.salt[0] ^= 1;
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &q, c), 0);
    CHECK(memcmp(a, c, 32) != 0);
    CHECK_EQ_INT(pwkdf_derive("pW", 2, &p, c), 0);
    CHECK(memcmp(a, c, 32) != 0);
    q = p;
    q.m_cost_kib = 4;
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &q, c), -EINVAL);
    q = p;
    q.t_cost = 0;
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &q, c), -EINVAL);
    q = p;
    q.alg = 9;
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &q, c), -EINVAL);
    q = p;
    q.m_cost_kib = UINT32_MAX;                     /* hostile parameters */
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &q, c), -EINVAL);
    /* Ceilings a database operator can impose on one unlock: just above
     * each is refused before Argon2 runs (so these return at once). */
    q = p;
    q.m_cost_kib = 1024u * 1024 + 1;               /* 1 GiB + 1 KiB */
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &q, c), -EINVAL);
    CHECK(strstr(pfs_err_msg(), "out of range") != NULL);
    q = p;
    q.t_cost = 11;
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &q, c), -EINVAL);
    q = p;
    q.parallelism = 9;
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &q, c), -EINVAL);
    /* Old ceilings are refused too. */
    q = p;
    q.t_cost = 64;
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &q, c), -EINVAL);
    q = p;
    q.parallelism = 64;
    q.m_cost_kib = 4096;
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &q, c), -EINVAL);
    /* At the edges that stay cheap, still accepted: t = 10, p = 8. */
    q = p;
    q.t_cost = 10;
    q.m_cost_kib = 64;
    q.parallelism = 8;
    CHECK_EQ_INT(pwkdf_derive("pw", 2, &q, c), 0);
}

/* ---- RSA: one 3072-bit key and one other key for the whole file ---- */
static EVP_PKEY *rsa_a, *rsa_b;

static void test_rsa_generate_and_min_bits(void)
{
    CHECK(rsa_generate(2048) == NULL);
    rsa_a = rsa_generate(3072);
    rsa_b = rsa_generate(3072);
    REQUIRE(rsa_a && rsa_b);
    CHECK_EQ_INT(EVP_PKEY_get_bits(rsa_a), 3072);
}

static void test_oaep_wrap(void)
{
    uint8_t key[32], back[32], *w = NULL;
    size_t wl = 0;

    REQUIRE(rsa_a && rsa_b);
    crypto_random(key, sizeof key);
    REQUIRE(rsa_wrap(rsa_a, "label", 5, key, 32, &w, &wl) == 0);
    CHECK_EQ_INT(wl, 384);
    CHECK_EQ_INT(rsa_unwrap(rsa_a, "label", 5, w, wl, back, 32), 0);
    CHECK_MEM(back, key, 32);
    CHECK_EQ_INT(rsa_unwrap(rsa_b, "label", 5, w, wl, back, 32), -EBADMSG);
    CHECK_EQ_INT(rsa_unwrap(rsa_a, "lab3l", 5, w, wl, back, 32), -EBADMSG);
    CHECK_EQ_INT(rsa_unwrap(rsa_a, NULL, 0, w, wl, back, 32), -EBADMSG);
    CHECK_EQ_INT(rsa_unwrap(rsa_a, "label", 5, w, wl, back, 31), -EBADMSG);
    w[100] ^= 1;
    CHECK_EQ_INT(rsa_unwrap(rsa_a, "label", 5, w, wl, back, 32), -EBADMSG);
    CHECK_EQ_INT(rsa_unwrap(rsa_a, "label", 5, w, wl - 1, back, 32), -EBADMSG);
    free(w);
}

static void test_pss_sign_verify(void)
{
    const char msg[] = "registry v3";
    uint8_t *sig = NULL, *sig2 = NULL;
    size_t sl = 0, sl2 = 0;

    REQUIRE(rsa_a && rsa_b);
    REQUIRE(sig_sign(rsa_a, msg, sizeof msg, &sig, &sl) == 0);
    CHECK_EQ_INT(sl, 384);
    CHECK_EQ_INT(sig_verify(rsa_a, msg, sizeof msg, sig, sl), 0);
    CHECK_EQ_INT(sig_verify(rsa_b, msg, sizeof msg, sig, sl), -EBADMSG);
    CHECK_EQ_INT(sig_verify(rsa_a, "registry v4", sizeof msg, sig, sl), -EBADMSG);
    /* PSS is randomized: two signatures differ, both verify */
    REQUIRE(sig_sign(rsa_a, msg, sizeof msg, &sig2, &sl2) == 0);
    CHECK(memcmp(sig, sig2, sl) != 0);
    CHECK_EQ_INT(sig_verify(rsa_a, msg, sizeof msg, sig2, sl2), 0);
    sig[10] ^= 1;
    CHECK_EQ_INT(sig_verify(rsa_a, msg, sizeof msg, sig, sl), -EBADMSG);
    free(sig);
    free(sig2);
}

static void test_der_roundtrip(void)
{
    uint8_t *pub = NULL, *priv = NULL, fa[32], fb[32], fc[32], key[32] = { 3 }, back[32];
    uint8_t *w = NULL, *trail;
    size_t pl = 0, vl = 0, wl = 0;
    EVP_PKEY *pubk, *privk;

    REQUIRE(rsa_a && rsa_b);
    REQUIRE(rsa_public_to_der(rsa_a, &pub, &pl) == 0);
    REQUIRE(rsa_private_to_der(rsa_a, &priv, &vl) == 0);
    pubk = rsa_public_from_der(pub, pl);
    privk = rsa_private_from_der(priv, vl);
    REQUIRE(pubk && privk);
    CHECK_EQ_INT(rsa_fingerprint(rsa_a, fa), 0);
    CHECK_EQ_INT(rsa_fingerprint(pubk, fb), 0);
    CHECK_EQ_INT(rsa_fingerprint(rsa_b, fc), 0);
    CHECK_MEM(fa, fb, 32);
    CHECK(memcmp(fa, fc, 32) != 0);
    /* the reloaded pair still works together */
    CHECK_EQ_INT(rsa_wrap(pubk, "l", 1, key, 32, &w, &wl), 0);
    CHECK_EQ_INT(rsa_unwrap(privk, "l", 1, w, wl, back, 32), 0);
    CHECK_MEM(back, key, 32);
    /* garbage, truncation and trailing bytes are refused */
    CHECK(rsa_public_from_der(pub, pl - 1) == NULL);
    CHECK(rsa_private_from_der(priv, vl / 2) == NULL);
    CHECK(rsa_public_from_der((const uint8_t *)"garbage", 7) == NULL);
    trail = malloc(pl + 1);
    REQUIRE(trail);
    memcpy(trail, pub, pl);
    trail[pl] = 0;
    CHECK(rsa_public_from_der(trail, pl + 1) == NULL);
    free(trail);
    free(w);
    free(pub);
    secmem_free(priv, vl);
    EVP_PKEY_free(pubk);
    EVP_PKEY_free(privk);
}

static void test_hex_and_memcmp(void)
{
    uint8_t in[4] = { 0x00, 0xab, 0x10, 0xff }, out[4];
    char hex[9];

    hex_encode(in, 4, hex);
    CHECK(strcmp(hex, "00ab10ff") == 0);
    CHECK_EQ_INT(hex_decode("00AB10ff", out, 4), 0);
    CHECK_MEM(in, out, 4);
    CHECK_EQ_INT(hex_decode("00ab10f", out, 4), -EINVAL);
    CHECK_EQ_INT(hex_decode("00ab10fg", out, 4), -EINVAL);
    CHECK_EQ_INT(crypto_memcmp(in, out, 4), 0);
    out[3] = 0;
    CHECK(crypto_memcmp(in, out, 4) != 0);
}

static void test_sha256(void)
{
    uint8_t d[32], want[32];

    sha256("abc", 3, d);
    hex_decode("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", want, 32);
    CHECK_MEM(d, want, 32);
}

/* RFC 4231 test cases 1 and 2. */
static void test_hmac_sha256_rfc4231(void)
{
    uint8_t key[20], d[32], want[32];

    memset(key, 0x0b, sizeof key);
    CHECK_EQ_INT(hmac_sha256(key, sizeof key, "Hi There", 8, d), 0);
    hex_decode("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", want, 32);
    CHECK_MEM(d, want, 32);
    CHECK_EQ_INT(hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, d), 0);
    hex_decode("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", want, 32);
    CHECK_MEM(d, want, 32);
}

/* The hot path runs in FUSE worker threads: the primitives must be safe to
 * call concurrently (shared algorithm objects, per-call contexts). */
static void *seal_open_worker(void *arg)
{
    static uint8_t key[32] = { 7 }, skey[SIV_KEY_LEN] = { 8 };
    size_t n = 64 * 1024;
    uint8_t *pt = malloc(n), *box = malloc(n + AEAD_OVERHEAD), *back = malloc(n);
    uint8_t sum[32], s1[20 + SIV_TAG_LEN], s2[20 + SIV_TAG_LEN];
    long failures = 0;

    (void)arg;
    if (!pt || !box || !back) {
        failures = 1;
        goto out;
    }
    for (int i = 0; i < 40; i++) {
        memset(pt, i, n);
        failures += aead_seal(key, &i, sizeof i, pt, n, box) != 0;
        failures += aead_open(key, &i, sizeof i, box, n + AEAD_OVERHEAD, back) != 0;
        failures += memcmp(pt, back, n) != 0;
        sha256(box, n, sum);
        failures += siv_encrypt(skey, "ad", 2, pt, 20, s1) != 0;
        failures += siv_encrypt(skey, "ad", 2, pt, 20, s2) != 0;
        failures += memcmp(s1, s2, sizeof s1) != 0;
    }
out:
    free(pt);
    free(box);
    free(back);
    return (void *)failures;
}

static void test_threads(void)
{
    pthread_t th[4];
    void *res;

    for (int i = 0; i < 4; i++)
        REQUIRE(pthread_create(&th[i], NULL, seal_open_worker, NULL) == 0);
    for (int i = 0; i < 4; i++) {
        CHECK(pthread_join(th[i], &res) == 0);
        CHECK(res == NULL);
    }
}

int main(void)
{
    RUN(test_gcm_published_vectors);
    RUN(test_aead_tamper_rejected);
    RUN(test_aead_fresh_nonce_and_empty);
    RUN(test_hkdf_rfc5869);
    RUN(test_siv_deterministic_and_tamper);
    RUN(test_argon2id);
    RUN(test_rsa_generate_and_min_bits);
    RUN(test_oaep_wrap);
    RUN(test_pss_sign_verify);
    RUN(test_der_roundtrip);
    RUN(test_hex_and_memcmp);
    RUN(test_sha256);
    RUN(test_hmac_sha256_rfc4231);
    RUN(test_threads);
    EVP_PKEY_free(rsa_a);
    EVP_PKEY_free(rsa_b);
    return tap_done();
}
