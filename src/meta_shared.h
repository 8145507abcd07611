/* The part of the metadata store that several workstations writing one
 * vault need (schema 3, docs/format-metadata.md "Several workstations"):
 *
 *   change feed  every insert, update or delete of an inode row or a
 *                directory entry appends (seq, ino, parent, origin) to
 *                `changes`, written by database triggers so no writer can
 *                forget it; on PostgreSQL the same trigger NOTIFYs
 *                `pactfs_changes`, so a listening mount wakes at once
 *                (polling is the fallback, and all SQLite has)
 *   sessions     one row per mount with a lease the mount renews; the
 *                database's clock decides expiry, so workstation clocks
 *                do not matter
 *
 * Implemented once in meta_sql.c for every driver.  Everything read here
 * is untrusted like any row: a forged change only makes a mount drop a
 * cache, a forged session only makes it more careful (see
 * docs/threat-model.md).  Not thread-safe on one handle, like meta.h.
 */
#ifndef PACTFS_META_SHARED_H
#define PACTFS_META_SHARED_H

#include <stdint.h>

struct meta;

struct meta_change {
    uint64_t seq;       /* increasing (not always commit order on PostgreSQL) */
    uint64_t ino;       /* the inode row changed, or the entry's target */
    uint64_t parent;    /* the entry's directory; 0 for an inode row */
    uint64_t origin;    /* the session that made it (0: unknown) */
};

/* Highest seq in the feed (0 if empty). */
int meta_change_last(struct meta *m, uint64_t *seq);
/* Up to limit changes with seq > after, in seq order. */
int meta_change_list(struct meta *m, uint64_t after, unsigned limit,
                     int (*cb)(void *arg, const struct meta_change *c), void *arg);
/* Forget changes older than age_s seconds. */
int meta_change_prune(struct meta *m, int64_t age_s);
/* Wait up to timeout_ms for another connection's change: 1 notified, 0
 * timed out (always 0 after sleeping without notifications, i.e. SQLite),
 * META_CHANGE_RELISTENED if the connection had been lost and is made
 * again, listening again (notifications sent meanwhile are lost: look at
 * everything that may have changed), -EIO if it is lost and cannot be made
 * again yet (the next call tries again).  The first call starts listening
 * (on PostgreSQL under the application_name "pactfs-listen"). */
#define META_CHANGE_RELISTENED 2
int meta_change_wait(struct meta *m, int timeout_ms);
/* Wake the connections waiting in meta_change_wait (sessions changed). */
int meta_change_notify(struct meta *m);
/* Record origin as the author of this connection's later changes (a
 * no-op where the dialect cannot). */
int meta_set_origin(struct meta *m, uint64_t origin);

/* A new session of account on host with a lease of lease_s seconds. */
int meta_session_open(struct meta *m, uint64_t account, const char *host, int lease_s,
                      uint64_t *id);
/* Extend the lease; -ESTALE if the session is gone (it expired and was
 * reaped: its holds and locks are gone too). */
int meta_session_renew(struct meta *m, uint64_t id, int lease_s);
/* Live sessions other than id. */
int meta_session_others(struct meta *m, uint64_t id, uint64_t *count);
/* Remove expired sessions with their holds and locks. */
int meta_session_reap(struct meta *m);
/* End session id (at unmount), with its holds and locks. */
int meta_session_close(struct meta *m, uint64_t id);

/* Inside a transaction: lock inode ino's row until commit, so writers of
 * one file on several workstations commit one after the other. */
int meta_inode_lock(struct meta *m, uint64_t ino);

/* Inside a transaction: hold the vault head's lock until commit, so that
 * changes of the signed state (vault_head_advance) commit one after the
 * other (PostgreSQL: a transaction-level advisory lock; SQLite: its write
 * transactions are serial already, a no-op; outside a transaction too). */
int meta_head_lock(struct meta *m);

/* Open files (table holds): a session holds the inodes its mount has open,
 * so an inode unlinked on one workstation while another still reads it is
 * deleted only when no live session holds it any more. */
int meta_hold_set(struct meta *m, uint64_t session, uint64_t ino, int held);
/* Inside a transaction after meta_inode_lock(ino): 1 if ino has no link
 * left and no live session other than session holds it (delete it now),
 * else 0 (-ENOENT: no such inode). */
int meta_orphan_unheld(struct meta *m, uint64_t session, uint64_t ino);
/* Inodes with no link left that no live session holds: a crash's or a
 * dead session's leftovers. */
int meta_orphans_unheld_list(struct meta *m, int (*cb)(void *arg, uint64_t ino), void *arg);

/* Every inode with a commitment record (regular files), by inode number:
 * cb(arg, ino, record bytes) in one statement (one consistent view), for
 * the signed file head (file_head.h). */
int meta_commitment_list(struct meta *m, int (*cb)(void *arg, uint64_t ino,
                                                   const uint8_t *com, size_t len), void *arg);

/* Advisory locks shared across workstations (table locks).  A lock is held
 * by (session, owner) -- owner is the kernel's lock owner id on that
 * workstation -- over [start, end] (end INT64_MAX: to the end of the file);
 * kind 0 is POSIX/OFD (fcntl), 1 is BSD (flock), and the kinds never
 * conflict with each other (as on Linux).  type: F_RDLCK or F_WRLCK.
 * Locks of sessions whose lease expired never conflict (and are deleted
 * with the session). */
struct meta_lock {
    uint64_t ino, session, owner;
    int kind, type;
    int64_t start, end;
    uint32_t pid;
};
#define META_LOCK_POSIX 0
#define META_LOCK_FLOCK 1
/* Inside a transaction after meta_inode_lock(l->ino): 1 and *conflict
 * filled if a live lock of another holder conflicts with l, else 0. */
int meta_lock_conflict(struct meta *m, const struct meta_lock *l, struct meta_lock *conflict);
/* Inside the same transaction: l's holder gives up [l->start, l->end] of
 * its locks of l->kind on l->ino (the parts outside stay), then, unless
 * l->type is F_UNLCK, holds l. */
int meta_lock_set(struct meta *m, const struct meta_lock *l);
/* Every lock of (session, owner) on ino of kind (at close). */
int meta_lock_release(struct meta *m, uint64_t session, uint64_t ino, uint64_t owner, int kind);

#endif
