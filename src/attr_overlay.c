/* Deferred attribute changes: which fields, and applying them (see
 * attr_overlay.h). */
#include "attr_overlay.h"

void fs_attr_overlay_take(struct fs_attr_overlay *o, const struct meta_inode *mi, unsigned set)
{
    if (set & FS_OV_MODE)
        o->mode = mi->mode & 07777;
    if (set & FS_OV_UID)
        o->uid = mi->uid;
    if (set & FS_OV_GID)
        o->gid = mi->gid;
    if (set & FS_OV_ATIME)
        o->atime_ns = mi->atime_ns;
    o->set |= set & (FS_OV_MODE | FS_OV_UID | FS_OV_GID | FS_OV_ATIME);
}

void fs_attr_overlay_apply(const struct fs_attr_overlay *o, struct meta_inode *mi)
{
    if (o->set & FS_OV_MODE)
        mi->mode = (mi->mode & S_IFMT) | (o->mode & 07777);
    if (o->set & FS_OV_UID)
        mi->uid = o->uid;
    if (o->set & FS_OV_GID)
        mi->gid = o->gid;
    if (o->set & FS_OV_ATIME)
        mi->atime_ns = o->atime_ns;
}

void fs_attr_overlay_stat(const struct fs_attr_overlay *o, struct stat *st)
{
    if (o->set & FS_OV_MODE)
        st->st_mode = (st->st_mode & S_IFMT) | (o->mode & 07777);
    if (o->set & FS_OV_UID)
        st->st_uid = o->uid;
    if (o->set & FS_OV_GID)
        st->st_gid = o->gid;
    if (o->set & FS_OV_ATIME) {
        /* floored: a time before 1970 keeps 0 <= tv_nsec < 1e9 */
        int64_t sec = o->atime_ns / 1000000000, nsec = o->atime_ns % 1000000000;
        if (nsec < 0) {
            nsec += 1000000000;
            sec--;
        }
        st->st_atim.tv_sec = (time_t)sec;
        st->st_atim.tv_nsec = (long)nsec;
    }
}
