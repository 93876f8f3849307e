/*
 * Small cryptographic primitives for the layers above core/, so that they never touch
 * wolfCrypt types: random bytes and SHA-256.
 *
 * Random bytes come from one wolfCrypt Hash-DRBG for the whole process, behind a mutex, and
 * re-seeded in a forked child (a copied DRBG state would repeat the parent's output; for
 * core/seal that would repeat GCM nonces). Callers are rare (key and nonce generation), so
 * the lock is never contended in practice.
 *
 * Threads: any.
 */
#ifndef MDM_CORE_CRYPTO_H
#define MDM_CORE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

#define MDM_SHA256_LEN 32
#define MDM_SHA256_HEX_LEN (2 * MDM_SHA256_LEN) /* without the NUL */

/**
 * Fills buf with len cryptographically secure random bytes (fork-safe, see above).
 * Returns 0 or MDM_ECRYPTO (the DRBG cannot be seeded or fails; logged).
 */
MDM_MUST_CHECK int mdm_random_bytes(void *buf, size_t len);

#define MDM_UUID_LEN 36 /* "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX" */

/** A random RFC 4122 version-4 UUID in uppercase hex (as Apple's profiles and commands use
 * them) into out. Returns 0 or MDM_ECRYPTO. */
MDM_MUST_CHECK int mdm_uuid_v4(char out[MDM_UUID_LEN + 1]);

/** SHA-256 of len bytes of data into out. Returns 0 or MDM_ECRYPTO. */
MDM_MUST_CHECK int mdm_sha256(const void *data, size_t len, uint8_t out[MDM_SHA256_LEN]);

/**
 * SHA-256 of len bytes of data as 64 lowercase hex digits and a NUL in hex.
 * Returns 0 or MDM_ECRYPTO (hex is then the empty string).
 */
MDM_MUST_CHECK int mdm_sha256_hex(const void *data, size_t len,
                                  char hex[MDM_SHA256_HEX_LEN + 1]);

#endif
