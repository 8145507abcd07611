#ifndef PACTFS_FUSE_MOUNT_H
#define PACTFS_FUSE_MOUNT_H

/* Mounting as an ordinary user without fork().
 *
 * libfuse mounts for a non-root caller by fork()ing and, in the child,
 * calling setenv() before it execs fusermount3.  The daemon has threads by
 * then (audit committer, syncer, workers); a child forked while one of them
 * held an allocator lock waits on that lock forever (seen with
 * AddressSanitizer's allocator: the mount never became live).  Here
 * fusermount3 is started with posix_spawn, which runs nothing in the child
 * but the exec, and the /dev/fuse descriptor it sends back is handed to
 * libfuse as "/dev/fd/N".  Root keeps libfuse's own mount(2). */

#include <stddef.h>

/* Run `fusermount3 -o OPTS -- MOUNTPOINT` and receive the mounted
 * /dev/fuse descriptor: >= 0, or -errno with pfs_err set (fusermount3's own
 * message went to stderr). */
int fuse_mount_spawn(const char *mountpoint, const char *opts);

/* 1 when the kernel dropped the connection on fd (the user unmounted, or
 * it was aborted): then the mountpoint is not ours any more and may hold
 * someone else's mount by now.  Ask before libfuse closes fd. */
int fuse_mount_gone(int fd);

/* `fusermount3 -u -q -z -- MOUNTPOINT`, after the descriptor is closed (a
 * synchronous unmount would otherwise wait on this very daemon). */
void fuse_unmount_spawn(const char *mountpoint);

/* "/dev/fd/N" for libfuse's fuse_session_mount. */
void fuse_mount_fd_path(int fd, char *out, size_t cap);

#endif
