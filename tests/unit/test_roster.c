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

/* A change of cur with (id, priv, disabled) signed by signer with attest. */
static int change(uint64_t id, uint32_t priv, int disabled, int required, uint64_t signer,
                  const uint8_t *attest, size_t attest_len)
{
    struct roster cur, next;
    int changed, rc = roster_load(&t, &cur, NULL, NULL);

    if (rc < 0)
        return rc;
    rc = roster_next(&cur, id, priv, disabled, required, &next, &changed);
    if (rc == 0)
        rc = roster_store(&t, &next, key[signer], signer, attest, attest_len);
    roster_clear(&cur);
    roster_clear(&next);
    return rc;
}

static void test_first_step_and_one_sysadmin(void)
{
    struct roster r = { 0 };

    CHECK_EQ_INT(roster_load(&t, &r, NULL, NULL), -ENOENT);
    REQUIRE(roster_next(NULL, 1, ROLE_SYSADMIN, 0, 1, &r, NULL) == 0);
    REQUIRE(roster_set(&r, 3, ROLE_DATAADMIN | ROLE_USER, 0) == 0);
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

static void test_teardown(void)
{
    static const char *const suffix[] = { "", "-wal", "-shm" };
    char path[160];

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
    RUN(test_teardown);
    return tap_done();
}
