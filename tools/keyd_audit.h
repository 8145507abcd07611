/* What pactfs-keyd records: every request and its outcome in its own
 * audit_log, in the project's audit format signed with keyd's audit key
 * (docs/keyd.md "Its own audit log"), the officers' actions on each vault's trail in
 * the project's audit format (docs/format-audit.md) with a shipper per
 * vault to pactfs-auditd, and, in tests only, the raw request bodies. */
#ifndef PACTFS_KEYD_AUDIT_H
#define PACTFS_KEYD_AUDIT_H

#include <stdbool.h>

#include "https_service.h"
#include "keyd.h"

/* Open audit_log for this run: the audit signing key (made at the first
 * start), a JSON-lines log of an earlier version or a log of another key
 * renamed aside, a signed session started.  keyd_audit_close ends it. */
int keyd_audit_open(struct keyd *k);
void keyd_audit_close(struct keyd *k);

/* One event in audit_log for the request op from remote, durable before
 * this returns.  -EIO if it could not be written (the caller fails closed). */
int keyd_audit_write(struct keyd *k, const char *remote, const char *op,
                     const struct fields *f, const struct outcome *o);

/* Is v a vault id (32 lower-case hex digits), so that it names a trail? */
bool keyd_vault_id_ok(const char *v);
/* officer's action op on f->account, answered status, on f->vault's trail;
 * o (may be NULL) adds the account's state before and after ("before",
 * "after" details) when the handler described them. */
int keyd_trail_event(struct keyd *k, const char *officer, const char *op,
                     const struct fields *f, unsigned status, const struct outcome *o);
/* Ship vault's trail (audit_url), starting its shipper if need be. */
void keyd_trail_ship(struct keyd *k, const char *vault);
/* At start: create trail_dir, ship what every vault's trail holds. */
int keyd_trail_setup(struct keyd *k);
void keyd_trail_teardown(struct keyd *k);

/* Test aid (debug_capture): the raw body the service received. */
void keyd_capture_body(struct keyd *k, const char *url, const struct https_request *r);

#endif
