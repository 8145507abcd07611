/* pactfs-keyd's secrets: the master key and the keys derived from it, the
 * admin token's hash, and what they make: login verifiers, sealed shares,
 * anchor tokens (docs/keyd.md).  All held in secure memory.
 *
 *   verifier     = HMAC-SHA-256(verifier key, "pactfs-keyd v2 verifier",
 *                  vault, account, SHA-256(salt || auth)), salt random per
 *                  account, verifier key = HKDF(master key), so a copy of
 *                  the database (with the metadata store) allows no offline
 *                  password guessing;
 *   sealed_share = AES-256-GCM(master key, share), AD = vault and account,
 *                  so a copy of the database alone yields no share;
 *   anchor token = u64 expiry || HMAC(anchor key, label, vault, account,
 *                  expiry), anchor key = HKDF(master key);
 *   audit key    = the RSA-3072 key that signs keyd's own audit log, made
 *                  at the first start and kept in audit_key_file as
 *                  "PFKA" u8 1 || AES-256-GCM(HKDF(master key), PKCS#8 DER),
 *                  so the file alone signs nothing.
 */
#ifndef PACTFS_KEYD_SECRETS_H
#define PACTFS_KEYD_SECRETS_H

#include <stdbool.h>
#include <stdint.h>

#include "crypto.h"
#include "share.h"

#define KEYD_SALT_LEN 16
#define KEYD_MASTER_KEY_LEN 32
#define KEYD_TOKEN_MIN 16
#define KEYD_SEALED_SHARE_LEN (SHARE_LEN + AEAD_OVERHEAD)
#define KEYD_ANCHOR_TOKEN_LIFE (400LL * 86400)          /* longer than any mount */

struct keyd_secrets {
    uint8_t *master_key;          /* secmem, KEYD_MASTER_KEY_LEN */
    uint8_t *verifier_key;        /* secmem, SHA256_LEN: HKDF(master key) */
    uint8_t *anchor_key;          /* secmem, SHA256_LEN: HKDF(master key), anchor tokens */
    uint8_t *admin_token_hash;    /* secmem, SHA256_LEN; NULL: officers only */
};

/* The master key file (64 hex digits) and the keys derived from it. */
int keyd_secrets_load_master_key(struct keyd_secrets *s, const char *master_key_file);
/* The admin token file, if any (NULL: officers only): only its hash is kept. */
int keyd_secrets_load_admin_token(struct keyd_secrets *s, const char *admin_token_file);
void keyd_secrets_free(struct keyd_secrets *s);

/* Does token hash to the admin token's hash?  False when there is none. */
bool keyd_admin_token_matches(const struct keyd_secrets *s, const char *token);

/* Key a schema-1 verifier SHA-256(salt || auth) into the stored one. */
void keyd_key_verifier(const struct keyd_secrets *s, const char *vault, const char *account,
                       const uint8_t inner[SHA256_LEN], uint8_t out[SHA256_LEN]);
/* The stored verifier of auth under salt. */
void keyd_make_verifier(const struct keyd_secrets *s, const char *vault, const char *account,
                        const uint8_t salt[KEYD_SALT_LEN], const uint8_t *auth,
                        uint8_t out[SHA256_LEN]);

int keyd_share_seal(const struct keyd_secrets *s, const char *vault, const char *account,
                    const uint8_t *share, uint8_t out[KEYD_SEALED_SHARE_LEN]);
int keyd_share_open(const struct keyd_secrets *s, const char *vault, const char *account,
                    const uint8_t sealed[KEYD_SEALED_SHARE_LEN], uint8_t *share);

/* keyd's audit signing key from path, or, if path does not exist, a new one
 * written there (*created set).  -EBADMSG if the file does not open under
 * this master key. */
int keyd_secrets_audit_key(const struct keyd_secrets *s, const char *path, EVP_PKEY **out,
                           bool *created);

/* The raw anchor token of (vault, account) expiring at expires. */
int keyd_anchor_token_mac(const struct keyd_secrets *s, const char *vault, const char *account,
                          int64_t expires, uint8_t raw[KEYD_ANCHOR_TOKEN_LEN]);
/* The same in hex. */
int keyd_anchor_token_make(const struct keyd_secrets *s, const char *vault,
                           const char *account, int64_t expires,
                           char out[2 * KEYD_ANCHOR_TOKEN_LEN + 1]);

#endif
