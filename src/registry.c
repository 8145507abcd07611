#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "enrol.h"
#include "error.h"
#include "registry.h"

#define RECORD_MAGIC "PFSR"
#define RECORD_VERSION 3            /* 1: no details, no enrolment code; 2: no retained list */
#define RETAINED_MAGIC "PFSK"
#define RETAINED_VERSION 1
#define RETAINED_MAX 32000u          /* a parameter holds at most 1 MiB */
#define ROOT_PARAM "registry.root"
#define RECORD_MAX (64u * 1024u)
#define ROLES_KNOWN (ROLE_SYSADMIN | ROLE_DATAADMIN | ROLE_AUDITOR | ROLE_USER)

static const struct {
    uint32_t bit;
    const char *name;
} role_names[] = {
    { ROLE_SYSADMIN, "sysadmin" },
    { ROLE_DATAADMIN, "dataadmin" },
    { ROLE_AUDITOR, "auditor" },
    { ROLE_USER, "user" },
};

void registry_record_clear(struct registry_record *r)
{
    free(r->raw);
    free(r->enrol_raw);
    memset(r, 0, sizeof *r);
}

/* ---------------------------------------------------------------- roles */

int registry_roles_check(uint32_t roles)
{
    if (!roles || (roles & ~ROLES_KNOWN))
        return pfs_err(-EINVAL, "an account needs at least one known role (sysadmin, "
                       "dataadmin, auditor, user)");
    if ((roles & ROLE_SYSADMIN) && (roles & ROLE_DATAADMIN))
        return pfs_err(-EINVAL, "one account may not hold both sysadmin and dataadmin: system "
                       "and data management are separated; create two accounts");
    return 0;
}

int registry_roles_parse(const char *s, uint32_t *roles)
{
    char word[32];
    const char *p = s;

    *roles = 0;
    while (p && *p) {
        size_t n = strcspn(p, ",|");
        size_t i;

        if (n == 0 || n >= sizeof word)
            return pfs_err(-EINVAL, "role list \"%s\": give sysadmin, dataadmin, auditor or "
                           "user, separated by commas", s);
        memcpy(word, p, n);
        word[n] = '\0';
        for (i = 0; i < sizeof role_names / sizeof role_names[0]; i++)
            if (!strcmp(word, role_names[i].name))
                break;
        if (i == sizeof role_names / sizeof role_names[0])
            return pfs_err(-EINVAL, "unknown role \"%s\": give sysadmin, dataadmin, auditor "
                           "or user", word);
        *roles |= role_names[i].bit;
        p += n;
        if (*p)
            p++;
    }
    return registry_roles_check(*roles);
}

void registry_roles_format(uint32_t roles, char *out, size_t outlen)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < sizeof role_names / sizeof role_names[0]; i++)
        if (roles & role_names[i].bit) {
            int n = snprintf(out + used, outlen - used, "%s%s", used ? "," : "",
                             role_names[i].name);
            if (n < 0 || (size_t)n >= outlen - used)
                return;
            used += (size_t)n;
        }
}

/* ------------------------------------------------------------ encoding */

int registry_fingerprint_hex(EVP_PKEY *key, char *out)
{
    uint8_t fp[SHA256_LEN];
    int rc = rsa_fingerprint(key, fp);

    if (rc == 0)
        hex_encode(fp, sizeof fp, out);
    return rc;
}

int registry_record_encode_tbs(const char *vault_id, const struct registry_record *r,
                               uint8_t **out, size_t *outlen)
{
    struct wbuf b;

    wbuf_init(&b);
    wbuf_put_bytes(&b, RECORD_MAGIC, 4);
    wbuf_put_u8(&b, r->version ? r->version : RECORD_VERSION);
    wbuf_put_str(&b, vault_id);
    wbuf_put_u64(&b, r->account_id);
    wbuf_put_str(&b, r->name);
    wbuf_put_str(&b, r->key_name);
    wbuf_put_u32(&b, r->roles);
    wbuf_put_u8(&b, r->disabled ? 1 : 0);
    wbuf_put_u64(&b, r->serial);
    wbuf_put_blob(&b, r->pubkey, r->pubkey_len);
    wbuf_put_u64(&b, r->signer_id);
    if (r->version != 1) {
        wbuf_put_str(&b, r->details.full_name);
        wbuf_put_str(&b, r->details.email);
        wbuf_put_str(&b, r->details.department);
        wbuf_put_u64(&b, (uint64_t)r->details.expires);
        wbuf_put_blob(&b, r->code_pub, r->has_code ? ED25519_PUB_LEN : 0);
        wbuf_put_u64(&b, (uint64_t)r->code_expires);
    }
    if (r->version == 0 || r->version >= 3)
        wbuf_put_blob(&b, r->retained, r->has_retained ? SHA256_LEN : 0);
    *out = wbuf_steal(&b, outlen);
    return *out ? 0 : -ENOMEM;
}

/* A name field: 1..META_ACCOUNT_NAME_MAX bytes, no NUL inside. */
static int get_name(struct rbuf *r, char *dst)
{
    const uint8_t *p;
    size_t n;

    if (rbuf_get_blob(r, &p, &n, META_ACCOUNT_NAME_MAX) < 0 || n == 0 || memchr(p, 0, n))
        return -EBADMSG;
    memcpy(dst, p, n);
    dst[n] = '\0';
    return 0;
}

/* A detail field: 0..REGISTRY_DETAIL_MAX bytes, no NUL inside. */
static int get_detail(struct rbuf *r, char *dst)
{
    const uint8_t *p;
    size_t n;

    if (rbuf_get_blob(r, &p, &n, REGISTRY_DETAIL_MAX) < 0 || memchr(p, 0, n))
        return -EBADMSG;
    memcpy(dst, p, n);
    dst[n] = '\0';
    return 0;
}

static int decode_v2_fields(struct rbuf *b, struct registry_record *r)
{
    const uint8_t *code;
    size_t codelen = 0;
    uint64_t expires = 0, code_expires = 0;

    if (get_detail(b, r->details.full_name) < 0 || get_detail(b, r->details.email) < 0 ||
        get_detail(b, r->details.department) < 0)
        return -EBADMSG;
    rbuf_get_u64(b, &expires);
    rbuf_get_blob(b, &code, &codelen, ED25519_PUB_LEN);
    rbuf_get_u64(b, &code_expires);
    if (b->err || (codelen && codelen != ED25519_PUB_LEN))
        return -EBADMSG;
    r->details.expires = (int64_t)expires;
    r->has_code = codelen != 0;
    if (codelen)
        memcpy(r->code_pub, code, ED25519_PUB_LEN);
    r->code_expires = (int64_t)code_expires;
    return 0;
}

static int decode_tbs(const char *vault_id, const uint8_t *tbs, size_t len,
                      struct registry_record *r)
{
    struct rbuf b;
    const uint8_t *magic, *vid;
    size_t vidlen;
    uint8_t version = 0, disabled = 0;

    rbuf_init(&b, tbs, len);
    rbuf_get_ref(&b, &magic, 4);
    rbuf_get_u8(&b, &version);
    rbuf_get_blob(&b, &vid, &vidlen, 64);
    rbuf_get_u64(&b, &r->account_id);
    if (b.err || memcmp(magic, RECORD_MAGIC, 4) || version < 1 || version > RECORD_VERSION)
        return -EBADMSG;
    r->version = version;
    if (vidlen != strlen(vault_id) || memcmp(vid, vault_id, vidlen))
        return pfs_err(-EBADMSG, "a registry record of another vault was found");
    if (get_name(&b, r->name) < 0 || get_name(&b, r->key_name) < 0)
        return -EBADMSG;
    rbuf_get_u32(&b, &r->roles);
    rbuf_get_u8(&b, &disabled);
    rbuf_get_u64(&b, &r->serial);
    rbuf_get_blob(&b, &r->pubkey, &r->pubkey_len, 4096);
    rbuf_get_u64(&b, &r->signer_id);
    if (version >= 2 && decode_v2_fields(&b, r) < 0)
        return -EBADMSG;
    if (version >= 3) {
        const uint8_t *h;
        size_t hlen = 0;

        rbuf_get_blob(&b, &h, &hlen, SHA256_LEN);
        if (b.err || (hlen && hlen != SHA256_LEN))
            return -EBADMSG;
        r->has_retained = hlen != 0;
        if (hlen)
            memcpy(r->retained, h, SHA256_LEN);
    }
    if (rbuf_end(&b) < 0 || disabled > 1)
        return -EBADMSG;
    r->disabled = disabled;
    return 0;
}

int registry_record_decode(const char *vault_id, const uint8_t *blob, size_t len,
                           struct registry_record *r)
{
    struct rbuf b;
    const uint8_t *tbs;
    size_t tbslen;
    int rc;

    memset(r, 0, sizeof *r);
    rbuf_init(&b, blob, len);
    rbuf_get_blob(&b, &tbs, &tbslen, RECORD_MAX);
    rbuf_get_blob(&b, &r->sig, &r->sig_len, 1024);
    if (rbuf_end(&b) < 0)
        return pfs_err(-EBADMSG, "a registry record is malformed");
    rc = decode_tbs(vault_id, tbs, tbslen, r);
    if (rc < 0 && !*pfs_err_msg())
        pfs_err(rc, "a registry record is malformed");
    return rc < 0 ? -EBADMSG : 0;
}

/* ---------------------------------------------------------- storage */

static void record_param_key(uint64_t account_id, char *key, size_t keylen)
{
    snprintf(key, keylen, "registry.account.%" PRIu64, account_id);
}

int registry_root_store(struct meta *m, EVP_PKEY *root)
{
    uint8_t *der;
    size_t len;
    int rc = rsa_public_to_der(root, &der, &len);

    if (rc < 0)
        return rc;
    rc = meta_param_set(m, ROOT_PARAM, der, len);
    free(der);
    return rc;
}

/* The stored record of an account, decoded (not yet verified). */
static int record_get(struct meta *m, const char *vault_id, uint64_t account_id,
                      struct registry_record *r)
{
    char key[64];
    uint8_t *raw = NULL;
    size_t len = 0;
    int rc;

    record_param_key(account_id, key, sizeof key);
    rc = meta_param_get(m, key, &raw, &len);
    if (rc == -ENOENT)
        return pfs_err(-EBADMSG, "account %" PRIu64 " has no signed registry record: it was "
                       "not created by a sysadmin (pactfs-admin account-add) and is not "
                       "trusted", account_id);
    if (rc < 0)
        return rc;
    pfs_err_clear();
    rc = registry_record_decode(vault_id, raw, len, r);
    if (rc < 0) {
        free(raw);
        return rc;
    }
    r->raw = raw;
    return 0;
}

static int record_put(struct meta *m, const char *vault_id, const struct registry_record *r,
                      EVP_PKEY *signer)
{
    uint8_t *tbs = NULL, *sig = NULL, *out;
    size_t tbslen = 0, siglen = 0, outlen;
    char key[64];
    struct wbuf b;
    int rc;

    rc = registry_record_encode_tbs(vault_id, r, &tbs, &tbslen);
    if (rc == 0)
        rc = sig_sign(signer, tbs, tbslen, &sig, &siglen);
    if (rc < 0) {
        free(tbs);
        return rc;
    }
    wbuf_init(&b);
    wbuf_put_blob(&b, tbs, tbslen);
    wbuf_put_blob(&b, sig, siglen);
    free(tbs);
    free(sig);
    out = wbuf_steal(&b, &outlen);
    if (!out)
        return -ENOMEM;
    record_param_key(r->account_id, key, sizeof key);
    rc = meta_param_set(m, key, out, outlen);
    free(out);
    return rc;
}

int registry_certify(struct meta *m, const char *vault_id, const struct meta_account *a,
                     const char *key_name, EVP_PKEY *signer, uint64_t signer_id)
{
    return registry_certify_ex(m, vault_id, a, key_name, NULL, NULL, 0, signer, signer_id);
}

static int certify(struct meta *m, const char *vault_id, const struct meta_account *a,
                   const char *key_name, const struct registry_details *details,
                   const uint8_t *code_pub, int64_t code_expires, const uint8_t *retained,
                   EVP_PKEY *signer, uint64_t signer_id);

int registry_certify_ex(struct meta *m, const char *vault_id, const struct meta_account *a,
                        const char *key_name, const struct registry_details *details,
                        const uint8_t *code_pub, int64_t code_expires,
                        EVP_PKEY *signer, uint64_t signer_id)
{
    return certify(m, vault_id, a, key_name, details, code_pub, code_expires, NULL, signer,
                   signer_id);
}

static int certify(struct meta *m, const char *vault_id, const struct meta_account *a,
                   const char *key_name, const struct registry_details *details,
                   const uint8_t *code_pub, int64_t code_expires, const uint8_t *retained,
                   EVP_PKEY *signer, uint64_t signer_id)
{
    struct registry_record prev = { 0 }, r = { 0 };
    int have_prev, rc;

    rc = registry_roles_check(a->roles);
    if (rc < 0)
        return rc;
    if (signer_id == a->id)
        return pfs_err(-EINVAL, "an account cannot sign its own registry record");
    have_prev = record_get(m, vault_id, a->id, &prev) == 0;
    pfs_err_clear();
    r.account_id = a->id;
    snprintf(r.name, sizeof r.name, "%s", a->name);
    snprintf(r.key_name, sizeof r.key_name, "%s",
             key_name ? key_name : have_prev ? prev.key_name : a->name);
    r.roles = a->roles;
    r.disabled = a->disabled;
    r.serial = have_prev ? prev.serial + 1 : 1;
    r.pubkey = a->pubkey;
    r.pubkey_len = a->pubkey_len;
    r.signer_id = signer_id;
    r.version = RECORD_VERSION;
    if (details)
        r.details = *details;
    else if (have_prev)
        r.details = prev.details;
    if (code_pub) {
        r.has_code = 1;
        memcpy(r.code_pub, code_pub, ED25519_PUB_LEN);
        r.code_expires = code_expires;
    } else if (have_prev) {
        r.has_code = prev.has_code;
        memcpy(r.code_pub, prev.code_pub, ED25519_PUB_LEN);
        r.code_expires = prev.code_expires;
    }
    if (retained) {
        r.has_retained = 1;
        memcpy(r.retained, retained, SHA256_LEN);
    } else if (have_prev) {
        r.has_retained = prev.has_retained;
        memcpy(r.retained, prev.retained, SHA256_LEN);
    }
    if (r.has_code) {
        /* The person's enrolment proof binds the key, not this signature. */
        r.pubkey = NULL;
        r.pubkey_len = 0;
    }
    rc = record_put(m, vault_id, &r, signer);
    if (rc == 0 && code_pub)    /* a new code: an earlier enrolment no longer counts */
        rc = enrol_proof_store(m, a->id, NULL, 0);
    registry_record_clear(&prev);
    return rc;
}

/* ---------------------------------------------------------- verification */

int registry_root_key(struct meta *m, const char *root_fp, EVP_PKEY **out)
{
    uint8_t *der = NULL, fp[SHA256_LEN];
    char hex[REGISTRY_FP_HEX + 1];
    size_t len = 0;
    int rc = meta_param_get(m, ROOT_PARAM, &der, &len);

    if (rc < 0)
        return pfs_err(-EBADMSG, "the metadata store holds no vault root key: the account "
                       "registry cannot be verified");
    sha256(der, len, fp);
    hex_encode(fp, sizeof fp, hex);
    if (strcmp(hex, root_fp) != 0) {
        free(der);
        return pfs_err(-EBADMSG, "the vault root key in the metadata store does not match "
                       "vault.root_fingerprint in pactfs.conf: the registry was replaced; "
                       "refusing to trust any account");
    }
    *out = rsa_public_from_der(der, len);
    free(der);
    return *out ? 0 : pfs_err(-EBADMSG, "the vault root key in the metadata store is malformed");
}

/* The row must say exactly what the signed record says. */
static int record_matches_row(const struct registry_record *r, const struct meta_account *a)
{
    const char *what = NULL;

    if (strcmp(r->name, a->name))
        what = "name";
    else if (r->roles != a->roles)
        what = "roles";
    else if (!!r->disabled != !!a->disabled)
        what = "disabled flag";
    else if (r->pubkey_len != a->pubkey_len || memcmp(r->pubkey, a->pubkey, a->pubkey_len))
        what = "public key";
    if (!what)
        return 0;
    return pfs_err(-EBADMSG, "the %s of account \"%s\" in the accounts table differs from its "
                   "signed registry record: the metadata store was altered outside "
                   "pactfs-admin; refusing to trust this account (a sysadmin must check "
                   "and re-issue it)", what, a->name);
}

static int verify_chain(struct meta *m, const char *vault_id, const char *root_fp,
                        uint64_t account_id, unsigned depth, int allow_pending,
                        struct registry_record *out);

/* The key that must have signed r: the root, or a verified, enabled sysadmin. */
static int signer_key(struct meta *m, const char *vault_id, const char *root_fp,
                      const struct registry_record *r, unsigned depth, EVP_PKEY **key)
{
    struct registry_record s = { 0 };
    int rc;

    if (r->signer_id == REGISTRY_ROOT_SIGNER)
        return registry_root_key(m, root_fp, key);
    if (r->signer_id == r->account_id || depth >= REGISTRY_MAX_DEPTH)
        return pfs_err(-EBADMSG, "the registry record of \"%s\" is signed in a loop or by a "
                       "chain longer than %d sysadmins", r->name, REGISTRY_MAX_DEPTH);
    rc = verify_chain(m, vault_id, root_fp, r->signer_id, depth + 1, 0, &s);
    if (rc == 0 && (!(s.roles & ROLE_SYSADMIN) || s.disabled))
        rc = pfs_err(-EBADMSG, "the registry record of \"%s\" is signed by \"%s\", which is "
                     "not an enabled sysadmin", r->name, s.name);
    if (rc == 0) {
        *key = rsa_public_from_der(s.pubkey, s.pubkey_len);
        if (!*key)
            rc = pfs_err(-EBADMSG, "the public key of \"%s\" is malformed", s.name);
    }
    registry_record_clear(&s);
    return rc;
}

/* A record registered for self-enrolment names no key itself: the key is
 * the one its enrolment proof binds under the record's code key (enrol.h).
 * No proof (or an emptied one) leaves the account pending. */
static int resolve_enrolment(struct meta *m, const char *vault_id, struct registry_record *r)
{
    size_t len = 0;
    int rc;

    if (r->pubkey_len || !r->has_code)
        return 0;
    rc = enrol_proof_load(m, r->account_id, &r->enrol_raw, &len);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    rc = enrol_proof_verify(vault_id, r->account_id, r->code_pub, r->key_name, r->enrol_raw,
                            len, &r->pubkey, &r->pubkey_len, &r->enrolled_at);
    if (rc == 0 && r->enrolled_at > r->code_expires)
        rc = pfs_err(-EBADMSG, "account \"%s\" was enrolled after its enrolment code had "
                     "expired", r->name);
    if (rc < 0) {
        r->pubkey = NULL;
        r->pubkey_len = 0;
        return rc;
    }
    r->enrolled = 1;
    return 0;
}

static int verify_chain(struct meta *m, const char *vault_id, const char *root_fp,
                        uint64_t account_id, unsigned depth, int allow_pending,
                        struct registry_record *out)
{
    struct registry_record r = { 0 };
    struct meta_account a;
    EVP_PKEY *key = NULL;
    uint8_t *tbs = NULL;
    size_t tbslen = 0;
    int rc;

    rc = meta_account_get(m, account_id, &a);
    if (rc < 0)
        return rc == -ENOENT ? pfs_err(-EBADMSG, "account %" PRIu64 " named in the registry "
                                       "does not exist", account_id) : rc;
    rc = record_get(m, vault_id, account_id, &r);
    if (rc == 0 && r.account_id != account_id)
        rc = pfs_err(-EBADMSG, "the registry record stored for \"%s\" belongs to another "
                     "account", a.name);
    if (rc == 0)
        rc = signer_key(m, vault_id, root_fp, &r, depth, &key);
    if (rc == 0)
        rc = registry_record_encode_tbs(vault_id, &r, &tbs, &tbslen);
    if (rc == 0 && sig_verify(key, tbs, tbslen, r.sig, r.sig_len) < 0)
        rc = pfs_err(-EBADMSG, "the registry signature over account \"%s\" does not verify: "
                     "the record was forged or altered", a.name);
    if (rc == 0)
        rc = resolve_enrolment(m, vault_id, &r);
    if (rc == 0)
        rc = record_matches_row(&r, &a);
    if (rc == 0 && !allow_pending && !r.pubkey_len)
        rc = pfs_err(-EACCES, "account \"%s\" has not enrolled yet: its owner runs "
                     "pactfs-admin enroll with the code a sysadmin gave them", a.name);
    free(tbs);
    EVP_PKEY_free(key);
    meta_account_clear(&a);
    if (rc == 0 && out)
        *out = r;
    else
        registry_record_clear(&r);
    return rc;
}

int registry_verify(struct meta *m, const char *vault_id, const char *root_fp,
                    uint64_t account_id, struct registry_record *rec)
{
    if (!root_fp)
        return pfs_err(-EINVAL, "pactfs.conf pins no vault.root_fingerprint, so the account "
                       "registry cannot be verified: add the fingerprint your sysadmin "
                       "published");
    return verify_chain(m, vault_id, root_fp, account_id, 0, 0, rec);
}

int registry_verify_pending(struct meta *m, const char *vault_id, const char *root_fp,
                            uint64_t account_id, struct registry_record *rec)
{
    if (!root_fp)
        return registry_verify(m, vault_id, root_fp, account_id, rec);
    return verify_chain(m, vault_id, root_fp, account_id, 0, 1, rec);
}

int registry_verified_key(struct meta *m, const char *vault_id, const char *root_fp,
                          uint64_t account_id, struct registry_record *rec, EVP_PKEY **key)
{
    struct registry_record r = { 0 };
    int rc = registry_verify(m, vault_id, root_fp, account_id, &r);

    if (rc < 0)
        return rc;
    *key = rsa_public_from_der(r.pubkey, r.pubkey_len);
    if (!*key) {
        registry_record_clear(&r);
        return pfs_err(-EBADMSG, "the public key of \"%s\" is malformed", r.name);
    }
    if (rec)
        *rec = r;
    else
        registry_record_clear(&r);
    return 0;
}

/* ---------------------------------------------------- retained signatures */

static void retained_param_key(uint64_t account_id, char *key, size_t keylen)
{
    snprintf(key, keylen, "registry.retained.%" PRIu64, account_id);
}

static int hash_cmp(const void *a, const void *b)
{
    return memcmp(a, b, SHA256_LEN);
}

int registry_certify_retaining(struct meta *m, const char *vault_id, const struct meta_account *a,
                               uint8_t (*hashes)[SHA256_LEN], size_t n, EVP_PKEY *signer,
                               uint64_t signer_id)
{
    uint8_t list_hash[SHA256_LEN], *blob;
    size_t len;
    char key[64];
    struct wbuf b;
    int rc;

    if (n > RETAINED_MAX)
        return pfs_err(-E2BIG, "account \"%s\" signed more than %u grants and folder states",
                       a->name, RETAINED_MAX);
    if (n)
        qsort(hashes, n, SHA256_LEN, hash_cmp);
    wbuf_init(&b);
    wbuf_put_bytes(&b, RETAINED_MAGIC, 4);
    wbuf_put_u8(&b, RETAINED_VERSION);
    wbuf_put_str(&b, vault_id);
    wbuf_put_u64(&b, a->id);
    wbuf_put_u32(&b, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        wbuf_put_bytes(&b, hashes[i], SHA256_LEN);
    blob = wbuf_steal(&b, &len);
    if (!blob)
        return -ENOMEM;
    sha256(blob, len, list_hash);
    retained_param_key(a->id, key, sizeof key);
    rc = meta_param_set(m, key, blob, len);
    free(blob);
    if (rc == 0)
        rc = certify(m, vault_id, a, NULL, NULL, NULL, 0, list_hash, signer, signer_id);
    return rc;
}

int registry_retained(struct meta *m, const char *vault_id, const struct registry_record *r,
                      const uint8_t *obj, size_t objlen)
{
    uint8_t *blob = NULL, h[SHA256_LEN], want[SHA256_LEN];
    const uint8_t *magic, *vid, *list;
    size_t len = 0, vidlen;
    uint64_t account = 0;
    uint32_t n = 0;
    uint8_t version = 0;
    char key[64];
    struct rbuf b;
    int rc;

    if (!r->has_retained)
        return -ENOENT;
    retained_param_key(r->account_id, key, sizeof key);
    rc = meta_param_get(m, key, &blob, &len);
    if (rc == -ENOENT)
        return pfs_err(-EBADMSG, "the signatures \"%s\" made as a dataadmin are no longer "
                       "listed in the metadata store: it was altered", r->name);
    if (rc < 0)
        return rc;
    sha256(blob, len, h);
    rbuf_init(&b, blob, len);
    rbuf_get_ref(&b, &magic, 4);
    rbuf_get_u8(&b, &version);
    rbuf_get_blob(&b, &vid, &vidlen, 64);
    rbuf_get_u64(&b, &account);
    rbuf_get_u32(&b, &n);
    rbuf_get_ref(&b, &list, (size_t)n * SHA256_LEN);
    if (memcmp(h, r->retained, SHA256_LEN) || b.err || rbuf_end(&b) < 0 ||
        memcmp(magic, RETAINED_MAGIC, 4) || version != RETAINED_VERSION ||
        vidlen != strlen(vault_id) || memcmp(vid, vault_id, vidlen) || account != r->account_id) {
        free(blob);
        return pfs_err(-EBADMSG, "the list of signatures \"%s\" made as a dataadmin does not "
                       "match its registry record: it was altered", r->name);
    }
    sha256(obj, objlen, want);
    rc = bsearch(want, list, n, SHA256_LEN, hash_cmp) ? 0 : -ENOENT;
    free(blob);
    return rc;
}
