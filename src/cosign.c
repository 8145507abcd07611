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

static int item_sign(struct vault *v, const char *key, const char *content, uint8_t **out,
                     size_t *outlen)
{
    struct wbuf b;
    uint8_t *tbs;
    size_t tbslen;
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
    rc = sig_sign_container(v->priv, tbs, tbslen, out, outlen);
    free(tbs);
    return rc;
}

static int item_put(struct vault *v, const char *param, const char *key, const char *content)
{
    uint8_t *out = NULL;
    size_t outlen = 0;
    int rc = item_sign(v, key, content, &out, &outlen);

    if (rc == 0)
        rc = meta_param_set(v->meta, param, out, outlen);
    free(out);
    return rc;
}

/* A stored item under param for key: -ENOENT if none (or emptied),
 * -EBADMSG if it does not verify (signer no enabled sysadmin, altered).
 * raw (optional) receives its bytes. */
static int item_get(struct vault *v, const char *param, const char *key,
                    struct registry_item *it, uint8_t **raw_out, size_t *raw_len)
{
    uint8_t *raw = NULL;
    size_t len = 0;
    int rc = meta_param_get(v->meta, param, &raw, &len);

    if (rc < 0 || len == 0) {
        free(raw);
        return rc < 0 && rc != -ENOENT ? rc : -ENOENT;
    }
    rc = registry_item_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint, raw, len,
                              key, it);
    if (rc == 0 && raw_out) {
        *raw_out = raw;
        *raw_len = len;
        raw = NULL;
    }
    free(raw);
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
    struct admin_count c = { v, 0 };
    int rc;

    /* On unless a verified setting says off and the two sysadmins who
     * switched it off signed beside it (as clients read it, registry.h):
     * the database operator or one sysadmin can only bring the default back. */
    *required = !registry_cosign_policy_off(v->meta, v->conf.vault_id, v->conf.root_fingerprint);
    rc = meta_account_list(v->meta, count_sysadmin, &c);
    pfs_err_clear();
    *sysadmins = c.n;
    return rc < 0 ? rc : 0;
}

int cosign_gate_attest(struct vault *v, const char *key, const char *content,
                       uint64_t *cosigner, uint8_t **attest, size_t *attest_len)
{
    struct registry_item it;
    char param[160];
    unsigned n = 0;
    int required = 1;
    uint8_t *prop = NULL;
    size_t proplen = 0;
    int rc = cosign_needed(v, &required, &n);

    *cosigner = 0;
    if (attest) {
        *attest = NULL;
        *attest_len = 0;
    }
    if (rc < 0)
        return rc;
    if (!required || n < 2)
        return 0;
    snprintf(param, sizeof param, "pending.%s", key);
    if (item_get(v, param, key, &it, &prop, &proplen) == 0 && !strcmp(it.content, content) &&
        it.signer != v->account.id && (int64_t)time(NULL) - it.time <= COSIGN_MAX_AGE_S) {
        *cosigner = it.signer;
        rc = 0;
        if (attest) {     /* the proposal and this sysadmin's confirmation */
            uint8_t *conf = NULL;
            size_t conflen = 0;
            struct wbuf b;

            rc = item_sign(v, key, content, &conf, &conflen);
            if (rc == 0) {
                wbuf_init(&b);
                wbuf_put_blob(&b, prop, proplen);
                wbuf_put_blob(&b, conf, conflen);
                *attest = wbuf_steal(&b, attest_len);
                rc = *attest ? 0 : -ENOMEM;
            }
            free(conf);
        }
        free(prop);
        return rc < 0 ? rc : meta_param_set(v->meta, param, "", 0);   /* used: it applies once */
    }
    free(prop);
    rc = item_put(v, param, key, content);
    return rc < 0 ? rc : COSIGN_PENDING;
}

int cosign_gate(struct vault *v, const char *key, const char *content, uint64_t *cosigner)
{
    return cosign_gate_attest(v, key, content, cosigner, NULL, NULL);
}

int cosign_store_attest(struct vault *v, uint64_t account_id, const uint8_t *attest,
                        size_t len)
{
    char param[64];

    snprintf(param, sizeof param, "registry.cosig.%" PRIu64, account_id);
    return meta_param_set(v->meta, param, attest ? attest : (const uint8_t *)"", attest ? len : 0);
}

int cosign_set_required(struct vault *v, int required, const uint8_t *attest, size_t len)
{
    int rc = item_put(v, SETTING_KEY, SETTING_KEY, required ? "required=yes" : "required=no");

    if (rc == 0)
        rc = meta_param_set(v->meta, SETTING_KEY ".cosig", attest ? attest : (const uint8_t *)"",
                            attest ? len : 0);
    return rc;
}
