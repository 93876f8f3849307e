/*
 * Scenarios: what one simulated client asks for and what counts as a good answer.
 *
 * The driver (driver.c) owns sockets, TLS, HTTP framing, timing and counting; a scenario owns
 * only content: it appends each request's bytes and judges each complete response. A client
 * slot (one connection at a time) may keep per-client state, which is how later scenarios
 * simulate one device per slot (its identity, its command queue position, ...).
 *
 * Scenarios so far:
 *   http    GET one URL (e.g. /healthz) over and over; any 2xx is a success.
 *
 * Owning thread: the driver's; nothing here is shared.
 */
#ifndef MDM_BENCH_SCENARIO_H
#define MDM_BENCH_SCENARIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/tls.h"

/** How one request ended. The error kinds are what the report breaks errors down by. */
enum bench_outcome {
    BENCH_OK,
    BENCH_ERR_CONNECT, /* TCP connect failed */
    BENCH_ERR_TLS,     /* handshake or record layer failed (includes a close mid-handshake) */
    BENCH_ERR_STATUS,  /* a complete response whose status the scenario refuses (non-2xx) */
    BENCH_ERR_TIMEOUT, /* no complete response within the request timeout */
    BENCH_ERR_CLOSED,  /* the server closed or reset the connection mid-request */
    BENCH_ERR_HTTP,    /* malformed response, or a body the scenario refuses */
    BENCH_OUTCOMES,
};

/** Short lowercase name of an outcome ("ok", "connect", "tls", ...). Static. */
const char *bench_outcome_name(enum bench_outcome o);

/** A complete response, borrowed for the duration of check_response. */
struct bench_response {
    int status;
    const uint8_t *body;
    size_t body_len;
    bool keep_alive; /* the server will keep the connection open */
};

struct bench_scenario {
    const char *name;
    void *arg; /* the scenario's own state, shared by all client slots */
    /** Optional: per-client state for slot `client` (0..connections-1), kept across
     * reconnections. Returns 0 or -errno. */
    int (*client_init)(void *arg, unsigned client, void **client_state);
    /** Optional: frees what client_init made. */
    void (*client_free)(void *arg, void *client_state);
    /** Appends the next request (complete HTTP/1.1 bytes) to out; close asks the server to
     * close the connection after answering. Returns 0 or a negative code (buffer errors). */
    int (*build_request)(void *arg, void *client_state, bool close, mdm_buf_t *out);
    /** Judges a complete response: BENCH_OK, BENCH_ERR_STATUS or BENCH_ERR_HTTP. */
    enum bench_outcome (*check_response)(void *arg, void *client_state,
                                         const struct bench_response *r);
    /** Frees arg. */
    void (*free)(void *arg);

    /* Optional hooks for scenarios that play many identities (mdm-bench checkin). */

    /** The client TLS context for the next connection of this client (e.g. the one holding
     * the identity certificate of the device it plays now); NULL = the run's context. Called
     * when a connection starts. */
    mdm_tls_ctx_t *(*conn_tls)(void *arg, void *client_state);
    /** After each response (any outcome): true closes the connection (the client does) and
     * opens a new one, which calls conn_tls again. */
    bool (*end_connection)(void *arg, void *client_state);
    /** True once this client has nothing more to do: it starts no more requests. The run
     * ends when every client is done (or at the duration / request limit). */
    bool (*client_done)(void *arg, void *client_state);
};

/**
 * The "http" scenario: GET path on host (the Host header value, port included when not 443).
 * Fills *s; release with s->free(s->arg). Returns 0, -ENOMEM or -EINVAL (path or host too
 * long, or containing CR/LF).
 */
int bench_scenario_http_get(struct bench_scenario *s, const char *host, const char *path);

#endif
