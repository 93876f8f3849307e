/*
 * storage/mdm: key layouts and record codecs of the MDM domain (see mdm.h).
 *
 * Encoding (helpers shared with the other record modules in storage/codec.h), format 1 of
 * every record: integers big-endian; str = u16 length + bytes (no NUL, shorter than the
 * struct's field); blob16 / blob32 = u16 / u32 length + bytes. Key fields are not repeated in
 * values.
 *
 *   device:  u8 format, u16 vshard, u64 version, u32 enrollment, u8 state, u8 flags
 *            (bit 0 push_token_invalid, bit 1 awaiting_configuration), str serial, str model,
 *            str model_name, str product_name, str os_version, str build_version,
 *            str device_name, str topic, blob16 push_token, str push_magic, str cert_sha256,
 *            u64 authenticated_ms, u64 enrolled_ms, u64 last_seen_ms, u64 checked_out_ms;
 *            format 2 adds: str enroll_id, u64 last_push_ms, u16 last_push_status,
 *            str last_push_reason
 *   user channel (key <udid> 0x00 <user id>): u8 format, u8 flags (bit 0 push_token_invalid),
 *            str short_name, str long_name, blob16 push_token, str push_magic, u64 updated_ms,
 *            u64 last_push_ms, u16 last_push_status, str last_push_reason
 *   command: u8 format, str request_type, u64 created_ms, str created_by, blob32 plist;
 *            format 2 adds u8 flags (MDM_COMMAND_SEALED) after created_by
 *   queue:   u8 format, u32 enrollment, u8 status, u64 updated_ms, u64 expires_ms  (22 bytes)
 *   result:  u8 format, str channel, u8 status, u8 n_events, n_events x (u8 status,
 *            u64 at_ms), blob32 response
 *   secret:  the caller's sealed bytes as they are (the core/seal envelope has its own version)
 *
 * Decoding is strict: every read is bounds-checked, unknown formats, enum values, flag bits and
 * trailing bytes are errors (-EBADMSG), and nothing is read past the value. Decoders follow the
 * frame in storage/codec.h (mdm_rd_start, mdm_rd_format, mdm_rd_finish), where a bad key fails
 * the record as a bad value does. A new format gets a new format byte and a decoder case next to
 * the old ones; writers always use the newest.
 *
 * Writers encode in two passes over the same function: one counts the bytes, the second writes
 * them straight into the batch (mdm_batch_put_space), so a put allocates nothing of its own.
 */
#include "storage/mdm.h"
#include "storage/policy.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "storage/codec.h"

#define FORMAT_1 1
#define FORMAT_2 2

#define DEV_FLAG_PUSH_TOKEN_INVALID 0x01u
#define DEV_FLAG_AWAITING_CONFIGURATION 0x02u
#define DEV_FLAG_ADE 0x04u
#define DEV_FLAG_POLICIES_SUSPENDED 0x08u
#define DEV_FLAG_FV_ESCROWED 0x10u
#define DEV_FLAGS_KNOWN (DEV_FLAG_PUSH_TOKEN_INVALID | DEV_FLAG_AWAITING_CONFIGURATION | \
                         DEV_FLAG_ADE | DEV_FLAG_POLICIES_SUSPENDED | DEV_FLAG_FV_ESCROWED)
#define FORMAT_3 3

/* Longest key: the queue's. */
#define KEY_MAX (MDM_UDID_MAX + 1 + MDM_CHANNEL_MAX + 1 + 8 + MDM_UUID_MAX)

_Static_assert(MDM_RESULT_EVENTS_MAX >= 2 && MDM_RESULT_EVENTS_MAX <= 255,
               "n_events is a u8 and overflow keeps the first event");
_Static_assert(sizeof(((mdm_device_t *)0)->push_token) <= UINT16_MAX, "push token is a blob16");
_Static_assert(MDM_VSHARDS <= UINT16_MAX + 1, "vshard is a u16");

uint16_t mdm_vshard(const char *udid)
{
    assert(udid);
    return (uint16_t)(mdm_hash64(udid, strlen(udid)) % MDM_VSHARDS);
}

const char *mdm_command_status_name(enum mdm_command_status s)
{
    switch (s) {
    case MDM_CMD_QUEUED: return "queued";
    case MDM_CMD_SENT: return "sent";
    case MDM_CMD_ACKNOWLEDGED: return "acknowledged";
    case MDM_CMD_ERROR: return "error";
    case MDM_CMD_NOTNOW: return "not_now";
    case MDM_CMD_CANCELLED: return "cancelled";
    case MDM_CMD_EXPIRED: return "expired";
    case MDM_CMD_FORMAT_ERROR: return "format_error";
    }
    return "unknown";
}

const char *mdm_device_state_name(enum mdm_device_state s)
{
    switch (s) {
    case MDM_DEVICE_NEW: return "new";
    case MDM_DEVICE_AUTHENTICATED: return "authenticated";
    case MDM_DEVICE_ENROLLED: return "enrolled";
    case MDM_DEVICE_CHECKED_OUT: return "checked_out";
    case MDM_DEVICE_REVOKED: return "revoked";
    }
    return "unknown";
}

static bool status_valid(unsigned s)
{
    return s <= MDM_CMD_FORMAT_ERROR;
}

static bool state_valid(unsigned s)
{
    return s <= MDM_DEVICE_REVOKED;
}

/* ---- identifiers and keys ------------------------------------------------------------------ */

/* Length of id when it has min..max bytes, else -1. Reads at most max + 1 bytes. */
static int id_len(const char *id, size_t min, size_t max)
{
    if (!id)
        return -1;
    size_t n = strnlen(id, max + 1);
    return n >= min && n <= max ? (int)n : -1;
}

static bool udid_ok(const char *udid)
{
    return id_len(udid, 1, MDM_UDID_MAX) >= 0;
}

static bool uuid_ok(const char *uuid)
{
    return id_len(uuid, 1, MDM_UUID_MAX) >= 0;
}

static bool channel_ok(const char *channel)
{
    return id_len(channel, 0, MDM_CHANNEL_MAX) >= 0;
}

static bool secret_name_ok(const char *name)
{
    return id_len(name, 1, MDM_SECRET_NAME_MAX) >= 0;
}

struct key {
    uint8_t b[KEY_MAX];
    size_t n;
};

static void key_add(struct key *k, const void *p, size_t n)
{
    assert(k->n + n <= sizeof(k->b));
    memcpy(k->b + k->n, p, n);
    k->n += n;
}

/* A string and, when sep, the 0x00 separator after it. The length was checked by the caller. */
static void key_str(struct key *k, const char *s, bool sep)
{
    key_add(k, s, strlen(s) + (sep ? 1 : 0));
}

static void key_be64(struct key *k, uint64_t v)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)(v >> (56 - 8 * i));
    key_add(k, be, sizeof(be));
}

/* <udid> 0x00 <name>: history (name = uuid), secrets (name = secret name), prefixes (""). */
static void key_pair(struct key *k, const char *udid, const char *name)
{
    k->n = 0;
    key_str(k, udid, true);
    key_str(k, name, false);
}

static void key_queue(struct key *k, const mdm_queue_entry_t *e)
{
    k->n = 0;
    key_str(k, e->udid, true);
    key_str(k, e->channel, true);
    key_be64(k, e->enqueued_ms);
    key_str(k, e->uuid, false);
}

/* A key of one identifier (udid or uuid) into a char[size] field. */
static int key_parse_id(const void *key, size_t klen, char *id, size_t size)
{
    const uint8_t *p = key;
    return mdm_key_take(&p, &klen, id, size, 1, true);
}

static int key_parse_pair(const void *key, size_t klen, char *udid, char *name, size_t name_size)
{
    const uint8_t *p = key;
    int ret = mdm_key_take(&p, &klen, udid, MDM_UDID_MAX + 1, 1, false);
    if (ret == 0)
        ret = mdm_key_take(&p, &klen, name, name_size, 1, true);
    return ret;
}

static int key_parse_queue(const void *key, size_t klen, mdm_queue_entry_t *e)
{
    const uint8_t *p = key;
    int ret = mdm_key_take(&p, &klen, e->udid, sizeof(e->udid), 1, false);
    if (ret == 0)
        ret = mdm_key_take(&p, &klen, e->channel, sizeof(e->channel), 0, false);
    if (ret != 0)
        return ret;
    if (klen < 8)
        return -EBADMSG;
    e->enqueued_ms = 0;
    for (int i = 0; i < 8; i++)
        e->enqueued_ms = e->enqueued_ms << 8 | p[i];
    p += 8;
    klen -= 8;
    return mdm_key_take(&p, &klen, e->uuid, sizeof(e->uuid), 1, true);
}

/* A blob16 push token into dst[0..size) and *len (left 0 on failure); longer is -EBADMSG. */
static void rd_push_token(struct mdm_rd *r, uint8_t *dst, size_t size, uint16_t *len)
{
    size_t n;
    const uint8_t *tok = mdm_rd_blob(r, 2, &n);
    if (n > size) {
        r->err = -EBADMSG;
    } else if (tok) {
        memcpy(dst, tok, n);
        *len = (uint16_t)n;
    }
}

/* Replaces the borrowed bytes *p (len of them; NULL when none) by a copy the caller frees. */
static int own_bytes(uint8_t **p, size_t len)
{
    if (!*p)
        return 0;
    uint8_t *copy = malloc(len);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, *p, len);
    *p = copy;
    return 0;
}

/* ---- devices -------------------------------------------------------------------------------- */

static void enc_device(struct mdm_wr *w, const void *rec)
{
    const mdm_device_t *d = rec;
    mdm_wr_u8(w, FORMAT_3);
    mdm_wr_be(w, d->vshard, 2);
    mdm_wr_be(w, d->version, 8);
    mdm_wr_be(w, d->enrollment, 4);
    mdm_wr_u8(w, d->state);
    mdm_wr_u8(w, (d->push_token_invalid ? DEV_FLAG_PUSH_TOKEN_INVALID : 0) |
                 (d->awaiting_configuration ? DEV_FLAG_AWAITING_CONFIGURATION : 0) |
                 (d->ade ? DEV_FLAG_ADE : 0) |
                 (d->policies_suspended ? DEV_FLAG_POLICIES_SUSPENDED : 0) |
                 (d->fv_key_escrowed ? DEV_FLAG_FV_ESCROWED : 0));
    MDM_WR_STR(w, d->serial);
    MDM_WR_STR(w, d->model);
    MDM_WR_STR(w, d->model_name);
    MDM_WR_STR(w, d->product_name);
    MDM_WR_STR(w, d->os_version);
    MDM_WR_STR(w, d->build_version);
    MDM_WR_STR(w, d->device_name);
    MDM_WR_STR(w, d->topic);
    mdm_wr_be(w, d->push_token_len, 2);
    mdm_wr_bytes(w, d->push_token, d->push_token_len);
    MDM_WR_STR(w, d->push_magic);
    MDM_WR_STR(w, d->cert_sha256);
    mdm_wr_be(w, d->authenticated_ms, 8);
    mdm_wr_be(w, d->enrolled_ms, 8);
    mdm_wr_be(w, d->last_seen_ms, 8);
    mdm_wr_be(w, d->checked_out_ms, 8);
    MDM_WR_STR(w, d->enroll_id);
    mdm_wr_be(w, d->last_push_ms, 8);
    mdm_wr_be(w, d->last_push_status, 2);
    MDM_WR_STR(w, d->last_push_reason);
    mdm_wr_be(w, d->revoked_ms, 8);
    MDM_WR_STR(w, d->revoked_cert);
}

/* Decodes a device record (an mdm_device_t); on failure it is zeroed. */
static int dec_device(const void *key, size_t klen, const void *val, size_t vlen, void *rec)
{
    mdm_device_t *d = rec;
    struct mdm_rd r = mdm_rd_start(d, sizeof(*d), val, vlen);
    r.err = key_parse_id(key, klen, d->udid, sizeof(d->udid));
    unsigned format = mdm_rd_format(&r, FORMAT_3);
    switch (format) {
    case FORMAT_1:
    case FORMAT_2:
    case FORMAT_3: {
        d->vshard = (uint16_t)mdm_rd_be(&r, 2);
        d->version = mdm_rd_be(&r, 8);
        d->enrollment = (uint32_t)mdm_rd_be(&r, 4);
        d->state = mdm_rd_u8(&r);
        unsigned flags = mdm_rd_u8(&r);
        if (d->vshard >= MDM_VSHARDS || !state_valid(d->state) || (flags & ~DEV_FLAGS_KNOWN))
            r.err = -EBADMSG;
        d->push_token_invalid = flags & DEV_FLAG_PUSH_TOKEN_INVALID;
        d->awaiting_configuration = flags & DEV_FLAG_AWAITING_CONFIGURATION;
        d->ade = flags & DEV_FLAG_ADE;
        d->policies_suspended = flags & DEV_FLAG_POLICIES_SUSPENDED;
        d->fv_key_escrowed = flags & DEV_FLAG_FV_ESCROWED;
        MDM_RD_STR(&r, d->serial);
        MDM_RD_STR(&r, d->model);
        MDM_RD_STR(&r, d->model_name);
        MDM_RD_STR(&r, d->product_name);
        MDM_RD_STR(&r, d->os_version);
        MDM_RD_STR(&r, d->build_version);
        MDM_RD_STR(&r, d->device_name);
        MDM_RD_STR(&r, d->topic);
        rd_push_token(&r, d->push_token, sizeof(d->push_token), &d->push_token_len);
        MDM_RD_STR(&r, d->push_magic);
        MDM_RD_STR(&r, d->cert_sha256);
        d->authenticated_ms = mdm_rd_be(&r, 8);
        d->enrolled_ms = mdm_rd_be(&r, 8);
        d->last_seen_ms = mdm_rd_be(&r, 8);
        d->checked_out_ms = mdm_rd_be(&r, 8);
        if (format >= FORMAT_2) {
            MDM_RD_STR(&r, d->enroll_id);
            d->last_push_ms = mdm_rd_be(&r, 8);
            d->last_push_status = (uint16_t)mdm_rd_be(&r, 2);
            MDM_RD_STR(&r, d->last_push_reason);
        }
        if (format >= FORMAT_3) {
            d->revoked_ms = mdm_rd_be(&r, 8);
            MDM_RD_STR(&r, d->revoked_cert);
        }
        break;
    }
    }
    return mdm_rd_finish(&r, d, sizeof(*d));
}

void mdm_store_put_device(mdm_batch_t *b, const mdm_device_t *d)
{
    assert(b && d);
    assert(udid_ok(d->udid));
    assert(d->vshard == mdm_vshard(d->udid));
    assert(state_valid(d->state));
    assert(d->push_token_len <= sizeof(d->push_token));
    struct key k = {0};
    key_str(&k, d->udid, false);
    mdm_put_encoded(b, MDM_CF_DEVICES, k.b, k.n, enc_device, d);
}

void mdm_store_delete_device(mdm_batch_t *b, const char *udid)
{
    assert(b && udid_ok(udid));
    mdm_batch_delete(b, MDM_CF_DEVICES, udid, strlen(udid));
}

struct view_device {
    const char *udid;
    mdm_device_t *out;
};

static int view_device(void *arg, const void *val, size_t vlen)
{
    struct view_device *v = arg;
    return dec_device(v->udid, strlen(v->udid), val, vlen, v->out);
}

int mdm_store_get_device(mdm_store_t *s, const char *udid, mdm_device_t *out)
{
    assert(s && out);
    memset(out, 0, sizeof(*out));
    if (!udid_ok(udid))
        return -EINVAL;
    struct view_device v = {udid, out};
    int ret = mdm_store_get_view(s, MDM_CF_DEVICES, udid, strlen(udid), view_device, &v);
    if (ret != 0)
        memset(out, 0, sizeof(*out));
    return ret;
}

/* ---- commands ------------------------------------------------------------------------------- */

static void enc_command(struct mdm_wr *w, const void *rec)
{
    const mdm_command_t *c = rec;
    mdm_wr_u8(w, FORMAT_2);
    MDM_WR_STR(w, c->request_type);
    mdm_wr_be(w, c->created_ms, 8);
    MDM_WR_STR(w, c->created_by);
    mdm_wr_u8(w, c->flags);
    mdm_wr_blob32(w, c->plist, c->plist_len);
}

/* Decodes an mdm_command_t with its plist borrowed from val; on failure it is zeroed. */
static int dec_command(const void *key, size_t klen, const void *val, size_t vlen, void *rec)
{
    mdm_command_t *c = rec;
    struct mdm_rd r = mdm_rd_start(c, sizeof(*c), val, vlen);
    r.err = key_parse_id(key, klen, c->uuid, sizeof(c->uuid));
    unsigned format = mdm_rd_format(&r, FORMAT_2);
    switch (format) {
    case FORMAT_1:
    case FORMAT_2: {
        MDM_RD_STR(&r, c->request_type);
        c->created_ms = mdm_rd_be(&r, 8);
        MDM_RD_STR(&r, c->created_by);
        if (format == FORMAT_2) {
            c->flags = (uint8_t)mdm_rd_be(&r, 1);
            if (c->flags & ~MDM_COMMAND_SEALED)
                r.err = -EBADMSG;
        }
        const uint8_t *plist = mdm_rd_blob(&r, 4, &c->plist_len);
        c->plist = c->plist_len ? (uint8_t *)(uintptr_t)plist : NULL;
        break;
    }
    }
    return mdm_rd_finish(&r, c, sizeof(*c));
}

void mdm_store_put_command(mdm_batch_t *b, const mdm_command_t *c)
{
    assert(b && c);
    assert(uuid_ok(c->uuid));
    struct key k = {0};
    key_str(&k, c->uuid, false);
    mdm_put_encoded(b, MDM_CF_COMMANDS, k.b, k.n, enc_command, c);
}

struct view_command {
    const char *uuid;
    mdm_command_t *out;
};

static int view_command(void *arg, const void *val, size_t vlen)
{
    struct view_command *v = arg;
    int ret = dec_command(v->uuid, strlen(v->uuid), val, vlen, v->out);
    return ret != 0 ? ret : own_bytes(&v->out->plist, v->out->plist_len);
}

int mdm_store_get_command(mdm_store_t *s, const char *uuid, mdm_command_t *out)
{
    assert(s && out);
    memset(out, 0, sizeof(*out));
    if (!uuid_ok(uuid))
        return -EINVAL;
    struct view_command v = {uuid, out};
    int ret = mdm_store_get_view(s, MDM_CF_COMMANDS, uuid, strlen(uuid), view_command, &v);
    if (ret != 0) /* a failed view leaves no copy behind: out is zeroed or still borrowed */
        memset(out, 0, sizeof(*out));
    return ret;
}

void mdm_command_dispose(mdm_command_t *c)
{
    if (!c)
        return;
    free(c->plist);
    memset(c, 0, sizeof(*c));
}

/* ---- queue entries -------------------------------------------------------------------------- */

static void enc_queue(struct mdm_wr *w, const void *rec)
{
    const mdm_queue_entry_t *e = rec;
    mdm_wr_u8(w, FORMAT_1);
    mdm_wr_be(w, e->enrollment, 4);
    mdm_wr_u8(w, e->status);
    mdm_wr_be(w, e->updated_ms, 8);
    mdm_wr_be(w, e->expires_ms, 8);
}

static int dec_queue(const void *key, size_t klen, const void *val, size_t vlen, void *rec)
{
    mdm_queue_entry_t *e = rec;
    struct mdm_rd r = mdm_rd_start(e, sizeof(*e), val, vlen);
    r.err = key_parse_queue(key, klen, e);
    switch (mdm_rd_format(&r, FORMAT_1)) {
    case FORMAT_1:
        e->enrollment = (uint32_t)mdm_rd_be(&r, 4);
        e->status = mdm_rd_u8(&r);
        e->updated_ms = mdm_rd_be(&r, 8);
        e->expires_ms = mdm_rd_be(&r, 8);
        if (!status_valid(e->status))
            r.err = -EBADMSG;
        break;
    }
    return mdm_rd_finish(&r, e, sizeof(*e));
}

static void assert_queue_key(const mdm_queue_entry_t *e)
{
    assert(e);
    assert(udid_ok(e->udid) && channel_ok(e->channel) && uuid_ok(e->uuid));
    (void)e;
}

void mdm_store_put_queue_entry(mdm_batch_t *b, const mdm_queue_entry_t *e)
{
    assert(b);
    assert_queue_key(e);
    assert(status_valid(e->status));
    struct key k;
    key_queue(&k, e);
    mdm_put_encoded(b, MDM_CF_QUEUE, k.b, k.n, enc_queue, e);
}

void mdm_store_delete_queue_entry(mdm_batch_t *b, const mdm_queue_entry_t *e)
{
    assert(b);
    assert_queue_key(e);
    struct key k;
    key_queue(&k, e);
    mdm_batch_delete(b, MDM_CF_QUEUE, k.b, k.n);
}

/* ---- results -------------------------------------------------------------------------------- */

static void enc_result(struct mdm_wr *w, const void *rec)
{
    const mdm_result_t *r = rec;
    mdm_wr_u8(w, FORMAT_1);
    MDM_WR_STR(w, r->channel);
    mdm_wr_u8(w, r->status);
    mdm_wr_u8(w, r->n_events);
    for (unsigned i = 0; i < r->n_events; i++) {
        mdm_wr_u8(w, r->events[i].status);
        mdm_wr_be(w, r->events[i].at_ms, 8);
    }
    mdm_wr_blob32(w, r->response, r->response_len);
}

/* Decodes an mdm_result_t with its response borrowed from val; on failure it is zeroed. */
static int dec_result(const void *key, size_t klen, const void *val, size_t vlen, void *rec)
{
    mdm_result_t *res = rec;
    struct mdm_rd r = mdm_rd_start(res, sizeof(*res), val, vlen);
    r.err = key_parse_pair(key, klen, res->udid, res->uuid, sizeof(res->uuid));
    switch (mdm_rd_format(&r, FORMAT_1)) {
    case FORMAT_1: {
        MDM_RD_STR(&r, res->channel);
        res->status = mdm_rd_u8(&r);
        res->n_events = mdm_rd_u8(&r);
        if (!status_valid(res->status) || res->n_events > MDM_RESULT_EVENTS_MAX) {
            r.err = -EBADMSG;
            break;
        }
        for (unsigned i = 0; i < res->n_events; i++) {
            res->events[i].status = mdm_rd_u8(&r);
            res->events[i].at_ms = mdm_rd_be(&r, 8);
            if (!status_valid(res->events[i].status))
                r.err = -EBADMSG;
        }
        const uint8_t *resp = mdm_rd_blob(&r, 4, &res->response_len);
        res->response = res->response_len ? (uint8_t *)(uintptr_t)resp : NULL;
        break;
    }
    }
    return mdm_rd_finish(&r, res, sizeof(*res));
}

void mdm_store_put_result(mdm_batch_t *b, const mdm_result_t *r)
{
    assert(b && r);
    assert(udid_ok(r->udid) && uuid_ok(r->uuid) && channel_ok(r->channel));
    assert(status_valid(r->status));
    assert(r->n_events <= MDM_RESULT_EVENTS_MAX);
    for (unsigned i = 0; i < r->n_events; i++)
        assert(status_valid(r->events[i].status));
    struct key k;
    key_pair(&k, r->udid, r->uuid);
    mdm_put_encoded(b, MDM_CF_HISTORY, k.b, k.n, enc_result, r);
}

void mdm_result_add_event(mdm_result_t *r, enum mdm_command_status status, uint64_t at_ms)
{
    assert(r && status_valid(status));
    assert(r->n_events <= MDM_RESULT_EVENTS_MAX);
    if (r->n_events == MDM_RESULT_EVENTS_MAX) { /* keep the first, drop the oldest after it */
        memmove(&r->events[1], &r->events[2],
                (MDM_RESULT_EVENTS_MAX - 2) * sizeof(r->events[0]));
        r->n_events--;
    }
    r->events[r->n_events].status = (uint8_t)status;
    r->events[r->n_events].at_ms = at_ms;
    r->n_events++;
    r->status = (uint8_t)status;
}

struct view_result {
    const struct key *k;
    mdm_result_t *out;
};

static int view_result(void *arg, const void *val, size_t vlen)
{
    struct view_result *v = arg;
    int ret = dec_result(v->k->b, v->k->n, val, vlen, v->out);
    return ret != 0 ? ret : own_bytes(&v->out->response, v->out->response_len);
}

int mdm_store_get_result(mdm_store_t *s, const char *udid, const char *uuid, mdm_result_t *out)
{
    assert(s && out);
    memset(out, 0, sizeof(*out));
    if (!udid_ok(udid) || !uuid_ok(uuid))
        return -EINVAL;
    struct key k;
    key_pair(&k, udid, uuid);
    struct view_result v = {&k, out};
    int ret = mdm_store_get_view(s, MDM_CF_HISTORY, k.b, k.n, view_result, &v);
    if (ret != 0)
        memset(out, 0, sizeof(*out));
    return ret;
}

void mdm_result_dispose(mdm_result_t *r)
{
    if (!r)
        return;
    free(r->response);
    memset(r, 0, sizeof(*r));
}

/* ---- listings ------------------------------------------------------------------------------- */

MDM_LISTING_OF(list_queue, mdm_queue_entry_t)
MDM_LISTING_OF(list_results, mdm_result_t)
MDM_LISTING_OF(list_devices, mdm_device_t)

/* The listing of cf's records of udid (keys <udid> 0x00 ...); its prefix is built in *k. */
static struct mdm_listing udid_listing(struct key *k, const char *udid, enum mdm_store_cf cf,
                                       mdm_decode_fn dec, const char *what)
{
    key_pair(k, udid, "");
    return (struct mdm_listing){.cf = cf, .prefix = k->b, .plen = k->n, .dec = dec, .what = what};
}

int mdm_store_list_queue(mdm_store_t *s, const char *udid,
                         int (*cb)(void *arg, const mdm_queue_entry_t *e), void *arg)
{
    assert(s && cb);
    if (!udid_ok(udid))
        return -EINVAL;
    struct key k;
    struct mdm_listing l = udid_listing(&k, udid, MDM_CF_QUEUE, dec_queue, "queue");
    return list_queue(s, &l, cb, arg);
}

int mdm_store_list_results(mdm_store_t *s, const char *udid,
                           int (*cb)(void *arg, const mdm_result_t *r), void *arg)
{
    assert(s && cb);
    if (!udid_ok(udid))
        return -EINVAL;
    struct key k;
    struct mdm_listing l = udid_listing(&k, udid, MDM_CF_HISTORY, dec_result, "history");
    return list_results(s, &l, cb, arg);
}

int mdm_store_list_devices(mdm_store_t *s, const char *after,
                           int (*cb)(void *arg, const mdm_device_t *d), void *arg)
{
    assert(s && cb);
    if (!after)
        after = "";
    struct mdm_listing l = {.cf = MDM_CF_DEVICES, .after = after, .alen = strlen(after),
                            .dec = dec_device, .what = "device"};
    return list_devices(s, &l, cb, arg);
}

/* ---- user channels ---------------------------------------------------------------------------- */

#define USER_FLAG_PUSH_TOKEN_INVALID 0x01u

static void enc_user_channel(struct mdm_wr *w, const void *rec)
{
    const mdm_user_channel_t *u = rec;
    mdm_wr_u8(w, FORMAT_1);
    mdm_wr_u8(w, u->push_token_invalid ? USER_FLAG_PUSH_TOKEN_INVALID : 0);
    MDM_WR_STR(w, u->short_name);
    MDM_WR_STR(w, u->long_name);
    mdm_wr_be(w, u->push_token_len, 2);
    mdm_wr_bytes(w, u->push_token, u->push_token_len);
    MDM_WR_STR(w, u->push_magic);
    mdm_wr_be(w, u->updated_ms, 8);
    mdm_wr_be(w, u->last_push_ms, 8);
    mdm_wr_be(w, u->last_push_status, 2);
    MDM_WR_STR(w, u->last_push_reason);
}

static int dec_user_channel(const void *key, size_t klen, const void *val, size_t vlen,
                            void *rec)
{
    mdm_user_channel_t *u = rec;
    struct mdm_rd r = mdm_rd_start(u, sizeof(*u), val, vlen);
    r.err = key_parse_pair(key, klen, u->udid, u->user_id, sizeof(u->user_id));
    if (mdm_rd_format(&r, FORMAT_1) == FORMAT_1) {
        unsigned flags = mdm_rd_u8(&r);
        if (flags & ~USER_FLAG_PUSH_TOKEN_INVALID)
            r.err = -EBADMSG;
        u->push_token_invalid = flags & USER_FLAG_PUSH_TOKEN_INVALID;
        MDM_RD_STR(&r, u->short_name);
        MDM_RD_STR(&r, u->long_name);
        rd_push_token(&r, u->push_token, sizeof(u->push_token), &u->push_token_len);
        MDM_RD_STR(&r, u->push_magic);
        u->updated_ms = mdm_rd_be(&r, 8);
        u->last_push_ms = mdm_rd_be(&r, 8);
        u->last_push_status = (uint16_t)mdm_rd_be(&r, 2);
        MDM_RD_STR(&r, u->last_push_reason);
    }
    return mdm_rd_finish(&r, u, sizeof(*u));
}

void mdm_store_put_user_channel(mdm_batch_t *b, const mdm_user_channel_t *u)
{
    assert(b && u && udid_ok(u->udid) && id_len(u->user_id, 1, MDM_CHANNEL_MAX) >= 0);
    assert(u->push_token_len <= sizeof(u->push_token));
    struct key k;
    key_pair(&k, u->udid, u->user_id);
    mdm_put_encoded(b, MDM_CF_USERS, k.b, k.n, enc_user_channel, u);
}

MDM_LISTING_OF(list_user_channels, mdm_user_channel_t)

int mdm_store_list_user_channels(mdm_store_t *s, const char *udid,
                                 int (*cb)(void *arg, const mdm_user_channel_t *u), void *arg)
{
    assert(s && cb);
    if (!udid_ok(udid))
        return -EINVAL;
    struct key k;
    struct mdm_listing l = udid_listing(&k, udid, MDM_CF_USERS, dec_user_channel, "user channel");
    return list_user_channels(s, &l, cb, arg);
}

/* ---- purge and secrets ---------------------------------------------------------------------- */

struct purge {
    mdm_batch_t *b;
    enum mdm_store_cf cf;
};

static int on_purge_record(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct purge *p = arg;
    (void)val;
    (void)vlen;
    mdm_batch_delete(p->b, p->cf, key, klen);
    return 0;
}

int mdm_store_purge_device(mdm_store_t *s, mdm_batch_t *b, const char *udid)
{
    assert(s && b);
    if (!udid_ok(udid))
        return -EINVAL;
    static const enum mdm_store_cf keyed_by_udid[] = {MDM_CF_QUEUE, MDM_CF_HISTORY,
                                                      MDM_CF_SECRETS, MDM_CF_USERS};
    struct key prefix;
    key_pair(&prefix, udid, "");
    int ret = 0;
    for (size_t i = 0; i < MDM_ARRAY_LEN(keyed_by_udid) && ret == 0; i++) {
        struct purge p = {b, keyed_by_udid[i]};
        ret = mdm_store_iter_prefix(s, p.cf, prefix.b, prefix.n, on_purge_record, &p);
    }
    if (ret == 0)
        ret = mdm_store_purge_device_policy(s, b, udid); /* its deployments and apps */
    if (ret == 0)
        mdm_store_delete_device(b, udid);
    return ret;
}

void mdm_store_put_secret(mdm_batch_t *b, const char *udid, const char *name, const void *sealed,
                          size_t len)
{
    assert(b && udid_ok(udid) && secret_name_ok(name));
    assert(sealed || len == 0);
    struct key k;
    key_pair(&k, udid, name);
    mdm_batch_put(b, MDM_CF_SECRETS, k.b, k.n, sealed, len);
}

void mdm_store_delete_secret(mdm_batch_t *b, const char *udid, const char *name)
{
    assert(b && udid_ok(udid) && secret_name_ok(name));
    struct key k;
    key_pair(&k, udid, name);
    mdm_batch_delete(b, MDM_CF_SECRETS, k.b, k.n);
}

int mdm_store_get_secret(mdm_store_t *s, const char *udid, const char *name, mdm_buf_t *out)
{
    assert(s && out);
    if (!udid_ok(udid) || !secret_name_ok(name))
        return -EINVAL;
    struct key k;
    key_pair(&k, udid, name);
    return mdm_store_get(s, MDM_CF_SECRETS, k.b, k.n, out);
}
