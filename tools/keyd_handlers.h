/* pactfs-keyd's HTTP side: request bodies, a handler per route, the
 * answers (docs/keyd.md "Protocol"), over tools/https_service.c. */
#ifndef PACTFS_KEYD_HANDLERS_H
#define PACTFS_KEYD_HANDLERS_H

#include <microhttpd.h>

#include "https_service.h"
#include "keyd.h"

/* One request: route, authorise, run its handler in one transaction,
 * record it, answer. */
enum MHD_Result keyd_dispatch(struct keyd *k, struct MHD_Connection *c, const char *url,
                              const char *method, struct https_request *r);

#endif
