#include "config.h"

/* share_keyd against a real pactfs-keyd over TLS on 127.0.0.1, with a test
 * PKI made by tests/keyd/mkca.sh.  Needs ./pactfs-keyd (or $PACTFS_KEYD) and
 * openssl on PATH. */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "buf.h"
#include "crypto.h"
#include "enrol.h"
#include "error.h"
#include "keyring.h"
#include "share.h"
#include "server_harness.h"
#include "tap.h"

#define VAULT "0123456789abcdef0123456789abcdef"
#define MAX_FAILURES 3
#define LOCKOUT_SECONDS 2

struct server {
    pid_t pid;
    unsigned port;
    char dir[512];
    char url[64];
};

static char scratch[256];
static char pki[320];
static char token_file[320];
static struct server main_srv;

/* Every secret value the tests saw, to grep the service's files for. */
#define MAX_SECRETS 64
static uint8_t secrets[MAX_SECRETS][32];
static unsigned n_secrets;
static const char *password = "correct horse battery staple 42";

static void remember_secret(const uint8_t *p)
{
    if (n_secrets < MAX_SECRETS)
        memcpy(secrets[n_secrets++], p, 32);
}

static void fill(uint8_t *p, uint8_t v)
{
    memset(p, v, SHARE_AUTH_LEN);
    p[0] = (uint8_t)(v ^ 0x5a);   /* not a trivial pattern that could occur by chance */
}

/* ------------------------------------------------------------ helpers */

static int write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    size_t n = strlen(text);

    if (fd < 0)
        return -1;
    if (write(fd, text, n) != (ssize_t)n) {
        close(fd);
        return -1;
    }
    return close(fd);
}

static bool file_contains(const char *path, const void *needle, size_t n)
{
    size_t len;
    char *buf = harness_read_all(path, &len);
    bool found = buf && memmem(buf, len, needle, n) != NULL;

    free(buf);
    return found;
}

/* Raw bytes, lower-case hex or upper-case hex of p anywhere in path? */
static bool file_contains_secret(const char *path, const uint8_t *p, size_t n)
{
    char hex[2 * 64 + 1];

    hex_encode(p, n, hex);
    if (file_contains(path, p, n) || file_contains(path, hex, 2 * n))
        return true;
    for (char *c = hex; *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    return file_contains(path, hex, 2 * n);
}

static const char *keyd_binary(void)
{
    const char *p = getenv("PACTFS_KEYD");
    return p ? p : "./pactfs-keyd";
}

struct server_opts {
    const char *cert;          /* base name in the PKI dir */
    bool client_ca;
    unsigned max_failures;
    unsigned source_max_failures;
};

/* Write a configuration and start pactfs-keyd -f; wait until it listens
 * (at most 10 s). */
static int server_start(struct server *s, const char *name, const struct server_opts *o)
{
    char conf[4096], path[700], log[700];

    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s/%s", scratch, name);
    if (mkdir(s->dir, 0700) < 0)
        return -1;
    s->port = harness_free_port();
    snprintf(s->url, sizeof s->url, "https://127.0.0.1:%u", s->port);
    snprintf(conf, sizeof conf,
             "listen_address = \"127.0.0.1\";\nport = %u;\n"
             "cert_file = \"%s/%s.pem\";\nkey_file = \"%s/%s.key\";\n%s%s%s"
             "database = \"keyd.db\";\nadmin_token_file = \"%s\";\n"
             "master_key_file = \"%s/master.key\";\naudit_log = \"audit.log\";\n"
             "debug_capture = \"capture.log\";\n"
             "lockout: { max_failures = %u; lockout_seconds = %d;"
             " source_max_failures = %u; source_lockout_seconds = %d; };\n",
             s->port, pki, o->cert, pki, o->cert,
             o->client_ca ? "client_ca_file = \"" : "", o->client_ca ? pki : "",
             o->client_ca ? "/ca.pem\";\n" : "",
             token_file, scratch, o->max_failures, LOCKOUT_SECONDS, o->source_max_failures,
             LOCKOUT_SECONDS);
    snprintf(path, sizeof path, "%s/keyd.conf", s->dir);
    if (write_file(path, conf, 0600) < 0)
        return -1;
    snprintf(log, sizeof log, "%s/stderr.log", s->dir);
    return harness_start(&s->pid, keyd_binary(), "pactfs-keyd", path, log, false, s->port);
}

/* SIGTERM, wait (5 s at most); 0 if it exited cleanly (no leak report). */
static int server_stop(struct server *s)
{
    return harness_stop(&s->pid, SIGTERM, 5000);
}

static void server_file(const struct server *s, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", s->dir, name);
}

static struct share_provider *client_for(const char *url, const char *ca, const char *cert)
{
    char ca_path[512], cert_path[512], key_path[512];
    struct keyd_client_config cfg = { .url = url, .ca_file = ca_path, .timeout_ms = 3000 };
    struct share_provider *sp = NULL;

    snprintf(ca_path, sizeof ca_path, "%s/%s.pem", pki, ca);
    if (cert) {
        snprintf(cert_path, sizeof cert_path, "%s/%s.pem", pki, cert);
        snprintf(key_path, sizeof key_path, "%s/%s.key", pki, cert);
        cfg.cert_file = cert_path;
        cfg.key_file = key_path;
    }
    if (share_keyd_open(&cfg, &sp) < 0) {
        printf("# share_keyd_open: %s\n", pfs_err_msg());
        return NULL;
    }
    return sp;
}

static struct share_provider *main_client(void)
{
    return client_for(main_srv.url, "ca", NULL);
}

#define ACCOUNT_ID 7   /* any id: the code derives its key for (vault, id) */

/* Register a fresh one-time code for account (an admin call, as
 * pactfs-admin account-add does) into code; 0 or -errno. */
static int register_code(struct share_provider *sp, const char *account,
                         char code[ENROL_CODE_TEXT_MAX], int64_t expires)
{
    int rc = enrol_code_generate(code);

    rc = rc ? rc : enrol_code_register(sp, VAULT, ACCOUNT_ID, account, code, expires);
    if (rc)
        printf("# register code for %s: %d %s\n", account, rc, pfs_err_msg());
    return rc;
}

/* Enroll with code (as pactfs-admin enroll does); the share to share_out. */
static int enroll_with(struct share_provider *sp, const char *account, const char *code,
                       const uint8_t *auth, uint8_t *share_out)
{
    struct enrol_signer signer = { .vault_id = VAULT, .account_id = ACCOUNT_ID, .code = code };

    enrol_signer_set(sp, &signer);
    int rc = sp->ops->enroll(sp, VAULT, account, auth, share_out);
    enrol_signer_set(sp, NULL);
    return rc;
}

/* Enroll account with auth under a fresh code; the share to share_out. */
static int enroll(struct share_provider *sp, const char *account, const uint8_t *auth,
                  uint8_t *share_out)
{
    char code[ENROL_CODE_TEXT_MAX];
    int rc = register_code(sp, account, code, (int64_t)time(NULL) + 600);

    rc = rc ? rc : enroll_with(sp, account, code, auth, share_out);
    if (rc == 0) {
        remember_secret(share_out);
        remember_secret(auth);
    } else {
        printf("# enroll %s: %d %s\n", account, rc, pfs_err_msg());
    }
    return rc;
}

/* ------------------------------------------------------------ cases */

static void test_enroll_then_login_returns_same_share(void)
{
    struct share_provider *sp = main_client();
    uint8_t auth[32], share[32], got[32];
    unsigned retry = 99;

    REQUIRE(sp);
    fill(auth, 0x11);
    REQUIRE(enroll(sp, "alice", auth, share) == 0);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "alice", auth, got, &retry), 0);
    CHECK_MEM(got, share, 32);
    CHECK_EQ_INT(retry, 0);
    share_provider_destroy(sp);
}

/* A code enrols once; without one the service is not even asked. */
static void test_enrolment_code_is_single_use(void)
{
    struct share_provider *sp = main_client();
    uint8_t auth[32], share[32];
    char code[ENROL_CODE_TEXT_MAX];

    REQUIRE(sp);
    fill(auth, 0x13);
    CHECK_EQ_INT(sp->ops->enroll(sp, VAULT, "oscar", auth, share), -EACCES);
    CHECK(strstr(pfs_err_msg(), "one-time") != NULL);
    REQUIRE(register_code(sp, "oscar", code, (int64_t)time(NULL) + 600) == 0);
    REQUIRE(enroll_with(sp, "oscar", code, auth, share) == 0);
    remember_secret(share);
    remember_secret(auth);
    CHECK_EQ_INT(enroll_with(sp, "oscar", code, auth, share), -EACCES);
    CHECK(strstr(pfs_err_msg(), "no enrolment code") != NULL);
    share_provider_destroy(sp);
}

/* Registering a code is an admin call: no token or a wrong one is refused. */
static void test_code_registration_needs_admin_token(void)
{
    struct share_provider *sp = main_client();
    char code[ENROL_CODE_TEXT_MAX], bad[600];

    REQUIRE(sp);
    unsetenv("PACTFS_KEYD_ADMIN_TOKEN_FILE");
    CHECK_EQ_INT(register_code(sp, "mallory", code, (int64_t)time(NULL) + 600), -EACCES);
    snprintf(bad, sizeof bad, "%s/bad-token", scratch);
    REQUIRE(write_file(bad, "not-the-token-at-all-0123456789\n", 0600) == 0);
    setenv("PACTFS_KEYD_ADMIN_TOKEN_FILE", bad, 1);
    CHECK_EQ_INT(register_code(sp, "mallory", code, (int64_t)time(NULL) + 600), -EACCES);
    CHECK(strstr(pfs_err_msg(), "refused the admin token") != NULL);
    setenv("PACTFS_KEYD_ADMIN_TOKEN_FILE", token_file, 1);
    share_provider_destroy(sp);
}

static int db_failures(const char *account)
{
    char path[700];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int n = -1;

    server_file(&main_srv, "keyd.db", path, sizeof path);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT failures FROM accounts WHERE account = ?1", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void test_wrong_auth_refused_and_counted(void)
{
    struct share_provider *sp = main_client();
    uint8_t auth[32], wrong[32], share[32], got[32];
    char audit[700];
    unsigned retry = 0;

    REQUIRE(sp);
    fill(auth, 0x21);
    fill(wrong, 0x22);
    REQUIRE(enroll(sp, "bob", auth, share) == 0);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "bob", wrong, got, &retry), -EKEYREJECTED);
    CHECK(strstr(pfs_err_msg(), "refused the password") != NULL);
    CHECK_EQ_INT(db_failures("bob"), 1);
    /* An unknown account gets the very same answer. */
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "nobody", wrong, got, &retry), -EKEYREJECTED);
    server_file(&main_srv, "audit.log", audit, sizeof audit);
    CHECK(file_contains(audit, "\"account\":\"bob\",\"status\":401,\"result\":\"rejected\"",
                        strlen("\"account\":\"bob\",\"status\":401,\"result\":\"rejected\"")));
    /* A success resets the count. */
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "bob", auth, got, &retry), 0);
    CHECK_EQ_INT(db_failures("bob"), 0);
    share_provider_destroy(sp);
}

/* MAX_FAILURES wrong logins; the last answers -EBUSY with retry_after. */
static void lock_out(struct share_provider *sp, const char *account, const uint8_t *wrong)
{
    uint8_t got[32];
    unsigned retry = 0;

    for (int i = 1; i < MAX_FAILURES; i++)
        CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, account, wrong, got, &retry), -EKEYREJECTED);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, account, wrong, got, &retry), -EBUSY);
    CHECK(retry >= 1 && retry <= LOCKOUT_SECONDS);
}

static void test_lockout_lifted_after_delay(void)
{
    struct share_provider *sp = main_client();
    uint8_t auth[32], wrong[32], share[32], got[32];
    unsigned retry = 0;

    REQUIRE(sp);
    fill(auth, 0x31);
    fill(wrong, 0x32);
    REQUIRE(enroll(sp, "carol", auth, share) == 0);
    lock_out(sp, "carol", wrong);
    /* Even the right authenticator waits. */
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "carol", auth, got, &retry), -EBUSY);
    CHECK(retry >= 1 && retry <= LOCKOUT_SECONDS);
    CHECK(strstr(pfs_err_msg(), "locked out") != NULL);
    CHECK(strstr(pfs_err_msg(), "more seconds") != NULL);
    sleep(LOCKOUT_SECONDS + 1);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "carol", auth, got, &retry), 0);
    CHECK_MEM(got, share, 32);
    share_provider_destroy(sp);
}

static void test_lockout_lifted_by_admin_unlock(void)
{
    struct share_provider *sp = main_client();
    uint8_t auth[32], wrong[32], share[32], got[32];
    unsigned retry = 0;

    REQUIRE(sp);
    fill(auth, 0x41);
    fill(wrong, 0x42);
    REQUIRE(enroll(sp, "dave", auth, share) == 0);
    lock_out(sp, "dave", wrong);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "dave", auth, got, &retry), -EBUSY);
    CHECK_EQ_INT(share_keyd_admin(sp, "unlock", VAULT, "dave"), 0);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "dave", auth, got, &retry), 0);
    CHECK_MEM(got, share, 32);
    CHECK_EQ_INT(share_keyd_admin(sp, "unlock", VAULT, "no-such-account"), -ENOENT);
    share_provider_destroy(sp);
}

static void test_change_auth_old_stops_new_works(void)
{
    struct share_provider *sp = main_client();
    uint8_t old_auth[32], new_auth[32], wrong[32], share[32], got[32];
    unsigned retry = 0;

    REQUIRE(sp);
    fill(old_auth, 0x51);
    fill(new_auth, 0x52);
    fill(wrong, 0x53);
    remember_secret(new_auth);
    REQUIRE(enroll(sp, "erin", old_auth, share) == 0);
    CHECK_EQ_INT(sp->ops->change_auth(sp, VAULT, "erin", wrong, new_auth), -EKEYREJECTED);
    CHECK_EQ_INT(sp->ops->change_auth(sp, VAULT, "erin", old_auth, new_auth), 0);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "erin", old_auth, got, &retry), -EKEYREJECTED);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "erin", new_auth, got, &retry), 0);
    CHECK_MEM(got, share, 32);
    share_provider_destroy(sp);
}

static void test_rotate_gives_new_share(void)
{
    struct share_provider *sp = main_client();
    uint8_t auth[32], wrong[32], share[32], rotated[32], got[32];
    unsigned retry = 0;

    REQUIRE(sp);
    fill(auth, 0x61);
    fill(wrong, 0x62);
    REQUIRE(enroll(sp, "frank", auth, share) == 0);
    CHECK_EQ_INT(sp->ops->rotate(sp, VAULT, "frank", wrong, rotated), -EKEYREJECTED);
    CHECK_EQ_INT(sp->ops->rotate(sp, VAULT, "frank", auth, rotated), 0);
    remember_secret(rotated);
    CHECK(memcmp(rotated, share, 32) != 0);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "frank", auth, got, &retry), 0);
    CHECK_MEM(got, rotated, 32);
    share_provider_destroy(sp);
}

static void test_disable_enable_remove(void)
{
    struct share_provider *sp = main_client();
    uint8_t auth[32], wrong[32], share[32], got[32];
    unsigned retry = 0;

    REQUIRE(sp);
    fill(auth, 0x71);
    fill(wrong, 0x72);
    REQUIRE(enroll(sp, "grace", auth, share) == 0);
    CHECK_EQ_INT(share_keyd_admin(sp, "disable", VAULT, "grace"), 0);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "grace", auth, got, &retry), -EPERM);
    CHECK(strstr(pfs_err_msg(), "disabled") != NULL);
    /* Without the right authenticator nobody learns it is disabled. */
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "grace", wrong, got, &retry), -EKEYREJECTED);
    CHECK_EQ_INT(share_keyd_admin(sp, "enable", VAULT, "grace"), 0);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "grace", auth, got, &retry), 0);
    CHECK_MEM(got, share, 32);
    CHECK_EQ_INT(sp->ops->remove(sp, VAULT, "grace"), 0);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "grace", auth, got, &retry), -EKEYREJECTED);
    CHECK_EQ_INT(sp->ops->remove(sp, VAULT, "grace"), -ENOENT);
    share_provider_destroy(sp);
}

static void test_server_down_is_reported(void)
{
    char url[64];
    struct share_provider *sp;
    uint8_t auth[32], got[32];
    unsigned retry = 0;
    int rc;

    snprintf(url, sizeof url, "https://127.0.0.1:%u", harness_free_port());
    sp = client_for(url, "ca", NULL);
    REQUIRE(sp);
    fill(auth, 0x81);
    rc = sp->ops->fetch(sp, VAULT, "alice", auth, got, &retry);
    CHECK(rc == -ECONNREFUSED || rc == -EHOSTUNREACH);
    CHECK(strstr(pfs_err_msg(), "not reachable") != NULL);
    CHECK(strstr(pfs_err_msg(), url) != NULL);
    share_provider_destroy(sp);
}

static void test_http_url_refused(void)
{
    struct keyd_client_config cfg = { .url = "http://127.0.0.1:1" };
    struct share_provider *sp = NULL;

    CHECK_EQ_INT(share_keyd_open(&cfg, &sp), -EINVAL);
    CHECK(sp == NULL);
    CHECK(strstr(pfs_err_msg(), "https://") != NULL);
}

static void test_certificate_from_other_ca_refused(void)
{
    struct server impostor;
    struct server_opts o = { "other-server", false, MAX_FAILURES, 100 };
    struct share_provider *sp;
    uint8_t auth[32], got[32];
    unsigned retry = 0;

    fill(auth, 0x11);
    REQUIRE(server_start(&impostor, "impostor", &o) == 0);
    sp = client_for(impostor.url, "ca", NULL);
    if (sp) {
        CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "alice", auth, got, &retry), -EHOSTUNREACH);
        CHECK(strstr(pfs_err_msg(), "is not signed by the CA in") != NULL);
        printf("# %s\n", pfs_err_msg());
        share_provider_destroy(sp);
    }
    CHECK_EQ_INT(server_stop(&impostor), 0);
    /* The same refusal when the client trusts another CA than the server's. */
    sp = client_for(main_srv.url, "other-ca", NULL);
    REQUIRE(sp);
    CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "alice", auth, got, &retry), -EHOSTUNREACH);
    CHECK(strstr(pfs_err_msg(), "other-ca.pem") != NULL);
    share_provider_destroy(sp);
}

static void test_certificate_for_other_host_refused(void)
{
    struct server wrong;
    struct server_opts o = { "wronghost", false, MAX_FAILURES, 100 };
    struct share_provider *sp;
    uint8_t auth[32], got[32];
    unsigned retry = 0;

    fill(auth, 0x11);
    REQUIRE(server_start(&wrong, "wronghost", &o) == 0);
    sp = client_for(wrong.url, "ca", NULL);
    if (sp) {
        CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "alice", auth, got, &retry), -EHOSTUNREACH);
        CHECK(strstr(pfs_err_msg(), "does not name the host") != NULL);
        printf("# %s\n", pfs_err_msg());
        share_provider_destroy(sp);
    }
    CHECK_EQ_INT(server_stop(&wrong), 0);
}

static void test_client_certificate_required(void)
{
    struct server s;
    struct server_opts o = { "server", true, MAX_FAILURES, 100 };
    struct share_provider *anon, *known;
    uint8_t auth[32], share[32], got[32];
    unsigned retry = 0;
    int rc;

    fill(auth, 0x91);
    REQUIRE(server_start(&s, "mtls", &o) == 0);
    anon = client_for(s.url, "ca", NULL);
    known = client_for(s.url, "ca", "client");
    if (anon && known) {
        rc = anon->ops->fetch(anon, VAULT, "henry", auth, got, &retry);
        CHECK(rc == -EACCES || rc == -EHOSTUNREACH);
        printf("# %s\n", pfs_err_msg());
        CHECK_EQ_INT(enroll(known, "henry", auth, share), 0);
        CHECK_EQ_INT(known->ops->fetch(known, VAULT, "henry", auth, got, &retry), 0);
        CHECK_MEM(got, share, 32);
    } else {
        CHECK(!"clients opened");
    }
    share_provider_destroy(anon);
    share_provider_destroy(known);
    CHECK_EQ_INT(server_stop(&s), 0);
}

static void test_source_address_lockout(void)
{
    struct server s;
    struct server_opts o = { "server", false, 100, 4 };
    struct share_provider *sp;
    uint8_t auth[32], wrong[32], share[32], got[32];
    unsigned retry = 0;
    char name[32];

    fill(auth, 0xa1);
    fill(wrong, 0xa2);
    REQUIRE(server_start(&s, "srclock", &o) == 0);
    sp = client_for(s.url, "ca", NULL);
    if (sp) {
        CHECK_EQ_INT(enroll(sp, "ivan", auth, share), 0);
        /* Guesses spread over many accounts still lock the address. */
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "guess%d", i);
            CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, name, wrong, got, &retry), -EKEYREJECTED);
        }
        CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "guess3", wrong, got, &retry), -EBUSY);
        CHECK_EQ_INT(sp->ops->fetch(sp, VAULT, "ivan", auth, got, &retry), -EBUSY);
        CHECK(retry >= 1 && retry <= LOCKOUT_SECONDS);
        share_provider_destroy(sp);
    }
    CHECK_EQ_INT(server_stop(&s), 0);
}

static struct pwkdf_params light_params(void)
{
    struct pwkdf_params p;

    pwkdf_params_default(&p);
    p.t_cost = 1;
    p.m_cost_kib = 8192;
    memset(p.salt, 0x3c, sizeof p.salt);
    return p;
}

/* The sealed key made by keyring_create, for the traffic check below. */
static uint8_t *judy_sealed;
static size_t judy_sealed_len;

/* The Argon2id parameters (with the fresh salt keyring_create chose) from the
 * sealed key's header, layout in docs/format-keys.md. */
static int sealed_params(const uint8_t *sealed, size_t len, struct pwkdf_params *p)
{
    struct rbuf r;
    uint8_t magic[4], version;
    const uint8_t *acct;
    size_t acctlen;

    rbuf_init(&r, sealed, len);
    rbuf_get_bytes(&r, magic, sizeof magic);
    rbuf_get_u8(&r, &version);
    rbuf_get_blob(&r, &acct, &acctlen, 255);
    rbuf_get_u8(&r, &p->alg);
    rbuf_get_u32(&r, &p->t_cost);
    rbuf_get_u32(&r, &p->m_cost_kib);
    rbuf_get_u32(&r, &p->parallelism);
    rbuf_get_bytes(&r, p->salt, sizeof p->salt);
    return r.err || memcmp(magic, "PFSK", 4) != 0 ? -1 : 0;
}

static void test_keyring_unlock_through_keyd(void)
{
    struct share_provider *sp = main_client();
    struct pwkdf_params p = light_params();
    uint8_t *pub = NULL, *sealed = NULL;
    size_t pub_len = 0, sealed_len = 0;
    EVP_PKEY *priv = NULL;
    unsigned retry = 0;

    char code[ENROL_CODE_TEXT_MAX];
    struct enrol_signer signer = { .vault_id = VAULT, .account_id = ACCOUNT_ID, .code = code };

    REQUIRE(sp);
    REQUIRE(register_code(sp, "judy", code, (int64_t)time(NULL) + 600) == 0);
    enrol_signer_set(sp, &signer);
    int rc = keyring_create(VAULT, "judy", password, &p, 3072, sp, &pub, &pub_len, &sealed,
                            &sealed_len, NULL);
    enrol_signer_set(sp, NULL);
    REQUIRE(rc == 0);
    CHECK_EQ_INT(keyring_unlock(VAULT, "judy", password, sealed, sealed_len, sp, &priv,
                                &retry), 0);
    CHECK(priv != NULL);
    EVP_PKEY_free(priv);
    priv = NULL;
    CHECK_EQ_INT(keyring_unlock(VAULT, "judy", "not the password", sealed, sealed_len, sp,
                                &priv, &retry), -EKEYREJECTED);
    CHECK(priv == NULL);
    free(pub);
    judy_sealed = sealed;
    judy_sealed_len = sealed_len;
    share_provider_destroy(sp);
}

/* What the service received (its debug capture) holds the authenticator,
 * never the password nor the key half derived from it. */
static void test_server_never_receives_password_or_key_half(void)
{
    struct pwkdf_params p;
    uint8_t key_half[32], auth[32];
    char capture[700];

    REQUIRE(judy_sealed && sealed_params(judy_sealed, judy_sealed_len, &p) == 0);
    REQUIRE(keyring_derive_password_parts(password, &p, key_half, auth) == 0);
    remember_secret(auth);
    remember_secret(key_half);
    server_file(&main_srv, "capture.log", capture, sizeof capture);
    CHECK(file_contains_secret(capture, auth, 32));   /* the capture works */
    CHECK(!file_contains_secret(capture, key_half, 32));
    CHECK(!file_contains(capture, password, strlen(password)));
}

/* No share, authenticator or password in the service's log, audit log or
 * database. */
static void test_no_secret_in_service_files(void)
{
    static const char *files[] = { "audit.log", "stderr.log", "keyd.db", "keyd.db-journal" };
    char path[700];

    CHECK(n_secrets >= 10);
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        server_file(&main_srv, files[f], path, sizeof path);
        for (unsigned i = 0; i < n_secrets; i++)
            if (file_contains_secret(path, secrets[i], 32)) {
                printf("# secret %u found in %s\n", i, path);
                CHECK(!"secret in a service file");
            }
        CHECK(!file_contains(path, password, strlen(password)));
    }
}

static void test_service_stops_cleanly(void)
{
    /* Exit status 0 also means the sanitizers found no leak. */
    CHECK_EQ_INT(server_stop(&main_srv), 0);
}

/* ------------------------------------------------------------ setup */

static int setup(void)
{
    const char *srcdir = getenv("srcdir");
    char cmd[1024], path[400];
    struct server_opts o = { "server", false, MAX_FAILURES, 100 };

    snprintf(scratch, sizeof scratch, "/tmp/pactfs-test-keyd.XXXXXX");
    if (!mkdtemp(scratch))
        return -1;
    snprintf(pki, sizeof pki, "%s/pki", scratch);
    snprintf(cmd, sizeof cmd, "sh '%s/tests/keyd/mkca.sh' '%s'", srcdir ? srcdir : ".", pki);
    if (system(cmd) != 0) {
        printf("# cannot make the test PKI: %s\n", cmd);
        return -1;
    }
    snprintf(token_file, sizeof token_file, "%s/admin.token", scratch);
    snprintf(path, sizeof path, "%s/master.key", scratch);
    if (write_file(token_file, "test-admin-token-6b1f0c9e2d7a4e35\n", 0600) < 0 ||
        write_file(path, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
                   0600) < 0)
        return -1;
    setenv("PACTFS_KEYD_ADMIN_TOKEN_FILE", token_file, 1);
    return server_start(&main_srv, "main", &o);
}

int main(void)
{
    char cmd[400];

    if (setup() < 0) {
        printf("# setup failed: is ./pactfs-keyd built (or $PACTFS_KEYD set)?\n");
        RUN(test_service_stops_cleanly);
        return tap_done();
    }
    RUN(test_enroll_then_login_returns_same_share);
    RUN(test_code_registration_needs_admin_token);
    RUN(test_enrolment_code_is_single_use);
    RUN(test_wrong_auth_refused_and_counted);
    RUN(test_lockout_lifted_after_delay);
    RUN(test_lockout_lifted_by_admin_unlock);
    RUN(test_change_auth_old_stops_new_works);
    RUN(test_rotate_gives_new_share);
    RUN(test_disable_enable_remove);
    RUN(test_server_down_is_reported);
    RUN(test_http_url_refused);
    RUN(test_certificate_from_other_ca_refused);
    RUN(test_certificate_for_other_host_refused);
    RUN(test_client_certificate_required);
    RUN(test_source_address_lockout);
    RUN(test_keyring_unlock_through_keyd);
    RUN(test_server_never_receives_password_or_key_half);
    RUN(test_no_secret_in_service_files);
    RUN(test_service_stops_cleanly);
    free(judy_sealed);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", scratch);
    return tap_done();
}
