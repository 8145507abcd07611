#include "config.h"

/* SQLite writes a WAL frame as two writes, its 24-byte header and then its
 * page, so a commit of six pages (an unlink) was twelve pwrite calls: 19 %
 * of rm -rf's daemon CPU.  This VFS sits over the default one and keeps the
 * writes to a WAL file that continue each other in memory, then writes
 * them as one:
 * - at the end of a commit frame (its header carries the database size in
 *   pages, which only a commit frame does; docs of the WAL file format);
 * - before the main database's wal-index tells readers of new frames
 *   (xShmBarrier and xShmLock of the main file), a second guard;
 * - before anything else touches the WAL file (read, sync, truncate, size,
 *   file control, close) and when a write does not continue the last one.
 * So no reader, in this process or another, learns of a frame that is not
 * in the file, and a crash can only lose frames of a transaction that had
 * not committed.  Syncs, locks and recovery are SQLite's, unchanged.
 *
 * The real file object comes first in ours, so files other than a main
 * database and its WAL keep the default methods untouched. */

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

#include "sqlite_walbuf.h"

#define WB_NAME "pactfs-walbuf"
#define WB_FRAME_HDR 24            /* a WAL frame header (SQLite file format) */
/* Longer runs are written in parts: the default VFS takes writes of at
 * most 0x1ffff bytes (it masks the length, since SQLite never asks more). */
#define WB_MAX 0x1ffffu

struct wb_link {
    sqlite3_io_methods methods;      /* the real methods with ours in place */
    const sqlite3_io_methods *real;
    sqlite3_file *self;              /* marks a file this VFS opened */
    struct wb_link *wal;             /* main database: its WAL while open */
    struct wb_link *db;              /* WAL: its main database */
    unsigned char *buf;              /* WAL: writes not issued yet */
    size_t len, cap;
    sqlite3_int64 off;               /* file offset of buf[0] */
    int commit_next;                 /* the last header was a commit frame's */
};

static sqlite3_vfs wb_vfs;
static sqlite3_vfs *wb_real;
static int wb_real_sz;               /* the real file object, aligned */
static pthread_once_t wb_once = PTHREAD_ONCE_INIT;
static int wb_ok;
static uint64_t wb_issued, wb_asked;

static struct wb_link *link_of(sqlite3_file *f)
{
    return (struct wb_link *)(void *)((char *)f + wb_real_sz);
}

static int wal_flush(struct wb_link *l)
{
    if (!l->len)
        return SQLITE_OK;
    int rc = l->real->xWrite(l->self, l->buf, (int)l->len, l->off);
    __atomic_add_fetch(&wb_issued, 1, __ATOMIC_RELAXED);
    l->len = 0;
    l->commit_next = 0;
    return rc;
}

/* ---- the WAL file ---- */

static int wal_write(sqlite3_file *f, const void *p, int amt, sqlite3_int64 off)
{
    struct wb_link *l = link_of(f);
    int rc = SQLITE_OK;
    __atomic_add_fetch(&wb_asked, 1, __ATOMIC_RELAXED);
    if (l->len && (off != l->off + (sqlite3_int64)l->len || l->len + (size_t)amt > WB_MAX))
        rc = wal_flush(l);
    if (rc != SQLITE_OK)
        return rc;
    if ((size_t)amt > l->cap - l->len) {
        size_t cap = l->cap ? l->cap : 32 * 1024;
        while (cap < l->len + (size_t)amt)
            cap *= 2;
        if (cap > WB_MAX && l->len + (size_t)amt <= WB_MAX)
            cap = WB_MAX;
        unsigned char *b = cap <= WB_MAX ? realloc(l->buf, cap) : NULL;
        if (!b) {   /* too long, or no memory: write it as SQLite asked */
            rc = wal_flush(l);
            if (rc == SQLITE_OK) {
                rc = l->real->xWrite(f, p, amt, off);
                __atomic_add_fetch(&wb_issued, 1, __ATOMIC_RELAXED);
            }
            return rc;
        }
        l->buf = b;
        l->cap = cap;
    }
    if (!l->len)
        l->off = off;
    memcpy(l->buf + l->len, p, (size_t)amt);
    l->len += (size_t)amt;
    if (amt == WB_FRAME_HDR) {
        const unsigned char *h = p;
        l->commit_next = (h[4] | h[5] | h[6] | h[7]) != 0;   /* database size: a commit */
        return SQLITE_OK;
    }
    if (l->commit_next)
        return wal_flush(l);   /* the commit frame is whole: readers may look */
    return SQLITE_OK;
}

static int wal_read(sqlite3_file *f, void *p, int amt, sqlite3_int64 off)
{
    struct wb_link *l = link_of(f);
    int rc = wal_flush(l);
    return rc != SQLITE_OK ? rc : l->real->xRead(f, p, amt, off);
}

static int wal_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    struct wb_link *l = link_of(f);
    int rc = wal_flush(l);
    return rc != SQLITE_OK ? rc : l->real->xTruncate(f, size);
}

static int wal_sync(sqlite3_file *f, int flags)
{
    struct wb_link *l = link_of(f);
    int rc = wal_flush(l);
    return rc != SQLITE_OK ? rc : l->real->xSync(f, flags);
}

static int wal_size(sqlite3_file *f, sqlite3_int64 *size)
{
    struct wb_link *l = link_of(f);
    int rc = wal_flush(l);
    return rc != SQLITE_OK ? rc : l->real->xFileSize(f, size);
}

static int wal_control(sqlite3_file *f, int op, void *arg)
{
    struct wb_link *l = link_of(f);
    int rc = wal_flush(l);
    return rc != SQLITE_OK ? rc : l->real->xFileControl(f, op, arg);
}

static int wal_close(sqlite3_file *f)
{
    struct wb_link *l = link_of(f);
    int rc = wal_flush(l);
    if (l->db)
        l->db->wal = NULL;
    free(l->buf);
    l->buf = NULL;
    l->len = l->cap = 0;
    int rc2 = l->real->xClose(f);   /* our methods stay valid while it runs */
    memset(l, 0, sizeof *l);
    return rc != SQLITE_OK ? rc : rc2;
}

/* ---- the main database file ---- */

/* A frame still in memory when the wal-index is about to point readers at
 * it: written now.  xShmBarrier cannot fail, and a reader must never find
 * a published frame missing from the file, so a failed write stops the
 * process (the commit has not returned; recovery drops the frames). */
static void db_flush_wal(sqlite3_file *f)
{
    struct wb_link *l = link_of(f);
    if (l->wal && l->wal->len && wal_flush(l->wal) != SQLITE_OK) {
        fprintf(stderr, "pactfs: cannot write the metadata store's write-ahead log before "
                "publishing a commit; stopping so that recovery drops it\n");
        abort();
    }
}

static void db_barrier(sqlite3_file *f)
{
    db_flush_wal(f);
    link_of(f)->real->xShmBarrier(f);
}

static int db_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    db_flush_wal(f);
    return link_of(f)->real->xShmLock(f, offset, n, flags);
}

static int db_close(sqlite3_file *f)
{
    struct wb_link *l = link_of(f);
    if (l->wal) {
        wal_flush(l->wal);
        l->wal->db = NULL;
    }
    int rc = l->real->xClose(f);
    memset(l, 0, sizeof *l);
    return rc;
}

/* ---- the VFS ---- */

static int wb_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)vfs;
    struct wb_link *l = link_of(f);
    memset(l, 0, sizeof *l);
    int rc = wb_real->xOpen(wb_real, name, f, flags, out);
    if (rc != SQLITE_OK || !f->pMethods || !(flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL)))
        return rc;
    l->self = f;
    l->real = f->pMethods;
    l->methods = *f->pMethods;
    if (flags & SQLITE_OPEN_WAL) {
        l->methods.xWrite = wal_write;
        l->methods.xRead = wal_read;
        l->methods.xTruncate = wal_truncate;
        l->methods.xSync = wal_sync;
        l->methods.xFileSize = wal_size;
        l->methods.xFileControl = wal_control;
        l->methods.xClose = wal_close;
        sqlite3_file *db = name ? sqlite3_database_file_object(name) : NULL;
        if (db && db->pMethods && link_of(db)->self == db) {
            l->db = link_of(db);
            l->db->wal = l;
        }
    } else {
        l->methods.xClose = db_close;
        if (l->methods.iVersion >= 2 && l->methods.xShmBarrier && l->methods.xShmLock) {
            l->methods.xShmBarrier = db_barrier;
            l->methods.xShmLock = db_shm_lock;
        }
    }
    f->pMethods = &l->methods;
    return rc;
}

static void wb_register(void)
{
    wb_real = sqlite3_vfs_find(NULL);
    if (!wb_real)
        return;
    wb_real_sz = (wb_real->szOsFile + 15) & ~15;
    wb_vfs = *wb_real;   /* every other call goes to the default VFS as is */
    wb_vfs.pNext = NULL;
    wb_vfs.zName = WB_NAME;
    wb_vfs.szOsFile = wb_real_sz + (int)sizeof(struct wb_link);
    wb_vfs.xOpen = wb_open;
    wb_ok = sqlite3_vfs_register(&wb_vfs, 0) == SQLITE_OK;
}

const char *walbuf_vfs(void)
{
    pthread_once(&wb_once, wb_register);
    return wb_ok ? WB_NAME : NULL;
}

void walbuf_counts(uint64_t *issued, uint64_t *asked)
{
    *issued = __atomic_load_n(&wb_issued, __ATOMIC_RELAXED);
    *asked = __atomic_load_n(&wb_asked, __ATOMIC_RELAXED);
}
