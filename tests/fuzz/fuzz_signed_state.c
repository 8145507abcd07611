#include "config.h"

/* The parsers of the signed folder state and the signed vault head
 * (folder_state_decode, folder_state_verify_blob, vault_head_decode,
 * vault_head_not_older, vault_head_check_anchor), all fed from the metadata
 * store, whose operator is untrusted.  The first input byte picks the
 * parser (2: file head root, 4: file head bucket (8 bytes of bucket number
 * first), else even: folder state, odd: vault head); the rest is the blob.  The
 * seeds were signed with fuzz_test_key(), so valid ones reach the
 * signature check and the comparisons.
 *
 * Invariants: an accepted folder state has sorted, unique members with
 * known non-empty rights, a counter and a key version; verification never
 * accepts what decoding refused; an accepted head has sorted entries and
 * is "not older" than itself and equal to its own anchor, and strictly
 * newer heads never compare as older by counter alone. */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "file_head.h"
#include "folder_state.h"
#include "fuzz.h"
#include "vault_head.h"

FUZZ_TARGET("signed_state", 3000);

#define FUZZ_VAULT "0123456789abcdef0123456789abcdef"

static EVP_PKEY *key;

static void try_state(const uint8_t *data, size_t size)
{
    struct folder_state s, v;
    const uint8_t *tbs, *sig;
    size_t tbslen, siglen;
    int drc = folder_state_decode(FUZZ_VAULT, data, size, &s, &tbs, &tbslen, &sig, &siglen);
    int vrc = folder_state_verify_blob(FUZZ_VAULT, data, size, key, &v);

    FUZZ_ASSERT(drc == 0 || drc == -EBADMSG || drc == -ENOMEM);
    FUZZ_ASSERT(vrc < 0 || drc == 0);
    if (drc == 0) {
        fuzz_accepted++;
        FUZZ_ASSERT(s.counter && s.key_version && s.nmembers <= FOLDER_STATE_MAX_MEMBERS);
        for (size_t i = 0; i < s.nmembers; i++) {
            FUZZ_ASSERT(s.members[i].rights && !(s.members[i].rights & ~7u));
            FUZZ_ASSERT(i == 0 || s.members[i - 1].account_id < s.members[i].account_id);
            FUZZ_ASSERT(folder_state_rights(&s, s.members[i].account_id) ==
                        s.members[i].rights);
        }
        FUZZ_ASSERT(tbs >= data && tbs + tbslen <= data + size);
        folder_state_clear(&s);
    }
    if (vrc == 0)
        folder_state_clear(&v);
}

static void try_head(const uint8_t *data, size_t size)
{
    struct vault_head h;
    const uint8_t *tbs, *sig;
    size_t tbslen, siglen;
    uint8_t hash[SHA256_LEN];
    int rc = vault_head_decode(FUZZ_VAULT, data, size, &h, &tbs, &tbslen, &sig, &siglen);

    FUZZ_ASSERT(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
    if (rc < 0)
        return;
    fuzz_accepted++;
    FUZZ_ASSERT(h.counter > 0);
    for (size_t i = 1; i < h.nfolders; i++)
        FUZZ_ASSERT(h.folders[i - 1].folder_id < h.folders[i].folder_id);
    for (size_t i = 1; i < h.naccounts; i++)
        FUZZ_ASSERT(h.accounts[i - 1].account_id < h.accounts[i].account_id);
    FUZZ_ASSERT(vault_head_not_older(&h, &h, "itself") == 0);
    sha256(data, size, hash);
    FUZZ_ASSERT(vault_head_check_anchor(FUZZ_VAULT, data, size, &h, h.counter, hash, data, size,
                                        "itself") == 0);
    if (h.counter > 1)
        FUZZ_ASSERT(vault_head_check_anchor(FUZZ_VAULT, data, size, &h, h.counter - 1, hash,
                                            NULL, 0, "an older anchor") == 0);
    if (h.counter < UINT64_MAX)
        FUZZ_ASSERT(vault_head_check_anchor(FUZZ_VAULT, data, size, &h, h.counter + 1, hash,
                                            NULL, 0, "a newer anchor") == -ESTALE);
    vault_head_clear(&h);
}

/* The signed file head (file_head_decode, file_head_floor,
 * file_head_not_older, file_head_check_anchor): an accepted one has sorted
 * entries with non-zero floors, finds each of them, and is not older than
 * itself nor than its own anchor. */
static void try_file_head(const uint8_t *data, size_t size)
{
    struct file_head h;
    struct sig_container c;
    uint8_t hash[SHA256_LEN];
    int rc = file_head_decode(FUZZ_VAULT, data, size, &h, &c);

    FUZZ_ASSERT(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
    if (rc < 0)
        return;
    fuzz_accepted++;
    FUZZ_ASSERT(h.counter > 0);
    for (size_t i = 0; i < h.n; i++) {
        FUZZ_ASSERT(h.e[i].generation > 0);
        FUZZ_ASSERT(i == 0 || h.e[i - 1].ino < h.e[i].ino);
        FUZZ_ASSERT(file_head_floor(&h, h.e[i].ino) == h.e[i].generation);
    }
    for (size_t i = 1; i < h.nb; i++)     /* format 2: buckets sorted */
        FUZZ_ASSERT(h.b[i - 1].id < h.b[i].id);
    FUZZ_ASSERT(file_head_not_older(&h, &h, "itself") == 0);
    sha256(data, size, hash);
    FUZZ_ASSERT(file_head_check_anchor(&h, data, size, h.counter, hash, "itself") == 0);
    if (h.counter < UINT64_MAX)
        FUZZ_ASSERT(file_head_check_anchor(&h, data, size, h.counter + 1, hash, "newer")
                    == -ESTALE);
    file_head_clear(&h);
}

/* A bucket of the format-2 file head (file_head_bucket_decode): an
 * accepted one has 1 to 1024 sorted entries, each in its bucket, with
 * non-zero floors, and encodes back to the same bytes. */
static void try_file_head_bucket(const uint8_t *data, size_t size)
{
    struct fh_entry *e = NULL;
    uint8_t *again = NULL;
    size_t n = 0, len = 0;
    uint64_t id = 0;
    int rc;

    if (size < 8)
        return;
    memcpy(&id, data, 8);
    id &= 0xffff;
    rc = file_head_bucket_decode(FUZZ_VAULT, id, data + 8, size - 8, &e, &n);
    FUZZ_ASSERT(rc == 0 || rc == -EBADMSG);
    if (rc < 0)
        return;
    fuzz_accepted++;
    FUZZ_ASSERT(n >= 1 && n <= (1u << FILE_HEAD_BUCKET_SHIFT));
    for (size_t i = 0; i < n; i++) {
        FUZZ_ASSERT(e[i].generation > 0 && e[i].ino >> FILE_HEAD_BUCKET_SHIFT == id);
        FUZZ_ASSERT(i == 0 || e[i - 1].ino < e[i].ino);
    }
    FUZZ_ASSERT(file_head_bucket_encode(FUZZ_VAULT, id, e, n, &again, &len) == 0);
    FUZZ_ASSERT(len == size - 8 && memcmp(again, data + 8, len) == 0);
    free(again);
    free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!key)
        key = fuzz_test_key();
    if (size < 1)
        return 0;
    if (data[0] == 2)
        try_file_head(data + 1, size - 1);
    else if (data[0] == 4)
        try_file_head_bucket(data + 1, size - 1);
    else if (data[0] & 1)
        try_head(data + 1, size - 1);
    else
        try_state(data + 1, size - 1);
    return 0;
}
