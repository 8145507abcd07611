/* Reed-Solomon erasure coding with ISA-L, Cauchy generator matrix (every
 * k x k submatrix invertible, so any k fragments rebuild).  1 <= k,
 * 0 <= m, k + m <= 16.  Policy (k >= 2) is enforced by the configuration.
 */
#ifndef PACTFS_ERASURE_H
#define PACTFS_ERASURE_H

#include <stddef.h>
#include <stdint.h>

#define EC_MAX_FRAGS 16

struct ec_codec;

int ec_new(unsigned k, unsigned m, struct ec_codec **out);
void ec_free(struct ec_codec *c);
unsigned ec_k(const struct ec_codec *c);
unsigned ec_m(const struct ec_codec *c);

/* Fragment length for a payload of len bytes: ceil(len / k) rounded up to a
 * multiple of 64 (at least 64). */
size_t ec_fragment_len(const struct ec_codec *c, size_t len);

/* frags[0..k-1] hold the data (payload split in order, zero padded),
 * frags[k..k+m-1] receive parity. Each buffer is fraglen bytes. */
int ec_encode(struct ec_codec *c, size_t fraglen, uint8_t **frags);

/* frags has k+m buffers of fraglen bytes; present[i] says which hold good
 * fragments.  Rebuilds every missing fragment (data and parity) in place.
 * -EIO (with pfs_err) when fewer than k are present. */
int ec_decode(struct ec_codec *c, size_t fraglen, uint8_t **frags, const uint8_t *present);

#endif
