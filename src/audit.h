/* Audit events: JSON lines, chained, spooled durably, shipped.
 *
 * Each event is one JSON object per line with: seq, time (RFC 3339 UTC with
 * nanoseconds), vault, host, account, uid, pid, process, op, path, result
 * ("ok", "denied" or an errno name), bytes, cp (seq of the last checkpoint
 * line before it, 0 if none), prev (hex SHA-256 of the previous line, all
 * zeros for the first).  A "checkpoint" event carries an RSA-PSS signature
 * by the account key over the hash of everything before it, so deletion,
 * insertion or editing is detected by audit_verify().  A handle with a
 * signer writes one at close and whenever the spool's run of events since
 * its last checkpoint (whoever wrote them) reaches AUDIT_SEAL_EVERY.
 *
 * audit_event() returns only after the line is durably in the spool
 * (group commit: concurrent callers share one fdatasync).  If the spool
 * cannot be written it returns -errno and the caller must fail the
 * operation (fail-closed).  Several processes (the daemon, pactfs-admin)
 * may append to one spool: appends hold flock(LOCK_EX) and re-read the
 * chain tail if another process wrote since.  Layout: docs/format-audit.md.
 */
#ifndef PACTFS_AUDIT_H
#define PACTFS_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/evp.h>

struct audit;

/* Most events a signing writer leaves between two checkpoints of the file. */
#define AUDIT_SEAL_EVERY 1024u
/* Further unsigned events audit_verify tolerates after the last checkpoint
 * when checking signatures: signer-less writers (pactfs-admin, failed
 * unlocks) and the tail of a writer that crashed before its closing one. */
#define AUDIT_UNSIGNED_SLACK 256u
/* Longest line audit_verify accepts (and audit_event writes). */
#define AUDIT_LINE_MAX (64u * 1024u)

struct audit_ctx {          /* who did it */
    uid_t uid;
    pid_t pid;
};

/* Open (create) the spool; resumes the chain from its last line.
 * signer may be NULL (then no checkpoints are signed); the handle takes its
 * own reference, the caller keeps and frees theirs.  account may be NULL
 * (written as ""). */
int audit_open(const char *spool_path, const char *vault_id, const char *account,
               EVP_PKEY *signer, struct audit **out);
void audit_close(struct audit *a);
/* Make this handle checkpoint after n events since the file's last
 * checkpoint (clamped to 1..AUDIT_SEAL_EVERY). */
void audit_set_seal_every(struct audit *a, unsigned n);

/* result: 0 = ok, -EACCES/-EPERM = denied, other -errno = failed. */
int audit_event(struct audit *a, const struct audit_ctx *who, const char *op,
                const char *path, int result, uint64_t bytes);

/* audit_event in two phases: append writes the event into the chain now
 * (same failure rules) and gives a ticket; wait returns once that event is
 * durable (group commit with every other waiter), or -errno.  Lets a caller
 * append inside its own transaction, under its lock, and wait for the
 * fdatasync after dropping the lock — before it answers. */
int audit_event_append(struct audit *a, const struct audit_ctx *who, const char *op,
                       const char *path, int result, uint64_t bytes, uint64_t *ticket);
int audit_event_wait(struct audit *a, uint64_t ticket);

/* Verify a spool: chain continuity, cp fields and checkpoint signatures.
 * Returns 0, or -EBADMSG with pfs_err naming the first bad line.  *events
 * gets the count checked.  key_for returns the public key of the account
 * that signed a checkpoint (caller keeps ownership), or NULL if unknown
 * (that is a verification failure); key_for NULL skips signature checks.
 * With key_for, a spool ending more than AUDIT_SEAL_EVERY +
 * AUDIT_UNSIGNED_SLACK events after its last checkpoint is refused. */
int audit_verify(const char *spool_path,
                 EVP_PKEY *(*key_for)(void *arg, const char *account), void *arg,
                 uint64_t *events);

/* ---- the chain rules, one line at a time ----
 * The one place the rules live: audit_verify, the shipper and
 * pactfs-auditd's batch check all go through audit_chain_check. */

struct json_object;

struct audit_chain {
    uint64_t next_seq;          /* 1 for an empty chain */
    uint64_t last_cp;           /* seq of the last checkpoint, 0 if none */
    char prev_hex[65];          /* hash of the last line, zeros when empty */
    char vault[65];             /* every line must name this vault ("" = any) */
    int skip_signatures;        /* 1: structure and hashes only (no key, or
                                 * re-reading a store checked on entry) */
};

/* The public key of the account that signed a checkpoint of vault, or NULL
 * if unknown; audit_chain_check frees the key it gets. */
typedef EVP_PKEY *(*audit_key_fn)(void *arg, const char *vault, const char *account);

void audit_chain_init(struct audit_chain *c, const char *vault);

/* Check that line (without its newline) continues the chain: seq, prev, cp,
 * vault, and for checkpoints signed_hash and, unless skip_signatures, the
 * RSA-PSS signature under key_for(arg, vault, account) (NULL key =
 * refused).  On success the chain advances; on failure it is unchanged and
 * why holds a sentence.  Returns 0 or -EBADMSG. */
int audit_chain_check(struct audit_chain *c, const char *line, size_t len,
                      audit_key_fn key_for, void *arg, char *why, size_t whylen);

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
