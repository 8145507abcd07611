#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "audit_test_registry.h"
#include "crypto.h"
#include "error.h"
#include "tap.h"

#define VAULT "0123456789abcdef0123456789abcdef"

static char scratch[64];
static EVP_PKEY *alice_key, *mallory_key, *root_key, *other_root;
/* Ed25519 session keys: alice's sessions use alice_ckey (so a test can
 * make the checkpoints her mount could); mallory_ckey is anyone else's. */
static EVP_PKEY *alice_ckey, *mallory_ckey;
static char *alice_proof, *mallory_proof;
static char root_fp[65], other_fp[65];
#define ZERO64 "0000000000000000000000000000000000000000000000000000000000000000"

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


static struct audit *open_signed(const char *path, const char *account, EVP_PKEY *key,
                                 const char *proof, uint64_t id)
{
    struct audit_identity who = { .account = account, .account_id = id, .signer = key,
                                  .proof = proof,
                                  .checkpoint_key = key == alice_key ? alice_ckey : NULL };
    struct audit *a = NULL;

    if (audit_open(path, VAULT, &who, &a) != 0) {
        printf("# audit_open: %s\n", pfs_err_msg());
        return NULL;
    }
    return a;
}

static struct audit *open_alice(const char *path)
{
    return open_signed(path, "alice", alice_key, alice_proof, 2);
}

static struct audit *open_unsigned(const char *path, const char *account)
{
    struct audit_identity who = { .account = account };
    struct audit *a = NULL;

    return audit_open(path, VAULT, &who, &a) == 0 ? a : NULL;
}

static int verify_msg_has(const char *path, const char *fp, const char *needle)
{
    int rc = audit_verify(path, fp, NULL, NULL, NULL);

    if (rc != -EBADMSG || !strstr(pfs_err_msg(), needle)) {
        printf("# verify rc %d, message: %s (wanted \"%s\")\n", rc, pfs_err_msg(), needle);
        return 0;
    }
    return 1;
}

static int line_is(const char *line, const char *op)
{
    json_object *o = json_tokener_parse(line);
    int is = o && field_str(o, "op") && strcmp(field_str(o, "op"), op) == 0;

    json_object_put(o);
    return is;
}

/* Recompute seq/prev and every session's sseq/sprev after lines were
 * removed or edited, as someone without any key can. */
static void rechain_ex(struct lines *ls, int keep_signed)
{
    char prev[65] = ZERO64, ids[64][33], sprev[64][65];
    uint64_t sseq[64];
    size_t nses = 0;

    for (size_t i = 0; i < ls->n; i++) {
        json_object *o = json_tokener_parse(ls->l[i]);
        const char *id = field_str(o, "session");
        size_t s = 0;
        const char *txt;
        size_t len = 0;

        while (s < nses && strcmp(ids[s], id))
            s++;
        if (s == nses) {
            snprintf(ids[nses], 33, "%s", id);
            snprintf(sprev[nses], 65, "%s", ZERO64);
            sseq[nses++] = 0;
        }
        json_object_object_add(o, "seq", json_object_new_uint64(i + 1));
        json_object_object_add(o, "sseq", json_object_new_uint64(++sseq[s]));
        json_object_object_add(o, "prev", json_object_new_string(prev));
        json_object_object_add(o, "sprev", json_object_new_string(sprev[s]));
        if (!keep_signed && strcmp(field_str(o, "op"), "checkpoint") == 0) {
            json_object_object_add(o, "signed_hash", json_object_new_string(sprev[s]));
            if (field_int(o, "v") >= 5)   /* the line just before, as in format 4 */
                json_object_object_add(o, "signed_sseq", json_object_new_uint64(sseq[s] - 1));
        }
        txt = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN |
                                                JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        free(ls->l[i]);
        ls->l[i] = strdup(txt);
        audit_line_hash(txt, len, prev);
        memcpy(sprev[s], prev, 65);
        json_object_put(o);
    }
}

static void rechain(struct lines *ls)
{
    rechain_ex(ls, 0);
}

/* ---------- cases ---------- */

/* The process name is remembered per pid for a short while (audit.c,
 * PROCESS_NAME_TTL_MS): a process that renames itself shows the new name
 * once that has passed, and a gone process shows none. */
static void test_process_name_follows_a_rename(void)
{
    struct audit *a;
    struct audit_ctx who = { .uid = 1, .pid = getpid() };
    struct audit_ctx gone = { .uid = 1, .pid = 0x3fffff00 };   /* above any pid_max in use */
    char path[128], before[17] = "";
    struct lines ls;
    struct timespec pause = { 0, 150 * 1000000L };

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE((a = open_unsigned(path, "alice")));
    REQUIRE(prctl(PR_GET_NAME, before) == 0);
    CHECK(audit_event(a, &who, "open", "/a", 0, 0) == 0);
    REQUIRE(prctl(PR_SET_NAME, "renamed-proc") == 0);
    nanosleep(&pause, NULL);
    CHECK(audit_event(a, &who, "open", "/b", 0, 0) == 0);
    CHECK(audit_event(a, &gone, "open", "/c", 0, 0) == 0);
    prctl(PR_SET_NAME, before);
    audit_close(a);
    lines_read(path, &ls);
    REQUIRE(ls.n == 5);   /* start, 3 events, end */
    json_object *o1 = json_tokener_parse(ls.l[1]), *o2 = json_tokener_parse(ls.l[2]),
                *o3 = json_tokener_parse(ls.l[3]);
    REQUIRE(o1 && o2 && o3);
    CHECK(strcmp(field_str(o1, "process"), before) == 0);
    CHECK(strcmp(field_str(o2, "process"), "renamed-proc") == 0);
    CHECK(strcmp(field_str(o3, "process"), "") == 0);
    json_object_put(o1);
    json_object_put(o2);
    json_object_put(o3);
    lines_free(&ls);
}

static void test_events_are_json_with_every_field(void)
{
    struct audit *a;
    struct audit_ctx who = { .uid = 1234, .pid = getpid() };
    struct audit_verify_result res;
    char path[128], comm[64] = "", host[256] = "";
    struct lines ls;
    FILE *f;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE((a = open_unsigned(path, "alice")));
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
    REQUIRE(ls.n == 5);   /* start, 3 events, end; no signer: no checkpoint */
    CHECK(line_is(ls.l[0], "session-start") && line_is(ls.l[4], "session-end"));
    for (size_t i = 0; i < ls.n; i++) {
        json_object *o = json_tokener_parse(ls.l[i]);

        REQUIRE(o);
        CHECK_EQ_INT(field_int(o, "v"), AUDIT_FORMAT);
        CHECK_EQ_INT(field_int(o, "seq"), (int64_t)i + 1);
        CHECK_EQ_INT(field_int(o, "sseq"), (int64_t)i + 1);
        CHECK(strcmp(field_str(o, "vault"), VAULT) == 0);
        CHECK(strlen(field_str(o, "session")) == 32);
        CHECK(strcmp(field_str(o, "account"), "alice") == 0);
        CHECK(strcmp(field_str(o, "host"), host) == 0);
        CHECK(strcmp(field_str(o, "process"), comm) == 0);
        CHECK(strlen(field_str(o, "time")) == 30 && field_str(o, "time")[29] == 'Z');
        CHECK(strcmp(field_str(o, "prev"), field_str(o, "sprev")) == 0);   /* one session */
        if (i == 0)
            CHECK(strcmp(field_str(o, "prev"), ZERO64) == 0 && !field_str(o, "proof"));
        if (i == 1) {
            CHECK(strcmp(field_str(o, "path"), "/Sales/a \"b\"\nc.pdf") == 0);
            CHECK(strcmp(field_str(o, "result"), "ok") == 0);
            CHECK_EQ_INT(field_int(o, "uid"), 1234);
            CHECK(strcmp(field_str(o, "op"), "create") == 0);
        } else if (i == 2) {
            CHECK(strcmp(field_str(o, "result"), "denied") == 0);
            CHECK(strcmp(field_str(o, "errno"), "EACCES") == 0);
        } else if (i == 3) {
            char hex[65];

            CHECK(strcmp(field_str(o, "result"), "error") == 0);
            CHECK(strcmp(field_str(o, "errno"), "ENOENT") == 0);
            CHECK_EQ_INT(field_int(o, "bytes"), 123456789012LL);
            CHECK_EQ_INT(field_int(o, "uid"), getuid());
            audit_line_hash(ls.l[2], strlen(ls.l[2]), hex);
            CHECK(strcmp(field_str(o, "prev"), hex) == 0);
        }
        json_object_put(o);
    }
    CHECK(audit_verify(path, NULL, NULL, NULL, &res) == 0);
    CHECK_EQ_INT(res.events, 5);
    CHECK(audit_verify(path, root_fp, NULL, NULL, &res) == 0);
    CHECK_EQ_INT(res.sessions, 1);
    CHECK_EQ_INT(res.unsigned_sessions, 1);
    lines_free(&ls);
    remove_scratch();
}

/* Ten events, checkpoints after every 3 (and at start and close). */
static void write_signed_spool(const char *path)
{
    struct audit *a = open_alice(path);
    char p[32];

    if (!a)
        abort();
    audit_set_seal_every(a, 3);
    for (int i = 0; i < 10; i++) {
        snprintf(p, sizeof p, "/Sales/f%d", i);
        if (audit_event(a, NULL, "open", p, 0, (uint64_t)i) != 0)
            abort();
    }
    audit_close(a);
}

static void test_signed_session_verifies(void)
{
    struct audit_verify_result res;
    char path[128];
    struct lines ls;
    int checkpoints = 0;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    write_signed_spool(path);
    lines_read(path, &ls);
    REQUIRE(ls.n >= 17);
    CHECK(line_is(ls.l[0], "session-start") && line_is(ls.l[1], "checkpoint"));
    CHECK(strstr(ls.l[0], alice_proof) != NULL);
    {   /* format 6: the session-start names the session key */
        uint8_t pub[ED25519_PUB_LEN];
        char want[80];

        REQUIRE(ed25519_public_raw(alice_ckey, pub) == 0);
        snprintf(want, sizeof want, "\"ckey\":\"");
        hex_encode(pub, sizeof pub, want + strlen(want));
        CHECK(strstr(ls.l[0], want) != NULL);
    }
    CHECK(line_is(ls.l[ls.n - 2], "session-end") && line_is(ls.l[ls.n - 1], "checkpoint"));
    for (size_t i = 0; i < ls.n; i++) {
        json_object *o = json_tokener_parse(ls.l[i]);

        REQUIRE(o);
        if (strcmp(field_str(o, "op"), "checkpoint") == 0) {
            checkpoints++;
            CHECK(strcmp(field_str(o, "signed_hash"), field_str(o, "sprev")) == 0);
            /* the first is RSA-3072 (the account's), the others Ed25519 */
            CHECK(field_str(o, "sig") &&
                  strlen(field_str(o, "sig")) == (checkpoints == 1 ? 768u : 128u));
        }
        json_object_put(o);
    }
    CHECK(checkpoints >= 5);
    CHECK(audit_verify(path, root_fp, NULL, NULL, &res) == 0);
    CHECK_EQ_INT(res.events, ls.n);
    CHECK_EQ_INT(res.sessions, 1);
    CHECK_EQ_INT(res.unsigned_sessions, 0);
    /* Another vault root: the proof does not verify, at the session-start. */
    CHECK(verify_msg_has(path, other_fp, "line 1: the registry proof"));
    /* Without a root: a signed session cannot be checked. */
    CHECK(audit_verify(path, NULL, NULL, NULL, NULL) == 0);
    lines_free(&ls);
    remove_scratch();
}

/* What a checkpoint line signs (docs/format-audit.md): format 5 names the
 * line signed, format 3 and 4 sign the line before. */
static char *checkpoint_msg(json_object *o)
{
    char *msg = NULL;

    int n = field_int(o, "v") >= 5
            ? asprintf(&msg, "pactfs audit session checkpoint v%d\n%s\n%s\n%lld\n%s",
                       field_int(o, "v") >= 6 ? 6 : 5, VAULT,
                       field_str(o, "session"), (long long)field_int(o, "signed_sseq"),
                       field_str(o, "signed_hash"))
            : asprintf(&msg, "pactfs audit session checkpoint v3\n%s\n%s\n%s", VAULT,
                       field_str(o, "session"), field_str(o, "signed_hash"));

    if (n < 0)
        abort();
    return msg;
}

/* Sign checkpoint o with key (RSA or Ed25519) into its "sig" (as_v3: by
 * the format 3 rule). */
static void sign_into(json_object *o, EVP_PKEY *key, int as_v3)
{
    char *msg, hex[1024];
    uint8_t *sig = NULL;
    size_t siglen = ED25519_SIG_LEN;

    if (as_v3)
        json_object_object_add(o, "v", json_object_new_int(3));
    msg = checkpoint_msg(o);
    if (as_v3)
        json_object_object_add(o, "v", json_object_new_int(AUDIT_FORMAT));
    if (EVP_PKEY_get_id(key) == EVP_PKEY_ED25519
        ? !(sig = malloc(ED25519_SIG_LEN)) || ed25519_sign(key, msg, strlen(msg), sig) != 0
        : sig_sign(key, msg, strlen(msg), &sig, &siglen) != 0)
        abort();
    hex_encode(sig, siglen, hex);
    json_object_object_add(o, "sig", json_object_new_string(hex));
    free(sig);
    free(msg);
}

/* Line idx becomes o's text (o released). */
static void line_replace(struct lines *ls, size_t idx, json_object *o)
{
    free(ls->l[idx]);
    ls->l[idx] = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                       JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

/* Re-sign the checkpoint at idx with key (naming account, if given). */
static void resign_checkpoint(struct lines *ls, size_t idx, EVP_PKEY *key, const char *account)
{
    json_object *o = json_tokener_parse(ls->l[idx]);

    REQUIRE(o && strcmp(field_str(o, "op"), "checkpoint") == 0);
    sign_into(o, key, 0);
    if (account)
        json_object_object_add(o, "account", json_object_new_string(account));
    line_replace(ls, idx, o);
}

/* The checkpoint is checked under the session's key, not the signer the
 * line names; and a session cannot borrow another account's proof. */
static void test_other_account_cannot_sign(void)
{
    char path[128], bad[160];
    struct lines ls;
    struct audit *a;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    write_signed_spool(path);
    lines_read(path, &ls);
    /* mallory re-signs alice's checkpoint at line 6 with its own key */
    resign_checkpoint(&ls, 5, mallory_key, "mallory");
    rechain(&ls);
    snprintf(bad, sizeof bad, "%s/resigned.log", scratch);
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, root_fp, "line 6:"));
    CHECK(verify_msg_has(bad, root_fp, "names account \"mallory\""));
    lines_free(&ls);
    /* same, but naming alice, with mallory's account key or a session key
     * of mallory's: the signature fails under alice's session key */
    for (int k = 0; k < 2; k++) {
        lines_read(path, &ls);
        resign_checkpoint(&ls, 5, k ? mallory_ckey : mallory_key, NULL);
        rechain(&ls);
        lines_write(bad, &ls, 0);
        CHECK(verify_msg_has(bad, root_fp, "line 6: checkpoint signature does not verify "
                             "under the session key that account \"alice\""));
        lines_free(&ls);
    }
    /* the first checkpoint, which certifies the session key, is alice's */
    lines_read(path, &ls);
    resign_checkpoint(&ls, 1, mallory_key, NULL);
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, root_fp, "line 2: checkpoint signature does not verify under "
                         "the key of account \"alice\""));
    lines_free(&ls);
    /* mallory's key and proof, claiming to be alice */
    snprintf(bad, sizeof bad, "%s/borrowed.log", scratch);
    REQUIRE((a = open_signed(bad, "alice", mallory_key, mallory_proof, 2)));
    audit_event(a, NULL, "open", "/x", 0, 0);
    audit_close(a);
    CHECK(verify_msg_has(bad, root_fp, "line 1: session"));
    CHECK(verify_msg_has(bad, root_fp, "registry proof is for \"mallory\""));
    remove_scratch();
}

static void test_tampering_detected(void)
{
    char path[128], bad[160];
    struct lines ls, t;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    write_signed_spool(path);
    snprintf(bad, sizeof bad, "%s/bad.log", scratch);
    lines_read(path, &ls);
    /* edit an event: the next line's prev */
    lines_copy(&t, &ls);
    {
        char *p = strstr(t.l[3], "/Sales/f1");

        REQUIRE(p);
        p[8] = '7';
    }
    lines_write(bad, &t, 0);
    CHECK(verify_msg_has(bad, NULL, "line 5: prev does not match"));
    /* ... and with both chains recomputed: the session's next checkpoint */
    rechain(&t);
    lines_write(bad, &t, 0);
    CHECK(audit_verify(bad, NULL, NULL, NULL, NULL) == 0);   /* the chains alone are fooled */
    CHECK(verify_msg_has(bad, root_fp, "line 6: checkpoint signature does not verify"));
    lines_free(&t);
    /* delete an event and recompute: the checkpoint after it fails */
    lines_copy(&t, &ls);
    lines_delete(&t, 2);
    rechain(&t);
    lines_write(bad, &t, 0);
    CHECK(verify_msg_has(bad, root_fp, "line 5: checkpoint signature does not verify"));
    lines_free(&t);
    /* a truncated last line */
    lines_copy(&t, &ls);
    lines_write(bad, &t, 1);
    CHECK(verify_msg_has(bad, NULL, "incomplete last line"));
    lines_free(&t);
    /* the session's head removed */
    lines_copy(&t, &ls);
    lines_delete(&t, 0);
    rechain(&t);
    lines_write(bad, &t, 0);
    CHECK(verify_msg_has(bad, NULL, "line 1: sseq 1 of session"));
    lines_free(&t);
    lines_free(&ls);
    remove_scratch();
}

/* At most AUDIT_SEAL_EVERY events of a session stand without a checkpoint:
 * removing checkpoints shows even where both chains were recomputed. */
static void test_stripped_checkpoints_detected(void)
{
    char path[128], bad[160];
    struct audit *a;
    struct lines ls;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE((a = open_alice(path)));
    for (int i = 0; i < 200; i++)
        CHECK(audit_event(a, NULL, "open", "/f", 0, 0) == 0);
    audit_close(a);
    CHECK(audit_verify(path, root_fp, NULL, NULL, NULL) == 0);
    lines_read(path, &ls);
    for (size_t i = 0; i < ls.n;)
        if (line_is(ls.l[i], "checkpoint"))
            lines_delete(&ls, i);
        else
            i++;
    rechain(&ls);
    snprintf(bad, sizeof bad, "%s/stripped.log", scratch);
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, NULL, "line 65: more than 64 events of session"));
    lines_free(&ls);
    remove_scratch();
}

/* Set what the checkpoint at idx signs (signed_sseq 0: remove the field,
 * and sign it by the format 3 rule) and sign it with alice's own key, then
 * recompute both chains around it (keeping every checkpoint's signed
 * line): only the place rules can refuse it. */
static void place_checkpoint(struct lines *ls, size_t idx, int64_t signed_sseq,
                             const char *signed_hash)
{
    json_object *o = json_tokener_parse(ls->l[idx]);

    REQUIRE(o && strcmp(field_str(o, "op"), "checkpoint") == 0);
    json_object_object_add(o, "signed_hash", json_object_new_string(signed_hash));
    if (signed_sseq)
        json_object_object_add(o, "signed_sseq", json_object_new_int64(signed_sseq));
    else
        json_object_object_del(o, "signed_sseq");
    sign_into(o, idx == 1 ? alice_key : alice_ckey, !signed_sseq);
    line_replace(ls, idx, o);
    rechain_ex(ls, 1);
}

static void line_hash_at(const struct lines *ls, size_t idx, char out[65])
{
    audit_line_hash(ls->l[idx], strlen(ls->l[idx]), out);
}

/* Keep the first n lines (a spool cut after a crash). */
static void lines_truncate(struct lines *ls, size_t n)
{
    while (ls->n > n)
        free(ls->l[--ls->n]);
}

static void lines_swap(struct lines *ls, size_t i, size_t j)
{
    char *l = ls->l[i];

    ls->l[i] = ls->l[j];
    ls->l[j] = l;
}

/* The spool at path verifies (needle NULL) or is refused with needle. */
static int spool_verdict(const char *path, const char *needle)
{
    int ok;

    if (needle)
        return verify_msg_has(path, root_fp, needle);
    ok = audit_verify(path, root_fp, NULL, NULL, NULL) == 0;
    if (!ok)
        printf("# %s\n", pfs_err_msg());
    return ok;
}

/* A copy of ls with the checkpoint at idx signing line signed_sseq (0: by
 * the format 3 rule) whose hash is that of line hash_idx of ls (or of
 * foreign bytes, hash_idx -1), written to path; verified against needle
 * (NULL: must verify). */
static int placed_verdict(const struct lines *ls, const char *path, size_t keep, size_t idx,
                          int64_t signed_sseq, int hash_idx, const char *needle)
{
    struct lines t;
    char h[65];

    lines_copy(&t, ls);
    lines_truncate(&t, keep);
    if (hash_idx < 0)
        audit_line_hash("not a line of this spool", 24, h);
    else
        line_hash_at(&t, (size_t)hash_idx, h);
    place_checkpoint(&t, idx, signed_sseq, h);
    lines_write(path, &t, 0);
    lines_free(&t);
    return spool_verdict(path, needle);
}

/* Format 5: a checkpoint names the line of its session it signs.  It may
 * sign an earlier line than the one before it (that is how the sealer signs
 * off the append path), but only a line of its own session's chain, after
 * the last line signed and before itself.  Each bad case below carries a
 * good signature by the session's own key, so only that rule refuses it. */
static void test_misplaced_checkpoints_refused(void)
{
    char path[128], bad[160];
    struct lines ls, t;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    snprintf(bad, sizeof bad, "%s/bad.log", scratch);
    write_signed_spool(path);
    /* lines: 1 start, 2 cp(1), 3-5 events, 6 cp(5), 7-9 events, 10 cp(9), ... */
    lines_read(path, &ls);
    REQUIRE(ls.n >= 17 && line_is(ls.l[5], "checkpoint") && line_is(ls.l[9], "checkpoint"));
    CHECK(strstr(ls.l[5], "\"signed_sseq\":5,") != NULL);
    /* control: re-signed in place by alice, the spool verifies (cut after
     * line 8: the later checkpoints signed the original line 6) */
    CHECK(placed_verdict(&ls, bad, 8, 5, 5, 4, NULL));
    /* a checkpoint may sign an earlier line: line 6 moved after line 7 */
    lines_copy(&t, &ls);
    lines_truncate(&t, 8);
    lines_swap(&t, 5, 6);
    rechain_ex(&t, 1);
    lines_write(bad, &t, 0);
    lines_free(&t);
    CHECK(audit_verify(bad, root_fp, NULL, NULL, NULL) == 0);
    /* signed_hash naming a line that is not in the chain, or another line
     * of the chain than the one it claims */
    CHECK(placed_verdict(&ls, bad, ls.n, 5, 5, -1, "line 6: checkpoint signs a different chain "
                         "(signed_hash is not the hash of line sseq 5"));
    CHECK(placed_verdict(&ls, bad, ls.n, 5, 5, 3, "line 6: checkpoint signs a different chain"));
    /* covering lines after it, or itself */
    CHECK(placed_verdict(&ls, bad, ls.n, 5, 7, 6, "line 6: checkpoint signs line sseq 7 of "));
    CHECK(placed_verdict(&ls, bad, ls.n, 5, 6, 4, "line 6: checkpoint signs line sseq 6 of "));
    /* signing again a line already signed (line 10 naming line 5) */
    CHECK(placed_verdict(&ls, bad, ls.n, 9, 5, 4, "line 10: checkpoint signs line sseq 5 of "));
    CHECK(verify_msg_has(bad, root_fp, "its last signed line (sseq 5)"));
    /* a format 5 checkpoint without signed_sseq, signed by the format 3 rule */
    CHECK(placed_verdict(&ls, bad, ls.n, 5, 0, 4, "line 6: format 6 checkpoint lacks "
                         "signed_sseq"));
    /* the closing checkpoint must sign the session-end */
    REQUIRE(line_is(ls.l[ls.n - 2], "session-end"));
    CHECK(placed_verdict(&ls, bad, ls.n, ls.n - 1, (int64_t)ls.n - 2, (int)ls.n - 3,
                         "does not sign the session-end"));
    lines_free(&ls);
    remove_scratch();
}

/* Line idx's field key becomes val (NULL: removed). */
static void set_field(struct lines *ls, size_t idx, const char *key, const char *val)
{
    json_object *o = json_tokener_parse(ls->l[idx]);

    REQUIRE(o);
    if (val)
        json_object_object_add(o, key, json_object_new_string(val));
    else
        json_object_object_del(o, key);
    line_replace(ls, idx, o);
}

/* Re-sign every checkpoint of a one-session spool in order, the first with
 * first, the others with later, recomputing the chains after each. */
static void resign_all(struct lines *ls, EVP_PKEY *first, EVP_PKEY *later)
{
    int n = 0;

    rechain(ls);
    for (size_t i = 0; i < ls->n; i++)
        if (line_is(ls->l[i], "checkpoint")) {
            resign_checkpoint(ls, i, n++ ? later : first, NULL);
            rechain(ls);
        }
}

/* A copy of ls with the session-start's ckey set to ckey_hex (NULL: kept),
 * the first checkpoint dropped if drop_first, and every checkpoint
 * re-signed (resign_all), written to path; verified against needle (NULL:
 * must verify). */
static int rewritten_verdict(const struct lines *ls, const char *path, const char *ckey_hex,
                             int drop_first, EVP_PKEY *first, EVP_PKEY *later,
                             const char *needle)
{
    struct lines t;

    lines_copy(&t, ls);
    if (ckey_hex)
        set_field(&t, 0, "ckey", ckey_hex);
    if (drop_first)
        lines_delete(&t, 1);
    resign_all(&t, first, later);
    lines_write(path, &t, 0);
    lines_free(&t);
    return spool_verdict(path, needle);
}

/* Format 6: a session's checkpoints after its first are signed by the
 * session key its session-start names, which that first checkpoint (the
 * account's RSA key) certifies.  Someone who can write the spool but
 * holds no account key cannot bring a session key of their own:
 * substituting the start's key breaks the first checkpoint, dropping that
 * checkpoint leaves the next one to be checked under the account's key.
 * Each checkpoint has one key: a later one under the account's key is
 * refused, and so is a format 6 start without a session key. */
static void test_substituted_session_key_refused(void)
{
    char path[128], bad[160], hex[2 * ED25519_PUB_LEN + 1];
    uint8_t pub[ED25519_PUB_LEN];
    struct lines ls, t;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    snprintf(bad, sizeof bad, "%s/bad.log", scratch);
    write_signed_spool(path);
    lines_read(path, &ls);
    REQUIRE(line_is(ls.l[1], "checkpoint") && line_is(ls.l[5], "checkpoint"));
    REQUIRE(ed25519_public_raw(mallory_ckey, pub) == 0);
    hex_encode(pub, sizeof pub, hex);
    /* control: alice's own rewrite (her key certifies a new session key) */
    CHECK(rewritten_verdict(&ls, bad, hex, 0, alice_key, mallory_ckey, NULL));
    /* mallory's session key in alice's session-start: the first checkpoint
     * kept as it was no longer verifies, nor can mallory remake it */
    CHECK(rewritten_verdict(&ls, bad, hex, 0, mallory_key, mallory_ckey, "line 2: checkpoint "
                            "signature does not verify under the key of account \"alice\""));
    /* the certifying checkpoint dropped: the next one must be alice's RSA
     * signature, even signed by the genuine session key */
    CHECK(rewritten_verdict(&ls, bad, NULL, 1, alice_ckey, alice_ckey, "line 5: checkpoint "
                            "signature does not verify under the key of account \"alice\""));
    /* a later checkpoint under alice's account key instead of the session's */
    lines_copy(&t, &ls);
    resign_all(&t, alice_key, alice_ckey);
    lines_write(bad, &t, 0);
    CHECK(audit_verify(bad, root_fp, NULL, NULL, NULL) == 0);   /* control */
    resign_checkpoint(&t, 5, alice_key, NULL);
    rechain(&t);
    lines_write(bad, &t, 0);
    CHECK(verify_msg_has(bad, root_fp, "line 6: checkpoint signature does not verify under "
                         "the session key"));
    lines_free(&t);
    /* a format 6 session-start without its key, or with a short one */
    lines_copy(&t, &ls);
    set_field(&t, 0, "ckey", NULL);
    resign_all(&t, alice_key, alice_ckey);
    lines_write(bad, &t, 0);
    CHECK(verify_msg_has(bad, root_fp, "line 1: format 6 session-start of session"));
    CHECK(verify_msg_has(bad, root_fp, "lacks its session key"));
    hex[2 * ED25519_PUB_LEN - 2] = '\0';
    set_field(&t, 0, "ckey", hex);
    resign_all(&t, alice_key, alice_ckey);
    lines_write(bad, &t, 0);
    CHECK(verify_msg_has(bad, root_fp, "lacks its session key"));
    lines_free(&t);
    lines_free(&ls);
    remove_scratch();
}

/* A session of this build appended to the spool at path (of one session
 * of an earlier format) verifies with it. */
static int continued_by_a_new_session(const char *path)
{
    struct audit_verify_result res;
    struct audit *a = open_alice(path);

    if (!a)
        return 0;
    for (int i = 0; i < 100; i++)
        if (audit_event(a, NULL, "open", "/new", 0, 0) != 0)
            return 0;
    audit_close(a);
    return audit_verify(path, root_fp, NULL, NULL, &res) == 0 && res.sessions == 2;
}

/* Trails of earlier builds (format 4: every checkpoint signs the line just
 * before it, under the v3 label) still verify, and are continued by
 * format 5 sessions. */
static void test_format4_signed_spool_still_verifies(void)
{
    struct audit_verify_result res;
    char path[128], bad[160];
    struct lines ls, t;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    write_signed_spool(path);
    lines_read(path, &ls);
    for (size_t i = 0; i < ls.n; i++) {
        json_object *o = json_tokener_parse(ls.l[i]);

        json_object_object_add(o, "v", json_object_new_int(4));
        json_object_object_del(o, "signed_sseq");
        free(ls.l[i]);
        ls.l[i] = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                        JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
    }
    rechain(&ls);
    for (size_t i = 0; i < ls.n; i++)
        if (line_is(ls.l[i], "checkpoint")) {
            resign_checkpoint(&ls, i, alice_key, NULL);
            rechain(&ls);
        }
    lines_write(path, &ls, 0);
    CHECK(audit_verify(path, root_fp, NULL, NULL, &res) == 0);
    CHECK_EQ_INT(res.events, ls.n);
    /* a format 4 checkpoint signs the line before it, nothing else */
    lines_copy(&t, &ls);
    lines_swap(&t, 5, 6);
    rechain_ex(&t, 1);
    snprintf(bad, sizeof bad, "%s/bad.log", scratch);
    lines_write(bad, &t, 0);
    CHECK(verify_msg_has(bad, root_fp, "line 7: checkpoint signs a different chain "
                         "(signed_hash differs from sprev)"));
    lines_free(&t);
    CHECK(continued_by_a_new_session(path));
    lines_free(&ls);
    remove_scratch();
}

/* Trails of the previous build (format 5: no session key, every checkpoint
 * the account's RSA signature under the v5 label) still verify, and a
 * format 5 checkpoint is not taken for a session key's. */
static void test_format5_signed_spool_still_verifies(void)
{
    struct audit_verify_result res;
    char path[128], bad[160];
    struct lines ls;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    snprintf(bad, sizeof bad, "%s/bad.log", scratch);
    write_signed_spool(path);
    lines_read(path, &ls);
    for (size_t i = 0; i < ls.n; i++) {
        json_object *o = json_tokener_parse(ls.l[i]);

        json_object_object_add(o, "v", json_object_new_int(5));
        json_object_object_del(o, "ckey");
        line_replace(&ls, i, o);
    }
    resign_all(&ls, alice_key, alice_key);
    lines_write(path, &ls, 0);
    CHECK(audit_verify(path, root_fp, NULL, NULL, &res) == 0);
    CHECK_EQ_INT(res.events, ls.n);
    /* a later checkpoint signed by the session key alice's format 6 mount
     * would have: a format 5 session has none */
    resign_checkpoint(&ls, 5, alice_ckey, NULL);
    rechain(&ls);
    lines_write(bad, &ls, 0);
    CHECK(verify_msg_has(bad, root_fp, "line 6: checkpoint signature does not verify under "
                         "the key of account \"alice\""));
    /* continued by a format 6 session */
    CHECK(continued_by_a_new_session(path));
    lines_free(&ls);
    remove_scratch();
}

/* The sealer signs in the background: events go on being appended while
 * it signs, so checkpoints sign an earlier line than the one before them,
 * and still no more than AUDIT_SEAL_EVERY events stand unsigned.  An
 * Ed25519 signature takes tens of microseconds, too short for events to
 * land meanwhile on a loaded machine: with crash points compiled in, each
 * signature is stretched to 3 ms (delay_point), and there some must. */
static void test_checkpoints_signed_off_the_append_path(void)
{
    char path[128];
    struct lines ls;
    struct audit *a;
    int checkpoints = 0, earlier = 0;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    setenv("PACTFS_DELAY_AT", "audit-seal-sign:3", 1);
    REQUIRE((a = open_alice(path)));
    CHECK(audit_set_group_commit(a, AUDIT_COMMIT_MS) == 0);
    for (int i = 0; i < 2000; i++) {    /* an operation's own work between events */
        CHECK(audit_event(a, NULL, "open", "/busy", 0, 0) == 0);
        usleep(50);
    }
    audit_close(a);
    unsetenv("PACTFS_DELAY_AT");
    CHECK(audit_verify(path, root_fp, NULL, NULL, NULL) == 0);
    lines_read(path, &ls);
    for (size_t i = 0; i < ls.n; i++) {
        json_object *o = json_tokener_parse(ls.l[i]);

        if (strcmp(field_str(o, "op"), "checkpoint") == 0) {
            checkpoints++;
            CHECK(field_int(o, "signed_sseq") < field_int(o, "sseq"));
            earlier += field_int(o, "signed_sseq") < field_int(o, "sseq") - 1;
        }
        json_object_put(o);
    }
    printf("# %d checkpoints, %d signed an earlier line\n", checkpoints, earlier);
    CHECK(checkpoints >= 2000 / 64);
#ifdef PACTFS_CRASH_POINTS
    CHECK(earlier > 0);
#endif
    lines_free(&ls);
    remove_scratch();
}

/* The sealer signs a quiet session within AUDIT_SEAL_MS of its last event. */
static void test_sealed_within_a_second(void)
{
    char path[128];
    struct audit *a;
    struct lines ls;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE((a = open_alice(path)));
    CHECK(audit_event(a, NULL, "open", "/quiet", 0, 0) == 0);
    usleep((AUDIT_SEAL_MS + 300) * 1000);
    lines_read(path, &ls);
    CHECK_EQ_INT(ls.n, 4);
    CHECK(ls.n && line_is(ls.l[ls.n - 1], "checkpoint"));
    lines_free(&ls);
    audit_close(a);
    CHECK(audit_verify(path, root_fp, NULL, NULL, NULL) == 0);
    remove_scratch();
}

static void test_unsigned_session_limit(void)
{
    char path[128];
    struct audit *a;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE((a = open_unsigned(path, "fsck")));
    for (unsigned i = 0; i < AUDIT_SEAL_EVERY + 5; i++)
        audit_event(a, NULL, "fsck", "/", 0, 0);
    audit_close(a);
    CHECK(verify_msg_has(path, root_fp, "line 65: more than 64 events in session"));
    remove_scratch();
}

/* Sessions interleave in one spool, each keeps its own chain. */
static void test_interleaved_sessions(void)
{
    struct audit_verify_result res;
    struct audit *a, *b, *c;
    char path[128];

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE((a = open_alice(path)));
    REQUIRE((b = open_unsigned(path, "admin")));
    REQUIRE((c = open_signed(path, "mallory", mallory_key, mallory_proof, 3)));
    for (int i = 0; i < 150; i++) {
        CHECK(audit_event(a, NULL, "open", "/a", 0, 0) == 0);
        CHECK(audit_event(c, NULL, "open", "/c", 0, 0) == 0);
        if (i < 30)
            CHECK(audit_event(b, NULL, "grant", "/b", 0, 0) == 0);
    }
    audit_close(b);
    audit_close(a);
    audit_close(c);
    CHECK(audit_verify(path, root_fp, NULL, NULL, &res) == 0);
    CHECK_EQ_INT(res.sessions, 3);
    CHECK_EQ_INT(res.unsigned_sessions, 1);
    /* a session continues in a new handle only as a new session */
    REQUIRE((a = open_alice(path)));
    audit_close(a);
    CHECK(audit_verify(path, root_fp, NULL, NULL, &res) == 0);
    CHECK_EQ_INT(res.sessions, 4);
    remove_scratch();
}

/* Format 2 spools are still read: their checkpoints by the signer they name. */
static EVP_PKEY *v2_key(void *arg, const char *account)
{
    (void)arg;
    return strcmp(account, "alice") == 0 ? alice_key : NULL;
}

static void test_format2_prefix_still_verifies(void)
{
    struct audit_verify_result res;
    char path[128], h1[65], h2[65], *l1 = NULL, *l2 = NULL, *msg = NULL, sighex[1024];
    uint8_t *sig = NULL;
    size_t siglen = 0;
    struct audit *a;
    struct lines ls;
    FILE *f;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE(asprintf(&l1, "{\"seq\":1,\"time\":\"2026-01-01T00:00:00.000000000Z\",\"vault\":"
                     "\"%s\",\"host\":\"h\",\"account\":\"alice\",\"uid\":0,\"pid\":1,\"process"
                     "\":\"p\",\"op\":\"open\",\"path\":\"/old\",\"result\":\"ok\",\"bytes\":0,"
                     "\"cp\":0,\"prev\":\"%s\"}", VAULT, ZERO64) > 0);
    audit_line_hash(l1, strlen(l1), h1);
    REQUIRE(asprintf(&msg, "pactfs audit checkpoint v1\n%s\n%s", VAULT, h1) > 0);
    REQUIRE(sig_sign(alice_key, msg, strlen(msg), &sig, &siglen) == 0);
    hex_encode(sig, siglen, sighex);
    REQUIRE(asprintf(&l2, "{\"seq\":2,\"time\":\"2026-01-01T00:00:00.000000000Z\",\"vault\":"
                     "\"%s\",\"host\":\"h\",\"account\":\"alice\",\"uid\":0,\"pid\":1,\"process"
                     "\":\"p\",\"op\":\"checkpoint\",\"path\":\"\",\"result\":\"ok\",\"bytes\":0,"
                     "\"cp\":0,\"prev\":\"%s\",\"signed_hash\":\"%s\",\"sig\":\"%s\"}", VAULT, h1,
                     h1, sighex) > 0);
    audit_line_hash(l2, strlen(l2), h2);
    f = fopen(path, "w");
    REQUIRE(f);
    fprintf(f, "%s\n%s\n", l1, l2);
    fclose(f);
    REQUIRE((a = open_alice(path)));
    CHECK(audit_event(a, NULL, "open", "/new", 0, 0) == 0);
    audit_close(a);
    CHECK(audit_verify(path, root_fp, v2_key, NULL, &res) == 0);
    CHECK_EQ_INT(res.v2_lines, 2);
    CHECK_EQ_INT(res.sessions, 1);
    lines_read(path, &ls);
    CHECK(strstr(ls.l[2], h2) != NULL);   /* the first format 3 line chains to the old tail */
    /* a format 2 line after format 3 ones: refused */
    {
        char last[65], *l3 = NULL;

        audit_line_hash(ls.l[ls.n - 1], strlen(ls.l[ls.n - 1]), last);
        REQUIRE(asprintf(&l3, "{\"seq\":%zu,\"vault\":\"%s\",\"account\":\"alice\",\"op\":"
                         "\"open\",\"path\":\"/x\",\"cp\":2,\"prev\":\"%s\"}", ls.n + 1, VAULT,
                         last) > 0);
        lines_insert(&ls, ls.n, l3);
        free(l3);
    }
    lines_write(path, &ls, 0);
    CHECK(verify_msg_has(path, NULL, "format 2 line after format 3"));
    lines_free(&ls);
    free(l1);
    free(l2);
    free(msg);
    free(sig);
    remove_scratch();
}

/* Lines are written without json-c objects, but byte for byte as json-c
 * writes them (the chains hash those bytes): every line equals json-c's own
 * serialisation of it, whatever bytes its strings hold. */
static void test_lines_are_json_c_bytes(void)
{
    struct audit_ctx who = { .uid = (uid_t)-2, .pid = 1 };
    struct audit_detail d = { .file = 18446744073709551615ULL, .dest = "/to/\"x\"\\y/\x01\x7f",
                              .set = AUDIT_SET_MODE | AUDIT_SET_OWNER | AUDIT_SET_ATIME |
                                     AUDIT_SET_MTIME | AUDIT_SET_SIZE,
                              .mode = 0104755, .uid = 4294967295u, .gid = 0,
                              .atime_ns = -1, .mtime_ns = 1795892771123456789LL, .size = 0,
                              .before = "name=a full_name=\"\xc3\xa9\"", .after = "" };
    char path[128], all[256];
    struct lines ls;
    struct audit *a;

    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE((a = open_alice(path)));
    audit_set_seal_every(a, 2);
    CHECK(audit_event(a, &who, "create", all, 0, 0) == 0);
    CHECK(audit_event_detail(a, &who, "setattr", "/a/b\t\n\r\b\f.txt", -EPERM, 1, &d) == 0);
    CHECK(audit_event_detail(a, NULL, "rename", "", -EIO, UINT64_MAX, &d) == 0);
    d.extra_key = "keyd";
    d.extra = json_tokener_parse("{\"remote\":\"10.0.0.1\",\"status\":429,\"ok\":true,"
                                 "\"n\":null,\"l\":[1,\"a/b\",{\"x\":-3}],\"s\":\"\\u0001\"}");
    REQUIRE(d.extra);
    CHECK(audit_event_detail(a, NULL, "keyd-unlock", "v/acc", -1000, 0, &d) == 0);
    json_object_put(d.extra);
    audit_close(a);
    REQUIRE((a = open_unsigned(path, "fsck \"\\/\"")));
    CHECK(audit_event(a, &who, "fsck-verify", "/\xff\xfe", -ENOSPC, 7) == 0);
    audit_close(a);
    CHECK(audit_verify(path, root_fp, NULL, NULL, NULL) == 0);
    lines_read(path, &ls);
    CHECK(ls.n >= 12);
    for (size_t i = 0; i < ls.n; i++) {
        json_object *o = audit_line_parse(ls.l[i], strlen(ls.l[i]));
        const char *again = o ? json_object_to_json_string_ext(
                                    o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
                              : "";

        if (strcmp(again, ls.l[i]) != 0)
            printf("# line %zu:\n#  %s\n#  %s (json-c)\n", i + 1, ls.l[i], again);
        CHECK(strcmp(again, ls.l[i]) == 0);
        json_object_put(o);
    }
    CHECK(strstr(ls.l[2], "\"path\":\"\\u0001") != NULL);
    lines_free(&ls);
    remove_scratch();
}

/* An oversized event fails alone; the spool and later events are fine. */
static void test_oversized_event_refused(void)
{
    struct audit *a;
    char path[128];
    char *huge = malloc(AUDIT_LINE_MAX);
    struct audit_verify_result n;

    REQUIRE(huge);
    memset(huge, 'p', AUDIT_LINE_MAX - 1);
    huge[AUDIT_LINE_MAX - 1] = '\0';
    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE((a = open_unsigned(path, "alice")));
    CHECK_EQ_INT(audit_event(a, NULL, "open", huge, 0, 0), -E2BIG);
    CHECK(audit_event(a, NULL, "open", "/ok", 0, 0) == 0);
    audit_close(a);
    CHECK(audit_verify(path, NULL, NULL, NULL, &n) == 0);
    CHECK_EQ_INT(n.events, 3);
    free(huge);
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
    {
        struct audit_identity id = { .account = "alice" };

        CHECK_EQ_INT(audit_open(path, VAULT, &id, &a), -EBADMSG);
    }
    CHECK(a == NULL);
    CHECK(strstr(pfs_err_msg(), "incomplete line") != NULL);
    remove_scratch();
}

/* Two processes appending at once: one spool chain, two sessions. */
static void test_two_processes_one_chain(void)
{
    struct audit_verify_result res;
    char path[128];
    struct audit *a;
    int status = -1, failures = 0;
    pid_t child;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    fflush(stdout);
    child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        int bad = 0;

        if (!(a = open_signed(path, "mallory", mallory_key, mallory_proof, 3)))
            _exit(2);
        for (int i = 0; i < 300; i++)
            bad += audit_event(a, NULL, "grant", "/child", 0, 0) != 0;
        audit_close(a);
        _exit(bad ? 1 : 0);
    }
    REQUIRE((a = open_alice(path)));
    for (int i = 0; i < 300; i++)
        failures += audit_event(a, NULL, "open", "/parent", 0, 0) != 0;
    audit_close(a);
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ_INT(failures, 0);
    CHECK(audit_verify(path, root_fp, NULL, NULL, &res) == 0);
    CHECK_EQ_INT(res.sessions, 2);
    CHECK(res.events >= 600 + 2 * 6);
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

/* THREADS threads of PER_THREAD events each; the failures. */
static int run_workers(struct audit *a, const char *label)
{
    struct worker w[THREADS];
    pthread_t t[THREADS];
    struct timespec t0, t1;
    int failures = 0;

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
    printf("# %s%d events from %d threads in %.3f s\n", label, THREADS * PER_THREAD, THREADS,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return failures;
}

static void test_concurrent_events(void)
{
    static unsigned char seen[THREADS][PER_THREAD];
    struct audit *a;
    char path[128];
    struct lines ls;
    struct audit_verify_result n;
    int dup = 0, failures = 0;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE((a = open_alice(path)));
    audit_set_seal_every(a, 300);
    failures = run_workers(a, "");
    audit_close(a);
    CHECK_EQ_INT(failures, 0);
    CHECK(audit_verify(path, root_fp, NULL, NULL, &n) == 0);
    lines_read(path, &ls);
    CHECK_EQ_INT(n.events, ls.n);
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


/* Deferred group commit (the mount): events return once written to the
 * spool file -- all there before any sync, from every thread -- a process
 * killed without closing loses none, audit_sync and close leave a trail
 * that verifies. */
static void test_group_commit(void)
{
    struct audit *a;
    char path[128];
    struct lines ls;
    struct audit_verify_result n;
    size_t before;
    int failures = 0, status = 0;
    pid_t pid;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE((a = open_alice(path)));
    audit_set_seal_every(a, 300);
    lines_read(path, &ls);
    before = ls.n;
    lines_free(&ls);
    REQUIRE(audit_set_group_commit(a, AUDIT_COMMIT_MS) == 0);
    failures = run_workers(a, "group commit: ");
    CHECK_EQ_INT(failures, 0);
    lines_read(path, &ls);      /* every event in the file when it returned */
    CHECK(ls.n >= before + THREADS * PER_THREAD);
    lines_free(&ls);
    CHECK_EQ_INT(audit_sync(a), 0);
    CHECK_EQ_INT(audit_sync(a), 0);             /* nothing new: at once */
    CHECK_EQ_INT(audit_set_group_commit(a, 0), 0);
    CHECK_EQ_INT(audit_event(a, NULL, "open", "/after", 0, 0), 0);
    audit_close(a);
    CHECK(audit_verify(path, root_fp, NULL, NULL, &n) == 0);

    /* A process killed in group commit mode: its events are all there. */
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        struct audit *c = open_alice(path);

        if (!c || audit_set_group_commit(c, AUDIT_COMMIT_MS_MAX) != 0)
            _exit(3);
        for (int i = 0; i < 40; i++)
            if (audit_event(c, NULL, "write", "/killed", 0, (uint64_t)i) != 0)
                _exit(4);
        kill(getpid(), SIGKILL);
        _exit(5);
    }
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    lines_read(path, &ls);
    int killed = 0;
    for (size_t i = 0; i < ls.n; i++)
        killed += strstr(ls.l[i], "\"path\":\"/killed\"") != NULL;
    CHECK_EQ_INT(killed, 40);
    lines_free(&ls);
    CHECK(audit_verify(path, root_fp, NULL, NULL, &n) == 0);
    remove_scratch();
}

/* A mount in group commit keeps the spool's flock from one line to the
 * next until its flush: another process (pactfs-admin) appending to the
 * same spool meanwhile waits for that flush, never longer, and both chains
 * stay whole (a line appended behind a kept lock would break the mount's). */
static void test_group_commit_shares_the_spool(void)
{
    struct audit_verify_result res;
    char path[128], go;
    struct audit *a;
    int status = -1, failures, ready[2];
    pid_t child;

    make_scratch();
    spool_path(path, sizeof path, "audit.log");
    REQUIRE(pipe(ready) == 0);
    fflush(stdout);
    /* forked before the mount's handle starts its threads: a child forked
     * from a threaded process may find the allocator's lock held forever
     * (seen under AddressSanitizer) */
    child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        struct audit *b;
        double worst = 0;
        int bad = 0;

        close(ready[1]);
        if (read(ready[0], &go, 1) != 1)
            _exit(4);
        if (!(b = open_signed(path, "mallory", mallory_key, mallory_proof, 3)))
            _exit(2);
        for (int i = 0; i < 200; i++) {
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            bad += audit_event(b, NULL, "grant", "/admin", 0, 0) != 0;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
            if (s > worst)
                worst = s;
        }
        audit_close(b);
        printf("# the other process's slowest event: %.3f s\n", worst);
        fflush(stdout);
        _exit(bad ? 1 : worst > 2.0 ? 3 : 0);
    }
    close(ready[0]);
    REQUIRE((a = open_alice(path)));
    REQUIRE(audit_set_group_commit(a, AUDIT_COMMIT_MS) == 0);
    go = 1;
    REQUIRE(write(ready[1], &go, 1) == 1);
    close(ready[1]);
    /* bursts from the mount until the other process is done */
    failures = 0;
    pid_t reaped = 0;
    for (int round = 0; round < 200 && (reaped = waitpid(child, &status, WNOHANG)) == 0; round++)
        failures += run_workers(a, "beside another process: ");
    if (reaped != child)
        waitpid(child, &status, 0);
    audit_close(a);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ_INT(failures, 0);
    CHECK(audit_verify(path, root_fp, NULL, NULL, &res) == 0);
    CHECK_EQ_INT(res.sessions, 2);
    CHECK(res.events >= THREADS * PER_THREAD + 200);
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
    struct audit_verify_result n;

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
    REQUIRE((a = open_unsigned(path, "alice")));
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
        CHECK(audit_verify(path, NULL, NULL, NULL, &n) == 0);
        CHECK(n.events >= 1);
        CHECK(umount(mnt) == 0);
    }
    remove_scratch();
}

int main(void)
{
    static const uint8_t alice_seed[32] = { 'a' }, mallory_seed[32] = { 'm' };

    alice_key = rsa_generate(3072);
    mallory_key = rsa_generate(3072);
    root_key = rsa_generate(3072);
    other_root = rsa_generate(3072);
    alice_ckey = ed25519_from_seed(alice_seed);
    mallory_ckey = ed25519_from_seed(mallory_seed);
    if (!alice_key || !mallory_key || !root_key || !other_root || !alice_ckey || !mallory_ckey) {
        printf("Bail out! cannot generate RSA keys: %s\n", pfs_err_msg());
        return 1;
    }
    alice_proof = test_registry_proof(VAULT, root_key, 2, "alice", alice_key, root_fp);
    mallory_proof = test_registry_proof(VAULT, root_key, 3, "mallory", mallory_key, root_fp);
    free(test_registry_proof(VAULT, other_root, 2, "alice", alice_key, other_fp));
    if (!alice_proof || !mallory_proof) {
        printf("Bail out! cannot build registry proofs: %s\n", pfs_err_msg());
        return 1;
    }
    RUN(test_events_are_json_with_every_field);
    RUN(test_signed_session_verifies);
    RUN(test_other_account_cannot_sign);
    RUN(test_substituted_session_key_refused);
    RUN(test_format5_signed_spool_still_verifies);
    RUN(test_tampering_detected);
    RUN(test_stripped_checkpoints_detected);
    RUN(test_misplaced_checkpoints_refused);
    RUN(test_format4_signed_spool_still_verifies);
    RUN(test_checkpoints_signed_off_the_append_path);
    RUN(test_sealed_within_a_second);
    RUN(test_unsigned_session_limit);
    RUN(test_interleaved_sessions);
    RUN(test_format2_prefix_still_verifies);
    RUN(test_lines_are_json_c_bytes);
    RUN(test_oversized_event_refused);
    RUN(test_two_processes_one_chain);
    RUN(test_process_name_follows_a_rename);
    RUN(test_open_refuses_torn_tail);
    RUN(test_concurrent_events);
    RUN(test_full_spool_fails_closed);
    RUN(test_group_commit);
    RUN(test_group_commit_shares_the_spool);
    free(alice_proof);
    free(mallory_proof);
    EVP_PKEY_free(alice_key);
    EVP_PKEY_free(alice_ckey);
    EVP_PKEY_free(mallory_ckey);
    EVP_PKEY_free(mallory_key);
    EVP_PKEY_free(root_key);
    EVP_PKEY_free(other_root);
    return tap_done();
}
