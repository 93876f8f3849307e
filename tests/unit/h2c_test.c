/*
 * Unit tests for core/h2c (against an nghttp2 server session in memory, no sockets) and
 * core/outconn (over a loopback TLS socket to a tiny nghttp2 server run in a thread).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "check.h"
#include "core/h2c.h"
#include "core/loop.h"
#include "core/outconn.h"
#include "core/tls.h"

#ifndef MDM_TEST_DATA
#define MDM_TEST_DATA "tests/data"
#endif

static const char *data_path(const char *name)
{
    static char paths[8][512];
    static int next;
    const char *dir = getenv("MDM_TEST_DATA");
    if (!dir || !*dir)
        dir = MDM_TEST_DATA;
    char *p = paths[next++ % 8];
    snprintf(p, sizeof(paths[0]), "%s/%s", dir, name);
    return p;
}

/* ---- a scripted nghttp2 server session ---- */

#define SRV_STREAMS 64

struct srv_stream {
    int32_t id;
    char method[16], path[64], scheme[16], authority[64], topic[64], push_type[16];
    char body[256];
    size_t body_len;
    bool complete;
    const char *resp_body;
    size_t resp_off;
};

struct srv {
    nghttp2_session *s;
    struct srv_stream streams[SRV_STREAMS];
    int n_streams;
    int open, open_max;
    bool hold; /* do not answer */
};

static struct srv_stream *srv_find(struct srv *v, int32_t id)
{
    for (int i = 0; i < v->n_streams; i++)
        if (v->streams[i].id == id)
            return &v->streams[i];
    return NULL;
}

static void copy_val(char *dst, size_t cap, const uint8_t *v, size_t n)
{
    n = n < cap - 1 ? n : cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static int srv_on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    struct srv *v = ud;
    if (f->hd.type == NGHTTP2_HEADERS && v->n_streams < SRV_STREAMS) {
        struct srv_stream *st = &v->streams[v->n_streams++];
        memset(st, 0, sizeof(*st));
        st->id = f->hd.stream_id;
        if (++v->open > v->open_max)
            v->open_max = v->open;
    }
    return 0;
}

static int srv_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                         void *ud)
{
    (void)s;
    (void)flags;
    struct srv_stream *st = srv_find(ud, f->hd.stream_id);
    if (!st)
        return 0;
    struct {
        const char *n;
        char *dst;
        size_t cap;
    } map[] = {{":method", st->method, sizeof(st->method)},
               {":path", st->path, sizeof(st->path)},
               {":scheme", st->scheme, sizeof(st->scheme)},
               {":authority", st->authority, sizeof(st->authority)},
               {"apns-topic", st->topic, sizeof(st->topic)},
               {"apns-push-type", st->push_type, sizeof(st->push_type)}};
    for (size_t i = 0; i < MDM_ARRAY_LEN(map); i++)
        if (strlen(map[i].n) == namelen && memcmp(map[i].n, name, namelen) == 0)
            copy_val(map[i].dst, map[i].cap, value, valuelen);
    return 0;
}

static int srv_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                       size_t len, void *ud)
{
    (void)s;
    (void)flags;
    struct srv_stream *st = srv_find(ud, id);
    if (st && st->body_len + len < sizeof(st->body)) {
        memcpy(st->body + st->body_len, data, len);
        st->body_len += len;
    }
    return 0;
}

static ssize_t srv_read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                             uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)id;
    (void)ud;
    struct srv_stream *st = src->ptr;
    size_t left = strlen(st->resp_body) - st->resp_off;
    size_t n = left < length ? left : length;
    memcpy(buf, st->resp_body + st->resp_off, n);
    st->resp_off += n;
    if (st->resp_off == strlen(st->resp_body))
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Answers by path: /200, /400, /410 with bodies; /rst and /refuse reset the stream. */
static void srv_respond(struct srv *v, struct srv_stream *st)
{
    if (strcmp(st->path, "/rst") == 0) {
        nghttp2_submit_rst_stream(v->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    if (strcmp(st->path, "/refuse") == 0) {
        nghttp2_submit_rst_stream(v->s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
        return;
    }
    const char *status = "200";
    st->resp_body = "";
    if (strcmp(st->path, "/400") == 0) {
        status = "400";
        st->resp_body = "{\"reason\":\"BadDeviceToken\"}";
    } else if (strcmp(st->path, "/410") == 0) {
        status = "410";
        st->resp_body = "{\"reason\":\"Unregistered\",\"timestamp\":1700000000000}";
    } else if (strcmp(st->path, "/long") == 0) {
        st->resp_body = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                       "0123456789abcdef";
    }
    char id[32];
    snprintf(id, sizeof(id), "id-%d", st->id);
    nghttp2_nv nv[] = {
        {(uint8_t *)":status", (uint8_t *)status, 7, 3, 0},
        {(uint8_t *)"apns-id", (uint8_t *)id, 7, strlen(id), 0},
    };
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = srv_read_body};
    nghttp2_submit_response(v->s, st->id, nv, 2, st->resp_body[0] ? &prd : NULL);
}

static int srv_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    struct srv *v = ud;
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct srv_stream *st = srv_find(v, f->hd.stream_id);
        if (st) {
            st->complete = true;
            if (!v->hold)
                srv_respond(v, st);
        }
    }
    return 0;
}

static int srv_on_close(nghttp2_session *s, int32_t id, uint32_t err, void *ud)
{
    (void)s;
    (void)id;
    (void)err;
    struct srv *v = ud;
    v->open--;
    return 0;
}

static void srv_init(struct srv *v, uint32_t streams_max)
{
    memset(v, 0, sizeof(*v));
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, srv_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, srv_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, srv_on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, srv_on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, srv_on_close);
    nghttp2_session_server_new(&v->s, cbs, v);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, streams_max}};
    nghttp2_submit_settings(v->s, NGHTTP2_FLAG_NONE, iv, 1);
}

/* ---- the client side ---- */

#define RESULTS_MAX 64

struct result {
    int tag;
    struct mdm_h2c_response r;
    char body[256];
    char apns_id[64];
};

struct client {
    struct result results[RESULTS_MAX];
    int n;
    uint64_t ping_sent_ms;
    int pings;
    int open_max; /* seen by the client while pumping */
};

static void on_response(mdm_h2c_t *h, void *user, const struct mdm_h2c_response *r, void *arg)
{
    (void)h;
    struct client *cl = arg;
    if (cl->n >= RESULTS_MAX)
        return;
    struct result *res = &cl->results[cl->n++];
    res->tag = (int)(intptr_t)user;
    res->r = *r;
    size_t n = r->body_len < sizeof(res->body) - 1 ? r->body_len : sizeof(res->body) - 1;
    if (n)
        memcpy(res->body, r->body, n);
    res->body[n] = '\0';
    snprintf(res->apns_id, sizeof(res->apns_id), "%s", r->captured[0] ? r->captured[0] : "");
    res->r.body = NULL;
    res->r.captured[0] = NULL;
}

static void on_ping(mdm_h2c_t *h, uint64_t sent_ms, void *arg)
{
    (void)h;
    struct client *cl = arg;
    cl->ping_sent_ms = sent_ms;
    cl->pings++;
}

static const char *const capture[] = {"apns-id", NULL};

static mdm_h2c_t *client_new(struct client *cl, size_t body_max)
{
    memset(cl, 0, sizeof(*cl));
    struct mdm_h2c_opts o = {
        .authority = "api.test",
        .requests_max = 32,
        .body_max = body_max,
        .capture = capture,
        .response_callback = on_response,
        .ping_callback = on_ping,
        .arg = cl,
    };
    mdm_h2c_t *h = NULL;
    CHECK_EQ_INT(mdm_h2c_new(&h, &o), 0);
    return h;
}

static struct result *find(struct client *cl, int tag)
{
    for (int i = 0; i < cl->n; i++)
        if (cl->results[i].tag == tag)
            return &cl->results[i];
    return NULL;
}

/* Moves bytes both ways until neither side has anything to say. */
static void pump(mdm_h2c_t *h, struct srv *v, struct client *cl)
{
    for (int round = 0; round < 10000; round++) {
        bool moved = false;
        const uint8_t *d;
        size_t n;
        CHECK(mdm_h2c_output(h, 1 << 20, &d, &n) == 0);
        if (n) {
            CHECK(nghttp2_session_mem_recv(v->s, d, n) == (ssize_t)n);
            moved = true;
        }
        const uint8_t *sd;
        ssize_t sn;
        while ((sn = nghttp2_session_mem_send(v->s, &sd)) > 0) {
            int ret = mdm_h2c_recv(h, sd, (size_t)sn);
            CHECK(ret == 0 || ret == MDM_ECLOSED);
            moved = true;
        }
        if (mdm_h2c_open_streams(h) > (uint32_t)cl->open_max)
            cl->open_max = (int)mdm_h2c_open_streams(h);
        if (!moved)
            break;
    }
}

static int submit(mdm_h2c_t *h, const char *path, int tag)
{
    static const struct mdm_h2c_header hdr[] = {
        {"apns-topic", "com.apple.mgmt.External.test"},
        {"apns-push-type", "mdm"},
        {"apns-priority", "10"},
    };
    static const char body[] = "{\"mdm\":\"magic-1\"}";
    return mdm_h2c_submit(h, "POST", path, hdr, MDM_ARRAY_LEN(hdr), body, sizeof(body) - 1,
                          (void *)(intptr_t)tag);
}

/* ---- in-memory tests ---- */

static void test_request_and_statuses(void)
{
    struct client cl;
    struct srv v;
    srv_init(&v, 100);
    mdm_h2c_t *h = client_new(&cl, 64);
    CHECK_EQ_INT(submit(h, "/3/device/abc", 1), 0);
    CHECK_EQ_INT(submit(h, "/400", 2), 0);
    CHECK_EQ_INT(submit(h, "/410", 3), 0);
    CHECK_EQ_INT(submit(h, "/long", 4), 0);
    CHECK_EQ_INT(mdm_h2c_queued(h), 4); /* nothing goes before the server's SETTINGS */
    pump(h, &v, &cl);
    CHECK_EQ_INT(cl.n, 4);
    CHECK_EQ_INT(v.n_streams, 4);
    struct srv_stream *st = &v.streams[0];
    CHECK_STR(st->method, "POST");
    CHECK_STR(st->path, "/3/device/abc");
    CHECK_STR(st->scheme, "https");
    CHECK_STR(st->authority, "api.test");
    CHECK_STR(st->topic, "com.apple.mgmt.External.test");
    CHECK_STR(st->push_type, "mdm");
    CHECK_STR(st->body, "{\"mdm\":\"magic-1\"}");
    struct result *r = find(&cl, 1);
    CHECK(r && r->r.outcome == MDM_H2C_DONE && r->r.status == 200 && r->r.body_len == 0);
    CHECK(r && strcmp(r->apns_id, "id-1") == 0);
    r = find(&cl, 2);
    CHECK(r && r->r.outcome == MDM_H2C_DONE && r->r.status == 400);
    CHECK(r && strcmp(r->body, "{\"reason\":\"BadDeviceToken\"}") == 0);
    r = find(&cl, 3);
    CHECK(r && r->r.status == 410 && !r->r.body_truncated);
    CHECK(r && strncmp(r->body, "{\"reason\":\"Unregistered\"", 24) == 0);
    r = find(&cl, 4); /* 80 bytes against a body_max of 64 */
    CHECK(r && r->r.status == 200 && r->r.body_truncated && r->r.body_len == 64);
    CHECK(!mdm_h2c_closed(h) && mdm_h2c_want_read(h));
    mdm_h2c_free(h);
    nghttp2_session_del(v.s);
}

static void test_concurrency_limit(void)
{
    struct client cl;
    struct srv v;
    srv_init(&v, 2);
    mdm_h2c_t *h = client_new(&cl, 0);
    for (int i = 0; i < 10; i++)
        CHECK_EQ_INT(submit(h, "/200", 100 + i), 0);
    pump(h, &v, &cl);
    CHECK_EQ_INT(cl.n, 10);
    CHECK_EQ_INT(v.open_max, 2);
    CHECK(cl.open_max <= 2);
    int ok = 0;
    for (int i = 0; i < cl.n; i++)
        ok += cl.results[i].r.outcome == MDM_H2C_DONE && cl.results[i].r.status == 200;
    CHECK_EQ_INT(ok, 10);
    CHECK_EQ_INT(mdm_h2c_open_streams(h), 0);
    CHECK_EQ_INT(mdm_h2c_queued(h), 0);
    mdm_h2c_free(h);
    nghttp2_session_del(v.s);
}

static void test_goaway(void)
{
    struct client cl;
    struct srv v;
    srv_init(&v, 2);
    v.hold = true;
    mdm_h2c_t *h = client_new(&cl, 0);
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(submit(h, "/200", i + 1), 0);
    pump(h, &v, &cl);
    CHECK_EQ_INT(v.n_streams, 2);
    CHECK_EQ_INT(mdm_h2c_open_streams(h), 2);
    CHECK_EQ_INT(mdm_h2c_queued(h), 2);
    CHECK_EQ_INT(nghttp2_submit_goaway(v.s, NGHTTP2_FLAG_NONE, 1, NGHTTP2_NO_ERROR, NULL, 0), 0);
    pump(h, &v, &cl);
    CHECK(mdm_h2c_goaway_received(h));
    CHECK_EQ_INT(cl.n, 3); /* stream 3 and the two queued ones */
    for (int i = 0; i < cl.n; i++)
        CHECK(cl.results[i].r.outcome == MDM_H2C_NOT_PROCESSED && cl.results[i].tag != 1);
    CHECK_EQ_INT(submit(h, "/200", 9), MDM_ECLOSED);
    srv_respond(&v, srv_find(&v, 1)); /* the server still finishes stream 1 */
    pump(h, &v, &cl);
    CHECK_EQ_INT(cl.n, 4);
    struct result *r = find(&cl, 1);
    CHECK(r && r->r.outcome == MDM_H2C_DONE && r->r.status == 200);
    CHECK(mdm_h2c_closed(h)); /* nothing left to read or write after the GOAWAY */
    mdm_h2c_free(h);
    nghttp2_session_del(v.s);
}

static void test_rst_and_ping(void)
{
    struct client cl;
    struct srv v;
    srv_init(&v, 100);
    mdm_h2c_t *h = client_new(&cl, 0);
    CHECK_EQ_INT(submit(h, "/rst", 1), 0);
    CHECK_EQ_INT(submit(h, "/refuse", 2), 0);
    CHECK_EQ_INT(submit(h, "/200", 3), 0);
    CHECK_EQ_INT(mdm_h2c_ping(h, 123456789), 0);
    pump(h, &v, &cl);
    CHECK_EQ_INT(cl.n, 3);
    struct result *r = find(&cl, 1);
    CHECK(r && r->r.outcome == MDM_H2C_FAILED && r->r.h2_error == NGHTTP2_INTERNAL_ERROR);
    r = find(&cl, 2);
    CHECK(r && r->r.outcome == MDM_H2C_NOT_PROCESSED && r->r.h2_error == NGHTTP2_REFUSED_STREAM);
    r = find(&cl, 3);
    CHECK(r && r->r.outcome == MDM_H2C_DONE && r->r.status == 200);
    CHECK_EQ_INT(cl.pings, 1);
    CHECK(cl.ping_sent_ms == 123456789);
    mdm_h2c_free(h);
    nghttp2_session_del(v.s);
}

static void test_truncated_and_abort(void)
{
    struct client cl;
    struct srv v;
    srv_init(&v, 1);
    v.hold = true;
    mdm_h2c_t *h = client_new(&cl, 0);
    CHECK_EQ_INT(submit(h, "/200", 1), 0);
    CHECK_EQ_INT(submit(h, "/200", 2), 0);
    pump(h, &v, &cl);
    CHECK_EQ_INT(mdm_h2c_open_streams(h), 1);
    /* half a frame header: the session waits for more */
    static const uint8_t part[] = {0x00, 0x00, 0x08, 0x06};
    CHECK_EQ_INT(mdm_h2c_recv(h, part, sizeof(part)), 0);
    CHECK_EQ_INT(cl.n, 0);
    mdm_h2c_abort(h); /* the connection dropped */
    CHECK_EQ_INT(cl.n, 2);
    struct result *r = find(&cl, 1);
    CHECK(r && r->r.outcome == MDM_H2C_FAILED); /* sent: unknown */
    r = find(&cl, 2);
    CHECK(r && r->r.outcome == MDM_H2C_NOT_PROCESSED); /* queued */
    CHECK(mdm_h2c_closed(h));
    CHECK_EQ_INT(mdm_h2c_recv(h, part, sizeof(part)), MDM_ECLOSED);
    CHECK_EQ_INT(submit(h, "/200", 3), MDM_ECLOSED);
    mdm_h2c_abort(h); /* idempotent */
    CHECK_EQ_INT(cl.n, 2);
    mdm_h2c_free(h);
    nghttp2_session_del(v.s);
}

static void test_garbage(void)
{
    struct client cl;
    struct srv v;
    srv_init(&v, 100);
    v.hold = true;
    mdm_h2c_t *h = client_new(&cl, 0);
    CHECK_EQ_INT(submit(h, "/200", 1), 0);
    pump(h, &v, &cl);
    CHECK_EQ_INT(mdm_h2c_open_streams(h), 1);
    uint8_t junk[64];
    memset(junk, 0xff, sizeof(junk)); /* a 16 MiB frame of unknown type 0xff */
    int ret = mdm_h2c_recv(h, junk, sizeof(junk));
    CHECK(ret == 0 || ret == MDM_EHTTP);
    for (int i = 0; i < 10 && !mdm_h2c_closed(h); i++) { /* flush our GOAWAY */
        const uint8_t *d;
        size_t n;
        CHECK_EQ_INT(mdm_h2c_output(h, 1 << 20, &d, &n), 0);
    }
    CHECK(mdm_h2c_closed(h));
    CHECK_EQ_INT(cl.n, 1);
    CHECK(cl.n == 1 && cl.results[0].r.outcome == MDM_H2C_FAILED);
    CHECK_EQ_INT(mdm_h2c_recv(h, junk, 1), MDM_ECLOSED);
    mdm_h2c_free(h);
    nghttp2_session_del(v.s);
}

static void test_full(void)
{
    struct client cl;
    memset(&cl, 0, sizeof(cl));
    struct mdm_h2c_opts o = {.authority = "a", .requests_max = 2, .response_callback = on_response,
                             .arg = &cl};
    mdm_h2c_t *h = NULL;
    CHECK_EQ_INT(mdm_h2c_new(&h, &o), 0);
    CHECK_EQ_INT(submit(h, "/1", 1), 0);
    CHECK_EQ_INT(submit(h, "/2", 2), 0);
    CHECK_EQ_INT(submit(h, "/3", 3), MDM_EFULL);
    struct mdm_h2c_header many[MDM_H2C_HEADERS_MAX + 1] = {{"x", "y"}};
    CHECK_EQ_INT(mdm_h2c_submit(h, "GET", "/", many, MDM_ARRAY_LEN(many), NULL, 0, NULL),
                 MDM_ETOOBIG);
    mdm_h2c_abort(h);
    CHECK_EQ_INT(cl.n, 2);
    mdm_h2c_free(h);
}

/* ---- outconn over loopback TLS ---- */

struct tls_server {
    int lfd;
    mdm_tls_ctx_t *ctx;
    struct srv v;
    bool handshake_ok;
};

static void write_all(int fd, mdm_buf_t *b)
{
    while (b->len) {
        ssize_t n = write(fd, mdm_buf_head(b), b->len);
        if (n <= 0)
            break;
        mdm_buf_consume(b, (size_t)n);
    }
    mdm_buf_reset(b);
}

/* Serves one connection with blocking I/O until it ends. */
static void *tls_server_main(void *arg)
{
    struct tls_server *ts = arg;
    int fd = accept(ts->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    mdm_tls_conn_t *t = NULL;
    if (mdm_tls_conn_new(&t, ts->ctx, NULL) != 0) {
        close(fd);
        return NULL;
    }
    srv_init(&ts->v, 10);
    uint8_t buf[16384];
    for (;;) {
        int ret = mdm_tls_advance(t);
        if (mdm_tls_handshake_done(t)) {
            ts->handshake_ok = true;
            mdm_buf_t *plain = mdm_tls_plain_in(t);
            if (plain->len) {
                nghttp2_session_mem_recv(ts->v.s, mdm_buf_head(plain), plain->len);
                mdm_buf_consume(plain, plain->len);
            }
            const uint8_t *d;
            ssize_t n;
            while ((n = nghttp2_session_mem_send(ts->v.s, &d)) > 0)
                if (mdm_tls_write(t, d, (size_t)n) != 0)
                    break;
        }
        write_all(fd, mdm_tls_cipher_out(t));
        if (ret != 0)
            break;
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            mdm_tls_feed_eof(t);
        else if (mdm_tls_feed(t, buf, (size_t)n) != 0)
            break;
    }
    nghttp2_session_del(ts->v.s);
    mdm_tls_conn_free(t);
    close(fd);
    mdm_tls_thread_cleanup();
    return NULL;
}

struct oc_state {
    int ready, closed, close_err;
};

static void on_oc_event(mdm_outconn_t *c, enum mdm_outconn_event ev, int err, void *arg)
{
    (void)c;
    struct oc_state *s = arg;
    if (ev == MDM_OUTCONN_READY)
        s->ready++;
    else {
        s->closed++;
        s->close_err = err;
    }
}

static int listen_loopback(struct sockaddr_in *sa)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(*sa);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)sa, len) != 0 || listen(lfd, 4) != 0 ||
        getsockname(lfd, (struct sockaddr *)sa, &len) != 0) {
        perror("listen");
        exit(99);
    }
    return lfd;
}

/* One connection: a request queued before connecting, then a clean close. With alpn_ok false
 * the server offers only http/1.1 and the client must refuse the connection. */
static void run_outconn(mdm_loop_t *loop, mdm_tls_ctx_t *cctx, bool alpn_ok)
{
    static const char *const h2_alpn[] = {"h2", NULL};
    static const char *const h1_alpn[] = {"http/1.1", NULL};
    struct mdm_tls_server_opts so = {
        .cert_path = data_path("server.crt"),
        .key_path = data_path("server.key"),
        .alpn = alpn_ok ? h2_alpn : h1_alpn,
    };
    struct tls_server ts = {0};
    CHECK_EQ_INT(mdm_tls_ctx_new_server(&ts.ctx, &so), 0);
    struct sockaddr_in sa;
    ts.lfd = listen_loopback(&sa);
    pthread_t th;
    pthread_create(&th, NULL, tls_server_main, &ts);

    struct client cl;
    memset(&cl, 0, sizeof(cl));
    struct oc_state st = {0};
    struct mdm_outconn_opts o = {
        .addr = (struct sockaddr *)&sa,
        .addr_len = sizeof(sa),
        .tls = cctx,
        .connect_timeout_ms = 5000,
        .h2 = {.authority = "localhost", .capture = capture, .response_callback = on_response,
               .arg = &cl},
        .event_callback = on_oc_event,
        .arg = &st,
    };
    mdm_outconn_t *c = NULL;
    CHECK_EQ_INT(mdm_outconn_new(&c, loop, &o), 0);
    CHECK_EQ_INT(submit(mdm_outconn_h2c(c), "/3/device/loop", 7), 0);
    mdm_outconn_start(c);
    uint64_t deadline = mdm_now_ms() + 5000;
    while (cl.n == 0 && !st.closed && mdm_now_ms() < deadline)
        (void)mdm_loop_run_once(loop, 50);
    if (alpn_ok) {
        CHECK_EQ_INT(st.ready, 1);
        CHECK_EQ_INT(cl.n, 1);
        CHECK(cl.n == 1 && cl.results[0].r.outcome == MDM_H2C_DONE &&
              cl.results[0].r.status == 200 && strcmp(cl.results[0].apns_id, "id-1") == 0);
        CHECK(mdm_outconn_ready(c));
        mdm_outconn_close(c, 0);
    }
    while (!st.closed && mdm_now_ms() < deadline)
        (void)mdm_loop_run_once(loop, 50);
    CHECK_EQ_INT(st.closed, 1);
    if (alpn_ok) {
        CHECK_EQ_INT(st.close_err, 0);
    } else {
        CHECK_EQ_INT(st.ready, 0);
        CHECK_EQ_INT(st.close_err, MDM_ETLS);
        CHECK(cl.n == 1 && cl.results[0].r.outcome == MDM_H2C_NOT_PROCESSED);
    }
    mdm_outconn_free(c);
    pthread_join(th, NULL);
    CHECK(ts.handshake_ok == alpn_ok); /* wolfSSL's server refuses a client without a common protocol */
    close(ts.lfd);
    mdm_tls_ctx_free(ts.ctx);
}

/* Connecting to a closed port ends in CLOSED with the connect error. */
static void run_refused(mdm_loop_t *loop, mdm_tls_ctx_t *cctx)
{
    struct sockaddr_in sa;
    int lfd = listen_loopback(&sa);
    close(lfd); /* the port is now (very likely) closed */
    struct client cl;
    memset(&cl, 0, sizeof(cl));
    struct oc_state st = {0};
    struct mdm_outconn_opts o = {
        .addr = (struct sockaddr *)&sa,
        .addr_len = sizeof(sa),
        .tls = cctx,
        .h2 = {.authority = "localhost", .response_callback = on_response, .arg = &cl},
        .event_callback = on_oc_event,
        .arg = &st,
    };
    mdm_outconn_t *c = NULL;
    CHECK_EQ_INT(mdm_outconn_new(&c, loop, &o), 0);
    CHECK_EQ_INT(submit(mdm_outconn_h2c(c), "/x", 1), 0);
    mdm_outconn_start(c);
    uint64_t deadline = mdm_now_ms() + 5000;
    while (!st.closed && mdm_now_ms() < deadline)
        (void)mdm_loop_run_once(loop, 50);
    CHECK_EQ_INT(st.closed, 1);
    CHECK_EQ_INT(st.close_err, -ECONNREFUSED);
    CHECK(cl.n == 1 && cl.results[0].r.outcome == MDM_H2C_NOT_PROCESSED);
    mdm_outconn_free(c);
}

static int test_outconn(void)
{
    mdm_loop_t loop;
    if (mdm_loop_init(&loop, 64) != 0) {
        printf("outconn: io_uring unavailable, skipped\n");
        return 0;
    }
    struct mdm_tls_client_opts co = {.alpn = "h2"};
    mdm_tls_ctx_t *cctx = NULL;
    CHECK_EQ_INT(mdm_tls_ctx_new_client(&cctx, &co), 0);
    run_outconn(&loop, cctx, true);
    run_outconn(&loop, cctx, false);
    run_refused(&loop, cctx);
    mdm_loop_dispose(&loop);
    mdm_tls_ctx_free(cctx);
    return 1;
}

int main(void)
{
    test_request_and_statuses();
    test_concurrency_limit();
    test_goaway();
    test_rst_and_ping();
    test_truncated_and_abort();
    test_garbage();
    test_full();
    test_outconn();
    mdm_tls_thread_cleanup();
    mdm_tls_global_cleanup();
    return check_finish("h2c");
}
