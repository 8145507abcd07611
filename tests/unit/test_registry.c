#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "crypto.h"
#include "enrol.h"
#include "envelope.h"
#include "error.h"
#include "folder_state.h"
#include "grants.h"
#include "meta.h"
#include "meta_backend.h"
#include "meta_test_accounts.h"
#include "registry.h"
#include "tap.h"

#define VID "0123456789abcdef0123456789abcdef"

/* Keys are generated once: RSA-3072 is slow. */
static EVP_PKEY *root, *admin, *data, *user, *stranger;
static char root_fp[REGISTRY_FP_HEX + 1];
static char dbdir[64], dbpath[128];
static struct meta *m;
static uint64_t admin_id, data_id, user_id;

static int add_account(const char *name, uint32_t roles, EVP_PKEY *key, uint64_t *id)
{
    struct meta_account a;
    int rc = test_account_row(m, name, roles, key, &a);

    *id = a.id;
    free(a.pubkey);
    return rc;
}

static void test_setup(void)
{
    root = rsa_generate(3072);
    admin = rsa_generate(3072);
    data = rsa_generate(3072);
    user = rsa_generate(3072);
    stranger = rsa_generate(3072);
    REQUIRE(root && admin && data && user && stranger);
    REQUIRE(registry_fingerprint_hex(root, root_fp) == 0);
    snprintf(dbdir, sizeof dbdir, "/tmp/test_registry.XXXXXX");
    REQUIRE(mkdtemp(dbdir));
    snprintf(dbpath, sizeof dbpath, "%s/meta.db", dbdir);
    REQUIRE(meta_open_sqlite(dbpath, 1, &m) == 0);
    REQUIRE(registry_root_store(m, root) == 0);
}

/* Certify the accounts through the chain root -> admin -> data, user. */
static void test_chain_verifies(void)
{
    struct meta_account a;
    struct registry_record r = { 0 };

    REQUIRE(m);
    REQUIRE(add_account("admin", ROLE_SYSADMIN, admin, &admin_id) == 0);
    REQUIRE(add_account("data", ROLE_DATAADMIN | ROLE_USER, data, &data_id) == 0);
    REQUIRE(add_account("user", ROLE_USER, user, &user_id) == 0);
    REQUIRE(meta_account_get(m, admin_id, &a) == 0);
    CHECK_EQ_INT(registry_certify(m, VID, &a, NULL, root, REGISTRY_ROOT_SIGNER), 0);
    meta_account_clear(&a);
    REQUIRE(meta_account_get(m, data_id, &a) == 0);
    CHECK_EQ_INT(registry_certify(m, VID, &a, NULL, admin, admin_id), 0);
    meta_account_clear(&a);
    REQUIRE(meta_account_get(m, user_id, &a) == 0);
    CHECK_EQ_INT(registry_certify(m, VID, &a, NULL, admin, admin_id), 0);
    meta_account_clear(&a);

    CHECK_EQ_INT(registry_verify(m, VID, root_fp, admin_id, NULL), 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, data_id, &r), 0);
    CHECK_EQ_INT(r.roles, ROLE_DATAADMIN | ROLE_USER);
    CHECK(strcmp(r.name, "data") == 0 && strcmp(r.key_name, "data") == 0);
    CHECK_EQ_INT(r.signer_id, admin_id);
    CHECK_EQ_INT(r.serial, 1);
    registry_record_clear(&r);
    /* No pinned fingerprint, or another one: nothing is trusted. */
    CHECK_EQ_INT(registry_verify(m, VID, NULL, data_id, NULL), -EINVAL);
    CHECK_EQ_INT(registry_verify(m, VID, "00000000000000000000000000000000"
                                 "00000000000000000000000000000000", data_id, NULL), -EBADMSG);
    /* Another vault's id does not verify either. */
    CHECK_EQ_INT(registry_verify(m, "ffffffffffffffffffffffffffffffff", root_fp, data_id, NULL),
                 -EBADMSG);
}

/* The database operator edits a row: each field is caught. */
static void test_row_tampering_refused(void)
{
    struct meta_account a, orig;
    uint8_t *der = NULL;
    size_t len = 0;

    REQUIRE(meta_account_get(m, user_id, &orig) == 0);
    /* a flipped role */
    REQUIRE(meta_account_get(m, user_id, &a) == 0);
    a.roles = ROLE_DATAADMIN | ROLE_USER;
    REQUIRE(meta_account_update(m, &a) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, user_id, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "roles") != NULL);
    meta_account_clear(&a);
    /* a swapped public key */
    REQUIRE(meta_account_get(m, user_id, &a) == 0);
    a.roles = orig.roles;
    REQUIRE(rsa_public_to_der(stranger, &der, &len) == 0);
    free(a.pubkey);
    a.pubkey = der;
    a.pubkey_len = len;
    REQUIRE(meta_account_update(m, &a) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, user_id, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "public key") != NULL);
    meta_account_clear(&a);
    /* an enabled flag on a disabled account, a new name */
    REQUIRE(meta_account_get(m, user_id, &a) == 0);
    free(a.pubkey);
    a.pubkey = meta_memdup(orig.pubkey, orig.pubkey_len);
    snprintf(a.name, sizeof a.name, "mallory");
    REQUIRE(meta_account_update(m, &a) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, user_id, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "name") != NULL);
    meta_account_clear(&a);
    /* restored: verifies again */
    REQUIRE(meta_account_update(m, &orig) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, user_id, NULL), 0);
    meta_account_clear(&orig);
}

/* A row added without a record, a record signed by a non-sysadmin or by a
 * key outside the chain, and a record copied onto another account. */
static void test_forged_records_refused(void)
{
    struct meta_account a;
    uint64_t mallory_id = 0;
    uint8_t *rec = NULL;
    size_t reclen = 0;
    char key[64];

    REQUIRE(add_account("mallory", ROLE_USER, stranger, &mallory_id) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, mallory_id, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "no signed registry record") != NULL);

    REQUIRE(meta_account_get(m, mallory_id, &a) == 0);
    /* signed by a dataadmin: not a sysadmin */
    REQUIRE(registry_certify(m, VID, &a, NULL, data, data_id) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, mallory_id, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "not an enabled sysadmin") != NULL);
    /* claims the admin as signer but signed with another key */
    REQUIRE(registry_certify(m, VID, &a, NULL, stranger, admin_id) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, mallory_id, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "does not verify") != NULL);
    /* claims the root but is signed by another key */
    REQUIRE(registry_certify(m, VID, &a, NULL, stranger, REGISTRY_ROOT_SIGNER) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, mallory_id, NULL), -EBADMSG);
    /* self-signature is refused at signing */
    CHECK_EQ_INT(registry_certify(m, VID, &a, NULL, stranger, mallory_id), -EINVAL);
    meta_account_clear(&a);

    /* the user's good record copied under mallory's id */
    snprintf(key, sizeof key, "registry.account.%llu", (unsigned long long)user_id);
    REQUIRE(meta_param_get(m, key, &rec, &reclen) == 0);
    snprintf(key, sizeof key, "registry.account.%llu", (unsigned long long)mallory_id);
    REQUIRE(meta_param_set(m, key, rec, reclen) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, mallory_id, NULL), -EBADMSG);
    /* a corrupted record */
    rec[reclen / 2] ^= 1;
    snprintf(key, sizeof key, "registry.account.%llu", (unsigned long long)user_id);
    REQUIRE(meta_param_set(m, key, rec, reclen) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, user_id, NULL), -EBADMSG);
    rec[reclen / 2] ^= 1;
    REQUIRE(meta_param_set(m, key, rec, reclen) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, user_id, NULL), 0);
    free(rec);
}

/* Disabling the signing sysadmin breaks what it signed; re-certifying
 * bumps the serial. */
static void test_disabled_signer_and_serial(void)
{
    struct meta_account a;
    struct registry_record r = { 0 };

    REQUIRE(meta_account_get(m, admin_id, &a) == 0);
    a.disabled = 1;
    REQUIRE(registry_certify(m, VID, &a, NULL, root, REGISTRY_ROOT_SIGNER) == 0);
    REQUIRE(meta_account_update(m, &a) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, admin_id, &r), 0);
    CHECK_EQ_INT(r.serial, 2);
    CHECK(r.disabled);
    registry_record_clear(&r);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, user_id, NULL), -EBADMSG);
    a.disabled = 0;
    REQUIRE(registry_certify(m, VID, &a, NULL, root, REGISTRY_ROOT_SIGNER) == 0);
    REQUIRE(meta_account_update(m, &a) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, user_id, NULL), 0);
    meta_account_clear(&a);
}

static void test_roles(void)
{
    uint32_t roles = 0;
    char out[64];

    CHECK_EQ_INT(registry_roles_parse("dataadmin,user", &roles), 0);
    CHECK_EQ_INT(roles, ROLE_DATAADMIN | ROLE_USER);
    registry_roles_format(roles, out, sizeof out);
    CHECK(strcmp(out, "dataadmin,user") == 0);
    CHECK_EQ_INT(registry_roles_parse("sysadmin,dataadmin", &roles), -EINVAL);
    CHECK_EQ_INT(registry_roles_parse("root", &roles), -EINVAL);
    CHECK_EQ_INT(registry_roles_parse("", &roles), -EINVAL);
    CHECK_EQ_INT(registry_roles_check(ROLE_SYSADMIN | ROLE_DATAADMIN), -EINVAL);
    CHECK_EQ_INT(registry_roles_check(ROLE_SYSADMIN | ROLE_AUDITOR), 0);
}

/* Grants: the creator's self-grant is the base; a grant by a dataadmin
 * without manage, by a non-dataadmin, or altered afterwards is refused. */
static void test_grant_signatures(void)
{
    uint8_t fk[FOLDER_KEY_LEN];
    struct meta_folder f = { .key_version = 1, .created = 1 };
    struct meta_envelope own = { 0 }, e = { 0 };
    const uint8_t *rsa;
    size_t rsalen;

    REQUIRE(folder_key_generate(fk) == 0);
    REQUIRE(meta_folder_add(m, &f) == 0);
    own.folder_id = e.folder_id = f.id;
    own.account_id = data_id;
    own.key_version = e.key_version = 1;
    own.rights = RIGHT_READ | RIGHT_WRITE | RIGHT_MANAGE;
    REQUIRE(envelope_seal(data, VID, f.id, 1, fk, &own.wrapped, &own.wrapped_len) == 0);
    REQUIRE(grant_sign(data, VID, data_id, &own) == 0);
    REQUIRE(meta_envelope_put(m, &own) == 0);
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &own, &rsa, &rsalen), 0);

    e.account_id = user_id;
    e.rights = RIGHT_READ;
    REQUIRE(envelope_seal(user, VID, f.id, 1, fk, &e.wrapped, &e.wrapped_len) == 0);
    REQUIRE(grant_sign(data, VID, data_id, &e) == 0);
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &e, &rsa, &rsalen), 0);
    /* rights raised in the row after signing */
    e.rights = RIGHT_READ | RIGHT_WRITE;
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &e, &rsa, &rsalen), -EBADMSG);
    e.rights = RIGHT_READ;
    /* the sysadmin as granter (it holds no envelope, is no dataadmin) */
    e.granted_by = admin_id;
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &e, &rsa, &rsalen), -EBADMSG);
    e.granted_by = data_id;
    /* the granter loses its manage right */
    REQUIRE(meta_envelope_delete(m, f.id, data_id) == 0);
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &e, &rsa, &rsalen), -EBADMSG);
    /* an unsigned (legacy) envelope */
    {
        struct meta_envelope bare = e;
        int rc;

        bare.wrapped = (uint8_t *)"xxxxxxxx";
        bare.wrapped_len = 8;
        rc = grant_verify(m, VID, root_fp, &bare, &rsa, &rsalen);
        CHECK_EQ_INT(rc, -EBADMSG);
    }
    free(own.wrapped);
    free(e.wrapped);
}

/* A dataadmin demoted by a sysadmin keeps what it signed while it held the
 * role (the sysadmin lists it in the demoting record); what it signs after,
 * even claiming an old key version or counter, is refused. */
static void test_retained_after_demotion(void)
{
    uint8_t fk[FOLDER_KEY_LEN], hashes[3][SHA256_LEN], *raw = NULL, *blob = NULL;
    struct meta_folder f = { .key_version = 1, .created = 1 };
    struct meta_envelope own = { 0 }, e = { 0 }, forged = { 0 };
    struct folder_state st = { .counter = 1, .key_version = 1 }, got = { 0 }, late = { 0 };
    struct meta_account a;
    const uint8_t *rsa;
    size_t rsalen, rawlen = 0, bloblen = 0;
    char param[48];

    REQUIRE(folder_key_generate(fk) == 0);
    REQUIRE(meta_folder_add(m, &f) == 0);
    own.folder_id = e.folder_id = forged.folder_id = f.id;
    own.account_id = data_id;
    own.key_version = e.key_version = forged.key_version = 1;
    own.rights = RIGHT_READ | RIGHT_WRITE | RIGHT_MANAGE;
    REQUIRE(envelope_seal(data, VID, f.id, 1, fk, &own.wrapped, &own.wrapped_len) == 0);
    REQUIRE(grant_sign(data, VID, data_id, &own) == 0);
    REQUIRE(meta_envelope_put(m, &own) == 0);
    e.account_id = user_id;
    e.rights = RIGHT_READ;
    REQUIRE(envelope_seal(user, VID, f.id, 1, fk, &e.wrapped, &e.wrapped_len) == 0);
    REQUIRE(grant_sign(data, VID, data_id, &e) == 0);
    REQUIRE(meta_envelope_put(m, &e) == 0);
    st.folder_id = f.id;
    REQUIRE(folder_state_set_member(&st, data_id, own.rights) == 0);
    REQUIRE(folder_state_set_member(&st, user_id, RIGHT_READ) == 0);
    REQUIRE(folder_state_store(m, VID, data, data_id, &st) == 0);
    REQUIRE(folder_state_load(m, VID, root_fp, f.id, &got, &raw, &rawlen) == 0);
    folder_state_clear(&got);

    /* Demoted to user, without a list: nothing of its verifies any more. */
    REQUIRE(meta_account_get(m, data_id, &a) == 0);
    a.roles = ROLE_USER;
    REQUIRE(meta_account_update(m, &a) == 0);
    REQUIRE(registry_certify(m, VID, &a, NULL, admin, admin_id) == 0);
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &e, &rsa, &rsalen), -EBADMSG);
    CHECK_EQ_INT(folder_state_load(m, VID, root_fp, f.id, &got, NULL, NULL), -EBADMSG);
    /* With the list the sysadmin signs at demotion, all of it does. */
    sha256(own.wrapped, own.wrapped_len, hashes[0]);
    sha256(e.wrapped, e.wrapped_len, hashes[1]);
    sha256(raw, rawlen, hashes[2]);
    REQUIRE(registry_certify_retaining(m, VID, &a, hashes, 3, admin, admin_id) == 0);
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &e, &rsa, &rsalen), 0);
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &own, &rsa, &rsalen), 0);
    CHECK_EQ_INT(folder_state_load(m, VID, root_fp, f.id, &got, NULL, NULL), 0);
    folder_state_clear(&got);
    /* A later rename keeps the list. */
    snprintf(a.name, sizeof a.name, "data2");
    REQUIRE(meta_account_update(m, &a) == 0);
    REQUIRE(registry_certify(m, VID, &a, NULL, admin, admin_id) == 0);
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &e, &rsa, &rsalen), 0);

    /* Back-dated forgeries by the demoted account, with its real key: a grant
     * of the old version with raised rights, and a newer folder state. */
    forged.account_id = user_id;
    forged.rights = RIGHT_READ | RIGHT_WRITE;
    REQUIRE(envelope_seal(user, VID, f.id, 1, fk, &forged.wrapped, &forged.wrapped_len) == 0);
    REQUIRE(grant_sign(data, VID, data_id, &forged) == 0);
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &forged, &rsa, &rsalen), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "did not make this grant while it was one") != NULL);
    late.folder_id = f.id;
    late.counter = 2;
    late.key_version = 1;
    REQUIRE(folder_state_set_member(&late, data_id, own.rights) == 0);
    REQUIRE(folder_state_set_member(&late, user_id, RIGHT_READ | RIGHT_WRITE) == 0);
    REQUIRE(folder_state_store(m, VID, data, data_id, &late) == 0);
    CHECK_EQ_INT(folder_state_load(m, VID, root_fp, f.id, &got, NULL, NULL), -EBADMSG);
    folder_state_param(f.id, param, sizeof param);
    REQUIRE(meta_param_set(m, param, raw, rawlen) == 0);
    CHECK_EQ_INT(folder_state_load(m, VID, root_fp, f.id, &got, NULL, NULL), 0);
    folder_state_clear(&got);

    /* The database operator adds the forgery's hash to the stored list: the
     * list no longer matches the record's hash. */
    {
        char lp[64];
        uint8_t *list = NULL;
        size_t listlen = 0;

        snprintf(lp, sizeof lp, "registry.retained.%" PRIu64, data_id);
        REQUIRE(meta_param_get(m, lp, &list, &listlen) == 0);
        blob = malloc(listlen + SHA256_LEN);
        REQUIRE(blob);
        memcpy(blob, list, listlen);
        sha256(forged.wrapped, forged.wrapped_len, blob + listlen);
        bloblen = listlen + SHA256_LEN;
        blob[4 + 1 + 4 + 32 + 8 + 3]++;   /* n, after magic, version, vault, account */
        REQUIRE(meta_param_set(m, lp, blob, bloblen) == 0);
        CHECK_EQ_INT(grant_verify(m, VID, root_fp, &forged, &rsa, &rsalen), -EBADMSG);
        CHECK_EQ_INT(grant_verify(m, VID, root_fp, &e, &rsa, &rsalen), -EBADMSG);
        REQUIRE(meta_param_set(m, lp, list, listlen) == 0);
        CHECK_EQ_INT(grant_verify(m, VID, root_fp, &e, &rsa, &rsalen), 0);
        free(list);
    }

    /* Promoted again: signs as any dataadmin (restore its name and roles). */
    snprintf(a.name, sizeof a.name, "data");
    a.roles = ROLE_DATAADMIN | ROLE_USER;
    REQUIRE(meta_account_update(m, &a) == 0);
    REQUIRE(registry_certify(m, VID, &a, NULL, admin, admin_id) == 0);
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &forged, &rsa, &rsalen), 0);
    meta_account_clear(&a);
    REQUIRE(meta_envelope_delete(m, f.id, data_id) == 0);
    REQUIRE(meta_envelope_delete(m, f.id, user_id) == 0);
    folder_state_clear(&st);
    folder_state_clear(&late);
    free(raw);
    free(blob);
    free(own.wrapped);
    free(e.wrapped);
    free(forged.wrapped);
}

/* A version 1 grant (made before grants carried their time) still
 * verifies; its time reads as 0.  Version 2 carries the signing time. */
static void test_grant_v1_still_verifies(void)
{
    uint8_t fk[FOLDER_KEY_LEN], h[SHA256_LEN], *rsa_env = NULL, *tbs, *sig = NULL;
    struct meta_folder f = { .key_version = 1, .created = 1 };
    struct meta_envelope own = { 0 }, v1 = { 0 };
    size_t rsa_len = 0, tbslen, siglen = 0, rsalen;
    const uint8_t *rsa;
    int64_t when = -1;
    struct wbuf b;

    REQUIRE(folder_key_generate(fk) == 0);
    REQUIRE(meta_folder_add(m, &f) == 0);
    own.folder_id = v1.folder_id = f.id;
    own.account_id = v1.account_id = data_id;
    own.key_version = v1.key_version = 1;
    own.rights = v1.rights = RIGHT_READ | RIGHT_WRITE | RIGHT_MANAGE;
    REQUIRE(envelope_seal(data, VID, f.id, 1, fk, &own.wrapped, &own.wrapped_len) == 0);
    REQUIRE(grant_sign(data, VID, data_id, &own) == 0);
    CHECK_EQ_INT(grant_envelope_time(own.wrapped, own.wrapped_len, &when), 0);
    CHECK(when > 1700000000 && when <= (int64_t)time(NULL));
    /* the same envelope signed in the version 1 layout */
    REQUIRE(envelope_seal(data, VID, f.id, 1, fk, &rsa_env, &rsa_len) == 0);
    sha256(rsa_env, rsa_len, h);
    wbuf_init(&b);
    wbuf_put_bytes(&b, "PFSG", 4);
    wbuf_put_u8(&b, 1);
    wbuf_put_str(&b, VID);
    wbuf_put_u64(&b, f.id);
    wbuf_put_u64(&b, data_id);
    wbuf_put_u32(&b, 1);
    wbuf_put_u32(&b, v1.rights);
    wbuf_put_u64(&b, data_id);
    wbuf_put_bytes(&b, h, sizeof h);
    tbs = wbuf_steal(&b, &tbslen);
    REQUIRE(tbs && sig_sign(data, tbs, tbslen, &sig, &siglen) == 0);
    wbuf_init(&b);
    wbuf_put_bytes(&b, "PFSG", 4);
    wbuf_put_u8(&b, 1);
    wbuf_put_blob(&b, rsa_env, rsa_len);
    wbuf_put_blob(&b, sig, siglen);
    v1.wrapped = wbuf_steal(&b, &v1.wrapped_len);
    v1.granted_by = data_id;
    REQUIRE(meta_envelope_put(m, &v1) == 0);
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &v1, &rsa, &rsalen), 0);
    CHECK_EQ_INT(grant_envelope_time(v1.wrapped, v1.wrapped_len, &when), 0);
    CHECK_EQ_INT(when, 0);
    /* its rights raised: refused as for version 2 */
    v1.rights = RIGHT_READ;
    CHECK_EQ_INT(grant_verify(m, VID, root_fp, &v1, &rsa, &rsalen), -EBADMSG);
    REQUIRE(meta_envelope_delete(m, f.id, data_id) == 0);
    free(tbs);
    free(sig);
    free(rsa_env);
    free(own.wrapped);
    free(v1.wrapped);
}

/* Codes: text form round trip, case and dashes ignored, junk refused. */
static void test_enrolment_codes(void)
{
    char code[ENROL_CODE_TEXT_MAX], lower[ENROL_CODE_TEXT_MAX];
    uint8_t a[ED25519_PUB_LEN], b[ED25519_PUB_LEN];

    REQUIRE(enrol_code_generate(code) == 0);
    CHECK_EQ_INT(strlen(code), 39);
    for (size_t i = 0, j = 0; i <= strlen(code); i++)
        if (code[i] != '-')
            lower[j++] = (char)(code[i] >= 'A' && code[i] <= 'Z' ? code[i] + 32 : code[i]);
    CHECK_EQ_INT(enrol_code_public(VID, 7, code, a), 0);
    CHECK_EQ_INT(enrol_code_public(VID, 7, lower, b), 0);
    CHECK_MEM(a, b, sizeof a);
    CHECK_EQ_INT(enrol_code_public(VID, 8, code, b), 0);     /* bound to the account */
    CHECK(memcmp(a, b, sizeof a) != 0);
    CHECK_EQ_INT(enrol_code_public(VID, 7, "ABCD-EFGH", b), -EINVAL);
    CHECK_EQ_INT(enrol_code_public(VID, 7, "0000-0000-0000-0000-0000-0000-0000-0000", b), -EINVAL);
}

/* A pending account verifies only as pending; the person's proof under the
 * record's code binds the key; a proof made with another code, for another
 * account, or altered, does not. */
static void test_enrolment_binding(void)
{
    struct meta_account a = { .roles = ROLE_USER, .created = 1 };
    struct registry_record r = { 0 };
    char code[ENROL_CODE_TEXT_MAX], other[ENROL_CODE_TEXT_MAX];
    uint8_t pub[ED25519_PUB_LEN], *proof = NULL, *bad = NULL;
    size_t prooflen = 0, badlen = 0;
    int64_t now = time(NULL);

    snprintf(a.name, sizeof a.name, "pending");
    REQUIRE(meta_account_add(m, &a) == 0);
    REQUIRE(enrol_code_generate(code) == 0 && enrol_code_generate(other) == 0);
    REQUIRE(enrol_code_public(VID, a.id, code, pub) == 0);
    REQUIRE(registry_certify_ex(m, VID, &a, NULL, NULL, pub, now + 3600, admin, admin_id) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, a.id, NULL), -EACCES);
    CHECK_EQ_INT(registry_verify_pending(m, VID, root_fp, a.id, &r), 0);
    CHECK_EQ_INT(r.pubkey_len, 0);
    CHECK(r.has_code && r.code_expires == now + 3600);
    registry_record_clear(&r);

    /* The person enrols with the stranger key. */
    REQUIRE(rsa_public_to_der(stranger, &a.pubkey, &a.pubkey_len) == 0);
    REQUIRE(meta_account_update(m, &a) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, a.id, NULL), -EBADMSG);  /* no proof */
    REQUIRE(enrol_proof_make(VID, a.id, other, "pending", stranger, now, &bad, &badlen) == 0);
    REQUIRE(enrol_proof_store(m, a.id, bad, badlen) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, a.id, NULL), -EBADMSG);  /* wrong code */
    free(bad);
    REQUIRE(enrol_proof_make(VID, a.id + 1, code, "pending", stranger, now, &bad, &badlen) == 0);
    REQUIRE(enrol_proof_store(m, a.id, bad, badlen) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, a.id, NULL), -EBADMSG);  /* other account */
    free(bad);
    REQUIRE(enrol_proof_make(VID, a.id, code, "pending", stranger, now + 7200, &bad,
                             &badlen) == 0);
    REQUIRE(enrol_proof_store(m, a.id, bad, badlen) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, a.id, NULL), -EBADMSG);  /* after expiry */
    REQUIRE(enrol_proof_make(VID, a.id, code, "pending", stranger, now, &proof, &prooflen) == 0);
    REQUIRE(enrol_proof_store(m, a.id, proof, prooflen) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, a.id, &r), 0);
    CHECK(r.enrolled && r.pubkey_len == a.pubkey_len);
    registry_record_clear(&r);
    /* A sysadmin's later change keeps the person's proof as the binding. */
    a.roles = ROLE_USER | ROLE_AUDITOR;
    REQUIRE(meta_account_update(m, &a) == 0);
    REQUIRE(registry_certify(m, VID, &a, NULL, admin, admin_id) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, a.id, &r), 0);
    CHECK(r.enrolled && r.serial == 2);
    registry_record_clear(&r);
    /* The row's key swapped for another one: refused. */
    free(a.pubkey);
    REQUIRE(rsa_public_to_der(user, &a.pubkey, &a.pubkey_len) == 0);
    REQUIRE(meta_account_update(m, &a) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, a.id, NULL), -EBADMSG);
    /* One flipped bit anywhere in the proof: refused. */
    free(a.pubkey);
    REQUIRE(rsa_public_to_der(stranger, &a.pubkey, &a.pubkey_len) == 0);
    REQUIRE(meta_account_update(m, &a) == 0);
    free(bad);
    bad = malloc(prooflen);
    REQUIRE(bad);
    for (size_t i = 0; i < prooflen; i += 97) {
        memcpy(bad, proof, prooflen);
        bad[i] ^= 0x10;
        REQUIRE(enrol_proof_store(m, a.id, bad, prooflen) == 0);
        CHECK(registry_verify(m, VID, root_fp, a.id, NULL) < 0);
    }
    /* A new code (re-enrolment) voids the proof. */
    REQUIRE(enrol_proof_store(m, a.id, proof, prooflen) == 0);
    CHECK_EQ_INT(registry_verify(m, VID, root_fp, a.id, NULL), 0);
    REQUIRE(enrol_code_public(VID, a.id, other, pub) == 0);
    REQUIRE(registry_certify_ex(m, VID, &a, NULL, NULL, pub, now + 3600, admin, admin_id) == 0);
    CHECK(registry_verify(m, VID, root_fp, a.id, NULL) < 0);
    free(bad);
    free(proof);
    meta_account_clear(&a);
}

/* A version 1 record (vaults made before details and codes) still reads
 * and verifies. */
static void test_record_v1(void)
{
    struct registry_record r = { 0 }, got = { 0 };
    struct meta_account a;
    uint8_t *tbs = NULL, *sig = NULL, *rec = NULL;
    size_t tbslen = 0, siglen = 0, reclen = 0;
    struct wbuf w;

    REQUIRE(meta_account_get(m, user_id, &a) == 0);
    r.version = 1;
    r.account_id = user_id;
    snprintf(r.name, sizeof r.name, "%s", a.name);
    snprintf(r.key_name, sizeof r.key_name, "%s", a.name);
    r.roles = a.roles;
    r.serial = 9;
    r.pubkey = a.pubkey;
    r.pubkey_len = a.pubkey_len;
    r.signer_id = data_id;
    REQUIRE(registry_record_encode_tbs(VID, &r, &tbs, &tbslen) == 0);
    REQUIRE(sig_sign(admin, tbs, tbslen, &sig, &siglen) == 0);
    wbuf_init(&w);
    wbuf_put_blob(&w, tbs, tbslen);
    wbuf_put_blob(&w, sig, siglen);
    rec = wbuf_steal(&w, &reclen);
    REQUIRE(registry_record_decode(VID, rec, reclen, &got) == 0);
    CHECK_EQ_INT(got.version, 1);
    CHECK_EQ_INT(got.serial, 9);
    CHECK(!got.has_code && !got.details.full_name[0]);
    free(rec);
    free(tbs);
    free(sig);
    meta_account_clear(&a);
}

static void test_teardown(void)
{
    char p[160];

    meta_close(m);
    EVP_PKEY_free(root);
    EVP_PKEY_free(admin);
    EVP_PKEY_free(data);
    EVP_PKEY_free(user);
    EVP_PKEY_free(stranger);
    for (const char *const *s = (const char *const[]){ "", "-wal", "-shm", NULL }; *s; s++) {
        snprintf(p, sizeof p, "%s%s", dbpath, *s);
        unlink(p);
    }
    CHECK_EQ_INT(rmdir(dbdir), 0);
}

int main(void)
{
    RUN(test_setup);
    RUN(test_roles);
    RUN(test_chain_verifies);
    RUN(test_row_tampering_refused);
    RUN(test_forged_records_refused);
    RUN(test_disabled_signer_and_serial);
    RUN(test_grant_signatures);
    RUN(test_retained_after_demotion);
    RUN(test_grant_v1_still_verifies);
    RUN(test_enrolment_codes);
    RUN(test_enrolment_binding);
    RUN(test_record_v1);
    RUN(test_teardown);
    return tap_done();
}
