#include "config.h"

/* Conflict copies (docs/design-fuse.md, "Several workstations"): two
 * writers of one file, on two workstations or two mounts, each began from
 * the same committed version; the first commit wins the file, and the
 * second, finding a newer generation than the one its changes build on
 * (fs_data.c, commit_record), never mixes its chunks into it.  Its version
 * is saved here as a new file in the same directory,
 *
 *     NAME (conflict ACCOUNT YYYY-MM-DD HHMM).EXT
 *
 * (local time of the writing workstation; " 2", " 3"... if taken), created
 * like any file of that folder: a fresh DEK wrapped under the folder's
 * current key, the name encrypted and bound to its entry, the content
 * written through the normal data path.  One audit event "conflict" names
 * the file and the copy (dest), in the transaction that creates it.  Then
 * fs_data.c forgets this mount's version of the file and takes the stored
 * one: nobody's edit is lost, nobody's is silently replaced.
 */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope.h"
#include "error.h"
#include "fs_core.h"
#include "log.h"
#include "secmem.h"

#define COPY_NAME_TRIES 20
#define COPY_STEM_MAX 160   /* bytes of the original name kept before " (conflict" */

/* "stem (conflict ACCOUNT date[ n]).ext" into out. */
static void copy_name(const char *orig, const char *account, const char *when, unsigned n,
                      char *out, size_t cap)
{
    const char *dot = strrchr(orig, '.');
    if (!dot || dot == orig || strlen(dot) > 16)
        dot = orig + strlen(orig);   /* no extension (or a dot file) */
    size_t stem = (size_t)(dot - orig);
    if (stem > COPY_STEM_MAX) {
        stem = COPY_STEM_MAX;
        while (stem > 0 && ((unsigned char)orig[stem] & 0xc0) == 0x80)
            stem--;   /* not inside a UTF-8 sequence */
    }
    char num[16] = "";
    if (n > 1)
        snprintf(num, sizeof num, " %u", n);
    snprintf(out, cap, "%.*s (conflict %s %s%s)%s", (int)stem, orig, account, when, num, dot);
}

/* A free name for the copy in parent (meta_lock held). */
static int pick_name(struct fs *fs, const struct vault_folder *vf, uint64_t parent,
                     const char *orig, char *out, size_t cap)
{
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H%M", &tm);
    for (unsigned n = 1; n <= COPY_NAME_TRIES; n++) {
        uint64_t ino;
        copy_name(orig, fs->v->account.name, when, n, out, cap);
        if (fs_name_check(out) < 0)
            return -ENAMETOOLONG;
        int r = fs_dir_lookup_locked(fs, NULL, vf, parent, out, &ino, NULL, NULL);
        if (r == -ENOENT)
            return 0;
        if (r < 0)
            return r;
    }
    return -EEXIST;
}

/* Create the empty copy in parent (its entry, inode row and DEK), audited
 * as "conflict" of path with the copy as dest. */
static int create_copy(struct fs *fs, const struct meta_inode *orig, uint64_t parent,
                       const char *orig_name, const char *path, uint64_t size, uint8_t *dek,
                       struct meta_inode *mi, char *name, size_t cap, char **copy_path)
{
    struct vault_folder *vf;
    int r = fs_folder_check(fs, NULL, parent, RIGHT_READ | RIGHT_WRITE, "conflict", orig_name,
                            &vf);
    if (r < 0)
        return r;
    const struct folder_keys *k = fs_cur_keys(fs, vf);
    if (!k)
        return -EACCES;
    struct meta *m = fs->v->meta;
    struct meta_inode dir;
    struct fs_name en;
    struct fs_new_node nn = { .mode = S_IFREG | (orig->mode & 07777), .dek = dek,
                              .op = "conflict" };
    pthread_mutex_lock(&fs->meta_lock);
    r = meta_begin(m);
    if (r == 0)
        r = meta_inode_get(m, parent, &dir);
    if (r == 0 && !S_ISDIR(dir.mode))
        r = -ENOTDIR;
    if (r == 0)
        r = pick_name(fs, vf, parent, orig_name, name, cap);
    if (r == 0)
        r = fs_name_enc(k, parent, name, &en);
    if (r == 0)
        r = fs_node_insert(fs, orig->uid, orig->gid, vf, &dir, &nn, mi);
    if (r == 0)
        r = fs_dirent_add_bound(fs, k, parent, &en, mi->ino, mi->mode);
    if (r == 0) {
        dir.mtime_ns = dir.ctime_ns = mi->ctime_ns;
        r = meta_inode_update(m, &dir);
    }
    *copy_path = r == 0 ? fs_path(fs, parent, name) : NULL;
    struct audit_detail d = { .file = orig->ino, .dest = *copy_path };
    if (r < 0) {
        meta_rollback(m);
        pthread_mutex_unlock(&fs->meta_lock);
        return r;
    }
    return fs_meta_op_end_detail(fs, NULL, "conflict", path, size, r, &d);
}

/* This mount's version of in into the new file cin, a chunk at a time. */
static int copy_data(struct fs *fs, struct fs_inode *in, struct fs_inode *cin, uint64_t size)
{
    size_t cs = fs->chunk_size;
    uint8_t *buf = secmem_plain_alloc(cs);
    if (!buf)
        return pfs_err(-ENOMEM, "out of memory");
    int r = 0;
    for (uint64_t off = 0; r == 0 && off < size; off += cs) {
        size_t got = 0, want = size - off < cs ? (size_t)(size - off) : cs;
        r = fs_data_read(fs, in, off, want, buf, &got);
        if (r == 0 && got < want)   /* shrunk meanwhile: zeros, the size stays */
            memset(buf + got, 0, want - got);
        if (r == 0)
            r = fs_data_write(fs, cin, off, buf, want);
    }
    secmem_plain_free(buf);
    if (r == 0)
        r = fs_data_flush(fs, cin);
    return r;
}

int fs_conflict_copy(struct fs *fs, struct fs_inode *in)
{
    char orig_name[NAME_MAX_PLAIN + 1], name[NAME_MAX_PLAIN + 1];
    uint64_t parent = 0;
    struct meta_inode orig, mi;
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_inode_get(fs->v->meta, in->ino, &orig);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r < 0)
        return pfs_err(-EIO, "inode %" PRIu64 ": %s", in->ino, pfs_err_msg());
    if (fs_inode_name(fs, in->ino, &parent, orig_name, sizeof orig_name) < 0) {
        /* never looked up by name here: beside the folder's top */
        struct vault_folder *vf = vault_folder_by_id(fs->v, orig.folder_id);
        if (!vf)
            return pfs_err(-EIO, "inode %" PRIu64 ": its folder is not held", in->ino);
        parent = vf->root_ino;
        snprintf(orig_name, sizeof orig_name, "inode %" PRIu64, in->ino);
    }
    int64_t size = fs_data_size(in);
    uint8_t *dek = secmem_alloc(DEK_LEN);
    if (size < 0 || !dek) {
        secmem_free(dek, DEK_LEN);
        return pfs_err(-ENOMEM, "out of memory");
    }
    char *path = fs_path(fs, in->ino, NULL), *copy_path = NULL;
    r = create_copy(fs, &orig, parent, orig_name, path, (uint64_t)size, dek, &mi, name,
                    sizeof name, &copy_path);
    if (r == -ENOENT || r == -ENOTDIR) {
        /* the directory went meanwhile (another workstation): the folder's top */
        struct vault_folder *vf = vault_folder_by_id(fs->v, orig.folder_id);
        free(copy_path);
        copy_path = NULL;
        r = vf ? create_copy(fs, &orig, vf->root_ino, orig_name, path, (uint64_t)size, dek,
                             &mi, name, sizeof name, &copy_path) : r;
        if (vf)
            parent = vf->root_ino;
    }
    struct fs_inode *cin = NULL;
    if (r == 0) {
        cin = fs_inode_get(fs, mi.ino, mi.folder_id, mi.mode, FS_REF_OP);
        r = cin ? fs_data_attach(fs, cin, dek) : -ENOMEM;
    }
    secmem_free(dek, DEK_LEN);
    if (r == 0) {
        fs_inode_set_name(fs, mi.ino, parent, name);
        r = copy_data(fs, in, cin, (uint64_t)size);
    }
    if (cin)
        fs_inode_put(fs, cin, FS_REF_OP, 1);
    if (r < 0)
        log_warning("%s was changed elsewhere while this workstation changed it; "
                    "saving this workstation's version as %s failed (%s): it stays in memory "
                    "and is retried at the next flush", path ? path : "?",
                    copy_path ? copy_path : "a conflict copy", pfs_err_msg());
    else
        log_warning("%s was changed elsewhere while this workstation changed it: "
                    "it keeps the version saved first; this workstation's version is %s",
                    path ? path : "?", copy_path ? copy_path : "?");
    free(path);
    free(copy_path);
    return r < 0 ? -EIO : 0;
}
