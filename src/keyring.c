#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "crypto.h"
#include "error.h"
#include "keyring.h"
#include "log.h"
#include "secmem.h"

/* Sealed account key layout (docs/format-keys.md):
 *   "PFSK" u8 version=1
 *   blob  account name
 *   u8 alg, u32 t_cost, u32 m_cost_kib, u32 parallelism, salt[16]
 *   u32   RSA bits
 *   blob  nonce || AES-256-GCM(PKCS#8 DER) || tag
 * AD = "pactfs v1 sealed account key" || blob(vault_id) || every header byte
 * before the last blob, so no header field can be changed undetected. */

#define SEALED_MAGIC "PFSK"
#define SEALED_VERSION 1
#define SEALED_AD_LABEL "pactfs v1 sealed account key"
#define ACCOUNT_MAX 255
#define SEALED_BOX_MAX (64 * 1024)
#define DEFAULT_RSA_BITS 3072

/* Every intermediate secret of one unlock, kept together in secmem. */
struct unlock_secrets {
    uint8_t key_half[32];
    uint8_t auth[SHARE_AUTH_LEN];
    uint8_t share[SHARE_LEN];
    uint8_t unlock_key[AEAD_KEY_LEN];
};

struct sealed_header {
    char account[ACCOUNT_MAX + 1];
    struct pwkdf_params params;
    uint32_t rsa_bits;
    const uint8_t *head;      /* header bytes covered by the AD */
    size_t headlen;
    const uint8_t *box;       /* nonce || ct || tag */
    size_t boxlen;
};

static struct unlock_secrets *secrets_new(void)
{
    struct unlock_secrets *s = secmem_alloc(sizeof *s);

    if (!s)
        pfs_err(-ENOMEM, "out of secure memory");
    return s;
}

static void secrets_free(struct unlock_secrets *s)
{
    secmem_free(s, sizeof *s);
}

static int check_names(const char *vault_id, const char *account, const char *password)
{
    if (!vault_id || !*vault_id)
        return pfs_err(-EINVAL, "keyring: empty vault id");
    if (!account || !*account || strlen(account) > ACCOUNT_MAX)
        return pfs_err(-EINVAL, "keyring: account name must be 1..%d bytes", ACCOUNT_MAX);
    if (!password || !*password)
        return pfs_err(-EINVAL, "keyring: empty password");
    return 0;
}

/* ---- derivations (exactly those of keyring.h) ---- */

static int hkdf_label(const uint8_t *ikm, size_t ikmlen, const char *label, uint8_t out[32])
{
    return hkdf_sha256(ikm, ikmlen, NULL, 0, label, strlen(label), out, 32);
}

int keyring_derive_password_parts(const char *password, const struct pwkdf_params *p,
                                  uint8_t key_half[32], uint8_t auth[SHARE_AUTH_LEN])
{
    uint8_t *pwkey = secmem_alloc(32);
    int rc;

    if (!pwkey)
        return pfs_err(-ENOMEM, "out of secure memory");
    rc = pwkdf_derive(password, strlen(password), p, pwkey);
    if (rc == 0)
        rc = hkdf_label(pwkey, 32, "pactfs v1 unlock half", key_half);
    if (rc == 0)
        rc = hkdf_label(pwkey, 32, "pactfs v1 share auth", auth);
    secmem_free(pwkey, 32);
    return rc;
}

static int unlock_key_derive(struct unlock_secrets *s)
{
    uint8_t *ikm = secmem_alloc(64);
    int rc;

    if (!ikm)
        return pfs_err(-ENOMEM, "out of secure memory");
    memcpy(ikm, s->key_half, 32);
    memcpy(ikm + 32, s->share, SHARE_LEN);
    rc = hkdf_label(ikm, 64, "pactfs v1 unlock key", s->unlock_key);
    secmem_free(ikm, 64);
    return rc;
}

/* ---- sealed blob ---- */

static void put_header(struct wbuf *w, const char *account, const struct pwkdf_params *p,
                       uint32_t rsa_bits)
{
    wbuf_put_bytes(w, SEALED_MAGIC, 4);
    wbuf_put_u8(w, SEALED_VERSION);
    wbuf_put_str(w, account);
    wbuf_put_u8(w, p->alg);
    wbuf_put_u32(w, p->t_cost);
    wbuf_put_u32(w, p->m_cost_kib);
    wbuf_put_u32(w, p->parallelism);
    wbuf_put_bytes(w, p->salt, PWKDF_SALT_LEN);
    wbuf_put_u32(w, rsa_bits);
}

static int sealed_ad(const char *vault_id, const uint8_t *head, size_t headlen,
                     uint8_t **ad, size_t *adlen)
{
    struct wbuf w;

    wbuf_init(&w);
    wbuf_put_bytes(&w, SEALED_AD_LABEL, strlen(SEALED_AD_LABEL));
    wbuf_put_str(&w, vault_id);
    wbuf_put_bytes(&w, head, headlen);
    *ad = wbuf_steal(&w, adlen);
    return *ad ? 0 : pfs_err(-ENOMEM, "out of memory");
}

static int sealed_build(const char *vault_id, const char *account,
                        const struct pwkdf_params *p, uint32_t rsa_bits,
                        const uint8_t unlock_key[AEAD_KEY_LEN], EVP_PKEY *key,
                        uint8_t **out, size_t *outlen)
{
    uint8_t *der = NULL, *ad = NULL, *box;
    size_t derlen = 0, adlen = 0, headlen;
    struct wbuf w;
    int rc;

    *out = NULL;
    if ((rc = rsa_private_to_der(key, &der, &derlen)) != 0)
        return rc;
    wbuf_init(&w);
    put_header(&w, account, p, rsa_bits);
    headlen = w.len;
    rc = wbuf_status(&w) ? -ENOMEM : sealed_ad(vault_id, w.data, headlen, &ad, &adlen);
    if (rc == 0) {
        wbuf_put_u32(&w, (uint32_t)(derlen + AEAD_OVERHEAD));
        box = wbuf_reserve(&w, derlen + AEAD_OVERHEAD);
        rc = box ? aead_seal(unlock_key, ad, adlen, der, derlen, box) : -ENOMEM;
    }
    free(ad);
    secmem_free(der, derlen);
    if (rc) {
        wbuf_free(&w);
        return rc == -ENOMEM ? pfs_err(rc, "out of memory sealing the account key") : rc;
    }
    *out = wbuf_steal(&w, outlen);
    return *out ? 0 : pfs_err(-ENOMEM, "out of memory sealing the account key");
}

static int sealed_parse(const uint8_t *sealed, size_t len, struct sealed_header *h)
{
    struct rbuf r;
    uint8_t magic[4] = { 0 }, version = 0;
    const uint8_t *acct = NULL;
    size_t acctlen = 0;

    memset(h, 0, sizeof *h);
    rbuf_init(&r, sealed, len);
    rbuf_get_bytes(&r, magic, 4);
    rbuf_get_u8(&r, &version);
    if (r.err || memcmp(magic, SEALED_MAGIC, 4) != 0)
        return pfs_err(-EBADMSG, "not a sealed pactfs account key");
    if (version != SEALED_VERSION)
        return pfs_err(-EBADMSG, "sealed account key has version %u; this pactfs reads "
                       "version %d (upgrade pactfs)", version, SEALED_VERSION);
    rbuf_get_blob(&r, &acct, &acctlen, ACCOUNT_MAX);
    rbuf_get_u8(&r, &h->params.alg);
    rbuf_get_u32(&r, &h->params.t_cost);
    rbuf_get_u32(&r, &h->params.m_cost_kib);
    rbuf_get_u32(&r, &h->params.parallelism);
    rbuf_get_bytes(&r, h->params.salt, PWKDF_SALT_LEN);
    rbuf_get_u32(&r, &h->rsa_bits);
    h->head = sealed;
    h->headlen = r.off;
    rbuf_get_blob(&r, &h->box, &h->boxlen, SEALED_BOX_MAX);
    if (rbuf_end(&r) != 0 || acctlen == 0 || memchr(acct, '\0', acctlen)
        || h->boxlen < AEAD_OVERHEAD + 1)
        return pfs_err(-EBADMSG, "sealed account key is truncated or corrupt");
    memcpy(h->account, acct, acctlen);
    h->account[acctlen] = '\0';
    return 0;
}

/* Parse the blob and check that it belongs to this account. */
static int sealed_parse_for(const char *account, const uint8_t *sealed, size_t len,
                            struct sealed_header *h)
{
    int rc = sealed_parse(sealed, len, h);

    if (rc == 0 && strcmp(h->account, account) != 0)
        rc = pfs_err(-EBADMSG, "the sealed key belongs to account \"%s\", not \"%s\"",
                     h->account, account);
    return rc;
}

/* Open the box with s->unlock_key: the private key, checked against the
 * header's size.  A failed open means a wrong password or share. */
static int sealed_open(const char *vault_id, const struct sealed_header *h,
                       const struct unlock_secrets *s, EVP_PKEY **priv_out)
{
    uint8_t *ad = NULL, *der;
    size_t adlen = 0, derlen = h->boxlen - AEAD_OVERHEAD;
    EVP_PKEY *key = NULL;
    int rc;

    if ((rc = sealed_ad(vault_id, h->head, h->headlen, &ad, &adlen)) != 0)
        return rc;
    der = secmem_alloc(derlen);
    if (!der) {
        free(ad);
        return pfs_err(-ENOMEM, "out of secure memory");
    }
    rc = aead_open(s->unlock_key, ad, adlen, h->box, h->boxlen, der);
    free(ad);
    if (rc == -EBADMSG)
        rc = pfs_err(-EKEYREJECTED, "wrong password or key share for account \"%s\" (or "
                     "the sealed key belongs to another vault)", h->account);
    if (rc == 0 && !(key = rsa_private_from_der(der, derlen)))
        rc = -EBADMSG;
    secmem_free(der, derlen);
    if (rc == 0 && (uint32_t)EVP_PKEY_get_bits(key) != h->rsa_bits) {
        rc = pfs_err(-EBADMSG, "sealed key header says %u bits, key has %d", h->rsa_bits,
                     EVP_PKEY_get_bits(key));
        EVP_PKEY_free(key);
    }
    if (rc == 0)
        *priv_out = key;
    return rc;
}

/* Password -> key half and authenticator -> share from the provider ->
 * unlock key -> private key.  Leaves the secrets in s for re-sealing. */
static int unseal(const char *vault_id, const char *password, const struct sealed_header *h,
                  struct share_provider *sp, struct unlock_secrets *s, EVP_PKEY **priv_out,
                  unsigned *retry_after)
{
    unsigned retry = 0;
    int rc = keyring_derive_password_parts(password, &h->params, s->key_half, s->auth);

    if (rc)
        return rc;
    rc = sp->ops->fetch(sp, vault_id, h->account, s->auth, s->share, &retry);
    if (retry_after)
        *retry_after = retry;
    if (rc)
        return rc;
    if ((rc = unlock_key_derive(s)) != 0)
        return rc;
    return sealed_open(vault_id, h, s, priv_out);
}

static int params_fresh(const struct pwkdf_params *given, struct pwkdf_params *p)
{
    int rc = pwkdf_params_default(p);

    if (rc == 0 && given) {
        /* Cost from the caller, but always a fresh salt. */
        p->alg = given->alg;
        p->t_cost = given->t_cost;
        p->m_cost_kib = given->m_cost_kib;
        p->parallelism = given->parallelism;
    }
    return rc;
}

/* ---- public operations ---- */

int keyring_create(const char *vault_id, const char *account, const char *password,
                   const struct pwkdf_params *params, unsigned rsa_bits,
                   struct share_provider *sp,
                   uint8_t **pub_der, size_t *pub_len,
                   uint8_t **sealed, size_t *sealed_len,
                   EVP_PKEY **keypair_out)
{
    struct pwkdf_params p;
    struct unlock_secrets *s;
    EVP_PKEY *key = NULL;
    int rc, enrolled = 0;

    *pub_der = *sealed = NULL;
    if (keypair_out)
        *keypair_out = NULL;
    if ((rc = check_names(vault_id, account, password)) != 0
        || (rc = params_fresh(params, &p)) != 0)
        return rc;
    if (!(s = secrets_new()))
        return -ENOMEM;
    /* Cheap checks first (parameters, duplicate account), the slow RSA
     * generation last. */
    rc = keyring_derive_password_parts(password, &p, s->key_half, s->auth);
    if (rc == 0 && rsa_bits && rsa_bits < RSA_MIN_BITS)
        rc = pfs_err(-EINVAL, "RSA key size %u refused: pactfs requires >= %d bits",
                     rsa_bits, RSA_MIN_BITS);
    if (rc == 0 && (rc = sp->ops->enroll(sp, vault_id, account, s->auth, s->share)) == 0)
        enrolled = 1;
    if (rc == 0 && !(key = rsa_generate(rsa_bits ? rsa_bits : DEFAULT_RSA_BITS)))
        rc = -EINVAL;
    if (rc == 0)
        rc = unlock_key_derive(s);
    if (rc == 0)
        rc = sealed_build(vault_id, account, &p, (uint32_t)EVP_PKEY_get_bits(key),
                          s->unlock_key, key, sealed, sealed_len);
    if (rc == 0)
        rc = rsa_public_to_der(key, pub_der, pub_len);
    secrets_free(s);
    if (rc) {
        if (enrolled)   /* no half-created account left at the provider */
            sp->ops->remove(sp, vault_id, account);
        free(*sealed);
        *sealed = NULL;
        EVP_PKEY_free(key);
        return rc;
    }
    if (keypair_out)
        *keypair_out = key;
    else
        EVP_PKEY_free(key);
    return 0;
}

int keyring_unlock(const char *vault_id, const char *account, const char *password,
                   const uint8_t *sealed, size_t sealed_len,
                   struct share_provider *sp, EVP_PKEY **priv_out,
                   unsigned *retry_after)
{
    struct sealed_header h;
    struct unlock_secrets *s;
    int rc;

    *priv_out = NULL;
    if (retry_after)
        *retry_after = 0;
    if ((rc = check_names(vault_id, account, password)) != 0
        || (rc = sealed_parse_for(account, sealed, sealed_len, &h)) != 0)
        return rc;
    if (!(s = secrets_new()))
        return -ENOMEM;
    rc = unseal(vault_id, password, &h, sp, s, priv_out, retry_after);
    secrets_free(s);
    return rc;
}

int keyring_change_password(const char *vault_id, const char *account,
                            const char *old_password, const char *new_password,
                            const struct pwkdf_params *params,
                            const uint8_t *sealed, size_t sealed_len,
                            struct share_provider *sp,
                            uint8_t **new_sealed, size_t *new_sealed_len)
{
    struct sealed_header h;
    struct pwkdf_params p;
    struct unlock_secrets *olds = NULL, *news = NULL;
    EVP_PKEY *key = NULL;
    int rc;

    *new_sealed = NULL;
    if ((rc = check_names(vault_id, account, old_password)) != 0
        || (rc = check_names(vault_id, account, new_password)) != 0
        || (rc = sealed_parse_for(account, sealed, sealed_len, &h)) != 0
        || (rc = params_fresh(params, &p)) != 0)
        return rc;
    if (!(olds = secrets_new()) || !(news = secrets_new())) {
        secrets_free(olds);
        return -ENOMEM;
    }
    rc = unseal(vault_id, old_password, &h, sp, olds, &key, NULL);
    if (rc == 0)
        rc = keyring_derive_password_parts(new_password, &p, news->key_half, news->auth);
    /* Switch the verifier first: a failure there leaves the old password
     * fully working.  Then replace the share, so an older sealed key put
     * back opens nothing even with its password; should that fail, the new
     * password still seals with the old share (and a warning says so). */
    if (rc == 0)
        rc = sp->ops->change_auth(sp, vault_id, account, olds->auth, news->auth);
    if (rc == 0 && sp->ops->rotate(sp, vault_id, account, news->auth, news->share) < 0) {
        log_warning("the password was changed but the key share could not be replaced (%s); run "
                    "pactfs-admin rotate-share", pfs_err_msg());
        memcpy(news->share, olds->share, SHARE_LEN);
    }
    if (rc == 0)
        rc = unlock_key_derive(news);
    if (rc == 0)
        rc = sealed_build(vault_id, account, &p, h.rsa_bits, news->unlock_key, key,
                          new_sealed, new_sealed_len);
    if (rc) {
        free(*new_sealed);
        *new_sealed = NULL;
    }
    EVP_PKEY_free(key);
    secrets_free(olds);
    secrets_free(news);
    return rc;
}

int keyring_rotate_share(const char *vault_id, const char *account, const char *password,
                         const uint8_t *sealed, size_t sealed_len,
                         struct share_provider *sp,
                         uint8_t **new_sealed, size_t *new_sealed_len)
{
    struct sealed_header h;
    struct unlock_secrets *s;
    EVP_PKEY *key = NULL;
    int rc;

    *new_sealed = NULL;
    if ((rc = check_names(vault_id, account, password)) != 0
        || (rc = sealed_parse_for(account, sealed, sealed_len, &h)) != 0)
        return rc;
    if (!(s = secrets_new()))
        return -ENOMEM;
    rc = unseal(vault_id, password, &h, sp, s, &key, NULL);
    if (rc == 0)
        rc = sp->ops->rotate(sp, vault_id, account, s->auth, s->share);
    if (rc == 0)
        rc = unlock_key_derive(s);
    /* Same password and salt; the new share alone changes the unlock key. */
    if (rc == 0)
        rc = sealed_build(vault_id, account, &h.params, h.rsa_bits, s->unlock_key, key,
                          new_sealed, new_sealed_len);
    EVP_PKEY_free(key);
    secrets_free(s);
    return rc;
}
