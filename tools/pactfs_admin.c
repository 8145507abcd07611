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
#include "secmem.h"
#include "vault.h"

#define PROG "pactfs-admin"

static void usage(FILE *out)
{
    fprintf(out,
"Usage: pactfs-admin init [OPTIONS] DIR\n"
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
"  --help, --version\n"
"\n"
"Exit codes: 0 ok, 2 usage, 3 bad settings, 11 a vault already exists in DIR,\n"
"12 no password could be read, 1 other failure (see pactfs-admin(8)).\n");
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
        return rc == -EEXIST ? EXIT_EXISTS : rc == -EINVAL ? EXIT_CONFIG : EXIT_FAILURE_OTHER;
    }
    printf("Created vault in %s for account \"%s\" with folder \"%s\".\n"
           "Mount it with: pactfs mount %s MOUNTPOINT\n",
           o.dir, o.account, o.folder_name ? o.folder_name : "Contracts", o.dir);
    free(account);
    return EXIT_OK;
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
    fprintf(stderr, PROG ": unknown command \"%s\"; try pactfs-admin --help\n", argv[1]);
    return EXIT_USAGE;
}
