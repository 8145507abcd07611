#include "config.h"

/* The audit query filter (src/audit_query.c) and the sealed names of
 * src/audit_names.c at the session level: parameters, times, path prefixes
 * and globs, rename sides, lists, sealed events; seal and open. */

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "audit_names.h"
#include "audit_query.h"
#include "crypto.h"
#include "tap.h"

#define VAULT "0123456789abcdef0123456789abcdef"
#define SESSION "00112233445566778899aabbccddeeff"

static json_object *ev(const char *json)
{
    return audit_line_parse(json, strlen(json));
}

static int matches(const char *const *params, const char *json)
{
    struct audit_filter f;
    json_object *o = ev(json);
    int m;

    audit_filter_init(&f);
    for (size_t i = 0; params[i]; i += 2)
        if (audit_filter_set(&f, params[i], params[i + 1]) != 0)
            return -1;
    m = audit_filter_match(&f, o);
    json_object_put(o);
    audit_filter_free(&f);
    return m;
}

static void test_times(void)
{
    int64_t ns;

    CHECK(audit_time_parse("2026-11-01", &ns) == 0);
    CHECK_EQ_INT(ns, 1793491200LL * 1000000000LL);
    CHECK(audit_time_parse("2026-11-01T10:00:00Z", &ns) == 0);
    CHECK_EQ_INT(ns, (1793491200LL + 36000) * 1000000000LL);
    CHECK(audit_time_parse("2026-11-28T19:01:23.123456789Z", &ns) == 0);
    CHECK_EQ_INT(ns % 1000000000LL, 123456789);
    CHECK(audit_time_parse("2026-11-01T10:00", &ns) == 0);
    CHECK(audit_time_parse("last week", &ns) == -EINVAL);
    CHECK(audit_time_parse("2026-13-01", &ns) == -EINVAL);
    CHECK(audit_time_parse("2999-01-01", &ns) == -EINVAL);   /* past int64 ns */
    CHECK(audit_time_parse("2026-11-01T10:00:00Zjunk", &ns) == -EINVAL);
}

static void test_parameters_refused(void)
{
    struct audit_filter f;

    audit_filter_init(&f);
    CHECK(audit_filter_set(&f, "acount", "bob") == -ENOENT);
    CHECK(audit_filter_set(&f, "result", "maybe") == -EINVAL);
    CHECK(audit_filter_set(&f, "result", "ok,,denied") == -EINVAL);
    CHECK(audit_filter_set(&f, "file", "-1") == -EINVAL);
    CHECK(audit_filter_set(&f, "file", "0") == -EINVAL);
    CHECK(audit_filter_set(&f, "file", "12,x") == -EINVAL);
    CHECK(audit_filter_set(&f, "follow_renames", "yes") == -EINVAL);
    CHECK(audit_filter_set(&f, "path", "") == -EINVAL);
    CHECK(audit_filter_set(&f, "file", "12,13") == 0);
    CHECK_EQ_INT(f.nfiles, 2);
    CHECK_EQ_INT(f.nparams, 1);
    audit_filter_free(&f);
}

static void test_fields_and_lists(void)
{
    const char *e = "{\"time\":\"2026-11-15T12:00:00.000000000Z\",\"account\":\"bob\","
                    "\"op\":\"read\",\"path\":\"/Contracts/A/x.pdf\",\"result\":\"ok\","
                    "\"file\":42}";

    CHECK(matches((const char *[]){ "account", "bob", NULL }, e) == 1);
    CHECK(matches((const char *[]){ "account", "alice,bob", NULL }, e) == 1);
    CHECK(matches((const char *[]){ "account", "bo", NULL }, e) == 0);
    CHECK(matches((const char *[]){ "op", "write,read", NULL }, e) == 1);
    CHECK(matches((const char *[]){ "result", "denied", NULL }, e) == 0);
    CHECK(matches((const char *[]){ "file", "7,42", NULL }, e) == 1);
    CHECK(matches((const char *[]){ "file", "7", NULL }, e) == 0);
    CHECK(matches((const char *[]){ "from", "2026-11-15T12:00:00Z", NULL }, e) == 1);
    CHECK(matches((const char *[]){ "until", "2026-11-15T12:00:00Z", NULL }, e) == 0);
    CHECK(matches((const char *[]){ "from", "2026-11-01", "until", "2026-12-01", NULL }, e)
          == 1);
    CHECK(matches((const char *[]){ "account", "bob", "op", "write", NULL }, e) == 0);
}

static void test_paths(void)
{
    const char *e = "{\"op\":\"read\",\"path\":\"/Contracts/A/x.pdf\"}";
    const char *r = "{\"op\":\"rename\",\"path\":\"/Contracts/A/x.pdf -> /Contracts/B/y.pdf\"}";
    const char *d = "{\"op\":\"link\",\"path\":\"/Contracts/C/z\",\"dest\":\"/Contracts/D/z\"}";

    CHECK(matches((const char *[]){ "path", "/Contracts/A", NULL }, e) == 1);
    CHECK(matches((const char *[]){ "path", "/Contracts/A/", NULL }, e) == 1);
    CHECK(matches((const char *[]){ "path", "/Contracts/A/x.pdf", NULL }, e) == 1);
    CHECK(matches((const char *[]){ "path", "/Contracts/", NULL }, e) == 1);
    CHECK(matches((const char *[]){ "path", "/", NULL }, e) == 1);
    CHECK(matches((const char *[]){ "path", "/Contracts/AB", NULL }, e) == 0);
    CHECK(matches((const char *[]){ "path", "/Contracts/A/x", NULL }, e) == 0);
    CHECK(matches((const char *[]){ "path", "*.pdf", NULL }, e) == 1);
    CHECK(matches((const char *[]){ "path", "/Contracts/?/x.pdf", NULL }, e) == 1);
    CHECK(matches((const char *[]){ "path", "*.doc", NULL }, e) == 0);
    CHECK(matches((const char *[]){ "path", "/Contracts/B", NULL }, r) == 1);
    CHECK(matches((const char *[]){ "path", "/Contracts/A/x.pdf", NULL }, r) == 1);
    CHECK(matches((const char *[]){ "path", "/Contracts/C", NULL }, r) == 0);
    CHECK(matches((const char *[]){ "path", "/Contracts/D", NULL }, d) == 1);
}

static void test_sealed_events(void)
{
    struct audit_filter f;
    json_object *o = ev("{\"op\":\"read\",\"path\":\"\",\"names\":\"00ff\"}");

    audit_filter_init(&f);
    CHECK(audit_filter_set(&f, "path", "/Contracts/A") == 0);
    CHECK(audit_filter_match(&f, o) == 0);       /* the client: not opened, no match */
    f.sealed_may_match = 1;
    CHECK(audit_filter_match(&f, o) == 1);       /* the receiver: cannot tell */
    audit_filter_free(&f);
    json_object_put(o);
}

static void test_seal_and_open(void)
{
    uint8_t key[AUDIT_NAMES_SESSION_KEY], back[AUDIT_NAMES_SESSION_KEY];
    EVP_PKEY *rsa = rsa_generate(3072);
    char *wrapped = NULL, *sealed = NULL, *plain = NULL;

    REQUIRE(rsa);
    REQUIRE(crypto_random(key, sizeof key) == 0);
    CHECK(audit_names_wrap_session(rsa, VAULT, SESSION, key, &wrapped) == 0);
    CHECK(audit_names_unwrap_session(rsa, VAULT, SESSION, wrapped, back) == 0);
    CHECK_MEM(key, back, sizeof key);
    /* Bound to its session: another session id does not unwrap it. */
    CHECK(audit_names_unwrap_session(rsa, VAULT, "ffeeddccbbaa99887766554433221100", wrapped,
                                     back) == -EBADMSG);
    CHECK(audit_names_seal(key, VAULT, SESSION, "{\"path\":\"/Contracts/Secret deal\"}",
                           &sealed) == 0);
    REQUIRE(sealed);
    CHECK(strstr(sealed, "Secret") == NULL);
    CHECK(audit_names_open(key, VAULT, SESSION, sealed, &plain) == 0);
    CHECK(plain && strcmp(plain, "{\"path\":\"/Contracts/Secret deal\"}") == 0);
    free(plain);
    plain = NULL;
    CHECK(audit_names_open(key, VAULT, "ffeeddccbbaa99887766554433221100", sealed, &plain)
          == -EBADMSG);
    sealed[40] = sealed[40] == '0' ? '1' : '0';
    CHECK(audit_names_open(key, VAULT, SESSION, sealed, &plain) == -EBADMSG);
    free(wrapped);
    free(sealed);
    EVP_PKEY_free(rsa);
}

/* Rewrite a spool written by this build into format 3 lines ("v":3),
 * recomputing the chains (an unsigned session has no signature). */
static int downgrade_to_v3(const char *path)
{
    char prev[65], line[8192], *sessions_prev[8] = { 0 }, *sessions[8] = { 0 };
    FILE *in = fopen(path, "r");
    char *out = NULL;
    size_t outlen = 0, nsess = 0;
    FILE *mem = open_memstream(&out, &outlen);

    memset(prev, '0', 64);
    prev[64] = '\0';
    if (!in || !mem)
        return -1;
    while (fgets(line, sizeof line, in)) {
        json_object *o = audit_line_parse(line, strcspn(line, "\n"));
        const char *sid = o ? audit_field_str(o, "session") : NULL, *text;
        size_t i, len;
        char h[65];

        if (!sid)
            return -1;
        for (i = 0; i < nsess && strcmp(sessions[i], sid); i++)
            ;
        if (i == nsess) {
            sessions[nsess] = strdup(sid);
            sessions_prev[nsess] = calloc(1, 65);
            memset(sessions_prev[nsess], '0', 64);
            nsess++;
        }
        json_object_object_add(o, "v", json_object_new_int(3));
        json_object_object_add(o, "prev", json_object_new_string(prev));
        json_object_object_add(o, "sprev", json_object_new_string(sessions_prev[i]));
        text = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN |
                                                 JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        fprintf(mem, "%s\n", text);
        audit_line_hash(text, len, h);
        memcpy(prev, h, sizeof h);
        free(sessions_prev[i]);
        sessions_prev[i] = strdup(h);
        json_object_put(o);
    }
    fclose(in);
    fclose(mem);
    in = fopen(path, "w");
    if (!in || fwrite(out, 1, outlen, in) != outlen)
        return -1;
    fclose(in);
    free(out);
    for (size_t i = 0; i < nsess; i++) {
        free(sessions[i]);
        free(sessions_prev[i]);
    }
    return 0;
}

/* A spool of format 3 lines (before this build) stays verifiable and is
 * continued by format 4 sessions. */
static void test_format3_spool_continued_by_format4(void)
{
    char dir[] = "/tmp/pactfs-aq-XXXXXX", path[128];
    struct audit_identity id = { .account = "fsck" };
    struct audit_ctx who = { 0, 1 };
    struct audit_verify_result res;
    struct audit *a = NULL;
    FILE *f;
    char line[8192], now[16];
    int v3 = 0, v4 = 0;

    REQUIRE(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/audit.log", dir);
    REQUIRE(audit_open(path, VAULT, &id, &a) == 0);
    CHECK(audit_event(a, &who, "fsck-verify", "vault", 0, 3) == 0);
    audit_close(a);
    REQUIRE(downgrade_to_v3(path) == 0);
    CHECK(audit_verify(path, NULL, NULL, NULL, &res) == 0);
    REQUIRE(audit_open(path, VAULT, &id, &a) == 0);     /* resumes after the v3 lines */
    CHECK(audit_event(a, &who, "fsck-gc", "vault", 0, 0) == 0);
    audit_close(a);
    CHECK(audit_verify(path, NULL, NULL, NULL, &res) == 0);
    CHECK_EQ_INT(res.sessions, 2);
    snprintf(now, sizeof now, "{\"v\":%d,", AUDIT_FORMAT);
    REQUIRE((f = fopen(path, "r")));
    while (fgets(line, sizeof line, f)) {
        v3 += strncmp(line, "{\"v\":3,", 7) == 0;
        v4 += strncmp(line, now, strlen(now)) == 0;   /* this build's format */
    }
    fclose(f);
    CHECK_EQ_INT(v3, 3);
    CHECK_EQ_INT(v4, 3);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    RUN(test_times);
    RUN(test_parameters_refused);
    RUN(test_fields_and_lists);
    RUN(test_paths);
    RUN(test_sealed_events);
    RUN(test_seal_and_open);
    RUN(test_format3_spool_continued_by_format4);
    return tap_done();
}
