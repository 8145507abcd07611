/* Audit queries: one filter, applied the same way by `pactfs-admin audit
 * query` over a local spool and by pactfs-auditd over its store
 * (server-side), and the client that asks a receiver.
 *
 * A filter is a set of named parameters, the same names on the command line
 * (docs/man/pactfs-admin.8) and in GET /v1/events (docs/auditd.md):
 *   account=NAME[,NAME..]   the session's account
 *   path=PATTERN            a path prefix (whole components: /A matches /A
 *                           and /A/x, not /AB), or a glob if it holds * ? [
 *                           (fnmatch, * also matches /); matched against
 *                           the path, a rename's two sides and dest
 *   file=ID[,ID..]          the file id (inode id) the event concerns
 *   op=OP[,OP..]            the operation
 *   result=ok|denied|error[,..]
 *   from=TIME, until=TIME   from inclusive, until exclusive; TIME is
 *                           YYYY-MM-DD (00:00 UTC) or
 *                           YYYY-MM-DDTHH:MM[:SS[.frac]][Z]
 *   follow_renames=1        with path: every event of the files (ids) that
 *                           ever matched path, under any later or earlier
 *                           name, besides the events matching path
 * Every parameter narrows (AND); values of a list are alternatives (OR).
 * An unknown name or a malformed value is refused with a message.
 */
#ifndef PACTFS_AUDIT_QUERY_H
#define PACTFS_AUDIT_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "audit_names.h"
#include "https.h"

struct json_object;

#define AUDIT_QUERY_PARAMS 16
/* Most lines a receiver returns for one GET /v1/events. */
#define AUDIT_QUERY_LIMIT 100000u

struct audit_filter {
    char *account, *path, *op, *result;   /* NULL: any (comma lists) */
    uint64_t *files;
    size_t nfiles;
    int64_t from_ns, until_ns;            /* valid if has_from / has_until */
    int has_from, has_until;
    int path_glob;
    int follow_renames;
    /* Only on the client: leave out chain bookkeeping (checkpoint events)
     * unless op names them. */
    int skip_checkpoints;
    /* On the receiver: an event whose names are sealed ("names") may match
     * a path (it cannot tell); the querying auditor decides after opening
     * them.  Off: a sealed event matches no path. */
    int sealed_may_match;
    /* The parameters as given, to forward to a receiver. */
    char *names[AUDIT_QUERY_PARAMS], *values[AUDIT_QUERY_PARAMS];
    size_t nparams;
};

void audit_filter_init(struct audit_filter *f);
void audit_filter_free(struct audit_filter *f);
/* Set one parameter by its name.  0; -ENOENT for a name that is not a
 * filter parameter; -EINVAL for a bad value (pfs_err says why). */
int audit_filter_set(struct audit_filter *f, const char *name, const char *value);
/* Does the event pass every parameter (follow_renames aside)? */
int audit_filter_match(const struct audit_filter *f, struct json_object *ev);
/* "YYYY-MM-DD[THH:MM[:SS[.frac]]][Z]" (UTC) into ns since the epoch: 0 or
 * -EINVAL. */
int audit_time_parse(const char *s, int64_t *ns);

/* Calls each on every line of a source in order; a non-zero return stops
 * the scan and is returned.  ev is the parsed line (the callee does not
 * keep it without json_object_get). */
typedef int (*audit_each_fn)(void *arg, struct json_object *ev, const char *line, size_t len);
typedef int (*audit_scan_fn)(void *src, audit_each_fn each, void *arg);

/* Emit every event of the source the filter selects, in the source's
 * order (two scans with follow_renames). */
int audit_query_run(const struct audit_filter *f, audit_scan_fn scan, void *src,
                    audit_each_fn emit, void *arg);

/* Lines of text (newline-terminated; an unterminated last line is left
 * out) through each; what names the source in messages. */
int audit_scan_text(const char *what, const char *text, size_t len, audit_each_fn each,
                    void *arg);

/* A spool file as a source (src = its path).  A line that is not a JSON
 * object is -EBADMSG naming it. */
int audit_scan_spool(void *path, audit_each_fn each, void *arg);

/* A receiver as a source: GET <url>/v1/events?vault=VAULT&<params> over
 * HTTPS (an auditor's client certificate in tls), the answer's lines in
 * order.  A refusal (4xx/5xx) is -EACCES (403), -EINVAL (400) or -EIO
 * with the receiver's message in pfs_err. */
struct audit_remote {
    const char *url;                 /* https://host:port */
    struct https_tls tls;
    const char *vault;
    const struct audit_filter *f;    /* parameters forwarded as given ... */
    int forward_path;                /* ... path, file and follow_renames only if set */
    unsigned timeout_ms;             /* 0 = 60000 */
    int truncated;                   /* set: an answer held AUDIT_QUERY_LIMIT lines (cut) */
};
int audit_scan_remote(void *remote, audit_each_fn each, void *arg);

/* A source whose sealed names are opened for an auditor: every
 * session-start's session key is unwrapped with names_priv (the audit
 * names key's private half, or NULL), and each event's "names" replaced by
 * its path and dest.  Events that cannot be opened keep "names". */
struct audit_revealed {
    audit_scan_fn scan;
    void *src;
    EVP_PKEY *names_priv;
    const char *vault;
    /* session keys seen so far (kept across scans) */
    struct audit_session_key *keys;
    size_t nkeys, capkeys;
    uint64_t sealed_unopened;   /* events whose names stayed sealed (last scan) */
};
int audit_scan_revealed(void *revealed, audit_each_fn each, void *arg);
/* Learn the session keys of every session-start of a source (a receiver's
 * filtered answer may leave them out). */
int audit_revealed_learn(struct audit_revealed *r, audit_scan_fn scan, void *src);
void audit_revealed_free(struct audit_revealed *r);

#endif
