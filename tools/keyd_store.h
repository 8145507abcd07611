/* pactfs-keyd's database, keyd.db (SQLite): its schema and migrations
 * (PRAGMA user_version, docs/keyd.md) and every query the service makes.
 * Tables: accounts (per vault and account: salt, verifier, sealed share,
 * disabled, failure counters), sources (failure counters per client
 * address), anchors (per vault: the newest signed head reported).
 * Callers group calls into transactions with keyd_store_begin/commit/
 * rollback; each call here is one statement.
 */
#ifndef PACTFS_KEYD_STORE_H
#define PACTFS_KEYD_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "crypto.h"
#include "keyd_secrets.h"

/* PRAGMA user_version of keyd.db: 0 or 1 = plain salted-hash verifiers,
 * 2 = verifiers keyed by the verifier key, 3 = table anchors, 4 = table
 * enrol_codes (docs/keyd.md). */
#define KEYD_SCHEMA_VERSION 4
#define KEYD_CODE_PUB_LEN 32

struct keyd_store {
    sqlite3 *db;
    const char *path;            /* for messages */
};

struct account_row {
    bool found;
    uint8_t salt[KEYD_SALT_LEN];
    uint8_t verifier[SHA256_LEN];
    uint8_t sealed_share[KEYD_SEALED_SHARE_LEN];
    bool disabled;
    unsigned failures;
    int64_t first_failure;
    int64_t locked_until;
    int64_t updated;              /* when the share or verifier last changed */
};

struct source_row {
    unsigned failures;
    int64_t first_failure;
    int64_t locked_until;
};

struct anchor_row {
    bool found;
    int64_t counter;
    uint8_t hash[SHA256_LEN];
};

/* What an officer's action does to an account row. */
enum keyd_account_action {
    KEYD_ACCOUNT_UNLOCK,         /* failure counters and lockout cleared */
    KEYD_ACCOUNT_DISABLE,
    KEYD_ACCOUNT_ENABLE,
    KEYD_ACCOUNT_REMOVE,
};

/* Open (creating) path, then bring its schema to KEYD_SCHEMA_VERSION; the
 * schema 2 migration re-keys verifiers and needs the secrets. */
int keyd_store_open(struct keyd_store *s, const char *path, const struct keyd_secrets *sec);
void keyd_store_close(struct keyd_store *s);

int keyd_store_begin(struct keyd_store *s);      /* BEGIN IMMEDIATE */
int keyd_store_commit(struct keyd_store *s);
void keyd_store_rollback(struct keyd_store *s);

int keyd_account_load(struct keyd_store *s, const char *vault, const char *account,
                      struct account_row *row);
int keyd_account_insert(struct keyd_store *s, const char *vault, const char *account,
                        const uint8_t salt[KEYD_SALT_LEN], const uint8_t verifier[SHA256_LEN],
                        const uint8_t sealed[KEYD_SEALED_SHARE_LEN], int64_t now);
int keyd_account_set_failures(struct keyd_store *s, const char *vault, const char *account,
                              unsigned failures, int64_t first_failure, int64_t locked_until);
int keyd_account_set_auth(struct keyd_store *s, const char *vault, const char *account,
                          const uint8_t salt[KEYD_SALT_LEN],
                          const uint8_t verifier[SHA256_LEN], int64_t now);
int keyd_account_set_share(struct keyd_store *s, const char *vault, const char *account,
                           const uint8_t sealed[KEYD_SEALED_SHARE_LEN], int64_t now);
/* *found: there was such a row. */
int keyd_account_act(struct keyd_store *s, const char *vault, const char *account,
                     enum keyd_account_action action, bool *found);

int keyd_source_load(struct keyd_store *s, const char *addr, struct source_row *row);
int keyd_source_store(struct keyd_store *s, const char *addr, const struct source_row *row);
int keyd_source_delete(struct keyd_store *s, const char *addr);

/* The public key of (vault, account)'s one-time enrolment code, until
 * expires (a new one replaces it). */
int keyd_code_store(struct keyd_store *s, const char *vault, const char *account,
                    const uint8_t pub[KEYD_CODE_PUB_LEN], int64_t expires, int64_t now);
int keyd_code_load(struct keyd_store *s, const char *vault, const char *account,
                   uint8_t pub[KEYD_CODE_PUB_LEN], int64_t *expires, bool *found);
/* Spent (single use) or expired. */
int keyd_code_delete(struct keyd_store *s, const char *vault, const char *account);
int keyd_anchor_load(struct keyd_store *s, const char *vault, struct anchor_row *row);
/* account: who moved it ("(admin)" for the admin token). */
int keyd_anchor_store(struct keyd_store *s, const char *vault, int64_t counter,
                      const uint8_t hash[SHA256_LEN], const char *account, int64_t now);

#endif
