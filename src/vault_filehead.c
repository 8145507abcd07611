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
    uint64_t commits;             /* commits noted since the last advance */
    int anchor_warned;
    uint64_t reported;            /* a rolled-back head reported at this counter */
    uint64_t pending_counter;     /* signed, not yet anchored (0: none) */
    uint8_t seen_hash[SHA256_LEN];  /* of the stored head last verified (seen set) */
    int seen;
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
    int rc, arc = -EOPNOTSUPP;

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
    rc = file_head_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &s->h, &raw,
                        &rawlen);
    if (rc == -ENOENT && arc == 0)
        rc = pfs_err(-ESTALE, "the metadata holds no signed file head, but %s has seen file "
                     "head %" PRIu64 ": it was deleted from the metadata store", source,
                     acounter);
    else if (rc == -ENOENT)
        rc = 0;                   /* none yet: this mount's first advance makes one */
    else if (rc == 0 && arc == 0)
        rc = file_head_check_anchor(&s->h, raw, rawlen, acounter, ahash, source);
    if (rc == -ESTALE && v->accept_rollback) {
        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        log_warning("ACCEPTING AN OLDER FILE HEAD (--accept-metadata-rollback): %s", keep);
        (void)vault_audit_failure(v, v->account.name, "rollback-accepted", keep, 0);
        rc = 0;
        if (raw && v->sp->ops->anchor_put) {
            uint8_t hash[SHA256_LEN];

            sha256(raw, rawlen, hash);
            (void)v->sp->ops->anchor_put(v->sp, id, s->h.counter, hash, NULL, 0, 1);
        }
    } else if (rc == -ESTALE || rc == -EBADMSG) {
        snprintf(keep, sizeof keep, "%s", pfs_err_msg());
        (void)vault_audit_failure(v, v->account.name, rc == -ESTALE ? "rollback" : "tamper",
                                  keep, rc);
        rc = pfs_err(rc, "%s; nothing was mounted%s", keep, rc == -ESTALE ?
                     " (if this older metadata must be used, mount once with "
                     "--accept-metadata-rollback: it is audited)" : "");
    } else if (rc == 0 && raw) {
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

void vault_file_head_note_commit(struct vault *v)
{
    if (v->fhead)
        __atomic_add_fetch(&v->fhead->commits, 1, __ATOMIC_RELAXED);
}

int vault_file_head_advance(struct vault *v)
{
    struct file_head_state *s = v->fhead;
    struct file_head next;
    uint8_t *raw = NULL;
    size_t rawlen = 0, behind = 0;
    uint64_t first_behind = 0, commits;
    int rc, rolled_back = 0;

    if (!s || !v->priv)
        return 0;
    commits = __atomic_load_n(&s->commits, __ATOMIC_RELAXED);
    if (!commits)
        return vault_file_head_refresh(v);
    /* s->h is only replaced by this thread (the mount's syncer): reading
     * it without the lock is safe here. */
    rc = file_head_advance(v->meta, v->conf.vault_id, v->conf.root_fingerprint, v->priv,
                           v->account.id, &s->h, &next, &raw, &rawlen, &rolled_back, &behind,
                           &first_behind);
    if (rc < 0)
        return rc;
    __atomic_sub_fetch(&s->commits, commits, __ATOMIC_RELAXED);
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
    file_head_clear(&s->h);
    s->h = next;
    s->pending_counter = next.counter;    /* anchored once durable (vault_file_head_anchor) */
    sha256(raw, rawlen, s->pending_hash);
    memcpy(s->seen_hash, s->pending_hash, SHA256_LEN);
    s->seen = 1;
    pthread_mutex_unlock(&s->lock);
    free(raw);
    return 0;
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
    struct file_head h;
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    int rc;

    if (!s)
        return 0;
    /* unchanged bytes (the common case): nothing to verify again */
    uint8_t now[SHA256_LEN];
    if (meta_param_get(v->meta, FILE_HEAD_PARAM, &raw, &rawlen) == 0) {
        sha256(raw, rawlen, now);
        free(raw);
        raw = NULL;
        if (s->seen && memcmp(now, s->seen_hash, SHA256_LEN) == 0)
            return 0;
    }
    rc = file_head_load(v->meta, v->conf.vault_id, v->conf.root_fingerprint, &h, &raw,
                        &rawlen);
    if (rc == -ENOENT && !s->h.counter)
        return 0;
    if (rc == 0) {
        sha256(raw, rawlen, s->seen_hash);   /* verified: compared by its bytes next time */
        s->seen = 1;
    }
    if (rc == 0 && h.counter == s->h.counter) {
        file_head_clear(&h);
        free(raw);
        return 0;
    }
    if (rc == 0 && h.counter > s->h.counter)
        rc = file_head_not_older(&s->h, &h, "the head this mount verified");
    else if (rc == 0 || rc == -ENOENT)
        rc = pfs_err(-ESTALE, "the signed file head in the metadata store (%" PRIu64 ") is "
                     "older than file head %" PRIu64 " this mount verified, or was removed: "
                     "it was rolled back", rc == 0 ? h.counter : 0, s->h.counter);
    if (rc == 0) {
        pthread_mutex_lock(&s->lock);
        file_head_clear(&s->h);
        s->h = h;
        pthread_mutex_unlock(&s->lock);
        free(raw);
        return 0;
    }
    file_head_clear(&h);
    free(raw);
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
    pthread_mutex_destroy(&s->lock);
    free(s);
}
