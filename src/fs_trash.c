#include "config.h"

/* The freedesktop.org trash at the top of a mount (fs_trash.h). */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "fs_trash.h"
#include "vec.h"

#define INFO_SUFFIX ".trashinfo"
#define INFO_XATTR "pactfs.trashinfo"   /* never a "user." name: not listed */
#define PEND_MAX (64 * 1024)            /* a .trashinfo is a few lines */
#define PEND_COUNT_MAX 256              /* memory only: bounded */

/* A .trashinfo a client is writing into info/ (memory only). */
struct pend {
    uint64_t ino;
    char *name;
    uint8_t *data;
    size_t len;
    int64_t ctime_ns;
    struct pend *next;
};

struct fs_trash {
    pthread_mutex_t lock;
    struct pend *pend;
    unsigned npend;
    uint64_t next_id;
    char topname[40];   /* ".Trash-UID" */
    char hidden[48];    /* the account's hidden directory in each folder */
};

int fs_trash_init(struct fs *fs)
{
    struct fs_trash *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    pthread_mutex_init(&t->lock, NULL);
    fs_trash_topname(fs, t->topname, sizeof t->topname);
    snprintf(t->hidden, sizeof t->hidden, FS_TRASH_HIDDEN_PREFIX "%" PRIu64, fs->v->account.id);
    fs->trash = t;
    return 0;
}

static void pend_free(struct pend *p)
{
    if (p->data)
        memset(p->data, 0, p->len);
    free(p->data);
    free(p->name);
    free(p);
}

void fs_trash_fini(struct fs *fs)
{
    struct fs_trash *t = fs->trash;
    if (!t)
        return;
    while (t->pend) {
        struct pend *p = t->pend;
        t->pend = p->next;
        pend_free(p);
    }
    pthread_mutex_destroy(&t->lock);
    free(t);
    fs->trash = NULL;
}

int fs_trash_is_topname(struct fs *fs, const char *name)
{
    return fs->trash && !fs->opt.read_only && strcmp(name, fs->trash->topname) == 0;
}

static const char *vname(uint64_t ino)
{
    switch (ino) {
    case FS_TRASH_FILES_INO: return "files";
    case FS_TRASH_INFO_INO: return "info";
    case FS_TRASH_EXPUNGED_INO: return "expunged";
    default: return NULL;
    }
}

/* ------------------------------------------------------------------ */
/* The hidden directories                                              */

/* A directory of the trash, inside folder vf (meta_lock held, in a
 * transaction when create is set). */
static int dir_get_locked(struct fs *fs, const struct fs_caller *who, struct vault_folder *vf,
                          uint64_t parent, const char *name, int create, uint64_t *ino)
{
    uint32_t type = 0;
    int r = fs_dir_lookup_locked(fs, who, vf, parent, name, ino, NULL, &type);
    if (r == 0)
        return S_ISDIR(type) ? 0 : -EIO;
    if (r != -ENOENT || !create)
        return r;
    const struct folder_keys *k = fs_cur_keys(fs, vf);
    struct fs_name en;
    if (!k)
        return -EACCES;
    if (fs_name_enc(k, parent, name, &en) < 0)
        return -EIO;
    struct meta *m = fs->v->meta;
    struct meta_inode mi;
    memset(&mi, 0, sizeof mi);
    mi.folder_id = vf->id;
    mi.mode = S_IFDIR | 0700;
    mi.uid = fs->uid;
    mi.gid = fs->gid;
    mi.nlink = 2;
    mi.atime_ns = mi.mtime_ns = mi.ctime_ns = fs_now_ns();
    mi.key_version = vf->cur_version;
    r = meta_inode_create(m, &mi);
    if (r == 0)
        r = fs_dirent_add_bound(fs, k, parent, &en, mi.ino, mi.mode);
    if (r == 0 && parent != vf->root_ino) {
        /* a subdirectory of the hidden one: its link count; the folder's
         * own top does not count a directory it never lists */
        struct meta_inode p;
        r = meta_inode_get(m, parent, &p);
        if (r == 0) {
            p.nlink++;
            r = meta_inode_update(m, &p);
        }
    }
    if (r == 0)
        *ino = mi.ino;
    return r;
}

static int sub_get_locked(struct fs *fs, const struct fs_caller *who, struct vault_folder *vf,
                          uint64_t vparent, int create, uint64_t *ino)
{
    uint64_t hidden;
    int r = dir_get_locked(fs, who, vf, vf->root_ino, fs->trash->hidden, create, &hidden);
    if (r == 0)
        r = dir_get_locked(fs, who, vf, hidden, vname(vparent), create, ino);
    return r;
}

int fs_trash_subdir(struct fs *fs, const struct fs_caller *who, struct vault_folder *vf,
                    uint64_t vparent, uint64_t *real)
{
    struct meta *m = fs->v->meta;
    pthread_mutex_lock(&fs->meta_lock);
    int r = sub_get_locked(fs, who, vf, vparent, 0, real);
    if (r == -ENOENT) {
        r = meta_begin(m);
        if (r == 0)
            r = sub_get_locked(fs, who, vf, vparent, 1, real);
        if (r == 0)
            r = meta_commit(m);
        else
            meta_rollback(m);
    }
    pthread_mutex_unlock(&fs->meta_lock);
    return r;
}

static int resolve_locked(struct fs *fs, const struct fs_caller *who, uint64_t vparent,
                          const char *name, uint64_t *real_parent, struct vault_folder **vf,
                          uint64_t *ino, uint32_t *type)
{
    for (size_t i = 0; i < fs->v->nfolders; i++) {
        struct vault_folder *f = &fs->v->folders[i];
        uint64_t sub, child;
        if (!(f->rights & RIGHT_READ))
            continue;
        int r = sub_get_locked(fs, who, f, vparent, 0, &sub);
        if (r == 0)
            r = fs_dir_lookup_locked(fs, who, f, sub, name, &child, NULL, type);
        if (r == 0) {
            *real_parent = sub;
            *vf = f;
            if (ino)
                *ino = child;
            return 0;
        }
        if (r != -ENOENT)
            return r;
    }
    return -ENOENT;
}

int fs_trash_resolve(struct fs *fs, const struct fs_caller *who, uint64_t vparent,
                     const char *name, uint64_t *real_parent, struct vault_folder **vf)
{
    if (!fs_trash_is_merged(vparent))
        return -EPERM;
    int r = fs_name_check(name);
    if (r < 0)
        return r;
    uint32_t type;
    pthread_mutex_lock(&fs->meta_lock);
    r = resolve_locked(fs, who, vparent, name, real_parent, vf, NULL, &type);
    pthread_mutex_unlock(&fs->meta_lock);
    return r;
}

/* ------------------------------------------------------------------ */
/* The sealed .trashinfo of a trashed inode                            */

int fs_trash_info_set_locked(struct fs *fs, const struct vault_folder *vf, uint64_t ino,
                             const char *content, size_t len)
{
    const struct folder_keys *k = fs_cur_keys(fs, vf);
    struct fs_name en;
    if (!k)
        return -EACCES;
    if (fs_name_enc(k, ino, INFO_XATTR, &en) < 0)
        return -EIO;
    uint8_t *sealed = NULL;
    size_t slen = 0;
    int r = fs_sealed_seal(fs, vf, "trashinfo", ino, NULL, content, len, &sealed, &slen);
    if (r == 0) {
        fs_trash_info_remove_locked(fs, vf, ino);   /* one under an older key */
        r = meta_xattr_set(fs->v->meta, ino, en.b, en.len, sealed, slen, 0);
    }
    free(sealed);
    return r;
}

int fs_trash_info_remove_locked(struct fs *fs, const struct vault_folder *vf, uint64_t ino)
{
    const struct folder_keys *ks[FS_KEYS_MAX];
    size_t nk = fs_keys_to_try(fs, vf, ks, FS_KEYS_MAX);
    for (size_t i = 0; i < nk; i++) {
        struct fs_name en;
        if (fs_name_enc(ks[i], ino, INFO_XATTR, &en) < 0)
            return -EIO;
        int r = meta_xattr_remove(fs->v->meta, ino, en.b, en.len);
        if (r != -ENOENT && r != -ENODATA)
            return r;
    }
    return 0;
}

/* The .trashinfo of inode ino (meta_lock held): malloc'd, or -ENOENT. */
static int info_get_locked(struct fs *fs, const struct vault_folder *vf, uint64_t ino,
                           uint8_t **out, size_t *len)
{
    const struct folder_keys *ks[FS_KEYS_MAX];
    size_t nk = fs_keys_to_try(fs, vf, ks, FS_KEYS_MAX);
    for (size_t i = 0; i < nk; i++) {
        struct fs_name en;
        uint8_t *sealed = NULL;
        size_t slen = 0;
        if (fs_name_enc(ks[i], ino, INFO_XATTR, &en) < 0)
            return -EIO;
        int r = meta_xattr_get(fs->v->meta, ino, en.b, en.len, &sealed, &slen);
        if (r == -ENOENT || r == -ENODATA)
            continue;
        if (r == 0)
            r = fs_sealed_open(fs, vf, "trashinfo", ino, NULL, sealed, slen, out, len);
        free(sealed);
        return r;
    }
    return -ENOENT;
}

/* Contents and row of info/NAME.trashinfo for the trashed inode ino. */
static int info_of(struct fs *fs, uint64_t ino, uint8_t **out, size_t *len,
                   struct meta_inode *mi)
{
    pthread_mutex_lock(&fs->meta_lock);
    int r = meta_inode_get(fs->v->meta, ino, mi);
    struct vault_folder *vf = r == 0 ? vault_folder_by_id(fs->v, mi->folder_id) : NULL;
    if (r == 0 && (!vf || !(vf->rights & RIGHT_READ) || mi->nlink == 0))
        r = -ENOENT;
    if (r == 0)
        r = info_get_locked(fs, vf, ino, out, len);
    pthread_mutex_unlock(&fs->meta_lock);
    return r == -ENOENT ? r : (r < 0 ? -EIO : 0);
}

/* Path= as GIO writes it: relative to the top, URI-escaped but for '/'. */
static char *escape_path(const char *p)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(p);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out)
        return NULL;
    for (const unsigned char *s = (const unsigned char *)p; *s; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
            strchr("-._~/", *s)) {
            *o++ = (char)*s;
        } else {
            *o++ = '%';
            *o++ = hex[*s >> 4];
            *o++ = hex[*s & 15];
        }
    }
    *o = '\0';
    return out;
}

static struct pend *pend_find(struct fs_trash *t, const char *name, uint64_t ino)
{
    for (struct pend *p = t->pend; p; p = p->next)
        if ((name && strcmp(p->name, name) == 0) || (!name && p->ino == ino))
            return p;
    return NULL;
}

/* DeletionDate=YYYY-MM-DDThh:mm:ss from a client's pending .trashinfo. */
static int pend_date(struct fs *fs, const char *info_name, char *date, size_t cap)
{
    int found = 0;
    pthread_mutex_lock(&fs->trash->lock);
    struct pend *p = pend_find(fs->trash, info_name, 0);
    if (p && p->data) {
        const char *key = "\nDeletionDate=";
        size_t klen = strlen(key);
        for (size_t i = 0; i + klen + 19 <= p->len && !found; i++) {
            if (memcmp(p->data + i, key, klen) != 0)
                continue;
            const uint8_t *d = p->data + i + klen;
            found = 1;
            for (size_t j = 0; j < 19 && found; j++)
                found = (d[j] >= '0' && d[j] <= '9') || d[j] == '-' || d[j] == 'T' || d[j] == ':';
            if (found && cap > 19) {
                memcpy(date, d, 19);
                date[19] = '\0';
            }
        }
    }
    pthread_mutex_unlock(&fs->trash->lock);
    return found && cap > 19;
}

int fs_trash_info_make(struct fs *fs, const char *orig_path, const char *name, char **content,
                       size_t *len)
{
    char date[32];
    char info_name[NAME_MAX_PLAIN + sizeof INFO_SUFFIX + 1];
    snprintf(info_name, sizeof info_name, "%s" INFO_SUFFIX, name);
    if (!pend_date(fs, info_name, date, sizeof date)) {
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    }
    while (*orig_path == '/')
        orig_path++;
    char *esc = escape_path(orig_path);
    if (!esc)
        return -ENOMEM;
    size_t cap = strlen(esc) + 64;
    *content = malloc(cap);
    if (!*content) {
        free(esc);
        return -ENOMEM;
    }
    int n = snprintf(*content, cap, "[Trash Info]\nPath=%s\nDeletionDate=%s\n", esc, date);
    free(esc);
    *len = (size_t)n;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Attributes and lookup                                               */

static void vstat(struct fs *fs, uint64_t ino, uint32_t mode, uint64_t size, int64_t ns,
                  struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_mode = mode;
    st->st_nlink = S_ISDIR(mode) ? 2 : 1;
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_size = (off_t)size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((size + 511) / 512);
    fs_ns_to_ts(ns, &st->st_atim);
    st->st_mtim = st->st_ctim = st->st_atim;
}

int fs_trash_getattr(struct fs *fs, uint64_t ino, struct stat *st)
{
    if (!fs->trash)
        return -ENOENT;
    int64_t mount_ns = __atomic_load_n(&fs->mount_ns, __ATOMIC_RELAXED);
    if (ino == FS_TRASH_INO || vname(ino)) {
        vstat(fs, ino, S_IFDIR | 0700, 4096, mount_ns, st);
        return 0;
    }
    if (ino & FS_TRASH_INFO_BIT) {
        uint8_t *c = NULL;
        size_t len = 0;
        struct meta_inode mi;
        int r = info_of(fs, ino & ~FS_TRASH_INFO_BIT, &c, &len, &mi);
        free(c);
        if (r == 0)
            vstat(fs, ino, S_IFREG | 0600, len, mi.ctime_ns, st);
        return r;
    }
    int r = -ENOENT;
    pthread_mutex_lock(&fs->trash->lock);
    struct pend *p = pend_find(fs->trash, NULL, ino);
    if (p) {
        vstat(fs, ino, S_IFREG | 0600, p->len, p->ctime_ns, st);
        r = 0;
    }
    pthread_mutex_unlock(&fs->trash->lock);
    return r;
}

static int info_entry_name(const char *name, char *base, size_t cap)
{
    size_t n = strlen(name), s = sizeof INFO_SUFFIX - 1;
    if (n <= s || strcmp(name + n - s, INFO_SUFFIX) != 0 || n - s >= cap)
        return -ENOENT;
    memcpy(base, name, n - s);
    base[n - s] = '\0';
    return 0;
}

int fs_trash_lookup(struct fs *fs, const struct fs_caller *who, uint64_t parent, const char *name,
                    struct meta_inode *mi, struct stat *st, int *real)
{
    *real = 0;
    if (parent == META_ROOT_INO)
        return fs_trash_is_topname(fs, name) ? fs_trash_getattr(fs, FS_TRASH_INO, st) : -ENOENT;
    if (parent == FS_TRASH_INO) {
        for (uint64_t i = FS_TRASH_FILES_INO; i <= FS_TRASH_EXPUNGED_INO; i++)
            if (strcmp(name, vname(i)) == 0)
                return fs_trash_getattr(fs, i, st);
        return -ENOENT;
    }
    int r = fs_name_check(name);
    if (r < 0)
        return r;
    if (parent == FS_TRASH_INFO_INO) {
        pthread_mutex_lock(&fs->trash->lock);
        struct pend *p = pend_find(fs->trash, name, 0);
        uint64_t pino = p ? p->ino : 0;
        pthread_mutex_unlock(&fs->trash->lock);
        if (pino)
            return fs_trash_getattr(fs, pino, st);
        char base[NAME_MAX_PLAIN + 1];
        uint64_t rp, ino;
        uint32_t type;
        struct vault_folder *vf;
        r = info_entry_name(name, base, sizeof base);
        if (r == 0) {
            pthread_mutex_lock(&fs->meta_lock);
            r = resolve_locked(fs, who, FS_TRASH_FILES_INO, base, &rp, &vf, &ino, &type);
            pthread_mutex_unlock(&fs->meta_lock);
        }
        return r == 0 ? fs_trash_getattr(fs, FS_TRASH_INFO_BIT | ino, st) : r;
    }
    if (!fs_trash_is_merged(parent))
        return -ENOENT;
    uint64_t rp, ino = 0;
    uint32_t type = 0;
    struct vault_folder *vf = NULL;
    pthread_mutex_lock(&fs->meta_lock);
    r = resolve_locked(fs, who, parent, name, &rp, &vf, &ino, &type);
    if (r == 0)
        r = meta_inode_get(fs->v->meta, ino, mi);
    pthread_mutex_unlock(&fs->meta_lock);
    if (r == 0 && ((mi->mode & S_IFMT) != type || mi->folder_id != vf->id))
        r = fs_tamper(fs, who, rp, name,
                      "check \"entry binding\" failed: the inode's "
                      "type or folder is not the one its entry was written for");
    if (r == 0)
        *real = 1;
    return r;
}

/* ------------------------------------------------------------------ */
/* Listings                                                            */

struct ent {
    char *name;
    uint64_t ino;
    uint32_t mode;
};

struct ents {
    struct ent *v;
    size_t n, cap;
    struct fs *fs;
    struct vault_folder *vf;
    uint64_t parent;
    int err;
};

static int ents_add(struct ents *e, const char *name, const char *suffix, uint64_t ino,
                    uint32_t mode)
{
    if (vec_reserve(&e->v, &e->cap, e->n + 1, sizeof *e->v, 16) < 0)
        return -ENOMEM;
    size_t len = strlen(name) + strlen(suffix) + 1;
    char *s = malloc(len);
    if (!s)
        return -ENOMEM;
    snprintf(s, len, "%s%s", name, suffix);
    e->v[e->n++] = (struct ent){ .name = s, .ino = ino, .mode = mode };
    return 0;
}

static void ents_free(struct ents *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i].name);
    free(e->v);
}

static int collect_cb(void *arg, const struct meta_dirent *d)
{
    struct ents *e = arg;
    char name[NAME_MAX_ENC + 16];
    size_t nlen = 0;
    if (d->name_len > NAME_MAX_ENC ||
        fs_name_dec_any(e->fs, e->vf, e->parent, d->name, d->name_len, name, &nlen) < 0)
        return 0;
    e->err = ents_add(e, name, "", d->ino, d->mode);
    return e->err < 0;
}

/* Every entry of files/ or expunged/ over the folders (meta_lock held). */
static int collect_locked(struct fs *fs, const struct fs_caller *who, uint64_t vparent,
                          struct ents *e)
{
    for (size_t i = 0; i < fs->v->nfolders; i++) {
        struct vault_folder *f = &fs->v->folders[i];
        uint64_t sub;
        if (!(f->rights & RIGHT_READ))
            continue;
        int r = sub_get_locked(fs, who, f, vparent, 0, &sub);
        if (r == -ENOENT)
            continue;
        if (r < 0)
            return r;
        e->vf = f;
        e->parent = sub;
        r = meta_dirent_list(fs->v->meta, sub, 0, collect_cb, e);
        if (r == 0)
            r = e->err;
        if (r < 0)
            return r;
    }
    return 0;
}

int fs_trash_readdir(struct fs *fs, const struct fs_caller *who, uint64_t ino, uint64_t off,
                     fs_dirent_fn fn, void *arg)
{
    struct ents e = { .fs = fs };
    int r = 0;
    if (ino == FS_TRASH_INO) {
        for (uint64_t i = FS_TRASH_FILES_INO; i <= FS_TRASH_EXPUNGED_INO && r == 0; i++)
            r = ents_add(&e, vname(i), "", i, S_IFDIR);
    } else if (fs_trash_is_merged(ino) || ino == FS_TRASH_INFO_INO) {
        pthread_mutex_lock(&fs->meta_lock);
        r = collect_locked(fs, who, ino == FS_TRASH_INFO_INO ? FS_TRASH_FILES_INO : ino, &e);
        pthread_mutex_unlock(&fs->meta_lock);
        if (r == 0 && ino == FS_TRASH_INFO_INO) {
            for (size_t i = 0; i < e.n; i++) {   /* entries become NAME.trashinfo */
                char *s = malloc(strlen(e.v[i].name) + sizeof INFO_SUFFIX);
                if (!s) {
                    r = -ENOMEM;
                    break;
                }
                sprintf(s, "%s" INFO_SUFFIX, e.v[i].name);
                free(e.v[i].name);
                e.v[i] = (struct ent){ .name = s, .ino = FS_TRASH_INFO_BIT | e.v[i].ino,
                                       .mode = S_IFREG };
            }
            pthread_mutex_lock(&fs->trash->lock);
            for (struct pend *p = fs->trash->pend; p && r == 0; p = p->next)
                r = ents_add(&e, p->name, "", p->ino, S_IFREG);
            pthread_mutex_unlock(&fs->trash->lock);
        }
    } else {
        r = -ENOTDIR;
    }
    if (r == 0 && off < 1 && fn(arg, ".", ino, S_IFDIR, 1))
        goto out;
    if (r == 0 && off < 2 && fn(arg, "..", ino == FS_TRASH_INO ? META_ROOT_INO : FS_TRASH_INO,
                                S_IFDIR, 2))
        goto out;
    for (size_t i = 0; r == 0 && i < e.n; i++)
        if (i + 3 > off && fn(arg, e.v[i].name, e.v[i].ino, e.v[i].mode, i + 3))
            break;
out:
    ents_free(&e);
    return r < 0 ? (r == -ENOMEM ? r : -EIO) : 0;
}

/* ------------------------------------------------------------------ */
/* Pending .trashinfo files                                            */

int fs_trash_pend_create(struct fs *fs, const struct fs_caller *who, const char *name,
                         struct stat *st)
{
    int r = fs_name_check(name);
    if (r < 0)
        return r;
    char base[NAME_MAX_PLAIN + 1];
    if (info_entry_name(name, base, sizeof base) == 0) {
        uint64_t rp;
        struct vault_folder *vf;
        r = fs_trash_resolve(fs, who, FS_TRASH_FILES_INO, base, &rp, &vf);
        if (r == 0)
            return -EEXIST;
        if (r != -ENOENT)
            return r;
        r = 0;
    }
    struct pend *p = calloc(1, sizeof *p);
    if (!p || !(p->name = strdup(name))) {
        free(p);
        return -ENOMEM;
    }
    p->ctime_ns = fs_now_ns();
    struct fs_trash *t = fs->trash;
    pthread_mutex_lock(&t->lock);
    if (pend_find(t, name, 0)) {
        r = -EEXIST;
    } else if (t->npend >= PEND_COUNT_MAX) {
        r = -ENOSPC;   /* a client that writes .trashinfo files and never trashes */
    } else {
        t->npend++;
        p->ino = FS_TRASH_PEND_BIT | ++t->next_id;
        p->next = t->pend;
        t->pend = p;
        vstat(fs, p->ino, S_IFREG | 0600, 0, p->ctime_ns, st);
    }
    pthread_mutex_unlock(&t->lock);
    if (r < 0)
        pend_free(p);
    return r;
}

/* Unlink the pending entry named name (trash lock held); -ENOENT. */
static int pend_remove_locked(struct fs_trash *t, const char *name)
{
    for (struct pend **pp = &t->pend; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->name, name) == 0) {
            struct pend *p = *pp;
            *pp = p->next;
            pend_free(p);
            t->npend--;
            return 0;
        }
    }
    return -ENOENT;
}

int fs_trash_pend_unlink(struct fs *fs, const char *name)
{
    pthread_mutex_lock(&fs->trash->lock);
    int r = pend_remove_locked(fs->trash, name);
    pthread_mutex_unlock(&fs->trash->lock);
    return r;
}

void fs_trash_pend_drop(struct fs *fs, const char *entry_name)
{
    char info_name[NAME_MAX_PLAIN + sizeof INFO_SUFFIX + 1];
    snprintf(info_name, sizeof info_name, "%s" INFO_SUFFIX, entry_name);
    fs_trash_pend_unlink(fs, info_name);
}

int fs_trash_pend_rename(struct fs *fs, const char *from, const char *to, unsigned noreplace)
{
    int r = fs_name_check(to);
    if (r < 0)
        return r;
    char *copy = strdup(to);
    if (!copy)
        return -ENOMEM;
    struct fs_trash *t = fs->trash;
    pthread_mutex_lock(&t->lock);
    struct pend *p = pend_find(t, from, 0);
    if (!p)
        r = -ENOENT;
    else if (strcmp(from, to) == 0)
        r = 0;
    else if (pend_find(t, to, 0) && noreplace)
        r = -EEXIST;
    else {
        pend_remove_locked(t, to);
        free(p->name);
        p->name = copy;
        copy = NULL;
    }
    pthread_mutex_unlock(&t->lock);
    free(copy);
    return r;
}

/* ------------------------------------------------------------------ */
/* Contents                                                            */

int fs_trash_file_read(struct fs *fs, uint64_t ino, uint64_t off, size_t size, uint8_t *out,
                       size_t *got)
{
    *got = 0;
    uint8_t *c = NULL;
    size_t len = 0;
    int r = 0;
    if (ino & FS_TRASH_INFO_BIT) {
        struct meta_inode mi;
        r = info_of(fs, ino & ~FS_TRASH_INFO_BIT, &c, &len, &mi);
    } else {
        pthread_mutex_lock(&fs->trash->lock);
        struct pend *p = pend_find(fs->trash, NULL, ino);
        if (!p)
            r = -ENOENT;
        else if (p->len && !(c = malloc(p->len)))
            r = -ENOMEM;
        else if (p->len) {
            memcpy(c, p->data, p->len);
            len = p->len;
        }
        pthread_mutex_unlock(&fs->trash->lock);
    }
    if (r == 0 && off < len) {
        *got = len - off < size ? len - off : size;
        memcpy(out, c + off, *got);
    }
    free(c);
    return r;
}

static int pend_resize(struct pend *p, size_t len)
{
    if (len > PEND_MAX)
        return -EFBIG;
    if (len > p->len) {
        uint8_t *d = realloc(p->data, len);
        if (!d)
            return -ENOMEM;
        memset(d + p->len, 0, len - p->len);
        p->data = d;
    }
    p->len = len;
    return 0;
}

int fs_trash_file_write(struct fs *fs, uint64_t ino, uint64_t off, const void *buf, size_t size)
{
    if (!(ino & FS_TRASH_PEND_BIT) || (ino & FS_TRASH_INFO_BIT))
        return -EPERM;
    if (off > PEND_MAX || size > PEND_MAX - off)
        return -EFBIG;
    pthread_mutex_lock(&fs->trash->lock);
    struct pend *p = pend_find(fs->trash, NULL, ino);
    int r = p ? 0 : -ENOENT;
    if (r == 0 && off + size > p->len)
        r = pend_resize(p, off + size);
    if (r == 0)
        memcpy(p->data + off, buf, size);
    pthread_mutex_unlock(&fs->trash->lock);
    return r;
}

int fs_trash_file_truncate(struct fs *fs, uint64_t ino, uint64_t size)
{
    if (!(ino & FS_TRASH_PEND_BIT) || (ino & FS_TRASH_INFO_BIT))
        return -EPERM;
    pthread_mutex_lock(&fs->trash->lock);
    struct pend *p = pend_find(fs->trash, NULL, ino);
    int r = p ? pend_resize(p, size) : -ENOENT;
    pthread_mutex_unlock(&fs->trash->lock);
    return r;
}
