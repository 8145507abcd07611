#include "config.h"

/* Atomic small-file writes and directory syncs (see fileio.h). */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

int fileio_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n) {
        ssize_t w = write(fd, c, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int fileio_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) != 0)
        rc = -errno;
    close(fd);
    return rc;
}

int fileio_fsync_parent(const char *path)
{
    char *copy = strdup(path);
    char *slash = copy ? strrchr(copy, '/') : NULL;
    int rc;

    if (!copy)
        return -ENOMEM;
    if (slash == copy)
        slash[1] = '\0';          /* a file in / */
    else if (slash)
        *slash = '\0';
    rc = fileio_fsync_dir(slash ? copy : ".");
    free(copy);
    return rc;
}

/* The temporary file: path.tmp.XXXXXX, created exclusively, mode 0600. */
static int temp_beside(const char *path, char **tmp)
{
    int fd;

    if (asprintf(tmp, "%s.tmp.XXXXXX", path) < 0) {
        *tmp = NULL;
        return -ENOMEM;
    }
    fd = mkostemp(*tmp, O_CLOEXEC);
    if (fd < 0) {
        fd = -errno;
        free(*tmp);
        *tmp = NULL;
    }
    return fd;
}

static int write_sync_close(int fd, const void *data, size_t n)
{
    int rc = fchmod(fd, 0600) == 0 ? 0 : -errno;

    if (rc == 0)
        rc = fileio_write_all(fd, data, n);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    return rc;
}

int fileio_atomic_write(const char *path, const void *data, size_t n, int flags)
{
    char *tmp;
    int fd = temp_beside(path, &tmp);
    int rc;

    if (fd < 0)
        return fd;
    rc = write_sync_close(fd, data, n);
    if (rc == 0 && (flags & FILEIO_NO_REPLACE))
        rc = link(tmp, path) == 0 ? 0 : -errno;
    else if (rc == 0)
        rc = rename(tmp, path) == 0 ? 0 : -errno;
    if (rc || (flags & FILEIO_NO_REPLACE))
        unlink(tmp);
    free(tmp);
    return rc ? rc : fileio_fsync_parent(path);
}
