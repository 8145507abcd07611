#include "config.h"

/* pactfs-keyd's HTTP side (keyd_handlers.h). */

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include <json-c/json.h>

#include "crypto.h"
#include "error.h"
#include "secmem.h"

#include "keyd_audit.h"
#include "keyd_handlers.h"
#include "keyd_policy.h"

/* json-c keeps parsed strings in its own heap: wipe the ones that held a
 * secret before the object is released. */
static void json_wipe_string(json_object *v)
{
    if (v && json_object_is_type(v, json_type_string))
        secmem_wipe((char *)json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

static void json_wipe_all_strings(json_object *obj)
{
    json_object_object_foreach(obj, key, val) {
        (void)key;
        json_wipe_string(val);
    }
}

static bool name_is_valid(const char *s, size_t n)
{
    if (n == 0 || n > KEYD_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static int field_name(json_object *obj, const char *key, const char **out)
{
    json_object *v;

    if (!json_object_object_get_ex(obj, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_string) ||
        !name_is_valid(json_object_get_string(v), (size_t)json_object_get_string_len(v)) ||
        strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
        return -EINVAL;
    *out = json_object_get_string(v);
    return 0;
}

static int field_auth(json_object *obj, const char *key, uint8_t **out)
{
    json_object *v;

    if (!json_object_object_get_ex(obj, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_string) ||
        json_object_get_string_len(v) != 2 * SHARE_AUTH_LEN)
        return -EINVAL;
    *out = secmem_alloc(SHARE_AUTH_LEN);
    if (!*out)
        return -ENOMEM;
    return hex_decode(json_object_get_string(v), *out, SHARE_AUTH_LEN) < 0 ? -EINVAL : 0;
}

static void fields_free(struct fields *f)
{
    secmem_free(f->auth, SHARE_AUTH_LEN);
    secmem_free(f->new_auth, SHARE_AUTH_LEN);
    memset(f, 0, sizeof *f);
}

static int field_hex(json_object *obj, const char *key, uint8_t *out, size_t n, bool *has)
{
    json_object *v;

    if (!json_object_object_get_ex(obj, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_string) ||
        json_object_get_string_len(v) != (int)(2 * n) ||
        hex_decode(json_object_get_string(v), out, n) < 0)
        return -EINVAL;
    *has = true;
    return 0;
}

/* counter (integer >= 0), hash, token (hex), force (boolean). */
static int field_anchor(json_object *obj, struct fields *f)
{
    json_object *v;
    int rc;

    f->counter = -1;
    if (json_object_object_get_ex(obj, "counter", &v)) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
            return -EINVAL;
        f->counter = json_object_get_int64(v);
    }
    if (json_object_object_get_ex(obj, "force", &v)) {
        if (!json_object_is_type(v, json_type_boolean))
            return -EINVAL;
        f->force = json_object_get_boolean(v);
    }
    rc = field_hex(obj, "hash", f->hash, SHA256_LEN, &f->has_hash);
    return rc ? rc : field_hex(obj, "token", f->token, KEYD_ANCHOR_TOKEN_LEN, &f->has_token);
}

/* code_pub, code_sig (hex), expires (integer). */
static int field_code(json_object *obj, struct fields *f)
{
    json_object *v;
    int rc;

    f->expires = -1;
    if (json_object_object_get_ex(obj, "expires", &v)) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
            return -EINVAL;
        f->expires = json_object_get_int64(v);
    }
    rc = field_hex(obj, "code_pub", f->code_pub, sizeof f->code_pub, &f->has_code_pub);
    return rc ? rc : field_hex(obj, "code_sig", f->code_sig, sizeof f->code_sig,
                               &f->has_code_sig);
}

/* Parse the request body into a json object and decode its fields.  Every
 * known field is optional here; handlers check what they need. */
static int body_parse(const struct https_request *r, json_object **objp, struct fields *f)
{
    json_tokener *tok = json_tokener_new();
    json_object *obj;
    int rc = 0;

    memset(f, 0, sizeof *f);
    f->counter = -1;
    *objp = NULL;
    if (!tok)
        return -ENOMEM;
    obj = json_tokener_parse_ex(tok, r->body, (int)r->len);
    if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
        json_tokener_get_parse_end(tok) != r->len ||
        !json_object_is_type(obj, json_type_object)) {
        json_tokener_free(tok);
        if (obj) {
            json_wipe_all_strings(obj);
            json_object_put(obj);
        }
        return -EINVAL;
    }
    json_tokener_free(tok);
    rc = rc ? rc : field_name(obj, "vault", &f->vault);
    rc = rc ? rc : field_name(obj, "account", &f->account);
    rc = rc ? rc : field_name(obj, "source", &f->source);
    rc = rc ? rc : field_auth(obj, "auth", &f->auth);
    if (!f->auth)
        rc = rc ? rc : field_auth(obj, "old_auth", &f->auth);
    rc = rc ? rc : field_auth(obj, "new_auth", &f->new_auth);
    rc = rc ? rc : field_anchor(obj, f);
    rc = rc ? rc : field_code(obj, f);
    *objp = obj;
    return rc;
}

/* ---------------------------------------------------------------- handlers */

static int new_secret_row(struct keyd *k, const struct fields *f, const uint8_t *auth,
                          uint8_t salt[KEYD_SALT_LEN], uint8_t verifier[SHA256_LEN])
{
    int rc = crypto_random(salt, KEYD_SALT_LEN);

    if (!rc)
        keyd_make_verifier(&k->secrets, f->vault, f->account, salt, auth, verifier);
    return rc;
}

/* A fresh random share in secmem, sealed for the database. */
static int new_share(struct keyd *k, const struct fields *f, struct outcome *o,
                     uint8_t sealed[KEYD_SEALED_SHARE_LEN])
{
    int rc;

    o->share = secmem_alloc(SHARE_LEN);
    if (!o->share)
        return pfs_err(-ENOMEM, "out of memory");
    rc = crypto_random(o->share, SHARE_LEN);
    return rc ? rc : keyd_share_seal(&k->secrets, f->vault, f->account, o->share, sealed);
}

/* What the enrolment code's key signs: the account's first authenticator
 * at this service (docs/keyd.md, "Enrolment by code"). */
static size_t enroll_message(const struct fields *f, uint8_t *out, size_t cap)
{
    static const char label[] = "pactfs-keyd v1 enroll";
    size_t vl = strlen(f->vault), al = strlen(f->account), n = 0;

    if (sizeof label - 1 + 8 + vl + al + SHARE_AUTH_LEN > cap)
        return 0;
    memcpy(out, label, sizeof label - 1);
    n = sizeof label - 1;
    for (int i = 3; i >= 0; i--)
        out[n++] = (uint8_t)(vl >> (8 * i));
    memcpy(out + n, f->vault, vl);
    n += vl;
    for (int i = 3; i >= 0; i--)
        out[n++] = (uint8_t)(al >> (8 * i));
    memcpy(out + n, f->account, al);
    n += al;
    memcpy(out + n, f->auth, SHARE_AUTH_LEN);
    return n + SHARE_AUTH_LEN;
}

/* Enrolment needs the person's one-time code (registered by an officer or
 * the sysadmin's pactfs-admin with /v1/enrol-code): its key's signature
 * over the new authenticator.  The admin token or an officer alone enrols
 * nobody.  A re-enrolment replaces the account's earlier secret and share. */
/* A short public name of a secret-bearing blob: the first 8 bytes of its
 * SHA-256, hex (a sealed share, a code's public key: neither opens or
 * derives anything, and the code behind a code key has 160 random bits). */
static void blob_id(const uint8_t *p, size_t n, char out[17])
{
    uint8_t h[SHA256_LEN];

    sha256(p, n, h);
    for (int i = 0; i < 8; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static void utc_time(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (!t || !gmtime_r(&tt, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, 32, "unknown time");
}

/* The account's state at the service, for an account-change event. */
static void describe_share(const struct account_row *row, char *out, size_t len)
{
    char id[17], at[32];

    if (!row->found) {
        snprintf(out, len, "no share");
        return;
    }
    blob_id(row->sealed_share, sizeof row->sealed_share, id);
    utc_time(row->updated, at);
    int n = snprintf(out, len, "share %s set %s%s", id, at, row->disabled ? ", disabled" : "");
    if (row->failures && n >= 0 && (size_t)n < len)
        n += snprintf(out + n, len - (size_t)n, ", %u failed proofs", row->failures);
    if (row->locked_until > (int64_t)time(NULL) && n >= 0 && (size_t)n < len) {
        utc_time(row->locked_until, at);
        snprintf(out + n, len - (size_t)n, ", locked until %s", at);
    }
}

static int handle_enroll(struct keyd *k, const char *remote, const struct fields *f,
                         struct outcome *o)
{
    uint8_t salt[KEYD_SALT_LEN], verifier[SHA256_LEN], sealed[KEYD_SEALED_SHARE_LEN];
    uint8_t pub[KEYD_CODE_PUB_LEN], msg[2 * KEYD_NAME_MAX + 128];
    struct account_row row;
    int64_t now = (int64_t)time(NULL), expires = 0;
    unsigned retry = 0;
    bool found = false;
    size_t mlen;
    int rc;

    if (!f->vault || !f->account || !f->auth) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    if (!f->has_code_sig) {
        set_outcome(o, 401, "code-required");
        return 0;
    }
    rc = keyd_code_load(&k->store, f->vault, f->account, pub, &expires, &found);
    rc = rc ? rc : keyd_account_load(&k->store, f->vault, f->account, &row);
    if (rc)
        return rc;
    /* An account change on the trail: the share before and after, and
     * which code (its key's id) did it; a refused one changes nothing. */
    char code_id[17], share_id[17], now_s[32], before[120];
    describe_share(&row, before, sizeof before);
    if (found)
        blob_id(pub, sizeof pub, code_id);
    snprintf(o->before, sizeof o->before, "%s; %s%s", before, found ? "code " : "no code",
             found ? code_id : "");
    snprintf(o->after, sizeof o->after, "unchanged");
    mlen = enroll_message(f, msg, sizeof msg);
    if (!found || !mlen || ed25519_verify(pub, msg, mlen, f->code_sig, sizeof f->code_sig) < 0) {
        rc = keyd_source_record_failure(k, remote, now, &retry);
        set_outcome(o, retry ? 429 : 403, retry ? "locked" : found ? "code-rejected" : "no-code");
        o->retry_after = retry;
        return rc;
    }
    rc = keyd_code_delete(&k->store, f->vault, f->account);      /* single use */
    if (!rc && expires < now) {
        snprintf(o->after, sizeof o->after, "%s; code %s spent (expired)", before, code_id);
        set_outcome(o, 403, "code-expired");
        return 0;
    }
    rc = rc ? rc : new_secret_row(k, f, f->auth, salt, verifier);
    rc = rc ? rc : new_share(k, f, o, sealed);
    if (rc)
        return rc;
    if (row.found) {
        rc = keyd_account_set_auth(&k->store, f->vault, f->account, salt, verifier, now);
        rc = rc ? rc : keyd_account_set_share(&k->store, f->vault, f->account, sealed, now);
        rc = rc ? rc : keyd_account_set_failures(&k->store, f->vault, f->account, 0, 0, 0);
    } else {
        rc = keyd_account_insert(&k->store, f->vault, f->account, salt, verifier, sealed, now);
    }
    if (!rc) {
        blob_id(sealed, sizeof sealed, share_id);
        utc_time(now, now_s);
        snprintf(o->after, sizeof o->after, "share %s set %s%s by the holder of code %s "
                 "from %s; code %s spent", share_id, now_s,
                 row.found ? " (the earlier share destroyed)" : "", code_id, remote, code_id);
        set_outcome(o, 200, row.found ? "re-enrolled" : "enrolled");
    }
    return rc;
}

/* An officer (or the admin token) registers the public key a person's
 * enrolment code derives, with its expiry; the code itself never reaches
 * the service. */
static int handle_enrol_code(struct keyd *k, const char *remote, const struct fields *f,
                             struct outcome *o)
{
    int rc;

    (void)remote;
    if (!f->vault || !f->account || !f->has_code_pub || f->expires < 0) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    uint8_t pub[KEYD_CODE_PUB_LEN];
    int64_t expires = 0;
    bool found = false;
    char id[17], until[32];

    rc = keyd_code_load(&k->store, f->vault, f->account, pub, &expires, &found);
    if (rc)
        return rc;
    if (found) {
        blob_id(pub, sizeof pub, id);
        utc_time(expires, until);
        snprintf(o->before, sizeof o->before, "code %s, expires %s", id, until);
    } else {
        snprintf(o->before, sizeof o->before, "no code");
    }
    rc = keyd_code_store(&k->store, f->vault, f->account, f->code_pub, f->expires,
                         (int64_t)time(NULL));
    if (!rc) {
        blob_id(f->code_pub, sizeof f->code_pub, id);
        utc_time(f->expires, until);
        snprintf(o->after, sizeof o->after, "code %s, expires %s%s", id, until,
                 found ? " (the earlier code replaced)" : "");
        set_outcome(o, 200, "code-registered");
    }
    return rc;
}

static int handle_login(struct keyd *k, const char *remote, const struct fields *f,
                        struct outcome *o)
{
    struct account_row row;
    int rc = keyd_authenticate(k, remote, f, f->auth, &row, o);

    if (rc || o->status)
        return rc;
    o->share = secmem_alloc(SHARE_LEN);
    if (!o->share)
        return pfs_err(-ENOMEM, "out of memory");
    rc = keyd_share_open(&k->secrets, f->vault, f->account, row.sealed_share, o->share);
    if (!rc)
        rc = keyd_anchor_token_make(&k->secrets, f->vault, f->account,
                                    (int64_t)time(NULL) + KEYD_ANCHOR_TOKEN_LIFE,
                                    o->anchor_token);
    if (!rc)
        set_outcome(o, 200, "released");
    return rc;
}

static int handle_anchor_get(struct keyd *k, const char *remote, const struct fields *f,
                             struct outcome *o)
{
    struct anchor_row cur;
    int rc;

    (void)remote;
    if (!f->vault) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    rc = keyd_anchor_load(&k->store, f->vault, &cur);
    o->has_anchor = cur.found;
    o->anchor_counter = cur.counter;
    memcpy(o->anchor_hash, cur.hash, SHA256_LEN);
    if (!rc)
        set_outcome(o, o->has_anchor ? 200 : 404, o->has_anchor ? "anchor" : "no-anchor");
    return rc;
}

/* The anchor only grows: a lower counter (an older head) or the same
 * counter with another hash (a forked head) is refused with 409, unless
 * force (a client's audited --accept-metadata-rollback). */
static int handle_anchor_put(struct keyd *k, const char *remote, const struct fields *f,
                             struct outcome *o)
{
    struct anchor_row cur;
    bool ok = false;
    unsigned retry = 0;
    int rc;

    if (!f->vault || f->counter < 0 || !f->has_hash) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    rc = keyd_anchor_caller_ok(k, f, &ok);
    if (!rc && !ok) {
        rc = keyd_source_record_failure(k, remote, (int64_t)time(NULL), &retry);
        set_outcome(o, 401, "rejected");
        return rc;
    }
    rc = rc ? rc : keyd_anchor_load(&k->store, f->vault, &cur);
    if (rc)
        return rc;
    if (cur.found && !f->force && f->counter < cur.counter) {
        set_outcome(o, 409, "stale");
        o->has_anchor = true;
        o->anchor_counter = cur.counter;
        return 0;
    }
    if (cur.found && !f->force && f->counter == cur.counter &&
        memcmp(f->hash, cur.hash, SHA256_LEN) != 0) {
        set_outcome(o, 409, "fork");
        o->has_anchor = true;
        o->anchor_counter = cur.counter;
        return 0;
    }
    rc = keyd_anchor_store(&k->store, f->vault, f->counter, f->hash,
                           f->account ? f->account : "(admin)", (int64_t)time(NULL));
    if (!rc)
        set_outcome(o, 200, f->force && cur.found && f->counter < cur.counter
                    ? "forced" : "anchored");
    return rc;
}

static int handle_change_auth(struct keyd *k, const char *remote, const struct fields *f,
                              struct outcome *o)
{
    uint8_t salt[KEYD_SALT_LEN], verifier[SHA256_LEN];
    struct account_row row;
    int rc;

    if (!f->new_auth) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    rc = keyd_authenticate(k, remote, f, f->auth, &row, o);
    if (rc || o->status)
        return rc;
    rc = new_secret_row(k, f, f->new_auth, salt, verifier);
    if (rc)
        return rc;
    rc = keyd_account_set_auth(&k->store, f->vault, f->account, salt, verifier,
                               (int64_t)time(NULL));
    if (!rc)
        set_outcome(o, 200, "auth-changed");
    return rc;
}

static int handle_rotate(struct keyd *k, const char *remote, const struct fields *f,
                         struct outcome *o)
{
    uint8_t sealed[KEYD_SEALED_SHARE_LEN];
    struct account_row row;
    int rc = keyd_authenticate(k, remote, f, f->auth, &row, o);

    if (rc || o->status)
        return rc;
    rc = new_share(k, f, o, sealed);
    if (rc)
        return rc;
    rc = keyd_account_set_share(&k->store, f->vault, f->account, sealed, (int64_t)time(NULL));
    if (!rc)
        set_outcome(o, 200, "rotated");
    return rc;
}

/* The administrative changes are one UPDATE/DELETE each; 404 if no row. */
static int admin_account_change(struct keyd *k, const struct fields *f,
                                enum keyd_account_action action, const char *result,
                                struct outcome *o)
{
    struct account_row before, after;
    bool found;
    int rc;

    if (!f->vault || !f->account) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    /* an account change: on the trail with the state before and after */
    rc = keyd_account_load(&k->store, f->vault, f->account, &before);
    rc = rc ? rc : keyd_account_act(&k->store, f->vault, f->account, action, &found);
    rc = rc ? rc : keyd_account_load(&k->store, f->vault, f->account, &after);
    if (!rc) {
        describe_share(&before, o->before, sizeof o->before);
        describe_share(&after, o->after, sizeof o->after);
        set_outcome(o, found ? 200 : 404, found ? result : "unknown-account");
    }
    return rc;
}

static int handle_unlock(struct keyd *k, const char *remote, const struct fields *f,
                         struct outcome *o)
{
    (void)remote;
    if (f->source && !f->account) {
        int rc = keyd_source_delete(&k->store, f->source);
        if (!rc)
            set_outcome(o, 200, "source-unlocked");
        return rc;
    }
    return admin_account_change(k, f, KEYD_ACCOUNT_UNLOCK, "unlocked", o);
}

static int handle_disable(struct keyd *k, const char *remote, const struct fields *f,
                          struct outcome *o)
{
    (void)remote;
    return admin_account_change(k, f, KEYD_ACCOUNT_DISABLE, "disabled", o);
}

static int handle_enable(struct keyd *k, const char *remote, const struct fields *f,
                         struct outcome *o)
{
    (void)remote;
    return admin_account_change(k, f, KEYD_ACCOUNT_ENABLE, "enabled", o);
}

static int handle_remove(struct keyd *k, const char *remote, const struct fields *f,
                         struct outcome *o)
{
    (void)remote;
    return admin_account_change(k, f, KEYD_ACCOUNT_REMOVE, "removed", o);
}

typedef int (*handler_fn)(struct keyd *, const char *, const struct fields *, struct outcome *);

struct route {
    const char *path;
    const char *op;
    bool admin;
    handler_fn fn;
};

static const struct route routes[] = {
    { "/v1/enroll", "enroll", false, handle_enroll },
    { "/v1/enrol-code", "enrol-code", true, handle_enrol_code },
    { "/v1/login", "login", false, handle_login },
    { "/v1/change-auth", "change-auth", false, handle_change_auth },
    { "/v1/rotate", "rotate", false, handle_rotate },
    { "/v1/unlock", "unlock", true, handle_unlock },
    { "/v1/disable", "disable", true, handle_disable },
    { "/v1/enable", "enable", true, handle_enable },
    { "/v1/remove", "remove", true, handle_remove },
    { "/v1/anchor-get", "anchor-get", false, handle_anchor_get },
    { "/v1/anchor-put", "anchor-put", false, handle_anchor_put },
};

static const struct route *route_find(const char *url)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strcmp(routes[i].path, url) == 0)
            return &routes[i];
    return NULL;
}

/* ---------------------------------------------------------------- HTTP */

static enum MHD_Result answer(struct MHD_Connection *c, const struct outcome *o)
{
    json_object *obj = json_object_new_object();
    enum MHD_Result ret;

    if (o->has_anchor) {
        char hex[2 * SHA256_LEN + 1];
        hex_encode(o->anchor_hash, SHA256_LEN, hex);
        json_object_object_add(obj, "counter", json_object_new_int64(o->anchor_counter));
        if (o->status == 200)
            json_object_object_add(obj, "hash", json_object_new_string(hex));
    }
    if (o->status == 200) {
        if (o->share) {
            char hex[2 * SHARE_LEN + 1];
            hex_encode(o->share, SHARE_LEN, hex);
            json_object_object_add(obj, "share", json_object_new_string(hex));
            secmem_wipe(hex, sizeof hex);
        }
        json_object_object_add(obj, "result", json_object_new_string(o->result));
        if (o->anchor_token[0])
            json_object_object_add(obj, "anchor_token", json_object_new_string(o->anchor_token));
    } else {
        json_object_object_add(obj, "error", json_object_new_string(o->result));
        if (o->retry_after)
            json_object_object_add(obj, "retry_after", json_object_new_int((int)o->retry_after));
    }
    ret = https_reply_secret_json(c, o->status, obj, o->retry_after);
    json_wipe_all_strings(obj);
    json_object_put(obj);
    return ret;
}

/* Run a handler inside one IMMEDIATE transaction: a failure counter and the
 * verdict it leads to are written together or not at all. */
static void run_handler(struct keyd *k, const struct route *rt, const char *remote,
                        const char *officer, const struct fields *f, struct outcome *o)
{
    int rc = keyd_store_begin(&k->store), trail = 0;
    /* An enrolment is the code holder's act, on the trail as such. */
    bool trailed = rt->admin || rt->fn == handle_enroll;

    if (rt->fn == handle_enroll)
        officer = "keyd:enrolment-code";
    if (!rc)
        rc = rt->fn(k, remote, f, o);
    /* An admin action is on the vault's trail before it takes effect. */
    if (!rc && trailed && keyd_vault_id_ok(f->vault) &&
        keyd_trail_event(k, officer, rt->op, f, o->status, o) < 0)
        rc = trail = -EIO;
    if (!rc)
        rc = keyd_store_commit(&k->store);
    if (rc) {
        https_log(LOG_ERR, "%s %s: %s", remote, rt->op, pfs_err_msg());
        keyd_store_rollback(&k->store);
        secmem_free(o->share, SHARE_LEN);
        o->share = NULL;
        o->retry_after = 0;
        set_outcome(o, 500, trail ? "audit-unavailable" : "internal");
    }
    if (rt->admin)   /* the log names the person, not only an address */
        https_log(LOG_NOTICE, "%s: %s of \"%s\" by %s: %d %s", remote, rt->op,
                  f->account ? f->account : "?", officer, o->status, o->result);
    if (trailed && keyd_vault_id_ok(f->vault))
        keyd_trail_ship(k, f->vault);
}

enum MHD_Result keyd_dispatch(struct keyd *k, struct MHD_Connection *c, const char *url,
                              const char *method, struct https_request *r)
{
    const struct route *rt = route_find(url);
    struct outcome o = { 0 };
    struct fields f;
    json_object *body = NULL;
    char remote[NI_MAXHOST], cn[HTTPS_CN_MAX + 1] = "", officer[HTTPS_CN_MAX + 16];
    enum MHD_Result ret;

    memset(&f, 0, sizeof f);
    f.counter = -1;
    https_client_address(c, remote, sizeof remote);
    /* Who acts on the trail: the client certificate's CN, else the token. */
    if (https_client_cn(c, cn, sizeof cn) == 0 && cn[0])
        snprintf(officer, sizeof officer, "keyd:%s", cn);
    else
        snprintf(officer, sizeof officer, "keyd:admin-token");
    if (!rt)
        set_outcome(&o, 404, "not-found");
    else if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
        set_outcome(&o, 405, "method-not-allowed");
    else if (r->too_big)
        set_outcome(&o, 413, "too-large");
    else if (!keyd_client_cert_ok(k, c))
        set_outcome(&o, 403, "client-certificate-required");
    else if (body_parse(r, &body, &f) < 0)
        set_outcome(&o, 400, "bad-request");
    else if (rt->admin && !keyd_officer_ok(k, c, cn) && !keyd_admin_token_ok(k, c)) {
        unsigned retry = 0;
        /* A guessed token counts against the source like a guessed auth. */
        if (keyd_store_begin(&k->store) == 0) {
            keyd_source_record_failure(k, remote, (int64_t)time(NULL), &retry);
            keyd_store_commit(&k->store);
        }
        set_outcome(&o, 401, "rejected");
        if (keyd_vault_id_ok(f.vault)) {     /* a refused officer is on the trail too */
            (void)keyd_trail_event(k, officer, rt->op, &f, o.status, NULL);
            keyd_trail_ship(k, f.vault);
        }
    } else {
        f.admin_ok = !rt->admin && (keyd_officer_ok(k, c, cn) || keyd_admin_token_ok(k, c));
        run_handler(k, rt, remote, officer, &f, &o);
    }
    keyd_capture_body(k, url, r);
    /* Fail closed: a share is not released unless its release is on record. */
    if (keyd_audit_write(k, remote, rt ? rt->op : "unknown", &f, &o) < 0 && rt &&
        rt->fn == handle_login && o.share) {
        secmem_free(o.share, SHARE_LEN);
        o.share = NULL;
        set_outcome(&o, 500, "audit-unavailable");
    }
    ret = answer(c, &o);
    secmem_free(o.share, SHARE_LEN);
    fields_free(&f);
    if (body) {
        json_wipe_all_strings(body);
        json_object_put(body);
    }
    return ret;
}
