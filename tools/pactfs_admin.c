/* pactfs-admin: create and administer vaults.
 *
 * This file is the command line: the table of commands, the common options,
 * and the one driver that opens what a command needs, runs it and turns its
 * outcome into an exit code.  The commands themselves are short functions
 * over vault.c in admin_vault.c, admin_folders.c, admin_accounts.c and
 * admin_audit.c (admin.h). */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"
#include "audit.h"
#include "cli.h"
#include "erasure.h"
#include "error.h"
#include "exitcodes.h"
#include "log.h"
#include "pwpolicy.h"
#include "secmem.h"

const struct command *current;

void command_usage(const struct command *c, FILE *out)
{
    fprintf(out, "Usage: pactfs-admin %s %s\n\n%s", c->name, c->synopsis, c->help);
}

/* A command line mistake: say what is wrong, then the command's synopsis. */
int usage_error(const char *fmt, ...)
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

int parse_uint(const char *opt, const char *s, unsigned long max, unsigned long *out)
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

/* After the vault is open, a name that does not resolve is the caller's
 * mistake (16), not a broken store (7). */
int admin_exit_code(int rc)
{
    return rc == -ENOENT ? EXIT_NOT_FOUND : cli_exit_code_for(rc);
}

int admin_fail(int rc, int code)
{
    cli_report(rc);
    return code;
}

int admin_audit_event(struct vault *v, const char *op, const char *what, int rc, uint64_t n)
{
    struct audit_ctx who = { getuid(), getpid() };

    return v->audit ? audit_event(v->audit, &who, op, what, rc, n) : 0;
}

/* ---- the common options ---- */

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
    { OPT_ENDPOINT, "--endpoint/--force" }, { OPT_REQUIRED, "--required" },
    { OPT_AUDIT_QUERY, "--by/--path/--file/--op/--result/--from/--until/--follow-renames/"
                       "--all/--format" },
    { OPT_RECEIVER, "--receiver/--ca/--cert/--key" },
};

/* The n-th (0-based) word of a space-separated list, into out, without the
 * brackets of an optional one. */
static const char *nth_word(const char *list, int n, char *out, size_t outlen)
{
    for (; n > 0 && list; n--) {
        list = strchr(list, ' ');
        if (list)
            list++;
    }
    if (!list || !*list)
        return NULL;
    list += *list == '[';
    snprintf(out, outlen, "%.*s", (int)strcspn(list, " ]"), list);
    return out;
}

/* How many positionals args names: all of them at the most, the ones not in
 * [brackets] at the least. */
static void count_words(const char *args, int *min, int *max)
{
    *min = *max = 0;
    for (const char *w = args; w && *w; w = strchr(w, ' '), w = w ? w + 1 : NULL) {
        (*max)++;
        *min += *w != '[';
    }
}

enum {   /* long options without a short letter */
    O_BY = 256, O_PATH, O_FILE, O_OP, O_RESULT, O_FROM, O_UNTIL, O_FOLLOW, O_ALL, O_FORMAT,
    O_RECEIVER, O_CA, O_CERT, O_KEY,
};

/* The audit filter options, by their long names: audit_filter_set's names. */
static int audit_filter_opt(struct audit_filter *f, int c)
{
    static const char *const names[] = {
        [O_BY - O_BY] = "account", [O_PATH - O_BY] = "path", [O_FILE - O_BY] = "file",
        [O_OP - O_BY] = "op", [O_RESULT - O_BY] = "result", [O_FROM - O_BY] = "from",
        [O_UNTIL - O_BY] = "until",
    };

    if (audit_filter_set(f, names[c - O_BY], optarg)) {
        usage_error("--%s: %s", c == O_BY ? "by" : names[c - O_BY], pfs_err_msg());
        return -1;
    }
    return 0;
}

/* Common options of the current command; its positional arguments into
 * c->pos, VAULT_DIR (the last one) into a->conf_path. */
static int parse_vault_args(struct admin_ctx *c)
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
        { "by", required_argument, NULL, O_BY },
        { "path", required_argument, NULL, O_PATH },
        { "file", required_argument, NULL, O_FILE },
        { "op", required_argument, NULL, O_OP },
        { "result", required_argument, NULL, O_RESULT },
        { "from", required_argument, NULL, O_FROM },
        { "until", required_argument, NULL, O_UNTIL },
        { "follow-renames", no_argument, NULL, O_FOLLOW },
        { "all", no_argument, NULL, O_ALL },
        { "format", required_argument, NULL, O_FORMAT },
        { "receiver", required_argument, NULL, O_RECEIVER },
        { "ca", required_argument, NULL, O_CA },
        { "cert", required_argument, NULL, O_CERT },
        { "key", required_argument, NULL, O_KEY },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct vault_args *a = &c->a;
    unsigned used = 0, allowed = c->cmd->opts;
    unsigned long n;
    int o, have, min, max, vault_dir;
    char word[64];

    optind = 1;
    while ((o = getopt_long(c->argc, c->argv, "h", opts, NULL)) != -1) {
        switch (o) {
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
        case 'Q': if (strcmp(optarg, "yes") && strcmp(optarg, "no")) {
                      usage_error("--required wants yes or no");
                      return -1;
                  }
                  a->required = !strcmp(optarg, "yes"); used |= OPT_REQUIRED; break;
        case O_BY: case O_PATH: case O_FILE: case O_OP: case O_RESULT: case O_FROM:
        case O_UNTIL:
            if (audit_filter_opt(&a->filter, o) < 0)
                return -1;
            used |= OPT_AUDIT_QUERY;
            break;
        case O_FOLLOW: audit_filter_set(&a->filter, "follow_renames", "1");
                       used |= OPT_AUDIT_QUERY; break;
        case O_ALL: a->audit_all = 1; used |= OPT_AUDIT_QUERY; break;
        case O_FORMAT: a->format = optarg; used |= OPT_AUDIT_QUERY; break;
        case O_RECEIVER: a->receiver = optarg; used |= OPT_RECEIVER; break;
        case O_CA: a->ca = optarg; used |= OPT_RECEIVER; break;
        case O_CERT: a->cert = optarg; used |= OPT_RECEIVER; break;
        case O_KEY: a->key = optarg; used |= OPT_RECEIVER; break;
        case 'h': command_usage(c->cmd, stdout); exit(EXIT_OK);
        default: usage_error("unknown option or missing option value"); return -1;
        }
    }
    for (size_t i = 0; i < sizeof opt_names / sizeof opt_names[0]; i++)
        if ((used & opt_names[i].bit) && !(allowed & opt_names[i].bit)) {
            usage_error("%s does not apply to this command", opt_names[i].name);
            return -1;
        }
    count_words(c->cmd->args, &min, &max);
    vault_dir = a->conf_path ? 0 : 1;
    have = c->argc - optind;
    if (have < min + vault_dir) {
        if (!nth_word(c->cmd->args, have, word, sizeof word))
            snprintf(word, sizeof word, "VAULT_DIR (or --config FILE)");
        usage_error("missing %s", word);
        return -1;
    }
    if (have > max + vault_dir) {
        usage_error("unexpected argument \"%s\"", c->argv[optind + max + vault_dir]);
        return -1;
    }
    c->pos = c->argv + optind;
    c->npos = have - vault_dir;
    if (!a->conf_path) {
        snprintf(a->conf_buf, sizeof a->conf_buf, "%s/pactfs.conf", c->argv[c->argc - 1]);
        a->conf_path = a->conf_buf;
    }
    return 0;
}

/* ---- the driver ---- */

/* Open the vault as far as c->need says: an exit code, having said why. */
static int open_stages(struct admin_ctx *c)
{
    char *pw;
    int rc;

    if (c->need < NEED_STORAGE)
        return EXIT_OK;
    /* The key service wants its admin token to enroll or disable. */
    if (c->a.admin_token)
        setenv("PACTFS_KEYD_ADMIN_TOKEN_FILE", c->a.admin_token, 1);
    rc = vault_open(c->a.conf_path, &c->v);     /* stages 1 and 2 */
    if (rc < 0)
        return admin_fail(rc, rc == -ENOENT ? EXIT_CONFIG : cli_open_exit_code(rc));
    if (c->need < NEED_ACCOUNT)
        return EXIT_OK;
    c->account = c->a.account ? c->a.account : c->v->conf.default_account;
    if (!c->account) {
        fprintf(stderr, PROG ": no account given: use --account NAME\n");
        return EXIT_USAGE;
    }
    secmem_harden_process();
    if (c->need < NEED_UNLOCKED)
        return EXIT_OK;
    c->v->allow_legacy = c->a.allow_legacy;
    pw = cli_read_password(c->a.passfile, NULL, "Password: ", 0);
    if (!pw) {
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        return EXIT_PASSWORD_INPUT;
    }
    rc = vault_unlock(c->v, c->account, pw);    /* stage 3 */
    secmem_free_str(pw);
    return rc < 0 ? admin_fail(rc, c->v->audit_failed ? EXIT_AUDIT : admin_exit_code(rc))
                  : EXIT_OK;
}

/* A handler's outcome as an exit code; its success line on stdout. */
static int finish(struct admin_ctx *c, int rc)
{
    if (rc < 0)
        return admin_fail(rc, c->v && c->v->audit_failed ? EXIT_AUDIT : admin_exit_code(rc));
    if (rc == EXIT_OK && c->done[0])
        printf("%s\n", c->done);
    return rc;
}

static int run_command(const struct command *cmd, int argc, char **argv)
{
    struct admin_ctx c = { .cmd = cmd, .argc = argc, .argv = argv, .need = cmd->need };
    int code;

    current = cmd;
    if (cmd->need == NEED_NONE)
        return cmd->run(&c);
    c.a.min_length = c.a.history = c.a.dictionary = c.a.endpoint = c.a.required = -1;
    audit_filter_init(&c.a.filter);
    code = parse_vault_args(&c) < 0 ? EXIT_USAGE : EXIT_OK;
    if (code == EXIT_OK && cmd->prepare)
        code = cmd->prepare(&c);
    if (code == EXIT_OK)
        code = open_stages(&c);
    if (code == EXIT_OK)
        code = finish(&c, cmd->run(&c));
    vault_close(c.v);
    audit_filter_free(&c.a.filter);
    return code;
}

/* ---- the commands ---- */

static const struct command commands[] = {
    { "init", NEED_NONE, NULL, cmd_init,
      "DIR", 0,
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
    { "passwd", NEED_ACCOUNT, NULL, cmd_passwd,
      "", OPT_ACTING | OPT_NEW_PASSFILE,
      "change an account's password",
      "[--account NAME] [--passfile OLD] [--new-passfile NEW] VAULT_DIR|--config FILE",
"Change an account's password.  The old password stops working at once, and\n"
"the key share is replaced too, so an older sealed key put back opens nothing;\n"
"the data stays.  Passwords are asked on the terminal unless --passfile (the\n"
"current one) and --new-passfile (the new one) name files.\n" },
    { "rotate-share", NEED_ACCOUNT, NULL, cmd_rotate_share,
      "", OPT_ACTING,
      "replace an account's key share",
      "[--account NAME] [--passfile FILE] VAULT_DIR|--config FILE",
"Replace the account's key share (local key directory or key service) by a\n"
"fresh one and re-seal its private key; the password and data stay.\n" },
    { "keyd", NEED_ARGS, NULL, cmd_keyd,
      "OPERATION ACCOUNT", OPT_CONFIG | OPT_ADMIN_TOKEN,
      "lift a lockout, disable or enable an account at the key service",
      "unlock|disable|enable ACCOUNT --keyd-admin-token FILE VAULT_DIR|--config FILE",
"Ask the key service named in the vault's configuration to lift a lockout\n"
"(unlock), refuse every share release (disable) or allow them again (enable)\n"
"for ACCOUNT.  --keyd-admin-token names a FILE holding the key service's\n"
"admin token (never the token itself, which would show in ps and history);\n"
"$PACTFS_KEYD_ADMIN_TOKEN_FILE is used when the option is absent.\n" },
    { "audit-verify", NEED_STORAGE, NULL, cmd_audit_verify,
      "", OPT_CONFIG,
      "check the audit spool's chain and signatures", "VAULT_DIR|--config FILE",
"Check the audit spool's hash chain and every checkpoint signature against\n"
"the signed account registry.  Exit 14 if the chain is broken, an event was\n"
"edited, inserted or removed, or a signature does not verify.  pactfs-keyd's\n"
"own log: pactfs-admin keyd-audit-verify.\n" },
    { "keyd-audit-verify", NEED_NONE, NULL, cmd_keyd_audit_verify,
      "LOG", 0,
      "check pactfs-keyd's own audit log (chains, signatures of its audit key)",
      "[--fingerprint FP] LOG",
"Check the key service's own audit log (its audit_log setting): the hash\n"
"chains and every checkpoint signature, made with the pactfs-keyd audit key\n"
"whose fingerprint the log's sessions carry, and that every session is signed\n"
"by it.  Needs no vault.  --fingerprint FP: the fingerprint pactfs-keyd printed\n"
"when it made the key (recorded away from its host); without it the key the log\n"
"names is taken and printed for you to compare.  Exit 14 if a line was edited,\n"
"inserted or removed, a signature does not verify, a session is unsigned or\n"
"the key is not FP.\n" },
    { "audit", NEED_UNLOCKED, prepare_audit, cmd_audit,
      "query|summary|denied", OPT_ACTING | OPT_AUDIT_QUERY | OPT_RECEIVER,
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
    { "audit-key", NEED_UNLOCKED, prepare_audit_key, cmd_audit_key,
      "create|grant [ACCOUNT]", OPT_ACTING,
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
    { "audit-ship", NEED_STORAGE, NULL, cmd_audit_ship,
      "", OPT_CONFIG,
      "send the audit spool to the receiver now", "VAULT_DIR|--config FILE",
"Send what the audit spool holds and the receiver (audit.url) has not yet\n"
"acknowledged, once, with nothing mounted.  Every pactfs-admin command\n"
"already does this at exit; a systemd timer running this catches up after\n"
"the receiver was down.  Exit 7 if the receiver could not take them (they stay\n"
"in the spool), 3 if the vault configures no receiver.\n" },
    { "folder-create", NEED_UNLOCKED, NULL, cmd_folder_create,
      "NAME", OPT_ACTING,
      "create a contract folder (dataadmin)",
      "NAME [--account NAME] [--passfile FILE] VAULT_DIR|--config FILE",
"Create a contract folder (the acting account needs the dataadmin role); it\n"
"gets read, write and manage rights on it.  Exit 11 if the name exists.\n" },
    { "accounts", NEED_STORAGE, NULL, cmd_accounts,
      "", OPT_CONFIG,
      "list accounts, roles and registry verification", "VAULT_DIR|--config FILE",
"List accounts, their roles and state, and whether each verifies in the\n"
"signed registry (chained to the pinned root key).\n" },
    { "account-show", NEED_STORAGE, NULL, cmd_account_show,
      "NAME", OPT_CONFIG | OPT_JSON,
      "show an account as the signed registry says (access review)",
      "NAME [--json] VAULT_DIR|--config FILE",
"Show what the verified registry says about an account: roles, status\n"
"(enabled, disabled, expired, pending), details, enrolment time and the key's\n"
"SHA-256 fingerprint (check it with the person before granting), who signed\n"
"the record, and its verified grants (folder ids, rights, granted by whom\n"
"and when).  Rows that do not verify are counted, never shown as rights.  No\n"
"password needed.  --json: one JSON object.  Exit 16 if there is no such\n"
"account.\n" },
    { "folder-members", NEED_UNLOCKED, NULL, cmd_folder_members,
      "FOLDER", OPT_ACTING | OPT_JSON,
      "list who holds which rights on a folder (access review)",
      "FOLDER [--json] [--account NAME] [--passfile FILE] VAULT_DIR|--config FILE",
"List the members of FOLDER by its verified signed state: each account's\n"
"rights and status, and who granted its envelope and when (verified grants\n"
"only).  The acting account must hold the folder (its name is encrypted\n"
"under the folder key): a dataadmin managing it, or any member.  --json: one\n"
"JSON object.  Exit 16 if the account holds no such folder, 14 if the\n"
"folder's signed state does not verify.\n" },
    { "account-add", NEED_UNLOCKED, prepare_account_add, cmd_account_add,
      "NAME", OPT_ACTING | OPT_ROLE | OPT_DETAILS |
      OPT_CODE_VALID | OPT_ADMIN_TOKEN,
      "register an account and print its enrolment code (sysadmin)",
      "NAME --role ROLES [--full-name N] [--email E] [--department D] "
      "[--expires YYYY-MM-DD|never] [--code-valid-hours H] --account ADMIN [--passfile FILE] "
      "[--keyd-admin-token FILE] VAULT_DIR|--config FILE",
"Register an account (run as a sysadmin).  ROLES: sysadmin, dataadmin,\n"
"auditor, user, comma-separated (never sysadmin with dataadmin).  The details\n"
"are signed into its registry record; an account past --expires does not\n"
"unlock.  No key and no password are made: a one-time enrolment code is\n"
"printed (single use, valid --code-valid-hours, default 72) to hand to the\n"
"account's owner out of band, who runs pactfs-admin enroll on their own\n"
"workstation.  The account receives grants once enrolled.  With a key\n"
"service, the code's public key is registered there too (an admin call:\n"
"--keyd-admin-token or a key officer's certificate); the code never is.\n" },
    { "enroll", NEED_STORAGE, NULL, cmd_enroll,
      "NAME", OPT_CONFIG | OPT_CODE_FILE | OPT_NEW_PASSFILE |
      OPT_ADMIN_TOKEN,
      "enrol your account with its one-time code (the account's owner)",
      "NAME [--code-file FILE] [--new-passfile FILE] VAULT_DIR|--config FILE",
"Run by the account's owner on their own workstation with the code a sysadmin\n"
"gave them (--code-file, else asked): the RSA key pair is generated here, the\n"
"password chosen here (--new-passfile, else asked twice), a fresh key share\n"
"enrolled, and the key bound to the name by a proof signed with the code.\n"
"Prints the key's fingerprint: tell it to the dataadmin who grants you\n"
"folders.  Wrong code: exit 4; already enrolled: 11; expired code: 13.  With\n"
"a key service, the code alone enrols the share there (signed with it; used\n"
"once); the admin token does not and is not needed.\n" },
    { "password-policy", NEED_UNLOCKED, prepare_password_policy, cmd_password_policy,
      "", OPT_ACTING | OPT_POLICY,
      "show or set the vault's password policy (sysadmin sets)",
      "[--min-length N] [--dictionary yes|no] [--history N] [--account ADMIN] "
      "[--passfile FILE] VAULT_DIR|--config FILE",
"Without options, print the vault's password policy (no password needed).\n"
"With options, a sysadmin changes it (signed, audited as policy-change):\n"
"--min-length N (8..1024, default 12), --dictionary yes|no (cracklib check,\n"
"default yes), --history N (how many earlier passwords may not return,\n"
"default 5, at most 24).  enroll and passwd refuse a password it rejects\n"
"(exit 18).\n" },
    { "account-reenrol", NEED_UNLOCKED, NULL, cmd_account_reenrol,
      "NAME", OPT_ACTING | OPT_CODE_VALID |
      OPT_ADMIN_TOKEN,
      "void an account's key and issue a new enrolment code (sysadmin)",
      "NAME [--code-valid-hours H] --account ADMIN [--passfile FILE] [--keyd-admin-token FILE] "
      "VAULT_DIR|--config FILE",
"The lost-password path (run as a sysadmin): the account's key stops counting,\n"
"its key share is removed and a new one-time code is printed.  After its owner\n"
"enrols again, a dataadmin grants its folders anew.  Never a password reset.\n"
"A sysadmin or dataadmin of a vault that needs two sysadmins is trusted again\n"
"only once two sysadmins bound its new key (cosign-endorse, after checking\n"
"its fingerprint with the person); re-enrolling a sysadmin re-signs the\n"
"registry records it had signed.\n" },
    { "account-disable", NEED_UNLOCKED, NULL, cmd_account_disable,
      "NAME", OPT_ACTING | OPT_ADMIN_TOKEN,
      "disable an account (sysadmin)",
      "NAME --account ADMIN [--passfile FILE] [--keyd-admin-token FILE] VAULT_DIR|--config FILE",
"Disable an account (run as a sysadmin): it can no longer unlock; a key\n"
"service also stops releasing its share.  The last enabled dataadmin cannot\n"
"be disabled (exit 19).\n" },
    { "account-enable", NEED_UNLOCKED, NULL, cmd_account_enable,
      "NAME", OPT_ACTING | OPT_ADMIN_TOKEN,
      "enable a disabled account (sysadmin)",
      "NAME --account ADMIN [--passfile FILE] [--keyd-admin-token FILE] VAULT_DIR|--config FILE",
"Enable a disabled account again (run as a sysadmin).\n" },
    { "cosign-policy", NEED_UNLOCKED, prepare_cosign_policy, cmd_cosign_policy,
      "", OPT_ACTING | OPT_REQUIRED,
      "show or set whether role changes need a second sysadmin",
      "[--required yes|no] [--account ADMIN] [--passfile FILE] VAULT_DIR|--config FILE",
"Without options, show whether giving or taking the sysadmin or dataadmin role\n"
"needs a second sysadmin's co-signature (default: required, effective while\n"
"the vault has two or more enabled sysadmins; no password needed).  With\n"
"--required yes|no a sysadmin sets it (signed, audited as policy-change);\n"
"switching it off is itself proposed by one sysadmin and made by a second.\n" },
    { "cosign-endorse", NEED_UNLOCKED, NULL, cmd_cosign_endorse,
      "", OPT_ACTING,
      "endorse the registry, sign the first role roster, bind new keys (sysadmin)",
      "--account ADMIN [--passfile FILE] VAULT_DIR|--config FILE",
"Run as a sysadmin: sign this sysadmin's endorsement of every sysadmin and\n"
"dataadmin that verifies now (a sysadmin co-signed in from an existing\n"
"account has none until it does).  In a vault without a signed role roster\n"
"yet (made before it), also make the roster's first step from that verified\n"
"state: with two or more enabled sysadmins the first one's run proposes it\n"
"and a second one's run, finding the same entries, makes it.  With a roster,\n"
"bind keys (roster format 2): a format 1 roster, or one that needs a single\n"
"sysadmin, gets a step binding the keys the registry names now; one that needs\n"
"two binds the new key of one re-enrolled sysadmin or dataadmin a run,\n"
"proposed by the first sysadmin's run and bound by a second one's that finds\n"
"the same key (check the fingerprint with its owner first).  Exit 13 if the\n"
"account is not a sysadmin, 14 if its own record does not verify, 7 if the\n"
"roster does not verify (nothing opens), 17 if the roster is older than the\n"
"one this workstation or the key service has seen.\n" },
    { "account-details", NEED_UNLOCKED, prepare_account_details, cmd_account_details,
      "NAME", OPT_ACTING | OPT_DETAILS,
      "change an account's details or expiry (sysadmin)",
      "NAME [--full-name N] [--email E] [--department D] [--expires YYYY-MM-DD|never] "
      "--account ADMIN [--passfile FILE] VAULT_DIR|--config FILE",
"Change the details signed into an account's registry record (run as a\n"
"sysadmin): only the options given change.  An account past --expires no\n"
"longer unlocks, and a running mount of it withdraws its folders.  Audited\n"
"as account-details with the state before and after.\n" },
    { "account-rename", NEED_UNLOCKED, NULL, cmd_account_rename,
      "OLD NEW", OPT_ACTING,
      "rename an account (sysadmin)",
      "OLD NEW --account ADMIN [--passfile FILE] VAULT_DIR|--config FILE",
"Rename an account (run as a sysadmin); its keys and grants stay.\n" },
    { "account-role", NEED_UNLOCKED, prepare_account_role, cmd_account_role,
      "NAME", OPT_ACTING | OPT_ROLE,
      "set an account's roles (sysadmin)",
      "NAME --role ROLES --account ADMIN [--passfile FILE] VAULT_DIR|--config FILE",
"Set an account's roles (run as a sysadmin); ROLES as for account-add.  The\n"
"last enabled dataadmin keeps its role (exit 19) until another holds it.  With\n"
"two or more sysadmins, giving or taking sysadmin or dataadmin is first a\n"
"proposal a second sysadmin confirms with the same command (cosign-policy).\n" },
    { "grant", NEED_UNLOCKED, prepare_grant, cmd_grant,
      "FOLDER ACCOUNT RIGHTS", OPT_ACTING,
      "give an account rights on a folder (dataadmin)",
      "FOLDER ACCOUNT read|read,write|read,write,manage [--account NAME] [--passfile FILE] "
      "VAULT_DIR|--config FILE",
"Give ACCOUNT an envelope for FOLDER with RIGHTS (run as a dataadmin who can\n"
"manage FOLDER).  ACCOUNT must be registered by a sysadmin (exit 16 if not).\n" },
    { "revoke", NEED_UNLOCKED, NULL, cmd_revoke,
      "FOLDER ACCOUNT", OPT_ACTING | OPT_REKEY,
      "remove an account's rights and rotate the folder key",
      "FOLDER ACCOUNT [--rekey] [--account NAME] [--passfile FILE] VAULT_DIR|--config FILE",
"Remove ACCOUNT's envelope for FOLDER and rotate the folder key (run as a\n"
"dataadmin who can manage FOLDER): data written afterwards is under a key\n"
"the revoked account never held.  Existing files keep their data keys, and\n"
"names, symlink targets and xattrs their key version, until re-keyed: --rekey\n"
"does it at once (as pactfs-admin rekey FOLDER).\n" },
    { "rekey", NEED_UNLOCKED, NULL, cmd_rekey,
      "FOLDER", OPT_ACTING,
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
    { "endpoint-mark", NEED_UNLOCKED, prepare_endpoint_mark, cmd_endpoint_mark,
      "", OPT_ACTING | OPT_ENDPOINT,
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
    { "upgrade", NEED_UNLOCKED, prepare_upgrade, cmd_upgrade,
      "", OPT_ACTING | OPT_NO_BACKUP,
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
    pfs_log_init(PROG, PFS_LOG_INFO);
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
            return run_command(&commands[i], argc - 1, argv + 1);
        }
    fprintf(stderr, PROG ": unknown command \"%s\"; try pactfs-admin --help\n", argv[1]);
    return EXIT_USAGE;
}
