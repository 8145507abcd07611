/* The filesystem core's namespace and commit logic without a mount
 * (fs_namespace.h, fs_xattr.h, fs_data): a vault made by vault_init in a
 * temporary directory, unlocked, and the core called as the FUSE front end
 * calls it.  Each change is checked in the metadata it leaves, its errno,
 * and the audit event it wrote to the vault's spool (op, result, file id). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "audit.h"
#include "crypto.h"
#include "error.h"
#include "fs_file.h"
#include "fs_namespace.h"
#include "fs_xattr.h"
#include "secmem.h"
#include "fs_test_vault.h"
#include "tap.h"
#include "vault.h"

static char dir[] = "/tmp/pactfs-fsns-XXXXXX";
static struct vault *v;
static struct fs fs;
static const struct fs_caller alice = { .uid = 1000, .gid = 1000, .pid = 4242 };
static const struct fs_caller bob = { .uid = 1001, .gid = 1001, .pid = 4343 };
static uint64_t top;   /* the folder's root inode */

static int setup(void)
{
    struct fs_options fo = { .ready_fd = -1 };
    return v ? fs_core_start(&fs, v, &fo) : -1;
}

static void teardown(void)
{
    fs_core_stop(&fs);
}

/* An event of the vault's audit spool. */
struct event {
    char op[32], result[16], err[32];
    char mode[16], owner[32], mtime[40];   /* a setattr's fields, "" if absent */
    uint64_t file, uid, pid;
};

/* A string field of an event into out ("" when absent). */
static void field_copy(struct json_object *o, const char *key, char *out, size_t len)
{
    const char *val = audit_field_str(o, key);
    snprintf(out, len, "%s", val ? val : "");
}

/* Call fn on each event of the spool from line `from` on; how many lines
 * the spool holds, or -1. */
static int spool_scan(int from, void (*fn)(const struct event *, void *), void *arg)
{
    FILE *f = fopen(v->conf.audit_spool, "r");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int no = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (no++ < from || !fn)
            continue;
        struct json_object *o = audit_line_parse(line, (size_t)n);
        if (!o)
            continue;
        struct event ev;
        memset(&ev, 0, sizeof ev);
#define FIELD(name) field_copy(o, #name, ev.name, sizeof ev.name)
        FIELD(op);
        FIELD(result);
        field_copy(o, "errno", ev.err, sizeof ev.err);
        FIELD(mode);
        FIELD(owner);
        FIELD(mtime);
#undef FIELD
        audit_field_uint(o, "file", &ev.file);
        audit_field_uint(o, "uid", &ev.uid);
        audit_field_uint(o, "pid", &ev.pid);
        json_object_put(o);
        fn(&ev, arg);
    }
    free(line);
    fclose(f);
    return no;
}

struct find {
    const char *op;
    struct event ev;
    int found;
};

static void find_cb(const struct event *ev, void *arg)
{
    struct find *f = arg;
    if (strcmp(ev->op, f->op) == 0) {
        f->ev = *ev;
        f->found++;
    }
}

/* The events of op written since spool line `from`: how many (the last in
 * *ev). */
static int events_since(int from, const char *op, struct event *ev)
{
    struct find f = { .op = op };
    spool_scan(from, find_cb, &f);
    if (ev)
        *ev = f.ev;
    return f.found;
}

static int spool_lines(void)
{
    return spool_scan(0, NULL, NULL);
}

static void count_not_checkpoint(const struct event *ev, void *arg)
{
    *(int *)arg += strcmp(ev->op, "checkpoint") != 0;
}

/* The events written since spool line from, leaving out checkpoints: the
 * sealer thread appends those on its own schedule (audit.c), so one may
 * land in the middle of any call. */
static int events_other_than_checkpoints_since(int from)
{
    int n = 0;
    spool_scan(from, count_not_checkpoint, &n);
    return n;
}

struct seq {
    struct event ev[8];
    int n;
};

static void seq_cb(const struct event *ev, void *arg)
{
    struct seq *q = arg;
    if (strcmp(ev->op, "checkpoint") != 0 && q->n < 8)
        q->ev[q->n++] = *ev;
    else if (strcmp(ev->op, "checkpoint") != 0)
        q->n++;
}

/* The events other than checkpoints since spool line from, in order. */
static struct seq events_in_order_since(int from)
{
    struct seq q = { .n = 0 };
    spool_scan(from, seq_cb, &q);
    return q;
}

static int count_events(const char *op)
{
    return events_since(0, op, NULL);
}

/* call returns want, and wrote exactly one audit event op: "ok" (want 0)
 * or "denied" with its errno (EACCES, EPERM), by the caller's uid, for
 * file ino (unless 0). */
#define CHECK_AUDITED(call, want, op, ino)                                          \
    do {                                                                            \
        int mark_ = spool_lines();                                                     \
        CHECK_EQ_INT((call), (want));                                               \
        struct event e_;                                                            \
        CHECK_EQ_INT(events_since(mark_, (op), &e_), 1);                               \
        CHECK(strcmp(e_.result, (want) == 0 ? "ok" : "denied") == 0);               \
        if ((want) != 0)                                                            \
            CHECK(strcmp(e_.err, strerrorname_np(-(want))) == 0);                   \
        if ((ino) != 0)                                                             \
            CHECK_EQ_INT(e_.file, (ino));                                           \
        CHECK_EQ_INT(e_.uid, alice.uid);                                            \
    } while (0)

/* call returns want (a failure other than a refusal) and audits nothing. */
#define CHECK_NOT_AUDITED(call, want)                                               \
    do {                                                                            \
        int mark_ = spool_lines();                                                     \
        CHECK_EQ_INT((call), (want));                                               \
        CHECK_EQ_INT(events_other_than_checkpoints_since(mark_), 0);                  \
    } while (0)

static void test_mkdir_create_and_errors(void)
{
    REQUIRE(setup() == 0);
    struct meta_inode d, f, again, mi;
    CHECK_AUDITED(fs_mkdir(&fs, &alice, top, "docs", 0750, &d), 0, "mkdir", d.ino);
    CHECK(S_ISDIR(d.mode) && (d.mode & 07777) == 0750 && d.uid == alice.uid);
    CHECK_AUDITED(fs_mknod(&fs, &alice, d.ino, "a.txt", S_IFREG | 0640, 0, &f), 0, "create",
                  f.ino);
    CHECK(S_ISREG(f.mode) && f.nlink == 1);
    /* what a lookup finds is the new row */
    CHECK_EQ_INT(fs_lookup(&fs, &alice, d.ino, "a.txt", &mi), 0);
    CHECK_EQ_INT(mi.ino, f.ino);
    /* the parent counts the new subdirectory's ".." */
    struct meta_inode parent;
    REQUIRE(meta_inode_get(v->meta, top, &parent) == 0);
    CHECK_EQ_INT(parent.nlink, 3);

    /* EEXIST: the name is taken (nothing written, nothing audited) */
    CHECK_NOT_AUDITED(fs_mknod(&fs, &alice, d.ino, "a.txt", S_IFREG | 0600, 0, &again), -EEXIST);
    CHECK_NOT_AUDITED(fs_mkdir(&fs, &alice, top, "docs", 0700, &again), -EEXIST);
    /* ENOTDIR, EPERM (a device), ENAMETOOLONG, EINVAL, ENOENT */
    CHECK_NOT_AUDITED(fs_mkdir(&fs, &alice, f.ino, "x", 0700, &again), -ENOTDIR);
    CHECK_NOT_AUDITED(fs_mknod(&fs, &alice, d.ino, "dev", S_IFCHR | 0600, 0x0101, &again),
                      -EPERM);
    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_NOT_AUDITED(fs_mkdir(&fs, &alice, d.ino, longname, 0700, &again), -ENAMETOOLONG);
    CHECK_NOT_AUDITED(fs_mkdir(&fs, &alice, d.ino, "", 0700, &again), -EINVAL);
    CHECK_NOT_AUDITED(fs_unlink(&fs, &alice, d.ino, "none", 0), -ENOENT);

    /* a symlink's target is sealed and reads back */
    struct meta_inode l;
    CHECK_AUDITED(fs_symlink(&fs, &alice, "../a.txt", d.ino, "ln", &l), 0, "symlink", l.ino);
    CHECK(S_ISLNK(l.mode));
    char *target = NULL;
    CHECK_AUDITED(fs_readlink(&fs, &alice, l.ino, &target), 0, "readlink", l.ino);
    CHECK(target && strcmp(target, "../a.txt") == 0);
    free(target);
    target = NULL;
    CHECK_EQ_INT(fs_readlink(&fs, &alice, f.ino, &target), -EINVAL);
    CHECK(target == NULL);
    teardown();
}

static void test_unlink_rmdir(void)
{
    REQUIRE(setup() == 0);
    struct meta_inode d, f, mi;
    REQUIRE(fs_mkdir(&fs, &alice, top, "rmme", 0700, &d) == 0);
    REQUIRE(fs_mknod(&fs, &alice, d.ino, "f", S_IFREG | 0600, 0, &f) == 0);
    /* ENOTEMPTY, ENOTDIR, EISDIR: nothing changes */
    CHECK_NOT_AUDITED(fs_unlink(&fs, &alice, top, "rmme", 1), -ENOTEMPTY);
    CHECK_NOT_AUDITED(fs_unlink(&fs, &alice, d.ino, "f", 1), -ENOTDIR);
    CHECK_NOT_AUDITED(fs_unlink(&fs, &alice, top, "rmme", 0), -EISDIR);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, top, "rmme", &mi), 0);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, d.ino, "f", &mi), 0);

    CHECK_AUDITED(fs_unlink(&fs, &alice, d.ino, "f", 0), 0, "unlink", f.ino);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, d.ino, "f", &mi), -ENOENT);
    /* no reference held: the inode row went with its last link */
    CHECK_EQ_INT(meta_inode_get(v->meta, f.ino, &mi), -ENOENT);
    CHECK_NOT_AUDITED(fs_unlink(&fs, &alice, d.ino, "f", 0), -ENOENT);

    CHECK_AUDITED(fs_unlink(&fs, &alice, top, "rmme", 1), 0, "rmdir", d.ino);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, top, "rmme", &mi), -ENOENT);
    struct meta_inode parent;
    REQUIRE(meta_inode_get(v->meta, top, &parent) == 0);
    CHECK_EQ_INT(parent.nlink, 3);   /* "docs" of the first case is left */
    teardown();
}

static void test_rename_and_link(void)
{
    REQUIRE(setup() == 0);
    struct meta_inode a, b, sub, mi;
    REQUIRE(fs_mknod(&fs, &alice, top, "r-a", S_IFREG | 0600, 0, &a) == 0);
    REQUIRE(fs_mknod(&fs, &alice, top, "r-b", S_IFREG | 0600, 0, &b) == 0);
    REQUIRE(fs_mkdir(&fs, &alice, top, "r-dir", 0700, &sub) == 0);

    /* a plain move into a subdirectory */
    CHECK_AUDITED(fs_rename(&fs, &alice, top, "r-a", sub.ino, "moved", 0), 0, "rename", a.ino);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, top, "r-a", &mi), -ENOENT);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, sub.ino, "moved", &mi), 0);
    CHECK_EQ_INT(mi.ino, a.ino);

    /* RENAME_NOREPLACE onto an existing name: EEXIST, nothing moved */
    CHECK_NOT_AUDITED(fs_rename(&fs, &alice, sub.ino, "moved", top, "r-b", RENAME_NOREPLACE),
                      -EEXIST);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, top, "r-b", &mi), 0);
    CHECK_EQ_INT(mi.ino, b.ino);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, sub.ino, "moved", &mi), 0);
    CHECK_EQ_INT(mi.ino, a.ino);
    /* a directory onto a file: ENOTDIR; onto a non-empty directory: ENOTEMPTY */
    CHECK_NOT_AUDITED(fs_rename(&fs, &alice, top, "r-dir", top, "r-b", 0), -ENOTDIR);
    struct meta_inode d2;
    REQUIRE(fs_mkdir(&fs, &alice, top, "r-dir2", 0700, &d2) == 0);
    CHECK_NOT_AUDITED(fs_rename(&fs, &alice, top, "r-dir2", top, "r-dir", 0), -ENOTEMPTY);
    CHECK_NOT_AUDITED(fs_rename(&fs, &alice, top, "nothing", top, "x", 0), -ENOENT);
    CHECK_NOT_AUDITED(fs_rename(&fs, &alice, top, "r-b", top, "x", 1u << 7), -EINVAL);

    /* RENAME_EXCHANGE swaps the two entries */
    CHECK_AUDITED(fs_rename(&fs, &alice, sub.ino, "moved", top, "r-b", RENAME_EXCHANGE), 0,
                  "rename", a.ino);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, top, "r-b", &mi), 0);
    CHECK_EQ_INT(mi.ino, a.ino);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, sub.ino, "moved", &mi), 0);
    CHECK_EQ_INT(mi.ino, b.ino);

    /* replacing a file: the replaced inode goes with its last link */
    CHECK_AUDITED(fs_rename(&fs, &alice, sub.ino, "moved", top, "r-b", 0), 0, "rename", b.ino);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, top, "r-b", &mi), 0);
    CHECK_EQ_INT(mi.ino, b.ino);
    CHECK_EQ_INT(meta_inode_get(v->meta, a.ino, &mi), -ENOENT);

    /* a hard link: nlink 2, audited; EEXIST, and EPERM on a directory */
    struct meta_inode lk;
    CHECK_AUDITED(fs_link(&fs, &alice, b.ino, sub.ino, "hard", &lk), 0, "link", b.ino);
    CHECK_EQ_INT(lk.nlink, 2);
    CHECK_NOT_AUDITED(fs_link(&fs, &alice, b.ino, sub.ino, "hard", &lk), -EEXIST);
    CHECK_NOT_AUDITED(fs_link(&fs, &alice, sub.ino, top, "dirlink", &lk), -EPERM);
    /* unlinking one name leaves the other */
    CHECK_AUDITED(fs_unlink(&fs, &alice, top, "r-b", 0), 0, "unlink", b.ino);
    CHECK_EQ_INT(meta_inode_get(v->meta, b.ino, &mi), 0);
    CHECK_EQ_INT(mi.nlink, 1);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, sub.ino, "hard", &mi), 0);
    teardown();
}

static void test_setattr_and_xattrs(void)
{
    REQUIRE(setup() == 0);
    struct meta_inode f;
    REQUIRE(fs_mknod(&fs, &alice, top, "attrs", S_IFREG | 0600, 0, &f) == 0);
    struct stat a, st;
    memset(&a, 0, sizeof a);
    a.st_mode = 0644;
    CHECK_AUDITED(fs_setattr(&fs, &alice, f.ino, &a, FS_SET_MODE, &st), 0, "chmod", f.ino);
    CHECK_EQ_INT(st.st_mode & 07777, 0644);
    struct meta_inode mi;
    REQUIRE(meta_inode_get(v->meta, f.ino, &mi) == 0);
    CHECK_EQ_INT(mi.mode & 07777, 0644);

    a.st_mtim.tv_sec = 1000000000;
    a.st_mtim.tv_nsec = 5;
    CHECK_AUDITED(fs_setattr(&fs, &alice, f.ino, &a, FS_SET_MTIME, &st), 0, "utimens", f.ino);
    CHECK_EQ_INT(st.st_mtim.tv_sec, 1000000000);
    REQUIRE(meta_inode_get(v->meta, f.ino, &mi) == 0);
    CHECK_EQ_INT(mi.mtime_ns, 1000000000LL * 1000000000LL + 5);

    /* chown: only root gives a file away (EPERM); the owner may change
     * the group to one of its groups, not to another */
    a.st_uid = 4242;
    CHECK_EQ_INT(fs_setattr(&fs, &alice, f.ino, &a, FS_SET_UID, &st), -EPERM);
    a.st_gid = 777;
    CHECK_EQ_INT(fs_setattr(&fs, &alice, f.ino, &a, FS_SET_GID, &st), -EPERM);
    REQUIRE(meta_inode_get(v->meta, f.ino, &mi) == 0);
    CHECK_EQ_INT(mi.uid, alice.uid);
    CHECK_EQ_INT(mi.gid, alice.gid);
    gid_t groups[] = { 500, 777 };
    struct fs_caller member = alice;
    member.groups = groups;
    member.ngroups = 2;
    CHECK_AUDITED(fs_setattr(&fs, &member, f.ino, &a, FS_SET_GID, &st), 0, "chown", f.ino);
    CHECK_EQ_INT(st.st_gid, 777);
    /* not the owner: no group change either, even in the group */
    struct fs_caller other = bob;
    other.groups = groups;
    other.ngroups = 2;
    a.st_gid = 500;
    CHECK_EQ_INT(fs_setattr(&fs, &other, f.ino, &a, FS_SET_GID, &st), -EPERM);

    /* truncate grows the file (audited) */
    a.st_size = 12345;
    CHECK_AUDITED(fs_setattr(&fs, &alice, f.ino, &a, FS_SET_SIZE, &st), 0, "truncate", f.ino);
    CHECK_EQ_INT(st.st_size, 12345);

    /* xattrs: set, get, list, create-only, remove; only "user." */
    CHECK_AUDITED(fs_setxattr(&fs, &alice, f.ino, "user.tag", "red", 3, 0), 0, "setxattr", 0);
    CHECK_NOT_AUDITED(fs_setxattr(&fs, &alice, f.ino, "user.tag", "blue", 4, XATTR_CREATE),
                      -EEXIST);
    CHECK_NOT_AUDITED(fs_setxattr(&fs, &alice, f.ino, "user.none", "x", 1, XATTR_REPLACE),
                      -ENODATA);
    CHECK_NOT_AUDITED(fs_setxattr(&fs, &alice, f.ino, "trusted.x", "x", 1, 0), -ENOTSUP);
    uint8_t *val = NULL;
    size_t len = 0;
    CHECK_AUDITED(fs_getxattr(&fs, &alice, f.ino, "user.tag", &val, &len), 0, "getxattr", f.ino);
    CHECK(len == 3 && val && memcmp(val, "red", 3) == 0);
    free(val);
    char *list = NULL;
    CHECK_AUDITED(fs_listxattr(&fs, &alice, f.ino, &list, &len), 0, "listxattr", f.ino);
    CHECK(len == sizeof "user.tag" && list && memcmp(list, "user.tag", len) == 0);
    free(list);
    CHECK_AUDITED(fs_removexattr(&fs, &alice, f.ino, "user.tag"), 0, "removexattr", 0);
    val = NULL;
    CHECK_EQ_INT(fs_getxattr(&fs, &alice, f.ino, "user.tag", &val, &len), -ENODATA);
    CHECK(val == NULL);
    CHECK_NOT_AUDITED(fs_removexattr(&fs, &alice, f.ino, "user.tag"), -ENODATA);
    teardown();
}

/* A read-only grant: every change is refused with EACCES, audited as
 * denied, and leaves the metadata as it was. */
/* FUSE_HANDLE_KILLPRIV_V2: the kernel flags a chown, a truncate, a write
 * or an O_TRUNC open and pactfs clears the set-ID bits (fs_kill_bits). */
static void test_kill_suidgid(void)
{
    CHECK_EQ_INT(fs_kill_bits(S_IFREG | 06755), 06000);
    CHECK_EQ_INT(fs_kill_bits(S_IFREG | 04700), 04000);
    CHECK_EQ_INT(fs_kill_bits(S_IFREG | 02745), 0);   /* sgid without g+x: locking */
    CHECK_EQ_INT(fs_kill_bits(S_IFREG | 02715), 02000);
    CHECK_EQ_INT(fs_kill_bits(S_IFDIR | 06775), 0);
    REQUIRE(setup() == 0);
    struct meta_inode f, plain, mi;
    REQUIRE(fs_mknod(&fs, &alice, top, "suid", S_IFREG | 06775, 0, &f) == 0);
    REQUIRE(fs_mknod(&fs, &alice, top, "plain", S_IFREG | 0777, 0, &plain) == 0);
    struct stat a, st;
    memset(&a, 0, sizeof a);
    /* a write or O_TRUNC open: nothing to clear costs nothing */
    CHECK_NOT_AUDITED(fs_kill_suidgid(&fs, &alice, plain.ino), 0);
    int mark = spool_lines();
    CHECK_EQ_INT(fs_kill_suidgid(&fs, &alice, f.ino), 1);
    struct event e;
    CHECK_EQ_INT(events_since(mark, "chmod", &e), 1);
    CHECK(e.file == f.ino && strcmp(e.result, "ok") == 0);
    REQUIRE(meta_inode_get(v->meta, f.ino, &mi) == 0);
    CHECK_EQ_INT(mi.mode & 07777, 0775);
    CHECK_NOT_AUDITED(fs_kill_suidgid(&fs, &alice, f.ino), 0);
    /* a truncate with the flag: no chmod when nothing is cleared */
    a.st_size = 7;
    mark = spool_lines();
    CHECK_AUDITED(fs_setattr(&fs, &alice, plain.ino, &a, FS_SET_SIZE | FS_SET_KILL_SUIDGID, &st),
                  0, "truncate", plain.ino);
    CHECK_EQ_INT(events_since(mark, "chmod", NULL), 0);
    REQUIRE(meta_inode_get(v->meta, plain.ino, &mi) == 0);
    CHECK_EQ_INT(mi.mode & 07777, 0777);
    a.st_mode = 04777;
    REQUIRE(fs_setattr(&fs, &alice, plain.ino, &a, FS_SET_MODE, &st) == 0);
    CHECK_AUDITED(fs_setattr(&fs, &alice, plain.ino, &a, FS_SET_SIZE | FS_SET_KILL_SUIDGID, &st),
                  0, "chmod", plain.ino);
    CHECK_EQ_INT(st.st_mode & 07777, 0777);
    CHECK_EQ_INT(st.st_size, 7);
    /* a chgrp: suid and sgid with g+x go, sgid without g+x stays, and
     * nothing is cleared without the flag (the kernel then sends the mode) */
    gid_t groups[] = { 777 };
    struct fs_caller member = alice;
    member.groups = groups;
    member.ngroups = 1;
    a.st_mode = 06775;
    REQUIRE(fs_setattr(&fs, &alice, f.ino, &a, FS_SET_MODE, &st) == 0);
    a.st_gid = 777;
    CHECK_AUDITED(fs_setattr(&fs, &member, f.ino, &a, FS_SET_GID, &st), 0, "chown", f.ino);
    CHECK_EQ_INT(st.st_mode & 07777, 06775);
    a.st_gid = alice.gid;
    CHECK_AUDITED(fs_setattr(&fs, &member, f.ino, &a, FS_SET_GID | FS_SET_KILL_SUIDGID, &st), 0,
                  "setattr", f.ino);
    CHECK_EQ_INT(st.st_mode & 07777, 0775);
    a.st_mode = 02745;
    REQUIRE(fs_setattr(&fs, &alice, f.ino, &a, FS_SET_MODE, &st) == 0);
    CHECK_AUDITED(fs_setattr(&fs, &member, f.ino, &a, FS_SET_GID | FS_SET_KILL_SUIDGID, &st), 0,
                  "chown", f.ino);
    CHECK_EQ_INT(st.st_mode & 07777, 02745);
    teardown();
}

static void test_read_only_grant_is_refused_and_audited(void)
{
    REQUIRE(setup() == 0);
    struct meta_inode f, mi;
    REQUIRE(fs_mknod(&fs, &alice, top, "ro", S_IFREG | 0600, 0, &f) == 0);
    REQUIRE(fs_setxattr(&fs, &alice, f.ino, "user.keep", "1", 1, 0) == 0);
    uint32_t rights = v->folders[0].rights;
    v->folders[0].rights = RIGHT_READ;
    CHECK_AUDITED(fs_mkdir(&fs, &alice, top, "no", 0700, &mi), -EACCES, "mkdir", 0);
    CHECK_AUDITED(fs_mknod(&fs, &alice, top, "no", S_IFREG | 0600, 0, &mi), -EACCES, "create",
                  0);
    CHECK_AUDITED(fs_unlink(&fs, &alice, top, "ro", 0), -EACCES, "unlink", 0);
    CHECK_AUDITED(fs_rename(&fs, &alice, top, "ro", top, "ro2", 0), -EACCES, "rename", 0);
    CHECK_AUDITED(fs_link(&fs, &alice, f.ino, top, "ro-link", &mi), -EACCES, "link", f.ino);
    struct stat a, st;
    memset(&a, 0, sizeof a);
    CHECK_AUDITED(fs_setattr(&fs, &alice, f.ino, &a, FS_SET_MODE, &st), -EACCES, "setattr",
                  f.ino);
    a.st_size = 1;
    CHECK_AUDITED(fs_setattr(&fs, &alice, f.ino, &a, FS_SET_SIZE, &st), -EACCES, "truncate",
                  f.ino);
    CHECK_AUDITED(fs_setxattr(&fs, &alice, f.ino, "user.x", "1", 1, 0), -EACCES, "setxattr",
                  f.ino);
    CHECK_AUDITED(fs_removexattr(&fs, &alice, f.ino, "user.keep"), -EACCES, "removexattr",
                  f.ino);
    /* nothing changed; reading still works */
    CHECK_EQ_INT(fs_lookup(&fs, &alice, top, "ro", &mi), 0);
    CHECK_EQ_INT(mi.nlink, 1);
    CHECK_EQ_INT(mi.mode & 07777, 0600);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, top, "no", &mi), -ENOENT);
    CHECK_EQ_INT(fs_lookup(&fs, &alice, top, "ro2", &mi), -ENOENT);
    uint8_t *val = NULL;
    size_t len = 0;
    CHECK_EQ_INT(fs_getxattr(&fs, &alice, f.ino, "user.keep", &val, &len), 0);
    free(val);
    v->folders[0].rights = rights;
    teardown();
}

/* Open files through the core (fs_file.h): create gives a writable
 * handle, whose bytes are summarised in one "write" event at close; a
 * read-only open cannot write (EBADF); a read-only grant refuses a
 * writable open (EACCES, audited "open" denied) but opens for reading;
 * rights withdrawn while a file is open refuse its reads (audited). */
static void test_open_files(void)
{
    REQUIRE(setup() == 0);
    struct stat st;
    struct fs_handle *h = NULL;
    CHECK_AUDITED(fs_create(&fs, &alice, top, "o.txt", 0600, O_WRONLY | O_CREAT | O_EXCL, &st,
                            &h), 0, "create", 0);
    REQUIRE(h && h->in);
    uint64_t ino = st.st_ino;
    CHECK(S_ISREG(st.st_mode));
    CHECK_EQ_INT(fs_handle_write(&fs, &alice, h, ino, 0, "hello", 5), 0);
    CHECK_AUDITED(fs_handle_flush(&fs, &alice, h, ino), 0, "write", ino);
    fs_handle_finish(&fs, &alice, h, ino);
    fs_handle_close(&fs, h);
    fs_inode_forget(&fs, ino, 1);   /* the kernel's lookup reference */
    /* O_EXCL on an existing name: EEXIST; without it, the file opens */
    h = NULL;
    CHECK_EQ_INT(fs_create(&fs, &alice, top, "o.txt", 0600, O_RDWR | O_CREAT | O_EXCL, &st, &h),
                 -EEXIST);
    CHECK(h == NULL);
    CHECK_AUDITED(fs_create(&fs, &alice, top, "o.txt", 0600, O_RDWR | O_CREAT, &st, &h), 0,
                  "open", ino);
    REQUIRE(h);
    CHECK_EQ_INT(st.st_ino, ino);
    CHECK_EQ_INT(st.st_size, 5);
    fs_handle_close(&fs, h);
    fs_inode_forget(&fs, ino, 1);

    /* the kernel's entry, as a lookup gives it (fs_ops.c): a job may
     * still hold the inode when the handle goes */
    struct fs_inode *entry = fs_inode_get(&fs, ino, v->folders[0].id, S_IFREG, FS_REF_LOOKUP);
    REQUIRE(entry);
    h = NULL;
    CHECK_AUDITED(fs_open(&fs, &alice, ino, O_RDONLY, &h), 0, "open", ino);
    REQUIRE(h);
    uint8_t buf[16];
    size_t got = 0;
    memset(buf, 0xaa, sizeof buf);
    CHECK_EQ_INT(fs_handle_read(&fs, &alice, h, ino, 0, sizeof buf, buf, &got), 0);
    CHECK(got == 5 && memcmp(buf, "hello", 5) == 0);
    /* nothing past got is written: op_read wipes only got bytes */
    for (size_t i = got; i < sizeof buf; i++)
        CHECK(buf[i] == 0xaa);
    CHECK_EQ_INT(fs_handle_write(&fs, &alice, h, ino, 0, "x", 1), -EBADF);
    /* the folder withdrawn while the file is open */
    uint32_t rights = v->folders[0].rights;
    v->folders[0].rights = 0;
    CHECK_AUDITED(fs_handle_read(&fs, &alice, h, ino, 0, sizeof buf, buf, &got), -EACCES, "read",
                  ino);
    v->folders[0].rights = RIGHT_READ;
    CHECK_NOT_AUDITED(fs_handle_read(&fs, &alice, h, ino, 0, sizeof buf, buf, &got), 0);
    CHECK_EQ_INT(got, 5);
    fs_handle_close(&fs, h);
    h = NULL;
    CHECK_AUDITED(fs_open(&fs, &alice, ino, O_WRONLY, &h), -EACCES, "open", ino);
    CHECK(h == NULL);
    CHECK_EQ_INT(fs_open(&fs, &alice, ino, O_RDONLY, &h), 0);
    if (h)
        fs_handle_close(&fs, h);
    v->folders[0].rights = rights;
    fs_inode_forget(&fs, ino, 1);
    teardown();
}

/* The commit path: bytes written and committed survive the core being
 * stopped and started again and read back the same (the commitment and
 * the chunk record as committed); a chunk record the database operator
 * deletes afterwards is caught at open (EIO, audited as tamper), never
 * read as a hole nor committed on. */
static void test_commit_write_reopen_read(void)
{
    REQUIRE(setup() == 0);
    struct meta_inode f;
    uint8_t *dek = secmem_alloc(DEK_LEN);
    REQUIRE(dek);
    struct fs_new_node nn = { .mode = S_IFREG | 0600, .dek = dek, .op = "create" };
    REQUIRE(fs_make_node(&fs, &alice, top, "data.bin", &nn, &f) == 0);
    struct fs_inode *in = fs_inode_get(&fs, f.ino, f.folder_id, f.mode, FS_REF_OPEN);
    REQUIRE(in);
    CHECK_EQ_INT(fs_data_attach(&fs, in, dek), 0);
    secmem_free(dek, DEK_LEN);
    char msg[5000];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (char)('a' + i % 23);
    CHECK_EQ_INT(fs_data_write(&fs, in, 0, msg, sizeof msg), 0);
    CHECK_EQ_INT(fs_data_flush(&fs, in), 0);
    fs_inode_put(&fs, in, FS_REF_OPEN, 1);
    struct meta_inode mi;
    REQUIRE(meta_inode_get(v->meta, f.ino, &mi) == 0);
    CHECK_EQ_INT(mi.size, sizeof msg);
    struct chunk_ref ref;
    CHECK_EQ_INT(meta_chunk_get(v->meta, f.ino, 0, &ref), 0);
    teardown();

    /* started again: the bytes come back from the stores */
    REQUIRE(setup() == 0);
    in = fs_inode_get(&fs, f.ino, f.folder_id, f.mode, FS_REF_OPEN);
    REQUIRE(in);
    CHECK_EQ_INT(fs_data_attach(&fs, in, NULL), 0);
    uint8_t back[6000];
    size_t got = 0;
    memset(back, 0xaa, sizeof back);
    CHECK_EQ_INT(fs_data_read(&fs, in, 0, sizeof back, back, &got), 0);
    CHECK_EQ_INT(got, sizeof msg);
    CHECK_MEM(back, msg, sizeof msg);
    size_t past = 0;   /* nothing past got is written: op_read wipes only got bytes */
    for (size_t i = got; i < sizeof back; i++)
        past += back[i] != 0xaa;
    CHECK_EQ_INT(past, 0);
    fs_inode_put(&fs, in, FS_REF_OPEN, 1);
    teardown();

    /* the chunk record deleted behind the mount's back */
    REQUIRE(meta_begin(v->meta) == 0);
    REQUIRE(meta_chunk_truncate(v->meta, f.ino, 0) == 0);
    REQUIRE(meta_commit(v->meta) == 0);
    int tampers = count_events("tamper");
    REQUIRE(setup() == 0);
    in = fs_inode_get(&fs, f.ino, f.folder_id, f.mode, FS_REF_OPEN);
    REQUIRE(in);
    /* the file's commitment covers one record, the metadata has none:
     * tampering, refused at open (so nothing is read or committed on it) */
    CHECK_EQ_INT(fs_data_attach(&fs, in, NULL), -EIO);
    CHECK_EQ_INT(count_events("tamper"), tampers + 1);
    CHECK_EQ_INT(fs_data_attach(&fs, in, NULL), -EIO);
    fs_inode_put(&fs, in, FS_REF_OPEN, 1);
    teardown();
}

/* A new file of alice's in the folder, one byte written, its handle open:
 * its inode, 0 on failure. */
static uint64_t create_written(const char *name, struct fs_handle **h)
{
    struct stat st;
    *h = NULL;
    if (fs_create(&fs, &alice, top, name, 0600, O_WRONLY | O_CREAT | O_EXCL, &st, h) != 0 ||
        !*h || fs_handle_write(&fs, &alice, *h, st.st_ino, 0, "x", 1) != 0)
        return 0;
    return st.st_ino;
}

/* Write an inode row through the vault's handle, as any mount's
 * transaction does (the row hook sees it). */
static int row_write(const struct meta_inode *row)
{
    pthread_mutex_lock(&fs.meta_lock);
    int r = meta_begin(fs.v->meta);
    if (r == 0)
        r = meta_inode_update(fs.v->meta, row);
    if (r == 0)
        r = meta_commit(fs.v->meta);
    else
        meta_rollback(fs.v->meta);
    pthread_mutex_unlock(&fs.meta_lock);
    return r;
}

/* getattr and a kept setattr of a file this mount has just created take the
 * row its create committed from memory, as getattr does for the directory
 * a create or unlink just changed; any write of that inode's row through
 * the vault's handle (the row hook) makes them read it again. */
static void test_created_row_remembered(void)
{
    REQUIRE(setup() == 0);
    struct fs_handle *h = NULL;
    struct fs_inode *tin = fs_inode_get(&fs, top, v->folders[0].id, S_IFDIR, FS_REF_LOOKUP);
    REQUIRE(tin != NULL);
    uint64_t ino = create_written("remembered", &h);
    REQUIRE(ino != 0 && h && h->in);
    struct meta_inode mi, row;
    memset(&mi, 0, sizeof mi);
    CHECK_EQ_INT(fs_row_recall(&fs, h->in, &mi), 1);
    REQUIRE(fs_inode_row(&fs, ino, &row) == 0);
    CHECK_EQ_INT(mi.ino, row.ino);
    CHECK_EQ_INT(mi.mode, row.mode);
    CHECK_EQ_INT(mi.uid, row.uid);
    CHECK_EQ_INT(mi.nlink, row.nlink);
    CHECK_EQ_INT(mi.ctime_ns, row.ctime_ns);
    CHECK_EQ_INT(mi.commitment_len, row.commitment_len);
    CHECK_EQ_INT(memcmp(mi.commitment, row.commitment, row.commitment_len), 0);
    CHECK_EQ_INT(memcmp(mi.wrapped_dek, row.wrapped_dek, row.wrapped_dek_len), 0);
    /* a kept chmod writes no row: still remembered, and shown */
    struct stat a, st;
    memset(&a, 0, sizeof a);
    a.st_mode = 0640;
    CHECK_EQ_INT(fs_setattr(&fs, &alice, ino, &a, FS_SET_MODE, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0640);
    CHECK_EQ_INT(fs_row_recall(&fs, h->in, &mi), 1);
    /* the row written through the handle (its link count, as a link does) */
    row.nlink = 2;
    CHECK_EQ_INT(row_write(&row), 0);
    CHECK_EQ_INT(fs_row_recall(&fs, h->in, &mi), 0);
    CHECK_EQ_INT(fs_getattr(&fs, ino, &st), 0);
    CHECK_EQ_INT(st.st_nlink, 2);                /* read again */
    CHECK_EQ_INT(st.st_mode & 07777, 0640);      /* the kept chmod still over it */
    memset(&a, 0, sizeof a);
    a.st_mode = 0604;
    CHECK_EQ_INT(fs_setattr(&fs, &alice, ino, &a, FS_SET_MODE, &st), 0);
    CHECK_EQ_INT(st.st_nlink, 2);                /* the kept setattr read it too */
    CHECK_EQ_INT(st.st_mode & 07777, 0604);
    fs_handle_finish(&fs, &alice, h, ino);
    fs_handle_close(&fs, h);
    /* the folder's row as the create, then the unlink, wrote it */
    struct meta_inode dm, drow;
    CHECK_EQ_INT(fs_row_recall(&fs, tin, &dm), 1);
    REQUIRE(fs_inode_row(&fs, top, &drow) == 0);
    CHECK_EQ_INT(dm.mtime_ns, drow.mtime_ns);
    CHECK_EQ_INT(dm.nlink, drow.nlink);
    CHECK_EQ_INT(fs_unlink(&fs, &alice, top, "remembered", 0), 0);
    CHECK_EQ_INT(fs_row_recall(&fs, tin, &dm), 1);
    REQUIRE(fs_inode_row(&fs, top, &drow) == 0);
    CHECK_EQ_INT(dm.mtime_ns, drow.mtime_ns);
    CHECK_EQ_INT(dm.ctime_ns, drow.ctime_ns);
    CHECK_EQ_INT(fs_getattr(&fs, top, &st), 0);
    CHECK_EQ_INT((int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec, drow.mtime_ns);
    /* the folder's row written through the handle: read again */
    uint32_t was = drow.mode;
    drow.mode = S_IFDIR | 0750;
    CHECK_EQ_INT(row_write(&drow), 0);
    CHECK_EQ_INT(fs_getattr(&fs, top, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0750);
    drow.mode = was;
    CHECK_EQ_INT(row_write(&drow), 0);
    fs_inode_forget(&fs, top, 1);
    teardown();
}

/* chmod, chown and utimens of a file this mount created, while a handle
 * writes it and before it was ever saved, ride in the file's first commit
 * (fs_data.c, "deferred attributes"): shown at once, in the row only
 * together with the data; a later row change is never overwritten by them;
 * once saved, a change goes to the row at once.  Their events are folded:
 * one per run of one caller's changes, with every field, appended before
 * another caller's or a refused change's event, and at the latest at the
 * close, before the write summary. */
static void test_deferred_attributes(void)
{
    REQUIRE(setup() == 0);
    struct stat st, a;
    struct meta_inode mi;
    struct fs_handle *h = NULL;
    REQUIRE(fs_create(&fs, &alice, top, "tarred", 0600, O_WRONLY | O_CREAT | O_EXCL, &st,
                      &h) == 0);
    REQUIRE(h && h->in);
    uint64_t ino = st.st_ino;
    CHECK_EQ_INT(fs_handle_write(&fs, &alice, h, ino, 0, "hello", 5), 0);
    memset(&a, 0, sizeof a);
    a.st_mtim.tv_sec = 1000000;
    CHECK_NOT_AUDITED(fs_setattr(&fs, &alice, ino, &a, FS_SET_MTIME, &st), 0);
    CHECK_EQ_INT(st.st_mtim.tv_sec, 1000000);
    gid_t groups[] = { 777 };
    struct fs_caller member = alice;   /* the same process, with a group */
    member.groups = groups;
    member.ngroups = 1;
    a.st_gid = 777;
    CHECK_NOT_AUDITED(fs_setattr(&fs, &member, ino, &a, FS_SET_GID, &st), 0);
    CHECK_EQ_INT(st.st_gid, 777);
    /* another process of the same user: the first one's event goes first,
     * with both of its changes */
    struct fs_caller twin = alice;
    twin.pid = 999;
    a.st_mode = 0640;
    int mark = spool_lines();
    CHECK_EQ_INT(fs_setattr(&fs, &twin, ino, &a, FS_SET_MODE, &st), 0);
    struct seq q = events_in_order_since(mark);
    REQUIRE(q.n == 1);
    CHECK(strcmp(q.ev[0].op, "setattr") == 0 && strcmp(q.ev[0].result, "ok") == 0);
    CHECK_EQ_INT(q.ev[0].file, ino);
    CHECK_EQ_INT(q.ev[0].pid, alice.pid);
    CHECK(strcmp(q.ev[0].owner, "1000:777") == 0);
    CHECK(strncmp(q.ev[0].mtime, "1970-01-12T13:46:40", 19) == 0);
    CHECK(q.ev[0].mode[0] == '\0');
    /* refused as on the row path, audited at once, after the twin's kept
     * chmod; nothing kept */
    a.st_uid = 4242;
    mark = spool_lines();
    CHECK_AUDITED(fs_setattr(&fs, &alice, ino, &a, FS_SET_UID, &st), -EPERM, "chown", ino);
    q = events_in_order_since(mark);
    REQUIRE(q.n == 2);
    CHECK(strcmp(q.ev[0].op, "chmod") == 0 && strcmp(q.ev[0].mode, "0640") == 0);
    CHECK_EQ_INT(q.ev[0].pid, 999);
    CHECK(strcmp(q.ev[1].op, "chown") == 0 && strcmp(q.ev[1].result, "denied") == 0);
    a.st_mode = 0644;
    CHECK_NOT_AUDITED(fs_setattr(&fs, &alice, ino, &a, FS_SET_MODE, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0644);
    CHECK_EQ_INT(st.st_size, 5);
    /* shown at once ... */
    CHECK_EQ_INT(fs_getattr(&fs, ino, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0644);
    CHECK_EQ_INT(st.st_uid, alice.uid);
    CHECK_EQ_INT(st.st_gid, 777);
    CHECK_EQ_INT(st.st_mtim.tv_sec, 1000000);
    /* ... and not in the row, whose data is not saved either */
    REQUIRE(meta_inode_get(v->meta, ino, &mi) == 0);
    CHECK_EQ_INT(mi.mode & 07777, 0600);
    CHECK_EQ_INT(mi.gid, alice.gid);
    CHECK_EQ_INT(mi.size, 0);
    /* the close appends the pending event, then the write summary; the
     * release's commit writes the changes with the data */
    mark = spool_lines();
    CHECK_EQ_INT(fs_handle_flush(&fs, &alice, h, ino), 0);
    q = events_in_order_since(mark);
    REQUIRE(q.n == 2);
    CHECK(strcmp(q.ev[0].op, "chmod") == 0 && strcmp(q.ev[0].mode, "0644") == 0);
    CHECK_EQ_INT(q.ev[0].file, ino);
    CHECK_EQ_INT(q.ev[0].pid, alice.pid);
    CHECK(strcmp(q.ev[1].op, "write") == 0);
    mark = spool_lines();
    fs_handle_finish(&fs, &alice, h, ino);
    fs_handle_close(&fs, h);
    fs_data_quiesce(&fs);
    REQUIRE(meta_inode_get(v->meta, ino, &mi) == 0);
    CHECK_EQ_INT(mi.mode, S_IFREG | 0644);
    CHECK_EQ_INT(mi.uid, alice.uid);
    CHECK_EQ_INT(mi.gid, 777);
    CHECK_EQ_INT(mi.mtime_ns, 1000000LL * 1000000000LL);
    CHECK_EQ_INT(mi.size, 5);
    CHECK_EQ_INT(events_since(mark, "chmod", NULL), 0);   /* once only */

    /* saved: a handle writing it again changes the row at once */
    h = NULL;
    REQUIRE(fs_open(&fs, &alice, ino, O_WRONLY, &h) == 0);
    a.st_mode = 0640;
    CHECK_AUDITED(fs_setattr(&fs, &alice, ino, &a, FS_SET_MODE, &st), 0, "chmod", ino);
    REQUIRE(meta_inode_get(v->meta, ino, &mi) == 0);
    CHECK_EQ_INT(mi.mode & 07777, 0640);
    fs_handle_finish(&fs, &alice, h, ino);
    fs_handle_close(&fs, h);
    fs_inode_forget(&fs, ino, 1);

    /* kept, then released (its commit queued), then a chmod without a
     * writer, which takes the row path: it must come after the kept one,
     * never under it */
    uint64_t ino2 = create_written("ordered", &h);
    REQUIRE(ino2);
    a.st_mode = 0640;
    CHECK_EQ_INT(fs_setattr(&fs, &alice, ino2, &a, FS_SET_MODE, &st), 0);
    mark = spool_lines();   /* a release without a flush still appends it */
    fs_handle_finish(&fs, &alice, h, ino2);
    CHECK_EQ_INT(events_since(mark, "chmod", NULL), 1);
    fs_handle_close(&fs, h);
    a.st_mode = 0604;
    CHECK_AUDITED(fs_setattr(&fs, &alice, ino2, &a, FS_SET_MODE, &st), 0, "chmod", ino2);
    fs_data_quiesce(&fs);
    REQUIRE(meta_inode_get(v->meta, ino2, &mi) == 0);
    CHECK_EQ_INT(mi.mode & 07777, 0604);
    CHECK_EQ_INT(mi.size, 1);
    CHECK_EQ_INT(fs_getattr(&fs, ino2, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0604);
    fs_inode_forget(&fs, ino2, 1);

    /* an fsync before the close commits the kept change: its event is
     * appended before that commit, and not again at the close */
    uint64_t ino3 = create_written("synced", &h);
    REQUIRE(ino3);
    a.st_mode = 0604;
    CHECK_NOT_AUDITED(fs_setattr(&fs, &alice, ino3, &a, FS_SET_MODE, &st), 0);
    mark = spool_lines();
    CHECK_EQ_INT(fs_handle_fsync(&fs, h), 0);
    CHECK_EQ_INT(events_since(mark, "chmod", NULL), 1);
    REQUIRE(meta_inode_get(v->meta, ino3, &mi) == 0);
    CHECK_EQ_INT(mi.mode & 07777, 0604);
    mark = spool_lines();
    CHECK_EQ_INT(fs_handle_flush(&fs, &alice, h, ino3), 0);
    fs_handle_finish(&fs, &alice, h, ino3);
    fs_handle_close(&fs, h);
    CHECK_EQ_INT(events_since(mark, "chmod", NULL), 0);
    fs_inode_forget(&fs, ino3, 1);
    teardown();
}

#define CASE(fn) { #fn, fn }
static const struct {
    const char *name;
    void (*fn)(void);
} cases[] = {
    CASE(test_mkdir_create_and_errors),
    CASE(test_unlink_rmdir),
    CASE(test_rename_and_link),
    CASE(test_setattr_and_xattrs),
    CASE(test_kill_suidgid),
    CASE(test_read_only_grant_is_refused_and_audited),
    CASE(test_open_files),
    CASE(test_deferred_attributes),
    CASE(test_created_row_remembered),
    CASE(test_commit_write_reopen_read),   /* last: it alters the vault */
};

int main(void)
{
    /* one vault for the whole run; each case starts the core on it */
    if (fs_test_vault_make(dir, "ns", &v) == 0)
        top = v->folders[0].root_ino;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        tap_run(cases[i].name, cases[i].fn);
    fs_test_vault_remove(dir, v);
    return tap_done();
}
