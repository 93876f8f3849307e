/*
 * core/seal tests: envelope round trips, every tampering case, key file rules, nonce
 * uniqueness across threads and across fork().
 */
#include <wolfssl/options.h>

#include <wolfssl/wolfcrypt/aes.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/seal.h"

static const uint8_t key1[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t key2[32] = {2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static const char aad[] = "bootstrap:00008103-000A1C2E0C40001E";
static const char secret[] = "bootstrap token: 0123456789abcdef0123456789abcdef";

/* Unseals env and expects code; on success compares with want. */
static int try_unseal(const uint8_t *key, const void *a, size_t alen, const uint8_t *env,
                      size_t len, const void *want, size_t want_len)
{
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    int ret = mdm_unseal(key, a, alen, env, len, &out);
    if (ret == 0 && (out.len != want_len || (want_len && memcmp(mdm_buf_head(&out), want,
                                                                 want_len) != 0)))
        ret = -9999;
    if (ret != 0 && out.len != 0)
        ret = -9998; /* failure must append nothing */
    mdm_buf_dispose(&out);
    return ret;
}

static void test_round_trip(void)
{
    mdm_buf_t env;
    mdm_buf_init(&env, 0);
    CHECK_EQ_INT(mdm_buf_append(&env, "xx", 2), 0); /* seal appends after existing bytes */
    CHECK_EQ_INT(mdm_seal(key1, aad, strlen(aad), secret, strlen(secret), &env), 0);
    CHECK_EQ_INT(env.len, 2 + strlen(secret) + MDM_SEAL_OVERHEAD);
    const uint8_t *e = mdm_buf_head(&env) + 2;
    size_t elen = env.len - 2;
    CHECK_EQ_INT(e[0], MDM_SEAL_VERSION);
    CHECK(memmem(e, elen, "bootstrap token", 15) == NULL); /* not in the clear */

    CHECK_EQ_INT(try_unseal(key1, aad, strlen(aad), e, elen, secret, strlen(secret)), 0);
    /* unseal appends too */
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    CHECK_EQ_INT(mdm_buf_append(&out, "p:", 2), 0);
    CHECK_EQ_INT(mdm_unseal(key1, aad, strlen(aad), e, elen, &out), 0);
    CHECK_EQ_INT(out.len, 2 + strlen(secret));
    CHECK(memcmp(mdm_buf_head(&out), "p:", 2) == 0);
    CHECK(memcmp(mdm_buf_head(&out) + 2, secret, strlen(secret)) == 0);
    mdm_buf_dispose(&out);

    /* The documented format, checked with wolfCrypt's one-shot API: AAD = version || aad. */
    uint8_t full_aad[1 + sizeof(aad)];
    full_aad[0] = MDM_SEAL_VERSION;
    memcpy(full_aad + 1, aad, strlen(aad));
    size_t plen = elen - MDM_SEAL_OVERHEAD;
    uint8_t plain[sizeof(secret)];
    Aes aes;
    CHECK_EQ_INT(wc_AesInit(&aes, NULL, INVALID_DEVID), 0);
    CHECK_EQ_INT(wc_AesGcmSetKey(&aes, key1, 32), 0);
    CHECK_EQ_INT(wc_AesGcmDecrypt(&aes, plain, e + 1 + MDM_SEAL_NONCE_LEN, (word32)plen, e + 1,
                                  MDM_SEAL_NONCE_LEN, e + elen - MDM_SEAL_TAG_LEN,
                                  MDM_SEAL_TAG_LEN, full_aad, (word32)(1 + strlen(aad))),
                 0);
    wc_AesFree(&aes);
    CHECK(plen == strlen(secret) && memcmp(plain, secret, plen) == 0);
    mdm_buf_dispose(&env);
}

static void test_tampering(void)
{
    mdm_buf_t env;
    mdm_buf_init(&env, 0);
    CHECK_EQ_INT(mdm_seal(key1, aad, strlen(aad), secret, strlen(secret), &env), 0);
    size_t elen = env.len;
    uint8_t *e = malloc(elen);
    memcpy(e, mdm_buf_head(&env), elen);

    CHECK_EQ_INT(try_unseal(key2, aad, strlen(aad), e, elen, NULL, 0), MDM_ECRYPTO);
    CHECK_EQ_INT(try_unseal(key1, "bootstrap:other", 15, e, elen, NULL, 0), MDM_ECRYPTO);
    CHECK_EQ_INT(try_unseal(key1, NULL, 0, e, elen, NULL, 0), MDM_ECRYPTO);
    CHECK_EQ_INT(try_unseal(key1, aad, strlen(aad) - 1, e, elen, NULL, 0), MDM_ECRYPTO);

    /* Flip one bit in every byte position in turn: version, nonce, ciphertext, tag. */
    int all_refused = 1;
    for (size_t i = 0; i < elen; i++) {
        e[i] ^= 0x04;
        if (try_unseal(key1, aad, strlen(aad), e, elen, NULL, 0) != MDM_ECRYPTO)
            all_refused = 0;
        e[i] ^= 0x04;
    }
    CHECK(all_refused);
    CHECK_EQ_INT(try_unseal(key1, aad, strlen(aad), e, elen, secret, strlen(secret)), 0);

    /* Every truncation, including shorter than the overhead, and one byte too many. */
    int all_short_refused = 1;
    for (size_t n = 0; n < elen; n++)
        if (try_unseal(key1, aad, strlen(aad), e, n, NULL, 0) != MDM_ECRYPTO)
            all_short_refused = 0;
    CHECK(all_short_refused);
    uint8_t *longer = malloc(elen + 1);
    memcpy(longer, e, elen);
    longer[elen] = 0;
    CHECK_EQ_INT(try_unseal(key1, aad, strlen(aad), longer, elen + 1, NULL, 0), MDM_ECRYPTO);
    free(longer);

    /* Unknown versions are refused before any decryption. */
    e[0] = 2;
    CHECK_EQ_INT(try_unseal(key1, aad, strlen(aad), e, elen, NULL, 0), MDM_ECRYPTO);
    e[0] = 0;
    CHECK_EQ_INT(try_unseal(key1, aad, strlen(aad), e, elen, NULL, 0), MDM_ECRYPTO);
    e[0] = MDM_SEAL_VERSION;
    CHECK_EQ_INT(try_unseal(key1, NULL, 0, NULL, 0, NULL, 0), MDM_ECRYPTO);

    free(e);
    mdm_buf_dispose(&env);
}

static void test_empty_and_limits(void)
{
    mdm_buf_t env;
    mdm_buf_init(&env, 0);
    CHECK_EQ_INT(mdm_seal(key1, NULL, 0, NULL, 0, &env), 0);
    CHECK_EQ_INT(env.len, MDM_SEAL_OVERHEAD);
    CHECK_EQ_INT(try_unseal(key1, NULL, 0, mdm_buf_head(&env), env.len, NULL, 0), 0);
    CHECK_EQ_INT(try_unseal(key1, "x", 1, mdm_buf_head(&env), env.len, NULL, 0), MDM_ECRYPTO);
    CHECK_EQ_INT(try_unseal(key2, NULL, 0, mdm_buf_head(&env), env.len, NULL, 0), MDM_ECRYPTO);
    mdm_buf_dispose(&env);

    mdm_buf_init(&env, 0);
    CHECK_EQ_INT(mdm_seal(key1, aad, strlen(aad), "", 0, &env), 0);
    CHECK_EQ_INT(try_unseal(key1, aad, strlen(aad), mdm_buf_head(&env), env.len, "", 0), 0);
    mdm_buf_dispose(&env);

    /* A bounded output buffer: nothing appended when the envelope does not fit. */
    mdm_buf_init(&env, 10);
    CHECK_EQ_INT(mdm_seal(key1, NULL, 0, "abc", 3, &env), MDM_ETOOBIG);
    CHECK_EQ_INT(env.len, 0);
    mdm_buf_dispose(&env);

    /* A large value (several GCM blocks, not a multiple of 16). */
    size_t big_len = 100003;
    uint8_t *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)(i * 7);
    mdm_buf_init(&env, 0);
    CHECK_EQ_INT(mdm_seal(key1, aad, strlen(aad), big, big_len, &env), 0);
    CHECK_EQ_INT(try_unseal(key1, aad, strlen(aad), mdm_buf_head(&env), env.len, big, big_len),
                 0);
    mdm_buf_dispose(&env);
    free(big);
}

static void test_nonces_differ(void)
{
    mdm_buf_t a, b;
    mdm_buf_init(&a, 0);
    mdm_buf_init(&b, 0);
    CHECK_EQ_INT(mdm_seal(key1, aad, strlen(aad), secret, strlen(secret), &a), 0);
    CHECK_EQ_INT(mdm_seal(key1, aad, strlen(aad), secret, strlen(secret), &b), 0);
    CHECK_EQ_INT(a.len, b.len);
    CHECK(memcmp(mdm_buf_head(&a), mdm_buf_head(&b), a.len) != 0);
    CHECK(memcmp(mdm_buf_head(&a) + 1, mdm_buf_head(&b) + 1, MDM_SEAL_NONCE_LEN) != 0);
    mdm_buf_dispose(&a);
    mdm_buf_dispose(&b);
}

#define THREADS 4
#define SEALS_PER_THREAD 250

struct nonce_job {
    uint8_t nonces[SEALS_PER_THREAD][MDM_SEAL_NONCE_LEN];
    int failures;
};

static void *seal_thread(void *arg)
{
    struct nonce_job *job = arg;
    mdm_buf_t env;
    mdm_buf_init(&env, 0);
    for (int i = 0; i < SEALS_PER_THREAD; i++) {
        mdm_buf_reset(&env);
        if (mdm_seal(key1, aad, strlen(aad), secret, strlen(secret), &env) != 0 ||
            mdm_unseal(key1, aad, strlen(aad), mdm_buf_head(&env), env.len, &env) != 0) {
            job->failures++;
            continue;
        }
        memcpy(job->nonces[i], mdm_buf_head(&env) + 1, MDM_SEAL_NONCE_LEN);
    }
    mdm_buf_dispose(&env);
    return NULL;
}

static int cmp_nonce(const void *a, const void *b)
{
    return memcmp(a, b, MDM_SEAL_NONCE_LEN);
}

static void test_threads(void)
{
    static struct nonce_job jobs[THREADS];
    pthread_t tids[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK_EQ_INT(pthread_create(&tids[i], NULL, seal_thread, &jobs[i]), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(tids[i], NULL);
    static uint8_t all[THREADS * SEALS_PER_THREAD][MDM_SEAL_NONCE_LEN];
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        failures += jobs[i].failures;
        memcpy(all[i * SEALS_PER_THREAD], jobs[i].nonces, sizeof(jobs[i].nonces));
    }
    CHECK_EQ_INT(failures, 0);
    qsort(all, MDM_ARRAY_LEN(all), MDM_SEAL_NONCE_LEN, cmp_nonce);
    int dups = 0;
    for (size_t i = 1; i < MDM_ARRAY_LEN(all); i++)
        if (memcmp(all[i - 1], all[i], MDM_SEAL_NONCE_LEN) == 0)
            dups++;
    CHECK_EQ_INT(dups, 0);
}

/* A forked child must not continue the parent's DRBG stream. */
static void test_fork(void)
{
    mdm_buf_t env;
    mdm_buf_init(&env, 0);
    CHECK_EQ_INT(mdm_seal(key1, NULL, 0, "a", 1, &env), 0); /* seeds the parent's DRBG */
    int fds[2];
    CHECK_EQ_INT(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        mdm_buf_reset(&env);
        int ok = mdm_seal(key1, NULL, 0, "a", 1, &env) == 0;
        ssize_t n = ok ? write(fds[1], mdm_buf_head(&env) + 1, MDM_SEAL_NONCE_LEN) : -1;
        _exit(n == MDM_SEAL_NONCE_LEN ? 0 : 1);
    }
    CHECK(pid > 0);
    close(fds[1]);
    mdm_buf_reset(&env);
    CHECK_EQ_INT(mdm_seal(key1, NULL, 0, "a", 1, &env), 0);
    uint8_t child_nonce[MDM_SEAL_NONCE_LEN];
    size_t got = 0;
    while (got < sizeof(child_nonce)) {
        ssize_t n = read(fds[0], child_nonce + got, sizeof(child_nonce) - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fds[0]);
    int status = 0;
    if (pid > 0)
        waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ_INT(got, MDM_SEAL_NONCE_LEN);
    CHECK(memcmp(child_nonce, mdm_buf_head(&env) + 1, MDM_SEAL_NONCE_LEN) != 0);
    mdm_buf_dispose(&env);
}

static int write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(data, 1, len, f);
    fclose(f);
    return n == len && chmod(path, mode) == 0 ? 0 : -1;
}

static void test_key_files(void)
{
    char dir[512], path[600];
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("seal"));
    uint8_t k[32], k2[32];

    /* create: 0600, random, loadable, never overwritten */
    snprintf(path, sizeof(path), "%s/secrets.key", dir);
    CHECK_EQ_INT(mdm_seal_key_create(path, k), 0);
    struct stat st;
    CHECK_EQ_INT(stat(path, &st), 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    CHECK_EQ_INT(st.st_size, 32);
    memset(k2, 0, sizeof(k2));
    CHECK_EQ_INT(mdm_seal_key_load(path, k2), 0);
    CHECK(memcmp(k, k2, 32) == 0);
    CHECK_EQ_INT(mdm_seal_key_create(path, NULL), -EEXIST);
    CHECK_EQ_INT(mdm_seal_key_load(path, k2), 0);
    CHECK(memcmp(k, k2, 32) == 0);

    /* mode: group or world access refused, even read-only 0400 is fine */
    CHECK_EQ_INT(chmod(path, 0644), 0);
    CHECK_EQ_INT(mdm_seal_key_load(path, k2), -EPERM);
    CHECK_EQ_INT(chmod(path, 0640), 0);
    CHECK_EQ_INT(mdm_seal_key_load(path, k2), -EPERM);
    CHECK_EQ_INT(chmod(path, 0602), 0);
    CHECK_EQ_INT(mdm_seal_key_load(path, k2), -EPERM);
    uint8_t zero[32] = {0};
    CHECK(memcmp(k2, zero, 32) == 0); /* wiped on failure */
    CHECK_EQ_INT(chmod(path, 0400), 0);
    CHECK_EQ_INT(mdm_seal_key_load(path, k2), 0);
    CHECK(memcmp(k, k2, 32) == 0);

    /* length */
    uint8_t raw[64];
    memset(raw, 0x5a, sizeof(raw));
    snprintf(path, sizeof(path), "%s/short.key", dir);
    CHECK_EQ_INT(write_file(path, raw, 31, 0600), 0);
    CHECK_EQ_INT(mdm_seal_key_load(path, k2), MDM_ECRYPTO);
    snprintf(path, sizeof(path), "%s/long.key", dir);
    CHECK_EQ_INT(write_file(path, raw, 33, 0600), 0);
    CHECK_EQ_INT(mdm_seal_key_load(path, k2), MDM_ECRYPTO);
    snprintf(path, sizeof(path), "%s/empty.key", dir);
    CHECK_EQ_INT(write_file(path, raw, 0, 0600), 0);
    CHECK_EQ_INT(mdm_seal_key_load(path, k2), MDM_ECRYPTO);
    snprintf(path, sizeof(path), "%s/exact.key", dir);
    CHECK_EQ_INT(write_file(path, raw, 32, 0600), 0);
    CHECK_EQ_INT(mdm_seal_key_load(path, k2), 0);
    CHECK(memcmp(k2, raw, 32) == 0);

    /* missing file, directory */
    snprintf(path, sizeof(path), "%s/missing.key", dir);
    CHECK_EQ_INT(mdm_seal_key_load(path, k2), -ENOENT);
    CHECK_EQ_INT(chmod(dir, 0700), 0);
    CHECK_EQ_INT(mdm_seal_key_load(dir, k2), MDM_ECRYPTO);

    /* a loaded key seals and unseals */
    mdm_buf_t env;
    mdm_buf_init(&env, 0);
    CHECK_EQ_INT(mdm_seal(k, aad, strlen(aad), secret, strlen(secret), &env), 0);
    CHECK_EQ_INT(try_unseal(k, aad, strlen(aad), mdm_buf_head(&env), env.len, secret,
                            strlen(secret)),
                 0);
    CHECK_EQ_INT(try_unseal(key1, aad, strlen(aad), mdm_buf_head(&env), env.len, NULL, 0),
                 MDM_ECRYPTO);
    mdm_buf_dispose(&env);

    const char *names[] = {"secrets.key", "short.key", "long.key", "empty.key", "exact.key"};
    for (size_t i = 0; i < MDM_ARRAY_LEN(names); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

int main(void)
{
    mdm_log_setup(MDM_LOG_WARN, false);
    test_round_trip();
    test_tampering();
    test_empty_and_limits();
    test_nonces_differ();
    test_threads();
    test_fork();
    test_key_files();
    return check_finish("seal");
}
