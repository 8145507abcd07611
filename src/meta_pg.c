#include "config.h"

#include <errno.h>

#include "error.h"
#include "meta.h"

int meta_open_pg(const char *conninfo, int create, struct meta **out)
{
    (void)conninfo; (void)create; (void)out;
    return pfs_err(-ENOTSUP, "PostgreSQL metadata backend not built yet");
}
