#include "config.h"

/* Shared scaffolding of pactfs-keyd and pactfs-auditd: see https_service.h. */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <openssl/x509.h>

#include "error.h"
#include "exitcodes.h"
#include "https_service.h"
#include "log.h"
#include "secmem.h"

#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define PUBLIC_FILE_MAX (1 << 20)
#define SECRET_FILE_MAX 65536
#define FIRST_BODY_CAP (64u * 1024u)

/* ================================================================ logging */

static const char *log_program = "pactfs";

/* The services log through the programs' one log (src/log.h). */
void https_log_init(const char *program, bool timestamps)
{
    log_program = program;
    pfs_log_init(program, PFS_LOG_INFO);
    pfs_log_timestamps(timestamps);
}

void https_log(int prio, const char *fmt, ...)
{
    enum pfs_log_level level = prio <= LOG_ERR       ? PFS_LOG_ERROR
                               : prio == LOG_WARNING ? PFS_LOG_WARNING
                               : prio <= LOG_INFO    ? PFS_LOG_INFO
                                                     : PFS_LOG_DEBUG;
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pfs_log(level, "%s", msg);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    https_log(LOG_WARNING, "http: %s", msg);
}

/* ================================================================ command line */

int https_cmdline_parse(int argc, char **argv, const char *default_conf,
                        void (*usage)(FILE *), struct https_cmdline *out)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "foreground", no_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int opt;

    out->conf_path = default_conf;
    out->foreground = false;
    while ((opt = getopt_long(argc, argv, "c:fhV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': out->conf_path = optarg; break;
        case 'f': out->foreground = true; break;
        case 'h': usage(stdout); return EXIT_OK;
        case 'V': printf("%s %s\n", log_program, PACKAGE_VERSION); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    return -1;
}

int https_detach(void)
{
    if (daemon(0, 0) < 0) {
        int e = errno;
        https_log(LOG_ERR, "cannot detach: %s", strerror(e));
        return -e;
    }
    (void)pfs_log_to_syslog();
    return 0;
}

/* ================================================================ settings */

static char *resolve_path(const char *dir, const char *value)
{
    char *out = NULL;

    if (value[0] == '/')
        return strdup(value);
    if (asprintf(&out, "%s/%s", dir, value) < 0)
        return NULL;
    return out;
}

int https_conf_string(config_t *cfg, const char *dir, const char *name, bool is_path,
                      bool required, char **out)
{
    const char *v = NULL;

    if (!config_lookup_string(cfg, name, &v)) {
        if (config_lookup(cfg, name))
            return pfs_err(-EINVAL, "setting '%s' must be a string", name);
        if (required)
            return pfs_err(-EINVAL, "setting '%s' is missing (see %s(8))", name, log_program);
        return 0;
    }
    *out = is_path ? resolve_path(dir, v) : strdup(v);
    return *out ? 0 : pfs_err(-ENOMEM, "out of memory reading setting '%s'", name);
}

int https_conf_uint(config_t *cfg, const char *name, unsigned min, unsigned max,
                    unsigned *out)
{
    int v;

    if (!config_lookup(cfg, name))
        return 0;   /* keep the default */
    if (!config_lookup_int(cfg, name, &v))
        return pfs_err(-EINVAL, "setting '%s' must be an integer", name);
    if (v < (int)min || (unsigned)v > max)
        return pfs_err(-EINVAL, "setting '%s' = %d is out of range %u..%u", name, v, min, max);
    *out = (unsigned)v;
    return 0;
}

int https_conf_load(const char *path, int (*read)(config_t *cfg, const char *dir, void *arg),
                    void *arg)
{
    char *copy = strdup(path), *slash;
    const char *dir;
    config_t cfg;
    int rc;

    if (!copy)
        return pfs_err(-ENOMEM, "out of memory");
    slash = strrchr(copy, '/');
    if (slash && slash != copy)
        *slash = '\0';
    dir = slash ? (slash == copy ? "/" : copy) : ".";
    config_init(&cfg);
    if (!config_read_file(&cfg, path)) {
        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
            rc = pfs_err(-ENOENT, "cannot read configuration %s: %s", path, strerror(errno));
        else
            rc = pfs_err(-EINVAL, "%s:%d: %s", path, config_error_line(&cfg),
                         config_error_text(&cfg));
    } else if ((rc = read(&cfg, dir, arg))) {
        char why[512];
        snprintf(why, sizeof why, "%s", pfs_err_msg());
        rc = pfs_err(rc, "%s: %s", path, why);
    }
    config_destroy(&cfg);
    free(copy);
    return rc;
}

/* ================================================================ files */

int https_read_secret_file(const char *path, bool private_only, char **out, size_t *len)
{
    struct stat st;
    char *buf;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return pfs_err(-errno, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size > SECRET_FILE_MAX) {
        close(fd);
        return pfs_err(-EINVAL, "%s is empty or too large", path);
    }
    if (private_only && (st.st_mode & 077)) {
        close(fd);
        return pfs_err(-EPERM, "%s is readable by others: chmod 600 it", path);
    }
    buf = secmem_alloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return pfs_err(-ENOMEM, "out of memory reading %s", path);
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            close(fd);
            secmem_free(buf, (size_t)st.st_size + 1);
            return pfs_err(-e, "cannot read %s: %s", path, strerror(e));
        }
        got += (size_t)n;
    }
    close(fd);
    *out = buf;
    *len = got;
    return 0;
}

static int read_public_file(const char *path, char **out)
{
    FILE *f = fopen(path, "re");
    long n;
    int rc = 0;

    if (!f)
        return pfs_err(-errno, "cannot open %s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) <= 0 || n > PUBLIC_FILE_MAX ||
        fseek(f, 0, SEEK_SET) < 0) {
        fclose(f);
        return pfs_err(-EINVAL, "%s is empty or unreadable", path);
    }
    *out = calloc(1, (size_t)n + 1);
    if (!*out)
        rc = pfs_err(-ENOMEM, "out of memory");
    else if (fread(*out, 1, (size_t)n, f) != (size_t)n) {
        rc = pfs_err(-EIO, "cannot read %s", path);
        free(*out);
        *out = NULL;
    }
    fclose(f);
    return rc;
}

/* The PEM texts libmicrohttpd takes from memory. */
struct tls_texts {
    char *cert;
    char *key;                  /* secmem, key_len + 1 */
    size_t key_len;
    char *trust;                /* NULL: no client CA */
};

static int tls_texts_load(const struct https_service *s, struct tls_texts *t)
{
    int rc = read_public_file(s->cert_file, &t->cert);

    rc = rc ? rc : https_read_secret_file(s->key_file, s->key_private_only, &t->key, &t->key_len);
    if (!rc && s->client_ca_file)
        rc = read_public_file(s->client_ca_file, &t->trust);
    return rc;
}

static void tls_texts_free(struct tls_texts *t)
{
    free(t->cert);
    free(t->trust);
    if (t->key)
        secmem_free(t->key, t->key_len + 1);
    memset(t, 0, sizeof *t);
}

/* ================================================================ client identity */

typedef int (*gnutls_verify_fn)(gnutls_session_t, unsigned int *);
typedef const gnutls_datum_t *(*gnutls_peers_fn)(gnutls_session_t, unsigned int *);

/* With a client CA, GnuTLS asks for a client certificate but leaves the
 * verdict to us.  libmicrohttpd already loaded GnuTLS: look its functions
 * up at run time rather than link it a second time. */
static gnutls_session_t tls_session(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);

    return ci ? (gnutls_session_t)ci->tls_session : NULL;
}

bool https_client_verified(struct MHD_Connection *c)
{
    gnutls_session_t s = tls_session(c);
    gnutls_verify_fn verify = (gnutls_verify_fn)dlsym(RTLD_DEFAULT,
                                                      "gnutls_certificate_verify_peers2");
    unsigned status = 0;

    return s && verify && verify(s, &status) == 0 && status == 0;
}

static int cn_of_der(const unsigned char *der, long len, char *cn, size_t cnlen)
{
    X509 *x = d2i_X509(NULL, &der, len);
    X509_NAME *subj = x ? X509_get_subject_name(x) : NULL;
    int idx = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
    unsigned char *utf8 = NULL;
    int n = -1, rc = -EACCES;

    if (idx >= 0)
        n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx)));
    if (n > 0 && (size_t)n < cnlen && !memchr(utf8, '\0', (size_t)n)) {
        memcpy(cn, utf8, (size_t)n);
        cn[n] = '\0';
        rc = 0;
        for (int i = 0; i < n; i++)
            if ((unsigned char)cn[i] < 0x20 || cn[i] == 0x7f)
                rc = -EACCES;
    }
    OPENSSL_free(utf8);
    X509_free(x);
    return rc;
}

int https_client_cn(struct MHD_Connection *c, char *cn, size_t cnlen)
{
    gnutls_peers_fn peers = (gnutls_peers_fn)dlsym(RTLD_DEFAULT, "gnutls_certificate_get_peers");
    const gnutls_datum_t *chain;
    unsigned n = 0;

    if (!peers || !https_client_verified(c))
        return -EACCES;
    chain = peers(tls_session(c), &n);
    if (!chain || n == 0)
        return -EACCES;
    return cn_of_der(chain[0].data, (long)chain[0].size, cn, cnlen);
}

void https_client_address(struct MHD_Connection *c, char *out, size_t outlen)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    socklen_t salen = 0;

    snprintf(out, outlen, "unknown");
    if (!sa)
        return;
    salen = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (getnameinfo(sa, salen, out, (socklen_t)outlen, NULL, 0, NI_NUMERICHOST) != 0)
        snprintf(out, outlen, "unknown");
}

/* ================================================================ replies */

static enum MHD_Result queue_reply(struct MHD_Connection *c, unsigned status,
                                   struct MHD_Response *resp, const char *type,
                                   unsigned retry_after)
{
    enum MHD_Result ret;

    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (retry_after) {
        char v[16];
        snprintf(v, sizeof v, "%u", retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result https_reply(struct MHD_Connection *c, unsigned status, const char *type,
                            char *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body ? body : (void *)"",
                                        body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);

    if (!resp) {
        free(body);
        return MHD_NO;
    }
    return queue_reply(c, status, resp, type ? type : "text/plain", 0);
}

struct secret_text {
    size_t len;
    char data[];
};

static void secret_text_free(void *cls)
{
    struct secret_text *st = cls;

    secmem_free(st, sizeof *st + st->len);
}

enum MHD_Result https_reply_secret_json(struct MHD_Connection *c, unsigned status,
                                        json_object *obj, unsigned retry_after)
{
    size_t len;
    const char *text = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN, &len);
    struct secret_text *st = secmem_alloc(sizeof *st + len);
    struct MHD_Response *resp;

    if (!st)
        return MHD_NO;
    st->len = len;
    memcpy(st->data, text, len);
    secmem_wipe((char *)text, len);
    resp = MHD_create_response_from_buffer_with_free_callback_cls(len, st->data,
                                                                  secret_text_free, st);
    if (!resp) {
        secret_text_free(st);
        return MHD_NO;
    }
    return queue_reply(c, status, resp, "application/json", retry_after);
}

/* ================================================================ requests */

static struct https_request *request_new(const struct https_service *s, struct MHD_Connection *c)
{
    struct https_request *r = calloc(1, sizeof *r);

    if (!r)
        return NULL;
    if (s->secret_body) {
        /* One fixed buffer: a secret is never copied by a realloc. */
        r->cap = s->max_body;
        r->body = secmem_alloc(r->cap + 1);
        if (!r->body) {
            free(r);
            return NULL;
        }
    }
    /* Identify the client before taking its body: no buffering for
     * strangers. */
    if (s->identify_clients)
        r->anonymous = https_client_cn(c, r->cn, sizeof r->cn) < 0;
    return r;
}

static void request_free(const struct https_service *s, struct https_request *r)
{
    if (s->secret_body)
        secmem_free(r->body, r->cap + 1);
    else
        free(r->body);
    free(r);
}

static bool request_take(const struct https_service *s, struct https_request *r,
                         const char *data, size_t n)
{
    if (r->anonymous)
        return true;
    if (r->too_big || r->len + n > s->max_body) {
        r->too_big = true;
        return true;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : FIRST_BODY_CAP;
        char *p;
        while (cap < r->len + n)
            cap *= 2;
        if (!(p = realloc(r->body, cap)))
            return false;
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    const struct https_service *s = cls;
    struct https_request *r = *con_cls;

    (void)version;
    if (!r) {
        if (!(r = request_new(s, c)))
            return MHD_NO;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!request_take(s, r, upload_data, *upload_size))
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    return s->handle(s->cls, c, url, method, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct https_request *r = *con_cls;

    (void)c;
    (void)toe;
    if (!r)
        return;
    request_free(cls, r);
    *con_cls = NULL;
}

/* ================================================================ running */

static int listen_address(const struct https_service *s, struct sockaddr_storage *ss,
                          unsigned *flags)
{
    struct addrinfo hints, *ai = NULL;
    char port[8];

    memset(&hints, 0, sizeof hints);
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%u", s->port);
    if (getaddrinfo(s->listen_address, port, &hints, &ai) != 0 || !ai)
        return pfs_err(-EINVAL, "listen_address '%s' is not a numeric IP address",
                       s->listen_address);
    memset(ss, 0, sizeof *ss);
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    if (ai->ai_family == AF_INET6)
        *flags |= MHD_USE_IPv6;
    freeaddrinfo(ai);
    return 0;
}

static struct MHD_Daemon *start_http(const struct https_service *s, const struct tls_texts *t)
{
    struct sockaddr_storage ss;
    struct MHD_OptionItem tls[6];
    unsigned n = 0;
    unsigned flags = MHD_USE_TLS | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;

    if (listen_address(s, &ss, &flags))
        return NULL;
    tls[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0, t->cert };
    tls[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, t->key };
    tls[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES };
    if (t->trust)
        tls[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_TRUST, 0, t->trust };
    tls[n++] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };
    return MHD_start_daemon(flags, (uint16_t)s->port, NULL, NULL, on_request, (void *)s,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, (void *)s,
                            MHD_OPTION_CONNECTION_TIMEOUT, s->connection_timeout,
                            MHD_OPTION_CONNECTION_LIMIT, s->connection_limit,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->per_ip_connection_limit,
                            MHD_OPTION_ARRAY, tls,
                            MHD_OPTION_END);
}

int https_service_run(const struct https_service *s)
{
    struct tls_texts t = { NULL, NULL, 0, NULL };
    struct MHD_Daemon *d;
    sigset_t set;
    int sig, rc = tls_texts_load(s, &t);

    if (rc)
        goto out;
    /* Block the stop signals before MHD starts its thread so only sigwait
     * below receives them. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    d = start_http(s, &t);
    if (!d) {
        if (!pfs_err_msg()[0])
            pfs_err(-EIO, "cannot listen on %s port %u with the certificate %s and key %s "
                    "(port in use, or a certificate/key that GnuTLS cannot load)",
                    s->listen_address, s->port, s->cert_file, s->key_file);
        rc = -EIO;
        goto out;
    }
    https_log(LOG_NOTICE, "listening on https://%s:%u (TLS >= 1.2%s)%s", s->listen_address,
              s->port, t.trust ? ", client certificates required" : "",
              s->listening_note ? s->listening_note : "");
    sigwait(&set, &sig);
    https_log(LOG_NOTICE, "stopping on signal %d", sig);
    MHD_stop_daemon(d);
out:
    tls_texts_free(&t);
    return rc;
}
