/*
 * storage/codec: the out-of-line part of the shared record encoding (see codec.h): strings,
 * blobs, the two-pass put, key splitting, the log line for undecodable records and the typed
 * listings.
 * Threads: any (no state).
 */
#include "storage/codec.h"

#include <stdio.h>

#include "core/log.h"

/* Key bytes shown by mdm_log_bad_record (longer keys are cut). */
#define SHOWN_KEY_MAX 256

void mdm_wr_str(struct mdm_wr *w, const char *s, size_t size)
{
    size_t len = strnlen(s, size);
    assert(len < size); /* terminated inside its field */
    mdm_wr_be(w, len, 2);
    mdm_wr_bytes(w, s, len);
}

void mdm_wr_blob32(struct mdm_wr *w, const uint8_t *p, size_t len)
{
    assert(p || len == 0);
    assert(len <= UINT32_MAX);
    mdm_wr_be(w, len, 4);
    mdm_wr_bytes(w, p, len);
}

void mdm_put_encoded(mdm_batch_t *b, enum mdm_store_cf cf, const void *key, size_t klen,
                     mdm_encode_fn enc, const void *rec)
{
    struct mdm_wr w = {0};
    enc(&w, rec);
    size_t n = w.n;
    uint8_t *p = mdm_batch_put_space(b, cf, key, klen, n);
    if (!p) /* the batch remembers the failure */
        return;
    w = (struct mdm_wr){.p = p};
    enc(&w, rec);
    assert(w.n == n);
}

void mdm_rd_str(struct mdm_rd *r, char *dst, size_t size)
{
    size_t len = (size_t)mdm_rd_be(r, 2);
    const uint8_t *p = mdm_rd_take(r, len);
    if (p && (len >= size || memchr(p, 0, len))) {
        r->err = -EBADMSG;
        p = NULL;
    }
    if (!p) {
        dst[0] = 0;
        return;
    }
    memcpy(dst, p, len);
    dst[len] = 0;
}

const uint8_t *mdm_rd_blob(struct mdm_rd *r, unsigned lenbytes, size_t *len)
{
    size_t n = (size_t)mdm_rd_be(r, lenbytes);
    const uint8_t *p = mdm_rd_take(r, n);
    *len = p ? n : 0;
    return p;
}

int mdm_key_take(const uint8_t **p, size_t *left, char *dst, size_t size, size_t min, bool last)
{
    const uint8_t *nul = memchr(*p, 0, *left);
    if (last == (nul != NULL))
        return -EBADMSG;
    size_t n = last ? *left : (size_t)(nul - *p);
    if (n < min || n >= size)
        return -EBADMSG;
    memcpy(dst, *p, n);
    dst[n] = 0;
    n += last ? 0 : 1;
    *p += n;
    *left -= n;
    return 0;
}

void mdm_log_bad_record(const char *what, const void *key, size_t klen)
{
    char shown[4 * SHOWN_KEY_MAX + 8];
    size_t n = 0;
    const uint8_t *p = key;
    for (size_t i = 0; i < klen && n + 5 < sizeof(shown); i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            shown[n++] = (char)p[i];
        else
            n += (size_t)snprintf(shown + n, sizeof(shown) - n, "\\x%02x", p[i]);
    }
    shown[n] = 0;
    mdm_warn("store", "undecodable %s record \"%s\" (%zu key bytes)", what, shown, klen);
}

struct listing {
    const struct mdm_listing *l;
    void *rec;
    int (*cb)(void *arg, const void *rec);
    void *arg;
};

static int on_listed_record(void *arg, const void *key, size_t klen, const void *val,
                            size_t vlen)
{
    struct listing *ls = arg;
    const struct mdm_listing *l = ls->l;
    assert(klen >= l->key_skip); /* the iteration is bounded by a prefix at least that long */
    int ret = l->dec((const uint8_t *)key + l->key_skip, klen - l->key_skip, val, vlen, ls->rec);
    if (ret != 0) {
        mdm_log_bad_record(l->what, key, klen);
        return ret;
    }
    return ls->cb(ls->arg, ls->rec);
}

int mdm_list_records(mdm_store_t *s, const struct mdm_listing *l, void *rec,
                     int (*cb)(void *arg, const void *rec), void *arg)
{
    assert(s && l && l->dec && l->what && rec && cb);
    assert(l->key_skip <= l->plen);
    struct listing ls = {l, rec, cb, arg};
    return mdm_store_iter_after(s, l->cf, l->prefix, l->plen, l->after, l->alen,
                                on_listed_record, &ls);
}
