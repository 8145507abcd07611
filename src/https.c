#include "config.h"

/* libcurl set-up and transport failure classes shared by the HTTPS
 * clients (see https.h). */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "https.h"
#include "secmem.h"

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_rc;

static void global_init(void)
{
    /* libcurl copies a small POST body (the key service's login, with the
     * password-derived authenticator) into its request buffer: every block
     * it frees is wiped. */
    global_rc = curl_global_init_mem(CURL_GLOBAL_DEFAULT, malloc, secmem_wiping_free,
                                     secmem_wiping_realloc, strdup, calloc) == CURLE_OK
        ? 0 : -EIO;
}

int https_global_init(void)
{
    pthread_once(&global_once, global_init);
    return global_rc;
}

void https_setup(CURL *h, const struct https_tls *tls)
{
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (tls->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, tls->ca_file);
    if (tls->cert_file)
        curl_easy_setopt(h, CURLOPT_SSLCERT, tls->cert_file);
    if (tls->key_file)
        curl_easy_setopt(h, CURLOPT_SSLKEY, tls->key_file);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTPS);
#endif
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
}

enum https_failure https_classify(CURLcode cc)
{
    switch (cc) {
    case CURLE_OK:
        return HTTPS_OK;
    case CURLE_COULDNT_CONNECT:
        return HTTPS_REFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
        return HTTPS_UNRESOLVED;
    case CURLE_OPERATION_TIMEDOUT:
        return HTTPS_TIMEOUT;
    case CURLE_PEER_FAILED_VERIFICATION:
        return HTTPS_TLS_PEER;
    case CURLE_SSL_CACERT_BADFILE:
        return HTTPS_TLS_CA_FILE;
    case CURLE_SSL_CERTPROBLEM:
        return HTTPS_TLS_CLIENT_CERT;
    case CURLE_SSL_CONNECT_ERROR:
        return HTTPS_TLS_HANDSHAKE;
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_ENGINE_INITFAILED:
        return HTTPS_TLS_OTHER;
    case CURLE_WRITE_ERROR:
        return HTTPS_WRITE_ABORTED;
    case CURLE_OUT_OF_MEMORY:
        return HTTPS_NO_MEMORY;
    default:
        return HTTPS_OTHER;
    }
}

int https_is_unreachable(enum https_failure f)
{
    return f == HTTPS_REFUSED || f == HTTPS_UNRESOLVED || f == HTTPS_TIMEOUT;
}

int https_is_tls(enum https_failure f)
{
    return f == HTTPS_TLS_PEER || f == HTTPS_TLS_CA_FILE || f == HTTPS_TLS_CLIENT_CERT ||
           f == HTTPS_TLS_HANDSHAKE || f == HTTPS_TLS_OTHER;
}
