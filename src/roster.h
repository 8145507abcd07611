/* The signed role roster (docs/accounts.md, "The role roster").
 *
 * The privileged accounts of a vault (every account holding sysadmin or
 * dataadmin, enabled or not) and the co-signature setting, with a counter
 * that only grows.  Each step names the hash of the one before, so the
 * roster is a chain; a client verifies the current step against the one
 * before it (kept in the history) by the rules of that earlier step:
 *  - it is signed by an enabled sysadmin of the earlier step;
 *  - while the earlier step has two or more enabled sysadmins and the
 *    setting on, a step that changes anything carries the co-signature of
 *    two of them (blob(proposal) | blob(confirmation), cosign.h items, one
 *    by the step's signer) describing exactly that change and naming the
 *    earlier step (" roster=<counter>" ending its content).
 * A registry record whose roles or disabled flag disagree with the
 * verified roster is refused (registry.c), so taking a role away, putting
 * an old co-signature back or disabling the other sysadmins by editing
 * meta.db is seen.  The newest step a workstation verified is anchored at
 * the share provider (slot vault_id ROSTER_ANCHOR_SUFFIX): an older roster
 * is refused, and a newer one is walked step by step from the anchor.
 *
 * Storage: vault parameters "registry.roster" (the current step) and
 * "registry.roster.<counter>" (every step, kept)
 *   step = blob(tbs) | u64 signer | blob(RSA-PSS signature over tbs) |
 *          blob(co-signature or empty)
 *   tbs  = "PFRS" | u8 2 | str vault_id | u64 counter | sha256 prev |
 *          i64 time | u8 required | u32 n | n x (u64 account_id,
 *          u32 privileged roles, u8 disabled, sha256 key)   sorted by id
 * key: SHA-256 of the public key (DER) the account's registry record names,
 * all zero while it has none.  Version 1 (written before 2026-12; read, never
 * written) has no key field.  While a version 2 step needs two sysadmins
 * (setting on, two or more enabled sysadmins with a key bound), a listed
 * account whose registry key is not the bound one is not trusted, signs no
 * step or co-signature, and binding a new key is a change like a role
 * change (item "key.<id>", content "fp=<hex> roster=<counter>").  A step
 * after a version 2 step is version 2; the first version 2 step after a
 * version 1 step binds the keys the registry names (not a change).
 * prev is all zero in step 1.  Step 1 of a vault with two or more enabled
 * sysadmins carries their co-signature with key "roster.genesis" and
 * content "entries=<hex SHA-256 of the entries>" (cosign-endorse). */
#ifndef PACTFS_ROSTER_H
#define PACTFS_ROSTER_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "crypto.h"
#include "meta.h"

#define ROSTER_PARAM "registry.roster"
#define ROSTER_ANCHOR_SUFFIX "#roster"
#define ROSTER_PRIV (ROLE_SYSADMIN | ROLE_DATAADMIN)
#define ROSTER_GENESIS_KEY "roster.genesis"

struct roster_entry {
    uint64_t id;
    uint32_t priv;
    uint8_t disabled;
    uint8_t fp[SHA256_LEN];             /* version 2: the key bound (zero: none) */
};

/* What the roster needs from the account registry (registry.c fills it:
 * registry_roster_trust), so the roster stays below the registry. */
struct roster_item {                    /* a signed item (cosign.h) */
    char key[129];
    char content[256];
    uint64_t signer;
    int64_t time;
};
struct roster_trust {
    struct meta *m;
    const char *vault_id;
    const void *arg;
    /* the public key of enrolled account id whose record verifies */
    int (*key)(const struct roster_trust *t, uint64_t id, EVP_PKEY **pub);
    /* the name account id's key was registered under (record verifies) */
    int (*key_name)(const struct roster_trust *t, uint64_t id, char *out, size_t len);
    /* decode a signed item; tbs and sig point into raw */
    int (*item)(const struct roster_trust *t, const uint8_t *raw, size_t len,
                struct roster_item *it, const uint8_t **tbs, size_t *tbslen,
                const uint8_t **sig, size_t *siglen);
};

struct roster {
    uint8_t version;
    uint64_t counter;
    uint8_t prev[SHA256_LEN];
    int64_t time;
    uint8_t required;
    size_t n;
    struct roster_entry *e;
    uint64_t signer;
    uint8_t hash[SHA256_LEN];           /* SHA-256 of the stored step */
};
void roster_clear(struct roster *r);

/* Decode a stored step (no signature check). */
int roster_decode(const char *vault_id, const uint8_t *raw, size_t len, struct roster *r);

/* The entry of id, or NULL. */
const struct roster_entry *roster_find(const struct roster *r, uint64_t id);
/* Enabled sysadmins listed (version 2: with a key bound). */
unsigned roster_sysadmins(const struct roster *r);
/* Does a change of r need two sysadmins (setting on, two or more)? */
int roster_needs_two(const struct roster *r);
/* How many changes b makes over a (each entry's roles/disabled, its bound
 * key, the setting: one each). */
unsigned roster_changes(const struct roster *a, const struct roster *b);

/* Load and verify the current step against the one before it.  0, -ENOENT
 * when the vault has no roster, -EBADMSG (message) when it does not verify.
 * raw (optional) receives the stored step. */
int roster_load(const struct roster_trust *t, struct roster *r, uint8_t **raw, size_t *raw_len);

/* The current roster against the anchor (a_counter, a_hash of the stored
 * step): 0 if it is the anchor or every step from the anchor to it
 * verifies; -ESTALE older than the anchor or gone; -EBADMSG otherwise. */
int roster_check_anchor(const struct roster_trust *t, const struct roster *cur, uint64_t a_counter,
                        const uint8_t a_hash[SHA256_LEN], const char *source);

/* Does account (id, roles, disabled) agree with the roster?  0 or -EBADMSG. */
int roster_agrees(const struct roster *r, uint64_t id, const char *name, uint32_t roles,
                  int disabled);

/* Is pubkey (DER; empty: pending) the key r binds for id?  0, or -EBADMSG
 * naming the account and what to do (only while r needs two sysadmins). */
int roster_key_agrees(const struct roster *r, uint64_t id, const char *name,
                      const uint8_t *pubkey, size_t pubkey_len);

/* next (made from cur, NULL for step 1) becomes version 2 and binds the
 * keys the registry names now (t->key; none: zero): every entry's when cur
 * is NULL, of version 1 or does not need two sysadmins, else only the
 * entries cur does not list (a key changes by its own co-signed step). */
int roster_bind_keys(const struct roster_trust *t, const struct roster *cur,
                     struct roster *next);
/* The first entry of r whose registry key (t->key) is not the one bound:
 * 1 with *id and fp (the registry's), 0 if none. */
int roster_stale_key(const struct roster_trust *t, const struct roster *r, uint64_t *id,
                     uint8_t fp[SHA256_LEN]);
/* Bind fp as id's key in r (-ENOENT: not listed). */
int roster_set_key(struct roster *r, uint64_t id, const uint8_t fp[SHA256_LEN]);

/* The hex SHA-256 of the entries and setting (step 1's co-signature). */
void roster_entries_hex(const struct roster *r, char out[2 * SHA256_LEN + 1]);

/* The next step: cur (NULL: step 1) with the account id set to (priv,
 * disabled) (id 0: no account change; priv 0: not listed), required -1
 * keeps the setting.  *changed: whether anything differs from cur. */
int roster_next(const struct roster *cur, uint64_t id, uint32_t priv, int disabled,
                int required, struct roster *next, int *changed);

/* Set (or, priv 0, drop) the entry of id in r. */
int roster_set(struct roster *r, uint64_t id, uint32_t priv, int disabled);

/* Sign next with key as signer, attach attest (may be NULL), store it as
 * the current step and in the history (in the caller's transaction), and
 * verify it as a client would.  -EBADMSG with the reason if it does not. */
int roster_store(const struct roster_trust *t, struct roster *next, EVP_PKEY *key,
                 uint64_t signer, const uint8_t *attest, size_t attest_len);

#endif
