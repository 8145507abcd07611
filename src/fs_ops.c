#include "config.h"

/* One function per FUSE low-level operation: rights, names, metadata and
 * audit.  File bytes are fs_data.c's job, inode lifetimes fs_inode.c's.
 *
 * The root (ino 1) is virtual: it lists the contract folders this account
 * holds envelopes for.  Every other inode belongs to one folder; its names
 * are encrypted with that folder's keys (parent inode as associated data).
 */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "capacity.h"
#include "envelope.h"
#include "error.h"
#include "fs_internal.h"
#include "mount_peers.h"
#include "secmem.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* An embedded (SQLite) vault has one daemon writing it and every change
 * goes through this mount, so the kernel's entries and attributes stay
 * right for long; a shared (PostgreSQL) one may be changed by other
 * workstations' mounts. */
#define ENTRY_TIMEOUT_LOCAL 10.0
#define ENTRY_TIMEOUT_SHARED 1.0
#define ROOT_ENTRY_TIMEOUT 60.0   /* folder list changes rarely; fewer audited lookups */
#define PATH_DEPTH_MAX 256
#define FS_MAX_WRITE (1u << 20)

/* An open file handle: which inode, what it did (for the audit summary). */
struct fs_handle {
    struct fs_inode *in;
    int writable;
    int summarized;            /* a read/write summary was audited */
    uint64_t bytes_read, bytes_written;
    uint64_t audited_read, audited_written;
    pthread_mutex_t lock;
    struct fs_handle *prev, *next;   /* fs.handles */
};

static struct fs *req_fs(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

int64_t fs_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int fs_alone(struct fs *fs)
{
    int64_t now = fs_now_ns();
    if (now - __atomic_load_n(&fs->alone_checked_ns, __ATOMIC_ACQUIRE) >= 1000000000) {
        __atomic_store_n(&fs->alone, mount_peers_alone(fs->opt.peers), __ATOMIC_RELAXED);
        __atomic_store_n(&fs->alone_checked_ns, now, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&fs->alone, __ATOMIC_RELAXED);
}

/* How long the kernel may keep entries and attributes: long while this is
 * the vault's only mount here (every change goes through it), as short as
 * on shared metadata while another mount may change the vault. */
static double cache_timeout(struct fs *fs)
{
    if (fs->entry_timeout > ENTRY_TIMEOUT_SHARED && !fs_alone(fs))
        return ENTRY_TIMEOUT_SHARED;
    return fs->entry_timeout;
}

static void ns_to_ts(int64_t ns, struct timespec *ts)
{
    ts->tv_sec = ns / 1000000000;
    ts->tv_nsec = ns % 1000000000;
}

static int64_t ts_to_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Paths and audit                                                     */

char *fs_path(struct fs *fs, uint64_t ino, const char *name)
{
    char *parts[PATH_DEPTH_MAX];
    size_t n = 0;
    char buf[NAME_MAX_PLAIN + 1];
    uint64_t cur = ino;
    while (cur != META_ROOT_INO && n < PATH_DEPTH_MAX) {
        uint64_t parent;
        if (fs_inode_name(fs, cur, &parent, buf, sizeof buf) < 0) {
            parts[n++] = strdup("?");
            break;
        }
        parts[n++] = strdup(buf);
        cur = parent;
    }
    size_t len = 2 + (name ? strlen(name) + 1 : 0);
    for (size_t i = 0; i < n; i++)
        len += (parts[i] ? strlen(parts[i]) : 1) + 1;
    char *p = malloc(len);
    if (p) {
        size_t off = 0;
        p[0] = '\0';
        for (size_t i = n; i-- > 0;)
            off += (size_t)snprintf(p + off, len - off, "/%s", parts[i] ? parts[i] : "?");
        if (name)
            off += (size_t)snprintf(p + off, len - off, "/%s", name);
        if (off == 0)
            snprintf(p, len, "/");
    }
    for (size_t i = 0; i < n; i++)
        free(parts[i]);
    return p;
}

static struct audit_ctx audit_who(fuse_req_t req)
{
    struct audit_ctx who = { .uid = getuid(), .pid = getpid() };
    if (req) {
        const struct fuse_ctx *c = fuse_req_ctx(req);
        who.uid = c->uid;
        who.pid = c->pid;
    }
    return who;
}

static int audit_failed(const char *op)
{
    fprintf(stderr, "pactfs: audit spool write failed (%s); refusing %s\n", pfs_err_msg(), op);
    return -EIO;
}

int fs_audit(struct fs *fs, fuse_req_t req, const char *op, const char *path, int result,
             uint64_t bytes)
{
    return fs_audit_detail(fs, req, op, path, result, bytes, NULL);
}

int fs_audit_detail(struct fs *fs, fuse_req_t req, const char *op, const char *path,
                    int result, uint64_t bytes, const struct audit_detail *d)
{
    if (!fs->v->audit)
        return 0;
    struct audit_ctx who = audit_who(req);
    int r = audit_event_detail(fs->v->audit, &who, op, path ? path : "?", result, bytes, d);
    return r < 0 ? audit_failed(op) : 0;
}

int fs_audit_append(struct fs *fs, fuse_req_t req, const char *op, const char *path,
                    int result, uint64_t bytes, uint64_t *ticket)
{
    return fs_audit_append_detail(fs, req, op, path, result, bytes, NULL, ticket);
}

int fs_audit_append_detail(struct fs *fs, fuse_req_t req, const char *op, const char *path,
                           int result, uint64_t bytes, const struct audit_detail *d,
                           uint64_t *ticket)
{
    *ticket = 0;
    if (!fs->v->audit)
        return 0;
    struct audit_ctx who = audit_who(req);
    int r = audit_event_append_detail(fs->v->audit, &who, op, path ? path : "?", result,
                                      bytes, d, ticket);
    return r < 0 ? audit_failed(op) : 0;
}

int fs_audit_wait(struct fs *fs, const char *op, uint64_t ticket)
{
    if (!fs->v->audit || ticket == 0)
        return 0;
    return audit_event_wait(fs->v->audit, ticket) < 0 ? audit_failed(op) : 0;
}

/* End a metadata operation begun with meta_begin under meta_lock: append
 * its audit event inside the transaction, commit (or roll back on error),
 * drop the lock, then wait for the event's fdatasync outside it, so the
 * event is durable before the reply without holding others up. */
static int meta_op_end_detail(struct fs *fs, fuse_req_t req, const char *op, const char *path,
                              uint64_t bytes, int r, const struct audit_detail *d)
{
    struct meta *m = fs->v->meta;
    uint64_t ticket = 0;

    if (r == 0)
        r = fs_audit_append_detail(fs, req, op, path, 0, bytes, d, &ticket);
    if (r == 0)
        r = meta_commit(m);
    else
        meta_rollback(m);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r == 0)
        r = fs_audit_wait(fs, op, ticket);
    return r;
}

static int meta_op_end(struct fs *fs, fuse_req_t req, const char *op, const char *path,
                       uint64_t bytes, int r)
{
    return meta_op_end_detail(fs, req, op, path, bytes, r, NULL);
}

/* Audit a refused operation (EACCES: denied; EROFS on a read-only mount);
 * returns why, or -EIO if even that cannot be audited.  dest: a rename's. */
static int refuse_dest(struct fs *fs, fuse_req_t req, const char *op, uint64_t ino,
                       const char *name, int why, const char *dest)
{
    char *path = fs_path(fs, ino, name);
    struct audit_detail d = { .file = name ? 0 : ino, .dest = dest };
    int r = fs_audit_detail(fs, req, op, path, why, 0, &d);
    free(path);
    return r < 0 ? r : why;
}

/* Audit op on ino (its path and file id); 0, or -EIO if it cannot be. */
static int audit_ino(struct fs *fs, fuse_req_t req, const char *op, uint64_t ino, int result,
                     uint64_t bytes)
{
    char *path = fs_path(fs, ino, NULL);
    struct audit_detail d = { .file = ino };
    int r = fs_audit_detail(fs, req, op, path, result, bytes, &d);
    free(path);
    return r;
}

static int deny(struct fs *fs, fuse_req_t req, const char *op, uint64_t ino, const char *name)
{
    return refuse_dest(fs, req, op, ino, name, -EACCES, NULL);
}

static int may_create_folders(const struct fs *fs)
{
    return !fs->opt.read_only && (fs->v->account.roles & ROLE_DATAADMIN);
}

/* A change at the top of the mount other than a dataadmin's mkdir: say why
 * in the log (at most one line a second, so a file manager probing the top
 * cannot flood it), audit it as denied, -EACCES. */
static int root_deny(struct fs *fs, fuse_req_t req, const char *op, const char *name,
                     const char *dest)
{
    static int64_t last_ns;
    static unsigned suppressed;
    int64_t now = fs_now_ns();
    int64_t last = __atomic_load_n(&last_ns, __ATOMIC_RELAXED);
    if (now - last >= 1000000000 &&
        __atomic_compare_exchange_n(&last_ns, &last, now, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
        unsigned n = __atomic_exchange_n(&suppressed, 0, __ATOMIC_RELAXED);
        const char *how = strcmp(op, "mkdir") ? "put files inside a contract folder"
            : fs->opt.read_only ? "this mount is read-only"
            : name && name[0] == '.' ? "a contract folder's name does not start with a dot "
                                       "(a trash directory is not supported here)"
            : "creating a contract folder needs the dataadmin role";
        fprintf(stderr, "pactfs: %s \"%s\" at the top of the mount refused for account "
                "\"%s\": only contract folders live there and %s (%u similar refusals "
                "not logged)\n", op, name ? name : "", fs->v->account.name, how, n);
    } else {
        __atomic_add_fetch(&suppressed, 1, __ATOMIC_RELAXED);
    }
    return refuse_dest(fs, req, op, META_ROOT_INO, name, -EACCES, dest);
}

/* ------------------------------------------------------------------ */
/* Folders, keys and names                                             */

static int inode_folder_id(struct fs *fs, uint64_t ino, uint64_t *folder_id)
{
    struct fs_inode *in = fs_inode_find(fs, ino);
    if (in) {
        *folder_id = in->folder_id;
        fs_inode_put(fs, in, FS_REF_OP, 1);
        return 0;
    }
    struct meta_inode mi;
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_inode_get(fs->v->meta, ino, &mi);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r == 0)
        *folder_id = mi.folder_id;
    return r;
}

/* The folder ino belongs to (*vf NULL for the virtual root), with the
 * rights in need checked: -EACCES (audited), -EROFS, -EIO. */
static int folder_check_dest(struct fs *fs, fuse_req_t req, uint64_t ino, uint32_t need,
                             const char *op, const char *name, const char *dest,
                             struct vault_folder **vf)
{
    *vf = NULL;
    if ((need & RIGHT_WRITE) && fs->opt.read_only)
        return refuse_dest(fs, req, op, ino, name, -EROFS, dest);
    if (ino == META_ROOT_INO)
        return (need & RIGHT_WRITE) ? root_deny(fs, req, op, name, dest) : 0;
    uint64_t fid = 0;
    int r = inode_folder_id(fs, ino, &fid);
    if (r < 0)
        return r == -ENOENT ? -ENOENT : -EIO;
    *vf = vault_folder_by_id(fs->v, fid);
    if (!*vf || ((*vf)->rights & need) != need)
        return refuse_dest(fs, req, op, ino, name, -EACCES, dest);
    return 0;
}

static int folder_check(struct fs *fs, fuse_req_t req, uint64_t ino, uint32_t need,
                        const char *op, const char *name, struct vault_folder **vf)
{
    return folder_check_dest(fs, req, ino, need, op, name, NULL, vf);
}

static const struct folder_keys *cur_keys(struct fs *fs, const struct vault_folder *vf)
{
    return vault_folder_keys(fs->v, vf->id, vf->cur_version);
}

/* Key versions to try for reading: the current one first, then older. */
static size_t keys_to_try(struct fs *fs, const struct vault_folder *vf,
                          const struct folder_keys **out, size_t cap)
{
    size_t n = 0;
    const struct folder_keys *k = cur_keys(fs, vf);
    if (k && n < cap)
        out[n++] = k;
    for (uint32_t i = vf->nkeys; i-- > 0 && n < cap;)
        if (vf->keys[i] && vf->keys[i] != k)
            out[n++] = vf->keys[i];
    return n;
}

#define KEYS_MAX 64

struct enc_name {
    uint8_t b[NAME_MAX_ENC + 16];
    size_t len;
};

static int name_check(const char *name)
{
    size_t len = strlen(name);
    if (len == 0)
        return -EINVAL;
    if (len > NAME_MAX_PLAIN)
        return -ENAMETOOLONG;
    return 0;
}

static int enc_with(const struct folder_keys *k, uint64_t parent, const char *name,
                    struct enc_name *e)
{
    int r = name_encrypt(k, parent, name, strlen(name), e->b, &e->len);
    return r < 0 ? -EIO : 0;
}

int fs_tamper(struct fs *fs, fuse_req_t req, uint64_t ino, const char *name, const char *what)
{
    char *path = fs_path(fs, ino, name);
    fprintf(stderr, "pactfs: TAMPERING DETECTED on %s: %s; refusing it (EIO). The metadata "
            "store was altered: restore it from a backup or ask the database operator\n",
            path ? path : "?", what);
    fs_audit(fs, req, "tamper", path, -EIO, 0);
    free(path);
    return -EIO;
}

/* Look name up in dir parent of folder vf under any held key version
 * (meta_lock held).  *found gets the encrypted form that matched, *type
 * the child's type bits.  The entry's binding must verify under the key
 * version that encrypted its name, else -EIO (tampering, reported). */
static int dir_lookup_locked(struct fs *fs, fuse_req_t req, const struct vault_folder *vf,
                             uint64_t parent, const char *name, uint64_t *ino,
                             struct enc_name *found, uint32_t *type)
{
    const struct folder_keys *ks[KEYS_MAX];
    size_t nk = keys_to_try(fs, vf, ks, KEYS_MAX);
    int r = name_check(name);
    if (r < 0)
        return r;
    for (size_t i = 0; i < nk; i++) {
        struct enc_name e;
        struct meta_dirent_rec rec;
        r = enc_with(ks[i], parent, name, &e);
        if (r < 0)
            return r;
        r = meta_dirent_find(fs->v->meta, parent, e.b, e.len, &rec);
        if (r == 0) {
            if (dirent_bind_check(ks[i], parent, e.b, e.len, rec.ino, rec.mode, rec.bind,
                                  rec.bind_len) < 0)
                return fs_tamper(fs, req, parent, name, pfs_err_msg());
            *ino = rec.ino;
            if (found)
                *found = e;
            if (type)
                *type = rec.mode & S_IFMT;
            return 0;
        }
        if (r != -ENOENT)
            return r;
    }
    return -ENOENT;
}

/* Add an entry for ino under name, bound to ino and its type with the key
 * version that encrypted the name (meta_lock held, in a transaction). */
static int dirent_add_bound(struct fs *fs, const struct folder_keys *k, uint64_t parent,
                            const struct enc_name *e, uint64_t ino, uint32_t mode)
{
    uint8_t bind[DIRENT_BIND_LEN];
    if (dirent_bind(k, parent, e->b, e->len, ino, mode, bind) < 0)
        return -EIO;
    return meta_dirent_add(fs->v->meta, parent, e->b, e->len, ino, mode, bind, sizeof bind);
}

static int dec_any(struct fs *fs, const struct vault_folder *vf, uint64_t parent,
                   const uint8_t *in, size_t inlen, char *out, size_t *outlen)
{
    const struct folder_keys *ks[KEYS_MAX];
    size_t nk = keys_to_try(fs, vf, ks, KEYS_MAX);
    for (size_t i = 0; i < nk; i++)
        if (name_decrypt(ks[i], parent, in, inlen, out, outlen) == 0)
            return 0;
    return -EBADMSG;
}

/* AD for small sealed values: label || inode number (big-endian). */
/* Associated data of a small sealed value: its purpose, its inode and, for
 * an xattr, its name, so the database operator cannot move a value to
 * another file or another attribute of the same file. */
#define OWNER_AD_MAX (32 + 8 + NAME_MAX_PLAIN)

static int owner_ad(const char *label, uint64_t ino, const char *extra, uint8_t *ad,
                    size_t *adlen)
{
    struct wbuf w;
    wbuf_init(&w);
    wbuf_put_bytes(&w, label, strlen(label));
    wbuf_put_u64(&w, ino);
    if (extra)
        wbuf_put_str(&w, extra);
    size_t len;
    uint8_t *p = wbuf_steal(&w, &len);
    if (!p || len > OWNER_AD_MAX) {
        free(p);
        return -ENOMEM;
    }
    memcpy(ad, p, len);
    *adlen = len;
    free(p);
    return 0;
}

static int open_any(struct fs *fs, const struct vault_folder *vf, const char *label, uint64_t ino,
                    const char *extra, const uint8_t *in, size_t inlen, uint8_t **out,
                    size_t *outlen)
{
    uint8_t ad[OWNER_AD_MAX];
    size_t adlen;
    if (owner_ad(label, ino, extra, ad, &adlen) < 0)
        return -ENOMEM;
    const struct folder_keys *ks[KEYS_MAX];
    size_t nk = keys_to_try(fs, vf, ks, KEYS_MAX);
    for (size_t i = 0; i < nk; i++)
        if (folder_meta_open(ks[i], ad, adlen, in, inlen, out, outlen) == 0)
            return 0;
    return -EIO;
}

static int seal_cur(struct fs *fs, const struct vault_folder *vf, const char *label, uint64_t ino,
                    const char *extra, const void *pt, size_t n, uint8_t **out, size_t *outlen)
{
    uint8_t ad[OWNER_AD_MAX];
    size_t adlen;
    const struct folder_keys *k = cur_keys(fs, vf);
    if (!k)
        return -EACCES;
    if (owner_ad(label, ino, extra, ad, &adlen) < 0)
        return -ENOMEM;
    return folder_meta_seal(k, ad, adlen, pt, n, out, outlen) < 0 ? -EIO : 0;
}

/* ------------------------------------------------------------------ */
/* Attributes                                                          */

static void root_stat(struct fs *fs, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = META_ROOT_INO;
    /* Writable only for who can create folders there (mkdir by a dataadmin). */
    st->st_mode = S_IFDIR | (may_create_folders(fs) ? 0755 : 0555);
    st->st_nlink = 2 + fs->v->nfolders;
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_size = 4096;
    st->st_blksize = 4096;
    ns_to_ts(__atomic_load_n(&fs->mount_ns, __ATOMIC_RELAXED), &st->st_atim);
    st->st_mtim = st->st_ctim = st->st_atim;
}

/* st_blocks counts the plaintext the file's chunks hold, so du is honest
 * about sparse files.  A file of at most one chunk is counted by its size
 * (off by under one chunk, and the small-file path pays no query).  Called
 * without meta_lock. */
static blkcnt_t stored_blocks(struct fs *fs, const struct meta_inode *mi)
{
    uint64_t bytes = mi->size, held;
    if (S_ISREG(mi->mode) && mi->size > fs->chunk_size) {
        pthread_mutex_lock(&fs->meta_lock);
        int r = meta_chunk_bytes(fs->v->meta, mi->ino, &held);
        pthread_mutex_unlock(&fs->meta_lock);
        if (r == 0 && held < bytes)
            bytes = held;
    }
    return (blkcnt_t)((bytes + 511) / 512);
}

static void stat_from_meta(struct fs *fs, const struct meta_inode *mi, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = mi->ino;
    st->st_mode = mi->mode;
    st->st_nlink = mi->nlink;
    st->st_uid = mi->uid;
    st->st_gid = mi->gid;
    st->st_rdev = mi->rdev;
    st->st_size = (off_t)mi->size;
    st->st_blksize = (blksize_t)fs->chunk_size;
    st->st_blocks = stored_blocks(fs, mi);
    ns_to_ts(mi->atime_ns, &st->st_atim);
    ns_to_ts(mi->mtime_ns, &st->st_mtim);
    ns_to_ts(mi->ctime_ns, &st->st_ctim);
}

/* Attributes of ino with in-memory size/mtime of open files. */
static int inode_stat(struct fs *fs, uint64_t ino, struct stat *st)
{
    if (ino == META_ROOT_INO) {
        root_stat(fs, st);
        return 0;
    }
    struct meta_inode mi;
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_inode_get(fs->v->meta, ino, &mi);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0)
        return r == -ENOENT ? -ENOENT : -EIO;
    stat_from_meta(fs, &mi, st);
    struct fs_inode *in = fs_inode_find(fs, ino);
    if (in) {
        fs_data_fill_attr(in, st);
        fs_inode_put(fs, in, FS_REF_OP, 1);
    }
    return 0;
}

/* Reply with an entry the kernel now holds one lookup reference on. */
static void reply_entry_for(struct fs *fs, fuse_req_t req, const struct meta_inode *mi,
                            uint64_t parent, const char *name, double timeout)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    struct fs_inode *in = fs_inode_get(fs, mi->ino, mi->folder_id, mi->mode, FS_REF_LOOKUP);
    if (!in) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fs_inode_set_name(fs, mi->ino, parent, name);
    stat_from_meta(fs, mi, &e.attr);
    fs_data_fill_attr(in, &e.attr);
    e.ino = mi->ino;
    e.generation = 1;
    e.attr_timeout = timeout;
    e.entry_timeout = timeout;
    if (fuse_reply_entry(req, &e) != 0)
        fs_inode_put(fs, in, FS_REF_LOOKUP, 1);
}

static void touch_dir(struct meta_inode *dir, int64_t now, int nlink_delta)
{
    dir->mtime_ns = dir->ctime_ns = now;
    if (nlink_delta < 0 && dir->nlink > 2)
        dir->nlink--;
    else if (nlink_delta > 0)
        dir->nlink++;
}

/* ------------------------------------------------------------------ */
/* lookup, forget, getattr                                             */

static int root_lookup(struct fs *fs, fuse_req_t req, const char *name,
                       struct vault_folder **out, uint64_t *ino, uint32_t *type)
{
    int r = name_check(name);
    if (r < 0)
        return r;
    pthread_mutex_lock(&fs->meta_lock);
    r = -ENOENT;
    for (size_t i = 0; i < fs->v->nfolders && r == -ENOENT; i++) {
        struct vault_folder *vf = &fs->v->folders[i];
        if (!(vf->rights & RIGHT_READ))
            continue;
        r = dir_lookup_locked(fs, req, vf, META_ROOT_INO, name, ino, NULL, type);
        if (r == 0 && *ino != vf->root_ino)
            r = -ENOENT;   /* a dirent at the root that is not this folder's */
        if (r == 0)
            *out = vf;
        else if (r != -ENOENT)
            break;
    }
    pthread_mutex_unlock(&fs->meta_lock);
    return r;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = req_fs(req);
    struct vault_folder *vf = NULL;
    uint64_t ino = 0;
    uint32_t type = 0;
    int r;
    if (parent == META_ROOT_INO) {
        r = root_lookup(fs, req, name, &vf, &ino, &type);
    } else {
        r = folder_check(fs, req, parent, RIGHT_READ, "lookup", name, &vf);
        if (r == 0) {
            pthread_mutex_lock(&fs->meta_lock);
            r = dir_lookup_locked(fs, req, vf, parent, name, &ino, NULL, &type);
            pthread_mutex_unlock(&fs->meta_lock);
        }
    }
    struct meta_inode mi;
    if (r == 0) {
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_inode_get(fs->v->meta, ino, &mi);
        pthread_mutex_unlock(&fs->meta_lock);
    }
    if (r == 0 && ((mi.mode & S_IFMT) != type || mi.folder_id != vf->id))
        r = fs_tamper(fs, req, parent, name, "check \"entry binding\" failed: the inode's "
                      "type or folder is not the one its entry was written for");
    if (r == 0 && parent == META_ROOT_INO) {
        char *path = fs_path(fs, META_ROOT_INO, name);
        struct audit_detail d = { .file = ino };
        r = fs_audit_detail(fs, req, "lookup", path, 0, 0, &d);
        free(path);
    }
    if (r < 0) {
        fuse_reply_err(req, r == -ENOENT || r == -EACCES || r == -ENAMETOOLONG ? -r : EIO);
        return;
    }
    reply_entry_for(fs, req, &mi, parent, name,
                    parent == META_ROOT_INO ? ROOT_ENTRY_TIMEOUT : cache_timeout(fs));
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    fs_inode_forget(req_fs(req), ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    struct fs *fs = req_fs(req);
    for (size_t i = 0; i < count; i++)
        fs_inode_forget(fs, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = req_fs(req);
    struct stat st;
    int r = inode_stat(fs, ino, &st);
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_attr(req, &st, ino == META_ROOT_INO ? ROOT_ENTRY_TIMEOUT : cache_timeout(fs));
}

/* ------------------------------------------------------------------ */
/* setattr                                                             */

static int caller_in_group(fuse_req_t req, gid_t gid)
{
    const struct fuse_ctx *c = fuse_req_ctx(req);
    if (c->gid == gid)
        return 1;
    gid_t groups[64];
    int n = fuse_req_getgroups(req, 64, groups);
    for (int i = 0; i < n && i < 64; i++)
        if (groups[i] == gid)
            return 1;
    return 0;
}

/* POSIX chown rules: only root changes the owner; the owner may change the
 * group to one of its own groups. */
static int chown_allowed(fuse_req_t req, const struct meta_inode *mi, const struct stat *a,
                         int valid)
{
    const struct fuse_ctx *c = fuse_req_ctx(req);
    if (c->uid == 0)
        return 0;
    if ((valid & FUSE_SET_ATTR_UID) && a->st_uid != mi->uid)
        return -EPERM;
    if ((valid & FUSE_SET_ATTR_GID) && a->st_gid != mi->gid &&
        (c->uid != mi->uid || !caller_in_group(req, a->st_gid)))
        return -EPERM;
    return 0;
}

static int apply_setattr(fuse_req_t req, struct meta_inode *mi, const struct stat *a, int valid)
{
    int64_t now = fs_now_ns();
    if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        int r = chown_allowed(req, mi, a, valid);
        if (r < 0)
            return r;
        if (valid & FUSE_SET_ATTR_UID)
            mi->uid = a->st_uid;
        if (valid & FUSE_SET_ATTR_GID)
            mi->gid = a->st_gid;
        if (fuse_req_ctx(req)->uid != 0 && !S_ISDIR(mi->mode))
            mi->mode &= ~(uint32_t)(S_ISUID | S_ISGID);
    }
    if (valid & FUSE_SET_ATTR_MODE)
        mi->mode = (mi->mode & S_IFMT) | (a->st_mode & 07777);
    if (valid & FUSE_SET_ATTR_ATIME_NOW)
        mi->atime_ns = now;
    else if (valid & FUSE_SET_ATTR_ATIME)
        mi->atime_ns = ts_to_ns(&a->st_atim);
    if (valid & FUSE_SET_ATTR_MTIME_NOW)
        mi->mtime_ns = now;
    else if (valid & FUSE_SET_ATTR_MTIME)
        mi->mtime_ns = ts_to_ns(&a->st_mtim);
    mi->ctime_ns = (valid & FUSE_SET_ATTR_CTIME) ? ts_to_ns(&a->st_ctim) : now;
    return 0;
}

static int setattr_size(struct fs *fs, fuse_req_t req, uint64_t ino, uint64_t size,
                        const char *path)
{
    struct meta_inode mi;
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_inode_get(fs->v->meta, ino, &mi);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0)
        return r == -ENOENT ? r : -EIO;
    if (S_ISDIR(mi.mode))
        return -EISDIR;
    if (!S_ISREG(mi.mode))
        return -EINVAL;
    struct fs_inode *in = fs_inode_get(fs, ino, mi.folder_id, mi.mode, FS_REF_OP);
    if (!in)
        return -ENOMEM;
    r = fs_data_attach(fs, in, NULL);
    if (r == 0)
        r = fs_data_truncate(fs, in, size);
    fs_inode_put(fs, in, FS_REF_OP, 1);
    struct audit_detail d = { .file = ino, .set = AUDIT_SET_SIZE, .size = size };
    int a = fs_audit_detail(fs, req, "truncate", path, r, size, &d);
    return r < 0 ? (r == -EACCES ? r : -EIO) : a;
}

/* chmod, chown or utimens when only one kind of field changes. */
static const char *setattr_op(int valid)
{
    int mode = valid & FUSE_SET_ATTR_MODE;
    int owner = valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID);
    int times = valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME |
                         FUSE_SET_ATTR_MTIME_NOW);
    if (mode && !owner && !times)
        return "chmod";
    if (owner && !mode && !times)
        return "chown";
    if (times && !mode && !owner)
        return "utimens";
    return "setattr";
}

/* The fields a setattr asked to change, with their new values (as
 * applied to mi when it succeeded, as asked otherwise). */
static struct audit_detail setattr_detail(uint64_t ino, const struct meta_inode *mi,
                                          const struct stat *a, int valid)
{
    struct audit_detail d = { .file = ino };
    if (valid & FUSE_SET_ATTR_MODE) {
        d.set |= AUDIT_SET_MODE;
        d.mode = a->st_mode & 07777;
    }
    if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        d.set |= AUDIT_SET_OWNER;
        d.uid = (valid & FUSE_SET_ATTR_UID) ? a->st_uid : mi->uid;
        d.gid = (valid & FUSE_SET_ATTR_GID) ? a->st_gid : mi->gid;
    }
    if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
        d.set |= AUDIT_SET_ATIME;
        d.atime_ns = (valid & FUSE_SET_ATTR_ATIME_NOW) ? mi->atime_ns : ts_to_ns(&a->st_atim);
    }
    if (valid & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
        d.set |= AUDIT_SET_MTIME;
        d.mtime_ns = (valid & FUSE_SET_ATTR_MTIME_NOW) ? mi->mtime_ns : ts_to_ns(&a->st_mtim);
    }
    return d;
}

static int setattr_meta(struct fs *fs, fuse_req_t req, uint64_t ino, const struct stat *attr,
                        int valid, const char *path, int64_t *mtime_out)
{
    struct meta *m = fs->v->meta;
    struct meta_inode mi;
    memset(&mi, 0, sizeof mi);
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_begin(m);
    if (r == 0)
        r = meta_inode_get(m, ino, &mi);
    if (r == 0)
        r = apply_setattr(req, &mi, attr, valid);
    if (r == 0)
        r = meta_inode_update(m, &mi);
    struct audit_detail d = setattr_detail(ino, &mi, attr, valid);
    const char *op = setattr_op(valid);
    int failed = r;
    r = meta_op_end_detail(fs, req, op, path, 0, r, &d);
    if (failed < 0 && fs_audit_detail(fs, req, op, path, failed, 0, &d) < 0)
        r = -EIO;
    *mtime_out = mi.mtime_ns;
    return r;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
                       struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = req_fs(req);
    struct vault_folder *vf;
    int r = folder_check(fs, req, ino, RIGHT_READ | RIGHT_WRITE,
                         (valid & FUSE_SET_ATTR_SIZE) ? "truncate" : "setattr", NULL, &vf);
    if (r == 0 && ino == META_ROOT_INO)
        r = deny(fs, req, "setattr", ino, NULL);
    char *path = r == 0 ? fs_path(fs, ino, NULL) : NULL;
    if (r == 0 && (valid & FUSE_SET_ATTR_SIZE))
        r = setattr_size(fs, req, ino, (uint64_t)attr->st_size, path);
    int other = valid & ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_FILE | FUSE_SET_ATTR_OPEN |
                          FUSE_SET_ATTR_FORCE);
    if (r == 0 && other) {
        /* A commit of written data must not land between reading and
         * rewriting the row, or it would undo an explicit mtime. */
        int64_t mtime = 0;
        struct fs_inode *in = fs_inode_find(fs, ino);
        int held = in && fs_data_commit_hold(in);
        r = setattr_meta(fs, req, ino, attr, valid, path, &mtime);
        if (held)
            fs_data_commit_release(in, r == 0 && (valid & (FUSE_SET_ATTR_MTIME |
                                                           FUSE_SET_ATTR_MTIME_NOW)), mtime);
        if (in)
            fs_inode_put(fs, in, FS_REF_OP, 1);
    }
    free(path);
    struct stat st;
    if (r == 0)
        r = inode_stat(fs, ino, &st);
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_attr(req, &st, cache_timeout(fs));
}

/* ------------------------------------------------------------------ */
/* Creating nodes                                                      */

struct new_node {
    uint32_t mode;
    uint64_t rdev;
    const char *link_target;   /* symlinks */
    uint8_t *dek;              /* regular files: secmem DEK_LEN, filled */
    const char *op;
};

/* Create the inode row, its DEK or symlink target (meta_lock held, in a
 * transaction). */
static int node_insert(struct fs *fs, fuse_req_t req, const struct vault_folder *vf,
                       const struct meta_inode *dir, struct new_node *nn, struct meta_inode *mi)
{
    const struct fuse_ctx *c = fuse_req_ctx(req);
    int64_t now = fs_now_ns();
    const struct folder_keys *k = cur_keys(fs, vf);
    if (!k)
        return -EACCES;
    memset(mi, 0, sizeof *mi);
    mi->folder_id = vf->id;
    mi->mode = nn->mode;
    mi->uid = c->uid;
    mi->gid = (dir->mode & S_ISGID) ? dir->gid : c->gid;
    if (S_ISDIR(nn->mode) && (dir->mode & S_ISGID))
        mi->mode |= S_ISGID;
    mi->nlink = S_ISDIR(nn->mode) ? 2 : 1;
    mi->rdev = nn->rdev;
    mi->atime_ns = mi->mtime_ns = mi->ctime_ns = now;
    mi->key_version = vf->cur_version;
    if (nn->link_target)
        mi->size = strlen(nn->link_target);
    int r = meta_inode_create(fs->v->meta, mi);
    if (r < 0)
        return r;
    if (S_ISREG(nn->mode)) {
        uint8_t wrapped[DEK_WRAPPED_LEN];
        r = dek_generate(nn->dek);
        if (r == 0)
            r = dek_wrap(k, mi->ino, nn->dek, wrapped);
        if (r < 0)
            return -EIO;
        memcpy(mi->wrapped_dek, wrapped, DEK_WRAPPED_LEN);
        mi->wrapped_dek_len = DEK_WRAPPED_LEN;
        if (fs_data_commit_initial(nn->dek, mi) < 0)
            return -EIO;
        r = meta_inode_update(fs->v->meta, mi);
    }
    if (r == 0 && nn->link_target) {
        uint8_t *sealed = NULL;
        size_t slen = 0;
        r = seal_cur(fs, vf, "symlink", mi->ino, NULL, nn->link_target, strlen(nn->link_target),
                     &sealed, &slen);
        if (r == 0)
            r = meta_symlink_set(fs->v->meta, mi->ino, sealed, slen);
        free(sealed);
    }
    return r;
}

/* mkdir, create, mknod, symlink: one meta transaction that also audits. */
static int make_node(struct fs *fs, fuse_req_t req, uint64_t parent, const char *name,
                     struct new_node *nn, struct meta_inode *mi)
{
    struct vault_folder *vf;
    int r = folder_check(fs, req, parent, RIGHT_READ | RIGHT_WRITE, nn->op, name, &vf);
    if (r < 0)
        return r;
    r = name_check(name);
    if (r < 0)
        return r;
    const struct folder_keys *k = cur_keys(fs, vf);
    struct enc_name en;
    if (!k || enc_with(k, parent, name, &en) < 0)
        return -EIO;
    char *path = fs_path(fs, parent, name);
    struct meta *m = fs->v->meta;
    pthread_mutex_lock(&fs->meta_lock);
    struct meta_inode dir;
    uint64_t existing;
    r = meta_begin(m);
    if (r == 0)
        r = meta_inode_get(m, parent, &dir);
    if (r == 0 && !S_ISDIR(dir.mode))
        r = -ENOTDIR;
    if (r == 0) {
        r = dir_lookup_locked(fs, req, vf, parent, name, &existing, NULL, NULL);
        r = r == 0 ? -EEXIST : (r == -ENOENT ? 0 : r);
    }
    if (r == 0)
        r = node_insert(fs, req, vf, &dir, nn, mi);
    if (r == 0)
        r = dirent_add_bound(fs, k, parent, &en, mi->ino, mi->mode);
    if (r == 0) {
        touch_dir(&dir, mi->ctime_ns, S_ISDIR(nn->mode) ? 1 : 0);
        r = meta_inode_update(m, &dir);
    }
    r = meta_op_end(fs, req, nn->op, path, 0, r);
    free(path);
    if (r < 0 && r != -EEXIST && r != -ENOTDIR && r != -EACCES && r != -ENOENT)
        r = -EIO;
    return r;
}

static void reply_new_entry(struct fs *fs, fuse_req_t req, int r, const struct meta_inode *mi,
                            uint64_t parent, const char *name)
{
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        reply_entry_for(fs, req, mi, parent, name, cache_timeout(fs));
}

/* mkdir at the root by a dataadmin: a new contract folder, exactly as
 * `pactfs-admin folder-create` makes it (folder key, this account's
 * envelope and signed grant), audited as folder-create in the same
 * transaction; then its envelope is opened so it shows at once. */
static int root_mkdir(struct fs *fs, fuse_req_t req, const char *name, struct meta_inode *mi)
{
    if (fs->opt.read_only)
        return -EROFS;
    /* Desktops probe the top of every mount with hidden names (the
     * freedesktop.org trash's .Trash-UID, .xdg-volume-info): those must
     * never become contract folders. */
    if (!may_create_folders(fs) || name[0] == '.')
        return root_deny(fs, req, "mkdir", name, NULL);
    int r = name_check(name);
    if (r < 0)
        return r;
    char *path = fs_path(fs, META_ROOT_INO, name);
    struct meta *m = fs->v->meta;
    uint64_t id = 0, ticket = 0;
    pthread_mutex_lock(&fs->meta_lock);
    r = meta_begin(m);
    if (r == 0)
        r = vault_folder_create_txn(fs->v, name, &id);
    if (r == 0)
        r = fs_audit_append(fs, req, "folder-create", path, 0, 0, &ticket);
    if (r == 0)
        r = meta_commit(m);
    else
        meta_rollback(m);
    if (r == 0 && vault_folder_load(fs->v, id) < 0)
        r = -EIO;
    struct vault_folder *vf = r == 0 ? vault_folder_by_id(fs->v, id) : NULL;
    if (vf)
        r = meta_inode_get(m, vf->root_ino, mi);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r == 0)
        __atomic_store_n(&fs->mount_ns, fs_now_ns(), __ATOMIC_RELAXED);   /* root's times */
    if (r < 0 && r != -EEXIST)
        fprintf(stderr, "pactfs: cannot create contract folder \"%s\": %s\n", name,
                pfs_err_msg());
    if (r == 0)
        r = fs_audit_wait(fs, "folder-create", ticket);
    free(path);
    return r < 0 && r != -EEXIST ? -EIO : r;
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    struct fs *fs = req_fs(req);
    if (parent == META_ROOT_INO) {
        struct meta_inode mi;
        int r = root_mkdir(fs, req, name, &mi);
        if (r < 0)
            fuse_reply_err(req, r == -EACCES || r == -EEXIST || r == -EROFS ||
                           r == -ENAMETOOLONG || r == -EINVAL ? -r : EIO);
        else
            reply_entry_for(fs, req, &mi, META_ROOT_INO, name, ROOT_ENTRY_TIMEOUT);
        return;
    }
    struct new_node nn = { .mode = S_IFDIR | (mode & 07777), .op = "mkdir" };
    struct meta_inode mi;
    int r = make_node(fs, req, parent, name, &nn, &mi);
    reply_new_entry(fs, req, r, &mi, parent, name);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                     dev_t rdev)
{
    struct fs *fs = req_fs(req);
    if (!S_ISREG(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode)) {
        fuse_reply_err(req, EPERM);   /* no device nodes inside a vault */
        return;
    }
    struct new_node nn = { .mode = mode, .rdev = rdev, .op = "create" };
    uint8_t *dek = secmem_alloc(DEK_LEN);
    if (!dek) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    nn.dek = dek;
    struct meta_inode mi;
    int r = make_node(fs, req, parent, name, &nn, &mi);
    secmem_free(dek, DEK_LEN);
    reply_new_entry(fs, req, r, &mi, parent, name);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    struct fs *fs = req_fs(req);
    if (strlen(link) >= PATH_MAX) {
        fuse_reply_err(req, ENAMETOOLONG);
        return;
    }
    struct new_node nn = { .mode = S_IFLNK | 0777, .link_target = link, .op = "symlink" };
    struct meta_inode mi;
    int r = make_node(fs, req, parent, name, &nn, &mi);
    reply_new_entry(fs, req, r, &mi, parent, name);
}

static struct fs_handle *handle_new(struct fs *fs, struct fs_inode *in, int writable)
{
    struct fs_handle *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->in = in;
    h->writable = writable;
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_lock(&fs->handles_lock);
    h->next = fs->handles;
    if (fs->handles)
        fs->handles->prev = h;
    fs->handles = h;
    pthread_mutex_unlock(&fs->handles_lock);
    return h;
}

static void handle_free(struct fs *fs, struct fs_handle *h)
{
    pthread_mutex_lock(&fs->handles_lock);
    if (h->prev) h->prev->next = h->next; else fs->handles = h->next;
    if (h->next) h->next->prev = h->prev;
    pthread_mutex_unlock(&fs->handles_lock);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

/* At unmount the kernel may drop releases still queued: close those
 * handles here so their inodes can be retired. */
static void handles_close_all(struct fs *fs)
{
    while (fs->handles) {
        struct fs_handle *h = fs->handles;
        fs_inode_put(fs, h->in, FS_REF_OPEN, 1);
        handle_free(fs, h);
    }
}

static int open_writable(int flags)
{
    return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    struct fs *fs = req_fs(req);
    struct new_node nn = { .mode = S_IFREG | (mode & 07777), .op = "create" };
    uint8_t *dek = secmem_alloc(DEK_LEN);
    if (!dek) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    nn.dek = dek;
    struct meta_inode mi;
    int r = make_node(fs, req, parent, name, &nn, &mi);
    struct fs_inode *in = NULL;
    if (r == 0) {
        in = fs_inode_get(fs, mi.ino, mi.folder_id, mi.mode, FS_REF_LOOKUP);
        r = in ? fs_data_attach(fs, in, dek) : -ENOMEM;
    }
    secmem_free(dek, DEK_LEN);
    struct fs_handle *h = NULL;
    if (r == 0) {
        h = handle_new(fs, in, 1);
        r = h ? 0 : -ENOMEM;
    }
    if (r < 0) {
        if (in)
            fs_inode_put(fs, in, FS_REF_LOOKUP, 1);
        fuse_reply_err(req, -r);
        return;
    }
    fs_inode_set_name(fs, mi.ino, parent, name);
    fs_inode_get(fs, mi.ino, mi.folder_id, mi.mode, FS_REF_OPEN);
    fi->fh = (uint64_t)(uintptr_t)h;
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    stat_from_meta(fs, &mi, &e.attr);
    e.ino = mi.ino;
    e.generation = 1;
    e.attr_timeout = e.entry_timeout = cache_timeout(fs);
    if (fuse_reply_create(req, &e, fi) != 0) {
        fs_inode_put(fs, in, FS_REF_OPEN, 1);
        fs_inode_put(fs, in, FS_REF_LOOKUP, 1);
        handle_free(fs, h);
    }
}

/* ------------------------------------------------------------------ */
/* Removing entries                                                    */

/* After a link went: nlink 0 means delete now, or at the last reference. */
static void maybe_delete(struct fs *fs, uint64_t ino, uint32_t nlink)
{
    if (nlink == 0 && !fs_inode_mark_unlinked(fs, ino))
        fs_inode_delete_now(fs, ino);
}

/* Drop one link of victim (meta_lock held, in a transaction). */
static int drop_link(struct meta *m, struct meta_inode *victim, int64_t now)
{
    if (S_ISDIR(victim->mode))
        victim->nlink = 0;
    else if (victim->nlink > 0)
        victim->nlink--;
    victim->ctime_ns = now;
    return meta_inode_update(m, victim);
}

static int dir_is_empty(struct meta *m, uint64_t ino)
{
    uint64_t n = 0;
    int r = meta_dirent_count(m, ino, &n);
    if (r < 0)
        return r;
    return n == 0 ? 0 : -ENOTEMPTY;
}

static int remove_entry(struct fs *fs, fuse_req_t req, uint64_t parent, const char *name,
                        int is_rmdir, uint64_t *ino_out, uint32_t *nlink_out)
{
    const char *op = is_rmdir ? "rmdir" : "unlink";
    struct vault_folder *vf;
    int r = folder_check(fs, req, parent, RIGHT_READ | RIGHT_WRITE, op, name, &vf);
    if (r < 0)
        return r;
    char *path = fs_path(fs, parent, name);
    struct meta *m = fs->v->meta;
    int64_t now = fs_now_ns();
    struct enc_name en;
    struct meta_inode victim, dir;
    uint64_t ino = 0;
    pthread_mutex_lock(&fs->meta_lock);
    r = meta_begin(m);
    if (r == 0)
        r = dir_lookup_locked(fs, req, vf, parent, name, &ino, &en, NULL);
    if (r == 0)
        r = meta_inode_get(m, ino, &victim);
    if (r == 0 && is_rmdir && !S_ISDIR(victim.mode))
        r = -ENOTDIR;
    if (r == 0 && !is_rmdir && S_ISDIR(victim.mode))
        r = -EISDIR;
    if (r == 0 && is_rmdir)
        r = dir_is_empty(m, ino);
    if (r == 0)
        r = meta_dirent_remove(m, parent, en.b, en.len);
    if (r == 0)
        r = drop_link(m, &victim, now);
    if (r == 0)
        r = meta_inode_get(m, parent, &dir);
    if (r == 0) {
        touch_dir(&dir, now, is_rmdir ? -1 : 0);
        r = meta_inode_update(m, &dir);
    }
    r = meta_op_end(fs, req, op, path, 0, r);
    free(path);
    *ino_out = ino;
    *nlink_out = victim.nlink;
    return r;
}

static int errno_out(int r)
{
    switch (r) {
    case -ENOENT: case -EEXIST: case -ENOTDIR: case -EISDIR: case -ENOTEMPTY:
    case -EACCES: case -EPERM: case -EROFS: case -EXDEV: case -EINVAL:
    case -ENAMETOOLONG: case -ENOMEM: case -ENODATA: case -ERANGE: case -ENOTSUP:
    case -EMLINK:
        return -r;
    default:
        return EIO;
    }
}

static void op_unlink_common(fuse_req_t req, fuse_ino_t parent, const char *name, int is_rmdir)
{
    struct fs *fs = req_fs(req);
    uint64_t ino = 0;
    uint32_t nlink = 1;
    int r = remove_entry(fs, req, parent, name, is_rmdir, &ino, &nlink);
    if (r == 0)
        maybe_delete(fs, ino, nlink);
    fuse_reply_err(req, r < 0 ? errno_out(r) : 0);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    op_unlink_common(req, parent, name, 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    op_unlink_common(req, parent, name, 1);
}

/* ------------------------------------------------------------------ */
/* rename and link                                                     */

struct rename_ctx {
    struct vault_folder *vf;
    uint64_t parent, newparent;
    const char *name, *newname;
    unsigned flags;
    struct enc_name src_en, dst_en_cur;   /* as stored; target under current keys */
    struct enc_name dst_en;               /* target as stored (if it exists) */
    struct enc_name src_en_cur;           /* source name in newparent... for exchange */
    uint64_t src_ino, dst_ino;
    struct meta_inode src, dst;
    int dst_exists;
    uint64_t victim;                      /* ino whose nlink may have reached 0 */
    uint32_t victim_nlink;
};

/* Type rules of rename(2) for an existing target (meta_lock held). */
static int rename_target_ok(struct meta *m, const struct rename_ctx *c)
{
    if (S_ISDIR(c->src.mode) && !S_ISDIR(c->dst.mode))
        return -ENOTDIR;
    if (!S_ISDIR(c->src.mode) && S_ISDIR(c->dst.mode))
        return -EISDIR;
    if (S_ISDIR(c->dst.mode))
        return dir_is_empty(m, c->dst_ino);
    return 0;
}

static int adjust_parents(struct meta *m, uint64_t from, uint64_t to, int moved_dir,
                          int64_t now)
{
    struct meta_inode a, b;
    int r = meta_inode_get(m, from, &a);
    if (r < 0)
        return r;
    touch_dir(&a, now, (moved_dir && from != to) ? -1 : 0);
    r = meta_inode_update(m, &a);
    if (r < 0 || from == to)
        return r;
    r = meta_inode_get(m, to, &b);
    if (r < 0)
        return r;
    touch_dir(&b, now, moved_dir ? 1 : 0);
    return meta_inode_update(m, &b);
}

static int rename_exchange(struct fs *fs, struct rename_ctx *c, int64_t now)
{
    struct meta *m = fs->v->meta;
    const struct folder_keys *k = cur_keys(fs, c->vf);
    struct enc_name a_new, b_new;   /* src under newname/newparent, dst under name/parent */
    if (!k || enc_with(k, c->newparent, c->newname, &a_new) < 0 ||
        enc_with(k, c->parent, c->name, &b_new) < 0)
        return -EIO;
    int r = meta_dirent_remove(m, c->parent, c->src_en.b, c->src_en.len);
    if (r == 0)
        r = meta_dirent_remove(m, c->newparent, c->dst_en.b, c->dst_en.len);
    if (r == 0)
        r = dirent_add_bound(fs, k, c->newparent, &a_new, c->src_ino, c->src.mode);
    if (r == 0)
        r = dirent_add_bound(fs, k, c->parent, &b_new, c->dst_ino, c->dst.mode);
    if (r == 0 && c->parent != c->newparent && S_ISDIR(c->src.mode) != S_ISDIR(c->dst.mode)) {
        /* a directory moved one way, a non-directory the other */
        int src_dir = S_ISDIR(c->src.mode);
        r = adjust_parents(m, src_dir ? c->parent : c->newparent,
                           src_dir ? c->newparent : c->parent, 1, now);
    } else if (r == 0) {
        r = adjust_parents(m, c->parent, c->newparent, 0, now);
    }
    c->src.ctime_ns = c->dst.ctime_ns = now;
    if (r == 0)
        r = meta_inode_update(m, &c->src);
    if (r == 0)
        r = meta_inode_update(m, &c->dst);
    return r;
}

static int rename_move(struct fs *fs, struct rename_ctx *c, int64_t now)
{
    struct meta *m = fs->v->meta;
    const struct folder_keys *k = cur_keys(fs, c->vf);
    struct enc_name to;
    if (!k || enc_with(k, c->newparent, c->newname, &to) < 0)
        return -EIO;
    int r = 0;
    if (c->dst_exists) {
        r = rename_target_ok(m, c);
        if (r == 0)
            r = meta_dirent_remove(m, c->newparent, c->dst_en.b, c->dst_en.len);
        if (r == 0)
            r = drop_link(m, &c->dst, now);
        if (r == 0 && S_ISDIR(c->dst.mode)) {
            /* the replaced directory's ".." link to newparent goes */
            struct meta_inode np;
            r = meta_inode_get(m, c->newparent, &np);
            if (r == 0) {
                touch_dir(&np, now, -1);
                r = meta_inode_update(m, &np);
            }
        }
        c->victim = c->dst_ino;
        c->victim_nlink = c->dst.nlink;
    }
    if (r == 0)
        r = meta_dirent_remove(m, c->parent, c->src_en.b, c->src_en.len);
    if (r == 0)
        r = dirent_add_bound(fs, k, c->newparent, &to, c->src_ino, c->src.mode);
    if (r == 0)
        r = adjust_parents(m, c->parent, c->newparent, S_ISDIR(c->src.mode), now);
    if (r == 0) {
        c->src.ctime_ns = now;
        r = meta_inode_update(m, &c->src);
    }
    return r;
}

static int rename_locked(struct fs *fs, fuse_req_t req, struct rename_ctx *c, const char *path,
                         uint64_t *ticket)
{
    uint32_t src_type = 0, dst_type = 0;
    struct meta *m = fs->v->meta;
    int64_t now = fs_now_ns();
    int r = meta_begin(m);
    if (r < 0)
        return r;
    r = dir_lookup_locked(fs, req, c->vf, c->parent, c->name, &c->src_ino, &c->src_en,
                          &src_type);
    if (r == 0)
        r = meta_inode_get(m, c->src_ino, &c->src);
    if (r == 0 && (c->src.mode & S_IFMT) != src_type)
        r = fs_tamper(fs, req, c->parent, c->name, "check \"entry binding\" failed: the "
                      "inode's type is not the one its entry was written for");
    if (r == 0) {
        int t = dir_lookup_locked(fs, req, c->vf, c->newparent, c->newname, &c->dst_ino,
                                  &c->dst_en, &dst_type);
        c->dst_exists = t == 0;
        if (t == 0)
            r = meta_inode_get(m, c->dst_ino, &c->dst);
        else if (t != -ENOENT)
            r = t;
        if (r == 0 && t == 0 && (c->dst.mode & S_IFMT) != dst_type)
            r = fs_tamper(fs, req, c->newparent, c->newname, "check \"entry binding\" failed: "
                          "the inode's type is not the one its entry was written for");
    }
    if (r == 0 && (c->flags & RENAME_NOREPLACE) && c->dst_exists)
        r = -EEXIST;
    if (r == 0 && (c->flags & RENAME_EXCHANGE) && !c->dst_exists)
        r = -ENOENT;
    int same = r == 0 && c->dst_exists && c->dst_ino == c->src_ino;
    if (r == 0 && !same)
        r = (c->flags & RENAME_EXCHANGE) ? rename_exchange(fs, c, now) : rename_move(fs, c, now);
    if (r == 0)
        r = fs_audit_append(fs, req, "rename", path, 0, 0, ticket);
    if (r == 0)
        r = meta_commit(m);
    else
        meta_rollback(m);
    return r;
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    struct fs *fs = req_fs(req);
    struct rename_ctx c;
    memset(&c, 0, sizeof c);
    c.parent = parent;
    c.newparent = newparent;
    c.name = name;
    c.newname = newname;
    c.flags = flags;
    int r = 0;
    if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
        r = -EINVAL;
    struct vault_folder *vf2 = NULL;
    char *dest = fs_path(fs, newparent, newname);
    if (r == 0)
        r = folder_check_dest(fs, req, parent, RIGHT_READ | RIGHT_WRITE, "rename", name, dest,
                              &c.vf);
    if (r == 0)
        r = folder_check_dest(fs, req, newparent, RIGHT_READ | RIGHT_WRITE, "rename", newname,
                              dest, &vf2);
    free(dest);
    if (r == 0 && c.vf != vf2)
        r = -EXDEV;
    if (r == 0)
        r = name_check(newname);
    if (r < 0) {
        fuse_reply_err(req, errno_out(r));
        return;
    }
    char *from = fs_path(fs, parent, name);
    char *to = fs_path(fs, newparent, newname);
    size_t plen = (from ? strlen(from) : 1) + (to ? strlen(to) : 1) + 5;
    char *path = malloc(plen);
    if (path)
        snprintf(path, plen, "%s -> %s", from ? from : "?", to ? to : "?");
    uint64_t ticket = 0;
    pthread_mutex_lock(&fs->meta_lock);
    r = rename_locked(fs, req, &c, path, &ticket);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r == 0)   /* durable before the reply, waited for outside the lock */
        r = fs_audit_wait(fs, "rename", ticket);
    free(from);
    free(to);
    free(path);
    if (r == 0) {
        if (c.victim)
            maybe_delete(fs, c.victim, c.victim_nlink);
        fs_inode_set_name(fs, c.src_ino, newparent, newname);
        if (flags & RENAME_EXCHANGE)
            fs_inode_set_name(fs, c.dst_ino, parent, name);
    }
    fuse_reply_err(req, r < 0 ? errno_out(r) : 0);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    struct fs *fs = req_fs(req);
    struct vault_folder *vf, *vf2;
    int r = folder_check(fs, req, ino, RIGHT_READ | RIGHT_WRITE, "link", NULL, &vf);
    if (r == 0)
        r = folder_check(fs, req, newparent, RIGHT_READ | RIGHT_WRITE, "link", newname, &vf2);
    if (r == 0 && vf != vf2)
        r = -EXDEV;
    if (r == 0)
        r = name_check(newname);
    const struct folder_keys *k = r == 0 ? cur_keys(fs, vf) : NULL;
    struct enc_name en;
    if (r == 0 && (!k || enc_with(k, newparent, newname, &en) < 0))
        r = -EIO;
    if (r < 0) {
        fuse_reply_err(req, errno_out(r));
        return;
    }
    char *path = fs_path(fs, newparent, newname);
    struct meta *m = fs->v->meta;
    int64_t now = fs_now_ns();
    struct meta_inode mi, dir;
    uint64_t existing;
    pthread_mutex_lock(&fs->meta_lock);
    r = meta_begin(m);
    if (r == 0)
        r = meta_inode_get(m, ino, &mi);
    if (r == 0 && S_ISDIR(mi.mode))
        r = -EPERM;
    if (r == 0 && mi.nlink == 0)
        r = -ENOENT;
    if (r == 0) {
        r = dir_lookup_locked(fs, req, vf, newparent, newname, &existing, NULL, NULL);
        r = r == 0 ? -EEXIST : (r == -ENOENT ? 0 : r);
    }
    if (r == 0)
        r = dirent_add_bound(fs, k, newparent, &en, ino, mi.mode);
    if (r == 0) {
        mi.nlink++;
        mi.ctime_ns = now;
        r = meta_inode_update(m, &mi);
    }
    if (r == 0)
        r = meta_inode_get(m, newparent, &dir);
    if (r == 0) {
        touch_dir(&dir, now, 0);
        r = meta_inode_update(m, &dir);
    }
    r = meta_op_end(fs, req, "link", path, 0, r);
    free(path);
    if (r < 0)
        fuse_reply_err(req, errno_out(r));
    else
        reply_entry_for(fs, req, &mi, newparent, newname, cache_timeout(fs));
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct fs *fs = req_fs(req);
    struct vault_folder *vf;
    int r = folder_check(fs, req, ino, RIGHT_READ, "readlink", NULL, &vf);
    uint8_t *sealed = NULL, *plain = NULL;
    size_t slen = 0, plen = 0;
    if (r == 0 && !vf)
        r = -EINVAL;
    if (r == 0) {
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_symlink_get(fs->v->meta, ino, &sealed, &slen);
        pthread_mutex_unlock(&fs->meta_lock);
        if (r == -ENOENT)
            r = -EINVAL;
    }
    if (r == 0)
        r = open_any(fs, vf, "symlink", ino, NULL, sealed, slen, &plain, &plen);
    free(sealed);
    char *target = NULL;
    if (r == 0) {
        target = malloc(plen + 1);
        if (target) {
            memcpy(target, plain, plen);
            target[plen] = '\0';
        } else {
            r = -ENOMEM;
        }
    }
    free(plain);
    if (r != -EACCES && r != -EROFS && audit_ino(fs, req, "readlink", ino, r, 0) < 0)
        r = -EIO;
    if (r < 0)
        fuse_reply_err(req, errno_out(r));
    else
        fuse_reply_readlink(req, target);
    free(target);
}

/* ------------------------------------------------------------------ */
/* open, read, write, flush, release, fsync                            */

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = req_fs(req);
    int writable = open_writable(fi->flags);
    struct vault_folder *vf;
    int r = folder_check(fs, req, ino, RIGHT_READ | (writable ? RIGHT_WRITE : 0), "open", NULL,
                         &vf);
    if (r == 0 && !vf)
        r = -EISDIR;
    struct fs_inode *in = NULL;
    if (r == 0) {
        in = fs_inode_get(fs, ino, vf->id, S_IFREG, FS_REF_OPEN);
        r = in ? fs_data_attach(fs, in, NULL) : -ENOMEM;
    }
    if (r == 0 && !fs_alone(fs))
        r = fs_data_revalidate(fs, in);
    if (r == 0 && !(fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_WRONLY)
        fs_data_prefetch(fs, in);
    char *path = fs_path(fs, ino, NULL);
    struct audit_detail d = { .file = ino, .set = AUDIT_SET_SIZE };
    if (r == 0 && (fi->flags & O_TRUNC) && fs_data_size(in) != 0) {
        r = fs_data_truncate(fs, in, 0);
        if (r == 0)
            r = fs_audit_detail(fs, req, "truncate", path, 0, 0, &d);
    }
    d.set = 0;
    if (r == 0)
        r = fs_audit_detail(fs, req, "open", path, 0, 0, &d);
    free(path);
    struct fs_handle *h = NULL;
    if (r == 0) {
        h = handle_new(fs, in, writable);
        r = h ? 0 : -ENOMEM;
    }
    if (r < 0) {
        if (in)
            fs_inode_put(fs, in, FS_REF_OPEN, 1);
        fuse_reply_err(req, errno_out(r));
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->keep_cache = 0;
    if (fuse_reply_open(req, fi) != 0) {
        fs_inode_put(fs, in, FS_REF_OPEN, 1);
        handle_free(fs, h);
    }
}

static struct fs_handle *fi_handle(struct fuse_file_info *fi)
{
    return (struct fs_handle *)(uintptr_t)fi->fh;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct fs *fs = req_fs(req);
    struct fs_handle *h = fi_handle(fi);
    uint8_t *buf = secmem_plain_alloc(size ? size : 1);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t got = 0;
    int r = fs_data_read(fs, h->in, (uint64_t)off, size, buf, &got);
    if (r < 0) {
        /* a failed read is an error with its errno, never "read ok" */
        audit_ino(fs, req, "read", ino, r == -EACCES ? -EACCES : -EIO, 0);
        fuse_reply_err(req, EIO);
    } else {
        pthread_mutex_lock(&h->lock);
        h->bytes_read += got;
        pthread_mutex_unlock(&h->lock);
        fuse_reply_buf(req, (const char *)buf, got);
    }
    secmem_plain_free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)ino;
    struct fs *fs = req_fs(req);
    struct fs_handle *h = fi_handle(fi);
    if (!h->writable) {
        fuse_reply_err(req, EBADF);
        return;
    }
    int r = fs_data_write(fs, h->in, (uint64_t)off, buf, size);
    if (r < 0) {
        fuse_reply_err(req, errno_out(r));
        return;
    }
    pthread_mutex_lock(&h->lock);
    h->bytes_written += size;
    pthread_mutex_unlock(&h->lock);
    fuse_reply_write(req, size);
}

/* The read/write summary of a handle: at close (flush), so it is in the
 * audit trail in the order the application acted; again at release only
 * for bytes moved after the last close of a duplicate. */
static int handle_summary(struct fs *fs, fuse_req_t req, struct fs_handle *h, uint64_t ino)
{
    pthread_mutex_lock(&h->lock);
    uint64_t dw = h->bytes_written - h->audited_written;
    uint64_t dr = h->bytes_read - h->audited_read;
    int first = !h->summarized;
    h->audited_written = h->bytes_written;
    h->audited_read = h->bytes_read;
    h->summarized = 1;
    pthread_mutex_unlock(&h->lock);
    int r = 0;
    if (!dw && !dr && !first)
        return 0;
    if (h->writable && (dw || first))
        r = audit_ino(fs, req, "write", ino, 0, dw);
    if (r == 0 && (dr || (first && !h->writable)))
        r = audit_ino(fs, req, "read", ino, 0, dr);
    return r;
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    /* close() waits for this: start the write-back and return; release
     * (which the kernel sends without making close wait) completes it. */
    struct fs *fs = req_fs(req);
    struct fs_handle *h = fi_handle(fi);
    /* With another mount of the vault live, close commits before it
     * returns, so an open there afterwards sees the data (close-to-open);
     * with an endpoint failing, so that it reports what could not be
     * stored (the data stays and is retried). */
    int r = !h->writable ? 0
          : fs_alone(fs) && !fs_data_in_trouble(fs) ? fs_data_writeback_start(fs, h->in)
          : fs_data_flush(fs, h->in);
    int a = handle_summary(fs, req, h, ino);
    fuse_reply_err(req, r < 0 || a < 0 ? EIO : 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    struct fs_handle *h = fi_handle(fi);
    int r = fs_data_fsync(req_fs(req), h->in);
    fuse_reply_err(req, r < 0 ? EIO : 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = req_fs(req);
    struct fs_handle *h = fi_handle(fi);
    if (h->writable && fs_data_flush(fs, h->in) < 0)
        fprintf(stderr, "pactfs: write-back failed at close of inode %llu\n",
                (unsigned long long)ino);
    handle_summary(fs, req, h, ino);
    fs_inode_put(fs, h->in, FS_REF_OPEN, 1);
    handle_free(fs, h);
    fuse_reply_err(req, 0);
}

/* ------------------------------------------------------------------ */
/* Directories                                                         */

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = req_fs(req);
    struct vault_folder *vf;
    int r = folder_check(fs, req, ino, RIGHT_READ, "readdir", NULL, &vf);
    if (r == 0)   /* a listing is audited once per directory handle */
        r = audit_ino(fs, req, "readdir", ino, 0, 0);
    if (r < 0) {
        fuse_reply_err(req, errno_out(r));
        return;
    }
    fi->fh = 0;
    fuse_reply_open(req, fi);
}

struct readdir_ctx {
    struct fs *fs;
    fuse_req_t req;
    struct vault_folder *vf;   /* NULL at the root */
    uint64_t parent;
    char *buf;
    size_t size, used;
    int full;
};

/* Offsets: 1 and 2 after "." and "..", then dirent cookie + 2. */
#define DIRENT_OFF_BASE 2

static int add_dirent(struct readdir_ctx *c, const char *name, uint64_t ino, uint32_t mode,
                      off_t next)
{
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_ino = ino;
    st.st_mode = mode & S_IFMT;
    size_t need = fuse_add_direntry(c->req, NULL, 0, name, NULL, 0);
    if (c->used + need > c->size) {
        c->full = 1;
        return 1;
    }
    fuse_add_direntry(c->req, c->buf + c->used, c->size - c->used, name, &st, next);
    c->used += need;
    return 0;
}

static int readdir_cb(void *arg, const struct meta_dirent *d)
{
    struct readdir_ctx *c = arg;
    char name[NAME_MAX_ENC + 16];
    size_t nlen = 0;
    struct vault_folder *vf = c->vf;
    if (d->name_len > NAME_MAX_ENC)
        return 0;
    if (!vf) {
        for (size_t i = 0; i < c->fs->v->nfolders && !vf; i++)
            if (c->fs->v->folders[i].root_ino == d->ino &&
                (c->fs->v->folders[i].rights & RIGHT_READ))
                vf = &c->fs->v->folders[i];
        if (!vf)
            return 0;   /* a folder this account holds no envelope for */
    }
    if (dec_any(c->fs, vf, c->parent, d->name, d->name_len, name, &nlen) < 0) {
        fprintf(stderr, "pactfs: skipping an entry of directory %llu whose name does not "
                "decrypt\n", (unsigned long long)c->parent);
        return 0;
    }
    return add_dirent(c, name, d->ino, d->mode, (off_t)(d->cookie + DIRENT_OFF_BASE));
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = req_fs(req);
    struct readdir_ctx c = { .fs = fs, .req = req, .parent = ino, .size = size };
    int r = folder_check(fs, req, ino, RIGHT_READ, "readdir", NULL, &c.vf);
    if (r < 0) {
        fuse_reply_err(req, errno_out(r));
        return;
    }
    c.buf = malloc(size ? size : 1);
    if (!c.buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (off < 1)
        add_dirent(&c, ".", ino, S_IFDIR, 1);
    if (off < 2 && !c.full)
        add_dirent(&c, "..", ino, S_IFDIR, 2);
    if (!c.full) {
        uint64_t after = off > DIRENT_OFF_BASE ? (uint64_t)off - DIRENT_OFF_BASE : 0;
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_dirent_list(fs->v->meta, ino, after, readdir_cb, &c);
        pthread_mutex_unlock(&fs->meta_lock);
    }
    if (r < 0 && c.used == 0)
        fuse_reply_err(req, EIO);
    else
        fuse_reply_buf(req, c.buf, c.used);
    free(c.buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    (void)fi;
    /* Entries (create, rename, unlink) are committed at once but made
     * durable in batches: this makes all of them durable now. */
    int r = fs_data_meta_sync(req_fs(req));
    fuse_reply_err(req, r < 0 ? EIO : 0);
}

/* ------------------------------------------------------------------ */
/* statfs                                                              */

/* What df shows (docs/design-fuse.md, "statfs"): free is what the user can
 * still store given the coding and the endpoints' free space (capacity.h),
 * used is the plaintext bytes the vault's chunks hold, size is their sum.
 * Inodes: the used count is real; the metadata store has no inode table to
 * run out of, so free inodes are reported as 2^32, "plenty", like other
 * network filesystems with no fixed inode table. */
static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct fs *fs = req_fs(req);
    struct statvfs sv;
    memset(&sv, 0, sizeof sv);
    const unsigned long bsize = 4096;
    unsigned n = object_layer_nstores(fs->v->ol);
    struct store_space_info sp[EC_MAX_FRAGS];
    int known[sizeof sp / sizeof sp[0]];
    if (n > sizeof sp / sizeof sp[0])
        n = sizeof sp / sizeof sp[0];
    for (unsigned i = 0; i < n; i++) {
        struct store *s = object_layer_store(fs->v->ol, i);
        known[i] = s && store_space(s, &sp[i]) == 0;
    }
    unsigned k = fs->v->conf.k ? fs->v->conf.k : 1;
    uint64_t avail = capacity_avail(sp, known, n, k, fs->v->conf.m);
    uint64_t inodes = 0, bytes = 0;
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_stats(fs->v->meta, &inodes, &bytes);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0) {
        fuse_reply_err(req, EIO);
        return;
    }
    sv.f_bsize = sv.f_frsize = bsize;
    sv.f_bfree = sv.f_bavail = (fsblkcnt_t)(avail / bsize);
    sv.f_blocks = sv.f_bfree + (fsblkcnt_t)((bytes + bsize - 1) / bsize);
    sv.f_ffree = sv.f_favail = (fsfilcnt_t)1 << 32;
    sv.f_files = (fsfilcnt_t)inodes + sv.f_ffree;
    sv.f_namemax = NAME_MAX_PLAIN;
    fuse_reply_statfs(req, &sv);
}

/* ------------------------------------------------------------------ */
/* Extended attributes ("user." only)                                  */

static int xattr_prepare(struct fs *fs, fuse_req_t req, uint64_t ino, const char *name,
                         uint32_t need, const char *op, struct vault_folder **vf,
                         struct enc_name *en)
{
    if (strncmp(name, "user.", 5) != 0)
        return -ENOTSUP;
    int r = folder_check(fs, req, ino, need, op, NULL, vf);
    if (r < 0)
        return r;
    if (!*vf)
        return (need & RIGHT_WRITE) ? -EACCES : -ENODATA;
    r = name_check(name);
    if (r < 0)
        return -ERANGE;
    const struct folder_keys *k = cur_keys(fs, *vf);
    if (!k)
        return -EIO;
    return enc_with(k, ino, name, en);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    struct fs *fs = req_fs(req);
    struct vault_folder *vf = NULL;
    struct enc_name en;
    int r = xattr_prepare(fs, req, ino, name, RIGHT_READ | RIGHT_WRITE, "setxattr", &vf, &en);
    uint8_t *sealed = NULL;
    size_t slen = 0;
    if (r == 0)
        r = seal_cur(fs, vf, "xattr", ino, name, value, size, &sealed, &slen);
    if (r == 0) {
        char *path = fs_path(fs, ino, NULL);
        struct meta *m = fs->v->meta;
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_begin(m);
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
        r = meta_op_end(fs, req, "setxattr", path, size, r);
        free(path);
    }
    free(sealed);
    fuse_reply_err(req, r < 0 ? errno_out(r) : 0);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct fs *fs = req_fs(req);
    struct vault_folder *vf = NULL;
    struct enc_name en;
    int r = xattr_prepare(fs, req, ino, name, RIGHT_READ, "getxattr", &vf, &en);
    uint8_t *sealed = NULL, *plain = NULL;
    size_t slen = 0, plen = 0;
    if (r == 0) {
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_xattr_get(fs->v->meta, ino, en.b, en.len, &sealed, &slen);
        pthread_mutex_unlock(&fs->meta_lock);
        if (r == -ENOENT)
            r = -ENODATA;
    }
    if (r == 0)
        r = open_any(fs, vf, "xattr", ino, name, sealed, slen, &plain, &plen);
    free(sealed);
    if (r != -EACCES && r != -ENODATA && r != -EOPNOTSUPP && vf &&
        audit_ino(fs, req, "getxattr", ino, r, plen) < 0)
        r = -EIO;
    if (r < 0)
        fuse_reply_err(req, errno_out(r));
    else if (size == 0)
        fuse_reply_xattr(req, plen);
    else if (plen > size)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, (const char *)plain, plen);
    free(plain);
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
    if (nlen > NAME_MAX_ENC || dec_any(c->fs, c->vf, c->ino, name, nlen, plain, &plen) < 0)
        return 0;
    plen = strlen(plain);
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

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct fs *fs = req_fs(req);
    struct xlist_ctx c = { .fs = fs, .ino = ino };
    int r = folder_check(fs, req, ino, RIGHT_READ, "listxattr", NULL, &c.vf);
    if (r == 0 && c.vf) {
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_xattr_list(fs->v->meta, ino, xlist_cb, &c);
        pthread_mutex_unlock(&fs->meta_lock);
        if (r == 0)
            r = c.err;
    }
    if (r != -EACCES && c.vf && audit_ino(fs, req, "listxattr", ino, r, c.used) < 0)
        r = -EIO;
    if (r < 0)
        fuse_reply_err(req, errno_out(r));
    else if (size == 0)
        fuse_reply_xattr(req, c.used);
    else if (c.used > size)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, c.buf, c.used);
    free(c.buf);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    struct fs *fs = req_fs(req);
    struct vault_folder *vf = NULL;
    struct enc_name en;
    int r = xattr_prepare(fs, req, ino, name, RIGHT_READ | RIGHT_WRITE, "removexattr", &vf, &en);
    if (r == 0) {
        char *path = fs_path(fs, ino, NULL);
        struct meta *m = fs->v->meta;
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_begin(m);
        if (r == 0) {
            r = meta_xattr_remove(m, ino, en.b, en.len);
            if (r == -ENOENT)
                r = -ENODATA;
        }
        r = meta_op_end(fs, req, "removexattr", path, 0, r);
        free(path);
    }
    fuse_reply_err(req, r < 0 ? errno_out(r) : 0);
}

/* ------------------------------------------------------------------ */
/* init                                                                */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    conn->max_write = FS_MAX_WRITE;
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    /* Locks stay local to this kernel; no splice (buffers are sealed anyway). */
    conn->want &= ~(unsigned)(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS |
                              FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
                              FUSE_CAP_SPLICE_MOVE | FUSE_CAP_WRITEBACK_CACHE);
    conn->max_background = 64;
    conn->congestion_threshold = 48;
    conn->time_gran = 1;
}

const struct fuse_lowlevel_ops fs_lowlevel_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = op_create,
};

/* ------------------------------------------------------------------ */
/* Mount and serve                                                     */

static int orphan_collect(void *arg, uint64_t ino)
{
    uint64_t **list = arg;
    size_t n = (size_t)(*list)[0];
    uint64_t *p = realloc(*list, (n + 2) * sizeof *p);
    if (!p)
        return 1;
    p[n + 1] = ino;
    p[0] = n + 1;
    *list = p;
    return 0;
}

/* Inodes left with nlink 0 by a crash while open: delete them now. */
static void delete_orphans(struct fs *fs)
{
    uint64_t *list = calloc(1, sizeof *list);
    if (!list)
        return;
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_inode_list_orphans(fs->v->meta, orphan_collect, &list);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0)
        fprintf(stderr, "pactfs: cannot list orphan inodes: %s\n", pfs_err_msg());
    for (uint64_t i = 1; i <= list[0]; i++)
        fs_inode_delete_now(fs, list[i]);
    free(list);
}

static int mount_options(const struct fs *fs, char *out, size_t cap)
{
    const char *name = fs->v->conf.vault_name ? fs->v->conf.vault_name : "vault";
    char safe[128];
    size_t j = 0;
    for (size_t i = 0; name[i] && j + 1 < sizeof safe; i++)   /* no option separators */
        safe[j++] = (name[i] == ',' || name[i] == '\\' || name[i] == ' ') ? '_' : name[i];
    safe[j] = '\0';
    /* A read-only mount is not "ro" for the kernel: refused writes must reach
     * folder_check, which answers EROFS and audits them (docs/format-audit.md). */
    int n = snprintf(out, cap, "fsname=pactfs:%s,subtype=pactfs,default_permissions%s", safe,
                     fs->opt.allow_other ? ",allow_other" : "");
    return n < 0 || (size_t)n >= cap ? -EINVAL : 0;
}

static void signal_ready(int fd)
{
    if (fd < 0)
        return;
    char c = 1;
    ssize_t w;
    do
        w = write(fd, &c, 1);
    while (w < 0 && errno == EINTR);
    close(fd);
}

static int fs_init_state(struct fs *fs, struct vault *v, const struct fs_options *o)
{
    memset(fs, 0, sizeof *fs);
    fs->v = v;
    fs->opt = *o;
    fs->chunk_size = v->conf.chunk_size ? v->conf.chunk_size : (1u << 20);
    fs->mount_ns = fs_now_ns();
    fs->uid = getuid();
    fs->gid = getgid();
    fs->entry_timeout = strcmp(v->conf.meta_backend, "sqlite") == 0 ? ENTRY_TIMEOUT_LOCAL
                                                                      : ENTRY_TIMEOUT_SHARED;
    int ro_only = v->nfolders > 0;
    for (size_t i = 0; i < v->nfolders; i++)
        if (v->folders[i].rights & RIGHT_WRITE)
            ro_only = 0;
    if (ro_only)
        fs->opt.read_only = 1;   /* a read-only grant mounts read-only */
    pthread_mutex_init(&fs->meta_lock, NULL);
    pthread_mutex_init(&fs->handles_lock, NULL);
    int r = fs_itab_init(&fs->itab);
    if (r == 0)
        r = fs_data_start(fs);
    return r;
}

static void fs_fini_state(struct fs *fs)
{
    handles_close_all(fs);
    fs_itab_destroy(fs);
    if (!fs->opt.read_only)
        fs_data_gc_run(fs);
    fs_data_stop(fs);
    pthread_mutex_destroy(&fs->meta_lock);
    pthread_mutex_destroy(&fs->handles_lock);
}

static int serve(struct fs *fs, const char *mountpoint)
{
    char opts[256];
    int r = mount_options(fs, opts, sizeof opts);
    if (r < 0)
        return pfs_err(r, "vault name too long for the mount options");
    char *argv[] = { "pactfs", "-o", opts, fs->opt.debug ? "-d" : NULL, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(fs->opt.debug ? 4 : 3, argv);
    fs->se = fuse_session_new(&args, &fs_lowlevel_ops, sizeof fs_lowlevel_ops, fs);
    fuse_opt_free_args(&args);
    if (!fs->se)
        return pfs_err(-EINVAL, "cannot create the FUSE session (bad mount options?)");
    if (fuse_set_signal_handlers(fs->se) != 0) {
        fuse_session_destroy(fs->se);
        return pfs_err(-EIO, "cannot install signal handlers");
    }
    if (fuse_session_mount(fs->se, mountpoint) != 0) {
        fuse_remove_signal_handlers(fs->se);
        fuse_session_destroy(fs->se);
        return pfs_err(-ENODEV, "the kernel refused to mount %s (is /dev/fuse available and "
                       "fusermount3 installed?)", mountpoint);
    }
    signal_ready(fs->opt.ready_fd);
    struct fuse_loop_config cfg = { .clone_fd = 0, .max_idle_threads = 10 };
    r = fuse_session_loop_mt(fs->se, &cfg);
    /* The loop ended (unmount or signal): write everything back first. */
    fs_data_flush_all(fs);
    fuse_session_unmount(fs->se);
    fuse_remove_signal_handlers(fs->se);
    fuse_session_destroy(fs->se);
    fs->se = NULL;
    return r < 0 ? pfs_err(-EIO, "the FUSE loop failed: %s", strerror(-r)) : 0;
}

int fs_mount_and_serve(struct vault *v, const char *mountpoint, const struct fs_options *o)
{
    /* Chunk buffers (1 MiB) come and go all the time: keep them on the heap
     * instead of a fresh mmap (and page faults) for each. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    struct fs *fs = calloc(1, sizeof *fs);
    if (!fs)
        return pfs_err(-ENOMEM, "out of memory");
    int r = fs_init_state(fs, v, o);
    if (r == 0) {
        /* Orphans are a crash's leftovers only when this workstation is the
         * vault's sole user; with shared PostgreSQL metadata another
         * workstation may still hold them open (pactfs-fsck cleans up). */
        /* The same holds for another mount of the vault on this machine;
         * and a read-only mount changes nothing at all. */
        if (strcmp(v->conf.meta_backend, "sqlite") == 0 && !fs->opt.read_only &&
            fs_alone(fs))
            delete_orphans(fs);
        if (!fs->opt.read_only)
            fs_data_gc_kick(fs);
        r = serve(fs, mountpoint);
    }
    if (fs->data)
        fs_fini_state(fs);
    free(fs);
    return r;
}
