/*
 * core/seal: AES-256-GCM envelopes for secrets at rest (see seal.h for the format).
 *
 * Design: one-shot functions over caller buffers; the AES context lives on the stack and is
 * wiped after use. Nonces are 96 random bits from a single wolfCrypt Hash-DRBG shared by all
 * threads behind a mutex (sealing is rare: enrollment, escrow, security actions, so the lock
 * is never contended in practice). The DRBG remembers the pid that seeded it and re-seeds in
 * a forked child: a copied DRBG state would repeat the parent's nonces, and a repeated GCM
 * nonce under one key leaks the authentication key.
 *
 * Threads: any.
 */
#include "core/seal.h"

#include <wolfssl/options.h>

#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/random.h>

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static WC_RNG rng;       /* guarded by rng_lock */
static pid_t rng_pid;    /* process that seeded rng; 0: not seeded */

/* Fills out with n random bytes. Returns 0 or MDM_ECRYPTO. */
static int random_bytes(uint8_t *out, size_t n)
{
    int ret = 0;
    pid_t pid = getpid();
    pthread_mutex_lock(&rng_lock);
    if (rng_pid != pid) {
        if (rng_pid != 0)
            wc_FreeRng(&rng);
        rng_pid = 0;
        if (wc_InitRng(&rng) != 0) {
            mdm_error("seal", "cannot seed the random number generator");
            ret = MDM_ECRYPTO;
            goto out;
        }
        rng_pid = pid;
    }
    if (wc_RNG_GenerateBlock(&rng, out, (word32)n) != 0) {
        mdm_error("seal", "random number generator failure");
        ret = MDM_ECRYPTO;
    }
out:
    pthread_mutex_unlock(&rng_lock);
    return ret;
}

int mdm_seal_key_load(const char *path, uint8_t key[MDM_SEAL_KEY_LEN])
{
    assert(path && key);
    int ret = 0;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        ret = -errno;
        mdm_error("seal", "cannot open secrets key %s: %s", path, strerror(-ret));
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        ret = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        mdm_error("seal", "secrets key %s is not a regular file", path);
        ret = MDM_ECRYPTO;
        goto out;
    }
    if (st.st_mode & 077) {
        mdm_error("seal",
                  "secrets key %s is readable or writable by group or others (mode %03o); "
                  "refusing it: run chmod 600 on it",
                  path, (unsigned)(st.st_mode & 0777));
        ret = -EPERM;
        goto out;
    }
    if (st.st_size != MDM_SEAL_KEY_LEN) {
        mdm_error("seal", "secrets key %s has %lld bytes; it must have exactly %d", path,
                  (long long)st.st_size, MDM_SEAL_KEY_LEN);
        ret = MDM_ECRYPTO;
        goto out;
    }
    size_t got = 0;
    while (got < MDM_SEAL_KEY_LEN) {
        ssize_t n = read(fd, key + got, MDM_SEAL_KEY_LEN - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ret = -errno;
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    uint8_t extra;
    ssize_t n;
    do
        n = read(fd, &extra, 1);
    while (n < 0 && errno == EINTR);
    if (got != MDM_SEAL_KEY_LEN || n != 0) { /* the file changed size under us */
        mdm_error("seal", "secrets key %s changed while being read", path);
        ret = MDM_ECRYPTO;
    }
out:
    if (fd >= 0)
        close(fd);
    if (ret != 0)
        explicit_bzero(key, MDM_SEAL_KEY_LEN);
    return ret;
}

int mdm_seal_key_create(const char *path, uint8_t key[MDM_SEAL_KEY_LEN])
{
    assert(path);
    uint8_t k[MDM_SEAL_KEY_LEN];
    int ret = random_bytes(k, sizeof(k));
    if (ret != 0)
        return ret;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        ret = -errno;
        goto out;
    }
    size_t put = 0;
    while (put < sizeof(k)) {
        ssize_t n = write(fd, k + put, sizeof(k) - put);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ret = -errno;
            goto out;
        }
        put += (size_t)n;
    }
    if (fsync(fd) != 0) {
        ret = -errno;
        goto out;
    }
    if (key)
        memcpy(key, k, sizeof(k));
out:
    if (fd >= 0) {
        close(fd);
        if (ret != 0)
            unlink(path); /* ours: O_EXCL created it */
    }
    explicit_bzero(k, sizeof(k));
    return ret;
}

int mdm_seal(const uint8_t key[MDM_SEAL_KEY_LEN], const void *aad, size_t aad_len,
             const void *plain, size_t len, mdm_buf_t *out)
{
    assert(key && out);
    assert(aad || aad_len == 0);
    assert(plain || len == 0);
    if (len > UINT32_MAX - MDM_SEAL_OVERHEAD || aad_len > UINT32_MAX)
        return MDM_ETOOBIG;
    int ret = mdm_buf_reserve(out, len + MDM_SEAL_OVERHEAD);
    if (ret != 0)
        return ret;
    uint8_t *env = mdm_buf_tail(out);
    const uint8_t version = MDM_SEAL_VERSION;
    env[0] = version;
    uint8_t *nonce = env + 1, *ct = nonce + MDM_SEAL_NONCE_LEN, *tag = ct + len;
    if ((ret = random_bytes(nonce, MDM_SEAL_NONCE_LEN)) != 0)
        return ret;

    Aes aes;
    if (wc_AesInit(&aes, NULL, INVALID_DEVID) != 0)
        return MDM_ECRYPTO;
    /* AAD = version byte || caller aad, fed in two pieces before any plaintext. */
    if (wc_AesGcmEncryptInit(&aes, key, MDM_SEAL_KEY_LEN, nonce, MDM_SEAL_NONCE_LEN) != 0 ||
        wc_AesGcmEncryptUpdate(&aes, NULL, NULL, 0, &version, 1) != 0 ||
        wc_AesGcmEncryptUpdate(&aes, NULL, NULL, 0, aad, (word32)aad_len) != 0 ||
        wc_AesGcmEncryptUpdate(&aes, ct, plain, (word32)len, NULL, 0) != 0 ||
        wc_AesGcmEncryptFinal(&aes, tag, MDM_SEAL_TAG_LEN) != 0)
        ret = MDM_ECRYPTO;
    wc_AesFree(&aes);
    explicit_bzero(&aes, sizeof(aes));
    if (ret == 0)
        mdm_buf_commit(out, len + MDM_SEAL_OVERHEAD);
    else
        explicit_bzero(env, len + MDM_SEAL_OVERHEAD);
    return ret;
}

int mdm_unseal(const uint8_t key[MDM_SEAL_KEY_LEN], const void *aad, size_t aad_len,
               const void *sealed, size_t len, mdm_buf_t *out)
{
    assert(key && out);
    assert(aad || aad_len == 0);
    assert(sealed || len == 0);
    const uint8_t *env = sealed;
    if (len < MDM_SEAL_OVERHEAD || env[0] != MDM_SEAL_VERSION)
        return MDM_ECRYPTO;
    if (len > UINT32_MAX || aad_len > UINT32_MAX)
        return MDM_ETOOBIG;
    size_t plain_len = len - MDM_SEAL_OVERHEAD;
    const uint8_t *nonce = env + 1, *ct = nonce + MDM_SEAL_NONCE_LEN, *tag = ct + plain_len;
    int ret = mdm_buf_reserve(out, plain_len);
    if (ret != 0)
        return ret;
    uint8_t *plain = mdm_buf_tail(out);

    Aes aes;
    if (wc_AesInit(&aes, NULL, INVALID_DEVID) != 0)
        return MDM_ECRYPTO;
    if (wc_AesGcmDecryptInit(&aes, key, MDM_SEAL_KEY_LEN, nonce, MDM_SEAL_NONCE_LEN) != 0 ||
        wc_AesGcmDecryptUpdate(&aes, NULL, NULL, 0, env, 1) != 0 ||
        wc_AesGcmDecryptUpdate(&aes, NULL, NULL, 0, aad, (word32)aad_len) != 0 ||
        wc_AesGcmDecryptUpdate(&aes, plain, ct, (word32)plain_len, NULL, 0) != 0 ||
        wc_AesGcmDecryptFinal(&aes, tag, MDM_SEAL_TAG_LEN) != 0)
        ret = MDM_ECRYPTO; /* AES_GCM_AUTH_E for a bad tag; any failure reads the same */
    wc_AesFree(&aes);
    explicit_bzero(&aes, sizeof(aes));
    if (ret == 0)
        mdm_buf_commit(out, plain_len);
    else if (plain_len)
        explicit_bzero(plain, plain_len); /* never leave unauthenticated plaintext around */
    return ret;
}
