#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "crypto.h"
#include "error.h"
#include "fileio.h"
#include "secmem.h"
#include "share.h"

/* The embedded share provider: one small file per (vault, account) in a
 * private key directory, meant to sit on another disk or device than the
 * metadata store.  File layout (docs/format-keys.md):
 *   "PFSS" u8 version=1, share[32], verifier salt[16], SHA-256(salt || auth)
 * There is no rate limiting here: whoever can read this directory already
 * holds the shares.  The network key service (pactfs-keyd) adds it. */

#define SHARE_MAGIC "PFSS"
#define SHARE_FILE_VERSION 1
#define VERIFIER_SALT_LEN 16
#define SHARE_FILE_LEN (4 + 1 + SHARE_LEN + VERIFIER_SALT_LEN + SHA256_LEN)

struct local_impl {
    char *keydir;
};

/* A share record, kept in secmem. */
struct share_record {
    uint8_t share[SHARE_LEN];
    uint8_t salt[VERIFIER_SALT_LEN];
    uint8_t verifier[SHA256_LEN];
};

static const char *keydir_of(const struct share_provider *sp)
{
    return ((const struct local_impl *)sp->impl)->keydir;
}

/* File name = hex SHA-256(vault_id "/" account): no user-controlled path
 * component ever reaches the file system.  '/' is refused in vault ids so
 * the first '/' separates the two parts unambiguously. */
static int record_path(const struct share_provider *sp, const char *vault_id,
                       const char *account, char *path, size_t pathlen)
{
    struct wbuf w;
    uint8_t *in, digest[SHA256_LEN];
    char hex[2 * SHA256_LEN + 1];
    size_t inlen;
    int n;

    if (!vault_id || !*vault_id || strchr(vault_id, '/') || !account || !*account)
        return pfs_err(-EINVAL, "local key directory: vault id and account must be "
                       "non-empty and the vault id may not contain '/'");
    wbuf_init(&w);
    wbuf_put_bytes(&w, vault_id, strlen(vault_id));
    wbuf_put_u8(&w, '/');
    wbuf_put_bytes(&w, account, strlen(account));
    in = wbuf_steal(&w, &inlen);
    if (!in)
        return pfs_err(-ENOMEM, "out of memory");
    sha256(in, inlen, digest);
    free(in);
    hex_encode(digest, sizeof digest, hex);
    n = snprintf(path, pathlen, "%s/%s", keydir_of(sp), hex);
    if (n < 0 || (size_t)n >= pathlen)
        return pfs_err(-ENAMETOOLONG, "key directory path too long");
    return 0;
}

static void verifier_of(const uint8_t salt[VERIFIER_SALT_LEN],
                        const uint8_t auth[SHARE_AUTH_LEN], uint8_t out[SHA256_LEN])
{
    uint8_t in[VERIFIER_SALT_LEN + SHARE_AUTH_LEN];

    memcpy(in, salt, VERIFIER_SALT_LEN);
    memcpy(in + VERIFIER_SALT_LEN, auth, SHARE_AUTH_LEN);
    sha256(in, sizeof in, out);
    secmem_wipe(in, sizeof in);
}

static int record_parse(const uint8_t *data, size_t len, struct share_record *rec)
{
    struct rbuf r;
    uint8_t magic[4], version = 0;

    rbuf_init(&r, data, len);
    rbuf_get_bytes(&r, magic, sizeof magic);
    rbuf_get_u8(&r, &version);
    rbuf_get_bytes(&r, rec->share, SHARE_LEN);
    rbuf_get_bytes(&r, rec->salt, VERIFIER_SALT_LEN);
    rbuf_get_bytes(&r, rec->verifier, SHA256_LEN);
    if (rbuf_end(&r) != 0 || memcmp(magic, SHARE_MAGIC, 4) != 0
        || version != SHARE_FILE_VERSION)
        return pfs_err(-EBADMSG, "share file is corrupt or of an unknown version");
    return 0;
}

/* Read the record; -ENOENT if the account has none. */
static int record_load(const char *path, struct share_record *rec)
{
    uint8_t *buf;
    struct stat st;
    ssize_t got;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? -ENOENT
                               : pfs_err(-errno, "cannot open share file %s: %s", path,
                                         strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        close(fd);
        return pfs_err(-EPERM, "share file %s is not a private regular file: it must be "
                       "mode 0600 (chmod 600 %s)", path, path);
    }
    buf = secmem_alloc(SHARE_FILE_LEN + 1);
    if (!buf) {
        close(fd);
        return pfs_err(-ENOMEM, "out of secure memory");
    }
    /* Read one byte more than expected to detect trailing garbage. */
    got = read(fd, buf, SHARE_FILE_LEN + 1);
    rc = got < 0 ? pfs_err(-errno, "cannot read share file %s: %s", path, strerror(errno))
                 : record_parse(buf, (size_t)got, rec);
    secmem_free(buf, SHARE_FILE_LEN + 1);
    close(fd);
    return rc;
}

static int sync_keydir(const struct share_provider *sp)
{
    int rc = fileio_fsync_dir(keydir_of(sp));

    return rc ? pfs_err(rc, "cannot sync key directory %s: %s", keydir_of(sp), strerror(-rc))
              : 0;
}

/* Atomic store (fileio): a temporary file, fsync, then link() (no clobber,
 * for enroll) or rename() (replace), then fsync the directory. */
static int record_store(const struct share_provider *sp, const char *path,
                        const struct share_record *rec, int exclusive)
{
    uint8_t *data;
    struct wbuf w;
    size_t len;
    int rc;

    wbuf_init_secure(&w);
    wbuf_put_bytes(&w, SHARE_MAGIC, 4);
    wbuf_put_u8(&w, SHARE_FILE_VERSION);
    wbuf_put_bytes(&w, rec->share, SHARE_LEN);
    wbuf_put_bytes(&w, rec->salt, VERIFIER_SALT_LEN);
    wbuf_put_bytes(&w, rec->verifier, SHA256_LEN);
    data = wbuf_steal(&w, &len);
    if (!data)
        return pfs_err(-ENOMEM, "out of secure memory");
    rc = fileio_atomic_write(path, data, len, exclusive ? FILEIO_NO_REPLACE : 0);
    secmem_free(data, len);
    if (rc == -EEXIST && exclusive)
        return pfs_err(rc, "the account already has a share in %s; remove it first",
                       keydir_of(sp));
    if (rc)
        return pfs_err(rc, "cannot write share file %s: %s", path, strerror(-rc));
    return sync_keydir(sp);
}


static int reject(void)
{
    return pfs_err(-EKEYREJECTED, "wrong password (the local key directory holds no share "
                   "that this password unlocks)");
}

/* Load and check the authenticator; uniform -EKEYREJECTED for unknown
 * accounts and wrong authenticators. */
static int record_login(const char *path, const uint8_t auth[SHARE_AUTH_LEN],
                        struct share_record *rec)
{
    uint8_t want[SHA256_LEN];
    int rc = record_load(path, rec);

    if (rc == -ENOENT)
        return reject();
    if (rc)
        return rc;
    verifier_of(rec->salt, auth, want);
    if (crypto_memcmp(want, rec->verifier, SHA256_LEN) != 0)
        return reject();
    return 0;
}

static int set_verifier(struct share_record *rec, const uint8_t auth[SHARE_AUTH_LEN])
{
    int rc = crypto_random(rec->salt, VERIFIER_SALT_LEN);

    if (rc == 0)
        verifier_of(rec->salt, auth, rec->verifier);
    return rc;
}

/* ---- operations ---- */

/* Common frame: path, a secmem record, the operation, wipe. */
typedef int (*record_op)(const struct share_provider *sp, const char *path,
                         struct share_record *rec, const uint8_t *a, const uint8_t *b,
                         uint8_t *share_out);

static int with_record(struct share_provider *sp, const char *vault_id, const char *account,
                       record_op op, const uint8_t *a, const uint8_t *b, uint8_t *share_out)
{
    char path[PATH_MAX];
    struct share_record *rec;
    int rc = record_path(sp, vault_id, account, path, sizeof path);

    if (rc)
        return rc;
    rec = secmem_alloc(sizeof *rec);
    if (!rec)
        return pfs_err(-ENOMEM, "out of secure memory");
    rc = op(sp, path, rec, a, b, share_out);
    secmem_free(rec, sizeof *rec);
    return rc;
}

static int op_enroll(const struct share_provider *sp, const char *path,
                     struct share_record *rec, const uint8_t *auth, const uint8_t *unused,
                     uint8_t *share_out)
{
    int rc;

    (void)unused;
    if (access(path, F_OK) == 0)
        return pfs_err(-EEXIST, "the account already has a share in %s", keydir_of(sp));
    if ((rc = crypto_random(rec->share, SHARE_LEN)) != 0 || (rc = set_verifier(rec, auth)) != 0)
        return rc;
    if ((rc = record_store(sp, path, rec, 1)) != 0)
        return rc;
    memcpy(share_out, rec->share, SHARE_LEN);
    return 0;
}

static int op_fetch(const struct share_provider *sp, const char *path,
                    struct share_record *rec, const uint8_t *auth, const uint8_t *unused,
                    uint8_t *share_out)
{
    int rc;

    (void)sp;
    (void)unused;
    if ((rc = record_login(path, auth, rec)) != 0)
        return rc;
    memcpy(share_out, rec->share, SHARE_LEN);
    return 0;
}

static int op_change_auth(const struct share_provider *sp, const char *path,
                          struct share_record *rec, const uint8_t *old_auth,
                          const uint8_t *new_auth, uint8_t *unused)
{
    int rc;

    (void)unused;
    if ((rc = record_login(path, old_auth, rec)) != 0 || (rc = set_verifier(rec, new_auth)) != 0)
        return rc;
    return record_store(sp, path, rec, 0);
}

static int op_rotate(const struct share_provider *sp, const char *path,
                     struct share_record *rec, const uint8_t *auth, const uint8_t *unused,
                     uint8_t *share_out)
{
    int rc;

    (void)unused;
    if ((rc = record_login(path, auth, rec)) != 0
        || (rc = crypto_random(rec->share, SHARE_LEN)) != 0
        || (rc = record_store(sp, path, rec, 0)) != 0)
        return rc;
    memcpy(share_out, rec->share, SHARE_LEN);
    return 0;
}

static int local_enroll(struct share_provider *sp, const char *vault_id, const char *account,
                        const uint8_t auth[SHARE_AUTH_LEN], uint8_t share_out[SHARE_LEN])
{
    return with_record(sp, vault_id, account, op_enroll, auth, NULL, share_out);
}

static int local_fetch(struct share_provider *sp, const char *vault_id, const char *account,
                       const uint8_t auth[SHARE_AUTH_LEN], uint8_t share_out[SHARE_LEN],
                       unsigned *retry_after)
{
    if (retry_after)
        *retry_after = 0;
    return with_record(sp, vault_id, account, op_fetch, auth, NULL, share_out);
}

static int local_change_auth(struct share_provider *sp, const char *vault_id,
                             const char *account, const uint8_t old_auth[SHARE_AUTH_LEN],
                             const uint8_t new_auth[SHARE_AUTH_LEN])
{
    return with_record(sp, vault_id, account, op_change_auth, old_auth, new_auth, NULL);
}

static int local_rotate(struct share_provider *sp, const char *vault_id, const char *account,
                        const uint8_t auth[SHARE_AUTH_LEN], uint8_t share_out[SHARE_LEN])
{
    return with_record(sp, vault_id, account, op_rotate, auth, NULL, share_out);
}

static int local_remove(struct share_provider *sp, const char *vault_id, const char *account)
{
    char path[PATH_MAX];
    int rc = record_path(sp, vault_id, account, path, sizeof path);

    if (rc)
        return rc;
    if (unlink(path) != 0)
        return pfs_err(-errno, "cannot remove the share of account %s: %s", account,
                       strerror(errno));
    return sync_keydir(sp);
}


/* ---- the vault head anchor: "PFSA" u8 1 | u64 counter | sha256 | blob(head)
 * in the file of the pseudo-account ANCHOR_NAME (no account name can be it:
 * '#' is not allowed in them).  docs/format-keys.md. ---- */
#define ANCHOR_MAGIC "PFSA"
#define ANCHOR_NAME "#vault-head"
#define ANCHOR_MAX (16u * 1024u * 1024u + 128u)

static int anchor_read(const char *path, uint64_t *counter, uint8_t hash[SHA256_LEN],
                       uint8_t **blob, size_t *len)
{
    struct rbuf r;
    struct stat st;
    const uint8_t *magic = NULL, *p = NULL;
    uint8_t *data = NULL, version = 0;
    ssize_t got;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    int rc;

    if (fd < 0)
        return errno == ENOENT ? -ENOENT
                               : pfs_err(-errno, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || (uint64_t)st.st_size > ANCHOR_MAX) {
        close(fd);
        return pfs_err(-EBADMSG, "the vault head anchor %s has a bad size", path);
    }
    data = malloc((size_t)st.st_size);
    got = data ? read(fd, data, (size_t)st.st_size) : -1;
    close(fd);
    if (got != st.st_size) {
        free(data);
        return pfs_err(-EIO, "cannot read the vault head anchor %s", path);
    }
    rbuf_init(&r, data, (size_t)got);
    rbuf_get_ref(&r, &magic, 4);
    rbuf_get_u8(&r, &version);
    rbuf_get_u64(&r, counter);
    rbuf_get_bytes(&r, hash, SHA256_LEN);
    rbuf_get_blob(&r, &p, len, ANCHOR_MAX);
    rc = r.err || memcmp(magic, ANCHOR_MAGIC, 4) || version != 1 || rbuf_end(&r) < 0
             ? pfs_err(-EBADMSG, "the vault head anchor %s is malformed", path) : 0;
    if (rc == 0 && blob) {
        *blob = malloc(*len ? *len : 1);
        if (!*blob)
            rc = -ENOMEM;
        else
            memcpy(*blob, p, *len);
    }
    free(data);
    return rc;
}

static int local_anchor_get(struct share_provider *sp, const char *vault_id, uint64_t *counter,
                            uint8_t hash[SHA256_LEN], uint8_t **blob, size_t *len)
{
    char path[PATH_MAX];
    int rc = record_path(sp, vault_id, ANCHOR_NAME, path, sizeof path);

    return rc < 0 ? rc : anchor_read(path, counter, hash, blob, len);
}

static int local_anchor_put(struct share_provider *sp, const char *vault_id, uint64_t counter,
                            const uint8_t hash[SHA256_LEN], const uint8_t *blob, size_t len,
                            int force)
{
    char path[PATH_MAX];
    uint64_t have = 0;
    uint8_t *data, old_hash[SHA256_LEN];
    size_t dlen, oldlen = 0;
    struct wbuf w;
    int rc = record_path(sp, vault_id, ANCHOR_NAME, path, sizeof path);

    if (rc < 0)
        return rc;
    rc = anchor_read(path, &have, old_hash, NULL, &oldlen);
    if (rc < 0 && rc != -ENOENT && !force)
        return rc;
    if (rc == 0 && counter < have && !force)
        return pfs_err(-ESTALE, "the local key directory has seen vault head %llu, newer "
                       "than %llu", (unsigned long long)have, (unsigned long long)counter);
    wbuf_init(&w);
    wbuf_put_bytes(&w, ANCHOR_MAGIC, 4);
    wbuf_put_u8(&w, 1);
    wbuf_put_u64(&w, counter);
    wbuf_put_bytes(&w, hash, SHA256_LEN);
    wbuf_put_blob(&w, blob, len);
    data = wbuf_steal(&w, &dlen);
    if (!data)
        return -ENOMEM;
    rc = fileio_atomic_write(path, data, dlen, 0);
    free(data);
    if (rc)
        return pfs_err(rc, "cannot write the vault head anchor %s: %s", path, strerror(-rc));
    return sync_keydir(sp);
}

static void local_destroy(struct share_provider *sp)
{
    struct local_impl *impl = sp->impl;

    free(impl->keydir);
    free(impl);
    free(sp);
}

static const struct share_provider_ops local_ops = {
    .name = "local",
    .enroll = local_enroll,
    .fetch = local_fetch,
    .change_auth = local_change_auth,
    .rotate = local_rotate,
    .remove = local_remove,
    .anchor_get = local_anchor_get,
    .anchor_put = local_anchor_put,
    .destroy = local_destroy,
};

/* The key directory must be ours and private: anyone who can read it holds
 * every account's share. */
static int keydir_prepare(const char *keydir)
{
    struct stat st;

    if (mkdir(keydir, 0700) != 0 && errno != EEXIST)
        return pfs_err(-errno, "cannot create key directory %s: %s", keydir, strerror(errno));
    if (lstat(keydir, &st) != 0)
        return pfs_err(-errno, "cannot stat key directory %s: %s", keydir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return pfs_err(-ENOTDIR, "key directory %s is not a directory (a symbolic link is "
                       "refused too)", keydir);
    if (st.st_uid != geteuid())
        return pfs_err(-EPERM, "key directory %s belongs to uid %u, not to this user "
                       "(uid %u)", keydir, (unsigned)st.st_uid, (unsigned)geteuid());
    if (st.st_mode & 077)
        return pfs_err(-EPERM, "key directory %s is accessible by group or others (mode "
                       "%03o); run: chmod 700 %s", keydir, (unsigned)(st.st_mode & 0777),
                       keydir);
    return 0;
}

int share_local_open(const char *keydir, struct share_provider **out)
{
    struct share_provider *sp;
    struct local_impl *impl;
    int rc;

    *out = NULL;
    if (!keydir || !*keydir)
        return pfs_err(-EINVAL, "no key directory configured");
    if (strlen(keydir) > PATH_MAX - 2 * SHA256_LEN - 32)
        return pfs_err(-ENAMETOOLONG, "key directory path too long");
    if ((rc = keydir_prepare(keydir)) != 0)
        return rc;
    sp = calloc(1, sizeof *sp);
    impl = calloc(1, sizeof *impl);
    if (!sp || !impl || !(impl->keydir = strdup(keydir))) {
        free(impl);
        free(sp);
        return pfs_err(-ENOMEM, "out of memory");
    }
    sp->ops = &local_ops;
    sp->impl = impl;
    *out = sp;
    return 0;
}
