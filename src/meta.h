/* The metadata store: one interface, one SQL layer (meta_sql.c: schema,
 * statements, rules) over one driver per database (meta_sqlite.c embedded
 * default, meta_pg.c for many workstations).
 *
 * What it holds is listed in docs/format.md ("Metadata schema"); every value
 * that would reveal content (names, symlink targets, xattrs, keys) arrives
 * here already encrypted, so the database operator sees tree shape, sizes
 * and times only.  The schema is versioned; opening migrates it forward.
 *
 * Every call returns 0 or a negative errno (-ENOENT when a row is absent,
 * -EEXIST on a unique conflict, -EIO for a backend failure with pfs_err set).
 * Calls are not thread-safe on one handle: the caller serialises them.
 * meta_begin/meta_commit group calls into one atomic, durable transaction;
 * calls outside a transaction each commit on their own.  Transactions do not
 * nest (meta_begin inside one is -EBUSY).  A failed commit leaves nothing
 * written.  With PostgreSQL an unexpected error (lost connection, a foreign
 * key naming a missing inode) aborts the open transaction: roll back.
 *
 * List callbacks: return 0 to go on, nonzero to stop; a negative value is
 * returned by the list call, a positive one makes it return 0.  A callback
 * may call other meta_* functions on the same handle.
 * Extended attributes use -ENODATA (not -ENOENT) for a missing name.
 * Schema, limits and what the database operator sees: docs/format-metadata.md.
 */
#ifndef PACTFS_META_H
#define PACTFS_META_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "object.h"

#define META_ROOT_INO 1          /* the mount's root: virtual, lists folders */
#define META_SCHEMA_VERSION 4
#define META_BIND_MAX 64         /* bytes of a directory entry's binding */
#define META_COMMIT_MAX 64       /* bytes of a file's commitment record */
#define META_NAME_MAX 512        /* bytes of an encrypted name */
#define META_ACCOUNT_NAME_MAX 64

/* Roles (bit mask). */
#define ROLE_SYSADMIN  0x1u
#define ROLE_DATAADMIN 0x2u
#define ROLE_AUDITOR   0x4u
#define ROLE_USER      0x8u

/* Rights on a folder (bit mask). */
#define RIGHT_READ   0x1u
#define RIGHT_WRITE  0x2u
#define RIGHT_MANAGE 0x4u

struct meta;

struct meta_account {
    uint64_t id;
    char name[META_ACCOUNT_NAME_MAX + 1];
    uint32_t roles;
    int disabled;
    uint8_t *pubkey;        /* SubjectPublicKeyInfo DER, malloc'd */
    size_t pubkey_len;
    uint8_t *sealed_key;    /* sealed private key blob, malloc'd */
    size_t sealed_key_len;
    int64_t created;        /* unix seconds */
};
void meta_account_clear(struct meta_account *a);   /* frees the blobs */

struct meta_folder {
    uint64_t id;
    uint64_t root_ino;      /* the folder's top directory */
    uint32_t key_version;   /* current folder key version for new data */
    int64_t created;
};

struct meta_envelope {
    uint64_t folder_id;
    uint64_t account_id;
    uint32_t key_version;
    uint32_t rights;        /* RIGHT_* */
    uint64_t granted_by;    /* account id of the granter (0 at vault init) */
    uint8_t *wrapped;       /* RSA-OAEP envelope, malloc'd */
    size_t wrapped_len;
};
void meta_envelope_clear(struct meta_envelope *e);

struct meta_inode {
    uint64_t ino;
    uint64_t folder_id;     /* 0 only for the root */
    uint32_t mode;          /* type and permission bits (S_IFREG|0644 ...) */
    uint32_t uid, gid;
    uint32_t nlink;
    uint64_t size;
    uint64_t rdev;
    int64_t atime_ns, mtime_ns, ctime_ns;
    uint32_t key_version;   /* folder key version that wraps the DEK */
    uint8_t wrapped_dek[96];/* regular files: dek_wrap output */
    uint32_t wrapped_dek_len;
    uint8_t commitment[META_COMMIT_MAX]; /* regular files: filecommit.h record */
    uint32_t commitment_len;             /* 0: none (format 1, or removed) */
};

struct meta_dirent {
    uint64_t cookie;        /* stable position for readdir resumption (> 0) */
    uint64_t ino;
    uint32_t mode;          /* type bits of the target, for d_type */
    const uint8_t *name;    /* encrypted name; valid during the callback */
    size_t name_len;
    const uint8_t *bind;    /* binding to the child (envelope.h), maybe empty */
    size_t bind_len;
};

/* One entry found by name. */
struct meta_dirent_rec {
    uint64_t ino;
    uint32_t mode;
    uint8_t bind[META_BIND_MAX];
    size_t bind_len;
};

/* ---- opening ---- */
struct pactfs_conf;
/* The existing store the configuration names (metadata.backend): the
 * SQLite file at metadata.path or the PostgreSQL conninfo.  The schema is
 * migrated forward (docs/format-metadata.md). */
int meta_open(const struct pactfs_conf *c, struct meta **out);
/* SQLite file at path; create: make it (and the schema) if missing. */
int meta_open_sqlite(const char *path, int create, struct meta **out);
/* PostgreSQL by libpq conninfo (TLS settings inside it). */
int meta_open_pg(const char *conninfo, int create, struct meta **out);
void meta_close(struct meta *m);

/* ---- transactions ---- */
int meta_begin(struct meta *m);
int meta_commit(struct meta *m);
int meta_rollback(struct meta *m);

/* ---- durability ---- */
/* deferred = 1: meta_commit returns once the transaction is atomic and
 * visible but maybe not yet on disk (SQLite: synchronous=NORMAL in WAL, so a
 * crash may lose the last commits, never half of one); meta_sync() then makes
 * every committed transaction durable.  Backends whose commits are always
 * durable (PostgreSQL) accept it and do nothing.  Default 0: every commit is
 * durable when meta_commit returns. */
int meta_set_deferred_sync(struct meta *m, int deferred);
/* Make every transaction committed so far durable (outside a transaction). */
int meta_sync(struct meta *m);
/* The write-ahead rule: fn(arg) runs before anything committed becomes
 * durable through this handle -- before every COMMIT whose commit is
 * durable at once (PostgreSQL; SQLite unless deferred) and before
 * meta_sync -- and a failure fails that commit or sync.  (A single call
 * outside meta_begin/meta_commit on a handle that is not deferred commits
 * by itself without the hook: audited changes use a transaction.)  The vault makes
 * its audit spool durable there (audit_sync), so no metadata change is
 * ever durable before the audit event describing it.  fn NULL: none. */
void meta_set_presync(struct meta *m, int (*fn)(void *arg), void *arg);
/* fn(arg, ino) runs at every create, update or delete of an inode row
 * through this handle, whatever its result, so the caller can tell a row it
 * remembers from one it must read again.  fn NULL: none. */
void meta_set_row_hook(struct meta *m, void (*fn)(void *arg, uint64_t ino), void *arg);

/* ---- vault parameters (small key/value blobs) ---- */
int meta_param_get(struct meta *m, const char *key, uint8_t **val, size_t *len);
int meta_param_set(struct meta *m, const char *key, const void *val, size_t len);

/* ---- accounts ---- */
int meta_account_add(struct meta *m, struct meta_account *a);          /* sets a->id */
int meta_account_get(struct meta *m, uint64_t id, struct meta_account *out);
int meta_account_get_by_name(struct meta *m, const char *name, struct meta_account *out);
int meta_account_update(struct meta *m, const struct meta_account *a); /* all fields by id */
int meta_account_list(struct meta *m,
                      int (*cb)(void *arg, const struct meta_account *a), void *arg);

/* ---- folders and envelopes ---- */
int meta_folder_add(struct meta *m, struct meta_folder *f);            /* sets f->id */
int meta_folder_get(struct meta *m, uint64_t id, struct meta_folder *out);
int meta_folder_update(struct meta *m, const struct meta_folder *f);
int meta_folder_list(struct meta *m,
                     int (*cb)(void *arg, const struct meta_folder *f), void *arg);
int meta_envelope_put(struct meta *m, const struct meta_envelope *e);  /* insert or replace */
int meta_envelope_get(struct meta *m, uint64_t folder_id, uint64_t account_id,
                      uint32_t key_version, struct meta_envelope *out);
int meta_envelope_delete(struct meta *m, uint64_t folder_id, uint64_t account_id);
/* Every envelope of an account (all folders, all key versions). */
int meta_envelope_list_account(struct meta *m, uint64_t account_id,
                               int (*cb)(void *arg, const struct meta_envelope *e), void *arg);
int meta_envelope_list_folder(struct meta *m, uint64_t folder_id,
                              int (*cb)(void *arg, const struct meta_envelope *e), void *arg);

/* ---- inodes ---- */
/* Insert; ino == 0 asks for a fresh number (set in i->ino), otherwise that
 * number is used (the root). */
int meta_inode_create(struct meta *m, struct meta_inode *i);
int meta_inode_get(struct meta *m, uint64_t ino, struct meta_inode *out);
int meta_inode_update(struct meta *m, const struct meta_inode *i);
/* Remove the inode, its symlink target, xattrs and chunk records; every
 * chunk goes to the deletion queue.  -EBUSY while a directory entry names it
 * (as target or parent). */
int meta_inode_delete(struct meta *m, uint64_t ino);
/* meta_inode_delete of n inodes in the caller's transaction, in a few
 * statements for all (SQL backends); those already gone are skipped.
 * -EBUSY while a directory entry names one of them: roll back. */
int meta_inodes_delete(struct meta *m, const uint64_t *inos, size_t n);
/* Inodes with nlink == 0 (left by a crash while open). */
int meta_inode_list_orphans(struct meta *m,
                            int (*cb)(void *arg, uint64_t ino), void *arg);
int meta_symlink_set(struct meta *m, uint64_t ino, const uint8_t *target, size_t len);
int meta_symlink_get(struct meta *m, uint64_t ino, uint8_t **target, size_t *len);

/* ---- directory entries (name = encrypted name bytes) ---- */
int meta_dirent_lookup(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                       uint64_t *ino);
/* The whole entry (target, type, binding); -ENOENT without a message. */
int meta_dirent_find(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                     struct meta_dirent_rec *out);
int meta_dirent_add(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                    uint64_t ino, uint32_t mode, const uint8_t *bind, size_t bind_len);
/* Replace the binding of an existing entry (pactfs-admin upgrade). */
int meta_dirent_set_bind(struct meta *m, uint64_t parent, const uint8_t *name, size_t len,
                         const uint8_t *bind, size_t bind_len);
int meta_dirent_remove(struct meta *m, uint64_t parent, const uint8_t *name, size_t len);
/* A row sealed again under another folder key version (pactfs-admin rekey,
 * src/rekey.c), as one compare-and-swap: the row is changed only if it is
 * still exactly the old one (a mount that changed it meanwhile wins).
 *   DIRENT   owner = parent, ino = the child; name, val = the binding
 *   SYMLINK  owner = ino; val = the target (name unused)
 *   XATTR    owner = ino; name, val = the attribute's name and value
 * 0, or -ENOENT (no message) when the row is no longer the old one. */
enum meta_reseal_kind { META_RESEAL_DIRENT, META_RESEAL_SYMLINK, META_RESEAL_XATTR };
struct meta_reseal {
    enum meta_reseal_kind kind;
    uint64_t owner, ino;
    const uint8_t *old_name, *old_val, *new_name, *new_val;
    size_t old_name_len, old_val_len, new_name_len, new_val_len;
};
int meta_reseal(struct meta *m, const struct meta_reseal *r);
/* Entries with cookie > after, in cookie order; cb returns nonzero to stop. */
int meta_dirent_list(struct meta *m, uint64_t parent, uint64_t after,
                     int (*cb)(void *arg, const struct meta_dirent *d), void *arg);
int meta_dirent_count(struct meta *m, uint64_t parent, uint64_t *count);

/* ---- chunks ---- */
int meta_chunk_get(struct meta *m, uint64_t ino, uint64_t idx, struct chunk_ref *out);
/* Insert or replace; a replaced chunk goes to the deletion queue.
 * ref->version must exceed meta_chunk_max_version (else -EINVAL): a version
 * is never reused for (ino, idx), even after a truncate. */
int meta_chunk_put(struct meta *m, uint64_t ino, uint64_t idx, const struct chunk_ref *ref);
/* Remove chunk records with idx >= from_idx (to the deletion queue). */
int meta_chunk_truncate(struct meta *m, uint64_t ino, uint64_t from_idx);
/* Chunks of one inode (ino != 0) or of every inode (ino == 0). */
int meta_chunk_list(struct meta *m, uint64_t ino,
                    int (*cb)(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r),
                    void *arg);
/* The inode row (into *out) and every chunk record of it (to cb, in index
 * order), read in one statement and so from one snapshot of the store: a
 * commit made through another connection is seen wholly or not at all.
 * The per-file commitment is checked against what this returns, so a
 * mismatch is never a race with another workstation (docs/design.md, "The
 * read path").  -ENOENT (with a message) when there is no such inode; cb
 * returns nonzero to stop (as meta_chunk_list). */
int meta_inode_get_chunks(struct meta *m, uint64_t ino, struct meta_inode *out,
                          int (*cb)(void *arg, uint64_t ino, uint64_t idx,
                                    const struct chunk_ref *r),
                          void *arg);
/* Highest chunk version ever used for (ino, idx), 0 if none. */
int meta_chunk_max_version(struct meta *m, uint64_t ino, uint64_t idx, uint64_t *version);

/* ---- deletion queue (fragments whose metadata is gone) ---- */
int meta_gc_list(struct meta *m, unsigned limit,
                 int (*cb)(void *arg, uint64_t id, const struct chunk_ref *r), void *arg);
int meta_gc_done(struct meta *m, uint64_t id);

/* ---- packs (docs/format-objects.md): objects holding many chunks' fragments ---- */
/* If no chunk record and no deletion queue entry names the pack any more,
 * put it on the free list (since now); else nothing. */
int meta_pack_release(struct meta *m, const uint8_t *pack, size_t len);
/* Packs on the free list since before `before` (unix seconds), oldest
 * first, at most limit; cb returns nonzero to stop. */
int meta_free_packs_list(struct meta *m, int64_t before, unsigned limit,
                         int (*cb)(void *arg, const uint8_t *pack, size_t len), void *arg);
/* Whether a chunk record or a deletion queue entry names the pack. */
int meta_pack_referenced(struct meta *m, const uint8_t *pack, size_t len, int *referenced);
/* Take the pack off the free list (its objects are deleted, or it is in use). */
int meta_free_pack_delete(struct meta *m, const uint8_t *pack, size_t len);

/* ---- extended attributes (name and value already encrypted) ---- */
int meta_xattr_set(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen,
                   const uint8_t *val, size_t vlen, int flags /* XATTR_CREATE/REPLACE */);
int meta_xattr_get(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen,
                   uint8_t **val, size_t *vlen);
int meta_xattr_remove(struct meta *m, uint64_t ino, const uint8_t *name, size_t nlen);
int meta_xattr_list(struct meta *m, uint64_t ino,
                    int (*cb)(void *arg, const uint8_t *name, size_t nlen), void *arg);

/* ---- statistics for statfs ---- */
/* inodes: rows in the inode table; bytes: plaintext bytes held by the
 * committed chunks (what the vault stores, holes excluded). */
int meta_stats(struct meta *m, uint64_t *inodes, uint64_t *bytes);
/* Plaintext bytes held by the committed chunks of one file (its st_blocks:
 * holes of a sparse file hold nothing). */
int meta_chunk_bytes(struct meta *m, uint64_t ino, uint64_t *bytes);

/* The backend's function table; each backend file fills one. */
struct meta_ops;
struct meta {
    const struct meta_ops *ops;
    void *impl;
    int (*presync)(void *arg);  /* meta_set_presync */
    void *presync_arg;
    void (*row_hook)(void *arg, uint64_t ino);  /* meta_set_row_hook */
    void *row_hook_arg;
};

#endif
