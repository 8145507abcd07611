#include "config.h"

/* Stand-in for libFuzzer's main(), linked into the `make check` programs.
 *
 *   fuzz_X                 replay tests/fuzz/corpus/<name>/, then a bounded,
 *                          seeded stream of mutations of those seeds
 *   fuzz_X FILE...         run just these inputs (to reproduce a crash)
 *
 * The corpus is found through $srcdir (set by automake's test harness), else
 * beside this source file, else relative to the working directory.  A crash
 * or sanitizer report kills the program, so the TAP plan never appears and
 * the test fails.  PACTFS_FUZZ_ITERS overrides the mutation count and
 * PACTFS_FUZZ_SEED the seed; PACTFS_FUZZ_SAVE=DIR writes each mutated input
 * to DIR/mutant-N before running it, so the last file is the one that crashed.
 */

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fuzz.h"
#include "tap.h"

#define FUZZ_INPUT_MAX (64u * 1024u)    /* longest seed or mutated input */
#define CORPUS_MAX_FILES 256

struct input {
    uint8_t *data;
    size_t len;
};

static struct input corpus[CORPUS_MAX_FILES];
static size_t corpus_count;
static char corpus_dir[4096];

/* ---- reading inputs ---- */

static int read_input(const char *path, struct input *in)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    size_t got;

    if (!f)
        return -errno;
    buf = malloc(FUZZ_INPUT_MAX);
    if (!buf) {
        fclose(f);
        return -ENOMEM;
    }
    got = fread(buf, 1, FUZZ_INPUT_MAX, f);
    fclose(f);
    in->data = buf;
    in->len = got;
    return 0;
}

static int is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* $srcdir/tests/fuzz/corpus/<name>, else next to this file, else ./... */
static int find_corpus_dir(void)
{
    const char *srcdir = getenv("srcdir");
    char here[4096];

    if (srcdir) {
        snprintf(corpus_dir, sizeof corpus_dir, "%s/tests/fuzz/corpus/%s", srcdir,
                 fuzz_target_name);
        if (is_dir(corpus_dir))
            return 0;
    }
    snprintf(here, sizeof here, "%s", __FILE__);
    snprintf(corpus_dir, sizeof corpus_dir, "%s/corpus/%s", dirname(here), fuzz_target_name);
    if (is_dir(corpus_dir))
        return 0;
    snprintf(corpus_dir, sizeof corpus_dir, "tests/fuzz/corpus/%s", fuzz_target_name);
    return is_dir(corpus_dir) ? 0 : -ENOENT;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Load every regular file of the corpus directory, in name order so runs
 * are reproducible. */
static void load_corpus(void)
{
    struct dirent **names = NULL;
    char path[8192];
    int n;

    if (find_corpus_dir() != 0)
        return;
    n = scandir(corpus_dir, &names, NULL, by_name);
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", corpus_dir, names[i]->d_name);
        if (names[i]->d_name[0] != '.' && corpus_count < CORPUS_MAX_FILES
            && !is_dir(path) && read_input(path, &corpus[corpus_count]) == 0)
            corpus_count++;
        free(names[i]);
    }
    free(names);
}

static void free_corpus(void)
{
    for (size_t i = 0; i < corpus_count; i++)
        free(corpus[i].data);
    corpus_count = 0;
}

/* Run the target on a private heap copy, so an over-read of even one byte
 * past the input is caught by ASan. */
static void run_one(const uint8_t *data, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);

    if (!copy) {
        fprintf(stderr, "fuzz: out of memory\n");
        exit(2);
    }
    if (len)
        memcpy(copy, data, len);
    LLVMFuzzerTestOneInput(copy, len);
    free(copy);
}

/* ---- deterministic mutations (xorshift64*, fixed seed) ---- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t rng_below(size_t n)
{
    return n ? (size_t)(rng_next() % n) : 0;
}

/* Values that tend to sit on boundaries of length and count fields. */
static const uint32_t interesting_u32[] = {
    0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000,
    0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 16, 28, 32, 64, 255, 256, 4096,
};

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Apply one random edit to buf (len bytes of cap); returns the new length. */
static size_t mutate_once(uint8_t *buf, size_t len, size_t cap)
{
    size_t pos = rng_below(len), n;

    switch (rng_below(9)) {
    case 0:                                     /* flip one bit */
        if (len)
            buf[pos] ^= (uint8_t)(1u << rng_below(8));
        return len;
    case 1:                                     /* set one byte */
        if (len)
            buf[pos] = (uint8_t)rng_next();
        return len;
    case 2:                                     /* boundary u32 (big-endian) */
        if (len >= 4) {
            pos = rng_below(len - 3);
            put_be32(buf + pos, interesting_u32[rng_below(sizeof interesting_u32
                                                          / sizeof interesting_u32[0])]);
        }
        return len;
    case 3:                                     /* truncate */
        return rng_below(len + 1);
    case 4:                                     /* delete a range */
        n = rng_below(len - pos + 1);
        memmove(buf + pos, buf + pos + n, len - pos - n);
        return len - n;
    case 5:                                     /* insert random bytes */
        n = 1 + rng_below(16);
        if (len + n > cap)
            return len;
        memmove(buf + pos + n, buf + pos, len - pos);
        for (size_t i = 0; i < n; i++)
            buf[pos + i] = (uint8_t)rng_next();
        return len + n;
    case 6:                                     /* duplicate a range */
        n = rng_below(len - pos + 1);
        if (len + n > cap)
            return len;
        memmove(buf + pos + n, buf + pos, len - pos);
        return len + n;
    case 7:                                     /* splice in another seed */
        if (corpus_count) {
            const struct input *o = &corpus[rng_below(corpus_count)];
            size_t from = rng_below(o->len + 1);
            n = rng_below(o->len - from + 1);
            if (pos + n > cap)
                n = cap - pos;
            memcpy(buf + pos, o->data + from, n);
            return pos + n > len ? pos + n : len;
        }
        return len;
    default:                                    /* ASCII digits: text formats */
        if (len)
            buf[pos] = (uint8_t)('0' + rng_below(10));
        return len;
    }
}

/* A mutated seed, or now and then pure random bytes of a random length. */
static size_t make_mutant(uint8_t *buf, size_t cap)
{
    size_t len, edits;

    if (corpus_count == 0 || rng_below(16) == 0) {
        len = rng_below(cap < 512 ? cap : 512);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rng_next();
        return len;
    }
    const struct input *seed = &corpus[rng_below(corpus_count)];
    len = seed->len < cap ? seed->len : cap;
    memcpy(buf, seed->data, len);
    edits = 1 + rng_below(4);
    for (size_t i = 0; i < edits; i++)
        len = mutate_once(buf, len, cap);
    return len;
}

/* ---- test cases ---- */

static void test_corpus_replay(void)
{
    unsigned long accepted_before = fuzz_accepted;

    REQUIRE(corpus_count > 0);   /* a missing corpus must not pass silently */
    printf("# %zu seeds from %s\n", corpus_count, corpus_dir);
    for (size_t i = 0; i < corpus_count; i++)
        run_one(corpus[i].data, corpus[i].len);
    /* The seeds are valid inputs from the real writers: the parser must
     * accept at least one, or the target no longer reaches its deep paths. */
    CHECK(fuzz_accepted > accepted_before);
}

static void test_edge_inputs(void)
{
    static uint8_t zeros[4096], ones[4096];

    memset(ones, 0xff, sizeof ones);
    run_one(NULL, 0);
    run_one(zeros, 1);
    run_one(zeros, sizeof zeros);
    run_one(ones, 1);
    run_one(ones, sizeof ones);
    CHECK(1);   /* a crash aborts the program, which fails this case */
}

static unsigned env_unsigned(const char *name, unsigned dflt)
{
    const char *v = getenv(name);
    char *end;
    unsigned long x;

    if (!v || !*v)
        return dflt;
    x = strtoul(v, &end, 0);
    return *end ? dflt : (unsigned)x;
}

/* With PACTFS_FUZZ_SAVE=DIR, keep input i as DIR/mutant-i. */
static void save_mutant(unsigned i, const uint8_t *data, size_t len)
{
    const char *dir = getenv("PACTFS_FUZZ_SAVE");
    char path[4096];

    if (!dir || !*dir)
        return;
    if ((size_t)snprintf(path, sizeof path, "%s/mutant-%05u", dir, i) < sizeof path
        && fuzz_write_file(path, data, len) != 0)
        fprintf(stderr, "fuzz: cannot save %s\n", path);
}

static void test_mutations(void)
{
    unsigned iters = env_unsigned("PACTFS_FUZZ_ITERS", fuzz_mutations);
    uint8_t *buf = malloc(FUZZ_INPUT_MAX);
    struct timespec t0, t1;
    unsigned long accepted_before = fuzz_accepted;
    size_t len;

    REQUIRE(buf != NULL);
    rng_state = env_unsigned("PACTFS_FUZZ_SEED", 0x5eed) | 0x100000000ULL;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0; i < iters; i++) {
        len = make_mutant(buf, FUZZ_INPUT_MAX);
        save_mutant(i, buf, len);
        run_one(buf, len);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    free(buf);
    printf("# %u mutated inputs in %.1f s, %lu accepted in total\n", iters,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
           fuzz_accepted);
    /* Reaching here means no crash.  Corrupted inputs must also be refused
     * now and then: a parser that accepts everything validates nothing. */
    CHECK(iters == 0 || fuzz_accepted - accepted_before < iters);
}

static int run_files(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        struct input in;
        if (read_input(argv[i], &in) != 0) {
            fprintf(stderr, "fuzz: cannot read %s\n", argv[i]);
            return 2;
        }
        unsigned long before = fuzz_accepted;
        run_one(in.data, in.len);
        printf("# %s (%zu bytes): %s\n", argv[i], in.len,
               fuzz_accepted > before ? "accepted" : "refused");
        free(in.data);
    }
    printf("# %d inputs ran without a crash\n", argc - 1);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return run_files(argc, argv);
    load_corpus();
    RUN(test_corpus_replay);
    RUN(test_edge_inputs);
    RUN(test_mutations);
    free_corpus();
    return tap_done();
}
