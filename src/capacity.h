/* What a user can still store in a vault, from its endpoints' free space
 * (statfs of the mount).  One concern: the arithmetic, kept apart from FUSE
 * so it can be tested with made-up endpoints. */
#ifndef PACTFS_CAPACITY_H
#define PACTFS_CAPACITY_H

#include <stdint.h>

#include "store.h"

/* Reported when no endpoint has a notion of free space (all S3 or offline):
 * 1 PiB, the "effectively unlimited" figure rclone and s3fs report too. */
#define CAPACITY_UNLIMITED ((uint64_t)1 << 50)

/* sp[i] is endpoint i's space, known[i] nonzero when store_space succeeded.
 * Every chunk of user data is sealed and split into k data + m parity
 * fragments of 1/k of its size each, placed on k+m of the n endpoints by
 * rotation, so in the long run each endpoint receives (k+m)/(n*k) bytes per
 * user byte.  Endpoints on one filesystem (equal fs_id) draw on one free
 * space: a filesystem holding c of the endpoints with F bytes free fills
 * after F * n * k / (c * (k+m)) user bytes.  The answer is the smallest of
 * these over the known filesystems (an endpoint with no notion of free
 * space limits nothing), or CAPACITY_UNLIMITED if none is known.
 * With n = k+m on separate disks this is min_free * k; with every endpoint
 * on one disk it is free * k/(k+m). */
uint64_t capacity_avail(const struct store_space_info *sp, const int *known, unsigned n,
                        unsigned k, unsigned m);

#endif
