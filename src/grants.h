/* Grants: signed envelopes, grant, revoke (with folder key rotation) and
 * the sysadmin's account actions.
 *
 * An envelope row's wrapped column holds a signed envelope:
 *   "PFSG" u8 2 | blob(RSA-OAEP envelope) | blob(RSA-PSS signature) | i64 time
 * The granter (meta_envelope.granted_by) signs
 *   "PFSG" u8 2 | str vault | u64 folder | u64 account | u32 key version |
 *   u32 rights | u64 granter | SHA-256(RSA-OAEP envelope) | i64 time
 * (version 1, still read: no time in either)
 * A grant is good if the granter's registry record verifies (registry.h),
 * the granter is an enabled dataadmin, the signature verifies, and the
 * granter holds manage on that folder by a good grant itself (the folder's
 * creator grants itself: the chain's base).  Layouts: docs/accounts.md.
 */
#ifndef PACTFS_GRANTS_H
#define PACTFS_GRANTS_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "enrol.h"
#include "meta.h"
#include "registry.h"
#include "vault.h"

#define GRANT_MAX_DEPTH 16   /* longest chain of manage grants accepted */
/* A separation-of-duties rule refused an account change (the last enabled
 * dataadmin would be demoted or disabled): pactfs-admin exits 19. */
#define GRANTS_DUTY_REFUSED (-ECANCELED)

/* "read", "read,write", "read,write,manage" into RIGHT_*; -EINVAL otherwise. */
int grants_rights_parse(const char *s, uint32_t *rights);
void grants_rights_format(uint32_t rights, char *out, size_t outlen);

/* Split a stored signed envelope (pointers into blob). */
int grant_envelope_unpack(const uint8_t *blob, size_t len, const uint8_t **rsa, size_t *rsalen,
                          const uint8_t **sig, size_t *siglen);

/* Envelope rows copied out of the store (so no list statement stays open
 * while they are checked); free with grant_rows_free. */
struct grant_rows {
    struct meta_envelope *e;
    size_t n, cap;
};
int grant_rows_folder(struct meta *m, uint64_t folder_id, struct grant_rows *s);
int grant_rows_account(struct meta *m, uint64_t account_id, struct grant_rows *s);
void grant_rows_free(struct grant_rows *s);

/* The time a grant was signed (unix seconds; 0 for a version 1 grant, made
 * before grants carried it).  Only meaningful once grant_verify passed. */
int grant_envelope_time(const uint8_t *blob, size_t len, int64_t *when);

/* Sign e: on input e->wrapped is the bare RSA-OAEP envelope (malloc'd); on
 * output it is the signed container (malloc'd, the old one freed) and
 * e->granted_by is granter_id. */
int grant_sign(EVP_PKEY *granter, const char *vault_id, uint64_t granter_id,
               struct meta_envelope *e);

/* Verify the grant of e (see above).  On success rsa and rsalen point at the
 * RSA-OAEP envelope inside e->wrapped.  -EBADMSG with a message otherwise. */
int grant_verify(struct meta *m, const char *vault_id, const char *root_fp,
                 const struct meta_envelope *e, const uint8_t **rsa, size_t *rsalen);

/* As the unlocked dataadmin with manage on the folder named folder: wrap
 * every key version it holds for account with rights (replacing earlier
 * rights), signed.  Audited ("grant"). */
int grants_grant(struct vault *v, const char *folder, const char *account, uint32_t rights);

/* The folder named name among those the unlocked account holds, which it
 * must manage (a dataadmin with manage by the signed folder state):
 * -EACCES with a message otherwise. */
int grants_managed_folder(struct vault *v, const char *name, struct vault_folder **out);

/* The id of the folder named name among those the unlocked account holds
 * (its name is decrypted with the folder key); -ENOENT otherwise. */
int grants_folder_id(struct vault *v, const char *name, uint64_t *id);

/* Remove every envelope of account on the folder and rotate the folder key:
 * a new key version, wrapped for each remaining member with its rights.
 * Data written afterwards uses it; existing data stays under the old
 * versions.  Audited ("revoke", "key-rotation"). */
int grants_revoke(struct vault *v, const char *folder, const char *account);

/* Format 1 -> 2 (pactfs-admin upgrade, on a vault unlocked with
 * v->allow_legacy): every folder the account manages that has no signed
 * state gets one (counter 1; its newest key version the account holds; the
 * accounts with a verified grant of that version that are enabled and may
 * hold data, with that grant's rights), then the vault gets its first
 * signed head if it has none, and the head is anchored.  Folders managed by
 * others are counted in *left: each of their managers runs upgrade too.
 * Audited ("upgrade-signed-state"). */
int grants_upgrade_state(struct vault *v, unsigned *signed_folders, unsigned *left);

/* ---- sysadmin actions on the registry (the unlocked account must be an
 * enabled sysadmin); each is audited. ---- */
/* Register a new account with roles and details (NULL: none): no key, a
 * one-time enrolment code (code, valid valid_s seconds, 0: the default)
 * that its owner gives to pactfs-admin enroll (accounts.h). */
/* With the sysadmin or dataadmin role and two or more sysadmins, the first
 * call only proposes it (COSIGN_PENDING, no code); the same call by a
 * second sysadmin registers it (cosign.h). */
int grants_account_add(struct vault *v, const char *name, uint32_t roles,
                       const struct registry_details *d, unsigned valid_s,
                       char code[ENROL_CODE_TEXT_MAX]);
/* A lost password: the account's key stops counting (row and record name
 * none, its share is removed) and a new code is issued; its folders must
 * be granted again after the person enrols. */
int grants_account_reenrol(struct vault *v, const char *name, unsigned valid_s,
                           char code[ENROL_CODE_TEXT_MAX]);
int grants_account_disable(struct vault *v, const char *name, int disabled);
int grants_account_rename(struct vault *v, const char *old_name, const char *new_name);
/* Giving or taking sysadmin or dataadmin with two or more sysadmins (and
 * the vault's co-signature setting on) is first a proposal: returns
 * COSIGN_PENDING (cosign.h, positive); the same change by a second
 * sysadmin applies it. */
int grants_account_set_roles(struct vault *v, const char *name, uint32_t roles);
/* Change an account's details and expiry: the fields given (NULL, or
 * expires GRANTS_EXPIRES_KEEP, keep the current value; expires 0: never). */
#define GRANTS_EXPIRES_KEEP INT64_MIN
struct grants_details_change {
    const char *full_name, *email, *department;
    int64_t expires;
};
int grants_account_set_details(struct vault *v, const char *name,
                               const struct grants_details_change *c);
/* Each sysadmin action above is audited with who (the acting sysadmin),
 * what (the op and the account) and the account's state before and after
 * ("before", "after": name, roles, status, details, expiry). */

#endif
