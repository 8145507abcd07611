#include "config.h"

/* Running mounts follow revocation (docs/accounts.md, "Running mounts
 * follow revocation").
 *
 * A thread re-checks, every accounts.revocation_check_seconds (default 15)
 * or at once when poked (fs_watch: a PostgreSQL notification), whether the
 * signed vault head changed.  When it did (or the account's expiry passed),
 * it verifies again, as unlock did:
 *   - the account's registry record: still verified, enabled, unexpired,
 *     with a data role (user or dataadmin), else every folder is dropped;
 *   - each folder's signed state: the account still a member, else that
 *     folder is dropped; fewer rights than the mount holds lower them.
 * A dropped folder gets rights 0 (every later operation is EACCES, audited
 * as denied) and its key pointers are cleared; the keys themselves are
 * wiped and freed a grace period later, once operations that took a
 * pointer before have finished.  The per-file data keys of its open or
 * cached inodes are wiped at once (fs_data_withdraw: it waits for the
 * operations under way on each file).  Each drop is audited
 * ("access-revoked").
 */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope.h"
#include "error.h"
#include "folder_state.h"
#include "fs_internal.h"
#include "grants.h"
#include "log.h"
#include "registry.h"
#include "vault_head.h"

#define GRACE_NS 3000000000ll    /* a dropped key is wiped this long after */
#define GRAVE_MAX 4096

struct fs_access {
    struct fs *fs;
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop, poke;
    unsigned interval_s;
    uint8_t head_hash[SHA256_LEN];
    int64_t expires;               /* of the account's record; 0 never */
    int all_dropped;
    struct folder_keys *grave[GRAVE_MAX];
    int64_t grave_at[GRAVE_MAX];
    size_t ngrave;
};

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint32_t fs_folder_rights(struct fs *fs, uint64_t folder_id)
{
    struct vault_folder *vf = vault_folder_by_id(fs->v, folder_id);
    return vf ? __atomic_load_n(&vf->rights, __ATOMIC_ACQUIRE) : 0;
}

/* SHA-256 of the stored vault head (all zero if there is none). */
static int head_hash(struct fs *fs, uint8_t out[SHA256_LEN])
{
    uint8_t *raw = NULL;
    size_t len = 0;
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_param_get(fs->v->meta, VAULT_HEAD_PARAM, &raw, &len);
    pthread_mutex_unlock(&fs->meta_lock);
    memset(out, 0, SHA256_LEN);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    sha256(raw, len, out);
    free(raw);
    return 0;
}

static void bury(struct fs_access *a, struct folder_keys *k)
{
    if (a->ngrave == GRAVE_MAX) {    /* cannot happen with sane key counts */
        folder_keys_free(a->grave[0]);
        memmove(a->grave, a->grave + 1, (GRAVE_MAX - 1) * sizeof *a->grave);
        memmove(a->grave_at, a->grave_at + 1, (GRAVE_MAX - 1) * sizeof *a->grave_at);
        a->ngrave--;
    }
    a->grave[a->ngrave] = k;
    a->grave_at[a->ngrave++] = mono_ns();
}

/* Wipe and free the keys dropped more than the grace period ago (all: at stop). */
static void sweep(struct fs_access *a, int all)
{
    size_t keep = 0;
    int64_t now = mono_ns();
    for (size_t i = 0; i < a->ngrave; i++) {
        if (all || now - a->grave_at[i] >= GRACE_NS) {
            folder_keys_free(a->grave[i]);
        } else {
            a->grave[keep] = a->grave[i];
            a->grave_at[keep++] = a->grave_at[i];
        }
    }
    a->ngrave = keep;
}

/* One inode of a withdrawn folder: its data key and commitment key and
 * the plaintext the mount cached of it, then in the kernel its pages (also
 * those mapped by a process) and attributes, then its name. */
static void forget_inode(struct fs *fs, struct fs_inode *in)
{
    char name[NAME_MAX + 1];
    uint64_t parent;
    void (*inval_inode)(struct fs *, uint64_t) = fs->inval_inode;
    void (*inval_entry)(struct fs *, uint64_t, const char *) = fs->inval_entry;
    fs_data_withdraw(fs, in);
    fs_data_cache_drop(fs, in->ino);
    if (inval_inode)
        inval_inode(fs, in->ino);
    if (inval_entry && fs_inode_name(fs, in->ino, &parent, name, sizeof name) == 0)
        inval_entry(fs, parent, name);
}

/* The mount and the kernel forget what they cached of a withdrawn folder
 * while the account was a member: the mount's plaintext chunks, and every
 * page, attribute and name of each inode of it the kernel holds (open ones
 * too), the folder's name and the top-level listing.  Their next use
 * reaches the daemon, which refuses it (rights are already 0).  Called with
 * no lock held: the kernel waits for requests on those inodes that are
 * under way (a read filling a page, a lookup in the directory), and their
 * handlers may need any of the mount's locks; a read the kernel was still
 * waiting for is dropped as well. */
static void forget_folder(struct fs *fs, const struct vault_folder *vf)
{
    fs_itab_each_in_folder(fs, vf->id, forget_inode);
    struct fs_inode *root = fs_inode_find(fs, vf->root_ino);
    if (root) {
        if (root->folder_id != vf->id)
            forget_inode(fs, root);
        fs_inode_put(fs, root, FS_REF_OP, 1);
    }
    void (*inval_inode)(struct fs *, uint64_t) = fs->inval_inode;
    if (inval_inode)
        inval_inode(fs, META_ROOT_INO);
}

/* The folder is gone for this account: no rights, no keys, audited. */
static void drop_folder(struct fs_access *a, struct vault_folder *vf, const char *why)
{
    struct fs *fs = a->fs;
    if (!__atomic_load_n(&vf->rights, __ATOMIC_ACQUIRE) && !vf->nkeys)
        return;
    char *path = fs_path(fs, vf->root_ino, NULL);
    __atomic_store_n(&vf->rights, 0, __ATOMIC_RELEASE);
    for (uint32_t i = 0; i < vf->nkeys; i++) {
        struct folder_keys *k = __atomic_exchange_n(&vf->keys[i], NULL, __ATOMIC_ACQ_REL);
        if (k)
            bury(a, k);
    }
    forget_folder(fs, vf);   /* before the log line: it says all is done */
    log_warning("access to %s withdrawn (%s): its keys are dropped from memory, "
                "further access is refused", path ? path : "a folder", why);
    char what[600];
    snprintf(what, sizeof what, "%s (%s)", path ? path : "?", why);
    fs_audit(fs, NULL, "access-revoked", what, -EACCES, 0);
    free(path);
}

/* Why the account may no longer hold data (NULL: it may). */
static const char *account_gone(struct fs *fs, struct fs_access *a, char *buf, size_t len)
{
    struct vault *v = fs->v;
    struct registry_record r = { 0 };
    int rc = registry_verify(v->meta, v->conf.vault_id, v->conf.root_fingerprint, v->account.id,
                             &r);
    const char *why = NULL;
    if (rc < 0) {
        snprintf(buf, len, "the account's registry record no longer verifies: %s",
                 pfs_err_msg());
        why = buf;
    } else if (r.disabled) {
        why = "the account was disabled";
    } else if (r.details.expires && (int64_t)time(NULL) > r.details.expires) {
        why = "the account expired";
    } else if (!(r.roles & (ROLE_USER | ROLE_DATAADMIN))) {
        why = "the account lost its data role";
    }
    a->expires = rc == 0 ? r.details.expires : 0;
    registry_record_clear(&r);
    pfs_err_clear();
    return why;
}

struct verdict {
    uint32_t rights;       /* by the signed state; 0: drop */
    uint32_t key_version;  /* the signed state's key version for new data */
    char why[160];
};

/* Open this account's envelope of the folder's new key version (meta_lock
 * held); until it opens, writes to the folder are refused rather than
 * sealed under the old key. */
static void adopt_rotation(struct fs *fs, struct vault_folder *vf, uint32_t version)
{
    uint32_t old = vf->cur_version;
    char *path = fs_path(fs, vf->root_ino, NULL);
    char what[600];
    int r = vault_folder_load(fs->v, vf->id);
    if (r == 0 && !vault_folder_keys(fs->v, vf->id, version))
        r = pfs_err(-EIO, "no envelope of key version %u opens for this account", version);
    if (r == 0) {
        snprintf(what, sizeof what, "%s (key version %u -> %u)", path ? path : "?", old, version);
        log_info("the folder key of %s was rotated; new data goes under key "
                 "version %u", path ? path : "a folder", version);
        fs_audit(fs, NULL, "key-rotated", what, 0, 0);
    } else {
        snprintf(what, sizeof what, "%s (key version %u: %s)", path ? path : "?", version,
                 pfs_err_msg());
        log_error("the folder key of %s was rotated to version %u, which this "
                  "mount cannot open (%s); writes to it are refused: unmount and mount again",
                  path ? path : "a folder", version, pfs_err_msg());
        __atomic_store_n(&vf->rights, __atomic_load_n(&vf->rights, __ATOMIC_ACQUIRE) &
                         ~(uint32_t)RIGHT_WRITE, __ATOMIC_RELEASE);
        fs_audit(fs, NULL, "key-rotated", what, -EIO, 0);
    }
    free(path);
}

int fs_keys_catch_up_locked(struct fs *fs, uint64_t folder_id)
{
    struct vault *v = fs->v;
    struct vault_folder *vf = NULL;
    struct meta_folder mf;
    struct folder_state st;
    size_t n = __atomic_load_n(&v->nfolders, __ATOMIC_ACQUIRE);

    for (size_t i = 0; i < n && !vf; i++)
        if (v->folders[i].id == folder_id)
            vf = &v->folders[i];
    /* the folder row is only a hint (unsigned): the signed state decides */
    if (!vf || !__atomic_load_n(&vf->rights, __ATOMIC_ACQUIRE) ||
        meta_folder_get(v->meta, folder_id, &mf) < 0 || mf.key_version <= vf->cur_version) {
        pfs_err_clear();
        return 0;
    }
    uint32_t was = vf->cur_version;
    if (folder_state_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, folder_id, &st,
                          NULL, NULL) == 0) {
        if (folder_state_rights(&st, v->account.id) && st.key_version > was)
            adopt_rotation(fs, vf, st.key_version);
        folder_state_clear(&st);
    }
    pfs_err_clear();
    return vf->cur_version != was;
}

int fs_access_check_now(struct fs *fs)
{
    struct fs_access *a = fs->access;
    struct vault *v = fs->v;
    uint8_t h[SHA256_LEN];
    int r = head_hash(fs, h);
    if (r < 0)
        return r;
    int expired = a->expires && (int64_t)time(NULL) > a->expires;
    if (!memcmp(h, a->head_hash, sizeof h) && !expired)
        return 0;
    if (a->all_dropped)
        return 0;
    size_t n = __atomic_load_n(&v->nfolders, __ATOMIC_ACQUIRE);
    struct verdict *vd = calloc(n ? n : 1, sizeof *vd);
    if (!vd)
        return -ENOMEM;
    char buf[400];
    pthread_mutex_lock(&fs->meta_lock);
    const char *gone = account_gone(fs, a, buf, sizeof buf);
    if (gone)
        snprintf(buf, sizeof buf, "%s", gone);
    for (size_t i = 0; !gone && i < n; i++) {
        struct vault_folder *vf = &v->folders[i];
        struct folder_state st;
        if (!__atomic_load_n(&vf->rights, __ATOMIC_ACQUIRE))
            continue;
        if (folder_state_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, vf->id, &st,
                              NULL, NULL) < 0) {
            snprintf(vd[i].why, sizeof vd[i].why, "the folder's signed state no longer "
                     "verifies");
            continue;
        }
        vd[i].rights = folder_state_rights(&st, v->account.id);
        vd[i].key_version = st.key_version;
        if (!vd[i].rights)
            snprintf(vd[i].why, sizeof vd[i].why, "the account's access was revoked");
        folder_state_clear(&st);
    }
    /* A folder key rotated since the mount (someone else was revoked): new
     * data must go under the new version at once, never under the old key
     * the revoked account still holds. */
    for (size_t i = 0; !gone && i < n; i++) {
        struct vault_folder *vf = &v->folders[i];
        if (vd[i].rights && vd[i].key_version > vf->cur_version)
            adopt_rotation(fs, vf, vd[i].key_version);
    }
    pfs_err_clear();
    pthread_mutex_unlock(&fs->meta_lock);

    for (size_t i = 0; i < n; i++) {
        struct vault_folder *vf = &v->folders[i];
        uint32_t held = __atomic_load_n(&vf->rights, __ATOMIC_ACQUIRE);
        if (gone) {
            drop_folder(a, vf, buf);
        } else if (held && !vd[i].rights) {
            drop_folder(a, vf, vd[i].why);
        } else if (held & ~vd[i].rights) {
            char path_what[600], rs[40];
            char *path = fs_path(fs, vf->root_ino, NULL);
            __atomic_store_n(&vf->rights, held & vd[i].rights, __ATOMIC_RELEASE);
            grants_rights_format(held & vd[i].rights, rs, sizeof rs);
            snprintf(path_what, sizeof path_what, "%s (rights now %s)", path ? path : "?", rs);
            log_info("rights on %s lowered to %s by the folder's signed state",
                     path ? path : "a folder", rs);
            fs_audit(fs, NULL, "access-reduced", path_what, 0, 0);
            free(path);
        }
    }
    if (gone)
        a->all_dropped = 1;
    free(vd);
    memcpy(a->head_hash, h, sizeof h);
    return 0;
}

static void *access_main(void *arg)
{
    struct fs_access *a = arg;
    pthread_mutex_lock(&a->lock);
    while (!a->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += a->ngrave ? 1 : a->interval_s;
        while (!a->stop && !a->poke &&
               pthread_cond_timedwait(&a->cond, &a->lock, &until) != ETIMEDOUT)
            ;
        if (a->stop)
            break;
        a->poke = 0;
        pthread_mutex_unlock(&a->lock);
        if (fs_access_check_now(a->fs) < 0)
            log_error("cannot re-check this account's access: %s",
                      pfs_err_msg());
        sweep(a, 0);
        pthread_mutex_lock(&a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

int fs_access_start(struct fs *fs)
{
    struct fs_access *a = calloc(1, sizeof *a);
    if (!a)
        return pfs_err(-ENOMEM, "out of memory");
    a->fs = fs;
    a->interval_s = fs->v->conf.revocation_check_s ? fs->v->conf.revocation_check_s : 15;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    char buf[400];
    int r = head_hash(fs, a->head_hash);   /* unlock has just verified this head */
    if (r == 0) {
        pthread_mutex_lock(&fs->meta_lock);
        account_gone(fs, a, buf, sizeof buf);   /* the expiry to watch */
        pthread_mutex_unlock(&fs->meta_lock);
        fs->access = a;
        r = pthread_create(&a->thread, NULL, access_main, a) == 0
            ? 0 : pfs_err(-EAGAIN, "cannot start the revocation check thread");
    }
    if (r < 0) {
        fs->access = NULL;
        pthread_mutex_destroy(&a->lock);
        pthread_cond_destroy(&a->cond);
        free(a);
        return r;
    }
    a->started = 1;
    return 0;
}

/* Set *flag and wake the thread. */
static void wake(struct fs_access *a, int *flag)
{
    pthread_mutex_lock(&a->lock);
    *flag = 1;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

void fs_access_poke(struct fs *fs)
{
    if (fs->access)
        wake(fs->access, &fs->access->poke);
}

void fs_access_stop(struct fs *fs)
{
    struct fs_access *a = fs->access;
    if (!a)
        return;
    wake(a, &a->stop);
    if (a->started)
        pthread_join(a->thread, NULL);
    sweep(a, 1);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->cond);
    fs->access = NULL;
    free(a);
}
