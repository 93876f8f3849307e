/*
 * The APNs pusher: one per shard, on the shard's ring. Device actors hand it pushes for the
 * devices of their own shard (no cross-shard message); it sends them over HTTP/2 + TLS
 * (core/outconn, core/h2c) with the push certificate as the client certificate and reports
 * each push's final outcome back to the device actor (MDM_DEV_PUSH_RESULT).
 *
 * Per push: POST /3/device/<hex token>, apns-topic (the certificate's topic), apns-push-type
 * mdm, apns-priority 10, apns-expiration now + 1 day, body {"mdm":"<PushMagic>"}. Outcomes:
 * 200 recorded; 400 BadDeviceToken / 410 Unregistered -> the device marks its token invalid;
 * 429 and 5xx -> retried with exponential backoff and jitter, MDM_APNS_TRIES attempts in all;
 * not processed (queued when the connection ended, above a GOAWAY, refused stream) -> resent
 * on the next connection without counting an attempt; lost after being sent -> retried like a
 * 5xx; 403 and other 4xx -> final, logged for the operator.
 *
 * The push certificate is read lazily (a storage job) the first time something is to be
 * pushed, and again after mdm_apns_cert_changed(); without one, pushes end at once with
 * status 0 and the reason "no push certificate" (logged once per shard).
 *
 * Connections: per shard, one opens when there is work and another (up to [apns] connections)
 * while every open one is up and at the server's SETTINGS_MAX_CONCURRENT_STREAMS; pushes are
 * handed round-robin to connections with room, the rest wait in the pusher's FIFO. Failed
 * connects are retried with exponential backoff (and jitter), moving to the host's next
 * address. A connection idle for [apns] ping_interval_ms gets an HTTP/2 PING, or is closed
 * when it is an extra one; without the PING's ack within the interval (clamped to 1..10 s)
 * it is closed (and reopened when there is work). A host name in [apns] url is resolved on a
 * short-lived thread per shard (getaddrinfo blocks) and again every 5 minutes, unless
 * [apns] address names the address.
 *
 * Threads: mdm_apns_setup and the option getters before the shards start; mdm_apns_push and
 * mdm_apns_wake_later on the shard that owns the device; mdm_apns_cert_changed from any
 * shard thread.
 */
#ifndef MDM_ACTORS_APNS_H
#define MDM_ACTORS_APNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actors/config.h"
#include "core/shard.h"
#include "storage/store.h"

/** Attempts per push for 429, 5xx and lost streams (the first included). */
#define MDM_APNS_TRIES 5
/** Backoff before the second attempt; doubles per attempt, plus up to 50% jitter. */
#define MDM_APNS_BACKOFF_MS 250
/** Most pushes (waiting, in flight, delayed) a shard's pusher holds; more fail at once. */
#define MDM_APNS_PENDING_MAX 200000
/** A keep-alive PING ([apns] ping_interval_ms) not acked within the interval, but at least
 * MIN and at most MAX ms, closes the connection. */
#define MDM_APNS_PING_TIMEOUT_MIN_MS 1000
#define MDM_APNS_PING_TIMEOUT_MAX_MS 10000
/** apns-expiration: a Mac offline at push time still gets it within this many seconds. */
#define MDM_APNS_EXPIRATION_S 86400

/**
 * Reads the [apns] config and registers the pusher's shard hooks on g. When the endpoint
 * cannot be used (no address and a host name in url, or a bad url/address), logs why once
 * and leaves the pusher off (mdm_apns_enabled false): the server still runs. store and
 * seal_key (32 bytes, copied) read the push certificate. Returns 0 or -ENOSPC (no hook slot).
 */
MDM_MUST_CHECK int mdm_apns_setup(mdm_shard_group_t *g, const mdm_config_t *cfg,
                                  mdm_store_t *store, const uint8_t seal_key[32]);

/** The pusher is configured (an endpoint mdmd can connect to). */
bool mdm_apns_enabled(void);

/** [apns] coalesce_ms. */
uint64_t mdm_apns_coalesce_ms(void);

/**
 * Queues a push to token (raw bytes) with magic for device udid, on the calling shard, which
 * must be the device's home shard. The outcome arrives later as an MDM_DEV_PUSH_RESULT request
 * to the device (also when the pusher is off or has no certificate). Returns 0 or MDM_EFULL
 * (MDM_APNS_PENDING_MAX reached: nothing queued, nothing will be reported).
 */
MDM_MUST_CHECK int mdm_apns_push(mdm_shard_t *sh, const char *udid, const uint8_t *token,
                                 size_t token_len, const char *magic);

/** After delay_ms, sends the device an MDM_DEV_PUSH request with wake = true (the end of a
 * coalescing window). Returns 0 or MDM_EFULL. */
MDM_MUST_CHECK int mdm_apns_wake_later(mdm_shard_t *sh, const char *udid, uint64_t delay_ms);

/** The stored push certificate changed: every shard's pusher reloads it before its next
 * push and reconnects with it. */
void mdm_apns_cert_changed(void);

#endif
