/* pactfs-admin: create and administer vaults.  Each command is a short
 * function over vault.c; this file holds the command line only. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "crypto.h"
#include "error.h"
#include "exitcodes.h"
#include "keyring.h"
#include "secmem.h"
#include "vault.h"

#define PROG "pactfs-admin"

static void usage(FILE *out)
{
    fprintf(out,
"Usage: pactfs-admin init [OPTIONS] DIR\n"
"       pactfs-admin passwd [OPTIONS] VAULT_DIR|--config FILE\n"
"       pactfs-admin rotate-share [OPTIONS] VAULT_DIR|--config FILE\n"
"       pactfs-admin keyd unlock|disable|enable ACCOUNT VAULT_DIR|--config FILE\n"
"                    --keyd-admin-token FILE\n"
"       pactfs-admin audit-verify VAULT_DIR|--config FILE\n"
"       pactfs-admin folder-create NAME VAULT_DIR|--config FILE [--account A] [--passfile F]\n"
"\n"
"Create a vault on the embedded default in DIR: DIR/pactfs.conf, SQLite\n"
"metadata (DIR/meta.db), three local-directory endpoints (DIR/stores/0..2,\n"
"k=2 data + m=1 parity fragments per chunk), a separate key-share directory\n"
"(DIR/keys), the audit spool (DIR/audit.log), a first account and a first\n"
"contract folder it can read, write and manage.\n"
"\n"
"Options of init:\n"
"  --name NAME          vault name (default pactfs)\n"
"  --account NAME       first account (asked on the terminal if missing)\n"
"  --passfile FILE      its password from the first line of FILE (else asked twice)\n"
"  --folder NAME        first contract folder (default Contracts)\n"
"  --k K --m M          erasure coding: K data + M parity fragments (default 2 + 1)\n"
"  --chunk-size BYTES   plaintext chunk size, a power of two (default 1048576)\n"
"  --kdf-time T         Argon2id passes (default 3)\n"
"  --kdf-memory KIB     Argon2id memory in KiB (default 65536)\n"
"  --keyd-url URL       keep key shares in pactfs-keyd at URL (https) instead\n"
"                       of DIR/keys; with --keyd-ca FILE (its CA), optional\n"
"                       --keyd-cert/--keyd-key (client certificate) and\n"
"                       --keyd-admin-token FILE (needed to enroll the account)\n"
"  --postgresql CONNINFO  keep the metadata in PostgreSQL (libpq conninfo; over\n"
"                       the network with sslmode=verify-full sslrootcert=CA)\n"
"\n"
"passwd: change an account's password (--account NAME, --passfile OLD,\n"
"  --new-passfile NEW; asked on the terminal otherwise).  The old password\n"
"  stops working at once.\n"
"rotate-share: replace the account's key share by a fresh one (--account,\n"
"  --passfile); data stays readable.\n"
"keyd: lift a lockout, disable or enable an account at the key service.\n"
"audit-verify: check the audit spool's chain and checkpoint signatures.\n"
"folder-create: a new contract folder (needs the dataadmin role); the account\n"
"  gets read, write and manage rights on it.\n"
"\n"
"  --help, --version\n"
"\n"
"Exit codes: 0 ok, 2 usage, 3 bad settings, 4 wrong password, 5 locked out,\n"
"6 key service unreachable, 11 a vault already exists in DIR, 12 no password\n"
"could be read, 14 audit trail damaged, 1 other failure (see pactfs-admin(8)).\n");
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
        { "keyd-cert", required_argument, NULL, 'E' },
        { "keyd-key", required_argument, NULL, 'K' },
        { "keyd-admin-token", required_argument, NULL, 'T' },
        { "postgresql", required_argument, NULL, 'P' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct vault_init_opts o = { 0 };
    struct pwkdf_params kdf;
    const char *passfile = NULL;
    char *account = NULL, *password;
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
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (argc - optind != 1) {
        usage(stderr);
        return EXIT_USAGE;
    }
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
    secmem_harden_process();
    fprintf(stderr, "Creating the vault in %s (generating an RSA-3072 account key)...\n", o.dir);
    rc = vault_init(&o);
    secmem_free_str(password);
    if (rc < 0) {
        cli_report(PROG, rc);
        free(account);
        return rc == -EEXIST ? EXIT_EXISTS : cli_exit_code_for(rc);
    }
    printf("Created vault in %s for account \"%s\" with folder \"%s\".\n"
           "Mount it with: pactfs mount %s MOUNTPOINT\n",
           o.dir, o.account, o.folder_name ? o.folder_name : "Contracts", o.dir);
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
    char conf_buf[4096];
};

/* Common options; positional arguments are left in argv[optind..]. */
static int parse_vault_args(int argc, char **argv, struct vault_args *a, int positionals)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "account", required_argument, NULL, 'a' },
        { "passfile", required_argument, NULL, 'p' },
        { "new-passfile", required_argument, NULL, 'n' },
        { "keyd-admin-token", required_argument, NULL, 'T' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': a->conf_path = optarg; break;
        case 'a': a->account = optarg; break;
        case 'p': a->passfile = optarg; break;
        case 'n': a->new_passfile = optarg; break;
        case 'T': a->admin_token = optarg; break;
        case 'h': usage(stdout); exit(EXIT_OK);
        default: usage(stderr); return -1;
        }
    }
    if (!a->conf_path) {
        if (argc - optind != positionals + 1) {
            usage(stderr);
            return -1;
        }
        snprintf(a->conf_buf, sizeof a->conf_buf, "%s/pactfs.conf", argv[argc - 1]);
        a->conf_path = a->conf_buf;
    } else if (argc - optind != positionals) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static int open_vault(const struct vault_args *a, struct vault **v, const char **account)
{
    int rc = vault_open(a->conf_path, v);

    *account = NULL;
    if (rc < 0) {
        cli_report(PROG, rc);
        return rc == -EINVAL || rc == -ENOENT ? EXIT_CONFIG : cli_exit_code_for(rc);
    }
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
    char *old_pw = NULL, *new_pw = NULL;
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
        return EXIT_USAGE;
    }
    old_pw = cli_read_password(a.passfile, NULL, "Current password: ", 0);
    if (old_pw && !rotate)
        new_pw = cli_read_password(a.new_passfile, NULL, "New password: ", 1);
    if (!old_pw || (!rotate && !new_pw)) {
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        code = EXIT_PASSWORD_INPUT;
        goto out;
    }
    if (rotate)
        rc = keyring_rotate_share(v->conf.vault_id, account, old_pw, acct.sealed_key,
                                  acct.sealed_key_len, v->sp, &sealed, &sealed_len);
    else
        rc = keyring_change_password(v->conf.vault_id, account, old_pw, new_pw, NULL,
                                     acct.sealed_key, acct.sealed_key_len, v->sp,
                                     &sealed, &sealed_len);
    if (rc == 0)
        rc = vault_account_store_sealed(v, account, sealed, sealed_len,
                                        rotate ? "share-rotate" : "password-change");
    if (rc < 0) {
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
    return cli_exit_code_for(rc);
}

struct key_lookup {
    struct meta *meta;
    EVP_PKEY *keys[64];
    size_t n;
};

/* Public key of the account that signed a checkpoint, from the registry. */
static EVP_PKEY *key_for_account(void *arg, const char *account)
{
    struct key_lookup *kl = arg;
    struct meta_account a;
    EVP_PKEY *k;

    if (kl->n == sizeof kl->keys / sizeof kl->keys[0])
        return NULL;
    if (meta_account_get_by_name(kl->meta, account, &a) < 0)
        return NULL;
    k = rsa_public_from_der(a.pubkey, a.pubkey_len);
    meta_account_clear(&a);
    if (k)
        kl->keys[kl->n++] = k;
    return k;
}

static int cmd_audit_verify(int argc, char **argv)
{
    struct vault_args a = { 0 };
    struct vault *v = NULL;
    struct key_lookup kl = { 0 };
    uint64_t events = 0;
    int rc;

    if (parse_vault_args(argc, argv, &a, 0) < 0)
        return EXIT_USAGE;
    rc = vault_open(a.conf_path, &v);
    if (rc < 0) {
        cli_report(PROG, rc);
        return EXIT_CONFIG;
    }
    kl.meta = v->meta;
    rc = audit_verify(v->conf.audit_spool, key_for_account, &kl, &events);
    for (size_t i = 0; i < kl.n; i++)
        EVP_PKEY_free(kl.keys[i]);
    if (rc < 0) {
        cli_report(PROG, rc);
        vault_close(v);
        return EXIT_INTEGRITY;
    }
    printf("%s: %llu events, chain and checkpoint signatures intact.\n",
           v->conf.audit_spool, (unsigned long long)events);
    vault_close(v);
    return EXIT_OK;
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
        code = cli_exit_code_for(rc);
    } else {
        printf("Created folder \"%s\"; \"%s\" can read, write and manage it.\n", name, account);
        code = EXIT_OK;
    }
    vault_close(v);
    return code;
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
    if (!strcmp(argv[1], "init"))
        return cmd_init(argc - 1, argv + 1);
    if (!strcmp(argv[1], "passwd"))
        return cmd_passwd(argc - 1, argv + 1);
    if (!strcmp(argv[1], "rotate-share"))
        return cmd_rotate_share(argc - 1, argv + 1);
    if (!strcmp(argv[1], "keyd"))
        return cmd_keyd(argc - 1, argv + 1);
    if (!strcmp(argv[1], "folder-create"))
        return cmd_folder_create(argc - 1, argv + 1);
    if (!strcmp(argv[1], "audit-verify"))
        return cmd_audit_verify(argc - 1, argv + 1);
    fprintf(stderr, PROG ": unknown command \"%s\"; try pactfs-admin --help\n", argv[1]);
    return EXIT_USAGE;
}
