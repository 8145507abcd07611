/* An account row with a registry record signed by signer (and the next
 * signed vault head), for unit tests of signed state over a real metadata
 * store. */
#ifndef PACTFS_META_TEST_ACCOUNTS_H
#define PACTFS_META_TEST_ACCOUNTS_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crypto.h"
#include "meta.h"
#include "registry.h"
#include "vault_head.h"

/* A fresh SQLite store in a new directory under /tmp (dbdir 64 bytes,
 * dbpath 128), holding the registry root. */
static inline int test_meta_open(const char *prefix, EVP_PKEY *root, char *dbdir,
                                 char *dbpath, struct meta **m)
{
    snprintf(dbdir, 64, "/tmp/%s.XXXXXX", prefix);
    if (!mkdtemp(dbdir))
        return -errno;
    snprintf(dbpath, 128, "%s/meta.db", dbdir);
    int rc = meta_open_sqlite(dbpath, 1, m);
    return rc ? rc : registry_root_store(*m, root);
}

/* The account row only (no registry record). */
static inline int test_account_row(struct meta *m, const char *name, uint32_t roles,
                                   EVP_PKEY *key, struct meta_account *a)
{
    static uint8_t sealed[8] = "sealed!";

    memset(a, 0, sizeof *a);
    a->roles = roles;
    a->created = time(NULL);
    snprintf(a->name, sizeof a->name, "%s", name);
    if (rsa_public_to_der(key, &a->pubkey, &a->pubkey_len) < 0)
        return -ENOMEM;
    a->sealed_key = sealed;
    a->sealed_key_len = sizeof sealed;
    return meta_account_add(m, a);
}

static inline int test_account_add(struct meta *m, const char *vault_id, const char *name,
                                   uint32_t roles, EVP_PKEY *key, EVP_PKEY *signer,
                                   uint64_t signer_id, uint64_t *id)
{
    struct meta_account a;
    int rc = test_account_row(m, name, roles, key, &a);

    *id = a.id;
    if (rc == 0)
        rc = registry_certify(m, vault_id, &a, NULL, signer, signer_id);
    if (rc == 0)
        rc = vault_head_advance(m, vault_id, signer, signer_id);
    free(a.pubkey);
    return rc;
}

#endif
