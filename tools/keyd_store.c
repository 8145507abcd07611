#include "config.h"

/* pactfs-keyd's database (keyd_store.h). */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "error.h"
#include "secmem.h"

#include "https_service.h"
#include "keyd_store.h"

/* The tables of schema 1; later ones come with their migration. */
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
    " first_failure INTEGER NOT NULL DEFAULT 0, locked_until INTEGER NOT NULL DEFAULT 0);";

static int db_exec(struct keyd_store *s, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = pfs_err(-EIO, "database %s: %s failed: %s", s->path, sql,
                         msg ? msg : "?");
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

static int db_open(struct keyd_store *s)
{
    int rc;

    if (sqlite3_open_v2(s->path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK)
        return pfs_err(-EIO, "cannot open database %s: %s", s->path,
                       s->db ? sqlite3_errmsg(s->db) : "out of memory");
    sqlite3_busy_timeout(s->db, 5000);
    /* FULL: a release or a lockout survives a power cut; secure_delete:
     * replaced verifiers and shares do not linger in free pages. */
    rc = db_exec(s, "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;"
                    " PRAGMA secure_delete=ON;");
    return rc ? rc : db_exec(s, keyd_schema);
}

static sqlite3_stmt *db_prepare(struct keyd_store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        pfs_err(-EIO, "database: cannot prepare %s: %s", sql, sqlite3_errmsg(s->db));
        return NULL;
    }
    return st;
}

/* Step a statement that returns no row, then finalize it. */
static int db_step_done(struct keyd_store *s, sqlite3_stmt *st)
{
    int r = sqlite3_step(st);

    sqlite3_finalize(st);
    if (r != SQLITE_DONE)
        return pfs_err(-EIO, "database write failed: %s", sqlite3_errmsg(s->db));
    return 0;
}

/* A statement on one row: its key bound, ?1 (a vault or a source
 * address) and ?2 (an account) unless NULL. */
static sqlite3_stmt *row_stmt(struct keyd_store *s, const char *sql, const char *key1,
                              const char *key2)
{
    sqlite3_stmt *st = db_prepare(s, sql);

    if (st)
        sqlite3_bind_text(st, 1, key1, -1, SQLITE_STATIC);
    if (st && key2)
        sqlite3_bind_text(st, 2, key2, -1, SQLITE_STATIC);
    return st;
}

static int copy_blob(sqlite3_stmt *st, int col, void *dst, size_t n)
{
    if ((size_t)sqlite3_column_bytes(st, col) != n)
        return pfs_err(-EBADMSG, "database: a stored value has the wrong size");
    memcpy(dst, sqlite3_column_blob(st, col), n);
    return 0;
}

/* Step a query of at most one row (NULL: it was not prepared): *row says
 * whether it gave one.  The caller finalizes st. */
static int db_step_row(struct keyd_store *s, sqlite3_stmt *st, bool *row)
{
    int r;

    *row = false;
    if (!st)
        return -EIO;
    r = sqlite3_step(st);
    *row = r == SQLITE_ROW;
    if (r == SQLITE_ROW || r == SQLITE_DONE)
        return 0;
    return pfs_err(-EIO, "database read failed: %s", sqlite3_errmsg(s->db));
}

int keyd_account_load(struct keyd_store *s, const char *vault, const char *account,
                      struct account_row *row)
{
    sqlite3_stmt *st = row_stmt(s,
        "SELECT salt, verifier, sealed_share, disabled, failures, first_failure, locked_until,"
        " updated FROM accounts WHERE vault = ?1 AND account = ?2",
        vault, account);
    int rc;

    memset(row, 0, sizeof *row);
    rc = db_step_row(s, st, &row->found);
    if (row->found) {
        rc = copy_blob(st, 0, row->salt, sizeof row->salt);
        rc = rc ? rc : copy_blob(st, 1, row->verifier, sizeof row->verifier);
        rc = rc ? rc : copy_blob(st, 2, row->sealed_share, sizeof row->sealed_share);
        row->disabled = sqlite3_column_int(st, 3) != 0;
        row->failures = (unsigned)sqlite3_column_int(st, 4);
        row->first_failure = sqlite3_column_int64(st, 5);
        row->locked_until = sqlite3_column_int64(st, 6);
        row->updated = sqlite3_column_int64(st, 7);
    }
    sqlite3_finalize(st);
    return rc;
}

int keyd_account_set_failures(struct keyd_store *s, const char *vault, const char *account,
                              unsigned failures, int64_t first_failure, int64_t locked_until)
{
    sqlite3_stmt *st = row_stmt(s,
        "UPDATE accounts SET failures = ?3, first_failure = ?4, locked_until = ?5"
        " WHERE vault = ?1 AND account = ?2",
        vault, account);

    if (!st)
        return -EIO;
    sqlite3_bind_int(st, 3, (int)failures);
    sqlite3_bind_int64(st, 4, first_failure);
    sqlite3_bind_int64(st, 5, locked_until);
    return db_step_done(s, st);
}

int keyd_source_load(struct keyd_store *s, const char *addr, struct source_row *row)
{
    sqlite3_stmt *st = row_stmt(s, "SELECT failures, first_failure, locked_until FROM sources"
                                   " WHERE addr = ?1", addr, NULL);
    bool found;
    int rc;

    memset(row, 0, sizeof *row);
    rc = db_step_row(s, st, &found);
    if (found) {
        row->failures = (unsigned)sqlite3_column_int(st, 0);
        row->first_failure = sqlite3_column_int64(st, 1);
        row->locked_until = sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    return rc;
}

int keyd_source_store(struct keyd_store *s, const char *addr, const struct source_row *row)
{
    sqlite3_stmt *st = row_stmt(s, "INSERT OR REPLACE INTO sources(addr, failures,"
                                   " first_failure, locked_until) VALUES(?1, ?2, ?3, ?4)",
                                addr, NULL);

    if (!st)
        return -EIO;
    sqlite3_bind_int(st, 2, (int)row->failures);
    sqlite3_bind_int64(st, 3, row->first_failure);
    sqlite3_bind_int64(st, 4, row->locked_until);
    return db_step_done(s, st);
}

static int db_user_version(struct keyd_store *s, int *version)
{
    sqlite3_stmt *st = db_prepare(s, "PRAGMA user_version");
    int rc = 0;

    if (!st)
        return -EIO;
    if (sqlite3_step(st) == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    else
        rc = pfs_err(-EIO, "database %s: cannot read its schema version: %s",
                     s->path, sqlite3_errmsg(s->db));
    sqlite3_finalize(st);
    return rc;
}

/* Re-key one schema-1 row: its stored SHA-256(salt || auth) becomes the
 * keyed verifier.  The row's share must open under this master key first:
 * re-keying under a wrong key would lock every account out for good. */
static int db_rekey_row(struct keyd_store *s, const struct keyd_secrets *sec, int64_t rowid)
{
    sqlite3_stmt *st = db_prepare(s, "SELECT vault, account, verifier, sealed_share"
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
        rc = pfs_err(-EIO, "database read failed: %s", sqlite3_errmsg(s->db));
    if (!rc) {
        vault = strdup((const char *)sqlite3_column_text(st, 0));
        account = strdup((const char *)sqlite3_column_text(st, 1));
        rc = vault && account ? 0 : pfs_err(-ENOMEM, "out of memory");
        rc = rc ? rc : copy_blob(st, 2, inner, sizeof inner);
        rc = rc ? rc : copy_blob(st, 3, sealed, sizeof sealed);
    }
    sqlite3_finalize(st);
    rc = rc ? rc : keyd_share_open(sec, vault, account, sealed, share);
    if (!rc) {
        keyd_key_verifier(sec, vault, account, inner, verifier);
        st = db_prepare(s, "UPDATE accounts SET verifier = ?2 WHERE rowid = ?1");
        if (!st)
            rc = -EIO;
        else {
            sqlite3_bind_int64(st, 1, rowid);
            sqlite3_bind_blob(st, 2, verifier, sizeof verifier, SQLITE_STATIC);
            rc = db_step_done(s, st);
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
static int db_account_rowids(struct keyd_store *s, int64_t **ids, size_t *n)
{
    sqlite3_stmt *st = db_prepare(s, "SELECT rowid FROM accounts");
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
                                          sqlite3_errmsg(s->db));
}

/* The end of a migration's transaction (BEGIN IMMEDIATE): set the schema
 * version and commit, or roll all of it back after rc or a failed commit. */
static int db_migration_end(struct keyd_store *s, int rc, int version, const char *what)
{
    char sql[64];

    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", version);
    rc = rc ? rc : db_exec(s, sql);
    rc = rc ? rc : db_exec(s, "COMMIT");
    if (rc) {
        char why[512];

        snprintf(why, sizeof why, "%s", pfs_err_msg());
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return pfs_err(rc, "database %s: migrating %s to schema %d failed, nothing was "
                       "changed: %s", s->path, what, version, why);
    }
    return 0;
}

/* Schema 1 -> 2 in one transaction: every verifier re-keyed at once (no
 * login needed), secure_delete overwrites the old values in the file. */
static int db_migrate_v2(struct keyd_store *s, const struct keyd_secrets *sec)
{
    int64_t *ids = NULL;
    size_t n = 0;
    int rc = db_exec(s, "BEGIN IMMEDIATE");

    rc = rc ? rc : db_account_rowids(s, &ids, &n);
    for (size_t i = 0; !rc && i < n; i++)
        rc = db_rekey_row(s, sec, ids[i]);
    free(ids);
    rc = db_migration_end(s, rc, 2, "the login verifiers");
    if (rc)
        return rc;
    if (n)
        https_log(LOG_NOTICE, "database %s: %zu login verifiers re-keyed under the master "
                  "key (schema 2); copies and backups made before now still hold the "
                  "old unkeyed verifiers: destroy them", s->path, n);
    return 0;
}

/* Schema 2 -> 3: table anchors.  pactfs-keyd releases that wrote schema 2
 * created it already (without a version of its own), hence IF NOT EXISTS. */
static int db_migrate_table(struct keyd_store *s, const char *create, int version,
                            const char *what)
{
    int rc = db_exec(s, "BEGIN IMMEDIATE");

    rc = rc ? rc : db_exec(s, create);
    return db_migration_end(s, rc, version, what);
}

static int db_migrate_v3(struct keyd_store *s)
{
    return db_migrate_table(s, "CREATE TABLE IF NOT EXISTS anchors("
                               " vault TEXT PRIMARY KEY, counter INTEGER NOT NULL,"
                               " hash BLOB NOT NULL, account TEXT NOT NULL,"
                               " updated INTEGER NOT NULL)", 3, "the vault head anchors");
}

/* Schema 3 -> 4: table enrol_codes (per vault and account: the public key
 * an enrolment code derives, its expiry; deleted when used). */
static int db_migrate_v4(struct keyd_store *s)
{
    return db_migrate_table(s, "CREATE TABLE IF NOT EXISTS enrol_codes("
                               " vault TEXT NOT NULL, account TEXT NOT NULL,"
                               " code_pub BLOB NOT NULL, expires INTEGER NOT NULL,"
                               " created INTEGER NOT NULL, PRIMARY KEY(vault, account))",
                            4, "the enrolment codes");
}

/* Each step is a transaction of its own that ends by setting its version:
 * an interrupted start resumes where it stopped. */
static int db_migrate(struct keyd_store *s, const struct keyd_secrets *sec)
{
    int version = 0, rc = db_user_version(s, &version);

    if (rc || version == KEYD_SCHEMA_VERSION)
        return rc;
    if (version > KEYD_SCHEMA_VERSION)
        return pfs_err(-EINVAL, "database %s has schema %d; this pactfs-keyd reads up to "
                       "schema %d (upgrade pactfs-keyd)", s->path, version,
                       KEYD_SCHEMA_VERSION);
    if (version < 2)
        rc = db_migrate_v2(s, sec);
    if (!rc && version < 3)
        rc = db_migrate_v3(s);
    return rc ? rc : db_migrate_v4(s);
}

int keyd_store_open(struct keyd_store *s, const char *path, const struct keyd_secrets *sec)
{
    int rc;

    s->path = path;
    rc = db_open(s);
    return rc ? rc : db_migrate(s, sec);
}

void keyd_store_close(struct keyd_store *s)
{
    if (s->db)
        sqlite3_close(s->db);
    s->db = NULL;
}

int keyd_store_begin(struct keyd_store *s)
{
    return db_exec(s, "BEGIN IMMEDIATE");
}

int keyd_store_commit(struct keyd_store *s)
{
    return db_exec(s, "COMMIT");
}

void keyd_store_rollback(struct keyd_store *s)
{
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

int keyd_anchor_load(struct keyd_store *s, const char *vault, struct anchor_row *row)
{
    sqlite3_stmt *st = row_stmt(s, "SELECT counter, hash FROM anchors WHERE vault = ?1",
                                vault, NULL);
    bool found;
    int rc;

    memset(row, 0, sizeof *row);
    rc = db_step_row(s, st, &found);
    row->found = found && sqlite3_column_bytes(st, 1) == SHA256_LEN;
    if (row->found) {
        row->counter = sqlite3_column_int64(st, 0);
        memcpy(row->hash, sqlite3_column_blob(st, 1), SHA256_LEN);
    }
    sqlite3_finalize(st);
    return rc;
}

int keyd_anchor_store(struct keyd_store *s, const char *vault, int64_t counter,
                      const uint8_t hash[SHA256_LEN], const char *account, int64_t now)
{
    sqlite3_stmt *st = row_stmt(s, "INSERT OR REPLACE INTO anchors(vault, counter, hash,"
                                   " account, updated) VALUES(?1, ?2, ?3, ?4, ?5)",
                                vault, NULL);

    if (!st)
        return -EIO;
    sqlite3_bind_int64(st, 2, counter);
    sqlite3_bind_blob(st, 3, hash, SHA256_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, account, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now);
    return db_step_done(s, st);
}

int keyd_account_insert(struct keyd_store *s, const char *vault, const char *account,
                        const uint8_t salt[KEYD_SALT_LEN], const uint8_t verifier[SHA256_LEN],
                        const uint8_t sealed[KEYD_SEALED_SHARE_LEN], int64_t now)
{
    sqlite3_stmt *st = row_stmt(s, "INSERT INTO accounts(vault, account, salt, verifier,"
                                   " sealed_share, created, updated)"
                                   " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6)", vault, account);

    if (!st)
        return -EIO;
    sqlite3_bind_blob(st, 3, salt, KEYD_SALT_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, verifier, SHA256_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, sealed, KEYD_SEALED_SHARE_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, now);
    return db_step_done(s, st);
}

int keyd_account_set_auth(struct keyd_store *s, const char *vault, const char *account,
                          const uint8_t salt[KEYD_SALT_LEN],
                          const uint8_t verifier[SHA256_LEN], int64_t now)
{
    sqlite3_stmt *st = row_stmt(s, "UPDATE accounts SET salt = ?3, verifier = ?4,"
                                   " updated = ?5 WHERE vault = ?1 AND account = ?2",
                                vault, account);

    if (!st)
        return -EIO;
    sqlite3_bind_blob(st, 3, salt, KEYD_SALT_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, verifier, SHA256_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now);
    return db_step_done(s, st);
}

int keyd_account_set_share(struct keyd_store *s, const char *vault, const char *account,
                           const uint8_t sealed[KEYD_SEALED_SHARE_LEN], int64_t now)
{
    sqlite3_stmt *st = row_stmt(s, "UPDATE accounts SET sealed_share = ?3, updated = ?4"
                                   " WHERE vault = ?1 AND account = ?2", vault, account);

    if (!st)
        return -EIO;
    sqlite3_bind_blob(st, 3, sealed, KEYD_SEALED_SHARE_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now);
    return db_step_done(s, st);
}

int keyd_account_act(struct keyd_store *s, const char *vault, const char *account,
                     enum keyd_account_action action, bool *found)
{
    static const char *const sql[] = {
        [KEYD_ACCOUNT_UNLOCK] = "UPDATE accounts SET failures = 0, first_failure = 0,"
                                " locked_until = 0 WHERE vault = ?1 AND account = ?2",
        [KEYD_ACCOUNT_DISABLE] = "UPDATE accounts SET disabled = 1"
                                 " WHERE vault = ?1 AND account = ?2",
        [KEYD_ACCOUNT_ENABLE] = "UPDATE accounts SET disabled = 0"
                                " WHERE vault = ?1 AND account = ?2",
        [KEYD_ACCOUNT_REMOVE] = "DELETE FROM accounts WHERE vault = ?1 AND account = ?2",
    };
    sqlite3_stmt *st = row_stmt(s, sql[action], vault, account);
    int rc;

    *found = false;
    if (!st)
        return -EIO;
    rc = db_step_done(s, st);
    *found = !rc && sqlite3_changes(s->db) != 0;
    return rc;
}

int keyd_source_delete(struct keyd_store *s, const char *addr)
{
    sqlite3_stmt *st = row_stmt(s, "DELETE FROM sources WHERE addr = ?1", addr, NULL);

    if (!st)
        return -EIO;
    return db_step_done(s, st);
}

int keyd_code_store(struct keyd_store *s, const char *vault, const char *account,
                    const uint8_t pub[KEYD_CODE_PUB_LEN], int64_t expires, int64_t now)
{
    sqlite3_stmt *st = row_stmt(s, "INSERT OR REPLACE INTO enrol_codes(vault, account,"
                                   " code_pub, expires, created) VALUES(?1, ?2, ?3, ?4, ?5)",
                                vault, account);

    if (!st)
        return -EIO;
    sqlite3_bind_blob(st, 3, pub, KEYD_CODE_PUB_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, expires);
    sqlite3_bind_int64(st, 5, now);
    return db_step_done(s, st);
}

int keyd_code_load(struct keyd_store *s, const char *vault, const char *account,
                   uint8_t pub[KEYD_CODE_PUB_LEN], int64_t *expires, bool *found)
{
    sqlite3_stmt *st = row_stmt(s, "SELECT code_pub, expires FROM enrol_codes"
                                   " WHERE vault = ?1 AND account = ?2", vault, account);
    int rc = db_step_row(s, st, found);

    if (!rc && *found) {
        rc = copy_blob(st, 0, pub, KEYD_CODE_PUB_LEN);
        *expires = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return rc;
}

int keyd_code_delete(struct keyd_store *s, const char *vault, const char *account)
{
    sqlite3_stmt *st = row_stmt(s, "DELETE FROM enrol_codes WHERE vault = ?1 AND account = ?2",
                                vault, account);

    return st ? db_step_done(s, st) : -EIO;
}
