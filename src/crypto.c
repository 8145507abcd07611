#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <argon2.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "buf.h"
#include "crypto.h"
#include "error.h"
#include "secmem.h"

/* ---- algorithm objects, fetched once ----
 * Explicit fetches avoid OpenSSL's per-call implicit lookup (and its locks)
 * on the hot path: aead_seal runs for every 1 MiB chunk and sha256 for every
 * fragment.  The objects are immutable and safe to share between threads. */

static EVP_CIPHER *alg_gcm;
static EVP_CIPHER *alg_siv;
static EVP_MD *alg_sha256;
static EVP_KDF *alg_hkdf;
static pthread_once_t alg_once = PTHREAD_ONCE_INIT;

static void algorithms_free(void)
{
    EVP_CIPHER_free(alg_gcm);
    EVP_CIPHER_free(alg_siv);
    EVP_MD_free(alg_sha256);
    EVP_KDF_free(alg_hkdf);
    alg_gcm = alg_siv = NULL;
    alg_sha256 = NULL;
    alg_hkdf = NULL;
}

static void algorithms_fetch(void)
{
    alg_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    alg_siv = EVP_CIPHER_fetch(NULL, "AES-256-SIV", NULL);
    alg_sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    alg_hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    atexit(algorithms_free);
}

/* The error message names the algorithm and the OpenSSL reason, then clears
 * OpenSSL's queue so stale errors never leak into a later message. */
static int ossl_err(int neg_errno, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;

    pfs_err(neg_errno, "%s failed%s%s", what, reason ? ": " : "", reason ? reason : "");
    ERR_clear_error();
    return neg_errno;
}

static int missing_alg(const char *name)
{
    return pfs_err(-ENOSYS, "OpenSSL does not provide %s: install OpenSSL 3 with the "
                   "default provider", name);
}

/* Fetch on first use, then check (the pointer is read after the once). */
#define NEED(alg, name) \
    do { pthread_once(&alg_once, algorithms_fetch); \
         if (!(alg)) return missing_alg(name); } while (0)

/* ---- basics ---- */

int crypto_random(void *buf, size_t n)
{
    uint8_t *p = buf;

    while (n) {
        int chunk = n > INT_MAX ? INT_MAX : (int)n;
        if (RAND_priv_bytes(p, chunk) != 1)
            return ossl_err(-EIO, "random number generation");
        p += chunk;
        n -= (size_t)chunk;
    }
    return 0;
}

void sha256(const void *p, size_t n, uint8_t out[SHA256_LEN])
{
    pthread_once(&alg_once, algorithms_fetch);
    if (!alg_sha256 || EVP_Digest(p, n, out, NULL, alg_sha256, NULL) != 1) {
        /* Cannot fail with a working OpenSSL; never return stale bytes. */
        ERR_clear_error();
        abort();
    }
}

int hmac_sha256(const void *key, size_t keylen, const void *p, size_t n,
                uint8_t out[SHA256_LEN])
{
    unsigned int outlen = 0;

    if (keylen > INT_MAX || !HMAC(EVP_sha256(), key, (int)keylen, p, n, out, &outlen)
        || outlen != SHA256_LEN) {
        ERR_clear_error();
        return pfs_err(-EIO, "HMAC-SHA-256 failed");
    }
    return 0;
}

int crypto_memcmp(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0 ? 0 : 1;
}

/* ---- AES-256-GCM ---- */

static int int_len(size_t n, const char *what)
{
    if (n > INT_MAX)
        return pfs_err(-EINVAL, "%s too long (%zu bytes)", what, n);
    return 0;
}

int gcm_encrypt(const uint8_t key[AEAD_KEY_LEN], const uint8_t nonce[AEAD_NONCE_LEN],
                const void *ad, size_t adlen, const void *pt, size_t n,
                uint8_t *ct, uint8_t tag[AEAD_TAG_LEN])
{
    EVP_CIPHER_CTX *ctx;
    uint8_t final_out[16];   /* GCM's final step writes nothing */
    int outl, rc = -EIO;

    NEED(alg_gcm, "AES-256-GCM");
    if (int_len(adlen, "GCM associated data") || int_len(n, "GCM plaintext"))
        return -EINVAL;
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return pfs_err(-ENOMEM, "out of memory for a cipher context");
    /* Default IV length of GCM in OpenSSL is 12 bytes = AEAD_NONCE_LEN. */
    if (EVP_EncryptInit_ex2(ctx, alg_gcm, key, nonce, NULL) != 1
        || (adlen && EVP_EncryptUpdate(ctx, NULL, &outl, ad, (int)adlen) != 1)
        || (n && EVP_EncryptUpdate(ctx, ct, &outl, pt, (int)n) != 1)
        || EVP_EncryptFinal_ex(ctx, final_out, &outl) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_LEN, tag) != 1)
        ossl_err(-EIO, "AES-256-GCM encryption");
    else
        rc = 0;
    EVP_CIPHER_CTX_free(ctx);   /* cleanses the key schedule */
    return rc;
}

int gcm_decrypt(const uint8_t key[AEAD_KEY_LEN], const uint8_t nonce[AEAD_NONCE_LEN],
                const void *ad, size_t adlen, const void *ct, size_t n,
                const uint8_t tag[AEAD_TAG_LEN], uint8_t *pt)
{
    EVP_CIPHER_CTX *ctx;
    uint8_t tagcopy[AEAD_TAG_LEN], final_out[16];
    int outl, rc = -EIO;

    NEED(alg_gcm, "AES-256-GCM");
    if (int_len(adlen, "GCM associated data") || int_len(n, "GCM ciphertext"))
        return -EINVAL;
    memcpy(tagcopy, tag, AEAD_TAG_LEN);
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return pfs_err(-ENOMEM, "out of memory for a cipher context");
    if (EVP_DecryptInit_ex2(ctx, alg_gcm, key, nonce, NULL) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_LEN, tagcopy) != 1
        || (adlen && EVP_DecryptUpdate(ctx, NULL, &outl, ad, (int)adlen) != 1)
        || (n && EVP_DecryptUpdate(ctx, pt, &outl, ct, (int)n) != 1)) {
        ossl_err(-EIO, "AES-256-GCM decryption");
    } else if (EVP_DecryptFinal_ex(ctx, final_out, &outl) != 1) {
        ERR_clear_error();
        /* Never hand out plaintext that did not authenticate. */
        if (n)
            OPENSSL_cleanse(pt, n);
        rc = pfs_err(-EBADMSG, "AES-256-GCM authentication failed: the data was altered, "
                     "moved, or the key is wrong");
    } else {
        rc = 0;
    }
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int aead_seal(const uint8_t key[AEAD_KEY_LEN], const void *ad, size_t adlen,
              const void *pt, size_t n, uint8_t *out)
{
    /* Public nonces come from the public DRBG; 96 random bits per seal. */
    if (RAND_bytes(out, AEAD_NONCE_LEN) != 1)
        return ossl_err(-EIO, "random nonce generation");
    return gcm_encrypt(key, out, ad, adlen, pt, n, out + AEAD_NONCE_LEN,
                       out + AEAD_NONCE_LEN + n);
}

int aead_open(const uint8_t key[AEAD_KEY_LEN], const void *ad, size_t adlen,
              const uint8_t *in, size_t inlen, uint8_t *pt)
{
    size_t n;

    if (inlen < AEAD_OVERHEAD)
        return pfs_err(-EBADMSG, "sealed data too short (%zu bytes, need at least %d)",
                       inlen, AEAD_OVERHEAD);
    n = inlen - AEAD_OVERHEAD;
    return gcm_decrypt(key, in, ad, adlen, in + AEAD_NONCE_LEN, n,
                       in + AEAD_NONCE_LEN + n, pt);
}

/* ---- HKDF ---- */

int hkdf_sha256(const void *ikm, size_t ikmlen, const void *salt, size_t saltlen,
                const void *info, size_t infolen, uint8_t *out, size_t outlen)
{
    EVP_KDF_CTX *kctx;
    OSSL_PARAM params[5], *p = params;
    int rc = 0;

    NEED(alg_hkdf, "HKDF");
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA2-256", 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikmlen);
    if (saltlen)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
    if (infolen)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, infolen);
    *p = OSSL_PARAM_construct_end();
    kctx = EVP_KDF_CTX_new(alg_hkdf);
    if (!kctx)
        return pfs_err(-ENOMEM, "out of memory for an HKDF context");
    if (EVP_KDF_derive(kctx, out, outlen, params) != 1)
        rc = ossl_err(-EINVAL, "HKDF-SHA-256 key derivation");
    EVP_KDF_CTX_free(kctx);
    return rc;
}

/* ---- AES-256-SIV ---- */

static int siv_crypt(int enc, const uint8_t key[SIV_KEY_LEN], const void *ad, size_t adlen,
                     const uint8_t *in, size_t n, uint8_t *out, uint8_t tag[SIV_TAG_LEN])
{
    EVP_CIPHER_CTX *ctx;
    uint8_t final_out[16];   /* SIV's final step writes nothing */
    int outl, ok, rc = 0;

    NEED(alg_siv, "AES-256-SIV");
    if (int_len(adlen, "SIV associated data") || int_len(n, "SIV input"))
        return -EINVAL;
    /* OpenSSL computes the SIV tag inside the data update, which it skips for
     * empty input; an empty message would get no valid tag. */
    if (n == 0)
        return pfs_err(-EINVAL, "AES-256-SIV needs at least one byte of message");
    /* A NULL AD pointer would read as "finish" inside OpenSSL. */
    if (!ad)
        ad = "";
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return pfs_err(-ENOMEM, "out of memory for a cipher context");
    /* SIV takes the whole message in one update; the AD is always fed, even
     * when empty, so encrypt and decrypt see the same S2V input. */
    ok = EVP_CipherInit_ex2(ctx, alg_siv, key, NULL, enc, NULL) == 1
        && (enc || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, SIV_TAG_LEN, tag) == 1)
        && EVP_CipherUpdate(ctx, NULL, &outl, ad, (int)adlen) == 1;
    if (ok && EVP_CipherUpdate(ctx, out, &outl, in, (int)n) != 1) {
        ok = 0;
        if (!enc)
            rc = -EBADMSG;
    }
    if (ok && EVP_CipherFinal_ex(ctx, final_out, &outl) != 1) {
        ok = 0;
        if (!enc)
            rc = -EBADMSG;
    }
    if (ok && enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, SIV_TAG_LEN, tag) != 1)
        ok = 0;
    if (!ok && rc == -EBADMSG) {
        ERR_clear_error();
        if (n)
            OPENSSL_cleanse(out, n);
        pfs_err(rc, "AES-256-SIV authentication failed: the name was altered, moved to "
                "another directory, or belongs to another folder key");
    } else if (!ok) {
        rc = ossl_err(-EIO, enc ? "AES-256-SIV encryption" : "AES-256-SIV decryption");
    }
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int siv_encrypt(const uint8_t key[SIV_KEY_LEN], const void *ad, size_t adlen,
                const void *pt, size_t n, uint8_t *out)
{
    return siv_crypt(1, key, ad, adlen, pt, n, out + SIV_TAG_LEN, out);
}

int siv_decrypt(const uint8_t key[SIV_KEY_LEN], const void *ad, size_t adlen,
                const uint8_t *in, size_t inlen, uint8_t *pt)
{
    uint8_t tag[SIV_TAG_LEN];

    if (inlen < SIV_TAG_LEN)
        return pfs_err(-EBADMSG, "SIV ciphertext too short (%zu bytes)", inlen);
    memcpy(tag, in, SIV_TAG_LEN);
    return siv_crypt(0, key, ad, adlen, in + SIV_TAG_LEN, inlen - SIV_TAG_LEN, pt, tag);
}

/* ---- Argon2id ---- */

#define PWKDF_MIN_T 1u
#define PWKDF_MIN_M_KIB 8u
/* Upper bounds: parameters come from the (untrusted) metadata store and are
 * used before anything authenticates them, so they cap what a hostile
 * operator can make one unlock cost (about 10 x 1 GiB of Argon2 passes). */
#define PWKDF_MAX_T 10u
#define PWKDF_MAX_M_KIB (1024u * 1024)
#define PWKDF_MAX_P 8u

int pwkdf_params_default(struct pwkdf_params *p)
{
    memset(p, 0, sizeof *p);
    p->alg = PWKDF_ALG_ARGON2ID;
    p->t_cost = 3;
    p->m_cost_kib = 64 * 1024;
    p->parallelism = 1;
    return crypto_random(p->salt, sizeof p->salt);
}

static int pwkdf_check(const struct pwkdf_params *p)
{
    if (p->alg != PWKDF_ALG_ARGON2ID)
        return pfs_err(-EINVAL, "unknown password KDF algorithm %u (only Argon2id = %d)",
                       p->alg, PWKDF_ALG_ARGON2ID);
    if (p->t_cost < PWKDF_MIN_T || p->t_cost > PWKDF_MAX_T
        || p->m_cost_kib < PWKDF_MIN_M_KIB || p->m_cost_kib > PWKDF_MAX_M_KIB
        || p->parallelism < 1 || p->parallelism > PWKDF_MAX_P
        || p->m_cost_kib < 8 * p->parallelism)
        return pfs_err(-EINVAL, "Argon2id parameters out of range (t=%u m=%u KiB p=%u; "
                       "allowed t %u..%u, m %u KiB..%u KiB and >= 8*p, p 1..%u)",
                       p->t_cost, p->m_cost_kib, p->parallelism, PWKDF_MIN_T, PWKDF_MAX_T,
                       PWKDF_MIN_M_KIB, PWKDF_MAX_M_KIB, PWKDF_MAX_P);
    return 0;
}

int pwkdf_derive(const char *password, size_t pwlen, const struct pwkdf_params *p,
                 uint8_t out[32])
{
    int rc = pwkdf_check(p);

    if (rc)
        return rc;
    if (pwlen > UINT32_MAX)
        return pfs_err(-EINVAL, "password too long");
    rc = argon2id_hash_raw(p->t_cost, p->m_cost_kib, p->parallelism, password, pwlen,
                           p->salt, sizeof p->salt, out, 32);
    if (rc != ARGON2_OK)
        return pfs_err(rc == ARGON2_MEMORY_ALLOCATION_ERROR ? -ENOMEM : -EINVAL,
                       "Argon2id failed: %s", argon2_error_message(rc));
    return 0;
}

/* ---- RSA keys ---- */

static int rsa_check_key(EVP_PKEY *key, const char *what)
{
    if (!key || !EVP_PKEY_is_a(key, "RSA"))
        return pfs_err(-EINVAL, "%s is not an RSA key", what);
    if (EVP_PKEY_get_bits(key) < RSA_MIN_BITS)
        return pfs_err(-EINVAL, "%s has %d bits; pactfs requires RSA >= %d bits",
                       what, EVP_PKEY_get_bits(key), RSA_MIN_BITS);
    return 0;
}

EVP_PKEY *rsa_generate(unsigned bits)
{
    EVP_PKEY_CTX *ctx;
    EVP_PKEY *key = NULL;

    if (bits < RSA_MIN_BITS || bits > 16384) {
        pfs_err(-EINVAL, "RSA key size %u refused: use %d..16384 bits", bits, RSA_MIN_BITS);
        return NULL;
    }
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (!ctx || EVP_PKEY_keygen_init(ctx) != 1
        || EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, (int)bits) != 1
        || EVP_PKEY_generate(ctx, &key) != 1) {
        ossl_err(-EIO, "RSA key generation");
        key = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    return key;
}

int rsa_public_to_der(EVP_PKEY *key, uint8_t **der, size_t *len)
{
    int n;
    uint8_t *p;

    if (!key)
        return pfs_err(-EINVAL, "no key to export");
    n = i2d_PUBKEY(key, NULL);
    if (n <= 0)
        return ossl_err(-EINVAL, "public key DER encoding");
    *der = p = malloc((size_t)n);
    if (!p)
        return pfs_err(-ENOMEM, "out of memory for a public key");
    if (i2d_PUBKEY(key, &p) != n) {
        free(*der);
        *der = NULL;
        return ossl_err(-EINVAL, "public key DER encoding");
    }
    *len = (size_t)n;
    return 0;
}

EVP_PKEY *rsa_public_from_der(const uint8_t *der, size_t len)
{
    const uint8_t *p = der;
    EVP_PKEY *key;

    if (!der || len == 0 || len > INT_MAX) {
        pfs_err(-EBADMSG, "public key DER is empty or too large");
        return NULL;
    }
    key = d2i_PUBKEY(NULL, &p, (long)len);
    if (!key) {
        ossl_err(-EBADMSG, "public key DER decoding");
        return NULL;
    }
    if ((size_t)(p - der) != len) {
        pfs_err(-EBADMSG, "public key DER has %zu trailing bytes", len - (size_t)(p - der));
        EVP_PKEY_free(key);
        return NULL;
    }
    if (rsa_check_key(key, "the public key") != 0) {
        EVP_PKEY_free(key);
        return NULL;
    }
    return key;
}

int rsa_private_to_der(EVP_PKEY *key, uint8_t **der, size_t *len)
{
    PKCS8_PRIV_KEY_INFO *p8;
    uint8_t *buf, *p;
    int n;

    if (!key)
        return pfs_err(-EINVAL, "no key to export");
    p8 = EVP_PKEY2PKCS8(key);
    if (!p8)
        return ossl_err(-EINVAL, "private key PKCS#8 conversion");
    n = i2d_PKCS8_PRIV_KEY_INFO(p8, NULL);
    if (n <= 0) {
        PKCS8_PRIV_KEY_INFO_free(p8);
        return ossl_err(-EINVAL, "private key DER encoding");
    }
    /* Encode straight into locked memory, no plain-heap copy of the DER. */
    buf = p = secmem_alloc((size_t)n);
    if (!buf) {
        PKCS8_PRIV_KEY_INFO_free(p8);
        return pfs_err(-ENOMEM, "out of secure memory for a private key");
    }
    if (i2d_PKCS8_PRIV_KEY_INFO(p8, &p) != n) {
        PKCS8_PRIV_KEY_INFO_free(p8);
        secmem_free(buf, (size_t)n);
        return ossl_err(-EINVAL, "private key DER encoding");
    }
    PKCS8_PRIV_KEY_INFO_free(p8);
    *der = buf;
    *len = (size_t)n;
    return 0;
}

EVP_PKEY *rsa_private_from_der(const uint8_t *der, size_t len)
{
    const uint8_t *p = der;
    PKCS8_PRIV_KEY_INFO *p8;
    EVP_PKEY *key;

    if (!der || len == 0 || len > INT_MAX) {
        pfs_err(-EBADMSG, "private key DER is empty or too large");
        return NULL;
    }
    p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
    if (!p8) {
        ossl_err(-EBADMSG, "private key DER decoding");
        return NULL;
    }
    if ((size_t)(p - der) != len) {
        PKCS8_PRIV_KEY_INFO_free(p8);
        pfs_err(-EBADMSG, "private key DER has trailing bytes");
        return NULL;
    }
    key = EVP_PKCS82PKEY(p8);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (!key) {
        ossl_err(-EBADMSG, "private key PKCS#8 decoding");
        return NULL;
    }
    if (rsa_check_key(key, "the private key") != 0) {
        EVP_PKEY_free(key);
        return NULL;
    }
    return key;
}

int rsa_fingerprint(EVP_PKEY *key, uint8_t out[SHA256_LEN])
{
    uint8_t *der;
    size_t len;
    int rc = rsa_public_to_der(key, &der, &len);

    if (rc)
        return rc;
    sha256(der, len, out);
    free(der);
    return 0;
}

/* ---- RSA-OAEP key wrap ---- */

static int oaep_setup(EVP_PKEY_CTX *ctx, const void *label, size_t labellen)
{
    if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1
        || EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, "SHA2-256", NULL) != 1
        || EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, "SHA2-256", NULL) != 1)
        return -1;
    if (labellen) {
        /* set0 takes ownership of an OPENSSL_malloc'd copy. */
        void *copy = OPENSSL_memdup(label, labellen);
        if (!copy || EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, copy, (int)labellen) <= 0) {
            OPENSSL_free(copy);
            return -1;
        }
    }
    return 0;
}

int rsa_wrap(EVP_PKEY *pub, const void *label, size_t labellen,
             const uint8_t *key, size_t keylen, uint8_t **out, size_t *outlen)
{
    EVP_PKEY_CTX *ctx;
    size_t n = 0;
    uint8_t *buf = NULL;
    int rc;

    *out = NULL;
    if ((rc = rsa_check_key(pub, "the recipient key")) != 0)
        return rc;
    if (labellen > INT_MAX)
        return pfs_err(-EINVAL, "OAEP label too long");
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
    if (!ctx || EVP_PKEY_encrypt_init(ctx) != 1 || oaep_setup(ctx, label, labellen) != 0
        || EVP_PKEY_encrypt(ctx, NULL, &n, key, keylen) != 1
        || !(buf = malloc(n))
        || EVP_PKEY_encrypt(ctx, buf, &n, key, keylen) != 1) {
        free(buf);
        EVP_PKEY_CTX_free(ctx);
        return ossl_err(-EIO, "RSA-OAEP key wrap");
    }
    EVP_PKEY_CTX_free(ctx);
    *out = buf;
    *outlen = n;
    return 0;
}

int rsa_unwrap(EVP_PKEY *priv, const void *label, size_t labellen,
               const uint8_t *in, size_t inlen, uint8_t *key, size_t keylen)
{
    EVP_PKEY_CTX *ctx;
    size_t cap, n;
    uint8_t *buf = NULL;
    int rc = 0;

    if ((rc = rsa_check_key(priv, "the private key")) != 0)
        return rc;
    if (labellen > INT_MAX)
        return pfs_err(-EINVAL, "OAEP label too long");
    cap = (size_t)EVP_PKEY_get_size(priv);
    if (inlen != cap)
        return pfs_err(-EBADMSG, "wrapped key has %zu bytes, expected %zu for this RSA key",
                       inlen, cap);
    buf = secmem_alloc(cap);
    if (!buf)
        return pfs_err(-ENOMEM, "out of secure memory");
    n = cap;
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL);
    if (!ctx || EVP_PKEY_decrypt_init(ctx) != 1 || oaep_setup(ctx, label, labellen) != 0) {
        rc = ossl_err(-EIO, "RSA-OAEP setup");
    } else if (EVP_PKEY_decrypt(ctx, buf, &n, in, inlen) != 1 || n != keylen) {
        ERR_clear_error();
        rc = pfs_err(-EBADMSG, "RSA-OAEP unwrap failed: not wrapped for this key, or for "
                     "another purpose (label), or altered");
    } else {
        memcpy(key, buf, keylen);
    }
    EVP_PKEY_CTX_free(ctx);
    secmem_free(buf, cap);
    return rc;
}

/* ---- RSA-PSS signatures ---- */

static int pss_setup(EVP_PKEY_CTX *pctx)
{
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1
        && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1
        && EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA2-256", NULL) == 1 ? 0 : -1;
}

int sig_sign(EVP_PKEY *priv, const void *msg, size_t n, uint8_t **sig, size_t *siglen)
{
    EVP_MD_CTX *md;
    EVP_PKEY_CTX *pctx = NULL;
    size_t len = 0;
    uint8_t *buf = NULL;
    int rc;

    *sig = NULL;
    if ((rc = rsa_check_key(priv, "the signing key")) != 0)
        return rc;
    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestSignInit_ex(md, &pctx, "SHA2-256", NULL, NULL, priv, NULL) != 1
        || pss_setup(pctx) != 0
        || EVP_DigestSign(md, NULL, &len, msg, n) != 1
        || !(buf = malloc(len))
        || EVP_DigestSign(md, buf, &len, msg, n) != 1) {
        free(buf);
        EVP_MD_CTX_free(md);
        return ossl_err(-EIO, "RSA-PSS signing");
    }
    EVP_MD_CTX_free(md);
    *sig = buf;
    *siglen = len;
    return 0;
}

int sig_verify(EVP_PKEY *pub, const void *msg, size_t n, const uint8_t *sig, size_t siglen)
{
    EVP_MD_CTX *md;
    EVP_PKEY_CTX *pctx = NULL;
    int rc, ok;

    if ((rc = rsa_check_key(pub, "the verifying key")) != 0)
        return rc;
    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestVerifyInit_ex(md, &pctx, "SHA2-256", NULL, NULL, pub, NULL) != 1
        || pss_setup(pctx) != 0) {
        EVP_MD_CTX_free(md);
        return ossl_err(-EIO, "RSA-PSS verification setup");
    }
    ok = EVP_DigestVerify(md, sig, siglen, msg, n);
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    if (ok != 1)
        return pfs_err(-EBADMSG, "RSA-PSS signature does not verify: the signed data was "
                       "altered or was signed by another key");
    return 0;
}

/* ---- hex ---- */

void hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int hex_decode(const char *hex, uint8_t *out, size_t n)
{
    if (!hex || strlen(hex) != 2 * n)
        return pfs_err(-EINVAL, "expected %zu hex digits", 2 * n);
    for (size_t i = 0; i < n; i++) {
        int hi = hex_nibble(hex[2 * i]), lo = hex_nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return pfs_err(-EINVAL, "invalid hex digit at position %zu", 2 * i);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* ---- Ed25519 (enrolment codes) ---- */

EVP_PKEY *ed25519_from_seed(const uint8_t seed[32])
{
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);

    if (!k)
        ossl_err(-EIO, "Ed25519 key from seed");
    return k;
}

int ed25519_public_raw(EVP_PKEY *key, uint8_t pub[ED25519_PUB_LEN])
{
    size_t len = ED25519_PUB_LEN;

    if (EVP_PKEY_get_raw_public_key(key, pub, &len) != 1 || len != ED25519_PUB_LEN)
        return ossl_err(-EIO, "Ed25519 public key");
    return 0;
}

int ed25519_sign(EVP_PKEY *key, const void *msg, size_t n, uint8_t sig[ED25519_SIG_LEN])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t len = ED25519_SIG_LEN;
    int ok = md && EVP_DigestSignInit(md, NULL, NULL, NULL, key) == 1 &&
             EVP_DigestSign(md, sig, &len, msg, n) == 1 && len == ED25519_SIG_LEN;

    EVP_MD_CTX_free(md);
    return ok ? 0 : ossl_err(-EIO, "Ed25519 signing");
}

int ed25519_verify(const uint8_t pub[ED25519_PUB_LEN], const void *msg, size_t n,
                   const uint8_t *sig, size_t siglen)
{
    EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, ED25519_PUB_LEN);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = k && md && siglen == ED25519_SIG_LEN &&
             EVP_DigestVerifyInit(md, NULL, NULL, NULL, k) == 1 &&
             EVP_DigestVerify(md, sig, siglen, msg, n) == 1;

    ERR_clear_error();
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(k);
    return ok ? 0 : -EBADMSG;
}

int sig_container_open(const uint8_t *blob, size_t len, size_t max_tbs, const char magic[4],
                       uint8_t version, const char *vault_id, struct rbuf *r,
                       struct sig_container *c, const char **why)
{
    struct rbuf outer;
    const uint8_t *m = NULL, *vid = NULL;
    size_t vidlen = 0;
    uint8_t v = 0;

    rbuf_init(&outer, blob, len);
    rbuf_get_blob(&outer, &c->tbs, &c->tbs_len, max_tbs);
    rbuf_get_blob(&outer, &c->sig, &c->sig_len, 1024);
    *why = "container";
    if (rbuf_end(&outer) < 0)
        return -EBADMSG;
    rbuf_init(r, c->tbs, c->tbs_len);
    rbuf_get_ref(r, &m, 4);
    rbuf_get_u8(r, &v);
    *why = "magic or version";
    if (r->err || memcmp(m, magic, 4) || v != version)
        return -EBADMSG;
    rbuf_get_blob(r, &vid, &vidlen, 256);
    *why = "header";
    if (r->err)
        return -EBADMSG;
    *why = "another vault";
    if (vidlen != strlen(vault_id) || memcmp(vid, vault_id, vidlen))
        return -EXDEV;
    *why = NULL;
    return 0;
}

int sig_sign_container(EVP_PKEY *priv, const void *tbs, size_t n, uint8_t **out,
                       size_t *outlen)
{
    uint8_t *sig = NULL;
    size_t siglen = 0;
    struct wbuf b;
    int rc = sig_sign(priv, tbs, n, &sig, &siglen);

    if (rc < 0)
        return rc;
    wbuf_init(&b);
    wbuf_put_blob(&b, tbs, n);
    wbuf_put_blob(&b, sig, siglen);
    free(sig);
    *out = wbuf_steal(&b, outlen);
    return *out ? 0 : -ENOMEM;
}
