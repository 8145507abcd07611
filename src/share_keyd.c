#include "config.h"

/* Share provider "keyd": the network key service pactfs-keyd over HTTPS
 * (protocol in docs/keyd.md).  Certificate and host name verification are
 * always on, TLS >= 1.2, no redirects, https only.  Request and reply bodies
 * carry authenticators and shares, so they live in secmem and are wiped;
 * json-c's own copies of secret strings are wiped before release. */

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/x509_vfy.h>

#include "crypto.h"
#include "error.h"
#include "https.h"
#include "secmem.h"
#include "share.h"

#define KEYD_REPLY_MAX 4096
#define KEYD_DEFAULT_TIMEOUT_MS 10000L
/* Where enroll/remove/admin calls find the admin token until
 * keyd_client_config carries it (see docs/keyd.md). */
#define KEYD_ADMIN_TOKEN_ENV "PACTFS_KEYD_ADMIN_TOKEN_FILE"

struct keyd_client {
    char *url;            /* without a trailing slash */
    char *ca_file;
    char *cert_file;
    char *key_file;
    char *admin_token_file;   /* NULL: $PACTFS_KEYD_ADMIN_TOKEN_FILE */
    long timeout_ms;
    /* The anchor token the last login returned (not password-derived: a
     * capability to advance the vault head anchor), and its account. */
    char anchor_account[256];
    char anchor_token[2 * KEYD_ANCHOR_TOKEN_LEN + 1];
};

/* A reply body being received, in secure memory. */
struct reply {
    char *data;           /* KEYD_REPLY_MAX + 1 */
    size_t len;
    bool overflow;
};

/* What the service answered. */
struct keyd_answer {
    long status;
    json_object *body;    /* NULL if not JSON */
};

static char *dup_or_null(const char *s, bool *oom)
{
    char *d;

    if (!s)
        return NULL;
    d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

static void keyd_client_free(struct keyd_client *kc)
{
    if (!kc)
        return;
    free(kc->url);
    free(kc->ca_file);
    free(kc->cert_file);
    free(kc->key_file);
    free(kc->admin_token_file);
    secmem_wipe(kc->anchor_token, sizeof kc->anchor_token);
    free(kc);
}

/* ------------------------------------------------------------- secrets */

static void json_wipe_string(json_object *v)
{
    if (v && json_object_is_type(v, json_type_string))
        secmem_wipe((char *)json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

static void json_wipe_put(json_object *obj)
{
    if (!obj)
        return;
    if (json_object_is_type(obj, json_type_object)) {
        json_object_object_foreach(obj, key, val) {
            (void)key;
            json_wipe_string(val);
        }
    }
    json_object_put(obj);
}

static void add_hex(json_object *obj, const char *key, const uint8_t *p, size_t n)
{
    char hex[2 * 64 + 1];

    hex_encode(p, n, hex);
    json_object_object_add(obj, key, json_object_new_string(hex));
    secmem_wipe(hex, sizeof hex);
}

static json_object *request_body(const char *vault_id, const char *account)
{
    json_object *obj = json_object_new_object();

    if (!obj)
        return NULL;
    json_object_object_add(obj, "vault", json_object_new_string(vault_id));
    json_object_object_add(obj, "account", json_object_new_string(account));
    return obj;
}

/* The admin token file (from the configuration, else named by
 * $PACTFS_KEYD_ADMIN_TOKEN_FILE), as an "Authorization: Bearer" header in
 * secure memory. */
static int admin_header(const struct keyd_client *kc, char **out, size_t *outlen)
{
    static const char prefix[] = "Authorization: Bearer ";
    const char *path = kc->admin_token_file ? kc->admin_token_file : getenv(KEYD_ADMIN_TOKEN_ENV);
    FILE *f;
    size_t cap = sizeof prefix + 512, n;
    char *h;

    if ((!path || !*path) && kc->cert_file) {
        *out = NULL;        /* a key officer's client certificate (keyd officers) */
        *outlen = 0;
        return 0;
    }
    if (!path || !*path)
        return pfs_err(-EACCES, "this key-service operation needs the admin token or a key "
                       "officer's client certificate: give --keyd-admin-token FILE or set %s "
                       "to the file that holds it, or set keys.cert_file/key_file to your "
                       "officer certificate", KEYD_ADMIN_TOKEN_ENV);
    f = fopen(path, "re");
    if (!f)   /* never echo the name: a token given inline would land in a log */
        return pfs_err(-EINVAL, "cannot read the file named by --keyd-admin-token (or %s): "
                       "%s; it takes a FILE holding the admin token, not the token itself",
                       KEYD_ADMIN_TOKEN_ENV, strerror(errno));
    h = secmem_alloc(cap);
    if (!h) {
        fclose(f);
        return pfs_err(-ENOMEM, "out of memory");
    }
    memcpy(h, prefix, sizeof prefix - 1);
    setvbuf(f, NULL, _IONBF, 0);   /* no stdio copy of the token */
    n = fread(h + sizeof prefix - 1, 1, cap - sizeof prefix, f);
    fclose(f);
    n += sizeof prefix - 1;
    while (n > sizeof prefix - 1 && (h[n - 1] == '\n' || h[n - 1] == '\r' || h[n - 1] == ' '))
        h[--n] = '\0';
    if (n == sizeof prefix - 1) {
        secmem_free(h, cap);
        return pfs_err(-EINVAL, "the key-service admin token file %s is empty", path);
    }
    *out = h;
    *outlen = cap;
    return 0;
}

/* ------------------------------------------------------------- transport */

static size_t on_reply_data(char *p, size_t size, size_t nmemb, void *cls)
{
    struct reply *r = cls;
    size_t n = size * nmemb;

    if (r->len + n > KEYD_REPLY_MAX) {
        r->overflow = true;
        return 0;   /* abort: no legitimate answer is that long */
    }
    memcpy(r->data + r->len, p, n);
    r->len += n;
    return n;
}

static int tls_failure(const struct keyd_client *kc, CURL *c, const char *errbuf)
{
    long vr = X509_V_OK;
    const char *ca = kc->ca_file ? kc->ca_file : "the system CA bundle";

    curl_easy_getinfo(c, CURLINFO_SSL_VERIFYRESULT, &vr);
    /* Host name first: OpenSSL may report it as an unspecified error. */
    if (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH ||
        strstr(errbuf, "subject name") || strstr(errbuf, "host name") ||
        strstr(errbuf, "hostname"))
        return pfs_err(-EHOSTUNREACH, "the key service's certificate does not name the host "
                       "in %s (%s): use the name its certificate carries in keyd url, or have "
                       "the key officer reissue the certificate", kc->url, errbuf);
    if (vr == X509_V_ERR_CERT_HAS_EXPIRED || vr == X509_V_ERR_CERT_NOT_YET_VALID)
        return pfs_err(-EHOSTUNREACH, "the key service's certificate at %s has expired or is "
                       "not yet valid (%s): the key officer must renew it (docs/keyd.md, "
                       "rotating the certificate), or check this machine's clock",
                       kc->url, X509_verify_cert_error_string(vr));
    if (vr != X509_V_OK)
        return pfs_err(-EHOSTUNREACH, "the key service's certificate at %s is not signed by "
                       "the CA in %s (%s): check keyd ca_file in the vault configuration, or "
                       "that %s is really the key service", kc->url, ca,
                       X509_verify_cert_error_string(vr), kc->url);
    return pfs_err(-EHOSTUNREACH, "the key service's certificate at %s was refused (%s): "
                   "check keyd ca_file (%s)", kc->url, errbuf, ca);
}

static int transport_error(const struct keyd_client *kc, CURL *c, CURLcode cc,
                           const char *errbuf)
{
    const char *why = errbuf[0] ? errbuf : curl_easy_strerror(cc);

    switch (https_classify(cc)) {
    case HTTPS_REFUSED:
        return pfs_err(-ECONNREFUSED, "pactfs-keyd is not reachable at %s: is it running? (%s)",
                       kc->url, why);
    case HTTPS_UNRESOLVED:
        return pfs_err(-EHOSTUNREACH, "cannot resolve the host in the key service URL %s: "
                       "check keyd url (%s)", kc->url, why);
    case HTTPS_TIMEOUT:
        return pfs_err(-EHOSTUNREACH, "pactfs-keyd at %s did not answer within %ld ms: check "
                       "the network and that it is running", kc->url, kc->timeout_ms);
    case HTTPS_TLS_PEER:
        return tls_failure(kc, c, why);
    case HTTPS_TLS_CA_FILE:
        return pfs_err(-EINVAL, "cannot load the key service CA bundle %s: check keyd ca_file "
                       "(%s)", kc->ca_file ? kc->ca_file : "(system)", why);
    case HTTPS_TLS_CLIENT_CERT:
        return pfs_err(-EINVAL, "cannot use the client certificate %s / key %s for the key "
                       "service: check keyd cert_file and key_file (%s)",
                       kc->cert_file ? kc->cert_file : "-", kc->key_file ? kc->key_file : "-",
                       why);
    case HTTPS_TLS_HANDSHAKE:
        return pfs_err(-EHOSTUNREACH, "the TLS handshake with pactfs-keyd at %s failed (%s): "
                       "it needs TLS 1.2 or later%s", kc->url, why,
                       kc->cert_file ? "" : ", and may require a client certificate "
                       "(keyd cert_file/key_file)");
    case HTTPS_WRITE_ABORTED:
        return pfs_err(-EPROTO, "pactfs-keyd at %s sent an oversized answer", kc->url);
    default:
        return pfs_err(-EHOSTUNREACH, "cannot talk to pactfs-keyd at %s: %s", kc->url, why);
    }
}

/* Parse a reply body (JSON object) if there is one. */
static json_object *reply_json(const struct reply *r)
{
    json_tokener *tok;
    json_object *obj;

    if (r->len == 0)
        return NULL;
    tok = json_tokener_new();
    if (!tok)
        return NULL;
    obj = json_tokener_parse_ex(tok, r->data, (int)r->len);
    if (obj && (json_tokener_get_error(tok) != json_tokener_success ||
                !json_object_is_type(obj, json_type_object))) {
        json_wipe_put(obj);
        obj = NULL;
    }
    json_tokener_free(tok);
    return obj;
}

/* POST body to url+path; the caller owns ans->body.  Transport failures are
 * returned as errors with a message; any HTTP status is a success here. */
static int keyd_post(const struct keyd_client *kc, const char *path, json_object *body,
                     bool admin, struct keyd_answer *ans)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    char url[1024];
    struct reply r = { NULL, 0, false };
    struct curl_slist *hdrs = NULL;
    char *auth_hdr = NULL, *payload = NULL;
    size_t auth_len = 0, plen;
    const char *text;
    CURL *c = NULL;
    CURLcode cc;
    int rc = 0;

    memset(ans, 0, sizeof *ans);
    snprintf(url, sizeof url, "%s%s", kc->url, path);
    if (admin && (rc = admin_header(kc, &auth_hdr, &auth_len)) < 0)
        return rc;
    text = json_object_to_json_string_length(body, JSON_C_TO_STRING_PLAIN, &plen);
    payload = secmem_alloc(plen + 1);
    r.data = secmem_alloc(KEYD_REPLY_MAX + 1);
    c = curl_easy_init();
    if (payload)
        memcpy(payload, text, plen);
    secmem_wipe((char *)text, plen);
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    if (hdrs && auth_hdr)
        hdrs = curl_slist_append(hdrs, auth_hdr);
    if (!payload || !r.data || !c || !hdrs) {
        rc = pfs_err(-ENOMEM, "out of memory talking to the key service");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)plen);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_reply_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, kc->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, kc->timeout_ms);
    https_setup(c, &(struct https_tls){ kc->ca_file, kc->cert_file, kc->key_file });
    cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        rc = transport_error(kc, c, r.overflow ? CURLE_WRITE_ERROR : cc, errbuf);
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &ans->status);
    ans->body = reply_json(&r);
out:
    if (c)
        curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    secmem_free(auth_hdr, auth_len);
    secmem_free(payload, plen + 1);
    secmem_free(r.data, KEYD_REPLY_MAX + 1);
    return rc;
}

/* ------------------------------------------------------------- answers */

static const char *answer_error(const struct keyd_answer *ans)
{
    json_object *v;

    if (ans->body && json_object_object_get_ex(ans->body, "error", &v) &&
        json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return "";
}

static unsigned answer_retry_after(const struct keyd_answer *ans)
{
    json_object *v;
    int64_t n;

    if (!ans->body || !json_object_object_get_ex(ans->body, "retry_after", &v))
        return 0;
    n = json_object_get_int64(v);
    return n < 0 ? 0 : n > 86400 * 365 ? 86400 * 365 : (unsigned)n;
}

/* Turn a non-200 answer into the share.h error code and a message. */
static int answer_status(const struct keyd_client *kc, const struct keyd_answer *ans,
                         const char *account, bool admin, unsigned *retry_after)
{
    unsigned retry;

    switch (ans->status) {
    case 200:
        return 0;
    case 401:
        if (strcmp(answer_error(ans), "code-required") == 0)
            return pfs_err(-EACCES, "the key service at %s enrols an account only with its "
                           "one-time enrolment code (pactfs-admin enroll), not with the admin "
                           "token", kc->url);
        if (admin)
            return pfs_err(-EACCES, "the key service at %s refused the admin token (the "
                           "file named by --keyd-admin-token or %s): check it holds the "
                           "service's current admin token", kc->url, KEYD_ADMIN_TOKEN_ENV);
        return pfs_err(-EKEYREJECTED, "the key service refused the password of %s (wrong "
                       "password, or the account is not enrolled there)", account);
    case 429:
        retry = answer_retry_after(ans);
        if (retry_after)
            *retry_after = retry;
        return pfs_err(-EBUSY, "%s is locked out by the key service for %u more seconds "
                       "after repeated failed logins (from this account or this address); "
                       "wait, or ask a key officer to lift it at once "
                       "(pactfs-admin keyd unlock %s VAULT_DIR)", account, retry, account);
    case 403:
        if (strcmp(answer_error(ans), "no-code") == 0)
            return pfs_err(-EACCES, "the key service at %s holds no enrolment code for %s (never "
                           "registered, or already used once): ask a sysadmin for a new one "
                           "(pactfs-admin account-reenrol)", kc->url, account);
        if (strcmp(answer_error(ans), "code-rejected") == 0)
            return pfs_err(-EKEYREJECTED, "the key service at %s refused the enrolment code of "
                           "%s: it is not the code registered for this account", kc->url,
                           account);
        if (strcmp(answer_error(ans), "code-expired") == 0)
            return pfs_err(-EACCES, "the enrolment code of %s has expired at the key service "
                           "%s: ask a sysadmin for a new one (pactfs-admin account-reenrol)",
                           account, kc->url);
        if (strcmp(answer_error(ans), "disabled") == 0)
            return pfs_err(-EPERM, "%s is disabled at the key service: ask an administrator",
                           account);
        return pfs_err(-EACCES, "the key service at %s requires a client certificate it "
                       "trusts: set keyd cert_file and key_file", kc->url);
    case 404:
        return pfs_err(-ENOENT, "%s is not enrolled at the key service %s", account, kc->url);
    case 409:
        return pfs_err(-EEXIST, "%s is already enrolled at the key service %s", account,
                       kc->url);
    case 400:
    case 413:
        return pfs_err(-EINVAL, "the key service at %s rejected the request as malformed "
                       "(%s)", kc->url, answer_error(ans));
    default:
        if (ans->status >= 500 && strcmp(answer_error(ans), "audit-unavailable") == 0)
            return pfs_err(-EIO, "the key service at %s could not write the action to its "
                           "audit trail, so it did nothing (fail-closed): see its log",
                           kc->url);
        if (ans->status >= 500)
            return pfs_err(-EIO, "the key service at %s failed internally (HTTP %ld): see "
                           "its log", kc->url, ans->status);
        return pfs_err(-EPROTO, "unexpected answer HTTP %ld from the key service at %s",
                       ans->status, kc->url);
    }
}

/* Copy the share out of a 200 answer. */
static int answer_share(const struct keyd_client *kc, const struct keyd_answer *ans,
                        uint8_t share_out[SHARE_LEN])
{
    json_object *v;

    if (!ans->body || !json_object_object_get_ex(ans->body, "share", &v) ||
        !json_object_is_type(v, json_type_string) ||
        json_object_get_string_len(v) != 2 * SHARE_LEN ||
        hex_decode(json_object_get_string(v), share_out, SHARE_LEN) < 0) {
        secmem_wipe(share_out, SHARE_LEN);
        return pfs_err(-EPROTO, "the key service at %s answered without a valid share",
                       kc->url);
    }
    return 0;
}

/* A login's answer carries the token that lets this client advance the
 * vault head anchor (pactfs-keyd without anchors sends none). */
static void keep_anchor_token(struct keyd_client *kc, const struct keyd_answer *ans,
                              const char *account)
{
    json_object *v;

    if (ans->body && json_object_object_get_ex(ans->body, "anchor_token", &v) &&
        json_object_is_type(v, json_type_string) &&
        json_object_get_string_len(v) == 2 * KEYD_ANCHOR_TOKEN_LEN &&
        strlen(account) < sizeof kc->anchor_account) {
        memcpy(kc->anchor_token, json_object_get_string(v), sizeof kc->anchor_token);
        snprintf(kc->anchor_account, sizeof kc->anchor_account, "%s", account);
    }
}

/* One call: build nothing, send body, check the answer, maybe read a share. */
static int keyd_call(struct share_provider *sp, const char *path, json_object *body,
                     const char *account, bool admin, uint8_t *share_out,
                     unsigned *retry_after)
{
    const struct keyd_client *kc = sp->impl;
    struct keyd_answer ans;
    int rc;

    if (!body)
        return pfs_err(-ENOMEM, "out of memory");
    rc = keyd_post(kc, path, body, admin, &ans);
    json_wipe_put(body);
    if (!rc)
        rc = answer_status(kc, &ans, account, admin, retry_after);
    if (!rc && share_out)
        rc = answer_share(kc, &ans, share_out);
    if (!rc && share_out)
        keep_anchor_token(sp->impl, &ans, account);
    json_wipe_put(ans.body);
    return rc;
}

/* ------------------------------------------------------------- ops */

/* The code's key signs "pactfs-keyd v1 enroll" | u32 len | vault | u32 len |
 * account | auth (docs/keyd.md, "Enrolment by code"). */
static int keyd_enroll(struct share_provider *sp, const char *vault_id, const char *account,
                       const uint8_t auth[SHARE_AUTH_LEN], uint8_t share_out[SHARE_LEN])
{
    static const char label[] = "pactfs-keyd v1 enroll";
    size_t vl = strlen(vault_id), al = strlen(account), n = 0;
    uint8_t msg[sizeof label + 8 + 2 * 256 + SHARE_AUTH_LEN], sig[64];
    json_object *body;
    int rc;

    if (!sp->enrol_sign)
        return pfs_err(-EACCES, "enrolling %s at the key service needs the person's one-time "
                       "enrolment code (pactfs-admin enroll)", account);
    if (vl > 255 || al > 255)
        return pfs_err(-EINVAL, "a vault id or account name is too long for the key service");
    memcpy(msg, label, sizeof label - 1);
    n = sizeof label - 1;
    for (int i = 3; i >= 0; i--)
        msg[n++] = (uint8_t)(vl >> (8 * i));
    memcpy(msg + n, vault_id, vl);
    n += vl;
    for (int i = 3; i >= 0; i--)
        msg[n++] = (uint8_t)(al >> (8 * i));
    memcpy(msg + n, account, al);
    n += al;
    memcpy(msg + n, auth, SHARE_AUTH_LEN);
    n += SHARE_AUTH_LEN;
    rc = sp->enrol_sign(sp->enrol_sign_arg, msg, n, sig);
    secmem_wipe(msg, sizeof msg);
    if (rc < 0)
        return rc;
    body = request_body(vault_id, account);
    if (body) {
        add_hex(body, "auth", auth, SHARE_AUTH_LEN);
        add_hex(body, "code_sig", sig, sizeof sig);
    }
    return keyd_call(sp, "/v1/enroll", body, account, false, share_out, NULL);
}

static int keyd_register_code(struct share_provider *sp, const char *vault_id,
                              const char *account, const uint8_t code_pub[32], int64_t expires)
{
    json_object *body = request_body(vault_id, account);

    if (body) {
        add_hex(body, "code_pub", code_pub, 32);
        json_object_object_add(body, "expires", json_object_new_int64(expires));
    }
    return keyd_call(sp, "/v1/enrol-code", body, account, true, NULL, NULL);
}

static int keyd_fetch(struct share_provider *sp, const char *vault_id, const char *account,
                      const uint8_t auth[SHARE_AUTH_LEN], uint8_t share_out[SHARE_LEN],
                      unsigned *retry_after)
{
    json_object *body = request_body(vault_id, account);

    if (retry_after)
        *retry_after = 0;
    if (body)
        add_hex(body, "auth", auth, SHARE_AUTH_LEN);
    return keyd_call(sp, "/v1/login", body, account, false, share_out, retry_after);
}

static int keyd_change_auth(struct share_provider *sp, const char *vault_id,
                            const char *account, const uint8_t old_auth[SHARE_AUTH_LEN],
                            const uint8_t new_auth[SHARE_AUTH_LEN])
{
    json_object *body = request_body(vault_id, account);

    if (body) {
        add_hex(body, "old_auth", old_auth, SHARE_AUTH_LEN);
        add_hex(body, "new_auth", new_auth, SHARE_AUTH_LEN);
    }
    return keyd_call(sp, "/v1/change-auth", body, account, false, NULL, NULL);
}

static int keyd_rotate(struct share_provider *sp, const char *vault_id, const char *account,
                       const uint8_t auth[SHARE_AUTH_LEN], uint8_t share_out[SHARE_LEN])
{
    json_object *body = request_body(vault_id, account);

    if (body)
        add_hex(body, "auth", auth, SHARE_AUTH_LEN);
    return keyd_call(sp, "/v1/rotate", body, account, false, share_out, NULL);
}

static int keyd_remove(struct share_provider *sp, const char *vault_id, const char *account)
{
    return keyd_call(sp, "/v1/remove", request_body(vault_id, account), account, true, NULL,
                     NULL);
}

/* Administrative calls not in share_provider_ops (declared in share.h). */
int share_keyd_admin(struct share_provider *sp, const char *op, const char *vault_id,
                     const char *account)
{
    char path[32];

    if (strcmp(op, "unlock") != 0 && strcmp(op, "disable") != 0 && strcmp(op, "enable") != 0)
        return pfs_err(-EINVAL, "unknown key-service admin operation '%s' (unlock, disable, "
                       "enable)", op);
    snprintf(path, sizeof path, "/v1/%s", op);
    return keyd_call(sp, path, request_body(vault_id, account), account, true, NULL, NULL);
}

/* The vault head anchor kept by pactfs-keyd (docs/keyd.md, "Vault head
 * anchors").  A service without the endpoints answers 404 "not-found":
 * -EOPNOTSUPP, and vault.c warns that it keeps no anchor. */
static int anchor_http(const struct keyd_client *kc, const struct keyd_answer *ans,
                       const char *what)
{
    const char *err = answer_error(ans);

    if (ans->status == 404 && strcmp(err, "no-anchor") != 0)
        return -EOPNOTSUPP;
    if (ans->status == 401)
        return pfs_err(-EACCES, "the key service at %s refused to %s the vault head anchor "
                       "(no valid anchor token: the login was before the service kept "
                       "anchors, or the account is disabled)", kc->url, what);
    if (ans->status == 403)
        return pfs_err(-EACCES, "the key service at %s requires a client certificate it "
                       "trusts: set keyd cert_file and key_file", kc->url);
    if (ans->status != 200 && ans->status != 404 && ans->status != 409)
        return pfs_err(-EIO, "the key service at %s answered HTTP %ld to %s the vault head "
                       "anchor (%s)", kc->url, ans->status, what, err);
    return 0;
}

static int keyd_anchor_get(struct share_provider *sp, const char *vault_id, uint64_t *counter,
                           uint8_t hash[32], uint8_t **blob, size_t *len)
{
    const struct keyd_client *kc = sp->impl;
    json_object *body = json_object_new_object(), *c, *h;
    struct keyd_answer ans;
    int rc;

    *blob = NULL;
    *len = 0;
    if (!body)
        return -ENOMEM;
    json_object_object_add(body, "vault", json_object_new_string(vault_id));
    rc = keyd_post(kc, "/v1/anchor-get", body, false, &ans);
    json_object_put(body);
    if (rc == 0)
        rc = anchor_http(kc, &ans, "read");
    if (rc == 0 && ans.status == 404)
        rc = -ENOENT;
    if (rc == 0 && (!ans.body || !json_object_object_get_ex(ans.body, "counter", &c) ||
                    !json_object_object_get_ex(ans.body, "hash", &h) ||
                    !json_object_is_type(c, json_type_int) || json_object_get_int64(c) < 0 ||
                    !json_object_is_type(h, json_type_string) ||
                    json_object_get_string_len(h) != 64 ||
                    hex_decode(json_object_get_string(h), hash, 32) < 0))
        rc = pfs_err(-EPROTO, "the key service at %s sent a malformed vault head anchor",
                     kc->url);
    if (rc == 0)
        *counter = (uint64_t)json_object_get_int64(c);
    json_object_put(ans.body);
    return rc;
}

static int keyd_anchor_put(struct share_provider *sp, const char *vault_id, uint64_t counter,
                           const uint8_t hash[32], const uint8_t *blob, size_t len, int force)
{
    const struct keyd_client *kc = sp->impl;
    bool admin = !kc->anchor_token[0];
    json_object *body, *c;
    struct keyd_answer ans;
    int rc;

    (void)blob, (void)len;   /* only (counter, hash): a head can be megabytes */
    if (admin && !kc->admin_token_file && !getenv(KEYD_ADMIN_TOKEN_ENV))
        return -EOPNOTSUPP;   /* no login yet (enroll, init): the next unlock advances it */
    body = json_object_new_object();
    if (!body)
        return -ENOMEM;
    json_object_object_add(body, "vault", json_object_new_string(vault_id));
    json_object_object_add(body, "counter", json_object_new_int64((int64_t)counter));
    add_hex(body, "hash", hash, 32);
    if (!admin) {
        json_object_object_add(body, "account", json_object_new_string(kc->anchor_account));
        json_object_object_add(body, "token", json_object_new_string(kc->anchor_token));
    }
    if (force)
        json_object_object_add(body, "force", json_object_new_boolean(1));
    rc = keyd_post(kc, "/v1/anchor-put", body, admin, &ans);
    json_wipe_put(body);
    if (rc == 0)
        rc = anchor_http(kc, &ans, "advance");
    if (rc == 0 && ans.status == 409) {
        int64_t have = ans.body && json_object_object_get_ex(ans.body, "counter", &c) ?
                       json_object_get_int64(c) : -1;
        rc = pfs_err(-ESTALE, "the key service at %s has seen vault head %lld, %s %llu",
                     kc->url, (long long)have, strcmp(answer_error(&ans), "fork") == 0 ?
                     "a different head with the same counter as" : "newer than",
                     (unsigned long long)counter);
    }
    json_object_put(ans.body);
    return rc;
}

static void keyd_destroy(struct share_provider *sp)
{
    keyd_client_free(sp->impl);
    free(sp);
}

static const struct share_provider_ops keyd_ops = {
    .name = "keyd",
    .enroll = keyd_enroll,
    .register_code = keyd_register_code,
    .fetch = keyd_fetch,
    .change_auth = keyd_change_auth,
    .rotate = keyd_rotate,
    .remove = keyd_remove,
    .anchor_get = keyd_anchor_get,
    .anchor_put = keyd_anchor_put,
    .destroy = keyd_destroy,
};

int share_keyd_open(const struct keyd_client_config *cfg, struct share_provider **out)
{
    struct keyd_client *kc;
    struct share_provider *sp;
    bool oom = false;
    size_t n;

    *out = NULL;
    if (!cfg || !cfg->url || strncmp(cfg->url, "https://", 8) != 0)
        return pfs_err(-EINVAL, "keyd url must start with https:// (got '%s'): the key service "
                       "is reached over TLS only", cfg && cfg->url ? cfg->url : "");
    if (!cfg->cert_file != !cfg->key_file)
        return pfs_err(-EINVAL, "keyd cert_file and key_file go together: set both or neither");
    if (https_global_init() != 0)
        return pfs_err(-ENOMEM, "cannot initialise libcurl");
    kc = calloc(1, sizeof *kc);
    sp = calloc(1, sizeof *sp);
    if (!kc || !sp) {
        free(kc);
        free(sp);
        return pfs_err(-ENOMEM, "out of memory");
    }
    kc->url = dup_or_null(cfg->url, &oom);
    kc->ca_file = dup_or_null(cfg->ca_file, &oom);
    kc->cert_file = dup_or_null(cfg->cert_file, &oom);
    kc->key_file = dup_or_null(cfg->key_file, &oom);
    kc->admin_token_file = dup_or_null(cfg->admin_token_file, &oom);
    kc->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : KEYD_DEFAULT_TIMEOUT_MS;
    if (oom) {
        keyd_client_free(kc);
        free(sp);
        return pfs_err(-ENOMEM, "out of memory");
    }
    n = strlen(kc->url);
    while (n > 8 && kc->url[n - 1] == '/')
        kc->url[--n] = '\0';
    sp->ops = &keyd_ops;
    sp->impl = kc;
    *out = sp;
    return 0;
}
