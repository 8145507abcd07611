/* Small files written so that a crash leaves either the old or the new
 * content, never a mix: a fresh temporary file beside the target (random
 * name, O_EXCL, mode 0600), written in full and fsync'ed, renamed (or
 * linked) over the target, then the directory fsync'ed so the new name is
 * durable too.  Used for configuration files, share files and cursors.
 *
 * Every call returns 0 or a negative errno and sets no message: the caller
 * says what it was writing and what to do.
 */
#ifndef PACTFS_FILEIO_H
#define PACTFS_FILEIO_H

#include <stddef.h>

/* fileio_atomic_write flags */
#define FILEIO_NO_REPLACE 0x1   /* -EEXIST if path exists (link, not rename) */

/* Write all n bytes to fd, retrying short writes and EINTR. */
int fileio_write_all(int fd, const void *p, size_t n);

/* fsync the directory dir. */
int fileio_fsync_dir(const char *dir);

/* fsync the directory that holds path ("." for a bare name). */
int fileio_fsync_parent(const char *path);

/* Atomically make path hold the n bytes at data (see above). */
int fileio_atomic_write(const char *path, const void *data, size_t n, int flags);

#endif
