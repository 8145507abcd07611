#include "config.h"

/* Audit queries: the filter both pactfs-admin and pactfs-auditd apply, the
 * spool and receiver sources.  Parameters: audit_query.h. */

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <json-c/json.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "audit_query.h"
#include "error.h"
#include "vec.h"

#define FILES_MAX 4096u
#define REMOTE_BODY_MAX (512u * 1024u * 1024u)

void audit_filter_init(struct audit_filter *f)
{
    memset(f, 0, sizeof *f);
}

void audit_filter_free(struct audit_filter *f)
{
    free(f->account);
    free(f->path);
    free(f->op);
    free(f->result);
    free(f->files);
    for (size_t i = 0; i < f->nparams; i++) {
        free(f->names[i]);
        free(f->values[i]);
    }
    memset(f, 0, sizeof *f);
}

/* ---------------------------------------------------------------- time */

static int parse_digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++, (*p)++) {
        if (!isdigit((unsigned char)**p))
            return -1;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return 0;
}

int audit_time_parse(const char *s, int64_t *ns)
{
    struct tm tm = { 0 };
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0;
    long frac = 0;
    time_t t;

    if (parse_digits(&p, 4, &y) || *p++ != '-' || parse_digits(&p, 2, &mo) || *p++ != '-' ||
        parse_digits(&p, 2, &d))
        goto bad;
    if (*p == 'T' || *p == ' ') {
        p++;
        if (parse_digits(&p, 2, &h) || *p++ != ':' || parse_digits(&p, 2, &mi))
            goto bad;
        if (*p == ':') {
            p++;
            if (parse_digits(&p, 2, &sec))
                goto bad;
            if (*p == '.') {
                int digits = 0;
                for (p++; isdigit((unsigned char)*p); p++, digits++)
                    if (digits < 9)
                        frac = frac * 10 + (*p - '0');
                if (!digits)
                    goto bad;
                for (; digits < 9; digits++)
                    frac *= 10;
            }
        }
    }
    if (*p == 'Z')
        p++;
    if (*p || y < 1970 || y > 2261 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
        mi > 59 || sec > 60)
        goto bad;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    t = timegm(&tm);
    *ns = (int64_t)t * 1000000000 + frac;
    return 0;
bad:
    return pfs_err(-EINVAL, "\"%s\" is not a time: give YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ "
                   "(UTC)", s);
}

/* ---------------------------------------------------------------- filter */

/* Is word one of the comma-separated values of list? */
static int in_list(const char *list, const char *word)
{
    size_t wl = strlen(word);

    for (const char *p = list; p;) {
        size_t n = strcspn(p, ",");
        if (n == wl && strncmp(p, word, n) == 0)
            return 1;
        p = p[n] ? p + n + 1 : NULL;
    }
    return 0;
}

static int check_list(const char *name, const char *value, const char *const *allowed)
{
    if (!*value)
        return pfs_err(-EINVAL, "%s wants a value", name);
    for (const char *p = value; p;) {
        size_t n = strcspn(p, ",");
        if (!n)
            return pfs_err(-EINVAL, "%s=%s has an empty item", name, value);
        if (allowed) {
            size_t i;
            for (i = 0; allowed[i]; i++)
                if (strlen(allowed[i]) == n && !strncmp(allowed[i], p, n))
                    break;
            if (!allowed[i])
                return pfs_err(-EINVAL, "%s=%s: \"%.*s\" is none of ok, denied, error", name,
                               value, (int)n, p);
        }
        p = p[n] ? p + n + 1 : NULL;
    }
    return 0;
}

/* All the ids or none (a bad item leaves the filter as it was). */
static int parse_files(struct audit_filter *f, const char *value)
{
    uint64_t *ids = NULL;
    size_t n = 0;

    for (const char *p = value; p;) {
        char *end;
        unsigned long long id;
        uint64_t *grown;

        errno = 0;
        id = strtoull(p, &end, 10);
        if (errno || end == p || (*end && *end != ',') || !isdigit((unsigned char)*p) || !id) {
            free(ids);
            return pfs_err(-EINVAL, "file=%s: file ids are positive numbers, comma-separated",
                           value);
        }
        if (f->nfiles + n >= FILES_MAX) {
            free(ids);
            return pfs_err(-EINVAL, "file=: at most %u file ids", FILES_MAX);
        }
        grown = realloc(ids, (n + 1) * sizeof *grown);
        if (!grown) {
            free(ids);
            return -ENOMEM;
        }
        ids = grown;
        ids[n++] = id;
        p = *end ? end + 1 : NULL;
    }
    {
        uint64_t *all = realloc(f->files, (f->nfiles + n) * sizeof *all);
        if (!all) {
            free(ids);
            return -ENOMEM;
        }
        memcpy(all + f->nfiles, ids, n * sizeof *ids);
        f->files = all;
        f->nfiles += n;
    }
    free(ids);
    return 0;
}

static int set_str(char **slot, const char *value)
{
    char *s = strdup(value);

    if (!s)
        return -ENOMEM;
    free(*slot);
    *slot = s;
    return 0;
}

static int remember(struct audit_filter *f, const char *name, const char *value)
{
    if (f->nparams == AUDIT_QUERY_PARAMS)
        return pfs_err(-EINVAL, "too many query parameters");
    f->names[f->nparams] = strdup(name);
    f->values[f->nparams] = strdup(value);
    if (!f->names[f->nparams] || !f->values[f->nparams]) {
        free(f->names[f->nparams]);
        free(f->values[f->nparams]);
        return -ENOMEM;
    }
    f->nparams++;
    return 0;
}

int audit_filter_set(struct audit_filter *f, const char *name, const char *value)
{
    static const char *const results[] = { "ok", "denied", "error", NULL };
    int rc;

    if (!strcmp(name, "account") || !strcmp(name, "op")) {
        rc = check_list(name, value, NULL);
        rc = rc ? rc : set_str(name[0] == 'a' ? &f->account : &f->op, value);
    } else if (!strcmp(name, "result")) {
        rc = check_list(name, value, results);
        rc = rc ? rc : set_str(&f->result, value);
    } else if (!strcmp(name, "path")) {
        if (!*value)
            return pfs_err(-EINVAL, "path wants a prefix or a glob");
        rc = set_str(&f->path, value);
        f->path_glob = strpbrk(value, "*?[") != NULL;
    } else if (!strcmp(name, "file")) {
        rc = parse_files(f, value);
    } else if (!strcmp(name, "from") || !strcmp(name, "until")) {
        int64_t ns;
        rc = audit_time_parse(value, &ns);
        if (rc == 0 && name[0] == 'f') {
            f->from_ns = ns;
            f->has_from = 1;
        } else if (rc == 0) {
            f->until_ns = ns;
            f->has_until = 1;
        }
    } else if (!strcmp(name, "follow_renames")) {
        if (strcmp(value, "1") && strcmp(value, "0"))
            return pfs_err(-EINVAL, "follow_renames wants 1 or 0");
        f->follow_renames = value[0] == '1';
        rc = 0;
    } else {
        return pfs_err(-ENOENT, "unknown query parameter \"%s\" (known: account, path, file, "
                       "op, result, from, until, follow_renames)", name);
    }
    return rc ? rc : remember(f, name, value);
}

static int path_matches(const struct audit_filter *f, const char *p, size_t n)
{
    size_t pl = strlen(f->path);
    char buf[4096];

    if (f->path_glob) {
        if (n >= sizeof buf)
            return 0;
        memcpy(buf, p, n);
        buf[n] = '\0';
        return fnmatch(f->path, buf, 0) == 0;
    }
    while (pl > 1 && f->path[pl - 1] == '/')
        pl--;
    if (n < pl || strncmp(p, f->path, pl) != 0)
        return 0;
    return n == pl || p[pl] == '/' || (pl == 1 && f->path[0] == '/');
}

/* The path, a rename's "from -> to" sides, and dest. */
static int event_path_matches(const struct audit_filter *f, json_object *ev)
{
    const char *p = audit_field_str(ev, "path"), *dest = audit_field_str(ev, "dest");

    if (audit_field_str(ev, "names"))
        return f->sealed_may_match;

    if (p) {
        const char *arrow = strstr(p, " -> ");
        if (arrow) {
            if (path_matches(f, p, (size_t)(arrow - p)) || path_matches(f, arrow + 4,
                                                                        strlen(arrow + 4)))
                return 1;
        } else if (path_matches(f, p, strlen(p))) {
            return 1;
        }
    }
    return dest && path_matches(f, dest, strlen(dest));
}

static int event_time(json_object *ev, int64_t *ns)
{
    const char *t = audit_field_str(ev, "time");

    return t ? audit_time_parse(t, ns) : -EINVAL;
}

static int file_listed(const uint64_t *files, size_t n, json_object *ev)
{
    uint64_t id;

    if (audit_field_uint(ev, "file", &id) != 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (files[i] == id)
            return 1;
    return 0;
}

/* Every parameter but path and file. */
static int match_rest(const struct audit_filter *f, json_object *ev)
{
    const char *s;

    if (f->account && (!(s = audit_field_str(ev, "account")) || !in_list(f->account, s)))
        return 0;
    s = audit_field_str(ev, "op");
    if (f->op && (!s || !in_list(f->op, s)))
        return 0;
    if (f->skip_checkpoints && !f->op && s && !strcmp(s, "checkpoint"))
        return 0;
    if (f->result && (!(s = audit_field_str(ev, "result")) || !in_list(f->result, s)))
        return 0;
    if (f->has_from || f->has_until) {
        int64_t t;
        if (event_time(ev, &t) != 0 || (f->has_from && t < f->from_ns) ||
            (f->has_until && t >= f->until_ns))
            return 0;
    }
    return 1;
}

int audit_filter_match(const struct audit_filter *f, json_object *ev)
{
    if (!match_rest(f, ev))
        return 0;
    if (f->path && !event_path_matches(f, ev))
        return 0;
    return !f->nfiles || file_listed(f->files, f->nfiles, ev);
}

/* ---------------------------------------------------------------- running */

struct follow {
    const struct audit_filter *f;
    uint64_t *ids;
    size_t n, cap;
    audit_each_fn emit;
    void *arg;
};

static int collect_ids(void *arg, json_object *ev, const char *line, size_t len)
{
    struct follow *fo = arg;
    uint64_t id;

    (void)line;
    (void)len;
    if (!event_path_matches(fo->f, ev) || audit_field_uint(ev, "file", &id) != 0 || !id)
        return 0;
    for (size_t i = 0; i < fo->n; i++)
        if (fo->ids[i] == id)
            return 0;
    if (fo->n == fo->cap) {
        size_t cap = fo->cap ? 2 * fo->cap : 16;
        uint64_t *p = realloc(fo->ids, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        fo->ids = p;
        fo->cap = cap;
    }
    fo->ids[fo->n++] = id;
    return 0;
}

/* follow_renames: (path or one of the collected files) and the file filter
 * and the rest. */
static int emit_followed(void *arg, json_object *ev, const char *line, size_t len)
{
    struct follow *fo = arg;

    if (!match_rest(fo->f, ev))
        return 0;
    if (!event_path_matches(fo->f, ev) && !file_listed(fo->ids, fo->n, ev))
        return 0;
    if (fo->f->nfiles && !file_listed(fo->f->files, fo->f->nfiles, ev))
        return 0;
    return fo->emit(fo->arg, ev, line, len);
}

struct plain {
    const struct audit_filter *f;
    audit_each_fn emit;
    void *arg;
};

static int emit_matching(void *arg, json_object *ev, const char *line, size_t len)
{
    struct plain *p = arg;

    return audit_filter_match(p->f, ev) ? p->emit(p->arg, ev, line, len) : 0;
}

int audit_query_run(const struct audit_filter *f, audit_scan_fn scan, void *src,
                    audit_each_fn emit, void *arg)
{
    struct follow fo = { .f = f, .emit = emit, .arg = arg };
    struct plain pl = { f, emit, arg };
    int rc;

    if (!f->follow_renames || !f->path)
        return scan(src, emit_matching, &pl);
    rc = scan(src, collect_ids, &fo);
    if (rc == 0)
        rc = scan(src, emit_followed, &fo);
    free(fo.ids);
    return rc;
}

/* ---------------------------------------------------------------- sources */

/* Split text into lines and hand each, parsed, to each. */
int audit_scan_text(const char *what, const char *text, size_t len, audit_each_fn each,
                    void *arg)
{
    size_t off = 0;
    uint64_t lineno = 0;

    while (off < len) {
        const char *nl = memchr(text + off, '\n', len - off);
        size_t n = nl ? (size_t)(nl - (text + off)) : len - off;
        json_object *ev;
        int rc;

        lineno++;
        if (!nl)   /* a line still being written */
            break;
        ev = audit_line_parse(text + off, n);
        if (!ev)
            return pfs_err(-EBADMSG, "%s, line %llu: not an audit event (JSON object)", what,
                           (unsigned long long)lineno);
        rc = each(arg, ev, text + off, n);
        json_object_put(ev);
        if (rc)
            return rc;
        off += n + 1;
    }
    return 0;
}

int audit_scan_spool(void *path, audit_each_fn each, void *arg)
{
    FILE *fp = fopen(path, "re");
    char *text = NULL;
    size_t cap = 0, len = 0;
    int rc;

    if (!fp)
        return pfs_err(-errno, "cannot open the audit spool %s: %s", (char *)path,
                       strerror(errno));
    for (;;) {
        size_t got;
        if (cap - len < 65536) {
            char *p = realloc(text, cap ? 2 * cap : 1 << 20);
            if (!p) {
                fclose(fp);
                free(text);
                return -ENOMEM;
            }
            text = p;
            cap = cap ? 2 * cap : 1 << 20;
        }
        got = fread(text + len, 1, cap - len, fp);
        len += got;
        if (got == 0)
            break;
    }
    rc = ferror(fp) ? pfs_err(-EIO, "cannot read the audit spool %s", (char *)path) : 0;
    fclose(fp);
    if (rc == 0)
        rc = audit_scan_text(path, text, len, each, arg);
    free(text);
    return rc;
}

/* ---------------------------------------------------------------- receiver */

struct body {
    char *buf;
    size_t len, cap;
    int too_big;
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    size_t add = size * n;

    if (b->len + add + 1 > REMOTE_BODY_MAX) {
        b->too_big = 1;
        return 0;
    }
    if (b->len + add + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        char *p;
        while (cap < b->len + add + 1)
            cap *= 2;
        p = realloc(b->buf, cap);
        if (!p)
            return 0;
        b->buf = p;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, data, add);
    b->len += add;
    b->buf[b->len] = '\0';
    return add;
}

/* Which parameters the receiver applies.  Without forward_path the path
 * is matched here (sealed names), and with follow_renames nothing is
 * forwarded: the files' ids come from path matches of any operation and
 * any time, which only this side can see. */
static int forwarded(const struct audit_remote *r, const char *name)
{
    if (r->forward_path)
        return 1;
    if (r->f->follow_renames)
        return 0;
    return strcmp(name, "path") != 0;
}

static int remote_url(CURL *h, const struct audit_remote *r, char **out)
{
    size_t cap = strlen(r->url) + 64 + strlen(r->vault);
    char *url, *p;

    for (size_t i = 0; i < r->f->nparams; i++)
        cap += 3 * (strlen(r->f->names[i]) + strlen(r->f->values[i])) + 2;
    url = malloc(cap);
    if (!url)
        return -ENOMEM;
    p = url + snprintf(url, cap, "%s/v1/events?vault=%s", r->url, r->vault);
    for (size_t i = 0; i < r->f->nparams; i++) {
        char *v;
        if (!forwarded(r, r->f->names[i]))
            continue;
        v = curl_easy_escape(h, r->f->values[i], 0);
        if (!v) {
            free(url);
            return -ENOMEM;
        }
        p += snprintf(p, cap - (size_t)(p - url), "&%s=%s", r->f->names[i], v);
        curl_free(v);
    }
    *out = url;
    return 0;
}

struct counting {
    audit_each_fn each;
    void *arg;
    size_t n;
};

static int count_line(void *arg, json_object *ev, const char *line, size_t len)
{
    struct counting *c = arg;

    c->n++;
    return c->each(c->arg, ev, line, len);
}

int audit_scan_remote(void *remote, audit_each_fn each, void *arg)
{
    struct audit_remote *r = remote;
    struct counting cnt = { each, arg, 0 };
    struct body b = { 0 };
    char errbuf[CURL_ERROR_SIZE] = "", *url = NULL;
    long status = 0;
    CURLcode cc;
    CURL *h;
    int rc;

    if (strncmp(r->url, "https://", 8) != 0)
        return pfs_err(-EINVAL, "the receiver's URL must be https://, not %s", r->url);
    if (https_global_init() != 0 || !(h = curl_easy_init()))
        return pfs_err(-EIO, "cannot initialise libcurl");
    rc = remote_url(h, r, &url);
    if (rc) {
        curl_easy_cleanup(h);
        return rc;
    }
    https_setup(h, &r->tls);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(r->timeout_ms ? r->timeout_ms : 60000));
    cc = curl_easy_perform(h);
    if (cc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    free(url);
    if (cc != CURLE_OK) {
        enum https_failure why = https_classify(cc);
        rc = pfs_err(https_is_unreachable(why) ? -EHOSTUNREACH : -EIO,
                     "cannot query the audit receiver at %s: %s%s", r->url,
                     b.too_big ? "the answer is larger than 512 MiB" :
                     errbuf[0] ? errbuf : curl_easy_strerror(cc),
                     https_is_tls(why) ? " (check the CA file and the auditor's certificate "
                     "and key)" : "");
    } else if (status != 200) {
        rc = pfs_err(status == 403 ? -EACCES : status == 400 ? -EINVAL : -EIO,
                     "the audit receiver at %s answered %ld: %.300s", r->url, status,
                     b.buf ? b.buf : "");
    } else {
        rc = audit_scan_text(r->url, b.buf ? b.buf : "", b.len, count_line, &cnt);
        if (cnt.n >= AUDIT_QUERY_LIMIT)
            r->truncated = 1;
    }
    free(b.buf);
    return rc;
}

/* ---------------------------------------------------------------- sealed names */

struct audit_session_key {
    char session[33];
    int ok;
    uint8_t key[AUDIT_NAMES_SESSION_KEY];
};

struct reveal_pass {
    struct audit_revealed *r;
    audit_each_fn each;
    void *arg;
};

static struct audit_session_key *session_key(struct audit_revealed *r, const char *session)
{
    for (size_t i = 0; i < r->nkeys; i++)
        if (!strcmp(r->keys[i].session, session))
            return &r->keys[i];
    return NULL;
}

static int learn_session(struct audit_revealed *r, json_object *ev, const char *session)
{
    const char *wrapped = audit_field_str(ev, "names_key");
    struct audit_session_key *k;

    if (!wrapped || strlen(session) >= sizeof k->session || session_key(r, session))
        return 0;
    if (vec_reserve(&r->keys, &r->capkeys, r->nkeys + 1, sizeof *r->keys, 16) < 0)
        return -ENOMEM;
    k = &r->keys[r->nkeys++];
    memset(k, 0, sizeof *k);
    snprintf(k->session, sizeof k->session, "%s", session);
    k->ok = r->names_priv && audit_names_unwrap_session(r->names_priv, r->vault, session,
                                                         wrapped, k->key) == 0;
    return 0;
}

/* Replace "names" by the path and dest it seals. */
static void reveal(struct audit_revealed *r, json_object *ev, const char *session)
{
    const char *sealed = audit_field_str(ev, "names");
    struct audit_session_key *k = session ? session_key(r, session) : NULL;
    json_object *inner = NULL;
    char *plain = NULL;

    if (!sealed)
        return;
    if (k && k->ok && audit_names_open(k->key, r->vault, session, sealed, &plain) == 0)
        inner = audit_line_parse(plain, strlen(plain));
    if (inner) {
        const char *p = audit_field_str(inner, "path"), *d = audit_field_str(inner, "dest");
        json_object_object_add(ev, "path", json_object_new_string(p ? p : ""));
        if (d)
            json_object_object_add(ev, "dest", json_object_new_string(d));
        json_object_object_del(ev, "names");
        json_object_put(inner);
    } else {
        r->sealed_unopened++;
    }
    free(plain);
}

static int reveal_one(void *arg, json_object *ev, const char *line, size_t len)
{
    struct reveal_pass *p = arg;
    const char *session = audit_field_str(ev, "session"), *op = audit_field_str(ev, "op");
    int rc = 0;

    if (session && op && !strcmp(op, "session-start"))
        rc = learn_session(p->r, ev, session);
    if (rc == 0)
        reveal(p->r, ev, session);
    return rc ? rc : p->each(p->arg, ev, line, len);
}

int audit_scan_revealed(void *revealed, audit_each_fn each, void *arg)
{
    struct audit_revealed *r = revealed;
    struct reveal_pass p = { r, each, arg };

    r->sealed_unopened = 0;
    return r->scan(r->src, reveal_one, &p);
}

static int learn_only(void *arg, json_object *ev, const char *line, size_t len)
{
    struct audit_revealed *r = arg;
    const char *session = audit_field_str(ev, "session"), *op = audit_field_str(ev, "op");

    (void)line;
    (void)len;
    return session && op && !strcmp(op, "session-start") ? learn_session(r, ev, session) : 0;
}

int audit_revealed_learn(struct audit_revealed *r, audit_scan_fn scan, void *src)
{
    return scan(src, learn_only, r);
}

void audit_revealed_free(struct audit_revealed *r)
{
    if (r->keys)
        OPENSSL_cleanse(r->keys, r->capkeys * sizeof *r->keys);
    free(r->keys);
    r->keys = NULL;
    r->nkeys = r->capkeys = 0;
}
