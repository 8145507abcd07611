#include "config.h"

/* The embedded metadata backend: one SQLite file in WAL mode with
 * synchronous=FULL (a commit is on disk when meta_commit returns; the daemon
 * switches to NORMAL with meta_set_deferred_sync and makes commits durable in
 * batches with meta_sync, an fsync of the WAL file), foreign
 * keys on, and every statement prepared once per handle and reused, since
 * lookups, getattr and chunk records run thousands of times a second.
 * Schema and its meaning: docs/format-metadata.md. */

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "meta.h"
#include "meta_backend.h"

/* ---- schema and migrations ---- */

/* migrations[v] brings a database from schema version v to v + 1. */
static const char *const migrations[META_SCHEMA_VERSION] = {
    /* 0 -> 1: the first schema */
    "CREATE TABLE params (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE, roles INTEGER NOT NULL, disabled INTEGER NOT NULL,"
    " pubkey BLOB NOT NULL, sealed_key BLOB NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE folders (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " root_ino INTEGER NOT NULL, key_version INTEGER NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE envelopes (folder_id INTEGER NOT NULL REFERENCES folders(id),"
    " account_id INTEGER NOT NULL REFERENCES accounts(id), key_version INTEGER NOT NULL,"
    " rights INTEGER NOT NULL, granted_by INTEGER NOT NULL, wrapped BLOB NOT NULL,"
    " PRIMARY KEY (folder_id, account_id, key_version));"
    "CREATE INDEX envelopes_by_account ON envelopes(account_id);"
    "CREATE TABLE inodes (ino INTEGER PRIMARY KEY AUTOINCREMENT,"
    " folder_id INTEGER NOT NULL, mode INTEGER NOT NULL, uid INTEGER NOT NULL,"
    " gid INTEGER NOT NULL, nlink INTEGER NOT NULL, size INTEGER NOT NULL,"
    " rdev INTEGER NOT NULL, atime_ns INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
    " ctime_ns INTEGER NOT NULL, key_version INTEGER NOT NULL, wrapped_dek BLOB NOT NULL);"
    "CREATE INDEX inodes_orphans ON inodes(ino) WHERE nlink = 0;"
    "CREATE TABLE dirents (cookie INTEGER PRIMARY KEY AUTOINCREMENT,"
    " parent INTEGER NOT NULL REFERENCES inodes(ino), name BLOB NOT NULL,"
    " ino INTEGER NOT NULL REFERENCES inodes(ino), mode INTEGER NOT NULL,"
    " UNIQUE (parent, name));"
    "CREATE INDEX dirents_by_parent ON dirents(parent, cookie);"
    "CREATE INDEX dirents_by_ino ON dirents(ino);"
    "CREATE TABLE symlinks (ino INTEGER PRIMARY KEY REFERENCES inodes(ino),"
    " target BLOB NOT NULL);"
    "CREATE TABLE xattrs (ino INTEGER NOT NULL REFERENCES inodes(ino),"
    " name BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (ino, name));"
    "CREATE TABLE chunks (ino INTEGER NOT NULL REFERENCES inodes(ino),"
    " idx INTEGER NOT NULL, version INTEGER NOT NULL, chunk_id BLOB NOT NULL,"
    " plain_len INTEGER NOT NULL, sealed_len INTEGER NOT NULL, k INTEGER NOT NULL,"
    " m INTEGER NOT NULL, rotation INTEGER NOT NULL, sums BLOB NOT NULL,"
    " PRIMARY KEY (ino, idx));"
    "CREATE TABLE chunk_versions (ino INTEGER NOT NULL REFERENCES inodes(ino),"
    " idx INTEGER NOT NULL, max_version INTEGER NOT NULL, PRIMARY KEY (ino, idx));"
    "CREATE TABLE gc_queue (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " chunk_id BLOB NOT NULL, version INTEGER NOT NULL, plain_len INTEGER NOT NULL,"
    " sealed_len INTEGER NOT NULL, k INTEGER NOT NULL, m INTEGER NOT NULL,"
    " rotation INTEGER NOT NULL, sums BLOB NOT NULL, queued INTEGER NOT NULL);",
};

/* ---- statements, prepared once per handle ---- */

#define ACCOUNT_COLS "id, name, roles, disabled, pubkey, sealed_key, created"
#define FOLDER_COLS "id, root_ino, key_version, created"
#define ENVELOPE_COLS "folder_id, account_id, key_version, rights, granted_by, wrapped"
#define INODE_COLS "ino, folder_id, mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns," \
                   " ctime_ns, key_version, wrapped_dek"
#define CHUNK_COLS "chunk_id, version, plain_len, sealed_len, k, m, rotation, sums"

enum sq_stmt {
    ST_BEGIN, ST_COMMIT, ST_ROLLBACK, ST_SAVEPOINT, ST_RELEASE, ST_ROLLBACK_TO,
    ST_PARAM_GET, ST_PARAM_SET,
    ST_ACCOUNT_ADD, ST_ACCOUNT_GET, ST_ACCOUNT_BY_NAME, ST_ACCOUNT_UPDATE, ST_ACCOUNT_LIST,
    ST_FOLDER_ADD, ST_FOLDER_GET, ST_FOLDER_UPDATE, ST_FOLDER_LIST,
    ST_ENV_PUT, ST_ENV_GET, ST_ENV_DELETE, ST_ENV_LIST_ACCOUNT, ST_ENV_LIST_FOLDER,
    ST_INODE_CREATE, ST_INODE_GET, ST_INODE_UPDATE, ST_INODE_DELETE, ST_ORPHANS,
    ST_SYMLINK_SET, ST_SYMLINK_GET, ST_SYMLINK_DELETE, ST_XATTRS_DELETE_ALL,
    ST_DIRENT_LOOKUP, ST_DIRENT_ADD, ST_DIRENT_REMOVE, ST_DIRENT_LIST, ST_DIRENT_COUNT,
    ST_CHUNK_GET, ST_CHUNK_UPSERT, ST_CHUNK_LIST_INO, ST_CHUNK_LIST_ALL,
    ST_GC_QUEUE_ONE, ST_GC_QUEUE_FROM, ST_CHUNKS_DELETE_FROM, ST_MAXVER_GET, ST_MAXVER_SET,
    ST_MAXVER_DELETE,
    ST_GC_LIST, ST_GC_DONE,
    ST_XATTR_GET, ST_XATTR_INSERT, ST_XATTR_REPLACE, ST_XATTR_UPSERT, ST_XATTR_REMOVE,
    ST_XATTR_LIST,
    ST_STATS,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT pfs_group",
    [ST_RELEASE] = "RELEASE pfs_group",
    [ST_ROLLBACK_TO] = "ROLLBACK TO pfs_group",
    [ST_PARAM_GET] = "SELECT value FROM params WHERE key = ?1",
    [ST_PARAM_SET] = "INSERT INTO params (key, value) VALUES (?1, ?2)"
                     " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    [ST_ACCOUNT_ADD] = "INSERT INTO accounts (name, roles, disabled, pubkey, sealed_key, created)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_ACCOUNT_GET] = "SELECT " ACCOUNT_COLS " FROM accounts WHERE id = ?1",
    [ST_ACCOUNT_BY_NAME] = "SELECT " ACCOUNT_COLS " FROM accounts WHERE name = ?1",
    [ST_ACCOUNT_UPDATE] = "UPDATE accounts SET name = ?2, roles = ?3, disabled = ?4,"
                          " pubkey = ?5, sealed_key = ?6, created = ?7 WHERE id = ?1",
    [ST_ACCOUNT_LIST] = "SELECT " ACCOUNT_COLS " FROM accounts ORDER BY id",
    [ST_FOLDER_ADD] = "INSERT INTO folders (root_ino, key_version, created) VALUES (?1, ?2, ?3)",
    [ST_FOLDER_GET] = "SELECT " FOLDER_COLS " FROM folders WHERE id = ?1",
    [ST_FOLDER_UPDATE] = "UPDATE folders SET root_ino = ?2, key_version = ?3, created = ?4"
                         " WHERE id = ?1",
    [ST_FOLDER_LIST] = "SELECT " FOLDER_COLS " FROM folders ORDER BY id",
    [ST_ENV_PUT] = "INSERT INTO envelopes (" ENVELOPE_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                   " ON CONFLICT (folder_id, account_id, key_version) DO UPDATE SET"
                   " rights = excluded.rights, granted_by = excluded.granted_by,"
                   " wrapped = excluded.wrapped",
    [ST_ENV_GET] = "SELECT " ENVELOPE_COLS " FROM envelopes"
                   " WHERE folder_id = ?1 AND account_id = ?2 AND key_version = ?3",
    [ST_ENV_DELETE] = "DELETE FROM envelopes WHERE folder_id = ?1 AND account_id = ?2",
    [ST_ENV_LIST_ACCOUNT] = "SELECT " ENVELOPE_COLS " FROM envelopes WHERE account_id = ?1"
                            " ORDER BY folder_id, key_version",
    [ST_ENV_LIST_FOLDER] = "SELECT " ENVELOPE_COLS " FROM envelopes WHERE folder_id = ?1"
                           " ORDER BY account_id, key_version",
    [ST_INODE_CREATE] = "INSERT INTO inodes (" INODE_COLS ") VALUES"
                        " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    [ST_INODE_GET] = "SELECT " INODE_COLS " FROM inodes WHERE ino = ?1",
    [ST_INODE_UPDATE] = "UPDATE inodes SET folder_id = ?2, mode = ?3, uid = ?4, gid = ?5,"
                        " nlink = ?6, size = ?7, rdev = ?8, atime_ns = ?9, mtime_ns = ?10,"
                        " ctime_ns = ?11, key_version = ?12, wrapped_dek = ?13 WHERE ino = ?1",
    [ST_INODE_DELETE] = "DELETE FROM inodes WHERE ino = ?1",
    [ST_ORPHANS] = "SELECT ino FROM inodes WHERE nlink = 0 ORDER BY ino",
    [ST_SYMLINK_SET] = "INSERT INTO symlinks (ino, target) VALUES (?1, ?2)"
                       " ON CONFLICT (ino) DO UPDATE SET target = excluded.target",
    [ST_SYMLINK_GET] = "SELECT target FROM symlinks WHERE ino = ?1",
    [ST_SYMLINK_DELETE] = "DELETE FROM symlinks WHERE ino = ?1",
    [ST_XATTRS_DELETE_ALL] = "DELETE FROM xattrs WHERE ino = ?1",
    [ST_DIRENT_LOOKUP] = "SELECT ino FROM dirents WHERE parent = ?1 AND name = ?2",
    [ST_DIRENT_ADD] = "INSERT INTO dirents (parent, name, ino, mode) VALUES (?1, ?2, ?3, ?4)",
    [ST_DIRENT_REMOVE] = "DELETE FROM dirents WHERE parent = ?1 AND name = ?2",
    [ST_DIRENT_LIST] = "SELECT cookie, ino, mode, name FROM dirents"
                       " WHERE parent = ?1 AND cookie > ?2 ORDER BY cookie",
    [ST_DIRENT_COUNT] = "SELECT count(*) FROM dirents WHERE parent = ?1",
    [ST_CHUNK_GET] = "SELECT " CHUNK_COLS " FROM chunks WHERE ino = ?1 AND idx = ?2",
    [ST_CHUNK_UPSERT] = "INSERT INTO chunks (ino, idx, " CHUNK_COLS ") VALUES"
                        " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                        " ON CONFLICT (ino, idx) DO UPDATE SET chunk_id = excluded.chunk_id,"
                        " version = excluded.version, plain_len = excluded.plain_len,"
                        " sealed_len = excluded.sealed_len, k = excluded.k, m = excluded.m,"
                        " rotation = excluded.rotation, sums = excluded.sums",
    [ST_CHUNK_LIST_INO] = "SELECT ino, idx, " CHUNK_COLS " FROM chunks WHERE ino = ?1"
                          " ORDER BY idx",
    [ST_CHUNK_LIST_ALL] = "SELECT ino, idx, " CHUNK_COLS " FROM chunks ORDER BY ino, idx",
    [ST_GC_QUEUE_ONE] = "INSERT INTO gc_queue (" CHUNK_COLS ", queued) SELECT " CHUNK_COLS
                        ", ?3 FROM chunks WHERE ino = ?1 AND idx = ?2",
    [ST_GC_QUEUE_FROM] = "INSERT INTO gc_queue (" CHUNK_COLS ", queued) SELECT " CHUNK_COLS
                         ", ?3 FROM chunks WHERE ino = ?1 AND idx >= ?2 ORDER BY idx",
    [ST_CHUNKS_DELETE_FROM] = "DELETE FROM chunks WHERE ino = ?1 AND idx >= ?2",
    [ST_MAXVER_GET] = "SELECT max_version FROM chunk_versions WHERE ino = ?1 AND idx = ?2",
    [ST_MAXVER_SET] = "INSERT INTO chunk_versions (ino, idx, max_version) VALUES (?1, ?2, ?3)"
                      " ON CONFLICT (ino, idx) DO UPDATE SET"
                      " max_version = max(max_version, excluded.max_version)",
    [ST_MAXVER_DELETE] = "DELETE FROM chunk_versions WHERE ino = ?1",
    [ST_GC_LIST] = "SELECT id, " CHUNK_COLS " FROM gc_queue ORDER BY id LIMIT ?1",
    [ST_GC_DONE] = "DELETE FROM gc_queue WHERE id = ?1",
    [ST_XATTR_GET] = "SELECT value FROM xattrs WHERE ino = ?1 AND name = ?2",
    [ST_XATTR_INSERT] = "INSERT INTO xattrs (ino, name, value) VALUES (?1, ?2, ?3)",
    [ST_XATTR_REPLACE] = "UPDATE xattrs SET value = ?3 WHERE ino = ?1 AND name = ?2",
    [ST_XATTR_UPSERT] = "INSERT INTO xattrs (ino, name, value) VALUES (?1, ?2, ?3)"
                        " ON CONFLICT (ino, name) DO UPDATE SET value = excluded.value",
    [ST_XATTR_REMOVE] = "DELETE FROM xattrs WHERE ino = ?1 AND name = ?2",
    [ST_XATTR_LIST] = "SELECT name FROM xattrs WHERE ino = ?1 ORDER BY name",
    [ST_STATS] = "SELECT count(*), coalesce(sum(size), 0) FROM inodes",
};

struct sq {
    sqlite3 *db;
    char *path;
    int in_txn;                       /* inside meta_begin .. commit/rollback */
    sqlite3_stmt *cache[ST_COUNT];
    unsigned char busy[ST_COUNT];     /* cached statement is being stepped */
};

/* One statement in use: the cached one, or a private one when a list
 * callback re-enters the same call while the cached one is still open. */
struct q {
    struct sq *s;
    enum sq_stmt id;
    sqlite3_stmt *st;
    int temp;
    int bind_rc;
};

static const struct meta_ops sqlite_ops;

static struct sq *SQ(struct meta *m)
{
    return m->impl;
}

/* Map an SQLite result to an errno with a message naming the operation. */
static int sq_error(struct sq *s, int rc, const char *what)
{
    const char *msg = sqlite3_errmsg(s->db);

    switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return pfs_err(-EEXIST, "metadata %s: already exists (%s)", what, msg);
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return pfs_err(-ENOENT, "metadata %s: refers to a missing row or is still "
                       "referenced (%s)", what, msg);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return pfs_err(-EBUSY, "metadata %s: database %s is locked by another process "
                       "for more than 5 s; retry later", what, s->path);
    case SQLITE_FULL:
        return pfs_err(-ENOSPC, "metadata %s: disk full writing %s", what, s->path);
    case SQLITE_NOMEM:
        return pfs_err(-ENOMEM, "metadata %s: out of memory", what);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return pfs_err(-EBADMSG, "metadata %s: database %s is corrupt (%s); restore it "
                       "from a backup", what, s->path, msg);
    default:
        return pfs_err(-EIO, "metadata %s failed on %s: %s", what, s->path, msg);
    }
}

static int q_open(struct sq *s, enum sq_stmt id, struct q *q)
{
    int rc;

    memset(q, 0, sizeof *q);
    q->s = s;
    q->id = id;
    if (s->cache[id] && !s->busy[id]) {
        q->st = s->cache[id];
        s->busy[id] = 1;
        return 0;
    }
    q->temp = s->cache[id] != NULL;
    rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, q->temp ? 0 : SQLITE_PREPARE_PERSISTENT,
                            &q->st, NULL);
    if (rc != SQLITE_OK)
        return sq_error(s, rc, "prepare");
    if (!q->temp) {
        s->cache[id] = q->st;
        s->busy[id] = 1;
    }
    return 0;
}

static void q_close(struct q *q)
{
    if (!q->st)
        return;
    if (q->temp) {
        sqlite3_finalize(q->st);
    } else {
        sqlite3_reset(q->st);
        sqlite3_clear_bindings(q->st);
        q->s->busy[q->id] = 0;
    }
    q->st = NULL;
}

static void q_i64(struct q *q, int col, int64_t v)
{
    int rc = sqlite3_bind_int64(q->st, col, v);

    if (rc && !q->bind_rc)
        q->bind_rc = rc;
}

static void q_u64(struct q *q, int col, uint64_t v)
{
    q_i64(q, col, (int64_t)v);
}

static void q_blob(struct q *q, int col, const void *p, size_t n)
{
    /* an empty blob must still be a blob, not NULL, to satisfy NOT NULL */
    static const uint8_t empty;
    int rc = sqlite3_bind_blob64(q->st, col, n ? p : &empty, n, SQLITE_STATIC);

    if (rc && !q->bind_rc)
        q->bind_rc = rc;
}

static void q_text(struct q *q, int col, const char *t)
{
    int rc = sqlite3_bind_text(q->st, col, t, -1, SQLITE_STATIC);

    if (rc && !q->bind_rc)
        q->bind_rc = rc;
}

/* 1 = a row, 0 = done, < 0 = error (with message). */
static int q_step(struct q *q, const char *what)
{
    int rc;

    if (q->bind_rc)
        return sq_error(q->s, q->bind_rc, what);
    rc = sqlite3_step(q->st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return sq_error(q->s, sqlite3_extended_errcode(q->s->db), what);
}

/* Run a statement that returns no rows; *changes (optional) gets the row count. */
static int q_run(struct q *q, const char *what, int *changes)
{
    int rc = q_step(q, what);

    if (rc > 0)
        rc = 0;
    if (rc == 0 && changes)
        *changes = sqlite3_changes(q->s->db);
    q_close(q);
    return rc;
}

static int exec_stmt(struct sq *s, enum sq_stmt id, const char *what)
{
    struct q q;
    int rc = q_open(s, id, &q);

    return rc ? rc : q_run(&q, what, NULL);
}

static int64_t col_i64(struct q *q, int col)
{
    return sqlite3_column_int64(q->st, col);
}

static const void *col_blob(struct q *q, int col, size_t *len)
{
    const void *p = sqlite3_column_blob(q->st, col);

    *len = (size_t)sqlite3_column_bytes(q->st, col);
    return p;
}

/* A malloc'd copy of a blob column, bounded by max. */
static int col_blob_dup(struct q *q, int col, const char *what, size_t max, uint8_t **out,
                        size_t *len)
{
    const void *p = col_blob(q, col, len);
    int rc = meta_check_row_len(what, *len, max);

    if (rc)
        return rc;
    *out = meta_memdup(p, *len);
    return *out ? 0 : pfs_err(-ENOMEM, "out of memory reading %s", what);
}

/* ---- statement groups: several statements that succeed or fail together,
 * inside or outside a caller's transaction ---- */

static int group_begin(struct sq *s)
{
    return exec_stmt(s, s->in_txn ? ST_SAVEPOINT : ST_BEGIN, "begin");
}

static int group_end(struct sq *s, int rc)
{
    if (sqlite3_get_autocommit(s->db))
        return rc;      /* SQLite already rolled back after a hard error */
    if (s->in_txn) {
        if (rc)
            exec_stmt(s, ST_ROLLBACK_TO, "rollback to savepoint");
        int rc2 = exec_stmt(s, ST_RELEASE, "release savepoint");
        return rc ? rc : rc2;
    }
    if (rc == 0) {
        rc = exec_stmt(s, ST_COMMIT, "commit");
        if (rc == 0)
            return 0;
    }
    if (!sqlite3_get_autocommit(s->db))
        exec_stmt(s, ST_ROLLBACK, "rollback");
    return rc;
}

/* ---- transactions ---- */

static int sq_begin(struct meta *m)
{
    struct sq *s = SQ(m);
    int rc;

    if (s->in_txn)
        return pfs_err(-EBUSY, "metadata transaction already open: transactions do not "
                       "nest; commit or roll back first");
    rc = exec_stmt(s, ST_BEGIN, "begin transaction");
    if (rc == 0)
        s->in_txn = 1;
    return rc;
}

static int sq_commit(struct meta *m)
{
    struct sq *s = SQ(m);
    int rc;

    if (!s->in_txn)
        return pfs_err(-EINVAL, "metadata commit without a transaction");
    s->in_txn = 0;
    if (sqlite3_get_autocommit(s->db))
        return pfs_err(-EIO, "metadata commit: the transaction was already rolled back "
                       "after an earlier error; nothing was written");
    rc = exec_stmt(s, ST_COMMIT, "commit");
    /* a failed commit leaves nothing half done: roll back so the handle is usable */
    if (rc && !sqlite3_get_autocommit(s->db))
        exec_stmt(s, ST_ROLLBACK, "rollback");
    return rc;
}

static int sq_rollback(struct meta *m)
{
    struct sq *s = SQ(m);

    if (!s->in_txn)
        return pfs_err(-EINVAL, "metadata rollback without a transaction");
    s->in_txn = 0;
    if (sqlite3_get_autocommit(s->db))
        return 0;
    return exec_stmt(s, ST_ROLLBACK, "rollback");
}

/* ---- params ---- */

static int sq_param_get(struct meta *m, const char *key, uint8_t **val, size_t *len)
{
    struct q q;
    int rc = q_open(SQ(m), ST_PARAM_GET, &q);

    if (rc)
        return rc;
    q_text(&q, 1, key);
    rc = q_step(&q, "param get");
    if (rc == 0)
        rc = pfs_err(-ENOENT, "vault parameter '%s' is not set", key);
    else if (rc > 0)
        rc = col_blob_dup(&q, 0, "parameter value", META_BLOB_MAX, val, len);
    q_close(&q);
    return rc;
}

static int sq_param_set(struct meta *m, const char *key, const void *val, size_t len)
{
    struct q q;
    int rc = q_open(SQ(m), ST_PARAM_SET, &q);

    if (rc)
        return rc;
    q_text(&q, 1, key);
    q_blob(&q, 2, val, len);
    return q_run(&q, "param set", NULL);
}

/* ---- accounts ---- */

static void bind_account(struct q *q, const struct meta_account *a, int first)
{
    q_text(q, first, a->name);
    q_i64(q, first + 1, a->roles);
    q_i64(q, first + 2, a->disabled ? 1 : 0);
    q_blob(q, first + 3, a->pubkey, a->pubkey_len);
    q_blob(q, first + 4, a->sealed_key, a->sealed_key_len);
    q_i64(q, first + 5, a->created);
}

static int read_account(struct q *q, struct meta_account *a)
{
    size_t nlen;
    const void *name = col_blob(q, 1, &nlen);
    int rc = meta_check_row_len("account name", nlen, META_ACCOUNT_NAME_MAX);

    memset(a, 0, sizeof *a);
    if (rc)
        return rc;
    a->id = (uint64_t)col_i64(q, 0);
    memcpy(a->name, name, nlen);
    a->roles = (uint32_t)col_i64(q, 2);
    a->disabled = col_i64(q, 3) != 0;
    a->created = col_i64(q, 6);
    rc = col_blob_dup(q, 4, "account public key", META_BLOB_MAX, &a->pubkey, &a->pubkey_len);
    if (rc == 0)
        rc = col_blob_dup(q, 5, "sealed account key", META_BLOB_MAX, &a->sealed_key,
                          &a->sealed_key_len);
    if (rc)
        meta_account_clear(a);
    return rc;
}

static int sq_account_add(struct meta *m, struct meta_account *a)
{
    struct q q;
    int rc = q_open(SQ(m), ST_ACCOUNT_ADD, &q);

    if (rc)
        return rc;
    bind_account(&q, a, 1);
    rc = q_run(&q, "account add", NULL);
    if (rc == 0)
        a->id = (uint64_t)sqlite3_last_insert_rowid(SQ(m)->db);
    return rc;
}

static int account_fetch(struct q *q, struct meta_account *out, const char *who)
{
    int rc = q_step(q, "account get");

    if (rc == 0)
        rc = pfs_err(-ENOENT, "no account %s", who);
    else if (rc > 0)
        rc = read_account(q, out);
    q_close(q);
    return rc;
}

static int sq_account_get(struct meta *m, uint64_t id, struct meta_account *out)
{
    struct q q;
    char who[32];
    int rc = q_open(SQ(m), ST_ACCOUNT_GET, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, id);
    snprintf(who, sizeof who, "with id %llu", (unsigned long long)id);
    return account_fetch(&q, out, who);
}

static int sq_account_get_by_name(struct meta *m, const char *name, struct meta_account *out)
{
    struct q q;
    int rc = q_open(SQ(m), ST_ACCOUNT_BY_NAME, &q);

    if (rc)
        return rc;
    q_text(&q, 1, name);
    return account_fetch(&q, out, "by that name");
}

static int sq_account_update(struct meta *m, const struct meta_account *a)
{
    struct q q;
    int changes = 0;
    int rc = q_open(SQ(m), ST_ACCOUNT_UPDATE, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, a->id);
    bind_account(&q, a, 2);
    rc = q_run(&q, "account update", &changes);
    if (rc == 0 && changes == 0)
        rc = pfs_err(-ENOENT, "no account with id %llu", (unsigned long long)a->id);
    return rc;
}

static int sq_account_list(struct meta *m, meta_account_cb cb, void *arg)
{
    struct q q;
    int rc = q_open(SQ(m), ST_ACCOUNT_LIST, &q);

    while (rc == 0 && (rc = q_step(&q, "account list")) > 0) {
        struct meta_account a;

        rc = read_account(&q, &a);
        if (rc)
            break;
        rc = cb(arg, &a);
        meta_account_clear(&a);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

/* ---- folders ---- */

static void read_folder(struct q *q, struct meta_folder *f)
{
    f->id = (uint64_t)col_i64(q, 0);
    f->root_ino = (uint64_t)col_i64(q, 1);
    f->key_version = (uint32_t)col_i64(q, 2);
    f->created = col_i64(q, 3);
}

static int sq_folder_add(struct meta *m, struct meta_folder *f)
{
    struct q q;
    int rc = q_open(SQ(m), ST_FOLDER_ADD, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, f->root_ino);
    q_i64(&q, 2, f->key_version);
    q_i64(&q, 3, f->created);
    rc = q_run(&q, "folder add", NULL);
    if (rc == 0)
        f->id = (uint64_t)sqlite3_last_insert_rowid(SQ(m)->db);
    return rc;
}

static int sq_folder_get(struct meta *m, uint64_t id, struct meta_folder *out)
{
    struct q q;
    int rc = q_open(SQ(m), ST_FOLDER_GET, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, id);
    rc = q_step(&q, "folder get");
    if (rc == 0)
        rc = pfs_err(-ENOENT, "no folder with id %llu", (unsigned long long)id);
    else if (rc > 0) {
        read_folder(&q, out);
        rc = 0;
    }
    q_close(&q);
    return rc;
}

static int sq_folder_update(struct meta *m, const struct meta_folder *f)
{
    struct q q;
    int changes = 0;
    int rc = q_open(SQ(m), ST_FOLDER_UPDATE, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, f->id);
    q_u64(&q, 2, f->root_ino);
    q_i64(&q, 3, f->key_version);
    q_i64(&q, 4, f->created);
    rc = q_run(&q, "folder update", &changes);
    if (rc == 0 && changes == 0)
        rc = pfs_err(-ENOENT, "no folder with id %llu", (unsigned long long)f->id);
    return rc;
}

static int sq_folder_list(struct meta *m, meta_folder_cb cb, void *arg)
{
    struct q q;
    int rc = q_open(SQ(m), ST_FOLDER_LIST, &q);

    while (rc == 0 && (rc = q_step(&q, "folder list")) > 0) {
        struct meta_folder f;

        read_folder(&q, &f);
        rc = cb(arg, &f);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

/* ---- envelopes ---- */

static int read_envelope(struct q *q, struct meta_envelope *e)
{
    memset(e, 0, sizeof *e);
    e->folder_id = (uint64_t)col_i64(q, 0);
    e->account_id = (uint64_t)col_i64(q, 1);
    e->key_version = (uint32_t)col_i64(q, 2);
    e->rights = (uint32_t)col_i64(q, 3);
    e->granted_by = (uint64_t)col_i64(q, 4);
    return col_blob_dup(q, 5, "envelope", META_BLOB_MAX, &e->wrapped, &e->wrapped_len);
}

static int sq_envelope_put(struct meta *m, const struct meta_envelope *e)
{
    struct q q;
    int rc = q_open(SQ(m), ST_ENV_PUT, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, e->folder_id);
    q_u64(&q, 2, e->account_id);
    q_i64(&q, 3, e->key_version);
    q_i64(&q, 4, e->rights);
    q_u64(&q, 5, e->granted_by);
    q_blob(&q, 6, e->wrapped, e->wrapped_len);
    return q_run(&q, "envelope put", NULL);
}

static int sq_envelope_get(struct meta *m, uint64_t folder_id, uint64_t account_id,
                           uint32_t key_version, struct meta_envelope *out)
{
    struct q q;
    int rc = q_open(SQ(m), ST_ENV_GET, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, folder_id);
    q_u64(&q, 2, account_id);
    q_i64(&q, 3, key_version);
    rc = q_step(&q, "envelope get");
    if (rc == 0)
        rc = pfs_err(-ENOENT, "no envelope of folder %llu for account %llu (key version %u)",
                     (unsigned long long)folder_id, (unsigned long long)account_id,
                     key_version);
    else if (rc > 0)
        rc = read_envelope(&q, out);
    q_close(&q);
    return rc;
}

static int sq_envelope_delete(struct meta *m, uint64_t folder_id, uint64_t account_id)
{
    struct q q;
    int changes = 0;
    int rc = q_open(SQ(m), ST_ENV_DELETE, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, folder_id);
    q_u64(&q, 2, account_id);
    rc = q_run(&q, "envelope delete", &changes);
    if (rc == 0 && changes == 0)
        rc = pfs_err(-ENOENT, "no envelope of folder %llu for account %llu",
                     (unsigned long long)folder_id, (unsigned long long)account_id);
    return rc;
}

static int envelope_list(struct sq *s, enum sq_stmt id, uint64_t key, meta_envelope_cb cb,
                         void *arg)
{
    struct q q;
    int rc = q_open(s, id, &q);

    if (rc == 0)
        q_u64(&q, 1, key);
    while (rc == 0 && (rc = q_step(&q, "envelope list")) > 0) {
        struct meta_envelope e;

        rc = read_envelope(&q, &e);
        if (rc)
            break;
        rc = cb(arg, &e);
        meta_envelope_clear(&e);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

static int sq_envelope_list_account(struct meta *m, uint64_t account_id, meta_envelope_cb cb,
                                    void *arg)
{
    return envelope_list(SQ(m), ST_ENV_LIST_ACCOUNT, account_id, cb, arg);
}

static int sq_envelope_list_folder(struct meta *m, uint64_t folder_id, meta_envelope_cb cb,
                                   void *arg)
{
    return envelope_list(SQ(m), ST_ENV_LIST_FOLDER, folder_id, cb, arg);
}

/* ---- inodes ---- */

/* Columns 2..13 of INODE_COLS (everything but ino). */
static void bind_inode_fields(struct q *q, const struct meta_inode *i)
{
    q_u64(q, 2, i->folder_id);
    q_i64(q, 3, i->mode);
    q_i64(q, 4, i->uid);
    q_i64(q, 5, i->gid);
    q_i64(q, 6, i->nlink);
    q_u64(q, 7, i->size);
    q_u64(q, 8, i->rdev);
    q_i64(q, 9, i->atime_ns);
    q_i64(q, 10, i->mtime_ns);
    q_i64(q, 11, i->ctime_ns);
    q_i64(q, 12, i->key_version);
    q_blob(q, 13, i->wrapped_dek, i->wrapped_dek_len);
}

static int read_inode(struct q *q, struct meta_inode *i)
{
    size_t dlen;
    const void *dek = col_blob(q, 12, &dlen);
    int rc = meta_check_row_len("wrapped file key", dlen, sizeof i->wrapped_dek);

    memset(i, 0, sizeof *i);
    if (rc)
        return rc;
    i->ino = (uint64_t)col_i64(q, 0);
    i->folder_id = (uint64_t)col_i64(q, 1);
    i->mode = (uint32_t)col_i64(q, 2);
    i->uid = (uint32_t)col_i64(q, 3);
    i->gid = (uint32_t)col_i64(q, 4);
    i->nlink = (uint32_t)col_i64(q, 5);
    i->size = (uint64_t)col_i64(q, 6);
    i->rdev = (uint64_t)col_i64(q, 7);
    i->atime_ns = col_i64(q, 8);
    i->mtime_ns = col_i64(q, 9);
    i->ctime_ns = col_i64(q, 10);
    i->key_version = (uint32_t)col_i64(q, 11);
    if (dlen)
        memcpy(i->wrapped_dek, dek, dlen);
    i->wrapped_dek_len = (uint32_t)dlen;
    return 0;
}

static int sq_inode_create(struct meta *m, struct meta_inode *i)
{
    struct q q;
    int rc = q_open(SQ(m), ST_INODE_CREATE, &q);

    if (rc)
        return rc;
    if (i->ino)              /* else NULL: AUTOINCREMENT never reuses a number */
        q_u64(&q, 1, i->ino);
    bind_inode_fields(&q, i);
    rc = q_run(&q, "inode create", NULL);
    if (rc == 0)
        i->ino = (uint64_t)sqlite3_last_insert_rowid(SQ(m)->db);
    return rc;
}

static int sq_inode_get(struct meta *m, uint64_t ino, struct meta_inode *out)
{
    struct q q;
    int rc = q_open(SQ(m), ST_INODE_GET, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    rc = q_step(&q, "inode get");
    if (rc == 0)
        rc = pfs_err(-ENOENT, "no inode %llu", (unsigned long long)ino);
    else if (rc > 0)
        rc = read_inode(&q, out);
    q_close(&q);
    return rc;
}

static int sq_inode_update(struct meta *m, const struct meta_inode *i)
{
    struct q q;
    int changes = 0;
    int rc = q_open(SQ(m), ST_INODE_UPDATE, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, i->ino);
    bind_inode_fields(&q, i);
    rc = q_run(&q, "inode update", &changes);
    if (rc == 0 && changes == 0)
        rc = pfs_err(-ENOENT, "no inode %llu", (unsigned long long)i->ino);
    return rc;
}

/* Run a statement bound to (ino) or (ino, idx[, now]). */
static int run_ino_stmt(struct sq *s, enum sq_stmt id, uint64_t ino, int nargs, uint64_t idx,
                        const char *what, int *changes)
{
    struct q q;
    int rc = q_open(s, id, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    if (nargs >= 2)
        q_u64(&q, 2, idx);
    if (nargs >= 3)
        q_i64(&q, 3, (int64_t)time(NULL));
    return q_run(&q, what, changes);
}

/* Move chunk records of ino with idx >= from to the deletion queue. */
static int chunks_to_gc(struct sq *s, uint64_t ino, uint64_t from)
{
    int rc = run_ino_stmt(s, ST_GC_QUEUE_FROM, ino, 3, from, "queue chunks for deletion",
                          NULL);

    if (rc == 0)
        rc = run_ino_stmt(s, ST_CHUNKS_DELETE_FROM, ino, 2, from, "chunk delete", NULL);
    return rc;
}

static int inode_delete_rows(struct sq *s, uint64_t ino)
{
    int changes = 0;
    int rc = chunks_to_gc(s, ino, 0);

    if (rc == 0)
        rc = run_ino_stmt(s, ST_MAXVER_DELETE, ino, 1, 0, "chunk version delete", NULL);
    if (rc == 0)
        rc = run_ino_stmt(s, ST_SYMLINK_DELETE, ino, 1, 0, "symlink delete", NULL);
    if (rc == 0)
        rc = run_ino_stmt(s, ST_XATTRS_DELETE_ALL, ino, 1, 0, "xattr delete", NULL);
    if (rc == 0)
        rc = run_ino_stmt(s, ST_INODE_DELETE, ino, 1, 0, "inode delete", &changes);
    if (rc == -ENOENT)
        return pfs_err(-EBUSY, "inode %llu still has directory entries; remove them "
                       "before deleting it", (unsigned long long)ino);
    if (rc == 0 && changes == 0)
        rc = pfs_err(-ENOENT, "no inode %llu", (unsigned long long)ino);
    return rc;
}

static int sq_inode_delete(struct meta *m, uint64_t ino)
{
    struct sq *s = SQ(m);
    int rc = group_begin(s);

    return rc ? rc : group_end(s, inode_delete_rows(s, ino));
}

static int sq_inode_list_orphans(struct meta *m, meta_ino_cb cb, void *arg)
{
    struct q q;
    int rc = q_open(SQ(m), ST_ORPHANS, &q);

    while (rc == 0 && (rc = q_step(&q, "orphan list")) > 0) {
        rc = cb(arg, (uint64_t)col_i64(&q, 0));
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

static int sq_symlink_set(struct meta *m, uint64_t ino, const uint8_t *target, size_t len)
{
    struct q q;
    int rc = q_open(SQ(m), ST_SYMLINK_SET, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    q_blob(&q, 2, target, len);
    return q_run(&q, "symlink set", NULL);
}

static int sq_symlink_get(struct meta *m, uint64_t ino, uint8_t **target, size_t *len)
{
    struct q q;
    int rc = q_open(SQ(m), ST_SYMLINK_GET, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    rc = q_step(&q, "symlink get");
    if (rc == 0)
        rc = pfs_err(-ENOENT, "no symlink target for inode %llu", (unsigned long long)ino);
    else if (rc > 0)
        rc = col_blob_dup(&q, 0, "symlink target", META_BLOB_MAX, target, len);
    q_close(&q);
    return rc;
}

/* ---- directory entries ---- */

static int sq_dirent_lookup(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                            uint64_t *ino)
{
    struct q q;
    int rc = q_open(SQ(m), ST_DIRENT_LOOKUP, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, parent);
    q_blob(&q, 2, name, len);
    rc = q_step(&q, "lookup");
    if (rc == 0)
        rc = -ENOENT;      /* a normal miss: no message, lookups miss often */
    else if (rc > 0) {
        *ino = (uint64_t)col_i64(&q, 0);
        rc = 0;
    }
    q_close(&q);
    return rc;
}

static int sq_dirent_add(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                         uint64_t ino, uint32_t mode)
{
    struct q q;
    int rc = q_open(SQ(m), ST_DIRENT_ADD, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, parent);
    q_blob(&q, 2, name, len);
    q_u64(&q, 3, ino);
    q_i64(&q, 4, mode);
    return q_run(&q, "directory entry add", NULL);
}

static int sq_dirent_remove(struct meta *m, uint64_t parent, const uint8_t *name, size_t len)
{
    struct q q;
    int changes = 0;
    int rc = q_open(SQ(m), ST_DIRENT_REMOVE, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, parent);
    q_blob(&q, 2, name, len);
    rc = q_run(&q, "directory entry remove", &changes);
    if (rc == 0 && changes == 0)
        rc = pfs_err(-ENOENT, "no such entry in directory %llu", (unsigned long long)parent);
    return rc;
}

static int read_dirent(struct q *q, struct meta_dirent *d)
{
    d->cookie = (uint64_t)col_i64(q, 0);
    d->ino = (uint64_t)col_i64(q, 1);
    d->mode = (uint32_t)col_i64(q, 2);
    d->name = col_blob(q, 3, &d->name_len);
    if (d->name_len == 0)
        return pfs_err(-EBADMSG, "metadata store: empty name in directory; the database "
                       "was altered or is corrupt");
    return meta_check_row_len("directory entry name", d->name_len, META_NAME_MAX);
}

static int sq_dirent_list(struct meta *m, uint64_t parent, uint64_t after, meta_dirent_cb cb,
                          void *arg)
{
    struct q q;
    int rc = q_open(SQ(m), ST_DIRENT_LIST, &q);

    if (rc == 0) {
        q_u64(&q, 1, parent);
        q_u64(&q, 2, after);
    }
    while (rc == 0 && (rc = q_step(&q, "directory list")) > 0) {
        struct meta_dirent d;

        rc = read_dirent(&q, &d);
        if (rc)
            break;
        rc = cb(arg, &d);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

static int sq_dirent_count(struct meta *m, uint64_t parent, uint64_t *count)
{
    struct q q;
    int rc = q_open(SQ(m), ST_DIRENT_COUNT, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, parent);
    rc = q_step(&q, "directory count");
    if (rc > 0) {
        *count = (uint64_t)col_i64(&q, 0);
        rc = 0;
    } else if (rc == 0) {
        rc = pfs_err(-EIO, "metadata directory count returned no row");
    }
    q_close(&q);
    return rc;
}

/* ---- chunks ---- */

/* Decode the CHUNK_COLS starting at column first. */
static int read_chunk(struct q *q, int first, struct chunk_ref *out)
{
    struct meta_chunk_row row;

    row.chunk_id = col_blob(q, first, &row.chunk_id_len);
    row.version = col_i64(q, first + 1);
    row.plain_len = col_i64(q, first + 2);
    row.sealed_len = col_i64(q, first + 3);
    row.k = col_i64(q, first + 4);
    row.m = col_i64(q, first + 5);
    row.rotation = col_i64(q, first + 6);
    row.sums = col_blob(q, first + 7, &row.sums_len);
    return meta_chunk_row_decode(&row, out);
}

static int sq_chunk_get(struct meta *m, uint64_t ino, uint64_t idx, struct chunk_ref *out)
{
    struct q q;
    int rc = q_open(SQ(m), ST_CHUNK_GET, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    q_u64(&q, 2, idx);
    rc = q_step(&q, "chunk get");
    if (rc == 0)
        rc = -ENOENT;      /* a hole: normal, no message */
    else if (rc > 0)
        rc = read_chunk(&q, 0, out);
    q_close(&q);
    return rc;
}

static int max_version_get(struct sq *s, uint64_t ino, uint64_t idx, uint64_t *version)
{
    struct q q;
    int rc = q_open(s, ST_MAXVER_GET, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    q_u64(&q, 2, idx);
    rc = q_step(&q, "chunk version get");
    *version = 0;
    if (rc > 0) {
        int64_t v = col_i64(&q, 0);

        rc = v < 0 ? pfs_err(-EBADMSG, "metadata store: negative chunk version") : 0;
        *version = (uint64_t)v;
    }
    q_close(&q);
    return rc;
}

static int chunk_upsert(struct sq *s, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    struct q q;
    uint8_t sums[EC_MAX_FRAGS * FRAG_SUM_LEN];
    size_t sums_len = meta_chunk_sums_len(r);
    int rc = q_open(s, ST_CHUNK_UPSERT, &q);

    if (rc)
        return rc;
    memcpy(sums, r->sums, sums_len);
    q_u64(&q, 1, ino);
    q_u64(&q, 2, idx);
    q_blob(&q, 3, r->chunk_id, CHUNK_ID_LEN);
    q_u64(&q, 4, r->version);
    q_i64(&q, 5, r->plain_len);
    q_i64(&q, 6, r->sealed_len);
    q_i64(&q, 7, r->k);
    q_i64(&q, 8, r->m);
    q_i64(&q, 9, r->rotation);
    q_blob(&q, 10, sums, sums_len);
    return q_run(&q, "chunk put", NULL);
}

static int chunk_put_rows(struct sq *s, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    uint64_t max;
    int rc = max_version_get(s, ino, idx, &max);

    if (rc == 0 && r->version <= max)
        rc = pfs_err(-EINVAL, "chunk %llu of inode %llu: version %llu is not above the "
                     "highest used (%llu); versions are never reused",
                     (unsigned long long)idx, (unsigned long long)ino,
                     (unsigned long long)r->version, (unsigned long long)max);
    if (rc == 0)
        rc = run_ino_stmt(s, ST_GC_QUEUE_ONE, ino, 3, idx, "queue chunk for deletion", NULL);
    if (rc == 0)
        rc = chunk_upsert(s, ino, idx, r);
    if (rc == 0) {
        struct q q;

        rc = q_open(s, ST_MAXVER_SET, &q);
        if (rc == 0) {
            q_u64(&q, 1, ino);
            q_u64(&q, 2, idx);
            q_u64(&q, 3, r->version);
            rc = q_run(&q, "chunk version set", NULL);
        }
    }
    return rc;
}

static int sq_chunk_put(struct meta *m, uint64_t ino, uint64_t idx, const struct chunk_ref *ref)
{
    struct sq *s = SQ(m);
    int rc = group_begin(s);

    return rc ? rc : group_end(s, chunk_put_rows(s, ino, idx, ref));
}

static int sq_chunk_truncate(struct meta *m, uint64_t ino, uint64_t from_idx)
{
    struct sq *s = SQ(m);
    int rc = group_begin(s);

    return rc ? rc : group_end(s, chunks_to_gc(s, ino, from_idx));
}

static int sq_chunk_list(struct meta *m, uint64_t ino, meta_chunk_cb cb, void *arg)
{
    struct q q;
    int rc = q_open(SQ(m), ino ? ST_CHUNK_LIST_INO : ST_CHUNK_LIST_ALL, &q);

    if (rc == 0 && ino)
        q_u64(&q, 1, ino);
    while (rc == 0 && (rc = q_step(&q, "chunk list")) > 0) {
        struct chunk_ref r;

        rc = read_chunk(&q, 2, &r);
        if (rc)
            break;
        rc = cb(arg, (uint64_t)col_i64(&q, 0), (uint64_t)col_i64(&q, 1), &r);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

static int sq_chunk_max_version(struct meta *m, uint64_t ino, uint64_t idx, uint64_t *version)
{
    return max_version_get(SQ(m), ino, idx, version);
}

/* ---- deletion queue ---- */

static int sq_gc_list(struct meta *m, unsigned limit, meta_gc_cb cb, void *arg)
{
    struct q q;
    int rc = q_open(SQ(m), ST_GC_LIST, &q);

    if (rc == 0)
        q_i64(&q, 1, limit ? (int64_t)limit : -1);   /* LIMIT -1: no limit */
    while (rc == 0 && (rc = q_step(&q, "deletion queue list")) > 0) {
        struct chunk_ref r;

        rc = read_chunk(&q, 1, &r);
        if (rc)
            break;
        rc = cb(arg, (uint64_t)col_i64(&q, 0), &r);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

static int sq_gc_done(struct meta *m, uint64_t id)
{
    int changes = 0;
    int rc = run_ino_stmt(SQ(m), ST_GC_DONE, id, 1, 0, "deletion queue done", &changes);

    if (rc == 0 && changes == 0)
        rc = pfs_err(-ENOENT, "no deletion queue entry %llu", (unsigned long long)id);
    return rc;
}

/* ---- extended attributes ---- */

static enum sq_stmt xattr_set_stmt(int flags)
{
    if (flags == XATTR_CREATE)
        return ST_XATTR_INSERT;
    if (flags == XATTR_REPLACE)
        return ST_XATTR_REPLACE;
    return ST_XATTR_UPSERT;
}

static int sq_xattr_set(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen,
                        const uint8_t *val, size_t vlen, int flags)
{
    struct q q;
    int changes = 0;
    int rc = q_open(SQ(m), xattr_set_stmt(flags), &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    q_blob(&q, 2, name, nlen);
    q_blob(&q, 3, val, vlen);
    rc = q_run(&q, "xattr set", &changes);
    if (rc == 0 && flags == XATTR_REPLACE && changes == 0)
        rc = -ENODATA;
    return rc;
}

static int sq_xattr_get(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen,
                        uint8_t **val, size_t *vlen)
{
    struct q q;
    int rc = q_open(SQ(m), ST_XATTR_GET, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    q_blob(&q, 2, name, nlen);
    rc = q_step(&q, "xattr get");
    if (rc == 0)
        rc = -ENODATA;
    else if (rc > 0)
        rc = col_blob_dup(&q, 0, "xattr value", META_BLOB_MAX, val, vlen);
    q_close(&q);
    return rc;
}

static int sq_xattr_remove(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen)
{
    struct q q;
    int changes = 0;
    int rc = q_open(SQ(m), ST_XATTR_REMOVE, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    q_blob(&q, 2, name, nlen);
    rc = q_run(&q, "xattr remove", &changes);
    return rc == 0 && changes == 0 ? -ENODATA : rc;
}

static int sq_xattr_list(struct meta *m, uint64_t ino, meta_xattr_cb cb, void *arg)
{
    struct q q;
    int rc = q_open(SQ(m), ST_XATTR_LIST, &q);

    if (rc == 0)
        q_u64(&q, 1, ino);
    while (rc == 0 && (rc = q_step(&q, "xattr list")) > 0) {
        size_t nlen;
        const uint8_t *name = col_blob(&q, 0, &nlen);

        rc = meta_check_row_len("xattr name", nlen, META_NAME_MAX);
        if (rc)
            break;
        rc = cb(arg, name, nlen);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

/* ---- statistics ---- */

static int sq_stats(struct meta *m, uint64_t *inodes, uint64_t *bytes)
{
    struct q q;
    int rc = q_open(SQ(m), ST_STATS, &q);

    if (rc)
        return rc;
    rc = q_step(&q, "statistics");
    if (rc > 0) {
        *inodes = (uint64_t)col_i64(&q, 0);
        *bytes = (uint64_t)col_i64(&q, 1);
        rc = 0;
    } else if (rc == 0) {
        rc = pfs_err(-EIO, "metadata statistics returned no row");
    }
    q_close(&q);
    return rc;
}

/* ---- opening, migrations, closing ---- */

static void sq_free(struct sq *s)
{
    if (!s)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->cache[i]);
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

static int sq_sync(struct meta *m);

static void sq_close(struct meta *m)
{
    struct sq *s = SQ(m);

    if (s && s->in_txn && !sqlite3_get_autocommit(s->db))
        exec_stmt(s, ST_ROLLBACK, "rollback at close");
    if (s && !s->in_txn)
        sq_sync(m);   /* deferred commits: durable before the handle goes */
    sq_free(s);
    m->impl = NULL;
}

static int sq_exec(struct sq *s, const char *sql, const char *what)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

    return rc == SQLITE_OK ? 0 : sq_error(s, sqlite3_extended_errcode(s->db), what);
}

/* NORMAL in WAL: a commit appends its frames to the WAL without an fsync.
 * Transactions stay atomic (a torn tail of the WAL is ignored at recovery),
 * only the last ones may be lost, until sq_sync. */
static int sq_set_deferred_sync(struct meta *m, int deferred)
{
    struct sq *s = SQ(m);

    if (s->in_txn)
        return pfs_err(-EBUSY, "cannot change metadata durability inside a transaction");
    return sq_exec(s, deferred ? "PRAGMA synchronous = NORMAL" : "PRAGMA synchronous = FULL",
                   "set synchronous mode");
}

/* Every committed transaction is in the WAL file (or already checkpointed
 * into the database, which a checkpoint syncs): one fsync of the WAL makes
 * them all durable. */
static int sq_sync(struct meta *m)
{
    struct sq *s = SQ(m);
    sqlite3_file *wal = NULL;
    int rc;

    if (s->in_txn)
        return pfs_err(-EBUSY, "metadata sync inside a transaction: commit first");
    rc = sqlite3_file_control(s->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
    if (rc != SQLITE_OK)
        return sq_error(s, rc, "find the write-ahead log to sync");
    if (!wal || !wal->pMethods)
        return 0;   /* no WAL open: nothing was written through this handle */
    rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
    if (rc != SQLITE_OK)
        return pfs_err(-EIO, "cannot sync the write-ahead log of %s (error %d): the disk "
                       "may be failing or full; check it, then remount", s->path, rc);
    return 0;
}

/* One integer from a query with no parameters (0 if no row). */
static int sq_query_int(struct sq *s, const char *sql, int64_t *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

    if (rc != SQLITE_OK)
        return sq_error(s, rc, "schema check");
    *out = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0
           : sq_error(s, sqlite3_extended_errcode(s->db), "schema check");
}

/* The stored schema version: 0 for a file without our tables; an error for
 * a file that holds someone else's tables. */
static int schema_version(struct sq *s, int64_t *version)
{
    int64_t has_table, tables;
    int rc = sq_query_int(s, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                          " AND name = 'schema_version'", &has_table);

    if (rc == 0 && has_table)
        return sq_query_int(s, "SELECT version FROM schema_version", version);
    if (rc == 0)
        rc = sq_query_int(s, "SELECT count(*) FROM sqlite_master", &tables);
    if (rc == 0 && tables)
        return pfs_err(-EINVAL, "%s is an SQLite database but not a pactfs metadata store "
                       "(no schema_version table); check the configured path", s->path);
    *version = 0;
    return rc;
}

static int run_migrations(struct sq *s, int64_t from)
{
    char sql[96];
    int rc = 0;

    if (from == 0)
        rc = sq_exec(s, "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                     "INSERT INTO schema_version VALUES (0);", "create schema table");
    for (int64_t v = from; rc == 0 && v < META_SCHEMA_VERSION; v++) {
        rc = sq_exec(s, migrations[v], "schema migration");
        snprintf(sql, sizeof sql, "UPDATE schema_version SET version = %lld",
                 (long long)v + 1);
        if (rc == 0)
            rc = sq_exec(s, sql, "schema version update");
    }
    return rc;
}

/* Bring the schema to META_SCHEMA_VERSION in one transaction. */
static int migrate(struct sq *s)
{
    int64_t version;
    int rc = sq_exec(s, "BEGIN IMMEDIATE", "begin migration");

    if (rc)
        return rc;
    rc = schema_version(s, &version);
    if (rc == 0 && version > META_SCHEMA_VERSION)
        rc = pfs_err(-EPROTONOSUPPORT, "metadata store %s has schema version %lld, newer "
                     "than this pactfs knows (%d); upgrade pactfs", s->path,
                     (long long)version, META_SCHEMA_VERSION);
    if (rc == 0 && version < 0)
        rc = pfs_err(-EBADMSG, "metadata store %s has an invalid schema version", s->path);
    if (rc == 0 && version < META_SCHEMA_VERSION)
        rc = run_migrations(s, version);
    if (rc == 0)
        return sq_exec(s, "COMMIT", "commit migration");
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int configure_connection(struct sq *s)
{
    sqlite3_stmt *st;
    int rc, wal;

    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, 5000);
    /* the file may come from an untrusted place: no schema tricks */
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_error(s, rc, "enable WAL");
    rc = sqlite3_step(st);
    wal = rc == SQLITE_ROW &&
          strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
    sqlite3_finalize(st);
    if (!wal)
        return pfs_err(-EIO, "cannot switch %s to WAL journal mode: %s", s->path,
                       sqlite3_errmsg(s->db));
    /* NORMAL in WAL may lose the last commits on power loss; we promise durability */
    return sq_exec(s, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
                   "configure connection");
}

/* Create the file ourselves so it is 0600 from its first byte (SQLite gives
 * the -wal and -shm files the same mode). */
static int ensure_file(const char *path, int create)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);

    if (fd < 0)
        return pfs_err(-errno, "cannot open metadata store %s: %s%s", path, strerror(errno),
                       errno == ENOENT && !create ? " (create the vault first)" : "");
    close(fd);
    return 0;
}

int meta_open_sqlite(const char *path, int create, struct meta **out)
{
    struct sq *s;
    int rc = ensure_file(path, create);

    if (rc)
        return rc;
    s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return pfs_err(-ENOMEM, "out of memory opening %s", path);
    }
    rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        rc = s->db ? sq_error(s, rc, "open")
                   : pfs_err(-ENOMEM, "out of memory opening %s", path);
    if (rc == 0)
        rc = configure_connection(s);
    if (rc == 0)
        rc = migrate(s);
    if (rc == 0)
        rc = meta_handle_new(&sqlite_ops, s, out);
    if (rc)
        sq_free(s);
    return rc;
}

static const struct meta_ops sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .param_get = sq_param_get,
    .param_set = sq_param_set,
    .account_add = sq_account_add,
    .account_get = sq_account_get,
    .account_get_by_name = sq_account_get_by_name,
    .account_update = sq_account_update,
    .account_list = sq_account_list,
    .folder_add = sq_folder_add,
    .folder_get = sq_folder_get,
    .folder_update = sq_folder_update,
    .folder_list = sq_folder_list,
    .envelope_put = sq_envelope_put,
    .envelope_get = sq_envelope_get,
    .envelope_delete = sq_envelope_delete,
    .envelope_list_account = sq_envelope_list_account,
    .envelope_list_folder = sq_envelope_list_folder,
    .inode_create = sq_inode_create,
    .inode_get = sq_inode_get,
    .inode_update = sq_inode_update,
    .inode_delete = sq_inode_delete,
    .inode_list_orphans = sq_inode_list_orphans,
    .symlink_set = sq_symlink_set,
    .symlink_get = sq_symlink_get,
    .dirent_lookup = sq_dirent_lookup,
    .dirent_add = sq_dirent_add,
    .dirent_remove = sq_dirent_remove,
    .dirent_list = sq_dirent_list,
    .dirent_count = sq_dirent_count,
    .chunk_get = sq_chunk_get,
    .chunk_put = sq_chunk_put,
    .chunk_truncate = sq_chunk_truncate,
    .chunk_list = sq_chunk_list,
    .chunk_max_version = sq_chunk_max_version,
    .gc_list = sq_gc_list,
    .gc_done = sq_gc_done,
    .xattr_set = sq_xattr_set,
    .xattr_get = sq_xattr_get,
    .xattr_remove = sq_xattr_remove,
    .xattr_list = sq_xattr_list,
    .stats = sq_stats,
    .set_deferred_sync = sq_set_deferred_sync,
    .sync = sq_sync,
};
