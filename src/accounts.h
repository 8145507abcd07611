/* The account lifecycle on the person's side: self-enrolment with a
 * one-time code (enrol.h has the proof, registry.h the record).
 *
 * A sysadmin registers the account (grants_account_add) and hands the code
 * over; the person runs accounts_enrol on their own workstation: the key
 * pair is generated there, sealed under their password with a fresh share
 * enrolled at the share provider, and bound to the name by the enrolment
 * proof.  No administrator ever sees the password or the private key.
 */
#ifndef PACTFS_ACCOUNTS_H
#define PACTFS_ACCOUNTS_H

#include <stdint.h>

#include <openssl/evp.h>

#include "crypto.h"
#include "meta.h"
#include "registry.h"
#include "share.h"
#include "vault.h"

/* Enrol the account name of an opened (not unlocked) vault with code:
 * checks that the sysadmin-signed record is pending, the code is the one
 * it commits to and has not expired, then enrol_account_key, then
 * verifies the result and audits "account-enrol" under the new key.
 * fingerprint (REGISTRY_FP_HEX + 1) receives the new key's fingerprint.
 * -EKEYREJECTED wrong code, -EEXIST already enrolled, -EACCES expired;
 * ACCOUNTS_KEY_AWAITS: enrolled, but the account is a sysadmin or dataadmin
 * of a role roster that needs two sysadmins, and its new key counts once
 * two of them bound it (cosign-endorse; the event is then unsigned). */
#define ACCOUNTS_KEY_AWAITS 1
int accounts_enrol(struct vault *v, const char *name, const char *code, const char *password,
                   const struct pwkdf_params *kdf, char *fingerprint);

/* Change the password of account (not necessarily unlocked): the vault's
 * policy (pwpolicy.h: quality and reuse), then keyring_change_password
 * (the share is replaced too), the new sealed key stored and the password
 * remembered.  (pactfs-admin audits a refusal, PWPOLICY_REFUSED.) */
int accounts_passwd(struct vault *v, const char *account, const char *old_password,
                    const char *new_password);

/* One audit event in account's name outside an unlocked session: signed
 * with signer (and its registry proof) when given, else unsigned.  rc is
 * passed through (or the audit failure if rc is 0). */
int accounts_audit(struct vault *v, const char *account, uint64_t account_id, EVP_PKEY *signer,
                   const char *op, const char *what, int rc);
/* The same with details (before/after of the change; d may be NULL). */
int accounts_audit_detail(struct vault *v, const char *account, uint64_t account_id,
                          EVP_PKEY *signer, const char *op, const char *what, int rc,
                          const struct audit_detail *d);

#endif
