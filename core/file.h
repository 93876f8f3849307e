/*
 * Whole-file reads and durable writes for small files: keys, certificates, configuration.
 *
 * Reads take the whole file into one malloc'ed buffer with a size limit. Writes go to a
 * temporary sibling ("<path>.tmpXXXXXX") whose mode is set with fchmod (never left to the
 * umask), are fsync'ed, published with one rename (or link, for create-only) and made
 * durable by an fsync of the parent folder, so a crash leaves either the old or the new file.
 *
 * These block on disk I/O: CLI commands and start-up only, never a shard's loop.
 * Threads: any; nothing is shared between calls.
 */
#ifndef MDM_CORE_FILE_H
#define MDM_CORE_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "core/common.h"

/**
 * Reads the regular file path into *data (malloc'ed, max_bytes + 1 at most, caller frees) and
 * its length into *len. The bytes are followed by a NUL not counted in *len, so text files can
 * be used as C strings. A file that shrinks while being read yields what is there.
 * Returns 0; -EINVAL when path is not a regular file; MDM_ETOOBIG when it has more than
 * max_bytes; -EAGAIN when it grew while being read; -ENOMEM; another -errno from open/read.
 * *data and *len are untouched on failure.
 */
MDM_MUST_CHECK int mdm_file_read(const char *path, size_t max_bytes, uint8_t **data,
                                 size_t *len);

/**
 * mdm_file_read() for secrets: also refuses, with -EPERM, a file that group or others can
 * access (mode & 077), before reading any byte. The buffer is wiped before it is freed on
 * failure; on success the caller wipes (explicit_bzero) *data before freeing it. When st is
 * not NULL it receives the file's fstat() as soon as the file is open, also when the call
 * then fails, for the caller's error message (st->st_mode, st->st_size).
 * Returns the codes of mdm_file_read() and -EPERM.
 */
MDM_MUST_CHECK int mdm_file_read_private(const char *path, size_t max_bytes, uint8_t **data,
                                         size_t *len, struct stat *st);

/**
 * Writes len bytes of data to path with exactly mode (the umask does not apply), replacing
 * any existing file atomically: a temporary sibling is written, fsync'ed and renamed over
 * path, and the parent folder is fsync'ed. The temporary file is removed on failure.
 * Returns 0; -ENAMETOOLONG; another -errno from mkostemp/fchmod/write/fsync/rename or from
 * opening and fsyncing the parent folder (the new file is in place then, maybe not durably).
 */
MDM_MUST_CHECK int mdm_file_write_atomic(const char *path, const void *data, size_t len,
                                         mode_t mode);

/**
 * Like mdm_file_write_atomic(), but never replaces anything: the complete temporary file is
 * published with link(2), which fails when path exists (O_EXCL semantics without a window
 * in which path holds a partial file).
 * Returns 0; -EEXIST when path exists; the other codes of mdm_file_write_atomic(), and
 * -EPERM/-ENOTSUP from link(2) on file systems without hard links.
 */
MDM_MUST_CHECK int mdm_file_create(const char *path, const void *data, size_t len,
                                   mode_t mode);

#endif
