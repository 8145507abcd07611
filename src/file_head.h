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
 * The file head closes that: generation floors, one per regular file the
 * metadata has held.  Format 2 (this build writes it) splits the floors
 * into buckets of 2^FILE_HEAD_BUCKET_SHIFT inode numbers, each stored as its
 * own vault parameter "file_head/<bucket>", unsigned:
 *
 *   bucket = "PFFB" | u8 1 | str vault_id | u64 bucket | u32 n |
 *            n x (u64 ino, u64 generation)    (sorted, n >= 1, ino >> SHIFT
 *                                               == bucket, generation > 0)
 *
 * and a small signed root, vault parameter "file_head", listing every
 * bucket with the SHA-256 of its bytes:
 *
 *   tbs  = "PFFH" | u8 2 | str vault_id | u64 counter | u64 signer_id |
 *          i64 time | u32 nb | nb x (u64 bucket, 32 bytes SHA-256(bucket))
 *   blob = blob(tbs) | blob(RSA-PSS-SHA256 signature over tbs)
 *
 * Format 1 (earlier builds) was one signed blob listing every floor:
 *   tbs  = "PFFH" | u8 1 | str vault_id | u64 counter | u64 signer_id |
 *          i64 time | u32 n | n x (u64 ino, u64 generation)
 * It is still read, and the first advance rewrites it as format 2.
 *
 * A mount that committed files signs the next root with its account key at
 * most every few seconds (and at unmount), never per commit: counter + 1,
 * rewriting only the buckets of the files it committed since its last
 * advance (and of buckets another writer changed or the operator altered),
 * every floor kept (a deleted file's floor stays, so its inode cannot come
 * back older) and raised to the generation each file's row holds now.
 * The newest root a client verified is anchored outside the metadata store
 * like the vault head (the local key directory, or pactfs-keyd), under the
 * slot vault_id FILE_HEAD_ANCHOR_SUFFIX.  A mount refuses a root older than
 * the anchor (exit 17), a bucket whose bytes do not match the hash its root
 * signed (altered, deleted, or taken from another head: exit 14), and a
 * file whose verified commitment is older than its floor does not open
 * (EIO, audited "tamper" naming the file).  Generations are not secret and
 * need no key to read: floors are taken from the stored records without
 * verifying them (a forged higher generation only makes that file fail,
 * which the operator could do anyway).  docs/format-metadata.md ("Signed
 * file head").
 */
#ifndef PACTFS_FILE_HEAD_H
#define PACTFS_FILE_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "crypto.h"
#include "meta.h"

#define FILE_HEAD_PARAM "file_head"
#define FILE_HEAD_BUCKET_PREFIX "file_head/"      /* + decimal bucket number */
#define FILE_HEAD_BUCKET_SHIFT 10                  /* 1024 inode numbers a bucket */
#define FILE_HEAD_ANCHOR_SUFFIX "#files"
#define FILE_HEAD_MAX_BLOB (64u * 1024u * 1024u)   /* = META_LARGE_PARAM_MAX (format 1) */

struct fh_entry {
    uint64_t ino;
    uint64_t generation;       /* the lowest commitment generation allowed */
};

struct fh_bref {               /* a bucket as the root lists it */
    uint64_t id;
    uint8_t hash[SHA256_LEN];
};

struct file_head {
    uint64_t counter;
    uint64_t signer_id;
    int64_t time;
    int version;               /* as stored: 1 or 2 (0: none) */
    size_t n;
    struct fh_entry *e;        /* every floor, sorted by ino, each once */
    size_t nb;
    struct fh_bref *b;         /* format 2: the root's buckets, sorted by id */
    uint8_t raw_hash[SHA256_LEN];   /* of the stored root (load, advance, refresh) */
};
void file_head_clear(struct file_head *h);

/* What an advance or refresh changed: the new root and the buckets whose
 * floors it holds now (file_head_apply puts them into a head). */
struct fh_bucket {
    uint64_t id;
    size_t n;
    struct fh_entry *e;
};
struct fh_delta {
    uint64_t counter, signer_id;
    int64_t time;
    uint8_t raw_hash[SHA256_LEN];
    size_t nb;
    struct fh_bref *b;         /* the whole new root */
    size_t nc;
    struct fh_bucket *c;       /* changed buckets, sorted by id */
    int full;                  /* c lists every bucket (a format-1 head, or a rebuild) */
    int version;               /* of the new root */
};
void file_head_delta_clear(struct fh_delta *d);
/* Put d into h (h's floors of d's buckets replaced, root taken). */
int file_head_apply(struct file_head *h, const struct fh_delta *d);

/* Rows and bytes an advance or refresh read and wrote (the cost is
 * proportional to the buckets it touched, not to the files). */
struct fh_stats {
    size_t rows_read, bytes_read, rows_written, bytes_written;
};

/* The parameter key of a bucket (out: at least 48 bytes). */
void file_head_bucket_key(uint64_t id, char *out, size_t len);
/* Encode (malloc'd) and decode a bucket (decode: *e malloc'd). */
int file_head_bucket_encode(const char *vault_id, uint64_t id, const struct fh_entry *e,
                            size_t n, uint8_t **blob, size_t *len);
int file_head_bucket_decode(const char *vault_id, uint64_t id, const uint8_t *blob,
                            size_t len, struct fh_entry **e, size_t *n);

/* Decode a root without checking the signature (c: the signed bytes and
 * the signature, pointing into blob): format 2 fills b, format 1 fills e. */
int file_head_decode(const char *vault_id, const uint8_t *blob, size_t len,
                     struct file_head *h, struct sig_container *c);
/* Encode and sign a format-2 root over h->b (h->signer_id set).  *blob
 * malloc'd.  file_head_sign_v1: a format-1 head over h->e (tests of the
 * conversion). */
int file_head_sign(EVP_PKEY *signer, const char *vault_id, uint64_t signer_id,
                   struct file_head *h, uint8_t **blob, size_t *blob_len);
int file_head_sign_v1(EVP_PKEY *signer, const char *vault_id, uint64_t signer_id,
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
 * be NULL).  Linear in files: only the first advance of a vault (or of a
 * format-1 head, or after the head was destroyed) runs it. */
int file_head_compute(struct meta *m, const struct file_head *prev, struct file_head *out,
                      size_t *behind, uint64_t *first_behind);

/* Verify the stored head in full: the root decodes and its signature
 * verifies under the root key or the verified registry key of its signer
 * (any account with a registry record: every mount signs), and every bucket
 * it lists is stored with the hash it signed.  -ENOENT when there is none,
 * -EBADMSG when it does not verify (a bucket altered, deleted, or of
 * another head).  raw (optional) receives the stored root. */
int file_head_load(struct meta *m, const char *vault_id, const char *root_fp,
                   struct file_head *h, uint8_t **raw, size_t *raw_len);
/* The same in two steps, so that the root can be compared with its anchor
 * before its buckets are read: the root verified (format 1: every floor),
 * then (format 2) every bucket it lists; h cleared on failure. */
int file_head_load_root(struct meta *m, const char *vault_id, const char *root_fp,
                        struct file_head *h, uint8_t **raw, size_t *raw_len);
int file_head_load_buckets(struct meta *m, const char *vault_id, struct file_head *h);

/* Compare a verified head (raw: its root) with the anchored (counter,
 * hash): 0 if it is the anchored one or newer, -ESTALE with a message
 * otherwise. */
int file_head_check_anchor(const struct file_head *h, const uint8_t *raw, size_t raw_len,
                           uint64_t a_counter, const uint8_t a_hash[SHA256_LEN],
                           const char *source);

/* Sign and store the next head in one transaction (the head lock held).
 * known: the newest head this caller verified (may be NULL); dirty: the
 * files it committed since (ndirty, any order, repeats allowed).  Reads the
 * stored root, the buckets whose hash differs from known's (another mount
 * advanced), the rows of the dirty files; writes their buckets and the
 * root.  A stored head older than known, missing, altered, or with a
 * bucket that does not match: *rolled_back set, known's floors kept.  A
 * format-1 head, none, or a rolled-back one is rebuilt in full from every
 * file's row (file_head_compute).  On success *d is what changed (apply it
 * to known) and *raw the stored root.  stats may be NULL. */
int file_head_advance(struct meta *m, const char *vault_id, const char *root_fp,
                      EVP_PKEY *signer, uint64_t signer_id, const struct file_head *known,
                      const uint64_t *dirty, size_t ndirty, struct fh_delta *d,
                      uint8_t **raw, size_t *raw_len, int *rolled_back, size_t *behind,
                      uint64_t *first_behind, struct fh_stats *stats);

/* The same advance in three steps, so that the caller can sign without
 * holding what serialises its use of m (the mount's metadata lock):
 * prepare reads (the stored root, the buckets another writer changed, the
 * dirty files' rows) and plans the buckets to write; seal encodes them and
 * signs the root, touching no metadata; publish writes them in one
 * transaction under the head lock only if the stored root is still the one
 * prepare read (-EAGAIN otherwise: prepare again).  result hands over what
 * file_head_advance returns. */
struct fh_prep;
int file_head_prepare(struct meta *m, const char *vault_id, const char *root_fp,
                      const struct file_head *known, const uint64_t *dirty, size_t ndirty,
                      struct fh_prep **out, struct fh_stats *stats);
int file_head_seal(struct fh_prep *x, EVP_PKEY *signer, const char *vault_id,
                   uint64_t signer_id);
int file_head_publish(struct meta *m, struct fh_prep *x, struct fh_stats *stats);
int file_head_prep_result(struct fh_prep *x, struct fh_delta *d, uint8_t **raw,
                          size_t *raw_len, int *rolled_back, size_t *behind,
                          uint64_t *first_behind);
void file_head_prep_free(struct fh_prep *x);

/* Another mount may have advanced the stored head: if its root's bytes
 * differ from known's, verify it and read only the buckets whose hash
 * changed.  0 with d->nb == 0 and d->counter == 0: nothing new; 0 with d
 * filled: apply it; -ESTALE: the stored head is older than known (a
 * counter below, or a floor lower or dropped), -ENOENT: none stored,
 * -EBADMSG: it does not verify.  stats may be NULL. */
int file_head_refresh(struct meta *m, const char *vault_id, const char *root_fp,
                      const struct file_head *known, struct fh_delta *d,
                      struct fh_stats *stats);

/* In the caller's transaction, before account if_signer's key stops
 * verifying (re-enrolment): if the stored head verifies and if_signer
 * signed it, sign the same root again as signer (counter + 1), so that
 * mounts still verify it.  0 also when there is nothing to carry over. */
int file_head_resign(struct meta *m, const char *vault_id, const char *root_fp,
                     uint64_t if_signer, EVP_PKEY *signer, uint64_t signer_id);

#endif
