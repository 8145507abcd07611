/* Storage endpoints: flat namespaces of opaque objects.
 *
 * One interface, one file per backend:
 *   store_dir.c  a local directory (objects fanned out as DIR/ab/abcdef...)
 *   store_s3.c   an S3-compatible object store over HTTPS with SigV4
 *
 * Object names are [0-9a-z._-]{1,128}.  A put is atomic (a reader sees the
 * whole object or none) and durable once store_sync() returns; backends may
 * defer directory syncs to store_sync() so a batch pays for them once.
 * put_new is a put of a name that has never held other bytes and that
 * nothing reads before the caller's next store_sync() (a fresh chunk's
 * fragment: its record is committed only after that sync, rule 1 of
 * docs/design-fuse.md): a backend may then write it in place, not atomically;
 * a crash can leave it partly written, unreferenced, for fsck --orphans.
 */
#ifndef PACTFS_STORE_H
#define PACTFS_STORE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

struct store;

/* What an endpoint can still hold (store_space). */
struct store_space_info {
    uint64_t total;   /* bytes of the filesystem or quota holding the endpoint */
    uint64_t avail;   /* bytes an unprivileged writer can still use there */
    uint64_t fs_id;   /* equal for endpoints on one filesystem (st_dev), which
                       * therefore share total and avail */
};

struct store_ops {
    const char *type;
    int (*put)(struct store *s, const char *name, const void *data, size_t len);
    /* *data malloc'd; -ENOENT if absent. */
    int (*get)(struct store *s, const char *name, void **data, size_t *len);
    /* -ENOENT if absent. */
    int (*del)(struct store *s, const char *name);
    int (*stat)(struct store *s, const char *name, uint64_t *size);
    /* cb returns nonzero to stop; list returns that value or 0 / -errno. */
    int (*list)(struct store *s, int (*cb)(void *arg, const char *name, uint64_t size),
                void *arg);
    /* Make every completed put durable (fsync the directories touched). */
    int (*sync)(struct store *s);
    /* Space on the endpoint (statvfs + st_dev); NULL or -ENOTSUP where the
     * endpoint has no notion of free space (S3, an offline endpoint). */
    int (*space)(struct store *s, struct store_space_info *out);
    void (*close)(struct store *s);
    /* Optional (NULL: use get): read an object expected to hold exactly len
     * bytes straight into buf, saving a copy on the read path.  -ENOENT if
     * absent, -EBADMSG if its size differs; buf contents are then undefined. */
    int (*get_into)(struct store *s, const char *name, void *buf, size_t len);
    /* Optional (NULL: use put): put under a fresh name (see above); -EEXIST
     * if the name exists, which it never replaces. */
    int (*put_new)(struct store *s, const char *name, const void *data, size_t len);
    /* Read len bytes at offset off of an object (a fragment inside a pack
     * object, docs/format-objects.md) into buf.  -ENOENT if absent,
     * -EBADMSG if the object ends before off + len. */
    int (*get_range)(struct store *s, const char *name, uint64_t off, void *buf, size_t len);
};

struct store {
    const struct store_ops *ops;
    char *desc;   /* for messages: "dir:/path" or "s3:https://host/bucket" */
    void *impl;
};

/* create: make the directory (0700) if missing; otherwise it must exist. */
int store_dir_open(const char *path, int create, struct store **out);

/* An S3-compatible object store (store_s3.c): path-style
 * https://host:port/bucket/object, SigV4, certificate verification always on.
 * label names the endpoint in messages ("endpoint 2"; NULL: "the endpoint").
 * create: make the bucket if missing; either way open proves the server,
 * the credentials and the bucket with a one-key listing.  Errors:
 * -EHOSTUNREACH server down or unreachable, -EPROTO TLS/certificate failure,
 * -EACCES wrong access or secret key, -ENOENT no such bucket, -EINVAL bad
 * settings.  On S3 del cannot tell an absent object (DELETE is idempotent)
 * and returns 0; sync is a no-op (a completed PUT is durable); space is
 * -ENOTSUP. */
struct store_s3_config {
    const char *url;          /* https://host[:port] */
    const char *bucket;
    const char *region;
    const char *access_key;
    const char *secret_key;
    const char *ca_file;      /* NULL: the system CA bundle */
    const char *cert_file;    /* optional client certificate and its key */
    const char *key_file;
    const char *label;
};
int store_s3_open(const struct store_s3_config *c, int create, struct store **out);

/* An endpoint that cannot be reached at open time (store_offline.c): every
 * read finds nothing (so the object layer rebuilds from the other
 * endpoints' fragments) and every write fails with -EIO and a message that
 * names the endpoint and why.  Lets a vault with up to m endpoints lost
 * still be read. */
int store_offline_new(const char *desc, const char *reason, struct store **out);

static inline int store_put(struct store *s, const char *n, const void *d, size_t l)
{ return s->ops->put(s, n, d, l); }
static inline int store_put_new(struct store *s, const char *n, const void *d, size_t l)
{ return s->ops->put_new ? s->ops->put_new(s, n, d, l) : s->ops->put(s, n, d, l); }
static inline int store_get(struct store *s, const char *n, void **d, size_t *l)
{ return s->ops->get(s, n, d, l); }
static inline int store_get_range(struct store *s, const char *n, uint64_t off, void *buf,
                                  size_t len)
{ return s->ops->get_range(s, n, off, buf, len); }
static inline int store_del(struct store *s, const char *n)
{ return s->ops->del(s, n); }
static inline int store_stat(struct store *s, const char *n, uint64_t *sz)
{ return s->ops->stat(s, n, sz); }
static inline int store_list(struct store *s, int (*cb)(void *, const char *, uint64_t), void *a)
{ return s->ops->list(s, cb, a); }
static inline int store_sync(struct store *s)
{ return s->ops->sync(s); }
static inline int store_space(struct store *s, struct store_space_info *out)
{ return s->ops->space ? s->ops->space(s, out) : -ENOTSUP; }
static inline void store_close(struct store *s)
{ if (s) s->ops->close(s); }

#endif
