/* secmem: keys always locked page by page, plaintext locked up to the
 * pool budget, and what happens under an ordinary user's RLIMIT_MEMLOCK.
 *
 * The low-limit cases run in a child that gives up root (setuid to
 * nobody, so CAP_IPC_LOCK no longer lifts the limit) and lowers
 * RLIMIT_MEMLOCK, exactly as a mount by an ordinary user with the usual
 * 8 MiB limit would run.  The child reports what it saw through a pipe. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#endif

#include "crypto.h"
#include "error.h"
#include "secmem.h"
#include "tap.h"

#define MIB ((size_t)1 << 20)
/* Keys asked for under a 64 KiB limit: far more than fit in 64 KiB of
 * key slabs (64-byte slots), so the limit must refuse some. */
#define KEYS_TRIED 4096

/* AddressSanitizer makes mlock() a no-op (it cannot lock its shadow
 * memory): VmLck then stays 0 and no lock ever fails, so the checks that
 * read VmLck or need a refused lock run in the release build only. */
#ifdef __SANITIZE_ADDRESS__
#define LOCKS_REAL 0
#else
#define LOCKS_REAL 1
#endif

static size_t vmlck(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    unsigned long long kib = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmLck: %llu", &kib) == 1)
            break;
    fclose(f);
    return (size_t)kib << 10;
}

static void test_key_pages_locked_and_wiped(void)
{
    size_t before = vmlck();
    struct secmem_stats st;
    uint8_t *k = secmem_alloc(32), *k2;

    REQUIRE(k);
    CHECK(!LOCKS_REAL || vmlck() >= before + 4096);
    secmem_stats(&st);
    CHECK(st.key_bytes >= 4096);
    for (unsigned i = 0; i < 32; i++)
        CHECK(k[i] == 0);
    memset(k, 0xa5, 32);
    /* A small key is a slot of a locked slab: freed, the slot is wiped
     * (the slab stays mapped and locked), and handed out zeroed again. */
    secmem_free(k, 32);
    unsigned left = 0;
    for (unsigned i = 0; i < 64; i++)
        left += k[i] != 0 && (i >= sizeof(void *));
    CHECK_EQ_INT(left, 0);
    k2 = secmem_alloc(32);
    REQUIRE(k2);
    CHECK(k2 == k);   /* the slot is reused: no new locking per key */
    for (unsigned i = 0; i < 64; i++)
        CHECK(k2[i] == 0);
    CHECK(!LOCKS_REAL || vmlck() >= before + 4096);
    secmem_free(k2, 32);
    /* Many keys at once all stay locked; two live ones never overlap. */
    static uint8_t *many[3000];
    for (unsigned i = 0; i < 3000; i++) {
        many[i] = secmem_alloc(i % 2 ? 32 : 64);
        REQUIRE(many[i]);
        memset(many[i], (int)(i & 0xff), i % 2 ? 32 : 64);
    }
    unsigned bad = 0;
    for (unsigned i = 0; i < 3000; i++)
        bad += many[i][(i % 2 ? 32 : 64) - 1] != (uint8_t)(i & 0xff);
    CHECK_EQ_INT(bad, 0);
    for (unsigned i = 0; i < 3000; i++)
        secmem_free(many[i], i % 2 ? 32 : 64);
    /* A larger buffer is whole pages, unlocked again when freed. */
    size_t mid = vmlck();
    uint8_t *big = secmem_alloc(100);
    REQUIRE(big);
    CHECK(((uintptr_t)big & 4095) == 0);
    CHECK(!LOCKS_REAL || vmlck() >= mid + 4096);
    memset(big, 0xa5, 100);
    secmem_free(big, 100);
    CHECK(vmlck() == mid);
}

static void test_plain_pool_locks_to_budget(void)
{
    struct secmem_stats st;
    size_t before = vmlck();
    uint8_t *a, *b, *c;

    CHECK(secmem_plain_budget(2 * MIB) == 2 * MIB);   /* root: no limit applies */
    a = secmem_plain_alloc(MIB - 4096);
    b = secmem_plain_alloc(MIB - 4096);
    c = secmem_plain_alloc(MIB - 4096);      /* past the budget: works, unlocked */
    REQUIRE(a && b && c);
    memset(a, 1, MIB - 4096);
    memset(c, 3, MIB - 4096);
    secmem_stats(&st);
    CHECK(st.plain_locked == 2 * MIB);
    CHECK(st.plain_unlocked == MIB);
    CHECK(!LOCKS_REAL || vmlck() >= before + 2 * MIB);
    secmem_plain_shrink(a, 100);
    CHECK(a[99] == 1);
    secmem_stats(&st);
    CHECK(st.plain_locked == MIB + 4096);
    secmem_plain_free(a);
    secmem_plain_free(b);
    secmem_plain_free(c);
    secmem_stats(&st);
    CHECK(st.plain_unlocked == 0);
    /* Spares are wiped before they are handed out again. */
    a = secmem_plain_alloc(MIB - 4096);
    REQUIRE(a);
    CHECK(a[0] == 0 && a[MIB - 4097] == 0);
    secmem_plain_free(a);
    secmem_plain_budget(0);
}

/* A chunk-sized buffer that held a small file is wiped only as far as it
 * was written, and goes back to the pool all zeros for the next file. */
static void test_plain_free_upto_wipes_what_was_written(void)
{
    size_t n = MIB - 4096;
    uint8_t *a, *b;
    size_t nonzero = 0;

    CHECK(secmem_plain_budget(4 * MIB) == 4 * MIB);
    a = secmem_plain_alloc(n);
    REQUIRE(a);
    memset(a, 0x5a, 3000);
    secmem_plain_free_upto(a, 3000);
    b = secmem_plain_alloc(n);
    REQUIRE(b);
    CHECK(b == a);   /* the locked spare, reused */
    for (size_t i = 0; i < n; i++)
        nonzero += b[i] != 0;
    CHECK_EQ_INT((int)nonzero, 0);
    memset(b, 0x5a, n);
    secmem_plain_free(b);   /* a full wipe stays the default */
    b = secmem_plain_alloc(n);
    REQUIRE(b);
    nonzero = 0;
    for (size_t i = 0; i < n; i++)
        nonzero += b[i] != 0;
    CHECK_EQ_INT((int)nonzero, 0);
    secmem_plain_free(b);
    secmem_plain_budget(0);
}

/* ---- small plaintext buffers: slots of shared arenas */

#define PG 4096
static struct secmem_stats stats_now(void)
{
    struct secmem_stats st;

    secmem_stats(&st);
    return st;
}

/* Start from no arenas: every slot freed, every entirely free arena
 * unmapped by the budget call. */
static void arenas_reset(size_t budget)
{
    secmem_plain_budget(0);
    secmem_plain_budget(budget);
}

static size_t count_nonzero(const uint8_t *p, size_t n)
{
    size_t c = 0;

    for (size_t i = 0; i < n; i++)
        c += p[i] != 0;
    return c;
}

/* Many small buffers of varied sizes share a few arenas (one mapping and
 * lock per arena, not per buffer), never overlap, and a freed slot serves
 * the next buffer of its class even when the sizes differ. */
static void test_plain_small_buffers_share_arenas(void)
{
    enum { N = 1000 };
    static uint8_t *b[N];
    static size_t len[N];
    struct secmem_stats st;
    size_t total = 0;
    unsigned bad = 0;

    arenas_reset(256 * MIB);
    st = stats_now();
    CHECK_EQ_INT((int)st.plain_arenas, 0);
    for (unsigned i = 0; i < N; i++) {
        len[i] = 200 + (size_t)i * 7919 % (64 << 10);
        b[i] = secmem_plain_alloc(len[i]);
        REQUIRE(b[i]);
        memset(b[i], (int)(i & 0xff), len[i]);
        total += len[i];
    }
    for (unsigned i = 0; i < N; i++)
        bad += b[i][0] != (uint8_t)(i & 0xff) || b[i][len[i] - 1] != (uint8_t)(i & 0xff);
    CHECK_EQ_INT(bad, 0);
    st = stats_now();
    /* 1,000 buffers of about 32 KiB each: about 32 MiB in arenas of about
     * 512 KiB, well under 200 mappings (one each was 1,000) */
    CHECK(st.plain_arenas >= 1 && st.plain_arenas < N / 5);
    CHECK(st.plain_arena_bytes >= total && st.plain_arena_bytes < total * 3 / 2 + 16 * MIB);
    CHECK(st.plain_locked == st.plain_arena_bytes);   /* all locked: the budget had room */
    CHECK(st.plain_unlocked == 0);
    for (unsigned i = 0; i < N; i++)
        secmem_plain_free(b[i]);
    st = stats_now();
    CHECK(st.plain_arena_free == st.plain_arena_bytes);

    /* 9 pages (8 and 164 bytes) and 10 pages (header included) are one class:
     * the first's slot is reused for the second, with no new arena. */
    arenas_reset(256 * MIB);
    uint8_t *p = secmem_plain_alloc(8 * PG + 100);
    REQUIRE(p);
    unsigned arenas = stats_now().plain_arenas;
    CHECK_EQ_INT((int)arenas, 1);
    secmem_plain_free(p);
    uint8_t *q = secmem_plain_alloc(10 * PG - 64);
    REQUIRE(q);
    CHECK(q == p);
    CHECK_EQ_INT((int)stats_now().plain_arenas, 1);
    /* a 128 KiB read reply is a slot too; a 1 MiB chunk is not */
    uint8_t *r = secmem_plain_alloc(128 << 10);
    REQUIRE(r);
    CHECK_EQ_INT((int)stats_now().plain_arenas, 2);
    uint8_t *big = secmem_plain_alloc(SECMEM_PLAIN_SMALL_MAX + 1);
    REQUIRE(big);
    CHECK_EQ_INT((int)stats_now().plain_arenas, 2);
    secmem_plain_free(big);
    secmem_plain_free(r);
    secmem_plain_free(q);
    secmem_plain_budget(0);
}

/* A freed slot is wiped before it is handed out again: in full by
 * secmem_plain_free, as far as written by secmem_plain_free_upto; a
 * shrunk slot's tail is wiped at once. */
/* The next buffer of n bytes is the slot just freed at was, all zeros. */
static uint8_t *realloc_same_slot_zeroed(const uint8_t *was, size_t n)
{
    uint8_t *p = secmem_plain_alloc(n);

    CHECK(p != NULL && p == was);
    if (p)
        CHECK_EQ_INT((int)count_nonzero(p, n), 0);
    return p;
}

static void test_plain_small_slots_wiped_before_reuse(void)
{
    size_t n = 5 * PG - 64;
    uint8_t *p, *q;

    arenas_reset(256 * MIB);
    p = secmem_plain_alloc(18000);           /* 5 pages with the header */
    REQUIRE(p);
    memset(p, 0xa5, 18000);
    secmem_plain_free(p);
#ifdef __SANITIZE_ADDRESS__
    /* a freed slot is poisoned: a use after free is reported */
    CHECK(__asan_address_is_poisoned(p) && __asan_address_is_poisoned(p + n - 1));
#endif
    q = realloc_same_slot_zeroed(p, n);      /* the same class */
    REQUIRE(q);
    memset(q, 0x5a, 3000);
    secmem_plain_free_upto(q, 3000);
    p = realloc_same_slot_zeroed(q, n);
    REQUIRE(p);
    memset(p, 0x77, n);
    secmem_plain_shrink(p, 100);
    CHECK(p[99] == 0x77);
    CHECK_EQ_INT((int)count_nonzero(p + 100, n - 100), 0);
    secmem_plain_free_upto(p, 100);
    q = realloc_same_slot_zeroed(p, n);
    REQUIRE(q);
    secmem_plain_free(q);
    secmem_plain_budget(0);
}

/* Arenas are locked while the budget has room for a whole arena; the
 * next ones are unlocked, and their slots in use are counted unlocked. */
static void test_plain_small_accounting_past_budget(void)
{
    enum { MAXB = 256 };
    static uint8_t *b[MAXB];
    size_t slot = 16 * PG, n = slot - 64, arena, before = vmlck();
    struct secmem_stats st;
    unsigned long ua;
    unsigned per, count;

    arenas_reset(4 * MIB);
    b[0] = secmem_plain_alloc(n);
    REQUIRE(b[0]);
    st = stats_now();
    arena = st.plain_arena_bytes;
    CHECK(arena >= 4 * slot && arena % slot == 0);
    CHECK(st.plain_locked == arena);
    secmem_plain_free(b[0]);
    arenas_reset(2 * arena);                 /* room for two arenas */
    ua = stats_now().plain_unlocked_allocs;
    per = (unsigned)(arena / slot);
    count = 3 * per;
    REQUIRE(count <= MAXB);
    for (unsigned i = 0; i < count; i++) {
        b[i] = secmem_plain_alloc(n);
        REQUIRE(b[i]);
        memset(b[i], 9, n);
    }
    st = stats_now();
    CHECK(st.plain_locked == 2 * arena);
    CHECK(st.plain_unlocked == per * slot);
    CHECK(st.plain_unlocked_allocs == ua + per);
    CHECK(st.plain_arena_bytes == 3 * arena);
    CHECK_EQ_INT((int)st.plain_arenas, 3);
    CHECK(!LOCKS_REAL || vmlck() >= before + 2 * arena);
    for (unsigned i = 0; i < count; i++)
        secmem_plain_free(b[i]);
    st = stats_now();
    CHECK(st.plain_unlocked == 0);
    CHECK(st.plain_arena_bytes <= SECMEM_PLAIN_ARENA_KEEP);
    CHECK(st.plain_locked <= st.plain_arena_bytes);
    secmem_plain_budget(0);                  /* releases the kept arenas */
    st = stats_now();
    CHECK(st.plain_locked == 0 && st.plain_unlocked == 0 && st.plain_arena_bytes == 0);
    CHECK(!LOCKS_REAL || vmlck() <= before);
}

/* Many small buffers freed: the arenas left mapped drop back under the
 * bound, all of them free. */
static void test_plain_small_arenas_bounded(void)
{
    enum { N = 1500 };
    static uint8_t *b[N];
    struct secmem_stats st;

    arenas_reset(512 * MIB);
    for (unsigned i = 0; i < N; i++) {
        b[i] = secmem_plain_alloc(1000 + (size_t)i * 104729 % (120 << 10));
        REQUIRE(b[i]);
        b[i][0] = 1;
    }
    st = stats_now();
    CHECK(st.plain_arena_bytes > 32 * MIB);
    /* freed in an order that leaves arenas partly used for a while */
    for (unsigned i = 0; i < N; i += 2)
        secmem_plain_free(b[i]);
    for (unsigned i = 1; i < N; i += 2)
        secmem_plain_free(b[i]);
    st = stats_now();
    CHECK(st.plain_arena_bytes <= SECMEM_PLAIN_ARENA_KEEP);
    CHECK(st.plain_arena_free == st.plain_arena_bytes);
    CHECK(st.plain_locked == st.plain_arena_bytes);
    CHECK(st.plain_unlocked == 0);
    secmem_plain_budget(0);
    CHECK(stats_now().plain_arena_bytes == 0);
}

struct churn_arg {
    unsigned seed, bad;
};

static void *churn(void *v)
{
    struct churn_arg *a = v;
    uint8_t *held[16] = { 0 };
    size_t len[16] = { 0 };

    for (unsigned i = 0; i < 6000; i++) {
        unsigned k = (a->seed = a->seed * 1103515245u + 12345u) >> 16 & 15;
        if (held[k]) {
            a->bad += held[k][0] != (uint8_t)k || held[k][len[k] - 1] != (uint8_t)k;
            secmem_plain_free_upto(held[k], len[k]);
            held[k] = NULL;
        } else {
            len[k] = 1 + (a->seed >> 4) % (100 << 10);
            held[k] = secmem_plain_alloc(len[k]);
            if (!held[k]) {
                a->bad++;
                continue;
            }
            a->bad += count_nonzero(held[k], len[k]) != 0;   /* handed out zeroed */
            memset(held[k], (int)k, len[k]);
        }
    }
    for (unsigned k = 0; k < 16; k++)
        secmem_plain_free(held[k]);
    return NULL;
}

/* Threads allocating and freeing small buffers concurrently get zeroed,
 * private slots; the counters end at zero. */
static void test_plain_small_threads(void)
{
    pthread_t t[4];
    struct churn_arg a[4];
    unsigned bad = 0;

    arenas_reset(8 * MIB);                   /* some arenas locked, some not */
    for (unsigned i = 0; i < 4; i++) {
        a[i] = (struct churn_arg){ .seed = i + 1 };
        REQUIRE(pthread_create(&t[i], NULL, churn, &a[i]) == 0);
    }
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        bad += a[i].bad;
    }
    CHECK_EQ_INT((int)bad, 0);
    CHECK(stats_now().plain_unlocked == 0);
    secmem_plain_budget(0);
    CHECK(stats_now().plain_locked == 0);
}

static int dies_by_abort(void (*fn)(void))
{
    int status = 0;
    pid_t c = fork();

    if (c == 0) {
        signal(SIGABRT, SIG_DFL);
        fn();
        _exit(0);
    }
    if (c < 0 || waitpid(c, &status, 0) != c)
        return 0;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void free_foreign(void)
{
    static uint8_t fake[256];

    memset(fake, 0x41, sizeof fake);
    secmem_plain_free(fake + 64);
}

static void free_twice(void)
{
    uint8_t *keep = secmem_plain_alloc(100), *p = secmem_plain_alloc(100);

    (void)keep;   /* keeps the arena mapped: the second free finds a free slot */
    secmem_plain_free(p);
    secmem_plain_free(p);
}

static void free_inside_slot(void)
{
    uint8_t *p = secmem_plain_alloc(3 * PG);

    /* a copy of the header at the wrong place in the slot */
    memcpy(p + PG, p - 64, 64);
    secmem_plain_free(p + PG + 64);
}

/* A pointer that is not a live buffer of the pool aborts the process
 * rather than freeing (and wiping or unmapping) someone else's memory. */
static void test_plain_bad_header_aborts(void)
{
    CHECK(dies_by_abort(free_foreign));
    CHECK(dies_by_abort(free_twice));
    CHECK(dies_by_abort(free_inside_slot));
}

static void test_openssl_heap_holds_private_keys(void)
{
    EVP_PKEY *key;

    CHECK_EQ_INT(secmem_init_openssl_heap(), 0);
    CHECK(CRYPTO_secure_malloc_initialized());
    CHECK(CRYPTO_secure_used() == 0);
    key = rsa_generate(RSA_MIN_BITS);
    REQUIRE(key);
    CHECK(CRYPTO_secure_used() > 0);      /* d, p, q, ... live in the locked heap */
    EVP_PKEY_free(key);
}

/* What the unprivileged child saw. */
struct low_limit_report {
    int dropped_root;
    int key_ok;                 /* a key page was handed out under 8 MiB */
    size_t vmlck_with_key;
    size_t budget;              /* plaintext budget under 8 MiB */
    int plain_ok;
    size_t plain_unlocked;
    int says_not_locked;        /* the mount log line says so */
    int heap_refused_64k;       /* OpenSSL heap refused under 64 KiB */
    int keys_refused_64k;       /* key pages refused once 64 KiB are used */
    int refusal_names_limit;
};

static void low_limit_child(int fd)
{
    struct low_limit_report r = { 0 };
    struct rlimit rl = { 8 * MIB, 8 * MIB };
    char line[1024];
    static void *keys[KEYS_TRIED];
    unsigned nkeys = 0;
    uint8_t *plain[12];

    r.dropped_root = getuid() != 0 || setuid(65534) == 0;
    if (setrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
        uint8_t *k = secmem_alloc(32);
        r.key_ok = k != NULL;
        r.vmlck_with_key = vmlck();
        r.budget = secmem_plain_budget(512 * MIB);
        r.plain_ok = 1;
        for (unsigned i = 0; i < 12; i++) {
            plain[i] = secmem_plain_alloc(MIB - 4096);
            r.plain_ok &= plain[i] != NULL;
            if (plain[i])
                memset(plain[i], 7, MIB - 4096);
        }
        struct secmem_stats st;
        secmem_stats(&st);
        r.plain_unlocked = st.plain_unlocked;
        secmem_describe(line, sizeof line);
        r.says_not_locked = strstr(line, "NOT locked") && strstr(line, "RLIMIT_MEMLOCK 8192 KiB");
        for (unsigned i = 0; i < 12; i++)
            secmem_plain_free(plain[i]);
        secmem_plain_budget(0);
        secmem_free(k, 32);
    }
    rl.rlim_cur = rl.rlim_max = 64 << 10;
    if (setrlimit(RLIMIT_MEMLOCK, &rl) == 0 && vmlck() < (64 << 10)) {
        r.heap_refused_64k = secmem_init_openssl_heap() < 0;
        while (nkeys < KEYS_TRIED && (keys[nkeys] = secmem_alloc(32)) != NULL)
            nkeys++;
        r.keys_refused_64k = nkeys < KEYS_TRIED;
        r.refusal_names_limit = strstr(pfs_err_msg(), "RLIMIT_MEMLOCK 64 KiB") != NULL;
        while (nkeys)
            secmem_free(keys[--nkeys], 32);
    }
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(2);
    _exit(0);
}

static void test_ordinary_user_limits(void)
{
    struct low_limit_report r;
    int p[2], status = 0;
    pid_t child;

    REQUIRE(pipe(p) == 0);
    child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        close(p[0]);
        low_limit_child(p[1]);
    }
    close(p[1]);
    REQUIRE(read(p[0], &r, sizeof r) == (ssize_t)sizeof r);
    close(p[0]);
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(r.dropped_root);
    /* 8 MiB, no CAP_IPC_LOCK: keys are locked, and so is plaintext up to
     * what the limit leaves; the rest works unlocked and the log says so. */
    CHECK(r.key_ok);
    CHECK(!LOCKS_REAL || r.vmlck_with_key >= 4096);
    CHECK(r.budget > 0 && r.budget <= 7 * MIB);
    CHECK(r.plain_ok);
    CHECK(r.plain_unlocked >= 4 * MIB);
    CHECK(r.says_not_locked);
    /* Below what keys need: refused with a message, never unlocked keys. */
    if (LOCKS_REAL) {
        CHECK(r.heap_refused_64k);
        CHECK(r.keys_refused_64k);
        CHECK(r.refusal_names_limit);
    }
}

int main(void)
{
    /* First: a forked child inherits no memory locks, only the state. */
    RUN(test_ordinary_user_limits);
    RUN(test_key_pages_locked_and_wiped);
    RUN(test_plain_pool_locks_to_budget);
    RUN(test_plain_free_upto_wipes_what_was_written);
    RUN(test_plain_small_buffers_share_arenas);
    RUN(test_plain_small_slots_wiped_before_reuse);
    RUN(test_plain_small_accounting_past_budget);
    RUN(test_plain_small_arenas_bounded);
    RUN(test_plain_small_threads);
    RUN(test_plain_bad_header_aborts);
    RUN(test_openssl_heap_holds_private_keys);
    return tap_done();
}
