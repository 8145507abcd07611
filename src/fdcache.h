/* A few read-only descriptors of named files, kept open for a short while.
 *
 * A directory endpoint's small files share pack objects, and a reader
 * fetching one file after another would open, fstat and close the same
 * pack for each (about a quarter of a packed read's work).  The cache keeps
 * the last ones open, each at most ttl_ms after it was opened, so a file
 * removed or replaced behind the store's back is seen again within that
 * time; the store drops a name itself when it deletes or replaces it.  Only
 * for files that are never rewritten in place.  Thread-safe. */
#ifndef PACTFS_FDCACHE_H
#define PACTFS_FDCACHE_H

#include <stdint.h>

#define FDCACHE_NAME_MAX 128

struct fdcache;

/* NULL when out of memory. */
struct fdcache *fdcache_new(unsigned slots, unsigned ttl_ms);

/* Close every descriptor (none may still be in use). */
void fdcache_free(struct fdcache *c);

/* A cached, fresh descriptor of name, its size in *size, for one use ended
 * by fdcache_done; -1 if none. */
int fdcache_take(struct fdcache *c, const char *name, uint64_t *size);

/* Keep fd (just opened for name, size bytes, in use by the caller) for
 * later takers if a slot is free; the caller's use still ends with
 * fdcache_done.  A name longer than FDCACHE_NAME_MAX is not kept. */
void fdcache_offer(struct fdcache *c, const char *name, int fd, uint64_t size);

/* One use of fd (from fdcache_take, or opened and offered) ended: a
 * descriptor the cache does not keep is closed. */
void fdcache_done(struct fdcache *c, int fd);

/* name was deleted or replaced: its descriptor is no longer handed out
 * (closed once its last use ends). */
void fdcache_drop(struct fdcache *c, const char *name);

#endif
