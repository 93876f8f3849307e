/*
 * Health endpoints and the probe actor. See probe.h.
 *
 * /readyz?actor=<id> targets probe actor <id> (default "readyz"); its home shard is
 * hash(id) % shards, so tests reach another shard by picking ids. The probe record
 * (MDM_CF_PROBE, key "probe/<id>") holds a format byte, the write count and the wall time
 * of the last write; the actor loads it lazily with a cold read off the shard thread.
 */
#include "actors/probe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/server.h"

#define PROBE_RECORD_V1 1
#define PROBE_RECORD_LEN 17

struct probe_actor {
    mdm_actor_t base;
    uint64_t writes;
    mdm_shard_msg_t load_msg; /* posted back by the storage worker */
    int load_status;
};

struct probe_req {
    mdm_actor_msg_t base;
    mdm_exchange_t *x;
    mdm_commit_waiter_t waiter;
    int status; /* 0, or why it failed */
    unsigned actor_shard;
    uint64_t writes;
    uint64_t started_us;
};

static void probe_load(mdm_actor_t *a);
static void probe_receive(mdm_actor_t *a, mdm_actor_msg_t *m);

static const mdm_actor_type_t probe_type = {
    .name = "probe",
    .size = sizeof(struct probe_actor),
    .load = probe_load,
    .receive = probe_receive,
};

static void probe_key(const char *id, char *key, size_t keylen, size_t *len)
{
    int n = snprintf(key, keylen, "probe/%s", id);
    *len = (size_t)n < keylen ? (size_t)n : keylen - 1;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* ---- loading ---- */

static void on_loaded_msg(mdm_shard_t *sh, mdm_shard_msg_t *msg)
{
    (void)sh;
    struct probe_actor *pa = MDM_CONTAINER_OF(msg, struct probe_actor, load_msg);
    mdm_actor_loaded(&pa->base, pa->load_status);
}

/* Storage worker thread: decode, then hand the actor back to its shard. */
static void on_probe_record(void *arg, int status, const void *val, size_t vlen)
{
    struct probe_actor *pa = arg;
    pa->load_status = 0;
    if (status == 0) {
        const uint8_t *p = val;
        if (vlen == PROBE_RECORD_LEN && p[0] == PROBE_RECORD_V1)
            pa->writes = get_u64(p + 1);
        else
            pa->load_status = MDM_ESTORE; /* unknown format: refuse rather than overwrite */
    } else if (status != MDM_ENOTFOUND) {
        pa->load_status = status;
    }
    pa->load_msg.fn = on_loaded_msg;
    mdm_shard_post(mdm_actor_shard(&pa->base), &pa->load_msg);
}

static void probe_load(mdm_actor_t *a)
{
    struct probe_actor *pa = (struct probe_actor *)a;
    char key[MDM_ACTOR_ID_MAX + 16];
    size_t klen;
    probe_key(a->id, key, sizeof(key), &klen);
    int ret = mdm_store_get_async(mdm_actors_store(mdm_actors_of(a)), MDM_CF_PROBE, key, klen,
                                  on_probe_record, pa);
    if (ret != 0)
        mdm_actor_loaded(a, ret);
}

/* ---- handling ---- */

static void on_reply(mdm_shard_t *sh, mdm_shard_msg_t *msg)
{
    (void)sh;
    struct probe_req *req = MDM_CONTAINER_OF(msg, struct probe_req, base.shard_msg);
    if (req->status != 0) {
        mdm_exchange_error(req->x, 503,
                           req->status == MDM_EFULL ? "probe actor is busy, retry later"
                                                    : "storage is not ready");
    } else {
        char body[256];
        int n = snprintf(body, sizeof(body),
                         "{\"status\":\"ready\",\"request_shard\":%u,\"actor_shard\":%u,"
                         "\"writes\":%llu,\"commit_us\":%llu}\n",
                         req->base.origin->index, req->actor_shard,
                         (unsigned long long)req->writes,
                         (unsigned long long)(mdm_now_ms() * 1000 - req->started_us));
        mdm_exchange_respond(req->x, 200, NULL, 0, "application/json", body, (size_t)n);
    }
    free(req);
}

static void on_durable(mdm_commit_waiter_t *w, int status)
{
    struct probe_req *req = MDM_CONTAINER_OF(w, struct probe_req, waiter);
    req->status = status;
    mdm_actor_reply(&req->base, on_reply);
}

static void probe_receive(mdm_actor_t *a, mdm_actor_msg_t *m)
{
    struct probe_actor *pa = (struct probe_actor *)a;
    struct probe_req *req = (struct probe_req *)m;
    mdm_shard_t *sh = mdm_actor_shard(a);
    pa->writes++;
    uint8_t rec[PROBE_RECORD_LEN];
    rec[0] = PROBE_RECORD_V1;
    put_u64(rec + 1, pa->writes);
    put_u64(rec + 9, mdm_wall_ms());
    char key[MDM_ACTOR_ID_MAX + 16];
    size_t klen;
    probe_key(a->id, key, sizeof(key), &klen);
    mdm_batch_put(mdm_actor_batch(a), MDM_CF_PROBE, key, klen, rec, sizeof(rec));
    req->actor_shard = sh->index;
    req->writes = pa->writes;
    req->waiter.fn = on_durable;
    mdm_actors_after_commit(sh, &req->waiter);
    /* The reply waits for durability; the actor can take its next message now. */
    mdm_actor_done(a);
}

static void on_reject(mdm_actor_msg_t *m, int err)
{
    struct probe_req *req = (struct probe_req *)m;
    req->status = err;
    mdm_actor_reply(m, on_reply);
}

/* ---- HTTP handlers ---- */

static bool valid_actor_id(const char *s, size_t len)
{
    if (len == 0 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        if (!ok)
            return false;
    }
    return true;
}

/* Finds "actor=<id>" in the query; returns false on a malformed id. */
static bool probe_id_from_query(const char *query, char *id, size_t idlen)
{
    snprintf(id, idlen, "readyz");
    if (!query)
        return true;
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > 6 && strncmp(p, "actor=", 6) == 0) {
            if (!valid_actor_id(p + 6, len - 6))
                return false;
            snprintf(id, idlen, "%.*s", (int)(len - 6), p + 6);
        }
        p = amp ? amp + 1 : NULL;
    }
    return true;
}

static void handle_readyz(mdm_exchange_t *x, void *ctx)
{
    mdm_actors_t *rt = ctx;
    const mdm_http_request_t *r = mdm_exchange_request(x);
    struct probe_req *req = calloc(1, sizeof(*req));
    if (!req) {
        mdm_exchange_error(x, 503, "out of memory");
        return;
    }
    if (!probe_id_from_query(r->query, req->base.id, sizeof(req->base.id))) {
        free(req);
        mdm_exchange_error(x, 400, "actor must be 1-64 characters of A-Z a-z 0-9 . _ -");
        return;
    }
    req->x = x;
    req->started_us = mdm_now_ms() * 1000;
    req->base.type = &probe_type;
    req->base.on_reject = on_reject;
    mdm_actor_send(rt, &req->base);
}

static void handle_healthz(mdm_exchange_t *x, void *ctx)
{
    (void)ctx;
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"status\":\"ok\",\"shard\":%u}\n",
                     mdm_exchange_shard(x)->index);
    mdm_exchange_respond(x, 200, NULL, 0, "application/json", body, (size_t)n);
}

int mdm_probe_add_routes(mdm_http_router_t *router, mdm_actors_t *rt)
{
    int ret = mdm_http_router_add(router, MDM_HTTP_GET, "/healthz", (void *)handle_healthz, NULL,
                                  0);
    if (ret == 0)
        ret = mdm_http_router_add(router, MDM_HTTP_GET, "/readyz", (void *)handle_readyz, rt, 0);
    return ret;
}
