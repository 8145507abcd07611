/* The contract between meta.c and the SQL layer (meta_sql.c, which runs
 * over one driver per database, see meta_sql.h): one function pointer per
 * public meta_* call, same arguments and same return convention.  meta.c
 * checks the arguments that do not depend on the backend (name lengths,
 * chunk ref shape, flags) before it dispatches, so the layer may assume them.
 *
 * Helpers for decoding untrusted rows live here too.
 */
#ifndef PACTFS_META_BACKEND_H
#define PACTFS_META_BACKEND_H

#include "meta.h"

/* Largest blob accepted from or written to the store (public keys, sealed
 * keys, envelopes, params, symlink targets, xattr values). */
#define META_BLOB_MAX (1u << 20)
/* The one larger parameter: the signed file head (file_head.h), 16 bytes a
 * file the vault ever held, so up to 4 million files. */
#define META_LARGE_PARAM_MAX (64u << 20)
#define META_LARGE_PARAM_KEY "file_head"
#define META_PARAM_MAX(key) \
    (strcmp((key), META_LARGE_PARAM_KEY) == 0 ? META_LARGE_PARAM_MAX : META_BLOB_MAX)

typedef int (*meta_account_cb)(void *arg, const struct meta_account *a);
typedef int (*meta_folder_cb)(void *arg, const struct meta_folder *f);
typedef int (*meta_envelope_cb)(void *arg, const struct meta_envelope *e);
typedef int (*meta_ino_cb)(void *arg, uint64_t ino);
typedef int (*meta_dirent_cb)(void *arg, const struct meta_dirent *d);
typedef int (*meta_chunk_cb)(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r);
typedef int (*meta_gc_cb)(void *arg, uint64_t id, const struct chunk_ref *r);
typedef int (*meta_xattr_cb)(void *arg, const uint8_t *name, size_t nlen);

struct meta_ops {
    const char *name;                 /* "sql" */
    void (*close)(struct meta *m);    /* frees m->impl only */

    int (*begin)(struct meta *m);
    int (*commit)(struct meta *m);
    int (*rollback)(struct meta *m);

    int (*param_get)(struct meta *m, const char *key, uint8_t **val, size_t *len);
    int (*param_set)(struct meta *m, const char *key, const void *val, size_t len);

    int (*account_add)(struct meta *m, struct meta_account *a);
    int (*account_get)(struct meta *m, uint64_t id, struct meta_account *out);
    int (*account_get_by_name)(struct meta *m, const char *name, struct meta_account *out);
    int (*account_update)(struct meta *m, const struct meta_account *a);
    int (*account_list)(struct meta *m, meta_account_cb cb, void *arg);

    int (*folder_add)(struct meta *m, struct meta_folder *f);
    int (*folder_get)(struct meta *m, uint64_t id, struct meta_folder *out);
    int (*folder_update)(struct meta *m, const struct meta_folder *f);
    int (*folder_list)(struct meta *m, meta_folder_cb cb, void *arg);
    int (*envelope_put)(struct meta *m, const struct meta_envelope *e);
    int (*envelope_get)(struct meta *m, uint64_t folder_id, uint64_t account_id,
                        uint32_t key_version, struct meta_envelope *out);
    int (*envelope_delete)(struct meta *m, uint64_t folder_id, uint64_t account_id);
    int (*envelope_list_account)(struct meta *m, uint64_t account_id,
                                 meta_envelope_cb cb, void *arg);
    int (*envelope_list_folder)(struct meta *m, uint64_t folder_id,
                                meta_envelope_cb cb, void *arg);

    int (*inode_create)(struct meta *m, struct meta_inode *i);
    int (*inode_get)(struct meta *m, uint64_t ino, struct meta_inode *out);
    int (*inode_update)(struct meta *m, const struct meta_inode *i);
    int (*inode_delete)(struct meta *m, uint64_t ino);
    int (*inodes_delete)(struct meta *m, const uint64_t *inos, size_t n);
    int (*inode_list_orphans)(struct meta *m, meta_ino_cb cb, void *arg);
    int (*symlink_set)(struct meta *m, uint64_t ino, const uint8_t *target, size_t len);
    int (*symlink_get)(struct meta *m, uint64_t ino, uint8_t **target, size_t *len);

    int (*dirent_find)(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                       struct meta_dirent_rec *out);
    int (*dirent_add)(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                      uint64_t ino, uint32_t mode, const uint8_t *bind, size_t bind_len);
    int (*dirent_set_bind)(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                           const uint8_t *bind, size_t bind_len);
    int (*dirent_remove)(struct meta *m, uint64_t parent, const uint8_t *name, size_t len);
    int (*reseal)(struct meta *m, const struct meta_reseal *r);
    int (*dirent_list)(struct meta *m, uint64_t parent, uint64_t after,
                       meta_dirent_cb cb, void *arg);
    int (*dirent_count)(struct meta *m, uint64_t parent, uint64_t *count);

    int (*chunk_get)(struct meta *m, uint64_t ino, uint64_t idx, struct chunk_ref *out);
    int (*chunk_put)(struct meta *m, uint64_t ino, uint64_t idx, const struct chunk_ref *ref);
    int (*chunk_truncate)(struct meta *m, uint64_t ino, uint64_t from_idx);
    int (*chunk_list)(struct meta *m, uint64_t ino, meta_chunk_cb cb, void *arg);
    int (*inode_get_chunks)(struct meta *m, uint64_t ino, struct meta_inode *out,
                            meta_chunk_cb cb, void *arg);
    int (*chunk_max_version)(struct meta *m, uint64_t ino, uint64_t idx, uint64_t *version);

    int (*gc_list)(struct meta *m, unsigned limit, meta_gc_cb cb, void *arg);
    int (*gc_done)(struct meta *m, uint64_t id);

    int (*xattr_set)(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen,
                     const uint8_t *val, size_t vlen, int flags);
    int (*xattr_get)(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen,
                     uint8_t **val, size_t *vlen);
    int (*xattr_remove)(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen);
    int (*xattr_list)(struct meta *m, uint64_t ino, meta_xattr_cb cb, void *arg);

    int (*stats)(struct meta *m, uint64_t *inodes, uint64_t *bytes);
    int (*chunk_bytes)(struct meta *m, uint64_t ino, uint64_t *bytes);

    /* Optional (NULL: every commit is already durable, nothing to do). */
    int (*set_deferred_sync)(struct meta *m, int deferred);
    int (*sync)(struct meta *m);
};

/* Wrap a backend handle in a struct meta (0 or -ENOMEM). */
int meta_handle_new(const struct meta_ops *ops, void *impl, struct meta **out);

/* The stored columns of one chunk record, as read from a row. */
struct meta_chunk_row {
    const void *chunk_id;
    size_t chunk_id_len;
    int64_t version, plain_len, sealed_len, k, m, rotation;
    const void *sums;
    size_t sums_len;
    const void *pack, *pack_offs;     /* both empty: not packed */
    size_t pack_len, pack_offs_len;
};

/* Check a row from the (untrusted) store and fill *out: -EBADMSG with a
 * message if any length or range is wrong. */
int meta_chunk_row_decode(const struct meta_chunk_row *row, struct chunk_ref *out);

/* Bytes of the sums column for a ref: (k + m) * FRAG_SUM_LEN. */
size_t meta_chunk_sums_len(const struct chunk_ref *ref);

/* Check a stored account name / blob length from a row: -EBADMSG if out of
 * bounds.  what names the column for the message. */
int meta_check_row_len(const char *what, size_t len, size_t max);

/* malloc'd copy of n bytes (n may be 0: a 1-byte allocation). */
uint8_t *meta_memdup(const void *p, size_t n);

/* How a list callback's return ends the iteration: nonzero stops; a
 * negative value is passed back to the caller, a positive one becomes 0. */
static inline int meta_cb_result(int rc)
{
    return rc < 0 ? rc : 0;
}

#endif
