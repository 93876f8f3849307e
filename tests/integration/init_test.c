/* `mdmd init` and `mdmd check-certs` through the real binary. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "harness.h"

int main(void)
{
    char dir[512], out[16384];
    snprintf(dir, sizeof(dir), "%s/inst", check_tmpdir("init"));

    const char *init[] = {"init", dir, "--hostnames", "mdm.example.com,127.0.0.1", NULL};
    CHECK_EQ_INT(harness_run(dir, init, 60000, out, sizeof(out)), 0);
    CHECK(strstr(out, "mdm_") != NULL); /* the API key, printed once */
    struct stat st;
    CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);

    const char *check[] = {"check-certs", dir, NULL};
    CHECK_EQ_INT(harness_run(dir, check, 60000, out, sizeof(out)), 0);
    CHECK(strstr(out, "FAIL") == NULL);
    CHECK(strstr(out, "PASS") != NULL);

    /* No overwrite without --force. */
    int code = harness_run(dir, init, 60000, out, sizeof(out));
    CHECK(code != 0);
    CHECK(strstr(out, "--force") != NULL);
    const char *force[] = {"init", dir, "--force", NULL};
    CHECK_EQ_INT(harness_run(dir, force, 60000, out, sizeof(out)), 0);

    /* An extra certificate that breaks the rules makes check-certs fail: the test CA is no
     * server certificate (no serverAuth, validity of years). */
    const char *bad[] = {"check-certs", dir, MDM_TEST_DATA "/test-ca.crt", NULL};
    CHECK_EQ_INT(harness_run(dir, bad, 60000, out, sizeof(out)), 1);
    CHECK(strstr(out, "FAIL") != NULL);

    const char *usage[] = {"frobnicate", NULL};
    CHECK_EQ_INT(harness_run(dir, usage, 10000, out, sizeof(out)), 2);
    return check_finish("integ-init");
}
