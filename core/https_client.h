/*
 * https_client: a small blocking HTTPS/1.1 client over core/tls, for the command line
 * (mdmd's admin subcommands) and the integration tests. Never used on a shard thread.
 *
 * One connection per mdm_https_client_t; requests are written as given, responses are read
 * whole (status line, headers, Content-Length body; chunked bodies are not supported, the
 * mdmd server never sends them). Every wait is bounded by a timeout.
 *
 * Threads: a client is used by one thread at a time.
 */
#ifndef MDM_CORE_HTTPS_CLIENT_H
#define MDM_CORE_HTTPS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/common.h"
#include "core/tls.h"

/** Largest response a client reads (bytes): 256 MiB. */
#define MDM_HTTPS_RESPONSE_MAX (256u * 1024u * 1024u)

typedef struct mdm_https_client {
    int fd;
    mdm_tls_ctx_t *ctx;
    mdm_tls_conn_t *tls;
} mdm_https_client_t;

struct mdm_https_connect_opts {
    const char *host;      /* name or IP literal to connect to ("127.0.0.1", "mdm.example.com") */
    int port;
    const char *sni;       /* name checked against the certificate; NULL = host */
    const char *ca_path;   /* PEM trust anchors; NULL = no verification (tests only) */
    const char *cert_path; /* optional client certificate and key */
    const char *key_path;
    void *session;         /* optional session to resume (mdm_tls_conn_get_session) */
    int timeout_ms;        /* connect + handshake; 0 = 10 s */
};

/**
 * Connects and completes the TLS handshake. On failure c is still safe to close.
 * Returns 0, -errno (name resolution or connect failure: -EHOSTUNREACH when the name does not
 * resolve), -ETIMEDOUT, or MDM_ETLS (handshake failed, e.g. certificate not trusted).
 */
MDM_MUST_CHECK int mdm_https_connect(mdm_https_client_t *c,
                                     const struct mdm_https_connect_opts *o);

/** Closes the connection and frees everything; c may be zeroed or already closed. */
void mdm_https_close(mdm_https_client_t *c);

/** Sends len bytes of plaintext. Returns 0, -errno or MDM_ETLS. */
MDM_MUST_CHECK int mdm_https_send(mdm_https_client_t *c, const void *data, size_t len);

/**
 * Reads one complete response (head and Content-Length body) into out (reset first), followed
 * by a NUL that is not counted in out->len. Returns the HTTP status (100..599), or -1 on
 * error, EOF before a full response, or timeout.
 */
int mdm_https_read_response(mdm_https_client_t *c, mdm_buf_t *out, int timeout_ms);

/** Reads until the server closes; returns 0 when it closed within timeout_ms, else -1. */
int mdm_https_wait_close(mdm_https_client_t *c, int timeout_ms);

/**
 * The body of a response read by mdm_https_read_response: *body points into resp, *len is
 * its length. Returns 0, or -EBADMSG when resp holds no header end.
 */
MDM_MUST_CHECK int mdm_https_response_body(const mdm_buf_t *resp, const char **body,
                                           size_t *len);

/**
 * One request on a new connection: method, path, optional extra header lines (each ending in
 * "\r\n", may be NULL), optional body with its content type. Fills body_out (reset first,
 * NUL-terminated) with the response body. Returns the HTTP status, or a negative code from
 * mdm_https_connect / -1 when sending or reading failed.
 */
int mdm_https_request(const struct mdm_https_connect_opts *o, const char *method,
                      const char *path, const char *extra_headers, const char *content_type,
                      const void *body, size_t body_len, mdm_buf_t *body_out, int timeout_ms);

#endif
