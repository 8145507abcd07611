#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "folder_state.h"
#include "grants.h"
#include "registry.h"
#include "review.h"

static json_object *iso_time(int64_t t)
{
    char buf[32];
    time_t tt = (time_t)t;
    struct tm tm;

    if (t <= 0 || !gmtime_r(&tt, &tm))
        return NULL;
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_object_new_string(buf);
}

static void put(json_object *o, const char *k, json_object *v)
{
    json_object_object_add(o, k, v);
}

static json_object *str(const char *s)
{
    return json_object_new_string(s);
}

static json_object *roles_array(uint32_t roles)
{
    char list[64], *save = NULL;
    json_object *a = json_object_new_array();

    registry_roles_format(roles, list, sizeof list);
    for (char *w = strtok_r(list, ",", &save); w; w = strtok_r(NULL, ",", &save))
        json_object_array_add(a, str(w));
    return a;
}

/* The name of a verified account, or a note that it does not verify. */
static json_object *account_name(struct meta *m, const char *vault_id, const char *root_fp,
                                 uint64_t id)
{
    struct registry_record r = { 0 };
    char buf[META_ACCOUNT_NAME_MAX + 48];

    if (id == REGISTRY_ROOT_SIGNER)
        return str("(vault root key)");
    if (registry_verify_pending(m, vault_id, root_fp, id, &r) == 0)
        snprintf(buf, sizeof buf, "%s", r.name);
    else
        snprintf(buf, sizeof buf, "(account %" PRIu64 ", not verified)", id);
    registry_record_clear(&r);
    pfs_err_clear();
    return str(buf);
}

static const char *status_of(const struct registry_record *r)
{
    if (r->disabled)
        return "disabled";
    if (!r->pubkey_len)
        return "pending";
    if (r->details.expires && (int64_t)time(NULL) > r->details.expires)
        return "expired";
    return "enabled";
}

static json_object *grant_object(struct meta *m, const char *vault_id, const char *root_fp,
                                 const struct meta_envelope *e)
{
    json_object *g = json_object_new_object();
    char rights[40];
    int64_t when = 0;

    grants_rights_format(e->rights, rights, sizeof rights);
    put(g, "folder_id", json_object_new_int64((int64_t)e->folder_id));
    put(g, "key_version", json_object_new_int64(e->key_version));
    put(g, "rights", str(rights));
    put(g, "granted_by", account_name(m, vault_id, root_fp, e->granted_by));
    grant_envelope_time(e->wrapped, e->wrapped_len, &when);
    put(g, "granted_at", iso_time(when));
    return g;
}

/* The account's verified grants; rows that do not verify are counted. */
static void account_grants(struct meta *m, const char *vault_id, const char *root_fp,
                           uint64_t account_id, json_object *o)
{
    struct grant_rows rows = { 0 };
    json_object *list = json_object_new_array();
    unsigned ignored = 0;

    if (grant_rows_account(m, account_id, &rows) == 0)
        for (size_t i = 0; i < rows.n; i++) {
            const struct meta_envelope *e = &rows.e[i];
            struct folder_state st;
            const uint8_t *rsa;
            size_t rsalen;
            json_object *g;

            if (grant_verify(m, vault_id, root_fp, e, &rsa, &rsalen) < 0) {
                ignored++;
                continue;
            }
            g = grant_object(m, vault_id, root_fp, e);
            /* Rights count only as the folder's signed state says. */
            if (folder_state_load(m, vault_id, root_fp, e->folder_id, &st, NULL, NULL) == 0) {
                char rights[40];

                grants_rights_format(folder_state_rights(&st, account_id), rights,
                                     sizeof rights);
                put(g, "member", json_object_new_boolean(folder_state_rights(&st, account_id)
                                                         != 0));
                put(g, "state_rights", str(rights));
                folder_state_clear(&st);
            } else {
                put(g, "member", json_object_new_boolean(0));
            }
            json_object_array_add(list, g);
        }
    grant_rows_free(&rows);
    pfs_err_clear();
    put(o, "grants", list);
    put(o, "unverified_rows", json_object_new_int(ignored));
}

static void enrolment(const struct registry_record *r, json_object *o)
{
    json_object *en = json_object_new_object();

    if (r->pubkey_len) {
        EVP_PKEY *k = rsa_public_from_der(r->pubkey, r->pubkey_len);
        char fp[REGISTRY_FP_HEX + 1];

        put(en, "state", str(r->enrolled ? "enrolled" : "registered with a key (before "
                             "self-enrolment)"));
        put(en, "enrolled_at", iso_time(r->enrolled_at));
        if (k && registry_fingerprint_hex(k, fp) == 0)
            put(en, "key_fingerprint", str(fp));
        EVP_PKEY_free(k);
    } else {
        put(en, "state", str("pending"));
        put(en, "code_valid_until", iso_time(r->code_expires));
    }
    put(o, "enrolment", en);
}

int review_account(struct meta *m, const char *vault_id, const char *root_fp, const char *name,
                   json_object **out)
{
    struct meta_account a;
    struct registry_record r = { 0 };
    json_object *o, *rec;
    int rc = meta_account_get_by_name(m, name, &a);

    if (rc == -ENOENT)
        return pfs_err(-ENOENT, "no account \"%s\"", name);
    if (rc < 0)
        return rc;
    o = json_object_new_object();
    put(o, "account", str(a.name));
    put(o, "id", json_object_new_int64((int64_t)a.id));
    rc = registry_verify_pending(m, vault_id, root_fp, a.id, &r);
    put(o, "verified", json_object_new_boolean(rc == 0));
    if (rc < 0) {
        put(o, "problem", str(pfs_err_msg()));
        pfs_err_clear();
    } else {
        put(o, "roles", roles_array(r.roles));
        put(o, "status", str(status_of(&r)));
        put(o, "full_name", str(r.details.full_name));
        put(o, "email", str(r.details.email));
        put(o, "department", str(r.details.department));
        put(o, "expires", iso_time(r.details.expires));
        put(o, "key_name", str(r.key_name));
        enrolment(&r, o);
        rec = json_object_new_object();
        put(rec, "serial", json_object_new_int64((int64_t)r.serial));
        put(rec, "version", json_object_new_int(r.version));
        put(rec, "signed_by", account_name(m, vault_id, root_fp, r.signer_id));
        put(rec, "keeps_signatures_from_dataadmin_role",
            json_object_new_boolean(r.has_retained));
        put(o, "record", rec);
        account_grants(m, vault_id, root_fp, a.id, o);
    }
    registry_record_clear(&r);
    meta_account_clear(&a);
    *out = o;
    return 0;
}

/* The member's verified grant: of the state's key version, else its newest. */
static const struct meta_envelope *member_grant(struct meta *m, const char *vault_id,
                                                const char *root_fp,
                                                const struct grant_rows *rows,
                                                uint64_t account_id, uint32_t version)
{
    const struct meta_envelope *best = NULL;

    for (size_t i = 0; i < rows->n; i++) {
        const struct meta_envelope *e = &rows->e[i];
        const uint8_t *rsa;
        size_t rsalen;

        if (e->account_id != account_id ||
            grant_verify(m, vault_id, root_fp, e, &rsa, &rsalen) < 0)
            continue;
        if (!best || e->key_version == version ||
            (best->key_version != version && e->key_version > best->key_version))
            best = e;
    }
    pfs_err_clear();
    return best;
}

int review_folder(struct meta *m, const char *vault_id, const char *root_fp, uint64_t folder_id,
                  const char *folder_name, json_object **out)
{
    struct folder_state st;
    struct grant_rows rows = { 0 };
    json_object *o, *list, *state;
    int rc = folder_state_load(m, vault_id, root_fp, folder_id, &st, NULL, NULL);

    if (rc < 0)
        return rc;
    rc = grant_rows_folder(m, folder_id, &rows);
    if (rc < 0) {
        folder_state_clear(&st);
        return rc;
    }
    o = json_object_new_object();
    put(o, "folder", str(folder_name));
    put(o, "id", json_object_new_int64((int64_t)folder_id));
    state = json_object_new_object();
    put(state, "counter", json_object_new_int64((int64_t)st.counter));
    put(state, "key_version", json_object_new_int64(st.key_version));
    put(state, "signed_by", account_name(m, vault_id, root_fp, st.signer_id));
    put(o, "state", state);
    list = json_object_new_array();
    for (size_t i = 0; i < st.nmembers; i++) {
        const struct folder_member *fm = &st.members[i];
        const struct meta_envelope *e = member_grant(m, vault_id, root_fp, &rows,
                                                     fm->account_id, st.key_version);
        struct registry_record r = { 0 };
        json_object *mo = json_object_new_object();
        char rights[40];
        int64_t when = 0;

        grants_rights_format(fm->rights, rights, sizeof rights);
        put(mo, "account", account_name(m, vault_id, root_fp, fm->account_id));
        put(mo, "rights", str(rights));
        if (registry_verify_pending(m, vault_id, root_fp, fm->account_id, &r) == 0)
            put(mo, "status", str(status_of(&r)));
        registry_record_clear(&r);
        pfs_err_clear();
        if (e) {
            put(mo, "granted_by", account_name(m, vault_id, root_fp, e->granted_by));
            grant_envelope_time(e->wrapped, e->wrapped_len, &when);
            put(mo, "granted_at", iso_time(when));
            put(mo, "key_version", json_object_new_int64(e->key_version));
        } else {
            put(mo, "granted_by", NULL);
            put(mo, "note", str("no verified envelope: the member cannot open the folder"));
        }
        json_object_array_add(list, mo);
    }
    put(o, "members", list);
    grant_rows_free(&rows);
    folder_state_clear(&st);
    *out = o;
    return 0;
}

/* ---- text ---- */

static const char *field(json_object *o, const char *k)
{
    json_object *v;

    if (!json_object_object_get_ex(o, k, &v) || !v)
        return NULL;
    return json_object_get_string(v);
}

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

void review_print_account(json_object *o, FILE *out)
{
    json_object *en, *rec, *grants, *roles;
    char rl[80] = "";

    fprintf(out, "account     %s (id %s)\n", field(o, "account"), field(o, "id"));
    if (!json_object_get_boolean(json_object_object_get(o, "verified"))) {
        fprintf(out, "registry    NOT VERIFIED: %s\n", or_dash(field(o, "problem")));
        return;
    }
    roles = json_object_object_get(o, "roles");
    for (size_t i = 0; i < json_object_array_length(roles); i++)
        snprintf(rl + strlen(rl), sizeof rl - strlen(rl), "%s%s", i ? "," : "",
                 json_object_get_string(json_object_array_get_idx(roles, i)));
    fprintf(out, "roles       %s\nstatus      %s\n", rl, field(o, "status"));
    fprintf(out, "full name   %s\ne-mail      %s\ndepartment  %s\nexpires     %s\n",
            or_dash(field(o, "full_name")), or_dash(field(o, "email")),
            or_dash(field(o, "department")), field(o, "expires") ? field(o, "expires") : "never");
    en = json_object_object_get(o, "enrolment");
    if (!strcmp(field(en, "state"), "pending"))
        fprintf(out, "enrolment   pending (code valid until %s)\n",
                or_dash(field(en, "code_valid_until")));
    else
        fprintf(out, "enrolment   %s %s\nkey         SHA-256 %s\n", field(en, "state"),
                or_dash(field(en, "enrolled_at")), or_dash(field(en, "key_fingerprint")));
    rec = json_object_object_get(o, "record");
    fprintf(out, "registry    verified, serial %s, signed by %s%s\n", field(rec, "serial"),
            field(rec, "signed_by"),
            json_object_get_boolean(json_object_object_get(rec,
                "keeps_signatures_from_dataadmin_role")) ?
            "; keeps the grants it signed as a dataadmin" : "");
    grants = json_object_object_get(o, "grants");
    fprintf(out, "grants      %zu verified", json_object_array_length(grants));
    if (json_object_get_int(json_object_object_get(o, "unverified_rows")))
        fprintf(out, ", %s row(s) that do not verify (ignored)", field(o, "unverified_rows"));
    fprintf(out, "\n");
    for (size_t i = 0; i < json_object_array_length(grants); i++) {
        json_object *g = json_object_array_get_idx(grants, i);

        fprintf(out, "  folder #%s key v%s: %s%s, granted by %s at %s\n", field(g, "folder_id"),
                field(g, "key_version"), field(g, "rights"),
                json_object_get_boolean(json_object_object_get(g, "member")) ? "" :
                " (not a member by the folder's signed state: no access)",
                field(g, "granted_by"), or_dash(field(g, "granted_at")));
    }
}

void review_print_folder(json_object *o, FILE *out)
{
    json_object *st = json_object_object_get(o, "state");
    json_object *members = json_object_object_get(o, "members");

    fprintf(out, "folder  %s (id %s), signed state %s by %s, key version %s\n",
            field(o, "folder"), field(o, "id"), field(st, "counter"), field(st, "signed_by"),
            field(st, "key_version"));
    fprintf(out, "%-24s %-18s %-9s %-24s %s\n", "MEMBER", "RIGHTS", "STATUS", "GRANTED BY",
            "GRANTED AT");
    for (size_t i = 0; i < json_object_array_length(members); i++) {
        json_object *m = json_object_array_get_idx(members, i);

        fprintf(out, "%-24s %-18s %-9s %-24s %s\n", field(m, "account"), field(m, "rights"),
                or_dash(field(m, "status")), or_dash(field(m, "granted_by")),
                field(m, "note") ? field(m, "note") : or_dash(field(m, "granted_at")));
    }
}
