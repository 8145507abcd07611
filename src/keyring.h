/* Accounts' envelope-opening keys.
 *
 * Each account has an RSA key pair.  Its private key is stored only sealed:
 *
 *   pwkey      = Argon2id(password, params)                (params stored)
 *   key_half   = HKDF(pwkey, info "pactfs v1 unlock half")
 *   auth       = HKDF(pwkey, info "pactfs v1 share auth")  (sent to provider)
 *   share      = provider.fetch(auth)                       (256 bits)
 *   unlock_key = HKDF(key_half || share, info "pactfs v1 unlock key")
 *   sealed     = AES-256-GCM(unlock_key, PKCS#8 DER), AD binds vault and account
 *
 * The byte layout of the sealed blob is in docs/format-keys.md.  Every
 * intermediate value lives in secmem and is wiped before return.
 * Creating or re-sealing under a new password always draws a fresh salt:
 * from a caller's params only the costs (alg, t, m, p) are used.
 */
#ifndef PACTFS_KEYRING_H
#define PACTFS_KEYRING_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "crypto.h"
#include "share.h"

/* Create an account key pair (bits >= 3072), enroll the account with the
 * share provider and seal the private key.  Outputs (malloc'd): the public
 * key DER and the sealed private key blob; *keypair_out (optional) receives
 * the key pair for immediate use. params NULL = pwkdf_params_default(). */
int keyring_create(const char *vault_id, const char *account, const char *password,
                   const struct pwkdf_params *params, unsigned rsa_bits,
                   struct share_provider *sp,
                   uint8_t **pub_der, size_t *pub_len,
                   uint8_t **sealed, size_t *sealed_len,
                   EVP_PKEY **keypair_out);

/* Open the sealed private key.  -EKEYREJECTED for a wrong password (the
 * provider refused the authenticator, or the seal does not open),
 * provider errors passed through (-EBUSY + *retry_after on lockout). */
int keyring_unlock(const char *vault_id, const char *account, const char *password,
                   const uint8_t *sealed, size_t sealed_len,
                   struct share_provider *sp, EVP_PKEY **priv_out,
                   unsigned *retry_after);

/* Re-seal under a new password (new salt, params NULL = defaults),
 * replace the provider's verifier and then its share: the old password
 * stops working, and an older sealed key put back opens nothing (its
 * share is gone). */
int keyring_change_password(const char *vault_id, const char *account,
                            const char *old_password, const char *new_password,
                            const struct pwkdf_params *params,
                            const uint8_t *sealed, size_t sealed_len,
                            struct share_provider *sp,
                            uint8_t **new_sealed, size_t *new_sealed_len);

/* Ask the provider for a new share and re-seal with it. */
int keyring_rotate_share(const char *vault_id, const char *account, const char *password,
                         const uint8_t *sealed, size_t sealed_len,
                         struct share_provider *sp,
                         uint8_t **new_sealed, size_t *new_sealed_len);

/* The two halves derived from a password (exposed for tests and keyd):
 * key_half and auth, both SHARE_LEN bytes. */
int keyring_derive_password_parts(const char *password, const struct pwkdf_params *p,
                                  uint8_t key_half[32], uint8_t auth[SHARE_AUTH_LEN]);

#endif
