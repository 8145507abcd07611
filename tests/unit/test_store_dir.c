#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "store.h"
#include "tap.h"

static char scratch[64];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void scratch_new(void)
{
    strcpy(scratch, "/tmp/pactfs-store-XXXXXX");
    if (!mkdtemp(scratch))
        abort();
}

static void scratch_remove(void)
{
    nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct store *open_scratch_store(void)
{
    struct store *s = NULL;
    char path[128];

    snprintf(path, sizeof path, "%s/ep", scratch);
    if (store_dir_open(path, 1, &s) != 0)
        return NULL;
    return s;
}

static void test_put_get_roundtrip(void)
{
    struct store *s;
    void *data;
    size_t len;
    uint64_t size;
    char path[160];
    struct stat st;

    scratch_new();
    s = open_scratch_store();
    REQUIRE(s != NULL);
    CHECK(strncmp(s->desc, "dir:", 4) == 0);
    CHECK_EQ_INT(store_put(s, "abcdef.0", "hello world", 11), 0);
    CHECK_EQ_INT(store_get(s, "abcdef.0", &data, &len), 0);
    CHECK_EQ_INT(len, 11);
    if (data)
        CHECK_MEM(data, "hello world", 11);
    free(data);
    CHECK_EQ_INT(store_stat(s, "abcdef.0", &size), 0);
    CHECK_EQ_INT(size, 11);
    /* fan-out layout and private mode */
    snprintf(path, sizeof path, "%s/ep/ab/abcdef.0", scratch);
    CHECK(stat(path, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    /* empty object and one-character name */
    CHECK_EQ_INT(store_put(s, "z", "", 0), 0);
    CHECK_EQ_INT(store_get(s, "z", &data, &len), 0);
    CHECK_EQ_INT(len, 0);
    free(data);
    CHECK_EQ_INT(store_sync(s), 0);
    store_close(s);
    scratch_remove();
}

static void test_get_into(void)
{
    struct store *s;
    char buf[16];

    scratch_new();
    s = open_scratch_store();
    REQUIRE(s != NULL);
    REQUIRE(s->ops->get_into != NULL);
    CHECK_EQ_INT(store_put(s, "frag.1", "0123456789", 10), 0);
    memset(buf, 0, sizeof buf);
    CHECK_EQ_INT(s->ops->get_into(s, "frag.1", buf, 10), 0);
    CHECK_MEM(buf, "0123456789", 10);
    CHECK_EQ_INT(s->ops->get_into(s, "frag.1", buf, 11), -EBADMSG);
    CHECK_EQ_INT(s->ops->get_into(s, "frag.1", buf, 9), -EBADMSG);
    CHECK_EQ_INT(s->ops->get_into(s, "frag.2", buf, 10), -ENOENT);
    CHECK_EQ_INT(s->ops->get_into(s, "../x", buf, 10), -EINVAL);
    store_close(s);
    scratch_remove();
}

/* A fragment inside a pack: a byte range of an object. */
static void test_get_range(void)
{
    struct store *s;
    char buf[16];

    scratch_new();
    s = open_scratch_store();
    REQUIRE(s != NULL);
    REQUIRE(s->ops->get_range != NULL);
    CHECK_EQ_INT(store_put(s, "pack.p", "0123456789", 10), 0);
    memset(buf, 0, sizeof buf);
    CHECK_EQ_INT(store_get_range(s, "pack.p", 3, buf, 4), 0);
    CHECK_MEM(buf, "3456", 4);
    CHECK_EQ_INT(store_get_range(s, "pack.p", 0, buf, 10), 0);
    CHECK_MEM(buf, "0123456789", 10);
    CHECK_EQ_INT(store_get_range(s, "pack.p", 7, buf, 4), -EBADMSG);   /* past the end */
    CHECK(strstr(pfs_err_msg(), "too short") != NULL);
    CHECK_EQ_INT(store_get_range(s, "pack.q", 0, buf, 4), -ENOENT);
    CHECK_EQ_INT(store_get_range(s, "../x", 0, buf, 4), -EINVAL);
    store_close(s);
    scratch_remove();
}

static int open_fds(void)
{
    int n = 0;
    char path[64];

    for (int fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        if (access(path, F_OK) == 0)
            n++;
    }
    return n;
}

/* Packs read by range keep a descriptor open for a moment (fdcache.h): a
 * delete or a replacement through the store is seen at once, a removal
 * behind its back within the descriptor's lifetime (500 ms), and no
 * descriptor outlives the store. */
static void test_get_range_kept_descriptors(void)
{
    struct store *s;
    char buf[16], path[160], name[32];
    struct timespec later = {0, 700 * 1000 * 1000};
    int fds0;

    scratch_new();
    fds0 = open_fds();
    s = open_scratch_store();
    REQUIRE(s != NULL);
    CHECK_EQ_INT(store_put_new(s, "pack.a", "abcdefghij", 10), 0);
    CHECK_EQ_INT(store_sync(s), 0);
    CHECK_EQ_INT(store_get_range(s, "pack.a", 2, buf, 3), 0);
    CHECK_MEM(buf, "cde", 3);
    /* replaced through the store: the next read sees the new bytes */
    CHECK_EQ_INT(store_put(s, "pack.a", "ABCDEFGHIJ", 10), 0);
    CHECK_EQ_INT(store_get_range(s, "pack.a", 2, buf, 3), 0);
    CHECK_MEM(buf, "CDE", 3);
    /* deleted through the store: gone at once */
    CHECK_EQ_INT(store_del(s, "pack.a"), 0);
    CHECK_EQ_INT(store_get_range(s, "pack.a", 2, buf, 3), -ENOENT);
    /* removed behind the store's back: gone once the descriptor's time is up */
    CHECK_EQ_INT(store_put_new(s, "pack.b", "0123456789", 10), 0);
    CHECK_EQ_INT(store_get_range(s, "pack.b", 0, buf, 4), 0);
    snprintf(path, sizeof path, "%s/ep/pa/pack.b", scratch);
    CHECK_EQ_INT(unlink(path), 0);
    nanosleep(&later, NULL);
    CHECK_EQ_INT(store_get_range(s, "pack.b", 0, buf, 4), -ENOENT);
    /* more packs than kept descriptors: each still reads right */
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 40; i++) {
            char want[8];
            snprintf(name, sizeof name, "pk.%02d", i);
            snprintf(want, sizeof want, "v%02d", i);
            if (round == 0)
                CHECK_EQ_INT(store_put_new(s, name, want, 3), 0);
            memset(buf, 0, sizeof buf);
            CHECK_EQ_INT(store_get_range(s, name, 0, buf, 3), 0);
            CHECK_MEM(buf, want, 3);
        }
    CHECK_EQ_INT(store_get_range(s, "pk.07", 1, buf, 3), -EBADMSG);   /* past the end, kept */
    store_close(s);
    CHECK_EQ_INT(open_fds(), fds0);   /* every kept descriptor closed */
    scratch_remove();
}

static void test_overwrite_and_delete(void)
{
    struct store *s;
    void *data = NULL;
    size_t len = 0;
    uint64_t size;

    scratch_new();
    s = open_scratch_store();
    REQUIRE(s != NULL);
    CHECK_EQ_INT(store_put(s, "obj1", "first version, longer", 21), 0);
    CHECK_EQ_INT(store_put(s, "obj1", "second", 6), 0);
    CHECK_EQ_INT(store_get(s, "obj1", &data, &len), 0);
    CHECK_EQ_INT(len, 6);
    if (data)
        CHECK_MEM(data, "second", 6);
    free(data);
    CHECK_EQ_INT(store_del(s, "obj1"), 0);
    CHECK_EQ_INT(store_del(s, "obj1"), -ENOENT);
    CHECK_EQ_INT(store_get(s, "obj1", &data, &len), -ENOENT);
    CHECK(data == NULL);
    CHECK_EQ_INT(store_stat(s, "obj1", &size), -ENOENT);
    CHECK(strstr(pfs_err_msg(), "obj1") != NULL);
    CHECK_EQ_INT(store_sync(s), 0);
    store_close(s);
    scratch_remove();
}

/* The object holds exactly the string want. */
static int holds(struct store *s, const char *name, const char *want)
{
    void *data = NULL;
    size_t len = 0;
    int ok = store_get(s, name, &data, &len) == 0 && len == strlen(want)
             && memcmp(data, want, len) == 0;

    free(data);
    return ok;
}

/* put_new: the final name written in place (no temp file), never over an
 * existing object; a fan-out directory removed behind the store's back (it
 * remembers the ones it has seen) is made again. */
static void test_put_new_in_place_never_replaces(void)
{
    struct store *s;
    char path[160];
    struct stat st;

    scratch_new();
    s = open_scratch_store();
    REQUIRE(s != NULL);
    REQUIRE(s->ops->put_new != NULL);
    CHECK_EQ_INT(store_put_new(s, "cafe.0", "fresh bytes", 11), 0);
    CHECK(holds(s, "cafe.0", "fresh bytes"));
    snprintf(path, sizeof path, "%s/ep/ca/cafe.0", scratch);
    CHECK(stat(path, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    /* an existing name is refused and keeps its bytes */
    CHECK_EQ_INT(store_put_new(s, "cafe.0", "other", 5), -EEXIST);
    CHECK(strstr(pfs_err_msg(), "cafe.0") != NULL);
    CHECK(holds(s, "cafe.0", "fresh bytes"));
    /* a plain put still replaces (repair writes a fragment back this way) */
    CHECK_EQ_INT(store_put(s, "cafe.0", "repaired", 8), 0);
    CHECK(holds(s, "cafe.0", "repaired"));
    /* the fan-out dir removed after the store saw it: made again */
    CHECK_EQ_INT(store_del(s, "cafe.0"), 0);
    snprintf(path, sizeof path, "%s/ep/ca", scratch);
    CHECK(rmdir(path) == 0);
    CHECK_EQ_INT(store_put_new(s, "ca11.1", "again", 5), 0);
    CHECK(holds(s, "ca11.1", "again"));
    CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK_EQ_INT(store_put(s, "ca22.1", "too", 3), 0);   /* and for a put */
    snprintf(path, sizeof path, "%s/ep/ca", scratch);
    CHECK(rmdir(path) != 0);   /* not empty: both objects are there */
    CHECK_EQ_INT(store_sync(s), 0);
    store_close(s);
    scratch_remove();
}

static void test_bad_names_refused(void)
{
    static const char *bad[] = {"", ".", "..", ".hidden", "a/b", "../x", "ABC", "a b",
                                "x\n", "caf\xc3\xa9"};
    char longname[130];
    struct store *s;
    void *data;
    size_t len;

    scratch_new();
    s = open_scratch_store();
    REQUIRE(s != NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(store_put(s, bad[i], "x", 1), -EINVAL);
        CHECK_EQ_INT(store_get(s, bad[i], &data, &len), -EINVAL);
        CHECK_EQ_INT(store_del(s, bad[i]), -EINVAL);
    }
    memset(longname, 'a', 129);
    longname[129] = '\0';
    CHECK_EQ_INT(store_put(s, longname, "x", 1), -EINVAL);
    longname[128] = '\0';
    CHECK_EQ_INT(store_put(s, longname, "x", 1), 0);
    CHECK_EQ_INT(store_put(s, "0-9a-z._-ok", "x", 1), 0);
    store_close(s);
    scratch_remove();
}

struct list_acc {
    int count;
    int saw_tmp;
    uint64_t bytes;
};

static int count_cb(void *arg, const char *name, uint64_t size)
{
    struct list_acc *a = arg;

    a->count++;
    a->bytes += size;
    if (name[0] == '.' || strstr(name, "tmp"))
        a->saw_tmp = 1;
    return 0;
}

static int stop_cb(void *arg, const char *name, uint64_t size)
{
    (void)name;
    (void)size;
    ++*(int *)arg;
    return 7;
}

static void test_list_skips_temp_files(void)
{
    struct store *s;
    struct list_acc acc = {0, 0, 0};
    char path[160];
    int fd, calls = 0;

    scratch_new();
    s = open_scratch_store();
    REQUIRE(s != NULL);
    CHECK_EQ_INT(store_put(s, "aa1", "1", 1), 0);
    CHECK_EQ_INT(store_put(s, "aa2", "22", 2), 0);
    CHECK_EQ_INT(store_put(s, "bb3", "333", 3), 0);
    /* a put in progress elsewhere: its temp file must not be listed */
    snprintf(path, sizeof path, "%s/ep/aa/.tmp.aa9.0123456789abcdef", scratch);
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    CHECK_EQ_INT(store_list(s, count_cb, &acc), 0);
    CHECK_EQ_INT(acc.count, 3);
    CHECK_EQ_INT(acc.bytes, 6);
    CHECK_EQ_INT(acc.saw_tmp, 0);
    CHECK_EQ_INT(store_list(s, stop_cb, &calls), 7);
    CHECK_EQ_INT(calls, 1);
    store_close(s);
    scratch_remove();
}

static void test_stale_temp_cleanup(void)
{
    struct store *s;
    char stale[160], fresh[160], obj[160];
    struct timespec old[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
    int fd;

    scratch_new();
    s = open_scratch_store();
    REQUIRE(s != NULL);
    CHECK_EQ_INT(store_put(s, "cc1", "data", 4), 0);
    store_close(s);
    snprintf(stale, sizeof stale, "%s/ep/cc/.tmp.cc2.aaaaaaaaaaaaaaaa", scratch);
    snprintf(fresh, sizeof fresh, "%s/ep/cc/.tmp.cc3.bbbbbbbbbbbbbbbb", scratch);
    snprintf(obj, sizeof obj, "%s/ep/cc/cc1", scratch);
    fd = open(stale, O_CREAT | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    CHECK(write(fd, "partial", 7) == 7);
    CHECK(futimens(fd, old) == 0);
    close(fd);
    fd = open(fresh, O_CREAT | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    close(fd);

    s = open_scratch_store();
    REQUIRE(s != NULL);
    CHECK(access(stale, F_OK) != 0);   /* crash leftover swept */
    CHECK(access(fresh, F_OK) == 0);   /* maybe a live put of another process */
    CHECK(access(obj, F_OK) == 0);     /* objects untouched */
    store_close(s);
    scratch_remove();
}

static void test_open_missing_without_create(void)
{
    struct store *s = NULL;
    char path[160];

    scratch_new();
    snprintf(path, sizeof path, "%s/nope", scratch);
    CHECK_EQ_INT(store_dir_open(path, 0, &s), -ENOENT);
    CHECK(s == NULL);
    CHECK(strstr(pfs_err_msg(), path) != NULL);
    scratch_remove();
}

static void test_space(void)
{
    struct store *s;
    struct store_space_info sp = { 0, 0, 0 };
    struct stat st;

    scratch_new();
    s = open_scratch_store();
    REQUIRE(s != NULL);
    CHECK_EQ_INT(store_space(s, &sp), 0);
    CHECK(sp.total > 0);
    CHECK(sp.avail <= sp.total);
    /* endpoints on one filesystem are recognised by st_dev */
    REQUIRE(stat(scratch, &st) == 0);
    CHECK(sp.fs_id == (uint64_t)st.st_dev);
    store_close(s);
    scratch_remove();
}

#define THREADS 6
#define PER_THREAD 60

struct put_job {
    struct store *s;
    int id;
    int failures;
};

static void *put_worker(void *arg)
{
    struct put_job *j = arg;
    char name[32], body[64];
    void *data;
    size_t len;

    for (int i = 0; i < PER_THREAD; i++) {
        /* names spread over fan-out dirs and one shared name all threads race on */
        snprintf(name, sizeof name, "%02x%d.%d", (i * 7 + j->id) & 0xff, j->id, i);
        snprintf(body, sizeof body, "thread %d object %d", j->id, i);
        if (store_put(j->s, name, body, strlen(body)) != 0)
            j->failures++;
        if (store_get(j->s, name, &data, &len) != 0 || len != strlen(body) ||
            memcmp(data, body, len) != 0)
            j->failures++;
        free(data);
        snprintf(body, sizeof body, "shared by %d", j->id);
        if (store_put(j->s, "shared", body, strlen(body)) != 0)
            j->failures++;
        if (i % 20 == 0 && store_sync(j->s) != 0)
            j->failures++;
    }
    return NULL;
}

static void test_concurrent_puts(void)
{
    struct store *s;
    pthread_t th[THREADS];
    struct put_job jobs[THREADS];
    struct list_acc acc = {0, 0, 0};
    void *data;
    size_t len;

    scratch_new();
    s = open_scratch_store();
    REQUIRE(s != NULL);
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (struct put_job){s, i, 0};
        pthread_create(&th[i], NULL, put_worker, &jobs[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(jobs[i].failures, 0);
    }
    CHECK_EQ_INT(store_sync(s), 0);
    CHECK_EQ_INT(store_list(s, count_cb, &acc), 0);
    CHECK_EQ_INT(acc.count, THREADS * PER_THREAD + 1);
    CHECK_EQ_INT(acc.saw_tmp, 0);
    /* the raced object is one whole version, never a mix */
    CHECK_EQ_INT(store_get(s, "shared", &data, &len), 0);
    CHECK(len == 11 && memcmp(data, "shared by ", 10) == 0);
    free(data);
    store_close(s);
    scratch_remove();
}

int main(void)
{
    RUN(test_put_get_roundtrip);
    RUN(test_get_into);
    RUN(test_get_range);
    RUN(test_get_range_kept_descriptors);
    RUN(test_overwrite_and_delete);
    RUN(test_put_new_in_place_never_replaces);
    RUN(test_bad_names_refused);
    RUN(test_list_skips_temp_files);
    RUN(test_stale_temp_cleanup);
    RUN(test_open_missing_without_create);
    RUN(test_space);
    RUN(test_concurrent_puts);
    return tap_done();
}
