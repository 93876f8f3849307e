/*
 * Enrollment service: how Macs join (docs/enrollment.md).
 *
 * Device side (routes on the device listeners, under /<instance>/): the SCEP service, the web
 * enrollment link /macos/otae and invitation pages /macos/invite/<id>, which sign users on
 * (local users, LDAP), create an enrollment with a one-time SCEP challenge and answer with
 * the signed enrollment profile.
 *
 * Slow work (argon2id, LDAP, RSA operations, profile signing) runs on the enrollment worker
 * pool, never on a shard thread; the admin API's user and invitation calls use it too
 * (mdm_enroll_run).
 */
#ifndef MDM_ACTORS_ENROLL_H
#define MDM_ACTORS_ENROLL_H

#include "core/workers.h"

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

#endif
