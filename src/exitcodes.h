/* Every exit code of every pactfs program, in one place (documented in
 * docs/exit-codes.md and the man pages). */
#ifndef PACTFS_EXITCODES_H
#define PACTFS_EXITCODES_H

enum pactfs_exit {
    EXIT_OK = 0,
    EXIT_FAILURE_OTHER = 1,   /* an error not listed below */
    EXIT_USAGE = 2,           /* bad command line */
    EXIT_CONFIG = 3,          /* configuration missing or malformed */
    EXIT_BAD_PASSWORD = 4,    /* wrong password (or share) */
    EXIT_LOCKED_OUT = 5,      /* key service locked the account; retry later */
    EXIT_KEYD_UNREACHABLE = 6,/* key service unreachable or its TLS refused */
    EXIT_STORE = 7,           /* a storage endpoint or the metadata store is missing/unusable */
    EXIT_MOUNTPOINT = 8,      /* mountpoint missing, not a directory or not empty */
    EXIT_ALREADY_MOUNTED = 9, /* this vault is already mounted */
    EXIT_FUSE = 10,           /* the kernel refused the mount (no /dev/fuse ...) */
    EXIT_EXISTS = 11,         /* init: a vault already exists there */
    EXIT_PASSWORD_INPUT = 12, /* could not read the password (empty, --extpass failed) */
    EXIT_ACCESS = 13,         /* the account lacks the role or right for this */
    EXIT_INTEGRITY = 14,      /* fsck/audit verify found damage it could not repair */
    EXIT_AUDIT = 15,          /* the audit spool could not be written */
    EXIT_NOT_FOUND = 16,      /* the named account or folder does not exist */
    EXIT_ROLLBACK = 17,       /* the metadata is older than the anchored vault head */
    EXIT_PASSWORD_POLICY = 18,/* the new password is refused by the vault's policy */
    EXIT_DUTY = 19,           /* a separation-of-duties rule refused an account change */
};

#endif
