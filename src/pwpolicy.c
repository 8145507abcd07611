#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <pwquality.h>

#include "buf.h"
#include "crypto.h"
#include "error.h"
#include "pwpolicy.h"
#include "registry.h"
#include "secmem.h"

#define POLICY_PARAM "policy.password"
#define POLICY_MAGIC "PFSP"
#define POLICY_VERSION 1
#define HISTORY_INFO "pactfs v1 password history"

void pwpolicy_defaults(struct pwpolicy *p)
{
    p->min_length = PWPOLICY_MIN_LENGTH;
    p->dictionary = 1;
    p->history = PWPOLICY_HISTORY;
}

/* ------------------------------------------------------ signed policy */

static int policy_tbs(const char *vault_id, const struct pwpolicy *p, uint64_t signer_id,
                      uint8_t **out, size_t *outlen)
{
    struct wbuf b;

    wbuf_init(&b);
    wbuf_put_bytes(&b, POLICY_MAGIC, 4);
    wbuf_put_u8(&b, POLICY_VERSION);
    wbuf_put_str(&b, vault_id);
    wbuf_put_u32(&b, p->min_length);
    wbuf_put_u8(&b, p->dictionary ? 1 : 0);
    wbuf_put_u32(&b, p->history);
    wbuf_put_u64(&b, signer_id);
    *out = wbuf_steal(&b, outlen);
    return *out ? 0 : -ENOMEM;
}

int pwpolicy_store(struct meta *m, const char *vault_id, const struct pwpolicy *p,
                   EVP_PKEY *signer, uint64_t signer_id)
{
    uint8_t *tbs = NULL, *out = NULL;
    size_t tbslen = 0, outlen = 0;
    int rc;

    if (p->min_length < 8 || p->min_length > 1024 || p->history > PWPOLICY_HISTORY_MAX)
        return pfs_err(-EINVAL, "password policy: the minimum length must be 8 to 1024 and "
                       "the history at most %d", PWPOLICY_HISTORY_MAX);
    rc = policy_tbs(vault_id, p, signer_id, &tbs, &tbslen);
    if (rc == 0)
        rc = sig_sign_container(signer, tbs, tbslen, &out, &outlen);
    if (rc == 0) {
        rc = meta_param_set(m, POLICY_PARAM, out, outlen);
        free(out);
    }
    free(tbs);
    return rc;
}

static int policy_decode(const char *vault_id, const uint8_t *raw, size_t len,
                         struct pwpolicy *p, uint64_t *signer_id, const uint8_t **tbs,
                         size_t *tbslen, const uint8_t **sig, size_t *siglen)
{
    struct rbuf b, t;
    const uint8_t *magic, *vid;
    size_t vidlen;
    uint8_t version = 0, dict = 0;
    uint32_t minlen = 0, history = 0;

    rbuf_init(&b, raw, len);
    rbuf_get_blob(&b, tbs, tbslen, 4096);
    rbuf_get_blob(&b, sig, siglen, 1024);
    rbuf_init(&t, *tbs, b.err ? 0 : *tbslen);
    rbuf_get_ref(&t, &magic, 4);
    rbuf_get_u8(&t, &version);
    rbuf_get_blob(&t, &vid, &vidlen, 64);
    rbuf_get_u32(&t, &minlen);
    rbuf_get_u8(&t, &dict);
    rbuf_get_u32(&t, &history);
    rbuf_get_u64(&t, signer_id);
    if (rbuf_end(&b) < 0 || rbuf_end(&t) < 0 || memcmp(magic, POLICY_MAGIC, 4) ||
        version != POLICY_VERSION || vidlen != strlen(vault_id) ||
        memcmp(vid, vault_id, vidlen) || dict > 1 || history > PWPOLICY_HISTORY_MAX)
        return -EBADMSG;
    p->min_length = minlen;
    p->dictionary = dict;
    p->history = history;
    return 0;
}

int pwpolicy_load(struct meta *m, const char *vault_id, const char *root_fp,
                  struct pwpolicy *p)
{
    struct registry_record r = { 0 };
    const uint8_t *tbs, *sig;
    size_t len = 0, tbslen, siglen;
    uint64_t signer_id = 0;
    uint8_t *raw = NULL;
    EVP_PKEY *key = NULL;
    int rc = meta_param_get(m, POLICY_PARAM, &raw, &len);

    pwpolicy_defaults(p);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    rc = policy_decode(vault_id, raw, len, p, &signer_id, &tbs, &tbslen, &sig, &siglen);
    if (rc == 0)
        rc = registry_verified_key(m, vault_id, root_fp, signer_id, &r, &key);
    if (rc == 0 && (!(r.roles & ROLE_SYSADMIN) || r.disabled))
        rc = -EBADMSG;
    if (rc == 0 && sig_verify(key, tbs, tbslen, sig, siglen) < 0)
        rc = -EBADMSG;
    if (rc < 0)
        rc = pfs_err(-EBADMSG, "the vault's password policy does not verify (not signed by an "
                     "enabled sysadmin): no password is accepted until a sysadmin sets it "
                     "again with pactfs-admin password-policy");
    EVP_PKEY_free(key);
    registry_record_clear(&r);
    free(raw);
    return rc;
}

/* ------------------------------------------------------------ quality */

int pwpolicy_check(const struct pwpolicy *p, const char *password, const char *old_password,
                   const char *account)
{
    pwquality_settings_t *pwq;
    void *aux = NULL;
    const char *msg;
    char why[256];
    int score;

    if (strlen(password) < p->min_length)
        return pfs_err(PWPOLICY_REFUSED, "the password is refused by the vault's policy: it "
                       "has fewer than %u characters", p->min_length);
    /* The vault's settings only, never the machine's /etc/security/pwquality.conf. */
    pwq = pwquality_default_settings();
    if (!pwq)
        return -ENOMEM;
    if (pwquality_set_int_value(pwq, PWQ_SETTING_MIN_LENGTH, (int)p->min_length) ||
        pwquality_set_int_value(pwq, PWQ_SETTING_DICT_CHECK, p->dictionary) ||
        pwquality_set_int_value(pwq, PWQ_SETTING_USER_CHECK, 1)) {
        pwquality_free_settings(pwq);
        return pfs_err(-EINVAL, "libpwquality refused the vault's policy settings");
    }
    score = pwquality_check(pwq, password, old_password, account, &aux);
    pwquality_free_settings(pwq);
    if (score >= 0)
        return 0;
    /* The message is returned, not necessarily written into why. */
    msg = pwquality_strerror(why, sizeof why, score, aux);
    return pfs_err(PWPOLICY_REFUSED, "the password is refused by the vault's policy: %s",
                   msg ? msg : "rejected by libpwquality");
}

/* ------------------------------------------------------------ history */

static void history_param(uint64_t account_id, char *key, size_t keylen)
{
    snprintf(key, keylen, "account.pwhistory.%" PRIu64, account_id);
}

static int history_key(const char *vault_id, uint64_t account_id, EVP_PKEY *priv,
                       uint8_t *out)
{
    uint8_t info[sizeof HISTORY_INFO - 1 + 8];
    uint8_t *der = NULL;
    size_t derlen = 0;
    int rc = rsa_private_to_der(priv, &der, &derlen);

    if (rc < 0)
        return rc;
    memcpy(info, HISTORY_INFO, sizeof HISTORY_INFO - 1);
    for (int i = 0; i < 8; i++)
        info[sizeof HISTORY_INFO - 1 + i] = (uint8_t)(account_id >> (56 - 8 * i));
    rc = hkdf_sha256(der, derlen, vault_id, strlen(vault_id), info, sizeof info, out, 32);
    secmem_free(der, derlen);
    return rc;
}

static int history_hash(const uint8_t key[32], const char *password, uint8_t out[SHA256_LEN])
{
    size_t outlen = 0;

    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, 32, (const uint8_t *)password,
                   strlen(password), out, SHA256_LEN, &outlen) || outlen != SHA256_LEN)
        return pfs_err(-EIO, "HMAC-SHA-256 of the password history failed");
    return 0;
}

/* The stored entries (a multiple of SHA256_LEN bytes; junk is dropped). */
static int history_get(struct meta *m, uint64_t account_id, uint8_t **h, size_t *n)
{
    char key[64];
    size_t len = 0;
    int rc;

    history_param(account_id, key, sizeof key);
    rc = meta_param_get(m, key, h, &len);
    if (rc == -ENOENT) {
        *h = NULL;
        *n = 0;
        return 0;
    }
    *n = rc == 0 ? len / SHA256_LEN : 0;
    return rc;
}

static int history_hash_for(const char *vault_id, uint64_t account_id, EVP_PKEY *priv,
                            const char *password, uint8_t out[SHA256_LEN])
{
    uint8_t *k = secmem_alloc(32);
    int rc;

    if (!k)
        return -ENOMEM;
    rc = history_key(vault_id, account_id, priv, k);
    if (rc == 0)
        rc = history_hash(k, password, out);
    secmem_free(k, 32);
    return rc;
}

int pwpolicy_history_check(struct meta *m, const char *vault_id, uint64_t account_id,
                           EVP_PKEY *priv, const char *password)
{
    uint8_t mine[SHA256_LEN], *h = NULL;
    size_t n = 0;
    int rc = history_hash_for(vault_id, account_id, priv, password, mine);

    if (rc == 0)
        rc = history_get(m, account_id, &h, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (crypto_memcmp(h + i * SHA256_LEN, mine, SHA256_LEN) == 0)
            rc = pfs_err(PWPOLICY_REFUSED, "the password is refused by the vault's policy: it "
                         "was used before (choose one you have not used for this account)");
    free(h);
    return rc;
}

int pwpolicy_history_add(struct meta *m, const char *vault_id, uint64_t account_id,
                         EVP_PKEY *priv, const char *password, const struct pwpolicy *p)
{
    uint8_t mine[SHA256_LEN], *h = NULL, *out;
    size_t n = 0, keep;
    char key[64];
    int rc = history_hash_for(vault_id, account_id, priv, password, mine);

    if (rc == 0)
        rc = history_get(m, account_id, &h, &n);
    if (rc < 0) {
        free(h);
        return rc;
    }
    /* The newest last; keep the last p->history (the current one counts). */
    keep = p->history ? p->history - 1 : 0;
    if (n > keep)
        memmove(h, h + (n - keep) * SHA256_LEN, keep * SHA256_LEN), n = keep;
    out = malloc((n + 1) * SHA256_LEN);
    if (!out) {
        free(h);
        return -ENOMEM;
    }
    if (n)
        memcpy(out, h, n * SHA256_LEN);
    memcpy(out + n * SHA256_LEN, mine, SHA256_LEN);
    history_param(account_id, key, sizeof key);
    rc = meta_param_set(m, key, out, p->history ? (n + 1) * SHA256_LEN : 0);
    free(out);
    free(h);
    return rc;
}
