/*
 * h2c: sans-I/O HTTP/2 client over nghttp2's memory API. See h2c.h.
 *
 * Design: one nghttp2 client session without send/recv callbacks. Input goes through
 * nghttp2_session_mem_recv; output is drawn with nghttp2_session_mem_send into a staging
 * buffer (its pointer dies on the next mem_send call) and handed out in room-sized pieces.
 *
 * Requests live in a fixed array of slots: FREE -> QUEUED -> SUBMITTED (stream id known) ->
 * SENT (HEADERS went out) -> ENDED (outcome decided, on the done list) -> FREE. nghttp2
 * callbacks only record; outcomes are delivered after mem_recv/mem_send have returned, so a
 * response callback may submit again without re-entering nghttp2.
 *
 * Invariants: open == number of SUBMITTED + SENT slots; a slot is on exactly one of the free
 * list, the queue, the done list, or none (SUBMITTED/SENT); each accepted request is
 * reported exactly once.
 *
 * Owning thread: the connection's shard.
 */
#include "core/h2c.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

#define REQUESTS_MAX_DEFAULT 1024
#define BODY_MAX_DEFAULT 4096
#define STAGING_BYTES 16384 /* coalesce frames up to this much before handing them out */
#define NV_MAX (MDM_H2C_HEADERS_MAX + 4)

enum slot_state { SLOT_FREE, SLOT_QUEUED, SLOT_SUBMITTED, SLOT_SENT, SLOT_ENDED };

struct span {
    uint32_t off, len;
};

struct slot {
    enum slot_state state;
    struct slot *next; /* free list, queue or done list */
    void *user;
    int32_t stream_id;
    /* request: method, path, header names/values and body, back to back in req */
    mdm_buf_t req;
    struct span method, path, names[MDM_H2C_HEADERS_MAX], values[MDM_H2C_HEADERS_MAX];
    uint32_t n_headers;
    struct span body;
    size_t body_sent;
    /* response */
    enum mdm_h2c_outcome outcome;
    bool ended_by_peer; /* END_STREAM received */
    int status;
    uint32_t h2_error;
    mdm_buf_t resp;
    bool truncated;
    char captured[MDM_H2C_CAPTURE_MAX][MDM_H2C_VALUE_MAX + 1];
    bool has_captured[MDM_H2C_CAPTURE_MAX];
};

struct mdm_h2c {
    nghttp2_session *s;
    struct mdm_h2c_opts o;
    char *authority;
    size_t n_capture;
    struct slot *slots;
    uint32_t n_slots;
    struct slot *free_list;
    struct slot *queue_head, *queue_tail;
    struct slot *done_head, *done_tail;
    uint32_t open, queued;
    mdm_buf_t out;         /* staged frames */
    size_t handed;         /* bytes of out given to the caller by the last mdm_h2c_output */
    bool settings_seen;    /* the peer's first SETTINGS arrived */
    bool goaway;           /* GOAWAY received */
    int32_t goaway_last;   /* its last_stream_id */
    uint32_t goaway_error; /* its error code */
    bool closed;
    bool delivering;
    uint64_t ping_acks[4]; /* acked ping payloads waiting for delivery */
    unsigned n_ping_acks;
};

/* ---- slot lists ---- */

static void list_push(struct slot **head, struct slot **tail, struct slot *s)
{
    s->next = NULL;
    if (*tail)
        (*tail)->next = s;
    else
        *head = s;
    *tail = s;
}

static struct slot *list_pop(struct slot **head, struct slot **tail)
{
    struct slot *s = *head;
    if (s) {
        *head = s->next;
        if (!*head)
            *tail = NULL;
        s->next = NULL;
    }
    return s;
}

static struct slot *slot_by_stream(mdm_h2c_t *h, int32_t id)
{
    struct slot *s = nghttp2_session_get_stream_user_data(h->s, id);
    if (s)
        return s;
    for (uint32_t i = 0; i < h->n_slots; i++) /* unopened stream (frame not sent): rare */
        if ((h->slots[i].state == SLOT_SUBMITTED || h->slots[i].state == SLOT_SENT) &&
            h->slots[i].stream_id == id)
            return &h->slots[i];
    return NULL;
}

/* Decides a slot's outcome and moves it to the done list. */
static void slot_end(mdm_h2c_t *h, struct slot *s, enum mdm_h2c_outcome outcome, uint32_t err)
{
    if (s->state == SLOT_SUBMITTED || s->state == SLOT_SENT)
        h->open--;
    s->state = SLOT_ENDED;
    s->outcome = outcome;
    if (!s->h2_error)
        s->h2_error = err;
    list_push(&h->done_head, &h->done_tail, s);
}

/* Outcome of a stream closed with error_code (or of a stream cut by connection loss). */
static enum mdm_h2c_outcome classify(const mdm_h2c_t *h, const struct slot *s, uint32_t err)
{
    if (s->ended_by_peer && s->status > 0)
        return MDM_H2C_DONE;
    if (s->state != SLOT_SENT || err == NGHTTP2_REFUSED_STREAM ||
        (h->goaway && s->stream_id > h->goaway_last))
        return MDM_H2C_NOT_PROCESSED;
    return MDM_H2C_FAILED;
}

/* ---- nghttp2 callbacks: record only ---- */

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)session;
    (void)flags;
    mdm_h2c_t *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct slot *s = slot_by_stream(h, frame->hd.stream_id);
    if (!s)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int st = 0;
        for (size_t i = 0; valuelen == 3 && i < 3; i++)
            st = value[i] >= '0' && value[i] <= '9' ? st * 10 + (value[i] - '0') : -1000;
        if (st >= 200 && st < 600) /* 1xx is interim (nghttp2 checked the format) */
            s->status = st;
        return 0;
    }
    for (size_t i = 0; i < h->n_capture; i++) {
        const char *want = h->o.capture[i];
        if (strlen(want) == namelen && memcmp(want, name, namelen) == 0) {
            size_t n = valuelen < MDM_H2C_VALUE_MAX ? valuelen : MDM_H2C_VALUE_MAX;
            memcpy(s->captured[i], value, n);
            s->captured[i][n] = '\0';
            s->has_captured[i] = true;
        }
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    (void)flags;
    struct slot *s = nghttp2_session_get_stream_user_data(session, stream_id);
    (void)user_data;
    if (!s)
        return 0;
    size_t room = s->resp.max - s->resp.len;
    size_t n = len < room ? len : room;
    if (n < len)
        s->truncated = true;
    if (n && mdm_buf_append(&s->resp, data, n) != 0)
        s->truncated = true; /* out of memory: keep what we have */
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    mdm_h2c_t *h = user_data;
    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            h->settings_seen = true;
        break;
    case NGHTTP2_GOAWAY:
        h->goaway = true;
        h->goaway_last = frame->goaway.last_stream_id;
        h->goaway_error = frame->goaway.error_code;
        break;
    case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && h->n_ping_acks < MDM_ARRAY_LEN(h->ping_acks)) {
            uint64_t v = 0;
            for (int i = 0; i < 8; i++)
                v = v << 8 | frame->ping.opaque_data[i];
            h->ping_acks[h->n_ping_acks++] = v;
        }
        break;
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            struct slot *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
            if (s)
                s->ended_by_peer = true;
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    if (frame->hd.type == NGHTTP2_HEADERS) {
        struct slot *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (s && s->state == SLOT_SUBMITTED)
            s->state = SLOT_SENT;
    }
    return 0;
}

static int on_frame_not_send(nghttp2_session *session, const nghttp2_frame *frame,
                             int lib_error_code, void *user_data)
{
    (void)session;
    (void)lib_error_code;
    mdm_h2c_t *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct slot *s = slot_by_stream(h, frame->hd.stream_id);
    if (s && s->state == SLOT_SUBMITTED)
        slot_end(h, s, MDM_H2C_NOT_PROCESSED, 0); /* the HEADERS never left */
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    (void)session;
    mdm_h2c_t *h = user_data;
    struct slot *s = slot_by_stream(h, stream_id);
    if (!s || (s->state != SLOT_SUBMITTED && s->state != SLOT_SENT))
        return 0;
    slot_end(h, s, classify(h, s, error_code), error_code);
    return 0;
}

static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    (void)session;
    (void)stream_id;
    (void)user_data;
    struct slot *s = source->ptr;
    size_t left = s->body.len - s->body_sent;
    size_t n = left < length ? left : length;
    memcpy(buf, mdm_buf_head(&s->req) + s->body.off + s->body_sent, n);
    s->body_sent += n;
    if (s->body_sent == s->body.len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* ---- submission and delivery ---- */

static uint32_t peer_streams_max(const mdm_h2c_t *h)
{
    return nghttp2_session_get_remote_settings(h->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

static nghttp2_nv nv_of(const struct slot *s, const char *name, struct span v)
{
    return (nghttp2_nv){.name = (uint8_t *)name,
                        .value = mdm_buf_head(&s->req) + v.off,
                        .namelen = strlen(name),
                        .valuelen = v.len,
                        .flags = NGHTTP2_NV_FLAG_NONE};
}

/* Hands queued requests to nghttp2 while the peer allows more streams. */
static void pump_queue(mdm_h2c_t *h)
{
    if (h->closed || !h->settings_seen)
        return;
    while (h->queue_head && h->open < peer_streams_max(h)) {
        struct slot *s = list_pop(&h->queue_head, &h->queue_tail);
        h->queued--;
        if (h->goaway) {
            slot_end(h, s, MDM_H2C_NOT_PROCESSED, h->goaway_error);
            continue;
        }
        uint8_t *base = mdm_buf_head(&s->req);
        nghttp2_nv nv[NV_MAX];
        size_t n = 0;
        nv[n++] = nv_of(s, ":method", s->method);
        nv[n++] = (nghttp2_nv){(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0};
        nv[n++] = (nghttp2_nv){(uint8_t *)":authority", (uint8_t *)h->authority, 10,
                               strlen(h->authority), 0};
        nv[n++] = nv_of(s, ":path", s->path);
        for (uint32_t i = 0; i < s->n_headers; i++)
            nv[n++] = (nghttp2_nv){base + s->names[i].off, base + s->values[i].off,
                                   s->names[i].len, s->values[i].len, 0};
        nghttp2_data_provider prd = {.source.ptr = s, .read_callback = read_body};
        s->body_sent = 0;
        int32_t id = nghttp2_submit_request(h->s, NULL, nv, n, s->body.len ? &prd : NULL, s);
        if (id < 0) { /* stream ids exhausted or out of memory: never reached the server */
            slot_end(h, s, MDM_H2C_NOT_PROCESSED, 0);
            continue;
        }
        s->stream_id = id;
        s->state = SLOT_SUBMITTED;
        h->open++;
    }
}

static void slot_release(mdm_h2c_t *h, struct slot *s)
{
    s->state = SLOT_FREE;
    s->user = NULL;
    s->next = h->free_list;
    h->free_list = s;
}

/* Reports ended streams and acked pings, then refills the open streams from the queue. */
static void deliver(mdm_h2c_t *h)
{
    if (h->delivering)
        return; /* a callback submitted: the outer loop picks it up */
    h->delivering = true;
    for (;;) {
        pump_queue(h);
        while (h->n_ping_acks) {
            uint64_t v = h->ping_acks[0];
            memmove(h->ping_acks, h->ping_acks + 1, --h->n_ping_acks * sizeof(h->ping_acks[0]));
            if (h->o.ping_callback)
                h->o.ping_callback(h, v, h->o.arg);
        }
        struct slot *s = list_pop(&h->done_head, &h->done_tail);
        if (!s)
            break;
        struct mdm_h2c_response r = {
            .outcome = s->outcome,
            .stream_id = s->stream_id,
            .status = s->outcome == MDM_H2C_DONE ? s->status : 0,
            .h2_error = s->h2_error,
            .body = s->resp.len ? mdm_buf_head(&s->resp) : (const uint8_t *)"",
            .body_len = s->resp.len,
            .body_truncated = s->truncated,
        };
        for (size_t i = 0; i < h->n_capture; i++)
            r.captured[i] = s->has_captured[i] ? s->captured[i] : NULL;
        void *user = s->user;
        slot_release(h, s); /* before the callback: it may submit into this very slot */
        h->o.response_callback(h, user, &r, h->o.arg);
    }
    h->delivering = false;
}

/* Ends the session: every request not yet ended gets an outcome now. */
static void close_all(mdm_h2c_t *h)
{
    h->closed = true;
    struct slot *s;
    while ((s = list_pop(&h->queue_head, &h->queue_tail)) != NULL) {
        h->queued--;
        slot_end(h, s, MDM_H2C_NOT_PROCESSED, h->goaway_error);
    }
    for (uint32_t i = 0; i < h->n_slots; i++) {
        s = &h->slots[i];
        if (s->state == SLOT_SUBMITTED || s->state == SLOT_SENT)
            slot_end(h, s, classify(h, s, 0), 0);
    }
}

/* After any exchange: closes when nghttp2 is done, and refuses the queue after a GOAWAY. */
static void settle(mdm_h2c_t *h)
{
    if (h->goaway && !h->closed) {
        struct slot *s;
        while ((s = list_pop(&h->queue_head, &h->queue_tail)) != NULL) {
            h->queued--;
            slot_end(h, s, MDM_H2C_NOT_PROCESSED, h->goaway_error);
        }
    }
    if (!h->closed && !nghttp2_session_want_read(h->s) && !nghttp2_session_want_write(h->s) &&
        h->out.len == 0)
        close_all(h);
    deliver(h);
}

/* ---- public API ---- */

int mdm_h2c_new(mdm_h2c_t **out, const struct mdm_h2c_opts *o)
{
    *out = NULL;
    if (!o->response_callback || !o->authority)
        return MDM_ECONFIG;
    size_t n_capture = 0;
    while (o->capture && o->capture[n_capture])
        n_capture++;
    if (n_capture > MDM_H2C_CAPTURE_MAX)
        return MDM_ECONFIG;
    mdm_h2c_t *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    int ret = -ENOMEM;
    nghttp2_session_callbacks *cbs = NULL;
    h->o = *o;
    h->n_capture = n_capture;
    h->n_slots = o->requests_max ? o->requests_max : REQUESTS_MAX_DEFAULT;
    size_t body_max = o->body_max ? o->body_max : BODY_MAX_DEFAULT;
    mdm_buf_init(&h->out, 0);
    h->authority = strdup(o->authority);
    h->slots = calloc(h->n_slots, sizeof(*h->slots));
    if (!h->authority || !h->slots)
        goto out;
    for (uint32_t i = h->n_slots; i-- > 0;) {
        mdm_buf_init(&h->slots[i].req, 0);
        mdm_buf_init(&h->slots[i].resp, body_max);
        slot_release(h, &h->slots[i]);
    }
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        goto out;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    if (nghttp2_session_client_new(&h->s, cbs, h) != 0)
        goto out;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
    if (nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, MDM_ARRAY_LEN(iv)) != 0)
        goto out;
    ret = 0;
out:
    nghttp2_session_callbacks_del(cbs);
    if (ret != 0)
        mdm_h2c_free(h);
    else
        *out = h;
    return ret;
}

void mdm_h2c_free(mdm_h2c_t *h)
{
    if (!h)
        return;
    nghttp2_session_del(h->s);
    for (uint32_t i = 0; h->slots && i < h->n_slots; i++) {
        mdm_buf_dispose(&h->slots[i].req);
        mdm_buf_dispose(&h->slots[i].resp);
    }
    free(h->slots);
    free(h->authority);
    mdm_buf_dispose(&h->out);
    free(h);
}

static int put_str(struct slot *s, struct span *sp, const void *p, size_t n, bool nul)
{
    sp->off = (uint32_t)s->req.len;
    sp->len = (uint32_t)n;
    int ret = n ? mdm_buf_append(&s->req, p, n) : 0;
    if (ret == 0 && nul)
        ret = mdm_buf_append(&s->req, "", 1);
    return ret;
}

int mdm_h2c_submit(mdm_h2c_t *h, const char *method, const char *path,
                   const struct mdm_h2c_header *headers, size_t n_headers, const void *body,
                   size_t body_len, void *stream_user)
{
    if (h->closed || h->goaway)
        return MDM_ECLOSED;
    if (n_headers > MDM_H2C_HEADERS_MAX)
        return MDM_ETOOBIG;
    struct slot *s = h->free_list;
    if (!s)
        return MDM_EFULL;
    mdm_buf_reset(&s->req);
    mdm_buf_reset(&s->resp);
    int ret = put_str(s, &s->method, method, strlen(method), true);
    if (ret == 0)
        ret = put_str(s, &s->path, path, strlen(path), true);
    for (size_t i = 0; ret == 0 && i < n_headers; i++) {
        ret = put_str(s, &s->names[i], headers[i].name, strlen(headers[i].name), true);
        if (ret == 0)
            ret = put_str(s, &s->values[i], headers[i].value, strlen(headers[i].value), true);
    }
    if (ret == 0)
        ret = put_str(s, &s->body, body, body_len, false);
    if (ret != 0)
        return ret;
    h->free_list = s->next;
    s->n_headers = (uint32_t)n_headers;
    s->user = stream_user;
    s->stream_id = 0;
    s->ended_by_peer = false;
    s->status = 0;
    s->h2_error = 0;
    s->truncated = false;
    memset(s->has_captured, 0, sizeof(s->has_captured));
    s->state = SLOT_QUEUED;
    list_push(&h->queue_head, &h->queue_tail, s);
    h->queued++;
    pump_queue(h);
    return 0;
}

int mdm_h2c_recv(mdm_h2c_t *h, const uint8_t *data, size_t len)
{
    if (h->closed)
        return MDM_ECLOSED;
    ssize_t n = nghttp2_session_mem_recv(h->s, data, len);
    if (n < 0 || (size_t)n != len) {
        close_all(h);
        deliver(h);
        return MDM_EHTTP;
    }
    settle(h);
    return 0;
}

int mdm_h2c_output(mdm_h2c_t *h, size_t room, const uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    mdm_buf_consume(&h->out, h->handed);
    h->handed = 0;
    if (h->closed)
        return 0;
    pump_queue(h);
    int ret = 0;
    while (h->out.len < room && h->out.len < STAGING_BYTES) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(h->s, &p);
        if (n < 0) {
            ret = MDM_EHTTP;
            break;
        }
        if (n == 0)
            break;
        if ((ret = mdm_buf_append(&h->out, p, (size_t)n)) != 0) {
            ret = MDM_EHTTP; /* the chunk is lost: the stream is broken */
            break;
        }
    }
    h->handed = h->out.len < room ? h->out.len : room;
    *data = h->handed ? mdm_buf_head(&h->out) : NULL;
    *len = h->handed;
    if (ret != 0) {
        close_all(h);
        deliver(h);
        return ret;
    }
    /* nghttp2 may still want to write, but everything staged is handed out: not yet idle */
    if (h->out.len > h->handed || nghttp2_session_want_write(h->s))
        deliver(h);
    else
        settle(h);
    return 0;
}

int mdm_h2c_ping(mdm_h2c_t *h, uint64_t now_ms)
{
    if (h->closed)
        return MDM_ECLOSED;
    uint8_t opaque[8];
    for (int i = 7; i >= 0; i--, now_ms >>= 8)
        opaque[i] = (uint8_t)now_ms;
    return nghttp2_submit_ping(h->s, NGHTTP2_FLAG_NONE, opaque) == 0 ? 0 : -ENOMEM;
}

void mdm_h2c_abort(mdm_h2c_t *h)
{
    if (h->closed && !h->done_head)
        return;
    close_all(h);
    deliver(h);
}

bool mdm_h2c_want_read(const mdm_h2c_t *h)
{
    return !h->closed && nghttp2_session_want_read(h->s);
}

bool mdm_h2c_want_write(const mdm_h2c_t *h)
{
    return !h->closed && (h->out.len > h->handed || nghttp2_session_want_write(h->s) ||
                          (h->queue_head && h->settings_seen && h->open < peer_streams_max(h)));
}

bool mdm_h2c_closed(const mdm_h2c_t *h) { return h->closed; }
bool mdm_h2c_goaway_received(const mdm_h2c_t *h) { return h->goaway; }
uint32_t mdm_h2c_open_streams(const mdm_h2c_t *h) { return h->open; }
uint32_t mdm_h2c_queued(const mdm_h2c_t *h) { return h->queued; }

uint32_t mdm_h2c_room(const mdm_h2c_t *h)
{
    if (h->closed || h->goaway || !h->settings_seen)
        return 0;
    uint64_t used = (uint64_t)h->open + h->queued, max = peer_streams_max(h);
    return used < max ? (uint32_t)(max - used > UINT32_MAX ? UINT32_MAX : max - used) : 0;
}
