/*
 * actors/instance tests: `mdmd init` layout and modes (independent of the umask), the API key
 * printed once and stored as its hash, check-certs on a fresh instance, refusal without
 * --force, regeneration with --force keeping db/ (and secrets.key while db/ has data), and
 * malformed host lists.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/instance.h"
#include "check.h"

static char base[PATH_MAX / 4];

static const char *at(const char *dir, const char *rel)
{
    static char buf[4][PATH_MAX];
    static int slot;
    slot = (slot + 1) % 4;
    snprintf(buf[slot], sizeof(buf[slot]), "%s/%s", dir, rel);
    return buf[slot];
}

static int mode_of(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

static long size_of(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

/* Reads a whole (small) file into a static buffer; "" when missing. */
static const char *slurp(const char *p)
{
    static char buf[2][64 * 1024];
    static int slot;
    slot ^= 1;
    buf[slot][0] = 0;
    FILE *f = fopen(p, "rb");
    if (!f)
        return buf[slot];
    size_t n = fread(buf[slot], 1, sizeof(buf[slot]) - 1, f);
    buf[slot][n] = 0;
    fclose(f);
    return buf[slot];
}

/* Runs init with output captured into *text (malloc'ed, caller frees). */
static int run_init(const char *dir, const char *hosts, bool force, char **text)
{
    size_t len = 0;
    FILE *out = open_memstream(text, &len);
    if (!out)
        exit(99);
    int ret = mdm_instance_init(dir, hosts, force, out);
    fclose(out);
    return ret;
}

static int run_check(const char *dir, const char *hosts, const char *const *extra, size_t n,
                     char **text)
{
    size_t len = 0;
    FILE *out = open_memstream(text, &len);
    if (!out)
        exit(99);
    int ret = mdm_instance_check_certs(dir, hosts, extra, n, out);
    fclose(out);
    return ret;
}

static size_t count(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Extracts the printed API key; checks its shape. */
static void api_key_of(const char *text, char key[64])
{
    key[0] = 0;
    const char *p = strstr(text, "Admin API key: ");
    CHECK(p != NULL);
    if (!p)
        return;
    p += strlen("Admin API key: ");
    size_t n = strcspn(p, "\n");
    CHECK_EQ_INT(n, 4 + 43);
    if (n >= 64)
        return;
    memcpy(key, p, n);
    key[n] = 0;
    CHECK(strncmp(key, "mdm_", 4) == 0);
    static const char b64url[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    CHECK_EQ_INT(strspn(key + 4, b64url), 43);
}

static void check_key_matches(const char *dir, const char *key)
{
    char stored[65], computed[65];
    CHECK_EQ_INT(mdm_instance_read_admin_key_hash(dir, stored), 0);
    CHECK_EQ_INT(mdm_instance_hash_api_key(key, computed), 0);
    CHECK_STR(stored, computed);
    /* Only the hash is on disk. */
    CHECK(strstr(slurp(at(dir, "admin-api-key.sha256")), key + 4) == NULL);
}

static void check_layout(const char *dir)
{
    static const char *const dirs[] = {"ca", "tls", "signing", "db"};
    static const char *const private_files[] = {"mdmd.conf",           "ca/ca.key",
                                                "tls/server.key",      "signing/signing.key",
                                                "secrets.key",         "admin-api-key.sha256"};
    static const char *const certs[] = {"ca/ca.crt", "tls/server.crt", "tls/chain.pem",
                                        "signing/signing.crt"};
    CHECK_EQ_INT(mode_of(dir), 0700);
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        if (mode_of(at(dir, dirs[i])) != 0700)
            fprintf(stderr, "mode of %s: %o\n", dirs[i], mode_of(at(dir, dirs[i])));
        CHECK_EQ_INT(mode_of(at(dir, dirs[i])), 0700);
    }
    for (size_t i = 0; i < sizeof(private_files) / sizeof(private_files[0]); i++) {
        if (mode_of(at(dir, private_files[i])) != 0600)
            fprintf(stderr, "mode of %s: %o\n", private_files[i],
                    mode_of(at(dir, private_files[i])));
        CHECK_EQ_INT(mode_of(at(dir, private_files[i])), 0600);
    }
    for (size_t i = 0; i < sizeof(certs) / sizeof(certs[0]); i++) {
        if (mode_of(at(dir, certs[i])) != 0644)
            fprintf(stderr, "mode of %s: %o\n", certs[i], mode_of(at(dir, certs[i])));
        CHECK_EQ_INT(mode_of(at(dir, certs[i])), 0644);
    }
    CHECK_EQ_INT(size_of(at(dir, "secrets.key")), 32);
    CHECK_EQ_INT(size_of(at(dir, "admin-api-key.sha256")), 65);
    const char *chain = slurp(at(dir, "tls/chain.pem"));
    CHECK_EQ_INT(count(chain, "-----BEGIN CERTIFICATE-----"), 2);
    const char *leaf = slurp(at(dir, "tls/server.crt"));
    CHECK(strncmp(chain, leaf, strlen(leaf)) == 0);
}

static void test_init_and_check(void)
{
    char dir[PATH_MAX / 2], *text = NULL, key1[64], key2[64];
    snprintf(dir, sizeof(dir), "%s/inst", base);

    mode_t old = umask(0); /* modes must not depend on the umask */
    CHECK_EQ_INT(run_init(dir, NULL, false, &text), 0);
    umask(old);
    CHECK(strstr(text, "Keep this key: it is stored only as a hash.") != NULL);
    CHECK(strstr(text, "localhost, 127.0.0.1, ::1") != NULL);
    CHECK(strstr(text, "tls/server.crt") != NULL);
    api_key_of(text, key1);
    free(text);
    check_layout(dir);
    check_key_matches(dir, key1);
    CHECK(strstr(slurp(at(dir, "mdmd.conf")), "localhost,127.0.0.1,::1") != NULL);

    /* check-certs on the fresh instance: every rule passes. */
    CHECK_EQ_INT(run_check(dir, "localhost,127.0.0.1,::1", NULL, 0, &text), 0);
    CHECK(strstr(text, "tls/server.crt  PASS  subjectAltName") != NULL);
    CHECK(strstr(text, "DNS:localhost, IP:127.0.0.1, IP:::1") != NULL);
    CHECK(strstr(text, "ca/ca.crt  PASS  basicConstraints") != NULL);
    CHECK(strstr(text, "signing/signing.crt  PASS  keyUsage") != NULL);
    CHECK_EQ_INT(count(text, "  PASS  "), 6 + 4 + 4);
    CHECK_EQ_INT(count(text, "  FAIL  "), 0);
    CHECK_EQ_INT(count(text, "  INFO  "), 3);
    free(text);
    CHECK_EQ_INT(run_check(dir, NULL, NULL, 0, &text), 0);
    free(text);

    /* A host name the certificate lacks, a chain file and a missing file. */
    CHECK_EQ_INT(run_check(dir, "mdm.example.com", NULL, 0, &text), 1);
    CHECK(strstr(text, "tls/server.crt  FAIL  subjectAltName") != NULL);
    CHECK(strstr(text, "missing mdm.example.com") != NULL);
    free(text);
    const char *extra[] = {at(dir, "tls/chain.pem"), at(base, "nonexistent.pem")};
    CHECK_EQ_INT(run_check(dir, NULL, extra, 2, &text), 1);
    CHECK(strstr(text, "chain.pem[1]  PASS  subjectAltName") != NULL);
    CHECK(strstr(text, "chain.pem[2]  PASS  basicConstraints") != NULL);
    CHECK(strstr(text, "nonexistent.pem  FAIL  readable") != NULL);
    free(text);
    CHECK_EQ_INT(run_check(dir, "bad name!", NULL, 0, &text), -EINVAL);
    free(text);

    /* Again without --force: refused, nothing changes. */
    char ca_before[8192], secrets_before[64];
    snprintf(ca_before, sizeof(ca_before), "%s", slurp(at(dir, "ca/ca.crt")));
    CHECK_EQ_INT(run_init(dir, NULL, false, &text), -EEXIST);
    CHECK(strstr(text, "--force") != NULL);
    CHECK(strstr(text, "Admin API key") == NULL);
    free(text);
    CHECK_STR(slurp(at(dir, "ca/ca.crt")), ca_before);
    check_key_matches(dir, key1);

    /* --force with data in db/: everything new except db/ and secrets.key. */
    FILE *m = fopen(at(dir, "db/marker"), "w");
    CHECK(m != NULL);
    if (m) {
        fputs("keep me", m);
        fclose(m);
    }
    memcpy(secrets_before, slurp(at(dir, "secrets.key")), 32);
    old = umask(077);
    CHECK_EQ_INT(run_init(dir, "mdm.example.com, 10.1.2.3", true, &text), 0);
    umask(old);
    CHECK(strstr(text, "mdm.example.com, 10.1.2.3") != NULL);
    CHECK(strstr(text, "kept") != NULL);
    api_key_of(text, key2);
    free(text);
    CHECK(strcmp(key1, key2) != 0);
    check_key_matches(dir, key2);
    check_layout(dir);
    CHECK_STR(slurp(at(dir, "db/marker")), "keep me");
    CHECK(memcmp(slurp(at(dir, "secrets.key")), secrets_before, 32) == 0);
    CHECK(strcmp(slurp(at(dir, "ca/ca.crt")), ca_before) != 0);
    CHECK(strstr(slurp(at(dir, "mdmd.conf")), "mdm.example.com, 10.1.2.3") != NULL);
    CHECK_EQ_INT(run_check(dir, "mdm.example.com,10.1.2.3", NULL, 0, &text), 0);
    CHECK(strstr(text, "DNS:mdm.example.com, IP:10.1.2.3") != NULL);
    free(text);
    CHECK_EQ_INT(run_check(dir, "localhost", NULL, 0, &text), 1);
    free(text);

    /* --force with an empty db/: a new secrets key too. */
    CHECK_EQ_INT(unlink(at(dir, "db/marker")), 0);
    CHECK_EQ_INT(run_init(dir, NULL, true, &text), 0);
    free(text);
    CHECK(memcmp(slurp(at(dir, "secrets.key")), secrets_before, 32) != 0);
    check_layout(dir);
}

static void test_bad_input(void)
{
    char dir[PATH_MAX / 2], *text = NULL;
    snprintf(dir, sizeof(dir), "%s/bad", base);
    CHECK_EQ_INT(run_init(dir, "ok.example.com,bad name!", false, &text), -EINVAL);
    CHECK(strstr(text, "bad name!") != NULL);
    free(text);
    CHECK(access(dir, F_OK) != 0); /* validated before anything is created */
    CHECK_EQ_INT(run_init(dir, " , ,", false, &text), -EINVAL);
    free(text);
    CHECK(access(dir, F_OK) != 0);

    /* A file where the instance folder should be. */
    FILE *f = fopen(at(base, "file"), "w");
    if (f)
        fclose(f);
    CHECK_EQ_INT(run_init(at(base, "file"), NULL, false, &text), -ENOTDIR);
    free(text);

    char hex[65];
    CHECK_EQ_INT(mdm_instance_read_admin_key_hash(at(base, "nowhere"), hex), -ENOENT);
    CHECK_EQ_INT(mkdir(at(base, "junk"), 0700), 0);
    f = fopen(at(base, "junk/admin-api-key.sha256"), "w");
    if (f) {
        fputs("ABCDEF\n", f);
        fclose(f);
    }
    CHECK_EQ_INT(mdm_instance_read_admin_key_hash(at(base, "junk"), hex), MDM_ECONFIG);

    CHECK_EQ_INT(mdm_instance_hash_api_key("abc", hex), 0);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

int main(void)
{
    snprintf(base, sizeof(base), "%s", check_tmpdir("instance"));
    test_init_and_check();
    test_bad_input();
    if (check_failed == 0) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", base);
    }
    return check_finish("instance");
}
