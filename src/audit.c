#include "config.h"

/* Audit spool, formats 3 to 6: one JSON object per line.  Every line
 * carries the SHA-256 of the spool's previous line (prev) and of its
 * session's previous line (sprev); a signing session checkpoints its own
 * chain: first under its account's RSA key (signing the session-start and
 * the Ed25519 key of the session it names, format 6), then under that
 * session key.  The sealer thread makes those signatures with the mutex
 * dropped, over the chain as it stood when it
 * began, and appends the checkpoint (naming the line it signed, format 5)
 * after the lines that came meanwhile.  Appends are group committed: a
 * caller writes its line under the mutex (and flock for other processes),
 * then waits until one fdatasync that began after its write has completed;
 * whoever finds no flush running becomes the flusher for everyone queued
 * behind it.  Any write or sync failure is sticky: from then on every
 * event fails, so the filesystem fails closed.  Layout:
 * docs/format-audit.md. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/crypto.h>
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
#include "audit_names.h"
#include "audit_proof.h"
#include "crashpoint.h"
#include "crypto.h"
#include "error.h"
#include "fileio.h"

#define HASH_HEX (2 * SHA256_LEN)
#define SESSION_HEX 32
#define SIG_MAX 1024                    /* RSA-8192 */
#define CHECKPOINT_LABEL_V2 "pactfs audit checkpoint v1\n"
#define CHECKPOINT_LABEL "pactfs audit session checkpoint v3\n"
/* Format 5: the checkpoint names the line it signs (signed_sseq), an
 * earlier line of its session, so it can be signed off the append path. */
#define CHECKPOINT_LABEL_V5 "pactfs audit session checkpoint v5\n"
/* Format 6: every checkpoint of a session with a session key (ckey), its
 * first (RSA, certifying the key) and the later ones (Ed25519). */
#define CHECKPOINT_LABEL_V6 "pactfs audit session checkpoint v6\n"

/* This process's id, for the checks that tell a fork's child from the
 * process that started the committer and sealer threads: kept, and renewed
 * in a fork's child, because asking the kernel on every event cost about
 * 1 % of the daemon's time in tar x (four checks per event). */
static pid_t self_pid_cached;
static pthread_once_t self_pid_once = PTHREAD_ONCE_INIT;

static void self_pid_renew(void)
{
    self_pid_cached = getpid();
}

static void self_pid_init(void)
{
    self_pid_renew();
    (void)pthread_atfork(NULL, NULL, self_pid_renew);
}

static pid_t self_pid(void)
{
    (void)pthread_once(&self_pid_once, self_pid_init);
    return self_pid_cached;
}

struct audit {
    pthread_mutex_t mu;
    pthread_cond_t flushed_cv;
    pthread_cond_t seal_cv;
    pthread_cond_t sealed_cv;   /* a checkpoint was appended (or the spool failed) */
    int fd;
    char *path;
    char *vault_id;
    char *account;
    uint64_t account_id;
    char *proof;
    char host[256];
    EVP_PKEY *signer;
    EVP_PKEY *ckey;             /* this session's Ed25519 checkpoint key */
    unsigned seal_every;

    /* the spool's tail, valid while known_size equals the file's size */
    uint64_t next_seq;
    char prev_hex[HASH_HEX + 1];
    off_t known_size;

    /* this handle's session */
    char session[SESSION_HEX + 1];
    uint64_t next_sseq;
    char sprev[HASH_HEX + 1];
    unsigned run;               /* events after the last line a checkpoint signed */
    struct timespec run_start;  /* CLOCK_MONOTONIC of the oldest of them */
    uint64_t covered_sseq;      /* sseq of the last line a checkpoint signed */
    bool signing;               /* the sealer signs a snapshot of the chain now */
    unsigned signing_run;       /* ... which covers this many of the run's events */
    struct timespec next_start; /* CLOCK_MONOTONIC of the first event after it */
    unsigned seal_margin;       /* start signing this many events before the bound */

    /* the sealer: checkpoints within AUDIT_SEAL_MS of an event */
    pthread_t sealer;
    pid_t sealer_pid;           /* process that started it (0: none) */
    bool sealer_stop;
    bool closing;               /* audit_close: no new sealer */

    /* group commit: tickets count lines this handle appended */
    uint64_t appended;
    uint64_t durable;
    bool flushing;
    int sticky_err;
    uint64_t flush_begun;       /* fdatasyncs started (one at a time) */
    uint64_t flush_done;        /* the last one completed */
    off_t flushed_size;         /* spool size when the last completed one began */

    /* deferred group commit (audit_set_group_commit): events are answered
     * once written; the committer makes them durable within commit_ms */
    unsigned commit_ms;         /* 0: every event waits for its fdatasync */
    pthread_cond_t commit_cv;
    pthread_t committer;
    pid_t committer_pid;        /* process that started it (0: none) */
    bool committer_stop;
    bool committer_idle;        /* waiting for an event (not in a window) */
    bool spool_held;            /* flock kept since our last line (spool_release) */

    /* names sealed to the auditors (audit_names.h) */
    bool sealing;
    uint8_t names_key[AUDIT_NAMES_SESSION_KEY];
    char *names_wrapped;        /* hex, in the session-start */
    char names_kid[AUDIT_NAMES_KID_HEX + 1];
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

/* Best effort: a process may be gone by the time we look.  One open and
 * read, no stdio stream (this runs for every event: fopen's buffer
 * allocation was 3 % of the daemon's CPU under tar x). */
static void process_name_read(pid_t pid, char *out, size_t len)
{
    char p[64];
    ssize_t n;
    int fd;

    out[0] = '\0';
    snprintf(p, sizeof p, "/proc/%ld/comm", (long)pid);
    fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    do
        n = read(fd, out, len - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    out[n > 0 ? n : 0] = '\0';
    out[strcspn(out, "\n")] = '\0';
}

/* The names read in the last PROCESS_NAME_TTL_MS, by pid: tar x makes 5
 * events per file, and the open, read and close of /proc/PID/comm for
 * each were 3.7 % of the daemon's CPU.  A process that renames itself or
 * execs another program may show its former name for that long (the name
 * is the process's own claim anyway: prctl sets any; uid and pid are the
 * kernel's); a pid is not reused within it (pid_max wraps far slower). */
#define AUDIT_PROCESS_MAX 64   /* comm is 16 bytes; room to spare */
#define PROCESS_NAME_TTL_MS 100
#define PROCESS_NAME_SLOTS 32
static struct {
    pthread_mutex_t lock;
    struct {
        pid_t pid;
        int64_t at_ms;
        char name[AUDIT_PROCESS_MAX];
    } slot[PROCESS_NAME_SLOTS];
} names_seen = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void process_name(pid_t pid, char *out, size_t len)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    int64_t ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    unsigned i = (unsigned)pid % PROCESS_NAME_SLOTS;
    int hit = 0;

    pthread_mutex_lock(&names_seen.lock);
    if (pid > 0 && names_seen.slot[i].pid == pid && ms - names_seen.slot[i].at_ms < PROCESS_NAME_TTL_MS) {
        snprintf(out, len, "%s", names_seen.slot[i].name);
        hit = 1;
    }
    pthread_mutex_unlock(&names_seen.lock);
    if (hit)
        return;
    process_name_read(pid, out, len);
    if (pid <= 0 || !out[0])
        return;   /* gone: nothing to remember */
    pthread_mutex_lock(&names_seen.lock);
    names_seen.slot[i].pid = pid;
    names_seen.slot[i].at_ms = ms;
    snprintf(names_seen.slot[i].name, sizeof names_seen.slot[i].name, "%s", out);
    pthread_mutex_unlock(&names_seen.lock);
}

/* "ok", "denied" (EACCES, EPERM) or "error"; errno_name the errno's name. */
static const char *result_name(int result, char *errno_name, size_t len)
{
    const char *name = result < 0 ? strerrorname_np(-result) : NULL;

    errno_name[0] = '\0';
    if (result == 0)
        return "ok";
    if (name)
        snprintf(errno_name, len, "%s", name);
    else
        snprintf(errno_name, len, "E%d", result < 0 ? -result : result);
    return result == -EACCES || result == -EPERM ? "denied" : "error";
}

static void ns_to_rfc3339(int64_t ns, char *out, size_t len)
{
    time_t s = (time_t)(ns / 1000000000);
    long frac = (long)(ns % 1000000000);
    struct tm tm;
    char base[32];

    if (frac < 0) {
        frac += 1000000000;
        s--;
    }
    gmtime_r(&s, &tm);
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, len, "%s.%09ldZ", base, frac);
}

/* ---------- event lines ----------
 *
 * Lines are written byte for byte as json-c writes them (compact, "/" not
 * escaped; docs/format-audit.md), without building json-c objects: that
 * cost 5.8 % of the daemon's CPU under tar x.  An event is built outside
 * the lock without its place in the chains; seq, sseq, prev and sprev are
 * spliced in at the cuts when it is appended.  test_audit checks the bytes
 * against json-c's own serialisation of every line. */

struct evline {
    char *p;
    size_t len, cap;
    size_t cut_seq, cut_sseq, cut_prev;   /* where seq, sseq and prev/sprev go */
    bool oom;
};

static void ev_raw(struct evline *l, const char *s, size_t n)
{
    if (l->oom)
        return;
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap : 512;
        char *p;

        while (cap < l->len + n + 1)
            cap *= 2;
        if (!(p = realloc(l->p, cap))) {
            l->oom = true;
            return;
        }
        l->p = p;
        l->cap = cap;
    }
    memcpy(l->p + l->len, s, n);
    l->len += n;
    l->p[l->len] = '\0';
}

/* '{' or ',' then "key": */
static void ev_key(struct evline *l, const char *key)
{
    ev_raw(l, l->len ? ",\"" : "{\"", 2);
    ev_raw(l, key, strlen(key));
    ev_raw(l, "\":", 2);
}

/* A JSON string as json-c escapes it: ", \ and \b \f \n \r \t by name,
 * other bytes below 0x20 as \u00xx, everything else as is. */
static void ev_quoted(struct evline *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const char *run = s;

    ev_raw(l, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[7] = "\\";
        size_t n = 2;

        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        ev_raw(l, run, (size_t)(s - run));
        run = s + 1;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            n = 6;
        }
        ev_raw(l, esc, n);
    }
    ev_raw(l, run, (size_t)(s - run));
    ev_raw(l, "\"", 1);
}

static void ev_str(struct evline *l, const char *key, const char *val)
{
    ev_key(l, key);
    ev_quoted(l, val);
}

static void ev_u64(struct evline *l, const char *key, uint64_t v)
{
    char buf[24];

    ev_key(l, key);
    ev_raw(l, buf, (size_t)snprintf(buf, sizeof buf, "%" PRIu64, v));
}

static void ev_i64(struct evline *l, const char *key, int64_t v)
{
    char buf[24];

    ev_key(l, key);
    ev_raw(l, buf, (size_t)snprintf(buf, sizeof buf, "%" PRId64, v));
}

/* A service's own object (pactfs-keyd's "keyd"), as json-c writes it. */
static void ev_json(struct evline *l, const char *key, json_object *v)
{
    const char *s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
                                                   JSON_C_TO_STRING_NOSLASHESCAPE);

    if (!s) {
        l->oom = true;
        return;
    }
    ev_key(l, key);
    ev_raw(l, s, strlen(s));
}

static void evline_free(struct evline *l)
{
    if (l) {
        free(l->p);
        free(l);
    }
}

/* file, errno and the changed fields, after the common ones. */
static void add_details(struct evline *l, const char *errno_name, const struct audit_detail *d)
{
    char buf[48];

    if (errno_name[0])
        ev_str(l, "errno", errno_name);
    if (!d)
        return;
    if (d->file)
        ev_u64(l, "file", d->file);
    if (d->dest)
        ev_str(l, "dest", d->dest);
    if (d->set & AUDIT_SET_MODE) {
        snprintf(buf, sizeof buf, "%04o", d->mode & 07777);
        ev_str(l, "mode", buf);
    }
    if (d->set & AUDIT_SET_OWNER) {
        snprintf(buf, sizeof buf, "%u:%u", d->uid, d->gid);
        ev_str(l, "owner", buf);
    }
    if (d->set & AUDIT_SET_ATIME) {
        ns_to_rfc3339(d->atime_ns, buf, sizeof buf);
        ev_str(l, "atime", buf);
    }
    if (d->set & AUDIT_SET_MTIME) {
        ns_to_rfc3339(d->mtime_ns, buf, sizeof buf);
        ev_str(l, "mtime", buf);
    }
    if (d->set & AUDIT_SET_SIZE)
        ev_u64(l, "size", d->size);
    if (d->before)
        ev_str(l, "before", d->before);
    if (d->after)
        ev_str(l, "after", d->after);
    if (d->extra_key && d->extra)
        ev_json(l, d->extra_key, d->extra);
}

/* {"path":..,"dest":..} of a sealing session, sealed to the auditors. */
static int seal_names(const struct audit *a, const char *path, const char *dest, char **names)
{
    struct evline inner = { 0 };
    int rc;

    ev_str(&inner, "path", path ? path : "");
    if (dest)
        ev_str(&inner, "dest", dest);
    ev_raw(&inner, "}", 1);
    rc = inner.oom ? -ENOMEM
                   : audit_names_seal(a->names_key, a->vault_id, a->session, inner.p, names);
    free(inner.p);
    return rc;
}

/* The event without its place in the chains: seq, sseq, prev and sprev
 * are spliced in at the cuts when it is appended (under the lock).  More
 * fields may follow (ev_*); the closing brace comes at the append. */
static struct evline *event_object(const struct audit *a, const struct audit_ctx *who,
                                   const char *op, const char *path, int result,
                                   uint64_t bytes, const struct audit_detail *d)
{
    struct evline *l;
    struct audit_detail nodest;
    char *names = NULL;
    uid_t uid = who ? who->uid : getuid();
    pid_t pid = who ? who->pid : self_pid();
    char when[48], proc[AUDIT_PROCESS_MAX], errno_name[32];
    const char *res = result_name(result, errno_name, sizeof errno_name);

    /* A sealing session: path and dest only inside "names". */
    if (a->sealing && ((path && *path) || (d && d->dest))) {
        if (seal_names(a, path, d ? d->dest : NULL, &names))
            return NULL;
        path = "";
        if (d) {
            nodest = *d;
            nodest.dest = NULL;
            d = &nodest;
        }
    }
    if (!(l = calloc(1, sizeof *l))) {
        free(names);
        return NULL;
    }
    rfc3339_now(when, sizeof when);
    process_name(pid, proc, sizeof proc);
    ev_i64(l, "v", AUDIT_FORMAT);
    ev_key(l, "seq");
    l->cut_seq = l->len;
    ev_str(l, "time", when);
    ev_str(l, "vault", a->vault_id);
    ev_str(l, "host", a->host);
    ev_str(l, "session", a->session);
    ev_key(l, "sseq");
    l->cut_sseq = l->len;
    ev_str(l, "account", a->account);
    ev_i64(l, "uid", uid);
    ev_i64(l, "pid", pid);
    ev_str(l, "process", proc);
    ev_str(l, "op", op ? op : "");
    ev_str(l, "path", path ? path : "");
    ev_str(l, "result", res);
    ev_u64(l, "bytes", bytes);
    ev_raw(l, ",\"prev\":\"", 9);
    l->cut_prev = l->len;
    add_details(l, errno_name, d);
    if (names)
        ev_str(l, "names", names);
    free(names);
    if (l->oom) {
        evline_free(l);
        return NULL;
    }
    return l;
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

static bool op_is(json_object *o, const char *name)
{
    const char *op = audit_field_str(o, "op");

    return op && strcmp(op, name) == 0;
}

/* Continue the spool chain from its last line, which must be complete. */
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
                       "write?): run 'pactfs-admin audit-verify', then move the spool aside",
                       a->path);
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
                     "'pactfs-admin audit-verify'", a->path);
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

/* Under the mutex: the spool's flock, so another process's lines never
 * interleave with ours, and its tail.  Kept from our last line on, nobody
 * else can have appended: neither flock nor fstat is needed again. */
static int spool_acquire(struct audit *a)
{
    if (a->spool_held)
        return 0;
    while (flock(a->fd, LOCK_EX) != 0)
        if (errno != EINTR)
            return pfs_err(-errno, "cannot lock audit spool %s: %s", a->path, strerror(errno));
    int rc = sync_tail(a);
    if (rc)
        flock(a->fd, LOCK_UN);
    return rc;
}

/* Under the mutex, after spool_acquire.  In a daemon with the group commit,
 * the lock is kept after a line while a flush is due (one comes within
 * commit_ms and releases it, spool_unhold), so a burst of events takes one
 * flock and one fstat instead of one each: another process (pactfs-admin)
 * appending to the same spool waits at most that long. */
static void spool_release(struct audit *a, int ok)
{
    if (ok && a->commit_ms && a->committer_pid == self_pid() && !a->sticky_err &&
        a->durable < a->appended) {
        a->spool_held = true;
        return;
    }
    a->spool_held = false;
    flock(a->fd, LOCK_UN);
}

/* Under the mutex: let other processes append again. */
static void spool_unhold(struct audit *a)
{
    if (a->spool_held) {
        a->spool_held = false;
        flock(a->fd, LOCK_UN);
    }
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
    audit_line_hash(line, len, a->sprev);
    a->known_size += (off_t)total;
    a->next_seq++;
    a->next_sseq++;
    return 0;
}

/* Give the event its place in both chains and append it. */
static int append_object(struct audit *a, const struct evline *l)
{
    char seq[24], sseq[24], *line;
    int nseq = snprintf(seq, sizeof seq, "%" PRIu64, a->next_seq);
    int nsseq = snprintf(sseq, sizeof sseq, "%" PRIu64, a->next_sseq);
    size_t len = l->len + (size_t)nseq + (size_t)nsseq + 2 * HASH_HEX + 13, at = 0;
    int rc;

    if (len > AUDIT_LINE_MAX)
        return pfs_err(-E2BIG, "audit event of %zu bytes exceeds the %u byte line limit",
                       len, AUDIT_LINE_MAX);
    if (!(line = malloc(len + 1)))
        return pfs_err(-ENOMEM, "out of memory writing an audit event");
#define PUT(src, n) (memcpy(line + at, (src), (n)), at += (n))
    PUT(l->p, l->cut_seq);
    PUT(seq, (size_t)nseq);
    PUT(l->p + l->cut_seq, l->cut_sseq - l->cut_seq);
    PUT(sseq, (size_t)nsseq);
    PUT(l->p + l->cut_sseq, l->cut_prev - l->cut_sseq);
    PUT(a->prev_hex, HASH_HEX);
    PUT("\",\"sprev\":\"", 11);
    PUT(a->sprev, HASH_HEX);
    PUT("\"", 1);
    PUT(l->p + l->cut_prev, l->len - l->cut_prev);
    PUT("}", 1);
#undef PUT
    rc = write_line(a, line, at);
    free(line);
    return rc;
}

/* What a checkpoint signs: a label (so the signature cannot pass for any
 * other kind of signed object), the vault, the session, and the hash of
 * the session's chain up to the line signed; format 5 also names that
 * line's sseq (signed_sseq > 0), format 6 (a session with a session key,
 * keyed) has a label of its own, format 3 signs the line just before the
 * checkpoint and format 2 (session NULL) the spool's. */
static int checkpoint_message(const char *vault, const char *session, uint64_t signed_sseq,
                              bool keyed, const char *hash_hex, char **msg, size_t *len)
{
    int n = !session ? asprintf(msg, "%s%s\n%s", CHECKPOINT_LABEL_V2, vault, hash_hex)
            : signed_sseq ? asprintf(msg, "%s%s\n%s\n%llu\n%s",
                                     keyed ? CHECKPOINT_LABEL_V6 : CHECKPOINT_LABEL_V5, vault,
                                     session, (unsigned long long)signed_sseq, hash_hex)
            : asprintf(msg, "%s%s\n%s\n%s", CHECKPOINT_LABEL, vault, session, hash_hex);

    if (n < 0)
        return pfs_err(-ENOMEM, "out of memory signing an audit checkpoint");
    *len = (size_t)n;
    return 0;
}

/* Under the mutex: the key of the session's next checkpoint.  The first
 * is the account's (it signs the session-start, and with it ckey); the
 * later ones are the session key's. */
static EVP_PKEY *checkpoint_key(const struct audit *a)
{
    return a->ckey && a->covered_sseq > 0 ? a->ckey : a->signer;
}

/* sig_sign's contract for either kind of key: *sig malloc'd. */
static int checkpoint_sign(EVP_PKEY *key, const char *msg, size_t msglen, uint8_t **sig,
                           size_t *siglen)
{
    if (EVP_PKEY_get_id(key) != EVP_PKEY_ED25519)
        return sig_sign(key, msg, msglen, sig, siglen);
    if (!(*sig = malloc(ED25519_SIG_LEN)))
        return pfs_err(-ENOMEM, "out of memory signing an audit checkpoint");
    *siglen = ED25519_SIG_LEN;
    return ed25519_sign(key, msg, msglen, *sig);
}

/* A checkpoint line signing the session's line signed_sseq, whose hash is
 * hash_hex, under key (checkpoint_key).  Touches nothing in a but
 * constants, so the sealer calls it with the mutex dropped: that is where
 * the signature is made. */
static struct evline *checkpoint_object(struct audit *a, EVP_PKEY *key, uint64_t signed_sseq,
                                        const char *hash_hex)
{
    struct evline *o = event_object(a, NULL, "checkpoint", "", 0, 0, NULL);
    uint8_t *sig = NULL;
    char *msg = NULL, *sig_hex = NULL;
    size_t msglen = 0, siglen = 0;
    int rc;

    if (!o) {
        pfs_err(-ENOMEM, "out of memory writing an audit checkpoint");
        return NULL;
    }
    rc = checkpoint_message(a->vault_id, a->session, signed_sseq, a->ckey != NULL, hash_hex,
                            &msg, &msglen);
    if (!rc)
        rc = checkpoint_sign(key, msg, msglen, &sig, &siglen);
    if (!rc && !(sig_hex = malloc(2 * siglen + 1)))
        rc = pfs_err(-ENOMEM, "out of memory writing an audit checkpoint");
    if (!rc) {
        hex_encode(sig, siglen, sig_hex);
        ev_u64(o, "signed_sseq", signed_sseq);
        ev_str(o, "signed_hash", hash_hex);
        ev_str(o, "sig", sig_hex);
        if (o->oom)
            rc = pfs_err(-ENOMEM, "out of memory writing an audit checkpoint");
    }
    free(sig_hex);
    free(sig);
    free(msg);
    if (rc) {
        evline_free(o);
        return NULL;
    }
    return o;
}

/* Under the mutex and flock: a checkpoint o that signs line signed_sseq,
 * which covered of the run's events end at. */
static int append_checkpoint_object(struct audit *a, const struct evline *o,
                                    uint64_t signed_sseq, unsigned covered)
{
    int rc = append_object(a, o);

    if (rc)
        return rc;
    a->appended++;
    a->covered_sseq = signed_sseq;
    a->run -= covered < a->run ? covered : a->run;
    if (a->run)
        a->run_start = a->next_start;
    pthread_cond_broadcast(&a->sealed_cv);
    return 0;
}

/* Under the mutex and flock: sign the session's last line here and now
 * (session start and end, and a handle with no sealer thread). */
static int append_checkpoint(struct audit *a)
{
    uint64_t pos = a->next_sseq - 1;
    struct evline *o = checkpoint_object(a, checkpoint_key(a), pos, a->sprev);
    int rc;

    if (!o)
        return -EIO;
    rc = append_checkpoint_object(a, o, pos, a->run);
    evline_free(o);
    return rc;
}

/* The sealer thread of this process signs in the background. */
static bool sealer_active(const struct audit *a)
{
    return a->sealer_pid == self_pid() && !a->sealer_stop;
}

/* The sealer starts signing once this many events are unsigned, so its
 * checkpoint lands before seal_every (AUDIT_SEAL_EVERY) are: seal_margin
 * events early, twice what came during its last signature and two more,
 * at least 4 and at most a quarter of seal_every (where it starts).  As
 * late as that, so checkpoints stay close to one per seal_every events
 * (an Ed25519 signature is some 50 us of CPU, the first, RSA, about 2 ms). */
static unsigned seal_trigger(const struct audit *a)
{
    unsigned most = a->seal_every / 4, m = a->seal_margin < most ? a->seal_margin : most;

    return a->seal_every - m ? a->seal_every - m : 1;
}

static bool checkpoint_due(const struct audit *a, bool force)
{
    if (!a->signer || a->run == 0)
        return false;
    return force || (a->run >= a->seal_every && !sealer_active(a));
}

/* Under the mutex: append o (and a checkpoint when due, or when forced)
 * holding flock so another process's lines never interleave with ours. */
static int append_locked(struct audit *a, const struct evline *o, bool force_checkpoint,
                         uint64_t *ticket)
{
    int rc = spool_acquire(a);

    if (rc)
        return rc;
    /* A full run and no sealer to sign it (it stopped while this event
     * waited for it): sign here, before the event would be one too many. */
    if (!rc && o && checkpoint_due(a, false))
        rc = append_checkpoint(a);
    if (!rc && o) {
        rc = append_object(a, o);
        if (!rc) {
            a->appended++;
            if (a->run++ == 0) {
                clock_gettime(CLOCK_MONOTONIC, &a->run_start);
                pthread_cond_signal(&a->seal_cv);
            } else if (a->run == seal_trigger(a)) {
                pthread_cond_signal(&a->seal_cv);
            }
            if (a->signing && a->run == a->signing_run + 1)
                clock_gettime(CLOCK_MONOTONIC, &a->next_start);
        }
    }
    if (!rc && checkpoint_due(a, force_checkpoint))
        rc = append_checkpoint(a);
    spool_release(a, rc == 0);
    *ticket = a->appended;
    return rc;
}
static void sealer_ensure(struct audit *a);
static void deadline_after(const struct timespec *start, unsigned ms, struct timespec *out);
static bool reached(const struct timespec *t);

/* Under the mutex (dropped during the call): one fdatasync of the spool,
 * covering every line written to the file before it began, by any handle
 * or process.  Failure is sticky. */
static void flush_locked(struct audit *a)
{
    uint64_t covers = a->appended;
    struct stat st;
    off_t size = fstat(a->fd, &st) == 0 ? st.st_size : -1;

    spool_unhold(a);   /* what it covers is written; others may go on */
    a->flushing = true;
    a->flush_begun++;
    pthread_mutex_unlock(&a->mu);
    crash_point("audit-before-fdatasync");
    int rc = fdatasync(a->fd) == 0 ? 0 : -errno;
    crash_point("audit-after-fdatasync");
    pthread_mutex_lock(&a->mu);
    a->flushing = false;
    a->flush_done = a->flush_begun;
    if (rc)
        a->sticky_err = pfs_err(rc, "cannot sync audit spool %s: %s; operations fail "
                                "until the filesystem is remounted", a->path, strerror(-rc));
    else {
        if (covers > a->durable)
            a->durable = covers;
        if (size >= 0)
            a->flushed_size = size;
    }
    pthread_cond_broadcast(&a->flushed_cv);
}

static int sticky_failure(const struct audit *a)
{
    return pfs_err(a->sticky_err, "audit spool %s failed earlier (%s); operations fail "
                   "until the filesystem is remounted", a->path, strerror(-a->sticky_err));
}

/* Under the mutex: return once a flush that started after our append has
 * completed.  The first waiter to find no flush running does it for all. */
static int wait_durable(struct audit *a, uint64_t ticket)
{
    while (a->durable < ticket && !a->sticky_err) {
        if (a->flushing)
            pthread_cond_wait(&a->flushed_cv, &a->mu);
        else
            flush_locked(a);
    }
    return a->durable >= ticket ? 0 : sticky_failure(a);
}

/* Under the mutex: with deferred group commit, an event is answered once
 * it is in the spool file (a process crash cannot lose it: the kernel
 * holds the page) and the committer makes it durable within commit_ms;
 * otherwise wait for its fdatasync. */
static int settle(struct audit *a, uint64_t ticket)
{
    if (a->commit_ms && a->committer_pid == self_pid()) {
        if (a->sticky_err)
            return sticky_failure(a);
        /* wake the committer only when it sleeps for want of work: a
         * wake per event would cost a context switch per operation */
        if (a->durable < ticket && a->committer_idle)
            pthread_cond_signal(&a->commit_cv);
        return 0;
    }
    return wait_durable(a, ticket);
}

/* Under the mutex: append o (and a due checkpoint); *ticket for
 * wait_durable.  Any failure but a refused event leaves the spool sticky. */
static int append_event_locked(struct audit *a, const struct evline *o,
                               bool force_checkpoint,
                               uint64_t *ticket)
{
    int rc;

    /* A full run: wait for the sealer's checkpoint (it started signing
     * AUDIT_SEAL_EVERY / 4 events ago), so no event stands unsigned beyond
     * the bound the verifier enforces. */
    while (o && a->signer && a->run >= a->seal_every && sealer_active(a) && !a->sticky_err) {
        pthread_cond_signal(&a->seal_cv);
        pthread_cond_wait(&a->sealed_cv, &a->mu);
    }
    if (a->sticky_err)
        return sticky_failure(a);
    rc = append_locked(a, o, force_checkpoint, ticket);
    /* An event refused before any byte was written (too long, no
     * memory) fails alone; anything else leaves the spool in doubt. */
    if (rc && rc != -E2BIG && rc != -ENOMEM)
        a->sticky_err = rc;
    return rc;
}

static int record(struct audit *a, const struct evline *o, bool force_checkpoint)
{
    uint64_t ticket = 0;
    int rc;

    pthread_mutex_lock(&a->mu);
    sealer_ensure(a);
    rc = append_event_locked(a, o, force_checkpoint, &ticket);
    if (!rc)
        rc = settle(a, ticket);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int audit_event(struct audit *a, const struct audit_ctx *who, const char *op,
                const char *path, int result, uint64_t bytes)
{
    return audit_event_detail(a, who, op, path, result, bytes, NULL);
}

int audit_event_detail(struct audit *a, const struct audit_ctx *who, const char *op,
                       const char *path, int result, uint64_t bytes,
                       const struct audit_detail *d)
{
    struct evline *o = event_object(a, who, op, path, result, bytes, d);
    int rc;

    if (!o)
        return pfs_err(-ENOMEM, "out of memory building an audit event");
    rc = record(a, o, false);
    evline_free(o);
    return rc;
}

/* Two phases for callers that append under their own lock (so the chain
 * follows their order) and wait for the fdatasync after dropping it: the
 * event is durable, and the operation may report success, only once
 * audit_event_wait returned 0. */
int audit_event_append(struct audit *a, const struct audit_ctx *who, const char *op,
                       const char *path, int result, uint64_t bytes, uint64_t *ticket)
{
    return audit_event_append_detail(a, who, op, path, result, bytes, NULL, ticket);
}

int audit_event_append_detail(struct audit *a, const struct audit_ctx *who, const char *op,
                              const char *path, int result, uint64_t bytes,
                              const struct audit_detail *d, uint64_t *ticket)
{
    struct evline *o = event_object(a, who, op, path, result, bytes, d);
    int rc;

    *ticket = 0;
    if (!o)
        return pfs_err(-ENOMEM, "out of memory building an audit event");
    pthread_mutex_lock(&a->mu);
    sealer_ensure(a);
    rc = append_event_locked(a, o, false, ticket);
    pthread_mutex_unlock(&a->mu);
    evline_free(o);
    return rc;
}

int audit_event_wait(struct audit *a, uint64_t ticket)
{
    int rc;

    pthread_mutex_lock(&a->mu);
    rc = settle(a, ticket);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int audit_sync(struct audit *a)
{
    struct stat st;
    uint64_t target;
    int rc = 0;

    pthread_mutex_lock(&a->mu);
    /* Nothing written to the file (by anyone) since the last completed
     * flush began, and none running: already durable. */
    if (!a->sticky_err && !a->flushing && a->durable >= a->appended &&
        fstat(a->fd, &st) == 0 && st.st_size == a->flushed_size)
        goto out;
    /* A flush running now may have begun before the caller's last write:
     * wait for one that begins after this call. */
    target = a->flush_begun + 1;
    while (a->flush_done < target && !a->sticky_err) {
        if (a->flushing)
            pthread_cond_wait(&a->flushed_cv, &a->mu);
        else
            flush_locked(a);
    }
out:
    if (a->sticky_err)
        rc = sticky_failure(a);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/* ---------- deferred group commit ---------- */

/* Make appended events durable no later than commit_ms after the first of
 * them: wait out the window (so more events share the fdatasync), then
 * flush.  The flush itself runs with the mutex dropped, so appends go on. */
static void *committer_run(void *arg)
{
    struct audit *a = arg;
    struct timespec due;

    pthread_mutex_lock(&a->mu);
    while (!a->committer_stop && !a->sticky_err) {
        if (a->durable >= a->appended) {
            a->committer_idle = true;
            pthread_cond_wait(&a->commit_cv, &a->mu);
            a->committer_idle = false;
            continue;
        }
        clock_gettime(CLOCK_MONOTONIC, &due);
        deadline_after(&due, a->commit_ms, &due);
        while (!a->committer_stop && !reached(&due))
            pthread_cond_timedwait(&a->commit_cv, &a->mu, &due);
        wait_durable(a, a->appended);
    }
    spool_unhold(a);   /* a failed spool flushes no more: never keep others out */
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* Stop one of the handle's threads (sealer, committer) if this process
 * started it. */
static void thread_stop(struct audit *a, pthread_t th, pid_t *pid, bool *stop,
                        pthread_cond_t *cv)
{
    pthread_mutex_lock(&a->mu);
    if (*pid != self_pid()) {
        pthread_mutex_unlock(&a->mu);
        return;
    }
    *stop = true;
    pthread_cond_broadcast(cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(th, NULL);
    pthread_mutex_lock(&a->mu);
    *pid = 0;
    pthread_mutex_unlock(&a->mu);
}

static void committer_stop(struct audit *a)
{
    thread_stop(a, a->committer, &a->committer_pid, &a->committer_stop, &a->commit_cv);
    pthread_mutex_lock(&a->mu);
    a->commit_ms = 0;
    /* what the committer had not flushed yet */
    wait_durable(a, a->appended);
    spool_unhold(a);
    pthread_mutex_unlock(&a->mu);
}

int audit_set_group_commit(struct audit *a, unsigned ms)
{
    int e;

    if (ms == 0) {
        committer_stop(a);
        return audit_sync(a);
    }
    pthread_mutex_lock(&a->mu);
    a->commit_ms = ms > AUDIT_COMMIT_MS_MAX ? AUDIT_COMMIT_MS_MAX : ms;
    if (a->committer_pid == self_pid()) {
        pthread_mutex_unlock(&a->mu);
        return 0;
    }
    a->committer_stop = false;
    e = pthread_create(&a->committer, NULL, committer_run, a);
    if (e == 0)
        a->committer_pid = self_pid();
    else
        a->commit_ms = 0;
    pthread_mutex_unlock(&a->mu);
    return e ? pfs_err(-e, "cannot start the audit committer thread: %s", strerror(e)) : 0;
}

/* ---------- the sealer ---------- */

static void deadline_after(const struct timespec *start, unsigned ms, struct timespec *out)
{
    out->tv_sec = start->tv_sec + ms / 1000;
    out->tv_nsec = start->tv_nsec + (long)(ms % 1000) * 1000000L;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000L;
    }
}

static bool reached(const struct timespec *t)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

/* Under the mutex (dropped while signing): sign the session's chain as it
 * stands, then append the checkpoint after whatever lines came meanwhile.
 * Events go on being appended and answered while the signature is made. */
static void seal_in_background(struct audit *a)
{
    uint64_t pos = a->next_sseq - 1, ticket;
    EVP_PKEY *key = checkpoint_key(a);
    char hash[HASH_HEX + 1];
    struct evline *o;
    int rc = 0;

    memcpy(hash, a->sprev, sizeof hash);
    a->signing = true;
    a->signing_run = a->run;
    pthread_mutex_unlock(&a->mu);
    delay_point("audit-seal-sign");
    o = checkpoint_object(a, key, pos, hash);
    pthread_mutex_lock(&a->mu);
    a->signing = false;
    if (!o)
        rc = -EIO;
    /* a checkpoint made meanwhile (at close) may already cover pos */
    else if (!a->sticky_err && pos > a->covered_sseq) {
        rc = spool_acquire(a);
        if (!rc) {
            rc = append_checkpoint_object(a, o, pos, a->signing_run);
            spool_release(a, rc == 0);
            /* a->run: the events that came while it was signed */
            a->seal_margin = 2 * a->run + 2 < 4 ? 4 : 2 * a->run + 2;
        }
    }
    evline_free(o);
    if (rc && !a->sticky_err)
        a->sticky_err = rc;
    if (rc) {
        pthread_cond_broadcast(&a->sealed_cv);
        pthread_cond_broadcast(&a->flushed_cv);
        return;
    }
    ticket = a->appended;
    settle(a, ticket);
}

/* Checkpoint the session no later than AUDIT_SEAL_MS after its oldest
 * unsigned event, so a crash leaves at most that much unsigned, and start
 * signing once seal_trigger events are unsigned. */
static void *sealer_run(void *arg)
{
    struct audit *a = arg;
    struct timespec due;

    pthread_mutex_lock(&a->mu);
    while (!a->sealer_stop && !a->sticky_err) {
        if (a->run == 0) {
            pthread_cond_wait(&a->seal_cv, &a->mu);
            continue;
        }
        /* a little early, so the bound holds with the signing time */
        deadline_after(&a->run_start, AUDIT_SEAL_MS - 200, &due);
        if (a->run < seal_trigger(a) && !reached(&due)) {
            pthread_cond_timedwait(&a->seal_cv, &a->mu, &due);
            continue;
        }
        seal_in_background(a);
    }
    /* appenders waiting for a checkpoint make it themselves from now on */
    pthread_cond_broadcast(&a->sealed_cv);
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* Under the mutex.  Started at the first event of this process: a handle
 * opened before a fork has no thread in the child. */
static void sealer_ensure(struct audit *a)
{
    if (!a->signer || a->closing || a->sealer_pid == self_pid())
        return;
    a->sealer_stop = false;
    a->signing = false;         /* a fork's copy of the parent's sealer state */
    if (pthread_create(&a->sealer, NULL, sealer_run, a) == 0)
        a->sealer_pid = self_pid();
}

static void sealer_stop(struct audit *a)
{
    thread_stop(a, a->sealer, &a->sealer_pid, &a->sealer_stop, &a->seal_cv);
}

/* ---------- open / close ---------- */

static void audit_free(struct audit *a)
{
    if (a->fd >= 0)
        close(a->fd);
    EVP_PKEY_free(a->signer);
    EVP_PKEY_free(a->ckey);
    pthread_cond_destroy(&a->seal_cv);
    pthread_cond_destroy(&a->sealed_cv);
    pthread_cond_destroy(&a->commit_cv);
    pthread_cond_destroy(&a->flushed_cv);
    pthread_mutex_destroy(&a->mu);
    free(a->path);
    free(a->vault_id);
    free(a->account);
    free(a->proof);
    free(a->names_wrapped);
    OPENSSL_cleanse(a->names_key, sizeof a->names_key);
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

/* The session-start event, and for a signing session its first checkpoint
 * (which signs the start, proof included). */
static int session_start(struct audit *a)
{
    struct evline *o = event_object(a, NULL, "session-start", "", 0, 0, NULL);
    int rc = 0;

    if (!o)
        return pfs_err(-ENOMEM, "out of memory starting an audit session");
    ev_u64(o, "account_id", a->account_id);
    if (a->proof)
        ev_str(o, "proof", a->proof);
    if (a->ckey) {
        uint8_t pub[ED25519_PUB_LEN];
        char hex[2 * ED25519_PUB_LEN + 1];

        if ((rc = ed25519_public_raw(a->ckey, pub))) {
            evline_free(o);
            return rc;
        }
        hex_encode(pub, sizeof pub, hex);
        ev_str(o, "ckey", hex);
    }
    if (a->sealing) {
        ev_str(o, "names_kid", a->names_kid);
        ev_str(o, "names_key", a->names_wrapped);
    }
    if (o->oom)
        rc = pfs_err(-ENOMEM, "out of memory starting an audit session");
    if (!rc)
        rc = record(a, o, true);
    evline_free(o);
    return rc;
}

/* The session's Ed25519 checkpoint key: given, or made from 32 random
 * bytes (OpenSSL keeps the private half in its secure heap where the
 * process has one, as it does the account key). */
static int session_key_take(struct audit *a, EVP_PKEY *given)
{
    uint8_t seed[32];

    if (given) {
        if (EVP_PKEY_get_id(given) != EVP_PKEY_ED25519)
            return pfs_err(-EINVAL, "an audit session key must be an Ed25519 key");
        if (EVP_PKEY_up_ref(given) != 1)
            return pfs_err(-ENOMEM, "cannot take a reference to the audit session key");
        a->ckey = given;
        return 0;
    }
    if (crypto_random(seed, sizeof seed) != 0)
        return pfs_err(-EIO, "no randomness for an audit session key");
    a->ckey = ed25519_from_seed(seed);
    OPENSSL_cleanse(seed, sizeof seed);
    return a->ckey ? 0 : pfs_err(-EIO, "cannot make an audit session key");
}

static int identity_take(struct audit *a, const struct audit_identity *id)
{
    a->account = strdup(id && id->account ? id->account : "");
    if (!a->account)
        return -ENOMEM;
    if (!id || !id->signer)
        return 0;
    if (!id->proof || !*id->proof)
        return pfs_err(-EINVAL, "a signing audit session needs its account's registry proof");
    a->account_id = id->account_id;
    if (!(a->proof = strdup(id->proof)))
        return -ENOMEM;
    if (EVP_PKEY_up_ref(id->signer) != 1)
        return pfs_err(-ENOMEM, "cannot take a reference to the audit signing key");
    a->signer = id->signer;
    return session_key_take(a, id->checkpoint_key);
}

int audit_open(const char *spool_path, const char *vault_id, const struct audit_identity *id,
               struct audit **out)
{
    struct audit *a = calloc(1, sizeof *a);
    pthread_condattr_t ca;
    uint8_t sid[SESSION_HEX / 2];
    int rc;

    *out = NULL;
    if (!a)
        return pfs_err(-ENOMEM, "out of memory opening audit spool %s", spool_path);
    a->fd = -1;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->flushed_cv, NULL);
    pthread_cond_init(&a->sealed_cv, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->seal_cv, &ca);
    pthread_cond_init(&a->commit_cv, &ca);
    pthread_condattr_destroy(&ca);
    a->seal_every = AUDIT_SEAL_EVERY;
    a->seal_margin = AUDIT_SEAL_EVERY / 4;
    a->next_sseq = 1;
    zero_hash_hex(a->sprev);
    a->path = strdup(spool_path);
    a->vault_id = strdup(vault_id ? vault_id : "");
    rc = !a->path || !a->vault_id ? -ENOMEM : identity_take(a, id);
    if (rc == 0 && crypto_random(sid, sizeof sid) != 0)
        rc = pfs_err(-EIO, "no randomness for an audit session id");
    if (rc) {
        audit_free(a);
        return rc == -ENOMEM ? pfs_err(rc, "out of memory opening audit spool %s", spool_path)
                             : rc;
    }
    hex_encode(sid, sizeof sid, a->session);
    if (id && id->names_pub) {   /* a session key for the names, wrapped to the auditors */
        if (crypto_random(a->names_key, sizeof a->names_key) != 0 ||
            audit_names_wrap_session(id->names_pub, a->vault_id, a->session, a->names_key,
                                     &a->names_wrapped) != 0) {
            audit_free(a);
            return pfs_err(-EIO, "cannot seal this audit session's names to the audit names "
                           "key");
        }
        snprintf(a->names_kid, sizeof a->names_kid, "%s", id->names_kid ? id->names_kid : "");
        a->sealing = true;
    }
    if (gethostname(a->host, sizeof a->host - 1) != 0)
        snprintf(a->host, sizeof a->host, "unknown");
    if ((rc = open_spool(a)) || (rc = session_start(a))) {
        sealer_stop(a);
        audit_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

const char *audit_session_id(const struct audit *a)
{
    return a->session;
}

void audit_set_seal_every(struct audit *a, unsigned n)
{
    pthread_mutex_lock(&a->mu);
    /* Above AUDIT_SEAL_EVERY the session would fail verification. */
    a->seal_every = n < 1 ? 1 : n > AUDIT_SEAL_EVERY ? AUDIT_SEAL_EVERY : n;
    pthread_mutex_unlock(&a->mu);
}

void audit_close(struct audit *a)
{
    struct evline *o;

    if (!a)
        return;
    a->closing = true;
    sealer_stop(a);
    committer_stop(a);
    if (!a->sticky_err && (o = event_object(a, NULL, "session-end", "", 0, 0, NULL))) {
        record(a, o, true);   /* failure already recorded in pfs_err */
        evline_free(o);
    }
    audit_free(a);
}

/* ---------- the chain rules ---------- */

/* Lines of a signed session that may follow the last line a checkpoint
 * signed: AUDIT_SEAL_EVERY events and the checkpoints among them (a writer
 * leaves one or two; a spool with more is refused). */
#define AUDIT_WINDOW (2 * AUDIT_SEAL_EVERY + 8)

/* A session between its session-start and its close. */
struct audit_session_state {
    char id[SESSION_HEX + 1];
    char account[256];
    uint64_t account_id;
    uint64_t next_sseq;
    char prev[HASH_HEX + 1];
    unsigned run;               /* lines since its last checkpoint (all, if unsigned) */
    bool is_signed;             /* opened with a registry proof */
    bool ended;                 /* session-end seen: only its checkpoint may follow */
    EVP_PKEY *key;              /* the signer's key (from the proof) */
    bool has_ckey;              /* format 6: checkpoints after the first are ckey's */
    uint8_t ckey[ED25519_PUB_LEN];
    /* Signed sessions: the lines a format 5 checkpoint may still sign, those
     * after the last line signed (covered), sseq q at q % AUDIT_WINDOW. */
    uint64_t covered;
    uint8_t hash[AUDIT_WINDOW][SHA256_LEN];
    bool is_event[AUDIT_WINDOW];
};

void audit_chain_init(struct audit_chain *c, const char *vault, const char *root_fp)
{
    memset(c, 0, sizeof *c);
    c->next_seq = 1;
    zero_hash_hex(c->prev_hex);
    snprintf(c->vault, sizeof c->vault, "%s", vault ? vault : "");
    snprintf(c->root_fp, sizeof c->root_fp, "%s", root_fp ? root_fp : "");
}

void audit_chain_free(struct audit_chain *c)
{
    for (size_t i = 0; i < c->nopen; i++)
        EVP_PKEY_free(c->open[i].key);
    free(c->open);
    c->open = NULL;
    c->nopen = c->capopen = 0;
}

int audit_chain_copy(struct audit_chain *dst, const struct audit_chain *src)
{
    *dst = *src;
    dst->open = NULL;
    if (src->capopen) {
        dst->open = malloc(src->capopen * sizeof *dst->open);
        if (!dst->open) {
            dst->nopen = dst->capopen = 0;
            return -ENOMEM;
        }
        memcpy(dst->open, src->open, src->nopen * sizeof *dst->open);
    }
    for (size_t i = 0; i < dst->nopen; i++)
        if (dst->open[i].key && EVP_PKEY_up_ref(dst->open[i].key) != 1)
            dst->open[i].key = NULL;
    return 0;
}

static struct audit_session_state *session_find(struct audit_chain *c, const char *id)
{
    for (size_t i = 0; i < c->nopen; i++)
        if (strcmp(c->open[i].id, id) == 0)
            return &c->open[i];
    return NULL;
}

static void session_remove(struct audit_chain *c, struct audit_session_state *s)
{
    EVP_PKEY_free(s->key);
    *s = c->open[--c->nopen];
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

/* key: an RSA key, or NULL for the Ed25519 session key ckey. */
static int signature_ok(EVP_PKEY *key, const uint8_t *ckey, const char *vault,
                        const char *session, uint64_t signed_sseq, bool keyed,
                        const char *hash, const char *sig_hex)
{
    uint8_t sig[SIG_MAX];
    size_t siglen = strlen(sig_hex) / 2, msglen = 0;
    char *msg = NULL;
    int rc;

    if (strlen(sig_hex) % 2 || siglen == 0 || siglen > SIG_MAX ||
        hex_decode(sig_hex, sig, siglen) != 0)
        return -EINVAL;
    rc = checkpoint_message(vault, session, signed_sseq, keyed, hash, &msg, &msglen);
    if (!rc)
        rc = key ? sig_verify(key, msg, msglen, sig, siglen)
                 : ed25519_verify(ckey, msg, msglen, sig, siglen);
    free(msg);
    pfs_err_clear();
    return rc;
}

/* ---- format 2: one file-wide chain of checkpoints naming their signer ---- */

static int v2_checkpoint_ok(const struct audit_chain *c, json_object *o, audit_key_fn key_for,
                            void *arg, char *why, size_t whylen)
{
    const char *hash = audit_field_str(o, "signed_hash"), *sig_hex = audit_field_str(o, "sig");
    const char *account = audit_field_str(o, "account"), *vault = audit_field_str(o, "vault");
    EVP_PKEY *key;
    int rc;

    if (!hash || !sig_hex || !account || !vault)
        return chain_refuse(why, whylen, "checkpoint lacks signed_hash, sig, account or vault");
    if (strcmp(hash, c->prev_hex) != 0)
        return chain_refuse(why, whylen, "checkpoint signs a different chain (signed_hash "
                            "differs from prev)");
    if (c->skip_signatures)
        return 0;
    key = key_for ? key_for(arg, vault, account) : NULL;
    if (!key)
        return chain_refuse(why, whylen, "format 2 checkpoint signed by unknown account "
                            "\"%.100s\"", account);
    rc = signature_ok(key, NULL, vault, NULL, 0, false, hash, sig_hex);
    EVP_PKEY_free(key);
    if (rc == -EINVAL)
        return chain_refuse(why, whylen, "checkpoint signature is not hex of a plausible length");
    if (rc)
        return chain_refuse(why, whylen, "checkpoint signature does not verify: the chain "
                            "before it was altered, or it was signed by another key");
    return 0;
}

/* cp must name the last checkpoint before the line. */
static int v2_cp_ok(const struct audit_chain *c, json_object *o, char *why, size_t whylen)
{
    uint64_t cp;

    if (audit_field_uint(o, "cp", &cp) != 0)
        return chain_refuse(why, whylen, "lacks cp (a format 1 line, or edited)");
    if (cp != c->last_cp)
        return chain_refuse(why, whylen, "cp %llu where the last checkpoint before this line "
                            "is %llu (a checkpoint was removed or inserted, or cp was edited)",
                            (unsigned long long)cp, (unsigned long long)c->last_cp);
    return 0;
}

static int v2_tail_ok(const struct audit_chain *c, char *why, size_t whylen)
{
    uint64_t run = c->next_seq - 1 - c->last_cp;

    if (c->skip_signatures || c->seen_v3 || run <= AUDIT_V2_UNSIGNED_MAX)
        return 0;
    return chain_refuse(why, whylen, "%llu format 2 events after the last signed checkpoint "
                        "(%s), more than the %u allowed: checkpoints were removed and the "
                        "chain rewritten; compare with the audit receiver's copy",
                        (unsigned long long)run, c->last_cp ? "of format 2" : "none",
                        AUDIT_V2_UNSIGNED_MAX);
}

/* ---- format 3: sessions ---- */

static bool is_session_id(const char *s)
{
    if (!s || strlen(s) != SESSION_HEX)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* Format 6: a signed session-start names its session's Ed25519 checkpoint
 * key, which its first checkpoint (the account's) certifies. */
static int session_key_ok(json_object *o, struct audit_session_state *fresh, char *why,
                          size_t whylen)
{
    const char *ckey = audit_field_str(o, "ckey");
    uint64_t v = 0;

    if (audit_field_uint(o, "v", &v) != 0 || v < 6)
        return 0;
    if (!ckey || strlen(ckey) != 2 * ED25519_PUB_LEN ||
        hex_decode(ckey, fresh->ckey, sizeof fresh->ckey) != 0) {
        pfs_err_clear();
        return chain_refuse(why, whylen, "format %llu session-start of session %s lacks its "
                            "session key (ckey: %u hex bytes)", (unsigned long long)v,
                            fresh->id, ED25519_PUB_LEN);
    }
    fresh->has_ckey = true;
    return 0;
}

/* A session-start: a new session; with a proof, the signer's key from the
 * registry proof, checked against the pinned root. */
static int session_start_ok(const struct audit_chain *c, json_object *o, const char *id,
                            const char *account, const char *sprev,
                            struct audit_session_state *fresh, char *why, size_t whylen)
{
    const char *proof = audit_field_str(o, "proof"), *vault = audit_field_str(o, "vault");
    struct audit_signer signer;
    char pwhy[256];

    if (!op_is(o, "session-start"))
        return chain_refuse(why, whylen, "sseq 1 of session %s is not a session-start (the "
                            "session's first lines were removed)", id);
    if (strspn(sprev, "0") != HASH_HEX || sprev[HASH_HEX])
        return chain_refuse(why, whylen, "session-start with a non-zero sprev");
    memset(fresh, 0, sizeof *fresh);
    snprintf(fresh->id, sizeof fresh->id, "%s", id);
    snprintf(fresh->account, sizeof fresh->account, "%s", account);
    zero_hash_hex(fresh->prev);
    fresh->next_sseq = 1;
    if (audit_field_uint(o, "account_id", &fresh->account_id) != 0)
        return chain_refuse(why, whylen, "session-start lacks account_id");
    if (!proof)
        return 0;
    fresh->is_signed = true;
    if (session_key_ok(o, fresh, why, whylen))
        return -EBADMSG;
    if (!c->skip_signatures && !c->root_fp[0])
        return chain_refuse(why, whylen, "no root fingerprint is known for vault %s, so the "
                            "registry proof of session %s cannot be checked (configure the "
                            "vault's root fingerprint)", vault ? vault : "?", id);
    if (audit_proof_verify(vault ? vault : "", c->root_fp, proof, !c->skip_signatures,
                           &signer, pwhy, sizeof pwhy) != 0)
        return chain_refuse(why, whylen, "the registry proof of session %s does not verify: %s",
                            id, pwhy);
    fresh->key = signer.key;
    if (signer.account_id != fresh->account_id || strcmp(signer.name, account) != 0) {
        EVP_PKEY_free(fresh->key);
        fresh->key = NULL;
        return chain_refuse(why, whylen, "session %s names account \"%.100s\" (id %llu) but its "
                            "registry proof is for \"%s\" (id %llu)", id, account,
                            (unsigned long long)fresh->account_id, signer.name,
                            (unsigned long long)signer.account_id);
    }
    return 0;
}

/* Which line a checkpoint signs.  Format 3 and 4: the line just before it
 * (signed_hash = sprev).  Format 5 (signed_sseq): a line of its session
 * after the last one signed and before the checkpoint, whose hash is
 * signed_hash (after a session-end: the session-end).  *pos its sseq. */
static int checkpoint_place_ok(const struct audit_session_state *s, json_object *o,
                               const char *hash, uint64_t *pos, char *why, size_t whylen)
{
    uint64_t v = 0, sseq = s->next_sseq;
    uint8_t h[SHA256_LEN];

    *pos = 0;
    if (audit_field_uint(o, "v", &v) != 0 || v < 5) {
        if (strcmp(hash, s->prev) != 0)
            return chain_refuse(why, whylen, "checkpoint signs a different chain (signed_hash "
                                "differs from sprev)");
        return 0;
    }
    if (audit_field_uint(o, "signed_sseq", pos) != 0)
        return chain_refuse(why, whylen, "format %llu checkpoint lacks signed_sseq",
                            (unsigned long long)v);
    if (*pos <= s->covered || *pos >= sseq)
        return chain_refuse(why, whylen, "checkpoint signs line sseq %llu of session %s, which "
                            "is not between its last signed line (sseq %llu) and the "
                            "checkpoint (sseq %llu)", (unsigned long long)*pos, s->id,
                            (unsigned long long)s->covered, (unsigned long long)sseq);
    if (s->ended && *pos != sseq - 1)
        return chain_refuse(why, whylen, "the checkpoint after the session-end of session %s "
                            "does not sign the session-end", s->id);
    if (strlen(hash) != HASH_HEX || hex_decode(hash, h, sizeof h) != 0 ||
        memcmp(h, s->hash[*pos % AUDIT_WINDOW], sizeof h) != 0)
        return chain_refuse(why, whylen, "checkpoint signs a different chain (signed_hash is "
                            "not the hash of line sseq %llu of session %s)",
                            (unsigned long long)*pos, s->id);
    return 0;
}

/* A checkpoint signs its own session's chain, under the key its
 * session-start proved: never the key of whoever the line names.  In a
 * session with a session key, only the first checkpoint is the account's:
 * it signs the session-start, and so the key; the later ones must be the
 * session key's (the account's own key is refused there too, so each
 * checkpoint has exactly one key that verifies it). */
static int session_checkpoint_ok(const struct audit_chain *c, const struct audit_session_state *s,
                                 json_object *o, char *why, size_t whylen)
{
    const char *hash = audit_field_str(o, "signed_hash"), *sig_hex = audit_field_str(o, "sig");
    bool by_ckey = s->has_ckey && s->covered > 0;
    uint64_t pos = 0;
    int rc;

    if (!s->is_signed)
        return chain_refuse(why, whylen, "checkpoint in session %s, which no account signed",
                            s->id);
    if (!hash || !sig_hex)
        return chain_refuse(why, whylen, "checkpoint lacks signed_hash or sig");
    if ((rc = checkpoint_place_ok(s, o, hash, &pos, why, whylen)))
        return rc;
    if (c->skip_signatures)
        return 0;
    rc = s->key ? signature_ok(by_ckey ? NULL : s->key, s->ckey,
                               c->vault[0] ? c->vault : audit_field_str(o, "vault"), s->id, pos,
                               s->has_ckey, hash, sig_hex) : -EKEYREJECTED;
    if (rc == -EINVAL)
        return chain_refuse(why, whylen, "checkpoint signature is not hex of a plausible length");
    if (rc && by_ckey)
        return chain_refuse(why, whylen, "checkpoint signature does not verify under the "
                            "session key that account \"%s\" (id %llu) certified at the start "
                            "of session %s: the session's lines were altered, or another key "
                            "signed", s->account, (unsigned long long)s->account_id, s->id);
    if (rc)
        return chain_refuse(why, whylen, "checkpoint signature does not verify under the key of "
                            "account \"%s\" (id %llu), which opened session %s: the session's "
                            "lines were altered, or another account signed", s->account,
                            (unsigned long long)s->account_id, s->id);
    return 0;
}

/* A line of a session already open. */
static int session_next_ok(const struct audit_chain *c, const struct audit_session_state *s,
                           json_object *o, uint64_t sseq, const char *account,
                           const char *sprev, char *why, size_t whylen)
{
    if (sseq != s->next_sseq)
        return chain_refuse(why, whylen, "sseq %llu where %llu was expected in session %s (a "
                            "line of that session was deleted, inserted or moved)",
                            (unsigned long long)sseq, (unsigned long long)s->next_sseq, s->id);
    if (strcmp(sprev, s->prev) != 0)
        return chain_refuse(why, whylen, "sprev does not match the hash of the previous line of "
                            "session %s (a line of it was edited, deleted or inserted)", s->id);
    if (strcmp(account, s->account) != 0)
        return chain_refuse(why, whylen, "names account \"%.100s\" in session %s, which \"%s\" "
                            "opened", account, s->id, s->account);
    if (op_is(o, "session-start"))
        return chain_refuse(why, whylen, "a second session-start in session %s", s->id);
    if (s->is_signed && sseq - s->covered > AUDIT_WINDOW)
        return chain_refuse(why, whylen, "more than %u lines of session %s after the last line "
                            "a checkpoint signed", AUDIT_WINDOW, s->id);
    if (op_is(o, "checkpoint"))
        return session_checkpoint_ok(c, s, o, why, whylen);
    if (s->ended)
        return chain_refuse(why, whylen, "an event after the session-end of session %s", s->id);
    if (s->run >= AUDIT_SEAL_EVERY)
        return chain_refuse(why, whylen, s->is_signed ?
                            "more than %u events of session %s without a checkpoint (its signer "
                            "checkpoints every %u: events were inserted or checkpoints removed)" :
                            "more than %u events in session %s, which no account signed (an "
                            "unsigned session holds at most %u)", AUDIT_SEAL_EVERY, s->id,
                            AUDIT_SEAL_EVERY);
    return 0;
}

/* Check the line's session fields; *fresh filled (and *is_new set) for a
 * session-start.  Changes nothing in c. */
static int session_ok(struct audit_chain *c, json_object *o, struct audit_session_state *fresh,
                      bool *is_new, char *why, size_t whylen)
{
    const char *id = audit_field_str(o, "session"), *sprev = audit_field_str(o, "sprev");
    const char *account = audit_field_str(o, "account");
    struct audit_session_state *s;
    uint64_t sseq;

    *is_new = false;
    if (!is_session_id(id) || !sprev || !account || audit_field_uint(o, "sseq", &sseq) != 0)
        return chain_refuse(why, whylen, "lacks session, sseq, sprev or account");
    s = session_find(c, id);
    if (sseq == 1) {
        if (s)
            return chain_refuse(why, whylen, "session %s starts twice", id);
        *is_new = true;
        return session_start_ok(c, o, id, account, sprev, fresh, why, whylen);
    }
    if (!s)
        return chain_refuse(why, whylen, "session %s is not open here (its session-start is "
                            "missing, or it had ended)", id);
    return session_next_ok(c, s, o, sseq, account, sprev, why, whylen);
}

/* The line passed: advance its session. */
static int session_advance(struct audit_chain *c, json_object *o, struct audit_session_state *fresh,
                           bool is_new, const char *line, size_t len)
{
    struct audit_session_state *s;
    uint8_t h[SHA256_LEN];
    uint64_t sseq, v = 0, pos = 0;

    if (is_new) {
        if (c->nopen == c->capopen) {
            size_t cap = c->capopen ? 2 * c->capopen : 16;
            struct audit_session_state *p = realloc(c->open, cap * sizeof *p);

            if (!p) {
                EVP_PKEY_free(fresh->key);
                return -ENOMEM;
            }
            c->open = p;
            c->capopen = cap;
        }
        c->open[c->nopen++] = *fresh;
        c->sessions++;
        c->unsigned_sessions += !fresh->is_signed;
    }
    s = session_find(c, audit_field_str(o, "session"));
    sseq = s->next_sseq++;
    sha256(line, len, h);
    hex_encode(h, sizeof h, s->prev);
    if (s->is_signed) {
        memcpy(s->hash[sseq % AUDIT_WINDOW], h, sizeof h);
        s->is_event[sseq % AUDIT_WINDOW] = !op_is(o, "checkpoint");
    }
    if (op_is(o, "checkpoint")) {
        /* checked: format 5 signs signed_sseq, older formats the line before */
        if (audit_field_uint(o, "v", &v) != 0 || v < 5 ||
            audit_field_uint(o, "signed_sseq", &pos) != 0)
            pos = sseq - 1;
        s->covered = pos;
        s->run = 0;
        for (uint64_t q = pos + 1; q < sseq; q++)
            s->run += s->is_event[q % AUDIT_WINDOW];
        if (s->ended && s->covered == sseq - 1)
            session_remove(c, s);
        return 0;
    }
    s->run++;
    if (op_is(o, "session-end")) {
        s->ended = true;
        if (!s->is_signed)
            session_remove(c, s);
    }
    return 0;
}

/* seq, vault and prev: the line's place in the spool chain. */
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

static int check_v2(struct audit_chain *c, json_object *o, audit_key_fn key_for, void *arg,
                    uint64_t seq, char *why, size_t whylen)
{
    int rc;

    if (c->seen_v3)
        return chain_refuse(why, whylen, "a format 2 line after format 3 lines (lines were "
                            "rewritten in the older format)");
    rc = v2_cp_ok(c, o, why, whylen);
    if (!rc && op_is(o, "checkpoint"))
        rc = v2_checkpoint_ok(c, o, key_for, arg, why, whylen);
    if (!rc && op_is(o, "checkpoint"))
        c->last_cp = seq;
    if (!rc)
        c->v2_lines++;
    return rc;
}

static int check_v3(struct audit_chain *c, json_object *o, const char *line, size_t len,
                    char *why, size_t whylen)
{
    struct audit_session_state fresh;
    bool is_new = false;
    uint64_t v = 0;
    int rc;

    if (audit_field_uint(o, "v", &v) != 0 || v < AUDIT_FORMAT_MIN_V3 || v > AUDIT_FORMAT)
        return chain_refuse(why, whylen, "event format \"v\" %llu is not one this build reads "
                            "(%d to %d)", (unsigned long long)v, AUDIT_FORMAT_MIN_V3,
                            AUDIT_FORMAT);
    if ((rc = v2_tail_ok(c, why, whylen)))
        return rc;
    if ((rc = session_ok(c, o, &fresh, &is_new, why, whylen)))
        return rc;
    if (session_advance(c, o, &fresh, is_new, line, len))
        return chain_refuse(why, whylen, "out of memory tracking audit sessions");
    c->seen_v3 = 1;
    return 0;
}

int audit_chain_check(struct audit_chain *c, const char *line, size_t len,
                      audit_key_fn key_for, void *arg, char *why, size_t whylen)
{
    json_object *o;
    uint64_t seq = 0;
    int rc;

    if (len > AUDIT_LINE_MAX)
        return chain_refuse(why, whylen, "longer than the line limit (%u bytes)",
                            AUDIT_LINE_MAX);
    if (memchr(line, '\0', len))
        return chain_refuse(why, whylen, "contains a NUL byte");
    o = audit_line_parse(line, len);
    if (!o)
        return chain_refuse(why, whylen, "not a JSON object");
    rc = place_ok(c, o, &seq, why, whylen);
    if (!rc)
        rc = json_object_object_get_ex(o, "v", NULL) ? check_v3(c, o, line, len, why, whylen)
                                                     : check_v2(c, o, key_for, arg, seq, why,
                                                                whylen);
    json_object_put(o);
    if (rc)
        return rc;
    c->next_seq = seq + 1;
    audit_line_hash(line, len, c->prev_hex);
    return 0;
}

int audit_chain_finish(const struct audit_chain *c, char *why, size_t whylen)
{
    return v2_tail_ok(c, why, whylen);
}

/* ---------- verification of a whole spool ---------- */

struct verifier {
    const char *path;
    audit_v2_key_fn key_for;
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
    EVP_PKEY *key = v->key_for ? v->key_for(v->arg, account) : NULL;

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

int audit_verify(const char *spool_path, const char *root_fp, audit_v2_key_fn v2_key_for,
                 void *arg, struct audit_verify_result *res)
{
    struct verifier v = { .path = spool_path, .key_for = v2_key_for, .arg = arg };
    struct audit_verify_result r = { 0 };
    char *buf = malloc(AUDIT_LINE_MAX), why[768];
    FILE *f;
    size_t len = 0;
    int rc;

    if (res)
        *res = r;
    if (!buf)
        return pfs_err(-ENOMEM, "out of memory verifying %s", spool_path);
    f = fopen(spool_path, "re");
    if (!f) {
        rc = -errno;
        free(buf);
        return pfs_err(rc, "cannot open audit spool %s: %s", spool_path, strerror(-rc));
    }
    audit_chain_init(&v.chain, NULL, root_fp);
    v.chain.skip_signatures = !root_fp && !v2_key_for;
    for (;;) {
        v.lineno++;
        rc = read_line(&v, f, buf, AUDIT_LINE_MAX, &len);
        if (rc <= 0)
            break;
        if (audit_chain_check(&v.chain, buf, len, verifier_key, &v, why, sizeof why)) {
            rc = bad_line(&v, why);
            break;
        }
        r.events++;
    }
    if (rc == 0 && audit_chain_finish(&v.chain, why, sizeof why)) {
        v.lineno = v.chain.next_seq - 1;
        rc = bad_line(&v, why);
    }
    r.sessions = v.chain.sessions;
    r.unsigned_sessions = v.chain.unsigned_sessions;
    r.v2_lines = v.chain.v2_lines;
    if (res)
        *res = r;
    audit_chain_free(&v.chain);
    fclose(f);
    free(buf);
    return rc;
}
