#include "config.h"

/* The public metadata calls: check what does not depend on the backend,
 * then dispatch through m->ops (see meta_backend.h). */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "buf.h"
#include "conf.h"
#include "error.h"
#include "meta.h"
#include "meta_backend.h"

#define META_PARAM_KEY_MAX 128

/* ---- helpers shared by the backends ---- */

int meta_handle_new(const struct meta_ops *ops, void *impl, struct meta **out)
{
    struct meta *m = calloc(1, sizeof *m);

    if (!m)
        return pfs_err(-ENOMEM, "out of memory opening the metadata store");
    m->ops = ops;
    m->impl = impl;
    *out = m;
    return 0;
}

uint8_t *meta_memdup(const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);

    if (d && n)
        memcpy(d, p, n);
    return d;
}

int meta_check_row_len(const char *what, size_t len, size_t max)
{
    if (len > max)
        return pfs_err(-EBADMSG, "metadata store: %s is %zu bytes, at most %zu allowed; "
                       "the database was altered or is corrupt", what, len, max);
    return 0;
}

size_t meta_chunk_sums_len(const struct chunk_ref *ref)
{
    return ((size_t)ref->k + ref->m) * FRAG_SUM_LEN;
}

static int chunk_row_ranges_ok(const struct meta_chunk_row *row)
{
    return row->version >= 1 &&
           row->plain_len >= 0 && row->plain_len <= UINT32_MAX &&
           row->sealed_len >= 0 && row->sealed_len <= UINT32_MAX &&
           row->k >= 1 && row->m >= 0 && row->k + row->m <= EC_MAX_FRAGS &&
           row->rotation >= 0 && row->rotation <= UINT8_MAX;
}

/* The sums column is k+m SHA-256 values back to back; read it through the
 * bounded reader so a short or long column is caught, never overrun. */
static int chunk_sums_decode(const void *sums, size_t len, struct chunk_ref *out)
{
    struct rbuf r;
    unsigned n = (unsigned)out->k + out->m;

    rbuf_init(&r, sums, len);
    for (unsigned i = 0; i < n; i++)
        rbuf_get_bytes(&r, out->sums[i], FRAG_SUM_LEN);
    return rbuf_end(&r);
}

int meta_chunk_row_decode(const struct meta_chunk_row *row, struct chunk_ref *out)
{
    memset(out, 0, sizeof *out);
    if (row->chunk_id_len != CHUNK_ID_LEN || !chunk_row_ranges_ok(row))
        return pfs_err(-EBADMSG, "metadata store: a chunk record has an invalid id length, "
                       "version or coding (k=%lld m=%lld); the database was altered or "
                       "is corrupt", (long long)row->k, (long long)row->m);
    memcpy(out->chunk_id, row->chunk_id, CHUNK_ID_LEN);
    out->version = (uint64_t)row->version;
    out->plain_len = (uint32_t)row->plain_len;
    out->sealed_len = (uint32_t)row->sealed_len;
    out->k = (uint8_t)row->k;
    out->m = (uint8_t)row->m;
    out->rotation = (uint8_t)row->rotation;
    if (chunk_sums_decode(row->sums, row->sums_len, out) != 0)
        return pfs_err(-EBADMSG, "metadata store: a chunk record's checksum column is %zu "
                       "bytes, expected %zu; the database was altered or is corrupt",
                       row->sums_len, meta_chunk_sums_len(out));
    if (row->pack_len == 0 && row->pack_offs_len == 0)
        return 0;
    unsigned nf = (unsigned)out->k + out->m;
    if (row->pack_len != PACK_ID_LEN || row->pack_offs_len != 4 * (size_t)nf)
        return pfs_err(-EBADMSG, "metadata store: a chunk record's pack columns are %zu and %zu "
                       "bytes, expected %d and %u; the database was altered or is corrupt",
                       row->pack_len, row->pack_offs_len, PACK_ID_LEN, 4 * nf);
    struct rbuf r;
    rbuf_init(&r, row->pack_offs, row->pack_offs_len);
    for (unsigned i = 0; i < nf; i++)
        rbuf_get_u32(&r, &out->pack_offs[i]);
    out->packed = 1;
    memcpy(out->pack, row->pack, PACK_ID_LEN);
    return 0;
}

/* ---- argument checks ---- */

static int check_name(const uint8_t *name, size_t len)
{
    if (!name || len == 0 || len > META_NAME_MAX)
        return pfs_err(-ENAMETOOLONG, "encrypted name of %zu bytes is empty or longer "
                       "than %d bytes", len, META_NAME_MAX);
    return 0;
}

static int check_blob(const char *what, const void *p, size_t len)
{
    if ((!p && len) || len > META_BLOB_MAX)
        return pfs_err(-EINVAL, "%s of %zu bytes is missing or larger than %u bytes",
                       what, len, META_BLOB_MAX);
    return 0;
}

static int check_account(const struct meta_account *a)
{
    size_t n = strnlen(a->name, sizeof a->name);

    if (n == 0 || n > META_ACCOUNT_NAME_MAX)
        return pfs_err(-EINVAL, "account name must be 1 to %d bytes",
                       META_ACCOUNT_NAME_MAX);
    if (check_blob("account public key", a->pubkey, a->pubkey_len) ||
        check_blob("sealed account key", a->sealed_key, a->sealed_key_len))
        return -EINVAL;
    return 0;
}

static int check_inode(const struct meta_inode *i)
{
    if (i->wrapped_dek_len > sizeof i->wrapped_dek)
        return pfs_err(-EINVAL, "wrapped file key of %u bytes exceeds %zu",
                       i->wrapped_dek_len, sizeof i->wrapped_dek);
    return 0;
}

static int check_chunk_ref(const struct chunk_ref *ref)
{
    if (ref->k < 1 || (unsigned)ref->k + ref->m > EC_MAX_FRAGS)
        return pfs_err(-EINVAL, "chunk coding k=%u m=%u is invalid (k >= 1, k+m <= %d)",
                       ref->k, ref->m, EC_MAX_FRAGS);
    if (ref->version < 1 || ref->version > INT64_MAX)
        return pfs_err(-EINVAL, "chunk version %llu is out of range",
                       (unsigned long long)ref->version);
    return 0;
}

static int check_param_key(const char *key)
{
    size_t n = key ? strnlen(key, META_PARAM_KEY_MAX + 1) : 0;

    if (n == 0 || n > META_PARAM_KEY_MAX)
        return pfs_err(-EINVAL, "parameter key must be 1 to %d bytes", META_PARAM_KEY_MAX);
    return 0;
}

static int check_xattr_flags(int flags)
{
    if (flags != 0 && flags != XATTR_CREATE && flags != XATTR_REPLACE)
        return pfs_err(-EINVAL, "xattr flags %d: use 0, XATTR_CREATE or XATTR_REPLACE",
                       flags);
    return 0;
}

/* ---- public calls ---- */

void meta_account_clear(struct meta_account *a)
{
    if (!a)
        return;
    free(a->pubkey);
    free(a->sealed_key);
    memset(a, 0, sizeof *a);
}

void meta_envelope_clear(struct meta_envelope *e)
{
    if (!e)
        return;
    free(e->wrapped);
    memset(e, 0, sizeof *e);
}

int meta_open(const struct pactfs_conf *c, struct meta **out)
{
    struct stat st;

    if (strcmp(c->meta_backend, "sqlite") == 0) {
        if (stat(c->meta_path, &st) < 0)
            return pfs_err(-ENOENT, "the metadata store %s does not exist: check "
                           "metadata.path in %s or restore it from backup", c->meta_path,
                           c->file);
        return meta_open_sqlite(c->meta_path, 0, out);
    }
    return meta_open_pg(c->meta_conninfo, 0, out);
}

void meta_close(struct meta *m)
{
    if (!m)
        return;
    m->ops->close(m);
    free(m);
}

int meta_begin(struct meta *m) { return m->ops->begin(m); }
int meta_commit(struct meta *m) { return m->ops->commit(m); }
int meta_rollback(struct meta *m) { return m->ops->rollback(m); }

int meta_set_deferred_sync(struct meta *m, int deferred)
{
    return m->ops->set_deferred_sync ? m->ops->set_deferred_sync(m, deferred != 0) : 0;
}

void meta_set_presync(struct meta *m, int (*fn)(void *arg), void *arg)
{
    m->presync = fn;
    m->presync_arg = arg;
}

void meta_set_row_hook(struct meta *m, void (*fn)(void *arg, uint64_t ino), void *arg)
{
    m->row_hook = fn;
    m->row_hook_arg = arg;
}

static void row_written(struct meta *m, uint64_t ino)
{
    if (m->row_hook)
        m->row_hook(m->row_hook_arg, ino);
}

int meta_sync(struct meta *m)
{
    return m->ops->sync ? m->ops->sync(m) : 0;
}

int meta_param_get(struct meta *m, const char *key, uint8_t **val, size_t *len)
{
    int rc = check_param_key(key);

    return rc ? rc : m->ops->param_get(m, key, val, len);
}

int meta_param_set(struct meta *m, const char *key, const void *val, size_t len)
{
    int rc = check_param_key(key);

    if (!rc && len > META_BLOB_MAX && len <= META_PARAM_MAX(key))
        rc = val ? 0 : -EINVAL;
    else if (!rc)
        rc = check_blob("parameter value", val, len);
    return rc ? rc : m->ops->param_set(m, key, val, len);
}

int meta_account_add(struct meta *m, struct meta_account *a)
{
    int rc = check_account(a);

    return rc ? rc : m->ops->account_add(m, a);
}

int meta_account_get(struct meta *m, uint64_t id, struct meta_account *out)
{
    return m->ops->account_get(m, id, out);
}

int meta_account_get_by_name(struct meta *m, const char *name, struct meta_account *out)
{
    if (!name || strnlen(name, META_ACCOUNT_NAME_MAX + 1) > META_ACCOUNT_NAME_MAX)
        return pfs_err(-ENOENT, "no account by that name (names are at most %d bytes)",
                       META_ACCOUNT_NAME_MAX);
    return m->ops->account_get_by_name(m, name, out);
}

int meta_account_update(struct meta *m, const struct meta_account *a)
{
    int rc = check_account(a);

    return rc ? rc : m->ops->account_update(m, a);
}

int meta_account_list(struct meta *m, meta_account_cb cb, void *arg)
{
    return m->ops->account_list(m, cb, arg);
}

int meta_folder_add(struct meta *m, struct meta_folder *f)
{
    return m->ops->folder_add(m, f);
}

int meta_folder_get(struct meta *m, uint64_t id, struct meta_folder *out)
{
    return m->ops->folder_get(m, id, out);
}

int meta_folder_update(struct meta *m, const struct meta_folder *f)
{
    return m->ops->folder_update(m, f);
}

int meta_folder_list(struct meta *m, meta_folder_cb cb, void *arg)
{
    return m->ops->folder_list(m, cb, arg);
}

int meta_envelope_put(struct meta *m, const struct meta_envelope *e)
{
    int rc = check_blob("envelope", e->wrapped, e->wrapped_len);

    return rc ? rc : m->ops->envelope_put(m, e);
}

int meta_envelope_get(struct meta *m, uint64_t folder_id, uint64_t account_id,
                      uint32_t key_version, struct meta_envelope *out)
{
    return m->ops->envelope_get(m, folder_id, account_id, key_version, out);
}

int meta_envelope_delete(struct meta *m, uint64_t folder_id, uint64_t account_id)
{
    return m->ops->envelope_delete(m, folder_id, account_id);
}

int meta_envelope_list_account(struct meta *m, uint64_t account_id, meta_envelope_cb cb,
                               void *arg)
{
    return m->ops->envelope_list_account(m, account_id, cb, arg);
}

int meta_envelope_list_folder(struct meta *m, uint64_t folder_id, meta_envelope_cb cb,
                              void *arg)
{
    return m->ops->envelope_list_folder(m, folder_id, cb, arg);
}

int meta_inode_create(struct meta *m, struct meta_inode *i)
{
    int rc = check_inode(i);

    if (rc)
        return rc;
    rc = m->ops->inode_create(m, i);
    row_written(m, i->ino);
    return rc;
}

int meta_inode_get(struct meta *m, uint64_t ino, struct meta_inode *out)
{
    return m->ops->inode_get(m, ino, out);
}

int meta_inode_update(struct meta *m, const struct meta_inode *i)
{
    int rc = check_inode(i);

    if (rc)
        return rc;
    rc = m->ops->inode_update(m, i);
    row_written(m, i->ino);
    return rc;
}

int meta_inode_delete(struct meta *m, uint64_t ino)
{
    int rc = m->ops->inode_delete(m, ino);

    row_written(m, ino);
    return rc;
}

int meta_inodes_delete(struct meta *m, const uint64_t *inos, size_t n)
{
    int rc = m->ops->inodes_delete(m, inos, n);

    for (size_t i = 0; i < n; i++)
        row_written(m, inos[i]);
    return rc;
}

int meta_inode_list_orphans(struct meta *m, meta_ino_cb cb, void *arg)
{
    return m->ops->inode_list_orphans(m, cb, arg);
}

int meta_symlink_set(struct meta *m, uint64_t ino, const uint8_t *target, size_t len)
{
    int rc = check_blob("symlink target", target, len);

    return rc ? rc : m->ops->symlink_set(m, ino, target, len);
}

int meta_symlink_get(struct meta *m, uint64_t ino, uint8_t **target, size_t *len)
{
    return m->ops->symlink_get(m, ino, target, len);
}

int meta_dirent_lookup(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                       uint64_t *ino)
{
    struct meta_dirent_rec rec;
    int rc = meta_dirent_find(m, parent, name, len, &rec);

    if (rc == 0)
        *ino = rec.ino;
    return rc;
}

int meta_dirent_find(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                     struct meta_dirent_rec *out)
{
    int rc = check_name(name, len);

    return rc ? rc : m->ops->dirent_find(m, parent, name, len, out);
}

int meta_dirent_add(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                    uint64_t ino, uint32_t mode, const uint8_t *bind, size_t bind_len)
{
    int rc = check_name(name, len);

    if (rc == 0 && bind_len > META_BIND_MAX)
        rc = pfs_err(-EINVAL, "directory entry binding of %zu bytes", bind_len);
    return rc ? rc : m->ops->dirent_add(m, parent, name, len, ino, mode, bind, bind_len);
}

int meta_dirent_set_bind(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                         const uint8_t *bind, size_t bind_len)
{
    int rc = check_name(name, len);

    if (rc == 0 && bind_len > META_BIND_MAX)
        rc = pfs_err(-EINVAL, "directory entry binding of %zu bytes", bind_len);
    return rc ? rc : m->ops->dirent_set_bind(m, parent, name, len, bind, bind_len);
}

int meta_reseal(struct meta *m, const struct meta_reseal *r)
{
    int rc = check_blob("sealed value", r->old_val, r->old_val_len);

    if (!rc)
        rc = check_blob("sealed value", r->new_val, r->new_val_len);
    if (!rc && r->kind != META_RESEAL_SYMLINK)
        rc = check_name(r->old_name, r->old_name_len);
    if (!rc && r->kind != META_RESEAL_SYMLINK)
        rc = check_name(r->new_name, r->new_name_len);
    if (!rc && r->kind == META_RESEAL_DIRENT && r->new_val_len > META_BIND_MAX)
        rc = pfs_err(-EINVAL, "directory entry binding of %zu bytes", r->new_val_len);
    return rc ? rc : m->ops->reseal(m, r);
}

int meta_dirent_remove(struct meta *m, uint64_t parent, const uint8_t *name, size_t len)
{
    int rc = check_name(name, len);

    return rc ? rc : m->ops->dirent_remove(m, parent, name, len);
}

int meta_dirent_list(struct meta *m, uint64_t parent, uint64_t after, meta_dirent_cb cb,
                     void *arg)
{
    return m->ops->dirent_list(m, parent, after, cb, arg);
}

int meta_dirent_count(struct meta *m, uint64_t parent, uint64_t *count)
{
    return m->ops->dirent_count(m, parent, count);
}

int meta_chunk_get(struct meta *m, uint64_t ino, uint64_t idx, struct chunk_ref *out)
{
    return m->ops->chunk_get(m, ino, idx, out);
}

int meta_chunk_put(struct meta *m, uint64_t ino, uint64_t idx, const struct chunk_ref *ref)
{
    int rc = check_chunk_ref(ref);

    return rc ? rc : m->ops->chunk_put(m, ino, idx, ref);
}

int meta_chunk_truncate(struct meta *m, uint64_t ino, uint64_t from_idx)
{
    return m->ops->chunk_truncate(m, ino, from_idx);
}

int meta_chunk_list(struct meta *m, uint64_t ino, meta_chunk_cb cb, void *arg)
{
    return m->ops->chunk_list(m, ino, cb, arg);
}

int meta_inode_get_chunks(struct meta *m, uint64_t ino, struct meta_inode *out,
                          int (*cb)(void *arg, uint64_t ino, uint64_t idx,
                                    const struct chunk_ref *r),
                          void *arg)
{
    return m->ops->inode_get_chunks(m, ino, out, cb, arg);
}

int meta_chunk_max_version(struct meta *m, uint64_t ino, uint64_t idx, uint64_t *version)
{
    return m->ops->chunk_max_version(m, ino, idx, version);
}

int meta_gc_list(struct meta *m, unsigned limit, meta_gc_cb cb, void *arg)
{
    return m->ops->gc_list(m, limit, cb, arg);
}

int meta_gc_done(struct meta *m, uint64_t id)
{
    return m->ops->gc_done(m, id);
}

int meta_xattr_set(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen,
                   const uint8_t *val, size_t vlen, int flags)
{
    int rc = check_name(name, nlen);

    if (!rc)
        rc = check_blob("xattr value", val, vlen);
    if (!rc)
        rc = check_xattr_flags(flags);
    return rc ? rc : m->ops->xattr_set(m, ino, name, nlen, val, vlen, flags);
}

int meta_xattr_get(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen,
                   uint8_t **val, size_t *vlen)
{
    int rc = check_name(name, nlen);

    return rc ? rc : m->ops->xattr_get(m, ino, name, nlen, val, vlen);
}

int meta_xattr_remove(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen)
{
    int rc = check_name(name, nlen);

    return rc ? rc : m->ops->xattr_remove(m, ino, name, nlen);
}

int meta_xattr_list(struct meta *m, uint64_t ino, meta_xattr_cb cb, void *arg)
{
    return m->ops->xattr_list(m, ino, cb, arg);
}

int meta_stats(struct meta *m, uint64_t *inodes, uint64_t *bytes)
{
    return m->ops->stats(m, inodes, bytes);
}

int meta_chunk_bytes(struct meta *m, uint64_t ino, uint64_t *bytes)
{
    return m->ops->chunk_bytes(m, ino, bytes);
}
