/*
 * core/seal: AES-256-GCM envelopes for secrets at rest (see seal.h for the format).
 *
 * Design: one-shot functions over caller buffers; the AES context lives on the stack and is
 * wiped after use. Nonces are 96 random bits from mdm_random_bytes() (core/crypto), whose
 * process-wide DRBG re-seeds in a forked child: a copied DRBG state would repeat the parent's
 * nonces, and a repeated GCM nonce under one key leaks the authentication key. Key files go
 * through core/file (mdm_file_read_private, mdm_file_create).
 *
 * Threads: any.
 */
#include "core/seal.h"

#include <wolfssl/options.h>

#include <wolfssl/wolfcrypt/aes.h>

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/crypto.h"
#include "core/file.h"
#include "core/log.h"

int mdm_seal_key_load(const char *path, uint8_t key[MDM_SEAL_KEY_LEN])
{
    assert(path && key);
    uint8_t *data = NULL;
    size_t len = 0;
    struct stat st = {0}; /* st_mode stays 0 unless the file was opened */
    int ret = mdm_file_read_private(path, MDM_SEAL_KEY_LEN, &data, &len, &st);
    if (ret != 0 && st.st_mode == 0) {
        mdm_error("seal", "cannot open secrets key %s: %s", path, mdm_strerror(ret));
        goto out;
    }
    switch (ret) {
    case 0:
        if (len != MDM_SEAL_KEY_LEN) {
            mdm_error("seal", "secrets key %s has %zu bytes; it must have exactly %d", path, len,
                      MDM_SEAL_KEY_LEN);
            ret = MDM_ECRYPTO;
        }
        break;
    case -EINVAL:
        mdm_error("seal", "secrets key %s is not a regular file", path);
        ret = MDM_ECRYPTO;
        break;
    case -EPERM:
        mdm_error("seal",
                  "secrets key %s is readable or writable by group or others (mode %03o); "
                  "refusing it: run chmod 600 on it",
                  path, (unsigned)(st.st_mode & 0777));
        break;
    case MDM_ETOOBIG:
        mdm_error("seal", "secrets key %s has %lld bytes; it must have exactly %d", path,
                  (long long)st.st_size, MDM_SEAL_KEY_LEN);
        ret = MDM_ECRYPTO;
        break;
    case -EAGAIN:
        mdm_error("seal", "secrets key %s changed while being read", path);
        ret = MDM_ECRYPTO;
        break;
    default:
        mdm_error("seal", "cannot read secrets key %s: %s", path, mdm_strerror(ret));
        break;
    }
out:
    if (ret == 0)
        memcpy(key, data, MDM_SEAL_KEY_LEN);
    else
        explicit_bzero(key, MDM_SEAL_KEY_LEN);
    if (data) {
        explicit_bzero(data, len);
        free(data);
    }
    return ret;
}

int mdm_seal_key_create(const char *path, uint8_t key[MDM_SEAL_KEY_LEN])
{
    assert(path);
    uint8_t k[MDM_SEAL_KEY_LEN];
    int ret = mdm_random_bytes(k, sizeof(k));
    if (ret == 0)
        ret = mdm_file_create(path, k, sizeof(k), 0600);
    if (ret == 0 && key)
        memcpy(key, k, sizeof(k));
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
    if ((ret = mdm_random_bytes(nonce, MDM_SEAL_NONCE_LEN)) != 0)
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
