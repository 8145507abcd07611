#include "config.h"

/* The running daemon's status: a JSON file that `pactfs status` reads and a
 * Prometheus text exposition with the same figures (for node_exporter's
 * textfile collector), both rewritten about once a second by the syncer
 * thread (fs_data.c) into the runtime directory, by temporary file and
 * rename so a reader never sees half a file.  Format: docs/operations-status.md.
 * Neither holds a key, a name or a byte of content: only counts, endpoint
 * descriptions and error messages. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit_ship.h"
#include "endpoint.h"
#include "fileio.h"
#include "fs_internal.h"
#include "vault.h"

#define STATUS_FORMAT 1

static const char *endpoint_state(enum endpoint_state ident,
                                  const struct object_endpoint_stats *st)
{
    if (ident != ENDPOINT_OK)
        return "offline";
    if (st->put_failing || (st->ops && !st->last_ok))
        return "failing";
    return "ok";
}

/* Write text to path by a temporary file and a rename (no fsync: the
 * runtime directory is a tmpfs and the file is rewritten every second). */
static void write_replace(const char *path, const char *text)
{
    char tmp[4200];
    int fd;

    if (!path)
        return;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (fileio_write_all(fd, text, strlen(text)) < 0 || close(fd) < 0 ||
        rename(tmp, path) < 0)
        unlink(tmp);
}

static void add_u64(json_object *o, const char *k, uint64_t v)
{
    json_object_object_add(o, k, json_object_new_uint64(v));
}

static json_object *endpoints_json(struct fs *fs, FILE *prom)
{
    json_object *arr = json_object_new_array();
    struct object_layer *ol = fs->v->ol;

    fprintf(prom, "# HELP pactfs_endpoint_up 1 if the endpoint's last operation "
                "succeeded\n# TYPE pactfs_endpoint_up gauge\n");
    for (unsigned i = 0; i < object_layer_nstores(ol); i++) {
        struct object_endpoint_stats st;
        struct store *s = object_layer_store(ol, i);
        const char *state;
        json_object *e = json_object_new_object();

        char why[400];
        enum endpoint_state ident = endpoint_set_state(fs->v->eps, i, why, sizeof why);

        object_layer_endpoint_stats(ol, i, &st);
        state = endpoint_state(ident, &st);
        json_object_object_add(e, "index", json_object_new_int((int)i));
        json_object_object_add(e, "endpoint", json_object_new_string(s->desc));
        json_object_object_add(e, "state", json_object_new_string(state));
        json_object_object_add(e, "identity", json_object_new_string(endpoint_state_name(ident)));
        json_object_object_add(e, "offline_reason", json_object_new_string(why));
        json_object_object_add(e, "latency_ms",
                               json_object_new_double((double)st.last_latency_us / 1000.0));
        add_u64(e, "operations", st.ops);
        add_u64(e, "errors", st.errors);
        json_object_object_add(e, "last_error", json_object_new_string(st.last_error));
        json_object_object_add(e, "last_error_time", json_object_new_int64(st.last_error_time));
        json_object_array_add(arr, e);
        fprintf(prom, "pactfs_endpoint_up{endpoint=\"%u\"} %d\n", i,
                    !strcmp(state, "ok"));
        fprintf(prom, "pactfs_endpoint_latency_seconds{endpoint=\"%u\"} %.6f\n", i,
                    (double)st.last_latency_us / 1e6);
        fprintf(prom, "pactfs_endpoint_operations_total{endpoint=\"%u\"} %" PRIu64 "\n",
                    i, st.ops);
        fprintf(prom, "pactfs_endpoint_errors_total{endpoint=\"%u\"} %" PRIu64 "\n", i,
                    st.errors);
    }
    return arr;
}

static json_object *audit_json(struct fs *fs, FILE *prom)
{
    json_object *a = json_object_new_object();
    struct audit_ship_status ss;
    struct audit_backlog b;
    int64_t now = (int64_t)time(NULL), age = 0;

    if (fs->opt.ship)
        audit_ship_get_status(fs->opt.ship, &ss);
    (void)audit_ship_backlog(fs->v->conf.audit_spool, fs->opt.ship ? &ss.cursor : NULL, &b);
    json_object_object_add(a, "spool", json_object_new_string(fs->v->conf.audit_spool));
    add_u64(a, "spool_bytes", b.spool_bytes);
    fprintf(prom, "pactfs_audit_spool_bytes %" PRIu64 "\n", b.spool_bytes);
    if (!fs->opt.ship) {
        json_object_object_add(a, "shipping", json_object_new_string("off"));
        return a;
    }
    if (b.oldest_unshipped_ns && now > b.oldest_unshipped_ns / 1000000000)
        age = now - b.oldest_unshipped_ns / 1000000000;
    json_object_object_add(a, "shipping", json_object_new_string(fs->v->conf.audit_url));
    add_u64(a, "unshipped_bytes", b.unshipped_bytes);
    add_u64(a, "oldest_unshipped_age_seconds", (uint64_t)age);
    add_u64(a, "last_ack_time", (uint64_t)b.last_ack_s);
    add_u64(a, "acknowledged_seq", b.acknowledged_seq);
    json_object_object_add(a, "consecutive_failures", json_object_new_int((int)ss.failures));
    json_object_object_add(a, "last_error", json_object_new_string(ss.last_message));
    fprintf(prom, "pactfs_audit_unshipped_bytes %" PRIu64 "\n"
                "pactfs_audit_oldest_unshipped_age_seconds %" PRId64 "\n"
                "pactfs_audit_last_ack_time_seconds %" PRId64 "\n"
                "pactfs_audit_ship_failures %u\n", b.unshipped_bytes, age, b.last_ack_s,
                ss.failures);
    return a;
}

static json_object *writes_json(struct fs *fs, FILE *prom)
{
    json_object *w = json_object_new_object();
    struct fs_health h;

    fs_data_health(fs, &h);
    add_u64(w, "writeback_bytes", h.dirty_bytes);
    add_u64(w, "writeback_errors", h.writeback_errors);
    add_u64(w, "degraded_writes", h.degraded_writes);
    add_u64(w, "repair_queue", h.repair_queue);
    add_u64(w, "closed_files_in_writeback", h.stuck_files);
    add_u64(w, "repairs_done", h.repairs_done);
    add_u64(w, "repair_attempts_failed", h.repair_attempts_failed);
    add_u64(w, "file_commits", h.file_commits);
    add_u64(w, "fragment_syncs", h.fragment_syncs);
    json_object_object_add(w, "min_write_fragments",
                           json_object_new_int((int)object_layer_write_min(fs->v->ol)));
    json_object_object_add(w, "last_error", json_object_new_string(h.last_error));
    json_object_object_add(w, "last_error_time", json_object_new_int64(h.last_error_time));
    fprintf(prom,
                "pactfs_writeback_bytes %" PRIu64 "\n"
                "pactfs_writeback_errors_total %" PRIu64 "\n"
                "pactfs_degraded_writes_total %" PRIu64 "\n"
                "pactfs_repair_queue %" PRIu64 "\n"
                "pactfs_repairs_done_total %" PRIu64 "\n"
                "pactfs_repair_attempts_failed_total %" PRIu64 "\n"
                "pactfs_file_commits_total %" PRIu64 "\n"
                "pactfs_fragment_syncs_total %" PRIu64 "\n",
                h.dirty_bytes, h.writeback_errors, h.degraded_writes, h.repair_queue,
                h.repairs_done, h.repair_attempts_failed, h.file_commits, h.fragment_syncs);
    return w;
}

void fs_status_tick(struct fs *fs)
{
    const struct pactfs_conf *c = &fs->v->conf;
    json_object *o;
    char *text = NULL;
    size_t textlen = 0;
    FILE *prom;

    if (!fs->opt.status_path && !fs->opt.metrics_path)
        return;
    prom = open_memstream(&text, &textlen);
    if (!prom)
        return;
    o = json_object_new_object();
    json_object_object_add(o, "format", json_object_new_int(STATUS_FORMAT));
    json_object_object_add(o, "time", json_object_new_int64(time(NULL)));
    json_object_object_add(o, "pid", json_object_new_int(getpid()));
    json_object_object_add(o, "mountpoint", json_object_new_string(fs->opt.mountpoint));
    json_object_object_add(o, "metrics_file", json_object_new_string(fs->opt.metrics_path
                                                                       ? fs->opt.metrics_path
                                                                       : ""));
    json_object_object_add(o, "vault", json_object_new_string(c->vault_name));
    json_object_object_add(o, "vault_id", json_object_new_string(c->vault_id));
    json_object_object_add(o, "account", json_object_new_string(fs->v->account.name));
    json_object_object_add(o, "folders", json_object_new_int((int)fs->v->nfolders));
    json_object_object_add(o, "read_only", json_object_new_boolean(fs->opt.read_only));
    json_object_object_add(o, "key_service",
                           json_object_new_string(strcmp(c->share_provider, "keyd") == 0
                                                  ? c->keyd_url : "local key directory"));
    json_object_object_add(o, "endpoints", endpoints_json(fs, prom));
    json_object_object_add(o, "writes", writes_json(fs, prom));
    json_object_object_add(o, "audit", audit_json(fs, prom));
    fprintf(prom, "pactfs_status_time_seconds %lld\n", (long long)time(NULL));
    write_replace(fs->opt.status_path,
                  json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
    if (fclose(prom) == 0)
        write_replace(fs->opt.metrics_path, text);
    json_object_put(o);
    free(text);
}

void fs_health_unmount_report(struct fs *fs, uint64_t chunks)
{
    struct audit_ctx who = { getuid(), getpid() };

    audit_event(fs->v->audit, &who, "repair-pending", "/", -EIO, chunks);
}
