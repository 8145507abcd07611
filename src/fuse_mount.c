#include "config.h"

/* Mounting as an ordinary user without fork(): see fuse_mount.h. */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "fuse_mount.h"

extern char **environ;

#define FUSERMOUNT "fusermount3"
#define COMMFD_ENV "_FUSE_COMMFD"      /* fusermount3 sends the fd over it */
#define CHILD_COMMFD 3                  /* its number in fusermount3 */

/* The caller's environment with COMMFD_ENV=CHILD_COMMFD in place of any
 * inherited one; built here, in the parent, so the child only execs. */
static char **spawn_env(char *commfd_entry)
{
    size_t n = 0, j = 0;
    char **env;

    while (environ[n])
        n++;
    env = calloc(n + 2, sizeof *env);
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], COMMFD_ENV "=", sizeof COMMFD_ENV) != 0)
            env[j++] = environ[i];
    env[j++] = commfd_entry;
    env[j] = NULL;
    return env;
}

/* One byte with the descriptor attached (fusermount3's send_fd). */
static int receive_fd(int sock)
{
    char byte;
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf };
    struct cmsghdr *c;
    ssize_t n;
    int fd;

    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
        c->cmsg_len != CMSG_LEN(sizeof(int)))
        return -1;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

/* posix_spawnp FUSERMOUNT with argv; the child gets `child_fd` as
 * CHILD_COMMFD (or nothing when child_fd < 0).  0 or -errno. */
static int spawn_fusermount(char *const argv[], int child_fd, char **env, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    int e;

    if ((e = posix_spawn_file_actions_init(&fa)) != 0)
        return -e;
    /* dup2 onto another number clears close-on-exec on the copy. */
    if (child_fd >= 0 && child_fd != CHILD_COMMFD)
        e = posix_spawn_file_actions_adddup2(&fa, child_fd, CHILD_COMMFD);
    if (e == 0)
        e = posix_spawnp(pid, FUSERMOUNT, &fa, NULL, argv, env ? env : environ);
    posix_spawn_file_actions_destroy(&fa);
    return -e;
}

int fuse_mount_spawn(const char *mountpoint, const char *opts)
{
    char commfd_entry[sizeof COMMFD_ENV + 16];
    char *mount_opts = NULL, **env = NULL;
    int sv[2], fd = -1, rc, status;
    pid_t pid;

    /* Both ends close-on-exec: only the dup2'd copy reaches fusermount3. */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return pfs_err(-errno, "cannot mount %s: socketpair: %s", mountpoint, strerror(errno));
    if (sv[0] == CHILD_COMMFD) {   /* the dup2 must move it (see spawn_fusermount) */
        int moved = fcntl(sv[0], F_DUPFD_CLOEXEC, CHILD_COMMFD + 1);
        if (moved < 0) {
            rc = pfs_err(-errno, "cannot mount %s: %s", mountpoint, strerror(errno));
            goto out;
        }
        close(sv[0]);
        sv[0] = moved;
    }
    snprintf(commfd_entry, sizeof commfd_entry, COMMFD_ENV "=%d", CHILD_COMMFD);
    env = spawn_env(commfd_entry);
    /* libfuse's defaults for a user mount, then ours. */
    if (!env || asprintf(&mount_opts, "nosuid,nodev,%s", opts) < 0) {
        mount_opts = NULL;
        rc = pfs_err(-ENOMEM, "out of memory");
        goto out;
    }
    {
        char *argv[] = { FUSERMOUNT, "-o", mount_opts, "--", (char *)mountpoint, NULL };

        rc = spawn_fusermount(argv, sv[0], env, &pid);
    }
    if (rc < 0) {
        pfs_err(rc, "cannot run %s to mount %s (install the fuse3 package): %s", FUSERMOUNT,
                mountpoint, strerror(-rc));
        goto out;
    }
    close(sv[0]);
    sv[0] = -1;
    fd = receive_fd(sv[1]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (fd < 0)
        rc = pfs_err(-ENODEV, "%s could not mount %s (its message is above; is /dev/fuse "
                     "there and the mountpoint yours?)", FUSERMOUNT, mountpoint);
    else
        rc = fd;
out:
    if (sv[0] >= 0)
        close(sv[0]);
    close(sv[1]);
    free(mount_opts);
    free(env);
    return rc;
}

int fuse_mount_gone(int fd)
{
    struct pollfd p = { .fd = fd, .events = 0 };

    return poll(&p, 1, 0) == 1 && (p.revents & POLLERR);
}

void fuse_unmount_spawn(const char *mountpoint)
{
    char *argv[] = { FUSERMOUNT, "-u", "-q", "-z", "--", (char *)mountpoint, NULL };
    pid_t pid;
    int status;

    if (spawn_fusermount(argv, -1, NULL, &pid) < 0)
        return;   /* the mount stays until `fusermount3 -u`; nothing to lose */
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
}

void fuse_mount_fd_path(int fd, char *out, size_t cap)
{
    snprintf(out, cap, "/dev/fd/%d", fd);
}
