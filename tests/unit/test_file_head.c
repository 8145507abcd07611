/* The signed file head (file_head.c): a valid head verifies, every altered
 * byte or field is refused, a replayed older head is caught by the anchor
 * comparison and by the entry-wise order, and advancing keeps every floor
 * (a file put back older, a deleted file, a file head rolled back).
 * Format 2: a bucket altered, or taken from another head, is refused; a
 * format-1 head is converted at the first advance; an advance writes the
 * buckets of the files it names and the root, whatever the vault holds.
 * With PACTFS_FH_BENCH=1 it also prints the CPU time of one advance at
 * 1,000, 10,000 and 100,000 files. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "crypto.h"
#include "error.h"
#include "file_head.h"
#include "filecommit.h"
#include "meta.h"
#include "meta_test_accounts.h"
#include "registry.h"
#include "tap.h"
#include "vault_head.h"

#define VID "0123456789abcdef0123456789abcdef"

static EVP_PKEY *root, *admin, *user, *stranger;
static char root_fp[REGISTRY_FP_HEX + 1];
static char dbdir[64], dbpath[128];
static struct meta *m;
static uint64_t admin_id, user_id;
static uint64_t ino_a, ino_b, ino_c;
static const uint8_t fckey[FC_KEY_LEN] = { 7 };

static int add_account(const char *name, uint32_t roles, EVP_PKEY *key, EVP_PKEY *signer,
                       uint64_t signer_id, uint64_t *id)
{
    return test_account_add(m, VID, name, roles, key, signer, signer_id, id);
}

/* A regular file whose commitment has generation gen. */
static int set_gen(uint64_t ino, uint64_t gen)
{
    struct meta_inode i;
    struct fc_list l;
    int rc = meta_inode_get(m, ino, &i);

    fc_list_init(&l);
    if (rc == 0)
        rc = fc_seal(fckey, ino, i.size, gen, &l, i.commitment);
    i.commitment_len = FC_RECORD_LEN;
    return rc ? rc : meta_inode_update(m, &i);
}

static uint64_t new_file(uint64_t gen)
{
    struct meta_inode i = { .mode = S_IFREG | 0600, .nlink = 1, .folder_id = 1 };

    if (meta_inode_create(m, &i) < 0 || set_gen(i.ino, gen) < 0)
        return 0;
    return i.ino;
}

static void test_setup(void)
{
    root = rsa_generate(3072);
    admin = rsa_generate(3072);
    user = rsa_generate(3072);
    stranger = rsa_generate(3072);
    REQUIRE(root && admin && user && stranger);
    REQUIRE(registry_fingerprint_hex(root, root_fp) == 0);
    REQUIRE(test_meta_open("test_file_head", root, dbdir, dbpath, &m) == 0);
    REQUIRE(add_account("admin", ROLE_SYSADMIN, admin, root, REGISTRY_ROOT_SIGNER,
                        &admin_id) == 0);
    REQUIRE(add_account("user", ROLE_USER, user, admin, admin_id, &user_id) == 0);
    struct meta_inode dir = { .ino = META_ROOT_INO, .mode = S_IFDIR | 0755, .nlink = 2 };
    REQUIRE(meta_inode_create(m, &dir) == 0);
    REQUIRE((ino_a = new_file(3)) && (ino_b = new_file(1)) && (ino_c = new_file(5)));
}

static int store(const uint8_t *blob, size_t len)
{
    return meta_param_set(m, FILE_HEAD_PARAM, blob, len);
}

static int stored(uint8_t **blob, size_t *len)
{
    return meta_param_get(m, FILE_HEAD_PARAM, blob, len);
}

/* A deep copy of h into out. */
static void head_copy(const struct file_head *h, struct file_head *out)
{
    *out = *h;
    out->e = calloc(h->n + 1, sizeof *out->e);
    out->b = calloc(h->nb + 1, sizeof *out->b);
    REQUIRE(out->e && out->b);
    if (h->n)
        memcpy(out->e, h->e, h->n * sizeof *h->e);
    if (h->nb)
        memcpy(out->b, h->b, h->nb * sizeof *h->b);
}

/* Advance as the user's mount does, after committing dirty (n of them):
 * out = known with the change applied. */
static int advance_dirty(const struct file_head *known, const uint64_t *dirty, size_t n,
                         struct file_head *out, int *rolled, size_t *behind, uint64_t *first,
                         struct fh_stats *st)
{
    struct file_head none = { 0 };
    struct fh_delta d;
    uint8_t *raw = NULL;
    size_t len = 0;
    int rc = file_head_advance(m, VID, root_fp, user, user_id, known, dirty, n, &d, &raw,
                               &len, rolled, behind, first, st);

    head_copy(known ? known : &none, out);
    if (rc == 0)
        rc = file_head_apply(out, &d);
    file_head_delta_clear(&d);
    free(raw);
    return rc;
}

/* ... having committed the three test files. */
static int advance(const struct file_head *known, struct file_head *out, int *rolled,
                   size_t *behind, uint64_t *first)
{
    uint64_t dirty[3] = { ino_a, ino_b, ino_c };

    return advance_dirty(known, dirty, 3, out, rolled, behind, first, NULL);
}

/* The first head lists every file at its generation, verifies, and every
 * altered byte of it is refused. */
static void test_first_head_and_every_byte(void)
{
    struct file_head h, got;
    uint8_t *blob = NULL, *raw = NULL;
    size_t len = 0, rawlen = 0, behind = 9;
    uint64_t first = 9;
    unsigned refused = 0;
    int rolled = 9;

    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -ENOENT);
    REQUIRE(advance(NULL, &h, &rolled, &behind, &first) == 0);
    CHECK_EQ_INT(rolled, 0);
    CHECK_EQ_INT(behind, 0);
    CHECK_EQ_INT(h.counter, 1);
    CHECK_EQ_INT(h.n, 3);
    CHECK_EQ_INT(file_head_floor(&h, ino_a), 3);
    CHECK_EQ_INT(file_head_floor(&h, ino_b), 1);
    CHECK_EQ_INT(file_head_floor(&h, ino_c), 5);
    CHECK_EQ_INT(file_head_floor(&h, META_ROOT_INO), 0);   /* no commitment: not listed */
    CHECK_EQ_INT(h.signer_id, user_id);
    REQUIRE(file_head_load(m, VID, root_fp, &got, &raw, &rawlen) == 0);
    CHECK_EQ_INT(got.counter, 1);
    CHECK_EQ_INT(got.n, 3);
    CHECK_EQ_INT(file_head_floor(&got, ino_c), 5);
    file_head_clear(&got);
    REQUIRE(stored(&blob, &len) == 0);
    for (size_t i = 0; i < len; i++) {
        blob[i] ^= 0x01;
        REQUIRE(store(blob, len) == 0);
        refused += file_head_load(m, VID, root_fp, &got, NULL, NULL) == -EBADMSG;
        file_head_clear(&got);
        blob[i] ^= 0x01;
    }
    CHECK_EQ_INT(refused, len);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), 0);
    file_head_clear(&got);
    free(blob);
    free(raw);
    file_head_clear(&h);
}

/* Each field changed and signed again by a key that is not the named
 * signer's, or named wrongly, or malformed: refused (format 1, still read
 * until the first advance converts it). */
static void test_fields(void)
{
    struct file_head h, got;
    struct fh_entry e[2] = { { ino_a, 3 }, { ino_b, 1 } };
    uint8_t *blob = NULL;
    size_t len = 0;

    memset(&h, 0, sizeof h);
    h.counter = 99;
    h.n = 2;
    h.e = e;
    /* a key outside the registry, claiming to be the user */
    REQUIRE(file_head_sign_v1(stranger, VID, user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    /* signed by the user, but naming the admin as signer */
    REQUIRE(file_head_sign_v1(user, VID, admin_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    /* an account the registry does not know */
    REQUIRE(file_head_sign_v1(user, VID, 4242, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    /* another vault's head */
    REQUIRE(file_head_sign_v1(user, "another-vault", user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    /* entries out of order, a duplicate, a zero generation, a zero counter */
    e[0].ino = ino_b, e[1].ino = ino_a;
    REQUIRE(file_head_sign_v1(user, VID, user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    e[0].ino = e[1].ino = ino_a;
    REQUIRE(file_head_sign_v1(user, VID, user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    e[0].ino = ino_a, e[1].ino = ino_b, e[1].generation = 0;
    REQUIRE(file_head_sign_v1(user, VID, user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    e[1].generation = 1;
    h.counter = 0;
    REQUIRE(file_head_sign_v1(user, VID, user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    /* valid again: signed by the user as the user */
    h.counter = 99;
    REQUIRE(file_head_sign_v1(user, VID, user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), 0);
    CHECK_EQ_INT(got.counter, 99);
    file_head_clear(&got);
    free(blob);
}

/* Replays: an older head against the anchor (counter, same counter with
 * other bytes), and entry-wise (a floor lowered, a file dropped). */
static void test_replay_and_order(void)
{
    struct fh_entry e1[2] = { { 10, 2 }, { 11, 4 } }, e2[2] = { { 10, 3 }, { 11, 4 } };
    struct fh_entry e3[1] = { { 10, 3 } }, e4[2] = { { 10, 1 }, { 11, 9 } };
    struct file_head a = { .counter = 5, .n = 2, .e = e1 }, b = { .counter = 6, .n = 2, .e = e2 };
    struct file_head dropped = { .counter = 7, .n = 1, .e = e3 };
    struct file_head lowered = { .counter = 7, .n = 2, .e = e4 };
    uint8_t *ra = NULL, *rb = NULL, ha[SHA256_LEN], hb[SHA256_LEN];
    size_t la = 0, lb = 0;

    REQUIRE(file_head_sign_v1(user, VID, user_id, &a, &ra, &la) == 0);
    REQUIRE(file_head_sign_v1(user, VID, user_id, &b, &rb, &lb) == 0);
    sha256(ra, la, ha);
    sha256(rb, lb, hb);
    CHECK_EQ_INT(file_head_check_anchor(&a, ra, la, 5, ha, "the anchor"), 0);
    CHECK_EQ_INT(file_head_check_anchor(&b, rb, lb, 5, ha, "the anchor"), 0);   /* newer */
    CHECK_EQ_INT(file_head_check_anchor(&a, ra, la, 6, hb, "the anchor"), -ESTALE);
    CHECK(strstr(pfs_err_msg(), "older than the anchor") != NULL);
    b.counter = 5;      /* same counter, other bytes: a fork */
    free(rb);
    REQUIRE(file_head_sign_v1(user, VID, user_id, &b, &rb, &lb) == 0);
    CHECK_EQ_INT(file_head_check_anchor(&b, rb, lb, 5, ha, "the anchor"), -ESTALE);
    b.counter = 6;
    CHECK_EQ_INT(file_head_not_older(&a, &b, "a"), 0);
    CHECK_EQ_INT(file_head_not_older(&b, &a, "b"), -ESTALE);
    CHECK_EQ_INT(file_head_not_older(&b, &dropped, "b"), -ESTALE);
    CHECK(strstr(pfs_err_msg(), "drops inode 11") != NULL);
    CHECK_EQ_INT(file_head_not_older(&b, &lowered, "b"), -ESTALE);
    free(ra);
    free(rb);
}

/* Advancing: floors rise with the files; a file put back older keeps its
 * floor and is reported; a deleted file keeps its floor; a stored head
 * older than the one this caller verified is reported and its floors
 * kept. */
static void test_advance_keeps_floors(void)
{
    struct file_head h1, h2, h3, h4, got;
    uint8_t *old = NULL;
    size_t oldlen = 0, behind = 0;
    uint64_t first = 0;
    int rolled = 0;

    /* start from a clean, user-signed head */
    REQUIRE(meta_param_set(m, FILE_HEAD_PARAM, (const uint8_t *)"", 0) == 0);
    REQUIRE(advance(NULL, &h1, &rolled, &behind, &first) == 0);   /* "" does not verify */
    CHECK_EQ_INT(rolled, 1);
    REQUIRE(stored(&old, &oldlen) == 0);
    REQUIRE(set_gen(ino_a, 4) == 0);
    REQUIRE(advance(&h1, &h2, &rolled, &behind, &first) == 0);
    CHECK_EQ_INT(rolled, 0);
    CHECK_EQ_INT(behind, 0);
    CHECK_EQ_INT(h2.counter, h1.counter + 1);
    CHECK_EQ_INT(file_head_floor(&h2, ino_a), 4);
    /* ino_a put back to generation 3: reported, floor stays 4 */
    REQUIRE(set_gen(ino_a, 3) == 0);
    REQUIRE(meta_inode_delete(m, ino_b) == 0);
    REQUIRE(advance(&h2, &h3, &rolled, &behind, &first) == 0);
    CHECK_EQ_INT(behind, 1);
    CHECK_EQ_INT(first, ino_a);
    CHECK_EQ_INT(file_head_floor(&h3, ino_a), 4);
    CHECK_EQ_INT(file_head_floor(&h3, ino_b), 1);   /* deleted: its floor stays */
    CHECK_EQ_INT(file_head_not_older(&h2, &h3, "h2"), 0);
    /* the operator puts back the first head: the next advance notices and
     * keeps h3's floors */
    REQUIRE(store(old, oldlen) == 0);
    REQUIRE(set_gen(ino_a, 6) == 0);
    REQUIRE(advance(&h3, &h4, &rolled, &behind, &first) == 0);
    CHECK_EQ_INT(rolled, 1);
    CHECK_EQ_INT(h4.counter, h3.counter + 1);
    CHECK_EQ_INT(file_head_floor(&h4, ino_a), 6);
    CHECK_EQ_INT(file_head_floor(&h4, ino_b), 1);
    CHECK_EQ_INT(file_head_not_older(&h3, &h4, "h3"), 0);
    REQUIRE(file_head_load(m, VID, root_fp, &got, NULL, NULL) == 0);
    CHECK_EQ_INT(got.counter, h4.counter);
    file_head_clear(&got);
    free(old);
    file_head_clear(&h1);
    file_head_clear(&h2);
    file_head_clear(&h3);
    file_head_clear(&h4);
}

/* Before the signer's key stops verifying (re-enrolment), the same floors
 * are signed again by the administrator, with a higher counter; a head
 * someone else signed is left alone. */
static void test_resign(void)
{
    struct file_head before, after;

    REQUIRE(file_head_load(m, VID, root_fp, &before, NULL, NULL) == 0);
    REQUIRE(before.signer_id == user_id);
    CHECK_EQ_INT(file_head_resign(m, VID, root_fp, admin_id, admin, admin_id), 0);
    REQUIRE(file_head_load(m, VID, root_fp, &after, NULL, NULL) == 0);
    CHECK_EQ_INT(after.counter, before.counter);           /* not the admin's: untouched */
    file_head_clear(&after);
    CHECK_EQ_INT(file_head_resign(m, VID, root_fp, user_id, admin, admin_id), 0);
    REQUIRE(file_head_load(m, VID, root_fp, &after, NULL, NULL) == 0);
    CHECK_EQ_INT(after.signer_id, admin_id);
    CHECK_EQ_INT(after.counter, before.counter + 1);
    CHECK_EQ_INT(after.n, before.n);
    CHECK_EQ_INT(file_head_not_older(&before, &after, "before"), 0);
    CHECK_EQ_INT(file_head_not_older(&after, &before, "after"), 0);   /* same floors */
    file_head_clear(&before);
    file_head_clear(&after);
}

/* The file head is the one parameter past 1 MiB (16 bytes a file: up to
 * 4 million files); any other stays bounded. */
static void test_large_head(void)
{
    size_t big = 3u << 20, len = 0;
    uint8_t *v = calloc(1, big), *got = NULL, *keep = NULL;
    size_t keeplen = 0;

    REQUIRE(v);
    REQUIRE(stored(&keep, &keeplen) == 0);
    v[big - 1] = 0x5a;
    CHECK_EQ_INT(meta_param_set(m, FILE_HEAD_PARAM, v, big), 0);
    CHECK_EQ_INT(meta_param_get(m, FILE_HEAD_PARAM, &got, &len), 0);
    CHECK(len == big && got && got[big - 1] == 0x5a);
    CHECK_EQ_INT(meta_param_set(m, "some_other", v, big), -EINVAL);
    CHECK_EQ_INT(store(keep, keeplen), 0);
    free(got);
    free(keep);
    free(v);
}

/* A regular file at inode number ino (its bucket: ino >> 10). */
static int new_file_at(uint64_t ino, uint64_t gen)
{
    struct meta_inode i = { .ino = ino, .mode = S_IFREG | 0600, .nlink = 1, .folder_id = 1 };
    int rc = meta_inode_create(m, &i);

    return rc ? rc : set_gen(ino, gen);
}

static int stored_key(const char *key, uint8_t **blob, size_t *len)
{
    return meta_param_get(m, key, blob, len);
}

/* A format-1 head (earlier builds) is read, and the first advance rewrites
 * it as format 2 with every floor kept, a deleted file's too. */
static void test_v1_converted(void)
{
    struct fh_entry e[4] = { { ino_a, 7 }, { ino_c, 5 }, { 900, 2 }, { 5000, 3 } };
    struct file_head v1 = { .counter = 50, .n = 4, .e = e }, loaded, out, got, dec;
    struct sig_container c;
    uint8_t *blob = NULL;
    size_t len = 0, behind = 0;
    uint64_t first = 0;
    int rolled = 9;

    REQUIRE(file_head_sign_v1(user, VID, user_id, &v1, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    free(blob);
    REQUIRE(file_head_load(m, VID, root_fp, &loaded, NULL, NULL) == 0);
    CHECK_EQ_INT(loaded.version, 1);
    CHECK_EQ_INT(loaded.n, 4);
    REQUIRE(advance(&loaded, &out, &rolled, &behind, &first) == 0);
    CHECK_EQ_INT(rolled, 0);
    CHECK_EQ_INT(behind, 1);              /* ino_a holds 6 < 7 */
    CHECK_EQ_INT(first, ino_a);
    CHECK_EQ_INT(out.version, 2);
    CHECK_EQ_INT(out.counter, 51);
    CHECK_EQ_INT(file_head_floor(&out, ino_a), 7);
    CHECK_EQ_INT(file_head_floor(&out, ino_c), 5);
    CHECK_EQ_INT(file_head_floor(&out, 900), 2);
    CHECK_EQ_INT(file_head_floor(&out, 5000), 3);
    CHECK_EQ_INT(file_head_not_older(&loaded, &out, "the format-1 head"), 0);
    REQUIRE(file_head_load(m, VID, root_fp, &got, NULL, NULL) == 0);
    CHECK_EQ_INT(got.version, 2);
    CHECK_EQ_INT(got.counter, 51);
    CHECK_EQ_INT(got.nb, 2);              /* buckets 0 and 4 */
    CHECK_EQ_INT(got.n, out.n);
    CHECK(got.n == out.n && memcmp(got.e, out.e, got.n * sizeof *got.e) == 0);
    REQUIRE(stored(&blob, &len) == 0);
    REQUIRE(file_head_decode(VID, blob, len, &dec, &c) == 0);
    CHECK_EQ_INT(dec.version, 2);
    file_head_clear(&dec);
    free(blob);
    file_head_clear(&loaded);
    file_head_clear(&out);
    file_head_clear(&got);
}

/* The database operator's moves on format 2: a bucket swapped for its
 * older copy, buckets of two heads mixed, an altered bucket, a whole older
 * head put back.  Each is refused (the bucket's hash is in the signed
 * root; an older root is older than what a client verified), and an
 * advance over them keeps the newer floors. */
static void test_buckets_swapped_or_mixed(void)
{
    uint64_t f1 = 7 * 1024 + 1, f2 = 7 * 1024 + 2, dirty[2] = { f1, f2 };
    struct file_head h0, h1, h2, h3, got;
    struct fh_delta d;
    uint8_t *r1 = NULL, *b1 = NULL, *r2 = NULL, *b2 = NULL;
    size_t r1len = 0, b1len = 0, r2len = 0, b2len = 0, behind = 0;
    uint64_t first = 0;
    char key[64];
    int rolled = 0;

    file_head_bucket_key(7, key, sizeof key);
    CHECK(strcmp(key, "file_head/7") == 0);
    REQUIRE(new_file_at(f1, 2) == 0 && new_file_at(f2, 4) == 0);
    REQUIRE(file_head_load(m, VID, root_fp, &h0, NULL, NULL) == 0);
    REQUIRE(advance_dirty(&h0, dirty, 2, &h1, &rolled, &behind, &first, NULL) == 0);
    REQUIRE(stored(&r1, &r1len) == 0 && stored_key(key, &b1, &b1len) == 0);
    REQUIRE(set_gen(f1, 9) == 0);
    REQUIRE(advance_dirty(&h1, dirty, 1, &h2, &rolled, &behind, &first, NULL) == 0);
    CHECK_EQ_INT(file_head_floor(&h2, f1), 9);
    REQUIRE(stored(&r2, &r2len) == 0 && stored_key(key, &b2, &b2len) == 0);
    CHECK(b1len == b2len && memcmp(b1, b2, b1len) != 0);

    /* the newer root with the older bucket: refused, naming the bucket */
    REQUIRE(meta_param_set(m, key, b1, b1len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "bucket 7 (inodes 7168-8191)") != NULL);
    CHECK(strstr(pfs_err_msg(), "does not match the hash the head signed") != NULL);
    /* the older root with the newer bucket (mixed the other way): refused */
    REQUIRE(store(r1, r1len) == 0 && meta_param_set(m, key, b2, b2len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    /* one byte of the bucket changed: refused */
    REQUIRE(store(r2, r2len) == 0);
    b2[b2len - 1] ^= 1;
    REQUIRE(meta_param_set(m, key, b2, b2len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    b2[b2len - 1] ^= 1;
    /* the whole older head (root and bucket): it verifies, but a mount
     * that verified the newer one refuses it, and its anchor does too */
    REQUIRE(store(r1, r1len) == 0 && meta_param_set(m, key, b1, b1len) == 0);
    REQUIRE(file_head_load(m, VID, root_fp, &got, NULL, NULL) == 0);
    CHECK_EQ_INT(file_head_check_anchor(&got, r1, r1len, h2.counter, h2.raw_hash, "anchor"),
                 -ESTALE);
    file_head_clear(&got);
    CHECK_EQ_INT(file_head_refresh(m, VID, root_fp, &h2, &d, NULL), -ESTALE);
    /* an advance over it keeps the newer floor and says so */
    REQUIRE(advance_dirty(&h2, dirty + 1, 1, &h3, &rolled, &behind, &first, NULL) == 0);
    CHECK_EQ_INT(rolled, 1);
    CHECK_EQ_INT(file_head_floor(&h3, f1), 9);
    REQUIRE(file_head_load(m, VID, root_fp, &got, NULL, NULL) == 0);
    CHECK_EQ_INT(file_head_floor(&got, f1), 9);
    CHECK_EQ_INT(got.counter, h2.counter + 1);
    file_head_clear(&got);
    /* a newer root, but one whose bucket is an older copy: a running mount
     * refreshing to it refuses it */
    {
        struct file_head other, h4;
        uint8_t *b4 = NULL;
        size_t b4len = 0;

        head_copy(&h3, &other);
        REQUIRE(set_gen(f2, 6) == 0);
        REQUIRE(advance_dirty(&other, dirty + 1, 1, &h4, &rolled, &behind, &first, NULL) == 0);
        REQUIRE(stored_key(key, &b4, &b4len) == 0);
        REQUIRE(meta_param_set(m, key, b1, b1len) == 0);
        CHECK_EQ_INT(file_head_refresh(m, VID, root_fp, &h3, &d, NULL), -EBADMSG);
        REQUIRE(meta_param_set(m, key, b4, b4len) == 0);
        REQUIRE(file_head_refresh(m, VID, root_fp, &h3, &d, NULL) == 0);
        CHECK_EQ_INT(d.counter, h4.counter);
        CHECK_EQ_INT(d.nc, 1);
        REQUIRE(file_head_apply(&h3, &d) == 0);
        CHECK_EQ_INT(file_head_floor(&h3, f2), 6);
        file_head_delta_clear(&d);
        free(b4);
        file_head_clear(&other);
        file_head_clear(&h4);
    }
    free(r1);
    free(b1);
    free(r2);
    free(b2);
    file_head_clear(&h0);
    file_head_clear(&h1);
    file_head_clear(&h2);
    file_head_clear(&h3);
}

/* nfiles regular files from inode base on, generation 1, in one
 * transaction; their numbers into dirty (may be NULL). */
static void make_files(uint64_t base, size_t nfiles, uint64_t *dirty)
{
    REQUIRE(meta_begin(m) == 0);
    for (size_t i = 0; i < nfiles; i++) {
        REQUIRE(new_file_at(base + i, 1) == 0);
        if (dirty)
            dirty[i] = base + i;
    }
    REQUIRE(meta_commit(m) == 0);
}

/* An advance's cost is the buckets of the files it names, plus the root:
 * one file committed writes one bucket and the root whether the vault
 * holds 3,000 files or 6,000; only the root grows, by 40 bytes a bucket.
 * A refresh of an unchanged head reads the root only; of a head another
 * mount advanced, the root and the changed bucket. */
static void test_advance_cost_is_per_bucket(void)
{
    enum { N = 3000, BASE = 100 * 1024 };
    uint64_t *dirty = calloc(N, sizeof *dirty), one = BASE + 5;
    struct file_head h0, h1, h2, h3, h4, h5;
    struct fh_stats st, st1, st2;
    struct fh_delta d;
    uint8_t *rootb = NULL;
    size_t behind = 0, rootlen = 0, nb;
    uint64_t first = 0;
    int rolled = 0;

    REQUIRE(dirty);
    make_files(BASE, N, dirty);
    REQUIRE(file_head_load(m, VID, root_fp, &h0, NULL, NULL) == 0);
    nb = h0.nb;
    REQUIRE(advance_dirty(&h0, dirty, N, &h1, &rolled, &behind, &first, &st) == 0);
    CHECK_EQ_INT(rolled, 0);
    CHECK_EQ_INT(h1.nb, nb + 3);              /* 3,000 files: 3 buckets */
    CHECK_EQ_INT(st.rows_written, 3 + 1);
    CHECK_EQ_INT(st.rows_read, 1 + N + 1);    /* the root, each file's row, the root again */
    /* one file committed */
    REQUIRE(set_gen(one, 2) == 0);
    REQUIRE(advance_dirty(&h1, &one, 1, &h2, &rolled, &behind, &first, &st1) == 0);
    CHECK_EQ_INT(st1.rows_written, 2);        /* its bucket and the root */
    CHECK_EQ_INT(st1.rows_read, 3);           /* the root, its row, the root again */
    REQUIRE(stored(&rootb, &rootlen) == 0);
    CHECK(st1.bytes_written == rootlen + 5 + 4 + 32 + 8 + 4 + 1024 * 16);
    free(rootb);
    /* twice the files: the same cost but for 3 more entries in the root */
    make_files(BASE + N + 72, N, dirty);      /* from the next bucket on */
    REQUIRE(advance_dirty(&h2, dirty, N, &h3, &rolled, &behind, &first, &st) == 0);
    CHECK_EQ_INT(h3.nb, nb + 6);
    REQUIRE(set_gen(one, 3) == 0);
    REQUIRE(advance_dirty(&h3, &one, 1, &h4, &rolled, &behind, &first, &st2) == 0);
    CHECK_EQ_INT(st2.rows_written, 2);
    CHECK_EQ_INT(st2.rows_read, 3);
    CHECK_EQ_INT(st2.bytes_written - st1.bytes_written, 3 * (8 + 32));
    CHECK(st2.bytes_written < h4.n * 16 / 4); /* well under the whole head */
    /* two files in two buckets: two buckets and the root */
    {
        uint64_t two[2] = { BASE + 1, BASE + N + 72 + 1 };

        REQUIRE(set_gen(two[0], 2) == 0 && set_gen(two[1], 2) == 0);
        REQUIRE(advance_dirty(&h4, two, 2, &h5, &rolled, &behind, &first, &st) == 0);
        CHECK_EQ_INT(st.rows_written, 3);
    }
    /* refresh: unchanged, then after another mount advanced one bucket */
    REQUIRE(file_head_refresh(m, VID, root_fp, &h5, &d, &st) == 0);
    CHECK_EQ_INT(d.counter, 0);
    CHECK_EQ_INT(st.rows_read, 1);
    file_head_delta_clear(&d);
    REQUIRE(set_gen(one, 4) == 0);
    file_head_clear(&h2);
    REQUIRE(advance_dirty(&h5, &one, 1, &h2, &rolled, &behind, &first, NULL) == 0);
    REQUIRE(file_head_refresh(m, VID, root_fp, &h4, &d, &st) == 0);   /* h4: two behind */
    CHECK_EQ_INT(st.rows_read, 1 + 2);        /* the root, the two changed buckets */
    CHECK_EQ_INT(d.nc, 2);
    REQUIRE(file_head_apply(&h4, &d) == 0);
    CHECK(h4.n == h2.n && memcmp(h4.e, h2.e, h4.n * sizeof *h4.e) == 0);
    CHECK(h4.nb == h2.nb && memcmp(h4.b, h2.b, h4.nb * sizeof *h4.b) == 0);
    file_head_delta_clear(&d);
    free(dirty);
    file_head_clear(&h0);
    file_head_clear(&h1);
    file_head_clear(&h2);
    file_head_clear(&h3);
    file_head_clear(&h4);
    file_head_clear(&h5);
}

/* The advance in three steps, as a mount runs it (signing without its
 * metadata lock): published if the stored root did not move; -EAGAIN and
 * nothing written if another writer advanced in between. */
static void test_split_advance_publishes_only_over_the_root_it_read(void)
{
    uint64_t f = 9 * 1024 + 3;
    struct file_head h0, h1, other;
    struct fh_prep *x = NULL;
    struct fh_delta d;
    struct fh_stats st;
    uint8_t *raw = NULL, *before = NULL, *after = NULL;
    size_t rawlen = 0, blen = 0, alen = 0, behind = 0;
    uint64_t first = 0;
    int rolled = 0;

    REQUIRE(new_file_at(f, 2) == 0);
    REQUIRE(file_head_load(m, VID, root_fp, &h0, NULL, NULL) == 0);
    REQUIRE(file_head_prepare(m, VID, root_fp, &h0, &f, 1, &x, NULL) == 0);
    REQUIRE(file_head_seal(x, user, VID, user_id) == 0);
    /* another mount advances meanwhile */
    head_copy(&h0, &other);
    REQUIRE(set_gen(f, 3) == 0);
    REQUIRE(advance_dirty(&other, &f, 1, &h1, &rolled, &behind, &first, NULL) == 0);
    REQUIRE(stored(&before, &blen) == 0);
    CHECK_EQ_INT(file_head_publish(m, x, &st), -EAGAIN);
    REQUIRE(stored(&after, &alen) == 0);
    CHECK(blen == alen && memcmp(before, after, blen) == 0);
    file_head_prep_free(x);
    free(after);
    /* prepared again over the moved root (and one more commit): published */
    REQUIRE(set_gen(f, 4) == 0);
    REQUIRE(file_head_prepare(m, VID, root_fp, &h0, &f, 1, &x, NULL) == 0);
    REQUIRE(file_head_seal(x, user, VID, user_id) == 0);
    CHECK_EQ_INT(file_head_publish(m, x, &st), 0);
    CHECK_EQ_INT(st.rows_written, 2);
    REQUIRE(file_head_prep_result(x, &d, &raw, &rawlen, &rolled, &behind, &first) == 0);
    CHECK_EQ_INT(d.counter, h1.counter + 1);
    REQUIRE(file_head_apply(&h0, &d) == 0);
    CHECK_EQ_INT(file_head_floor(&h0, f), 4);
    file_head_clear(&other);
    REQUIRE(file_head_load(m, VID, root_fp, &other, NULL, NULL) == 0);
    CHECK(other.n == h0.n && memcmp(other.e, h0.e, h0.n * sizeof *h0.e) == 0);
    file_head_delta_clear(&d);
    file_head_prep_free(x);
    free(raw);
    free(before);
    file_head_clear(&other);
    file_head_clear(&h0);
    file_head_clear(&h1);
}

static double cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* PACTFS_FH_BENCH=1: CPU time of an advance at 1,000, 10,000 and 100,000
 * files: in full (what every advance of format 1 did: every file's row,
 * every floor signed) and incremental (one file committed; 100 files of one
 * bucket), and a refresh of an unchanged head.  Median of 5. */
static void test_bench(void)
{
    static const size_t levels[3] = { 1000, 10000, 100000 };
    uint64_t base = 1u << 24, have = 0, *dirty = calloc(100, sizeof *dirty);
    struct file_head h, nx;
    struct fh_stats st;
    size_t behind;
    uint64_t first;
    int rolled;

    if (!getenv("PACTFS_FH_BENCH")) {
        free(dirty);
        return;
    }
    REQUIRE(dirty);
    REQUIRE(file_head_load(m, VID, root_fp, &h, NULL, NULL) == 0);
    for (int l = 0; l < 3; l++) {
        double full[5], one[5], locked[5], hundred[5], refresh[5], t;
        size_t wrote_one = 0, wrote_full = 0;

        make_files(base + have, levels[l] - have, NULL);
        have = levels[l];
        for (int r = 0; r < 5; r++) {
            struct file_head empty = { 0 };
            struct fh_delta d;
            uint64_t f = base + (uint64_t)r;

            h.version = 1;        /* the next advance in full, as format 1 did */
            t = cpu_ms();
            REQUIRE(advance_dirty(&h, NULL, 0, &nx, &rolled, &behind, &first, &st) == 0);
            full[r] = cpu_ms() - t;
            wrote_full = st.bytes_written;
            file_head_clear(&h);
            h = nx;
            REQUIRE(set_gen(f, 10 + 10 * (uint64_t)l + (uint64_t)r) == 0);
            {     /* as a mount runs it: what is under its metadata lock */
                struct fh_prep *x = NULL;
                uint8_t *raw = NULL;
                size_t rawlen = 0;
                double t1, t2;

                t = cpu_ms();
                REQUIRE(file_head_prepare(m, VID, root_fp, &h, &f, 1, &x, NULL) == 0);
                t1 = cpu_ms();
                REQUIRE(file_head_seal(x, user, VID, user_id) == 0);
                t2 = cpu_ms();
                REQUIRE(file_head_publish(m, x, &st) == 0);
                one[r] = cpu_ms() - t;
                locked[r] = one[r] - (t2 - t1);
                REQUIRE(file_head_prep_result(x, &d, &raw, &rawlen, &rolled, &behind,
                                              &first) == 0);
                REQUIRE(file_head_apply(&h, &d) == 0);
                file_head_delta_clear(&d);
                file_head_prep_free(x);
                free(raw);
            }
            wrote_one = st.bytes_written;
            for (int i = 0; i < 100; i++) {
                dirty[i] = base + 200 + (uint64_t)i;
                REQUIRE(set_gen(dirty[i], 10 + 10 * (uint64_t)l + (uint64_t)r) == 0);
            }
            t = cpu_ms();
            REQUIRE(advance_dirty(&h, dirty, 100, &nx, &rolled, &behind, &first, &st) == 0);
            hundred[r] = cpu_ms() - t;
            file_head_clear(&h);
            h = nx;
            t = cpu_ms();
            REQUIRE(file_head_refresh(m, VID, root_fp, &h, &d, &st) == 0);
            refresh[r] = cpu_ms() - t;
            file_head_delta_clear(&d);
            (void)empty;
        }
        for (int i = 0; i < 5; i++)
            for (int j = i + 1; j < 5; j++) {
#define SWAP(a) do { if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t; } } while (0)
                SWAP(full);
                SWAP(one);
                SWAP(locked);
                SWAP(hundred);
                SWAP(refresh);
#undef SWAP
            }
        printf("# bench %6zu files: advance in full %7.2f ms CPU (%zu bytes written), "
               "1 file %5.2f ms (%zu bytes; %5.3f ms of it under the metadata lock), "
               "100 files %5.2f ms, refresh unchanged %5.3f ms\n", levels[l], full[2],
               wrote_full, one[2], wrote_one, locked[2], hundred[2], refresh[2]);
    }
    file_head_clear(&h);
    free(dirty);
}

static void test_teardown(void)
{
    char p[160];

    meta_close(m);
    EVP_PKEY_free(root);
    EVP_PKEY_free(admin);
    EVP_PKEY_free(user);
    EVP_PKEY_free(stranger);
    for (const char *const *s = (const char *const[]){ "", "-wal", "-shm", NULL }; *s; s++) {
        snprintf(p, sizeof p, "%s%s", dbpath, *s);
        unlink(p);
    }
    rmdir(dbdir);
}

int main(void)
{
    RUN(test_setup);
    RUN(test_first_head_and_every_byte);
    RUN(test_fields);
    RUN(test_replay_and_order);
    RUN(test_advance_keeps_floors);
    RUN(test_resign);
    RUN(test_large_head);
    RUN(test_v1_converted);
    RUN(test_buckets_swapped_or_mixed);
    RUN(test_advance_cost_is_per_bucket);
    RUN(test_split_advance_publishes_only_over_the_root_it_read);
    RUN(test_bench);
    RUN(test_teardown);
    return tap_done();
}
