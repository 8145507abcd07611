#include "config.h"

/* log: the programs' one line format, their names and the levels. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "error.h"
#include "log.h"
#include "tap.h"

/* Run fn with stderr going to a temporary file; what it wrote into out. */
static void capture(void (*fn)(void), char *out, size_t len)
{
    FILE *tmp = tmpfile();
    int saved = dup(STDERR_FILENO);
    size_t n;

    if (!tmp || saved < 0)
        abort();
    fflush(stderr);
    dup2(fileno(tmp), STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    n = fread(out, 1, len - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
}

/* Does fn, run as program prog (at level INFO), write exactly want? */
static int writes_as(const char *prog, void (*fn)(void), const char *want)
{
    char out[512];

    pfs_log_init(prog, PFS_LOG_INFO);
    capture(fn, out, sizeof out);
    return !strcmp(out, want);
}

static void four_levels(void)
{
    log_error("cannot commit %s: %s", "/C/a", "no space");
    log_warning("degraded write");
    log_info("endpoint %u is back", 1u);
    log_debug("session %d started", 7);
}

static void test_prefix_and_default_level(void)
{
    CHECK(writes_as("pactfs", four_levels, "pactfs: error: cannot commit /C/a: no space\n"
                                           "pactfs: warning: degraded write\n"
                                           "pactfs: endpoint 1 is back\n"));
    CHECK(pfs_log_enabled(PFS_LOG_INFO));
    CHECK(!pfs_log_enabled(PFS_LOG_DEBUG));
}

static void test_debug_only_when_asked(void)
{
    char out[512];

    pfs_log_init("pactfs", PFS_LOG_DEBUG);
    capture(four_levels, out, sizeof out);
    CHECK(strstr(out, "pactfs: debug: session 7 started\n") != NULL);
    pfs_log_init(NULL, PFS_LOG_WARNING);     /* NULL keeps the name */
    capture(four_levels, out, sizeof out);
    CHECK(!strcmp(out, "pactfs: error: cannot commit /C/a: no space\n"
                       "pactfs: warning: degraded write\n"));
}

static void keeps_errno(void)
{
    errno = EXDEV;
    log_error("x");
    CHECK_EQ_INT(errno, EXDEV);
}

static void test_errno_is_kept(void)
{
    char out[64];

    pfs_log_init("t", PFS_LOG_INFO);
    capture(keeps_errno, out, sizeof out);
    CHECK(!strcmp(out, "t: error: x\n"));
}

/* A module shared by the daemon and the tools speaks under the name of the
 * program it runs in: what pactfs-admin prints reads "pactfs-admin: ...". */
static void shared_module_reports(void)
{
    pfs_err(-ENOENT, "no account \"carol\" in this vault");
    cli_report(-ENOENT);
    pfs_err_clear();
    cli_report(-EACCES);   /* no message of its own: strerror */
}

static void test_shared_module_speaks_as_the_program(void)
{
    CHECK(writes_as("pactfs-admin", shared_module_reports,
                    "pactfs-admin: error: no account \"carol\" in this vault\n"
                    "pactfs-admin: error: Permission denied\n"));
    CHECK(writes_as("pactfs-fsck", shared_module_reports,
                    "pactfs-fsck: error: no account \"carol\" in this vault\n"
                    "pactfs-fsck: error: Permission denied\n"));
}

static void progress_then_warning(void)
{
    pfs_log_progress("rekey /C [###...] %d/%d files", 3, 6);
    pfs_log_progress("rekey /C [####..] %d/%d files", 4, 6);
    log_warning("rekey: inode %d: bad; left alone", 9);
    pfs_log_progress("rekey /C [######] %d/%d files", 6, 6);
    pfs_log_progress_done();
    pfs_log_progress_done();   /* nothing shown: no second newline */
}

static void test_progress_line_is_ended_before_a_message(void)
{
    CHECK(writes_as("pactfs-admin", progress_then_warning,
                    "\rrekey /C [###...] 3/6 files\rrekey /C [####..] 4/6 files\n"
                    "pactfs-admin: warning: rekey: inode 9: bad; left alone\n"
                    "\rrekey /C [######] 6/6 files\n"));
}

static void one_info(void)
{
    log_info("listening on https://127.0.0.1:%u", 8443u);
}

static void test_timestamps(void)
{
    char out[256];
    unsigned y, mo, d, h, mi, s;
    int n = 0;

    pfs_log_init("pactfs-keyd", PFS_LOG_INFO);
    pfs_log_timestamps(1);
    capture(one_info, out, sizeof out);
    pfs_log_timestamps(0);
    CHECK(sscanf(out, "%4u-%2u-%2uT%2u:%2u:%2uZ pactfs-keyd: listening on %n", &y, &mo, &d, &h,
                 &mi, &s, &n) == 6);
    CHECK(n > 0 && !strcmp(out + n, "https://127.0.0.1:8443\n"));
    CHECK(writes_as("pactfs-keyd", one_info, "pactfs-keyd: listening on https://127.0.0.1:8443\n"));
}

int main(void)
{
    RUN(test_prefix_and_default_level);
    RUN(test_debug_only_when_asked);
    RUN(test_errno_is_kept);
    RUN(test_shared_module_speaks_as_the_program);
    RUN(test_progress_line_is_ended_before_a_message);
    RUN(test_timestamps);
    return tap_done();
}
