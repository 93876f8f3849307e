/*
 * driver: HTTPS/1.1 client slots on one io_uring ring. See driver.h.
 *
 * Design: one thread, one core/loop ring, a fixed array of client slots made at start. Each
 * slot holds at most one connection and moves through
 *
 *   IDLE -> CONNECTING -> HANDSHAKE -> WAITING --(keep-alive: write the next request)--+
 *    ^                                  |   ^                                           |
 *    |                                  |   +-------------------------------------------+
 *    |                                  v  (new connection per request, or server said close)
 *    +------ CLOSING <------------- DRAINING (response done; wait for the server's close)
 *              ^
 *              +-- errors and timeouts from any state
 *
 * TLS is core/tls, sans-I/O: received ciphertext comes from the loop's provided buffers and is
 * fed in right away (the buffer goes straight back), mdm_tls_advance decrypts, http_parser in
 * HTTP_RESPONSE mode frames the response out of plain_in (status line, Content-Length, chunked,
 * read-until-close), and the scenario judges it.
 *
 * Invariants: at most one connect-or-recv and one send in flight per slot; a send reads from
 * slot->sending, swapped with the TLS cipher_out buffer, so its bytes stay put while the kernel
 * holds them; a slot's fd and TLS state are released only in CLOSING with no op in flight, and
 * only from the end-of-tick hook: core/loop marks every op of a tick complete before running
 * any callback, so finishing a close from a callback could reuse the slot for a new connection
 * while a completion of the old one is still queued behind it.
 *
 * Timing: CLOCK_MONOTONIC in ns. Latency runs from writing the request (keep-alive) or from
 * starting the TCP connect (new connection per request) to the response's last byte. The run
 * stops starting requests at the duration or request limit, waits for requests in flight for a
 * grace period, cuts off the rest, and ends within a fixed bound after that.
 *
 * Owning thread: the caller of bench_run; nothing is shared.
 */
#include "bench/driver.h"

#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/loop.h"

#define RECV_BUFFER_SIZE 16384 /* bytes per provided receive buffer */
#define RECV_BUFFERS_MAX 4096  /* beyond this, slots wait for a buffer (see recv_retry) */
#define BODY_MAX (1024 * 1024) /* a larger response body is an HTTP error */
#define DRAIN_MS 1000          /* wait this long for the server's close after a last response */
#define BACKOFF_MS 10          /* before reconnecting after a failed connect */
#define GRACE_MAX_MS 2000      /* requests in flight at the stop get at most this long */
#define ABORT_MS 2000          /* after cutting off, cancelled ops must complete within this */
#define TICK_MS 50             /* longest wait of one loop tick */
#define ADVANCE_ROUNDS 64      /* decrypt rounds per receive when plain_in keeps filling up */

enum slot_state {
    S_IDLE,
    S_CONNECTING,
    S_HANDSHAKE,
    S_WAITING,  /* request written, response being read */
    S_DRAINING, /* last response read; waiting for the server to close */
    S_CLOSING,  /* waiting for ops in flight before releasing fd and TLS */
};

struct run;

struct slot {
    struct run *run;
    unsigned index;
    enum slot_state state;
    int fd;
    mdm_tls_conn_t *tls;
    void *client_state; /* the scenario's, kept across connections */
    http_parser parser;
    bool response_done; /* set by on_message_complete, taken by parse_responses */
    bool in_request;    /* a started request has no outcome yet */
    bool restart;       /* start a new connection once closed */
    bool recv_retry;    /* recv ran out of provided buffers: re-arm at the end of the tick */
    bool deferred;      /* on run->deferred */
    bool done;          /* the scenario said client_done: counted in run->done */
    struct slot *next_deferred;
    uint64_t restart_delay_ms;
    uint64_t conn_start_ns, req_start_ns;
    mdm_buf_t request; /* plaintext of the request being written */
    mdm_buf_t body;    /* body of the response being read */
    mdm_buf_t sending; /* ciphertext of the send in flight */
    mdm_op_t connect_op, recv_op, send_op, cancel_op;
    mdm_timer_t timer; /* request timeout, drain bound or reconnect backoff */
};

struct run {
    const struct bench_options *o;
    struct bench_stats *st;
    mdm_loop_t loop;
    struct slot *slots;
    http_parser_settings settings;
    void *session;     /* resumable session of the first full handshake (resume) */
    bool stopping;     /* no new requests */
    unsigned active;   /* slots not IDLE */
    unsigned done;     /* slots whose scenario client is done */
    struct slot *deferred; /* slots to look at once the tick's callbacks are done */
    uint64_t start_ns;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t bench_stats_errors(const struct bench_stats *st)
{
    uint64_t n = 0;
    for (int k = BENCH_OK + 1; k < BENCH_OUTCOMES; k++)
        n += st->completed[k];
    return n;
}

static void note_error(struct run *r, enum bench_outcome kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Counts an error of kind for the current request and keeps the first message of each kind. */
static void note_error(struct run *r, enum bench_outcome kind, const char *fmt, ...)
{
    r->st->completed[kind]++;
    char *msg = r->st->first_error[kind];
    if (msg[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(r->st->first_error[kind]), fmt, ap);
    va_end(ap);
}

static bool limit_reached(const struct run *r)
{
    return r->o->requests && r->st->started >= r->o->requests;
}

static bool may_start(const struct run *r)
{
    return !r->stopping && !limit_reached(r);
}

static void slot_start(struct slot *s);
static void maybe_finalize(struct slot *s);

/* True (and counted once) when the scenario has nothing more for this slot. */
static bool slot_done(struct slot *s)
{
    const struct bench_scenario *sc = s->run->o->scenario;
    if (!s->done && sc->client_done && sc->client_done(sc->arg, s->client_state)) {
        s->done = true;
        s->run->done++;
    }
    return s->done;
}

/* Queues s for run_deferred at the end of this tick. */
static void defer(struct slot *s)
{
    if (s->deferred)
        return;
    s->deferred = true;
    s->next_deferred = s->run->deferred;
    s->run->deferred = s;
}

static void slot_close(struct slot *s, bool restart, uint64_t delay_ms);
static void drive(struct slot *s);

/* Ends the current request with an error and closes the connection. */
static void slot_fail(struct slot *s, enum bench_outcome kind, const char *what)
{
    /* Counted even outside a request (a keep-alive connection failing to connect): errors are
     * events, and with a new connection per request each one is also a failed request. */
    note_error(s->run, kind, "%s", what);
    s->in_request = false;
    slot_close(s, true, kind == BENCH_ERR_CONNECT ? BACKOFF_MS : 0);
}

/* ---- sending ---- */

/* Starts a send of pending ciphertext unless one is in flight. */
static void flush(struct slot *s)
{
    if (s->send_op.pending || s->state == S_CLOSING)
        return;
    if (s->sending.len == 0) {
        mdm_buf_t *out = mdm_tls_cipher_out(s->tls);
        if (out->len == 0)
            return;
        mdm_buf_reset(&s->sending);
        mdm_buf_t tmp = *out; /* hand TLS our empty buffer, keep its bytes stable */
        *out = s->sending;
        s->sending = tmp;
    }
    mdm_loop_send(&s->run->loop, &s->send_op, s->fd, mdm_buf_head(&s->sending), s->sending.len);
}

static void on_send(mdm_op_t *op)
{
    struct slot *s = MDM_CONTAINER_OF(op, struct slot, send_op);
    if (op->res > 0)
        mdm_buf_consume(&s->sending, (size_t)op->res);
    if (s->state == S_CLOSING) {
        defer(s);
        return;
    }
    if (op->res <= 0) {
        slot_fail(s, BENCH_ERR_CLOSED, op->res < 0 ? mdm_strerror(op->res) : "send returned 0");
        return;
    }
    flush(s);
}

/* ---- requests and responses ---- */

/* Writes the next request, or closes the slot when no more may start. */
static void send_request(struct slot *s)
{
    struct run *r = s->run;
    if (!s->in_request) {
        if (!may_start(r) || slot_done(s)) {
            slot_close(s, false, 0);
            return;
        }
        r->st->started++;
        s->in_request = true;
        s->req_start_ns = now_ns();
    } else {
        s->req_start_ns = s->conn_start_ns; /* new connection per request: counted at connect */
    }
    mdm_buf_reset(&s->request);
    mdm_buf_reset(&s->body);
    s->response_done = false;
    http_parser_init(&s->parser, HTTP_RESPONSE);
    s->parser.data = s;
    const struct bench_scenario *sc = r->o->scenario;
    int ret = sc->build_request(sc->arg, s->client_state, r->o->new_conn, &s->request);
    if (ret != 0) {
        slot_fail(s, BENCH_ERR_HTTP, "the scenario could not build a request");
        return;
    }
    ret = mdm_tls_write(s->tls, mdm_buf_head(&s->request), s->request.len);
    if (ret != 0) {
        slot_fail(s, BENCH_ERR_TLS, mdm_strerror(ret));
        return;
    }
    s->state = S_WAITING;
    if (!r->o->new_conn)
        mdm_timer_arm(&r->loop, &s->timer, r->o->timeout_ms);
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct slot *s = p->data;
    if (s->body.len + len > BODY_MAX || mdm_buf_append(&s->body, at, len) != 0)
        return 1; /* stops the parser with HPE_CB_body */
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct slot *s = p->data;
    s->response_done = true;
    http_parser_pause(p, 1); /* hand control back right after this response */
    return 0;
}

static void keep_session(struct slot *s)
{
    struct run *r = s->run;
    if (!r->o->resume || r->session || mdm_tls_session_resumed(s->tls))
        return;
    void *session = NULL;
    if (mdm_tls_conn_get_session(s->tls, &session) == 0)
        r->session = session;
}

/* Judges the response just parsed and moves on: next request, or wait for the close. */
static void finish_response(struct slot *s)
{
    struct run *r = s->run;
    uint64_t t = now_ns();
    mdm_timer_disarm(&r->loop, &s->timer);
    struct bench_response resp = {
        .status = (int)s->parser.status_code,
        .body = mdm_buf_head(&s->body),
        .body_len = s->body.len,
        .keep_alive = http_should_keep_alive(&s->parser) != 0,
    };
    const struct bench_scenario *sc = r->o->scenario;
    enum bench_outcome out = sc->check_response(sc->arg, s->client_state, &resp);
    s->in_request = false;
    if (out == BENCH_OK) {
        r->st->completed[BENCH_OK]++;
        bench_hist_record(&r->st->latency, t - s->req_start_ns);
    } else {
        note_error(r, out, "HTTP %d", resp.status);
    }
    r->st->elapsed_ns = t - r->start_ns;
    keep_session(s);
    if (!r->o->new_conn && resp.keep_alive && sc->end_connection &&
        sc->end_connection(sc->arg, s->client_state)) {
        slot_close(s, true, 0); /* the client ends this connection and opens the next */
        return;
    }
    if (r->o->new_conn || !resp.keep_alive) {
        if (!r->o->new_conn)
            r->st->server_closes++;
        s->state = S_DRAINING;
        mdm_timer_arm(&r->loop, &s->timer, DRAIN_MS);
        return;
    }
    send_request(s);
}

/* Frames responses out of plain_in. At most one response is outstanding (no pipelining). */
static void parse_responses(struct slot *s, bool eof)
{
    mdm_buf_t *plain = mdm_tls_plain_in(s->tls);
    while (s->state == S_WAITING && (plain->len || eof)) {
        size_t len = plain->len;
        size_t n = http_parser_execute(&s->parser, &s->run->settings,
                                       len ? (const char *)mdm_buf_head(plain) : NULL, len);
        mdm_buf_consume(plain, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&s->parser);
        if (e == HPE_PAUSED)
            http_parser_pause(&s->parser, 0);
        else if (e != HPE_OK) {
            slot_fail(s, BENCH_ERR_HTTP, http_errno_description(e));
            return;
        }
        if (s->response_done) {
            s->response_done = false;
            finish_response(s);
            continue;
        }
        if (len == 0)
            break; /* eof delivered and the response is still incomplete */
    }
}

/* ---- receiving and the TLS pump ---- */

static void arm_recv(struct slot *s)
{
    if (s->recv_op.pending || s->state == S_CLOSING)
        return;
    mdm_loop_recv_select(&s->run->loop, &s->recv_op, s->fd, MDM_LOOP_BGID, RECV_BUFFER_SIZE);
}

static void on_handshake(struct slot *s)
{
    struct run *r = s->run;
    r->st->handshakes++;
    if (mdm_tls_session_resumed(s->tls))
        r->st->resumed++;
    bench_hist_record(&r->st->handshake, now_ns() - s->conn_start_ns);
    send_request(s);
}

/* Runs TLS over what arrived, frames responses, sends what TLS produced, re-arms the recv. */
static void drive(struct slot *s)
{
    int ret = 0;
    for (int round = 0; round < ADVANCE_ROUNDS; round++) {
        ret = mdm_tls_advance(s->tls);
        bool full = mdm_tls_plain_in(s->tls)->len >= MDM_TLS_PLAIN_IN_MAX_DEFAULT;
        if (s->state == S_HANDSHAKE && mdm_tls_handshake_done(s->tls))
            on_handshake(s);
        if (s->state == S_WAITING)
            parse_responses(s, ret == MDM_ECLOSED);
        if (s->state == S_DRAINING)
            mdm_buf_reset(mdm_tls_plain_in(s->tls)); /* nothing more is expected */
        if (ret != 0 || !full || s->state == S_CLOSING || s->state == S_IDLE)
            break;
    }
    if (s->state == S_CLOSING || s->state == S_IDLE)
        return;
    flush(s);
    if (ret == 0) {
        arm_recv(s);
    } else if (ret == MDM_ETLS) {
        const char *why = mdm_tls_last_error(s->tls);
        slot_fail(s, BENCH_ERR_TLS, why[0] ? why : "TLS error");
    } else if (s->state == S_DRAINING) {
        slot_close(s, true, 0); /* the close we were waiting for */
    } else {
        slot_fail(s, s->state == S_HANDSHAKE ? BENCH_ERR_TLS : BENCH_ERR_CLOSED,
                  ret == MDM_ECLOSED ? "the server closed the connection" : mdm_strerror(ret));
    }
}

static void on_recv(mdm_op_t *op)
{
    struct slot *s = MDM_CONTAINER_OF(op, struct slot, recv_op);
    struct run *r = s->run;
    int fed = 0;
    if (op->res > 0) {
        fed = mdm_tls_feed(s->tls, mdm_loop_buffer(&r->loop, op), (size_t)op->res);
        mdm_loop_release_buffer(&r->loop, op);
    } else if (op->res == 0) {
        mdm_tls_feed_eof(s->tls);
    }
    if (s->state == S_CLOSING) {
        defer(s);
        return;
    }
    if (op->res == -ENOBUFS) { /* every provided buffer is taken: try again after this tick */
        s->recv_retry = true;
        defer(s);
        return;
    }
    if (op->res < 0) {
        if (s->state == S_DRAINING)
            slot_close(s, true, 0);
        else
            slot_fail(s, s->state == S_HANDSHAKE ? BENCH_ERR_TLS : BENCH_ERR_CLOSED,
                      mdm_strerror(op->res));
        return;
    }
    if (fed != 0) {
        slot_fail(s, BENCH_ERR_TLS, mdm_strerror(fed));
        return;
    }
    drive(s);
}

/* Tick hook: finishes closes and re-arms receives that found no provided buffer. Takes the
 * list as it stands; slots deferred while it runs wait for the next tick. */
static void run_deferred(mdm_loop_t *loop, void *arg)
{
    (void)loop;
    struct run *r = arg;
    struct slot *s = r->deferred;
    r->deferred = NULL;
    while (s) {
        struct slot *next = s->next_deferred;
        s->deferred = false;
        s->next_deferred = NULL;
        bool retry = s->recv_retry;
        s->recv_retry = false;
        if (s->state == S_CLOSING)
            maybe_finalize(s);
        else if (retry)
            arm_recv(s);
        s = next;
    }
}

/* ---- connecting and closing ---- */

static void on_connect(mdm_op_t *op)
{
    struct slot *s = MDM_CONTAINER_OF(op, struct slot, connect_op);
    if (s->state == S_CLOSING) {
        defer(s);
        return;
    }
    if (op->res < 0) {
        slot_fail(s, BENCH_ERR_CONNECT, mdm_strerror(op->res));
        return;
    }
    s->run->st->connects++;
    s->state = S_HANDSHAKE;
    drive(s); /* produces the ClientHello */
}

/* Opens a connection (counting a request at once with a new connection per request). */
static void slot_start(struct slot *s)
{
    struct run *r = s->run;
    const struct bench_options *o = r->o;
    if (s->state != S_IDLE || !may_start(r) || slot_done(s))
        return;
    const struct bench_scenario *sc = o->scenario;
    mdm_tls_ctx_t *ctx = sc->conn_tls ? sc->conn_tls(sc->arg, s->client_state) : NULL;
    s->conn_start_ns = now_ns();
    if (o->new_conn) {
        r->st->started++;
        s->in_request = true;
    }
    r->active++;
    s->state = S_CONNECTING;
    mdm_timer_arm(&r->loop, &s->timer, o->timeout_ms);
    s->fd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        slot_fail(s, BENCH_ERR_CONNECT, mdm_strerror(-errno));
        return;
    }
    int one = 1;
    (void)setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int ret = mdm_tls_conn_new(&s->tls, ctx ? ctx : o->tls, o->sni);
    if (ret == 0 && o->resume && r->session)
        ret = mdm_tls_conn_set_session(s->tls, r->session);
    if (ret != 0) {
        slot_fail(s, BENCH_ERR_TLS, mdm_strerror(ret));
        return;
    }
    mdm_loop_connect(&r->loop, &s->connect_op, s->fd, (const struct sockaddr *)&o->addr, o->addr_len);
}

/* Begins closing: cancels the op waiting on the peer; the rest ends in maybe_finalize. */
static void slot_close(struct slot *s, bool restart, uint64_t delay_ms)
{
    struct run *r = s->run;
    if (s->state == S_IDLE || s->state == S_CLOSING)
        return;
    s->state = S_CLOSING;
    s->restart = restart;
    s->restart_delay_ms = delay_ms;
    mdm_timer_disarm(&r->loop, &s->timer);
    if (s->connect_op.pending)
        mdm_loop_cancel(&r->loop, &s->cancel_op, &s->connect_op);
    else if (s->recv_op.pending)
        mdm_loop_cancel(&r->loop, &s->cancel_op, &s->recv_op);
    defer(s); /* the caller may still be using fd and TLS */
}

/* Releases fd and TLS once nothing is in flight, then maybe reconnects. Only from
 * run_deferred (see the invariants at the top). */
static void maybe_finalize(struct slot *s)
{
    struct run *r = s->run;
    if (s->state != S_CLOSING || s->connect_op.pending || s->recv_op.pending ||
        s->send_op.pending || s->cancel_op.pending || s->deferred)
        return;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    mdm_tls_conn_free(s->tls);
    s->tls = NULL;
    mdm_buf_reset(&s->sending);
    s->state = S_IDLE;
    r->active--;
    if (!s->restart || !may_start(r))
        return;
    if (s->restart_delay_ms)
        mdm_timer_arm(&r->loop, &s->timer, s->restart_delay_ms);
    else
        slot_start(s);
}

static void on_cancel(mdm_op_t *op)
{
    defer(MDM_CONTAINER_OF(op, struct slot, cancel_op));
}

static void on_timer(mdm_timer_t *t)
{
    struct slot *s = MDM_CONTAINER_OF(t, struct slot, timer);
    switch (s->state) {
    case S_IDLE: /* reconnect backoff over */
        slot_start(s);
        break;
    case S_DRAINING: /* the server did not close in time; the request itself succeeded */
        slot_close(s, true, 0);
        break;
    case S_CLOSING:
        break;
    case S_CONNECTING:
    case S_HANDSHAKE:
    case S_WAITING:
        slot_fail(s, BENCH_ERR_TIMEOUT, "no response within the request timeout");
        break;
    }
}

/* ---- the run ---- */

static unsigned pow2_at_least(unsigned n)
{
    unsigned p = 1;
    while (p < n && p < (1u << 30))
        p <<= 1;
    return p;
}

static int run_init(struct run *r, const struct bench_options *o, struct bench_stats *st)
{
    memset(r, 0, sizeof(*r));
    r->o = o;
    r->st = st;
    r->settings.on_body = on_body;
    r->settings.on_message_complete = on_message_complete;
    unsigned entries = pow2_at_least(o->connections * 2);
    entries = entries < 256 ? 256 : entries > 4096 ? 4096 : entries;
    int ret = mdm_loop_init(&r->loop, entries);
    if (ret != 0)
        return ret;
    unsigned bufs = pow2_at_least(o->connections);
    bufs = bufs < 16 ? 16 : bufs > RECV_BUFFERS_MAX ? RECV_BUFFERS_MAX : bufs;
    if ((ret = mdm_loop_setup_buffers(&r->loop, bufs, RECV_BUFFER_SIZE)) != 0 ||
        (ret = mdm_loop_add_tick_hook(&r->loop, run_deferred, r)) != 0)
        return ret;
    r->slots = calloc(o->connections, sizeof(*r->slots));
    if (!r->slots)
        return -ENOMEM;
    const struct bench_scenario *sc = o->scenario;
    for (unsigned i = 0; i < o->connections; i++) {
        struct slot *s = &r->slots[i];
        s->run = r;
        s->index = i;
        s->fd = -1;
        s->connect_op.cb = on_connect;
        s->recv_op.cb = on_recv;
        s->send_op.cb = on_send;
        s->cancel_op.cb = on_cancel;
        mdm_timer_init(&s->timer, on_timer);
        mdm_buf_init(&s->request, 0);
        mdm_buf_init(&s->body, BODY_MAX);
        mdm_buf_init(&s->sending, MDM_TLS_CIPHER_OUT_MAX_DEFAULT);
        if (sc->client_init && (ret = sc->client_init(sc->arg, i, &s->client_state)) != 0)
            return ret;
    }
    return 0;
}

static void run_dispose(struct run *r)
{
    const struct bench_scenario *sc = r->o->scenario;
    /* The ring goes first: the kernel must be done with send buffers before they are freed. */
    if (r->loop.heap)
        mdm_loop_dispose(&r->loop);
    for (unsigned i = 0; r->slots && i < r->o->connections; i++) {
        struct slot *s = &r->slots[i];
        if (s->fd >= 0)
            close(s->fd);
        mdm_tls_conn_free(s->tls);
        mdm_buf_dispose(&s->request);
        mdm_buf_dispose(&s->body);
        mdm_buf_dispose(&s->sending);
        if (sc->client_free && s->client_state)
            sc->client_free(sc->arg, s->client_state);
    }
    free(r->slots);
    mdm_tls_session_free(r->session);
}

/* Cuts off every slot still busy; their requests count as unfinished. */
static void cut_off(struct run *r)
{
    for (unsigned i = 0; i < r->o->connections; i++) {
        struct slot *s = &r->slots[i];
        if (s->in_request)
            r->st->unfinished++;
        s->in_request = false;
        mdm_timer_disarm(&r->loop, &s->timer);
        slot_close(s, false, 0);
    }
}

int bench_run(const struct bench_options *o, struct bench_stats *st)
{
    memset(st, 0, sizeof(*st));
    bench_hist_init(&st->latency);
    bench_hist_init(&st->handshake);
    struct run *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    int ret = run_init(r, o, st);
    if (ret != 0)
        goto out;

    uint64_t grace_ms = o->timeout_ms < GRACE_MAX_MS ? o->timeout_ms : GRACE_MAX_MS;
    r->start_ns = now_ns();
    uint64_t stop_at = r->start_ns + o->duration_ms * 1000000u;
    uint64_t cut_at = UINT64_MAX, end_at = UINT64_MAX;
    for (unsigned i = 0; i < o->connections; i++)
        slot_start(&r->slots[i]);

    /* Bounded in time: stop_at, then grace_ms, then ABORT_MS at most. Slots waiting to
     * reconnect are not active, so the run only ends early once it is stopping. */
    while (!r->stopping || r->active > 0) {
        int n = mdm_loop_run_once(&r->loop, TICK_MS);
        if (n < 0) {
            ret = n;
            break;
        }
        uint64_t t = now_ns();
        if (!r->stopping && (t >= stop_at || limit_reached(r) || r->done == o->connections ||
                             (o->interrupted && *o->interrupted))) {
            r->stopping = true;
            cut_at = t + grace_ms * 1000000u;
        }
        if (cut_at != UINT64_MAX && end_at == UINT64_MAX &&
            (t >= cut_at || (o->interrupted && *o->interrupted > 1))) {
            cut_off(r);
            end_at = t + ABORT_MS * 1000000u;
        }
        if (t >= end_at)
            break; /* ops the kernel never completed; run_dispose closes their fds */
    }
    if (st->elapsed_ns == 0)
        st->elapsed_ns = now_ns() - r->start_ns;
out:
    run_dispose(r);
    free(r);
    return ret;
}
