/* A tiny TAP producer for the unit tests: one "ok"/"not ok" line per test
 * case, read by automake's tap-driver.  Inside a case, CHECK() records a
 * failure with file, line and the failed expression and goes on, so one run
 * shows every broken assertion.
 *
 *   static void test_roundtrip(void) { CHECK(x == 1); CHECK_EQ_INT(a, b); }
 *   int main(void) { RUN(test_roundtrip); return tap_done(); }
 */
#ifndef PACTFS_TAP_H
#define PACTFS_TAP_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_case_no;
static int tap_failed_cases;
static int tap_case_failures;

static inline void tap_fail(const char *file, int line, const char *what)
{
    tap_case_failures++;
    printf("# FAIL %s:%d: %s\n", file, line, what);
    fflush(stdout);
}

#define CHECK(cond) \
    do { if (!(cond)) tap_fail(__FILE__, __LINE__, #cond); } while (0)

#define CHECK_EQ_INT(a, b) \
    do { long long a_ = (long long)(a), b_ = (long long)(b); \
         if (a_ != b_) { char m_[256]; \
             snprintf(m_, sizeof m_, "%s == %s (%lld != %lld)", #a, #b, a_, b_); \
             tap_fail(__FILE__, __LINE__, m_); } } while (0)

#define CHECK_MEM(a, b, n) \
    do { if (memcmp((a), (b), (n)) != 0) \
         tap_fail(__FILE__, __LINE__, "memcmp(" #a ", " #b ", " #n ") == 0"); } while (0)

/* Abort the current case when a precondition fails (returns from it). */
#define REQUIRE(cond) \
    do { if (!(cond)) { tap_fail(__FILE__, __LINE__, #cond); return; } } while (0)

#define RUN(fn) tap_run(#fn, fn)

static inline void tap_run(const char *name, void (*fn)(void))
{
    tap_case_failures = 0;
    fn();
    tap_case_no++;
    if (tap_case_failures) {
        tap_failed_cases++;
        printf("not ok %d - %s\n", tap_case_no, name);
    } else {
        printf("ok %d - %s\n", tap_case_no, name);
    }
    fflush(stdout);
}

static inline int tap_done(void)
{
    printf("1..%d\n", tap_case_no);
    return tap_failed_cases ? 1 : 0;
}

#endif
