/* The signed file head (file_head.c): a valid head verifies, every altered
 * byte or field is refused, a replayed older head is caught by the anchor
 * comparison and by the entry-wise order, and advancing keeps every floor
 * (a file put back older, a deleted file, a file head rolled back). */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* Advance as the user's mount does. */
static int advance(const struct file_head *known, struct file_head *out, int *rolled,
                   size_t *behind, uint64_t *first)
{
    uint8_t *raw = NULL;
    size_t len = 0;
    int rc = file_head_advance(m, VID, root_fp, user, user_id, known, out, &raw, &len, rolled,
                               behind, first);

    free(raw);
    return rc;
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
 * signer's, or named wrongly, or malformed: refused. */
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
    REQUIRE(file_head_sign(stranger, VID, user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    /* signed by the user, but naming the admin as signer */
    REQUIRE(file_head_sign(user, VID, admin_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    /* an account the registry does not know */
    REQUIRE(file_head_sign(user, VID, 4242, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    /* another vault's head */
    REQUIRE(file_head_sign(user, "another-vault", user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    /* entries out of order, a duplicate, a zero generation, a zero counter */
    e[0].ino = ino_b, e[1].ino = ino_a;
    REQUIRE(file_head_sign(user, VID, user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    e[0].ino = e[1].ino = ino_a;
    REQUIRE(file_head_sign(user, VID, user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    e[0].ino = ino_a, e[1].ino = ino_b, e[1].generation = 0;
    REQUIRE(file_head_sign(user, VID, user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    e[1].generation = 1;
    h.counter = 0;
    REQUIRE(file_head_sign(user, VID, user_id, &h, &blob, &len) == 0);
    REQUIRE(store(blob, len) == 0);
    CHECK_EQ_INT(file_head_load(m, VID, root_fp, &got, NULL, NULL), -EBADMSG);
    free(blob);
    /* valid again: signed by the user as the user */
    h.counter = 99;
    REQUIRE(file_head_sign(user, VID, user_id, &h, &blob, &len) == 0);
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

    REQUIRE(file_head_sign(user, VID, user_id, &a, &ra, &la) == 0);
    REQUIRE(file_head_sign(user, VID, user_id, &b, &rb, &lb) == 0);
    sha256(ra, la, ha);
    sha256(rb, lb, hb);
    CHECK_EQ_INT(file_head_check_anchor(&a, ra, la, 5, ha, "the anchor"), 0);
    CHECK_EQ_INT(file_head_check_anchor(&b, rb, lb, 5, ha, "the anchor"), 0);   /* newer */
    CHECK_EQ_INT(file_head_check_anchor(&a, ra, la, 6, hb, "the anchor"), -ESTALE);
    CHECK(strstr(pfs_err_msg(), "older than the anchor") != NULL);
    b.counter = 5;      /* same counter, other bytes: a fork */
    free(rb);
    REQUIRE(file_head_sign(user, VID, user_id, &b, &rb, &lb) == 0);
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
    RUN(test_teardown);
    return tap_done();
}
