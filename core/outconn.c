/*
 * outconn: an outbound TLS + HTTP/2 connection driven by ring completions. See outconn.h.
 *
 * States: IDLE -> CONNECTING -> HANDSHAKE -> READY -> CLOSING -> CLOSED. Received bytes land
 * in a per-connection buffer and go straight into TLS; decrypted bytes go into h2c; h2c's
 * frames go through mdm_tls_write (never more than mdm_tls_write_room, so a write never
 * fails for lack of room) and cipher_out is swapped into `sending` for the one send in
 * flight, so its bytes stay put while the kernel holds them.
 *
 * Invariants: at most one connect, recv, send and cancel in flight, each tracked by a busy
 * flag that is cleared when its callback runs (not when its CQE is collected: core/loop
 * collects a whole tick before running callbacks). The fd and the CLOSED event happen only in
 * finish(), which runs as the last statement of an op or timer callback once no flag is set,
 * so the caller may free the connection from its CLOSED callback.
 *
 * Owning thread: the loop's.
 */
#include "core/outconn.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"

#define RECV_BYTES 16384
#define CONNECT_TIMEOUT_MS_DEFAULT 10000
#define LINGER_MS 1000    /* a closing connection waits this long for its close_notify send */
#define ADVANCE_ROUNDS 64 /* decrypt rounds per receive while plain_in keeps filling up */

enum state { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_READY, ST_CLOSING, ST_CLOSED };

struct mdm_outconn {
    mdm_loop_t *loop;
    struct mdm_outconn_opts o;
    struct sockaddr_storage addr;
    enum state state;
    int err; /* reason given to CLOSED */
    int fd;
    mdm_tls_conn_t *tls;
    mdm_h2c_t *h2c;
    mdm_buf_t sending; /* ciphertext of the send in flight */
    bool connect_busy, recv_busy, send_busy, cancel_busy;
    bool shut; /* shutdown(2) done while closing */
    mdm_op_t connect_op, recv_op, send_op, cancel_op;
    mdm_timer_t timer; /* connect timeout, then close linger */
    uint8_t rbuf[RECV_BYTES];
};

static void conn_close(mdm_outconn_t *c, int err);

/* ---- sending ---- */

static void flush(mdm_outconn_t *c)
{
    if (c->send_busy || c->fd < 0 || c->shut)
        return;
    if (c->sending.len == 0) {
        mdm_buf_t *out = mdm_tls_cipher_out(c->tls);
        if (out->len == 0)
            return;
        mdm_buf_reset(&c->sending);
        c->sending.max = out->max;
        mdm_buf_t tmp = *out; /* TLS keeps filling our empty buffer; these bytes stay put */
        *out = c->sending;
        c->sending = tmp;
    }
    c->send_busy = true;
    mdm_loop_send(c->loop, &c->send_op, c->fd, mdm_buf_head(&c->sending), c->sending.len);
}

/* Moves h2c's frames into TLS, then sends. */
static void pump(mdm_outconn_t *c)
{
    while (c->state == ST_READY) {
        size_t room = mdm_tls_write_room(c->tls);
        if (room == 0)
            break; /* resumed when a send completes */
        const uint8_t *p;
        size_t n;
        int ret = mdm_h2c_output(c->h2c, room, &p, &n);
        if (ret != 0) {
            conn_close(c, ret);
            break;
        }
        if (n == 0 || c->state != ST_READY)
            break;
        if ((ret = mdm_tls_write(c->tls, p, n)) != 0) {
            conn_close(c, ret);
            break;
        }
    }
    if (c->state == ST_READY && mdm_h2c_closed(c->h2c))
        conn_close(c, mdm_h2c_goaway_received(c->h2c) ? MDM_ECLOSED : MDM_EHTTP);
    flush(c);
}

/* ---- closing ---- */

static void finish(mdm_outconn_t *c)
{
    if (c->state != ST_CLOSING)
        return;
    flush(c); /* close_notify, if it fits */
    if (!c->send_busy && c->recv_busy && !c->shut && c->fd >= 0) {
        shutdown(c->fd, SHUT_RDWR); /* completes the pending recv */
        c->shut = true;
    }
    if (c->connect_busy || c->recv_busy || c->send_busy || c->cancel_busy)
        return;
    mdm_timer_disarm(c->loop, &c->timer);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = ST_CLOSED;
    c->o.event_callback(c, MDM_OUTCONN_CLOSED, c->err, c->o.arg); /* may free c */
}

/* Starts closing; never finishes synchronously (see the invariants). */
static void conn_close(mdm_outconn_t *c, int err)
{
    if (c->state == ST_CLOSING || c->state == ST_CLOSED)
        return;
    bool was_ready = c->state == ST_READY;
    c->state = ST_CLOSING;
    c->err = err;
    if (err)
        mdm_debug("outconn", "closing: %s", mdm_strerror(err));
    mdm_h2c_abort(c->h2c); /* reports what is pending; its callbacks see a closing conn */
    if (was_ready && mdm_tls_shutdown(c->tls) == 0)
        flush(c);
    if (c->connect_busy && !c->cancel_busy) {
        c->cancel_busy = true;
        mdm_loop_cancel(c->loop, &c->cancel_op, &c->connect_op);
    }
    bool busy = c->connect_busy || c->recv_busy || c->send_busy || c->cancel_busy;
    mdm_timer_arm(c->loop, &c->timer, busy ? LINGER_MS : 0);
}

void mdm_outconn_close(mdm_outconn_t *c, int err) { conn_close(c, err); }

/* ---- receiving ---- */

static void arm_recv(mdm_outconn_t *c)
{
    if (c->recv_busy || c->state == ST_CLOSING || c->state == ST_CLOSED)
        return;
    c->recv_busy = true;
    mdm_loop_recv(c->loop, &c->recv_op, c->fd, c->rbuf, sizeof(c->rbuf));
}

static void drive(mdm_outconn_t *c)
{
    int ret = 0;
    for (int round = 0; round < ADVANCE_ROUNDS; round++) {
        ret = mdm_tls_advance(c->tls);
        if (c->state == ST_HANDSHAKE && mdm_tls_handshake_done(c->tls)) {
            const char *alpn = mdm_tls_alpn(c->tls);
            if (!alpn || strcmp(alpn, "h2") != 0) {
                mdm_warn("outconn", "the server did not select ALPN h2 (got %s)",
                         alpn ? alpn : "none");
                conn_close(c, MDM_ETLS);
                return;
            }
            c->state = ST_READY;
            mdm_timer_disarm(c->loop, &c->timer);
            c->o.event_callback(c, MDM_OUTCONN_READY, 0, c->o.arg);
            if (c->state != ST_READY)
                return;
        }
        mdm_buf_t *plain = mdm_tls_plain_in(c->tls);
        bool full = plain->len > 0 && plain->len >= plain->max;
        if (c->state == ST_READY && plain->len > 0) {
            size_t n = plain->len;
            int r = mdm_h2c_recv(c->h2c, mdm_buf_head(plain), n);
            mdm_buf_consume(plain, n);
            if (r != 0) {
                conn_close(c, r);
                return;
            }
            if (c->state != ST_READY)
                return;
        }
        if (ret != 0 || !full)
            break;
    }
    if (c->state != ST_READY && c->state != ST_HANDSHAKE)
        return;
    pump(c);
    if (c->state != ST_READY && c->state != ST_HANDSHAKE)
        return;
    if (ret != 0) {
        if (ret == MDM_ETLS)
            mdm_debug("outconn", "TLS: %s", mdm_tls_last_error(c->tls));
        conn_close(c, ret);
        return;
    }
    arm_recv(c);
}

/* ---- completions ---- */

static void on_recv(mdm_op_t *op)
{
    mdm_outconn_t *c = MDM_CONTAINER_OF(op, mdm_outconn_t, recv_op);
    c->recv_busy = false;
    if (c->state == ST_CLOSING) {
        finish(c);
        return;
    }
    if (op->res < 0) {
        conn_close(c, op->res);
    } else if (op->res == 0) {
        mdm_tls_feed_eof(c->tls);
        drive(c);
    } else {
        int ret = mdm_tls_feed(c->tls, c->rbuf, (size_t)op->res);
        if (ret != 0)
            conn_close(c, ret); /* cipher-in full although we advance after every feed */
        else
            drive(c);
    }
    finish(c);
}

static void on_send(mdm_op_t *op)
{
    mdm_outconn_t *c = MDM_CONTAINER_OF(op, mdm_outconn_t, send_op);
    c->send_busy = false;
    if (op->res > 0)
        mdm_buf_consume(&c->sending, (size_t)op->res);
    if (c->state == ST_CLOSING) {
        if (op->res <= 0)
            mdm_buf_reset(&c->sending); /* give up on close_notify */
        finish(c);
        return;
    }
    if (op->res <= 0) {
        conn_close(c, op->res < 0 ? op->res : MDM_ECLOSED);
    } else if (c->state == ST_HANDSHAKE) {
        drive(c); /* the handshake may have waited for cipher_out room */
    } else {
        pump(c);
    }
    finish(c);
}

static void on_connect(mdm_op_t *op)
{
    mdm_outconn_t *c = MDM_CONTAINER_OF(op, mdm_outconn_t, connect_op);
    c->connect_busy = false;
    if (c->state == ST_CLOSING) {
        finish(c);
        return;
    }
    if (op->res < 0) {
        conn_close(c, op->res);
    } else {
        c->state = ST_HANDSHAKE;
        drive(c); /* produces the ClientHello */
    }
    finish(c);
}

static void on_cancel(mdm_op_t *op)
{
    mdm_outconn_t *c = MDM_CONTAINER_OF(op, mdm_outconn_t, cancel_op);
    c->cancel_busy = false;
    finish(c);
}

static void on_timer(mdm_timer_t *t)
{
    mdm_outconn_t *c = MDM_CONTAINER_OF(t, mdm_outconn_t, timer);
    if (c->state == ST_CLOSING) {
        /* linger over (or nothing was in flight): stop waiting for the peer */
        if (c->fd >= 0 && !c->shut && (c->recv_busy || c->send_busy)) {
            shutdown(c->fd, SHUT_RDWR);
            c->shut = true;
        }
        mdm_buf_reset(&c->sending);
        if (c->send_busy || c->recv_busy || c->connect_busy || c->cancel_busy)
            mdm_timer_arm(c->loop, &c->timer, LINGER_MS);
        finish(c);
        return;
    }
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE) {
        conn_close(c, -ETIMEDOUT);
        finish(c);
    }
}

/* ---- public API ---- */

int mdm_outconn_new(mdm_outconn_t **out, mdm_loop_t *loop, const struct mdm_outconn_opts *o)
{
    *out = NULL;
    if (!o->addr || o->addr_len > sizeof(struct sockaddr_storage) || !o->tls ||
        !o->event_callback)
        return MDM_ECONFIG;
    mdm_outconn_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    c->o = *o;
    memcpy(&c->addr, o->addr, o->addr_len);
    c->o.addr = (const struct sockaddr *)&c->addr;
    c->o.sni = NULL; /* only used below; not kept */
    c->fd = -1;
    c->connect_op.cb = on_connect;
    c->recv_op.cb = on_recv;
    c->send_op.cb = on_send;
    c->cancel_op.cb = on_cancel;
    mdm_timer_init(&c->timer, on_timer);
    mdm_buf_init(&c->sending, 0);
    int ret = mdm_tls_conn_new(&c->tls, o->tls, o->sni);
    if (ret == 0)
        ret = mdm_h2c_new(&c->h2c, &o->h2);
    if (ret != 0) {
        mdm_outconn_free(c);
        return ret;
    }
    *out = c;
    return 0;
}

void mdm_outconn_start(mdm_outconn_t *c)
{
    assert(c->state == ST_IDLE);
    c->state = ST_CONNECTING;
    mdm_timer_arm(c->loop, &c->timer,
                  c->o.connect_timeout_ms ? c->o.connect_timeout_ms : CONNECT_TIMEOUT_MS_DEFAULT);
    c->fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_close(c, -errno);
        return;
    }
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->connect_busy = true;
    mdm_loop_connect(c->loop, &c->connect_op, c->fd, (const struct sockaddr *)&c->addr,
                     c->o.addr_len);
}

mdm_h2c_t *mdm_outconn_h2c(mdm_outconn_t *c) { return c->h2c; }

bool mdm_outconn_ready(const mdm_outconn_t *c) { return c->state == ST_READY; }

void mdm_outconn_flush(mdm_outconn_t *c)
{
    if (c->state == ST_READY)
        pump(c);
}

void mdm_outconn_free(mdm_outconn_t *c)
{
    if (!c)
        return;
    assert(c->state == ST_IDLE || c->state == ST_CLOSED);
    if (c->fd >= 0)
        close(c->fd);
    mdm_timer_disarm(c->loop, &c->timer);
    mdm_h2c_free(c->h2c);
    mdm_tls_conn_free(c->tls);
    mdm_buf_dispose(&c->sending);
    free(c);
}
