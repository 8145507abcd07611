#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envelope.h"
#include "keyring.h"
#include "secmem.h"
#include "share.h"
#include "tap.h"

#define VAULT "vault-test"

static char scratch[64];
static char keydir[128];
static struct share_provider *sp;
static struct pwkdf_params fast;      /* t=1, m=1 MiB: fast tests */

/* Created once for the file (RSA-3072 generation is slow). */
static uint8_t *pub_der, *sealed;
static size_t pub_len, sealed_len;

static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512];

    if (!d)
        return;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_type == DT_DIR)
            rm_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* The only file in keydir (there is one account in these tests). */
static int share_file_path(const char *dir, char *out, size_t n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(out, n, "%s/%s", dir, e->d_name);
            found++;
        }
    closedir(d);
    return found == 1 ? 0 : -1;
}

/* Does priv open what pub wrapped? */
static int same_key_pair(const uint8_t *pub, size_t publen, EVP_PKEY *priv)
{
    EVP_PKEY *pk = rsa_public_from_der(pub, publen);
    uint8_t k[32] = { 9 }, back[32], *w = NULL;
    size_t wl = 0;
    int ok = pk && rsa_wrap(pk, "t", 1, k, 32, &w, &wl) == 0
             && rsa_unwrap(priv, "t", 1, w, wl, back, 32) == 0 && !memcmp(k, back, 32);

    free(w);
    EVP_PKEY_free(pk);
    return ok;
}

static void test_setup_and_create(void)
{
    EVP_PKEY *pair = NULL;
    struct stat st;

    strcpy(scratch, "/tmp/pactfs-keyring-XXXXXX");
    REQUIRE(mkdtemp(scratch));
    snprintf(keydir, sizeof keydir, "%s/keys", scratch);
    REQUIRE(share_local_open(keydir, &sp) == 0);
    REQUIRE(stat(keydir, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0700);

    REQUIRE(pwkdf_params_default(&fast) == 0);
    fast.t_cost = 1;
    fast.m_cost_kib = 1024;
    REQUIRE(keyring_create(VAULT, "alice", "correct horse", &fast, 0, sp, &pub_der, &pub_len,
                           &sealed, &sealed_len, &pair) == 0);
    REQUIRE(pair);
    CHECK_EQ_INT(EVP_PKEY_get_bits(pair), 3072);
    CHECK(memcmp(sealed, "PFSK\x01", 5) == 0);
    CHECK(same_key_pair(pub_der, pub_len, pair));
    EVP_PKEY_free(pair);
}

static void test_create_refuses_weak_params_and_duplicates(void)
{
    struct pwkdf_params weak = fast;
    uint8_t *p = NULL, *s = NULL;
    size_t pl, sl;

    REQUIRE(sp);
    weak.m_cost_kib = 4;
    CHECK_EQ_INT(keyring_create(VAULT, "weak", "pw", &weak, 0, sp, &p, &pl, &s, &sl, NULL),
                 -EINVAL);
    weak = fast;
    weak.t_cost = 0;
    CHECK_EQ_INT(keyring_create(VAULT, "weak", "pw", &weak, 0, sp, &p, &pl, &s, &sl, NULL),
                 -EINVAL);
    CHECK(keyring_create(VAULT, "weak", "pw", &fast, 2048, sp, &p, &pl, &s, &sl, NULL) < 0);
    CHECK(p == NULL && s == NULL);
    /* alice is already enrolled: the provider refuses a second share */
    CHECK_EQ_INT(keyring_create(VAULT, "alice", "pw", &fast, 0, sp, &p, &pl, &s, &sl, NULL),
                 -EEXIST);
}

static void test_unlock_right_and_wrong_password(void)
{
    EVP_PKEY *priv = NULL;
    unsigned retry = 99;

    REQUIRE(sealed);
    CHECK_EQ_INT(keyring_unlock(VAULT, "alice", "correct horse", sealed, sealed_len, sp,
                                &priv, &retry), 0);
    CHECK_EQ_INT(retry, 0);
    REQUIRE(priv);
    CHECK(same_key_pair(pub_der, pub_len, priv));
    EVP_PKEY_free(priv);
    priv = NULL;
    CHECK_EQ_INT(keyring_unlock(VAULT, "alice", "wrong horse", sealed, sealed_len, sp,
                                &priv, NULL), -EKEYREJECTED);
    CHECK(priv == NULL);
    /* the blob is bound to its account and vault */
    CHECK(keyring_unlock(VAULT, "bob", "correct horse", sealed, sealed_len, sp, &priv,
                         NULL) < 0);
    CHECK(keyring_unlock("vault-other", "alice", "correct horse", sealed, sealed_len, sp,
                         &priv, NULL) < 0);
    CHECK(priv == NULL);
}

static void test_garbage_sealed_blobs(void)
{
    EVP_PKEY *priv = NULL;
    uint8_t *copy = malloc(sealed_len);
    int rc;

    REQUIRE(copy && sealed);
    for (size_t cut = 0; cut < sealed_len; cut += 37) {
        rc = keyring_unlock(VAULT, "alice", "correct horse", sealed, cut, sp, &priv, NULL);
        CHECK(rc == -EBADMSG || rc == -EKEYREJECTED);
    }
    /* flip a byte in every header field and in the box */
    for (size_t i = 0; i < sealed_len; i += (i < 80 ? 1 : 97)) {
        memcpy(copy, sealed, sealed_len);
        copy[i] ^= 0x40;
        rc = keyring_unlock(VAULT, "alice", "correct horse", copy, sealed_len, sp, &priv,
                            NULL);
        if (rc == 0) {   /* must never happen; report where */
            printf("# byte %zu flipped and still unlocked\n", i);
            EVP_PKEY_free(priv);
            priv = NULL;
        }
        CHECK(rc < 0);
    }
    CHECK(priv == NULL);
    free(copy);
}

static void test_sealed_blob_needs_the_share(void)
{
    char other[160], path[300];
    struct share_provider *sp2 = NULL;
    EVP_PKEY *priv = NULL, *pair = NULL;
    uint8_t *p2 = NULL, *s2 = NULL;
    size_t l2, sl2;

    /* Another key directory, where alice has another share (same password):
     * the sealed blob with the right password still does not open. */
    snprintf(other, sizeof other, "%s/keys2", scratch);
    REQUIRE(share_local_open(other, &sp2) == 0);
    CHECK_EQ_INT(keyring_unlock(VAULT, "alice", "correct horse", sealed, sealed_len, sp2,
                                &priv, NULL), -EKEYREJECTED);   /* unknown account */
    REQUIRE(keyring_create(VAULT, "alice", "correct horse", &fast, 0, sp2, &p2, &l2, &s2,
                           &sl2, &pair) == 0);
    CHECK_EQ_INT(keyring_unlock(VAULT, "alice", "correct horse", sealed, sealed_len, sp2,
                                &priv, NULL), -EKEYREJECTED);
    CHECK(priv == NULL);
    /* Tampered share file: refused or fails to open the seal. */
    REQUIRE(share_file_path(other, path, sizeof path) == 0);
    {
        FILE *f = fopen(path, "r+b");
        int c;
        REQUIRE(f);
        fseek(f, 10, SEEK_SET);            /* inside the share */
        c = fgetc(f);
        fseek(f, 10, SEEK_SET);
        fputc(c ^ 1, f);
        fclose(f);
    }
    CHECK(keyring_unlock(VAULT, "alice", "correct horse", s2, sl2, sp2, &priv, NULL) < 0);
    CHECK(priv == NULL);
    free(p2);
    free(s2);
    EVP_PKEY_free(pair);
    share_provider_destroy(sp2);
}

static void test_password_parts_are_independent(void)
{
    uint8_t half[32], auth[32], half2[32], auth2[32];

    REQUIRE(keyring_derive_password_parts("pw", &fast, half, auth) == 0);
    REQUIRE(keyring_derive_password_parts("pw", &fast, half2, auth2) == 0);
    CHECK_MEM(half, half2, 32);
    CHECK(memcmp(half, auth, 32) != 0);    /* the provider never learns key_half */
    REQUIRE(keyring_derive_password_parts("pW", &fast, half2, auth2) == 0);
    CHECK(memcmp(half, half2, 32) != 0 && memcmp(auth, auth2, 32) != 0);
}

static void test_change_password(void)
{
    uint8_t *ns = NULL;
    size_t nsl = 0;
    EVP_PKEY *priv = NULL;

    REQUIRE(sealed);
    CHECK_EQ_INT(keyring_change_password(VAULT, "alice", "wrong", "new pw", &fast, sealed,
                                         sealed_len, sp, &ns, &nsl), -EKEYREJECTED);
    CHECK(ns == NULL);
    REQUIRE(keyring_change_password(VAULT, "alice", "correct horse", "new pw", &fast, sealed,
                                    sealed_len, sp, &ns, &nsl) == 0);
    CHECK_EQ_INT(keyring_unlock(VAULT, "alice", "new pw", ns, nsl, sp, &priv, NULL), 0);
    REQUIRE(priv);
    CHECK(same_key_pair(pub_der, pub_len, priv));
    EVP_PKEY_free(priv);
    priv = NULL;
    CHECK_EQ_INT(keyring_unlock(VAULT, "alice", "correct horse", ns, nsl, sp, &priv, NULL),
                 -EKEYREJECTED);
    CHECK_EQ_INT(keyring_unlock(VAULT, "alice", "correct horse", sealed, sealed_len, sp,
                                &priv, NULL), -EKEYREJECTED);
    CHECK(priv == NULL);
    free(sealed);
    sealed = ns;
    sealed_len = nsl;
}

static void test_rotate_share(void)
{
    uint8_t *ns = NULL;
    size_t nsl = 0;
    EVP_PKEY *priv = NULL;

    REQUIRE(sealed);
    REQUIRE(keyring_rotate_share(VAULT, "alice", "new pw", sealed, sealed_len, sp, &ns,
                                 &nsl) == 0);
    CHECK_EQ_INT(keyring_unlock(VAULT, "alice", "new pw", ns, nsl, sp, &priv, NULL), 0);
    REQUIRE(priv);
    CHECK(same_key_pair(pub_der, pub_len, priv));   /* the key itself is kept */
    EVP_PKEY_free(priv);
    priv = NULL;
    /* the old blob was sealed with the old share */
    CHECK_EQ_INT(keyring_unlock(VAULT, "alice", "new pw", sealed, sealed_len, sp, &priv,
                                NULL), -EKEYREJECTED);
    CHECK(priv == NULL);
    free(sealed);
    sealed = ns;
    sealed_len = nsl;
}

static void test_keydir_permissions(void)
{
    char loose[160], file[300], path[300];
    struct share_provider *p = NULL;
    uint8_t auth[32] = { 1 }, share[32];
    FILE *f;

    snprintf(loose, sizeof loose, "%s/loose", scratch);
    REQUIRE(mkdir(loose, 0755) == 0);
    CHECK_EQ_INT(share_local_open(loose, &p), -EPERM);
    CHECK(p == NULL);
    chmod(loose, 0700);
    REQUIRE(share_local_open(loose, &p) == 0);
    CHECK_EQ_INT(p->ops->enroll(p, VAULT, "carol", auth, share), 0);
    REQUIRE(share_file_path(loose, path, sizeof path) == 0);
    {
        struct stat st;
        REQUIRE(stat(path, &st) == 0);
        CHECK_EQ_INT(st.st_mode & 0777, 0600);
        /* the file name carries no user-controlled text */
        CHECK(strstr(path, "carol") == NULL && strlen(strrchr(path, '/') + 1) == 64);
    }
    chmod(path, 0644);
    CHECK(p->ops->fetch(p, VAULT, "carol", auth, share, NULL) < 0);
    chmod(path, 0600);
    CHECK_EQ_INT(p->ops->fetch(p, VAULT, "carol", auth, share, NULL), 0);
    auth[0] = 2;
    CHECK_EQ_INT(p->ops->fetch(p, VAULT, "carol", auth, share, NULL), -EKEYREJECTED);
    /* a truncated (corrupt) share file is reported, not trusted */
    REQUIRE(truncate(path, 40) == 0);
    CHECK_EQ_INT(p->ops->fetch(p, VAULT, "carol", auth, share, NULL), -EBADMSG);
    CHECK_EQ_INT(p->ops->remove(p, VAULT, "carol"), 0);
    auth[0] = 1;
    CHECK_EQ_INT(p->ops->fetch(p, VAULT, "carol", auth, share, NULL), -EKEYREJECTED);
    share_provider_destroy(p);
    /* a plain file is not a key directory */
    snprintf(file, sizeof file, "%s/afile", scratch);
    f = fopen(file, "w");
    REQUIRE(f);
    fclose(f);
    p = NULL;
    CHECK_EQ_INT(share_local_open(file, &p), -ENOTDIR);
}

static void test_teardown(void)
{
    free(pub_der);
    free(sealed);
    share_provider_destroy(sp);
    rm_tree(scratch);
    CHECK(access(scratch, F_OK) != 0);
}

int main(void)
{
    RUN(test_setup_and_create);
    RUN(test_create_refuses_weak_params_and_duplicates);
    RUN(test_unlock_right_and_wrong_password);
    RUN(test_garbage_sealed_blobs);
    RUN(test_sealed_blob_needs_the_share);
    RUN(test_password_parts_are_independent);
    RUN(test_change_password);
    RUN(test_rotate_share);
    RUN(test_keydir_permissions);
    RUN(test_teardown);
    return tap_done();
}
