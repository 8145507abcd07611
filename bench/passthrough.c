/* A plain FUSE passthrough, the baseline of bench/run.sh: it costs what FUSE
 * itself costs (context switches, copies) and nothing else, so pactfs and
 * gocryptfs can be compared against "FUSE with no work to do".
 *
 * Usage: passthrough [FUSE options] SOURCE_DIR MOUNTPOINT
 *
 * Modelled on libfuse's example/passthrough.c (high-level API, multithreaded
 * unless -s), but every path is resolved relative to a directory fd opened
 * on SOURCE_DIR, so it mirrors that directory instead of "/".
 *
 * Built standalone by bench/run.sh:
 *   cc -O2 -std=gnu11 bench/passthrough.c $(pkg-config --cflags --libs fuse3)
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#define FUSE_USE_VERSION 31
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <fuse.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

/* The mirrored directory; set once before fuse_main, read-only afterwards. */
static int source_fd = -1;

/* FUSE paths start with '/'; the *at() calls want them relative to
 * source_fd ("." for the root itself). */
static const char *rel(const char *path)
{
    while (*path == '/')
        path++;
    return *path ? path : ".";
}

static int neg_errno(int rc)
{
    return rc == -1 ? -errno : 0;
}

/* Connection options from the command line (-o max_write=N, ...): the
 * high-level fuse_main does not parse them itself in libfuse 3.14. */
static void *pt_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    struct fuse_conn_info_opts *conn_opts = fuse_get_context()->private_data;
    if (conn_opts)
        fuse_apply_conn_info_opts(conn_opts, conn);
    cfg->use_ino = 1;
    /* Otherwise libfuse defaults (1 s attr/entry timeouts, no kernel_cache),
     * the same kind of defaults gocryptfs runs with: a fair baseline. */
    return conn_opts;
}

static int pt_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    if (fi)
        return neg_errno(fstat((int)fi->fh, st));
    return neg_errno(fstatat(source_fd, rel(path), st, AT_SYMLINK_NOFOLLOW));
}

static int pt_access(const char *path, int mask)
{
    return neg_errno(faccessat(source_fd, rel(path), mask, 0));
}

static int pt_readlink(const char *path, char *buf, size_t size)
{
    if (size == 0)
        return -EINVAL;
    ssize_t n = readlinkat(source_fd, rel(path), buf, size - 1);
    if (n == -1)
        return -errno;
    buf[n] = '\0';
    return 0;
}

static int pt_opendir(const char *path, struct fuse_file_info *fi)
{
    int fd = openat(source_fd, rel(path), O_RDONLY | O_DIRECTORY);
    if (fd == -1)
        return -errno;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int err = errno;
        close(fd);
        return -err;
    }
    fi->fh = (uint64_t)(uintptr_t)dir;
    return 0;
}

static int pt_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t offset,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)path;
    (void)offset;
    (void)flags;
    DIR *dir = (DIR *)(uintptr_t)fi->fh;
    rewinddir(dir);
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        struct stat st = { .st_ino = de->d_ino, .st_mode = (mode_t)de->d_type << 12 };
        if (fill(buf, de->d_name, &st, 0, 0))
            break;
    }
    return 0;
}

static int pt_releasedir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    closedir((DIR *)(uintptr_t)fi->fh);
    return 0;
}

static int pt_mknod(const char *path, mode_t mode, dev_t rdev)
{
    return neg_errno(mknodat(source_fd, rel(path), mode, rdev));
}

static int pt_mkdir(const char *path, mode_t mode)
{
    return neg_errno(mkdirat(source_fd, rel(path), mode));
}

static int pt_unlink(const char *path)
{
    return neg_errno(unlinkat(source_fd, rel(path), 0));
}

static int pt_rmdir(const char *path)
{
    return neg_errno(unlinkat(source_fd, rel(path), AT_REMOVEDIR));
}

static int pt_symlink(const char *target, const char *path)
{
    return neg_errno(symlinkat(target, source_fd, rel(path)));
}

static int pt_rename(const char *from, const char *to, unsigned int flags)
{
    return neg_errno(renameat2(source_fd, rel(from), source_fd, rel(to), flags));
}

static int pt_link(const char *from, const char *to)
{
    return neg_errno(linkat(source_fd, rel(from), source_fd, rel(to), 0));
}

static int pt_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    if (fi)
        return neg_errno(fchmod((int)fi->fh, mode));
    return neg_errno(fchmodat(source_fd, rel(path), mode, 0));
}

static int pt_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    if (fi)
        return neg_errno(fchown((int)fi->fh, uid, gid));
    return neg_errno(fchownat(source_fd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW));
}

static int pt_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    if (fi)
        return neg_errno(ftruncate((int)fi->fh, size));
    int fd = openat(source_fd, rel(path), O_WRONLY);
    if (fd == -1)
        return -errno;
    int rc = neg_errno(ftruncate(fd, size));
    close(fd);
    return rc;
}

static int pt_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    if (fi)
        return neg_errno(futimens((int)fi->fh, tv));
    return neg_errno(utimensat(source_fd, rel(path), tv, AT_SYMLINK_NOFOLLOW));
}

static int pt_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int fd = openat(source_fd, rel(path), fi->flags, mode);
    if (fd == -1)
        return -errno;
    fi->fh = (uint64_t)fd;
    return 0;
}

static int pt_open(const char *path, struct fuse_file_info *fi)
{
    int fd = openat(source_fd, rel(path), fi->flags & ~O_NOFOLLOW);
    if (fd == -1)
        return -errno;
    fi->fh = (uint64_t)fd;
    return 0;
}

static int pt_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)path;
    ssize_t n = pread((int)fi->fh, buf, size, off);
    return n == -1 ? -errno : (int)n;
}

static int pt_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)path;
    ssize_t n = pwrite((int)fi->fh, buf, size, off);
    return n == -1 ? -errno : (int)n;
}

static int pt_statfs(const char *path, struct statvfs *st)
{
    (void)path;
    return neg_errno(fstatvfs(source_fd, st));
}

static int pt_flush(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    /* close() of a dup reports deferred write errors, as a real close would. */
    int fd = dup((int)fi->fh);
    if (fd == -1)
        return -errno;
    return neg_errno(close(fd));
}

static int pt_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    close((int)fi->fh);
    return 0;
}

static int pt_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    int fd = (int)fi->fh;
    return neg_errno(datasync ? fdatasync(fd) : fsync(fd));
}

static int pt_fallocate(const char *path, int mode, off_t off, off_t len,
                        struct fuse_file_info *fi)
{
    (void)path;
    return neg_errno(fallocate((int)fi->fh, mode, off, len));
}

static off_t pt_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
    (void)path;
    off_t res = lseek((int)fi->fh, off, whence);
    return res == -1 ? -errno : res;
}

static const struct fuse_operations passthrough_ops = {
    .init = pt_init,
    .getattr = pt_getattr,
    .access = pt_access,
    .readlink = pt_readlink,
    .opendir = pt_opendir,
    .readdir = pt_readdir,
    .releasedir = pt_releasedir,
    .mknod = pt_mknod,
    .mkdir = pt_mkdir,
    .symlink = pt_symlink,
    .unlink = pt_unlink,
    .rmdir = pt_rmdir,
    .rename = pt_rename,
    .link = pt_link,
    .chmod = pt_chmod,
    .chown = pt_chown,
    .truncate = pt_truncate,
    .utimens = pt_utimens,
    .create = pt_create,
    .open = pt_open,
    .read = pt_read,
    .write = pt_write,
    .statfs = pt_statfs,
    .flush = pt_flush,
    .release = pt_release,
    .fsync = pt_fsync,
    .fallocate = pt_fallocate,
    .lseek = pt_lseek,
};

/* The first argument that is neither an option nor an option's value is the
 * source directory; it is removed so fuse_main sees only the mountpoint. */
static int take_source_dir(int *argc, char **argv)
{
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "-o") == 0) {
            i++;
            continue;
        }
        if (argv[i][0] == '-')
            continue;
        int fd = open(argv[i], O_RDONLY | O_DIRECTORY);
        if (fd == -1) {
            fprintf(stderr, "passthrough: cannot open source directory %s: %s\n", argv[i],
                    strerror(errno));
            return -1;
        }
        memmove(&argv[i], &argv[i + 1], (size_t)(*argc - i) * sizeof(char *));
        (*argc)--;
        return fd;
    }
    fprintf(stderr, "usage: passthrough [FUSE options] SOURCE_DIR MOUNTPOINT\n");
    return -1;
}

int main(int argc, char **argv)
{
    umask(0);
    source_fd = take_source_dir(&argc, argv);
    if (source_fd == -1)
        return 2;
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_conn_info_opts *conn_opts = fuse_parse_conn_info_opts(&args);
    if (!conn_opts) {
        close(source_fd);
        return 2;
    }
    int rc = fuse_main(args.argc, args.argv, &passthrough_ops, conn_opts);
    fuse_opt_free_args(&args);
    free(conn_opts);
    close(source_fd);
    return rc;
}
