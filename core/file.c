/*
 * core/file: whole small files in and out (see file.h).
 *
 * Design: reads fstat the open descriptor (no stat-then-open race), allocate the file's size
 * plus one byte and read until EOF; the spare byte both holds the NUL and detects a file that
 * grew meanwhile. Writes build the complete file under a temporary name in the same folder
 * (rename and link do not cross file systems), then publish it in one step. Every buffer
 * that held file bytes is wiped before it is freed on failure, so the readers serve secrets
 * and certificates alike.
 *
 * Threads: any.
 */
#include "core/file.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads up to len bytes, fewer only at EOF; *got receives the count. Returns 0 or -errno. */
static int read_full(int fd, uint8_t *buf, size_t len, size_t *got)
{
    *got = 0;
    while (*got < len) {
        ssize_t n = read(fd, buf + *got, len - *got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        *got += (size_t)n;
    }
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_file(const char *path, size_t max_bytes, bool private, uint8_t **data,
                     size_t *len, struct stat *st_out)
{
    assert(path && data && len);
    uint8_t *buf = NULL;
    size_t cap = 0, got = 0;
    struct stat st;
    int ret = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0) {
        ret = -errno;
        goto out;
    }
    if (st_out)
        *st_out = st;
    if (!S_ISREG(st.st_mode)) {
        ret = -EINVAL;
        goto out;
    }
    if (private && (st.st_mode & 077)) {
        ret = -EPERM;
        goto out;
    }
    if (st.st_size < 0 || (uintmax_t)st.st_size > max_bytes) {
        ret = MDM_ETOOBIG;
        goto out;
    }
    cap = (size_t)st.st_size;
    buf = malloc(cap + 1);
    if (!buf) {
        ret = -ENOMEM;
        goto out;
    }
    if ((ret = read_full(fd, buf, cap, &got)) != 0)
        goto out;
    if (got == cap) { /* EOF must come now: one more byte means the file grew */
        size_t extra = 0;
        if ((ret = read_full(fd, buf + cap, 1, &extra)) != 0)
            goto out;
        if (extra != 0) {
            ret = -EAGAIN;
            goto out;
        }
    }
    buf[got] = 0;
    *data = buf;
    *len = got;
    buf = NULL;
out:
    if (buf) {
        explicit_bzero(buf, cap + 1);
        free(buf);
    }
    close(fd);
    return ret;
}

int mdm_file_read(const char *path, size_t max_bytes, uint8_t **data, size_t *len)
{
    return read_file(path, max_bytes, false, data, len, NULL);
}

int mdm_file_read_private(const char *path, size_t max_bytes, uint8_t **data, size_t *len,
                          struct stat *st)
{
    return read_file(path, max_bytes, true, data, len, st);
}

/* fsyncs the folder holding path, so that a rename or link into it survives a crash. */
static int fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof(dir))
            return -ENAMETOOLONG;
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int ret = fsync(fd) != 0 ? -errno : 0;
    close(fd);
    return ret;
}

/*
 * Writes data to a new temporary sibling of path (name returned in tmp) with exactly mode,
 * fsync'ed and closed. Returns 0 or -errno; on failure nothing is left behind.
 */
static int write_tmp(const char *path, const void *data, size_t len, mode_t mode,
                     char tmp[PATH_MAX])
{
    assert(path && (data || len == 0));
    assert((mode & ~(mode_t)07777) == 0);
    int n = snprintf(tmp, PATH_MAX, "%s.tmpXXXXXX", path);
    if (n < 0 || n >= PATH_MAX)
        return -ENAMETOOLONG;
    int fd = mkostemp(tmp, O_CLOEXEC); /* created 0600: nobody else can open it meanwhile */
    if (fd < 0)
        return -errno;
    int ret = fchmod(fd, mode) != 0 ? -errno : 0;
    if (ret == 0)
        ret = write_all(fd, data, len);
    if (ret == 0 && fsync(fd) != 0)
        ret = -errno;
    if (close(fd) != 0 && ret == 0)
        ret = -errno;
    if (ret != 0)
        unlink(tmp);
    return ret;
}

int mdm_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[PATH_MAX];
    int ret = write_tmp(path, data, len, mode, tmp);
    if (ret != 0)
        return ret;
    if (rename(tmp, path) != 0) {
        ret = -errno;
        unlink(tmp);
        return ret;
    }
    return fsync_parent(path);
}

int mdm_file_create(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[PATH_MAX];
    int ret = write_tmp(path, data, len, mode, tmp);
    if (ret != 0)
        return ret;
    ret = link(tmp, path) != 0 ? -errno : 0; /* fails with EEXIST: never replaces path */
    unlink(tmp);
    if (ret != 0)
        return ret;
    return fsync_parent(path);
}
