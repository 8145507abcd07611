#include "config.h"

/* pactfs-admin audit query / summary / denied: output.  Formats:
 * docs/auditor-guide.md and pactfs-admin(8). */

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "audit_report.h"

/* The index of s in names (n of them), or -1. */
static int pick(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i]))
            return i;
    return -1;
}

int audit_out_parse(const char *s, enum audit_out *out)
{
    static const char *const names[] = { "table", "json", "csv" };   /* enum audit_out */
    int i = pick(s, names, 3);

    if (i < 0)
        return -1;
    *out = (enum audit_out)i;
    return 0;
}

int audit_report_parse(const char *s, enum audit_report *kind)
{
    static const char *const names[] = { "query", "summary", "denied" };   /* enum audit_report */
    int i = pick(s, names, 3);

    if (i < 0)
        return -1;
    *kind = (enum audit_report)i;
    return 0;
}

static const char *str(struct json_object *ev, const char *key)
{
    const char *s = audit_field_str(ev, key);

    return s ? s : "";
}

static uint64_t num(struct json_object *ev, const char *key)
{
    uint64_t v = 0;

    (void)audit_field_uint(ev, key, &v);
    return v;
}

int audit_report_is_denial(struct json_object *ev)
{
    const char *r = str(ev, "result");

    return !strcmp(r, "denied") || (!strcmp(str(ev, "op"), "unlock") && strcmp(r, "ok") != 0);
}

/* ---- sorting ---- */

struct item {
    struct json_object *ev;
    size_t index;
};

static int by_time(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    int c = strcmp(str(x->ev, "time"), str(y->ev, "time"));

    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int sort_events(struct json_object **evs, size_t n)
{
    struct item *it = calloc(n ? n : 1, sizeof *it);

    if (!it)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        it[i] = (struct item){ evs[i], i };
    qsort(it, n, sizeof *it, by_time);
    for (size_t i = 0; i < n; i++)
        evs[i] = it[i].ev;
    free(it);
    return 0;
}

/* ---- CSV ---- */

static void csv_field(FILE *out, const char *s, int last)
{
    if (strpbrk(s, ",\"\r\n")) {
        fputc('"', out);
        for (; *s; s++) {
            if (*s == '"')
                fputc('"', out);
            fputc(*s, out);
        }
        fputc('"', out);
    } else {
        fputs(s, out);
    }
    fputc(last ? '\n' : ',', out);
}

static void csv_row(FILE *out, const char *const *cells, size_t n)
{
    for (size_t i = 0; i < n; i++)
        csv_field(out, cells[i], i + 1 == n);
}

/* ---- events ---- */

#define EV_COLS 13
static const char *const ev_header[EV_COLS] = {
    "time", "account", "host", "uid", "pid", "process", "op", "result", "errno", "file",
    "bytes", "path", "dest",
};

/* An event's cells in ev_header's order (the header names are the JSON
 * keys); numbers in bufs, an absent file id empty. */
static void event_cells(struct json_object *ev, const char **cells, char bufs[EV_COLS][24])
{
    for (size_t i = 0; i < EV_COLS; i++) {
        const char *k = ev_header[i];
        uint64_t v;

        if (strcmp(k, "uid") && strcmp(k, "pid") && strcmp(k, "file") && strcmp(k, "bytes")) {
            cells[i] = str(ev, k);
            continue;
        }
        v = num(ev, k);
        bufs[i][0] = '\0';
        if (v || strcmp(k, "file"))
            snprintf(bufs[i], sizeof bufs[i], "%" PRIu64, v);
        cells[i] = bufs[i];
    }
}

static void print_events_table(FILE *out, struct json_object **evs, size_t n)
{
    size_t wa = 7, wh = 4, wo = 2, wf = 4;

    for (size_t i = 0; i < n; i++) {
        char f[24];
        size_t l;
        if ((l = strlen(str(evs[i], "account"))) > wa)
            wa = l;
        if ((l = strlen(str(evs[i], "host"))) > wh)
            wh = l;
        if ((l = strlen(str(evs[i], "op"))) > wo)
            wo = l;
        if ((l = (size_t)snprintf(f, sizeof f, "%" PRIu64, num(evs[i], "file"))) > wf)
            wf = l;
    }
    fprintf(out, "%-19s  %-*s  %-*s  %-*s  %-13s  %*s  %10s  %s\n", "TIME (UTC)", (int)wa,
            "ACCOUNT", (int)wh, "HOST", (int)wo, "OP", "RESULT", (int)wf, "FILE", "BYTES",
            "PATH");
    for (size_t i = 0; i < n; i++) {
        struct json_object *ev = evs[i];
        const char *t = str(ev, "time"), *dest = str(ev, "dest"), *path = str(ev, "path");

        if (*str(ev, "names"))
            path = "(sealed)";
        char when[20], result[32], file[24] = "-";
        uint64_t id = num(ev, "file");

        snprintf(when, sizeof when, "%.19s", t);
        if (strlen(when) > 10 && when[10] == 'T')
            when[10] = ' ';
        snprintf(result, sizeof result, "%s%s%s", str(ev, "result"), *str(ev, "errno") ? " " :
                 "", str(ev, "errno"));
        if (id)
            snprintf(file, sizeof file, "%" PRIu64, id);
        fprintf(out, "%-19s  %-*s  %-*s  %-*s  %-13s  %*s  %10" PRIu64 "  %s%s%s\n", when,
                (int)wa, str(ev, "account"), (int)wh, str(ev, "host"), (int)wo, str(ev, "op"),
                result, (int)wf, file, num(ev, "bytes"), path,
                *dest && !strstr(path, " -> ") ? " -> " : "",
                *dest && !strstr(path, " -> ") ? dest : "");
    }
}

static void print_events(FILE *out, enum audit_out fmt, struct json_object **evs, size_t n)
{
    if (fmt == AUDIT_OUT_TABLE) {
        print_events_table(out, evs, n);
        return;
    }
    if (fmt == AUDIT_OUT_CSV)
        csv_row(out, ev_header, EV_COLS);
    for (size_t i = 0; i < n; i++) {
        if (fmt == AUDIT_OUT_JSON) {
            fprintf(out, "%s\n", json_object_to_json_string_ext(
                        evs[i], JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        } else {
            const char *cells[EV_COLS];
            char bufs[EV_COLS][24];
            event_cells(evs[i], cells, bufs);
            csv_row(out, cells, EV_COLS);
        }
    }
}

/* ---- summary ---- */

struct account_sum {
    const char *account;
    uint64_t events, sessions, denied, errors, failed_unlocks;
    uint64_t reads, read_bytes, writes, write_bytes, admin;
    const char *first, *last;
};

static int is_file_op(const char *op)
{
    static const char *const ops[] = {
        "lookup", "readdir", "open", "read", "write", "create", "mkdir", "mknod", "symlink",
        "link", "readlink", "rename", "unlink", "rmdir", "truncate", "chmod", "chown",
        "utimens", "setattr", "setxattr", "getxattr", "listxattr", "removexattr", "mount",
        "unmount", "unlock", "session-start", "session-end", "checkpoint", "tamper", NULL,
    };

    for (size_t i = 0; ops[i]; i++)
        if (!strcmp(ops[i], op))
            return 1;
    return 0;
}

#define SUM_COLS 13
static const char *const sum_header[SUM_COLS] = {
    "account", "events", "sessions", "denied", "errors", "failed_unlocks", "reads",
    "read_bytes", "writes", "write_bytes", "admin_actions", "first", "last",
};

static int summarise(struct json_object **evs, size_t n, struct account_sum **out, size_t *nout)
{
    struct account_sum *s = NULL;
    size_t ns = 0;

    for (size_t i = 0; i < n; i++) {
        struct json_object *ev = evs[i];
        const char *acct = str(ev, "account"), *op = str(ev, "op"), *res = str(ev, "result");
        struct account_sum *a = NULL;

        for (size_t j = 0; j < ns && !a; j++)
            if (!strcmp(s[j].account, acct))
                a = &s[j];
        if (!a) {
            struct account_sum *p = realloc(s, (ns + 1) * sizeof *p);
            if (!p) {
                free(s);
                return -ENOMEM;
            }
            s = p;
            a = &s[ns++];
            memset(a, 0, sizeof *a);
            a->account = acct;
            a->first = str(ev, "time");
        }
        a->last = str(ev, "time");
        if (!strcmp(op, "checkpoint"))
            continue;
        a->events++;
        a->sessions += !strcmp(op, "session-start");
        a->denied += !strcmp(res, "denied");
        a->errors += !strcmp(res, "error");
        a->failed_unlocks += !strcmp(op, "unlock") && strcmp(res, "ok");
        if (!strcmp(op, "read")) {
            a->reads++;
            a->read_bytes += num(ev, "bytes");
        } else if (!strcmp(op, "write")) {
            a->writes++;
            a->write_bytes += num(ev, "bytes");
        } else if (!is_file_op(op)) {
            a->admin++;
        }
    }
    *out = s;
    *nout = ns;
    return 0;
}

static int print_summary(FILE *out, enum audit_out fmt, struct json_object **evs, size_t n)
{
    struct account_sum *s;
    size_t ns;
    int rc = summarise(evs, n, &s, &ns);

    if (rc)
        return rc;
    if (fmt == AUDIT_OUT_TABLE)
        fprintf(out, "%-20s %8s %8s %7s %7s %8s %7s %12s %7s %12s %6s  %-20s  %s\n", "ACCOUNT",
                "EVENTS", "SESSIONS", "DENIED", "ERRORS", "BAD-UNLK", "READS", "READ-BYTES",
                "WRITES", "WRITE-BYTES", "ADMIN", "FIRST", "LAST");
    else if (fmt == AUDIT_OUT_CSV)
        csv_row(out, sum_header, SUM_COLS);
    for (size_t i = 0; i < ns; i++) {
        struct account_sum *a = &s[i];
        uint64_t v[10] = { a->events, a->sessions, a->denied, a->errors, a->failed_unlocks,
                           a->reads, a->read_bytes, a->writes, a->write_bytes, a->admin };
        if (fmt == AUDIT_OUT_TABLE) {
            fprintf(out, "%-20s %8" PRIu64 " %8" PRIu64 " %7" PRIu64 " %7" PRIu64 " %8" PRIu64
                    " %7" PRIu64 " %12" PRIu64 " %7" PRIu64 " %12" PRIu64 " %6" PRIu64
                    "  %-20.20s  %.20s\n", a->account[0] ? a->account : "(none)", v[0], v[1],
                    v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], a->first, a->last);
        } else if (fmt == AUDIT_OUT_CSV) {
            char bufs[10][24];
            const char *cells[SUM_COLS];
            cells[0] = a->account;
            for (size_t k = 0; k < 10; k++) {
                snprintf(bufs[k], sizeof bufs[k], "%" PRIu64, v[k]);
                cells[k + 1] = bufs[k];
            }
            cells[11] = a->first;
            cells[12] = a->last;
            csv_row(out, cells, SUM_COLS);
        } else {
            struct json_object *o = json_object_new_object();
            if (!o) {
                free(s);
                return -ENOMEM;
            }
            json_object_object_add(o, sum_header[0], json_object_new_string(a->account));
            for (size_t k = 0; k < 10; k++)
                json_object_object_add(o, sum_header[k + 1],
                                       json_object_new_uint64(v[k]));
            json_object_object_add(o, "first", json_object_new_string(a->first));
            json_object_object_add(o, "last", json_object_new_string(a->last));
            fprintf(out, "%s\n", json_object_to_json_string_ext(
                        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
            json_object_put(o);
        }
    }
    free(s);
    return 0;
}

int audit_report_print(FILE *out, enum audit_out fmt, enum audit_report kind,
                       struct json_object **evs, size_t n)
{
    int rc = sort_events(evs, n);

    if (rc)
        return rc;
    if (kind == AUDIT_REPORT_SUMMARY)
        return print_summary(out, fmt, evs, n);
    if (kind == AUDIT_REPORT_DENIED) {
        struct json_object **d = calloc(n ? n : 1, sizeof *d);
        size_t k = 0;
        if (!d)
            return -ENOMEM;
        for (size_t i = 0; i < n; i++)
            if (audit_report_is_denial(evs[i]))
                d[k++] = evs[i];
        print_events(out, fmt, d, k);
        if (fmt == AUDIT_OUT_TABLE)
            fprintf(out, "%zu denied access%s (refused operations and failed unlocks).\n", k,
                    k == 1 ? "" : "es");
        free(d);
        return 0;
    }
    print_events(out, fmt, evs, n);
    return 0;
}
