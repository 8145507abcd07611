#include "config.h"

/* The persistent repair queue: chunks written while an endpoint was down
 * (fragments missing) are listed in a file beside the audit spool,
 * SPOOL.repair, so what a crash or an unmount leaves unrepaired is repaired
 * by the next mount.  One line per chunk, "INO IDX CHUNKID\n" (decimal,
 * decimal, 32 hex digits).  A line only names a chunk: the chunk record
 * used for the repair is the metadata's current one for (INO, IDX), and a
 * line whose chunk id is no longer current is dropped; repairs need no key
 * and only ever rebuild fragments whose checksums the record names.  So an
 * edited file can only cause extra verification work (or, emptied, leave
 * the missing fragments to pactfs-fsck --repair), never a wrong fragment.
 * Appends and rewrites take an flock on SPOOL.repair.lock (several mounts of
 * one vault on one machine share the file). */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "crypto.h"
#include "error.h"
#include "fileio.h"
#include "fs_internal.h"
#include "log.h"
#include "meta.h"
#include "vault.h"

#define LINE_MAX_LEN 96

static int lock_open(struct fs *fs, char *path, size_t pathlen)
{
    char lock[4200];
    int fd;

    snprintf(path, pathlen, "%s.repair", fs->v->conf.audit_spool);
    snprintf(lock, sizeof lock, "%s.lock", path);
    fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0 && flock(fd, LOCK_EX) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void unlock_close(int fd)
{
    if (fd >= 0) {
        flock(fd, LOCK_UN);
        close(fd);
    }
}

static void format_line(uint64_t ino, uint64_t idx, const uint8_t id[CHUNK_ID_LEN],
                        char out[LINE_MAX_LEN])
{
    char hex[2 * CHUNK_ID_LEN + 1];

    hex_encode(id, CHUNK_ID_LEN, hex);
    snprintf(out, LINE_MAX_LEN, "%" PRIu64 " %" PRIu64 " %s\n", ino, idx, hex);
}

static int parse_line(const char *line, uint64_t *ino, uint64_t *idx, uint8_t id[CHUNK_ID_LEN])
{
    char hex[2 * CHUNK_ID_LEN + 2];

    if (sscanf(line, "%" SCNu64 " %" SCNu64 " %33s", ino, idx, hex) != 3 ||
        strlen(hex) != 2 * CHUNK_ID_LEN)
        return -1;
    return hex_decode(hex, id, CHUNK_ID_LEN) < 0 ? -1 : 0;
}

int fs_repairq_add(struct fs *fs, uint64_t ino, uint64_t idx, const uint8_t id[CHUNK_ID_LEN])
{
    char path[4200], line[LINE_MAX_LEN];
    int lk = lock_open(fs, path, sizeof path), fd, rc = 0;

    if (lk < 0)
        return pfs_err(-errno, "cannot lock the repair queue %s.lock: %s", path, strerror(errno));
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    format_line(ino, idx, id, line);
    if (fd < 0 || fileio_write_all(fd, line, strlen(line)) < 0 || fdatasync(fd) < 0)
        rc = pfs_err(-EIO, "cannot record a pending repair in %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    unlock_close(lk);
    return rc;
}

/* Rewrite the file keeping the lines keep() accepts. */
static int rewrite(struct fs *fs, int (*keep)(void *arg, uint64_t ino, uint64_t idx,
                                             const uint8_t id[CHUNK_ID_LEN]), void *arg)
{
    char path[4200], line[256];
    int lk = lock_open(fs, path, sizeof path), rc = 0;
    size_t len = 0, cap = 0, dropped = 0;
    char *out = NULL;
    FILE *f;

    if (lk < 0)
        return -errno;
    f = fopen(path, "re");
    if (!f) {
        unlock_close(lk);
        return errno == ENOENT ? 0 : -errno;
    }
    while (fgets(line, sizeof line, f)) {
        uint64_t ino, idx;
        uint8_t id[CHUNK_ID_LEN];
        size_t n = strlen(line);

        if (parse_line(line, &ino, &idx, id) < 0 || !keep(arg, ino, idx, id)) {
            dropped++;
            continue;
        }
        if (len + n + 1 > cap) {
            char *grown = realloc(out, cap = 2 * cap + n + 256);

            if (!grown) {
                rc = -ENOMEM;
                break;
            }
            out = grown;
        }
        memcpy(out + len, line, n);
        len += n;
    }
    fclose(f);
    if (rc == 0 && dropped)
        rc = len ? fileio_atomic_write(path, out, len, 0) : (unlink(path) < 0 ? -errno : 0);
    free(out);
    unlock_close(lk);
    return rc;
}

struct done_set {
    const uint8_t (*ids)[CHUNK_ID_LEN];
    size_t n;
};

static int keep_not_done(void *arg, uint64_t ino, uint64_t idx, const uint8_t id[CHUNK_ID_LEN])
{
    const struct done_set *d = arg;

    (void)ino;
    (void)idx;
    for (size_t i = 0; i < d->n; i++)
        if (!memcmp(d->ids[i], id, CHUNK_ID_LEN))
            return 0;
    return 1;
}

void fs_repairq_remove(struct fs *fs, const uint8_t (*ids)[CHUNK_ID_LEN], size_t n)
{
    struct done_set d = { ids, n };

    if (n && rewrite(fs, keep_not_done, &d) < 0)
        log_warning("cannot update the repair queue %s.repair (its "
                    "entries are checked again at the next mount)", fs->v->conf.audit_spool);
}

struct load {
    struct fs *fs;
    int (*cb)(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *ref);
    void *arg;
    uint64_t loaded;
};

/* Keep (and hand to the caller) a line naming a current chunk. */
static int keep_current(void *arg, uint64_t ino, uint64_t idx, const uint8_t id[CHUNK_ID_LEN])
{
    struct load *l = arg;
    struct chunk_ref ref;
    int r;

    pthread_mutex_lock(&l->fs->meta_lock);
    r = meta_chunk_get(l->fs->v->meta, ino, idx, &ref);
    pthread_mutex_unlock(&l->fs->meta_lock);
    if (r < 0 || memcmp(ref.chunk_id, id, CHUNK_ID_LEN))
        return 0;   /* rewritten, truncated or deleted since: nothing to repair */
    if (l->cb(l->arg, ino, idx, &ref) < 0)
        return 1;   /* keep it for the next mount */
    l->loaded++;
    return 1;
}

int fs_repairq_load(struct fs *fs,
                    int (*cb)(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *ref),
                    void *arg, uint64_t *loaded)
{
    struct load l = { fs, cb, arg, 0 };
    int rc = rewrite(fs, keep_current, &l);

    *loaded = l.loaded;
    return rc;
}
