/* pactfs-keyd's shared state: its settings, the service (settings,
 * database, secrets, audit files), what a request carries and what a
 * handler decided.  The modules, from the bottom up:
 *   keyd_secrets   master key and the keys derived from it, the admin
 *                  token's hash, verifiers, sealed shares, anchor tokens
 *   keyd_store     keyd.db: schema, migrations, queries
 *   keyd_audit     its own request log and the vaults' trails, both in the
 *                  project's audit format, and the trails' shippers
 *   keyd_policy    lockouts and rate limits, who may do what
 *   keyd_handlers  request bodies, the handlers, routing, answers
 *   pactfs_keyd    settings, start-up, main
 * The protocol is documented in docs/keyd.md.
 */
#ifndef PACTFS_KEYD_H
#define PACTFS_KEYD_H

#include <stdbool.h>
#include <stdint.h>

#include "audit_ship.h"
#include "crypto.h"
#include "share.h"

#include "keyd_secrets.h"
#include "keyd_store.h"

struct audit;

#define KEYD_MAX_BODY 4096
#define KEYD_NAME_MAX 255
#define KEYD_FILES_SLOT "#files"   /* the signed file head's anchor: VAULT#files */
#define KEYD_ROSTER_SLOT "#roster" /* the signed role roster's anchor: VAULT#roster */
#define KEYD_DEFAULT_CONF "/etc/pactfs/keyd.conf"

struct keyd_conf {
    char *listen_address;
    unsigned port;
    char *cert_file;
    char *key_file;
    char *client_ca_file;      /* optional: require client certificates */
    char **officers;           /* CNs of key officers' client certificates */
    size_t nofficers;
    char *database;
    char *admin_token_file;
    char *master_key_file;
    char *audit_log;           /* its own log, in the project's audit format */
    char *audit_signing_key;   /* the key that signs it, sealed (keyd_secrets.h) */
    char *trail_dir;           /* admin actions in the project's audit format, per vault */
    char *audit_url;           /* optional: ship them to pactfs-auditd */
    struct tls_conf audit_tls;
    char *debug_capture;       /* tests only: raw request bodies */
    unsigned max_failures;
    unsigned lockout_seconds;
    unsigned failure_window_seconds;
    unsigned source_max_failures;
    unsigned source_lockout_seconds;
};

struct keyd {
    struct keyd_conf conf;
    struct keyd_store store;
    struct keyd_secrets secrets;
    struct audit *audit;       /* its own log: one signed session per run */
    char audit_fp[65];         /* the signing key's fingerprint */
    int capture_fd;
    bool require_client_cert;
    struct trail_shipper *shippers;
};

/* What a handler decided; turned into the HTTP answer and the audit line. */
struct outcome {
    unsigned status;
    const char *result;           /* short word for the audit log and error */
    unsigned retry_after;
    uint8_t *share;               /* secmem SHARE_LEN when a share is returned */
    char anchor_token[2 * KEYD_ANCHOR_TOKEN_LEN + 1];   /* login: "" if none */
    bool has_anchor;              /* anchor-get: the vault's anchor */
    int64_t anchor_counter;
    uint8_t anchor_hash[SHA256_LEN];
    /* enroll, enrol-code: the account's state at the service before and
     * after, for the trail's account-change details ("" if none) */
    char before[200], after[200];
};

/* The fields of a request body, secrets decoded into secmem. */
struct fields {
    const char *vault;
    const char *account;
    const char *source;
    uint8_t *auth;                /* secmem SHARE_AUTH_LEN each, NULL if absent */
    uint8_t *new_auth;
    /* anchor-put */
    int64_t counter;              /* -1: absent */
    bool has_hash, force, admin_ok;
    uint8_t hash[SHA256_LEN];
    bool has_token;
    uint8_t token[KEYD_ANCHOR_TOKEN_LEN];
    /* enrol-code / enroll */
    bool has_code_pub, has_code_sig;
    uint8_t code_pub[32];
    uint8_t code_sig[64];
    int64_t expires;              /* -1: absent */
};

static inline void set_outcome(struct outcome *o, unsigned status, const char *result)
{
    o->status = status;
    o->result = result;
}

#endif
