#include "config.h"

/* Registry proofs carried by signed audit sessions: build one from the
 * metadata store, check one offline against the pinned root fingerprint. */

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_proof.h"
#include "buf.h"
#include "crypto.h"
#include "enrol.h"
#include "error.h"
#include "registry.h"

#define PROOF_MAGIC "PFAP"
#define PROOF_VERSION 2             /* 1: no enrolment proofs */
#define ROOT_PARAM "registry.root"
#define BLOB_MAX (16u * 1024u)

int audit_proof_encode(const uint8_t *root_der, size_t root_len, const uint8_t *const *records,
                       const size_t *lens, size_t n, char **hex)
{
    return audit_proof_encode_enrolled(root_der, root_len, records, lens, NULL, NULL, n, hex);
}

int audit_proof_encode_enrolled(const uint8_t *root_der, size_t root_len,
                                const uint8_t *const *records, const size_t *lens,
                                const uint8_t *const *enrols, const size_t *enrol_lens,
                                size_t n, char **hex)
{
    struct wbuf b;
    uint8_t *raw;
    size_t len;

    *hex = NULL;
    if (n == 0 || n > REGISTRY_MAX_DEPTH + 1)
        return pfs_err(-EINVAL, "a registry proof holds 1 to %d records", REGISTRY_MAX_DEPTH + 1);
    wbuf_init(&b);
    wbuf_put_bytes(&b, PROOF_MAGIC, 4);
    wbuf_put_u8(&b, PROOF_VERSION);
    wbuf_put_blob(&b, root_der, root_len);
    wbuf_put_u8(&b, (uint8_t)n);
    for (size_t i = 0; i < n; i++)
        wbuf_put_blob(&b, records[i], lens[i]);
    for (size_t i = 0; i < n; i++)
        wbuf_put_blob(&b, enrols ? enrols[i] : NULL, enrols ? enrol_lens[i] : 0);
    raw = wbuf_steal(&b, &len);
    if (!raw)
        return -ENOMEM;
    if (2 * len + 1 > AUDIT_PROOF_MAX_HEX) {
        free(raw);
        return pfs_err(-E2BIG, "the registry proof is too long for an audit event");
    }
    *hex = malloc(2 * len + 1);
    if (*hex)
        hex_encode(raw, len, *hex);
    free(raw);
    return *hex ? 0 : -ENOMEM;
}

int audit_proof_direct(const char *vault_id, EVP_PKEY *root, uint64_t account_id,
                       const char *name, uint32_t roles, EVP_PKEY *key, char **hex)
{
    struct registry_record r = { .account_id = account_id, .roles = roles, .serial = 1,
                                 .signer_id = REGISTRY_ROOT_SIGNER };
    uint8_t *der = NULL, *root_der = NULL, *rec = NULL;
    size_t derlen = 0, root_len = 0, reclen = 0;
    int rc = rsa_public_to_der(key, &der, &derlen);

    *hex = NULL;
    snprintf(r.name, sizeof r.name, "%s", name);
    snprintf(r.key_name, sizeof r.key_name, "%s", name);
    r.pubkey = der;
    r.pubkey_len = derlen;
    rc = rc ? rc : registry_record_sign(vault_id, &r, root, &rec, &reclen);
    rc = rc ? rc : rsa_public_to_der(root, &root_der, &root_len);
    rc = rc ? rc : audit_proof_encode(root_der, root_len, (const uint8_t *const *)&rec, &reclen,
                                      1, hex);
    free(der);
    free(root_der);
    free(rec);
    return rc;
}

int audit_proof_root_fp(const char *hex, char out[2 * SHA256_LEN + 1])
{
    size_t hexlen = hex ? strlen(hex) : 0, len = hexlen / 2;
    const uint8_t *magic, *root_der = NULL;
    size_t root_len = 0;
    uint8_t *raw, version = 0, fp[SHA256_LEN];
    struct rbuf b;
    int rc = -EBADMSG;

    if (hexlen == 0 || hexlen % 2 || hexlen > AUDIT_PROOF_MAX_HEX || !(raw = malloc(len)))
        return -EBADMSG;
    if (hex_decode(hex, raw, len) == 0) {
        rbuf_init(&b, raw, len);
        rbuf_get_ref(&b, &magic, 4);
        rbuf_get_u8(&b, &version);
        rbuf_get_blob(&b, &root_der, &root_len, BLOB_MAX);
        if (!b.err && !memcmp(magic, PROOF_MAGIC, 4)) {
            sha256(root_der, root_len, fp);
            hex_encode(fp, sizeof fp, out);
            rc = 0;
        }
    }
    free(raw);
    return rc;
}

static void record_param_key(uint64_t id, char *key, size_t len)
{
    snprintf(key, len, "registry.account.%" PRIu64, id);
}

int audit_proof_build(struct meta *m, const char *vault_id, const char *root_fp,
                      uint64_t account_id, char **hex)
{
    uint8_t *recs[REGISTRY_MAX_DEPTH + 1] = { 0 }, *root = NULL;
    uint8_t *enrols[REGISTRY_MAX_DEPTH + 1] = { 0 };
    size_t lens[REGISTRY_MAX_DEPTH + 1] = { 0 }, root_len = 0, n = 0;
    size_t enrol_lens[REGISTRY_MAX_DEPTH + 1] = { 0 };
    uint64_t id = account_id;
    struct audit_signer s = { 0 };
    char key[64], why[256];
    int rc = 0;

    *hex = NULL;
    while (rc == 0) {
        struct registry_record r = { 0 };

        if (n == REGISTRY_MAX_DEPTH + 1) {
            rc = pfs_err(-EBADMSG, "the registry chain of account %" PRIu64 " is too long",
                         account_id);
            break;
        }
        rc = registry_verify(m, vault_id, root_fp, id, &r);
        if (rc == 0) {
            record_param_key(id, key, sizeof key);
            rc = meta_param_get(m, key, &recs[n], &lens[n]);
            /* A self-enrolled account's key is bound by its enrolment proof. */
            if (rc == 0 && r.enrolled)
                rc = enrol_proof_load(m, id, &enrols[n], &enrol_lens[n]);
            n += rc == 0;
            id = r.signer_id;
        }
        registry_record_clear(&r);
        if (rc == 0 && id == REGISTRY_ROOT_SIGNER)
            break;
    }
    if (rc == 0)
        rc = meta_param_get(m, ROOT_PARAM, &root, &root_len);
    if (rc == 0)
        rc = audit_proof_encode_enrolled(root, root_len, (const uint8_t *const *)recs, lens,
                                         (const uint8_t *const *)enrols, enrol_lens, n, hex);
    /* What goes into the trail must verify offline exactly as a reader will. */
    if (rc == 0 && audit_proof_verify(vault_id, root_fp, *hex, 1, &s, why, sizeof why) != 0)
        rc = pfs_err(-EBADMSG, "the registry proof of account %" PRIu64 " does not verify: %s",
                     account_id, why);
    if (rc == 0 && s.account_id != account_id)
        rc = pfs_err(-EBADMSG, "the registry proof names another account");
    EVP_PKEY_free(s.key);
    for (size_t i = 0; i < n; i++) {
        free(recs[i]);
        free(enrols[i]);
    }
    free(root);
    if (rc) {
        free(*hex);
        *hex = NULL;
    }
    return rc;
}

static int refuse(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return -EBADMSG;
}

/* The record's signature under key. */
static int record_signed_by(const char *vault_id, const struct registry_record *r, EVP_PKEY *key)
{
    uint8_t *tbs = NULL;
    size_t tbslen = 0;
    int rc = registry_record_encode_tbs(vault_id, r, &tbs, &tbslen);

    if (rc == 0)
        rc = sig_verify(key, tbs, tbslen, r->sig, r->sig_len);
    free(tbs);
    return rc;
}

static EVP_PKEY *root_key_checked(const uint8_t *der, size_t len, const char *root_fp)
{
    uint8_t fp[SHA256_LEN];
    char hex[2 * SHA256_LEN + 1];

    sha256(der, len, fp);
    hex_encode(fp, sizeof fp, hex);
    if (!root_fp || strcmp(hex, root_fp) != 0)
        return NULL;
    return rsa_public_from_der(der, len);
}

/* Check records[i] under the key of records[i+1] (or the root for the last). */
struct bound_key {
    const uint8_t *der;      /* the record's key, or its enrolment proof's */
    size_t len;
};

static int check_links(const char *vault_id, struct registry_record *rec,
                       const struct bound_key *keys, size_t n, EVP_PKEY *root, char *why,
                       size_t whylen)
{
    for (size_t i = 0; i < n; i++) {
        EVP_PKEY *k = root;
        int rc;

        if (i + 1 < n) {
            if (rec[i].signer_id != rec[i + 1].account_id)
                return refuse(why, whylen, "the record of \"%s\" is not signed by the next "
                              "record's account", rec[i].name);
            if (!(rec[i + 1].roles & ROLE_SYSADMIN) || rec[i + 1].disabled)
                return refuse(why, whylen, "the record of \"%s\" is signed by \"%s\", not an "
                              "enabled sysadmin", rec[i].name, rec[i + 1].name);
            k = rsa_public_from_der(keys[i + 1].der, keys[i + 1].len);
            if (!k)
                return refuse(why, whylen, "the public key of \"%s\" is malformed",
                              rec[i + 1].name);
        } else if (rec[i].signer_id != REGISTRY_ROOT_SIGNER) {
            return refuse(why, whylen, "the registry chain does not end at the root key");
        }
        rc = record_signed_by(vault_id, &rec[i], k);
        if (k != root)
            EVP_PKEY_free(k);
        pfs_err_clear();
        if (rc)
            return refuse(why, whylen, "the registry signature over \"%s\" does not verify",
                          rec[i].name);
    }
    return 0;
}

/* Version 2: each record is followed (after all records) by its enrolment
 * proof, empty unless the record binds its key that way (enrol.h). */
static int bind_enrolled_key(const char *vault_id, struct rbuf *b,
                             const struct registry_record *r, struct bound_key *k,
                             int verify_sigs, char *why, size_t whylen)
{
    const uint8_t *p;
    size_t plen;
    int64_t at = 0;

    if (rbuf_get_blob(b, &p, &plen, BLOB_MAX) < 0)
        return refuse(why, whylen, "the registry proof is truncated");
    if (!plen)
        return 0;
    if (r->pubkey_len || !r->has_code)
        return refuse(why, whylen, "the registry proof carries an enrolment proof for \"%s\", "
                      "whose record binds no enrolment code", r->name);
    if (!verify_sigs) {
        /* Decoding only: the key still comes out of the proof's tbs. */
        struct rbuf q;
        const uint8_t *tbs;
        size_t tbslen, skip;
        const uint8_t *x;

        rbuf_init(&q, p, plen);
        rbuf_get_ref(&q, &x, 5);
        rbuf_get_blob(&q, &tbs, &tbslen, BLOB_MAX);
        rbuf_init(&q, tbs, q.err ? 0 : tbslen);
        rbuf_get_ref(&q, &x, 5);
        rbuf_get_blob(&q, &x, &skip, 64);
        rbuf_get_ref(&q, &x, 8);
        rbuf_get_blob(&q, &x, &skip, ED25519_PUB_LEN);
        rbuf_get_blob(&q, &x, &skip, 255);
        rbuf_get_blob(&q, &k->der, &k->len, 4096);
        return q.err ? refuse(why, whylen, "an enrolment proof is malformed") : 0;
    }
    if (enrol_proof_verify(vault_id, r->account_id, r->code_pub, r->key_name, p, plen,
                           &k->der, &k->len, &at) < 0 || at > r->code_expires) {
        pfs_err_clear();
        k->der = NULL;
        k->len = 0;
        return refuse(why, whylen, "the enrolment proof of \"%s\" does not verify", r->name);
    }
    return 0;
}

int audit_proof_verify(const char *vault_id, const char *root_fp, const char *hex,
                       int verify_sigs, struct audit_signer *out, char *why, size_t whylen)
{
    struct registry_record rec[REGISTRY_MAX_DEPTH + 1];
    struct bound_key keys[REGISTRY_MAX_DEPTH + 1];
    size_t hexlen = hex ? strlen(hex) : 0, len = hexlen / 2, nrec = 0;
    const uint8_t *magic, *root_der = NULL;
    size_t root_len = 0;
    uint8_t *raw, version = 0, n = 0;
    EVP_PKEY *root = NULL;
    struct rbuf b;
    int rc = 0;

    memset(out, 0, sizeof *out);
    if (hexlen == 0 || hexlen % 2 || hexlen > AUDIT_PROOF_MAX_HEX)
        return refuse(why, whylen, "the registry proof is not hex of a plausible length");
    if (!(raw = malloc(len)))
        return refuse(why, whylen, "out of memory reading a registry proof");
    if (hex_decode(hex, raw, len) != 0) {
        free(raw);
        return refuse(why, whylen, "the registry proof is not hex");
    }
    rbuf_init(&b, raw, len);
    rbuf_get_ref(&b, &magic, 4);
    rbuf_get_u8(&b, &version);
    rbuf_get_blob(&b, &root_der, &root_len, BLOB_MAX);
    rbuf_get_u8(&b, &n);
    if (b.err || memcmp(magic, PROOF_MAGIC, 4) || version < 1 || version > PROOF_VERSION ||
        n == 0 || n > REGISTRY_MAX_DEPTH + 1)
        rc = refuse(why, whylen, "the registry proof is malformed");
    for (; rc == 0 && nrec < n; nrec++) {
        const uint8_t *p;
        size_t plen;

        if (rbuf_get_blob(&b, &p, &plen, BLOB_MAX) < 0 ||
            registry_record_decode(vault_id, p, plen, &rec[nrec]) < 0) {
            pfs_err_clear();
            rc = refuse(why, whylen, "registry record %zu of the proof is malformed or of "
                        "another vault", nrec + 1);
        }
        keys[nrec].der = rec[nrec].pubkey;
        keys[nrec].len = rec[nrec].pubkey_len;
    }
    for (size_t i = 0; rc == 0 && version >= 2 && i < nrec; i++)
        rc = bind_enrolled_key(vault_id, &b, &rec[i], &keys[i], verify_sigs, why, whylen);
    if (rc == 0 && rbuf_end(&b) < 0)
        rc = refuse(why, whylen, "the registry proof has trailing bytes");
    if (rc == 0 && verify_sigs) {
        root = root_key_checked(root_der, root_len, root_fp);
        if (!root)
            rc = refuse(why, whylen, "the registry proof's root key is not the vault root "
                        "pinned for vault %s", vault_id);
        else
            rc = check_links(vault_id, rec, keys, nrec, root, why, whylen);
    }
    if (rc == 0 && rec[0].disabled)
        rc = refuse(why, whylen, "account \"%s\" was disabled when the session began",
                    rec[0].name);
    if (rc == 0) {
        out->account_id = rec[0].account_id;
        snprintf(out->name, sizeof out->name, "%s", rec[0].name);
        out->roles = rec[0].roles;
        out->key = rsa_public_from_der(keys[0].der, keys[0].len);
        if (!out->key)
            rc = refuse(why, whylen, "the public key of \"%s\" is malformed", rec[0].name);
    }
    EVP_PKEY_free(root);
    free(raw);
    return rc;
}
