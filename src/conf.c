#include "config.h"

/* The vault configuration file: libconfig parses it, this module checks
 * every setting against what pactfs can safely run with and says, with
 * FILE:LINE and the setting's name, what is wrong and what is allowed.
 * Unknown settings are refused so that a typo never silently falls back to
 * a default.  Layout and meaning of every setting: docs/config.md. */

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <libgen.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "error.h"
#include "fileio.h"
#include "object.h"
#include "secmem.h"

#define CHUNK_MIN (64u * 1024u)
#define CHUNK_MAX (16u * 1024u * 1024u)
#define VAULT_ID_HEX 32
#define FINGERPRINT_HEX 64
#define NAME_MAX_LEN 255

/* What a loader needs to resolve paths and report errors. */
struct loader {
    const char *file;       /* absolute path of the configuration file */
    const char *dir;        /* its directory, for relative paths */
    char *err;
    size_t errlen;
};

/* ---------- error reporting ---------- */

/* "vault.id", "endpoints[1].url": the setting as a person would search for
 * it in the file. */
static void setting_path(const config_setting_t *s, char *out, size_t len)
{
    const config_setting_t *chain[32];
    int depth = 0;
    size_t used = 0;

    for (; s && !config_setting_is_root(s) && depth < 32; s = config_setting_parent(s))
        chain[depth++] = s;
    out[0] = '\0';
    while (depth-- > 0 && used < len) {
        const char *name = config_setting_name(chain[depth]);

        if (name)
            used += (size_t)snprintf(out + used, len - used, "%s%s", used ? "." : "", name);
        else
            used += (size_t)snprintf(out + used, len - used, "[%d]",
                                     config_setting_index(chain[depth]));
    }
}

static const char *setting_file(const struct loader *ld, const config_setting_t *s)
{
    const char *f = s ? config_setting_source_file(s) : NULL;

    return f ? f : ld->file;
}

/* Record "FILE:LINE: setting 'x.y': <reason>" in the caller's buffer and in
 * pfs_err, and return neg. */
static int conf_fail(const struct loader *ld, const config_setting_t *s, int neg,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int conf_fail(const struct loader *ld, const config_setting_t *s, int neg,
                     const char *fmt, ...)
{
    char reason[512];
    char where[256];
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    setting_path(s, where, sizeof where);
    if (s && config_setting_source_line(s) > 0)
        snprintf(msg, sizeof msg, "%s:%u: setting '%s': %s", setting_file(ld, s),
                 (unsigned)config_setting_source_line(s), where, reason);
    else
        snprintf(msg, sizeof msg, "%s: %s", ld->file, reason);
    if (ld->err && ld->errlen)
        snprintf(ld->err, ld->errlen, "%s", msg);
    return pfs_err(neg, "%s", msg);
}

/* A required member is missing: point at the group that should hold it. */
static int conf_missing(const struct loader *ld, const config_setting_t *group,
                        const char *name, const char *what)
{
    if (!group || config_setting_is_root(group))
        return conf_fail(ld, NULL, -EINVAL, "required setting '%s' is missing (%s)",
                         name, what);
    return conf_fail(ld, group, -EINVAL, "required setting '%s' is missing (%s)",
                     name, what);
}

/* ---------- generic checks ---------- */

static bool name_in(const char *name, const char *const *allowed)
{
    for (; *allowed; allowed++)
        if (strcmp(name, *allowed) == 0)
            return true;
    return false;
}

static void join_names(const char *const *names, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (; *names && used < len; names++)
        used += (size_t)snprintf(out + used, len - used, "%s%s", used ? ", " : "", *names);
}

/* Refuse every member of group that is not in allowed: a misspelt setting
 * must not silently leave its default in place. */
static int check_known_members(const struct loader *ld, const config_setting_t *group,
                               const char *const *allowed, const char *context)
{
    int n = config_setting_length(group);

    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(m);

        if (name && !name_in(name, allowed)) {
            char list[512];

            join_names(allowed, list, sizeof list);
            return conf_fail(ld, m, -EINVAL, "unknown setting%s%s; allowed here: %s",
                             context ? " " : "", context ? context : "", list);
        }
    }
    return 0;
}

static int require_group(const struct loader *ld, const config_setting_t *s)
{
    if (!config_setting_is_group(s))
        return conf_fail(ld, s, -EINVAL, "must be a group { ... }");
    return 0;
}

static int replace_str(char **slot, const char *value)
{
    char *copy = strdup(value);

    if (!copy)
        return pfs_err(-ENOMEM, "out of memory reading the configuration");
    free(*slot);
    *slot = copy;
    return 0;
}

/* Join a relative path to the configuration file's directory. */
static int resolve_path(const struct loader *ld, const char *value, char **out)
{
    char *joined;

    if (value[0] == '/')
        return replace_str(out, value);
    if (asprintf(&joined, "%s/%s", ld->dir, value) < 0)
        return pfs_err(-ENOMEM, "out of memory reading the configuration");
    free(*out);
    *out = joined;
    return 0;
}

enum str_kind { STR_PLAIN, STR_PATH, STR_HTTPS_URL };

static int check_https_url(const struct loader *ld, const config_setting_t *s, const char *v)
{
    if (strncasecmp(v, "http://", 7) == 0)
        return conf_fail(ld, s, -EINVAL,
                         "\"%s\" is plain HTTP; only https:// URLs are allowed "
                         "(TLS with certificate verification, there is no insecure mode)", v);
    if (strncasecmp(v, "https://", 8) != 0 || v[8] == '\0' || v[8] == '/')
        return conf_fail(ld, s, -EINVAL, "\"%s\" is not an https://host[:port] URL", v);
    return 0;
}

/* Read an optional string member (required: error when absent). */
static int get_string(const struct loader *ld, const config_setting_t *group,
                      const char *name, bool required, enum str_kind kind, char **out)
{
    const config_setting_t *s = config_setting_get_member(group, name);
    const char *v;

    if (!s)
        return required ? conf_missing(ld, group, name, "a string") : 0;
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return conf_fail(ld, s, -EINVAL, "must be a string in double quotes");
    v = config_setting_get_string(s);
    if (!v || !v[0])
        return conf_fail(ld, s, -EINVAL, "must not be empty");
    if (kind == STR_HTTPS_URL) {
        int rc = check_https_url(ld, s, v);

        if (rc)
            return rc;
    }
    return kind == STR_PATH ? resolve_path(ld, v, out) : replace_str(out, v);
}

/* Read an optional integer member in [lo, hi]; *out keeps its default when
 * the member is absent. */
static int get_uint(const struct loader *ld, const config_setting_t *group,
                    const char *name, long long lo, long long hi, const char *why,
                    uint64_t *out)
{
    const config_setting_t *s = group ? config_setting_get_member(group, name) : NULL;
    long long v;

    if (!s)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_INT && config_setting_type(s) != CONFIG_TYPE_INT64)
        return conf_fail(ld, s, -EINVAL, "must be an integer (no quotes)");
    v = config_setting_get_int64(s);
    if (v < lo || v > hi)
        return conf_fail(ld, s, -EINVAL, "%s = %lld is out of range: %s", name, v, why);
    *out = (uint64_t)v;
    return 0;
}

static bool is_hex(const char *s, size_t len)
{
    if (strlen(s) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

static void lower_ascii(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* ---------- sections ---------- */

static int load_vault(const struct loader *ld, const config_setting_t *root,
                      struct pactfs_conf *c)
{
    static const char *const known[] = { "name", "id", "root_fingerprint",
                                         "default_account", "endpoint_markers", NULL };
    char *markers = NULL;
    const config_setting_t *g = config_setting_get_member(root, "vault");
    int rc;

    if (!g)
        return conf_missing(ld, root, "vault", "a group with name and id");
    if ((rc = require_group(ld, g)) || (rc = check_known_members(ld, g, known, "in vault")))
        return rc;
    if ((rc = get_string(ld, g, "name", true, STR_PLAIN, &c->vault_name)) ||
        (rc = get_string(ld, g, "id", true, STR_PLAIN, &c->vault_id)) ||
        (rc = get_string(ld, g, "root_fingerprint", false, STR_PLAIN, &c->root_fingerprint)) ||
        (rc = get_string(ld, g, "default_account", false, STR_PLAIN, &c->default_account)) ||
        (rc = get_string(ld, g, "endpoint_markers", false, STR_PLAIN, &markers)))
        return rc;
    if (markers) {
        int ok = !strcmp(markers, "required") || !strcmp(markers, "optional");

        c->endpoint_markers_required = !strcmp(markers, "required");
        free(markers);
        if (!ok)
            return conf_fail(ld, config_setting_get_member(g, "endpoint_markers"), -EINVAL,
                             "must be \"required\" or \"optional\"");
    }
    if (strlen(c->vault_name) > NAME_MAX_LEN)
        return conf_fail(ld, config_setting_get_member(g, "name"), -EINVAL,
                         "longer than %d characters", NAME_MAX_LEN);
    if (!is_hex(c->vault_id, VAULT_ID_HEX))
        return conf_fail(ld, config_setting_get_member(g, "id"), -EINVAL,
                         "must be exactly %d hex digits (the vault's 128-bit id)", VAULT_ID_HEX);
    lower_ascii(c->vault_id);
    if (c->root_fingerprint) {
        if (!is_hex(c->root_fingerprint, FINGERPRINT_HEX))
            return conf_fail(ld, config_setting_get_member(g, "root_fingerprint"), -EINVAL,
                             "must be exactly %d hex digits (SHA-256 of the root public key)",
                             FINGERPRINT_HEX);
        lower_ascii(c->root_fingerprint);
    }
    return 0;
}

static bool is_power_of_two(uint64_t v)
{
    return v && (v & (v - 1)) == 0;
}

static int load_coding(const struct loader *ld, const config_setting_t *root,
                       struct pactfs_conf *c)
{
    static const char *const known[] = { "k", "m", "chunk_size", "min_write_fragments",
                                         "pack_max", "pack_grace", NULL };
    const config_setting_t *g = config_setting_get_member(root, "coding");
    uint64_t k = c->k, m = c->m, chunk = c->chunk_size, wmin = 0;
    uint64_t pack_max = c->pack_max, grace = c->pack_grace_s;
    int rc;

    if (!g)
        return 0;
    if ((rc = require_group(ld, g)) || (rc = check_known_members(ld, g, known, "in coding")))
        return rc;
    if ((rc = get_uint(ld, g, "k", 2, EC_MAX_FRAGS, "k must be >= 2 (with k = 1 one endpoint "
                       "would hold a whole ciphertext) and at most 16", &k)) ||
        (rc = get_uint(ld, g, "m", 0, EC_MAX_FRAGS - 2, "m must be >= 0 and k + m <= 16", &m)) ||
        (rc = get_uint(ld, g, "chunk_size", CHUNK_MIN, CHUNK_MAX,
                       "chunk_size must be a power of two from 65536 (64 KiB) to 16777216 (16 MiB)",
                       &chunk)) ||
        (rc = get_uint(ld, g, "min_write_fragments", 0, EC_MAX_FRAGS,
                       "min_write_fragments must be between k and k + m", &wmin)) ||
        (rc = get_uint(ld, g, "pack_max", 0, PACK_MAX_LIMIT,
                       "pack_max must be from 0 (no packs) to 1048576 bytes", &pack_max)) ||
        (rc = get_uint(ld, g, "pack_grace", 1, 30 * 86400,
                       "pack_grace must be from 1 to 2592000 seconds (30 days)", &grace)))
        return rc;
    if (wmin && (wmin < k || wmin > k + m))
        return conf_fail(ld, config_setting_get_member(g, "min_write_fragments"), -EINVAL,
                         "min_write_fragments = %llu must be between k = %llu and k + m = %llu",
                         (unsigned long long)wmin, (unsigned long long)k,
                         (unsigned long long)(k + m));
    if (k + m > EC_MAX_FRAGS)
        return conf_fail(ld, config_setting_get_member(g, "m") ? config_setting_get_member(g, "m") : g,
                         -EINVAL, "k + m = %llu; at most %d fragments per chunk are allowed",
                         (unsigned long long)(k + m), EC_MAX_FRAGS);
    if (!is_power_of_two(chunk))
        return conf_fail(ld, config_setting_get_member(g, "chunk_size"), -EINVAL,
                         "chunk_size = %llu is not a power of two; use one of 65536, 131072, "
                         "... 1048576 ... 16777216", (unsigned long long)chunk);
    c->k = (unsigned)k;
    c->m = (unsigned)m;
    c->min_write_fragments = (unsigned)wmin;
    c->chunk_size = (uint32_t)chunk;
    c->pack_max = (uint32_t)pack_max;
    c->pack_grace_s = (uint32_t)grace;
    return 0;
}

/* ca_file, cert_file, key_file: paths, all optional; a certificate needs its key. */
static int load_tls(const struct loader *ld, const config_setting_t *g, struct tls_conf *t)
{
    int rc;

    if ((rc = get_string(ld, g, "ca_file", false, STR_PATH, &t->ca_file)) ||
        (rc = get_string(ld, g, "cert_file", false, STR_PATH, &t->cert_file)) ||
        (rc = get_string(ld, g, "key_file", false, STR_PATH, &t->key_file)))
        return rc;
    if (!t->cert_file != !t->key_file)
        return conf_fail(ld, g, -EINVAL, "cert_file and key_file go together: a client "
                         "certificate needs its private key and vice versa");
    return 0;
}

static int load_endpoint(const struct loader *ld, const config_setting_t *g,
                         struct endpoint_conf *e)
{
    static const char *const dir_known[] = { "type", "path", NULL };
    static const char *const s3_known[] = { "type", "url", "bucket", "region", "access_key",
                                            "secret_key", "ca_file", "cert_file", "key_file",
                                            NULL };
    char *type = NULL;
    int rc;

    if ((rc = require_group(ld, g)))
        return rc;
    if ((rc = get_string(ld, g, "type", true, STR_PLAIN, &type)))
        return rc;
    if (strcmp(type, "dir") == 0) {
        e->type = ENDPOINT_DIR;
        if (!(rc = check_known_members(ld, g, dir_known, "for type \"dir\"")))
            rc = get_string(ld, g, "path", true, STR_PATH, &e->path);
    } else if (strcmp(type, "s3") == 0) {
        e->type = ENDPOINT_S3;
        if (!(rc = check_known_members(ld, g, s3_known, "for type \"s3\"")) &&
            !(rc = get_string(ld, g, "url", true, STR_HTTPS_URL, &e->url)) &&
            !(rc = get_string(ld, g, "bucket", true, STR_PLAIN, &e->bucket)) &&
            !(rc = get_string(ld, g, "region", true, STR_PLAIN, &e->region)) &&
            !(rc = get_string(ld, g, "access_key", true, STR_PLAIN, &e->access_key)) &&
            !(rc = get_string(ld, g, "secret_key", true, STR_PLAIN, &e->secret_key)))
            rc = load_tls(ld, g, &e->tls);
    } else {
        rc = conf_fail(ld, config_setting_get_member(g, "type"), -EINVAL,
                       "unknown endpoint type \"%s\"; allowed: \"dir\", \"s3\"", type);
    }
    free(type);
    return rc;
}

static bool same_endpoint(const struct endpoint_conf *a, const struct endpoint_conf *b)
{
    if (a->type != b->type)
        return false;
    if (a->type == ENDPOINT_DIR)
        return strcmp(a->path, b->path) == 0;
    return strcasecmp(a->url, b->url) == 0 && strcmp(a->bucket, b->bucket) == 0;
}

static int load_endpoints(const struct loader *ld, const config_setting_t *root,
                          struct pactfs_conf *c)
{
    const config_setting_t *l = config_setting_get_member(root, "endpoints");
    int n, rc;

    if (!l)
        return conf_missing(ld, root, "endpoints", "a list ( { type = ...; }, ... )");
    if (!config_setting_is_list(l))
        return conf_fail(ld, l, -EINVAL, "must be a list in parentheses: ( { ... }, { ... } )");
    n = config_setting_length(l);
    if (n > EC_MAX_FRAGS)
        return conf_fail(ld, l, -EINVAL, "%d endpoints listed; at most %d are supported",
                         n, EC_MAX_FRAGS);
    if ((unsigned)n < c->k + c->m)
        return conf_fail(ld, l, -EINVAL, "%d endpoint%s listed but k + m = %u: every fragment "
                         "of a chunk needs its own endpoint, list at least %u", n,
                         n == 1 ? "" : "s", c->k + c->m, c->k + c->m);
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(l, (unsigned)i);

        c->n_endpoints = (unsigned)i + 1;
        if ((rc = load_endpoint(ld, g, &c->endpoints[i])))
            return rc;
        for (int j = 0; j < i; j++)
            if (same_endpoint(&c->endpoints[j], &c->endpoints[i]))
                return conf_fail(ld, g, -EINVAL, "same storage as endpoints[%d]; two fragments "
                                 "of one chunk must never share an endpoint", j);
    }
    return 0;
}

/* Every element of a libpq host list is a unix socket directory. */
static bool hosts_all_local(const char *host)
{
    const char *p = host;

    if (!host || !*host)
        return true;                /* libpq's default: the unix socket */
    while (*p) {
        size_t n = strcspn(p, ",");

        if (n == 0 || p[0] != '/')
            return false;
        p += n;
        if (*p == ',')
            p++;
    }
    return true;
}

/* A PostgreSQL connection over the network must verify the server's
 * certificate AND its name (sslmode=verify-full): verify-ca accepts any
 * certificate of the CA, so anyone holding one can stand in for the server.
 * A unix socket stays on this host.  Checked before any connection is made
 * (so before libpq sends a password), with libpq's environment fallbacks
 * (PGHOST, PGHOSTADDR, PGSSLMODE), and a service file is refused because
 * its host and TLS settings would escape this check. */
int conf_pg_conninfo_check(const char *ci, char *why, size_t whylen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(ci, &perr);
    const char *host = NULL, *hostaddr = NULL, *sslmode = NULL, *service = NULL;
    int rc = 0;

    if (!opts) {
        snprintf(why, whylen, "not a valid libpq conninfo: %s", perr ? perr : "out of memory");
        PQfreemem(perr);
        return -EINVAL;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "sslmode") == 0)
            sslmode = o->val;
        else if (strcmp(o->keyword, "service") == 0)
            service = o->val;
    }
    if (!host)
        host = getenv("PGHOST");
    if (!hostaddr)
        hostaddr = getenv("PGHOSTADDR");
    if (!sslmode)
        sslmode = getenv("PGSSLMODE");
    if (!service)
        service = getenv("PGSERVICE");
    bool over_network = (hostaddr && *hostaddr) || !hosts_all_local(host);
    if (service && *service) {
        snprintf(why, whylen, "a libpq service (service=%s or PGSERVICE) is refused: its host "
                 "and TLS settings would escape the transport check; write host=, sslmode="
                 "verify-full and sslrootcert= into the conninfo", service);
        rc = -EINVAL;
    } else if (over_network && (!sslmode || strcmp(sslmode, "verify-full") != 0)) {
        snprintf(why, whylen, "a network connection must verify the server's certificate and "
                 "name: give sslmode=verify-full (and sslrootcert=CA file); got sslmode=%s%s",
                 sslmode ? sslmode : "(unset)", sslmode && !strcmp(sslmode, "verify-ca") ?
                 " (verify-ca accepts any certificate of the CA for any host)" : "");
        rc = -EINVAL;
    }
    PQconninfoFree(opts);
    return rc;
}

static int check_pg_conninfo(const struct loader *ld, const config_setting_t *s, const char *ci)
{
    char why[400];

    if (conf_pg_conninfo_check(ci, why, sizeof why) == 0)
        return 0;
    return conf_fail(ld, s, -EINVAL, "%s", why);
}

static int load_metadata(const struct loader *ld, const config_setting_t *root,
                         struct pactfs_conf *c)
{
    static const char *const sqlite_known[] = { "backend", "path", NULL };
    static const char *const pg_known[] = { "backend", "conninfo", "lease_seconds",
                                            "poll_ms", NULL };
    uint64_t lease = 30, poll_ms = 1000;
    const config_setting_t *g = config_setting_get_member(root, "metadata");
    int rc;

    if (!g)
        return resolve_path(ld, "meta.db", &c->meta_path);
    if ((rc = require_group(ld, g)) ||
        (rc = get_string(ld, g, "backend", false, STR_PLAIN, &c->meta_backend)))
        return rc;
    if (strcmp(c->meta_backend, "sqlite") == 0) {
        if ((rc = check_known_members(ld, g, sqlite_known, "for backend \"sqlite\"")))
            return rc;
        if ((rc = get_string(ld, g, "path", false, STR_PATH, &c->meta_path)))
            return rc;
        return c->meta_path ? 0 : resolve_path(ld, "meta.db", &c->meta_path);
    }
    if (strcmp(c->meta_backend, "postgresql") == 0) {
        if ((rc = check_known_members(ld, g, pg_known, "for backend \"postgresql\"")) ||
            (rc = get_string(ld, g, "conninfo", true, STR_PLAIN, &c->meta_conninfo)) ||
            (rc = get_uint(ld, g, "lease_seconds", 3, 3600, "3 .. 3600 seconds", &lease)) ||
            (rc = get_uint(ld, g, "poll_ms", 50, 60000, "50 .. 60000 milliseconds", &poll_ms)))
            return rc;
        c->meta_lease_s = (uint32_t)lease;
        c->meta_poll_ms = (uint32_t)poll_ms;
        return check_pg_conninfo(ld, config_setting_get_member(g, "conninfo"), c->meta_conninfo);
    }
    return conf_fail(ld, config_setting_get_member(g, "backend"), -EINVAL,
                     "unknown backend \"%s\"; allowed: \"sqlite\", \"postgresql\"",
                     c->meta_backend);
}

static int load_keys(const struct loader *ld, const config_setting_t *root,
                     struct pactfs_conf *c)
{
    static const char *const local_known[] = { "provider", "dir", NULL };
    static const char *const keyd_known[] = { "provider", "url", "ca_file", "cert_file",
                                              "key_file", NULL };
    const config_setting_t *g = config_setting_get_member(root, "keys");
    int rc;

    if (!g)
        return resolve_path(ld, "keys", &c->share_keydir);
    if ((rc = require_group(ld, g)) ||
        (rc = get_string(ld, g, "provider", false, STR_PLAIN, &c->share_provider)))
        return rc;
    if (strcmp(c->share_provider, "local") == 0) {
        if ((rc = check_known_members(ld, g, local_known, "for provider \"local\"")) ||
            (rc = get_string(ld, g, "dir", false, STR_PATH, &c->share_keydir)))
            return rc;
        return c->share_keydir ? 0 : resolve_path(ld, "keys", &c->share_keydir);
    }
    if (strcmp(c->share_provider, "keyd") == 0) {
        if ((rc = check_known_members(ld, g, keyd_known, "for provider \"keyd\"")) ||
            (rc = get_string(ld, g, "url", true, STR_HTTPS_URL, &c->keyd_url)))
            return rc;
        return load_tls(ld, g, &c->keyd_tls);
    }
    return conf_fail(ld, config_setting_get_member(g, "provider"), -EINVAL,
                     "unknown provider \"%s\"; allowed: \"local\", \"keyd\"", c->share_provider);
}

static int load_audit(const struct loader *ld, const config_setting_t *root,
                      struct pactfs_conf *c)
{
    static const char *const known[] = { "spool", "url", "ca_file", "cert_file", "key_file",
                                         NULL };
    const config_setting_t *g = config_setting_get_member(root, "audit");
    int rc;

    if (!g)
        return resolve_path(ld, "audit.log", &c->audit_spool);
    if ((rc = require_group(ld, g)) || (rc = check_known_members(ld, g, known, "in audit")) ||
        (rc = get_string(ld, g, "spool", false, STR_PATH, &c->audit_spool)) ||
        (rc = get_string(ld, g, "url", false, STR_HTTPS_URL, &c->audit_url)) ||
        (rc = load_tls(ld, g, &c->audit_tls)))
        return rc;
    return c->audit_spool ? 0 : resolve_path(ld, "audit.log", &c->audit_spool);
}

static int load_cache(const struct loader *ld, const config_setting_t *root,
                      struct pactfs_conf *c)
{
    static const char *const known[] = { "read_mib", "dirty_mib", "workers", NULL };
    const config_setting_t *g = config_setting_get_member(root, "cache");
    uint64_t rd = c->cache_mib, dirty = c->dirty_mib, workers = c->workers;
    int rc;

    if (!g)
        return 0;
    if ((rc = require_group(ld, g)) || (rc = check_known_members(ld, g, known, "in cache")) ||
        (rc = get_uint(ld, g, "read_mib", 0, 1048576, "read_mib must be 0 (no read cache) "
                       "to 1048576", &rd)) ||
        (rc = get_uint(ld, g, "dirty_mib", 1, 1048576, "dirty_mib must be 1 to 1048576", &dirty)) ||
        (rc = get_uint(ld, g, "workers", 1, 256, "workers must be 1 to 256", &workers)))
        return rc;
    if (dirty * 1024 * 1024 < c->chunk_size)
        return conf_fail(ld, config_setting_get_member(g, "dirty_mib"), -EINVAL,
                         "dirty_mib = %llu cannot hold one chunk of %u bytes; raise it",
                         (unsigned long long)dirty, c->chunk_size);
    c->cache_mib = (uint32_t)rd;
    c->dirty_mib = (uint32_t)dirty;
    c->workers = (unsigned)workers;
    return 0;
}

/* ---------- load ---------- */

static int load_file_name(const char *path, struct pactfs_conf *c, char *err, size_t errlen)
{
    char *abs = realpath(path, NULL);
    char *copy;
    int e = errno;

    if (!abs) {
        int rc = pfs_err(-e, "cannot open configuration file %s: %s", path, strerror(e));

        if (err && errlen)
            snprintf(err, errlen, "%s", pfs_err_msg());
        return rc;
    }
    c->file = abs;
    copy = strdup(abs);
    c->dir = copy ? strdup(dirname(copy)) : NULL;
    free(copy);
    return c->dir ? 0 : pfs_err(-ENOMEM, "out of memory reading the configuration");
}

static int read_config(const struct loader *ld, config_t *cfg)
{
    const char *efile;

    if (config_read_file(cfg, ld->file) == CONFIG_TRUE)
        return 0;
    if (config_error_type(cfg) == CONFIG_ERR_FILE_IO) {
        int e = errno ? errno : EIO;

        return conf_fail(ld, NULL, -e, "cannot read: %s", strerror(e));
    }
    efile = config_error_file(cfg) ? config_error_file(cfg) : ld->file;
    if (ld->err && ld->errlen)
        snprintf(ld->err, ld->errlen, "%s:%d: syntax error: %s", efile,
                 config_error_line(cfg), config_error_text(cfg));
    return pfs_err(-EINVAL, "%s:%d: syntax error: %s", efile, config_error_line(cfg),
                   config_error_text(cfg));
}

static int load_accounts(const struct loader *ld, const config_setting_t *root,
                         struct pactfs_conf *c)
{
    static const char *const known[] = { "revocation_check_seconds", NULL };
    const config_setting_t *g = config_setting_get_member(root, "accounts");
    uint64_t secs = c->revocation_check_s;
    int rc;

    if (!g)
        return 0;
    if ((rc = require_group(ld, g)) || (rc = check_known_members(ld, g, known, "in accounts")) ||
        (rc = get_uint(ld, g, "revocation_check_seconds", 1, 3600,
                       "revocation_check_seconds must be 1 to 3600", &secs)))
        return rc;
    c->revocation_check_s = (uint32_t)secs;
    return 0;
}

static int load_settings(const struct loader *ld, const config_t *cfg, struct pactfs_conf *c)
{
    static const char *const known[] = { "vault", "coding", "endpoints", "metadata", "keys",
                                         "audit", "cache", "accounts", NULL };
    const config_setting_t *root = config_root_setting(cfg);
    int rc;

    if ((rc = check_known_members(ld, root, known, "at top level")) ||
        (rc = load_vault(ld, root, c)) ||
        (rc = load_coding(ld, root, c)) ||
        (rc = load_endpoints(ld, root, c)) ||
        (rc = load_metadata(ld, root, c)) ||
        (rc = load_keys(ld, root, c)) ||
        (rc = load_audit(ld, root, c)) ||
        (rc = load_cache(ld, root, c)) ||
        (rc = load_accounts(ld, root, c)))
        return rc;
    return 0;
}

int conf_load(const char *path, struct pactfs_conf *out, char *err, size_t errlen)
{
    struct loader ld = { .err = err, .errlen = errlen };
    config_t cfg;
    int rc;

    if (err && errlen)
        err[0] = '\0';
    conf_defaults(out);
    if (!out->meta_backend || !out->share_provider) {
        conf_free(out);
        return pfs_err(-ENOMEM, "out of memory reading the configuration");
    }
    if ((rc = load_file_name(path, out, err, errlen))) {
        conf_free(out);
        return rc;
    }
    ld.file = out->file;
    ld.dir = out->dir;
    config_init(&cfg);
    errno = 0;
    rc = read_config(&ld, &cfg);
    if (!rc)
        rc = load_settings(&ld, &cfg, out);
    config_destroy(&cfg);
    if (rc)
        conf_free(out);
    return rc;
}

void conf_defaults(struct pactfs_conf *c)
{
    memset(c, 0, sizeof *c);
    c->k = 2;
    c->m = 1;
    c->chunk_size = 1024u * 1024u;
    c->pack_max = CONF_PACK_MAX_DEFAULT;
    c->pack_grace_s = CONF_PACK_GRACE_DEFAULT_S;
    c->cache_mib = 256;
    c->dirty_mib = 256;
    c->meta_lease_s = 30;
    c->meta_poll_ms = 1000;
    c->revocation_check_s = 15;
    c->workers = 4;
    c->meta_backend = strdup("sqlite");
    c->share_provider = strdup("local");
}

static void tls_free(struct tls_conf *t)
{
    free(t->ca_file);
    free(t->cert_file);
    free(t->key_file);
}

/* Credentials are wiped, not only released. */
static void free_secret(char *s)
{
    if (s)
        secmem_wipe(s, strlen(s));
    free(s);
}

void conf_free(struct pactfs_conf *c)
{
    if (!c)
        return;
    free(c->file);
    free(c->dir);
    free(c->vault_name);
    free(c->vault_id);
    free(c->root_fingerprint);
    free(c->default_account);
    for (unsigned i = 0; i < EC_MAX_FRAGS; i++) {
        struct endpoint_conf *e = &c->endpoints[i];

        free(e->path);
        free(e->url);
        free(e->bucket);
        free(e->region);
        free_secret(e->access_key);
        free_secret(e->secret_key);
        tls_free(&e->tls);
    }
    free(c->meta_backend);
    free(c->meta_path);
    free_secret(c->meta_conninfo);
    free(c->share_provider);
    free(c->share_keydir);
    free(c->keyd_url);
    tls_free(&c->keyd_tls);
    free(c->audit_spool);
    free(c->audit_url);
    tls_free(&c->audit_tls);
    memset(c, 0, sizeof *c);
}

/* ---------- write ---------- */

/* Each section is built as a libconfig tree and written by libconfig, so
 * quoting and escaping are the library's; this module adds only comments. */
struct writer {
    FILE *f;
    const char *dir;        /* directory of the file being written */
    int err;
};

/* Paths under the file's own directory are written relative to it, so a
 * vault folder can be moved as a whole. */
static const char *path_for_file(const struct writer *w, const char *p)
{
    size_t n = strlen(w->dir);

    if (strncmp(p, w->dir, n) == 0 && p[n] == '/' && p[n + 1])
        return p + n + 1;
    return p;
}

static void add_str(struct writer *w, config_setting_t *g, const char *name, const char *v)
{
    config_setting_t *s;

    if (!v)
        return;
    s = config_setting_add(g, name, CONFIG_TYPE_STRING);
    if (!s || config_setting_set_string(s, v) != CONFIG_TRUE)
        w->err = -ENOMEM;
}

static void add_path(struct writer *w, config_setting_t *g, const char *name, const char *v)
{
    if (v)
        add_str(w, g, name, path_for_file(w, v));
}

/* Every integer setting is range-checked far below INT_MAX on load. */
static void add_int(struct writer *w, config_setting_t *g, const char *name, unsigned v)
{
    config_setting_t *s = config_setting_add(g, name, CONFIG_TYPE_INT);

    if (v > INT_MAX)
        w->err = -EINVAL;
    else if (!s || config_setting_set_int(s, (int)v) != CONFIG_TRUE)
        w->err = -ENOMEM;
}

static void add_tls(struct writer *w, config_setting_t *g, const struct tls_conf *t)
{
    add_path(w, g, "ca_file", t->ca_file);
    add_path(w, g, "cert_file", t->cert_file);
    add_path(w, g, "key_file", t->key_file);
}

/* Write one commented top-level setting built by fill(). */
static void write_section(struct writer *w, const char *comment, const char *name, int type,
                          const struct pactfs_conf *c,
                          void (*fill)(struct writer *, config_setting_t *,
                                       const struct pactfs_conf *))
{
    config_t sec;
    config_setting_t *g;

    if (w->err)
        return;
    config_init(&sec);
    config_set_options(&sec, CONFIG_OPTION_SEMICOLON_SEPARATORS);
    config_set_tab_width(&sec, 4);
    g = config_setting_add(config_root_setting(&sec), name, type);
    if (!g)
        w->err = -ENOMEM;
    else
        fill(w, g, c);
    if (!w->err) {
        fprintf(w->f, "\n%s", comment);
        config_write(&sec, w->f);
    }
    config_destroy(&sec);
}

static void fill_vault(struct writer *w, config_setting_t *g, const struct pactfs_conf *c)
{
    add_str(w, g, "name", c->vault_name);
    add_str(w, g, "id", c->vault_id);
    add_str(w, g, "root_fingerprint", c->root_fingerprint);
    add_str(w, g, "default_account", c->default_account);
    if (c->endpoint_markers_required)
        add_str(w, g, "endpoint_markers", "required");
}

static void fill_coding(struct writer *w, config_setting_t *g, const struct pactfs_conf *c)
{
    add_int(w, g, "k", c->k);
    add_int(w, g, "m", c->m);
    add_int(w, g, "chunk_size", c->chunk_size);
    if (c->min_write_fragments)
        add_int(w, g, "min_write_fragments", c->min_write_fragments);
    if (c->pack_max != CONF_PACK_MAX_DEFAULT)
        add_int(w, g, "pack_max", c->pack_max);
    if (c->pack_grace_s != CONF_PACK_GRACE_DEFAULT_S)
        add_int(w, g, "pack_grace", c->pack_grace_s);
}

static void fill_endpoints(struct writer *w, config_setting_t *l, const struct pactfs_conf *c)
{
    for (unsigned i = 0; i < c->n_endpoints && !w->err; i++) {
        const struct endpoint_conf *e = &c->endpoints[i];
        config_setting_t *g = config_setting_add(l, NULL, CONFIG_TYPE_GROUP);

        if (!g) {
            w->err = -ENOMEM;
            return;
        }
        add_str(w, g, "type", e->type == ENDPOINT_S3 ? "s3" : "dir");
        add_path(w, g, "path", e->path);
        add_str(w, g, "url", e->url);
        add_str(w, g, "bucket", e->bucket);
        add_str(w, g, "region", e->region);
        add_str(w, g, "access_key", e->access_key);
        add_str(w, g, "secret_key", e->secret_key);
        add_tls(w, g, &e->tls);
    }
}

static void fill_metadata(struct writer *w, config_setting_t *g, const struct pactfs_conf *c)
{
    add_str(w, g, "backend", c->meta_backend);
    add_path(w, g, "path", c->meta_path);
    add_str(w, g, "conninfo", c->meta_conninfo);
}

static void fill_keys(struct writer *w, config_setting_t *g, const struct pactfs_conf *c)
{
    add_str(w, g, "provider", c->share_provider);
    add_path(w, g, "dir", c->share_keydir);
    add_str(w, g, "url", c->keyd_url);
    add_tls(w, g, &c->keyd_tls);
}

static void fill_audit(struct writer *w, config_setting_t *g, const struct pactfs_conf *c)
{
    add_path(w, g, "spool", c->audit_spool);
    add_str(w, g, "url", c->audit_url);
    add_tls(w, g, &c->audit_tls);
}

static void fill_cache(struct writer *w, config_setting_t *g, const struct pactfs_conf *c)
{
    add_int(w, g, "read_mib", c->cache_mib);
    add_int(w, g, "dirty_mib", c->dirty_mib);
    add_int(w, g, "workers", c->workers);
}

static void write_all_sections(struct writer *w, const struct pactfs_conf *c)
{
    fprintf(w->f,
            "# pactfs vault configuration (libconfig syntax), see pactfs.conf(5).\n"
            "# Written by pactfs; relative paths are relative to this file's directory.\n"
            "# Unknown settings are refused, so a typo is reported, never ignored.\n");
    write_section(w, "# The vault: its name, its fixed 128-bit id (32 hex), the pinned SHA-256\n"
                  "# fingerprint of the root public key, and the account used by default.\n",
                  "vault", CONFIG_TYPE_GROUP, c, fill_vault);
    write_section(w, "# Erasure coding: each chunk becomes k data + m parity fragments; any k\n"
                  "# of them rebuild it.  k >= 2, k + m <= 16, chunk_size a power of two\n"
                  "# from 64 KiB to 16 MiB.\n", "coding", CONFIG_TYPE_GROUP, c, fill_coding);
    write_section(w, "# Storage endpoints, fragment i of a chunk on endpoint i (rotated).\n"
                  "# At least k + m of them; type \"dir\" (path) or \"s3\" (https url, bucket,\n"
                  "# region, access_key, secret_key, optional ca_file/cert_file/key_file).\n",
                  "endpoints", CONFIG_TYPE_LIST, c, fill_endpoints);
    write_section(w, "# Metadata store: backend \"sqlite\" (path) or \"postgresql\" (conninfo,\n"
                  "# with sslmode=verify-full for a network connection).\n",
                  "metadata", CONFIG_TYPE_GROUP, c, fill_metadata);
    write_section(w, "# Second unlock-key shares: provider \"local\" (dir) or \"keyd\" (https url,\n"
                  "# optional ca_file/cert_file/key_file).\n", "keys", CONFIG_TYPE_GROUP, c,
                  fill_keys);
    write_section(w, "# Audit: the local spool every event is fsync'ed to before an operation\n"
                  "# returns, and the optional https receiver it is shipped to.\n",
                  "audit", CONFIG_TYPE_GROUP, c, fill_audit);
    write_section(w, "# Memory budgets in MiB (plaintext read cache, write-back buffer) and the\n"
                  "# number of seal/code/scatter worker threads.\n", "cache", CONFIG_TYPE_GROUP,
                  c, fill_cache);
}

static int target_dir(const char *path, char **out)
{
    char *copy = strdup(path);
    char *dir;

    if (!copy)
        return pfs_err(-ENOMEM, "out of memory writing the configuration");
    dir = realpath(dirname(copy), NULL);
    free(copy);
    if (!dir)
        return pfs_err(-errno, "cannot write %s: its directory is not accessible: %s", path,
                       strerror(errno));
    *out = dir;
    return 0;
}

/* Render the file into memory (written in one go by fileio_atomic_write). */
static int render(struct writer *w, const struct pactfs_conf *c, char **text, size_t *len)
{
    FILE *f = open_memstream(text, len);
    int rc;

    if (!f)
        return -errno;
    w->f = f;
    write_all_sections(w, c);
    rc = w->err;
    if (!rc && (fflush(f) != 0 || ferror(f)))
        rc = errno ? -errno : -EIO;
    if (fclose(f) != 0 && !rc)
        rc = -errno;
    return rc;
}

int conf_write(const char *path, const struct pactfs_conf *c)
{
    struct writer w = { 0 };
    char *dir = NULL, *text = NULL;
    size_t len = 0;
    int rc;

    if (!c->vault_name || !c->vault_id || !c->meta_backend || !c->share_provider)
        return pfs_err(-EINVAL, "cannot write %s: vault name, vault id, metadata backend and "
                       "key provider must be set", path);
    if ((rc = target_dir(path, &dir)))
        return rc;
    w.dir = dir;
    rc = render(&w, c, &text, &len);
    if (!rc)
        rc = fileio_atomic_write(path, text, len, 0);
    if (rc)
        pfs_err(rc, "cannot write configuration %s: %s", path, strerror(-rc));
    free(text);
    free(dir);
    return rc;
}
