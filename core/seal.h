/*
 * Sealing of secret values at rest (bootstrap tokens, FileVault recovery keys, unlock tokens,
 * lock PINs) with AES-256-GCM under the instance's 32-byte secrets key.
 *
 * Envelope, version 1 (MDM_SEAL_OVERHEAD = 29 bytes more than the plaintext):
 *
 *     [1 byte version = 1][12-byte random nonce][ciphertext, same length as plaintext][16-byte tag]
 *
 * The GCM additional data is the version byte followed by the caller's aad, so the version is
 * authenticated too. Callers bind a secret to its record through aad (for example
 * "bootstrap:<udid>"), so a sealed value copied onto another record does not unseal.
 *
 * All functions are thread-safe; nonces come from mdm_random_bytes() (core/crypto.h), one
 * wolfCrypt DRBG behind a mutex that is re-seeded after fork(), so a parent and its child
 * never share a nonce stream.
 */
#ifndef MDM_CORE_SEAL_H
#define MDM_CORE_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/common.h"

#define MDM_SEAL_KEY_LEN 32
#define MDM_SEAL_VERSION 1
#define MDM_SEAL_NONCE_LEN 12
#define MDM_SEAL_TAG_LEN 16
#define MDM_SEAL_OVERHEAD (1 + MDM_SEAL_NONCE_LEN + MDM_SEAL_TAG_LEN)

/**
 * Reads the secrets key from path into key. The file must be a regular file of exactly 32
 * bytes that neither group nor others can access (mode & 077 == 0). key is wiped on failure.
 * Returns 0; -EPERM when group/world can access the file (logged); MDM_ECRYPTO when the file
 * is not exactly 32 bytes or not a regular file; another -errno from open/read.
 */
MDM_MUST_CHECK int mdm_seal_key_load(const char *path, uint8_t key[MDM_SEAL_KEY_LEN]);

/**
 * Creates a new secrets key file at path with 32 random bytes and mode exactly 0600 (umask
 * ignored), and copies the key into key when key is not NULL. Never overwrites an existing
 * key: the file is written and fsync'ed under a temporary name, then linked into place.
 * Returns 0, -EEXIST, MDM_ECRYPTO (RNG failure) or another -errno.
 */
MDM_MUST_CHECK int mdm_seal_key_create(const char *path, uint8_t key[MDM_SEAL_KEY_LEN]);

/**
 * Seals len bytes of plain under key, bound to aad (may be NULL when aad_len is 0), and
 * appends the envelope (len + MDM_SEAL_OVERHEAD bytes) to out. Nothing is appended on failure.
 * Returns 0, -ENOMEM, MDM_ETOOBIG (out's limit or len over 4 GiB) or MDM_ECRYPTO.
 */
MDM_MUST_CHECK int mdm_seal(const uint8_t key[MDM_SEAL_KEY_LEN], const void *aad, size_t aad_len,
                            const void *plain, size_t len, mdm_buf_t *out);

/**
 * Opens an envelope made by mdm_seal with the same key and aad and appends the plaintext
 * (len - MDM_SEAL_OVERHEAD bytes) to out. Unauthenticated plaintext never reaches out.
 * Returns 0; MDM_ECRYPTO on a wrong key, wrong aad, altered or truncated envelope, or unknown
 * version; -ENOMEM or MDM_ETOOBIG from out.
 */
MDM_MUST_CHECK int mdm_unseal(const uint8_t key[MDM_SEAL_KEY_LEN], const void *aad,
                              size_t aad_len, const void *sealed, size_t len, mdm_buf_t *out);

#endif
