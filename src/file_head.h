/* The signed file head: freshness of every regular file's commitment.
 *
 * A file's commitment (filecommit.h) proves that its size and chunk list
 * are ones its writer committed, and carries a generation that grows with
 * each commit.  It cannot say that it is the CURRENT one: the database
 * operator may put back a file's older genuine rows (commitment, chunk
 * records, and fragments kept by not running the deletion queue).  The
 * vault head (vault_head.h) is signed by administrators only and covers
 * folder states and registry records, not files.
 *
 * The file head closes that: a signed list of generation floors, one per
 * regular file the metadata has held, sorted by inode number:
 *
 *   tbs  = "PFFH" | u8 1 | str vault_id | u64 counter | u64 signer_id |
 *          i64 time | u32 n | n x (u64 ino, u64 generation)
 *   blob = blob(tbs) | blob(RSA-PSS-SHA256 signature over tbs)
 *
 * stored as vault parameter "file_head".  A mount that committed files
 * signs the next head with its account key at most every few seconds (and
 * at unmount), never per commit: counter + 1, every floor of the head it
 * replaces kept (a deleted file's floor stays, so its inode cannot come
 * back older) and raised to the generation each file's row holds now.
 * The newest head a client verified is anchored outside the metadata store
 * like the vault head (the local key directory, or pactfs-keyd), under the
 * slot vault_id FILE_HEAD_ANCHOR_SUFFIX.  A mount refuses a head older
 * than the anchor (exit 17), and a file whose verified commitment is older
 * than its floor does not open (EIO, audited "tamper" naming the file).
 * Generations are not secret and need no key to read: floors are taken
 * from the stored records without verifying them (a forged higher
 * generation only makes that file fail, which the operator could do
 * anyway).  docs/format-metadata.md ("Signed file head").
 */
#ifndef PACTFS_FILE_HEAD_H
#define PACTFS_FILE_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "crypto.h"
#include "meta.h"

#define FILE_HEAD_PARAM "file_head"
#define FILE_HEAD_ANCHOR_SUFFIX "#files"
#define FILE_HEAD_MAX_BLOB (64u * 1024u * 1024u)   /* = META_LARGE_PARAM_MAX */

struct fh_entry {
    uint64_t ino;
    uint64_t generation;       /* the lowest commitment generation allowed */
};

struct file_head {
    uint64_t counter;
    uint64_t signer_id;
    int64_t time;
    size_t n;
    struct fh_entry *e;        /* sorted by ino, each once */
};
void file_head_clear(struct file_head *h);

/* Decode without checking the signature (c: the signed bytes and the
 * signature, pointing into blob). */
int file_head_decode(const char *vault_id, const uint8_t *blob, size_t len,
                     struct file_head *h, struct sig_container *c);
/* Encode and sign (h->signer_id set).  *blob malloc'd. */
int file_head_sign(EVP_PKEY *signer, const char *vault_id, uint64_t signer_id,
                   struct file_head *h, uint8_t **blob, size_t *blob_len);

/* The floor of ino, 0 if the head does not list it. */
uint64_t file_head_floor(const struct file_head *h, uint64_t ino);

/* Is cur no older than prev, entry by entry (every file of prev listed in
 * cur with a floor no lower)?  0, or -ESTALE naming the first one. */
int file_head_not_older(const struct file_head *prev, const struct file_head *cur,
                        const char *source);

/* out = the floors of prev (may be NULL), each raised to the generation the
 * metadata holds now, plus the files prev does not list (counter, signer
 * unset).  A file whose row holds a generation below its floor keeps the
 * floor; *behind counts them and *first_behind names the first (both may
 * be NULL). */
int file_head_compute(struct meta *m, const struct file_head *prev, struct file_head *out,
                      size_t *behind, uint64_t *first_behind);

/* Verify the stored head: it decodes and its signature verifies under the
 * root key or the verified registry key of its signer (any account with a
 * registry record: every mount signs).  -ENOENT when there is none,
 * -EBADMSG when it does not verify.  raw (optional) receives the stored
 * blob. */
int file_head_load(struct meta *m, const char *vault_id, const char *root_fp,
                   struct file_head *h, uint8_t **raw, size_t *raw_len);

/* Compare a verified head (raw) with the anchored (counter, hash): 0 if it
 * is the anchored one or newer, -ESTALE with a message otherwise. */
int file_head_check_anchor(const struct file_head *h, const uint8_t *raw, size_t raw_len,
                           uint64_t a_counter, const uint8_t a_hash[SHA256_LEN],
                           const char *source);

/* Sign and store the next head in one transaction (the head lock held):
 * its previous head is the stored one merged with known (the newest this
 * caller verified, may be NULL: a stored head older than it, or missing,
 * was rolled back -- *rolled_back set, the floors of known kept).  On
 * success *out is the new head and *raw its stored bytes. */
int file_head_advance(struct meta *m, const char *vault_id, const char *root_fp,
                      EVP_PKEY *signer, uint64_t signer_id, const struct file_head *known,
                      struct file_head *out, uint8_t **raw, size_t *raw_len,
                      int *rolled_back, size_t *behind, uint64_t *first_behind);

/* In the caller's transaction, before account if_signer's key stops
 * verifying (re-enrolment): if the stored head verifies and if_signer
 * signed it, sign the same floors again as signer (counter + 1), so that
 * mounts still verify it.  0 also when there is nothing to carry over. */
int file_head_resign(struct meta *m, const char *vault_id, const char *root_fp,
                     uint64_t if_signer, EVP_PKEY *signer, uint64_t signer_id);

#endif
