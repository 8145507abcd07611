#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "erasure.h"
#include "error.h"
#include "tap.h"

#define FRAGLEN 192

static void fill_pattern(uint8_t *p, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;

    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 16);
    }
}

/* Encode random data, then for every subset of at least k fragments wipe
 * the others and check decode rebuilds all k+m fragments exactly. */
static int check_all_patterns(unsigned k, unsigned m, int only_exact_k)
{
    struct ec_codec *c;
    unsigned n = k + m, failures = 0;
    uint8_t orig[EC_MAX_FRAGS][FRAGLEN], work[EC_MAX_FRAGS][FRAGLEN];
    uint8_t *ptrs[EC_MAX_FRAGS], present[EC_MAX_FRAGS];

    if (ec_new(k, m, &c) != 0)
        return -1;
    for (unsigned i = 0; i < n; i++)
        ptrs[i] = orig[i];
    for (unsigned i = 0; i < k; i++)
        fill_pattern(orig[i], FRAGLEN, k * 100 + m * 10 + i);
    if (ec_encode(c, FRAGLEN, ptrs) != 0) {
        ec_free(c);
        return -1;
    }
    for (uint32_t mask = 0; mask < (1u << n); mask++) {
        unsigned pop = (unsigned)__builtin_popcount(mask);
        if (pop < k || (only_exact_k && pop != k))
            continue;
        for (unsigned i = 0; i < n; i++) {
            present[i] = (mask >> i) & 1;
            memcpy(work[i], orig[i], FRAGLEN);
            if (!present[i])
                memset(work[i], 0xA5, FRAGLEN);
            ptrs[i] = work[i];
        }
        if (ec_decode(c, FRAGLEN, ptrs, present) != 0 ||
            memcmp(work, orig, (size_t)n * FRAGLEN) != 0)
            failures++;
    }
    ec_free(c);
    return (int)failures;
}

static void test_every_k_of_n_rebuilds(void)
{
    static const unsigned km[][2] = {
        {1, 0}, {2, 0}, {1, 1}, {2, 1}, {3, 2}, {4, 2}, {2, 2}, {6, 3}, {10, 4}, {8, 8}, {12, 4},
    };

    for (size_t t = 0; t < sizeof km / sizeof km[0]; t++) {
        int f = check_all_patterns(km[t][0], km[t][1], 0);
        if (f != 0)
            printf("# k=%u m=%u: %d patterns failed\n", km[t][0], km[t][1], f);
        CHECK_EQ_INT(f, 0);
    }
    /* k + m = 16 with large m: exact-k subsets only, to keep it quick. */
    CHECK_EQ_INT(check_all_patterns(5, 11, 1), 0);
}

static void test_data_fragments_are_the_payload(void)
{
    struct ec_codec *c;
    uint8_t buf[3][FRAGLEN], *ptrs[3] = {buf[0], buf[1], buf[2]}, before[2][FRAGLEN];

    REQUIRE(ec_new(2, 1, &c) == 0);
    fill_pattern(buf[0], FRAGLEN, 1);
    fill_pattern(buf[1], FRAGLEN, 2);
    memcpy(before, buf, sizeof before);
    CHECK(ec_encode(c, FRAGLEN, ptrs) == 0);
    CHECK_MEM(before, buf, sizeof before);   /* systematic: data untouched */
    /* parity of a 2+1 Cauchy code is not simply a copy of either fragment */
    CHECK(memcmp(buf[2], buf[0], FRAGLEN) != 0 && memcmp(buf[2], buf[1], FRAGLEN) != 0);
    ec_free(c);
}

static void test_too_few_fragments_is_eio(void)
{
    struct ec_codec *c;
    uint8_t buf[6][FRAGLEN], *ptrs[6];
    uint8_t present[6] = {1, 0, 1, 0, 0, 0};

    REQUIRE(ec_new(4, 2, &c) == 0);
    for (int i = 0; i < 6; i++) {
        ptrs[i] = buf[i];
        fill_pattern(buf[i], FRAGLEN, (unsigned)i);
    }
    pfs_err_clear();
    CHECK_EQ_INT(ec_decode(c, FRAGLEN, ptrs, present), -EIO);
    CHECK(strstr(pfs_err_msg(), "fragments") != NULL);
    present[1] = present[3] = 1;   /* exactly k: now enough */
    CHECK_EQ_INT(ec_decode(c, FRAGLEN, ptrs, present), 0);
    ec_free(c);
}

static void test_bad_parameters_refused(void)
{
    struct ec_codec *c = (struct ec_codec *)1;

    CHECK_EQ_INT(ec_new(0, 2, &c), -EINVAL);
    CHECK(c == NULL);
    CHECK_EQ_INT(ec_new(10, 7, &c), -EINVAL);
    CHECK_EQ_INT(ec_new(16, 0, &c), 0);
    ec_free(c);
}

static void test_fragment_len(void)
{
    struct ec_codec *c;

    REQUIRE(ec_new(2, 1, &c) == 0);
    CHECK_EQ_INT(ec_fragment_len(c, 0), 64);
    CHECK_EQ_INT(ec_fragment_len(c, 1), 64);
    CHECK_EQ_INT(ec_fragment_len(c, 128), 64);
    CHECK_EQ_INT(ec_fragment_len(c, 129), 128);
    CHECK_EQ_INT(ec_fragment_len(c, 1048576 + 28 + 2), 524352);
    ec_free(c);
    REQUIRE(ec_new(3, 2, &c) == 0);
    CHECK_EQ_INT(ec_fragment_len(c, 193), 128);   /* ceil(193/3)=65 -> 128 */
    ec_free(c);
}

/* Many threads decoding different erasure patterns on one codec. */
struct decode_job {
    struct ec_codec *c;
    unsigned seed;
    int failures;
};

static void *decode_worker(void *arg)
{
    struct decode_job *j = arg;
    uint8_t orig[6][FRAGLEN], work[6][FRAGLEN], *ptrs[6], present[6];

    for (int round = 0; round < 300; round++) {
        for (int i = 0; i < 6; i++)
            ptrs[i] = orig[i];
        for (int i = 0; i < 4; i++)
            fill_pattern(orig[i], FRAGLEN, j->seed * 1000 + (unsigned)round * 4 + (unsigned)i);
        ec_encode(j->c, FRAGLEN, ptrs);
        unsigned lost1 = (j->seed + (unsigned)round) % 6, lost2 = (lost1 + 1 + (unsigned)round % 5) % 6;
        for (int i = 0; i < 6; i++) {
            present[i] = (unsigned)i != lost1 && (unsigned)i != lost2;
            memcpy(work[i], orig[i], FRAGLEN);
            if (!present[i])
                memset(work[i], 0, FRAGLEN);
            ptrs[i] = work[i];
        }
        if (ec_decode(j->c, FRAGLEN, ptrs, present) != 0 || memcmp(work, orig, sizeof orig))
            j->failures++;
    }
    return NULL;
}

static void test_concurrent_decode(void)
{
    struct ec_codec *c;
    pthread_t th[4];
    struct decode_job jobs[4];

    REQUIRE(ec_new(4, 2, &c) == 0);
    for (unsigned i = 0; i < 4; i++) {
        jobs[i] = (struct decode_job){c, i + 1, 0};
        pthread_create(&th[i], NULL, decode_worker, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(jobs[i].failures, 0);
    }
    ec_free(c);
}

int main(void)
{
    RUN(test_every_k_of_n_rebuilds);
    RUN(test_data_fragments_are_the_payload);
    RUN(test_too_few_fragments_is_eio);
    RUN(test_bad_parameters_refused);
    RUN(test_fragment_len);
    RUN(test_concurrent_decode);
    return tap_done();
}
