/* pactfs-admin: the audit trail: verify, ship, query, and the audit names
 * key (admin.h). */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "audit.h"
#include "audit_proof.h"
#include "audit_query.h"
#include "audit_report.h"
#include "audit_ship.h"
#include "cli.h"
#include "crypto.h"
#include "error.h"
#include "exitcodes.h"
#include "registry.h"
#include "vault.h"

struct key_lookup {
    struct meta *meta;
    const struct pactfs_conf *conf;
    EVP_PKEY *keys[64];
    size_t n;
    const char *want;        /* name searched among the key names */
    uint64_t found;
};

/* An account renamed since it signed: its key name is still the old one. */
static int match_key_name(void *arg, const struct meta_account *a)
{
    struct key_lookup *kl = arg;
    struct registry_record r = { 0 };

    if (registry_verify(kl->meta, kl->conf->vault_id, kl->conf->root_fingerprint, a->id,
                        &r) == 0 && !strcmp(r.key_name, kl->want))
        kl->found = a->id;
    registry_record_clear(&r);
    return kl->found != 0;
}

/* Public key of the account that signed a checkpoint, from the registry
 * (verified up to the pinned root when the configuration pins one). */
static EVP_PKEY *key_for_account(void *arg, const char *account)
{
    struct key_lookup *kl = arg;
    struct meta_account a;
    EVP_PKEY *k = NULL;

    if (kl->n == sizeof kl->keys / sizeof kl->keys[0])
        return NULL;
    if (meta_account_get_by_name(kl->meta, account, &a) == 0) {
        kl->found = a.id;
        meta_account_clear(&a);
    } else if (kl->conf->root_fingerprint) {
        kl->want = account;
        kl->found = 0;
        meta_account_list(kl->meta, match_key_name, kl);
    } else {
        return NULL;
    }
    if (!kl->found)
        return NULL;
    if (kl->conf->root_fingerprint) {
        if (registry_verified_key(kl->meta, kl->conf->vault_id, kl->conf->root_fingerprint,
                                  kl->found, NULL, &k) < 0)
            return NULL;
    } else if (meta_account_get(kl->meta, kl->found, &a) == 0) {
        k = rsa_public_from_der(a.pubkey, a.pubkey_len);
        meta_account_clear(&a);
    }
    if (k)
        kl->keys[kl->n++] = k;
    return k;
}

/* The spool's chain and checkpoint signatures: format 3 sessions prove
 * their signer from the pinned root; format 2 lines (older spools) name
 * theirs and are looked up by name. */
static int verify_spool(struct vault *v, struct audit_verify_result *res)
{
    struct key_lookup kl = { .meta = v->meta, .conf = &v->conf };
    int rc = audit_verify(v->conf.audit_spool, v->conf.root_fingerprint, key_for_account, &kl,
                          res);

    for (size_t i = 0; i < kl.n; i++)
        EVP_PKEY_free(kl.keys[i]);
    return rc;
}

int cmd_audit_ship(struct admin_ctx *c)
{
    struct vault *v = c->v;
    int rc;

    if (!v->conf.audit_url) {
        fprintf(stderr, PROG ": %s sets no audit.url: there is no receiver to ship to\n",
                c->a.conf_path);
        return EXIT_CONFIG;
    }
    rc = audit_ship_pending(&v->conf, 30000);
    if (rc < 0)
        return admin_fail(rc, EXIT_STORE);
    printf("%s: everything in the spool is at %s.\n", v->conf.audit_spool, v->conf.audit_url);
    return EXIT_OK;
}

int cmd_audit_verify(struct admin_ctx *c)
{
    struct vault *v = c->v;
    struct audit_verify_result res;
    int rc = verify_spool(v, &res);

    if (rc < 0)
        return admin_fail(rc, EXIT_INTEGRITY);
    printf("%s: %llu events in %llu sessions, chains and checkpoint signatures intact.\n",
           v->conf.audit_spool, (unsigned long long)res.events,
           (unsigned long long)res.sessions);
    if (res.unsigned_sessions)
        printf("  %llu session(s) had no account key (failed unlocks, fsck): their events are "
               "chained but vouched for by no account.\n",
               (unsigned long long)res.unsigned_sessions);
    if (res.v2_lines)
        printf("  %llu line(s) in the older format 2: their checkpoints name their own signer, "
               "so an account could have re-signed them; compare with the receiver's copy.\n",
               (unsigned long long)res.v2_lines);
    return EXIT_OK;
}

/* ---- pactfs-keyd's own log ---- */

/* The root fingerprint the first session-start of a keyd log proves its
 * signer with; 0, or -EBADMSG if no line carries a proof. */
static int keyd_log_fp(const char *path, char fp[65])
{
    FILE *f = fopen(path, "re");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = -EBADMSG;

    if (!f)
        return pfs_err(-errno, "cannot read %s: %s", path, strerror(errno));
    while (rc < 0 && (n = getline(&line, &cap, f)) > 0) {
        json_object *o = audit_line_parse(line, (size_t)n - (line[n - 1] == '\n'));
        const char *proof = o ? audit_field_str(o, "proof") : NULL;

        if (proof && audit_proof_root_fp(proof, fp) == 0)
            rc = 0;
        json_object_put(o);
    }
    free(line);
    fclose(f);
    return rc < 0 ? pfs_err(rc, "%s holds no signed pactfs-keyd session: it is not the audit "
                            "log of a pactfs-keyd that signs its log", path) : 0;
}

int cmd_keyd_audit_verify(struct admin_ctx *ctx)
{
    static const struct option opts[] = {
        { "fingerprint", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct audit_verify_result res;
    const char *want = NULL, *path;
    char fp[65];
    int c, rc;

    optind = 1;
    while ((c = getopt_long(ctx->argc, ctx->argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'f': want = optarg; break;
        case 'h': command_usage(current, stdout); return EXIT_OK;
        default: return usage_error("unknown option or missing option value");
        }
    }
    if (ctx->argc - optind != 1)
        return usage_error(ctx->argc - optind < 1 ? "missing LOG (pactfs-keyd's audit_log)"
                                                  : "one LOG at a time");
    path = ctx->argv[optind];
    if (want && (strlen(want) != 64 || strspn(want, "0123456789abcdef") != 64))
        return usage_error("--fingerprint wants the 64 lower-case hex digits pactfs-keyd "
                           "printed, not \"%s\"", want);
    if ((rc = keyd_log_fp(path, fp)) < 0)
        return admin_fail(rc, rc == -EBADMSG ? EXIT_INTEGRITY : EXIT_STORE);
    if (want && strcmp(want, fp)) {
        fprintf(stderr, PROG ": %s is signed by the key %s, not by the pactfs-keyd audit key "
                "%s: the log was replaced and re-signed, or it belongs to another key "
                "service\n", path, fp, want);
        return EXIT_INTEGRITY;
    }
    rc = audit_verify(path, fp, NULL, NULL, &res);
    if (rc < 0)
        return admin_fail(rc, EXIT_INTEGRITY);
    if (res.unsigned_sessions) {
        fprintf(stderr, PROG ": %s: %llu session(s) carry no signature of the pactfs-keyd "
                "audit key: someone who does not hold it added them\n", path,
                (unsigned long long)res.unsigned_sessions);
        return EXIT_INTEGRITY;
    }
    printf("%s: %llu events in %llu sessions, chains and checkpoint signatures intact, signed "
           "by the pactfs-keyd audit key %s.\n", path, (unsigned long long)res.events,
           (unsigned long long)res.sessions, fp);
    if (!want)
        printf("  Compare that fingerprint with the one pactfs-keyd printed when it made the "
               "key\n  (--fingerprint FP checks it): a log re-signed with another key "
               "verifies too.\n");
    return EXIT_OK;
}

/* ---- audit query, summary, denied (auditors) ---- */

struct collected {
    struct json_object **evs;
    size_t n, cap;
};

static int collect_event(void *arg, struct json_object *ev, const char *line, size_t len)
{
    struct collected *c = arg;

    (void)line;
    (void)len;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 256;
        struct json_object **p = realloc(c->evs, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        c->evs = p;
        c->cap = cap;
    }
    c->evs[c->n++] = json_object_get(ev);
    return 0;
}

/* Read the trail (local spool, verified first, or the receiver), select,
 * print: an exit code. */
static int audit_answer(struct vault *v, struct vault_args *q, enum audit_out fmt,
                        enum audit_report kind, EVP_PKEY *names_priv, uint64_t *count)
{
    struct audit_remote r = {
        .url = q->receiver,
        .tls = { q->ca ? q->ca : v->conf.audit_tls.ca_file, q->cert, q->key },
        .vault = v->conf.vault_id, .f = &q->filter,
        .forward_path = 0,      /* names are sealed: paths are matched here, once opened */
    };
    struct audit_revealed rv = { .names_priv = names_priv, .vault = v->conf.vault_id };
    struct collected col = { 0 };
    int rc = 0;

    if (!q->receiver) {
        struct audit_verify_result res;

        rc = verify_spool(v, &res);
        if (rc < 0) {
            cli_report(rc);
            fprintf(stderr, PROG ": the local audit spool does not verify; nothing is "
                    "answered from it (compare it with the receiver's copy)\n");
            return EXIT_INTEGRITY;
        }
        rv.scan = audit_scan_spool;
        rv.src = v->conf.audit_spool;
    } else {
        struct audit_filter starts;
        struct audit_remote sr = r;

        /* The session keys first: the filtered answer may leave out the
         * session-starts that carry them. */
        audit_filter_init(&starts);
        rc = audit_filter_set(&starts, "op", "session-start");
        sr.f = &starts;
        if (rc == 0 && names_priv)
            rc = audit_revealed_learn(&rv, audit_scan_remote, &sr);
        audit_filter_free(&starts);
        rv.scan = audit_scan_remote;
        rv.src = &r;
    }
    if (rc == 0)
        rc = audit_query_run(&q->filter, audit_scan_revealed, &rv, collect_event, &col);
    if (rc == 0)
        rc = audit_report_print(stdout, fmt, kind, col.evs, col.n);
    if (rc == 0 && r.truncated)
        fprintf(stderr, PROG ": the receiver cut its answer at %u events, so this answer may "
                "be incomplete: narrow the question (--from/--until, --by, --op)\n",
                AUDIT_QUERY_LIMIT);
    if (rc == 0 && rv.sealed_unopened)
        fprintf(stderr, PROG ": %llu event(s) have names sealed to an audit names key this "
                "account does not hold: shown as (sealed), and no --path matches them\n",
                (unsigned long long)rv.sealed_unopened);
    audit_revealed_free(&rv);
    for (size_t i = 0; i < col.n; i++)
        json_object_put(col.evs[i]);
    free(col.evs);
    *count = col.n;
    if (rc < 0) {
        cli_report(rc);
        return rc == -EACCES ? EXIT_ACCESS : rc == -EHOSTUNREACH || rc == -EIO ? EXIT_STORE :
               rc == -EBADMSG ? EXIT_INTEGRITY : EXIT_FAILURE_OTHER;
    }
    return EXIT_OK;
}

/* The question must make sense before a password is asked. */
int prepare_audit(struct admin_ctx *c)
{
    struct vault_args *q = &c->a;
    enum audit_report kind;
    enum audit_out fmt;

    q->filter.skip_checkpoints = !q->audit_all;
    if (q->format && audit_out_parse(q->format, &fmt))
        return usage_error("--format wants table, json or csv, not \"%s\"", q->format);
    if (q->filter.follow_renames && !q->filter.path)
        return usage_error("--follow-renames needs --path (the files whose names match it)");
    if (!q->receiver && (q->ca || q->cert || q->key))
        return usage_error("--ca, --cert and --key are for --receiver");
    if (q->receiver && (!q->cert || !q->key))
        return usage_error("--receiver needs the auditor's certificate: --cert FILE --key FILE");
    if (audit_report_parse(c->pos[0], &kind) < 0)
        return usage_error("\"%s\" is none of query, summary, denied", c->pos[0]);
    return EXIT_OK;
}

int cmd_audit(struct admin_ctx *c)
{
    struct vault *v = c->v;
    enum audit_out fmt = AUDIT_OUT_TABLE;
    enum audit_report kind = AUDIT_REPORT_EVENTS;
    EVP_PKEY *names_priv = NULL;
    uint64_t count = 0;
    int code, rc;

    if (c->a.format)
        audit_out_parse(c->a.format, &fmt);
    audit_report_parse(c->pos[0], &kind);
    if (!(v->account.roles & ROLE_AUDITOR)) {
        rc = pfs_err(-EACCES, "\"%s\" is not an auditor: only auditor accounts query the "
                     "audit trail", c->account);
        (void)vault_audit_failure(v, c->account, "audit-query", "", rc);
        return rc;
    }
    rc = audit_names_private(v->meta, v->conf.vault_id, v->conf.root_fingerprint, v->priv,
                             v->account.id, &names_priv);
    if (rc == -ENOENT)
        fprintf(stderr, PROG ": note: %s; sealed names stay sealed\n", pfs_err_msg());
    else if (rc < 0)
        return admin_fail(rc, EXIT_INTEGRITY);
    code = audit_answer(v, &c->a, fmt, kind, names_priv, &count);
    EVP_PKEY_free(names_priv);
    /* The question is audited, not its answer or the names asked for. */
    rc = admin_audit_event(v, "audit-query", "", code == EXIT_OK ? 0 : -EIO, count);
    if (rc < 0 && code == EXIT_OK)
        code = admin_fail(rc, EXIT_AUDIT);
    return code;
}

/* ---- the audit names key (auditors) ---- */

int prepare_audit_key(struct admin_ctx *c)
{
    int grant = !strcmp(c->pos[0], "grant");

    if (!grant && strcmp(c->pos[0], "create"))
        return usage_error("\"%s\" is neither create nor grant", c->pos[0]);
    if (grant && c->npos < 2)
        return usage_error("missing ACCOUNT");
    if (!grant && c->npos > 1)
        return usage_error("unexpected argument \"%s\"", c->pos[1]);
    return EXIT_OK;
}

int cmd_audit_key(struct admin_ctx *c)
{
    struct vault *v = c->v;
    struct meta_account target;
    const char *name = c->npos > 1 ? c->pos[1] : NULL;
    char kid[AUDIT_NAMES_KID_HEX + 1] = "", what[300];
    int grant = name != NULL, rc, arc;

    rc = meta_begin(v->meta);
    if (rc == 0 && !grant) {
        rc = audit_names_create(v->meta, v->conf.vault_id, v->conf.root_fingerprint, v->priv,
                                v->account.id, kid);
    } else if (rc == 0) {
        rc = meta_account_get_by_name(v->meta, name, &target);
        if (rc == -ENOENT)
            rc = pfs_err(-ENOENT, "no account \"%s\" in this vault", name);
        if (rc == 0) {
            rc = audit_names_grant(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                                   v->priv, v->account.id, target.id);
            meta_account_clear(&target);
        }
    }
    snprintf(what, sizeof what, "%s%s", grant ? "to " : "key ", grant ? name : kid);
    arc = admin_audit_event(v, grant ? "audit-key-grant" : "audit-key-create", what, rc, 0);
    if (rc == 0 && arc < 0)
        rc = arc;
    if (rc == 0)
        rc = meta_commit(v->meta);
    else
        meta_rollback(v->meta);
    if (rc == 0 && !grant) {
        /* This machine pins the key at once (the next session checks it). */
        EVP_PKEY *pub = NULL;
        rc = audit_names_for_writer(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                                    v->conf.audit_spool, &pub, kid);
        EVP_PKEY_free(pub);
    }
    snprintf(c->done, sizeof c->done, grant ?
             "\"%s\" can now read the names sealed in the audit trail." :
             "The audit names key %s is made: from each session's next start, paths and names "
             "in audit events are sealed to it; give it to other auditors with pactfs-admin "
             "audit-key grant NAME.", grant ? name : kid);
    if (rc < 0 && arc < 0)
        return admin_fail(rc, EXIT_AUDIT);   /* the action was rolled back: its audit failed */
    return rc;
}
