#include "config.h"

/* The metadata store written once over any SQL driver (meta_sql.h): the
 * schema and its migrations, the statements, the row decoders (every row is
 * untrusted input: lengths, ranges and column types are checked before use),
 * the rules that span several tables, transactions and statement groups.
 * meta_sqlite.c and meta_pg.c only run the SQL.
 * Schema and its meaning: docs/format-metadata.md. */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <time.h>

#include "crashpoint.h"
#include "error.h"
#include "meta.h"
#include "meta_backend.h"
#include "meta_shared.h"
#include "meta_sql.h"

/* ---- schema and migrations ---- */

/* migrations[v] brings a store from schema version v to v + 1.  Every
 * integer is {INT} (BIGINT on PostgreSQL, so each binary integer result is
 * exactly 8 bytes). */
static const char *const migrations[META_SCHEMA_VERSION] = {
    /* 0 -> 1: the first schema */
    "CREATE TABLE params (key TEXT PRIMARY KEY, value {BLOB} NOT NULL);"
    "CREATE TABLE accounts (id {ID},"
    " name TEXT NOT NULL UNIQUE, roles {INT} NOT NULL, disabled {INT} NOT NULL,"
    " pubkey {BLOB} NOT NULL, sealed_key {BLOB} NOT NULL, created {INT} NOT NULL);"
    "CREATE TABLE folders (id {ID},"
    " root_ino {INT} NOT NULL, key_version {INT} NOT NULL, created {INT} NOT NULL);"
    "CREATE TABLE envelopes (folder_id {INT} NOT NULL REFERENCES folders(id),"
    " account_id {INT} NOT NULL REFERENCES accounts(id), key_version {INT} NOT NULL,"
    " rights {INT} NOT NULL, granted_by {INT} NOT NULL, wrapped {BLOB} NOT NULL,"
    " PRIMARY KEY (folder_id, account_id, key_version));"
    "CREATE INDEX envelopes_by_account ON envelopes(account_id);"
    "{INO_SEQ}"
    "CREATE TABLE inodes (ino {INO_ID},"
    " folder_id {INT} NOT NULL, mode {INT} NOT NULL, uid {INT} NOT NULL,"
    " gid {INT} NOT NULL, nlink {INT} NOT NULL, size {INT} NOT NULL,"
    " rdev {INT} NOT NULL, atime_ns {INT} NOT NULL, mtime_ns {INT} NOT NULL,"
    " ctime_ns {INT} NOT NULL, key_version {INT} NOT NULL, wrapped_dek {BLOB} NOT NULL);"
    "CREATE INDEX inodes_orphans ON inodes(ino) WHERE nlink = 0;"
    "CREATE TABLE dirents (cookie {ID_ALWAYS},"
    " parent {INT} NOT NULL REFERENCES inodes(ino), name {BLOB} NOT NULL,"
    " ino {INT} NOT NULL REFERENCES inodes(ino), mode {INT} NOT NULL,"
    " UNIQUE (parent, name));"
    "CREATE INDEX dirents_by_parent ON dirents(parent, cookie);"
    "CREATE INDEX dirents_by_ino ON dirents(ino);"
    "CREATE TABLE symlinks (ino {INT} PRIMARY KEY REFERENCES inodes(ino),"
    " target {BLOB} NOT NULL);"
    "CREATE TABLE xattrs (ino {INT} NOT NULL REFERENCES inodes(ino),"
    " name {BLOB} NOT NULL, value {BLOB} NOT NULL, PRIMARY KEY (ino, name));"
    "CREATE TABLE chunks (ino {INT} NOT NULL REFERENCES inodes(ino),"
    " idx {INT} NOT NULL, version {INT} NOT NULL, chunk_id {BLOB} NOT NULL,"
    " plain_len {INT} NOT NULL, sealed_len {INT} NOT NULL, k {INT} NOT NULL,"
    " m {INT} NOT NULL, rotation {INT} NOT NULL, sums {BLOB} NOT NULL,"
    " PRIMARY KEY (ino, idx));"
    "CREATE TABLE chunk_versions (ino {INT} NOT NULL REFERENCES inodes(ino),"
    " idx {INT} NOT NULL, max_version {INT} NOT NULL, PRIMARY KEY (ino, idx));"
    "CREATE TABLE gc_queue (id {ID_ALWAYS},"
    " chunk_id {BLOB} NOT NULL, version {INT} NOT NULL, plain_len {INT} NOT NULL,"
    " sealed_len {INT} NOT NULL, k {INT} NOT NULL, m {INT} NOT NULL,"
    " rotation {INT} NOT NULL, sums {BLOB} NOT NULL, queued {INT} NOT NULL);",
    /* 1 -> 2: format 2 -- each directory entry's binding to its child, each
     * regular file's commitment (empty until written; pactfs-admin upgrade
     * computes them for existing entries and files) */
    "ALTER TABLE dirents ADD COLUMN bind {BLOB} NOT NULL DEFAULT {EMPTY_BLOB};"
    "ALTER TABLE inodes ADD COLUMN commitment {BLOB} NOT NULL DEFAULT {EMPTY_BLOB};",
    /* 2 -> 3: several workstations (meta_shared.h) -- the change feed every
     * change of an inode or directory entry writes (database triggers, and
     * a NOTIFY on PostgreSQL), sessions with leases, the inodes a session
     * holds open, advisory locks */
    "CREATE TABLE changes (seq {ID_ALWAYS}, ino {INT} NOT NULL, parent {INT} NOT NULL,"
    " origin {INT} NOT NULL, at {INT} NOT NULL);"
    "CREATE INDEX changes_by_at ON changes(at);"
    "CREATE TABLE sessions (id {ID_ALWAYS}, account {INT} NOT NULL, host TEXT NOT NULL,"
    " started {INT} NOT NULL, expires {INT} NOT NULL);"
    "CREATE TABLE holds (session {INT} NOT NULL, ino {INT} NOT NULL,"
    " PRIMARY KEY (session, ino));"
    "CREATE INDEX holds_by_ino ON holds(ino);"
    "CREATE TABLE locks (id {ID_ALWAYS}, ino {INT} NOT NULL, session {INT} NOT NULL,"
    " owner {INT} NOT NULL, kind {INT} NOT NULL, type {INT} NOT NULL,"
    " start_off {INT} NOT NULL, end_off {INT} NOT NULL, pid {INT} NOT NULL);"
    "CREATE INDEX locks_by_ino ON locks(ino);"
    "{CHANGE_TRIGGERS}",
    /* 3 -> 4: packs (docs/format-objects.md) -- a small chunk's fragments
     * live in a shared pack object: its id and each fragment's offset (u32
     * BE each; both empty for a standalone chunk), and the free list of packs
     * no record names any more, deleted by the gc after a grace period */
    "ALTER TABLE chunks ADD COLUMN pack {BLOB} NOT NULL DEFAULT {EMPTY_BLOB};"
    "ALTER TABLE chunks ADD COLUMN pack_offs {BLOB} NOT NULL DEFAULT {EMPTY_BLOB};"
    "ALTER TABLE gc_queue ADD COLUMN pack {BLOB} NOT NULL DEFAULT {EMPTY_BLOB};"
    "ALTER TABLE gc_queue ADD COLUMN pack_offs {BLOB} NOT NULL DEFAULT {EMPTY_BLOB};"
    "CREATE INDEX chunks_by_pack ON chunks(pack) WHERE length(pack) > 0;"
    "CREATE INDEX gc_queue_by_pack ON gc_queue(pack) WHERE length(pack) > 0;"
    "CREATE TABLE free_packs (pack {BLOB} PRIMARY KEY, since {INT} NOT NULL);",
};

/* ---- statements ---- */

enum st {
    ST_PARAM_GET, ST_PARAM_SET,
    ST_ACCOUNT_ADD, ST_ACCOUNT_GET, ST_ACCOUNT_BY_NAME, ST_ACCOUNT_UPDATE, ST_ACCOUNT_EXISTS,
    ST_ACCOUNT_LIST,
    ST_FOLDER_ADD, ST_FOLDER_GET, ST_FOLDER_UPDATE, ST_FOLDER_LIST,
    ST_ENV_PUT, ST_ENV_GET, ST_ENV_DELETE, ST_ENV_LIST_ACCOUNT, ST_ENV_LIST_FOLDER,
    ST_INODE_CREATE, ST_INODE_GET, ST_INODE_EXISTS, ST_INODE_UPDATE, ST_INODE_DELETE,
    ST_INODE_LINKED, ST_ORPHANS,
    ST_INOS_LINKED, ST_GC_QUEUE_INOS, ST_CHUNKS_DELETE_INOS, ST_MAXVER_DELETE_INOS,
    ST_SYMLINK_DELETE_INOS, ST_XATTRS_DELETE_INOS, ST_INODE_DELETE_INOS,
    ST_SYMLINK_SET, ST_SYMLINK_GET, ST_SYMLINK_DELETE, ST_XATTRS_DELETE_ALL,
    ST_DIRENT_LOOKUP, ST_DIRENT_ADD, ST_DIRENT_SET_BIND, ST_DIRENT_REMOVE,
    ST_DIRENT_RESEAL, ST_SYMLINK_RESEAL, ST_XATTR_RESEAL, ST_DIRENT_LIST, ST_DIRENT_COUNT,
    ST_CHUNK_GET, ST_CHUNK_UPSERT, ST_CHUNK_LIST_INO, ST_CHUNK_LIST_ALL, ST_INODE_CHUNKS,
    ST_GC_QUEUE_ONE, ST_GC_QUEUE_FROM, ST_CHUNKS_DELETE_FROM, ST_MAXVER_GET, ST_MAXVER_SET,
    ST_MAXVER_DELETE,
    ST_GC_LIST, ST_GC_DONE,
    ST_XATTR_GET, ST_XATTR_INSERT, ST_XATTR_REPLACE, ST_XATTR_UPSERT, ST_XATTR_REMOVE,
    ST_XATTR_LIST,
    ST_STATS, ST_CHUNK_BYTES,
    ST_CHANGE_LAST, ST_CHANGE_LIST, ST_CHANGE_PRUNE,
    ST_SESSION_OPEN, ST_SESSION_RENEW, ST_SESSION_OTHERS, ST_SESSION_REAP, ST_SESSION_CLOSE,
    ST_HOLDS_ORPHANED, ST_LOCKS_ORPHANED, ST_HOLDS_CLOSE, ST_LOCKS_CLOSE,
    ST_CHUNK_PUT_ONE, ST_CHUNK_TRUNCATE_ONE, ST_INODE_DELETE_ONE, ST_INODE_SEQ_ADVANCE,
    ST_INODE_LOCK, ST_HEAD_LOCK,
    ST_LOCK_CONFLICT, ST_LOCK_MINE, ST_LOCK_DELETE, ST_LOCK_INSERT, ST_LOCK_RELEASE,
    ST_HOLD_ADD, ST_HOLD_DROP, ST_HOLD_UNHELD, ST_ORPHANS_UNHELD,
    ST_COMMITMENT_LIST,
    ST_PACK_RELEASE, ST_FREE_PACKS_LIST, ST_PACK_REFERENCED, ST_FREE_PACK_DELETE,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_PARAM_GET] = "SELECT value FROM params WHERE key = ?1",
    [ST_PARAM_SET] = "INSERT INTO params (key, value) VALUES (?1, ?2)"
                     " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    /* conflicts are detected without an error, which would abort a
     * PostgreSQL transaction */
    [ST_ACCOUNT_ADD] = "INSERT INTO accounts (name, roles, disabled, pubkey, sealed_key, created)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING RETURNING id",
    [ST_ACCOUNT_GET] = "SELECT " ACCOUNT_COLS " FROM accounts WHERE id = ?1",
    [ST_ACCOUNT_BY_NAME] = "SELECT " ACCOUNT_COLS " FROM accounts WHERE name = ?1",
    [ST_ACCOUNT_UPDATE] = "UPDATE accounts SET name = ?2, roles = ?3, disabled = ?4,"
                          " pubkey = ?5, sealed_key = ?6, created = ?7 WHERE id = ?1"
                          " AND NOT EXISTS (SELECT 1 FROM accounts WHERE name = ?2"
                          " AND id <> ?1)",
    [ST_ACCOUNT_EXISTS] = "SELECT id FROM accounts WHERE id = ?1",
    [ST_ACCOUNT_LIST] = "SELECT " ACCOUNT_COLS " FROM accounts ORDER BY id",
    [ST_FOLDER_ADD] = "INSERT INTO folders (root_ino, key_version, created) VALUES (?1, ?2, ?3)"
                      " RETURNING id",
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
                        " ({NEW_INO}, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                        " ON CONFLICT DO NOTHING RETURNING ino",
    [ST_INODE_GET] = "SELECT " INODE_COLS " FROM inodes WHERE ino = ?1",
    [ST_INODE_EXISTS] = "SELECT ino FROM inodes WHERE ino = ?1",
    [ST_INODE_UPDATE] = "UPDATE inodes SET folder_id = ?2, mode = ?3, uid = ?4, gid = ?5,"
                        " nlink = ?6, size = ?7, rdev = ?8, atime_ns = ?9, mtime_ns = ?10,"
                        " ctime_ns = ?11, key_version = ?12, wrapped_dek = ?13, commitment = ?14"
                        " WHERE ino = ?1",
    [ST_INODE_DELETE] = "DELETE FROM inodes WHERE ino = ?1",
    [ST_INODE_LINKED] = "SELECT count(*) FROM dirents WHERE ino = ?1 OR parent = ?1",
    /* the same for a set of inodes: ?1 is a JSON array of their numbers */
    [ST_INOS_LINKED] = "SELECT count(*) FROM dirents WHERE ino IN ({INO_SET})"
                       " OR parent IN ({INO_SET})",
    [ST_GC_QUEUE_INOS] = "INSERT INTO gc_queue (" CHUNK_COLS ", queued) SELECT " CHUNK_COLS
                         ", CAST(?2 AS {INT}) FROM chunks WHERE ino IN ({INO_SET})"
                         " ORDER BY ino, idx",
    [ST_CHUNKS_DELETE_INOS] = "DELETE FROM chunks WHERE ino IN ({INO_SET})",
    [ST_MAXVER_DELETE_INOS] = "DELETE FROM chunk_versions WHERE ino IN ({INO_SET})",
    [ST_SYMLINK_DELETE_INOS] = "DELETE FROM symlinks WHERE ino IN ({INO_SET})",
    [ST_XATTRS_DELETE_INOS] = "DELETE FROM xattrs WHERE ino IN ({INO_SET})",
    [ST_INODE_DELETE_INOS] = "DELETE FROM inodes WHERE ino IN ({INO_SET})",
    [ST_ORPHANS] = "SELECT ino FROM inodes WHERE nlink = 0 ORDER BY ino",
    [ST_SYMLINK_SET] = "INSERT INTO symlinks (ino, target) VALUES (?1, ?2)"
                       " ON CONFLICT (ino) DO UPDATE SET target = excluded.target",
    [ST_SYMLINK_GET] = "SELECT target FROM symlinks WHERE ino = ?1",
    [ST_SYMLINK_DELETE] = "DELETE FROM symlinks WHERE ino = ?1",
    [ST_XATTRS_DELETE_ALL] = "DELETE FROM xattrs WHERE ino = ?1",
    [ST_DIRENT_LOOKUP] = "SELECT ino, mode, bind FROM dirents WHERE parent = ?1 AND name = ?2",
    [ST_DIRENT_SET_BIND] = "UPDATE dirents SET bind = ?3 WHERE parent = ?1 AND name = ?2",
    [ST_DIRENT_ADD] = "INSERT INTO dirents (parent, name, ino, mode, bind)"
                      " VALUES (?1, ?2, ?3, ?4, ?5)"
                      " ON CONFLICT DO NOTHING",
    [ST_DIRENT_REMOVE] = "DELETE FROM dirents WHERE parent = ?1 AND name = ?2",
    /* compare-and-swap (meta_reseal): the cookie stays, so a readdir
     * going on elsewhere neither loses nor repeats the entry */
    [ST_DIRENT_RESEAL] = "UPDATE dirents SET name = ?4, bind = ?5"
                         " WHERE parent = ?1 AND name = ?2 AND bind = ?3 AND ino = ?6",
    [ST_SYMLINK_RESEAL] = "UPDATE symlinks SET target = ?3 WHERE ino = ?1 AND target = ?2",
    [ST_XATTR_RESEAL] = "UPDATE xattrs SET name = ?4, value = ?5"
                        " WHERE ino = ?1 AND name = ?2 AND value = ?3",
    /* in pages, so a reader that stops early (a full readdir buffer) does
     * not pull a whole large directory over the network */
    [ST_DIRENT_LIST] = "SELECT cookie, ino, mode, name, bind FROM dirents"
                       " WHERE parent = ?1 AND cookie > ?2 ORDER BY cookie LIMIT ?3",
    [ST_DIRENT_COUNT] = "SELECT count(*) FROM dirents WHERE parent = ?1",
    [ST_CHUNK_GET] = "SELECT " CHUNK_COLS " FROM chunks WHERE ino = ?1 AND idx = ?2",
    [ST_CHUNK_UPSERT] = "INSERT INTO chunks (ino, idx, " CHUNK_COLS ") VALUES"
                        " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                        " ON CONFLICT (ino, idx) DO UPDATE SET chunk_id = excluded.chunk_id,"
                        " version = excluded.version, plain_len = excluded.plain_len,"
                        " sealed_len = excluded.sealed_len, k = excluded.k, m = excluded.m,"
                        " rotation = excluded.rotation, sums = excluded.sums,"
                        " pack = excluded.pack, pack_offs = excluded.pack_offs",
    [ST_CHUNK_LIST_INO] = "SELECT ino, idx, " CHUNK_COLS " FROM chunks WHERE ino = ?1"
                          " ORDER BY idx",
    [ST_CHUNK_LIST_ALL] = "SELECT ino, idx, " CHUNK_COLS " FROM chunks ORDER BY ino, idx",
    /* meta_inode_get_chunks: the row and its chunk records in ONE statement,
     * so from one snapshot (SQLite reads a statement from one WAL snapshot,
     * PostgreSQL takes one snapshot per statement); column 14 says whether
     * the row carries a chunk record (a file without any gives one row) */
    [ST_INODE_CHUNKS] = "SELECT " INODE_COLS ", CAST(CASE WHEN c_ino IS NULL THEN 0 ELSE 1 END"
                        " AS {INT}), c_idx, " CHUNK_COLS " FROM inodes LEFT JOIN"
                        " (SELECT ino AS c_ino, idx AS c_idx, " CHUNK_COLS " FROM chunks"
                        " WHERE ino = ?1) AS c ON c_ino = inodes.ino"
                        " WHERE inodes.ino = ?1 ORDER BY c_idx",
    [ST_GC_QUEUE_ONE] = "INSERT INTO gc_queue (" CHUNK_COLS ", queued) SELECT " CHUNK_COLS
                        ", CAST(?3 AS {INT}) FROM chunks WHERE ino = ?1 AND idx = ?2",
    [ST_GC_QUEUE_FROM] = "INSERT INTO gc_queue (" CHUNK_COLS ", queued) SELECT " CHUNK_COLS
                         ", CAST(?3 AS {INT}) FROM chunks WHERE ino = ?1 AND idx >= ?2"
                         " ORDER BY idx",
    [ST_CHUNKS_DELETE_FROM] = "DELETE FROM chunks WHERE ino = ?1 AND idx >= ?2",
    [ST_MAXVER_GET] = "SELECT max_version FROM chunk_versions WHERE ino = ?1 AND idx = ?2",
    [ST_MAXVER_SET] = "INSERT INTO chunk_versions (ino, idx, max_version) VALUES (?1, ?2, ?3)"
                      " ON CONFLICT (ino, idx) DO UPDATE SET max_version = CASE WHEN"
                      " excluded.max_version > chunk_versions.max_version THEN"
                      " excluded.max_version ELSE chunk_versions.max_version END",
    [ST_MAXVER_DELETE] = "DELETE FROM chunk_versions WHERE ino = ?1",
    [ST_GC_LIST] = "SELECT id, " CHUNK_COLS " FROM gc_queue ORDER BY id LIMIT ?1",
    [ST_GC_DONE] = "DELETE FROM gc_queue WHERE id = ?1",
    [ST_XATTR_GET] = "SELECT value FROM xattrs WHERE ino = ?1 AND name = ?2",
    [ST_XATTR_INSERT] = "INSERT INTO xattrs (ino, name, value) VALUES (?1, ?2, ?3)"
                        " ON CONFLICT DO NOTHING",
    [ST_XATTR_REPLACE] = "UPDATE xattrs SET value = ?3 WHERE ino = ?1 AND name = ?2",
    [ST_XATTR_UPSERT] = "INSERT INTO xattrs (ino, name, value) VALUES (?1, ?2, ?3)"
                        " ON CONFLICT (ino, name) DO UPDATE SET value = excluded.value",
    [ST_XATTR_REMOVE] = "DELETE FROM xattrs WHERE ino = ?1 AND name = ?2",
    [ST_XATTR_LIST] = "SELECT name FROM xattrs WHERE ino = ?1 ORDER BY name",
    /* bytes: plaintext the chunks hold (holes of sparse files excluded) */
    [ST_STATS] = "SELECT (SELECT count(*) FROM inodes),"
                 " (SELECT CAST(coalesce(sum(plain_len), 0) AS {INT}) FROM chunks)",
    [ST_CHUNK_BYTES] = "SELECT CAST(coalesce(sum(plain_len), 0) AS {INT}) FROM chunks"
                       " WHERE ino = ?1",
    /* several workstations (meta_shared.h); times are the database's clock */
    [ST_CHANGE_LAST] = "SELECT CAST(coalesce(max(seq), 0) AS {INT}) FROM changes",
    [ST_CHANGE_LIST] = "SELECT seq, ino, parent, origin FROM changes WHERE seq > ?1"
                       " ORDER BY seq LIMIT ?2",
    [ST_CHANGE_PRUNE] = "DELETE FROM changes WHERE at < {NOW} - ?1",
    [ST_SESSION_OPEN] = "INSERT INTO sessions (account, host, started, expires)"
                        " VALUES (?1, ?2, {NOW}, {NOW} + ?3) RETURNING id",
    [ST_SESSION_RENEW] = "UPDATE sessions SET expires = {NOW} + ?2 WHERE id = ?1",
    [ST_SESSION_OTHERS] = "SELECT count(*) FROM sessions WHERE id <> ?1 AND expires > {NOW}",
    [ST_SESSION_REAP] = "DELETE FROM sessions WHERE expires <= {NOW}",
    [ST_SESSION_CLOSE] = "DELETE FROM sessions WHERE id = ?1",
    [ST_HOLDS_ORPHANED] = "DELETE FROM holds WHERE session NOT IN (SELECT id FROM sessions)",
    [ST_LOCKS_ORPHANED] = "DELETE FROM locks WHERE session NOT IN (SELECT id FROM sessions)",
    [ST_HOLDS_CLOSE] = "DELETE FROM holds WHERE session = ?1",
    [ST_LOCKS_CLOSE] = "DELETE FROM locks WHERE session = ?1",
    /* filled from the dialect (NULL there: not used) */
    [ST_CHUNK_PUT_ONE] = NULL,
    [ST_CHUNK_TRUNCATE_ONE] = NULL,
    [ST_INODE_DELETE_ONE] = NULL,
    [ST_INODE_SEQ_ADVANCE] = NULL,
    [ST_INODE_LOCK] = NULL,
    [ST_HEAD_LOCK] = NULL,
    /* advisory locks: ?1 ino, ?2 kind, ?3 session, ?4 owner, ?5..?6 range,
     * ?7 the lowest type that conflicts (F_RDLCK 0 / F_WRLCK 1) */
    [ST_LOCK_CONFLICT] = "SELECT type, start_off, end_off, pid, session, owner FROM locks"
                         " WHERE ino = ?1 AND kind = ?2 AND NOT (session = ?3 AND owner = ?4)"
                         " AND start_off <= ?6 AND end_off >= ?5 AND type >= ?7"
                         " AND session IN (SELECT id FROM sessions WHERE expires > {NOW})"
                         " ORDER BY start_off LIMIT 1",
    [ST_LOCK_MINE] = "SELECT id, type, start_off, end_off FROM locks WHERE ino = ?1 AND kind = ?2"
                     " AND session = ?3 AND owner = ?4 AND start_off <= ?6 AND end_off >= ?5",
    [ST_LOCK_DELETE] = "DELETE FROM locks WHERE id = ?1",
    [ST_LOCK_INSERT] = "INSERT INTO locks (ino, kind, session, owner, start_off, end_off, type,"
                       " pid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_LOCK_RELEASE] = "DELETE FROM locks WHERE ino = ?1 AND kind = ?2 AND session = ?3"
                        " AND owner = ?4",
    /* open files: ?1 ino, ?2 session */
    [ST_HOLD_ADD] = "INSERT INTO holds (ino, session) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    [ST_HOLD_DROP] = "DELETE FROM holds WHERE ino = ?1 AND session = ?2",
    [ST_HOLD_UNHELD] = "SELECT CAST(CASE WHEN nlink = 0 AND NOT EXISTS (SELECT 1 FROM holds h"
                       " JOIN sessions s ON s.id = h.session WHERE h.ino = ?1"
                       " AND h.session <> ?2 AND s.expires > {NOW}) THEN 1 ELSE 0 END AS {INT})"
                       " FROM inodes WHERE ino = ?1",
    [ST_ORPHANS_UNHELD] = "SELECT ino FROM inodes WHERE nlink = 0 AND NOT EXISTS (SELECT 1"
                          " FROM holds h JOIN sessions s ON s.id = h.session"
                          " WHERE h.ino = inodes.ino AND s.expires > {NOW}) ORDER BY ino",
    /* the signed file head (file_head.h): every stored commitment */
    [ST_COMMITMENT_LIST] = "SELECT ino, commitment FROM inodes WHERE length(commitment) > 0"
                           " ORDER BY ino",
    /* packs: freed only when no chunk record or queue entry names them */
    /* "length(pack) > 0" repeats the partial indexes' condition: without
     * it neither SQLite nor PostgreSQL may use them, and every release
     * scanned both tables (test_meta's query-plan case) */
    [ST_PACK_RELEASE] = "INSERT INTO free_packs (pack, since) SELECT ?1, CAST(?2 AS {INT})"
                        " WHERE NOT EXISTS (SELECT 1 FROM chunks WHERE pack = ?1"
                        " AND length(pack) > 0)"
                        " AND NOT EXISTS (SELECT 1 FROM gc_queue WHERE pack = ?1"
                        " AND length(pack) > 0)"
                        " ON CONFLICT DO NOTHING",
    [ST_FREE_PACKS_LIST] = "SELECT pack FROM free_packs WHERE since <= ?1 ORDER BY since"
                           " LIMIT ?2",
    [ST_PACK_REFERENCED] = "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM chunks WHERE pack = ?1"
                           " AND length(pack) > 0)"
                           " OR EXISTS (SELECT 1 FROM gc_queue WHERE pack = ?1"
                           " AND length(pack) > 0) THEN 1 ELSE 0 END AS {INT})",
    [ST_FREE_PACK_DELETE] = "DELETE FROM free_packs WHERE pack = ?1",
};

#define DIRENT_PAGE 256

struct msql {
    const struct msql_driver *drv;
    void *db;
    struct meta *m;             /* the handle wrapping this one (presync) */
    int in_txn;                 /* inside meta_begin .. commit/rollback */
    int deferred;               /* commits are made durable by sql_sync */
    char *sql[ST_COUNT];        /* statements with the dialect filled in */
};

static const struct meta_ops sql_ops;

static struct msql *H(struct meta *m)
{
    return m->impl;
}

/* The write-ahead rule (meta_set_presync): before anything this handle
 * committed can become durable, the hook (the audit spool's sync) runs. */
static int h_presync(struct msql *h)
{
    return h->m && h->m->presync ? h->m->presync(h->m->presync_arg) : 0;
}

static int h_exec(struct msql *h, const char *sql, const char *what);

/* COMMIT: durable at once unless deferred, so the hook runs first. */
static int h_commit(struct msql *h, const char *what)
{
    int rc = h->deferred ? 0 : h_presync(h);

    return rc ? rc : h_exec(h, "COMMIT", what);
}

/* Replace each {WORD} of tmpl with the dialect's text: a malloc'd string. */
static const char *dialect_word(const struct msql_dialect *d, const char *w, size_t n)
{
    static const struct { const char *name; size_t off; } words[] = {
        { "BLOB", offsetof(struct msql_dialect, blob) },
        { "INT", offsetof(struct msql_dialect, integer) },
        { "ID", offsetof(struct msql_dialect, id) },
        { "ID_ALWAYS", offsetof(struct msql_dialect, id_always) },
        { "INO_ID", offsetof(struct msql_dialect, ino_id) },
        { "INO_SEQ", offsetof(struct msql_dialect, ino_seq) },
        { "NEW_INO", offsetof(struct msql_dialect, new_ino) },
        { "EMPTY_BLOB", offsetof(struct msql_dialect, empty_blob) },
        { "NOW", offsetof(struct msql_dialect, now) },
        { "CHANGE_TRIGGERS", offsetof(struct msql_dialect, change_triggers) },
        { "INO_SET", offsetof(struct msql_dialect, ino_set) },
    };

    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i].name) == n && memcmp(words[i].name, w, n) == 0)
            return *(const char *const *)((const char *)d + words[i].off);
    return NULL;
}

static char *sql_expand(const struct msql_dialect *d, const char *tmpl)
{
    size_t cap = strlen(tmpl) * 2 + 256, len = 0;
    char *out = malloc(cap);

    while (out && *tmpl) {
        const char *end = *tmpl == '{' ? strchr(tmpl, '}') : NULL;
        const char *word = end ? dialect_word(d, tmpl + 1, (size_t)(end - tmpl - 1)) : NULL;
        size_t n = word ? strlen(word) : 1;

        if (len + n + 1 > cap) {
            char *bigger = realloc(out, cap = (len + n + 1) * 2);

            if (!bigger) {
                free(out);
                return NULL;
            }
            out = bigger;
        }
        memcpy(out + len, word ? word : tmpl, n);
        len += n;
        tmpl = word ? end + 1 : tmpl + 1;
    }
    if (out)
        out[len] = '\0';
    return out;
}

static int expand_statements(struct msql *h)
{
    const struct msql_dialect *d = h->drv->dialect;
    const char *tmpl[ST_COUNT];

    memcpy(tmpl, stmt_sql, sizeof tmpl);
    tmpl[ST_CHUNK_PUT_ONE] = d->chunk_put;
    tmpl[ST_CHUNK_TRUNCATE_ONE] = d->chunk_truncate;
    tmpl[ST_INODE_DELETE_ONE] = d->inode_delete;
    tmpl[ST_INODE_SEQ_ADVANCE] = d->inode_seq_advance;
    tmpl[ST_INODE_LOCK] = d->inode_lock;
    tmpl[ST_HEAD_LOCK] = d->head_lock;
    for (int i = 0; i < ST_COUNT; i++)
        if (tmpl[i] && !(h->sql[i] = sql_expand(d, tmpl[i])))
            return pfs_err(-ENOMEM, "out of memory preparing metadata statements");
    return 0;
}

/* ---- one statement in use ---- */

struct q {
    struct msql *h;
    struct msql_stmt *st;
};

static int q_prepare(struct msql *h, int id, const char *sql, struct q *q)
{
    q->h = h;
    q->st = NULL;
    return h->drv->prepare(h->db, id, sql, &q->st);
}

const char *meta_sql_statement(struct meta *m, unsigned i, unsigned *count)
{
    *count = ST_COUNT;
    return m->ops == &sql_ops && i < ST_COUNT ? H(m)->sql[i] : NULL;
}

static int q_open(struct msql *h, enum st id, struct q *q)
{
    return q_prepare(h, (int)id, h->sql[id], q);
}

static void q_close(struct q *q)
{
    if (q->st)
        q->h->drv->finish(q->st);
    q->st = NULL;
}

static void q_i64(struct q *q, int col, int64_t v)
{
    q->h->drv->bind_i64(q->st, col, v);
}

static void q_u64(struct q *q, int col, uint64_t v)
{
    q_i64(q, col, (int64_t)v);
}

static void q_blob(struct q *q, int col, const void *p, size_t n)
{
    q->h->drv->bind_blob(q->st, col, p, n);
}

static void q_text(struct q *q, int col, const char *t)
{
    q->h->drv->bind_text(q->st, col, t);
}

static int q_step(struct q *q, const char *what)
{
    return q->h->drv->step(q->st, what);
}

/* Run a statement that returns no rows; *changes (optional) gets the row count. */
static int q_run(struct q *q, const char *what, long *changes)
{
    int rc = q_step(q, what);

    if (rc > 0)
        rc = 0;
    if (rc == 0 && changes)
        *changes = q->h->drv->changes(q->st);
    q_close(q);
    return rc;
}

static int64_t col_i64(struct q *q, int col)
{
    return q->h->drv->col_i64(q->st, col);
}

static const void *col_blob(struct q *q, int col, size_t *len)
{
    return q->h->drv->col_blob(q->st, col, len);
}

/* After reading a row's columns: -EBADMSG if one had the wrong type. */
static int row_status(struct q *q, const char *what)
{
    if (q->st->bad)
        return pfs_err(-EBADMSG, "metadata store: malformed %s row (a column has the "
                       "wrong type or is empty); the database was altered or is corrupt",
                       what);
    return 0;
}

/* A malloc'd copy of a blob column, bounded by max. */
static int col_blob_dup(struct q *q, int col, const char *what, size_t max, uint8_t **out,
                        size_t *len)
{
    const void *p = col_blob(q, col, len);
    int rc = row_status(q, what);

    if (rc == 0)
        rc = meta_check_row_len(what, *len, max);
    if (rc)
        return rc;
    *out = meta_memdup(p, *len);
    return *out ? 0 : pfs_err(-ENOMEM, "out of memory reading %s", what);
}

/* The first column of the one row of a statement: *found = 0 if no row. */
static int q_one_i64(struct q *q, const char *what, int64_t *out, int *found)
{
    int rc = q_step(q, what);

    *out = 0;
    *found = rc > 0;
    if (rc > 0) {
        *out = col_i64(q, 0);
        rc = row_status(q, what);
    }
    q_close(q);
    return rc;
}

/* Run a statement bound to (ino) or (ino, idx[, now]). */
static int run_ino_stmt(struct msql *h, enum st id, uint64_t ino, int nargs, uint64_t idx,
                        const char *what, long *changes)
{
    struct q q;
    int rc = q_open(h, id, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    if (nargs >= 2)
        q_u64(&q, 2, idx);
    if (nargs >= 3)
        q_i64(&q, 3, (int64_t)time(NULL));
    return q_run(&q, what, changes);
}

/* One integer from a statement bound to (key[, key2]). */
static int query_i64(struct msql *h, enum st id, uint64_t key, int nargs, uint64_t key2,
                     const char *what, int64_t *out, int *found)
{
    struct q q;
    int rc = q_open(h, id, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, key);
    if (nargs >= 2)
        q_u64(&q, 2, key2);
    return q_one_i64(&q, what, out, found);
}

/* ---- transactions and statement groups ---- */

static int h_exec(struct msql *h, const char *sql, const char *what)
{
    return h->drv->exec(h->db, sql, what);
}

static enum msql_txn_state txn_state(struct msql *h)
{
    return h->drv->txn_state(h->db);
}

static int sql_begin(struct meta *m)
{
    struct msql *h = H(m);
    int rc;

    if (h->in_txn)
        return pfs_err(-EBUSY, "metadata transaction already open: transactions do not "
                       "nest; commit or roll back first");
    rc = h_exec(h, h->drv->dialect->begin, "begin transaction");
    if (rc == 0)
        h->in_txn = 1;
    return rc;
}

static int sql_commit(struct meta *m)
{
    struct msql *h = H(m);
    enum msql_txn_state state;
    int rc;

    if (!h->in_txn)
        return pfs_err(-EINVAL, "metadata commit without a transaction");
    h->in_txn = 0;
    state = txn_state(h);
    if (state != MSQL_ACTIVE) {
        if (state == MSQL_FAILED)
            h_exec(h, "ROLLBACK", "rollback");
        return pfs_err(-EIO, "metadata commit: the transaction was rolled back after an "
                       "earlier error; nothing was written");
    }
    rc = h_commit(h, "commit");
    /* a failed commit leaves nothing half done: roll back so the handle is usable */
    if (rc && txn_state(h) != MSQL_IDLE)
        h_exec(h, "ROLLBACK", "rollback");
    return rc;
}

static int sql_rollback(struct meta *m)
{
    struct msql *h = H(m);

    if (!h->in_txn)
        return pfs_err(-EINVAL, "metadata rollback without a transaction");
    h->in_txn = 0;
    if (txn_state(h) == MSQL_IDLE)
        return 0;
    return h_exec(h, "ROLLBACK", "rollback");
}

/* Several statements that succeed or fail together, inside or outside a
 * caller's transaction. */
static int group_begin(struct msql *h)
{
    if (h->in_txn && txn_state(h) == MSQL_FAILED)
        return pfs_err(-EIO, "metadata: the transaction was aborted by an earlier error; "
                       "roll it back");
    return h_exec(h, h->in_txn ? "SAVEPOINT pfs_group" : h->drv->dialect->begin, "begin");
}

static int group_end(struct msql *h, int rc)
{
    int rc2;

    if (txn_state(h) == MSQL_IDLE)
        return rc;      /* the database already rolled back after a hard error */
    if (h->in_txn) {
        if (rc)
            h_exec(h, "ROLLBACK TO pfs_group", "rollback to savepoint");
        rc2 = h_exec(h, "RELEASE pfs_group", "release savepoint");
        return rc ? rc : rc2;
    }
    if (rc == 0) {
        rc = h_commit(h, "commit");
        if (rc == 0)
            return 0;
    }
    if (txn_state(h) != MSQL_IDLE)
        h_exec(h, "ROLLBACK", "rollback");
    return rc;
}

/* ---- params ---- */

static int sql_param_get(struct meta *m, const char *key, uint8_t **val, size_t *len)
{
    struct q q;
    int rc = q_open(H(m), ST_PARAM_GET, &q);

    if (rc)
        return rc;
    q_text(&q, 1, key);
    rc = q_step(&q, "param get");
    if (rc == 0)
        rc = pfs_err(-ENOENT, "vault parameter '%s' is not set", key);
    else if (rc > 0)
        rc = col_blob_dup(&q, 0, "parameter value", META_PARAM_MAX(key), val, len);
    q_close(&q);
    return rc;
}

static int sql_param_set(struct meta *m, const char *key, const void *val, size_t len)
{
    struct q q;
    int rc = q_open(H(m), ST_PARAM_SET, &q);

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
    if (rc == 0 && nlen == 0)
        rc = pfs_err(-EBADMSG, "metadata store: an account has an empty name; the database "
                     "was altered or is corrupt");
    if (rc)
        return rc;
    a->id = (uint64_t)col_i64(q, 0);
    memcpy(a->name, name, nlen);
    a->roles = (uint32_t)col_i64(q, 2);
    a->disabled = col_i64(q, 3) != 0;
    a->created = col_i64(q, 6);
    rc = row_status(q, "account");
    if (rc == 0)
        rc = col_blob_dup(q, 4, "account public key", META_BLOB_MAX, &a->pubkey,
                          &a->pubkey_len);
    if (rc == 0)
        rc = col_blob_dup(q, 5, "sealed account key", META_BLOB_MAX, &a->sealed_key,
                          &a->sealed_key_len);
    if (rc)
        meta_account_clear(a);
    return rc;
}

static int sql_account_add(struct meta *m, struct meta_account *a)
{
    struct q q;
    int64_t id;
    int found;
    int rc = q_open(H(m), ST_ACCOUNT_ADD, &q);

    if (rc)
        return rc;
    bind_account(&q, a, 1);
    rc = q_one_i64(&q, "account add", &id, &found);
    if (rc == 0 && !found)
        rc = pfs_err(-EEXIST, "an account named '%s' already exists", a->name);
    if (rc == 0)
        a->id = (uint64_t)id;
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

static int sql_account_get(struct meta *m, uint64_t id, struct meta_account *out)
{
    struct q q;
    char who[32];
    int rc = q_open(H(m), ST_ACCOUNT_GET, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, id);
    snprintf(who, sizeof who, "with id %llu", (unsigned long long)id);
    return account_fetch(&q, out, who);
}

static int sql_account_get_by_name(struct meta *m, const char *name, struct meta_account *out)
{
    struct q q;
    int rc = q_open(H(m), ST_ACCOUNT_BY_NAME, &q);

    if (rc)
        return rc;
    q_text(&q, 1, name);
    return account_fetch(&q, out, "by that name");
}

/* A name taken by another account updates nothing instead of raising a
 * unique violation (which would abort a PostgreSQL transaction). */
static int sql_account_update(struct meta *m, const struct meta_account *a)
{
    struct q q;
    long changes = 0;
    int64_t id;
    int found;
    int rc = q_open(H(m), ST_ACCOUNT_UPDATE, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, a->id);
    bind_account(&q, a, 2);
    rc = q_run(&q, "account update", &changes);
    if (rc || changes)
        return rc;
    rc = query_i64(H(m), ST_ACCOUNT_EXISTS, a->id, 1, 0, "account update", &id, &found);
    if (rc == 0)
        rc = found ? pfs_err(-EEXIST, "an account named '%s' already exists", a->name)
                   : pfs_err(-ENOENT, "no account with id %llu", (unsigned long long)a->id);
    return rc;
}

static int sql_account_list(struct meta *m, meta_account_cb cb, void *arg)
{
    struct q q;
    int rc = q_open(H(m), ST_ACCOUNT_LIST, &q);

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

static int read_folder(struct q *q, struct meta_folder *f)
{
    f->id = (uint64_t)col_i64(q, 0);
    f->root_ino = (uint64_t)col_i64(q, 1);
    f->key_version = (uint32_t)col_i64(q, 2);
    f->created = col_i64(q, 3);
    return row_status(q, "folder");
}

static int sql_folder_add(struct meta *m, struct meta_folder *f)
{
    struct q q;
    int64_t id;
    int found;
    int rc = q_open(H(m), ST_FOLDER_ADD, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, f->root_ino);
    q_i64(&q, 2, f->key_version);
    q_i64(&q, 3, f->created);
    rc = q_one_i64(&q, "folder add", &id, &found);
    if (rc == 0 && !found)
        rc = pfs_err(-EIO, "metadata folder add returned no id");
    if (rc == 0)
        f->id = (uint64_t)id;
    return rc;
}

static int sql_folder_get(struct meta *m, uint64_t id, struct meta_folder *out)
{
    struct q q;
    int rc = q_open(H(m), ST_FOLDER_GET, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, id);
    rc = q_step(&q, "folder get");
    if (rc == 0)
        rc = pfs_err(-ENOENT, "no folder with id %llu", (unsigned long long)id);
    else if (rc > 0)
        rc = read_folder(&q, out);
    q_close(&q);
    return rc;
}

static int sql_folder_update(struct meta *m, const struct meta_folder *f)
{
    struct q q;
    long changes = 0;
    int rc = q_open(H(m), ST_FOLDER_UPDATE, &q);

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

static int sql_folder_list(struct meta *m, meta_folder_cb cb, void *arg)
{
    struct q q;
    int rc = q_open(H(m), ST_FOLDER_LIST, &q);

    while (rc == 0 && (rc = q_step(&q, "folder list")) > 0) {
        struct meta_folder f;

        rc = read_folder(&q, &f);
        if (rc == 0)
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
    int rc;

    memset(e, 0, sizeof *e);
    e->folder_id = (uint64_t)col_i64(q, 0);
    e->account_id = (uint64_t)col_i64(q, 1);
    e->key_version = (uint32_t)col_i64(q, 2);
    e->rights = (uint32_t)col_i64(q, 3);
    e->granted_by = (uint64_t)col_i64(q, 4);
    rc = row_status(q, "envelope");
    return rc ? rc : col_blob_dup(q, 5, "envelope", META_BLOB_MAX, &e->wrapped,
                                  &e->wrapped_len);
}

static int sql_envelope_put(struct meta *m, const struct meta_envelope *e)
{
    struct q q;
    int rc = q_open(H(m), ST_ENV_PUT, &q);

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

static int sql_envelope_get(struct meta *m, uint64_t folder_id, uint64_t account_id,
                            uint32_t key_version, struct meta_envelope *out)
{
    struct q q;
    int rc = q_open(H(m), ST_ENV_GET, &q);

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

static int sql_envelope_delete(struct meta *m, uint64_t folder_id, uint64_t account_id)
{
    struct q q;
    long changes = 0;
    int rc = q_open(H(m), ST_ENV_DELETE, &q);

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

static int envelope_list(struct msql *h, enum st id, uint64_t key, meta_envelope_cb cb,
                         void *arg)
{
    struct q q;
    int rc = q_open(h, id, &q);

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

static int sql_envelope_list_account(struct meta *m, uint64_t account_id,
                                     meta_envelope_cb cb, void *arg)
{
    return envelope_list(H(m), ST_ENV_LIST_ACCOUNT, account_id, cb, arg);
}

static int sql_envelope_list_folder(struct meta *m, uint64_t folder_id, meta_envelope_cb cb,
                                    void *arg)
{
    return envelope_list(H(m), ST_ENV_LIST_FOLDER, folder_id, cb, arg);
}

/* ---- inodes ---- */

/* Parameters 2..14 of INODE_COLS (everything but ino). */
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
    q_blob(q, 14, i->commitment, i->commitment_len);
}

static int read_inode(struct q *q, struct meta_inode *i)
{
    size_t dlen;
    size_t clen;
    const void *dek = col_blob(q, 12, &dlen);
    const void *com = col_blob(q, 13, &clen);
    int rc = meta_check_row_len("wrapped file key", dlen, sizeof i->wrapped_dek);

    memset(i, 0, sizeof *i);
    if (rc == 0)
        rc = meta_check_row_len("file commitment", clen, sizeof i->commitment);
    if (rc)
        return rc;
    if (clen)
        memcpy(i->commitment, com, clen);
    i->commitment_len = (uint32_t)clen;
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
    if (dlen)           /* an empty blob may come back as NULL */
        memcpy(i->wrapped_dek, dek, dlen);
    i->wrapped_dek_len = (uint32_t)dlen;
    return row_status(q, "inode");
}

static int sql_inode_create(struct meta *m, struct meta_inode *i)
{
    struct msql *h = H(m);
    struct q q;
    int64_t ino;
    int found;
    int rc = q_open(h, ST_INODE_CREATE, &q);

    if (rc)
        return rc;
    if (i->ino)
        q_u64(&q, 1, i->ino);
    else
        h->drv->bind_null(q.st, 1);   /* a fresh number, never one used before */
    bind_inode_fields(&q, i);
    rc = q_one_i64(&q, "inode create", &ino, &found);
    if (rc == 0 && !found)
        return pfs_err(-EEXIST, "inode %llu already exists", (unsigned long long)i->ino);
    if (rc == 0 && i->ino && h->sql[ST_INODE_SEQ_ADVANCE])
        rc = run_ino_stmt(h, ST_INODE_SEQ_ADVANCE, i->ino, 1, 0, "inode create", NULL);
    if (rc == 0)
        i->ino = (uint64_t)ino;
    return rc;
}

static int sql_inode_get(struct meta *m, uint64_t ino, struct meta_inode *out)
{
    struct q q;
    int rc = q_open(H(m), ST_INODE_GET, &q);

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

static int sql_inode_update(struct meta *m, const struct meta_inode *i)
{
    struct q q;
    long changes = 0;
    int rc = q_open(H(m), ST_INODE_UPDATE, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, i->ino);
    bind_inode_fields(&q, i);
    rc = q_run(&q, "inode update", &changes);
    if (rc == 0 && changes == 0)
        rc = pfs_err(-ENOENT, "no inode %llu", (unsigned long long)i->ino);
    return rc;
}

/* Move chunk records of ino with idx >= from to the deletion queue. */
static int chunks_to_gc(struct msql *h, uint64_t ino, uint64_t from)
{
    int rc = run_ino_stmt(h, ST_GC_QUEUE_FROM, ino, 3, from, "queue chunks for deletion",
                          NULL);

    if (rc == 0)
        rc = run_ino_stmt(h, ST_CHUNKS_DELETE_FROM, ino, 2, from, "chunk delete", NULL);
    return rc;
}

static int inode_delete_rows(struct msql *h, uint64_t ino, long *changes)
{
    int rc = chunks_to_gc(h, ino, 0);

    if (rc == 0)
        rc = run_ino_stmt(h, ST_MAXVER_DELETE, ino, 1, 0, "chunk version delete", NULL);
    if (rc == 0)
        rc = run_ino_stmt(h, ST_SYMLINK_DELETE, ino, 1, 0, "symlink delete", NULL);
    if (rc == 0)
        rc = run_ino_stmt(h, ST_XATTRS_DELETE_ALL, ino, 1, 0, "xattr delete", NULL);
    if (rc == 0)
        rc = run_ino_stmt(h, ST_INODE_DELETE, ino, 1, 0, "inode delete", changes);
    return rc;
}

static int sql_inode_delete(struct meta *m, uint64_t ino)
{
    struct msql *h = H(m);
    int64_t linked;
    long changes = 0;
    int found;
    /* checked first: a foreign key error would abort a PostgreSQL transaction */
    int rc = query_i64(h, ST_INODE_LINKED, ino, 1, 0, "inode delete", &linked, &found);

    if (rc == 0 && linked)
        return pfs_err(-EBUSY, "inode %llu still has directory entries; remove them "
                       "before deleting it", (unsigned long long)ino);
    if (rc)
        return rc;
    if (h->sql[ST_INODE_DELETE_ONE]) {
        rc = run_ino_stmt(h, ST_INODE_DELETE_ONE, ino, 3, 0, "inode delete", &changes);
    } else {
        rc = group_begin(h);
        if (rc == 0)
            rc = group_end(h, inode_delete_rows(h, ino, &changes));
    }
    if (rc == 0 && changes == 0)
        rc = pfs_err(-ENOENT, "no inode %llu", (unsigned long long)ino);
    return rc;
}

/* The inode numbers as a JSON array ({INO_SET} reads it). */
static char *ino_set_json(const uint64_t *inos, size_t n)
{
    size_t cap = n * 21 + 3, len = 0;
    char *s = malloc(cap);

    if (!s)
        return NULL;
    s[len++] = '[';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%" PRIu64, i ? "," : "", inos[i]);
    s[len++] = ']';
    s[len] = '\0';
    return s;
}

/* Run statement id bound to (the set[, now]). */
static int run_set_stmt(struct msql *h, enum st id, const char *set, int with_now,
                        const char *what)
{
    struct q q;
    int rc = q_open(h, id, &q);

    if (rc)
        return rc;
    q_text(&q, 1, set);
    if (with_now)
        q_i64(&q, 2, (int64_t)time(NULL));
    return q_run(&q, what, NULL);
}

/* inode_delete for many at once: a handful of statements instead of seven
 * per inode (retiring the inodes of an rm -rf).  Inodes already gone are
 * skipped; -EBUSY, nothing deleted, if one is still linked or a parent. */
static int sql_inodes_delete(struct meta *m, const uint64_t *inos, size_t n)
{
    static const struct { enum st id; int with_now; const char *what; } steps[] = {
        { ST_GC_QUEUE_INOS, 1, "queue chunks for deletion" },
        { ST_CHUNKS_DELETE_INOS, 0, "chunk delete" },
        { ST_MAXVER_DELETE_INOS, 0, "chunk version delete" },
        { ST_SYMLINK_DELETE_INOS, 0, "symlink delete" },
        { ST_XATTRS_DELETE_INOS, 0, "xattr delete" },
        { ST_INODE_DELETE_INOS, 0, "inode delete" },
    };
    struct msql *h = H(m);
    struct q q;
    int64_t linked = 0;
    int found, rc;
    char *set;

    if (n == 0)
        return 0;
    if (!(set = ino_set_json(inos, n)))
        return pfs_err(-ENOMEM, "out of memory deleting %zu inodes", n);
    rc = q_open(h, ST_INOS_LINKED, &q);
    if (rc == 0) {
        q_text(&q, 1, set);
        rc = q_one_i64(&q, "inode delete", &linked, &found);
    }
    if (rc == 0 && linked)
        rc = pfs_err(-EBUSY, "%lld directory entries still name or hold one of %zu inodes "
                     "being deleted; remove them first", (long long)linked, n);
    if (rc == 0)
        rc = group_begin(h);
    if (rc == 0) {
        int r = 0;
        for (size_t i = 0; r == 0 && i < sizeof steps / sizeof steps[0]; i++)
            r = run_set_stmt(h, steps[i].id, set, steps[i].with_now, steps[i].what);
        rc = group_end(h, r);
    }
    free(set);
    return rc;
}

/* Call cb for every inode number statement id returns. */
static int ino_list(struct msql *h, enum st id, const char *what, meta_ino_cb cb, void *arg)
{
    struct q q;
    int rc = q_open(h, id, &q);

    while (rc == 0 && (rc = q_step(&q, what)) > 0) {
        uint64_t ino = (uint64_t)col_i64(&q, 0);

        rc = row_status(&q, what);
        if (rc == 0)
            rc = cb(arg, ino);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

static int sql_inode_list_orphans(struct meta *m, meta_ino_cb cb, void *arg)
{
    return ino_list(H(m), ST_ORPHANS, "orphan list", cb, arg);
}

static int sql_symlink_set(struct meta *m, uint64_t ino, const uint8_t *target, size_t len)
{
    struct q q;
    int rc = q_open(H(m), ST_SYMLINK_SET, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    q_blob(&q, 2, target, len);
    return q_run(&q, "symlink set", NULL);
}

/* One blob from a statement bound to (ino[, name]); no row: `absent`. */
static int query_blob(struct msql *h, enum st id, uint64_t ino, const uint8_t *name,
                      size_t nlen, const char *what, int absent, uint8_t **out, size_t *len)
{
    struct q q;
    int rc = q_open(h, id, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    if (name)
        q_blob(&q, 2, name, nlen);
    rc = q_step(&q, what);
    if (rc == 0)
        rc = absent;
    else if (rc > 0)
        rc = col_blob_dup(&q, 0, what, META_BLOB_MAX, out, len);
    q_close(&q);
    return rc;
}

static int sql_symlink_get(struct meta *m, uint64_t ino, uint8_t **target, size_t *len)
{
    int rc = query_blob(H(m), ST_SYMLINK_GET, ino, NULL, 0, "symlink target", -ENOENT,
                        target, len);

    if (rc == -ENOENT)
        pfs_err(rc, "no symlink target for inode %llu", (unsigned long long)ino);
    return rc;
}

/* ---- directory entries ---- */

static int sql_dirent_find(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                           struct meta_dirent_rec *out)
{
    struct q q;
    int rc = q_open(H(m), ST_DIRENT_LOOKUP, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, parent);
    q_blob(&q, 2, name, len);
    rc = q_step(&q, "lookup");
    if (rc == 0) {
        rc = -ENOENT;      /* a normal miss: no message, lookups miss often */
    } else if (rc > 0) {
        const void *b = col_blob(&q, 2, &out->bind_len);

        out->ino = (uint64_t)col_i64(&q, 0);
        out->mode = (uint32_t)col_i64(&q, 1);
        rc = row_status(&q, "directory entry");
        if (rc == 0)
            rc = meta_check_row_len("directory entry binding", out->bind_len, sizeof out->bind);
        if (rc == 0 && out->bind_len)
            memcpy(out->bind, b, out->bind_len);
    }
    q_close(&q);
    return rc;
}

static int sql_dirent_add(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                          uint64_t ino, uint32_t mode, const uint8_t *bind, size_t bind_len)
{
    struct q q;
    long changes = 0;
    int rc = q_open(H(m), ST_DIRENT_ADD, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, parent);
    q_blob(&q, 2, name, len);
    q_u64(&q, 3, ino);
    q_i64(&q, 4, mode);
    q_blob(&q, 5, bind, bind_len);
    rc = q_run(&q, "directory entry add", &changes);
    if (rc == 0 && changes == 0)
        rc = pfs_err(-EEXIST, "the name already exists in directory %llu",
                     (unsigned long long)parent);
    return rc;
}

static int sql_dirent_set_bind(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                               const uint8_t *bind, size_t bind_len)
{
    struct q q;
    long changes = 0;
    int rc = q_open(H(m), ST_DIRENT_SET_BIND, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, parent);
    q_blob(&q, 2, name, len);
    q_blob(&q, 3, bind, bind_len);
    rc = q_run(&q, "directory entry binding", &changes);
    if (rc == 0 && changes == 0)
        rc = pfs_err(-ENOENT, "no such entry in directory %llu", (unsigned long long)parent);
    return rc;
}

static int sql_dirent_remove(struct meta *m, uint64_t parent, const uint8_t *name, size_t len)
{
    struct q q;
    long changes = 0;
    int rc = q_open(H(m), ST_DIRENT_REMOVE, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, parent);
    q_blob(&q, 2, name, len);
    rc = q_run(&q, "directory entry remove", &changes);
    if (rc == 0 && changes == 0)
        rc = pfs_err(-ENOENT, "no such entry in directory %llu", (unsigned long long)parent);
    return rc;
}

static int sql_reseal(struct meta *m, const struct meta_reseal *r)
{
    static const enum st ids[] = { ST_DIRENT_RESEAL, ST_SYMLINK_RESEAL, ST_XATTR_RESEAL };
    struct q q;
    long changes = 0;
    int rc = q_open(H(m), ids[r->kind], &q);

    if (rc)
        return rc;
    q_u64(&q, 1, r->owner);
    if (r->kind == META_RESEAL_SYMLINK) {
        q_blob(&q, 2, r->old_val, r->old_val_len);
        q_blob(&q, 3, r->new_val, r->new_val_len);
    } else {
        q_blob(&q, 2, r->old_name, r->old_name_len);
        q_blob(&q, 3, r->old_val, r->old_val_len);
        q_blob(&q, 4, r->new_name, r->new_name_len);
        q_blob(&q, 5, r->new_val, r->new_val_len);
    }
    if (r->kind == META_RESEAL_DIRENT)
        q_u64(&q, 6, r->ino);
    rc = q_run(&q, "re-sealing a row", &changes);
    return rc == 0 && changes == 0 ? -ENOENT : rc;
}

static int read_dirent(struct q *q, struct meta_dirent *d)
{
    d->cookie = (uint64_t)col_i64(q, 0);
    d->ino = (uint64_t)col_i64(q, 1);
    d->mode = (uint32_t)col_i64(q, 2);
    d->name = col_blob(q, 3, &d->name_len);
    d->bind = col_blob(q, 4, &d->bind_len);
    if (q->st->bad)
        return row_status(q, "directory entry");
    if (d->name_len == 0)
        return pfs_err(-EBADMSG, "metadata store: empty name in directory; the database "
                       "was altered or is corrupt");
    if (meta_check_row_len("directory entry binding", d->bind_len, META_BIND_MAX))
        return -EBADMSG;
    return meta_check_row_len("directory entry name", d->name_len, META_NAME_MAX);
}

/* One page of entries after *after; *rows = how many were read. */
static int dirent_page(struct msql *h, uint64_t parent, uint64_t *after, meta_dirent_cb cb,
                       void *arg, int *rows)
{
    struct q q;
    int rc = q_open(h, ST_DIRENT_LIST, &q);

    *rows = 0;
    if (rc == 0) {
        q_u64(&q, 1, parent);
        q_u64(&q, 2, *after);
        q_i64(&q, 3, DIRENT_PAGE);
    }
    while (rc == 0 && (rc = q_step(&q, "directory list")) > 0) {
        struct meta_dirent d;

        (*rows)++;
        rc = read_dirent(&q, &d);
        if (rc)
            break;
        *after = d.cookie;
        rc = cb(arg, &d);
        if (rc) {
            rc = rc < 0 ? rc : 1;
            break;
        }
    }
    q_close(&q);
    return rc;
}

static int sql_dirent_list(struct meta *m, uint64_t parent, uint64_t after, meta_dirent_cb cb,
                           void *arg)
{
    int rows, rc;

    do
        rc = dirent_page(H(m), parent, &after, cb, arg, &rows);
    while (rc == 0 && rows == DIRENT_PAGE);
    return meta_cb_result(rc);
}

static int sql_dirent_count(struct meta *m, uint64_t parent, uint64_t *count)
{
    int64_t v;
    int found;
    int rc = query_i64(H(m), ST_DIRENT_COUNT, parent, 1, 0, "directory count", &v, &found);

    if (rc == 0 && !found)
        rc = pfs_err(-EIO, "metadata directory count returned no row");
    if (rc == 0)
        *count = (uint64_t)v;
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
    row.pack = col_blob(q, first + 8, &row.pack_len);
    row.pack_offs = col_blob(q, first + 9, &row.pack_offs_len);
    if (q->st->bad)
        return row_status(q, "chunk");
    return meta_chunk_row_decode(&row, out);
}

static int sql_chunk_get(struct meta *m, uint64_t ino, uint64_t idx, struct chunk_ref *out)
{
    struct q q;
    int rc = q_open(H(m), ST_CHUNK_GET, &q);

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

static int sql_chunk_max_version(struct meta *m, uint64_t ino, uint64_t idx,
                                 uint64_t *version)
{
    int64_t v;
    int found;
    int rc = query_i64(H(m), ST_MAXVER_GET, ino, 2, idx, "chunk version get", &v, &found);

    if (rc == 0 && v < 0)
        rc = pfs_err(-EBADMSG, "metadata store: negative chunk version");
    if (rc == 0)
        *version = (uint64_t)v;
    return rc;
}

/* ino, idx and the CHUNK_COLS as parameters 1..12; offs holds the encoded
 * pack offsets until the statement has run (bindings are not copied). */
static void bind_chunk(struct q *q, uint64_t ino, uint64_t idx, const struct chunk_ref *r,
                       uint8_t offs[4 * EC_MAX_FRAGS])
{
    q_u64(q, 1, ino);
    q_u64(q, 2, idx);
    q_blob(q, 3, r->chunk_id, CHUNK_ID_LEN);
    q_u64(q, 4, r->version);
    q_i64(q, 5, r->plain_len);
    q_i64(q, 6, r->sealed_len);
    q_i64(q, 7, r->k);
    q_i64(q, 8, r->m);
    q_i64(q, 9, r->rotation);
    q_blob(q, 10, r->sums, meta_chunk_sums_len(r));
    unsigned nf = (unsigned)r->k + r->m;
    for (unsigned i = 0; r->packed && i < nf; i++) {
        offs[4 * i] = (uint8_t)(r->pack_offs[i] >> 24);
        offs[4 * i + 1] = (uint8_t)(r->pack_offs[i] >> 16);
        offs[4 * i + 2] = (uint8_t)(r->pack_offs[i] >> 8);
        offs[4 * i + 3] = (uint8_t)r->pack_offs[i];
    }
    q_blob(q, 11, r->pack, r->packed ? PACK_ID_LEN : 0);
    q_blob(q, 12, offs, r->packed ? 4 * nf : 0);
}

static int chunk_write(struct msql *h, enum st id, uint64_t ino, uint64_t idx,
                       const struct chunk_ref *r)
{
    struct q q;
    int rc = q_open(h, id, &q);

    if (rc)
        return rc;
    uint8_t offs[4 * EC_MAX_FRAGS];
    bind_chunk(&q, ino, idx, r, offs);
    if (id == ST_CHUNK_PUT_ONE)
        q_i64(&q, 13, (int64_t)time(NULL));
    return q_run(&q, "chunk put", NULL);
}

/* The old ref to the deletion queue, the new ref in place, the version
 * high-water mark raised. */
static int chunk_put_rows(struct msql *h, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    struct q q;
    int rc = run_ino_stmt(h, ST_GC_QUEUE_ONE, ino, 3, idx, "queue chunk for deletion", NULL);

    if (rc == 0)
        rc = chunk_write(h, ST_CHUNK_UPSERT, ino, idx, r);
    if (rc == 0)
        rc = q_open(h, ST_MAXVER_SET, &q);
    if (rc == 0) {
        q_u64(&q, 1, ino);
        q_u64(&q, 2, idx);
        q_u64(&q, 3, r->version);
        rc = q_run(&q, "chunk version set", NULL);
    }
    return rc;
}

static int sql_chunk_put(struct meta *m, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    struct msql *h = H(m);
    uint64_t max;
    int64_t exists;
    int found;
    int rc = sql_chunk_max_version(m, ino, idx, &max);

    if (rc == 0 && r->version <= max)
        return pfs_err(-EINVAL, "chunk %llu of inode %llu: version %llu is not above the "
                       "highest used (%llu); versions are never reused",
                       (unsigned long long)idx, (unsigned long long)ino,
                       (unsigned long long)r->version, (unsigned long long)max);
    /* checked first: a foreign key error would abort a PostgreSQL transaction */
    if (rc == 0)
        rc = query_i64(h, ST_INODE_EXISTS, ino, 1, 0, "chunk put", &exists, &found);
    if (rc == 0 && !found)
        return pfs_err(-ENOENT, "chunk put: no inode %llu", (unsigned long long)ino);
    if (rc)
        return rc;
    if (h->sql[ST_CHUNK_PUT_ONE])
        return chunk_write(h, ST_CHUNK_PUT_ONE, ino, idx, r);
    rc = group_begin(h);
    return rc ? rc : group_end(h, chunk_put_rows(h, ino, idx, r));
}

static int sql_chunk_truncate(struct meta *m, uint64_t ino, uint64_t from_idx)
{
    struct msql *h = H(m);
    int rc;

    if (h->sql[ST_CHUNK_TRUNCATE_ONE])
        return run_ino_stmt(h, ST_CHUNK_TRUNCATE_ONE, ino, 3, from_idx, "chunk truncate",
                            NULL);
    rc = group_begin(h);
    return rc ? rc : group_end(h, chunks_to_gc(h, ino, from_idx));
}

/* The record of the current row to cb: its index at column first, its
 * CHUNK_COLS after it.  0, or what stops the list (meta_cb_result). */
static int chunk_row_to(struct q *q, int first, uint64_t ino, meta_chunk_cb cb, void *arg)
{
    struct chunk_ref r;
    uint64_t idx = (uint64_t)col_i64(q, first);
    int rc = read_chunk(q, first + 1, &r);

    return rc ? rc : cb(arg, ino, idx, &r);
}

static int sql_chunk_list(struct meta *m, uint64_t ino, meta_chunk_cb cb, void *arg)
{
    struct q q;
    int rc = q_open(H(m), ino ? ST_CHUNK_LIST_INO : ST_CHUNK_LIST_ALL, &q);

    if (rc == 0 && ino)
        q_u64(&q, 1, ino);
    while (rc == 0 && (rc = q_step(&q, "chunk list")) > 0) {
        rc = chunk_row_to(&q, 1, (uint64_t)col_i64(&q, 0), cb, arg);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

static int sql_inode_get_chunks(struct meta *m, uint64_t ino, struct meta_inode *out,
                                meta_chunk_cb cb, void *arg)
{
    struct q q;
    int rows = 0;
    int rc = q_open(H(m), ST_INODE_CHUNKS, &q);

    if (rc == 0)
        q_u64(&q, 1, ino);
    while (rc == 0 && (rc = q_step(&q, "inode and chunk records")) > 0) {
        int64_t has = col_i64(&q, 14);

        if (rows++ == 0 && (rc = read_inode(&q, out)) != 0)
            break;
        if (q.st->bad || (has != 0 && has != 1)) {
            rc = row_status(&q, "inode and chunk records");
            break;
        }
        if (!has)
            continue;      /* no chunk record: the one row of the inode */
        rc = chunk_row_to(&q, 15, ino, cb, arg);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    if (rc == 0 && rows == 0)
        rc = pfs_err(-ENOENT, "no inode %llu", (unsigned long long)ino);
    return rc;
}

/* ---- deletion queue ---- */

static int sql_gc_list(struct meta *m, unsigned limit, meta_gc_cb cb, void *arg)
{
    struct q q;
    int rc = q_open(H(m), ST_GC_LIST, &q);

    if (rc == 0)
        q_i64(&q, 1, limit ? (int64_t)limit : INT64_MAX);
    while (rc == 0 && (rc = q_step(&q, "deletion queue list")) > 0) {
        struct chunk_ref r;
        uint64_t id = (uint64_t)col_i64(&q, 0);

        rc = read_chunk(&q, 1, &r);
        if (rc == 0)
            rc = cb(arg, id, &r);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

static int sql_gc_done(struct meta *m, uint64_t id)
{
    long changes = 0;
    int rc = run_ino_stmt(H(m), ST_GC_DONE, id, 1, 0, "deletion queue done", &changes);

    if (rc == 0 && changes == 0)
        rc = pfs_err(-ENOENT, "no deletion queue entry %llu", (unsigned long long)id);
    return rc;
}

/* ---- packs ---- */

static int pack_stmt(struct meta *m, enum st id, const uint8_t *pack, size_t len,
                     const char *what)
{
    struct q q;
    int rc = q_open(H(m), id, &q);

    if (rc)
        return rc;
    q_blob(&q, 1, pack, len);
    if (id == ST_PACK_RELEASE)
        q_i64(&q, 2, (int64_t)time(NULL));
    return q_run(&q, what, NULL);
}

int meta_pack_release(struct meta *m, const uint8_t *pack, size_t len)
{
    return pack_stmt(m, ST_PACK_RELEASE, pack, len, "pack release");
}

int meta_free_pack_delete(struct meta *m, const uint8_t *pack, size_t len)
{
    return pack_stmt(m, ST_FREE_PACK_DELETE, pack, len, "free pack delete");
}

int meta_pack_referenced(struct meta *m, const uint8_t *pack, size_t len, int *referenced)
{
    struct q q;
    int64_t v = 1;
    int found = 0;
    int rc = q_open(H(m), ST_PACK_REFERENCED, &q);

    if (rc)
        return rc;
    q_blob(&q, 1, pack, len);
    rc = q_one_i64(&q, "pack references", &v, &found);
    *referenced = rc != 0 || !found || v != 0;   /* in doubt: in use */
    return rc;
}

int meta_free_packs_list(struct meta *m, int64_t before, unsigned limit,
                         int (*cb)(void *arg, const uint8_t *pack, size_t len), void *arg)
{
    struct q q;
    int rc = q_open(H(m), ST_FREE_PACKS_LIST, &q);

    if (rc)
        return rc;
    q_i64(&q, 1, before);
    q_i64(&q, 2, limit ? (int64_t)limit : INT64_MAX);
    while ((rc = q_step(&q, "free pack list")) > 0) {
        size_t len = 0;
        const uint8_t *p = col_blob(&q, 0, &len);
        if (q.st->bad) {
            rc = row_status(&q, "free pack");
            break;
        }
        rc = cb(arg, p, len);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

/* ---- extended attributes ---- */

static enum st xattr_set_stmt(int flags)
{
    if (flags == XATTR_CREATE)
        return ST_XATTR_INSERT;
    if (flags == XATTR_REPLACE)
        return ST_XATTR_REPLACE;
    return ST_XATTR_UPSERT;
}

static int sql_xattr_set(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen,
                         const uint8_t *val, size_t vlen, int flags)
{
    struct msql *h = H(m);
    struct q q;
    long changes = 0;
    int64_t exists;
    int found;
    /* checked first: a foreign key error would abort a PostgreSQL transaction */
    int rc = query_i64(h, ST_INODE_EXISTS, ino, 1, 0, "xattr set", &exists, &found);

    if (rc == 0 && !found)
        return pfs_err(-ENOENT, "xattr set: no inode %llu", (unsigned long long)ino);
    if (rc == 0)
        rc = q_open(h, xattr_set_stmt(flags), &q);
    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    q_blob(&q, 2, name, nlen);
    q_blob(&q, 3, val, vlen);
    rc = q_run(&q, "xattr set", &changes);
    if (rc == 0 && changes == 0)
        rc = flags == XATTR_CREATE ? pfs_err(-EEXIST, "extended attribute exists") : -ENODATA;
    return rc;
}

static int sql_xattr_get(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen,
                         uint8_t **val, size_t *vlen)
{
    return query_blob(H(m), ST_XATTR_GET, ino, name, nlen, "xattr value", -ENODATA, val,
                      vlen);
}

static int sql_xattr_remove(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen)
{
    struct q q;
    long changes = 0;
    int rc = q_open(H(m), ST_XATTR_REMOVE, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, ino);
    q_blob(&q, 2, name, nlen);
    rc = q_run(&q, "xattr remove", &changes);
    return rc == 0 && changes == 0 ? -ENODATA : rc;
}

static int sql_xattr_list(struct meta *m, uint64_t ino, meta_xattr_cb cb, void *arg)
{
    struct q q;
    int rc = q_open(H(m), ST_XATTR_LIST, &q);

    if (rc == 0)
        q_u64(&q, 1, ino);
    while (rc == 0 && (rc = q_step(&q, "xattr list")) > 0) {
        size_t nlen;
        const uint8_t *name = col_blob(&q, 0, &nlen);

        rc = row_status(&q, "xattr");
        if (rc == 0)
            rc = meta_check_row_len("xattr name", nlen, META_NAME_MAX);
        if (rc == 0)
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

static int sql_stats(struct meta *m, uint64_t *inodes, uint64_t *bytes)
{
    struct q q;
    int rc = q_open(H(m), ST_STATS, &q);

    if (rc)
        return rc;
    rc = q_step(&q, "statistics");
    if (rc > 0) {
        *inodes = (uint64_t)col_i64(&q, 0);
        *bytes = (uint64_t)col_i64(&q, 1);
        rc = row_status(&q, "statistics");
    } else if (rc == 0) {
        rc = pfs_err(-EIO, "metadata statistics returned no row");
    }
    q_close(&q);
    return rc;
}

static int sql_chunk_bytes(struct meta *m, uint64_t ino, uint64_t *bytes)
{
    int64_t v;
    int found;
    int rc = query_i64(H(m), ST_CHUNK_BYTES, ino, 1, 0, "file stored bytes", &v, &found);

    if (rc == 0 && v < 0)
        rc = pfs_err(-EBADMSG, "metadata store: negative chunk length sum");
    if (rc == 0)
        *bytes = (uint64_t)v;
    return rc;
}

/* ---- durability ---- */

static int sql_set_deferred_sync(struct meta *m, int deferred)
{
    struct msql *h = H(m);

    if (h->in_txn)
        return pfs_err(-EBUSY, "cannot change metadata durability inside a transaction");
    if (!h->drv->set_deferred_sync)
        return 0;
    int rc = h->drv->set_deferred_sync(h->db, deferred);
    if (rc == 0)
        h->deferred = deferred != 0;
    return rc;
}

static int sql_sync(struct meta *m)
{
    struct msql *h = H(m);

    if (h->in_txn)
        return pfs_err(-EBUSY, "metadata sync inside a transaction: commit first");
    if (!h->drv->sync)
        return 0;
    int rc = h_presync(h);
    crash_point("meta-after-presync");
    if (rc == 0)
        rc = h->drv->sync(h->db);
    crash_point("meta-after-sync");
    return rc;
}

/* ---- opening, migrations, closing ---- */

static void msql_free(struct msql *h)
{
    if (!h)
        return;
    if (h->db)
        h->drv->close(h->db);
    for (int i = 0; i < ST_COUNT; i++)
        free(h->sql[i]);
    free(h);
}

static void sql_close(struct meta *m)
{
    struct msql *h = H(m);

    if (h && h->in_txn && txn_state(h) != MSQL_IDLE)
        h_exec(h, "ROLLBACK", "rollback at close");
    if (h && !h->in_txn)
        sql_sync(m);   /* deferred commits: durable before the handle goes */
    msql_free(h);
    m->impl = NULL;
}

/* One integer from a statement without parameters (0 if no row). */
static int query_int(struct msql *h, const char *tmpl, int64_t *out)
{
    char *sql = sql_expand(h->drv->dialect, tmpl);
    struct q q;
    int found, rc;

    if (!sql)
        return pfs_err(-ENOMEM, "out of memory checking the metadata schema");
    rc = q_prepare(h, -1, sql, &q);
    if (rc == 0)
        rc = q_one_i64(&q, "schema check", out, &found);
    free(sql);
    return rc;
}

/* The stored schema version: 0 for a store without our tables; an error
 * for one that holds someone else's tables. */
static int schema_version(struct msql *h, int64_t *version)
{
    int64_t has_table, tables;
    int rc = query_int(h, h->drv->dialect->has_version_table, &has_table);

    if (rc == 0 && has_table)
        return query_int(h, "SELECT version FROM schema_version", version);
    if (rc == 0)
        rc = query_int(h, h->drv->dialect->table_count, &tables);
    if (rc == 0 && tables)
        return pfs_err(-EINVAL, "%s holds tables but is not a pactfs metadata store (no "
                       "schema_version table); check the configured location",
                       h->drv->describe(h->db));
    *version = 0;
    return rc;
}

static int exec_template(struct msql *h, const char *tmpl, const char *what)
{
    char *sql = sql_expand(h->drv->dialect, tmpl);
    int rc = sql ? h_exec(h, sql, what) : pfs_err(-ENOMEM, "out of memory in %s", what);

    free(sql);
    return rc;
}

static int run_migrations(struct msql *h, int64_t from)
{
    char sql[96];
    int rc = 0;

    if (from == 0)
        rc = exec_template(h, "CREATE TABLE schema_version (version {INT} NOT NULL);"
                           "INSERT INTO schema_version VALUES (0);", "create schema table");
    for (int64_t v = from; rc == 0 && v < META_SCHEMA_VERSION; v++) {
        rc = exec_template(h, migrations[v], "schema migration");
        snprintf(sql, sizeof sql, "UPDATE schema_version SET version = %lld",
                 (long long)v + 1);
        if (rc == 0)
            rc = h_exec(h, sql, "schema version update");
    }
    return rc;
}

/* Bring the schema to META_SCHEMA_VERSION in one transaction (the dialect's
 * migration_begin also serialises concurrent openers where needed). */
static int migrate(struct msql *h)
{
    int64_t version;
    int rc = h_exec(h, h->drv->dialect->migration_begin, "begin migration");

    if (rc)
        return rc;
    rc = schema_version(h, &version);
    if (rc == 0 && version > META_SCHEMA_VERSION)
        rc = pfs_err(-EPROTONOSUPPORT, "%s has schema version %lld, newer than this pactfs "
                     "knows (%d); upgrade pactfs", h->drv->describe(h->db),
                     (long long)version, META_SCHEMA_VERSION);
    if (rc == 0 && version < 0)
        rc = pfs_err(-EBADMSG, "%s has an invalid schema version", h->drv->describe(h->db));
    if (rc == 0 && version < META_SCHEMA_VERSION)
        rc = run_migrations(h, version);
    if (rc == 0)
        return h_commit(h, "commit migration");
    if (txn_state(h) != MSQL_IDLE)
        h->drv->exec(h->db, "ROLLBACK", "rollback migration");
    return rc;
}

int meta_sql_open(const struct msql_driver *drv, void *db, struct meta **out)
{
    struct msql *h = calloc(1, sizeof *h);
    int rc;

    if (!h) {
        drv->close(db);
        return pfs_err(-ENOMEM, "out of memory opening the metadata store");
    }
    h->drv = drv;
    h->db = db;
    rc = expand_statements(h);
    if (rc == 0)
        rc = migrate(h);
    if (rc == 0)
        rc = meta_handle_new(&sql_ops, h, out);
    if (rc)
        msql_free(h);
    else
        h->m = *out;
    return rc;
}

static const struct meta_ops sql_ops = {
    .name = "sql",
    .close = sql_close,
    .begin = sql_begin,
    .commit = sql_commit,
    .rollback = sql_rollback,
    .param_get = sql_param_get,
    .param_set = sql_param_set,
    .account_add = sql_account_add,
    .account_get = sql_account_get,
    .account_get_by_name = sql_account_get_by_name,
    .account_update = sql_account_update,
    .account_list = sql_account_list,
    .folder_add = sql_folder_add,
    .folder_get = sql_folder_get,
    .folder_update = sql_folder_update,
    .folder_list = sql_folder_list,
    .envelope_put = sql_envelope_put,
    .envelope_get = sql_envelope_get,
    .envelope_delete = sql_envelope_delete,
    .envelope_list_account = sql_envelope_list_account,
    .envelope_list_folder = sql_envelope_list_folder,
    .inode_create = sql_inode_create,
    .inode_get = sql_inode_get,
    .inode_update = sql_inode_update,
    .inode_delete = sql_inode_delete,
    .inodes_delete = sql_inodes_delete,
    .inode_list_orphans = sql_inode_list_orphans,
    .symlink_set = sql_symlink_set,
    .symlink_get = sql_symlink_get,
    .dirent_find = sql_dirent_find,
    .dirent_add = sql_dirent_add,
    .dirent_set_bind = sql_dirent_set_bind,
    .dirent_remove = sql_dirent_remove,
    .reseal = sql_reseal,
    .dirent_list = sql_dirent_list,
    .dirent_count = sql_dirent_count,
    .chunk_get = sql_chunk_get,
    .chunk_put = sql_chunk_put,
    .chunk_truncate = sql_chunk_truncate,
    .chunk_list = sql_chunk_list,
    .inode_get_chunks = sql_inode_get_chunks,
    .chunk_max_version = sql_chunk_max_version,
    .gc_list = sql_gc_list,
    .gc_done = sql_gc_done,
    .xattr_set = sql_xattr_set,
    .xattr_get = sql_xattr_get,
    .xattr_remove = sql_xattr_remove,
    .xattr_list = sql_xattr_list,
    .stats = sql_stats,
    .chunk_bytes = sql_chunk_bytes,
    .set_deferred_sync = sql_set_deferred_sync,
    .sync = sql_sync,
};

/* ---- several workstations (meta_shared.h) ---- */

int meta_change_last(struct meta *m, uint64_t *seq)
{
    struct q q;
    int64_t v;
    int found;
    int rc = q_open(H(m), ST_CHANGE_LAST, &q);

    if (rc == 0)
        rc = q_one_i64(&q, "change feed", &v, &found);
    if (rc == 0 && v < 0)
        rc = pfs_err(-EBADMSG, "metadata store: negative change sequence number");
    if (rc == 0)
        *seq = (uint64_t)v;
    return rc;
}

int meta_change_list(struct meta *m, uint64_t after, unsigned limit,
                     int (*cb)(void *arg, const struct meta_change *c), void *arg)
{
    struct q q;
    int rc = q_open(H(m), ST_CHANGE_LIST, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, after);
    q_i64(&q, 2, limit);
    while ((rc = q_step(&q, "change feed")) > 0) {
        struct meta_change c = {
            .seq = (uint64_t)col_i64(&q, 0), .ino = (uint64_t)col_i64(&q, 1),
            .parent = (uint64_t)col_i64(&q, 2), .origin = (uint64_t)col_i64(&q, 3),
        };

        rc = row_status(&q, "change feed");
        if (rc == 0)
            rc = cb(arg, &c);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}

int meta_change_prune(struct meta *m, int64_t age_s)
{
    struct q q;
    int rc = q_open(H(m), ST_CHANGE_PRUNE, &q);

    if (rc)
        return rc;
    q_i64(&q, 1, age_s);
    return q_run(&q, "change feed pruning", NULL);
}

int meta_change_wait(struct meta *m, int timeout_ms)
{
    struct msql *h = H(m);

    if (h->drv->wait_notify)
        return h->drv->wait_notify(h->db, timeout_ms);
    struct timespec ts = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) < 0)
        ;
    return 0;
}

int meta_change_notify(struct meta *m)
{
    struct msql *h = H(m);

    return h->drv->dialect->notify ? h_exec(h, h->drv->dialect->notify, "notify") : 0;
}

int meta_set_origin(struct meta *m, uint64_t origin)
{
    struct msql *h = H(m);
    char sql[96];

    if (!h->drv->dialect->set_origin)
        return 0;
    snprintf(sql, sizeof sql, "%s'%llu'", h->drv->dialect->set_origin,
             (unsigned long long)origin);
    return h_exec(h, sql, "set the change origin");
}

int meta_session_open(struct meta *m, uint64_t account, const char *host, int lease_s,
                      uint64_t *id)
{
    struct q q;
    int64_t v;
    int found;
    int rc = q_open(H(m), ST_SESSION_OPEN, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, account);
    q_text(&q, 2, host);
    q_i64(&q, 3, lease_s);
    rc = q_one_i64(&q, "session start", &v, &found);
    if (rc == 0 && (!found || v <= 0))
        rc = pfs_err(-EIO, "metadata store: starting a session returned no id");
    if (rc == 0)
        *id = (uint64_t)v;
    return rc;
}

int meta_session_renew(struct meta *m, uint64_t id, int lease_s)
{
    struct q q;
    long n = 0;
    int rc = q_open(H(m), ST_SESSION_RENEW, &q);

    if (rc)
        return rc;
    q_u64(&q, 1, id);
    q_i64(&q, 2, lease_s);
    rc = q_run(&q, "session renewal", &n);
    if (rc == 0 && n == 0)
        rc = pfs_err(-ESTALE, "session %llu expired and was removed by another workstation",
                     (unsigned long long)id);
    return rc;
}

int meta_session_others(struct meta *m, uint64_t id, uint64_t *count)
{
    int64_t v;
    int found;
    int rc = query_i64(H(m), ST_SESSION_OTHERS, id, 1, 0, "session count", &v, &found);

    if (rc == 0)
        *count = v > 0 ? (uint64_t)v : 0;
    return rc;
}

/* Statements without parameters, or bound to (id), in one group. */
static int run_group(struct msql *h, const enum st *ids, size_t n, int with_id, uint64_t id,
                     const char *what)
{
    int rc = group_begin(h);

    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct q q;

        rc = q_open(h, ids[i], &q);
        if (rc == 0) {
            if (with_id)
                q_u64(&q, 1, id);
            rc = q_run(&q, what, NULL);
        }
    }
    return group_end(h, rc);
}

int meta_session_reap(struct meta *m)
{
    static const enum st ids[] = { ST_SESSION_REAP, ST_HOLDS_ORPHANED, ST_LOCKS_ORPHANED };

    return run_group(H(m), ids, 3, 0, 0, "expired session removal");
}

int meta_session_close(struct meta *m, uint64_t id)
{
    static const enum st ids[] = { ST_SESSION_CLOSE, ST_HOLDS_CLOSE, ST_LOCKS_CLOSE };

    return run_group(H(m), ids, 3, 1, id, "session end");
}

int meta_inode_lock(struct meta *m, uint64_t ino)
{
    struct msql *h = H(m);
    int64_t v;
    int found;

    if (!h->in_txn)
        return pfs_err(-EINVAL, "inode lock outside a transaction");
    int rc = query_i64(h, ST_INODE_LOCK, ino, 1, 0, "inode lock", &v, &found);
    return rc ? rc : found ? 0 : -ENOENT;
}

int meta_head_lock(struct meta *m)
{
    struct msql *h = H(m);
    struct q q;

    if (!h->in_txn || !h->sql[ST_HEAD_LOCK])   /* outside one (init): nothing to hold */
        return 0;
    int rc = q_open(h, ST_HEAD_LOCK, &q);
    return rc ? rc : q_run(&q, "vault head lock", NULL);
}

/* ---- advisory locks (meta_shared.h) ---- */

/* Bind (ino, kind, session, owner[, start, end]) as ?1..?4[, ?5, ?6]. */
static void lock_bind(struct q *q, const struct meta_lock *l, int range)
{
    q_u64(q, 1, l->ino);
    q_i64(q, 2, l->kind);
    q_u64(q, 3, l->session);
    q_u64(q, 4, l->owner);
    if (range) {
        q_i64(q, 5, l->start);
        q_i64(q, 6, l->end);
    }
}

int meta_lock_conflict(struct meta *m, const struct meta_lock *l, struct meta_lock *conflict)
{
    struct q q;
    int rc = q_open(H(m), ST_LOCK_CONFLICT, &q);

    if (rc)
        return rc;
    lock_bind(&q, l, 1);
    q_i64(&q, 7, l->type == F_WRLCK ? F_RDLCK : F_WRLCK);
    rc = q_step(&q, "advisory lock");
    if (rc > 0) {
        *conflict = (struct meta_lock){
            .ino = l->ino, .kind = l->kind, .type = (int)col_i64(&q, 0),
            .start = col_i64(&q, 1), .end = col_i64(&q, 2), .pid = (uint32_t)col_i64(&q, 3),
            .session = (uint64_t)col_i64(&q, 4), .owner = (uint64_t)col_i64(&q, 5),
        };
        rc = row_status(&q, "advisory lock");
        if (rc == 0 && ((conflict->type != F_RDLCK && conflict->type != F_WRLCK) ||
                        conflict->start < 0 || conflict->end < conflict->start))
            rc = pfs_err(-EBADMSG, "metadata store: malformed advisory lock row");
        rc = rc ? rc : 1;
    }
    q_close(&q);
    return rc;
}

static int lock_insert(struct msql *h, const struct meta_lock *l, int type, int64_t start,
                       int64_t end)
{
    struct q q;
    int rc = q_open(h, ST_LOCK_INSERT, &q);

    if (rc)
        return rc;
    lock_bind(&q, l, 0);
    q_i64(&q, 5, start);
    q_i64(&q, 6, end);
    q_i64(&q, 7, type);
    q_i64(&q, 8, l->pid);
    return q_run(&q, "advisory lock", NULL);
}

#define LOCK_SPLIT_MAX 64   /* own locks overlapping one request */

int meta_lock_set(struct meta *m, const struct meta_lock *l)
{
    struct msql *h = H(m);
    struct { int64_t id, type, start, end; } mine[LOCK_SPLIT_MAX];
    size_t n = 0;
    struct q q;
    int rc = q_open(h, ST_LOCK_MINE, &q);

    if (rc)
        return rc;
    lock_bind(&q, l, 1);
    while ((rc = q_step(&q, "advisory lock")) > 0 && n < LOCK_SPLIT_MAX) {
        mine[n].id = col_i64(&q, 0);
        mine[n].type = col_i64(&q, 1);
        mine[n].start = col_i64(&q, 2);
        mine[n].end = col_i64(&q, 3);
        rc = row_status(&q, "advisory lock");
        if (rc)
            break;
        n++;
    }
    q_close(&q);
    if (rc > 0)
        return pfs_err(-ENOLCK, "more than %d locks of one owner overlap one request",
                       LOCK_SPLIT_MAX);
    /* give up the range, keep what lies outside it */
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = q_open(h, ST_LOCK_DELETE, &q);
        if (rc == 0) {
            q_i64(&q, 1, mine[i].id);
            rc = q_run(&q, "advisory lock", NULL);
        }
        if (rc == 0 && mine[i].start < l->start)
            rc = lock_insert(h, l, (int)mine[i].type, mine[i].start, l->start - 1);
        if (rc == 0 && mine[i].end > l->end)
            rc = lock_insert(h, l, (int)mine[i].type, l->end + 1, mine[i].end);
    }
    if (rc == 0 && l->type != F_UNLCK)
        rc = lock_insert(h, l, l->type, l->start, l->end);
    return rc;
}

int meta_lock_release(struct meta *m, uint64_t session, uint64_t ino, uint64_t owner, int kind)
{
    struct meta_lock l = { .ino = ino, .session = session, .owner = owner, .kind = kind };
    struct q q;
    int rc = q_open(H(m), ST_LOCK_RELEASE, &q);

    if (rc)
        return rc;
    lock_bind(&q, &l, 0);
    return q_run(&q, "advisory lock release", NULL);
}

/* ---- open files across workstations (meta_shared.h) ---- */

int meta_hold_set(struct meta *m, uint64_t session, uint64_t ino, int held)
{
    return run_ino_stmt(H(m), held ? ST_HOLD_ADD : ST_HOLD_DROP, ino, 2, session,
                        "open-file hold", NULL);
}

int meta_orphan_unheld(struct meta *m, uint64_t session, uint64_t ino)
{
    int64_t v;
    int found;
    int rc = query_i64(H(m), ST_HOLD_UNHELD, ino, 2, session, "open-file hold", &v, &found);

    return rc ? rc : !found ? -ENOENT : v != 0;
}

int meta_orphans_unheld_list(struct meta *m, int (*cb)(void *arg, uint64_t ino), void *arg)
{
    return ino_list(H(m), ST_ORPHANS_UNHELD, "orphan list", cb, arg);
}

int meta_commitment_list(struct meta *m, int (*cb)(void *arg, uint64_t ino,
                                                   const uint8_t *com, size_t len), void *arg)
{
    struct q q;
    int rc = q_open(H(m), ST_COMMITMENT_LIST, &q);

    while (rc == 0 && (rc = q_step(&q, "commitment list")) > 0) {
        size_t len = 0;
        uint64_t ino = (uint64_t)col_i64(&q, 0);
        const uint8_t *com = col_blob(&q, 1, &len);

        rc = row_status(&q, "commitment list");
        if (rc == 0)
            rc = cb(arg, ino, com, len);
        if (rc) {
            rc = meta_cb_result(rc);
            break;
        }
    }
    q_close(&q);
    return rc;
}
