#include "config.h"

/* store_s3.c against a real radosgw (tests/s3/start-rgw.sh).  Built and run
 * by tests/s3/run-store-test.sh; reads S3_ENDPOINT (https://127.0.0.1:PORT),
 * S3_ACCESS_KEY, S3_SECRET_KEY, S3_CA and S3_DOWN_URL (a port nothing
 * listens on) from the environment. */

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "store.h"
#include "tap.h"

static struct store_s3_config base;
static char bucket[64];

static const char *env_or_die(const char *name)
{
    const char *v = getenv(name);

    if (!v || !*v) {
        printf("Bail out! %s is not set (run tests/s3/run-store-test.sh)\n", name);
        exit(1);
    }
    return v;
}

static struct store *open_ok(const char *bkt, int create)
{
    struct store_s3_config c = base;
    struct store *s = NULL;

    c.bucket = bkt;
    if (store_s3_open(&c, create, &s) != 0) {
        printf("# open failed: %s\n", pfs_err_msg());
        return NULL;
    }
    return s;
}

static uint8_t *pattern(size_t n, unsigned seed)
{
    uint8_t *p = malloc(n ? n : 1);

    for (size_t i = 0; p && i < n; i++)
        p[i] = (uint8_t)((i * 131u + seed * 7u) ^ (i >> 9));
    return p;
}

static void test_create_bucket_then_reopen(void)
{
    struct store *s = open_ok(bucket, 1), *again;

    REQUIRE(s);
    CHECK(strcmp(s->ops->type, "s3") == 0);
    CHECK(strstr(s->desc, bucket) != NULL);
    again = open_ok(bucket, 0);
    CHECK(again != NULL);
    store_close(again);
    store_close(s);
}

static void test_put_get_stat_del_roundtrip(void)
{
    static const size_t sizes[] = { 0, 1, 4096, (1u << 20) + 3 };
    struct store *s = open_ok(bucket, 0);

    REQUIRE(s);
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char name[32];
        uint8_t *want = pattern(sizes[i], i), *into = malloc(sizes[i] + 1);
        void *got = NULL;
        size_t len = 0;
        uint64_t size = 0;

        snprintf(name, sizeof name, "obj-%u.%zu", i, sizes[i]);
        CHECK_EQ_INT(store_put(s, name, want, sizes[i]), 0);
        CHECK_EQ_INT(store_get(s, name, &got, &len), 0);
        CHECK_EQ_INT(len, sizes[i]);
        if (got && len == sizes[i])
            CHECK_MEM(got, want, len);
        CHECK_EQ_INT(s->ops->get_into(s, name, into, sizes[i]), 0);
        CHECK_MEM(into, want, sizes[i]);
        CHECK_EQ_INT(store_stat(s, name, &size), 0);
        CHECK_EQ_INT(size, sizes[i]);
        CHECK_EQ_INT(store_del(s, name), 0);
        CHECK_EQ_INT(store_stat(s, name, &size), -ENOENT);
        free(got);
        free(into);
        free(want);
    }
    store_close(s);
}

static void test_overwrite_replaces_whole_object(void)
{
    struct store *s = open_ok(bucket, 0);
    void *got = NULL;
    size_t len = 0;

    REQUIRE(s);
    CHECK_EQ_INT(store_put(s, "over", "first version, long", 19), 0);
    CHECK_EQ_INT(store_put(s, "over", "second", 6), 0);
    CHECK_EQ_INT(store_get(s, "over", &got, &len), 0);
    CHECK_EQ_INT(len, 6);
    if (got && len == 6)
        CHECK_MEM(got, "second", 6);
    free(got);
    store_del(s, "over");
    store_close(s);
}

static void test_missing_object_is_enoent(void)
{
    struct store *s = open_ok(bucket, 0);
    void *got = (void *)1;
    size_t len = 7;
    uint64_t size;
    char buf[4];

    REQUIRE(s);
    CHECK_EQ_INT(store_get(s, "no-such-object", &got, &len), -ENOENT);
    CHECK(got == NULL && len == 0);
    CHECK_EQ_INT(s->ops->get_into(s, "no-such-object", buf, sizeof buf), -ENOENT);
    CHECK_EQ_INT(store_stat(s, "no-such-object", &size), -ENOENT);
    store_close(s);
}

static void test_get_into_wrong_size_is_ebadmsg(void)
{
    struct store *s = open_ok(bucket, 0);
    uint8_t buf[16];

    REQUIRE(s);
    REQUIRE(store_put(s, "ten", "0123456789", 10) == 0);
    CHECK_EQ_INT(s->ops->get_into(s, "ten", buf, 9), -EBADMSG);
    CHECK_EQ_INT(s->ops->get_into(s, "ten", buf, 11), -EBADMSG);
    CHECK_EQ_INT(s->ops->get_into(s, "ten", buf, 10), 0);
    CHECK_MEM(buf, "0123456789", 10);
    store_del(s, "ten");
    store_close(s);
}

static void test_invalid_names_refused(void)
{
    struct store *s = open_ok(bucket, 0);

    REQUIRE(s);
    CHECK_EQ_INT(store_put(s, "../x", "a", 1), -EINVAL);
    CHECK_EQ_INT(store_put(s, "A?b=c", "a", 1), -EINVAL);
    CHECK_EQ_INT(store_put(s, "", "a", 1), -EINVAL);
    store_close(s);
}

/* Many objects from several threads at once: one bucket, >1000 keys, so the
 * listing needs a continuation token (its encoding is signed too). */
#define MANY 1100
#define THREADS 6

struct putter {
    struct store *s;
    unsigned first;
    int failures;
};

static void *put_many(void *arg)
{
    struct putter *p = arg;

    for (unsigned i = p->first; i < MANY; i += THREADS) {
        char name[32], body[32];
        int n = snprintf(body, sizeof body, "body %u", i);

        snprintf(name, sizeof name, "many-%05u", i);
        if (store_put(p->s, name, body, (size_t)n) != 0)
            p->failures++;
    }
    return NULL;
}

struct tally {
    unsigned seen[MANY];
    unsigned others;
    int bad_size;
};

static int count_object(void *arg, const char *name, uint64_t size)
{
    struct tally *t = arg;
    unsigned i;
    char body[32];

    if (sscanf(name, "many-%05u", &i) != 1 || i >= MANY) {
        t->others++;
        return 0;
    }
    t->seen[i]++;
    if ((uint64_t)snprintf(body, sizeof body, "body %u", i) != size)
        t->bad_size = 1;
    return 0;
}

static int stop_at_first(void *arg, const char *name, uint64_t size)
{
    (void)name;
    (void)size;
    ++*(int *)arg;
    return 42;
}

static void test_parallel_puts_and_paged_list(void)
{
    struct store *s = open_ok(bucket, 0);
    struct putter p[THREADS];
    pthread_t th[THREADS];
    struct tally *t = calloc(1, sizeof *t);
    int calls = 0, missing = 0;

    REQUIRE(s && t);
    for (unsigned i = 0; i < THREADS; i++) {
        p[i] = (struct putter){ .s = s, .first = i };
        pthread_create(&th[i], NULL, put_many, &p[i]);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(p[i].failures, 0);
    }
    CHECK_EQ_INT(store_list(s, count_object, t), 0);
    for (unsigned i = 0; i < MANY; i++)
        missing += t->seen[i] != 1;
    CHECK_EQ_INT(missing, 0);
    CHECK(!t->bad_size);
    CHECK_EQ_INT(store_list(s, stop_at_first, &calls), 42);
    CHECK_EQ_INT(calls, 1);
    for (unsigned i = 0; i < MANY; i++) {
        char name[32];
        snprintf(name, sizeof name, "many-%05u", i);
        store_del(s, name);
    }
    free(t);
    store_close(s);
}

static void test_wrong_secret_names_the_secret(void)
{
    struct store_s3_config c = base;
    struct store *s = NULL;

    c.secret_key = "definitely-not-the-secret";
    c.bucket = bucket;
    c.label = "endpoint 1";
    CHECK_EQ_INT(store_s3_open(&c, 0, &s), -EACCES);
    CHECK(s == NULL);
    CHECK(strstr(pfs_err_msg(), "secret key for endpoint 1 is wrong") != NULL);
    printf("# %s\n", pfs_err_msg());
}

static void test_unknown_access_key(void)
{
    struct store_s3_config c = base;
    struct store *s = NULL;

    c.access_key = "NOSUCHACCESSKEY00000";
    c.bucket = bucket;
    CHECK_EQ_INT(store_s3_open(&c, 0, &s), -EACCES);
    CHECK(strstr(pfs_err_msg(), "InvalidAccessKeyId") != NULL);
    printf("# %s\n", pfs_err_msg());
}

static void test_missing_bucket_without_create(void)
{
    struct store *s = NULL;
    struct store_s3_config c = base;

    c.bucket = "pactfs-no-such-bucket";
    CHECK_EQ_INT(store_s3_open(&c, 0, &s), -ENOENT);
    CHECK(strstr(pfs_err_msg(), "does not exist") != NULL);
    printf("# %s\n", pfs_err_msg());
}

static void test_untrusted_certificate_refused(void)
{
    struct store_s3_config c = base;
    struct store *s = NULL;

    c.bucket = bucket;
    c.ca_file = NULL;   /* the system bundle does not know the test CA */
    CHECK_EQ_INT(store_s3_open(&c, 0, &s), -EPROTO);
    CHECK(strstr(pfs_err_msg(), "TLS") != NULL);
    printf("# %s\n", pfs_err_msg());
}

static void test_server_down_is_hostunreach_naming_url(void)
{
    struct store_s3_config c = base;
    struct store *s = NULL;
    const char *down = env_or_die("S3_DOWN_URL");

    c.url = down;
    c.bucket = bucket;
    CHECK_EQ_INT(store_s3_open(&c, 0, &s), -EHOSTUNREACH);
    CHECK(strstr(pfs_err_msg(), down) != NULL);
    printf("# %s\n", pfs_err_msg());
}

static void test_bad_settings_refused(void)
{
    struct store_s3_config c = base;
    struct store *s = NULL;

    c.url = "http://127.0.0.1:1";
    c.bucket = bucket;
    CHECK_EQ_INT(store_s3_open(&c, 0, &s), -EINVAL);
    c = base;
    c.bucket = "Bad_Bucket";
    CHECK_EQ_INT(store_s3_open(&c, 0, &s), -EINVAL);
    c = base;
    c.bucket = bucket;
    c.url = "https://127.0.0.1:1/extra/path";
    CHECK_EQ_INT(store_s3_open(&c, 0, &s), -EINVAL);
}

/* Not a pass/fail case: a throughput figure for the report. */
#define BENCH_OBJECTS 64
#define BENCH_THREADS 4

struct bench {
    struct store *s;
    const uint8_t *data;
    unsigned first;
    int get;
};

static void *bench_worker(void *arg)
{
    struct bench *b = arg;
    uint8_t *buf = b->get ? malloc(1u << 20) : NULL;

    for (unsigned i = b->first; i < BENCH_OBJECTS; i += BENCH_THREADS) {
        char name[32];
        snprintf(name, sizeof name, "bench-%03u", i);
        if (buf)
            b->s->ops->get_into(b->s, name, buf, 1u << 20);
        else
            store_put(b->s, name, b->data, 1u << 20);
    }
    free(buf);
    return NULL;
}

static double bench_run(struct store *s, const uint8_t *data, unsigned threads, int get)
{
    struct bench b[BENCH_THREADS];
    pthread_t th[BENCH_THREADS];
    struct timespec t0, t1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0; i < threads; i++) {
        b[i] = (struct bench){ .s = s, .data = data, .first = i, .get = get };
        pthread_create(&th[i], NULL, bench_worker, &b[i]);
    }
    for (unsigned i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return BENCH_OBJECTS / ((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
}

static void test_throughput_figures(void)
{
    struct store *s = open_ok(bucket, 0);
    uint8_t *data = pattern(1u << 20, 9);

    REQUIRE(s && data);
    printf("# 1 MiB objects: PUT %.1f MiB/s with %d threads\n",
           bench_run(s, data, BENCH_THREADS, 0), BENCH_THREADS);
    printf("# 1 MiB objects: GET %.1f MiB/s with %d threads\n",
           bench_run(s, data, BENCH_THREADS, 1), BENCH_THREADS);
    for (unsigned i = 0; i < BENCH_OBJECTS; i++) {
        char name[32];
        snprintf(name, sizeof name, "bench-%03u", i);
        CHECK_EQ_INT(store_del(s, name), 0);
    }
    free(data);
    store_close(s);
}

int main(void)
{
    base.url = env_or_die("S3_ENDPOINT");
    base.access_key = env_or_die("S3_ACCESS_KEY");
    base.secret_key = env_or_die("S3_SECRET_KEY");
    base.ca_file = env_or_die("S3_CA");
    base.region = "us-east-1";
    snprintf(bucket, sizeof bucket, "pactfs-unit-%ld", (long)getpid());
    base.bucket = bucket;

    RUN(test_create_bucket_then_reopen);
    RUN(test_put_get_stat_del_roundtrip);
    RUN(test_overwrite_replaces_whole_object);
    RUN(test_missing_object_is_enoent);
    RUN(test_get_into_wrong_size_is_ebadmsg);
    RUN(test_invalid_names_refused);
    RUN(test_parallel_puts_and_paged_list);
    RUN(test_wrong_secret_names_the_secret);
    RUN(test_unknown_access_key);
    RUN(test_missing_bucket_without_create);
    RUN(test_untrusted_certificate_refused);
    RUN(test_server_down_is_hostunreach_naming_url);
    RUN(test_bad_settings_refused);
    RUN(test_throughput_figures);
    return tap_done();
}
