/*
 * Internal to the admin API (actors/api*.c): the helpers api.c shares with the files that
 * implement groups of endpoints (api_enroll.c: users, invitations, enrollments). Not for the
 * rest of mdmd; the public entry point is api.h.
 *
 * Threads: everything here runs on the shard of the admin connection (x), except
 * mdm_api_store(), mdm_api_who() and mdm_api_invitation_status(), which any thread may call.
 */
#ifndef MDM_ACTORS_API_INTERNAL_H
#define MDM_ACTORS_API_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "actors/actor.h"
#include "core/server.h"
#include "storage/audit.h"
#include "storage/enroll.h"

#define MDM_API_LIST_LIMIT_DEFAULT 100
#define MDM_API_LIST_LIMIT_MAX 1000

/* ---- answers (each ends the exchange) ---- */

/** Answers status with body (handed over, NULL: 500 out of memory) as one JSON line. */
void mdm_api_respond_json(mdm_exchange_t *x, int status, json_t *body,
                          const mdm_http_header_t *extra, unsigned n_extra);
/** {"error": error, "detail": detail} (detail NULL reads as ""); NULL when out of memory. */
json_t *mdm_api_error_json(const char *error, const char *detail);
/** Answers status with {"error", "detail"}. */
void mdm_api_respond_error(mdm_exchange_t *x, int status, const char *error, const char *detail);
/** 405 with an Allow header ("GET, POST"). */
void mdm_api_method_not_allowed(mdm_exchange_t *x, const char *allow);

/** Sets key to the JSON string s, or null when s is not valid UTF-8. */
void mdm_api_set_str(json_t *obj, const char *key, const char *s);
void mdm_api_set_int(json_t *obj, const char *key, uint64_t v);

/* ---- queries ---- */

/** A UDID, command UUID or similar path segment: 1..63 of A-Z a-z 0-9 - _ . : */
bool mdm_api_id_valid(const char *s, size_t len);

/** Finds name=value in query (NULL: none) and percent-decodes the value into out (outlen
 * bytes). True when found and it fit; a value that does not fit or decode (or holds %00)
 * reads as absent. */
bool mdm_api_query_param(const char *query, const char *name, char *out, size_t outlen);
/** Parses an unsigned decimal; false when empty, malformed or over UINT64_MAX. */
bool mdm_api_parse_u64(const char *s, uint64_t *out);

/**
 * Reads the paging parameters of query: limit (1..MDM_API_LIST_LIMIT_MAX, default
 * MDM_API_LIST_LIMIT_DEFAULT) and after ("" when absent; otherwise after_valid(after) must
 * hold, after_what names it in the error). On a malformed one answers 400 and returns false.
 */
bool mdm_api_paging(mdm_exchange_t *x, const char *query, unsigned *limit, char *after,
                    size_t after_size, bool (*after_valid)(const char *s),
                    const char *after_what);

/* ---- claims: one change in flight per record, process-wide ---- */

#define MDM_API_CLAIMS_MAX 128 /* changes in flight at once */
#define MDM_API_CLAIM_KEY_MAX (2 + 63 + 1) /* "<kind>/" + a name or id of up to 63 bytes */

/**
 * Claims key (non-empty, shorter than MDM_API_CLAIM_KEY_MAX; e.g. "u/alice", "p/<id>") while a
 * read-modify-write of that record is in flight: a second change would read the record before
 * the first one's write is committed. Returns 0, -EBUSY (claimed: answer 409) or -ENOSPC.
 */
int mdm_api_claim(const char *key);
void mdm_api_unclaim(const char *key);

/* ---- calls: mutating requests, audited ---- */

/**
 * One mutating request. Embed it first in a bigger struct when a call needs more state (set
 * free_fn then). It ends exactly once, with mdm_api_call_finish() or mdm_api_call_fail():
 * the audit event goes into the shard's open batch, and the answer is sent (and free_fn
 * called) once that batch is durable, so anything else the caller appended to the same batch
 * before ending the call is durable too when the administrator hears of it.
 */
struct mdm_api_call {
    mdm_exchange_t *x;
    mdm_shard_t *shard;              /* of x: where the call lives */
    mdm_audit_event_t audit;         /* who, action, target, source set by mdm_api_call_new */
    int status;
    json_t *body;
    mdm_commit_waiter_t waiter;
    void (*free_fn)(struct mdm_api_call *c); /* frees the containing object; default free() */
};

/** Allocates size bytes (>= sizeof(struct mdm_api_call)), zeroed, for a call auditing action
 * on target. NULL when out of memory (answer 503 yourself then). */
struct mdm_api_call *mdm_api_call_new(mdm_exchange_t *x, size_t size, const char *action,
                                      const char *target);
/** Ends c with status and body (handed over); detail is the audit event's (never a secret). */
void mdm_api_call_finish(struct mdm_api_call *c, int status, json_t *body, const char *detail);
/** Ends c with an error answer {"error", "detail"}. */
void mdm_api_call_fail(struct mdm_api_call *c, int status, const char *error,
                       const char *detail);

/** What a job found wrong, answered once it is back on the shard (status 0: nothing). */
struct mdm_api_outcome {
    int status;
    char error[48];
    char detail[300];
};

/** Sets o (the detail from fmt) and returns -1, for `return mdm_api_outcome_set(...)`. */
int mdm_api_outcome_set(struct mdm_api_outcome *o, int status, const char *error,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/** Parses the request body of c as a JSON object; on failure ends the call (400/415) and
 * returns NULL. */
json_t *mdm_api_body_object(struct mdm_api_call *c);

/* ---- shared state ---- */

/** The store the API reads and writes (set by mdm_api_add_routes). */
mdm_store_t *mdm_api_store(void);
/** The audit name of the admin key ("admin-key:1a2b3c4d"). */
const char *mdm_api_who(void);

/* ---- api_enroll.c ---- */

/**
 * Handles every request whose path after "/api/v1/" (rest, raw) starts with "users",
 * "invitations" or "enrollments"; the caller has checked the API key. See api_enroll.c.
 */
void mdm_api_enroll_handle(mdm_exchange_t *x, const char *rest);

/** True when rest (the path after "/api/v1/") belongs to mdm_api_enroll_handle. */
bool mdm_api_enroll_owns(const char *rest);

/**
 * The status an administrator sees for inv at wall-clock time now_ms: the stored status,
 * except that a pending invitation reads as expired from its expires_ms on. Pure.
 */
enum mdm_invite_status mdm_api_invitation_status(const mdm_invitation_t *inv, uint64_t now_ms);

/**
 * The status of enrollment e at now_ms: "completed" once a Mac completed it, else "pending"
 * while its SCEP challenge is valid, else "expired". Pure; the string is static.
 */
const char *mdm_api_enrollment_status(const mdm_enrollment_t *e, uint64_t now_ms);

/* ---- api_policy.c ---- */

/** True when rest (the path after "/api/v1/") belongs to mdm_api_policy_handle: policy-types,
 * policies, groups, apps, devices/{udid}/policies and devices/{udid}/apps. */
bool mdm_api_policy_owns(const char *rest);
/** Handles those requests; the caller has checked the API key. See api_policy.c. */
void mdm_api_policy_handle(mdm_exchange_t *x, const char *rest);

/* ---- api_actions.c ---- */

/** True for devices/{udid}/actions[/...], devices/{udid}/lock-pin, .../filevault-key. */
bool mdm_api_actions_owns(const char *rest);
/** Handles those requests; the caller has checked the API key. See api_actions.c. */
void mdm_api_actions_handle(mdm_exchange_t *x, const char *rest);

#endif
