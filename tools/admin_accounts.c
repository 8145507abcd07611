/* pactfs-admin: accounts: the list and the access review, registering,
 * enrolling and changing an account, the password and co-signature policies
 * (admin.h). */
#include "config.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "accounts.h"
#include "admin.h"
#include "audit.h"
#include "cli.h"
#include "cosign.h"
#include "roster.h"
#include "error.h"
#include "exitcodes.h"
#include "grants.h"
#include "pwpolicy.h"
#include "registry.h"
#include "review.h"
#include "secmem.h"
#include "vault.h"

/* "YYYY-MM-DD" (end of that day, UTC) or "never" into unix seconds. */
static int parse_expiry(const char *s, int64_t *out)
{
    struct tm tm = { 0 };
    const char *end;

    if (!strcmp(s, "never")) {
        *out = 0;
        return 0;
    }
    end = strptime(s, "%Y-%m-%d", &tm);
    if (!end || *end) {
        fprintf(stderr, PROG ": --expires wants a date YYYY-MM-DD or never, not \"%s\"\n", s);
        return -1;
    }
    tm.tm_hour = 23;
    tm.tm_min = 59;
    tm.tm_sec = 59;
    *out = (int64_t)timegm(&tm);
    return 0;
}

static int detail_copy(const char *opt, const char *val, char *dst)
{
    if (strlen(val) > REGISTRY_DETAIL_MAX) {
        fprintf(stderr, PROG ": %s is longer than %d bytes\n", opt, REGISTRY_DETAIL_MAX);
        return -1;
    }
    strcpy(dst, val);
    return 0;
}

/* The details given on the command line over base (the current ones). */
static int details_from_args(const struct vault_args *a, struct registry_details *d)
{
    if ((a->full_name && detail_copy("--full-name", a->full_name, d->full_name) < 0) ||
        (a->email && detail_copy("--email", a->email, d->email) < 0) ||
        (a->department && detail_copy("--department", a->department, d->department) < 0) ||
        (a->expires && parse_expiry(a->expires, &d->expires) < 0))
        return -1;
    return 0;
}

static void print_code(const char *name, const char *code, unsigned long valid_h)
{
    time_t until = time(NULL) + (time_t)(valid_h ? valid_h * 3600 : ENROL_DEFAULT_VALID_S);
    char when[64];

    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&until));
    printf("Enrolment code for \"%s\" (single use, valid until %s):\n%s\n"
           "Hand it to its owner out of band; they run on their own workstation:\n"
           "  pactfs-admin enroll %s VAULT_DIR\n", name, when, code, name);
}


static void policy_format(const struct pwpolicy *p, char *out, size_t len)
{
    snprintf(out, len, "min-length=%u dictionary=%s history=%u", p->min_length,
             p->dictionary ? "yes" : "no", p->history);
}


/* Defence in depth: a key service also refuses the share of a disabled
 * account (a local key directory has no such switch). */
static void keyd_switch(struct vault *v, const char *name, int disabled)
{
    char key_name[META_ACCOUNT_NAME_MAX + 1];

    if (strcmp(v->conf.share_provider, "keyd") != 0 ||
        vault_account_key_name(v, name, key_name, sizeof key_name) < 0)
        return;
    if (share_keyd_admin(v->sp, disabled ? "disable" : "enable", v->conf.vault_id,
                         key_name) < 0)
        fprintf(stderr, PROG ": warning: the registry was changed but the key service was "
                "not (%s); run pactfs-admin keyd %s %s\n", pfs_err_msg(),
                disabled ? "disable" : "enable", key_name);
}


static int print_account(void *arg, const struct meta_account *acct)
{
    struct vault *v = arg;
    struct registry_record r = { 0 };
    char roles[64], state[96];
    int rc = registry_verify_pending(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                                     acct->id, &r);

    registry_roles_format(acct->roles, roles, sizeof roles);
    if (rc == 0 && !r.pubkey_len) {
        time_t until = (time_t)r.code_expires;
        char when[40];

        strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&until));
        snprintf(state, sizeof state, "verified, enrolment pending (code valid until %s)", when);
    } else {
        snprintf(state, sizeof state, "verified");
    }
    printf("%-24s %-24s %-9s %s%s\n", acct->name, roles, acct->disabled ? "disabled" : "enabled",
           rc == 0 ? state : "NOT VERIFIED: ", rc == 0 ? "" : pfs_err_msg());
    registry_record_clear(&r);
    return 0;
}


/* ---- the account list and the access review (review.h) ---- */

int cmd_accounts(struct admin_ctx *c)
{
    int rc;

    struct vault *v = c->v;
    struct roster ro;
    struct roster_trust t;

    printf("%-24s %-24s %-9s %s\n", "ACCOUNT", "ROLES", "STATE", "REGISTRY");
    rc = meta_account_list(v->meta, print_account, v);
    if (rc < 0)
        return admin_fail(rc, cli_exit_code_for(rc));
    /* the signed role roster that decides the privileged roles (roster.h) */
    rc = roster_load(vault_roster_trust(v, &t), &ro, NULL, NULL);
    if (rc == 0)
        printf("Role roster: step %" PRIu64 ", verified (%u enabled sysadmin(s), co-signature "
               "%s), format %u%s.\n", ro.counter, roster_sysadmins(&ro),
               ro.required ? "required" : "not required", ro.version, ro.version >= 2 ?
               " (binds each account's key)" : " (binds no keys: a sysadmin runs "
               "pactfs-admin cosign-endorse to make it format 2)");
    else if (rc == -ENOENT)
        printf("Role roster: none yet (a vault made before it): a sysadmin runs pactfs-admin "
               "cosign-endorse to make its first step.\n");
    else
        printf("Role roster: NOT VERIFIED: %s\n", pfs_err_msg());
    roster_clear(&ro);
    return EXIT_OK;
}

/* Print a review as text or --json. */
static int print_review(int rc, json_object *o, int json, void (*text)(json_object *, FILE *))
{
    if (rc == 0 && json)
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                     JSON_C_TO_STRING_NOSLASHESCAPE));
    else if (rc == 0)
        text(o, stdout);
    json_object_put(o);
    return rc;
}

int cmd_account_show(struct admin_ctx *c)
{
    json_object *o = NULL;
    int rc = review_account(c->v->meta, c->v->conf.vault_id, c->v->conf.root_fingerprint,
                            c->pos[0], &o);

    return print_review(rc, o, c->a.json, review_print_account);
}

int cmd_folder_members(struct admin_ctx *c)
{
    struct vault *v = c->v;
    json_object *o = NULL;
    uint64_t id = 0;
    int rc = grants_folder_id(v, c->pos[0], &id);

    if (rc == 0)
        rc = review_folder(v->meta, v->conf.vault_id, v->conf.root_fingerprint, id, c->pos[0],
                           &o);
    return print_review(rc, o, c->a.json, review_print_folder);
}

/* ---- registering and enrolling ---- */

/* --role ROLES into c->bits. */
static int parse_roles(struct admin_ctx *c)
{
    if (!c->a.role || registry_roles_parse(c->a.role, &c->bits) < 0) {
        fprintf(stderr, PROG ": %s needs --role ROLES: %s\n", c->cmd->name,
                c->a.role ? pfs_err_msg() : "sysadmin, dataadmin, auditor or user");
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

int prepare_account_add(struct admin_ctx *c)
{
    struct registry_details d;

    memset(&d, 0, sizeof d);
    if (parse_roles(c) != EXIT_OK)
        return EXIT_USAGE;
    return details_from_args(&c->a, &d) < 0 ? EXIT_USAGE : EXIT_OK;
}

int cmd_account_add(struct admin_ctx *c)
{
    const char *name = c->pos[0];
    struct registry_details d;
    char enrol_code[ENROL_CODE_TEXT_MAX];
    int rc;

    memset(&d, 0, sizeof d);
    details_from_args(&c->a, &d);   /* checked by prepare_account_add */
    rc = grants_account_add(c->v, name, c->bits, &d, (unsigned)(c->a.code_valid_h * 3600),
                            enrol_code);
    if (rc == 0)
        print_code(name, enrol_code, c->a.code_valid_h);
    explicit_bzero(enrol_code, sizeof enrol_code);
    snprintf(c->done, sizeof c->done, "%s", rc == COSIGN_PENDING ?
             "Proposed: the account is registered (and its code printed) once a second "
             "sysadmin runs the same account-add command." :
             "The account can receive grants once enrolled.");
    return rc == COSIGN_PENDING ? 0 : rc;
}

int cmd_account_reenrol(struct admin_ctx *c)
{
    const char *name = c->pos[0];
    char enrol_code[ENROL_CODE_TEXT_MAX];
    int rc = grants_account_reenrol(c->v, name, (unsigned)(c->a.code_valid_h * 3600),
                                    enrol_code);

    if (rc == 0)
        print_code(name, enrol_code, c->a.code_valid_h);
    explicit_bzero(enrol_code, sizeof enrol_code);
    snprintf(c->done, sizeof c->done, "Its old key no longer counts; once it has enrolled "
             "again, a dataadmin grants its folders anew. A sysadmin or dataadmin of a vault "
             "that needs two sysadmins is trusted again only when two sysadmins bind its new "
             "key (each runs pactfs-admin cosign-endorse after checking its fingerprint with "
             "the person).");
    return rc;
}

/* pactfs-admin enroll NAME VAULT: run by the account's owner. */
int cmd_enroll(struct admin_ctx *c)
{
    const char *name = c->pos[0];
    char *enrol_code = NULL, *pw = NULL, fp[REGISTRY_FP_HEX + 1];
    int rc;

    secmem_harden_process();
    enrol_code = cli_read_password(c->a.code_file, NULL, "Enrolment code: ", 0);
    if (enrol_code)
        pw = cli_read_password(c->a.new_passfile, NULL, "Choose your password: ", 1);
    if (!enrol_code || !pw) {
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        secmem_free_str(enrol_code);
        return EXIT_PASSWORD_INPUT;
    }
    fprintf(stderr, "Generating the RSA-3072 key of \"%s\" on this machine...\n", name);
    rc = accounts_enrol(c->v, name, enrol_code, pw, NULL, fp);
    secmem_free_str(enrol_code);
    secmem_free_str(pw);
    if (rc < 0)
        return admin_fail(rc, cli_exit_code_for(rc));
    printf("Enrolled \"%s\". Its public key fingerprint (SHA-256):\n%s\n"
           "Tell it to the dataadmin who grants you folders, so they can check it.\n",
           name, fp);
    if (rc == ACCOUNTS_KEY_AWAITS)
        printf("\"%s\" is a sysadmin or dataadmin and the vault needs two sysadmins for "
               "changes of those roles: the new key counts once two sysadmins bind it "
               "(each runs pactfs-admin cosign-endorse after checking this fingerprint with "
               "you). Until then \"%s\" is not trusted.\n", name, name);
    return EXIT_OK;
}

/* ---- changing an account ---- */

static int account_switch(struct admin_ctx *c, int disabled)
{
    const char *name = c->pos[0];
    int rc = grants_account_disable(c->v, name, disabled);

    if (rc == COSIGN_PENDING) {
        snprintf(c->done, sizeof c->done, "Proposed: \"%s\" is %s once a second sysadmin runs "
                 "the same %s command (within 7 days).", name, disabled ? "disabled" : "enabled",
                 disabled ? "account-disable" : "account-enable");
        return 0;
    }
    if (rc == 0)
        keyd_switch(c->v, name, disabled);
    snprintf(c->done, sizeof c->done, "Account \"%s\" %s.", name,
             disabled ? "disabled" : "enabled");
    return rc;
}

int cmd_account_disable(struct admin_ctx *c)
{
    return account_switch(c, 1);
}

int cmd_account_enable(struct admin_ctx *c)
{
    return account_switch(c, 0);
}

int prepare_account_details(struct admin_ctx *c)
{
    struct registry_details d = { 0 };

    if (details_from_args(&c->a, &d) < 0)
        return EXIT_USAGE;
    if (!c->a.full_name && !c->a.email && !c->a.department && !c->a.expires)
        return usage_error("give at least one of --full-name, --email, --department, "
                           "--expires");
    return EXIT_OK;
}

int cmd_account_details(struct admin_ctx *c)
{
    const struct vault_args *a = &c->a;
    struct registry_details d = { 0 };
    struct grants_details_change ch = { NULL, NULL, NULL, GRANTS_EXPIRES_KEEP };

    details_from_args(a, &d);   /* checked by prepare_account_details */
    ch.full_name = a->full_name ? d.full_name : NULL;
    ch.email = a->email ? d.email : NULL;
    ch.department = a->department ? d.department : NULL;
    if (a->expires)
        ch.expires = d.expires;
    snprintf(c->done, sizeof c->done, "The details of \"%s\" are changed.", c->pos[0]);
    return grants_account_set_details(c->v, c->pos[0], &ch);
}

int cmd_account_rename(struct admin_ctx *c)
{
    snprintf(c->done, sizeof c->done, "Account \"%s\" is now \"%s\".", c->pos[0], c->pos[1]);
    return grants_account_rename(c->v, c->pos[0], c->pos[1]);
}

int prepare_account_role(struct admin_ctx *c)
{
    return parse_roles(c);
}

int cmd_account_role(struct admin_ctx *c)
{
    const char *name = c->pos[0];
    int rc = grants_account_set_roles(c->v, name, c->bits);

    if (rc == COSIGN_PENDING)
        snprintf(c->done, sizeof c->done, "Proposed: \"%s\" gets roles %s once a second "
                 "sysadmin runs the same account-role command (within 7 days).", name,
                 c->a.role);
    else
        snprintf(c->done, sizeof c->done, "Account \"%s\" now has roles %s.", name, c->a.role);
    return rc == COSIGN_PENDING ? 0 : rc;
}

/* ---- policies: passwords and co-signature ---- */

/* Without options the policy is shown, with no password asked. */
int prepare_password_policy(struct admin_ctx *c)
{
    if (c->a.min_length < 0 && c->a.history < 0 && c->a.dictionary < 0)
        c->need = NEED_STORAGE;
    return EXIT_OK;
}

/* pactfs-admin password-policy VAULT [--min-length N] [--dictionary yes|no]
 * [--history N]: show it, or (as a sysadmin) change it. */
int cmd_password_policy(struct admin_ctx *c)
{
    const struct vault_args *a = &c->a;
    struct vault *v = c->v;
    struct pwpolicy p;
    char before[96], after[96], what[256];
    int rc, arc;

    if (c->need == NEED_STORAGE) {
        rc = pwpolicy_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &p);
        if (rc < 0)
            return admin_fail(rc, cli_exit_code_for(rc));
        policy_format(&p, before, sizeof before);
        printf("%s\n", before);
        return EXIT_OK;
    }
    rc = v->account.roles & ROLE_SYSADMIN ? 0 :
         pfs_err(-EACCES, "\"%s\" is not a sysadmin: only a sysadmin sets the password "
                 "policy", c->account);
    before[0] = after[0] = '\0';
    if (rc == 0) {
        /* A policy that does not verify is replaced from the defaults. */
        if (pwpolicy_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &p) < 0)
            pwpolicy_defaults(&p);
        policy_format(&p, before, sizeof before);
        if (a->min_length >= 0)
            p.min_length = (unsigned)a->min_length;
        if (a->history >= 0)
            p.history = (unsigned)a->history;
        if (a->dictionary >= 0)
            p.dictionary = a->dictionary;
        policy_format(&p, after, sizeof after);
        rc = pwpolicy_store(v->meta, v->conf.vault_id, &p, v->priv, v->account.id);
    }
    snprintf(what, sizeof what, "password policy %s -> %s", before, after);
    arc = admin_audit_event(v, "policy-change", what, rc, 0);
    snprintf(c->done, sizeof c->done, "Password policy: %s.", after);
    return rc < 0 ? rc : arc;
}

/* Without --required the setting is shown, with no password asked. */
int prepare_cosign_policy(struct admin_ctx *c)
{
    if (c->a.required < 0)
        c->need = NEED_STORAGE;
    return EXIT_OK;
}

/* pactfs-admin cosign-policy VAULT [--required yes|no] */
int cmd_cosign_policy(struct admin_ctx *c)
{
    struct vault *v = c->v;
    char before[16], after[16], what[64];
    unsigned n = 0;
    uint64_t cosigner = 0;
    uint8_t *attest = NULL;
    size_t attest_len = 0;
    int required = 1, rc;

    if (c->need == NEED_STORAGE) {
        rc = cosign_needed(v, &required, &n);
        if (rc == 0)
            printf("Co-signature of sysadmin/dataadmin role changes: %s; %u enabled sysadmin(s), "
                   "so it is %s now.\n", required ? "required" : "not required", n,
                   required && n >= 2 ? "needed" : "not needed");
        return rc;
    }
    rc = !(v->account.roles & ROLE_SYSADMIN)
         ? pfs_err(-EACCES, "\"%s\" is not a sysadmin", c->account)
         : cosign_needed(v, &required, &n);
    snprintf(before, sizeof before, "required=%s", required ? "yes" : "no");
    snprintf(after, sizeof after, "required=%s", c->a.required ? "yes" : "no");
    /* Switching it off is itself a change two sysadmins make; clients
     * honour "off" only with both their items beside it. */
    if (rc == 0 && !c->a.required) {
        char content[64], on[40];

        cosign_roster_suffix(v, on, sizeof on);
        snprintf(content, sizeof content, "%s%s", after, on);
        rc = cosign_gate_attest(v, "policy.cosign.change", content, &cosigner, &attest,
                                &attest_len);
    }
    if (rc == 0)
        rc = cosign_set_required(v, c->a.required, attest, attest_len);
    /* the role roster carries the setting clients count by (roster.h) */
    if (rc == 0)
        rc = cosign_roster_step(v, 0, 0, 0, c->a.required, attest, attest_len, 0, NULL);
    if (rc == 0)
        rc = vault_anchor_head(v);           /* and the roster's step */
    free(attest);
    if (v->audit) {
        struct audit_ctx who = { getuid(), getpid() };
        struct audit_detail d = { .before = before, .after = after };

        snprintf(what, sizeof what, "co-signature %s", rc == COSIGN_PENDING ? "proposed" : "set");
        int arc = audit_event_detail(v->audit, &who, "policy-change", what,
                                     rc == COSIGN_PENDING ? 0 : rc, 0, &d);
        rc = rc < 0 ? rc : arc < 0 ? arc : rc;
    }
    snprintf(c->done, sizeof c->done, rc == COSIGN_PENDING ? "Proposed: %s once a second "
             "sysadmin runs the same command." : "Co-signature setting: %s.", after);
    return rc == COSIGN_PENDING ? 0 : rc;
}

/* pactfs-admin cosign-endorse VAULT: this sysadmin's endorsement, and the
 * first step of the role roster in a vault that has none yet. */
int cmd_cosign_endorse(struct admin_ctx *c)
{
    size_t endorsed = 0;
    uint64_t step = 0;
    char note[400];
    int rc = cosign_endorse(c->v, &endorsed, &step, note, sizeof note);
    int arc = admin_audit_event(c->v, "cosign-endorse", "sysadmins and dataadmins endorsed",
                                rc == COSIGN_PENDING ? 0 : rc, endorsed);

    if (rc >= 0 && arc < 0)
        rc = arc;

    if (rc == COSIGN_PENDING && note[0])
        snprintf(c->done, sizeof c->done, "Endorsed %zu sysadmin(s) and dataadmin(s).%s",
                 endorsed, note);
    else if (rc == COSIGN_PENDING)
        snprintf(c->done, sizeof c->done, "Endorsed %zu sysadmin(s) and dataadmin(s). Proposed "
                 "the first step of the role roster: it is made when a second sysadmin runs "
                 "cosign-endorse (within 7 days).", endorsed);
    else if (rc == 0)
        snprintf(c->done, sizeof c->done, "Endorsed %zu sysadmin(s) and dataadmin(s). The role "
                 "roster is at step %" PRIu64 ".%s", endorsed, step, note);
    return rc == COSIGN_PENDING ? 0 : rc;
}
