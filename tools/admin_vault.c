/* pactfs-admin: the vault as a whole: init, passwords and key shares, the
 * key service, the format upgrade and endpoint markers (admin.h). */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"
#include "admin.h"
#include "cli.h"
#include "crypto.h"
#include "endpoint.h"
#include "error.h"
#include "exitcodes.h"
#include "grants.h"
#include "keyring.h"
#include "secmem.h"
#include "upgrade.h"
#include "vault.h"

int cmd_init(struct admin_ctx *ctx)
{
    static const struct option opts[] = {
        { "name", required_argument, NULL, 'n' },
        { "account", required_argument, NULL, 'a' },
        { "passfile", required_argument, NULL, 'p' },
        { "folder", required_argument, NULL, 'F' },
        { "k", required_argument, NULL, 'k' },
        { "m", required_argument, NULL, 'm' },
        { "chunk-size", required_argument, NULL, 'c' },
        { "kdf-time", required_argument, NULL, 't' },
        { "kdf-memory", required_argument, NULL, 'M' },
        { "keyd-url", required_argument, NULL, 'U' },
        { "keyd-ca", required_argument, NULL, 'C' },
        { "audit-url", required_argument, NULL, '1' },
        { "audit-ca", required_argument, NULL, '2' },
        { "audit-cert", required_argument, NULL, '3' },
        { "audit-key", required_argument, NULL, '4' },
        { "keyd-cert", required_argument, NULL, 'E' },
        { "keyd-key", required_argument, NULL, 'K' },
        { "keyd-admin-token", required_argument, NULL, 'T' },
        { "postgresql", required_argument, NULL, 'P' },
        { "sysadmin", required_argument, NULL, 'S' },
        { "sysadmin-passfile", required_argument, NULL, 'W' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct vault_init_opts o = { 0 };
    struct pwkdf_params kdf;
    const char *passfile = NULL, *admin_passfile = NULL;
    char *account = NULL, *password, *admin_password = NULL;
    unsigned long v;
    int c, rc, kdf_set = 0;

    if (pwkdf_params_default(&kdf) < 0) {
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        return EXIT_FAILURE_OTHER;
    }
    optind = 1;
    while ((c = getopt_long(ctx->argc, ctx->argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n': o.vault_name = optarg; break;
        case 'a': o.account = optarg; break;
        case 'p': passfile = optarg; break;
        case 'F': o.folder_name = optarg; break;
        case 'k': if (parse_uint("--k", optarg, 16, &v)) return EXIT_USAGE; o.k = v; break;
        case 'm': if (parse_uint("--m", optarg, 15, &v)) return EXIT_USAGE; o.m = v; break;
        case 'c': if (parse_uint("--chunk-size", optarg, 1ul << 24, &v)) return EXIT_USAGE;
                  o.chunk_size = v; break;
        case 't': if (parse_uint("--kdf-time", optarg, 1000, &v)) return EXIT_USAGE;
                  kdf.t_cost = v; kdf_set = 1; break;
        case 'M': if (parse_uint("--kdf-memory", optarg, 1ul << 22, &v)) return EXIT_USAGE;
                  kdf.m_cost_kib = v; kdf_set = 1; break;
        case 'U': o.keyd_url = optarg; break;
        case 'C': o.keyd_ca_file = optarg; break;
        case 'E': o.keyd_cert_file = optarg; break;
        case 'K': o.keyd_key_file = optarg; break;
        case 'T': o.keyd_admin_token_file = optarg; break;
        case 'P': o.pg_conninfo = optarg; break;
        case '1': o.audit_url = optarg; break;
        case '2': o.audit_ca_file = optarg; break;
        case '3': o.audit_cert_file = optarg; break;
        case '4': o.audit_key_file = optarg; break;
        case 'S': o.sysadmin = optarg; break;
        case 'W': admin_passfile = optarg; break;
        case 'h': command_usage(current, stdout); return EXIT_OK;
        default: return usage_error("unknown option or missing option value");
        }
    }
    if (ctx->argc - optind < 1)
        return usage_error("missing DIR (the directory to create the vault in)");
    if (ctx->argc - optind > 1)
        return usage_error("unexpected argument \"%s\"", ctx->argv[optind + 1]);
    o.dir = ctx->argv[optind];
    if (o.m && !o.k) {
        fprintf(stderr, PROG ": --m needs --k too\n");
        return EXIT_USAGE;
    }
    if (o.k && o.k < 2) {
        fprintf(stderr, PROG ": --k must be at least 2: with k=1 one endpoint would hold a "
                "whole ciphertext\n");
        return EXIT_USAGE;
    }
    if (o.chunk_size && (o.chunk_size & (o.chunk_size - 1) || o.chunk_size < 65536)) {
        fprintf(stderr, PROG ": --chunk-size must be a power of two from 65536 to 16777216\n");
        return EXIT_USAGE;
    }
    if (kdf_set)
        o.kdf = &kdf;
    if (!o.account) {
        account = cli_read_line("Account name for the first account: ");
        if (!account) {
            fprintf(stderr, PROG ": no account name: give --account NAME\n");
            return EXIT_USAGE;
        }
        o.account = account;
    }
    password = cli_read_password(passfile, NULL, "Password for the new account: ", 1);
    if (!password) {
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        free(account);
        return EXIT_PASSWORD_INPUT;
    }
    o.password = password;
    if (admin_passfile) {
        admin_password = cli_read_password(admin_passfile, NULL, "Password for the sysadmin: ", 1);
        if (!admin_password) {
            fprintf(stderr, PROG ": %s\n", pfs_err_msg());
            secmem_free_str(password);
            free(account);
            return EXIT_PASSWORD_INPUT;
        }
        o.sysadmin_password = admin_password;
    }
    secmem_harden_process();
    fprintf(stderr, "Creating the vault in %s (generating an RSA-3072 account key)...\n", o.dir);
    rc = vault_init(&o);
    secmem_free_str(password);
    secmem_free_str(admin_password);
    if (rc < 0) {
        cli_report(rc);
        free(account);
        return rc == -EEXIST ? EXIT_EXISTS : cli_exit_code_for(rc);
    }
    if (o.audit_url) {   /* init's own events leave at once, like every command's */
        char conf[4096];
        struct vault *made = NULL;

        snprintf(conf, sizeof conf, "%s/pactfs.conf", o.dir);
        if (vault_open(conf, &made) == 0)
            vault_close(made);
    }
    printf("Created vault in %s for account \"%s\" with folder \"%s\".\n"
           "Mount it with: pactfs mount %s MOUNTPOINT\n",
           o.dir, o.account, o.folder_name ? o.folder_name : "Contracts", o.dir);
    if (o.sysadmin)
        printf("Sysadmin account: \"%s\".\n", o.sysadmin);
    else
        printf("Sysadmin account: \"%s-admin\" (same password; in production give the "
               "sysadmin to another person with --sysadmin).\n", o.account);
    free(account);
    return EXIT_OK;
}


/* ---- passwords and key shares ---- */

/* Change password or rotate share: both re-seal the account key. */
static int reseal(struct admin_ctx *c, int rotate)
{
    struct vault *v = c->v;
    const char *account = c->account;
    struct meta_account acct;
    char *old_pw = NULL, *new_pw = NULL, key_name[META_ACCOUNT_NAME_MAX + 1];
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    int rc;

    rc = meta_account_get_by_name(v->meta, account, &acct);
    if (rc < 0) {
        fprintf(stderr, PROG ": no account \"%s\" in this vault\n", account);
        return EXIT_NOT_FOUND;
    }
    /* The key stays sealed under the name it was created with (a rename
     * changes only the account's name). */
    rc = vault_account_key_name(v, account, key_name, sizeof key_name);
    if (rc < 0)
        goto out;
    old_pw = cli_read_password(c->a.passfile, NULL, "Current password: ", 0);
    if (old_pw && !rotate)
        new_pw = cli_read_password(c->a.new_passfile, NULL, "New password: ", 1);
    if (!old_pw || (!rotate && !new_pw)) {
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        rc = EXIT_PASSWORD_INPUT;
        goto out;
    }
    if (rotate) {
        rc = keyring_rotate_share(v->conf.vault_id, key_name, old_pw, acct.sealed_key,
                                  acct.sealed_key_len, v->sp, &sealed, &sealed_len);
        if (rc == 0)
            rc = vault_account_store_sealed(v, account, sealed, sealed_len, "share-rotate");
    } else {
        /* Policy (quality, reuse), new seal, new share: accounts.h. */
        rc = accounts_passwd(v, account, old_pw, new_pw);
    }
    if (rc < 0) {
        vault_audit_failure(v, account, rotate ? "share-rotate" : "password-change", account,
                            rc);
        if (rc == -EKEYREJECTED) {
            fprintf(stderr, PROG ": wrong password for account \"%s\"; nothing was changed\n",
                    account);
            rc = EXIT_BAD_PASSWORD;
        }
        goto out;
    }
    snprintf(c->done, sizeof c->done, rotate ? "The key share of \"%s\" was replaced." :
             "The password of \"%s\" was changed; the old one no longer works.", account);
out:
    free(sealed);
    secmem_free_str(old_pw);
    secmem_free_str(new_pw);
    meta_account_clear(&acct);
    /* The account was found: a key name or share missing now is the store's. */
    return rc == -ENOENT ? admin_fail(rc, EXIT_STORE) : rc;
}

int cmd_passwd(struct admin_ctx *c)
{
    return reseal(c, 0);
}

int cmd_rotate_share(struct admin_ctx *c)
{
    return reseal(c, 1);
}

/* pactfs-admin keyd unlock|disable|enable ACCOUNT VAULT */
int cmd_keyd(struct admin_ctx *ctx)
{
    const char *op = ctx->pos[0], *account = ctx->pos[1];
    struct pactfs_conf c;
    struct share_provider *sp = NULL;
    struct keyd_client_config kc = { 0 };
    char err[512];
    int rc;

    if (strcmp(op, "unlock") && strcmp(op, "disable") && strcmp(op, "enable")) {
        fprintf(stderr, PROG ": keyd wants unlock, disable or enable, not \"%s\"\n", op);
        return EXIT_USAGE;
    }
    if (conf_load(ctx->a.conf_path, &c, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return EXIT_CONFIG;
    }
    if (strcmp(c.share_provider, "keyd") != 0) {
        fprintf(stderr, PROG ": %s keeps its shares in a local key directory, not a key "
                "service: there is nothing to %s\n", ctx->a.conf_path, op);
        conf_free(&c);
        return EXIT_USAGE;
    }
    kc.url = c.keyd_url;
    kc.ca_file = c.keyd_tls.ca_file;
    kc.cert_file = c.keyd_tls.cert_file;
    kc.key_file = c.keyd_tls.key_file;
    kc.admin_token_file = ctx->a.admin_token;
    rc = share_keyd_open(&kc, &sp);
    if (rc == 0)
        rc = share_keyd_admin(sp, op, c.vault_id, account);
    if (rc == 0)
        snprintf(ctx->done, sizeof ctx->done, "Key service: %s of \"%s\" done.", op, account);
    share_provider_destroy(sp);
    conf_free(&c);
    return rc;
}

/* ---- format upgrade ---- */

/* SQLite: back meta.db up before anything migrates it; PostgreSQL: the
 * operator's pg_dump, confirmed with --no-backup. */
int prepare_upgrade(struct admin_ctx *ctx)
{
    const struct vault_args *a = &ctx->a;
    struct pactfs_conf c;
    char err[512], bak[4200];
    int made = 0, rc;

    ctx->a.allow_legacy = 1;     /* a vault without a signed head yet */
    if (conf_load(a->conf_path, &c, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return EXIT_CONFIG;
    }
    if (strcmp(c.meta_backend, "sqlite") != 0 && !a->no_backup) {
        conf_free(&c);
        fprintf(stderr, PROG ": the metadata is in PostgreSQL: back it up with pg_dump first, "
                "then run upgrade again with --no-backup\n");
        return EXIT_USAGE;
    }
    if (a->no_backup) {
        conf_free(&c);
        return EXIT_OK;
    }
    snprintf(bak, sizeof bak, "%s.pre-format2", c.meta_path);
    rc = upgrade_backup_sqlite(c.meta_path, bak, &made);
    conf_free(&c);
    if (rc < 0)
        return admin_fail(rc, EXIT_STORE);
    printf(made ? "Backed up the metadata to %s\n"
                : "Keeping the backup an earlier run made: %s\n", bak);
    return EXIT_OK;
}

int cmd_upgrade(struct admin_ctx *c)
{
    struct vault *v = c->v;
    struct upgrade_stats st;
    int rc, arc;

    rc = upgrade_folders(v, &st);
    if (rc == 0) {
        unsigned done = 0, left = 0;

        rc = grants_upgrade_state(v, &done, &left);
        if (rc == 0)
            printf("Signed folder states: %u folder(s) signed now, %u left for their "
                   "managers; the vault head is signed and anchored.\n", done, left);
    }
    arc = admin_audit_event(v, "upgrade", "/", rc, st.entries_bound + st.files_committed);
    if (arc < 0 && rc == 0)
        rc = arc;
    printf("Format 2: %llu entries bound, %llu files committed, %llu already done, "
           "%llu left alone with a problem (see above).\n",
           (unsigned long long)st.entries_bound, (unsigned long long)st.files_committed,
           (unsigned long long)st.already, (unsigned long long)st.problems);
    if (!v->conf.endpoint_markers_required)
        printf("Endpoint markers: this configuration does not require them yet; a sysadmin "
               "writes them with pactfs-admin endpoint-mark (docs/operations-status.md).\n");
    if (rc < 0)
        return rc;
    return st.problems ? EXIT_INTEGRITY : EXIT_OK;
}

/* ---- endpoint identity markers ---- */

/* Mark one endpoint (opened directly, not through the vault's guard). */
static int mark_one(struct vault *v, unsigned i, int force, unsigned *marked)
{
    const struct pactfs_conf *c = &v->conf;
    struct store *st = NULL;
    enum endpoint_state state;
    char why[400], what[600];
    int rc = endpoint_open_store(&c->endpoints[i], i, 1, &st);

    if (rc < 0) {
        cli_report(rc);
        return rc;
    }
    state = endpoint_mark_read(st, v->meta, c->vault_id, c->root_fingerprint, i, why,
                               sizeof why, NULL, NULL);
    if (state == ENDPOINT_OK) {
        printf("endpoint %u (%s): marked already\n", i, st->desc);
        store_close(st);
        return 0;
    }
    if (state == ENDPOINT_UNREACHABLE ||
        (state != ENDPOINT_UNMARKED && !force)) {
        rc = pfs_err(state == ENDPOINT_UNREACHABLE ? -EIO : -EEXIST,
                     "endpoint %u (%s): %s%s", i, st->desc, why,
                     state == ENDPOINT_UNREACHABLE ? "" :
                     "; left alone. If endpoints were swapped, put each back where the "
                     "configuration says; --force marks it as this endpoint anyway (its "
                     "fragments are then checked and repaired by pactfs-fsck --repair)");
        cli_report(rc);
        store_close(st);
        return rc;
    }
    rc = endpoint_mark_write(st, c->vault_id, i, c->n_endpoints, v->priv, v->account.id);
    snprintf(what, sizeof what, "endpoint %u %s%s", i, st->desc,
             state == ENDPOINT_UNMARKED ? "" : " (--force over a marker that did not fit)");
    {
        int arc = admin_audit_event(v, "endpoint-mark", what, rc, 0);

        rc = rc < 0 ? rc : arc;
    }
    if (rc < 0)
        cli_report(rc);
    else {
        printf("endpoint %u (%s): marked\n", i, st->desc);
        (*marked)++;
    }
    store_close(st);
    return rc;
}

int prepare_endpoint_mark(struct admin_ctx *c)
{
    (void)c;
    vault_tolerate_offline_endpoints(1);   /* this is how they come back */
    return EXIT_OK;
}

/* pactfs-admin endpoint-mark [--endpoint N] [--force]: a sysadmin writes the
 * signed endpoint markers (endpoint.h) and pins them as required. */
int cmd_endpoint_mark(struct admin_ctx *c)
{
    struct vault *v = c->v;
    unsigned marked = 0, ok = 0;
    int rc = 0, first_rc = 0;

    if (!(v->account.roles & ROLE_SYSADMIN))
        return pfs_err(-EACCES, "\"%s\" is not a sysadmin: only a sysadmin marks endpoints",
                       c->account);
    if (c->a.endpoint >= (long)v->conf.n_endpoints)
        return pfs_err(-EINVAL, "--endpoint %ld: the vault has endpoints 0 to %u",
                       c->a.endpoint, v->conf.n_endpoints - 1);
    for (unsigned i = 0; i < v->conf.n_endpoints; i++) {
        if (c->a.endpoint >= 0 && i != (unsigned)c->a.endpoint)
            continue;
        rc = mark_one(v, i, c->a.force, &marked);
        if (rc < 0 && !first_rc)
            first_rc = rc;
    }
    /* Required from now on once every endpoint verifies. */
    for (unsigned i = 0; i < v->conf.n_endpoints; i++) {
        struct store *st = NULL;
        char why[400];

        if (endpoint_open_store(&v->conf.endpoints[i], i, 0, &st) == 0 &&
            endpoint_mark_read(st, v->meta, v->conf.vault_id, v->conf.root_fingerprint, i,
                               why, sizeof why, NULL, NULL) == ENDPOINT_OK)
            ok++;
        store_close(st);
    }
    if (ok == v->conf.n_endpoints && !v->conf.endpoint_markers_required) {
        v->conf.endpoint_markers_required = 1;
        rc = conf_write(v->conf.file, &v->conf);
        if (rc < 0)
            fprintf(stderr, PROG ": cannot pin the markers in %s: %s\n", v->conf.file,
                    pfs_err_msg());
        else
            printf("Every endpoint is marked: %s now requires it (vault.endpoint_markers = "
                   "\"required\"); copy that setting to the other workstations' "
                   "configurations.\n", v->conf.file);
        if (rc < 0 && !first_rc)
            first_rc = rc;
    }
    if (first_rc)
        return admin_exit_code(first_rc);   /* each failure was reported where it happened */
    printf("%u endpoint(s) marked now.%s\n", marked,
           marked ? " An endpoint that was replaced gets its fragments back with "
           "pactfs-fsck --repair." : "");
    return EXIT_OK;
}
