/*
 * The admin API v1: JSON over HTTPS on the admin listener, under /api/v1/. See docs/api.md.
 *
 * Every request carries "Authorization: Bearer <admin API key>"; the SHA-256 of the key is
 * compared (in constant time) with DIR/admin-api-key.sha256, read once at start-up. A missing
 * or wrong key is answered 401 (this router serves administrators only; the device listener
 * never answers 401, which would make a Mac drop its MDM profile).
 *
 * The API talks to devices only through device actor requests (mdm_dev_req_t), reads
 * committed state with jobs on storage workers, and writes command records and audit events
 * to the open batch of the shard that handles the request, answering only once they are
 * durable. Every mutating call (POST, DELETE), successful or not, appends an audit event.
 *
 * Threads: handlers run on the shard of the admin connection; all replies come back there.
 */
#ifndef MDM_ACTORS_API_H
#define MDM_ACTORS_API_H

#include "actors/actor.h"
#include "core/http.h"

/** Most UDIDs one POST /api/v1/commands may name. */
#define MDM_API_BULK_MAX 10000
/** Device requests one API call keeps outstanding at once (the rest wait their turn). */
#define MDM_API_INFLIGHT_MAX 256
/** Largest request body the API takes (profiles can be large). */
#define MDM_API_BODY_MAX (8u * 1024 * 1024)

/**
 * Reads dir/admin-api-key.sha256 and adds the "/api/v1/" prefix route to router. rt must
 * outlive the router's use; seal_key (the instance secrets key, which seals the push
 * certificate's key) is copied. Call once per process (the API's state is static), before the
 * shards start. When the hash cannot be read the API is still routed but answers every
 * request 401 (logged at start-up). Returns 0 or the codes of mdm_http_router_add.
 */
MDM_MUST_CHECK int mdm_api_add_routes(mdm_http_router_t *router, mdm_actors_t *rt,
                                      const char *dir, const uint8_t seal_key[32]);

#endif
