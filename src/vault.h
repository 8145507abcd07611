/* A vault opened by one account: the glue the daemon and the tools share.
 *
 * Opened in stages (see "Opening in stages" below): storage, then the key
 * provider, then the unlock of one account (its private key from password
 * + share, every envelope it holds, the audit spool).  Nothing here knows
 * about FUSE.
 */
#ifndef PACTFS_VAULT_H
#define PACTFS_VAULT_H

#include <stddef.h>
#include <pthread.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "audit.h"
#include "conf.h"
#include "envelope.h"
#include "meta.h"
#include "object.h"
#include "share.h"

/* One contract folder the account holds an envelope for and is a member
 * of by the folder's verified signed state (folder_state.h). */
struct vault_folder {
    uint64_t id;
    uint64_t root_ino;
    uint32_t rights;                 /* RIGHT_*, from the signed folder state */
    uint32_t cur_version;            /* key version for new data (signed state) */
    uint32_t rights_version;         /* key version whose envelope gave rights */
    struct folder_keys **keys;       /* index = key_version (NULL if not held) */
    uint32_t nkeys;
};

struct vault {
    struct pactfs_conf conf;
    struct meta *meta;
    struct store *stores[EC_MAX_FRAGS];  /* guards of eps (endpoint.h) */
    struct endpoint_set *eps;
    struct object_layer *ol;
    struct share_provider *sp;       /* NULL before stage 2 */
    int lock_fd, locked;             /* vault_storage_opts.lock */
    struct audit *audit;             /* NULL until unlocked */
    int audit_failed;                /* vault_unlock failed writing the audit spool */
    struct meta_account account;     /* the unlocked account */
    EVP_PKEY *priv;                  /* its private key (NULL until unlocked) */
    struct vault_folder *folders;    /* grown by copy (see folder_slot) */
    size_t nfolders;
    void **retired_folders;          /* earlier arrays, freed at close */
    size_t nretired;
    /* Set before vault_unlock: */
    int roster_force_anchor;         /* an older roster accepted (audited) */
    int accept_rollback;             /* mount --accept-metadata-rollback (audited) */
    int allow_legacy;                /* pactfs-admin upgrade: a vault without a head */
    /* Set by vault_unlock: */
    int legacy;                      /* no signed vault head yet (format 1) */
    int anchor_after_login;          /* anchor the head again once logged in:
                                        1 advance, 2 force (accepted rollback) */
    struct file_head_state *fhead;   /* vault_file_head_open (mounts only) */
};

/* The signed file head of a mounted vault (vault_filehead.c, file_head.h).
 * open: after vault_unlock, verify the stored head and check it against
 * its anchor (-ESTALE: older than the anchor or deleted, -EBADMSG: does not
 * verify; audited, unless v->accept_rollback).  floor: the lowest
 * commitment generation file ino may have (0: none known).  note_commit:
 * file ino's commit landed (appended to a list).  advance: if commits were
 * noted, rewrite their buckets, sign and store the next root; else re-read
 * the stored root, and the buckets whose hash changed, if another mount
 * advanced it (refresh).  Callers hold whatever serialises
 * their use of v->meta, and make the metadata durable before anchoring. */
int vault_file_head_open(struct vault *v);
uint64_t vault_file_floor(struct vault *v, uint64_t ino);
void vault_file_head_note_commit(struct vault *v, uint64_t ino);
/* advance: called with meta_lock held (the lock that serialises this
 * mount's use of v->meta; NULL: sign under it too); it is released while
 * the root is signed and held again on return. */
int vault_file_head_advance(struct vault *v, pthread_mutex_t *meta_lock);
int vault_file_head_refresh(struct vault *v);
/* Anchor the head the last advance signed, once it is durable (outside any
 * lock that operations wait for: with pactfs-keyd it is a request). */
void vault_file_head_anchor(struct vault *v);
void vault_file_head_close(struct vault *v);

/* Opening in stages (vault_open.c), each for the programs that stop there:
 *
 * 1. storage (vault_open_storage): the configuration, the vault lock if
 *    asked, the metadata store, its vault identity, the endpoints.  No key:
 *    the keyless pactfs-fsck stops here (and opens its endpoints itself,
 *    own_endpoints, because it must see a missing endpoint and rebuild it).
 * 2. key provider (vault_open_key_provider): the local key directory or
 *    the key service holding the second share.  pactfs-admin commands that
 *    only read the registry stop here.
 * 3. unlock (vault_unlock): one account's key, envelopes and audit session.
 *
 * Exit-code-worthy failures come back as negative errno with pfs_err set:
 * -ENOENT config or store missing, -EINVAL malformed config,
 * -EKEYREJECTED wrong password, -EBUSY locked out, -EHOSTUNREACH key
 * service unreachable, -EIO store failure. */
enum vault_stage {
    VAULT_STAGE_CONF,        /* the configuration file */
    VAULT_STAGE_LOCK,        /* -EWOULDBLOCK: a mount or a repair holds it */
    VAULT_STAGE_META,        /* the metadata store does not open */
    VAULT_STAGE_IDENTITY,    /* -EINVAL: the store is not this vault's */
    VAULT_STAGE_ENDPOINTS,   /* too many endpoints offline, or a bad one */
};
struct vault_storage_opts {
    int lock;                /* hold CONF.lock exclusively until vault_close */
    int own_endpoints;       /* the caller opens the endpoints (v->eps stays NULL) */
};
/* Stage 1.  o NULL: no lock, endpoints opened.  On failure *out is NULL
 * and *failed (if not NULL) names the step that failed. */
int vault_open_storage(const char *conf_path, const struct vault_storage_opts *o,
                       struct vault **out, enum vault_stage *failed);
/* Stage 2, on a vault opened by stage 1. */
int vault_open_key_provider(struct vault *v);
/* Stages 1 and 2 (no lock, endpoints opened). */
int vault_open(const char *conf_path, struct vault **out);
/* Let vault_open succeed with more than m endpoints offline (pactfs-admin
 * endpoint-mark, which is how replaced endpoints come back). */
void vault_tolerate_offline_endpoints(int on);
/* Open endpoint i (0-based) of a configuration, of whichever type. */
int vault_open_endpoint(const struct endpoint_conf *e, unsigned i, int create,
                        struct store **out);
/* Unlock also checks the freshness of the metadata: the signed vault head
 * must verify and be no older than the one anchored in the share provider
 * (-ESTALE, audited "rollback", unless v->accept_rollback: then audited
 * "rollback-accepted" and the anchor is reset).  A vault without a head is
 * refused (-EPROTONOSUPPORT: run pactfs-admin upgrade) unless
 * v->allow_legacy.  Folders whose signed state does not verify, is older
 * than the head, or disagrees with the folders table are left out with a
 * warning and an audited "tamper" event. */
int vault_unlock(struct vault *v, const char *account, const char *password);
/* May the unlocked account mount data?  Only user and dataadmin accounts
 * do (a backup account is a user with read grants); a sysadmin or an
 * auditor without one of those roles is refused with -EACCES, and the
 * refusal is audited as a denied "mount" of mountpoint. */
int vault_check_mount_role(struct vault *v, const char *mountpoint);
/* After a change signed a new vault head: anchor it (no-op if the
 * provider cannot anchor). */
int vault_anchor_head(struct vault *v);

/* The registry's trust for the role roster of an open vault (t filled). */
struct roster_trust;
const struct roster_trust *vault_roster_trust(const struct vault *v, struct roster_trust *t);

/* Anchor the current signed role roster step (roster.h) at the share
 * provider (no-op without a roster or anchors; force: the audited
 * override of a detected rollback). */
int vault_roster_anchor_put(struct meta *m, const char *vault_id, const char *root_fp,
                            struct share_provider *sp, int force);
void vault_close(struct vault *v);
/* Make vault_close ship the audit spool to the configured receiver (one
 * attempt, the spool is the buffer): pactfs-admin, which runs without the
 * mount daemon's shipper. */
void vault_ship_at_close(int on);

/* Folder lookups for the unlocked account (NULL if it holds no envelope). */
struct vault_folder *vault_folder_by_id(struct vault *v, uint64_t folder_id);
const struct folder_keys *vault_folder_keys(struct vault *v, uint64_t folder_id,
                                            uint32_t key_version);

/* Creation of a vault on the embedded default, for `pactfs-admin init`:
 * DIR/pactfs.conf, DIR/meta.db, DIR/stores/{0,1,2}, DIR/keys (0700),
 * DIR/audit.log, the vault root key (its fingerprint pinned in the conf),
 * a sysadmin account certified by the root, the first data account (roles
 * dataadmin|user) certified by the sysadmin, and a first folder named
 * folder_name with read|write|manage for the data account.
 * -EEXIST if DIR already holds a vault. */
struct vault_init_opts {
    const char *dir;
    const char *vault_name;
    const char *account;
    const char *password;
    const char *folder_name;
    unsigned k, m;                   /* 0: defaults */
    uint32_t chunk_size;             /* 0: default */
    const struct pwkdf_params *kdf;  /* NULL: defaults */
    unsigned rsa_bits;               /* 0: 3072 */
    /* Key service instead of the local key directory (keyd_url != NULL). */
    const char *keyd_url;
    const char *keyd_ca_file;
    const char *keyd_cert_file;
    const char *keyd_key_file;
    const char *keyd_admin_token_file; /* enrollment needs the admin token */
    /* Audit receiver (pactfs-auditd) the vault's events are shipped to. */
    const char *audit_url;
    const char *audit_ca_file, *audit_cert_file, *audit_key_file;
    /* Metadata in PostgreSQL instead of DIR/meta.db (libpq conninfo; a
     * network connection needs sslmode=verify-full). */
    const char *pg_conninfo;
    /* The sysadmin account (NULL: "<account>-admin" with the same password). */
    const char *sysadmin;
    const char *sysadmin_password;
};
int vault_init(const struct vault_init_opts *o);

/* Replace the unlocked-or-not account's sealed key (after a password
 * change or share rotation) and audit it. */
/* Open an audit session on spool_path whose names are sealed to the
 * vault's audit names key when it has one (audit_names_for_writer: fails
 * closed if that key was removed or replaced after this machine used it).
 * id's names fields are set here. */
int vault_audit_open(struct meta *m, const char *spool_path, const char *vault_id,
                     const char *root_fp, struct audit_identity *id, struct audit **out);
/* Audit a failed or refused action of account: in the vault's session
 * when one is open, else in an unsigned session of its own.  0 or -errno. */
int vault_audit_failure(struct vault *v, const char *account, const char *op, const char *what,
                        int rc);

int vault_account_store_sealed(struct vault *v, const char *account, const uint8_t *sealed,
                               size_t sealed_len, const char *audit_op);

/* Create a folder (dataadmin), its root directory and an envelope for the
 * unlocked account with all rights. */
int vault_folder_create(struct vault *v, const char *name, uint64_t *folder_id);
/* The same inside the caller's metadata transaction, without the audit
 * event (a mount's mkdir at its root audits in its own transaction). */
int vault_folder_create_txn(struct vault *v, const char *name, uint64_t *folder_id);
/* Open this account's envelope of folder_id and add the folder to
 * v->folders (after a create), verifying its grant as unlock does. */
int vault_folder_load(struct vault *v, uint64_t folder_id);

/* The name an account's key was sealed and enrolled under (it stays when
 * a sysadmin renames the account), from its verified registry record. */
int vault_account_key_name(struct vault *v, const char *account, char *out, size_t outlen);

#endif
