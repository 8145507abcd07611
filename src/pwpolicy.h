/* The vault's password policy, enforced at enrolment and password change.
 *
 * Quality: libpwquality (minimum length, dictionary check through
 * cracklib, similarity to the old password and the account name).
 * Reuse: the last N passwords are remembered as keyed hashes
 *   HMAC-SHA-256(history key, password),
 *   history key = HKDF-SHA-256(PKCS#8 DER of the account's private key,
 *                  salt vault id, info "pactfs v1 password history" | u64 id)
 * stored as vault parameter "account.pwhistory.<id>".  Without the
 * private key they are useless for guessing the password offline.
 *
 * The policy itself is a vault parameter "policy.password" signed by a
 * sysadmin whose record verifies in the registry:
 *   blob(tbs) | blob(RSA-PSS signature)
 *   tbs = "PFSP" | u8 1 | str vault | u32 min_length | u8 dictionary |
 *         u32 history | u64 signer_id
 * Absent, the defaults apply (12, dictionary on, 5); present but not
 * verifying, nothing is accepted until a sysadmin sets it again: the
 * database operator can at most bring back the defaults.
 * Layouts: docs/accounts.md.
 */
#ifndef PACTFS_PWPOLICY_H
#define PACTFS_PWPOLICY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "meta.h"

#define PWPOLICY_MIN_LENGTH 12
#define PWPOLICY_HISTORY 5
#define PWPOLICY_HISTORY_MAX 24
/* A refusal by the policy: pfs_err names the rule. */
#define PWPOLICY_REFUSED (-EDOM)

struct pwpolicy {
    unsigned min_length;
    int dictionary;          /* cracklib dictionary check */
    unsigned history;        /* how many earlier passwords may not return */
};

void pwpolicy_defaults(struct pwpolicy *p);

/* The vault's policy (defaults when none was set); -EBADMSG when the
 * stored one does not verify. */
int pwpolicy_load(struct meta *m, const char *vault_id, const char *root_fp,
                  struct pwpolicy *p);
/* Sign and store (the signer is an unlocked sysadmin). */
int pwpolicy_store(struct meta *m, const char *vault_id, const struct pwpolicy *p,
                   EVP_PKEY *signer, uint64_t signer_id);

/* Quality rules: 0 or PWPOLICY_REFUSED with the reason.  old_password and
 * account may be NULL. */
int pwpolicy_check(const struct pwpolicy *p, const char *password, const char *old_password,
                   const char *account);

/* Reuse: PWPOLICY_REFUSED if password is among the account's remembered
 * ones (priv is its private key). */
int pwpolicy_history_check(struct meta *m, const char *vault_id, uint64_t account_id,
                           EVP_PKEY *priv, const char *password);
/* Remember password (keeps the newest p->history entries; 0 forgets all). */
int pwpolicy_history_add(struct meta *m, const char *vault_id, uint64_t account_id,
                         EVP_PKEY *priv, const char *password, const struct pwpolicy *p);

#endif
