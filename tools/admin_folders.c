/* pactfs-admin: contract folders: create, grant, revoke and re-key
 * (admin.h). */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "error.h"
#include "exitcodes.h"
#include "grants.h"
#include "log.h"
#include "rekey.h"
#include "vault.h"

/* ---- re-keying (rekey.h) ---- */

struct rekey_bar {
    int tty;
    const char *folder;
    int64_t last;        /* CLOCK_MONOTONIC ms of the last line */
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A bar on a terminal (10 updates a second), else a line every 5 s. */
static void rekey_progress(void *arg, const struct rekey_stats *st)
{
    struct rekey_bar *b = arg;
    uint64_t done = st->rekeyed + st->already + st->left;
    int64_t now = now_ms();
    char bar[31];
    unsigned fill;

    if (now - b->last < (b->tty ? 100 : 5000) && (done != st->files || st->meta_todo))
        return;
    b->last = now;
    if (done == st->files && st->meta_todo) {
        /* after the files: names, symlink targets and xattrs */
        if (b->tty) {
            pfs_log_progress("rekey /%s names, symlink targets, xattrs: %" PRIu64 "/%" PRIu64
                             " re-sealed\033[K", b->folder, st->meta_done, st->meta_todo);
        } else {
            fprintf(stderr, PROG ": rekey /%s: %" PRIu64 "/%" PRIu64 " names, symlink targets "
                    "and xattrs\n", b->folder, st->meta_done, st->meta_todo);
        }
        return;
    }
    if (!b->tty) {
        if (done != st->files)
            fprintf(stderr, PROG ": rekey /%s: %" PRIu64 "/%" PRIu64 " files\n", b->folder, done,
                    st->files);
        return;
    }
    fill = st->files ? (unsigned)(done * 30 / st->files) : 30;
    memset(bar, '#', fill);
    memset(bar + fill, '.', 30 - fill);
    bar[30] = '\0';
    pfs_log_progress("rekey /%s [%s] %" PRIu64 "/%" PRIu64 " files, %.1f MiB re-sealed", b->folder,
                     bar, done, st->files, (double)st->bytes / (1024.0 * 1024.0));
}

/* Re-key folder on an unlocked vault and say what was done. */
static int run_rekey(struct vault *v, const char *folder)
{
    struct rekey_bar bar = { isatty(STDERR_FILENO), folder, 0 };
    struct rekey_stats st;
    int rc = rekey_folder(v, folder, rekey_progress, &bar, &st);

    pfs_log_progress_done();
    if (rc == 0 || rc == -EBADMSG)
        printf("Folder \"%s\": %" PRIu64 " files re-keyed under fresh data keys (%" PRIu64
               " chunks, %.1f MiB), %" PRIu64 " already under the current key, %" PRIu64
               " left.\n", folder, st.rekeyed, st.chunks, (double)st.bytes / (1024.0 * 1024.0),
               st.already, st.left - st.meta_left);
    if (rc == 0 || rc == -EBADMSG)
        printf("Names, symlink targets and xattrs: %" PRIu64 " re-sealed under the current "
               "key, %" PRIu64 " already (%" PRIu64 " names, %" PRIu64 " targets and xattrs "
               "in all), %" PRIu64 " left.\n", st.resealed,
               st.names + st.values - st.resealed - st.meta_left, st.names, st.values,
               st.meta_left);
    return rc;
}

int cmd_folder_create(struct admin_ctx *c)
{
    snprintf(c->done, sizeof c->done, "Created folder \"%s\"; \"%s\" can read, write and "
             "manage it.", c->pos[0], c->account);
    return vault_folder_create(c->v, c->pos[0], NULL);
}

int prepare_grant(struct admin_ctx *c)
{
    if (grants_rights_parse(c->pos[2], &c->bits) < 0) {
        fprintf(stderr, PROG ": %s\n", pfs_err_msg());
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

int cmd_grant(struct admin_ctx *c)
{
    const char *folder = c->pos[0], *grantee = c->pos[1];

    snprintf(c->done, sizeof c->done, "\"%s\" can now %s folder \"%s\" (from its next mount).",
             grantee, c->pos[2], folder);
    return grants_grant(c->v, folder, grantee, c->bits);
}

int cmd_revoke(struct admin_ctx *c)
{
    struct vault *v = c->v;
    struct vault_folder *f = NULL;
    const char *folder = c->pos[0], *target = c->pos[1];
    int rc;

    snprintf(c->done, sizeof c->done, "\"%s\" no longer holds folder \"%s\"; its key was "
             "rotated (members' running mounts pick it up within "
             "accounts.revocation_check_seconds; %s).", target, folder,
             c->a.rekey ? "existing files, names, symlink targets and xattrs were re-keyed"
             : "existing data, names, symlink targets and xattrs stay under the old key until "
             "pactfs-admin rekey");
    rc = grants_revoke(v, folder, target);
    if (rc == 0 && c->a.rekey) {
        /* the new key version this process just wrapped for itself */
        rc = grants_managed_folder(v, folder, &f);
        if (rc == 0)
            rc = vault_folder_load(v, f->id);
        if (rc == 0)
            rc = run_rekey(v, folder);
        if (rc < 0)
            fprintf(stderr, PROG ": the revoke and key rotation are done; the re-keying is "
                    "not: run pactfs-admin rekey %s to finish it\n", folder);
    }
    return rc;
}

int cmd_rekey(struct admin_ctx *c)
{
    snprintf(c->done, sizeof c->done, "Every file of the folder is under its current key "
             "version.");
    return run_rekey(c->v, c->pos[0]);
}
