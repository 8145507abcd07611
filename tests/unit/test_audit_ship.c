#include "config.h"

/* The audit shipper against a real pactfs-auditd over TLS on 127.0.0.1,
 * with a test PKI from tests/keyd/mkca.sh plus an auditor certificate.
 * Needs ./pactfs-auditd (or $PACTFS_AUDITD) and $srcdir (make check). */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/pem.h>

#include "audit.h"
#include "audit_test_registry.h"
#include "audit_ship.h"
#include "crypto.h"
#include "error.h"
#include "server_harness.h"
#include "tap.h"

#define VAULT "0123456789abcdef0123456789abcdef"
#define VAULT2 "fedcba9876543210fedcba9876543210"
#define SENDER_CN_FILE "pactfs%20test%20client.ndjson"   /* escaped CN of client.pem */

static char scratch[128], pki[200], spool[256];
static EVP_PKEY *alice_key, *other_key, *root_key;
static char root_fp[65];

struct server {
    pid_t pid;
    unsigned port;
    char dir[300];
    char url[64];
};
static struct server rcv;

/* ------------------------------------------------------------ files */

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    int ok;

    if (!f)
        return -1;
    ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static off_t file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Append n events to a spool in a session of alice (id 2) whose registry
 * proof holds proof_key, signed with key, checkpointing every 50. */
static int add_events_as(const char *path, const char *vault, EVP_PKEY *key,
                         EVP_PKEY *proof_key, unsigned n)
{
    struct audit *a = NULL;
    struct audit_ctx who = { 1000, getpid() };
    char p[64], *proof = test_registry_proof(vault, root_key, 2, "alice", proof_key, root_fp);
    struct audit_identity id = { .account = "alice", .account_id = 2, .signer = key,
                                 .proof = proof };
    int rc = proof ? audit_open(path, vault, &id, &a) : -ENOMEM;

    free(proof);
    if (rc)
        return rc;
    audit_set_seal_every(a, 50);
    for (unsigned i = 0; i < n && !rc; i++) {
        snprintf(p, sizeof p, "Contracts/file-%u.pdf", i);
        rc = audit_event(a, &who, "open", p, 0, i);
    }
    audit_close(a);
    return rc;
}

static int add_events(const char *path, const char *vault, EVP_PKEY *key, unsigned n)
{
    return add_events_as(path, vault, key, key, n);
}

/* ------------------------------------------------------------ the receiver */

static const char *auditd_binary(void)
{
    const char *p = getenv("PACTFS_AUDITD");
    return p ? p : "./pactfs-auditd";
}

/* Start pactfs-auditd -f on s->port with its store in s->dir; wait until
 * it listens (10 s at most).  Keeps port and dir across restarts. */
static int server_start(struct server *s)
{
    char conf[2048], path[400], log[400];

    snprintf(conf, sizeof conf,
             "listen_address = \"127.0.0.1\";\nport = %u;\n"
             "cert_file = \"%s/server.pem\";\nkey_file = \"%s/server.key\";\n"
             "client_ca_file = \"%s/ca.pem\";\nstore_dir = \"store\";\n"
             "vaults = ( { id = \"%s\"; root_fingerprint = \"%s\"; },\n"
             "           { id = \"%s\"; root_fingerprint = \"%s\"; } );\n"
             "auditors = [ \"pactfs test auditor\" ];\n",
             s->port, pki, pki, pki, VAULT, root_fp, VAULT2, root_fp);
    snprintf(path, sizeof path, "%s/auditd.conf", s->dir);
    if (write_file(path, conf) < 0)
        return -1;
    snprintf(log, sizeof log, "%s/stderr.log", s->dir);
    return harness_start(&s->pid, auditd_binary(), "pactfs-auditd", path, log, true, s->port);
}

static int server_new(struct server *s, const char *name)
{
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s/%s", scratch, name);
    if (mkdir(s->dir, 0700) < 0)
        return -1;
    s->port = harness_free_port();
    snprintf(s->url, sizeof s->url, "https://127.0.0.1:%u", s->port);
    return server_start(s);
}

/* SIGTERM (or sig), wait 10 s at most; 0 if it exited with status 0. */
static int server_stop(struct server *s, int sig)
{
    return harness_stop(&s->pid, sig, 10000);
}

static void stream_file(const struct server *s, const char *vault, char *out, size_t n)
{
    snprintf(out, n, "%s/store/%s/%s", s->dir, vault, SENDER_CN_FILE);
}

/* ------------------------------------------------------------ HTTP as an auditor */

struct body {
    char *p;
    size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    char *q = realloc(b->p, b->len + size * n + 1);

    if (!q)
        return 0;
    memcpy(q + b->len, p, size * n);
    b->p = q;
    b->len += size * n;
    b->p[b->len] = '\0';
    return size * n;
}

/* GET (or POST data) with the named certificate ("" = none); HTTP status. */
static long http(const char *url_path, const char *cert, const char *post, struct body *b)
{
    CURL *h = curl_easy_init();
    char url[512], c[300], k[300];
    long status = 0;

    memset(b, 0, sizeof *b);
    if (!h)
        return -1;
    snprintf(url, sizeof url, "%s%s", rcv.url, url_path);
    snprintf(c, sizeof c, "%s/%s.pem", pki, cert);
    snprintf(k, sizeof k, "%s/%s.key", pki, cert);
    curl_easy_setopt(h, CURLOPT_URL, url);
    snprintf(url, sizeof url, "%s/ca.pem", pki);
    curl_easy_setopt(h, CURLOPT_CAINFO, url);
    if (cert[0]) {
        curl_easy_setopt(h, CURLOPT_SSLCERT, c);
        curl_easy_setopt(h, CURLOPT_SSLKEY, k);
    }
    if (post)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    return status;
}

/* What the receiver holds for VAULT, as an auditor reads it. */
static char *receiver_events(const char *vault, uint64_t since, size_t *len)
{
    struct body b;
    char q[128];

    snprintf(q, sizeof q, "/v1/events?vault=%s&since=%llu", vault, (unsigned long long)since);
    if (http(q, "auditor", NULL, &b) != 200) {
        free(b.p);
        *len = 0;
        return NULL;
    }
    *len = b.len;
    return b.p ? b.p : strdup("");
}

/* The receiver's copy equals the spool byte for byte (nothing lost, nothing twice). */
static bool receiver_equals(const char *spool_path, const char *vault)
{
    size_t a = 0, b = 0;
    char *want = harness_read_all(spool_path, &a), *got = receiver_events(vault, 0, &b);
    bool same = want && got && a == b && memcmp(want, got, a) == 0;

    if (!same)
        printf("# receiver holds %zu bytes, spool %zu\n", b, a);
    free(want);
    free(got);
    return same;
}

static struct audit_ship_opts ship_opts(const char *spool_path, const char *url)
{
    static char ca[300], cert[300], key[300];
    static struct tls_conf tls;
    struct audit_ship_opts o;

    snprintf(ca, sizeof ca, "%s/ca.pem", pki);
    snprintf(cert, sizeof cert, "%s/client.pem", pki);
    snprintf(key, sizeof key, "%s/client.key", pki);
    tls.ca_file = ca;
    tls.cert_file = cert;
    tls.key_file = key;
    memset(&o, 0, sizeof o);
    o.spool_path = spool_path;
    o.url = url;
    o.tls = &tls;
    o.poll_ms = 50;
    o.backoff_min_ms = 50;
    o.backoff_max_ms = 400;
    o.timeout_ms = 5000;
    return o;
}

static uint64_t cursor_offset(const char *spool_path)
{
    struct audit_cursor c;

    return audit_cursor_load(spool_path, &c) == 0 ? c.offset : UINT64_MAX;
}

/* ------------------------------------------------------------ tests */

static void test_cursor_file(void)
{
    char path[300], cpath[320];
    struct audit_cursor c = { 1234, 7, "" }, got;

    snprintf(path, sizeof path, "%s/cursor-test.log", scratch);
    snprintf(cpath, sizeof cpath, "%s.cursor", path);
    CHECK_EQ_INT(audit_cursor_load(path, &got), 0);      /* missing = start */
    CHECK_EQ_INT(got.offset, 0);
    memset(c.hash, 'a', 64);
    CHECK_EQ_INT(audit_cursor_store(path, &c), 0);
    CHECK_EQ_INT(audit_cursor_load(path, &got), 0);
    CHECK_EQ_INT(got.offset, 1234);
    CHECK_EQ_INT(got.seq, 7);
    CHECK(strcmp(got.hash, c.hash) == 0);
    REQUIRE(write_file(cpath, "{\"version\":1,\"offset\":12,\"seq\":1,\"hash\":\"zz\"}\n") == 0);
    CHECK_EQ_INT(audit_cursor_load(path, &got), -EBADMSG);
    REQUIRE(write_file(cpath, "garbage") == 0);
    CHECK_EQ_INT(audit_cursor_load(path, &got), -EBADMSG);
    unlink(cpath);
}

static EVP_PKEY *alice_only(void *arg, const char *vault, const char *account)
{
    (void)arg;
    (void)vault;
    if (strcmp(account, "alice") != 0 || EVP_PKEY_up_ref(alice_key) != 1)
        return NULL;
    return alice_key;
}

static void test_chain_check_follows_audit_verify(void)
{
    char path[300], why[512], *buf, *line, *nl;
    struct audit_chain c;
    size_t len = 0, n = 0;
    int bad = 0;

    snprintf(path, sizeof path, "%s/chain.log", scratch);
    REQUIRE(add_events(path, VAULT, alice_key, 120) == 0);
    buf = harness_read_all(path, &len);
    REQUIRE(buf);
    audit_chain_init(&c, VAULT, root_fp);
    for (line = buf; (nl = memchr(line, '\n', (size_t)(buf + len - line))); line = nl + 1, n++)
        if (audit_chain_check(&c, line, (size_t)(nl - line), alice_only, NULL, why, sizeof why))
            bad++;
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(c.next_seq, n + 1);
    CHECK_EQ_INT(c.sessions, 1);
    /* The same lines again do not continue the chain (seq 1 after n). */
    line = buf;
    nl = memchr(line, '\n', len);
    CHECK_EQ_INT(audit_chain_check(&c, line, (size_t)(nl - line), alice_only, NULL, why,
                                   sizeof why), -EBADMSG);
    /* Another vault's stream refuses the line. */
    audit_chain_free(&c);
    audit_chain_init(&c, VAULT2, root_fp);
    CHECK_EQ_INT(audit_chain_check(&c, line, (size_t)(nl - line), alice_only, NULL, why,
                                   sizeof why), -EBADMSG);
    audit_chain_free(&c);
    free(buf);
}

/* audit_verify and the receiver's line check are one set of rules: an
 * edited line is refused by both, with the same sentence. */
static void test_verify_and_chain_check_give_one_verdict(void)
{
    char path[300], why[512], want[600], *buf, *line, *nl, *p;
    struct audit_chain c;
    size_t len = 0;
    struct audit_verify_result n;
    unsigned lineno = 1;
    int rc = 0;

    snprintf(path, sizeof path, "%s/one-verdict.log", scratch);
    REQUIRE(add_events(path, VAULT, alice_key, 20) == 0);
    buf = harness_read_all(path, &len);
    REQUIRE(buf && (p = strstr(buf, "file-7.pdf")));
    p[5] = '8';                                   /* edit one event */
    REQUIRE(write_file(path, buf) == 0);
    audit_chain_init(&c, NULL, root_fp);
    for (line = buf; !rc && (nl = memchr(line, '\n', (size_t)(buf + len - line)));
         line = nl + 1, lineno++)
        rc = audit_chain_check(&c, line, (size_t)(nl - line), alice_only, NULL, why, sizeof why);
    CHECK_EQ_INT(rc, -EBADMSG);
    CHECK(strstr(why, "prev does not match") != NULL);
    snprintf(want, sizeof want, "line %u: %s", lineno - 1, why);
    audit_chain_free(&c);
    CHECK_EQ_INT(audit_verify(path, root_fp, NULL, NULL, &n), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), want) != NULL);
    CHECK_EQ_INT(n.events, lineno - 2);
    free(buf);
}

static void test_ship_whole_spool(void)
{
    struct audit_ship_opts o = ship_opts(spool, rcv.url);
    uint64_t batches = 0;
    struct body b;

    REQUIRE(add_events(spool, VAULT, alice_key, 300) == 0);
    o.max_lines = 64;
    CHECK_EQ_INT(audit_ship_once(&o, &batches), 0);
    CHECK(batches >= 5);                         /* 300+ lines in batches of 64 */
    CHECK_EQ_INT(cursor_offset(spool), (uint64_t)file_size(spool));
    CHECK(receiver_equals(spool, VAULT));
    CHECK_EQ_INT(http("/v1/verify?vault=" VAULT, "auditor", NULL, &b), 200);
    CHECK(b.p && strstr(b.p, "\"ok\":true") && !strstr(b.p, "\"ok\":false"));
    free(b.p);
    /* Nothing new: no batch. */
    CHECK_EQ_INT(audit_ship_once(&o, &batches), 0);
    CHECK_EQ_INT(batches, 0);
}

static void test_resend_after_lost_cursor_is_deduplicated(void)
{
    struct audit_ship_opts o = ship_opts(spool, rcv.url);
    char sf[400];
    off_t before;

    stream_file(&rcv, VAULT, sf, sizeof sf);
    before = file_size(sf);
    REQUIRE(before > 0);
    REQUIRE(add_events(spool, VAULT, alice_key, 10) == 0);
    {   /* the shipper crashed before writing its cursor: it resends everything */
        char cpath[300];
        snprintf(cpath, sizeof cpath, "%s.cursor", spool);
        REQUIRE(unlink(cpath) == 0);
    }
    CHECK_EQ_INT(audit_ship_once(&o, NULL), 0);
    CHECK_EQ_INT(cursor_offset(spool), (uint64_t)file_size(spool));
    CHECK(file_size(sf) > before);
    CHECK(receiver_equals(spool, VAULT));
}

static bool wait_for(const struct audit_ship *s, bool (*cond)(const struct audit_ship_status *),
                     int seconds)
{
    struct audit_ship_status st;

    for (int i = 0; i < seconds * 20; i++) {
        audit_ship_get_status((struct audit_ship *)s, &st);
        if (cond(&st))
            return true;
        usleep(50000);
    }
    return false;
}

static bool two_batches(const struct audit_ship_status *st) { return st->batches_sent >= 2; }
static bool failing(const struct audit_ship_status *st) { return st->failures >= 2; }
static bool caught_up(const struct audit_ship_status *st)
{
    return st->failures == 0 && st->cursor.offset == (uint64_t)file_size(spool);
}

static void test_receiver_killed_midway_nothing_lost(void)
{
    struct audit_ship_opts o = ship_opts(spool, rcv.url);
    struct audit_ship *s = NULL;
    struct audit_cursor at_kill, later;

    REQUIRE(add_events(spool, VAULT, alice_key, 400) == 0);
    o.max_lines = 8;                             /* many small batches */
    REQUIRE(audit_ship_start(&o, &s) == 0);
    CHECK(wait_for(s, two_batches, 20));
    CHECK(server_stop(&rcv, SIGKILL) < 0);       /* killed, not a clean exit */
    REQUIRE(audit_cursor_load(spool, &at_kill) == 0);
    CHECK(at_kill.offset < (uint64_t)file_size(spool));
    CHECK(add_events(spool, VAULT, alice_key, 20) == 0);   /* the spool keeps growing */
    CHECK(wait_for(s, failing, 20));
    REQUIRE(audit_cursor_load(spool, &later) == 0);
    CHECK_EQ_INT(later.offset, at_kill.offset);   /* no ack, no advance */
    REQUIRE(server_start(&rcv) == 0);
    CHECK(wait_for(s, caught_up, 60));
    CHECK_EQ_INT(audit_ship_stop(s, 5000), 0);
    CHECK_EQ_INT(cursor_offset(spool), (uint64_t)file_size(spool));
    CHECK(receiver_equals(spool, VAULT));
}

static void test_stop_drains_lines_written_just_before(void)
{
    struct audit_ship_opts o = ship_opts(spool, rcv.url);
    struct audit_ship *s = NULL;

    o.poll_ms = 5000;                            /* only the stop wakes it */
    REQUIRE(audit_ship_start(&o, &s) == 0);
    usleep(300000);
    REQUIRE(add_events(spool, VAULT, alice_key, 5) == 0);
    CHECK_EQ_INT(audit_ship_stop(s, 10000), 0);
    CHECK_EQ_INT(cursor_offset(spool), (uint64_t)file_size(spool));
    CHECK(receiver_equals(spool, VAULT));
}

static void test_http_500_leaves_cursor(void)
{
    struct server bad;
    char path[400], sp[300];
    struct audit_ship_opts o;

    REQUIRE(server_new(&bad, "failing") == 0);
    /* The stream's file is a directory: the receiver cannot store, says 500. */
    snprintf(path, sizeof path, "%s/store/%s", bad.dir, VAULT);
    CHECK(mkdir(path, 0700) == 0);
    stream_file(&bad, VAULT, path, sizeof path);
    CHECK(mkdir(path, 0700) == 0);
    snprintf(sp, sizeof sp, "%s/spool500.log", scratch);
    REQUIRE(add_events(sp, VAULT, alice_key, 10) == 0);
    o = ship_opts(sp, bad.url);
    CHECK_EQ_INT(audit_ship_once(&o, NULL), -EIO);
    CHECK(strstr(pfs_err_msg(), "500") != NULL);
    CHECK_EQ_INT(cursor_offset(sp), 0);
    CHECK_EQ_INT(server_stop(&bad, SIGTERM), 0);
    /* Receiver gone altogether: still no advance, and a clear message. */
    CHECK_EQ_INT(audit_ship_once(&o, NULL), -EHOSTUNREACH);
    CHECK_EQ_INT(cursor_offset(sp), 0);
}

static void test_stop_bounded_when_receiver_down(void)
{
    char sp[300];
    struct audit_ship_opts o;
    struct audit_ship *s = NULL;
    struct timespec t0, t1;

    snprintf(sp, sizeof sp, "%s/spool-down.log", scratch);
    REQUIRE(add_events(sp, VAULT, alice_key, 3) == 0);
    o = ship_opts(sp, "https://127.0.0.1:1");
    REQUIRE(audit_ship_start(&o, &s) == 0);
    usleep(200000);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(audit_ship_stop(s, 500) < 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(t1.tv_sec - t0.tv_sec < 3);
    CHECK_EQ_INT(cursor_offset(sp), 0);
}

/* Copy of the shipped spool with one new line edited: the receiver must
 * refuse the batch (409) and keep nothing of it. */
static void test_tampered_line_refused_and_not_stored(void)
{
    char tampered[300], sf[400], *buf, *p;
    size_t len = 0;
    off_t before;
    FILE *f;
    struct audit_ship_opts o = ship_opts(spool, rcv.url);
    struct audit_cursor cur;

    snprintf(tampered, sizeof tampered, "%s/tampered.log", scratch);
    stream_file(&rcv, VAULT, sf, sizeof sf);
    before = file_size(sf);
    REQUIRE(audit_cursor_load(spool, &cur) == 0);
    REQUIRE(add_events(spool, VAULT, alice_key, 30) == 0);
    buf = harness_read_all(spool, &len);
    REQUIRE(buf);
    p = strstr(buf + cur.offset, "file-10.pdf");   /* a new, unshipped line */
    REQUIRE(p);
    p[5] = '9';
    f = fopen(tampered, "w");
    REQUIRE(f);
    CHECK(fwrite(buf, 1, len, f) == len);
    fclose(f);
    free(buf);
    REQUIRE(audit_cursor_store(tampered, &cur) == 0);
    o.spool_path = tampered;
    CHECK_EQ_INT(audit_ship_once(&o, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "409") != NULL);
    CHECK(strstr(pfs_err_msg(), "prev") != NULL);
    CHECK_EQ_INT(file_size(sf), before);          /* nothing of the batch stored */
    CHECK_EQ_INT(cursor_offset(tampered), cur.offset);
    /* The genuine spool still goes through afterwards. */
    o.spool_path = spool;
    CHECK_EQ_INT(audit_ship_once(&o, NULL), 0);
    CHECK(receiver_equals(spool, VAULT));
}

/* An already-stored line sent again with different bytes is a conflict. */
static void test_altered_duplicate_refused(void)
{
    char altered[300], *buf, *p;
    size_t len = 0;
    FILE *f;
    struct audit_ship_opts o = ship_opts(NULL, rcv.url);

    snprintf(altered, sizeof altered, "%s/altered.log", scratch);
    buf = harness_read_all(spool, &len);
    REQUIRE(buf);
    p = strstr(buf, "file-3.pdf");
    REQUIRE(p);
    p[5] = '4';
    f = fopen(altered, "w");
    REQUIRE(f);
    CHECK(fwrite(buf, 1, len, f) == len);
    fclose(f);
    free(buf);
    o.spool_path = altered;
    CHECK_EQ_INT(audit_ship_once(&o, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "differs") != NULL);
    CHECK_EQ_INT(cursor_offset(altered), 0);
    CHECK(receiver_equals(spool, VAULT));
}

/* Checkpoints signed by a key other than the one alice's registry proof holds. */
static void test_forged_checkpoint_refused(void)
{
    char sp[300], sf[400];
    struct audit_ship_opts o;

    snprintf(sp, sizeof sp, "%s/forged.log", scratch);
    REQUIRE(add_events_as(sp, VAULT2, other_key, alice_key, 60) == 0);
    o = ship_opts(sp, rcv.url);
    CHECK_EQ_INT(audit_ship_once(&o, NULL), -EBADMSG);
    CHECK(strstr(pfs_err_msg(), "signature") != NULL);
    stream_file(&rcv, VAULT2, sf, sizeof sf);
    CHECK(file_size(sf) <= 0);                    /* nothing kept */
}

/* A spool replaced behind the shipper's back is not shipped over the old
 * stream: the cursor no longer matches. */
static void test_replaced_spool_not_shipped(void)
{
    char sp[300], cpath[320];
    struct audit_ship_opts o;
    struct audit_cursor before;

    snprintf(sp, sizeof sp, "%s/replaced.log", scratch);
    snprintf(cpath, sizeof cpath, "%s.cursor", sp);
    REQUIRE(add_events(sp, VAULT2, alice_key, 5) == 0);
    REQUIRE(audit_cursor_store(sp, &(struct audit_cursor){ 0, 0, "" }) == 0);
    REQUIRE(audit_cursor_load(spool, &before) == 0);
    REQUIRE(audit_cursor_store(sp, &before) == 0);     /* a cursor far beyond this spool */
    o = ship_opts(sp, rcv.url);
    CHECK_EQ_INT(audit_ship_once(&o, NULL), -ESTALE);
    CHECK(strstr(pfs_err_msg(), "shorter") != NULL);
    CHECK_EQ_INT(cursor_offset(sp), before.offset);
    /* Same length, other bytes: the hash at the cursor differs. */
    before.offset = (uint64_t)file_size(sp);
    REQUIRE(audit_cursor_store(sp, &before) == 0);
    CHECK_EQ_INT(audit_ship_once(&o, NULL), -ESTALE);
    CHECK(strstr(pfs_err_msg(), "does not hold") != NULL);
    unlink(cpath);
}

static void test_queries_need_an_auditor_certificate(void)
{
    struct body b;

    CHECK_EQ_INT(http("/v1/events?vault=" VAULT, "client", NULL, &b), 403);
    free(b.p);
    CHECK(http("/v1/events?vault=" VAULT, "", NULL, &b) != 200);   /* no certificate */
    free(b.p);
    CHECK(http("/v1/events", "", "{}\n", &b) != 200);
    free(b.p);
    CHECK_EQ_INT(http("/v1/events?vault=nothex", "auditor", NULL, &b), 400);
    free(b.p);
}

static void test_events_since(void)
{
    size_t len = 0;
    char *got = receiver_events(VAULT, 100, &len);
    uint64_t seq = 0;

    REQUIRE(got);
    CHECK(audit_line_seq(got, strcspn(got, "\n"), &seq) == 0);
    CHECK_EQ_INT(seq, 101);
    free(got);
}

static void test_verify_notices_an_edited_store(void)
{
    char sf[400];
    struct body b;
    int fd;

    stream_file(&rcv, VAULT, sf, sizeof sf);
    fd = open(sf, O_WRONLY);
    REQUIRE(fd >= 0);
    CHECK(pwrite(fd, "X", 1, 300) == 1);
    close(fd);
    CHECK_EQ_INT(http("/v1/verify?vault=" VAULT, "auditor", NULL, &b), 200);
    CHECK(b.p && strstr(b.p, "\"ok\":false"));
    free(b.p);
}

static void test_receiver_stops_cleanly(void)
{
    CHECK_EQ_INT(server_stop(&rcv, SIGTERM), 0);   /* 0 also means no leak report */
}

/* ------------------------------------------------------------ setup */

static int make_pki(void)
{
    const char *srcdir = getenv("srcdir");
    char cmd[2048];

    snprintf(pki, sizeof pki, "%s/pki", scratch);
    snprintf(cmd, sizeof cmd, "sh '%s/tests/keyd/mkca.sh' '%s' && cd '%s' && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout auditor.key -out auditor.csr -subj '/CN=pactfs test auditor' 2>/dev/null && "
             "printf 'extendedKeyUsage=clientAuth\\nbasicConstraints=CA:FALSE\\n' > auditor.ext && "
             "openssl x509 -req -in auditor.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out auditor.pem -days 2 -extfile auditor.ext 2>/dev/null && "
             "rm -f auditor.csr auditor.ext ca.srl",
             srcdir ? srcdir : ".", pki, pki);
    return system(cmd) == 0 ? 0 : -1;
}

static int setup(void)
{
    char path[300];

    snprintf(scratch, sizeof scratch, "/tmp/pactfs-test-auditship.XXXXXX");
    if (!mkdtemp(scratch) || make_pki() < 0) {
        printf("# cannot make the test PKI\n");
        return -1;
    }
    alice_key = rsa_generate(3072);
    other_key = rsa_generate(3072);
    root_key = rsa_generate(3072);
    if (!alice_key || !other_key || !root_key || registry_fingerprint_hex(root_key, root_fp))
        return -1;
    (void)path;
    snprintf(spool, sizeof spool, "%s/audit.log", scratch);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return server_new(&rcv, "main");
}

int main(void)
{
    char cmd[300];

    if (setup() < 0) {
        printf("# setup failed: is ./pactfs-auditd built (or $PACTFS_AUDITD set)?\n");
        RUN(test_receiver_stops_cleanly);
        return tap_done();
    }
    RUN(test_cursor_file);
    RUN(test_chain_check_follows_audit_verify);
    RUN(test_verify_and_chain_check_give_one_verdict);
    RUN(test_ship_whole_spool);
    RUN(test_resend_after_lost_cursor_is_deduplicated);
    RUN(test_receiver_killed_midway_nothing_lost);
    RUN(test_stop_drains_lines_written_just_before);
    RUN(test_http_500_leaves_cursor);
    RUN(test_stop_bounded_when_receiver_down);
    RUN(test_tampered_line_refused_and_not_stored);
    RUN(test_altered_duplicate_refused);
    RUN(test_forged_checkpoint_refused);
    RUN(test_replaced_spool_not_shipped);
    RUN(test_queries_need_an_auditor_certificate);
    RUN(test_events_since);
    RUN(test_verify_notices_an_edited_store);
    RUN(test_receiver_stops_cleanly);
    EVP_PKEY_free(alice_key);
    EVP_PKEY_free(other_key);
    EVP_PKEY_free(root_key);
    curl_global_cleanup();
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", scratch);
    return tap_done();
}
