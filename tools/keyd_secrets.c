#include "config.h"

/* pactfs-keyd's secrets (keyd_secrets.h). */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "buf.h"
#include "error.h"
#include "fileio.h"
#include "secmem.h"

#include "https_service.h"
#include "keyd_secrets.h"

#define KEYD_VERIFIER_KEY_LABEL "pactfs-keyd v2 verifier key"
#define KEYD_ANCHOR_KEY_LABEL "pactfs-keyd v1 anchor token key"
#define KEYD_VERIFIER_LABEL "pactfs-keyd v2 verifier"
#define KEYD_AUDIT_KEY_LABEL "pactfs-keyd v1 audit key"
#define KEYD_AUDIT_KEY_MAGIC "PFKA"
#define KEYD_AUDIT_KEY_VERSION 1
#define KEYD_AUDIT_KEY_HDR 5
#define KEYD_AUDIT_KEY_BITS 3072

/* Length of s without its trailing white space. */
static size_t trimmed_len(const char *s, size_t n)
{
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return n;
}

int keyd_secrets_load_master_key(struct keyd_secrets *s, const char *master_key_file)
{
    char *text;
    size_t len;
    int rc = https_read_secret_file(master_key_file, true, &text, &len);

    if (rc)
        return rc;
    s->master_key = secmem_alloc(KEYD_MASTER_KEY_LEN);
    s->verifier_key = secmem_alloc(SHA256_LEN);
    s->anchor_key = secmem_alloc(SHA256_LEN);
    if (!s->master_key || !s->verifier_key || !s->anchor_key)
        rc = pfs_err(-ENOMEM, "out of memory");
    else if (trimmed_len(text, len) != 2 * KEYD_MASTER_KEY_LEN)
        rc = pfs_err(-EINVAL, "%s must hold 64 hex digits (make one with: "
                     "openssl rand -hex 32 > %s)", master_key_file,
                     master_key_file);
    else {
        text[2 * KEYD_MASTER_KEY_LEN] = '\0';
        if (hex_decode(text, s->master_key, KEYD_MASTER_KEY_LEN) < 0)
            rc = pfs_err(-EINVAL, "%s is not hex (make one with: openssl rand -hex 32)",
                         master_key_file);
        else
            rc = hkdf_sha256(s->master_key, KEYD_MASTER_KEY_LEN, NULL, 0,
                             KEYD_VERIFIER_KEY_LABEL, strlen(KEYD_VERIFIER_KEY_LABEL),
                             s->verifier_key, SHA256_LEN);
        if (rc == 0)
            rc = hkdf_sha256(s->master_key, KEYD_MASTER_KEY_LEN, NULL, 0,
                             KEYD_ANCHOR_KEY_LABEL, strlen(KEYD_ANCHOR_KEY_LABEL),
                             s->anchor_key, SHA256_LEN);
    }
    secmem_free(text, len + 1);
    return rc;
}

/* Keep only the hash of the admin token: comparing hashes in constant time
 * leaks neither the token nor its length. */
int keyd_secrets_load_admin_token(struct keyd_secrets *s, const char *admin_token_file)
{
    char *text;
    size_t len, tlen;
    int rc;

    if (!admin_token_file)
        return 0;   /* officers only: no shared token is accepted */
    rc = https_read_secret_file(admin_token_file, true, &text, &len);
    if (rc)
        return rc;
    tlen = trimmed_len(text, len);
    s->admin_token_hash = secmem_alloc(SHA256_LEN);
    if (!s->admin_token_hash)
        rc = pfs_err(-ENOMEM, "out of memory");
    else if (tlen < KEYD_TOKEN_MIN)
        rc = pfs_err(-EINVAL, "the admin token in %s is shorter than %d characters "
                     "(make one with: openssl rand -hex 32)", admin_token_file,
                     KEYD_TOKEN_MIN);
    else
        sha256(text, tlen, s->admin_token_hash);
    secmem_free(text, len + 1);
    return rc;
}

void keyd_secrets_free(struct keyd_secrets *s)
{
    secmem_free(s->master_key, KEYD_MASTER_KEY_LEN);
    secmem_free(s->verifier_key, SHA256_LEN);
    secmem_free(s->anchor_key, SHA256_LEN);
    secmem_free(s->admin_token_hash, SHA256_LEN);
    memset(s, 0, sizeof *s);
}

bool keyd_admin_token_matches(const struct keyd_secrets *s, const char *token)
{
    uint8_t got[SHA256_LEN];
    bool ok;

    if (!s->admin_token_hash)
        return false;
    sha256(token, strlen(token), got);
    ok = CRYPTO_memcmp(got, s->admin_token_hash, SHA256_LEN) == 0;
    secmem_wipe(got, sizeof got);
    return ok;
}


/* ---------------------------------------------------------------- secrets */

/* Key a schema-1 verifier, SHA-256(salt || auth), into the stored one:
 * HMAC-SHA-256(verifier key, label, vault, account, inner).  Without the
 * verifier key (derived from the master key, which is not in the database)
 * a copy of the database cannot check a guessed password.  On failure the
 * output is random, a verifier nobody can match, so the login fails. */
void keyd_key_verifier(const struct keyd_secrets *s, const char *vault, const char *account,
                       const uint8_t inner[SHA256_LEN], uint8_t out[SHA256_LEN])
{
    struct wbuf b;
    uint8_t *msg;
    size_t len = 0;

    wbuf_init_secure(&b);
    wbuf_put_str(&b, KEYD_VERIFIER_LABEL);
    wbuf_put_str(&b, vault);
    wbuf_put_str(&b, account);
    wbuf_put_bytes(&b, inner, SHA256_LEN);
    msg = wbuf_steal(&b, &len);
    if (!msg || hmac_sha256(s->verifier_key, SHA256_LEN, msg, len, out) != 0)
        crypto_random(out, SHA256_LEN);
    if (msg)
        secmem_free(msg, len);
}

void keyd_make_verifier(const struct keyd_secrets *s, const char *vault, const char *account,
                        const uint8_t salt[KEYD_SALT_LEN], const uint8_t *auth,
                        uint8_t out[SHA256_LEN])
{
    uint8_t *in = secmem_alloc(KEYD_SALT_LEN + SHARE_AUTH_LEN + SHA256_LEN);
    uint8_t *inner = in + KEYD_SALT_LEN + SHARE_AUTH_LEN;

    if (!in) {
        crypto_random(out, SHA256_LEN);
        return;
    }
    memcpy(in, salt, KEYD_SALT_LEN);
    memcpy(in + KEYD_SALT_LEN, auth, SHARE_AUTH_LEN);
    sha256(in, KEYD_SALT_LEN + SHARE_AUTH_LEN, inner);
    keyd_key_verifier(s, vault, account, inner, out);
    secmem_free(in, KEYD_SALT_LEN + SHARE_AUTH_LEN + SHA256_LEN);
}

/* Seal a share (SHARE_LEN) or open a sealed one (KEYD_SEALED_SHARE_LEN)
 * under the master key, with associated data that binds it to its vault
 * and account. */
static int share_aead(const struct keyd_secrets *s, bool seal, const char *vault,
                      const char *account, const uint8_t *in, uint8_t *out)
{
    struct wbuf b;
    uint8_t *ad;
    size_t adlen;
    int rc;

    wbuf_init(&b);
    wbuf_put_str(&b, "pactfs-keyd v1 share");
    wbuf_put_str(&b, vault);
    wbuf_put_str(&b, account);
    ad = wbuf_steal(&b, &adlen);
    if (!ad)
        return pfs_err(-ENOMEM, "out of memory");
    rc = seal ? aead_seal(s->master_key, ad, adlen, in, SHARE_LEN, out)
              : aead_open(s->master_key, ad, adlen, in, KEYD_SEALED_SHARE_LEN, out);
    free(ad);
    return rc;
}

int keyd_share_seal(const struct keyd_secrets *s, const char *vault, const char *account,
                    const uint8_t *share, uint8_t out[KEYD_SEALED_SHARE_LEN])
{
    return share_aead(s, true, vault, account, share, out);
}

int keyd_share_open(const struct keyd_secrets *s, const char *vault, const char *account,
                    const uint8_t sealed[KEYD_SEALED_SHARE_LEN], uint8_t *share)
{
    int rc = share_aead(s, false, vault, account, sealed, share);

    if (rc && rc != -ENOMEM)
        return pfs_err(rc, "a stored share does not open under the master key "
                       "(wrong master_key_file or a tampered database)");
    return rc;
}

/* token = u64 expiry (big endian) || HMAC(anchor key, label, vault, account,
 * expiry); hex into out (2 * KEYD_ANCHOR_TOKEN_LEN + 1) or raw into raw. */
int keyd_anchor_token_mac(const struct keyd_secrets *s, const char *vault, const char *account,
                          int64_t expires, uint8_t raw[KEYD_ANCHOR_TOKEN_LEN])
{
    struct wbuf w;
    uint8_t *msg;
    size_t len;
    int rc;

    for (int i = 0; i < 8; i++)
        raw[i] = (uint8_t)((uint64_t)expires >> (56 - 8 * i));
    wbuf_init(&w);
    wbuf_put_str(&w, KEYD_ANCHOR_KEY_LABEL);
    wbuf_put_str(&w, vault);
    wbuf_put_str(&w, account);
    wbuf_put_bytes(&w, raw, 8);
    msg = wbuf_steal(&w, &len);
    rc = msg ? hmac_sha256(s->anchor_key, SHA256_LEN, msg, len, raw + 8) : -ENOMEM;
    free(msg);
    return rc ? pfs_err(-EIO, "cannot make an anchor token") : 0;
}

int keyd_anchor_token_make(const struct keyd_secrets *s, const char *vault,
                           const char *account, int64_t expires,
                           char out[2 * KEYD_ANCHOR_TOKEN_LEN + 1])
{
    uint8_t raw[KEYD_ANCHOR_TOKEN_LEN];
    int rc = keyd_anchor_token_mac(s, vault, account, expires, raw);

    if (!rc)
        hex_encode(raw, sizeof raw, out);
    return rc;
}


/* ---- the audit signing key ---- */

static int audit_key_kek(const struct keyd_secrets *s, uint8_t kek[AEAD_KEY_LEN])
{
    return hkdf_sha256(s->master_key, KEYD_MASTER_KEY_LEN, NULL, 0, KEYD_AUDIT_KEY_LABEL,
                       strlen(KEYD_AUDIT_KEY_LABEL), kek, AEAD_KEY_LEN);
}

static int audit_key_open(const struct keyd_secrets *s, const char *path, const uint8_t *in,
                          size_t len, EVP_PKEY **out)
{
    uint8_t *kek = secmem_alloc(AEAD_KEY_LEN), *der = NULL;
    size_t derlen = len > KEYD_AUDIT_KEY_HDR + AEAD_OVERHEAD
                        ? len - KEYD_AUDIT_KEY_HDR - AEAD_OVERHEAD : 0;
    int rc = kek ? 0 : -ENOMEM;

    if (rc == 0 && (!derlen || memcmp(in, KEYD_AUDIT_KEY_MAGIC, 4) ||
                    in[4] != KEYD_AUDIT_KEY_VERSION))
        rc = pfs_err(-EBADMSG, "%s is not a pactfs-keyd audit key file", path);
    if (rc == 0 && !(der = secmem_alloc(derlen)))
        rc = -ENOMEM;
    rc = rc ? rc : audit_key_kek(s, kek);
    if (rc == 0 && aead_open(kek, KEYD_AUDIT_KEY_LABEL, strlen(KEYD_AUDIT_KEY_LABEL),
                             in + KEYD_AUDIT_KEY_HDR, len - KEYD_AUDIT_KEY_HDR, der) < 0)
        rc = pfs_err(-EBADMSG, "%s does not open under this master key (altered, or made "
                     "with another master key); move it away to start a new audit log "
                     "with a new key", path);
    if (rc == 0 && !(*out = rsa_private_from_der(der, derlen)))
        rc = pfs_err(-EBADMSG, "%s holds no usable RSA key", path);
    secmem_free(der, derlen);
    secmem_free(kek, AEAD_KEY_LEN);
    return rc;
}

static int audit_key_make(const struct keyd_secrets *s, const char *path, EVP_PKEY **out)
{
    uint8_t *kek = secmem_alloc(AEAD_KEY_LEN), *der = NULL, *file = NULL;
    size_t derlen = 0, filelen = 0;
    EVP_PKEY *key = rsa_generate(KEYD_AUDIT_KEY_BITS);
    int rc = kek && key ? 0 : pfs_err(-ENOMEM, "cannot make the audit signing key");

    rc = rc ? rc : rsa_private_to_der(key, &der, &derlen);
    rc = rc ? rc : audit_key_kek(s, kek);
    if (rc == 0 && !(file = malloc(filelen = KEYD_AUDIT_KEY_HDR + derlen + AEAD_OVERHEAD)))
        rc = -ENOMEM;
    if (rc == 0) {
        memcpy(file, KEYD_AUDIT_KEY_MAGIC, 4);
        file[4] = KEYD_AUDIT_KEY_VERSION;
        rc = aead_seal(kek, KEYD_AUDIT_KEY_LABEL, strlen(KEYD_AUDIT_KEY_LABEL), der, derlen,
                       file + KEYD_AUDIT_KEY_HDR);
    }
    if (rc == 0 && (rc = fileio_atomic_write(path, file, filelen, FILEIO_NO_REPLACE)) < 0)
        rc = pfs_err(rc, "cannot write the audit signing key %s: %s", path, strerror(-rc));
    if (der)
        secmem_free(der, derlen);
    secmem_free(kek, AEAD_KEY_LEN);
    free(file);
    if (rc == 0)
        *out = key;
    else
        EVP_PKEY_free(key);
    return rc;
}

int keyd_secrets_audit_key(const struct keyd_secrets *s, const char *path, EVP_PKEY **out,
                           bool *created)
{
    char *text;
    size_t len;
    int rc;

    *out = NULL;
    *created = false;
    if (access(path, F_OK) < 0 && errno == ENOENT) {
        *created = true;
        return audit_key_make(s, path, out);
    }
    rc = https_read_secret_file(path, true, &text, &len);
    if (rc)
        return rc;
    rc = audit_key_open(s, path, (const uint8_t *)text, len, out);
    secmem_free(text, len + 1);
    return rc;
}
