/* pactfs-admin: create and administer vaults.  Each command is a short
 * function over vault.c; this file holds the command line only. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "accounts.h"
#include "audit_query.h"
#include "audit_report.h"
#include "audit_ship.h"
#include "cli.h"
#include "crypto.h"
#include "endpoint.h"
#include "error.h"
#include "cosign.h"
#include "exitcodes.h"
#include "grants.h"
#include "keyring.h"
#include "pwpolicy.h"
#include "registry.h"
#include "review.h"
#include "secmem.h"
#include "rekey.h"
#include "upgrade.h"
#include "vault.h"

#define PROG "pactfs-admin"

/* One row per subcommand (the table is at the end of this file): its
 * synopsis and help text, the positional arguments before VAULT_DIR, and the
 * common options it accepts.  `pactfs-admin CMD --help` prints its row; a
 * missing argument is named from args.  A new subcommand adds a row here, a
 * section in docs/man/pactfs-admin.8 and, if it exits with a new code, a line
 * in docs/exit-codes.md. */
enum {
    OPT_CONFIG = 1 << 0,      /* --config FILE instead of VAULT_DIR */
    OPT_ACCOUNT = 1 << 1,     /* --account NAME: the acting account */
    OPT_PASSFILE = 1 << 2,    /* --passfile FILE: its password */
    OPT_NEW_PASSFILE = 1 << 3,
    OPT_ADMIN_TOKEN = 1 << 4, /* --keyd-admin-token FILE */
    OPT_ROLE = 1 << 5,
    OPT_NO_BACKUP = 1 << 6,   /* upgrade: the operator backed up PostgreSQL */
    OPT_CODE_FILE = 1 << 7,   /* --code-file FILE: an enrolment code */
    OPT_DETAILS = 1 << 8,     /* --full-name --email --department --expires */
    OPT_CODE_VALID = 1 << 9,  /* --code-valid-hours H */
    OPT_POLICY = 1 << 10,     /* --min-length --dictionary --history */
    OPT_REKEY = 1 << 11,      /* revoke --rekey */
    OPT_JSON = 1 << 12,       /* --json: machine-readable output */
    OPT_ENDPOINT = 1 << 13,   /* endpoint-mark: --endpoint N, --force */
    OPT_REQUIRED = 1 << 14,   /* cosign-policy --required yes|no */
};
#define OPT_ACTING (OPT_CONFIG | OPT_ACCOUNT | OPT_PASSFILE)

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *args;         /* positionals before VAULT_DIR, space-separated */
    unsigned opts;            /* OPT_* accepted */
    const char *summary;      /* one line for the command list */
    const char *synopsis;     /* after "pactfs-admin NAME " */
    const char *help;         /* what it does and its options */
};

static const struct command *current;   /* the subcommand being run */

static void command_usage(const struct command *c, FILE *out)
{
    fprintf(out, "Usage: pactfs-admin %s %s\n\n%s", c->name, c->synopsis, c->help);
}

/* A command line mistake: say what is wrong, then the command's synopsis. */
__attribute__((format(printf, 1, 2)))
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, PROG "%s%s: ", current ? " " : "", current ? current->name : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (current)
        fprintf(stderr, "\nUsage: pactfs-admin %s %s\n(pactfs-admin %s --help for more)\n",
                current->name, current->synopsis, current->name);
    else
        fprintf(stderr, "\n(pactfs-admin --help for more)\n");
    return EXIT_USAGE;
}

static int parse_uint(const char *opt, const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || end == s || v > max) {
        fprintf(stderr, PROG ": %s wants a number up to %lu, not \"%s\"\n", opt, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int cmd_init(int argc, char **argv)
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
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
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
    if (argc - optind < 1)
        return usage_error("missing DIR (the directory to create the vault in)");
    if (argc - optind > 1)
        return usage_error("unexpected argument \"%s\"", argv[optind + 1]);
    o.dir = argv[optind];
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
        cli_report(PROG, rc);
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

/* ---- commands on an existing vault ---- */

struct vault_args {
    const char *conf_path;
    const char *account;
    const char *passfile;
    const char *new_passfile;
    const char *admin_token;
    const char *role;
    int no_backup;
    const char *code_file;
    const char *full_name, *email, *department, *expires;
    unsigned long code_valid_h;
    int allow_legacy;          /* upgrade: unlock a vault without a signed head */
    long min_length, history;            /* -1: not given */
    int dictionary;                      /* -1: not given */
    int rekey;                           /* revoke --rekey */
    int json;                            /* --json */
    long endpoint;                       /* -1: every endpoint */
    int force;
    int required;                        /* --required: -1 not given */
    char conf_buf[4096];
};

static const struct {
    unsigned bit;
    const char *name;
} opt_names[] = {
    { OPT_CONFIG, "--config" }, { OPT_ACCOUNT, "--account" }, { OPT_PASSFILE, "--passfile" },
    { OPT_NEW_PASSFILE, "--new-passfile" }, { OPT_ADMIN_TOKEN, "--keyd-admin-token" },
    { OPT_ROLE, "--role" }, { OPT_NO_BACKUP, "--no-backup" },
    { OPT_CODE_FILE, "--code-file" },
    { OPT_DETAILS, "--full-name/--email/--department/--expires" },
    { OPT_CODE_VALID, "--code-valid-hours" },
    { OPT_POLICY, "--min-length/--dictionary/--history" },
    { OPT_REKEY, "--rekey" }, { OPT_JSON, "--json" },
    { OPT_ENDPOINT, "--endpoint/--force" },
    { OPT_REKEY, "--rekey" }, { OPT_JSON, "--json" }, { OPT_REQUIRED, "--required" },
};

/* The n-th (0-based) word of a space-separated list, into out. */
static const char *nth_word(const char *list, int n, char *out, size_t outlen)
{
    for (; n > 0 && list; n--) {
        list = strchr(list, ' ');
        if (list)
            list++;
    }
    if (!list)
        return NULL;
    snprintf(out, outlen, "%.*s", (int)strcspn(list, " "), list);
    return out;
}

/* Common options of the current command; positional arguments are left in
 * argv[optind..].  Options the command does not take are refused, never
 * silently ignored. */
static int parse_vault_args(int argc, char **argv, struct vault_args *a, int positionals)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "account", required_argument, NULL, 'a' },
        { "passfile", required_argument, NULL, 'p' },
        { "new-passfile", required_argument, NULL, 'n' },
        { "keyd-admin-token", required_argument, NULL, 'T' },
        { "role", required_argument, NULL, 'r' },
        { "no-backup", no_argument, NULL, 'B' },
        { "code-file", required_argument, NULL, 'C' },
        { "full-name", required_argument, NULL, 'N' },
        { "email", required_argument, NULL, 'e' },
        { "department", required_argument, NULL, 'd' },
        { "expires", required_argument, NULL, 'x' },
        { "code-valid-hours", required_argument, NULL, 'H' },
        { "min-length", required_argument, NULL, 'L' },
        { "history", required_argument, NULL, 'R' },
        { "dictionary", required_argument, NULL, 'D' },
        { "rekey", no_argument, NULL, 'K' },
        { "json", no_argument, NULL, 'J' },
        { "endpoint", required_argument, NULL, 'E' },
        { "force", no_argument, NULL, 'F' },
        { "required", required_argument, NULL, 'Q' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    unsigned used = 0, allowed = current ? current->opts : ~0u;
    unsigned long n;
    int c, have, want;
    char word[64];

    a->min_length = a->history = a->dictionary = a->endpoint = a->required = -1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': a->conf_path = optarg; used |= OPT_CONFIG; break;
        case 'a': a->account = optarg; used |= OPT_ACCOUNT; break;
        case 'p': a->passfile = optarg; used |= OPT_PASSFILE; break;
        case 'n': a->new_passfile = optarg; used |= OPT_NEW_PASSFILE; break;
        case 'T': a->admin_token = optarg; used |= OPT_ADMIN_TOKEN; break;
        case 'r': a->role = optarg; used |= OPT_ROLE; break;
        case 'B': a->no_backup = 1; used |= OPT_NO_BACKUP; break;
        case 'C': a->code_file = optarg; used |= OPT_CODE_FILE; break;
        case 'N': a->full_name = optarg; used |= OPT_DETAILS; break;
        case 'e': a->email = optarg; used |= OPT_DETAILS; break;
        case 'd': a->department = optarg; used |= OPT_DETAILS; break;
        case 'x': a->expires = optarg; used |= OPT_DETAILS; break;
        case 'H': if (parse_uint("--code-valid-hours", optarg, 24 * 90, &a->code_valid_h) ||
                      !a->code_valid_h) return -1;
                  used |= OPT_CODE_VALID;
                  break;
        case 'L': if (parse_uint("--min-length", optarg, 1024, &n)) return -1;
                  a->min_length = (long)n; used |= OPT_POLICY; break;
        case 'R': if (parse_uint("--history", optarg, PWPOLICY_HISTORY_MAX, &n)) return -1;
                  a->history = (long)n; used |= OPT_POLICY; break;
        case 'D': if (strcmp(optarg, "yes") && strcmp(optarg, "no")) {
                      usage_error("--dictionary wants yes or no");
                      return -1;
                  }
                  a->dictionary = !strcmp(optarg, "yes"); used |= OPT_POLICY; break;
        case 'K': a->rekey = 1; used |= OPT_REKEY; break;
        case 'J': a->json = 1; used |= OPT_JSON; break;
        case 'E': if (parse_uint("--endpoint", optarg, EC_MAX_FRAGS - 1, &n)) return -1;
                  a->endpoint = (long)n; used |= OPT_ENDPOINT; break;
        case 'F': a->force = 1; used |= OPT_ENDPOINT; break;
        case 'Q': if (strcmp(optarg, "yes") && strcmp(optarg, "no"))
                      return usage_error("--required wants yes or no");
                  a->required = !strcmp(optarg, "yes"); used |= OPT_REQUIRED; break;
        case 'h': command_usage(current, stdout); exit(EXIT_OK);
        default: usage_error("unknown option or missing option value"); return -1;
        }
    }
    for (size_t i = 0; i < sizeof opt_names / sizeof opt_names[0]; i++)
        if ((used & opt_names[i].bit) && !(allowed & opt_names[i].bit)) {
            usage_error("%s does not apply to this command", opt_names[i].name);
            return -1;
        }
    have = argc - optind;
    want = positionals + (a->conf_path ? 0 : 1);
    if (have < want) {
        if (!nth_word(current ? current->args : "", have, word, sizeof word))
            snprintf(word, sizeof word, "VAULT_DIR (or --config FILE)");
        usage_error("missing %s", word);
        return -1;
    }
    if (have > want) {
        usage_error("unexpected argument \"%s\"", argv[optind + want]);
        return -1;
    }
    if (!a->conf_path) {
        snprintf(a->conf_buf, sizeof a->conf_buf, "%s/pactfs.conf", argv[argc - 1]);
        a->conf_path = a->conf_buf;
    }
    return 0;
}

/* After the vault is open, a name that does not resolve is the caller's
 * mistake (16), not a broken store (7). */
static int admin_exit_code(int rc)
{
    return rc == -ENOENT ? EXIT_NOT_FOUND : cli_exit_code_for(rc);
}

/* Stages 1 and 2 of the vault opening (vault.h): storage and the key
 * provider, no account unlocked.  An exit code. */
static int open_storage_and_keys(const struct vault_args *a, struct vault **v)
{
    int rc = vault_open(a->conf_path, v);

    if (rc < 0) {
        cli_report(PROG, rc);
        return rc == -ENOENT ? EXIT_CONFIG : cli_open_exit_code(rc);
    }
    return EXIT_OK;
}

/* Stages 1 and 2, and the account stage 3 will unlock. */
static int open_vault(const struct vault_args *a, struct vault **v, const char **account)
{
    int code = open_storage_and_keys(a, v);

    *account = NULL;
    if (code != EXIT_OK)
        return code;
    *account = a->account ? a->account : (*v)->conf.default_account;
    if (!*account) {
        fprintf(stderr, PROG ": no account given: use --account NAME\n");
        vault_close(*v);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* Change password or rotate share: both re-seal the account key. */
static int cmd_reseal(int argc, char **argv, int rotate)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    struct meta_account acct;
    const char *account = NULL;
    char *old_pw = NULL, *new_pw = NULL, key_name[META_ACCOUNT_NAME_MAX + 1];
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    int rc, code;

    if (parse_vault_args(argc, argv, &a, 0) < 0)
        return EXIT_USAGE;
    code = open_vault(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    secmem_harden_process();
    rc = meta_account_get_by_name(v->meta, account, &acct);
    if (rc < 0) {
        fprintf(stderr, PROG ": no account \"%s\" in this vault\n", account);
        vault_close(v);
        return EXIT_NOT_FOUND;
    }
    /* The key stays sealed under the name it was created with (a rename
     * changes only the account's name). */
    rc = vault_account_key_name(v, account, key_name, sizeof key_name);
    if (rc < 0) {
        cli_report(PROG, rc);
        code = cli_exit_code_for(rc);
        goto out;
    }
    old_pw = cli_read_password(a.passfile, NULL, "Current password: ", 0);
    if (old_pw && !rotate)
        new_pw = cli_read_password(a.new_passfile, NULL, "New password: ", 1);
    if (!old_pw || (!rotate && !new_pw)) {
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        code = EXIT_PASSWORD_INPUT;
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
        if (rc == -EKEYREJECTED)
            fprintf(stderr, PROG ": wrong password for account \"%s\"; nothing was changed\n",
                    account);
        else
            cli_report(PROG, rc);
        code = cli_exit_code_for(rc);
        goto out;
    }
    printf(rotate ? "The key share of \"%s\" was replaced.\n"
                  : "The password of \"%s\" was changed; the old one no longer works.\n",
           account);
    code = EXIT_OK;
out:
    free(sealed);
    secmem_free_str(old_pw);
    secmem_free_str(new_pw);
    meta_account_clear(&acct);
    vault_close(v);
    return code;
}

static int cmd_passwd(int argc, char **argv) { return cmd_reseal(argc, argv, 0); }
static int cmd_rotate_share(int argc, char **argv) { return cmd_reseal(argc, argv, 1); }

/* pactfs-admin keyd unlock|disable|enable ACCOUNT VAULT */
static int cmd_keyd(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct pactfs_conf c;
    struct share_provider *sp = NULL;
    struct keyd_client_config kc = { 0 };
    char err[512];
    const char *op, *account;
    int rc;

    if (parse_vault_args(argc, argv, &a, 2) < 0)
        return EXIT_USAGE;
    op = argv[optind];
    account = argv[optind + 1];
    if (strcmp(op, "unlock") && strcmp(op, "disable") && strcmp(op, "enable")) {
        fprintf(stderr, PROG ": keyd wants unlock, disable or enable, not \"%s\"\n", op);
        return EXIT_USAGE;
    }
    if (conf_load(a.conf_path, &c, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return EXIT_CONFIG;
    }
    if (strcmp(c.share_provider, "keyd") != 0) {
        fprintf(stderr, PROG ": %s keeps its shares in a local key directory, not a key "
                "service: there is nothing to %s\n", a.conf_path, op);
        conf_free(&c);
        return EXIT_USAGE;
    }
    kc.url = c.keyd_url;
    kc.ca_file = c.keyd_tls.ca_file;
    kc.cert_file = c.keyd_tls.cert_file;
    kc.key_file = c.keyd_tls.key_file;
    kc.admin_token_file = a.admin_token;
    rc = share_keyd_open(&kc, &sp);
    if (rc == 0)
        rc = share_keyd_admin(sp, op, c.vault_id, account);
    if (rc < 0)
        cli_report(PROG, rc);
    else
        printf("Key service: %s of \"%s\" done.\n", op, account);
    share_provider_destroy(sp);
    conf_free(&c);
    return admin_exit_code(rc);
}

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

/* Parse VAULT_DIR|--config and open the vault without unlocking any
 * account: an exit code. */
static int open_vault_plain_n(int argc, char **argv, struct vault_args *a, struct vault **v,
                              int positionals)
{
    if (parse_vault_args(argc, argv, a, positionals) < 0)
        return EXIT_USAGE;
    return open_storage_and_keys(a, v);
}

static int open_vault_plain(int argc, char **argv, struct vault_args *a, struct vault **v)
{
    return open_vault_plain_n(argc, argv, a, v, 0);
}

static int cmd_audit_ship(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    int rc, code = open_vault_plain(argc, argv, &a, &v);

    if (code != EXIT_OK)
        return code;
    if (!v->conf.audit_url) {
        fprintf(stderr, PROG ": %s sets no audit.url: there is no receiver to ship to\n",
                a.conf_path);
        vault_close(v);
        return EXIT_CONFIG;
    }
    rc = audit_ship_pending(&v->conf, 30000);
    if (rc < 0) {
        cli_report(PROG, rc);
        vault_close(v);
        return EXIT_STORE;
    }
    printf("%s: everything in the spool is at %s.\n", v->conf.audit_spool, v->conf.audit_url);
    vault_close(v);
    return EXIT_OK;
}

static int cmd_audit_verify(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    struct key_lookup kl = { 0 };
    struct audit_verify_result res;
    int rc, code = open_vault_plain(argc, argv, &a, &v);

    if (code != EXIT_OK)
        return code;
    kl.meta = v->meta;
    kl.conf = &v->conf;
    /* Format 3 sessions prove their signer from the pinned root; format 2
     * lines (older spools) name theirs and are looked up by name. */
    rc = audit_verify(v->conf.audit_spool, v->conf.root_fingerprint, key_for_account, &kl, &res);
    for (size_t i = 0; i < kl.n; i++)
        EVP_PKEY_free(kl.keys[i]);
    if (rc < 0) {
        cli_report(PROG, rc);
        vault_close(v);
        return EXIT_INTEGRITY;
    }
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
    vault_close(v);
    return EXIT_OK;
}

/* ---- audit query, summary, denied (auditors) ---- */

static int open_unlocked(const struct vault_args *a, struct vault **v, const char **account);

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

struct audit_cmd {
    struct vault_args va;
    struct audit_filter f;
    enum audit_out fmt;
    enum audit_report kind;
    const char *receiver, *ca, *cert, *key;
};

static int parse_audit_args(int argc, char **argv, struct audit_cmd *q)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "account", required_argument, NULL, 'a' },
        { "passfile", required_argument, NULL, 'p' },
        { "by", required_argument, NULL, 'b' },
        { "path", required_argument, NULL, 'P' },
        { "file", required_argument, NULL, 'F' },
        { "op", required_argument, NULL, 'o' },
        { "result", required_argument, NULL, 'r' },
        { "from", required_argument, NULL, 'f' },
        { "until", required_argument, NULL, 'u' },
        { "follow-renames", no_argument, NULL, 'R' },
        { "all", no_argument, NULL, 'A' },
        { "format", required_argument, NULL, 'm' },
        { "receiver", required_argument, NULL, 'U' },
        { "ca", required_argument, NULL, 'C' },
        { "cert", required_argument, NULL, 'E' },
        { "key", required_argument, NULL, 'K' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    static const char *const names[] = {
        ['b'] = "account", ['P'] = "path", ['F'] = "file", ['o'] = "op", ['r'] = "result",
        ['f'] = "from", ['u'] = "until",
    };
    int c, rc;

    q->f.skip_checkpoints = 1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': q->va.conf_path = optarg; break;
        case 'a': q->va.account = optarg; break;
        case 'p': q->va.passfile = optarg; break;
        case 'b': case 'P': case 'F': case 'o': case 'r': case 'f': case 'u':
            rc = audit_filter_set(&q->f, names[c], optarg);
            if (rc) {
                usage_error("--%s: %s", c == 'b' ? "by" : names[c], pfs_err_msg());
                return -1;
            }
            break;
        case 'R': audit_filter_set(&q->f, "follow_renames", "1"); break;
        case 'A': q->f.skip_checkpoints = 0; break;
        case 'm': if (audit_out_parse(optarg, &q->fmt)) {
                      usage_error("--format wants table, json or csv, not \"%s\"", optarg);
                      return -1;
                  }
                  break;
        case 'U': q->receiver = optarg; break;
        case 'C': q->ca = optarg; break;
        case 'E': q->cert = optarg; break;
        case 'K': q->key = optarg; break;
        case 'h': command_usage(current, stdout); exit(EXIT_OK);
        default: usage_error("unknown option or missing option value"); return -1;
        }
    }
    if (q->f.follow_renames && !q->f.path) {
        usage_error("--follow-renames needs --path (the files whose names match it)");
        return -1;
    }
    if (!q->receiver && (q->ca || q->cert || q->key)) {
        usage_error("--ca, --cert and --key are for --receiver");
        return -1;
    }
    if (q->receiver && (!q->cert || !q->key)) {
        usage_error("--receiver needs the auditor's certificate: --cert FILE --key FILE");
        return -1;
    }
    if (argc - optind < 1 + !q->va.conf_path) {
        usage_error(argc - optind < 1 ? "missing query, summary or denied" :
                    "missing VAULT_DIR (or --config FILE)");
        return -1;
    }
    if (argc - optind > 1 + !q->va.conf_path) {
        usage_error("unexpected argument \"%s\"", argv[optind + 1 + !q->va.conf_path]);
        return -1;
    }
    if (!strcmp(argv[optind], "query"))
        q->kind = AUDIT_REPORT_EVENTS;
    else if (!strcmp(argv[optind], "summary"))
        q->kind = AUDIT_REPORT_SUMMARY;
    else if (!strcmp(argv[optind], "denied"))
        q->kind = AUDIT_REPORT_DENIED;
    else {
        usage_error("\"%s\" is none of query, summary, denied", argv[optind]);
        return -1;
    }
    if (!q->va.conf_path) {
        snprintf(q->va.conf_buf, sizeof q->va.conf_buf, "%s/pactfs.conf", argv[argc - 1]);
        q->va.conf_path = q->va.conf_buf;
    }
    return 0;
}

/* Read the trail (local spool, verified first, or the receiver), select,
 * print: an exit code. */
static int audit_answer(struct vault *v, struct audit_cmd *q, EVP_PKEY *names_priv,
                        uint64_t *count)
{
    struct audit_remote r = {
        .url = q->receiver,
        .tls = { q->ca ? q->ca : v->conf.audit_tls.ca_file, q->cert, q->key },
        .vault = v->conf.vault_id, .f = &q->f,
        .forward_path = 0,      /* names are sealed: paths are matched here, once opened */
    };
    struct audit_revealed rv = { .names_priv = names_priv, .vault = v->conf.vault_id };
    struct collected col = { 0 };
    int rc = 0;

    if (!q->receiver) {
        struct key_lookup kl = { .meta = v->meta, .conf = &v->conf };
        struct audit_verify_result res;

        rc = audit_verify(v->conf.audit_spool, v->conf.root_fingerprint, key_for_account, &kl,
                          &res);
        for (size_t i = 0; i < kl.n; i++)
            EVP_PKEY_free(kl.keys[i]);
        if (rc < 0) {
            cli_report(PROG, rc);
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
        rc = audit_query_run(&q->f, audit_scan_revealed, &rv, collect_event, &col);
    if (rc == 0)
        rc = audit_report_print(stdout, q->fmt, q->kind, col.evs, col.n);
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
        cli_report(PROG, rc);
        return rc == -EACCES ? EXIT_ACCESS : rc == -EHOSTUNREACH || rc == -EIO ? EXIT_STORE :
               rc == -EBADMSG ? EXIT_INTEGRITY : EXIT_FAILURE_OTHER;
    }
    return EXIT_OK;
}

static int cmd_audit(int argc, char **argv)
{
    struct audit_cmd q = { .fmt = AUDIT_OUT_TABLE };
    EVP_PKEY *names_priv = NULL;
    struct vault *v = NULL;
    const char *account = NULL;
    uint64_t count = 0;
    int code, rc;

    audit_filter_init(&q.f);
    if (parse_audit_args(argc, argv, &q) < 0) {
        audit_filter_free(&q.f);
        return EXIT_USAGE;
    }
    code = open_unlocked(&q.va, &v, &account);
    if (code != EXIT_OK) {
        audit_filter_free(&q.f);
        return code;
    }
    if (!(v->account.roles & ROLE_AUDITOR)) {
        rc = pfs_err(-EACCES, "\"%s\" is not an auditor: only auditor accounts query the "
                     "audit trail", account);
        (void)vault_audit_failure(v, account, "audit-query", "", rc);
        cli_report(PROG, rc);
        audit_filter_free(&q.f);
        vault_close(v);
        return EXIT_ACCESS;
    }
    rc = audit_names_private(v->meta, v->conf.vault_id, v->conf.root_fingerprint, v->priv,
                             v->account.id, &names_priv);
    if (rc == -ENOENT) {
        fprintf(stderr, PROG ": note: %s; sealed names stay sealed\n", pfs_err_msg());
    } else if (rc < 0) {
        cli_report(PROG, rc);
        audit_filter_free(&q.f);
        vault_close(v);
        return EXIT_INTEGRITY;
    }
    code = audit_answer(v, &q, names_priv, &count);
    EVP_PKEY_free(names_priv);
    if (v->audit) {   /* the question is audited, not its answer or the names asked for */
        struct audit_ctx who = { getuid(), getpid() };
        rc = audit_event(v->audit, &who, "audit-query", "", code == EXIT_OK ? 0 : -EIO, count);
        if (rc < 0 && code == EXIT_OK) {
            cli_report(PROG, rc);
            code = EXIT_AUDIT;
        }
    }
    audit_filter_free(&q.f);
    vault_close(v);
    return code;
}

static int cmd_folder_create(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    const char *account = NULL, *name;
    char *pw;
    int rc, code;

    if (parse_vault_args(argc, argv, &a, 1) < 0)
        return EXIT_USAGE;
    name = argv[optind];
    code = open_vault(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    secmem_harden_process();
    pw = cli_read_password(a.passfile, NULL, "Password: ", 0);
    if (!pw) {
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        vault_close(v);
        return EXIT_PASSWORD_INPUT;
    }
    rc = vault_unlock(v, account, pw);
    secmem_free_str(pw);
    if (rc == 0)
        rc = vault_folder_create(v, name, NULL);
    if (rc < 0) {
        cli_report(PROG, rc);
        code = v->audit_failed ? EXIT_AUDIT : admin_exit_code(rc);
    } else {
        printf("Created folder \"%s\"; \"%s\" can read, write and manage it.\n", name, account);
        code = EXIT_OK;
    }
    vault_close(v);
    return code;
}

/* ---- accounts and grants ---- */

/* Open the vault (stages 1 and 2) and unlock the acting account (stage 3:
 * --account, --passfile). */
static int open_unlocked(const struct vault_args *a, struct vault **v, const char **account)
{
    char *pw;
    int rc, code;

    /* The key service wants its admin token to enroll or disable. */
    if (a->admin_token)
        setenv("PACTFS_KEYD_ADMIN_TOKEN_FILE", a->admin_token, 1);
    code = open_vault(a, v, account);
    if (code != EXIT_OK)
        return code;
    secmem_harden_process();
    (*v)->allow_legacy = a->allow_legacy;
    pw = cli_read_password(a->passfile, NULL, "Password: ", 0);
    if (!pw) {
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        vault_close(*v);
        return EXIT_PASSWORD_INPUT;
    }
    rc = vault_unlock(*v, *account, pw);
    secmem_free_str(pw);
    if (rc < 0) {
        cli_report(PROG, rc);
        code = (*v)->audit_failed ? EXIT_AUDIT : admin_exit_code(rc);
        vault_close(*v);
        return code;
    }
    return EXIT_OK;
}

static int finish_command(struct vault *v, int rc, const char *done)
{
    int code = admin_exit_code(rc);

    if (rc < 0)
        cli_report(PROG, rc);
    else
        printf("%s\n", done);
    vault_close(v);
    return code;
}

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

static int cmd_account_add(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct registry_details d;
    struct vault *v = NULL;
    const char *account, *name;
    char enrol_code[ENROL_CODE_TEXT_MAX];
    uint32_t roles = 0;
    int rc, code;

    if (parse_vault_args(argc, argv, &a, 1) < 0)
        return EXIT_USAGE;
    name = argv[optind];
    if (!a.role || registry_roles_parse(a.role, &roles) < 0) {
        fprintf(stderr, PROG ": account-add needs --role ROLES: %s\n",
                a.role ? pfs_err_msg() : "sysadmin, dataadmin, auditor or user");
        return EXIT_USAGE;
    }
    memset(&d, 0, sizeof d);
    if (details_from_args(&a, &d) < 0)
        return EXIT_USAGE;
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    rc = grants_account_add(v, name, roles, &d, (unsigned)(a.code_valid_h * 3600), enrol_code);
    if (rc == 0)
        print_code(name, enrol_code, a.code_valid_h);
    explicit_bzero(enrol_code, sizeof enrol_code);
    if (rc == COSIGN_PENDING)
        return finish_command(v, 0, "Proposed: the account is registered (and its code printed) "
                              "once a second sysadmin runs the same account-add command.");
    return finish_command(v, rc, rc == 0 ? "The account can receive grants once enrolled." : "");
}

static int cmd_account_reenrol(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    const char *account, *name;
    char enrol_code[ENROL_CODE_TEXT_MAX];
    int rc, code;

    if (parse_vault_args(argc, argv, &a, 1) < 0)
        return EXIT_USAGE;
    name = argv[optind];
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    rc = grants_account_reenrol(v, name, (unsigned)(a.code_valid_h * 3600), enrol_code);
    if (rc == 0)
        print_code(name, enrol_code, a.code_valid_h);
    explicit_bzero(enrol_code, sizeof enrol_code);
    return finish_command(v, rc, rc == 0 ? "Its old key no longer counts; once it has enrolled "
                          "again, a dataadmin grants its folders anew." : "");
}

static void policy_format(const struct pwpolicy *p, char *out, size_t len)
{
    snprintf(out, len, "min-length=%u dictionary=%s history=%u", p->min_length,
             p->dictionary ? "yes" : "no", p->history);
}

/* pactfs-admin password-policy VAULT [--min-length N] [--dictionary yes|no]
 * [--history N]: show it, or (as a sysadmin) change it. */
static int cmd_password_policy(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    struct pwpolicy p;
    const char *account;
    char before[96], after[96], what[256];
    int rc, code;

    if (parse_vault_args(argc, argv, &a, 0) < 0)
        return EXIT_USAGE;
    if (a.min_length < 0 && a.history < 0 && a.dictionary < 0) {
        rc = vault_open(a.conf_path, &v);
        if (rc == 0)
            rc = pwpolicy_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &p);
        if (rc == 0) {
            policy_format(&p, before, sizeof before);
            printf("%s\n", before);
        } else {
            cli_report(PROG, rc);
        }
        vault_close(v);
        return cli_exit_code_for(rc);
    }
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    rc = v->account.roles & ROLE_SYSADMIN ? 0 :
         pfs_err(-EACCES, "\"%s\" is not a sysadmin: only a sysadmin sets the password "
                 "policy", account);
    before[0] = after[0] = '\0';
    if (rc == 0) {
        /* A policy that does not verify is replaced from the defaults. */
        if (pwpolicy_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &p) < 0)
            pwpolicy_defaults(&p);
        policy_format(&p, before, sizeof before);
        if (a.min_length >= 0)
            p.min_length = (unsigned)a.min_length;
        if (a.history >= 0)
            p.history = (unsigned)a.history;
        if (a.dictionary >= 0)
            p.dictionary = a.dictionary;
        policy_format(&p, after, sizeof after);
        rc = pwpolicy_store(v->meta, v->conf.vault_id, &p, v->priv, v->account.id);
    }
    snprintf(what, sizeof what, "password policy %s -> %s", before, after);
    if (v->audit) {
        struct audit_ctx who = { getuid(), getpid() };
        int arc = audit_event(v->audit, &who, "policy-change", what, rc, 0);

        rc = rc < 0 ? rc : arc;
    }
    snprintf(what, sizeof what, "Password policy: %s.", after);
    return finish_command(v, rc, what);
}

/* pactfs-admin enroll NAME VAULT: run by the account's owner. */
static int cmd_enroll(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    const char *name;
    char *enrol_code = NULL, *pw = NULL, fp[REGISTRY_FP_HEX + 1];
    int rc;

    if (parse_vault_args(argc, argv, &a, 1) < 0)
        return EXIT_USAGE;
    name = argv[optind];
    /* A key service still wants its admin token to enrol a share. */
    if (a.admin_token)
        setenv("PACTFS_KEYD_ADMIN_TOKEN_FILE", a.admin_token, 1);
    rc = vault_open(a.conf_path, &v);
    if (rc < 0) {
        cli_report(PROG, rc);
        return rc == -EINVAL || rc == -ENOENT ? EXIT_CONFIG : cli_exit_code_for(rc);
    }
    secmem_harden_process();
    enrol_code = cli_read_password(a.code_file, NULL, "Enrolment code: ", 0);
    if (enrol_code)
        pw = cli_read_password(a.new_passfile, NULL, "Choose your password: ", 1);
    if (!enrol_code || !pw) {
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        secmem_free_str(enrol_code);
        vault_close(v);
        return EXIT_PASSWORD_INPUT;
    }
    fprintf(stderr, "Generating the RSA-3072 key of \"%s\" on this machine...\n", name);
    rc = accounts_enrol(v, name, enrol_code, pw, NULL, fp);
    secmem_free_str(enrol_code);
    secmem_free_str(pw);
    if (rc == 0)
        printf("Enrolled \"%s\". Its public key fingerprint (SHA-256):\n%s\n"
               "Tell it to the dataadmin who grants you folders, so they can check it.\n",
               name, fp);
    else
        cli_report(PROG, rc);
    vault_close(v);
    return cli_exit_code_for(rc);
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

static int cmd_account_disable(int argc, char **argv, int disabled)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    const char *account, *name;
    char done[200];
    int rc, code;

    if (parse_vault_args(argc, argv, &a, 1) < 0)
        return EXIT_USAGE;
    name = argv[optind];
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    rc = grants_account_disable(v, name, disabled);
    if (rc == 0)
        keyd_switch(v, name, disabled);
    snprintf(done, sizeof done, "Account \"%s\" %s.", name, disabled ? "disabled" : "enabled");
    return finish_command(v, rc, done);
}

static int cmd_account_disable_cmd(int argc, char **argv)
{
    return cmd_account_disable(argc, argv, 1);
}

static int cmd_account_enable_cmd(int argc, char **argv)
{
    return cmd_account_disable(argc, argv, 0);
}

/* pactfs-admin cosign-policy VAULT [--required yes|no] */
static int cmd_cosign_policy(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    const char *account;
    char done[200], before[16], after[16], what[64];
    unsigned n = 0;
    uint64_t cosigner = 0;
    int required = 1, rc, code;

    if (parse_vault_args(argc, argv, &a, 0) < 0)
        return EXIT_USAGE;
    if (a.required < 0) {   /* show: no password */
        struct vault_args plain = { 0 };

        code = open_vault_plain_n(argc, argv, &plain, &v, 0);
        if (code != EXIT_OK)
            return code;
        rc = cosign_needed(v, &required, &n);
        if (rc == 0)
            printf("Co-signature of sysadmin/dataadmin role changes: %s; %u enabled sysadmin(s), "
                   "so it is %s now.\n", required ? "required" : "not required", n,
                   required && n >= 2 ? "needed" : "not needed");
        return finish_command(v, rc, "");
    }
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    rc = !(v->account.roles & ROLE_SYSADMIN)
         ? pfs_err(-EACCES, "\"%s\" is not a sysadmin", account) : cosign_needed(v, &required, &n);
    snprintf(before, sizeof before, "required=%s", required ? "yes" : "no");
    snprintf(after, sizeof after, "required=%s", a.required ? "yes" : "no");
    /* Switching it off is itself a change two sysadmins make; clients
     * honour "off" only with both their items beside it. */
    uint8_t *attest = NULL;
    size_t attest_len = 0;

    if (rc == 0 && !a.required)
        rc = cosign_gate_attest(v, "policy.cosign.change", after, &cosigner, &attest,
                                &attest_len);
    if (rc == 0)
        rc = cosign_set_required(v, a.required, attest, attest_len);
    free(attest);
    if (v->audit) {
        struct audit_ctx who = { getuid(), getpid() };
        struct audit_detail d = { .before = before, .after = after };

        snprintf(what, sizeof what, "co-signature %s", rc == COSIGN_PENDING ? "proposed" : "set");
        int arc = audit_event_detail(v->audit, &who, "policy-change", what,
                                     rc == COSIGN_PENDING ? 0 : rc, 0, &d);
        rc = rc < 0 ? rc : arc < 0 ? arc : rc;
    }
    snprintf(done, sizeof done, rc == COSIGN_PENDING ? "Proposed: %s once a second sysadmin "
             "runs the same command." : "Co-signature setting: %s.", after);
    return finish_command(v, rc == COSIGN_PENDING ? 0 : rc, done);
}

static int cmd_account_details(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    struct registry_details d = { 0 };
    struct grants_details_change c = { NULL, NULL, NULL, GRANTS_EXPIRES_KEEP };
    const char *account;
    char done[200];
    int code = parse_vault_args(argc, argv, &a, 1) < 0 ? EXIT_USAGE : EXIT_OK;

    if (code == EXIT_OK && details_from_args(&a, &d) < 0)
        code = EXIT_USAGE;
    if (code == EXIT_OK && !a.full_name && !a.email && !a.department && !a.expires) {
        usage_error("give at least one of --full-name, --email, --department, --expires");
        code = EXIT_USAGE;
    }
    if (code != EXIT_OK)
        return code;
    c.full_name = a.full_name ? d.full_name : NULL;
    c.email = a.email ? d.email : NULL;
    c.department = a.department ? d.department : NULL;
    if (a.expires)
        c.expires = d.expires;
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    snprintf(done, sizeof done, "The details of \"%s\" are changed.", argv[optind]);
    return finish_command(v, grants_account_set_details(v, argv[optind], &c), done);
}

static int cmd_account_rename(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    const char *account, *old_name, *new_name;
    char done[200];
    int code;

    if (parse_vault_args(argc, argv, &a, 2) < 0)
        return EXIT_USAGE;
    old_name = argv[optind];
    new_name = argv[optind + 1];
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    snprintf(done, sizeof done, "Account \"%s\" is now \"%s\".", old_name, new_name);
    return finish_command(v, grants_account_rename(v, old_name, new_name), done);
}

static int cmd_account_role(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    const char *account, *name;
    char done[200];
    uint32_t roles = 0;
    int rc, code;

    if (parse_vault_args(argc, argv, &a, 1) < 0)
        return EXIT_USAGE;
    name = argv[optind];
    if (!a.role || registry_roles_parse(a.role, &roles) < 0) {
        fprintf(stderr, PROG ": account-role needs --role ROLES: %s\n",
                a.role ? pfs_err_msg() : "sysadmin, dataadmin, auditor or user");
        return EXIT_USAGE;
    }
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    rc = grants_account_set_roles(v, name, roles);
    if (rc == COSIGN_PENDING)
        snprintf(done, sizeof done, "Proposed: \"%s\" gets roles %s once a second sysadmin "
                 "runs the same account-role command (within 7 days).", name, a.role);
    else
        snprintf(done, sizeof done, "Account \"%s\" now has roles %s.", name, a.role);
    return finish_command(v, rc == COSIGN_PENDING ? 0 : rc, done);
}

static int cmd_grant(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    const char *account, *folder, *grantee;
    char done[300];
    uint32_t rights = 0;
    int code;

    if (parse_vault_args(argc, argv, &a, 3) < 0)
        return EXIT_USAGE;
    folder = argv[optind];
    grantee = argv[optind + 1];
    if (grants_rights_parse(argv[optind + 2], &rights) < 0) {
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        return EXIT_USAGE;
    }
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    snprintf(done, sizeof done, "\"%s\" can now %s folder \"%s\" (from its next mount).",
             grantee, argv[optind + 2], folder);
    return finish_command(v, grants_grant(v, folder, grantee, rights), done);
}

/* ---- the audit names key (auditors) ---- */

static int cmd_audit_key(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    struct meta_account target;
    const char *account, *op, *name = NULL;
    char kid[AUDIT_NAMES_KID_HEX + 1] = "", what[300];
    struct audit_ctx who = { getuid(), getpid() };
    int grant = 0, rc, code, arc;

    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "grant"))
            grant = 1;
    if (parse_vault_args(argc, argv, &a, grant ? 2 : 1) < 0)
        return EXIT_USAGE;
    op = argv[optind];
    if (strcmp(op, "create") && strcmp(op, "grant"))
        return usage_error("\"%s\" is neither create nor grant", op);
    if (grant)
        name = argv[optind + 1];
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
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
    arc = v->audit ? audit_event(v->audit, &who, grant ? "audit-key-grant" : "audit-key-create",
                                 what, rc, 0) : 0;
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
    snprintf(what, sizeof what, grant ?
             "\"%s\" can now read the names sealed in the audit trail." :
             "The audit names key %s is made: from each session's next start, paths and names "
             "in audit events are sealed to it; give it to other auditors with pactfs-admin "
             "audit-key grant NAME.", grant ? name : kid);
    if (rc < 0 && arc < 0)
        v->audit_failed = 1;
    return finish_command(v, rc, what);
}

/* ---- re-keying (rekey.h) ---- */

struct rekey_bar {
    int tty;
    const char *folder;
    int64_t last;        /* CLOCK_MONOTONIC ms of the last line */
    int drawn;
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A bar on a terminal (10 updates a second), else a line every 5 s. */
static void rekey_progress(void *arg, const struct rekey_stats *st)
{
    struct rekey_bar *b = arg;
    uint64_t done = st->rekeyed + st->already + st->left;
    int64_t now = now_ms();
    char bar[31];
    unsigned fill;

    if (now - b->last < (b->tty ? 100 : 5000) && (done != st->files || st->meta_todo))
        return;
    b->last = now;
    if (done == st->files && st->meta_todo) {
        /* after the files: names, symlink targets and xattrs */
        if (b->tty) {
            fprintf(stderr, "\rrekey /%s names, symlink targets, xattrs: %" PRIu64 "/%" PRIu64
                    " re-sealed\033[K", b->folder, st->meta_done, st->meta_todo);
            b->drawn = 1;
        } else {
            fprintf(stderr, PROG ": rekey /%s: %" PRIu64 "/%" PRIu64 " names, symlink targets "
                    "and xattrs\n", b->folder, st->meta_done, st->meta_todo);
        }
        return;
    }
    if (!b->tty) {
        if (done != st->files)
            fprintf(stderr, PROG ": rekey /%s: %" PRIu64 "/%" PRIu64 " files\n", b->folder, done,
                    st->files);
        return;
    }
    fill = st->files ? (unsigned)(done * 30 / st->files) : 30;
    memset(bar, '#', fill);
    memset(bar + fill, '.', 30 - fill);
    bar[30] = '\0';
    fprintf(stderr, "\rrekey /%s [%s] %" PRIu64 "/%" PRIu64 " files, %.1f MiB re-sealed",
            b->folder, bar, done, st->files, (double)st->bytes / (1024.0 * 1024.0));
    b->drawn = 1;
}

/* Re-key folder on an unlocked vault and say what was done. */
static int run_rekey(struct vault *v, const char *folder)
{
    struct rekey_bar bar = { isatty(STDERR_FILENO), folder, 0, 0 };
    struct rekey_stats st;
    int rc = rekey_folder(v, folder, rekey_progress, &bar, &st);

    if (bar.drawn)
        fputc('\n', stderr);
    if (rc == 0 || rc == -EBADMSG)
        printf("Folder \"%s\": %" PRIu64 " files re-keyed under fresh data keys (%" PRIu64
               " chunks, %.1f MiB), %" PRIu64 " already under the current key, %" PRIu64
               " left.\n", folder, st.rekeyed, st.chunks, (double)st.bytes / (1024.0 * 1024.0),
               st.already, st.left - st.meta_left);
    if (rc == 0 || rc == -EBADMSG)
        printf("Names, symlink targets and xattrs: %" PRIu64 " re-sealed under the current "
               "key, %" PRIu64 " already (%" PRIu64 " names, %" PRIu64 " targets and xattrs "
               "in all), %" PRIu64 " left.\n", st.resealed,
               st.names + st.values - st.resealed - st.meta_left, st.names, st.values,
               st.meta_left);
    return rc;
}

static int cmd_revoke(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    struct vault_folder *f = NULL;
    const char *account, *folder, *target;
    char done[400];
    int code, rc;

    if (parse_vault_args(argc, argv, &a, 2) < 0)
        return EXIT_USAGE;
    folder = argv[optind];
    target = argv[optind + 1];
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    snprintf(done, sizeof done, "\"%s\" no longer holds folder \"%s\"; its key was rotated "
             "(members' running mounts pick it up within accounts.revocation_check_seconds; "
             "%s).", target, folder,
             a.rekey ? "existing files, names, symlink targets and xattrs were re-keyed"
             : "existing data, names, symlink targets and xattrs stay under the old key until "
             "pactfs-admin rekey");
    rc = grants_revoke(v, folder, target);
    if (rc == 0 && a.rekey) {
        /* the new key version this process just wrapped for itself */
        rc = grants_managed_folder(v, folder, &f);
        if (rc == 0)
            rc = vault_folder_load(v, f->id);
        if (rc == 0)
            rc = run_rekey(v, folder);
        if (rc < 0)
            fprintf(stderr, PROG ": the revoke and key rotation are done; the re-keying is "
                    "not: run pactfs-admin rekey %s to finish it\n", folder);
    }
    return finish_command(v, rc, done);
}

static int cmd_rekey(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    const char *account, *folder;
    int code;

    if (parse_vault_args(argc, argv, &a, 1) < 0)
        return EXIT_USAGE;
    folder = argv[optind];
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    return finish_command(v, run_rekey(v, folder), "Every file of the folder is under its "
                          "current key version.");
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

static int cmd_accounts(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    int rc, code = open_vault_plain(argc, argv, &a, &v);

    if (code != EXIT_OK)
        return code;
    printf("%-24s %-24s %-9s %s\n", "ACCOUNT", "ROLES", "STATE", "REGISTRY");
    rc = meta_account_list(v->meta, print_account, v);
    if (rc < 0)
        cli_report(PROG, rc);
    vault_close(v);
    return cli_exit_code_for(rc);
}

/* ---- access review (review.h) ---- */

/* Print a review (review.h) as text or --json, or report its failure. */
static int finish_review(struct vault *v, int rc, json_object *o, int json,
                         void (*text)(json_object *, FILE *))
{
    int code = EXIT_OK;

    if (rc < 0) {
        cli_report(PROG, rc);
        code = admin_exit_code(rc);
    } else if (json) {
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                     JSON_C_TO_STRING_NOSLASHESCAPE));
    } else {
        text(o, stdout);
    }
    json_object_put(o);
    vault_close(v);
    return code;
}

static int cmd_account_show(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    json_object *o = NULL;
    int rc, code = open_vault_plain_n(argc, argv, &a, &v, 1);

    if (code != EXIT_OK)
        return code;
    rc = review_account(v->meta, v->conf.vault_id, v->conf.root_fingerprint, argv[optind], &o);
    return finish_review(v, rc, o, a.json, review_print_account);
}

static int cmd_folder_members(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    const char *account;
    json_object *o = NULL;
    uint64_t id = 0;
    int rc, code = parse_vault_args(argc, argv, &a, 1) < 0 ? EXIT_USAGE
                   : open_unlocked(&a, &v, &account);

    if (code != EXIT_OK)
        return code;
    rc = grants_folder_id(v, argv[optind], &id);
    if (rc == 0)
        rc = review_folder(v->meta, v->conf.vault_id, v->conf.root_fingerprint, id,
                           argv[optind], &o);
    return finish_review(v, rc, o, a.json, review_print_folder);
}

/* ---- format upgrade ---- */

/* SQLite: back meta.db up before anything migrates it; PostgreSQL: the
 * operator's pg_dump, confirmed with --no-backup. */
static int upgrade_backup(const struct vault_args *a)
{
    struct pactfs_conf c;
    char err[512], bak[4200];
    int made = 0, rc;

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
    if (rc < 0) {
        cli_report(PROG, rc);
        return EXIT_STORE;
    }
    printf(made ? "Backed up the metadata to %s\n"
                : "Keeping the backup an earlier run made: %s\n", bak);
    return EXIT_OK;
}

static int cmd_upgrade(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    struct upgrade_stats st;
    struct audit_ctx who = { getuid(), getpid() };
    const char *account = NULL;
    int rc, code;

    if (parse_vault_args(argc, argv, &a, 0) < 0)
        return EXIT_USAGE;
    code = upgrade_backup(&a);   /* before vault_open migrates the schema */
    if (code != EXIT_OK)
        return code;
    a.allow_legacy = 1;          /* a vault without a signed head yet */
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    rc = upgrade_folders(v, &st);
    if (rc == 0) {
        unsigned done = 0, left = 0;

        rc = grants_upgrade_state(v, &done, &left);
        if (rc == 0)
            printf("Signed folder states: %u folder(s) signed now, %u left for their "
                   "managers; the vault head is signed and anchored.\n", done, left);
    }
    if (v->audit) {
        int arc = audit_event(v->audit, &who, "upgrade", "/", rc,
                              st.entries_bound + st.files_committed);
        if (arc < 0 && rc == 0)
            rc = arc;
    }
    printf("Format 2: %llu entries bound, %llu files committed, %llu already done, "
           "%llu left alone with a problem (see above).\n",
           (unsigned long long)st.entries_bound, (unsigned long long)st.files_committed,
           (unsigned long long)st.already, (unsigned long long)st.problems);
    if (!v->conf.endpoint_markers_required)
        printf("Endpoint markers: this configuration does not require them yet; a sysadmin "
               "writes them with pactfs-admin endpoint-mark (docs/operations-status.md).\n");
    if (rc < 0) {
        cli_report(PROG, rc);
        code = admin_exit_code(rc);
    } else {
        code = st.problems ? EXIT_INTEGRITY : EXIT_OK;
    }
    vault_close(v);
    return code;
}

/* Mark one endpoint (opened directly, not through the vault's guard). */
static int mark_one(struct vault *v, unsigned i, int force, unsigned *marked)
{
    const struct pactfs_conf *c = &v->conf;
    struct audit_ctx who = { getuid(), getpid() };
    struct store *st = NULL;
    enum endpoint_state state;
    char why[400], what[600];
    int rc = endpoint_open_store(&c->endpoints[i], i, 1, &st);

    if (rc < 0) {
        cli_report(PROG, rc);
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
        cli_report(PROG, rc);
        store_close(st);
        return rc;
    }
    rc = endpoint_mark_write(st, c->vault_id, i, c->n_endpoints, v->priv, v->account.id);
    snprintf(what, sizeof what, "endpoint %u %s%s", i, st->desc,
             state == ENDPOINT_UNMARKED ? "" : " (--force over a marker that did not fit)");
    if (v->audit) {
        int arc = audit_event(v->audit, &who, "endpoint-mark", what, rc, 0);

        rc = rc < 0 ? rc : arc;
    }
    if (rc < 0)
        cli_report(PROG, rc);
    else {
        printf("endpoint %u (%s): marked\n", i, st->desc);
        (*marked)++;
    }
    store_close(st);
    return rc;
}

/* pactfs-admin endpoint-mark [--endpoint N] [--force]: a sysadmin writes the
 * signed endpoint markers (endpoint.h) and pins them as required. */
static int cmd_endpoint_mark(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    const char *account;
    unsigned marked = 0, ok = 0;
    int rc = 0, first_rc = 0, code;

    if (parse_vault_args(argc, argv, &a, 0) < 0)
        return EXIT_USAGE;
    vault_tolerate_offline_endpoints(1);   /* this is how they come back */
    code = open_unlocked(&a, &v, &account);
    if (code != EXIT_OK)
        return code;
    if (!(v->account.roles & ROLE_SYSADMIN)) {
        rc = pfs_err(-EACCES, "\"%s\" is not a sysadmin: only a sysadmin marks endpoints",
                     account);
        return finish_command(v, rc, "");
    }
    if (a.endpoint >= (long)v->conf.n_endpoints) {
        rc = pfs_err(-EINVAL, "--endpoint %ld: the vault has endpoints 0 to %u", a.endpoint,
                     v->conf.n_endpoints - 1);
        return finish_command(v, rc, "");
    }
    for (unsigned i = 0; i < v->conf.n_endpoints; i++) {
        if (a.endpoint >= 0 && i != (unsigned)a.endpoint)
            continue;
        rc = mark_one(v, i, a.force, &marked);
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
    code = first_rc ? admin_exit_code(first_rc) : EXIT_OK;
    if (!first_rc)
        printf("%u endpoint(s) marked now.%s\n", marked,
               marked ? " An endpoint that was replaced gets its fragments back with "
               "pactfs-fsck --repair." : "");
    vault_close(v);
    return code;
}

static const struct command commands[] = {
    { "init", cmd_init, "DIR", 0,
      "create a vault (configuration, metadata, endpoints, first accounts)", "[OPTIONS] DIR",
"Create a vault on the embedded default in DIR: DIR/pactfs.conf, SQLite\n"
"metadata (DIR/meta.db), three local-directory endpoints (DIR/stores/0..2,\n"
"k=2 data + m=1 parity fragments per chunk), a separate key-share directory\n"
"(DIR/keys), the audit spool (DIR/audit.log), the vault root key, a sysadmin,\n"
"a first account and a first contract folder it can read, write and manage.\n"
"Refuses a DIR that already holds a vault (exit 11).\n"
"\n"
"  --name NAME          vault name (default pactfs)\n"
"  --account NAME       first data account, dataadmin and user (asked if missing)\n"
"  --passfile FILE      its password from the first line of FILE (else asked twice)\n"
"  --sysadmin NAME      the sysadmin account (default ACCOUNT-admin; production:\n"
"                       a separate person)\n"
"  --sysadmin-passfile FILE  its password (default: the --passfile password)\n"
"  --folder NAME        first contract folder (default Contracts)\n"
"  --k K --m M          erasure coding: K data + M parity fragments (default 2 + 1)\n"
"  --chunk-size BYTES   plaintext chunk size, a power of two (default 1048576)\n"
"  --kdf-time T         Argon2id passes (default 3)\n"
"  --kdf-memory KIB     Argon2id memory in KiB (default 65536)\n"
"  --keyd-url URL       keep key shares in pactfs-keyd at URL (https) instead\n"
"                       of DIR/keys; with --keyd-ca FILE (its CA), optional\n"
"                       --keyd-cert/--keyd-key (client certificate) and\n"
"                       --keyd-admin-token FILE (a file holding the token)\n"
"  --postgresql CONNINFO  keep the metadata in PostgreSQL (libpq conninfo; over\n"
"                       the network with sslmode=verify-full sslrootcert=CA)\n"
"  --audit-url URL      ship the audit trail to pactfs-auditd at URL (https),\n"
"                       with --audit-ca FILE (its CA) and --audit-cert/--audit-key\n"
"                       (this machine's client certificate); pactfs, pactfs-admin\n"
"                       and pactfs-fsck then ship their events themselves\n" },
    { "passwd", cmd_passwd, "", OPT_ACTING | OPT_NEW_PASSFILE,
      "change an account's password",
      "[--account NAME] [--passfile OLD] [--new-passfile NEW] VAULT_DIR|--config FILE",
"Change an account's password.  The old password stops working at once, and\n"
"the key share is replaced too, so an older sealed key put back opens nothing;\n"
"the data stays.  Passwords are asked on the terminal unless --passfile (the\n"
"current one) and --new-passfile (the new one) name files.\n" },
    { "rotate-share", cmd_rotate_share, "", OPT_ACTING,
      "replace an account's key share",
      "[--account NAME] [--passfile FILE] VAULT_DIR|--config FILE",
"Replace the account's key share (local key directory or key service) by a\n"
"fresh one and re-seal its private key; the password and data stay.\n" },
    { "keyd", cmd_keyd, "OPERATION ACCOUNT", OPT_CONFIG | OPT_ADMIN_TOKEN,
      "lift a lockout, disable or enable an account at the key service",
      "unlock|disable|enable ACCOUNT --keyd-admin-token FILE VAULT_DIR|--config FILE",
"Ask the key service named in the vault's configuration to lift a lockout\n"
"(unlock), refuse every share release (disable) or allow them again (enable)\n"
"for ACCOUNT.  --keyd-admin-token names a FILE holding the key service's\n"
"admin token (never the token itself, which would show in ps and history);\n"
"$PACTFS_KEYD_ADMIN_TOKEN_FILE is used when the option is absent.\n" },
    { "audit-verify", cmd_audit_verify, "", OPT_CONFIG,
      "check the audit spool's chain and signatures", "VAULT_DIR|--config FILE",
"Check the audit spool's hash chain and every checkpoint signature against\n"
"the signed account registry.  Exit 14 if the chain is broken, an event was\n"
"edited, inserted or removed, or a signature does not verify.\n" },
    { "audit", cmd_audit, "query|summary|denied", OPT_ACTING,
      "ask the audit trail: events, per-account summary, denied accesses (auditor)",
      "query|summary|denied [--by ACCOUNT[,..]] [--path PREFIX|GLOB [--follow-renames]] "
      "[--file ID[,..]] [--op OP[,..]] [--result ok|denied|error] [--from TIME] "
      "[--until TIME] [--all] [--format table|json|csv] [--receiver URL --cert FILE "
      "--key FILE [--ca FILE]] [--account AUDITOR] [--passfile FILE] VAULT_DIR|--config FILE",
"Answer an auditor's question from the local audit spool (verified first:\n"
"exit 14 if it does not) or from pactfs-auditd (--receiver URL with the\n"
"auditor's client certificate --cert/--key, --ca its CA, default audit.ca_file),\n"
"which filters on its side with the same parameters.  The acting account\n"
"(--account) must be an auditor (exit 13 otherwise); the query is audited as\n"
"audit-query, without the names asked for.\n"
"\n"
"  query     the selected events, oldest first\n"
"  summary   one row per account: events, sessions, denied, errors, failed\n"
"            unlocks, reads and writes with their bytes, admin actions, first\n"
"            and last event\n"
"  denied    the denied accesses: refused operations and failed unlocks\n"
"\n"
"Filters (all must hold; a comma list means any of its values):\n"
"  --by ACCOUNT         the account of the session\n"
"  --path P             a path prefix (whole components) or a glob (* ? [...],\n"
"                       * also matches /); a rename matches by either name\n"
"  --follow-renames     with --path: also every event of the files (by file id)\n"
"                       that ever had a matching name, under any name\n"
"  --file ID            the file id (inode id, stable across renames)\n"
"  --op OP              the operation (read, write, open, rename, grant, ...)\n"
"  --result R           ok, denied or error\n"
"  --from T, --until T  time range, from inclusive, until exclusive, UTC:\n"
"                       YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ\n"
"  --all                include checkpoint events (left out unless --op names them)\n"
"  --format F           table (default), json (one event per line) or csv\n" },
    { "audit-key", cmd_audit_key, "create|grant ACCOUNT", OPT_ACTING,
      "make the audit names key, or give it to another auditor (auditor)",
      "create|grant ACCOUNT [--account AUDITOR] [--passfile FILE] VAULT_DIR|--config FILE",
"Paths and names in audit events are sealed to the vault's audit names key;\n"
"only auditors holding it read them (pactfs-admin audit query).\n"
"\n"
"  create         make the key (once per vault, by an auditor: its public half\n"
"                 is signed by that auditor, its private half reaches auditors\n"
"                 only through envelopes under their own keys); exit 11 if the\n"
"                 vault has one.  Sessions started afterwards seal their names;\n"
"                 earlier events stay as they were written.\n"
"  grant ACCOUNT  give ACCOUNT (an enrolled auditor) an envelope of the key\n"
"                 (run by an auditor who holds it)\n" },
    { "audit-ship", cmd_audit_ship, "", OPT_CONFIG,
      "send the audit spool to the receiver now", "VAULT_DIR|--config FILE",
"Send what the audit spool holds and the receiver (audit.url) has not yet\n"
"acknowledged, once, with nothing mounted.  Every pactfs-admin command\n"
"already does this at exit; a systemd timer running this catches up after\n"
"the receiver was down.  Exit 7 if the receiver could not take them (they stay\n"
"in the spool), 3 if the vault configures no receiver.\n" },
    { "folder-create", cmd_folder_create, "NAME", OPT_ACTING,
      "create a contract folder (dataadmin)",
      "NAME [--account NAME] [--passfile FILE] VAULT_DIR|--config FILE",
"Create a contract folder (the acting account needs the dataadmin role); it\n"
"gets read, write and manage rights on it.  Exit 11 if the name exists.\n" },
    { "accounts", cmd_accounts, "", OPT_CONFIG,
      "list accounts, roles and registry verification", "VAULT_DIR|--config FILE",
"List accounts, their roles and state, and whether each verifies in the\n"
"signed registry (chained to the pinned root key).\n" },
    { "account-show", cmd_account_show, "NAME", OPT_CONFIG | OPT_JSON,
      "show an account as the signed registry says (access review)",
      "NAME [--json] VAULT_DIR|--config FILE",
"Show what the verified registry says about an account: roles, status\n"
"(enabled, disabled, expired, pending), details, enrolment time and the key's\n"
"SHA-256 fingerprint (check it with the person before granting), who signed\n"
"the record, and its verified grants (folder ids, rights, granted by whom\n"
"and when).  Rows that do not verify are counted, never shown as rights.  No\n"
"password needed.  --json: one JSON object.  Exit 16 if there is no such\n"
"account.\n" },
    { "folder-members", cmd_folder_members, "FOLDER", OPT_ACTING | OPT_JSON,
      "list who holds which rights on a folder (access review)",
      "FOLDER [--json] [--account NAME] [--passfile FILE] VAULT_DIR|--config FILE",
"List the members of FOLDER by its verified signed state: each account's\n"
"rights and status, and who granted its envelope and when (verified grants\n"
"only).  The acting account must hold the folder (its name is encrypted\n"
"under the folder key): a dataadmin managing it, or any member.  --json: one\n"
"JSON object.  Exit 16 if the account holds no such folder, 14 if the\n"
"folder's signed state does not verify.\n" },
    { "account-add", cmd_account_add, "NAME", OPT_ACTING | OPT_ROLE | OPT_DETAILS |
      OPT_CODE_VALID,
      "register an account and print its enrolment code (sysadmin)",
      "NAME --role ROLES [--full-name N] [--email E] [--department D] "
      "[--expires YYYY-MM-DD|never] [--code-valid-hours H] --account ADMIN [--passfile FILE] "
      "VAULT_DIR|--config FILE",
"Register an account (run as a sysadmin).  ROLES: sysadmin, dataadmin,\n"
"auditor, user, comma-separated (never sysadmin with dataadmin).  The details\n"
"are signed into its registry record; an account past --expires does not\n"
"unlock.  No key and no password are made: a one-time enrolment code is\n"
"printed (single use, valid --code-valid-hours, default 72) to hand to the\n"
"account's owner out of band, who runs pactfs-admin enroll on their own\n"
"workstation.  The account receives grants once enrolled.\n" },
    { "enroll", cmd_enroll, "NAME", OPT_CONFIG | OPT_CODE_FILE | OPT_NEW_PASSFILE |
      OPT_ADMIN_TOKEN,
      "enrol your account with its one-time code (the account's owner)",
      "NAME [--code-file FILE] [--new-passfile FILE] [--keyd-admin-token FILE] "
      "VAULT_DIR|--config FILE",
"Run by the account's owner on their own workstation with the code a sysadmin\n"
"gave them (--code-file, else asked): the RSA key pair is generated here, the\n"
"password chosen here (--new-passfile, else asked twice), a fresh key share\n"
"enrolled, and the key bound to the name by a proof signed with the code.\n"
"Prints the key's fingerprint: tell it to the dataadmin who grants you\n"
"folders.  Wrong code: exit 4; already enrolled: 11; expired code: 13.  With\n"
"a key service, enrolling the share still needs --keyd-admin-token.\n" },
    { "password-policy", cmd_password_policy, "", OPT_ACTING | OPT_POLICY,
      "show or set the vault's password policy (sysadmin sets)",
      "[--min-length N] [--dictionary yes|no] [--history N] [--account ADMIN] "
      "[--passfile FILE] VAULT_DIR|--config FILE",
"Without options, print the vault's password policy (no password needed).\n"
"With options, a sysadmin changes it (signed, audited as policy-change):\n"
"--min-length N (8..1024, default 12), --dictionary yes|no (cracklib check,\n"
"default yes), --history N (how many earlier passwords may not return,\n"
"default 5, at most 24).  enroll and passwd refuse a password it rejects\n"
"(exit 18).\n" },
    { "account-reenrol", cmd_account_reenrol, "NAME", OPT_ACTING | OPT_CODE_VALID |
      OPT_ADMIN_TOKEN,
      "void an account's key and issue a new enrolment code (sysadmin)",
      "NAME [--code-valid-hours H] --account ADMIN [--passfile FILE] VAULT_DIR|--config FILE",
"The lost-password path (run as a sysadmin): the account's key stops counting,\n"
"its key share is removed and a new one-time code is printed.  After its owner\n"
"enrols again, a dataadmin grants its folders anew.  Never a password reset.\n" },
    { "account-disable", cmd_account_disable_cmd, "NAME", OPT_ACTING | OPT_ADMIN_TOKEN,
      "disable an account (sysadmin)",
      "NAME --account ADMIN [--passfile FILE] [--keyd-admin-token FILE] VAULT_DIR|--config FILE",
"Disable an account (run as a sysadmin): it can no longer unlock; a key\n"
"service also stops releasing its share.  The last enabled dataadmin cannot\n"
"be disabled (exit 19).\n" },
    { "account-enable", cmd_account_enable_cmd, "NAME", OPT_ACTING | OPT_ADMIN_TOKEN,
      "enable a disabled account (sysadmin)",
      "NAME --account ADMIN [--passfile FILE] [--keyd-admin-token FILE] VAULT_DIR|--config FILE",
"Enable a disabled account again (run as a sysadmin).\n" },
    { "cosign-policy", cmd_cosign_policy, "", OPT_ACTING | OPT_REQUIRED,
      "show or set whether role changes need a second sysadmin",
      "[--required yes|no] [--account ADMIN] [--passfile FILE] VAULT_DIR|--config FILE",
"Without options, show whether giving or taking the sysadmin or dataadmin role\n"
"needs a second sysadmin's co-signature (default: required, effective while\n"
"the vault has two or more enabled sysadmins; no password needed).  With\n"
"--required yes|no a sysadmin sets it (signed, audited as policy-change);\n"
"switching it off is itself proposed by one sysadmin and made by a second.\n" },
    { "account-details", cmd_account_details, "NAME", OPT_ACTING | OPT_DETAILS,
      "change an account's details or expiry (sysadmin)",
      "NAME [--full-name N] [--email E] [--department D] [--expires YYYY-MM-DD|never] "
      "--account ADMIN [--passfile FILE] VAULT_DIR|--config FILE",
"Change the details signed into an account's registry record (run as a\n"
"sysadmin): only the options given change.  An account past --expires no\n"
"longer unlocks, and a running mount of it withdraws its folders.  Audited\n"
"as account-details with the state before and after.\n" },
    { "account-rename", cmd_account_rename, "OLD NEW", OPT_ACTING,
      "rename an account (sysadmin)",
      "OLD NEW --account ADMIN [--passfile FILE] VAULT_DIR|--config FILE",
"Rename an account (run as a sysadmin); its keys and grants stay.\n" },
    { "account-role", cmd_account_role, "NAME", OPT_ACTING | OPT_ROLE,
      "set an account's roles (sysadmin)",
      "NAME --role ROLES --account ADMIN [--passfile FILE] VAULT_DIR|--config FILE",
"Set an account's roles (run as a sysadmin); ROLES as for account-add.  The\n"
"last enabled dataadmin keeps its role (exit 19) until another holds it.  With\n"
"two or more sysadmins, giving or taking sysadmin or dataadmin is first a\n"
"proposal a second sysadmin confirms with the same command (cosign-policy).\n" },
    { "grant", cmd_grant, "FOLDER ACCOUNT RIGHTS", OPT_ACTING,
      "give an account rights on a folder (dataadmin)",
      "FOLDER ACCOUNT read|read,write|read,write,manage [--account NAME] [--passfile FILE] "
      "VAULT_DIR|--config FILE",
"Give ACCOUNT an envelope for FOLDER with RIGHTS (run as a dataadmin who can\n"
"manage FOLDER).  ACCOUNT must be registered by a sysadmin (exit 16 if not).\n" },
    { "revoke", cmd_revoke, "FOLDER ACCOUNT", OPT_ACTING | OPT_REKEY,
      "remove an account's rights and rotate the folder key",
      "FOLDER ACCOUNT [--rekey] [--account NAME] [--passfile FILE] VAULT_DIR|--config FILE",
"Remove ACCOUNT's envelope for FOLDER and rotate the folder key (run as a\n"
"dataadmin who can manage FOLDER): data written afterwards is under a key\n"
"the revoked account never held.  Existing files keep their data keys, and\n"
"names, symlink targets and xattrs their key version, until re-keyed: --rekey\n"
"does it at once (as pactfs-admin rekey FOLDER).\n" },
    { "rekey", cmd_rekey, "FOLDER", OPT_ACTING,
      "re-encrypt a folder's files under fresh data keys (after a revoke)",
      "FOLDER [--account NAME] [--passfile FILE] VAULT_DIR|--config FILE",
"Give every file of FOLDER that is not yet under the folder's current key\n"
"version a fresh data key wrapped under it, and re-seal its chunks (run as a\n"
"dataadmin who can manage FOLDER, after a revoke): keys a revoked account\n"
"saved open nothing current afterwards.  The old fragments go to the deletion\n"
"queue.  Resumable: stopped at any point, a second run finishes the files\n"
"left; a file is done when its data key unwraps under the current key\n"
"version.  Safe while the folder is mounted: a file a mount commits meanwhile\n"
"is done again, and the mount adopts the new key.  A progress bar on a\n"
"terminal.  Files whose commitment or entry binding does not verify are\n"
"listed and left alone (exit 14).  Then every name, symlink target and\n"
"extended attribute of FOLDER not under the current key version is sealed\n"
"again under it (rows that do not verify: listed, left, exit 14; a row a\n"
"mount changed meanwhile: left for the next run, exit 1).\n" },
    { "endpoint-mark", cmd_endpoint_mark, "", OPT_ACTING | OPT_ENDPOINT,
      "write the endpoints' signed identity markers (sysadmin)",
      "[--endpoint N] [--force] --account ADMIN [--passfile FILE] VAULT_DIR|--config FILE",
"Write each endpoint's marker (vault id and endpoint index, signed by this\n"
"sysadmin; endpoint N only with --endpoint N, 0-based as in pactfs status),\n"
"creating a missing endpoint directory.  A mount treats an endpoint without a\n"
"good marker as offline and never writes to it.  Endpoints already marked are\n"
"left alone; one holding another vault's or another endpoint's marker, or one\n"
"that does not verify, is refused (exit 11) unless --force.  Once every\n"
"endpoint verifies, the configuration pins vault.endpoint_markers =\n"
"\"required\".  Run it for a vault made before markers, and after replacing an\n"
"endpoint (then pactfs-fsck --repair rebuilds its fragments).  Audited as\n"
"endpoint-mark.\n" },
    { "upgrade", cmd_upgrade, "", OPT_ACTING | OPT_NO_BACKUP,
      "bring a vault made before format 2 up to date",
      "[--account NAME] [--passfile FILE] [--no-backup] VAULT_DIR|--config FILE",
"With the vault unmounted: back up meta.db to meta.db.pre-format2 (SQLite\n"
"online backup, before the schema migrates; kept if an earlier run made it;\n"
"PostgreSQL: take a pg_dump and pass --no-backup), then, in every folder the\n"
"account holds, bind each directory entry to the inode it points at and\n"
"write each regular file's commitment over its chunk records and size.\n"
"Resumable; a second run changes nothing.  A binding or commitment that\n"
"exists but does not verify is reported and left alone (exit 14).  Members\n"
"of folders this account does not hold run it with their own account.\n"
"It also signs the first state (key version, members) of each folder the\n"
"account manages and the vault's first signed head, anchored in the key\n"
"directory; run it as the manager (a dataadmin) of every folder.  Endpoint\n"
"markers are a sysadmin's: pactfs-admin endpoint-mark.\n" },
};
static const size_t ncommands = sizeof commands / sizeof commands[0];

static void usage(FILE *out)
{
    fprintf(out, "Usage:");
    for (size_t i = 0; i < ncommands; i++)
        fprintf(out, "%s pactfs-admin %s %s\n", i ? "      " : "", commands[i].name,
                commands[i].synopsis);
    fprintf(out,
"       pactfs-admin --help | --version | COMMAND --help\n"
"\n"
"VAULT_DIR is the directory pactfs-admin init made (its pactfs.conf is read);\n"
"--config FILE names the configuration instead.  Commands that act as an\n"
"account take --account NAME (default: vault.default_account) and --passfile\n"
"FILE (else the password is asked on the terminal).\n"
"\n"
"Commands:\n");
    for (size_t i = 0; i < ncommands; i++)
        fprintf(out, "  %-16s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
"\n"
"`pactfs-admin COMMAND --help` describes a command and its options;\n"
"pactfs-admin(8) has them all.  Exit codes: docs/exit-codes.md (0 ok, 2 usage,\n"
"3 settings, 4 wrong password, 5 locked out, 6 key service unreachable,\n"
"7 store, 11 exists, 12 no password, 13 access denied, 14 integrity,\n"
"15 audit spool, 16 no such account or folder, 17 metadata rollback,\n"
"18 password policy, 19 separation of duties, 1 other failure).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("pactfs-admin %s\n", PACKAGE_VERSION);
        return EXIT_OK;
    }
    /* Admin actions leave the machine whether or not a vault is mounted. */
    vault_ship_at_close(1);
    for (size_t i = 0; i < ncommands; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            current = &commands[i];
            return current->run(argc - 1, argv + 1);
        }
    fprintf(stderr, PROG ": unknown command \"%s\"; try pactfs-admin --help\n", argv[1]);
    return EXIT_USAGE;
}
