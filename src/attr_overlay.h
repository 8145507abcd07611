/* Attribute changes kept in memory until a file's first commit writes
 * them (fs_data.c, "deferred attributes"): which fields, and their values.
 * Pure functions; the caller holds the inode's lock. */
#ifndef PACTFS_ATTR_OVERLAY_H
#define PACTFS_ATTR_OVERLAY_H

#include <stdint.h>
#include <sys/stat.h>

#include "meta.h"

#define FS_OV_MODE  0x01u   /* permission bits (the type never changes) */
#define FS_OV_UID   0x02u
#define FS_OV_GID   0x04u
#define FS_OV_ATIME 0x08u
#define FS_OV_MTIME 0x10u   /* kept by the file's mtime, not here */
#define FS_OV_CTIME 0x20u   /* kept by the file's ctime, not here */

struct fs_attr_overlay {
    unsigned set;           /* FS_OV_* fields held; 0: nothing pending */
    uint32_t mode, uid, gid;
    int64_t atime_ns;
};

/* Hold the fields in set (FS_OV_MODE, _UID, _GID, _ATIME) from mi. */
void fs_attr_overlay_take(struct fs_attr_overlay *o, const struct meta_inode *mi, unsigned set);
/* The held fields over a row read from the store. */
void fs_attr_overlay_apply(const struct fs_attr_overlay *o, struct meta_inode *mi);
/* The held fields over a stat built from such a row. */
void fs_attr_overlay_stat(const struct fs_attr_overlay *o, struct stat *st);

#endif
