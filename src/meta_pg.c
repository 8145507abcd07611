#include "config.h"

/* The shared metadata driver on PostgreSQL through libpq: one connection,
 * parameters as text (integers) or binary (blobs), results in binary and
 * read through the bounded reader, since the database server is untrusted
 * input too.  The schema, statements and rules are in meta_sql.c; this file
 * runs SQL (meta_sql.h) and gives the rules that change several tables a
 * single-statement form (data-modifying CTEs), one round trip each.
 *
 * Unlike SQLite, a statement that fails with an error (a foreign key
 * violation, a lost connection) aborts an open PostgreSQL transaction: the
 * caller must roll back.  Expected outcomes (-ENOENT, -EEXIST, -ENODATA) are
 * detected without errors and leave the transaction usable.
 * Schema and its meaning: docs/format-metadata.md. */

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "conf.h"
#include "error.h"
#include "meta.h"
#include "meta_shared.h"
#include "meta_sql.h"

/* Serialises schema migrations across workstations (an arbitrary constant). */
#define MIGRATION_LOCK_KEY "7065616374667301"
#define HEAD_LOCK_KEY "7065616374667302"      /* "pactfs" 02: the vault head */
/* The channel of change notifications (one database holds one vault). */
#define PG_CHANNEL "pactfs_changes"
#define PG_LISTENER_NAME "pactfs-listen"   /* application_name of the listening connection */

/* Shared statements' texts, rewritten to $N once per connection. */
#define PG_CACHE 128
#define PG_MAX_PARAMS 14

struct pg {
    PGconn *conn;
    int listening;                /* LISTEN sent (meta_change_wait) */
    char *sql[PG_CACHE];
};

struct pg_stmt {
    struct msql_stmt base;        /* first: the shared code sees this */
    struct pg *s;
    const char *sql;
    char *own_sql;                /* one-off statements */
    int n;
    const char *val[PG_MAX_PARAMS];
    int len[PG_MAX_PARAMS];
    int fmt[PG_MAX_PARAMS];
    char num[PG_MAX_PARAMS][24];
    PGresult *r;
    int row;                      /* current row; -1 before the first step */
};

static int pg_error(struct pg *s, const PGresult *r, const char *what)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = PQerrorMessage(s->conn);

    if (!state)
        return pfs_err(-EIO, "metadata %s: PostgreSQL connection failed: %s", what, msg);
    if (strcmp(state, "23505") == 0)
        return pfs_err(-EEXIST, "metadata %s: already exists (%s)", what, msg);
    if (strcmp(state, "23503") == 0)
        return pfs_err(-ENOENT, "metadata %s: refers to a missing row or is still "
                       "referenced (%s)", what, msg);
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
        strcmp(state, "55P03") == 0)
        return pfs_err(-EBUSY, "metadata %s: conflict with another workstation; retry (%s)",
                       what, msg);
    if (strcmp(state, "53100") == 0)
        return pfs_err(-ENOSPC, "metadata %s: database server disk full (%s)", what, msg);
    return pfs_err(-EIO, "metadata %s failed: %s", what, msg);
}

/* ?N -> $N (the shared SQL has no '?' inside string literals). */
static char *pg_dollars(const char *sql)
{
    char *out = strdup(sql);

    for (char *p = out; p && *p; p++)
        if (*p == '?')
            *p = '$';
    return out;
}

/* ---- statements ---- */

static int pg_prepare(void *db, int id, const char *sql, struct msql_stmt **out)
{
    struct pg *s = db;
    struct pg_stmt *q = calloc(1, sizeof *q);

    if (!q)
        return pfs_err(-ENOMEM, "out of memory preparing a metadata statement");
    q->s = s;
    q->row = -1;
    if (id >= 0 && id < PG_CACHE) {
        if (!s->sql[id])
            s->sql[id] = pg_dollars(sql);
        q->sql = s->sql[id];
    } else {
        q->sql = q->own_sql = pg_dollars(sql);
    }
    if (!q->sql) {
        free(q);
        return pfs_err(-ENOMEM, "out of memory preparing a metadata statement");
    }
    *out = &q->base;
    return 0;
}

static void pg_finish(struct msql_stmt *base)
{
    struct pg_stmt *q = (struct pg_stmt *)base;

    PQclear(q->r);
    free(q->own_sql);
    free(q);
}

/* Parameter col (1-based); the count is the highest one bound. */
static int param_slot(struct pg_stmt *q, int col)
{
    if (col < 1 || col > PG_MAX_PARAMS)
        abort();   /* a programming error in meta_sql.c's statement table */
    if (col > q->n)
        q->n = col;
    return col - 1;
}

static void pg_bind_i64(struct msql_stmt *base, int col, int64_t v)
{
    struct pg_stmt *q = (struct pg_stmt *)base;
    int i = param_slot(q, col);

    snprintf(q->num[i], sizeof q->num[i], "%lld", (long long)v);
    q->val[i] = q->num[i];
    q->len[i] = 0;
    q->fmt[i] = 0;
}

static void pg_bind_null(struct msql_stmt *base, int col)
{
    struct pg_stmt *q = (struct pg_stmt *)base;
    int i = param_slot(q, col);

    q->val[i] = NULL;
    q->len[i] = 0;
    q->fmt[i] = 0;
}

static void pg_bind_blob(struct msql_stmt *base, int col, const void *p, size_t n)
{
    struct pg_stmt *q = (struct pg_stmt *)base;
    int i = param_slot(q, col);

    q->val[i] = n ? p : "";
    q->len[i] = (int)n;     /* n <= META_LARGE_PARAM_MAX, checked by meta.c */
    q->fmt[i] = 1;
}

static void pg_bind_text(struct msql_stmt *base, int col, const char *t)
{
    struct pg_stmt *q = (struct pg_stmt *)base;
    int i = param_slot(q, col);

    q->val[i] = t;
    q->len[i] = 0;
    q->fmt[i] = 0;
}

/* The statement runs at the first step (one round trip); later steps walk
 * the rows of the result. */
static int pg_step(struct msql_stmt *base, const char *what)
{
    struct pg_stmt *q = (struct pg_stmt *)base;
    ExecStatusType st;

    if (!q->r) {
        if (PQtransactionStatus(q->s->conn) == PQTRANS_INERROR)
            return pfs_err(-EIO, "metadata %s: the transaction was aborted by an earlier "
                           "error; roll it back", what);
        q->r = PQexecParams(q->s->conn, q->sql, q->n, NULL, q->val, q->len, q->fmt, 1);
        st = PQresultStatus(q->r);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            int rc = pg_error(q->s, q->r, what);

            PQclear(q->r);
            q->r = NULL;
            return rc;
        }
    }
    q->row++;
    return q->row < PQntuples(q->r) ? 1 : 0;
}

static long pg_changes(struct msql_stmt *base)
{
    struct pg_stmt *q = (struct pg_stmt *)base;

    if (!q->r)
        return 0;
    return PQresultStatus(q->r) == PGRES_TUPLES_OK ? PQntuples(q->r)
                                                   : atol(PQcmdTuples(q->r));
}

/* Every integer column is BIGINT: exactly 8 bytes in binary, never NULL. */
static int64_t pg_col_i64(struct msql_stmt *base, int col)
{
    struct pg_stmt *q = (struct pg_stmt *)base;
    struct rbuf rb;
    uint64_t v = 0;

    if (q->row < 0 || q->row >= PQntuples(q->r) || col >= PQnfields(q->r) ||
        PQgetisnull(q->r, q->row, col)) {
        base->bad = 1;
        return 0;
    }
    rbuf_init(&rb, PQgetvalue(q->r, q->row, col), (size_t)PQgetlength(q->r, q->row, col));
    rbuf_get_u64(&rb, &v);
    if (rbuf_end(&rb))
        base->bad = 1;
    return (int64_t)v;
}

static const void *pg_col_blob(struct msql_stmt *base, int col, size_t *len)
{
    struct pg_stmt *q = (struct pg_stmt *)base;

    if (q->row < 0 || q->row >= PQntuples(q->r) || col >= PQnfields(q->r) ||
        PQgetisnull(q->r, q->row, col)) {
        base->bad = 1;
        *len = 0;
        return "";
    }
    *len = (size_t)PQgetlength(q->r, q->row, col);
    return PQgetvalue(q->r, q->row, col);
}

/* ---- connection ---- */

static int pg_exec(void *db, const char *sql, const char *what)
{
    struct pg *s = db;
    PGresult *r = PQexec(s->conn, sql);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK
             ? 0 : pg_error(s, r, what);

    /* COMMIT of an aborted transaction "succeeds" as ROLLBACK */
    if (rc == 0 && strcmp(sql, "COMMIT") == 0 && strcmp(PQcmdStatus(r), "COMMIT") != 0)
        rc = pfs_err(-EIO, "metadata commit: the transaction was rolled back after an "
                     "earlier error; nothing was written");
    PQclear(r);
    return rc;
}

static enum msql_txn_state pg_txn_state(void *db)
{
    switch (PQtransactionStatus(((struct pg *)db)->conn)) {
    case PQTRANS_IDLE:
        return MSQL_IDLE;
    case PQTRANS_INTRANS:
    case PQTRANS_ACTIVE:
        return MSQL_ACTIVE;
    default:            /* in error, or the connection is gone */
        return MSQL_FAILED;
    }
}

static const char *pg_describe(void *db)
{
    (void)db;
    return "the PostgreSQL metadata store";
}

/* Drain the notifications that arrived: 1 if any. */
static int pg_drain_notify(struct pg *s)
{
    PGnotify *n;
    int got = 0;

    while ((n = PQnotifies(s->conn)) != NULL) {
        got = 1;
        PQfreemem(n);
    }
    return got;
}

static int check_transport(struct pg *s);

/* LISTEN, under a name an operator sees in pg_stat_activity. */
static int pg_listen(struct pg *s)
{
    int rc = pg_exec(s, "SET application_name = '" PG_LISTENER_NAME "'; LISTEN " PG_CHANNEL,
                     "listen for changes");

    s->listening = rc == 0;
    return rc;
}

/* The listening connection broke (its backend was terminated, the server
 * restarted, the network failed): notifications sent meanwhile are lost.
 * Connect again (the same conninfo, TLS checked again) and listen again:
 * META_CHANGE_RELISTENED, so the caller looks at everything that may have
 * changed; -EIO if the server cannot be reached yet. */
static int pg_listen_again(struct pg *s)
{
    char was[256];

    snprintf(was, sizeof was, "%s", PQerrorMessage(s->conn));
    was[strcspn(was, "\n")] = '\0';
    s->listening = 0;
    PQreset(s->conn);
    if (PQstatus(s->conn) != CONNECTION_OK)
        return pfs_err(-EIO, "the PostgreSQL connection listening for changes was lost (%s) "
                       "and connecting again failed: %s", was[0] ? was : "closed",
                       PQerrorMessage(s->conn));
    int rc = check_transport(s);

    if (rc == 0)
        rc = pg_listen(s);
    return rc ? rc : META_CHANGE_RELISTENED;
}

static int pg_wait_notify(void *db, int timeout_ms)
{
    struct pg *s = db;

    if (PQstatus(s->conn) == CONNECTION_BAD)   /* a statement found it lost */
        return pg_listen_again(s);
    if (!s->listening) {
        int rc = pg_listen(s);

        if (rc)
            return PQstatus(s->conn) == CONNECTION_BAD ? pg_listen_again(s) : rc;
    }
    if (PQconsumeInput(s->conn) == 0)
        return pg_listen_again(s);
    if (pg_drain_notify(s))
        return 1;
    struct pollfd pfd = { .fd = PQsocket(s->conn), .events = POLLIN };
    if (pfd.fd < 0)
        return pg_listen_again(s);
    int n = poll(&pfd, 1, timeout_ms);
    if (n <= 0)
        return 0;
    if (PQconsumeInput(s->conn) == 0 || PQstatus(s->conn) == CONNECTION_BAD)
        return pg_listen_again(s);
    return pg_drain_notify(s);
}

static void pg_close(void *db)
{
    struct pg *s = db;

    if (!s)
        return;
    PQfinish(s->conn);
    for (int i = 0; i < PG_CACHE; i++)
        free(s->sql[i]);
    free(s);
}

/* The old ref to the deletion queue, the new ref in place and the version
 * high-water mark raised: one statement, so one atomic step. */
#define PG_CHUNK_PUT \
    "WITH old AS (SELECT " CHUNK_COLS " FROM chunks WHERE ino = ?1 AND idx = ?2)," \
    " queued AS (INSERT INTO gc_queue (" CHUNK_COLS ", queued) SELECT " CHUNK_COLS "," \
    " ?13::bigint FROM old)," \
    " ver AS (INSERT INTO chunk_versions (ino, idx, max_version) VALUES (?1, ?2, ?4)" \
    " ON CONFLICT (ino, idx) DO UPDATE SET" \
    " max_version = GREATEST(chunk_versions.max_version, EXCLUDED.max_version))" \
    " INSERT INTO chunks (ino, idx, " CHUNK_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8," \
    " ?9, ?10, ?11, ?12) ON CONFLICT (ino, idx) DO UPDATE SET chunk_id = EXCLUDED.chunk_id," \
    " version = EXCLUDED.version, plain_len = EXCLUDED.plain_len," \
    " sealed_len = EXCLUDED.sealed_len, k = EXCLUDED.k, m = EXCLUDED.m," \
    " rotation = EXCLUDED.rotation, sums = EXCLUDED.sums, pack = EXCLUDED.pack," \
    " pack_offs = EXCLUDED.pack_offs"

/* The chunks at or after ?2 to the deletion queue, in idx order. */
#define PG_CHUNKS_TO_GC \
    "WITH gone AS (DELETE FROM chunks WHERE ino = ?1 AND idx >= ?2 RETURNING idx, " \
    CHUNK_COLS "), queued AS (INSERT INTO gc_queue (" CHUNK_COLS ", queued) SELECT " \
    CHUNK_COLS ", ?3::bigint FROM gone ORDER BY idx)"

/* The change feed (meta_shared.h): one trigger function for inodes and
 * dirents; the origin is the session the connection named (meta_set_origin),
 * and every change also wakes the listening mounts (one NOTIFY per
 * transaction: identical notifications are folded). */
#define PG_CHANGE_TRIGGERS \
    "CREATE FUNCTION pactfs_changed() RETURNS trigger LANGUAGE plpgsql AS $f$" \
    " DECLARE r RECORD; p BIGINT := 0; BEGIN" \
    " IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;" \
    " IF TG_TABLE_NAME = 'dirents' THEN p := r.parent; END IF;" \
    " INSERT INTO changes (ino, parent, origin, at) VALUES (r.ino, p," \
    " COALESCE(NULLIF(current_setting('pactfs.origin', true), ''), '0')::bigint," \
    " CAST(extract(epoch FROM clock_timestamp()) AS BIGINT));" \
    " PERFORM pg_notify('" PG_CHANNEL "', '');" \
    " RETURN NULL; END $f$;" \
    "CREATE TRIGGER inodes_changed AFTER INSERT OR UPDATE OR DELETE ON inodes" \
    " FOR EACH ROW EXECUTE FUNCTION pactfs_changed();" \
    "CREATE TRIGGER dirents_changed AFTER INSERT OR UPDATE OR DELETE ON dirents" \
    " FOR EACH ROW EXECUTE FUNCTION pactfs_changed();"

static const struct msql_dialect pg_dialect = {
    .blob = "BYTEA",
    .integer = "BIGINT",
    .id = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    .id_always = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    .ino_id = "BIGINT PRIMARY KEY DEFAULT nextval('inode_seq')",
    .ino_seq = "CREATE SEQUENCE inode_seq;",
    .new_ino = "COALESCE(?1::bigint, nextval('inode_seq'))",
    .empty_blob = "''::bytea",
    .now = "CAST(extract(epoch FROM clock_timestamp()) AS BIGINT)",
    .ino_set = "SELECT CAST(value AS BIGINT) FROM json_array_elements_text(CAST(?1 AS json))",
    .change_triggers = PG_CHANGE_TRIGGERS,
    .inode_lock = "SELECT ino FROM inodes WHERE ino = ?1 FOR UPDATE",
    /* held to commit; READ COMMITTED: the statements after it see what the
     * previous holder committed (its head, its folder states) */
    .head_lock = "SELECT pg_advisory_xact_lock(" HEAD_LOCK_KEY ")",
    .set_origin = "SET pactfs.origin = ",
    .notify = "NOTIFY " PG_CHANNEL,
    .begin = "BEGIN",
    .migration_begin = "BEGIN; SELECT pg_advisory_xact_lock(" MIGRATION_LOCK_KEY ")",
    .has_version_table = "SELECT count(*) FROM pg_tables WHERE"
                         " schemaname = current_schema() AND tablename = 'schema_version'",
    .table_count = "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
    /* an explicit number (the root) moves the sequence past it, so a fresh
     * number never collides with it or with any number used before */
    .inode_seq_advance = "SELECT setval('inode_seq', GREATEST(?1::bigint,"
                         " (SELECT last_value FROM inode_seq)))",
    .chunk_put = PG_CHUNK_PUT,
    .chunk_truncate = PG_CHUNKS_TO_GC " SELECT 1",
    .inode_delete = PG_CHUNKS_TO_GC ","
                    " v AS (DELETE FROM chunk_versions WHERE ino = ?1),"
                    " s AS (DELETE FROM symlinks WHERE ino = ?1),"
                    " x AS (DELETE FROM xattrs WHERE ino = ?1)"
                    " DELETE FROM inodes WHERE ino = ?1",
};

static const struct msql_driver pg_driver = {
    .name = "postgresql",
    .dialect = &pg_dialect,
    .prepare = pg_prepare,
    .finish = pg_finish,
    .bind_i64 = pg_bind_i64,
    .bind_null = pg_bind_null,
    .bind_blob = pg_bind_blob,
    .bind_text = pg_bind_text,
    .step = pg_step,
    .changes = pg_changes,
    .col_i64 = pg_col_i64,
    .col_blob = pg_col_blob,
    .exec = pg_exec,
    .txn_state = pg_txn_state,
    .describe = pg_describe,
    .wait_notify = pg_wait_notify,
    .close = pg_close,
};

/* ---- opening ---- */

/* A network connection must be TLS with the server certificate verified:
 * no silent fallback to plaintext (a unix socket stays on this host). */
static int check_transport(struct pg *s)
{
    const char *host = PQhost(s->conn);
    PQconninfoOption *opts;
    int verified = 0;

    if (host && host[0] == '/')
        return 0;
    opts = PQconninfo(s->conn);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "sslmode") == 0 && o->val &&
            strcmp(o->val, "verify-full") == 0)
            verified = 1;
    PQconninfoFree(opts);
    if (!PQsslInUse(s->conn) || !verified)
        return pfs_err(-EPROTO, "PostgreSQL connection to %s is not TLS with a verified "
                       "certificate; add sslmode=verify-full and sslrootcert=CA to the "
                       "conninfo", host ? host : "?");
    return 0;
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static int pg_connect(struct pg *s, const char *conninfo)
{
    char why[512];

    /* Before libpq connects, so no password goes over an unverified link. */
    if (conf_pg_conninfo_check(conninfo, why, sizeof why) < 0)
        return pfs_err(-EINVAL, "the PostgreSQL conninfo is refused: %s", why);
    s->conn = PQconnectdb(conninfo);
    if (!s->conn)
        return pfs_err(-ENOMEM, "out of memory connecting to PostgreSQL");
    /* server notices are not errors; keep them off the daemon's stderr */
    PQsetNoticeProcessor(s->conn, ignore_notice, NULL);
    if (PQstatus(s->conn) != CONNECTION_OK)
        return pfs_err(-EIO, "cannot connect to the PostgreSQL metadata store: %s",
                       PQerrorMessage(s->conn));
    return check_transport(s);
}

int meta_open_pg(const char *conninfo, int create, struct meta **out)
{
    struct pg *s = calloc(1, sizeof *s);
    int rc;

    (void)create;     /* the server's schema is made by migration either way */
    if (!s)
        return pfs_err(-ENOMEM, "out of memory opening the PostgreSQL metadata store");
    rc = pg_connect(s, conninfo);
    if (rc) {
        pg_close(s);
        return rc;
    }
    return meta_sql_open(&pg_driver, s, out);
}
