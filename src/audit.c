#include "config.h"

/* Audit spool: one JSON object per line, each line carrying the SHA-256 of
 * the line before it, signed checkpoints every so often.  Appends are group
 * committed: a caller writes its line under the mutex (and flock for other
 * processes), then waits until one fdatasync that began after its write has
 * completed; whoever finds no flush running becomes the flusher for everyone
 * queued behind it.  Any write or sync failure is sticky: from then on every
 * event fails, so the filesystem fails closed.  Layout: docs/format-audit.md. */

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "crypto.h"
#include "error.h"
#include "fileio.h"

#define HASH_HEX (2 * SHA256_LEN)
#define SIG_MAX 1024                    /* RSA-8192 */
#define CHECKPOINT_LABEL "pactfs audit checkpoint v1\n"

struct audit {
    pthread_mutex_t mu;
    pthread_cond_t flushed_cv;
    int fd;
    char *path;
    char *vault_id;
    char *account;
    char host[256];
    EVP_PKEY *signer;
    unsigned seal_every;

    /* chain tail, valid while known_size equals the file's size */
    uint64_t next_seq;
    uint64_t last_cp;           /* seq of the file's last checkpoint, 0 if none */
    char prev_hex[HASH_HEX + 1];
    off_t known_size;

    /* group commit: tickets count lines this handle appended */
    uint64_t appended;
    uint64_t durable;
    bool flushing;
    int sticky_err;
};

/* ---------- event fields ---------- */

static void rfc3339_now(char *out, size_t len)
{
    struct timespec ts;
    struct tm tm;
    char base[32];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, len, "%s.%09ldZ", base, ts.tv_nsec);
}

/* Best effort: a process may be gone by the time we look. */
static void process_name(pid_t pid, char *out, size_t len)
{
    char p[64];
    FILE *f;

    out[0] = '\0';
    snprintf(p, sizeof p, "/proc/%ld/comm", (long)pid);
    f = fopen(p, "re");
    if (!f)
        return;
    if (fgets(out, (int)len, f))
        out[strcspn(out, "\n")] = '\0';
    else
        out[0] = '\0';
    fclose(f);
}

static void result_name(int result, char *out, size_t len)
{
    const char *name;

    if (result == 0) {
        snprintf(out, len, "ok");
        return;
    }
    if (result == -EACCES || result == -EPERM) {
        snprintf(out, len, "denied");
        return;
    }
    name = result < 0 ? strerrorname_np(-result) : NULL;
    if (name)
        snprintf(out, len, "%s", name);
    else
        snprintf(out, len, "E%d", result < 0 ? -result : result);
}

static int add_field(json_object *o, const char *key, json_object *v)
{
    if (!v || json_object_object_add(o, key, v) != 0) {
        json_object_put(v);
        return -ENOMEM;
    }
    return 0;
}

/* The event without its place in the chain: seq, cp and prev are added
 * first as placeholders so they keep their position when set under the lock. */
static json_object *event_object(const struct audit *a, const struct audit_ctx *who,
                                 const char *op, const char *path, int result, uint64_t bytes)
{
    json_object *o = json_object_new_object();
    uid_t uid = who ? who->uid : getuid();
    pid_t pid = who ? who->pid : getpid();
    char when[48], proc[64], res[32];

    rfc3339_now(when, sizeof when);
    process_name(pid, proc, sizeof proc);
    result_name(result, res, sizeof res);
    if (!o || add_field(o, "seq", json_object_new_uint64(0)) ||
        add_field(o, "time", json_object_new_string(when)) ||
        add_field(o, "vault", json_object_new_string(a->vault_id)) ||
        add_field(o, "host", json_object_new_string(a->host)) ||
        add_field(o, "account", json_object_new_string(a->account)) ||
        add_field(o, "uid", json_object_new_int64(uid)) ||
        add_field(o, "pid", json_object_new_int64(pid)) ||
        add_field(o, "process", json_object_new_string(proc)) ||
        add_field(o, "op", json_object_new_string(op ? op : "")) ||
        add_field(o, "path", json_object_new_string(path ? path : "")) ||
        add_field(o, "result", json_object_new_string(res)) ||
        add_field(o, "bytes", json_object_new_uint64(bytes)) ||
        add_field(o, "cp", json_object_new_uint64(0)) ||
        add_field(o, "prev", json_object_new_string(""))) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* ---------- the chain tail ---------- */

static void zero_hash_hex(char out[HASH_HEX + 1])
{
    memset(out, '0', HASH_HEX);
    out[HASH_HEX] = '\0';
}

void audit_line_hash(const char *line, size_t len, char out[HASH_HEX + 1])
{
    uint8_t h[SHA256_LEN];

    sha256(line, len, h);
    hex_encode(h, sizeof h, out);
}

struct json_object *audit_line_parse(const char *line, size_t len)
{
    json_tokener *tok;
    json_object *o;

    if (len > AUDIT_LINE_MAX || !(tok = json_tokener_new()))
        return NULL;
    o = json_tokener_parse_ex(tok, line, (int)len);
    if (o && (json_tokener_get_error(tok) != json_tokener_success ||
              json_tokener_get_parse_end(tok) != len || !json_object_is_type(o, json_type_object))) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

int audit_field_uint(json_object *o, const char *key, uint64_t *out)
{
    json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
        return -EBADMSG;
    *out = json_object_get_uint64(v);
    return 0;
}

const char *audit_field_str(json_object *o, const char *key)
{
    json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

int audit_line_seq(const char *line, size_t len, uint64_t *seq)
{
    json_object *o;
    int rc;

    if (memchr(line, '\0', len) || !(o = audit_line_parse(line, len)))
        return -EBADMSG;
    rc = audit_field_uint(o, "seq", seq);
    json_object_put(o);
    return rc;
}

static bool is_checkpoint(json_object *o)
{
    const char *op = audit_field_str(o, "op");

    return op && strcmp(op, "checkpoint") == 0;
}

/* The checkpoint seq that the line after this one must carry as cp: the
 * line's own seq if it is a checkpoint, else the cp it carries. */
static int cp_after_line(json_object *o, uint64_t seq, uint64_t *cp)
{
    if (is_checkpoint(o)) {
        *cp = seq;
        return 0;
    }
    return audit_field_uint(o, "cp", cp);
}

/* Continue the chain from the spool's last line, which must be complete. */
static int read_tail(struct audit *a, off_t size)
{
    size_t want = size < (off_t)AUDIT_LINE_MAX + 1 ? (size_t)size : AUDIT_LINE_MAX + 1;
    char *buf;
    const char *start;
    json_object *o;
    ssize_t got;
    uint64_t seq;
    int rc = 0;

    if (size == 0) {
        a->next_seq = 1;
        a->last_cp = 0;
        zero_hash_hex(a->prev_hex);
        a->known_size = 0;
        return 0;
    }
    buf = malloc(want);
    if (!buf)
        return pfs_err(-ENOMEM, "out of memory reading audit spool %s", a->path);
    got = pread(a->fd, buf, want, size - (off_t)want);
    if (got != (ssize_t)want) {
        rc = got < 0 ? -errno : -EIO;
        free(buf);
        return pfs_err(rc, "cannot read the end of audit spool %s: %s", a->path, strerror(-rc));
    }
    if (buf[want - 1] != '\n') {
        free(buf);
        return pfs_err(-EBADMSG, "audit spool %s ends with an incomplete line (interrupted "
                       "write?): run 'pactfs audit verify', then move the spool aside", a->path);
    }
    start = memrchr(buf, '\n', want - 1);
    start = start ? start + 1 : buf;
    if (start == buf && (off_t)want < size) {
        free(buf);
        return pfs_err(-EBADMSG, "audit spool %s: last line longer than %u bytes", a->path,
                       AUDIT_LINE_MAX);
    }
    o = audit_line_parse(start, (size_t)(buf + want - 1 - start));
    if (!o || audit_field_uint(o, "seq", &seq) != 0) {
        rc = pfs_err(-EBADMSG, "audit spool %s: the last line is not an audit event; run "
                     "'pactfs audit verify'", a->path);
    } else if (cp_after_line(o, seq, &a->last_cp) != 0) {
        rc = pfs_err(-EBADMSG, "audit spool %s: the last line has no \"cp\" field (written "
                     "by a pactfs older than spool format 2, or edited); run 'pactfs audit "
                     "verify', then move the spool aside", a->path);
    } else {
        a->next_seq = seq + 1;
        audit_line_hash(start, (size_t)(buf + want - 1 - start), a->prev_hex);
        a->known_size = size;
    }
    json_object_put(o);
    free(buf);
    return rc;
}

/* Under flock: if another handle or process appended since our last line,
 * pick up its tail so seq and prev continue its chain. */
static int sync_tail(struct audit *a)
{
    struct stat st;

    if (fstat(a->fd, &st) != 0)
        return pfs_err(-errno, "cannot stat audit spool %s: %s", a->path, strerror(errno));
    if (st.st_size == a->known_size)
        return 0;
    return read_tail(a, st.st_size);
}

/* ---------- appending ---------- */

/* Write line + newline at the end.  On failure, cut any partial line so the
 * spool stays well formed for whoever comes next. */
static int write_line(struct audit *a, const char *line, size_t len)
{
    struct iovec iov[2] = { { (void *)line, len }, { (void *)"\n", 1 } };
    size_t total = len + 1, done = 0;

    while (done < total) {
        ssize_t n = writev(a->fd, iov, 2);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;

            if (ftruncate(a->fd, a->known_size) != 0) {
                /* the partial line stays; verify will report it */
            }
            return pfs_err(-e, "cannot append to audit spool %s: %s; operations fail until "
                           "the spool is writable and the filesystem is remounted",
                           a->path, strerror(e));
        }
        done += (size_t)n;
        for (int i = 0; i < 2 && n > 0; i++) {
            size_t take = (size_t)n < iov[i].iov_len ? (size_t)n : iov[i].iov_len;

            iov[i].iov_base = (char *)iov[i].iov_base + take;
            iov[i].iov_len -= take;
            n -= (ssize_t)take;
        }
    }
    audit_line_hash(line, len, a->prev_hex);
    a->known_size += (off_t)total;
    a->next_seq++;
    return 0;
}

/* Give the event its place in the chain, serialise and append it. */
static int append_object(struct audit *a, json_object *o)
{
    const char *line;
    size_t len = 0;

    if (json_object_object_add(o, "seq", json_object_new_uint64(a->next_seq)) != 0 ||
        json_object_object_add(o, "cp", json_object_new_uint64(a->last_cp)) != 0 ||
        json_object_object_add(o, "prev", json_object_new_string(a->prev_hex)) != 0)
        return pfs_err(-ENOMEM, "out of memory writing an audit event");
    line = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN |
                                             JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    if (!line)
        return pfs_err(-ENOMEM, "out of memory writing an audit event");
    if (len > AUDIT_LINE_MAX)
        return pfs_err(-E2BIG, "audit event of %zu bytes exceeds the %u byte line limit",
                       len, AUDIT_LINE_MAX);
    return write_line(a, line, len);
}

/* The message a checkpoint signs: a label (so the signature cannot pass
 * for any other kind), the vault, and the hash of the chain so far. */
static int checkpoint_message(const char *vault, const char *hash_hex, char **msg, size_t *len)
{
    int n = asprintf(msg, "%s%s\n%s", CHECKPOINT_LABEL, vault, hash_hex);

    if (n < 0)
        return pfs_err(-ENOMEM, "out of memory signing an audit checkpoint");
    *len = (size_t)n;
    return 0;
}

static int append_checkpoint(struct audit *a)
{
    json_object *o = event_object(a, NULL, "checkpoint", "", 0, 0);
    uint64_t seq = a->next_seq;
    uint8_t *sig = NULL;
    char *msg = NULL, *sig_hex = NULL;
    size_t msglen = 0, siglen = 0;
    int rc;

    if (!o)
        return pfs_err(-ENOMEM, "out of memory writing an audit checkpoint");
    rc = checkpoint_message(a->vault_id, a->prev_hex, &msg, &msglen);
    if (!rc)
        rc = sig_sign(a->signer, msg, msglen, &sig, &siglen);
    if (!rc && !(sig_hex = malloc(2 * siglen + 1)))
        rc = pfs_err(-ENOMEM, "out of memory writing an audit checkpoint");
    if (!rc) {
        hex_encode(sig, siglen, sig_hex);
        if (add_field(o, "signed_hash", json_object_new_string(a->prev_hex)) ||
            add_field(o, "sig", json_object_new_string(sig_hex)))
            rc = pfs_err(-ENOMEM, "out of memory writing an audit checkpoint");
    }
    if (!rc)
        rc = append_object(a, o);
    if (!rc)
        a->last_cp = seq;
    free(sig_hex);
    free(sig);
    free(msg);
    json_object_put(o);
    return rc;
}

/* Events since the file's last checkpoint, whoever wrote them: the run a
 * signing writer must close before it reaches seal_every, so crashed and
 * signer-less writers' lines get signed too (docs/format-audit.md). */
static uint64_t unsigned_run(const struct audit *a)
{
    return a->next_seq - 1 - a->last_cp;
}

static bool checkpoint_due(const struct audit *a, bool at_close)
{
    if (!a->signer)
        return false;
    if (at_close)   /* a spool already ending in a checkpoint needs no other */
        return a->next_seq == 1 || unsigned_run(a) > 0;
    return unsigned_run(a) >= a->seal_every;
}

/* Under the mutex: append o (and a checkpoint when due, or when forced)
 * holding flock so another process's lines never interleave with ours. */
static int append_locked(struct audit *a, json_object *o, bool force_checkpoint,
                         uint64_t *ticket)
{
    int rc;

    while (flock(a->fd, LOCK_EX) != 0)
        if (errno != EINTR)
            return pfs_err(-errno, "cannot lock audit spool %s: %s", a->path, strerror(errno));
    rc = sync_tail(a);
    if (!rc && o) {
        rc = append_object(a, o);
        if (!rc)
            a->appended++;
    }
    if (!rc && checkpoint_due(a, force_checkpoint)) {
        rc = append_checkpoint(a);
        if (!rc)
            a->appended++;
    }
    flock(a->fd, LOCK_UN);
    *ticket = a->appended;
    return rc;
}

/* Under the mutex: return once a flush that started after our append has
 * completed.  The first waiter to find no flush running does it for all. */
static int wait_durable(struct audit *a, uint64_t ticket)
{
    while (a->durable < ticket && !a->sticky_err) {
        if (a->flushing) {
            pthread_cond_wait(&a->flushed_cv, &a->mu);
            continue;
        }
        uint64_t covers = a->appended;

        a->flushing = true;
        pthread_mutex_unlock(&a->mu);
        int rc = fdatasync(a->fd) == 0 ? 0 : -errno;
        pthread_mutex_lock(&a->mu);
        a->flushing = false;
        if (rc)
            a->sticky_err = pfs_err(rc, "cannot sync audit spool %s: %s; operations fail "
                                    "until the filesystem is remounted", a->path,
                                    strerror(-rc));
        else if (covers > a->durable)
            a->durable = covers;
        pthread_cond_broadcast(&a->flushed_cv);
    }
    if (a->durable >= ticket)
        return 0;
    return pfs_err(a->sticky_err, "audit spool %s failed earlier (%s); operations fail "
                   "until the filesystem is remounted", a->path, strerror(-a->sticky_err));
}

/* Under the mutex: append o (and a due checkpoint); *ticket for
 * wait_durable.  Any failure but a refused event leaves the spool sticky. */
static int append_event_locked(struct audit *a, json_object *o, bool force_checkpoint,
                               uint64_t *ticket)
{
    int rc;

    if (a->sticky_err)
        return pfs_err(a->sticky_err, "audit spool %s failed earlier (%s); operations fail "
                       "until the filesystem is remounted", a->path, strerror(-a->sticky_err));
    rc = append_locked(a, o, force_checkpoint, ticket);
    /* An event refused before any byte was written (too long, no
     * memory) fails alone; anything else leaves the spool in doubt. */
    if (rc && rc != -E2BIG && rc != -ENOMEM)
        a->sticky_err = rc;
    return rc;
}

static int record(struct audit *a, json_object *o, bool force_checkpoint)
{
    uint64_t ticket = 0;
    int rc;

    pthread_mutex_lock(&a->mu);
    rc = append_event_locked(a, o, force_checkpoint, &ticket);
    if (!rc)
        rc = wait_durable(a, ticket);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int audit_event(struct audit *a, const struct audit_ctx *who, const char *op,
                const char *path, int result, uint64_t bytes)
{
    json_object *o = event_object(a, who, op, path, result, bytes);
    int rc;

    if (!o)
        return pfs_err(-ENOMEM, "out of memory building an audit event");
    rc = record(a, o, false);
    json_object_put(o);
    return rc;
}

/* Two phases for callers that append under their own lock (so the chain
 * follows their order) and wait for the fdatasync after dropping it: the
 * event is durable, and the operation may report success, only once
 * audit_event_wait returned 0. */
int audit_event_append(struct audit *a, const struct audit_ctx *who, const char *op,
                       const char *path, int result, uint64_t bytes, uint64_t *ticket)
{
    json_object *o = event_object(a, who, op, path, result, bytes);
    int rc;

    *ticket = 0;
    if (!o)
        return pfs_err(-ENOMEM, "out of memory building an audit event");
    pthread_mutex_lock(&a->mu);
    rc = append_event_locked(a, o, false, ticket);
    pthread_mutex_unlock(&a->mu);
    json_object_put(o);
    return rc;
}

int audit_event_wait(struct audit *a, uint64_t ticket)
{
    int rc;

    pthread_mutex_lock(&a->mu);
    rc = wait_durable(a, ticket);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/* ---------- open / close ---------- */

static void audit_free(struct audit *a)
{
    if (a->fd >= 0)
        close(a->fd);
    EVP_PKEY_free(a->signer);
    pthread_cond_destroy(&a->flushed_cv);
    pthread_mutex_destroy(&a->mu);
    free(a->path);
    free(a->vault_id);
    free(a->account);
    free(a);
}

static int open_spool(struct audit *a)
{
    int rc;

    a->fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (a->fd < 0)
        return pfs_err(-errno, "cannot open audit spool %s: %s", a->path, strerror(errno));
    /* The spool's directory entry must survive a crash as well as its lines. */
    if ((rc = fileio_fsync_parent(a->path)))
        return pfs_err(rc, "cannot sync the directory of audit spool %s: %s", a->path,
                       strerror(-rc));
    while (flock(a->fd, LOCK_EX) != 0)
        if (errno != EINTR)
            return pfs_err(-errno, "cannot lock audit spool %s: %s", a->path, strerror(errno));
    a->known_size = -1;
    rc = sync_tail(a);
    flock(a->fd, LOCK_UN);
    return rc;
}

int audit_open(const char *spool_path, const char *vault_id, const char *account,
               EVP_PKEY *signer, struct audit **out)
{
    struct audit *a = calloc(1, sizeof *a);
    int rc;

    *out = NULL;
    if (!a)
        return pfs_err(-ENOMEM, "out of memory opening audit spool %s", spool_path);
    a->fd = -1;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->flushed_cv, NULL);
    a->seal_every = AUDIT_SEAL_EVERY;
    a->path = strdup(spool_path);
    a->vault_id = strdup(vault_id ? vault_id : "");
    a->account = strdup(account ? account : "");
    if (!a->path || !a->vault_id || !a->account) {
        audit_free(a);
        return pfs_err(-ENOMEM, "out of memory opening audit spool %s", spool_path);
    }
    if (gethostname(a->host, sizeof a->host - 1) != 0)
        snprintf(a->host, sizeof a->host, "unknown");
    if (signer && EVP_PKEY_up_ref(signer) == 1)
        a->signer = signer;
    else if (signer) {
        audit_free(a);
        return pfs_err(-ENOMEM, "cannot take a reference to the audit signing key");
    }
    if ((rc = open_spool(a))) {
        audit_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void audit_set_seal_every(struct audit *a, unsigned n)
{
    pthread_mutex_lock(&a->mu);
    /* Above AUDIT_SEAL_EVERY the spool would fail verification with keys. */
    a->seal_every = n < 1 ? 1 : n > AUDIT_SEAL_EVERY ? AUDIT_SEAL_EVERY : n;
    pthread_mutex_unlock(&a->mu);
}

void audit_close(struct audit *a)
{
    if (!a)
        return;
    if (a->signer && !a->sticky_err)
        record(a, NULL, true);   /* failure already recorded in pfs_err */
    audit_free(a);
}

/* ---------- the chain rules ---------- */

void audit_chain_init(struct audit_chain *c, const char *vault)
{
    memset(c, 0, sizeof *c);
    c->next_seq = 1;
    zero_hash_hex(c->prev_hex);
    snprintf(c->vault, sizeof c->vault, "%s", vault ? vault : "");
}

static int chain_refuse(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int chain_refuse(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return -EBADMSG;
}

static int checkpoint_signature_ok(const char *vault, const char *account, const char *hash,
                                   const char *sig_hex, audit_key_fn key_for, void *arg,
                                   char *why, size_t whylen)
{
    uint8_t sig[SIG_MAX];
    size_t siglen = strlen(sig_hex) / 2, msglen = 0;
    char *msg = NULL;
    EVP_PKEY *key;
    int rc;

    if (strlen(sig_hex) % 2 || siglen == 0 || siglen > SIG_MAX ||
        hex_decode(sig_hex, sig, siglen) != 0)
        return chain_refuse(why, whylen, "checkpoint signature is not hex of a plausible length");
    key = key_for ? key_for(arg, vault, account) : NULL;
    if (!key)
        return chain_refuse(why, whylen, "checkpoint signed by unknown account \"%.100s\"",
                            account);
    rc = checkpoint_message(vault, hash, &msg, &msglen);
    if (!rc)
        rc = sig_verify(key, msg, msglen, sig, siglen);
    free(msg);
    EVP_PKEY_free(key);
    pfs_err_clear();
    if (rc == -ENOMEM)
        return chain_refuse(why, whylen, "out of memory checking a checkpoint");
    if (rc)
        return chain_refuse(why, whylen, "checkpoint signature does not verify: the chain "
                            "before it was altered, or it was signed by another key");
    return 0;
}

/* A checkpoint signs the hash of everything before it. */
static int checkpoint_ok(const struct audit_chain *c, json_object *o, audit_key_fn key_for,
                         void *arg, char *why, size_t whylen)
{
    const char *hash = audit_field_str(o, "signed_hash"), *sig_hex = audit_field_str(o, "sig");
    const char *account = audit_field_str(o, "account"), *vault = audit_field_str(o, "vault");

    if (!hash || !sig_hex || !account || !vault)
        return chain_refuse(why, whylen, "checkpoint lacks signed_hash, sig, account or vault");
    if (strcmp(hash, c->prev_hex) != 0)
        return chain_refuse(why, whylen, "checkpoint signs a different chain (signed_hash "
                            "differs from prev)");
    if (c->skip_signatures)
        return 0;
    return checkpoint_signature_ok(vault, account, hash, sig_hex, key_for, arg, why, whylen);
}

/* cp must name the last checkpoint before the line: removing, inserting or
 * forging a checkpoint shows even where the chain was recomputed. */
static int cp_ok(const struct audit_chain *c, json_object *o, char *why, size_t whylen)
{
    uint64_t cp;

    if (audit_field_uint(o, "cp", &cp) != 0)
        return chain_refuse(why, whylen, "lacks cp (written by a pactfs older than spool "
                            "format 2, or edited)");
    if (cp != c->last_cp)
        return chain_refuse(why, whylen, "cp %llu where the last checkpoint before this line "
                            "is %llu (a checkpoint was removed or inserted, or cp was edited)",
                            (unsigned long long)cp, (unsigned long long)c->last_cp);
    return 0;
}

/* seq, vault and prev: the line's place in the chain. */
static int place_ok(const struct audit_chain *c, json_object *o, uint64_t *seq, char *why,
                    size_t whylen)
{
    const char *prev = audit_field_str(o, "prev"), *vault = audit_field_str(o, "vault");

    if (audit_field_uint(o, "seq", seq) != 0 || !prev || !audit_field_str(o, "op"))
        return chain_refuse(why, whylen, "lacks seq, prev or op");
    if (c->vault[0] && (!vault || strcmp(vault, c->vault) != 0))
        return chain_refuse(why, whylen, "seq %llu names vault \"%.64s\", not this stream's "
                            "\"%s\"", (unsigned long long)*seq, vault ? vault : "",
                            c->vault);
    if (*seq != c->next_seq)
        return chain_refuse(why, whylen, "seq %llu where %llu was expected (a line was deleted, "
                            "inserted or moved)", (unsigned long long)*seq,
                            (unsigned long long)c->next_seq);
    if (strcmp(prev, c->prev_hex) != 0)
        return chain_refuse(why, whylen, "prev does not match the hash of the line before (a "
                            "line was edited, deleted or inserted)");
    return 0;
}

int audit_chain_check(struct audit_chain *c, const char *line, size_t len,
                      audit_key_fn key_for, void *arg, char *why, size_t whylen)
{
    json_object *o;
    uint64_t seq = 0;
    bool checkpoint;
    int rc;

    if (len > AUDIT_LINE_MAX)
        return chain_refuse(why, whylen, "longer than the line limit (%u bytes)",
                            AUDIT_LINE_MAX);
    if (memchr(line, '\0', len))
        return chain_refuse(why, whylen, "contains a NUL byte");
    o = audit_line_parse(line, len);
    if (!o)
        return chain_refuse(why, whylen, "not a JSON object");
    checkpoint = is_checkpoint(o);
    rc = place_ok(c, o, &seq, why, whylen);
    rc = rc ? rc : cp_ok(c, o, why, whylen);
    if (!rc && checkpoint)
        rc = checkpoint_ok(c, o, key_for, arg, why, whylen);
    json_object_put(o);
    if (rc)
        return rc;
    if (checkpoint)
        c->last_cp = seq;
    c->next_seq = seq + 1;
    audit_line_hash(line, len, c->prev_hex);
    return 0;
}

/* ---------- verification of a whole spool ---------- */

struct verifier {
    const char *path;
    EVP_PKEY *(*key_for)(void *arg, const char *account);
    void *arg;
    uint64_t lineno;
    struct audit_chain chain;
};

static int bad_line(const struct verifier *v, const char *what)
{
    return pfs_err(-EBADMSG, "audit spool %s: line %llu: %s", v->path,
                   (unsigned long long)v->lineno, what);
}

/* audit_verify's callers keep their keys; the chain check frees the one it
 * gets, so hand it a reference of its own. */
static EVP_PKEY *verifier_key(void *arg, const char *vault, const char *account)
{
    const struct verifier *v = arg;
    EVP_PKEY *key = v->key_for(v->arg, account);

    (void)vault;
    return key && EVP_PKEY_up_ref(key) == 1 ? key : NULL;
}

/* Read one line into buf (cap bytes); 1 = got one, 0 = EOF, <0 = error. */
static int read_line(struct verifier *v, FILE *f, char *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    int c;

    while ((c = getc_unlocked(f)) != EOF && c != '\n') {
        if (n == cap)
            return bad_line(v, "longer than the line limit");
        buf[n++] = (char)c;
    }
    if (ferror(f))
        return pfs_err(-EIO, "cannot read audit spool %s: %s", v->path, strerror(errno));
    if (c == EOF && n == 0)
        return 0;
    if (c == EOF)
        return bad_line(v, "incomplete last line (no newline): interrupted write or truncation");
    *len = n;
    return 1;
}

/* With keys: the lines after the last checkpoint are protected by the chain
 * alone, so there may be only as many as honest writers leave unsigned. */
static int verify_signed_tail(const struct verifier *v)
{
    uint64_t last = v->chain.next_seq - 1, run = last - v->chain.last_cp;
    char since[48];

    if (!v->key_for || run <= (uint64_t)AUDIT_SEAL_EVERY + AUDIT_UNSIGNED_SLACK)
        return 0;
    if (v->chain.last_cp)
        snprintf(since, sizeof since, "at line %llu", (unsigned long long)v->chain.last_cp);
    else
        snprintf(since, sizeof since, "none in the spool");
    return pfs_err(-EBADMSG, "audit spool %s: line %llu: %llu events after the last signed "
                   "checkpoint (%s), more than the %u allowed: checkpoints were removed and "
                   "the chain rewritten, or writers without a signing key appended that many; "
                   "compare with the audit receiver's copy", v->path,
                   (unsigned long long)last, (unsigned long long)run, since,
                   AUDIT_SEAL_EVERY + AUDIT_UNSIGNED_SLACK);
}

int audit_verify(const char *spool_path,
                 EVP_PKEY *(*key_for)(void *arg, const char *account), void *arg,
                 uint64_t *events)
{
    struct verifier v = { .path = spool_path, .key_for = key_for, .arg = arg };
    char *buf = malloc(AUDIT_LINE_MAX), why[512];
    FILE *f;
    size_t len = 0;
    int rc;

    if (events)
        *events = 0;
    if (!buf)
        return pfs_err(-ENOMEM, "out of memory verifying %s", spool_path);
    f = fopen(spool_path, "re");
    if (!f) {
        rc = -errno;
        free(buf);
        return pfs_err(rc, "cannot open audit spool %s: %s", spool_path, strerror(-rc));
    }
    audit_chain_init(&v.chain, NULL);
    v.chain.skip_signatures = key_for == NULL;
    for (;;) {
        v.lineno++;
        rc = read_line(&v, f, buf, AUDIT_LINE_MAX, &len);
        if (rc <= 0)
            break;
        if (audit_chain_check(&v.chain, buf, len, verifier_key, &v, why, sizeof why)) {
            rc = bad_line(&v, why);
            break;
        }
        if (events)
            (*events)++;
    }
    if (rc == 0)
        rc = verify_signed_tail(&v);
    fclose(f);
    free(buf);
    return rc;
}
