#include "config.h"

/* The filesystem core (fs_core.h): paths and audit, rights, names under
 * the folder keys with key-version fallback, attributes, and the
 * namespace operations, for any front end; no FUSE here.
 *
 * The root (ino 1) is virtual: it lists the contract folders this account
 * holds envelopes for.  Every other inode belongs to one folder; its names
 * are encrypted with that folder's keys (parent inode as associated data).
 */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "capacity.h"
#include "envelope.h"
#include "error.h"
#include "crashpoint.h"
#include "fs_core.h"
#include "log.h"
#include "mount_peers.h"

#define PATH_DEPTH_MAX 256

/* ---- clock and peers ---- */

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
    /* other workstations' sessions: counted by fs_watch (the pactfs program) */
    return __atomic_load_n(&fs->alone, __ATOMIC_RELAXED) &&
           __atomic_load_n(&fs->remote_peers, __ATOMIC_ACQUIRE) == 0;
}

void fs_ns_to_ts(int64_t ns, struct timespec *ts)
{
    ts->tv_sec = ns / 1000000000;
    ts->tv_nsec = ns % 1000000000;
}

/* ---- paths and audit ---- */

char *fs_path(struct fs *fs, uint64_t ino, const char *name)
{
    char *parts[PATH_DEPTH_MAX];
    size_t n = 0;
    char buf[NAME_MAX_PLAIN + 1];
    uint64_t cur = ino;
    char *top = NULL;   /* a virtual directory of the trash the path starts in */
    while (cur != META_ROOT_INO && n < PATH_DEPTH_MAX) {
        uint64_t parent;
        if (fs_is_virtual(cur)) {
            top = fs_trash_vpath(fs, cur);
            break;
        }
        if (fs_inode_name(fs, cur, &parent, buf, sizeof buf) < 0) {
            parts[n++] = strdup("?");
            break;
        }
        parts[n++] = strdup(buf);
        cur = parent;
    }
    size_t len = 2 + (name ? strlen(name) + 1 : 0) + (top ? strlen(top) : 0);
    for (size_t i = 0; i < n; i++)
        len += (parts[i] ? strlen(parts[i]) : 1) + 1;
    char *p = malloc(len);
    if (p) {
        size_t off = 0;
        p[0] = '\0';
        if (top)
            off += (size_t)snprintf(p, len, "%s", top);
        for (size_t i = n; i-- > 0;)
            off += (size_t)snprintf(p + off, len - off, "/%s", parts[i] ? parts[i] : "?");
        if (name)
            off += (size_t)snprintf(p + off, len - off, "/%s", name);
        if (off == 0)
            snprintf(p, len, "/");
    }
    for (size_t i = 0; i < n; i++)
        free(parts[i]);
    free(top);
    return p;
}

void fs_trash_topname(const struct fs *fs, char *out, size_t cap)
{
    snprintf(out, cap, ".Trash-%lu", (unsigned long)fs->uid);
}

char *fs_trash_vpath(struct fs *fs, uint64_t ino)
{
    char top[40], buf[96];
    if (!fs_is_virtual(ino))
        return NULL;
    fs_trash_topname(fs, top, sizeof top);
    const char *sub = ino == FS_TRASH_FILES_INO      ? "/files"
                    : ino == FS_TRASH_INFO_INO       ? "/info"
                    : ino == FS_TRASH_EXPUNGED_INO   ? "/expunged"
                    : ino == FS_TRASH_INO            ? ""
                                                     : "/info/?";
    snprintf(buf, sizeof buf, "/%s%s", top, sub);
    return strdup(buf);
}

int fs_trash_reserved(struct fs *fs, uint64_t parent, const char *name)
{
    if (strncmp(name, FS_TRASH_HIDDEN_PREFIX, sizeof FS_TRASH_HIDDEN_PREFIX - 1) != 0)
        return 0;
    for (size_t i = 0; i < fs->v->nfolders; i++)
        if (fs->v->folders[i].root_ino == parent)
            return 1;
    return 0;
}

/* Who an audit event names: the caller, or the daemon itself (NULL). */
static struct audit_ctx audit_who(const struct fs_caller *caller)
{
    /* the daemon itself only when no caller (two system calls an event
     * otherwise) */
    if (caller)
        return (struct audit_ctx){ .uid = caller->uid, .pid = caller->pid };
    return (struct audit_ctx){ .uid = getuid(), .pid = getpid() };
}

static int audit_failed(const char *op)
{
    log_error("audit spool write failed (%s); refusing %s", pfs_err_msg(), op);
    return -EIO;
}

int fs_audit(struct fs *fs, const struct fs_caller *who, const char *op, const char *path,
             int result, uint64_t bytes)
{
    return fs_audit_detail(fs, who, op, path, result, bytes, NULL);
}

int fs_audit_detail(struct fs *fs, const struct fs_caller *who, const char *op, const char *path,
                    int result, uint64_t bytes, const struct audit_detail *d)
{
    if (!fs->v->audit)
        return 0;
    struct audit_ctx ctx = audit_who(who);
    int r = audit_event_detail(fs->v->audit, &ctx, op, path ? path : "?", result, bytes, d);
    return r < 0 ? audit_failed(op) : 0;
}

int fs_audit_append(struct fs *fs, const struct fs_caller *who, const char *op, const char *path,
                    int result, uint64_t bytes, uint64_t *ticket)
{
    return fs_audit_append_detail(fs, who, op, path, result, bytes, NULL, ticket);
}

int fs_audit_append_detail(struct fs *fs, const struct fs_caller *who, const char *op,
                           const char *path, int result, uint64_t bytes,
                           const struct audit_detail *d, uint64_t *ticket)
{
    *ticket = 0;
    if (!fs->v->audit)
        return 0;
    struct audit_ctx ctx = audit_who(who);
    int r = audit_event_append_detail(fs->v->audit, &ctx, op, path ? path : "?", result, bytes, d,
                                      ticket);
    return r < 0 ? audit_failed(op) : 0;
}

const char *fs_setattr_op(unsigned set)
{
    unsigned times = set & (AUDIT_SET_ATIME | AUDIT_SET_MTIME);
    if (set == AUDIT_SET_MODE)
        return "chmod";
    if (set == AUDIT_SET_OWNER)
        return "chown";
    if (times && set == times)
        return "utimens";
    return "setattr";
}

int fs_audit_wait(struct fs *fs, const char *op, uint64_t ticket)
{
    if (!fs->v->audit || ticket == 0)
        return 0;
    return audit_event_wait(fs->v->audit, ticket) < 0 ? audit_failed(op) : 0;
}

/* End a metadata operation begun with meta_begin under meta_lock: append
 * its audit event inside the transaction (written to the spool before the
 * commit, so no crash of the daemon can leave the change without it),
 * commit (or roll back on error), drop the lock.  With the mount's
 * deferred group commit (audit_set_group_commit) fs_audit_wait does not
 * wait for the fdatasync: the committer makes the event durable within a
 * few ms, and no metadata sync happens before it (meta_set_presync). */
int fs_meta_op_end_detail(struct fs *fs, const struct fs_caller *who, const char *op,
                          const char *path, uint64_t bytes, int r, const struct audit_detail *d)
{
    struct meta *m = fs->v->meta;
    uint64_t ticket = 0;

    if (r == 0)
        r = fs_audit_append_detail(fs, who, op, path, 0, bytes, d, &ticket);
    crash_point("op-after-append");
    if (r == 0)
        r = meta_commit(m);
    else
        meta_rollback(m);
    crash_point("op-after-commit");
    pthread_mutex_unlock(&fs->meta_lock);
    if (r == 0)
        r = fs_audit_wait(fs, op, ticket);
    return r;
}

int fs_meta_op_end(struct fs *fs, const struct fs_caller *who, const char *op, const char *path,
                   uint64_t bytes, int r)
{
    return fs_meta_op_end_detail(fs, who, op, path, bytes, r, NULL);
}

int fs_errno_out(int r)
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

/* Audit a refused operation (EACCES: denied; EROFS on a read-only mount);
 * returns why, or -EIO if even that cannot be audited.  dest: a rename's. */
int fs_refuse(struct fs *fs, const struct fs_caller *who, const char *op, uint64_t ino,
              const char *name, int why, const char *dest)
{
    char *path = fs_path(fs, ino, name);
    struct audit_detail d = { .file = name ? 0 : ino, .dest = dest };
    int r = fs_audit_detail(fs, who, op, path, why, 0, &d);
    free(path);
    return r < 0 ? r : why;
}

/* Audit op on ino (its path and file id); 0, or -EIO if it cannot be. */
int fs_audit_ino(struct fs *fs, const struct fs_caller *who, const char *op, uint64_t ino,
                 int result, uint64_t bytes)
{
    char *path = fs_path(fs, ino, NULL);
    struct audit_detail d = { .file = ino };
    int r = fs_audit_detail(fs, who, op, path, result, bytes, &d);
    free(path);
    return r;
}

int fs_deny(struct fs *fs, const struct fs_caller *who, const char *op, uint64_t ino,
            const char *name)
{
    return fs_refuse(fs, who, op, ino, name, -EACCES, NULL);
}

int fs_may_create_folders(const struct fs *fs)
{
    return !fs->opt.read_only && (fs->v->account.roles & ROLE_DATAADMIN);
}

/* A change at the top of the mount other than a dataadmin's mkdir: say why
 * in the log (at most one line a second, so a file manager probing the top
 * cannot flood it), audit it as denied, -EACCES. */
int fs_root_deny(struct fs *fs, const struct fs_caller *who, const char *op, const char *name,
                 const char *dest)
{
    static int64_t last_ns;
    static unsigned suppressed;
    int64_t now = fs_now_ns();
    int64_t last = __atomic_load_n(&last_ns, __ATOMIC_RELAXED);
    if (now - last >= 1000000000 &&
        __atomic_compare_exchange_n(&last_ns, &last, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        unsigned n = __atomic_exchange_n(&suppressed, 0, __ATOMIC_RELAXED);
        const char *how = strcmp(op, "mkdir") ? "put files inside a contract folder"
            : fs->opt.read_only               ? "this mount is read-only"
            : name && name[0] == '.' ? "a contract folder's name does not start with a dot "
                                       "(the trash is .Trash-UID of the user who mounted)"
                                     : "creating a contract folder needs the dataadmin role";
        log_warning("%s \"%s\" at the top of the mount refused for account "
                    "\"%s\": only contract folders live there and %s (%u similar refusals "
                    "not logged)",
                    op, name ? name : "", fs->v->account.name, how, n);
    } else {
        __atomic_add_fetch(&suppressed, 1, __ATOMIC_RELAXED);
    }
    return fs_refuse(fs, who, op, META_ROOT_INO, name, -EACCES, dest);
}

/* ---- folders, keys and names ---- */

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
int fs_folder_check_dest(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint32_t need,
                         const char *op, const char *name, const char *dest,
                         struct vault_folder **vf)
{
    *vf = NULL;
    if ((need & RIGHT_WRITE) && fs->opt.read_only)
        return fs_refuse(fs, who, op, ino, name, -EROFS, dest);
    if (ino == META_ROOT_INO)
        return (need & RIGHT_WRITE) ? fs_root_deny(fs, who, op, name, dest) : 0;
    if (fs_is_virtual(ino))   /* the trash's own entries: fs_trash.c decides */
        return (need & RIGHT_WRITE) ? fs_refuse(fs, who, op, ino, name, -EPERM, dest) : 0;
    uint64_t fid = 0;
    int r = inode_folder_id(fs, ino, &fid);
    if (r < 0)
        return r == -ENOENT ? -ENOENT : -EIO;
    *vf = vault_folder_by_id(fs->v, fid);
    if (!*vf || ((*vf)->rights & need) != need)
        return fs_refuse(fs, who, op, ino, name, -EACCES, dest);
    return 0;
}

int fs_folder_check(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint32_t need,
                    const char *op, const char *name, struct vault_folder **vf)
{
    return fs_folder_check_dest(fs, who, ino, need, op, name, NULL, vf);
}

const struct folder_keys *fs_cur_keys(struct fs *fs, const struct vault_folder *vf)
{
    return vault_folder_keys(fs->v, vf->id, vf->cur_version);
}

/* Key versions to try for reading: the current one first, then older. */
size_t fs_keys_to_try(struct fs *fs, const struct vault_folder *vf,
                      const struct folder_keys **out, size_t cap)
{
    size_t n = 0;
    const struct folder_keys *k = fs_cur_keys(fs, vf);
    if (k && n < cap)
        out[n++] = k;
    for (uint32_t i = vf->nkeys; i-- > 0 && n < cap;)
        if (vf->keys[i] && vf->keys[i] != k)
            out[n++] = vf->keys[i];
    return n;
}

int fs_name_check(const char *name)
{
    size_t len = strlen(name);
    if (len == 0)
        return -EINVAL;
    if (len > NAME_MAX_PLAIN)
        return -ENAMETOOLONG;
    return 0;
}

int fs_name_enc(const struct folder_keys *k, uint64_t parent, const char *name, struct fs_name *e)
{
    int r = name_encrypt(k, parent, name, strlen(name), e->b, &e->len);
    return r < 0 ? -EIO : 0;
}

int fs_tamper(struct fs *fs, const struct fs_caller *who, uint64_t ino, const char *name,
              const char *what)
{
    char *path = fs_path(fs, ino, name);
    log_error("TAMPERING DETECTED on %s: %s; refusing it (EIO). The metadata "
              "store was altered: restore it from a backup or ask the database operator",
              path ? path : "?", what);
    fs_audit(fs, who, "tamper", path, -EIO, 0);
    free(path);
    return -EIO;
}

/* Look name up in dir parent of folder vf under any held key version
 * (meta_lock held).  *found gets the encrypted form that matched, *type
 * the child's type bits.  The entry's binding must verify under the key
 * version that encrypted its name, else -EIO (tampering, reported). */
int fs_dir_lookup_locked(struct fs *fs, const struct fs_caller *who, const struct vault_folder *vf,
                         uint64_t parent, const char *name, uint64_t *ino, struct fs_name *found,
                         uint32_t *type)
{
    return fs_dir_lookup_known_locked(fs, who, vf, parent, name, NULL, NULL, ino, found, type);
}

int fs_dir_lookup_known_locked(struct fs *fs, const struct fs_caller *who,
                               const struct vault_folder *vf, uint64_t parent, const char *name,
                               const struct folder_keys *k, const struct fs_name *known,
                               uint64_t *ino, struct fs_name *found, uint32_t *type)
{
    const struct folder_keys *ks[FS_KEYS_MAX];
    size_t nk = fs_keys_to_try(fs, vf, ks, FS_KEYS_MAX);
    int r = fs_name_check(name);
    if (r < 0)
        return r;
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < nk; i++) {
            struct fs_name e;
            struct meta_dirent_rec rec;
            if (known && ks[i] == k)
                e = *known;   /* a name's encryption under a key is always the same */
            else if ((r = fs_name_enc(ks[i], parent, name, &e)) < 0)
                return r;
            r = meta_dirent_find(fs->v->meta, parent, e.b, e.len, &rec);
            if (r == 0) {
                if (dirent_bind_check(ks[i], parent, e.b, e.len, rec.ino, rec.mode, rec.bind,
                                      rec.bind_len) < 0)
                    return fs_tamper(fs, who, parent, name, pfs_err_msg());
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
        /* not found: under a key version this mount has not picked up yet
         * (pactfs-admin rekey re-seals names under the newest)? */
        if (round || !fs_keys_catch_up_locked(fs, vf->id))
            break;
        nk = fs_keys_to_try(fs, vf, ks, FS_KEYS_MAX);
    }
    return -ENOENT;
}

/* Add an entry for ino under name, bound to ino and its type with the key
 * version that encrypted the name (meta_lock held, in a transaction). */
int fs_dirent_add_bound(struct fs *fs, const struct folder_keys *k, uint64_t parent,
                        const struct fs_name *e, uint64_t ino, uint32_t mode)
{
    uint8_t bind[DIRENT_BIND_LEN];
    if (dirent_bind(k, parent, e->b, e->len, ino, mode, bind) < 0)
        return -EIO;
    return meta_dirent_add(fs->v->meta, parent, e->b, e->len, ino, mode, bind, sizeof bind);
}

int fs_name_dec_any(struct fs *fs, const struct vault_folder *vf, uint64_t parent,
                    const uint8_t *in, size_t inlen, char *out, size_t *outlen)
{
    const struct folder_keys *ks[FS_KEYS_MAX];
    for (int round = 0; round < 2; round++) {
        size_t nk = fs_keys_to_try(fs, vf, ks, FS_KEYS_MAX);
        for (size_t i = 0; i < nk; i++)
            if (name_decrypt(ks[i], parent, in, inlen, out, outlen) == 0)
                return 0;
        if (round || !fs_keys_catch_up_locked(fs, vf->id))
            break;
    }
    return -EBADMSG;
}

int fs_sealed_open(struct fs *fs, const struct vault_folder *vf, const char *label, uint64_t ino,
                   const char *extra, const uint8_t *in, size_t inlen, uint8_t **out,
                   size_t *outlen)
{
    uint8_t ad[FOLDER_META_AD_MAX];
    size_t adlen;
    if (folder_meta_ad(label, ino, extra, ad, &adlen) < 0)
        return -ENOMEM;
    const struct folder_keys *ks[FS_KEYS_MAX];
    size_t nk = fs_keys_to_try(fs, vf, ks, FS_KEYS_MAX);
    for (size_t i = 0; i < nk; i++)
        if (folder_meta_open(ks[i], ad, adlen, in, inlen, out, outlen) == 0)
            return 0;
    return -EIO;
}

int fs_sealed_open_fresh(struct fs *fs, const struct vault_folder *vf, const char *label,
                         uint64_t ino, const char *extra, const uint8_t *in, size_t inlen,
                         uint8_t **out, size_t *outlen)
{
    int r = fs_sealed_open(fs, vf, label, ino, extra, in, inlen, out, outlen);
    if (r == -EIO) {
        pthread_mutex_lock(&fs->meta_lock);
        int again = fs_keys_catch_up_locked(fs, vf->id);
        pthread_mutex_unlock(&fs->meta_lock);
        if (again)
            r = fs_sealed_open(fs, vf, label, ino, extra, in, inlen, out, outlen);
    }
    return r;
}

int fs_sealed_seal(struct fs *fs, const struct vault_folder *vf, const char *label, uint64_t ino,
                   const char *extra, const void *pt, size_t n, uint8_t **out, size_t *outlen)
{
    uint8_t ad[FOLDER_META_AD_MAX];
    size_t adlen;
    const struct folder_keys *k = fs_cur_keys(fs, vf);
    if (!k)
        return -EACCES;
    if (folder_meta_ad(label, ino, extra, ad, &adlen) < 0)
        return -ENOMEM;
    return folder_meta_seal(k, ad, adlen, pt, n, out, outlen) < 0 ? -EIO : 0;
}

/* ---- attributes ---- */

static void root_stat(struct fs *fs, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = META_ROOT_INO;
    /* Writable only for who can create folders there (mkdir by a dataadmin). */
    st->st_mode = S_IFDIR | (fs_may_create_folders(fs) ? 0755 : 0555);
    st->st_nlink = 2 + fs->v->nfolders;
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_size = 4096;
    st->st_blksize = 4096;
    fs_ns_to_ts(__atomic_load_n(&fs->mount_ns, __ATOMIC_RELAXED), &st->st_atim);
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

void fs_stat_from_meta(struct fs *fs, const struct meta_inode *mi, struct stat *st)
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
    fs_ns_to_ts(mi->atime_ns, &st->st_atim);
    fs_ns_to_ts(mi->mtime_ns, &st->st_mtim);
    fs_ns_to_ts(mi->ctime_ns, &st->st_ctim);
}

/* ---- remembered rows ---- */

static unsigned *row_gen_slot(struct fs *fs, uint64_t ino)
{
    return &fs->row_gen[ino % FS_ROW_GENS];
}

void fs_row_written(void *arg, uint64_t ino)
{
    __atomic_add_fetch(row_gen_slot(arg, ino), 1, __ATOMIC_ACQ_REL);
}

unsigned fs_row_gen(struct fs *fs, uint64_t ino)
{
    return __atomic_load_n(row_gen_slot(fs, ino), __ATOMIC_ACQUIRE);
}

void fs_row_remember(struct fs *fs, uint64_t ino, const struct meta_inode *row, unsigned gen)
{
    struct fs_inode *in = fs_inode_find(fs, ino);
    if (!in)
        return;
    pthread_mutex_lock(&in->lock);
    if (!in->row)
        in->row = malloc(sizeof *in->row);
    if (in->row) {
        *in->row = *row;
        in->row_gen = gen;
        in->row_ns = fs_now_ns();
    }
    pthread_mutex_unlock(&in->lock);
    fs_inode_put(fs, in, FS_REF_OP, 1);
}

int fs_row_recall(struct fs *fs, struct fs_inode *in, struct meta_inode *mi)
{
    int64_t now = fs_now_ns();
    pthread_mutex_lock(&in->lock);
    int ok = in->row && fs_row_gen(fs, in->ino) == in->row_gen &&
             now - in->row_ns < FS_ROW_KEEP_NS;
    if (ok)
        *mi = *in->row;
    pthread_mutex_unlock(&in->lock);
    return ok && fs_alone(fs);
}

int fs_inode_row(struct fs *fs, uint64_t ino, struct meta_inode *mi)
{
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_inode_get(fs->v->meta, ino, mi);
    pthread_mutex_unlock(&fs->meta_lock);
    return r < 0 && r != -ENOENT ? -EIO : r;
}

/* Attributes of ino with in-memory size/mtime of open files. */
int fs_getattr(struct fs *fs, uint64_t ino, struct stat *st)
{
    if (ino == META_ROOT_INO) {
        root_stat(fs, st);
        return 0;
    }
    struct meta_inode mi;
    struct fs_inode *in = fs_inode_find(fs, ino);
    int r = in && fs_row_recall(fs, in, &mi) ? 0 : fs_inode_row(fs, ino, &mi);
    if (r < 0) {
        if (in)
            fs_inode_put(fs, in, FS_REF_OP, 1);
        return r;
    }
    fs_stat_from_meta(fs, &mi, st);
    if (in) {
        fs_data_fill_attr(in, &mi, st);
        fs_inode_note_mode(in, (uint32_t)st->st_mode);   /* with a kept chmod */
        fs_inode_put(fs, in, FS_REF_OP, 1);
    }
    return 0;
}

/* Reply with an entry the kernel now holds one lookup reference on. */

/* ---- lookup ---- */

static int root_lookup(struct fs *fs, const struct fs_caller *who, const char *name,
                       struct vault_folder **out, uint64_t *ino, uint32_t *type)
{
    int r = fs_name_check(name);
    if (r < 0)
        return r;
    pthread_mutex_lock(&fs->meta_lock);
    r = -ENOENT;
    for (size_t i = 0; i < fs->v->nfolders && r == -ENOENT; i++) {
        struct vault_folder *vf = &fs->v->folders[i];
        if (!(vf->rights & RIGHT_READ))
            continue;
        r = fs_dir_lookup_locked(fs, who, vf, META_ROOT_INO, name, ino, NULL, type);
        if (r == 0 && *ino != vf->root_ino)
            r = -ENOENT; /* a dirent at the root that is not this folder's */
        if (r == 0)
            *out = vf;
        else if (r != -ENOENT)
            break;
    }
    pthread_mutex_unlock(&fs->meta_lock);
    return r;
}

int fs_lookup(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
              struct meta_inode *mi)
{
    struct vault_folder *vf = NULL;
    uint64_t ino = 0;
    uint32_t type = 0;
    int r;
    if (parent == META_ROOT_INO) {
        r = root_lookup(fs, who, name, &vf, &ino, &type);
    } else {
        r = fs_folder_check(fs, who, parent, RIGHT_READ, "lookup", name, &vf);
        if (r == 0 && fs_trash_reserved(fs, parent, name))
            r = -ENOENT;   /* the account trashes' hidden directories */
        if (r == 0) {
            pthread_mutex_lock(&fs->meta_lock);
            r = fs_dir_lookup_locked(fs, who, vf, parent, name, &ino, NULL, &type);
            pthread_mutex_unlock(&fs->meta_lock);
        }
    }
    if (r == 0) {
        pthread_mutex_lock(&fs->meta_lock);
        r = meta_inode_get(fs->v->meta, ino, mi);
        pthread_mutex_unlock(&fs->meta_lock);
    }
    if (r == 0 && ((mi->mode & S_IFMT) != type || mi->folder_id != vf->id))
        r = fs_tamper(fs, who, parent, name,
                      "check \"entry binding\" failed: the inode's "
                      "type or folder is not the one its entry was written for");
    if (r == 0 && parent == META_ROOT_INO) {
        char *path = fs_path(fs, META_ROOT_INO, name);
        struct audit_detail d = { .file = ino };
        r = fs_audit_detail(fs, who, "lookup", path, 0, 0, &d);
        free(path);
    }
    return r;
}

/* ---- directories ---- */

int fs_opendir(struct fs *fs, const struct fs_caller *who, uint64_t ino)
{
    struct vault_folder *vf;
    int r = fs_folder_check(fs, who, ino, RIGHT_READ, "readdir", NULL, &vf);
    if (r == 0) /* a listing is audited once per directory handle */
        r = fs_audit_ino(fs, who, "readdir", ino, 0, 0);
    return r;
}

struct readdir_ctx {
    struct fs *fs;
    struct vault_folder *vf; /* NULL at the root */
    uint64_t parent;
    fs_dirent_fn fn;
    void *arg;
};

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
            return 0; /* a folder this account holds no envelope for */
    }
    if (fs_name_dec_any(c->fs, vf, c->parent, d->name, d->name_len, name, &nlen) < 0) {
        log_warning("skipping an entry of directory %llu whose name does not "
                    "decrypt",
                    (unsigned long long)c->parent);
        return 0;
    }
    if (c->vf && fs_trash_reserved(c->fs, c->parent, name))
        return 0;   /* a trash's hidden directory */
    return c->fn(c->arg, name, d->ino, d->mode, d->cookie + FS_DIRENT_OFF_BASE);
}

int fs_readdir(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint64_t off,
               fs_dirent_fn fn, void *arg)
{
    struct readdir_ctx c = { .fs = fs, .parent = ino, .fn = fn, .arg = arg };
    int r = fs_folder_check(fs, who, ino, RIGHT_READ, "readdir", NULL, &c.vf);
    if (r < 0)
        return r;
    if (off < 1 && fn(arg, ".", ino, S_IFDIR, 1))
        return 0;
    if (off < 2 && fn(arg, "..", ino, S_IFDIR, 2))
        return 0;
    uint64_t after = off > FS_DIRENT_OFF_BASE ? off - FS_DIRENT_OFF_BASE : 0;
    pthread_mutex_lock(&fs->meta_lock);
    r = meta_dirent_list(fs->v->meta, ino, after, readdir_cb, &c);
    pthread_mutex_unlock(&fs->meta_lock);
    return r < 0 ? -EIO : 0;
}

/* ---- readdirplus ---- */

/* An entry as listed, before its row is read. */
struct plus_ent {
    char *name;
    uint64_t ino, next;
    uint32_t mode;
    int bound;              /* its binding checks under a key this mount holds */
    struct meta_inode mi;
    int has_row;
};

struct plus_ctx {
    struct fs *fs;
    const struct vault_folder *vf;
    uint64_t parent;
    const struct fs_plus_sink *sink;
    struct plus_ent *v;
    size_t n, cap;
    int err;
};

/* The check fs_dir_lookup_locked makes of a found entry, under any key
 * version a name may be sealed with (meta_lock held). */
static int dirent_bound(struct fs *fs, const struct vault_folder *vf, uint64_t parent,
                        const struct meta_dirent *d)
{
    const struct folder_keys *ks[FS_KEYS_MAX];
    size_t nk = fs_keys_to_try(fs, vf, ks, FS_KEYS_MAX);
    for (size_t i = 0; i < nk; i++)
        if (dirent_bind_check(ks[i], parent, d->name, d->name_len, d->ino, d->mode, d->bind,
                              d->bind_len) == 0)
            return 1;
    return 0;
}

static int plus_collect_cb(void *arg, const struct meta_dirent *d)
{
    struct plus_ctx *c = arg;
    char name[NAME_MAX_ENC + 16];
    size_t nlen = 0;
    if (d->name_len > NAME_MAX_ENC)
        return 0;
    if (fs_name_dec_any(c->fs, c->vf, c->parent, d->name, d->name_len, name, &nlen) < 0) {
        log_warning("skipping an entry of directory %llu whose name does not decrypt",
                    (unsigned long long)c->parent);
        return 0;
    }
    if (fs_trash_reserved(c->fs, c->parent, name))
        return 0;   /* a trash's hidden directory */
    if (c->sink->room(c->sink->arg, name))
        return 1;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 32;
        struct plus_ent *v = realloc(c->v, cap * sizeof *v);
        if (!v) {
            c->err = -ENOMEM;
            return 1;
        }
        c->v = v;
        c->cap = cap;
    }
    struct plus_ent *e = &c->v[c->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    if (!e->name) {
        c->err = -ENOMEM;
        return 1;
    }
    e->ino = d->ino;
    e->mode = d->mode;
    e->next = d->cookie + FS_DIRENT_OFF_BASE;
    e->bound = dirent_bound(c->fs, c->vf, c->parent, d);
    c->n++;
    return 0;
}

static int plus_plain_fn(void *arg, const char *name, uint64_t ino, uint32_t mode,
                         uint64_t next_off)
{
    const struct fs_plus_sink *sink = arg;
    if (sink->room(sink->arg, name))
        return 1;
    sink->add(sink->arg, name, ino, mode, next_off, NULL);
    return 0;
}

int fs_readdirplus(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint64_t off,
                   const struct fs_plus_sink *sink)
{
    if (ino == META_ROOT_INO)   /* folders: their lookups are audited */
        return fs_readdir(fs, who, ino, off, plus_plain_fn, (void *)sink);
    struct plus_ctx c = { .fs = fs, .parent = ino, .sink = sink };
    struct vault_folder *vf;
    int r = fs_folder_check(fs, who, ino, RIGHT_READ, "readdir", NULL, &vf);
    if (r < 0)
        return r;
    c.vf = vf;
    if (off < 1 && plus_plain_fn((void *)sink, ".", ino, S_IFDIR, 1))
        return 0;
    if (off < 2 && plus_plain_fn((void *)sink, "..", ino, S_IFDIR, 2))
        return 0;
    uint64_t after = off > FS_DIRENT_OFF_BASE ? off - FS_DIRENT_OFF_BASE : 0;
    pthread_mutex_lock(&fs->meta_lock);
    r = meta_dirent_list(fs->v->meta, ino, after, plus_collect_cb, &c);
    /* The rows after the listing: a backend may hold one result at a time. */
    for (size_t i = 0; i < c.n; i++) {
        struct plus_ent *e = &c.v[i];
        if (!e->bound || meta_inode_get(fs->v->meta, e->ino, &e->mi) < 0)
            continue;
        e->has_row = (e->mi.mode & S_IFMT) == (e->mode & S_IFMT) && e->mi.folder_id == vf->id;
    }
    pthread_mutex_unlock(&fs->meta_lock);
    for (size_t i = 0; i < c.n; i++) {
        struct plus_ent *e = &c.v[i];
        sink->add(sink->arg, e->name, e->ino, e->mode, e->next, e->has_row ? &e->mi : NULL);
        free(e->name);
    }
    free(c.v);
    if (c.err)
        return c.err;
    return r < 0 ? -EIO : 0;
}

/* ---- statfs ---- */

/* What df shows (docs/design-fuse.md, "statfs"): free is what the user can
 * still store given the coding and the endpoints' free space (capacity.h),
 * used is the plaintext bytes the vault's chunks hold, size is their sum.
 * Inodes: the used count is real; the metadata store has no inode table to
 * run out of, so free inodes are reported as 2^32, "plenty", like other
 * network filesystems with no fixed inode table. */
int fs_statfs(struct fs *fs, struct statvfs *sv)
{
    memset(sv, 0, sizeof *sv);
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
    if (r < 0)
        return -EIO;
    sv->f_bsize = sv->f_frsize = bsize;
    sv->f_bfree = sv->f_bavail = (fsblkcnt_t)(avail / bsize);
    sv->f_blocks = sv->f_bfree + (fsblkcnt_t)((bytes + bsize - 1) / bsize);
    sv->f_ffree = sv->f_favail = (fsfilcnt_t)1 << 32;
    sv->f_files = (fsfilcnt_t)inodes + sv->f_ffree;
    sv->f_namemax = NAME_MAX_PLAIN;
    return 0;
}

/* ---- lifetime ---- */

int fs_core_start(struct fs *fs, struct vault *v, const struct fs_options *o)
{
    memset(fs, 0, sizeof *fs);
    fs->v = v;
    fs->opt = *o;
    fs->chunk_size = v->conf.chunk_size ? v->conf.chunk_size : (1u << 20);
    fs->mount_ns = fs_now_ns();
    fs->uid = getuid();
    fs->gid = getgid();
    fs->entry_timeout = strcmp(v->conf.meta_backend, "sqlite") == 0 ? FS_ENTRY_TIMEOUT_LOCAL
                                                                    : FS_ENTRY_TIMEOUT_SHARED;
    int ro_only = v->nfolders > 0;
    for (size_t i = 0; i < v->nfolders; i++)
        if (v->folders[i].rights & RIGHT_WRITE)
            ro_only = 0;
    if (ro_only)
        fs->opt.read_only = 1; /* a read-only grant mounts read-only */
    pthread_mutex_init(&fs->meta_lock, NULL);
    meta_set_row_hook(v->meta, fs_row_written, fs);
    pthread_mutex_init(&fs->retired_lock, NULL);
    pthread_mutex_init(&fs->handles_lock, NULL);
    int r = fs_itab_init(&fs->itab);
    if (r == 0)
        r = fs_data_start(fs);
    return r;
}

void fs_core_stop(struct fs *fs)
{
    fs_itab_destroy(fs);
    if (!fs->opt.read_only)
        fs_data_gc_run(fs);
    fs_data_stop(fs);
    meta_set_row_hook(fs->v->meta, NULL, NULL);
    free(fs->retired);
    pthread_mutex_destroy(&fs->retired_lock);
    pthread_mutex_destroy(&fs->meta_lock);
    pthread_mutex_destroy(&fs->handles_lock);
}

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

void fs_core_delete_orphans(struct fs *fs)
{
    uint64_t *list = calloc(1, sizeof *list);
    if (!list)
        return;
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_inode_list_orphans(fs->v->meta, orphan_collect, &list);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0)
        log_error("cannot list orphan inodes: %s", pfs_err_msg());
    for (uint64_t i = 1; i <= list[0]; i++)
        fs_inode_delete_now(fs, list[i]);
    free(list);
}

/* ---- creating nodes ---- */

int fs_node_insert(struct fs *fs, uid_t uid, gid_t gid, const struct vault_folder *vf,
                   const struct meta_inode *dir, struct fs_new_node *nn, struct meta_inode *mi)
{
    int64_t now = fs_now_ns();
    const struct folder_keys *k = fs_cur_keys(fs, vf);
    if (!k)
        return -EACCES;
    memset(mi, 0, sizeof *mi);
    mi->folder_id = vf->id;
    mi->mode = nn->mode;
    mi->uid = uid;
    mi->gid = (dir->mode & S_ISGID) ? dir->gid : gid;
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
        r = fs_sealed_seal(fs, vf, "symlink", mi->ino, NULL, nn->link_target,
                           strlen(nn->link_target), &sealed, &slen);
        if (r == 0)
            r = meta_symlink_set(fs->v->meta, mi->ino, sealed, slen);
        free(sealed);
    }
    return r;
}
