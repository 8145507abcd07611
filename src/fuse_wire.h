#ifndef PACTFS_FUSE_WIRE_H
#define PACTFS_FUSE_WIRE_H

/* The /dev/fuse channel as pactfs reads and writes it, for what libfuse
 * 3.14 does not pass on: FUSE_HANDLE_KILLPRIV_V2 (docs/design-fuse.md, "Who
 * clears set-user-ID and set-group-ID").
 *
 * libfuse 3.14 knows no FUSE_CAP_HANDLE_KILLPRIV_V2, and drops the
 * kernel's FUSE_WRITE_KILL_SUIDGID (write_flags) and FUSE_OPEN_KILL_SUIDGID
 * (open_flags) before the write and open handlers see them
 * (FATTR_KILL_SUIDGID does reach setattr, as FUSE_SET_ATTR_KILL_SUID).  It
 * lets a filesystem bring its own read and writev for the device
 * (fuse_session_custom_io), and pactfs's are read(2) and writev(2) plus:
 *   - the INIT request: whether the kernel offers FUSE_HANDLE_KILLPRIV_V2;
 *   - the INIT reply: FUSE_HANDLE_KILLPRIV_V2 added to its flags when offered;
 *   - a WRITE or OPEN request: its kill flag, kept for the thread
 *     that read it.  libfuse's loops handle a request in the thread that
 *     read it (fuse_session_loop_mt's workers receive, then process), so a
 *     handler asks fuse_wire_kill_suidgid() about its own request.
 * One FUSE session per process. */

#include <fuse_lowlevel.h>

/* Make se use pactfs's device I/O on its (mounted) descriptor, before the
 * session loop starts: 0, or -errno (then se is unchanged and the kernel
 * clears set-user-ID bits itself, as without this module). */
int fuse_wire_install(struct fuse_session *se);

/* 1 once the INIT reply carried FUSE_HANDLE_KILLPRIV_V2: pactfs clears the
 * bits on write, truncate and chown, when the kernel says so. */
int fuse_wire_killpriv_v2(void);

enum fuse_wire_op { FUSE_WIRE_OPEN = 14, FUSE_WIRE_WRITE = 16 };

/* For the request this thread is handling, a WRITE or an OPEN (with
 * O_TRUNC): 1 if the kernel asked to clear the set-user-ID and
 * set-group-ID bits (the caller lacks CAP_FSETID), 0 if not, -1 if this
 * thread's last request was not of that kind (a loop that hands requests
 * to other threads).  A CREATE's flag is not looked at: the kernel sets it
 * for O_TRUNC without O_EXCL, but a file that create makes keeps the
 * set-ID bits it was created with, and pactfs's create rarely finds one
 * that exists (another mount made it since the kernel's lookup). */
int fuse_wire_kill_suidgid(enum fuse_wire_op op);

#endif
