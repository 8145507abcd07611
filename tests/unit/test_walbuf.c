#include "config.h"

/* sqlite_walbuf: a commit's WAL frames go out in one write, another
 * connection (with the default VFS, its own file descriptors) sees every
 * commit as soon as it returns, rolled back and oversized transactions
 * stay right, and a process killed at any moment leaves a database that
 * passes integrity_check and holds every commit it reported. */

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sqlite_walbuf.h"
#include "tap.h"

static char dir[] = "/tmp/pactfs-walbuf-XXXXXX";
static char path[256];

static sqlite3 *open_db(const char *vfs)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) != SQLITE_OK)
        return NULL;
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                         " PRAGMA journal_size_limit = 0;", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static int exec(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        printf("# %s: %s\n", sql, sqlite3_errmsg(db));
    return rc;
}

static long long one(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    long long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -2;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void fresh(void)
{
    char p[300];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

static int wal_frames;
static int count_frames(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)arg;
    (void)db;
    (void)name;
    wal_frames = pages;
    return SQLITE_OK;
}

static void test_a_commit_is_one_write(void)
{
    fresh();
    sqlite3 *w = open_db(walbuf_vfs());
    REQUIRE(w);
    REQUIRE(exec(w, "CREATE TABLE a (k INTEGER PRIMARY KEY, v BLOB);"
                    "CREATE TABLE b (k INTEGER PRIMARY KEY, name TEXT UNIQUE);"
                    "CREATE INDEX av ON a (v);") == SQLITE_OK);
    sqlite3_wal_hook(w, count_frames, NULL);
    for (int i = 0; i < 50; i++) {   /* spread the rows over many pages */
        char sql[200];
        snprintf(sql, sizeof sql, "INSERT INTO a (v) VALUES (randomblob(300));"
                                  "INSERT INTO b (name) VALUES ('n%05d');", i);
        REQUIRE(exec(w, sql) == SQLITE_OK);
    }
    int before = wal_frames;
    uint64_t issued0, asked0, issued1, asked1;
    walbuf_counts(&issued0, &asked0);
    REQUIRE(exec(w, "BEGIN; UPDATE a SET v = randomblob(300) WHERE k % 7 = 0;"
                    "INSERT INTO b (name) VALUES ('new'); COMMIT;") == SQLITE_OK);
    walbuf_counts(&issued1, &asked1);
    int frames = wal_frames - before;
    printf("# the commit wrote %d frames: %llu writes asked, %llu issued\n", frames,
           (unsigned long long)(asked1 - asked0), (unsigned long long)(issued1 - issued0));
    CHECK(frames >= 4);
    CHECK_EQ_INT(asked1 - asked0, 2 * frames);   /* SQLite: header, then page */
    CHECK_EQ_INT(issued1 - issued0, 1);
    sqlite3_close(w);
}

static void test_another_connection_sees_each_commit(void)
{
    fresh();
    sqlite3 *w = open_db(walbuf_vfs());
    REQUIRE(w);
    REQUIRE(exec(w, "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)") == SQLITE_OK);
    sqlite3 *r = open_db(NULL);   /* the default VFS: reads the files */
    REQUIRE(r);
    int bad = 0;
    for (int i = 1; i <= 200 && !bad; i++) {
        REQUIRE(exec(w, "INSERT INTO t (v) VALUES (randomblob(700))") == SQLITE_OK);
        if (one(r, "SELECT count(*) FROM t") != i)
            bad = i;
    }
    CHECK_EQ_INT(bad, 0);
    /* a rolled-back transaction leaves nothing; the next commit is whole */
    REQUIRE(exec(w, "BEGIN; INSERT INTO t (v) VALUES (randomblob(5000)); ROLLBACK;") ==
            SQLITE_OK);
    REQUIRE(exec(w, "INSERT INTO t (k, v) VALUES (1000, x'01')") == SQLITE_OK);
    CHECK_EQ_INT(one(r, "SELECT count(*) FROM t"), 201);
    /* more than one write carries (128 KiB): written in parts, still whole */
    REQUIRE(exec(w, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                    " WHERE i < 3000) INSERT INTO t (v) SELECT randomblob(1000) FROM n;"
                    " COMMIT;") == SQLITE_OK);
    CHECK_EQ_INT(one(r, "SELECT count(*) FROM t"), 3201);
    sqlite3_close(r);
    /* a checkpoint reads the WAL back through the VFS */
    CHECK_EQ_INT(sqlite3_wal_checkpoint_v2(w, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL),
                 SQLITE_OK);
    CHECK_EQ_INT(one(w, "SELECT count(*) FROM t"), 3201);
    sqlite3_close(w);
    sqlite3 *again = open_db(NULL);
    REQUIRE(again);
    CHECK_EQ_INT(one(again, "SELECT count(*) FROM t"), 3201);
    sqlite3_close(again);
}

static void test_killed_writer_loses_no_reported_commit(void)
{
    for (int round = 0; round < 5; round++) {
        fresh();
        int fds[2];
        REQUIRE(pipe(fds) == 0);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            sqlite3 *w = open_db(walbuf_vfs());
            if (!w || exec(w, "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB);"
                              "CREATE INDEX tv ON t (v);") != SQLITE_OK)
                _exit(1);
            for (int i = 1;; i++) {
                char sql[100];
                snprintf(sql, sizeof sql, "INSERT INTO t (k, v) VALUES (%d, randomblob(%d))", i,
                         200 + (i * 37) % 3000);
                if (exec(w, sql) != SQLITE_OK)
                    _exit(1);
                if (write(fds[1], &i, sizeof i) != sizeof i)   /* reported after COMMIT */
                    _exit(1);
            }
        }
        close(fds[1]);
        int last = 0, got;
        while (last < 300 + 97 * round && read(fds[0], &got, sizeof got) == sizeof got)
            last = got;
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        close(fds[0]);
        sqlite3 *db = open_db(NULL);
        REQUIRE(db);
        sqlite3_stmt *st;
        REQUIRE(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK);
        int ok = sqlite3_step(st) == SQLITE_ROW &&
                 strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
        sqlite3_finalize(st);
        CHECK(ok);
        long long n = one(db, "SELECT count(*) FROM t"), mx = one(db, "SELECT max(k) FROM t");
        CHECK(mx >= last);
        CHECK_EQ_INT(n, mx);   /* whole transactions only, in order */
        sqlite3_close(db);
    }
}

int main(void)
{
    if (!mkdtemp(dir)) {
        printf("# mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    snprintf(path, sizeof path, "%s/t.db", dir);
    RUN(test_a_commit_is_one_write);
    RUN(test_another_connection_sees_each_commit);
    RUN(test_killed_writer_loses_no_reported_commit);
    fresh();
    rmdir(dir);
    return tap_done();
}
