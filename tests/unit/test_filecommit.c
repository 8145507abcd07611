#include "config.h"

/* The per-file commitment (src/filecommit.c): a valid record verifies; each
 * field altered, a record added, removed or replaced by an older or a
 * foreign one, a changed size, a truncated list and a replayed older
 * commitment are refused with a message naming the check. */

#include <errno.h>
#include <string.h>

#include "error.h"
#include "filecommit.h"
#include "tap.h"

#define INO 4242

static uint8_t dek[32], key[FC_KEY_LEN];

static struct chunk_ref make_ref(uint64_t version, uint8_t tweak)
{
    struct chunk_ref r;

    memset(&r, 0, sizeof r);
    for (int i = 0; i < CHUNK_ID_LEN; i++)
        r.chunk_id[i] = (uint8_t)(tweak * 7 + i);
    r.version = version;
    r.plain_len = 1u << 20;
    r.sealed_len = r.plain_len + 29;
    r.k = 2;
    r.m = 1;
    r.rotation = tweak % 3;
    for (int f = 0; f < 3; f++)
        for (int i = 0; i < FRAG_SUM_LEN; i++)
            r.sums[f][i] = (uint8_t)(tweak ^ (f * 31 + i));
    return r;
}

/* Chunks 0, 1 and 3 (2 is a hole), size 3.5 MiB + change. */
static void build(struct fc_list *l, struct chunk_ref refs[4])
{
    fc_list_init(l);
    refs[0] = make_ref(1, 10);
    refs[1] = make_ref(4, 11);
    refs[3] = make_ref(2, 13);
    REQUIRE(fc_list_set(l, 3, &refs[3]) == 0);   /* out of order on purpose */
    REQUIRE(fc_list_set(l, 0, &refs[0]) == 0);
    REQUIRE(fc_list_set(l, 1, &refs[1]) == 0);
}

#define SIZE ((3ull << 20) + 1000)

static int verify(const struct fc_list *l, uint64_t size, const uint8_t *rec, size_t len,
                  uint64_t min_gen)
{
    return fc_verify(key, INO, size, l, rec, len, min_gen, NULL);
}

static void test_key_is_own(void)
{
    uint8_t k2[FC_KEY_LEN];

    for (int i = 0; i < 32; i++)
        dek[i] = (uint8_t)(i * 5 + 1);
    REQUIRE(fc_key_derive(dek, key) == 0);
    REQUIRE(fc_key_derive(dek, k2) == 0);
    CHECK_MEM(key, k2, FC_KEY_LEN);           /* deterministic */
    CHECK(memcmp(key, dek, FC_KEY_LEN) != 0); /* never the DEK itself */
}

static void test_valid_roundtrip(void)
{
    struct fc_list l;
    struct chunk_ref refs[4];
    struct fc_record r;
    uint8_t rec[FC_RECORD_LEN];

    build(&l, refs);
    CHECK(l.n == 3 && l.e[0].idx == 0 && l.e[1].idx == 1 && l.e[2].idx == 3);
    REQUIRE(fc_seal(key, INO, SIZE, 7, &l, rec) == 0);
    CHECK_EQ_INT(fc_verify(key, INO, SIZE, &l, rec, sizeof rec, 0, &r), 0);
    CHECK(r.generation == 7 && r.nchunks == 3);
    CHECK(fc_entry_matches(fc_list_find(&l, 1), &refs[1]));
    CHECK(fc_list_find(&l, 2) == NULL);          /* the hole */
    CHECK(!fc_entry_matches(fc_list_find(&l, 1), &refs[0]));
    /* an empty file */
    struct fc_list empty;
    fc_list_init(&empty);
    REQUIRE(fc_seal(key, INO, 0, 1, &empty, rec) == 0);
    CHECK_EQ_INT(verify(&empty, 0, rec, sizeof rec, 0), 0);
    fc_list_free(&l);
}

static void expect_check(int rc, const char *check)
{
    CHECK_EQ_INT(rc, -EBADMSG);
    CHECK(strstr(pfs_err_msg(), check) != NULL);
}

static void test_each_field_altered(void)
{
    struct fc_list l, m;
    struct chunk_ref refs[4];
    uint8_t rec[FC_RECORD_LEN], bad[FC_RECORD_LEN];

    build(&l, refs);
    REQUIRE(fc_seal(key, INO, SIZE, 7, &l, rec) == 0);
    /* size changed */
    expect_check(verify(&l, SIZE + 1, rec, sizeof rec, 0), "commitment MAC");
    expect_check(verify(&l, SIZE - (1 << 20), rec, sizeof rec, 0), "commitment MAC");
    /* another inode (a commitment copied from another file) */
    expect_check(fc_verify(key, INO + 1, SIZE, &l, rec, sizeof rec, 0, NULL), "commitment MAC");
    /* another key (another file's DEK) */
    uint8_t other[FC_KEY_LEN];
    memcpy(other, key, sizeof other);
    other[0] ^= 1;
    expect_check(fc_verify(other, INO, SIZE, &l, rec, sizeof rec, 0, NULL), "commitment MAC");
    /* every byte of the record */
    for (size_t i = 0; i < sizeof rec; i++) {
        memcpy(bad, rec, sizeof rec);
        bad[i] ^= 0x20;
        CHECK_EQ_INT(verify(&l, SIZE, bad, sizeof bad, 0), -EBADMSG);
    }
    /* truncated / extended / missing record */
    expect_check(verify(&l, SIZE, rec, sizeof rec - 1, 0), "commitment record");
    expect_check(verify(&l, SIZE, NULL, 0, 0), "commitment record");
    /* each field of each chunk record */
    struct chunk_ref alt;
    for (int field = 0; field < 8; field++) {
        alt = refs[1];
        switch (field) {
        case 0: alt.chunk_id[3] ^= 1; break;
        case 1: alt.version++; break;
        case 2: alt.plain_len--; break;
        case 3: alt.sealed_len++; break;
        case 4: alt.k = 1; break;
        case 5: alt.m = 2; break;
        case 6: alt.rotation ^= 1; break;
        default: alt.sums[2][5] ^= 1; break;
        }
        fc_list_init(&m);
        REQUIRE(fc_list_copy(&m, &l) == 0);
        REQUIRE(fc_list_set(&m, 1, &alt) == 0);
        expect_check(verify(&m, SIZE, rec, sizeof rec, 0), "commitment MAC");
        CHECK(!fc_entry_matches(fc_list_find(&l, 1), &alt));
        fc_list_free(&m);
    }
    /* a record moved to another index */
    fc_list_init(&m);
    REQUIRE(fc_list_set(&m, 0, &refs[0]) == 0);
    REQUIRE(fc_list_set(&m, 2, &refs[1]) == 0);
    REQUIRE(fc_list_set(&m, 3, &refs[3]) == 0);
    expect_check(verify(&m, SIZE, rec, sizeof rec, 0), "commitment MAC");
    fc_list_free(&m);
    fc_list_free(&l);
}

static void test_records_added_removed(void)
{
    struct fc_list l, m;
    struct chunk_ref refs[4];
    uint8_t rec[FC_RECORD_LEN];

    build(&l, refs);
    REQUIRE(fc_seal(key, INO, SIZE, 7, &l, rec) == 0);
    /* a record deleted (reads as a hole) */
    fc_list_init(&m);
    REQUIRE(fc_list_copy(&m, &l) == 0);
    fc_list_truncate(&m, 3);
    expect_check(verify(&m, SIZE, rec, sizeof rec, 0), "chunk count");
    /* the list truncated after the first chunk */
    fc_list_truncate(&m, 1);
    expect_check(verify(&m, SIZE, rec, sizeof rec, 0), "chunk count");
    /* a record put where a hole was committed */
    REQUIRE(fc_list_copy(&m, &l) == 0);
    struct chunk_ref foreign = make_ref(1, 99);
    REQUIRE(fc_list_set(&m, 2, &foreign) == 0);
    expect_check(verify(&m, SIZE, rec, sizeof rec, 0), "chunk count");
    /* same count, but the hole moved: 2 present, 1 missing */
    fc_list_free(&m);
    REQUIRE(fc_list_set(&m, 0, &refs[0]) == 0);
    REQUIRE(fc_list_set(&m, 2, &foreign) == 0);
    REQUIRE(fc_list_set(&m, 3, &refs[3]) == 0);
    expect_check(verify(&m, SIZE, rec, sizeof rec, 0), "commitment MAC");
    fc_list_free(&m);
    fc_list_free(&l);
}

static void test_replayed_older(void)
{
    struct fc_list l, old;
    struct chunk_ref refs[4];
    uint8_t rec_old[FC_RECORD_LEN], rec_new[FC_RECORD_LEN];

    build(&l, refs);
    fc_list_init(&old);
    REQUIRE(fc_list_copy(&old, &l) == 0);
    REQUIRE(fc_seal(key, INO, SIZE, 7, &old, rec_old) == 0);
    /* chunk 1 rewritten: version 5, new fragments */
    struct chunk_ref v5 = make_ref(5, 21);
    REQUIRE(fc_list_set(&l, 1, &v5) == 0);
    REQUIRE(fc_seal(key, INO, SIZE, 8, &l, rec_new) == 0);
    CHECK_EQ_INT(verify(&l, SIZE, rec_new, sizeof rec_new, 7), 0);
    /* the older chunk record put back under the current commitment */
    expect_check(verify(&old, SIZE, rec_new, sizeof rec_new, 0), "commitment MAC");
    CHECK(!fc_entry_matches(fc_list_find(&l, 1), &refs[1]));
    /* the older commitment put back with the new record */
    expect_check(verify(&l, SIZE, rec_old, sizeof rec_old, 0), "commitment MAC");
    /* the whole older state put back: consistent in itself, but older than
     * what this reader verified */
    CHECK_EQ_INT(verify(&old, SIZE, rec_old, sizeof rec_old, 0), 0);
    expect_check(verify(&old, SIZE, rec_old, sizeof rec_old, 8), "generation");
    /* the generation field edited to look newer */
    uint8_t forged[FC_RECORD_LEN];
    memcpy(forged, rec_old, sizeof forged);
    forged[9] = 9;
    expect_check(verify(&old, SIZE, forged, sizeof forged, 8), "commitment MAC");
    fc_list_free(&old);
    fc_list_free(&l);
}

static void test_parse(void)
{
    struct fc_list l;
    struct fc_record r;
    uint8_t rec[FC_RECORD_LEN];

    fc_list_init(&l);
    REQUIRE(fc_seal(key, INO, 0, 3, &l, rec) == 0);
    CHECK_EQ_INT(fc_parse(rec, sizeof rec, &r), 0);
    CHECK(r.generation == 3 && r.nchunks == 0);
    rec[0] = 2;
    CHECK_EQ_INT(fc_parse(rec, sizeof rec, &r), -EBADMSG);
    rec[0] = FC_LAYOUT;
    rec[1] = 7;
    CHECK_EQ_INT(fc_parse(rec, sizeof rec, &r), -EBADMSG);
    rec[1] = FC_ALG_HMAC_SHA256;
    memset(rec + 2, 0, 8);   /* generation 0 */
    CHECK_EQ_INT(fc_parse(rec, sizeof rec, &r), -EBADMSG);
    CHECK_EQ_INT(fc_seal(key, INO, 0, 0, &l, rec), -EINVAL);
}

int main(void)
{
    RUN(test_key_is_own);
    RUN(test_valid_roundtrip);
    RUN(test_each_field_altered);
    RUN(test_records_added_removed);
    RUN(test_replayed_older);
    RUN(test_parse);
    return tap_done();
}
