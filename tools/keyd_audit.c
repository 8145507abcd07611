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
#include "audit_ship.h"
#include "error.h"

#include "keyd_audit.h"

/* One vault's trail of admin actions and its shipper (audit_url). */
struct trail_shipper {
    struct trail_shipper *next;
    char vault[33];
    struct audit_ship *ship;
};

int keyd_audit_write(struct keyd *k, const char *remote, const char *op,
                     const struct fields *f, const struct outcome *o)
{
    json_object *ev = json_object_new_object();
    const char *line;
    size_t len;
    int rc = -EIO;

    json_object_object_add(ev, "time", json_object_new_int64((int64_t)time(NULL)));
    json_object_object_add(ev, "remote", json_object_new_string(remote));
    json_object_object_add(ev, "op", json_object_new_string(op));
    if (f->vault)
        json_object_object_add(ev, "vault", json_object_new_string(f->vault));
    if (f->account)
        json_object_object_add(ev, "account", json_object_new_string(f->account));
    if (f->source)
        json_object_object_add(ev, "source", json_object_new_string(f->source));
    if (f->counter >= 0)
        json_object_object_add(ev, "counter", json_object_new_int64(f->counter));
    if (f->force)
        json_object_object_add(ev, "force", json_object_new_boolean(1));
    json_object_object_add(ev, "status", json_object_new_int((int)o->status));
    json_object_object_add(ev, "result", json_object_new_string(o->result));
    if (o->retry_after)
        json_object_object_add(ev, "retry_after", json_object_new_int((int)o->retry_after));
    line = json_object_to_json_string_length(ev, JSON_C_TO_STRING_PLAIN, &len);
    /* One write per line with O_APPEND, then fsync: a line is never torn and
     * never lost once the answer has gone out. */
    {
        char *buf = malloc(len + 1);
        if (buf) {
            memcpy(buf, line, len);
            buf[len] = '\n';
            if (write(k->audit_fd, buf, len + 1) != (ssize_t)(len + 1) || fsync(k->audit_fd) < 0)
                https_log(LOG_ERR, "cannot write audit log %s: %s", k->conf.audit_log,
                         strerror(errno));
            else
                rc = 0;
            free(buf);
        }
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

int keyd_trail_event(struct keyd *k, const char *officer, const char *op,
                     const struct fields *f, unsigned status)
{
    struct audit_identity id = { .account = officer };
    struct audit_ctx who = { getuid(), getpid() };
    char path[PATH_MAX], name[64];
    struct audit *a = NULL;
    int rc;

    trail_path(k, f->vault, path, sizeof path);
    snprintf(name, sizeof name, "keyd-%s", op);
    rc = audit_open(path, f->vault, &id, &a);
    if (rc == 0)
        rc = audit_event(a, &who, name, f->account ? f->account : "", status_result(status), 0);
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
