/* Extended attributes of the filesystem core (fs_xattr.h): "user." names
 * encrypted under the folder keys (the inode as associated data), values
 * sealed; found under any held key version. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#include "fs_xattr.h"

static int xattr_prepare(struct fs *fs, const struct fs_caller *who, uint64_t ino,
                         const char *name, uint32_t need, const char *op, struct vault_folder **vf,
                         struct fs_name *en)
{
    if (strncmp(name, "user.", 5) != 0)
        return -ENOTSUP;
    int r = fs_folder_check(fs, who, ino, need, op, NULL, vf);
    if (r < 0)
        return r;
    if (!*vf)
        return (need & RIGHT_WRITE) ? -EACCES : -ENODATA;
    r = fs_name_check(name);
    if (r < 0)
        return -ERANGE;
    const struct folder_keys *k = fs_cur_keys(fs, *vf);
    if (!k)
        return -EIO;
    return fs_name_enc(k, ino, name, en);
}

/* The stored row of xattr name of ino under any held key version (a
 * revoke rotates the key; pactfs-admin rekey re-seals older rows under the
 * newest): its encrypted name in *en and, if val, its sealed value.
 * -ENODATA if none.  meta_lock held. */
static int xattr_find_locked(struct fs *fs, const struct vault_folder *vf, uint64_t ino,
                             const char *name, struct fs_name *en, uint8_t **val, size_t *vlen)
{
    const struct folder_keys *ks[FS_KEYS_MAX];
    for (int round = 0; round < 2; round++) {
        size_t nk = fs_keys_to_try(fs, vf, ks, FS_KEYS_MAX);
        for (size_t i = 0; i < nk; i++) {
            uint8_t *v = NULL;
            size_t vl = 0;
            int r = fs_name_enc(ks[i], ino, name, en);
            if (r == 0)
                r = meta_xattr_get(fs->v->meta, ino, en->b, en->len, &v, &vl);
            if (r == -ENOENT || r == -ENODATA)
                continue;
            if (r == 0 && val) {
                *val = v;
                *vlen = vl;
            } else {
                free(v);
            }
            return r;
        }
        if (round || !fs_keys_catch_up_locked(fs, vf->id))
            break;
    }
    return -ENODATA;
}

int fs_setxattr(struct fs *fs, const struct fs_caller *who, uint64_t ino, const char *name,
                const void *value, size_t size, int flags)
{
    struct vault_folder *vf = NULL;
    struct fs_name en;
    int r = xattr_prepare(fs, who, ino, name, RIGHT_READ | RIGHT_WRITE, "setxattr", &vf, &en);
    uint8_t *sealed = NULL;
    size_t slen = 0;
    if (r == 0)
        r = fs_sealed_seal(fs, vf, "xattr", ino, name, value, size, &sealed, &slen);
    if (r == 0) {
        char *path = fs_path(fs, ino, NULL);
        struct meta *m = fs->v->meta;
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_begin(m);
        struct fs_name old;
        if (r == 0 && xattr_find_locked(fs, vf, ino, name, &old, NULL, NULL) == 0 &&
            (old.len != en.len || memcmp(old.b, en.b, en.len))) {
            /* the value is under an older key version: replaced by this one */
            r = flags == XATTR_CREATE ? -EEXIST : meta_xattr_remove(m, ino, old.b, old.len);
            flags = 0;
        }
        if (r == 0) {
            r = meta_xattr_set(m, ino, en.b, en.len, sealed, slen, flags);
            if (r == -EEXIST && !(flags & XATTR_CREATE))
                r = -EIO;
            if (r == -ENOENT)
                r = -ENODATA;
        }
        struct meta_inode mi;
        if (r == 0 && meta_inode_get(m, ino, &mi) == 0) {
            mi.ctime_ns = fs_now_ns();
            r = meta_inode_update(m, &mi);
        }
        r = fs_meta_op_end(fs, who, "setxattr", path, size, r);
        free(path);
    }
    free(sealed);
    return r;
}

int fs_getxattr(struct fs *fs, const struct fs_caller *who, uint64_t ino, const char *name,
                uint8_t **value, size_t *len)
{
    struct vault_folder *vf = NULL;
    struct fs_name en;
    int r = xattr_prepare(fs, who, ino, name, RIGHT_READ, "getxattr", &vf, &en);
    uint8_t *sealed = NULL, *plain = NULL;
    size_t slen = 0, plen = 0;
    if (r == 0) {
        pthread_mutex_lock(&fs->meta_lock);
        r = xattr_find_locked(fs, vf, ino, name, &en, &sealed, &slen);
        pthread_mutex_unlock(&fs->meta_lock);
    }
    if (r == 0)
        r = fs_sealed_open_fresh(fs, vf, "xattr", ino, name, sealed, slen, &plain, &plen);
    free(sealed);
    if (r != -EACCES && r != -ENODATA && r != -EOPNOTSUPP && vf &&
        fs_audit_ino(fs, who, "getxattr", ino, r, plen) < 0)
        r = -EIO;
    if (r < 0) {
        free(plain);
        return r;
    }
    *value = plain;
    *len = plen;
    return 0;
}

struct xlist_ctx {
    struct fs *fs;
    struct vault_folder *vf;
    uint64_t ino;
    char *buf;
    size_t used, cap;
    int err;
};

static int xlist_cb(void *arg, const uint8_t *name, size_t nlen)
{
    struct xlist_ctx *c = arg;
    char plain[NAME_MAX_ENC + 16];
    size_t plen = 0;
    if (nlen > NAME_MAX_ENC || fs_name_dec_any(c->fs, c->vf, c->ino, name, nlen, plain, &plen) < 0)
        return 0;
    plen = strlen(plain);
    if (strncmp(plain, "user.", 5) != 0)
        return 0;   /* the trash's sealed .trashinfo (fs_trash.c) is no user xattr */
    if (c->used + plen + 1 > c->cap) {
        size_t n = (c->cap ? c->cap * 2 : 256) + plen + 1;
        char *p = realloc(c->buf, n);
        if (!p) {
            c->err = -ENOMEM;
            return 1;
        }
        c->buf = p;
        c->cap = n;
    }
    memcpy(c->buf + c->used, plain, plen + 1);
    c->used += plen + 1;
    return 0;
}

int fs_listxattr(struct fs *fs, const struct fs_caller *who, uint64_t ino, char **list, size_t *len)
{
    struct xlist_ctx c = { .fs = fs, .ino = ino };
    int r = fs_folder_check(fs, who, ino, RIGHT_READ, "listxattr", NULL, &c.vf);
    if (r == 0 && c.vf) {
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_xattr_list(fs->v->meta, ino, xlist_cb, &c);
        pthread_mutex_unlock(&fs->meta_lock);
        if (r == 0)
            r = c.err;
    }
    if (r != -EACCES && c.vf && fs_audit_ino(fs, who, "listxattr", ino, r, c.used) < 0)
        r = -EIO;
    if (r < 0) {
        free(c.buf);
        return r;
    }
    *list = c.buf;
    *len = c.used;
    return 0;
}

int fs_removexattr(struct fs *fs, const struct fs_caller *who, uint64_t ino, const char *name)
{
    struct vault_folder *vf = NULL;
    struct fs_name en;
    int r = xattr_prepare(fs, who, ino, name, RIGHT_READ | RIGHT_WRITE, "removexattr", &vf, &en);
    if (r == 0) {
        char *path = fs_path(fs, ino, NULL);
        struct meta *m = fs->v->meta;
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_begin(m);
        if (r == 0)
            r = xattr_find_locked(fs, vf, ino, name, &en, NULL, NULL);
        if (r == 0) {
            r = meta_xattr_remove(m, ino, en.b, en.len);
            if (r == -ENOENT)
                r = -ENODATA;
        }
        r = fs_meta_op_end(fs, who, "removexattr", path, 0, r);
        free(path);
    }
    return r;
}

