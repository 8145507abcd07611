/* The deletion queue's garbage collection (src/gc.c), shared by the daemon
 * and pactfs-fsck --gc: queued chunks' fragments leave the endpoints, the
 * live ones stay, and a chunk whose fragments cannot be deleted stays
 * queued until a later run can.  Packs: a pack goes only when no record
 * names it, and only after its grace period. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs_test_vault.h"
#include "gc.h"
#include "meta.h"
#include "object.h"
#include "tap.h"

#define MAXF 64

static char dir[] = "/tmp/test_gc.XXXXXX";
static struct vault *v;
static uint64_t ino;
static uint8_t dek[32];
static int locks, unlocks;

/* every fragment file under dir/stores, as found by nftw */
static char *found[MAXF];
static int nfound;

static int collect(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)f;
    if (flag == FTW_F && strstr(p, "/stores/") && !strstr(p, "pactfs-endpoint") &&
        nfound < MAXF)
        found[nfound++] = strdup(p);
    return 0;
}

static void scan(void)
{
    char stores[256];

    for (int i = 0; i < nfound; i++)
        free(found[i]);
    nfound = 0;
    snprintf(stores, sizeof stores, "%s/stores", dir);
    nftw(stores, collect, 16, FTW_PHYS);
}

static int has(const char *p)
{
    for (int i = 0; i < nfound; i++)
        if (!strcmp(found[i], p))
            return 1;
    return 0;
}

static unsigned queued(void);

static int count_one(void *arg, uint64_t id, const struct chunk_ref *r)
{
    (void)id;
    (void)r;
    (*(unsigned *)arg)++;
    return 0;
}

static unsigned queued(void)
{
    unsigned n = 0;

    return meta_gc_list(v->meta, 0, count_one, &n) == 0 ? n : 1000;
}

static void count_lock(void *arg)
{
    (void)arg;
    locks++;
}

static void count_unlock(void *arg)
{
    (void)arg;
    unlocks++;
}

/* Store a new version of chunk 0 of ino, replacing (and so queueing) the
 * one before. */
static int put_version(uint64_t version, struct chunk_ref *ref)
{
    char data[3000];

    memset(data, (int)version, sizeof data);
    if (object_put_chunk(v->ol, dek, ino, 0, version, data, sizeof data, ref) < 0 ||
        object_layer_sync(v->ol) < 0)
        return -1;
    return meta_chunk_put(v->meta, ino, 0, ref);
}

static void test_setup(void)
{
    REQUIRE(fs_test_vault_make(dir, "gc", &v) == 0);
    struct meta_inode i = { .mode = S_IFREG | 0600, .nlink = 1, .uid = 1000, .gid = 1000 };
    REQUIRE(meta_inode_create(v->meta, &i) == 0);
    ino = i.ino;
    memset(dek, 0x5a, sizeof dek);
    /* standalone fragments first; test_packs turns packing on */
    REQUIRE(object_layer_set_pack_max(v->ol, 0) == 0);
}

static void test_queued_fragments_go_live_ones_stay(void)
{
    struct chunk_ref r1, r2;
    uint64_t deleted = 99;
    const struct gc_lock lk = { count_lock, count_unlock, NULL };

    REQUIRE(put_version(1, &r1) == 0);
    scan();
    int n1 = nfound;
    char *first[MAXF];
    for (int i = 0; i < n1; i++)
        first[i] = strdup(found[i]);
    CHECK_EQ_INT(n1, 3);                      /* k=2 m=1: three fragments */
    REQUIRE(put_version(2, &r2) == 0);        /* version 1 is queued */
    CHECK_EQ_INT(queued(), 1);
    scan();
    CHECK_EQ_INT(nfound, 6);

    CHECK_EQ_INT(gc_run(v->meta, v->ol, &lk, 3600, &deleted), 0);
    CHECK(deleted == 1);
    CHECK_EQ_INT(queued(), 0);
    CHECK(locks > 0 && locks == unlocks);     /* every metadata call under the caller's lock */
    scan();
    CHECK_EQ_INT(nfound, 3);
    for (int i = 0; i < n1; i++) {
        CHECK(!has(first[i]));                /* version 1's fragments are gone */
        free(first[i]);
    }
    char out[3000];
    REQUIRE(r2.plain_len == sizeof out);
    CHECK_EQ_INT(object_get_chunk(v->ol, dek, ino, 0, &r2, out, NULL), 0);
    CHECK(out[0] == 2 && out[sizeof out - 1] == 2);   /* the live version still reads */

    /* an empty queue: nothing to do */
    CHECK_EQ_INT(gc_run(v->meta, v->ol, NULL, 3600, &deleted), 0);
    CHECK(deleted == 0);
}

static void test_undeletable_fragment_stays_queued(void)
{
    struct chunk_ref r3;
    uint64_t deleted = 99;
    char blocker[600];

    scan();
    REQUIRE(nfound == 3);
    /* one of version 2's fragments becomes a non-empty directory, which an
     * unlink cannot remove */
    snprintf(blocker, sizeof blocker, "%s", found[0]);
    REQUIRE(put_version(3, &r3) == 0);
    CHECK_EQ_INT(queued(), 1);
    REQUIRE(unlink(blocker) == 0);
    REQUIRE(mkdir(blocker, 0700) == 0);
    char inside[640];
    snprintf(inside, sizeof inside, "%s/x", blocker);
    int fd = open(inside, O_CREAT | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    close(fd);

    CHECK(gc_run(v->meta, v->ol, NULL, 3600, &deleted) < 0);
    CHECK(deleted == 0);
    CHECK_EQ_INT(queued(), 1);                /* kept for a later run */

    REQUIRE(unlink(inside) == 0);
    REQUIRE(rmdir(blocker) == 0);
    CHECK_EQ_INT(gc_run(v->meta, v->ol, NULL, 3600, &deleted), 0);
    CHECK(deleted == 1);
    CHECK_EQ_INT(queued(), 0);
    scan();
    CHECK_EQ_INT(nfound, 3);                  /* version 3's fragments */
}

static int count_free(void *arg, const uint8_t *pack, size_t len)
{
    (void)pack;
    (void)len;
    (*(unsigned *)arg)++;
    return 0;
}

static unsigned free_packs(void)
{
    unsigned n = 0;

    return meta_free_packs_list(v->meta, INT64_MAX, 0, count_free, &n) == 0 ? n : 1000;
}

/* Two small chunks share one pack; replacing one leaves the pack (the other
 * still names it); replacing both puts it on the free list, and only a run
 * with the grace over deletes it, after which the live chunks still read. */
static void test_packs(void)
{
    struct chunk_ref a1, b1, a2, b2, c;
    uint64_t deleted = 99, ino2;
    char out[3000], data[3000];
    struct meta_inode i = { .mode = S_IFREG | 0600, .nlink = 1, .uid = 1000, .gid = 1000 };

    /* drop what the earlier tests left, so only packs remain */
    REQUIRE(meta_chunk_truncate(v->meta, ino, 0) == 0);
    REQUIRE(gc_run(v->meta, v->ol, NULL, 3600, &deleted) == 0);
    scan();
    REQUIRE(nfound == 0);
    REQUIRE(object_layer_set_pack_max(v->ol, 65536) == 0);
    REQUIRE(meta_inode_create(v->meta, &i) == 0);
    ino2 = i.ino;
    REQUIRE(put_version(4, &a1) == 0);      /* ino chunk 0 */
    memset(data, 7, sizeof data);
    REQUIRE(object_put_chunk(v->ol, dek, ino2, 0, 1, data, sizeof data, &b1) == 0);
    REQUIRE(object_layer_sync(v->ol) == 0);
    REQUIRE(meta_chunk_put(v->meta, ino2, 0, &b1) == 0);
    CHECK(a1.packed && b1.packed && memcmp(a1.pack, b1.pack, PACK_ID_LEN) != 0);
    scan();
    CHECK_EQ_INT(nfound, 6);                /* two packs, a part on each of 3 endpoints */
    /* a put and its neighbour, synced together, share one pack */
    REQUIRE(object_put_chunk(v->ol, dek, ino, 0, 5, data, sizeof data, &a2) == 0);
    REQUIRE(object_put_chunk(v->ol, dek, ino2, 0, 2, data, sizeof data, &b2) == 0);
    REQUIRE(object_layer_sync(v->ol) == 0);
    CHECK(a2.packed && b2.packed && memcmp(a2.pack, b2.pack, PACK_ID_LEN) == 0);
    CHECK(a2.pack_offs[0] != b2.pack_offs[0] || a2.rotation != b2.rotation);
    REQUIRE(meta_chunk_put(v->meta, ino, 0, &a2) == 0);     /* a1 queued */
    scan();
    CHECK_EQ_INT(nfound, 9);
    CHECK_EQ_INT(gc_run(v->meta, v->ol, NULL, 0, &deleted), 0);
    CHECK(deleted == 1);
    scan();
    CHECK_EQ_INT(nfound, 6);                /* a1's pack went: nothing else named it */
    CHECK_EQ_INT(free_packs(), 0);
    /* b1 replaced by b2 (in a2's pack): with a grace of an hour the old pack stays */
    REQUIRE(meta_chunk_put(v->meta, ino2, 0, &b2) == 0);
    CHECK_EQ_INT(gc_run(v->meta, v->ol, NULL, 3600, &deleted), 0);
    CHECK_EQ_INT(free_packs(), 1);
    scan();
    CHECK_EQ_INT(nfound, 6);
    CHECK_EQ_INT(gc_sweep_packs(v->meta, v->ol, NULL, 0, &deleted), 0);
    CHECK(deleted == 1);
    CHECK_EQ_INT(free_packs(), 0);
    scan();
    CHECK_EQ_INT(nfound, 3);                /* the shared pack of a2 and b2 */
    CHECK_EQ_INT(object_get_chunk(v->ol, dek, ino, 0, &a2, out, NULL), 0);
    CHECK(out[0] == 7);
    CHECK_EQ_INT(object_get_chunk(v->ol, dek, ino2, 0, &b2, out, NULL), 0);
    CHECK(out[0] == 7 && out[sizeof out - 1] == 7);
    /* one of two chunks in the shared pack replaced: the pack stays for b2 */
    REQUIRE(object_put_chunk(v->ol, dek, ino, 0, 6, data, sizeof data, &c) == 0);
    REQUIRE(object_layer_sync(v->ol) == 0);
    REQUIRE(meta_chunk_put(v->meta, ino, 0, &c) == 0);
    CHECK_EQ_INT(gc_run(v->meta, v->ol, NULL, 0, &deleted), 0);
    CHECK_EQ_INT(free_packs(), 0);
    CHECK_EQ_INT(object_get_chunk(v->ol, dek, ino2, 0, &b2, out, NULL), 0);
}

static void test_teardown(void)
{
    for (int i = 0; i < nfound; i++)
        free(found[i]);
    fs_test_vault_remove(dir, v);
}

int main(void)
{
    RUN(test_setup);
    RUN(test_queued_fragments_go_live_ones_stay);
    RUN(test_undeletable_fragment_stays_queued);
    RUN(test_packs);
    RUN(test_teardown);
    return tap_done();
}
