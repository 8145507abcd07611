#include "config.h"

/* The revoked account's saved keys, for the re-keying attack test
 * (tests/integration/test_rekey.py).  Not installed.
 *
 *   keyprobe save CONF ACCOUNT PASSFILE OUT
 *       as ACCOUNT (while still a member) write what it can keep: every
 *       folder key its envelopes open, and the data key of every file
 *       with chunks (unwrapped with those folder keys)
 *   keyprobe try CONF SAVED
 *       with only the metadata and the stores (no account): try the saved
 *       folder keys on every file's current wrapped data key, and the
 *       saved and so unwrapped data keys on every current chunk; prints
 *       "files=F chunks=C unwrapped=U opened=O"
 *   keyprobe try-meta SAVED ROWS
 *       no vault at all: ROWS holds rows as the database operator reads
 *       them with sqlite3, in hex, one a line ("name PARENT NAME",
 *       "symlink INO TARGET", "xattr INO NAME VALUE", and "hint NAME":
 *       an xattr name known in plaintext from before); try every saved
 *       folder key (under every key version label up to 16) on each;
 *       prints "names=.. names_opened=.. symlinks=.. symlinks_opened=..
 *       xattrs=.. xattr_names_opened=.. xattr_values_opened=.."
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "error.h"
#include "grants.h"
#include "secmem.h"
#include "vault.h"

#define MAXS 4096

struct saved {
    uint64_t folder[MAXS];
    uint32_t version[MAXS];
    uint8_t fk[MAXS][FOLDER_KEY_LEN];
    size_t nfk;
    uint64_t ino[MAXS];
    uint8_t dek[MAXS][DEK_LEN];
    size_t ndek;
};

static void hex_out(FILE *f, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", p[i]);
}

static int hex_in(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned b;
        if (sscanf(s + 2 * i, "%2x", &b) != 1)
            return -1;
        out[i] = (uint8_t)b;
    }
    return 0;
}

struct inos {
    uint64_t v[MAXS];
    size_t n;
};

static int ino_cb(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    struct inos *l = arg;
    (void)idx;
    (void)r;
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i] == ino)
            return 0;
    if (l->n < MAXS)
        l->v[l->n++] = ino;
    return 0;
}

struct env_out {
    struct vault *v;
    FILE *out;
};

static int env_cb(void *arg, const struct meta_envelope *e)
{
    struct env_out *o = arg;
    const uint8_t *rsa, *sig;
    size_t rsalen, siglen;
    uint8_t fk[FOLDER_KEY_LEN];

    if (grant_envelope_unpack(e->wrapped, e->wrapped_len, &rsa, &rsalen, &sig, &siglen) < 0)
        return 0;
    if (envelope_open(o->v->priv, o->v->conf.vault_id, e->folder_id, e->key_version, rsa,
                      rsalen, fk) < 0)
        return 0;
    fprintf(o->out, "fk %" PRIu64 " %u ", e->folder_id, e->key_version);
    hex_out(o->out, fk, sizeof fk);
    fputc('\n', o->out);
    return 0;
}

static int do_save(const char *conf, const char *account, const char *passfile, const char *out)
{
    struct vault *v = NULL;
    static struct inos l;
    char pw[512];
    FILE *pf = fopen(passfile, "r"), *o;
    if (!pf || !fgets(pw, sizeof pw, pf))
        return 1;
    fclose(pf);
    pw[strcspn(pw, "\n")] = 0;
    if (vault_open(conf, &v) < 0 || vault_unlock(v, account, pw) < 0) {
        fprintf(stderr, "keyprobe: %s\n", pfs_err_msg());
        return 1;
    }
    o = fopen(out, "w");
    if (!o)
        return 1;
    struct env_out eo = { v, o };
    meta_envelope_list_account(v->meta, v->account.id, env_cb, &eo);
    meta_chunk_list(v->meta, 0, ino_cb, &l);
    for (size_t i = 0; i < l.n; i++) {
        struct meta_inode mi;
        uint8_t dek[DEK_LEN];
        const struct folder_keys *k;
        if (meta_inode_get(v->meta, l.v[i], &mi) < 0)
            continue;
        k = vault_folder_keys(v, mi.folder_id, mi.key_version);
        if (!k || dek_unwrap(k, mi.ino, mi.wrapped_dek, mi.wrapped_dek_len, dek) < 0)
            continue;
        fprintf(o, "dek %" PRIu64 " ", mi.ino);
        hex_out(o, dek, sizeof dek);
        fputc('\n', o);
    }
    fclose(o);
    vault_close(v);
    return 0;
}

struct chunk_try {
    struct vault *v;
    const uint8_t (*deks)[DEK_LEN];
    size_t ndeks;
    unsigned chunks, opened;
};

static int try_chunk(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    struct chunk_try *t = arg;
    static uint8_t plain[16u << 20];
    t->chunks++;
    for (size_t i = 0; i < t->ndeks; i++)
        if (object_get_chunk(t->v->ol, t->deks[i], ino, idx, r, plain, NULL) == 0) {
            t->opened++;
            break;
        }
    return 0;
}

static int do_try(const char *conf, const char *savedp)
{
    static struct saved s;
    static struct inos l;
    static uint8_t deks[2 * MAXS][DEK_LEN];
    struct vault *v = NULL;
    char line[256];
    unsigned files = 0, unwrapped = 0;
    FILE *f = fopen(savedp, "r");
    if (!f)
        return 1;
    while (fgets(line, sizeof line, f)) {
        char hex[130];
        if (s.nfk < MAXS && sscanf(line, "fk %" SCNu64 " %u %128s", &s.folder[s.nfk],
                                   &s.version[s.nfk], hex) == 3 &&
            hex_in(hex, s.fk[s.nfk], FOLDER_KEY_LEN) == 0)
            s.nfk++;
        else if (s.ndek < MAXS && sscanf(line, "dek %" SCNu64 " %128s", &s.ino[s.ndek], hex) == 2 &&
                 hex_in(hex, s.dek[s.ndek], DEK_LEN) == 0)
            s.ndek++;
    }
    fclose(f);
    if (vault_open(conf, &v) < 0) {
        fprintf(stderr, "keyprobe: %s\n", pfs_err_msg());
        return 1;
    }
    struct chunk_try t = { v, (const uint8_t (*)[DEK_LEN])deks, 0, 0, 0 };
    meta_chunk_list(v->meta, 0, ino_cb, &l);
    for (size_t i = 0; i < l.n; i++) {
        struct meta_inode mi;
        size_t n = 0;
        if (meta_inode_get(v->meta, l.v[i], &mi) < 0)
            continue;
        files++;
        for (size_t j = 0; j < s.ndek; j++)
            if (s.ino[j] == mi.ino)
                memcpy(deks[n++], s.dek[j], DEK_LEN);
        int got = 0;
        for (size_t j = 0; j < s.nfk; j++) {
            if (s.folder[j] != mi.folder_id)
                continue;
            /* the label is the key version: try the saved one and the current one */
            uint32_t labels[2] = { s.version[j], mi.key_version };
            for (int w = 0; w < 2; w++) {
                struct folder_keys *k = folder_keys_derive(s.fk[j], labels[w]);
                if (k && dek_unwrap(k, mi.ino, mi.wrapped_dek, mi.wrapped_dek_len,
                                    deks[n]) == 0) {
                    n++;
                    got = 1;
                }
                folder_keys_free(k);
            }
        }
        unwrapped += got;
        t.ndeks = n;
        meta_chunk_list(v->meta, mi.ino, try_chunk, &t);
    }
    printf("files=%u chunks=%u unwrapped=%u opened=%u\n", files, t.chunks, unwrapped, t.opened);
    vault_close(v);
    return 0;
}

static int load_saved(const char *savedp, struct saved *s)
{
    char line[256];
    FILE *f = fopen(savedp, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        char hex[130];
        if (s->nfk < MAXS && sscanf(line, "fk %" SCNu64 " %u %128s", &s->folder[s->nfk],
                                    &s->version[s->nfk], hex) == 3 &&
            hex_in(hex, s->fk[s->nfk], FOLDER_KEY_LEN) == 0)
            s->nfk++;
    }
    fclose(f);
    return 0;
}

/* hex field i (0-based, after the kind) of line into a malloc'd buffer */
static uint8_t *hex_field(const char *line, int i, size_t *len)
{
    const char *p = line;
    for (int k = 0; k <= i + 1 && p; k++) {
        p = strchr(p, ' ');
        if (p)
            p++;
    }
    if (!p)
        return NULL;
    size_t n = strcspn(p, " \n");
    uint8_t *out = malloc(n / 2 + 1);
    if (out && hex_in(p, out, n / 2) < 0) {
        free(out);
        return NULL;
    }
    *len = n / 2;
    return out;
}

#define LABELS_MAX 16

static int do_try_meta(const char *savedp, const char *rowsp)
{
    static struct saved s;
    static char hints[64][NAME_MAX_ENC + 1];
    size_t nhints = 0;
    unsigned names = 0, names_opened = 0, links = 0, links_opened = 0, xattrs = 0,
             xnames_opened = 0, xvalues_opened = 0;
    char line[8192];
    FILE *f;

    if (load_saved(savedp, &s) < 0 || !(f = fopen(rowsp, "r")))
        return 1;
    while (fgets(line, sizeof line, f)) {
        size_t n;
        uint8_t *h = strncmp(line, "hint ", 5) ? NULL : hex_field(line, -1, &n);
        if (h && nhints < 64 && n <= NAME_MAX_PLAIN) {
            memcpy(hints[nhints], h, n);
            hints[nhints++][n] = 0;
        }
        free(h);
    }
    rewind(f);
    while (fgets(line, sizeof line, f)) {
        char kind[16];
        uint64_t owner;
        size_t alen = 0, blen = 0;
        uint8_t *a, *b = NULL;
        int got_a = 0, got_b = 0;

        if (sscanf(line, "%15s %" SCNu64, kind, &owner) != 2 || !strcmp(kind, "hint"))
            continue;
        a = hex_field(line, 0, &alen);
        if (!strcmp(kind, "xattr"))
            b = hex_field(line, 1, &blen);
        for (size_t j = 0; a && j < s.nfk; j++)
            for (uint32_t label = 1; label <= LABELS_MAX; label++) {
                struct folder_keys *k = folder_keys_derive(s.fk[j], label);
                char plain[NAME_MAX_ENC + 1];
                size_t plen, outlen, adlen;
                uint8_t ad[FOLDER_META_AD_MAX], *out = NULL;
                if (!k)
                    continue;
                if (strcmp(kind, "symlink") && alen <= NAME_MAX_ENC &&
                    name_decrypt(k, owner, a, alen, plain, &plen) == 0) {
                    got_a = 1;
                    if (nhints < 64)
                        snprintf(hints[nhints++], sizeof hints[0], "%s", plain);
                }
                if (!strcmp(kind, "symlink") &&
                    folder_meta_ad("symlink", owner, NULL, ad, &adlen) == 0 &&
                    folder_meta_open(k, ad, adlen, a, alen, &out, &outlen) == 0)
                    got_a = 1;
                free(out);
                out = NULL;
                /* a value: with every name known, and as the trash's record */
                for (size_t x = 0; b && x <= nhints; x++)
                    if (folder_meta_ad(x < nhints ? "xattr" : "trashinfo", owner,
                                       x < nhints ? hints[x] : NULL, ad, &adlen) == 0 &&
                        folder_meta_open(k, ad, adlen, b, blen, &out, &outlen) == 0) {
                        got_b = 1;
                        free(out);
                        out = NULL;
                    }
                folder_keys_free(k);
            }
        if (!strcmp(kind, "name")) {
            names++;
            names_opened += got_a;
        } else if (!strcmp(kind, "symlink")) {
            links++;
            links_opened += got_a;
        } else if (!strcmp(kind, "xattr")) {
            xattrs++;
            xnames_opened += got_a;
            xvalues_opened += got_b;
        }
        free(a);
        free(b);
    }
    fclose(f);
    printf("names=%u names_opened=%u symlinks=%u symlinks_opened=%u xattrs=%u "
           "xattr_names_opened=%u xattr_values_opened=%u\n", names, names_opened, links,
           links_opened, xattrs, xnames_opened, xvalues_opened);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "save"))
        return do_save(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 4 && !strcmp(argv[1], "try"))
        return do_try(argv[2], argv[3]);
    if (argc == 4 && !strcmp(argv[1], "try-meta"))
        return do_try_meta(argv[2], argv[3]);
    fprintf(stderr, "usage: keyprobe save CONF ACCOUNT PASSFILE OUT | try CONF SAVED | "
            "try-meta SAVED ROWS\n");
    return 2;
}
