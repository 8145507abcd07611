/* Command-line helpers shared by pactfs and pactfs-admin: reading a
 * password the ways gocryptfs users know, and turning an error into an exit
 * code and a message for a person. */
#ifndef PACTFS_CLI_H
#define PACTFS_CLI_H

#include <stddef.h>

/* Read a password into secure memory (free with secmem_free_str):
 *   passfile  first line of FILE (trailing newline removed)
 *   extpass   first line of the output of `sh -c CMD`
 *   otherwise prompt on /dev/tty without echo; confirm: ask twice.
 * Returns NULL with a message in pfs_err_msg() if none could be read or it
 * is empty. */
char *cli_read_password(const char *passfile, const char *extpass, const char *prompt,
                        int confirm);

/* Read a line from the terminal with echo (account names). NULL if none. */
char *cli_read_line(const char *prompt);

/* Map a negative errno from vault_open/vault_unlock to an exit code. */
int cli_exit_code_for(int neg_errno);

/* The exit code for a failed vault_open: bad settings are 3, a missing,
 * unreadable or corrupt store 7. */
int cli_open_exit_code(int neg_errno);

/* The failure as an error line of the log ("PROG: error: <message>"), from
 * pfs_err_msg() or strerror. */
void cli_report(int neg_errno);

#endif
