/*
 * core/crypto: the process-wide DRBG and SHA-256 over wolfCrypt (see crypto.h).
 *
 * Design: the DRBG remembers the pid that seeded it; the first call in a forked child frees
 * the inherited state and seeds a new one. wolfCrypt takes word32 lengths, so long inputs
 * are fed in pieces.
 *
 * Threads: any; the DRBG is guarded by rng_lock, hashing shares nothing.
 */
#include "core/crypto.h"

#include <wolfssl/options.h>

#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

_Static_assert(MDM_SHA256_LEN == WC_SHA256_DIGEST_SIZE, "SHA-256 digest size");

#define PIECE_MAX ((size_t)1 << 30) /* largest length handed to wolfCrypt at once */

static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static WC_RNG rng;    /* guarded by rng_lock */
static pid_t rng_pid; /* process that seeded rng; 0: not seeded */

int mdm_random_bytes(void *buf, size_t len)
{
    assert(buf || len == 0);
    int ret = 0;
    pid_t pid = getpid();
    pthread_mutex_lock(&rng_lock);
    if (rng_pid != pid) {
        if (rng_pid != 0)
            wc_FreeRng(&rng);
        rng_pid = 0;
        if (wc_InitRng(&rng) != 0) {
            mdm_error("crypto", "cannot seed the random number generator");
            ret = MDM_ECRYPTO;
            goto out;
        }
        rng_pid = pid;
    }
    for (size_t done = 0; done < len;) {
        size_t n = len - done < PIECE_MAX ? len - done : PIECE_MAX;
        if (wc_RNG_GenerateBlock(&rng, (uint8_t *)buf + done, (word32)n) != 0) {
            mdm_error("crypto", "random number generator failure");
            ret = MDM_ECRYPTO;
            goto out;
        }
        done += n;
    }
out:
    pthread_mutex_unlock(&rng_lock);
    return ret;
}

int mdm_sha256(const void *data, size_t len, uint8_t out[MDM_SHA256_LEN])
{
    assert((data || len == 0) && out);
    wc_Sha256 sha;
    int ret = 0;
    if (wc_InitSha256(&sha) != 0)
        return MDM_ECRYPTO;
    for (size_t done = 0; done < len && ret == 0;) {
        size_t n = len - done < PIECE_MAX ? len - done : PIECE_MAX;
        if (wc_Sha256Update(&sha, (const uint8_t *)data + done, (word32)n) != 0)
            ret = MDM_ECRYPTO;
        done += n;
    }
    if (ret == 0 && wc_Sha256Final(&sha, out) != 0)
        ret = MDM_ECRYPTO;
    wc_Sha256Free(&sha);
    return ret;
}

int mdm_sha256_hex(const void *data, size_t len, char hex[MDM_SHA256_HEX_LEN + 1])
{
    assert(hex);
    uint8_t digest[MDM_SHA256_LEN];
    hex[0] = 0;
    int ret = mdm_sha256(data, len, digest);
    if (ret != 0)
        return ret;
    mdm_hex_encode(digest, sizeof(digest), hex);
    return 0;
}

int mdm_uuid_v4(char out[MDM_UUID_LEN + 1])
{
    uint8_t b[16];
    int ret = mdm_random_bytes(b, sizeof(b));
    if (ret != 0)
        return ret;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, MDM_UUID_LEN + 1,
             "%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-%02X%02X%02X%02X%02X%02X", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}
