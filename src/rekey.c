#include "config.h"

/* Re-keying a folder's files (see rekey.h). */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envelope.h"
#include "error.h"
#include "filecommit.h"
#include "grants.h"
#include "meta_shared.h"
#include "rekey.h"
#include "secmem.h"

/* ---- the files of a folder: its tree from the top directory, every entry
 * checked against its binding (a redirected entry is not followed) ---- */

struct inos {
    uint64_t *v;
    size_t n, cap;
};

static int inos_push(struct inos *l, uint64_t ino)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        uint64_t *p = realloc(l->v, cap * sizeof *p);
        if (!p)
            return pfs_err(-ENOMEM, "out of memory listing the folder");
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = ino;
    return 0;
}

static int inos_has(const struct inos *l, uint64_t ino)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i] == ino)
            return 1;
    return 0;
}

struct walk {
    struct vault *v;
    const struct vault_folder *vf;
    uint64_t dir;
    struct inos *dirs, *files;
    struct rekey_stats *st;
    int rc;
};

/* what: "inode" or "an entry of directory inode". */
static void left_alone(struct rekey_stats *st, int tampered, const char *what, uint64_t ino,
                       const char *why)
{
    st->left++;
    st->tampered += tampered != 0;
    fprintf(stderr, "\npactfs-admin rekey: %s %" PRIu64 ": %s; left alone\n", what, ino, why);
}

static int walk_cb(void *arg, const struct meta_dirent *d)
{
    struct walk *w = arg;
    const struct vault_folder *vf = w->vf;
    int ok = 0;

    for (uint32_t i = vf->nkeys; i-- > 0 && !ok;) {
        char plain[NAME_MAX_ENC + 1];
        size_t plen;
        if (vf->keys[i] &&
            name_decrypt(vf->keys[i], w->dir, d->name, d->name_len, plain, &plen) == 0)
            ok = dirent_bind_check(vf->keys[i], w->dir, d->name, d->name_len, d->ino, d->mode,
                                   d->bind, d->bind_len) == 0 ? 1 : -1;
    }
    if (ok <= 0) {
        left_alone(w->st, 1, "an entry of directory inode", w->dir,
                   ok < 0 ? "its binding does not verify (tampering?)"
                          : "its name does not decrypt with this account's keys");
        return 0;
    }
    if (S_ISDIR(d->mode) && !inos_has(w->dirs, d->ino))
        w->rc = inos_push(w->dirs, d->ino);
    else if (S_ISREG(d->mode) && !inos_has(w->files, d->ino))   /* hard links once */
        w->rc = inos_push(w->files, d->ino);
    return w->rc;
}

static int folder_files(struct vault *v, const struct vault_folder *vf, struct inos *files,
                        struct rekey_stats *st)
{
    struct inos dirs = { 0 };
    int rc = inos_push(&dirs, vf->root_ino);

    for (size_t i = 0; rc == 0 && i < dirs.n; i++) {
        struct walk w = { v, vf, dirs.v[i], &dirs, files, st, 0 };
        rc = meta_dirent_list(v->meta, dirs.v[i], 0, walk_cb, &w);
        if (rc == 0)
            rc = w.rc;
    }
    free(dirs.v);
    return rc;
}

/* ---- one file ---- */

struct chunks {
    uint64_t *idx;
    struct chunk_ref *ref;
    size_t n, cap;
};

static void chunks_free(struct chunks *c)
{
    free(c->idx);
    free(c->ref);
    memset(c, 0, sizeof *c);
}

static int chunks_cb(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    struct chunks *c = arg;
    (void)ino;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        uint64_t *i = realloc(c->idx, cap * sizeof *i);
        if (i)
            c->idx = i;
        struct chunk_ref *r2 = i ? realloc(c->ref, cap * sizeof *r2) : NULL;
        if (!r2)
            return pfs_err(-ENOMEM, "out of memory listing chunks");
        c->ref = r2;
        c->cap = cap;
    }
    c->idx[c->n] = idx;
    c->ref[c->n] = *r;
    c->n++;
    return 0;
}

static void delete_new(struct vault *v, const struct chunks *made, size_t n)
{
    for (size_t i = 0; i < n; i++)
        (void)object_delete_chunk(v->ol, &made->ref[i]);
}

/* Every chunk of ino opened under old_dek and sealed again under new_dek
 * as the next version; the new records go to made (same order as old). */
static int reseal_chunks(struct vault *v, uint64_t ino, const uint8_t *old_dek,
                         const uint8_t *new_dek, const struct chunks *old, struct chunks *made,
                         struct rekey_stats *st)
{
    uint8_t *plain = secmem_plain_alloc(v->conf.chunk_size);
    int rc = plain ? 0 : pfs_err(-ENOMEM, "out of memory for a chunk");

    for (size_t i = 0; rc == 0 && i < old->n; i++) {
        const struct chunk_ref *r = &old->ref[i];
        struct chunk_ref nr;
        uint64_t max = 0;

        if (r->plain_len > v->conf.chunk_size) {
            rc = pfs_err(-EBADMSG, "chunk %" PRIu64 " is larger than a chunk", old->idx[i]);
            break;
        }
        rc = object_get_chunk(v->ol, old_dek, ino, old->idx[i], r, plain, NULL);
        if (rc == 0)
            rc = meta_chunk_max_version(v->meta, ino, old->idx[i], &max);
        if (rc == 0)
            rc = object_put_chunk(v->ol, new_dek, ino, old->idx[i],
                                  (max > r->version ? max : r->version) + 1, plain,
                                  r->plain_len, &nr);
        if (rc == 0)
            rc = chunks_cb(made, ino, old->idx[i], &nr);
        if (rc == 0) {
            st->chunks++;
            st->bytes += r->plain_len;
        }
    }
    secmem_plain_free(plain);
    if (rc < 0)
        delete_new(v, made, made->n);
    return rc;
}

/* The transaction: under the file's row lock, the row must still be the
 * one read (else -EAGAIN: a mount committed meanwhile). */
static int record_file(struct vault *v, const struct meta_inode *was, const struct chunks *made,
                       uint32_t version, const struct folder_keys *k, const uint8_t *new_dek,
                       uint64_t generation, int locked)
{
    uint8_t *key = secmem_alloc(FC_KEY_LEN);
    struct meta_inode mi;
    struct fc_list l;
    /* locked: the caller's transaction holds the row since it was read */
    int rc = !key ? -ENOMEM : locked ? 0 : meta_begin(v->meta);

    fc_list_init(&l);
    if (rc < 0) {
        if (locked)
            meta_rollback(v->meta);
        secmem_free(key, FC_KEY_LEN);
        return rc;
    }
    if (!locked)
        rc = meta_inode_lock(v->meta, was->ino);
    if (rc == 0)
        rc = meta_inode_get(v->meta, was->ino, &mi);
    if (rc == 0 && (mi.size != was->size || mi.key_version != was->key_version ||
                    mi.commitment_len != was->commitment_len ||
                    memcmp(mi.commitment, was->commitment, mi.commitment_len) ||
                    mi.wrapped_dek_len != was->wrapped_dek_len ||
                    memcmp(mi.wrapped_dek, was->wrapped_dek, mi.wrapped_dek_len)))
        rc = -EAGAIN;
    for (size_t i = 0; rc == 0 && i < made->n; i++) {
        rc = meta_chunk_put(v->meta, mi.ino, made->idx[i], &made->ref[i]);
        if (rc == 0)
            rc = fc_list_set(&l, made->idx[i], &made->ref[i]);
    }
    if (rc == 0)
        rc = fc_key_derive(new_dek, key);
    if (rc == 0)
        rc = fc_seal(key, mi.ino, mi.size, generation + 1, &l, mi.commitment);
    if (rc == 0) {
        mi.commitment_len = FC_RECORD_LEN;
        rc = dek_wrap(k, mi.ino, new_dek, mi.wrapped_dek);
    }
    if (rc == 0) {
        mi.wrapped_dek_len = DEK_WRAPPED_LEN;
        mi.key_version = version;
        rc = meta_inode_update(v->meta, &mi);
    }
    if (rc == 0)
        rc = meta_commit(v->meta);
    else
        meta_rollback(v->meta);
    fc_list_free(&l);
    secmem_free(key, FC_KEY_LEN);
    return rc;
}

/* 1 if the file is done (under version, its DEK unwraps), 0 if re-keyed
 * now, -EAGAIN to try again, -EBADMSG if left alone (reported).
 * locked: read and re-seal inside one transaction holding the file's row
 * (for a file a mount keeps saving: commits of it wait; on SQLite every
 * writer waits, so only files up to REKEY_LOCKED_MAX bytes). */
static int rekey_file(struct vault *v, const struct vault_folder *vf, uint64_t ino,
                      struct rekey_stats *st, int locked)
{
    const struct folder_keys *cur = vault_folder_keys(v, vf->id, vf->cur_version), *k;
    uint8_t *old_dek = secmem_alloc(DEK_LEN), *new_dek = secmem_alloc(DEK_LEN);
    uint8_t *key = secmem_alloc(FC_KEY_LEN);
    struct chunks old = { 0 }, made = { 0 };
    struct meta_inode mi;
    struct fc_list l;
    struct fc_record rec;
    int rc = old_dek && new_dek && key ? 0 : -ENOMEM;

    fc_list_init(&l);
    if (rc == 0 && locked) {
        rc = meta_begin(v->meta);
        if (rc == 0 && (rc = meta_inode_lock(v->meta, ino)) < 0)
            meta_rollback(v->meta);
        if (rc < 0)
            locked = 0;           /* no transaction open */
    }
    if (rc == 0)
        rc = meta_inode_get(v->meta, ino, &mi);
    if (rc == 0 && locked && mi.size > REKEY_LOCKED_MAX)
        rc = -EAGAIN;             /* too large to hold every writer for */
    if (rc == -ENOENT) {
        rc = 1;                       /* deleted meanwhile: nothing to do */
        goto out;
    }
    if (rc < 0)
        goto out;
    if (mi.folder_id != vf->id || !S_ISREG(mi.mode)) {
        left_alone(st, 1, "inode", ino, "its row names another folder or type");
        rc = -EBADMSG;
        goto out;
    }
    if (mi.key_version == vf->cur_version &&
        dek_unwrap(cur, ino, mi.wrapped_dek, mi.wrapped_dek_len, old_dek) == 0) {
        rc = 1;
        goto out;
    }
    k = vault_folder_keys(v, vf->id, mi.key_version);
    if (!k || dek_unwrap(k, ino, mi.wrapped_dek, mi.wrapped_dek_len, old_dek) < 0) {
        left_alone(st, k != NULL, "inode", ino, k ? "its data key does not unwrap"
                   : "its data key is under a folder key version this account does not hold");
        rc = -EBADMSG;
        goto out;
    }
    rc = fc_key_derive(old_dek, key);
    if (rc == 0)
        rc = meta_chunk_list(v->meta, ino, chunks_cb, &old);
    for (size_t i = 0; rc == 0 && i < old.n; i++)
        rc = fc_list_set(&l, old.idx[i], &old.ref[i]);
    if (rc < 0)
        goto out;
    /* what is re-sealed must be what the file's readers committed */
    if (fc_verify(key, ino, mi.size, &l, mi.commitment, mi.commitment_len, 0, &rec) < 0) {
        char why[600];
        snprintf(why, sizeof why, "its commitment does not verify (%s)", pfs_err_msg());
        left_alone(st, 1, "inode", ino, why);
        rc = -EBADMSG;
        goto out;
    }
    rc = dek_generate(new_dek);
    if (rc == 0)
        rc = reseal_chunks(v, ino, old_dek, new_dek, &old, &made, st);
    if (rc == 0) {
        rc = object_layer_sync(v->ol);
        if (rc == 0)
            rc = record_file(v, &mi, &made, vf->cur_version, cur, new_dek, rec.generation,
                             locked);
        locked = 0;               /* record_file committed or rolled back */
        if (rc < 0)
            delete_new(v, &made, made.n);
    }
out:
    if (locked)
        meta_rollback(v->meta);
    fc_list_free(&l);
    chunks_free(&old);
    chunks_free(&made);
    secmem_free(old_dek, DEK_LEN);
    secmem_free(new_dek, DEK_LEN);
    secmem_free(key, FC_KEY_LEN);
    return rc;
}

int rekey_folder(struct vault *v, const char *folder, rekey_progress_fn progress, void *arg,
                 struct rekey_stats *st)
{
    struct audit_ctx who = { getuid(), getpid() };
    struct vault_folder *vf = NULL;
    struct inos files = { 0 };
    char what[600];
    int rc;

    memset(st, 0, sizeof *st);
    rc = grants_managed_folder(v, folder, &vf);
    if (rc == 0 && !vault_folder_keys(v, vf->id, vf->cur_version))
        rc = pfs_err(-EACCES, "this account does not hold the folder's current key version "
                     "%u (its signed state names it): ask the manager who rotated it",
                     vf->cur_version);
    if (rc == 0)
        rc = folder_files(v, vf, &files, st);
    st->files = files.n;
    if (rc == 0 && progress)
        progress(arg, st);
    /* Optimistic first (a mount committing meanwhile makes the file be done
     * again); a file that keeps changing is done last, holding its row. */
    struct inos busy = { 0 };
    for (size_t i = 0; rc == 0 && i < files.n + busy.n; i++) {
        int last = i >= files.n, r = -EAGAIN;
        uint64_t ino = last ? busy.v[i - files.n] : files.v[i];
        for (unsigned t = 0; r == -EAGAIN && t < (last ? 1 : REKEY_RETRIES); t++) {
            if (t || last)
                st->retries++;
            r = rekey_file(v, vf, ino, st, last);
        }
        if (r == -EAGAIN && !last) {
            rc = inos_push(&busy, ino);
            continue;
        }
        if (r == -EAGAIN) {
            left_alone(st, 0, "inode", ino, "it was being written throughout the run (and is "
                       "larger than a re-keying may hold every writer for)");
            r = -EBADMSG;
        }
        if (r == 1)
            st->already++;
        else if (r == 0)
            st->rekeyed++;
        else if (r != -EBADMSG)
            rc = r;
        if (progress)
            progress(arg, st);
    }
    free(files.v);
    free(busy.v);
    if (rc == 0 && st->tampered)
        rc = pfs_err(-EBADMSG, "%" PRIu64 " of %" PRIu64 " files could not be re-keyed (listed "
                     "above; %" PRIu64 " failed an integrity check): they stay under a key "
                     "the revoked account may hold", st->left, st->files, st->tampered);
    else if (rc == 0 && st->left)
        rc = pfs_err(-EAGAIN, "%" PRIu64 " of %" PRIu64 " files could not be re-keyed (listed "
                     "above): they stay under a key the revoked account may hold; run "
                     "pactfs-admin rekey again", st->left, st->files);
    snprintf(what, sizeof what, "/%s key version %u: %" PRIu64 " files re-keyed, %" PRIu64
             " already, %" PRIu64 " left", folder, vf ? vf->cur_version : 0, st->rekeyed,
             st->already, st->left);
    if (v->audit) {
        int arc = audit_event(v->audit, &who, "rekey", what, rc, 0);
        if (rc == 0)
            rc = arc;
    }
    return rc;
}
