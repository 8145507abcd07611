#include "config.h"

/* keyring_unlock() on arbitrary sealed account-key blobs, and
 * rsa_private_from_der() / rsa_public_from_der() on the raw bytes.  The
 * sealed blob comes from the metadata store, whose operator is untrusted.
 *
 * Two share providers answer each unlock:
 *   local  share_local_open() in a scratch dir with one enrolled account
 *          (a blob whose header differs from the enrolled one changes the
 *          authenticator, so the provider refuses: the realistic path)
 *   fixed  an in-memory provider that releases one fixed share to any
 *          authenticator, so the seed blob opens all the way to the PKCS#8
 *          parser and header edits reach the AEAD and key checks
 *
 * The Argon2id parameters in a blob are bounded by the parser, but only to
 * t <= 64, m <= 4 GiB, p <= 64: a hostile blob may still demand minutes and
 * gigabytes.  Inputs asking for more than FUZZ_ARGON2_* are skipped here so
 * the fuzzer measures parsing, not Argon2 (see README.md, findings). */

#include <errno.h>

#include "buf.h"
#include "crypto.h"
#include "error.h"
#include "fuzz.h"
#include "keyring.h"
#include "share.h"

FUZZ_TARGET("sealed_key", 1000);

#define FUZZ_VAULT "fuzz-vault"
#define FUZZ_ACCOUNT "fuzzer"
#define FUZZ_PASSWORD "correct horse battery staple"
#define FUZZ_ARGON2_MAX_M_KIB 256u
#define FUZZ_ARGON2_MAX_T 4u
#define FUZZ_ARGON2_MAX_P 4u

/* ---- the fixed-share provider ---- */

static const uint8_t fixed_share[SHARE_LEN] = {
    0x5a, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
    0xff, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
    0x32, 0x10,
};

static int fixed_enroll(struct share_provider *sp, const char *vault_id, const char *account,
                        const uint8_t auth[SHARE_AUTH_LEN], uint8_t share_out[SHARE_LEN])
{
    (void)sp, (void)vault_id, (void)account, (void)auth;
    memcpy(share_out, fixed_share, SHARE_LEN);
    return 0;
}

static int fixed_fetch(struct share_provider *sp, const char *vault_id, const char *account,
                       const uint8_t auth[SHARE_AUTH_LEN], uint8_t share_out[SHARE_LEN],
                       unsigned *retry_after)
{
    (void)retry_after;
    return fixed_enroll(sp, vault_id, account, auth, share_out);
}

static int fixed_change_auth(struct share_provider *sp, const char *vault_id,
                             const char *account, const uint8_t old_auth[SHARE_AUTH_LEN],
                             const uint8_t new_auth[SHARE_AUTH_LEN])
{
    (void)sp, (void)vault_id, (void)account, (void)old_auth, (void)new_auth;
    return 0;
}

static int fixed_remove(struct share_provider *sp, const char *vault_id, const char *account)
{
    (void)sp, (void)vault_id, (void)account;
    return 0;
}

static void fixed_destroy(struct share_provider *sp)
{
    (void)sp;
}

static const struct share_provider_ops fixed_ops = {
    .name = "fixed (fuzzing only)",
    .enroll = fixed_enroll,
    .fetch = fixed_fetch,
    .change_auth = fixed_change_auth,
    .rotate = fixed_enroll,
    .remove = fixed_remove,
    .destroy = fixed_destroy,
};

static struct share_provider fixed_provider = { .ops = &fixed_ops, .impl = NULL };

/* ---- setup ---- */

static char scratch[256];
static struct share_provider *local_provider;

static void teardown(void)
{
    share_provider_destroy(local_provider);
    local_provider = NULL;
    fuzz_rm_tree(scratch);
}

/* Enroll FUZZ_ACCOUNT with the authenticator of the password under cheap
 * parameters, as keyring_create would (without the slow RSA generation). */
static void setup_once(void)
{
    struct pwkdf_params p = { .alg = PWKDF_ALG_ARGON2ID, .t_cost = 1, .m_cost_kib = 64,
                              .parallelism = 1 };
    uint8_t key_half[32], auth[SHARE_AUTH_LEN], share[SHARE_LEN];
    char keydir[512];

    if (scratch[0])
        return;
    fuzz_scratch_dir(scratch, sizeof scratch, "sealed");
    atexit(teardown);
    snprintf(keydir, sizeof keydir, "%s/keys", scratch);
    if (share_local_open(keydir, &local_provider) != 0
        || keyring_derive_password_parts(FUZZ_PASSWORD, &p, key_half, auth) != 0
        || local_provider->ops->enroll(local_provider, FUZZ_VAULT, FUZZ_ACCOUNT, auth,
                                       share) != 0) {
        fprintf(stderr, "fuzz: cannot set up the local share provider: %s\n", pfs_err_msg());
        exit(2);
    }
}

/* Read just the Argon2id costs of a blob (same layout as keyring.c); 0 if
 * the blob is too short to have them (the parser will refuse it anyway). */
static int peek_argon2_costs(const uint8_t *data, size_t size, struct pwkdf_params *p)
{
    struct rbuf r;
    const uint8_t *skip;
    size_t n;

    rbuf_init(&r, data, size);
    rbuf_get_ref(&r, &skip, 5);             /* magic, version */
    rbuf_get_blob(&r, &skip, &n, SIZE_MAX); /* account */
    rbuf_get_u8(&r, &p->alg);
    rbuf_get_u32(&r, &p->t_cost);
    rbuf_get_u32(&r, &p->m_cost_kib);
    rbuf_get_u32(&r, &p->parallelism);
    return r.err ? -EBADMSG : 0;
}

static int argon2_too_costly(const uint8_t *data, size_t size)
{
    struct pwkdf_params p;

    if (peek_argon2_costs(data, size, &p) != 0)
        return 0;
    return p.m_cost_kib > FUZZ_ARGON2_MAX_M_KIB || p.t_cost > FUZZ_ARGON2_MAX_T
           || p.parallelism > FUZZ_ARGON2_MAX_P;
}

static void try_unlock(struct share_provider *sp, const uint8_t *data, size_t size)
{
    EVP_PKEY *priv = NULL;
    unsigned retry = 0;
    int rc = keyring_unlock(FUZZ_VAULT, FUZZ_ACCOUNT, FUZZ_PASSWORD, data, size, sp, &priv,
                            &retry);

    if (rc == 0) {
        fuzz_accepted++;
        FUZZ_ASSERT(priv != NULL && EVP_PKEY_is_a(priv, "RSA"));
        EVP_PKEY_free(priv);
    } else {
        FUZZ_ASSERT(rc < 0 && priv == NULL);
        FUZZ_ASSERT(pfs_err_msg()[0] != '\0');
    }
}

static void try_der(const uint8_t *data, size_t size)
{
    EVP_PKEY *pub = rsa_public_from_der(data, size);
    EVP_PKEY *priv = rsa_private_from_der(data, size);

    if (pub || priv)
        fuzz_accepted++;
    if (pub)
        FUZZ_ASSERT(EVP_PKEY_is_a(pub, "RSA"));
    if (priv)
        FUZZ_ASSERT(EVP_PKEY_is_a(priv, "RSA"));
    EVP_PKEY_free(pub);
    EVP_PKEY_free(priv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    try_der(data, size);
    if (argon2_too_costly(data, size))
        return 0;
    try_unlock(local_provider, data, size);
    try_unlock(&fixed_provider, data, size);
    return 0;
}
