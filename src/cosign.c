#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "cosign.h"
#include "error.h"
#include "registry.h"

#define MAGIC "PFSQ"
#define ITEM_VERSION 1
#define SETTING_KEY "policy.cosign"

struct signed_item {
    char content[256];
    uint64_t signer;
    int64_t time;
};

static int item_put(struct vault *v, const char *param, const char *key, const char *content)
{
    struct wbuf b;
    uint8_t *tbs, *out = NULL;
    size_t tbslen, outlen = 0;
    int rc;

    wbuf_init(&b);
    wbuf_put_bytes(&b, MAGIC, 4);
    wbuf_put_u8(&b, ITEM_VERSION);
    wbuf_put_str(&b, v->conf.vault_id);
    wbuf_put_str(&b, key);
    wbuf_put_str(&b, content);
    wbuf_put_u64(&b, v->account.id);
    wbuf_put_u64(&b, (uint64_t)time(NULL));
    tbs = wbuf_steal(&b, &tbslen);
    if (!tbs)
        return -ENOMEM;
    rc = sig_sign_container(v->priv, tbs, tbslen, &out, &outlen);
    free(tbs);
    if (rc == 0)
        rc = meta_param_set(v->meta, param, out, outlen);
    free(out);
    return rc;
}

/* A stored item under param for key: -ENOENT if none (or emptied),
 * -EBADMSG if it does not verify (signer no enabled sysadmin, altered). */
static int item_get(struct vault *v, const char *param, const char *key, struct signed_item *it)
{
    uint8_t *raw = NULL, version = 0;
    const uint8_t *tbs, *sig, *magic, *vid, *k, *c;
    size_t len = 0, tbslen, siglen, vidlen, klen, clen;
    uint64_t t = 0;
    struct rbuf b, r;
    struct registry_record rec = { 0 };
    EVP_PKEY *pub = NULL;
    int rc = meta_param_get(v->meta, param, &raw, &len);

    if (rc < 0 || len == 0) {
        free(raw);
        return rc < 0 && rc != -ENOENT ? rc : -ENOENT;
    }
    rbuf_init(&b, raw, len);
    rbuf_get_blob(&b, &tbs, &tbslen, 4096);
    rbuf_get_blob(&b, &sig, &siglen, 1024);
    rbuf_init(&r, tbs, b.err ? 0 : tbslen);
    rbuf_get_ref(&r, &magic, 4);
    rbuf_get_u8(&r, &version);
    rbuf_get_blob(&r, &vid, &vidlen, 64);
    rbuf_get_blob(&r, &k, &klen, 128);
    rbuf_get_blob(&r, &c, &clen, sizeof it->content - 1);
    rbuf_get_u64(&r, &it->signer);
    rbuf_get_u64(&r, &t);
    rc = rbuf_end(&b) < 0 || rbuf_end(&r) < 0 || memcmp(magic, MAGIC, 4) || version != ITEM_VERSION ||
         vidlen != strlen(v->conf.vault_id) || memcmp(vid, v->conf.vault_id, vidlen) ||
         klen != strlen(key) || memcmp(k, key, klen) ? -EBADMSG : 0;
    if (rc == 0) {
        memcpy(it->content, c, clen);
        it->content[clen] = '\0';
        it->time = (int64_t)t;
        rc = registry_verified_key(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                                   it->signer, &rec, &pub);
    }
    if (rc == 0 && (!(rec.roles & ROLE_SYSADMIN) || rec.disabled))
        rc = -EBADMSG;
    if (rc == 0 && sig_verify(pub, tbs, tbslen, sig, siglen) < 0)
        rc = -EBADMSG;
    EVP_PKEY_free(pub);
    registry_record_clear(&rec);
    free(raw);
    if (rc < 0)
        pfs_err_clear();
    return rc < 0 ? -EBADMSG : 0;
}

struct admin_count {
    struct vault *v;
    unsigned n;
};

static int count_sysadmin(void *arg, const struct meta_account *a)
{
    struct admin_count *c = arg;
    struct registry_record r = { 0 };

    if ((a->roles & ROLE_SYSADMIN) && !a->disabled &&
        registry_verify(c->v->meta, c->v->conf.vault_id, c->v->conf.root_fingerprint, a->id,
                        &r) == 0)
        c->n++;
    registry_record_clear(&r);
    return 0;
}

int cosign_needed(struct vault *v, int *required, unsigned *sysadmins)
{
    struct signed_item it;
    struct admin_count c = { v, 0 };
    int rc = item_get(v, SETTING_KEY, SETTING_KEY, &it);

    /* On unless a verified setting says off: the database operator can
     * only bring the default back. */
    *required = !(rc == 0 && !strcmp(it.content, "required=no"));
    rc = meta_account_list(v->meta, count_sysadmin, &c);
    pfs_err_clear();
    *sysadmins = c.n;
    return rc < 0 ? rc : 0;
}

int cosign_gate(struct vault *v, const char *key, const char *content, uint64_t *cosigner)
{
    struct signed_item it;
    char param[160];
    unsigned n = 0;
    int required = 1;
    int rc = cosign_needed(v, &required, &n);

    *cosigner = 0;
    if (rc < 0)
        return rc;
    if (!required || n < 2)
        return 0;
    snprintf(param, sizeof param, "pending.%s", key);
    if (item_get(v, param, key, &it) == 0 && !strcmp(it.content, content) &&
        it.signer != v->account.id && (int64_t)time(NULL) - it.time <= COSIGN_MAX_AGE_S) {
        *cosigner = it.signer;
        return meta_param_set(v->meta, param, "", 0);   /* used: it applies once */
    }
    rc = item_put(v, param, key, content);
    return rc < 0 ? rc : COSIGN_PENDING;
}

int cosign_set_required(struct vault *v, int required)
{
    return item_put(v, SETTING_KEY, SETTING_KEY, required ? "required=yes" : "required=no");
}
