/* Namespace operations of the filesystem core (fs_namespace.h): making,
 * linking and removing entries, each in one metadata transaction with
 * its rights checked and its audit event appended inside it. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crashpoint.h"
#include "error.h"
#include "fs_namespace.h"
#include "fs_trash.h"
#include "log.h"
#include "secmem.h"

/* ---- making entries ---- */

static void touch_dir(struct meta_inode *dir, int64_t now, int nlink_delta)
{
    dir->mtime_ns = dir->ctime_ns = now;
    if (nlink_delta < 0 && dir->nlink > 2)
        dir->nlink--;
    else if (nlink_delta > 0)
        dir->nlink++;
}

/* mkdir, create, mknod, symlink: one meta transaction that also audits. */
int fs_make_node(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
                 struct fs_new_node *nn, struct meta_inode *mi)
{
    struct vault_folder *vf;
    int r = fs_folder_check(fs, who, parent, RIGHT_READ | RIGHT_WRITE, nn->op, name, &vf);
    if (r < 0)
        return r;
    if (fs_trash_reserved(fs, parent, name))
        return -EPERM;   /* a name kept for the trash's hidden directories */
    r = fs_name_check(name);
    if (r < 0)
        return r;
    const struct folder_keys *k = fs_cur_keys(fs, vf);
    struct fs_name en;
    if (!k || fs_name_enc(k, parent, name, &en) < 0)
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
        r = fs_dir_lookup_known_locked(fs, who, vf, parent, name, k, &en, &existing, NULL, NULL);
        r = r == 0 ? -EEXIST : (r == -ENOENT ? 0 : r);
    }
    if (r == 0)
        r = fs_node_insert(fs, who->uid, who->gid, vf, &dir, nn, mi);
    if (r == 0) {
        nn->row_gen = fs_row_gen(fs, mi->ino);
        r = fs_dirent_add_bound(fs, k, parent, &en, mi->ino, mi->mode);
    }
    unsigned dir_gen = 0;
    if (r == 0) {
        touch_dir(&dir, mi->ctime_ns, S_ISDIR(nn->mode) ? 1 : 0);
        r = meta_inode_update(m, &dir);
        dir_gen = fs_row_gen(fs, parent);
    }
    struct audit_detail d = { .file = r == 0 ? mi->ino : 0 };
    r = fs_meta_op_end_detail(fs, who, nn->op, path, 0, r, &d);
    free(path);
    if (r == 0)
        fs_row_remember(fs, parent, &dir, dir_gen);   /* the getattr the kernel sends next */
    if (r < 0 && r != -EEXIST && r != -ENOTDIR && r != -EACCES && r != -ENOENT)
        r = -EIO;
    return r;
}

/* mkdir at the root by a dataadmin: a new contract folder, exactly as
 * `pactfs-admin folder-create` makes it (folder key, this account's
 * envelope and signed grant), audited as folder-create in the same
 * transaction; then its envelope is opened so it shows at once. */
static int root_mkdir(struct fs *fs, const struct fs_caller *who, const char *name,
                      struct meta_inode *mi)
{
    if (fs->opt.read_only)
        return -EROFS;
    /* Desktops probe the top of every mount with hidden names (the
     * freedesktop.org trash's .Trash-UID, .xdg-volume-info): those must
     * never become contract folders. */
    if (!fs_may_create_folders(fs) || name[0] == '.')
        return fs_root_deny(fs, who, "mkdir", name, NULL);
    int r = fs_name_check(name);
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
        r = fs_audit_append(fs, who, "folder-create", path, 0, 0, &ticket);
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
        log_error("cannot create contract folder \"%s\": %s", name,
                  pfs_err_msg());
    if (r == 0)
        r = fs_audit_wait(fs, "folder-create", ticket);
    free(path);
    return r < 0 && r != -EEXIST ? -EIO : r;
}

/* ---- removing entries ---- */


int fs_mkdir(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
             uint32_t mode, struct meta_inode *mi)
{
    if ((parent == META_ROOT_INO && fs_trash_is_topname(fs, name)) || parent == FS_TRASH_INO) {
        /* the trash's directories exist (a file manager makes sure) */
        struct stat st;
        int real = 0;
        int r = fs_trash_lookup(fs, who, parent, name, mi, &st, &real);
        return r == 0 ? -EEXIST : -EPERM;
    }
    if (parent == META_ROOT_INO) {
        int r = root_mkdir(fs, who, name, mi);
        if (r < 0 && r != -EACCES && r != -EEXIST && r != -EROFS && r != -ENAMETOOLONG &&
            r != -EINVAL)
            r = -EIO;
        return r;
    }
    struct fs_new_node nn = { .mode = S_IFDIR | (mode & 07777), .op = "mkdir" };
    return fs_make_node(fs, who, parent, name, &nn, mi);
}

int fs_mknod(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
             uint32_t mode, uint64_t rdev, struct meta_inode *mi)
{
    if (!S_ISREG(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode))
        return -EPERM;   /* no device nodes inside a vault */
    struct fs_new_node nn = { .mode = mode, .rdev = rdev, .op = "create" };
    uint8_t *dek = secmem_alloc(DEK_LEN);
    if (!dek)
        return -ENOMEM;
    nn.dek = dek;
    int r = fs_make_node(fs, who, parent, name, &nn, mi);
    secmem_free(dek, DEK_LEN);
    return r;
}

int fs_symlink(struct fs *fs, const struct fs_caller *who, const char *target, uint64_t parent,
               const char *name, struct meta_inode *mi)
{
    if (strlen(target) >= PATH_MAX)
        return -ENAMETOOLONG;
    struct fs_new_node nn = { .mode = S_IFLNK | 0777, .link_target = target, .op = "symlink" };
    return fs_make_node(fs, who, parent, name, &nn, mi);
}

/* ---- removing entries ---- */

/* After a link went: nlink 0 means delete now, or at the last reference. */
void fs_maybe_delete(struct fs *fs, uint64_t ino, uint32_t nlink)
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

/* Remove name from parent; in the trash, parent is the real directory
 * and kparent the one the kernel knows (for the audit path), and op
 * says what the removal is (NULL: unlink or rmdir). */
static int remove_entry(struct fs *fs, const struct fs_caller *who, uint64_t parent,
                        uint64_t kparent, const char *name, int is_rmdir, const char *op,
                        uint64_t *ino_out, uint32_t *nlink_out)
{
    if (!op)
        op = is_rmdir ? "rmdir" : "unlink";
    struct vault_folder *vf;
    int r = fs_folder_check(fs, who, parent, RIGHT_READ | RIGHT_WRITE, op, name, &vf);
    if (r < 0)
        return r;
    if (fs_trash_reserved(fs, parent, name))
        return -ENOENT;
    char *path = fs_path(fs, kparent, name);
    struct meta *m = fs->v->meta;
    int64_t now = fs_now_ns();
    struct fs_name en;
    struct meta_inode victim, dir;
    uint64_t ino = 0;
    pthread_mutex_lock(&fs->meta_lock);
    r = meta_begin(m);
    if (r == 0)
        r = fs_dir_lookup_locked(fs, who, vf, parent, name, &ino, &en, NULL);
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
    unsigned dir_gen = 0;
    if (r == 0) {
        touch_dir(&dir, now, is_rmdir ? -1 : 0);
        r = meta_inode_update(m, &dir);
        dir_gen = fs_row_gen(fs, parent);
    }
    r = fs_meta_op_end_detail(fs, who, op, path, 0, r, &(struct audit_detail){ .file = ino });
    free(path);
    if (r == 0)
        fs_row_remember(fs, parent, &dir, dir_gen);   /* the getattr the kernel sends next */
    *ino_out = ino;
    *nlink_out = victim.nlink;
    return r;
}

int fs_unlink(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
              int is_rmdir)
{
    uint64_t ino = 0, real = parent;
    uint32_t nlink = 1;
    const char *op = NULL;
    int r = 0;
    if (parent == FS_TRASH_INFO_INO && !is_rmdir) {
        /* a pending .trashinfo goes; a generated one goes with its entry */
        r = fs->opt.read_only ? -EROFS : fs_trash_pend_unlink(fs, name);
        if (r == -ENOENT) {
            struct meta_inode mi;
            struct stat st;
            int isreal;
            if (fs_trash_lookup(fs, who, parent, name, &mi, &st, &isreal) == 0)
                r = -EPERM;
        }
        return r;
    }
    if (fs_is_virtual(parent)) {
        struct vault_folder *vf;
        r = fs_trash_resolve(fs, who, parent, name, &real, &vf);
        /* deleting from files/ empties that entry from the trash; GVFS
         * deletes what it moved to expunged/ (audited then) */
        op = parent == FS_TRASH_FILES_INO ? "trash-empty" : NULL;
    }
    if (r == 0)
        r = remove_entry(fs, who, real, parent, name, is_rmdir, op, &ino, &nlink);
    if (r == 0)
        fs_maybe_delete(fs, ino, nlink);
    return r;
}

/* ---- rename ---- */

struct rename_ctx {
    struct vault_folder *vf;
    uint64_t parent, newparent;
    const char *name, *newname;
    unsigned flags;
    struct fs_name src_en, dst_en_cur;   /* as stored; target under current keys */
    struct fs_name dst_en;               /* target as stored (if it exists) */
    struct fs_name src_en_cur;           /* source name in newparent... for exchange */
    uint64_t src_ino, dst_ino;
    struct meta_inode src, dst;
    int dst_exists;
    uint64_t victim;                      /* ino whose nlink may have reached 0 */
    uint32_t victim_nlink;
    /* the trash (fs_trash.h): parent and newparent are the real
     * directories, these the ones the kernel named */
    uint64_t kparent, knewparent;
    const char *op;                       /* "rename", "trash", "restore", "trash-empty" */
    int info;                             /* TRASH_INFO_* */
    char *info_text;                      /* the .trashinfo to store */
    size_t info_len;
};

enum { TRASH_INFO_KEEP, TRASH_INFO_SET, TRASH_INFO_DROP };

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
    const struct folder_keys *k = fs_cur_keys(fs, c->vf);
    struct fs_name a_new, b_new;   /* src under newname/newparent, dst under name/parent */
    if (!k || fs_name_enc(k, c->newparent, c->newname, &a_new) < 0 ||
        fs_name_enc(k, c->parent, c->name, &b_new) < 0)
        return -EIO;
    int r = meta_dirent_remove(m, c->parent, c->src_en.b, c->src_en.len);
    if (r == 0)
        r = meta_dirent_remove(m, c->newparent, c->dst_en.b, c->dst_en.len);
    if (r == 0)
        r = fs_dirent_add_bound(fs, k, c->newparent, &a_new, c->src_ino, c->src.mode);
    if (r == 0)
        r = fs_dirent_add_bound(fs, k, c->parent, &b_new, c->dst_ino, c->dst.mode);
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
    const struct folder_keys *k = fs_cur_keys(fs, c->vf);
    struct fs_name to;
    if (!k || fs_name_enc(k, c->newparent, c->newname, &to) < 0)
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
        r = fs_dirent_add_bound(fs, k, c->newparent, &to, c->src_ino, c->src.mode);
    if (r == 0)
        r = adjust_parents(m, c->parent, c->newparent, S_ISDIR(c->src.mode), now);
    if (r == 0) {
        c->src.ctime_ns = now;
        r = meta_inode_update(m, &c->src);
    }
    return r;
}

static int rename_locked(struct fs *fs, const struct fs_caller *who, struct rename_ctx *c,
                         const char *path, uint64_t *ticket)
{
    uint32_t src_type = 0, dst_type = 0;
    struct meta *m = fs->v->meta;
    int64_t now = fs_now_ns();
    int r = meta_begin(m);
    if (r < 0)
        return r;
    r = fs_dir_lookup_locked(fs, who, c->vf, c->parent, c->name, &c->src_ino, &c->src_en,
                          &src_type);
    if (r == 0)
        r = meta_inode_get(m, c->src_ino, &c->src);
    if (r == 0 && (c->src.mode & S_IFMT) != src_type)
        r = fs_tamper(fs, who, c->parent, c->name, "check \"entry binding\" failed: the "
                      "inode's type is not the one its entry was written for");
    if (r == 0) {
        int t = fs_dir_lookup_locked(fs, who, c->vf, c->newparent, c->newname, &c->dst_ino,
                                  &c->dst_en, &dst_type);
        c->dst_exists = t == 0;
        if (t == 0)
            r = meta_inode_get(m, c->dst_ino, &c->dst);
        else if (t != -ENOENT)
            r = t;
        if (r == 0 && t == 0 && (c->dst.mode & S_IFMT) != dst_type)
            r = fs_tamper(fs, who, c->newparent, c->newname, "check \"entry binding\" failed: "
                          "the inode's type is not the one its entry was written for");
    }
    if (r == 0 && (c->flags & RENAME_NOREPLACE) && c->dst_exists)
        r = -EEXIST;
    if (r == 0 && (c->flags & RENAME_EXCHANGE) && !c->dst_exists)
        r = -ENOENT;
    int same = r == 0 && c->dst_exists && c->dst_ino == c->src_ino;
    if (r == 0 && !same)
        r = (c->flags & RENAME_EXCHANGE) ? rename_exchange(fs, c, now) : rename_move(fs, c, now);
    if (r == 0 && c->info == TRASH_INFO_SET)   /* sealed on the entry, under its folder key */
        r = fs_trash_info_set_locked(fs, c->vf, c->src_ino, c->info_text, c->info_len);
    if (r == 0 && c->info == TRASH_INFO_DROP)
        r = fs_trash_info_remove_locked(fs, c->vf, c->src_ino);
    if (r == 0)
        r = fs_audit_append_detail(fs, who, c->op, path, 0, 0,
                                   &(struct audit_detail){ .file = c->src_ino }, ticket);
    if (r == 0)
        r = meta_commit(m);
    else
        meta_rollback(m);
    return r;
}

/* A rename from or into the trash's files/ or expunged/: those become the
 * real directories in the entry's own folder (made if missing), so the
 * entry keeps its folder's keys and rights; what it is (trash, restore,
 * trash-empty) decides the audit and the .trashinfo.  A rename inside
 * info/ is a client writing a .trashinfo (fs_trash.h): returns 1 when
 * done, 0 to go on, -errno. */
static int trash_rename_map(struct fs *fs, const struct fs_caller *who, struct rename_ctx *c)
{
    uint64_t kp = c->kparent, knp = c->knewparent;
    int r;
    if (fs->opt.read_only)
        return -EROFS;
    if (c->flags & RENAME_EXCHANGE)
        return -EINVAL;
    if (kp == FS_TRASH_INFO_INO && knp == FS_TRASH_INFO_INO) {
        r = fs_trash_pend_rename(fs, c->name, c->newname, c->flags & RENAME_NOREPLACE);
        return r < 0 ? r : 1;
    }
    if ((fs_is_virtual(kp) && !fs_trash_is_merged(kp)) ||
        (fs_is_virtual(knp) && !fs_trash_is_merged(knp)))
        return -EPERM;
    struct vault_folder *vf = NULL;
    if (fs_trash_is_merged(kp)) {
        r = fs_trash_resolve(fs, who, kp, c->name, &c->parent, &vf);
        if (r < 0)
            return r;
    }
    if (fs_trash_is_merged(knp)) {
        if (!vf) {
            r = fs_folder_check(fs, who, kp, RIGHT_READ | RIGHT_WRITE, "trash", c->name, &vf);
            if (r < 0)
                return r;
        }
        /* one name in the merged directory: not beside another folder's */
        uint64_t other;
        struct vault_folder *ovf = NULL;
        r = fs_trash_resolve(fs, who, knp, c->newname, &other, &ovf);
        if (r == 0 && ovf != vf)
            return -EEXIST;
        if (r < 0 && r != -ENOENT)
            return r;
        r = fs_trash_subdir(fs, who, vf, knp, &c->newparent);
        if (r < 0)
            return r;
    }
    c->op = "rename";
    if (!fs_is_virtual(kp) && knp == FS_TRASH_FILES_INO) {
        char *orig = fs_path(fs, kp, c->name);
        r = orig ? fs_trash_info_make(fs, orig, c->newname, &c->info_text, &c->info_len)
                 : -ENOMEM;
        free(orig);
        if (r < 0)
            return r;
        c->op = "trash";
        c->info = TRASH_INFO_SET;
    } else if (kp == FS_TRASH_FILES_INO && knp != FS_TRASH_FILES_INO) {
        c->op = knp == FS_TRASH_EXPUNGED_INO ? "trash-empty" : "restore";
        c->info = TRASH_INFO_DROP;
    }
    return 0;
}

int fs_rename(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
              uint64_t newparent, const char *newname, unsigned flags)
{
    struct rename_ctx c;
    memset(&c, 0, sizeof c);
    c.parent = c.kparent = parent;
    c.newparent = c.knewparent = newparent;
    c.name = name;
    c.newname = newname;
    c.flags = flags;
    c.op = "rename";
    int r = 0;
    if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
        r = -EINVAL;
    if (r == 0 && (fs_is_virtual(parent) || fs_is_virtual(newparent))) {
        r = trash_rename_map(fs, who, &c);
        if (r == 1)
            return 0;
    }
    if (r == 0 && (fs_trash_reserved(fs, c.parent, name) ||
                   fs_trash_reserved(fs, c.newparent, newname)))
        r = -EPERM;
    struct vault_folder *vf2 = NULL;
    char *dest = fs_path(fs, newparent, newname);
    if (r == 0)
        r = fs_folder_check_dest(fs, who, c.parent, RIGHT_READ | RIGHT_WRITE, c.op, name, dest,
                              &c.vf);
    if (r == 0)
        r = fs_folder_check_dest(fs, who, c.newparent, RIGHT_READ | RIGHT_WRITE, c.op, newname,
                              dest, &vf2);
    free(dest);
    if (r == 0 && c.vf != vf2)
        r = -EXDEV;
    if (r == 0)
        r = fs_name_check(newname);
    if (r < 0) {
        free(c.info_text);
        return r;
    }
    char *from = fs_path(fs, parent, name);
    char *to = fs_path(fs, newparent, newname);
    size_t plen = (from ? strlen(from) : 1) + (to ? strlen(to) : 1) + 5;
    char *path = malloc(plen);
    if (path)
        snprintf(path, plen, "%s -> %s", from ? from : "?", to ? to : "?");
    uint64_t ticket = 0;
    pthread_mutex_lock(&fs->meta_lock);
    r = rename_locked(fs, who, &c, path, &ticket);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r == 0)   /* durable before the reply, waited for outside the lock */
        r = fs_audit_wait(fs, c.op, ticket);
    free(from);
    free(to);
    free(path);
    free(c.info_text);
    if (r == 0) {
        if (c.victim)
            fs_maybe_delete(fs, c.victim, c.victim_nlink);
        if (c.info == TRASH_INFO_SET)   /* the client's .trashinfo is stored now */
            fs_trash_pend_drop(fs, newname);
        fs_inode_set_name(fs, c.src_ino, newparent, newname);
        if (flags & RENAME_EXCHANGE)
            fs_inode_set_name(fs, c.dst_ino, parent, name);
    }
    return r;
}

/* ---- links ---- */

int fs_link(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint64_t newparent,
            const char *newname, struct meta_inode *mi)
{
    struct vault_folder *vf, *vf2;
    int r = fs_folder_check(fs, who, ino, RIGHT_READ | RIGHT_WRITE, "link", NULL, &vf);
    if (r == 0)
        r = fs_folder_check(fs, who, newparent, RIGHT_READ | RIGHT_WRITE, "link", newname, &vf2);
    if (r == 0 && vf != vf2)
        r = -EXDEV;
    if (r == 0 && fs_trash_reserved(fs, newparent, newname))
        r = -EPERM;
    if (r == 0)
        r = fs_name_check(newname);
    const struct folder_keys *k = r == 0 ? fs_cur_keys(fs, vf) : NULL;
    struct fs_name en;
    if (r == 0 && (!k || fs_name_enc(k, newparent, newname, &en) < 0))
        r = -EIO;
    if (r < 0)
        return r;
    char *path = fs_path(fs, newparent, newname);
    struct meta *m = fs->v->meta;
    int64_t now = fs_now_ns();
    struct meta_inode dir;
    uint64_t existing;
    pthread_mutex_lock(&fs->meta_lock);
    r = meta_begin(m);
    if (r == 0)
        r = meta_inode_get(m, ino, mi);
    if (r == 0 && S_ISDIR(mi->mode))
        r = -EPERM;
    if (r == 0 && mi->nlink == 0)
        r = -ENOENT;
    if (r == 0) {
        r = fs_dir_lookup_locked(fs, who, vf, newparent, newname, &existing, NULL, NULL);
        r = r == 0 ? -EEXIST : (r == -ENOENT ? 0 : r);
    }
    if (r == 0)
        r = fs_dirent_add_bound(fs, k, newparent, &en, ino, mi->mode);
    if (r == 0) {
        mi->nlink++;
        mi->ctime_ns = now;
        r = meta_inode_update(m, mi);
    }
    if (r == 0)
        r = meta_inode_get(m, newparent, &dir);
    if (r == 0) {
        touch_dir(&dir, now, 0);
        r = meta_inode_update(m, &dir);
    }
    r = fs_meta_op_end_detail(fs, who, "link", path, 0, r, &(struct audit_detail){ .file = ino });
    free(path);
    return r;
}

int fs_readlink(struct fs *fs, const struct fs_caller *who, uint64_t ino, char **target_out)
{
    struct vault_folder *vf;
    int r = fs_folder_check(fs, who, ino, RIGHT_READ, "readlink", NULL, &vf);
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
        r = fs_sealed_open_fresh(fs, vf, "symlink", ino, NULL, sealed, slen, &plain, &plen);
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
    if (r != -EACCES && r != -EROFS && fs_audit_ino(fs, who, "readlink", ino, r, 0) < 0)
        r = -EIO;
    if (r < 0) {
        free(target);
        return r;
    }
    *target_out = target;
    return 0;
}

/* ---- attributes ---- */

static int64_t ts_to_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static int caller_in_group(const struct fs_caller *who, gid_t gid)
{
    if (who->gid == gid)
        return 1;
    for (int i = 0; i < who->ngroups; i++)
        if (who->groups[i] == gid)
            return 1;
    return 0;
}

/* POSIX chown rules: only root changes the owner; the owner may change the
 * group to one of its own groups. */
static int chown_allowed(const struct fs_caller *who, const struct meta_inode *mi,
                         const struct stat *a, int valid)
{
    if (who->uid == 0)
        return 0;
    if ((valid & FS_SET_UID) && a->st_uid != mi->uid)
        return -EPERM;
    if ((valid & FS_SET_GID) && a->st_gid != mi->gid &&
        (who->uid != mi->uid || !caller_in_group(who, a->st_gid)))
        return -EPERM;
    return 0;
}

uint32_t fs_kill_bits(uint32_t mode)
{
    if (S_ISDIR(mode))
        return 0;
    uint32_t kill = mode & S_ISUID;
    if ((mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP))
        kill |= S_ISGID;
    return kill;
}

/* Apply a setattr to the row mi; *killed: FS_SET_KILL_SUIDGID cleared
 * bits.  Nobody else clears set-ID bits on a chown: without
 * FUSE_HANDLE_KILLPRIV_V2 the kernel sends the cleared mode itself. */
static int apply_setattr(const struct fs_caller *who, struct meta_inode *mi, const struct stat *a,
                         int valid, int *killed)
{
    int64_t now = fs_now_ns();
    *killed = 0;
    if (valid & (FS_SET_UID | FS_SET_GID)) {
        int r = chown_allowed(who, mi, a, valid);
        if (r < 0)
            return r;
        if (valid & FS_SET_UID)
            mi->uid = a->st_uid;
        if (valid & FS_SET_GID)
            mi->gid = a->st_gid;
    }
    if ((valid & FS_SET_KILL_SUIDGID) && fs_kill_bits(mi->mode)) {
        mi->mode &= ~fs_kill_bits(mi->mode);
        *killed = 1;
    }
    if (valid & FS_SET_MODE)
        mi->mode = (mi->mode & S_IFMT) | (a->st_mode & 07777);
    if (valid & FS_SET_ATIME_NOW)
        mi->atime_ns = now;
    else if (valid & FS_SET_ATIME)
        mi->atime_ns = ts_to_ns(&a->st_atim);
    if (valid & FS_SET_MTIME_NOW)
        mi->mtime_ns = now;
    else if (valid & FS_SET_MTIME)
        mi->mtime_ns = ts_to_ns(&a->st_mtim);
    mi->ctime_ns = (valid & FS_SET_CTIME) ? ts_to_ns(&a->st_ctim) : now;
    return 0;
}

static int setattr_size(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint64_t size,
                        const char *path)
{
    struct meta_inode mi;
    int r = fs_inode_row(fs, ino, &mi);
    if (r < 0)
        return r;
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
    int a = fs_audit_detail(fs, who, "truncate", path, r, size, &d);
    return r < 0 ? (r == -EACCES ? r : -EIO) : a;
}

/* The fields a setattr asked to change, with their new values (as
 * applied to mi when it succeeded, as asked otherwise). */
static struct audit_detail setattr_detail(uint64_t ino, const struct meta_inode *mi,
                                          const struct stat *a, int valid)
{
    struct audit_detail d = { .file = ino };
    if (valid & FS_SET_MODE) {
        d.set |= AUDIT_SET_MODE;
        d.mode = a->st_mode & 07777;
    }
    if (valid & (FS_SET_UID | FS_SET_GID)) {
        d.set |= AUDIT_SET_OWNER;
        d.uid = (valid & FS_SET_UID) ? a->st_uid : mi->uid;
        d.gid = (valid & FS_SET_GID) ? a->st_gid : mi->gid;
    }
    if (valid & (FS_SET_ATIME | FS_SET_ATIME_NOW)) {
        d.set |= AUDIT_SET_ATIME;
        d.atime_ns = (valid & FS_SET_ATIME_NOW) ? mi->atime_ns : ts_to_ns(&a->st_atim);
    }
    if (valid & (FS_SET_MTIME | FS_SET_MTIME_NOW)) {
        d.set |= AUDIT_SET_MTIME;
        d.mtime_ns = (valid & FS_SET_MTIME_NOW) ? mi->mtime_ns : ts_to_ns(&a->st_mtim);
    }
    return d;
}

static int setattr_meta(struct fs *fs, const struct fs_caller *who, uint64_t ino,
                        const struct stat *attr, int valid, const char *path,
                        int64_t *mtime_out)
{
    struct meta *m = fs->v->meta;
    struct meta_inode mi;
    memset(&mi, 0, sizeof mi);
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_begin(m);
    if (r == 0)
        r = meta_inode_get(m, ino, &mi);
    int killed = 0;
    if (r == 0)
        r = apply_setattr(who, &mi, attr, valid, &killed);
    if (r == 0)
        r = meta_inode_update(m, &mi);
    /* Cleared set-ID bits show as the mode set (the event of a write that
     * cleared them is a chmod). */
    struct stat shown = *attr;
    if (killed && !(valid & FS_SET_MODE)) {
        shown.st_mode = mi.mode;
        valid |= FS_SET_MODE;
    }
    struct audit_detail d = setattr_detail(ino, &mi, &shown, valid);
    const char *op = fs_setattr_op(d.set);
    int failed = r;
    r = fs_meta_op_end_detail(fs, who, op, path, 0, r, &d);
    if (failed < 0 && fs_audit_detail(fs, who, op, path, failed, 0, &d) < 0)
        r = -EIO;
    *mtime_out = mi.mtime_ns;
    return r;
}

/* The fields a setattr sets, as FS_OV_* (killed: it cleared set-ID bits). */
static unsigned setattr_fields(int valid, int killed)
{
    unsigned set = 0;
    if ((valid & FS_SET_MODE) || killed)
        set |= FS_OV_MODE;
    if (valid & FS_SET_UID)
        set |= FS_OV_UID;
    if (valid & FS_SET_GID)
        set |= FS_OV_GID;
    if (valid & (FS_SET_ATIME | FS_SET_ATIME_NOW))
        set |= FS_OV_ATIME;
    if (valid & (FS_SET_MTIME | FS_SET_MTIME_NOW))
        set |= FS_OV_MTIME;
    return set;
}

/* chmod, chown or utimens of a file this mount created and has not saved
 * while a handle writes it: kept for the file's first commit instead of a
 * transaction of its own (fs_data.c, "deferred attributes").  Its event is
 * folded with the caller's other kept changes of the file into one,
 * appended before any commit can write them (commit_lock held from here
 * to the keeping), as the write-ahead rule wants; a refusal is audited at
 * once, after the events it follows.  Returns 1 when done here (the
 * result in *rc), 0 to take the row path. */
static int setattr_deferred(struct fs *fs, const struct fs_caller *who, struct fs_inode *in,
                            const struct stat *attr, int valid, int *rc, struct stat *st)
{
    int how = fs_data_defer_begin(fs, in);
    if (how == FS_DEFER_PENDING) {
        /* changes kept earlier go first, or this row would precede them */
        if (fs_data_flush(fs, in) < 0) {
            *rc = -EIO;
            return 1;
        }
        return 0;
    }
    if (how != FS_DEFER_YES)
        return 0;
    struct meta_inode mi;
    int killed = 0;
    int r = fs_row_recall(fs, in, &mi) ? 0 : fs_inode_row(fs, in->ino, &mi);
    if (r == 0) {
        fs_data_defer_view(in, &mi);
        r = apply_setattr(who, &mi, attr, valid, &killed);
    }
    struct stat shown = *attr;
    if (killed && !(valid & FS_SET_MODE)) {
        shown.st_mode = mi.mode;
        valid |= FS_SET_MODE;
    }
    struct audit_detail d = setattr_detail(in->ino, &mi, &shown, valid);
    int a;
    if (r == 0) {
        a = fs_data_defer_fold(fs, in, who, &d);
    } else {
        const char *op = fs_setattr_op(d.set);
        char *path = fs_path(fs, in->ino, NULL);
        a = fs_data_fold_emit_held(fs, in);
        if (a == 0)
            a = fs_audit_detail(fs, who, op, path, r, 0, &d);
        free(path);
    }
    if (r == 0 && a == 0) {
        fs_data_defer_keep(in, &mi, setattr_fields(valid, killed));
        fs_inode_note_mode(in, mi.mode);
        /* the attributes as fs_getattr would show them, without reading
         * the row again */
        fs_stat_from_meta(fs, &mi, st);
        fs_data_fill_attr(in, &mi, st);
    }
    fs_data_defer_end(in);
    crash_point("setattr-after-keep");
    *rc = a < 0 ? -EIO : r;
    return 1;
}

/* The mode the kernel was last told for ino, else the stored one. */
static int known_mode(struct fs *fs, uint64_t ino, uint32_t *mode)
{
    struct fs_inode *in = fs_inode_find(fs, ino);
    uint32_t m = in ? __atomic_load_n(&in->mode, __ATOMIC_RELAXED) : 0;
    if (in)
        fs_inode_put(fs, in, FS_REF_OP, 1);
    if (m & 07777) {   /* else maybe only the type is known */
        *mode = m;
        return 0;
    }
    struct meta_inode mi;
    int r = fs_inode_row(fs, ino, &mi);
    if (r == 0)
        *mode = mi.mode;
    return r;
}

int fs_setattr(struct fs *fs, const struct fs_caller *who, uint64_t ino, const struct stat *attr,
               int valid, struct stat *st)
{
    struct vault_folder *vf;
    if (fs_is_virtual(ino)) {   /* only a .trashinfo being written changes */
        int r = (valid & FS_SET_SIZE) ? fs_trash_file_truncate(fs, ino, attr->st_size) : -EPERM;
        if (r == 0)
            r = fs_trash_getattr(fs, ino, st);
        return r;
    }
    int r = fs_folder_check(fs, who, ino, RIGHT_READ | RIGHT_WRITE,
                            (valid & FS_SET_SIZE) ? "truncate" : "setattr", NULL, &vf);
    if (r == 0 && ino == META_ROOT_INO)
        r = fs_deny(fs, who, "setattr", ino, NULL);
    /* Alone (a truncate), the kernel's kill flag costs a transaction only
     * when there is something to clear. */
    if (r == 0 && (valid & FS_SET_KILL_SUIDGID) && !(valid & (FS_SET_MODE | FS_SET_UID | FS_SET_GID))) {
        uint32_t mode = 0;
        r = known_mode(fs, ino, &mode);
        if (r == 0 && !fs_kill_bits(mode))
            valid &= ~FS_SET_KILL_SUIDGID;
    }
    char *path = NULL;   /* made when an event needs it (a kept change's waits) */
    if (r == 0 && (valid & FS_SET_SIZE)) {
        path = fs_path(fs, ino, NULL);
        r = setattr_size(fs, who, ino, (uint64_t)attr->st_size, path);
    }
    int other = valid & ~(FS_SET_SIZE | FS_SET_FILE | FS_SET_OPEN | FS_SET_FORCE);
    if (r == 0 && other) {
        /* A commit of written data must not land between reading and
         * rewriting the row, or it would undo an explicit mtime. */
        int64_t mtime = 0;
        struct fs_inode *in = fs_inode_find(fs, ino);
        if (in && setattr_deferred(fs, who, in, attr, valid, &r, st)) {
            fs_inode_put(fs, in, FS_REF_OP, 1);
            free(path);
            return r;
        }
        if (!path)
            path = fs_path(fs, ino, NULL);
        int held = in && fs_data_commit_hold(in);
        r = setattr_meta(fs, who, ino, attr, valid, path, &mtime);
        if (held)
            fs_data_commit_release(in, r == 0 && (valid & (FS_SET_MTIME | FS_SET_MTIME_NOW)),
                                   mtime);
        if (in)
            fs_inode_put(fs, in, FS_REF_OP, 1);
    }
    free(path);
    if (r == 0)
        r = fs_getattr(fs, ino, st);
    return r;
}

int fs_kill_suidgid(struct fs *fs, const struct fs_caller *who, uint64_t ino)
{
    uint32_t mode = 0;
    int r = fs_is_virtual(ino) ? 0 : known_mode(fs, ino, &mode);
    if (r < 0 || !fs_kill_bits(mode))
        return r;
    struct stat a, st;
    memset(&a, 0, sizeof a);
    r = fs_setattr(fs, who, ino, &a, FS_SET_KILL_SUIDGID, &st);
    if (r < 0)
        return r;
    return (st.st_mode & 07777) != (mode & 07777);
}
