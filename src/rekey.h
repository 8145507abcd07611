/* Re-keying a folder's existing files after a revoke (pactfs-admin rekey,
 * revoke --rekey).
 *
 * A revoke rotates the folder key: data written afterwards is under a key
 * the revoked account never held.  But every existing file keeps its data
 * key (DEK), wrapped under an old folder key version the revoked account
 * held, and its chunks stay sealed under that DEK; new writes to such a
 * file are sealed under the same DEK.  Re-keying gives each file a fresh
 * random DEK wrapped under the folder's current key version (from the
 * verified signed folder state) and re-seals every chunk under it:
 *
 *   for each regular file reachable from the folder's top directory
 *   (entries checked against their bindings):
 *     done already  its DEK unwraps under the current key version: skipped
 *                   (the check is cryptographic, not a database flag, so a
 *                   row altered to name the current version is not "done");
 *     otherwise     its commitment must verify under the old DEK (else it
 *                   is reported as tampered and left alone: never blessed);
 *                   every chunk is read, opened and sealed again under a
 *                   fresh DEK as a new chunk version, fragments made
 *                   durable; then one transaction takes the file's row lock
 *                   (the lock the mount's commit takes), checks that the
 *                   row and its commitment are still the ones read (a mount
 *                   committed meanwhile: the file is done again, up to
 *                   REKEY_RETRIES times, then once more at the end of the
 *                   run holding the row throughout), records the new chunk records
 *                   (the replaced ones go to the deletion queue), the new
 *                   wrapped DEK and the next commitment generation.
 *
 * Then every name, symlink target and extended attribute of the folder
 * not yet under the current key version is sealed again under it:
 *
 *   names     each directory entry reached by the walk (and the folder's
 *             own entry in the root), once its name decrypted and its
 *             binding verified under the version that sealed it, gets its
 *             name encrypted and its binding (to the same parent, child
 *             and type) computed under the current version;
 *   values    each symlink target and xattr (name and value) of an inode
 *             reached is opened under the version that sealed it (its
 *             associated data binds it to the inode and, for an xattr, its
 *             name) and sealed again under the current version;
 *
 * each one row changed by a compare-and-swap in its own transaction
 * (meta_reseal: changed only if still exactly the row verified, so a
 * mount's rename, unlink or setxattr meanwhile wins and the row is left
 * for the next run).  A row that decrypts under no held version, or whose
 * binding does not verify, is reported and left (tampered).  Done is again
 * cryptographic: a row that opens under the current version.  Mounts find
 * the re-sealed rows under the current version; one that has not picked up
 * the rotation yet does so at the first name or value it cannot open
 * (fs_keys_catch_up_locked).  Docs: docs/accounts.md, "Re-keying".
 *
 * A run can be stopped at any point and run again: each file and each row
 * is one transaction, and the done checks above decide what is left.  A
 * mount that has a re-keyed file open adopts its new DEK at its next save
 * or read (fs_data.c, file_adopt_dek), so its writes are not lost.
 */
#ifndef PACTFS_REKEY_H
#define PACTFS_REKEY_H

#include <stdint.h>

#include "vault.h"

#define REKEY_RETRIES 5   /* attempts per file while mounts commit it */
/* A file still changing after them is done at the end of the run inside
 * one transaction holding its row (its writers wait; on SQLite every
 * writer does), up to this size; a larger one is reported and left. */
#define REKEY_LOCKED_MAX (16ull << 20)

struct rekey_stats {
    uint64_t files;        /* regular files found */
    uint64_t rekeyed;      /* given a fresh DEK in this run */
    uint64_t already;      /* under the current key version already */
    uint64_t left;         /* could not be re-keyed (reported on stderr) */
    uint64_t tampered;     /* of those: a commitment or binding that does
                              not verify */
    uint64_t chunks;       /* chunks re-sealed */
    uint64_t bytes;        /* plaintext bytes re-sealed */
    uint64_t retries;      /* files done again after a concurrent commit */
    /* names, symlink targets and xattrs (after the files) */
    uint64_t names;        /* directory entries found (the folder's own
                              name in the root included) */
    uint64_t values;       /* symlink targets and xattrs found */
    uint64_t resealed;     /* names and values sealed again in this run */
    uint64_t meta_left;    /* of left: names and values */
    uint64_t meta_todo;    /* names and values found under an older version */
    uint64_t meta_done;    /* of those, dealt with so far (progress) */
};

/* Called after each file (and once with the total before the first). */
typedef void (*rekey_progress_fn)(void *arg, const struct rekey_stats *st);

/* Re-key every file of the folder named folder, which the unlocked account
 * must manage and whose current key version it must hold.  0 when every
 * file is under the current key version; -EBADMSG when some are left
 * (tampered or unreadable: listed on stderr); other negative errno on
 * failure.  Audited ("rekey"). */
int rekey_folder(struct vault *v, const char *folder, rekey_progress_fn progress, void *arg,
                 struct rekey_stats *st);

#endif
