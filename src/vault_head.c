#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "error.h"
#include "folder_state.h"
#include "meta_shared.h"
#include "registry.h"
#include "vault_head.h"
#include "vec.h"

#define HEAD_MAGIC "PFSH"
#define HEAD_VERSION 1
#define HEAD_MAX_ENTRIES (1u << 20)
#define FOLDER_ENTRY_LEN (8 + 8 + 4 + SHA256_LEN)
#define ACCOUNT_ENTRY_LEN (8 + 8 + SHA256_LEN)

void vault_head_clear(struct vault_head *h)
{
    free(h->folders);
    free(h->accounts);
    memset(h, 0, sizeof *h);
}

/* ------------------------------------------------------------- encoding */

static int encode_tbs(const char *vault_id, const struct vault_head *h, uint8_t **out,
                      size_t *outlen)
{
    struct wbuf b;

    wbuf_init(&b);
    wbuf_put_bytes(&b, HEAD_MAGIC, 4);
    wbuf_put_u8(&b, HEAD_VERSION);
    wbuf_put_str(&b, vault_id);
    wbuf_put_u64(&b, h->counter);
    wbuf_put_u32(&b, h->format);
    wbuf_put_u64(&b, h->signer_id);
    wbuf_put_u64(&b, (uint64_t)h->time);
    wbuf_put_u32(&b, (uint32_t)h->nfolders);
    for (size_t i = 0; i < h->nfolders; i++) {
        wbuf_put_u64(&b, h->folders[i].folder_id);
        wbuf_put_u64(&b, h->folders[i].counter);
        wbuf_put_u32(&b, h->folders[i].key_version);
        wbuf_put_bytes(&b, h->folders[i].hash, SHA256_LEN);
    }
    wbuf_put_u32(&b, (uint32_t)h->naccounts);
    for (size_t i = 0; i < h->naccounts; i++) {
        wbuf_put_u64(&b, h->accounts[i].account_id);
        wbuf_put_u64(&b, h->accounts[i].serial);
        wbuf_put_bytes(&b, h->accounts[i].hash, SHA256_LEN);
    }
    *out = wbuf_steal(&b, outlen);
    return *out ? 0 : -ENOMEM;
}

int vault_head_sign(EVP_PKEY *signer, const char *vault_id, uint64_t signer_id,
                    struct vault_head *h, uint8_t **blob, size_t *blob_len)
{
    uint8_t *tbs = NULL;
    size_t tbslen = 0;
    int rc;

    h->signer_id = signer_id;
    rc = encode_tbs(vault_id, h, &tbs, &tbslen);
    if (rc == 0)
        rc = sig_sign_container(signer, tbs, tbslen, blob, blob_len);
    free(tbs);
    return rc;
}

static int bad(struct vault_head *h, const char *what)
{
    vault_head_clear(h);
    return pfs_err(-EBADMSG, "the signed vault head is malformed (%s)", what);
}

int vault_head_decode(const char *vault_id, const uint8_t *blob, size_t len,
                      struct vault_head *h, const uint8_t **tbs, size_t *tbs_len,
                      const uint8_t **sig, size_t *sig_len)
{
    struct rbuf r;
    struct sig_container c = { 0 };
    const char *why = NULL;
    uint64_t t = 0;
    uint32_t n = 0;
    int rc;

    memset(h, 0, sizeof *h);
    rc = sig_container_open(blob, len, VAULT_HEAD_MAX_BLOB, HEAD_MAGIC, HEAD_VERSION, vault_id,
                            &r, &c, &why);
    *tbs = c.tbs, *tbs_len = c.tbs_len, *sig = c.sig, *sig_len = c.sig_len;
    if (rc == -EXDEV)
        return pfs_err(-EBADMSG, "the signed vault head names another vault");
    if (rc < 0)
        return bad(h, why);
    rbuf_get_u64(&r, &h->counter);
    rbuf_get_u32(&r, &h->format);
    rbuf_get_u64(&r, &h->signer_id);
    rbuf_get_u64(&r, &t);
    h->time = (int64_t)t;
    rbuf_get_u32(&r, &n);
    if (r.err)
        return bad(h, "header");
    if (!h->counter)
        return bad(h, "zero counter");
    if (n > HEAD_MAX_ENTRIES || (size_t)n * FOLDER_ENTRY_LEN > rbuf_remaining(&r))
        return bad(h, "folder count");
    h->folders = calloc(n ? n : 1, sizeof *h->folders);
    if (!h->folders)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        struct head_folder *f = &h->folders[i];

        rbuf_get_u64(&r, &f->folder_id);
        rbuf_get_u64(&r, &f->counter);
        rbuf_get_u32(&r, &f->key_version);
        rbuf_get_bytes(&r, f->hash, SHA256_LEN);
        if (r.err || (i && h->folders[i - 1].folder_id >= f->folder_id))
            return bad(h, "folders not sorted");
        h->nfolders = i + 1;
    }
    rbuf_get_u32(&r, &n);
    if (r.err || n > HEAD_MAX_ENTRIES || (size_t)n * ACCOUNT_ENTRY_LEN != rbuf_remaining(&r))
        return bad(h, "account count");
    h->accounts = calloc(n ? n : 1, sizeof *h->accounts);
    if (!h->accounts) {
        vault_head_clear(h);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct head_account *a = &h->accounts[i];

        rbuf_get_u64(&r, &a->account_id);
        rbuf_get_u64(&r, &a->serial);
        rbuf_get_bytes(&r, a->hash, SHA256_LEN);
        if (r.err || (i && h->accounts[i - 1].account_id >= a->account_id))
            return bad(h, "accounts not sorted");
        h->naccounts = i + 1;
    }
    if (rbuf_end(&r) < 0)
        return bad(h, "trailing bytes");
    return 0;
}

/* ------------------------------------------------ the metadata as it is */

static int folder_id_cb(void *arg, const struct meta_folder *f)
{
    return vec_u64_push(arg, f->id);
}

static int account_id_cb(void *arg, const struct meta_account *a)
{
    return vec_u64_push(arg, a->id);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static int folder_entry(struct meta *m, const char *vault_id, uint64_t id, struct head_folder *e)
{
    struct folder_state s;
    const uint8_t *tbs, *sig;
    size_t tbslen, siglen, len = 0;
    uint8_t *blob = NULL;
    char param[48];
    int rc;

    memset(e, 0, sizeof *e);
    e->folder_id = id;
    folder_state_param(id, param, sizeof param);
    rc = meta_param_get(m, param, &blob, &len);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    rc = folder_state_decode(vault_id, blob, len, &s, &tbs, &tbslen, &sig, &siglen);
    if (rc == 0) {
        e->counter = s.counter;
        e->key_version = s.key_version;
        sha256(blob, len, e->hash);
        folder_state_clear(&s);
    }
    free(blob);
    return rc;
}

static int account_entry(struct meta *m, const char *vault_id, uint64_t id,
                         struct head_account *e)
{
    struct registry_record r;
    size_t len = 0;
    uint8_t *blob = NULL;
    char param[64];
    int rc;

    memset(e, 0, sizeof *e);
    e->account_id = id;
    snprintf(param, sizeof param, "registry.account.%" PRIu64, id);
    rc = meta_param_get(m, param, &blob, &len);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    rc = registry_record_decode(vault_id, blob, len, &r);
    if (rc == 0) {
        e->serial = r.serial;
        sha256(blob, len, e->hash);
    }
    free(blob);
    return rc;
}

int vault_head_compute(struct meta *m, const char *vault_id, struct vault_head *h)
{
    struct vec_u64 folders = { 0 }, accounts = { 0 };
    int rc;

    memset(h, 0, sizeof *h);
    h->format = VAULT_FORMAT;
    rc = meta_folder_list(m, folder_id_cb, &folders);
    if (rc == 0)
        rc = meta_account_list(m, account_id_cb, &accounts);
    if (rc == 0) {
        h->folders = calloc(folders.n ? folders.n : 1, sizeof *h->folders);
        h->accounts = calloc(accounts.n ? accounts.n : 1, sizeof *h->accounts);
        if (!h->folders || !h->accounts)
            rc = -ENOMEM;
    }
    if (rc == 0) {
        if (folders.n)
            qsort(folders.v, folders.n, sizeof *folders.v, cmp_u64);
        if (accounts.n)
            qsort(accounts.v, accounts.n, sizeof *accounts.v, cmp_u64);
    }
    /* Only rows with a signed state or record count: a row without one is
     * trusted by nobody anyway (and a row whose state or record was
     * deleted no longer matches the head). */
    for (size_t i = 0; rc == 0 && i < folders.n; i++) {
        rc = folder_entry(m, vault_id, folders.v[i], &h->folders[h->nfolders]);
        h->nfolders += rc == 0 && h->folders[h->nfolders].counter;
    }
    for (size_t i = 0; rc == 0 && i < accounts.n; i++) {
        rc = account_entry(m, vault_id, accounts.v[i], &h->accounts[h->naccounts]);
        h->naccounts += rc == 0 && h->accounts[h->naccounts].serial;
    }
    vec_u64_free(&folders);
    vec_u64_free(&accounts);
    if (rc < 0)
        vault_head_clear(h);
    return rc;
}

/* ------------------------------------------------------------ ordering */

static const struct head_folder *find_folder(const struct vault_head *h, uint64_t id)
{
    for (size_t i = 0; i < h->nfolders; i++)
        if (h->folders[i].folder_id == id)
            return &h->folders[i];
    return NULL;
}

static const struct head_account *find_account(const struct vault_head *h, uint64_t id)
{
    for (size_t i = 0; i < h->naccounts; i++)
        if (h->accounts[i].account_id == id)
            return &h->accounts[i];
    return NULL;
}

int vault_head_not_older(const struct vault_head *prev, const struct vault_head *cur,
                         const char *source)
{
    for (size_t i = 0; i < prev->nfolders; i++) {
        const struct head_folder *p = &prev->folders[i];
        const struct head_folder *c = find_folder(cur, p->folder_id);

        if (!c)
            return pfs_err(-ESTALE, "folder %" PRIu64 " vanished from the metadata although "
                           "%s lists it: the metadata was rolled back or rows were deleted",
                           p->folder_id, source);
        if (c->counter < p->counter || c->key_version < p->key_version ||
            (c->counter == p->counter && memcmp(c->hash, p->hash, SHA256_LEN)))
            return pfs_err(-ESTALE, "the signed state of folder %" PRIu64 " (counter %" PRIu64
                           ", key version %u) is older than the one %s has seen (counter %"
                           PRIu64 ", key version %u): the metadata was rolled back",
                           p->folder_id, c->counter, c->key_version, source, p->counter,
                           p->key_version);
    }
    for (size_t i = 0; i < prev->naccounts; i++) {
        const struct head_account *p = &prev->accounts[i];
        const struct head_account *c = find_account(cur, p->account_id);

        if (!c)
            return pfs_err(-ESTALE, "account %" PRIu64 " vanished from the metadata although "
                           "%s lists it: the metadata was rolled back or rows were deleted",
                           p->account_id, source);
        if (c->serial < p->serial ||
            (c->serial == p->serial && memcmp(c->hash, p->hash, SHA256_LEN)))
            return pfs_err(-ESTALE, "the registry record of account %" PRIu64 " (serial %"
                           PRIu64 ") is older than the one %s has seen (serial %" PRIu64 "): "
                           "the metadata was rolled back", p->account_id, c->serial, source,
                           p->serial);
    }
    return 0;
}

int vault_head_advance(struct meta *m, const char *vault_id, EVP_PKEY *signer,
                       uint64_t signer_id)
{
    struct vault_head prev = { 0 }, cur = { 0 };
    const uint8_t *tbs, *sig;
    size_t tbslen, siglen, len = 0, outlen = 0;
    uint8_t *blob = NULL, *out = NULL;
    int rc, have_prev;

    /* Two administrators at once (PostgreSQL): the second waits here until
     * the first commits, then sees its head and its folder states; a state
     * it changed from an older read is refused below (not_older), so the
     * counter never forks and no change is lost silently. */
    rc = meta_head_lock(m);
    if (rc == 0)
        rc = meta_param_get(m, VAULT_HEAD_PARAM, &blob, &len);
    have_prev = rc == 0;
    if (rc < 0 && rc != -ENOENT)
        return rc;
    if (have_prev) {
        rc = vault_head_decode(vault_id, blob, len, &prev, &tbs, &tbslen, &sig, &siglen);
        free(blob);
        if (rc < 0)
            return rc;
    }
    rc = vault_head_compute(m, vault_id, &cur);
    if (rc == 0 && have_prev) {
        rc = vault_head_not_older(&prev, &cur, "the vault head being replaced");
        if (rc == -ESTALE) {
            char why[700];
            snprintf(why, sizeof why, "%s", pfs_err_msg());
            rc = pfs_err(-ESTALE, "another administrator changed the same state at the same "
                         "time, or the metadata was rolled back (%s); nothing was changed: "
                         "run the command again", why);
        }
    }
    if (rc == 0) {
        cur.counter = prev.counter + 1;
        cur.time = (int64_t)time(NULL);
        rc = vault_head_sign(signer, vault_id, signer_id, &cur, &out, &outlen);
    }
    if (rc == 0)
        rc = meta_param_set(m, VAULT_HEAD_PARAM, out, outlen);
    /* Running mounts re-check their access when the head moves (fs_access):
     * on PostgreSQL a NOTIFY in this transaction wakes them as it commits
     * (none if it rolls back); SQLite mounts find it at their next check. */
    if (rc == 0)
        rc = meta_change_notify(m);
    free(out);
    vault_head_clear(&prev);
    vault_head_clear(&cur);
    return rc;
}

/* ---------------------------------------------------------- verification */

static int head_signer_key(struct meta *m, const char *vault_id, const char *root_fp,
                           uint64_t signer_id, EVP_PKEY **key)
{
    struct registry_record r = { 0 };
    int rc;

    if (signer_id == REGISTRY_ROOT_SIGNER)
        return registry_root_key(m, root_fp, key);
    rc = registry_verified_key(m, vault_id, root_fp, signer_id, &r, key);
    if (rc == 0 && (r.disabled || !(r.roles & (ROLE_SYSADMIN | ROLE_DATAADMIN)))) {
        rc = pfs_err(-EBADMSG, "the vault head was signed by \"%s\", which is not an enabled "
                     "sysadmin or dataadmin", r.name);
        EVP_PKEY_free(*key);
        *key = NULL;
    }
    registry_record_clear(&r);
    return rc;
}

/* The metadata must hold exactly what the head commits to. */
static int head_matches(const struct vault_head *h, const struct vault_head *now)
{
    if (h->nfolders != now->nfolders) {
        for (size_t i = 0; i < now->nfolders; i++)
            if (!find_folder(h, now->folders[i].folder_id))
                return pfs_err(-EBADMSG, "the signed state of folder %" PRIu64 " is not in "
                               "the signed vault head: it was added to the metadata store by "
                               "hand", now->folders[i].folder_id);
        return pfs_err(-EBADMSG, "the signed vault head lists %zu folder states but the "
                       "metadata holds %zu: rows were deleted", h->nfolders, now->nfolders);
    }
    for (size_t i = 0; i < h->nfolders; i++) {
        const struct head_folder *a = &h->folders[i], *b = &now->folders[i];

        if (a->folder_id != b->folder_id)
            return pfs_err(-EBADMSG, "folder %" PRIu64 " of the signed vault head is missing "
                           "from the metadata: rows were changed by hand", a->folder_id);
        if (a->counter != b->counter || a->key_version != b->key_version ||
            memcmp(a->hash, b->hash, SHA256_LEN))
            return pfs_err(-EBADMSG, "the signed state of folder %" PRIu64 " (counter %" PRIu64
                           ") is not the one the vault head commits to (counter %" PRIu64 "): "
                           "it was replaced or rolled back in the metadata store",
                           a->folder_id, b->counter, a->counter);
    }
    if (h->naccounts != now->naccounts)
        return pfs_err(-EBADMSG, "the signed vault head lists %zu registry records but the "
                       "metadata holds %zu: records or account rows were added or deleted by "
                       "hand", h->naccounts, now->naccounts);
    for (size_t i = 0; i < h->naccounts; i++) {
        const struct head_account *a = &h->accounts[i], *b = &now->accounts[i];

        if (a->account_id != b->account_id || a->serial != b->serial ||
            memcmp(a->hash, b->hash, SHA256_LEN))
            return pfs_err(-EBADMSG, "the registry record of account %" PRIu64 " is not the "
                           "one the vault head commits to (serial %" PRIu64 " instead of %"
                           PRIu64 "): it was replaced or rolled back in the metadata store",
                           a->account_id, b->serial, a->serial);
    }
    return 0;
}

static int head_load_once(struct meta *m, const char *vault_id, const char *root_fp,
                          struct vault_head *h, uint8_t **raw, size_t *raw_len);

/* Did the stored head change since blob was read?  (PostgreSQL outside a
 * transaction: each statement sees what was committed when it started, so
 * an administrator's commit between reading the head and reading the
 * folder states makes them disagree for a moment.) */
static int head_moved(struct meta *m, const uint8_t *blob, size_t len)
{
    uint8_t *now = NULL;
    size_t nlen = 0;
    int moved = meta_param_get(m, VAULT_HEAD_PARAM, &now, &nlen) == 0 &&
                (nlen != len || memcmp(now, blob, len) != 0);

    free(now);
    return moved;
}

int vault_head_load(struct meta *m, const char *vault_id, const char *root_fp,
                    struct vault_head *h, uint8_t **raw, size_t *raw_len)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc;

    for (int tries = 0;; tries++) {
        rc = head_load_once(m, vault_id, root_fp, h, &blob, &len);
        if (rc != -EBADMSG || tries == 3 || !blob || !head_moved(m, blob, len))
            break;
        free(blob);               /* a concurrent change committed: read again */
        blob = NULL;
    }
    if (rc == 0 && raw) {
        *raw = blob;
        *raw_len = len;
    } else {
        free(blob);
    }
    return rc;
}

/* One attempt; *raw receives the stored blob also on -EBADMSG. */
static int head_load_once(struct meta *m, const char *vault_id, const char *root_fp,
                          struct vault_head *h, uint8_t **raw, size_t *raw_len)
{
    struct vault_head now = { 0 };
    const uint8_t *tbs, *sig;
    size_t tbslen, siglen, len = 0;
    uint8_t *blob = NULL;
    EVP_PKEY *key = NULL;
    int rc;

    memset(h, 0, sizeof *h);
    rc = meta_param_get(m, VAULT_HEAD_PARAM, &blob, &len);
    if (rc == -ENOENT)
        return pfs_err(-ENOENT, "the metadata holds no signed vault head");
    if (rc < 0)
        return rc;
    rc = vault_head_decode(vault_id, blob, len, h, &tbs, &tbslen, &sig, &siglen);
    if (rc == 0)
        rc = head_signer_key(m, vault_id, root_fp, h->signer_id, &key);
    if (rc == 0 && sig_verify(key, tbs, tbslen, sig, siglen) < 0)
        rc = pfs_err(-EBADMSG, "the signature of the vault head does not verify: it was "
                     "forged or altered in the metadata store");
    if (rc == 0)
        rc = vault_head_compute(m, vault_id, &now);
    if (rc == 0)
        rc = head_matches(h, &now);
    EVP_PKEY_free(key);
    vault_head_clear(&now);
    if (rc < 0)
        vault_head_clear(h);
    *raw = blob;
    *raw_len = len;
    return rc;
}

int vault_head_check_anchor(const char *vault_id, const uint8_t *raw, size_t raw_len,
                            const struct vault_head *h, uint64_t a_counter,
                            const uint8_t a_hash[SHA256_LEN], const uint8_t *a_blob,
                            size_t a_len, const char *source)
{
    struct vault_head a;
    const uint8_t *tbs, *sig;
    size_t tbslen, siglen;
    uint8_t hash[SHA256_LEN];
    int rc;

    sha256(raw, raw_len, hash);
    if (h->counter < a_counter)
        return pfs_err(-ESTALE, "the metadata is older than %s has seen: vault head %" PRIu64
                       " < %" PRIu64 " (an older copy of the metadata was restored, or "
                       "changes were dropped)", source, h->counter, a_counter);
    if (h->counter == a_counter)
        return memcmp(hash, a_hash, SHA256_LEN) == 0 ? 0
               : pfs_err(-ESTALE, "the vault head %" PRIu64 " differs from the one %s has "
                         "seen with the same counter: the metadata was forked or replaced",
                         h->counter, source);
    if (!a_blob)
        return 0;
    rc = vault_head_decode(vault_id, a_blob, a_len, &a, &tbs, &tbslen, &sig, &siglen);
    if (rc < 0)
        return pfs_err(-ESTALE, "the vault head anchored in %s cannot be read: %s", source,
                       pfs_err_msg());
    rc = vault_head_not_older(&a, h, source);
    vault_head_clear(&a);
    return rc;
}
