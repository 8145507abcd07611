/* Format 1 -> 2 of a vault's metadata (pactfs-admin upgrade).
 *
 * Schema version 2 (meta_open migrates it) adds two columns that format 1
 * never wrote: each directory entry's binding to its child
 * (envelope.h dirent_bind) and each regular file's commitment
 * (filecommit.h).  Without them a format-2 reader refuses the entry or the
 * file (EIO, "not upgraded").  upgrade_folders walks every folder the
 * unlocked account holds and writes what is missing, with that account's
 * folder keys and the files' data keys:
 *   - an entry with no binding gets one for the child and type it points at
 *     now; an entry whose binding is there but does not verify is reported
 *     and left alone (never re-bound: that would bless tampering);
 *   - a regular file with no commitment gets one (generation 1) over its
 *     chunk records and size as they are now; an invalid one is reported
 *     and left alone.
 * One transaction per directory, so an interrupted run leaves whole
 * directories done and a second run finishes the rest (resumable; a run
 * over a finished vault changes nothing).
 *
 * What upgrade binds is the metadata as it stands: run it once, with the
 * vault unmounted, on metadata you trust (docs/format-metadata.md).
 */
#ifndef PACTFS_UPGRADE_H
#define PACTFS_UPGRADE_H

#include <stdint.h>

#include "vault.h"

struct upgrade_stats {
    uint64_t entries_bound;    /* bindings written */
    uint64_t files_committed;  /* commitments written */
    uint64_t already;          /* entries and files already in format 2 */
    uint64_t problems;         /* invalid bindings/commitments, unreadable
                                  entries: reported on stderr, left alone */
};

/* SQLite: copy the metadata file to backup_path with SQLite's online
 * backup (WAL included), unless backup_path exists already (an earlier,
 * interrupted run made it: kept as the pre-upgrade copy).  *made = 1 if a
 * new copy was written. */
int upgrade_backup_sqlite(const char *meta_path, const char *backup_path, int *made);

/* Upgrade every folder v's unlocked account holds (see above). */
int upgrade_folders(struct vault *v, struct upgrade_stats *st);

#endif
