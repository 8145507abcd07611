#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "buf.h"
#include "envelope.h"
#include "error.h"
#include "secmem.h"

#define ENVELOPE_LABEL  "pactfs v1 envelope"
#define DEK_AD_LABEL    "pactfs v1 dek"
#define NAME_AD_LABEL   "pactfs v1 name"
#define META_AD_LABEL   "pactfs v1 folder meta"
#define BIND_LABEL      "pactfs v2 dirent"
#define WRAPPED_VERSION 1

/* ---- folder keys ---- */

int folder_key_generate(uint8_t fk[FOLDER_KEY_LEN])
{
    return crypto_random(fk, FOLDER_KEY_LEN);
}

static int derive_one(const uint8_t fk[FOLDER_KEY_LEN], const char *label, uint8_t *out,
                      size_t outlen)
{
    return hkdf_sha256(fk, FOLDER_KEY_LEN, NULL, 0, label, strlen(label), out, outlen);
}

struct folder_keys *folder_keys_derive(const uint8_t fk[FOLDER_KEY_LEN], uint32_t key_version)
{
    struct folder_keys *k = secmem_alloc(sizeof *k);

    if (!k) {
        pfs_err(-ENOMEM, "out of secure memory for folder keys");
        return NULL;
    }
    k->key_version = key_version;
    if (derive_one(fk, "pactfs v1 folder dek wrap", k->wrap_key, sizeof k->wrap_key)
        || derive_one(fk, "pactfs v1 folder names", k->name_key, sizeof k->name_key)
        || derive_one(fk, "pactfs v1 folder metadata", k->meta_key, sizeof k->meta_key)
        || derive_one(fk, "pactfs v2 folder dirent binding", k->bind_key, sizeof k->bind_key)) {
        folder_keys_free(k);
        return NULL;
    }
    return k;
}

void folder_keys_free(struct folder_keys *k)
{
    secmem_free(k, sizeof *k);
}

/* ---- envelopes ---- */

/* The OAEP label binds the envelope to its vault, folder and key version, so
 * the database operator cannot move an envelope to another folder or pass an
 * old key version off as the current one.  The vault id is the only
 * variable-length part and everything after it is fixed-size, so the
 * encoding is unambiguous. */
static int envelope_label(const char *vault_id, uint64_t folder_id, uint32_t key_version,
                          uint8_t **label, size_t *len)
{
    struct wbuf w;

    if (!vault_id || !*vault_id)
        return pfs_err(-EINVAL, "envelope: empty vault id");
    wbuf_init(&w);
    wbuf_put_bytes(&w, ENVELOPE_LABEL, strlen(ENVELOPE_LABEL));
    wbuf_put_bytes(&w, vault_id, strlen(vault_id));
    wbuf_put_u64(&w, folder_id);
    wbuf_put_u32(&w, key_version);
    *label = wbuf_steal(&w, len);
    return *label ? 0 : pfs_err(-ENOMEM, "out of memory for an envelope label");
}

int envelope_seal(EVP_PKEY *member_pub, const char *vault_id, uint64_t folder_id,
                  uint32_t key_version, const uint8_t fk[FOLDER_KEY_LEN],
                  uint8_t **env, size_t *envlen)
{
    uint8_t *label;
    size_t labellen;
    int rc = envelope_label(vault_id, folder_id, key_version, &label, &labellen);

    if (rc)
        return rc;
    rc = rsa_wrap(member_pub, label, labellen, fk, FOLDER_KEY_LEN, env, envlen);
    free(label);
    return rc;
}

int envelope_open(EVP_PKEY *member_priv, const char *vault_id, uint64_t folder_id,
                  uint32_t key_version, const uint8_t *env, size_t envlen,
                  uint8_t fk[FOLDER_KEY_LEN])
{
    uint8_t *label;
    size_t labellen;
    int rc = envelope_label(vault_id, folder_id, key_version, &label, &labellen);

    if (rc)
        return rc;
    rc = rsa_unwrap(member_priv, label, labellen, env, envlen, fk, FOLDER_KEY_LEN);
    free(label);
    if (rc == -EBADMSG)
        pfs_err(rc, "cannot open the envelope of folder %llu (key version %u): it was not "
                "sealed for this account, this folder or this key version",
                (unsigned long long)folder_id, key_version);
    return rc;
}

/* ---- file data keys ---- */

int dek_generate(uint8_t dek[DEK_LEN])
{
    return crypto_random(dek, DEK_LEN);
}

static void id_ad(const char *label, uint64_t id, uint8_t ad[32], size_t *adlen)
{
    size_t n = strlen(label);

    memcpy(ad, label, n);
    for (int i = 0; i < 8; i++)
        ad[n + (size_t)i] = (uint8_t)(id >> (56 - 8 * i));
    *adlen = n + 8;
}

int dek_wrap(const struct folder_keys *fk, uint64_t ino, const uint8_t dek[DEK_LEN],
             uint8_t out[DEK_WRAPPED_LEN])
{
    uint8_t ad[32];
    size_t adlen;

    id_ad(DEK_AD_LABEL, ino, ad, &adlen);
    out[0] = WRAPPED_VERSION;
    return aead_seal(fk->wrap_key, ad, adlen, dek, DEK_LEN, out + 1);
}

int dek_unwrap(const struct folder_keys *fk, uint64_t ino, const uint8_t *in, size_t inlen,
               uint8_t dek[DEK_LEN])
{
    uint8_t ad[32];
    size_t adlen;
    int rc;

    if (inlen != DEK_WRAPPED_LEN)
        return pfs_err(-EBADMSG, "wrapped data key of inode %llu has %zu bytes, expected %d",
                       (unsigned long long)ino, inlen, DEK_WRAPPED_LEN);
    if (in[0] != WRAPPED_VERSION)
        return pfs_err(-EBADMSG, "wrapped data key of inode %llu has unknown version %u",
                       (unsigned long long)ino, in[0]);
    id_ad(DEK_AD_LABEL, ino, ad, &adlen);
    rc = aead_open(fk->wrap_key, ad, adlen, in + 1, inlen - 1, dek);
    if (rc == -EBADMSG)
        pfs_err(rc, "data key of inode %llu does not unwrap: wrong folder key version, "
                "moved from another file, or altered", (unsigned long long)ino);
    return rc;
}

/* ---- names ---- */

static int name_check(const char *name, size_t len)
{
    if (len == 0)
        return pfs_err(-EINVAL, "empty file name");
    if (len > NAME_MAX_PLAIN)
        return pfs_err(-ENAMETOOLONG, "file name of %zu bytes is longer than %d", len,
                       NAME_MAX_PLAIN);
    if (memchr(name, '/', len) || memchr(name, '\0', len))
        return pfs_err(-EINVAL, "file name contains '/' or a NUL byte");
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return pfs_err(-EINVAL, "\".\" and \"..\" are not file names");
    return 0;
}

int name_encrypt(const struct folder_keys *fk, uint64_t parent_ino,
                 const char *name, size_t len, uint8_t *out, size_t *outlen)
{
    uint8_t ad[32];
    size_t adlen;
    int rc = name_check(name, len);

    if (rc)
        return rc;
    id_ad(NAME_AD_LABEL, parent_ino, ad, &adlen);
    out[0] = WRAPPED_VERSION;
    rc = siv_encrypt(fk->name_key, ad, adlen, name, len, out + 1);
    if (rc == 0)
        *outlen = len + SIV_TAG_LEN + 1;
    return rc;
}

int name_decrypt(const struct folder_keys *fk, uint64_t parent_ino,
                 const uint8_t *in, size_t inlen, char *out, size_t *outlen)
{
    uint8_t ad[32];
    size_t adlen, len;
    int rc;

    if (inlen < 1 + SIV_TAG_LEN + 1 || inlen > NAME_MAX_ENC)
        return pfs_err(-EBADMSG, "encrypted name has %zu bytes, outside %d..%d", inlen,
                       1 + SIV_TAG_LEN + 1, NAME_MAX_ENC);
    if (in[0] != WRAPPED_VERSION)
        return pfs_err(-EBADMSG, "encrypted name has unknown version %u", in[0]);
    len = inlen - 1 - SIV_TAG_LEN;
    id_ad(NAME_AD_LABEL, parent_ino, ad, &adlen);
    rc = siv_decrypt(fk->name_key, ad, adlen, in + 1, inlen - 1, (uint8_t *)out);
    if (rc)
        return rc;
    /* Authentic, but still never hand FUSE a name that could escape. */
    if (name_check(out, len) != 0) {
        secmem_wipe(out, len);
        return pfs_err(-EBADMSG, "decrypted name is not a valid file name");
    }
    out[len] = '\0';
    *outlen = len;
    return 0;
}

/* ---- directory entries bound to their child ---- */

static int bind_mac(const struct folder_keys *fk, uint64_t parent_ino, const uint8_t *enc,
                    size_t enclen, uint64_t child_ino, uint32_t mode, uint8_t out[DIRENT_BIND_LEN])
{
    struct wbuf w;
    uint8_t *msg;
    size_t n;
    int rc;

    wbuf_init(&w);
    wbuf_put_bytes(&w, BIND_LABEL, strlen(BIND_LABEL));
    wbuf_put_u64(&w, parent_ino);
    wbuf_put_blob(&w, enc, enclen);
    wbuf_put_u64(&w, child_ino);
    wbuf_put_u32(&w, mode & S_IFMT);
    msg = wbuf_steal(&w, &n);
    if (!msg)
        return pfs_err(-ENOMEM, "out of memory");
    rc = hmac_sha256(fk->bind_key, sizeof fk->bind_key, msg, n, out + 1);
    free(msg);
    out[0] = DIRENT_BIND_VERSION;
    return rc;
}

int dirent_bind(const struct folder_keys *fk, uint64_t parent_ino, const uint8_t *enc,
                size_t enclen, uint64_t child_ino, uint32_t mode, uint8_t out[DIRENT_BIND_LEN])
{
    return bind_mac(fk, parent_ino, enc, enclen, child_ino, mode, out);
}

int dirent_bind_check(const struct folder_keys *fk, uint64_t parent_ino, const uint8_t *enc,
                      size_t enclen, uint64_t child_ino, uint32_t mode, const uint8_t *bind,
                      size_t bindlen)
{
    uint8_t want[DIRENT_BIND_LEN];
    int rc;

    if (bindlen == 0)
        return pfs_err(-EBADMSG, "check \"entry binding\" failed: the entry has no binding "
                       "(not upgraded to format 2, or the binding was removed)");
    if (bindlen != DIRENT_BIND_LEN || bind[0] != DIRENT_BIND_VERSION)
        return pfs_err(-EBADMSG, "check \"entry binding\" failed: malformed binding "
                       "(%zu bytes)", bindlen);
    rc = bind_mac(fk, parent_ino, enc, enclen, child_ino, mode, want);
    if (rc < 0)
        return rc;
    if (crypto_memcmp(want, bind, DIRENT_BIND_LEN) != 0)
        return pfs_err(-EBADMSG, "check \"entry binding\" failed: the entry does not point at "
                       "the inode (%llu) and type it was written for (entry swapped or "
                       "redirected)", (unsigned long long)child_ino);
    return 0;
}

/* ---- small metadata values ---- */

static int meta_ad(const void *ad, size_t adlen, uint8_t **full, size_t *fulllen)
{
    struct wbuf w;

    wbuf_init(&w);
    wbuf_put_bytes(&w, META_AD_LABEL, strlen(META_AD_LABEL));
    wbuf_put_bytes(&w, ad, adlen);
    *full = wbuf_steal(&w, fulllen);
    return *full ? 0 : pfs_err(-ENOMEM, "out of memory");
}

int folder_meta_seal(const struct folder_keys *fk, const void *ad, size_t adlen,
                     const void *pt, size_t n, uint8_t **out, size_t *outlen)
{
    uint8_t *full, *buf;
    size_t fulllen;
    int rc;

    *out = NULL;
    if (n > (1u << 30))
        return pfs_err(-EFBIG, "metadata value too large (%zu bytes)", n);
    if ((rc = meta_ad(ad, adlen, &full, &fulllen)) != 0)
        return rc;
    buf = malloc(1 + n + AEAD_OVERHEAD);
    if (!buf) {
        free(full);
        return pfs_err(-ENOMEM, "out of memory");
    }
    buf[0] = WRAPPED_VERSION;
    rc = aead_seal(fk->meta_key, full, fulllen, pt, n, buf + 1);
    free(full);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *outlen = 1 + n + AEAD_OVERHEAD;
    return 0;
}

int folder_meta_open(const struct folder_keys *fk, const void *ad, size_t adlen,
                     const uint8_t *in, size_t inlen, uint8_t **out, size_t *outlen)
{
    uint8_t *full, *buf;
    size_t fulllen, n;
    int rc;

    *out = NULL;
    if (inlen < 1 + AEAD_OVERHEAD || in[0] != WRAPPED_VERSION)
        return pfs_err(-EBADMSG, "sealed metadata value is truncated or has an unknown "
                       "version");
    n = inlen - 1 - AEAD_OVERHEAD;
    if ((rc = meta_ad(ad, adlen, &full, &fulllen)) != 0)
        return rc;
    /* One spare byte: symlink targets come back NUL-terminated. */
    buf = malloc(n + 1);
    if (!buf) {
        free(full);
        return pfs_err(-ENOMEM, "out of memory");
    }
    rc = aead_open(fk->meta_key, full, fulllen, in + 1, inlen - 1, buf);
    free(full);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return 0;
}

int folder_meta_ad(const char *label, uint64_t ino, const char *extra, uint8_t *ad, size_t *adlen)
{
    struct wbuf w;
    size_t len;
    uint8_t *p;

    wbuf_init(&w);
    wbuf_put_bytes(&w, label, strlen(label));
    wbuf_put_u64(&w, ino);
    if (extra)
        wbuf_put_str(&w, extra);
    p = wbuf_steal(&w, &len);
    if (!p || len > FOLDER_META_AD_MAX) {
        free(p);
        return -ENOMEM;
    }
    memcpy(ad, p, len);
    *adlen = len;
    free(p);
    return 0;
}
