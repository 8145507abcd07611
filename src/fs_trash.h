/* The freedesktop.org trash at the top of a mount, per account (no FUSE
 * here; docs/desktop.md "Trash", docs/design-fuse.md "Trash").
 *
 * What a file manager sees: a directory .Trash-UID at the top (UID: the
 * user who mounted; not listed, found by name as the specification asks)
 * holding files/, info/ and expunged/ (the last one is where GVFS moves
 * entries it is about to delete).  What is stored: in every contract
 * folder, one hidden directory per account (a reserved name, encrypted
 * like every name, never listed nor reachable by name inside the folder)
 * with real subdirectories files/ and expunged/.  Trashing is a rename
 * into the trashed entry's own folder, so the entry stays under that
 * folder's keys and rights; the virtual files/ and expunged/ merge those
 * directories over the account's folders.
 *
 * info/: NAME.trashinfo of an entry in files/ is generated from a value
 * sealed under the folder key on the trashed inode (the original path and
 * the deletion date).  A .trashinfo a client writes before its rename
 * (GIO: create with O_EXCL, write a temporary, rename over it) is kept in
 * memory until the rename into files/ names the entry: it never reaches
 * the vault, and the entry's own path is what is stored.
 *
 * A read-only mount has no trash: .Trash-UID does not exist there, so a
 * file manager offers no "Move to Trash".
 */
#ifndef PACTFS_FS_TRASH_H
#define PACTFS_FS_TRASH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "fs_core.h"

/* files/ or expunged/: their entries are real inodes of some folder. */
static inline int fs_trash_is_merged(uint64_t ino)
{
    return ino == FS_TRASH_FILES_INO || ino == FS_TRASH_EXPUNGED_INO;
}

/* The trash's state (pending .trashinfo files) for a mount; without it
 * (fs->trash NULL) there is no trash. */
int fs_trash_init(struct fs *fs);
void fs_trash_fini(struct fs *fs);

/* name at the top is this mount's .Trash-UID (and the mount is writable). */
int fs_trash_is_topname(struct fs *fs, const char *name);

/* Attributes of a virtual inode; -ENOENT if it is gone. */
int fs_trash_getattr(struct fs *fs, uint64_t ino, struct stat *st);
/* Look name up in a virtual directory (parent == 1 for .Trash-UID): a
 * real inode (*real = 1, mi filled) or a virtual one (*real = 0, st). */
int fs_trash_lookup(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
                    struct meta_inode *mi, struct stat *st, int *real);
/* List a virtual directory; offsets are positions (1 and 2: "." and ".."). */
int fs_trash_readdir(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint64_t off,
                     fs_dirent_fn fn, void *arg);

/* The real directory holding name in files/ or expunged/ (vparent), and
 * its folder: -ENOENT if no folder's trash has it. */
int fs_trash_resolve(struct fs *fs, const struct fs_caller *who, uint64_t vparent,
                     const char *name, uint64_t *real_parent, struct vault_folder **vf);
/* The real directory behind files/ or expunged/ in folder vf, made (with
 * the account's hidden trash directory) if missing. */
int fs_trash_subdir(struct fs *fs, const struct fs_caller *who, struct vault_folder *vf,
                    uint64_t vparent, uint64_t *real);

/* The .trashinfo of an entry trashed from orig_path (a path in the mount,
 * "/Folder/a.txt"), with the deletion date a client wrote into the pending
 * info/NAME.trashinfo if there is one (else now); malloc'd. */
int fs_trash_info_make(struct fs *fs, const char *orig_path, const char *name, char **content,
                       size_t *len);
/* Store / drop the sealed .trashinfo of inode ino (meta_lock held, in a
 * transaction). */
int fs_trash_info_set_locked(struct fs *fs, const struct vault_folder *vf, uint64_t ino,
                             const char *content, size_t len);
int fs_trash_info_remove_locked(struct fs *fs, const struct vault_folder *vf, uint64_t ino);

/* .trashinfo files a client writes into info/ before its rename. */
int fs_trash_pend_create(struct fs *fs, const struct fs_caller *who, const char *name,
                         struct stat *st);
int fs_trash_pend_unlink(struct fs *fs, const char *name);
int fs_trash_pend_rename(struct fs *fs, const char *from, const char *to, unsigned noreplace);
/* The pending NAME.trashinfo of an entry now in files/ is no longer needed. */
void fs_trash_pend_drop(struct fs *fs, const char *entry_name);

/* Contents of a virtual file (an info file, pending or generated). */
int fs_trash_file_read(struct fs *fs, uint64_t ino, uint64_t off, size_t size, uint8_t *out,
                       size_t *got);
int fs_trash_file_write(struct fs *fs, uint64_t ino, uint64_t off, const void *buf, size_t size);
int fs_trash_file_truncate(struct fs *fs, uint64_t ino, uint64_t size);

#endif
