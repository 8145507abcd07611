#include "config.h"

#define FUSE_USE_VERSION 34

/* pactfs's device I/O for libfuse (fuse_wire.h): read(2) and writev(2),
 * looking at the few fields libfuse 3.14 does not pass on.  The layouts are
 * the kernel's (linux/fuse.h), the wire format every libfuse speaks. */

#include <errno.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "fuse_wire.h"
#include "log.h"

_Static_assert((int)FUSE_WIRE_WRITE == (int)FUSE_WRITE && (int)FUSE_WIRE_OPEN == (int)FUSE_OPEN,
               "fuse_wire.h's opcodes are the kernel's");

/* The INIT request that offered FUSE_HANDLE_KILLPRIV_V2 (its unique; 0:
 * none), and whether the reply took it. */
static uint64_t init_unique;
static int killpriv_v2;

/* The request this thread read last. */
static __thread unsigned cur_opcode;
static __thread int cur_kill;

/* The u32 at off of a request of n bytes, or 0 when it is shorter. */
static uint32_t req_u32(const void *buf, ssize_t n, size_t off)
{
    uint32_t v = 0;
    if (n >= 0 && (size_t)n >= off + sizeof v)
        memcpy(&v, (const uint8_t *)buf + off, sizeof v);
    return v;
}

#define IN_AT(type, field) (sizeof(struct fuse_in_header) + offsetof(type, field))

static ssize_t wire_read(int fd, void *buf, size_t len, void *userdata)
{
    (void)userdata;
    ssize_t n = read(fd, buf, len);
    cur_opcode = 0;
    cur_kill = 0;
    if (n < (ssize_t)sizeof(struct fuse_in_header))
        return n;
    struct fuse_in_header h;
    memcpy(&h, buf, sizeof h);
    cur_opcode = h.opcode;
    switch (h.opcode) {
    case FUSE_INIT:
        if (req_u32(buf, n, IN_AT(struct fuse_init_in, flags)) & FUSE_HANDLE_KILLPRIV_V2)
            __atomic_store_n(&init_unique, h.unique, __ATOMIC_RELEASE);
        break;
    case FUSE_WRITE:
        cur_kill = !!(req_u32(buf, n, IN_AT(struct fuse_write_in, write_flags)) &
                      FUSE_WRITE_KILL_SUIDGID);
        break;
    case FUSE_OPEN:
        cur_kill = !!(req_u32(buf, n, IN_AT(struct fuse_open_in, open_flags)) &
                      FUSE_OPEN_KILL_SUIDGID);
        break;
    default:
        break;
    }
    return n;
}

/* The reply to the INIT that offered FUSE_HANDLE_KILLPRIV_V2 goes out with
 * it; libfuse's own copy of the reply is left alone. */
static ssize_t wire_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    (void)userdata;
    uint64_t unique = __atomic_load_n(&init_unique, __ATOMIC_ACQUIRE);
    struct fuse_out_header oh;
    struct fuse_init_out out;
    if (!unique || count != 2 || iov[0].iov_len != sizeof oh ||
        iov[1].iov_len < offsetof(struct fuse_init_out, flags) + sizeof out.flags ||
        iov[1].iov_len > sizeof out)
        return writev(fd, iov, count);
    memcpy(&oh, iov[0].iov_base, sizeof oh);
    if (oh.unique != unique || oh.error != 0)
        return writev(fd, iov, count);
    memcpy(&out, iov[1].iov_base, iov[1].iov_len);
    out.flags |= FUSE_HANDLE_KILLPRIV_V2;
    struct iovec v[2] = { iov[0], { .iov_base = &out, .iov_len = iov[1].iov_len } };
    ssize_t w = writev(fd, v, 2);
    if (w >= 0) {
        __atomic_store_n(&killpriv_v2, 1, __ATOMIC_RELEASE);
        __atomic_store_n(&init_unique, 0, __ATOMIC_RELEASE);
        log_debug("FUSE_HANDLE_KILLPRIV_V2 negotiated: pactfs clears set-user-ID and "
                  "set-group-ID bits on write, truncate and chown");
    }
    return w;
}

int fuse_wire_install(struct fuse_session *se)
{
    static const struct fuse_custom_io io = { .read = wire_read, .writev = wire_writev };
    return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

int fuse_wire_killpriv_v2(void)
{
    return __atomic_load_n(&killpriv_v2, __ATOMIC_ACQUIRE);
}

int fuse_wire_kill_suidgid(enum fuse_wire_op op)
{
    return cur_opcode == (unsigned)op ? cur_kill : -1;
}
