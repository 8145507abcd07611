/* The vault configuration file (libconfig syntax), documented setting by
 * setting in docs/config.md and pactfs.conf(5).  Relative paths are resolved
 * against the directory of the configuration file.  Errors name the file,
 * the line and the setting.
 */
#ifndef PACTFS_CONF_H
#define PACTFS_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "erasure.h"

enum endpoint_type { ENDPOINT_DIR = 1, ENDPOINT_S3 = 2 };

struct tls_conf {
    char *ca_file;          /* CA bundle for verifying servers (NULL: system) */
    char *cert_file;        /* optional client certificate */
    char *key_file;
};

struct endpoint_conf {
    enum endpoint_type type;
    char *path;             /* dir: absolute path */
    char *url;              /* s3: https://host:port */
    char *bucket;
    char *region;
    char *access_key;
    char *secret_key;
    struct tls_conf tls;
};

/* coding.pack_max and coding.pack_grace defaults (docs/config.md). */
#define CONF_PACK_MAX_DEFAULT 65536u
#define CONF_PACK_GRACE_DEFAULT_S 86400u

struct pactfs_conf {
    char *file;             /* absolute path of the file this came from */
    char *dir;              /* its directory */
    char *vault_name;
    char *vault_id;         /* 32 hex chars, fixed at init */
    char *root_fingerprint; /* hex SHA-256 of the vault root public key (NULL until set) */
    char *default_account;  /* account `pactfs mount` uses without --account */
    int endpoint_markers_required; /* vault.endpoint_markers = "required" (endpoint.h) */
    unsigned k, m;
    unsigned min_write_fragments; /* fewest fragments a write stores (k..k+m); 0: k */
    uint32_t chunk_size;    /* bytes, power of two, 64 KiB .. 16 MiB */
    uint32_t pack_max;      /* chunks sealed to at most this many bytes share pack
                               objects (0: never); default CONF_PACK_MAX_DEFAULT */
    uint32_t pack_grace_s;  /* a pack no record names is deleted this long after */
    unsigned n_endpoints;
    struct endpoint_conf endpoints[EC_MAX_FRAGS];

    char *meta_backend;     /* "sqlite" or "postgresql" */
    char *meta_path;        /* sqlite: absolute path */
    char *meta_conninfo;    /* postgresql: libpq conninfo */
    uint32_t meta_lease_s;  /* postgresql: a mount's session lease (default 30) */
    uint32_t meta_poll_ms;  /* postgresql: change feed poll period (default 1000) */
    uint32_t revocation_check_s; /* accounts: how often a mount re-checks its access (15) */

    char *share_provider;   /* "local" or "keyd" */
    char *share_keydir;     /* local: absolute path */
    char *keyd_url;         /* keyd */
    struct tls_conf keyd_tls;

    char *audit_spool;      /* absolute path of the local audit spool */
    char *audit_url;        /* optional HTTPS receiver; NULL = spool only */
    struct tls_conf audit_tls;

    uint32_t cache_mib;     /* plaintext read cache budget */
    uint32_t dirty_mib;     /* write-back buffer budget */
    unsigned workers;       /* seal/code/scatter threads */
};

/* Parse and validate.  0, or -EINVAL/-ENOENT with a message in err that
 * names file:line and the setting. */
int conf_load(const char *path, struct pactfs_conf *out, char *err, size_t errlen);
/* Fill defaults (k=2, m=1, chunk 1 MiB, cache 256, dirty 256, workers 4,
 * sqlite, local shares, no audit url). */
void conf_defaults(struct pactfs_conf *c);
/* Write c as a commented libconfig file (mode 0600), atomically. */
int conf_write(const char *path, const struct pactfs_conf *c);
void conf_free(struct pactfs_conf *c);

/* The transport rule for a PostgreSQL conninfo, checked before connecting:
 * a network host needs sslmode=verify-full (verify-ca and weaker refused,
 * libpq's PGHOST/PGHOSTADDR/PGSSLMODE taken into account, a service file
 * refused).  0, or -EINVAL with the reason in why. */
int conf_pg_conninfo_check(const char *conninfo, char *why, size_t whylen);

#endif
