#include "config.h"

/* The embedded metadata driver: one SQLite file in WAL mode with
 * synchronous=FULL (a commit is on disk when meta_commit returns; the daemon
 * switches to NORMAL with meta_set_deferred_sync and makes commits durable in
 * batches with meta_sync, an fsync of the WAL file), foreign keys on, and
 * every shared statement prepared once per handle and reused, since lookups,
 * getattr and chunk records run thousands of times a second.
 * The schema, statements and rules are in meta_sql.c; this file only runs
 * SQL (meta_sql.h).  Schema and its meaning: docs/format-metadata.md. */

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "meta.h"
#include "meta_sql.h"
#include "sqlite_walbuf.h"

/* Shared statements are cached by id; ids are small and dense. */
#define SQ_CACHE 128

struct sq_stmt {
    struct msql_stmt base;        /* first: the shared code sees this */
    struct sq *s;
    sqlite3_stmt *st;
    int id;                       /* cache slot, or -1 for a one-off */
    int bind_rc;
    int busy;                     /* cached statement is being stepped */
};

struct sq {
    sqlite3 *db;
    char *path;
    int deferred;                 /* synchronous=NORMAL: sq_sync checkpoints */
    int wal_pages;                /* frames in the WAL after the last commit */
    char desc[64 + 4096];
    struct sq_stmt *cache[SQ_CACHE];
};

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

/* ---- statements ---- */

static int new_stmt(struct sq *s, int id, const char *sql, struct sq_stmt **out)
{
    struct sq_stmt *q = calloc(1, sizeof *q);
    int rc;

    if (!q)
        return pfs_err(-ENOMEM, "out of memory preparing a metadata statement");
    q->s = s;
    q->id = id;
    rc = sqlite3_prepare_v3(s->db, sql, -1, id >= 0 ? SQLITE_PREPARE_PERSISTENT : 0, &q->st,
                            NULL);
    if (rc != SQLITE_OK) {
        free(q);
        return sq_error(s, rc, "prepare");
    }
    *out = q;
    return 0;
}

/* The cached statement, or a private one when a list callback re-enters
 * the same call while the cached one is still open. */
static int sq_prepare(void *db, int id, const char *sql, struct msql_stmt **out)
{
    struct sq *s = db;
    struct sq_stmt *q = NULL;
    int rc;

    if (id >= 0 && id < SQ_CACHE && s->cache[id] && !s->cache[id]->busy) {
        q = s->cache[id];
    } else {
        int cache = id >= 0 && id < SQ_CACHE && !s->cache[id];

        rc = new_stmt(s, cache ? id : -1, sql, &q);
        if (rc)
            return rc;
        if (cache)
            s->cache[id] = q;
    }
    q->busy = 1;
    q->bind_rc = 0;
    q->base.bad = 0;
    *out = &q->base;
    return 0;
}

static void sq_finish(struct msql_stmt *base)
{
    struct sq_stmt *q = (struct sq_stmt *)base;

    if (q->id < 0) {
        sqlite3_finalize(q->st);
        free(q);
        return;
    }
    sqlite3_reset(q->st);
    sqlite3_clear_bindings(q->st);
    q->busy = 0;
}

static void note_bind(struct sq_stmt *q, int rc)
{
    if (rc && !q->bind_rc)
        q->bind_rc = rc;
}

static void sq_bind_i64(struct msql_stmt *base, int col, int64_t v)
{
    struct sq_stmt *q = (struct sq_stmt *)base;

    note_bind(q, sqlite3_bind_int64(q->st, col, v));
}

static void sq_bind_null(struct msql_stmt *base, int col)
{
    struct sq_stmt *q = (struct sq_stmt *)base;

    note_bind(q, sqlite3_bind_null(q->st, col));
}

static void sq_bind_blob(struct msql_stmt *base, int col, const void *p, size_t n)
{
    /* an empty blob must still be a blob, not NULL, to satisfy NOT NULL */
    static const uint8_t empty;
    struct sq_stmt *q = (struct sq_stmt *)base;

    note_bind(q, sqlite3_bind_blob64(q->st, col, n ? p : &empty, n, SQLITE_STATIC));
}

static void sq_bind_text(struct msql_stmt *base, int col, const char *t)
{
    struct sq_stmt *q = (struct sq_stmt *)base;

    note_bind(q, sqlite3_bind_text(q->st, col, t, -1, SQLITE_STATIC));
}

static int sq_step(struct msql_stmt *base, const char *what)
{
    struct sq_stmt *q = (struct sq_stmt *)base;
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

static long sq_changes(struct msql_stmt *base)
{
    return sqlite3_changes(((struct sq_stmt *)base)->s->db);
}

/* A value stored with another type (text, real, NULL, blob: an edited
 * file) is a bad row, not silently converted. */
static int64_t sq_col_i64(struct msql_stmt *base, int col)
{
    struct sq_stmt *q = (struct sq_stmt *)base;

    if (sqlite3_column_type(q->st, col) != SQLITE_INTEGER)
        base->bad = 1;
    return sqlite3_column_int64(q->st, col);
}

static const void *sq_col_blob(struct msql_stmt *base, int col, size_t *len)
{
    struct sq_stmt *q = (struct sq_stmt *)base;
    int type = sqlite3_column_type(q->st, col);
    const void *p = type == SQLITE_TEXT ? (const void *)sqlite3_column_text(q->st, col)
                                        : sqlite3_column_blob(q->st, col);

    if (type != SQLITE_BLOB && type != SQLITE_TEXT)
        base->bad = 1;
    *len = (size_t)sqlite3_column_bytes(q->st, col);
    return p;
}

/* ---- connection ---- */

static int sq_exec(void *db, const char *sql, const char *what)
{
    struct sq *s = db;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

    return rc == SQLITE_OK ? 0 : sq_error(s, sqlite3_extended_errcode(s->db), what);
}

/* SQLite rolls a transaction back by itself after some hard errors: the
 * connection is then back in autocommit mode. */
static enum msql_txn_state sq_txn_state(void *db)
{
    return sqlite3_get_autocommit(((struct sq *)db)->db) ? MSQL_IDLE : MSQL_ACTIVE;
}

static const char *sq_describe(void *db)
{
    return ((struct sq *)db)->desc;
}

/* NORMAL in WAL: a commit appends its frames to the WAL without an fsync.
 * Transactions stay atomic (a torn tail of the WAL is ignored at recovery),
 * only the last ones may be lost, until sq_sync. */
static int sq_set_deferred_sync(void *db, int deferred)
{
    struct sq *s = db;
    int rc = sq_exec(db, deferred ? "PRAGMA synchronous = NORMAL" : "PRAGMA synchronous = FULL",
                     "set synchronous mode");

    if (rc == 0)
        s->deferred = deferred;
    return rc;
}

/* Checkpoints copy the WAL into the database and sync both, which makes
 * commits durable: with deferred commits only sq_sync may do that (after
 * the write-ahead hook, meta_set_presync), so SQLite's own automatic
 * checkpoint at commit is replaced by this hook, which checkpoints at
 * commit only when every commit is durable anyway (synchronous=FULL, the
 * hook ran before COMMIT). */
#define WAL_CHECKPOINT_PAGES 1000
static int sq_wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    struct sq *s = arg;

    s->wal_pages = pages;
    if (!s->deferred && pages >= WAL_CHECKPOINT_PAGES)
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return SQLITE_OK;
}

/* Every committed transaction is in the WAL file (or already checkpointed
 * into the database, which a checkpoint syncs): one fsync of the WAL makes
 * them all durable. */
static int sq_sync(void *db)
{
    struct sq *s = db;
    sqlite3_file *wal = NULL;
    int rc = sqlite3_file_control(s->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);

    if (rc != SQLITE_OK)
        return sq_error(s, rc, "find the write-ahead log to sync");
    if (!wal || !wal->pMethods)
        return 0;   /* no WAL open: nothing was written through this handle */
    rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
    if (rc != SQLITE_OK)
        return pfs_err(-EIO, "cannot sync the write-ahead log of %s (error %d): the disk "
                       "may be failing or full; check it, then remount", s->path, rc);
    if (s->deferred && s->wal_pages >= WAL_CHECKPOINT_PAGES) {
        rc = sqlite3_wal_checkpoint_v2(s->db, "main", SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            return sq_error(s, rc, "checkpoint the write-ahead log");
        s->wal_pages = 0;
    }
    return 0;
}

static void sq_close(void *db)
{
    struct sq *s = db;

    if (!s)
        return;
    for (int i = 0; i < SQ_CACHE; i++) {
        if (s->cache[i]) {
            sqlite3_finalize(s->cache[i]->st);
            free(s->cache[i]);
        }
    }
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

static const struct msql_dialect sqlite_dialect = {
    .blob = "BLOB",
    .integer = "INTEGER",
    .id = "INTEGER PRIMARY KEY AUTOINCREMENT",
    .id_always = "INTEGER PRIMARY KEY AUTOINCREMENT",
    .ino_id = "INTEGER PRIMARY KEY AUTOINCREMENT",   /* never reuses a number */
    .ino_seq = "",
    .new_ino = "?1",                                   /* NULL: the next number */
    .empty_blob = "x''",
    .begin = "BEGIN IMMEDIATE",
    .migration_begin = "BEGIN IMMEDIATE",
    .has_version_table = "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                         " AND name = 'schema_version'",
    .table_count = "SELECT count(*) FROM sqlite_master",
    .now = "CAST(strftime('%s', 'now') AS INTEGER)",
    .ino_set = "SELECT value FROM json_each(?1)",
    /* no change feed: every mount of a SQLite vault is on this machine and
     * the mounts there coordinate through mount_peers (design-fuse.md) */
    .change_triggers = "",
    /* BEGIN IMMEDIATE already keeps every other writer out */
    .inode_lock = "SELECT ino FROM inodes WHERE ino = ?1",
};

static const struct msql_driver sqlite_driver = {
    .name = "sqlite",
    .dialect = &sqlite_dialect,
    .prepare = sq_prepare,
    .finish = sq_finish,
    .bind_i64 = sq_bind_i64,
    .bind_null = sq_bind_null,
    .bind_blob = sq_bind_blob,
    .bind_text = sq_bind_text,
    .step = sq_step,
    .changes = sq_changes,
    .col_i64 = sq_col_i64,
    .col_blob = sq_col_blob,
    .exec = sq_exec,
    .txn_state = sq_txn_state,
    .describe = sq_describe,
    .set_deferred_sync = sq_set_deferred_sync,
    .sync = sq_sync,
    .close = sq_close,
};

/* ---- opening ---- */

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
    wal = rc == SQLITE_ROW && sqlite3_column_text(st, 0) &&
          strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
    sqlite3_finalize(st);
    if (!wal)
        return pfs_err(-EIO, "cannot switch %s to WAL journal mode: %s", s->path,
                       sqlite3_errmsg(s->db));
    sqlite3_wal_hook(s->db, sq_wal_hook, s);
    /* NORMAL in WAL may lose the last commits on power loss; we promise
     * durability.  journal_size_limit 0: the WAL restarts after each
     * checkpoint as an empty file, so commits append new blocks instead of
     * overwriting old ones, which after the page cache dropped them cost a
     * disk read each (a frame is not block-aligned): rm -rf of 4,000 files
     * after a cold cache, 1.25x faster. */
    return sq_exec(s, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                   " PRAGMA journal_size_limit = 0;", "configure connection");
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
    snprintf(s->desc, sizeof s->desc, "metadata store %s", path);
    /* walbuf: a commit's WAL frames in one write (sqlite_walbuf.c) */
    rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                         walbuf_vfs());
    if (rc != SQLITE_OK)
        rc = s->db ? sq_error(s, rc, "open")
                   : pfs_err(-ENOMEM, "out of memory opening %s", path);
    if (rc == 0)
        rc = configure_connection(s);
    if (rc) {
        sq_close(s);
        return rc;
    }
    return meta_sql_open(&sqlite_driver, s, out);
}
