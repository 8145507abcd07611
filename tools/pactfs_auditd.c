#include "config.h"

/* pactfs-auditd: the reference audit receiver.  Workstations' shippers POST
 * batches of spool lines (NDJSON) over HTTPS with a client certificate; the
 * certificate's CN names the sending host.  Per (vault, host) stream the
 * receiver checks that each batch continues the chain it holds (seq, prev,
 * cp, checkpoint signatures with the account keys from keys_dir), drops
 * lines it already holds (a shipper resends after a crash), refuses a batch
 * that breaks the chain with 409 and keeps nothing of it, and appends the
 * rest to an append-only file, fsynced before the answer.  Auditors (CNs
 * listed in `auditors`) read the stream back and have it verified.
 * Protocol and settings: docs/auditd.md, pactfs-auditd(8).
 */

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <libconfig.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "audit.h"
#include "audit_ship.h"
#include "error.h"
#include "exitcodes.h"

#define AUDITD_DEFAULT_CONF "/etc/pactfs/auditd.conf"
#define AUDITD_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define AUDITD_MAX_BODY (2u * AUDIT_SHIP_MAX_BYTES)
#define AUDITD_MAX_NAMES 64
#define AUDITD_QUERY_LIMIT 100000u       /* lines per GET /v1/events answer */
#define CN_MAX 256
#define VAULT_ID_LEN 32
#define ACCOUNT_MAX 64

struct auditd_conf {
    char *listen_address;
    unsigned port;
    char *cert_file;
    char *key_file;
    char *client_ca_file;
    char *store_dir;
    char *keys_dir;
    char *auditors[AUDITD_MAX_NAMES];    /* CNs that may query */
    size_t n_auditors;
    char *senders[AUDITD_MAX_NAMES];     /* CNs that may send; none = any */
    size_t n_senders;
};

/* One (vault, host) chain and its append-only file. */
struct stream {
    struct stream *next;
    char vault[VAULT_ID_LEN + 1];
    char *name;                  /* escaped host: the file's base name */
    char *path;
    int fd;
    uint64_t size;
    struct audit_chain chain;
    uint64_t *offsets;           /* offsets[i]: start of the line with seq i+1 */
    size_t cap;
};

struct auditd {
    struct auditd_conf conf;
    pthread_mutex_t mu;          /* streams and their files */
    struct stream *streams;
};

struct request {
    char *body;
    size_t len, cap;
    bool too_big;
    bool anonymous;              /* no verified client certificate: body discarded */
    char cn[CN_MAX + 1];         /* the client certificate's CN */
};

struct answer {
    unsigned status;
    char *body;                  /* malloc'd */
    size_t len;
    const char *type;
};

/* ================================================================ logging */

static bool log_to_syslog;

static void auditd_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void auditd_log(int prio, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (log_to_syslog) {
        vsyslog(prio, fmt, ap);
    } else {
        fprintf(stderr, "pactfs-auditd: ");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
    va_end(ap);
}

/* ================================================================ configuration */

static char *resolve_path(const char *dir, const char *value)
{
    char *p = NULL;

    if (value[0] == '/')
        return strdup(value);
    if (asprintf(&p, "%s/%s", dir, value) < 0)
        return NULL;
    return p;
}

static int conf_string(config_t *cfg, const char *dir, const char *name, bool is_path,
                       bool required, char **out)
{
    const char *v;

    if (!config_lookup_string(cfg, name, &v)) {
        if (config_lookup(cfg, name))
            return pfs_err(-EINVAL, "setting %s must be a string", name);
        return required ? pfs_err(-EINVAL, "setting %s is required", name) : 0;
    }
    *out = is_path ? resolve_path(dir, v) : strdup(v);
    return *out ? 0 : pfs_err(-ENOMEM, "out of memory");
}

static int conf_names(config_t *cfg, const char *name, char **out, size_t *n)
{
    config_setting_t *s = config_lookup(cfg, name);
    int count;

    if (!s)
        return 0;
    if (!config_setting_is_array(s) && !config_setting_is_list(s))
        return pfs_err(-EINVAL, "setting %s must be a list of certificate names: [\"a\", \"b\"]",
                       name);
    count = config_setting_length(s);
    if (count > AUDITD_MAX_NAMES)
        return pfs_err(-EINVAL, "setting %s lists more than %d names", name, AUDITD_MAX_NAMES);
    for (int i = 0; i < count; i++) {
        const char *v = config_setting_get_string_elem(s, i);
        if (!v)
            return pfs_err(-EINVAL, "setting %s: element %d is not a string", name, i + 1);
        if (!(out[(*n)++] = strdup(v)))
            return pfs_err(-ENOMEM, "out of memory");
    }
    return 0;
}

static void auditd_conf_free(struct auditd_conf *c)
{
    free(c->listen_address);
    free(c->cert_file);
    free(c->key_file);
    free(c->client_ca_file);
    free(c->store_dir);
    free(c->keys_dir);
    for (size_t i = 0; i < c->n_auditors; i++)
        free(c->auditors[i]);
    for (size_t i = 0; i < c->n_senders; i++)
        free(c->senders[i]);
    memset(c, 0, sizeof *c);
}

static int auditd_conf_read(config_t *cfg, const char *dir, struct auditd_conf *c)
{
    int port = 0, rc;

    rc = conf_string(cfg, dir, "listen_address", false, false, &c->listen_address);
    rc = rc ? rc : conf_string(cfg, dir, "cert_file", true, true, &c->cert_file);
    rc = rc ? rc : conf_string(cfg, dir, "key_file", true, true, &c->key_file);
    rc = rc ? rc : conf_string(cfg, dir, "client_ca_file", true, true, &c->client_ca_file);
    rc = rc ? rc : conf_string(cfg, dir, "store_dir", true, true, &c->store_dir);
    rc = rc ? rc : conf_string(cfg, dir, "keys_dir", true, true, &c->keys_dir);
    rc = rc ? rc : conf_names(cfg, "auditors", c->auditors, &c->n_auditors);
    rc = rc ? rc : conf_names(cfg, "senders", c->senders, &c->n_senders);
    if (rc)
        return rc;
    if (!c->listen_address && !(c->listen_address = strdup("127.0.0.1")))
        return pfs_err(-ENOMEM, "out of memory");
    if (!config_lookup_int(cfg, "port", &port) || port < 1 || port > 65535)
        return pfs_err(-EINVAL, "setting port is required (1..65535)");
    c->port = (unsigned)port;
    return 0;
}

static int auditd_conf_load(const char *path, struct auditd_conf *c)
{
    char *copy = strdup(path), *slash, *dir;
    config_t cfg;
    int rc = 0;

    if (!copy)
        return pfs_err(-ENOMEM, "out of memory");
    slash = strrchr(copy, '/');
    if (slash && slash != copy)
        *slash = '\0';
    dir = slash ? (slash == copy ? "/" : copy) : ".";
    config_init(&cfg);
    if (!config_read_file(&cfg, path)) {
        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
            rc = pfs_err(-ENOENT, "cannot read %s: %s", path, strerror(errno));
        else
            rc = pfs_err(-EINVAL, "%s:%d: %s", path, config_error_line(&cfg),
                         config_error_text(&cfg));
    } else if ((rc = auditd_conf_read(&cfg, dir, c))) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", pfs_err_msg());
        rc = pfs_err(rc, "%s: %s", path, msg);
    }
    config_destroy(&cfg);
    free(copy);
    if (rc)
        auditd_conf_free(c);
    return rc;
}

/* ================================================================ names */

static bool is_hex_id(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* A host name as a file name: [A-Za-z0-9._-] kept, the rest as %XX, and a
 * leading dot escaped, so no name can climb out of the store. */
static int escape_name(const char *in, char *out, size_t outlen)
{
    size_t o = 0;

    for (size_t i = 0; in[i]; i++) {
        unsigned char ch = (unsigned char)in[i];
        bool keep = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || (ch == '.' && i);
        if (o + 4 > outlen)
            return -ENAMETOOLONG;
        if (keep)
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, outlen - o, "%%%02X", ch);
    }
    if (o == 0 || o >= outlen)
        return -EINVAL;
    out[o] = '\0';
    return 0;
}

static void unescape_name(const char *in, char *out, size_t outlen)
{
    size_t o = 0;

    for (size_t i = 0; in[i] && o + 1 < outlen; i++) {
        unsigned v;
        if (in[i] == '%' && in[i + 1] && in[i + 2] && sscanf(in + i + 1, "%2X", &v) == 1) {
            out[o++] = (char)v;
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = '\0';
}

static bool account_name_ok(const char *a)
{
    size_t n = strlen(a);

    if (n == 0 || n > ACCOUNT_MAX || a[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (a[i] == '/' || (unsigned char)a[i] < 0x20)
            return false;
    return true;
}

static bool name_listed(char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return true;
    return false;
}

/* ================================================================ account keys */

static EVP_PKEY *read_pubkey(const char *path)
{
    FILE *f = fopen(path, "re");
    EVP_PKEY *k;

    if (!f)
        return NULL;
    k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    return k;
}

/* keys_dir/VAULT/ACCOUNT.pem, else keys_dir/ACCOUNT.pem. */
static EVP_PKEY *account_key(void *arg, const char *vault, const char *account)
{
    struct auditd *d = arg;
    char path[PATH_MAX];
    EVP_PKEY *k = NULL;

    if (!account_name_ok(account) || !is_hex_id(vault, VAULT_ID_LEN))
        return NULL;
    snprintf(path, sizeof path, "%s/%s/%s.pem", d->conf.keys_dir, vault, account);
    k = read_pubkey(path);
    if (!k) {
        snprintf(path, sizeof path, "%s/%s.pem", d->conf.keys_dir, account);
        k = read_pubkey(path);
    }
    return k;
}

/* ================================================================ streams */

static void stream_free(struct stream *s)
{
    if (s->fd >= 0)
        close(s->fd);
    free(s->name);
    free(s->path);
    free(s->offsets);
    free(s);
}

/* Index the line with seq index+1 at byte offset. */
static int stream_note_line(struct stream *s, uint64_t index, uint64_t offset)
{
    size_t n = (size_t)index;

    if (n >= s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        uint64_t *p = realloc(s->offsets, cap * sizeof *p);
        if (!p)
            return pfs_err(-ENOMEM, "out of memory indexing %s", s->path);
        s->offsets = p;
        s->cap = cap;
    }
    s->offsets[n] = offset;
    return 0;
}

/* Replay the stored file: rebuild the chain and the line index.  A last
 * line without its newline was never acknowledged (the answer follows the
 * fsync), so it is cut off. */
static int stream_replay(struct stream *s)
{
    FILE *f = fdopen(dup(s->fd), "r");
    char *line = NULL, why[256];
    size_t cap = 0;
    ssize_t n;
    uint64_t off = 0;
    int rc = 0;

    if (!f)
        return pfs_err(-errno, "cannot read %s: %s", s->path, strerror(errno));
    s->chain.skip_signatures = 1;   /* checked when they came in */
    while (!rc && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n') {
            auditd_log(LOG_WARNING, "%s: cutting an unfinished last line at byte %llu (never "
                       "acknowledged)", s->path, (unsigned long long)off);
            if (ftruncate(s->fd, (off_t)off) != 0 || fdatasync(s->fd) != 0)
                rc = pfs_err(-errno, "cannot truncate %s: %s", s->path, strerror(errno));
            break;
        }
        if (audit_chain_check(&s->chain, line, (size_t)n - 1, NULL, NULL, why, sizeof why))
            rc = pfs_err(-EBADMSG, "stored stream %s is damaged at byte %llu: %s; move it "
                         "aside and have the sender resend", s->path, (unsigned long long)off,
                         why);
        else
            rc = stream_note_line(s, s->chain.next_seq - 2, off);
        off += (uint64_t)n;
    }
    s->chain.skip_signatures = 0;
    s->size = off;
    free(line);
    fclose(f);
    return rc;
}

static int mkdir_0700(const char *path)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return 0;
    return pfs_err(-errno, "cannot create %s: %s", path, strerror(errno));
}

static int stream_open(struct auditd *d, const char *vault, const char *name, struct stream **out)
{
    struct stream *s = calloc(1, sizeof *s);
    char *dir = NULL;
    int rc;

    if (!s)
        return pfs_err(-ENOMEM, "out of memory");
    s->fd = -1;
    snprintf(s->vault, sizeof s->vault, "%s", vault);
    audit_chain_init(&s->chain, vault);
    if (asprintf(&dir, "%s/%s", d->conf.store_dir, vault) < 0 ||
        asprintf(&s->path, "%s/%s.ndjson", dir, name) < 0 || !(s->name = strdup(name))) {
        free(dir);
        stream_free(s);
        return pfs_err(-ENOMEM, "out of memory");
    }
    rc = mkdir_0700(dir);
    free(dir);
    if (!rc) {
        s->fd = open(s->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (s->fd < 0)
            rc = pfs_err(-errno, "cannot open the stream file %s: %s", s->path, strerror(errno));
    }
    rc = rc ? rc : stream_replay(s);
    if (rc) {
        stream_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static int stream_get(struct auditd *d, const char *vault, const char *name, struct stream **out)
{
    int rc;

    for (struct stream *s = d->streams; s; s = s->next)
        if (strcmp(s->vault, vault) == 0 && strcmp(s->name, name) == 0) {
            *out = s;
            return 0;
        }
    if ((rc = stream_open(d, vault, name, out)))
        return rc;
    (*out)->next = d->streams;
    d->streams = *out;
    return 0;
}

/* ================================================================ answers */

static void answer_set(struct answer *a, unsigned status, const char *type, char *body)
{
    free(a->body);
    a->status = status;
    a->type = type;
    a->body = body;
    a->len = body ? strlen(body) : 0;
}

static void answer_json(struct answer *a, unsigned status, json_object *o)
{
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    char *body = NULL;

    if (asprintf(&body, "%s\n", s) < 0)
        body = NULL;
    answer_set(a, body ? status : 500, "application/json", body);
    json_object_put(o);
}

static void answer_error(struct answer *a, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void answer_error(struct answer *a, unsigned status, const char *fmt, ...)
{
    json_object *o = json_object_new_object();
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!o) {
        answer_set(a, 500, "text/plain", NULL);
        return;
    }
    json_object_object_add(o, "error", json_object_new_string(msg));
    answer_json(a, status, o);
}

/* ================================================================ POST /v1/events */

struct batch_line {
    const char *p;
    size_t len;                  /* without the newline */
};

struct ingest {
    struct batch_line *lines;
    size_t n;
    size_t first_new;            /* index of the first line not yet stored */
    uint64_t dups;
    struct audit_chain chain;    /* the stream's chain after this batch */
};

static int split_lines(const char *body, size_t len, struct ingest *in)
{
    size_t cap = 0, off = 0;

    while (off < len) {
        const char *nl = memchr(body + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - body) : len;
        if (in->n == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            struct batch_line *p = realloc(in->lines, ncap * sizeof *p);
            if (!p)
                return -ENOMEM;
            in->lines = p;
            cap = ncap;
        }
        in->lines[in->n].p = body + off;
        in->lines[in->n].len = end - off;
        in->n++;
        off = end + 1;
    }
    return 0;
}

static json_object *parse_line(const struct batch_line *l)
{
    json_tokener *tok = json_tokener_new();
    json_object *o = NULL;

    if (tok && l->len <= AUDIT_LINE_MAX)
        o = json_tokener_parse_ex(tok, l->p, (int)l->len);
    if (o && (json_tokener_get_error(tok) != json_tokener_success ||
              json_tokener_get_parse_end(tok) != l->len)) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

static bool batch_vault(const struct batch_line *l, char *vault, size_t vlen)
{
    json_object *o = parse_line(l);
    json_object *v;
    bool ok = false;

    if (o && json_object_object_get_ex(o, "vault", &v) && json_object_is_type(v, json_type_string) &&
        is_hex_id(json_object_get_string(v), VAULT_ID_LEN)) {
        snprintf(vault, vlen, "%s", json_object_get_string(v));
        ok = true;
    }
    json_object_put(o);
    return ok;
}

/* Is this line byte-for-byte the stored line with the same seq? */
static int stored_line_equal(const struct stream *s, uint64_t seq, const struct batch_line *l)
{
    uint64_t start = s->offsets[seq - 1];
    uint64_t end = seq < s->chain.next_seq - 1 ? s->offsets[seq] : s->size;
    size_t len = (size_t)(end - start - 1);
    char *buf;
    int same;

    if (len != l->len)
        return 0;
    if (!(buf = malloc(len ? len : 1)))
        return -ENOMEM;
    same = pread(s->fd, buf, len, (off_t)start) == (ssize_t)len && memcmp(buf, l->p, len) == 0;
    free(buf);
    return same;
}

/* Sort the batch into already-stored duplicates (a prefix) and new lines
 * that must continue the chain; nothing is written here. */
static int ingest_check(struct auditd *d, const struct stream *s, struct ingest *in,
                        struct answer *a)
{
    char why[512];

    in->chain = s->chain;
    for (size_t i = 0; i < in->n; i++) {
        const struct batch_line *l = &in->lines[i];
        uint64_t seq = 0;

        if (i == in->first_new && audit_line_seq(l->p, l->len, &seq) == 0 && seq > 0 &&
            seq < s->chain.next_seq) {
            int same = stored_line_equal(s, seq, l);
            if (same < 0)
                return same;
            if (!same) {
                answer_error(a, 409, "line %zu of the batch (seq %llu) differs from the line "
                             "stored with that seq: the sender's spool was altered",
                             i + 1, (unsigned long long)seq);
                return -EBADMSG;
            }
            in->dups++;
            in->first_new++;
            continue;
        }
        if (audit_chain_check(&in->chain, l->p, l->len, account_key, d, why, sizeof why)) {
            answer_error(a, 409, "line %zu of the batch breaks the chain of stream %s: %s; "
                         "nothing of this batch was stored (next expected seq %llu)", i + 1,
                         s->name, why, (unsigned long long)s->chain.next_seq);
            return -EBADMSG;
        }
    }
    return 0;
}

/* Append the new lines with one write, fsync, then index them. */
static int ingest_store(struct stream *s, const struct ingest *in)
{
    const struct batch_line *first = &in->lines[in->first_new], *last = &in->lines[in->n - 1];
    size_t len = (size_t)(last->p + last->len - first->p);
    struct iovec iov[2] = { { (void *)first->p, len }, { (void *)"\n", 1 } };
    uint64_t off = s->size;
    ssize_t w;
    int rc = 0;

    if (in->first_new == in->n)
        return 0;
    w = writev(s->fd, iov, 2);
    if (w != (ssize_t)(len + 1) || fdatasync(s->fd) != 0) {
        rc = pfs_err(-(errno ? errno : EIO), "cannot append to %s: %s", s->path,
                     strerror(errno ? errno : EIO));
        if (ftruncate(s->fd, (off_t)s->size) != 0)
            auditd_log(LOG_ERR, "cannot cut %s back to %llu bytes after a failed write",
                       s->path, (unsigned long long)s->size);
        return rc;
    }
    for (size_t i = in->first_new; i < in->n && !rc; i++) {
        rc = stream_note_line(s, s->chain.next_seq - 1 + (i - in->first_new), off);
        off += in->lines[i].len + 1;
    }
    s->chain = in->chain;
    s->size = off;
    return rc;
}

static void handle_events_post(struct auditd *d, const char *cn, const struct request *r,
                               struct answer *a)
{
    struct ingest in;
    char vault[VAULT_ID_LEN + 1], name[3 * CN_MAX + 1];
    struct stream *s;
    json_object *o;
    int rc;

    memset(&in, 0, sizeof in);
    if (d->conf.n_senders && !name_listed(d->conf.senders, d->conf.n_senders, cn)) {
        answer_error(a, 403, "certificate \"%s\" is not among the configured senders", cn);
        return;
    }
    if (r->len == 0 || split_lines(r->body, r->len, &in) < 0 || in.n == 0) {
        free(in.lines);
        answer_error(a, 400, "empty batch: send spool lines as application/x-ndjson");
        return;
    }
    if (!batch_vault(&in.lines[0], vault, sizeof vault) || escape_name(cn, name, sizeof name)) {
        free(in.lines);
        answer_error(a, 400, "the first line names no vault id (32 hex digits)");
        return;
    }
    pthread_mutex_lock(&d->mu);
    rc = stream_get(d, vault, name, &s);
    if (rc)
        answer_error(a, 500, "%s", pfs_err_msg());
    else if ((rc = ingest_check(d, s, &in, a)) == 0 && (rc = ingest_store(s, &in)) != 0)
        answer_error(a, 500, "%s", pfs_err_msg());
    if (!rc && (o = json_object_new_object())) {
        json_object_object_add(o, "accepted", json_object_new_int64((int64_t)(in.n - in.first_new)));
        json_object_object_add(o, "duplicates", json_object_new_int64((int64_t)in.dups));
        json_object_object_add(o, "last_seq", json_object_new_int64((int64_t)(s->chain.next_seq - 1)));
        answer_json(a, 200, o);
    } else if (!rc) {
        answer_error(a, 500, "out of memory");
    }
    if (rc)
        auditd_log(LOG_WARNING, "batch of %zu lines from \"%s\" for vault %s refused (%u)", in.n,
                   cn, vault, a->status);
    pthread_mutex_unlock(&d->mu);
    free(in.lines);
}

/* ================================================================ queries */

static int list_streams(struct auditd *d, const char *vault, const char *host,
                        char ***names, size_t *n)
{
    char dir[PATH_MAX], esc[3 * CN_MAX + 1];
    struct dirent **ents = NULL;
    int count;

    *names = NULL;
    *n = 0;
    if (host) {
        if (escape_name(host, esc, sizeof esc) || !(*names = calloc(1, sizeof **names)) ||
            !((*names)[0] = strdup(esc)))
            return -EINVAL;
        *n = 1;
        return 0;
    }
    snprintf(dir, sizeof dir, "%s/%s", d->conf.store_dir, vault);
    count = scandir(dir, &ents, NULL, alphasort);
    if (count < 0)
        return errno == ENOENT ? 0 : -errno;
    *names = calloc((size_t)count + 1, sizeof **names);
    for (int i = 0; i < count; i++) {
        size_t len = strlen(ents[i]->d_name);
        if (*names && ents[i]->d_name[0] != '.' && len > 7 &&
            strcmp(ents[i]->d_name + len - 7, ".ndjson") == 0)
            (*names)[(*n)++] = strndup(ents[i]->d_name, len - 7);
        free(ents[i]);
    }
    free(ents);
    return *names ? 0 : -ENOMEM;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static bool query_args(struct MHD_Connection *c, struct answer *a, const char **vault,
                       const char **host, uint64_t *since)
{
    const char *s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
    char *end = NULL;

    *vault = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "vault");
    *host = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "host");
    *since = 0;
    if (!*vault || !is_hex_id(*vault, VAULT_ID_LEN)) {
        answer_error(a, 400, "vault=ID (32 hex digits) is required");
        return false;
    }
    if (s) {
        errno = 0;
        *since = strtoull(s, &end, 10);
        if (errno || !*s || *end) {
            answer_error(a, 400, "since must be a seq number");
            return false;
        }
    }
    return true;
}

/* Append the stream's lines with seq > since to out. */
static int stream_lines_after(const struct stream *s, uint64_t since, size_t *budget,
                              char **out, size_t *outlen)
{
    uint64_t stored = s->chain.next_seq - 1, start, end;
    uint64_t last = stored;
    char *p;

    if (since >= stored || *budget == 0)
        return 0;
    if (stored - since > *budget)
        last = since + *budget;
    start = s->offsets[since];
    end = last < stored ? s->offsets[last] : s->size;
    p = realloc(*out, *outlen + (size_t)(end - start) + 1);
    if (!p)
        return -ENOMEM;
    *out = p;
    if (pread(s->fd, p + *outlen, (size_t)(end - start), (off_t)start) != (ssize_t)(end - start))
        return pfs_err(-EIO, "cannot read %s", s->path);
    *outlen += (size_t)(end - start);
    p[*outlen] = '\0';
    *budget -= (size_t)(last - since);
    return 0;
}

static void handle_events_get(struct auditd *d, struct MHD_Connection *c, struct answer *a)
{
    const char *vault, *host;
    uint64_t since;
    char **names = NULL, *out = NULL;
    size_t n = 0, outlen = 0, budget = AUDITD_QUERY_LIMIT;
    int rc;

    if (!query_args(c, a, &vault, &host, &since))
        return;
    pthread_mutex_lock(&d->mu);
    rc = list_streams(d, vault, host, &names, &n);
    for (size_t i = 0; i < n && !rc; i++) {
        struct stream *s;
        rc = stream_get(d, vault, names[i], &s);
        rc = rc ? rc : stream_lines_after(s, since, &budget, &out, &outlen);
    }
    pthread_mutex_unlock(&d->mu);
    free_names(names, n);
    if (rc) {
        free(out);
        answer_error(a, 500, "%s", pfs_err_msg()[0] ? pfs_err_msg() : strerror(-rc));
        return;
    }
    answer_set(a, 200, "application/x-ndjson", out ? out : strdup(""));
    a->len = outlen;
}

struct verify_keys {
    struct auditd *d;
    const char *vault;
    EVP_PKEY *keys[64];
    size_t n;
};

static EVP_PKEY *verify_key_for(void *arg, const char *account)
{
    struct verify_keys *vk = arg;
    EVP_PKEY *k;

    if (vk->n == sizeof vk->keys / sizeof vk->keys[0])
        return NULL;
    k = account_key(vk->d, vk->vault, account);
    if (k)
        vk->keys[vk->n++] = k;
    return k;
}

/* The whole stored stream through audit_verify, exactly as
 * `pactfs-admin audit-verify` checks a spool. */
static json_object *verify_stream(struct auditd *d, const char *vault, const char *name)
{
    struct verify_keys vk = { .d = d, .vault = vault };
    json_object *o = json_object_new_object();
    char host[CN_MAX + 1], path[PATH_MAX];
    uint64_t events = 0;
    int rc;

    if (!o)
        return NULL;
    unescape_name(name, host, sizeof host);
    snprintf(path, sizeof path, "%s/%s/%s.ndjson", d->conf.store_dir, vault, name);
    pfs_err_clear();
    rc = audit_verify(path, verify_key_for, &vk, &events);
    for (size_t i = 0; i < vk.n; i++)
        EVP_PKEY_free(vk.keys[i]);
    json_object_object_add(o, "host", json_object_new_string(host));
    json_object_object_add(o, "events", json_object_new_int64((int64_t)events));
    json_object_object_add(o, "ok", json_object_new_boolean(rc == 0));
    if (rc)
        json_object_object_add(o, "error", json_object_new_string(pfs_err_msg()));
    return o;
}

static void handle_verify(struct auditd *d, struct MHD_Connection *c, struct answer *a)
{
    const char *vault, *host;
    uint64_t since;
    char **names = NULL;
    size_t n = 0;
    json_object *o, *arr;
    bool all_ok = true;
    int rc;

    if (!query_args(c, a, &vault, &host, &since))
        return;
    o = json_object_new_object();
    arr = json_object_new_array();
    if (!o || !arr) {
        json_object_put(o);
        json_object_put(arr);
        answer_error(a, 500, "out of memory");
        return;
    }
    pthread_mutex_lock(&d->mu);
    rc = list_streams(d, vault, host, &names, &n);
    for (size_t i = 0; i < n && !rc; i++) {
        json_object *so = verify_stream(d, vault, names[i]), *ok;
        if (so && json_object_object_get_ex(so, "ok", &ok) && !json_object_get_boolean(ok))
            all_ok = false;
        json_object_array_add(arr, so);
    }
    pthread_mutex_unlock(&d->mu);
    free_names(names, n);
    json_object_object_add(o, "vault", json_object_new_string(vault));
    json_object_object_add(o, "ok", json_object_new_boolean(all_ok && rc == 0));
    json_object_object_add(o, "streams", arr);
    answer_json(a, rc ? 500 : 200, o);
}

/* ================================================================ TLS identity */

typedef int (*gnutls_verify_fn)(gnutls_session_t, unsigned int *);
typedef const gnutls_datum_t *(*gnutls_peers_fn)(gnutls_session_t, unsigned int *);

/* libmicrohttpd already loaded GnuTLS: look its functions up at run time
 * rather than link it a second time. */
static gnutls_session_t tls_session(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);

    return ci ? (gnutls_session_t)ci->tls_session : NULL;
}

static int cn_of_der(const unsigned char *der, long len, char *cn, size_t cnlen)
{
    X509 *x = d2i_X509(NULL, &der, len);
    X509_NAME *subj = x ? X509_get_subject_name(x) : NULL;
    int idx = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
    unsigned char *utf8 = NULL;
    int n = -1, rc = -EACCES;

    if (idx >= 0)
        n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx)));
    if (n > 0 && (size_t)n < cnlen && !memchr(utf8, '\0', (size_t)n)) {
        memcpy(cn, utf8, (size_t)n);
        cn[n] = '\0';
        rc = 0;
        for (int i = 0; i < n; i++)
            if ((unsigned char)cn[i] < 0x20 || cn[i] == 0x7f)
                rc = -EACCES;
    }
    OPENSSL_free(utf8);
    X509_free(x);
    return rc;
}

/* The verified client certificate's CN, or -EACCES. */
static int client_identity(struct MHD_Connection *c, char *cn, size_t cnlen)
{
    gnutls_session_t s = tls_session(c);
    gnutls_verify_fn verify = (gnutls_verify_fn)dlsym(RTLD_DEFAULT,
                                                      "gnutls_certificate_verify_peers2");
    gnutls_peers_fn peers = (gnutls_peers_fn)dlsym(RTLD_DEFAULT, "gnutls_certificate_get_peers");
    const gnutls_datum_t *chain;
    unsigned status = 0, n = 0;

    if (!s || !verify || !peers || verify(s, &status) != 0 || status != 0)
        return -EACCES;
    chain = peers(s, &n);
    if (!chain || n == 0)
        return -EACCES;
    return cn_of_der(chain[0].data, (long)chain[0].size, cn, cnlen);
}

/* ================================================================ HTTP */

static void route(struct auditd *d, struct MHD_Connection *c, const char *url, const char *method,
                  const struct request *r, struct answer *a)
{
    const char *cn = r->cn;
    bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;

    if (r->anonymous) {
        answer_error(a, 403, "a client certificate signed by the configured client CA "
                            "is required");
        return;
    }
    if (strcmp(url, "/v1/events") == 0 && post) {
        if (r->too_big) {
            answer_error(a, 413, "batch larger than %u bytes", AUDITD_MAX_BODY);
            return;
        }
        handle_events_post(d, cn, r, a);
        return;
    }
    if ((strcmp(url, "/v1/events") == 0 || strcmp(url, "/v1/verify") == 0) && get) {
        if (!name_listed(d->conf.auditors, d->conf.n_auditors, cn)) {
            answer_error(a, 403, "certificate \"%s\" is not among the configured "
                                    "auditors", cn);
            return;
        }
        if (strcmp(url, "/v1/events") == 0)
            handle_events_get(d, c, a);
        else
            handle_verify(d, c, a);
        return;
    }
    if (strcmp(url, "/v1/events") == 0 || strcmp(url, "/v1/verify") == 0) {
        answer_error(a, 405, "method %s not allowed here", method);
        return;
    }
    answer_error(a, 404, "no such resource: %s", url);
}

static enum MHD_Result send_answer(struct MHD_Connection *c, struct answer *a)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(a->len, a->body ? a->body : (void *)"",
                                           a->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(a->body);
        return MHD_NO;
    }
    a->body = NULL;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, a->type ? a->type : "text/plain");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    ret = MHD_queue_response(c, a->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static bool request_take(struct request *r, const char *data, size_t n)
{
    if (r->anonymous)
        return true;
    if (r->too_big || r->len + n > AUDITD_MAX_BODY) {
        r->too_big = true;
        return true;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 64 * 1024;
        char *p;
        while (cap < r->len + n)
            cap *= 2;
        if (!(p = realloc(r->body, cap)))
            return false;
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    struct auditd *d = cls;
    struct request *r = *con_cls;
    struct answer a = { 0, NULL, 0, NULL };

    (void)version;
    if (!r) {
        if (!(r = calloc(1, sizeof *r)))
            return MHD_NO;
        /* Identify the client before taking its body: no buffering for
         * strangers. */
        r->anonymous = client_identity(c, r->cn, sizeof r->cn) < 0;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!request_take(r, upload_data, *upload_size))
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    route(d, c, url, method, r, &a);
    return send_answer(c, &a);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *r = *con_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (!r)
        return;
    free(r->body);
    free(r);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    auditd_log(LOG_WARNING, "http: %s", msg);
}

/* ================================================================ startup */

static int read_file_text(const char *path, char **out)
{
    FILE *f = fopen(path, "re");
    long n;
    int rc = 0;

    if (!f)
        return pfs_err(-errno, "cannot open %s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) <= 0 || n > 1 << 20 ||
        fseek(f, 0, SEEK_SET) < 0) {
        fclose(f);
        return pfs_err(-EINVAL, "%s is empty or unreadable", path);
    }
    *out = calloc(1, (size_t)n + 1);
    if (!*out)
        rc = pfs_err(-ENOMEM, "out of memory");
    else if (fread(*out, 1, (size_t)n, f) != (size_t)n) {
        rc = pfs_err(-EIO, "cannot read %s", path);
        free(*out);
        *out = NULL;
    }
    fclose(f);
    return rc;
}

static struct MHD_Daemon *start_http(struct auditd *d, const char *cert, const char *key,
                                     const char *trust)
{
    struct sockaddr_storage ss;
    struct addrinfo hints, *ai = NULL;
    char port[8];
    unsigned flags = MHD_USE_TLS | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;

    memset(&hints, 0, sizeof hints);
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%u", d->conf.port);
    if (getaddrinfo(d->conf.listen_address, port, &hints, &ai) != 0 || !ai) {
        pfs_err(-EINVAL, "listen_address '%s' is not a numeric IP address",
                d->conf.listen_address);
        return NULL;
    }
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    freeaddrinfo(ai);
    return MHD_start_daemon(flags, (uint16_t)d->conf.port, NULL, NULL, on_request, d,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, d,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, d,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
                            MHD_OPTION_HTTPS_MEM_CERT, cert,
                            MHD_OPTION_HTTPS_MEM_KEY, key,
                            MHD_OPTION_HTTPS_MEM_TRUST, trust,
                            MHD_OPTION_HTTPS_PRIORITIES, AUDITD_TLS_PRIORITIES,
                            MHD_OPTION_END);
}

static int serve(struct auditd *d)
{
    char *cert = NULL, *key = NULL, *trust = NULL;
    struct MHD_Daemon *mhd;
    sigset_t set;
    int sig, rc;

    rc = read_file_text(d->conf.cert_file, &cert);
    rc = rc ? rc : read_file_text(d->conf.key_file, &key);
    rc = rc ? rc : read_file_text(d->conf.client_ca_file, &trust);
    rc = rc ? rc : mkdir_0700(d->conf.store_dir);
    if (rc)
        goto out;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    mhd = start_http(d, cert, key, trust);
    if (!mhd) {
        if (!pfs_err_msg()[0])
            pfs_err(-EIO, "cannot listen on %s port %u with the certificate %s and key %s "
                    "(port in use, or a certificate/key that GnuTLS cannot load)",
                    d->conf.listen_address, d->conf.port, d->conf.cert_file, d->conf.key_file);
        rc = -EIO;
        goto out;
    }
    auditd_log(LOG_NOTICE, "listening on https://%s:%u (TLS >= 1.2, client certificates "
               "required), store %s", d->conf.listen_address, d->conf.port, d->conf.store_dir);
    sigwait(&set, &sig);
    auditd_log(LOG_NOTICE, "stopping on signal %d", sig);
    MHD_stop_daemon(mhd);
out:
    free(cert);
    if (key) {
        OPENSSL_cleanse(key, strlen(key));
        free(key);
    }
    free(trust);
    return rc;
}

static void auditd_teardown(struct auditd *d)
{
    while (d->streams) {
        struct stream *s = d->streams;
        d->streams = s->next;
        stream_free(s);
    }
    pthread_mutex_destroy(&d->mu);
    auditd_conf_free(&d->conf);
}

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: pactfs-auditd [-f] [-c FILE]\n"
        "The pactfs audit receiver: takes audit events shipped by pactfs over HTTPS\n"
        "(client certificates required), checks each chain's continuity and signatures,\n"
        "keeps them in an append-only store and answers auditors' queries.\n\n"
        "  -c, --config FILE  configuration (default " AUDITD_DEFAULT_CONF ")\n"
        "  -f, --foreground   stay in the foreground and log to stderr\n"
        "                     (otherwise detach and log to syslog)\n"
        "  -h, --help         this text\n"
        "  -V, --version      the version\n\n"
        "See pactfs-auditd(8) and docs/auditd.md for the settings and the protocol.\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "foreground", no_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    const char *conf_path = AUDITD_DEFAULT_CONF;
    bool foreground = false;
    struct auditd d;
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "c:fhV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': conf_path = optarg; break;
        case 'f': foreground = true; break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'V': printf("pactfs-auditd %s\n", PACKAGE_VERSION); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    umask(077);
    memset(&d, 0, sizeof d);
    pthread_mutex_init(&d.mu, NULL);
    if (auditd_conf_load(conf_path, &d.conf) < 0) {
        auditd_log(LOG_ERR, "%s", pfs_err_msg());
        pthread_mutex_destroy(&d.mu);
        return EXIT_CONFIG;
    }
    if (!foreground) {
        if (daemon(0, 0) < 0) {
            auditd_log(LOG_ERR, "cannot detach: %s", strerror(errno));
            auditd_teardown(&d);
            return EXIT_FAILURE_OTHER;
        }
        openlog("pactfs-auditd", LOG_PID, LOG_DAEMON);
        log_to_syslog = true;
    }
    rc = serve(&d);
    if (rc)
        auditd_log(LOG_ERR, "%s", pfs_err_msg());
    auditd_teardown(&d);
    return rc ? (rc == -ENOENT || rc == -EINVAL ? EXIT_CONFIG : EXIT_FAILURE_OTHER) : EXIT_OK;
}
