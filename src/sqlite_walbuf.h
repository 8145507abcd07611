/* A SQLite VFS over the default one that writes each transaction's WAL
 * frames with one write instead of two per page (sqlite_walbuf.c).  The
 * database file, its locking, syncs and recovery are SQLite's own. */
#ifndef PACTFS_SQLITE_WALBUF_H
#define PACTFS_SQLITE_WALBUF_H

#include <stdint.h>

/* Register the VFS once per process; its name for sqlite3_open_v2, or NULL
 * if it could not be registered (then open with the default VFS). */
const char *walbuf_vfs(void);

/* Writes the VFS has issued to WAL files since the process started, and
 * the writes SQLite asked for that they carried (for tests and profiles). */
void walbuf_counts(uint64_t *issued, uint64_t *asked);

#endif
