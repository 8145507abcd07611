#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "enrol.h"
#include "error.h"
#include "keyring.h"
#include "secmem.h"

#define PROOF_MAGIC "PFSE"
#define PROOF_VERSION 1
#define PROOF_MAX (16u * 1024u)
#define CODE_INFO "pactfs v1 enrolment code"

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

int enrol_code_generate(char out[ENROL_CODE_TEXT_MAX])
{
    uint8_t raw[ENROL_CODE_BYTES];
    unsigned acc = 0, bits = 0;
    size_t n = 0, digits = 0;
    int rc = crypto_random(raw, sizeof raw);

    if (rc < 0)
        return rc;
    for (size_t i = 0; i < sizeof raw; i++) {
        acc = (acc << 8) | raw[i];
        bits += 8;
        while (bits >= 5) {
            if (digits && digits % 4 == 0)
                out[n++] = '-';
            out[n++] = b32[(acc >> (bits - 5)) & 31];
            bits -= 5;
            digits++;
        }
    }
    out[n] = '\0';
    explicit_bzero(raw, sizeof raw);
    return 0;
}

/* Text to the code's bytes: base32, case, spaces and dashes ignored. */
static int code_decode(const char *code, uint8_t raw[ENROL_CODE_BYTES])
{
    unsigned acc = 0, bits = 0;
    size_t n = 0;

    for (const char *p = code; *p; p++) {
        const char *hit;

        if (*p == '-' || *p == ' ')
            continue;
        hit = strchr(b32, toupper((unsigned char)*p));
        if (!hit || !*p || n == ENROL_CODE_BYTES)
            return pfs_err(-EINVAL, "this is not an enrolment code (it has %d letters A-Z "
                           "and digits 2-7, in groups of four)", ENROL_CODE_BYTES * 8 / 5);
        acc = (acc << 5) | (unsigned)(hit - b32);
        bits += 5;
        if (bits >= 8) {
            raw[n++] = (uint8_t)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    if (n != ENROL_CODE_BYTES)
        return pfs_err(-EINVAL, "the enrolment code is incomplete: it has %d letters A-Z and "
                       "digits 2-7, in groups of four", ENROL_CODE_BYTES * 8 / 5);
    return 0;
}

static int code_key(const char *vault_id, uint64_t account_id, const char *code, EVP_PKEY **key)
{
    uint8_t *raw = secmem_alloc(ENROL_CODE_BYTES), *seed = secmem_alloc(32);
    uint8_t info[sizeof CODE_INFO - 1 + 8];
    int rc;

    if (!raw || !seed) {
        secmem_free(raw, ENROL_CODE_BYTES);
        secmem_free(seed, 32);
        return -ENOMEM;
    }
    memcpy(info, CODE_INFO, sizeof CODE_INFO - 1);
    for (int i = 0; i < 8; i++)
        info[sizeof CODE_INFO - 1 + i] = (uint8_t)(account_id >> (56 - 8 * i));
    rc = code_decode(code, raw);
    if (rc == 0)
        rc = hkdf_sha256(raw, ENROL_CODE_BYTES, vault_id, strlen(vault_id), info, sizeof info,
                         seed, 32);
    if (rc == 0 && !(*key = ed25519_from_seed(seed)))
        rc = -EIO;
    secmem_free(raw, ENROL_CODE_BYTES);
    secmem_free(seed, 32);
    return rc;
}

static int code_sign(void *arg, const uint8_t *msg, size_t n, uint8_t sig[64])
{
    const struct enrol_signer *s = arg;
    EVP_PKEY *k = NULL;
    int rc = code_key(s->vault_id, s->account_id, s->code, &k);

    if (rc == 0)
        rc = ed25519_sign(k, msg, n, sig);
    EVP_PKEY_free(k);
    return rc;
}

void enrol_signer_set(struct share_provider *sp, struct enrol_signer *s)
{
    sp->enrol_sign = s ? code_sign : NULL;
    sp->enrol_sign_arg = s;
}

int enrol_code_register(struct share_provider *sp, const char *vault_id, uint64_t account_id,
                        const char *key_name, const char *code, int64_t expires)
{
    uint8_t pub[ED25519_PUB_LEN];
    int rc;

    if (!sp->ops->register_code)
        return 0;
    rc = enrol_code_public(vault_id, account_id, code, pub);
    return rc ? rc : sp->ops->register_code(sp, vault_id, key_name, pub, expires);
}

int enrol_code_public(const char *vault_id, uint64_t account_id, const char *code,
                      uint8_t pub[ED25519_PUB_LEN])
{
    EVP_PKEY *k = NULL;
    int rc = code_key(vault_id, account_id, code, &k);

    if (rc == 0)
        rc = ed25519_public_raw(k, pub);
    EVP_PKEY_free(k);
    return rc;
}

static int proof_tbs(const char *vault_id, uint64_t account_id,
                     const uint8_t code_pub[ED25519_PUB_LEN], const char *key_name,
                     const uint8_t *pub, size_t publen, int64_t enrolled_at,
                     uint8_t **out, size_t *outlen)
{
    struct wbuf b;

    wbuf_init(&b);
    wbuf_put_bytes(&b, PROOF_MAGIC, 4);
    wbuf_put_u8(&b, PROOF_VERSION);
    wbuf_put_str(&b, vault_id);
    wbuf_put_u64(&b, account_id);
    wbuf_put_blob(&b, code_pub, ED25519_PUB_LEN);
    wbuf_put_str(&b, key_name);
    wbuf_put_blob(&b, pub, publen);
    wbuf_put_u64(&b, (uint64_t)enrolled_at);
    *out = wbuf_steal(&b, outlen);
    return *out ? 0 : -ENOMEM;
}

int enrol_proof_make(const char *vault_id, uint64_t account_id, const char *code,
                     const char *key_name, EVP_PKEY *account_key, int64_t enrolled_at,
                     uint8_t **out, size_t *outlen)
{
    uint8_t code_pub[ED25519_PUB_LEN], code_sig[ED25519_SIG_LEN];
    uint8_t *pub = NULL, *tbs = NULL, *self_sig = NULL;
    size_t publen = 0, tbslen = 0, self_siglen = 0;
    EVP_PKEY *ck = NULL;
    struct wbuf b;
    int rc = code_key(vault_id, account_id, code, &ck);

    if (rc == 0)
        rc = ed25519_public_raw(ck, code_pub);
    if (rc == 0)
        rc = rsa_public_to_der(account_key, &pub, &publen);
    if (rc == 0)
        rc = proof_tbs(vault_id, account_id, code_pub, key_name, pub, publen, enrolled_at,
                       &tbs, &tbslen);
    if (rc == 0)
        rc = ed25519_sign(ck, tbs, tbslen, code_sig);
    if (rc == 0)
        rc = sig_sign(account_key, tbs, tbslen, &self_sig, &self_siglen);
    if (rc == 0) {
        wbuf_init(&b);
        wbuf_put_bytes(&b, PROOF_MAGIC, 4);
        wbuf_put_u8(&b, PROOF_VERSION);
        wbuf_put_blob(&b, tbs, tbslen);
        wbuf_put_blob(&b, code_sig, sizeof code_sig);
        wbuf_put_blob(&b, self_sig, self_siglen);
        *out = wbuf_steal(&b, outlen);
        rc = *out ? 0 : -ENOMEM;
    }
    EVP_PKEY_free(ck);
    free(pub);
    free(tbs);
    free(self_sig);
    return rc;
}

int enrol_proof_verify(const char *vault_id, uint64_t account_id,
                       const uint8_t code_pub[ED25519_PUB_LEN], const char *key_name,
                       const uint8_t *blob, size_t len, const uint8_t **pub, size_t *publen,
                       int64_t *enrolled_at)
{
    struct rbuf b, t;
    const uint8_t *magic, *tbs, *code_sig, *self_sig, *vid, *cpub, *kn;
    size_t tbslen, code_siglen, self_siglen, vidlen, cpublen, knlen;
    uint8_t version = 0, tversion = 0;
    uint64_t id = 0, at = 0;
    EVP_PKEY *key = NULL;
    int rc;

    rbuf_init(&b, blob, len);
    rbuf_get_ref(&b, &magic, 4);
    rbuf_get_u8(&b, &version);
    if (b.err || memcmp(magic, PROOF_MAGIC, 4) || version != PROOF_VERSION)
        return pfs_err(-EBADMSG, "the enrolment proof of account %llu is not one pactfs reads",
                       (unsigned long long)account_id);
    rbuf_get_blob(&b, &tbs, &tbslen, PROOF_MAX);
    rbuf_get_blob(&b, &code_sig, &code_siglen, ED25519_SIG_LEN);
    rbuf_get_blob(&b, &self_sig, &self_siglen, 1024);
    rbuf_init(&t, tbs, b.err ? 0 : tbslen);
    rbuf_get_ref(&t, &magic, 4);
    rbuf_get_u8(&t, &tversion);
    rbuf_get_blob(&t, &vid, &vidlen, 64);
    rbuf_get_u64(&t, &id);
    rbuf_get_blob(&t, &cpub, &cpublen, ED25519_PUB_LEN);
    rbuf_get_blob(&t, &kn, &knlen, 255);
    rbuf_get_blob(&t, pub, publen, 4096);
    rbuf_get_u64(&t, &at);
    if (rbuf_end(&b) < 0 || rbuf_end(&t) < 0 || memcmp(magic, PROOF_MAGIC, 4) ||
        tversion != PROOF_VERSION)
        return pfs_err(-EBADMSG, "the enrolment proof of account %llu is malformed",
                       (unsigned long long)account_id);
    if (vidlen != strlen(vault_id) || memcmp(vid, vault_id, vidlen) || id != account_id ||
        cpublen != ED25519_PUB_LEN || crypto_memcmp(cpub, code_pub, ED25519_PUB_LEN) ||
        knlen != strlen(key_name) || memcmp(kn, key_name, knlen))
        return pfs_err(-EBADMSG, "the enrolment proof of account %llu belongs to another "
                       "account, vault or enrolment code", (unsigned long long)account_id);
    if (ed25519_verify(code_pub, tbs, tbslen, code_sig, code_siglen) < 0)
        return pfs_err(-EBADMSG, "the enrolment proof of account %llu is not signed by its "
                       "enrolment code: it was forged or altered",
                       (unsigned long long)account_id);
    key = rsa_public_from_der(*pub, *publen);
    rc = key ? sig_verify(key, tbs, tbslen, self_sig, self_siglen) : -EBADMSG;
    EVP_PKEY_free(key);
    if (rc < 0)
        return pfs_err(-EBADMSG, "the enrolment proof of account %llu is not signed by the "
                       "key it enrols", (unsigned long long)account_id);
    *enrolled_at = (int64_t)at;
    return 0;
}

/* ------------------------------------------------------------ storage */

static void proof_param(uint64_t account_id, char *key, size_t keylen)
{
    snprintf(key, keylen, "registry.enrol.%" PRIu64, account_id);
}

int enrol_proof_store(struct meta *m, uint64_t account_id, const uint8_t *proof, size_t len)
{
    char key[64];

    proof_param(account_id, key, sizeof key);
    return meta_param_set(m, key, len ? (const void *)proof : "", len);
}

int enrol_proof_load(struct meta *m, uint64_t account_id, uint8_t **proof, size_t *len)
{
    char key[64];
    int rc;

    proof_param(account_id, key, sizeof key);
    rc = meta_param_get(m, key, proof, len);
    if (rc == 0 && *len == 0) {
        free(*proof);
        *proof = NULL;
        rc = -ENOENT;
    }
    return rc;
}

/* ------------------------------------------------------------ enrolment */

/* Enrol a fresh share for key_name; a share left from an earlier
 * enrolment of the same account (re-enrolment) is replaced. */
static int keyring_create_fresh(const char *vault_id, const char *key_name, const char *password,
                                const struct pwkdf_params *kdf, unsigned rsa_bits,
                                struct share_provider *sp, struct meta_account *a,
                                EVP_PKEY **key)
{
    int rc = keyring_create(vault_id, key_name, password, kdf, rsa_bits, sp, &a->pubkey,
                            &a->pubkey_len, &a->sealed_key, &a->sealed_key_len, key);

    if (rc == -EEXIST) {
        pfs_err_clear();
        rc = sp->ops->remove(sp, vault_id, key_name);
        if (rc == 0 || rc == -ENOENT)
            rc = keyring_create(vault_id, key_name, password, kdf, rsa_bits, sp, &a->pubkey,
                                &a->pubkey_len, &a->sealed_key, &a->sealed_key_len, key);
    }
    return rc;
}

/* In the caller's transaction. */
int enrol_account_key(struct meta *m, const char *vault_id, struct share_provider *sp,
                       uint64_t account_id, const char *key_name, const char *code,
                       const char *password, const struct pwkdf_params *kdf,
                       unsigned rsa_bits, EVP_PKEY **key_out)
{
    struct meta_account a = { 0 };
    EVP_PKEY *key = NULL;
    uint8_t *proof = NULL;
    size_t prooflen = 0;
    int rc = meta_account_get(m, account_id, &a);

    if (rc < 0)
        return rc;
    free(a.pubkey);
    free(a.sealed_key);
    a.pubkey = a.sealed_key = NULL;
    a.pubkey_len = a.sealed_key_len = 0;
    struct enrol_signer signer = { vault_id, account_id, code };

    enrol_signer_set(sp, &signer);
    rc = keyring_create_fresh(vault_id, key_name, password, kdf, rsa_bits, sp, &a, &key);
    enrol_signer_set(sp, NULL);
    if (rc < 0) {
        meta_account_clear(&a);
        return rc;
    }
    rc = enrol_proof_make(vault_id, account_id, code, key_name, key, (int64_t)time(NULL),
                          &proof, &prooflen);
    if (rc == 0)
        rc = meta_account_update(m, &a);
    if (rc == 0)
        rc = enrol_proof_store(m, account_id, proof, prooflen);
    if (rc < 0)
        sp->ops->remove(sp, vault_id, key_name);   /* no half-enrolled share left */
    free(proof);
    meta_account_clear(&a);
    if (rc == 0 && key_out)
        *key_out = key;
    else
        EVP_PKEY_free(key);
    return rc;
}

