#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "error.h"
#include "roster.h"

#define MAGIC "PFRS"
#define ROSTER_VERSION 2           /* v1 (no key fingerprints) is read, never written */
#define MAX_ENTRIES 20000u
#define ENTRY_LEN_V1 (8 + 4 + 1)
#define ENTRY_LEN (ENTRY_LEN_V1 + SHA256_LEN)
#define MAX_TBS (64u + (unsigned)ENTRY_LEN * MAX_ENTRIES + 256u)

static const uint8_t no_key[SHA256_LEN];

void roster_clear(struct roster *r)
{
    free(r->e);
    memset(r, 0, sizeof *r);
}

/* ---- encoding */

static void put_entries(struct wbuf *b, const struct roster *r)
{
    wbuf_put_u8(b, r->required);
    wbuf_put_u32(b, (uint32_t)r->n);
    for (size_t i = 0; i < r->n; i++) {
        wbuf_put_u64(b, r->e[i].id);
        wbuf_put_u32(b, r->e[i].priv);
        wbuf_put_u8(b, r->e[i].disabled);
        if (r->version >= 2)
            wbuf_put_bytes(b, r->e[i].fp, SHA256_LEN);
    }
}

static uint8_t *encode_tbs(const char *vault_id, const struct roster *r, size_t *len)
{
    struct wbuf b;

    wbuf_init(&b);
    wbuf_put_bytes(&b, MAGIC, 4);
    wbuf_put_u8(&b, r->version);
    wbuf_put_str(&b, vault_id);
    wbuf_put_u64(&b, r->counter);
    wbuf_put_bytes(&b, r->prev, SHA256_LEN);
    wbuf_put_u64(&b, (uint64_t)r->time);
    put_entries(&b, r);
    return wbuf_steal(&b, len);
}

void roster_entries_hex(const struct roster *r, char out[2 * SHA256_LEN + 1])
{
    struct wbuf b;
    uint8_t *p, h[SHA256_LEN] = { 0 };
    size_t len = 0;

    wbuf_init(&b);
    put_entries(&b, r);
    p = wbuf_steal(&b, &len);
    if (p)
        sha256(p, len, h);
    free(p);
    hex_encode(h, SHA256_LEN, out);
}

/* The parts of a stored step; tbs, sig, attest point into raw. */
struct step {
    const uint8_t *tbs, *sig, *attest;
    size_t tbslen, siglen, attestlen;
};

static int decode(const char *vault_id, const uint8_t *raw, size_t len, struct roster *r,
                  struct step *s)
{
    const uint8_t *magic, *vid, *prev;
    size_t vidlen;
    uint64_t t = 0;
    uint32_t n = 0;
    uint8_t version = 0;
    struct rbuf b, q;

    memset(r, 0, sizeof *r);
    rbuf_init(&b, raw, len);
    rbuf_get_blob(&b, &s->tbs, &s->tbslen, MAX_TBS);
    rbuf_get_u64(&b, &r->signer);
    rbuf_get_blob(&b, &s->sig, &s->siglen, 1024);
    rbuf_get_blob(&b, &s->attest, &s->attestlen, 32768);
    if (rbuf_end(&b) < 0)
        return pfs_err(-EBADMSG, "the signed role roster is malformed");
    rbuf_init(&q, s->tbs, s->tbslen);
    rbuf_get_ref(&q, &magic, 4);
    rbuf_get_u8(&q, &version);
    rbuf_get_blob(&q, &vid, &vidlen, 64);
    rbuf_get_u64(&q, &r->counter);
    rbuf_get_ref(&q, &prev, SHA256_LEN);
    rbuf_get_u64(&q, &t);
    rbuf_get_u8(&q, &r->required);
    rbuf_get_u32(&q, &n);
    if (!q.err && !memcmp(magic, MAGIC, 4) && version > ROSTER_VERSION)
        return pfs_err(-EBADMSG, "the signed role roster is of format version %u and this "
                       "build reads versions 1 to %u: a newer pactfs wrote it; update pactfs "
                       "on this workstation (it must not guess what the newer roster binds)",
                       version, ROSTER_VERSION);
    if (q.err || memcmp(magic, MAGIC, 4) || !version || !r->counter || n > MAX_ENTRIES ||
        (size_t)n * (version >= 2 ? ENTRY_LEN : ENTRY_LEN_V1) != rbuf_remaining(&q))
        return pfs_err(-EBADMSG, "the signed role roster is malformed or of an unknown "
                       "version");
    r->version = version;
    if (vidlen != strlen(vault_id) || memcmp(vid, vault_id, vidlen))
        return pfs_err(-EBADMSG, "the signed role roster names another vault");
    memcpy(r->prev, prev, SHA256_LEN);
    r->time = (int64_t)t;
    r->e = calloc(n + 1u, sizeof *r->e);
    if (!r->e)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        rbuf_get_u64(&q, &r->e[i].id);
        rbuf_get_u32(&q, &r->e[i].priv);
        rbuf_get_u8(&q, &r->e[i].disabled);
        if (version >= 2) {
            const uint8_t *fp = NULL;

            rbuf_get_ref(&q, &fp, SHA256_LEN);
            if (fp)
                memcpy(r->e[i].fp, fp, SHA256_LEN);
        }
        if (q.err || (i && r->e[i - 1].id >= r->e[i].id) || !r->e[i].priv ||
            (r->e[i].priv & ~ROSTER_PRIV)) {
            roster_clear(r);
            return pfs_err(-EBADMSG, "the signed role roster's entries are malformed");
        }
    }
    r->n = n;
    sha256(raw, len, r->hash);
    return 0;
}

int roster_decode(const char *vault_id, const uint8_t *raw, size_t len, struct roster *r)
{
    struct step s;

    return decode(vault_id, raw, len, r, &s);
}

const struct roster_entry *roster_find(const struct roster *r, uint64_t id)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->e[i].id == id)
            return &r->e[i];
    return NULL;
}

/* Version 2: an entry binds its account's key (all zero: none yet). */
static int has_key(const struct roster *r, const struct roster_entry *e)
{
    return r->version < 2 || memcmp(e->fp, no_key, SHA256_LEN);
}

unsigned roster_sysadmins(const struct roster *r)
{
    unsigned n = 0;

    for (size_t i = 0; i < r->n; i++)
        if ((r->e[i].priv & ROLE_SYSADMIN) && !r->e[i].disabled && has_key(r, &r->e[i]))
            n++;
    return n;
}

int roster_needs_two(const struct roster *r)
{
    return r->required && roster_sysadmins(r) >= 2;
}

static int need_two(const struct roster *rules)
{
    return roster_needs_two(rules);
}

static void fp_hex(const uint8_t fp[SHA256_LEN], char out[2 * SHA256_LEN + 1])
{
    if (memcmp(fp, no_key, SHA256_LEN))
        hex_encode(fp, SHA256_LEN, out);
    else
        snprintf(out, 2 * SHA256_LEN + 1, "none");
}

/* The key of (a version 2 roster that needs two sysadmins) must be the one
 * the roster binds for e; a roster that does not need two binds nothing
 * that one sysadmin could not change alone anyway. */
static int key_bound(const struct roster *r, const struct roster_entry *e, EVP_PKEY *pub)
{
    uint8_t fp[SHA256_LEN];

    if (r->version < 2 || !need_two(r))
        return 0;
    if (rsa_fingerprint(pub, fp) < 0)
        return -EBADMSG;
    return crypto_memcmp(fp, e->fp, SHA256_LEN) ? -EKEYREJECTED : 0;
}

/* ---- verification */

/* id is an enabled sysadmin of rules and pub (malloc'd) its key as its
 * registry record verifies now. */
static int sysadmin_key(const struct roster_trust *t, const struct roster *rules, uint64_t id,
                        EVP_PKEY **pub)
{
    const struct roster_entry *e = roster_find(rules, id);

    int rc;

    *pub = NULL;
    if (!e || !(e->priv & ROLE_SYSADMIN) || e->disabled)
        return pfs_err(-EBADMSG, "account %" PRIu64 " is not an enabled sysadmin in roster "
                       "step %" PRIu64, id, rules->counter);
    rc = t->key(t, id, pub);
    if (rc == 0 && key_bound(rules, e, *pub) < 0) {
        char hex[2 * SHA256_LEN + 1];

        EVP_PKEY_free(*pub);
        *pub = NULL;
        fp_hex(e->fp, hex);
        rc = pfs_err(-EBADMSG, "sysadmin %" PRIu64 " signs with a key roster step %" PRIu64
                     " does not bind (it binds %s): a new key of a sysadmin counts once two "
                     "sysadmins confirmed it", id, rules->counter, hex);
    }
    return rc;
}

struct change {
    unsigned n;             /* how many entries changed (+1 for the setting) */
    uint64_t id;            /* the (last) account changed */
    uint32_t priv;          /* its privileged roles now (0: no longer listed) */
    int disabled, added, setting;
    int key;                /* the change is of the key it binds (fp: the new one) */
    uint8_t fp[SHA256_LEN];
};

static void diff(const struct roster *a, const struct roster *b, struct change *c)
{
    size_t i = 0, j = 0;

    memset(c, 0, sizeof *c);
    while (i < a->n || j < b->n) {
        if (j == b->n || (i < a->n && a->e[i].id < b->e[j].id)) {
            c->n++, c->id = a->e[i].id, c->priv = 0, c->disabled = a->e[i].disabled;
            c->added = 0;
            i++;
        } else if (i == a->n || b->e[j].id < a->e[i].id) {
            c->n++, c->id = b->e[j].id, c->priv = b->e[j].priv, c->disabled = b->e[j].disabled;
            c->added = 1;
            j++;
        } else {
            if (a->e[i].priv != b->e[j].priv || a->e[i].disabled != b->e[j].disabled) {
                c->n++, c->id = b->e[j].id, c->priv = b->e[j].priv;
                c->disabled = b->e[j].disabled, c->added = 0, c->key = 0;
            }
            /* a key bound anew (both steps of version 2; the first step of
             * version 2 after version 1 binds what the registry names) */
            if (a->version >= 2 && b->version >= 2 && memcmp(a->e[i].fp, b->e[j].fp, SHA256_LEN)) {
                c->n++, c->id = b->e[j].id, c->priv = b->e[j].priv;
                c->disabled = b->e[j].disabled, c->added = 0, c->key = 1;
                memcpy(c->fp, b->e[j].fp, SHA256_LEN);
            }
            i++, j++;
        }
    }
    if (a->required != b->required) {
        c->n++;
        c->setting = 1;
    }
}

/* Does the co-signed item (key, content) describe the change c from
 * prev to cur? */
static int item_describes(const struct roster_trust *t, const struct roster *prev, const struct roster *cur,
                          const struct change *c, const char *key, const char *content)
{
    unsigned mask = 0;
    uint64_t id = 0;
    int d = -1;
    char hex[2 * SHA256_LEN + 1], want[2 * SHA256_LEN + 16];

    if (!prev) {
        roster_entries_hex(cur, hex);
        snprintf(want, sizeof want, "entries=%s", hex);
        return !strcmp(key, ROSTER_GENESIS_KEY) && !strcmp(content, want);
    }
    if (c->n != 1)
        return 0;
    /* bound to the step it builds on: an earlier co-signature does not fit */
    {
        const char *at = strstr(content, " roster=");
        uint64_t on = 0;

        if (!at || sscanf(at, " roster=%" SCNu64, &on) != 1 || on != prev->counter)
            return 0;
    }
    if (c->setting)
    {
        const char *req = cur->required ? "required=yes " : "required=no ";

        return !strcmp(key, "policy.cosign.change") && !strncmp(content, req, strlen(req));
    }
    if (sscanf(key, "key.%" SCNu64, &id) == 1) {
        char want_fp[2 * SHA256_LEN + 1], fp[2 * SHA256_LEN + 1] = "";

        fp_hex(c->fp, want_fp);
        return c->key && id == c->id && sscanf(content, "fp=%64[0-9a-fnoe]", fp) == 1 &&
               !strcmp(fp, want_fp);
    }
    if (c->key)
        return 0;
    if (sscanf(key, "role.%" SCNu64, &id) == 1)
        return id == c->id && sscanf(content, "roles=0x%x", &mask) == 1 &&
               (mask & ROSTER_PRIV) == c->priv;
    if (sscanf(key, "disable.%" SCNu64, &id) == 1) {
        const struct roster_entry *was = roster_find(prev, id);

        return id == c->id && sscanf(content, "disabled=%d", &d) == 1 && was &&
               was->priv == c->priv && d == c->disabled;
    }
    if (!strncmp(key, "add.", 4) && c->added) {
        char name[130];
        int ok = t->key_name(t, c->id, name, sizeof name) == 0 && !strcmp(name, key + 4) &&
                 sscanf(content, "roles=0x%x", &mask) == 1 && (mask & ROSTER_PRIV) == c->priv;

        pfs_err_clear();
        return ok;
    }
    return 0;
}

/* The co-signature: two items (registry.h) by two different enabled
 * sysadmins of rules, one of them signer, describing the change. */
static int cosigned(const struct roster_trust *t, const struct roster *rules, const struct roster *prev,
                    const struct roster *cur, const struct change *c, const struct step *s)
{
    struct roster_item it[2];
    const uint8_t *p[2], *tbs, *sig;
    size_t n[2], tbslen, siglen;
    struct rbuf b;
    int by_signer = 0;

    rbuf_init(&b, s->attest, s->attestlen);
    rbuf_get_blob(&b, &p[0], &n[0], 8192);
    rbuf_get_blob(&b, &p[1], &n[1], 8192);
    if (!s->attestlen || rbuf_end(&b) < 0)
        return pfs_err(-EBADMSG, "roster step %" PRIu64 " changes the privileged roles but "
                       "carries no second sysadmin's co-signature", cur->counter);
    for (int i = 0; i < 2; i++) {
        EVP_PKEY *pub = NULL;
        int rc = t->item(t, p[i], n[i], &it[i], &tbs, &tbslen, &sig, &siglen);

        if (rc == 0)
            rc = sysadmin_key(t, rules, it[i].signer, &pub);
        if (rc == 0 && sig_verify(pub, tbs, tbslen, sig, siglen) < 0)
            rc = -EBADMSG;
        EVP_PKEY_free(pub);
        if (rc < 0)
            return pfs_err(-EBADMSG, "the co-signature of roster step %" PRIu64 " does not "
                           "verify", cur->counter);
        by_signer |= it[i].signer == cur->signer;
    }
    if (it[0].signer == it[1].signer || !by_signer || strcmp(it[0].key, it[1].key) ||
        strcmp(it[0].content, it[1].content))
        return pfs_err(-EBADMSG, "the co-signature of roster step %" PRIu64 " is not two "
                       "different sysadmins' (one of them its signer)", cur->counter);
    if (!item_describes(t, prev, cur, c, it[0].key, it[0].content))
        return pfs_err(-EBADMSG, "the co-signature of roster step %" PRIu64 " (\"%s\": \"%s\") "
                       "is about another change than the step makes, or was made on an earlier "
                       "step (an earlier co-signature put back)", cur->counter, it[0].key,
                       it[0].content);
    /* a proposal made before the step it builds on is an old one put back */
    if (prev && (it[0].time < prev->time || it[1].time < prev->time))
        return pfs_err(-EBADMSG, "the co-signature of roster step %" PRIu64 " was made before "
                       "step %" PRIu64 ": an earlier co-signature put back", cur->counter,
                       prev->counter);
    return 0;
}

/* cur (raw) follows prev (NULL: cur is step 1) by prev's rules. */
static int step_ok(const struct roster_trust *t, const struct roster *prev, const uint8_t *raw, size_t len, struct roster *cur)
{
    struct step s;
    struct change c = { 0 };
    EVP_PKEY *pub = NULL;
    const struct roster *rules;
    int rc = decode(t->vault_id, raw, len, cur, &s);

    if (rc < 0)
        return rc;
    rules = prev ? prev : cur;
    if (prev && (cur->counter != prev->counter + 1 || memcmp(cur->prev, prev->hash, SHA256_LEN)))
        rc = pfs_err(-EBADMSG, "roster step %" PRIu64 " does not follow step %" PRIu64,
                     cur->counter, prev->counter);
    if (rc == 0 && prev && cur->version < prev->version)
        rc = pfs_err(-EBADMSG, "roster step %" PRIu64 " is of format version %u after a step "
                     "of version %u: a step without the key fingerprints was written in place "
                     "of one with them", cur->counter, cur->version, prev->version);
    if (!prev && (cur->counter != 1 || memcmp(cur->prev, (uint8_t[SHA256_LEN]){ 0 }, SHA256_LEN)))
        rc = pfs_err(-EBADMSG, "roster step %" PRIu64 " has no step before it", cur->counter);
    if (rc == 0)
        rc = sysadmin_key(t, rules, cur->signer, &pub);
    if (rc == 0 && sig_verify(pub, s.tbs, s.tbslen, s.sig, s.siglen) < 0)
        rc = pfs_err(-EBADMSG, "the signature over roster step %" PRIu64 " does not verify",
                     cur->counter);
    EVP_PKEY_free(pub);
    if (rc == 0 && prev)
        diff(prev, cur, &c);
    if (rc == 0 && need_two(rules) && (!prev || c.n))
        rc = cosigned(t, rules, prev, cur, &c, &s);
    if (rc < 0)
        roster_clear(cur);
    return rc;
}

static int history_get(struct meta *m, uint64_t counter, uint8_t **raw, size_t *len)
{
    char param[64];

    snprintf(param, sizeof param, ROSTER_PARAM ".%" PRIu64, counter);
    return meta_param_get(m, param, raw, len);
}

/* Verified steps are remembered by their bytes (and their predecessor's):
 * a step that verified once stays good, and mounts check often. */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t cache_key[SHA256_LEN];
static int cache_set;

static void pair_hash(const uint8_t *raw, size_t len, const uint8_t *praw, size_t plen,
                      uint8_t out[SHA256_LEN])
{
    uint8_t both[2 * SHA256_LEN];

    sha256(raw, len, both);
    sha256(praw ? praw : (const uint8_t *)"", praw ? plen : 0, both + SHA256_LEN);
    sha256(both, sizeof both, out);
}

static int load_pair(const struct roster_trust *t, const uint8_t *raw, size_t len,
                     struct roster *r)
{
    struct roster prev = { 0 };
    uint8_t *praw = NULL, key[SHA256_LEN];
    size_t plen = 0;
    int rc, hit;

    rc = decode(t->vault_id, raw, len, r, &(struct step){ 0 });
    if (rc < 0)
        return rc;
    if (r->counter > 1) {
        rc = history_get(t->m, r->counter - 1, &praw, &plen);
        if (rc == -ENOENT)
            rc = pfs_err(-EBADMSG, "roster step %" PRIu64 " is missing from the metadata store "
                         "(it was removed)", r->counter - 1);
        if (rc == 0)
            rc = decode(t->vault_id, praw, plen, &prev, &(struct step){ 0 });
    }
    if (rc == 0) {
        pair_hash(raw, len, praw, plen, key);
        pthread_mutex_lock(&cache_lock);
        hit = cache_set && !memcmp(key, cache_key, SHA256_LEN);
        pthread_mutex_unlock(&cache_lock);
        if (!hit) {
            int first = r->counter == 1;

            roster_clear(r);
            rc = step_ok(t, first ? NULL : &prev, raw, len, r);
            if (rc == 0) {
                pthread_mutex_lock(&cache_lock);
                memcpy(cache_key, key, SHA256_LEN);
                cache_set = 1;
                pthread_mutex_unlock(&cache_lock);
            }
        }
    }
    roster_clear(&prev);
    free(praw);
    if (rc < 0)
        roster_clear(r);
    return rc;
}

int roster_load(const struct roster_trust *t, struct roster *r, uint8_t **raw_out,
                size_t *raw_len)
{
    uint8_t *raw = NULL;
    size_t len = 0;
    char keep[1024];
    int rc = meta_param_get(t->m, ROSTER_PARAM, &raw, &len);

    memset(r, 0, sizeof *r);
    if (rc == 0 && !len)
        rc = -ENOENT;
    if (rc < 0) {
        free(raw);
        if (rc == -ENOENT)
            pfs_err_clear();
        return rc;
    }
    rc = load_pair(t, raw, len, r);
    if (rc == 0) {
        /* the history keeps every step: a newer one there means an older
         * step was put back as the current one (the anchor sees the rest) */
        uint8_t *newer = NULL;
        size_t nlen = 0;

        if (history_get(t->m, r->counter + 1, &newer, &nlen) == 0)
            rc = pfs_err(-EBADMSG, "its history holds step %" PRIu64 ", newer than the current "
                         "step %" PRIu64 ": an older roster was put back", r->counter + 1,
                         r->counter);
        else
            pfs_err_clear();
        free(newer);
        if (rc < 0)
            roster_clear(r);
    }
    if (rc < 0) {
        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        rc = pfs_err(-EBADMSG, "the signed role roster does not verify: %s", keep);
    }
    if (rc == 0 && raw_out) {
        *raw_out = raw;
        *raw_len = len;
        raw = NULL;
    }
    free(raw);
    return rc;
}

int roster_check_anchor(const struct roster_trust *t, const struct roster *cur, uint64_t a_counter,
                        const uint8_t a_hash[SHA256_LEN], const char *source)
{
    struct roster prev = { 0 }, next = { 0 };
    uint8_t *raw = NULL;
    size_t len = 0;
    int rc;

    if (cur->counter < a_counter)
        return pfs_err(-ESTALE, "the signed role roster is step %" PRIu64 " but %s has seen "
                       "step %" PRIu64 ": an older roster was put back", cur->counter, source,
                       a_counter);
    if (cur->counter == a_counter)
        return memcmp(cur->hash, a_hash, SHA256_LEN)
               ? pfs_err(-ESTALE, "the signed role roster's step %" PRIu64 " differs from the "
                         "one %s has seen: it was replaced", cur->counter, source) : 0;
    /* newer: every step from the anchored one must follow by the rules */
    rc = history_get(t->m, a_counter, &raw, &len);
    if (rc == 0) {
        rc = decode(t->vault_id, raw, len, &prev, &(struct step){ 0 });
        if (rc == 0 && memcmp(prev.hash, a_hash, SHA256_LEN))
            rc = -ESTALE;
    }
    free(raw);
    if (rc < 0) {
        roster_clear(&prev);
        return pfs_err(-ESTALE, "roster step %" PRIu64 " that %s has seen is not in the "
                       "metadata store as it was: the roster's history was rewritten",
                       a_counter, source);
    }
    for (uint64_t k = a_counter + 1; rc == 0 && k <= cur->counter; k++) {
        raw = NULL;
        rc = history_get(t->m, k, &raw, &len);
        if (rc < 0)
            rc = pfs_err(-EBADMSG, "roster step %" PRIu64 " is missing from the metadata "
                         "store", k);
        if (rc == 0)
            rc = step_ok(t, &prev, raw, len, &next);
        free(raw);
        if (rc == 0) {
            roster_clear(&prev);
            prev = next;
            memset(&next, 0, sizeof next);
        }
    }
    if (rc == 0 && memcmp(prev.hash, cur->hash, SHA256_LEN))
        rc = pfs_err(-EBADMSG, "the current roster step differs from step %" PRIu64 " in its "
                     "history", cur->counter);
    roster_clear(&prev);
    return rc;
}

static void priv_format(uint32_t priv, char *out, size_t len)
{
    snprintf(out, len, "%s%s%s", priv & ROLE_SYSADMIN ? "sysadmin" : "",
             priv == ROSTER_PRIV ? "," : "", priv & ROLE_DATAADMIN ? "dataadmin" : "");
}

int roster_agrees(const struct roster *r, uint64_t id, const char *name, uint32_t roles,
                  int disabled)
{
    const struct roster_entry *e = roster_find(r, id);
    uint32_t priv = roles & ROSTER_PRIV;
    char want[64], has[64];

    if (!e && !priv)
        return 0;
    if (e && e->priv == priv && (!!e->disabled == !!disabled))
        return 0;
    priv_format(e ? e->priv : 0, want, sizeof want);
    priv_format(priv, has, sizeof has);
    if (e && e->priv == priv)
        return pfs_err(-EBADMSG, "account \"%s\" is %s by its registry record but %s by the "
                       "signed role roster (step %" PRIu64 "): it was changed without the "
                       "co-signature a roster change needs; refusing to trust this account",
                       name, disabled ? "disabled" : "enabled", e->disabled ? "disabled" :
                       "enabled", r->counter);
    return pfs_err(-EBADMSG, "the roles of account \"%s\" (%s) differ from the signed role "
                   "roster (step %" PRIu64 ": %s): a privileged role was given or taken "
                   "without the co-signature a roster change needs; refusing to trust this "
                   "account", name, priv ? has : "no sysadmin or dataadmin", r->counter,
                   e ? want : "not listed");
}

int roster_key_agrees(const struct roster *r, uint64_t id, const char *name,
                      const uint8_t *pubkey, size_t pubkey_len)
{
    const struct roster_entry *e = roster_find(r, id);
    uint8_t fp[SHA256_LEN];
    char want[2 * SHA256_LEN + 1], has[2 * SHA256_LEN + 1];

    /* not listed, no key (pending: it signs nothing), or a roster that
     * binds no keys (version 1) or does not need two sysadmins */
    if (!e || !pubkey_len || r->version < 2 || !need_two(r))
        return 0;
    sha256(pubkey, pubkey_len, fp);
    if (!crypto_memcmp(fp, e->fp, SHA256_LEN))
        return 0;
    fp_hex(e->fp, want);
    hex_encode(fp, SHA256_LEN, has);
    return pfs_err(-EBADMSG, "the key of %s \"%s\" (fingerprint %s) is not the one the signed "
                   "role roster binds (step %" PRIu64 ": %s): it was enrolled anew and a "
                   "second sysadmin has not confirmed it yet, so it is not trusted as %s; two "
                   "sysadmins confirm it with pactfs-admin cosign-endorse after checking the "
                   "fingerprint with \"%s\" in person", e->priv & ROLE_SYSADMIN ? "sysadmin" :
                   "dataadmin", name, has, r->counter, want,
                   e->priv & ROLE_SYSADMIN ? "sysadmin" : "dataadmin", name);
}

int roster_bind_keys(const struct roster_trust *t, const struct roster *cur,
                     struct roster *next)
{
    /* keys change only by a co-signed step while the roster needs two */
    int all = !cur || cur->version < 2 || !need_two(cur);

    next->version = ROSTER_VERSION;
    for (size_t i = 0; i < next->n; i++) {
        EVP_PKEY *pub = NULL;
        struct roster_entry *e = &next->e[i];

        if (!all && roster_find(cur, e->id))
            continue;
        memset(e->fp, 0, SHA256_LEN);
        if (t->key(t, e->id, &pub) == 0 && rsa_fingerprint(pub, e->fp) < 0)
            memset(e->fp, 0, SHA256_LEN);
        EVP_PKEY_free(pub);
    }
    pfs_err_clear();
    return 0;
}

int roster_stale_key(const struct roster_trust *t, const struct roster *r, uint64_t *id,
                     uint8_t fp[SHA256_LEN])
{
    for (size_t i = 0; i < r->n; i++) {
        EVP_PKEY *pub = NULL;
        uint8_t now[SHA256_LEN];
        int got = t->key(t, r->e[i].id, &pub) == 0 && rsa_fingerprint(pub, now) == 0;

        EVP_PKEY_free(pub);
        pfs_err_clear();
        if (got && memcmp(now, r->e[i].fp, SHA256_LEN)) {
            *id = r->e[i].id;
            memcpy(fp, now, SHA256_LEN);
            return 1;
        }
    }
    return 0;
}

int roster_set_key(struct roster *r, uint64_t id, const uint8_t fp[SHA256_LEN])
{
    for (size_t i = 0; i < r->n; i++)
        if (r->e[i].id == id) {
            memcpy(r->e[i].fp, fp, SHA256_LEN);
            return 0;
        }
    return -ENOENT;
}

/* ---- making a step */

static int entry_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct roster_entry *)a)->id, y = ((const struct roster_entry *)b)->id;

    return x < y ? -1 : x > y;
}

int roster_set(struct roster *r, uint64_t id, uint32_t priv, int disabled)
{
    struct roster_entry *grown = realloc(r->e, (r->n + 1) * sizeof *grown);
    uint8_t fp[SHA256_LEN] = { 0 };
    size_t n = 0;

    if (!grown)
        return -ENOMEM;
    r->e = grown;
    for (size_t i = 0; i < r->n; i++)
        if (r->e[i].id != id)
            r->e[n++] = r->e[i];
        else
            memcpy(fp, r->e[i].fp, SHA256_LEN);      /* the key it binds stays */
    if (priv & ROSTER_PRIV) {
        memcpy(r->e[n].fp, fp, SHA256_LEN);
        r->e[n].id = id;
        r->e[n].priv = priv & ROSTER_PRIV;
        r->e[n].disabled = !!disabled;
        n++;
    }
    r->n = n;
    qsort(r->e, n, sizeof *r->e, entry_cmp);
    return 0;
}

unsigned roster_changes(const struct roster *a, const struct roster *b)
{
    struct change c;

    diff(a, b, &c);
    return c.n;
}

int roster_next(const struct roster *cur, uint64_t id, uint32_t priv, int disabled,
                int required, struct roster *next, int *changed)
{
    memset(next, 0, sizeof *next);
    next->e = calloc((cur ? cur->n : 0) + 1, sizeof *next->e);
    if (!next->e)
        return -ENOMEM;
    if (cur) {
        memcpy(next->e, cur->e, cur->n * sizeof *next->e);
        next->n = cur->n;
    }
    if (id && roster_set(next, id, priv, disabled) < 0)
        return -ENOMEM;
    next->counter = cur ? cur->counter + 1 : 1;
    next->version = ROSTER_VERSION;
    if (cur)
        memcpy(next->prev, cur->hash, SHA256_LEN);
    next->required = required >= 0 ? (uint8_t)!!required : cur ? cur->required : 1;
    next->time = (int64_t)time(NULL);
    if (cur && next->time < cur->time)
        next->time = cur->time;
    if (changed) {
        struct change c = { 0 };

        if (cur)
            diff(cur, next, &c);
        *changed = !cur || c.n;
    }
    return 0;
}

int roster_store(const struct roster_trust *t, struct roster *next, EVP_PKEY *key,
                 uint64_t signer, const uint8_t *attest, size_t attest_len)
{
    struct roster check = { 0 }, prev = { 0 };
    uint8_t *tbs, *sig = NULL, *raw;
    size_t tbslen = 0, siglen = 0, len = 0;
    char param[64], keep[1024];
    struct wbuf b;
    int rc;

    next->signer = signer;
    tbs = encode_tbs(t->vault_id, next, &tbslen);
    if (!tbs)
        return -ENOMEM;
    rc = sig_sign(key, tbs, tbslen, &sig, &siglen);
    if (rc < 0) {
        free(tbs);
        return rc;
    }
    wbuf_init(&b);
    wbuf_put_blob(&b, tbs, tbslen);
    wbuf_put_u64(&b, signer);
    wbuf_put_blob(&b, sig, siglen);
    wbuf_put_blob(&b, attest ? attest : (const uint8_t *)"", attest ? attest_len : 0);
    raw = wbuf_steal(&b, &len);
    free(tbs);
    free(sig);
    if (!raw)
        return -ENOMEM;
    /* verified as a client will, against the step before, before it is stored */
    if (next->counter > 1) {
        uint8_t *praw = NULL;
        size_t plen = 0;

        rc = history_get(t->m, next->counter - 1, &praw, &plen);
        if (rc == 0)
            rc = decode(t->vault_id, praw, plen, &prev, &(struct step){ 0 });
        free(praw);
    }
    if (rc == 0)
        rc = step_ok(t, next->counter > 1 ? &prev : NULL, raw, len, &check);
    if (rc < 0) {
        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        rc = pfs_err(-EBADMSG, "the new role roster step would not verify at clients, "
                     "nothing was changed: %s", keep);
    }
    roster_clear(&check);
    roster_clear(&prev);
    snprintf(param, sizeof param, ROSTER_PARAM ".%" PRIu64, next->counter);
    if (rc == 0)
        rc = meta_param_set(t->m, param, raw, len);
    if (rc == 0)
        rc = meta_param_set(t->m, ROSTER_PARAM, raw, len);
    if (rc == 0)
        sha256(raw, len, next->hash);
    free(raw);
    return rc;
}
