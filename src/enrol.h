/* Self-enrolment: one-time codes and the enrolment proof.
 *
 * A sysadmin registers an account without a key: its registry record
 * (registry.h) commits to an enrolment code by carrying the Ed25519 public
 * key the code derives,
 *   seed     = HKDF-SHA-256(code bytes, salt vault_id,
 *                           info "pactfs v1 enrolment code" | u64 account id)
 *   code key = Ed25519(seed)
 * and the code's expiry.  The sysadmin hands the code over out of band.  On
 * their own workstation the person generates the account's RSA key pair,
 * seals it under their password and stores the enrolment proof
 *   "PFSE" u8 1 | blob(tbs) | blob(code signature) | blob(self signature)
 *   tbs = "PFSE" u8 1 | str vault | u64 account id | blob code public key |
 *         str key name | blob account public key (DER) | u64 enrolled at
 * signed by the code key (whoever holds the code chose this public key) and
 * by the new account key itself (proof of possession).  The sysadmin-signed
 * record plus a proof that verifies under the code key it names bind the
 * name to the person's key: the sysadmin never holds the private key or the
 * password.  Layouts and the protocol: docs/accounts.md.
 */
#ifndef PACTFS_ENROL_H
#define PACTFS_ENROL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "crypto.h"
#include "meta.h"
#include "share.h"

#define ENROL_CODE_BYTES 20                  /* 160 random bits */
#define ENROL_CODE_TEXT_MAX 64               /* "ABCD-EFGH-..." plus NUL */
#define ENROL_DEFAULT_VALID_S (72 * 3600)    /* a code is good for 3 days */

/* A fresh code in text form (base32, groups of four separated by '-'). */
int enrol_code_generate(char out[ENROL_CODE_TEXT_MAX]);

/* The Ed25519 public key the code derives for (vault, account id).  Case,
 * spaces and dashes in code are ignored; -EINVAL if it is not a code. */
int enrol_code_public(const char *vault_id, uint64_t account_id, const char *code,
                      uint8_t pub[ED25519_PUB_LEN]);

/* The code a share provider's enrolment is signed with (share.h
 * enrol_sign): set for the duration of one enrolment, NULL clears. */
struct enrol_signer {
    const char *vault_id;
    uint64_t account_id;
    const char *code;
};
void enrol_signer_set(struct share_provider *sp, struct enrol_signer *s);

/* Register the code's public key (for vault, account id) under key_name at
 * a provider that checks codes (pactfs-keyd: an admin call); 0 with others. */
int enrol_code_register(struct share_provider *sp, const char *vault_id, uint64_t account_id,
                        const char *key_name, const char *code, int64_t expires);

/* The proof for (vault, account id, code, key name, account key); *out is
 * malloc'd. */
int enrol_proof_make(const char *vault_id, uint64_t account_id, const char *code,
                     const char *key_name, EVP_PKEY *account_key, int64_t enrolled_at,
                     uint8_t **out, size_t *outlen);

/* Verify a stored proof against the code public key of the account's
 * sysadmin-signed record.  On success *pub points at the account public
 * key (DER) inside blob.  -EBADMSG with a message otherwise. */
int enrol_proof_verify(const char *vault_id, uint64_t account_id,
                       const uint8_t code_pub[ED25519_PUB_LEN], const char *key_name,
                       const uint8_t *blob, size_t len, const uint8_t **pub, size_t *publen,
                       int64_t *enrolled_at);

/* The stored proof (vault parameter "registry.enrol.<id>"), in the
 * caller's transaction; len 0 voids it.  load: -ENOENT when none. */
int enrol_proof_store(struct meta *m, uint64_t account_id, const uint8_t *proof, size_t len);
int enrol_proof_load(struct meta *m, uint64_t account_id, uint8_t **proof, size_t *len);

/* The enrolment itself, on an opened metadata store and share provider
 * (also used by init for its first data account): a fresh key pair sealed
 * under password with a fresh share (an earlier share of key_name is
 * replaced), the proof signed with the code, the row's key and the proof
 * stored in the caller's transaction (on failure the new share is removed
 * again).  The caller checked the record and the code.  *key_out
 * (optional) receives the key pair. */
int enrol_account_key(struct meta *m, const char *vault_id, struct share_provider *sp,
                      uint64_t account_id, const char *key_name, const char *code,
                      const char *password, const struct pwkdf_params *kdf,
                      unsigned rsa_bits, EVP_PKEY **key_out);

#endif
