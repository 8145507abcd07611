#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cosign.h"
#include "enrol.h"
#include "envelope.h"
#include "folder_state.h"
#include "vault_head.h"
#include "error.h"
#include "file_head.h"
#include "grants.h"
#include "keyring.h"
#include "log.h"
#include "meta_backend.h"
#include "registry.h"
#include "secmem.h"
#include "vec.h"

#define GRANT_MAGIC "PFSG"
#define GRANT_VERSION 2             /* 1: no time */
#define RIGHTS_KNOWN (RIGHT_READ | RIGHT_WRITE | RIGHT_MANAGE)

/* ---------------------------------------------------------------- rights */

int grants_rights_parse(const char *s, uint32_t *rights)
{
    static const char *const forms[] = { "read", "read,write", "read,write,manage" };
    static const uint32_t masks[] = { RIGHT_READ, RIGHT_READ | RIGHT_WRITE,
                                      RIGHT_READ | RIGHT_WRITE | RIGHT_MANAGE };

    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        if (!strcmp(s, forms[i])) {
            *rights = masks[i];
            return 0;
        }
    return pfs_err(-EINVAL, "rights \"%s\": give read, read,write or read,write,manage", s);
}

void grants_rights_format(uint32_t rights, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%s%s", rights & RIGHT_READ ? "read" : "",
             rights & RIGHT_WRITE ? ",write" : "", rights & RIGHT_MANAGE ? ",manage" : "");
}

/* ------------------------------------------------------- signed envelopes */

/* Version 2 adds the time of the grant (signed). */
static int unpack(const uint8_t *blob, size_t len, const uint8_t **rsa, size_t *rsalen,
                  const uint8_t **sig, size_t *siglen, uint8_t *version, int64_t *when)
{
    struct rbuf b;
    const uint8_t *magic = NULL;
    uint64_t t = 0;

    *version = 0;
    rbuf_init(&b, blob, len);
    rbuf_get_ref(&b, &magic, 4);
    rbuf_get_u8(&b, version);
    if (b.err || memcmp(magic, GRANT_MAGIC, 4) || *version < 1 || *version > GRANT_VERSION)
        return pfs_err(-EBADMSG, "the envelope carries no grant signature (not made by "
                       "pactfs-admin grant)");
    rbuf_get_blob(&b, rsa, rsalen, 4096);
    rbuf_get_blob(&b, sig, siglen, 1024);
    if (*version >= 2)
        rbuf_get_u64(&b, &t);
    if (rbuf_end(&b) < 0)
        return pfs_err(-EBADMSG, "a signed envelope is malformed");
    *when = (int64_t)t;
    return 0;
}

int grant_envelope_unpack(const uint8_t *blob, size_t len, const uint8_t **rsa, size_t *rsalen,
                          const uint8_t **sig, size_t *siglen)
{
    uint8_t version;
    int64_t when;

    return unpack(blob, len, rsa, rsalen, sig, siglen, &version, &when);
}

int grant_envelope_time(const uint8_t *blob, size_t len, int64_t *when)
{
    const uint8_t *rsa, *sig;
    size_t rsalen, siglen;
    uint8_t version;

    return unpack(blob, len, &rsa, &rsalen, &sig, &siglen, &version, when);
}

/* The bytes the granter signs. */
static int grant_tbs(const char *vault_id, const struct meta_envelope *e, uint64_t granter,
                     const uint8_t *rsa, size_t rsalen, uint8_t version, int64_t when,
                     uint8_t **out, size_t *outlen)
{
    uint8_t h[SHA256_LEN];
    struct wbuf b;

    sha256(rsa, rsalen, h);
    wbuf_init(&b);
    wbuf_put_bytes(&b, GRANT_MAGIC, 4);
    wbuf_put_u8(&b, version);
    wbuf_put_str(&b, vault_id);
    wbuf_put_u64(&b, e->folder_id);
    wbuf_put_u64(&b, e->account_id);
    wbuf_put_u32(&b, e->key_version);
    wbuf_put_u32(&b, e->rights);
    wbuf_put_u64(&b, granter);
    wbuf_put_bytes(&b, h, sizeof h);
    if (version >= 2)
        wbuf_put_u64(&b, (uint64_t)when);
    *out = wbuf_steal(&b, outlen);
    return *out ? 0 : -ENOMEM;
}

static int grant_pack(const uint8_t *rsa, size_t rsalen, const uint8_t *sig, size_t siglen,
                      int64_t when, uint8_t **out, size_t *outlen)
{
    struct wbuf b;

    wbuf_init(&b);
    wbuf_put_bytes(&b, GRANT_MAGIC, 4);
    wbuf_put_u8(&b, GRANT_VERSION);
    wbuf_put_blob(&b, rsa, rsalen);
    wbuf_put_blob(&b, sig, siglen);
    wbuf_put_u64(&b, (uint64_t)when);
    *out = wbuf_steal(&b, outlen);
    return *out ? 0 : -ENOMEM;
}

int grant_sign(EVP_PKEY *granter, const char *vault_id, uint64_t granter_id,
               struct meta_envelope *e)
{
    uint8_t *tbs = NULL, *sig = NULL, *packed = NULL;
    size_t tbslen = 0, siglen = 0, packedlen = 0;
    int64_t now = (int64_t)time(NULL);
    int rc;

    rc = grant_tbs(vault_id, e, granter_id, e->wrapped, e->wrapped_len, GRANT_VERSION, now, &tbs,
                   &tbslen);
    if (rc == 0)
        rc = sig_sign(granter, tbs, tbslen, &sig, &siglen);
    if (rc == 0)
        rc = grant_pack(e->wrapped, e->wrapped_len, sig, siglen, now, &packed, &packedlen);
    free(tbs);
    free(sig);
    if (rc < 0)
        return rc;
    free(e->wrapped);
    e->wrapped = packed;
    e->wrapped_len = packedlen;
    e->granted_by = granter_id;
    return 0;
}

void grant_rows_free(struct grant_rows *s)
{
    for (size_t i = 0; i < s->n; i++)
        meta_envelope_clear(&s->e[i]);
    free(s->e);
    s->e = NULL;
    s->n = s->cap = 0;
}

static int grant_rows_add(void *arg, const struct meta_envelope *e)
{
    struct grant_rows *s = arg;

    if (vec_reserve(&s->e, &s->cap, s->n + 1, sizeof *s->e, 16) < 0)
        return -ENOMEM;
    s->e[s->n] = *e;
    s->e[s->n].wrapped = meta_memdup(e->wrapped, e->wrapped_len);
    if (!s->e[s->n].wrapped)
        return -ENOMEM;
    s->n++;
    return 0;
}

int grant_rows_folder(struct meta *m, uint64_t folder_id, struct grant_rows *s)
{
    int rc = meta_envelope_list_folder(m, folder_id, grant_rows_add, s);

    if (rc < 0)
        grant_rows_free(s);
    return rc;
}

int grant_rows_account(struct meta *m, uint64_t account_id, struct grant_rows *s)
{
    int rc = meta_envelope_list_account(m, account_id, grant_rows_add, s);

    if (rc < 0)
        grant_rows_free(s);
    return rc;
}

static int verify_at(struct meta *m, const char *vault_id, const char *root_fp,
                     const struct meta_envelope *e, unsigned depth);

/* Does the granter hold manage on the folder by a good grant? */
static int granter_manages(struct meta *m, const char *vault_id, const char *root_fp,
                           const struct meta_envelope *e, unsigned depth)
{
    struct grant_rows s = { 0 };
    int rc;

    if (e->granted_by == e->account_id)
        return (e->rights & RIGHT_MANAGE) ? 0 : -EBADMSG;   /* the folder's creator */
    if (depth >= GRANT_MAX_DEPTH)
        return pfs_err(-EBADMSG, "the chain of manage grants on folder %" PRIu64 " is longer "
                       "than %d or loops", e->folder_id, GRANT_MAX_DEPTH);
    rc = grant_rows_folder(m, e->folder_id, &s);
    if (rc < 0)
        return rc;
    rc = -EBADMSG;
    for (size_t i = 0; i < s.n && rc < 0; i++)
        if (s.e[i].account_id == e->granted_by && (s.e[i].rights & RIGHT_MANAGE))
            rc = verify_at(m, vault_id, root_fp, &s.e[i], depth + 1);
    grant_rows_free(&s);
    return rc;
}

static int verify_at(struct meta *m, const char *vault_id, const char *root_fp,
                     const struct meta_envelope *e, unsigned depth)
{
    struct registry_record granter = { 0 };
    const uint8_t *rsa, *sig;
    size_t rsalen, siglen, tbslen = 0;
    uint8_t *tbs = NULL, version = 0;
    int64_t when = 0;
    EVP_PKEY *key = NULL;
    int rc;

    if (!e->rights || (e->rights & ~RIGHTS_KNOWN))
        return pfs_err(-EBADMSG, "an envelope names unknown rights 0x%x", e->rights);
    rc = unpack(e->wrapped, e->wrapped_len, &rsa, &rsalen, &sig, &siglen, &version, &when);
    if (rc == 0)
        rc = registry_verified_key(m, vault_id, root_fp, e->granted_by, &granter, &key);
    if (rc == 0)
        rc = grant_tbs(vault_id, e, e->granted_by, rsa, rsalen, version, when, &tbs, &tbslen);
    if (rc == 0 && sig_verify(key, tbs, tbslen, sig, siglen) < 0)
        rc = pfs_err(-EBADMSG, "the grant signature of \"%s\" does not verify: the envelope "
                     "row was forged or altered", granter.name);
    /* A granter demoted or disabled since keeps the grants it made while
     * it held the role: the sysadmin listed them in its record then. */
    if (rc == 0 && (!(granter.roles & ROLE_DATAADMIN) || granter.disabled) &&
        registry_retained(m, vault_id, &granter, e->wrapped, e->wrapped_len) < 0)
        rc = pfs_err(-EBADMSG, "the grant was signed by \"%s\", which is not an enabled "
                     "dataadmin and did not make this grant while it was one", granter.name);
    if (rc == 0 && granter_manages(m, vault_id, root_fp, e, depth) < 0)
        rc = pfs_err(-EBADMSG, "the grant was signed by \"%s\", who holds no manage right on "
                     "this folder", granter.name);
    free(tbs);
    EVP_PKEY_free(key);
    registry_record_clear(&granter);
    return rc;
}

int grant_verify(struct meta *m, const char *vault_id, const char *root_fp,
                 const struct meta_envelope *e, const uint8_t **rsa, size_t *rsalen)
{
    const uint8_t *sig;
    size_t siglen;
    int rc = verify_at(m, vault_id, root_fp, e, 0);

    if (rc < 0)
        return rc;
    return grant_envelope_unpack(e->wrapped, e->wrapped_len, rsa, rsalen, &sig, &siglen);
}

/* ------------------------------------------------------- helpers */

static int audit_admin(struct vault *v, const char *op, const char *what, int result)
{
    struct audit_ctx who = { getuid(), getpid() };
    int arc;

    if (!v->audit)
        return result;
    arc = audit_event(v->audit, &who, op, what, result, 0);
    return result < 0 ? result : arc;
}

/* An account's state as the audit trail records it before and after a
 * change (out: ACCOUNT_STATE_MAX bytes). */
#define ACCOUNT_STATE_MAX 900
static void account_state(const struct meta_account *a, const struct registry_details *d,
                          char *out)
{
    char rs[64], exp[24] = "never";
    time_t t = d ? (time_t)d->expires : 0;

    registry_roles_format(a->roles, rs, sizeof rs);
    if (t)
        strftime(exp, sizeof exp, "%Y-%m-%d", gmtime(&t));
    snprintf(out, ACCOUNT_STATE_MAX, "name=%s roles=%s status=%s full_name=\"%s\" "
             "email=\"%s\" department=\"%s\" expires=%s", a->name, rs,
             a->disabled ? "disabled" : "enabled", d ? d->full_name : "", d ? d->email : "",
             d ? d->department : "", exp);
}

/* audit_admin with the state before and after (either may be NULL). */
static int audit_change(struct vault *v, const char *op, const char *what, const char *before,
                        const char *after, int result)
{
    struct audit_ctx who = { getuid(), getpid() };
    struct audit_detail d = { .before = before, .after = after };
    int arc;

    if (!v->audit)
        return result;
    arc = audit_event_detail(v->audit, &who, op, what, result, 0, &d);
    return result < 0 ? result : arc;
}

/* The folder named name among those this account holds (the top
 * directory's name is encrypted under the key version of its creation). */
static struct vault_folder *folder_by_name(struct vault *v, const char *name)
{
    for (size_t i = 0; i < v->nfolders; i++) {
        struct vault_folder *f = &v->folders[i];

        for (uint32_t ver = 0; ver < f->nkeys; ver++) {
            uint8_t enc[NAME_MAX_ENC];
            size_t enclen = sizeof enc;
            uint64_t ino;

            if (f->keys[ver] &&
                name_encrypt(f->keys[ver], META_ROOT_INO, name, strlen(name), enc, &enclen) == 0 &&
                meta_dirent_lookup(v->meta, META_ROOT_INO, enc, enclen, &ino) == 0 &&
                ino == f->root_ino)
                return f;
        }
    }
    return NULL;
}

int grants_folder_id(struct vault *v, const char *name, uint64_t *id)
{
    struct vault_folder *f = folder_by_name(v, name);

    if (!f)
        return pfs_err(-ENOENT, "account \"%s\" holds no folder \"%s\" (only a member can "
                       "name a folder: its name is encrypted under the folder key)",
                       v->account.name, name);
    *id = f->id;
    return 0;
}

/* The unlocked account must manage the folder. */
int grants_managed_folder(struct vault *v, const char *name, struct vault_folder **out)
{
    if (!(v->account.roles & ROLE_DATAADMIN))
        return pfs_err(-EACCES, "\"%s\" is not a dataadmin: only a dataadmin who is a member "
                       "of a folder with manage rights can grant or revoke it (a sysadmin "
                       "holds no folder keys)", v->account.name);
    *out = folder_by_name(v, name);
    if (!*out)
        return pfs_err(-EACCES, "\"%s\" holds no folder named \"%s\": only its members can "
                       "grant it (check the name with ls on the mount)", v->account.name, name);
    if (!((*out)->rights & RIGHT_MANAGE))
        return pfs_err(-EACCES, "\"%s\" has no manage right on folder \"%s\"",
                       v->account.name, name);
    return 0;
}

/* A grantee: registered, verified, enabled, allowed to hold data. */
static int grantee_key(struct vault *v, const char *name, uint32_t rights,
                       struct meta_account *a, EVP_PKEY **key)
{
    struct registry_record r = { 0 };
    int rc = meta_account_get_by_name(v->meta, name, a);

    if (rc < 0)
        return rc == -ENOENT ? pfs_err(-ENOENT, "no account \"%s\": a sysadmin creates it "
                                       "with pactfs-admin account-add", name) : rc;
    rc = registry_verified_key(v->meta, v->conf.vault_id, v->conf.root_fingerprint, a->id,
                               &r, key);
    if (rc < 0) {
        char keep[512];

        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        return pfs_err(rc, "refusing to grant to \"%s\": %s", name, keep);
    }
    if (r.disabled)
        rc = pfs_err(-EPERM, "the account \"%s\" is disabled", name);
    else if (r.roles & ROLE_SYSADMIN)
        rc = pfs_err(-EPERM, "\"%s\" is a sysadmin, and a sysadmin holds no folder keys",
                     name);
    else if ((rights & RIGHT_MANAGE) && !(r.roles & ROLE_DATAADMIN))
        rc = pfs_err(-EINVAL, "the manage right needs the dataadmin role, which \"%s\" lacks",
                     name);
    registry_record_clear(&r);
    if (rc < 0) {
        EVP_PKEY_free(*key);
        *key = NULL;
    }
    return rc;
}

/* Open this account's own envelope of (folder, version) into fk. */
static int own_folder_key(struct vault *v, uint64_t folder_id, uint32_t version,
                          uint8_t fk[FOLDER_KEY_LEN])
{
    struct meta_envelope e;
    const uint8_t *rsa;
    size_t rsalen;
    int rc = meta_envelope_get(v->meta, folder_id, v->account.id, version, &e);

    if (rc < 0)
        return rc;
    rc = grant_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &e, &rsa, &rsalen);
    if (rc == 0)
        rc = envelope_open(v->priv, v->conf.vault_id, folder_id, version, rsa, rsalen, fk);
    meta_envelope_clear(&e);
    return rc;
}

/* Wrap fk for a member and store the signed envelope. */
static int put_signed_envelope(struct vault *v, EVP_PKEY *member, uint64_t folder_id,
                               uint64_t account_id, uint32_t version, uint32_t rights,
                               const uint8_t fk[FOLDER_KEY_LEN])
{
    struct meta_envelope e = { .folder_id = folder_id, .account_id = account_id,
                               .key_version = version, .rights = rights };
    int rc = envelope_seal(member, v->conf.vault_id, folder_id, version, fk, &e.wrapped,
                           &e.wrapped_len);

    if (rc == 0)
        rc = grant_sign(v->priv, v->conf.vault_id, v->account.id, &e);
    if (rc == 0)
        rc = meta_envelope_put(v->meta, &e);
    free(e.wrapped);
    return rc;
}

static int finish_txn(struct meta *m, int rc)
{
    if (rc < 0) {
        char keep[512];

        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        meta_rollback(m);
        return pfs_err(rc, "%s", keep);
    }
    return meta_commit(m);
}

/* ----------------------------------------------------------------- grant */

static int wrap_all_versions(struct vault *v, const struct vault_folder *f, EVP_PKEY *member,
                             uint64_t account_id, uint32_t rights)
{
    uint8_t *fk = secmem_alloc(FOLDER_KEY_LEN);
    int rc = 0, wrapped = 0;

    if (!fk)
        return -ENOMEM;
    for (uint32_t ver = 0; ver < f->nkeys && rc == 0; ver++) {
        if (!f->keys[ver])
            continue;
        rc = own_folder_key(v, f->id, ver, fk);
        if (rc == 0)
            rc = put_signed_envelope(v, member, f->id, account_id, ver, rights, fk);
        wrapped += rc == 0;
    }
    secmem_free(fk, FOLDER_KEY_LEN);
    if (rc == 0 && !wrapped)
        rc = pfs_err(-EACCES, "this account holds no key of the folder to wrap");
    return rc;
}

/* The folder's verified signed state, which the unlocked account must
 * manage by it. */
static int managed_state(struct vault *v, const struct vault_folder *f, struct folder_state *st)
{
    int rc;

    if (v->legacy)
        return pfs_err(-EPROTONOSUPPORT, "this vault has no signed folder states yet: run "
                       "pactfs-admin upgrade first");
    rc = folder_state_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, f->id, st,
                           NULL, NULL);
    if (rc < 0) {
        char keep[512];

        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        return pfs_err(rc == -ENOENT ? -EPROTONOSUPPORT : rc, "%s%s", keep, rc == -ENOENT ?
                       ": a manager of the folder runs pactfs-admin upgrade first" : "");
    }
    if (!(folder_state_rights(st, v->account.id) & RIGHT_MANAGE)) {
        folder_state_clear(st);
        return pfs_err(-EACCES, "\"%s\" does not manage this folder by its signed state",
                       v->account.name);
    }
    return 0;
}

int grants_grant(struct vault *v, const char *folder, const char *account, uint32_t rights)
{
    struct vault_folder *f = NULL;
    struct folder_state st = { 0 };
    struct meta_account a = { 0 };
    EVP_PKEY *member = NULL;
    char what[256], rs[32];
    int rc;

    grants_rights_format(rights, rs, sizeof rs);
    snprintf(what, sizeof what, "/%s -> %s (%s)", folder, account, rs);
    rc = grants_managed_folder(v, folder, &f);
    if (rc == 0)
        rc = managed_state(v, f, &st);
    if (rc == 0)
        rc = grantee_key(v, account, rights, &a, &member);
    if (rc == 0 && a.id == v->account.id)
        rc = pfs_err(-EINVAL, "an account cannot change its own rights; ask another manager");
    if (rc == 0)
        rc = meta_begin(v->meta);
    if (rc == 0) {
        /* Replacing: drop earlier rights (all versions) first. */
        int drc = meta_envelope_delete(v->meta, f->id, a.id);

        rc = drc == -ENOENT ? 0 : drc;
        if (rc == 0)
            rc = wrap_all_versions(v, f, member, a.id, rights);
        /* The new member list, signed (and the vault head with it). */
        if (rc == 0)
            rc = folder_state_set_member(&st, a.id, rights);
        if (rc == 0) {
            st.counter++;
            rc = folder_state_store(v->meta, v->conf.vault_id, v->priv, v->account.id, &st);
        }
        if (rc == 0)
            rc = vault_head_advance(v->meta, v->conf.vault_id, v->priv, v->account.id);
        rc = finish_txn(v->meta, rc);
    }
    if (rc == 0)
        rc = vault_anchor_head(v);
    folder_state_clear(&st);
    EVP_PKEY_free(member);
    meta_account_clear(&a);
    return audit_admin(v, "grant", what, rc);
}

/* ---------------------------------------------------------------- revoke */

static int has_rows(const struct grant_rows *s, uint64_t account_id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->e[i].account_id == account_id)
            return 1;
    return 0;
}

/* Rows the revoked account granted would lose their voucher: the revoker
 * re-signs those that verify today, so remaining members keep old data. */
static int resign_rows_of(struct vault *v, const struct grant_rows *s, uint64_t revoked)
{
    int rc = 0;

    for (size_t i = 0; i < s->n && rc == 0; i++) {
        const struct meta_envelope *e = &s->e[i];
        struct meta_envelope copy = *e;
        const uint8_t *rsa;
        size_t rsalen;

        if (e->granted_by != revoked || e->account_id == revoked)
            continue;
        if (grant_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint, e, &rsa,
                         &rsalen) < 0)
            continue;
        copy.wrapped = meta_memdup(rsa, rsalen);
        copy.wrapped_len = rsalen;
        if (!copy.wrapped)
            return -ENOMEM;
        rc = grant_sign(v->priv, v->conf.vault_id, v->account.id, &copy);
        if (rc == 0)
            rc = meta_envelope_put(v->meta, &copy);
        free(copy.wrapped);
    }
    return rc;
}

/* The verified grant of a member at the state's key version: the rights to
 * carry over.  Rows the database operator wrote are never taken as such. */
static int member_grant(struct vault *v, const struct grant_rows *s, uint64_t account_id,
                        uint32_t version, uint32_t *rights)
{
    for (size_t i = 0; i < s->n; i++) {
        const struct meta_envelope *e = &s->e[i];
        const uint8_t *rsa;
        size_t rsalen;

        if (e->account_id != account_id || e->key_version != version)
            continue;
        if (grant_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint, e, &rsa,
                         &rsalen) == 0) {
            *rights = e->rights;
            return 0;
        }
    }
    return pfs_err(-EBADMSG, "it holds no verified grant of key version %u", version);
}

/* A member who gets the new key: its registry record verifies, it is
 * enabled and not a sysadmin. */
static int member_key(struct vault *v, uint64_t account_id, uint32_t rights, EVP_PKEY **key)
{
    struct registry_record r = { 0 };
    int rc = registry_verified_key(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                                   account_id, &r, key);

    if (rc == 0 && r.disabled)
        rc = pfs_err(-EPERM, "\"%s\" is disabled", r.name);
    else if (rc == 0 && (r.roles & ROLE_SYSADMIN))
        rc = pfs_err(-EPERM, "\"%s\" is a sysadmin", r.name);
    else if (rc == 0 && (rights & RIGHT_MANAGE) && !(r.roles & ROLE_DATAADMIN))
        rc = pfs_err(-EPERM, "\"%s\" is no longer a dataadmin", r.name);
    registry_record_clear(&r);
    if (rc < 0) {
        EVP_PKEY_free(*key);
        *key = NULL;
    }
    return rc;
}

/* The new key version, wrapped for every member of the verified state
 * (but the revoked one) whose grant verifies; next receives the new
 * member list. */
static int rotate_for_members(struct vault *v, const struct grant_rows *s,
                              const struct folder_state *st, uint64_t revoked, uint32_t version,
                              const uint8_t *fk, struct folder_state *next)
{
    int rc = 0;

    /* Rows of accounts the signed state does not list were planted or
     * replayed: they get nothing, and it is said. */
    for (size_t i = 0; i < s->n; i++) {
        uint64_t id = s->e[i].account_id;
        char what[160];
        int seen = 0;

        for (size_t j = 0; j < i && !seen; j++)
            seen = s->e[j].account_id == id;
        if (seen || id == revoked || folder_state_rights(st, id))
            continue;
        log_warning("account %" PRIu64 " has envelope rows in the folder but is no member by its "
                    "signed state (planted or replayed rows): it gets no envelope for the new key",
                    id);
        snprintf(what, sizeof what, "folder:%" PRIu64 " rows of account %" PRIu64 " not in "
                 "the signed folder state", st->folder_id, id);
        audit_admin(v, "tamper", what, -EBADMSG);
    }
    for (size_t i = 0; i < st->nmembers && rc == 0; i++) {
        uint64_t id = st->members[i].account_id;
        uint32_t rights = 0;
        EVP_PKEY *key = NULL;

        if (id == revoked)
            continue;
        if (id == v->account.id) {
            rights = st->members[i].rights;          /* the revoker, unlocked */
            rc = member_key(v, id, rights, &key);
        } else {
            rc = member_grant(v, s, id, st->key_version, &rights);
            if (rc == 0)
                rc = member_key(v, id, rights, &key);
        }
        if (rc < 0) {
            log_warning("account %" PRIu64 " gets no envelope for the new key and leaves the "
                        "folder: %s", id, pfs_err_msg());
            rc = 0;
            continue;
        }
        rc = put_signed_envelope(v, key, st->folder_id, id, version, rights, fk);
        if (rc == 0)
            rc = folder_state_set_member(next, id, rights);
        EVP_PKEY_free(key);
    }
    return rc;
}

static uint32_t newest_version(const struct grant_rows *s, uint32_t floor)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->e[i].key_version > floor)
            floor = s->e[i].key_version;
    return floor;
}

static int revoke_and_rotate(struct vault *v, struct vault_folder *f, uint64_t revoked,
                             uint32_t *new_version)
{
    struct grant_rows s = { 0 };
    struct folder_state st = { 0 }, next = { 0 };
    struct meta_folder mf;
    uint8_t *fk = secmem_alloc(FOLDER_KEY_LEN);
    int rc;

    if (!fk)
        return -ENOMEM;
    rc = managed_state(v, f, &st);
    if (rc == 0)
        rc = meta_folder_get(v->meta, f->id, &mf);
    if (rc == 0)
        rc = grant_rows_folder(v->meta, f->id, &s);
    if (rc == 0 && !folder_state_rights(&st, revoked) && !has_rows(&s, revoked))
        rc = pfs_err(-ENOENT, "the account is not a member of this folder");
    if (rc == 0)
        rc = folder_key_generate(fk);
    if (rc == 0)
        rc = meta_begin(v->meta);
    if (rc == 0) {
        /* Above every version any row or the folders table names: a new
         * version never meets an old row. */
        next.folder_id = st.folder_id;
        next.counter = st.counter + 1;
        next.key_version = newest_version(&s, st.key_version > mf.key_version ?
                                          st.key_version : mf.key_version) + 1;
        mf.key_version = next.key_version;
        rc = resign_rows_of(v, &s, revoked);
        if (rc == 0)
            rc = meta_envelope_delete(v->meta, f->id, revoked);
        if (rc == -ENOENT)
            rc = 0;
        if (rc == 0)
            rc = rotate_for_members(v, &s, &st, revoked, next.key_version, fk, &next);
        if (rc == 0)
            rc = meta_folder_update(v->meta, &mf);
        if (rc == 0)
            rc = folder_state_store(v->meta, v->conf.vault_id, v->priv, v->account.id, &next);
        if (rc == 0)
            rc = vault_head_advance(v->meta, v->conf.vault_id, v->priv, v->account.id);
        rc = finish_txn(v->meta, rc);
    }
    if (rc == 0)
        rc = vault_anchor_head(v);
    if (rc == 0)
        *new_version = next.key_version;
    grant_rows_free(&s);
    folder_state_clear(&st);
    folder_state_clear(&next);
    secmem_free(fk, FOLDER_KEY_LEN);
    return rc;
}

int grants_revoke(struct vault *v, const char *folder, const char *account)
{
    struct vault_folder *f = NULL;
    struct meta_account a = { 0 };
    uint32_t version = 0;
    char what[256];
    int rc;

    snprintf(what, sizeof what, "/%s -> %s", folder, account);
    rc = grants_managed_folder(v, folder, &f);
    if (rc == 0) {
        rc = meta_account_get_by_name(v->meta, account, &a);
        if (rc == -ENOENT)
            rc = pfs_err(-ENOENT, "no account \"%s\"", account);
    }
    if (rc == 0 && a.id == v->account.id)
        rc = pfs_err(-EINVAL, "an account cannot revoke itself; ask another manager");
    if (rc == 0)
        rc = revoke_and_rotate(v, f, a.id, &version);
    meta_account_clear(&a);
    rc = audit_admin(v, "revoke", what, rc);
    if (rc == 0) {
        snprintf(what, sizeof what, "/%s key version %u", folder, version);
        rc = audit_admin(v, "key-rotation", what, 0);
    }
    return rc;
}

/* ------------------------------------------------------- sysadmin actions */

static int require_sysadmin(struct vault *v)
{
    if (!(v->account.roles & ROLE_SYSADMIN))
        return pfs_err(-EACCES, "\"%s\" is not a sysadmin: only a sysadmin changes accounts",
                       v->account.name);
    return 0;
}

static int name_ok(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > META_ACCOUNT_NAME_MAX || strspn(name, "abcdefghijklmnopqrstuvwxyz"
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@") != n)
        return pfs_err(-EINVAL, "account name \"%s\": 1 to %d letters, digits, '.', '_', '-' "
                       "or '@'", name, META_ACCOUNT_NAME_MAX);
    return 0;
}

/* The account a sysadmin acts on: it exists, its record verifies (pending
 * or enrolled), and it is not the sysadmin's own. */
static int sysadmin_target(struct vault *v, const char *name, struct meta_account *a,
                           struct registry_record *r)
{
    int rc = require_sysadmin(v);

    if (rc == 0) {
        rc = meta_account_get_by_name(v->meta, name, a);
        if (rc == -ENOENT)
            rc = pfs_err(-ENOENT, "no account \"%s\"", name);
    }
    if (rc == 0)
        rc = registry_verify_pending(v->meta, v->conf.vault_id, v->conf.root_fingerprint, a->id,
                                     r);
    if (rc == 0 && a->id == v->account.id)
        rc = pfs_err(-EINVAL, "a sysadmin cannot change its own account; ask another sysadmin");
    return rc;
}

/* A new enrolment code for account a (whose id is known) and its record,
 * signed, pending until the code's holder enrols. */
static int register_pending(struct vault *v, const struct meta_account *a, const char *key_name,
                            const struct registry_details *d, unsigned valid_s,
                            char code[ENROL_CODE_TEXT_MAX])
{
    uint8_t pub[ED25519_PUB_LEN];
    int64_t expires = (int64_t)time(NULL) + (valid_s ? valid_s : ENROL_DEFAULT_VALID_S);
    int rc = enrol_code_generate(code);

    if (rc == 0)
        rc = enrol_code_public(v->conf.vault_id, a->id, code, pub);
    if (rc == 0)
        rc = registry_certify_ex(v->meta, v->conf.vault_id, a, key_name, d, pub, expires,
                                 v->priv, v->account.id);
    if (rc == 0)
        rc = vault_head_advance(v->meta, v->conf.vault_id, v->priv, v->account.id);
    /* The key service enrols the share only with the same code. */
    if (rc == 0)
        rc = enrol_code_register(v->sp, v->conf.vault_id, a->id, key_name, code, expires);
    return rc;
}

int grants_account_add(struct vault *v, const char *name, uint32_t roles,
                       const struct registry_details *d, unsigned valid_s,
                       char code[ENROL_CODE_TEXT_MAX])
{
    struct meta_account a = { .roles = roles, .created = time(NULL) };
    struct meta_account existing;
    char what[META_ACCOUNT_NAME_MAX + 80], rs[64];
    uint8_t *add_attest = NULL;
    size_t add_attest_len = 0;
    int rc;

    rc = require_sysadmin(v);
    if (rc == 0)
        rc = name_ok(name);
    if (rc == 0)
        rc = registry_roles_check(roles);
    if (rc == 0 && meta_account_get_by_name(v->meta, name, &existing) == 0) {
        meta_account_clear(&existing);
        rc = pfs_err(-EEXIST, "an account \"%s\" already exists", name);
    }
    snprintf(a.name, sizeof a.name, "%s", name);
    /* A new sysadmin or dataadmin is a role change too: two sysadmins. */
    if (rc == 0 && (roles & (ROLE_SYSADMIN | ROLE_DATAADMIN))) {
        char key[META_ACCOUNT_NAME_MAX + 8], content[80];
        uint64_t cosigner = 0;

        char on[40];

        cosign_roster_suffix(v, on, sizeof on);
        snprintf(key, sizeof key, "add.%s", name);
        snprintf(content, sizeof content, "roles=0x%x%s", roles, on);
        rc = cosign_gate_attest(v, key, content, &cosigner, &add_attest, &add_attest_len);
        if (rc == COSIGN_PENDING) {
            char after[ACCOUNT_STATE_MAX];

            account_state(&a, d, after);
            registry_roles_format(roles, rs, sizeof rs);
            snprintf(what, sizeof what, "%s roles=%s", name, rs);
            rc = audit_change(v, "account-create-proposed", what, NULL, after, 0);
            meta_account_clear(&a);
            return rc < 0 ? rc : COSIGN_PENDING;
        }
    }
    /* The account has no key until its owner enrols (accounts.h). */
    if (rc == 0)
        rc = meta_begin(v->meta);
    if (rc == 0) {
        rc = meta_account_add(v->meta, &a);
        if (rc == 0 && add_attest)
            rc = cosign_store_attest(v, a.id, add_attest, add_attest_len);
        if (rc == 0)
            rc = register_pending(v, &a, name, d, valid_s, code);
        if (rc == 0)
            rc = cosign_roster_step(v, a.id, roles, 0, -1, add_attest, add_attest_len, 0, NULL);
        rc = finish_txn(v->meta, rc);
    }
    free(add_attest);
    if (rc == 0)
        rc = vault_anchor_head(v);
    registry_roles_format(roles, rs, sizeof rs);
    snprintf(what, sizeof what, "%s roles=%s", name, rs);
    {
        char after[ACCOUNT_STATE_MAX];

        account_state(&a, d, after);
        meta_account_clear(&a);
        return audit_change(v, "account-create", what, NULL, after, rc);
    }
}

/* The registry records a sysadmin signed stop verifying when its key goes
 * (re-enrolment): the acting sysadmin re-signs, unchanged, those that
 * verify now (the roster decides their privileged roles, registry.h).  In
 * the caller's transaction, before the key goes. */
struct signed_records {
    struct vault *v;
    uint64_t signer;
    struct vec_u64 ids;
};

static int signed_record_add(void *arg, const struct meta_account *a)
{
    struct signed_records *c = arg;
    struct registry_record r = { 0 };
    int rc = 0;

    if (registry_verify_pending(c->v->meta, c->v->conf.vault_id, c->v->conf.root_fingerprint,
                                a->id, &r) == 0 && r.signer_id == c->signer)
        rc = vec_u64_push(&c->ids, a->id);
    registry_record_clear(&r);
    pfs_err_clear();
    return rc;
}

static int resign_records_of(struct vault *v, uint64_t signer)
{
    struct signed_records c = { .v = v, .signer = signer };
    int rc = meta_account_list(v->meta, signed_record_add, &c);

    for (size_t i = 0; rc == 0 && i < c.ids.n; i++) {
        struct meta_account a = { 0 };

        rc = meta_account_get(v->meta, c.ids.v[i], &a);
        if (rc == 0)
            rc = registry_certify(v->meta, v->conf.vault_id, &a, NULL, v->priv, v->account.id);
        meta_account_clear(&a);
    }
    vec_u64_free(&c.ids);
    return rc;
}

int grants_account_reenrol(struct vault *v, const char *name, unsigned valid_s,
                           char code[ENROL_CODE_TEXT_MAX])
{
    struct registry_record r = { 0 };
    struct meta_account a = { 0 };
    int rc = sysadmin_target(v, name, &a, &r);

    if (rc == 0) {
        /* The old key stops counting: the row and record name none until
         * the person enrols again; its folders must be granted anew. */
        free(a.pubkey);
        free(a.sealed_key);
        a.pubkey = a.sealed_key = NULL;
        a.pubkey_len = a.sealed_key_len = 0;
        rc = meta_begin(v->meta);
    }
    if (rc == 0) {
        /* a signed file head of this account's mounts would stop verifying */
        rc = file_head_resign(v->meta, v->conf.vault_id, v->conf.root_fingerprint, a.id,
                              v->priv, v->account.id);
        /* and the registry records its old key signed */
        if (rc == 0 && (a.roles & ROLE_SYSADMIN))
            rc = resign_records_of(v, a.id);
        if (rc == 0)
            rc = meta_account_update(v->meta, &a);
        if (rc == 0)
            rc = register_pending(v, &a, r.key_name, NULL, valid_s, code);
        /* the current roster step may be signed by the key that goes */
        if (rc == 0 && (a.roles & ROLE_SYSADMIN))
            rc = cosign_roster_step(v, 0, 0, 0, -1, NULL, 0, 1, NULL);
        rc = finish_txn(v->meta, rc);
    }
    /* The old share goes too, so the old password opens nothing even with
     * an old sealed key put back. */
    if (rc == 0) {
        int src = v->sp->ops->remove(v->sp, v->conf.vault_id, r.key_name);

        if (src < 0 && src != -ENOENT)
            log_warning("the old key share of \"%s\" could not be removed (%s)", name,
                        pfs_err_msg());
    }
    {
        char before[REGISTRY_FP_HEX + 40] = "pending", fp[REGISTRY_FP_HEX + 1];
        EVP_PKEY *old = r.pubkey_len ? rsa_public_from_der(r.pubkey, r.pubkey_len) : NULL;

        if (old && registry_fingerprint_hex(old, fp) == 0)
            snprintf(before, sizeof before, "enrolled key %s", fp);
        EVP_PKEY_free(old);
        registry_record_clear(&r);
        meta_account_clear(&a);
        return audit_change(v, "account-reenrol", name, before, "pending (new enrolment code)",
                            rc);
    }
}

/* Enabled, enrolled, unexpired dataadmins other than one account. */
struct dataadmin_count {
    struct vault *v;
    uint64_t except;
    unsigned n;
};

static int count_dataadmin(void *arg, const struct meta_account *a)
{
    struct dataadmin_count *c = arg;
    struct registry_record r = { 0 };

    if (a->id != c->except && (a->roles & ROLE_DATAADMIN) && !a->disabled &&
        registry_verify(c->v->meta, c->v->conf.vault_id, c->v->conf.root_fingerprint, a->id,
                        &r) == 0 &&
        !(r.details.expires && (int64_t)time(NULL) > r.details.expires))
        c->n++;
    registry_record_clear(&r);
    return 0;
}

/* The last enabled dataadmin is neither demoted nor disabled: nobody could
 * grant or revoke any folder again, and grants could no longer be made. */
static int keeps_a_dataadmin(struct vault *v, const struct meta_account *before,
                             const struct meta_account *after)
{
    struct dataadmin_count c = { v, before->id, 0 };
    int rc;

    if (!(before->roles & ROLE_DATAADMIN) || before->disabled ||
        ((after->roles & ROLE_DATAADMIN) && !after->disabled))
        return 0;
    rc = meta_account_list(v->meta, count_dataadmin, &c);
    pfs_err_clear();
    if (rc < 0)
        return rc;
    if (c.n)
        return 0;
    return pfs_err(GRANTS_DUTY_REFUSED, "\"%s\" is the last enabled dataadmin of this vault: "
                   "%s it would leave nobody who can grant or revoke a folder; give the "
                   "dataadmin role to another enrolled account first", before->name,
                   after->disabled ? "disabling" : "demoting");
}

/* keeps_a_dataadmin for disabling (or enabling) the account name. */
static int keeps_a_dataadmin_by_name(struct vault *v, const char *name, int disabled)
{
    struct meta_account before = { 0 }, after;
    int rc = meta_account_get_by_name(v->meta, name, &before);

    if (rc < 0)
        return rc;
    after = before;
    after.disabled = disabled;
    rc = keeps_a_dataadmin(v, &before, &after);
    meta_account_clear(&before);
    return rc;
}

/* What an account signed as a dataadmin that verifies now: the SHA-256 of
 * each folder state and each grant it signed (registry_certify_retaining). */
struct signed_by {
    struct vault *v;
    uint64_t signer;
    uint8_t (*h)[SHA256_LEN];
    size_t n, cap;
};

static int signed_by_add(struct signed_by *c, const uint8_t *obj, size_t len)
{
    if (vec_reserve(&c->h, &c->cap, c->n + 1, sizeof *c->h, 16) < 0)
        return -ENOMEM;
    sha256(obj, len, c->h[c->n++]);
    return 0;
}

static int id_list_add(void *arg, const struct meta_folder *f)
{
    return vec_u64_push(arg, f->id);
}

static int signed_by_folder(struct signed_by *c, uint64_t folder_id)
{
    struct vault *v = c->v;
    struct folder_state st;
    struct grant_rows s = { 0 };
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    const uint8_t *rsa;
    size_t rsalen;
    int rc = 0;

    if (folder_state_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, folder_id, &st, &raw,
                          &rawlen) == 0) {
        if (st.signer_id == c->signer)
            rc = signed_by_add(c, raw, rawlen);
        folder_state_clear(&st);
        free(raw);
    }
    if (rc == 0)
        rc = grant_rows_folder(v->meta, folder_id, &s);
    for (size_t i = 0; rc == 0 && i < s.n; i++)
        if (s.e[i].granted_by == c->signer &&
            grant_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &s.e[i], &rsa,
                         &rsalen) == 0)
            rc = signed_by_add(c, s.e[i].wrapped, s.e[i].wrapped_len);
    grant_rows_free(&s);
    pfs_err_clear();
    return rc;
}

static int may_sign_data(const struct meta_account *a)
{
    return (a->roles & ROLE_DATAADMIN) && !a->disabled;
}

/* Change a verified account's row and re-sign its record in one step.  An
 * account that stops being an enabled dataadmin keeps what it signed until
 * now (the list goes into its new record); nothing it signs later counts. */
static int account_change_attested(struct vault *v, const char *name,
                                   int (*apply)(struct meta_account *a,
                                                struct registry_details *d, const void *arg),
                                   const void *arg, const uint8_t *attest, size_t attest_len,
                                   char was[ACCOUNT_STATE_MAX], char now[ACCOUNT_STATE_MAX])
{
    struct meta_account a = { 0 }, before = { 0 };
    struct registry_record r = { 0 };
    struct registry_details d = { 0 };
    struct signed_by kept = { .v = v };
    int retain = 0;
    int rc = sysadmin_target(v, name, &a, &r);

    if (rc == 0) {
        before = a;
        before.pubkey = before.sealed_key = NULL;   /* a shallow copy: scalars only */
        d = r.details;
        account_state(&before, &d, was);
        rc = apply(&a, &d, arg);
        account_state(&a, &d, now);
    }
    registry_record_clear(&r);
    if (rc == 0)
        rc = keeps_a_dataadmin(v, &before, &a);
    if (rc == 0 && may_sign_data(&before) && !may_sign_data(&a)) {
        retain = 1;
        struct vec_u64 ids = { 0 };

        kept.signer = a.id;
        rc = meta_folder_list(v->meta, id_list_add, &ids);   /* no statement left open */
        for (size_t i = 0; rc == 0 && i < ids.n; i++)
            rc = signed_by_folder(&kept, ids.v[i]);
        vec_u64_free(&ids);
    }
    if (rc == 0)
        rc = meta_begin(v->meta);
    if (rc == 0) {
        rc = meta_account_update(v->meta, &a);
        /* the two sysadmins' co-signature clients check (cosign.h) */
        if (rc == 0 && attest)
            rc = cosign_store_attest(v, a.id, attest, attest_len);
        if (rc == 0 && retain)
            rc = registry_certify_retaining(v->meta, v->conf.vault_id, &a, kept.h, kept.n,
                                            v->priv, v->account.id);
        else if (rc == 0)
            rc = registry_certify_ex(v->meta, v->conf.vault_id, &a, NULL, &d, NULL, 0, v->priv,
                                     v->account.id);
        /* the role roster follows (roster.h): co-signed where it must be */
        if (rc == 0)
            rc = cosign_roster_step(v, a.id, a.roles, a.disabled, -1, attest, attest_len, 0,
                                    NULL);
        if (rc == 0)
            rc = vault_head_advance(v->meta, v->conf.vault_id, v->priv, v->account.id);
        rc = finish_txn(v->meta, rc);
    }
    if (rc == 0)
        rc = vault_anchor_head(v);
    if (rc == 0 && retain)
        printf("%s keeps the %zu grants and folder states it signed as a dataadmin; it can sign "
               "no new ones\n", a.name, kept.n);
    free(kept.h);
    meta_account_clear(&a);
    return rc;
}

static int account_change(struct vault *v, const char *name,
                          int (*apply)(struct meta_account *a, struct registry_details *d,
                                       const void *arg),
                          const void *arg, char was[ACCOUNT_STATE_MAX],
                          char now[ACCOUNT_STATE_MAX])
{
    return account_change_attested(v, name, apply, arg, NULL, 0, was, now);
}

static int apply_disabled(struct meta_account *a, struct registry_details *d, const void *arg)
{
    (void)d;
    a->disabled = *(const int *)arg;
    return 0;
}

static int apply_name(struct meta_account *a, struct registry_details *d, const void *arg)
{
    (void)d;
    snprintf(a->name, sizeof a->name, "%s", (const char *)arg);
    return 0;
}

static int apply_roles(struct meta_account *a, struct registry_details *d, const void *arg)
{
    (void)d;
    a->roles = *(const uint32_t *)arg;
    return registry_roles_check(a->roles);
}

/* Only the fields given change (NULL / GRANTS_EXPIRES_KEEP keep). */
static int apply_details(struct meta_account *a, struct registry_details *d, const void *arg)
{
    const struct grants_details_change *c = arg;

    (void)a;
    if (c->full_name)
        snprintf(d->full_name, sizeof d->full_name, "%s", c->full_name);
    if (c->email)
        snprintf(d->email, sizeof d->email, "%s", c->email);
    if (c->department)
        snprintf(d->department, sizeof d->department, "%s", c->department);
    if (c->expires != GRANTS_EXPIRES_KEEP)
        d->expires = c->expires;
    return 0;
}

int grants_account_disable(struct vault *v, const char *name, int disabled)
{
    char was[ACCOUNT_STATE_MAX] = "", now[ACCOUNT_STATE_MAX] = "", what[META_ACCOUNT_NAME_MAX + 40];
    const char *op = disabled ? "account-disable" : "account-enable";
    struct meta_account a = { 0 };
    struct registry_record r = { 0 };
    uint64_t cosigner = 0;
    uint8_t *attest = NULL;
    size_t attest_len = 0;
    int rc = sysadmin_target(v, name, &a, &r);

    /* Disabling or enabling a sysadmin or dataadmin changes the role
     * roster: two sysadmins while there are two (cosign.h). */
    if (rc == 0 && (a.roles & (ROLE_SYSADMIN | ROLE_DATAADMIN)) && !!a.disabled != !!disabled) {
        char key[64], content[96];

        snprintf(key, sizeof key, "disable.%" PRIu64, a.id);
        char on[40];

        cosign_roster_suffix(v, on, sizeof on);
        snprintf(content, sizeof content, "disabled=%d serial=%" PRIu64 "%s", !!disabled, r.serial,
                 on);
        account_state(&a, &r.details, was);
        a.disabled = disabled;
        account_state(&a, &r.details, now);
        rc = keeps_a_dataadmin_by_name(v, name, disabled);
        if (rc == 0)
            rc = cosign_gate_attest(v, key, content, &cosigner, &attest, &attest_len);
    }
    registry_record_clear(&r);
    meta_account_clear(&a);
    if (rc == COSIGN_PENDING) {
        snprintf(what, sizeof what, "%s-proposed", op);
        rc = audit_change(v, what, name, was, now, 0);
        return rc < 0 ? rc : COSIGN_PENDING;
    }
    snprintf(what, sizeof what, "%s", name);
    if (rc == 0 && cosigner) {
        struct registry_record c = { 0 };

        if (registry_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint, cosigner,
                            &c) == 0)
            snprintf(what, sizeof what, "%s (proposed by %s)", name, c.name);
        registry_record_clear(&c);
        pfs_err_clear();
    }
    if (rc == 0)
        rc = account_change_attested(v, name, apply_disabled, &disabled, attest, attest_len, was,
                                     now);
    free(attest);
    return audit_change(v, op, what, was[0] ? was : NULL, now[0] ? now : NULL, rc);
}

int grants_account_set_details(struct vault *v, const char *name,
                               const struct grants_details_change *c)
{
    char was[ACCOUNT_STATE_MAX] = "", now[ACCOUNT_STATE_MAX] = "";
    int rc = account_change(v, name, apply_details, c, was, now);

    return audit_change(v, "account-details", name, was[0] ? was : NULL, now[0] ? now : NULL,
                        rc);
}

int grants_account_rename(struct vault *v, const char *old_name, const char *new_name)
{
    struct meta_account existing;
    char what[2 * META_ACCOUNT_NAME_MAX + 8];
    int rc = name_ok(new_name);

    snprintf(what, sizeof what, "%s -> %s", old_name, new_name);
    if (rc == 0 && meta_account_get_by_name(v->meta, new_name, &existing) == 0) {
        meta_account_clear(&existing);
        rc = pfs_err(-EEXIST, "an account \"%s\" already exists", new_name);
    }
    char was[ACCOUNT_STATE_MAX] = "", now[ACCOUNT_STATE_MAX] = "";

    if (rc == 0)
        rc = account_change(v, old_name, apply_name, new_name, was, now);
    return audit_change(v, "account-rename", what, was[0] ? was : NULL, now[0] ? now : NULL, rc);
}

/* Giving or taking sysadmin or dataadmin needs a second sysadmin
 * (cosign.h): 0 apply (cosigner: the proposer confirmed, or 0),
 * COSIGN_PENDING stored as a proposal (was/now: the states for its event). */
static int role_cosigned(struct vault *v, const char *name, uint32_t roles, uint64_t *cosigner,
                         uint8_t **attest, size_t *attest_len,
                         char was[ACCOUNT_STATE_MAX], char now[ACCOUNT_STATE_MAX])
{
    struct meta_account a = { 0 };
    struct registry_record r = { 0 };
    char key[64], content[96];
    int rc = sysadmin_target(v, name, &a, &r);

    *cosigner = 0;
    if (rc == 0 && a.roles != roles &&
        ((a.roles | roles) & (ROLE_SYSADMIN | ROLE_DATAADMIN))) {
        snprintf(key, sizeof key, "role.%" PRIu64, a.id);
        /* bound to the record it changes: a proposal outlives no other change */
        char on[40];

        cosign_roster_suffix(v, on, sizeof on);
        snprintf(content, sizeof content, "roles=0x%x serial=%" PRIu64 "%s", roles, r.serial, on);
        account_state(&a, &r.details, was);
        a.roles = roles;
        account_state(&a, &r.details, now);
        rc = cosign_gate_attest(v, key, content, cosigner, attest, attest_len);
    }
    registry_record_clear(&r);
    meta_account_clear(&a);
    return rc;
}

int grants_account_set_roles(struct vault *v, const char *name, uint32_t roles)
{
    struct meta_account a;
    char what[2 * META_ACCOUNT_NAME_MAX + 120], rs[64];
    int rc;

    registry_roles_format(roles, rs, sizeof rs);
    snprintf(what, sizeof what, "%s roles=%s", name, rs);
    rc = registry_roles_check(roles);
    /* A sysadmin holds no envelopes: refuse the role while it holds any. */
    if (rc == 0 && (roles & ROLE_SYSADMIN) && meta_account_get_by_name(v->meta, name, &a) == 0) {
        struct grant_rows s = { 0 };

        rc = meta_envelope_list_account(v->meta, a.id, grant_rows_add, &s);
        if (rc == 0 && s.n)
            rc = pfs_err(-EINVAL, "\"%s\" still holds folder envelopes, and a sysadmin holds "
                         "none: revoke its grants first", name);
        grant_rows_free(&s);
        meta_account_clear(&a);
    }
    char was[ACCOUNT_STATE_MAX] = "", now[ACCOUNT_STATE_MAX] = "";
    uint64_t cosigner = 0;
    uint8_t *attest = NULL;
    size_t attest_len = 0;

    if (rc == 0)
        rc = role_cosigned(v, name, roles, &cosigner, &attest, &attest_len, was, now);
    /* Given alone, the sysadmin role needs the new sysadmin's endorsement,
     * which it signs when it enrols (registry.h): register a new account. */
    if (rc == 0 && !attest && (roles & ROLE_SYSADMIN) &&
        meta_account_get_by_name(v->meta, name, &a) == 0) {
        if (!(a.roles & ROLE_SYSADMIN))
            rc = pfs_err(-EINVAL, "\"%s\" would become a sysadmin given by one sysadmin alone, "
                         "and clients trust such a sysadmin only with the endorsement it signs "
                         "when it enrols: register a new account with account-add --role "
                         "sysadmin instead (or, with two sysadmins, make the change co-signed)",
                         name);
        meta_account_clear(&a);
    }
    if (rc == COSIGN_PENDING) {
        rc = audit_change(v, "role-change-proposed", what, was, now, 0);
        return rc < 0 ? rc : COSIGN_PENDING;
    }
    if (rc == 0 && cosigner) {
        struct registry_record c = { 0 };

        if (registry_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint, cosigner,
                            &c) == 0)
            snprintf(what, sizeof what, "%s roles=%s (proposed by %s)", name, rs, c.name);
        registry_record_clear(&c);
        pfs_err_clear();
    }
    if (rc == 0)
        rc = account_change_attested(v, name, apply_roles, &roles, attest, attest_len, was, now);
    free(attest);
    return audit_change(v, "role-change", what, was[0] ? was : NULL, now[0] ? now : NULL, rc);
}

/* ------------------------------------------------------------ upgrade */

/* The first signed state of a format-1 folder this account manages: its
 * newest key version the account holds, and every account with a verified
 * grant of that version that may hold data, with that grant's rights. */
static int first_state(struct vault *v, const struct vault_folder *f, struct folder_state *st)
{
    struct grant_rows s = { 0 };
    struct meta_folder mf;
    uint32_t kv = 0;
    int rc;

    for (uint32_t ver = 0; ver < f->nkeys; ver++)
        if (f->keys[ver])
            kv = ver;
    memset(st, 0, sizeof *st);
    st->folder_id = f->id;
    st->counter = 1;
    st->key_version = kv;
    rc = grant_rows_folder(v->meta, f->id, &s);
    for (size_t i = 0; rc == 0 && i < s.n; i++) {
        uint64_t id = s.e[i].account_id;
        uint32_t rights = 0;
        EVP_PKEY *key = NULL;

        if (s.e[i].key_version != kv || folder_state_rights(st, id))
            continue;
        if (member_grant(v, &s, id, kv, &rights) < 0 || member_key(v, id, rights, &key) < 0) {
            log_warning("folder %" PRIu64 ": account %" PRIu64 " is left out of the signed member "
                        "list: %s", f->id, id, pfs_err_msg());
            continue;
        }
        EVP_PKEY_free(key);
        rc = folder_state_set_member(st, id, rights);
    }
    if (rc == 0 && !(folder_state_rights(st, v->account.id) & RIGHT_MANAGE))
        rc = pfs_err(-EACCES, "\"%s\" holds no verified manage grant of key version %u",
                     v->account.name, kv);
    /* The folders row follows the signed state from now on. */
    if (rc == 0 && (rc = meta_folder_get(v->meta, f->id, &mf)) == 0 && mf.key_version != kv) {
        mf.key_version = kv;
        rc = meta_folder_update(v->meta, &mf);
    }
    grant_rows_free(&s);
    if (rc < 0)
        folder_state_clear(st);
    return rc;
}

int grants_upgrade_state(struct vault *v, unsigned *signed_folders, unsigned *left)
{
    uint8_t *head = NULL;
    size_t headlen = 0;
    int rc = 0;

    *signed_folders = *left = 0;
    for (size_t i = 0; rc == 0 && i < v->nfolders; i++) {
        struct vault_folder *f = &v->folders[i];
        struct folder_state st;

        if (folder_state_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, f->id, &st,
                              NULL, NULL) == 0) {
            folder_state_clear(&st);
            continue;
        }
        if (!(v->account.roles & ROLE_DATAADMIN) || !(f->rights & RIGHT_MANAGE)) {
            (*left)++;
            continue;
        }
        rc = meta_begin(v->meta);
        if (rc < 0)
            break;
        rc = first_state(v, f, &st);
        if (rc == 0)
            rc = folder_state_store(v->meta, v->conf.vault_id, v->priv, v->account.id, &st);
        if (rc == 0)
            rc = vault_head_advance(v->meta, v->conf.vault_id, v->priv, v->account.id);
        folder_state_clear(&st);
        rc = finish_txn(v->meta, rc);
        *signed_folders += rc == 0;
    }
    /* A vault whose folders this account does not manage still gets its
     * first head (over the registry), from a sysadmin or a dataadmin. */
    if (rc == 0 && meta_param_get(v->meta, VAULT_HEAD_PARAM, &head, &headlen) == -ENOENT) {
        rc = meta_begin(v->meta);
        if (rc == 0) {
            rc = vault_head_advance(v->meta, v->conf.vault_id, v->priv, v->account.id);
            rc = finish_txn(v->meta, rc);
        }
    }
    free(head);
    if (rc == 0)
        rc = meta_param_set(v->meta, "format_version", "2", 1);
    if (rc == 0)
        rc = vault_anchor_head(v);
    return audit_admin(v, "upgrade-signed-state", "/", rc);
}
