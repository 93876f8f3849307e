/*
 * Device-facing MDM endpoints. See mdm.h.
 *
 * Refusals are 400 (malformed) or 403 (identity), never 401: a 401 makes a Mac remove its
 * MDM profile, so a bug here must not be able to unenroll a fleet.
 */
#include "actors/mdm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/device.h"
#include "core/log.h"
#include "core/plist.h"
#include "core/server.h"

#define PLIST_MAX_DEPTH 32

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

static void handle_device_request(mdm_exchange_t *x, enum mdm_dev_req_kind kind)
{
    const mdm_http_request_t *req = mdm_exchange_request(x);
    const struct mdm_tls_peer *peer = mdm_exchange_peer(x);
    if (!peer->present) {
        mdm_exchange_error(x, 403, "no device identity: present the identity certificate as "
                                   "the TLS client certificate");
        return;
    }
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
    snprintf(r->cert_sha256, sizeof(r->cert_sha256), "%s", peer->sha256_hex);
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
    (void)ctx;
    handle_device_request(x, MDM_DEV_CHECKIN);
}

static void handle_connect(mdm_exchange_t *x, void *ctx)
{
    (void)ctx;
    handle_device_request(x, MDM_DEV_CONNECT);
}

int mdm_mdm_add_routes(mdm_http_router_t *router, const char *instance, size_t max_body_bytes)
{
    char path[160];
    snprintf(path, sizeof(path), "/%s/mdm/checkin", instance);
    int ret = mdm_http_router_add(router, MDM_HTTP_PUT, path, (void *)handle_checkin, NULL,
                                  max_body_bytes);
    if (ret != 0)
        return ret;
    snprintf(path, sizeof(path), "/%s/mdm/connect", instance);
    return mdm_http_router_add(router, MDM_HTTP_PUT, path, (void *)handle_connect, NULL,
                               max_body_bytes);
}
