#include "config.h"

/* audit_verify() on arbitrary bytes as a spool file, once checking only the
 * hash chain (key_for NULL) and once also the checkpoint signatures, with
 * the built-in test key standing for account "alice".  The spool sits on a
 * workstation disk and is what an auditor feeds to `pactfs audit verify`, so
 * a tampered spool must be reported, never crash the verifier.  Seeds
 * (format 2, with cp fields): signed, two writers, and a crashed signing
 * writer followed by a signer-less one; format 3 lines reach the session
 * rules and the registry proof decoder. */

#include <errno.h>
#include <string.h>

#include "audit.h"
#include "error.h"
#include "registry.h"
#include "fuzz.h"

FUZZ_TARGET("audit_verify", 2000);

static char scratch[256];
static char spool_path[512];
static EVP_PKEY *alice_key;

static void teardown(void)
{
    fuzz_rm_tree(scratch);
    EVP_PKEY_free(alice_key);
    alice_key = NULL;
}

static void setup_once(void)
{
    if (scratch[0])
        return;
    fuzz_scratch_dir(scratch, sizeof scratch, "audit");
    snprintf(spool_path, sizeof spool_path, "%s/audit.spool", scratch);
    alice_key = fuzz_test_key();
    atexit(teardown);
}

static EVP_PKEY *key_for(void *arg, const char *account)
{
    (void)arg;
    return strcmp(account, "alice") == 0 ? alice_key : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct audit_verify_result chain = { 0 }, sig = { 0 };
    char root_fp[65];
    int chain_rc, signed_rc;

    setup_once();
    if (fuzz_write_file(spool_path, data, size) != 0)
        return 0;
    /* the test key stands for the vault root too (format 3 proofs) */
    if (registry_fingerprint_hex(alice_key, root_fp) != 0)
        return 0;
    chain_rc = audit_verify(spool_path, NULL, NULL, NULL, &chain);
    signed_rc = audit_verify(spool_path, root_fp, key_for, NULL, &sig);
    FUZZ_ASSERT(chain_rc == 0 || chain_rc == -EBADMSG);
    FUZZ_ASSERT(signed_rc == 0 || signed_rc == -EBADMSG);
    if (chain_rc != 0)
        FUZZ_ASSERT(pfs_err_msg()[0] != '\0' || signed_rc == 0);
    /* Checking signatures too can only refuse more, never less. */
    if (signed_rc == 0) {
        fuzz_accepted++;
        FUZZ_ASSERT(chain_rc == 0);
        FUZZ_ASSERT(sig.events == chain.events);
        /* A long format 2 spool passes with keys only if something was signed. */
        if (sig.v2_lines > AUDIT_V2_UNSIGNED_MAX)
            FUZZ_ASSERT(memmem(data, size, "\"checkpoint\"", 12) != NULL);
    }
    /* Every counted event is at least "{}\n" in the file. */
    FUZZ_ASSERT(chain.events <= size / 3 + 1);
    return 0;
}
