/* The signed role roster (src/roster.c): its rules, with keys handed in by
 * a test trust (the registry's part is tested in test_registry and the
 * integration tests). */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "crypto.h"
#include "error.h"
#include "meta.h"
#include "meta_backend.h"
#include "registry.h"
#include "roster.h"
#include "tap.h"

#define VID "0123456789abcdef0123456789abcdef"

static EVP_PKEY *key[4];          /* accounts 1, 2, 3 */
static char dbdir[64], dbpath[128];
static struct meta *m;
static struct roster_trust t;

static int test_key(const struct roster_trust *tr, uint64_t id, EVP_PKEY **pub)
{
    (void)tr;
    if (id < 1 || id > 3)
        return -EBADMSG;
    EVP_PKEY_up_ref(key[id]);
    *pub = key[id];
    return 0;
}

static int test_key_name(const struct roster_trust *tr, uint64_t id, char *out, size_t len)
{
    (void)tr;
    snprintf(out, len, "acct%" PRIu64, id);
    return 0;
}

/* A signed item as cosign.c makes it (cosign.h): "PFSQ" | u8 1 | str vault |
 * str key | str content | u64 signer | i64 time, in blob(tbs) | blob(sig). */
static uint8_t *item(uint64_t signer, const char *k, const char *content, int64_t when,
                     size_t *len)
{
    struct wbuf b;
    uint8_t *tbs, *out = NULL;
    size_t tbslen;

    wbuf_init(&b);
    wbuf_put_bytes(&b, "PFSQ", 4);
    wbuf_put_u8(&b, 1);
    wbuf_put_str(&b, VID);
    wbuf_put_str(&b, k);
    wbuf_put_str(&b, content);
    wbuf_put_u64(&b, signer);
    wbuf_put_u64(&b, (uint64_t)when);
    tbs = wbuf_steal(&b, &tbslen);
    if (!tbs || sig_sign_container(key[signer], tbs, tbslen, &out, len) < 0)
        out = NULL;            /* the change it is for is then refused: a failed check */
    free(tbs);
    return out;
}

/* blob(proposal by a) | blob(confirmation by b) */
static uint8_t *pair(uint64_t a, uint64_t b, const char *k, const char *content, int64_t when,
                     size_t *len)
{
    size_t la, lb;
    uint8_t *ia = item(a, k, content, when, &la), *ib = item(b, k, content, when, &lb), *out;
    struct wbuf w;

    wbuf_init(&w);
    wbuf_put_blob(&w, ia, la);
    wbuf_put_blob(&w, ib, lb);
    out = wbuf_steal(&w, len);
    free(ia);
    free(ib);
    return out;
}

static void test_setup(void)
{
    for (int i = 1; i <= 3; i++)
        REQUIRE((key[i] = rsa_generate(3072)) != NULL);
    snprintf(dbdir, sizeof dbdir, "/tmp/test_roster.XXXXXX");
    REQUIRE(mkdtemp(dbdir));
    snprintf(dbpath, sizeof dbpath, "%s/meta.db", dbdir);
    REQUIRE(meta_open_sqlite(dbpath, 1, &m) == 0);
    /* the registry's decoding of signed items, test keys and names */
    registry_roster_trust(&t, m, VID, NULL);
    t.key = test_key;
    t.key_name = test_key_name;
}

/* The next step of the current roster with (id, priv, disabled) and,
 * key_id not 0, fp bound as key_id's key, signed by signer with attest. */
static int next_step(uint64_t id, uint32_t priv, int disabled, int required, uint64_t key_id,
                     const uint8_t *fp, uint64_t signer, const uint8_t *attest,
                     size_t attest_len)
{
    struct roster cur, next;
    int changed, rc = roster_load(&t, &cur, NULL, NULL);

    if (rc < 0)
        return rc;
    rc = roster_next(&cur, id, priv, disabled, required, &next, &changed);
    if (rc == 0)
        rc = roster_bind_keys(&t, &cur, &next);
    if (rc == 0 && key_id)
        rc = roster_set_key(&next, key_id, fp);
    if (rc == 0)
        rc = roster_store(&t, &next, key[signer], signer, attest, attest_len);
    roster_clear(&cur);
    roster_clear(&next);
    return rc;
}

/* A change of cur with (id, priv, disabled) signed by signer with attest. */
static int change(uint64_t id, uint32_t priv, int disabled, int required, uint64_t signer,
                  const uint8_t *attest, size_t attest_len)
{
    return next_step(id, priv, disabled, required, 0, NULL, signer, attest, attest_len);
}

static void test_first_step_and_one_sysadmin(void)
{
    struct roster r = { 0 };

    CHECK_EQ_INT(roster_load(&t, &r, NULL, NULL), -ENOENT);
    REQUIRE(roster_next(NULL, 1, ROLE_SYSADMIN, 0, 1, &r, NULL) == 0);
    REQUIRE(roster_set(&r, 3, ROLE_DATAADMIN | ROLE_USER, 0) == 0);
    REQUIRE(roster_bind_keys(&t, NULL, &r) == 0);
    /* signed by an account that is no sysadmin in it: refused, nothing stored */
    CHECK(roster_store(&t, &r, key[3], 3, NULL, 0) == -EBADMSG);
    CHECK(meta_param_get(m, ROSTER_PARAM, &(uint8_t *){ NULL }, &(size_t){ 0 }) == -ENOENT);
    CHECK_EQ_INT(roster_store(&t, &r, key[1], 1, NULL, 0), 0);
    roster_clear(&r);
    REQUIRE(roster_load(&t, &r, NULL, NULL) == 0);
    CHECK(r.counter == 1 && r.n == 2 && roster_sysadmins(&r) == 1);
    CHECK_EQ_INT(roster_agrees(&r, 3, "data", ROLE_DATAADMIN | ROLE_USER, 0), 0);
    CHECK_EQ_INT(roster_agrees(&r, 3, "data", ROLE_USER, 0), -EBADMSG);      /* taken away */
    CHECK_EQ_INT(roster_agrees(&r, 3, "data", ROLE_DATAADMIN, 1), -EBADMSG); /* disabled */
    CHECK_EQ_INT(roster_agrees(&r, 2, "bob", ROLE_USER, 0), 0);
    CHECK_EQ_INT(roster_agrees(&r, 2, "bob", ROLE_DATAADMIN, 0), -EBADMSG);  /* given */
    roster_clear(&r);
    /* one sysadmin: it adds a second alone */
    CHECK_EQ_INT(change(2, ROLE_SYSADMIN, 0, -1, 1, NULL, 0), 0);
}

/* The time of a co-signature made now: it must not be older than the roster
 * step it builds on (a proposal made before its step is an old one put back),
 * and steps are stamped when signed, which takes seconds under ASan. */
static int64_t now(void)
{
    return (int64_t)time(NULL);
}

static void test_two_sysadmins_need_both(void)
{
    struct roster r = { 0 };
    uint8_t *att, *raw = NULL;
    size_t alen, rawlen = 0;

    /* alone: taking the dataadmin role, disabling the other sysadmin */
    CHECK_EQ_INT(change(3, ROLE_USER, 0, -1, 1, NULL, 0), -EBADMSG);
    CHECK_EQ_INT(change(2, ROLE_SYSADMIN, 1, -1, 1, NULL, 0), -EBADMSG);
    CHECK_EQ_INT(change(0, 0, 0, 0, 1, NULL, 0), -EBADMSG);        /* the setting off */
    /* its own item twice */
    att = pair(1, 1, "role.3", "roles=0x8 serial=4 roster=2", now(), &alen);
    CHECK_EQ_INT(change(3, ROLE_USER, 0, -1, 1, att, alen), -EBADMSG);
    free(att);
    /* a co-signature about another change */
    att = pair(1, 2, "role.3", "roles=0x8 serial=4 roster=2", now(), &alen);
    CHECK_EQ_INT(change(2, ROLE_SYSADMIN, 1, -1, 1, att, alen), -EBADMSG);
    /* the right one */
    CHECK_EQ_INT(change(3, ROLE_USER, 0, -1, 1, att, alen), 0);
    REQUIRE(roster_load(&t, &r, &raw, &rawlen) == 0);
    CHECK(r.counter == 3 && !roster_find(&r, 3));
    roster_clear(&r);
    /* a co-signature made on an earlier step, to give the role back: it
     * names that step */
    free(att);
    att = pair(1, 2, "role.3", "roles=0xa serial=4 roster=2", now(), &alen);
    CHECK_EQ_INT(change(3, ROLE_DATAADMIN | ROLE_USER, 0, -1, 1, att, alen), -EBADMSG);
    free(att);
    /* a re-signed step without a change needs one signature */
    CHECK_EQ_INT(change(0, 0, 0, -1, 2, NULL, 0), 0);
    /* disabling the other sysadmin: with the disable item of both */
    att = pair(2, 1, "disable.2", "disabled=0 serial=5 roster=4", now(), &alen);
    CHECK_EQ_INT(change(2, ROLE_SYSADMIN, 1, -1, 1, att, alen), -EBADMSG);   /* says enable */
    free(att);
    att = pair(2, 1, "disable.2", "disabled=1 serial=5 roster=4", now(), &alen);
    CHECK_EQ_INT(change(2, ROLE_SYSADMIN, 1, -1, 1, att, alen), 0);
    free(att);
    /* now one enabled sysadmin: it acts alone, the disabled one not at all */
    CHECK_EQ_INT(change(3, ROLE_DATAADMIN, 0, -1, 2, NULL, 0), -EBADMSG);
    CHECK_EQ_INT(change(3, ROLE_DATAADMIN, 0, -1, 1, NULL, 0), 0);
    free(raw);
}

static void test_history_and_anchor(void)
{
    struct roster r = { 0 }, old = { 0 };
    uint8_t *cur = NULL, *first = NULL;
    size_t curlen = 0, firstlen = 0;

    REQUIRE(roster_load(&t, &r, &cur, &curlen) == 0);
    REQUIRE(meta_param_get(m, ROSTER_PARAM ".1", &first, &firstlen) == 0);
    REQUIRE(roster_decode(VID, first, firstlen, &old) == 0);
    /* the anchor at step 1: every step since follows by the rules */
    CHECK_EQ_INT(roster_check_anchor(&t, &r, 1, old.hash, "test"), 0);
    CHECK_EQ_INT(roster_check_anchor(&t, &r, r.counter, r.hash, "test"), 0);
    CHECK_EQ_INT(roster_check_anchor(&t, &r, r.counter + 1, r.hash, "test"), -ESTALE);
    CHECK_EQ_INT(roster_check_anchor(&t, &r, r.counter, old.hash, "test"), -ESTALE);
    roster_clear(&old);   /* roster_load below fills it from empty */
    /* step 1 put back as the current one: the history holds newer steps */
    REQUIRE(meta_param_set(m, ROSTER_PARAM, first, firstlen) == 0);
    CHECK_EQ_INT(roster_load(&t, &old, NULL, NULL), -EBADMSG);
    REQUIRE(meta_param_set(m, ROSTER_PARAM, cur, curlen) == 0);
    /* an altered byte anywhere */
    cur[curlen / 2] ^= 1;
    REQUIRE(meta_param_set(m, ROSTER_PARAM, cur, curlen) == 0);
    CHECK(roster_load(&t, &old, NULL, NULL) < 0);
    cur[curlen / 2] ^= 1;
    REQUIRE(meta_param_set(m, ROSTER_PARAM, cur, curlen) == 0);
    CHECK_EQ_INT(roster_load(&t, &old, NULL, NULL), 0);
    roster_clear(&old);
    roster_clear(&r);
    free(cur);
    free(first);
}

/* A stored step of format version (1: no key field) as a build of that
 * format (or a forger) writes it: entries (id, priv, disabled, fp). */
static uint8_t *hand_step(uint8_t version, uint64_t counter, const uint8_t prev[SHA256_LEN],
                          const struct roster_entry *e, size_t n, uint64_t signer, size_t *len)
{
    struct wbuf b;
    uint8_t *tbs, *sig = NULL, *out;
    size_t tbslen, siglen = 0;

    wbuf_init(&b);
    wbuf_put_bytes(&b, "PFRS", 4);
    wbuf_put_u8(&b, version);
    wbuf_put_str(&b, VID);
    wbuf_put_u64(&b, counter);
    wbuf_put_bytes(&b, prev, SHA256_LEN);
    wbuf_put_u64(&b, (uint64_t)time(NULL));
    wbuf_put_u8(&b, 1);
    wbuf_put_u32(&b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        wbuf_put_u64(&b, e[i].id);
        wbuf_put_u32(&b, e[i].priv);
        wbuf_put_u8(&b, e[i].disabled);
        if (version >= 2)
            wbuf_put_bytes(&b, e[i].fp, SHA256_LEN);
    }
    tbs = wbuf_steal(&b, &tbslen);
    if (!tbs || sig_sign(key[signer], tbs, tbslen, &sig, &siglen) < 0) {
        free(tbs);
        return NULL;           /* the step is then missing: the checks on it fail */
    }
    wbuf_init(&b);
    wbuf_put_blob(&b, tbs, tbslen);
    wbuf_put_u64(&b, signer);
    wbuf_put_blob(&b, sig, siglen);
    wbuf_put_blob(&b, "", 0);
    out = wbuf_steal(&b, len);
    free(tbs);
    free(sig);
    return out;
}

static int der_of(EVP_PKEY *k, uint8_t **der, size_t *len)
{
    return rsa_public_to_der(k, der, len);
}

/* The next step of the current roster binding fp as id's key, signed by
 * signer with attest. */
static int key_change(uint64_t id, const uint8_t fp[SHA256_LEN], uint64_t signer,
                      const uint8_t *attest, size_t attest_len)
{
    return next_step(0, 0, 0, -1, id, fp, signer, attest, attest_len);
}

/* Format 2: each entry binds its account's key; while the roster needs two
 * sysadmins a new key is a co-signed change, and an account (or signer)
 * whose registry key is not the bound one is refused. */
static void test_v2_binds_keys_and_a_new_key_needs_two(void)
{
    struct roster r = { 0 };
    uint8_t fp1[SHA256_LEN], fpn[SHA256_LEN], fp[SHA256_LEN], *der = NULL, *der_old = NULL;
    uint8_t *att, *raw = NULL;
    size_t derlen = 0, der_oldlen = 0, alen, rawlen = 0;
    uint64_t stale = 0, step;
    char content[160], hex[2 * SHA256_LEN + 1];
    EVP_PKEY *old2;

    REQUIRE(roster_load(&t, &r, &raw, &rawlen) == 0);
    REQUIRE(rsa_fingerprint(key[1], fp1) == 0);
    CHECK(r.version == 2 && roster_find(&r, 1) && !memcmp(roster_find(&r, 1)->fp, fp1, SHA256_LEN));
    /* decoding the stored bytes gives the same entries (45 bytes each) */
    {
        struct roster d = { 0 };

        REQUIRE(roster_decode(VID, raw, rawlen, &d) == 0);
        CHECK(d.n == r.n && d.version == 2 && !memcmp(d.e, r.e, r.n * sizeof *r.e));
        roster_clear(&d);
    }
    free(raw);
    roster_clear(&r);
    /* two sysadmins again (1 alone enables 2), then 3 made one, co-signed */
    CHECK_EQ_INT(change(2, ROLE_SYSADMIN, 0, -1, 1, NULL, 0), 0);
    REQUIRE(roster_load(&t, &r, NULL, NULL) == 0);
    CHECK(roster_sysadmins(&r) == 2 && roster_needs_two(&r));
    snprintf(content, sizeof content, "roles=0x1 roster=%" PRIu64, r.counter);
    att = pair(1, 2, "role.3", content, now(), &alen);
    roster_clear(&r);
    CHECK_EQ_INT(change(3, ROLE_SYSADMIN, 0, -1, 1, att, alen), 0);
    free(att);

    /* account 2 enrolled anew: the registry names another key (its
     * re-enrolment re-signs the current step, which its old key co-signed) */
    CHECK_EQ_INT(change(0, 0, 0, -1, 1, NULL, 0), 0);
    REQUIRE(der_of(key[2], &der_old, &der_oldlen) == 0);
    old2 = key[2];
    REQUIRE((key[2] = rsa_generate(3072)) != NULL);
    REQUIRE(der_of(key[2], &der, &derlen) == 0);
    REQUIRE(rsa_fingerprint(key[2], fpn) == 0);
    REQUIRE(roster_load(&t, &r, NULL, NULL) == 0);
    step = r.counter;
    CHECK_EQ_INT(roster_key_agrees(&r, 2, "two", der_old, der_oldlen), 0);
    CHECK_EQ_INT(roster_key_agrees(&r, 2, "two", der, derlen), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "not the one the signed role roster binds") &&
          strstr(pfs_err_msg(), "cosign-endorse"));
    CHECK_EQ_INT(roster_key_agrees(&r, 2, "two", NULL, 0), 0);       /* pending: signs nothing */
    CHECK(roster_stale_key(&t, &r, &stale, fp) == 1 && stale == 2 &&
          !memcmp(fp, fpn, SHA256_LEN));
    roster_clear(&r);
    /* the new key signs no step, not even one without a change */
    CHECK_EQ_INT(change(0, 0, 0, -1, 2, NULL, 0), -EBADMSG);
    /* bound by one sysadmin alone: refused */
    CHECK_EQ_INT(key_change(2, fpn, 1, NULL, 0), -EBADMSG);
    /* with the new key as the second signature: refused (it is not bound) */
    hex_encode(fpn, SHA256_LEN, hex);
    snprintf(content, sizeof content, "fp=%s roster=%" PRIu64, hex, step);
    att = pair(1, 2, "key.2", content, now(), &alen);
    CHECK_EQ_INT(key_change(2, fpn, 1, att, alen), -EBADMSG);
    free(att);
    /* two bound sysadmins, but a co-signature naming another key */
    att = pair(1, 3, "key.2", "fp=00 roster=0", now(), &alen);
    CHECK_EQ_INT(key_change(2, fpn, 1, att, alen), -EBADMSG);
    free(att);
    /* ... or a role co-signature for a key change */
    snprintf(content, sizeof content, "roles=0x1 roster=%" PRIu64, step);
    att = pair(1, 3, "role.2", content, now(), &alen);
    CHECK_EQ_INT(key_change(2, fpn, 1, att, alen), -EBADMSG);
    free(att);
    /* the key change with two bound sysadmins' co-signature */
    snprintf(content, sizeof content, "fp=%s roster=%" PRIu64, hex, step);
    att = pair(3, 1, "key.2", content, now(), &alen);
    CHECK_EQ_INT(key_change(2, fpn, 1, att, alen), 0);
    free(att);
    REQUIRE(roster_load(&t, &r, NULL, NULL) == 0);
    CHECK_EQ_INT(roster_key_agrees(&r, 2, "two", der, derlen), 0);
    CHECK_EQ_INT(roster_key_agrees(&r, 2, "two", der_old, der_oldlen), -EBADMSG);
    CHECK(roster_stale_key(&t, &r, &stale, fp) == 0);
    roster_clear(&r);
    /* and it signs again */
    CHECK_EQ_INT(change(0, 0, 0, -1, 2, NULL, 0), 0);
    EVP_PKEY_free(old2);
    free(der);
    free(der_old);
}

/* A roster of format 1 (a vault of an older build): read; the first step
 * the new build writes is format 2 and binds the registry's keys without a
 * co-signature; a format 1 step after a format 2 one, and a format newer
 * than this build, are refused. */
static void test_v1_roster_migrates_and_no_downgrade(void)
{
    struct roster r = { 0 }, next = { 0 };
    struct roster_entry e[3] = { { .id = 1, .priv = ROLE_SYSADMIN },
                                 { .id = 2, .priv = ROLE_SYSADMIN },
                                 { .id = 3, .priv = ROLE_DATAADMIN } };
    uint8_t zero[SHA256_LEN] = { 0 }, *raw, *v1next, *v3;
    size_t len, nlen, v3len;
    uint8_t fp[SHA256_LEN];
    struct meta *keep = m;
    char path2[160];

    /* a vault of its own */
    snprintf(path2, sizeof path2, "%s/meta2.db", dbdir);
    REQUIRE(meta_open_sqlite(path2, 1, &m) == 0);
    t.m = m;
    /* step 1: one sysadmin and a dataadmin; step 2: it adds a second */
    {
        struct roster_entry one[2] = { e[0], e[2] };
        uint8_t h[SHA256_LEN];

        raw = hand_step(1, 1, zero, one, 2, 1, &len);
        REQUIRE(raw && meta_param_set(m, ROSTER_PARAM ".1", raw, len) == 0);
        sha256(raw, len, h);
        free(raw);
        raw = hand_step(1, 2, h, e, 3, 1, &len);
        REQUIRE(raw && meta_param_set(m, ROSTER_PARAM ".2", raw, len) == 0);
        REQUIRE(meta_param_set(m, ROSTER_PARAM, raw, len) == 0);
        free(raw);
    }
    REQUIRE(roster_load(&t, &r, NULL, NULL) == 0);
    CHECK(r.version == 1 && r.n == 3 && roster_sysadmins(&r) == 2 && roster_needs_two(&r));
    CHECK(!memcmp(r.e[0].fp, zero, SHA256_LEN));
    /* format 1 binds no key: any key of a listed account agrees */
    {
        uint8_t *der = NULL;
        size_t derlen = 0;

        REQUIRE(der_of(key[3], &der, &derlen) == 0);
        CHECK_EQ_INT(roster_key_agrees(&r, 2, "two", der, derlen), 0);
        free(der);
    }
    /* the migration: format 2 with the registry's keys, one signature */
    REQUIRE(roster_next(&r, 0, 0, 0, -1, &next, NULL) == 0);
    REQUIRE(roster_bind_keys(&t, &r, &next) == 0);
    CHECK_EQ_INT((int)roster_changes(&r, &next), 0);
    CHECK_EQ_INT(roster_store(&t, &next, key[1], 1, NULL, 0), 0);
    roster_clear(&next);
    roster_clear(&r);
    REQUIRE(roster_load(&t, &r, NULL, NULL) == 0);
    REQUIRE(rsa_fingerprint(key[2], fp) == 0);
    CHECK(r.version == 2 && r.counter == 3 && !memcmp(roster_find(&r, 2)->fp, fp, SHA256_LEN));
    /* now a new key of 2 is a change: one sysadmin alone is refused */
    REQUIRE(roster_next(&r, 0, 0, 0, -1, &next, NULL) == 0);
    REQUIRE(roster_set_key(&next, 2, zero) == 0);
    CHECK_EQ_INT((int)roster_changes(&r, &next), 1);
    CHECK_EQ_INT(roster_store(&t, &next, key[1], 1, NULL, 0), -EBADMSG);
    roster_clear(&next);
    /* a format 1 step written after it (a downgrade to escape the keys) */
    v1next = hand_step(1, 4, r.hash, e, 3, 1, &nlen);
    REQUIRE(v1next && meta_param_set(m, ROSTER_PARAM, v1next, nlen) == 0);
    REQUIRE(meta_param_set(m, ROSTER_PARAM ".4", v1next, nlen) == 0);
    CHECK_EQ_INT(roster_load(&t, &next, NULL, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "format version 1 after a step of version 2") != NULL);
    free(v1next);
    /* a format this build does not know: refused, saying so */
    v3 = hand_step(3, 4, r.hash, e, 3, 1, &v3len);
    CHECK(v3 && roster_decode(VID, v3, v3len, &next) == -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "format version 3") && strstr(pfs_err_msg(), "newer pactfs"));
    free(v3);
    roster_clear(&r);
    meta_close(m);
    unlink(path2);
    m = keep;
    t.m = m;
}

static void test_teardown(void)
{
    static const char *const suffix[] = { "", "-wal", "-shm" };
    char path[160];

    for (size_t i = 1; i < sizeof suffix / sizeof *suffix; i++) {
        snprintf(path, sizeof path, "%s/meta2.db%s", dbdir, suffix[i]);
        unlink(path);
    }

    meta_close(m);
    for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
        snprintf(path, sizeof path, "%s%s", dbpath, suffix[i]);
        unlink(path);
    }
    rmdir(dbdir);
    for (int i = 1; i <= 3; i++)
        EVP_PKEY_free(key[i]);
}

int main(void)
{
    RUN(test_setup);
    RUN(test_first_step_and_one_sysadmin);
    RUN(test_two_sysadmins_need_both);
    RUN(test_history_and_anchor);
    RUN(test_v2_binds_keys_and_a_new_key_needs_two);
    RUN(test_v1_roster_migrates_and_no_downgrade);
    RUN(test_teardown);
    return tap_done();
}
