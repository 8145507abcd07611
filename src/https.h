/* The HTTPS client side shared by every pactfs client of a server (the S3
 * endpoints, the key service, the audit receiver): libcurl's one global
 * initialisation, the TLS policy, and one classification of transport
 * failures.  Each client keeps its own requests and words its own messages
 * from the class (what to check differs: keyd url, ca_file of an endpoint).
 */
#ifndef PACTFS_HTTPS_H
#define PACTFS_HTTPS_H

#include <curl/curl.h>

/* Files of the TLS configuration (NULL: not set). */
struct https_tls {
    const char *ca_file;      /* CA bundle; NULL: the system bundle */
    const char *cert_file;    /* client certificate (mutual TLS) */
    const char *key_file;     /* its private key */
};

/* curl_global_init once per process, from any thread: 0 or -EIO. */
int https_global_init(void);

/* The options every request carries: the peer's certificate and host name
 * verified, TLS 1.2 or later, the configured CA bundle and client
 * certificate, https only, no redirects, no signals.  Call after
 * curl_easy_reset. */
void https_setup(CURL *h, const struct https_tls *tls);

/* What went wrong with a transfer. */
enum https_failure {
    HTTPS_OK,
    HTTPS_REFUSED,          /* nothing listens there */
    HTTPS_UNRESOLVED,       /* the host name does not resolve */
    HTTPS_TIMEOUT,          /* no answer in time */
    HTTPS_TLS_PEER,         /* the server's certificate was refused */
    HTTPS_TLS_CA_FILE,      /* the configured CA bundle cannot be used */
    HTTPS_TLS_CLIENT_CERT,  /* the client certificate or key cannot be used */
    HTTPS_TLS_HANDSHAKE,    /* the TLS handshake failed */
    HTTPS_TLS_OTHER,        /* another TLS failure (cipher, CRL, pinning ...) */
    HTTPS_WRITE_ABORTED,    /* our body callback refused the data (too large) */
    HTTPS_NO_MEMORY,
    HTTPS_OTHER             /* reset, partial transfer, ... */
};

enum https_failure https_classify(CURLcode cc);

/* The server could not be reached at all (refused, unresolved, timeout). */
int https_is_unreachable(enum https_failure f);
/* Any TLS failure: the server is there but not the one we trust, or our
 * own TLS files are wrong. */
int https_is_tls(enum https_failure f);

#endif
