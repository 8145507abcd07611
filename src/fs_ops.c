#include "config.h"

#define FUSE_USE_VERSION 34

/* The FUSE front end: one function per FUSE low-level operation, which
 * unpacks the kernel's arguments (the caller, a struct fs_caller), calls
 * the filesystem core (fs_core.h, fs_namespace.h, fs_xattr.h, fs_file.h,
 * fs_trash.h) and replies: entries and attributes with their cache
 * timeouts, the open file handle in fi->fh, errors as fs_errno_out maps
 * them.  Rights, names, metadata, audit and file bytes are the core's.
 *
 * The root (ino 1) is virtual: it lists the contract folders this account
 * holds envelopes for.  Every other inode belongs to one folder; its names
 * are encrypted with that folder's keys (parent inode as associated data).
 */

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
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
#include "fs_core.h"
#include "fs_file.h"
#include "fs_locks.h"
#include "fs_namespace.h"
#include "fs_xattr.h"
#include "fs_trash.h"
#include "fuse_mount.h"
#include "fuse_wire.h"
#include "log.h"
#include "mount_peers.h"
#include "secmem.h"

#define ROOT_ENTRY_TIMEOUT 60.0   /* folder list changes rarely; fewer audited lookups */
#define FS_MAX_WRITE (1u << 20)

static struct fs *req_fs(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* How long the kernel may keep entries and attributes: long while this is
 * the vault's only mount here (every change goes through it), as short as
 * on shared metadata while another mount may change the vault. */
static double cache_timeout(struct fs *fs)
{
    if (fs->entry_timeout > FS_ENTRY_TIMEOUT_SHARED && !fs_alone(fs))
        return FS_ENTRY_TIMEOUT_SHARED;
    return fs->entry_timeout;
}

/* ---- the caller ---- */

/* Who sent req: the identity the core checks and audits. */
static struct fs_caller caller_of(fuse_req_t req)
{
    const struct fuse_ctx *c = fuse_req_ctx(req);
    struct fs_caller who = { .uid = c->uid, .gid = c->gid, .pid = c->pid };
    return who;
}

/* The caller of req as a pointer valid in the enclosing block. */
#define WHO(req) ((struct fs_caller[]){ caller_of(req) })

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
    fs_stat_from_meta(fs, mi, &e.attr);
    fs_data_fill_attr(in, mi, &e.attr);
    fs_inode_note_mode(in, (uint32_t)e.attr.st_mode);   /* with a kept chmod */
    e.ino = mi->ino;
    e.generation = 1;
    e.attr_timeout = timeout;
    e.entry_timeout = timeout;
    if (fuse_reply_entry(req, &e) != 0)
        fs_inode_put(fs, in, FS_REF_LOOKUP, 1);
}

/* ---- lookup, forget, getattr ---- */

/* Reply with a virtual entry of the trash: never cached, it changes
 * behind the kernel's back (a .trashinfo becomes another inode). */
static void reply_virtual_entry(fuse_req_t req, const struct stat *st)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.attr = *st;
    e.ino = st->st_ino;
    e.generation = 1;
    fuse_reply_entry(req, &e);
}

static void trash_lookup(struct fs *fs, fuse_req_t req, uint64_t parent, const char *name)
{
    struct fs_caller who = caller_of(req);
    struct meta_inode mi;
    struct stat st;
    int real = 0;
    int r = fs_trash_lookup(fs, &who, parent, name, &mi, &st, &real);
    if (r < 0)
        fuse_reply_err(req, r == -ENOENT || r == -EACCES || r == -ENAMETOOLONG ? -r : EIO);
    else if (real)
        reply_entry_for(fs, req, &mi, parent, name, cache_timeout(fs));
    else
        reply_virtual_entry(req, &st);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = req_fs(req);
    if (fs_is_virtual(parent) || (parent == META_ROOT_INO && fs_trash_is_topname(fs, name))) {
        trash_lookup(fs, req, parent, name);
        return;
    }
    struct fs_caller who = caller_of(req);
    struct meta_inode mi;
    int r = fs_lookup(fs, &who, parent, name, &mi);
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
    int r = fs_is_virtual(ino) ? fs_trash_getattr(fs, ino, &st) : fs_getattr(fs, ino, &st);
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_attr(req, &st, ino == META_ROOT_INO ? ROOT_ENTRY_TIMEOUT
                                  : fs_is_virtual(ino)   ? 0
                                                         : cache_timeout(fs));
}

/* ---- setattr ---- */

_Static_assert(FS_SET_MODE == FUSE_SET_ATTR_MODE && FS_SET_UID == FUSE_SET_ATTR_UID &&
               FS_SET_GID == FUSE_SET_ATTR_GID && FS_SET_SIZE == FUSE_SET_ATTR_SIZE &&
               FS_SET_ATIME == FUSE_SET_ATTR_ATIME && FS_SET_MTIME == FUSE_SET_ATTR_MTIME &&
               FS_SET_ATIME_NOW == FUSE_SET_ATTR_ATIME_NOW &&
               FS_SET_MTIME_NOW == FUSE_SET_ATTR_MTIME_NOW &&
               FS_SET_FORCE == FUSE_SET_ATTR_FORCE && FS_SET_CTIME == FUSE_SET_ATTR_CTIME &&
               FS_SET_FILE == FUSE_SET_ATTR_FILE && FS_SET_OPEN == FUSE_SET_ATTR_OPEN &&
               FS_SET_KILL_SUIDGID == FUSE_SET_ATTR_KILL_SUID,
               "fs_setattr takes FUSE's setattr bits as they are");

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
                       struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = req_fs(req);
    struct fs_caller who = caller_of(req);
    gid_t groups[64];
    if ((valid & FUSE_SET_ATTR_GID) && who.uid != 0) {   /* chgrp: the caller's groups */
        int n = fuse_req_getgroups(req, 64, groups);
        who.groups = groups;
        who.ngroups = n < 0 ? 0 : n > 64 ? 64 : n;
    }
    struct stat st;
    int r = fs_setattr(fs, &who, ino, attr, valid, &st);
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_attr(req, &st, fs_is_virtual(ino) ? 0 : cache_timeout(fs));
}

/* ---- creating nodes ---- */

static void reply_new_entry(struct fs *fs, fuse_req_t req, int r, const struct meta_inode *mi,
                            uint64_t parent, const char *name)
{
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        reply_entry_for(fs, req, mi, parent, name, cache_timeout(fs));
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    struct fs *fs = req_fs(req);
    struct meta_inode mi;
    int r = fs_mkdir(fs, WHO(req), parent, name, mode, &mi);
    if (r == 0 && parent == META_ROOT_INO)
        reply_entry_for(fs, req, &mi, META_ROOT_INO, name, ROOT_ENTRY_TIMEOUT);
    else
        reply_new_entry(fs, req, r, &mi, parent, name);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                     dev_t rdev)
{
    struct fs *fs = req_fs(req);
    struct meta_inode mi;
    int r = fs_mknod(fs, WHO(req), parent, name, mode, rdev, &mi);
    reply_new_entry(fs, req, r, &mi, parent, name);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    struct fs *fs = req_fs(req);
    struct meta_inode mi;
    int r = fs_symlink(fs, WHO(req), link, parent, name, &mi);
    reply_new_entry(fs, req, r, &mi, parent, name);
}

/* A file handle for the kernel, and back. */
static void set_fh(struct fuse_file_info *fi, struct fs_handle *h)
{
    fi->fh = (uint64_t)(uintptr_t)h;
    if (!h->in)   /* a virtual file of the trash: no page cache */
        fi->direct_io = 1;
    else
        fi->keep_cache = 0;
}

static struct fs_handle *fi_handle(struct fuse_file_info *fi)
{
    return (struct fs_handle *)(uintptr_t)fi->fh;
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    struct fs *fs = req_fs(req);
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    struct fs_handle *h = NULL;
    int r = fs_create(fs, WHO(req), parent, name, mode, fi->flags, &e.attr, &h);
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    e.ino = e.attr.st_ino;
    e.generation = 1;
    if (h->in)   /* never cached: a .trashinfo becomes another inode */
        e.attr_timeout = e.entry_timeout = cache_timeout(fs);
    set_fh(fi, h);
    if (fuse_reply_create(req, &e, fi) != 0) {   /* the kernel took neither */
        struct fs_inode *in = h->in;
        fs_handle_close(fs, h);
        if (in)
            fs_inode_put(fs, in, FS_REF_LOOKUP, 1);
    }
}

/* ---- removing entries, rename, links ---- */

static void op_unlink_common(fuse_req_t req, fuse_ino_t parent, const char *name, int is_rmdir)
{
    int r = fs_unlink(req_fs(req), WHO(req), parent, name, is_rmdir);
    fuse_reply_err(req, r < 0 ? fs_errno_out(r) : 0);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    op_unlink_common(req, parent, name, 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    op_unlink_common(req, parent, name, 1);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    int r = fs_rename(req_fs(req), WHO(req), parent, name, newparent, newname, flags);
    fuse_reply_err(req, r < 0 ? fs_errno_out(r) : 0);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    struct fs *fs = req_fs(req);
    struct meta_inode mi;
    int r = fs_link(fs, WHO(req), ino, newparent, newname, &mi);
    if (r < 0)
        fuse_reply_err(req, fs_errno_out(r));
    else
        reply_entry_for(fs, req, &mi, newparent, newname, cache_timeout(fs));
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    char *target = NULL;
    int r = fs_readlink(req_fs(req), WHO(req), ino, &target);
    if (r < 0)
        fuse_reply_err(req, fs_errno_out(r));
    else
        fuse_reply_readlink(req, target);
    free(target);
}

/* ---- open, read, write, flush, release, fsync ---- */

/* Before a write, or at an open with O_TRUNC, by a caller without
 * CAP_FSETID, the kernel asks (FUSE_HANDLE_KILLPRIV_V2) to clear the
 * set-ID bits.  When that changed the mode, its cached attributes are
 * dropped, else an exec could still see the old bits; not its pages: a
 * write holds them locked until this request is answered. */
static int kill_suidgid(fuse_req_t req, fuse_ino_t ino, enum fuse_wire_op op)
{
    struct fs *fs = req_fs(req);
    int kill = fuse_wire_kill_suidgid(op);
    if (kill < 0)   /* not known: assume a caller other than root lacks CAP_FSETID */
        kill = fuse_wire_killpriv_v2() && fuse_req_ctx(req)->uid != 0;
    int r = kill ? fs_kill_suidgid(fs, WHO(req), ino) : 0;
    if (r > 0) {
        fuse_lowlevel_notify_inval_inode(fs->se, ino, -1, 0);
        r = 0;
    }
    return r;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = req_fs(req);
    struct fs_handle *h = NULL;
    int r = fs_open(fs, WHO(req), ino, fi->flags, &h);
    if (r == 0 && (fi->flags & O_TRUNC) && h->in) {
        r = kill_suidgid(req, ino, FUSE_WIRE_OPEN);
        if (r < 0)
            fs_handle_close(fs, h);
    }
    if (r < 0) {
        fuse_reply_err(req, fs_errno_out(r));
        return;
    }
    set_fh(fi, h);
    if (fuse_reply_open(req, fi) != 0)
        fs_handle_close(fs, h);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    uint8_t *buf = secmem_plain_alloc(size ? size : 1);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t got = 0;
    int r = fs_handle_read(req_fs(req), WHO(req), fi_handle(fi), ino, (uint64_t)off, size, buf,
                           &got);
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_buf(req, (const char *)buf, got);
    /* A read fills exactly the got bytes it returns (a failed one may have
     * filled more): wipe those, not the whole request, often 128 KiB for a
     * file of a few. */
    secmem_plain_free_upto(buf, r < 0 ? size : got);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    int r = kill_suidgid(req, ino, FUSE_WIRE_WRITE);
    if (r == 0)
        r = fs_handle_write(req_fs(req), WHO(req), fi_handle(fi), ino, (uint64_t)off, buf, size);
    if (r < 0)
        fuse_reply_err(req, r == -EBADF ? EBADF : fs_errno_out(r));
    else
        fuse_reply_write(req, size);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = req_fs(req);
    struct fs_handle *h = fi_handle(fi);
    if (h->in)
        fs_locks_flush(fs, ino, fi);
    int r = fs_handle_flush(fs, WHO(req), h, ino);
    fuse_reply_err(req, r < 0 ? EIO : 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    int r = fs_handle_fsync(req_fs(req), fi_handle(fi));
    fuse_reply_err(req, r < 0 ? EIO : 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = req_fs(req);
    struct fs_handle *h = fi_handle(fi);
    if (h->in) {
        fs_handle_finish(fs, WHO(req), h, ino);
        fs_locks_release(fs, ino, fi);
    }
    fs_handle_close(fs, h);
    fuse_reply_err(req, 0);
}

/* ---- directories ---- */

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs_caller who = caller_of(req);
    struct fs *fs = req_fs(req);
    struct stat st;
    int r;
    if (fs_is_virtual(ino)) {   /* the trash's directories, audited the same */
        r = fs_trash_getattr(fs, ino, &st);
        if (r == 0 && !S_ISDIR(st.st_mode))
            r = -ENOTDIR;
        if (r == 0)
            r = fs_audit_ino(fs, &who, "readdir", ino, 0, 0);
    } else {
        r = fs_opendir(fs, &who, ino);
    }
    if (r < 0) {
        fuse_reply_err(req, fs_errno_out(r));
        return;
    }
    fi->fh = 0;
    fuse_reply_open(req, fi);
}

struct readdir_buf {
    fuse_req_t req;
    char *buf;
    size_t size, used;
};

static int add_dirent(void *arg, const char *name, uint64_t ino, uint32_t mode,
                      uint64_t next)
{
    struct readdir_buf *c = arg;
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_ino = ino;
    st.st_mode = mode & S_IFMT;
    size_t need = fuse_add_direntry(c->req, NULL, 0, name, NULL, 0);
    if (c->used + need > c->size)
        return 1;
    fuse_add_direntry(c->req, c->buf + c->used, c->size - c->used, name, &st, (off_t)next);
    c->used += need;
    return 0;
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)fi;
    struct fs_caller who = caller_of(req);
    struct readdir_buf c = { .req = req, .size = size };
    c.buf = malloc(size ? size : 1);
    if (!c.buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    uint64_t from = off > 0 ? (uint64_t)off : 0;
    int r = fs_is_virtual(ino) ? fs_trash_readdir(req_fs(req), &who, ino, from, add_dirent, &c)
                               : fs_readdir(req_fs(req), &who, ino, from, add_dirent, &c);
    if (r < 0 && c.used == 0)
        fuse_reply_err(req, fs_errno_out(r));
    else
        fuse_reply_buf(req, c.buf, c.used);
    free(c.buf);
}

/* READDIRPLUS (fs_readdirplus): each entry with attributes carries one
 * lookup reference the kernel takes, as a LOOKUP reply does. */
struct plus_buf {
    struct fs *fs;
    fuse_req_t req;
    uint64_t parent;
    double timeout;
    char *buf;
    size_t size, reserved, used;
    struct fs_inode **refs;   /* references handed out, put back if the reply fails */
    size_t nrefs, caprefs;
};

static int plus_room(void *arg, const char *name)
{
    struct plus_buf *c = arg;
    size_t need = fuse_add_direntry_plus(c->req, NULL, 0, name, NULL, 0);
    if (c->reserved + need > c->size)
        return 1;
    c->reserved += need;
    return 0;
}

static void plus_add(void *arg, const char *name, uint64_t ino, uint32_t mode,
                     uint64_t next_off, const struct meta_inode *mi)
{
    struct plus_buf *c = arg;
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.attr.st_ino = ino;
    e.attr.st_mode = mode & S_IFMT;
    struct fs_inode *in = NULL;
    if (mi && c->nrefs == c->caprefs) {
        size_t cap = c->caprefs ? c->caprefs * 2 : 32;
        struct fs_inode **v = realloc(c->refs, cap * sizeof *v);
        if (v) {
            c->refs = v;
            c->caprefs = cap;
        }
    }
    if (mi && c->nrefs < c->caprefs)
        in = fs_inode_get(c->fs, mi->ino, mi->folder_id, mi->mode, FS_REF_LOOKUP);
    if (in) {   /* else without attributes: the kernel looks it up */
        c->refs[c->nrefs++] = in;
        fs_inode_set_name(c->fs, mi->ino, c->parent, name);
        fs_stat_from_meta(c->fs, mi, &e.attr);
        fs_data_fill_attr(in, mi, &e.attr);
        fs_inode_note_mode(in, (uint32_t)e.attr.st_mode);   /* with a kept chmod */
        e.ino = mi->ino;
        e.generation = 1;
        e.attr_timeout = c->timeout;
        e.entry_timeout = c->timeout;
    }
    c->used += fuse_add_direntry_plus(c->req, c->buf + c->used, c->size - c->used, name, &e,
                                      (off_t)next_off);
}

static int plus_virtual_fn(void *arg, const char *name, uint64_t ino, uint32_t mode,
                           uint64_t next_off)
{
    if (plus_room(arg, name))
        return 1;
    plus_add(arg, name, ino, mode, next_off, NULL);
    return 0;
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = req_fs(req);
    struct fs_caller who = caller_of(req);
    struct plus_buf c = { .fs = fs, .req = req, .parent = ino, .size = size,
                          .timeout = cache_timeout(fs) };
    c.buf = malloc(size ? size : 1);
    if (!c.buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    uint64_t from = off > 0 ? (uint64_t)off : 0;
    int r;
    if (fs_is_virtual(ino)) {
        r = fs_trash_readdir(fs, &who, ino, from, plus_virtual_fn, &c);
    } else {
        struct fs_plus_sink sink = { .room = plus_room, .add = plus_add, .arg = &c };
        r = fs_readdirplus(fs, &who, ino, from, &sink);
    }
    int sent = r < 0 && c.used == 0 ? fuse_reply_err(req, fs_errno_out(r))
                                    : fuse_reply_buf(req, c.buf, c.used);
    for (size_t i = 0; i < c.nrefs; i++)   /* the kernel took none of them */
        if (sent != 0 || (r < 0 && c.used == 0))
            fs_inode_put(fs, c.refs[i], FS_REF_LOOKUP, 1);
    free(c.refs);
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

/* ---- statfs ---- */

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct statvfs sv;
    if (fs_statfs(req_fs(req), &sv) < 0)
        fuse_reply_err(req, EIO);
    else
        fuse_reply_statfs(req, &sv);
}

/* ---- extended attributes ("user." only) ---- */

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    int r = fs_setxattr(req_fs(req), WHO(req), ino, name, value, size, flags);
    fuse_reply_err(req, r < 0 ? fs_errno_out(r) : 0);
}

/* The reply to getxattr and listxattr: the size asked for, or the bytes. */
static void reply_xattr(fuse_req_t req, int r, const void *buf, size_t len, size_t size)
{
    if (r < 0)
        fuse_reply_err(req, fs_errno_out(r));
    else if (size == 0)
        fuse_reply_xattr(req, len);
    else if (len > size)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, buf, len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    uint8_t *value = NULL;
    size_t len = 0;
    int r = fs_getxattr(req_fs(req), WHO(req), ino, name, &value, &len);
    reply_xattr(req, r, value, len, size);
    free(value);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    char *list = NULL;
    size_t len = 0;
    int r = fs_listxattr(req_fs(req), WHO(req), ino, &list, &len);
    reply_xattr(req, r, list, len, size);
    free(list);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    int r = fs_removexattr(req_fs(req), WHO(req), ino, name);
    fuse_reply_err(req, r < 0 ? fs_errno_out(r) : 0);
}

/* ---- init ---- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    struct fs *fs = userdata;
    conn->max_write = FS_MAX_WRITE;
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    /* Advisory locks: in the metadata store, shared by every workstation,
     * on PostgreSQL (fs_locks.c); else kept by this kernel, per mount.  No
     * splice (buffers are sealed anyway). */
    conn->want &= ~(unsigned)(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS |
                              FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
                              FUSE_CAP_SPLICE_MOVE | FUSE_CAP_WRITEBACK_CACHE);
    /* Never FUSE_HANDLE_KILLPRIV (v1): pactfs would have to clear set-ID
     * bits on every write by a caller it cannot tell has CAP_FSETID.  v2,
     * where the kernel says when, is negotiated by fuse_wire.c (libfuse
     * 3.14 sends neither, though it sets v1 in want by default). */
    conn->want &= ~(unsigned)FUSE_CAP_HANDLE_KILLPRIV;
    if (fs_locks_shared(fs))
        conn->want |= conn->capable & (FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
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
    .getlk = fs_locks_getlk,
    .setlk = fs_locks_setlk,
    .flock = fs_locks_flock,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = op_create,
};

/* ---- mount and serve ---- */

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

static void fs_fini_state(struct fs *fs)
{
    fs_handles_close_all(fs);
    fs_trash_fini(fs);
    fs_core_stop(fs);
}

/* fs->inval_inode: the kernel drops attributes and pages of ino (from a
 * worker thread, after a conflict copy replaced this mount's version, or
 * from fs_access when a folder is withdrawn).  The kernel waits for reads
 * of those pages that are under way, so the caller holds no lock a request
 * may need. */
static void inval_inode(struct fs *fs, uint64_t ino)
{
    struct fuse_session *se = __atomic_load_n(&fs->se, __ATOMIC_ACQUIRE);
    if (se)
        fuse_lowlevel_notify_inval_inode(se, ino, 0, 0);
}

/* fs->inval_entry: the kernel forgets the name under parent (its next use
 * is a lookup); same rules (the kernel takes the directory's lock). */
static void inval_entry(struct fs *fs, uint64_t parent, const char *name)
{
    struct fuse_session *se = __atomic_load_n(&fs->se, __ATOMIC_ACQUIRE);
    if (se)
        fuse_lowlevel_notify_inval_entry(se, parent, name, strlen(name));
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
    /* An ordinary user mounts through fusermount3, started here without
     * fork() (fuse_mount.h says why); root mounts with mount(2) itself. */
    int user_fd = -1;
    char fd_path[32];
    if (geteuid() != 0) {
        user_fd = fuse_mount_spawn(mountpoint, opts);
        if (user_fd < 0) {
            fuse_remove_signal_handlers(fs->se);
            fuse_session_destroy(fs->se);
            return user_fd;
        }
        fuse_mount_fd_path(user_fd, fd_path, sizeof fd_path);
    }
    if (fuse_session_mount(fs->se, user_fd >= 0 ? fd_path : mountpoint) != 0) {
        if (user_fd >= 0) {
            close(user_fd);
            fuse_unmount_spawn(mountpoint);
        }
        fuse_remove_signal_handlers(fs->se);
        fuse_session_destroy(fs->se);
        return pfs_err(-ENODEV, "the kernel refused to mount %s (is /dev/fuse available and "
                       "fusermount3 installed?)", mountpoint);
    }
    /* FUSE_HANDLE_KILLPRIV_V2, which libfuse 3.14 cannot negotiate: the
     * kernel then stops probing security.capability before most writes
     * and refreshing attributes at every chown, and pactfs clears the
     * set-ID bits where it says so (docs/design-fuse.md). */
    r = fuse_wire_install(fs->se);
    if (r < 0)
        log_warning("cannot take over the FUSE device I/O (%s): the kernel clears set-user-ID "
                    "bits itself, at a few more requests per written file", strerror(-r));
    fs->inval_inode = inval_inode;
    fs->inval_entry = inval_entry;
    signal_ready(fs->opt.ready_fd);
    struct fuse_loop_config cfg = { .clone_fd = 0, .max_idle_threads = 10 };
    r = fuse_session_loop_mt(fs->se, &cfg);
    /* The loop ended (unmount or signal): write everything back first. */
    fs->inval_inode = NULL;
    fs->inval_entry = NULL;
    fs_data_flush_all(fs);
    fs_watch_stop(fs);
    /* libfuse unmounts what it mounted; a user mount's descriptor came from
     * fusermount3, so it is unmounted the same way, unless already gone. */
    int unmount_user = user_fd >= 0 && !fuse_mount_gone(fuse_session_fd(fs->se));
    fuse_session_unmount(fs->se);
    fuse_remove_signal_handlers(fs->se);
    fuse_session_destroy(fs->se);   /* closes the descriptor */
    fs->se = NULL;
    if (unmount_user)
        fuse_unmount_spawn(mountpoint);
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
    int r = fs_core_start(fs, v, o);
    if (r == 0)
        r = fs_trash_init(fs);
    if (r == 0)
        r = fs_watch_start(fs);
    if (r == 0)
        r = fs_access_start(fs);
    if (r == 0) {
        /* Orphans are a crash's leftovers only when this workstation is the
         * vault's sole user; with shared PostgreSQL metadata another
         * workstation may still hold them open (pactfs-fsck cleans up). */
        /* The same holds for another mount of the vault on this machine;
         * and a read-only mount changes nothing at all. */
        if (strcmp(v->conf.meta_backend, "sqlite") == 0 && !fs->opt.read_only &&
            fs_alone(fs))
            fs_core_delete_orphans(fs);
        if (!fs->opt.read_only)
            fs_data_gc_kick(fs);
        r = serve(fs, mountpoint);
        fs_watch_stop(fs);   /* if serve failed before its loop */
    }
    fs_access_stop(fs);
    if (fs->data)
        fs_fini_state(fs);
    free(fs);
    return r;
}
