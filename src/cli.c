#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"
#include "error.h"
#include "exitcodes.h"
#include "secmem.h"

#define PASSWORD_MAX 1024

/* Read one line from fp into secure memory, without the newline. */
static char *read_secret_line(FILE *fp)
{
    char *buf = secmem_alloc(PASSWORD_MAX + 2);
    size_t len;

    if (!buf)
        return NULL;
    if (!fgets(buf, PASSWORD_MAX + 2, fp)) {
        secmem_free(buf, PASSWORD_MAX + 2);
        return NULL;
    }
    len = strcspn(buf, "\r\n");
    if (len > PASSWORD_MAX) {
        secmem_free(buf, PASSWORD_MAX + 2);
        pfs_err(-EINVAL, "the password is longer than %d bytes", PASSWORD_MAX);
        return NULL;
    }
    buf[len] = '\0';
    {
        char *out = secmem_strdup(buf);
        secmem_free(buf, PASSWORD_MAX + 2);
        return out;
    }
}

static char *password_from_file(const char *path)
{
    FILE *fp = fopen(path, "re");
    char *pw;

    if (!fp) {
        pfs_err(-errno, "cannot read the password file %s: %s", path, strerror(errno));
        return NULL;
    }
    pw = read_secret_line(fp);
    fclose(fp);
    if (!pw && !*pfs_err_msg())
        pfs_err(-EINVAL, "the password file %s is empty", path);
    return pw;
}

static char *password_from_command(const char *cmd)
{
    FILE *fp = popen(cmd, "r");
    char *pw;
    int status;

    if (!fp) {
        pfs_err(-errno, "cannot run the --extpass command: %s", strerror(errno));
        return NULL;
    }
    pw = read_secret_line(fp);
    status = pclose(fp);
    if (status != 0) {
        if (pw)
            secmem_free_str(pw);
        pfs_err(-EINVAL, "the --extpass command \"%s\" failed (status %d)", cmd, status);
        return NULL;
    }
    if (!pw)
        pfs_err(-EINVAL, "the --extpass command \"%s\" printed no password", cmd);
    return pw;
}

static char *password_from_tty(const char *prompt)
{
    FILE *tty = fopen("/dev/tty", "r+e");
    struct termios old, noecho;
    char *pw;

    if (!tty) {
        pfs_err(-ENOTTY, "no terminal to ask the password on: use --passfile FILE or --extpass CMD");
        return NULL;
    }
    fputs(prompt, tty);
    fflush(tty);
    if (tcgetattr(fileno(tty), &old) == 0) {
        noecho = old;
        noecho.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fileno(tty), TCSAFLUSH, &noecho);
    }
    pw = read_secret_line(tty);
    tcsetattr(fileno(tty), TCSAFLUSH, &old);
    fputc('\n', tty);
    fclose(tty);
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

void cli_report(const char *prog, int neg_errno)
{
    const char *msg = pfs_err_msg();

    if (*msg)
        fprintf(stderr, "%s: %s\n", prog, msg);
    else
        fprintf(stderr, "%s: %s\n", prog, strerror(-neg_errno));
}
