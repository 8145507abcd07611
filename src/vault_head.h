/* The signed vault head: freshness of the metadata as a whole.
 *
 * A head commits to every folder's signed state (its counter, key version
 * and hash) and every account's registry record (its serial and hash), and
 * carries a counter that grows with each change.  Whoever changes a folder
 * state or a registry record signs a new head in the same transaction
 * (folder_state_store, registry_certify call vault_head_advance), and only
 * if the metadata it sees is not older, element by element, than the head
 * it replaces.
 *
 * The newest head a client has verified is anchored outside the metadata
 * store, in the share provider (the local key directory, or pactfs-keyd
 * which keeps the newest per vault): a client refuses a head older than the
 * anchor, a different head with the same counter, or a newer head in which
 * any folder state or registry record went backwards.  So restoring an older
 * copy of the metadata, or one older row, is detected.
 *
 * Storage: vault parameter "vault_head"
 *   blob(tbs) | blob(RSA-PSS-SHA256 signature over tbs)
 *   tbs = "PFSH" | u8 1 | str vault_id | u64 counter | u32 format |
 *         u64 signer_id | i64 time | u32 nf | nf x (u64 folder_id, u64 counter,
 *         u32 key_version, sha256 state) | u32 na | na x (u64 account_id,
 *         u64 serial, sha256 record)
 * Folders and accounts sorted by id; only folder rows with a signed state
 * and account rows with a registry record are listed (a row without one is
 * trusted by nobody).  signer_id 0 is the vault root key (init).
 * docs/format-metadata.md.
 */
#ifndef PACTFS_VAULT_HEAD_H
#define PACTFS_VAULT_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "crypto.h"
#include "meta.h"

#define VAULT_FORMAT 2                   /* the format a head states */
#define VAULT_HEAD_PARAM "vault_head"
#define VAULT_HEAD_MAX_BLOB (16u * 1024u * 1024u)

struct head_folder {
    uint64_t folder_id;
    uint64_t counter;                    /* of its signed state */
    uint32_t key_version;
    uint8_t hash[SHA256_LEN];            /* SHA-256 of the stored state */
};

struct head_account {
    uint64_t account_id;
    uint64_t serial;                     /* of its registry record */
    uint8_t hash[SHA256_LEN];            /* SHA-256 of the stored record */
};

struct vault_head {
    uint64_t counter;
    uint32_t format;
    uint64_t signer_id;
    int64_t time;
    size_t nfolders, naccounts;
    struct head_folder *folders;
    struct head_account *accounts;
};
void vault_head_clear(struct vault_head *h);

/* Decode (no signature check); *tbs and *sig point into blob. */
int vault_head_decode(const char *vault_id, const uint8_t *blob, size_t len,
                      struct vault_head *h, const uint8_t **tbs, size_t *tbs_len,
                      const uint8_t **sig, size_t *sig_len);
/* Encode and sign (h->signer_id set).  *blob malloc'd. */
int vault_head_sign(EVP_PKEY *signer, const char *vault_id, uint64_t signer_id,
                    struct vault_head *h, uint8_t **blob, size_t *blob_len);

/* The entries of the metadata as it is now (counter, signer unset). */
int vault_head_compute(struct meta *m, const char *vault_id, struct vault_head *h);

/* Is cur no older than prev, element by element?  0, or -ESTALE with a
 * message naming the first element that went backwards or vanished
 * (source names where prev came from, for the message). */
int vault_head_not_older(const struct vault_head *prev, const struct vault_head *cur,
                         const char *source);

/* Sign the next head over the metadata as it is now (in the caller's
 * transaction).  -ESTALE if the metadata is older than the stored head. */
int vault_head_advance(struct meta *m, const char *vault_id, EVP_PKEY *signer,
                       uint64_t signer_id);

/* Verify the stored head: it decodes, its signer is the root key or an
 * enabled sysadmin or dataadmin verified in the registry, the signature
 * verifies, and the metadata holds exactly the folder states and registry
 * records it commits to (-EBADMSG naming the first difference).  -ENOENT
 * when there is no head.  raw (optional) receives the stored blob. */
int vault_head_load(struct meta *m, const char *vault_id, const char *root_fp,
                    struct vault_head *h, uint8_t **raw, size_t *raw_len);

/* Compare a verified head (raw, h) with the anchored one: its counter, the
 * SHA-256 of its stored bytes and, if the anchor keeps it (a_blob may be
 * NULL), the head itself.  0 if the head is the anchor or newer (and, with
 * a_blob, no element older); -ESTALE with a message otherwise (source
 * names the anchor's place). */
int vault_head_check_anchor(const char *vault_id, const uint8_t *raw, size_t raw_len,
                            const struct vault_head *h, uint64_t a_counter,
                            const uint8_t a_hash[SHA256_LEN], const uint8_t *a_blob,
                            size_t a_len, const char *source);

#endif
