#include "config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "error.h"
#include "secmem.h"

static atomic_ulong lock_failures;

/* Allocations are whole pages: munlock() on free must not unlock a page
 * shared with another live secret, and madvise(MADV_DONTDUMP) needs page
 * alignment.  Key buffers are few and small, so the waste is acceptable. */
static size_t page_size(void)
{
    long ps = sysconf(_SC_PAGESIZE);   /* a constant in glibc, no syscall */
    return ps > 0 ? (size_t)ps : 4096;
}

static size_t round_to_pages(size_t n)
{
    size_t ps = page_size();
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX - ps)
        return 0;
    return (n + ps - 1) / ps * ps;
}

void *secmem_alloc(size_t n)
{
    size_t len = round_to_pages(n);
    void *p = NULL;

    if (len == 0 || posix_memalign(&p, page_size(), len) != 0)
        return NULL;
    memset(p, 0, len);
    if (mlock(p, len) != 0)
        atomic_fetch_add(&lock_failures, 1);
#ifdef MADV_DONTDUMP
    (void)madvise(p, len, MADV_DONTDUMP);
#endif
    return p;
}

void secmem_free(void *p, size_t n)
{
    size_t len;

    if (!p)
        return;
    len = round_to_pages(n);
    /* Wipe the whole allocation: callers may have written past n. */
    OPENSSL_cleanse(p, len);
#ifdef MADV_DODUMP
    (void)madvise(p, len, MADV_DODUMP);
#endif
    (void)munlock(p, len);
    free(p);
}

void secmem_wipe(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}

char *secmem_strdup(const char *s)
{
    size_t n;
    char *d;

    if (!s)
        return NULL;
    n = strlen(s) + 1;
    d = secmem_alloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void secmem_free_str(char *s)
{
    /* Rounding to whole pages wipes every byte, even if the string was
     * shortened after the copy. */
    if (s)
        secmem_free(s, strlen(s) + 1);
}

unsigned long secmem_lock_failures(void)
{
    return atomic_load(&lock_failures);
}

int secmem_harden_process(void)
{
    struct rlimit no_core = { 0, 0 };

    if (setrlimit(RLIMIT_CORE, &no_core) != 0)
        return pfs_err(-errno, "cannot disable core dumps (setrlimit RLIMIT_CORE): %s",
                       strerror(errno));
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return pfs_err(-errno, "cannot mark the process non-dumpable (prctl): %s",
                       strerror(errno));
    return 0;
}

int secmem_lock_all(void)
{
    if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0)
        return pfs_err(-errno, "cannot lock process memory (mlockall): %s; raise "
                       "RLIMIT_MEMLOCK (ulimit -l, LimitMEMLOCK= in systemd) or grant "
                       "CAP_IPC_LOCK", strerror(errno));
    return 0;
}
