/*
 * storage/audit: audit event records (see audit.h).
 *
 * Writers encode into a small stack buffer (an event is at most ~600 bytes) and append one put
 * to the caller's batch. Readers iterate MDM_CF_AUDIT from the first key at or after since_ms
 * (or after a given id), decode strictly, and hand over the events that pass the query's
 * filter, within its limit and scan bound. Threads: put on any thread that owns the batch;
 * list where synchronous reads are allowed (storage workers, tools, tests).
 */
#include "storage/audit.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "core/crypto.h"
#include "core/log.h"

#define AUDIT_FORMAT_1 1
#define AUDIT_KEY_LEN 16
#define AUDIT_VALUE_MAX (1 + 2 + 5 * (2 + 256))

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void key_to_id(const uint8_t *key, char id[MDM_AUDIT_ID_LEN + 1])
{
    mdm_hex_encode(key, AUDIT_KEY_LEN, id);
}

static int id_to_key(const char *id, uint8_t key[AUDIT_KEY_LEN])
{
    if (strlen(id) != MDM_AUDIT_ID_LEN)
        return -EINVAL;
    for (int i = 0; i < AUDIT_KEY_LEN; i++) {
        int hi = mdm_hex_digit(id[2 * i]), lo = mdm_hex_digit(id[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        key[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* Appends a u16-length-prefixed string; returns the new position. */
static size_t put_str(uint8_t *p, size_t pos, const char *s, size_t field)
{
    size_t len = strnlen(s, field);
    assert(len < field);
    p[pos] = (uint8_t)(len >> 8);
    p[pos + 1] = (uint8_t)len;
    memcpy(p + pos + 2, s, len);
    return pos + 2 + len;
}

static size_t encode(const mdm_audit_event_t *ev, uint8_t *p)
{
    size_t pos = 0;
    p[pos++] = AUDIT_FORMAT_1;
    p[pos++] = (uint8_t)(ev->status >> 8);
    p[pos++] = (uint8_t)ev->status;
    pos = put_str(p, pos, ev->who, sizeof(ev->who));
    pos = put_str(p, pos, ev->action, sizeof(ev->action));
    pos = put_str(p, pos, ev->target, sizeof(ev->target));
    pos = put_str(p, pos, ev->source, sizeof(ev->source));
    pos = put_str(p, pos, ev->detail, sizeof(ev->detail));
    assert(pos <= AUDIT_VALUE_MAX);
    return pos;
}

int mdm_audit_encode(const mdm_audit_event_t *ev, mdm_buf_t *out)
{
    uint8_t v[AUDIT_VALUE_MAX];
    size_t len = encode(ev, v);
    return mdm_buf_append(out, v, len);
}

int mdm_store_put_audit(mdm_batch_t *b, mdm_audit_event_t *ev)
{
    assert(b && ev);
    uint8_t key[AUDIT_KEY_LEN];
    put_be64(key, ev->at_ms);
    int ret = mdm_random_bytes(key + 8, 8);
    if (ret != 0)
        return ret;
    uint8_t v[AUDIT_VALUE_MAX];
    size_t len = encode(ev, v);
    mdm_batch_put(b, MDM_CF_AUDIT, key, sizeof(key), v, len);
    key_to_id(key, ev->id);
    return 0;
}

/* Reads a u16-length-prefixed string into field (NUL-terminated). */
static bool get_str(const uint8_t *p, size_t vlen, size_t *pos, char *field, size_t fieldlen)
{
    if (vlen - *pos < 2)
        return false;
    size_t len = (size_t)p[*pos] << 8 | p[*pos + 1];
    *pos += 2;
    if (len >= fieldlen || vlen - *pos < len || memchr(p + *pos, '\0', len))
        return false;
    memcpy(field, p + *pos, len);
    field[len] = '\0';
    *pos += len;
    return true;
}

int mdm_audit_decode(const void *val, size_t vlen, mdm_audit_event_t *ev)
{
    const uint8_t *p = val;
    size_t pos = 3;
    if (vlen < 3 || p[0] != AUDIT_FORMAT_1)
        return -EBADMSG;
    ev->status = (uint16_t)(p[1] << 8 | p[2]);
    if (!get_str(p, vlen, &pos, ev->who, sizeof(ev->who)) ||
        !get_str(p, vlen, &pos, ev->action, sizeof(ev->action)) ||
        !get_str(p, vlen, &pos, ev->target, sizeof(ev->target)) ||
        !get_str(p, vlen, &pos, ev->source, sizeof(ev->source)) ||
        !get_str(p, vlen, &pos, ev->detail, sizeof(ev->detail)) || pos != vlen)
        return -EBADMSG;
    return 0;
}

static bool str_matches(const char *want, const char *have)
{
    return !want || !want[0] || strcmp(want, have) == 0;
}

static bool action_matches(const char *want, const char *have)
{
    size_t n = want ? strlen(want) : 0;
    if (n && want[n - 1] == '.')
        return strncmp(want, have, n) == 0;
    return str_matches(want, have);
}

bool mdm_audit_matches(const mdm_audit_filter_t *f, const mdm_audit_event_t *ev)
{
    if (f->status == MDM_AUDIT_STATUS_ERROR ? ev->status < 400
                                            : f->status > 0 && ev->status != f->status)
        return false;
    return action_matches(f->action, ev->action) && str_matches(f->target, ev->target) &&
           str_matches(f->who, ev->who);
}

struct list_ctx {
    mdm_audit_query_t *q;
    unsigned matched;
    bool bounded; /* stopped by limit or max_scan (not by cb) */
    int (*cb)(void *arg, const mdm_audit_event_t *ev);
    void *arg;
};

static int on_record(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct list_ctx *lc = arg;
    mdm_audit_query_t *q = lc->q;
    mdm_audit_event_t ev;
    memset(&ev, 0, sizeof(ev));
    if (klen != AUDIT_KEY_LEN || mdm_audit_decode(val, vlen, &ev) != 0) {
        mdm_error("audit", "undecodable audit record (key %zu bytes, value %zu bytes)", klen,
                  vlen);
        return -EBADMSG;
    }
    q->scanned++;
    key_to_id(key, ev.id);
    ev.at_ms = get_be64(key);
    int ret = 0;
    if (ev.at_ms >= q->since_ms && mdm_audit_matches(&q->filter, &ev)) {
        ret = lc->cb(lc->arg, &ev);
        if (ret == 0 && q->limit && ++lc->matched >= q->limit)
            lc->bounded = true;
    }
    if (ret == 0 && q->max_scan && q->scanned >= q->max_scan)
        lc->bounded = true;
    if (ret != 0 || lc->bounded) {
        memcpy(q->next_after, ev.id, sizeof(q->next_after));
        return ret ? ret : 1; /* 1 from a bound is mapped to 0 below */
    }
    return 0;
}

int mdm_store_query_audit(mdm_store_t *s, mdm_audit_query_t *q,
                          int (*cb)(void *arg, const mdm_audit_event_t *ev), void *arg)
{
    uint8_t after[AUDIT_KEY_LEN];
    size_t alen = 0;
    q->scanned = 0;
    q->next_after[0] = '\0';
    if (q->after_id && q->after_id[0]) {
        if (id_to_key(q->after_id, after) != 0)
            return -EINVAL;
        alen = AUDIT_KEY_LEN;
    } else if (q->since_ms > 0) {
        /* Every 16-byte key starting with be64(since_ms) sorts after these 8 bytes. */
        put_be64(after, q->since_ms);
        alen = 8;
    }
    struct list_ctx lc = {.q = q, .cb = cb, .arg = arg};
    int ret = mdm_store_iter_after(s, MDM_CF_AUDIT, NULL, 0, alen ? after : NULL, alen,
                                   on_record, &lc);
    return ret == 1 && lc.bounded ? 0 : ret;
}

int mdm_store_list_audit(mdm_store_t *s, uint64_t since_ms, const char *after_id,
                         unsigned limit, int (*cb)(void *arg, const mdm_audit_event_t *ev),
                         void *arg)
{
    mdm_audit_query_t q = {.since_ms = since_ms, .after_id = after_id, .limit = limit};
    return mdm_store_query_audit(s, &q, cb, arg);
}
