#include "config.h"

/* pactfs-keyd's policy (keyd_policy.h). */

#include <errno.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "secmem.h"

#include "https_service.h"
#include "keyd_policy.h"

static int64_t window_start(int64_t first, int64_t now, unsigned window)
{
    return (first == 0 || now - first > (int64_t)window) ? 0 : first;
}

int keyd_source_record_failure(struct keyd *k, const char *remote, int64_t now,
                               unsigned *retry_after)
{
    struct source_row s;
    int rc = keyd_source_load(&k->store, remote, &s);

    if (rc)
        return rc;
    if (!window_start(s.first_failure, now, k->conf.failure_window_seconds)) {
        s.failures = 0;
        s.first_failure = now;
    }
    if (++s.failures >= k->conf.source_max_failures) {
        s.locked_until = now + k->conf.source_lockout_seconds;
        s.failures = 0;
        s.first_failure = 0;
        *retry_after = k->conf.source_lockout_seconds;
    }
    return keyd_source_store(&k->store, remote, &s);
}

static int account_record_failure(struct keyd *k, const struct fields *f,
                                  struct account_row *row, int64_t now, unsigned *retry_after)
{
    unsigned failures = row->failures;
    int64_t first = window_start(row->first_failure, now, k->conf.failure_window_seconds);
    int64_t locked_until = 0;

    if (!first) {
        failures = 0;
        first = now;
    }
    if (++failures >= k->conf.max_failures) {
        locked_until = now + k->conf.lockout_seconds;
        failures = 0;
        first = 0;
        if (k->conf.lockout_seconds > *retry_after)
            *retry_after = k->conf.lockout_seconds;
    }
    return keyd_account_set_failures(&k->store, f->vault, f->account, failures, first,
                                     locked_until);
}

/* Is this source or account locked right now?  Sets a 429 outcome if so. */
static int check_lockouts(struct keyd *k, const char *remote, const struct account_row *row,
                          int64_t now, struct outcome *o)
{
    struct source_row s;
    int64_t until = 0;
    int rc = keyd_source_load(&k->store, remote, &s);

    if (rc)
        return rc;
    if (s.locked_until > now)
        until = s.locked_until;
    if (row->found && row->locked_until > now && row->locked_until > until)
        until = row->locked_until;
    if (until) {
        set_outcome(o, 429, "locked");
        o->retry_after = (unsigned)(until - now);
    }
    return 0;
}

int keyd_authenticate(struct keyd *k, const char *remote, const struct fields *f,
                      const uint8_t *auth, struct account_row *row, struct outcome *o)
{
    static const uint8_t dummy_salt[KEYD_SALT_LEN];
    uint8_t computed[SHA256_LEN];
    int64_t now = (int64_t)time(NULL);
    unsigned retry = 0;
    bool match;
    int rc;

    if (!f->vault || !f->account || !auth) {
        set_outcome(o, 400, "bad-request");
        return 0;
    }
    rc = keyd_account_load(&k->store, f->vault, f->account, row);
    rc = rc ? rc : check_lockouts(k, remote, row, now, o);
    if (rc || o->status)
        return rc;
    /* Same work whether or not the account exists: the answer is uniform. */
    keyd_make_verifier(&k->secrets, f->vault, f->account, row->found ? row->salt : dummy_salt, auth,
                  computed);
    match = row->found && CRYPTO_memcmp(computed, row->verifier, SHA256_LEN) == 0;
    secmem_wipe(computed, sizeof computed);
    if (!match) {
        rc = keyd_source_record_failure(k, remote, now, &retry);
        if (!rc && row->found)
            rc = account_record_failure(k, f, row, now, &retry);
        set_outcome(o, retry ? 429 : 401, retry ? "locked" : "rejected");
        o->retry_after = retry;
        return rc;
    }
    if (row->disabled) {
        set_outcome(o, 403, "disabled");
        return 0;
    }
    if (row->failures || row->first_failure)
        rc = keyd_account_set_failures(&k->store, f->vault, f->account, 0, 0, 0);
    return rc;
}

int keyd_anchor_caller_ok(struct keyd *k, const struct fields *f, bool *ok)
{
    uint8_t want[KEYD_ANCHOR_TOKEN_LEN];
    struct account_row row;
    int64_t expires = 0;
    int rc;

    *ok = f->admin_ok;
    if (*ok || !f->has_token || !f->account)
        return 0;
    for (int i = 0; i < 8; i++)
        expires = (int64_t)(((uint64_t)expires << 8) | f->token[i]);
    if (expires < (int64_t)time(NULL))
        return 0;
    /* The file head's slot, VAULT#files (src/file_head.h), and the role
     * roster's, VAULT#roster (src/roster.h), move with the vault's token. */
    char base[KEYD_NAME_MAX + 1];
    const char *vault = f->vault;
    static const char *const slots[] = { KEYD_FILES_SLOT, KEYD_ROSTER_SLOT };

    for (size_t i = 0; i < sizeof slots / sizeof slots[0] && vault == f->vault; i++) {
        size_t n = strlen(vault), sl = strlen(slots[i]);

        if (n > sl && n <= KEYD_NAME_MAX && strcmp(vault + n - sl, slots[i]) == 0) {
            memcpy(base, vault, n - sl);
            base[n - sl] = '\0';
            vault = base;
        }
    }
    rc = keyd_anchor_token_mac(&k->secrets, vault, f->account, expires, want);
    if (rc)
        return rc;
    if (CRYPTO_memcmp(want, f->token, sizeof want) != 0)
        return 0;
    rc = keyd_account_load(&k->store, vault, f->account, &row);
    *ok = !rc && row.found && !row.disabled;
    return rc;
}

bool keyd_admin_token_ok(struct keyd *k, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);

    return h && strncmp(h, "Bearer ", 7) == 0 && keyd_admin_token_matches(&k->secrets, h + 7);
}

bool keyd_officer_ok(struct keyd *k, struct MHD_Connection *c, const char *cn)
{
    if (!cn[0] || !https_client_verified(c))
        return false;
    for (size_t i = 0; i < k->conf.nofficers; i++)
        if (!strcmp(cn, k->conf.officers[i]))
            return true;
    return false;
}

bool keyd_client_cert_ok(struct keyd *k, struct MHD_Connection *c)
{
    return !k->require_client_cert || https_client_verified(c);
}
