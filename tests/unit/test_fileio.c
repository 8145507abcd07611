#include "config.h"

/* fileio: atomic small-file writes (temporary file, fsync, rename or link,
 * fsync of the directory). */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "tap.h"

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/pactfs-fileio.XXXXXX");
    if (!mkdtemp(dir))
        abort();
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[sizeof dir + 256 + 2];

    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

/* Entries in dir (no temporary file may be left behind). */
static int entries(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static int content_is(const char *path, const char *want)
{
    char buf[64] = { 0 };
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;

    if (fd >= 0)
        close(fd);
    return n == (ssize_t)strlen(want) && memcmp(buf, want, (size_t)n) == 0;
}

static void test_write_replace_mode(void)
{
    char path[128];
    struct stat st;

    make_dir();
    snprintf(path, sizeof path, "%s/f", dir);
    CHECK_EQ_INT(fileio_atomic_write(path, "first", 5, 0), 0);
    CHECK(content_is(path, "first"));
    CHECK_EQ_INT(stat(path, &st), 0);
    CHECK_EQ_INT((int)(st.st_mode & 0777), 0600);
    CHECK_EQ_INT(fileio_atomic_write(path, "second!", 7, 0), 0);
    CHECK(content_is(path, "second!"));
    CHECK_EQ_INT(fileio_atomic_write(path, "", 0, 0), 0);
    CHECK(content_is(path, ""));
    CHECK_EQ_INT(entries(), 1);
    remove_dir();
}

static void test_no_replace(void)
{
    char path[128];

    make_dir();
    snprintf(path, sizeof path, "%s/share", dir);
    CHECK_EQ_INT(fileio_atomic_write(path, "one", 3, FILEIO_NO_REPLACE), 0);
    CHECK_EQ_INT(fileio_atomic_write(path, "two", 3, FILEIO_NO_REPLACE), -EEXIST);
    CHECK(content_is(path, "one"));
    CHECK_EQ_INT(entries(), 1);
    remove_dir();
}

static void test_errors_and_dirs(void)
{
    char path[128];

    make_dir();
    snprintf(path, sizeof path, "%s/missing/f", dir);
    CHECK_EQ_INT(fileio_atomic_write(path, "x", 1, 0), -ENOENT);
    CHECK_EQ_INT(entries(), 0);
    snprintf(path, sizeof path, "%s/f", dir);
    CHECK_EQ_INT(fileio_fsync_parent(path), 0);
    CHECK_EQ_INT(fileio_fsync_parent("bare-name"), 0);      /* the working directory */
    CHECK_EQ_INT(fileio_fsync_parent("/etc"), 0);            /* a file in / */
    CHECK_EQ_INT(fileio_fsync_dir(dir), 0);
    CHECK_EQ_INT(fileio_fsync_dir(path), -ENOENT);
    remove_dir();
}

int main(void)
{
    RUN(test_write_replace_mode);
    RUN(test_no_replace);
    RUN(test_errors_and_dirs);
    return tap_done();
}
