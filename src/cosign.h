/* Two sysadmins for the sensitive registry changes (docs/accounts.md,
 * "Co-signature"): while a vault has two or more enabled sysadmins and its
 * co-signature setting is on (the default), a change that gives or takes
 * the sysadmin or dataadmin role is only proposed by the first sysadmin
 * (a pending change it signs) and applied when a second, different
 * sysadmin makes the same change.
 *
 * Storage (vault parameters, each blob(tbs) | blob(RSA-PSS signature)):
 *   "policy.cosign"    the setting, content "required=yes" or "required=no"
 *   "pending.<key>"    a proposal (empty once applied)
 *   tbs = "PFSQ" | u8 1 | str vault_id | str key | str content |
 *         u64 signer_id | i64 time
 * signed by an enabled sysadmin verified in the registry.
 */
#ifndef PACTFS_COSIGN_H
#define PACTFS_COSIGN_H

#include <stdint.h>

#include "vault.h"

#define COSIGN_PENDING 1          /* cosign_gate: stored as a proposal */
#define COSIGN_MAX_AGE_S (7 * 24 * 3600)

/* Is a co-signature needed now?  *required: the vault's setting (on unless
 * a verified setting says off); *sysadmins: enabled, verified sysadmins. */
int cosign_needed(struct vault *v, int *required, unsigned *sysadmins);

/* The unlocked sysadmin wants the change named key with content (the
 * same text for the same change).  0: apply it now (*cosigner: the
 * proposer it confirms, or 0 when no co-signature is needed);
 * COSIGN_PENDING: stored as this sysadmin's proposal; -errno. */
int cosign_gate(struct vault *v, const char *key, const char *content, uint64_t *cosigner);

/* As cosign_gate; when it applies a confirmed proposal, *attest (malloc'd)
 * is blob(the proposal) | blob(this sysadmin's confirmation, signed now):
 * the co-signature clients check (registry.h, "Co-signed roles"). */
int cosign_gate_attest(struct vault *v, const char *key, const char *content,
                       uint64_t *cosigner, uint8_t **attest, size_t *attest_len);

/* Store the co-signature of account_id's privileged roles
 * ("registry.cosig.<id>"; NULL empties it), in the caller's transaction. */
int cosign_store_attest(struct vault *v, uint64_t account_id, const uint8_t *attest,
                        size_t len);

/* Set the vault's co-signature setting (signed by the unlocked sysadmin);
 * attest: the two sysadmins' items that switched it off (NULL if none). */
int cosign_set_required(struct vault *v, int required, const uint8_t *attest, size_t len);

/* After a registry change, in the caller's transaction: the next step of
 * the signed role roster (roster.h) with account id at (roles' sysadmin and
 * dataadmin bits, disabled); id 0 changes no account, required -1 keeps
 * the setting.  attest: the co-signature the change carries (needed while
 * two or more enabled sysadmins are listed and the setting is on).  resign:
 * sign a step even if nothing changed (re-enrolment of a signer).  No-op in
 * a vault without a roster.  *counter (optional): the step made, or 0. */
int cosign_roster_step(struct vault *v, uint64_t id, uint32_t roles, int disabled, int required,
                       const uint8_t *attest, size_t attest_len, int resign, uint64_t *counter);

/* pactfs-admin cosign-endorse: the unlocked sysadmin endorses every
 * sysadmin and dataadmin that verifies now (registry.h), and, in a vault
 * without a role roster yet, makes its first step from that verified
 * state: signed alone with one enabled sysadmin (or the setting off),
 * else proposed by the first sysadmin (COSIGN_PENDING) and made when a
 * second one, whose own verification finds the same entries, runs it.
 * With a roster: a format 1 roster, or one a single sysadmin changes alone,
 * gets a step of format 2 binding the keys the registry names now; one that
 * needs two sysadmins binds the new key of one account whose registry key is
 * not the bound one (re-enrolled), proposed by the first sysadmin (item
 * "key.<id>") and bound by a second one's run (COSIGN_PENDING until then).
 * *endorsed: accounts endorsed; *counter: the roster step now (0: none);
 * note: what happened to the roster (empty: nothing). */
int cosign_endorse(struct vault *v, size_t *endorsed, uint64_t *counter, char *note,
                   size_t note_len);

/* 1 if account id is listed by a role roster that needs two sysadmins and
 * binds another key than key (which its record verifies with, save for
 * that): it was enrolled anew and waits for cosign-endorse.  Else 0. */
int cosign_key_awaits(struct vault *v, uint64_t id, EVP_PKEY *key);

/* pactfs-admin enroll of account id, a sysadmin listed by a role roster
 * that does not need two sysadmins (setting off, or fewer than two with a
 * key bound): its new key signs the next step, binding the keys the
 * registry names now (roster.h; as the one sysadmin could alone).  1 with
 * the roster before and after (len bytes each) when a step was made, 0
 * when none was needed, -errno. */
int cosign_enrol_bind(struct vault *v, uint64_t id, EVP_PKEY *key, char *before, char *after,
                      size_t len);

/* " roster=<current step>" (empty without a roster) for the content of a
 * proposal: its co-signature then fits only the next step (roster.h). */
void cosign_roster_suffix(struct vault *v, char *out, size_t len);

#endif
