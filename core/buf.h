/*
 * mdm_buf: a growable byte buffer with a read offset and a hard capacity limit.
 *
 * Bytes live in data[off .. off+len). Appending past max returns MDM_ETOOBIG so a peer can
 * never make a buffer grow without bound. The owner frees with mdm_buf_dispose().
 */
#ifndef MDM_CORE_BUF_H
#define MDM_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

typedef struct mdm_buf {
    uint8_t *data;
    size_t off; /* first unread byte */
    size_t len; /* unread bytes */
    size_t cap; /* allocated bytes */
    size_t max; /* hard limit on len (0: unlimited) */
} mdm_buf_t;

/** Initialises an empty buffer that may hold at most max bytes (0: no limit). */
void mdm_buf_init(mdm_buf_t *b, size_t max);
void mdm_buf_dispose(mdm_buf_t *b);

/** Ensures room for n more bytes at the tail. Returns 0, -ENOMEM or MDM_ETOOBIG. */
MDM_MUST_CHECK int mdm_buf_reserve(mdm_buf_t *b, size_t n);

/** Appends n bytes. Returns 0, -ENOMEM or MDM_ETOOBIG. */
MDM_MUST_CHECK int mdm_buf_append(mdm_buf_t *b, const void *p, size_t n);

/** Appends a NUL-free string. */
MDM_MUST_CHECK int mdm_buf_append_str(mdm_buf_t *b, const char *s);

/** Appends printf-formatted text. */
MDM_MUST_CHECK int mdm_buf_printf(mdm_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** Pointer to the first unread byte. */
static inline uint8_t *mdm_buf_head(const mdm_buf_t *b) { return b->data + b->off; }

/** Pointer to the free tail (valid after mdm_buf_reserve). */
static inline uint8_t *mdm_buf_tail(const mdm_buf_t *b) { return b->data + b->off + b->len; }

/** Marks n bytes written at the tail (after writing into mdm_buf_tail). */
static inline void mdm_buf_commit(mdm_buf_t *b, size_t n) { b->len += n; }

/** Drops n bytes from the head. */
void mdm_buf_consume(mdm_buf_t *b, size_t n);

/** Drops everything, keeps the allocation. */
static inline void mdm_buf_reset(mdm_buf_t *b) { b->off = b->len = 0; }

#endif
