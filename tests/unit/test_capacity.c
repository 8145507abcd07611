#include "config.h"

/* capacity_avail: what statfs reports as free, from made-up endpoints. */

#include "capacity.h"
#include "tap.h"

#define GiB ((uint64_t)1 << 30)

static void test_separate_disks_k_of_k_plus_m(void)
{
    /* 3 endpoints on 3 disks, k=2 m=1: every chunk puts one half-size
     * fragment on each, so the smallest disk fills after 2x its free space. */
    struct store_space_info sp[3] = { { 100 * GiB, 10 * GiB, 1 }, { 100 * GiB, 40 * GiB, 2 },
                                      { 100 * GiB, 30 * GiB, 3 } };
    int known[3] = { 1, 1, 1 };
    CHECK(capacity_avail(sp, known, 3, 2, 1) == 20 * GiB);
    /* 4 disks, k=2 m=1: each gets 3/4 of a half fragment per chunk */
    struct store_space_info sp4[4] = { { 0, 30 * GiB, 1 }, { 0, 90 * GiB, 2 },
                                       { 0, 90 * GiB, 3 }, { 0, 90 * GiB, 4 } };
    int known4[4] = { 1, 1, 1, 1 };
    CHECK(capacity_avail(sp4, known4, 4, 2, 1) == 80 * GiB);
}

static void test_one_shared_disk_counted_once(void)
{
    /* three endpoint directories on one filesystem with 30 GiB free: each
     * user byte costs 3/2 bytes of that one disk */
    struct store_space_info sp[3] = { { 0, 30 * GiB, 7 }, { 0, 30 * GiB, 7 },
                                      { 0, 30 * GiB, 7 } };
    int known[3] = { 1, 1, 1 };
    CHECK(capacity_avail(sp, known, 3, 2, 1) == 20 * GiB);
    /* two on a shared disk (60 GiB), one alone (50 GiB): the shared disk
     * takes 2 of the 3 half-size fragments, 60 * 3 * 2 / (2 * 3) = 60 */
    struct store_space_info sp2[3] = { { 0, 60 * GiB, 7 }, { 0, 50 * GiB, 8 },
                                       { 0, 60 * GiB, 7 } };
    CHECK(capacity_avail(sp2, known, 3, 2, 1) == 60 * GiB);
    sp2[1].avail = 20 * GiB;   /* now the lone disk is the limit: 20 * 2 */
    CHECK(capacity_avail(sp2, known, 3, 2, 1) == 40 * GiB);
}

static void test_unknown_endpoints_limit_nothing(void)
{
    struct store_space_info sp[3] = { { 0, 0, 0 }, { 0, 10 * GiB, 2 }, { 0, 0, 0 } };
    int known[3] = { 0, 1, 0 };
    CHECK(capacity_avail(sp, known, 3, 2, 1) == 20 * GiB);
    int none[3] = { 0, 0, 0 };
    CHECK(capacity_avail(sp, none, 3, 2, 1) == CAPACITY_UNLIMITED);
    /* a full endpoint: nothing more fits */
    sp[1].avail = 0;
    CHECK(capacity_avail(sp, known, 3, 2, 1) == 0);
}

int main(void)
{
    RUN(test_separate_disks_k_of_k_plus_m);
    RUN(test_one_shared_disk_counted_once);
    RUN(test_unknown_endpoints_limit_nothing);
    return tap_done();
}
