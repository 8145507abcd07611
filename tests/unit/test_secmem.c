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
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>

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
    RUN(test_openssl_heap_holds_private_keys);
    return tap_done();
}
