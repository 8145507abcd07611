/* The contract between the shared SQL layer (meta_sql.c) and a database
 * driver (meta_sqlite.c, meta_pg.c).
 *
 * meta_sql.c holds everything about the metadata that is not about one
 * database library: the schema and its migrations, the statements, the
 * column lists and row decoders, the rules that span several tables
 * (deleting an inode queues its chunks, a chunk version is never reused),
 * the transaction and statement-group logic, and the one meta_ops table.
 * A driver only runs SQL: prepare, bind, step, read a column, execute a
 * script, and report the connection's transaction state.
 *
 * SQL handed to a driver uses ?1, ?2 ... for parameters (the PostgreSQL
 * driver rewrites them to $1, $2 ...) and has the dialect's words already
 * filled in (see struct msql_dialect).
 */
#ifndef PACTFS_META_SQL_H
#define PACTFS_META_SQL_H

#include <stddef.h>
#include <stdint.h>

#include "meta.h"

#define ACCOUNT_COLS "id, name, roles, disabled, pubkey, sealed_key, created"
#define FOLDER_COLS "id, root_ino, key_version, created"
#define ENVELOPE_COLS "folder_id, account_id, key_version, rights, granted_by, wrapped"
#define INODE_COLS "ino, folder_id, mode, uid, gid, nlink, size, rdev, atime_ns, mtime_ns," \
                   " ctime_ns, key_version, wrapped_dek, commitment"
#define CHUNK_COLS "chunk_id, version, plain_len, sealed_len, k, m, rotation, sums, pack," \
                   " pack_offs"

/* One statement in use.  A driver's own statement struct starts with this
 * header; the driver sets bad when a column read had the wrong type, size
 * or was NULL (the database is untrusted input: the shared code then
 * rejects the row). */
struct msql_stmt {
    int bad;
};

/* Where a connection stands, for the shared transaction logic. */
enum msql_txn_state {
    MSQL_IDLE,        /* no transaction open on the server */
    MSQL_ACTIVE,      /* a transaction is open and usable */
    MSQL_FAILED       /* a transaction is open but an error aborted it */
};

/* The words that differ between SQL dialects.  The shared schema and
 * statements name them as {BLOB}, {INT}, {ID}, {ID_ALWAYS}, {INO_ID},
 * {INO_SEQ}, {NEW_INO}; meta_sql.c fills them in. */
struct msql_dialect {
    const char *blob;          /* {BLOB}: byte string column type */
    const char *integer;       /* {INT}: 64-bit integer column type */
    const char *id;            /* {ID}: generated key, an explicit value allowed */
    const char *id_always;     /* {ID_ALWAYS}: generated key, never given */
    const char *ino_id;        /* {INO_ID}: the inode number column */
    const char *ino_seq;       /* {INO_SEQ}: DDL before the inode table ("" if none) */
    const char *new_ino;       /* {NEW_INO}: ?1, or a fresh number when ?1 is NULL */
    const char *empty_blob;    /* {EMPTY_BLOB}: literal of an empty byte string */
    const char *now;           /* {NOW}: the database's clock, unix seconds */
    const char *change_triggers; /* {CHANGE_TRIGGERS}: DDL of the triggers that write
                                  the change feed (meta_shared.h) on every change
                                  of inodes and dirents */
    const char *ino_set;       /* {INO_SET}: a query of the integers in the JSON
                                  array bound to ?1 */
    /* Inside a write transaction: take the inode row ?1 for the rest of it
     * (other writers of that row wait; returns the row if it exists). */
    const char *inode_lock;
    /* Optional (NULL: the dialect's write transactions are serial anyway).
     * Inside a write transaction: serialize every change of the signed
     * state (vault_head_advance) until commit, so two administrators never
     * sign two heads with one counter. */
    const char *head_lock;
    /* The statement, up to its quoted number, that sets this connection's
     * origin for the change feed (NULL: the triggers record origin 0). */
    const char *set_origin;
    /* Wake every connection waiting for changes (NULL: none wait). */
    const char *notify;
    const char *begin;         /* start a write transaction */
    const char *migration_begin; /* start the migration transaction (with its lock) */
    const char *has_version_table; /* one count: is there a schema_version table */
    const char *table_count;   /* one count: tables in the store at all */
    /* Optional (NULL: not needed).  After an inode is created with an
     * explicit number ?1, move the generator past it. */
    const char *inode_seq_advance;
    /* Optional single-statement forms of multi-table rules (NULL: the
     * shared code runs several statements in a group).  Parameters:
     * chunk_put: ?1 ino, ?2 idx, ?3..?12 CHUNK_COLS, ?13 now (seconds);
     * chunk_truncate: ?1 ino, ?2 from idx, ?3 now;
     * inode_delete: ?1 ino, ?2 from idx (0), ?3 now (directory entries are
     * checked before). */
    const char *chunk_put;
    const char *chunk_truncate;
    const char *inode_delete;
};

struct msql_driver {
    const char *name;                       /* "sqlite", "postgresql" */
    const struct msql_dialect *dialect;

    /* Prepare sql.  id >= 0 names a shared statement the driver may cache
     * (the same id always comes with the same text); id < 0: one-off. */
    int (*prepare)(void *db, int id, const char *sql, struct msql_stmt **out);
    void (*finish)(struct msql_stmt *st);   /* done with it (cached: reset) */
    /* Bind parameter col (1-based); an error surfaces at step. */
    void (*bind_i64)(struct msql_stmt *st, int col, int64_t v);
    void (*bind_null)(struct msql_stmt *st, int col);
    void (*bind_blob)(struct msql_stmt *st, int col, const void *p, size_t n);
    void (*bind_text)(struct msql_stmt *st, int col, const char *t);
    /* 1 = a row, 0 = done, < 0 = error (with message naming what). */
    int (*step)(struct msql_stmt *st, const char *what);
    /* Rows changed by the finished statement. */
    long (*changes)(struct msql_stmt *st);
    /* Columns of the current row (0-based); set st->bad on a wrong type. */
    int64_t (*col_i64)(struct msql_stmt *st, int col);
    const void *(*col_blob)(struct msql_stmt *st, int col, size_t *len);

    /* Run a script of statements without parameters or results. */
    int (*exec)(void *db, const char *sql, const char *what);
    enum msql_txn_state (*txn_state)(void *db);

    /* What the messages call this store ("metadata store /x/meta.db"). */
    const char *(*describe)(void *db);
    /* Optional: wait up to timeout_ms for a change notification (1),
     * else 0; < 0 on a lost connection.  NULL: no notifications (polling). */
    int (*wait_notify)(void *db, int timeout_ms);
    /* Optional durability controls (NULL: every commit is durable). */
    int (*set_deferred_sync)(void *db, int deferred);
    int (*sync)(void *db);
    void (*close)(void *db);
};

/* Wrap an open driver connection: migrate the schema to
 * META_SCHEMA_VERSION and return the handle.  On failure the connection is
 * closed. */
int meta_sql_open(const struct msql_driver *drv, void *db, struct meta **out);

/* The text of shared statement i as this store prepares it (dialect filled
 * in), NULL for one it does not use; *count = how many there are.  For the
 * tests that check every statement's query plan. */
const char *meta_sql_statement(struct meta *m, unsigned i, unsigned *count);

#endif
