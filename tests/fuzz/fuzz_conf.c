#include "config.h"

/* conf_load() on arbitrary bytes written as a configuration file.  The
 * configuration is written by an administrator, but a copy may be handed
 * around (tickets, backups) and the loader runs before anything is checked,
 * so it must fail cleanly on anything.  An accepted configuration must also
 * satisfy the policy conf_load promises (k >= 2, sane chunk size, absolute
 * paths), so a validation hole is a finding too. */

#include <stdbool.h>

#include "conf.h"
#include "error.h"
#include "fuzz.h"

FUZZ_TARGET("conf", 2000);

/* libconfig 1.5 (Debian's libconfig9) leaks a string token when a syntax
 * error discards it (hyperrealm/libconfig#142, fixed upstream by #155 in
 * 1.7.3).  Not ours, and bounded by one parse per program, so LeakSanitizer
 * is told to ignore exactly that allocation site. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:strbuf_append\n";
}

const char *__lsan_default_options(void);
const char *__lsan_default_options(void)
{
    return "print_suppressions=0";
}

static char scratch[256];
static char conf_path[512];

static void remove_scratch(void)
{
    fuzz_rm_tree(scratch);
}

static void setup_once(void)
{
    if (scratch[0])
        return;
    fuzz_scratch_dir(scratch, sizeof scratch, "conf");
    snprintf(conf_path, sizeof conf_path, "%s/pactfs.conf", scratch);
    atexit(remove_scratch);
}

/* @include would make libconfig read other files of this host (even
 * /dev/zero): not something a fuzzer should wander into. */
static bool mentions_include(const uint8_t *data, size_t size)
{
    return memmem(data, size, "@include", 8) != NULL;
}

static void check_accepted(const struct pactfs_conf *c)
{
    FUZZ_ASSERT(c->file && c->file[0] == '/');
    FUZZ_ASSERT(c->k >= 2 && c->k + c->m <= EC_MAX_FRAGS);
    FUZZ_ASSERT(c->n_endpoints >= c->k + c->m && c->n_endpoints <= EC_MAX_FRAGS);
    FUZZ_ASSERT(c->chunk_size >= 64u * 1024 && c->chunk_size <= 16u * 1024 * 1024);
    FUZZ_ASSERT((c->chunk_size & (c->chunk_size - 1)) == 0);
    for (unsigned i = 0; i < c->n_endpoints; i++)
        if (c->endpoints[i].type == ENDPOINT_DIR)
            FUZZ_ASSERT(c->endpoints[i].path && c->endpoints[i].path[0] == '/');
    if (c->meta_path)
        FUZZ_ASSERT(c->meta_path[0] == '/');
    if (c->audit_spool)
        FUZZ_ASSERT(c->audit_spool[0] == '/');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pactfs_conf c;
    char err[512];

    setup_once();
    if (mentions_include(data, size) || fuzz_write_file(conf_path, data, size) != 0)
        return 0;
    if (conf_load(conf_path, &c, err, sizeof err) == 0) {
        fuzz_accepted++;
        check_accepted(&c);
        conf_free(&c);
    } else {
        FUZZ_ASSERT(pfs_err_msg()[0] != '\0');   /* every refusal explains itself */
    }
    return 0;
}
