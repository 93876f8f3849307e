/*
 * Blocking HTTPS/1.1 client over core/tls. See https_client.h.
 *
 * The socket is blocking for connect and send and polled for reads, so every wait has a
 * deadline. TLS runs sans-I/O: ciphertext read from the socket is fed to the connection,
 * and whatever TLS wants to send is flushed after each step.
 */
#include "core/https_client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static int flush_out(mdm_https_client_t *c)
{
    mdm_buf_t *out = mdm_tls_cipher_out(c->tls);
    while (out->len) {
        ssize_t w = send(c->fd, mdm_buf_head(out), out->len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EPIPE;
        mdm_buf_consume(out, (size_t)w);
    }
    return 0;
}

/* Waits (bounded) for bytes and feeds them to TLS. Returns 1 data, 0 timeout, -1 closed/error. */
static int pump_in(mdm_https_client_t *c, int timeout_ms)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int pr = poll(&pfd, 1, timeout_ms < 0 ? 0 : timeout_ms);
    if (pr == 0)
        return 0;
    if (pr < 0)
        return errno == EINTR ? 0 : -1;
    uint8_t buf[16384];
    ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
    if (r < 0)
        return errno == EINTR ? 0 : -1;
    if (r == 0) {
        mdm_tls_feed_eof(c->tls);
        return -1;
    }
    return mdm_tls_feed(c->tls, buf, (size_t)r) == 0 ? 1 : -1;
}

static int tcp_connect(const char *host, int port)
{
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, portstr, &hints, &res) != 0 || !res)
        return -EHOSTUNREACH;
    int ret = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            ret = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            freeaddrinfo(res);
            return fd;
        }
        ret = -errno;
        close(fd);
    }
    freeaddrinfo(res);
    return ret;
}

int mdm_https_connect(mdm_https_client_t *c, const struct mdm_https_connect_opts *o)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    int ret = mdm_tls_global_init();
    if (ret != 0)
        return ret;
    /* A whole response is gathered in the plaintext buffer: allow big ones (device lists,
     * command histories with responses). */
    struct mdm_tls_client_opts to = {.ca_path = o->ca_path,
                                     .cert_path = o->cert_path,
                                     .key_path = o->key_path,
                                     .plain_in_max = MDM_HTTPS_RESPONSE_MAX};
    if ((ret = mdm_tls_ctx_new_client(&c->ctx, &to)) != 0)
        return ret;
    if ((ret = mdm_tls_conn_new(&c->tls, c->ctx, o->sni ? o->sni : o->host)) != 0)
        return ret;
    if (o->session && (ret = mdm_tls_conn_set_session(c->tls, o->session)) != 0)
        return ret;
    c->fd = tcp_connect(o->host, o->port);
    if (c->fd < 0) {
        ret = c->fd;
        c->fd = -1;
        return ret;
    }
    uint64_t deadline = mdm_now_ms() + (uint64_t)(o->timeout_ms > 0 ? o->timeout_ms : 10000);
    while (mdm_now_ms() < deadline) {
        if ((ret = mdm_tls_advance(c->tls)) != 0)
            return MDM_ETLS;
        if ((ret = flush_out(c)) != 0)
            return ret;
        if (mdm_tls_handshake_done(c->tls)) {
            /* TLS 1.3: the server may still reject a client certificate after its Finished;
             * give its alert a moment to arrive. */
            if (o->cert_path || o->ca_path) {
                if (pump_in(c, 50) < 0 || mdm_tls_advance(c->tls) != 0)
                    return MDM_ETLS;
                if ((ret = flush_out(c)) != 0)
                    return ret;
            }
            return 0;
        }
        if (pump_in(c, 1000) < 0)
            return MDM_ETLS;
    }
    return -ETIMEDOUT;
}

void mdm_https_close(mdm_https_client_t *c)
{
    if (c->tls)
        mdm_tls_conn_free(c->tls);
    if (c->ctx)
        mdm_tls_ctx_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

int mdm_https_send(mdm_https_client_t *c, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        /* Large bodies go in pieces that fit the TLS output buffer. */
        size_t chunk = len > 65536 ? 65536 : len;
        int ret = mdm_tls_write(c->tls, p, chunk);
        if (ret != 0)
            return ret;
        if ((ret = flush_out(c)) != 0)
            return ret;
        p += chunk;
        len -= chunk;
    }
    return 0;
}

/* Length of the complete response at the head of plain, or 0 while it is partial. */
static size_t response_length(const mdm_buf_t *plain)
{
    const char *s = (const char *)mdm_buf_head(plain);
    size_t len = plain->len;
    const char *end = memmem(s, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end - s) + 4;
    size_t body = 0;
    for (const char *line = memchr(s, '\n', head); line && line < s + head;
         line = memchr(line + 1, '\n', (size_t)(s + head - line - 1))) {
        if ((size_t)(s + head - line) > 16 && strncasecmp(line + 1, "Content-Length:", 15) == 0) {
            body = strtoul(line + 16, NULL, 10);
            break;
        }
    }
    return head + body <= len ? head + body : 0;
}

int mdm_https_read_response(mdm_https_client_t *c, mdm_buf_t *out, int timeout_ms)
{
    uint64_t deadline = mdm_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    mdm_buf_reset(out);
    for (;;) {
        int ret = mdm_tls_advance(c->tls);
        mdm_buf_t *plain = mdm_tls_plain_in(c->tls);
        size_t n = response_length(plain);
        if (n) {
            if (mdm_buf_append(out, mdm_buf_head(plain), n) != 0 ||
                mdm_buf_append(out, "", 1) != 0)
                return -1;
            out->len--; /* keep a NUL after the bytes for string functions */
            mdm_buf_consume(plain, n);
            int status = 0;
            if (sscanf((const char *)mdm_buf_head(out), "HTTP/1.%*d %d", &status) != 1)
                return -1;
            return status;
        }
        if (ret != 0)
            return -1;
        uint64_t now = mdm_now_ms();
        if (now >= deadline)
            return -1;
        if (pump_in(c, (int)(deadline - now)) < 0) {
            (void)!mdm_tls_advance(c->tls); /* decrypt what came before the close */
            if (!response_length(mdm_tls_plain_in(c->tls)))
                return -1;
        }
    }
}

int mdm_https_wait_close(mdm_https_client_t *c, int timeout_ms)
{
    uint64_t deadline = mdm_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    while (mdm_now_ms() < deadline) {
        if (pump_in(c, 100) < 0)
            return 0;
        if (mdm_tls_advance(c->tls) != 0)
            return 0;
    }
    return -1;
}

int mdm_https_response_body(const mdm_buf_t *resp, const char **body, size_t *len)
{
    const char *s = (const char *)mdm_buf_head(resp);
    const char *end = memmem(s, resp->len, "\r\n\r\n", 4);
    if (!end)
        return -EBADMSG;
    *body = end + 4;
    *len = resp->len - (size_t)(end + 4 - s);
    return 0;
}

int mdm_https_request(const struct mdm_https_connect_opts *o, const char *method,
                      const char *path, const char *extra_headers, const char *content_type,
                      const void *body, size_t body_len, mdm_buf_t *body_out, int timeout_ms)
{
    mdm_https_client_t c;
    mdm_buf_t req, resp;
    mdm_buf_init(&req, 0);
    mdm_buf_init(&resp, 0);
    mdm_buf_reset(body_out);
    int status = mdm_https_connect(&c, o);
    if (status != 0)
        goto out;
    status = -1;
    const char *host = o->sni ? o->sni : o->host;
    int ret = mdm_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s",
                             method, path, host, extra_headers ? extra_headers : "");
    if (ret == 0 && (body || content_type))
        ret = mdm_buf_printf(&req, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                             content_type ? content_type : "application/octet-stream", body_len);
    if (ret == 0)
        ret = mdm_buf_append_str(&req, "\r\n");
    if (ret == 0 && body_len)
        ret = mdm_buf_append(&req, body, body_len);
    if (ret != 0 || mdm_https_send(&c, mdm_buf_head(&req), req.len) != 0)
        goto out;
    status = mdm_https_read_response(&c, &resp, timeout_ms);
    const char *b;
    size_t blen;
    if (status > 0 && mdm_https_response_body(&resp, &b, &blen) == 0) {
        if (mdm_buf_append(body_out, b, blen) != 0 || mdm_buf_append(body_out, "", 1) != 0)
            status = -1;
        else
            body_out->len--;
    }
out:
    mdm_https_close(&c);
    mdm_buf_dispose(&req);
    mdm_buf_dispose(&resp);
    return status;
}
