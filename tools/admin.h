/* pactfs-admin: what its command files share.
 *
 * One table of commands (pactfs_admin.c) says for each command its
 * arguments, the common options it takes and what it needs opened; one
 * driver parses those options, opens the vault in the stages the command
 * needs (vault_open.c: storage and key provider, then an unlocked account),
 * runs the handler, maps its error to an exit code (exitcodes.h) and closes
 * the vault.  A handler holds only what its command does. */
#ifndef PACTFS_TOOLS_ADMIN_H
#define PACTFS_TOOLS_ADMIN_H

#include <stdint.h>
#include <stdio.h>

#include "audit_query.h"
#include "vault.h"

#define PROG "pactfs-admin"

/* The common options: a command's row names those it accepts; any other is
 * refused, never silently ignored. */
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
    OPT_AUDIT_QUERY = 1 << 15,/* audit: --by --path --file --op --result --from --until
                                 --follow-renames --all --format */
    OPT_RECEIVER = 1 << 16,   /* audit: --receiver URL --ca --cert --key */
};
#define OPT_ACTING (OPT_CONFIG | OPT_ACCOUNT | OPT_PASSFILE)

/* What the driver opens before the handler runs. */
enum admin_need {
    NEED_NONE,       /* nothing, not even the common options (init parses its own) */
    NEED_ARGS,       /* the common options and the arguments only */
    NEED_STORAGE,    /* vault stages 1 and 2: storage and key provider, no account */
    NEED_ACCOUNT,    /* the same, and the acting account named (it unlocks itself) */
    NEED_UNLOCKED,   /* stage 3 too: the acting account unlocked with its password */
};

/* The common options as given. */
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
    struct audit_filter filter;          /* audit: --by --path ... */
    int audit_all;                       /* audit --all */
    const char *format;                  /* audit --format */
    const char *receiver, *ca, *cert, *key;   /* audit --receiver ... */
    char conf_buf[4096];
};

struct command;

/* One run of one command. */
struct admin_ctx {
    const struct command *cmd;
    int argc;                  /* the command's own: argv[0] is its name */
    char **argv;
    struct vault_args a;
    char **pos;                /* the arguments before VAULT_DIR ... */
    int npos;                  /* ... and how many */
    enum admin_need need;      /* a prepare hook may lower it (show, not set) */
    struct vault *v;           /* opened as need says */
    const char *account;       /* NEED_ACCOUNT, NEED_UNLOCKED: the acting account */
    uint32_t bits;             /* roles or rights a prepare hook parsed */
    char done[600];            /* printed on stdout when the handler succeeds */
};

/* A handler returns an exit code (>= 0, having said what went wrong itself)
 * or a negative errno, which the driver reports (pfs_err_msg) and maps:
 * exit 15 if the audit spool failed, 16 for a name that does not resolve,
 * else cli_exit_code_for. */
struct command {
    const char *name;
    enum admin_need need;
    int (*prepare)(struct admin_ctx *c);  /* optional: checks before opening; an exit code */
    int (*run)(struct admin_ctx *c);
    const char *args;         /* positionals before VAULT_DIR, space-separated, [optional] */
    unsigned opts;            /* OPT_* accepted */
    const char *summary;      /* one line for the command list */
    const char *synopsis;     /* after "pactfs-admin NAME " */
    const char *help;         /* what it does and its options */
};

/* pactfs_admin.c */
extern const struct command *current;   /* the command being run */
__attribute__((format(printf, 1, 2))) int usage_error(const char *fmt, ...);
void command_usage(const struct command *c, FILE *out);
int parse_uint(const char *opt, const char *s, unsigned long max, unsigned long *out);
int admin_exit_code(int rc);
int admin_fail(int rc, int code);       /* report rc, return code */
/* Audit an admin action (rc its outcome, n its count) if the vault audits:
 * 0 or the audit write's error. */
int admin_audit_event(struct vault *v, const char *op, const char *what, int rc, uint64_t n);

/* The handlers.  admin_vault.c: */
int cmd_init(struct admin_ctx *c);
int cmd_passwd(struct admin_ctx *c);
int cmd_rotate_share(struct admin_ctx *c);
int cmd_keyd(struct admin_ctx *c);
int prepare_upgrade(struct admin_ctx *c);
int cmd_upgrade(struct admin_ctx *c);
int prepare_endpoint_mark(struct admin_ctx *c);
int cmd_endpoint_mark(struct admin_ctx *c);

/* admin_folders.c */
int cmd_folder_create(struct admin_ctx *c);
int prepare_grant(struct admin_ctx *c);
int cmd_grant(struct admin_ctx *c);
int cmd_revoke(struct admin_ctx *c);
int cmd_rekey(struct admin_ctx *c);

/* admin_audit.c */
int cmd_audit_ship(struct admin_ctx *c);
int cmd_keyd_audit_verify(struct admin_ctx *c);
int cmd_audit_verify(struct admin_ctx *c);
int prepare_audit(struct admin_ctx *c);
int cmd_audit(struct admin_ctx *c);
int prepare_audit_key(struct admin_ctx *c);
int cmd_audit_key(struct admin_ctx *c);

/* admin_accounts.c: accounts, their policies and the access review */
int cmd_accounts(struct admin_ctx *c);
int cmd_account_show(struct admin_ctx *c);
int cmd_folder_members(struct admin_ctx *c);
int prepare_account_add(struct admin_ctx *c);
int cmd_account_add(struct admin_ctx *c);
int cmd_enroll(struct admin_ctx *c);
int cmd_account_reenrol(struct admin_ctx *c);
int cmd_account_disable(struct admin_ctx *c);
int cmd_account_enable(struct admin_ctx *c);
int prepare_account_details(struct admin_ctx *c);
int cmd_account_details(struct admin_ctx *c);
int cmd_account_rename(struct admin_ctx *c);
int prepare_account_role(struct admin_ctx *c);
int cmd_account_role(struct admin_ctx *c);
int prepare_password_policy(struct admin_ctx *c);
int cmd_password_policy(struct admin_ctx *c);
int prepare_cosign_policy(struct admin_ctx *c);
int cmd_cosign_policy(struct admin_ctx *c);
int cmd_cosign_endorse(struct admin_ctx *c);

#endif
