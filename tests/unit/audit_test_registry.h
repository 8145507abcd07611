/* A registry for audit unit tests: a root key that signs one record per
 * account, and the registry proof (src/audit_proof.h) a signed session of
 * that account carries.  Built with the registry's own encoder. */
#ifndef PACTFS_AUDIT_TEST_REGISTRY_H
#define PACTFS_AUDIT_TEST_REGISTRY_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "audit_proof.h"
#include "crypto.h"
#include "registry.h"

/* The raw stored record (blob tbs, blob sig) of account id/name/key, signed
 * by signer as signer_id.  Returns malloc'd bytes or NULL. */
static inline uint8_t *test_registry_record(const char *vault, uint64_t id, const char *name,
                                            uint32_t roles, EVP_PKEY *key, EVP_PKEY *signer,
                                            uint64_t signer_id, size_t *len)
{
    struct registry_record r = { 0 };
    uint8_t *der = NULL, *out = NULL;
    size_t derlen = 0;

    if (rsa_public_to_der(key, &der, &derlen) != 0)
        return NULL;
    r.account_id = id;
    snprintf(r.name, sizeof r.name, "%s", name);
    snprintf(r.key_name, sizeof r.key_name, "%s", name);
    r.roles = roles;
    r.serial = 1;
    r.pubkey = der;
    r.pubkey_len = derlen;
    r.signer_id = signer_id;
    if (registry_record_sign(vault, &r, signer, &out, len) != 0)
        out = NULL;
    free(der);
    return out;
}

/* The proof of account (id, name, key) signed directly by root; root_fp
 * (65 bytes) receives the root's fingerprint.  Returns malloc'd hex. */
static inline char *test_registry_proof(const char *vault, EVP_PKEY *root, uint64_t id,
                                        const char *name, EVP_PKEY *key, char *root_fp)
{
    char *hex = NULL;

    if (registry_fingerprint_hex(root, root_fp) != 0 ||
        audit_proof_direct(vault, root, id, name, ROLE_USER, key, &hex) != 0)
        return NULL;
    return hex;
}

#endif
