/* Shared state of the filesystem core (fs_core.c, fs_inode.c, fs_data.c,
 * fs_status.c, in libpactfs.a) and of its FUSE front end (fs_ops.c).
 * Nothing here knows FUSE.
 *
 * Lock order (never take a lock to the left while holding one to its right):
 *
 *     fs_file.commit_lock  ->  fs_inode.lock  ->  fs.meta_lock
 *                                             ->  cache lock, dirty lock
 *     fs_itab.lock is a leaf: nothing else is taken while it is held.
 *
 * No lock is held during object I/O (object_put_chunk / object_get_chunk /
 * object_layer_sync) nor while waiting for the audit spool's fdatasync:
 * metadata operations append their audit event inside their meta
 * transaction (under meta_lock, so a failed append rolls the operation back:
 * fail-closed) and wait for it to be durable after dropping the lock.
 * Metadata commits are deferred (meta_set_deferred_sync) and made durable
 * by fs_data_meta_sync: on fsync, fsyncdir, before the gc deletes
 * fragments, every second, and at unmount (docs/design-fuse.md).
 */
#ifndef PACTFS_FS_INTERNAL_H
#define PACTFS_FS_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "audit.h"
#include "attr_overlay.h"
#include "fs.h"

struct fs_data;      /* fs_data.c: worker pool, chunk cache, dirty budget */
struct fs_file;      /* fs_data.c: per-inode data state (DEK, dirty chunks) */
struct fs_handle;    /* fs_ops.c: an open file handle */
struct fuse_session; /* the FUSE front end's session (fs_ops.c) */

/* Who asks for an operation (the requesting process), for the permission
 * checks and the audit; NULL where a function takes one: the daemon. */
struct fs_caller {
    uid_t uid;
    gid_t gid;
    pid_t pid;
    const gid_t *groups;   /* supplementary groups, where a check needs them */
    int ngroups;
};

/* One inode the kernel knows about (or an internal job still uses). */
struct fs_inode {
    uint64_t ino;
    uint64_t folder_id;
    uint32_t mode;             /* the mode the kernel was last told (lookup,
                                  getattr, setattr; atomic): the type for quick
                                  checks, the rest for fs_kill_suidgid, which
                                  must not query the store on every write;
                                  set-ID bits it lacks are bits the kernel's
                                  own check would not have seen either */
    /* protected by fs_itab.lock */
    uint64_t nlookup;          /* kernel lookup count */
    unsigned nopen;            /* open file handles */
    unsigned nref;             /* in-flight operations and jobs */
    int held;                  /* under lock: a holds row of this mount's session
                                  exists (fs_inode.c, PostgreSQL) */
    int unlinked;              /* nlink reached 0: delete when unreferenced */
    uint64_t parent;           /* last known parent and plaintext name */
    char *name;                /* (for audit paths; best effort) */
    struct fs_inode *hnext;
    /* protected by lock */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct fs_file *file;      /* data state of a regular file, or NULL */
    struct meta_inode *row;    /* a row this mount wrote (fs_row_remember), or NULL */
    unsigned row_gen;          /* its slot's count then */
    int64_t row_ns;            /* when */
};

struct fs_itab {
    pthread_mutex_t lock;
    struct fs_inode **buckets;
    size_t nbuckets;
    size_t count;
};

#define FS_ROW_GENS 1024
/* A remembered row is no older than this (the kernel keeps attributes for
 * up to FS_ENTRY_TIMEOUT_LOCAL anyway). */
#define FS_ROW_KEEP_NS 1000000000LL

struct fs {
    struct vault *v;
    struct fs_options opt;
    struct fuse_session *se;
    uint32_t chunk_size;
    int64_t mount_ns;          /* times of the virtual root */
    double entry_timeout;      /* kernel entry/attribute cache, seconds, while
                                  this is the vault's only mount here */
    int64_t alone_checked_ns;  /* when fs_alone last asked mount_peers */
    int alone;                 /* its answer */
    uid_t uid;                 /* owner of the virtual root */
    gid_t gid;
    pthread_mutex_t meta_lock; /* the meta handle is not thread-safe */
    /* Bumped at every create, update or delete of an inode row whose number
     * falls in the slot (meta_set_row_hook): a row remembered with its
     * slot's count is the stored one while the count has not moved
     * (fs_row_recall). */
    unsigned row_gen[FS_ROW_GENS];
    struct fs_itab itab;
    pthread_mutex_t retired_lock;
    uint64_t *retired;         /* unlinked inodes the kernel forgot, their rows
                                  deleted in batches (fs_inode_retired_flush) */
    size_t nretired, capretired;
    struct fs_data *data;
    struct fs_watch *watch;    /* fs_watch.c: sessions, change feed (or NULL) */
    struct fs_access *access;  /* fs_access.c: revocation reaching the mount (or NULL) */
    struct fs_trash *trash;    /* fs_trash.c: pending .trashinfo files */
    struct fs_epwatch *epwatch; /* fs_endpoints.c: endpoint identity watcher */
    uint64_t remote_peers;     /* atomic: other workstations' live sessions
                                  (fs_watch; 0 without one) */
    uint64_t session;          /* atomic: this mount's session in the store
                                  (fs_watch; 0: none, SQLite) */
    /* The front end's "drop what the kernel cached of ino" (NULL: none);
     * called from a worker thread, never inside a request. */
    void (*inval_inode)(struct fs *fs, uint64_t ino);
    /* ... and forget the name under parent (same rules). */
    void (*inval_entry)(struct fs *fs, uint64_t parent, const char *name);
    pthread_mutex_t handles_lock;  /* open handles, freed at unmount if the */
    struct fs_handle *handles;     /* kernel dropped their release */
};

/* ---- fs_core.c (more in fs_core.h) ---- */
int64_t fs_now_ns(void);
/* 1 while no other mount of this vault is live on this machine (asked at
 * most once a second). */
int fs_alone(struct fs *fs);
/* Plaintext path of ino (+ "/" name if name != NULL) inside the mount,
 * malloc'd; best effort ("?" for unknown ancestors). */
char *fs_path(struct fs *fs, uint64_t ino, const char *name);
/* Audit with the caller's uid/pid (who may be NULL: the daemon itself). */
int fs_audit(struct fs *fs, const struct fs_caller *who, const char *op, const char *path,
             int result, uint64_t bytes);
/* The same in two phases: append inside a meta transaction (a failure rolls
 * it back), then fs_audit_wait after meta_lock is dropped and before the
 * reply; both return 0 or -EIO. */
int fs_audit_append(struct fs *fs, const struct fs_caller *who, const char *op, const char *path,
                    int result, uint64_t bytes, uint64_t *ticket);
int fs_audit_wait(struct fs *fs, const char *op, uint64_t ticket);
/* The same with the file id and changed fields (d may be NULL). */
int fs_audit_detail(struct fs *fs, const struct fs_caller *who, const char *op, const char *path,
                    int result, uint64_t bytes, const struct audit_detail *d);
int fs_audit_append_detail(struct fs *fs, const struct fs_caller *who, const char *op,
                           const char *path, int result, uint64_t bytes,
                           const struct audit_detail *d, uint64_t *ticket);
/* The metadata store was altered (a check named in what failed) on ino
 * (+ "/" name): a line on stderr naming the file and the check, an audit
 * event "tamper" (result EIO); returns -EIO. */
int fs_tamper(struct fs *fs, const struct fs_caller *who, uint64_t ino, const char *name,
              const char *what);

/* ---- fs_inode.c ---- */
int fs_itab_init(struct fs_itab *t);
void fs_itab_destroy(struct fs *fs);
/* Find or add ino (folder_id/mode set on add), take one reference of the
 * given kind.  NULL only if out of memory. */
enum fs_ref { FS_REF_OP, FS_REF_LOOKUP, FS_REF_OPEN };
struct fs_inode *fs_inode_get(struct fs *fs, uint64_t ino, uint64_t folder_id, uint32_t mode,
                              enum fs_ref kind);
/* in->mode = mode, the mode the kernel is being told (a fresh row). */
void fs_inode_note_mode(struct fs_inode *in, uint32_t mode);
/* One more op reference on an inode the caller already holds. */
void fs_inode_hold(struct fs *fs, struct fs_inode *in);
/* Find ino and take an op reference, or NULL if the kernel never looked it up. */
struct fs_inode *fs_inode_find(struct fs *fs, uint64_t ino);
/* Drop n references of the given kind; the last one frees the inode (and
 * deletes it from the metadata if it was unlinked). */
void fs_inode_put(struct fs *fs, struct fs_inode *in, enum fs_ref kind, uint64_t n);
void fs_inode_forget(struct fs *fs, uint64_t ino, uint64_t nlookup);
/* Remember (parent, name) of ino for audit paths. */
void fs_inode_set_name(struct fs *fs, uint64_t ino, uint64_t parent, const char *name);
/* nlink of ino reached 0: returns 1 if it is still referenced (deleted
 * later, at the last release/forget), 0 if the caller must delete it now. */
int fs_inode_mark_unlinked(struct fs *fs, uint64_t ino);
/* Copy the known parent/name of ino; 0 or -ENOENT. */
int fs_inode_name(struct fs *fs, uint64_t ino, uint64_t *parent, char *name, size_t cap);
/* Call fn for every inode with a data state (used by flush-all at unmount). */
void fs_itab_each_file(struct fs *fs, void (*fn)(struct fs *fs, struct fs_inode *in));
/* Call fn for every inode of the folder the kernel may still hold (it
 * must be called with no lock held: fn may talk to the kernel). */
void fs_itab_each_in_folder(struct fs *fs, uint64_t folder_id,
                            void (*fn)(struct fs *fs, struct fs_inode *in));
/* Delete inode ino from the metadata (and its data); locks meta itself.
 * With a session: only if it has no link and no other live session holds
 * it open (else that session's last close deletes it). */
int fs_inode_delete_now(struct fs *fs, uint64_t ino);
/* Delete the rows of the unlinked inodes retired since the last call, in
 * one transaction (the syncer every second, unmount; a full batch by
 * itself).  Until then such an inode is an orphan (nlink 0) nothing shows:
 * a crash leaves it to the next mount's orphan sweep. */
void fs_inode_retired_flush(struct fs *fs);
/* A new session (the old one expired): hold every open inode again. */
void fs_inode_rehold_all(struct fs *fs);

/* ---- fs_data.c ---- */
int fs_data_start(struct fs *fs);
void fs_data_stop(struct fs *fs);
/* Make sure in has a data state: DEK unwrapped, size loaded.  dek != NULL:
 * a brand-new empty file whose DEK is already known. */
int fs_data_attach(struct fs *fs, struct fs_inode *in, const uint8_t *dek);
/* Remembered rows (fs_core.c).  The slot count of ino now (read it right
 * after writing the row, under meta_lock, inside the transaction). */
unsigned fs_row_gen(struct fs *fs, uint64_t ino);
/* After the transaction that wrote row committed: remember it on ino's
 * inode (if the kernel knows it), with the count gen read after the write. */
void fs_row_remember(struct fs *fs, uint64_t ino, const struct meta_inode *row, unsigned gen);
/* Copy the row remembered on in into *mi if no write of an inode row in its
 * slot happened since, it is less than FS_ROW_KEEP_NS old and this mount is
 * the vault's only one: 1, else 0 (read the row).  For what is shown
 * (getattr, a kept setattr), never for a row about to be written. */
int fs_row_recall(struct fs *fs, struct fs_inode *in, struct meta_inode *mi);
/* The row hook (meta_set_row_hook): arg is the struct fs. */
void fs_row_written(void *arg, uint64_t ino);
/* At open while another mount of the vault is live: forget the stored
 * state of a file with nothing unsaved (close-to-open); the new state must
 * verify against the file's commitment, else -EIO (tampering, reported). */
int fs_data_revalidate(struct fs *fs, struct fs_inode *in);
/* The commitment of a new, empty regular file (generation 1) into mi. */
struct meta_inode;
int fs_data_commit_initial(const uint8_t *dek, struct meta_inode *mi);
/* Wipe and free the data state (DEK, buffers); uncommitted fragments are
 * deleted.  Dirty data must have been flushed. */
void fs_data_detach(struct fs *fs, struct fs_inode *in);
int fs_data_read(struct fs *fs, struct fs_inode *in, uint64_t off, size_t size, uint8_t *out,
                 size_t *got);
int fs_data_write(struct fs *fs, struct fs_inode *in, uint64_t off, const void *buf,
                  size_t size);
/* Start fetching the first chunk in the background (at open, so the fetch
 * overlaps the open's audit fdatasync). */
void fs_data_prefetch(struct fs *fs, struct fs_inode *in);
/* Start writing back every dirty chunk without waiting (close); returns
 * an earlier write-back error of the file, if any. */
int fs_data_writeback_start(struct fs *fs, struct fs_inode *in);
/* Write back every dirty chunk, then one meta transaction (atomic; durable
 * at the next metadata sync, within about a second). */
int fs_data_flush(struct fs *fs, struct fs_inode *in);
/* Release of a written handle: while this mount is alone and no put
 * failed, queue in for the batch committer (files released together share
 * one fragment sync, then each is committed as fs_data_flush does) and
 * return at once; otherwise fs_data_flush.  Errors: those of fs_data_flush
 * (the batch logs and audits its own, as release did). */
int fs_data_release(struct fs *fs, struct fs_inode *in);
/* fs_data_flush, then every metadata commit so far durable (fsync). */
int fs_data_fsync(struct fs *fs, struct fs_inode *in);
/* Make every metadata commit so far durable (meta_sync under meta_lock);
 * 0 or -EIO (message on stderr). */
int fs_data_meta_sync(struct fs *fs);
int fs_data_truncate(struct fs *fs, struct fs_inode *in, uint64_t size);
/* Override st_size/st_mtim with in-memory values when in has a data state;
 * mi is the row st was made from (its commitment dates it). */
void fs_data_fill_attr(struct fs_inode *in, const struct meta_inode *mi, struct stat *st);
/* Keep commits of in's data out while a setattr rewrites the inode row
 * (returns 1 if held); release says whether it set mtime (then the
 * in-memory mtime stops overriding the metadata). */
int fs_data_commit_hold(struct fs_inode *in);
void fs_data_commit_release(struct fs_inode *in, int mtime_set, int64_t mtime_ns);
/* Deferred attributes (fs_data.c): a chmod, chown or utimens of a file
 * this mount created and has not saved, while a handle writes it, is kept
 * in memory and written by the file's first commit, with its data.
 * fs_data_defer_begin: FS_DEFER_YES (then the caller folds its event with
 * fs_data_defer_fold, or audits a refusal after fs_data_fold_emit_held,
 * keeps with fs_data_defer_keep and calls fs_data_defer_end, which it
 * must), else FS_DEFER_NO, or FS_DEFER_PENDING: not now, but kept changes
 * wait (commit them with fs_data_flush before rewriting the row). */
enum { FS_DEFER_NO, FS_DEFER_YES, FS_DEFER_PENDING };
int fs_data_defer_begin(struct fs *fs, struct fs_inode *in);
/* The row as the file will be: kept attributes, mtime and ctime over mi. */
void fs_data_defer_view(struct fs_inode *in, struct meta_inode *mi);
/* Keep mi's fields in set (FS_OV_*), its ctime, and mtime if FS_OV_MTIME. */
void fs_data_defer_keep(struct fs_inode *in, const struct meta_inode *mi, unsigned set);
void fs_data_defer_end(struct fs_inode *in);
/* The audit event of kept changes is folded: one event (op by
 * fs_setattr_op, the fields changed with their last values) per run of
 * changes by one caller, appended before the commit that writes them or
 * at the close of a handle of the file, whichever comes first, and before
 * an event of another caller's change or of a refused one.  fold: add a
 * successful change's event (between defer_begin and defer_end); 0, or
 * -EIO when a pending event of another caller could not be appended. */
int fs_data_defer_fold(struct fs *fs, struct fs_inode *in, const struct fs_caller *who,
                       const struct audit_detail *d);
/* Append the pending folded event, if any: _held between defer_begin and
 * defer_end, fs_data_fold_emit otherwise (a handle's close).  0 or -EIO. */
int fs_data_fold_emit_held(struct fs *fs, struct fs_inode *in);
int fs_data_fold_emit(struct fs *fs, struct fs_inode *in);
/* The op of a setattr event by the fields it carries (AUDIT_SET_*): chmod,
 * chown or utimens when only one kind changes, else setattr. */
const char *fs_setattr_op(unsigned audit_set);
/* A writable handle of in opened (+1) or released (-1, before its commit
 * is queued: a change kept while one is open is always followed by one). */
void fs_data_writer_add(struct fs_inode *in, int delta);
/* Current size (in-memory if attached), or -1 if no data state. */
int64_t fs_data_size(struct fs_inode *in);
/* At unmount: flush every file, then fs_data_quiesce. */
void fs_data_flush_all(struct fs *fs);
/* Wait until no queued or running job holds an inode reference (before
 * the inode table is torn down at unmount). */
void fs_data_quiesce(struct fs *fs);
/* Delete fragments of chunks in the metadata deletion queue (background). */
void fs_data_gc_kick(struct fs *fs);
int fs_data_gc_run(struct fs *fs);

/* The folder of in was withdrawn from this account (fs_access.c): once
 * the reads, puts and commits under way are done, wipe its data key and
 * commitment key (also those a re-keying retired) and its unsaved
 * plaintext; from then on every read, write, truncate and commit of it is
 * EACCES, until the kernel forgets the inode.  Called with no lock held. */
void fs_data_withdraw(struct fs *fs, struct fs_inode *in);

/* Wipe the plaintext chunks of ino this mount cached (those being read
 * right now go when their reader is done). */
void fs_data_cache_drop(struct fs *fs, uint64_t ino);

/* Have fs->inval_inode(ino) called soon from a worker thread. */
void fs_data_inval_later(struct fs *fs, uint64_t ino);

/* ---- fs_conflict.c ---- */
/* A commit of in found another version committed since this mount's
 * changes began: save this mount's version (what fs_data_read returns
 * now) as a new file "NAME (conflict ACCOUNT YYYY-MM-DD HHMM).EXT" beside
 * it, under the folder's current key, audited as "conflict" (commit_lock
 * of in held).  0 or -EIO with a message. */
int fs_conflict_copy(struct fs *fs, struct fs_inode *in);

/* Health figures of the data path (fs_data.c), for the status. */
struct fs_health {
    uint64_t dirty_bytes;            /* write-back backlog */
    uint64_t writeback_errors;       /* puts that failed (data kept, retried) */
    uint64_t degraded_writes;        /* puts that stored fewer than k+m fragments */
    uint64_t repair_queue;           /* chunks with fragments still missing */
    uint64_t repairs_done;
    uint64_t repair_attempts_failed;
    uint64_t repairs_lost;           /* could not even be queued (out of memory) */
    uint64_t stuck_files;            /* closed files whose data waits in write-back */
    uint64_t fragment_syncs;         /* object-layer syncs made for commits */
    uint64_t file_commits;           /* data commits (chunk records, size) */
    char last_error[512];
    int64_t last_error_time;
};
void fs_data_health(struct fs *fs, struct fs_health *out);
void fs_health_note_error(struct fs *fs, const char *msg);
/* A put failed and none fully succeeded since: close waits for the
 * write-back so it can report the error. */
int fs_data_in_trouble(struct fs *fs);
/* in's folder was withdrawn from this account (fs_data_withdraw): its keys
 * and unsaved changes are gone, and so is anything to write back. */
int fs_data_withdrawn(struct fs_inode *in);
/* The last reference of in went but its write-back failed: keep it (the
 * caller's op reference) and retry; 0 if it could not be kept or a retry
 * cannot succeed (its folder was withdrawn: the data went with the keys). */
int fs_data_keep_for_retry(struct fs *fs, struct fs_inode *in);

/* ---- fs_repairq.c: the persisted repair queue (SPOOL.repair) ---- */
struct chunk_ref;
int fs_repairq_add(struct fs *fs, uint64_t ino, uint64_t idx, const uint8_t id[16]);
void fs_repairq_remove(struct fs *fs, const uint8_t (*ids)[16], size_t n);
/* Hand each listed chunk that is still current to cb (its record from the
 * metadata); stale lines are dropped from the file. */
int fs_repairq_load(struct fs *fs,
                    int (*cb)(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *ref),
                    void *arg, uint64_t *loaded);

/* ---- fs_endpoints.c: the endpoint watcher ---- */
#define ENDPOINT_CHECK_MS 5000
/* Check every endpoint's identity and reachability every ENDPOINT_CHECK_MS
 * (endpoint.h), logging and auditing each change. */
int fs_endpoints_start(struct fs *fs);
void fs_endpoints_stop(struct fs *fs);

/* ---- fs_access.c: running mounts follow revocation ---- */
/* Start the thread that re-checks the account's access every
 * accounts.revocation_check_seconds (before the mount serves); stop it
 * (after the FUSE loop ended; wipes the keys it dropped). */
int fs_access_start(struct fs *fs);
void fs_access_stop(struct fs *fs);
/* Check now (a notification said the vault changed). */
void fs_access_poke(struct fs *fs);
/* One check, in the caller's thread: 0 or -errno. */
int fs_access_check_now(struct fs *fs);
/* A name, symlink target or xattr of folder_id opens under no held key
 * version: if the folder's signed state names a newer one (a rotation this
 * mount has not picked up yet, and pactfs-admin rekey re-sealed the row
 * under it), adopt it now rather than at the next periodic check.  1 if
 * the keys changed (try again), else 0.  meta_lock held. */
int fs_keys_catch_up_locked(struct fs *fs, uint64_t folder_id);
/* The rights this mount holds on folder_id now (0 once withdrawn). */
uint32_t fs_folder_rights(struct fs *fs, uint64_t folder_id);

/* ---- fs_watch.c: several workstations on PostgreSQL ---- */
/* Join the vault's sessions and follow its change feed (nothing on SQLite);
 * before the mount serves.  0 or -errno with a message. */
int fs_watch_start(struct fs *fs);
/* End the session (its holds and locks go) and the thread; after the FUSE
 * loop ended, before the session is destroyed. */
void fs_watch_stop(struct fs *fs);
/* This mount's session id in the store, 0 without a watch. */
uint64_t fs_watch_session(struct fs *fs);

/* fs_status.c: rewrite the status file and metrics (syncer thread); audit
 * the repairs left at unmount. */
void fs_status_tick(struct fs *fs);
void fs_health_unmount_report(struct fs *fs, uint64_t chunks);

#endif
