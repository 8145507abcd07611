#include "config.h"

/* crashpoint.h: SIGKILL at (or a pause of a few milliseconds at) a named
 * point, for the crash-point tests only. */

#include "crashpoint.h"

#ifdef PACTFS_CRASH_POINTS
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_ulong hits;

void crash_point(const char *name)
{
    const char *at = getenv("PACTFS_CRASH_AT");
    size_t len = strlen(name);

    if (!at || strncmp(at, name, len) != 0 || (at[len] != '\0' && at[len] != ':'))
        return;
    unsigned long want = at[len] == ':' ? strtoul(at + len + 1, NULL, 10) : 1;
    if (atomic_fetch_add(&hits, 1) + 1 == (want ? want : 1))
        kill(getpid(), SIGKILL);
}

void delay_point(const char *name)
{
    const char *at = getenv("PACTFS_DELAY_AT");
    size_t len = strlen(name);

    if (!at || strncmp(at, name, len) != 0 || at[len] != ':')
        return;
    unsigned long ms = strtoul(at + len + 1, NULL, 10);
    struct timespec t = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };

    while (nanosleep(&t, &t) != 0)
        ;
}
#endif
