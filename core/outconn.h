/*
 * mdm_outconn: one outbound HTTP/2-over-TLS connection on a shard's ring (the APNs pusher's
 * transport). Connects to an address (no DNS: the caller resolves), runs a core/tls client
 * (optional client certificate, ALPN "h2" required) and feeds an mdm_h2c session.
 *
 * Lifecycle: mdm_outconn_new -> mdm_outconn_start -> READY event -> submit on
 * mdm_outconn_h2c() and call mdm_outconn_flush -> mdm_outconn_close (or an error) -> CLOSED
 * event, after which the caller frees it (the CLOSED callback itself may call
 * mdm_outconn_free). Requests still pending at the close are reported through the h2c
 * response callback before CLOSED. Reconnecting is the caller's job (a new outconn).
 *
 * Threads: created, used and freed on the thread that runs the loop.
 */
#ifndef MDM_CORE_OUTCONN_H
#define MDM_CORE_OUTCONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/common.h"
#include "core/h2c.h"
#include "core/loop.h"
#include "core/tls.h"

typedef struct mdm_outconn mdm_outconn_t;

enum mdm_outconn_event {
    MDM_OUTCONN_READY,  /* TLS done, h2 negotiated: requests flow (queued ones start now) */
    MDM_OUTCONN_CLOSED, /* everything released but the object; err says why (0 = asked) */
};

/** err: 0, -errno (connect, socket), -ETIMEDOUT, MDM_ETLS (handshake, or no "h2" selected),
 *  MDM_ECLOSED (peer closed), MDM_EHTTP (HTTP/2 protocol error or session over). */
typedef void (*mdm_outconn_event_cb)(mdm_outconn_t *c, enum mdm_outconn_event ev, int err,
                                     void *arg);

struct mdm_outconn_opts {
    const struct sockaddr *addr; /* IPv4 or IPv6 address and port (copied) */
    socklen_t addr_len;
    mdm_tls_ctx_t *tls;          /* client ctx offering ALPN "h2"; borrowed, must outlive c */
    const char *sni;             /* server name for SNI and verification, NULL = none */
    uint32_t connect_timeout_ms; /* TCP connect + TLS handshake; 0 = 10 s */
    struct mdm_h2c_opts h2;      /* the session's options (callbacks included) */
    mdm_outconn_event_cb event_callback;
    void *arg;
};

/**
 * Allocates a connection (nothing started). *out is owned by the caller (mdm_outconn_free).
 * Returns 0, -ENOMEM, MDM_ECONFIG or MDM_ETLS.
 */
MDM_MUST_CHECK int mdm_outconn_new(mdm_outconn_t **out, mdm_loop_t *loop,
                                   const struct mdm_outconn_opts *o);

/** Opens the socket and starts connecting. Failures arrive as CLOSED. Call once. */
void mdm_outconn_start(mdm_outconn_t *c);

/** The HTTP/2 session (submit requests here, then mdm_outconn_flush). Valid until free. */
mdm_h2c_t *mdm_outconn_h2c(mdm_outconn_t *c);

/** Moves h2c's frames into TLS and starts a send; call after submitting or pinging. */
void mdm_outconn_flush(mdm_outconn_t *c);

/** True between READY and the start of closing. */
bool mdm_outconn_ready(const mdm_outconn_t *c);

/**
 * Closes: pending requests are reported (h2c abort), close_notify is sent when possible,
 * operations in flight finish, then CLOSED fires with err. Idempotent.
 */
void mdm_outconn_close(mdm_outconn_t *c, int err);

/** Frees a connection that never started or whose CLOSED event has fired. c may be NULL. */
void mdm_outconn_free(mdm_outconn_t *c);

#endif
