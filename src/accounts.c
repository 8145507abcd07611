#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "accounts.h"
#include "audit_proof.h"
#include "cosign.h"
#include "enrol.h"
#include "error.h"
#include "keyring.h"
#include "log.h"
#include "meta_backend.h"
#include "pwpolicy.h"

/* The account's record must be sysadmin-signed, registered for
 * self-enrolment, not enrolled yet, and code must be its live code. */
static int check_pending(struct vault *v, const char *name, const char *code,
                         struct meta_account *a, struct registry_record *r)
{
    uint8_t pub[ED25519_PUB_LEN];
    int rc = meta_account_get_by_name(v->meta, name, a);

    if (rc == -ENOENT)
        return pfs_err(-ENOENT, "no account \"%s\" in vault %s: a sysadmin registers it first "
                       "(pactfs-admin account-add)", name, v->conf.vault_name);
    if (rc < 0)
        return rc;
    rc = registry_verify_pending(v->meta, v->conf.vault_id, v->conf.root_fingerprint, a->id, r);
    if (rc < 0)
        return rc;
    if (!r->has_code)
        return pfs_err(-EINVAL, "account \"%s\" was not registered for self-enrolment", name);
    if (r->pubkey_len)
        return pfs_err(-EEXIST, "account \"%s\" is already enrolled and an enrolment code "
                       "works once. If you lost your password, ask a sysadmin to register "
                       "you again (pactfs-admin account-reenrol)", name);
    if ((int64_t)time(NULL) > r->code_expires)
        return pfs_err(-EACCES, "the enrolment code of \"%s\" has expired: ask a sysadmin for "
                       "a new one (pactfs-admin account-reenrol)", name);
    rc = enrol_code_public(v->conf.vault_id, a->id, code, pub);
    if (rc == 0 && crypto_memcmp(pub, r->code_pub, sizeof pub))
        rc = pfs_err(-EKEYREJECTED, "wrong enrolment code for account \"%s\"", name);
    return rc;
}

int accounts_audit(struct vault *v, const char *account, uint64_t account_id, EVP_PKEY *signer,
                   const char *op, const char *what, int rc)
{
    return accounts_audit_detail(v, account, account_id, signer, op, what, rc, NULL);
}

int accounts_audit_detail(struct vault *v, const char *account, uint64_t account_id,
                          EVP_PKEY *signer, const char *op, const char *what, int rc,
                          const struct audit_detail *d)
{
    struct audit_ctx who = { getuid(), getpid() };
    struct audit_identity id = { .account = account, .account_id = account_id };
    struct audit *audit = NULL;
    char keep[512], *proof = NULL;
    int arc = 0;

    snprintf(keep, sizeof keep, "%s", pfs_err_msg());
    /* Signed with the account's key when it is at hand (its registry proof
     * travels with the session), else an unsigned session. */
    if (signer) {
        arc = audit_proof_build(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                                account_id, &proof);
        id.signer = signer;
        id.proof = proof;
    }
    if (arc == 0)
        arc = vault_audit_open(v->meta, v->conf.audit_spool, v->conf.vault_id,
                               v->conf.root_fingerprint, &id, &audit);
    if (arc == 0)
        arc = audit_event_detail(audit, &who, op, what, rc, 0, d);
    audit_close(audit);
    free(proof);
    if (rc < 0)
        return pfs_err(rc, "%s", keep);
    return arc;
}

int accounts_enrol(struct vault *v, const char *name, const char *code, const char *password,
                   const struct pwkdf_params *kdf, char *fingerprint)
{
    struct registry_record r = { 0 };
    struct meta_account a = { 0 };
    struct pwpolicy policy;
    EVP_PKEY *key = NULL;
    char what[META_ACCOUNT_NAME_MAX + REGISTRY_FP_HEX + 32];
    int awaits = 0;
    int rc = check_pending(v, name, code, &a, &r);

    /* The policy before the slow key generation. */
    if (rc == 0)
        rc = pwpolicy_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &policy);
    if (rc == 0)
        rc = pwpolicy_check(&policy, password, NULL, name);
    if (rc == 0)
        rc = meta_begin(v->meta);
    if (rc == 0) {
        rc = enrol_account_key(v->meta, v->conf.vault_id, v->sp, a.id, r.key_name, code,
                               password, kdf, 0, &key);
        if (rc == 0)
            rc = pwpolicy_history_add(v->meta, v->conf.vault_id, a.id, key, password, &policy);
        /* A sysadmin vouches for the sysadmins and dataadmins it finds:
         * a role one sysadmin gives alone later is not on its list. */
        if (rc == 0 && (a.roles & ROLE_SYSADMIN))
            rc = registry_endorse_current(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                                          key, a.id, NULL);
        if (rc == 0) {
            rc = meta_commit(v->meta);
            if (rc < 0)
                v->sp->ops->remove(v->sp, v->conf.vault_id, r.key_name);
        } else {
            meta_rollback(v->meta);
        }
    }
    registry_record_clear(&r);
    /* What every client will check from now on: for a sysadmin or
     * dataadmin of a roster that needs two sysadmins, a new key counts
     * once two of them bound it (cosign-endorse): enrolled, not trusted yet. */
    if (rc == 0) {
        rc = registry_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint, a.id, NULL);
        if (rc < 0 && cosign_key_awaits(v, a.id, key)) {
            pfs_err_clear();
            rc = 0;
            awaits = 1;
        }
    }
    if (rc == 0)
        rc = registry_fingerprint_hex(key, fingerprint);
    if (rc == 0) {
        char after[REGISTRY_FP_HEX + 32], before[64] = "pending", code_id[17];
        struct audit_detail d = { .before = before, .after = after };
        uint8_t pub[ED25519_PUB_LEN], h[SHA256_LEN];

        /* the code's id as pactfs-keyd's trail names it (docs/keyd.md) */
        if (enrol_code_public(v->conf.vault_id, a.id, code, pub) == 0) {
            sha256(pub, sizeof pub, h);
            for (int i = 0; i < 8; i++)
                snprintf(code_id + 2 * i, 3, "%02x", h[i]);
            snprintf(before, sizeof before, "pending (code %s)", code_id);
        }
        snprintf(what, sizeof what, "%s key %s", name, fingerprint);
        snprintf(after, sizeof after, "enrolled key %s", fingerprint);
        /* signed with the new key once clients trust it */
        rc = accounts_audit_detail(v, name, a.id, awaits ? NULL : key, "account-enrol", what, 0,
                                   &d);
        /* a sysadmin of a roster one sysadmin changes alone binds its key
         * itself (roster format 2); else two sysadmins do (cosign-endorse) */
        if (rc == 0 && !awaits && (a.roles & ROLE_SYSADMIN)) {
            char rb[1024], ra[1024];
            struct audit_detail rd = { .before = rb, .after = ra };
            int brc = cosign_enrol_bind(v, a.id, key, rb, ra, sizeof rb);

            if (brc > 0)
                brc = accounts_audit_detail(v, name, a.id, key, "roster-change",
                                            "role roster (key of the enrolled sysadmin bound)",
                                            0, &rd);
            rc = brc < 0 ? brc : 0;
        }
    } else if (a.id) {
        accounts_audit(v, name, a.id, NULL, "account-enrol", name, rc);
    }
    EVP_PKEY_free(key);
    meta_account_clear(&a);
    return rc < 0 ? rc : awaits ? ACCOUNTS_KEY_AWAITS : 0;
}

int accounts_passwd(struct vault *v, const char *account, const char *old_password,
                    const char *new_password)
{
    char key_name[META_ACCOUNT_NAME_MAX + 1];
    struct meta_account a = { 0 };
    struct pwpolicy policy;
    EVP_PKEY *priv = NULL;
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    int rc = meta_account_get_by_name(v->meta, account, &a);

    if (rc == -ENOENT)
        return pfs_err(-ENOENT, "no account \"%s\" in this vault", account);
    if (rc < 0)
        return rc;
    /* The key stays sealed under the name it was created with (a rename
     * changes only the account's name). */
    rc = vault_account_key_name(v, account, key_name, sizeof key_name);
    if (rc == 0)
        rc = keyring_unlock(v->conf.vault_id, key_name, old_password, a.sealed_key,
                            a.sealed_key_len, v->sp, &priv, NULL);
    if (rc == 0) {
        rc = pwpolicy_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &policy);
        if (rc == 0)
            rc = pwpolicy_check(&policy, new_password, old_password, account);
        if (rc == 0)
            rc = pwpolicy_history_check(v->meta, v->conf.vault_id, a.id, priv, new_password);
    }
    if (rc == 0)
        rc = keyring_change_password(v->conf.vault_id, key_name, old_password, new_password,
                                     NULL, a.sealed_key, a.sealed_key_len, v->sp, &sealed,
                                     &sealed_len);
    if (rc == 0)
        rc = vault_account_store_sealed(v, account, sealed, sealed_len, "password-change");
    if (rc == 0 && pwpolicy_history_add(v->meta, v->conf.vault_id, a.id, priv, new_password,
                                        &policy) < 0)
        log_warning("the password was changed but could not be added to the reuse history: %s",
                    pfs_err_msg());
    free(sealed);
    EVP_PKEY_free(priv);
    meta_account_clear(&a);
    return rc;
}
