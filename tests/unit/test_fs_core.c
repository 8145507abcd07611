/* The filesystem core without a mount (fs_core.h): a vault made by
 * vault_init in a temporary directory, unlocked, and the core called as
 * the FUSE front end calls it.  Namespace: lookup, getattr, readdir,
 * rights, refusals and tampering caught by the entry binding; the trash's
 * virtual directories, pending .trashinfo files and hidden directories. */
#include "config.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto.h"
#include "error.h"
#include "fs_core.h"
#include "fs_namespace.h"
#include "fs_trash.h"
#include "fs_test_vault.h"
#include "tap.h"
#include "vault.h"

static char dir[] = "/tmp/pactfs-fscore-XXXXXX";
static struct vault *v;
static struct fs fs;
static const struct fs_caller alice = { .uid = 1000, .gid = 1000, .pid = 4242 };

/* One vault for the whole run (its three RSA keys take seconds): account
 * alice (dataadmin|user) with folder "proj".  Each case starts the core on
 * it and stops it; the case that tampers with it runs last. */
static int make_vault(void)
{
    if (fs_test_vault_make(dir, "core", &v) < 0)
        return -1;
    return 0;
}

static int setup(int read_only)
{
    struct fs_options fo = { .read_only = read_only, .ready_fd = -1 };
    return v ? fs_core_start(&fs, v, &fo) : -1;
}

static void teardown(void)
{
    fs_core_stop(&fs);
}

struct listing {
    char names[16][64];
    uint64_t next[16];
    size_t n, cap;
};

static int collect(void *arg, const char *name, uint64_t ino, uint32_t mode, uint64_t next)
{
    (void)ino;
    (void)mode;
    struct listing *l = arg;
    if (l->n >= l->cap)
        return 1;
    snprintf(l->names[l->n], sizeof l->names[0], "%s", name);
    l->next[l->n++] = next;
    return 0;
}

static void test_root_and_folder_lookup(void)
{
    REQUIRE(setup(0) == 0);
    struct stat st;
    CHECK_EQ_INT(fs_getattr(&fs, META_ROOT_INO, &st), 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK_EQ_INT(st.st_mode & 0777, 0755);   /* a dataadmin may create folders */
    struct meta_inode mi;
    CHECK_EQ_INT(fs_lookup(&fs, &alice, META_ROOT_INO, "proj", &mi), 0);
    CHECK(S_ISDIR(mi.mode));
    CHECK(mi.ino == v->folders[0].root_ino);
    CHECK(mi.folder_id == v->folders[0].id);
    CHECK_EQ_INT(fs_getattr(&fs, mi.ino, &st), 0);
    CHECK(st.st_ino == mi.ino);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, META_ROOT_INO, "other", &mi), -ENOENT);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, v->folders[0].root_ino, "nothing", &mi), -ENOENT);
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_EQ_INT(fs_lookup(&fs, &alice, v->folders[0].root_ino, longname, &mi), -ENAMETOOLONG);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, v->folders[0].root_ino, "", &mi), -EINVAL);
    CHECK_EQ_INT(fs_getattr(&fs, 999999, &st), -ENOENT);
    teardown();
}

static void test_readdir_root_and_offsets(void)
{
    REQUIRE(setup(0) == 0);
    struct listing l = { .cap = 16 };
    CHECK_EQ_INT(fs_opendir(&fs, &alice, META_ROOT_INO), 0);
    CHECK_EQ_INT(fs_readdir(&fs, &alice, META_ROOT_INO, 0, collect, &l), 0);
    REQUIRE(l.n == 3);
    CHECK(strcmp(l.names[0], ".") == 0);
    CHECK(strcmp(l.names[1], "..") == 0);
    CHECK(strcmp(l.names[2], "proj") == 0);
    /* Resuming after an entry gives the ones after it only. */
    struct listing rest = { .cap = 16 };
    CHECK_EQ_INT(fs_readdir(&fs, &alice, META_ROOT_INO, l.next[1], collect, &rest), 0);
    CHECK_EQ_INT(rest.n, 1);
    struct listing end = { .cap = 16 };
    CHECK_EQ_INT(fs_readdir(&fs, &alice, META_ROOT_INO, l.next[2], collect, &end), 0);
    CHECK_EQ_INT(end.n, 0);
    /* A full buffer stops the listing without an error. */
    struct listing one = { .cap = 1 };
    CHECK_EQ_INT(fs_readdir(&fs, &alice, META_ROOT_INO, 0, collect, &one), 0);
    CHECK_EQ_INT(one.n, 1);
    /* An empty folder lists only its dots. */
    struct listing f = { .cap = 16 };
    CHECK_EQ_INT(fs_readdir(&fs, &alice, v->folders[0].root_ino, 0, collect, &f), 0);
    CHECK_EQ_INT(f.n, 2);
    teardown();
}

static void test_rights_and_read_only(void)
{
    REQUIRE(setup(1) == 0);
    struct vault_folder *vf = NULL;
    uint64_t root = v->folders[0].root_ino;
    CHECK_EQ_INT(fs_folder_check(&fs, &alice, root, RIGHT_READ, "lookup", NULL, &vf), 0);
    CHECK(vf == &v->folders[0]);
    CHECK_EQ_INT(fs_folder_check(&fs, &alice, root, RIGHT_WRITE, "create", "x", &vf), -EROFS);
    CHECK_EQ_INT(fs_folder_check(&fs, &alice, META_ROOT_INO, RIGHT_WRITE, "mkdir", "x", &vf),
                 -EROFS);
    struct stat st;
    CHECK_EQ_INT(fs_getattr(&fs, META_ROOT_INO, &st), 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0555);   /* read-only: no folder creation */
    /* A folder without the right asked for is refused (audited). */
    uint32_t rights = v->folders[0].rights;
    v->folders[0].rights = RIGHT_READ;
    fs.opt.read_only = 0;
    CHECK_EQ_INT(fs_folder_check(&fs, &alice, root, RIGHT_WRITE, "create", "x", &vf), -EACCES);
    v->folders[0].rights = rights;
    /* A change at the top of the mount other than mkdir is refused. */
    CHECK_EQ_INT(fs_folder_check(&fs, &alice, META_ROOT_INO, RIGHT_WRITE, "create", "x", &vf),
                 -EACCES);
    teardown();
}

static void test_trash_core(void)
{
    REQUIRE(setup(0) == 0);
    REQUIRE(fs_trash_init(&fs) == 0);
    char top[40];
    fs_trash_topname(&fs, top, sizeof top);
    CHECK(fs_trash_is_topname(&fs, top));
    CHECK(!fs_trash_is_topname(&fs, ".Trash"));
    struct stat st;
    CHECK_EQ_INT(fs_trash_getattr(&fs, FS_TRASH_INO, &st), 0);
    CHECK(S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700 && st.st_uid == fs.uid);
    struct listing l = { .cap = 16 };
    CHECK_EQ_INT(fs_trash_readdir(&fs, &alice, FS_TRASH_INO, 0, collect, &l), 0);
    REQUIRE(l.n == 5);
    CHECK(strcmp(l.names[2], "files") == 0 && strcmp(l.names[3], "info") == 0 &&
          strcmp(l.names[4], "expunged") == 0);
    char *vp = fs_trash_vpath(&fs, FS_TRASH_FILES_INO);
    char want[64];
    snprintf(want, sizeof want, "/%s/files", top);
    CHECK(vp && strcmp(vp, want) == 0);
    free(vp);

    /* a .trashinfo written before the rename: memory only */
    const char *info = "[Trash Info]\nPath=x\nDeletionDate=2020-01-02T03:04:05\n";
    CHECK_EQ_INT(fs_trash_pend_create(&fs, &alice, "ü b.txt.trashinfo", &st), 0);
    uint64_t pino = st.st_ino;
    CHECK(pino & FS_TRASH_PEND_BIT);
    CHECK_EQ_INT(fs_trash_pend_create(&fs, &alice, "ü b.txt.trashinfo", &st), -EEXIST);
    CHECK_EQ_INT(fs_trash_file_write(&fs, pino, 0, info, strlen(info)), 0);
    CHECK_EQ_INT(fs_trash_file_write(&fs, FS_TRASH_INFO_BIT | 5, 0, "x", 1), -EPERM);
    uint8_t buf[128];
    size_t got = 0;
    CHECK_EQ_INT(fs_trash_file_read(&fs, pino, 0, sizeof buf, buf, &got), 0);
    CHECK(got == strlen(info) && memcmp(buf, info, got) == 0);
    char *content = NULL;
    size_t len = 0;
    CHECK_EQ_INT(fs_trash_info_make(&fs, "/proj/a b/ü b.txt", "ü b.txt", &content, &len), 0);
    CHECK(content && strcmp(content, "[Trash Info]\nPath=proj/a%20b/%C3%BC%20b.txt\n"
                                     "DeletionDate=2020-01-02T03:04:05\n") == 0);
    CHECK(len == strlen(content));
    free(content);
    CHECK_EQ_INT(fs_trash_pend_rename(&fs, "ü b.txt.trashinfo", "c.trashinfo", 0), 0);
    CHECK_EQ_INT(fs_trash_pend_unlink(&fs, "ü b.txt.trashinfo"), -ENOENT);
    CHECK_EQ_INT(fs_trash_getattr(&fs, pino, &st), 0);
    CHECK(st.st_size == (off_t)strlen(info));
    fs_trash_pend_drop(&fs, "c");
    CHECK_EQ_INT(fs_trash_getattr(&fs, pino, &st), -ENOENT);

    /* the hidden directory: made on first use, never listed nor found */
    struct vault_folder *vf = &v->folders[0];
    uint64_t files = 0, again = 0, rp;
    struct vault_folder *found;
    CHECK_EQ_INT(fs_trash_resolve(&fs, &alice, FS_TRASH_FILES_INO, "a", &rp, &found), -ENOENT);
    CHECK_EQ_INT(fs_trash_subdir(&fs, &alice, vf, FS_TRASH_FILES_INO, &files), 0);
    CHECK_EQ_INT(fs_trash_subdir(&fs, &alice, vf, FS_TRASH_FILES_INO, &again), 0);
    CHECK(files != 0 && files == again);
    char hidden[48];
    snprintf(hidden, sizeof hidden, FS_TRASH_HIDDEN_PREFIX "%llu",
             (unsigned long long)v->account.id);
    CHECK(fs_trash_reserved(&fs, vf->root_ino, hidden));
    CHECK(!fs_trash_reserved(&fs, files, hidden));
    struct meta_inode mi;
    CHECK_EQ_INT(fs_lookup(&fs, &alice, vf->root_ino, hidden, &mi), -ENOENT);
    struct listing f = { .cap = 16 };
    CHECK_EQ_INT(fs_readdir(&fs, &alice, vf->root_ino, 0, collect, &f), 0);
    CHECK_EQ_INT(f.n, 2);   /* only the dots */
    struct listing t = { .cap = 16 };
    CHECK_EQ_INT(fs_trash_readdir(&fs, &alice, FS_TRASH_FILES_INO, 0, collect, &t), 0);
    CHECK_EQ_INT(t.n, 2);
    fs_trash_fini(&fs);
    teardown();
}

/* The database operator changes the type of a folder's root inode: the
 * entry binding no longer matches and the lookup is refused (EIO). */
/* READDIRPLUS's sink: room for cap entries, each kept with its row. */
struct plus_listing {
    char names[16][64];
    uint64_t ino[16], next[16];
    int has_row[16];
    uint32_t row_mode[16];
    size_t n, reserved, cap;
};

static int plus_room(void *arg, const char *name)
{
    (void)name;
    struct plus_listing *l = arg;
    if (l->reserved >= l->cap)
        return 1;
    l->reserved++;
    return 0;
}

static void plus_add(void *arg, const char *name, uint64_t ino, uint32_t mode, uint64_t next,
                     const struct meta_inode *mi)
{
    (void)mode;
    struct plus_listing *l = arg;
    snprintf(l->names[l->n], sizeof l->names[0], "%s", name);
    l->ino[l->n] = ino;
    l->next[l->n] = next;
    l->has_row[l->n] = mi != NULL;
    l->row_mode[l->n] = mi ? mi->mode : 0;
    if (mi)
        CHECK(mi->ino == ino);
    l->n++;
}

static void test_readdirplus_rows_and_resumption(void)
{
    REQUIRE(setup(0) == 0);
    uint64_t top = v->folders[0].root_ino;
    struct meta_inode a, b;
    REQUIRE(fs_mkdir(&fs, &alice, top, "plus-a", 0750, &a) == 0);
    REQUIRE(fs_mknod(&fs, &alice, top, "plus-b", S_IFREG | 0640, 0, &b) == 0);
    struct plus_listing l = { .cap = 16 };
    struct fs_plus_sink sink = { .room = plus_room, .add = plus_add, .arg = &l };
    CHECK_EQ_INT(fs_readdirplus(&fs, &alice, top, 0, &sink), 0);
    REQUIRE(l.n == 4);
    CHECK(strcmp(l.names[0], ".") == 0 && !l.has_row[0]);
    CHECK(strcmp(l.names[1], "..") == 0 && !l.has_row[1]);
    CHECK(strcmp(l.names[2], "plus-a") == 0 && l.has_row[2] && l.row_mode[2] == (S_IFDIR | 0750));
    CHECK(strcmp(l.names[3], "plus-b") == 0 && l.has_row[3] && l.row_mode[3] == (S_IFREG | 0640));
    CHECK(l.ino[3] == b.ino);
    /* A full sink stops the listing; the next call resumes after the last
     * entry taken, and none is given twice or lost. */
    struct plus_listing one = { .cap = 3 };
    sink.arg = &one;
    CHECK_EQ_INT(fs_readdirplus(&fs, &alice, top, 0, &sink), 0);
    REQUIRE(one.n == 3);
    struct plus_listing rest = { .cap = 16 };
    sink.arg = &rest;
    CHECK_EQ_INT(fs_readdirplus(&fs, &alice, top, one.next[2], &sink), 0);
    REQUIRE(rest.n == 1);
    CHECK(strcmp(rest.names[0], "plus-b") == 0 && rest.has_row[0]);
    /* The root's entries never carry rows: a folder's lookup is audited. */
    struct plus_listing root = { .cap = 16 };
    sink.arg = &root;
    CHECK_EQ_INT(fs_readdirplus(&fs, &alice, META_ROOT_INO, 0, &sink), 0);
    REQUIRE(root.n == 3);
    CHECK(strcmp(root.names[2], "proj") == 0 && !root.has_row[2]);
    /* A row whose type is not its entry's goes without (the lookup then
     * reports the tampering). */
    struct meta_inode t = b;
    t.mode = S_IFDIR | 0755;
    REQUIRE(meta_begin(v->meta) == 0);
    REQUIRE(meta_inode_update(v->meta, &t) == 0);
    REQUIRE(meta_commit(v->meta) == 0);
    struct plus_listing bad = { .cap = 16 };
    sink.arg = &bad;
    CHECK_EQ_INT(fs_readdirplus(&fs, &alice, top, 0, &sink), 0);
    REQUIRE(bad.n == 4);
    CHECK(bad.has_row[2] && !bad.has_row[3]);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, top, "plus-b", &t), -EIO);
    teardown();
}

static void test_tampered_inode_type(void)
{
    REQUIRE(setup(0) == 0);
    struct meta_inode mi;
    REQUIRE(fs_lookup(&fs, &alice, META_ROOT_INO, "proj", &mi) == 0);
    mi.mode = S_IFREG | 0644;
    REQUIRE(meta_begin(v->meta) == 0);
    REQUIRE(meta_inode_update(v->meta, &mi) == 0);
    REQUIRE(meta_commit(v->meta) == 0);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, META_ROOT_INO, "proj", &mi), -EIO);
    teardown();
}

int main(void)
{
    if (make_vault() < 0)
        printf("# cannot make the test vault\n");
    RUN(test_root_and_folder_lookup);
    RUN(test_readdir_root_and_offsets);
    RUN(test_rights_and_read_only);
    RUN(test_trash_core);
    RUN(test_readdirplus_rows_and_resumption);   /* alters one file it made */
    RUN(test_tampered_inode_type);   /* last: it alters the vault */
    fs_test_vault_remove(dir, v);
    return tap_done();
}
