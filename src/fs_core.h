/* The filesystem core: what a mount does, without FUSE.
 *
 * Namespace operations with their metadata transactions, permission checks
 * and audit; names and small values sealed under the folder keys with the
 * key-version fallback (the current version first, then older ones); the
 * attributes of an inode.  The caller is a struct fs_caller (who asks), not
 * a FUSE request: fs_ops.c unpacks the kernel's arguments, calls in here
 * and replies; the unit tests (tests/unit/test_fs_core*.c) call in here
 * directly on a vault in a temporary directory, without a mount.
 *
 * Locking: see fs_internal.h.  Functions named *_locked expect meta_lock
 * held; the others take it themselves.  Every function returns 0 or
 * -errno; a refusal (-EACCES, -EROFS) has been audited before it returns.
 */
#ifndef PACTFS_FS_CORE_H
#define PACTFS_FS_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include "envelope.h"
#include "fs_internal.h"

/* How long the kernel may cache entries and attributes: long on an
 * embedded (SQLite) vault, whose changes all go through this mount; short
 * on a shared (PostgreSQL) one that other workstations change. */
#define FS_ENTRY_TIMEOUT_LOCAL 10.0
#define FS_ENTRY_TIMEOUT_SHARED 1.0

/* ---- the trash's virtual inodes (fs_trash.h) ---- */

/* Inode numbers of the trash's virtual entries (the store's are far below). */
#define FS_VIRT_MIN (1ULL << 60)
#define FS_TRASH_PEND_BIT (1ULL << 60)   /* a .trashinfo being written */
#define FS_TRASH_INFO_BIT (1ULL << 61)   /* info/NAME.trashinfo of inode ino */
#define FS_TRASH_INO ((1ULL << 62) | 1)  /* .Trash-UID at the top */
#define FS_TRASH_FILES_INO ((1ULL << 62) | 2)
#define FS_TRASH_INFO_INO ((1ULL << 62) | 3)
#define FS_TRASH_EXPUNGED_INO ((1ULL << 62) | 4)
/* Name prefix of each folder's hidden per-account trash directory. */
#define FS_TRASH_HIDDEN_PREFIX ".pactfs-trash."

static inline int fs_is_virtual(uint64_t ino)
{
    return ino >= FS_VIRT_MIN;
}

/* name in parent is a folder's hidden trash directory (parent is a
 * folder's top): never listed, looked up, created or removed there. */
int fs_trash_reserved(struct fs *fs, uint64_t parent, const char *name);
/* The name of this mount's trash at the top: ".Trash-UID". */
void fs_trash_topname(const struct fs *fs, char *out, size_t cap);
/* "/.Trash-UID/files" and so on, malloc'd; NULL if ino is not virtual. */
char *fs_trash_vpath(struct fs *fs, uint64_t ino);

/* ---- lifetime ---- */

/* Fill fs for the unlocked vault v (a read-only grant forces a read-only
 * mount), start the data path; fs_core_stop tears it down (flushing what
 * is dirty, running the gc on a writable mount). */
int fs_core_start(struct fs *fs, struct vault *v, const struct fs_options *o);
void fs_core_stop(struct fs *fs);
/* Inodes left with nlink 0 by a crash while open: delete them now (only
 * when this is the vault's sole user: the caller decides). */
void fs_core_delete_orphans(struct fs *fs);

/* ---- audit and refusals ---- */

/* End a metadata operation begun with meta_begin under meta_lock: append
 * its audit event inside the transaction, commit (or roll back if r < 0),
 * drop meta_lock, then wait for the event to be durable. */
int fs_meta_op_end_detail(struct fs *fs, const struct fs_caller *who, const char *op,
                          const char *path, uint64_t bytes, int r, const struct audit_detail *d);
int fs_meta_op_end(struct fs *fs, const struct fs_caller *who, const char *op, const char *path,
                   uint64_t bytes, int r);
/* Audit a refused operation on ino (+ name); returns why, or -EIO if even
 * that cannot be audited.  dest: a rename's destination path. */
int fs_refuse(struct fs *fs, const struct fs_caller *who, const char *op, uint64_t ino,
              const char *name, int why, const char *dest);
int fs_deny(struct fs *fs, const struct fs_caller *who, const char *op, uint64_t ino,
            const char *name);
/* Audit op on ino (its path and file id); 0, or -EIO. */
int fs_audit_ino(struct fs *fs, const struct fs_caller *who, const char *op, uint64_t ino,
                 int result, uint64_t bytes);
/* A change at the top of the mount other than a dataadmin's mkdir:
 * logged (rate-limited), audited as denied, -EACCES. */
int fs_root_deny(struct fs *fs, const struct fs_caller *who, const char *op, const char *name,
                 const char *dest);
/* The errno the kernel is told for r (< 0): the ones an application
 * expects of a filesystem as they are, anything else EIO. */
int fs_errno_out(int r);
/* This mount may create contract folders (writable, dataadmin). */
int fs_may_create_folders(const struct fs *fs);

/* ---- folders and rights ---- */

/* The folder ino belongs to (*vf NULL for the virtual root), with the
 * rights in need (RIGHT_*) checked: -EACCES (audited), -EROFS (audited),
 * -ENOENT, -EIO. */
int fs_folder_check_dest(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint32_t need,
                         const char *op, const char *name, const char *dest,
                         struct vault_folder **vf);
int fs_folder_check(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint32_t need,
                    const char *op, const char *name, struct vault_folder **vf);

/* ---- names (folder keys, key-version fallback) ---- */

#define FS_KEYS_MAX 64

/* An encrypted name as stored in a directory entry. */
struct fs_name {
    uint8_t b[NAME_MAX_ENC + 16];
    size_t len;
};

/* The folder's keys for new data (NULL if this account lacks them). */
const struct folder_keys *fs_cur_keys(struct fs *fs, const struct vault_folder *vf);
/* Key versions to try for reading, the current one first; how many. */
size_t fs_keys_to_try(struct fs *fs, const struct vault_folder *vf,
                      const struct folder_keys **out, size_t cap);
/* -EINVAL (empty), -ENAMETOOLONG or 0. */
int fs_name_check(const char *name);
/* name encrypted under key version k for directory parent. */
int fs_name_enc(const struct folder_keys *k, uint64_t parent, const char *name, struct fs_name *e);
/* Decrypt a stored name under any held key version of vf (and a newer one
 * the signed state names, fs_keys_catch_up_locked); -EBADMSG.  meta_lock
 * held. */
int fs_name_dec_any(struct fs *fs, const struct vault_folder *vf, uint64_t parent,
                    const uint8_t *in, size_t inlen, char *out, size_t *outlen);
/* Look name up in dir parent of folder vf under any held key version
 * (meta_lock held).  *found gets the encrypted form that matched, *type
 * the child's type bits.  The entry's binding must verify under the key
 * version that encrypted its name, else -EIO (tampering, reported). */
int fs_dir_lookup_locked(struct fs *fs, const struct fs_caller *who, const struct vault_folder *vf,
                         uint64_t parent, const char *name, uint64_t *ino, struct fs_name *found,
                         uint32_t *type);
/* fs_dir_lookup_locked when the caller already holds name's encryption
 * under key k (known), which is then not made again. */
int fs_dir_lookup_known_locked(struct fs *fs, const struct fs_caller *who,
                               const struct vault_folder *vf, uint64_t parent, const char *name,
                               const struct folder_keys *k, const struct fs_name *known,
                               uint64_t *ino, struct fs_name *found, uint32_t *type);
/* Add an entry for ino under name, bound to ino and its type with the key
 * version that encrypted the name (meta_lock held, in a transaction). */
int fs_dirent_add_bound(struct fs *fs, const struct folder_keys *k, uint64_t parent,
                        const struct fs_name *e, uint64_t ino, uint32_t mode);

/* ---- small sealed values (symlink targets, xattrs) ---- */

/* Open a value sealed for (label, ino, extra) under any held key version;
 * seal one under the current version (-EACCES without it). */
int fs_sealed_open(struct fs *fs, const struct vault_folder *vf, const char *label, uint64_t ino,
                   const char *extra, const uint8_t *in, size_t inlen, uint8_t **out,
                   size_t *outlen);
/* fs_sealed_open, and if nothing held opens it, once more after picking up
 * a newer folder key version (fs_keys_catch_up_locked); meta_lock not held. */
int fs_sealed_open_fresh(struct fs *fs, const struct vault_folder *vf, const char *label,
                         uint64_t ino, const char *extra, const uint8_t *in, size_t inlen,
                         uint8_t **out, size_t *outlen);
int fs_sealed_seal(struct fs *fs, const struct vault_folder *vf, const char *label, uint64_t ino,
                   const char *extra, const void *pt, size_t n, uint8_t **out, size_t *outlen);

/* ---- creating nodes ---- */

struct fs_new_node {
    uint32_t mode;
    uint64_t rdev;
    const char *link_target;   /* symlinks */
    uint8_t *dek;              /* regular files: secmem DEK_LEN, filled */
    const char *op;
    unsigned row_gen;          /* out: the row's slot count once written (fs_row_remember) */
};
/* The inode row of a new node of (uid, gid) in folder vf under directory
 * dir: a regular file's DEK (wrapped under the folder's current key) and
 * first commitment, a symlink's sealed target (meta_lock held, in a
 * transaction; the caller adds the entry). */
int fs_node_insert(struct fs *fs, uid_t uid, gid_t gid, const struct vault_folder *vf,
                   const struct meta_inode *dir, struct fs_new_node *nn, struct meta_inode *mi);

/* ---- attributes ---- */

void fs_ns_to_ts(int64_t ns, struct timespec *ts);
/* Attributes from an inode row (st_blocks from its chunks; no meta_lock). */
void fs_stat_from_meta(struct fs *fs, const struct meta_inode *mi, struct stat *st);
/* Attributes of ino (the virtual root included) with the in-memory size
 * and mtime of open files. */
int fs_getattr(struct fs *fs, uint64_t ino, struct stat *st);
/* The stored row of ino (takes meta_lock): 0, -ENOENT or -EIO. */
int fs_inode_row(struct fs *fs, uint64_t ino, struct meta_inode *mi);

/* ---- namespace: lookup, directories, statfs ---- */

/* Look name up in parent: the child's inode row, its binding to the entry
 * checked (type, folder: -EIO, reported as tampering).  A lookup at the
 * root (a contract folder) is audited.  -ENOENT, -EACCES, -ENAMETOOLONG,
 * -EINVAL, -EIO. */
int fs_lookup(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
              struct meta_inode *mi);
/* Open directory ino for listing: rights checked, the listing audited. */
int fs_opendir(struct fs *fs, const struct fs_caller *who, uint64_t ino);
/* Offsets of a listing: 1 and 2 after "." and "..", then the entry's
 * cookie + FS_DIRENT_OFF_BASE. */
#define FS_DIRENT_OFF_BASE 2
/* One decrypted entry; return nonzero to stop (the entry was not taken). */
typedef int (*fs_dirent_fn)(void *arg, const char *name, uint64_t ino, uint32_t mode,
                            uint64_t next_off);
/* List directory ino from offset off ("." and ".." included); entries
 * whose name does not decrypt are skipped with a message.  0, or -errno
 * (-EIO if the listing failed: the caller may still use what it got). */
int fs_readdir(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint64_t off,
               fs_dirent_fn fn, void *arg);
/* READDIRPLUS: the same listing with the attributes of each entry, so the
 * kernel needs no LOOKUP for it.  room(arg, name) reserves space for one
 * entry (nonzero: full, stop); add(arg, ...) then emits it, mi NULL when
 * it goes without attributes: ".", "..", every entry at the root (looking
 * a folder up is audited) and an entry that fails a check a lookup makes
 * (its binding, its row's type and folder), so that the kernel's LOOKUP
 * reports it.  0 or -errno as fs_readdir. */
struct fs_plus_sink {
    int (*room)(void *arg, const char *name);
    void (*add)(void *arg, const char *name, uint64_t ino, uint32_t mode, uint64_t next_off,
                const struct meta_inode *mi);
    void *arg;
};
int fs_readdirplus(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint64_t off,
                   const struct fs_plus_sink *sink);
/* What df shows (docs/design-fuse.md, "statfs"). */
int fs_statfs(struct fs *fs, struct statvfs *sv);

#endif
