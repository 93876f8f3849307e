/*
 * Shared basics of core/: error codes, container_of, clocks, hashing.
 *
 * Fallible functions return 0 or a negative code: -errno for system errors, or one of the
 * project codes below (all under -4096 so they never collide with errno values).
 */
#ifndef MDM_CORE_COMMON_H
#define MDM_CORE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define MDM_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define MDM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MDM_MUST_CHECK __attribute__((warn_unused_result))

enum mdm_error {
    MDM_ECLOSED = -5000,  /* peer closed the connection */
    MDM_ETLS = -5001,     /* TLS protocol or certificate failure */
    MDM_EHTTP = -5002,    /* malformed HTTP */
    MDM_ETOOBIG = -5003,  /* a configured size limit was exceeded */
    MDM_ECONFIG = -5004,  /* invalid configuration */
    MDM_ESTORE = -5005,   /* storage engine failure */
    MDM_ECRYPTO = -5006,  /* cryptographic failure (bad tag, bad key) */
    MDM_ENOTFOUND = -5007,/* no such record */
    MDM_EFULL = -5008,    /* a bounded queue or mailbox is full */
    MDM_ECERT = -5009,    /* certificate parse or rule failure */
};

/** Describes any code returned by mdmd functions (negative errno or MDM_E*). */
const char *mdm_strerror(int code);

/** Monotonic clock in milliseconds. */
uint64_t mdm_now_ms(void);

/** Wall clock in milliseconds since the Unix epoch. */
uint64_t mdm_wall_ms(void);

/** Formats a one-line reason into err (when err is non-NULL and errlen > 0). */
void mdm_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/** Zeroes len bytes at p (a secret) and frees it; NULL is ignored. */
void mdm_free_wiped(void *p, size_t len);

/** Writes n bytes as 2n lowercase hex digits and a NUL into out (2n + 1 bytes). */
void mdm_hex_encode(const uint8_t *in, size_t n, char *out);

struct sockaddr;
/** Formats an AF_INET or AF_INET6 address as "ip:port" or "[ip6]:port" ("" otherwise). */
void mdm_sockaddr_format(const struct sockaddr *sa, char *out, size_t outlen);

/** Value of a hexadecimal digit (either case), or -1. */
int mdm_hex_digit(int c);

/** 64-bit FNV-1a hash; stable across runs and machines (used for shard placement). */
uint64_t mdm_hash64(const void *data, size_t len);

#endif
