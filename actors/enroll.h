/*
 * Enrollment service: how Macs join (docs/enrollment.md).
 *
 * Device side (routes on the device listeners, under /<instance>/): the SCEP service, the web
 * enrollment link /macos/otae and invitation pages /macos/invite/<id>, which sign users on
 * (local users, LDAP), create an enrollment with a one-time SCEP challenge and hand out the
 * signed enrollment profile through a one-time download link /macos/profile/<enrollment id>.
 *
 * Slow work (argon2id, LDAP, RSA operations, profile signing, storage reads and commits) runs
 * on the enrollment worker pool, never on a shard thread; the admin API's user and invitation
 * calls use it too (mdm_enroll_run).
 *
 * Lifecycle (serve): mdm_enroll_start() after the store is open and before the routes are
 * added; mdm_enroll_set_base_url() once the device listener is bound; mdm_enroll_stop() after
 * the shards have been joined and before the store is closed.
 */
#ifndef MDM_ACTORS_ENROLL_H
#define MDM_ACTORS_ENROLL_H

#include "actors/auth.h"
#include "actors/config.h"
#include "core/http.h"
#include "core/workers.h"
#include "storage/enroll.h"
#include "storage/store.h"

/**
 * Queues fn(arg) on the enrollment worker pool (any thread). fn may block (storage reads and
 * commits, argon2id, LDAP) and hands its result back itself (mdm_shard_post).
 * Returns 0, -ENOMEM, or -ESHUTDOWN when the pool is not running.
 */
MDM_MUST_CHECK int mdm_enroll_run(mdm_worker_fn fn, void *arg);

/**
 * The device-facing base URL Macs and users reach: "https://<first [server] hostname>:<device
 * port>/<instance>" (no final slash). Valid once the device listener is bound (serve); "" before.
 */
const char *mdm_enroll_base_url(void);

/**
 * A new identity for an enrolled Mac (security action renew-certificate): appends to b a new
 * enrollment (method renewal, the user and groups of current_enrollment, bound to udid) and its
 * one-time SCEP challenge, and appends to der the signed enrollment profile carrying them (the
 * Mac installs it, gets a new certificate through SCEP, and the device actor moves the Mac to
 * it at its first request with it). Blocks on file reads (signing): a worker. Returns 0,
 * -ESHUTDOWN (enrollment is off), or the codes of the profile building and signing.
 */
MDM_MUST_CHECK int mdm_enroll_prepare_renewal(const char *udid, const char *current_enrollment,
                                              const char *topic, mdm_batch_t *b, mdm_buf_t *der,
                                              char new_id[MDM_ENROLL_ID_LEN + 1]);

/** This instance's prefix (mdm_enroll_identifier_prefix of [server] instance); the enrollment
 * profile is "<prefix>.enroll". Valid once mdm_enroll_start ran. */
const char *mdm_enroll_profile_prefix(void);

/** The PayloadIdentifier prefix of the instance's profiles: "mdmd.<instance>", every byte of
 * the instance name outside [A-Za-z0-9_-] replaced by '-'. Pure. */
void mdm_enroll_identifier_prefix(const char *instance, char *out, size_t outlen);

/** Sets the base URL from the host (bracketed by the caller when IPv6), the bound device port
 * and the instance. Start-up only, before the shards start. */
void mdm_enroll_set_base_url(const char *host, int port, const char *instance);

/**
 * The argon2id cost of new password and PIN hashes ([enroll] argon2_memory_kib and
 * argon2_iterations, parallelism 1); also what an unknown user's sign-on spends. Valid after
 * mdm_enroll_start(); mdm_argon2_defaults before.
 */
const struct mdm_argon2_params *mdm_enroll_argon2_params(void);

struct mdm_enroll_options {
    const mdm_config_t *cfg; /* borrowed until mdm_enroll_stop() */
    mdm_store_t *store;      /* borrowed until mdm_enroll_stop() */
};

/**
 * Starts the enrollment service: makes sure the instance has a SCEP RA certificate (creating
 * it, logged, for instances made before it existed), loads the CA, RA and their keys, reads
 * the LDAP bind password file (refused unless mode 0600 or stricter) and checks the [ldap]
 * settings, and starts the worker pool ([enroll] threads). Blocks (files, RSA key generation).
 * Returns 0; MDM_ECONFIG (bad [ldap] settings or password file; logged); the codes of the x509
 * and file functions (logged); -ENOMEM.
 */
MDM_MUST_CHECK int mdm_enroll_start(const struct mdm_enroll_options *o);

/**
 * Adds the device routes under /<instance>/ (scep, macos/otae, macos/invite/, macos/profile/)
 * to r. Returns 0 or the codes of mdm_http_router_add().
 */
MDM_MUST_CHECK int mdm_enroll_add_routes(mdm_http_router_t *r, const char *instance);

/**
 * Revokes invitation id if it is pending at now_ms: read, check and commit happen under the
 * same lock as the invitation pages' use of it, so a revoke and a use never both win. out
 * receives the record as it is afterwards (as read when not pending). Blocks: call it on the
 * enrollment pool (mdm_enroll_run). Returns 0; -EALREADY when it is not pending (used, expired
 * or revoked: see out); MDM_ENOTFOUND; -EINVAL (bad id); the store's codes.
 */
MDM_MUST_CHECK int mdm_enroll_revoke_invitation(const char *id, uint64_t now_ms,
                                                mdm_invitation_t *out);

/** Runs the queued jobs, stops the pool and frees everything mdm_enroll_start() loaded
 * (keys wiped). Safe when never started. */
void mdm_enroll_stop(void);

#endif
