/*
 * Device-facing MDM endpoints. See mdm.h.
 *
 * Refusals are 400 (malformed) or 403 (identity), never 401: a 401 makes a Mac remove its
 * MDM profile, so a bug here must not be able to unenroll a fleet.
 *
 * Identity is decided in resolve_identity() alone, before the body is parsed, and yields the
 * certificate fingerprint that the device actor binds at Authenticate and checks afterwards.
 * Mdm-Signature costs a signature verification per request (the CMS signature), plus one for
 * the certificate's issuer signature the first time a verifier thread sees that certificate in
 * a while (a per-thread cache of trusted signer fingerprints). Verification runs on the
 * verifier pool, never on a shard thread: with Debian's wolfSSL a check against a device key
 * the thread has not cached costs milliseconds (see cms.h), which must not stall a shard.
 */
#include "actors/mdm.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/device.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/plist.h"
#include "core/server.h"

#define PLIST_MAX_DEPTH 32
#define TRUSTED_CACHE_SLOTS 65536        /* direct-mapped: 2.6 MB; sized for the devices
                                            heard from within the TTL */
#define TRUSTED_CACHE_LOCKS 64           /* stripes: verifiers rarely wait for each other */
#define TRUSTED_CACHE_TTL_S 600          /* an expiry or a CA change is seen within this */

/* Signer certificates verified against the trust set recently, by SHA-256, shared by every
 * verifier thread (a miss costs an ECDSA or RSA verification of the CA's signature). The
 * trust set is immutable while the server runs, so the answer only ages with the clock. */
struct trusted_slot {
    uint8_t sha256[32];
    time_t until;
};
static struct trusted_slot *trusted_cache;
static pthread_mutex_t trusted_locks[TRUSTED_CACHE_LOCKS];
static pthread_once_t trusted_once = PTHREAD_ONCE_INIT;

static void trusted_init(void)
{
    trusted_cache = calloc(TRUSTED_CACHE_SLOTS, sizeof(*trusted_cache));
    for (unsigned i = 0; i < TRUSTED_CACHE_LOCKS; i++)
        pthread_mutex_init(&trusted_locks[i], NULL);
}

static unsigned trusted_index(const uint8_t sha[32])
{
    return ((unsigned)sha[0] | (unsigned)sha[1] << 8 | (unsigned)sha[2] << 16) %
           TRUSTED_CACHE_SLOTS;
}

static bool trusted_recently(const uint8_t sha[32], time_t now)
{
    pthread_once(&trusted_once, trusted_init);
    if (!trusted_cache)
        return false; /* no memory for it: nothing is cached */
    unsigned i = trusted_index(sha);
    pthread_mutex_lock(&trusted_locks[i % TRUSTED_CACHE_LOCKS]);
    const struct trusted_slot *t = &trusted_cache[i];
    bool hit = t->until > now && memcmp(t->sha256, sha, 32) == 0;
    pthread_mutex_unlock(&trusted_locks[i % TRUSTED_CACHE_LOCKS]);
    return hit;
}

static void remember_trusted(const uint8_t sha[32], time_t now)
{
    pthread_once(&trusted_once, trusted_init);
    if (!trusted_cache)
        return;
    unsigned i = trusted_index(sha);
    pthread_mutex_lock(&trusted_locks[i % TRUSTED_CACHE_LOCKS]);
    memcpy(trusted_cache[i].sha256, sha, 32);
    trusted_cache[i].until = now + TRUSTED_CACHE_TTL_S;
    pthread_mutex_unlock(&trusted_locks[i % TRUSTED_CACHE_LOCKS]);
}

static bool valid_udid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > MDM_UDID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

/*
 * Verifies the Mdm-Signature header value sig over the request body and the signer
 * certificate against the trust set. Returns 0 with the signer's fingerprint in hex, or an
 * HTTP status (403, or 503 when out of memory) with a one-line reason in why.
 */
static int verify_signature(const struct mdm_mdm_options *o, const uint8_t *body,
                            size_t body_len, const char *sig, char hex[MDM_SHA256_HEX_LEN + 1],
                            char *why, size_t whylen)
{
    mdm_buf_t der, cert;
    mdm_buf_init(&der, MDM_SIGNATURE_MAX_BYTES);
    mdm_buf_init(&cert, 0);
    int status = 403;
    int ret = mdm_base64_decode(sig, strlen(sig), &der);
    if (ret == -ENOMEM) {
        status = 503;
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    if (ret == MDM_ETOOBIG) {
        snprintf(why, whylen, "Mdm-Signature is larger than %d bytes", MDM_SIGNATURE_MAX_BYTES);
        goto out;
    }
    if (ret != 0 || der.len == 0) {
        snprintf(why, whylen, "Mdm-Signature is not base64 of a CMS SignedData");
        goto out;
    }
    ret = mdm_cms_verify_detached(mdm_buf_head(&der), der.len, body, body_len, &cert);
    if (ret == -ENOMEM) {
        status = 503;
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    if (ret == MDM_ECERT) {
        snprintf(why, whylen, "Mdm-Signature carries no signer certificate");
        goto out;
    }
    if (ret != 0) {
        snprintf(why, whylen, "Mdm-Signature does not verify");
        goto out;
    }
    uint8_t sha[32];
    if (mdm_sha256(mdm_buf_head(&cert), cert.len, sha) != 0) {
        status = 503;
        snprintf(why, whylen, "cannot hash the signer certificate");
        goto out;
    }
    char err[200] = "";
    time_t now = time(NULL);
    if (o->trust && trusted_recently(sha, now))
        ret = 0;
    else
        ret = o->trust ? mdm_cms_trust_verify(o->trust, mdm_buf_head(&cert), cert.len, now, err,
                                              sizeof(err))
                       : MDM_ECERT;
    if (ret == -ENOMEM) {
        status = 503;
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    if (ret != 0) {
        if (!o->trust || strncmp(err, "issuer not trusted", 18) == 0)
            snprintf(why, whylen, "signer certificate not issued by a trusted CA");
        else
            snprintf(why, whylen, "signer certificate not accepted: %s", err);
        goto out;
    }
    remember_trusted(sha, now);
    mdm_hex_encode(sha, sizeof(sha), hex);
    status = 0;
out:
    mdm_buf_dispose(&der);
    mdm_buf_dispose(&cert);
    return status;
}

/* A request whose identity is being checked on the verifier pool. */
struct verify_job {
    mdm_shard_msg_t msg; /* posts the outcome back to the request's shard */
    mdm_exchange_t *x;   /* stays valid: the handler owns it until it answers */
    mdm_shard_t *shard;
    const struct mdm_mdm_options *o;
    enum mdm_dev_req_kind kind;
    char *sig;           /* copies: the worker never touches the connection's memory, which */
    uint8_t *body;       /* a shutdown past its deadline may free under it */
    size_t body_len;
    int status;
    char hex[MDM_SHA256_HEX_LEN + 1];
    char why[200];
};

static void dispatch_to_device(mdm_exchange_t *x, enum mdm_dev_req_kind kind,
                               const char *identity);

static void refuse(mdm_exchange_t *x, int status, const char *why)
{
    mdm_debug("mdm", "%s %s: %d %s", mdm_exchange_peer_addr(x), mdm_exchange_request(x)->path,
              status, why);
    mdm_exchange_error(x, status, why);
}

/* Back on the request's shard with the signer's fingerprint (or a refusal). */
static void on_verified(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct verify_job *j = MDM_CONTAINER_OF(m, struct verify_job, msg);
    free(j->sig);
    free(j->body);
    const struct mdm_tls_peer *peer = mdm_exchange_peer(j->x);
    if (j->status == 0 && peer->present && strcmp(peer->sha256_hex, j->hex) != 0) {
        j->status = 403;
        snprintf(j->why, sizeof(j->why), "the TLS client certificate and the Mdm-Signature "
                                         "signer are different certificates");
    }
    if (j->status != 0)
        refuse(j->x, j->status, j->why);
    else
        dispatch_to_device(j->x, j->kind, j->hex);
    free(j);
}

/* On a verifier thread. */
static void verify_job_run(void *arg)
{
    struct verify_job *j = arg;
    j->status = verify_signature(j->o, j->body, j->body_len, j->sig, j->hex, j->why,
                                 sizeof(j->why));
    j->msg.fn = on_verified;
    mdm_shard_post(j->shard, &j->msg);
}

/*
 * Who sent this request: the fingerprint of its identity certificate, from the TLS client
 * certificate or the Mdm-Signature header as o->identity allows (plain HTTP: the header
 * only). With a certificate alone, dispatches at once; a signature is verified on the
 * verifier pool first. Refusals are 403 (503 when out of resources) with a one-line reason.
 */
static void identify_and_dispatch(mdm_exchange_t *x, const struct mdm_mdm_options *o,
                                  enum mdm_dev_req_kind kind)
{
    const mdm_http_request_t *req = mdm_exchange_request(x);
    const struct mdm_tls_peer *peer = mdm_exchange_peer(x);
    bool tls = mdm_exchange_is_tls(x);
    enum mdm_identity_mode mode = tls ? o->identity : MDM_IDENTITY_SIGNATURE;
    const char *sig =
        mode == MDM_IDENTITY_MTLS ? NULL : mdm_http_request_header(req, "Mdm-Signature");
    if (mode == MDM_IDENTITY_MTLS || (mode == MDM_IDENTITY_EITHER && peer->present && !sig)) {
        if (!peer->present) {
            refuse(x, 403, "no device identity: present the identity certificate as the TLS "
                           "client certificate");
            return;
        }
        dispatch_to_device(x, kind, peer->sha256_hex);
        return;
    }
    if (!sig) {
        if (!tls)
            refuse(x, 403, "no device identity: this listener accepts only requests signed "
                           "with the identity certificate (Mdm-Signature)");
        else if (mode == MDM_IDENTITY_SIGNATURE)
            refuse(x, 403, "no device identity: sign the request with the identity "
                           "certificate (Mdm-Signature)");
        else
            refuse(x, 403, "no device identity: present the identity certificate as the TLS "
                           "client certificate or sign the request (Mdm-Signature)");
        return;
    }
    struct verify_job *j = calloc(1, sizeof(*j));
    if (!j) {
        refuse(x, 503, "out of memory");
        return;
    }
    j->x = x;
    j->shard = mdm_exchange_shard(x);
    j->o = o;
    j->kind = kind;
    j->sig = strdup(sig);
    j->body_len = req->body.len;
    j->body = malloc(j->body_len ? j->body_len : 1);
    if (j->body)
        memcpy(j->body, mdm_buf_head(&req->body), j->body_len);
    if (!j->sig || !j->body || !o->verifiers ||
        mdm_workers_run(o->verifiers, verify_job_run, j) != 0) {
        free(j->sig);
        free(j->body);
        free(j);
        refuse(x, 503, "signature verification is not available, retry later");
    }
}

static void on_answer(mdm_dev_req_t *r)
{
    mdm_exchange_t *x = r->ctx;
    if (r->status >= 400)
        mdm_exchange_error(x, r->status, r->error);
    else
        mdm_exchange_respond(x, r->status, NULL, 0, r->reply.len ? r->reply_type : NULL,
                             mdm_buf_head(&r->reply), r->reply.len);
    mdm_dev_req_free(r);
}

/* Parses the body and hands the request to the device actor of its UDID. */
static void dispatch_to_device(mdm_exchange_t *x, enum mdm_dev_req_kind kind,
                               const char *identity)
{
    const mdm_http_request_t *req = mdm_exchange_request(x);
    plist_t msg = NULL;
    char err[160];
    if (mdm_plist_parse_dict(mdm_buf_head(&req->body), req->body.len, PLIST_MAX_DEPTH, &msg, err,
                             sizeof(err)) != 0) {
        mdm_exchange_error(x, 400, err);
        return;
    }
    const char *udid = NULL;
    if (mdm_plist_get_string(msg, "UDID", &udid) != 0 &&
        mdm_plist_get_string(msg, "EnrollmentID", &udid) != 0) {
        plist_free(msg);
        mdm_exchange_error(x, 400, "the message has no UDID (or EnrollmentID) string");
        return;
    }
    if (!valid_udid(udid)) {
        plist_free(msg);
        mdm_exchange_error(x, 400, "UDID must be 1-63 characters of A-Z a-z 0-9 - _ .");
        return;
    }
    mdm_dev_req_t *r = mdm_dev_req_new(kind, udid);
    if (!r) {
        plist_free(msg);
        mdm_exchange_error(x, 503, "out of memory");
        return;
    }
    r->msg = msg;
    snprintf(r->cert_sha256, sizeof(r->cert_sha256), "%s", identity);
    const char *user = NULL;
    if (mdm_plist_get_string(msg, "UserID", &user) == 0 ||
        mdm_plist_get_string(msg, "EnrollmentUserID", &user) == 0)
        snprintf(r->channel, sizeof(r->channel), "%s", user);
    if (kind == MDM_DEV_CONNECT && req->body.len) {
        r->body = malloc(req->body.len);
        if (!r->body) {
            mdm_dev_req_free(r);
            mdm_exchange_error(x, 503, "out of memory");
            return;
        }
        memcpy(r->body, mdm_buf_head(&req->body), req->body.len);
        r->body_len = req->body.len;
    }
    r->ctx = x;
    r->done = on_answer;
    mdm_dev_send(r);
}

static void handle_checkin(mdm_exchange_t *x, void *ctx)
{
    identify_and_dispatch(x, ctx, MDM_DEV_CHECKIN);
}

static void handle_connect(mdm_exchange_t *x, void *ctx)
{
    identify_and_dispatch(x, ctx, MDM_DEV_CONNECT);
}

int mdm_mdm_add_routes(mdm_http_router_t *router, const struct mdm_mdm_options *o)
{
    char path[160];
    void *ctx = (void *)o; /* handlers only read it */
    snprintf(path, sizeof(path), "/%s/mdm/checkin", o->instance);
    int ret = mdm_http_router_add(router, MDM_HTTP_PUT, path, (void *)handle_checkin, ctx,
                                  o->max_body_bytes);
    if (ret != 0)
        return ret;
    snprintf(path, sizeof(path), "/%s/mdm/connect", o->instance);
    return mdm_http_router_add(router, MDM_HTTP_PUT, path, (void *)handle_connect, ctx,
                               o->max_body_bytes);
}
