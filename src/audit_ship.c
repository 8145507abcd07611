#include "config.h"

/* Audit shipper: tail the spool from a durable cursor, POST batches of whole
 * lines as NDJSON, advance the cursor only on a 2xx answer.  Line parsing,
 * hashing and the chain rules are audit.c's.  Protocol: docs/auditd.md;
 * spool layout: docs/format-audit.md. */

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "audit.h"
#include "audit_query.h"
#include "audit_ship.h"
#include "crypto.h"
#include "error.h"
#include "fileio.h"
#include "https.h"
#include "log.h"

#define HASH_HEX (2 * SHA256_LEN)
#define REPLY_MAX (64u * 1024u)             /* receiver answers we keep */
#define CURSOR_FILE_MAX 4096
#define DEFAULT_POLL_MS 200u
#define DEFAULT_BACKOFF_MIN_MS 250u
#define DEFAULT_BACKOFF_MAX_MS 15000u
#define DEFAULT_TIMEOUT_MS 30000u
#define LOG_EVERY_FAILURES 20u              /* repeat a failure in the log this often */

/* ---- cursor ---- */

static char *cursor_path(const char *spool_path)
{
    char *p = NULL;

    if (asprintf(&p, "%s%s", spool_path, AUDIT_SHIP_CURSOR_SUFFIX) < 0)
        return NULL;
    return p;
}

static int read_small_file(const char *path, char *buf, size_t cap, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -errno;
    n = read(fd, buf, cap);
    close(fd);
    if (n < 0)
        return -EIO;
    if ((size_t)n == cap)
        return -EBADMSG;
    *len = (size_t)n;
    return 0;
}

static bool hash_hex_ok(const char *h)
{
    if (strlen(h) != HASH_HEX)
        return false;
    for (size_t i = 0; i < HASH_HEX; i++)
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
            return false;
    return true;
}

static int cursor_from_json(json_object *o, struct audit_cursor *c)
{
    const char *hash = audit_field_str(o, "hash");
    uint64_t version = 0;

    if (audit_field_uint(o, "version", &version) != 0 || version != 1 ||
        audit_field_uint(o, "offset", &c->offset) != 0 || audit_field_uint(o, "seq", &c->seq) != 0 || !hash)
        return -EBADMSG;
    if (c->offset == 0 ? (c->seq != 0 || hash[0]) : (c->seq == 0 || !hash_hex_ok(hash)))
        return -EBADMSG;
    snprintf(c->hash, sizeof c->hash, "%s", hash);
    return 0;
}

int audit_cursor_load(const char *spool_path, struct audit_cursor *c)
{
    char *path = cursor_path(spool_path), buf[CURSOR_FILE_MAX];
    json_object *o = NULL;
    size_t len = 0;
    int rc;

    memset(c, 0, sizeof *c);
    if (!path)
        return pfs_err(-ENOMEM, "out of memory");
    rc = read_small_file(path, buf, sizeof buf, &len);
    if (rc == -ENOENT) {
        free(path);
        return 0;
    }
    while (!rc && len && (buf[len - 1] == '\n'))
        len--;
    if (!rc && !(o = audit_line_parse(buf, len)))
        rc = -EBADMSG;
    if (!rc)
        rc = cursor_from_json(o, c);
    json_object_put(o);
    if (rc) {
        memset(c, 0, sizeof *c);
        rc = pfs_err(rc, "audit shipper cursor %s is unreadable or malformed (%s): move it "
                     "aside to resend the whole spool (the receiver drops what it already has)",
                     path, strerror(-rc));
    }
    free(path);
    return rc;
}

int audit_cursor_store(const char *spool_path, const struct audit_cursor *c)
{
    char *path = cursor_path(spool_path), text[256];
    int rc, n;

    n = snprintf(text, sizeof text, "{\"version\":1,\"offset\":%llu,\"seq\":%llu,\"hash\":\"%s\"}\n",
                 (unsigned long long)c->offset, (unsigned long long)c->seq, c->hash);
    if (!path)
        return pfs_err(-ENOMEM, "out of memory");
    rc = fileio_atomic_write(path, text, (size_t)n, 0);
    if (rc)
        rc = pfs_err(rc, "cannot write the audit shipper cursor %s: %s (check the spool "
                     "directory's space and permissions)", path, strerror(-rc));
    free(path);
    return rc;
}

/* ---- reading the spool ---- */

struct batch {
    char *buf;                  /* max_bytes */
    size_t cap;
    size_t len;                 /* bytes of whole lines, each with its newline */
    unsigned lines;
    struct audit_cursor end;    /* the cursor once this batch is acknowledged */
};

static int pread_full(int fd, char *buf, size_t n, uint64_t off, size_t *got)
{
    size_t done = 0;

    while (done < n) {
        ssize_t r = pread(fd, buf + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

/* The last line of a batch names its seq and hash for the cursor. */
static int batch_close(struct batch *b, const char *spool_path, uint64_t start)
{
    const char *last, *end = b->buf + b->len - 1;     /* end = its newline */
    uint64_t seq = 0;

    last = end;
    while (last > b->buf && last[-1] != '\n')
        last--;
    if (audit_line_seq(last, (size_t)(end - last), &seq) != 0 || seq == 0)
        return pfs_err(-EBADMSG, "audit spool %s: the line at byte %llu is not an event "
                       "with a seq: run pactfs-admin audit-verify and move the spool aside",
                       spool_path, (unsigned long long)(start + (uint64_t)(last - b->buf)));
    b->end.offset = start + b->len;
    b->end.seq = seq;
    audit_line_hash(last, (size_t)(end - last), b->end.hash);
    return 0;
}

/* Whole lines from the cursor on, at most max_lines; an unfinished last
 * line (a writer mid-append) is left for the next round. */
static int batch_read(int fd, const char *spool_path, const struct audit_cursor *from,
                      unsigned max_lines, struct batch *b)
{
    size_t got = 0, used = 0;
    int rc;

    b->len = 0;
    b->lines = 0;
    rc = pread_full(fd, b->buf, b->cap, from->offset, &got);
    if (rc)
        return pfs_err(rc, "cannot read audit spool %s: %s", spool_path, strerror(-rc));
    while (b->lines < max_lines && used < got) {
        const char *nl = memchr(b->buf + used, '\n', got - used);
        if (!nl)
            break;
        used = (size_t)(nl - b->buf) + 1;
        b->lines++;
    }
    if (b->lines == 0 && got == b->cap)
        return pfs_err(-EBADMSG, "audit spool %s: no line end within %zu bytes after byte "
                       "%llu: the spool is damaged (run pactfs-admin audit-verify)",
                       spool_path, b->cap, (unsigned long long)from->offset);
    b->len = used;
    if (b->lines == 0)
        return 0;
    return batch_close(b, spool_path, from->offset);
}

/* The cursor must point just after a line that hashes as recorded: a spool
 * replaced, truncated or rewritten since is not silently shipped. */
static int cursor_matches_spool(int fd, const char *spool_path, const struct audit_cursor *c)
{
    size_t window = AUDIT_LINE_MAX + 1, got = 0;
    uint64_t start = c->offset > window ? c->offset - window : 0;
    char *buf, hash[HASH_HEX + 1];
    const char *line, *end;
    struct stat st;
    int rc = 0;

    if (c->offset == 0)
        return 0;
    if (fstat(fd, &st) != 0)
        return pfs_err(-errno, "cannot stat audit spool %s: %s", spool_path, strerror(errno));
    if ((uint64_t)st.st_size < c->offset)
        return pfs_err(-ESTALE, "audit spool %s is shorter (%lld bytes) than what was already "
                       "shipped (%llu): it was truncated or replaced; compare it with the "
                       "receiver's copy, then remove %s%s to ship the new spool", spool_path,
                       (long long)st.st_size, (unsigned long long)c->offset, spool_path,
                       AUDIT_SHIP_CURSOR_SUFFIX);
    buf = malloc(window);
    if (!buf)
        return pfs_err(-ENOMEM, "out of memory");
    rc = pread_full(fd, buf, (size_t)(c->offset - start), start, &got);
    if (!rc && (got != c->offset - start || buf[got - 1] != '\n'))
        rc = -ESTALE;
    if (!rc) {
        end = buf + got - 1;
        line = end;
        while (line > buf && line[-1] != '\n')
            line--;
        audit_line_hash(line, (size_t)(end - line), hash);
        if (strcmp(hash, c->hash) != 0)
            rc = -ESTALE;
    }
    free(buf);
    if (rc)
        rc = pfs_err(rc, "audit spool %s does not hold the line the shipper last sent (seq "
                     "%llu at byte %llu): it was edited or replaced; compare it with the "
                     "receiver's copy, then remove %s%s to ship the new spool", spool_path,
                     (unsigned long long)c->seq, (unsigned long long)c->offset, spool_path,
                     AUDIT_SHIP_CURSOR_SUFFIX);
    return rc;
}

/* ---- HTTP ---- */

struct reply {
    char buf[REPLY_MAX];
    size_t len;
};

static size_t on_reply(char *p, size_t size, size_t n, void *arg)
{
    struct reply *r = arg;
    size_t total = size * n, room = sizeof r->buf - 1 - r->len;
    size_t take = total < room ? total : room;

    memcpy(r->buf + r->len, p, take);
    r->len += take;
    r->buf[r->len] = '\0';
    return total;
}

/* What the receiver said, for the log: its "error" field or the raw text. */
static void reply_message(const struct reply *r, char *out, size_t outlen)
{
    json_object *o = r->len ? audit_line_parse(r->buf, r->len) : NULL;
    const char *e = o ? audit_field_str(o, "error") : NULL;

    snprintf(out, outlen, "%.300s", e ? e : r->buf);
    out[strcspn(out, "\r\n")] = '\0';
    json_object_put(o);
}

struct shipper_conf {
    char *spool_path;
    char *events_url;
    char *ca_file, *cert_file, *key_file;
    unsigned poll_ms, max_lines, backoff_min_ms, backoff_max_ms, timeout_ms;
    size_t max_bytes;
};

/* Abort a transfer once the stop deadline has passed. */
struct deadline {
    _Atomic int64_t at_ms;      /* 0 = none */
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    struct deadline *dl = arg;
    int64_t at = dl ? atomic_load(&dl->at_ms) : 0;

    (void)a, (void)b, (void)c, (void)d;
    return at && now_ms() >= at;
}

static int post_batch(CURL *h, const struct shipper_conf *sc, struct deadline *dl,
                      const struct batch *b)
{
    struct curl_slist *hdrs = NULL, *more;
    struct reply *r = calloc(1, sizeof *r);
    char errbuf[CURL_ERROR_SIZE] = "", said[320];
    long status = 0;
    CURLcode cc;

    if (!r)
        return pfs_err(-ENOMEM, "out of memory");
    hdrs = curl_slist_append(NULL, "Content-Type: application/x-ndjson");
    more = hdrs ? curl_slist_append(hdrs, "Expect:") : NULL;
    if (!more) {
        curl_slist_free_all(hdrs);
        free(r);
        return pfs_err(-ENOMEM, "out of memory");
    }
    hdrs = more;
    curl_easy_reset(h);
    https_setup(h, &(struct https_tls){ sc->ca_file, sc->cert_file, sc->key_file });
    curl_easy_setopt(h, CURLOPT_URL, sc->events_url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, b->buf);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_reply);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)sc->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)sc->timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, dl);
    cc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    if (cc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    reply_message(r, said, sizeof said);
    free(r);
    if (cc != CURLE_OK)
        return pfs_err(-EHOSTUNREACH, "cannot send audit events to %s: %s", sc->events_url,
                       errbuf[0] ? errbuf : curl_easy_strerror(cc));
    if (status >= 200 && status < 300)
        return 0;
    if (status == 409)
        return pfs_err(-EBADMSG, "the audit receiver %s refused seq %llu..%llu (409): %s",
                       sc->events_url, (unsigned long long)(b->end.seq - b->lines + 1),
                       (unsigned long long)b->end.seq, said);
    return pfs_err(-EIO, "the audit receiver %s answered %ld: %s", sc->events_url, status,
                   said);
}

/* ---- one step ---- */

struct shipper {
    struct shipper_conf sc;
    CURL *curl;
    int fd;                     /* the spool, -1 until it exists */
    bool cursor_checked;
    struct audit_cursor cursor;
    struct batch b;
    struct deadline dl;
};

static int shipper_open_spool(struct shipper *sh)
{
    if (sh->fd >= 0)
        return 0;
    sh->fd = open(sh->sc.spool_path, O_RDONLY | O_CLOEXEC);
    if (sh->fd < 0) {
        int e = errno;
        return e == ENOENT ? 1 : pfs_err(-e, "cannot open audit spool %s: %s",
                                         sh->sc.spool_path, strerror(e));
    }
    return 0;
}

/* Send the next batch.  1 = sent and acknowledged, 0 = nothing to send,
 * <0 = failure (cursor unchanged). */
static int shipper_step(struct shipper *sh)
{
    int rc = shipper_open_spool(sh);

    if (rc)
        return rc > 0 ? 0 : rc;
    if (sh->cursor_checked) {
        struct stat st;
        /* A spool cut below what was shipped is checked (and refused) again. */
        if (fstat(sh->fd, &st) == 0 && (uint64_t)st.st_size < sh->cursor.offset)
            sh->cursor_checked = false;
    }
    if (!sh->cursor_checked) {
        if ((rc = audit_cursor_load(sh->sc.spool_path, &sh->cursor)) ||
            (rc = cursor_matches_spool(sh->fd, sh->sc.spool_path, &sh->cursor)))
            return rc;
        sh->cursor_checked = true;
    }
    rc = batch_read(sh->fd, sh->sc.spool_path, &sh->cursor, sh->sc.max_lines, &sh->b);
    if (rc || sh->b.lines == 0)
        return rc;
    if ((rc = post_batch(sh->curl, &sh->sc, &sh->dl, &sh->b)))
        return rc;
    if ((rc = audit_cursor_store(sh->sc.spool_path, &sh->b.end)))
        return rc;
    sh->cursor = sh->b.end;
    return 1;
}

static void shipper_conf_free(struct shipper_conf *sc)
{
    free(sc->spool_path);
    free(sc->events_url);
    free(sc->ca_file);
    free(sc->cert_file);
    free(sc->key_file);
    memset(sc, 0, sizeof *sc);
}

static char *dup_opt(const char *s, bool *oom)
{
    char *d;

    if (!s)
        return NULL;
    d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

static int shipper_conf_make(const struct audit_ship_opts *o, struct shipper_conf *sc)
{
    const struct tls_conf *t = o->tls;
    size_t ulen;
    bool oom = false;

    memset(sc, 0, sizeof *sc);
    if (!o->spool_path || !o->url || strncmp(o->url, "https://", 8) != 0)
        return pfs_err(-EINVAL, "audit url must start with https:// (got '%s'): events are "
                       "shipped over TLS only", o->url ? o->url : "");
    if (t && !t->cert_file != !t->key_file)
        return pfs_err(-EINVAL, "audit_tls cert_file and key_file go together: set both or "
                       "neither");
    ulen = strlen(o->url);
    while (ulen > 8 && o->url[ulen - 1] == '/')
        ulen--;
    if (asprintf(&sc->events_url, "%.*s/v1/events", (int)ulen, o->url) < 0) {
        sc->events_url = NULL;
        oom = true;
    }
    sc->spool_path = dup_opt(o->spool_path, &oom);
    sc->ca_file = dup_opt(t ? t->ca_file : NULL, &oom);
    sc->cert_file = dup_opt(t ? t->cert_file : NULL, &oom);
    sc->key_file = dup_opt(t ? t->key_file : NULL, &oom);
    if (oom) {
        shipper_conf_free(sc);
        return pfs_err(-ENOMEM, "out of memory");
    }
    sc->poll_ms = o->poll_ms ? o->poll_ms : DEFAULT_POLL_MS;
    sc->max_lines = o->max_lines ? o->max_lines : AUDIT_SHIP_MAX_LINES;
    sc->max_bytes = o->max_bytes ? o->max_bytes : AUDIT_SHIP_MAX_BYTES;
    if (sc->max_bytes < AUDIT_LINE_MAX + 1)   /* one whole line always fits */
        sc->max_bytes = AUDIT_LINE_MAX + 1;
    sc->backoff_min_ms = o->backoff_min_ms ? o->backoff_min_ms : DEFAULT_BACKOFF_MIN_MS;
    sc->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    if (sc->backoff_max_ms < sc->backoff_min_ms)
        sc->backoff_max_ms = sc->backoff_min_ms;
    sc->timeout_ms = o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
    return 0;
}

static void shipper_free(struct shipper *sh)
{
    if (sh->curl)
        curl_easy_cleanup(sh->curl);
    if (sh->fd >= 0)
        close(sh->fd);
    free(sh->b.buf);
    shipper_conf_free(&sh->sc);
}

static int shipper_init(struct shipper *sh, const struct audit_ship_opts *o)
{
    int rc;

    memset(sh, 0, sizeof *sh);
    sh->fd = -1;
    if ((rc = shipper_conf_make(o, &sh->sc)))
        return rc;
    if (https_global_init() != 0) {
        shipper_free(sh);
        return pfs_err(-ENOMEM, "cannot initialise libcurl");
    }
    sh->curl = curl_easy_init();
    sh->b.cap = sh->sc.max_bytes;
    sh->b.buf = malloc(sh->b.cap);
    if (!sh->curl || !sh->b.buf) {
        shipper_free(sh);
        return pfs_err(-ENOMEM, "out of memory starting the audit shipper");
    }
    return 0;
}

int audit_ship_once(const struct audit_ship_opts *o, uint64_t *batches)
{
    struct shipper sh;
    int rc;

    if (batches)
        *batches = 0;
    if ((rc = shipper_init(&sh, o)))
        return rc;
    while ((rc = shipper_step(&sh)) == 1)
        if (batches)
            (*batches)++;
    shipper_free(&sh);
    return rc;
}

/* ---- the thread ---- */

struct audit_ship {
    struct shipper sh;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;                  /* stop requested */
    bool kicked;
    bool drained;               /* caught up after stop was requested */
    int64_t stop_at;            /* deadline of the final drain (monotonic ms) */
    struct audit_ship_status st;
};

static void ship_log_failure(struct audit_ship *s, int rc)
{
    /* log.h: syslog once the daemon is in the background */
    if (s->st.failures == 1 || s->st.failures % LOG_EVERY_FAILURES == 0)
        log_warning("audit shipper: %s (attempt %u; events stay in the spool and "
                    "are retried)", pfs_err_msg()[0] ? pfs_err_msg() : strerror(-rc),
                    s->st.failures);
}

static void ship_record(struct audit_ship *s, int rc)
{
    pthread_mutex_lock(&s->mu);
    if (rc == 1) {
        if (s->st.failures)
            log_info("audit shipper: the receiver acknowledges again after %u "
                     "failed attempts", s->st.failures);
        s->st.cursor = s->sh.cursor;
        s->st.batches_sent++;
        s->st.failures = 0;
    } else if (rc < 0) {
        s->st.failures++;
        s->st.last_error = rc;
        snprintf(s->st.last_message, sizeof s->st.last_message, "%s", pfs_err_msg());
        ship_log_failure(s, rc);
    } else {
        s->st.cursor = s->sh.cursor;
    }
    pthread_mutex_unlock(&s->mu);
}

static unsigned backoff_ms(const struct shipper_conf *sc, unsigned failures)
{
    uint64_t d = sc->backoff_min_ms;

    for (unsigned i = 1; i < failures && d < sc->backoff_max_ms; i++)
        d *= 2;
    return d > sc->backoff_max_ms ? sc->backoff_max_ms : (unsigned)d;
}

/* Sleep up to ms (never past the stop deadline) unless kicked or stopped. */
static void ship_wait(struct audit_ship *s, unsigned ms)
{
    struct timespec ts;
    int64_t until = now_ms() + ms;

    pthread_mutex_lock(&s->mu);
    if (s->stop && s->stop_at < until)
        until = s->stop_at;
    while (!s->kicked && now_ms() < until) {
        int64_t left = until - now_ms();
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += left / 1000;
        ts.tv_nsec += (left % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    s->kicked = false;
    pthread_mutex_unlock(&s->mu);
}

static bool ship_stop_requested(struct audit_ship *s)
{
    bool stop;

    pthread_mutex_lock(&s->mu);
    stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* True when the loop should end: stop asked and a step begun after it
 * found nothing left (so lines written before the stop are in), or the
 * deadline passed. */
static bool ship_should_end(struct audit_ship *s, bool stop_before_step, int last_rc)
{
    bool end;

    pthread_mutex_lock(&s->mu);
    if (stop_before_step && last_rc == 0)
        s->drained = true;
    end = s->stop && (s->drained || now_ms() >= s->stop_at);
    pthread_mutex_unlock(&s->mu);
    return end;
}

static void *ship_thread(void *arg)
{
    struct audit_ship *s = arg;
    int rc;

    for (;;) {
        bool stopping = ship_stop_requested(s);

        pfs_err_clear();
        rc = shipper_step(&s->sh);
        ship_record(s, rc);
        if (ship_should_end(s, stopping, rc))
            break;
        if (rc == 0)
            ship_wait(s, s->sh.sc.poll_ms);
        else if (rc < 0)
            ship_wait(s, backoff_ms(&s->sh.sc, s->st.failures));
    }
    return NULL;
}

int audit_ship_start(const struct audit_ship_opts *o, struct audit_ship **out)
{
    struct audit_ship *s = calloc(1, sizeof *s);
    pthread_condattr_t ca;
    int rc;

    *out = NULL;
    if (!s)
        return pfs_err(-ENOMEM, "out of memory starting the audit shipper");
    if ((rc = shipper_init(&s->sh, o))) {
        free(s);
        return rc;
    }
    atomic_init(&s->sh.dl.at_ms, 0);
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    if ((rc = pthread_create(&s->thread, NULL, ship_thread, s)) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        shipper_free(&s->sh);
        free(s);
        return pfs_err(-rc, "cannot start the audit shipper thread: %s", strerror(rc));
    }
    *out = s;
    return 0;
}

void audit_ship_kick(struct audit_ship *s)
{
    pthread_mutex_lock(&s->mu);
    s->kicked = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void audit_ship_get_status(struct audit_ship *s, struct audit_ship_status *st)
{
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    pthread_mutex_unlock(&s->mu);
}

int audit_ship_stop(struct audit_ship *s, unsigned drain_ms)
{
    struct audit_ship_status st;
    int rc;

    if (!s)
        return 0;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    s->stop_at = now_ms() + drain_ms;
    s->kicked = true;
    atomic_store(&s->sh.dl.at_ms, s->stop_at);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    st = s->st;
    rc = s->drained ? 0 : st.last_error ? st.last_error : -ETIMEDOUT;
    if (!s->drained)
        pfs_err(rc, "audit events after seq %llu are still in the spool %s (%s); they are "
                "shipped at the next mount", (unsigned long long)st.cursor.seq,
                s->sh.sc.spool_path, st.last_message[0] ? st.last_message :
                "the final drain ran out of time");
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    shipper_free(&s->sh);
    free(s);
    return rc;
}

int audit_ship_pending(const struct pactfs_conf *c, unsigned timeout_ms)
{
    struct audit_ship_opts o = { .spool_path = c->audit_spool, .url = c->audit_url,
                                 .tls = &c->audit_tls, .timeout_ms = timeout_ms };

    if (!c->audit_url || !c->audit_spool)
        return 0;
    return audit_ship_once(&o, NULL);
}

/* The time of the line starting at offset, or 0 if there is none yet. */
static int64_t line_time_at(int fd, uint64_t offset)
{
    char *buf = malloc(AUDIT_LINE_MAX + 1);
    ssize_t got;
    int64_t ns = 0;

    if (!buf)
        return 0;
    got = pread(fd, buf, AUDIT_LINE_MAX + 1, (off_t)offset);
    if (got > 0) {
        char *nl = memchr(buf, '\n', (size_t)got);
        json_object *o = nl ? audit_line_parse(buf, (size_t)(nl - buf)) : NULL;
        const char *t = o ? audit_field_str(o, "time") : NULL;
        if (!t || audit_time_parse(t, &ns) != 0)
            ns = 0;
        json_object_put(o);
    }
    free(buf);
    return ns;
}

int audit_ship_backlog(const char *spool_path, const struct audit_cursor *cur,
                       struct audit_backlog *b)
{
    struct audit_cursor c;
    char *cpath = cursor_path(spool_path);
    struct stat st;
    int fd, rc = 0;

    memset(b, 0, sizeof *b);
    if (!cpath)
        return -ENOMEM;
    if (stat(cpath, &st) == 0)
        b->last_ack_s = (int64_t)st.st_mtime;
    free(cpath);
    if (cur)
        c = *cur;
    else if ((rc = audit_cursor_load(spool_path, &c)) < 0)
        return rc;
    b->acknowledged_seq = c.seq;
    fd = open(spool_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    if (fstat(fd, &st) == 0) {
        b->spool_bytes = (uint64_t)st.st_size;
        if (b->spool_bytes > c.offset) {
            b->unshipped_bytes = b->spool_bytes - c.offset;
            b->oldest_unshipped_ns = line_time_at(fd, c.offset);
        }
    } else {
        rc = -errno;
    }
    close(fd);
    return rc;
}
