/* The one place that allocates, locks and wipes key memory.
 *
 * Every buffer that holds an unwrapped key, a key share, a password or a
 * password-derived value comes from secmem_alloc() and goes back through
 * secmem_free(), which zeroizes it.  Pages are mlock()ed so they never reach
 * swap; if locking fails (RLIMIT_MEMLOCK) the allocation still succeeds and
 * secmem_lock_failures() counts it so the daemon can warn once.
 */
#ifndef PACTFS_SECMEM_H
#define PACTFS_SECMEM_H

#include <stddef.h>

/* Zeroed, locked memory; NULL only if out of memory. */
void *secmem_alloc(size_t n);

/* Wipe n bytes and release; p may be NULL. */
void secmem_free(void *p, size_t n);

/* Zeroize in a way the compiler cannot remove. */
void secmem_wipe(void *p, size_t n);

/* strdup into secure memory; free with secmem_free_str(). */
char *secmem_strdup(const char *s);
void secmem_free_str(char *s);

/* How many allocations could not be locked in RAM. */
unsigned long secmem_lock_failures(void);

/* Process-wide hardening for programs that hold keys: no core dumps
 * (RLIMIT_CORE 0, PR_SET_DUMPABLE 0).  Returns 0 or -errno. */
int secmem_harden_process(void);

/* Lock all current and future pages of the process (mlockall) so plaintext
 * buffers cannot be swapped.  Returns 0 or -errno (caller decides whether a
 * failure is fatal or a warning). */
int secmem_lock_all(void);

#endif
