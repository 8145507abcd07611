#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exitcodes.h"
#include "log.h"
#include "status_show.h"

static const char *str(json_object *o, const char *k)
{
    json_object *v;

    if (o && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return "";
}

static int64_t num(json_object *o, const char *k)
{
    json_object *v;

    if (o && json_object_object_get_ex(o, k, &v))
        return json_object_get_int64(v);
    return 0;
}

static json_object *sub(json_object *o, const char *k)
{
    json_object *v;

    return o && json_object_object_get_ex(o, k, &v) ? v : NULL;
}

/* A unix time as "YYYY-MM-DD HH:MM:SS UTC", or "never" for 0. */
static const char *when(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (!t || !gmtime_r(&tt, &tm))
        return "never";
    strftime(buf, 32, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return buf;
}

static void print_human(json_object *o)
{
    char ack[32];
    json_object *eps = sub(o, "endpoints"), *w = sub(o, "writes"), *a = sub(o, "audit");
    int64_t age = (int64_t)time(NULL) - num(o, "time");
    pid_t pid = (pid_t)num(o, "pid");

    printf("%s: vault \"%s\" (%s), account \"%s\", %" PRId64 " folder(s)%s\n",
           str(o, "mountpoint"), str(o, "vault"), str(o, "vault_id"), str(o, "account"),
           num(o, "folders"), json_object_get_boolean(sub(o, "read_only")) ? ", read-only" : "");
    if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
        printf("  daemon: NOT RUNNING (pid %d gone; this status is stale)\n", (int)pid);
    else
        printf("  daemon: pid %d, status %" PRId64 " s old\n", (int)pid, age);
    printf("  key service: %s\n", str(o, "key_service"));
    printf("  endpoints:\n");
    for (size_t i = 0; eps && i < json_object_array_length(eps); i++) {
        json_object *e = json_object_array_get_idx(eps, i);

        printf("    %" PRId64 " %-8s %-40s %8.1f ms  %" PRId64 " ops, %" PRId64 " errors\n",
               num(e, "index"), str(e, "state"), str(e, "endpoint"),
               json_object_get_double(sub(e, "latency_ms")), num(e, "operations"),
               num(e, "errors"));
        if (*str(e, "offline_reason"))
            printf("      offline (%s): %s\n", str(e, "identity"), str(e, "offline_reason"));
        else if (*str(e, "last_error"))
            printf("      last error: %s\n", str(e, "last_error"));
    }
    printf("  writes: %" PRId64 " bytes in write-back, %" PRId64 " write-back errors, %" PRId64
           " degraded writes (at least %" PRId64 " fragments each)\n",
           num(w, "writeback_bytes"), num(w, "writeback_errors"), num(w, "degraded_writes"),
           num(w, "min_write_fragments"));
    printf("  repairs: %" PRId64 " chunk(s) queued, %" PRId64 " done, %" PRId64
           " attempts failed\n", num(w, "repair_queue"), num(w, "repairs_done"),
           num(w, "repair_attempts_failed"));
    printf("  audit: spool %s (%" PRId64 " bytes)", str(a, "spool"), num(a, "spool_bytes"));
    if (!strcmp(str(a, "shipping"), "off"))
        printf(", shipping off\n");
    else
        printf(", shipping to %s: %" PRId64 " bytes not yet acknowledged (oldest %" PRId64
               " s old), last acknowledgement %s, %" PRId64 " consecutive failures%s%s\n",
               str(a, "shipping"), num(a, "unshipped_bytes"),
               num(a, "oldest_unshipped_age_seconds"), when(num(a, "last_ack_time"), ack),
               num(a, "consecutive_failures"), *str(a, "last_error") ? "; last: " : "",
               str(a, "last_error"));
    if (*str(w, "last_error"))
        printf("  last error: %s\n", str(w, "last_error"));
}

static int show_file(const char *path, int json)
{
    json_object *o = json_object_from_file(path);

    if (!o || !json_object_is_type(o, json_type_object)) {
        log_error("%s is not a status file (%s)", path, json_util_get_last_err());
        json_object_put(o);
        return -1;
    }
    if (json)
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
    else
        print_human(o);
    json_object_put(o);
    return 0;
}

int status_show(const char *dir, const char *one, const char *mnt, int json)
{
    DIR *d;
    struct dirent *de;
    size_t sl = strlen(STATUS_SUFFIX);
    int shown = 0;

    if (one) {
        if (show_file(one, json) < 0) {
            log_error("no pactfs mount at %s (no status in %s)", mnt, dir);
            return EXIT_MOUNTPOINT;
        }
        return EXIT_OK;
    }
    d = opendir(dir);
    if (d) {
        if (json)
            printf("[\n");
        while ((de = readdir(d))) {
            size_t n = strlen(de->d_name);
            char path[PATH_MAX];

            if (n <= sl || strcmp(de->d_name + n - sl, STATUS_SUFFIX))
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            if (json && shown)
                printf(",\n");
            if (show_file(path, json) == 0)
                shown++;
        }
        closedir(d);
        if (json)
            printf("]\n");
    }
    if (!shown && !json) {
        log_error("no running pactfs mount (nothing in %s)", dir);
        return EXIT_MOUNTPOINT;
    }
    return EXIT_OK;
}
