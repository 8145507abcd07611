/* The signed state of a contract folder: its current key version and its
 * members (account ids with their rights), signed by the dataadmin who last
 * changed it, with a counter that only grows.
 *
 * The folders and envelopes tables are written by whoever operates the
 * metadata store, so the key version new data goes under and the list of
 * accounts a rotated key is wrapped for are never taken from them: they come
 * from this state, which only a dataadmin holding manage on the folder signs.
 *
 * Storage (no schema change): vault parameter "folder_state.<folder id>"
 *   blob(tbs) | blob(RSA-PSS-SHA256 signature over tbs)
 *   tbs = "PFSF" | u8 1 | str vault_id | u64 folder_id | u64 counter |
 *         u32 key_version | u64 signer_id | u32 n | n x (u64 account_id, u32 rights)
 * Members are sorted by account id, unique, with known non-empty rights.
 * Layout and rules: docs/accounts.md ("Signed folder state").
 */
#ifndef PACTFS_FOLDER_STATE_H
#define PACTFS_FOLDER_STATE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "meta.h"

#define FOLDER_STATE_MAX_MEMBERS 65536u
#define FOLDER_STATE_MAX_BLOB (1024u * 1024u)

struct folder_member {
    uint64_t account_id;
    uint32_t rights;                  /* RIGHT_* */
};

struct folder_state {
    uint64_t folder_id;
    uint64_t counter;                 /* 1 at creation, +1 at every change */
    uint32_t key_version;             /* the folder key version for new data */
    uint64_t signer_id;               /* the dataadmin who signed it */
    size_t nmembers;
    struct folder_member *members;    /* malloc'd, sorted by account id */
};
void folder_state_clear(struct folder_state *s);

/* Rights of account_id in s (0: not a member). */
uint32_t folder_state_rights(const struct folder_state *s, uint64_t account_id);
/* Add or replace a member (rights != 0), or remove it (rights == 0). */
int folder_state_set_member(struct folder_state *s, uint64_t account_id, uint32_t rights);

/* Encode and sign s (s->signer_id is set to signer_id). *blob is malloc'd. */
int folder_state_sign(EVP_PKEY *signer, const char *vault_id, uint64_t signer_id,
                      struct folder_state *s, uint8_t **blob, size_t *blob_len);
/* Decode a stored blob (no signature check): everything well formed, the
 * vault id equal, members sorted and unique.  *tbs and *sig point into blob.
 * -EBADMSG with a message otherwise. */
int folder_state_decode(const char *vault_id, const uint8_t *blob, size_t len,
                        struct folder_state *s, const uint8_t **tbs, size_t *tbs_len,
                        const uint8_t **sig, size_t *sig_len);
/* Decode and check the signature with the signer's public key. */
int folder_state_verify_blob(const char *vault_id, const uint8_t *blob, size_t len,
                             EVP_PKEY *signer, struct folder_state *s);

/* ---- in the metadata store ---- */
/* The stored state of folder_id: -ENOENT if there is none, else verified:
 * decodes, names this folder, the signer verifies in the registry (chain to
 * root_fp), is an enabled dataadmin, is a member with manage in the state,
 * and the signature verifies.  -EBADMSG with a message otherwise.
 * raw/raw_len (optional) receive the stored blob (malloc'd). */
int folder_state_load(struct meta *m, const char *vault_id, const char *root_fp,
                      uint64_t folder_id, struct folder_state *s, uint8_t **raw, size_t *raw_len);
/* Sign and store s as signer (whose record must verify: checked by load).
 * The caller then signs the next vault head (vault_head_advance) in the
 * same transaction. */
int folder_state_store(struct meta *m, const char *vault_id, EVP_PKEY *signer,
                       uint64_t signer_id, struct folder_state *s);
/* The parameter name of a folder's state (out: 48 bytes). */
void folder_state_param(uint64_t folder_id, char *out, size_t outlen);

#endif
