/* The one place that allocates, locks and wipes secret memory.
 *
 * Two kinds of secret memory, locked separately instead of mlockall() of the
 * whole process (which pinned every thread stack and libfuse buffer, and
 * under an ordinary user's RLIMIT_MEMLOCK locked nothing at all):
 *
 * Keys (secmem_alloc): every buffer that holds an unwrapped key, a key
 * share, a password or a password-derived value.  Whole pages, mlock()ed,
 * excluded from core dumps, wiped on free.  Keys are always locked: if the
 * pages cannot be locked the allocation FAILS (NULL, with a message naming
 * RLIMIT_MEMLOCK) rather than hand out swappable key memory.
 * secmem_init_openssl_heap() puts OpenSSL's own private-key numbers (RSA
 * d, p, q, ...) in a locked secure heap as well.
 *
 * Plaintext (secmem_plain_alloc): chunk cache, dirty write-back buffers and
 * read replies.  A buffer of up to SECMEM_PLAIN_SMALL_MAX bytes is a slot
 * of a size class in a shared arena (an arena is mapped and locked once,
 * not per buffer); a larger one is its own mapping.  Every mapping is
 * excluded from core dumps, every buffer wiped on free; memory is locked
 * while the locked pool has room.  The pool
 * is sized by secmem_plain_budget() to the cache budget, cut to what
 * RLIMIT_MEMLOCK leaves after a reserve for keys.  Past it, buffers still
 * work but are NOT locked; secmem_describe() says so in one line. */
#ifndef PACTFS_SECMEM_H
#define PACTFS_SECMEM_H

#include <stddef.h>

/* ---- keys ---- */

/* Zeroed, locked memory; NULL if out of memory or if the pages cannot be
 * locked (pfs_err names the limit and what to raise). */
void *secmem_alloc(size_t n);

/* Wipe n bytes and release; p may be NULL. */
void secmem_free(void *p, size_t n);

/* Lock again, in a child after fork() (memory locks are not inherited),
 * key memory the parent allocated.  0, or -ENOMEM with a message. */
int secmem_relock(void *p, size_t n);

/* Zeroize in a way the compiler cannot remove. */
void secmem_wipe(void *p, size_t n);

/* strdup into secure memory; free with secmem_free_str(). */
char *secmem_strdup(const char *s);
void secmem_free_str(char *s);

/* How many key allocations were refused because they could not be locked. */
unsigned long secmem_lock_failures(void);

/* Wipe 64 KiB of stack below the caller (deeper calls and register spills
 * left copies there) and zero the CPU's vector registers (x86-64), which
 * string and crypto routines leave holding the last secret they touched:
 * a thread created later inherits them and saves them on its stack.  Call
 * from a shallow frame after reading or using a password, before creating
 * threads. */
void secmem_clear_registers(void);

/* Process-wide hardening for programs that hold keys: no core dumps
 * (RLIMIT_CORE 0, PR_SET_DUMPABLE 0).  Returns 0 or -errno. */
int secmem_harden_process(void);

/* OpenSSL's secure heap (locked, not dumped, wiped) for private-key
 * numbers, before any private key is loaded.  0, or -errno with a message
 * if the heap cannot be made or locked. */
int secmem_init_openssl_heap(void);

/* ---- plaintext ---- */

/* The largest buffer served from arenas (a 33-page slot less its 64-byte
 * header: a 128 KiB read reply fits); larger ones are mappings of their own. */
#define SECMEM_PLAIN_SMALL_MAX ((size_t)33 * 4096 - 64)
/* At most this many bytes of arenas whose slots are all free stay mapped
 * (wiped, for reuse); secmem_plain_budget() unmaps all of them. */
#define SECMEM_PLAIN_ARENA_KEEP ((size_t)2 << 20)

/* Set how much plaintext may be locked: want bytes, cut to what the
 * memory-lock limit leaves after the key reserve.  Returns the budget.
 * Spare buffers kept for reuse are released first. */
size_t secmem_plain_budget(size_t want);

/* n bytes (not zeroed) for plaintext; NULL only if out of memory. */
void *secmem_plain_alloc(size_t n);

/* Keep only the first n bytes of p (wipes the rest; a buffer of its own
 * returns the pages past n, an arena slot keeps its size until freed). */
void secmem_plain_shrink(void *p, size_t n);

/* Wipe and release; p may be NULL. */
void secmem_plain_free(void *p);

/* The same when only the first n bytes of p were ever written since it was
 * allocated: only those are wiped (buffers come from the pool zeroed or
 * fresh, so the rest holds nothing).  For chunk-sized buffers that held a
 * small file. */
void secmem_plain_free_upto(void *p, size_t n);

/* free() and realloc() that wipe every heap block they release, for
 * libraries that copy secrets into their own buffers (libcurl, set up in
 * https.c).  For malloc'd memory only. */
void secmem_wiping_free(void *p);
void *secmem_wiping_realloc(void *p, size_t n);

/* ---- report ---- */

struct secmem_stats {
    size_t key_bytes;          /* locked key pages in use */
    size_t plain_budget;       /* plaintext bytes that may be locked */
    size_t plain_want;         /* what secmem_plain_budget() was asked for */
    size_t plain_locked;       /* plaintext bytes locked now (in use, spare, whole
                                  locked arenas with their free slots) */
    size_t plain_unlocked;     /* plaintext bytes in use that are not locked */
    unsigned long plain_unlocked_allocs;  /* buffers ever handed out unlocked */
    size_t plain_arena_bytes;  /* mapped by small-buffer arenas, locked or not */
    size_t plain_arena_free;   /* of those, in free (wiped) slots */
    unsigned plain_arenas;     /* arenas mapped */
    size_t openssl_heap;       /* locked OpenSSL secure heap, 0 if none */
    size_t memlock_limit;      /* RLIMIT_MEMLOCK, SIZE_MAX if unlimited */
    int cap_ipc_lock;          /* the limit does not apply */
};

void secmem_stats(struct secmem_stats *s);

/* One line for the mount log: what is locked, what is not, and why. */
void secmem_describe(char *buf, size_t len);

#endif
