#include "config.h"

/* pactfs-keyd: the key service.  It holds, per (vault, account), the 256-bit
 * second share of the account's unlock key and a verifier of the login
 * authenticator, and releases the share only to a login that presents the
 * authenticator.  HTTPS (libmicrohttpd + GnuTLS, TLS >= 1.2), state in
 * SQLite, configuration in a libconfig file, its own JSON-lines audit log.
 * The protocol is documented in docs/keyd.md.
 *
 * What it stores:
 *   verifier     = HMAC-SHA-256(verifier key, "pactfs-keyd v2 verifier",
 *                  vault, account, SHA-256(salt || auth)), salt random per
 *                  account, verifier key = HKDF(master key), so a copy of
 *                  the database (with the metadata store) allows no offline
 *                  password guessing;
 *   sealed_share = AES-256-GCM(master key, share), AD = vault and account,
 *                  so a copy of the database alone yields no share.
 * Databases of schema 1 (verifier = SHA-256(salt || auth)) are migrated in
 * one transaction when the service starts (db_migrate_v2).
 *
 * It also anchors each vault's signed head (vault_head.h): the newest
 * (counter, SHA-256 of the head) a client reported, in table anchors,
 * which only grows.  Clients read it before trusting a metadata store's
 * head (/v1/anchor-get) and advance it after they advance the head
 * (/v1/anchor-put), authenticated by the anchor token a login returned
 * (HMAC under a key derived from the master key, bound to the vault, the
 * account and an expiry) or the admin token.  docs/keyd.md.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <libconfig.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <sqlite3.h>

#include "audit.h"
#include "audit_ship.h"
#include "buf.h"
#include "crypto.h"
#include "error.h"
#include "exitcodes.h"
#include "secmem.h"
#include "share.h"

#include "https_service.h"

#define KEYD_MAX_BODY 4096
#define KEYD_SALT_LEN 16
#define KEYD_MASTER_KEY_LEN 32
#define KEYD_NAME_MAX 255
#define KEYD_TOKEN_MIN 16
#define KEYD_DEFAULT_CONF "/etc/pactfs/keyd.conf"
#define KEYD_SEALED_SHARE_LEN (SHARE_LEN + AEAD_OVERHEAD)
/* PRAGMA user_version of keyd.db: 0 or 1 = plain salted-hash verifiers,
 * 2 = verifiers keyed by the verifier key (docs/keyd.md). */
#define KEYD_SCHEMA_VERSION 2
#define KEYD_VERIFIER_KEY_LABEL "pactfs-keyd v2 verifier key"
#define KEYD_ANCHOR_KEY_LABEL "pactfs-keyd v1 anchor token key"
#define KEYD_ANCHOR_TOKEN_LIFE (400LL * 86400)          /* longer than any mount */
#define KEYD_VERIFIER_LABEL "pactfs-keyd v2 verifier"

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
    char *audit_log;
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
    sqlite3 *db;
    int audit_fd;
    int capture_fd;
    uint8_t *master_key;          /* secmem, KEYD_MASTER_KEY_LEN */
    uint8_t *verifier_key;        /* secmem, SHA256_LEN: HKDF(master key) */
    uint8_t *anchor_key;          /* secmem, SHA256_LEN: HKDF(master key), anchor tokens */
    uint8_t *admin_token_hash;    /* secmem, SHA256_LEN */
    bool require_client_cert;
    struct trail_shipper *shippers;
};

/* One vault's trail of admin actions and its shipper (audit_url). */
struct trail_shipper {
    struct trail_shipper *next;
    char vault[33];
    struct audit_ship *ship;
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
};

struct account_row {
    bool found;
    uint8_t salt[KEYD_SALT_LEN];
    uint8_t verifier[SHA256_LEN];
    uint8_t sealed_share[KEYD_SEALED_SHARE_LEN];
    bool disabled;
    unsigned failures;
    int64_t first_failure;
    int64_t locked_until;
};

/* ---------------------------------------------------------------- config */

static void keyd_conf_free(struct keyd_conf *c)
{
    free(c->listen_address);
    free(c->cert_file);
    free(c->key_file);
    free(c->client_ca_file);
    for (size_t i = 0; i < c->nofficers; i++)
        free(c->officers[i]);
    free(c->officers);
    free(c->database);
    free(c->admin_token_file);
    free(c->master_key_file);
    free(c->audit_log);
    free(c->trail_dir);
    free(c->audit_url);
    free(c->audit_tls.ca_file);
    free(c->audit_tls.cert_file);
    free(c->audit_tls.key_file);
    free(c->debug_capture);
    memset(c, 0, sizeof *c);
}

/* officers = [ "CN", ... ]: each key officer's client certificate CN.
 * They act without the shared admin token, named on the log and trail. */
static int keyd_conf_officers(config_t *cfg, struct keyd_conf *c)
{
    config_setting_t *s = config_lookup(cfg, "officers");
    int n;

    if (!s)
        return 0;
    n = config_setting_length(s);
    if (!config_setting_is_array(s) || n < 1 || n > 256)
        return pfs_err(-EINVAL, "officers must be a list of 1 to 256 certificate common "
                       "names, e.g. officers = [ \"Jane Officer\" ];");
    if (!c->client_ca_file)
        return pfs_err(-EINVAL, "officers needs client_ca_file: an officer is known by a "
                       "client certificate that CA signed");
    c->officers = calloc((size_t)n, sizeof *c->officers);
    if (!c->officers)
        return pfs_err(-ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        const char *cn = config_setting_get_string_elem(s, i);

        if (!cn || !*cn || strlen(cn) > HTTPS_CN_MAX)
            return pfs_err(-EINVAL, "officers: entry %d is not a certificate common name", i + 1);
        c->officers[i] = strdup(cn);
        if (!c->officers[i])
            return pfs_err(-ENOMEM, "out of memory");
        c->nofficers++;
    }
    return 0;
}

static int keyd_conf_read(config_t *cfg, const char *dir, void *arg)
{
    struct keyd_conf *c = arg;
    int rc = 0;

    rc = rc ? rc : https_conf_string(cfg, dir, "listen_address", false, false,
                                     &c->listen_address);
    rc = rc ? rc : https_conf_uint(cfg, "port", 1, 65535, &c->port);
    rc = rc ? rc : https_conf_string(cfg, dir, "cert_file", true, true, &c->cert_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "key_file", true, true, &c->key_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "client_ca_file", true, false,
                                     &c->client_ca_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "database", true, true, &c->database);
    rc = rc ? rc : keyd_conf_officers(cfg, c);
    rc = rc ? rc : https_conf_string(cfg, dir, "admin_token_file", true, c->nofficers == 0,
                                     &c->admin_token_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "master_key_file", true, true,
                                     &c->master_key_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "audit_log", true, true, &c->audit_log);
    rc = rc ? rc : https_conf_string(cfg, dir, "trail_dir", true, false, &c->trail_dir);
    rc = rc ? rc : https_conf_string(cfg, dir, "audit_url", false, false, &c->audit_url);
    rc = rc ? rc : https_conf_string(cfg, dir, "audit_ca_file", true, false,
                                     &c->audit_tls.ca_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "audit_cert_file", true, false,
                                     &c->audit_tls.cert_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "audit_key_file", true, false,
                                     &c->audit_tls.key_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "debug_capture", true, false, &c->debug_capture);
    rc = rc ? rc : https_conf_uint(cfg, "lockout.max_failures", 1, 1000, &c->max_failures);
    rc = rc ? rc : https_conf_uint(cfg, "lockout.lockout_seconds", 1, 86400 * 30,
                                   &c->lockout_seconds);
    rc = rc ? rc : https_conf_uint(cfg, "lockout.failure_window_seconds", 1, 86400 * 30,
                                   &c->failure_window_seconds);
    rc = rc ? rc : https_conf_uint(cfg, "lockout.source_max_failures", 1, 100000,
                                   &c->source_max_failures);
    rc = rc ? rc : https_conf_uint(cfg, "lockout.source_lockout_seconds", 1, 86400 * 30,
                                   &c->source_lockout_seconds);
    if (!rc && !c->listen_address && !(c->listen_address = strdup("127.0.0.1")))
        rc = pfs_err(-ENOMEM, "out of memory");
    if (!rc && !c->trail_dir) {   /* default: "trail" beside the database */
        const char *slash = strrchr(c->database, '/');
        if (asprintf(&c->trail_dir, "%.*strail", slash ? (int)(slash - c->database + 1) : 0,
                     c->database) < 0) {
            c->trail_dir = NULL;
            rc = pfs_err(-ENOMEM, "out of memory");
        }
    }
    return rc;
}

static int keyd_conf_load(const char *path, struct keyd_conf *c)
{
    int rc;

    memset(c, 0, sizeof *c);
    c->port = 8443;
    c->max_failures = 5;
    c->lockout_seconds = 300;
    c->failure_window_seconds = 900;
    c->source_max_failures = 50;
    c->source_lockout_seconds = 300;
    rc = https_conf_load(path, keyd_conf_read, c);
    if (rc)
        keyd_conf_free(c);
    return rc;
}

/* Length of s without its trailing white space. */
static size_t trimmed_len(const char *s, size_t n)
{
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return n;
}

static int load_master_key(struct keyd *k)
{
    char *text;
    size_t len;
    int rc = https_read_secret_file(k->conf.master_key_file, true, &text, &len);

    if (rc)
        return rc;
    k->master_key = secmem_alloc(KEYD_MASTER_KEY_LEN);
    k->verifier_key = secmem_alloc(SHA256_LEN);
    k->anchor_key = secmem_alloc(SHA256_LEN);
    if (!k->master_key || !k->verifier_key || !k->anchor_key)
        rc = pfs_err(-ENOMEM, "out of memory");
    else if (trimmed_len(text, len) != 2 * KEYD_MASTER_KEY_LEN)
        rc = pfs_err(-EINVAL, "%s must hold 64 hex digits (make one with: "
                     "openssl rand -hex 32 > %s)", k->conf.master_key_file,
                     k->conf.master_key_file);
    else {
        text[2 * KEYD_MASTER_KEY_LEN] = '\0';
        if (hex_decode(text, k->master_key, KEYD_MASTER_KEY_LEN) < 0)
            rc = pfs_err(-EINVAL, "%s is not hex (make one with: openssl rand -hex 32)",
                         k->conf.master_key_file);
        else
            rc = hkdf_sha256(k->master_key, KEYD_MASTER_KEY_LEN, NULL, 0,
                             KEYD_VERIFIER_KEY_LABEL, strlen(KEYD_VERIFIER_KEY_LABEL),
                             k->verifier_key, SHA256_LEN);
        if (rc == 0)
            rc = hkdf_sha256(k->master_key, KEYD_MASTER_KEY_LEN, NULL, 0,
                             KEYD_ANCHOR_KEY_LABEL, strlen(KEYD_ANCHOR_KEY_LABEL),
                             k->anchor_key, SHA256_LEN);
    }
    secmem_free(text, len + 1);
    return rc;
}

/* Keep only the hash of the admin token: comparing hashes in constant time
 * leaks neither the token nor its length. */
static int load_admin_token(struct keyd *k)
{
    char *text;
    size_t len, tlen;
    int rc;

    if (!k->conf.admin_token_file)
        return 0;   /* officers only: no shared token is accepted */
    rc = https_read_secret_file(k->conf.admin_token_file, true, &text, &len);
    if (rc)
        return rc;
    tlen = trimmed_len(text, len);
    k->admin_token_hash = secmem_alloc(SHA256_LEN);
    if (!k->admin_token_hash)
        rc = pfs_err(-ENOMEM, "out of memory");
    else if (tlen < KEYD_TOKEN_MIN)
        rc = pfs_err(-EINVAL, "the admin token in %s is shorter than %d characters "
                     "(make one with: openssl rand -hex 32)", k->conf.admin_token_file,
                     KEYD_TOKEN_MIN);
    else
        sha256(text, tlen, k->admin_token_hash);
    secmem_free(text, len + 1);
    return rc;
}

/* ---------------------------------------------------------------- database */

static const char keyd_schema[] =
    "CREATE TABLE IF NOT EXISTS accounts("
    " vault TEXT NOT NULL, account TEXT NOT NULL,"
    " salt BLOB NOT NULL, verifier BLOB NOT NULL, sealed_share BLOB NOT NULL,"
    " disabled INTEGER NOT NULL DEFAULT 0,"
    " failures INTEGER NOT NULL DEFAULT 0, first_failure INTEGER NOT NULL DEFAULT 0,"
    " locked_until INTEGER NOT NULL DEFAULT 0,"
    " created INTEGER NOT NULL, updated INTEGER NOT NULL,"
    " PRIMARY KEY(vault, account));"
    "CREATE TABLE IF NOT EXISTS sources("
    " addr TEXT PRIMARY KEY, failures INTEGER NOT NULL DEFAULT 0,"
    " first_failure INTEGER NOT NULL DEFAULT 0, locked_until INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS anchors("
    " vault TEXT PRIMARY KEY, counter INTEGER NOT NULL, hash BLOB NOT NULL,"
    " account TEXT NOT NULL, updated INTEGER NOT NULL);";

static int db_exec(struct keyd *k, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(k->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = pfs_err(-EIO, "database %s: %s failed: %s", k->conf.database, sql,
                         msg ? msg : "?");
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

static int db_open(struct keyd *k)
{
    int rc;

    if (sqlite3_open_v2(k->conf.database, &k->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK)
        return pfs_err(-EIO, "cannot open database %s: %s", k->conf.database,
                       k->db ? sqlite3_errmsg(k->db) : "out of memory");
    sqlite3_busy_timeout(k->db, 5000);
    /* FULL: a release or a lockout survives a power cut; secure_delete:
     * replaced verifiers and shares do not linger in free pages. */
    rc = db_exec(k, "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;"
                    " PRAGMA secure_delete=ON;");
    return rc ? rc : db_exec(k, keyd_schema);
}

static sqlite3_stmt *db_prepare(struct keyd *k, const char *sql)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(k->db, sql, -1, &st, NULL) != SQLITE_OK) {
        pfs_err(-EIO, "database: cannot prepare %s: %s", sql, sqlite3_errmsg(k->db));
        return NULL;
    }
    return st;
}

/* Step a statement that returns no row, then finalize it. */
static int db_step_done(struct keyd *k, sqlite3_stmt *st)
{
    int r = sqlite3_step(st);

    sqlite3_finalize(st);
    if (r != SQLITE_DONE)
        return pfs_err(-EIO, "database write failed: %s", sqlite3_errmsg(k->db));
    return 0;
}

static void bind_names(sqlite3_stmt *st, int first, const char *vault, const char *account)
{
    sqlite3_bind_text(st, first, vault, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, first + 1, account, -1, SQLITE_STATIC);
}

static int copy_blob(sqlite3_stmt *st, int col, void *dst, size_t n)
{
    if ((size_t)sqlite3_column_bytes(st, col) != n)
        return pfs_err(-EBADMSG, "database: a stored value has the wrong size");
    memcpy(dst, sqlite3_column_blob(st, col), n);
    return 0;
}

static int account_load(struct keyd *k, const char *vault, const char *account,
                        struct account_row *row)
{
    sqlite3_stmt *st = db_prepare(k,
        "SELECT salt, verifier, sealed_share, disabled, failures, first_failure, locked_until"
        " FROM accounts WHERE vault = ?1 AND account = ?2");
    int r, rc = 0;

    memset(row, 0, sizeof *row);
    if (!st)
        return -EIO;
    bind_names(st, 1, vault, account);
    r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        row->found = true;
        rc = copy_blob(st, 0, row->salt, sizeof row->salt);
        rc = rc ? rc : copy_blob(st, 1, row->verifier, sizeof row->verifier);
        rc = rc ? rc : copy_blob(st, 2, row->sealed_share, sizeof row->sealed_share);
        row->disabled = sqlite3_column_int(st, 3) != 0;
        row->failures = (unsigned)sqlite3_column_int(st, 4);
        row->first_failure = sqlite3_column_int64(st, 5);
        row->locked_until = sqlite3_column_int64(st, 6);
    } else if (r != SQLITE_DONE) {
        rc = pfs_err(-EIO, "database read failed: %s", sqlite3_errmsg(k->db));
    }
    sqlite3_finalize(st);
    return rc;
}

static int account_set_failures(struct keyd *k, const char *vault, const char *account,
                                unsigned failures, int64_t first_failure, int64_t locked_until)
{
    sqlite3_stmt *st = db_prepare(k,
        "UPDATE accounts SET failures = ?3, first_failure = ?4, locked_until = ?5"
        " WHERE vault = ?1 AND account = ?2");

    if (!st)
        return -EIO;
    bind_names(st, 1, vault, account);
    sqlite3_bind_int(st, 3, (int)failures);
    sqlite3_bind_int64(st, 4, first_failure);
    sqlite3_bind_int64(st, 5, locked_until);
    return db_step_done(k, st);
}

struct source_row {
    unsigned failures;
    int64_t first_failure;
    int64_t locked_until;
};

static int source_load(struct keyd *k, const char *addr, struct source_row *row)
{
    sqlite3_stmt *st = db_prepare(k,
        "SELECT failures, first_failure, locked_until FROM sources WHERE addr = ?1");
    int r, rc = 0;

    memset(row, 0, sizeof *row);
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
    r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        row->failures = (unsigned)sqlite3_column_int(st, 0);
        row->first_failure = sqlite3_column_int64(st, 1);
        row->locked_until = sqlite3_column_int64(st, 2);
    } else if (r != SQLITE_DONE) {
        rc = pfs_err(-EIO, "database read failed: %s", sqlite3_errmsg(k->db));
    }
    sqlite3_finalize(st);
    return rc;
}

static int source_store(struct keyd *k, const char *addr, const struct source_row *row)
{
    sqlite3_stmt *st = db_prepare(k,
        "INSERT OR REPLACE INTO sources(addr, failures, first_failure, locked_until)"
        " VALUES(?1, ?2, ?3, ?4)");

    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, (int)row->failures);
    sqlite3_bind_int64(st, 3, row->first_failure);
    sqlite3_bind_int64(st, 4, row->locked_until);
    return db_step_done(k, st);
}

/* ---------------------------------------------------------------- secrets */

/* Key a schema-1 verifier, SHA-256(salt || auth), into the stored one:
 * HMAC-SHA-256(verifier key, label, vault, account, inner).  Without the
 * verifier key (derived from the master key, which is not in the database)
 * a copy of the database cannot check a guessed password.  On failure the
 * output is random, a verifier nobody can match, so the login fails. */
static void key_verifier(struct keyd *k, const char *vault, const char *account,
                         const uint8_t inner[SHA256_LEN], uint8_t out[SHA256_LEN])
{
    struct wbuf b;
    uint8_t *msg;
    size_t len = 0;

    wbuf_init_secure(&b);
    wbuf_put_str(&b, KEYD_VERIFIER_LABEL);
    wbuf_put_str(&b, vault);
    wbuf_put_str(&b, account);
    wbuf_put_bytes(&b, inner, SHA256_LEN);
    msg = wbuf_steal(&b, &len);
    if (!msg || hmac_sha256(k->verifier_key, SHA256_LEN, msg, len, out) != 0)
        crypto_random(out, SHA256_LEN);
    if (msg)
        secmem_free(msg, len);
}

static void make_verifier(struct keyd *k, const char *vault, const char *account,
                          const uint8_t salt[KEYD_SALT_LEN], const uint8_t *auth,
                          uint8_t out[SHA256_LEN])
{
    uint8_t *in = secmem_alloc(KEYD_SALT_LEN + SHARE_AUTH_LEN + SHA256_LEN);
    uint8_t *inner = in + KEYD_SALT_LEN + SHARE_AUTH_LEN;

    if (!in) {
        crypto_random(out, SHA256_LEN);
        return;
    }
    memcpy(in, salt, KEYD_SALT_LEN);
    memcpy(in + KEYD_SALT_LEN, auth, SHARE_AUTH_LEN);
    sha256(in, KEYD_SALT_LEN + SHARE_AUTH_LEN, inner);
    key_verifier(k, vault, account, inner, out);
    secmem_free(in, KEYD_SALT_LEN + SHARE_AUTH_LEN + SHA256_LEN);
}

/* Associated data that binds a sealed share to its vault and account. */
static int share_ad(const char *vault, const char *account, uint8_t **ad, size_t *adlen)
{
    struct wbuf b;

    wbuf_init(&b);
    wbuf_put_str(&b, "pactfs-keyd v1 share");
    wbuf_put_str(&b, vault);
    wbuf_put_str(&b, account);
    *ad = wbuf_steal(&b, adlen);
    return *ad ? 0 : pfs_err(-ENOMEM, "out of memory");
}

static int share_seal(struct keyd *k, const char *vault, const char *account,
                      const uint8_t *share, uint8_t out[KEYD_SEALED_SHARE_LEN])
{
    uint8_t *ad;
    size_t adlen;
    int rc = share_ad(vault, account, &ad, &adlen);

    if (rc)
        return rc;
    rc = aead_seal(k->master_key, ad, adlen, share, SHARE_LEN, out);
    free(ad);
    return rc;
}

static int share_open(struct keyd *k, const char *vault, const char *account,
                      const uint8_t sealed[KEYD_SEALED_SHARE_LEN], uint8_t *share)
{
    uint8_t *ad;
    size_t adlen;
    int rc = share_ad(vault, account, &ad, &adlen);

    if (rc)
        return rc;
    rc = aead_open(k->master_key, ad, adlen, sealed, KEYD_SEALED_SHARE_LEN, share);
    free(ad);
    if (rc)
        return pfs_err(rc, "a stored share does not open under the master key "
                       "(wrong master_key_file or a tampered database)");
    return 0;
}

/* ---------------------------------------------------------------- schema */

static int db_user_version(struct keyd *k, int *version)
{
    sqlite3_stmt *st = db_prepare(k, "PRAGMA user_version");
    int rc = 0;

    if (!st)
        return -EIO;
    if (sqlite3_step(st) == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    else
        rc = pfs_err(-EIO, "database %s: cannot read its schema version: %s",
                     k->conf.database, sqlite3_errmsg(k->db));
    sqlite3_finalize(st);
    return rc;
}

/* Re-key one schema-1 row: its stored SHA-256(salt || auth) becomes the
 * keyed verifier.  The row's share must open under this master key first:
 * re-keying under a wrong key would lock every account out for good. */
static int db_rekey_row(struct keyd *k, int64_t rowid)
{
    sqlite3_stmt *st = db_prepare(k, "SELECT vault, account, verifier, sealed_share"
                                     " FROM accounts WHERE rowid = ?1");
    uint8_t inner[SHA256_LEN], verifier[SHA256_LEN], sealed[KEYD_SEALED_SHARE_LEN];
    uint8_t *share = secmem_alloc(SHARE_LEN);
    char *vault = NULL, *account = NULL;
    int rc = share ? 0 : pfs_err(-ENOMEM, "out of memory");

    if (!st)
        rc = -EIO;
    else
        sqlite3_bind_int64(st, 1, rowid);
    if (!rc && sqlite3_step(st) != SQLITE_ROW)
        rc = pfs_err(-EIO, "database read failed: %s", sqlite3_errmsg(k->db));
    if (!rc) {
        vault = strdup((const char *)sqlite3_column_text(st, 0));
        account = strdup((const char *)sqlite3_column_text(st, 1));
        rc = vault && account ? 0 : pfs_err(-ENOMEM, "out of memory");
        rc = rc ? rc : copy_blob(st, 2, inner, sizeof inner);
        rc = rc ? rc : copy_blob(st, 3, sealed, sizeof sealed);
    }
    sqlite3_finalize(st);
    rc = rc ? rc : share_open(k, vault, account, sealed, share);
    if (!rc) {
        key_verifier(k, vault, account, inner, verifier);
        st = db_prepare(k, "UPDATE accounts SET verifier = ?2 WHERE rowid = ?1");
        if (!st)
            rc = -EIO;
        else {
            sqlite3_bind_int64(st, 1, rowid);
            sqlite3_bind_blob(st, 2, verifier, sizeof verifier, SQLITE_STATIC);
            rc = db_step_done(k, st);
        }
    }
    secmem_wipe(inner, sizeof inner);
    secmem_free(share, SHARE_LEN);
    free(vault);
    free(account);
    return rc;
}

/* The rowids of every account, so the re-keying does not update rows under
 * a running SELECT. */
static int db_account_rowids(struct keyd *k, int64_t **ids, size_t *n)
{
    sqlite3_stmt *st = db_prepare(k, "SELECT rowid FROM accounts");
    size_t cap = 0;
    int r;

    *ids = NULL;
    *n = 0;
    if (!st)
        return -EIO;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            int64_t *m = realloc(*ids, (cap = cap ? 2 * cap : 64) * sizeof *m);
            if (!m) {
                sqlite3_finalize(st);
                return pfs_err(-ENOMEM, "out of memory");
            }
            *ids = m;
        }
        (*ids)[(*n)++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return r == SQLITE_DONE ? 0 : pfs_err(-EIO, "database read failed: %s",
                                          sqlite3_errmsg(k->db));
}

/* Schema 1 -> 2 in one transaction: every verifier re-keyed at once (no
 * login needed), secure_delete overwrites the old values in the file. */
static int db_migrate_v2(struct keyd *k)
{
    int64_t *ids = NULL;
    size_t n = 0;
    int rc = db_exec(k, "BEGIN IMMEDIATE");

    rc = rc ? rc : db_account_rowids(k, &ids, &n);
    for (size_t i = 0; !rc && i < n; i++)
        rc = db_rekey_row(k, ids[i]);
    free(ids);
    rc = rc ? rc : db_exec(k, "PRAGMA user_version = 2");
    rc = rc ? rc : db_exec(k, "COMMIT");
    if (rc) {
        char why[512];

        snprintf(why, sizeof why, "%s", pfs_err_msg());
        sqlite3_exec(k->db, "ROLLBACK", NULL, NULL, NULL);
        return pfs_err(rc, "database %s: migrating the login verifiers to schema 2 failed, "
                       "nothing was changed: %s", k->conf.database, why);
    }
    if (n)
        https_log(LOG_NOTICE, "database %s: %zu login verifiers re-keyed under the master "
                  "key (schema 2); copies and backups made before now still hold the "
                  "old unkeyed verifiers: destroy them", k->conf.database, n);
    return 0;
}

static int db_migrate(struct keyd *k)
{
    int version = 0, rc = db_user_version(k, &version);

    if (rc || version == KEYD_SCHEMA_VERSION)
        return rc;
    if (version > KEYD_SCHEMA_VERSION)
        return pfs_err(-EINVAL, "database %s has schema %d; this pactfs-keyd reads up to "
                       "schema %d (upgrade pactfs-keyd)", k->conf.database, version,
                       KEYD_SCHEMA_VERSION);
    return db_migrate_v2(k);
}

/* ---------------------------------------------------------------- audit */

static int audit_write(struct keyd *k, const char *remote, const char *op,
                       const struct fields *f, const struct outcome *o)
{
    json_object *ev = json_object_new_object();
    const char *line;
    size_t len;
    int rc = -EIO;

    json_object_object_add(ev, "time", json_object_new_int64((int64_t)time(NULL)));
    json_object_object_add(ev, "remote", json_object_new_string(remote));
    json_object_object_add(ev, "op", json_object_new_string(op));
    if (f->vault)
        json_object_object_add(ev, "vault", json_object_new_string(f->vault));
    if (f->account)
        json_object_object_add(ev, "account", json_object_new_string(f->account));
    if (f->source)
        json_object_object_add(ev, "source", json_object_new_string(f->source));
    if (f->counter >= 0)
        json_object_object_add(ev, "counter", json_object_new_int64(f->counter));
    if (f->force)
        json_object_object_add(ev, "force", json_object_new_boolean(1));
    json_object_object_add(ev, "status", json_object_new_int((int)o->status));
    json_object_object_add(ev, "result", json_object_new_string(o->result));
    if (o->retry_after)
        json_object_object_add(ev, "retry_after", json_object_new_int((int)o->retry_after));
    line = json_object_to_json_string_length(ev, JSON_C_TO_STRING_PLAIN, &len);
    /* One write per line with O_APPEND, then fsync: a line is never torn and
     * never lost once the answer has gone out. */
    {
        char *buf = malloc(len + 1);
        if (buf) {
            memcpy(buf, line, len);
            buf[len] = '\n';
            if (write(k->audit_fd, buf, len + 1) != (ssize_t)(len + 1) || fsync(k->audit_fd) < 0)
                https_log(LOG_ERR, "cannot write audit log %s: %s", k->conf.audit_log,
                         strerror(errno));
            else
                rc = 0;
            free(buf);
        }
    }
    https_log(LOG_INFO, "%s %s %s/%s -> %u %s", remote, op, f->vault ? f->vault : "-",
             f->account ? f->account : "-", o->status, o->result);
    json_object_put(ev);
    return rc;
}

/* ---------------------------------------------------------------- trail */

/* Admin actions in the project's audit format (docs/format-audit.md), one
 * spool per vault in trail_dir, each action an unsigned session of its own
 * (pactfs-keyd holds no account key) whose account names the officer.
 * Written before the action commits: if it cannot be written, the action
 * is rolled back (fail-closed).  With audit_url, a shipper per vault sends
 * the spool to pactfs-auditd like the workstations' shippers. */

static bool vault_id_ok(const char *v)
{
    size_t n = v ? strlen(v) : 0;

    if (n != 32)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
            return false;
    return true;
}

static void trail_path(const struct keyd *k, const char *vault, char *out, size_t len)
{
    snprintf(out, len, "%s/%s.log", k->conf.trail_dir, vault);
}

static int status_result(unsigned status)
{
    if (status >= 200 && status < 300)
        return 0;
    switch (status) {
    case 401: case 403: return -EACCES;
    case 404: return -ENOENT;
    case 409: return -EEXIST;
    case 423: case 429: return -EBUSY;
    case 400: return -EINVAL;
    default: return -EIO;
    }
}

static int trail_event(struct keyd *k, const char *officer, const char *op,
                       const struct fields *f, unsigned status)
{
    struct audit_identity id = { .account = officer };
    struct audit_ctx who = { getuid(), getpid() };
    char path[PATH_MAX], name[64];
    struct audit *a = NULL;
    int rc;

    trail_path(k, f->vault, path, sizeof path);
    snprintf(name, sizeof name, "keyd-%s", op);
    rc = audit_open(path, f->vault, &id, &a);
    if (rc == 0)
        rc = audit_event(a, &who, name, f->account ? f->account : "", status_result(status), 0);
    audit_close(a);
    if (rc < 0)
        https_log(LOG_ERR, "cannot write the audit trail %s: %s", path, pfs_err_msg());
    return rc;
}

static void trail_ship(struct keyd *k, const char *vault)
{
    struct audit_ship_opts o = { .tls = &k->conf.audit_tls, .url = k->conf.audit_url };
    struct trail_shipper *t;
    char path[PATH_MAX];

    if (!k->conf.audit_url)
        return;
    for (t = k->shippers; t; t = t->next)
        if (!strcmp(t->vault, vault)) {
            audit_ship_kick(t->ship);
            return;
        }
    trail_path(k, vault, path, sizeof path);
    o.spool_path = path;
    if (!(t = calloc(1, sizeof *t)))
        return;
    snprintf(t->vault, sizeof t->vault, "%s", vault);
    if (audit_ship_start(&o, &t->ship) < 0) {
        https_log(LOG_ERR, "cannot ship the audit trail %s: %s", path, pfs_err_msg());
        free(t);
        return;
    }
    t->next = k->shippers;
    k->shippers = t;
}

/* At start: ship what every vault's trail holds. */
static int trail_setup(struct keyd *k)
{
    DIR *d;
    struct dirent *e;

    if (mkdir(k->conf.trail_dir, 0700) < 0 && errno != EEXIST)
        return pfs_err(-errno, "cannot create the audit trail directory %s: %s",
                       k->conf.trail_dir, strerror(errno));
    if (!k->conf.audit_url || !(d = opendir(k->conf.trail_dir)))
        return 0;
    while ((e = readdir(d))) {
        char vault[33];
        size_t n = strlen(e->d_name);
        if (n == 36 && !strcmp(e->d_name + 32, ".log")) {
            snprintf(vault, sizeof vault, "%.32s", e->d_name);
            if (vault_id_ok(vault))
                trail_ship(k, vault);
        }
    }
    closedir(d);
    return 0;
}

static void trail_teardown(struct keyd *k)
{
    while (k->shippers) {
        struct trail_shipper *t = k->shippers;
        k->shippers = t->next;
        if (audit_ship_stop(t->ship, 5000) < 0)
            https_log(LOG_WARNING, "audit trail of vault %s not all shipped (it stays in %s): "
                      "%s", t->vault, k->conf.trail_dir, pfs_err_msg());
        free(t);
    }
}

/* Test aid (off unless debug_capture is set): record the raw bodies the
 * service received so a test can prove what the client sends. */
static void capture_body(struct keyd *k, const char *url, const struct https_request *r)
{
    json_object *ev;
    const char *line;
    size_t len;

    if (k->capture_fd < 0)
        return;
    ev = json_object_new_object();
    json_object_object_add(ev, "url", json_object_new_string(url));
    json_object_object_add(ev, "body", json_object_new_string_len(r->body, (int)r->len));
    line = json_object_to_json_string_length(ev, JSON_C_TO_STRING_PLAIN, &len);
    if (write(k->capture_fd, line, len) < 0 || write(k->capture_fd, "\n", 1) < 0)
        https_log(LOG_ERR, "cannot write debug capture: %s", strerror(errno));
    json_object_put(ev);
}

/* ---------------------------------------------------------------- body */

/* json-c keeps parsed strings in its own heap: wipe the ones that held a
 * secret before the object is released. */
static void json_wipe_string(json_object *v)
{
    if (v && json_object_is_type(v, json_type_string))
        secmem_wipe((char *)json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

static void json_wipe_all_strings(json_object *obj)
{
    json_object_object_foreach(obj, key, val) {
        (void)key;
        json_wipe_string(val);
    }
}

static bool name_is_valid(const char *s, size_t n)
{
    if (n == 0 || n > KEYD_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static int field_name(json_object *obj, const char *key, const char **out)
{
    json_object *v;

    if (!json_object_object_get_ex(obj, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_string) ||
        !name_is_valid(json_object_get_string(v), (size_t)json_object_get_string_len(v)) ||
        strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
        return -EINVAL;
    *out = json_object_get_string(v);
    return 0;
}

static int field_auth(json_object *obj, const char *key, uint8_t **out)
{
    json_object *v;

    if (!json_object_object_get_ex(obj, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_string) ||
        json_object_get_string_len(v) != 2 * SHARE_AUTH_LEN)
        return -EINVAL;
    *out = secmem_alloc(SHARE_AUTH_LEN);
    if (!*out)
        return -ENOMEM;
    return hex_decode(json_object_get_string(v), *out, SHARE_AUTH_LEN) < 0 ? -EINVAL : 0;
}

static void fields_free(struct fields *f)
{
    secmem_free(f->auth, SHARE_AUTH_LEN);
    secmem_free(f->new_auth, SHARE_AUTH_LEN);
    memset(f, 0, sizeof *f);
}

static int field_hex(json_object *obj, const char *key, uint8_t *out, size_t n, bool *has)
{
    json_object *v;

    if (!json_object_object_get_ex(obj, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_string) ||
        json_object_get_string_len(v) != (int)(2 * n) ||
        hex_decode(json_object_get_string(v), out, n) < 0)
        return -EINVAL;
    *has = true;
    return 0;
}

/* counter (integer >= 0), hash, token (hex), force (boolean). */
static int field_anchor(json_object *obj, struct fields *f)
{
    json_object *v;
    int rc;

    f->counter = -1;
    if (json_object_object_get_ex(obj, "counter", &v)) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
            return -EINVAL;
        f->counter = json_object_get_int64(v);
    }
    if (json_object_object_get_ex(obj, "force", &v)) {
        if (!json_object_is_type(v, json_type_boolean))
            return -EINVAL;
        f->force = json_object_get_boolean(v);
    }
    rc = field_hex(obj, "hash", f->hash, SHA256_LEN, &f->has_hash);
    return rc ? rc : field_hex(obj, "token", f->token, KEYD_ANCHOR_TOKEN_LEN, &f->has_token);
}

/* Parse the request body into a json object and decode its fields.  Every
 * known field is optional here; handlers check what they need. */
static int body_parse(const struct https_request *r, json_object **objp, struct fields *f)
{
    json_tokener *tok = json_tokener_new();
    json_object *obj;
    int rc = 0;

    memset(f, 0, sizeof *f);
    f->counter = -1;
    *objp = NULL;
    if (!tok)
        return -ENOMEM;
    obj = json_tokener_parse_ex(tok, r->body, (int)r->len);
    if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
        json_tokener_get_parse_end(tok) != r->len ||
        !json_object_is_type(obj, json_type_object)) {
        json_tokener_free(tok);
        if (obj) {
            json_wipe_all_strings(obj);
            json_object_put(obj);
        }
        return -EINVAL;
    }
    json_tokener_free(tok);
    rc = rc ? rc : field_name(obj, "vault", &f->vault);
    rc = rc ? rc : field_name(obj, "account", &f->account);
    rc = rc ? rc : field_name(obj, "source", &f->source);
    rc = rc ? rc : field_auth(obj, "auth", &f->auth);
    if (!f->auth)
        rc = rc ? rc : field_auth(obj, "old_auth", &f->auth);
    rc = rc ? rc : field_auth(obj, "new_auth", &f->new_auth);
    rc = rc ? rc : field_anchor(obj, f);
    *objp = obj;
    return rc;
}

/* ---------------------------------------------------------------- handlers */

static void set_outcome(struct outcome *o, unsigned status, const char *result)
{
    o->status = status;
    o->result = result;
}

static int64_t window_start(int64_t first, int64_t now, unsigned window)
{
    return (first == 0 || now - first > (int64_t)window) ? 0 : first;
}

/* Count one failed proof from this source address; true if it is now locked. */
static int source_record_failure(struct keyd *k, const char *remote, int64_t now,
                                 unsigned *retry_after)
{
    struct source_row s;
    int rc = source_load(k, remote, &s);

    if (rc)
        return rc;
    if (!window_start(s.first_failure, now, k->conf.failure_window_seconds)) {
        s.failures = 0;
        s.first_failure = now;
    }
    if (++s.failures >= k->conf.source_max_failures) {
        s.locked_until = now + k->conf.source_lockout_seconds;
        s.failures = 0;
        s.first_failure = 0;
        *retry_after = k->conf.source_lockout_seconds;
    }
    return source_store(k, remote, &s);
}

static int account_record_failure(struct keyd *k, const struct fields *f,
                                  struct account_row *row, int64_t now, unsigned *retry_after)
{
    unsigned failures = row->failures;
    int64_t first = window_start(row->first_failure, now, k->conf.failure_window_seconds);
    int64_t locked_until = 0;

    if (!first) {
        failures = 0;
        first = now;
    }
    if (++failures >= k->conf.max_failures) {
        locked_until = now + k->conf.lockout_seconds;
        failures = 0;
        first = 0;
        if (k->conf.lockout_seconds > *retry_after)
            *retry_after = k->conf.lockout_seconds;
    }
    return account_set_failures(k, f->vault, f->account, failures, first, locked_until);
}

/* Is this source or account locked right now?  Sets a 429 outcome if so. */
static int check_lockouts(struct keyd *k, const char *remote, const struct account_row *row,
                          int64_t now, struct outcome *o)
{
    struct source_row s;
    int64_t until = 0;
    int rc = source_load(k, remote, &s);

    if (rc)
        return rc;
    if (s.locked_until > now)
        until = s.locked_until;
    if (row->found && row->locked_until > now && row->locked_until > until)
        until = row->locked_until;
    if (until) {
        set_outcome(o, 429, "locked");
        o->retry_after = (unsigned)(until - now);
    }
    return 0;
}

/* Check the authenticator of (vault, account), counting failures.  Returns
 * 0 with o->status 0 when it matches and the account is enabled; otherwise
 * o says why (401 uniform for unknown account or wrong auth, 429, 403). */
static int authenticate(struct keyd *k, const char *remote, const struct fields *f,
                        const uint8_t *auth, struct account_row *row, struct outcome *o)
{
    static const uint8_t dummy_salt[KEYD_SALT_LEN];
    uint8_t computed[SHA256_LEN];
    int64_t now = (int64_t)time(NULL);
    unsigned retry = 0;
    bool match;
    int rc;

    if (!f->vault || !f->account || !auth) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    rc = account_load(k, f->vault, f->account, row);
    rc = rc ? rc : check_lockouts(k, remote, row, now, o);
    if (rc || o->status)
        return rc;
    /* Same work whether or not the account exists: the answer is uniform. */
    make_verifier(k, f->vault, f->account, row->found ? row->salt : dummy_salt, auth,
                  computed);
    match = row->found && CRYPTO_memcmp(computed, row->verifier, SHA256_LEN) == 0;
    secmem_wipe(computed, sizeof computed);
    if (!match) {
        rc = source_record_failure(k, remote, now, &retry);
        if (!rc && row->found)
            rc = account_record_failure(k, f, row, now, &retry);
        set_outcome(o, retry ? 429 : 401, retry ? "locked" : "rejected");
        o->retry_after = retry;
        return rc;
    }
    if (row->disabled) {
        set_outcome(o, 403, "disabled");
        return 0;
    }
    if (row->failures || row->first_failure)
        rc = account_set_failures(k, f->vault, f->account, 0, 0, 0);
    return rc;
}

static int new_secret_row(struct keyd *k, const struct fields *f, const uint8_t *auth,
                          uint8_t salt[KEYD_SALT_LEN], uint8_t verifier[SHA256_LEN])
{
    int rc = crypto_random(salt, KEYD_SALT_LEN);

    if (!rc)
        make_verifier(k, f->vault, f->account, salt, auth, verifier);
    return rc;
}

/* A fresh random share in secmem, sealed for the database. */
static int new_share(struct keyd *k, const struct fields *f, struct outcome *o,
                     uint8_t sealed[KEYD_SEALED_SHARE_LEN])
{
    int rc;

    o->share = secmem_alloc(SHARE_LEN);
    if (!o->share)
        return pfs_err(-ENOMEM, "out of memory");
    rc = crypto_random(o->share, SHARE_LEN);
    return rc ? rc : share_seal(k, f->vault, f->account, o->share, sealed);
}

static int handle_enroll(struct keyd *k, const char *remote, const struct fields *f,
                         struct outcome *o)
{
    uint8_t salt[KEYD_SALT_LEN], verifier[SHA256_LEN], sealed[KEYD_SEALED_SHARE_LEN];
    struct account_row row;
    sqlite3_stmt *st;
    int64_t now = (int64_t)time(NULL);
    int rc;

    (void)remote;
    if (!f->vault || !f->account || !f->auth) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    rc = account_load(k, f->vault, f->account, &row);
    if (rc)
        return rc;
    if (row.found) {
        set_outcome(o, 409, "exists");
        return 0;
    }
    rc = new_secret_row(k, f, f->auth, salt, verifier);
    rc = rc ? rc : new_share(k, f, o, sealed);
    if (rc)
        return rc;
    st = db_prepare(k, "INSERT INTO accounts(vault, account, salt, verifier, sealed_share,"
                       " created, updated) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6)");
    if (!st)
        return -EIO;
    bind_names(st, 1, f->vault, f->account);
    sqlite3_bind_blob(st, 3, salt, sizeof salt, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, verifier, sizeof verifier, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, sealed, sizeof sealed, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, now);
    rc = db_step_done(k, st);
    if (!rc)
        set_outcome(o, 200, "enrolled");
    return rc;
}

static int anchor_token_make(struct keyd *k, const char *vault, const char *account,
                             int64_t expires, char out[2 * KEYD_ANCHOR_TOKEN_LEN + 1]);

static int handle_login(struct keyd *k, const char *remote, const struct fields *f,
                        struct outcome *o)
{
    struct account_row row;
    int rc = authenticate(k, remote, f, f->auth, &row, o);

    if (rc || o->status)
        return rc;
    o->share = secmem_alloc(SHARE_LEN);
    if (!o->share)
        return pfs_err(-ENOMEM, "out of memory");
    rc = share_open(k, f->vault, f->account, row.sealed_share, o->share);
    if (!rc)
        rc = anchor_token_make(k, f->vault, f->account, (int64_t)time(NULL) +
                               KEYD_ANCHOR_TOKEN_LIFE, o->anchor_token);
    if (!rc)
        set_outcome(o, 200, "released");
    return rc;
}

/* ---- vault head anchors ---- */

/* token = u64 expiry (big endian) || HMAC(anchor key, label, vault, account,
 * expiry); hex into out (2 * KEYD_ANCHOR_TOKEN_LEN + 1) or raw into raw. */
static int anchor_token_mac(struct keyd *k, const char *vault, const char *account,
                            int64_t expires, uint8_t raw[KEYD_ANCHOR_TOKEN_LEN])
{
    struct wbuf w;
    uint8_t *msg;
    size_t len;
    int rc;

    for (int i = 0; i < 8; i++)
        raw[i] = (uint8_t)((uint64_t)expires >> (56 - 8 * i));
    wbuf_init(&w);
    wbuf_put_str(&w, KEYD_ANCHOR_KEY_LABEL);
    wbuf_put_str(&w, vault);
    wbuf_put_str(&w, account);
    wbuf_put_bytes(&w, raw, 8);
    msg = wbuf_steal(&w, &len);
    rc = msg ? hmac_sha256(k->anchor_key, SHA256_LEN, msg, len, raw + 8) : -ENOMEM;
    free(msg);
    return rc ? pfs_err(-EIO, "cannot make an anchor token") : 0;
}

static int anchor_token_make(struct keyd *k, const char *vault, const char *account,
                             int64_t expires, char out[2 * KEYD_ANCHOR_TOKEN_LEN + 1])
{
    uint8_t raw[KEYD_ANCHOR_TOKEN_LEN];
    int rc = anchor_token_mac(k, vault, account, expires, raw);

    if (!rc)
        hex_encode(raw, sizeof raw, out);
    return rc;
}

/* The caller may move the anchor: the admin token, or an unexpired anchor
 * token of an enrolled, enabled account of this vault. */
static int anchor_caller_ok(struct keyd *k, const struct fields *f, bool *ok)
{
    uint8_t want[KEYD_ANCHOR_TOKEN_LEN];
    struct account_row row;
    int64_t expires = 0;
    int rc;

    *ok = f->admin_ok;
    if (*ok || !f->has_token || !f->account)
        return 0;
    for (int i = 0; i < 8; i++)
        expires = (int64_t)(((uint64_t)expires << 8) | f->token[i]);
    if (expires < (int64_t)time(NULL))
        return 0;
    rc = anchor_token_mac(k, f->vault, f->account, expires, want);
    if (rc)
        return rc;
    if (CRYPTO_memcmp(want, f->token, sizeof want) != 0)
        return 0;
    rc = account_load(k, f->vault, f->account, &row);
    *ok = !rc && row.found && !row.disabled;
    return rc;
}

static int anchor_load(struct keyd *k, const char *vault, struct outcome *o)
{
    sqlite3_stmt *st = db_prepare(k, "SELECT counter, hash FROM anchors WHERE vault = ?1");
    int r;

    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, vault, -1, SQLITE_STATIC);
    r = sqlite3_step(st);
    o->has_anchor = r == SQLITE_ROW && sqlite3_column_bytes(st, 1) == SHA256_LEN;
    if (o->has_anchor) {
        o->anchor_counter = sqlite3_column_int64(st, 0);
        memcpy(o->anchor_hash, sqlite3_column_blob(st, 1), SHA256_LEN);
    }
    sqlite3_finalize(st);
    return r == SQLITE_ROW || r == SQLITE_DONE ? 0
           : pfs_err(-EIO, "database read failed: %s", sqlite3_errmsg(k->db));
}

static int handle_anchor_get(struct keyd *k, const char *remote, const struct fields *f,
                             struct outcome *o)
{
    int rc;

    (void)remote;
    if (!f->vault) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    rc = anchor_load(k, f->vault, o);
    if (!rc)
        set_outcome(o, o->has_anchor ? 200 : 404, o->has_anchor ? "anchor" : "no-anchor");
    return rc;
}

/* The anchor only grows: a lower counter (an older head) or the same
 * counter with another hash (a forked head) is refused with 409, unless
 * force (a client's audited --accept-metadata-rollback). */
static int handle_anchor_put(struct keyd *k, const char *remote, const struct fields *f,
                             struct outcome *o)
{
    struct outcome cur = { 0 };
    sqlite3_stmt *st;
    bool ok = false;
    unsigned retry = 0;
    int rc;

    if (!f->vault || f->counter < 0 || !f->has_hash) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    rc = anchor_caller_ok(k, f, &ok);
    if (!rc && !ok) {
        rc = source_record_failure(k, remote, (int64_t)time(NULL), &retry);
        set_outcome(o, 401, "rejected");
        return rc;
    }
    rc = rc ? rc : anchor_load(k, f->vault, &cur);
    if (rc)
        return rc;
    if (cur.has_anchor && !f->force && f->counter < cur.anchor_counter) {
        set_outcome(o, 409, "stale");
        o->has_anchor = true;
        o->anchor_counter = cur.anchor_counter;
        return 0;
    }
    if (cur.has_anchor && !f->force && f->counter == cur.anchor_counter &&
        memcmp(f->hash, cur.anchor_hash, SHA256_LEN) != 0) {
        set_outcome(o, 409, "fork");
        o->has_anchor = true;
        o->anchor_counter = cur.anchor_counter;
        return 0;
    }
    st = db_prepare(k, "INSERT OR REPLACE INTO anchors(vault, counter, hash, account, updated)"
                       " VALUES(?1, ?2, ?3, ?4, ?5)");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, f->vault, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, f->counter);
    sqlite3_bind_blob(st, 3, f->hash, SHA256_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, f->account ? f->account : "(admin)", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (int64_t)time(NULL));
    rc = db_step_done(k, st);
    if (!rc)
        set_outcome(o, 200, f->force && cur.has_anchor && f->counter < cur.anchor_counter
                    ? "forced" : "anchored");
    return rc;
}

static int handle_change_auth(struct keyd *k, const char *remote, const struct fields *f,
                              struct outcome *o)
{
    uint8_t salt[KEYD_SALT_LEN], verifier[SHA256_LEN];
    struct account_row row;
    sqlite3_stmt *st;
    int rc;

    if (!f->new_auth) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    rc = authenticate(k, remote, f, f->auth, &row, o);
    if (rc || o->status)
        return rc;
    rc = new_secret_row(k, f, f->new_auth, salt, verifier);
    if (rc)
        return rc;
    st = db_prepare(k, "UPDATE accounts SET salt = ?3, verifier = ?4, updated = ?5"
                       " WHERE vault = ?1 AND account = ?2");
    if (!st)
        return -EIO;
    bind_names(st, 1, f->vault, f->account);
    sqlite3_bind_blob(st, 3, salt, sizeof salt, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, verifier, sizeof verifier, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (int64_t)time(NULL));
    rc = db_step_done(k, st);
    if (!rc)
        set_outcome(o, 200, "auth-changed");
    return rc;
}

static int handle_rotate(struct keyd *k, const char *remote, const struct fields *f,
                         struct outcome *o)
{
    uint8_t sealed[KEYD_SEALED_SHARE_LEN];
    struct account_row row;
    sqlite3_stmt *st;
    int rc = authenticate(k, remote, f, f->auth, &row, o);

    if (rc || o->status)
        return rc;
    rc = new_share(k, f, o, sealed);
    if (rc)
        return rc;
    st = db_prepare(k, "UPDATE accounts SET sealed_share = ?3, updated = ?4"
                       " WHERE vault = ?1 AND account = ?2");
    if (!st)
        return -EIO;
    bind_names(st, 1, f->vault, f->account);
    sqlite3_bind_blob(st, 3, sealed, sizeof sealed, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (int64_t)time(NULL));
    rc = db_step_done(k, st);
    if (!rc)
        set_outcome(o, 200, "rotated");
    return rc;
}

/* The administrative changes are one UPDATE/DELETE each; 404 if no row. */
static int admin_account_change(struct keyd *k, const struct fields *f, const char *sql,
                                const char *result, struct outcome *o)
{
    sqlite3_stmt *st;
    int rc;

    if (!f->vault || !f->account) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    st = db_prepare(k, sql);
    if (!st)
        return -EIO;
    bind_names(st, 1, f->vault, f->account);
    rc = db_step_done(k, st);
    if (!rc)
        set_outcome(o, sqlite3_changes(k->db) ? 200 : 404,
                    sqlite3_changes(k->db) ? result : "unknown-account");
    return rc;
}

static int handle_unlock(struct keyd *k, const char *remote, const struct fields *f,
                         struct outcome *o)
{
    (void)remote;
    if (f->source && !f->account) {
        sqlite3_stmt *st = db_prepare(k, "DELETE FROM sources WHERE addr = ?1");
        int rc;
        if (!st)
            return -EIO;
        sqlite3_bind_text(st, 1, f->source, -1, SQLITE_STATIC);
        rc = db_step_done(k, st);
        if (!rc)
            set_outcome(o, 200, "source-unlocked");
        return rc;
    }
    return admin_account_change(k, f, "UPDATE accounts SET failures = 0, first_failure = 0,"
                                " locked_until = 0 WHERE vault = ?1 AND account = ?2",
                                "unlocked", o);
}

static int handle_disable(struct keyd *k, const char *remote, const struct fields *f,
                          struct outcome *o)
{
    (void)remote;
    return admin_account_change(k, f, "UPDATE accounts SET disabled = 1"
                                " WHERE vault = ?1 AND account = ?2", "disabled", o);
}

static int handle_enable(struct keyd *k, const char *remote, const struct fields *f,
                         struct outcome *o)
{
    (void)remote;
    return admin_account_change(k, f, "UPDATE accounts SET disabled = 0"
                                " WHERE vault = ?1 AND account = ?2", "enabled", o);
}

static int handle_remove(struct keyd *k, const char *remote, const struct fields *f,
                         struct outcome *o)
{
    (void)remote;
    return admin_account_change(k, f, "DELETE FROM accounts WHERE vault = ?1 AND account = ?2",
                                "removed", o);
}

typedef int (*handler_fn)(struct keyd *, const char *, const struct fields *, struct outcome *);

struct route {
    const char *path;
    const char *op;
    bool admin;
    handler_fn fn;
};

static const struct route routes[] = {
    { "/v1/enroll", "enroll", true, handle_enroll },
    { "/v1/login", "login", false, handle_login },
    { "/v1/change-auth", "change-auth", false, handle_change_auth },
    { "/v1/rotate", "rotate", false, handle_rotate },
    { "/v1/unlock", "unlock", true, handle_unlock },
    { "/v1/disable", "disable", true, handle_disable },
    { "/v1/enable", "enable", true, handle_enable },
    { "/v1/remove", "remove", true, handle_remove },
    { "/v1/anchor-get", "anchor-get", false, handle_anchor_get },
    { "/v1/anchor-put", "anchor-put", false, handle_anchor_put },
};

static const struct route *route_find(const char *url)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strcmp(routes[i].path, url) == 0)
            return &routes[i];
    return NULL;
}

/* ---------------------------------------------------------------- HTTP */

/* Admin calls carry "Authorization: Bearer <token>". */
static bool admin_token_ok(struct keyd *k, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    uint8_t got[SHA256_LEN];
    bool ok;

    if (!k->admin_token_hash || !h || strncmp(h, "Bearer ", 7) != 0)
        return false;
    sha256(h + 7, strlen(h + 7), got);
    ok = CRYPTO_memcmp(got, k->admin_token_hash, SHA256_LEN) == 0;
    secmem_wipe(got, sizeof got);
    return ok;
}

/* A verified client certificate whose CN is a configured officer. */
static bool officer_ok(struct keyd *k, struct MHD_Connection *c, const char *cn)
{
    if (!cn[0] || !https_client_verified(c))
        return false;
    for (size_t i = 0; i < k->conf.nofficers; i++)
        if (!strcmp(cn, k->conf.officers[i]))
            return true;
    return false;
}

/* With client_ca_file set, only a verified client certificate may call. */
static bool client_cert_ok(struct keyd *k, struct MHD_Connection *c)
{
    return !k->require_client_cert || https_client_verified(c);
}

static enum MHD_Result answer(struct MHD_Connection *c, const struct outcome *o)
{
    json_object *obj = json_object_new_object();
    enum MHD_Result ret;

    if (o->has_anchor) {
        char hex[2 * SHA256_LEN + 1];
        hex_encode(o->anchor_hash, SHA256_LEN, hex);
        json_object_object_add(obj, "counter", json_object_new_int64(o->anchor_counter));
        if (o->status == 200)
            json_object_object_add(obj, "hash", json_object_new_string(hex));
    }
    if (o->status == 200) {
        if (o->share) {
            char hex[2 * SHARE_LEN + 1];
            hex_encode(o->share, SHARE_LEN, hex);
            json_object_object_add(obj, "share", json_object_new_string(hex));
            secmem_wipe(hex, sizeof hex);
        }
        json_object_object_add(obj, "result", json_object_new_string(o->result));
        if (o->anchor_token[0])
            json_object_object_add(obj, "anchor_token", json_object_new_string(o->anchor_token));
    } else {
        json_object_object_add(obj, "error", json_object_new_string(o->result));
        if (o->retry_after)
            json_object_object_add(obj, "retry_after", json_object_new_int((int)o->retry_after));
    }
    ret = https_reply_secret_json(c, o->status, obj, o->retry_after);
    json_wipe_all_strings(obj);
    json_object_put(obj);
    return ret;
}

/* Run a handler inside one IMMEDIATE transaction: a failure counter and the
 * verdict it leads to are written together or not at all. */
static void run_handler(struct keyd *k, const struct route *rt, const char *remote,
                        const char *officer, const struct fields *f, struct outcome *o)
{
    int rc = db_exec(k, "BEGIN IMMEDIATE"), trail = 0;

    if (!rc)
        rc = rt->fn(k, remote, f, o);
    /* An admin action is on the vault's trail before it takes effect. */
    if (!rc && rt->admin && vault_id_ok(f->vault) &&
        trail_event(k, officer, rt->op, f, o->status) < 0)
        rc = trail = -EIO;
    if (!rc)
        rc = db_exec(k, "COMMIT");
    if (rc) {
        https_log(LOG_ERR, "%s %s: %s", remote, rt->op, pfs_err_msg());
        sqlite3_exec(k->db, "ROLLBACK", NULL, NULL, NULL);
        secmem_free(o->share, SHARE_LEN);
        o->share = NULL;
        o->retry_after = 0;
        set_outcome(o, 500, trail ? "audit-unavailable" : "internal");
    }
    if (rt->admin)   /* the log names the person, not only an address */
        https_log(LOG_NOTICE, "%s: %s of \"%s\" by %s: %d %s", remote, rt->op,
                  f->account ? f->account : "?", officer, o->status, o->result);
    if (rt->admin && vault_id_ok(f->vault))
        trail_ship(k, f->vault);
}

static enum MHD_Result dispatch(struct keyd *k, struct MHD_Connection *c, const char *url,
                                const char *method, struct https_request *r)
{
    const struct route *rt = route_find(url);
    struct outcome o = { 0 };
    struct fields f;
    json_object *body = NULL;
    char remote[NI_MAXHOST], cn[HTTPS_CN_MAX + 1] = "", officer[HTTPS_CN_MAX + 16];
    enum MHD_Result ret;

    memset(&f, 0, sizeof f);
    f.counter = -1;
    https_client_address(c, remote, sizeof remote);
    /* Who acts on the trail: the client certificate's CN, else the token. */
    if (https_client_cn(c, cn, sizeof cn) == 0 && cn[0])
        snprintf(officer, sizeof officer, "keyd:%s", cn);
    else
        snprintf(officer, sizeof officer, "keyd:admin-token");
    if (!rt)
        set_outcome(&o, 404, "not-found");
    else if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
        set_outcome(&o, 405, "method-not-allowed");
    else if (r->too_big)
        set_outcome(&o, 413, "too-large");
    else if (!client_cert_ok(k, c))
        set_outcome(&o, 403, "client-certificate-required");
    else if (body_parse(r, &body, &f) < 0)
        set_outcome(&o, 400, "bad-request");
    else if (rt->admin && !officer_ok(k, c, cn) && !admin_token_ok(k, c)) {
        unsigned retry = 0;
        /* A guessed token counts against the source like a guessed auth. */
        if (db_exec(k, "BEGIN IMMEDIATE") == 0) {
            source_record_failure(k, remote, (int64_t)time(NULL), &retry);
            db_exec(k, "COMMIT");
        }
        set_outcome(&o, 401, "rejected");
        if (vault_id_ok(f.vault)) {     /* a refused officer is on the trail too */
            (void)trail_event(k, officer, rt->op, &f, o.status);
            trail_ship(k, f.vault);
        }
    } else {
        f.admin_ok = !rt->admin && (officer_ok(k, c, cn) || admin_token_ok(k, c));
        run_handler(k, rt, remote, officer, &f, &o);
    }
    capture_body(k, url, r);
    /* Fail closed: a share is not released unless its release is on record. */
    if (audit_write(k, remote, rt ? rt->op : "unknown", &f, &o) < 0 && rt &&
        rt->fn == handle_login && o.share) {
        secmem_free(o.share, SHARE_LEN);
        o.share = NULL;
        set_outcome(&o, 500, "audit-unavailable");
    }
    ret = answer(c, &o);
    secmem_free(o.share, SHARE_LEN);
    fields_free(&f);
    if (body) {
        json_wipe_all_strings(body);
        json_object_put(body);
    }
    return ret;
}

/* ---------------------------------------------------------------- startup */

static int open_append(const char *path, int *fd)
{
    *fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (*fd < 0)
        return pfs_err(-errno, "cannot open %s for appending: %s", path, strerror(errno));
    return 0;
}

static int keyd_setup(struct keyd *k)
{
    int rc = load_master_key(k);

    rc = rc ? rc : load_admin_token(k);
    rc = rc ? rc : db_open(k);
    rc = rc ? rc : db_migrate(k);
    rc = rc ? rc : open_append(k->conf.audit_log, &k->audit_fd);
    rc = rc ? rc : trail_setup(k);
    if (!rc && k->conf.debug_capture) {
        rc = open_append(k->conf.debug_capture, &k->capture_fd);
        https_log(LOG_WARNING, "debug_capture is on: every request body, authenticators "
                 "included, is written to %s; never use this outside tests",
                 k->conf.debug_capture);
    }
    k->require_client_cert = k->conf.client_ca_file != NULL;
    return rc;
}

static void keyd_teardown(struct keyd *k)
{
    trail_teardown(k);
    if (k->db)
        sqlite3_close(k->db);
    if (k->audit_fd >= 0)
        close(k->audit_fd);
    if (k->capture_fd >= 0)
        close(k->capture_fd);
    secmem_free(k->master_key, KEYD_MASTER_KEY_LEN);
    secmem_free(k->verifier_key, SHA256_LEN);
    secmem_free(k->anchor_key, SHA256_LEN);
    secmem_free(k->admin_token_hash, SHA256_LEN);
    keyd_conf_free(&k->conf);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, struct https_request *r)
{
    return dispatch(cls, c, url, method, r);
}

/* Load the TLS material, start listening, wait for SIGTERM/SIGINT. */
static int serve(struct keyd *k)
{
    const struct https_service svc = {
        .listen_address = k->conf.listen_address,
        .port = k->conf.port,
        .cert_file = k->conf.cert_file,
        .key_file = k->conf.key_file,
        .key_private_only = true,
        .client_ca_file = k->conf.client_ca_file,
        .connection_timeout = 15,
        .connection_limit = 128,
        .per_ip_connection_limit = 32,
        .max_body = KEYD_MAX_BODY,
        .secret_body = true,        /* authenticators */
        .handle = on_request,
        .cls = k,
    };

    return https_service_run(&svc);
}

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: pactfs-keyd [-f] [-c FILE]\n"
        "The pactfs key service: keeps the second share of each account's unlock key\n"
        "and releases it over HTTPS only to a login that proves the password.\n\n"
        "  -c, --config FILE  configuration (default " KEYD_DEFAULT_CONF ")\n"
        "  -f, --foreground   stay in the foreground and log to stderr\n"
        "                     (otherwise detach and log to syslog)\n"
        "  -h, --help         this text\n"
        "  -V, --version      the version\n\n"
        "See pactfs-keyd(8) and docs/keyd.md for the settings and the protocol.\n");
}

int main(int argc, char **argv)
{
    struct https_cmdline cmd;
    struct keyd k;
    int rc;

    https_log_init("pactfs-keyd", true);
    rc = https_cmdline_parse(argc, argv, KEYD_DEFAULT_CONF, usage, &cmd);
    if (rc >= 0)
        return rc;
    umask(077);
    if (secmem_harden_process() < 0)
        https_log(LOG_WARNING, "cannot disable core dumps: %s", pfs_err_msg());
    memset(&k, 0, sizeof k);
    k.audit_fd = k.capture_fd = -1;
    if (keyd_conf_load(cmd.conf_path, &k.conf) < 0) {
        https_log(LOG_ERR, "%s", pfs_err_msg());
        return EXIT_CONFIG;
    }
    if (!cmd.foreground && https_detach() < 0) {
        keyd_conf_free(&k.conf);
        return EXIT_FAILURE_OTHER;
    }
    rc = keyd_setup(&k);
    if (rc) {
        https_log(LOG_ERR, "%s", pfs_err_msg());
        keyd_teardown(&k);
        return rc == -EINVAL || rc == -ENOENT || rc == -EPERM ? EXIT_CONFIG : EXIT_STORE;
    }
    if (secmem_lock_failures())
        https_log(LOG_WARNING, "%lu key buffers were refused because they could not be "
                  "locked in RAM (raise LimitMEMLOCK)", secmem_lock_failures());
    rc = serve(&k);
    if (rc)
        https_log(LOG_ERR, "%s", pfs_err_msg());
    keyd_teardown(&k);
    return rc ? EXIT_FAILURE_OTHER : EXIT_OK;
}
