/*
 * core/file tests: whole-file reads (NUL-terminated, size limit, non-regular files, private
 * mode check), atomic writes (exact mode whatever the umask, replacement, no temporary file
 * left behind) and create-only writes that never replace.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/file.h"

static char dir[PATH_MAX / 2];

static const char *at(const char *rel)
{
    static char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s/%s", dir, rel);
    return buf;
}

static int mode_of(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

/* Number of entries in dir besides "." and "..". */
static int entries(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    if (d)
        closedir(d);
    return n;
}

static void test_write_and_read(void)
{
    uint8_t *data = NULL;
    size_t len = 0;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s", at("a.txt"));

    mode_t old = umask(0); /* modes must not depend on the umask */
    CHECK_EQ_INT(mdm_file_write_atomic(path, "hello", 5, 0640), 0);
    umask(old);
    CHECK_EQ_INT(mode_of(path), 0640);
    CHECK_EQ_INT(mdm_file_read(path, 5, &data, &len), 0);
    CHECK_EQ_INT(len, 5);
    CHECK(data && memcmp(data, "hello", 6) == 0); /* NUL-terminated */
    free(data);

    /* replaces atomically, takes the new mode, leaves no temporary file */
    old = umask(077);
    CHECK_EQ_INT(mdm_file_write_atomic(path, "hello, world", 12, 0644), 0);
    umask(old);
    CHECK_EQ_INT(mode_of(path), 0644);
    CHECK_EQ_INT(entries(), 1);

    /* size limit: nothing is returned */
    data = NULL;
    len = 0;
    CHECK_EQ_INT(mdm_file_read(path, 11, &data, &len), MDM_ETOOBIG);
    CHECK(data == NULL && len == 0);
    CHECK_EQ_INT(mdm_file_read(path, 12, &data, &len), 0);
    CHECK_EQ_INT(len, 12);
    free(data);

    /* empty file */
    CHECK_EQ_INT(mdm_file_write_atomic(path, NULL, 0, 0600), 0);
    CHECK_EQ_INT(mdm_file_read(path, 0, &data, &len), 0);
    CHECK(len == 0 && data && data[0] == 0);
    free(data);

    /* missing file, folder */
    CHECK_EQ_INT(mdm_file_read(at("missing"), 10, &data, &len), -ENOENT);
    CHECK_EQ_INT(mdm_file_read(dir, 10, &data, &len), -EINVAL);
    CHECK_EQ_INT(mdm_file_write_atomic(at("no/such/dir"), "x", 1, 0600), -ENOENT);
    unlink(path);
}

static void test_private(void)
{
    uint8_t *data = NULL;
    size_t len = 0;
    struct stat st;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s", at("secret"));
    CHECK_EQ_INT(mdm_file_write_atomic(path, "0123456789", 10, 0640), 0);
    memset(&st, 0, sizeof(st));
    CHECK_EQ_INT(mdm_file_read_private(path, 10, &data, &len, &st), -EPERM);
    CHECK_EQ_INT(st.st_mode & 0777, 0640); /* filled for the caller's message */
    CHECK(data == NULL);
    CHECK_EQ_INT(chmod(path, 0400), 0);
    CHECK_EQ_INT(mdm_file_read_private(path, 9, &data, &len, &st), MDM_ETOOBIG);
    CHECK_EQ_INT(st.st_size, 10);
    CHECK_EQ_INT(mdm_file_read_private(path, 10, &data, &len, NULL), 0);
    CHECK(len == 10 && data && memcmp(data, "0123456789", 10) == 0);
    free(data);
    unlink(path);
}

static void test_create(void)
{
    uint8_t *data = NULL;
    size_t len = 0;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s", at("key"));
    mode_t old = umask(0);
    CHECK_EQ_INT(mdm_file_create(path, "first", 5, 0600), 0);
    umask(old);
    CHECK_EQ_INT(mode_of(path), 0600);
    CHECK_EQ_INT(mdm_file_create(path, "second", 6, 0600), -EEXIST);
    CHECK_EQ_INT(mdm_file_read(path, 100, &data, &len), 0);
    CHECK(len == 5 && data && memcmp(data, "first", 5) == 0); /* never replaced */
    free(data);
    CHECK_EQ_INT(entries(), 1); /* the temporary file is gone */
    unlink(path);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("file"));
    test_write_and_read();
    test_private();
    test_create();
    rmdir(dir);
    return check_finish("file");
}
