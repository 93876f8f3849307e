#include "check.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

int check_passed;
int check_failed;

int check_finish(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, check_passed, check_failed);
    return check_failed == 0 && check_passed > 0 ? 0 : 1;
}

const char *check_tmpdir(const char *tag)
{
    static char path[PATH_MAX];
    const char *base = getenv("TMPDIR");
    snprintf(path, sizeof(path), "%s/mdmd-%s-XXXXXX", base ? base : "/tmp", tag);
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        exit(99);
    }
    return path;
}
