/* The object layer: one chunk of plaintext in, fragments on n endpoints out.
 *
 * put:  seal (AES-256-GCM under the file's DEK, fresh nonce, AD binds format,
 *       algorithm, inode, chunk index and chunk version) -> split and
 *       Reed-Solomon code into k+m fragments -> fragment i to endpoint
 *       (rotation + i) mod n, as object "<chunk id hex>.<i>" -> SHA-256 of each
 *       fragment recorded in the chunk_ref for the metadata store.
 * get:  fetch fragments (data fragments first), skip missing ones and ones
 *       whose SHA-256 differs, decode from the first k good ones, open.
 *       Fewer than k good fragments or a failed open is -EIO, never wrong
 *       bytes.  Fragments that need repair are reported in a bitmask.
 * repair: rebuild bad fragments from good ones using only fragments and
 *       checksums, never a key (so a sysadmin can heal what they cannot read).
 *
 * The chunk id is random, so endpoint object names reveal nothing about
 * which file or offset they belong to.  Layouts: docs/format-objects.md.
 */
#ifndef PACTFS_OBJECT_H
#define PACTFS_OBJECT_H

#include <stddef.h>
#include <stdint.h>

#include "crypto.h"
#include "erasure.h"
#include "store.h"

#define CHUNK_ID_LEN 16
#define FRAG_SUM_LEN SHA256_LEN
#define OBJECT_NAME_MAX 48
/* A pack's id: 12 random bytes and its creation time (u32 BE unix seconds),
 * so the gc can tell a pack younger than its grace period without asking
 * the (untrusted) metadata store. */
#define PACK_ID_LEN 16
/* Largest pack_max (coding.pack_max): chunks sealed to more go standalone. */
#define PACK_MAX_LIMIT (1024 * 1024)

/* What the metadata store records for one chunk version. */
struct chunk_ref {
    uint8_t chunk_id[CHUNK_ID_LEN];
    uint64_t version;        /* increases on every rewrite of (ino, idx) */
    uint32_t plain_len;      /* plaintext bytes in this chunk */
    uint32_t sealed_len;     /* sealed bytes before padding */
    uint8_t k, m;            /* coding used */
    uint8_t rotation;        /* fragment i lives on endpoint (rotation+i) % n */
    uint8_t sums[EC_MAX_FRAGS][FRAG_SUM_LEN];
    /* Packed (docs/format-objects.md, "Packs"): fragment i is the fraglen
     * bytes at pack_offs[i] of object "<pack hex>.p" on endpoint
     * (rotation + i) % n; a repaired fragment is standalone, as unpacked. */
    uint8_t packed;
    uint8_t pack[PACK_ID_LEN];
    uint32_t pack_offs[EC_MAX_FRAGS];
};

struct object_layer;

/* Takes ownership of nothing: stores stay the caller's.  n >= k + m. */
int object_layer_new(struct store **stores, unsigned n, unsigned k, unsigned m,
                     struct object_layer **out);
void object_layer_free(struct object_layer *ol);
unsigned object_layer_nstores(const struct object_layer *ol);
struct store *object_layer_store(const struct object_layer *ol, unsigned i);

/* "<hex chunk id>.<frag index>" into out (OBJECT_NAME_MAX bytes). */
void object_fragment_name(const uint8_t chunk_id[CHUNK_ID_LEN], unsigned frag, char *out);
/* "<hex pack id>.p" into out (OBJECT_NAME_MAX bytes). */
void object_pack_name(const uint8_t pack[PACK_ID_LEN], char *out);
/* Creation time (unix seconds) written into a pack id. */
uint32_t object_pack_time(const uint8_t pack[PACK_ID_LEN]);
/* Endpoint index of fragment frag of ref. */
unsigned object_fragment_store(const struct object_layer *ol, const struct chunk_ref *ref,
                               unsigned frag);

/* Seal, code and scatter one chunk; fills *out (new random chunk id,
 * rotation chosen from idx so parity load spreads).  Fragments are written
 * to the n endpoints in parallel.  Durable after object_layer_sync(). */
int object_put_chunk(struct object_layer *ol, const uint8_t dek[32], uint64_t ino,
                     uint64_t idx, uint64_t version, const void *plain, size_t len,
                     struct chunk_ref *out);

/* The same, but with some endpoints failing: succeeds if at least
 * object_layer_write_min() fragments were stored.  *missing gets bit i set
 * for each fragment i that could not be (the caller records it for repair;
 * the ref's checksums cover it, so a repair needs no key); then
 * pfs_err_msg() names the first failure. */
int object_put_chunk_degraded(struct object_layer *ol, const uint8_t dek[32], uint64_t ino,
                              uint64_t idx, uint64_t version, const void *plain, size_t len,
                              struct chunk_ref *out, uint32_t *missing);

/* Fewest fragments object_put_chunk_degraded must store: k..k+m (the
 * vault's coding.min_write_fragments; default of the layer: k+m, i.e. no
 * degraded writes). */
int object_layer_set_write_min(struct object_layer *ol, unsigned min);
unsigned object_layer_write_min(const struct object_layer *ol);

/* Health of endpoint i as seen by this process's operations. */
struct object_endpoint_stats {
    uint64_t ops, errors;          /* operations done, failed */
    uint64_t last_latency_us;      /* of the last successful one */
    int last_ok;                   /* the last one succeeded */
    int put_failing;               /* the last put to it failed */
    int64_t last_error_time;       /* unix seconds; 0: never */
    char last_error[256];
};
void object_layer_endpoint_stats(struct object_layer *ol, unsigned i,
                                 struct object_endpoint_stats *out);

/* Gather, decode, open.  plain must hold ref->plain_len bytes.  *bad_mask
 * (optional) gets bit i set for each fragment missing or corrupt. */
int object_get_chunk(struct object_layer *ol, const uint8_t dek[32], uint64_t ino,
                     uint64_t idx, const struct chunk_ref *ref, void *plain,
                     uint32_t *bad_mask);

/* Check every fragment's presence and checksum without a key; bit i of
 * *bad_mask set for each bad one.  Returns 0, or -EIO if fewer than k good. */
int object_verify_chunk(struct object_layer *ol, const struct chunk_ref *ref,
                        uint32_t *bad_mask);

/* Rebuild the fragments in bad_mask from the good ones and write them back
 * (checksums must then match the ref).  No key needed. */
int object_repair_chunk(struct object_layer *ol, const struct chunk_ref *ref,
                        uint32_t bad_mask);

/* Delete every fragment of a chunk (missing ones are not an error). */
int object_delete_chunk(struct object_layer *ol, const struct chunk_ref *ref);

/* Chunks sealed to at most max bytes are packed (0: none).  <= PACK_MAX_LIMIT. */
int object_layer_set_pack_max(struct object_layer *ol, size_t max);

/* Durability barrier across all endpoints: writes the open pack's parts
 * (and retries parts that failed before), then syncs every endpoint.  One
 * sync runs at a time.  With degraded writes allowed (write_min < k+m), up
 * to k+m-write_min endpoints may fail it; a pack part lost that way is
 * logged (its chunks read from the other endpoints; pactfs-fsck --repair
 * restores it standalone). */
int object_layer_sync(struct object_layer *ol);

/* A pack part lost at a sync that degraded writes tolerate: called, from
 * inside object_layer_sync, for each chunk with fragments in that part
 * (missing: their bits), with pfs_err_msg() naming the failure, so the
 * caller queues their repair as for a degraded put. */
typedef void (*object_lost_fn)(void *arg, uint64_t ino, uint64_t idx,
                               const struct chunk_ref *ref, uint32_t missing);
void object_layer_set_lost_cb(struct object_layer *ol, object_lost_fn fn, void *arg);

/* Packs that failed to be written and wait for the next sync's retry. */
unsigned object_layer_packs_waiting(struct object_layer *ol);

/* Delete the pack's object on every endpoint (missing ones are not an
 * error): the gc, once no chunk record names the pack. */
int object_delete_pack(struct object_layer *ol, const uint8_t pack[PACK_ID_LEN]);

#endif
