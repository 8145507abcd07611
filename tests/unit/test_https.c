#include "config.h"

/* https: the TLS policy and failure classes shared by the S3, key service
 * and audit shipper clients. */

#include <curl/curl.h>
#include <stddef.h>

#include "https.h"
#include "tap.h"

/* The policy refuses plain http before any byte is sent. */
static void test_plain_http_refused(void)
{
    CURL *h;

    REQUIRE(https_global_init() == 0);
    REQUIRE(https_global_init() == 0);        /* once, then the same answer */
    h = curl_easy_init();
    REQUIRE(h);
    https_setup(h, &(struct https_tls){ "/nonexistent/ca.pem", NULL, NULL });
    curl_easy_setopt(h, CURLOPT_URL, "http://127.0.0.1:9/");
    CHECK_EQ_INT(curl_easy_perform(h), CURLE_UNSUPPORTED_PROTOCOL);
    /* and a CA bundle that cannot be read is a TLS configuration failure */
    curl_easy_setopt(h, CURLOPT_URL, "https://127.0.0.1:9/");
    CHECK(https_classify(curl_easy_perform(h)) != HTTPS_OK);
    curl_easy_cleanup(h);
}

static void test_classes(void)
{
    static const struct { CURLcode cc; enum https_failure f; } table[] = {
        { CURLE_OK, HTTPS_OK },
        { CURLE_COULDNT_CONNECT, HTTPS_REFUSED },
        { CURLE_COULDNT_RESOLVE_HOST, HTTPS_UNRESOLVED },
        { CURLE_OPERATION_TIMEDOUT, HTTPS_TIMEOUT },
        { CURLE_PEER_FAILED_VERIFICATION, HTTPS_TLS_PEER },
        { CURLE_SSL_CACERT_BADFILE, HTTPS_TLS_CA_FILE },
        { CURLE_SSL_CERTPROBLEM, HTTPS_TLS_CLIENT_CERT },
        { CURLE_SSL_CONNECT_ERROR, HTTPS_TLS_HANDSHAKE },
        { CURLE_SSL_PINNEDPUBKEYNOTMATCH, HTTPS_TLS_OTHER },
        { CURLE_WRITE_ERROR, HTTPS_WRITE_ABORTED },
        { CURLE_OUT_OF_MEMORY, HTTPS_NO_MEMORY },
        { CURLE_RECV_ERROR, HTTPS_OTHER },
    };

    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        CHECK_EQ_INT(https_classify(table[i].cc), table[i].f);
    CHECK(https_is_unreachable(HTTPS_REFUSED) && https_is_unreachable(HTTPS_TIMEOUT) &&
          https_is_unreachable(HTTPS_UNRESOLVED));
    CHECK(!https_is_unreachable(HTTPS_TLS_PEER) && !https_is_unreachable(HTTPS_OTHER));
    CHECK(https_is_tls(HTTPS_TLS_PEER) && https_is_tls(HTTPS_TLS_CA_FILE) &&
          https_is_tls(HTTPS_TLS_CLIENT_CERT) && https_is_tls(HTTPS_TLS_HANDSHAKE) &&
          https_is_tls(HTTPS_TLS_OTHER));
    CHECK(!https_is_tls(HTTPS_REFUSED) && !https_is_tls(HTTPS_WRITE_ABORTED));
}

int main(void)
{
    RUN(test_plain_http_refused);
    RUN(test_classes);
    curl_global_cleanup();
    return tap_done();
}
