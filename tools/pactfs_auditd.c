#include "config.h"

/* pactfs-auditd: the reference audit receiver.  Workstations' shippers POST
 * batches of spool lines (NDJSON) over HTTPS with a client certificate; the
 * certificate's CN names the sending host.  Per (vault, host) stream the
 * receiver checks that each batch continues the chain it holds (seq, prev,
 * each session's chain, its registry proof against the vault's pinned root
 * fingerprint and its checkpoint signatures: audit_chain_check), drops
 * lines it already holds (a shipper resends after a crash), refuses a batch
 * that breaks the chain with 409 and keeps nothing of it, and appends the
 * rest to an append-only file, fsynced before the answer.  Auditors (CNs
 * listed in `auditors`) read the stream back and have it verified.
 * Protocol and settings: docs/auditd.md, pactfs-auditd(8).
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <libconfig.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/pem.h>

#include "audit.h"
#include "audit_query.h"
#include "audit_ship.h"
#include "error.h"
#include "exitcodes.h"

#include "https_service.h"

#define AUDITD_DEFAULT_CONF "/etc/pactfs/auditd.conf"
#define AUDITD_MAX_BODY (2u * AUDIT_SHIP_MAX_BYTES)
#define AUDITD_MAX_NAMES 64
#define AUDITD_QUERY_LIMIT AUDIT_QUERY_LIMIT   /* lines per GET /v1/events answer */
#define CN_MAX HTTPS_CN_MAX
#define VAULT_ID_LEN 32
#define ACCOUNT_MAX 64

struct auditd_conf {
    char *listen_address;
    unsigned port;
    char *cert_file;
    char *key_file;
    char *client_ca_file;
    char *store_dir;
    char *keys_dir;                      /* format 2 spools only */
    char *vault_ids[AUDITD_MAX_NAMES];   /* vaults and their pinned root */
    char *root_fps[AUDITD_MAX_NAMES];
    size_t n_vaults;
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

struct answer {
    unsigned status;
    char *body;                  /* malloc'd */
    size_t len;
    const char *type;
};

/* ================================================================ configuration */

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

static bool is_hex_id(const char *s, size_t n);

/* vaults = ( { id = "<32 hex>"; root_fingerprint = "<64 hex>"; }, ... ):
 * the registry root each vault's signed sessions must prove their signer
 * from (pactfs.conf vault.root_fingerprint of that vault). */
static int conf_vaults(config_t *cfg, struct auditd_conf *c)
{
    config_setting_t *s = config_lookup(cfg, "vaults");
    int count;

    if (!s)
        return 0;
    if (!config_setting_is_list(s))
        return pfs_err(-EINVAL, "setting vaults must be a list of groups: ( { id = \"...\"; "
                       "root_fingerprint = \"...\"; } )");
    count = config_setting_length(s);
    if (count > AUDITD_MAX_NAMES)
        return pfs_err(-EINVAL, "setting vaults lists more than %d vaults", AUDITD_MAX_NAMES);
    for (int i = 0; i < count; i++) {
        config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
        const char *id = NULL, *fp = NULL;

        if (!config_setting_lookup_string(g, "id", &id) ||
            !config_setting_lookup_string(g, "root_fingerprint", &fp) ||
            !is_hex_id(id, VAULT_ID_LEN) || !is_hex_id(fp, 64))
            return pfs_err(-EINVAL, "vaults entry %d needs id (32 lower-case hex digits) and "
                           "root_fingerprint (64, as vault.root_fingerprint in that vault's "
                           "pactfs.conf)", i + 1);
        c->vault_ids[c->n_vaults] = strdup(id);
        c->root_fps[c->n_vaults] = strdup(fp);
        if (!c->vault_ids[c->n_vaults++] || !c->root_fps[c->n_vaults - 1])
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
    for (size_t i = 0; i < c->n_vaults; i++) {
        free(c->vault_ids[i]);
        free(c->root_fps[i]);
    }
    for (size_t i = 0; i < c->n_auditors; i++)
        free(c->auditors[i]);
    for (size_t i = 0; i < c->n_senders; i++)
        free(c->senders[i]);
    memset(c, 0, sizeof *c);
}

static int auditd_conf_read(config_t *cfg, const char *dir, void *arg)
{
    struct auditd_conf *c = arg;
    int rc;

    rc = https_conf_string(cfg, dir, "listen_address", false, false, &c->listen_address);
    rc = rc ? rc : https_conf_uint(cfg, "port", 1, 65535, &c->port);
    rc = rc ? rc : https_conf_string(cfg, dir, "cert_file", true, true, &c->cert_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "key_file", true, true, &c->key_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "client_ca_file", true, true, &c->client_ca_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "store_dir", true, true, &c->store_dir);
    rc = rc ? rc : https_conf_string(cfg, dir, "keys_dir", true, false, &c->keys_dir);
    rc = rc ? rc : conf_vaults(cfg, c);
    rc = rc ? rc : conf_names(cfg, "auditors", c->auditors, &c->n_auditors);
    rc = rc ? rc : conf_names(cfg, "senders", c->senders, &c->n_senders);
    if (rc)
        return rc;
    if (!c->listen_address && !(c->listen_address = strdup("127.0.0.1")))
        return pfs_err(-ENOMEM, "out of memory");
    if (c->port == 0)
        return pfs_err(-EINVAL, "setting port is required (1..65535)");
    return 0;
}

static int auditd_conf_load(const char *path, struct auditd_conf *c)
{
    int rc = https_conf_load(path, auditd_conf_read, c);

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

    if (!d->conf.keys_dir || !account_name_ok(account) || !is_hex_id(vault, VAULT_ID_LEN))
        return NULL;
    snprintf(path, sizeof path, "%s/%s/%s.pem", d->conf.keys_dir, vault, account);
    k = read_pubkey(path);
    if (!k) {
        snprintf(path, sizeof path, "%s/%s.pem", d->conf.keys_dir, account);
        k = read_pubkey(path);
    }
    return k;
}

/* The pinned root fingerprint of a configured vault, or NULL. */
static const char *vault_root_fp(const struct auditd *d, const char *vault)
{
    for (size_t i = 0; i < d->conf.n_vaults; i++)
        if (strcmp(d->conf.vault_ids[i], vault) == 0)
            return d->conf.root_fps[i];
    return NULL;
}

/* ================================================================ streams */

static void stream_free(struct stream *s)
{
    if (s->fd >= 0)
        close(s->fd);
    free(s->name);
    free(s->path);
    free(s->offsets);
    audit_chain_free(&s->chain);
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
            https_log(LOG_WARNING, "%s: cutting an unfinished last line at byte %llu (never "
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
    audit_chain_init(&s->chain, vault, vault_root_fp(d, vault));
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

static bool batch_vault(const struct batch_line *l, char *vault, size_t vlen)
{
    json_object *o = audit_line_parse(l->p, l->len);
    const char *v = o ? audit_field_str(o, "vault") : NULL;
    bool ok = v && is_hex_id(v, VAULT_ID_LEN);

    if (ok)
        snprintf(vault, vlen, "%s", v);
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
    char why[768];

    if (audit_chain_copy(&in->chain, &s->chain) != 0) {
        answer_error(a, 500, "out of memory checking a batch");
        return -ENOMEM;
    }
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
static int ingest_store(struct stream *s, struct ingest *in)
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
            https_log(LOG_ERR, "cannot cut %s back to %llu bytes after a failed write",
                       s->path, (unsigned long long)s->size);
        return rc;
    }
    for (size_t i = in->first_new; i < in->n && !rc; i++) {
        rc = stream_note_line(s, s->chain.next_seq - 1 + (i - in->first_new), off);
        off += in->lines[i].len + 1;
    }
    audit_chain_free(&s->chain);
    s->chain = in->chain;
    memset(&in->chain, 0, sizeof in->chain);
    s->size = off;
    return rc;
}

static void handle_events_post(struct auditd *d, const char *cn, const struct https_request *r,
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
        https_log(LOG_WARNING, "batch of %zu lines from \"%s\" for vault %s refused (%u)", in.n,
                   cn, vault, a->status);
    pthread_mutex_unlock(&d->mu);
    audit_chain_free(&in.chain);
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

/* The parameters of a GET: every one must be known (a typo must not
 * silently widen an auditor's question). */
struct get_args {
    struct answer *a;
    struct audit_filter *f;      /* NULL: no filter parameters allowed */
    bool bad;
};

static enum MHD_Result check_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    struct get_args *g = cls;
    int rc;

    (void)kind;
    if (g->bad)
        return MHD_NO;
    if (!strcmp(key, "vault") || !strcmp(key, "host") ||
        (g->f && !strcmp(key, "since")))
        return MHD_YES;
    if (!g->f) {
        answer_error(g->a, 400, "unknown parameter \"%s\" (this request takes vault and host)",
                     key);
        g->bad = true;
        return MHD_NO;
    }
    pfs_err_clear();
    rc = audit_filter_set(g->f, key, value ? value : "");
    if (rc) {
        answer_error(g->a, 400, "%s", pfs_err_msg()[0] ? pfs_err_msg() : strerror(-rc));
        g->bad = true;
        return MHD_NO;
    }
    return MHD_YES;
}

static bool query_args(struct MHD_Connection *c, struct answer *a, struct audit_filter *f,
                       const char **vault, const char **host, uint64_t *since)
{
    const char *s = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
    struct get_args g = { a, f, false };
    char *end = NULL;

    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, check_arg, &g);
    if (g.bad)
        return false;
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

/* The stored streams of a query as one audit source: each stream's lines
 * after since, stream after stream (name order). */
struct stored_source {
    struct auditd *d;
    const char *vault;
    char **names;
    size_t n;
    uint64_t since;
};

static int scan_stored(void *src, audit_each_fn each, void *arg)
{
    struct stored_source *ss = src;
    int rc = 0;

    for (size_t i = 0; i < ss->n && !rc; i++) {
        struct stream *s;
        size_t budget = SIZE_MAX, len = 0;
        char *text = NULL;

        rc = stream_get(ss->d, ss->vault, ss->names[i], &s);
        rc = rc ? rc : stream_lines_after(s, ss->since, &budget, &text, &len);
        if (rc == 0 && text)
            rc = audit_scan_text(s->path, text, len, each, arg);
        free(text);
    }
    return rc;
}

struct matches {
    char *out;
    size_t len, cap, count;
};

static int keep_match(void *arg, json_object *ev, const char *line, size_t len)
{
    struct matches *m = arg;

    (void)ev;
    if (m->count == AUDITD_QUERY_LIMIT)
        return 1;                       /* the answer is full */
    if (m->len + len + 2 > m->cap) {
        size_t cap = m->cap ? m->cap : 65536;
        char *p;
        while (cap < m->len + len + 2)
            cap *= 2;
        if (!(p = realloc(m->out, cap)))
            return -ENOMEM;
        m->out = p;
        m->cap = cap;
    }
    memcpy(m->out + m->len, line, len);
    m->len += len;
    m->out[m->len++] = '\n';
    m->out[m->len] = '\0';
    m->count++;
    return 0;
}

static void handle_events_get(struct auditd *d, struct MHD_Connection *c, struct answer *a)
{
    struct stored_source ss = { .d = d };
    struct audit_filter f;
    struct matches m = { 0 };
    const char *host;
    int rc;

    audit_filter_init(&f);
    f.sealed_may_match = 1;     /* sealed names: the auditor matches paths after opening */
    if (!query_args(c, a, &f, &ss.vault, &host, &ss.since)) {
        audit_filter_free(&f);
        return;
    }
    pthread_mutex_lock(&d->mu);
    rc = list_streams(d, ss.vault, host, &ss.names, &ss.n);
    if (rc == 0 && f.nparams == 0) {      /* everything after since: the bytes as stored */
        size_t budget = AUDITD_QUERY_LIMIT;
        for (size_t i = 0; i < ss.n && !rc; i++) {
            struct stream *s;
            rc = stream_get(d, ss.vault, ss.names[i], &s);
            rc = rc ? rc : stream_lines_after(s, ss.since, &budget, &m.out, &m.len);
        }
    } else if (rc == 0) {                 /* filtered here, as audit query filters a spool */
        rc = audit_query_run(&f, scan_stored, &ss, keep_match, &m);
        rc = rc > 0 ? 0 : rc;
    }
    pthread_mutex_unlock(&d->mu);
    free_names(ss.names, ss.n);
    audit_filter_free(&f);
    if (rc) {
        free(m.out);
        answer_error(a, 500, "%s", pfs_err_msg()[0] ? pfs_err_msg() : strerror(-rc));
        return;
    }
    answer_set(a, 200, "application/x-ndjson", m.out ? m.out : strdup(""));
    a->len = m.len;
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
    struct audit_verify_result res;
    int rc;

    if (!o)
        return NULL;
    unescape_name(name, host, sizeof host);
    snprintf(path, sizeof path, "%s/%s/%s.ndjson", d->conf.store_dir, vault, name);
    pfs_err_clear();
    rc = audit_verify(path, vault_root_fp(d, vault), d->conf.keys_dir ? verify_key_for : NULL,
                      &vk, &res);
    for (size_t i = 0; i < vk.n; i++)
        EVP_PKEY_free(vk.keys[i]);
    json_object_object_add(o, "host", json_object_new_string(host));
    json_object_object_add(o, "events", json_object_new_int64((int64_t)res.events));
    json_object_object_add(o, "sessions", json_object_new_int64((int64_t)res.sessions));
    json_object_object_add(o, "unsigned_sessions",
                           json_object_new_int64((int64_t)res.unsigned_sessions));
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

    if (!query_args(c, a, NULL, &vault, &host, &since))
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

/* ================================================================ HTTP */

static void route(struct auditd *d, struct MHD_Connection *c, const char *url, const char *method,
                  const struct https_request *r, struct answer *a)
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, struct https_request *r)
{
    struct answer a = { 0, NULL, 0, NULL };

    route(cls, c, url, method, r, &a);
    return https_reply(c, a.status, a.type, a.body, a.len);
}

/* ================================================================ startup */

static int serve(struct auditd *d)
{
    char note[PATH_MAX + 16];
    const struct https_service svc = {
        .listen_address = d->conf.listen_address,
        .port = d->conf.port,
        .cert_file = d->conf.cert_file,
        .key_file = d->conf.key_file,
        .client_ca_file = d->conf.client_ca_file,
        .connection_timeout = 30,
        .connection_limit = 256,
        .max_body = AUDITD_MAX_BODY,
        .identify_clients = true,
        .handle = on_request,
        .cls = d,
        .listening_note = note,
    };
    int rc = mkdir_0700(d->conf.store_dir);

    snprintf(note, sizeof note, ", store %s", d->conf.store_dir);
    return rc ? rc : https_service_run(&svc);
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
    struct https_cmdline cmd;
    struct auditd d;
    int rc;

    https_log_init("pactfs-auditd", false);
    rc = https_cmdline_parse(argc, argv, AUDITD_DEFAULT_CONF, usage, &cmd);
    if (rc >= 0)
        return rc;
    umask(077);
    memset(&d, 0, sizeof d);
    pthread_mutex_init(&d.mu, NULL);
    if (auditd_conf_load(cmd.conf_path, &d.conf) < 0) {
        https_log(LOG_ERR, "%s", pfs_err_msg());
        pthread_mutex_destroy(&d.mu);
        return EXIT_CONFIG;
    }
    if (!cmd.foreground && https_detach() < 0) {
        auditd_teardown(&d);
        return EXIT_FAILURE_OTHER;
    }
    rc = serve(&d);
    if (rc)
        https_log(LOG_ERR, "%s", pfs_err_msg());
    auditd_teardown(&d);
    return rc ? (rc == -ENOENT || rc == -EINVAL ? EXIT_CONFIG : EXIT_FAILURE_OTHER) : EXIT_OK;
}
