/*
 * storage/codec: the binary record encoding shared by the typed record modules of storage/
 * (mdm.c, enroll.c). Internal to storage/: nothing outside it includes this header.
 *
 * Encoding: integers big-endian; str = u16 length + bytes (no NUL, shorter than the struct's
 * char[] field); blob16 / blob32 = u16 / u32 length + bytes. Every record starts with a
 * format byte chosen by its module.
 *
 * Writers run an encoder twice through mdm_put_encoded(): once with a counting writer (p NULL)
 * to size the value, once writing straight into the batch, so a put allocates nothing of its
 * own. Readers are strict: every read is bounds-checked, the first failure sticks (-EBADMSG)
 * and later reads return zeros, and mdm_rd_end() refuses trailing bytes.
 *
 * The per-field helpers are static inline: encoders and decoders call them for every field,
 * on the check-in path too.
 */
#ifndef MDM_STORAGE_CODEC_H
#define MDM_STORAGE_CODEC_H

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "storage/store.h"

/* ---- writer --------------------------------------------------------------------------------- */

/** Writes at p + n; with p NULL only counts n. */
struct mdm_wr {
    uint8_t *p;
    size_t n;
};

static inline void mdm_wr_bytes(struct mdm_wr *w, const void *src, size_t len)
{
    if (w->p && len)
        memcpy(w->p + w->n, src, len);
    w->n += len;
}

/** The low nbytes (1..8) of v, big-endian. */
static inline void mdm_wr_be(struct mdm_wr *w, uint64_t v, unsigned nbytes)
{
    uint8_t be[8];
    for (unsigned i = 0; i < nbytes; i++)
        be[i] = (uint8_t)(v >> (8 * (nbytes - 1 - i)));
    mdm_wr_bytes(w, be, nbytes);
}

static inline void mdm_wr_u8(struct mdm_wr *w, unsigned v)
{
    assert(v <= UINT8_MAX);
    mdm_wr_be(w, v, 1);
}

/** A str from a NUL-terminated char[size] field (asserted to be terminated inside it). */
void mdm_wr_str(struct mdm_wr *w, const char *s, size_t size);

/** A blob32: u32 length + bytes (p may be NULL when len is 0). */
void mdm_wr_blob32(struct mdm_wr *w, const uint8_t *p, size_t len);

#define MDM_WR_STR(w, field) mdm_wr_str((w), (field), sizeof(field))

typedef void (*mdm_encode_fn)(struct mdm_wr *w, const void *rec);

/**
 * Encodes rec with enc straight into a put of (key, klen) in b: one pass to size it, one to
 * write it. An allocation failure is remembered by the batch (reported by its commit).
 */
void mdm_put_encoded(mdm_batch_t *b, enum mdm_store_cf cf, const void *key, size_t klen,
                     mdm_encode_fn enc, const void *rec);

/* ---- reader --------------------------------------------------------------------------------- */

/** Reads from p, left bytes remain; the first failure sticks in err and later reads return 0. */
struct mdm_rd {
    const uint8_t *p;
    size_t left;
    int err;
};

/** The next n bytes (borrowed), or NULL with err set when fewer remain. */
static inline const uint8_t *mdm_rd_take(struct mdm_rd *r, size_t n)
{
    if (r->err || r->left < n) {
        r->err = -EBADMSG;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

/** A big-endian integer of nbytes (1..8); 0 after a failure. */
static inline uint64_t mdm_rd_be(struct mdm_rd *r, unsigned nbytes)
{
    const uint8_t *p = mdm_rd_take(r, nbytes);
    uint64_t v = 0;
    for (unsigned i = 0; p && i < nbytes; i++)
        v = v << 8 | p[i];
    return v;
}

static inline uint8_t mdm_rd_u8(struct mdm_rd *r)
{
    return (uint8_t)mdm_rd_be(r, 1);
}

/** A str into a char[size] field: at most size - 1 bytes, no NUL inside; "" on failure. */
void mdm_rd_str(struct mdm_rd *r, char *dst, size_t size);

/** A blob with a u16 or u32 length (lenbytes 2 or 4); its bytes (borrowed) or NULL, *len 0. */
const uint8_t *mdm_rd_blob(struct mdm_rd *r, unsigned lenbytes, size_t *len);

/** The value must end exactly here: returns 0 or -EBADMSG. */
static inline int mdm_rd_end(struct mdm_rd *r)
{
    if (r->err == 0 && r->left != 0)
        r->err = -EBADMSG;
    return r->err;
}

#define MDM_RD_STR(r, field) mdm_rd_str((r), (field), sizeof(field))

/* ---- keys ----------------------------------------------------------------------------------- */

/**
 * Splits a key part ending at the next 0x00 (or, when last, at the end of the key) into dst,
 * which holds size - 1 bytes, needing at least min; advances *p and *left past it (and its
 * separator). A last part must contain no 0x00. Returns 0 or -EBADMSG.
 */
int mdm_key_take(const uint8_t **p, size_t *left, char *dst, size_t size, size_t min, bool last);

/** Logs an undecodable record of kind what with its key (printable bytes as they are, others
 * as \xNN; long keys are cut). */
void mdm_log_bad_record(const char *what, const void *key, size_t klen);

#endif
