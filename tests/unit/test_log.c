#include "config.h"

/* log: the daemon's one line format and its levels. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static void four_levels(void)
{
    log_error("cannot commit %s: %s", "/C/a", "no space");
    log_warning("degraded write");
    log_info("endpoint %u is back", 1u);
    log_debug("session %d started", 7);
}

static void test_prefix_and_default_level(void)
{
    char out[512];

    pfs_log_init("pactfs", PFS_LOG_INFO);
    capture(four_levels, out, sizeof out);
    CHECK(!strcmp(out, "pactfs: error: cannot commit /C/a: no space\n"
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

int main(void)
{
    RUN(test_prefix_and_default_level);
    RUN(test_debug_only_when_asked);
    RUN(test_errno_is_kept);
    return tap_done();
}
