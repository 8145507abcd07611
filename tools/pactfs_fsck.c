/* pactfs-fsck: verify, repair and tidy the fragments of a vault.
 *
 * It works from the metadata store and the endpoints only: chunk records
 * carry the SHA-256 of every fragment, so a damaged fragment is found and
 * rebuilt from the others without any key or password.  A system
 * administrator can heal storage this way without being able to read it,
 * and fsck never prints a name (names are encrypted; it holds no key).
 *
 * Steps, in order: --gc (empty the deletion queue), verify (always),
 * --repair, --orphans (objects nothing names) with --delete-orphans. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "audit.h"
#include "audit_ship.h"
#include "crypto.h"
#include "endpoint.h"
#include "error.h"
#include "exitcodes.h"
#include "gc.h"
#include "log.h"
#include "meta.h"
#include "object.h"
#include "store.h"
#include "vault.h"
#include "vec.h"
#include "workq.h"

#define PROG "pactfs-fsck"
#define ORPHAN_MIN_AGE_S 600       /* older than any in-flight write of a mount */
#define TTY_REFRESH_NS 100000000LL /* progress bar: 10 updates a second */
#define LOG_REFRESH_NS 5000000000LL/* plain progress lines: every 5 seconds */
#define BAR_WIDTH 30
#define VERIFY_THREADS 4
#define VERIFY_BATCH 64
#define MIB (1024.0 * 1024.0)

struct fsck_args {
    const char *conf_path;
    int repair, gc, orphans, delete_orphans, quiet;
};

struct fsck {
    struct fsck_args args;
    struct vault *v;            /* stage 1 only: configuration, lock, metadata store */
    struct store *stores[EC_MAX_FRAGS];
    int endpoint_absent[EC_MAX_FRAGS];
    struct object_layer *ol;
    struct audit *audit;        /* an unsigned session: fsck holds no account key */
};

/* ------------------------------------------------------------ messages */

static void usage(FILE *out)
{
    fprintf(out,
"Usage: pactfs-fsck [OPTIONS] VAULT_DIR\n"
"       pactfs-fsck [OPTIONS] --config FILE\n"
"\n"
"Verify every fragment of a pactfs vault against the checksums in its\n"
"metadata, and optionally rebuild damaged fragments from the good ones.\n"
"Needs no password and no key: it never sees names or contents.\n"
"\n"
"Options:\n"
"  --config FILE      the vault configuration (default VAULT_DIR/pactfs.conf)\n"
"  --repair           rebuild missing or corrupt fragments, then verify again\n"
"  --gc               delete the fragments of chunks in the deletion queue\n"
"  --orphans          list endpoint objects that no chunk record names\n"
"  --delete-orphans   also delete those older than 10 minutes (implies --orphans)\n"
"  --quiet, -q        no progress output\n"
"  --help, --version\n"
"\n"
"--repair, --gc and --delete-orphans refuse to run while the vault is mounted\n"
"on this machine.  Exit codes: 0 healthy (or all repaired), 14 damage remains,\n"
"2 usage, 3 configuration, 7 store or metadata unusable, 9 vault mounted.\n");
}

static int report(int code, const char *fallback)
{
    const char *msg = pfs_err_msg();

    fprintf(stderr, PROG ": %s\n", msg[0] ? msg : fallback);
    return code;
}

static int64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------- progress */

struct progress {
    int enabled, tty;
    const char *what;
    uint64_t total, done, bytes;
    int64_t start, last;
    int drawn;
};

static void progress_start(struct progress *p, const struct fsck *f, const char *what,
                           uint64_t total)
{
    memset(p, 0, sizeof *p);
    p->enabled = !f->args.quiet && total > 0;
    p->tty = isatty(STDERR_FILENO);
    p->what = what;
    p->total = total;
    p->start = p->last = mono_ns();
}

static double progress_rate(const struct progress *p, int64_t now)
{
    double secs = (double)(now - p->start) / 1e9;

    return secs > 0 ? (double)p->bytes / MIB / secs : 0.0;
}

static void progress_draw(struct progress *p, int64_t now)
{
    uint64_t done = p->done < p->total ? p->done : p->total;
    unsigned pct = (unsigned)(done * 100 / p->total);
    unsigned fill = (unsigned)(done * BAR_WIDTH / p->total);
    char bar[BAR_WIDTH + 1];

    if (p->tty) {
        memset(bar, '#', fill);
        memset(bar + fill, '.', BAR_WIDTH - fill);
        bar[BAR_WIDTH] = '\0';
        fprintf(stderr, "\r%s [%s] %" PRIu64 "/%" PRIu64 " chunks %3u%% %7.1f MiB/s",
                p->what, bar, done, p->total, pct, progress_rate(p, now));
        p->drawn = 1;
    } else {
        fprintf(stderr, PROG ": %s: %" PRIu64 "/%" PRIu64 " chunks (%u%%), %.1f MiB/s\n",
                p->what, done, p->total, pct, progress_rate(p, now));
    }
    p->last = now;
}

static void progress_step(struct progress *p, uint64_t bytes)
{
    int64_t now;

    p->done++;
    p->bytes += bytes;
    if (!p->enabled)
        return;
    now = mono_ns();
    if (now - p->last >= (p->tty ? TTY_REFRESH_NS : LOG_REFRESH_NS))
        progress_draw(p, now);
}

static void progress_end(struct progress *p)
{
    if (!p->enabled || !p->tty)
        return;
    progress_draw(p, mono_ns());
    if (p->drawn)
        fputc('\n', stderr);
}

/* ------------------------------------------------------------ arguments */

static char conf_buf[PATH_MAX];

static int parse_args(int argc, char **argv, struct fsck_args *a)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "repair", no_argument, NULL, 'r' },
        { "gc", no_argument, NULL, 'g' },
        { "orphans", no_argument, NULL, 'o' },
        { "delete-orphans", no_argument, NULL, 'D' },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': a->conf_path = optarg; break;
        case 'r': a->repair = 1; break;
        case 'g': a->gc = 1; break;
        case 'o': a->orphans = 1; break;
        case 'D': a->orphans = a->delete_orphans = 1; break;
        case 'q': a->quiet = 1; break;
        case 'h': usage(stdout); exit(EXIT_OK);
        case 'V': printf(PROG " %s\n", PACKAGE_VERSION); exit(EXIT_OK);
        default: usage(stderr); return -1;
        }
    }
    if (a->conf_path && argc - optind == 0)
        return 0;
    if (!a->conf_path && argc - optind == 1) {
        snprintf(conf_buf, sizeof conf_buf, "%s/pactfs.conf", argv[optind]);
        a->conf_path = conf_buf;
        return 0;
    }
    fprintf(stderr, PROG ": give either VAULT_DIR or --config FILE (one of them)\n");
    usage(stderr);
    return -1;
}

/* -------------------------------------------------------------- opening */

/* A missing endpoint directory (failed disk) reads as an offline endpoint:
 * every fragment on it counts as missing, so verify reports them, and
 * --repair recreates the directory and rebuilds them. */
/* An endpoint whose marker (endpoint.h) is not this vault's endpoint i is
 * never written to nor cleaned: it stands offline, its fragments count as
 * missing. */
static int check_marker(struct fsck *f, unsigned i)
{
    enum endpoint_state st;
    char why[400], desc[4200];

    st = endpoint_mark_read(f->stores[i], f->v->meta, f->v->conf.vault_id, f->v->conf.root_fingerprint,
                            i, why, sizeof why, NULL, NULL);
    if (st == ENDPOINT_OK || st == ENDPOINT_UNREACHABLE ||
        (st == ENDPOINT_UNMARKED && !f->v->conf.endpoint_markers_required))
        return 0;
    fprintf(stderr, PROG ": endpoint %u (%s) is offline (%s): %s; its fragments count as "
            "missing and nothing is written to or deleted from it%s\n", i, f->stores[i]->desc,
            endpoint_state_name(st), why, st == ENDPOINT_UNMARKED ?
            ". If it is the right endpoint (a replacement), a sysadmin marks it with "
            "pactfs-admin endpoint-mark, then pactfs-fsck --repair rebuilds it" : "");
    snprintf(desc, sizeof desc, "%s", f->stores[i]->desc);
    store_close(f->stores[i]);
    f->stores[i] = NULL;
    f->endpoint_absent[i] = 1;
    return store_offline_new(desc, why, &f->stores[i]);
}

static int open_endpoint(struct fsck *f, unsigned i)
{
    const struct endpoint_conf *e = &f->v->conf.endpoints[i];
    struct stat st;

    if (e->type != ENDPOINT_DIR)
        return vault_open_endpoint(e, i, 0, &f->stores[i]);
    if (stat(e->path, &st) < 0 && errno == ENOENT) {
        char desc[4200];
        /* A replacement must be marked first, or it would stay offline. */
        int rebuild = f->args.repair && !f->v->conf.endpoint_markers_required;

        fprintf(stderr, PROG ": endpoint %u (%s) is missing: all its fragments count as "
                "missing%s\n", i, e->path,
                rebuild ? "; --repair recreates it and rebuilds them" :
                f->v->conf.endpoint_markers_required ? "; a sysadmin recreates it with "
                "pactfs-admin endpoint-mark --endpoint N, then pactfs-fsck --repair rebuilds "
                "its fragments" : "");
        f->endpoint_absent[i] = 1;
        if (!rebuild) {
            snprintf(desc, sizeof desc, "dir:%s", e->path);
            return store_offline_new(desc, "its directory is missing; fsck only recreates it "
                                     "with --repair", &f->stores[i]);
        }
        return store_dir_open(e->path, 1, &f->stores[i]);
    }
    return store_dir_open(e->path, 0, &f->stores[i]);
}

static int open_stores(struct fsck *f)
{
    int rc;

    for (unsigned i = 0; i < f->v->conf.n_endpoints; i++) {
        rc = open_endpoint(f, i);
        if (rc == 0 && !f->endpoint_absent[i])
            rc = check_marker(f, i);
        if (rc < 0)
            return rc;
    }
    return object_layer_new(f->stores, f->v->conf.n_endpoints, f->v->conf.k, f->v->conf.m, &f->ol);
}

/* Stage 1 of the vault opening (vault.h) and no further: fsck holds no
 * key.  It opens the endpoints itself: a missing one reads as offline
 * (recreated by --repair), where a mount would refuse or write around it. */
static int fsck_open(struct fsck *f)
{
    struct vault_storage_opts o = {
        .lock = f->args.repair || f->args.gc || f->args.delete_orphans,
        .own_endpoints = 1,
    };
    enum vault_stage failed = VAULT_STAGE_CONF;
    int rc = vault_open_storage(f->args.conf_path, &o, &f->v, &failed);

    if (rc < 0) {
        switch (failed) {
        case VAULT_STAGE_CONF:
            return report(EXIT_CONFIG, "cannot read the configuration");
        case VAULT_STAGE_LOCK:
            if (rc != -EWOULDBLOCK)
                return report(EXIT_STORE, "cannot create the lock");
            fprintf(stderr, PROG ": %s: unmount it before --repair, --gc or --delete-orphans; "
                    "verifying alone may run while it is mounted\n", pfs_err_msg());
            return EXIT_ALREADY_MOUNTED;
        case VAULT_STAGE_IDENTITY:
            return report(EXIT_CONFIG, "the metadata store does not match the configuration");
        default:
            return report(EXIT_STORE, "cannot open the metadata store");
        }
    }
    rc = open_stores(f);
    if (rc < 0)
        return report(rc == -ENOTSUP || rc == -EINVAL ? EXIT_CONFIG : EXIT_STORE,
                      "cannot open the storage endpoints");
    return EXIT_OK;
}

static void fsck_close(struct fsck *f)
{
    audit_close(f->audit);
    if (f->audit && f->v->conf.audit_url && audit_ship_pending(&f->v->conf, 10000) < 0)
        fprintf(stderr, PROG ": warning: audit events not shipped yet (%s); they wait in %s\n",
                pfs_err_msg(), f->v->conf.audit_spool);
    if (f->ol)
        object_layer_free(f->ol);
    for (unsigned i = 0; i < EC_MAX_FRAGS; i++)
        store_close(f->stores[i]);
    vault_close(f->v);   /* the metadata store, then the lock */
}

/* ------------------------------------------------------ chunk bookkeeping */

struct chunk_item {
    uint64_t ino, idx;
    struct chunk_ref ref;
    uint32_t bad;            /* fragments found missing or corrupt */
    int unrecoverable;
    char why[256];           /* verify's message when unrecoverable */
};

struct chunk_list {
    struct chunk_item *v;
    size_t n, cap;
};

static struct chunk_item *chunk_list_add(struct chunk_list *l)
{
    if (vec_reserve(&l->v, &l->cap, l->n + 1, sizeof *l->v, 16) < 0)
        return NULL;
    memset(&l->v[l->n], 0, sizeof l->v[0]);
    return &l->v[l->n++];
}

/* Fragment bytes a verify reads for one chunk (for the MiB/s figure). */
static uint64_t chunk_fragment_bytes(const struct chunk_ref *r)
{
    uint64_t k = r->k ? r->k : 1;

    return (r->sealed_len + k - 1) / k * ((uint64_t)r->k + r->m);
}

/* ------------------------------------------------------------------ gc */

/* Delete queued chunks batch by batch (gc.c, shared with the daemon); an
 * entry leaves the queue only once all its fragments are gone, so an
 * interrupted run loses nothing. */
static int run_gc(struct fsck *f)
{
    uint64_t deleted = 0;
    int rc = gc_run(f->v->meta, f->ol, NULL, f->v->conf.pack_grace_s, &deleted);

    if (rc == 0)
        rc = object_layer_sync(f->ol);
    printf("gc: %" PRIu64 " queued chunk%s deleted from the endpoints\n", deleted,
           deleted == 1 ? "" : "s");
    if (rc < 0)
        return report(EXIT_STORE, "the deletion queue could not be processed");
    return EXIT_OK;
}

/* -------------------------------------------------------------- verify */

struct tally {
    uint64_t checked, healthy, repairable, unrecoverable, changed, repaired;
    uint64_t bytes;
};

/* Chunks are verified VERIFY_THREADS at a time: one chunk's fragments are
 * fetched in parallel already, but a single chunk at a time leaves the
 * endpoints idle between round trips. */
struct verify_batch {
    struct object_layer *ol;
    struct workq *pool;       /* VERIFY_THREADS - 1 threads beside this one */
    struct chunk_item v[VERIFY_BATCH];
    unsigned n;
};

struct verify_walk {
    struct fsck *f;
    struct progress prog;
    struct verify_batch *batch;
    struct chunk_list damaged;
    struct tally t;
    int rc;
};

static int count_chunk(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    uint64_t *n = arg;

    (void)ino; (void)idx; (void)r;
    (*n)++;
    return 0;
}

static void verify_item(struct object_layer *ol, struct chunk_item *it)
{
    int rc;

    pfs_err_clear();
    rc = object_verify_chunk(ol, &it->ref, &it->bad);
    it->unrecoverable = rc < 0;
    if (rc < 0)
        snprintf(it->why, sizeof it->why, "%s", pfs_err_msg());
}

static void verify_at(void *arg, unsigned i)
{
    struct verify_batch *b = arg;

    verify_item(b->ol, &b->v[i]);
}

static void verify_batch_run(struct verify_batch *b)
{
    workq_for(b->pool, b->n, verify_at, b);
}

/* Verify the queued chunks and keep the damaged ones. */
static int verify_flush(struct verify_walk *w)
{
    struct verify_batch *b = w->batch;

    verify_batch_run(b);
    for (unsigned i = 0; i < b->n; i++) {
        struct chunk_item *it = &b->v[i], *keep;
        uint64_t bytes = chunk_fragment_bytes(&it->ref);

        w->t.checked++;
        w->t.bytes += bytes;
        progress_step(&w->prog, bytes);
        if (!it->unrecoverable && it->bad == 0)
            continue;
        keep = chunk_list_add(&w->damaged);
        if (!keep)
            return w->rc = pfs_err(-ENOMEM, "out of memory");
        *keep = *it;
    }
    b->n = 0;
    return 0;
}

static int verify_one(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    struct verify_walk *w = arg;
    struct chunk_item *it = &w->batch->v[w->batch->n++];

    memset(it, 0, sizeof *it);
    it->ino = ino;
    it->idx = idx;
    it->ref = *r;
    if (w->batch->n < VERIFY_BATCH)
        return 0;
    return verify_flush(w) < 0;
}

/* A mount elsewhere may rewrite or delete a chunk while we walk: damage on
 * a record that is no longer current is no damage. */
static int still_current(struct fsck *f, const struct chunk_item *it)
{
    struct chunk_ref now;

    if (meta_chunk_get(f->v->meta, it->ino, it->idx, &now) < 0)
        return 0;
    return memcmp(now.chunk_id, it->ref.chunk_id, CHUNK_ID_LEN) == 0;
}

static const char *fragment_state(struct fsck *f, const struct chunk_ref *r, unsigned frag,
                                  unsigned *endpoint)
{
    char name[OBJECT_NAME_MAX];
    uint64_t size;
    int rc;

    *endpoint = object_fragment_store(f->ol, r, frag);
    object_fragment_name(r->chunk_id, frag, name);
    rc = store_stat(object_layer_store(f->ol, *endpoint), name, &size);
    if (rc == 0 || !r->packed)
        return rc == -ENOENT ? "missing" : rc < 0 ? "unreadable" : "corrupt";
    /* packed, and not repaired as a standalone object: the pack tells */
    object_pack_name(r->pack, name);
    rc = store_stat(object_layer_store(f->ol, *endpoint), name, &size);
    if (rc == -ENOENT)
        return "missing (its pack is gone)";
    return rc < 0 ? "unreadable" : "corrupt (its bytes in the pack fail their checksum)";
}

static void print_fragments(struct fsck *f, const struct chunk_item *it)
{
    const char *sep = "";

    for (unsigned i = 0; i < (unsigned)it->ref.k + it->ref.m; i++) {
        unsigned ep;
        const char *state;

        if (!(it->bad & (1u << i)))
            continue;
        state = fragment_state(f, &it->ref, i, &ep);
        printf("%sfragment %u on endpoint %u (%s) %s", sep, i, ep,
               object_layer_store(f->ol, ep)->desc, state);
        sep = ", ";
    }
}

static void print_damage(struct fsck *f, const char *label, const struct chunk_item *it)
{
    char id[2 * CHUNK_ID_LEN + 1];

    hex_encode(it->ref.chunk_id, CHUNK_ID_LEN, id);
    printf("%s: inode %" PRIu64 " chunk %" PRIu64 " (id %s): ", label, it->ino, it->idx, id);
    if (it->bad)
        print_fragments(f, it);
    else
        printf("%s", it->why);
    printf("\n");
}

static int run_verify(struct fsck *f, struct verify_walk *w)
{
    uint64_t total = 0;
    size_t kept = 0;
    int rc;

    rc = meta_chunk_list(f->v->meta, 0, count_chunk, &total);
    if (rc < 0)
        return report(EXIT_STORE, "cannot list the chunk records");
    w->batch = calloc(1, sizeof *w->batch);
    if (!w->batch)
        return report(EXIT_FAILURE_OTHER, "out of memory");
    w->batch->ol = f->ol;
    if (workq_new(VERIFY_THREADS - 1, "verify", &w->batch->pool) < 0) {
        free(w->batch);
        w->batch = NULL;
        return report(EXIT_FAILURE_OTHER, "cannot start the verify threads");
    }
    progress_start(&w->prog, f, "verifying", total);
    rc = meta_chunk_list(f->v->meta, 0, verify_one, w);
    if (rc == 0 && w->rc == 0 && w->batch->n)
        verify_flush(w);
    progress_end(&w->prog);
    workq_free(w->batch->pool);
    free(w->batch);
    w->batch = NULL;
    if (rc < 0 || w->rc < 0)
        return report(EXIT_STORE, "cannot list the chunk records");
    for (size_t i = 0; i < w->damaged.n; i++) {
        struct chunk_item *it = &w->damaged.v[i];

        if (!still_current(f, it)) {
            w->t.changed++;
            continue;
        }
        w->damaged.v[kept++] = *it;
        if (it->unrecoverable)
            w->t.unrecoverable++;
        else
            w->t.repairable++;
        print_damage(f, it->unrecoverable ? "unrecoverable" : "damaged", it);
    }
    w->damaged.n = kept;
    w->t.healthy = w->t.checked - w->t.changed - kept;
    return EXIT_OK;
}

/* -------------------------------------------------------------- repair */

static void print_repaired(const struct chunk_item *it)
{
    char id[2 * CHUNK_ID_LEN + 1];
    const char *sep = "";

    hex_encode(it->ref.chunk_id, CHUNK_ID_LEN, id);
    printf("repaired: inode %" PRIu64 " chunk %" PRIu64 " (id %s): rebuilt fragment%s ",
           it->ino, it->idx, id, __builtin_popcount(it->bad) == 1 ? "" : "s");
    for (unsigned i = 0; i < EC_MAX_FRAGS; i++)
        if (it->bad & (1u << i)) {
            printf("%s%u", sep, i);
            sep = ", ";
        }
    printf("\n");
}

/* Rebuild, make durable, then believe only a fresh verify. */
static int run_repair(struct fsck *f, struct verify_walk *w)
{
    struct progress prog;
    int sync_rc;

    progress_start(&prog, f, "repairing", w->t.repairable);
    for (size_t i = 0; i < w->damaged.n; i++) {
        struct chunk_item *it = &w->damaged.v[i];

        if (it->unrecoverable)
            continue;
        if (object_repair_chunk(f->ol, &it->ref, it->bad) < 0)
            fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        progress_step(&prog, chunk_fragment_bytes(&it->ref));
    }
    progress_end(&prog);
    sync_rc = object_layer_sync(f->ol);
    if (sync_rc < 0)
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
    for (size_t i = 0; i < w->damaged.n; i++) {
        struct chunk_item *it = &w->damaged.v[i];
        uint32_t bad = 0;

        if (it->unrecoverable)
            continue;
        if (sync_rc == 0 && object_verify_chunk(f->ol, &it->ref, &bad) == 0 && bad == 0) {
            w->t.repaired++;
            print_repaired(it);
        } else {
            it->bad = bad ? bad : it->bad;
            print_damage(f, "not repaired", it);
        }
    }
    return EXIT_OK;
}

/* ------------------------------------------------------------- orphans */

/* A chunk a record names, or (is_pack) a pack one names or the free list
 * holds: its "<id>.p" objects are known on every endpoint. */
struct known_chunk {
    uint8_t id[CHUNK_ID_LEN];
    uint8_t rotation, nfrags, queued, is_pack;
};

struct known_set {
    struct known_chunk *v;
    size_t n, cap;
    int oom;
};

_Static_assert(PACK_ID_LEN == CHUNK_ID_LEN, "packs and chunks share the known set");

static int known_add_id(struct known_set *s, const uint8_t *id, const struct chunk_ref *r,
                        int queued)
{
    if (vec_reserve(&s->v, &s->cap, s->n + 1, sizeof *s->v, 256) < 0) {
        s->oom = 1;
        return 1;
    }
    memset(&s->v[s->n], 0, sizeof s->v[0]);
    memcpy(s->v[s->n].id, id, CHUNK_ID_LEN);
    if (r) {
        s->v[s->n].rotation = r->rotation;
        s->v[s->n].nfrags = (uint8_t)(r->k + r->m);
    } else {
        s->v[s->n].is_pack = 1;
    }
    s->v[s->n++].queued = (uint8_t)queued;
    return 0;
}

static int known_add(struct known_set *s, const struct chunk_ref *r, int queued)
{
    if (known_add_id(s, r->chunk_id, r, queued))
        return 1;
    return r->packed ? known_add_id(s, r->pack, NULL, queued) : 0;
}

static int known_from_free_pack(void *arg, const uint8_t *pack, size_t len)
{
    return len == PACK_ID_LEN ? known_add_id(arg, pack, NULL, 1) : 0;
}

static int known_from_ref(void *arg, uint64_t ino, uint64_t idx, const struct chunk_ref *r)
{
    (void)ino; (void)idx;
    return known_add(arg, r, 0);
}

static int known_from_gc(void *arg, uint64_t id, const struct chunk_ref *r)
{
    (void)id;
    return known_add(arg, r, 1);
}

static int known_cmp(const void *a, const void *b)
{
    return memcmp(((const struct known_chunk *)a)->id, ((const struct known_chunk *)b)->id,
                  CHUNK_ID_LEN);
}

struct orphan {
    char name[OBJECT_NAME_MAX * 3];
    uint64_t size;
};

struct orphan_scan {
    struct fsck *f;
    const struct known_set *known;
    unsigned endpoint;
    struct orphan *v;
    size_t n, cap;
    int oom;
};

/* A pack "<32 hex>.p" that a record or the free list names. */
static int pack_named(const struct orphan_scan *sc, const struct known_chunk *key)
{
    size_t i;

    /* many chunks name one pack, so several entries share its id */
    const struct known_chunk *hit = bsearch(key, sc->known->v, sc->known->n, sizeof *key,
                                            known_cmp);
    if (!hit)
        return 0;
    i = (size_t)(hit - sc->known->v);
    while (i > 0 && known_cmp(&sc->known->v[i - 1], key) == 0)
        i--;
    for (; i < sc->known->n && known_cmp(&sc->known->v[i], key) == 0; i++)
        if (sc->known->v[i].is_pack)
            return 1;
    return 0;
}

/* Is name "<32 hex>.<frag>" with frag placed on this endpoint by a record,
 * or a pack ("<32 hex>.p") one names? */
static int named_by_record(const struct orphan_scan *sc, const char *name)
{
    struct known_chunk key, *hit;
    char hex[2 * CHUNK_ID_LEN + 1], canonical[OBJECT_NAME_MAX];
    char *end;
    unsigned long frag;

    if (strlen(name) < 2 * CHUNK_ID_LEN + 2 || name[2 * CHUNK_ID_LEN] != '.')
        return 0;
    memcpy(hex, name, 2 * CHUNK_ID_LEN);
    hex[2 * CHUNK_ID_LEN] = '\0';
    if (hex_decode(hex, key.id, CHUNK_ID_LEN) < 0)
        return 0;
    object_pack_name(key.id, canonical);
    if (strcmp(canonical, name) == 0)
        return pack_named(sc, &key);
    errno = 0;
    frag = strtoul(name + 2 * CHUNK_ID_LEN + 1, &end, 10);
    if (errno || *end || frag >= EC_MAX_FRAGS)
        return 0;
    /* Only the exact name the object layer writes counts ("x.01" is not "x.1"). */
    object_fragment_name(key.id, (unsigned)frag, canonical);
    if (strcmp(canonical, name) != 0)
        return 0;
    hit = bsearch(&key, sc->known->v, sc->known->n, sizeof key, known_cmp);
    if (hit && hit->is_pack)   /* ids are random: a pack's id is no chunk's */
        return 0;
    if (!hit)
        return 0;
    if (hit->queued)
        return 1;   /* --gc deletes these */
    return frag < hit->nfrags &&
           (hit->rotation + frag) % object_layer_nstores(sc->f->ol) == sc->endpoint;
}

static int scan_object(void *arg, const char *name, uint64_t size)
{
    struct orphan_scan *sc = arg;

    if (named_by_record(sc, name) || !strcmp(name, ENDPOINT_MARK_OBJECT))
        return 0;
    if (vec_reserve(&sc->v, &sc->cap, sc->n + 1, sizeof *sc->v, 16) < 0) {
        sc->oom = 1;
        return 1;
    }
    snprintf(sc->v[sc->n].name, sizeof sc->v[0].name, "%s", name);
    sc->v[sc->n++].size = size;
    return 0;
}

/* Seconds since the object was written, or -1 where the endpoint type
 * cannot tell (then it is never deleted).  Directory endpoints keep object
 * "abcd" at DIR/ab/abcd (docs/format-objects.md). */
static int64_t object_age(const struct fsck *f, unsigned ep, const char *name)
{
    const struct endpoint_conf *e = &f->v->conf.endpoints[ep];
    char path[PATH_MAX];
    struct stat st;

    if (e->type != ENDPOINT_DIR)
        return -1;
    snprintf(path, sizeof path, "%s/%c%c/%s", e->path, name[0], name[1] ? name[1] : '_', name);
    if (stat(path, &st) < 0)
        return -1;
    return (int64_t)time(NULL) - (int64_t)st.st_mtime;
}

static void handle_orphan(struct fsck *f, unsigned ep, const struct orphan *o,
                          uint64_t *deleted, uint64_t *kept_young, int *failed)
{
    int64_t age = object_age(f, ep, o->name);
    struct store *s = object_layer_store(f->ol, ep);

    printf("orphan: endpoint %u (%s) object %s, %" PRIu64 " bytes", ep, s->desc, o->name,
           o->size);
    if (age >= 0)
        printf(", %" PRId64 " s old", age);
    if (!f->args.delete_orphans) {
        printf("\n");
        return;
    }
    if (age < 0) {
        printf(": kept (its age cannot be told, so it may be a write in progress)\n");
        (*kept_young)++;
        return;
    }
    if (age < ORPHAN_MIN_AGE_S) {
        printf(": kept (younger than %d minutes, may be a write in progress)\n",
               ORPHAN_MIN_AGE_S / 60);
        (*kept_young)++;
        return;
    }
    if (store_del(s, o->name) < 0) {
        printf(": not deleted: %s\n", pfs_err_msg());
        *failed = 1;
        return;
    }
    printf(": deleted\n");
    (*deleted)++;
}

static int scan_endpoint(struct fsck *f, const struct known_set *known, unsigned ep,
                         uint64_t *found, uint64_t *deleted, uint64_t *young, int *failed)
{
    struct orphan_scan sc = { .f = f, .known = known, .endpoint = ep };
    int rc;

    if (f->endpoint_absent[ep])
        return 0;
    rc = store_list(object_layer_store(f->ol, ep), scan_object, &sc);
    if (rc == 0 && sc.oom)
        rc = pfs_err(-ENOMEM, "out of memory listing endpoint %u", ep);
    for (size_t i = 0; rc == 0 && i < sc.n; i++)
        handle_orphan(f, ep, &sc.v[i], deleted, young, failed);
    *found += sc.n;
    free(sc.v);
    return rc;
}

static int run_orphans(struct fsck *f)
{
    struct known_set known = { 0 };
    uint64_t found = 0, deleted = 0, young = 0;
    int failed = 0, rc;

    rc = meta_chunk_list(f->v->meta, 0, known_from_ref, &known);
    if (rc == 0 && !known.oom)
        rc = meta_gc_list(f->v->meta, 0, known_from_gc, &known);
    if (rc == 0 && !known.oom)
        rc = meta_free_packs_list(f->v->meta, INT64_MAX, 0, known_from_free_pack, &known);
    if (rc == 0 && known.oom)
        rc = pfs_err(-ENOMEM, "out of memory collecting chunk ids");
    if (rc < 0) {
        free(known.v);
        return report(EXIT_STORE, "cannot list the chunk records");
    }
    qsort(known.v, known.n, sizeof *known.v, known_cmp);
    for (unsigned ep = 0; ep < f->v->conf.n_endpoints && rc == 0; ep++)
        rc = scan_endpoint(f, &known, ep, &found, &deleted, &young, &failed);
    free(known.v);
    if (rc == 0 && deleted)
        rc = object_layer_sync(f->ol);
    printf("orphans: %" PRIu64 " found", found);
    if (f->args.delete_orphans)
        printf(", %" PRIu64 " deleted, %" PRIu64 " kept as younger than %d minutes", deleted,
               young, ORPHAN_MIN_AGE_S / 60);
    printf("\n");
    if (rc < 0)
        return report(EXIT_STORE, "cannot list the endpoints");
    return failed ? EXIT_STORE : EXIT_OK;
}

/* ------------------------------------------------------------- summary */

static int print_summary(const struct fsck *f, const struct verify_walk *w)
{
    const struct tally *t = &w->t;
    uint64_t left = t->unrecoverable + (t->repairable - t->repaired);

    printf("vault \"%s\": %" PRIu64 " chunks checked (%.1f MiB of fragments): %" PRIu64
           " healthy, %" PRIu64 " repairable, %" PRIu64 " unrecoverable",
           f->v->conf.vault_name, t->checked, (double)t->bytes / MIB, t->healthy,
           t->repairable, t->unrecoverable);
    if (t->changed)
        printf(", %" PRIu64 " rewritten while checking (skipped)", t->changed);
    printf("\n");
    if (f->args.repair)
        printf("repaired %" PRIu64 " of %" PRIu64 " repairable chunks\n", t->repaired,
               t->repairable);
    if (left == 0) {
        printf("no damage remains\n");
        return EXIT_OK;
    }
    if (t->repairable > t->repaired && !f->args.repair)
        printf("run pactfs-fsck --repair (with the vault unmounted) to rebuild the "
               "repairable chunks\n");
    if (t->unrecoverable)
        printf("unrecoverable chunks have fewer good fragments than needed: restore the "
               "files holding them from backup (a member of the folder finds a file by "
               "its inode: find MOUNTPOINT -inum INODE)\n");
    return EXIT_INTEGRITY;
}

/* ---------------------------------------------------------------- main */

/* Each step is an audit event: ok, or the exit code's meaning as an errno
 * (damage: EBADMSG, storage: EIO).  Fail closed: a step that changes
 * storage does not run unless its start could be recorded. */
static int fsck_audit(struct fsck *f, const char *op, int code, uint64_t count)
{
    struct audit_ctx who = { getuid(), getpid() };
    int result = code == EXIT_OK ? 0 : code == EXIT_INTEGRITY ? -EBADMSG : -EIO;

    if (!f->audit)
        return 0;
    if (audit_event(f->audit, &who, op, f->v->conf.vault_name, result, count) < 0) {
        fprintf(stderr, PROG ": cannot write the audit spool %s: %s\n", f->v->conf.audit_spool,
                pfs_err_msg());
        return -EIO;
    }
    return 0;
}

static int fsck_audit_open(struct fsck *f)
{
    struct audit_identity id = { .account = "" };

    if (audit_open(f->v->conf.audit_spool, f->v->conf.vault_id, &id, &f->audit) < 0) {
        fprintf(stderr, PROG ": cannot open the audit spool %s: %s\n", f->v->conf.audit_spool,
                pfs_err_msg());
        return EXIT_AUDIT;
    }
    return EXIT_OK;
}

static int fsck_run(struct fsck *f)
{
    struct verify_walk w = { .f = f };
    int code, other = EXIT_OK;

    code = fsck_audit_open(f);
    if (code != EXIT_OK)
        return code;
    if (f->args.gc) {
        code = run_gc(f);
        if (fsck_audit(f, "fsck-gc", code, 0) < 0)
            return EXIT_AUDIT;
        if (code != EXIT_OK)
            return code;
    }
    code = run_verify(f, &w);
    if (fsck_audit(f, "fsck-verify", code == EXIT_OK && (w.t.repairable || w.t.unrecoverable)
                   ? EXIT_INTEGRITY : code, w.t.checked) < 0)
        return EXIT_AUDIT;
    if (code == EXIT_OK && f->args.repair) {
        if (w.t.repairable)
            code = run_repair(f, &w);
        if (fsck_audit(f, "fsck-repair", code == EXIT_OK && (w.t.repaired < w.t.repairable ||
                                                             w.t.unrecoverable)
                       ? EXIT_INTEGRITY : code, w.t.repaired) < 0)
            return EXIT_AUDIT;
    }
    if (code == EXIT_OK && f->args.orphans) {
        other = run_orphans(f);
        if (fsck_audit(f, f->args.delete_orphans ? "fsck-delete-orphans" : "fsck-orphans",
                       other, 0) < 0)
            return EXIT_AUDIT;
    }
    if (code == EXIT_OK)
        code = print_summary(f, &w);
    free(w.damaged.v);
    /* Damage outranks a failed orphan deletion in the exit code. */
    return code == EXIT_OK ? other : code;
}

int main(int argc, char **argv)
{
    struct fsck f = { 0 };
    int code;

    pfs_log_init(PROG, PFS_LOG_INFO);
    if (parse_args(argc, argv, &f.args) < 0)
        return EXIT_USAGE;
    code = fsck_open(&f);
    if (code == EXIT_OK)
        code = fsck_run(&f);
    fsck_close(&f);
    return code;
}
