#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "error.h"
#include "tap.h"

/* A valid configuration, one top-level setting per line so that every
 * validation case knows the line number its message must name. */
#define BASE_LINES 11
static const char *const base_lines[BASE_LINES] = {
    "vault = { name = \"demo\"; id = \"0123456789ABCDEF0123456789abcdef\"; default_account = \"alice\"; };",
    "coding = { k = 2; m = 1; chunk_size = 1048576; };",
    "endpoints = (",
    "  { type = \"dir\"; path = \"stores/0\"; },",
    "  { type = \"dir\"; path = \"/srv/pactfs/stores/1\"; },",
    "  { type = \"dir\"; path = \"stores/2\"; }",
    ");",
    "metadata = { backend = \"sqlite\"; path = \"meta.db\"; };",
    "keys = { provider = \"local\"; dir = \"keys\"; };",
    "audit = { spool = \"spool/audit.log\"; };",
    "cache = { read_mib = 128; dirty_mib = 64; workers = 3; };",
};

static char scratch[64];

static void make_scratch(void)
{
    snprintf(scratch, sizeof scratch, "/tmp/pactfs-conf-XXXXXX");
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

/* Write the base file with line `replace` (1-based, 0 = none) swapped for
 * `text`, and optionally an extra line appended. */
static void write_conf(const char *path, int replace, const char *text, const char *extra)
{
    FILE *f = fopen(path, "w");

    if (!f)
        abort();
    for (int i = 0; i < BASE_LINES; i++)
        fprintf(f, "%s\n", i + 1 == replace ? text : base_lines[i]);
    if (extra)
        fprintf(f, "%s\n", extra);
    fclose(f);
}

static void file_in_scratch(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", scratch, name);
}

static void test_load_base_and_resolve_paths(void)
{
    struct pactfs_conf c;
    char path[128], want[256], err[512];

    make_scratch();
    file_in_scratch(path, sizeof path, "pactfs.conf");
    write_conf(path, 0, NULL, NULL);
    REQUIRE(conf_load(path, &c, err, sizeof err) == 0);
    CHECK(strcmp(c.file, path) == 0);
    CHECK(strcmp(c.dir, scratch) == 0);
    CHECK(strcmp(c.vault_name, "demo") == 0);
    CHECK(strcmp(c.vault_id, "0123456789abcdef0123456789abcdef") == 0);
    CHECK(c.root_fingerprint == NULL);
    CHECK(c.default_account && strcmp(c.default_account, "alice") == 0);
    CHECK_EQ_INT(c.k, 2);
    CHECK_EQ_INT(c.m, 1);
    CHECK_EQ_INT(c.chunk_size, 1048576);
    CHECK_EQ_INT(c.n_endpoints, 3);
    CHECK_EQ_INT(c.endpoints[0].type, ENDPOINT_DIR);
    snprintf(want, sizeof want, "%s/stores/0", scratch);
    CHECK(strcmp(c.endpoints[0].path, want) == 0);
    CHECK(strcmp(c.endpoints[1].path, "/srv/pactfs/stores/1") == 0);
    snprintf(want, sizeof want, "%s/meta.db", scratch);
    CHECK(strcmp(c.meta_backend, "sqlite") == 0 && strcmp(c.meta_path, want) == 0);
    snprintf(want, sizeof want, "%s/keys", scratch);
    CHECK(strcmp(c.share_provider, "local") == 0 && strcmp(c.share_keydir, want) == 0);
    snprintf(want, sizeof want, "%s/spool/audit.log", scratch);
    CHECK(strcmp(c.audit_spool, want) == 0);
    CHECK(c.audit_url == NULL);
    CHECK_EQ_INT(c.cache_mib, 128);
    CHECK_EQ_INT(c.dirty_mib, 64);
    CHECK_EQ_INT(c.workers, 3);
    conf_free(&c);
    remove_scratch();
}

static void test_defaults_fill_missing_sections(void)
{
    struct pactfs_conf c;
    char path[128], want[256], err[512];
    FILE *f;

    conf_defaults(&c);
    CHECK_EQ_INT(c.k, 2);
    CHECK_EQ_INT(c.m, 1);
    CHECK_EQ_INT(c.chunk_size, 1 << 20);
    CHECK_EQ_INT(c.pack_max, 65536);
    CHECK_EQ_INT(c.pack_grace_s, 86400);
    CHECK_EQ_INT(c.cache_mib, 256);
    CHECK_EQ_INT(c.dirty_mib, 256);
    CHECK_EQ_INT(c.workers, 4);
    CHECK(strcmp(c.meta_backend, "sqlite") == 0);
    CHECK(strcmp(c.share_provider, "local") == 0);
    CHECK(c.audit_url == NULL);
    conf_free(&c);

    make_scratch();
    file_in_scratch(path, sizeof path, "min.conf");
    f = fopen(path, "w");
    REQUIRE(f);
    fprintf(f, "%s\n%s\n%s\n%s\n%s\n", base_lines[0], base_lines[2], base_lines[3],
            base_lines[4], "{ type = \"dir\"; path = \"s2\"; } );");
    fclose(f);
    REQUIRE(conf_load(path, &c, err, sizeof err) == 0);
    CHECK_EQ_INT(c.k, 2);
    CHECK_EQ_INT(c.workers, 4);
    snprintf(want, sizeof want, "%s/meta.db", scratch);
    CHECK(strcmp(c.meta_path, want) == 0);
    snprintf(want, sizeof want, "%s/audit.log", scratch);
    CHECK(strcmp(c.audit_spool, want) == 0);
    conf_free(&c);
    remove_scratch();
}

static int str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int tls_eq(const struct tls_conf *a, const struct tls_conf *b)
{
    return str_eq(a->ca_file, b->ca_file) && str_eq(a->cert_file, b->cert_file) &&
           str_eq(a->key_file, b->key_file);
}

/* Every setting but file/dir must survive a write and a reload. */
static int conf_same(const struct pactfs_conf *a, const struct pactfs_conf *b)
{
    if (!str_eq(a->vault_name, b->vault_name) || !str_eq(a->vault_id, b->vault_id) ||
        !str_eq(a->root_fingerprint, b->root_fingerprint) ||
        !str_eq(a->default_account, b->default_account) || a->k != b->k || a->m != b->m ||
        a->chunk_size != b->chunk_size || a->n_endpoints != b->n_endpoints ||
        a->pack_max != b->pack_max || a->pack_grace_s != b->pack_grace_s ||
        !str_eq(a->meta_backend, b->meta_backend) || !str_eq(a->meta_path, b->meta_path) ||
        !str_eq(a->meta_conninfo, b->meta_conninfo) ||
        !str_eq(a->share_provider, b->share_provider) ||
        !str_eq(a->share_keydir, b->share_keydir) || !str_eq(a->keyd_url, b->keyd_url) ||
        !tls_eq(&a->keyd_tls, &b->keyd_tls) || !str_eq(a->audit_spool, b->audit_spool) ||
        !str_eq(a->audit_url, b->audit_url) || !tls_eq(&a->audit_tls, &b->audit_tls) ||
        a->cache_mib != b->cache_mib || a->dirty_mib != b->dirty_mib || a->workers != b->workers)
        return 0;
    for (unsigned i = 0; i < a->n_endpoints; i++) {
        const struct endpoint_conf *x = &a->endpoints[i], *y = &b->endpoints[i];

        if (x->type != y->type || !str_eq(x->path, y->path) || !str_eq(x->url, y->url) ||
            !str_eq(x->bucket, y->bucket) || !str_eq(x->region, y->region) ||
            !str_eq(x->access_key, y->access_key) || !str_eq(x->secret_key, y->secret_key) ||
            !tls_eq(&x->tls, &y->tls))
            return 0;
    }
    return 1;
}

static void test_round_trip_full(void)
{
    static const char *const text =
        "# every kind of setting\n"
        "vault = { name = \"Contracts \\\"EU\\\" \\\\ 2026\"; id = \"00112233445566778899aabbccddeeff\";\n"
        "  root_fingerprint = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\";\n"
        "  default_account = \"bob\"; };\n"
        "coding = { k = 3; m = 2; chunk_size = 65536; pack_max = 0; pack_grace = 600; };\n"
        "endpoints = ( { type = \"dir\"; path = \"a\"; }, { type = \"dir\"; path = \"/abs/b\"; },\n"
        "  { type = \"s3\"; url = \"https://127.0.0.1:9000\"; bucket = \"b1\"; region = \"us-east-1\";\n"
        "    access_key = \"AK\"; secret_key = \"S/K+=\"; ca_file = \"ca.pem\"; cert_file = \"c.pem\"; key_file = \"c.key\"; },\n"
        "  { type = \"s3\"; url = \"https://127.0.0.1:9001\"; bucket = \"b1\"; region = \"eu\";\n"
        "    access_key = \"AK2\"; secret_key = \"SK2\"; },\n"
        "  { type = \"dir\"; path = \"e\"; } );\n"
        "metadata = { backend = \"postgresql\"; conninfo = \"host=127.0.0.1 port=5432 sslmode=verify-full sslrootcert=/x/ca.pem\"; };\n"
        "keys = { provider = \"keyd\"; url = \"https://127.0.0.1:7443\"; ca_file = \"/etc/ca.pem\"; };\n"
        "audit = { spool = \"/var/spool/pactfs/audit.log\"; url = \"https://127.0.0.1:7444/events\"; ca_file = \"ca.pem\"; };\n"
        "cache = { read_mib = 0; dirty_mib = 1; workers = 16; };\n";
    struct pactfs_conf a, b;
    char p1[128], p2[128], err[512];
    struct stat st;
    FILE *f;

    make_scratch();
    file_in_scratch(p1, sizeof p1, "in.conf");
    file_in_scratch(p2, sizeof p2, "out.conf");
    f = fopen(p1, "w");
    REQUIRE(f);
    fputs(text, f);
    fclose(f);
    REQUIRE(conf_load(p1, &a, err, sizeof err) == 0);
    CHECK(strcmp(a.vault_name, "Contracts \"EU\" \\ 2026") == 0);
    CHECK_EQ_INT(a.endpoints[2].type, ENDPOINT_S3);
    CHECK(strcmp(a.endpoints[2].secret_key, "S/K+=") == 0);
    CHECK(a.pack_max == 0 && a.pack_grace_s == 600);
    REQUIRE(conf_write(p2, &a) == 0);
    REQUIRE(stat(p2, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0600);
    if (conf_load(p2, &b, err, sizeof err) != 0) {
        printf("# reload failed: %s\n", err);
        CHECK(0);
        conf_free(&a);
        remove_scratch();
        return;
    }
    CHECK(conf_same(&a, &b));
    CHECK(strcmp(b.file, p2) == 0);
    conf_free(&b);
    conf_free(&a);
    remove_scratch();
}

/* A struct built in memory (as vault init does) writes and reads back. */
static void test_round_trip_from_defaults(void)
{
    struct pactfs_conf a, b;
    char path[128], err[512], buf[4096];
    FILE *f;
    size_t n;

    make_scratch();
    conf_defaults(&a);
    a.vault_name = strdup("fresh");
    a.vault_id = strdup("ffffffffffffffffffffffffffffffff");
    for (unsigned i = 0; i < 3; i++) {
        a.endpoints[i].type = ENDPOINT_DIR;
        if (asprintf(&a.endpoints[i].path, "%s/stores/%u", scratch, i) < 0)
            abort();
    }
    a.n_endpoints = 3;
    if (asprintf(&a.meta_path, "%s/meta.db", scratch) < 0 ||
        asprintf(&a.share_keydir, "%s/keys", scratch) < 0 ||
        asprintf(&a.audit_spool, "%s/audit.log", scratch) < 0)
        abort();
    file_in_scratch(path, sizeof path, "pactfs.conf");
    REQUIRE(conf_write(path, &a) == 0);
    REQUIRE(conf_load(path, &b, err, sizeof err) == 0);
    CHECK(conf_same(&a, &b));
    /* Paths inside the vault folder are written relative, and commented. */
    f = fopen(path, "r");
    REQUIRE(f);
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    CHECK(strstr(buf, "\"stores/1\"") != NULL);
    CHECK(strstr(buf, "# Erasure coding") != NULL);
    CHECK(strstr(buf, scratch) == NULL);
    conf_free(&b);
    conf_free(&a);
    remove_scratch();
}

struct bad_case {
    int line;               /* line replaced (0: none) */
    const char *text;       /* its replacement */
    const char *extra;      /* appended line */
    const char *expect[3];  /* substrings the message must contain */
};

static const struct bad_case bad_cases[] = {
    { 2, "coding = { k = 1; m = 1; };", NULL, { ":2:", "coding.k", "whole ciphertext" } },
    { 2, "coding = { k = 2; m = -1; };", NULL, { ":2:", "coding.m", ">= 0" } },
    { 2, "coding = { k = 10; m = 7; };", NULL, { ":2:", "k + m", "16" } },
    { 2, "coding = { k = 3; m = 1; };", NULL, { ":3:", "endpoints", "at least 4" } },
    { 2, "coding = { chunk_size = 100000; };", NULL, { ":2:", "coding.chunk_size", "power of two" } },
    { 2, "coding = { pack_max = 2000000; };", NULL, { ":2:", "coding.pack_max", "1048576" } },
    { 2, "coding = { pack_grace = 0; };", NULL, { ":2:", "coding.pack_grace", "seconds" } },
    { 2, "coding = { chunk_size = 32768; };", NULL, { ":2:", "coding.chunk_size", "65536" } },
    { 2, "coding = { chunk_size = 33554432; };", NULL, { ":2:", "coding.chunk_size", "16 MiB" } },
    { 2, "coding = { k = \"2\"; };", NULL, { ":2:", "coding.k", "integer" } },
    { 2, "coding = { chunksize = 65536; };", NULL, { ":2:", "coding.chunksize", "unknown setting" } },
    { 5, "  { type = \"ftp\"; path = \"x\"; },", NULL, { ":5:", "endpoints[1].type", "\"dir\", \"s3\"" } },
    { 5, "  { path = \"x\"; },", NULL, { ":5:", "endpoints[1]", "'type' is missing" } },
    { 5, "  { type = \"dir\"; },", NULL, { ":5:", "endpoints[1]", "'path' is missing" } },
    { 5, "  { type = \"dir\"; path = \"stores/0\"; },", NULL, { ":5:", "endpoints[1]", "never share" } },
    { 5, "  { type = \"dir\"; path = \"x\"; url = \"https://h\"; },", NULL,
      { ":5:", "endpoints[1].url", "unknown setting" } },
    { 6, "  { type = \"s3\"; url = \"http://127.0.0.1:9000\"; bucket = \"b\"; region = \"r\"; access_key = \"a\"; secret_key = \"s\"; }",
      NULL, { ":6:", "endpoints[2].url", "https" } },
    { 6, "  { type = \"s3\"; url = \"https://127.0.0.1:9000\"; region = \"r\"; access_key = \"a\"; secret_key = \"s\"; }",
      NULL, { ":6:", "endpoints[2]", "'bucket' is missing" } },
    { 6, "  { type = \"s3\"; url = \"https://h\"; bucket = \"b\"; region = \"r\"; access_key = \"a\"; secret_key = \"s\"; cert_file = \"c\"; }",
      NULL, { ":6:", "endpoints[2]", "key_file" } },
    { 1, "vault = { name = \"demo\"; };", NULL, { ":1:", "vault", "'id' is missing" } },
    { 1, "vault = { name = \"demo\"; id = \"0123\"; };", NULL, { ":1:", "vault.id", "32 hex" } },
    { 1, "vault = { name = \"demo\"; id = \"0123456789abcdef0123456789abcdeg\"; };", NULL,
      { ":1:", "vault.id", "32 hex" } },
    { 1, "vault = { name = \"demo\"; id = \"0123456789abcdef0123456789abcdef\"; root_fingerprint = \"ab\"; };",
      NULL, { ":1:", "vault.root_fingerprint", "64 hex" } },
    { 1, "vault = { name = \"\"; id = \"0123456789abcdef0123456789abcdef\"; };", NULL,
      { ":1:", "vault.name", "empty" } },
    { 1, "# no vault", NULL, { "pactfs.conf", "'vault' is missing", "" } },
    { 8, "metadata = { backend = \"mysql\"; };", NULL, { ":8:", "metadata.backend", "\"postgresql\"" } },
    { 8, "metadata = { backend = \"postgresql\"; conninfo = \"host=db.example port=5432\"; };", NULL,
      { ":8:", "metadata.conninfo", "verify-full" } },
    { 8, "metadata = { backend = \"postgresql\"; conninfo = \"host=db sslmode=require\"; };", NULL,
      { ":8:", "metadata.conninfo", "sslmode=require" } },
    { 8, "metadata = { backend = \"postgresql\"; };", NULL, { ":8:", "metadata", "'conninfo' is missing" } },
    { 8, "metadata = { backend = \"sqlite\"; conninfo = \"host=x\"; };", NULL,
      { ":8:", "metadata.conninfo", "unknown setting" } },
    { 9, "keys = { provider = \"keyd\"; url = \"http://127.0.0.1:7443\"; };", NULL,
      { ":9:", "keys.url", "plain HTTP" } },
    { 9, "keys = { provider = \"keyd\"; };", NULL, { ":9:", "keys", "'url' is missing" } },
    { 9, "keys = { provider = \"vault\"; };", NULL, { ":9:", "keys.provider", "\"keyd\"" } },
    { 10, "audit = { spool = \"a.log\"; url = \"http://collector/\"; };", NULL,
      { ":10:", "audit.url", "https" } },
    { 10, "audit = { spool = 3; };", NULL, { ":10:", "audit.spool", "string" } },
    { 11, "cache = { workers = 0; };", NULL, { ":11:", "cache.workers", "1 to 256" } },
    { 11, "cache = { dirty_mib = 1; };", "coding2 = 1;", { ":12:", "coding2", "unknown setting" } },
    { 0, NULL, "cahce = { read_mib = 1; };", { ":12:", "cahce", "unknown setting" } },
    { 0, NULL, "cache2 = { read_mib = ; };", { ":12:", "syntax error", "" } },
    { 3, "endpoints = { type = \"dir\"; };", NULL, { ":3:", "endpoints", "list" } },
};

static void test_validation_messages(void)
{
    char path[128], err[512];

    make_scratch();
    file_in_scratch(path, sizeof path, "pactfs.conf");
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *bc = &bad_cases[i];
        struct pactfs_conf c;
        int rc, ok = 1;

        /* A replaced line 3 needs the rest of the list gone too. */
        write_conf(path, bc->line, bc->text, bc->extra);
        if (bc->line == 3) {
            FILE *f = fopen(path, "w");

            REQUIRE(f);
            fprintf(f, "%s\n%s\n%s\n", base_lines[0], base_lines[1], bc->text);
            fclose(f);
        }
        rc = conf_load(path, &c, err, sizeof err);
        if (rc != -EINVAL) {
            printf("# case %zu: rc %d, want -EINVAL\n", i, rc);
            CHECK(rc == -EINVAL);
            if (rc == 0)
                conf_free(&c);
            continue;
        }
        for (int j = 0; j < 3; j++)
            if (!strstr(err, bc->expect[j]))
                ok = 0;
        if (!ok)
            printf("# case %zu: message lacks an expected part: %s\n", i, err);
        CHECK(ok);
        CHECK(strcmp(pfs_err_msg(), err) == 0);
        CHECK(strstr(err, path) != NULL);
    }
    remove_scratch();
}

static void test_missing_file(void)
{
    struct pactfs_conf c;
    char err[512];

    CHECK_EQ_INT(conf_load("/nonexistent/pactfs.conf", &c, err, sizeof err), -ENOENT);
    CHECK(strstr(err, "/nonexistent/pactfs.conf") != NULL);
}

/* A unix-socket PostgreSQL connection never leaves the host: no TLS needed. */
static void test_pg_unix_socket_allowed(void)
{
    struct pactfs_conf c;
    char path[128], err[512];

    make_scratch();
    file_in_scratch(path, sizeof path, "pactfs.conf");
    write_conf(path, 8, "metadata = { backend = \"postgresql\"; conninfo = \"host=/run/postgresql dbname=pactfs\"; };",
               NULL);
    CHECK(conf_load(path, &c, err, sizeof err) == 0);
    if (!err[0]) {
        CHECK(strcmp(c.meta_backend, "postgresql") == 0);
        CHECK(c.meta_path == NULL);
        conf_free(&c);
    }
    remove_scratch();
}

/* The PostgreSQL transport rule, before any connection. */
static void test_pg_conninfo_rule(void)
{
    char why[512];

    CHECK_EQ_INT(conf_pg_conninfo_check("host=db.example sslmode=verify-full sslrootcert=/c",
                                        why, sizeof why), 0);
    CHECK_EQ_INT(conf_pg_conninfo_check("host=db.example sslmode=verify-ca", why, sizeof why),
                 -EINVAL);
    CHECK(strstr(why, "verify-full") != NULL);
    CHECK_EQ_INT(conf_pg_conninfo_check("hostaddr=10.0.0.1 sslmode=require", why, sizeof why),
                 -EINVAL);
    /* a host list with one network host among sockets */
    CHECK_EQ_INT(conf_pg_conninfo_check("host=/run/postgresql,db.example", why, sizeof why),
                 -EINVAL);
    CHECK_EQ_INT(conf_pg_conninfo_check("host=/run/postgresql,/tmp dbname=x", why, sizeof why),
                 0);
    CHECK_EQ_INT(conf_pg_conninfo_check("service=pactfs", why, sizeof why), -EINVAL);
    CHECK(strstr(why, "service") != NULL);
    /* libpq's environment fallbacks count */
    setenv("PGHOST", "db.example", 1);
    CHECK_EQ_INT(conf_pg_conninfo_check("dbname=x", why, sizeof why), -EINVAL);
    setenv("PGSSLMODE", "verify-full", 1);
    CHECK_EQ_INT(conf_pg_conninfo_check("dbname=x", why, sizeof why), 0);
    unsetenv("PGHOST");
    unsetenv("PGSSLMODE");
    CHECK_EQ_INT(conf_pg_conninfo_check("dbname=x", why, sizeof why), 0);
}

int main(void)
{
    RUN(test_load_base_and_resolve_paths);
    RUN(test_defaults_fill_missing_sections);
    RUN(test_round_trip_full);
    RUN(test_round_trip_from_defaults);
    RUN(test_validation_messages);
    RUN(test_missing_file);
    RUN(test_pg_unix_socket_allowed);
    RUN(test_pg_conninfo_rule);
    return tap_done();
}
