/*
 * driver: runs a scenario over N concurrent HTTPS/1.1 client connections from one thread, on
 * one io_uring ring (core/loop), with TLS from core/tls. See driver.c for the state machine.
 */
#ifndef MDM_BENCH_DRIVER_H
#define MDM_BENCH_DRIVER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bench/hist.h"
#include "bench/scenario.h"
#include "core/common.h"
#include "core/tls.h"

struct bench_options {
    struct sockaddr_storage addr; /* server address */
    socklen_t addr_len;
    const char *sni;              /* server name for TLS (IP literals are not sent) */
    mdm_tls_ctx_t *tls;           /* client context, borrowed */
    const struct bench_scenario *scenario; /* borrowed */
    unsigned connections;         /* concurrent client slots, >= 1 */
    uint64_t duration_ms;         /* stop starting requests after this long */
    uint64_t requests;            /* stop after this many requests were started; 0 = no limit */
    uint64_t timeout_ms;          /* per request (including connect+handshake with new_conn) */
    bool new_conn;                /* one TCP+TLS connection per request (Connection: close) */
    bool resume;                  /* with new_conn: resume the first connection's TLS session */
    const volatile sig_atomic_t *interrupted; /* optional: non-zero stops the run early */
};

struct bench_stats {
    uint64_t started;                   /* requests started */
    uint64_t completed[BENCH_OUTCOMES]; /* [BENCH_OK] = successes, others = errors by kind */
    uint64_t unfinished;                /* still in flight when the run was cut off */
    uint64_t connects;                  /* TCP connections established */
    uint64_t handshakes, resumed;       /* TLS handshakes completed, of which resumed */
    uint64_t server_closes;             /* keep-alive connections the server ended cleanly */
    uint64_t elapsed_ns;                /* first connect to last completed request */
    bench_hist_t latency;   /* ns per successful request: request written -> response read;
                             * with new_conn from connect start (so it includes the handshake) */
    bench_hist_t handshake; /* ns from connect start to handshake done */
    char first_error[BENCH_OUTCOMES][160]; /* first message seen per error kind */
};

/** Sum of completed[] except BENCH_OK. */
uint64_t bench_stats_errors(const struct bench_stats *st);

/**
 * Runs the scenario until the duration elapses, the request limit is reached or *interrupted
 * becomes non-zero; requests in flight then get a grace period (the request timeout, at most
 * 2 s) before they are cut off and counted as unfinished. Fills *st (which it initialises).
 *
 * Returns 0 (whatever the requests' outcomes), or -errno / MDM_E* when the run could not be set
 * up (io_uring unavailable, out of memory).
 */
MDM_MUST_CHECK int bench_run(const struct bench_options *o, struct bench_stats *st);

#endif
