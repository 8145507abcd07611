/* Endpoint identity and reachability at the vault level.
 *
 * Each endpoint holds one object, ENDPOINT_MARK_OBJECT: a marker naming the
 * vault id and the endpoint's index, signed by a sysadmin whose registry
 * record chains to the vault root pinned in pactfs.conf (the endpoint's
 * operator holds no such key).  A mount checks every endpoint's marker, and
 * so does a watcher while mounted; an endpoint that is unreachable, holds no
 * marker (where one is required), another vault's marker, another
 * endpoint's marker or one that does not verify is OFFLINE: it is never
 * written to, reads treat its fragments as missing (parity rebuilds), and
 * degraded writes go on under coding.min_write_fragments.  Once it is back
 * (reachable, marker verifies) it is used again without a remount.
 *
 * The stores handed to the object layer are guards: each forwards to the
 * real endpoint while it is online and behaves like store_offline.c while it
 * is not; a directory endpoint also checks on every put that its path still
 * names the directory it opened (a rename or a replacement is caught before
 * the first fragment would go to the wrong place).
 *
 * Markers are written by `pactfs-admin init` and `pactfs-admin endpoint-mark`
 * (a sysadmin).  Whether they are required is pinned in the workstation's
 * configuration (vault.endpoint_markers = "required"); a vault made before
 * markers keeps mounting without them (a marker that is present is checked
 * anyway).  Layout: docs/format-objects.md, "Endpoint marker".
 */
#ifndef PACTFS_ENDPOINT_H
#define PACTFS_ENDPOINT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>

#include "conf.h"
#include "meta.h"
#include "store.h"

#define ENDPOINT_MARK_OBJECT "pactfs-endpoint"

enum endpoint_state {
    ENDPOINT_OK = 0,
    ENDPOINT_UNREACHABLE,   /* directory missing, server down, wrong credentials */
    ENDPOINT_UNMARKED,      /* reachable, but no marker where one is required */
    ENDPOINT_FOREIGN,       /* another vault's marker */
    ENDPOINT_MISPLACED,     /* another endpoint's marker of this vault */
    ENDPOINT_BAD_MARKER,    /* a marker that does not verify */
    ENDPOINT_REPLACED,      /* its directory was renamed or replaced while in use */
};
const char *endpoint_state_name(enum endpoint_state s);

/* The signed marker of endpoint index (0-based) of n (malloc'd in *out). */
int endpoint_mark_encode(const char *vault_id, unsigned index, unsigned n, EVP_PKEY *signer,
                         uint64_t signer_id, uint8_t **out, size_t *outlen);
/* ENDPOINT_OK if raw is endpoint index's marker of vault_id signed by a
 * sysadmin verified up to root_fp; else the state it means, with the
 * reason in why. */
enum endpoint_state endpoint_mark_verify(struct meta *m, const char *vault_id,
                                         const char *root_fp, unsigned index,
                                         const uint8_t *raw, size_t len, char *why,
                                         size_t whylen);
/* Read and verify the marker of s as endpoint index: ENDPOINT_OK,
 * ENDPOINT_UNMARKED (no marker object), ENDPOINT_UNREACHABLE (the read
 * failed) or what endpoint_mark_verify says.  raw and rawlen (optional)
 * receive the marker read (malloc'd). */
enum endpoint_state endpoint_mark_read(struct store *s, struct meta *m, const char *vault_id,
                                       const char *root_fp, unsigned index, char *why,
                                       size_t whylen, uint8_t **raw, size_t *rawlen);
/* Write endpoint index's marker to s and make it durable. */
int endpoint_mark_write(struct store *s, const char *vault_id, unsigned index, unsigned n,
                        EVP_PKEY *signer, uint64_t signer_id);

/* Open endpoint i (0-based) of a configuration, of whichever type, with
 * no guard and no marker check (vault_open_endpoint). */
int endpoint_open_store(const struct endpoint_conf *e, unsigned i, int create,
                        struct store **out);

/* The guarded endpoints of an open vault. */
struct endpoint_set;

/* Open and check every endpoint of c (meta for the registry).  Endpoints
 * that are not OK are offline guards; *offline counts them, and the
 * reasons are printed to stderr.  Wrong S3 credentials, an untrusted
 * certificate or a missing bucket are configuration errors (returned). */
int endpoint_set_open(const struct pactfs_conf *c, struct meta *meta, unsigned *offline,
                      struct endpoint_set **out);
void endpoint_set_free(struct endpoint_set *es);
/* The guard store of endpoint i (owned by the set). */
struct store *endpoint_set_store(struct endpoint_set *es, unsigned i);
/* Held around the registry lookups of endpoint_set_check (the daemon's
 * metadata lock); NULL: none. */
void endpoint_set_meta_lock(struct endpoint_set *es, pthread_mutex_t *lock);
/* State of endpoint i now, and why (empty when OK). */
enum endpoint_state endpoint_set_state(struct endpoint_set *es, unsigned i, char *why,
                                       size_t whylen);
/* Probe every endpoint again: online ones whose marker is gone or changed
 * go offline, offline ones that are back (reachable, marker verifies) are
 * reopened and used again.  cb is called for each endpoint whose state
 * changed since the last call (including a put-time loss).  Returns the
 * number of changes. */
typedef void (*endpoint_change_cb)(void *arg, unsigned i, enum endpoint_state before,
                                   enum endpoint_state now, const char *why);
unsigned endpoint_set_check(struct endpoint_set *es, endpoint_change_cb cb, void *arg);
/* 1 if this set requires markers (pinned in the configuration). */
int endpoint_set_markers_required(const struct endpoint_set *es);

#endif
