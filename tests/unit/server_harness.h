/* Unit tests that run a real server (pactfs-keyd, pactfs-auditd) on
 * 127.0.0.1: pick a port, start it in the foreground with its log in a
 * file, wait until it listens, stop it and see how it exited. */
#ifndef PACTFS_SERVER_HARNESS_H
#define PACTFS_SERVER_HARNESS_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define HARNESS_POLL_US 50000

/* A port nobody listens on right now. */
static inline unsigned harness_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    unsigned port = 0;

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static inline bool harness_port_open(unsigned port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok;

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Run `binary -f -c conf` (argv[0] name) with stdout and stderr in log
 * (appended or truncated), then wait until it listens on port (10 s at
 * most).  0, or -1 with *pid 0 if it exited or never listened. */
static inline int harness_start(pid_t *pid, const char *binary, const char *name,
                                const char *conf, const char *log, bool append, unsigned port)
{
    *pid = fork();
    if (*pid < 0) {
        *pid = 0;
        return -1;
    }
    if (*pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        execl(binary, name, "-f", "-c", conf, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        int st;
        if (harness_port_open(port))
            return 0;
        if (waitpid(*pid, &st, WNOHANG) == *pid) {
            *pid = 0;
            printf("# %s exited early, see %s\n", name, log);
            return -1;
        }
        usleep(HARNESS_POLL_US);
    }
    return -1;
}

/* Send sig, wait up to wait_ms (then SIGKILL); 0 if it exited with status
 * 0 (so no sanitizer or leak report). */
static inline int harness_stop(pid_t *pid, int sig, unsigned wait_ms)
{
    int st = 0;

    if (*pid <= 0)
        return -1;
    kill(*pid, sig);
    for (unsigned i = 0; i < wait_ms / (HARNESS_POLL_US / 1000); i++) {
        if (waitpid(*pid, &st, WNOHANG) == *pid) {
            *pid = 0;
            return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
        }
        usleep(HARNESS_POLL_US);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, &st, 0);
    *pid = 0;
    return -1;
}

/* The whole file, NUL-terminated (free it); NULL if unreadable. */
static inline char *harness_read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    *len = 0;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = '\0';
        *len = (size_t)n;
    } else {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

#endif
