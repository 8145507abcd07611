/* Open files of the filesystem core, without FUSE: open and create with
 * their rights, O_TRUNC and audit, the handle an open gives (what it
 * read and wrote, for the audit summary at close), reads and writes
 * through it with the rights re-checked (a folder withdrawn while the file
 * is open), flush, fsync and release.  The trash's .trashinfo files are
 * handles too (no inode: memory only, fs_trash.h).
 *
 * Each returns 0 or -errno, the way fs_namespace.h says; fs_ops.c puts
 * the handle in the kernel's file handle and replies. */
#ifndef PACTFS_FS_FILE_H
#define PACTFS_FS_FILE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "fs_core.h"

/* An open file handle: which inode, what it did (for the audit summary). */
struct fs_handle {
    struct fs_inode *in;       /* NULL: a virtual file of the trash (vino) */
    uint64_t vino;
    int writable;
    int counted;               /* counted as a writer (fs_data_writer_add) */
    int summarized;            /* a read/write summary was audited */
    uint64_t bytes_read, bytes_written;
    uint64_t audited_read, audited_written;
    pthread_mutex_t lock;
    struct fs_handle *prev, *next;   /* fs.handles */
};

/* open(2) flags that write: not O_RDONLY, or O_TRUNC. */
int fs_open_writable(int flags);

/* Open ino with open(2) flags: a regular file (rights, its data attached
 * and revalidated, O_TRUNC, audited open) or a .trashinfo of the trash.
 * *hp holds an open reference on the inode until fs_handle_close. */
int fs_open(struct fs *fs, const struct fs_caller *who, uint64_t ino, int flags,
            struct fs_handle **hp);
/* create(2) name in parent (mode, open flags): a new regular file, or,
 * without O_EXCL, the one another mount made since the kernel's lookup;
 * in the trash's info/ a pending .trashinfo.  *st gets its attributes,
 * *hp the handle; a regular file's handle holds an open and a lookup
 * reference (the kernel's entry). */
int fs_create(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
              uint32_t mode, int flags, struct stat *st, struct fs_handle **hp);

/* Read or write through h at off; the folder's rights are checked again
 * (-EACCES audited) and the bytes counted for the summary.  A failed read
 * is -EIO (audited).  A write through a read-only handle is -EBADF. */
int fs_handle_read(struct fs *fs, const struct fs_caller *who, struct fs_handle *h,
                   uint64_t ino, uint64_t off, size_t size, uint8_t *buf, size_t *got);
int fs_handle_write(struct fs *fs, const struct fs_caller *who, struct fs_handle *h,
                    uint64_t ino, uint64_t off, const void *buf, size_t size);
/* close(2): start the write-back (or, with another mount live or an
 * endpoint in trouble, commit before returning) and audit the handle's
 * read/write summary; -EIO if either failed. */
int fs_handle_flush(struct fs *fs, const struct fs_caller *who, struct fs_handle *h,
                    uint64_t ino);
int fs_handle_fsync(struct fs *fs, struct fs_handle *h);
/* The last close: hand what is dirty to the write-back (fs_data_release:
 * the batch committer, or a commit of its own; a failure is logged) and
 * audit what the summary has not said yet.  Then fs_handle_close. */
void fs_handle_finish(struct fs *fs, const struct fs_caller *who, struct fs_handle *h,
                      uint64_t ino);
/* Drop the handle and its open reference. */
void fs_handle_close(struct fs *fs, struct fs_handle *h);
/* At unmount: close the handles whose release the kernel dropped. */
void fs_handles_close_all(struct fs *fs);

#endif
