#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <malloc.h>
#include <openssl/crypto.h>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#define SLOT_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define SLOT_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define SLOT_POISON(p, n) ((void)(p), (void)(n))
#define SLOT_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#include "error.h"
#include "log.h"
#include "secmem.h"

/* Room kept for key pages when the plaintext budget is cut to the limit:
 * one page per open file's data key, folder keys, shares, TLS keys. */
#define KEY_RESERVE ((size_t)1 << 20)
/* OpenSSL secure heap: private-key numbers of the account and root keys
 * and the temporaries of private-key operations (a power of two). */
#define OPENSSL_HEAP_SIZE ((size_t)128 << 10)
#define OPENSSL_HEAP_MIN 32
/* Freed large plaintext buffers (chunks) kept (wiped, still locked) for
 * reuse, so a busy cache does not map and lock a fresh chunk for every
 * miss.  Small buffers are arena slots (below). */
#define PLAIN_SPARES 8
#define PLAIN_SPARE_MAX ((size_t)4 << 20)
#define PLAIN_MAGIC 0x70667370u   /* "pfsp" */

static atomic_ulong lock_failures;
static atomic_size_t key_bytes;
static atomic_int warned_once;

/* ------------------------------------------------------------ limits */

static size_t page_size(void)
{
    long ps = sysconf(_SC_PAGESIZE);   /* a constant in glibc, no syscall */
    return ps > 0 ? (size_t)ps : 4096;
}

/* len bytes of fresh anonymous memory (all zeros) kept out of core dumps;
 * NULL if it cannot be mapped.  Key slabs, plaintext arenas and plaintext
 * buffers of their own all start here. */
static void *map_nodump(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_DONTDUMP
    (void)madvise(p, len, MADV_DONTDUMP);
#endif
    return p;
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

/* A "Name: value" field of /proc/self/status, as text after the colon. */
static int proc_status_field(const char *name, char *out, size_t outlen)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    size_t nl = strlen(name);
    int found = -1;

    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, name, nl) && line[nl] == ':') {
            snprintf(out, outlen, "%s", line + nl + 1);
            found = 0;
            break;
        }
    fclose(f);
    return found;
}

static size_t locked_now(void)
{
    char v[64];
    unsigned long long kib = 0;

    if (proc_status_field("VmLck", v, sizeof v) == 0)
        sscanf(v, "%llu", &kib);
    return (size_t)kib << 10;
}

static int have_cap_ipc_lock(void)
{
    char v[64];
    unsigned long long caps = 0;

    if (proc_status_field("CapEff", v, sizeof v) != 0 || sscanf(v, "%llx", &caps) != 1)
        return 0;
    return (caps >> 14) & 1;   /* CAP_IPC_LOCK */
}

/* RLIMIT_MEMLOCK in bytes; SIZE_MAX when it does not apply. */
static size_t memlock_limit(void)
{
    struct rlimit rl;

    if (have_cap_ipc_lock() || getrlimit(RLIMIT_MEMLOCK, &rl) != 0
        || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= SIZE_MAX)
        return SIZE_MAX;
    return (size_t)rl.rlim_cur;
}

static void limit_text(char *buf, size_t len)
{
    size_t lim = memlock_limit();

    if (lim == SIZE_MAX)
        snprintf(buf, len, "%s", have_cap_ipc_lock() ? "no limit (CAP_IPC_LOCK)"
                                                     : "RLIMIT_MEMLOCK unlimited");
    else
        snprintf(buf, len, "RLIMIT_MEMLOCK %zu KiB", lim >> 10);
}

/* ------------------------------------------------------------ keys */

static void key_lock_failed(size_t len, int err)
{
    char lim[64];

    limit_text(lim, sizeof lim);
    atomic_fetch_add(&lock_failures, 1);
    pfs_err(-ENOMEM, "cannot lock %zu bytes of key memory in RAM (mlock: %s; %s, %zu KiB "
            "locked already): refusing to keep keys in swappable memory; raise the limit "
            "(LimitMEMLOCK= in the systemd unit, ulimit -l, limits.conf) or grant "
            "CAP_IPC_LOCK", len, strerror(err), lim, locked_now() >> 10);
    /* Callers may replace the message with a shorter one: say it once here. */
    if (atomic_exchange(&warned_once, 1) == 0)
        log_error("%s", pfs_err_msg());
}

/* Small keys (an open file's data and commitment keys, 32 bytes each,
 * allocated and freed for every file opened, created or committed) come
 * from slots of locked slabs: a page of its own per key cost four system
 * calls per allocation and four per free (mlock, madvise, munlock...),
 * about 3 % of the daemon's time in tar x and 10 % in rm -rf.  A slab is
 * mapped, locked and excluded from dumps once and never unlocked (so no
 * munlock can unlock a neighbour); a freed slot is wiped whole before it
 * goes back on the free list (which links the wiped slots through their
 * first word) and zeroed again when handed out. */
#define KEY_SLOT 64
#define KEY_SLAB_LEN ((size_t)16 << 10)
#define KEY_SLABS_MAX 256

static struct {
    pthread_mutex_t lock;
    uint8_t *base[KEY_SLABS_MAX];
    unsigned n;
    void *free_list;
} slabs = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* A new slab's slots on the free list (slabs.lock held); 0 or -1. */
static int slab_grow(void)
{
    uint8_t *b;

    if (slabs.n == KEY_SLABS_MAX)
        return -1;
    b = map_nodump(KEY_SLAB_LEN);
    if (!b)
        return -1;
    if (mlock(b, KEY_SLAB_LEN) != 0) {
        munmap(b, KEY_SLAB_LEN);
        return -1;   /* the page path below reports the limit */
    }
    for (size_t off = KEY_SLAB_LEN; off >= KEY_SLOT; off -= KEY_SLOT) {
        void **slot = (void **)(b + off - KEY_SLOT);
        *slot = slabs.free_list;
        slabs.free_list = slot;
    }
    slabs.base[slabs.n++] = b;
    atomic_fetch_add(&key_bytes, KEY_SLAB_LEN);
    return 0;
}

static void *slot_alloc(void)
{
    void *p = NULL;

    pthread_mutex_lock(&slabs.lock);
    if (slabs.free_list || slab_grow() == 0) {
        p = slabs.free_list;
        slabs.free_list = *(void **)p;
    }
    pthread_mutex_unlock(&slabs.lock);
    if (p)
        memset(p, 0, KEY_SLOT);
    return p;
}

/* 1 if p is a slot (then wiped and freed), 0 if not. */
static int slot_free(void *p)
{
    uint8_t *q = p;
    int mine = 0;

    pthread_mutex_lock(&slabs.lock);
    for (unsigned i = 0; i < slabs.n && !mine; i++)
        mine = q >= slabs.base[i] && q < slabs.base[i] + KEY_SLAB_LEN;
    pthread_mutex_unlock(&slabs.lock);
    if (!mine)
        return 0;
    OPENSSL_cleanse(p, KEY_SLOT);
    pthread_mutex_lock(&slabs.lock);
    *(void **)p = slabs.free_list;
    slabs.free_list = p;
    pthread_mutex_unlock(&slabs.lock);
    return 1;
}

/* Larger allocations are whole pages: munlock() on free must not unlock a
 * page shared with another live secret, and madvise(MADV_DONTDUMP) needs
 * page alignment.  Such buffers are few, so the waste is acceptable. */
void *secmem_alloc(size_t n)
{
    size_t len = round_to_pages(n);
    void *p = NULL;

    if (n > 0 && n <= KEY_SLOT && (p = slot_alloc()) != NULL)
        return p;
    if (len == 0 || posix_memalign(&p, page_size(), len) != 0)
        return NULL;
    memset(p, 0, len);
    if (mlock(p, len) != 0) {
        int err = errno;

        free(p);
        key_lock_failed(len, err);
        return NULL;
    }
    atomic_fetch_add(&key_bytes, len);
#ifdef MADV_DONTDUMP
    (void)madvise(p, len, MADV_DONTDUMP);
#endif
    return p;
}

int secmem_relock(void *p, size_t n)
{
    size_t len = round_to_pages(n);

    if (p && mlock(p, len) != 0) {
        key_lock_failed(len, errno);
        return -ENOMEM;
    }
    return 0;
}

void secmem_free(void *p, size_t n)
{
    size_t len;

    if (!p || slot_free(p))
        return;
    len = round_to_pages(n);
    /* Wipe the whole allocation: callers may have written past n. */
    OPENSSL_cleanse(p, len);
#ifdef MADV_DODUMP
    (void)madvise(p, len, MADV_DODUMP);
#endif
    (void)munlock(p, len);
    atomic_fetch_sub(&key_bytes, len);
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

/* Vector registers keep whatever the last string or crypto routine loaded
 * (glibc's strlen and memcpy, SHA, AES-NI, Argon2): a password among them.
 * They are copied into a new thread at pthread_create() and written to the
 * stack whenever they are saved (the dynamic linker's lazy binding, signal
 * delivery), so a password that was wiped in memory reappeared in a thread
 * stack of the mounted daemon.  Zero them after handling a secret. */
#if defined(__x86_64__)
static void clear_zmm_high(void)
{
    __asm__ volatile(
        "vpxord %%zmm16, %%zmm16, %%zmm16\n\tvpxord %%zmm17, %%zmm17, %%zmm17\n\t"
        "vpxord %%zmm18, %%zmm18, %%zmm18\n\tvpxord %%zmm19, %%zmm19, %%zmm19\n\t"
        "vpxord %%zmm20, %%zmm20, %%zmm20\n\tvpxord %%zmm21, %%zmm21, %%zmm21\n\t"
        "vpxord %%zmm22, %%zmm22, %%zmm22\n\tvpxord %%zmm23, %%zmm23, %%zmm23\n\t"
        "vpxord %%zmm24, %%zmm24, %%zmm24\n\tvpxord %%zmm25, %%zmm25, %%zmm25\n\t"
        "vpxord %%zmm26, %%zmm26, %%zmm26\n\tvpxord %%zmm27, %%zmm27, %%zmm27\n\t"
        "vpxord %%zmm28, %%zmm28, %%zmm28\n\tvpxord %%zmm29, %%zmm29, %%zmm29\n\t"
        "vpxord %%zmm30, %%zmm30, %%zmm30\n\tvpxord %%zmm31, %%zmm31, %%zmm31"
        ::: "memory");
}
#endif

/* The stack below the caller: deeper calls that handled the secret (and
 * register spills, e.g. by the dynamic linker's lazy binding) left copies
 * there. */
static void __attribute__((noinline)) wipe_stack_below(void)
{
    unsigned char pad[64 * 1024];

    OPENSSL_cleanse(pad, sizeof pad);
    __asm__ volatile("" : : "r"(pad) : "memory");
}

void secmem_clear_registers(void)
{
    wipe_stack_below();
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f"))
        clear_zmm_high();
    if (__builtin_cpu_supports("avx"))
        __asm__ volatile("vzeroall" ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5",
                         "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
                         "xmm13", "xmm14", "xmm15", "memory");
    else
        __asm__ volatile(
            "pxor %%xmm0, %%xmm0\n\tpxor %%xmm1, %%xmm1\n\tpxor %%xmm2, %%xmm2\n\t"
            "pxor %%xmm3, %%xmm3\n\tpxor %%xmm4, %%xmm4\n\tpxor %%xmm5, %%xmm5\n\t"
            "pxor %%xmm6, %%xmm6\n\tpxor %%xmm7, %%xmm7\n\tpxor %%xmm8, %%xmm8\n\t"
            "pxor %%xmm9, %%xmm9\n\tpxor %%xmm10, %%xmm10\n\tpxor %%xmm11, %%xmm11\n\t"
            "pxor %%xmm12, %%xmm12\n\tpxor %%xmm13, %%xmm13\n\tpxor %%xmm14, %%xmm14\n\t"
            "pxor %%xmm15, %%xmm15"
            ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory");
#endif
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

int secmem_init_openssl_heap(void)
{
    char lim[64];
    int r;

    if (CRYPTO_secure_malloc_initialized())
        return 0;
    r = CRYPTO_secure_malloc_init(OPENSSL_HEAP_SIZE, OPENSSL_HEAP_MIN);
    if (r == 1)
        return 0;
    if (r == 2)
        CRYPTO_secure_malloc_done();   /* made but not locked: do not use it */
    limit_text(lim, sizeof lim);
    atomic_fetch_add(&lock_failures, 1);
    return pfs_err(-ENOMEM, "cannot lock the %zu KiB secure heap for private keys (%s, "
                   "%zu KiB locked already): raise the limit (LimitMEMLOCK= in the systemd "
                   "unit, ulimit -l) or grant CAP_IPC_LOCK", OPENSSL_HEAP_SIZE >> 10, lim,
                   locked_now() >> 10);
}

/* ------------------------------------------------------------ plaintext */

/* Every buffer has this header in front: a large buffer (more than
 * SECMEM_PLAIN_SMALL_MAX) is its own anonymous mapping, a small one a slot
 * of an arena. */
struct plain_arena;
struct plain_hdr {
    uint32_t magic;              /* PLAIN_MAGIC in use, PLAIN_FREE a free slot */
    uint32_t locked;
    size_t maplen;               /* mapping length, or the arena's slot length */
    struct plain_arena *arena;   /* NULL: a mapping of its own */
    struct plain_hdr *next_free; /* a free slot: the next one of its arena */
};
#define PLAIN_HDR_LEN 64
_Static_assert(sizeof(struct plain_hdr) <= PLAIN_HDR_LEN, "plain_hdr fits its 64 bytes");
#define PLAIN_FREE 0x70667366u    /* "pfsf" */

/* Small buffers (read replies, the read-ahead of small files and the cache
 * entries that keep them) come from size classes carved out of arenas: a
 * mapping of its own per buffer cost an mmap, an madvise, an mlock, a page
 * fault per page and an munmap for every small file read, 10.6 % of the
 * daemon's CPU in a cold read of 4,000 small files.
 *
 * A class is a whole number of pages, header included, at most 25 % over
 * the page-rounded size (29-33 pages is the largest class: a 128 KiB read
 * reply plus its header).  An arena holds slots of one class, about
 * PLAIN_ARENA_TARGET bytes and at least PLAIN_ARENA_MIN_SLOTS slots; it is
 * mapped, excluded from dumps and locked once (locked if the budget has
 * room for the whole arena, else unlocked; an arena never changes) and
 * unmapped whole.  A freed slot is wiped as far as it was written, as
 * secmem_plain_free_upto says, before it goes back on its arena's free
 * list, so a free slot holds zeros apart from its header (no secret: the
 * magic, the class and the list link).  Allocation takes a slot of a
 * locked arena of the class first, then a new locked arena while the
 * budget has room, then an unlocked arena's slot, then a new unlocked
 * arena.
 *
 * Bound: an arena all of whose slots are free is unmapped at once unless
 * the entirely free arenas kept would exceed SECMEM_PLAIN_ARENA_KEEP
 * (2 MiB); secmem_plain_budget() unmaps every entirely free arena.  So
 * once the cache and the write buffers are dropped, at most 2 MiB of
 * arenas stay mapped.  Free slots in an arena that still holds a live
 * buffer stay with it (a class's arenas are filled from the head of its
 * list and arenas that regain a free slot go to the tail, so live buffers
 * gather in few arenas); live small buffers are bounded by their owners
 * (the cache's budget, the dirty limit, the requests in flight).  At
 * worst (one live buffer left in each arena) the slack is an arena per
 * live buffer; in practice buffers allocated together (one read pass)
 * are evicted together.
 *
 * Accounting, as for buffers of their own: pool.locked is every locked
 * byte (whole locked arenas, with their free slots, as it counts locked
 * spares), pool.unlocked the bytes of the unlocked slots in use. */
static const uint8_t plain_class_pages[] = { 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16,
                                             20, 24, 28, 33 };
#define PLAIN_CLASSES (sizeof plain_class_pages / sizeof plain_class_pages[0])
#define PLAIN_ARENA_TARGET ((size_t)512 << 10)
#define PLAIN_ARENA_MIN_SLOTS 4
_Static_assert(SECMEM_PLAIN_SMALL_MAX == 33 * 4096 - PLAIN_HDR_LEN,
               "SECMEM_PLAIN_SMALL_MAX is the largest class's slot less the header");

struct plain_arena {
    struct plain_arena *prev, *next;   /* on pool.avail[cls][locked] while a slot is free */
    uint8_t *base;
    size_t len, slot;
    unsigned nslots, nfree, cls;
    int locked, listed;
    struct plain_hdr *free;
};

static struct {
    pthread_mutex_t lock;
    size_t budget, want;
    size_t locked;             /* locked bytes, in use, spare or arenas */
    size_t unlocked;           /* unlocked bytes in use */
    unsigned long unlocked_allocs;
    void *spare[PLAIN_SPARES];
    unsigned nspare;
    /* arenas with a free slot, per class, [0] unlocked and [1] locked */
    struct plain_arena *avail[PLAIN_CLASSES][2], *avail_tail[PLAIN_CLASSES][2];
    size_t arena_bytes;        /* mapped by arenas */
    size_t arena_free;         /* in their free slots */
    size_t empty_bytes;        /* in arenas whose slots are all free */
    unsigned narenas;
} pool = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void plain_unmap(void *base, size_t len, int locked);
static void plain_arenas_release_empty(size_t keep);

/* Unmap the spare buffers (they are wiped already). */
static void plain_spares_release(void)
{
    for (;;) {
        struct plain_hdr *h = NULL;

        pthread_mutex_lock(&pool.lock);
        if (pool.nspare)
            h = pool.spare[--pool.nspare];
        pthread_mutex_unlock(&pool.lock);
        if (!h)
            return;
        h->magic = 0;
        plain_unmap(h, h->maplen, (int)h->locked);
    }
}

size_t secmem_plain_budget(size_t want)
{
    size_t lim, used, budget = want;

    plain_spares_release();
    plain_arenas_release_empty(0);
    lim = memlock_limit();
    used = locked_now();

    if (lim != SIZE_MAX) {
        size_t room = lim > used + KEY_RESERVE ? lim - used - KEY_RESERVE : 0;
        if (room < budget)
            budget = room;
    }
    pthread_mutex_lock(&pool.lock);
    pool.want = want;
    pool.budget = budget;
    pthread_mutex_unlock(&pool.lock);
    return budget;
}

static struct plain_hdr *plain_hdr(void *p)
{
    struct plain_hdr *h = (struct plain_hdr *)((uint8_t *)p - PLAIN_HDR_LEN);
    const struct plain_arena *a;

    if (h->magic != PLAIN_MAGIC)
        abort();   /* not from secmem_plain_alloc, or freed: a bug, never continue */
    a = h->arena;
    if (a && ((uint8_t *)h < a->base || (uint8_t *)h >= a->base + a->len
              || (size_t)((uint8_t *)h - a->base) % a->slot != 0 || h->maplen != a->slot))
        abort();   /* a header that does not belong to its arena's slots */
    return h;
}

/* ---- arenas (pool.lock held unless said otherwise) */

static void arena_list_add(struct plain_arena *a)
{
    struct plain_arena **head = &pool.avail[a->cls][a->locked];
    struct plain_arena **tail = &pool.avail_tail[a->cls][a->locked];

    a->next = NULL;
    a->prev = *tail;
    if (*tail)
        (*tail)->next = a;
    else
        *head = a;
    *tail = a;
    a->listed = 1;
}

static void arena_list_del(struct plain_arena *a)
{
    if (!a->listed)
        return;
    if (a->prev)
        a->prev->next = a->next;
    else
        pool.avail[a->cls][a->locked] = a->next;
    if (a->next)
        a->next->prev = a->prev;
    else
        pool.avail_tail[a->cls][a->locked] = a->prev;
    a->prev = a->next = NULL;
    a->listed = 0;
}

static size_t arena_len(unsigned cls)
{
    size_t slot = plain_class_pages[cls] * page_size();
    size_t n = PLAIN_ARENA_TARGET / slot;

    return (n < PLAIN_ARENA_MIN_SLOTS ? PLAIN_ARENA_MIN_SLOTS : n) * slot;
}

/* A new arena of class cls, locked if lock is set and mlock works; its
 * slots all free.  No lock held (system calls). */
static struct plain_arena *arena_map(unsigned cls, int lock)
{
    struct plain_arena *a = calloc(1, sizeof *a);

    if (!a)
        return NULL;
    a->cls = cls;
    a->slot = plain_class_pages[cls] * page_size();
    a->len = arena_len(cls);
    a->nslots = a->nfree = (unsigned)(a->len / a->slot);
    a->base = map_nodump(a->len);
    if (!a->base) {
        free(a);
        return NULL;
    }
    a->locked = lock && mlock(a->base, a->len) == 0;
    for (unsigned i = a->nslots; i-- > 0;) {
        struct plain_hdr *h = (struct plain_hdr *)(a->base + (size_t)i * a->slot);

        h->magic = PLAIN_FREE;
        h->locked = (uint32_t)a->locked;
        h->maplen = a->slot;
        h->arena = a;
        h->next_free = a->free;
        a->free = h;
        /* under ASan a free slot's data is poisoned: a use after free is
         * caught there (here it would read another file's plaintext) */
        SLOT_POISON((uint8_t *)h + PLAIN_HDR_LEN, a->slot - PLAIN_HDR_LEN);
    }
    return a;
}

/* Count a new arena in (its locked bytes were reserved by the caller). */
static void arena_insert(struct plain_arena *a)
{
    pool.narenas++;
    pool.arena_bytes += a->len;
    pool.arena_free += a->len;
    pool.empty_bytes += a->len;
    arena_list_add(a);
}

/* Count an entirely free arena out; the caller unmaps it. */
static void arena_remove(struct plain_arena *a)
{
    arena_list_del(a);
    pool.narenas--;
    pool.arena_bytes -= a->len;
    pool.arena_free -= a->len;
    pool.empty_bytes -= a->len;
    if (a->locked)
        pool.locked -= a->len;
}

/* No lock held; munmap unlocks what it unmaps. */
static void arena_unmap(struct plain_arena *a)
{
    SLOT_UNPOISON(a->base, a->len);
    (void)munmap(a->base, a->len);
    free(a);
}

static struct plain_hdr *arena_take(struct plain_arena *a)
{
    struct plain_hdr *h = a->free;

    if (h->magic != PLAIN_FREE || h->arena != a)
        abort();   /* the free list was overwritten */
    if (a->nfree == a->nslots)
        pool.empty_bytes -= a->len;
    a->free = h->next_free;
    a->nfree--;
    pool.arena_free -= a->slot;
    if (a->nfree == 0)
        arena_list_del(a);
    if (!a->locked) {
        pool.unlocked += a->slot;
        pool.unlocked_allocs++;
    }
    h->next_free = NULL;
    h->magic = PLAIN_MAGIC;
    SLOT_UNPOISON((uint8_t *)h + PLAIN_HDR_LEN, a->slot - PLAIN_HDR_LEN);
    return h;
}

static unsigned plain_class(size_t need)
{
    size_t pages = (need + page_size() - 1) / page_size();
    unsigned c = 0;

    while (plain_class_pages[c] < pages)
        c++;
    return c;
}

/* A slot for need bytes (header included, at most the largest class). */
static struct plain_hdr *arena_alloc(size_t need)
{
    unsigned cls = plain_class(need);
    size_t len = arena_len(cls);
    struct plain_arena *a;
    struct plain_hdr *h;
    int reserve;

    pthread_mutex_lock(&pool.lock);
    a = pool.avail[cls][1];
    if (!a) {
        reserve = pool.locked + len <= pool.budget;
        a = reserve ? NULL : pool.avail[cls][0];
        if (!a) {
            if (reserve)
                pool.locked += len;
            pthread_mutex_unlock(&pool.lock);
            a = arena_map(cls, reserve);
            pthread_mutex_lock(&pool.lock);
            if (reserve && (!a || !a->locked))
                pool.locked -= len;
            if (!a) {
                pthread_mutex_unlock(&pool.lock);
                return NULL;
            }
            arena_insert(a);
        }
    }
    h = arena_take(a);
    pthread_mutex_unlock(&pool.lock);
    return h;
}

/* h's slot back on its arena's free list, wiped already; its arena is
 * unmapped if all its slots are free and the entirely free arenas kept
 * would exceed SECMEM_PLAIN_ARENA_KEEP. */
static void arena_free(struct plain_hdr *h)
{
    struct plain_arena *a = h->arena, *gone = NULL;

    SLOT_POISON((uint8_t *)h + PLAIN_HDR_LEN, a->slot - PLAIN_HDR_LEN);
    pthread_mutex_lock(&pool.lock);
    h->magic = PLAIN_FREE;
    h->next_free = a->free;
    a->free = h;
    a->nfree++;
    pool.arena_free += a->slot;
    if (!a->locked)
        pool.unlocked -= a->slot;
    if (a->nfree == a->nslots) {
        pool.empty_bytes += a->len;
        arena_list_del(a);
        if (pool.empty_bytes > SECMEM_PLAIN_ARENA_KEEP) {
            arena_remove(a);
            gone = a;
        } else {
            arena_list_add(a);   /* at the tail: the partly used ones fill first */
        }
    } else if (a->nfree == 1) {
        arena_list_add(a);
    }
    pthread_mutex_unlock(&pool.lock);
    if (gone)
        arena_unmap(gone);
}

/* Unmap entirely free arenas until at most keep bytes of them are left. */
static void plain_arenas_release_empty(size_t keep)
{
    struct plain_arena *gone = NULL;

    pthread_mutex_lock(&pool.lock);
    for (unsigned c = 0; c < PLAIN_CLASSES; c++)
        for (int l = 0; l < 2; l++)
            for (struct plain_arena *a = pool.avail[c][l], *next; a; a = next) {
                next = a->next;
                if (a->nfree != a->nslots || pool.empty_bytes <= keep)
                    continue;
                arena_remove(a);
                a->next = gone;
                gone = a;
            }
    pthread_mutex_unlock(&pool.lock);
    while (gone) {
        struct plain_arena *a = gone;

        gone = a->next;
        arena_unmap(a);
    }
}

/* ---- buffers of their own */

static void *plain_spare_take(size_t maplen)
{
    void *base = NULL;

    pthread_mutex_lock(&pool.lock);
    for (unsigned i = 0; i < pool.nspare; i++) {
        struct plain_hdr *h = pool.spare[i];
        if (h->maplen == maplen) {
            base = h;
            pool.spare[i] = pool.spare[--pool.nspare];
            break;
        }
    }
    pthread_mutex_unlock(&pool.lock);
    return base;
}

/* Lock [base, base+len) if the budget has room; the header says which. */
static void plain_account_new(struct plain_hdr *h)
{
    int reserve;

    pthread_mutex_lock(&pool.lock);
    reserve = pool.locked + h->maplen <= pool.budget;
    if (reserve)
        pool.locked += h->maplen;
    pthread_mutex_unlock(&pool.lock);
    h->locked = reserve && mlock(h, h->maplen) == 0;
    pthread_mutex_lock(&pool.lock);
    if (reserve && !h->locked)
        pool.locked -= h->maplen;
    if (!h->locked) {
        pool.unlocked += h->maplen;
        pool.unlocked_allocs++;
    }
    pthread_mutex_unlock(&pool.lock);
}

void *secmem_plain_alloc(size_t n)
{
    size_t maplen;
    struct plain_hdr *h;

    if (n <= SECMEM_PLAIN_SMALL_MAX) {
        h = arena_alloc((n ? n : 1) + PLAIN_HDR_LEN);
        return h ? (uint8_t *)h + PLAIN_HDR_LEN : NULL;
    }
    maplen = n > SIZE_MAX - PLAIN_HDR_LEN ? 0 : round_to_pages(n + PLAIN_HDR_LEN);
    if (maplen == 0)
        return NULL;
    h = plain_spare_take(maplen);
    if (h)
        return (uint8_t *)h + PLAIN_HDR_LEN;
    h = map_nodump(maplen);
    if (!h)
        return NULL;
    h->magic = PLAIN_MAGIC;
    h->maplen = maplen;
    h->arena = NULL;
    plain_account_new(h);
    return (uint8_t *)h + PLAIN_HDR_LEN;
}

static void plain_unmap(void *base, size_t len, int locked)
{
    pthread_mutex_lock(&pool.lock);
    if (locked)
        pool.locked -= len;
    else
        pool.unlocked -= len;
    pthread_mutex_unlock(&pool.lock);
    /* munmap unlocks what it unmaps: no munlock (a system call per free) */
    (void)munmap(base, len);
}

/* A buffer of its own gives its tail pages back.  A slot of an arena
 * cannot (its neighbours share the mapping, and the pointer must stay):
 * the bytes past n are wiped and the slot is kept whole until freed. */
void secmem_plain_shrink(void *p, size_t n)
{
    struct plain_hdr *h;
    size_t keep;

    if (!p)
        return;
    h = plain_hdr(p);
    if (h->arena) {
        if (n < h->maplen - PLAIN_HDR_LEN)
            OPENSSL_cleanse((uint8_t *)p + n, h->maplen - PLAIN_HDR_LEN - n);
        return;
    }
    keep = round_to_pages(n + PLAIN_HDR_LEN);
    if (keep >= h->maplen)
        return;
    OPENSSL_cleanse((uint8_t *)h + keep, h->maplen - keep);
    plain_unmap((uint8_t *)h + keep, h->maplen - keep, (int)h->locked);
    h->maplen = keep;
}

void secmem_plain_free(void *p)
{
    secmem_plain_free_upto(p, SIZE_MAX);
}

/* Spare buffers and free slots are all zeros (wiped when freed, or fresh
 * from mmap), so a caller that knows how much it wrote lets the wipe stop
 * there. */
void secmem_plain_free_upto(void *p, size_t n)
{
    struct plain_hdr *h;
    int kept = 0;

    if (!p)
        return;
    h = plain_hdr(p);
    OPENSSL_cleanse(p, n < h->maplen - PLAIN_HDR_LEN ? n : h->maplen - PLAIN_HDR_LEN);
    if (h->arena) {
        arena_free(h);
        return;
    }
    if (h->locked && h->maplen <= PLAIN_SPARE_MAX) {
        pthread_mutex_lock(&pool.lock);
        if (pool.nspare < PLAIN_SPARES) {
            pool.spare[pool.nspare++] = h;
            kept = 1;
        }
        pthread_mutex_unlock(&pool.lock);
    }
    if (!kept) {
        size_t len = h->maplen;
        int locked = (int)h->locked;

        h->magic = 0;
        plain_unmap(h, len, locked);
    }
}

/* ------------------------------------------------------------ wiping heap */

/* For libraries that copy secrets into their own heap blocks (libcurl
 * copies a small POST body, the key service's login with the authenticator,
 * into its request buffer and frees it unwiped): free and realloc that
 * wipe every block they release. */
void secmem_wiping_free(void *p)
{
    if (p) {
        OPENSSL_cleanse(p, malloc_usable_size(p));
        free(p);
    }
}

void *secmem_wiping_realloc(void *p, size_t n)
{
    size_t old;
    void *q;

    if (!p)
        return malloc(n);
    if (n == 0) {
        secmem_wiping_free(p);
        return NULL;
    }
    old = malloc_usable_size(p);
    q = malloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, old < n ? old : n);
    secmem_wiping_free(p);
    return q;
}

/* ------------------------------------------------------------ report */

void secmem_stats(struct secmem_stats *s)
{
    memset(s, 0, sizeof *s);
    s->key_bytes = atomic_load(&key_bytes);
    pthread_mutex_lock(&pool.lock);
    s->plain_budget = pool.budget;
    s->plain_want = pool.want;
    s->plain_locked = pool.locked;
    s->plain_unlocked = pool.unlocked;
    s->plain_unlocked_allocs = pool.unlocked_allocs;
    s->plain_arena_bytes = pool.arena_bytes;
    s->plain_arena_free = pool.arena_free;
    s->plain_arenas = pool.narenas;
    pthread_mutex_unlock(&pool.lock);
    s->openssl_heap = CRYPTO_secure_malloc_initialized() ? OPENSSL_HEAP_SIZE : 0;
    s->memlock_limit = memlock_limit();
    s->cap_ipc_lock = have_cap_ipc_lock();
}

void secmem_describe(char *buf, size_t len)
{
    struct secmem_stats s;
    char lim[64];

    secmem_stats(&s);
    limit_text(lim, sizeof lim);
    if (s.plain_budget >= s.plain_want)
        snprintf(buf, len, "memory (%s): keys locked (%zu KiB of key pages, %zu KiB "
                 "OpenSSL secure heap); plaintext cache and write buffers locked as used, "
                 "up to %zu MiB; not locked: thread stacks, libfuse request buffers, the "
                 "kernel page cache; core dumps off", lim, s.key_bytes >> 10,
                 s.openssl_heap >> 10, s.plain_budget >> 20);
    else
        snprintf(buf, len, "memory (%s): keys locked (%zu KiB of key pages, %zu KiB "
                 "OpenSSL secure heap); only %zu KiB of plaintext can be locked, so "
                 "plaintext beyond that (cache and write buffers, budget %zu MiB) is NOT "
                 "locked and can reach swap: raise the limit to %zu MiB (LimitMEMLOCK=, "
                 "ulimit -l) or use encrypted swap; not locked either: thread stacks, "
                 "libfuse request buffers, the kernel page cache; core dumps off", lim,
                 s.key_bytes >> 10, s.openssl_heap >> 10, s.plain_budget >> 10,
                 s.plain_want >> 20,
                 (s.plain_want + KEY_RESERVE + locked_now() - s.plain_locked + (1 << 20) - 1)
                     >> 20);
}
