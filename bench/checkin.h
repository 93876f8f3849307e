/*
 * checkin: the "checkin" scenario of mdm-bench: N simulated Macs (bench/sim.h builders and
 * parsers) checking in over C client slots of the driver.
 *
 * Fleet. Mac i has a fixed UDID (0000FE00-BE + 14 hex digits of i), serial and model, and its
 * own EC P-256 key and identity certificate from the instance CA, kept in a cache folder
 * (default INSTANCE/bench-macs/) together with a stamp naming the CA it was issued from, so
 * that later runs against the same CA reuse them. Issuing is fast (~0.3 ms of CPU per Mac);
 * what is slow is the two fsyncs per file of core/x509's atomic writes, so new identities are
 * issued into a staging folder on /dev/shm and copied into the cache without fsync (one
 * syncfs, then the stamp): a cache is disposable, the stamp is written last.
 *
 * Identity per request. With mTLS a TLS connection carries one client certificate, so a
 * connection plays one Mac: slot s owns Macs s, s+C, s+2C, ... and plays them one visit at a
 * time; a visit is `visit` requests (or fewer: see below) on one connection, after which the
 * client closes it and opens the next with the next Mac's certificate. With Mdm-Signature the
 * identity travels in each request (a detached CMS signature over the body, base64, in the
 * Mdm-Signature header), so one keep-alive connection carries all of its slot's Macs: the
 * visits rotate without reconnecting. Signatures over bodies that do not change (Idle,
 * TokenUpdate) are made once per Mac and reused; Acknowledged bodies are signed per request.
 *
 * Phases. enroll: every Mac sends Authenticate then TokenUpdate (one visit each; three
 * refusals give a Mac up); the slot is done when its Macs are. Measured modes (never done):
 *   idle         PUT /connect Status=Idle
 *   tokenupdate  PUT /checkin MessageType=TokenUpdate (the same token each time)
 *   answer       Idle; a command in the reply is acknowledged with the next request, whose
 *                reply may carry the next command; an Idle with an empty reply ends the visit
 * In every mode a Mac that holds a command acknowledges it first (a queue left over from an
 * earlier run is drained, not ignored).
 *
 * Owning thread: the driver's; nothing is shared.
 */
#ifndef MDM_BENCH_CHECKIN_H
#define MDM_BENCH_CHECKIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "bench/scenario.h"
#include "bench/sim.h"

enum ck_mode { CK_ENROLL, CK_IDLE, CK_TOKENUPDATE, CK_ANSWER };

struct bench_mac;

typedef struct bench_fleet {
    sim_env_t env;
    unsigned n;
    struct bench_mac *macs;
    bool signature;      /* identity by Mdm-Signature instead of client certificates */
    char prefix[1024];   /* "/zdm" */
    char host[300];      /* Host header value */
    unsigned generated;  /* identities issued by bench_fleet_load (0 = all from the cache) */
    bool rsa;            /* RSA-2048 identity keys (as SCEP gives Macs) instead of EC P-256 */
} bench_fleet_t;

/**
 * Loads (or issues and caches) n Macs for the instance in instance_dir; cache_dir NULL means
 * instance_dir/bench-macs (bench-macs-rsa with rsa: RSA-2048 keys, as Macs get from SCEP,
 * instead of EC P-256). Returns 0 or a negative code (printed to stderr).
 */
int bench_fleet_load(bench_fleet_t *f, const char *instance_dir, const char *cache_dir,
                     unsigned n, bool rsa);
void bench_fleet_free(bench_fleet_t *f);

/** Makes every Mac's client TLS context now (mTLS), so that the measured phase does not pay
 * for loading them (a P-256 sign and verify each: core/tls checks the key pair). Returns 0,
 * or -1 when one cannot be made or *stop became non-zero. */
int bench_fleet_prepare_tls(bench_fleet_t *f, const volatile sig_atomic_t *stop);

/** Counters of one checkin run, by message. */
struct ck_counts {
    uint64_t authenticate, token_update, idle, ack;
    uint64_t commands;     /* commands received in replies */
    uint64_t empty_idle;   /* Idle answered with an empty 200 */
    uint64_t enrolled, given_up; /* enroll phase */
    uint64_t visits;       /* Mac visits started */
    uint64_t sign_errors;  /* Mdm-Signature could not be made */
};

/**
 * Fills *s with the checkin scenario over fleet f for mode, `connections` client slots and
 * `visit` requests per Mac visit (>= 1; enroll ignores it). counts (owned by the caller)
 * receives the counters; s->free releases the rest. Returns 0 or -ENOMEM.
 */
int bench_scenario_checkin(struct bench_scenario *s, bench_fleet_t *f, enum ck_mode mode,
                           unsigned connections, unsigned visit, struct ck_counts *counts);

/**
 * Queues `per_mac` DeviceInformation commands for every Mac of f through the admin API bulk
 * endpoint (POST /api/v1/commands, at most 10,000 UDIDs a call) at https://host:port with
 * the bearer api_key. Blocking. Returns the number of queue entries made, or -1 (printed).
 */
long bench_queue_commands(const bench_fleet_t *f, const char *host, const char *port,
                          const char *api_key, unsigned per_mac);

#endif
