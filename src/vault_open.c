/* Opening a vault in stages (vault.h, "Opening in stages").
 *
 * Stage 1, storage: the configuration, optionally the vault lock, the
 * metadata store and its vault identity, the endpoints.  No key and no
 * password: all the keyless pactfs-fsck needs.
 * Stage 2, key provider: who holds the second share of an account key
 * (the local key directory or pactfs-keyd).  Nothing is unlocked yet; the
 * commands that only read the registry stop here.
 * Stage 3, unlock (vault_unlock in vault.c): the account's private key,
 * its envelopes, the audit session.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "endpoint.h"
#include "roster.h"
#include "error.h"
#include "meta_backend.h"
#include "vault.h"

#define VAULT_PARAM_ID "vault_id"

/* ------------------------------------------------------ stage 1: storage */

/* The lock a repair holds alone; each mount holds it shared
 * (mount_peers.c), so a repair never runs beside a mount on this machine. */
static int lock_vault(struct vault *v)
{
    char path[PATH_MAX + 8];

    snprintf(path, sizeof path, "%s.lock", v->conf.file);
    v->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (v->lock_fd < 0)
        return pfs_err(-errno, "cannot create the lock %s: %s", path, strerror(errno));
    v->locked = 1;
    if (flock(v->lock_fd, LOCK_EX | LOCK_NB) < 0)
        return pfs_err(-EWOULDBLOCK, "the vault is mounted on this machine (%s is held)", path);
    return 0;
}

/* The metadata must belong to the vault the configuration names, or a
 * mistyped path would mix two vaults' data (or make fsck judge one vault
 * by another's records). */
static int check_vault_identity(struct vault *v)
{
    uint8_t *id = NULL;
    size_t len = 0;
    int rc = meta_param_get(v->meta, VAULT_PARAM_ID, &id, &len);

    if (rc < 0)
        return pfs_err(-EINVAL, "the metadata store of %s holds no vault id: it is not a pactfs vault",
                       v->conf.file);
    if (len != strlen(v->conf.vault_id) || memcmp(id, v->conf.vault_id, len) != 0)
        rc = pfs_err(-EINVAL, "the metadata store belongs to another vault than %s names "
                     "(vault.id differs): check metadata settings", v->conf.file);
    free(id);
    return rc;
}

int vault_open_endpoint(const struct endpoint_conf *e, unsigned i, int create,
                        struct store **out)
{
    return endpoint_open_store(e, i, create, out);
}

/* Every endpoint behind a guard (endpoint.c): one that is unreachable or
 * not the endpoint it should be (its signed marker) is offline, so reads
 * rebuild from parity and writes store the other fragments.  More than m
 * offline means some chunks cannot be read at all: refuse to open. */
static int tolerate_offline;   /* vault_tolerate_offline_endpoints */

void vault_tolerate_offline_endpoints(int on)
{
    tolerate_offline = on;
}

static int open_stores(struct vault *v)
{
    const struct pactfs_conf *c = &v->conf;
    unsigned offline = 0;
    int rc = endpoint_set_open(c, v->meta, &offline, &v->eps);

    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < c->n_endpoints; i++)
        v->stores[i] = endpoint_set_store(v->eps, i);
    if (offline > c->m && !tolerate_offline) {
        char why[400], first[520] = "";
        struct roster ro;

        /* The markers are a sysadmin's signatures: with a role roster that
         * does not verify, no sysadmin does; say that first. */
        struct roster_trust t;

        rc = roster_load(vault_roster_trust(v, &t), &ro, NULL, NULL);
        roster_clear(&ro);
        if (rc < 0 && rc != -ENOENT) {
            snprintf(first, sizeof first, "%s", pfs_err_msg());
            return pfs_err(-EBADMSG, "%s; so no sysadmin's signature verifies, not even the "
                           "endpoints' markers (a sysadmin must check the metadata store)",
                           first);
        }

        for (unsigned i = 0; i < c->n_endpoints && !first[0]; i++)
            if (endpoint_set_state(v->eps, i, why, sizeof why) != ENDPOINT_OK)
                snprintf(first, sizeof first, "endpoint %u: %s", i, why);
        return pfs_err(-EIO, "%u of %u endpoints are offline and at most %u may be (m): "
                       "the data cannot be read. First problem: %s", offline, c->n_endpoints,
                       c->m, first);
    }
    rc = object_layer_new(v->stores, c->n_endpoints, c->k, c->m, &v->ol);
    if (rc == 0)   /* degraded writes: default k, so up to m endpoints may be down */
        rc = object_layer_set_write_min(v->ol, c->min_write_fragments ? c->min_write_fragments
                                                                      : c->k);
    if (rc == 0)
        rc = object_layer_set_pack_max(v->ol, c->pack_max);
    return rc;
}

/* Close a vault that failed to open, keeping the failure's message. */
static int open_failed(struct vault *v, int rc)
{
    char keep[512];

    snprintf(keep, sizeof keep, "%s", pfs_err_msg());
    vault_close(v);
    return pfs_err(rc, "%s", keep);
}

int vault_open_storage(const char *conf_path, const struct vault_storage_opts *o,
                       struct vault **out, enum vault_stage *failed)
{
    static const struct vault_storage_opts plain = { 0 };
    struct vault *v = calloc(1, sizeof *v);
    enum vault_stage stage = VAULT_STAGE_CONF;
    char err[512];
    int rc;

    *out = NULL;
    if (!o)
        o = &plain;
    if (!v)
        return -ENOMEM;
    v->lock_fd = -1;
    rc = conf_load(conf_path, &v->conf, err, sizeof err);
    if (rc < 0) {
        free(v);
        if (failed)
            *failed = stage;
        return pfs_err(-EINVAL, "%s", err);
    }
    if (o->lock) {
        stage = VAULT_STAGE_LOCK;
        rc = lock_vault(v);
    }
    if (rc == 0) {
        stage = VAULT_STAGE_META;
        rc = meta_open(&v->conf, &v->meta);
    }
    if (rc == 0) {
        stage = VAULT_STAGE_IDENTITY;
        rc = check_vault_identity(v);
    }
    if (rc == 0 && !o->own_endpoints) {
        stage = VAULT_STAGE_ENDPOINTS;
        rc = open_stores(v);
    }
    if (rc < 0) {
        if (failed)
            *failed = stage;
        return open_failed(v, rc);
    }
    *out = v;
    return 0;
}

/* ------------------------------------------------- stage 2: key provider */

int vault_open_key_provider(struct vault *v)
{
    const struct pactfs_conf *c = &v->conf;

    if (strcmp(c->share_provider, "keyd") == 0) {
        struct keyd_client_config kc = {
            .url = c->keyd_url,
            .ca_file = c->keyd_tls.ca_file,
            .cert_file = c->keyd_tls.cert_file,
            .key_file = c->keyd_tls.key_file,
        };
        return share_keyd_open(&kc, &v->sp);
    }
    return share_local_open(c->share_keydir, &v->sp);
}

/* Stages 1 and 2: what the daemon and pactfs-admin open before unlocking
 * (stage 3, vault_unlock) or reading the registry. */
int vault_open(const char *conf_path, struct vault **out)
{
    int rc = vault_open_storage(conf_path, NULL, out, NULL);

    if (rc < 0)
        return rc;
    rc = vault_open_key_provider(*out);
    if (rc < 0) {
        rc = open_failed(*out, rc);
        *out = NULL;
    }
    return rc;
}
