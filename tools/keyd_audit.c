#include "config.h"

/* What pactfs-keyd records (keyd_audit.h). */

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "audit.h"
#include "audit_proof.h"
#include "audit_ship.h"
#include "error.h"
#include "fileio.h"
#include "log.h"
#include "registry.h"

#include "keyd_audit.h"

/* One vault's trail of admin actions and its shipper (audit_url). */
struct trail_shipper {
    struct trail_shipper *next;
    char vault[33];
    struct audit_ship *ship;
};

/* ---- its own log ----
 * One signed session per run in audit_log, in the project's audit format
 * (docs/format-audit.md): the session's account is "pactfs-keyd", its
 * registry proof a one-record registry whose root is keyd's audit signing
 * key itself, and its "vault" the first 32 hex digits of that key's
 * fingerprint.  So `pactfs-admin keyd-audit-verify` checks the chains and
 * every checkpoint signature with the fingerprint alone. */

#define KEYD_AUDIT_ACCOUNT "pactfs-keyd"
#define KEYD_AUDIT_ACCOUNT_ID 1

/* The first line of path (at most AUDIT_LINE_MAX): 1 read, 0 none (no file,
 * empty), -errno. */
static int first_line(const char *path, char **line, size_t *len)
{
    FILE *f = fopen(path, "re");
    size_t cap = 0;
    ssize_t n;

    *line = NULL;
    if (!f)
        return errno == ENOENT ? 0 : pfs_err(-errno, "cannot read %s: %s", path,
                                             strerror(errno));
    n = getline(line, &cap, f);
    fclose(f);
    if (n <= 0)
        return 0;
    *len = (size_t)n - ((*line)[n - 1] == '\n');
    return 1;
}

/* Rename path to path.STAMP[suffix] (never over another file) and sync. */
static int keep_aside(const char *path, const char *suffix, char *to, size_t tolen)
{
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;

    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    for (unsigned i = 0; i < 100; i++) {
        snprintf(to, tolen, "%s.%s%s%.0u%s", path, stamp, i ? "-" : "", i, suffix);
        if (link(path, to) == 0) {
            if (unlink(path) < 0)
                return pfs_err(-errno, "cannot move %s aside: %s", path, strerror(errno));
            return fileio_fsync_parent(path);
        }
        if (errno != EEXIST)
            return pfs_err(-errno, "cannot move %s aside to %s: %s", path, to, strerror(errno));
    }
    return pfs_err(-EEXIST, "cannot move %s aside: too many copies named %s.%s*", path, path,
                   stamp);
}

/* An audit_log this key cannot continue is renamed, never lost: the
 * JSON-lines log of earlier versions, or a log signed with another key. */
static int keep_or_rotate(const char *path, const char *logid)
{
    json_object *o = NULL;
    const char *vault;
    char *line, to[PATH_MAX];
    size_t len = 0;
    int rc = first_line(path, &line, &len);

    if (rc <= 0)
        return rc;
    rc = 0;
    o = audit_line_parse(line, len);
    vault = o ? audit_field_str(o, "vault") : NULL;
    if (!o || !json_object_object_get_ex(o, "v", NULL)) {
        rc = keep_aside(path, ".jsonl", to, sizeof to);
        if (rc == 0)
            log_warning("%s held the JSON-lines request log of an earlier version: kept as %s; "
                        "the log goes on in the project's audit format", path, to);
    } else if (!vault || strcmp(vault, logid)) {
        rc = keep_aside(path, "", to, sizeof to);
        if (rc == 0)
            log_warning("%s was signed with another audit key (log %s): kept as %s; a new "
                        "log begins with this key", path, vault ? vault : "?", to);
    }
    json_object_put(o);
    free(line);
    return rc;
}

int keyd_audit_open(struct keyd *k)
{
    struct audit_identity id = { .account = KEYD_AUDIT_ACCOUNT,
                                 .account_id = KEYD_AUDIT_ACCOUNT_ID };
    EVP_PKEY *key = NULL;
    char logid[33], *proof = NULL;
    bool created = false;
    int rc = keyd_secrets_audit_key(&k->secrets, k->conf.audit_signing_key, &key, &created);

    rc = rc ? rc : registry_fingerprint_hex(key, k->audit_fp);
    snprintf(logid, sizeof logid, "%.32s", k->audit_fp);
    rc = rc ? rc : audit_proof_direct(logid, key, KEYD_AUDIT_ACCOUNT_ID, KEYD_AUDIT_ACCOUNT,
                                      ROLE_USER, key, &proof);
    rc = rc ? rc : keep_or_rotate(k->conf.audit_log, logid);
    id.signer = key;
    id.proof = proof;
    rc = rc ? rc : audit_open(k->conf.audit_log, logid, &id, &k->audit);
    if (rc == 0)
        log_info("audit log %s is signed with the key in %s, fingerprint %s%s", k->conf.audit_log,
                 k->conf.audit_signing_key, k->audit_fp,
                 created ? " (made now: record this fingerprint away from this host; "
                           "pactfs-admin keyd-audit-verify --fingerprint checks the log "
                           "against it)" : "");
    EVP_PKEY_free(key);
    free(proof);
    return rc;
}

void keyd_audit_close(struct keyd *k)
{
    audit_close(k->audit);
    k->audit = NULL;
}

/* The answer's HTTP status as an audit result (ok, denied, error). */
static int status_result(unsigned status)
{
    if (status >= 200 && status < 300)
        return 0;
    switch (status) {
    case 401: case 403: return -EACCES;
    case 404: return -ENOENT;
    case 409: return -EEXIST;
    case 423: case 429: return -EBUSY;
    case 400: return -EINVAL;
    default: return -EIO;
    }
}

static void put_str(json_object *o, const char *key, const char *v)
{
    if (v)
        json_object_object_add(o, key, json_object_new_string(v));
}

int keyd_audit_write(struct keyd *k, const char *remote, const char *op,
                     const struct fields *f, const struct outcome *o)
{
    json_object *ev = json_object_new_object();
    struct audit_ctx who = { getuid(), getpid() };
    struct audit_detail d = { .extra_key = "keyd", .extra = ev,
                              .before = o->before[0] ? o->before : NULL,
                              .after = o->after[0] ? o->after : NULL };
    char path[2 * KEYD_NAME_MAX + 2];
    int rc;

    put_str(ev, "remote", remote);
    put_str(ev, "vault", f->vault);
    put_str(ev, "account", f->account);
    put_str(ev, "source", f->source);
    if (f->counter >= 0)
        json_object_object_add(ev, "counter", json_object_new_int64(f->counter));
    if (f->force)
        json_object_object_add(ev, "force", json_object_new_boolean(1));
    json_object_object_add(ev, "status", json_object_new_int((int)o->status));
    put_str(ev, "result", o->result);
    if (o->retry_after)
        json_object_object_add(ev, "retry_after", json_object_new_int((int)o->retry_after));
    snprintf(path, sizeof path, "%s%s%s", f->vault ? f->vault : "", f->account ? "/" : "",
             f->account ? f->account : "");
    /* Durable (group commit) before the answer goes out. */
    rc = audit_event_detail(k->audit, &who, op, path, status_result(o->status), 0, &d);
    if (rc < 0) {
        https_log(LOG_ERR, "cannot write audit log %s: %s", k->conf.audit_log, pfs_err_msg());
        rc = -EIO;
    }
    https_log(LOG_INFO, "%s %s %s/%s -> %u %s", remote, op, f->vault ? f->vault : "-",
              f->account ? f->account : "-", o->status, o->result);
    json_object_put(ev);
    return rc;
}

/* Admin actions in the project's audit format (docs/format-audit.md), one
 * spool per vault in trail_dir, each action an unsigned session of its own
 * (pactfs-keyd holds no account key) whose account names the officer.
 * Written before the action commits: if it cannot be written, the action
 * is rolled back (fail-closed).  With audit_url, a shipper per vault sends
 * the spool to pactfs-auditd like the workstations' shippers. */

bool keyd_vault_id_ok(const char *v)
{
    size_t n = v ? strlen(v) : 0;

    if (n != 32)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
            return false;
    return true;
}

static void trail_path(const struct keyd *k, const char *vault, char *out, size_t len)
{
    snprintf(out, len, "%s/%s.log", k->conf.trail_dir, vault);
}

int keyd_trail_event(struct keyd *k, const char *officer, const char *op,
                     const struct fields *f, unsigned status, const struct outcome *o)
{
    struct audit_identity id = { .account = officer };
    struct audit_ctx who = { getuid(), getpid() };
    struct audit_detail d = { 0 };
    char path[PATH_MAX], name[64];
    struct audit *a = NULL;
    int rc;

    if (o && o->before[0])
        d.before = o->before;
    if (o && o->after[0])
        d.after = o->after;
    trail_path(k, f->vault, path, sizeof path);
    snprintf(name, sizeof name, "keyd-%s", op);
    rc = audit_open(path, f->vault, &id, &a);
    if (rc == 0)
        rc = audit_event_detail(a, &who, name, f->account ? f->account : "",
                                status_result(status), 0, d.before || d.after ? &d : NULL);
    audit_close(a);
    if (rc < 0)
        https_log(LOG_ERR, "cannot write the audit trail %s: %s", path, pfs_err_msg());
    return rc;
}

void keyd_trail_ship(struct keyd *k, const char *vault)
{
    struct audit_ship_opts o = { .tls = &k->conf.audit_tls, .url = k->conf.audit_url };
    struct trail_shipper *t;
    char path[PATH_MAX];

    if (!k->conf.audit_url)
        return;
    for (t = k->shippers; t; t = t->next)
        if (!strcmp(t->vault, vault)) {
            audit_ship_kick(t->ship);
            return;
        }
    trail_path(k, vault, path, sizeof path);
    o.spool_path = path;
    if (!(t = calloc(1, sizeof *t)))
        return;
    snprintf(t->vault, sizeof t->vault, "%s", vault);
    if (audit_ship_start(&o, &t->ship) < 0) {
        https_log(LOG_ERR, "cannot ship the audit trail %s: %s", path, pfs_err_msg());
        free(t);
        return;
    }
    t->next = k->shippers;
    k->shippers = t;
}

int keyd_trail_setup(struct keyd *k)
{
    DIR *d;
    struct dirent *e;

    if (mkdir(k->conf.trail_dir, 0700) < 0 && errno != EEXIST)
        return pfs_err(-errno, "cannot create the audit trail directory %s: %s",
                       k->conf.trail_dir, strerror(errno));
    if (!k->conf.audit_url || !(d = opendir(k->conf.trail_dir)))
        return 0;
    while ((e = readdir(d))) {
        char vault[33];
        size_t n = strlen(e->d_name);
        if (n == 36 && !strcmp(e->d_name + 32, ".log")) {
            snprintf(vault, sizeof vault, "%.32s", e->d_name);
            if (keyd_vault_id_ok(vault))
                keyd_trail_ship(k, vault);
        }
    }
    closedir(d);
    return 0;
}

void keyd_trail_teardown(struct keyd *k)
{
    while (k->shippers) {
        struct trail_shipper *t = k->shippers;
        k->shippers = t->next;
        if (audit_ship_stop(t->ship, 5000) < 0)
            https_log(LOG_WARNING, "audit trail of vault %s not all shipped (it stays in %s): "
                      "%s", t->vault, k->conf.trail_dir, pfs_err_msg());
        free(t);
    }
}

/* Test aid (off unless debug_capture is set): record the raw bodies the
 * service received so a test can prove what the client sends. */
void keyd_capture_body(struct keyd *k, const char *url, const struct https_request *r)
{
    json_object *ev;
    const char *line;
    size_t len;

    if (k->capture_fd < 0)
        return;
    ev = json_object_new_object();
    json_object_object_add(ev, "url", json_object_new_string(url));
    json_object_object_add(ev, "body", json_object_new_string_len(r->body, (int)r->len));
    line = json_object_to_json_string_length(ev, JSON_C_TO_STRING_PLAIN, &len);
    if (write(k->capture_fd, line, len) < 0 || write(k->capture_fd, "\n", 1) < 0)
        https_log(LOG_ERR, "cannot write debug capture: %s", strerror(errno));
    json_object_put(ev);
}
