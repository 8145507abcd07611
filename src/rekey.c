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
#include "log.h"
#include "meta_shared.h"
#include "rekey.h"
#include "secmem.h"

/* ---- the files of a folder: its tree from the top directory, every entry
 * checked against its binding (a redirected entry is not followed) ---- */

struct inos {
    uint64_t *v;
    size_t n, cap;
};

/* Room for one more of n elements of size in the array whose pointer is
 * at pv (capacity *cap); the pointer is moved with memcpy, whatever its
 * type. */
static int room_for_one(void *pv, size_t *cap, size_t n, size_t size)
{
    void *p;
    if (n < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 64;
    memcpy(&p, pv, sizeof p);
    p = realloc(p, c * size);
    if (!p)
        return pfs_err(-ENOMEM, "out of memory listing the folder");
    memcpy(pv, &p, sizeof p);
    *cap = c;
    return 0;
}

static int inos_push(struct inos *l, uint64_t ino)
{
    int rc = room_for_one(&l->v, &l->cap, l->n, sizeof *l->v);
    if (rc == 0)
        l->v[l->n++] = ino;
    return rc;
}

static int inos_has(const struct inos *l, uint64_t ino)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i] == ino)
            return 1;
    return 0;
}

/* A directory entry verified under an older key version than the current. */
struct ent {
    uint64_t parent, ino;
    uint32_t mode, version;
    uint8_t name[NAME_MAX_ENC];
    size_t name_len;
    uint8_t bind[DIRENT_BIND_LEN];
};

struct ents {
    struct ent *v;
    size_t n, cap;
};

static int ents_push(struct ents *l, const struct ent *e)
{
    int rc = room_for_one(&l->v, &l->cap, l->n, sizeof *l->v);
    if (rc == 0)
        l->v[l->n++] = *e;
    return rc;
}

/* What the walk finds: directories, regular files, other inodes (symlinks
 * and the rest, for their targets and xattrs), names to re-seal. */
struct tree {
    struct inos dirs, files, others;
    struct ents old_names;
};

static void tree_free(struct tree *t)
{
    free(t->dirs.v);
    free(t->files.v);
    free(t->others.v);
    free(t->old_names.v);
    memset(t, 0, sizeof *t);
}

struct walk {
    struct vault *v;
    const struct vault_folder *vf;
    uint64_t dir;
    struct tree *t;
    struct rekey_stats *st;
    int root;                 /* listing the vault root: only the folder's entry */
    int rc;
};

/* what: "inode" or "an entry of directory inode". */
static void left_alone(struct rekey_stats *st, int tampered, const char *what, uint64_t ino,
                       const char *why)
{
    st->left++;
    st->tampered += tampered != 0;
    log_warning("rekey: %s %" PRIu64 ": %s; left alone", what, ino, why);
}

static int walk_cb(void *arg, const struct meta_dirent *d)
{
    struct walk *w = arg;
    const struct vault_folder *vf = w->vf;
    struct tree *t = w->t;
    uint32_t ver = 0;
    int ok = 0;

    if (w->root && d->ino != vf->root_ino)
        return 0;             /* another folder's name: not ours to judge */
    for (uint32_t i = vf->nkeys; i-- > 0 && !ok && d->name_len <= NAME_MAX_ENC;) {
        char plain[NAME_MAX_ENC + 1];
        size_t plen;
        if (vf->keys[i] &&
            name_decrypt(vf->keys[i], w->dir, d->name, d->name_len, plain, &plen) == 0)
            ok = dirent_bind_check(vf->keys[i], w->dir, d->name, d->name_len, d->ino, d->mode,
                                   d->bind, d->bind_len) == 0 ? 1 : -1;
        secmem_wipe(plain, sizeof plain);
        ver = i;
    }
    if (ok <= 0) {
        w->st->meta_left++;
        left_alone(w->st, 1, "an entry of directory inode", w->dir,
                   ok < 0 ? "its binding does not verify (tampering?)"
                          : "its name does not decrypt with this account's keys");
        return 0;
    }
    w->st->names++;
    if (ver != vf->cur_version) {
        struct ent e = { .parent = w->dir, .ino = d->ino, .mode = d->mode, .version = ver,
                         .name_len = d->name_len };
        memcpy(e.name, d->name, d->name_len);
        memcpy(e.bind, d->bind, DIRENT_BIND_LEN);    /* verified: that long */
        w->rc = ents_push(&t->old_names, &e);
    }
    if (w->rc == 0 && w->root)
        return 0;             /* the top directory is listed already */
    if (w->rc == 0 && S_ISDIR(d->mode) && !inos_has(&t->dirs, d->ino))
        w->rc = inos_push(&t->dirs, d->ino);
    else if (w->rc == 0 && S_ISREG(d->mode) && !inos_has(&t->files, d->ino))  /* links once */
        w->rc = inos_push(&t->files, d->ino);
    else if (w->rc == 0 && !S_ISDIR(d->mode) && !S_ISREG(d->mode) && !inos_has(&t->others, d->ino))
        w->rc = inos_push(&t->others, d->ino);
    return w->rc;
}

static int folder_tree(struct vault *v, const struct vault_folder *vf, struct tree *t,
                       struct rekey_stats *st)
{
    struct walk top = { v, vf, META_ROOT_INO, t, st, 1, 0 };
    int rc = inos_push(&t->dirs, vf->root_ino);

    if (rc == 0)
        rc = meta_dirent_list(v->meta, META_ROOT_INO, 0, walk_cb, &top);
    if (rc == 0)
        rc = top.rc;
    for (size_t i = 0; rc == 0 && i < t->dirs.n; i++) {
        struct walk w = { v, vf, t->dirs.v[i], t, st, 0, 0 };
        rc = meta_dirent_list(v->meta, t->dirs.v[i], 0, walk_cb, &w);
        if (rc == 0)
            rc = w.rc;
    }
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

/* ---- names, symlink targets, xattrs ---- */

static void meta_left_alone(struct rekey_stats *st, int tampered, const char *what, uint64_t ino,
                            const char *why)
{
    st->meta_left++;
    left_alone(st, tampered, what, ino, why);
}

/* One row changed by compare-and-swap in its own transaction: 0 (also when
 * a mount changed the row since it was verified: reported and left). */
static int reseal_row(struct vault *v, const struct meta_reseal *r, struct rekey_stats *st,
                      const char *what, uint64_t ino)
{
    int rc = meta_begin(v->meta);

    if (rc == 0)
        rc = meta_reseal(v->meta, r);
    if (rc == 0)
        rc = meta_commit(v->meta);
    else
        meta_rollback(v->meta);
    if (rc == -ENOENT) {
        meta_left_alone(st, 0, what, ino, "it changed while being re-sealed (a mount renamed, "
                        "removed or set it): run pactfs-admin rekey again");
        return 0;
    }
    if (rc == 0)
        st->resealed++;
    return rc;
}

static int reseal_name(struct vault *v, const struct vault_folder *vf, const struct ent *e,
                       struct rekey_stats *st)
{
    const struct folder_keys *cur = vault_folder_keys(v, vf->id, vf->cur_version);
    const struct folder_keys *k = vault_folder_keys(v, vf->id, e->version);
    char plain[NAME_MAX_ENC + 1];
    uint8_t enc[NAME_MAX_ENC], bind[DIRENT_BIND_LEN];
    size_t plen, enclen = sizeof enc;
    struct meta_dirent_rec rec;
    int rc = k && name_decrypt(k, e->parent, e->name, e->name_len, plain, &plen) == 0 ? 0 : -EIO;

    if (rc == 0)
        rc = name_encrypt(cur, e->parent, plain, plen, enc, &enclen);
    secmem_wipe(plain, sizeof plain);
    if (rc == 0)
        rc = dirent_bind(cur, e->parent, enc, enclen, e->ino, e->mode, bind);
    if (rc < 0)
        return pfs_err(rc, "re-sealing an entry of directory inode %" PRIu64 ": %s", e->parent,
                       pfs_err_msg());
    /* two entries of one name, one per key version (written by a mount
     * that had not picked up the rotation): both stay, for a person */
    rc = meta_dirent_find(v->meta, e->parent, enc, enclen, &rec);
    if (rc == 0) {
        meta_left_alone(st, 0, "an entry of directory inode", e->parent, "the same name is "
                        "there under the current key version too (one of the two must go: "
                        "rename one from a mount)");
        return 0;
    }
    if (rc != -ENOENT)
        return rc;
    struct meta_reseal r = { .kind = META_RESEAL_DIRENT, .owner = e->parent, .ino = e->ino,
                             .old_name = e->name, .old_name_len = e->name_len,
                             .old_val = e->bind, .old_val_len = DIRENT_BIND_LEN,
                             .new_name = enc, .new_name_len = enclen,
                             .new_val = bind, .new_val_len = sizeof bind };
    return reseal_row(v, &r, st, "an entry of directory inode", e->parent);
}

/* Open a small sealed value under any held key version (the current one
 * first): the version, or -1 if none opens.  *pt malloc'd. */
static int open_any(const struct vault_folder *vf, const uint8_t *ad, size_t adlen,
                    const uint8_t *in, size_t inlen, uint8_t **pt, size_t *ptlen)
{
    for (uint32_t i = vf->nkeys; i-- > 0;)
        if (vf->keys[i] && folder_meta_open(vf->keys[i], ad, adlen, in, inlen, pt, ptlen) == 0)
            return (int)i;
    return -1;
}

static void free_plain(uint8_t *pt, size_t n)
{
    if (pt)
        secmem_wipe(pt, n);
    free(pt);
}

static int reseal_symlink(struct vault *v, const struct vault_folder *vf, uint64_t ino,
                          struct rekey_stats *st)
{
    const struct folder_keys *cur = vault_folder_keys(v, vf->id, vf->cur_version);
    uint8_t ad[FOLDER_META_AD_MAX], *sealed = NULL, *pt = NULL, *fresh = NULL;
    size_t adlen, slen, ptlen = 0, flen;
    int ver, rc = meta_symlink_get(v->meta, ino, &sealed, &slen);

    if (rc == -ENOENT) {
        meta_left_alone(st, 1, "symlink inode", ino, "it has no target row (tampering?)");
        return 0;
    }
    if (rc == 0)
        rc = folder_meta_ad("symlink", ino, NULL, ad, &adlen);
    if (rc < 0)
        goto out;
    st->values++;
    ver = open_any(vf, ad, adlen, sealed, slen, &pt, &ptlen);
    if (ver < 0) {
        meta_left_alone(st, 1, "symlink inode", ino, "its target opens under no key version "
                        "this account holds (tampering?)");
    } else if ((uint32_t)ver != vf->cur_version) {
        st->meta_todo++;
        rc = folder_meta_seal(cur, ad, adlen, pt, ptlen, &fresh, &flen);
        if (rc == 0) {
            struct meta_reseal r = { .kind = META_RESEAL_SYMLINK, .owner = ino,
                                     .old_val = sealed, .old_val_len = slen,
                                     .new_val = fresh, .new_val_len = flen };
            rc = reseal_row(v, &r, st, "symlink inode", ino);
        }
        st->meta_done++;
    }
out:
    free_plain(pt, ptlen);
    free(sealed);
    free(fresh);
    return rc;
}

struct xname {
    uint8_t b[NAME_MAX_ENC];
    size_t len;
};

struct xnames {
    struct xname *v;
    size_t n, cap;
    int rc;
};

static int xname_cb(void *arg, const uint8_t *name, size_t nlen)
{
    struct xnames *x = arg;
    if ((x->rc = room_for_one(&x->v, &x->cap, x->n, sizeof *x->v)) < 0)
        return x->rc;
    /* one too long to be ours is kept empty: reported as not decrypting */
    x->v[x->n].len = nlen <= NAME_MAX_ENC ? nlen : NAME_MAX_ENC + 1;
    memcpy(x->v[x->n].b, name, nlen <= NAME_MAX_ENC ? nlen : 0);
    x->n++;
    return 0;
}

/* One xattr (its encrypted name enc) of ino. */
static int reseal_xattr(struct vault *v, const struct vault_folder *vf, uint64_t ino,
                        const uint8_t *enc, size_t enclen, struct rekey_stats *st)
{
    const struct folder_keys *cur = vault_folder_keys(v, vf->id, vf->cur_version);
    char plain[NAME_MAX_ENC + 1];
    uint8_t ad[FOLDER_META_AD_MAX], *sealed = NULL, *pt = NULL, *fresh = NULL, *was = NULL;
    uint8_t newname[NAME_MAX_ENC];
    size_t plen = 0, adlen = 0, slen = 0, ptlen = 0, flen = 0, wlen = 0, nlen = sizeof newname;
    int nver = -1, ver = -1, rc = 0;

    st->values++;
    for (uint32_t i = vf->nkeys; i-- > 0 && nver < 0 && enclen <= NAME_MAX_ENC;)
        if (vf->keys[i] && name_decrypt(vf->keys[i], ino, enc, enclen, plain, &plen) == 0)
            nver = (int)i;
    if (nver >= 0)
        rc = meta_xattr_get(v->meta, ino, enc, enclen, &sealed, &slen);
    if (rc == -ENOENT || rc == -ENODATA)
        goto out;                     /* removed meanwhile */
    /* a user xattr's value is bound to its name, the trash's record is not
     * (fs_trash.c): whichever opens */
    static const char *const labels[] = { "xattr", "trashinfo" };
    for (size_t l = 0; rc == 0 && nver >= 0 && ver < 0 && l < 2; l++) {
        rc = folder_meta_ad(labels[l], ino, l == 0 ? plain : NULL, ad, &adlen);
        if (rc == 0)
            ver = open_any(vf, ad, adlen, sealed, slen, &pt, &ptlen);
    }
    if (rc < 0)
        goto out;
    if (ver < 0) {
        meta_left_alone(st, 1, "an xattr of inode", ino, nver < 0 ?
                        "its name decrypts under no key version this account holds "
                        "(tampering?)" : "its value opens under no key version this account "
                        "holds (tampering?)");
        goto out;
    }
    if ((uint32_t)nver == vf->cur_version && (uint32_t)ver == vf->cur_version)
        goto out;                     /* done */
    st->meta_todo++;
    rc = name_encrypt(cur, ino, plain, plen, newname, &nlen);
    if (rc == 0)
        rc = folder_meta_seal(cur, ad, adlen, pt, ptlen, &fresh, &flen);
    if (rc < 0)
        goto out;
    if ((uint32_t)nver != vf->cur_version &&
        meta_xattr_get(v->meta, ino, newname, nlen, &was, &wlen) == 0) {
        /* set again by a mount under the current version: that one is newer */
        rc = meta_begin(v->meta);
        if (rc == 0)
            rc = meta_xattr_remove(v->meta, ino, enc, enclen);
        if (rc == 0)
            rc = meta_commit(v->meta);
        else
            meta_rollback(v->meta);
        st->resealed += rc == 0;
        rc = rc == -ENOENT || rc == -ENODATA ? 0 : rc;
    } else {
        struct meta_reseal r = { .kind = META_RESEAL_XATTR, .owner = ino,
                                 .old_name = enc, .old_name_len = enclen,
                                 .old_val = sealed, .old_val_len = slen,
                                 .new_name = newname, .new_name_len = nlen,
                                 .new_val = fresh, .new_val_len = flen };
        rc = reseal_row(v, &r, st, "an xattr of inode", ino);
    }
    st->meta_done++;
out:
    secmem_wipe(plain, sizeof plain);
    free_plain(pt, ptlen);
    free(sealed);
    free(fresh);
    free(was);
    return rc;
}

static int reseal_xattrs(struct vault *v, const struct vault_folder *vf, uint64_t ino,
                         struct rekey_stats *st)
{
    struct xnames x = { 0 };
    int rc = meta_xattr_list(v->meta, ino, xname_cb, &x);

    if (rc == 0)
        rc = x.rc;
    for (size_t i = 0; rc == 0 && i < x.n; i++)
        rc = reseal_xattr(v, vf, ino, x.v[i].b, x.v[i].len, st);
    free(x.v);
    return rc;
}

/* Every name, symlink target and xattr the walk reached, under the current
 * key version. */
static int reseal_meta(struct vault *v, const struct vault_folder *vf, struct tree *t,
                       rekey_progress_fn progress, void *arg, struct rekey_stats *st)
{
    const struct inos *all[] = { &t->dirs, &t->files, &t->others };
    int rc = 0;

    st->meta_todo = t->old_names.n;
    for (size_t i = 0; rc == 0 && i < t->old_names.n; i++) {
        rc = reseal_name(v, vf, &t->old_names.v[i], st);
        st->meta_done++;
        if (progress)
            progress(arg, st);
    }
    for (size_t i = 0; rc == 0 && i < t->others.n; i++) {
        struct meta_inode mi;
        rc = meta_inode_get(v->meta, t->others.v[i], &mi);
        if (rc == -ENOENT) {
            rc = 0;                   /* removed meanwhile */
            continue;
        }
        if (rc == 0 && mi.folder_id != vf->id)
            meta_left_alone(st, 1, "inode", mi.ino, "its row names another folder");
        else if (rc == 0 && S_ISLNK(mi.mode))
            rc = reseal_symlink(v, vf, mi.ino, st);
        if (progress)
            progress(arg, st);
    }
    for (size_t a = 0; a < sizeof all / sizeof all[0]; a++)
        for (size_t i = 0; rc == 0 && i < all[a]->n; i++) {
            rc = reseal_xattrs(v, vf, all[a]->v[i], st);
            if (progress)
                progress(arg, st);
        }
    return rc;
}

int rekey_folder(struct vault *v, const char *folder, rekey_progress_fn progress, void *arg,
                 struct rekey_stats *st)
{
    struct audit_ctx who = { getuid(), getpid() };
    struct vault_folder *vf = NULL;
    struct tree tr = { 0 };
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
        rc = folder_tree(v, vf, &tr, st);
    files = tr.files;
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
    free(busy.v);
    if (rc == 0)
        rc = reseal_meta(v, vf, &tr, progress, arg, st);
    tree_free(&tr);
    if (rc == 0 && st->tampered)
        rc = pfs_err(-EBADMSG, "%" PRIu64 " files and %" PRIu64 " names, symlink targets or "
                     "xattrs could not be re-keyed (listed above; %" PRIu64 " failed an "
                     "integrity check): they stay under a key the revoked account may hold",
                     st->left - st->meta_left, st->meta_left, st->tampered);
    else if (rc == 0 && st->left)
        rc = pfs_err(-EAGAIN, "%" PRIu64 " files and %" PRIu64 " names, symlink targets or "
                     "xattrs could not be re-keyed (listed above): they stay under a key the "
                     "revoked account may hold; run pactfs-admin rekey again",
                     st->left - st->meta_left, st->meta_left);
    snprintf(what, sizeof what, "/%s key version %u: %" PRIu64 " files re-keyed, %" PRIu64
             " already, %" PRIu64 " left; %" PRIu64 " names, symlink targets and xattrs "
             "re-sealed", folder, vf ? vf->cur_version : 0, st->rekeyed, st->already,
             st->left - st->meta_left, st->resealed);
    if (v->audit) {
        int arc = audit_event(v->audit, &who, "rekey", what, rc, 0);
        if (rc == 0)
            rc = arc;
    }
    return rc;
}
