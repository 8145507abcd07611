/* Advisory locks shared across workstations (fs_locks.c): the FUSE
 * getlk/setlk/flock operations over the metadata store's locks table, and
 * their release at close (flush) and release.  Only on PostgreSQL vaults
 * (a session per mount); elsewhere the kernel keeps locks itself. */
#ifndef PACTFS_FS_LOCKS_H
#define PACTFS_FS_LOCKS_H

#include <fcntl.h>
#include <fuse_lowlevel.h>

#include "fs_internal.h"

/* 1 when this mount keeps advisory locks in the store (op_init asks for
 * the kernel's lock requests then). */
int fs_locks_shared(const struct fs *fs);
void fs_locks_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
                    struct flock *fl);
void fs_locks_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
                    struct flock *fl, int sleep);
void fs_locks_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op);
/* close: the POSIX locks of fi->lock_owner on ino go. */
void fs_locks_flush(struct fs *fs, fuse_ino_t ino, const struct fuse_file_info *fi);
/* the last close of an open file: its flock and OFD locks go. */
void fs_locks_release(struct fs *fs, fuse_ino_t ino, const struct fuse_file_info *fi);

#endif
