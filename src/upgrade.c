#include "config.h"

/* Format 1 -> 2 (see upgrade.h). */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "envelope.h"
#include "error.h"
#include "filecommit.h"
#include "log.h"
#include "secmem.h"
#include "upgrade.h"

int upgrade_backup_sqlite(const char *meta_path, const char *backup_path, int *made)
{
    sqlite3 *src = NULL, *dst = NULL;
    sqlite3_backup *b;
    char tmp[4200];
    int rc;

    *made = 0;
    if (access(backup_path, F_OK) == 0)
        return 0;
    snprintf(tmp, sizeof tmp, "%s.partial", backup_path);
    unlink(tmp);
    rc = sqlite3_open_v2(meta_path, &src, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK) {
        b = sqlite3_backup_init(dst, "main", src, "main");
        if (!b) {
            rc = sqlite3_errcode(dst);
        } else {
            rc = sqlite3_backup_step(b, -1);
            sqlite3_backup_finish(b);
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
    }
    if (rc != SQLITE_OK) {
        int e = pfs_err(-EIO, "cannot back up %s to %s: %s", meta_path, tmp,
                        sqlite3_errstr(rc));
        sqlite3_close(src);
        sqlite3_close(dst);
        unlink(tmp);
        return e;
    }
    sqlite3_close(src);
    sqlite3_close(dst);
    if (chmod(tmp, 0600) < 0 || rename(tmp, backup_path) < 0) {
        unlink(tmp);
        return pfs_err(-errno, "cannot put the backup at %s: %s", backup_path, strerror(errno));
    }
    *made = 1;
    return 0;
}

/* ---- one directory ---- */

struct entry {
    uint8_t name[META_NAME_MAX];
    size_t name_len;
    uint8_t bind[META_BIND_MAX];
    size_t bind_len;
    uint64_t ino;
    uint32_t mode;
};

struct entries {
    struct entry *e;
    size_t n, cap;
    uint64_t only_ino;         /* at the root: only this folder's entry */
};

/* A new zeroed slot at the end of l, or NULL (pfs_err set). */
static struct entry *entries_add(struct entries *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct entry *p = realloc(l->e, cap * sizeof *p);
        if (!p) {
            pfs_err(-ENOMEM, "out of memory listing directories");
            return NULL;
        }
        l->e = p;
        l->cap = cap;
    }
    memset(&l->e[l->n], 0, sizeof l->e[0]);
    return &l->e[l->n++];
}

static int collect_cb(void *arg, const struct meta_dirent *d)
{
    struct entries *l = arg;
    if (l->only_ino && d->ino != l->only_ino)
        return 0;
    if (d->name_len > META_NAME_MAX || d->bind_len > META_BIND_MAX)
        return 0;
    struct entry *e = entries_add(l);
    if (!e)
        return -ENOMEM;
    memcpy(e->name, d->name, d->name_len);
    e->name_len = d->name_len;
    if (d->bind_len)
        memcpy(e->bind, d->bind, d->bind_len);
    e->bind_len = d->bind_len;
    e->ino = d->ino;
    e->mode = d->mode;
    return 0;
}

static int push_dir(struct entries *l, uint64_t ino)
{
    struct entry *e = entries_add(l);
    if (!e)
        return -ENOMEM;
    e->ino = ino;
    return 0;
}

/* Directories already queued (a cycle made by editing rows must not loop). */
struct seen {
    uint64_t *slot;
    size_t cap, n;
};

/* 1 if ino was already in the set, 0 if added, < 0 on error. */
static int seen_add(struct seen *s, uint64_t ino)
{
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        uint64_t *t = calloc(cap, sizeof *t);
        if (!t)
            return pfs_err(-ENOMEM, "out of memory");
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i])
                for (size_t j = (s->slot[i] * 0x9E3779B97F4A7C15ull) & (cap - 1);;
                     j = (j + 1) & (cap - 1))
                    if (!t[j]) {
                        t[j] = s->slot[i];
                        break;
                    }
        free(s->slot);
        s->slot = t;
        s->cap = cap;
    }
    for (size_t j = (ino * 0x9E3779B97F4A7C15ull) & (s->cap - 1);; j = (j + 1) & (s->cap - 1)) {
        if (s->slot[j] == ino)
            return 1;
        if (!s->slot[j]) {
            s->slot[j] = ino;
            s->n++;
            return 0;
        }
    }
}

/* The held key version whose name key decrypts e's name under parent. */
static const struct folder_keys *name_key_of(const struct vault_folder *vf, uint64_t parent,
                                             const struct entry *e, char *plain)
{
    size_t plen;
    for (uint32_t i = vf->nkeys; i-- > 0;)
        if (vf->keys[i] &&
            name_decrypt(vf->keys[i], parent, e->name, e->name_len, plain, &plen) == 0)
            return vf->keys[i];
    return NULL;
}

struct fc_collect {
    struct fc_list *l;
};

static int chunk_cb(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    struct fc_collect *c = arg;
    (void)ino;
    return fc_list_set(c->l, idx, r);
}

static void problem(struct upgrade_stats *st, uint64_t parent, const char *name,
                    const char *what)
{
    st->problems++;
    log_warning("upgrade: %s (entry %s of directory inode %" PRIu64 "): left alone", what, name,
                parent);
}

/* Give regular file ino a commitment if it has none (in a transaction). */
static int commit_file(struct vault *v, const struct vault_folder *vf, uint64_t parent,
                       const char *name, uint64_t ino, struct upgrade_stats *st)
{
    struct meta_inode mi;
    int rc = meta_inode_get(v->meta, ino, &mi);
    if (rc < 0)
        return rc;
    const struct folder_keys *k = vault_folder_keys(v, vf->id, mi.key_version);
    if (!k || mi.folder_id != vf->id) {
        problem(st, parent, name, "its data key is under a folder key this account does "
                "not hold");
        return 0;
    }
    uint8_t *dek = secmem_alloc(DEK_LEN), *key = secmem_alloc(FC_KEY_LEN);
    struct fc_list l;
    struct fc_collect c = { &l };
    fc_list_init(&l);
    rc = dek && key ? 0 : -ENOMEM;
    if (rc == 0 && dek_unwrap(k, ino, mi.wrapped_dek, mi.wrapped_dek_len, dek) < 0) {
        problem(st, parent, name, "its data key does not unwrap");
        goto out;
    }
    if (rc == 0)
        rc = fc_key_derive(dek, key);
    if (rc == 0)
        rc = meta_chunk_list(v->meta, ino, chunk_cb, &c);
    if (rc == 0 && mi.commitment_len) {
        /* never rewritten here: checked, and a bad one reported */
        if (fc_verify(key, ino, mi.size, &l, mi.commitment, mi.commitment_len, 0, NULL) < 0) {
            char what[600];
            snprintf(what, sizeof what, "its commitment does not verify (%s)", pfs_err_msg());
            problem(st, parent, name, what);
        } else {
            st->already++;
        }
        goto out;
    }
    if (rc == 0)
        rc = fc_seal(key, ino, mi.size, 1, &l, mi.commitment);
    if (rc == 0) {
        mi.commitment_len = FC_RECORD_LEN;
        rc = meta_inode_update(v->meta, &mi);
    }
    if (rc == 0)
        st->files_committed++;
out:
    fc_list_free(&l);
    secmem_free(dek, DEK_LEN);
    secmem_free(key, FC_KEY_LEN);
    return rc;
}

/* Bind every entry of dir and commit its files (one transaction); the
 * subdirectories found go to *subdirs. */
static int upgrade_dir(struct vault *v, const struct vault_folder *vf, uint64_t dir,
                       struct upgrade_stats *st, struct entries *subdirs, struct seen *seen)
{
    struct entries l = { .only_ino = dir == META_ROOT_INO ? vf->root_ino : 0 };
    char plain[NAME_MAX_ENC + 1];
    int rc = meta_dirent_list(v->meta, dir, 0, collect_cb, &l);
    if (rc < 0) {
        free(l.e);
        return rc;
    }
    rc = meta_begin(v->meta);
    if (rc < 0) {
        free(l.e);
        return rc;
    }
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        struct entry *e = &l.e[i];
        struct meta_inode child;
        const struct folder_keys *k = name_key_of(vf, dir, e, plain);
        if (!k) {
            problem(st, dir, "?", "its name does not decrypt with this account's keys");
            continue;
        }
        rc = meta_inode_get(v->meta, e->ino, &child);
        if (rc == -ENOENT) {
            problem(st, dir, plain, "it points at a missing inode");
            rc = 0;
            continue;
        }
        if (rc < 0)
            break;
        if ((child.mode & S_IFMT) != (e->mode & S_IFMT) || child.folder_id != vf->id) {
            problem(st, dir, plain, "the entry's type or folder differs from its inode's");
            continue;
        }
        if (e->bind_len == 0) {
            uint8_t b[DIRENT_BIND_LEN];
            rc = dirent_bind(k, dir, e->name, e->name_len, e->ino, e->mode, b);
            if (rc == 0)
                rc = meta_dirent_set_bind(v->meta, dir, e->name, e->name_len, b, sizeof b);
            if (rc == 0)
                st->entries_bound++;
        } else if (dirent_bind_check(k, dir, e->name, e->name_len, e->ino, e->mode, e->bind,
                                     e->bind_len) < 0) {
            problem(st, dir, plain, "its binding does not verify (tampering?); its subtree "
                    "is not visited");
            continue;
        } else {
            st->already++;
        }
        if (rc == 0 && S_ISREG(child.mode))
            rc = commit_file(v, vf, dir, plain, e->ino, st);
        if (rc == 0 && S_ISDIR(child.mode) && dir != META_ROOT_INO) {
            int r = seen_add(seen, e->ino);
            if (r == 1)
                problem(st, dir, plain, "a second entry for an already visited directory");
            rc = r == 0 ? push_dir(subdirs, e->ino) : (r < 0 ? r : 0);
        }
    }
    if (rc == 0)
        rc = meta_commit(v->meta);
    else
        meta_rollback(v->meta);
    free(l.e);
    return rc;
}

int upgrade_folders(struct vault *v, struct upgrade_stats *st)
{
    int rc = 0;
    memset(st, 0, sizeof *st);
    for (size_t f = 0; rc == 0 && f < v->nfolders; f++) {
        const struct vault_folder *vf = &v->folders[f];
        struct entries todo = { 0 };
        struct seen seen = { 0 };
        /* the folder's entry at the root, then its tree, breadth first */
        rc = upgrade_dir(v, vf, META_ROOT_INO, st, &todo, &seen);
        if (rc == 0)
            rc = seen_add(&seen, vf->root_ino) < 0 ? -ENOMEM : 0;
        if (rc == 0)
            rc = push_dir(&todo, vf->root_ino);
        for (size_t i = 0; rc == 0 && i < todo.n; i++)
            rc = upgrade_dir(v, vf, todo.e[i].ino, st, &todo, &seen);
        free(todo.e);
        free(seen.slot);
    }
    return rc;
}
