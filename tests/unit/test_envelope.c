#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "envelope.h"
#include "error.h"
#include "secmem.h"
#include "tap.h"

static EVP_PKEY *alice, *bob;   /* generated once: RSA-3072 is slow */

static void test_keys_setup(void)
{
    alice = rsa_generate(3072);
    bob = rsa_generate(3072);
    REQUIRE(alice && bob);
}

static void test_folder_keys_are_distinct(void)
{
    uint8_t fk[FOLDER_KEY_LEN], fk2[FOLDER_KEY_LEN];
    struct folder_keys *k, *k2, *k3;

    REQUIRE(folder_key_generate(fk) == 0 && folder_key_generate(fk2) == 0);
    CHECK(memcmp(fk, fk2, FOLDER_KEY_LEN) != 0);
    k = folder_keys_derive(fk, 3);
    k2 = folder_keys_derive(fk, 3);
    k3 = folder_keys_derive(fk2, 3);
    REQUIRE(k && k2 && k3);
    CHECK_EQ_INT(k->key_version, 3);
    CHECK_MEM(k->wrap_key, k2->wrap_key, AEAD_KEY_LEN);    /* deterministic */
    CHECK(memcmp(k->wrap_key, k->meta_key, AEAD_KEY_LEN) != 0);
    CHECK(memcmp(k->wrap_key, k->name_key, AEAD_KEY_LEN) != 0);
    CHECK(memcmp(k->wrap_key, fk, AEAD_KEY_LEN) != 0);
    CHECK(memcmp(k->wrap_key, k3->wrap_key, AEAD_KEY_LEN) != 0);
    folder_keys_free(k);
    folder_keys_free(k2);
    folder_keys_free(k3);
}

static void test_envelope_binding(void)
{
    uint8_t fk[FOLDER_KEY_LEN], back[FOLDER_KEY_LEN], *env = NULL;
    size_t envlen = 0;

    REQUIRE(alice && bob);
    folder_key_generate(fk);
    REQUIRE(envelope_seal(alice, "vault-1", 42, 2, fk, &env, &envlen) == 0);
    CHECK_EQ_INT(envelope_open(alice, "vault-1", 42, 2, env, envlen, back), 0);
    CHECK_MEM(back, fk, FOLDER_KEY_LEN);
    CHECK_EQ_INT(envelope_open(bob, "vault-1", 42, 2, env, envlen, back), -EBADMSG);
    CHECK_EQ_INT(envelope_open(alice, "vault-1", 43, 2, env, envlen, back), -EBADMSG);
    CHECK_EQ_INT(envelope_open(alice, "vault-1", 42, 1, env, envlen, back), -EBADMSG);
    CHECK_EQ_INT(envelope_open(alice, "vault-2", 42, 2, env, envlen, back), -EBADMSG);
    env[envlen / 2] ^= 4;
    CHECK_EQ_INT(envelope_open(alice, "vault-1", 42, 2, env, envlen, back), -EBADMSG);
    free(env);
}

static void test_dek_bound_to_inode(void)
{
    uint8_t fk[FOLDER_KEY_LEN], fk2[FOLDER_KEY_LEN], dek[DEK_LEN], back[DEK_LEN];
    uint8_t w[DEK_WRAPPED_LEN];
    struct folder_keys *k, *k2;

    folder_key_generate(fk);
    folder_key_generate(fk2);
    k = folder_keys_derive(fk, 1);
    k2 = folder_keys_derive(fk2, 2);
    REQUIRE(k && k2);
    REQUIRE(dek_generate(dek) == 0);
    REQUIRE(dek_wrap(k, 100, dek, w) == 0);
    CHECK_EQ_INT(w[0], 1);
    CHECK_EQ_INT(dek_unwrap(k, 100, w, sizeof w, back), 0);
    CHECK_MEM(back, dek, DEK_LEN);
    CHECK_EQ_INT(dek_unwrap(k, 101, w, sizeof w, back), -EBADMSG);   /* moved */
    CHECK_EQ_INT(dek_unwrap(k2, 100, w, sizeof w, back), -EBADMSG);  /* other folder */
    CHECK_EQ_INT(dek_unwrap(k, 100, w, sizeof w - 1, back), -EBADMSG);
    w[0] = 2;
    CHECK_EQ_INT(dek_unwrap(k, 100, w, sizeof w, back), -EBADMSG);   /* version */
    w[0] = 1;
    w[20] ^= 1;
    CHECK_EQ_INT(dek_unwrap(k, 100, w, sizeof w, back), -EBADMSG);
    folder_keys_free(k);
    folder_keys_free(k2);
}

static void test_names_roundtrip_and_binding(void)
{
    uint8_t fk[FOLDER_KEY_LEN], enc[NAME_MAX_ENC], enc2[NAME_MAX_ENC];
    char back[NAME_MAX_ENC];
    char longest[NAME_MAX_PLAIN + 2];
    size_t el = 0, el2 = 0, bl = 0;
    struct folder_keys *k;

    folder_key_generate(fk);
    k = folder_keys_derive(fk, 1);
    REQUIRE(k);
    REQUIRE(name_encrypt(k, 5, "contract.pdf", 12, enc, &el) == 0);
    CHECK_EQ_INT(el, 12 + SIV_TAG_LEN + 1);
    CHECK_EQ_INT(name_decrypt(k, 5, enc, el, back, &bl), 0);
    CHECK_EQ_INT(bl, 12);
    CHECK(strcmp(back, "contract.pdf") == 0);
    REQUIRE(name_encrypt(k, 5, "contract.pdf", 12, enc2, &el2) == 0);
    CHECK(el == el2 && memcmp(enc, enc2, el) == 0);       /* indexable */
    CHECK_EQ_INT(name_decrypt(k, 6, enc, el, back, &bl), -EBADMSG);
    REQUIRE(name_encrypt(k, 6, "contract.pdf", 12, enc2, &el2) == 0);
    CHECK(memcmp(enc, enc2, el) != 0);
    enc[el - 1] ^= 1;
    CHECK_EQ_INT(name_decrypt(k, 5, enc, el, back, &bl), -EBADMSG);

    memset(longest, 'a', sizeof longest);
    longest[NAME_MAX_PLAIN + 1] = '\0';
    CHECK_EQ_INT(name_encrypt(k, 5, longest, NAME_MAX_PLAIN, enc, &el), 0);
    CHECK_EQ_INT(name_decrypt(k, 5, enc, el, back, &bl), 0);
    CHECK_EQ_INT(bl, NAME_MAX_PLAIN);
    CHECK(name_encrypt(k, 5, longest, NAME_MAX_PLAIN + 1, enc, &el) < 0);
    CHECK(name_encrypt(k, 5, "", 0, enc, &el) < 0);
    CHECK(name_encrypt(k, 5, ".", 1, enc, &el) < 0);
    CHECK(name_encrypt(k, 5, "..", 2, enc, &el) < 0);
    CHECK(name_encrypt(k, 5, "a/b", 3, enc, &el) < 0);
    CHECK(name_encrypt(k, 5, "a\0b", 3, enc, &el) < 0);
    CHECK(name_encrypt(k, 5, "...", 3, enc, &el) == 0);   /* a legal name */
    folder_keys_free(k);
}

static void test_folder_meta(void)
{
    uint8_t fk[FOLDER_KEY_LEN], *sealed = NULL, *out = NULL;
    size_t sl = 0, ol = 0;
    struct folder_keys *k;

    folder_key_generate(fk);
    k = folder_keys_derive(fk, 1);
    REQUIRE(k);
    REQUIRE(folder_meta_seal(k, "symlink 9", 9, "../target", 9, &sealed, &sl) == 0);
    CHECK_EQ_INT(folder_meta_open(k, "symlink 9", 9, sealed, sl, &out, &ol), 0);
    CHECK(out && ol == 9 && strcmp((char *)out, "../target") == 0);
    free(out);
    out = NULL;
    CHECK_EQ_INT(folder_meta_open(k, "symlink 8", 9, sealed, sl, &out, &ol), -EBADMSG);
    CHECK(out == NULL);
    free(sealed);
    folder_keys_free(k);
}

static void test_dirent_binding(void)
{
    uint8_t fk[FOLDER_KEY_LEN], enc[NAME_MAX_ENC], enc2[NAME_MAX_ENC];
    uint8_t b[DIRENT_BIND_LEN], b2[DIRENT_BIND_LEN];
    size_t elen, elen2;
    struct folder_keys *k, *k2;

    REQUIRE(folder_key_generate(fk) == 0);
    k = folder_keys_derive(fk, 1);
    REQUIRE(folder_key_generate(fk) == 0);
    k2 = folder_keys_derive(fk, 1);
    REQUIRE(k && k2);
    CHECK(memcmp(k->bind_key, k->wrap_key, AEAD_KEY_LEN) != 0);
    REQUIRE(name_encrypt(k, 5, "approved.txt", 12, enc, &elen) == 0);
    REQUIRE(name_encrypt(k, 5, "rejected.txt", 12, enc2, &elen2) == 0);
    REQUIRE(dirent_bind(k, 5, enc, elen, 100, S_IFREG | 0644, b) == 0);
    REQUIRE(dirent_bind(k, 5, enc2, elen2, 101, S_IFREG | 0600, b2) == 0);
    CHECK_EQ_INT(dirent_bind_check(k, 5, enc, elen, 100, S_IFREG, b, sizeof b), 0);
    /* permission bits are not bound (chmod does not rewrite entries) */
    CHECK_EQ_INT(dirent_bind_check(k, 5, enc, elen, 100, S_IFREG | 0777, b, sizeof b), 0);
    /* the two entries' targets swapped, with or without their bindings */
    CHECK_EQ_INT(dirent_bind_check(k, 5, enc, elen, 101, S_IFREG, b, sizeof b), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "entry binding") != NULL);
    CHECK_EQ_INT(dirent_bind_check(k, 5, enc, elen, 101, S_IFREG, b2, sizeof b2), -EBADMSG);
    /* another type, another parent, another folder key, no binding, short */
    CHECK_EQ_INT(dirent_bind_check(k, 5, enc, elen, 100, S_IFDIR, b, sizeof b), -EBADMSG);
    CHECK_EQ_INT(dirent_bind_check(k, 6, enc, elen, 100, S_IFREG, b, sizeof b), -EBADMSG);
    CHECK_EQ_INT(dirent_bind_check(k2, 5, enc, elen, 100, S_IFREG, b, sizeof b), -EBADMSG);
    CHECK_EQ_INT(dirent_bind_check(k, 5, enc, elen, 100, S_IFREG, b, 0), -EBADMSG);
    CHECK_EQ_INT(dirent_bind_check(k, 5, enc, elen, 100, S_IFREG, b, sizeof b - 1), -EBADMSG);
    b[7] ^= 1;
    CHECK_EQ_INT(dirent_bind_check(k, 5, enc, elen, 100, S_IFREG, b, sizeof b), -EBADMSG);
    folder_keys_free(k);
    folder_keys_free(k2);
}

int main(void)
{
    RUN(test_keys_setup);
    RUN(test_folder_keys_are_distinct);
    RUN(test_envelope_binding);
    RUN(test_dek_bound_to_inode);
    RUN(test_names_roundtrip_and_binding);
    RUN(test_folder_meta);
    RUN(test_dirent_binding);
    EVP_PKEY_free(alice);
    EVP_PKEY_free(bob);
    return tap_done();
}
