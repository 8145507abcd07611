/* Audit events: JSON lines, chained, spooled durably, shipped.
 *
 * Format 6 (docs/format-audit.md).  Every handle is one session (a mount,
 * one pactfs-admin run, ...) that writes its own chain inside the shared
 * spool: each line carries the spool-wide seq/prev chain and its session's
 * id, sseq and sprev (hash of the session's previous line).  A signed
 * session opens with a session-start event carrying its account's registry
 * proof (src/audit_proof.h), and its checkpoints sign the hash of its own
 * chain only: a checkpoint is checked under the key the session-start
 * proof gives, never the key of whichever account a line names, so no
 * account can re-sign another's events.  Format 6: the session-start also
 * carries the public half of an Ed25519 key made for this session only
 * (ckey); the session's first checkpoint, under the account's RSA key,
 * signs the session-start and so certifies it, and every later checkpoint
 * is an Ed25519 signature under it (about a fortieth of the RSA cost).  A
 * signing handle's sealer thread signs the session's chain up to its last
 * line off the append path (no event waits for the signature, none waits
 * for the mutex while it is made) and appends the checkpoint after the
 * lines that came meanwhile, so that no more than AUDIT_SEAL_EVERY events
 * stand unsigned and none longer than about AUDIT_SEAL_MS; at close, after
 * its session-end event, the handle signs on the spot.
 *
 * audit_event() returns only after the line is durably in the spool
 * (group commit: concurrent callers share one fdatasync).  If the spool
 * cannot be written it returns -errno and the caller must fail the
 * operation (fail-closed).  Several processes (the daemon, pactfs-admin)
 * may append to one spool: appends hold flock(LOCK_EX) and re-read the
 * spool's tail if another process wrote since.
 */
#ifndef PACTFS_AUDIT_H
#define PACTFS_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/evp.h>

struct audit;
struct json_object;

/* Event format written by this build (the "v" field): 6 = format 5 with a
 * per-session Ed25519 checkpoint key certified by the session's first
 * (RSA) checkpoint; 5 = format 4 with
 * checkpoints that name the line they sign (signed_sseq), so the sealer
 * signs an earlier line off the append path; 4 = format 3 with names
 * optionally sealed to the auditors (audit_names.h).  Format 3 and 4 lines
 * are read and verified by their rules (a checkpoint signs the line before
 * it). */
#define AUDIT_FORMAT 6
#define AUDIT_FORMAT_MIN_V3 3
/* Most events of a session without a checkpoint after them: a signing
 * session checkpoints after this many, and an unsigned session (no account
 * key: a failed unlock, pactfs-fsck) may hold no more than this many. */
#define AUDIT_SEAL_EVERY 64u
/* A signing session checkpoints no later than this after an event. */
#define AUDIT_SEAL_MS 1000u
/* Format 2 spools (one file-wide chain of checkpoints): most unsigned
 * lines after the last checkpoint that audit_verify accepts. */
#define AUDIT_V2_UNSIGNED_MAX 1280u
/* Longest line audit_verify accepts (and audit_event writes). */
#define AUDIT_LINE_MAX (64u * 1024u)

struct audit_ctx {          /* who did it */
    uid_t uid;
    pid_t pid;
};

/* Who writes a session.  signer NULL: an unsigned session (no
 * checkpoints; at most AUDIT_SEAL_EVERY events verify).  With a signer,
 * proof is its registry proof (audit_proof_build) and account_id its id. */
struct audit_identity {
    const char *account;        /* NULL = "" */
    uint64_t account_id;        /* 0 if unknown */
    EVP_PKEY *signer;           /* the handle takes its own reference */
    const char *proof;          /* hex registry proof; required with signer */
    /* The vault's audit names key (audit_names_for_writer), or NULL: with
     * it, every path and dest of the session is sealed to the auditors. */
    EVP_PKEY *names_pub;
    const char *names_kid;
    /* The session's Ed25519 checkpoint key, or NULL for a fresh random
     * one (the normal case; tests pass their own to forge checkpoints the
     * way the key's holder could).  The handle takes its own reference. */
    EVP_PKEY *checkpoint_key;
};

/* Open (create) the spool, resume its chain from its last line and start a
 * session: a session-start event (and, signed, its first checkpoint),
 * durable before this returns.  id may be NULL (unsigned, account ""). */
int audit_open(const char *spool_path, const char *vault_id, const struct audit_identity *id,
               struct audit **out);
/* The session id (32 hex) of a handle. */
const char *audit_session_id(const struct audit *a);
void audit_close(struct audit *a);
/* Make this handle checkpoint after n events of its session (clamped to
 * 1..AUDIT_SEAL_EVERY). */
void audit_set_seal_every(struct audit *a, unsigned n);

/* What an event concerns beyond its path (all optional). */
#define AUDIT_SET_MODE  0x1u
#define AUDIT_SET_OWNER 0x2u
#define AUDIT_SET_ATIME 0x4u
#define AUDIT_SET_MTIME 0x8u
#define AUDIT_SET_SIZE  0x10u
struct audit_detail {
    uint64_t file;              /* inode id ("file"), 0 = none */
    const char *dest;           /* rename/link destination ("dest") */
    unsigned set;               /* AUDIT_SET_*: which fields below changed */
    uint32_t mode;              /* "mode", octal permission bits */
    uint32_t uid, gid;          /* "owner": "uid:gid" */
    int64_t atime_ns, mtime_ns; /* "atime", "mtime": RFC 3339 */
    uint64_t size;              /* "size" */
    const char *before, *after; /* an administrative change: the state before and
                                   after ("before", "after"), NULL = none */
    /* A service's own fields (pactfs-keyd: the request's vault, account,
     * answer...): the object extra under the key extra_key; NULL = none.
     * The event takes its own reference. */
    const char *extra_key;
    struct json_object *extra;
};

/* result: 0 = ok, -EACCES/-EPERM = denied, other -errno = error; the line
 * carries "result" ("ok", "denied" or "error") and, unless ok, "errno". */
int audit_event(struct audit *a, const struct audit_ctx *who, const char *op,
                const char *path, int result, uint64_t bytes);

/* audit_event in two phases: append writes the event into the chain now
 * (same failure rules) and gives a ticket; wait returns once that event is
 * durable (group commit with every other waiter), or -errno.  Lets a caller
 * append inside its own transaction, under its lock, and wait for the
 * fdatasync after dropping the lock — before it answers. */
int audit_event_append(struct audit *a, const struct audit_ctx *who, const char *op,
                       const char *path, int result, uint64_t bytes, uint64_t *ticket);
/* The same with details (d may be NULL). */
int audit_event_detail(struct audit *a, const struct audit_ctx *who, const char *op,
                       const char *path, int result, uint64_t bytes,
                       const struct audit_detail *d);
int audit_event_append_detail(struct audit *a, const struct audit_ctx *who, const char *op,
                              const char *path, int result, uint64_t bytes,
                              const struct audit_detail *d, uint64_t *ticket);
int audit_event_wait(struct audit *a, uint64_t ticket);

/* Deferred group commit (the mounted daemon).  ms > 0: from now on
 * audit_event*() and audit_event_wait() return once the event is written
 * to the spool file (the kernel holds it: a crash of the process cannot
 * lose it) without waiting for its fdatasync, and a committer thread makes
 * every event durable no later than ms (at most AUDIT_COMMIT_MS_MAX) after
 * it was written, one fdatasync for all of them.  A failed fdatasync is
 * sticky as ever: every later event fails.  Whoever makes state durable
 * that events describe (the metadata store) calls audit_sync first: the
 * write-ahead rule.  ms 0: stop the committer, make everything durable and
 * go back to waiting per event.  0 or -errno. */
#define AUDIT_COMMIT_MS 4u
#define AUDIT_COMMIT_MS_MAX 100u
int audit_set_group_commit(struct audit *a, unsigned ms);
/* Make every line written to the spool file so far durable, by this or any
 * other handle or process: returns once an fdatasync that began after the
 * call has completed (at once if nothing was written since the last one
 * began).  0, or -errno (sticky, as for events). */
int audit_sync(struct audit *a);

/* Format 2 checkpoints name their signer: the public key of that account
 * (caller keeps ownership), or NULL if unknown.  Only format 2 lines use it. */
typedef EVP_PKEY *(*audit_v2_key_fn)(void *arg, const char *account);

struct audit_verify_result {
    uint64_t events;            /* lines checked */
    uint64_t sessions;          /* format 3 sessions */
    uint64_t unsigned_sessions; /* ... without a signer (no account vouches for them) */
    uint64_t v2_lines;          /* lines in format 2 (before the first format 3 line) */
};

/* Verify a spool: the spool chain, every session's chain, the registry
 * proof of every signed session against root_fp (the vault's pinned root
 * fingerprint) and every checkpoint under its session's key.  Returns 0,
 * or -EBADMSG with pfs_err naming the first bad line.  root_fp NULL and
 * v2_key_for NULL: structure and hashes only. */
int audit_verify(const char *spool_path, const char *root_fp, audit_v2_key_fn v2_key_for,
                 void *arg, struct audit_verify_result *res);

/* ---- the chain rules, one line at a time ----
 * The one place the rules live: audit_verify, the shipper and
 * pactfs-auditd's batch check all go through audit_chain_check. */

struct audit_session_state;

struct audit_chain {
    uint64_t next_seq;          /* 1 for an empty chain */
    uint64_t last_cp;           /* format 2: seq of the last checkpoint, 0 if none */
    char prev_hex[65];          /* hash of the last line, zeros when empty */
    char vault[65];             /* every line must name this vault ("" = any) */
    char root_fp[65];           /* the vault's pinned root fingerprint ("" = unknown) */
    int skip_signatures;        /* 1: structure and hashes only (no key, or
                                 * re-reading a store checked on entry) */
    int seen_v3;                /* a format 3 line was seen: no format 2 after it */
    uint64_t v2_lines;
    uint64_t sessions, unsigned_sessions;
    struct audit_session_state *open;   /* sessions not yet closed */
    size_t nopen, capopen;
};

/* Format 2 checkpoints: the public key of the account that signed a
 * checkpoint of vault, or NULL if unknown; audit_chain_check frees it. */
typedef EVP_PKEY *(*audit_key_fn)(void *arg, const char *vault, const char *account);

/* root_fp may be NULL (then signed sessions cannot be checked: refused
 * unless skip_signatures). */
void audit_chain_init(struct audit_chain *c, const char *vault, const char *root_fp);
void audit_chain_free(struct audit_chain *c);
/* dst = a deep copy of src (dst is overwritten, not freed); 0 or -ENOMEM. */
int audit_chain_copy(struct audit_chain *dst, const struct audit_chain *src);

/* Check that line (without its newline) continues the chain: seq, prev,
 * vault, its session's sseq, sprev and account, the registry proof of a
 * session-start and every checkpoint's signature (unless skip_signatures);
 * format 2 lines by the format 2 rules (cp, key_for).  On success the chain
 * advances; on failure it is unchanged and why holds a sentence.  Returns 0
 * or -EBADMSG. */
int audit_chain_check(struct audit_chain *c, const char *line, size_t len,
                      audit_key_fn key_for, void *arg, char *why, size_t whylen);
/* At the end of a stream: refuse a format 2 tail longer than allowed. */
int audit_chain_finish(const struct audit_chain *c, char *why, size_t whylen);

/* One line (at most AUDIT_LINE_MAX bytes) as a JSON object, every byte
 * consumed; NULL otherwise.  Release with json_object_put. */
struct json_object *audit_line_parse(const char *line, size_t len);
/* Fields of a parsed line: an integer (0 or -EBADMSG), a string (or NULL). */
int audit_field_uint(struct json_object *o, const char *key, uint64_t *out);
const char *audit_field_str(struct json_object *o, const char *key);
/* The seq of a line; 0 or -EBADMSG. */
int audit_line_seq(const char *line, size_t len, uint64_t *seq);
/* Hex SHA-256 of a line (without its newline): what the next line's prev holds. */
void audit_line_hash(const char *line, size_t len, char out[65]);

#endif
