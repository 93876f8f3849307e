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

/*
 * The frame of a record decoder, the same in every record module:
 *
 *     T *x = rec;
 *     struct mdm_rd r = mdm_rd_start(x, sizeof(*x), val, vlen);
 *     r.err = <parse the key into x>;          (a bad key fails the record like a bad value)
 *     switch (mdm_rd_format(&r, FORMAT_N)) {   (FORMAT_N: the newest format)
 *     case FORMAT_1: <read the fields> break;  (one case per format)
 *     }
 *     return mdm_rd_finish(&r, x, sizeof(*x));
 */

/** Zeroes the record rec[0..size) (fields an older format lacks stay 0) and returns a reader
 * over the value val[0..vlen). */
static inline struct mdm_rd mdm_rd_start(void *rec, size_t size, const void *val, size_t vlen)
{
    memset(rec, 0, size);
    return (struct mdm_rd){.p = val, .left = vlen};
}

/** The value's format byte when this build reads it (1..newest); else 0 with err set: an
 * unknown format, an empty value, or an earlier failure such as a bad key. */
static inline unsigned mdm_rd_format(struct mdm_rd *r, unsigned newest)
{
    unsigned format = mdm_rd_u8(r);
    if (format == 0 || format > newest) {
        r->err = -EBADMSG;
        return 0;
    }
    return format;
}

/** The value must end here (mdm_rd_end); on any failure rec[0..size) is zeroed again, so no
 * half-decoded record escapes. Returns 0 or -EBADMSG. */
static inline int mdm_rd_finish(struct mdm_rd *r, void *rec, size_t size)
{
    int ret = mdm_rd_end(r);
    if (ret != 0)
        memset(rec, 0, size);
    return ret;
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

/* ---- typed listings ------------------------------------------------------------------------- */

/**
 * Decodes the record under key (klen bytes) with value val (vlen bytes) into rec, a struct of
 * the type the decoder is written for; on failure rec is zeroed. Returns 0 or -EBADMSG.
 */
typedef int (*mdm_decode_fn)(const void *key, size_t klen, const void *val, size_t vlen,
                             void *rec);

/** Which records a listing visits, and how it decodes them. */
struct mdm_listing {
    enum mdm_store_cf cf;
    const void *prefix; /* keys that start with prefix[0..plen) (plen 0: every key) */
    size_t plen;
    const void *after;  /* and lie strictly after after[0..alen) (alen 0: from the first) */
    size_t alen;
    size_t key_skip;    /* leading key bytes dec is not given (a prefix it implies) */
    mdm_decode_fn dec;
    const char *what;   /* the record's name in the log */
};

/**
 * Decodes each record l selects, in key order, into rec (scratch for one record of dec's type,
 * valid only during the call) and calls cb(arg, rec); a nonzero return stops the listing. An
 * undecodable record is logged and stops it with -EBADMSG. Synchronous, where the store allows
 * synchronous reads. Returns 0, cb's nonzero value, -EBADMSG, MDM_ESTORE or -ENOMEM.
 */
MDM_MUST_CHECK int mdm_list_records(mdm_store_t *s, const struct mdm_listing *l, void *rec,
                                    int (*cb)(void *arg, const void *rec), void *arg);

/*
 * MDM_LISTING_OF(name, T) defines, in the file that uses it,
 *
 *     static int name(mdm_store_t *s, const struct mdm_listing *l,
 *                     int (*cb)(void *arg, const T *rec), void *arg);
 *
 * that is mdm_list_records over records of type T, with a T on the stack as the scratch.
 *
 * Why a macro: the public listings take a callback typed per record, and calling a function
 * through a pointer of another type is undefined behaviour, even when the types differ only in
 * `const T *` against `const void *`. So cb is never cast: it travels with its arg in a small
 * struct to an adapter that calls it with its own type. The macro writes that struct and the
 * adapter once per T, and the compiler still checks each cb against T.
 */
#define MDM_LISTING_OF(name, T)                                                                \
    struct name##_typed {                                                                      \
        int (*cb)(void *arg, const T *rec);                                                    \
        void *arg;                                                                             \
    };                                                                                         \
                                                                                               \
    static int name##_call(void *arg, const void *rec)                                         \
    {                                                                                          \
        const struct name##_typed *t = arg;                                                    \
        return t->cb(t->arg, rec);                                                             \
    }                                                                                          \
                                                                                               \
    static int name(mdm_store_t *s, const struct mdm_listing *l,                               \
                    int (*cb)(void *arg, const T *rec), void *arg)                             \
    {                                                                                          \
        T rec;                                                                                 \
        struct name##_typed t = {cb, arg};                                                     \
        return mdm_list_records(s, l, &rec, name##_call, &t);                                  \
    }

#endif
