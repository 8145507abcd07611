#include "config.h"

/* vec: the growable-array helper. */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "vec.h"

struct pair {
    uint64_t a;
    uint32_t b;
};

static void test_grows_by_doubling_from_first(void)
{
    struct pair *v = NULL;
    size_t n = 0, cap = 0;

    CHECK_EQ_INT(vec_reserve(&v, &cap, 1, sizeof *v, 16), 0);
    CHECK(v != NULL && cap == 16);
    for (uint32_t i = 0; i < 1000; i++) {
        REQUIRE(vec_reserve(&v, &cap, n + 1, sizeof *v, 16) == 0);
        v[n].a = (uint64_t)i * 7;
        v[n].b = i;
        n++;
    }
    CHECK(cap == 1024);           /* 16, 32, ... 1024: doubled, not exact */
    for (uint32_t i = 0; i < 1000; i++)
        if (v[i].a != (uint64_t)i * 7 || v[i].b != i) {
            CHECK(!"contents kept across growth");
            break;
        }
    free(v);
}

static void test_enough_room_changes_nothing(void)
{
    int *v = malloc(8 * sizeof *v), *before = v;
    size_t cap = 8;

    REQUIRE(v);
    CHECK_EQ_INT(vec_reserve(&v, &cap, 8, sizeof *v, 16), 0);
    CHECK(v == before && cap == 8);
    CHECK_EQ_INT(vec_reserve(&v, &cap, 0, sizeof *v, 16), 0);
    CHECK(v == before && cap == 8);
    /* a need beyond one doubling: doubled until it fits */
    CHECK_EQ_INT(vec_reserve(&v, &cap, 100, sizeof *v, 16), 0);
    CHECK(cap == 128);
    free(v);
}

static void test_first_zero_starts_at_one(void)
{
    char *v = NULL;
    size_t cap = 0;

    CHECK_EQ_INT(vec_reserve(&v, &cap, 1, 1, 0), 0);
    CHECK(cap == 1);
    CHECK_EQ_INT(vec_reserve(&v, &cap, 3, 1, 0), 0);
    CHECK(cap == 4);
    free(v);
}

static void test_overflow_refused_and_array_kept(void)
{
    uint64_t *v = NULL, *before;
    size_t cap = 0;

    REQUIRE(vec_reserve(&v, &cap, 4, sizeof *v, 4) == 0);
    v[3] = 42;
    before = v;
    CHECK_EQ_INT(vec_reserve(&v, &cap, SIZE_MAX / 4, sizeof *v, 4), -ENOMEM);
    CHECK(v == before && cap == 4 && v[3] == 42);
    CHECK_EQ_INT(vec_reserve(&v, &cap, SIZE_MAX, 1, 4), -ENOMEM);
    CHECK(v == before && cap == 4);
    free(v);
}

static void test_u64_list(void)
{
    struct vec_u64 l = { 0 };

    for (uint64_t i = 0; i < 100; i++)
        REQUIRE(vec_u64_push(&l, i * i) == 0);
    CHECK(l.n == 100 && l.cap == 128);
    CHECK(l.v[0] == 0 && l.v[99] == 9801);
    vec_u64_free(&l);
    CHECK(l.v == NULL && l.n == 0 && l.cap == 0);
    /* usable again after free (cap went back with the pointer) */
    CHECK_EQ_INT(vec_u64_push(&l, 7), 0);
    CHECK(l.n == 1 && l.v[0] == 7 && l.cap == 16);
    vec_u64_free(&l);
}

int main(void)
{
    RUN(test_grows_by_doubling_from_first);
    RUN(test_enough_room_changes_nothing);
    RUN(test_first_zero_starts_at_one);
    RUN(test_overflow_refused_and_array_kept);
    RUN(test_u64_list);
    return tap_done();
}
