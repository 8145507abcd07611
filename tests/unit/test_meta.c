#include "config.h"

/* The metadata store, one set of cases run against every backend: SQLite
 * always, PostgreSQL when PACTFS_TEST_PG names a throwaway server (each case
 * gets its own schema there, dropped afterwards). */

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "meta.h"
#include "meta_shared.h"
#include "meta_sql.h"
#include "tap.h"

/* ---- backends under test ---- */

struct backend {
    const char *name;
    const char *skip;                           /* non-NULL: why it is skipped */
    int (*fresh)(struct meta **out);            /* empty store */
    int (*reopen)(struct meta **out);           /* the same store again */
    int (*raw_exec)(const char *sql);           /* behind the library's back */
    long (*raw_count)(const char *sql, const void *blob, size_t len);  /* $1 = blob */
    void (*cleanup)(void);
};

static const struct backend *B;

/* -- SQLite -- */

static char sq_dir[64];
static char sq_path[128];

static int sq_fresh(struct meta **out)
{
    snprintf(sq_dir, sizeof sq_dir, "/tmp/pactfs-meta-XXXXXX");
    if (!mkdtemp(sq_dir))
        return -errno;
    snprintf(sq_path, sizeof sq_path, "%s/meta.db", sq_dir);
    return meta_open_sqlite(sq_path, 1, out);
}

static int sq_reopen(struct meta **out)
{
    return meta_open_sqlite(sq_path, 0, out);
}

static int sq_raw_exec(const char *sql)
{
    sqlite3 *db;
    int rc = sqlite3_open(sq_path, &db);

    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        printf("# raw sqlite: %s\n", sqlite3_errmsg(db));
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -EIO;
}

static long sq_raw_count(const char *sql, const void *blob, size_t len)
{
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    long n = -1;

    if (sqlite3_open(sq_path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_bind_blob(st, 1, blob, (int)len, SQLITE_STATIC) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void sq_cleanup(void)
{
    char cmd[160];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", sq_dir);
    if (sq_dir[0] && system(cmd) != 0)
        printf("# could not remove %s\n", sq_dir);
    sq_dir[0] = '\0';
}

/* -- PostgreSQL -- */

static char pg_schema[64];
static char pg_conninfo[1024];
static int pg_case;

static PGconn *pg_raw_connect(void)
{
    PGconn *c = PQconnectdb(pg_conninfo[0] ? pg_conninfo : getenv("PACTFS_TEST_PG"));

    if (PQstatus(c) != CONNECTION_OK)
        printf("# raw pg: %s", PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

static int pg_raw_exec(const char *sql)
{
    PGconn *c = pg_raw_connect();
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

    if (!ok)
        printf("# raw pg: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -EIO;
}

static long pg_raw_count(const char *sql, const void *blob, size_t len)
{
    PGconn *c = pg_raw_connect();
    const char *vals[1] = { blob };
    int lens[1] = { (int)len }, fmts[1] = { 1 };
    PGresult *r = PQexecParams(c, sql, 1, NULL, vals, lens, fmts, 0);
    long n = -1;

    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        n = atol(PQgetvalue(r, 0, 0));
    else
        printf("# raw pg: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return n;
}

static int pg_fresh(struct meta **out)
{
    char sql[200];
    int rc;

    pg_conninfo[0] = '\0';
    snprintf(pg_schema, sizeof pg_schema, "pactfs_test_%d_%d", (int)getpid(), ++pg_case);
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s",
             pg_schema, pg_schema);
    rc = pg_raw_exec(sql);
    if (rc)
        return rc;
    snprintf(pg_conninfo, sizeof pg_conninfo, "%s options='-c search_path=%s'",
             getenv("PACTFS_TEST_PG"), pg_schema);
    return meta_open_pg(pg_conninfo, 1, out);
}

static int pg_reopen(struct meta **out)
{
    return meta_open_pg(pg_conninfo, 0, out);
}

static void pg_cleanup(void)
{
    char sql[128];

    if (!pg_schema[0])
        return;
    pg_conninfo[0] = '\0';
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE", pg_schema);
    pg_raw_exec(sql);
    pg_schema[0] = '\0';
}

static struct backend backends[] = {
    { "sqlite", NULL, sq_fresh, sq_reopen, sq_raw_exec, sq_raw_count, sq_cleanup },
    { "pg", NULL, pg_fresh, pg_reopen, pg_raw_exec, pg_raw_count, pg_cleanup },
};

/* ---- fixtures ---- */

static struct meta *open_fresh(void)
{
    struct meta *m = NULL;
    int rc = B->fresh(&m);

    if (rc)
        printf("# open %s: %d %s\n", B->name, rc, pfs_err_msg());
    return m;
}

static void finish(struct meta *m)
{
    meta_close(m);
    B->cleanup();
}

static uint64_t make_inode(struct meta *m, uint32_t mode, uint32_t nlink)
{
    struct meta_inode i = { .mode = mode, .nlink = nlink, .uid = 1000, .gid = 1000 };

    return meta_inode_create(m, &i) == 0 ? i.ino : 0;
}

static void make_ref(struct chunk_ref *r, uint8_t tag, uint64_t version)
{
    memset(r, 0, sizeof *r);
    memset(r->chunk_id, tag, CHUNK_ID_LEN);
    r->version = version;
    r->plain_len = 1000 + tag;
    r->sealed_len = 1044 + tag;
    r->k = 2;
    r->m = 1;
    r->rotation = tag % 3;
    for (int f = 0; f < 3; f++)
        memset(r->sums[f], tag + f, FRAG_SUM_LEN);
}

static int ref_equal(const struct chunk_ref *a, const struct chunk_ref *b)
{
    return memcmp(a->chunk_id, b->chunk_id, CHUNK_ID_LEN) == 0 && a->version == b->version &&
           a->plain_len == b->plain_len && a->sealed_len == b->sealed_len && a->k == b->k &&
           a->m == b->m && a->rotation == b->rotation &&
           memcmp(a->sums, b->sums, ((size_t)a->k + a->m) * FRAG_SUM_LEN) == 0 &&
           a->packed == b->packed && (!a->packed ||
           (memcmp(a->pack, b->pack, PACK_ID_LEN) == 0 &&
            memcmp(a->pack_offs, b->pack_offs, ((size_t)a->k + a->m) * 4) == 0));
}

static void make_packed_ref(struct chunk_ref *r, uint8_t tag, uint64_t version,
                            uint8_t pack_tag)
{
    make_ref(r, tag, version);
    r->packed = 1;
    memset(r->pack, pack_tag, PACK_ID_LEN);
    r->pack_offs[0] = 0;
    r->pack_offs[1] = 70000;
    r->pack_offs[2] = 0xfffffff0u;   /* all 32 bits survive */
}

/* Collects deletion-queue entries. */
struct gc_seen {
    unsigned n;
    uint64_t ids[16];
    struct chunk_ref refs[16];
};

static int gc_collect(void *arg, uint64_t id, const struct chunk_ref *r)
{
    struct gc_seen *g = arg;

    if (g->n < 16) {
        g->ids[g->n] = id;
        g->refs[g->n] = *r;
    }
    g->n++;
    return 0;
}

/* ---- cases ---- */

static void test_params_and_reopen(void)
{
    struct meta *m = open_fresh();
    uint8_t *v = NULL;
    size_t n = 0;

    REQUIRE(m);
    CHECK_EQ_INT(meta_param_get(m, "absent", &v, &n), -ENOENT);
    CHECK_EQ_INT(meta_param_set(m, "salt", "abc", 3), 0);
    CHECK_EQ_INT(meta_param_set(m, "salt", "xyz1", 4), 0);      /* replace */
    CHECK_EQ_INT(meta_param_set(m, "empty", "", 0), 0);
    CHECK_EQ_INT(meta_param_set(m, "", "a", 1), -EINVAL);
    meta_close(m);
    m = NULL;
    REQUIRE(B->reopen(&m) == 0);
    REQUIRE(meta_param_get(m, "salt", &v, &n) == 0);
    CHECK(n == 4 && memcmp(v, "xyz1", 4) == 0);
    free(v);
    REQUIRE(meta_param_get(m, "empty", &v, &n) == 0);
    CHECK_EQ_INT(n, 0);
    free(v);
    finish(m);
}

static void test_transactions(void)
{
    struct meta *m = open_fresh();
    uint8_t *v = NULL;
    size_t n;

    REQUIRE(m);
    CHECK_EQ_INT(meta_commit(m), -EINVAL);
    CHECK_EQ_INT(meta_rollback(m), -EINVAL);
    REQUIRE(meta_begin(m) == 0);
    CHECK_EQ_INT(meta_begin(m), -EBUSY);                        /* no nesting */
    CHECK_EQ_INT(meta_param_set(m, "k", "rolled", 6), 0);
    CHECK_EQ_INT(make_inode(m, S_IFREG | 0644, 1) != 0, 1);
    CHECK_EQ_INT(meta_rollback(m), 0);
    CHECK_EQ_INT(meta_param_get(m, "k", &v, &n), -ENOENT);

    REQUIRE(meta_begin(m) == 0);
    CHECK_EQ_INT(meta_param_set(m, "k", "kept", 4), 0);
    /* a failed call inside a transaction does not poison it */
    CHECK_EQ_INT(meta_dirent_remove(m, 1, (const uint8_t *)"x", 1), -ENOENT);
    uint64_t ino = make_inode(m, S_IFREG | 0644, 1);
    struct chunk_ref r;
    make_ref(&r, 1, 1);
    CHECK_EQ_INT(meta_chunk_put(m, ino, 0, &r), 0);             /* savepoint inside txn */
    CHECK_EQ_INT(meta_commit(m), 0);
    meta_close(m);
    m = NULL;
    REQUIRE(B->reopen(&m) == 0);
    REQUIRE(meta_param_get(m, "k", &v, &n) == 0);
    CHECK(n == 4 && memcmp(v, "kept", 4) == 0);
    free(v);
    struct chunk_ref got;
    CHECK_EQ_INT(meta_chunk_get(m, ino, 0, &got), 0);
    CHECK(ref_equal(&got, &r));
    finish(m);
}

static int count_accounts(void *arg, const struct meta_account *a)
{
    (void)a;
    ++*(int *)arg;
    return 0;
}

static void test_accounts(void)
{
    struct meta *m = open_fresh();
    struct meta_account a = { .roles = ROLE_USER, .created = 1700000000 };
    struct meta_account b = { .roles = ROLE_SYSADMIN };
    struct meta_account got;
    int n = 0;

    REQUIRE(m);
    strcpy(a.name, "alice");
    a.pubkey = (uint8_t *)"PUBKEY";
    a.pubkey_len = 6;
    a.sealed_key = (uint8_t *)"SEALED!";
    a.sealed_key_len = 7;
    REQUIRE(meta_account_add(m, &a) == 0);
    CHECK(a.id > 0);
    strcpy(b.name, "alice");
    CHECK_EQ_INT(meta_account_add(m, &b), -EEXIST);
    strcpy(b.name, "bob");
    CHECK_EQ_INT(meta_account_add(m, &b), 0);                   /* empty blobs */
    CHECK(b.id != a.id);

    REQUIRE(meta_account_get(m, a.id, &got) == 0);
    CHECK(strcmp(got.name, "alice") == 0 && got.roles == ROLE_USER &&
          got.created == 1700000000 && !got.disabled);
    CHECK(got.pubkey_len == 6 && memcmp(got.pubkey, "PUBKEY", 6) == 0);
    CHECK(got.sealed_key_len == 7 && memcmp(got.sealed_key, "SEALED!", 7) == 0);
    meta_account_clear(&got);

    a.disabled = 1;
    a.roles = ROLE_USER | ROLE_AUDITOR;
    strcpy(a.name, "alice2");
    CHECK_EQ_INT(meta_account_update(m, &a), 0);
    CHECK_EQ_INT(meta_account_get_by_name(m, "alice", &got), -ENOENT);
    REQUIRE(meta_account_get_by_name(m, "alice2", &got) == 0);
    CHECK(got.id == a.id && got.disabled && got.roles == (ROLE_USER | ROLE_AUDITOR));
    meta_account_clear(&got);
    strcpy(a.name, "bob");
    CHECK_EQ_INT(meta_account_update(m, &a), -EEXIST);
    a.id = 9999;
    CHECK_EQ_INT(meta_account_update(m, &a), -ENOENT);
    CHECK_EQ_INT(meta_account_get(m, 9999, &got), -ENOENT);
    CHECK_EQ_INT(meta_account_list(m, count_accounts, &n), 0);
    CHECK_EQ_INT(n, 2);
    finish(m);
}

struct env_seen {
    int n;
    uint64_t ids[8];
    uint32_t versions[8];
};

static int env_collect(void *arg, const struct meta_envelope *e)
{
    struct env_seen *s = arg;

    if (s->n < 8) {
        s->ids[s->n] = e->folder_id * 1000 + e->account_id;
        s->versions[s->n] = e->key_version;
    }
    s->n++;
    return 0;
}

static int folder_count(void *arg, const struct meta_folder *f)
{
    (void)f;
    ++*(int *)arg;
    return 0;
}

static void test_folders_envelopes(void)
{
    struct meta *m = open_fresh();
    struct meta_account a = { .roles = ROLE_USER }, b = { .roles = ROLE_DATAADMIN };
    struct meta_folder f = { .root_ino = 5, .key_version = 1, .created = 42 }, g = { 0 }, got;
    struct meta_envelope e = { 0 }, eg;
    struct env_seen seen = { 0 };
    int nf = 0;

    REQUIRE(m);
    strcpy(a.name, "a");
    strcpy(b.name, "b");
    REQUIRE(meta_account_add(m, &a) == 0 && meta_account_add(m, &b) == 0);
    REQUIRE(meta_folder_add(m, &f) == 0 && meta_folder_add(m, &g) == 0);
    CHECK(f.id > 0 && g.id != f.id);
    REQUIRE(meta_folder_get(m, f.id, &got) == 0);
    CHECK(got.root_ino == 5 && got.key_version == 1 && got.created == 42);
    f.key_version = 2;
    CHECK_EQ_INT(meta_folder_update(m, &f), 0);
    REQUIRE(meta_folder_get(m, f.id, &got) == 0);
    CHECK_EQ_INT(got.key_version, 2);
    CHECK_EQ_INT(meta_folder_get(m, 777, &got), -ENOENT);
    CHECK_EQ_INT(meta_folder_list(m, folder_count, &nf), 0);
    CHECK_EQ_INT(nf, 2);

    e.folder_id = f.id;
    e.account_id = a.id;
    e.key_version = 1;
    e.rights = RIGHT_READ;
    e.granted_by = b.id;
    e.wrapped = (uint8_t *)"ENV1";
    e.wrapped_len = 4;
    CHECK_EQ_INT(meta_envelope_put(m, &e), 0);
    e.rights = RIGHT_READ | RIGHT_WRITE;                         /* replace */
    e.wrapped = (uint8_t *)"ENV1b";
    e.wrapped_len = 5;
    CHECK_EQ_INT(meta_envelope_put(m, &e), 0);
    e.key_version = 2;
    CHECK_EQ_INT(meta_envelope_put(m, &e), 0);
    e.folder_id = g.id;
    e.key_version = 1;
    CHECK_EQ_INT(meta_envelope_put(m, &e), 0);
    e.account_id = b.id;
    CHECK_EQ_INT(meta_envelope_put(m, &e), 0);
    e.account_id = 4242;                                         /* unknown account */
    CHECK(meta_envelope_put(m, &e) < 0);

    REQUIRE(meta_envelope_get(m, f.id, a.id, 1, &eg) == 0);
    CHECK(eg.rights == (RIGHT_READ | RIGHT_WRITE) && eg.granted_by == b.id);
    CHECK(eg.wrapped_len == 5 && memcmp(eg.wrapped, "ENV1b", 5) == 0);
    meta_envelope_clear(&eg);
    CHECK(eg.wrapped == NULL);
    CHECK_EQ_INT(meta_envelope_get(m, f.id, a.id, 3, &eg), -ENOENT);

    CHECK_EQ_INT(meta_envelope_list_account(m, a.id, env_collect, &seen), 0);
    CHECK_EQ_INT(seen.n, 3);
    CHECK(seen.versions[0] == 1 && seen.versions[1] == 2);
    memset(&seen, 0, sizeof seen);
    CHECK_EQ_INT(meta_envelope_list_folder(m, g.id, env_collect, &seen), 0);
    CHECK_EQ_INT(seen.n, 2);

    CHECK_EQ_INT(meta_envelope_delete(m, f.id, a.id), 0);       /* all key versions */
    CHECK_EQ_INT(meta_envelope_get(m, f.id, a.id, 2, &eg), -ENOENT);
    CHECK_EQ_INT(meta_envelope_delete(m, f.id, a.id), -ENOENT);
    memset(&seen, 0, sizeof seen);
    CHECK_EQ_INT(meta_envelope_list_account(m, a.id, env_collect, &seen), 0);
    CHECK_EQ_INT(seen.n, 1);
    finish(m);
}

static int orphan_collect(void *arg, uint64_t ino)
{
    struct gc_seen *s = arg;

    if (s->n < 16)
        s->ids[s->n] = ino;
    s->n++;
    return 0;
}

static void test_inodes(void)
{
    struct meta *m = open_fresh();
    struct meta_inode root = { .ino = META_ROOT_INO, .mode = S_IFDIR | 0755, .nlink = 2 };
    struct meta_inode f = { .folder_id = 3, .mode = S_IFREG | 0600, .uid = 7, .gid = 8,
                            .nlink = 1, .size = 5ull << 32, .rdev = 0, .atime_ns = -5,
                            .mtime_ns = 1700000000123456789ll, .ctime_ns = 9,
                            .key_version = 4, .wrapped_dek_len = 60 };
    struct meta_inode got;
    struct gc_seen orph = { 0 };
    uint8_t *t = NULL;
    size_t tl = 0;

    REQUIRE(m);
    REQUIRE(meta_inode_create(m, &root) == 0);
    CHECK_EQ_INT(root.ino, META_ROOT_INO);
    CHECK_EQ_INT(meta_inode_create(m, &root), -EEXIST);
    memset(f.wrapped_dek, 0xd5, 60);
    REQUIRE(meta_inode_create(m, &f) == 0);
    CHECK(f.ino > META_ROOT_INO);
    REQUIRE(meta_inode_get(m, f.ino, &got) == 0);
    CHECK(got.folder_id == 3 && got.mode == (S_IFREG | 0600) && got.uid == 7 && got.gid == 8);
    CHECK(got.size == 5ull << 32 && got.atime_ns == -5 &&
          got.mtime_ns == 1700000000123456789ll && got.key_version == 4);
    CHECK(got.wrapped_dek_len == 60 && memcmp(got.wrapped_dek, f.wrapped_dek, 60) == 0);
    f.size = 12;
    f.nlink = 0;
    CHECK_EQ_INT(meta_inode_update(m, &f), 0);
    REQUIRE(meta_inode_get(m, f.ino, &got) == 0);
    CHECK(got.size == 12 && got.nlink == 0);
    f.wrapped_dek_len = 97;
    CHECK_EQ_INT(meta_inode_update(m, &f), -EINVAL);
    got.ino = 999999;
    CHECK_EQ_INT(meta_inode_update(m, &got), -ENOENT);

    CHECK_EQ_INT(meta_inode_list_orphans(m, orphan_collect, &orph), 0);
    CHECK(orph.n == 1 && orph.ids[0] == f.ino);

    uint64_t lnk = make_inode(m, S_IFLNK | 0777, 1);
    REQUIRE(lnk);
    CHECK_EQ_INT(meta_symlink_get(m, lnk, &t, &tl), -ENOENT);
    CHECK_EQ_INT(meta_symlink_set(m, lnk, (const uint8_t *)"TARGET", 6), 0);
    REQUIRE(meta_symlink_get(m, lnk, &t, &tl) == 0);
    CHECK(tl == 6 && memcmp(t, "TARGET", 6) == 0);
    free(t);
    CHECK_EQ_INT(meta_xattr_set(m, lnk, (const uint8_t *)"n", 1, (const uint8_t *)"v", 1, 0), 0);

    /* deleting the highest inode must not let its number come back */
    uint64_t deleted = lnk;
    CHECK_EQ_INT(meta_inode_delete(m, lnk), 0);
    CHECK_EQ_INT(meta_inode_get(m, lnk, &got), -ENOENT);
    CHECK_EQ_INT(meta_symlink_get(m, lnk, &t, &tl), -ENOENT);
    CHECK_EQ_INT(meta_inode_delete(m, lnk), -ENOENT);
    meta_close(m);
    m = NULL;
    REQUIRE(B->reopen(&m) == 0);
    uint64_t fresh = make_inode(m, S_IFREG | 0644, 1);
    CHECK(fresh > deleted);
    finish(m);
}

struct dirent_seen {
    int n;
    int stop_after;
    uint64_t cookies[16];
    char names[16][16];
    struct meta *m;
    int reentered;
};

static int dirent_collect(void *arg, const struct meta_dirent *d)
{
    struct dirent_seen *s = arg;

    if (s->n < 16) {
        s->cookies[s->n] = d->cookie;
        snprintf(s->names[s->n], sizeof s->names[0], "%.*s", (int)d->name_len, d->name);
    }
    s->n++;
    if (s->m) {     /* re-enter the store from inside the callback */
        uint64_t ino, count;
        struct dirent_seen inner = { 0 };

        if (meta_dirent_lookup(s->m, META_ROOT_INO, d->name, d->name_len, &ino) == 0 &&
            ino == d->ino && meta_dirent_count(s->m, META_ROOT_INO, &count) == 0 &&
            meta_dirent_list(s->m, META_ROOT_INO, 0, dirent_collect, &inner) == 0 &&
            inner.n == (int)count)
            s->reentered++;
    }
    return s->stop_after && s->n >= s->stop_after;
}

static void test_dirents(void)
{
    struct meta *m = open_fresh();
    struct meta_inode root = { .ino = META_ROOT_INO, .mode = S_IFDIR | 0755, .nlink = 2 };
    const char *names[] = { "zeta", "alpha", "mid", "beta" };
    uint64_t inos[4], ino, count;
    struct dirent_seen s = { 0 };

    REQUIRE(m);
    REQUIRE(meta_inode_create(m, &root) == 0);
    for (int i = 0; i < 4; i++) {
        inos[i] = make_inode(m, S_IFREG | 0644, 1);
        REQUIRE(inos[i]);
        CHECK_EQ_INT(meta_dirent_add(m, META_ROOT_INO, (const uint8_t *)names[i],
                                     strlen(names[i]), inos[i], S_IFREG, NULL, 0), 0);
    }
    CHECK_EQ_INT(meta_dirent_add(m, META_ROOT_INO, (const uint8_t *)"mid", 3, inos[0],
                                 S_IFREG, NULL, 0), -EEXIST);
    CHECK_EQ_INT(meta_dirent_add(m, META_ROOT_INO, (const uint8_t *)"ghost", 5, 987654,
                                 S_IFREG, NULL, 0), -ENOENT);
    CHECK_EQ_INT(meta_dirent_add(m, META_ROOT_INO, (const uint8_t *)"", 0, inos[0], S_IFREG, NULL, 0),
                 -ENAMETOOLONG);
    REQUIRE(meta_dirent_lookup(m, META_ROOT_INO, (const uint8_t *)"mid", 3, &ino) == 0);
    CHECK_EQ_INT(ino, inos[2]);
    CHECK_EQ_INT(meta_dirent_lookup(m, META_ROOT_INO, (const uint8_t *)"MID", 3, &ino),
                 -ENOENT);
    CHECK_EQ_INT(meta_dirent_lookup(m, inos[0], (const uint8_t *)"mid", 3, &ino), -ENOENT);

    /* insertion (cookie) order, not name order */
    CHECK_EQ_INT(meta_dirent_list(m, META_ROOT_INO, 0, dirent_collect, &s), 0);
    REQUIRE(s.n == 4);
    for (int i = 0; i < 4; i++)
        CHECK(strcmp(s.names[i], names[i]) == 0);
    CHECK(s.cookies[0] > 0 && s.cookies[0] < s.cookies[1] && s.cookies[2] < s.cookies[3]);

    /* stop after two, resume from the second cookie */
    struct dirent_seen part = { .stop_after = 2 };
    CHECK_EQ_INT(meta_dirent_list(m, META_ROOT_INO, 0, dirent_collect, &part), 0);
    CHECK_EQ_INT(part.n, 2);
    struct dirent_seen rest = { 0 };
    CHECK_EQ_INT(meta_dirent_list(m, META_ROOT_INO, part.cookies[1], dirent_collect, &rest), 0);
    CHECK(rest.n == 2 && strcmp(rest.names[0], "mid") == 0 &&
          strcmp(rest.names[1], "beta") == 0);

    /* removing an entry keeps the other cookies stable */
    CHECK_EQ_INT(meta_dirent_remove(m, META_ROOT_INO, (const uint8_t *)"alpha", 5), 0);
    CHECK_EQ_INT(meta_dirent_remove(m, META_ROOT_INO, (const uint8_t *)"alpha", 5), -ENOENT);
    struct dirent_seen after = { 0 };
    CHECK_EQ_INT(meta_dirent_list(m, META_ROOT_INO, s.cookies[1], dirent_collect, &after), 0);
    CHECK(after.n == 2 && after.cookies[0] == s.cookies[2]);
    CHECK_EQ_INT(meta_dirent_count(m, META_ROOT_INO, &count), 0);
    CHECK_EQ_INT(count, 3);

    /* a callback may call back into the store */
    struct dirent_seen re = { .m = m };
    CHECK_EQ_INT(meta_dirent_list(m, META_ROOT_INO, 0, dirent_collect, &re), 0);
    CHECK_EQ_INT(re.reentered, 3);

    /* an inode still named by an entry cannot be deleted */
    CHECK_EQ_INT(meta_inode_delete(m, inos[2]), -EBUSY);
    REQUIRE(meta_dirent_lookup(m, META_ROOT_INO, (const uint8_t *)"mid", 3, &ino) == 0);
    finish(m);
}

static void test_name_bytes_stored_as_given(void)
{
    struct meta *m = open_fresh();
    struct meta_inode root = { .ino = META_ROOT_INO, .mode = S_IFDIR | 0755, .nlink = 2 };
    const uint8_t marker[] = "PACTFS-MARKER\0\xff\x01binary";
    size_t mlen = sizeof marker - 1;
    uint64_t ino;

    REQUIRE(m);
    REQUIRE(meta_inode_create(m, &root) == 0);
    ino = make_inode(m, S_IFREG | 0644, 1);
    REQUIRE(meta_dirent_add(m, META_ROOT_INO, marker, mlen, ino, S_IFREG, NULL, 0) == 0);
    REQUIRE(meta_xattr_set(m, ino, marker, mlen, marker, mlen, 0) == 0);
    meta_close(m);
    /* exactly these bytes in the name columns: no transformation, no plain copy */
    CHECK_EQ_INT(B->raw_count("SELECT count(*) FROM dirents WHERE name = $1", marker, mlen), 1);
    CHECK_EQ_INT(B->raw_count("SELECT count(*) FROM xattrs WHERE name = $1 AND value = $1",
                              marker, mlen), 1);
    CHECK_EQ_INT(B->raw_count("SELECT count(*) FROM dirents WHERE name = $1", marker, 13), 0);
    B->cleanup();
}

struct chunk_seen {
    int n;
    uint64_t inos[16], idxs[16];
};

static int chunk_collect(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    struct chunk_seen *s = arg;

    (void)r;
    if (s->n < 16) {
        s->inos[s->n] = ino;
        s->idxs[s->n] = idx;
    }
    s->n++;
    return 0;
}

static void test_chunks_and_gc(void)
{
    struct meta *m = open_fresh();
    struct chunk_ref r1, r2, r3, r4, got;
    struct gc_seen gc = { 0 };
    uint64_t a, b, v;

    REQUIRE(m);
    a = make_inode(m, S_IFREG | 0644, 1);
    b = make_inode(m, S_IFREG | 0644, 1);
    REQUIRE(a && b);
    CHECK_EQ_INT(meta_chunk_get(m, a, 0, &got), -ENOENT);
    CHECK_EQ_INT(meta_chunk_max_version(m, a, 0, &v), 0);
    CHECK_EQ_INT(v, 0);
    make_ref(&r1, 1, 1);
    make_ref(&r2, 2, 2);
    make_ref(&r3, 3, 1);
    make_ref(&r4, 4, 1);
    r4.k = 4;
    r4.m = 2;
    for (int f = 3; f < 6; f++)
        memset(r4.sums[f], 0x40 + f, FRAG_SUM_LEN);
    CHECK_EQ_INT(meta_chunk_put(m, a, 0, &r1), 0);
    CHECK_EQ_INT(meta_chunk_put(m, a, 1, &r3), 0);
    CHECK_EQ_INT(meta_chunk_put(m, b, 7, &r4), 0);
    CHECK_EQ_INT(meta_chunk_put(m, 999999, 0, &r1), -ENOENT);   /* no such inode */
    REQUIRE(meta_chunk_get(m, b, 7, &got) == 0);
    CHECK(ref_equal(&got, &r4));
    CHECK_EQ_INT(meta_gc_list(m, 0, gc_collect, &gc), 0);
    CHECK_EQ_INT(gc.n, 0);

    /* replace: the old ref goes to the queue, the new one is served */
    CHECK_EQ_INT(meta_chunk_put(m, a, 0, &r2), 0);
    REQUIRE(meta_chunk_get(m, a, 0, &got) == 0);
    CHECK(ref_equal(&got, &r2));
    CHECK_EQ_INT(meta_gc_list(m, 0, gc_collect, &gc), 0);
    REQUIRE(gc.n == 1);
    CHECK(ref_equal(&gc.refs[0], &r1));
    /* a version is never reused */
    CHECK_EQ_INT(meta_chunk_put(m, a, 0, &r2), -EINVAL);
    CHECK_EQ_INT(meta_chunk_max_version(m, a, 0, &v), 0);
    CHECK_EQ_INT(v, 2);

    /* truncate from 0: both chunks of a queued, max version kept */
    CHECK_EQ_INT(meta_chunk_truncate(m, a, 0), 0);
    CHECK_EQ_INT(meta_chunk_get(m, a, 0, &got), -ENOENT);
    CHECK_EQ_INT(meta_chunk_get(m, a, 1, &got), -ENOENT);
    memset(&gc, 0, sizeof gc);
    CHECK_EQ_INT(meta_gc_list(m, 0, gc_collect, &gc), 0);
    REQUIRE(gc.n == 3);
    CHECK(ref_equal(&gc.refs[1], &r2) && ref_equal(&gc.refs[2], &r3));
    CHECK_EQ_INT(meta_chunk_max_version(m, a, 0, &v), 0);
    CHECK_EQ_INT(v, 2);
    CHECK_EQ_INT(meta_chunk_put(m, a, 0, &r1), -EINVAL);         /* version 1 again */
    r1.version = 3;
    CHECK_EQ_INT(meta_chunk_put(m, a, 0, &r1), 0);
    CHECK_EQ_INT(meta_chunk_max_version(m, a, 0, &v), 0);
    CHECK_EQ_INT(v, 3);

    /* a truncate past the end touches nothing */
    CHECK_EQ_INT(meta_chunk_truncate(m, a, 5), 0);
    struct chunk_seen all = { 0 }, one = { 0 };
    CHECK_EQ_INT(meta_chunk_list(m, 0, chunk_collect, &all), 0);
    CHECK_EQ_INT(all.n, 2);
    CHECK(all.inos[0] == a && all.idxs[0] == 0 && all.inos[1] == b && all.idxs[1] == 7);
    CHECK_EQ_INT(meta_chunk_list(m, b, chunk_collect, &one), 0);
    CHECK(one.n == 1 && one.idxs[0] == 7);

    /* limit, done */
    memset(&gc, 0, sizeof gc);
    CHECK_EQ_INT(meta_gc_list(m, 2, gc_collect, &gc), 0);
    REQUIRE(gc.n == 2);
    CHECK_EQ_INT(meta_gc_done(m, gc.ids[0]), 0);
    CHECK_EQ_INT(meta_gc_done(m, gc.ids[0]), -ENOENT);
    memset(&gc, 0, sizeof gc);
    CHECK_EQ_INT(meta_gc_list(m, 0, gc_collect, &gc), 0);
    CHECK_EQ_INT(gc.n, 2);

    /* deleting the inode queues its chunk */
    CHECK_EQ_INT(meta_inode_delete(m, b), 0);
    memset(&gc, 0, sizeof gc);
    CHECK_EQ_INT(meta_gc_list(m, 0, gc_collect, &gc), 0);
    REQUIRE(gc.n == 3);
    CHECK(ref_equal(&gc.refs[2], &r4));
    CHECK_EQ_INT(meta_chunk_get(m, b, 7, &got), -ENOENT);

    /* refs with impossible coding are refused before they are stored */
    make_ref(&r1, 9, 10);
    r1.k = 10;
    r1.m = 7;
    CHECK_EQ_INT(meta_chunk_put(m, a, 3, &r1), -EINVAL);
    finish(m);
}

static int xattr_count(void *arg, const uint8_t *name, size_t nlen)
{
    (void)name;
    (void)nlen;
    ++*(int *)arg;
    return 0;
}

/* meta_inode_get_chunks: the row and its records, and both from ONE
 * snapshot: a commit made through another connection while the records
 * are being handed out is not seen by that read (the per-file commitment
 * relies on it: a row and records that disagree are then tampering, never
 * a race). */
struct snap_seen {
    unsigned n;
    uint64_t idx[8];
    struct chunk_ref refs[8];
    struct meta *other;        /* commits through it at the first record */
    uint64_t ino;
    int other_rc;
};

static int snap_collect(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    struct snap_seen *s = arg;
    struct meta_inode mi;

    if (ino != s->ino || s->n >= 8)
        return -EINVAL;
    s->idx[s->n] = idx;
    s->refs[s->n++] = *r;
    if (s->other && s->n == 1) {
        /* another workstation's commit: drops chunk 3, changes the size */
        s->other_rc = meta_begin(s->other);
        if (s->other_rc == 0)
            s->other_rc = meta_chunk_truncate(s->other, ino, 2);
        if (s->other_rc == 0)
            s->other_rc = meta_inode_get(s->other, ino, &mi);
        mi.size = 2222;
        if (s->other_rc == 0)
            s->other_rc = meta_inode_update(s->other, &mi);
        if (s->other_rc == 0)
            s->other_rc = meta_commit(s->other);
    }
    return 0;
}

/* Many inodes deleted at once (an rm -rf's retired inodes): each one's
 * chunks queued for deletion, its chunk versions, symlink target and xattrs
 * gone with it, one already gone skipped; none deleted while one is still
 * named by an entry. */
static void test_inodes_delete_many(void)
{
    struct meta *m = open_fresh();
    struct chunk_ref r1, r2, got;
    struct gc_seen gc = { 0 };
    struct meta_inode mi;
    uint8_t *v = NULL;
    size_t vl = 0;
    uint64_t ino;

    REQUIRE(m);
    uint64_t a = make_inode(m, S_IFREG | 0644, 0), b = make_inode(m, S_IFLNK | 0777, 0),
             c = make_inode(m, S_IFREG | 0644, 0), keep = make_inode(m, S_IFREG | 0644, 1),
             named = make_inode(m, S_IFREG | 0644, 1), dir = make_inode(m, S_IFDIR | 0755, 2);
    REQUIRE(a && b && c && keep && named && dir);
    make_ref(&r1, 1, 1);
    make_ref(&r2, 2, 1);
    CHECK_EQ_INT(meta_chunk_put(m, a, 0, &r1), 0);
    CHECK_EQ_INT(meta_chunk_put(m, a, 1, &r2), 0);
    CHECK_EQ_INT(meta_chunk_put(m, keep, 0, &r1), 0);
    CHECK_EQ_INT(meta_symlink_set(m, b, (const uint8_t *)"TARGET", 6), 0);
    CHECK_EQ_INT(meta_xattr_set(m, c, (const uint8_t *)"n", 1, (const uint8_t *)"v", 1, 0), 0);
    CHECK_EQ_INT(meta_dirent_add(m, dir, (const uint8_t *)"named", 5, named, S_IFREG | 0644,
                                 NULL, 0), 0);

    uint64_t gone[] = { a, b, c, 987654321 };   /* the last never existed */
    CHECK_EQ_INT(meta_begin(m), 0);
    CHECK_EQ_INT(meta_inodes_delete(m, gone, 4), 0);
    CHECK_EQ_INT(meta_commit(m), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(meta_inode_get(m, gone[i], &mi), -ENOENT);
    CHECK_EQ_INT(meta_chunk_get(m, a, 0, &got), -ENOENT);
    CHECK_EQ_INT(meta_symlink_get(m, b, &v, &vl), -ENOENT);
    free(v);
    v = NULL;
    CHECK_EQ_INT(meta_xattr_get(m, c, (const uint8_t *)"n", 1, &v, &vl), -ENODATA);
    free(v);
    CHECK_EQ_INT(meta_gc_list(m, 0, gc_collect, &gc), 0);
    REQUIRE(gc.n == 2);   /* a's two chunks, in order */
    CHECK(ref_equal(&gc.refs[0], &r1) && ref_equal(&gc.refs[1], &r2));
    REQUIRE(meta_inode_get(m, keep, &mi) == 0);   /* not in the set: untouched */
    CHECK_EQ_INT(meta_chunk_get(m, keep, 0, &got), 0);

    /* one of the set still named: -EBUSY, and the rolled-back set is whole */
    uint64_t busy[] = { keep, named }, parent[] = { dir };
    CHECK_EQ_INT(meta_begin(m), 0);
    CHECK_EQ_INT(meta_inodes_delete(m, busy, 2), -EBUSY);
    CHECK_EQ_INT(meta_rollback(m), 0);
    CHECK_EQ_INT(meta_begin(m), 0);
    CHECK_EQ_INT(meta_inodes_delete(m, parent, 1), -EBUSY);   /* a parent of an entry */
    CHECK_EQ_INT(meta_rollback(m), 0);
    CHECK_EQ_INT(meta_inode_get(m, keep, &mi), 0);
    CHECK_EQ_INT(meta_inode_get(m, named, &mi), 0);
    CHECK_EQ_INT(meta_inode_get(m, dir, &mi), 0);
    CHECK_EQ_INT(meta_dirent_lookup(m, dir, (const uint8_t *)"named", 5, &ino), 0);
    finish(m);
}

static void test_inode_with_chunks_one_snapshot(void)
{
    struct meta *m = open_fresh(), *m2 = NULL;
    struct chunk_ref r0, r1, r3;
    struct meta_inode mi, got;
    struct snap_seen seen = { 0 };
    uint64_t a, b;

    REQUIRE(m);
    a = make_inode(m, S_IFREG | 0644, 1);
    b = make_inode(m, S_IFREG | 0644, 1);
    REQUIRE(a && b);
    REQUIRE(meta_inode_get(m, a, &mi) == 0);
    mi.size = 1111;
    mi.commitment_len = 3;
    memcpy(mi.commitment, "abc", 3);
    REQUIRE(meta_inode_update(m, &mi) == 0);
    make_ref(&r0, 10, 1);
    make_ref(&r1, 11, 1);
    make_ref(&r3, 13, 1);
    REQUIRE(meta_chunk_put(m, a, 3, &r3) == 0);   /* out of order on purpose */
    REQUIRE(meta_chunk_put(m, a, 0, &r0) == 0);
    REQUIRE(meta_chunk_put(m, a, 1, &r1) == 0);

    /* the row and every record, in index order */
    seen.ino = a;
    CHECK_EQ_INT(meta_inode_get_chunks(m, a, &got, snap_collect, &seen), 0);
    CHECK_EQ_INT(got.ino, a);
    CHECK_EQ_INT(got.size, 1111);
    CHECK(got.commitment_len == 3 && memcmp(got.commitment, "abc", 3) == 0);
    REQUIRE(seen.n == 3);
    CHECK(seen.idx[0] == 0 && seen.idx[1] == 1 && seen.idx[2] == 3);
    CHECK(ref_equal(&seen.refs[0], &r0) && ref_equal(&seen.refs[1], &r1) &&
          ref_equal(&seen.refs[2], &r3));
    /* a file without records: the row, no record; no inode: -ENOENT */
    memset(&seen, 0, sizeof seen);
    seen.ino = b;
    CHECK_EQ_INT(meta_inode_get_chunks(m, b, &got, snap_collect, &seen), 0);
    CHECK_EQ_INT(got.ino, b);
    CHECK_EQ_INT(seen.n, 0);
    CHECK_EQ_INT(meta_inode_get_chunks(m, 999999, &got, snap_collect, &seen), -ENOENT);

    /* a commit through a second connection in the middle of the read */
    REQUIRE(B->reopen(&m2) == 0);
    memset(&seen, 0, sizeof seen);
    seen.ino = a;
    seen.other = m2;
    CHECK_EQ_INT(meta_inode_get_chunks(m, a, &got, snap_collect, &seen), 0);
    CHECK_EQ_INT(seen.other_rc, 0);
    CHECK_EQ_INT(seen.n, 3);            /* chunk 3 was still there in the snapshot */
    CHECK_EQ_INT(got.size, 1111);       /* and the row is the one of that snapshot */
    /* the next read sees the commit, row and records together */
    memset(&seen, 0, sizeof seen);
    seen.ino = a;
    CHECK_EQ_INT(meta_inode_get_chunks(m, a, &got, snap_collect, &seen), 0);
    CHECK_EQ_INT(seen.n, 2);
    CHECK_EQ_INT(got.size, 2222);
    meta_close(m2);

    /* a malformed record is refused, not skipped */
    meta_close(m);
    REQUIRE(B->raw_exec("UPDATE chunks SET sums = substr(sums, 1, 10) WHERE idx = 1") == 0);
    REQUIRE(B->reopen(&m) == 0);
    memset(&seen, 0, sizeof seen);
    seen.ino = a;
    CHECK_EQ_INT(meta_inode_get_chunks(m, a, &got, snap_collect, &seen), -EBADMSG);
    finish(m);
}

static void test_xattrs(void)
{
    struct meta *m = open_fresh();
    const uint8_t *n1 = (const uint8_t *)"user.a", *n2 = (const uint8_t *)"user.b";
    uint8_t *v = NULL;
    size_t vl = 0;
    int count = 0;
    uint64_t ino;

    REQUIRE(m);
    ino = make_inode(m, S_IFREG | 0644, 1);
    CHECK_EQ_INT(meta_xattr_get(m, ino, n1, 6, &v, &vl), -ENODATA);
    CHECK_EQ_INT(meta_xattr_set(m, ino, n1, 6, (const uint8_t *)"1", 1, XATTR_REPLACE),
                 -ENODATA);
    CHECK_EQ_INT(meta_xattr_set(m, ino, n1, 6, (const uint8_t *)"1", 1, XATTR_CREATE), 0);
    CHECK_EQ_INT(meta_xattr_set(m, ino, n1, 6, (const uint8_t *)"2", 1, XATTR_CREATE),
                 -EEXIST);
    CHECK_EQ_INT(meta_xattr_set(m, ino, n1, 6, (const uint8_t *)"22", 2, XATTR_REPLACE), 0);
    CHECK_EQ_INT(meta_xattr_set(m, ino, n2, 6, (const uint8_t *)"", 0, 0), 0);
    CHECK_EQ_INT(meta_xattr_set(m, ino, n2, 6, (const uint8_t *)"x", 1,
                                XATTR_CREATE | XATTR_REPLACE), -EINVAL);
    REQUIRE(meta_xattr_get(m, ino, n1, 6, &v, &vl) == 0);
    CHECK(vl == 2 && memcmp(v, "22", 2) == 0);
    free(v);
    CHECK_EQ_INT(meta_xattr_list(m, ino, xattr_count, &count), 0);
    CHECK_EQ_INT(count, 2);
    CHECK_EQ_INT(meta_xattr_remove(m, ino, n1, 6), 0);
    CHECK_EQ_INT(meta_xattr_remove(m, ino, n1, 6), -ENODATA);
    count = 0;
    CHECK_EQ_INT(meta_xattr_list(m, ino, xattr_count, &count), 0);
    CHECK_EQ_INT(count, 1);
    CHECK_EQ_INT(meta_xattr_set(m, 999999, n1, 6, (const uint8_t *)"1", 1, 0), -ENOENT);
    finish(m);
}

static void test_stats(void)
{
    struct meta *m = open_fresh();
    struct meta_inode i = { .mode = S_IFREG | 0644, .nlink = 1, .size = 1000 };
    uint64_t inodes = 9, bytes = 9;

    REQUIRE(m);
    CHECK_EQ_INT(meta_stats(m, &inodes, &bytes), 0);
    CHECK(inodes == 0 && bytes == 0);
    REQUIRE(meta_inode_create(m, &i) == 0);
    i.ino = 0;
    i.size = 24;
    REQUIRE(meta_inode_create(m, &i) == 0);
    CHECK_EQ_INT(meta_stats(m, &inodes, &bytes), 0);
    /* bytes count what the chunks hold, not the sizes: both files are holes */
    CHECK(inodes == 2 && bytes == 0);
    struct chunk_ref r;
    make_ref(&r, 1, 1);
    r.plain_len = 1000;
    REQUIRE(meta_chunk_put(m, i.ino, 0, &r) == 0);
    make_ref(&r, 2, 1);
    r.plain_len = 24;
    REQUIRE(meta_chunk_put(m, i.ino, 3, &r) == 0);
    CHECK_EQ_INT(meta_stats(m, &inodes, &bytes), 0);
    CHECK(inodes == 2 && bytes == 1024);
    uint64_t held = 9;
    CHECK_EQ_INT(meta_chunk_bytes(m, i.ino, &held), 0);
    CHECK(held == 1024);
    CHECK_EQ_INT(meta_chunk_bytes(m, i.ino - 1, &held), 0);   /* the other file: a hole */
    CHECK(held == 0);
    REQUIRE(meta_chunk_truncate(m, i.ino, 1) == 0);   /* truncated away: not held */
    CHECK_EQ_INT(meta_stats(m, &inodes, &bytes), 0);
    CHECK(bytes == 1000);
    CHECK_EQ_INT(meta_chunk_bytes(m, i.ino, &held), 0);
    CHECK(held == 1000);
    finish(m);
}

static int corrupt_then_get(struct meta **m, const char *sql, uint64_t ino)
{
    struct chunk_ref got;

    meta_close(*m);
    *m = NULL;
    if (B->raw_exec(sql) != 0 || B->reopen(m) != 0)
        return -1;
    return meta_chunk_get(*m, ino, 0, &got);
}

static void test_corrupt_rows(void)
{
    struct meta *m = open_fresh();
    struct chunk_ref r;
    uint64_t ino;
    struct gc_seen gc = { 0 };

    REQUIRE(m);
    ino = make_inode(m, S_IFREG | 0644, 1);
    make_ref(&r, 5, 1);
    REQUIRE(meta_chunk_put(m, ino, 0, &r) == 0);
    CHECK_EQ_INT(corrupt_then_get(&m, "UPDATE chunks SET sums = substr(sums, 1, 95)", ino),
                 -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "altered") != NULL);
    CHECK_EQ_INT(corrupt_then_get(&m, "UPDATE chunks SET sums = sums || sums", ino),
                 -EBADMSG);
    CHECK_EQ_INT(corrupt_then_get(&m, "UPDATE chunks SET sums = substr(sums, 1, 96),"
                                  " chunk_id = substr(chunk_id, 1, 8)", ino), -EBADMSG);
    CHECK_EQ_INT(corrupt_then_get(&m, "UPDATE chunks SET chunk_id = chunk_id || chunk_id || chunk_id,"
                                  " k = 2", ino), -EBADMSG);
    CHECK_EQ_INT(corrupt_then_get(&m, "UPDATE chunks SET chunk_id = substr(chunk_id, 1, 16),"
                                  " k = 15, m = 5", ino), -EBADMSG);
    CHECK_EQ_INT(corrupt_then_get(&m, "UPDATE chunks SET k = 2, m = 1, rotation = 300", ino),
                 -EBADMSG);
    CHECK_EQ_INT(corrupt_then_get(&m, "UPDATE chunks SET rotation = 0", ino), 0);
    /* the deletion queue is read with the same checks */
    REQUIRE(meta_chunk_truncate(m, ino, 0) == 0);
    meta_close(m);
    m = NULL;
    REQUIRE(B->raw_exec("UPDATE gc_queue SET sums = substr(sums, 1, 10)") == 0);
    REQUIRE(B->reopen(&m) == 0);
    CHECK_EQ_INT(meta_gc_list(m, 0, gc_collect, &gc), -EBADMSG);
    CHECK_EQ_INT(gc.n, 0);
    finish(m);
}

static int list_free_pack(void *arg, const uint8_t *pack, size_t len)
{
    struct gc_seen *g = arg;

    if (len == PACK_ID_LEN && g->n < 16)
        memcpy(g->refs[g->n++].pack, pack, PACK_ID_LEN);
    return 0;
}

/* Schema 4: a packed chunk's pack id and fragment offsets round trip,
 * follow it into the deletion queue, and the pack reaches the free list
 * only once no record or queue entry names it. */
static void test_packs(void)
{
    struct meta *m = open_fresh();
    struct chunk_ref a, b, got;
    struct gc_seen gc = { 0 }, freed = { 0 };
    uint8_t pack[PACK_ID_LEN];
    int referenced = -1;
    uint64_t ino;

    REQUIRE(m);
    ino = make_inode(m, S_IFREG | 0644, 1);
    make_packed_ref(&a, 1, 1, 0xa5);
    make_packed_ref(&b, 2, 1, 0xa5);
    b.pack_offs[0] = 3000;
    memset(pack, 0xa5, sizeof pack);
    REQUIRE(meta_chunk_put(m, ino, 0, &a) == 0);
    REQUIRE(meta_chunk_put(m, ino, 1, &b) == 0);
    CHECK_EQ_INT(meta_chunk_get(m, ino, 0, &got), 0);
    CHECK(got.packed && ref_equal(&got, &a));
    CHECK_EQ_INT(meta_pack_referenced(m, pack, sizeof pack, &referenced), 0);
    CHECK_EQ_INT(referenced, 1);
    /* a release while chunks name the pack does nothing */
    CHECK_EQ_INT(meta_pack_release(m, pack, sizeof pack), 0);
    CHECK_EQ_INT(meta_free_packs_list(m, INT64_MAX, 0, list_free_pack, &freed), 0);
    CHECK_EQ_INT(freed.n, 0);
    /* chunk 0 replaced by a standalone version: its packed ref is queued */
    make_ref(&a, 3, 2);
    REQUIRE(meta_chunk_put(m, ino, 0, &a) == 0);
    REQUIRE(meta_chunk_truncate(m, ino, 1) == 0);
    CHECK_EQ_INT(meta_gc_list(m, 0, gc_collect, &gc), 0);
    REQUIRE(gc.n == 2);
    CHECK(gc.refs[0].packed && gc.refs[1].packed && gc.refs[1].pack_offs[0] == 3000);
    /* queue entries still name it */
    CHECK_EQ_INT(meta_pack_referenced(m, pack, sizeof pack, &referenced), 0);
    CHECK_EQ_INT(referenced, 1);
    CHECK_EQ_INT(meta_pack_release(m, pack, sizeof pack), 0);
    CHECK_EQ_INT(meta_free_packs_list(m, INT64_MAX, 0, list_free_pack, &freed), 0);
    CHECK_EQ_INT(freed.n, 0);
    for (unsigned i = 0; i < gc.n; i++)
        REQUIRE(meta_gc_done(m, gc.ids[i]) == 0);
    CHECK_EQ_INT(meta_pack_referenced(m, pack, sizeof pack, &referenced), 0);
    CHECK_EQ_INT(referenced, 0);
    CHECK_EQ_INT(meta_pack_release(m, pack, sizeof pack), 0);
    CHECK_EQ_INT(meta_pack_release(m, pack, sizeof pack), 0);   /* twice: one entry */
    CHECK_EQ_INT(meta_free_packs_list(m, INT64_MAX, 0, list_free_pack, &freed), 0);
    CHECK_EQ_INT(freed.n, 1);
    CHECK(memcmp(freed.refs[0].pack, pack, sizeof pack) == 0);
    freed.n = 0;   /* not yet on the list for long enough */
    CHECK_EQ_INT(meta_free_packs_list(m, (int64_t)time(NULL) - 3600, 0, list_free_pack,
                                      &freed), 0);
    CHECK_EQ_INT(freed.n, 0);
    CHECK_EQ_INT(meta_free_pack_delete(m, pack, sizeof pack), 0);
    CHECK_EQ_INT(meta_free_packs_list(m, INT64_MAX, 0, list_free_pack, &freed), 0);
    CHECK_EQ_INT(freed.n, 0);
    /* a pack column of the wrong size is refused as altered */
    make_packed_ref(&b, 4, 2, 0x5a);
    REQUIRE(meta_chunk_put(m, ino, 1, &b) == 0);
    CHECK_EQ_INT(corrupt_then_get(&m, "UPDATE chunks SET pack_offs = substr(pack_offs, 1, 8)"
                                  " WHERE idx = 1", ino), 0);   /* idx 0 is read: fine */
    REQUIRE(m);
    CHECK_EQ_INT(meta_chunk_get(m, ino, 1, &got), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "pack columns") != NULL);
    finish(m);
}

static void test_refuses_future_schema(void)
{
    struct meta *m = open_fresh();
    int rc;

    REQUIRE(m);
    meta_close(m);
    m = NULL;
    REQUIRE(B->raw_exec("UPDATE schema_version SET version = 99") == 0);
    rc = B->reopen(&m);
    CHECK_EQ_INT(rc, -EPROTONOSUPPORT);
    CHECK(strstr(pfs_err_msg(), "upgrade pactfs") != NULL);
    CHECK(m == NULL);
    if (rc == 0)
        meta_close(m);
    B->cleanup();
}

static void test_error_then_rollback(void)
{
    struct meta *m = open_fresh();
    struct meta_inode root = { .ino = META_ROOT_INO, .mode = S_IFDIR | 0755, .nlink = 2 };
    uint8_t *v = NULL;
    size_t n;

    REQUIRE(m);
    REQUIRE(meta_inode_create(m, &root) == 0);
    REQUIRE(meta_begin(m) == 0);
    CHECK_EQ_INT(meta_param_set(m, "half", "done", 4), 0);
    CHECK_EQ_INT(meta_dirent_add(m, META_ROOT_INO, (const uint8_t *)"n", 1, 424242, S_IFREG, NULL, 0),
                 -ENOENT);
    CHECK_EQ_INT(meta_rollback(m), 0);
    CHECK_EQ_INT(meta_param_get(m, "half", &v, &n), -ENOENT);
    /* the handle is usable again */
    CHECK_EQ_INT(meta_begin(m), 0);
    CHECK_EQ_INT(meta_param_set(m, "after", "ok", 2), 0);
    CHECK_EQ_INT(meta_commit(m), 0);
    REQUIRE(meta_param_get(m, "after", &v, &n) == 0);
    free(v);
    finish(m);
}

/* lookup + getattr is the filesystem's hot path: statements must be reused,
 * not re-prepared (a generous bound that still catches gross slowness). */
static void test_hot_path_speed(void)
{
    struct meta *m = open_fresh();
    struct meta_inode root = { .ino = META_ROOT_INO, .mode = S_IFDIR | 0755, .nlink = 2 };
    struct meta_inode got;
    struct timespec t0, t1;
    char name[16];
    uint64_t ino;
    int ok = 0;

    REQUIRE(m);
    REQUIRE(meta_inode_create(m, &root) == 0);
    REQUIRE(meta_begin(m) == 0);
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "n%03d", i);
        uint64_t c = make_inode(m, S_IFREG | 0644, 1);
        REQUIRE(meta_dirent_add(m, META_ROOT_INO, (const uint8_t *)name, 4, c, S_IFREG, NULL, 0) == 0);
    }
    REQUIRE(meta_commit(m) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "n%03d", i % 100);
        ok += meta_dirent_lookup(m, META_ROOT_INO, (const uint8_t *)name, 4, &ino) == 0 &&
              meta_inode_get(m, ino, &got) == 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("# %s: %.0f lookup+getattr per second\n", B->name, 5000 / secs);
    CHECK_EQ_INT(ok, 5000);
    CHECK(secs < 10.0);
    finish(m);
}

/* ---- SQLite only ---- */

static void test_sqlite_file_mode_and_open_flags(void)
{
    struct meta *m = NULL;
    struct stat st;
    char wal[160];
    mode_t old = umask(0);     /* even a permissive umask gives 0600 */

    REQUIRE(sq_fresh(&m) == 0);
    umask(old);
    CHECK_EQ_INT(meta_param_set(m, "x", "y", 1), 0);
    REQUIRE(stat(sq_path, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    snprintf(wal, sizeof wal, "%s-wal", sq_path);
    if (stat(wal, &st) == 0)
        CHECK_EQ_INT(st.st_mode & 0777, 0600);
    CHECK_EQ_INT(sq_raw_count("SELECT count(*) FROM pragma_journal_mode WHERE"
                              " journal_mode = 'wal' AND $1 IS NOT NULL", "", 0), 1);
    meta_close(m);
    m = NULL;
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none.db", sq_dir);
    CHECK_EQ_INT(meta_open_sqlite(missing, 0, &m), -ENOENT);
    CHECK(access(missing, F_OK) != 0);
    sq_cleanup();
}

/* Tables that grow with the vault: a statement may search them by an index,
 * never scan them whole, or a vault of many files gets slower per file
 * (a deletion once scanned every chunk record: the partial pack indexes were
 * not used).  SQLite only (EXPLAIN QUERY PLAN); the statements are the same
 * text on PostgreSQL, whose planner needs the same repeated conditions. */
static const char *const big_tables[] = {
    "inodes", "dirents", "chunks", "chunk_versions", "gc_queue", "xattrs", "symlinks",
    "free_packs", "changes", "holds", "locks",
};

/* Whole-table passes that are meant, each found by a piece of its text:
 * statistics and complete listings (fsck, statfs), orphan lists read
 * through a partial index that holds only orphans, the deletion queue read
 * from its head, and the per-session lock and hold tables at a session's
 * end (rows of live locks only). */
static int scan_meant(const char *sql)
{
    static const char *const meant[] = {
        "sum(", "count(",                               /* statfs, schema checks */
        "FROM chunks ORDER BY ino, idx",                /* fsck's full listing */
        "WHERE length(commitment) > 0 ORDER BY ino",     /* fsck, every file */
        "WHERE nlink = 0",                              /* partial index inodes_orphans */
        "FROM gc_queue ORDER BY id LIMIT",              /* the queue's head */
        "session NOT IN (SELECT id FROM sessions)",     /* reaping dead sessions */
        "DELETE FROM locks WHERE session = ?1",         /* a session's end */
        "FROM free_packs WHERE since <= ?1 ORDER BY since",
    };
    for (size_t i = 0; i < sizeof meant / sizeof meant[0]; i++)
        if (strstr(sql, meant[i]))
            return 1;
    return 0;
}

static void test_sqlite_statements_search_by_index(void)
{
    struct meta *m = NULL;
    sqlite3 *db = NULL;
    unsigned count = 0, checked = 0;

    REQUIRE(sq_fresh(&m) == 0);
    REQUIRE(sqlite3_open(sq_path, &db) == SQLITE_OK);
    meta_sql_statement(m, 0, &count);
    for (unsigned i = 0; i < count; i++) {
        const char *sql = meta_sql_statement(m, i, &count);
        char *eqp = NULL;
        sqlite3_stmt *st = NULL;
        if (!sql)
            continue;
        REQUIRE(asprintf(&eqp, "EXPLAIN QUERY PLAN %s", sql) > 0);
        int rc = sqlite3_prepare_v2(db, eqp, -1, &st, NULL);
        CHECK_EQ_INT(rc, SQLITE_OK);
        if (rc != SQLITE_OK)
            printf("# statement %u: %s\n#   %s\n", i, sqlite3_errmsg(db), sql);
        while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
            const char *d = (const char *)sqlite3_column_text(st, 3);
            for (size_t t = 0; d && t < sizeof big_tables / sizeof big_tables[0]; t++) {
                size_t n = strlen(big_tables[t]);
                if (strncmp(d, "SCAN ", 5) == 0 && strncmp(d + 5, big_tables[t], n) == 0 &&
                    (d[5 + n] == '\0' || d[5 + n] == ' ') && !scan_meant(sql)) {
                    printf("# statement %u scans %s whole: %s\n#   %s\n", i, big_tables[t], d, sql);
                    CHECK(0);
                }
            }
        }
        checked++;
        sqlite3_finalize(st);
        free(eqp);
    }
    CHECK(checked > 60);
    sqlite3_close(db);
    meta_close(m);
    sq_cleanup();
}

/* After a checkpoint the WAL restarts empty (journal_size_limit 0), so
 * later commits append fresh blocks rather than overwrite old ones. */
static void test_sqlite_wal_restarts_empty_after_checkpoint(void)
{
    struct meta *m = NULL;
    struct stat st;
    char wal[160];
    uint8_t value[3000];

    REQUIRE(sq_fresh(&m) == 0);
    REQUIRE(meta_set_deferred_sync(m, 1) == 0);
    memset(value, 0x5a, sizeof value);
    for (int t = 0; t < 60; t++) {   /* well over the 1,000-page checkpoint mark */
        REQUIRE(meta_begin(m) == 0);
        for (int i = 0; i < 30; i++) {
            uint64_t ino = make_inode(m, 0100644, 1);
            CHECK_EQ_INT(meta_xattr_set(m, ino, (const uint8_t *)"n", 1, value, sizeof value, 0), 0);
        }
        REQUIRE(meta_commit(m) == 0);
    }
    snprintf(wal, sizeof wal, "%s-wal", sq_path);
    REQUIRE(stat(wal, &st) == 0);
    CHECK(st.st_size > 4 << 20);
    CHECK_EQ_INT(meta_sync(m), 0);           /* syncs, then checkpoints */
    CHECK_EQ_INT(meta_param_set(m, "after", "checkpoint", 1), 0);   /* restarts the WAL */
    REQUIRE(stat(wal, &st) == 0);
    CHECK(st.st_size < 64 << 10);
    REQUIRE(meta_set_deferred_sync(m, 0) == 0);
    meta_close(m);
    sq_cleanup();
}

static void test_sqlite_migrates_empty_file(void)
{
    struct meta *m = NULL;
    int fd;

    snprintf(sq_dir, sizeof sq_dir, "/tmp/pactfs-meta-XXXXXX");
    REQUIRE(mkdtemp(sq_dir));
    snprintf(sq_path, sizeof sq_path, "%s/meta.db", sq_dir);
    fd = open(sq_path, O_CREAT | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    close(fd);
    REQUIRE(meta_open_sqlite(sq_path, 0, &m) == 0);
    CHECK_EQ_INT(make_inode(m, S_IFDIR | 0755, 2) > 0, 1);
    meta_close(m);
    CHECK_EQ_INT(sq_raw_count("SELECT version FROM schema_version WHERE $1 IS NOT NULL",
                              "", 0), META_SCHEMA_VERSION);
    long tables = sq_raw_count("SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                               " AND name IN ('params', 'accounts', 'folders', 'envelopes',"
                               " 'inodes', 'dirents', 'symlinks', 'xattrs', 'chunks',"
                               " 'chunk_versions', 'gc_queue') AND $1 IS NOT NULL", "", 0);
    CHECK_EQ_INT(tables, 11);
    sq_cleanup();
}

static void test_sqlite_refuses_foreign_database(void)
{
    struct meta *m = NULL;

    snprintf(sq_dir, sizeof sq_dir, "/tmp/pactfs-meta-XXXXXX");
    REQUIRE(mkdtemp(sq_dir));
    snprintf(sq_path, sizeof sq_path, "%s/other.db", sq_dir);
    REQUIRE(sq_raw_exec("CREATE TABLE something (x)") == 0);
    CHECK_EQ_INT(meta_open_sqlite(sq_path, 1, &m), -EINVAL);
    CHECK(strstr(pfs_err_msg(), "not a pactfs") != NULL);
    CHECK_EQ_INT(sq_raw_count("SELECT count(*) FROM sqlite_master WHERE $1 IS NOT NULL",
                              "", 0), 1);    /* left untouched */
    sq_cleanup();
}

/* The v1 schema exactly as the backends wrote it before the shared SQL layer
 * (meta_sql.c) existed: a store made then must open and work unchanged. */
static const char *const v1_sqlite_ddl =
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
    " rotation INTEGER NOT NULL, sums BLOB NOT NULL, queued INTEGER NOT NULL);";

static const char *const v1_pg_ddl =
    "CREATE TABLE params (key TEXT PRIMARY KEY, value BYTEA NOT NULL);"
    "CREATE TABLE accounts (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE, roles BIGINT NOT NULL, disabled BIGINT NOT NULL,"
    " pubkey BYTEA NOT NULL, sealed_key BYTEA NOT NULL, created BIGINT NOT NULL);"
    "CREATE TABLE folders (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    " root_ino BIGINT NOT NULL, key_version BIGINT NOT NULL, created BIGINT NOT NULL);"
    "CREATE TABLE envelopes (folder_id BIGINT NOT NULL REFERENCES folders(id),"
    " account_id BIGINT NOT NULL REFERENCES accounts(id), key_version BIGINT NOT NULL,"
    " rights BIGINT NOT NULL, granted_by BIGINT NOT NULL, wrapped BYTEA NOT NULL,"
    " PRIMARY KEY (folder_id, account_id, key_version));"
    "CREATE INDEX envelopes_by_account ON envelopes(account_id);"
    "CREATE SEQUENCE inode_seq;"
    "CREATE TABLE inodes (ino BIGINT PRIMARY KEY DEFAULT nextval('inode_seq'),"
    " folder_id BIGINT NOT NULL, mode BIGINT NOT NULL, uid BIGINT NOT NULL,"
    " gid BIGINT NOT NULL, nlink BIGINT NOT NULL, size BIGINT NOT NULL,"
    " rdev BIGINT NOT NULL, atime_ns BIGINT NOT NULL, mtime_ns BIGINT NOT NULL,"
    " ctime_ns BIGINT NOT NULL, key_version BIGINT NOT NULL, wrapped_dek BYTEA NOT NULL);"
    "CREATE INDEX inodes_orphans ON inodes(ino) WHERE nlink = 0;"
    "CREATE TABLE dirents (cookie BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " parent BIGINT NOT NULL REFERENCES inodes(ino), name BYTEA NOT NULL,"
    " ino BIGINT NOT NULL REFERENCES inodes(ino), mode BIGINT NOT NULL,"
    " UNIQUE (parent, name));"
    "CREATE INDEX dirents_by_parent ON dirents(parent, cookie);"
    "CREATE INDEX dirents_by_ino ON dirents(ino);"
    "CREATE TABLE symlinks (ino BIGINT PRIMARY KEY REFERENCES inodes(ino),"
    " target BYTEA NOT NULL);"
    "CREATE TABLE xattrs (ino BIGINT NOT NULL REFERENCES inodes(ino),"
    " name BYTEA NOT NULL, value BYTEA NOT NULL, PRIMARY KEY (ino, name));"
    "CREATE TABLE chunks (ino BIGINT NOT NULL REFERENCES inodes(ino),"
    " idx BIGINT NOT NULL, version BIGINT NOT NULL, chunk_id BYTEA NOT NULL,"
    " plain_len BIGINT NOT NULL, sealed_len BIGINT NOT NULL, k BIGINT NOT NULL,"
    " m BIGINT NOT NULL, rotation BIGINT NOT NULL, sums BYTEA NOT NULL,"
    " PRIMARY KEY (ino, idx));"
    "CREATE TABLE chunk_versions (ino BIGINT NOT NULL REFERENCES inodes(ino),"
    " idx BIGINT NOT NULL, max_version BIGINT NOT NULL, PRIMARY KEY (ino, idx));"
    "CREATE TABLE gc_queue (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " chunk_id BYTEA NOT NULL, version BIGINT NOT NULL, plain_len BIGINT NOT NULL,"
    " sealed_len BIGINT NOT NULL, k BIGINT NOT NULL, m BIGINT NOT NULL,"
    " rotation BIGINT NOT NULL, sums BYTEA NOT NULL, queued BIGINT NOT NULL);";

static void test_opens_v1_store_made_before_shared_layer(void)
{
    struct meta *m = open_fresh();
    struct meta_inode got, fresh = { .mode = S_IFREG | 0600, .nlink = 1 };
    struct chunk_ref r, back;
    uint64_t ino = 0, ver = 0;
    int sq = strcmp(B->name, "sqlite") == 0;
    char rows[1024];
    const char *drop = sq
        ? "DROP TABLE params; DROP TABLE envelopes; DROP TABLE accounts; DROP TABLE folders;"
          " DROP TABLE dirents; DROP TABLE symlinks; DROP TABLE xattrs; DROP TABLE chunks;"
          " DROP TABLE chunk_versions; DROP TABLE gc_queue; DROP TABLE inodes;"
          " DROP TABLE schema_version; DROP TABLE changes; DROP TABLE sessions;"
          " DROP TABLE holds; DROP TABLE locks; DROP TABLE free_packs;"
          " DELETE FROM sqlite_sequence;"
        : "DROP TABLE params, envelopes, accounts, folders, dirents, symlinks, xattrs, chunks,"
          " chunk_versions, gc_queue, inodes, schema_version, changes, sessions, holds,"
          " locks, free_packs CASCADE; DROP SEQUENCE inode_seq; DROP FUNCTION pactfs_changed();";

    REQUIRE(m);
    meta_close(m);
    m = NULL;
    REQUIRE(B->raw_exec(drop) == 0);
    REQUIRE(B->raw_exec(sq ? v1_sqlite_ddl : v1_pg_ddl) == 0);
    snprintf(rows, sizeof rows, "CREATE TABLE schema_version (version %s NOT NULL);"
             "INSERT INTO schema_version VALUES (1);"
             "INSERT INTO inodes VALUES (1, 0, 16877, 0, 0, 2, 0, 0, 1, 2, 3, 0, %s);"
             "INSERT INTO inodes VALUES (7, 1, 33188, 5, 6, 1, 42, 0, 4, 5, 6, 1, %s);"
             "INSERT INTO dirents (parent, name, ino, mode) VALUES (1, %s, 7, 32768);"
             "INSERT INTO chunk_versions VALUES (7, 0, 3);",
             sq ? "INTEGER" : "BIGINT", sq ? "x''" : "''::bytea",
             sq ? "x'0102'" : "'\\x0102'::bytea", sq ? "x'6e'" : "'\\x6e'::bytea");
    REQUIRE(B->raw_exec(rows) == 0);
    if (!sq)
        REQUIRE(B->raw_exec("SELECT setval('inode_seq', 7)") == 0);
    REQUIRE(B->reopen(&m) == 0);
    CHECK_EQ_INT(meta_dirent_lookup(m, 1, (const uint8_t *)"n", 1, &ino), 0);
    CHECK_EQ_INT((int)ino, 7);
    CHECK_EQ_INT(meta_inode_get(m, 7, &got), 0);
    CHECK_EQ_INT((int)got.size, 42);
    CHECK_EQ_INT((int)got.wrapped_dek_len, 2);
    CHECK_EQ_INT(meta_chunk_max_version(m, 7, 0, &ver), 0);
    CHECK_EQ_INT((int)ver, 3);
    make_ref(&r, 9, 4);
    CHECK_EQ_INT(meta_chunk_put(m, 7, 0, &r), 0);
    CHECK_EQ_INT(meta_chunk_get(m, 7, 0, &back), 0);
    CHECK(ref_equal(&r, &back));
    CHECK_EQ_INT(meta_inode_create(m, &fresh), 0);
    CHECK(fresh.ino > 7);
    /* 1 -> 2: the entry has an empty binding and the file no commitment
     * until pactfs-admin upgrade writes them */
    struct meta_dirent_rec rec;
    CHECK_EQ_INT(meta_dirent_find(m, 1, (const uint8_t *)"n", 1, &rec), 0);
    CHECK(rec.ino == 7 && rec.mode == 32768 && rec.bind_len == 0);
    CHECK_EQ_INT((int)got.commitment_len, 0);
    CHECK_EQ_INT(meta_dirent_set_bind(m, 1, (const uint8_t *)"n", 1, (const uint8_t *)"BIND", 4),
                 0);
    CHECK_EQ_INT(meta_dirent_set_bind(m, 1, (const uint8_t *)"x", 1, (const uint8_t *)"B", 1),
                 -ENOENT);
    CHECK_EQ_INT(meta_dirent_find(m, 1, (const uint8_t *)"n", 1, &rec), 0);
    CHECK(rec.bind_len == 4 && memcmp(rec.bind, "BIND", 4) == 0);
    memcpy(got.commitment, "COMMIT", 6);
    got.commitment_len = 6;
    CHECK_EQ_INT(meta_inode_update(m, &got), 0);
    CHECK_EQ_INT(meta_inode_get(m, 7, &got), 0);
    CHECK(got.commitment_len == 6 && memcmp(got.commitment, "COMMIT", 6) == 0);
    finish(m);
}

/* Bindings and commitments are stored as given, bounded, and listed. */
struct bind_seen {
    size_t n, len;
    uint8_t b[META_BIND_MAX];
};

static int bind_cb(void *arg, const struct meta_dirent *d)
{
    struct bind_seen *s = arg;
    s->n++;
    s->len = d->bind_len;
    if (d->bind_len <= sizeof s->b)
        memcpy(s->b, d->bind, d->bind_len);
    return 0;
}

static void test_bindings_and_commitments(void)
{
    struct meta *m = open_fresh();
    struct meta_inode got, f = { .mode = S_IFREG | 0600, .nlink = 1 };
    struct meta_dirent_rec rec;
    struct bind_seen seen = { 0 };
    uint8_t big[META_BIND_MAX + 1];

    REQUIRE(m);
    memset(big, 0xab, sizeof big);
    memset(f.commitment, 0x5c, META_COMMIT_MAX);
    f.commitment_len = META_COMMIT_MAX;
    REQUIRE(meta_inode_create(m, &f) == 0);
    CHECK_EQ_INT(meta_inode_get(m, f.ino, &got), 0);
    CHECK(got.commitment_len == META_COMMIT_MAX && got.commitment[63] == 0x5c);
    CHECK_EQ_INT(meta_dirent_add(m, META_ROOT_INO, (const uint8_t *)"e", 1, f.ino, f.mode, big,
                                 META_BIND_MAX), 0);
    CHECK_EQ_INT(meta_dirent_add(m, META_ROOT_INO, (const uint8_t *)"g", 1, f.ino, f.mode, big,
                                 sizeof big), -EINVAL);
    CHECK_EQ_INT(meta_dirent_find(m, META_ROOT_INO, (const uint8_t *)"e", 1, &rec), 0);
    CHECK(rec.ino == f.ino && rec.bind_len == META_BIND_MAX && rec.bind[0] == 0xab);
    CHECK_EQ_INT(meta_dirent_find(m, META_ROOT_INO, (const uint8_t *)"z", 1, &rec), -ENOENT);
    CHECK_EQ_INT(meta_dirent_list(m, META_ROOT_INO, 0, bind_cb, &seen), 0);
    CHECK(seen.n == 1 && seen.len == META_BIND_MAX && seen.b[5] == 0xab);
    meta_close(m);
    m = NULL;
    /* an oversized value planted by the database operator is a bad row */
    REQUIRE(B->raw_exec(strcmp(B->name, "sqlite") == 0
                        ? "UPDATE inodes SET commitment = zeroblob(65);"
                          " UPDATE dirents SET bind = zeroblob(65)"
                        : "UPDATE inodes SET commitment = decode(repeat('00', 65), 'hex');"
                          " UPDATE dirents SET bind = decode(repeat('00', 65), 'hex')") == 0);
    REQUIRE(B->reopen(&m) == 0);
    CHECK_EQ_INT(meta_inode_get(m, f.ino, &got), -EBADMSG);
    CHECK_EQ_INT(meta_dirent_find(m, META_ROOT_INO, (const uint8_t *)"e", 1, &rec), -EBADMSG);
    CHECK(meta_dirent_list(m, META_ROOT_INO, 0, bind_cb, &seen) < 0);
    finish(m);
}

/* meta_reseal (pactfs-admin rekey): each kind changes its row only while it
 * is exactly the old one; an entry keeps its readdir cookie. */
static int cookie_cb(void *arg, const struct meta_dirent *d)
{
    uint64_t *c = arg;
    if (d->ino == c[1] && !c[0])
        c[0] = d->cookie;
    return 0;
}

#define U (const uint8_t *)
static void test_reseal_compare_and_swap(void)
{
    struct meta *m = open_fresh();
    struct meta_inode f = { .mode = S_IFREG | 0600, .nlink = 1 };
    struct meta_inode l = { .mode = S_IFLNK | 0777, .nlink = 1 };
    struct meta_dirent_rec rec;
    uint64_t ino, cookie[2] = { 0 }, cookie2[2] = { 0 };
    uint8_t *val = NULL;
    size_t vlen = 0;

    REQUIRE(m);
    REQUIRE(meta_inode_create(m, &f) == 0);
    REQUIRE(meta_inode_create(m, &l) == 0);
    REQUIRE(meta_dirent_add(m, META_ROOT_INO, U "old", 3, f.ino, f.mode, U "B1", 2) == 0);
    REQUIRE(meta_dirent_add(m, META_ROOT_INO, U "other", 5, l.ino, l.mode, U "B9", 2) == 0);
    cookie[1] = cookie2[1] = f.ino;
    REQUIRE(meta_dirent_list(m, META_ROOT_INO, 0, cookie_cb, cookie) == 0);
    REQUIRE(meta_symlink_set(m, l.ino, U "T1", 2) == 0);
    REQUIRE(meta_xattr_set(m, f.ino, U "x1", 2, U "V1", 2, 0) == 0);

    struct meta_reseal d = { .kind = META_RESEAL_DIRENT, .owner = META_ROOT_INO, .ino = f.ino,
                             .old_name = U "old", .old_name_len = 3, .old_val = U "B1",
                             .old_val_len = 2, .new_name = U "new", .new_name_len = 3,
                             .new_val = U "B2", .new_val_len = 2 };
    /* not the row verified: another child, another binding */
    d.ino = l.ino;
    CHECK_EQ_INT(meta_reseal(m, &d), -ENOENT);
    d.ino = f.ino;
    d.old_val = U "BX";
    CHECK_EQ_INT(meta_reseal(m, &d), -ENOENT);
    d.old_val = U "B1";
    CHECK_EQ_INT(meta_dirent_lookup(m, META_ROOT_INO, U "old", 3, &ino), 0);
    CHECK_EQ_INT(meta_reseal(m, &d), 0);
    CHECK_EQ_INT(meta_dirent_lookup(m, META_ROOT_INO, U "old", 3, &ino), -ENOENT);
    CHECK_EQ_INT(meta_dirent_find(m, META_ROOT_INO, U "new", 3, &rec), 0);
    CHECK(rec.ino == f.ino && rec.bind_len == 2 && memcmp(rec.bind, "B2", 2) == 0);
    CHECK_EQ_INT(meta_dirent_list(m, META_ROOT_INO, 0, cookie_cb, cookie2), 0);
    CHECK(cookie[0] && cookie2[0] == cookie[0]);   /* same readdir position */
    CHECK_EQ_INT(meta_reseal(m, &d), -ENOENT);       /* done once only */

    struct meta_reseal s = { .kind = META_RESEAL_SYMLINK, .owner = l.ino, .old_val = U "TX",
                             .old_val_len = 2, .new_val = U "T2", .new_val_len = 2 };
    CHECK_EQ_INT(meta_reseal(m, &s), -ENOENT);
    s.old_val = U "T1";
    CHECK_EQ_INT(meta_reseal(m, &s), 0);
    CHECK_EQ_INT(meta_symlink_get(m, l.ino, &val, &vlen), 0);
    CHECK(vlen == 2 && memcmp(val, "T2", 2) == 0);
    free(val);

    struct meta_reseal x = { .kind = META_RESEAL_XATTR, .owner = f.ino, .old_name = U "x1",
                             .old_name_len = 2, .old_val = U "VX", .old_val_len = 2,
                             .new_name = U "x2", .new_name_len = 2, .new_val = U "V2",
                             .new_val_len = 2 };
    CHECK_EQ_INT(meta_reseal(m, &x), -ENOENT);       /* a value set meanwhile wins */
    x.old_val = U "V1";
    CHECK_EQ_INT(meta_reseal(m, &x), 0);
    CHECK_EQ_INT(meta_xattr_get(m, f.ino, U "x1", 2, &val, &vlen), -ENODATA);
    CHECK_EQ_INT(meta_xattr_get(m, f.ino, U "x2", 2, &val, &vlen), 0);
    CHECK(vlen == 2 && memcmp(val, "V2", 2) == 0);
    free(val);
    finish(m);
}
#undef U

/* An edited SQLite file can hold any type in any column: a value of the
 * wrong type is a bad row, never silently converted; an empty account name
 * (an empty blob, read back as a NULL pointer) is rejected too. */
static void test_sqlite_rejects_mistyped_columns(void)
{
    struct meta_account a = { .name = "alice", .roles = ROLE_USER };
    struct meta_inode got;
    struct meta *m = open_fresh();
    uint64_t ino;

    REQUIRE(m);
    ino = make_inode(m, S_IFREG | 0644, 1);
    REQUIRE(meta_account_add(m, &a) == 0);
    meta_close(m);
    m = NULL;
    REQUIRE(B->raw_exec("UPDATE inodes SET size = 'big'; UPDATE accounts SET name = x''") == 0);
    REQUIRE(B->reopen(&m) == 0);
    CHECK_EQ_INT(meta_inode_get(m, ino, &got), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "altered") != NULL);
    CHECK_EQ_INT(meta_account_get(m, a.id, &a), -EBADMSG);
    finish(m);
}

/* Several workstations (meta_shared.h): sessions with leases on the
 * database's clock, reaped when a workstation stops renewing; the change
 * feed written by triggers (PostgreSQL) with the writer's origin and a
 * notification to listening connections; the commit's row lock. */
struct feed_seen {
    size_t n;
    struct meta_change c[8];
};

static int feed_cb(void *arg, const struct meta_change *c)
{
    struct feed_seen *f = arg;
    if (f->n < 8)
        f->c[f->n] = *c;
    f->n++;
    return 0;
}

static void test_sessions_and_change_feed(void)
{
    struct meta *m = open_fresh(), *m2 = NULL;
    uint64_t s1 = 0, s2 = 0, n = 9, last = 0, ino;
    struct feed_seen seen = { 0 };
    int pg = strcmp(B->name, "pg") == 0;
    char sql[128];

    REQUIRE(m);
    REQUIRE(B->reopen(&m2) == 0);
    CHECK_EQ_INT(meta_session_open(m, 1, "ws1", 30, &s1), 0);
    CHECK_EQ_INT(meta_session_open(m2, 2, "ws2", 30, &s2), 0);
    CHECK(s1 && s2 && s1 != s2);
    CHECK_EQ_INT(meta_session_others(m, s1, &n), 0);
    CHECK(n == 1);
    /* ws2 crashed: its lease lapses, ws1 reaps it; ws2 finds out at renewal */
    snprintf(sql, sizeof sql, "UPDATE sessions SET expires = 0 WHERE id = %llu",
             (unsigned long long)s2);
    REQUIRE(B->raw_exec(sql) == 0);
    CHECK_EQ_INT(meta_session_others(m, s1, &n), 0);
    CHECK(n == 0);
    CHECK_EQ_INT(meta_session_reap(m), 0);
    CHECK_EQ_INT(meta_session_renew(m2, s2, 30), -ESTALE);
    CHECK_EQ_INT(meta_session_renew(m, s1, 30), 0);

    CHECK_EQ_INT(meta_change_last(m, &last), 0);
    CHECK_EQ_INT(meta_change_wait(m2, 0), 0);          /* starts listening */
    CHECK_EQ_INT(meta_set_origin(m, s1), 0);
    ino = make_inode(m, S_IFREG | 0600, 1);
    REQUIRE(ino);
    CHECK_EQ_INT(meta_dirent_add(m, META_ROOT_INO, (const uint8_t *)"f", 1, ino,
                                 S_IFREG | 0600, NULL, 0), 0);
    CHECK_EQ_INT(meta_change_wait(m2, 3000), pg ? 1 : 0);
    CHECK_EQ_INT(meta_change_list(m2, last, 100, feed_cb, &seen), 0);
    if (pg) {
        /* the inode row, then the entry naming its directory */
        CHECK(seen.n == 2);
        CHECK(seen.c[0].seq > last && seen.c[0].ino == ino && seen.c[0].parent == 0 &&
              seen.c[0].origin == s1);
        CHECK(seen.c[1].seq > seen.c[0].seq && seen.c[1].ino == ino &&
              seen.c[1].parent == META_ROOT_INO);
        CHECK_EQ_INT(meta_change_last(m2, &last), 0);
        CHECK(last == seen.c[1].seq);
        /* old changes are pruned */
        REQUIRE(B->raw_exec("UPDATE changes SET at = 0") == 0);
        CHECK_EQ_INT(meta_change_prune(m2, 600), 0);
        seen.n = 0;
        CHECK_EQ_INT(meta_change_list(m2, 0, 100, feed_cb, &seen), 0);
        CHECK(seen.n == 0);
    } else {
        CHECK(seen.n == 0);   /* SQLite: no feed (one machine, mount_peers) */
    }
    CHECK_EQ_INT(meta_inode_lock(m, ino), -EINVAL);   /* outside a transaction */
    REQUIRE(meta_begin(m) == 0);
    CHECK_EQ_INT(meta_inode_lock(m, ino), 0);
    CHECK_EQ_INT(meta_inode_lock(m, ino + 1000), -ENOENT);
    CHECK_EQ_INT(meta_commit(m), 0);
    CHECK_EQ_INT(meta_session_close(m, s1), 0);
    CHECK_EQ_INT(meta_session_renew(m, s1, 30), -ESTALE);
    meta_close(m2);
    finish(m);
}

/* One lock attempt as the mount makes it: 1 conflict, 0 taken. */
static int lock_try(struct meta *m, struct meta_lock *l, struct meta_lock *c)
{
    int r = meta_begin(m);
    if (r == 0)
        r = meta_inode_lock(m, l->ino);
    if (r == 0 && l->type != F_UNLCK)
        r = meta_lock_conflict(m, l, c);
    if (r == 0)
        r = meta_lock_set(m, l);
    if (r == 0)
        return meta_commit(m);
    meta_rollback(m);
    return r;
}

/* A fresh store with two live sessions and one regular file. */
static struct meta *two_sessions_and_a_file(uint64_t *s1, uint64_t *s2, uint64_t *ino)
{
    struct meta *m = open_fresh();

    if (!m || meta_session_open(m, 1, "ws1", 30, s1) || meta_session_open(m, 2, "ws2", 30, s2))
        return NULL;
    *ino = make_inode(m, S_IFREG | 0600, 1);
    return *ino ? m : NULL;
}

/* The lease of session id runs out. */
static int expire_session(uint64_t id)
{
    char sql[128];

    snprintf(sql, sizeof sql, "UPDATE sessions SET expires = 0 WHERE id = %llu",
             (unsigned long long)id);
    return B->raw_exec(sql);
}

static void test_advisory_locks(void)
{
    uint64_t s1 = 0, s2 = 0, ino = 0;
    struct meta *m = two_sessions_and_a_file(&s1, &s2, &ino);
    struct meta_lock c;

    REQUIRE(m);
    struct meta_lock a = { .ino = ino, .session = s1, .owner = 7, .kind = META_LOCK_POSIX,
                           .type = F_WRLCK, .start = 0, .end = 99, .pid = 11 };
    struct meta_lock b = { .ino = ino, .session = s2, .owner = 7, .kind = META_LOCK_POSIX,
                           .type = F_RDLCK, .start = 50, .end = 50 };
    CHECK_EQ_INT(lock_try(m, &a, &c), 0);
    CHECK_EQ_INT(lock_try(m, &b, &c), 1);   /* same owner id, other session */
    CHECK(c.type == F_WRLCK && c.start == 0 && c.end == 99 && c.pid == 11 && c.session == s1);
    /* flock locks never meet POSIX ones */
    struct meta_lock fb = b;
    fb.kind = META_LOCK_FLOCK;
    fb.type = F_WRLCK;
    CHECK_EQ_INT(lock_try(m, &fb, &c), 0);
    /* a gives up 40..59: 0..39 and 60..99 stay */
    struct meta_lock un = a;
    un.type = F_UNLCK;
    un.start = 40;
    un.end = 59;
    CHECK_EQ_INT(lock_try(m, &un, &c), 0);
    CHECK_EQ_INT(lock_try(m, &b, &c), 0);
    b.start = 39;
    CHECK_EQ_INT(lock_try(m, &b, &c), 1);
    CHECK(c.start == 0 && c.end == 39);
    b.start = b.end = 60;
    CHECK_EQ_INT(lock_try(m, &b, &c), 1);
    CHECK(c.start == 60 && c.end == 99);
    /* read locks share; a's own new lock replaces its old ones in range */
    a.type = F_RDLCK;
    a.start = 0;
    a.end = INT64_MAX;
    CHECK_EQ_INT(lock_try(m, &a, &c), 0);
    CHECK_EQ_INT(lock_try(m, &b, &c), 0);
    /* a session whose lease ran out holds nothing */
    struct meta_lock w = { .ino = ino, .session = s2, .owner = 8, .kind = META_LOCK_POSIX,
                           .type = F_WRLCK, .start = 0, .end = INT64_MAX };
    CHECK_EQ_INT(lock_try(m, &w, &c), 1);
    REQUIRE(expire_session(s1) == 0);
    CHECK_EQ_INT(lock_try(m, &w, &c), 1);   /* b's own read lock, another owner */
    CHECK_EQ_INT(meta_lock_release(m, s2, ino, 7, META_LOCK_POSIX), 0);
    CHECK_EQ_INT(lock_try(m, &w, &c), 0);
    CHECK_EQ_INT(meta_session_reap(m), 0);
    CHECK_EQ_INT(meta_session_close(m, s2), 0);
    w.session = 0;
    w.owner = 1;
    CHECK_EQ_INT(meta_begin(m), 0);
    CHECK_EQ_INT(meta_lock_conflict(m, &w, &c), 0);   /* every lock went with its session */
    CHECK_EQ_INT(meta_commit(m), 0);
    finish(m);
}

static int ino_count(void *arg, uint64_t ino)
{
    (void)ino;
    (*(int *)arg)++;
    return 0;
}

static void test_open_file_holds(void)
{
    uint64_t s1 = 0, s2 = 0, ino = 0;
    struct meta *m = two_sessions_and_a_file(&s1, &s2, &ino);
    struct meta_inode mi;
    int n = 0;

    REQUIRE(m);
    CHECK_EQ_INT(meta_hold_set(m, s2, ino, 1), 0);
    CHECK_EQ_INT(meta_hold_set(m, s2, ino, 1), 0);   /* idempotent */
    CHECK_EQ_INT(meta_orphan_unheld(m, s1, ino), 0);   /* still linked */
    REQUIRE(meta_inode_get(m, ino, &mi) == 0);
    mi.nlink = 0;
    REQUIRE(meta_inode_update(m, &mi) == 0);
    CHECK_EQ_INT(meta_orphan_unheld(m, s1, ino), 0);   /* ws2 has it open */
    CHECK_EQ_INT(meta_orphan_unheld(m, s2, ino), 1);   /* ws2 itself may delete it */
    CHECK_EQ_INT(meta_orphans_unheld_list(m, ino_count, &n), 0);
    CHECK(n == 0);
    /* ws2's lease runs out: the orphan is nobody's */
    REQUIRE(expire_session(s2) == 0);
    CHECK_EQ_INT(meta_orphan_unheld(m, s1, ino), 1);
    CHECK_EQ_INT(meta_orphans_unheld_list(m, ino_count, &n), 0);
    CHECK(n == 1);
    CHECK_EQ_INT(meta_session_reap(m), 0);
    CHECK_EQ_INT(meta_hold_set(m, s1, ino, 1), 0);
    CHECK_EQ_INT(meta_orphan_unheld(m, 0, ino), 0);
    CHECK_EQ_INT(meta_hold_set(m, s1, ino, 0), 0);
    CHECK_EQ_INT(meta_orphan_unheld(m, 0, ino), 1);
    CHECK_EQ_INT(meta_orphan_unheld(m, 0, ino + 1000), -ENOENT);
    finish(m);
}

/* ---- runner ---- */

/* The write-ahead hook (meta_set_presync): runs before every commit that
 * is durable at once and before meta_sync, never before a deferred commit;
 * a failing hook fails the commit (nothing written) and the sync. */
struct presync_probe {
    int calls;
    int fail;
};

static int presync_probe(void *arg)
{
    struct presync_probe *p = arg;

    p->calls++;
    return p->fail ? -EIO : 0;
}

static void test_presync_write_ahead(void)
{
    struct meta *m = open_fresh();
    struct presync_probe p = { 0, 0 };
    uint8_t *v = NULL;
    size_t n;
    int deferrable;

    REQUIRE(m);
    meta_set_presync(m, presync_probe, &p);
    REQUIRE(meta_begin(m) == 0);
    CHECK_EQ_INT(meta_param_set(m, "k", "one", 3), 0);
    CHECK_EQ_INT(meta_commit(m), 0);
    CHECK_EQ_INT(p.calls, 1);                   /* durable commit: hook first */

    p.fail = 1;                                 /* the audit cannot be synced */
    REQUIRE(meta_begin(m) == 0);
    CHECK_EQ_INT(meta_param_set(m, "k", "two", 3), 0);
    CHECK(meta_commit(m) < 0);
    REQUIRE(meta_param_get(m, "k", &v, &n) == 0);
    CHECK(n == 3 && memcmp(v, "one", 3) == 0);  /* rolled back */
    free(v);
    p.fail = 0;

    REQUIRE(meta_set_deferred_sync(m, 1) == 0);
    /* SQLite defers; PostgreSQL commits stay durable (hook at each). */
    deferrable = strcmp(B->name, "sqlite") == 0;
    p.calls = 0;
    REQUIRE(meta_begin(m) == 0);
    CHECK_EQ_INT(meta_param_set(m, "k", "three", 5), 0);
    CHECK_EQ_INT(meta_commit(m), 0);
    CHECK_EQ_INT(p.calls, deferrable ? 0 : 1);
    p.calls = 0;
    CHECK_EQ_INT(meta_sync(m), 0);
    CHECK_EQ_INT(p.calls, deferrable ? 1 : 0);
    if (deferrable) {
        p.fail = 1;
        CHECK(meta_sync(m) < 0);
        p.fail = 0;
    }
    REQUIRE(meta_set_deferred_sync(m, 0) == 0);
    meta_set_presync(m, NULL, NULL);
    finish(m);
}

struct shared_case {
    const char *name;
    void (*fn)(void);
};

static const struct shared_case shared[] = {
    { "params_and_reopen", test_params_and_reopen },
    { "transactions", test_transactions },
    { "accounts", test_accounts },
    { "folders_envelopes", test_folders_envelopes },
    { "inodes", test_inodes },
    { "dirents", test_dirents },
    { "name_bytes_stored_as_given", test_name_bytes_stored_as_given },
    { "chunks_and_gc", test_chunks_and_gc },
    { "inodes_delete_many", test_inodes_delete_many },
    { "packs", test_packs },
    { "inode_with_chunks_one_snapshot", test_inode_with_chunks_one_snapshot },
    { "xattrs", test_xattrs },
    { "stats", test_stats },
    { "corrupt_rows", test_corrupt_rows },
    { "refuses_future_schema", test_refuses_future_schema },
    { "error_then_rollback", test_error_then_rollback },
    { "hot_path_speed", test_hot_path_speed },
    { "opens_v1_store_made_before_shared_layer", test_opens_v1_store_made_before_shared_layer },
    { "bindings_and_commitments", test_bindings_and_commitments },
    { "reseal_compare_and_swap", test_reseal_compare_and_swap },
    { "sessions_and_change_feed", test_sessions_and_change_feed },
    { "presync_write_ahead", test_presync_write_ahead },
    { "advisory_locks", test_advisory_locks },
    { "open_file_holds", test_open_file_holds },
};

static void run_shared(const struct backend *b)
{
    char name[96];

    B = b;
    for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++) {
        snprintf(name, sizeof name, "%s_%s", b->name, shared[i].name);
        if (b->skip) {
            printf("ok %d - %s # SKIP %s\n", ++tap_case_no, name, b->skip);
            continue;
        }
        tap_run(name, shared[i].fn);
    }
}

int main(void)
{
    if (!getenv("PACTFS_TEST_PG") || !*getenv("PACTFS_TEST_PG"))
        backends[1].skip = "no PACTFS_TEST_PG";
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        run_shared(&backends[i]);
    B = &backends[0];
    RUN(test_sqlite_file_mode_and_open_flags);
    RUN(test_sqlite_migrates_empty_file);
    RUN(test_sqlite_statements_search_by_index);
    RUN(test_sqlite_wal_restarts_empty_after_checkpoint);
    RUN(test_sqlite_refuses_foreign_database);
    RUN(test_sqlite_rejects_mistyped_columns);
    return tap_done();
}
