#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"
#include "log.h"
#include "error.h"
#include "exitcodes.h"
#include "secmem.h"

#define PASSWORD_MAX 1024
#define SECRET_BUF (PASSWORD_MAX + 2)

/* Read the first line of fd straight into locked memory with read(2): no
 * stdio buffer (which would keep a copy in the heap after fclose) ever
 * holds the password.  drain: read the rest of a pipe so its writer does
 * not die of SIGPIPE (the rest is wiped, not kept). */
static char *read_secret_fd(int fd, int drain)
{
    char *buf = secmem_alloc(SECRET_BUF);
    size_t len = 0, eol;
    char *out;

    if (!buf)
        return NULL;
    for (;;) {
        ssize_t n = len < SECRET_BUF ? read(fd, buf + len, SECRET_BUF - len) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            pfs_err(-errno, "cannot read the password: %s", strerror(errno));
            secmem_free(buf, SECRET_BUF);
            return NULL;
        }
        if (n == 0 || memchr(buf + len, '\n', (size_t)n)) {
            len += (size_t)n;
            break;
        }
        len += (size_t)n;
    }
    while (drain) {
        char rest[256];
        ssize_t n = read(fd, rest, sizeof rest);
        secmem_wipe(rest, sizeof rest);
        if (n == 0 || (n < 0 && errno != EINTR))
            break;
    }
    for (eol = 0; eol < len && buf[eol] != '\n' && buf[eol] != '\r'; eol++)
        ;
    if (len == 0) {
        secmem_free(buf, SECRET_BUF);
        return NULL;
    }
    if (eol > PASSWORD_MAX) {
        secmem_free(buf, SECRET_BUF);
        pfs_err(-EINVAL, "the password is longer than %d bytes", PASSWORD_MAX);
        return NULL;
    }
    buf[eol] = '\0';
    out = secmem_strdup(buf);
    secmem_free(buf, SECRET_BUF);
    return out;
}

static char *password_from_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *pw;

    if (fd < 0) {
        pfs_err(-errno, "cannot read the password file %s: %s", path, strerror(errno));
        return NULL;
    }
    pw = read_secret_fd(fd, 0);
    close(fd);
    if (!pw && !*pfs_err_msg())
        pfs_err(-EINVAL, "the password file %s is empty", path);
    return pw;
}

/* `sh -c CMD` with its standard output on a pipe we read() (no popen: its
 * FILE buffer would keep the password in the heap). */
static char *password_from_command(const char *cmd)
{
    int p[2], status = 0;
    pid_t child;
    char *pw;

    if (pipe2(p, O_CLOEXEC) < 0) {
        pfs_err(-errno, "cannot run the --extpass command: %s", strerror(errno));
        return NULL;
    }
    child = fork();
    if (child < 0) {
        pfs_err(-errno, "cannot run the --extpass command: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return NULL;
    }
    if (child == 0) {
        if (dup2(p[1], STDOUT_FILENO) < 0)
            _exit(127);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    pw = read_secret_fd(p[0], 1);
    close(p[0]);
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (pw)
            secmem_free_str(pw);
        pfs_err(-EINVAL, "the --extpass command \"%s\" failed (status %d)", cmd, status);
        return NULL;
    }
    if (!pw && !*pfs_err_msg())
        pfs_err(-EINVAL, "the --extpass command \"%s\" printed no password", cmd);
    return pw;
}

static void write_all(int fd, const char *s)
{
    size_t n = strlen(s);

    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static char *password_from_tty(const char *prompt)
{
    int tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    struct termios old, noecho;
    int restore = 0;
    char *pw;

    if (tty < 0) {
        pfs_err(-ENOTTY, "no terminal to ask the password on: use --passfile FILE or --extpass CMD");
        return NULL;
    }
    write_all(tty, prompt);
    if (tcgetattr(tty, &old) == 0) {
        noecho = old;
        noecho.c_lflag &= ~(tcflag_t)ECHO;
        restore = tcsetattr(tty, TCSAFLUSH, &noecho) == 0;
    }
    pw = read_secret_fd(tty, 0);
    if (restore)
        tcsetattr(tty, TCSAFLUSH, &old);
    write_all(tty, "\n");
    close(tty);
    return pw;
}

char *cli_read_password(const char *passfile, const char *extpass, const char *prompt,
                        int confirm)
{
    char *pw;

    pfs_err_clear();
    if (passfile)
        pw = password_from_file(passfile);
    else if (extpass)
        pw = password_from_command(extpass);
    else {
        pw = password_from_tty(prompt);
        if (pw && confirm) {
            char *again = password_from_tty("Repeat the password: ");
            int same = again && strcmp(pw, again) == 0;

            secmem_free_str(again);
            if (!same) {
                secmem_free_str(pw);
                pfs_err(-EINVAL, "the two passwords differ; nothing was changed");
                return NULL;
            }
        }
    }
    if (pw && !*pw) {
        secmem_free_str(pw);
        pfs_err(-EINVAL, "the password is empty");
        return NULL;
    }
    if (!pw && !*pfs_err_msg())
        pfs_err(-EINVAL, "no password was given");
    return pw;
}

char *cli_read_line(const char *prompt)
{
    FILE *tty = fopen("/dev/tty", "r+e");
    char line[256];
    size_t len;

    if (!tty)
        return NULL;
    fputs(prompt, tty);
    fflush(tty);
    if (!fgets(line, sizeof line, tty)) {
        fclose(tty);
        return NULL;
    }
    fclose(tty);
    len = strcspn(line, "\r\n");
    line[len] = '\0';
    return len ? strdup(line) : NULL;
}

int cli_exit_code_for(int neg_errno)
{
    switch (neg_errno) {
    case 0: return EXIT_OK;
    case -EKEYREJECTED: return EXIT_BAD_PASSWORD;
    case -EBUSY: return EXIT_LOCKED_OUT;
    case -EHOSTUNREACH: case -ECONNREFUSED: case -ETIMEDOUT: case -EPROTO:
        return EXIT_KEYD_UNREACHABLE;
    case -EINVAL: return EXIT_CONFIG;
    case -EEXIST: return EXIT_EXISTS;
    case -EACCES: case -EPERM: return EXIT_ACCESS;
    case -EBADMSG: return EXIT_INTEGRITY;
    case -ESTALE: return EXIT_ROLLBACK;
    case -EPROTONOSUPPORT: return EXIT_CONFIG;
    case -EDOM: return EXIT_PASSWORD_POLICY;     /* PWPOLICY_REFUSED */
    case -ECANCELED: return EXIT_DUTY;           /* GRANTS_DUTY_REFUSED */
    case -ENOENT: case -EIO: case -ENOSPC: case -EROFS: return EXIT_STORE;
    default: return EXIT_FAILURE_OTHER;
    }
}

int cli_open_exit_code(int neg_errno)
{
    switch (neg_errno) {
    case -EINVAL: case -ENOTSUP: return EXIT_CONFIG;
    case -EBADMSG: return EXIT_STORE;   /* a corrupt metadata store is unusable */
    default: return cli_exit_code_for(neg_errno);
    }
}

void cli_report(int neg_errno)
{
    const char *msg = pfs_err_msg();

    if (*msg)
        log_error("%s", msg);
    else
        log_error("%s", strerror(-neg_errno));
}
