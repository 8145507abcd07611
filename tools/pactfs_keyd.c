#include "config.h"

/* pactfs-keyd: the key service.  It holds, per (vault, account), the 256-bit
 * second share of the account's unlock key and a verifier of the login
 * authenticator, and releases the share only to a login that presents the
 * authenticator.  HTTPS (libmicrohttpd + GnuTLS, TLS >= 1.2), state in
 * SQLite, configuration in a libconfig file, its own JSON-lines audit log.
 * The protocol is documented in docs/keyd.md.
 *
 * It also anchors each vault's signed head (vault_head.h): the newest
 * (counter, SHA-256 of the head) a client reported, which only grows.
 * Clients read it before trusting a metadata store's head (/v1/anchor-get)
 * and advance it after they advance the head (/v1/anchor-put),
 * authenticated by the anchor token a login returned or the admin token.
 *
 * This file: the settings, start-up and main.  What is stored and how it
 * is sealed: keyd_secrets.h; the database and its migrations: keyd_store.h;
 * the logs and trails: keyd_audit.h; lockouts and who may call what:
 * keyd_policy.h; the protocol's handlers: keyd_handlers.h.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <syslog.h>
#include <unistd.h>

#include <libconfig.h>

#include "error.h"
#include "exitcodes.h"
#include "secmem.h"

#include "https_service.h"
#include "keyd.h"
#include "keyd_audit.h"
#include "keyd_handlers.h"

/* ---------------------------------------------------------------- config */

static void keyd_conf_free(struct keyd_conf *c)
{
    free(c->listen_address);
    free(c->cert_file);
    free(c->key_file);
    free(c->client_ca_file);
    for (size_t i = 0; i < c->nofficers; i++)
        free(c->officers[i]);
    free(c->officers);
    free(c->database);
    free(c->admin_token_file);
    free(c->master_key_file);
    free(c->audit_log);
    free(c->audit_signing_key);
    free(c->trail_dir);
    free(c->audit_url);
    free(c->audit_tls.ca_file);
    free(c->audit_tls.cert_file);
    free(c->audit_tls.key_file);
    free(c->debug_capture);
    memset(c, 0, sizeof *c);
}

/* officers = [ "CN", ... ]: each key officer's client certificate CN.
 * They act without the shared admin token, named on the log and trail. */
static int keyd_conf_officers(config_t *cfg, struct keyd_conf *c)
{
    config_setting_t *s = config_lookup(cfg, "officers");
    int n;

    if (!s)
        return 0;
    n = config_setting_length(s);
    if (!config_setting_is_array(s) || n < 1 || n > 256)
        return pfs_err(-EINVAL, "officers must be a list of 1 to 256 certificate common "
                       "names, e.g. officers = [ \"Jane Officer\" ];");
    if (!c->client_ca_file)
        return pfs_err(-EINVAL, "officers needs client_ca_file: an officer is known by a "
                       "client certificate that CA signed");
    c->officers = calloc((size_t)n, sizeof *c->officers);
    if (!c->officers)
        return pfs_err(-ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        const char *cn = config_setting_get_string_elem(s, i);

        if (!cn || !*cn || strlen(cn) > HTTPS_CN_MAX)
            return pfs_err(-EINVAL, "officers: entry %d is not a certificate common name", i + 1);
        c->officers[i] = strdup(cn);
        if (!c->officers[i])
            return pfs_err(-ENOMEM, "out of memory");
        c->nofficers++;
    }
    return 0;
}

/* *out, if not set, = name in the database's directory. */
static int beside_database(const struct keyd_conf *c, const char *name, char **out)
{
    const char *slash = strrchr(c->database, '/');

    if (*out)
        return 0;
    if (asprintf(out, "%.*s%s", slash ? (int)(slash - c->database + 1) : 0, c->database,
                 name) < 0) {
        *out = NULL;
        return pfs_err(-ENOMEM, "out of memory");
    }
    return 0;
}

static int keyd_conf_read(config_t *cfg, const char *dir, void *arg)
{
    struct keyd_conf *c = arg;
    int rc = 0;

    rc = rc ? rc : https_conf_string(cfg, dir, "listen_address", false, false,
                                     &c->listen_address);
    rc = rc ? rc : https_conf_uint(cfg, "port", 1, 65535, &c->port);
    rc = rc ? rc : https_conf_string(cfg, dir, "cert_file", true, true, &c->cert_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "key_file", true, true, &c->key_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "client_ca_file", true, false,
                                     &c->client_ca_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "database", true, true, &c->database);
    rc = rc ? rc : keyd_conf_officers(cfg, c);
    rc = rc ? rc : https_conf_string(cfg, dir, "admin_token_file", true, c->nofficers == 0,
                                     &c->admin_token_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "master_key_file", true, true,
                                     &c->master_key_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "audit_log", true, true, &c->audit_log);
    rc = rc ? rc : https_conf_string(cfg, dir, "audit_signing_key", true, false,
                                     &c->audit_signing_key);
    rc = rc ? rc : https_conf_string(cfg, dir, "trail_dir", true, false, &c->trail_dir);
    rc = rc ? rc : https_conf_string(cfg, dir, "audit_url", false, false, &c->audit_url);
    rc = rc ? rc : https_conf_string(cfg, dir, "audit_ca_file", true, false,
                                     &c->audit_tls.ca_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "audit_cert_file", true, false,
                                     &c->audit_tls.cert_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "audit_key_file", true, false,
                                     &c->audit_tls.key_file);
    rc = rc ? rc : https_conf_string(cfg, dir, "debug_capture", true, false, &c->debug_capture);
    rc = rc ? rc : https_conf_uint(cfg, "lockout.max_failures", 1, 1000, &c->max_failures);
    rc = rc ? rc : https_conf_uint(cfg, "lockout.lockout_seconds", 1, 86400 * 30,
                                   &c->lockout_seconds);
    rc = rc ? rc : https_conf_uint(cfg, "lockout.failure_window_seconds", 1, 86400 * 30,
                                   &c->failure_window_seconds);
    rc = rc ? rc : https_conf_uint(cfg, "lockout.source_max_failures", 1, 100000,
                                   &c->source_max_failures);
    rc = rc ? rc : https_conf_uint(cfg, "lockout.source_lockout_seconds", 1, 86400 * 30,
                                   &c->source_lockout_seconds);
    if (!rc && !c->listen_address && !(c->listen_address = strdup("127.0.0.1")))
        rc = pfs_err(-ENOMEM, "out of memory");
    /* defaults beside the database: "trail" and "audit-signing.key" */
    rc = rc ? rc : beside_database(c, "trail", &c->trail_dir);
    rc = rc ? rc : beside_database(c, "audit-signing.key", &c->audit_signing_key);
    return rc;
}

static int keyd_conf_load(const char *path, struct keyd_conf *c)
{
    int rc;

    memset(c, 0, sizeof *c);
    c->port = 8443;
    c->max_failures = 5;
    c->lockout_seconds = 300;
    c->failure_window_seconds = 900;
    c->source_max_failures = 50;
    c->source_lockout_seconds = 300;
    rc = https_conf_load(path, keyd_conf_read, c);
    if (rc)
        keyd_conf_free(c);
    return rc;
}
/* ---------------------------------------------------------------- startup */

static int open_append(const char *path, int *fd)
{
    *fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (*fd < 0)
        return pfs_err(-errno, "cannot open %s for appending: %s", path, strerror(errno));
    return 0;
}

static int keyd_setup(struct keyd *k)
{
    int rc = keyd_secrets_load_master_key(&k->secrets, k->conf.master_key_file);

    rc = rc ? rc : keyd_secrets_load_admin_token(&k->secrets, k->conf.admin_token_file);
    rc = rc ? rc : keyd_store_open(&k->store, k->conf.database, &k->secrets);
    rc = rc ? rc : keyd_audit_open(k);
    rc = rc ? rc : keyd_trail_setup(k);
    if (!rc && k->conf.debug_capture) {
        rc = open_append(k->conf.debug_capture, &k->capture_fd);
        https_log(LOG_WARNING, "debug_capture is on: every request body, authenticators "
                 "included, is written to %s; never use this outside tests",
                 k->conf.debug_capture);
    }
    k->require_client_cert = k->conf.client_ca_file != NULL;
    return rc;
}

static void keyd_teardown(struct keyd *k)
{
    keyd_trail_teardown(k);
    keyd_store_close(&k->store);
    keyd_audit_close(k);
    if (k->capture_fd >= 0)
        close(k->capture_fd);
    keyd_secrets_free(&k->secrets);
    keyd_conf_free(&k->conf);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, struct https_request *r)
{
    return keyd_dispatch(cls, c, url, method, r);
}

/* Load the TLS material, start listening, wait for SIGTERM/SIGINT. */
static int serve(struct keyd *k)
{
    const struct https_service svc = {
        .listen_address = k->conf.listen_address,
        .port = k->conf.port,
        .cert_file = k->conf.cert_file,
        .key_file = k->conf.key_file,
        .key_private_only = true,
        .client_ca_file = k->conf.client_ca_file,
        .connection_timeout = 15,
        .connection_limit = 128,
        .per_ip_connection_limit = 32,
        .max_body = KEYD_MAX_BODY,
        .secret_body = true,        /* authenticators */
        .handle = on_request,
        .cls = k,
    };

    return https_service_run(&svc);
}

static void usage(FILE *f)
{
    fprintf(f,
        "Usage: pactfs-keyd [-f] [-c FILE]\n"
        "The pactfs key service: keeps the second share of each account's unlock key\n"
        "and releases it over HTTPS only to a login that proves the password.\n\n"
        "  -c, --config FILE  configuration (default " KEYD_DEFAULT_CONF ")\n"
        "  -f, --foreground   stay in the foreground and log to stderr\n"
        "                     (otherwise detach and log to syslog)\n"
        "  -h, --help         this text\n"
        "  -V, --version      the version\n\n"
        "See pactfs-keyd(8) and docs/keyd.md for the settings and the protocol.\n");
}

int main(int argc, char **argv)
{
    struct https_cmdline cmd;
    struct keyd k;
    int rc;

    https_log_init("pactfs-keyd", true);
    rc = https_cmdline_parse(argc, argv, KEYD_DEFAULT_CONF, usage, &cmd);
    if (rc >= 0)
        return rc;
    umask(077);
    if (secmem_harden_process() < 0)
        https_log(LOG_WARNING, "cannot disable core dumps: %s", pfs_err_msg());
    memset(&k, 0, sizeof k);
    k.capture_fd = -1;
    if (keyd_conf_load(cmd.conf_path, &k.conf) < 0) {
        https_log(LOG_ERR, "%s", pfs_err_msg());
        return EXIT_CONFIG;
    }
    if (!cmd.foreground && https_detach() < 0) {
        keyd_conf_free(&k.conf);
        return EXIT_FAILURE_OTHER;
    }
    rc = keyd_setup(&k);
    if (rc) {
        https_log(LOG_ERR, "%s", pfs_err_msg());
        keyd_teardown(&k);
        return rc == -EINVAL || rc == -ENOENT || rc == -EPERM ? EXIT_CONFIG : EXIT_STORE;
    }
    if (secmem_lock_failures())
        https_log(LOG_WARNING, "%lu key buffers were refused because they could not be "
                  "locked in RAM (raise LimitMEMLOCK)", secmem_lock_failures());
    rc = serve(&k);
    if (rc)
        https_log(LOG_ERR, "%s", pfs_err_msg());
    keyd_teardown(&k);
    return rc ? EXIT_FAILURE_OTHER : EXIT_OK;
}
