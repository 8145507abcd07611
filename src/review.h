/* Access review (pactfs-admin account-show, folder-members): what the
 * verified registry, signed folder states and verified grants say, and
 * nothing the metadata store merely claims.
 *
 * Each result is a JSON object (json-c) that the tool prints as it is
 * (--json) or as readable lines; its fields are in docs/accounts.md
 * ("Access review").  Rows that do not verify are counted, never shown as
 * rights.
 */
#ifndef PACTFS_REVIEW_H
#define PACTFS_REVIEW_H

#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "meta.h"

/* The account named name: roles, status (enabled, disabled, expired,
 * pending), details, enrolment and key fingerprint, who signed its record,
 * and its verified grants (folder ids: names are encrypted).  An account
 * whose record does not verify gives only its name, id and the reason.
 * -ENOENT if there is no such account. */
int review_account(struct meta *m, const char *vault_id, const char *root_fp, const char *name,
                   json_object **out);

/* The members of folder_id by its verified signed state: each member's
 * rights, and who granted its envelope and when (the verified grant of the
 * state's key version, else its newest verified one).  folder_name is
 * shown as given (the caller resolved it with the folder key). */
int review_folder(struct meta *m, const char *vault_id, const char *root_fp, uint64_t folder_id,
                  const char *folder_name, json_object **out);

/* Readable text of a review_account / review_folder object. */
void review_print_account(json_object *o, FILE *out);
void review_print_folder(json_object *o, FILE *out);

#endif
