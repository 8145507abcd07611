#include "config.h"

/* The audit names key: see audit_names.h and docs/format-audit.md. */

#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_names.h"
#include "buf.h"
#include "crypto.h"
#include "error.h"
#include "fileio.h"
#include "meta.h"
#include "registry.h"
#include "secmem.h"

#define NAMES_MAGIC "PFAN"
#define NAMES_VERSION 1
#define SECRET_LEN 32
#define LABEL_PRIV "pactfs audit names private key v1\n"
#define LABEL_ENV "pactfs audit names secret v1\n"
#define LABEL_SESSION "pactfs audit session names v1\n"
#define LABEL_EVENT "pactfs audit names v1\n"
#define NAMES_KEY_BITS 3072

static void env_param(uint64_t account_id, char *out, size_t len)
{
    snprintf(out, len, AUDIT_NAMES_PARAM ".env.%" PRIu64, account_id);
}

/* label + vault [+ "\n" + extra] into out. */
static size_t label(char *out, size_t len, const char *what, const char *vault_id,
                    const char *extra)
{
    int n = snprintf(out, len, "%s%s%s%s", what, vault_id, extra ? "\n" : "",
                     extra ? extra : "");

    return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

struct names_record {
    uint64_t signer_id;
    const uint8_t *pub, *sealed_priv, *tbs, *sig;
    size_t pub_len, sealed_len, tbs_len, sig_len;
};

static int record_decode(const char *vault_id, const uint8_t *raw, size_t len,
                         struct names_record *r)
{
    struct rbuf b, t;
    const uint8_t *magic = NULL, *vid = NULL;
    size_t vidlen = 0;
    uint8_t version = 0;

    rbuf_init(&b, raw, len);
    rbuf_get_blob(&b, &r->tbs, &r->tbs_len, 65536);
    rbuf_get_blob(&b, &r->sig, &r->sig_len, 1024);
    rbuf_init(&t, r->tbs, b.err ? 0 : r->tbs_len);
    rbuf_get_ref(&t, &magic, 4);
    rbuf_get_u8(&t, &version);
    rbuf_get_blob(&t, &vid, &vidlen, 64);
    rbuf_get_u64(&t, &r->signer_id);
    rbuf_get_blob(&t, &r->pub, &r->pub_len, 4096);
    rbuf_get_blob(&t, &r->sealed_priv, &r->sealed_len, 16384);
    if (rbuf_end(&b) < 0 || rbuf_end(&t) < 0 || memcmp(magic, NAMES_MAGIC, 4) ||
        version != NAMES_VERSION || vidlen != strlen(vault_id) ||
        memcmp(vid, vault_id, vidlen))
        return -EBADMSG;
    return 0;
}

/* The stored record, decoded and its signature checked: the signer is an
 * enabled auditor of the signed registry.  raw is the caller's to free. */
static int record_load(struct meta *m, const char *vault_id, const char *root_fp,
                       uint8_t **raw, struct names_record *r)
{
    struct registry_record reg = { 0 };
    EVP_PKEY *key = NULL;
    size_t len = 0;
    int rc = meta_param_get(m, AUDIT_NAMES_PARAM, raw, &len);

    if (rc < 0)
        return rc;
    rc = record_decode(vault_id, *raw, len, r);
    if (rc == 0)
        rc = registry_verified_key(m, vault_id, root_fp, r->signer_id, &reg, &key);
    if (rc == 0 && (!(reg.roles & ROLE_AUDITOR) || reg.disabled))
        rc = -EBADMSG;
    if (rc == 0 && sig_verify(key, r->tbs, r->tbs_len, r->sig, r->sig_len) < 0)
        rc = -EBADMSG;
    EVP_PKEY_free(key);
    registry_record_clear(&reg);
    if (rc < 0) {
        free(*raw);
        *raw = NULL;
        return pfs_err(-EBADMSG, "the vault's audit names key (parameter %s) does not verify: "
                       "it is not signed by an enabled auditor; no audit session opens until "
                       "it is restored", AUDIT_NAMES_PARAM);
    }
    return 0;
}

static int kid_of(const uint8_t *der, size_t len, char kid[AUDIT_NAMES_KID_HEX + 1])
{
    uint8_t h[SHA256_LEN];

    sha256(der, len, h);
    hex_encode(h, sizeof h, kid);
    return 0;
}

int audit_names_public(struct meta *m, const char *vault_id, const char *root_fp,
                       EVP_PKEY **pub, char kid[AUDIT_NAMES_KID_HEX + 1])
{
    struct names_record r;
    uint8_t *raw = NULL;
    int rc = record_load(m, vault_id, root_fp, &raw, &r);

    *pub = NULL;
    if (rc < 0)
        return rc;
    *pub = rsa_public_from_der(r.pub, r.pub_len);
    kid_of(r.pub, r.pub_len, kid);
    free(raw);
    return *pub ? 0 : pfs_err(-EBADMSG, "the audit names key's public half is not an RSA key");
}

static char *pin_path(const char *spool_path)
{
    char *p = NULL;

    return asprintf(&p, "%s%s", spool_path, AUDIT_NAMES_PIN_SUFFIX) < 0 ? NULL : p;
}

/* The pinned kid ("" if none): 0 or -errno. */
static int pin_read(const char *path, char kid[AUDIT_NAMES_KID_HEX + 1])
{
    FILE *f = fopen(path, "re");
    char buf[AUDIT_NAMES_KID_HEX + 8] = "";

    kid[0] = '\0';
    if (!f)
        return errno == ENOENT ? 0 : -errno;
    if (!fgets(buf, sizeof buf, f))
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    if (strlen(buf) != AUDIT_NAMES_KID_HEX)
        return pfs_err(-EBADMSG, "%s is not an audit names key id: restore it or remove it "
                       "only if the vault never had a names key", path);
    memcpy(kid, buf, AUDIT_NAMES_KID_HEX + 1);
    return 0;
}

int audit_names_for_writer(struct meta *m, const char *vault_id, const char *root_fp,
                           const char *spool_path, EVP_PKEY **pub,
                           char kid[AUDIT_NAMES_KID_HEX + 1])
{
    char pinned[AUDIT_NAMES_KID_HEX + 1], line[AUDIT_NAMES_KID_HEX + 2];
    char *path = pin_path(spool_path);
    int rc;

    *pub = NULL;
    if (!path)
        return -ENOMEM;
    rc = pin_read(path, pinned);
    if (rc == 0) {
        rc = audit_names_public(m, vault_id, root_fp, pub, kid);
        if (rc == -ENOENT && !pinned[0])
            rc = 0;                          /* no key, never seen one: plaintext names
                                              * (vault_audit_open keeps the caller's message) */
        else if (rc == -ENOENT)
            rc = pfs_err(-EBADMSG, "the vault's audit names key (%s) is gone from the "
                         "metadata store although this machine used it (%s): refusing to "
                         "write contract names in plaintext; restore the parameter %s",
                         pinned, path, AUDIT_NAMES_PARAM);
        else if (rc == 0 && pinned[0] && strcmp(pinned, kid) != 0)
            rc = pfs_err(-EBADMSG, "the vault's audit names key is %s, but this machine "
                         "sealed names to %s (%s): the metadata store's key was replaced; "
                         "refusing to seal names to it", kid, pinned, path);
    }
    if (rc == 0 && *pub && !pinned[0]) {
        snprintf(line, sizeof line, "%s\n", kid);
        rc = fileio_atomic_write(path, line, strlen(line), 0);
        if (rc < 0)
            rc = pfs_err(rc, "cannot record the audit names key id in %s: %s", path,
                         strerror(-rc));
    }
    if (rc < 0) {
        EVP_PKEY_free(*pub);
        *pub = NULL;
    }
    free(path);
    return rc;
}

static int envelope_put(struct meta *m, const char *vault_id, EVP_PKEY *to, uint64_t to_id,
                        const uint8_t secret[SECRET_LEN])
{
    char lab[256], param[64], idbuf[24];
    uint8_t *wrapped = NULL;
    size_t wlen = 0, llen;
    int rc;

    snprintf(idbuf, sizeof idbuf, "%" PRIu64, to_id);
    llen = label(lab, sizeof lab, LABEL_ENV, vault_id, idbuf);
    rc = rsa_wrap(to, lab, llen, secret, SECRET_LEN, &wrapped, &wlen);
    env_param(to_id, param, sizeof param);
    if (rc == 0)
        rc = meta_param_set(m, param, wrapped, wlen);
    free(wrapped);
    return rc;
}

int audit_names_create(struct meta *m, const char *vault_id, const char *root_fp,
                       EVP_PKEY *signer, uint64_t signer_id, char kid[AUDIT_NAMES_KID_HEX + 1])
{
    struct registry_record reg = { 0 };
    uint8_t secret[SECRET_LEN], *pub = NULL, *priv = NULL, *sealed = NULL, *tbs = NULL;
    uint8_t *out = NULL, *existing = NULL;
    size_t pub_len = 0, priv_len = 0, tbs_len = 0, out_len = 0, n = 0, llen;
    EVP_PKEY *key = NULL;
    struct wbuf b;
    char lab[256];
    int rc = meta_param_get(m, AUDIT_NAMES_PARAM, &existing, &n);

    free(existing);
    if (rc == 0)
        return pfs_err(-EEXIST, "the vault already has an audit names key: an auditor who "
                       "holds it gives it to others with pactfs-admin audit-key grant");
    if (rc != -ENOENT)
        return rc;
    rc = registry_verify(m, vault_id, root_fp, signer_id, &reg);
    if (rc == 0 && (!(reg.roles & ROLE_AUDITOR) || reg.disabled))
        rc = pfs_err(-EACCES, "only an enabled auditor makes the audit names key");
    registry_record_clear(&reg);
    if (rc < 0)
        return rc;
    if (crypto_random(secret, sizeof secret) < 0 || !(key = rsa_generate(NAMES_KEY_BITS)))
        return pfs_err(-EIO, "cannot generate the audit names key");
    rc = rsa_public_to_der(key, &pub, &pub_len);
    if (rc == 0)
        rc = rsa_private_to_der(key, &priv, &priv_len);
    if (rc == 0 && !(sealed = malloc(priv_len + AEAD_OVERHEAD)))
        rc = -ENOMEM;
    if (rc == 0) {
        llen = label(lab, sizeof lab, LABEL_PRIV, vault_id, NULL);
        rc = aead_seal(secret, lab, llen, priv, priv_len, sealed);
    }
    if (rc == 0) {
        wbuf_init(&b);
        wbuf_put_bytes(&b, NAMES_MAGIC, 4);
        wbuf_put_u8(&b, NAMES_VERSION);
        wbuf_put_str(&b, vault_id);
        wbuf_put_u64(&b, signer_id);
        wbuf_put_blob(&b, pub, pub_len);
        wbuf_put_blob(&b, sealed, priv_len + AEAD_OVERHEAD);
        tbs = wbuf_steal(&b, &tbs_len);
        rc = tbs ? 0 : -ENOMEM;
    }
    if (rc == 0)
        rc = sig_sign_container(signer, tbs, tbs_len, &out, &out_len);
    if (rc == 0)
        rc = meta_param_set(m, AUDIT_NAMES_PARAM, out, out_len);
    if (rc == 0)
        rc = envelope_put(m, vault_id, signer, signer_id, secret);
    if (rc == 0)
        kid_of(pub, pub_len, kid);
    OPENSSL_cleanse(secret, sizeof secret);
    if (priv)
        secmem_free(priv, priv_len);
    EVP_PKEY_free(key);
    free(pub);
    free(sealed);
    free(tbs);
    free(out);
    return rc;
}

/* S through account_id's envelope. */
static int secret_open(struct meta *m, const char *vault_id, EVP_PKEY *priv,
                       uint64_t account_id, uint8_t secret[SECRET_LEN])
{
    char param[64], lab[256], idbuf[24];
    uint8_t *wrapped = NULL;
    size_t wlen = 0, llen;
    int rc;

    env_param(account_id, param, sizeof param);
    rc = meta_param_get(m, param, &wrapped, &wlen);
    if (rc == -ENOENT)
        return pfs_err(-ENOENT, "this account holds no envelope of the audit names key: an "
                       "auditor who holds it runs pactfs-admin audit-key grant for it");
    if (rc < 0)
        return rc;
    snprintf(idbuf, sizeof idbuf, "%" PRIu64, account_id);
    llen = label(lab, sizeof lab, LABEL_ENV, vault_id, idbuf);
    rc = rsa_unwrap(priv, lab, llen, wrapped, wlen, secret, SECRET_LEN);
    free(wrapped);
    return rc < 0 ? pfs_err(-EBADMSG, "this account's envelope of the audit names key does "
                            "not open (altered, or made for another key)") : 0;
}

int audit_names_private(struct meta *m, const char *vault_id, const char *root_fp,
                        EVP_PKEY *priv, uint64_t account_id, EVP_PKEY **names_priv)
{
    struct names_record r;
    uint8_t secret[SECRET_LEN], *raw = NULL, *der = NULL;
    size_t der_len = 0, llen;
    char lab[256];
    int rc = record_load(m, vault_id, root_fp, &raw, &r);

    *names_priv = NULL;
    if (rc < 0)
        return rc == -ENOENT ? pfs_err(-ENOENT, "the vault has no audit names key yet (an "
                                       "auditor makes it: pactfs-admin audit-key create)") : rc;
    rc = secret_open(m, vault_id, priv, account_id, secret);
    if (rc == 0 && r.sealed_len > AEAD_OVERHEAD &&
        !(der = secmem_alloc(der_len = r.sealed_len - AEAD_OVERHEAD)))
        rc = -ENOMEM;
    if (rc == 0) {
        llen = label(lab, sizeof lab, LABEL_PRIV, vault_id, NULL);
        if (!der || aead_open(secret, lab, llen, r.sealed_priv, r.sealed_len, der) < 0)
            rc = pfs_err(-EBADMSG, "the audit names key's private half does not open");
    }
    if (rc == 0 && !(*names_priv = rsa_private_from_der(der, der_len)))
        rc = pfs_err(-EBADMSG, "the audit names key's private half is not an RSA key");
    OPENSSL_cleanse(secret, sizeof secret);
    if (der)
        secmem_free(der, der_len);
    free(raw);
    return rc;
}

int audit_names_grant(struct meta *m, const char *vault_id, const char *root_fp,
                      EVP_PKEY *priv, uint64_t account_id, uint64_t target_id)
{
    struct registry_record reg = { 0 };
    uint8_t secret[SECRET_LEN];
    EVP_PKEY *to = NULL;
    int rc = registry_verified_key(m, vault_id, root_fp, target_id, &reg, &to);

    if (rc == 0 && (!(reg.roles & ROLE_AUDITOR) || reg.disabled))
        rc = pfs_err(-EACCES, "\"%s\" is not an enabled auditor: only auditors receive the "
                     "audit names key", reg.name);
    registry_record_clear(&reg);
    if (rc == 0)
        rc = secret_open(m, vault_id, priv, account_id, secret);
    if (rc == 0)
        rc = envelope_put(m, vault_id, to, target_id, secret);
    OPENSSL_cleanse(secret, sizeof secret);
    EVP_PKEY_free(to);
    return rc;
}

/* ---------------------------------------------------------------- sessions */

static int hex_alloc(const uint8_t *p, size_t n, char **out)
{
    if (!(*out = malloc(2 * n + 1)))
        return -ENOMEM;
    hex_encode(p, n, *out);
    return 0;
}

static int unhex_alloc(const char *hex, uint8_t **out, size_t *n)
{
    size_t len = strlen(hex);

    if (len % 2 || !len || !(*out = malloc(len / 2)))
        return -EBADMSG;
    *n = len / 2;
    if (hex_decode(hex, *out, *n) < 0) {
        free(*out);
        return -EBADMSG;
    }
    return 0;
}

int audit_names_wrap_session(EVP_PKEY *pub, const char *vault_id, const char *session,
                             const uint8_t key[AUDIT_NAMES_SESSION_KEY], char **out_hex)
{
    char lab[256];
    size_t llen = label(lab, sizeof lab, LABEL_SESSION, vault_id, session), wlen = 0;
    uint8_t *wrapped = NULL;
    int rc = rsa_wrap(pub, lab, llen, key, AUDIT_NAMES_SESSION_KEY, &wrapped, &wlen);

    if (rc == 0)
        rc = hex_alloc(wrapped, wlen, out_hex);
    free(wrapped);
    return rc;
}

int audit_names_unwrap_session(EVP_PKEY *names_priv, const char *vault_id, const char *session,
                               const char *hex, uint8_t key[AUDIT_NAMES_SESSION_KEY])
{
    char lab[256];
    size_t llen = label(lab, sizeof lab, LABEL_SESSION, vault_id, session), n = 0;
    uint8_t *wrapped = NULL;
    int rc = unhex_alloc(hex, &wrapped, &n);

    if (rc == 0)
        rc = rsa_unwrap(names_priv, lab, llen, wrapped, n, key, AUDIT_NAMES_SESSION_KEY);
    free(wrapped);
    return rc < 0 ? -EBADMSG : 0;
}

int audit_names_seal(const uint8_t key[AUDIT_NAMES_SESSION_KEY], const char *vault_id,
                     const char *session, const char *plain, char **out_hex)
{
    char lab[256];
    size_t llen = label(lab, sizeof lab, LABEL_EVENT, vault_id, session), n = strlen(plain);
    uint8_t *sealed = malloc(n + AEAD_OVERHEAD);
    int rc = sealed ? aead_seal(key, lab, llen, plain, n, sealed) : -ENOMEM;

    if (rc == 0)
        rc = hex_alloc(sealed, n + AEAD_OVERHEAD, out_hex);
    free(sealed);
    return rc;
}

int audit_names_open(const uint8_t key[AUDIT_NAMES_SESSION_KEY], const char *vault_id,
                     const char *session, const char *hex, char **plain)
{
    char lab[256];
    size_t llen = label(lab, sizeof lab, LABEL_EVENT, vault_id, session), n = 0;
    uint8_t *sealed = NULL;
    int rc = unhex_alloc(hex, &sealed, &n);

    if (rc == 0 && (n <= AEAD_OVERHEAD || !(*plain = malloc(n - AEAD_OVERHEAD + 1))))
        rc = -EBADMSG;
    if (rc == 0 && aead_open(key, lab, llen, sealed, n, (uint8_t *)*plain) < 0) {
        free(*plain);
        rc = -EBADMSG;
    }
    if (rc == 0)
        (*plain)[n - AEAD_OVERHEAD] = '\0';
    free(sealed);
    return rc;
}
