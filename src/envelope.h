/* Digital envelopes, file data keys and encrypted names.
 *
 * A contract folder has a random 256-bit folder key (FK), versioned: a
 * revoke rotates it and new data uses the new version.  From FK, HKDF with
 * distinct labels derives one key per job:
 *   wrap_key  "pactfs v1 folder dek wrap"    AES-256-GCM over file DEKs
 *   name_key  "pactfs v1 folder names" (64B) AES-256-SIV over names
 *   meta_key  "pactfs v1 folder metadata"    AES-256-GCM over symlink
 *                                             targets and xattr values
 *   bind_key  "pactfs v2 folder dirent binding"  HMAC-SHA-256 binding a
 *                                             directory entry to its child
 * The envelope of a member is RSA-OAEP-SHA-256(member public key, FK) with
 * the OAEP label binding vault id, folder id and key version.
 * Byte layouts: docs/format.md.
 */
#ifndef PACTFS_ENVELOPE_H
#define PACTFS_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "crypto.h"

#define FOLDER_KEY_LEN 32
#define DEK_LEN 32
/* version byte + nonce + wrapped DEK + tag */
#define DEK_WRAPPED_LEN (1 + AEAD_OVERHEAD + DEK_LEN)
#define NAME_MAX_PLAIN 255
#define NAME_MAX_ENC (NAME_MAX_PLAIN + SIV_TAG_LEN + 1)

/* Keys derived from one folder key; lives in secmem. */
struct folder_keys {
    uint32_t key_version;
    uint8_t wrap_key[AEAD_KEY_LEN];
    uint8_t name_key[SIV_KEY_LEN];
    uint8_t meta_key[AEAD_KEY_LEN];
    uint8_t bind_key[SHA256_LEN];
};

int folder_key_generate(uint8_t fk[FOLDER_KEY_LEN]);

/* secmem-allocated folder_keys derived from fk; free with folder_keys_free. */
struct folder_keys *folder_keys_derive(const uint8_t fk[FOLDER_KEY_LEN], uint32_t key_version);
void folder_keys_free(struct folder_keys *k);

/* The member's envelope (malloc'd). */
int envelope_seal(EVP_PKEY *member_pub, const char *vault_id, uint64_t folder_id,
                  uint32_t key_version, const uint8_t fk[FOLDER_KEY_LEN],
                  uint8_t **env, size_t *envlen);
int envelope_open(EVP_PKEY *member_priv, const char *vault_id, uint64_t folder_id,
                  uint32_t key_version, const uint8_t *env, size_t envlen,
                  uint8_t fk[FOLDER_KEY_LEN]);

int dek_generate(uint8_t dek[DEK_LEN]);
/* AD binds the inode number: a wrapped DEK cannot be moved to another file. */
int dek_wrap(const struct folder_keys *fk, uint64_t ino, const uint8_t dek[DEK_LEN],
             uint8_t out[DEK_WRAPPED_LEN]);
int dek_unwrap(const struct folder_keys *fk, uint64_t ino, const uint8_t *in, size_t inlen,
               uint8_t dek[DEK_LEN]);

/* Deterministic name encryption: same (parent, name) gives the same bytes,
 * so lookups use an index.  out needs len + SIV_TAG_LEN + 1 bytes; name
 * length 1..NAME_MAX_PLAIN. */
int name_encrypt(const struct folder_keys *fk, uint64_t parent_ino,
                 const char *name, size_t len, uint8_t *out, size_t *outlen);
/* out needs inlen bytes; it is NUL-terminated.  -EBADMSG if it does not
 * authenticate (wrong folder or tampered). */
int name_decrypt(const struct folder_keys *fk, uint64_t parent_ino,
                 const uint8_t *in, size_t inlen, char *out, size_t *outlen);

/* A directory entry's binding: the encrypted name (deterministic, so the
 * lookup stays indexed) says nothing about the child the row points at, so
 * each entry also carries
 *   bind = u8 version (2) || HMAC-SHA-256(bind_key, "pactfs v2 dirent"
 *          || u64 parent || blob(encrypted name) || u64 child ino
 *          || u32 type bits of the child)
 * under the same folder key version as its name.  A row whose ino or type
 * was changed, or that was moved to another directory, fails the check. */
#define DIRENT_BIND_VERSION 2
#define DIRENT_BIND_LEN (1 + SHA256_LEN)
int dirent_bind(const struct folder_keys *fk, uint64_t parent_ino, const uint8_t *enc,
                size_t enclen, uint64_t child_ino, uint32_t mode, uint8_t out[DIRENT_BIND_LEN]);
/* 0, or -EBADMSG with pfs_err naming the check "entry binding". */
int dirent_bind_check(const struct folder_keys *fk, uint64_t parent_ino, const uint8_t *enc,
                      size_t enclen, uint64_t child_ino, uint32_t mode, const uint8_t *bind,
                      size_t bindlen);

/* Small metadata values (symlink targets, xattr values); label names the
 * purpose and owner (e.g. "symlink" + ino).  *out malloc'd. */
int folder_meta_seal(const struct folder_keys *fk, const void *ad, size_t adlen,
                     const void *pt, size_t n, uint8_t **out, size_t *outlen);
int folder_meta_open(const struct folder_keys *fk, const void *ad, size_t adlen,
                     const uint8_t *in, size_t inlen, uint8_t **out, size_t *outlen);
/* Their associated data: label || u64 ino || blob(extra) if any (the
 * purpose, the inode and, for an xattr, its plaintext name), so the
 * database operator cannot move a value to another file or another
 * attribute of the same file.  ad needs FOLDER_META_AD_MAX bytes. */
#define FOLDER_META_AD_MAX (32 + 8 + 4 + NAME_MAX_PLAIN)
int folder_meta_ad(const char *label, uint64_t ino, const char *extra, uint8_t *ad,
                   size_t *adlen);

#endif
