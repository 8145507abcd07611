/* The scaffolding the project's HTTPS services (pactfs-keyd, pactfs-auditd)
 * share: command line, logging to stderr or syslog, libconfig settings,
 * reading the TLS files, libmicrohttpd over GnuTLS (TLS >= 1.2, optional
 * client certificates), request bodies accumulated up to a cap, replies,
 * and running until SIGTERM/SIGINT.  Each service keeps only its protocol
 * and its state.
 */
#ifndef PACTFS_HTTPS_SERVICE_H
#define PACTFS_HTTPS_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <json-c/json.h>
#include <libconfig.h>
#include <microhttpd.h>

#define HTTPS_CN_MAX 256

/* ---- logging: stderr in the foreground, syslog once detached ---- */

/* program prefixes stderr lines; timestamps adds a UTC time before it. */
void https_log_init(const char *program, bool timestamps);
void https_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- command line: -c FILE, -f, -h, -V ---- */

struct https_cmdline {
    const char *conf_path;
    bool foreground;
};

/* Returns -1 to go on, or the exit code main should return (help, version,
 * usage error).  usage prints the program's own help text. */
int https_cmdline_parse(int argc, char **argv, const char *default_conf,
                        void (*usage)(FILE *), struct https_cmdline *out);

/* daemon(), then log to syslog.  Logs why and returns -errno on failure. */
int https_detach(void);

/* ---- settings (libconfig) ---- */

/* Read path and hand it to read(cfg, dir of path, arg); errors are
 * prefixed with path.  Relative paths resolve against that dir. */
int https_conf_load(const char *path, int (*read)(config_t *cfg, const char *dir, void *arg),
                    void *arg);
/* A string setting (a path resolved against dir if is_path); absent and
 * not required leaves *out alone. */
int https_conf_string(config_t *cfg, const char *dir, const char *name, bool is_path,
                      bool required, char **out);
/* An integer setting in min..max; absent leaves *out (the default). */
int https_conf_uint(config_t *cfg, const char *name, unsigned min, unsigned max,
                    unsigned *out);

/* A secret file into secure memory, NUL-terminated (free with
 * secmem_free(*out, *len + 1)).  private_only refuses files that group or
 * others can read. */
int https_read_secret_file(const char *path, bool private_only, char **out, size_t *len);

/* ---- requests ---- */

struct https_request {
    char *body;                 /* the bytes received, at most max_body */
    size_t len, cap;
    bool too_big;               /* more than max_body arrived: the rest was dropped */
    bool anonymous;             /* identify_clients: no verified certificate, body dropped */
    char cn[HTTPS_CN_MAX + 1];  /* identify_clients: the verified certificate's CN */
};

/* Called once the whole body is in. */
typedef enum MHD_Result (*https_handler_fn)(void *cls, struct MHD_Connection *c,
                                            const char *url, const char *method,
                                            struct https_request *r);

struct https_service {
    const char *listen_address; /* numeric IPv4 or IPv6 */
    unsigned port;
    const char *cert_file;
    const char *key_file;
    bool key_private_only;      /* refuse a key file others can read */
    const char *client_ca_file; /* NULL: no client certificates asked */
    unsigned connection_timeout;        /* seconds */
    unsigned connection_limit;
    unsigned per_ip_connection_limit;   /* 0 = none */
    size_t max_body;
    bool secret_body;           /* body in secure memory (holds secrets) */
    bool identify_clients;      /* check the certificate before taking the body */
    https_handler_fn handle;
    void *cls;
    const char *listening_note; /* appended to the "listening on" log line */
};

/* Read the TLS files, listen, serve until SIGTERM or SIGINT, stop.
 * 0 or -errno with pfs_err set. */
int https_service_run(const struct https_service *s);

/* Did the client present a certificate that verifies against the client CA? */
bool https_client_verified(struct MHD_Connection *c);
/* The verified client certificate's CN (no control characters), or -EACCES. */
int https_client_cn(struct MHD_Connection *c, char *cn, size_t cnlen);
/* The client's numeric address, "unknown" if not known. */
void https_client_address(struct MHD_Connection *c, char *out, size_t outlen);

/* ---- replies (Cache-Control: no-store on every one) ---- */

/* Queue body (malloc'd, taken over; NULL = empty) as type ("text/plain" if
 * NULL). */
enum MHD_Result https_reply(struct MHD_Connection *c, unsigned status, const char *type,
                            char *body, size_t len);
/* Queue obj as application/json from secure memory (it may hold a secret;
 * json-c's own copy of the text is wiped).  retry_after > 0 adds the header. */
enum MHD_Result https_reply_secret_json(struct MHD_Connection *c, unsigned status,
                                        json_object *obj, unsigned retry_after);

#endif
