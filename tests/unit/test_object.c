#include "config.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto.h"
#include "error.h"
#include "object.h"
#include "store.h"
#include "tap.h"

#define MAX_STORES 8

struct rig {
    char root[64];
    unsigned n, k, m;
    struct store *stores[MAX_STORES];
    struct object_layer *ol;
};

static const uint8_t dek[32] = "0123456789abcdef0123456789abcdef";

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int rig_up(struct rig *r, unsigned n, unsigned k, unsigned m)
{
    char path[128];

    memset(r, 0, sizeof *r);
    strcpy(r->root, "/tmp/pactfs-object-XXXXXX");
    if (!mkdtemp(r->root))
        return -1;
    r->n = n;
    r->k = k;
    r->m = m;
    for (unsigned i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/ep%u", r->root, i);
        if (store_dir_open(path, 1, &r->stores[i]) != 0)
            return -1;
    }
    return object_layer_new(r->stores, n, k, m, &r->ol);
}

static void rig_down(struct rig *r)
{
    object_layer_free(r->ol);
    for (unsigned i = 0; i < r->n; i++)
        store_close(r->stores[i]);
    nftw(r->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static uint8_t *pattern(size_t n, unsigned seed)
{
    uint8_t *p = malloc(n ? n : 1);
    uint32_t x = seed * 2654435761u + 7;

    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 16);
    }
    return p;
}

static struct store *frag_store(struct rig *r, const struct chunk_ref *ref, unsigned i,
                                char *name)
{
    object_fragment_name(ref->chunk_id, i, name);
    return r->stores[object_fragment_store(r->ol, ref, i)];
}

static void drop_fragment(struct rig *r, const struct chunk_ref *ref, unsigned i)
{
    char name[OBJECT_NAME_MAX];
    struct store *s = frag_store(r, ref, i, name);

    store_del(s, name);
}

static void corrupt_fragment(struct rig *r, const struct chunk_ref *ref, unsigned i)
{
    char name[OBJECT_NAME_MAX];
    struct store *s = frag_store(r, ref, i, name);
    void *data;
    size_t len;

    if (store_get(s, name, &data, &len) == 0) {
        ((uint8_t *)data)[len / 2] ^= 0x01;
        store_put(s, name, data, len);
        free(data);
    }
}

static int read_fragment(struct rig *r, const struct chunk_ref *ref, unsigned i, void **data,
                         size_t *len)
{
    char name[OBJECT_NAME_MAX];
    struct store *s = frag_store(r, ref, i, name);

    return store_get(s, name, data, len);
}

static void check_roundtrip(unsigned n, unsigned k, unsigned m)
{
    static const size_t sizes[] = {1, 2, 3, 63, 64, 65, 100, 127, 129, 1000, 4095, 12345,
                                   65536, 1048575, 1048576};
    struct rig r;

    if (rig_up(&r, n, k, m) != 0) {
        CHECK(!"rig_up");
        rig_down(&r);
        return;
    }
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        size_t len = sizes[t];
        uint8_t *in = pattern(len, (unsigned)t), *out = malloc(len);
        struct chunk_ref ref;
        uint32_t bad = 99;

        CHECK_EQ_INT(object_put_chunk(r.ol, dek, 42, t, 1, in, len, &ref), 0);
        CHECK_EQ_INT(ref.plain_len, len);
        CHECK_EQ_INT(ref.sealed_len, len + 2 + AEAD_OVERHEAD);
        CHECK(ref.k == k && ref.m == m && ref.version == 1);
        CHECK_EQ_INT(ref.rotation, t % n);
        CHECK_EQ_INT(object_get_chunk(r.ol, dek, 42, t, &ref, out, &bad), 0);
        CHECK_MEM(in, out, len);
        CHECK_EQ_INT(bad, 0);
        free(in);
        free(out);
    }
    CHECK_EQ_INT(object_layer_sync(r.ol), 0);
    rig_down(&r);
}

static void test_roundtrip_sizes(void)
{
    check_roundtrip(3, 2, 1);
    check_roundtrip(5, 3, 2);
    check_roundtrip(7, 4, 2);   /* more endpoints than fragments */
    check_roundtrip(2, 2, 0);
}

/* Backends without get_into (the copying read path) behave the same. */
static void test_roundtrip_without_get_into(void)
{
    static struct store_ops plain_ops;
    struct rig r;
    size_t len = 54321;
    uint8_t *in = pattern(len, 12), *out = malloc(len);
    struct chunk_ref ref;
    uint32_t bad = 0;

    REQUIRE(rig_up(&r, 3, 2, 1) == 0);
    plain_ops = *r.stores[0]->ops;
    plain_ops.get_into = NULL;
    for (unsigned i = 0; i < 3; i++)
        r.stores[i]->ops = &plain_ops;
    CHECK_EQ_INT(object_put_chunk(r.ol, dek, 3, 1, 1, in, len, &ref), 0);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 3, 1, &ref, out, &bad), 0);
    CHECK_MEM(in, out, len);
    corrupt_fragment(&r, &ref, 1);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 3, 1, &ref, out, &bad), 0);
    CHECK_MEM(in, out, len);
    CHECK_EQ_INT(bad, 2);
    free(in);
    free(out);
    rig_down(&r);
}

static int failing_put(struct store *s, const char *name, const void *data, size_t len)
{
    (void)data;
    (void)len;
    return pfs_err(-ENOSPC, "endpoint %s: disk full while writing object %s", s->desc, name);
}

static int count_objects(void *arg, const char *name, uint64_t size)
{
    (void)name;
    (void)size;
    ++*(int *)arg;
    return 0;
}

/* One endpoint refusing writes fails the put, names the endpoint, and leaves
 * no orphan fragments on the others. */
static void test_put_failure_cleans_up(void)
{
    static struct store_ops broken_ops;
    struct rig r;
    uint8_t *in = pattern(3000, 13);
    struct chunk_ref ref;
    int objects = 0;

    REQUIRE(rig_up(&r, 3, 2, 1) == 0);
    broken_ops = *r.stores[1]->ops;
    broken_ops.put = broken_ops.put_new = failing_put;
    r.stores[1]->ops = &broken_ops;
    CHECK_EQ_INT(object_put_chunk(r.ol, dek, 4, 0, 1, in, 3000, &ref), -ENOSPC);
    CHECK(strstr(pfs_err_msg(), "disk full") != NULL);
    CHECK(strstr(pfs_err_msg(), r.stores[1]->desc) != NULL);
    for (unsigned i = 0; i < 3; i++)
        CHECK_EQ_INT(store_list(r.stores[i], count_objects, &objects), 0);
    CHECK_EQ_INT(objects, 0);
    free(in);
    rig_down(&r);
}

/* Degraded put: with one endpoint failing and write_min = k, the chunk is
 * stored with the missing fragment in the mask, reads back, and a repair
 * (once the endpoint works) makes it whole; with write_min = k + m the put
 * fails and leaves nothing behind. */
static void test_degraded_put_then_repair(void)
{
    static struct store_ops broken_ops;
    const struct store_ops *good_ops;
    struct rig r;
    uint8_t *in = pattern(7000, 21), *out = malloc(7000);
    struct chunk_ref ref;
    uint32_t missing = 0, bad = 0;
    struct object_endpoint_stats st;
    int objects = 0;

    REQUIRE(out && rig_up(&r, 3, 2, 1) == 0);
    good_ops = r.stores[1]->ops;
    broken_ops = *good_ops;
    broken_ops.put = broken_ops.put_new = failing_put;
    r.stores[1]->ops = &broken_ops;
    CHECK_EQ_INT(object_layer_set_write_min(r.ol, 1), -EINVAL);
    CHECK_EQ_INT(object_layer_set_write_min(r.ol, 4), -EINVAL);
    CHECK_EQ_INT(object_layer_set_write_min(r.ol, 2), 0);
    CHECK_EQ_INT(object_put_chunk_degraded(r.ol, dek, 5, 0, 1, in, 7000, &ref, &missing), 0);
    CHECK_EQ_INT(missing, 1u << 1);             /* rotation 0: fragment 1 on store 1 */
    object_layer_endpoint_stats(r.ol, 1, &st);
    CHECK(st.put_failing && st.errors == 1 && strstr(st.last_error, "disk full"));
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 5, 0, &ref, out, NULL), 0);
    CHECK(memcmp(in, out, 7000) == 0);
    r.stores[1]->ops = good_ops;                 /* the endpoint is back */
    CHECK_EQ_INT(object_verify_chunk(r.ol, &ref, &bad), 0);
    CHECK_EQ_INT(bad, 1u << 1);
    CHECK_EQ_INT(object_repair_chunk(r.ol, &ref, bad), 0);
    CHECK_EQ_INT(object_verify_chunk(r.ol, &ref, &bad), 0);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(object_delete_chunk(r.ol, &ref), 0);

    r.stores[1]->ops = &broken_ops;
    CHECK_EQ_INT(object_layer_set_write_min(r.ol, 3), 0);
    CHECK_EQ_INT(object_put_chunk_degraded(r.ol, dek, 5, 0, 2, in, 7000, &ref, &missing),
                 -EIO);
    CHECK(strstr(pfs_err_msg(), "min_write_fragments") != NULL);
    r.stores[1]->ops = good_ops;
    for (unsigned i = 0; i < 3; i++)
        CHECK_EQ_INT(store_list(r.stores[i], count_objects, &objects), 0);
    CHECK_EQ_INT(objects, 0);
    free(in);
    free(out);
    rig_down(&r);
}

static int count_packs(void *arg, const char *name, uint64_t size)
{
    (void)size;
    if (strlen(name) > 2 && strcmp(name + strlen(name) - 2, ".p") == 0)
        ++*(int *)arg;
    return 0;
}

static int packs_on(struct rig *r)
{
    int n = 0;

    for (unsigned i = 0; i < r->n; i++)
        if (store_list(r->stores[i], count_packs, &n) != 0)
            return -1;
    return n;
}

/* Small chunks go into one pack per sync (one part per endpoint), written
 * at the sync, not at the put; a large one stays standalone; all read back
 * and the parts hold no plaintext. */
static void test_packs_roundtrip(void)
{
    static const char marker[] = "CONFIDENTIAL-CONTRACT-MARKER-4711";
    static const size_t sizes[] = { 1, 100, 4095, 30000, 65000, 200000 };
    struct chunk_ref ref[6];
    struct rig r;
    int objects = 0;

    REQUIRE(rig_up(&r, 3, 2, 1) == 0);
    CHECK_EQ_INT(object_layer_set_pack_max(r.ol, PACK_MAX_LIMIT + 1), -EINVAL);
    REQUIRE(object_layer_set_pack_max(r.ol, 65536) == 0);
    for (unsigned t = 0; t < 6; t++) {
        uint8_t *in = pattern(sizes[t], t);
        memcpy(in, marker, sizes[t] < sizeof marker ? sizes[t] : sizeof marker);
        REQUIRE(object_put_chunk(r.ol, dek, 9, t, 1, in, sizes[t], &ref[t]) == 0);
        free(in);
    }
    for (unsigned t = 0; t < 5; t++)   /* sealed up to 65536 bytes: packed */
        CHECK(ref[t].packed && memcmp(ref[t].pack, ref[0].pack, PACK_ID_LEN) == 0);
    CHECK(!ref[5].packed);
    CHECK_EQ_INT(packs_on(&r), 0);          /* nothing written before the sync */
    for (unsigned i = 0; i < 3; i++)
        CHECK_EQ_INT(store_list(r.stores[i], count_objects, &objects), 0);
    CHECK_EQ_INT(objects, 3);               /* the large chunk's fragments */
    CHECK_EQ_INT(object_layer_sync(r.ol), 0);
    CHECK_EQ_INT(packs_on(&r), 3);          /* one part on each endpoint */
    CHECK_EQ_INT(object_layer_packs_waiting(r.ol), 0);
    for (unsigned t = 0; t < 6; t++) {
        uint8_t *in = pattern(sizes[t], t), *out = malloc(sizes[t]);
        uint32_t bad = 99;
        memcpy(in, marker, sizes[t] < sizeof marker ? sizes[t] : sizeof marker);
        CHECK_EQ_INT(object_get_chunk(r.ol, dek, 9, t, &ref[t], out, &bad), 0);
        CHECK_MEM(in, out, sizes[t]);
        CHECK_EQ_INT(bad, 0);
        free(in);
        free(out);
    }
    char name[OBJECT_NAME_MAX];
    object_pack_name(ref[0].pack, name);
    for (unsigned i = 0; i < 3; i++) {
        void *data;
        size_t len;
        REQUIRE(store_get(r.stores[i], name, &data, &len) == 0);
        CHECK(memmem(data, len, marker, sizeof marker - 1) == NULL);
        free(data);
    }
    CHECK(object_pack_time(ref[0].pack) + 5 >= (uint32_t)time(NULL));
    rig_down(&r);
}

/* A packed fragment damaged in its pack: the read rebuilds from the others
 * and names it; verify finds it; repair writes it standalone, which reads
 * take from then on; deleting the chunk removes the standalone copy. */
static void test_packed_fragment_repaired_standalone(void)
{
    struct rig r;
    uint8_t *in = pattern(5000, 3), *out = malloc(5000);
    struct chunk_ref ref;
    uint32_t bad = 0;
    char name[OBJECT_NAME_MAX];
    void *data;
    size_t len;
    int objects = 0;

    REQUIRE(out && rig_up(&r, 3, 2, 1) == 0);
    REQUIRE(object_layer_set_pack_max(r.ol, 65536) == 0);
    REQUIRE(object_put_chunk(r.ol, dek, 7, 0, 1, in, 5000, &ref) == 0);
    REQUIRE(object_layer_sync(r.ol) == 0);
    REQUIRE(ref.packed);
    object_pack_name(ref.pack, name);
    struct store *s0 = r.stores[object_fragment_store(r.ol, &ref, 0)];
    REQUIRE(store_get(s0, name, &data, &len) == 0);
    ((uint8_t *)data)[ref.pack_offs[0] + 10] ^= 0x40;
    REQUIRE(store_put(s0, name, data, len) == 0);
    free(data);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 7, 0, &ref, out, &bad), 0);
    CHECK_MEM(in, out, 5000);
    CHECK_EQ_INT(bad, 1u << 0);
    CHECK_EQ_INT(object_verify_chunk(r.ol, &ref, &bad), 0);
    CHECK_EQ_INT(bad, 1u << 0);
    CHECK_EQ_INT(object_repair_chunk(r.ol, &ref, bad), 0);
    CHECK_EQ_INT(object_layer_sync(r.ol), 0);
    CHECK_EQ_INT(object_verify_chunk(r.ol, &ref, &bad), 0);
    CHECK_EQ_INT(bad, 0);                   /* the standalone copy is read */
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 7, 0, &ref, out, &bad), 0);
    CHECK_MEM(in, out, 5000);
    CHECK_EQ_INT(bad, 0);
    /* with the whole pack gone on one endpoint: rebuilt, fragment named */
    REQUIRE(store_del(r.stores[object_fragment_store(r.ol, &ref, 1)], name) == 0);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 7, 0, &ref, out, &bad), 0);
    CHECK_EQ_INT(bad, 1u << 1);
    CHECK_EQ_INT(object_delete_chunk(r.ol, &ref), 0);   /* standalone copies only */
    CHECK_EQ_INT(packs_on(&r), 2);
    CHECK_EQ_INT(object_delete_pack(r.ol, ref.pack), 0);
    for (unsigned i = 0; i < 3; i++)
        CHECK_EQ_INT(store_list(r.stores[i], count_objects, &objects), 0);
    CHECK_EQ_INT(objects, 0);
    free(in);
    free(out);
    rig_down(&r);
}

/* A pack part that cannot be written fails the sync (write_min = k + m),
 * stays waiting, sends later small chunks standalone, and is written by the
 * next sync once the endpoint takes it; with degraded writes (write_min =
 * k) the sync succeeds without that part and the chunk still reads. */
struct lost_seen {
    unsigned calls;
    uint64_t ino, idx;
    uint32_t missing;
};

static void note_lost(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *ref,
                      uint32_t missing)
{
    struct lost_seen *l = arg;

    (void)ref;
    l->calls++;
    l->ino = ino;
    l->idx = idx;
    l->missing = missing;
}

static void test_pack_write_failure_retried(void)
{
    struct lost_seen lost = { 0 };
    static struct store_ops broken_ops;
    const struct store_ops *good_ops;
    struct rig r;
    uint8_t *in = pattern(3000, 5), *out = malloc(3000);
    struct chunk_ref ref, later;
    uint32_t bad = 0;

    REQUIRE(out && rig_up(&r, 3, 2, 1) == 0);
    REQUIRE(object_layer_set_pack_max(r.ol, 65536) == 0);
    REQUIRE(object_layer_set_write_min(r.ol, 3) == 0);
    good_ops = r.stores[2]->ops;
    broken_ops = *good_ops;
    broken_ops.put = broken_ops.put_new = failing_put;
    REQUIRE(object_put_chunk(r.ol, dek, 3, 0, 1, in, 3000, &ref) == 0);
    REQUIRE(ref.packed);
    r.stores[2]->ops = &broken_ops;
    CHECK_EQ_INT(object_layer_sync(r.ol), -ENOSPC);
    CHECK(strstr(pfs_err_msg(), "disk full") != NULL);
    CHECK_EQ_INT(object_layer_packs_waiting(r.ol), 1);
    r.stores[2]->ops = good_ops;
    REQUIRE(object_put_chunk(r.ol, dek, 3, 1, 1, in, 3000, &later) == 0);
    CHECK(!later.packed);                   /* while a pack waits, small chunks go alone */
    CHECK_EQ_INT(object_layer_sync(r.ol), 0);
    CHECK_EQ_INT(object_layer_packs_waiting(r.ol), 0);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 3, 0, &ref, out, &bad), 0);
    CHECK_MEM(in, out, 3000);
    CHECK_EQ_INT(bad, 0);

    CHECK_EQ_INT(object_layer_set_write_min(r.ol, 2), 0);
    object_layer_set_lost_cb(r.ol, note_lost, &lost);
    REQUIRE(object_put_chunk(r.ol, dek, 3, 2, 1, in, 3000, &ref) == 0);
    REQUIRE(ref.packed);
    r.stores[2]->ops = &broken_ops;
    CHECK_EQ_INT(object_layer_sync(r.ol), 0);
    CHECK_EQ_INT(object_layer_packs_waiting(r.ol), 0);
    /* the owner hears which fragment is missing, to queue its repair */
    CHECK_EQ_INT(lost.calls, 1);
    CHECK(lost.ino == 3 && lost.idx == 2);
    CHECK_EQ_INT(lost.missing, 1u << 0);       /* rotation 2: fragment 0 on store 2 */
    r.stores[2]->ops = good_ops;
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 3, 2, &ref, out, &bad), 0);
    CHECK_MEM(in, out, 3000);
    CHECK(bad != 0);                        /* the lost part's fragment, rebuilt */
    free(in);
    free(out);
    rig_down(&r);
}

static void test_empty_chunk_refused(void)
{
    struct rig r;
    struct chunk_ref ref;

    REQUIRE(rig_up(&r, 3, 2, 1) == 0);
    CHECK_EQ_INT(object_put_chunk(r.ol, dek, 1, 0, 1, "", 0, &ref), -EINVAL);
    rig_down(&r);
}

/* Chunks put one after another share the first byte of their ids (so a
 * batch's fragments share one fan-out directory per endpoint and one fsync
 * of it), for a run of ids, and are otherwise distinct. */
static void test_consecutive_chunk_ids_share_a_fanout_dir(void)
{
    struct rig r;
    uint8_t *in = pattern(2000, 5), *out = malloc(2000);
    struct chunk_ref refs[40];
    unsigned same = 0, leads[256] = {0}, nleads = 0;

    REQUIRE(out && rig_up(&r, 3, 2, 1) == 0);
    for (unsigned i = 0; i < 40; i++)
        REQUIRE(object_put_chunk(r.ol, dek, 9, i, 1, in, 2000, &refs[i]) == 0);
    for (unsigned i = 1; i < 40; i++) {
        same += refs[i].chunk_id[0] == refs[i - 1].chunk_id[0];
        CHECK(memcmp(refs[i].chunk_id, refs[i - 1].chunk_id, CHUNK_ID_LEN) != 0);
    }
    for (unsigned i = 0; i < 40; i++)
        nleads += leads[refs[i].chunk_id[0]]++ == 0;
    /* one run of 128 ids, or two when these 40 straddle a new draw */
    CHECK(same >= 38);
    CHECK(nleads <= 2);
    for (unsigned i = 0; i < 40; i++) {
        CHECK_EQ_INT(object_get_chunk(r.ol, dek, 9, i, &refs[i], out, NULL), 0);
        CHECK_MEM(out, in, 2000);
    }
    /* the lead byte is redrawn: 300 more ids cross at least two draws, and
     * both drawing the byte already in use has odds of 1 in 65,536 */
    unsigned changes = 0;
    uint8_t prev = refs[39].chunk_id[0];
    for (unsigned i = 0; i < 300; i++) {
        struct chunk_ref ref;
        REQUIRE(object_put_chunk(r.ol, dek, 10, i, 1, in, 100, &ref) == 0);
        changes += ref.chunk_id[0] != prev;
        prev = ref.chunk_id[0];
    }
    CHECK(changes >= 1 && changes <= 3);
    free(in);
    free(out);
    rig_down(&r);
}

static void test_fragment_placement(void)
{
    struct rig r;
    struct chunk_ref ref;
    uint8_t *in = pattern(5000, 1);
    char name[OBJECT_NAME_MAX];
    uint64_t size;

    REQUIRE(rig_up(&r, 5, 2, 1) == 0);
    CHECK_EQ_INT(object_put_chunk(r.ol, dek, 7, 13, 1, in, 5000, &ref), 0);
    CHECK_EQ_INT(ref.rotation, 13 % 5);
    for (unsigned i = 0; i < 3; i++) {
        unsigned want = (13 % 5 + i) % 5;
        CHECK_EQ_INT(object_fragment_store(r.ol, &ref, i), want);
        object_fragment_name(ref.chunk_id, i, name);
        for (unsigned s = 0; s < 5; s++)
            CHECK_EQ_INT(store_stat(r.stores[s], name, &size) == 0, s == want);
    }
    free(in);
    rig_down(&r);
}

/* Every pattern of up to m missing and/or corrupt fragments still reads back
 * the exact bytes and names the bad ones. */
static void test_survives_m_bad_fragments(void)
{
    struct rig r;
    size_t len = 300000;
    uint8_t *in = pattern(len, 3), *out = malloc(len);
    unsigned nf = 5;

    REQUIRE(rig_up(&r, 5, 3, 2) == 0);
    for (uint32_t mask = 0; mask < (1u << nf); mask++) {
        if (__builtin_popcount(mask) > 2)
            continue;
        for (int corrupt = 0; corrupt < 2; corrupt++) {
            struct chunk_ref ref;
            uint32_t bad = 0;
            REQUIRE(object_put_chunk(r.ol, dek, 9, mask, 4, in, len, &ref) == 0);
            for (unsigned i = 0; i < nf; i++) {
                if (mask & (1u << i)) {
                    if (corrupt && i % 2 == 0)
                        corrupt_fragment(&r, &ref, i);
                    else
                        drop_fragment(&r, &ref, i);
                }
            }
            memset(out, 0, len);
            CHECK_EQ_INT(object_get_chunk(r.ol, dek, 9, mask, &ref, out, &bad), 0);
            CHECK_MEM(in, out, len);
            /* all bad ones are named; when only parity is bad the fast path
             * never looks at it */
            if (mask & 7u)
                CHECK_EQ_INT(bad, mask);
            else
                CHECK_EQ_INT(bad & 7u, 0);
            object_delete_chunk(r.ol, &ref);
        }
    }
    free(in);
    free(out);
    rig_down(&r);
}

static void test_beyond_m_is_eio(void)
{
    struct rig r;
    size_t len = 10000;
    uint8_t *in = pattern(len, 4), *out = malloc(len);
    struct chunk_ref ref;
    char id[2 * CHUNK_ID_LEN + 1];
    uint32_t bad = 0;

    REQUIRE(rig_up(&r, 3, 2, 1) == 0);
    REQUIRE(object_put_chunk(r.ol, dek, 5, 0, 1, in, len, &ref) == 0);
    drop_fragment(&r, &ref, 0);
    corrupt_fragment(&r, &ref, 2);
    memset(out, 0, len);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 5, 0, &ref, out, &bad), -EIO);
    CHECK_EQ_INT(bad, 5);
    hex_encode(ref.chunk_id, CHUNK_ID_LEN, id);
    CHECK(strstr(pfs_err_msg(), id) != NULL);
    CHECK(strstr(pfs_err_msg(), "1 of 3") != NULL);
    CHECK(memcmp(in, out, len) != 0);
    uint32_t vbad = 0;
    CHECK_EQ_INT(object_verify_chunk(r.ol, &ref, &vbad), -EIO);
    CHECK_EQ_INT(vbad, 5);
    CHECK(object_repair_chunk(r.ol, &ref, vbad) != 0);
    free(in);
    free(out);
    rig_down(&r);
}

static void test_wrong_binding_is_eio(void)
{
    struct rig r;
    size_t len = 4096;
    uint8_t *in = pattern(len, 5), *out = malloc(len), other[32];
    struct chunk_ref ref;

    REQUIRE(rig_up(&r, 3, 2, 1) == 0);
    REQUIRE(object_put_chunk(r.ol, dek, 77, 3, 2, in, len, &ref) == 0);
    memcpy(other, dek, 32);
    other[0] ^= 1;
    CHECK_EQ_INT(object_get_chunk(r.ol, other, 77, 3, &ref, out, NULL), -EIO);
    CHECK(memcmp(in, out, len) != 0);
    CHECK(strstr(pfs_err_msg(), "authentication") != NULL);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 78, 3, &ref, out, NULL), -EIO);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 77, 4, &ref, out, NULL), -EIO);
    CHECK(memcmp(in, out, len) != 0);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 77, 3, &ref, out, NULL), 0);
    CHECK_MEM(in, out, len);
    free(in);
    free(out);
    rig_down(&r);
}

static void test_old_version_refused(void)
{
    struct rig r;
    size_t len = 2000;
    uint8_t *v1 = pattern(len, 6), *v2 = pattern(len, 7), *out = malloc(len);
    struct chunk_ref ref1, ref2, forged;

    REQUIRE(rig_up(&r, 3, 2, 1) == 0);
    REQUIRE(object_put_chunk(r.ol, dek, 10, 0, 1, v1, len, &ref1) == 0);
    REQUIRE(object_put_chunk(r.ol, dek, 10, 0, 2, v2, len, &ref2) == 0);
    CHECK(memcmp(ref1.chunk_id, ref2.chunk_id, CHUNK_ID_LEN) != 0);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 10, 0, &ref2, out, NULL), 0);
    CHECK_MEM(v2, out, len);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 10, 0, &ref1, out, NULL), 0);
    CHECK_MEM(v1, out, len);
    /* a rollback: metadata says version 2 but points at version 1's fragments */
    forged = ref1;
    forged.version = 2;
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 10, 0, &forged, out, NULL), -EIO);
    CHECK(memcmp(v1, out, len) != 0);
    free(v1);
    free(v2);
    free(out);
    rig_down(&r);
}

static void test_verify_and_repair(void)
{
    struct rig r;
    size_t len = 123457;
    uint8_t *in = pattern(len, 8), *out = malloc(len);
    void *orig[5] = {0}, *now;
    size_t olen[5], nlen;
    struct chunk_ref ref;
    uint32_t bad = 0;

    REQUIRE(rig_up(&r, 5, 3, 2) == 0);
    REQUIRE(object_put_chunk(r.ol, dek, 11, 1, 1, in, len, &ref) == 0);
    for (unsigned i = 0; i < 5; i++)
        CHECK_EQ_INT(read_fragment(&r, &ref, i, &orig[i], &olen[i]), 0);
    CHECK_EQ_INT(object_verify_chunk(r.ol, &ref, &bad), 0);
    CHECK_EQ_INT(bad, 0);
    corrupt_fragment(&r, &ref, 0);
    drop_fragment(&r, &ref, 4);
    CHECK_EQ_INT(object_verify_chunk(r.ol, &ref, &bad), 0);
    CHECK_EQ_INT(bad, (1u << 0) | (1u << 4));
    CHECK_EQ_INT(object_repair_chunk(r.ol, &ref, bad), 0);
    CHECK_EQ_INT(object_verify_chunk(r.ol, &ref, &bad), 0);
    CHECK_EQ_INT(bad, 0);
    for (unsigned i = 0; i < 5; i++) {
        REQUIRE(read_fragment(&r, &ref, i, &now, &nlen) == 0);
        CHECK(nlen == olen[i] && memcmp(now, orig[i], nlen) == 0);
        free(now);
    }
    /* repair also heals damage it was not told about */
    corrupt_fragment(&r, &ref, 1);
    CHECK_EQ_INT(object_repair_chunk(r.ol, &ref, 1u << 3), 0);
    CHECK_EQ_INT(object_verify_chunk(r.ol, &ref, &bad), 0);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 11, 1, &ref, out, &bad), 0);
    CHECK_MEM(in, out, len);
    for (unsigned i = 0; i < 5; i++)
        free(orig[i]);
    free(in);
    free(out);
    rig_down(&r);
}

struct scan {
    const char *marker;
    struct store *s;
    int hits;
    int files;
    int bad_names;
    char ids[64][2 * CHUNK_ID_LEN + 1];
    int nids;
    int dup_chunk;
};

static int scan_cb(void *arg, const char *name, uint64_t size)
{
    struct scan *sc = arg;
    void *data;
    size_t len;
    size_t dot = strcspn(name, ".");

    (void)size;
    sc->files++;
    if (dot != 2 * CHUNK_ID_LEN || strspn(name, "0123456789abcdef") != dot ||
        strspn(name + dot + 1, "0123456789") != strlen(name + dot + 1))
        sc->bad_names++;
    for (int i = 0; i < sc->nids; i++)
        if (strncmp(sc->ids[i], name, dot) == 0)
            sc->dup_chunk++;
    if (sc->nids < 64)
        snprintf(sc->ids[sc->nids++], sizeof sc->ids[0], "%.*s", (int)dot, name);
    if (store_get(sc->s, name, &data, &len) == 0) {
        if (memmem(data, len, sc->marker, strlen(sc->marker)))
            sc->hits++;
        free(data);
    }
    return 0;
}

static void test_no_plaintext_and_dispersal(void)
{
    static const char marker[] = "CONFIDENTIAL-CONTRACT-MARKER-4711";
    struct rig r;
    size_t len = 200000;
    uint8_t *in = malloc(len);
    struct chunk_ref ref;
    int total = 0;

    REQUIRE(rig_up(&r, 3, 2, 1) == 0);
    for (size_t off = 0; off < len; off += sizeof marker - 1)
        memcpy(in + off, marker, len - off < sizeof marker - 1 ? len - off : sizeof marker - 1);
    for (uint64_t idx = 0; idx < 6; idx++)
        REQUIRE(object_put_chunk(r.ol, dek, 0x1234, idx, 1, in, len, &ref) == 0);
    for (unsigned s = 0; s < 3; s++) {
        struct scan *sc = calloc(1, sizeof *sc);
        sc->marker = marker;
        sc->s = r.stores[s];
        CHECK_EQ_INT(store_list(r.stores[s], scan_cb, sc), 0);
        CHECK_EQ_INT(sc->hits, 0);         /* no plaintext on any endpoint */
        CHECK_EQ_INT(sc->dup_chunk, 0);    /* at most one fragment of a chunk here */
        CHECK_EQ_INT(sc->bad_names, 0);    /* names: random hex id and index only */
        CHECK_EQ_INT(sc->files, 6);
        total += sc->files;
        free(sc);
    }
    CHECK_EQ_INT(total, 18);
    free(in);
    rig_down(&r);
}

static void test_bad_refs_from_metadata(void)
{
    struct rig r;
    uint8_t *in = pattern(500, 9), out[600];
    struct chunk_ref ref, t;
    uint32_t bad;

    REQUIRE(rig_up(&r, 3, 2, 1) == 0);
    REQUIRE(object_put_chunk(r.ol, dek, 1, 1, 1, in, 500, &ref) == 0);
    t = ref; t.k = 0;
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 1, 1, &t, out, NULL), -EIO);
    t = ref; t.k = 3; t.m = 1;
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 1, 1, &t, out, NULL), -EIO);
    t = ref; t.rotation = 3;
    CHECK_EQ_INT(object_verify_chunk(r.ol, &t, &bad), -EIO);
    t = ref; t.sealed_len = 100000;
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 1, 1, &t, out, NULL), -EIO);
    t = ref; t.plain_len = 0; t.sealed_len = 30;
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 1, 1, &t, out, NULL), -EIO);
    /* A wrong recorded sum: the keyless verify calls that fragment "bad";
     * a read, whose GCM tag authenticates the data fragments it took
     * unhashed, returns the authentic bytes and names none. */
    t = ref; t.sums[1][0] ^= 1;
    CHECK_EQ_INT(object_verify_chunk(r.ol, &t, &bad), 0);
    CHECK_EQ_INT(bad, 2);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 1, 1, &t, out, &bad), 0);
    CHECK_EQ_INT(bad, 0);
    CHECK_MEM(in, out, 500);
    free(in);
    rig_down(&r);
}

static void test_delete_chunk(void)
{
    struct rig r;
    uint8_t *in = pattern(800, 10), out[800];
    struct chunk_ref ref;
    char name[OBJECT_NAME_MAX];
    uint64_t size;

    REQUIRE(rig_up(&r, 3, 2, 1) == 0);
    REQUIRE(object_put_chunk(r.ol, dek, 1, 2, 1, in, 800, &ref) == 0);
    drop_fragment(&r, &ref, 1);
    CHECK_EQ_INT(object_delete_chunk(r.ol, &ref), 0);
    for (unsigned i = 0; i < 3; i++)
        CHECK_EQ_INT(store_stat(frag_store(&r, &ref, i, name), name, &size), -ENOENT);
    CHECK_EQ_INT(object_delete_chunk(r.ol, &ref), 0);
    CHECK_EQ_INT(object_get_chunk(r.ol, dek, 1, 2, &ref, out, NULL), -EIO);
    free(in);
    rig_down(&r);
}

static void test_layout_checked(void)
{
    struct store *stores[2] = {NULL, NULL};
    struct object_layer *ol = (struct object_layer *)1;

    CHECK_EQ_INT(object_layer_new(stores, 2, 2, 1, &ol), -EINVAL);
    CHECK(ol == NULL);
}

struct worker {
    struct rig *r;
    unsigned id;
    int failures;
};

static void *chunk_worker(void *arg)
{
    struct worker *w = arg;
    size_t len = 70000 + w->id * 999;
    uint8_t *in = pattern(len, w->id), *out = malloc(len);

    for (uint64_t idx = 0; idx < 12; idx++) {
        struct chunk_ref ref;
        in[0] = (uint8_t)idx;
        if (object_put_chunk(w->r->ol, dek, w->id, idx, 1, in, len, &ref) != 0 ||
            object_get_chunk(w->r->ol, dek, w->id, idx, &ref, out, NULL) != 0 ||
            memcmp(in, out, len) != 0)
            w->failures++;
    }
    free(in);
    free(out);
    return NULL;
}

static void test_concurrent_chunks(void)
{
    struct rig r;
    pthread_t th[4];
    struct worker w[4];

    REQUIRE(rig_up(&r, 4, 2, 2) == 0);
    for (unsigned i = 0; i < 4; i++) {
        w[i] = (struct worker){&r, i + 1, 0};
        pthread_create(&th[i], NULL, chunk_worker, &w[i]);
    }
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(w[i].failures, 0);
    }
    CHECK_EQ_INT(object_layer_sync(r.ol), 0);
    rig_down(&r);
}

int main(void)
{
    RUN(test_roundtrip_sizes);
    RUN(test_roundtrip_without_get_into);
    RUN(test_put_failure_cleans_up);
    RUN(test_degraded_put_then_repair);
    RUN(test_empty_chunk_refused);
    RUN(test_packs_roundtrip);
    RUN(test_packed_fragment_repaired_standalone);
    RUN(test_pack_write_failure_retried);
    RUN(test_fragment_placement);
    RUN(test_consecutive_chunk_ids_share_a_fanout_dir);
    RUN(test_survives_m_bad_fragments);
    RUN(test_beyond_m_is_eio);
    RUN(test_wrong_binding_is_eio);
    RUN(test_old_version_refused);
    RUN(test_verify_and_repair);
    RUN(test_no_plaintext_and_dispersal);
    RUN(test_bad_refs_from_metadata);
    RUN(test_delete_chunk);
    RUN(test_layout_checked);
    RUN(test_concurrent_chunks);
    return tap_done();
}
