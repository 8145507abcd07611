#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "enrol.h"
#include "error.h"
#include "registry.h"
#include "vec.h"

#define RECORD_MAGIC "PFSR"
#define RECORD_VERSION 4            /* 1: no details, no enrolment code; 2: no retained list;
                                       3: same layout, before co-signatures were verified */
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

int registry_record_sign(const char *vault_id, const struct registry_record *r,
                         EVP_PKEY *signer, uint8_t **out, size_t *outlen)
{
    uint8_t *tbs = NULL;
    size_t tbslen = 0;
    int rc = registry_record_encode_tbs(vault_id, r, &tbs, &tbslen);

    *out = NULL;
    if (rc == 0)
        rc = sig_sign_container(signer, tbs, tbslen, out, outlen);
    free(tbs);
    return rc;
}

static int record_put(struct meta *m, const char *vault_id, const struct registry_record *r,
                      EVP_PKEY *signer)
{
    uint8_t *out;
    size_t outlen;
    char key[64];
    int rc = registry_record_sign(vault_id, r, signer, &out, &outlen);

    if (rc < 0)
        return rc;
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
    /* What a sysadmin signs alone it endorses (registry_endorse_add). */
    if (rc == 0 && signer_id != REGISTRY_ROOT_SIGNER)
        rc = registry_endorse_add(m, vault_id, signer, signer_id, a->id, a->roles);
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

struct cosign_ctx {
    struct meta *m;
    const char *vault_id, *root_fp;
    int enforce;                 /* -1: not decided yet for this verification */
};
static int verify_chain(struct meta *m, const char *vault_id, const char *root_fp,
                        uint64_t account_id, unsigned depth, int allow_pending,
                        struct cosign_ctx *cs, struct registry_record *out);
static int cosign_record_ok(struct cosign_ctx *cs, const struct registry_record *r,
                            unsigned depth);

/* The key that must have signed r: the root, or a verified, enabled sysadmin. */
static int signer_key(struct meta *m, const char *vault_id, const char *root_fp,
                      const struct registry_record *r, unsigned depth, struct cosign_ctx *cs,
                      EVP_PKEY **key)
{
    struct registry_record s = { 0 };
    int rc;

    if (r->signer_id == REGISTRY_ROOT_SIGNER)
        return registry_root_key(m, root_fp, key);
    if (r->signer_id == r->account_id || depth >= REGISTRY_MAX_DEPTH)
        return pfs_err(-EBADMSG, "the registry record of \"%s\" is signed in a loop or by a "
                       "chain longer than %d sysadmins", r->name, REGISTRY_MAX_DEPTH);
    rc = verify_chain(m, vault_id, root_fp, r->signer_id, depth + 1, 0, cs, &s);
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
                        struct cosign_ctx *cs, struct registry_record *out)
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
        rc = signer_key(m, vault_id, root_fp, &r, depth, cs, &key);
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
    if (rc == 0 && cs)
        rc = cosign_record_ok(cs, &r, depth);
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
    struct cosign_ctx cs = { m, vault_id, root_fp, -1 };

    return verify_chain(m, vault_id, root_fp, account_id, 0, 0, &cs, rec);
}

int registry_verify_plain(struct meta *m, const char *vault_id, const char *root_fp,
                          uint64_t account_id, struct registry_record *rec)
{
    if (!root_fp)
        return registry_verify(m, vault_id, root_fp, account_id, rec);
    return verify_chain(m, vault_id, root_fp, account_id, 0, 1, NULL, rec);
}

int registry_verify_pending(struct meta *m, const char *vault_id, const char *root_fp,
                            uint64_t account_id, struct registry_record *rec)
{
    if (!root_fp)
        return registry_verify(m, vault_id, root_fp, account_id, rec);
    struct cosign_ctx cs = { m, vault_id, root_fp, -1 };

    return verify_chain(m, vault_id, root_fp, account_id, 0, 1, &cs, rec);
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

/* ------------------------------------------------------ co-signed roles */

#define PRIV_ROLES (ROLE_SYSADMIN | ROLE_DATAADMIN)
#define ITEM_MAGIC "PFSQ"
#define ITEM_VERSION 1
#define ENDORSE_MAGIC "PFSN"
#define ENDORSE_VERSION 1
#define ENDORSE_MAX 20000u

int registry_item_decode(const char *vault_id, const uint8_t *raw, size_t len,
                         struct registry_item *it, const uint8_t **tbs, size_t *tbslen,
                         const uint8_t **sig, size_t *siglen)
{
    const uint8_t *magic, *vid, *k, *c;
    size_t vidlen, klen, clen;
    uint64_t t = 0;
    uint8_t version = 0;
    struct rbuf b, r;

    memset(it, 0, sizeof *it);
    rbuf_init(&b, raw, len);
    rbuf_get_blob(&b, tbs, tbslen, 4096);
    rbuf_get_blob(&b, sig, siglen, 1024);
    rbuf_init(&r, *tbs, b.err ? 0 : *tbslen);
    rbuf_get_ref(&r, &magic, 4);
    rbuf_get_u8(&r, &version);
    rbuf_get_blob(&r, &vid, &vidlen, 64);
    rbuf_get_blob(&r, &k, &klen, REGISTRY_ITEM_KEY_MAX);
    rbuf_get_blob(&r, &c, &clen, REGISTRY_ITEM_CONTENT_MAX);
    rbuf_get_u64(&r, &it->signer);
    rbuf_get_u64(&r, &t);
    if (rbuf_end(&b) < 0 || rbuf_end(&r) < 0 || memcmp(magic, ITEM_MAGIC, 4) ||
        version != ITEM_VERSION || vidlen != strlen(vault_id) || memcmp(vid, vault_id, vidlen) ||
        memchr(k, 0, klen) || memchr(c, 0, clen))
        return -EBADMSG;
    memcpy(it->key, k, klen);
    memcpy(it->content, c, clen);
    it->time = (int64_t)t;
    return 0;
}

/* raw is an item signed by a sysadmin whose record verifies (with the
 * co-signature rules when cs is given), under key when key is not NULL. */
static int item_check(struct cosign_ctx *cs, struct meta *m, const char *vault_id,
                      const char *root_fp, unsigned depth, const uint8_t *raw, size_t len,
                      const char *key, int allow_disabled, struct registry_item *it)
{
    const uint8_t *tbs, *sig;
    size_t tbslen, siglen;
    struct registry_record s = { 0 };
    EVP_PKEY *pub = NULL;
    int rc = registry_item_decode(vault_id, raw, len, it, &tbs, &tbslen, &sig, &siglen);

    if (rc == 0 && key && strcmp(it->key, key))
        rc = -EBADMSG;
    if (rc == 0)
        rc = verify_chain(m, vault_id, root_fp, it->signer, depth, 0, cs, &s);
    if (rc == 0 && (!(s.roles & ROLE_SYSADMIN) || (s.disabled && !allow_disabled)))
        rc = -EBADMSG;
    if (rc == 0 && !(pub = rsa_public_from_der(s.pubkey, s.pubkey_len)))
        rc = -EBADMSG;
    if (rc == 0 && sig_verify(pub, tbs, tbslen, sig, siglen) < 0)
        rc = -EBADMSG;
    EVP_PKEY_free(pub);
    registry_record_clear(&s);
    return rc < 0 ? -EBADMSG : 0;
}

int registry_item_verify(struct meta *m, const char *vault_id, const char *root_fp,
                         const uint8_t *raw, size_t len, const char *key,
                         struct registry_item *it)
{
    struct cosign_ctx cs = { m, vault_id, root_fp, -1 };
    int rc;

    if (!root_fp)
        return -EBADMSG;
    rc = item_check(&cs, m, vault_id, root_fp, 0, raw, len, key, 0, it);
    pfs_err_clear();
    return rc;
}

/* Two items by two different sysadmins stating the same (key, content). */
static int pair_check(struct cosign_ctx *cs, unsigned depth, const uint8_t *blob, size_t len,
                      struct registry_item it[2])
{
    const uint8_t *p[2];
    size_t n[2];
    struct rbuf b;

    rbuf_init(&b, blob, len);
    rbuf_get_blob(&b, &p[0], &n[0], 8192);
    rbuf_get_blob(&b, &p[1], &n[1], 8192);
    if (rbuf_end(&b) < 0)
        return -EBADMSG;
    for (int i = 0; i < 2; i++)
        if (item_check(cs, cs->m, cs->vault_id, cs->root_fp, depth, p[i], n[i], NULL, 1,
                       &it[i]) < 0)
            return -EBADMSG;
    if (it[0].signer == it[1].signer || strcmp(it[0].key, it[1].key) ||
        strcmp(it[0].content, it[1].content))
        return -EBADMSG;
    return 0;
}

/* Vault parameter "<prefix>.<id>". */
static int param_get_id(struct meta *m, uint8_t **raw, size_t *len, const char *prefix,
                        uint64_t id)
{
    char param[64];

    snprintf(param, sizeof param, "%s.%" PRIu64, prefix, id);
    return meta_param_get(m, param, raw, len);
}

/* 0: r's privileged roles carry a valid co-signature (registry.cosig.<id>);
 * -ENOENT none (or for other roles); -EBADMSG one that does not verify. */
static int attested(struct cosign_ctx *cs, const struct registry_record *r, unsigned depth)
{
    struct registry_item it[2];
    uint8_t *raw = NULL;
    size_t len = 0;
    unsigned roles = 0;
    char role_key[64], add_key[META_ACCOUNT_NAME_MAX + 8];
    int rc = param_get_id(cs->m, &raw, &len, "registry.cosig", r->account_id);

    if (rc < 0 || len == 0) {
        free(raw);
        return -ENOENT;
    }
    rc = pair_check(cs, depth, raw, len, it);
    free(raw);
    snprintf(role_key, sizeof role_key, "role.%" PRIu64, r->account_id);
    snprintf(add_key, sizeof add_key, "add.%s", r->key_name);
    if (rc == 0 && strcmp(it[0].key, role_key) && strcmp(it[0].key, add_key))
        rc = -EBADMSG;
    if (rc == 0 && (sscanf(it[0].content, "roles=0x%x", &roles) != 1 ||
                    (roles & PRIV_ROLES) != (r->roles & PRIV_ROLES)))
        rc = -ENOENT;      /* about another role: this one is not co-signed */
    return rc;
}

static int id_vec_add(void *arg, const struct meta_account *a)
{
    return vec_u64_push(arg, a->id);
}

/* "required=no" counts only with the proposal and confirmation of two
 * sysadmins beside it (policy.cosign.cosig), each one verified itself. */
static int policy_off(struct cosign_ctx *cs, unsigned depth)
{
    struct cosign_ctx strict = { cs->m, cs->vault_id, cs->root_fp, 1 };
    struct registry_item it, two[2];
    uint8_t *raw = NULL;
    size_t len = 0;
    int off = 0;

    if (meta_param_get(cs->m, "policy.cosign", &raw, &len) == 0 && len &&
        item_check(&strict, cs->m, cs->vault_id, cs->root_fp, depth, raw, len, "policy.cosign",
                   0, &it) == 0 && !strcmp(it.content, "required=no")) {
        free(raw);
        raw = NULL;
        off = meta_param_get(cs->m, "policy.cosign.cosig", &raw, &len) == 0 && len &&
              pair_check(&strict, depth, raw, len, two) == 0 &&
              !strcmp(two[0].key, "policy.cosign.change") && !strcmp(two[0].content, "required=no");
    }
    free(raw);
    return off;
}

int registry_cosign_policy_off(struct meta *m, const char *vault_id, const char *root_fp)
{
    struct cosign_ctx cs = { m, vault_id, root_fp, 1 };
    int off = root_fp ? policy_off(&cs, 0) : 0;

    pfs_err_clear();
    return off;
}

/* Enforced while two or more enabled sysadmins verify and no setting
 * signed by two of them switched it off. */
static int cosign_enforced(struct cosign_ctx *cs, unsigned depth)
{
    struct vec_u64 ids = { 0 };
    unsigned n = 0;
    int rc = meta_account_list(cs->m, id_vec_add, &ids);

    for (size_t i = 0; rc == 0 && i < ids.n && n < 2; i++) {
        struct registry_record a = { 0 };

        if (verify_chain(cs->m, cs->vault_id, cs->root_fp, ids.v[i], 0, 0, NULL, &a) == 0 &&
            (a.roles & ROLE_SYSADMIN) && !a.disabled)
            n++;
        registry_record_clear(&a);
    }
    vec_u64_free(&ids);
    pfs_err_clear();
    if (rc < 0)
        return 1;             /* fail closed */
    return n >= 2 && !policy_off(cs, depth);
}

struct endorse_entry {
    uint64_t id;
    uint32_t priv;
};

/* The entries of an endorsement that verifies under key and names signer;
 * -EBADMSG otherwise.  *e malloc'd. */
static int endorse_decode(const char *vault_id, const uint8_t *raw, size_t len, EVP_PKEY *key,
                          uint64_t signer, struct endorse_entry **e, size_t *n)
{
    const uint8_t *tbs, *sig, *magic, *vid;
    size_t tbslen, siglen, vidlen;
    uint64_t who = 0, t = 0;
    uint32_t cnt = 0;
    uint8_t version = 0;
    struct rbuf b, r;

    *e = NULL;
    *n = 0;
    rbuf_init(&b, raw, len);
    rbuf_get_blob(&b, &tbs, &tbslen, 12u * ENDORSE_MAX + 256);
    rbuf_get_blob(&b, &sig, &siglen, 1024);
    if (rbuf_end(&b) < 0 || sig_verify(key, tbs, tbslen, sig, siglen) < 0)
        return -EBADMSG;
    rbuf_init(&r, tbs, tbslen);
    rbuf_get_ref(&r, &magic, 4);
    rbuf_get_u8(&r, &version);
    rbuf_get_blob(&r, &vid, &vidlen, 64);
    rbuf_get_u64(&r, &who);
    rbuf_get_u64(&r, &t);
    rbuf_get_u32(&r, &cnt);
    if (r.err || memcmp(magic, ENDORSE_MAGIC, 4) || version != ENDORSE_VERSION ||
        vidlen != strlen(vault_id) || memcmp(vid, vault_id, vidlen) || who != signer ||
        cnt > ENDORSE_MAX)
        return -EBADMSG;
    *e = calloc(cnt + 1u, sizeof **e);
    if (!*e)
        return -ENOMEM;
    for (uint32_t i = 0; i < cnt; i++) {
        rbuf_get_u64(&r, &(*e)[i].id);
        rbuf_get_u32(&r, &(*e)[i].priv);
    }
    if (rbuf_end(&r) < 0) {
        free(*e);
        *e = NULL;
        return -EBADMSG;
    }
    *n = cnt;
    return 0;
}

/* Does the endorsement list (id, privileged roles)?  0 yes, -ENOENT no,
 * -EBADMSG if it does not verify. */
static int endorsement_lists(const char *vault_id, const uint8_t *raw, size_t len,
                             EVP_PKEY *key, uint64_t signer, uint64_t id, uint32_t priv)
{
    struct endorse_entry *e;
    size_t n;
    int rc = endorse_decode(vault_id, raw, len, key, signer, &e, &n);

    if (rc == 0) {
        rc = -ENOENT;
        for (size_t i = 0; i < n; i++)
            if (e[i].id == id && e[i].priv == priv)
                rc = 0;
    }
    free(e);
    return rc;
}

/* A privileged record without a co-signature (signed while its signer was
 * the only sysadmin, or before co-signatures were verified): every other
 * sysadmin that endorsed the registry as it found it must list it, and at
 * least one must (records of format 3 and earlier: none yet is enough). */
static int endorsed(struct cosign_ctx *cs, const struct registry_record *r, unsigned depth)
{
    struct vec_u64 ids = { 0 };
    uint32_t priv = r->roles & PRIV_ROLES;
    unsigned listed = 0, endorsers = 0;
    char refused[META_ACCOUNT_NAME_MAX + 1] = "", missing[META_ACCOUNT_NAME_MAX + 1] = "";
    int rc = meta_account_list(cs->m, id_vec_add, &ids);

    for (size_t i = 0; rc == 0 && i < ids.n && !refused[0]; i++) {
        struct registry_record y = { 0 };
        EVP_PKEY *key = NULL;
        uint8_t *raw = NULL;
        size_t len = 0;

        if (ids.v[i] == r->signer_id ||
            verify_chain(cs->m, cs->vault_id, cs->root_fp, ids.v[i], 0, 0, NULL, &y) < 0 ||
            !(y.roles & ROLE_SYSADMIN)) {
            registry_record_clear(&y);
            continue;
        }
        if (param_get_id(cs->m, &raw, &len, "registry.endorse", y.account_id) < 0 ||
            !len) {
            /* Not endorsed yet: an old record, or a sysadmin co-signed in
             * (it endorses with cosign-endorse); else the list was removed. */
            if (y.version >= 4 && y.signer_id != REGISTRY_ROOT_SIGNER &&
                attested(cs, &y, depth + 1) < 0)
                snprintf(missing, sizeof missing, "%s", y.name);
        } else {
            endorsers++;
            key = rsa_public_from_der(y.pubkey, y.pubkey_len);
            int e = key ? endorsement_lists(cs->vault_id, raw, len, key, y.account_id,
                                            r->account_id, priv) : -EBADMSG;
            if (e == 0)
                listed++;
            else
                snprintf(refused, sizeof refused, "%s", y.name);
        }
        EVP_PKEY_free(key);
        free(raw);
        registry_record_clear(&y);
    }
    vec_u64_free(&ids);
    pfs_err_clear();
    if (rc < 0)
        return rc;
    if (refused[0])
        return pfs_err(-EBADMSG, "the %s role of \"%s\" was given by one sysadmin alone and "
                       "sysadmin \"%s\" never endorsed it: a role change needs a second "
                       "sysadmin's co-signature (docs/accounts.md, \"Co-signature\"); refusing "
                       "to trust this account", priv & ROLE_SYSADMIN ? "sysadmin" : "dataadmin",
                       r->name, refused);
    if (missing[0])
        return pfs_err(-EBADMSG, "the %s role of \"%s\" is not co-signed and sysadmin \"%s\" "
                       "has not endorsed the registry (its endorsement is missing: removed "
                       "from the metadata store, or never made: \"%s\" runs pactfs-admin "
                       "cosign-endorse); refusing to trust this account",
                       priv & ROLE_SYSADMIN ? "sysadmin" : "dataadmin", r->name, missing,
                       missing);
    if (!listed && (r->version >= 4 || endorsers))
        return pfs_err(-EBADMSG, "the %s role of \"%s\" is neither co-signed by a second "
                       "sysadmin nor endorsed by one: a single sysadmin gave it; refusing to "
                       "trust this account", priv & ROLE_SYSADMIN ? "sysadmin" : "dataadmin",
                       r->name);
    return 0;
}

static int cosign_record_ok(struct cosign_ctx *cs, const struct registry_record *r,
                            unsigned depth)
{
    struct registry_record s = { 0 };
    struct roster_trust t;
    struct roster ro;
    int rc;

    /* With a signed role roster, it decides (roster.h): every record's
     * privileged roles, disabled flag and (version 2) key must be the
     * roster's. */
    registry_roster_trust(&t, cs->m, cs->vault_id, cs->root_fp);
    rc = roster_load(&t, &ro, NULL, NULL);
    if (rc == 0) {
        rc = roster_agrees(&ro, r->account_id, r->name, r->roles, r->disabled);
        /* and, version 2, its key must be the one the roster binds */
        if (rc == 0)
            rc = roster_key_agrees(&ro, r->account_id, r->name, r->pubkey, r->pubkey_len);
        roster_clear(&ro);
        return rc;
    }
    if (rc != -ENOENT)
        return rc;
    if (!(r->roles & PRIV_ROLES) || r->signer_id == REGISTRY_ROOT_SIGNER)
        return 0;
    if (depth >= REGISTRY_MAX_DEPTH)
        return pfs_err(-EBADMSG, "the co-signatures of \"%s\" go deeper than %d sysadmins",
                       r->name, REGISTRY_MAX_DEPTH);
    /* A sysadmin whose record is of this format signs records of it only:
     * an older format put in by one sysadmin would escape the rules. */
    if (r->version < 4 &&
        verify_chain(cs->m, cs->vault_id, cs->root_fp, r->signer_id, 0, 0, NULL, &s) == 0 &&
        s.version >= 4) {
        registry_record_clear(&s);
        return pfs_err(-EBADMSG, "the registry record of \"%s\" is of the format before "
                       "co-signatures (3) but signed by a sysadmin whose own record is newer: "
                       "it was written outside pactfs-admin; refusing to trust this account",
                       r->name);
    }
    registry_record_clear(&s);
    pfs_err_clear();
    if (cs->enforce < 0)
        cs->enforce = cosign_enforced(cs, depth);
    if (!cs->enforce)
        return 0;
    rc = attested(cs, r, depth + 1);
    if (rc == 0)
        return 0;
    pfs_err_clear();
    return endorsed(cs, r, depth);
}

/* ------------------------------------------------------- endorsements */

static int endorse_store(struct meta *m, const char *vault_id, EVP_PKEY *key, uint64_t signer,
                         const struct endorse_entry *e, size_t n)
{
    struct wbuf b;
    uint8_t *tbs, *out = NULL;
    size_t tbslen, outlen = 0;
    char param[64];
    int rc;

    wbuf_init(&b);
    wbuf_put_bytes(&b, ENDORSE_MAGIC, 4);
    wbuf_put_u8(&b, ENDORSE_VERSION);
    wbuf_put_str(&b, vault_id);
    wbuf_put_u64(&b, signer);
    wbuf_put_u64(&b, (uint64_t)time(NULL));
    wbuf_put_u32(&b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        wbuf_put_u64(&b, e[i].id);
        wbuf_put_u32(&b, e[i].priv);
    }
    tbs = wbuf_steal(&b, &tbslen);
    if (!tbs)
        return -ENOMEM;
    rc = sig_sign_container(key, tbs, tbslen, &out, &outlen);
    free(tbs);
    snprintf(param, sizeof param, "registry.endorse.%" PRIu64, signer);
    if (rc == 0)
        rc = meta_param_set(m, param, out, outlen);
    free(out);
    return rc;
}

/* The entries of signer's own endorsement, if it verifies under key. */
static int endorse_load(struct meta *m, const char *vault_id, EVP_PKEY *key, uint64_t signer,
                        struct endorse_entry **e, size_t *n)
{
    uint8_t *raw = NULL;
    size_t len = 0;
    int rc;

    *e = NULL;
    *n = 0;
    if (param_get_id(m, &raw, &len, "registry.endorse", signer) < 0 || !len) {
        free(raw);
        pfs_err_clear();
        return 0;
    }
    rc = endorse_decode(vault_id, raw, len, key, signer, e, n);
    free(raw);
    return rc == -EBADMSG ? 0 : rc;     /* not its own: start afresh */
}

int registry_endorse_add(struct meta *m, const char *vault_id, EVP_PKEY *key, uint64_t signer,
                         uint64_t id, uint32_t roles)
{
    struct endorse_entry *e = NULL, *g;
    size_t n = 0, i;
    int rc = endorse_load(m, vault_id, key, signer, &e, &n);

    for (i = 0; rc == 0 && i < n && e[i].id != id; i++)
        ;
    if (rc == 0 && !(roles & PRIV_ROLES)) {      /* no longer: drop it if listed */
        if (i < n) {
            e[i] = e[n - 1];
            rc = endorse_store(m, vault_id, key, signer, e, n - 1);
        }
        free(e);
        return rc;
    }
    if (rc == 0 && i == n) {
        if (n >= ENDORSE_MAX || !(g = realloc(e, (n + 1) * sizeof *e)))
            rc = -ENOMEM;
        else {
            e = g;
            n++;
        }
    }
    if (rc == 0) {
        e[i].id = id;
        e[i].priv = roles & PRIV_ROLES;
        rc = endorse_store(m, vault_id, key, signer, e, n);
    }
    free(e);
    return rc;
}

int registry_endorse_current(struct meta *m, const char *vault_id, const char *root_fp,
                             EVP_PKEY *key, uint64_t signer, size_t *count)
{
    struct vec_u64 ids = { 0 };
    struct endorse_entry *e = NULL;
    size_t n = 0;
    int rc = meta_account_list(m, id_vec_add, &ids);

    e = calloc(ids.n + 1, sizeof *e);
    if (!e)
        rc = -ENOMEM;
    for (size_t i = 0; rc == 0 && i < ids.n; i++) {
        struct registry_record a = { 0 };

        /* As verified without the co-signature rules: what this sysadmin
         * finds when it joins (or upgrades) is what it vouches for. */
        if (verify_chain(m, vault_id, root_fp, ids.v[i], 0, 0, NULL, &a) == 0 &&
            (a.roles & PRIV_ROLES)) {
            e[n].id = a.account_id;
            e[n].priv = a.roles & PRIV_ROLES;
            n++;
        }
        registry_record_clear(&a);
    }
    pfs_err_clear();
    vec_u64_free(&ids);
    if (rc == 0)
        rc = endorse_store(m, vault_id, key, signer, e, n);
    free(e);
    if (count)
        *count = n;
    return rc;
}

/* ------------------------------------------------- the role roster's trust */

static int trust_key(const struct roster_trust *t, uint64_t id, EVP_PKEY **pub)
{
    struct registry_record s = { 0 };
    int rc = registry_verify_plain(t->m, t->vault_id, t->arg, id, &s);

    *pub = NULL;
    if (rc == 0 && !s.pubkey_len)
        rc = pfs_err(-EBADMSG, "sysadmin \"%s\" has not enrolled", s.name);
    if (rc == 0 && !(*pub = rsa_public_from_der(s.pubkey, s.pubkey_len)))
        rc = pfs_err(-EBADMSG, "the public key of \"%s\" is malformed", s.name);
    registry_record_clear(&s);
    return rc;
}

static int trust_key_name(const struct roster_trust *t, uint64_t id, char *out, size_t len)
{
    struct registry_record s = { 0 };
    int rc = registry_verify_plain(t->m, t->vault_id, t->arg, id, &s);

    if (rc == 0)
        snprintf(out, len, "%s", s.key_name);
    registry_record_clear(&s);
    return rc;
}

static int trust_item(const struct roster_trust *t, const uint8_t *raw, size_t len,
                      struct roster_item *it, const uint8_t **tbs, size_t *tbslen,
                      const uint8_t **sig, size_t *siglen)
{
    struct registry_item r;
    int rc = registry_item_decode(t->vault_id, raw, len, &r, tbs, tbslen, sig, siglen);

    if (rc == 0) {
        snprintf(it->key, sizeof it->key, "%s", r.key);
        snprintf(it->content, sizeof it->content, "%s", r.content);
        it->signer = r.signer;
        it->time = r.time;
    }
    return rc;
}

void registry_roster_trust(struct roster_trust *t, struct meta *m, const char *vault_id,
                           const char *root_fp)
{
    t->m = m;
    t->vault_id = vault_id;
    t->arg = root_fp;
    t->key = trust_key;
    t->key_name = trust_key_name;
    t->item = trust_item;
}
