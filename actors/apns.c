/*
 * The APNs pusher. See apns.h and docs/apns.md.
 *
 * Per shard: a list of pushes waiting for a connection (FIFO), a list of delayed items sorted
 * by due time (retries after backoff, and coalescing wake-ups for device actors) behind one
 * timer, and [apns] connections outconns. Everything runs on the shard's thread. h2c response
 * callbacks and outconn events only move items between lists and schedule a "kick" (a 0 ms
 * timer), which submits, flushes and (re)connects outside those callbacks.
 *
 * Certificate states: OFF (no usable endpoint), UNKNOWN (not read yet, or changed: read it
 * once no connection made with the old one is left), LOADING (storage job), READY, ABSENT
 * (none stored, or unusable: pushes fail at once until mdm_apns_cert_changed).
 */
#include "actors/apns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/device.h"
#include "actors/pushcert.h"
#include "core/log.h"
#include "core/outconn.h"

#define CONNS_MAX 16
#define NOT_PROCESSED_MAX 20 /* resends of a push that never reached APNs */
#define RECONNECT_MAX_MS 30000
#define TOKEN_MAX 128
#define RESEND_BASE_MS 100  /* delay before the 2nd resend of a not-processed push, doubling */
#define RESEND_MAX_MS 5000
#define ADDRS_MAX 8         /* resolved addresses kept per shard */
#define DNS_TTL_MS 300000   /* resolve the APNs host again after this: APNs moves its hosts */

static struct {
    bool enabled;
    bool need_dns; /* the host is a name and no apns.address was given */
    struct sockaddr_storage addr; /* the fixed address when !need_dns */
    socklen_t addr_len;
    int port;
    char authority[256];
    char ca[PATH_MAX];
    uint64_t coalesce_ms;
    unsigned connections;
    uint64_t ping_interval_ms; /* 0 = no keep-alive */
    uint64_t ping_timeout_ms;
    mdm_store_t *store;
    uint8_t seal_key[32];
    mdm_shard_group_t *group;
} G;

enum cert_state { CERT_OFF, CERT_UNKNOWN, CERT_LOADING, CERT_READY, CERT_ABSENT };
enum item_kind { ITEM_PUSH, ITEM_WAKE };

struct item {
    struct item *next;
    enum item_kind kind;
    uint64_t due_ms;
    unsigned tries;         /* attempts that reached APNs or were lost after sending */
    unsigned not_processed; /* resends of a push that never reached APNs */
    char udid[MDM_UDID_MAX + 1];
    uint8_t token[TOKEN_MAX];
    size_t token_len;
    char path[16 + 2 * TOKEN_MAX];
    char body[300]; /* {"mdm":"<magic>"} */
    size_t body_len;
};

struct pusher;

struct conn {
    struct pusher *p;
    mdm_outconn_t *oc;
    unsigned addr_index; /* which of the pusher's addresses it connects to */
    bool was_ready;
    unsigned failures;
    mdm_timer_t reconnect;
    /* keep-alive: a PING after ping_interval_ms without a request or an answer */
    mdm_timer_t ping;
    uint64_t last_active_ms;
    uint64_t ping_sent_ms; /* 0 = no PING waiting for its ack */
};

struct pusher {
    mdm_shard_t *sh;
    enum cert_state cert;
    bool absent_logged;
    bool loading; /* a load job is out */
    bool stopping;
    unsigned gen; /* bumped by every certificate change */
    mdm_tls_ctx_t *tls;
    char topic[MDM_PUSHCERT_TOPIC_MAX];
    char expiration[24];
    /* where APNs is: G.addr, or what the last resolution of its host name gave */
    struct sockaddr_storage addrs[ADDRS_MAX];
    socklen_t addr_lens[ADDRS_MAX];
    unsigned n_addrs, next_addr;
    uint64_t resolved_ms;
    bool resolving; /* a resolver thread is out */
    unsigned dns_failures;
    mdm_timer_t dns_retry;
    struct conn conns[CONNS_MAX];
    unsigned rr; /* next connection to try */
    struct item *wait_head, *wait_tail;
    struct item *delayed; /* sorted by due_ms */
    unsigned n_items;
    mdm_timer_t delay_timer, kick_timer;
    uint64_t rng;
};

static void kick(struct pusher *p);

static struct pusher *pusher_of(mdm_shard_t *sh) { return sh->slots[MDM_SLOT_APNS]; }

static uint64_t rnd(struct pusher *p)
{
    uint64_t x = p->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return p->rng = x;
}

/* base * 2^(n-1), capped, plus up to 50% jitter. */
static uint64_t backoff_ms(struct pusher *p, uint64_t base, unsigned n, uint64_t cap)
{
    uint64_t d = base;
    for (unsigned i = 1; i < n && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    return d + rnd(p) % (d / 2 + 1);
}

static void schedule_kick(struct pusher *p)
{
    if (!p->stopping && !mdm_timer_armed(&p->kick_timer))
        mdm_timer_arm(&p->sh->loop, &p->kick_timer, 0);
}

/* ---- items ---- */

static void item_free(struct pusher *p, struct item *it)
{
    p->n_items--;
    free(it);
}

static void wait_push_back(struct pusher *p, struct item *it)
{
    it->next = NULL;
    if (p->wait_tail)
        p->wait_tail->next = it;
    else
        p->wait_head = it;
    p->wait_tail = it;
}

static void wait_push_front(struct pusher *p, struct item *it)
{
    it->next = p->wait_head;
    p->wait_head = it;
    if (!p->wait_tail)
        p->wait_tail = it;
}

static struct item *wait_pop(struct pusher *p)
{
    struct item *it = p->wait_head;
    if (it) {
        p->wait_head = it->next;
        if (!p->wait_head)
            p->wait_tail = NULL;
        it->next = NULL;
    }
    return it;
}

static void arm_delay_timer(struct pusher *p)
{
    if (p->stopping)
        return;
    if (!p->delayed) {
        mdm_timer_disarm(&p->sh->loop, &p->delay_timer);
        return;
    }
    uint64_t now = mdm_now_ms();
    mdm_timer_arm(&p->sh->loop, &p->delay_timer,
                  p->delayed->due_ms > now ? p->delayed->due_ms - now : 0);
}

static void delay_insert(struct pusher *p, struct item *it, uint64_t delay_ms)
{
    it->due_ms = mdm_now_ms() + delay_ms;
    struct item **pp = &p->delayed;
    while (*pp && (*pp)->due_ms <= it->due_ms)
        pp = &(*pp)->next;
    it->next = *pp;
    *pp = it;
    arm_delay_timer(p);
}

/* Final outcome of a push: tell the device actor (same shard). */
static void report(struct pusher *p, struct item *it, int status, const char *reason)
{
    mdm_dev_req_t *r = mdm_dev_req_new(MDM_DEV_PUSH_RESULT, it->udid);
    if (r) {
        r->push_status = status;
        snprintf(r->push_reason, sizeof(r->push_reason), "%s", reason);
        memcpy(r->push_token, it->token, it->token_len);
        r->push_token_len = it->token_len;
        r->done = mdm_dev_req_free;
        mdm_dev_send(r);
    }
    item_free(p, it);
}

static void wake_device(struct pusher *p, struct item *it)
{
    mdm_dev_req_t *r = mdm_dev_req_new(MDM_DEV_PUSH, it->udid);
    if (r) {
        r->wake = true;
        r->done = mdm_dev_req_free;
        mdm_dev_send(r);
    }
    item_free(p, it);
}

static void on_delay_timer(mdm_timer_t *t)
{
    struct pusher *p = MDM_CONTAINER_OF(t, struct pusher, delay_timer);
    uint64_t now = mdm_now_ms();
    bool pushes = false;
    while (p->delayed && p->delayed->due_ms <= now) {
        struct item *it = p->delayed;
        p->delayed = it->next;
        if (it->kind == ITEM_WAKE) {
            wake_device(p, it);
        } else {
            wait_push_back(p, it);
            pushes = true;
        }
    }
    arm_delay_timer(p);
    if (pushes)
        kick(p);
}

/* ---- certificate ---- */

struct load {
    mdm_shard_msg_t msg;
    struct pusher *p;
    unsigned gen;
    int status;
    mdm_pushcert_t pc;
};

static void on_loaded(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct load *l = MDM_CONTAINER_OF(m, struct load, msg);
    struct pusher *p = l->p;
    p->loading = false;
    if (p->stopping) {
        p->cert = CERT_UNKNOWN;
    } else if (l->gen != p->gen) {
        p->cert = CERT_UNKNOWN; /* changed meanwhile: read it again */
    } else if (l->status == MDM_ENOTFOUND) {
        p->cert = CERT_ABSENT;
        if (!p->absent_logged)
            mdm_warn("apns", "no push certificate: pushes are dropped until one is uploaded "
                             "(PUT /api/v1/push-certificate)");
        p->absent_logged = true;
    } else if (l->status != 0) {
        p->cert = CERT_ABSENT;
        mdm_error("apns", "the stored push certificate cannot be read: %s; pushes are off",
                  mdm_strerror(l->status));
    } else {
        struct mdm_tls_client_opts o = {
            .ca_path = G.ca[0] ? G.ca : NULL,
            .cert_der = l->pc.cert_der,
            .cert_der_len = l->pc.cert_len,
            .key_der = l->pc.key_der,
            .key_der_len = l->pc.key_len,
            .alpn = "h2",
        };
        mdm_tls_ctx_t *ctx = NULL;
        int ret = mdm_tls_ctx_new_client(&ctx, &o);
        if (ret != 0) {
            p->cert = CERT_ABSENT;
            mdm_error("apns", "cannot make the TLS context for APNs (push certificate %s, CA "
                              "%s): %s; pushes are off",
                      l->pc.topic, G.ca[0] ? G.ca : "none", mdm_strerror(ret));
        } else {
            mdm_tls_ctx_free(p->tls); /* no connection uses it any more */
            p->tls = ctx;
            snprintf(p->topic, sizeof(p->topic), "%s", l->pc.topic);
            p->cert = CERT_READY;
            p->absent_logged = false;
            mdm_info("apns", "shard %u: push certificate %s loaded", p->sh->index, p->topic);
        }
    }
    mdm_pushcert_dispose(&l->pc);
    free(l);
    kick(p);
}

static void load_job(mdm_store_t *s, void *arg)
{
    struct load *l = arg;
    l->status = mdm_pushcert_load(s, G.seal_key, &l->pc, NULL);
    l->msg.fn = on_loaded;
    mdm_shard_post(l->p->sh, &l->msg);
}

static void start_load(struct pusher *p)
{
    struct load *l = calloc(1, sizeof(*l));
    if (!l)
        return; /* tried again at the next kick */
    l->p = p;
    l->gen = p->gen;
    p->loading = true;
    p->cert = CERT_LOADING;
    if (mdm_store_run_async(G.store, load_job, l) != 0) {
        p->loading = false;
        p->cert = CERT_UNKNOWN;
        free(l);
    }
}

/* ---- addresses ----
 *
 * With a host name in apns.url (and no apns.address) each shard resolves it on a short-lived
 * thread (getaddrinfo blocks), uses the answers in turn (a failed connect moves on to the
 * next address) and resolves again after DNS_TTL_MS. A failed resolution keeps the old
 * addresses; with none yet, it is retried with backoff while pushes wait.
 */

struct resolve {
    mdm_shard_msg_t msg;
    struct pusher *p;
    int gai_err;
    unsigned n;
    struct sockaddr_storage addrs[ADDRS_MAX];
    socklen_t lens[ADDRS_MAX];
};

static void on_resolved(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct resolve *r = MDM_CONTAINER_OF(m, struct resolve, msg);
    struct pusher *p = r->p;
    p->resolving = false;
    if (p->stopping) {
        free(r);
        return;
    }
    if (r->gai_err || r->n == 0) {
        p->dns_failures++;
        uint64_t d = backoff_ms(p, 500, p->dns_failures, RECONNECT_MAX_MS);
        if (p->dns_failures == 1 || p->dns_failures % 10 == 0)
            mdm_warn("apns", "shard %u: cannot resolve %s: %s; %s", p->sh->index, G.authority,
                     r->gai_err ? gai_strerror(r->gai_err) : "no address",
                     p->n_addrs ? "keeping the previous addresses" : "pushes wait");
        if (p->n_addrs)
            p->resolved_ms = mdm_now_ms() - DNS_TTL_MS + d; /* try again in d */
        else
            mdm_timer_arm(&p->sh->loop, &p->dns_retry, d);
    } else {
        memcpy(p->addrs, r->addrs, sizeof(p->addrs));
        memcpy(p->addr_lens, r->lens, sizeof(p->addr_lens));
        p->n_addrs = r->n;
        p->next_addr = 0;
        p->resolved_ms = mdm_now_ms();
        p->dns_failures = 0;
        char a[64];
        mdm_sockaddr_format((const struct sockaddr *)&p->addrs[0], a, sizeof(a));
        mdm_debug("apns", "shard %u: %s resolved to %u address(es), first %s", p->sh->index,
                  G.authority, p->n_addrs, a);
    }
    free(r);
    kick(p);
}

static void *resolve_thread(void *arg)
{
    struct resolve *r = arg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%d", G.port);
    r->gai_err = getaddrinfo(G.authority, port, &hints, &res);
    for (struct addrinfo *ai = r->gai_err ? NULL : res; ai && r->n < ADDRS_MAX; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(r->addrs[0]))
            continue;
        memcpy(&r->addrs[r->n], ai->ai_addr, ai->ai_addrlen);
        r->lens[r->n++] = ai->ai_addrlen;
    }
    if (res)
        freeaddrinfo(res);
    r->msg.fn = on_resolved;
    mdm_shard_post(r->p->sh, &r->msg);
    return NULL;
}

static void start_resolve(struct pusher *p)
{
    struct resolve *r = calloc(1, sizeof(*r));
    if (!r)
        return; /* tried again at the next kick */
    r->p = p;
    pthread_attr_t at;
    pthread_t t;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    p->resolving = true;
    if (pthread_create(&t, &at, resolve_thread, r) != 0) {
        p->resolving = false;
        free(r);
        mdm_timer_arm(&p->sh->loop, &p->dns_retry, 1000);
    }
    pthread_attr_destroy(&at);
}

static void on_dns_retry(mdm_timer_t *t)
{
    kick(MDM_CONTAINER_OF(t, struct pusher, dns_retry));
}

/* True when there is an address to connect to; starts a resolution when due. */
static bool have_address(struct pusher *p)
{
    if (!G.need_dns)
        return true;
    bool stale = !p->n_addrs || mdm_now_ms() - p->resolved_ms >= DNS_TTL_MS;
    if (stale && !p->resolving && !mdm_timer_armed(&p->dns_retry))
        start_resolve(p);
    return p->n_addrs > 0;
}

/* ---- connections ---- */

static void on_response(mdm_h2c_t *h, void *stream_user, const struct mdm_h2c_response *r,
                        void *arg);
static void on_conn_event(mdm_outconn_t *oc, enum mdm_outconn_event ev, int err, void *arg);

static void on_reconnect_timer(mdm_timer_t *t)
{
    struct conn *c = MDM_CONTAINER_OF(t, struct conn, reconnect);
    kick(c->p);
}

/* Arms c's keep-alive timer: the PING's deadline when one is out, else the end of the idle
 * interval. */
static void ping_arm(struct conn *c)
{
    if (!G.ping_interval_ms || !c->oc || c->p->stopping)
        return;
    uint64_t now = mdm_now_ms(), due;
    if (c->ping_sent_ms)
        due = c->ping_sent_ms + G.ping_timeout_ms;
    else
        due = c->last_active_ms + G.ping_interval_ms;
    mdm_timer_arm(&c->p->sh->loop, &c->ping, due > now ? due - now : 0);
}

/* c carries nothing, nothing waits, and another connection is up: c was opened for a burst
 * that is over. The last connection stays (and is kept alive with PINGs). */
static bool extra_idle_conn(const struct conn *c)
{
    const struct pusher *p = c->p;
    mdm_h2c_t *h = mdm_outconn_h2c(c->oc);
    if (p->wait_head || mdm_h2c_open_streams(h) || mdm_h2c_queued(h))
        return false;
    for (unsigned i = 0; i < G.connections; i++) {
        const struct conn *o = &p->conns[i];
        if (o != c && o->oc && mdm_outconn_ready(o->oc))
            return true;
    }
    return false;
}

static void on_ping_timer(mdm_timer_t *t)
{
    struct conn *c = MDM_CONTAINER_OF(t, struct conn, ping);
    struct pusher *p = c->p;
    if (p->stopping || !c->oc || !mdm_outconn_ready(c->oc))
        return;
    uint64_t now = mdm_now_ms();
    if (c->ping_sent_ms) {
        if (now - c->ping_sent_ms >= G.ping_timeout_ms) {
            mdm_warn("apns", "shard %u: no PING ack from APNs in %llu ms: closing the connection",
                     p->sh->index, (unsigned long long)G.ping_timeout_ms);
            c->ping_sent_ms = 0;
            mdm_outconn_close(c->oc, -ETIMEDOUT); /* pending pushes come back and are resent */
            return;
        }
    } else if (now - c->last_active_ms >= G.ping_interval_ms) {
        if (extra_idle_conn(c)) {
            mdm_debug("apns", "shard %u: closing an idle extra connection", p->sh->index);
            mdm_outconn_close(c->oc, 0);
            return;
        }
        if (mdm_h2c_ping(mdm_outconn_h2c(c->oc), now) == 0) {
            c->ping_sent_ms = now;
            mdm_outconn_flush(c->oc);
        } else {
            c->last_active_ms = now; /* out of memory: try again an interval later */
        }
    }
    ping_arm(c);
}

static void on_ping_ack(mdm_h2c_t *h, uint64_t sent_ms, void *arg)
{
    (void)h;
    struct conn *c = arg;
    if (c->ping_sent_ms && sent_ms == c->ping_sent_ms) {
        mdm_debug("apns", "shard %u: PING ack in %llu ms", c->p->sh->index,
                  (unsigned long long)(mdm_now_ms() - sent_ms));
        c->ping_sent_ms = 0;
        c->last_active_ms = mdm_now_ms();
        ping_arm(c);
    }
}

static void conn_open(struct conn *c)
{
    struct pusher *p = c->p;
    static const char *const capture[] = {"apns-id", NULL};
    c->addr_index = p->next_addr % p->n_addrs;
    struct mdm_outconn_opts o = {
        .addr = (const struct sockaddr *)&p->addrs[c->addr_index],
        .addr_len = p->addr_lens[c->addr_index],
        .tls = p->tls,
        .sni = G.authority,
        .connect_timeout_ms = 10000,
        .h2 = {.authority = G.authority,
               .body_max = 512,
               .capture = capture,
               .response_callback = on_response,
               .ping_callback = on_ping_ack,
               .arg = c},
        .event_callback = on_conn_event,
        .arg = c,
    };
    int ret = mdm_outconn_new(&c->oc, &p->sh->loop, &o);
    if (ret != 0) {
        c->oc = NULL;
        c->failures++;
        mdm_timer_arm(&p->sh->loop, &c->reconnect,
                      backoff_ms(p, 100, c->failures, RECONNECT_MAX_MS));
        return;
    }
    c->was_ready = false;
    mdm_outconn_start(c->oc);
}

static void on_conn_event(mdm_outconn_t *oc, enum mdm_outconn_event ev, int err, void *arg)
{
    struct conn *c = arg;
    struct pusher *p = c->p;
    if (ev == MDM_OUTCONN_READY) {
        c->was_ready = true;
        c->failures = 0;
        c->last_active_ms = mdm_now_ms();
        c->ping_sent_ms = 0;
        ping_arm(c);
        schedule_kick(p);
        return;
    }
    mdm_outconn_free(oc);
    c->oc = NULL;
    c->ping_sent_ms = 0;
    mdm_timer_disarm(&p->sh->loop, &c->ping);
    if (p->stopping)
        return;
    if (c->was_ready && err != MDM_ETLS) {
        mdm_debug("apns", "shard %u: connection closed (%s)", p->sh->index, mdm_strerror(err));
        schedule_kick(p);
        return;
    }
    c->failures++;
    char a[64];
    mdm_sockaddr_format((const struct sockaddr *)&p->addrs[c->addr_index], a, sizeof(a));
    if (p->n_addrs > 1 && c->addr_index == p->next_addr % p->n_addrs)
        p->next_addr = c->addr_index + 1; /* the next attempt goes to the next address */
    uint64_t d = backoff_ms(p, 100, c->failures, RECONNECT_MAX_MS);
    if (c->failures == 1 || c->failures % 10 == 0)
        mdm_warn("apns", "shard %u: cannot connect to APNs %s at %s (%s); retrying in %llu ms",
                 p->sh->index, G.authority, a, mdm_strerror(err), (unsigned long long)d);
    mdm_timer_arm(&p->sh->loop, &c->reconnect, d);
}

/* Pushes wait: opens the first connection, or one more (up to [apns] connections) when
 * every connection is up and full (the server's stream limit binds). Not while one is still
 * connecting or waiting to reconnect. */
static void open_another(struct pusher *p)
{
    struct conn *spare = NULL;
    for (unsigned i = 0; i < G.connections; i++) {
        struct conn *c = &p->conns[i];
        if (mdm_timer_armed(&c->reconnect) || (c->oc && !mdm_outconn_ready(c->oc)))
            return;
        if (!c->oc && !spare)
            spare = c;
    }
    if (spare)
        conn_open(spare);
}

static bool any_conn_open(const struct pusher *p)
{
    for (unsigned i = 0; i < G.connections; i++)
        if (p->conns[i].oc)
            return true;
    return false;
}

static void close_conns(struct pusher *p)
{
    for (unsigned i = 0; i < G.connections; i++) {
        mdm_timer_disarm(&p->sh->loop, &p->conns[i].reconnect);
        mdm_timer_disarm(&p->sh->loop, &p->conns[i].ping);
        if (p->conns[i].oc)
            mdm_outconn_close(p->conns[i].oc, 0);
    }
}

/* ---- responses ---- */

static void reason_of(const struct mdm_h2c_response *r, char *out, size_t outlen)
{
    out[0] = '\0';
    if (!r->body_len)
        return;
    json_t *j = json_loadb((const char *)r->body, r->body_len, 0, NULL);
    const char *s = json_string_value(json_object_get(j, "reason"));
    if (s)
        snprintf(out, outlen, "%s", s);
    json_decref(j);
}

static void retry_later(struct pusher *p, struct item *it, int status, const char *reason)
{
    if (it->tries >= MDM_APNS_TRIES) {
        mdm_warn("apns", "push to %s given up after %u attempts (%d %s)", it->udid, it->tries,
                 status, reason);
        report(p, it, status, reason[0] ? reason : "gave up");
        return;
    }
    delay_insert(p, it, backoff_ms(p, MDM_APNS_BACKOFF_MS, it->tries, RECONNECT_MAX_MS));
}

static void on_response(mdm_h2c_t *h, void *stream_user, const struct mdm_h2c_response *r,
                        void *arg)
{
    (void)h;
    struct conn *c = arg;
    struct pusher *p = c->p;
    struct item *it = stream_user;
    c->last_active_ms = mdm_now_ms();
    if (p->wait_head)
        schedule_kick(p); /* a request slot just came free: submit what waits */
    if (p->stopping) {
        item_free(p, it);
        return;
    }
    if (r->outcome == MDM_H2C_NOT_PROCESSED) {
        if (++it->not_processed > NOT_PROCESSED_MAX) {
            report(p, it, 0, "not processed (connection lost repeatedly)");
            return;
        }
        if (it->not_processed == 1) {
            wait_push_front(p, it); /* goes out on the next connection */
            schedule_kick(p);
        } else {
            /* refused again (e.g. GOAWAY after GOAWAY): do not spin on reconnects */
            delay_insert(p, it, backoff_ms(p, RESEND_BASE_MS, it->not_processed - 1,
                                           RESEND_MAX_MS));
        }
        return;
    }
    it->tries++;
    if (r->outcome == MDM_H2C_FAILED) {
        retry_later(p, it, 0, "stream lost");
        return;
    }
    char reason[64];
    reason_of(r, reason, sizeof(reason));
    int st = r->status;
    if (st == 200) {
        mdm_debug("apns", "pushed %s (apns-id %s)", it->udid,
                  r->captured[0] ? r->captured[0] : "-");
        report(p, it, 200, "");
    } else if (st == 429 || st >= 500) {
        retry_later(p, it, st, reason);
    } else if (st == 410 || (st == 400 && strcmp(reason, "BadDeviceToken") == 0)) {
        mdm_info("apns", "token of %s refused (%d %s): no more pushes until its next "
                         "TokenUpdate",
                 it->udid, st, reason);
        report(p, it, st, reason);
    } else if (st == 403) {
        mdm_error("apns", "APNs refused the push certificate %s: 403 %s (renew or re-upload "
                          "it)",
                  p->topic, reason);
        report(p, it, st, reason);
    } else {
        mdm_warn("apns", "push to %s refused: %d %s", it->udid, st, reason);
        report(p, it, st, reason);
    }
}

/* ---- the driver ---- */

static void fail_waiting(struct pusher *p, const char *why)
{
    struct item *it;
    while ((it = wait_pop(p)))
        report(p, it, 0, why);
}

static bool submit_one(struct pusher *p, struct item *it, bool *flush)
{
    struct mdm_h2c_header hdr[] = {
        {"apns-topic", p->topic},
        {"apns-push-type", "mdm"},
        {"apns-priority", "10"},
        {"apns-expiration", p->expiration},
    };
    for (unsigned k = 0; k < G.connections; k++) {
        unsigned i = (p->rr + k) % G.connections;
        struct conn *c = &p->conns[i];
        if (!c->oc || !mdm_outconn_ready(c->oc) || mdm_h2c_room(mdm_outconn_h2c(c->oc)) == 0)
            continue;
        int ret = mdm_h2c_submit(mdm_outconn_h2c(c->oc), "POST", it->path, hdr,
                                 MDM_ARRAY_LEN(hdr), it->body, it->body_len, it);
        if (ret == 0) {
            flush[i] = true;
            p->rr = i + 1;
            return true;
        }
    }
    return false;
}

static void kick(struct pusher *p)
{
    if (p->stopping)
        return;
    switch (p->cert) {
    case CERT_OFF:
        fail_waiting(p, "pusher off ([apns] url/address)");
        return;
    case CERT_ABSENT:
        fail_waiting(p, "no push certificate");
        return;
    case CERT_LOADING:
        return;
    case CERT_UNKNOWN:
        if (p->wait_head && !p->loading && !any_conn_open(p))
            start_load(p);
        return;
    case CERT_READY:
        break;
    }
    if (!p->wait_head)
        return;
    snprintf(p->expiration, sizeof(p->expiration), "%llu",
             (unsigned long long)(mdm_wall_ms() / 1000 + MDM_APNS_EXPIRATION_S));
    if (!have_address(p))
        return;
    bool flush[CONNS_MAX] = {false};
    while (p->wait_head) {
        if (!submit_one(p, p->wait_head, flush))
            break; /* every connection is full, connecting or down: the rest waits */
        (void)wait_pop(p);
    }
    if (p->wait_head)
        open_another(p);
    uint64_t now = mdm_now_ms();
    for (unsigned i = 0; i < G.connections; i++) {
        if (flush[i] && p->conns[i].oc) {
            p->conns[i].last_active_ms = now;
            mdm_outconn_flush(p->conns[i].oc);
        }
    }
}

static void on_kick_timer(mdm_timer_t *t)
{
    kick(MDM_CONTAINER_OF(t, struct pusher, kick_timer));
}

/* ---- API ---- */

int mdm_apns_push(mdm_shard_t *sh, const char *udid, const uint8_t *token, size_t token_len,
                  const char *magic)
{
    struct pusher *p = pusher_of(sh);
    if (!p || p->stopping || p->n_items >= MDM_APNS_PENDING_MAX || token_len == 0 ||
        token_len > TOKEN_MAX)
        return MDM_EFULL;
    struct item *it = calloc(1, sizeof(*it));
    if (!it)
        return MDM_EFULL;
    p->n_items++;
    it->kind = ITEM_PUSH;
    snprintf(it->udid, sizeof(it->udid), "%s", udid);
    memcpy(it->token, token, token_len);
    it->token_len = token_len;
    memcpy(it->path, "/3/device/", 10);
    mdm_hex_encode(token, token_len, it->path + 10);
    /* PushMagic is a UUID in practice; escape what JSON needs anyway. */
    size_t n = 0;
    n += (size_t)snprintf(it->body, sizeof(it->body), "{\"mdm\":\"");
    for (const char *s = magic; *s && n < sizeof(it->body) - 10; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            it->body[n++] = '\\';
            it->body[n++] = (char)ch;
        } else if (ch >= 0x20) {
            it->body[n++] = (char)ch;
        }
    }
    memcpy(it->body + n, "\"}", 3);
    it->body_len = n + 2;
    wait_push_back(p, it);
    schedule_kick(p);
    return 0;
}

int mdm_apns_wake_later(mdm_shard_t *sh, const char *udid, uint64_t delay_ms)
{
    struct pusher *p = pusher_of(sh);
    if (!p || p->stopping || p->n_items >= MDM_APNS_PENDING_MAX)
        return MDM_EFULL;
    struct item *it = calloc(1, sizeof(*it));
    if (!it)
        return MDM_EFULL;
    p->n_items++;
    it->kind = ITEM_WAKE;
    snprintf(it->udid, sizeof(it->udid), "%s", udid);
    delay_insert(p, it, delay_ms);
    return 0;
}

static void on_cert_changed(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    free(m);
    struct pusher *p = pusher_of(sh);
    if (!p || p->stopping || p->cert == CERT_OFF)
        return;
    p->gen++;
    p->cert = CERT_UNKNOWN;
    close_conns(p); /* pending pushes come back NOT_PROCESSED and wait for the new one */
    schedule_kick(p);
}

void mdm_apns_cert_changed(void)
{
    if (!G.group)
        return;
    for (unsigned i = 0; i < G.group->n; i++) {
        mdm_shard_msg_t *m = calloc(1, sizeof(*m));
        if (!m)
            continue;
        m->fn = on_cert_changed;
        mdm_shard_post(&G.group->shards[i], m);
    }
}

bool mdm_apns_enabled(void) { return G.enabled; }
uint64_t mdm_apns_coalesce_ms(void) { return G.coalesce_ms; }

/* ---- shard hooks ---- */

static void hook_start(mdm_shard_t *sh, void *arg)
{
    (void)arg;
    struct pusher *p = calloc(1, sizeof(*p));
    if (!p) {
        mdm_error("apns", "shard %u: out of memory: no pusher", sh->index);
        return;
    }
    p->sh = sh;
    p->cert = G.enabled ? CERT_UNKNOWN : CERT_OFF;
    p->rng = (mdm_now_ms() << 8) ^ (0x9E3779B97F4A7C15ull * (sh->index + 1));
    mdm_timer_init(&p->delay_timer, on_delay_timer);
    mdm_timer_init(&p->kick_timer, on_kick_timer);
    mdm_timer_init(&p->dns_retry, on_dns_retry);
    if (!G.need_dns) {
        memcpy(&p->addrs[0], &G.addr, sizeof(G.addr));
        p->addr_lens[0] = G.addr_len;
        p->n_addrs = 1;
    }
    for (unsigned i = 0; i < CONNS_MAX; i++) {
        p->conns[i].p = p;
        mdm_timer_init(&p->conns[i].reconnect, on_reconnect_timer);
        mdm_timer_init(&p->conns[i].ping, on_ping_timer);
    }
    sh->slots[MDM_SLOT_APNS] = p;
}

static void hook_stop(mdm_shard_t *sh, void *arg)
{
    (void)arg;
    struct pusher *p = pusher_of(sh);
    if (!p)
        return;
    p->stopping = true;
    mdm_timer_disarm(&sh->loop, &p->delay_timer);
    mdm_timer_disarm(&sh->loop, &p->kick_timer);
    mdm_timer_disarm(&sh->loop, &p->dns_retry);
    close_conns(p);
    struct item *it;
    while ((it = wait_pop(p)))
        item_free(p, it);
    while ((it = p->delayed)) {
        p->delayed = it->next;
        item_free(p, it);
    }
}

static bool hook_drained(mdm_shard_t *sh, void *arg)
{
    (void)arg;
    struct pusher *p = pusher_of(sh);
    return !p || (!any_conn_open(p) && !p->loading && !p->resolving);
}

static void hook_finish(mdm_shard_t *sh, void *arg)
{
    (void)arg;
    struct pusher *p = pusher_of(sh);
    if (!p)
        return;
    if (any_conn_open(p) || p->loading || p->resolving) {
        /* the drain deadline passed: leak rather than free what is still referenced */
        mdm_warn("apns", "shard %u: pusher not drained at exit", sh->index);
        return;
    }
    mdm_tls_ctx_free(p->tls);
    sh->slots[MDM_SLOT_APNS] = NULL;
    free(p);
}

/* ---- setup ---- */

/* "host:port" or "[v6]:port" into host (brackets removed) and port; port_def when absent. */
static int split_hostport(const char *s, char *host, size_t hostlen, int port_def, int *port)
{
    const char *colon;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || (size_t)(end - s - 1) >= hostlen)
            return -1;
        snprintf(host, hostlen, "%.*s", (int)(end - s - 1), s + 1);
        colon = end[1] == ':' ? end + 1 : NULL;
        if (!colon && end[1])
            return -1;
    } else {
        colon = strrchr(s, ':');
        size_t len = colon ? (size_t)(colon - s) : strlen(s);
        if (len == 0 || len >= hostlen)
            return -1;
        snprintf(host, hostlen, "%.*s", (int)len, s);
    }
    *port = port_def;
    if (colon) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (*end || v <= 0 || v > 65535)
            return -1;
        *port = (int)v;
    }
    return 0;
}

static bool ip_literal(const char *host, int port)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)&G.addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&G.addr;
    memset(&G.addr, 0, sizeof(G.addr));
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        G.addr_len = sizeof(*a4);
        return true;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        G.addr_len = sizeof(*a6);
        return true;
    }
    return false;
}

static bool configure(const mdm_config_t *cfg)
{
    const char *url = cfg->apns_url;
    if (!url[0]) {
        mdm_info("apns", "apns.url is empty: pushes are off");
        return false;
    }
    if (strncmp(url, "https://", 8) != 0) {
        mdm_error("apns", "apns.url '%s' must start with https://; pushes are off", url);
        return false;
    }
    char hostport[256];
    snprintf(hostport, sizeof(hostport), "%.*s", (int)strcspn(url + 8, "/"), url + 8);
    int port = 443;
    if (split_hostport(hostport, G.authority, sizeof(G.authority), 443, &port) != 0) {
        mdm_error("apns", "apns.url '%s': bad host or port; pushes are off", url);
        return false;
    }
    if (cfg->apns_address[0]) {
        char host[128];
        int aport = 0;
        if (split_hostport(cfg->apns_address, host, sizeof(host), 0, &aport) != 0 ||
            aport == 0 || !ip_literal(host, aport)) {
            mdm_error("apns", "apns.address '%s' must be IP:port or [IPv6]:port; pushes are off",
                      cfg->apns_address);
            return false;
        }
    } else if (!ip_literal(G.authority, port)) {
        G.need_dns = true;
    }
    G.port = port;
    if (cfg->apns_ca[0])
        mdm_config_path(cfg, cfg->apns_ca, G.ca, sizeof(G.ca));
    else
        mdm_warn("apns", "apns.ca is empty: the APNs server certificate is not verified "
                         "(tests only)");
    return true;
}

int mdm_apns_setup(mdm_shard_group_t *g, const mdm_config_t *cfg, mdm_store_t *store,
                   const uint8_t seal_key[32])
{
    memset(&G, 0, sizeof(G));
    G.group = g;
    G.store = store;
    memcpy(G.seal_key, seal_key, sizeof(G.seal_key));
    G.coalesce_ms = (uint64_t)cfg->apns_coalesce_ms;
    G.connections = (unsigned)cfg->apns_connections;
    G.ping_interval_ms = (uint64_t)cfg->apns_ping_interval_ms;
    G.ping_timeout_ms = G.ping_interval_ms;
    if (G.ping_timeout_ms < MDM_APNS_PING_TIMEOUT_MIN_MS)
        G.ping_timeout_ms = MDM_APNS_PING_TIMEOUT_MIN_MS;
    if (G.ping_timeout_ms > MDM_APNS_PING_TIMEOUT_MAX_MS)
        G.ping_timeout_ms = MDM_APNS_PING_TIMEOUT_MAX_MS;
    if (G.connections < 1)
        G.connections = 1;
    if (G.connections > CONNS_MAX)
        G.connections = CONNS_MAX;
    G.enabled = configure(cfg);
    if (G.enabled)
        mdm_info("apns", "pusher: %s (%s), up to %u connection(s) per shard, coalescing %llu ms",
                 cfg->apns_url,
                 cfg->apns_address[0] ? cfg->apns_address
                 : G.need_dns         ? "resolved by name"
                                      : "IP literal",
                 G.connections, (unsigned long long)G.coalesce_ms);
    mdm_shard_hooks_t h = {
        .start = hook_start,
        .stop_requested = hook_stop,
        .drained = hook_drained,
        .finish = hook_finish,
    };
    return mdm_shards_add_hooks(g, &h);
}
