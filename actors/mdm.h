/*
 * The device-facing MDM endpoints: PUT /<instance>/mdm/checkin and PUT /<instance>/mdm/connect.
 * Each request's identity (TLS client certificate) and plist body are checked here, then the
 * request goes to the device actor of its UDID, which answers after its writes are durable.
 */
#ifndef MDM_ACTORS_MDM_H
#define MDM_ACTORS_MDM_H

#include "core/http.h"

/** Adds the device routes under /<instance>/mdm/. Returns 0 or a router error. */
MDM_MUST_CHECK int mdm_mdm_add_routes(mdm_http_router_t *router, const char *instance,
                                      size_t max_body_bytes);

#endif
