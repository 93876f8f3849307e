/*
 * The device-facing MDM endpoints: PUT /<instance>/mdm/checkin and PUT /<instance>/mdm/connect.
 * Each request's identity and plist body are checked here, then the request goes to the
 * device actor of its UDID, which answers after its writes are durable.
 *
 * Identity: a Mac is known by the SHA-256 (hex) of its identity certificate's DER, proven
 * either as the TLS client certificate (mTLS, verified by the TLS layer against the device
 * listener's client CA) or by the Mdm-Signature header: base64 of a detached CMS SignedData
 * over the exact request body, whose signer certificate must chain to the trust set. Both
 * give the same fingerprint, so a Mac may switch between them while it keeps its certificate.
 */
#ifndef MDM_ACTORS_MDM_H
#define MDM_ACTORS_MDM_H

#include <stddef.h>

#include "core/cms.h"
#include "core/http.h"
#include "core/workers.h"

/** Which proofs of identity a TLS device listener accepts. Plain HTTP: always SIGNATURE. */
enum mdm_identity_mode {
    MDM_IDENTITY_MTLS,      /* the TLS client certificate only */
    MDM_IDENTITY_SIGNATURE, /* Mdm-Signature only (a client certificate too must match it) */
    MDM_IDENTITY_EITHER,    /* the client certificate when presented, else Mdm-Signature;
                             * both present: they must name the same certificate */
};

/** Largest decoded Mdm-Signature accepted (a SignedData with a certificate chain). */
#define MDM_SIGNATURE_MAX_BYTES 16384

struct mdm_mdm_options {
    const char *instance;            /* path prefix, copied into the routes */
    size_t max_body_bytes;           /* per request */
    enum mdm_identity_mode identity; /* on TLS listeners */
    /* CAs whose certificates may sign Mdm-Signature; immutable, shared by every shard.
     * NULL: every signature is refused. Borrowed. */
    const mdm_cms_trust_t *trust;
    /* Threads that verify Mdm-Signature off the shard threads. Borrowed; required when
     * signatures can be accepted. */
    mdm_workers_t *verifiers;
};

/**
 * Adds the device routes under /<instance>/mdm/. o is borrowed: it (and o->trust) must
 * outlive the router and every request served through it; handlers run on shard threads
 * and only read it. Returns 0 or a router error.
 */
MDM_MUST_CHECK int mdm_mdm_add_routes(mdm_http_router_t *router, const struct mdm_mdm_options *o);

#endif
