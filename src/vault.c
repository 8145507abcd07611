#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "enrol.h"
#include "endpoint.h"
#include "error.h"
#include "grants.h"
#include "secmem.h"
#include "keyring.h"
#include "audit_names.h"
#include "audit_proof.h"
#include "audit_ship.h"
#include "meta_backend.h"
#include "registry.h"
#include "roster.h"
#include "folder_state.h"
#include "log.h"
#include "vault.h"
#include "vault_head.h"

#define VAULT_PARAM_ID "vault_id"
#define VAULT_PARAM_NAME "vault_name"
#define FORMAT_VERSION "2"   /* 2: signed folder states and vault head */

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int path_exists(const char *p)
{
    struct stat st;

    return stat(p, &st) == 0;
}

/* -------------------------------------------------------------- unlock */

/* An array replaced by a grown copy while other threads may still read it:
 * freed at vault_close. */
static int retire_array(struct vault *v, void *old)
{
    void **retired = realloc(v->retired_folders, (v->nretired + 1) * sizeof *retired);

    if (!retired)
        return -ENOMEM;
    retired[v->nretired++] = old;
    v->retired_folders = retired;
    return 0;
}

static struct vault_folder *folder_slot(struct vault *v, uint64_t folder_id)
{
    struct vault_folder *f = vault_folder_by_id(v, folder_id), *grown;
    struct meta_folder mf;
    int rc;

    if (f)
        return f;
    rc = meta_folder_get(v->meta, folder_id, &mf);
    if (rc < 0)
        return NULL;
    /* Grown by copy, never realloc: a mount adds a folder (mkdir at its
     * root) while other threads hold pointers into the array, so the old
     * one stays allocated until vault_close, and the new one is published
     * before the count that makes its last entry reachable. */
    grown = malloc((v->nfolders + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    if (v->nfolders)
        memcpy(grown, v->folders, v->nfolders * sizeof *grown);
    f = &grown[v->nfolders];
    memset(f, 0, sizeof *f);
    f->id = mf.id;
    f->root_ino = mf.root_ino;
    f->cur_version = mf.key_version;
    if (v->folders && retire_array(v, v->folders) < 0) {
        free(grown);
        return NULL;
    }
    __atomic_store_n(&v->folders, grown, __ATOMIC_RELEASE);
    __atomic_store_n(&v->nfolders, v->nfolders + 1, __ATOMIC_RELEASE);
    return f;
}

static int add_folder_key(struct vault *v, struct vault_folder *f, uint32_t version,
                          const uint8_t fk[FOLDER_KEY_LEN])
{
    if (version >= f->nkeys) {
        /* Grown by copy like folder_slot: a mount loads a rotated key
         * version (vault_folder_load, a re-keyed file) while other threads
         * read the array; the old one stays allocated until vault_close. */
        struct folder_keys **grown = calloc(version + 1, sizeof *grown);

        if (!grown)
            return -ENOMEM;
        if (f->nkeys)
            memcpy(grown, f->keys, f->nkeys * sizeof *grown);
        if (f->keys && retire_array(v, f->keys) < 0) {
            free(grown);
            return -ENOMEM;
        }
        __atomic_store_n(&f->keys, grown, __ATOMIC_RELEASE);
        __atomic_store_n(&f->nkeys, version + 1, __ATOMIC_RELEASE);
    }
    if (f->keys[version])
        return 0;
    f->keys[version] = folder_keys_derive(fk, version);
    return f->keys[version] ? 0 : -ENOMEM;
}

/* Something in the metadata store was changed by hand: say so on stderr and
 * in the audit trail (event "tamper"), with what was detected. */
static void report_tamper(struct vault *v, uint64_t folder_id, const char *what)
{
    char path[64];

    log_warning("folder %llu: %s", (unsigned long long)folder_id, what);
    snprintf(path, sizeof path, "folder:%llu", (unsigned long long)folder_id);
    (void)vault_audit_failure(v, v->account.name, "tamper", path, -EBADMSG);
}

static int open_one_envelope(struct vault *v, const struct meta_envelope *e, uint32_t rights)
{
    struct vault_folder *f;
    const uint8_t *rsa;
    size_t rsalen;
    uint8_t *fk;
    int rc;

    /* The database operator writes these rows: only a grant signed by a
     * registered dataadmin who manages the folder is opened. */
    rc = grant_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint, e, &rsa, &rsalen);
    if (rc < 0) {
        log_warning("the envelope of folder %llu (key version %u) is ignored: its grant does not "
                    "verify: %s",
                    (unsigned long long)e->folder_id, e->key_version, pfs_err_msg());
        return 0;
    }
    fk = secmem_alloc(FOLDER_KEY_LEN);
    if (!fk)
        return -ENOMEM;
    rc = envelope_open(v->priv, v->conf.vault_id, e->folder_id, e->key_version, rsa, rsalen, fk);
    if (rc < 0) {
        /* A forged or damaged envelope must not stop the mount of the rest. */
        log_warning("the envelope of folder %llu (key version %u) does not open for this account "
                    "and is ignored: %s",
                    (unsigned long long)e->folder_id, e->key_version, pfs_err_msg());
        secmem_free(fk, FOLDER_KEY_LEN);
        return 0;
    }
    f = folder_slot(v, e->folder_id);
    if (!f) {
        secmem_free(fk, FOLDER_KEY_LEN);
        return -ENOMEM;
    }
    if (rights) {
        f->rights = rights;              /* from the signed folder state */
    } else if (e->key_version >= f->rights_version) {
        /* Format 1 (upgrade only): rights of the newest key version held. */
        f->rights = e->rights;
        f->rights_version = e->key_version;
    }
    rc = add_folder_key(v, f, e->key_version, fk);
    secmem_free(fk, FOLDER_KEY_LEN);
    return rc;
}

/* The account's rows of one folder, checked against the folder's signed
 * state: the account must be a member, rights and the key version for new
 * data come from the state, and rows of newer key versions than the state
 * names are ignored. */
static int open_folder(struct vault *v, const struct grant_rows *rows, uint64_t folder_id)
{
    struct folder_state st;
    struct meta_folder mf;
    uint32_t rights = 0;
    char what[768];
    int rc;

    rc = v->legacy ? -ENOENT
                   : folder_state_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                                       folder_id, &st, NULL, NULL);
    /* Format 1, or a folder no manager has upgraded yet: pactfs-admin
     * upgrade reads it the old way to sign its first state. */
    if (rc == -ENOENT && v->allow_legacy) {
        for (size_t i = 0; i < rows->n; i++)
            if (rows->e[i].folder_id == folder_id) {
                rc = open_one_envelope(v, &rows->e[i], 0);
                if (rc < 0)
                    return rc;
            }
        return 0;
    }
    if (rc == -ENOMEM)
        return rc;
    if (rc < 0) {
        snprintf(what, sizeof what, "left out: %s%s", pfs_err_msg(), rc == -ENOENT ?
                 " (a manager of the folder runs pactfs-admin upgrade)" : "");
        report_tamper(v, folder_id, what);
        return 0;
    }
    rights = folder_state_rights(&st, v->account.id);
    if (!rights) {
        snprintf(what, sizeof what, "this account's envelope rows are ignored: it is not a "
                 "member by the folder's signed state (counter %llu): revoked, or the rows "
                 "were planted or replayed", (unsigned long long)st.counter);
        report_tamper(v, folder_id, what);
        folder_state_clear(&st);
        return 0;
    }
    if (meta_folder_get(v->meta, folder_id, &mf) == 0 && mf.key_version != st.key_version) {
        snprintf(what, sizeof what, "the folders table names key version %u but the signed "
                 "folder state names %u: the row was altered; new data goes under version %u",
                 mf.key_version, st.key_version, st.key_version);
        report_tamper(v, folder_id, what);
    }
    for (size_t i = 0; i < rows->n; i++) {
        const struct meta_envelope *e = &rows->e[i];

        if (e->folder_id != folder_id)
            continue;
        if (e->key_version > st.key_version) {
            snprintf(what, sizeof what, "an envelope row for key version %u, newer than the "
                     "signed state's %u, is ignored", e->key_version, st.key_version);
            report_tamper(v, folder_id, what);
            continue;
        }
        rc = open_one_envelope(v, e, rights);
        if (rc < 0)
            break;
    }
    if (rc == 0) {
        struct vault_folder *f = vault_folder_by_id(v, folder_id);

        if (f) {
            f->cur_version = st.key_version;
            f->rights = rights;
        }
    }
    folder_state_clear(&st);
    return rc;
}

static int open_envelopes(struct vault *v)
{
    struct grant_rows rows = { 0 };
    int rc = grant_rows_account(v->meta, v->account.id, &rows);

    if (rc == 0 && rows.n && (v->account.roles & ROLE_SYSADMIN)) {
        log_warning("\"%s\" is a sysadmin and holds no folder keys; its %zu envelope(s) are "
                    "ignored", v->account.name, rows.n);
        grant_rows_free(&rows);
        return 0;
    }
    for (size_t i = 0; rc == 0 && i < rows.n; i++) {
        int seen = 0;

        for (size_t j = 0; j < i && !seen; j++)
            seen = rows.e[j].folder_id == rows.e[i].folder_id;
        if (!seen)
            rc = open_folder(v, &rows, rows.e[i].folder_id);
    }
    grant_rows_free(&rows);
    return rc;
}

/* A signed audit session for account_id (private key key), with its
 * registry proof built from the metadata store (src/audit_proof.h). */
int vault_audit_open(struct meta *m, const char *spool_path, const char *vault_id,
                     const char *root_fp, struct audit_identity *id, struct audit **out)
{
    char kid[AUDIT_NAMES_KID_HEX + 1], keep[1024];
    EVP_PKEY *names = NULL;
    int rc;

    /* A caller auditing a failure keeps its message in pfs_err: only a
     * failure here replaces it. */
    snprintf(keep, sizeof keep, "%s", pfs_err_msg());
    rc = root_fp ? audit_names_for_writer(m, vault_id, root_fp, spool_path, &names, kid) : 0;
    *out = NULL;
    if (rc < 0)
        return rc;
    if (keep[0])
        pfs_err(0, "%s", keep);
    else
        pfs_err_clear();
    id->names_pub = names;
    id->names_kid = names ? kid : NULL;
    rc = audit_open(spool_path, vault_id, id, out);
    id->names_pub = NULL;
    id->names_kid = NULL;
    EVP_PKEY_free(names);
    return rc;
}

static int audit_open_account(const char *spool_path, struct meta *m, const char *vault_id,
                              const char *root_fp, const char *account, uint64_t account_id,
                              EVP_PKEY *key, struct audit **out)
{
    struct audit_identity id = { .account = account, .account_id = account_id, .signer = key };
    char *proof = NULL;
    int rc = audit_proof_build(m, vault_id, root_fp, account_id, &proof);

    *out = NULL;
    if (rc < 0) {
        char keep[512];

        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        return pfs_err(rc, "cannot open an audit session for \"%s\": %s", account, keep);
    }
    id.proof = proof;
    rc = vault_audit_open(m, spool_path, vault_id, root_fp, &id, out);
    free(proof);
    return rc;
}

int vault_audit_failure(struct vault *v, const char *account, const char *op, const char *what,
                        int rc)
{
    struct audit *a = NULL;
    struct audit_ctx who = { getuid(), getpid() };
    struct audit_identity id = { .account = account };
    int arc;

    if (v->audit)
        return audit_event(v->audit, &who, op, what, rc, 0);
    /* No key was unlocked: an unsigned session (docs/format-audit.md). */
    arc = vault_audit_open(v->meta, v->conf.audit_spool, v->conf.vault_id,
                           v->conf.root_fingerprint, &id, &a);
    if (arc == 0) {
        arc = audit_event(a, &who, op, what, rc, 0);
        audit_close(a);
    }
    return arc;
}

static void audit_unlock_failure(struct vault *v, const char *account, int rc)
{
    vault_audit_failure(v, account, "unlock", "/", rc);
}

/* ------------------------------------------------------------ freshness */

static int anchor_put(struct vault *v, const struct vault_head *h, const uint8_t *raw,
                      size_t rawlen, int force)
{
    uint8_t hash[SHA256_LEN];
    int rc;

    if (!v->sp->ops->anchor_put)
        return 0;
    sha256(raw, rawlen, hash);
    rc = v->sp->ops->anchor_put(v->sp, v->conf.vault_id, h->counter, hash, raw, rawlen, force);
    return rc == -EOPNOTSUPP ? 0 : rc;
}

static int anchor_current(struct vault *v, int force)
{
    struct vault_head h;
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    int rc = vault_head_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &h, &raw,
                             &rawlen);

    if (rc == 0)
        rc = anchor_put(v, &h, raw, rawlen, force);
    vault_head_clear(&h);
    free(raw);
    return rc;
}

int vault_anchor_head(struct vault *v)
{
    int rc = anchor_current(v, 0);

    /* the roster's too; the change is committed, so a failure here (another
     * workstation anchored a newer step, an older key service refuses the
     * slot) is a warning: the next unlock anchors it */
    if (rc == 0) {
        int arc = vault_roster_anchor_put(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                                          v->sp, 0);

        if (arc < 0 && arc != -ESTALE)
            log_warning("cannot anchor the signed role roster: %s", pfs_err_msg());
    }
    return rc;
}

/* An older (-ESTALE) or altered (-EBADMSG) metadata found at unlock:
 * audited, and the message says what to do. */
static int refuse_unlock(struct vault *v, const char *account, int rc)
{
    char keep[1024];

    snprintf(keep, sizeof keep, "%s", pfs_err_msg());
    (void)vault_audit_failure(v, account, rc == -ESTALE ? "rollback" : "tamper", keep, rc);
    return pfs_err(rc, "%s; nothing was unlocked%s", keep, rc == -ESTALE ?
                   " (if this older metadata must be used, mount once with "
                   "--accept-metadata-rollback: it is audited)" : "");
}

/* The metadata's signed vault head must verify and be no older than the
 * one anchored outside the metadata store. */
static int check_freshness(struct vault *v, const char *account)
{
    struct vault_head h = { 0 };
    uint8_t *raw = NULL, *ablob = NULL, ahash[SHA256_LEN];
    size_t rawlen = 0, alen = 0;
    uint64_t acounter = 0;
    char source[512], keep[1024];
    int rc, arc = -EOPNOTSUPP;

    snprintf(source, sizeof source, "the %s share provider (%s)", v->sp->ops->name,
             v->conf.share_keydir ? v->conf.share_keydir : v->conf.keyd_url ?
             v->conf.keyd_url : "?");
    if (v->sp->ops->anchor_get)
        arc = v->sp->ops->anchor_get(v->sp, v->conf.vault_id, &acounter, ahash, &ablob, &alen);
    if (arc < 0 && arc != -ENOENT && arc != -EOPNOTSUPP) {
        free(ablob);
        return arc;
    }
    if (arc == -EOPNOTSUPP)
        log_warning("the %s share provider keeps no vault head anchor: a restored older copy of "
                    "the metadata would not be detected",
                    v->sp->ops->name);
    rc = vault_head_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &h, &raw,
                         &rawlen);
    if (rc == -ENOENT && arc == 0)
        rc = pfs_err(-ESTALE, "the metadata holds no signed vault head, but %s has seen head "
                     "%llu: the vault head was deleted or an old (format 1) copy of the "
                     "metadata was restored", source, (unsigned long long)acounter);
    else if (rc == -ENOENT && v->allow_legacy) {
        v->legacy = 1;
        free(ablob);
        return 0;
    } else if (rc == -ENOENT)
        rc = pfs_err(-EPROTONOSUPPORT, "the metadata of %s has no signed vault head (vault "
                     "format 1): a dataadmin runs pactfs-admin upgrade %s first",
                     v->conf.file, v->conf.file);
    if (rc == 0 && arc == 0)
        rc = vault_head_check_anchor(v->conf.vault_id, raw, rawlen, &h, acounter, ahash, ablob,
                                     alen, source);
    free(ablob);
    if (rc == -ESTALE && v->accept_rollback && raw) {
        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        log_warning("ACCEPTING OLDER METADATA (--accept-metadata-rollback): %s", keep);
        (void)vault_audit_failure(v, account, "rollback-accepted", keep, 0);
        rc = anchor_put(v, &h, raw, rawlen, 1);
        v->anchor_after_login = 2;
    } else if (rc == -ESTALE || rc == -EBADMSG) {
        rc = refuse_unlock(v, account, rc);
    } else if (rc == 0) {
        rc = anchor_put(v, &h, raw, rawlen, 0);
        v->anchor_after_login = 1;
    }
    vault_head_clear(&h);
    free(raw);
    return rc;
}

/* ------------------------------------------------------- role roster */

const struct roster_trust *vault_roster_trust(const struct vault *v, struct roster_trust *t)
{
    registry_roster_trust(t, v->meta, v->conf.vault_id, v->conf.root_fingerprint);
    return t;
}

static void roster_slot(const char *vault_id, char *out, size_t len)
{
    snprintf(out, len, "%s%s", vault_id, ROSTER_ANCHOR_SUFFIX);
}

int vault_roster_anchor_put(struct meta *m, const char *vault_id, const char *root_fp,
                            struct share_provider *sp, int force)
{
    struct roster_trust t;
    struct roster r;
    char slot[300];
    int rc;

    if (!sp->ops->anchor_put)
        return 0;
    registry_roster_trust(&t, m, vault_id, root_fp);
    rc = roster_load(&t, &r, NULL, NULL);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    roster_slot(vault_id, slot, sizeof slot);
    rc = sp->ops->anchor_put(sp, slot, r.counter, r.hash, NULL, 0, force);
    roster_clear(&r);
    return rc == -EOPNOTSUPP ? 0 : rc;
}

/* The signed role roster must verify and be no older than the step this
 * workstation (or the key service) has seen (roster.h). */
static int check_roster(struct vault *v, const char *account)
{
    struct roster_trust t;
    struct roster r = { 0 };
    uint8_t ahash[SHA256_LEN], *ablob = NULL;
    size_t alen = 0;
    uint64_t acounter = 0;
    char slot[300], source[512], keep[1024];
    int rc, arc = -EOPNOTSUPP;

    snprintf(source, sizeof source, "the %s share provider (%s)", v->sp->ops->name,
             v->conf.share_keydir ? v->conf.share_keydir : v->conf.keyd_url ?
             v->conf.keyd_url : "?");
    roster_slot(v->conf.vault_id, slot, sizeof slot);
    if (v->sp->ops->anchor_get)
        arc = v->sp->ops->anchor_get(v->sp, slot, &acounter, ahash, &ablob, &alen);
    free(ablob);
    if (arc < 0 && arc != -ENOENT && arc != -EOPNOTSUPP)
        return arc;
    rc = roster_load(vault_roster_trust(v, &t), &r, NULL, NULL);
    if (rc == -ENOENT && arc == 0)
        rc = pfs_err(-ESTALE, "the metadata holds no signed role roster, but %s has seen "
                     "roster step %" PRIu64 ": it was deleted from the metadata store",
                     source, acounter);
    else if (rc == -ENOENT)
        rc = 0;
    else if (rc == 0 && arc == 0)
        rc = roster_check_anchor(&t, &r, acounter, ahash, source);
    roster_clear(&r);
    if (rc == -ESTALE && v->accept_rollback) {
        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        log_warning("ACCEPTING AN OLDER ROLE ROSTER (--accept-metadata-rollback): %s", keep);
        (void)vault_audit_failure(v, account, "rollback-accepted", keep, 0);
        v->roster_force_anchor = 1;
        rc = 0;
    } else if (rc == -ESTALE || rc == -EBADMSG) {
        rc = refuse_unlock(v, account, rc);
    }
    return rc;
}

/* The account's registry record must verify up to the pinned root before
 * its roles or key are trusted; key_name is what its key was sealed under. */
static int check_registry(struct vault *v, const char *account, char *key_name, size_t len)
{
    struct registry_record r = { 0 };
    int rc = registry_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                             v->account.id, &r);

    if (rc < 0) {
        char keep[512];

        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        return pfs_err(rc, "account \"%s\" does not verify in the signed account registry, "
                       "nothing was unlocked: %s", account, keep);
    }
    snprintf(key_name, len, "%s", r.key_name);
    if (r.details.expires && (int64_t)time(NULL) > r.details.expires)
        rc = pfs_err(-EPERM, "the account \"%s\" expired (its registry record says so): ask "
                     "a system administrator", account);
    registry_record_clear(&r);
    return rc;
}

/* meta_set_presync: the audit spool durable before the metadata it describes. */
static int vault_audit_presync(void *arg)
{
    struct vault *v = arg;

    return v->audit ? audit_sync(v->audit) : 0;
}

int vault_unlock(struct vault *v, const char *account, const char *password)
{
    struct audit_ctx who = { getuid(), getpid() };
    char key_name[META_ACCOUNT_NAME_MAX + 1];
    unsigned retry_after = 0;
    int rc;

    rc = meta_account_get_by_name(v->meta, account, &v->account);
    if (rc == -ENOENT) {
        rc = pfs_err(-EKEYREJECTED, "no account \"%s\" in vault %s, or a wrong password",
                     account, v->conf.vault_name);
        audit_unlock_failure(v, account, rc);
        return rc;
    }
    if (rc < 0)
        return rc;
    rc = check_registry(v, account, key_name, sizeof key_name);
    if (rc < 0) {
        char keep[1024];

        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        audit_unlock_failure(v, account, rc);
        return pfs_err(rc, "%s", keep);
    }
    if (v->account.disabled) {
        rc = pfs_err(-EPERM, "the account \"%s\" is disabled: ask a system administrator",
                     account);
        audit_unlock_failure(v, account, rc);
        return rc;
    }
    rc = check_freshness(v, account);
    if (rc == 0)
        rc = check_roster(v, account);
    if (rc < 0)
        return rc;
    rc = keyring_unlock(v->conf.vault_id, key_name, password, v->account.sealed_key,
                        v->account.sealed_key_len, v->sp, &v->priv, &retry_after);
    if (rc < 0) {
        char keep[512];

        if (rc == -EKEYREJECTED)
            snprintf(keep, sizeof keep, "wrong password for account \"%s\" (nothing was "
                     "unlocked; check the password and try again)", account);
        else
            snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        audit_unlock_failure(v, account, rc);
        return pfs_err(rc, "%s", keep);
    }
    /* A key service accepts anchor updates from a logged-in account only:
     * what check_freshness could not anchor before the login, now (a
     * forced one is the audited override above; a race with another
     * writer's newer head is no reason to refuse this unlock). */
    if (v->anchor_after_login) {
        rc = anchor_current(v, v->anchor_after_login == 2);
        if (rc == -ESTALE && v->anchor_after_login == 1) {
            log_warning("%s", pfs_err_msg());
            rc = 0;
        }
        if (rc < 0)
            return rc;
    }
    /* the roster step verified above, anchored (after the login, as the head) */
    rc = vault_roster_anchor_put(v->meta, v->conf.vault_id, v->conf.root_fingerprint, v->sp,
                                 v->roster_force_anchor);
    if (rc < 0 && rc != -ESTALE)
        log_warning("cannot anchor the signed role roster: %s", pfs_err_msg());
    rc = audit_open_account(v->conf.audit_spool, v->meta, v->conf.vault_id,
                            v->conf.root_fingerprint, account, v->account.id, v->priv,
                            &v->audit);
    /* Fail closed, and say it was the audit trail (exit 15, not 13). */
    v->audit_failed = rc < 0;
    if (rc < 0)
        return rc;
    /* Write-ahead: nothing committed becomes durable before its events. */
    meta_set_presync(v->meta, vault_audit_presync, v);
    /* After the audit session opens: what open_envelopes finds altered in
     * the metadata is written to it ("tamper"). */
    rc = open_envelopes(v);
    if (rc < 0)
        return rc;
    rc = audit_event(v->audit, &who, "unlock", "/", 0, 0);
    v->audit_failed = rc < 0;
    return rc;
}

int vault_account_key_name(struct vault *v, const char *account, char *out, size_t outlen)
{
    struct registry_record r = { 0 };
    struct meta_account a;
    int rc = meta_account_get_by_name(v->meta, account, &a);

    if (rc < 0)
        return rc == -ENOENT ? pfs_err(-ENOENT, "no account \"%s\" in this vault", account) : rc;
    rc = registry_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint, a.id, &r);
    if (rc == 0)
        snprintf(out, outlen, "%s", r.key_name);
    registry_record_clear(&r);
    meta_account_clear(&a);
    return rc;
}

struct vault_folder *vault_folder_by_id(struct vault *v, uint64_t folder_id)
{
    for (size_t i = 0; i < v->nfolders; i++)
        if (v->folders[i].id == folder_id)
            return &v->folders[i];
    return NULL;
}

const struct folder_keys *vault_folder_keys(struct vault *v, uint64_t folder_id,
                                            uint32_t key_version)
{
    struct vault_folder *f = vault_folder_by_id(v, folder_id);

    if (!f || key_version >= f->nkeys)
        return NULL;
    return f->keys[key_version];
}

int vault_check_mount_role(struct vault *v, const char *mountpoint)
{
    struct audit_ctx who = { getuid(), getpid() };
    char roles[64];
    int rc, arc;

    if (v->account.roles & (ROLE_USER | ROLE_DATAADMIN))
        return 0;
    registry_roles_format(v->account.roles, roles, sizeof roles);
    arc = v->audit ? audit_event(v->audit, &who, "mount", mountpoint, -EACCES, 0) : 0;
    rc = pfs_err(-EACCES, "account \"%s\" has the role %s and no data role: only user and "
                 "dataadmin accounts mount contract folders (a backup account is a user with "
                 "read grants); an auditor verifies the trail with pactfs-admin audit-verify, a "
                 "sysadmin manages accounts with pactfs-admin; refused and audited",
                 v->account.name, roles);
    return arc < 0 ? arc : rc;
}

static int ship_at_close;   /* vault_ship_at_close */

void vault_ship_at_close(int on)
{
    ship_at_close = on;
}

void vault_close(struct vault *v)
{
    if (!v)
        return;
    if (v->audit) {
        audit_close(v->audit);   /* every event durable */
        v->audit = NULL;
    }
    if (v->meta)
        meta_set_presync(v->meta, NULL, NULL);
    /* after the session's closing checkpoint, so it leaves with the rest */
    if (ship_at_close && v->conf.audit_url && audit_ship_pending(&v->conf, 10000) < 0)
        log_warning("audit events not shipped yet (%s); they wait in %s for the next run or "
                    "'pactfs-admin audit-ship'", pfs_err_msg(),
                    v->conf.audit_spool);
    for (size_t i = 0; i < v->nfolders; i++) {
        for (uint32_t j = 0; j < v->folders[i].nkeys; j++)
            folder_keys_free(v->folders[i].keys[j]);
        free(v->folders[i].keys);
    }
    free(v->folders);
    for (size_t i = 0; i < v->nretired; i++)
        free(v->retired_folders[i]);
    free(v->retired_folders);
    vault_file_head_close(v);
    EVP_PKEY_free(v->priv);
    meta_account_clear(&v->account);
    share_provider_destroy(v->sp);
    if (v->ol)
        object_layer_free(v->ol);
    endpoint_set_free(v->eps);   /* closes the guards in v->stores */
    if (v->meta)
        meta_close(v->meta);
    if (v->locked)
        close(v->lock_fd);
    conf_free(&v->conf);
    free(v);
}

/* ------------------------------------------------------------- folders */

/* Create a folder, its top directory, its first key and the member's
 * envelope, in the caller's transaction. */
static int folder_create(struct meta *meta, const char *vault_id, EVP_PKEY *member,
                         uint64_t account_id, const char *name, uint32_t rights,
                         uint64_t *folder_id)
{
    uint8_t *fk = secmem_alloc(FOLDER_KEY_LEN);
    struct folder_keys *keys = NULL;
    struct meta_folder f = { .key_version = 1, .created = time(NULL) };
    struct meta_inode dir = { 0 };
    struct meta_envelope e = { 0 };
    uint8_t enc[NAME_MAX_ENC];
    uint8_t bind[DIRENT_BIND_LEN];
    size_t enclen = sizeof enc;
    uint64_t existing;
    int64_t t = now_ns();
    int rc;

    if (!fk)
        return -ENOMEM;
    rc = folder_key_generate(fk);
    if (rc < 0)
        goto out;
    keys = folder_keys_derive(fk, 1);
    if (!keys) {
        rc = -ENOMEM;
        goto out;
    }
    rc = name_encrypt(keys, META_ROOT_INO, name, strlen(name), enc, &enclen);
    if (rc < 0)
        goto out;
    /* A fresh key makes a collision with any existing entry all but
     * impossible; the check guards the index all the same. */
    if (meta_dirent_lookup(meta, META_ROOT_INO, enc, enclen, &existing) == 0) {
        rc = pfs_err(-EEXIST, "a folder named \"%s\" already exists", name);
        goto out;
    }
    rc = meta_folder_add(meta, &f);
    if (rc < 0)
        goto out;
    dir.folder_id = f.id;
    dir.mode = S_IFDIR | 0755;
    dir.uid = getuid();
    dir.gid = getgid();
    dir.nlink = 2;
    dir.atime_ns = dir.mtime_ns = dir.ctime_ns = t;
    dir.key_version = 1;
    rc = meta_inode_create(meta, &dir);
    if (rc < 0)
        goto out;
    f.root_ino = dir.ino;
    rc = meta_folder_update(meta, &f);
    if (rc < 0)
        goto out;
    /* The top directory's name is encrypted with the folder's own key under
     * the root: only members can even see that the folder exists. */
    rc = dirent_bind(keys, META_ROOT_INO, enc, enclen, dir.ino, dir.mode, bind);
    if (rc == 0)
        rc = meta_dirent_add(meta, META_ROOT_INO, enc, enclen, dir.ino, dir.mode, bind,
                             sizeof bind);
    if (rc < 0)
        goto out;
    e.folder_id = f.id;
    e.account_id = account_id;
    e.key_version = 1;
    e.rights = rights;
    rc = envelope_seal(member, vault_id, f.id, 1, fk, &e.wrapped, &e.wrapped_len);
    if (rc < 0)
        goto out;
    /* The creator grants itself: the base of the folder's chain of grants. */
    rc = grant_sign(member, vault_id, account_id, &e);
    if (rc == 0)
        rc = meta_envelope_put(meta, &e);
    free(e.wrapped);
    /* Its first signed state: key version 1, the creator as the manager
     * (this also signs the next vault head). */
    if (rc == 0) {
        struct folder_state st = { .folder_id = f.id, .counter = 1, .key_version = 1 };

        rc = folder_state_set_member(&st, account_id, rights);
        if (rc == 0)
            rc = folder_state_store(meta, vault_id, member, account_id, &st);
        if (rc == 0)
            rc = vault_head_advance(meta, vault_id, member, account_id);
        folder_state_clear(&st);
    }
    if (rc == 0 && folder_id)
        *folder_id = f.id;
out:
    folder_keys_free(keys);
    secmem_free(fk, FOLDER_KEY_LEN);
    return rc;
}

int vault_account_store_sealed(struct vault *v, const char *account, const uint8_t *sealed,
                               size_t sealed_len, const char *audit_op)
{
    struct meta_account a;
    struct audit *audit = v->audit;
    struct audit_ctx who = { getuid(), getpid() };
    uint8_t *copy = malloc(sealed_len);
    int rc, arc = 0;

    if (!copy)
        return -ENOMEM;
    memcpy(copy, sealed, sealed_len);
    rc = meta_account_get_by_name(v->meta, account, &a);
    if (rc < 0) {
        free(copy);
        return rc;
    }
    free(a.sealed_key);
    a.sealed_key = copy;
    a.sealed_key_len = sealed_len;
    rc = meta_account_update(v->meta, &a);
    meta_account_clear(&a);
    if (rc < 0)
        return pfs_err(rc, "the key service already took the change, but the new sealed key "
                       "could not be stored (%s): the account cannot unlock until this is "
                       "retried; keep the new password", pfs_err_msg());
    if (!audit) {
        struct audit_identity id = { .account = account };

        if (audit_open(v->conf.audit_spool, v->conf.vault_id, &id, &audit) < 0)
            return 0;
    }
    arc = audit_event(audit, &who, audit_op, account, 0, 0);
    if (audit != v->audit)
        audit_close(audit);
    return arc;
}

int vault_folder_create_txn(struct vault *v, const char *name, uint64_t *folder_id)
{
    if (!(v->account.roles & ROLE_DATAADMIN))
        return pfs_err(-EACCES, "creating a folder needs the dataadmin role");
    /* Names are encrypted per folder, so only folders this account holds can
     * be compared: it never sees two folders of the same name. */
    for (size_t i = 0; i < v->nfolders; i++) {
        const struct folder_keys *k = vault_folder_keys(v, v->folders[i].id,
                                                        v->folders[i].cur_version);
        uint8_t enc[NAME_MAX_ENC];
        size_t enclen = sizeof enc;
        uint64_t ino;

        if (k && name_encrypt(k, META_ROOT_INO, name, strlen(name), enc, &enclen) == 0 &&
            meta_dirent_lookup(v->meta, META_ROOT_INO, enc, enclen, &ino) == 0 &&
            ino == v->folders[i].root_ino)
            return pfs_err(-EEXIST, "a folder named \"%s\" already exists", name);
    }
    return folder_create(v->meta, v->conf.vault_id, v->priv, v->account.id, name,
                         RIGHT_READ | RIGHT_WRITE | RIGHT_MANAGE, folder_id);
}

int vault_folder_load(struct vault *v, uint64_t folder_id)
{
    struct grant_rows rows = { 0 };
    int rc = grant_rows_account(v->meta, v->account.id, &rows);

    if (rc == 0)
        rc = open_folder(v, &rows, folder_id);
    grant_rows_free(&rows);
    if (rc == 0 && !vault_folder_by_id(v, folder_id))
        rc = pfs_err(-EIO, "the envelope of the new folder %llu does not open",
                     (unsigned long long)folder_id);
    return rc;
}

int vault_folder_create(struct vault *v, const char *name, uint64_t *folder_id)
{
    struct audit_ctx who = { getuid(), getpid() };
    uint64_t id = 0;
    int rc;

    if (!(v->account.roles & ROLE_DATAADMIN)) {
        vault_audit_failure(v, v->account.name, "folder-create", name, -EACCES);
        return pfs_err(-EACCES, "creating a folder needs the dataadmin role");
    }
    rc = meta_begin(v->meta);
    if (rc < 0)
        return rc;
    rc = vault_folder_create_txn(v, name, &id);
    rc = rc < 0 ? (meta_rollback(v->meta), rc) : meta_commit(v->meta);
    if (rc == 0)
        rc = vault_anchor_head(v);
    if (v->audit) {
        int arc = audit_event(v->audit, &who, "folder-create", name, rc, 0);

        if (rc == 0)
            rc = arc;
    }
    if (rc == 0 && folder_id)
        *folder_id = id;
    return rc;
}

/* ---------------------------------------------------------------- init */

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);

    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int make_dir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return pfs_err(-errno, "cannot create %s: %s", path, strerror(errno));
    return 0;
}

static int refuse_existing_vault(const char *dir)
{
    static const char *const marks[] = { "pactfs.conf", "meta.db", "stores", "keys" };

    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
        char *p = join(dir, marks[i]);
        int found = p && path_exists(p);

        free(p);
        if (found)
            return pfs_err(-EEXIST, "%s already holds a vault (%s exists); nothing was changed. "
                           "Choose another directory", dir, marks[i]);
    }
    return 0;
}

/* The configuration of a fresh embedded vault, paths relative to DIR. */
static void init_conf(struct pactfs_conf *c, const struct vault_init_opts *o, const char *vault_id)
{
    static const char *const store_paths[] = { "stores/0", "stores/1", "stores/2", "stores/3",
        "stores/4", "stores/5", "stores/6", "stores/7", "stores/8", "stores/9", "stores/10",
        "stores/11", "stores/12", "stores/13", "stores/14", "stores/15" };

    conf_defaults(c);
    free(c->vault_name);
    c->vault_name = strdup(o->vault_name ? o->vault_name : "pactfs");
    free(c->vault_id);
    c->vault_id = strdup(vault_id);
    free(c->default_account);
    c->default_account = strdup(o->account);
    if (o->k)
        c->k = o->k;
    if (o->m || o->k)
        c->m = o->m;
    if (o->chunk_size)
        c->chunk_size = o->chunk_size;
    c->n_endpoints = c->k + c->m;
    for (unsigned i = 0; i < c->n_endpoints; i++) {
        c->endpoints[i].type = ENDPOINT_DIR;
        c->endpoints[i].path = strdup(store_paths[i]);
    }
    free(c->meta_backend);
    c->meta_backend = strdup("sqlite");
    free(c->meta_path);
    c->meta_path = strdup("meta.db");
    free(c->share_provider);
    c->share_provider = strdup("local");
    free(c->share_keydir);
    c->share_keydir = strdup("keys");
    free(c->audit_spool);
    c->audit_spool = strdup("audit.log");
    if (o->pg_conninfo) {
        free(c->meta_backend);
        c->meta_backend = strdup("postgresql");
        free(c->meta_path);
        c->meta_path = NULL;
        c->meta_conninfo = strdup(o->pg_conninfo);
    }
    if (o->keyd_url) {
        free(c->share_provider);
        c->share_provider = strdup("keyd");
        free(c->share_keydir);
        c->share_keydir = NULL;
        c->keyd_url = strdup(o->keyd_url);
        c->keyd_tls.ca_file = o->keyd_ca_file ? realpath(o->keyd_ca_file, NULL) : NULL;
        c->keyd_tls.cert_file = o->keyd_cert_file ? realpath(o->keyd_cert_file, NULL) : NULL;
        c->keyd_tls.key_file = o->keyd_key_file ? realpath(o->keyd_key_file, NULL) : NULL;
    }
    if (o->audit_url) {
        c->audit_url = strdup(o->audit_url);
        c->audit_tls.ca_file = o->audit_ca_file ? realpath(o->audit_ca_file, NULL) : NULL;
        c->audit_tls.cert_file = o->audit_cert_file ? realpath(o->audit_cert_file, NULL) : NULL;
        c->audit_tls.key_file = o->audit_key_file ? realpath(o->audit_key_file, NULL) : NULL;
    }
}

static int init_root_inode(struct meta *meta)
{
    struct meta_inode root = { .ino = META_ROOT_INO, .mode = S_IFDIR | 0755, .nlink = 2 };

    root.uid = getuid();
    root.gid = getgid();
    root.atime_ns = root.mtime_ns = root.ctime_ns = now_ns();
    return meta_inode_create(meta, &root);
}

/* Create an account (key pair sealed under password, share enrolled) and
 * its registry record signed by signer. */
static int init_account(struct meta *meta, const char *vault_id, struct share_provider *sp,
                        const struct vault_init_opts *o, const char *name, const char *password,
                        uint32_t roles, EVP_PKEY *signer, uint64_t signer_id,
                        EVP_PKEY **key, uint64_t *account_id)
{
    struct meta_account a = { .roles = roles, .created = time(NULL) };
    int rc;

    if (strlen(name) > META_ACCOUNT_NAME_MAX)
        return pfs_err(-EINVAL, "the account name is longer than %d characters",
                       META_ACCOUNT_NAME_MAX);
    snprintf(a.name, sizeof a.name, "%s", name);
    /* A key service enrols only with a code: init registers one of its own
     * for this account (it holds the admin credential) and uses it at once. */
    char code[ENROL_CODE_TEXT_MAX];
    struct enrol_signer code_signer = { vault_id, 0, code };

    rc = enrol_code_generate(code);
    if (rc == 0)
        rc = enrol_code_register(sp, vault_id, 0, name, code, (int64_t)time(NULL) + 600);
    enrol_signer_set(sp, &code_signer);
    if (rc == 0)
        rc = keyring_create(vault_id, name, password, o->kdf, o->rsa_bits ? o->rsa_bits : 3072,
                            sp, &a.pubkey, &a.pubkey_len, &a.sealed_key, &a.sealed_key_len, key);
    enrol_signer_set(sp, NULL);
    explicit_bzero(code, sizeof code);
    if (rc < 0)
        return rc;
    rc = meta_account_add(meta, &a);
    if (rc == 0)
        rc = registry_certify(meta, vault_id, &a, name, signer, signer_id);
    if (rc == 0)
        rc = vault_head_advance(meta, vault_id, signer, signer_id);
    *account_id = a.id;
    meta_account_clear(&a);
    return rc;
}

/* The first data account as every later one: the sysadmin registers it
 * with an enrolment code and the enrolment runs here on the person's
 * behalf with their password (docs/accounts.md: init is run by whoever
 * will own both accounts of a demo vault). */
static int init_enrolled_account(struct meta *meta, const char *vault_id,
                                 struct share_provider *sp, const struct vault_init_opts *o,
                                 EVP_PKEY *admin, uint64_t admin_id, EVP_PKEY **key,
                                 uint64_t *account_id)
{
    struct meta_account a = { .roles = ROLE_DATAADMIN | ROLE_USER, .created = time(NULL) };
    char code[ENROL_CODE_TEXT_MAX];
    uint8_t pub[ED25519_PUB_LEN];
    int rc;

    if (strlen(o->account) > META_ACCOUNT_NAME_MAX)
        return pfs_err(-EINVAL, "the account name is longer than %d characters",
                       META_ACCOUNT_NAME_MAX);
    snprintf(a.name, sizeof a.name, "%s", o->account);
    rc = meta_account_add(meta, &a);
    if (rc == 0)
        rc = enrol_code_generate(code);
    if (rc == 0)
        rc = enrol_code_public(vault_id, a.id, code, pub);
    if (rc == 0)
        rc = registry_certify_ex(meta, vault_id, &a, o->account, NULL, pub,
                                 (int64_t)time(NULL) + ENROL_DEFAULT_VALID_S, admin, admin_id);
    if (rc == 0)
        rc = vault_head_advance(meta, vault_id, admin, admin_id);
    if (rc == 0)
        rc = enrol_code_register(sp, vault_id, a.id, o->account, code,
                                 (int64_t)time(NULL) + ENROL_DEFAULT_VALID_S);
    if (rc == 0)
        rc = enrol_account_key(meta, vault_id, sp, a.id, o->account, code, o->password,
                                o->kdf, o->rsa_bits, key);
    explicit_bzero(code, sizeof code);
    *account_id = a.id;
    return rc;
}

/* The registry at init: a root key pair certifies the sysadmin, the
 * sysadmin certifies the data account.  The root private key is wiped
 * here (docs/accounts.md says why); its fingerprint goes into fp. */
struct init_accounts {
    char sysadmin_name[META_ACCOUNT_NAME_MAX + 8];
    int sysadmin_enrolled, data_enrolled;
    EVP_PKEY *data_key;
    uint64_t data_id;
    EVP_PKEY *admin_key;         /* the sysadmin's, for its audit session */
    uint64_t admin_id;
    char root_fp[REGISTRY_FP_HEX + 1];
};

static int init_registry(struct meta *meta, const char *vault_id, struct share_provider *sp,
                         const struct vault_init_opts *o, struct init_accounts *ia)
{
    const char *admin_pw = o->sysadmin_password ? o->sysadmin_password : o->password;
    EVP_PKEY *root = NULL, *admin = NULL;
    uint64_t admin_id = 0;
    int rc;

    snprintf(ia->sysadmin_name, sizeof ia->sysadmin_name, "%s%s",
             o->sysadmin ? o->sysadmin : o->account, o->sysadmin ? "" : "-admin");
    if (!strcmp(ia->sysadmin_name, o->account))
        return pfs_err(-EINVAL, "the sysadmin and the data account must be two accounts: "
                       "one account may not hold both sysadmin and dataadmin");
    root = rsa_generate(o->rsa_bits ? o->rsa_bits : 3072);
    if (!root)
        return pfs_err(-EIO, "cannot generate the vault root key");
    rc = registry_fingerprint_hex(root, ia->root_fp);
    if (rc == 0)
        rc = registry_root_store(meta, root);
    if (rc == 0) {
        rc = init_account(meta, vault_id, sp, o, ia->sysadmin_name, admin_pw, ROLE_SYSADMIN,
                          root, REGISTRY_ROOT_SIGNER, &admin, &admin_id);
        ia->sysadmin_enrolled = admin != NULL;
    }
    if (rc == 0) {
        rc = init_enrolled_account(meta, vault_id, sp, o, admin, admin_id, &ia->data_key,
                                   &ia->data_id);
        ia->data_enrolled = ia->data_key != NULL;
    }
    /* The first step of the role roster (roster.h): one sysadmin, one
     * dataadmin, signed by the sysadmin. */
    if (rc == 0) {
        struct roster r = { 0 };
        struct roster_trust t;

        registry_roster_trust(&t, meta, vault_id, ia->root_fp);
        rc = roster_next(NULL, admin_id, ROLE_SYSADMIN, 0, 1, &r, NULL);
        if (rc == 0)
            rc = roster_set(&r, ia->data_id, ROLE_DATAADMIN, 0);
        if (rc == 0)            /* and the keys they enrolled (roster format 2) */
            rc = roster_bind_keys(&t, NULL, &r);
        if (rc == 0)
            rc = roster_store(&t, &r, admin, admin_id, NULL, 0);
        roster_clear(&r);
    }
    ia->admin_key = admin;
    ia->admin_id = admin_id;
    EVP_PKEY_free(root);
    return rc;
}

/* Undo a failed init so it can simply be run again: remove what it made
 * (empty directories only; the metadata file it created). */
static void init_cleanup(const char *dir, const struct pactfs_conf *c, int made_sqlite)
{
    static const char *const meta_files[] = { "", "-wal", "-shm", "-journal" };
    char path[4096];

    if (made_sqlite)
        for (size_t i = 0; i < sizeof meta_files / sizeof meta_files[0]; i++) {
            snprintf(path, sizeof path, "%s/%s%s", dir, c->meta_path, meta_files[i]);
            unlink(path);
        }
    for (unsigned i = 0; i < c->n_endpoints; i++) {
        snprintf(path, sizeof path, "%s/%s/pa/" ENDPOINT_MARK_OBJECT, dir, c->endpoints[i].path);
        unlink(path);
        snprintf(path, sizeof path, "%s/%s/pa", dir, c->endpoints[i].path);
        rmdir(path);
        snprintf(path, sizeof path, "%s/%s", dir, c->endpoints[i].path);
        rmdir(path);
    }
    snprintf(path, sizeof path, "%s/stores", dir);
    rmdir(path);
    if (c->share_keydir) {
        snprintf(path, sizeof path, "%s/%s", dir, c->share_keydir);
        rmdir(path);
    }
}

/* The first vault head, anchored in the share provider. */
static int init_anchor(struct meta *meta, const char *vault_id, struct share_provider *sp)
{
    uint8_t *raw = NULL, hash[SHA256_LEN];
    size_t len = 0;
    struct vault_head h;
    const uint8_t *tbs, *sig;
    size_t tbslen, siglen;
    int rc = meta_param_get(meta, VAULT_HEAD_PARAM, &raw, &len);

    if (rc == 0)
        rc = vault_head_decode(vault_id, raw, len, &h, &tbs, &tbslen, &sig, &siglen);
    if (rc == 0) {
        sha256(raw, len, hash);
        rc = sp->ops->anchor_put ? sp->ops->anchor_put(sp, vault_id, h.counter, hash, raw, len, 0)
                                 : 0;
        if (rc == -EOPNOTSUPP)
            rc = 0;
        vault_head_clear(&h);
    }
    free(raw);
    return rc;
}

/* Each endpoint's signed marker (endpoint.h), by the sysadmin; from now on
 * this workstation requires them. */
static int init_markers(const char *dir, struct pactfs_conf *c, const char *vault_id,
                        EVP_PKEY *admin, uint64_t admin_id)
{
    int rc = 0;

    for (unsigned i = 0; rc == 0 && i < c->n_endpoints; i++) {
        struct store *st = NULL;
        char *p = join(dir, c->endpoints[i].path);

        rc = p ? store_dir_open(p, 0, &st) : -ENOMEM;
        if (rc == 0)
            rc = endpoint_mark_write(st, vault_id, i, c->n_endpoints, admin, admin_id);
        store_close(st);
        free(p);
    }
    c->endpoint_markers_required = rc == 0;
    return rc;
}

int vault_init(const struct vault_init_opts *o)
{
    struct pactfs_conf c;
    struct share_provider *sp = NULL;
    struct meta *meta = NULL;
    struct store *st = NULL;
    struct audit *audit = NULL;
    struct audit_ctx who = { getuid(), getpid() };
    struct init_accounts ia = { 0 };
    uint8_t raw_id[16];
    char vault_id[33], *p = NULL, *conf_path = NULL;
    int rc, made = 0;

    memset(&c, 0, sizeof c);
    rc = make_dir(o->dir, 0700);
    if (rc == 0)
        rc = refuse_existing_vault(o->dir);
    if (rc < 0)
        return rc;
    rc = crypto_random(raw_id, sizeof raw_id);
    if (rc < 0)
        return rc;
    hex_encode(raw_id, sizeof raw_id, vault_id);
    init_conf(&c, o, vault_id);
    if (c.k < 2 || c.k + c.m > EC_MAX_FRAGS) {
        conf_free(&c);
        return pfs_err(-EINVAL, "k must be at least 2 and k+m at most %d", EC_MAX_FRAGS);
    }

    /* The metadata store first: a database that already holds a vault
     * must refuse before anything is created. */
    if (o->pg_conninfo) {
        uint8_t *id = NULL;
        size_t idlen;

        char why[400];

        /* Checked before connecting: libpq would otherwise happily start
         * with an unverified (sslmode=prefer) connection. */
        if (conf_pg_conninfo_check(o->pg_conninfo, why, sizeof why) < 0)
            rc = pfs_err(-EINVAL, "--postgresql: %s", why);
        else
            rc = meta_open_pg(o->pg_conninfo, 1, &meta);
        if (rc == 0 && meta_param_get(meta, VAULT_PARAM_ID, &id, &idlen) == 0) {
            free(id);
            rc = pfs_err(-EEXIST, "the PostgreSQL database already holds a vault; give an "
                         "empty database");
        }
    } else {
        p = join(o->dir, c.meta_path);
        rc = p ? meta_open_sqlite(p, 1, &meta) : -ENOMEM;
        free(p);
    }
    if (rc < 0)
        goto out;
    made = 1;

    p = join(o->dir, "stores");
    rc = p ? make_dir(p, 0700) : -ENOMEM;
    free(p);
    for (unsigned i = 0; rc == 0 && i < c.n_endpoints; i++) {
        p = join(o->dir, c.endpoints[i].path);
        rc = p ? store_dir_open(p, 1, &st) : -ENOMEM;
        store_close(st);
        st = NULL;
        free(p);
    }
    if (rc < 0)
        goto out;
    if (o->keyd_url) {
        struct keyd_client_config kc = {
            .url = o->keyd_url,
            .ca_file = o->keyd_ca_file,
            .cert_file = o->keyd_cert_file,
            .key_file = o->keyd_key_file,
            .admin_token_file = o->keyd_admin_token_file,
        };

        rc = share_keyd_open(&kc, &sp);
    } else {
        p = join(o->dir, c.share_keydir);
        rc = p ? share_local_open(p, &sp) : -ENOMEM;
        free(p);
    }
    if (rc < 0)
        goto out;
    rc = meta_begin(meta);
    if (rc < 0)
        goto out;
    rc = meta_param_set(meta, VAULT_PARAM_ID, vault_id, strlen(vault_id));
    if (rc == 0)
        rc = meta_param_set(meta, VAULT_PARAM_NAME, c.vault_name, strlen(c.vault_name));
    if (rc == 0)
        rc = meta_param_set(meta, "format_version", FORMAT_VERSION, strlen(FORMAT_VERSION));
    if (rc == 0)
        rc = init_root_inode(meta);
    if (rc == 0)
        rc = init_registry(meta, vault_id, sp, o, &ia);
    if (rc == 0)
        rc = folder_create(meta, vault_id, ia.data_key, ia.data_id,
                           o->folder_name ? o->folder_name : "Contracts",
                           RIGHT_READ | RIGHT_WRITE | RIGHT_MANAGE, NULL);
    if (rc < 0) {
        char keep[512];

        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        meta_rollback(meta);
        /* The shares were enrolled before the failure: forget them again. */
        if (ia.data_enrolled)
            sp->ops->remove(sp, vault_id, o->account);
        if (ia.sysadmin_enrolled)
            sp->ops->remove(sp, vault_id, ia.sysadmin_name);
        pfs_err(rc, "%s", keep);
        goto out;
    }
    rc = meta_commit(meta);
    if (rc == 0)
        rc = init_anchor(meta, vault_id, sp);
    if (rc == 0 && vault_roster_anchor_put(meta, vault_id, ia.root_fp, sp, 0) < 0)
        log_warning("cannot anchor the signed role roster yet (%s): the first unlock anchors "
                    "it", pfs_err_msg());
    if (rc == 0 && ia.admin_key)
        rc = init_markers(o->dir, &c, vault_id, ia.admin_key, ia.admin_id);
    if (rc < 0)
        goto out;

    /* Two sessions: the sysadmin made the vault and its accounts, the data
     * account made its first folder and holds its envelope. */
    p = join(o->dir, c.audit_spool);
    rc = p ? audit_open_account(p, meta, vault_id, ia.root_fp, ia.sysadmin_name, ia.admin_id,
                                ia.admin_key, &audit) : -ENOMEM;
    if (rc == 0) {
        rc = audit_event(audit, &who, "vault-init", o->dir, 0, 0);
        if (rc == 0)
            rc = audit_event(audit, &who, "account-create", ia.sysadmin_name, 0, 0);
        if (rc == 0)
            rc = audit_event(audit, &who, "account-create", o->account, 0, 0);
        audit_close(audit);
    }
    if (rc == 0)
        rc = audit_open_account(p, meta, vault_id, ia.root_fp, o->account, ia.data_id,
                                ia.data_key, &audit);
    if (rc == 0) {
        const char *folder = o->folder_name ? o->folder_name : "Contracts";

        rc = audit_event(audit, &who, "folder-create", folder, 0, 0);
        if (rc == 0)
            rc = audit_event(audit, &who, "grant", folder, 0, 0);
        audit_close(audit);
    }
    free(p);
    p = NULL;
    if (rc < 0)
        goto out;
    /* The configuration comes last: its presence marks a complete vault. */
    c.root_fingerprint = strdup(ia.root_fp);
    conf_path = join(o->dir, "pactfs.conf");
    rc = !conf_path || !c.root_fingerprint ? -ENOMEM : conf_write(conf_path, &c);
out:
    free(conf_path);
    EVP_PKEY_free(ia.data_key);
    EVP_PKEY_free(ia.admin_key);
    if (meta)
        meta_close(meta);
    if (rc < 0 && made) {
        char keep[512];

        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        init_cleanup(o->dir, &c, !o->pg_conninfo);
        pfs_err(rc, "%s", keep);
    }
    share_provider_destroy(sp);
    conf_free(&c);
    return rc;
}
