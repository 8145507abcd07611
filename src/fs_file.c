/* Open files of the filesystem core (fs_file.h): open, create, the
 * handles, reads and writes through them, flush, fsync and release. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "fs_file.h"
#include "fs_namespace.h"
#include "fs_trash.h"
#include "log.h"
#include "secmem.h"

/* ---- handles ---- */

static struct fs_handle *handle_new(struct fs *fs, struct fs_inode *in, int writable)
{
    struct fs_handle *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->in = in;
    h->writable = writable;
    if (in && writable) {
        fs_data_writer_add(in, 1);
        h->counted = 1;
    }
    pthread_mutex_init(&h->lock, NULL);
    pthread_mutex_lock(&fs->handles_lock);
    h->next = fs->handles;
    if (fs->handles)
        fs->handles->prev = h;
    fs->handles = h;
    pthread_mutex_unlock(&fs->handles_lock);
    return h;
}

static void handle_free(struct fs *fs, struct fs_handle *h)
{
    pthread_mutex_lock(&fs->handles_lock);
    if (h->prev) h->prev->next = h->next; else fs->handles = h->next;
    if (h->next) h->next->prev = h->prev;
    pthread_mutex_unlock(&fs->handles_lock);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

/* Before the release's commit is queued: see fs_data_writer_add. */
static void handle_uncount(struct fs_handle *h)
{
    if (h->counted) {
        fs_data_writer_add(h->in, -1);
        h->counted = 0;
    }
}

void fs_handle_close(struct fs *fs, struct fs_handle *h)
{
    if (h->in)
        handle_uncount(h);
    if (h->in)
        fs_inode_put(fs, h->in, FS_REF_OPEN, 1);
    handle_free(fs, h);
}

/* At unmount the kernel may drop releases still queued: close those
 * handles here so their inodes can be retired. */
void fs_handles_close_all(struct fs *fs)
{
    while (fs->handles)
        fs_handle_close(fs, fs->handles);
}

int fs_open_writable(int flags)
{
    return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

/* ---- open and create ---- */

/* A .trashinfo of the trash (pending: writable; generated: read-only). */
static int trash_open(struct fs *fs, uint64_t ino, int flags, struct fs_handle **hp)
{
    struct stat st;
    int writable = fs_open_writable(flags);
    int r = fs_trash_getattr(fs, ino, &st);
    if (r == 0 && S_ISDIR(st.st_mode))
        r = -EISDIR;
    if (r == 0 && writable && !(ino & FS_TRASH_PEND_BIT))
        r = -EACCES;
    if (r == 0 && (flags & O_TRUNC))
        r = fs_trash_file_truncate(fs, ino, 0);
    struct fs_handle *h = r == 0 ? handle_new(fs, NULL, writable) : NULL;
    if (r == 0 && !h)
        r = -ENOMEM;
    if (r < 0)
        return r;
    h->vino = ino;
    *hp = h;
    return 0;
}

/* Open regular file ino for who (rights, data state, O_TRUNC, audit): a
 * handle holding an open reference, or -errno. */
static int open_file(struct fs *fs, const struct fs_caller *who, uint64_t ino, int flags,
                     struct fs_handle **hp)
{
    int writable = fs_open_writable(flags);
    struct vault_folder *vf;
    int r = fs_folder_check(fs, who, ino, RIGHT_READ | (writable ? RIGHT_WRITE : 0), "open",
                            NULL, &vf);
    if (r == 0 && !vf)
        r = -EISDIR;
    struct fs_inode *in = NULL;
    if (r == 0) {
        in = fs_inode_get(fs, ino, vf->id, S_IFREG, FS_REF_OPEN);
        r = in ? fs_data_attach(fs, in, NULL) : -ENOMEM;
    }
    if (r == 0 && !fs_alone(fs))
        r = fs_data_revalidate(fs, in);
    if (r == 0 && !(flags & O_TRUNC) && (flags & O_ACCMODE) != O_WRONLY)
        fs_data_prefetch(fs, in);
    char *path = fs_path(fs, ino, NULL);
    struct audit_detail d = { .file = ino, .set = AUDIT_SET_SIZE };
    if (r == 0 && (flags & O_TRUNC) && fs_data_size(in) != 0) {
        r = fs_data_truncate(fs, in, 0);
        if (r == 0)
            r = fs_audit_detail(fs, who, "truncate", path, 0, 0, &d);
    }
    d.set = 0;
    if (r == 0)
        r = fs_audit_detail(fs, who, "open", path, 0, 0, &d);
    free(path);
    struct fs_handle *h = NULL;
    if (r == 0) {
        h = handle_new(fs, in, writable);
        r = h ? 0 : -ENOMEM;
    }
    if (r < 0) {
        if (in)
            fs_inode_put(fs, in, FS_REF_OPEN, 1);
        return r;
    }
    *hp = h;
    return 0;
}

int fs_open(struct fs *fs, const struct fs_caller *who, uint64_t ino, int flags,
            struct fs_handle **hp)
{
    if (fs_is_virtual(ino))
        return trash_open(fs, ino, flags, hp);
    return open_file(fs, who, ino, flags, hp);
}

/* A .trashinfo written into the trash's info/ before the rename that
 * trashes its entry (fs_trash.h): memory only. */
static int trash_info_create(struct fs *fs, const struct fs_caller *who, const char *name,
                             struct stat *st, struct fs_handle **hp)
{
    int r = fs->opt.read_only ? -EROFS : fs_trash_pend_create(fs, who, name, st);
    struct fs_handle *h = r == 0 ? handle_new(fs, NULL, 1) : NULL;
    if (r == 0 && !h) {
        fs_trash_pend_unlink(fs, name);
        r = -ENOMEM;
    }
    if (r < 0)
        return r == -EEXIST || r == -EROFS || r == -ENAMETOOLONG || r == -ENOSPC ? r : -EIO;
    h->vino = st->st_ino;
    *hp = h;
    return 0;
}

/* create(O_CREAT without O_EXCL) lost a race: another mount (or another
 * workstation) made the name since the kernel's lookup.  open(2) must then
 * open that file, as on a local filesystem. */
static int create_found_existing(struct fs *fs, const struct fs_caller *who, uint64_t parent,
                                 const char *name, int flags, struct stat *st,
                                 struct fs_handle **hp)
{
    struct meta_inode mi;
    struct fs_handle *h = NULL;
    int r = fs_lookup(fs, who, parent, name, &mi);
    if (r == 0 && !S_ISREG(mi.mode))
        r = S_ISDIR(mi.mode) ? -EISDIR : -EEXIST;
    if (r == 0)
        r = open_file(fs, who, mi.ino, flags, &h);
    struct fs_inode *lk = r == 0 ? fs_inode_get(fs, mi.ino, mi.folder_id, mi.mode,
                                                FS_REF_LOOKUP) : NULL;
    if (r == 0 && !lk)
        r = -ENOMEM;
    if (r < 0) {
        if (h)
            fs_handle_close(fs, h);
        return -fs_errno_out(r);
    }
    fs_inode_set_name(fs, mi.ino, parent, name);
    fs_getattr(fs, mi.ino, st);
    *hp = h;
    return 0;
}

int fs_create(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
              uint32_t mode, int flags, struct stat *st, struct fs_handle **hp)
{
    if (parent == FS_TRASH_INFO_INO)
        return trash_info_create(fs, who, name, st, hp);
    struct fs_new_node nn = { .mode = S_IFREG | (mode & 07777), .op = "create" };
    uint8_t *dek = secmem_alloc(DEK_LEN);
    if (!dek)
        return -ENOMEM;
    nn.dek = dek;
    struct meta_inode mi;
    int r = fs_make_node(fs, who, parent, name, &nn, &mi);
    if (r == -EEXIST && !(flags & O_EXCL)) {
        secmem_free(dek, DEK_LEN);
        return create_found_existing(fs, who, parent, name, flags, st, hp);
    }
    struct fs_inode *in = NULL;
    if (r == 0) {
        in = fs_inode_get(fs, mi.ino, mi.folder_id, mi.mode, FS_REF_LOOKUP);
        r = in ? fs_data_attach(fs, in, dek) : -ENOMEM;
        if (r == 0)
            fs_row_remember(fs, mi.ino, &mi, nn.row_gen);   /* tar's getattr and setattrs */
    }
    secmem_free(dek, DEK_LEN);
    struct fs_handle *h = NULL;
    if (r == 0) {
        h = handle_new(fs, in, 1);
        r = h ? 0 : -ENOMEM;
    }
    if (r < 0) {
        if (in)
            fs_inode_put(fs, in, FS_REF_LOOKUP, 1);
        return r;
    }
    fs_inode_set_name(fs, mi.ino, parent, name);
    fs_inode_get(fs, mi.ino, mi.folder_id, mi.mode, FS_REF_OPEN);
    fs_stat_from_meta(fs, &mi, st);
    *hp = h;
    return 0;
}

/* ---- read, write ---- */

int fs_handle_read(struct fs *fs, const struct fs_caller *who, struct fs_handle *h,
                   uint64_t ino, uint64_t off, size_t size, uint8_t *buf, size_t *got)
{
    *got = 0;
    int r = h->in && !(fs_folder_rights(fs, h->in->folder_id) & RIGHT_READ) ? -EACCES
          : h->in ? fs_data_read(fs, h->in, off, size, buf, got)
                  : fs_trash_file_read(fs, h->vino, off, size, buf, got);
    if (r == -EACCES) {   /* access withdrawn while the file was open (fs_access.c) */
        fs_audit_ino(fs, who, "read", ino, -EACCES, 0);
        return -EACCES;
    }
    if (r < 0) {
        /* a failed read is an error with its errno, never "read ok" */
        fs_audit_ino(fs, who, "read", ino, -EIO, 0);
        return -EIO;
    }
    pthread_mutex_lock(&h->lock);
    h->bytes_read += *got;
    pthread_mutex_unlock(&h->lock);
    return 0;
}

int fs_handle_write(struct fs *fs, const struct fs_caller *who, struct fs_handle *h,
                    uint64_t ino, uint64_t off, const void *buf, size_t size)
{
    if (!h->writable)
        return -EBADF;
    int r = h->in && !(fs_folder_rights(fs, h->in->folder_id) & RIGHT_WRITE) ? -EACCES
          : h->in ? fs_data_write(fs, h->in, off, buf, size)
                  : fs_trash_file_write(fs, h->vino, off, buf, size);
    if (r == -EACCES)
        fs_audit_ino(fs, who, "write", ino, -EACCES, 0);
    if (r < 0)
        return r;
    pthread_mutex_lock(&h->lock);
    h->bytes_written += size;
    pthread_mutex_unlock(&h->lock);
    return 0;
}

/* ---- close ---- */

/* The read/write summary of a handle: at close (flush), so it is in the
 * audit trail in the order the application acted; again at release only
 * for bytes moved after the last close of a duplicate. */
static int handle_summary(struct fs *fs, const struct fs_caller *who, struct fs_handle *h,
                          uint64_t ino)
{
    pthread_mutex_lock(&h->lock);
    uint64_t dw = h->bytes_written - h->audited_written;
    uint64_t dr = h->bytes_read - h->audited_read;
    int first = !h->summarized;
    h->audited_written = h->bytes_written;
    h->audited_read = h->bytes_read;
    h->summarized = 1;
    pthread_mutex_unlock(&h->lock);
    int r = 0;
    if (!dw && !dr && !first)
        return 0;
    if (h->writable && (dw || first))
        r = fs_audit_ino(fs, who, "write", ino, 0, dw);
    if (r == 0 && (dr || (first && !h->writable)))
        r = fs_audit_ino(fs, who, "read", ino, 0, dr);
    return r;
}

int fs_handle_flush(struct fs *fs, const struct fs_caller *who, struct fs_handle *h,
                    uint64_t ino)
{
    if (!h->in)   /* a .trashinfo of the trash: memory only */
        return 0;
    /* close() waits for this: start the write-back and return; release
     * (which the kernel sends without making close wait) completes it.
     * With another mount of the vault live, close commits before it
     * returns, so an open there afterwards sees the data (close-to-open);
     * with an endpoint failing, so that it reports what could not be
     * stored (the data stays and is retried). */
    int r = !h->writable ? 0
          : fs_alone(fs) && !fs_data_in_trouble(fs) ? fs_data_writeback_start(fs, h->in)
          : fs_data_flush(fs, h->in);
    /* the folded event of attribute changes kept for the file's commit
     * (fs_data_defer_fold), in the order the application acted */
    int a = h->writable ? fs_data_fold_emit(fs, h->in) : 0;
    if (handle_summary(fs, who, h, ino) < 0)
        a = -EIO;
    return r < 0 || a < 0 ? -EIO : 0;
}

int fs_handle_fsync(struct fs *fs, struct fs_handle *h)
{
    int r = h->in ? fs_data_fsync(fs, h->in) : 0;
    return r < 0 ? -EIO : 0;
}

void fs_handle_finish(struct fs *fs, const struct fs_caller *who, struct fs_handle *h,
                      uint64_t ino)
{
    if (!h->in)
        return;
    handle_uncount(h);
    if (h->writable && fs_data_fold_emit(fs, h->in) < 0)
        log_error("cannot audit the attribute changes of inode %llu", (unsigned long long)ino);
    if (h->writable && fs_data_release(fs, h->in) < 0)
        log_error("write-back failed at close of inode %llu", (unsigned long long)ino);
    handle_summary(fs, who, h, ino);
}
