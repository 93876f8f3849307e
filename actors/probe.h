/*
 * Health endpoints: GET /healthz (liveness, answered by the shard that got the request) and
 * GET /readyz (readiness: a message to a probe actor on its home shard, which makes one
 * small durable write through the group commit and answers after it is durable, so the whole
 * path ring -> TLS -> HTTP -> actor -> storage -> reply is exercised).
 */
#ifndef MDM_ACTORS_PROBE_H
#define MDM_ACTORS_PROBE_H

#include "actors/actor.h"
#include "core/http.h"

/** Adds GET /healthz and GET /readyz to router. Returns 0 or -ENOSPC. */
MDM_MUST_CHECK int mdm_probe_add_routes(mdm_http_router_t *router, mdm_actors_t *rt);

#endif
