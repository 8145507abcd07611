/* Human-readable error context, one slot per thread.
 *
 * Functions across the core return 0 on success or a negative errno value
 * (-EIO, -EBADMSG for tampered or corrupt data, -EKEYREJECTED for a wrong
 * password or share, -ENOENT, -EINVAL ...).  When they fail they also leave a
 * sentence for a person in this thread's slot, naming what failed and, where
 * it helps, what to do.  Top-level programs print pfs_err_msg().
 */
#ifndef PACTFS_ERROR_H
#define PACTFS_ERROR_H

#include <stddef.h>

/* Record a message (printf format) and return -errnum unchanged, so a caller
 * can write: return pfs_err(-EIO, "cannot write %s: %s", p, strerror(errno)); */
int pfs_err(int neg_errno, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The last message set in this thread, or "" if none. */
const char *pfs_err_msg(void);

/* Clear this thread's message. */
void pfs_err_clear(void);

#endif
