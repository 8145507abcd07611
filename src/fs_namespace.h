/* Namespace operations of the filesystem core, without FUSE: make, link,
 * rename and remove entries of a mount, and change their attributes.
 *
 * Each runs one metadata transaction under meta_lock with the caller's
 * rights checked (fs_folder_check) and its audit event appended inside
 * the transaction, durable before it returns (fs_meta_op_end).  Each
 * returns 0 or -errno; the errno is one the kernel may be told, or -EIO
 * (the FUSE front end, fs_ops.c, maps anything else to EIO: fs_errno_out).  A refusal
 * (-EACCES, -EROFS) has been audited.  The unit tests call these on a
 * vault in a temporary directory (tests/unit/test_fs_namespace.c).
 */
#ifndef PACTFS_FS_NAMESPACE_H
#define PACTFS_FS_NAMESPACE_H

#include <stdint.h>
#include <stdio.h>

#include "fs_core.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* A new node nn (mode, and the DEK, target or op it needs) under name in
 * directory parent: -EEXIST, -ENOTDIR, -EACCES, -ENOENT, -EPERM (a name
 * the trash keeps), -ENAMETOOLONG, -EINVAL, -EROFS or -EIO.  *mi gets
 * the new inode row. */
int fs_make_node(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
                 struct fs_new_node *nn, struct meta_inode *mi);
/* mkdir: in a folder, a directory; at the root, a new contract folder
 * (a dataadmin on a writable mount; audited as folder-create); the
 * trash's own directories give -EEXIST (or -EPERM). */
int fs_mkdir(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
             uint32_t mode, struct meta_inode *mi);
/* A regular file (with a fresh DEK), fifo or socket; -EPERM for a device. */
int fs_mknod(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
             uint32_t mode, uint64_t rdev, struct meta_inode *mi);
/* A symlink to target (sealed under the folder key). */
int fs_symlink(struct fs *fs, const struct fs_caller *who, const char *target, uint64_t parent,
               const char *name, struct meta_inode *mi);

/* unlink (is_rmdir 0) or rmdir name in parent; in the trash's virtual
 * directories the entry they stand for (files/: audited trash-empty), a
 * pending .trashinfo of info/ is dropped.  An inode whose last link went
 * is deleted now, or at its last reference.  -ENOENT, -ENOTDIR, -EISDIR,
 * -ENOTEMPTY, -EACCES, -EROFS, -EPERM, -EIO. */
int fs_unlink(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
              int is_rmdir);
/* After a link of ino went: nlink 0 means delete now, or at the last
 * reference the kernel drops. */
void fs_maybe_delete(struct fs *fs, uint64_t ino, uint32_t nlink);

/* rename(2) of name in parent to newname in newparent, flags
 * RENAME_NOREPLACE and RENAME_EXCHANGE (others: -EINVAL), inside one
 * folder (else -EXDEV); into or out of the trash's files/ and expunged/
 * it is a trash, restore or trash-empty (audited so, the .trashinfo
 * sealed on the entry or dropped), inside info/ a pending .trashinfo's
 * rename.  A replaced target whose last link went is deleted. */
int fs_rename(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
              uint64_t newparent, const char *newname, unsigned flags);

/* A hard link newname in newparent to ino (same folder, not a directory):
 * -EXDEV, -EPERM, -EEXIST, -ENOENT, ...; *mi gets ino's row. */
int fs_link(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint64_t newparent,
            const char *newname, struct meta_inode *mi);
/* The target of symlink ino, malloc'd in *target (audited): -EINVAL if
 * ino is no symlink. */
int fs_readlink(struct fs *fs, const struct fs_caller *who, uint64_t ino, char **target);

/* What fs_setattr changes: the bits of FUSE's FUSE_SET_ATTR_* (the same
 * values, checked where fs_ops.c passes them on). */
#define FS_SET_MODE (1 << 0)
#define FS_SET_UID (1 << 1)
#define FS_SET_GID (1 << 2)
#define FS_SET_SIZE (1 << 3)
#define FS_SET_ATIME (1 << 4)
#define FS_SET_MTIME (1 << 5)
#define FS_SET_ATIME_NOW (1 << 7)
#define FS_SET_MTIME_NOW (1 << 8)
#define FS_SET_FORCE (1 << 9)
#define FS_SET_CTIME (1 << 10)
#define FS_SET_KILL_SUIDGID (1 << 11)   /* the kernel's FATTR_KILL_SUIDGID */
#define FS_SET_FILE (1 << 13)
#define FS_SET_OPEN (1 << 15)
/* chmod, chown (POSIX rules: only root changes the owner, the owner may
 * change the group to one of its groups, who->groups), utimens and
 * truncate of ino, from the fields of attr that valid names; audited as
 * chmod, chown, utimens, setattr or truncate with the fields changed.  With
 * FS_SET_KILL_SUIDGID (FUSE_HANDLE_KILLPRIV_V2: a chown of a non-directory,
 * a truncate by a caller without CAP_FSETID) the stored mode also loses
 * what fs_kill_bits names, before an explicit mode applies; a truncate
 * changes the mode only when the mode the kernel was last told has such
 * bits.  A .trashinfo being written may only be truncated.  *st gets the
 * new attributes.  -EPERM, -EACCES, -EROFS, -EISDIR, -EINVAL, -ENOENT,
 * -EIO. */
int fs_setattr(struct fs *fs, const struct fs_caller *who, uint64_t ino, const struct stat *attr,
               int valid, struct stat *st);

/* The bits a write, truncate or chown clears from mode (Linux, and the
 * FUSE_HANDLE_KILLPRIV_V2 contract): S_ISUID, and S_ISGID when
 * group-execute is set (a set-group-ID bit without it marks mandatory
 * locking, not a privilege); none for a directory. */
uint32_t fs_kill_bits(uint32_t mode);

/* A write or an open with O_TRUNC by a caller without CAP_FSETID (the
 * kernel's FUSE_WRITE_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID): clear
 * fs_kill_bits of ino's stored mode, audited as chmod.  Free when the mode
 * the kernel was last told (lookup, getattr, setattr) has none: no query,
 * no transaction.  1 when the mode changed (the kernel's cached one is then
 * stale), 0 when not, -errno. */
int fs_kill_suidgid(struct fs *fs, const struct fs_caller *who, uint64_t ino);

#endif
