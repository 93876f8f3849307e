/*
 * server: HTTPS/1.1 connections on the shard's io_uring ring. See server.h.
 *
 * A connection moves through: handshake -> reading a request -> handling (the handler owns
 * the exchange) -> writing -> reading the next request ... -> closing.
 *
 * Transport: the few tr_* functions below are the only code that touches TLS. A listener
 * without a TLS context (plain HTTP, behind a TLS-terminating proxy) has conn->tls == NULL;
 * its bytes move straight from the receive buffers into conn->plain_in (read by the parser)
 * and from the response writer into conn->plain_out (swapped into conn->sending), and its
 * "handshake" is done at once.
 *
 * Invariants:
 * - at most one recv and one send in flight; the send reads from conn->sending, whose bytes
 *   stay put until the send completes (new TLS output collects in the TLS layer's buffer and
 *   is swapped in only when no send is in flight);
 * - no recv is armed while a handler owns the exchange (the next pipelined request waits);
 * - a connection is freed only when it is closing, no op is in flight and no handler owns
 *   its exchange (a late mdm_exchange_respond on a closed connection only releases it).
 *
 * Owning thread: each connection belongs to the shard that accepted it.
 */
#include "core/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

#define RECV_BUFFERS 1024    /* provided receive buffers per shard */
#define RECV_BUFFER_SIZE 16384

struct mdm_exchange {
    mdm_http_request_t *req;
    bool active; /* a handler owns it */
};

enum conn_state {
    CONN_HANDSHAKE,
    CONN_READING,  /* waiting for / reading a request */
    CONN_HANDLING, /* a handler owns the exchange */
    CONN_CLOSING,
};

struct conn {
    struct shard_server *ss;
    int fd;
    enum conn_state state;
    mdm_tls_conn_t *tls;   /* NULL on a plain-HTTP listener */
    mdm_buf_t plain_in;    /* plain HTTP only: received bytes not yet parsed */
    mdm_buf_t plain_out;   /* plain HTTP only: bytes to send (the TLS layer's cipher_out) */
    mdm_http_parser_t parser;
    mdm_exchange_t exchange;
    const mdm_http_route_t *route; /* matched at headers time */
    mdm_op_t recv_op, send_op, close_op;
    bool recv_inflight, send_inflight, close_inflight;
    bool peer_eof;
    bool close_after_send; /* response says Connection: close */
    bool overloaded;       /* accepted past max_connections: answer 503 */
    bool request_started;  /* bytes of the current request have arrived */
    bool dispatching;      /* inside a handler call from conn_process */
    char allow[96];        /* Allow header value for a 405 answer */
    char peer_addr[64];    /* client "ip:port" ("[ip6]:port"), captured at accept */
    mdm_buf_t sending;     /* bytes of the send in flight */
    mdm_buf_t pending;     /* response bytes not yet handed to the transport (large
                              responses go out in pieces as sends complete) */
    mdm_timer_t timer;       /* handshake/header or idle deadline */
    mdm_timer_t retry_timer; /* re-arms recv after the shard ran out of receive buffers */
    struct conn *prev, *next;
};

/* One shard's part of a server. */
struct shard_server {
    mdm_server_t *server;
    mdm_shard_t *shard;
    int listen_fd;
    mdm_op_t accept_op;
    bool accepting;
    bool accept_inflight;
    unsigned n_conns;
    struct conn *conns; /* doubly linked */
    uint64_t accepted, refused, requests;
};

struct mdm_server {
    struct mdm_server_opts opts;
    char name[32];
    char listen[128];
    int port;
    unsigned n_shards;
    int *fds;
    struct shard_server *per_shard;
    enum mdm_shard_slot slot;
};

static void conn_process(struct conn *c);
static void pump_pending(struct conn *c);
static void write_plain(struct conn *c, const mdm_buf_t *resp);
static void conn_flush(struct conn *c);
static void conn_close(struct conn *c);

/* ---- listening sockets ---- */

static int parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec)
        return MDM_ECONFIG;
    size_t hlen = (size_t)(colon - spec);
    if (hlen >= sizeof(host))
        return MDM_ECONFIG;
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return MDM_ECONFIG;
    memset(ss, 0, sizeof(*ss));
    if (host[0] == '[' && host[hlen - 1] == ']') {
        host[hlen - 1] = '\0';
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
            return MDM_ECONFIG;
        *len = sizeof(*a);
        return 0;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
        return MDM_ECONFIG;
    *len = sizeof(*a);
    return 0;
}

static int open_listener(struct sockaddr_storage *addr, socklen_t len)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (addr->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)addr, len) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int mdm_server_new(mdm_server_t **out, const struct mdm_server_opts *o, unsigned n_shards)
{
    struct sockaddr_storage addr;
    socklen_t alen;
    if (parse_listen(o->listen, &addr, &alen) != 0) {
        mdm_error("server", "%s: cannot parse listen address '%s' (want host:port or [v6]:port)",
                  o->name, o->listen);
        return MDM_ECONFIG;
    }
    mdm_server_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->opts = *o;
    snprintf(s->name, sizeof(s->name), "%s", o->name);
    snprintf(s->listen, sizeof(s->listen), "%s", o->listen);
    s->opts.name = s->name;
    s->opts.listen = s->listen;
    s->n_shards = n_shards;
    s->fds = calloc(n_shards, sizeof(int));
    s->per_shard = calloc(n_shards, sizeof(*s->per_shard));
    if (!s->fds || !s->per_shard) {
        mdm_server_free(s);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < n_shards; i++)
        s->fds[i] = -1;
    for (unsigned i = 0; i < n_shards; i++) {
        int fd = open_listener(&addr, alen);
        if (fd < 0) {
            mdm_error("server", "%s: cannot listen on %s: %s", o->name, o->listen,
                      mdm_strerror(fd));
            mdm_server_free(s);
            return fd;
        }
        s->fds[i] = fd;
        if (i == 0) { /* resolve port 0 once so every shard's socket shares it */
            struct sockaddr_storage bound;
            socklen_t blen = sizeof(bound);
            getsockname(fd, (struct sockaddr *)&bound, &blen);
            uint16_t port = bound.ss_family == AF_INET6
                                ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                : ntohs(((struct sockaddr_in *)&bound)->sin_port);
            s->port = port;
            if (addr.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&addr)->sin6_port = htons(port);
            else
                ((struct sockaddr_in *)&addr)->sin_port = htons(port);
        }
    }
    *out = s;
    return 0;
}

int mdm_server_port(const mdm_server_t *s) { return s->port; }

void mdm_server_free(mdm_server_t *s)
{
    if (!s)
        return;
    for (unsigned i = 0; s->fds && i < s->n_shards; i++)
        if (s->fds[i] >= 0)
            close(s->fds[i]);
    free(s->fds);
    free(s->per_shard);
    free(s);
}

/* ---- transport: TLS, or plaintext when the listener has no TLS context ---- */

/* Caps of the plaintext buffers, as the TLS layer's defaults: past PLAIN_IN_MAX the
 * connection closes, as it does when TLS refuses more ciphertext. */
#define PLAIN_IN_MAX MDM_TLS_CIPHER_IN_MAX_DEFAULT
#define PLAIN_OUT_MAX MDM_TLS_CIPHER_OUT_MAX_DEFAULT

static const struct mdm_tls_peer no_peer = {.present = false};

static int tr_new(struct conn *c, mdm_tls_ctx_t *ctx)
{
    mdm_buf_init(&c->plain_in, PLAIN_IN_MAX);
    mdm_buf_init(&c->plain_out, PLAIN_OUT_MAX);
    return ctx ? mdm_tls_conn_new(&c->tls, ctx, NULL) : 0;
}

static void tr_free(struct conn *c)
{
    mdm_tls_conn_free(c->tls);
    c->tls = NULL;
    mdm_buf_dispose(&c->plain_in);
    mdm_buf_dispose(&c->plain_out);
}

/* Bytes received from the socket. */
static int tr_feed(struct conn *c, const void *data, size_t len)
{
    return c->tls ? mdm_tls_feed(c->tls, data, len) : mdm_buf_append(&c->plain_in, data, len);
}

static void tr_feed_eof(struct conn *c)
{
    if (c->tls)
        mdm_tls_feed_eof(c->tls);
}

/* Handshake and decryption; plaintext has nothing to do (EOF is seen through peer_eof). */
static int tr_advance(struct conn *c) { return c->tls ? mdm_tls_advance(c->tls) : 0; }

static bool tr_ready(const struct conn *c) { return !c->tls || mdm_tls_handshake_done(c->tls); }

/* Request bytes for the parser. */
static mdm_buf_t *tr_plain_in(struct conn *c)
{
    return c->tls ? mdm_tls_plain_in(c->tls) : &c->plain_in;
}

/* Queues response bytes; all or nothing. */
static int tr_write(struct conn *c, const void *data, size_t len)
{
    return c->tls ? mdm_tls_write(c->tls, data, len) : mdm_buf_append(&c->plain_out, data, len);
}

/* Response bytes the transport can take now. */
static size_t tr_room(struct conn *c)
{
    if (c->tls)
        return mdm_tls_write_room(c->tls);
    return c->plain_out.len < PLAIN_OUT_MAX ? PLAIN_OUT_MAX - c->plain_out.len : 0;
}

/* Bytes to send next. */
static mdm_buf_t *tr_out(struct conn *c)
{
    return c->tls ? mdm_tls_cipher_out(c->tls) : &c->plain_out;
}

/* ---- connection lifecycle ---- */

static mdm_loop_t *conn_loop(struct conn *c) { return &c->ss->shard->loop; }

static void conn_unlink(struct conn *c)
{
    struct shard_server *ss = c->ss;
    if (c->prev)
        c->prev->next = c->next;
    else
        ss->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ss->n_conns--;
}

/* Frees the connection once nothing refers to it any more. */
static void conn_maybe_free(struct conn *c)
{
    if (c->state != CONN_CLOSING || c->recv_inflight || c->send_inflight || c->close_inflight ||
        c->exchange.active)
        return;
    if (c->fd >= 0) {
        mdm_loop_close(conn_loop(c), &c->close_op, c->fd);
        c->close_inflight = true;
        c->fd = -1;
        return;
    }
    mdm_timer_disarm(conn_loop(c), &c->timer);
    mdm_timer_disarm(conn_loop(c), &c->retry_timer);
    conn_unlink(c);
    mdm_http_parser_dispose(&c->parser);
    tr_free(c);
    mdm_buf_dispose(&c->sending);
    mdm_buf_dispose(&c->pending);
    free(c);
}

static void on_close_done(mdm_op_t *op)
{
    struct conn *c = MDM_CONTAINER_OF(op, struct conn, close_op);
    c->close_inflight = false;
    conn_maybe_free(c);
}

static void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSING) {
        conn_maybe_free(c);
        return;
    }
    c->state = CONN_CLOSING;
    mdm_timer_disarm(conn_loop(c), &c->timer);
    mdm_timer_disarm(conn_loop(c), &c->retry_timer);
    if ((c->recv_inflight || c->send_inflight) && c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR); /* completes the pending recv or send at once */
    conn_maybe_free(c);
}

static void arm_read_timer(struct conn *c, bool idle);

/* Closes after what is queued has been sent; a peer that stops reading gets the header
 * timeout to take it, then the connection closes anyway. */
static void conn_close_after_flush(struct conn *c)
{
    c->close_after_send = true;
    arm_read_timer(c, false);
    conn_flush(c);
    if (!c->send_inflight && c->pending.len == 0)
        conn_close(c);
}

static void on_timer(mdm_timer_t *t)
{
    struct conn *c = MDM_CONTAINER_OF(t, struct conn, timer);
    if (c->close_after_send || c->pending.len > 0) {
        conn_close(c); /* the peer does not take what we send */
        return;
    }
    if (c->state == CONN_READING && c->request_started) {
        mdm_buf_t out;
        mdm_buf_init(&out, 0);
        if (mdm_http_write_error(&out, 408, "request not received in time", false) == 0) {
            write_plain(c, &out);
            mdm_buf_dispose(&out);
            conn_close_after_flush(c);
            return;
        }
        mdm_buf_dispose(&out);
    }
    /* Handshake not finished or idle keep-alive: just close. */
    if (c->state != CONN_HANDLING)
        conn_close(c);
}

static void arm_recv(struct conn *c);

static void on_retry_timer(mdm_timer_t *t)
{
    arm_recv(MDM_CONTAINER_OF(t, struct conn, retry_timer));
}

static void arm_read_timer(struct conn *c, bool idle)
{
    const struct mdm_server_opts *o = &c->ss->server->opts;
    mdm_timer_arm(conn_loop(c), &c->timer, idle ? o->idle_timeout_ms : o->header_timeout_ms);
}

/* ---- I/O ---- */

static void arm_recv(struct conn *c)
{
    if (c->recv_inflight || c->peer_eof || c->close_after_send || c->pending.len > 0 ||
        c->state == CONN_CLOSING ||
        c->state == CONN_HANDLING)
        return;
    mdm_loop_recv_select(conn_loop(c), &c->recv_op, c->fd, MDM_LOOP_BGID, RECV_BUFFER_SIZE);
    c->recv_inflight = true;
}

static void on_recv(mdm_op_t *op)
{
    struct conn *c = MDM_CONTAINER_OF(op, struct conn, recv_op);
    mdm_loop_t *loop = conn_loop(c);
    c->recv_inflight = false;
    int res = op->res;
    if (c->state == CONN_CLOSING) {
        mdm_loop_release_buffer(loop, op);
        conn_maybe_free(c);
        return;
    }
    if (res == -ENOBUFS) {
        /* Every provided buffer is in use this tick: try again on a later tick. */
        mdm_timer_arm(loop, &c->retry_timer, 1);
        return;
    }
    if (res < 0) {
        if (res != -ECONNRESET && res != -ECANCELED)
            mdm_debug("server", "recv: %s", mdm_strerror(res));
        conn_close(c);
        return;
    }
    if (res == 0) {
        c->peer_eof = true;
        tr_feed_eof(c);
    } else {
        uint8_t *data = mdm_loop_buffer(loop, op);
        int ret = data ? tr_feed(c, data, (size_t)res) : MDM_ETLS;
        mdm_loop_release_buffer(loop, op);
        if (ret != 0) {
            conn_close(c);
            return;
        }
        if (c->state == CONN_READING && !c->request_started) {
            c->request_started = true;
            arm_read_timer(c, false);
        } else if (c->state == CONN_READING && mdm_http_parser_in_body(&c->parser)) {
            /* The headers had header_timeout_ms in all; a body (a response with an app list
             * can be megabytes) gets that long between pieces, however long it is. */
            arm_read_timer(c, false);
        }
    }
    conn_process(c);
}

static void on_send(mdm_op_t *op)
{
    struct conn *c = MDM_CONTAINER_OF(op, struct conn, send_op);
    c->send_inflight = false;
    if (op->res < 0) {
        conn_close(c);
        return;
    }
    mdm_buf_consume(&c->sending, (size_t)op->res);
    if (c->state == CONN_CLOSING) {
        conn_maybe_free(c);
        return;
    }
    bool was_pending = c->pending.len > 0;
    pump_pending(c);
    conn_flush(c);
    if (!c->send_inflight && c->close_after_send && c->pending.len == 0) {
        conn_close(c);
        return;
    }
    if (was_pending && c->pending.len == 0 && !c->close_after_send) {
        arm_read_timer(c, !c->request_started);
        conn_process(c); /* pipelined requests waited for this response to go out */
        return;
    }
    arm_recv(c);
}

/* Starts a send of whatever the transport has produced, unless one is in flight. */
static void conn_flush(struct conn *c)
{
    if (c->send_inflight || c->fd < 0)
        return;
    if (c->sending.len == 0) {
        mdm_buf_t *out = tr_out(c);
        if (out->len == 0)
            return;
        mdm_buf_t tmp = c->sending; /* swap: the transport keeps filling the other buffer */
        tmp.max = out->max;
        c->sending = *out;
        *out = tmp;
    }
    mdm_loop_send(conn_loop(c), &c->send_op, c->fd, mdm_buf_head(&c->sending), c->sending.len);
    c->send_inflight = true;
}

/* ---- HTTP ---- */

/* Hands as much of the pending response to the transport as it takes now. */
static void pump_pending(struct conn *c)
{
    while (c->pending.len > 0) {
        size_t room = tr_room(c);
        if (room == 0)
            return; /* the rest goes when a send completes */
        size_t n = c->pending.len < room ? c->pending.len : room;
        if (tr_write(c, mdm_buf_head(&c->pending), n) != 0) {
            mdm_buf_reset(&c->pending);
            c->close_after_send = true;
            return;
        }
        mdm_buf_consume(&c->pending, n);
    }
}

/* Queues a whole response (any size) behind what is still pending. */
static void write_plain(struct conn *c, const mdm_buf_t *resp)
{
    if (mdm_buf_append(&c->pending, mdm_buf_head(resp), resp->len) != 0) {
        c->close_after_send = true; /* out of memory: nothing sane to send */
        return;
    }
    pump_pending(c);
}

static int on_headers(void *ctx, mdm_http_request_t *req, size_t *max_body)
{
    struct conn *c = ctx;
    int status = 0;
    const mdm_http_router_t *router = c->ss->server->opts.router;
    if (req->method == MDM_HTTP_HEAD) { /* GET without the body (RFC 9110, 9.3.2) */
        req->head = true;
        req->method = MDM_HTTP_GET;
    }
    const mdm_http_route_t *route = mdm_http_router_match(router, req->method, req->path, &status);
    if (!route) {
        if (status == 405 &&
            mdm_http_router_allow(router, req->path, c->allow, sizeof(c->allow)) < 0)
            c->allow[0] = '\0';
        return status;
    }
    c->route = route;
    if (route->max_body_bytes)
        *max_body = route->max_body_bytes;
    /* The client waits for 100 Continue before sending its body; promise it only for a body
     * that the route's limit admits (an oversized one gets 413 instead). */
    bool body_fits = req->chunked ||
                     (req->has_content_length && req->content_length > 0 &&
                      req->content_length <= *max_body);
    if (req->expect_continue && body_fits) {
        mdm_buf_t out;
        mdm_buf_init(&out, 0);
        if (mdm_http_write_continue(&out) == 0)
            write_plain(c, &out);
        mdm_buf_dispose(&out);
    }
    return 0;
}

static void send_error_and_close(struct conn *c, int status, const char *msg)
{
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    char line[192];
    int n = snprintf(line, sizeof(line), "%s\n", msg);
    mdm_http_header_t allow = {"Allow", 5, c->allow, strlen(c->allow)};
    bool with_allow = status == 405 && c->allow[0];
    if (mdm_http_write_response(&out, status, with_allow ? &allow : NULL, with_allow ? 1 : 0,
                                "text/plain; charset=utf-8", line,
                                n > 0 && (size_t)n < sizeof(line) ? (size_t)n : 0, false) == 0)
        write_plain(c, &out);
    mdm_buf_dispose(&out);
    c->state = CONN_READING;
    conn_close_after_flush(c);
}

static void dispatch(struct conn *c)
{
    mdm_http_request_t *req = mdm_http_parser_request(&c->parser);
    c->ss->requests++;
    c->exchange.req = req;
    c->exchange.active = true;
    c->state = CONN_HANDLING;
    mdm_timer_disarm(conn_loop(c), &c->timer);
    if (c->overloaded) {
        mdm_exchange_error(&c->exchange, 503, "server has too many connections, retry later");
        return;
    }
    mdm_handler_fn fn = (mdm_handler_fn)c->route->handler;
    fn(&c->exchange, c->route->handler_ctx);
}

/*
 * Handshake, then parse requests from the plaintext and hand each to its handler. Handlers
 * that answer at once are looped over here (not recursed into) so a long pipeline cannot
 * grow the stack.
 */
static void conn_process(struct conn *c)
{
    if (c->state == CONN_CLOSING || c->state == CONN_HANDLING || c->dispatching)
        return;
    int ret = tr_advance(c);
    if (ret == MDM_ETLS) {
        mdm_debug("server", "%s: TLS: %s", c->ss->server->name, mdm_tls_last_error(c->tls));
        conn_close_after_flush(c); /* sends the alert, if any */
        return;
    }
    if (c->state == CONN_HANDSHAKE && tr_ready(c)) {
        c->state = CONN_READING;
        c->request_started = tr_plain_in(c)->len > 0;
        arm_read_timer(c, !c->request_started);
    }
    while (c->state == CONN_READING && !c->close_after_send && c->pending.len == 0) {
        mdm_buf_t *plain = tr_plain_in(c);
        if (plain->len == 0)
            break;
        bool done = false;
        int n = mdm_http_parser_feed(&c->parser, mdm_buf_head(plain), plain->len, &done);
        if (n < 0) {
            send_error_and_close(c, mdm_http_parser_error_status(&c->parser),
                                 mdm_http_parser_error_text(&c->parser));
            return;
        }
        mdm_buf_consume(plain, (size_t)n);
        if (!done)
            break;
        c->dispatching = true;
        dispatch(c);
        c->dispatching = false;
        if (c->state == CONN_CLOSING)
            return;
    }
    if (c->state == CONN_HANDLING)
        return;
    if (ret == MDM_ECLOSED || c->peer_eof) {
        /* The peer is gone or half-closed: finish sending what we have, then close. */
        conn_close_after_flush(c);
        return;
    }
    conn_flush(c);
    arm_recv(c);
}

/* ---- exchange API ---- */

const mdm_http_request_t *mdm_exchange_request(const mdm_exchange_t *x) { return x->req; }

static struct conn *exchange_conn(const mdm_exchange_t *x)
{
    return MDM_CONTAINER_OF(x, struct conn, exchange);
}

const struct mdm_tls_peer *mdm_exchange_peer(mdm_exchange_t *x)
{
    struct conn *c = exchange_conn(x);
    return c->tls ? mdm_tls_peer(c->tls) : &no_peer;
}

bool mdm_exchange_is_tls(const mdm_exchange_t *x) { return exchange_conn(x)->tls != NULL; }

mdm_shard_t *mdm_exchange_shard(const mdm_exchange_t *x) { return exchange_conn(x)->ss->shard; }

const char *mdm_exchange_peer_addr(const mdm_exchange_t *x)
{
    return exchange_conn(x)->peer_addr;
}

/* Formats the accepted socket's peer as "ip:port" or "[ip6]:port" ("" when unknown). */
static void format_peer(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    out[0] = '\0';
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
        mdm_sockaddr_format((const struct sockaddr *)&ss, out, outlen);
}

void mdm_exchange_respond(mdm_exchange_t *x, int status, const mdm_http_header_t *extra,
                          unsigned n_extra, const char *content_type, const void *body,
                          size_t len)
{
    struct conn *c = exchange_conn(x);
    x->active = false;
    if (c->state == CONN_CLOSING) {
        conn_maybe_free(c);
        return;
    }
    bool keep_alive = x->req->keep_alive && !c->overloaded && c->ss->accepting &&
                      status != 408 && !c->peer_eof;
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    if (mdm_http_write_response(&out, status, extra, n_extra, content_type, body, len,
                                keep_alive) != 0)
        keep_alive = false;
    else if (x->req->head)
        out.len -= len; /* the headers (Content-Length included) without the body */
    write_plain(c, &out);
    mdm_buf_dispose(&out);
    x->req = NULL;
    mdm_http_parser_reset(&c->parser);
    c->route = NULL;
    c->state = CONN_READING;
    c->request_started = tr_plain_in(c)->len > 0;
    if (!keep_alive) {
        conn_close_after_flush(c);
        return;
    }
    arm_read_timer(c, !c->request_started);
    conn_flush(c);
    if (!c->dispatching)
        conn_process(c); /* a pipelined request may already be waiting */
}

void mdm_exchange_error(mdm_exchange_t *x, int status, const char *message)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "%s\n", message);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = (int)sizeof(line) - 1;
    mdm_exchange_respond(x, status, NULL, 0, "text/plain; charset=utf-8", line, (size_t)n);
}

/* ---- accepting ---- */

static void arm_accept(struct shard_server *ss)
{
    if (!ss->accepting || ss->accept_inflight)
        return;
    mdm_loop_accept(&ss->shard->loop, &ss->accept_op, ss->listen_fd);
    ss->accept_inflight = true;
}

static void on_accept(mdm_op_t *op)
{
    struct shard_server *ss = MDM_CONTAINER_OF(op, struct shard_server, accept_op);
    ss->accept_inflight = false;
    int fd = op->res;
    if (fd < 0) {
        if (ss->accepting && fd != -ECANCELED && fd != -EINVAL)
            mdm_warn("server", "%s: accept: %s", ss->server->name, mdm_strerror(fd));
        if (ss->accepting && fd != -EINVAL)
            arm_accept(ss);
        return;
    }
    arm_accept(ss);
    const struct mdm_server_opts *o = &ss->server->opts;
    if (!ss->accepting || ss->n_conns >= 2 * o->max_connections) {
        ss->refused++;
        close(fd);
        return;
    }
    struct conn *c = calloc(1, sizeof(*c));
    if (!c || tr_new(c, o->tls) != 0) {
        mdm_warn("server", "%s: cannot set up a connection (out of memory)", ss->server->name);
        if (c)
            tr_free(c);
        free(c);
        close(fd);
        return;
    }
    if (mdm_http_parser_init(&c->parser, &o->limits, on_headers, c) != 0) {
        mdm_warn("server", "%s: cannot set up a connection (out of memory)", ss->server->name);
        tr_free(c);
        free(c);
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->ss = ss;
    c->fd = fd;
    format_peer(fd, c->peer_addr, sizeof(c->peer_addr));
    c->state = CONN_HANDSHAKE;
    c->overloaded = ss->n_conns >= o->max_connections;
    c->recv_op.cb = on_recv;
    c->send_op.cb = on_send;
    c->close_op.cb = on_close_done;
    mdm_buf_init(&c->sending, 0);
    mdm_buf_init(&c->pending, 0);
    mdm_timer_init(&c->timer, on_timer);
    mdm_timer_init(&c->retry_timer, on_retry_timer);
    c->next = ss->conns;
    if (ss->conns)
        ss->conns->prev = c;
    ss->conns = c;
    ss->n_conns++;
    ss->accepted++;
    mdm_timer_arm(&ss->shard->loop, &c->timer, o->header_timeout_ms);
    arm_recv(c);
}

/* ---- shard hooks ---- */

static void on_shard_start(mdm_shard_t *sh, void *arg)
{
    mdm_server_t *s = arg;
    struct shard_server *ss = &s->per_shard[sh->index];
    ss->server = s;
    ss->shard = sh;
    ss->listen_fd = s->fds[sh->index];
    ss->accept_op.cb = on_accept;
    ss->accepting = true;
    sh->slots[s->slot] = ss;
    if (!sh->loop.buf_ring) {
        int ret = mdm_loop_setup_buffers(&sh->loop, RECV_BUFFERS, RECV_BUFFER_SIZE);
        if (ret != 0) {
            mdm_error("server", "shard %u: cannot register receive buffers: %s", sh->index,
                      mdm_strerror(ret));
            ss->accepting = false;
            return;
        }
    }
    arm_accept(ss);
}

static void on_shard_stop(mdm_shard_t *sh, void *arg)
{
    mdm_server_t *s = arg;
    struct shard_server *ss = &s->per_shard[sh->index];
    ss->accepting = false;
    /* Stop accepting: shutting the listener down completes the pending accept. */
    shutdown(ss->listen_fd, SHUT_RD);
    /* Idle connections go now; ones with a request in progress finish it first. */
    for (struct conn *c = ss->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_HANDSHAKE || (c->state == CONN_READING && !c->request_started))
            conn_close(c);
    }
}

static bool on_shard_drained(mdm_shard_t *sh, void *arg)
{
    mdm_server_t *s = arg;
    struct shard_server *ss = &s->per_shard[sh->index];
    return ss->n_conns == 0 && !ss->accept_inflight;
}

static void on_shard_finish(mdm_shard_t *sh, void *arg)
{
    mdm_server_t *s = arg;
    struct shard_server *ss = &s->per_shard[sh->index];
    /* Past the drain deadline: drop what is left without waiting for the kernel. */
    for (struct conn *c = ss->conns, *next; c; c = next) {
        next = c->next;
        if (c->fd >= 0)
            close(c->fd);
        mdm_http_parser_dispose(&c->parser);
        tr_free(c);
        mdm_buf_dispose(&c->sending);
        mdm_buf_dispose(&c->pending);
        free(c);
    }
    ss->conns = NULL;
    ss->n_conns = 0;
    mdm_tls_thread_cleanup(); /* this thread's wolfSSL caches (idempotent across listeners) */
    mdm_info("server", "%s shard %u: %llu connections, %llu requests, %llu refused", s->name,
             sh->index, (unsigned long long)ss->accepted, (unsigned long long)ss->requests,
             (unsigned long long)ss->refused);
}

int mdm_server_attach(mdm_server_t *s, mdm_shard_group_t *g, enum mdm_shard_slot slot)
{
    s->slot = slot;
    mdm_shard_hooks_t h = {
        .start = on_shard_start,
        .stop_requested = on_shard_stop,
        .drained = on_shard_drained,
        .finish = on_shard_finish,
        .arg = s,
    };
    return mdm_shards_add_hooks(g, &h);
}
