/* pactfs-keyd's policy: lockouts and rate limits (per account and per
 * source address, counted in keyd.db), the login check, and who may call
 * what (admin token, officers' client certificates, anchor tokens).
 * docs/keyd.md. */
#ifndef PACTFS_KEYD_POLICY_H
#define PACTFS_KEYD_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include <microhttpd.h>

#include "keyd.h"

/* Count one failed proof from this source address; sets *retry_after when
 * that locks it. */
int keyd_source_record_failure(struct keyd *k, const char *remote, int64_t now,
                               unsigned *retry_after);

/* Check the authenticator of (vault, account), counting failures.  Returns
 * 0 with o->status 0 when it matches and the account is enabled; otherwise
 * o says why (401 uniform for unknown account or wrong auth, 429, 403). */
int keyd_authenticate(struct keyd *k, const char *remote, const struct fields *f,
                      const uint8_t *auth, struct account_row *row, struct outcome *o);

/* The caller may move the anchor: the admin token, or an unexpired anchor
 * token of an enrolled, enabled account of this vault. */
int keyd_anchor_caller_ok(struct keyd *k, const struct fields *f, bool *ok);

/* Admin calls carry "Authorization: Bearer <token>". */
bool keyd_admin_token_ok(struct keyd *k, struct MHD_Connection *c);
/* A verified client certificate whose CN is a configured officer. */
bool keyd_officer_ok(struct keyd *k, struct MHD_Connection *c, const char *cn);
/* With client_ca_file set, only a verified client certificate may call. */
bool keyd_client_cert_ok(struct keyd *k, struct MHD_Connection *c);

#endif
