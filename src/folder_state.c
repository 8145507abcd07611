#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "crypto.h"
#include "error.h"
#include "folder_state.h"
#include "registry.h"

#define STATE_MAGIC "PFSF"
#define STATE_VERSION 1
#define RIGHTS_KNOWN (RIGHT_READ | RIGHT_WRITE | RIGHT_MANAGE)

void folder_state_clear(struct folder_state *s)
{
    free(s->members);
    memset(s, 0, sizeof *s);
}

void folder_state_param(uint64_t folder_id, char *out, size_t outlen)
{
    snprintf(out, outlen, "folder_state.%" PRIu64, folder_id);
}

uint32_t folder_state_rights(const struct folder_state *s, uint64_t account_id)
{
    for (size_t i = 0; i < s->nmembers; i++)
        if (s->members[i].account_id == account_id)
            return s->members[i].rights;
    return 0;
}

int folder_state_set_member(struct folder_state *s, uint64_t account_id, uint32_t rights)
{
    size_t i = 0;

    if (rights & ~RIGHTS_KNOWN)
        return pfs_err(-EINVAL, "unknown rights 0x%x", rights);
    while (i < s->nmembers && s->members[i].account_id < account_id)
        i++;
    if (i < s->nmembers && s->members[i].account_id == account_id) {
        if (rights) {
            s->members[i].rights = rights;
        } else {
            memmove(&s->members[i], &s->members[i + 1],
                    (s->nmembers - i - 1) * sizeof *s->members);
            s->nmembers--;
        }
        return 0;
    }
    if (!rights)
        return 0;
    if (s->nmembers >= FOLDER_STATE_MAX_MEMBERS)
        return pfs_err(-E2BIG, "a folder has at most %u members", FOLDER_STATE_MAX_MEMBERS);
    struct folder_member *grown = realloc(s->members, (s->nmembers + 1) * sizeof *grown);

    if (!grown)
        return -ENOMEM;
    s->members = grown;
    memmove(&grown[i + 1], &grown[i], (s->nmembers - i) * sizeof *grown);
    grown[i].account_id = account_id;
    grown[i].rights = rights;
    s->nmembers++;
    return 0;
}

/* ------------------------------------------------------------- encoding */

static int encode_tbs(const char *vault_id, const struct folder_state *s, uint8_t **out,
                      size_t *outlen)
{
    struct wbuf b;

    wbuf_init(&b);
    wbuf_put_bytes(&b, STATE_MAGIC, 4);
    wbuf_put_u8(&b, STATE_VERSION);
    wbuf_put_str(&b, vault_id);
    wbuf_put_u64(&b, s->folder_id);
    wbuf_put_u64(&b, s->counter);
    wbuf_put_u32(&b, s->key_version);
    wbuf_put_u64(&b, s->signer_id);
    wbuf_put_u32(&b, (uint32_t)s->nmembers);
    for (size_t i = 0; i < s->nmembers; i++) {
        wbuf_put_u64(&b, s->members[i].account_id);
        wbuf_put_u32(&b, s->members[i].rights);
    }
    *out = wbuf_steal(&b, outlen);
    return *out ? 0 : -ENOMEM;
}

int folder_state_sign(EVP_PKEY *signer, const char *vault_id, uint64_t signer_id,
                      struct folder_state *s, uint8_t **blob, size_t *blob_len)
{
    uint8_t *tbs = NULL;
    size_t tbslen = 0;
    int rc;

    if (!s->counter || !s->key_version)
        return pfs_err(-EINVAL, "a folder state needs a counter and a key version");
    for (size_t i = 0; i < s->nmembers; i++)
        if (!s->members[i].rights || (s->members[i].rights & ~RIGHTS_KNOWN) ||
            (i && s->members[i - 1].account_id >= s->members[i].account_id))
            return pfs_err(-EINVAL, "folder state members must be sorted, unique, with rights");
    s->signer_id = signer_id;
    rc = encode_tbs(vault_id, s, &tbs, &tbslen);
    if (rc == 0)
        rc = sig_sign_container(signer, tbs, tbslen, blob, blob_len);
    free(tbs);
    return rc;
}

static int bad(const char *what)
{
    return pfs_err(-EBADMSG, "a signed folder state is malformed (%s)", what);
}

int folder_state_decode(const char *vault_id, const uint8_t *blob, size_t len,
                        struct folder_state *s, const uint8_t **tbs, size_t *tbs_len,
                        const uint8_t **sig, size_t *sig_len)
{
    struct rbuf outer, r;
    const uint8_t *magic = NULL, *vid = NULL;
    size_t vidlen = 0;
    uint8_t version = 0;
    uint32_t n = 0;

    memset(s, 0, sizeof *s);
    rbuf_init(&outer, blob, len);
    rbuf_get_blob(&outer, tbs, tbs_len, FOLDER_STATE_MAX_BLOB);
    rbuf_get_blob(&outer, sig, sig_len, 1024);
    if (rbuf_end(&outer) < 0)
        return bad("container");
    rbuf_init(&r, *tbs, *tbs_len);
    rbuf_get_ref(&r, &magic, 4);
    rbuf_get_u8(&r, &version);
    if (r.err || memcmp(magic, STATE_MAGIC, 4) || version != STATE_VERSION)
        return bad("magic or version");
    rbuf_get_blob(&r, &vid, &vidlen, 256);
    rbuf_get_u64(&r, &s->folder_id);
    rbuf_get_u64(&r, &s->counter);
    rbuf_get_u32(&r, &s->key_version);
    rbuf_get_u64(&r, &s->signer_id);
    rbuf_get_u32(&r, &n);
    if (r.err)
        return bad("header");
    if (vidlen != strlen(vault_id) || memcmp(vid, vault_id, vidlen))
        return pfs_err(-EBADMSG, "a signed folder state names another vault");
    if (!s->counter || !s->key_version)
        return bad("zero counter or key version");
    if (n > FOLDER_STATE_MAX_MEMBERS || (size_t)n * 12 != rbuf_remaining(&r))
        return bad("member count");
    s->members = calloc(n ? n : 1, sizeof *s->members);
    if (!s->members)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        struct folder_member *fm = &s->members[i];

        rbuf_get_u64(&r, &fm->account_id);
        rbuf_get_u32(&r, &fm->rights);
        if (r.err || !fm->rights || (fm->rights & ~RIGHTS_KNOWN) ||
            (i && s->members[i - 1].account_id >= fm->account_id)) {
            folder_state_clear(s);
            return bad("members not sorted, repeated or with unknown rights");
        }
        s->nmembers = i + 1;
    }
    if (rbuf_end(&r) < 0) {
        folder_state_clear(s);
        return bad("trailing bytes");
    }
    return 0;
}

int folder_state_verify_blob(const char *vault_id, const uint8_t *blob, size_t len,
                             EVP_PKEY *signer, struct folder_state *s)
{
    const uint8_t *tbs, *sig;
    size_t tbslen, siglen;
    int rc = folder_state_decode(vault_id, blob, len, s, &tbs, &tbslen, &sig, &siglen);

    if (rc < 0)
        return rc;
    if (sig_verify(signer, tbs, tbslen, sig, siglen) < 0) {
        folder_state_clear(s);
        return pfs_err(-EBADMSG, "the signature of a folder state does not verify: it was "
                       "forged or altered in the metadata store");
    }
    return 0;
}

/* ------------------------------------------------------ metadata store */

int folder_state_load(struct meta *m, const char *vault_id, const char *root_fp,
                      uint64_t folder_id, struct folder_state *s, uint8_t **raw, size_t *raw_len)
{
    struct registry_record signer = { 0 };
    const uint8_t *tbs, *sig;
    size_t tbslen, siglen, len = 0;
    uint8_t *blob = NULL;
    EVP_PKEY *key = NULL;
    char param[48];
    int rc;

    memset(s, 0, sizeof *s);
    folder_state_param(folder_id, param, sizeof param);
    rc = meta_param_get(m, param, &blob, &len);
    if (rc == -ENOENT)
        return pfs_err(-ENOENT, "folder %" PRIu64 " has no signed folder state", folder_id);
    if (rc < 0)
        return rc;
    rc = folder_state_decode(vault_id, blob, len, s, &tbs, &tbslen, &sig, &siglen);
    if (rc == 0 && s->folder_id != folder_id)
        rc = pfs_err(-EBADMSG, "the signed state stored for folder %" PRIu64 " names folder "
                     "%" PRIu64 ": it was moved in the metadata store", folder_id, s->folder_id);
    if (rc == 0)
        rc = registry_verified_key(m, vault_id, root_fp, s->signer_id, &signer, &key);
    if (rc == 0 && !(folder_state_rights(s, s->signer_id) & RIGHT_MANAGE))
        rc = pfs_err(-EBADMSG, "the state of folder %" PRIu64 " was signed by \"%s\", who "
                     "does not manage it", folder_id, signer.name);
    if (rc == 0 && sig_verify(key, tbs, tbslen, sig, siglen) < 0)
        rc = pfs_err(-EBADMSG, "the signature of the state of folder %" PRIu64 " does not "
                     "verify: it was forged or altered in the metadata store", folder_id);
    /* A signer demoted or disabled since: only the states it signed while
     * it held the role count (listed in its record by the sysadmin). */
    if (rc == 0 && (!(signer.roles & ROLE_DATAADMIN) || signer.disabled) &&
        registry_retained(m, vault_id, &signer, blob, len) < 0)
        rc = pfs_err(-EBADMSG, "the state of folder %" PRIu64 " was signed by \"%s\", which "
                     "is not an enabled dataadmin and did not sign this state while it was "
                     "one", folder_id, signer.name);
    EVP_PKEY_free(key);
    registry_record_clear(&signer);
    if (rc < 0) {
        folder_state_clear(s);
        free(blob);
        return rc;
    }
    if (raw) {
        *raw = blob;
        *raw_len = len;
    } else {
        free(blob);
    }
    return 0;
}

int folder_state_store(struct meta *m, const char *vault_id, EVP_PKEY *signer,
                       uint64_t signer_id, struct folder_state *s)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    char param[48];
    int rc = folder_state_sign(signer, vault_id, signer_id, s, &blob, &len);

    if (rc < 0)
        return rc;
    folder_state_param(s->folder_id, param, sizeof param);
    rc = meta_param_set(m, param, blob, len);
    free(blob);
    return rc;
}
