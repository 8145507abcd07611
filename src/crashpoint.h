/* Crash points for the durability tests: with configure --enable-crash-points
 * (never in a release build), crash_point("name") kills the process with
 * SIGKILL when the environment says PACTFS_CRASH_AT=name[:N] and this is
 * the N-th time (default 1) the point is reached.  Without the option the
 * calls compile to nothing.  Points: docs/design-fuse.md, "Crash safety".
 * delay_point("name") sleeps MS milliseconds when PACTFS_DELAY_AT=name:MS,
 * so a test can widen a race window it must show is handled. */
#ifndef PACTFS_CRASHPOINT_H
#define PACTFS_CRASHPOINT_H

#ifdef PACTFS_CRASH_POINTS
void crash_point(const char *name);
void delay_point(const char *name);
#else
#define crash_point(name) ((void)0)
#define delay_point(name) ((void)0)
#endif

#endif
