#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "buf.h"
#include "cosign.h"
#include "error.h"
#include "registry.h"
#include "roster.h"

#define MAGIC "PFSQ"
#define ITEM_VERSION 1
#define SETTING_KEY "policy.cosign"

static int item_sign(struct vault *v, const char *key, const char *content, uint8_t **out,
                     size_t *outlen)
{
    struct wbuf b;
    uint8_t *tbs;
    size_t tbslen;
    int rc;

    wbuf_init(&b);
    wbuf_put_bytes(&b, MAGIC, 4);
    wbuf_put_u8(&b, ITEM_VERSION);
    wbuf_put_str(&b, v->conf.vault_id);
    wbuf_put_str(&b, key);
    wbuf_put_str(&b, content);
    wbuf_put_u64(&b, v->account.id);
    wbuf_put_u64(&b, (uint64_t)time(NULL));
    tbs = wbuf_steal(&b, &tbslen);
    if (!tbs)
        return -ENOMEM;
    rc = sig_sign_container(v->priv, tbs, tbslen, out, outlen);
    free(tbs);
    return rc;
}

static int item_put(struct vault *v, const char *param, const char *key, const char *content)
{
    uint8_t *out = NULL;
    size_t outlen = 0;
    int rc = item_sign(v, key, content, &out, &outlen);

    if (rc == 0)
        rc = meta_param_set(v->meta, param, out, outlen);
    free(out);
    return rc;
}

/* A stored item under param for key: -ENOENT if none (or emptied),
 * -EBADMSG if it does not verify (signer no enabled sysadmin, altered).
 * raw (optional) receives its bytes. */
static int item_get(struct vault *v, const char *param, const char *key,
                    struct registry_item *it, uint8_t **raw_out, size_t *raw_len)
{
    uint8_t *raw = NULL;
    size_t len = 0;
    int rc = meta_param_get(v->meta, param, &raw, &len);

    if (rc < 0 || len == 0) {
        free(raw);
        return rc < 0 && rc != -ENOENT ? rc : -ENOENT;
    }
    rc = registry_item_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint, raw, len,
                              key, it);
    if (rc == 0 && raw_out) {
        *raw_out = raw;
        *raw_len = len;
        raw = NULL;
    }
    free(raw);
    return rc < 0 ? -EBADMSG : 0;
}

struct admin_count {
    struct vault *v;
    unsigned n;
};

static int count_sysadmin(void *arg, const struct meta_account *a)
{
    struct admin_count *c = arg;
    struct registry_record r = { 0 };

    if ((a->roles & ROLE_SYSADMIN) && !a->disabled &&
        registry_verify(c->v->meta, c->v->conf.vault_id, c->v->conf.root_fingerprint, a->id,
                        &r) == 0)
        c->n++;
    registry_record_clear(&r);
    return 0;
}

int cosign_needed(struct vault *v, int *required, unsigned *sysadmins)
{
    struct admin_count c = { v, 0 };
    struct roster ro;
    struct roster_trust t;
    int rc;

    /* With a role roster, its setting and its enabled sysadmins count: a
     * sysadmin disabled or demoted in meta.db alone still counts. */
    rc = roster_load(vault_roster_trust(v, &t), &ro, NULL, NULL);
    if (rc == 0) {
        *required = ro.required;
        *sysadmins = roster_sysadmins(&ro);
        roster_clear(&ro);
        return 0;
    }
    if (rc != -ENOENT)
        return rc;

    /* On unless a verified setting says off and the two sysadmins who
     * switched it off signed beside it (as clients read it, registry.h):
     * the database operator or one sysadmin can only bring the default back. */
    *required = !registry_cosign_policy_off(v->meta, v->conf.vault_id, v->conf.root_fingerprint);
    rc = meta_account_list(v->meta, count_sysadmin, &c);
    pfs_err_clear();
    *sysadmins = c.n;
    return rc < 0 ? rc : 0;
}

int cosign_gate_attest(struct vault *v, const char *key, const char *content,
                       uint64_t *cosigner, uint8_t **attest, size_t *attest_len)
{
    struct registry_item it;
    char param[160];
    unsigned n = 0;
    int required = 1;
    uint8_t *prop = NULL;
    size_t proplen = 0;
    int rc = cosign_needed(v, &required, &n);

    *cosigner = 0;
    if (attest) {
        *attest = NULL;
        *attest_len = 0;
    }
    if (rc < 0)
        return rc;
    if (!required || n < 2)
        return 0;
    snprintf(param, sizeof param, "pending.%s", key);
    if (item_get(v, param, key, &it, &prop, &proplen) == 0 && !strcmp(it.content, content) &&
        it.signer != v->account.id && (int64_t)time(NULL) - it.time <= COSIGN_MAX_AGE_S) {
        *cosigner = it.signer;
        rc = 0;
        if (attest) {     /* the proposal and this sysadmin's confirmation */
            uint8_t *conf = NULL;
            size_t conflen = 0;
            struct wbuf b;

            rc = item_sign(v, key, content, &conf, &conflen);
            if (rc == 0) {
                wbuf_init(&b);
                wbuf_put_blob(&b, prop, proplen);
                wbuf_put_blob(&b, conf, conflen);
                *attest = wbuf_steal(&b, attest_len);
                rc = *attest ? 0 : -ENOMEM;
            }
            free(conf);
        }
        free(prop);
        return rc < 0 ? rc : meta_param_set(v->meta, param, "", 0);   /* used: it applies once */
    }
    free(prop);
    rc = item_put(v, param, key, content);
    return rc < 0 ? rc : COSIGN_PENDING;
}

int cosign_gate(struct vault *v, const char *key, const char *content, uint64_t *cosigner)
{
    return cosign_gate_attest(v, key, content, cosigner, NULL, NULL);
}

int cosign_store_attest(struct vault *v, uint64_t account_id, const uint8_t *attest,
                        size_t len)
{
    char param[64];

    snprintf(param, sizeof param, "registry.cosig.%" PRIu64, account_id);
    return meta_param_set(v->meta, param, attest ? attest : (const uint8_t *)"", attest ? len : 0);
}

int cosign_set_required(struct vault *v, int required, const uint8_t *attest, size_t len)
{
    int rc = item_put(v, SETTING_KEY, SETTING_KEY, required ? "required=yes" : "required=no");

    if (rc == 0)
        rc = meta_param_set(v->meta, SETTING_KEY ".cosig", attest ? attest : (const uint8_t *)"",
                            attest ? len : 0);
    return rc;
}

/* A roster as the audit trail records it before and after a change. */
#define ROSTER_STATE_MAX 900
static void roster_state(struct vault *v, const struct roster *r, char *out)
{
    size_t at;

    at = (size_t)snprintf(out, ROSTER_STATE_MAX, "step=%" PRIu64 " required=%s", r->counter,
                          r->required ? "yes" : "no");
    for (size_t i = 0; i < r->n && at < ROSTER_STATE_MAX; i++) {
        struct meta_account a;
        char rs[64], name[META_ACCOUNT_NAME_MAX + 24];

        if (meta_account_get(v->meta, r->e[i].id, &a) == 0) {
            snprintf(name, sizeof name, "%s", a.name);
            meta_account_clear(&a);
        } else {
            snprintf(name, sizeof name, "#%" PRIu64, r->e[i].id);
        }
        registry_roles_format(r->e[i].priv, rs, sizeof rs);
        at += (size_t)snprintf(out + at, ROSTER_STATE_MAX - at, " %s=%s%s", name, rs,
                               r->e[i].disabled ? "(disabled)" : "");
        if (r->version >= 2 && at < ROSTER_STATE_MAX) {   /* the key it binds, short */
            char fp[2 * SHA256_LEN + 1] = "none";

            if (memcmp(r->e[i].fp, (uint8_t[SHA256_LEN]){ 0 }, SHA256_LEN))
                hex_encode(r->e[i].fp, 8, fp);
            at += (size_t)snprintf(out + at, ROSTER_STATE_MAX - at, "(key %s)", fp);
        }
    }
    pfs_err_clear();
}

static int audit_roster_op(struct vault *v, const char *op, const struct roster *before,
                           const struct roster *after, const char *how, int rc)
{
    struct audit_ctx who = { getuid(), getpid() };
    char b[ROSTER_STATE_MAX] = "", a[ROSTER_STATE_MAX] = "", what[96];
    struct audit_detail d = { .before = before ? b : NULL, .after = a };
    int arc;

    char keep[1024];

    if (!v->audit)
        return rc;
    snprintf(keep, sizeof keep, "%s", pfs_err_msg());
    if (before)
        roster_state(v, before, b);
    roster_state(v, after, a);
    if (keep[0])
        pfs_err(0, "%s", keep);
    snprintf(what, sizeof what, "role roster step %" PRIu64 " (%s)", after->counter, how);
    arc = audit_event_detail(v->audit, &who, op, what, rc, 0, &d);
    return rc < 0 ? rc : arc;
}

static int audit_roster(struct vault *v, const struct roster *before, const struct roster *after,
                        const char *how, int rc)
{
    return audit_roster_op(v, "roster-change", before, after, how, rc);
}

int cosign_roster_step(struct vault *v, uint64_t id, uint32_t roles, int disabled, int required,
                       const uint8_t *attest, size_t attest_len, int resign, uint64_t *counter)
{
    struct roster cur, next = { 0 };
    int changed = 0, migrate = 0;
    struct roster_trust t;
    int rc = roster_load(vault_roster_trust(v, &t), &cur, NULL, NULL);

    if (counter)
        *counter = 0;
    if (rc == -ENOENT)
        return 0;               /* a vault without a roster yet (cosign-endorse makes it) */
    if (rc == 0)
        rc = roster_next(&cur, id, roles, disabled, required, &next, NULL);
    /* format 2 binds each account's key: the registry's now for a step
     * after format 1 or one sysadmin's roster, else only for new entries */
    if (rc == 0)
        rc = roster_bind_keys(&t, &cur, &next);
    if (rc == 0) {
        changed = roster_changes(&cur, &next) > 0;
        migrate = cur.version < next.version;
    }
    if (rc == 0 && (changed || resign || migrate)) {
        if (changed && roster_needs_two(&cur) && !attest)
            rc = pfs_err(-EPERM, "this change of the role roster needs a second sysadmin's "
                         "co-signature: propose it and have another sysadmin confirm it");
        if (rc == 0)
            rc = roster_store(&t, &next, v->priv, v->account.id, changed ? attest : NULL,
                              changed ? attest_len : 0);
        rc = audit_roster(v, &cur, &next, changed ? (attest ? "co-signed" : "one sysadmin") :
                          migrate ? "format 2: the keys the registry names bound" :
                          "re-signed", rc);
        if (rc == 0 && counter)
            *counter = next.counter;
    }
    roster_clear(&cur);
    roster_clear(&next);
    return rc;
}

/* The first roster step from the registry as it verifies now: every
 * account whose record verifies (co-signature rules of the vault without a
 * roster included) and holds sysadmin or dataadmin. */
struct first_ctx {
    struct vault *v;
    struct roster *r;
    int rc;
};

static int first_add(void *arg, const struct meta_account *a)
{
    struct first_ctx *c = arg;
    struct registry_record rec = { 0 };

    if (c->rc == 0 &&
        registry_verify_pending(c->v->meta, c->v->conf.vault_id, c->v->conf.root_fingerprint,
                                a->id, &rec) == 0 && (rec.roles & ROSTER_PRIV))
        c->rc = roster_set(c->r, a->id, rec.roles, rec.disabled);
    registry_record_clear(&rec);
    return 0;
}

static void account_name(struct vault *v, uint64_t id, char *out, size_t len)
{
    struct meta_account a;

    if (meta_account_get(v->meta, id, &a) == 0) {
        snprintf(out, len, "%s", a.name);
        meta_account_clear(&a);
    } else {
        snprintf(out, len, "#%" PRIu64, id);
        pfs_err_clear();
    }
}

/* cosign-endorse with a roster: a roster of format 1, or one a single
 * sysadmin changes alone, becomes format 2 binding the keys the registry
 * names now (one step, this sysadmin's signature).  A roster that needs two
 * sysadmins binds the new key of one account per run: proposed by the first
 * sysadmin (item "key.<id>", content "fp=<hex> roster=<step>") and bound by
 * a second one's run that finds the same key. */
static int endorse_keys(struct vault *v, const struct roster_trust *t, const struct roster *cur,
                        uint64_t *counter, char *note, size_t note_len)
{
    struct roster next = { 0 };
    uint8_t fp[SHA256_LEN], *attest = NULL;
    uint64_t id = 0, cosigner = 0, made = 0;
    size_t attest_len = 0;
    char key[48], content[2 * SHA256_LEN + 48], hex[2 * SHA256_LEN + 1], name[80], how[200];
    int rc;

    if (cur->version < 2 || !roster_needs_two(cur)) {
        rc = meta_begin(v->meta);
        if (rc == 0) {
            rc = cosign_roster_step(v, 0, 0, 0, -1, NULL, 0, 0, &made);
            if (rc == 0)
                rc = meta_commit(v->meta);
            else
                meta_rollback(v->meta);
        }
        if (rc == 0 && made)
            rc = vault_anchor_head(v);
        if (rc == 0 && made) {
            *counter = made;
            snprintf(note, note_len, " Step %" PRIu64 " binds the keys the registry names "
                     "now (role roster format 2).", made);
        }
        return rc;
    }
    if (!roster_stale_key(t, cur, &id, fp))
        return 0;
    account_name(v, id, name, sizeof name);
    hex_encode(fp, SHA256_LEN, hex);
    snprintf(key, sizeof key, "key.%" PRIu64, id);
    snprintf(content, sizeof content, "fp=%s roster=%" PRIu64, hex, cur->counter);
    rc = roster_next(cur, 0, 0, 0, -1, &next, NULL);
    if (rc == 0)
        rc = roster_set_key(&next, id, fp);
    snprintf(how, sizeof how, "key of %s: %s", name, hex);
    if (rc == 0)
        rc = cosign_gate_attest(v, key, content, &cosigner, &attest, &attest_len);
    if (rc == COSIGN_PENDING) {
        int arc = audit_roster_op(v, "roster-change-proposed", cur, &next, how, 0);

        snprintf(note, note_len, " Proposed to bind the new key of \"%s\" (fingerprint %s): "
                 "it counts once a second sysadmin, having checked that fingerprint with "
                 "\"%s\", runs cosign-endorse (within 7 days).", name, hex, name);
        roster_clear(&next);
        return arc < 0 ? arc : COSIGN_PENDING;
    }
    if (rc == 0)
        rc = meta_begin(v->meta);
    if (rc == 0) {
        rc = roster_store(t, &next, v->priv, v->account.id, attest, attest_len);
        if (rc == 0)
            rc = meta_commit(v->meta);
        else
            meta_rollback(v->meta);
        snprintf(how, sizeof how, "key of %s: %s, co-signed", name, hex);
        rc = audit_roster(v, cur, &next, how, rc);
    }
    if (rc == 0) {
        *counter = next.counter;
        snprintf(note, note_len, " Step %" PRIu64 " binds the new key of \"%s\" (fingerprint "
                 "%s), co-signed: it is trusted again.", next.counter, name, hex);
        rc = vault_anchor_head(v);
    }
    free(attest);
    roster_clear(&next);
    return rc;
}

int cosign_endorse(struct vault *v, size_t *endorsed, uint64_t *counter, char *note,
                   size_t note_len)
{
    struct roster cur, first = { 0 };
    struct roster_trust t;
    struct first_ctx fc = { v, &first, 0 };
    char hex[2 * SHA256_LEN + 1], content[2 * SHA256_LEN + 16];
    uint64_t cosigner = 0;
    uint8_t *attest = NULL;
    size_t attest_len = 0;
    int required, rc;

    *counter = 0;
    *endorsed = 0;
    note[0] = '\0';
    if (!(v->account.roles & ROLE_SYSADMIN))
        return pfs_err(-EACCES, "\"%s\" is not a sysadmin: only a sysadmin endorses the "
                       "registry", v->account.name);
    rc = roster_load(vault_roster_trust(v, &t), &cur, NULL, NULL);
    if (rc != -ENOENT) {
        /* A roster decides already; the endorsement is still refreshed for
         * older clients (registry.h, "Co-signed roles"), and the keys the
         * roster binds follow the registry (format 2). */
        if (rc == 0)
            *counter = cur.counter;
        if (rc == 0)
            rc = registry_endorse_current(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                                          v->priv, v->account.id, endorsed);
        if (rc == 0)
            rc = endorse_keys(v, &t, &cur, counter, note, note_len);
        roster_clear(&cur);
        return rc;
    }
    /* No roster yet (a vault from before it): the first step, from what
     * verifies now, co-signed by two sysadmins while there are two. */
    required = !registry_cosign_policy_off(v->meta, v->conf.vault_id, v->conf.root_fingerprint);
    rc = roster_next(NULL, 0, 0, 0, required, &first, NULL);
    if (rc == 0)
        rc = meta_account_list(v->meta, first_add, &fc);
    if (rc == 0)
        rc = fc.rc;
    if (rc == 0)
        rc = roster_bind_keys(&t, NULL, &first);
    pfs_err_clear();
    if (rc == 0 && !roster_find(&first, v->account.id))
        rc = pfs_err(-EBADMSG, "\"%s\" does not verify as a sysadmin itself: the registry must "
                     "verify before its roster is signed", v->account.name);
    if (rc == 0)
        rc = registry_endorse_current(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                                      v->priv, v->account.id, endorsed);
    if (rc == 0 && roster_sysadmins(&first) >= 2 && required) {
        roster_entries_hex(&first, hex);
        snprintf(content, sizeof content, "entries=%s", hex);
        rc = cosign_gate_attest(v, ROSTER_GENESIS_KEY, content, &cosigner, &attest,
                                &attest_len);
        if (rc == COSIGN_PENDING) {
            int arc = audit_roster_op(v, "roster-change-proposed", NULL, &first, "first step",
                                      0);

            roster_clear(&first);
            return arc < 0 ? arc : COSIGN_PENDING;
        }
    }
    if (rc == 0)
        rc = meta_begin(v->meta);
    if (rc == 0) {
        rc = roster_store(&t, &first, v->priv, v->account.id, attest, attest_len);
        if (rc == 0)
            rc = meta_commit(v->meta);
        else
            meta_rollback(v->meta);
        rc = audit_roster(v, NULL, &first, attest ? "first step, co-signed" :
                          "first step", rc);
    }
    if (rc == 0) {
        *counter = first.counter;
        rc = vault_anchor_head(v);           /* and the roster's first step */
    }
    free(attest);
    roster_clear(&first);
    return rc;
}

void cosign_roster_suffix(struct vault *v, char *out, size_t len)
{
    struct roster_trust t;
    struct roster r;

    out[0] = '\0';
    if (roster_load(vault_roster_trust(v, &t), &r, NULL, NULL) == 0)
        snprintf(out, len, " roster=%" PRIu64, r.counter);
    roster_clear(&r);
    pfs_err_clear();
}

int cosign_key_awaits(struct vault *v, uint64_t id, EVP_PKEY *key)
{
    struct roster_trust t;
    struct registry_record rec = { 0 };
    struct roster r;
    uint8_t fp[SHA256_LEN];
    const struct roster_entry *e;
    int awaits = 0;

    if (roster_load(vault_roster_trust(v, &t), &r, NULL, NULL) == 0 && r.version >= 2 &&
        roster_needs_two(&r) && (e = roster_find(&r, id)) != NULL &&
        rsa_fingerprint(key, fp) == 0 && memcmp(fp, e->fp, SHA256_LEN) &&
        registry_verify_plain(v->meta, v->conf.vault_id, v->conf.root_fingerprint, id,
                              &rec) == 0 && rec.pubkey_len) {
        uint8_t have[SHA256_LEN];

        sha256(rec.pubkey, rec.pubkey_len, have);
        awaits = !memcmp(have, fp, SHA256_LEN);
    }
    registry_record_clear(&rec);
    roster_clear(&r);
    pfs_err_clear();
    return awaits;
}

int cosign_enrol_bind(struct vault *v, uint64_t id, EVP_PKEY *key, char *before, char *after,
                      size_t len)
{
    struct roster_trust t;
    struct roster cur, next = { 0 };
    const struct roster_entry *e;
    char b[ROSTER_STATE_MAX], a[ROSTER_STATE_MAX];
    int rc = roster_load(vault_roster_trust(v, &t), &cur, NULL, NULL);

    if (rc == -ENOENT) {
        pfs_err_clear();
        return 0;
    }
    if (rc == 0 && (roster_needs_two(&cur) || !(e = roster_find(&cur, id)) ||
                    !(e->priv & ROLE_SYSADMIN) || e->disabled)) {
        roster_clear(&cur);
        return 0;
    }
    if (rc == 0)
        rc = roster_next(&cur, 0, 0, 0, -1, &next, NULL);
    if (rc == 0)
        rc = roster_bind_keys(&t, &cur, &next);
    if (rc == 0 && !roster_changes(&cur, &next) && cur.version == next.version)
        rc = 1;                                  /* bound already */
    if (rc == 0)
        rc = meta_begin(v->meta);
    if (rc == 0) {
        rc = roster_store(&t, &next, key, id, NULL, 0);
        if (rc == 0)
            rc = meta_commit(v->meta);
        else
            meta_rollback(v->meta);
    }
    if (rc == 0) {
        roster_state(v, &cur, b);
        roster_state(v, &next, a);
        snprintf(before, len, "%s", b);
        snprintf(after, len, "%s", a);
    }
    roster_clear(&cur);
    roster_clear(&next);
    return rc == 1 ? 0 : rc < 0 ? rc : 1;
}
