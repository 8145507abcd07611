#include "config.h"

/* The signed file head in a mounted vault (file_head.h): checked against
 * its anchor at mount, its floors consulted when a file is opened, and
 * advanced by this mount every FILE_HEAD_PERIOD seconds while it commits
 * files, and at unmount.  Nothing here runs per commit but a counter. */

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "file_head.h"
#include "log.h"
#include "share.h"
#include "vault.h"

struct file_head_state {
    pthread_mutex_t lock;
    struct file_head h;           /* the newest head this mount verified */
    uint64_t *dirty;              /* files committed since the last advance */
    size_t ndirty, cap;
    int dirty_oom;                /* a note was lost: the next advance rebuilds */
    int anchor_warned;
    uint64_t reported;            /* a rolled-back head reported at this counter */
    uint64_t pending_counter;     /* signed, not yet anchored (0: none) */
    uint8_t pending_hash[SHA256_LEN];
};

/* The anchor slot of the file head at the share provider. */
static void slot(const struct vault *v, char *out, size_t len)
{
    snprintf(out, len, "%s%s", v->conf.vault_id, FILE_HEAD_ANCHOR_SUFFIX);
}

static void source_name(const struct vault *v, char *out, size_t len)
{
    snprintf(out, len, "the %s share provider (%s)", v->sp->ops->name,
             v->conf.share_keydir ? v->conf.share_keydir : v->conf.keyd_url ?
             v->conf.keyd_url : "?");
}

/* Anchor (counter, hash of the stored head); a provider that cannot is
 * warned about once.  A newer anchor (another workstation advanced
 * meanwhile) is fine. */
static void anchor_hash_put(struct vault *v, uint64_t counter, const uint8_t hash[SHA256_LEN])
{
    struct file_head_state *s = v->fhead;
    char id[300];
    int rc;

    if (!v->sp->ops->anchor_put)
        return;
    slot(v, id, sizeof id);
    rc = v->sp->ops->anchor_put(v->sp, id, counter, hash, NULL, 0, 0);
    if (rc < 0 && rc != -ESTALE && !s->anchor_warned) {
        s->anchor_warned = 1;
        log_warning("cannot anchor the signed file head in the %s share provider (%s): a file "
                    "put back to an older version is detected only by mounts that saw the "
                    "newer one", v->sp->ops->name,
                    rc == -EOPNOTSUPP ? "it keeps no anchors" : pfs_err_msg());
    }
}

int vault_file_head_open(struct vault *v)
{
    struct file_head_state *s = calloc(1, sizeof *s);
    uint8_t *raw = NULL, ahash[SHA256_LEN], *ablob = NULL;
    size_t rawlen = 0, alen = 0;
    uint64_t acounter = 0;
    char id[300], source[600], keep[1024];
    int rc, arc = -EOPNOTSUPP, accepted = 0;

    if (!s)
        return pfs_err(-ENOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    v->fhead = s;
    slot(v, id, sizeof id);
    source_name(v, source, sizeof source);
    if (v->sp->ops->anchor_get)
        arc = v->sp->ops->anchor_get(v->sp, id, &acounter, ahash, &ablob, &alen);
    free(ablob);
    if (arc < 0 && arc != -ENOENT && arc != -EOPNOTSUPP) {
        log_warning("cannot read the file head anchor from %s: %s",
                    source, pfs_err_msg());
        arc = -EOPNOTSUPP;
    }
    /* the root against its anchor first: an older head put back is a
     * rollback (17) whether or not its buckets came back with it */
    rc = file_head_load_root(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &s->h, &raw,
                             &rawlen);
    if (rc == -ENOENT && arc == 0)
        rc = pfs_err(-ESTALE, "the metadata holds no signed file head, but %s has seen file "
                     "head %" PRIu64 ": it was deleted from the metadata store", source,
                     acounter);
    else if (rc == -ENOENT)
        rc = 0;                   /* none yet: this mount's first advance makes one */
    else if (rc == 0 && arc == 0)
        rc = file_head_check_anchor(&s->h, raw, rawlen, acounter, ahash, source);
    if (rc == 0 && raw)
        rc = file_head_load_buckets(v->meta, v->conf.vault_id, &s->h);
    if (rc == -ESTALE && v->accept_rollback) {
        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        log_warning("ACCEPTING AN OLDER FILE HEAD (--accept-metadata-rollback): %s", keep);
        (void)vault_audit_failure(v, v->account.name, "rollback-accepted", keep, 0);
        accepted = 1;
        /* older, but its buckets must still be its own */
        rc = raw ? file_head_load_buckets(v->meta, v->conf.vault_id, &s->h) : 0;
        if (rc == 0 && raw && v->sp->ops->anchor_put) {
            uint8_t hash[SHA256_LEN];

            sha256(raw, rawlen, hash);
            (void)v->sp->ops->anchor_put(v->sp, id, s->h.counter, hash, NULL, 0, 1);
        }
    }
    if (rc == -ESTALE || rc == -EBADMSG) {
        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        (void)vault_audit_failure(v, v->account.name, rc == -ESTALE ? "rollback" : "tamper",
                                  keep, rc);
        rc = pfs_err(rc, "%s; nothing was mounted%s", keep, rc == -ESTALE ?
                     " (if this older metadata must be used, mount once with "
                     "--accept-metadata-rollback: it is audited)" : "");
    } else if (rc == 0 && raw && !accepted) {
        uint8_t hash[SHA256_LEN];

        sha256(raw, rawlen, hash);
        anchor_hash_put(v, s->h.counter, hash);
    }
    free(raw);
    if (rc < 0) {
        file_head_clear(&s->h);
        return rc;
    }
    return 0;
}

uint64_t vault_file_floor(struct vault *v, uint64_t ino)
{
    struct file_head_state *s = v->fhead;
    uint64_t floor;

    if (!s)
        return 0;
    pthread_mutex_lock(&s->lock);
    floor = file_head_floor(&s->h, ino);
    pthread_mutex_unlock(&s->lock);
    return floor;
}

void vault_file_head_note_commit(struct vault *v, uint64_t ino)
{
    struct file_head_state *s = v->fhead;

    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    if (s->ndirty && s->dirty[s->ndirty - 1] == ino) {
        /* the same file again (a save is often two commits) */
    } else if (s->ndirty < s->cap) {
        s->dirty[s->ndirty++] = ino;
    } else {
        size_t cap = s->cap ? s->cap * 2 : 256;
        uint64_t *d = realloc(s->dirty, cap * sizeof *d);

        if (d) {
            s->dirty = d;
            s->cap = cap;
            s->dirty[s->ndirty++] = ino;
        } else {
            s->dirty_oom = 1;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

/* Take the noted files (the caller owns *d). */
static void take_dirty(struct file_head_state *s, uint64_t **d, size_t *n, int *oom)
{
    pthread_mutex_lock(&s->lock);
    *d = s->dirty;
    *n = s->ndirty;
    *oom = s->dirty_oom;
    s->dirty = NULL;
    s->ndirty = s->cap = 0;
    s->dirty_oom = 0;
    pthread_mutex_unlock(&s->lock);
}

/* Put back the notes of an advance that failed. */
static void untake_dirty(struct vault *v, const uint64_t *d, size_t n, int oom)
{
    for (size_t i = 0; i < n; i++)
        vault_file_head_note_commit(v, d[i]);
    if (oom) {
        pthread_mutex_lock(&v->fhead->lock);
        v->fhead->dirty_oom = 1;
        pthread_mutex_unlock(&v->fhead->lock);
    }
}

int vault_file_head_advance(struct vault *v, pthread_mutex_t *meta_lock)
{
    struct file_head_state *s = v->fhead;
    struct fh_delta next;
    struct fh_prep *x = NULL;
    uint8_t *raw = NULL;
    uint64_t *dirty = NULL;
    size_t rawlen = 0, behind = 0, ndirty = 0;
    uint64_t first_behind = 0;
    int rc, rolled_back = 0, oom = 0;

    if (!s || !v->priv)
        return 0;
    take_dirty(s, &dirty, &ndirty, &oom);
    if (!ndirty && !oom) {
        free(dirty);
        return vault_file_head_refresh(v);
    }
    /* s->h is only replaced by this thread (the mount's syncer): reading
     * it without the lock is safe here.  A lost note (out of memory): the
     * head is rebuilt from every file's row, as a format-1 head is. */
    if (oom)
        s->h.version = 1;
    /* Read and plan under meta_lock; sign (the RSA signature, the buckets'
     * encoding and hashes) without it, so that the mount's other metadata
     * operations do not wait for it; write under it again.  Safe because
     * seal touches neither v->meta nor s->h (prepare copied what it
     * needs), and publish writes only if the stored root is still the one
     * prepare read, inside a transaction holding the head lock: another
     * writer's advance meanwhile (another mount, or a re-signing by
     * pactfs-admin) moves the root and makes it -EAGAIN, and then the
     * whole advance runs again under the lock.  Commits this mount makes
     * meanwhile are noted for the next advance; the floors read before
     * them are lower bounds, which is all a floor has to be. */
    rc = meta_lock ? file_head_prepare(v->meta, v->conf.vault_id, v->conf.root_fingerprint,
                                       &s->h, dirty, ndirty, &x, NULL) : -EAGAIN;
    if (rc == 0) {
        pthread_mutex_unlock(meta_lock);
        rc = file_head_seal(x, v->priv, v->conf.vault_id, v->account.id);
        pthread_mutex_lock(meta_lock);
    }
    if (rc == 0)
        rc = file_head_publish(v->meta, x, NULL);
    if (rc == 0)
        file_head_prep_result(x, &next, &raw, &rawlen, &rolled_back, &behind, &first_behind);
    file_head_prep_free(x);
    if (rc == -EAGAIN)
        rc = file_head_advance(v->meta, v->conf.vault_id, v->conf.root_fingerprint, v->priv,
                               v->account.id, &s->h, dirty, ndirty, &next, &raw, &rawlen,
                               &rolled_back, &behind, &first_behind, NULL);
    if (rc < 0) {
        untake_dirty(v, dirty, ndirty, oom);
        free(dirty);
        return rc;
    }
    free(dirty);
    if (rolled_back) {
        char what[300];

        snprintf(what, sizeof what, "the signed file head in the metadata store is older "
                 "than file head %" PRIu64 " this mount verified, or was altered: it was "
                 "rolled back; the newer floors were kept", s->h.counter);
        log_error("%s", what);
        (void)vault_audit_failure(v, v->account.name, "rollback", what, -ESTALE);
    }
    if (behind) {
        char what[300];

        snprintf(what, sizeof what, "inode %" PRIu64 " (and %zu other file(s)) holds a "
                 "commitment older than the signed file head allows: an older version was "
                 "put back in the metadata store", first_behind, behind - 1);
        log_error("%s", what);
        (void)vault_audit_failure(v, v->account.name, "tamper", what, -EBADMSG);
    }
    pthread_mutex_lock(&s->lock);
    rc = file_head_apply(&s->h, &next);
    if (rc == 0) {
        s->pending_counter = next.counter;  /* anchored once durable (vault_file_head_anchor) */
        memcpy(s->pending_hash, next.raw_hash, SHA256_LEN);
    }
    pthread_mutex_unlock(&s->lock);
    file_head_delta_clear(&next);
    free(raw);
    return rc;
}

void vault_file_head_anchor(struct vault *v)
{
    struct file_head_state *s = v->fhead;
    struct file_head h = { 0 };
    uint8_t hash[SHA256_LEN];

    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    h.counter = s->pending_counter;
    memcpy(hash, s->pending_hash, SHA256_LEN);
    s->pending_counter = 0;
    pthread_mutex_unlock(&s->lock);
    if (h.counter)
        anchor_hash_put(v, h.counter, hash);
}

int vault_file_head_refresh(struct vault *v)
{
    struct file_head_state *s = v->fhead;
    struct fh_delta d;
    int rc;

    if (!s)
        return 0;
    /* the root's bytes unchanged (the common case): nothing more is read */
    rc = file_head_refresh(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &s->h, &d,
                           NULL);
    if (rc == -ENOENT && !s->h.counter)
        return 0;
    if (rc == -ENOENT)
        rc = pfs_err(-ESTALE, "the signed file head in the metadata store (0) is older than "
                     "file head %" PRIu64 " this mount verified, or was removed: it was "
                     "rolled back", s->h.counter);
    if (rc == 0 && d.counter) {
        pthread_mutex_lock(&s->lock);
        rc = file_head_apply(&s->h, &d);
        pthread_mutex_unlock(&s->lock);
    }
    file_head_delta_clear(&d);
    if ((rc == -ESTALE || rc == -EBADMSG) && s->reported != s->h.counter) {
        char what[700];

        s->reported = s->h.counter;     /* once per head: the next advance repairs it */
        snprintf(what, sizeof what, "%s", pfs_err_msg());
        log_error("%s", what);
        (void)vault_audit_failure(v, v->account.name, rc == -ESTALE ? "rollback" : "tamper",
                                  what, rc);
    }
    return rc;
}

void vault_file_head_close(struct vault *v)
{
    struct file_head_state *s = v->fhead;

    if (!s)
        return;
    v->fhead = NULL;
    file_head_clear(&s->h);
    free(s->dirty);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
