#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include "error.h"

static _Thread_local char err_msg[512];

int pfs_err(int neg_errno, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return neg_errno;
}

const char *pfs_err_msg(void)
{
    return err_msg;
}

void pfs_err_clear(void)
{
    err_msg[0] = '\0';
}
