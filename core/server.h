/*
 * server: an HTTPS/1.1 listener on every shard (io_uring + sans-I/O TLS and HTTP).
 *
 * One mdm_server_t describes a listener (address, TLS context, router, limits, timeouts) and
 * is shared read-only by all shards; each shard owns its own SO_REUSEPORT socket, its
 * connections and their timers. The loop moves only ciphertext: recv completions feed TLS,
 * plaintext feeds the HTTP parser (a listener without a TLS context serves plain HTTP: the
 * received bytes go to the parser as they are), a complete request calls its route's handler with an
 * mdm_exchange_t. The handler answers with mdm_exchange_respond(), at once or later (after
 * a storage commit or a reply from another shard), always on the connection's shard.
 *
 * Limits: header/handshake timeout (408 once a request has started), idle keep-alive
 * timeout, per-route body limits, connections per shard (503 past it, hard close past
 * twice it). A connection reads no further request while one is being handled, so a
 * pipelining client is served in order and cannot make the server buffer without bound.
 */
#ifndef MDM_CORE_SERVER_H
#define MDM_CORE_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/http.h"
#include "core/shard.h"
#include "core/tls.h"

typedef struct mdm_server mdm_server_t;
typedef struct mdm_exchange mdm_exchange_t;

/** A route handler: the route's handler field points to one of these. */
typedef void (*mdm_handler_fn)(mdm_exchange_t *x, void *ctx);

struct mdm_server_opts {
    const char *name;   /* for logs: "device", "admin" */
    const char *listen; /* "127.0.0.1:8443", "[::]:8443", "0.0.0.0:0" (ephemeral) */
    mdm_tls_ctx_t *tls; /* borrowed; must outlive the server; NULL = plain HTTP */
    const mdm_http_router_t *router; /* borrowed; routes' handler is an mdm_handler_fn */
    struct mdm_http_limits limits;
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;
    unsigned max_connections; /* per shard */
};

/**
 * Creates the listening sockets (one per shard, SO_REUSEPORT, all on the same port, so an
 * ephemeral port 0 is resolved once). Returns 0, -errno (bind failure: logged with the
 * address) or MDM_ECONFIG for an unparsable address.
 */
MDM_MUST_CHECK int mdm_server_new(mdm_server_t **out, const struct mdm_server_opts *o,
                                  unsigned n_shards);

/** Registers the server's shard hooks (start accepting, drain on stop) in slot. */
MDM_MUST_CHECK int mdm_server_attach(mdm_server_t *s, mdm_shard_group_t *g,
                                     enum mdm_shard_slot slot);

/** The bound port (useful with port 0). */
int mdm_server_port(const mdm_server_t *s);

/** Frees the server after the shards have been joined. */
void mdm_server_free(mdm_server_t *s);

/* ---- for handlers; every call must run on the exchange's shard ---- */

const mdm_http_request_t *mdm_exchange_request(const mdm_exchange_t *x);
/** The verified TLS client certificate (present=false when none, and always on plain HTTP).
 * Owned by the connection; valid until the exchange ends. */
const struct mdm_tls_peer *mdm_exchange_peer(mdm_exchange_t *x);
/** True when the request came over TLS, false on a plain-HTTP listener. */
bool mdm_exchange_is_tls(const mdm_exchange_t *x);
mdm_shard_t *mdm_exchange_shard(const mdm_exchange_t *x);
/** The client's address as text, "ip:port" or "[ip6]:port" ("" when unknown), captured at
 * accept. Owned by the connection; valid until the exchange ends. */
const char *mdm_exchange_peer_addr(const mdm_exchange_t *x);

/**
 * Sends the response and ends the exchange (x is invalid afterwards). If the client has
 * gone away meanwhile, the response is dropped. extra may be NULL.
 */
void mdm_exchange_respond(mdm_exchange_t *x, int status, const mdm_http_header_t *extra,
                          unsigned n_extra, const char *content_type, const void *body,
                          size_t len);

/** Sends a text/plain one-line error ("what was wrong") and ends the exchange. */
void mdm_exchange_error(mdm_exchange_t *x, int status, const char *message);

#endif
