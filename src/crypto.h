/* Cryptographic primitives.  Only OpenSSL 3 and libargon2 do the work; this
 * module fixes the algorithms and parameters in one place.
 *
 *   AEAD       AES-256-GCM, 96-bit random nonce, 128-bit tag
 *   names      AES-256-SIV (deterministic, for indexed encrypted names)
 *   wrap       RSA-OAEP with SHA-256 (and MGF1-SHA-256), RSA >= 3072 bits
 *   signature  RSA-PSS with SHA-256; Ed25519 for enrolment codes only
 *   KDF        HKDF-SHA-256; Argon2id for passwords
 *   checksum   SHA-256
 *
 * All functions return 0 or a negative errno (-EBADMSG when authentication
 * fails) and set pfs_err() on failure.
 */
#ifndef PACTFS_CRYPTO_H
#define PACTFS_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#define AEAD_KEY_LEN   32
#define AEAD_NONCE_LEN 12
#define AEAD_TAG_LEN   16
#define AEAD_OVERHEAD  (AEAD_NONCE_LEN + AEAD_TAG_LEN)
#define SIV_KEY_LEN    64   /* AES-256-SIV uses two 256-bit keys */
#define SIV_TAG_LEN    16
#define SHA256_LEN     32
#define RSA_MIN_BITS   3072

int crypto_random(void *buf, size_t n);

void sha256(const void *p, size_t n, uint8_t out[SHA256_LEN]);

/* HMAC-SHA-256 (RFC 2104): 0 or -EIO. */
int hmac_sha256(const void *key, size_t keylen, const void *p, size_t n,
                uint8_t out[SHA256_LEN]);

/* Constant-time comparison: 0 if equal. */
int crypto_memcmp(const void *a, const void *b, size_t n);

/* AES-256-GCM with an explicit nonce (used directly by the test vectors).
 * ct has n bytes. */
int gcm_encrypt(const uint8_t key[AEAD_KEY_LEN], const uint8_t nonce[AEAD_NONCE_LEN],
                const void *ad, size_t adlen, const void *pt, size_t n,
                uint8_t *ct, uint8_t tag[AEAD_TAG_LEN]);
int gcm_decrypt(const uint8_t key[AEAD_KEY_LEN], const uint8_t nonce[AEAD_NONCE_LEN],
                const void *ad, size_t adlen, const void *ct, size_t n,
                const uint8_t tag[AEAD_TAG_LEN], uint8_t *pt);

/* Sealed box with a fresh random nonce: out = nonce || ciphertext || tag,
 * n + AEAD_OVERHEAD bytes.  aead_open takes that layout and writes
 * inlen - AEAD_OVERHEAD bytes to pt; -EBADMSG if anything was altered. */
int aead_seal(const uint8_t key[AEAD_KEY_LEN], const void *ad, size_t adlen,
              const void *pt, size_t n, uint8_t *out);
int aead_open(const uint8_t key[AEAD_KEY_LEN], const void *ad, size_t adlen,
              const uint8_t *in, size_t inlen, uint8_t *pt);

/* HKDF-SHA-256 (RFC 5869).  info is the purpose label: every derived key
 * has its own. */
int hkdf_sha256(const void *ikm, size_t ikmlen, const void *salt, size_t saltlen,
                const void *info, size_t infolen, uint8_t *out, size_t outlen);

/* AES-256-SIV (RFC 5297), one associated-data string.  out = tag || ct,
 * n + SIV_TAG_LEN bytes; siv_decrypt writes inlen - SIV_TAG_LEN bytes. */
int siv_encrypt(const uint8_t key[SIV_KEY_LEN], const void *ad, size_t adlen,
                const void *pt, size_t n, uint8_t *out);
int siv_decrypt(const uint8_t key[SIV_KEY_LEN], const void *ad, size_t adlen,
                const uint8_t *in, size_t inlen, uint8_t *pt);

/* Argon2id password hardening.  Parameters travel with what they protect so
 * they can be raised later without breaking old objects. */
#define PWKDF_ALG_ARGON2ID 1
#define PWKDF_SALT_LEN 16
struct pwkdf_params {
    uint8_t alg;              /* PWKDF_ALG_ARGON2ID */
    uint32_t t_cost;          /* iterations */
    uint32_t m_cost_kib;      /* memory in KiB */
    uint32_t parallelism;
    uint8_t salt[PWKDF_SALT_LEN];
};
/* Defaults: t=3, m=64 MiB, p=1 (about 0.2 s), fresh random salt. */
int pwkdf_params_default(struct pwkdf_params *p);
int pwkdf_derive(const char *password, size_t pwlen, const struct pwkdf_params *p,
                 uint8_t out[32]);

/* RSA keys are OpenSSL EVP_PKEY objects; free with EVP_PKEY_free. */
EVP_PKEY *rsa_generate(unsigned bits);
/* SubjectPublicKeyInfo DER (malloc'd). */
int rsa_public_to_der(EVP_PKEY *key, uint8_t **der, size_t *len);
EVP_PKEY *rsa_public_from_der(const uint8_t *der, size_t len);
/* PKCS#8 private key DER in secure memory: free with secmem_free(der, len). */
int rsa_private_to_der(EVP_PKEY *key, uint8_t **der, size_t *len);
EVP_PKEY *rsa_private_from_der(const uint8_t *der, size_t len);
/* SHA-256 of the SubjectPublicKeyInfo DER. */
int rsa_fingerprint(EVP_PKEY *key, uint8_t out[SHA256_LEN]);

/* RSA-OAEP-SHA-256 key wrap; label binds the wrapped key to its purpose
 * (OAEP label).  *out is malloc'd.  unwrap demands exactly keylen bytes. */
int rsa_wrap(EVP_PKEY *pub, const void *label, size_t labellen,
             const uint8_t *key, size_t keylen, uint8_t **out, size_t *outlen);
int rsa_unwrap(EVP_PKEY *priv, const void *label, size_t labellen,
               const uint8_t *in, size_t inlen, uint8_t *key, size_t keylen);

/* RSA-PSS-SHA-256 signatures. *sig is malloc'd.  verify: 0 or -EBADMSG. */
int sig_sign(EVP_PKEY *priv, const void *msg, size_t n, uint8_t **sig, size_t *siglen);
/* Sign tbs and return the container every signed record uses:
 * blob(tbs) || blob(signature) (buf.h blobs), malloc'd in *out. */
int sig_sign_container(EVP_PKEY *priv, const void *tbs, size_t n, uint8_t **out,
                       size_t *outlen);
int sig_verify(EVP_PKEY *pub, const void *msg, size_t n, const uint8_t *sig, size_t siglen);
/* Open such a container of a vault's signed record: its tbs must start with
 * magic (4 bytes) | u8 version | str vault_id.  0 (r reads the tbs after
 * the vault id; c points into blob), -EXDEV if it names another vault, or
 * -EBADMSG; *why says what is wrong ("container", "magic or version",
 * "header", "another vault"). */
struct rbuf;
struct sig_container {
    const uint8_t *tbs, *sig;
    size_t tbs_len, sig_len;
};
int sig_container_open(const uint8_t *blob, size_t len, size_t max_tbs, const char magic[4],
                       uint8_t version, const char *vault_id, struct rbuf *r,
                       struct sig_container *c, const char **why);

/* Ed25519, used only for the key an enrolment code derives (enrol.h):
 * the key from a 32-byte seed, its raw public key, sign and verify
 * (0 or -EBADMSG). */
#define ED25519_PUB_LEN 32
#define ED25519_SIG_LEN 64
EVP_PKEY *ed25519_from_seed(const uint8_t seed[32]);
int ed25519_public_raw(EVP_PKEY *key, uint8_t pub[ED25519_PUB_LEN]);
int ed25519_sign(EVP_PKEY *key, const void *msg, size_t n, uint8_t sig[ED25519_SIG_LEN]);
int ed25519_verify(const uint8_t pub[ED25519_PUB_LEN], const void *msg, size_t n,
                   const uint8_t *sig, size_t siglen);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void hex_encode(const uint8_t *p, size_t n, char *out);
/* Parse exactly n bytes of hex; 0 or -EINVAL. */
int hex_decode(const char *hex, uint8_t *out, size_t n);

#endif
