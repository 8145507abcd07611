#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "crypto.h"
#include "error.h"
#include "tap.h"

#define VAULT "0123456789abcdef0123456789abcdef"

static char scratch[64];
static EVP_PKEY *alice_key, *mallory_key;

static void make_scratch(void)
{
    snprintf(scratch, sizeof scratch, "/tmp/pactfs-audit-XXXXXX");
    if (!mkdtemp(scratch))
        abort();
}

static void remove_scratch(void)
{
    char cmd[128];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    if (system(cmd) != 0)
        fprintf(stderr, "# cannot remove %s\n", scratch);
}

static void spool_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", scratch, name);
}

/* ---------- reading a spool back ---------- */

#define MAX_LINES 4096
struct lines {
    char *l[MAX_LINES];
    size_t n;
};

static void lines_read(const char *path, struct lines *ls)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;

    ls->n = 0;
    if (!f)
        return;
    while ((got = getline(&line, &cap, f)) > 0 && ls->n < MAX_LINES) {
        if (line[got - 1] == '\n')
            line[got - 1] = '\0';
        ls->l[ls->n++] = strdup(line);
    }
    free(line);
    fclose(f);
}

static void lines_write(const char *path, const struct lines *ls, int drop_last_newline)
{
    FILE *f = fopen(path, "w");

    if (!f)
        abort();
    for (size_t i = 0; i < ls->n; i++)
        fprintf(f, "%s%s", ls->l[i], drop_last_newline && i + 1 == ls->n ? "" : "\n");
    fclose(f);
}

static void lines_free(struct lines *ls)
{
    for (size_t i = 0; i < ls->n; i++)
        free(ls->l[i]);
    ls->n = 0;
}

static void lines_copy(struct lines *dst, const struct lines *src)
{
    for (size_t i = 0; i < src->n; i++)
        dst->l[i] = strdup(src->l[i]);
    dst->n = src->n;
}

static void lines_delete(struct lines *ls, size_t idx)
{
    free(ls->l[idx]);
    memmove(&ls->l[idx], &ls->l[idx + 1], (ls->n - idx - 1) * sizeof ls->l[0]);
    ls->n--;
}

static void lines_insert(struct lines *ls, size_t idx, const char *text)
{
    memmove(&ls->l[idx + 1], &ls->l[idx], (ls->n - idx) * sizeof ls->l[0]);
    ls->l[idx] = strdup(text);
    ls->n++;
}

static const char *field_str(json_object *o, const char *k)
{
    json_object *v;

    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static int64_t field_int(json_object *o, const char *k)
{
    json_object *v;

    return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : -1;
}

static EVP_PKEY *key_of_alice(void *arg, const char *account)
{
    (void)arg;
    return strcmp(account, "alice") == 0 ? alice_key : NULL;
}

static EVP_PKEY *wrong_key(void *arg, const char *account)
{
    (void)arg;
    (void)account;
    return mallory_key;
}

static int verify_msg_has(const char *path, EVP_PKEY *(*kf)(void *, const char *),
                          const char *needle)
{
    uint64_t n;
    int rc = audit_verify(path, kf, NULL, &n);

    if (rc != -EBADMSG || !strstr(pfs_err_msg(), needle)) {
        printf("# verify rc %d, message: %s (wanted \"%s\")\n", rc, pfs_err_msg(), needle);
        return 0;
    }
    return 1;
}

/* ---------- cases ---------- */

static void test_events_are_json_with_every_field(void)
{
    struct audit *a;
    struct audit_ctx who = { .uid = 1234, .pid = getpid() };
    char path[128], comm[64] = "", host[256] = "";
    struct lines ls;
    uint64_t n;
    FILE *f;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE(audit_open(path, VAULT, "alice", NULL, &a) == 0);
    CHECK(audit_event(a, &who, "create", "/Sales/a \"b\"\nc.pdf", 0, 0) == 0);
    CHECK(audit_event(a, &who, "open", "/HR/x", -EACCES, 0) == 0);
    CHECK(audit_event(a, NULL, "write", "/Sales/y", -ENOENT, 123456789012ULL) == 0);
    audit_close(a);

    f = fopen("/proc/self/comm", "r");
    if (f) {
        if (fgets(comm, sizeof comm, f))
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
    }
    gethostname(host, sizeof host - 1);
    lines_read(path, &ls);
    REQUIRE(ls.n == 3);   /* no signer: no checkpoint at close */
    for (size_t i = 0; i < ls.n; i++) {
        json_object *o = json_tokener_parse(ls.l[i]);

        REQUIRE(o);
        CHECK_EQ_INT(field_int(o, "seq"), (int64_t)i + 1);
        CHECK(strcmp(field_str(o, "vault"), VAULT) == 0);
        CHECK(strcmp(field_str(o, "account"), "alice") == 0);
        CHECK(strcmp(field_str(o, "host"), host) == 0);
        CHECK(strcmp(field_str(o, "process"), comm) == 0);
        CHECK_EQ_INT(field_int(o, "pid"), getpid());
        CHECK(strlen(field_str(o, "time")) == 30 && field_str(o, "time")[29] == 'Z');
        CHECK(strlen(field_str(o, "prev")) == 64);
        CHECK_EQ_INT(field_int(o, "cp"), 0);   /* no checkpoint yet */
        if (i == 0) {
            CHECK(strcmp(field_str(o, "prev"), "0000000000000000000000000000000000000000000000000000000000000000") == 0);
            CHECK(strcmp(field_str(o, "path"), "/Sales/a \"b\"\nc.pdf") == 0);
            CHECK(strcmp(field_str(o, "result"), "ok") == 0);
            CHECK_EQ_INT(field_int(o, "uid"), 1234);
            CHECK(strcmp(field_str(o, "op"), "create") == 0);
        } else if (i == 1) {
            CHECK(strcmp(field_str(o, "result"), "denied") == 0);
        } else {
            uint8_t h[SHA256_LEN];
            char hex[65];

            CHECK(strcmp(field_str(o, "result"), "ENOENT") == 0);
            CHECK_EQ_INT(field_int(o, "bytes"), 123456789012LL);
            CHECK_EQ_INT(field_int(o, "uid"), getuid());
            sha256(ls.l[1], strlen(ls.l[1]), h);
            hex_encode(h, sizeof h, hex);
            CHECK(strcmp(field_str(o, "prev"), hex) == 0);
        }
        json_object_put(o);
    }
    CHECK(audit_verify(path, NULL, NULL, &n) == 0);
    CHECK_EQ_INT(n, 3);
    lines_free(&ls);
    remove_scratch();
}

/* A spool of 10 events with checkpoints after events 3, 6, 9 and at close. */
static void write_signed_spool(const char *path)
{
    struct audit *a;
    char p[32];

    if (audit_open(path, VAULT, "alice", alice_key, &a) != 0)
        abort();
    audit_set_seal_every(a, 3);
    for (int i = 0; i < 10; i++) {
        snprintf(p, sizeof p, "/Sales/f%d", i);
        if (audit_event(a, NULL, "open", p, 0, (uint64_t)i) != 0)
            abort();
    }
    audit_close(a);
}

static void test_signed_chain_verifies(void)
{
    char path[128];
    struct lines ls;
    uint64_t n = 0;
    int checkpoints = 0;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    write_signed_spool(path);
    lines_read(path, &ls);
    CHECK_EQ_INT(ls.n, 14);
    for (size_t i = 0; i < ls.n; i++) {
        json_object *o = json_tokener_parse(ls.l[i]);

        REQUIRE(o);
        if (strcmp(field_str(o, "op"), "checkpoint") == 0) {
            checkpoints++;
            CHECK(strcmp(field_str(o, "signed_hash"), field_str(o, "prev")) == 0);
            CHECK(strcmp(field_str(o, "account"), "alice") == 0);
            CHECK(field_str(o, "sig") && strlen(field_str(o, "sig")) == 768);
        }
        json_object_put(o);
    }
    CHECK_EQ_INT(checkpoints, 4);
    CHECK(ls.l[3] && strstr(ls.l[3], "\"checkpoint\""));
    /* cp names the last checkpoint line before each line */
    {
        static const int64_t want_cp[14] = { 0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12 };

        for (size_t i = 0; i < ls.n && i < 14; i++) {
            json_object *o = json_tokener_parse(ls.l[i]);

            REQUIRE(o);
            CHECK_EQ_INT(field_int(o, "cp"), want_cp[i]);
            json_object_put(o);
        }
    }
    CHECK(audit_verify(path, key_of_alice, NULL, &n) == 0);
    CHECK_EQ_INT(n, 14);
    /* A key that did not sign, or no key at all, fails at the first checkpoint. */
    CHECK(verify_msg_has(path, wrong_key, "line 4:"));
    CHECK(verify_msg_has(path, wrong_key, "signature does not verify"));
    /* Without keys only the chain is checked. */
    CHECK(audit_verify(path, NULL, NULL, &n) == 0);
    lines_free(&ls);
    remove_scratch();
}

static EVP_PKEY *nobody(void *arg, const char *account)
{
    (void)arg;
    (void)account;
    return NULL;
}

static void test_unknown_signer_fails(void)
{
    char path[128];

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    write_signed_spool(path);
    CHECK(verify_msg_has(path, nobody, "unknown account \"alice\""));
    remove_scratch();
}

/* Recompute seq, prev, signed_hash (and cp when fix_cp) of every line after
 * an edit, as a forger without the signing key would. */
static void rechain_cp(struct lines *ls, int fix_cp)
{
    char prev[65];
    int64_t cp = 0;

    memset(prev, '0', 64);
    prev[64] = '\0';
    for (size_t i = 0; i < ls->n; i++) {
        json_object *o = json_tokener_parse(ls->l[i]);
        uint8_t h[SHA256_LEN];

        json_object_object_add(o, "seq", json_object_new_int64((int64_t)i + 1));
        if (fix_cp)
            json_object_object_add(o, "cp", json_object_new_int64(cp));
        if (strcmp(field_str(o, "op"), "checkpoint") == 0)
            cp = (int64_t)i + 1;
        json_object_object_add(o, "prev", json_object_new_string(prev));
        if (json_object_object_get_ex(o, "signed_hash", NULL))
            json_object_object_add(o, "signed_hash", json_object_new_string(prev));
        free(ls->l[i]);
        ls->l[i] = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                         JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
        sha256(ls->l[i], strlen(ls->l[i]), h);
        hex_encode(h, sizeof h, prev);
    }
}

static void rechain(struct lines *ls)
{
    rechain_cp(ls, 1);
}

static void replace_once(char **line, const char *from, const char *to)
{
    char *at = strstr(*line, from);
    char *out;

    if (!at)
        abort();
    if (asprintf(&out, "%.*s%s%s", (int)(at - *line), *line, to, at + strlen(from)) < 0)
        abort();
    free(*line);
    *line = out;
}

static void test_tampering_detected(void)
{
    char good[128], bad[128];
    struct lines orig, ls;
    uint64_t n;

    make_scratch();
    spool_path(good, sizeof good, "audit.log");
    spool_path(bad, sizeof bad, "tampered.log");
    write_signed_spool(good);
    lines_read(good, &orig);
    REQUIRE(orig.n == 14);

    /* edit line 2: the next line's prev no longer matches */
    lines_copy(&ls, &orig);
    replace_once(&ls.l[1], "/Sales/f1", "/Sales/f7");
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, key_of_alice, "line 3:"));
    lines_free(&ls);

    /* edit a checkpoint's signature */
    lines_copy(&ls, &orig);
    replace_once(&ls.l[3], "\"sig\":\"", "\"sig\":\"00");
    ls.l[3][strlen(ls.l[3]) - 4] = '"';
    ls.l[3][strlen(ls.l[3]) - 3] = '}';
    ls.l[3][strlen(ls.l[3]) - 2] = '\0';
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, key_of_alice, "line 4:"));
    lines_free(&ls);

    /* delete line 5 */
    lines_copy(&ls, &orig);
    lines_delete(&ls, 4);
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, key_of_alice, "line 5:"));
    lines_free(&ls);

    /* insert a copy of line 2 after it */
    lines_copy(&ls, &orig);
    lines_insert(&ls, 2, orig.l[1]);
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, key_of_alice, "line 3:"));
    lines_free(&ls);

    /* reorder lines 6 and 7 */
    lines_copy(&ls, &orig);
    {
        char *t = ls.l[5];

        ls.l[5] = ls.l[6];
        ls.l[6] = t;
    }
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, key_of_alice, "line 6:"));
    lines_free(&ls);

    /* cut the two events just before the last checkpoint, keep the checkpoint */
    lines_copy(&ls, &orig);
    lines_delete(&ls, 11);
    lines_delete(&ls, 11);
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, key_of_alice, "line 12:"));
    lines_free(&ls);

    /* truncate in the middle of the last line */
    lines_copy(&ls, &orig);
    ls.l[13][20] = '\0';
    lines_write(bad, &ls, 1);
    CHECK(verify_msg_has(bad, key_of_alice, "line 14: incomplete"));
    lines_free(&ls);

    /* delete line 2 and recompute every seq/prev after it: the chain is
     * consistent again, only the checkpoint signature betrays it */
    lines_copy(&ls, &orig);
    lines_delete(&ls, 1);
    rechain(&ls);
    lines_write(bad, &ls, 0);
    CHECK(audit_verify(bad, NULL, NULL, &n) == 0);
    CHECK(verify_msg_has(bad, key_of_alice, "line 3:"));
    lines_free(&ls);

    /* Documented limit: cutting whole lines off the end leaves a valid,
     * shorter chain; only the event count (or the receiver's copy) shows it. */
    lines_copy(&ls, &orig);
    lines_delete(&ls, 13);
    lines_delete(&ls, 12);
    lines_write(bad, &ls, 0);
    CHECK(audit_verify(bad, key_of_alice, NULL, &n) == 0);
    CHECK_EQ_INT(n, 12);
    lines_free(&ls);

    lines_free(&orig);
    remove_scratch();
}

/* ---------- cp and the unsigned tail ---------- */

static int64_t line_int(const struct lines *ls, size_t idx, const char *key)
{
    json_object *o = idx < ls->n ? json_tokener_parse(ls->l[idx]) : NULL;
    int64_t v = o ? field_int(o, key) : -2;

    json_object_put(o);
    return v;
}

static int line_is_checkpoint(const struct lines *ls, size_t idx)
{
    return idx < ls->n && strstr(ls->l[idx], "\"op\":\"checkpoint\"") != NULL;
}

static void strip_checkpoints(struct lines *ls)
{
    for (size_t i = ls->n; i-- > 0;)
        if (line_is_checkpoint(ls, i))
            lines_delete(ls, i);
}

static void write_events(const char *path, const char *account, EVP_PKEY *key, int count)
{
    struct audit *a;

    if (audit_open(path, VAULT, account, key, &a) != 0)
        abort();
    for (int i = 0; i < count; i++)
        if (audit_event(a, NULL, "open", "/Sales/f", 0, (uint64_t)i) != 0)
            abort();
    audit_close(a);
}

/* The fuzzer's finding: strip every checkpoint, edit an event, renumber and
 * re-chain with consistent cp fields.  No key is needed for that, so only
 * the length of the unsigned tail can betray it. */
static void test_stripped_checkpoints_detected(void)
{
    const int events = (int)(AUDIT_SEAL_EVERY + AUDIT_UNSIGNED_SLACK) + 20;
    char good[128], bad[128], want[128];
    struct lines orig, ls;
    uint64_t n;

    make_scratch();
    spool_path(good, sizeof good, "audit.log");
    spool_path(bad, sizeof bad, "forged.log");
    write_events(good, "alice", alice_key, events);
    lines_read(good, &orig);
    REQUIRE(orig.n == (size_t)events + 2);   /* one periodic, one at close */
    CHECK(line_is_checkpoint(&orig, AUDIT_SEAL_EVERY));
    CHECK(line_is_checkpoint(&orig, orig.n - 1));
    CHECK(audit_verify(good, key_of_alice, NULL, &n) == 0);

    lines_copy(&ls, &orig);
    strip_checkpoints(&ls);
    REQUIRE(ls.n == (size_t)events);
    replace_once(&ls.l[7], "\"bytes\":7", "\"bytes\":9999");
    rechain(&ls);
    lines_write(bad, &ls, 0);
    CHECK(audit_verify(bad, NULL, NULL, &n) == 0);   /* the chain alone is fooled */
    CHECK_EQ_INT(n, events);
    snprintf(want, sizeof want, "line %d: %d events after the last signed checkpoint "
             "(none in the spool)", events, events);
    CHECK(verify_msg_has(bad, key_of_alice, want));
    lines_free(&ls);

    /* Keeping the first checkpoint and forging after it leaves a tail that
     * is still too long. */
    lines_copy(&ls, &orig);
    lines_delete(&ls, ls.n - 1);
    replace_once(&ls.l[AUDIT_SEAL_EVERY + 3], "\"bytes\":", "\"bytes\":1");
    rechain(&ls);
    lines_write(bad, &ls, 0);
    CHECK(audit_verify(bad, NULL, NULL, &n) == 0);
    CHECK(audit_verify(bad, key_of_alice, NULL, &n) == 0);   /* 20 after line 1025: allowed */
    lines_free(&ls);

    /* Stripping without fixing cp is caught by the chain alone. */
    lines_copy(&ls, &orig);
    strip_checkpoints(&ls);
    rechain_cp(&ls, 0);
    lines_write(bad, &ls, 0);
    snprintf(want, sizeof want, "line %u: cp %u where the last checkpoint before this line is 0",
             AUDIT_SEAL_EVERY + 1, AUDIT_SEAL_EVERY + 1);
    CHECK(verify_msg_has(bad, NULL, want));
    lines_free(&ls);

    /* Documented limit: a spool shorter than the allowed tail can be
     * rewritten whole without a key (only the receiver's copy shows it). */
    write_signed_spool(good);      /* appends 10 events and 4 checkpoints */
    lines_free(&orig);
    lines_read(good, &orig);
    lines_copy(&ls, &orig);
    while (ls.n > 14)
        lines_delete(&ls, 0);
    strip_checkpoints(&ls);
    rechain(&ls);
    lines_write(bad, &ls, 0);
    CHECK(audit_verify(bad, key_of_alice, NULL, &n) == 0);
    CHECK_EQ_INT(n, 10);
    lines_free(&ls);
    lines_free(&orig);
    remove_scratch();
}

static void test_cp_mismatch_detected(void)
{
    char good[128], bad[128];
    struct lines orig, ls;

    make_scratch();
    spool_path(good, sizeof good, "audit.log");
    spool_path(bad, sizeof bad, "tampered.log");
    write_signed_spool(good);
    lines_read(good, &orig);
    REQUIRE(orig.n == 14);

    /* an event claiming no checkpoint before it */
    lines_copy(&ls, &orig);
    replace_once(&ls.l[5], "\"cp\":4,", "\"cp\":0,");
    rechain_cp(&ls, 0);
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, NULL, "line 6: cp 0 where the last checkpoint before this line "
                         "is 4"));
    lines_free(&ls);

    /* a checkpoint removed (line 8), chain recomputed, cp left alone */
    lines_copy(&ls, &orig);
    lines_delete(&ls, 7);
    rechain_cp(&ls, 0);
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, NULL, "line 8: cp 8 where the last checkpoint before this line "
                         "is 4"));
    lines_free(&ls);

    /* a line without cp (an older format) is refused, by verify and open */
    lines_copy(&ls, &orig);
    replace_once(&ls.l[0], "\"cp\":0,", "");
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, NULL, "line 1: lacks cp"));
    lines_free(&ls);
    lines_copy(&ls, &orig);
    replace_once(&ls.l[12], "\"cp\":12,", "");
    lines_delete(&ls, 13);             /* end on the edited line */
    lines_write(bad, &ls, 0);
    {
        struct audit *a = NULL;

        CHECK_EQ_INT(audit_open(bad, VAULT, "alice", NULL, &a), -EBADMSG);
        CHECK(a == NULL);
        CHECK(strstr(pfs_err_msg(), "no \"cp\" field") != NULL);
    }
    lines_free(&ls);
    lines_free(&orig);
    remove_scratch();
}

/* A signing writer counts every event since the file's last checkpoint,
 * including those another handle appended (learnt by re-reading the tail). */
static void test_checkpoint_cadence_is_per_file(void)
{
    struct audit *a, *b;
    char path[128];
    struct lines ls;
    uint64_t n;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE(audit_open(path, VAULT, "alice", alice_key, &a) == 0);
    REQUIRE(audit_open(path, VAULT, "admin", NULL, &b) == 0);
    audit_set_seal_every(a, 10);
    for (int round = 0; round < 6; round++) {
        CHECK(audit_event(a, NULL, "open", "/a", 0, 0) == 0);
        for (int i = 0; i < 4; i++)
            CHECK(audit_event(b, NULL, "grant", "/b", 0, 0) == 0);
    }
    audit_close(b);
    audit_close(a);
    lines_read(path, &ls);
    /* a1 b4 a1 b4 a1 = 11 events, then a's checkpoint at seq 12 (counting
     * only its own 3 events it would not have sealed yet) */
    CHECK(line_is_checkpoint(&ls, 11));
    for (size_t i = 0; i < 11; i++)
        CHECK(!line_is_checkpoint(&ls, i));
    CHECK_EQ_INT(line_int(&ls, 12, "cp"), 12);   /* b's next line learnt it */
    CHECK(strstr(ls.l[12], "\"account\":\"admin\"") != NULL);
    CHECK(line_is_checkpoint(&ls, ls.n - 1));
    CHECK(audit_verify(path, key_of_alice, NULL, &n) == 0);
    CHECK_EQ_INT(n, ls.n);
    lines_free(&ls);

    /* closing right after a checkpoint adds no second one */
    REQUIRE(audit_open(path, VAULT, "alice", alice_key, &a) == 0);
    audit_close(a);
    lines_read(path, &ls);
    CHECK_EQ_INT(ls.n, n);
    lines_free(&ls);
    remove_scratch();
}

/* A daemon killed before its closing checkpoint, then a signer-less admin
 * and a new daemon: the spool verifies, and the new daemon seals the old
 * tail as soon as the file's unsigned run reaches AUDIT_SEAL_EVERY. */
static void test_crashed_writer_then_new_writers(void)
{
    const int crashed = 700, admin = 100, later = 400;
    char path[128];
    struct lines ls;
    uint64_t n;
    int status = -1;
    pid_t child;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    fflush(stdout);
    child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        struct audit *a;

        if (audit_open(path, VAULT, "alice", alice_key, &a) != 0)
            _exit(2);
        for (int i = 0; i < crashed; i++)
            if (audit_event(a, NULL, "write", "/Sales/x", 0, 4096) != 0)
                _exit(1);
        _exit(0);        /* killed: no audit_close, no closing checkpoint */
    }
    waitpid(child, &status, 0);
    REQUIRE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(audit_verify(path, key_of_alice, NULL, &n) == 0);
    CHECK_EQ_INT(n, crashed);

    write_events(path, "admin", NULL, admin);
    CHECK(audit_verify(path, key_of_alice, NULL, &n) == 0);
    CHECK_EQ_INT(n, crashed + admin);

    write_events(path, "alice", alice_key, later);
    lines_read(path, &ls);
    REQUIRE(ls.n == (size_t)(crashed + admin + later + 2));
    CHECK(line_is_checkpoint(&ls, AUDIT_SEAL_EVERY));   /* seq 1025 */
    CHECK_EQ_INT(line_int(&ls, AUDIT_SEAL_EVERY, "cp"), 0);
    CHECK_EQ_INT(line_int(&ls, AUDIT_SEAL_EVERY + 1, "cp"), AUDIT_SEAL_EVERY + 1);
    CHECK(line_is_checkpoint(&ls, ls.n - 1));
    CHECK(audit_verify(path, key_of_alice, NULL, &n) == 0);
    CHECK_EQ_INT(n, ls.n);
    lines_free(&ls);
    remove_scratch();
}

/* Signer-less writers alone may leave AUDIT_SEAL_EVERY + AUDIT_UNSIGNED_SLACK
 * events unsigned; one more is refused until a signing writer seals them. */
static void test_unsigned_tail_limit(void)
{
    const int limit = (int)(AUDIT_SEAL_EVERY + AUDIT_UNSIGNED_SLACK);
    char path[128], want[128];
    uint64_t n;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    write_events(path, "admin", NULL, limit);
    CHECK(audit_verify(path, key_of_alice, NULL, &n) == 0);
    CHECK_EQ_INT(n, limit);
    write_events(path, "admin", NULL, 1);
    snprintf(want, sizeof want, "line %d: %d events after the last signed checkpoint",
             limit + 1, limit + 1);
    CHECK(verify_msg_has(path, key_of_alice, want));
    CHECK(audit_verify(path, NULL, NULL, &n) == 0);    /* chain only: fine */
    write_events(path, "alice", alice_key, 0);          /* open + close seals it */
    CHECK(audit_verify(path, key_of_alice, NULL, &n) == 0);
    CHECK_EQ_INT(n, limit + 2);
    remove_scratch();
}

static void test_resume_and_two_handles_one_chain(void)
{
    struct audit *a, *b;
    char path[128];
    struct lines ls;
    uint64_t n;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE(audit_open(path, VAULT, "alice", alice_key, &a) == 0);
    CHECK(audit_event(a, NULL, "mount", "/", 0, 0) == 0);
    REQUIRE(audit_open(path, VAULT, "admin", NULL, &b) == 0);
    for (int i = 0; i < 5; i++) {
        CHECK(audit_event(a, NULL, "open", "/a", 0, 0) == 0);
        CHECK(audit_event(b, NULL, "grant", "/b", 0, 0) == 0);
        CHECK(audit_event(b, NULL, "grant", "/b", 0, 0) == 0);
    }
    audit_close(b);
    CHECK(audit_event(a, NULL, "umount", "/", 0, 0) == 0);
    audit_close(a);     /* signs a checkpoint over both handles' lines */
    CHECK(audit_verify(path, key_of_alice, NULL, &n) == 0);
    CHECK_EQ_INT(n, 1 + 15 + 1 + 1);

    /* a new handle continues the chain where the file ends */
    REQUIRE(audit_open(path, VAULT, "alice", NULL, &a) == 0);
    CHECK(audit_event(a, NULL, "mount", "/", 0, 0) == 0);
    audit_close(a);
    CHECK(audit_verify(path, key_of_alice, NULL, &n) == 0);
    CHECK_EQ_INT(n, 19);
    lines_read(path, &ls);
    REQUIRE(ls.n == 19);
    CHECK(strstr(ls.l[18], "\"seq\":19,") != NULL);
    lines_free(&ls);
    remove_scratch();
}

/* An oversized event fails alone; the spool and later events are fine. */
static void test_oversized_event_refused(void)
{
    struct audit *a;
    char path[128];
    char *huge = malloc(AUDIT_LINE_MAX);
    uint64_t n;

    REQUIRE(huge);
    memset(huge, 'p', AUDIT_LINE_MAX - 1);
    huge[AUDIT_LINE_MAX - 1] = '\0';
    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE(audit_open(path, VAULT, "alice", NULL, &a) == 0);
    CHECK_EQ_INT(audit_event(a, NULL, "open", huge, 0, 0), -E2BIG);
    CHECK(audit_event(a, NULL, "open", "/ok", 0, 0) == 0);
    audit_close(a);
    CHECK(audit_verify(path, NULL, NULL, &n) == 0);
    CHECK_EQ_INT(n, 1);
    free(huge);
    remove_scratch();
}

/* Two processes appending at once still make one chain. */
static void test_two_processes_one_chain(void)
{
    char path[128];
    struct audit *a;
    uint64_t n;
    int status = -1, failures = 0;
    pid_t child;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    fflush(stdout);
    child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        int bad = 0;

        if (audit_open(path, VAULT, "admin", NULL, &a) != 0)
            _exit(2);
        for (int i = 0; i < 300; i++)
            bad += audit_event(a, NULL, "grant", "/child", 0, 0) != 0;
        audit_close(a);
        _exit(bad ? 1 : 0);
    }
    REQUIRE(audit_open(path, VAULT, "alice", NULL, &a) == 0);
    for (int i = 0; i < 300; i++)
        failures += audit_event(a, NULL, "open", "/parent", 0, 0) != 0;
    audit_close(a);
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ_INT(failures, 0);
    CHECK(audit_verify(path, NULL, NULL, &n) == 0);
    CHECK_EQ_INT(n, 600);
    remove_scratch();
}

static void test_open_refuses_torn_tail(void)
{
    struct audit *a = NULL;
    char path[128];
    FILE *f;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    f = fopen(path, "w");
    REQUIRE(f);
    fputs("{\"seq\":1,\"op\":\"mo", f);
    fclose(f);
    CHECK_EQ_INT(audit_open(path, VAULT, "alice", NULL, &a), -EBADMSG);
    CHECK(a == NULL);
    CHECK(strstr(pfs_err_msg(), "incomplete line") != NULL);
    remove_scratch();
}

#define THREADS 8
#define PER_THREAD 250

struct worker {
    struct audit *a;
    int id;
    int failures;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    char p[32];

    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(p, sizeof p, "/t%d/%d", w->id, i);
        if (audit_event(w->a, NULL, "write", p, 0, (uint64_t)i) != 0)
            w->failures++;
    }
    return NULL;
}

static void test_concurrent_events(void)
{
    static unsigned char seen[THREADS][PER_THREAD];
    struct worker w[THREADS];
    pthread_t t[THREADS];
    struct audit *a;
    struct timespec t0, t1;
    char path[128];
    struct lines ls;
    uint64_t n;
    int dup = 0, failures = 0;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE(audit_open(path, VAULT, "alice", alice_key, &a) == 0);
    audit_set_seal_every(a, 300);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){ .a = a, .id = i };
        pthread_create(&t[i], NULL, worker_run, &w[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        failures += w[i].failures;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("# %d events from %d threads in %.3f s\n", THREADS * PER_THREAD, THREADS,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    audit_close(a);
    CHECK_EQ_INT(failures, 0);
    CHECK(audit_verify(path, key_of_alice, NULL, &n) == 0);
    lines_read(path, &ls);
    CHECK_EQ_INT(n, ls.n);
    memset(seen, 0, sizeof seen);
    for (size_t i = 0; i < ls.n; i++) {
        json_object *o = json_tokener_parse(ls.l[i]);
        int tid, k;

        REQUIRE(o);
        if (sscanf(field_str(o, "path"), "/t%d/%d", &tid, &k) == 2 && tid >= 0 &&
            tid < THREADS && k >= 0 && k < PER_THREAD) {
            if (seen[tid][k]++)
                dup++;
        }
        json_object_put(o);
    }
    CHECK_EQ_INT(dup, 0);
    for (int i = 0; i < THREADS; i++)
        for (int k = 0; k < PER_THREAD; k++)
            if (!seen[i][k]) {
                printf("# missing /t%d/%d\n", i, k);
                CHECK(seen[i][k]);
                i = THREADS;
                break;
            }
    lines_free(&ls);
    remove_scratch();
}

/* Fill a tiny tmpfs (or fall back to /dev/full) so appends fail: the error
 * must reach the caller and stay, even after space comes back. */
static void test_full_spool_fails_closed(void)
{
    char mnt[128], path[160], filler[160];
    struct audit *a;
    int rc = 0, mounted = 0;
    char buf[4096];
    uint64_t n;

    make_scratch();
    snprintf(mnt, sizeof mnt, "%s/tiny", scratch);
    REQUIRE(mkdir(mnt, 0700) == 0);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=64k") == 0) {
        mounted = 1;
        snprintf(path, sizeof path, "%s/audit.log", mnt);
    } else {
        printf("# cannot mount tmpfs (%s): using /dev/full\n", strerror(errno));
        snprintf(path, sizeof path, "/dev/full");
    }
    REQUIRE(audit_open(path, VAULT, "alice", NULL, &a) == 0);
    if (mounted) {
        int fd;

        CHECK(audit_event(a, NULL, "mount", "/", 0, 0) == 0);
        snprintf(filler, sizeof filler, "%s/filler", mnt);
        fd = open(filler, O_WRONLY | O_CREAT, 0600);
        REQUIRE(fd >= 0);
        memset(buf, 'x', sizeof buf);
        while (write(fd, buf, sizeof buf) > 0)
            ;
        close(fd);
    }
    for (int i = 0; i < 200 && rc == 0; i++)
        rc = audit_event(a, NULL, "open", "/x", 0, 0);
    CHECK_EQ_INT(rc, -ENOSPC);
    CHECK(strstr(pfs_err_msg(), "audit spool") != NULL);
    if (mounted)
        unlink(filler);
    /* space is back, but the failure is sticky */
    CHECK_EQ_INT(audit_event(a, NULL, "open", "/y", 0, 0), -ENOSPC);
    audit_close(a);
    if (mounted) {
        /* no partial line was left behind */
        CHECK(audit_verify(path, NULL, NULL, &n) == 0);
        CHECK(n >= 1);
        CHECK(umount(mnt) == 0);
    }
    remove_scratch();
}

int main(void)
{
    alice_key = rsa_generate(3072);
    mallory_key = rsa_generate(3072);
    if (!alice_key || !mallory_key) {
        printf("Bail out! cannot generate RSA keys: %s\n", pfs_err_msg());
        return 1;
    }
    RUN(test_events_are_json_with_every_field);
    RUN(test_signed_chain_verifies);
    RUN(test_unknown_signer_fails);
    RUN(test_tampering_detected);
    RUN(test_stripped_checkpoints_detected);
    RUN(test_cp_mismatch_detected);
    RUN(test_checkpoint_cadence_is_per_file);
    RUN(test_crashed_writer_then_new_writers);
    RUN(test_unsigned_tail_limit);
    RUN(test_resume_and_two_handles_one_chain);
    RUN(test_oversized_event_refused);
    RUN(test_two_processes_one_chain);
    RUN(test_open_refuses_torn_tail);
    RUN(test_concurrent_events);
    RUN(test_full_spool_fails_closed);
    EVP_PKEY_free(alice_key);
    EVP_PKEY_free(mallory_key);
    return tap_done();
}
