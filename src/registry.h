/* The signed account registry.
 *
 * The accounts table is written by whoever operates the metadata store, so
 * a client never trusts its public keys or roles as such.  Every account
 * has a registry record (name, roles, public key, disabled flag, serial,
 * the name its key was enrolled under) signed by a sysadmin, whose own
 * record is signed by a sysadmin ... up to the vault root key, whose
 * SHA-256 fingerprint is pinned in every workstation's pactfs.conf
 * (vault.root_fingerprint).  A record is only good if it is signed along
 * that chain AND matches the accounts row field for field.
 *
 * Storage (no schema change): vault parameters
 *   "registry.root"          the root public key (SubjectPublicKeyInfo DER)
 *   "registry.account.<id>"  the account's signed record
 * Byte layouts: docs/accounts.md.
 */
#ifndef PACTFS_REGISTRY_H
#define PACTFS_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "crypto.h"
#include "meta.h"
#include "roster.h"

#define REGISTRY_ROOT_SIGNER 0   /* signer_id of a record signed by the root key */
#define REGISTRY_MAX_DEPTH 8     /* longest sysadmin chain accepted */
#define REGISTRY_FP_HEX (2 * SHA256_LEN)
#define REGISTRY_DETAIL_MAX 128  /* full name, e-mail, department */

/* What an enterprise keeps about an account (signed with the record). */
struct registry_details {
    char full_name[REGISTRY_DETAIL_MAX + 1];
    char email[REGISTRY_DETAIL_MAX + 1];
    char department[REGISTRY_DETAIL_MAX + 1];
    int64_t expires;                          /* unix seconds; 0 never */
};

/* One registry record as decoded (pubkey and sig point into the raw blob
 * given to registry_record_decode, or are malloc'd by registry_record_get). */
struct registry_record {
    uint64_t account_id;
    char name[META_ACCOUNT_NAME_MAX + 1];
    char key_name[META_ACCOUNT_NAME_MAX + 1]; /* name the key was sealed and enrolled under */
    uint32_t roles;
    int disabled;
    uint64_t serial;                          /* grows with every change */
    const uint8_t *pubkey;                    /* empty while enrolment is pending; */
    size_t pubkey_len;                        /* verified: the enrolled key */
    uint64_t signer_id;                       /* REGISTRY_ROOT_SIGNER or a sysadmin */
    /* version 2 (version 1 records read with these empty) */
    uint8_t version;
    struct registry_details details;
    int has_code;                             /* registered for self-enrolment */
    uint8_t code_pub[ED25519_PUB_LEN];        /* the enrolment code's key (enrol.h) */
    int64_t code_expires;
    /* version 3: SHA-256 of the list of what the account signed while it
     * held the dataadmin role (registry_certify_retaining) */
    int has_retained;
    uint8_t retained[SHA256_LEN];
    /* set by verification */
    int enrolled;                             /* pubkey came from an enrolment proof */
    int64_t enrolled_at;
    const uint8_t *sig;
    size_t sig_len;
    uint8_t *raw;                             /* owned copy (registry_record_get) */
    uint8_t *enrol_raw;                       /* owned copy of the enrolment proof */
};
void registry_record_clear(struct registry_record *r);

/* Roles must be non-empty and known, and never sysadmin with dataadmin. */
int registry_roles_check(uint32_t roles);
/* "user", "dataadmin,user" ... into a ROLE_* mask; -EINVAL names the bad word. */
int registry_roles_parse(const char *s, uint32_t *roles);
/* "dataadmin,user" from a mask (out needs 64 bytes). */
void registry_roles_format(uint32_t roles, char *out, size_t outlen);

/* Hex SHA-256 fingerprint of a public key (out: REGISTRY_FP_HEX + 1). */
int registry_fingerprint_hex(EVP_PKEY *key, char *out);

/* The vault root public key, checked against the pinned fingerprint. */
int registry_root_key(struct meta *m, const char *root_fp, EVP_PKEY **out);

/* Store the root public key (vault init). */
int registry_root_store(struct meta *m, EVP_PKEY *root);

/* Sign a record for account a (its name, roles, disabled flag and public
 * key as in a) and store it: signer_id REGISTRY_ROOT_SIGNER with the root
 * key, else the signing sysadmin's id and key.  key_name NULL keeps the
 * previous record's (or a->name for a new account); the serial is the
 * previous record's + 1.  The caller then signs the next vault head
 * (vault_head_advance) in the same transaction, or every client refuses the
 * metadata (the head no longer matches the records). */
int registry_certify(struct meta *m, const char *vault_id, const struct meta_account *a,
                     const char *key_name, EVP_PKEY *signer, uint64_t signer_id);

/* As registry_certify, and: details (NULL keeps the previous record's);
 * code_pub non-NULL registers the account for self-enrolment with that
 * code key until code_expires (the account row then has no key yet and the
 * previous enrolment proof is dropped). */
int registry_certify_ex(struct meta *m, const char *vault_id, const struct meta_account *a,
                        const char *key_name, const struct registry_details *details,
                        const uint8_t *code_pub, int64_t code_expires,
                        EVP_PKEY *signer, uint64_t signer_id);

/* The account loses the right to sign grants and folder states (demoted
 * from dataadmin, disabled, re-enrolled): certify its new record a (as
 * registry_certify) naming the SHA-256 hashes of the grants (signed
 * envelopes) and folder states (stored blobs) it signed that verify now,
 * while it still holds the role.  The list is stored as vault parameter
 * "registry.retained.<id>" and its hash signed into the record, so those
 * signatures stay good and any other signature the account makes later
 * (or back-dates) is refused.  hashes is sorted in place. */
int registry_certify_retaining(struct meta *m, const char *vault_id, const struct meta_account *a,
                               uint8_t (*hashes)[SHA256_LEN], size_t n, EVP_PKEY *signer,
                               uint64_t signer_id);

/* Was obj (a signed envelope or folder state blob) signed by r's account
 * while it held the dataadmin role, by r's retained list?  0 yes, -ENOENT
 * no (or no list), -EBADMSG if the stored list does not match the record. */
int registry_retained(struct meta *m, const char *vault_id, const struct registry_record *r,
                      const uint8_t *obj, size_t objlen);

/* Verify the record of account_id along the chain to the pinned root and
 * against the accounts row.  *rec (optional) receives the verified record
 * (free with registry_record_clear).  -EBADMSG with a message naming what
 * differs when anything does not verify; -EINVAL if root_fp is NULL. */
int registry_verify(struct meta *m, const char *vault_id, const char *root_fp,
                    uint64_t account_id, struct registry_record *rec);

/* As registry_verify, but an account registered for self-enrolment that
 * has not enrolled yet verifies too (rec->pubkey_len == 0 then).
 * registry_verify refuses it with -EACCES ("has not enrolled yet"). */
int registry_verify_pending(struct meta *m, const char *vault_id, const char *root_fp,
                            uint64_t account_id, struct registry_record *rec);

/* As registry_verify_pending, without the co-signature and roster rules
 * (what the role roster itself uses to find its signers' keys). */
int registry_verify_plain(struct meta *m, const char *vault_id, const char *root_fp,
                          uint64_t account_id, struct registry_record *rec);

/* The verified public key of an account (EVP_PKEY_free it). */
int registry_verified_key(struct meta *m, const char *vault_id, const char *root_fp,
                          uint64_t account_id, struct registry_record *rec, EVP_PKEY **key);

/* ---- Co-signed roles (docs/accounts.md, "Co-signature").
 *
 * While two or more enabled sysadmins verify and the vault's co-signature
 * setting is on (only switched off by two of them: "policy.cosign" says
 * "required=no" and "policy.cosign.cosig" holds both their items), a
 * record giving the sysadmin or dataadmin role is trusted (registry_verify)
 * only if it is signed by the root key, or
 *  - "registry.cosig.<id>" = blob(item) | blob(item): the proposal and the
 *    confirmation (cosign.h item layout) of two different sysadmins, key
 *    "role.<id>" or "add.<key name>", content "roles=0x<mask>..." whose
 *    sysadmin/dataadmin bits are the record's, or
 *  - it was given while its signer was the only sysadmin: then every other
 *    sysadmin's endorsement "registry.endorse.<id>" lists it
 *      blob(tbs) | blob(RSA-PSS signature by that sysadmin)
 *      tbs = "PFSN" | u8 1 | str vault_id | u64 signer | i64 time | u32 n |
 *            n x (u64 account_id, u32 privileged roles)
 *    (a sysadmin endorses what it finds when it enrols, and adds what it
 *    signs while alone).  Records of format 3 and earlier without any
 *    endorsement yet are trusted as before (an upgraded vault). */
#define REGISTRY_ITEM_KEY_MAX 128
#define REGISTRY_ITEM_CONTENT_MAX 255
struct registry_item {
    char key[REGISTRY_ITEM_KEY_MAX + 1];
    char content[REGISTRY_ITEM_CONTENT_MAX + 1];
    uint64_t signer;
    int64_t time;
};
/* Decode a signed item ("PFSQ"); tbs and sig point into raw. */
int registry_item_decode(const char *vault_id, const uint8_t *raw, size_t len,
                         struct registry_item *it, const uint8_t **tbs, size_t *tbslen,
                         const uint8_t **sig, size_t *siglen);
/* It decodes, is under key (if not NULL), and is signed by an enabled
 * sysadmin whose record verifies.  0 or -EBADMSG. */
int registry_item_verify(struct meta *m, const char *vault_id, const char *root_fp,
                         const uint8_t *raw, size_t len, const char *key,
                         struct registry_item *it);
/* 1 if the co-signature setting is off as clients read it (the setting
 * and the two sysadmins' items beside it verify), else 0. */
int registry_cosign_policy_off(struct meta *m, const char *vault_id, const char *root_fp);
/* signer's endorsement lists account id with roles' privileged bits (or
 * no longer lists it when roles holds neither).  certify calls it. */
int registry_endorse_add(struct meta *m, const char *vault_id, EVP_PKEY *key, uint64_t signer,
                         uint64_t id, uint32_t roles);
/* signer's endorsement lists every account holding sysadmin or dataadmin
 * whose record verifies now (*count: how many). */
int registry_endorse_current(struct meta *m, const char *vault_id, const char *root_fp,
                             EVP_PKEY *key, uint64_t signer, size_t *count);

/* What the role roster (roster.h) checks its signers and items with:
 * keys of records verified along the chain (without the co-signature and
 * roster rules themselves).  root_fp must outlive t. */
void registry_roster_trust(struct roster_trust *t, struct meta *m, const char *vault_id,
                           const char *root_fp);

/* Raw encoding, exposed for the unit tests: encode the signed part
 * (everything but the signature) / decode a stored record. */
int registry_record_encode_tbs(const char *vault_id, const struct registry_record *r,
                               uint8_t **out, size_t *outlen);
int registry_record_decode(const char *vault_id, const uint8_t *blob, size_t len,
                           struct registry_record *r);
/* The stored form of r (blob tbs, blob signature) signed by signer:
 * malloc'd in *out. */
int registry_record_sign(const char *vault_id, const struct registry_record *r,
                         EVP_PKEY *signer, uint8_t **out, size_t *outlen);

#endif
