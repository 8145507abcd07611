/* The signed folder state (folder_state.c) and the signed vault head
 * (vault_head.c): valid ones verify, every altered byte or field is
 * refused, and replayed older versions are caught by the head and by the
 * anchor comparison. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crypto.h"
#include "error.h"
#include "folder_state.h"
#include "meta.h"
#include "meta_test_accounts.h"
#include "registry.h"
#include "tap.h"
#include "vault_head.h"

#define VID "0123456789abcdef0123456789abcdef"

/* A change and the next vault head, as grants.c makes them. */
static int store_state(struct meta *mm, EVP_PKEY *key, uint64_t id, struct folder_state *s)
{
    int rc = folder_state_store(mm, VID, key, id, s);

    return rc ? rc : vault_head_advance(mm, VID, key, id);
}

static EVP_PKEY *root, *admin, *data, *data2, *user;
static char root_fp[REGISTRY_FP_HEX + 1];
static char dbdir[64], dbpath[128];
static struct meta *m;
static uint64_t admin_id, data_id, data2_id, user_id, folder_a, folder_b;

static int add_account(const char *name, uint32_t roles, EVP_PKEY *key, EVP_PKEY *signer,
                       uint64_t signer_id, uint64_t *id)
{
    return test_account_add(m, VID, name, roles, key, signer, signer_id, id);
}

static int add_folder(uint64_t *id)
{
    struct meta_folder f = { .key_version = 1, .created = 1 };
    int rc = meta_folder_add(m, &f);

    *id = f.id;
    return rc;
}

static int get_param(const char *key, uint8_t **val, size_t *len)
{
    return meta_param_get(m, key, val, len);
}

static void test_setup(void)
{
    root = rsa_generate(3072);
    admin = rsa_generate(3072);
    data = rsa_generate(3072);
    data2 = rsa_generate(3072);
    user = rsa_generate(3072);
    REQUIRE(root && admin && data && data2 && user);
    REQUIRE(registry_fingerprint_hex(root, root_fp) == 0);
    REQUIRE(test_meta_open("test_folder_state", root, dbdir, dbpath, &m) == 0);
    REQUIRE(add_account("admin", ROLE_SYSADMIN, admin, root, REGISTRY_ROOT_SIGNER,
                        &admin_id) == 0);
    REQUIRE(add_account("data", ROLE_DATAADMIN | ROLE_USER, data, admin, admin_id,
                        &data_id) == 0);
    REQUIRE(add_account("data2", ROLE_DATAADMIN | ROLE_USER, data2, admin, admin_id,
                        &data2_id) == 0);
    REQUIRE(add_account("user", ROLE_USER, user, admin, admin_id, &user_id) == 0);
    REQUIRE(add_folder(&folder_a) == 0);
    REQUIRE(add_folder(&folder_b) == 0);
}

/* Members: set, replace, remove, kept sorted. */
static void test_members(void)
{
    struct folder_state s = { .folder_id = 1, .counter = 1, .key_version = 1 };

    CHECK_EQ_INT(folder_state_set_member(&s, 9, RIGHT_READ), 0);
    CHECK_EQ_INT(folder_state_set_member(&s, 3, RIGHT_READ | RIGHT_WRITE), 0);
    CHECK_EQ_INT(folder_state_set_member(&s, 5, RIGHT_READ), 0);
    CHECK_EQ_INT(s.nmembers, 3);
    CHECK(s.members[0].account_id == 3 && s.members[1].account_id == 5 &&
          s.members[2].account_id == 9);
    CHECK_EQ_INT(folder_state_set_member(&s, 5, RIGHT_READ | RIGHT_MANAGE), 0);
    CHECK_EQ_INT(folder_state_rights(&s, 5), RIGHT_READ | RIGHT_MANAGE);
    CHECK_EQ_INT(folder_state_set_member(&s, 3, 0), 0);
    CHECK_EQ_INT(s.nmembers, 2);
    CHECK_EQ_INT(folder_state_rights(&s, 3), 0);
    CHECK_EQ_INT(folder_state_set_member(&s, 4, 0x80), -EINVAL);
    folder_state_clear(&s);
}

/* A signed state round-trips; every altered byte of it is refused. */
static void test_state_sign_verify_and_every_byte(void)
{
    struct folder_state s = { .folder_id = 42, .counter = 7, .key_version = 3 }, d;
    uint8_t *blob = NULL;
    size_t len = 0;
    unsigned refused = 0, positions = 0;

    REQUIRE(folder_state_set_member(&s, data_id, RIGHT_READ | RIGHT_WRITE | RIGHT_MANAGE) == 0);
    REQUIRE(folder_state_set_member(&s, user_id, RIGHT_READ) == 0);
    REQUIRE(folder_state_sign(data, VID, data_id, &s, &blob, &len) == 0);
    CHECK_EQ_INT(folder_state_verify_blob(VID, blob, len, data, &d), 0);
    CHECK(d.folder_id == 42 && d.counter == 7 && d.key_version == 3 && d.signer_id == data_id);
    CHECK_EQ_INT(d.nmembers, 2);
    CHECK_EQ_INT(folder_state_rights(&d, user_id), RIGHT_READ);
    folder_state_clear(&d);
    /* another signer's key, another vault */
    CHECK_EQ_INT(folder_state_verify_blob(VID, blob, len, data2, &d), -EBADMSG);
    CHECK_EQ_INT(folder_state_verify_blob("ffffffffffffffffffffffffffffffff", blob, len, data,
                                          &d), -EBADMSG);
    /* every byte (fields, counts, member ids and rights, signature) */
    for (size_t i = 0; i < len; i++) {
        blob[i] ^= 0x01;
        positions++;
        refused += folder_state_verify_blob(VID, blob, len, data, &d) < 0;
        blob[i] ^= 0x01;
    }
    CHECK_EQ_INT(refused, positions);
    /* truncated, extended */
    CHECK(folder_state_verify_blob(VID, blob, len - 1, data, &d) < 0);
    {
        uint8_t *longer = calloc(1, len + 1);

        REQUIRE(longer);
        memcpy(longer, blob, len);
        CHECK(folder_state_verify_blob(VID, longer, len + 1, data, &d) < 0);
        free(longer);
    }
    free(blob);
    /* unsorted members or a zero counter are never signed */
    s.members[0].account_id = s.members[1].account_id + 1;
    CHECK_EQ_INT(folder_state_sign(data, VID, data_id, &s, &blob, &len), -EINVAL);
    folder_state_clear(&s);
}

/* Through the store: who may sign what. */
static void test_state_load_rules(void)
{
    struct folder_state s = { .folder_id = folder_a, .counter = 1, .key_version = 1 }, d;
    uint8_t *blob = NULL;
    size_t len = 0;
    char pa[48], pb[48];

    folder_state_param(folder_a, pa, sizeof pa);
    folder_state_param(folder_b, pb, sizeof pb);
    CHECK_EQ_INT(folder_state_load(m, VID, root_fp, folder_a, &d, NULL, NULL), -ENOENT);
    REQUIRE(folder_state_set_member(&s, data_id, RIGHT_READ | RIGHT_WRITE | RIGHT_MANAGE) == 0);
    REQUIRE(folder_state_set_member(&s, user_id, RIGHT_READ) == 0);
    REQUIRE(store_state(m, data, data_id, &s) == 0);
    CHECK_EQ_INT(folder_state_load(m, VID, root_fp, folder_a, &d, NULL, NULL), 0);
    CHECK_EQ_INT(folder_state_rights(&d, user_id), RIGHT_READ);
    folder_state_clear(&d);

    /* a state copied onto another folder */
    REQUIRE(get_param(pa, &blob, &len) == 0);
    REQUIRE(meta_param_set(m, pb, blob, len) == 0);
    CHECK_EQ_INT(folder_state_load(m, VID, root_fp, folder_b, &d, NULL, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "names folder") != NULL);
    free(blob);

    /* signed by a user (not a dataadmin) that lists itself as manager */
    s.folder_id = folder_b;
    REQUIRE(folder_state_set_member(&s, user_id, RIGHT_READ | RIGHT_WRITE | RIGHT_MANAGE) == 0);
    REQUIRE(folder_state_sign(user, VID, user_id, &s, &blob, &len) == 0);
    REQUIRE(meta_param_set(m, pb, blob, len) == 0);
    free(blob);
    CHECK_EQ_INT(folder_state_load(m, VID, root_fp, folder_b, &d, NULL, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "not an enabled dataadmin") != NULL);

    /* signed by a dataadmin who does not manage the folder by the state */
    REQUIRE(folder_state_sign(data2, VID, data2_id, &s, &blob, &len) == 0);
    REQUIRE(meta_param_set(m, pb, blob, len) == 0);
    free(blob);
    CHECK_EQ_INT(folder_state_load(m, VID, root_fp, folder_b, &d, NULL, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "does not manage") != NULL);

    /* signer_id naming data but signed with data2's key */
    REQUIRE(folder_state_sign(data2, VID, data_id, &s, &blob, &len) == 0);
    REQUIRE(meta_param_set(m, pb, blob, len) == 0);
    free(blob);
    CHECK_EQ_INT(folder_state_load(m, VID, root_fp, folder_b, &d, NULL, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "does not verify") != NULL);

    /* the real state of folder b, by its manager */
    REQUIRE(folder_state_set_member(&s, user_id, RIGHT_READ) == 0);
    REQUIRE(store_state(m, data, data_id, &s) == 0);
    CHECK_EQ_INT(folder_state_load(m, VID, root_fp, folder_b, &d, NULL, NULL), 0);
    folder_state_clear(&d);
    folder_state_clear(&s);
}

/* The head commits to every folder state and registry record. */
static void test_head_verifies_and_commits(void)
{
    struct vault_head h, now;
    uint8_t *raw = NULL;
    size_t len = 0;

    CHECK_EQ_INT(vault_head_load(m, VID, root_fp, &h, &raw, &len), 0);
    CHECK_EQ_INT(h.format, VAULT_FORMAT);
    CHECK_EQ_INT(h.nfolders, 2);
    CHECK_EQ_INT(h.naccounts, 4);
    CHECK_EQ_INT(h.signer_id, data_id);
    REQUIRE(vault_head_compute(m, VID, &now) == 0);
    CHECK_EQ_INT(now.folders[0].counter, 1);
    CHECK_EQ_INT(now.accounts[1].serial, 1);
    vault_head_clear(&now);
    vault_head_clear(&h);
    free(raw);
    /* a wrong pinned root: the signer cannot be trusted */
    CHECK_EQ_INT(vault_head_load(m, VID, "00000000000000000000000000000000"
                                 "00000000000000000000000000000000", &h, NULL, NULL), -EBADMSG);
}

/* Every altered byte of the stored head is refused. */
static void test_head_every_byte(void)
{
    struct vault_head h;
    uint8_t *raw = NULL;
    size_t len = 0;
    unsigned refused = 0;

    REQUIRE(get_param(VAULT_HEAD_PARAM, &raw, &len) == 0);
    for (size_t i = 0; i < len; i++) {
        raw[i] ^= 0x04;
        REQUIRE(meta_param_set(m, VAULT_HEAD_PARAM, raw, len) == 0);
        refused += vault_head_load(m, VID, root_fp, &h, NULL, NULL) < 0;
        raw[i] ^= 0x04;
    }
    CHECK_EQ_INT(refused, len);
    REQUIRE(meta_param_set(m, VAULT_HEAD_PARAM, raw, len) == 0);
    CHECK_EQ_INT(vault_head_load(m, VID, root_fp, &h, NULL, NULL), 0);
    vault_head_clear(&h);
    free(raw);
}

/* An older folder state or registry record put back: the head catches it,
 * and no new head is signed over it. */
static void test_replayed_older_rows(void)
{
    struct folder_state s, d;
    struct vault_head h;
    struct meta_account a;
    uint8_t *old_state = NULL, *old_rec = NULL;
    size_t old_state_len = 0, old_rec_len = 0;
    char pa[48], rec_key[64];

    folder_state_param(folder_a, pa, sizeof pa);
    snprintf(rec_key, sizeof rec_key, "registry.account.%llu", (unsigned long long)user_id);
    REQUIRE(get_param(pa, &old_state, &old_state_len) == 0);
    REQUIRE(get_param(rec_key, &old_rec, &old_rec_len) == 0);

    /* revoke user from folder a: counter 2, key version 2 */
    REQUIRE(folder_state_load(m, VID, root_fp, folder_a, &s, NULL, NULL) == 0);
    REQUIRE(folder_state_set_member(&s, user_id, 0) == 0);
    s.counter++;
    s.key_version++;
    REQUIRE(store_state(m, data, data_id, &s) == 0);
    folder_state_clear(&s);
    CHECK_EQ_INT(vault_head_load(m, VID, root_fp, &h, NULL, NULL), 0);
    vault_head_clear(&h);

    /* the database operator puts the old (validly signed) state back */
    REQUIRE(meta_param_set(m, pa, old_state, old_state_len) == 0);
    CHECK_EQ_INT(folder_state_load(m, VID, root_fp, folder_a, &d, NULL, NULL), 0);
    folder_state_clear(&d);   /* on its own it still verifies... */
    CHECK_EQ_INT(vault_head_load(m, VID, root_fp, &h, NULL, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "folder") != NULL);   /* ...the head does not */
    /* and nobody signs a new head over it */
    CHECK_EQ_INT(vault_head_advance(m, VID, data, data_id), -ESTALE);
    CHECK(strstr(pfs_err_msg(), "older") != NULL);
    REQUIRE(folder_state_load(m, VID, root_fp, folder_a, &s, NULL, NULL) == 0);
    s.counter = 2;
    s.key_version = 2;
    REQUIRE(folder_state_set_member(&s, user_id, 0) == 0);
    free(old_state);
    REQUIRE(folder_state_sign(data, VID, data_id, &s, &old_state, &old_state_len) == 0);
    folder_state_clear(&s);
    /* (the re-signed counter-2 state is a different blob: still refused) */
    REQUIRE(meta_param_set(m, pa, old_state, old_state_len) == 0);
    CHECK_EQ_INT(vault_head_load(m, VID, root_fp, &h, NULL, NULL), -EBADMSG);
    free(old_state);

    /* a newer state by the manager repairs it */
    REQUIRE(folder_state_load(m, VID, root_fp, folder_a, &s, NULL, NULL) == 0);
    s.counter = 3;
    REQUIRE(store_state(m, data, data_id, &s) == 0);
    folder_state_clear(&s);
    CHECK_EQ_INT(vault_head_load(m, VID, root_fp, &h, NULL, NULL), 0);
    vault_head_clear(&h);

    /* disable user (serial 2), then put its serial-1 record back */
    REQUIRE(meta_account_get(m, user_id, &a) == 0);
    a.disabled = 1;
    REQUIRE(meta_account_update(m, &a) == 0);
    REQUIRE(registry_certify(m, VID, &a, NULL, admin, admin_id) == 0);
    REQUIRE(vault_head_advance(m, VID, admin, admin_id) == 0);
    a.disabled = 0;
    REQUIRE(meta_account_update(m, &a) == 0);
    meta_account_clear(&a);
    REQUIRE(meta_param_set(m, rec_key, old_rec, old_rec_len) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, user_id, NULL), 0); /* alone: verifies */
    CHECK_EQ_INT(vault_head_load(m, VID, root_fp, &h, NULL, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "registry record") != NULL);
    free(old_rec);
}

/* Anchors: older head, same counter other bytes, newer head with an older
 * element. */
static void test_anchor_comparison(void)
{
    struct vault_head h1, h2, forged;
    uint8_t *raw1 = NULL, *raw2 = NULL, hash1[SHA256_LEN], hash2[SHA256_LEN];
    size_t len1 = 0, len2 = 0, flen = 0;
    uint8_t *fblob = NULL;
    struct meta_account a;

    /* The registry record of user is still the replayed serial 1: a
     * sysadmin's change over it signs no head. */
    REQUIRE(meta_account_get(m, user_id, &a) == 0);
    a.disabled = 1;
    REQUIRE(meta_account_update(m, &a) == 0);
    REQUIRE(registry_certify(m, VID, &a, NULL, admin, admin_id) == 0);
    CHECK_EQ_INT(vault_head_advance(m, VID, admin, admin_id), -ESTALE);
    meta_account_clear(&a);
    /* Rebuild a consistent store: the serial-2 record by hand is gone, so
     * start the comparisons from a fresh head over what is there now. */
    {
        struct vault_head cur;

        REQUIRE(vault_head_compute(m, VID, &cur) == 0);
        cur.counter = 100;
        REQUIRE(vault_head_sign(data, VID, data_id, &cur, &raw1, &len1) == 0);
        REQUIRE(meta_param_set(m, VAULT_HEAD_PARAM, raw1, len1) == 0);
        vault_head_clear(&cur);
        free(raw1);
    }
    REQUIRE(vault_head_load(m, VID, root_fp, &h1, &raw1, &len1) == 0);
    sha256(raw1, len1, hash1);
    CHECK_EQ_INT(vault_head_check_anchor(VID, raw1, len1, &h1, h1.counter, hash1, raw1, len1,
                                         "the test anchor"), 0);
    REQUIRE(vault_head_advance(m, VID, data2, data2_id) == 0);
    REQUIRE(vault_head_load(m, VID, root_fp, &h2, &raw2, &len2) == 0);
    sha256(raw2, len2, hash2);
    CHECK_EQ_INT(h2.counter, h1.counter + 1);
    /* newer than the anchor: fine */
    CHECK_EQ_INT(vault_head_check_anchor(VID, raw2, len2, &h2, h1.counter, hash1, raw1, len1,
                                         "the test anchor"), 0);
    CHECK_EQ_INT(vault_head_check_anchor(VID, raw2, len2, &h2, h1.counter, hash1, NULL, 0,
                                         "the test anchor"), 0);
    /* older than the anchor: refused, with or without the anchored bytes */
    CHECK_EQ_INT(vault_head_check_anchor(VID, raw1, len1, &h1, h2.counter, hash2, raw2, len2,
                                         "the test anchor"), -ESTALE);
    CHECK(strstr(pfs_err_msg(), "older than the test anchor") != NULL);
    CHECK_EQ_INT(vault_head_check_anchor(VID, raw1, len1, &h1, h2.counter, hash2, NULL, 0,
                                         "the test anchor"), -ESTALE);
    /* same counter, other bytes */
    CHECK_EQ_INT(vault_head_check_anchor(VID, raw1, len1, &h1, h1.counter, hash2, NULL, 0,
                                         "the test anchor"), -ESTALE);
    /* a newer head (signed by a colluding admin) with folder a's state
     * older than the anchored head's */
    REQUIRE(vault_head_compute(m, VID, &forged) == 0);
    forged.counter = h2.counter + 5;
    forged.folders[0].counter = 1;
    REQUIRE(vault_head_sign(data2, VID, data2_id, &forged, &fblob, &flen) == 0);
    CHECK_EQ_INT(vault_head_check_anchor(VID, fblob, flen, &forged, h2.counter, hash2, raw2,
                                         len2, "the test anchor"), -ESTALE);
    CHECK(strstr(pfs_err_msg(), "folder") != NULL);
    /* an account vanished */
    forged.folders[0].counter = h2.folders[0].counter;
    forged.naccounts--;
    CHECK_EQ_INT(vault_head_not_older(&h2, &forged, "the anchor"), -ESTALE);
    CHECK(strstr(pfs_err_msg(), "vanished") != NULL);
    vault_head_clear(&forged);
    free(fblob);
    vault_head_clear(&h1);
    vault_head_clear(&h2);
    free(raw1);
    free(raw2);
}

/* Rows added behind the head's back: a bare row changes nothing (nobody
 * trusts it), a signed state or record the head does not list is caught. */
static void test_rows_added(void)
{
    struct vault_head h;
    uint64_t extra;
    uint8_t *blob = NULL;
    size_t len = 0;
    char pa[48], px[48];

    CHECK_EQ_INT(vault_head_load(m, VID, root_fp, &h, NULL, NULL), 0);
    vault_head_clear(&h);
    REQUIRE(add_folder(&extra) == 0);
    CHECK_EQ_INT(vault_head_load(m, VID, root_fp, &h, NULL, NULL), 0);
    vault_head_clear(&h);
    folder_state_param(folder_a, pa, sizeof pa);
    folder_state_param(extra, px, sizeof px);
    REQUIRE(get_param(pa, &blob, &len) == 0);
    REQUIRE(meta_param_set(m, px, blob, len) == 0);
    free(blob);
    CHECK_EQ_INT(vault_head_load(m, VID, root_fp, &h, NULL, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "not in the signed vault head") != NULL);
}

static void test_teardown(void)
{
    char p[160];

    meta_close(m);
    EVP_PKEY_free(root);
    EVP_PKEY_free(admin);
    EVP_PKEY_free(data);
    EVP_PKEY_free(data2);
    EVP_PKEY_free(user);
    for (const char *const *s = (const char *const[]){ "", "-wal", "-shm", NULL }; *s; s++) {
        snprintf(p, sizeof p, "%s%s", dbpath, *s);
        unlink(p);
    }
    CHECK_EQ_INT(rmdir(dbdir), 0);
}

int main(void)
{
    RUN(test_setup);
    RUN(test_members);
    RUN(test_state_sign_verify_and_every_byte);
    RUN(test_state_load_rules);
    RUN(test_head_verifies_and_commits);
    RUN(test_head_every_byte);
    RUN(test_replayed_older_rows);
    RUN(test_anchor_comparison);
    RUN(test_rows_added);
    RUN(test_teardown);
    return tap_done();
}
