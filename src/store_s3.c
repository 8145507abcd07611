#include "config.h"

/* An S3-compatible endpoint (Ceph RGW, MinIO, AWS) over HTTPS with SigV4.
 *
 * Path-style URLs https://host:port/bucket/object.  libcurl signs each
 * request (CURLOPT_AWS_SIGV4); three things it does not do, we do here:
 * it sends no x-amz-content-sha256 (we set the body's hex SHA-256), it signs
 * the query string exactly as written (we emit it canonical: sorted, RFC 3986
 * encoded, "name=" for empty values) and it signs the path as given (we
 * percent-encode bucket and object names).
 *
 * Curl handles are not thread-safe and the object layer calls us from
 * several threads, so each request borrows a handle from a small pool and
 * returns it: connections (and TLS sessions) stay alive across requests.
 * Verification is always on; there is no insecure mode.
 *
 * Transient failures (connection errors, timeouts, 5xx, 429) are retried a
 * bounded number of times with backoff.  After an endpoint proves
 * unreachable, calls fail at once for a short while instead of paying the
 * retries again on every fragment, so reads rebuild from parity quickly.
 */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "crypto.h"
#include "error.h"
#include "https.h"
#include "secmem.h"
#include "store.h"

/* libxml2 parses ListObjectsV2 replies and error documents.  Built without
 * it (configure not yet wired), list is refused and errors are reported by
 * HTTP status only. */
#if defined(__has_include)
#if __has_include(<libxml/parser.h>)
#define S3_HAVE_LIBXML 1
#include <libxml/parser.h>
#include <libxml/tree.h>
#endif
#endif

#define NAME_MAX_LEN 128
#define POOL_MAX_IDLE 32
#define MAX_ATTEMPTS 4
#define BACKOFF_FIRST_MS 100
#define DOWN_HOLD_MS 5000          /* fail fast this long after "unreachable" */
#define CONNECT_TIMEOUT_S 10
#define LOW_SPEED_TIME_S 30        /* abort a transfer stalled this long */
#define REQUEST_TIMEOUT_S 300
#define MAX_OBJECT_BYTES (256u << 20)
#define MAX_ERROR_BODY (64u << 10)
#define MAX_LIST_BODY (16u << 20)
#define EMPTY_SHA256_HEX "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct handle_pool {
    pthread_mutex_t lock;
    CURL *idle[POOL_MAX_IDLE];
    unsigned n;
};

struct s3_store {
    char *endpoint_url;        /* https://host:port, no trailing slash */
    char *bucket;
    char *label;               /* "endpoint 2", for messages */
    char *sigv4;               /* "aws:amz:REGION:s3" */
    char *access_key;
    char *secret_key;          /* secmem */
    char *ca_file, *cert_file, *key_file;
    struct handle_pool pool;
    _Atomic int64_t down_until_ms;
};

/* One response body: growable (get, list, errors) or the caller's buffer. */
struct body_sink {
    uint8_t *data;
    size_t len, cap, max;
    int fixed;                 /* data is the caller's buffer of cap bytes */
    int overflow;
};

struct s3_request {
    const char *method;        /* GET PUT HEAD DELETE */
    const char *object;        /* NULL: the bucket itself */
    const char *query;         /* canonical query string or NULL */
    const void *body;
    size_t body_len;
    struct body_sink *sink;    /* success body (NULL: discard) */
    const char *range;         /* "first-last" bytes (GET), or NULL */
    /* results */
    long status;
    curl_off_t content_length;
    CURLcode curl_rc;
    char curl_err[CURL_ERROR_SIZE];
    char s3_code[64];          /* <Code> of an error document */
};

struct upload {
    const uint8_t *p;
    size_t left;
};

static struct s3_store *impl_of(struct store *s)
{
    return s->impl;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* ------------------------------------------------------------ names, URLs */

static int valid_name_char(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || ch == '.' || ch == '_' ||
           ch == '-';
}

static int is_valid_object_name(const char *name)
{
    size_t n = strnlen(name, NAME_MAX_LEN + 1);

    if (n == 0 || n > NAME_MAX_LEN || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!valid_name_char(name[i]))
            return 0;
    return 1;
}

static int check_name(struct store *s, const char *name)
{
    if (is_valid_object_name(name))
        return 0;
    return pfs_err(-EINVAL, "endpoint %s: invalid object name \"%.40s\" (want 1-128 of "
                   "[0-9a-z._-], not starting with '.')", s->desc, name);
}

/* S3 bucket naming rules: 3-63 of [a-z0-9.-], starting and ending alnum. */
static int is_valid_bucket(const char *b)
{
    size_t n = strlen(b);

    if (n < 3 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = b[i];
        int alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && ch != '.' && ch != '-')
            return 0;
        if ((i == 0 || i == n - 1) && !alnum)
            return 0;
    }
    return 1;
}

static int is_valid_region(const char *r)
{
    size_t n = strlen(r);

    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((r[i] >= 'a' && r[i] <= 'z') || (r[i] >= '0' && r[i] <= '9') || r[i] == '-' ||
              r[i] == '_'))
            return 0;
    return 1;
}

static int is_unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* RFC 3986 percent-encoding as SigV4 canonicalises it ('/' too); malloc'd. */
static char *uri_encode(const char *in)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(in);
    char *out = malloc(3 * n + 1), *o = out;

    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        if (is_unreserved(*p)) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

static char *request_url(const struct s3_store *d, const char *object, const char *query)
{
    char *b = uri_encode(d->bucket), *o = object ? uri_encode(object) : NULL, *url = NULL;

    if (b && (!object || o) &&
        asprintf(&url, "%s/%s%s%s%s%s", d->endpoint_url, b, object ? "/" : "",
                 object ? o : "", query ? "?" : "", query ? query : "") < 0)
        url = NULL;
    free(b);
    free(o);
    return url;
}

/* ------------------------------------------------------------ handle pool */

static CURL *pool_take(struct handle_pool *p)
{
    CURL *h = NULL;

    pthread_mutex_lock(&p->lock);
    if (p->n > 0)
        h = p->idle[--p->n];
    pthread_mutex_unlock(&p->lock);
    return h ? h : curl_easy_init();
}

static void pool_give(struct handle_pool *p, CURL *h)
{
    pthread_mutex_lock(&p->lock);
    if (p->n < POOL_MAX_IDLE) {
        p->idle[p->n++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&p->lock);
    if (h)
        curl_easy_cleanup(h);
}

static void pool_drain(struct handle_pool *p)
{
    while (p->n > 0)
        curl_easy_cleanup(p->idle[--p->n]);
}

/* ------------------------------------------------------------ transfers */

static size_t sink_append(struct body_sink *b, const void *p, size_t n)
{
    if (n > b->max - b->len || (b->fixed && n > b->cap - b->len)) {
        b->overflow = 1;
        return 0;   /* aborts the transfer */
    }
    if (!b->fixed && b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64 * 1024;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > b->max)
            cap = b->max;
        uint8_t *grown = realloc(b->data, cap);
        if (!grown)
            return 0;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return n;
}

struct transfer {
    CURL *h;
    struct s3_request *rq;
    struct body_sink errbody;  /* body of a non-2xx reply */
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct transfer *t = arg;
    long status = 0;

    curl_easy_getinfo(t->h, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300 && t->rq->sink)
        return sink_append(t->rq->sink, p, size * nmemb);
    if (status >= 200 && status < 300)
        return size * nmemb;
    sink_append(&t->errbody, p, size * nmemb);
    return size * nmemb;   /* keep reading a long error body; the rest is dropped */
}

static size_t on_upload(char *dst, size_t size, size_t nmemb, void *arg)
{
    struct upload *u = arg;
    size_t n = size * nmemb < u->left ? size * nmemb : u->left;

    memcpy(dst, u->p, n);
    u->p += n;
    u->left -= n;
    return n;
}

static void sha256_hex(const void *p, size_t n, char out[2 * SHA256_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t sum[SHA256_LEN];

    sha256(p, n, sum);
    for (size_t i = 0; i < SHA256_LEN; i++) {
        out[2 * i] = hex[sum[i] >> 4];
        out[2 * i + 1] = hex[sum[i] & 15];
    }
    out[2 * SHA256_LEN] = '\0';
}

static void set_request_options(struct transfer *t, const struct s3_store *d,
                                const char *url, struct curl_slist *hdrs, struct upload *up)
{
    CURL *h = t->h;
    struct s3_request *rq = t->rq;

    https_setup(h, &(struct https_tls){ d->ca_file, d->cert_file, d->key_file });
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)REQUEST_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)LOW_SPEED_TIME_S);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, rq->curl_err);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, d->sigv4);
    curl_easy_setopt(h, CURLOPT_USERNAME, d->access_key);
    curl_easy_setopt(h, CURLOPT_PASSWORD, d->secret_key);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
    if (strcmp(rq->method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_upload);
        curl_easy_setopt(h, CURLOPT_READDATA, up);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)rq->body_len);
        /* radosgw sends no "100 Continue": do not wait for it before a large
         * body.  (An empty "Expect:" header instead would break the SigV4
         * signature: libcurl signs it but does not send it.) */
        curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 1L);
    } else if (strcmp(rq->method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(rq->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
    }
}

static struct curl_slist *request_headers(const struct s3_request *rq)
{
    char line[64 + 2 * SHA256_LEN];
    char hex[2 * SHA256_LEN + 1];
    struct curl_slist *t;

    if (rq->body_len)
        sha256_hex(rq->body, rq->body_len, hex);
    else
        snprintf(hex, sizeof hex, "%s", EMPTY_SHA256_HEX);
    snprintf(line, sizeof line, "x-amz-content-sha256: %s", hex);
    if (!(t = curl_slist_append(NULL, line)))
        return NULL;
    return t;
}

#ifdef S3_HAVE_LIBXML
static xmlDocPtr parse_xml(const uint8_t *p, size_t n)
{
    if (n == 0 || n > INT32_MAX)
        return NULL;
    /* No network, no entity expansion, no DTD loading: the server is untrusted. */
    return xmlReadMemory((const char *)p, (int)n, "s3.xml", NULL,
                         XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
}

/* Text of the first child element of parent named name, or NULL (xmlFree). */
static xmlChar *child_text(xmlNodePtr parent, const char *name)
{
    for (xmlNodePtr c = parent ? parent->children : NULL; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && xmlStrcmp(c->name, (const xmlChar *)name) == 0)
            return xmlNodeGetContent(c);
    return NULL;
}
#endif

/* <Error><Code>SignatureDoesNotMatch</Code>... into rq->s3_code. */
static void parse_error_code(struct s3_request *rq, const struct body_sink *b)
{
#ifdef S3_HAVE_LIBXML
    xmlDocPtr doc = parse_xml(b->data, b->len);
    xmlChar *code = doc ? child_text(xmlDocGetRootElement(doc), "Code") : NULL;

    if (code)
        snprintf(rq->s3_code, sizeof rq->s3_code, "%s", (const char *)code);
    xmlFree(code);
    xmlFreeDoc(doc);
#else
    (void)rq;
    (void)b;
#endif
}

static void perform_once(struct s3_store *d, CURL *h, const char *url, struct s3_request *rq,
                         struct curl_slist *hdrs)
{
    struct transfer t = { .h = h, .rq = rq, .errbody = { .max = MAX_ERROR_BODY } };
    struct upload up = { .p = rq->body, .left = rq->body_len };

    curl_easy_reset(h);   /* keeps the live connection and TLS session */
    rq->curl_err[0] = '\0';
    rq->s3_code[0] = '\0';
    rq->status = 0;
    rq->content_length = -1;
    if (rq->sink && !rq->sink->fixed)
        rq->sink->len = 0;
    if (rq->sink && rq->sink->fixed) {
        rq->sink->len = 0;
        rq->sink->overflow = 0;
    }
    set_request_options(&t, d, url, hdrs, &up);
    if (rq->range)
        curl_easy_setopt(h, CURLOPT_RANGE, rq->range);
    rq->curl_rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rq->status);
    curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &rq->content_length);
    if (rq->status >= 300 && t.errbody.len)
        parse_error_code(rq, &t.errbody);
    free(t.errbody.data);
}

static int is_connection_failure(CURLcode rc)
{
    return https_is_unreachable(https_classify(rc));
}

static int is_tls_failure(CURLcode rc)
{
    return https_is_tls(https_classify(rc));
}

static int worth_retrying(const struct s3_request *rq)
{
    if (rq->curl_rc == CURLE_OK)
        return rq->status >= 500 || rq->status == 429;
    if (is_tls_failure(rq->curl_rc) || rq->curl_rc == CURLE_WRITE_ERROR ||
        rq->curl_rc == CURLE_OUT_OF_MEMORY)
        return 0;
    return 1;   /* connection refused, reset, timeout, partial transfer */
}

/* Run a request with bounded retries.  0 if the exchange completed (any
 * HTTP status), -EHOSTUNREACH/-EPROTO/-EIO/-ENOMEM with a message if not. */
static int perform(struct store *s, struct s3_request *rq)
{
    struct s3_store *d = impl_of(s);
    char *url;
    struct curl_slist *hdrs;
    CURL *h;
    int rc = 0;

    if (now_ms() < atomic_load(&d->down_until_ms))
        return pfs_err(-EHOSTUNREACH, "%s (%s) was unreachable moments ago; not retrying yet",
                       d->label, s->desc);
    url = request_url(d, rq->object, rq->query);
    hdrs = request_headers(rq);
    h = pool_take(&d->pool);
    if (!url || !hdrs || !h) {
        rc = pfs_err(-ENOMEM, "endpoint %s: out of memory preparing a request", s->desc);
        goto out;
    }
    for (unsigned attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        if (attempt > 0)
            sleep_ms((BACKOFF_FIRST_MS << (2 * (attempt - 1))) + (unsigned)(rand() % 50));
        perform_once(d, h, url, rq, hdrs);
        if (!worth_retrying(rq))
            break;
    }
    if (rq->curl_rc == CURLE_OK)
        goto out;
    if (is_connection_failure(rq->curl_rc)) {
        atomic_store(&d->down_until_ms, now_ms() + DOWN_HOLD_MS);
        rc = pfs_err(-EHOSTUNREACH, "%s (%s) cannot be reached: %s; is the server running "
                     "and the url right?", d->label, d->endpoint_url,
                     rq->curl_err[0] ? rq->curl_err : curl_easy_strerror(rq->curl_rc));
    } else if (is_tls_failure(rq->curl_rc)) {
        rc = pfs_err(-EPROTO, "%s (%s): TLS failed: %s; check that the server's certificate "
                     "is signed by the CA in %s (ca_file) and names this host", d->label,
                     d->endpoint_url,
                     rq->curl_err[0] ? rq->curl_err : curl_easy_strerror(rq->curl_rc),
                     d->ca_file ? d->ca_file : "the system CA bundle");
    } else if (rq->curl_rc == CURLE_WRITE_ERROR && rq->sink && rq->sink->overflow) {
        rc = 0;   /* the caller reports the size mismatch */
    } else {
        rc = pfs_err(-EIO, "%s (%s): %s %s failed: %s", d->label, s->desc, rq->method,
                     rq->object ? rq->object : "bucket",
                     rq->curl_err[0] ? rq->curl_err : curl_easy_strerror(rq->curl_rc));
    }
out:
    if (h)
        pool_give(&d->pool, h);
    curl_slist_free_all(hdrs);
    free(url);
    return rc;
}

/* A message a person can act on for a non-2xx reply. */
static int http_error(struct store *s, const struct s3_request *rq)
{
    struct s3_store *d = impl_of(s);
    const char *code = rq->s3_code;
    const char *what = rq->object ? rq->object : "(bucket)";

    if (strcmp(code, "SignatureDoesNotMatch") == 0)
        return pfs_err(-EACCES, "%s (%s): the secret key for %s is wrong (the server says "
                       "SignatureDoesNotMatch); fix secret_key in the configuration",
                       d->label, s->desc, d->label);
    if (strcmp(code, "InvalidAccessKeyId") == 0)
        return pfs_err(-EACCES, "%s (%s): the server does not know access key %s "
                       "(InvalidAccessKeyId); fix access_key in the configuration",
                       d->label, s->desc, d->access_key);
    if (strcmp(code, "NoSuchBucket") == 0)
        return pfs_err(-ENOENT, "%s: bucket %s does not exist at %s; create it or fix bucket "
                       "in the configuration", d->label, d->bucket, d->endpoint_url);
    if (rq->status == 404)
        return pfs_err(-ENOENT, "endpoint %s: object %s not found", s->desc, what);
    if (rq->status == 401 || rq->status == 403)
        return pfs_err(-EACCES, "%s (%s): access denied (%ld %s) on %s %s; check access_key, "
                       "secret_key and the bucket's permissions", d->label, s->desc,
                       rq->status, code[0] ? code : "Forbidden", rq->method, what);
    return pfs_err(-EIO, "%s (%s): %s %s answered HTTP %ld%s%s", d->label, s->desc,
                   rq->method, what, rq->status, code[0] ? " " : "", code);
}

static int run_request(struct store *s, struct s3_request *rq)
{
    int rc = perform(s, rq);

    if (rc)
        return rc;
    if (rq->status >= 200 && rq->status < 300)
        return 0;
    return http_error(s, rq);
}

/* ------------------------------------------------------------ operations */

static int s3_put(struct store *s, const char *name, const void *data, size_t len)
{
    struct s3_request rq = { .method = "PUT", .object = name, .body = data, .body_len = len };
    int rc = check_name(s, name);

    return rc ? rc : run_request(s, &rq);
}

static int s3_get(struct store *s, const char *name, void **data, size_t *len)
{
    struct body_sink sink = { .max = MAX_OBJECT_BYTES };
    struct s3_request rq = { .method = "GET", .object = name, .sink = &sink };
    int rc;

    *data = NULL;
    *len = 0;
    if ((rc = check_name(s, name)))
        return rc;
    rc = run_request(s, &rq);
    if (rc == 0 && sink.overflow)
        rc = pfs_err(-EFBIG, "endpoint %s: object %s is larger than %u bytes", s->desc, name,
                     MAX_OBJECT_BYTES);
    if (rc) {
        free(sink.data);
        return rc;
    }
    *data = sink.data ? sink.data : malloc(1);
    *len = sink.len;
    return *data ? 0 : pfs_err(-ENOMEM, "endpoint %s: out of memory", s->desc);
}

static int s3_get_into(struct store *s, const char *name, void *buf, size_t len)
{
    struct body_sink sink = { .data = buf, .cap = len, .max = len, .fixed = 1 };
    struct s3_request rq = { .method = "GET", .object = name, .sink = &sink };
    int rc = check_name(s, name);

    if (rc)
        return rc;
    rc = run_request(s, &rq);
    if (rc)
        return rc;
    if (sink.overflow || sink.len != len)
        return pfs_err(-EBADMSG, "endpoint %s: object %s has %s%zu bytes, expected %zu",
                       s->desc, name, sink.overflow ? "more than " : "", sink.len, len);
    return 0;
}

/* A fragment inside a pack: GET with a Range, answered 206 with exactly
 * len bytes (a server that ignores Range sends the whole object, which
 * then overflows the fixed sink and is refused). */
static int s3_get_range(struct store *s, const char *name, uint64_t off, void *buf,
                        size_t len)
{
    struct body_sink sink = { .data = buf, .cap = len, .max = len, .fixed = 1 };
    char range[48];
    struct s3_request rq = { .method = "GET", .object = name, .sink = &sink, .range = range };
    int rc = check_name(s, name);

    if (rc)
        return rc;
    if (len == 0)
        return pfs_err(-EINVAL, "endpoint %s: empty range of %s", s->desc, name);
    snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)off,
             (unsigned long long)(off + len - 1));
    rc = run_request(s, &rq);
    if (rc == -EIO && rq.status == 416)
        return pfs_err(-EBADMSG, "endpoint %s: object %s is too short for %zu bytes at "
                       "offset %llu", s->desc, name, len, (unsigned long long)off);
    if (rc)
        return rc;
    if (sink.overflow || sink.len != len)
        return pfs_err(-EBADMSG, "endpoint %s: object %s gave %s%zu bytes for a range of "
                       "%zu", s->desc, name, sink.overflow ? "more than " : "", sink.len, len);
    return 0;
}

/* S3 DELETE answers 204 whether or not the object existed, so an absent
 * object is not reported as -ENOENT here. */
static int s3_del(struct store *s, const char *name)
{
    struct s3_request rq = { .method = "DELETE", .object = name };
    int rc = check_name(s, name);

    return rc ? rc : run_request(s, &rq);
}

static int s3_stat(struct store *s, const char *name, uint64_t *size)
{
    struct s3_request rq = { .method = "HEAD", .object = name };
    int rc = check_name(s, name);

    if (rc || (rc = run_request(s, &rq)))
        return rc;
    if (rq.content_length < 0)
        return pfs_err(-EIO, "endpoint %s: HEAD %s gave no Content-Length", s->desc, name);
    *size = (uint64_t)rq.content_length;
    return 0;
}

#ifdef S3_HAVE_LIBXML
struct list_page {
    int truncated;
    char *next_token;          /* malloc'd */
};

static int parse_size(const xmlChar *text, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!text || !*text || *text == '-')
        return -1;
    errno = 0;
    v = strtoull((const char *)text, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* Visit one <Contents> entry; objects that are not ours are skipped. */
static int visit_contents(xmlNodePtr c, int (*cb)(void *, const char *, uint64_t), void *arg)
{
    xmlChar *key = child_text(c, "Key"), *size = child_text(c, "Size");
    uint64_t n;
    int rc = 0;

    if (key && is_valid_object_name((const char *)key) && parse_size(size, &n) == 0)
        rc = cb(arg, (const char *)key, n);
    xmlFree(key);
    xmlFree(size);
    return rc;
}

static int parse_list_page(struct store *s, const struct body_sink *b, struct list_page *pg,
                           int (*cb)(void *, const char *, uint64_t), void *arg)
{
    xmlDocPtr doc = parse_xml(b->data, b->len);
    xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
    xmlChar *trunc, *token;
    int rc = 0;

    if (!root || xmlStrcmp(root->name, (const xmlChar *)"ListBucketResult") != 0) {
        xmlFreeDoc(doc);
        return pfs_err(-EIO, "endpoint %s: the object listing is not a ListBucketResult "
                       "document", s->desc);
    }
    for (xmlNodePtr c = root->children; c && rc == 0; c = c->next)
        if (c->type == XML_ELEMENT_NODE && xmlStrcmp(c->name, (const xmlChar *)"Contents") == 0)
            rc = visit_contents(c, cb, arg);
    trunc = child_text(root, "IsTruncated");
    token = child_text(root, "NextContinuationToken");
    pg->truncated = trunc && xmlStrcmp(trunc, (const xmlChar *)"true") == 0;
    pg->next_token = token && *token ? strdup((const char *)token) : NULL;
    xmlFree(trunc);
    xmlFree(token);
    xmlFreeDoc(doc);
    if (rc == 0 && pg->truncated && !pg->next_token)
        rc = pfs_err(-EIO, "endpoint %s: a truncated listing came without a continuation "
                     "token", s->desc);
    return rc;
}

/* "continuation-token=T&list-type=2&max-keys=1000": sorted, encoded. */
static char *list_query(const char *token)
{
    char *enc = token ? uri_encode(token) : NULL, *q = NULL;

    if (token && !enc)
        return NULL;
    if (asprintf(&q, "%s%s%slist-type=2&max-keys=1000", token ? "continuation-token=" : "",
                 token ? enc : "", token ? "&" : "") < 0)
        q = NULL;
    free(enc);
    return q;
}

static int s3_list(struct store *s, int (*cb)(void *, const char *, uint64_t), void *arg)
{
    char *token = NULL;
    int rc = 0;

    if (!cb)
        return pfs_err(-EINVAL, "endpoint %s: list needs a callback", s->desc);
    do {
        struct body_sink sink = { .max = MAX_LIST_BODY };
        struct list_page pg = { 0 };
        char *q = list_query(token);
        struct s3_request rq = { .method = "GET", .query = q, .sink = &sink };

        free(token);
        token = NULL;
        rc = q ? run_request(s, &rq) : pfs_err(-ENOMEM, "endpoint %s: out of memory", s->desc);
        if (rc == 0 && sink.overflow)
            rc = pfs_err(-EIO, "endpoint %s: a listing page exceeds %u bytes", s->desc,
                         MAX_LIST_BODY);
        if (rc == 0)
            rc = parse_list_page(s, &sink, &pg, cb, arg);
        free(sink.data);
        free(q);
        token = pg.next_token;
        if (rc == 0 && !pg.truncated)
            break;
    } while (rc == 0);
    free(token);
    return rc;
}
#else
static int s3_list(struct store *s, int (*cb)(void *, const char *, uint64_t), void *arg)
{
    (void)cb;
    (void)arg;
    return pfs_err(-ENOTSUP, "endpoint %s: this build has no XML parser (libxml2), so it "
                   "cannot list objects; rebuild with libxml2-dev installed", s->desc);
}
#endif

/* A successful PUT is durable by S3 semantics: nothing to flush. */
static int s3_sync(struct store *s)
{
    (void)s;
    return 0;
}

/* S3 has no free-space notion (a bucket grows until a quota the API does
 * not expose): statfs treats the endpoint as unlimited. */
static int s3_space(struct store *s, struct store_space_info *out)
{
    (void)s;
    (void)out;
    return -ENOTSUP;
}

static void s3_free_impl(struct s3_store *d)
{
    if (!d)
        return;
    pool_drain(&d->pool);
    pthread_mutex_destroy(&d->pool.lock);
    free(d->endpoint_url);
    free(d->bucket);
    free(d->label);
    free(d->sigv4);
    free(d->access_key);
    secmem_free_str(d->secret_key);
    free(d->ca_file);
    free(d->cert_file);
    free(d->key_file);
    free(d);
}

static void s3_close(struct store *s)
{
    s3_free_impl(impl_of(s));
    free(s->desc);
    free(s);
}

static const struct store_ops s3_ops = {
    .type = "s3",
    .put = s3_put,
    .get = s3_get,
    .del = s3_del,
    .stat = s3_stat,
    .list = s3_list,
    .sync = s3_sync,
    .space = s3_space,
    .close = s3_close,
    .get_into = s3_get_into,
    .get_range = s3_get_range,
};

/* ------------------------------------------------------------ open */

static pthread_once_t libs_once = PTHREAD_ONCE_INIT;
static int libs_rc;

/* Both libraries want one global initialisation before threads use them. */
static void init_libs(void)
{
    libs_rc = https_global_init();
#ifdef S3_HAVE_LIBXML
    xmlInitParser();
#endif
}

static int check_config(const struct store_s3_config *c)
{
    const char *who = c->label ? c->label : (c->url ? c->url : "an s3 endpoint");

    if (!c->url || strncmp(c->url, "https://", 8) != 0 || strlen(c->url) <= 8)
        return pfs_err(-EINVAL, "%s: url must be https://host[:port] (TLS is required)", who);
    if (strpbrk(c->url + 8, "?#@ ") || strchr(c->url + 8, '/') != strrchr(c->url + 8, '/') ||
        (strchr(c->url + 8, '/') && strchr(c->url + 8, '/')[1] != '\0'))
        return pfs_err(-EINVAL, "%s: url \"%s\" must be just https://host[:port] (the bucket "
                       "goes in bucket, path-style)", who, c->url);
    if (!c->bucket || !is_valid_bucket(c->bucket))
        return pfs_err(-EINVAL, "%s: bucket \"%s\" is not a valid S3 bucket name (3-63 of "
                       "[a-z0-9.-])", who, c->bucket ? c->bucket : "");
    if (!c->region || !is_valid_region(c->region))
        return pfs_err(-EINVAL, "%s: region \"%s\" is not valid (e.g. us-east-1)", who,
                       c->region ? c->region : "");
    if (!c->access_key || !*c->access_key || !c->secret_key || !*c->secret_key)
        return pfs_err(-EINVAL, "%s: access_key and secret_key are required", who);
    if (!c->cert_file != !c->key_file)
        return pfs_err(-EINVAL, "%s: cert_file and key_file go together", who);
    return 0;
}

static char *dup_opt(const char *p, int *oom)
{
    char *r = p ? strdup(p) : NULL;

    if (p && !r)
        *oom = 1;
    return r;
}

static struct s3_store *s3_store_new(const struct store_s3_config *c)
{
    struct s3_store *d = calloc(1, sizeof *d);
    size_t ulen = strlen(c->url);
    int oom = 0;

    if (!d)
        return NULL;
    pthread_mutex_init(&d->pool.lock, NULL);
    d->endpoint_url = strndup(c->url, c->url[ulen - 1] == '/' ? ulen - 1 : ulen);
    d->bucket = dup_opt(c->bucket, &oom);
    d->label = dup_opt(c->label ? c->label : "the endpoint", &oom);
    d->access_key = dup_opt(c->access_key, &oom);
    d->secret_key = secmem_strdup(c->secret_key);
    d->ca_file = dup_opt(c->ca_file, &oom);
    d->cert_file = dup_opt(c->cert_file, &oom);
    d->key_file = dup_opt(c->key_file, &oom);
    if (asprintf(&d->sigv4, "aws:amz:%s:s3", c->region) < 0)
        d->sigv4 = NULL;
    if (oom || !d->endpoint_url || !d->secret_key || !d->sigv4) {
        s3_free_impl(d);
        return NULL;
    }
    return d;
}

/* PUT /bucket; already owning it is fine. */
static int create_bucket(struct store *s)
{
    struct s3_request rq = { .method = "PUT" };
    int rc = perform(s, &rq);

    if (rc)
        return rc;
    if ((rq.status >= 200 && rq.status < 300) ||
        strcmp(rq.s3_code, "BucketAlreadyOwnedByYou") == 0)
        return 0;
    if (strcmp(rq.s3_code, "BucketAlreadyExists") == 0)
        return pfs_err(-EEXIST, "%s: bucket %s belongs to another account at %s; choose "
                       "another bucket name", impl_of(s)->label, impl_of(s)->bucket,
                       impl_of(s)->endpoint_url);
    return http_error(s, &rq);
}

/* A one-key listing proves the server, the credentials and the bucket. */
static int probe_bucket(struct store *s)
{
    struct body_sink sink = { .max = MAX_LIST_BODY };
    struct s3_request rq = { .method = "GET", .query = "list-type=2&max-keys=1",
                             .sink = &sink };
    int rc = run_request(s, &rq);

    free(sink.data);
    if (rc == -ENOENT)   /* a 404 on the bucket itself */
        return pfs_err(-ENOENT, "%s: bucket %s does not exist at %s; create it or fix bucket "
                       "in the configuration", impl_of(s)->label, impl_of(s)->bucket,
                       impl_of(s)->endpoint_url);
    return rc;
}

int store_s3_open(const struct store_s3_config *c, int create, struct store **out)
{
    struct store *s;
    struct s3_store *d;
    int rc;

    *out = NULL;
    if ((rc = check_config(c)))
        return rc;
    pthread_once(&libs_once, init_libs);
    if (libs_rc)
        return pfs_err(libs_rc, "cannot initialise libcurl");
    s = calloc(1, sizeof *s);
    d = s3_store_new(c);
    if (!s || !d || asprintf(&s->desc, "s3:%s/%s", d->endpoint_url, d->bucket) < 0) {
        free(s);
        s3_free_impl(d);
        return pfs_err(-ENOMEM, "out of memory opening endpoint %s", c->url);
    }
    s->ops = &s3_ops;
    s->impl = d;
    rc = create ? create_bucket(s) : 0;
    if (rc == 0)
        rc = probe_bucket(s);
    if (rc) {
        s3_close(s);
        return rc;
    }
    *out = s;
    return 0;
}
