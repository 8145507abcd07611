/* Audit shipper: sends the local audit spool to an audit receiver.
 *
 * A thread tails the spool (src/audit.h, docs/format-audit.md) from a
 * durable cursor file, <spool>.cursor, and POSTs batches of complete lines
 * as application/x-ndjson to <url>/v1/events over HTTPS (libcurl,
 * verification always on, TLS >= 1.2, optional client certificate).  The
 * cursor advances only when the receiver answers 2xx; failures are retried
 * with bounded exponential backoff.  After a crash the shipper resends from
 * the cursor and the receiver (pactfs-auditd) drops lines it already holds,
 * so nothing is lost or duplicated.  The body is plain newline-delimited
 * JSON, so any collector that takes NDJSON over HTTP can receive it.
 *
 * The chain rules the receiver applies are audit_chain_check() in audit.h.
 * Protocol and operation: docs/auditd.md.
 */
#ifndef PACTFS_AUDIT_SHIP_H
#define PACTFS_AUDIT_SHIP_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "audit.h"
#include "conf.h"

#define AUDIT_SHIP_MAX_LINES 512u              /* lines per batch */
#define AUDIT_SHIP_MAX_BYTES (1024u * 1024u)   /* bytes per batch */
#define AUDIT_SHIP_CURSOR_SUFFIX ".cursor"

struct audit_ship_opts {
    const char *spool_path;     /* the spool (cursor: spool_path + ".cursor") */
    const char *url;            /* https://host:port (no trailing /v1/events) */
    const struct tls_conf *tls; /* CA bundle, optional client cert; may be NULL */
    unsigned poll_ms;           /* how often to look for new lines; 0 = 200 */
    unsigned max_lines;         /* 0 = AUDIT_SHIP_MAX_LINES */
    size_t max_bytes;           /* 0 = AUDIT_SHIP_MAX_BYTES */
    unsigned backoff_min_ms;    /* first retry delay; 0 = 250 */
    unsigned backoff_max_ms;    /* retry delay ceiling; 0 = 15000 */
    unsigned timeout_ms;        /* one request; 0 = 30000 */
};

/* Where the shipper stands: everything before offset (seq, whose line
 * hashes to hash) was acknowledged by the receiver. */
struct audit_cursor {
    uint64_t offset;            /* byte offset after the last acknowledged line */
    uint64_t seq;               /* its seq, 0 if none yet */
    char hash[65];              /* hex SHA-256 of that line, "" if none */
};

struct audit_ship_status {
    struct audit_cursor cursor; /* last acknowledged position */
    uint64_t batches_sent;      /* acknowledged batches since start */
    unsigned failures;          /* consecutive failed attempts (0 after an ack) */
    int last_error;             /* 0 or -errno of the last failure */
    char last_message[256];     /* its pfs_err text */
};

struct audit_ship;

/* Validate the options (https:// url, cert and key together) and start the
 * shipping thread.  A missing spool is not an error (it is waited for). */
int audit_ship_start(const struct audit_ship_opts *o, struct audit_ship **out);

/* Stop the thread after shipping what the spool holds now, for at most
 * drain_ms (in-flight requests are cut at the deadline).  Returns 0 if
 * everything was acknowledged, else -ETIMEDOUT or the last error with
 * pfs_err set; the rest stays in the spool for the next run.  Frees s. */
int audit_ship_stop(struct audit_ship *s, unsigned drain_ms);

/* Wake the thread now (new lines appended). */
void audit_ship_kick(struct audit_ship *s);

void audit_ship_get_status(struct audit_ship *s, struct audit_ship_status *st);

/* Ship synchronously until the spool's current end is acknowledged, or the
 * first failure (no retry).  *batches counts acknowledged batches. */
int audit_ship_once(const struct audit_ship_opts *o, uint64_t *batches);

/* Ship what the spool of vault configuration c holds now, once, with
 * requests cut after timeout_ms: how pactfs-admin and pactfs-fsck send their
 * events with nothing mounted.  0 when c names no receiver; on failure the
 * events stay in the spool (the buffer) for the next shipping, pfs_err says
 * why. */
int audit_ship_pending(const struct pactfs_conf *c, unsigned timeout_ms);

/* How far shipping lags behind the spool: pactfs status and the metrics. */
struct audit_backlog {
    uint64_t spool_bytes;
    uint64_t unshipped_bytes;       /* spool bytes after the acknowledged cursor */
    uint64_t acknowledged_seq;
    int64_t oldest_unshipped_ns;    /* "time" of the first line not acknowledged; 0: none */
    int64_t last_ack_s;             /* when the receiver last acknowledged (the cursor
                                     * file's mtime); 0: never */
};
/* cur: the shipper's cursor if it runs in this process, NULL to read the
 * cursor file.  0 or -errno (a missing spool is empty). */
int audit_ship_backlog(const char *spool_path, const struct audit_cursor *cur,
                       struct audit_backlog *b);

/* The cursor file.  load: a missing file is the start of the spool (0);
 * a malformed one is -EBADMSG.  store: tmp file, fsync, rename, fsync dir. */
int audit_cursor_load(const char *spool_path, struct audit_cursor *c);
int audit_cursor_store(const char *spool_path, const struct audit_cursor *c);

#endif
