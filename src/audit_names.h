/* The audit names key: paths and names in audit events sealed to the
 * auditors (docs/format-audit.md, "Sealed names").
 *
 * One RSA key pair per vault.  Its public half, and its private half
 * sealed under a 32-byte secret S, are in a record signed by the auditor
 * who made it (vault parameter "audit.names", checked against the signed
 * registry: the signer must be an enabled auditor).  Each auditor holds S
 * through an envelope, RSA-OAEP under its own account key
 * ("audit.names.env.<account id>"), as members hold folder keys.  A
 * writing session wraps a fresh 32-byte session key to the public half
 * (session-start fields names_kid, names_key) and seals each event's path
 * and dest under it (AES-256-GCM, field names); the chain and the
 * signatures cover the sealed bytes, so they verify without any key.
 *
 * A pin file beside the spool (<spool>.names-kid) remembers the key once a
 * writer on this machine has seen it: removing or replacing the record in
 * the metadata store afterwards makes every audit session refuse to open
 * (fail-closed) instead of writing names in plaintext.
 */
#ifndef PACTFS_AUDIT_NAMES_H
#define PACTFS_AUDIT_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

struct meta;

#define AUDIT_NAMES_PARAM "audit.names"
#define AUDIT_NAMES_KID_HEX 64
#define AUDIT_NAMES_SESSION_KEY 32
#define AUDIT_NAMES_PIN_SUFFIX ".names-kid"

/* The verified public key and its id (hex SHA-256 of its DER).  -ENOENT:
 * the vault has no names key yet; -EBADMSG (pfs_err) if the record does
 * not verify. */
int audit_names_public(struct meta *m, const char *vault_id, const char *root_fp,
                       EVP_PKEY **pub, char kid[AUDIT_NAMES_KID_HEX + 1]);

/* What a writer of spool_path seals with: the verified key, checked
 * against (and recorded in) the pin file.  *pub NULL and 0 when the vault
 * has none and this machine never saw one; -EBADMSG when the key is gone
 * or replaced after it was pinned. */
int audit_names_for_writer(struct meta *m, const char *vault_id, const char *root_fp,
                           const char *spool_path, EVP_PKEY **pub,
                           char kid[AUDIT_NAMES_KID_HEX + 1]);

/* Create the names key (the signer must be an enabled auditor: signer_id
 * verified in the registry) with the signer's envelope.  -EEXIST if the
 * vault has one. */
int audit_names_create(struct meta *m, const char *vault_id, const char *root_fp,
                       EVP_PKEY *signer, uint64_t signer_id, char kid[AUDIT_NAMES_KID_HEX + 1]);

/* The private half, through account_id's envelope opened with priv.
 * -ENOENT if that account holds no envelope (or the vault no key). */
int audit_names_private(struct meta *m, const char *vault_id, const char *root_fp,
                        EVP_PKEY *priv, uint64_t account_id, EVP_PKEY **names_priv);

/* An auditor holding the key (priv, account_id) gives target_id (an
 * enrolled, enabled auditor by the registry) an envelope. */
int audit_names_grant(struct meta *m, const char *vault_id, const char *root_fp,
                      EVP_PKEY *priv, uint64_t account_id, uint64_t target_id);

/* ---- the session level (audit.c writes, audit_query.c reads) ---- */

/* Wrap a session key to the names key: *out hex, malloc'd. */
int audit_names_wrap_session(EVP_PKEY *pub, const char *vault_id, const char *session,
                             const uint8_t key[AUDIT_NAMES_SESSION_KEY], char **out_hex);
int audit_names_unwrap_session(EVP_PKEY *names_priv, const char *vault_id, const char *session,
                               const char *hex, uint8_t key[AUDIT_NAMES_SESSION_KEY]);
/* Seal / open the names of one event (plain: a small JSON object with
 * path and dest) bound to its vault and session.  *out malloc'd, hex /
 * NUL-terminated text. */
int audit_names_seal(const uint8_t key[AUDIT_NAMES_SESSION_KEY], const char *vault_id,
                     const char *session, const char *plain, char **out_hex);
int audit_names_open(const uint8_t key[AUDIT_NAMES_SESSION_KEY], const char *vault_id,
                     const char *session, const char *hex, char **plain);

#endif
