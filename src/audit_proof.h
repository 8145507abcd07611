/* Registry proofs for audit sessions.
 *
 * A signed audit session (src/audit.h) opens with a session-start event
 * that carries the signer's registry proof: the vault root public key and
 * the signed registry records (src/registry.h) of the account and of every
 * sysadmin up the chain to the root, exactly as they stood when the session
 * began.  Anyone who knows the vault id and the pinned root fingerprint can
 * check the proof offline (no metadata store: pactfs-auditd has none) and
 * learn the account's public key.  Because the proof travels with the
 * session, renaming the account, or renaming it back, later changes nothing.
 *
 * Layout (then lower-case hex in the event's "proof" field):
 *   "PFAP" u8 version=2  blob root-key-DER  u8 n  n x blob record
 *          n x blob enrolment-proof (version 1: absent)
 * records[0] is the account's, records[i+1] signed records[i], the last is
 * signed by the root.  A self-enrolled account's record names no key: its
 * enrolment proof (enrol.h, empty for the others) binds it.  Byte layout of
 * a record: docs/accounts.md.
 */
#ifndef PACTFS_AUDIT_PROOF_H
#define PACTFS_AUDIT_PROOF_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "crypto.h"
#include "meta.h"

#define AUDIT_PROOF_MAX_HEX (48u * 1024u)

/* What a verified proof says about the session's signer. */
struct audit_signer {
    uint64_t account_id;
    char name[META_ACCOUNT_NAME_MAX + 1];
    uint32_t roles;
    EVP_PKEY *key;          /* the account's public key; EVP_PKEY_free it */
};

/* Build the proof of account_id from the metadata store, after verifying
 * it there (registry_verify).  *hex is malloc'd, NUL-terminated. */
int audit_proof_build(struct meta *m, const char *vault_id, const char *root_fp,
                      uint64_t account_id, char **hex);

/* Encode a proof from its parts (root key DER, raw records account first,
 * and their enrolment proofs: NULL or empty where a record binds its key). */
int audit_proof_encode(const uint8_t *root_der, size_t root_len, const uint8_t *const *records,
                       const size_t *lens, size_t n, char **hex);
int audit_proof_encode_enrolled(const uint8_t *root_der, size_t root_len,
                                const uint8_t *const *records, const size_t *lens,
                                const uint8_t *const *enrols, const size_t *enrol_lens,
                                size_t n, char **hex);

/* The proof of a one-record registry: account (account_id, name, roles)
 * holding key, its record signed directly by root.  root and key may be the
 * same key pair: a service's own log (pactfs-keyd, docs/keyd.md) proves its
 * signer that way, its root fingerprint being the key's own. */
int audit_proof_direct(const char *vault_id, EVP_PKEY *root, uint64_t account_id,
                       const char *name, uint32_t roles, EVP_PKEY *key, char **hex);

/* The SHA-256 fingerprint (hex, 65 bytes) of the root key a proof carries,
 * checked against nothing: what a reader compares with the fingerprint it
 * holds.  0 or -EBADMSG. */
int audit_proof_root_fp(const char *hex, char out[2 * SHA256_LEN + 1]);

/* Verify a proof offline: the root key hashes to root_fp, every record is
 * signed by the next (an enabled sysadmin) and the last by the root, the
 * account is not disabled.  -EBADMSG with why set otherwise.  verify_sigs 0
 * only decodes (re-reading a store that was checked on entry). */
int audit_proof_verify(const char *vault_id, const char *root_fp, const char *hex,
                       int verify_sigs, struct audit_signer *out, char *why, size_t whylen);

#endif
