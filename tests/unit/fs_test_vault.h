/* A vault for the filesystem core's unit tests (test_fs_core.c,
 * test_fs_namespace.c): made by vault_init in a temporary directory with
 * a fast password KDF, account alice (dataadmin|user) holding folder
 * "proj", opened and unlocked; removed again at the end. */
#ifndef PACTFS_FS_TEST_VAULT_H
#define PACTFS_FS_TEST_VAULT_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

#include "crypto.h"
#include "error.h"
#include "vault.h"

#define FS_TEST_PASSWORD "correct horse battery staple"

/* dir: a mkdtemp template, filled in; 0, or -1 (said on stdout). */
static inline int fs_test_vault_make(char *dir, const char *vault_name, struct vault **out)
{
    struct pwkdf_params fast;
    if (pwkdf_params_default(&fast) < 0)
        return -1;
    fast.t_cost = 1;
    fast.m_cost_kib = 1024;
    if (!mkdtemp(dir))
        return -1;
    struct vault_init_opts o = { .dir = dir,
                                 .vault_name = vault_name,
                                 .account = "alice",
                                 .password = FS_TEST_PASSWORD,
                                 .folder_name = "proj",
                                 .kdf = &fast,
                                 .rsa_bits = 0 };
    if (vault_init(&o) < 0) {
        printf("# vault_init: %s\n", pfs_err_msg());
        return -1;
    }
    char conf[256];
    snprintf(conf, sizeof conf, "%s/pactfs.conf", dir);
    if (vault_open(conf, out) < 0 || vault_unlock(*out, "alice", FS_TEST_PASSWORD) < 0) {
        printf("# vault_open/unlock: %s\n", pfs_err_msg());
        return -1;
    }
    return 0;
}

static inline int fs_test_rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st;
    (void)flag;
    (void)f;
    return remove(p);
}

/* Close v (if open) and remove dir with everything in it. */
static inline void fs_test_vault_remove(const char *dir, struct vault *v)
{
    if (v)
        vault_close(v);
    nftw(dir, fs_test_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
