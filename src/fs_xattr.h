/* Extended attributes of the filesystem core, without FUSE: only "user."
 * names (others -ENOTSUP), the name encrypted under the folder's current
 * key version with the inode as associated data, the value sealed; a row
 * under an older key version (before a rekey) is found, and replaced by
 * a set.  Rights checked and audited as fs_namespace.h says; each returns
 * 0 or -errno (-ENODATA: no such attribute). */
#ifndef PACTFS_FS_XATTR_H
#define PACTFS_FS_XATTR_H

#include <stddef.h>
#include <stdint.h>

#include "fs_core.h"

/* flags: XATTR_CREATE (-EEXIST if set), XATTR_REPLACE (-ENODATA if not). */
int fs_setxattr(struct fs *fs, const struct fs_caller *who, uint64_t ino, const char *name,
                const void *value, size_t size, int flags);
/* The value, malloc'd in *value (NULL when empty), its length in *len. */
int fs_getxattr(struct fs *fs, const struct fs_caller *who, uint64_t ino, const char *name,
                uint8_t **value, size_t *len);
/* The names, each ending in NUL, malloc'd in *list, total length *len. */
int fs_listxattr(struct fs *fs, const struct fs_caller *who, uint64_t ino, char **list,
                 size_t *len);
int fs_removexattr(struct fs *fs, const struct fs_caller *who, uint64_t ino, const char *name);

#endif
