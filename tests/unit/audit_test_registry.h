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
#include "buf.h"
#include "crypto.h"
#include "registry.h"

/* The raw stored record (blob tbs, blob sig) of account id/name/key, signed
 * by signer as signer_id.  Returns malloc'd bytes or NULL. */
static inline uint8_t *test_registry_record(const char *vault, uint64_t id, const char *name,
                                            uint32_t roles, EVP_PKEY *key, EVP_PKEY *signer,
                                            uint64_t signer_id, size_t *len)
{
    struct registry_record r = { 0 };
    uint8_t *der = NULL, *tbs = NULL, *sig = NULL;
    size_t derlen = 0, tbslen = 0, siglen = 0;
    struct wbuf b;

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
    if (registry_record_encode_tbs(vault, &r, &tbs, &tbslen) != 0 ||
        sig_sign(signer, tbs, tbslen, &sig, &siglen) != 0) {
        free(der);
        free(tbs);
        return NULL;
    }
    wbuf_init(&b);
    wbuf_put_blob(&b, tbs, tbslen);
    wbuf_put_blob(&b, sig, siglen);
    free(der);
    free(tbs);
    free(sig);
    return wbuf_steal(&b, len);
}

/* The proof of account (id, name, key) signed directly by root; root_fp
 * (65 bytes) receives the root's fingerprint.  Returns malloc'd hex. */
static inline char *test_registry_proof(const char *vault, EVP_PKEY *root, uint64_t id,
                                        const char *name, EVP_PKEY *key, char *root_fp)
{
    uint8_t *rec, *root_der = NULL;
    size_t reclen = 0, root_len = 0;
    char *hex = NULL;

    if (registry_fingerprint_hex(root, root_fp) != 0 ||
        rsa_public_to_der(root, &root_der, &root_len) != 0)
        return NULL;
    rec = test_registry_record(vault, id, name, ROLE_USER, key, root, REGISTRY_ROOT_SIGNER,
                               &reclen);
    if (rec)
        audit_proof_encode(root_der, root_len, (const uint8_t *const *)&rec, &reclen, 1, &hex);
    free(rec);
    free(root_der);
    return hex;
}

#endif
