/* Share providers: who holds the second half of an account's unlock key.
 *
 * The client derives two independent values from the password-hardened key
 * (see keyring.h): the local key half and a login authenticator.  Only the
 * authenticator is ever given to a provider; the provider keeps a verifier of
 * it and releases the 256-bit share only when the authenticator matches.
 *
 * One interface, one file per backend (like curl's vtls):
 *   share_local.c  embedded default: a separate local key directory (0700),
 *                  one file per account (0600)
 *   share_keyd.c   the network key service pactfs-keyd over HTTPS
 */
#ifndef PACTFS_SHARE_H
#define PACTFS_SHARE_H

#include <stddef.h>
#include <stdint.h>

#define SHARE_LEN 32
#define SHARE_AUTH_LEN 32
/* pactfs-keyd's anchor token: u64 expiry || HMAC-SHA-256 (docs/keyd.md). */
#define KEYD_ANCHOR_TOKEN_LEN 40

struct share_provider;

struct share_provider_ops {
    const char *name;
    /* Create a fresh random share for (vault_id, account) and store it with a
     * verifier of auth.  Fails with -EEXIST if the account already has one.
     * The new share is written to share_out. */
    int (*enroll)(struct share_provider *sp, const char *vault_id, const char *account,
                  const uint8_t auth[SHARE_AUTH_LEN], uint8_t share_out[SHARE_LEN]);
    /* Login: the share if auth matches, else -EKEYREJECTED (uniform for an
     * unknown account).  -EBUSY with *retry_after seconds when locked out,
     * -EPERM when the account is disabled, -EHOSTUNREACH/-ECONNREFUSED when
     * the provider cannot be reached. */
    int (*fetch)(struct share_provider *sp, const char *vault_id, const char *account,
                 const uint8_t auth[SHARE_AUTH_LEN], uint8_t share_out[SHARE_LEN],
                 unsigned *retry_after);
    /* Replace the verifier (password change); old_auth must match. */
    int (*change_auth)(struct share_provider *sp, const char *vault_id, const char *account,
                       const uint8_t old_auth[SHARE_AUTH_LEN],
                       const uint8_t new_auth[SHARE_AUTH_LEN]);
    /* Replace the share by a fresh one (auth must match); new share out. */
    int (*rotate)(struct share_provider *sp, const char *vault_id, const char *account,
                  const uint8_t auth[SHARE_AUTH_LEN], uint8_t share_out[SHARE_LEN]);
    /* Forget the account's share for good. */
    int (*remove)(struct share_provider *sp, const char *vault_id, const char *account);
    /* The newest signed vault head seen for vault_id (vault_head.h), kept
     * outside the metadata store: its counter, the SHA-256 of the stored
     * head and, where the provider keeps it, the head itself (*blob NULL
     * otherwise; malloc'd).  -ENOENT if nothing is anchored yet, -EOPNOTSUPP
     * if the provider cannot anchor.  anchor_put replaces the anchor when
     * counter is not lower than the one kept (-ESTALE otherwise, unless
     * force: the audited override of a detected rollback). */
    int (*anchor_get)(struct share_provider *sp, const char *vault_id, uint64_t *counter,
                      uint8_t hash[32], uint8_t **blob, size_t *len);
    int (*anchor_put)(struct share_provider *sp, const char *vault_id, uint64_t counter,
                      const uint8_t hash[32], const uint8_t *blob, size_t len, int force);
    void (*destroy)(struct share_provider *sp);
    /* Optional (pactfs-keyd): register the public key of a person's
     * one-time enrolment code for (vault_id, account), valid until expires;
     * an admin call.  enroll then needs the code's signature (enrol_sign). */
    int (*register_code)(struct share_provider *sp, const char *vault_id, const char *account,
                         const uint8_t code_pub[32], int64_t expires);
};

struct share_provider {
    const struct share_provider_ops *ops;
    void *impl;
    /* Set around an enrolment (enrol.h): signs msg with the enrolment
     * code's key (Ed25519, 64-byte signature). */
    int (*enrol_sign)(void *arg, const uint8_t *msg, size_t n, uint8_t sig[64]);
    void *enrol_sign_arg;
};

/* The embedded default: shares in keydir (created 0700 if missing). */
int share_local_open(const char *keydir, struct share_provider **out);

/* The network key service (share_keyd.c). */
struct keyd_client_config {
    const char *url;           /* https://host:port */
    const char *ca_file;       /* CA bundle that signs the service's cert */
    const char *cert_file;     /* optional client certificate */
    const char *key_file;      /* optional client key */
    const char *admin_token_file; /* admin bearer token (enroll, remove, admin ops);
                                     NULL: $PACTFS_KEYD_ADMIN_TOKEN_FILE */
    long timeout_ms;           /* 0: default 10000 */
};
int share_keyd_open(const struct keyd_client_config *cfg, struct share_provider **out);
/* Administrative calls on a keyd provider (need the admin token):
 * op "unlock" (lift a lockout), "disable", "enable". */
int share_keyd_admin(struct share_provider *sp, const char *op, const char *vault_id,
                     const char *account);

static inline void share_provider_destroy(struct share_provider *sp)
{
    if (sp)
        sp->ops->destroy(sp);
}

#endif
