/* The per-file commitment: what a regular file's chunk records and size
 * must be, authenticated under a key only the file's readers hold.
 *
 * The metadata store is untrusted.  A file's content is (size, the chunk
 * record of every chunk index that holds data; every other index below
 * ceil(size / chunk size) is a hole).  Each chunk is AEAD-sealed with its
 * (inode, index, version), but nothing in the chunk says it is the CURRENT
 * version, nor that a missing record is a hole.  The commitment closes that:
 *
 *   key    = HKDF-SHA-256(DEK, info "pactfs v2 file commitment")
 *   record = u8 layout (1) || u8 alg (1 = HMAC-SHA-256) || u64 generation
 *            || u64 nchunks || mac(32)                          (50 bytes)
 *   mac    = HMAC-SHA-256(key, "pactfs v2 file commitment" || u64 ino
 *            || u64 size || u64 generation || u64 nchunks
 *            || for each chunk record in index order:
 *               u64 idx || u64 version || SHA-256(record bytes))
 *   record bytes = chunk_id(16) || u64 version || u32 plain_len
 *            || u32 sealed_len || u8 k || u8 m || u8 rotation
 *            || sums of the k+m fragments (32 each)
 *
 * The commit that changes a file's chunks or size rewrites it in the same
 * metadata transaction (generation + 1).  A reader checks it at open over
 * every chunk record and the size, and checks each record it later reads
 * against the verified list.  A deleted, added, older or foreign record, a
 * changed size or a truncated list does not verify.  Layout: docs/format-
 * metadata.md ("File commitment").  One concern: this module only encodes,
 * parses and verifies; the FUSE layer decides when.
 */
#ifndef PACTFS_FILECOMMIT_H
#define PACTFS_FILECOMMIT_H

#include <stddef.h>
#include <stdint.h>

#include "crypto.h"
#include "object.h"

#define FC_LAYOUT 1
#define FC_ALG_HMAC_SHA256 1
#define FC_KEY_LEN 32
#define FC_MAC_LEN SHA256_LEN
#define FC_RECORD_LEN (1 + 1 + 8 + 8 + FC_MAC_LEN)
#define FC_KEY_LABEL "pactfs v2 file commitment"

/* One chunk record as the commitment sees it. */
struct fc_entry {
    uint64_t idx;
    uint64_t version;
    uint8_t digest[SHA256_LEN];   /* SHA-256 of the record bytes */
};

/* A file's chunk records, sorted by idx, each idx once. */
struct fc_list {
    struct fc_entry *e;
    size_t n, cap;
};

/* A parsed stored record. */
struct fc_record {
    uint64_t generation;
    uint64_t nchunks;
    uint8_t mac[FC_MAC_LEN];
};

/* The commitment key of a file (HKDF from its DEK, own label). */
int fc_key_derive(const uint8_t dek[32], uint8_t key[FC_KEY_LEN]);

/* SHA-256 of the canonical bytes of a chunk record. */
void fc_ref_digest(const struct chunk_ref *ref, uint8_t out[SHA256_LEN]);

void fc_list_init(struct fc_list *l);
void fc_list_free(struct fc_list *l);
/* Copy src into dst (dst initialised; its old entries are freed). */
int fc_list_copy(struct fc_list *dst, const struct fc_list *src);
/* Insert or replace the entry of idx. */
int fc_list_set(struct fc_list *l, uint64_t idx, const struct chunk_ref *ref);
/* Remove every entry with idx >= from. */
void fc_list_truncate(struct fc_list *l, uint64_t from);
/* The entry of idx, or NULL (a hole). */
const struct fc_entry *fc_list_find(const struct fc_list *l, uint64_t idx);
/* Does ref match the entry committed for idx?  1 yes, 0 no (NULL = hole). */
int fc_entry_matches(const struct fc_entry *e, const struct chunk_ref *ref);

/* Parse a stored record: 0, or -EBADMSG (layout/alg/length) with pfs_err. */
int fc_parse(const uint8_t *in, size_t len, struct fc_record *out);

/* The record for (ino, size, generation, list) into out. */
int fc_seal(const uint8_t key[FC_KEY_LEN], uint64_t ino, uint64_t size, uint64_t generation,
            const struct fc_list *l, uint8_t out[FC_RECORD_LEN]);

/* Check a stored record against the size and chunk list read from the
 * metadata.  0 (and *rec filled if rec != NULL), or -EBADMSG with pfs_err
 * naming the check that failed:
 *   "commitment record": missing or malformed (never written, or altered)
 *   "chunk count": the list has another number of chunk records
 *   "commitment MAC": size, a record, a version or an index differs
 * min_generation: a record older than that is refused ("generation"), so a
 * reader never goes back to a state older than one it verified. */
int fc_verify(const uint8_t key[FC_KEY_LEN], uint64_t ino, uint64_t size,
              const struct fc_list *l, const uint8_t *in, size_t len,
              uint64_t min_generation, struct fc_record *rec);

#endif
