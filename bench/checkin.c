/*
 * The checkin scenario and its fleet. See checkin.h.
 */
#include "bench/checkin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cms.h"
#include "core/crypto.h"
#include "core/file.h"
#include "core/x509.h"

#define PATH_LEN 600
#define GIVE_UP_AFTER 3 /* refusals before the enroll phase gives a Mac up */
#define ADMIN_TIMEOUT_MS 600000
#define BULK_MAX 2000 /* UDIDs per bulk call: its answer (~40 bytes a UDID) stays under the
                          * TLS client's receive buffer */
/* RSA-2048 keys generated for an RSA fleet; Mac i uses key i % RSA_KEY_POOL under its own
 * certificate. wolfCrypt's generic math takes about 0.6 s per RSA key, too slow for 10,000;
 * the server's cost does not depend on key reuse (no per-key cache for RSA verification,
 * and the trust cache is per certificate). */
#define RSA_KEY_POOL 128

struct bench_mac {
    sim_mac_t sim;
    unsigned index;
    mdm_tls_ctx_t *ctx; /* client context with this Mac's identity (mTLS), made on first use */
    sim_cmd_t cmd;      /* command in hand, uuid "" when none */
    uint8_t step;       /* enroll: 0 Authenticate, 1 TokenUpdate, 2 finished */
    uint8_t failures;
    mdm_buf_t idle_req, tu_req; /* cached complete requests (their bodies never change) */
};

/* ---- fleet ---- */

static void mac_paths(const bench_fleet_t *f, unsigned i, char *key, char *crt)
{
    snprintf(key, PATH_LEN, "%s/bench-mac-%05u.key", f->env.work_dir, i);
    snprintf(crt, PATH_LEN, "%s/bench-mac-%05u.crt", f->env.work_dir, i);
}

static void mac_fill(const bench_fleet_t *f, struct bench_mac *m, unsigned i)
{
    static const struct {
        const char *model, *name, *os, *build;
        bool silicon;
    } kinds[] = {
        {"Mac14,2", "MacBook Air", "14.4.1", "23E224", true},
        {"MacBookPro16,1", "MacBook Pro", "13.6.6", "22G630", false},
        {"Mac14,9", "MacBook Pro", "14.5", "23F79", true},
    };
    static const char alnum[] = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";
    sim_mac_t *s = &m->sim;
    memset(m, 0, sizeof(*m));
    m->index = i;
    s->env = &f->env;
    s->fd = -1;
    unsigned k = i % (sizeof(kinds) / sizeof(kinds[0]));
    snprintf(s->udid, sizeof(s->udid), "0000FE00-BE%014X", i);
    snprintf(s->name, sizeof(s->name), "bench-mac-%05u", i);
    snprintf(s->model, sizeof(s->model), "%s", kinds[k].model);
    snprintf(s->model_name, sizeof(s->model_name), "%s", kinds[k].name);
    snprintf(s->os_version, sizeof(s->os_version), "%s", kinds[k].os);
    snprintf(s->build_version, sizeof(s->build_version), "%s", kinds[k].build);
    s->apple_silicon = kinds[k].silicon;
    unsigned v = i;
    s->serial[0] = 'B';
    s->serial[1] = 'N';
    for (int c = 9; c >= 2; c--) {
        s->serial[c] = alnum[v % 34];
        v /= 34;
    }
    s->serial[10] = '\0';
    for (size_t b = 0; b < sizeof(s->push_token); b++)
        s->push_token[b] = (uint8_t)(i * 31u + b * 7u);
    snprintf(s->push_magic, sizeof(s->push_magic), "B3C4E6A0-0000-4000-8000-%012X", i);
    mdm_buf_init(&m->idle_req, 0);
    mdm_buf_init(&m->tu_req, 0);
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int ret = mdm_file_read(from, 1 << 20, &data, &len);
    if (ret != 0)
        return ret;
    int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        ret = -errno;
    } else {
        if (fchmod(fd, mode) != 0 || write(fd, data, len) != (ssize_t)len)
            ret = -EIO;
        close(fd);
    }
    free(data);
    return ret;
}

/* Issues identities [from, to) into the cache, staged on /dev/shm when it exists. */
static int issue_range(bench_fleet_t *f, unsigned from, unsigned to)
{
    char stage[] = "/dev/shm/mdm-bench.XXXXXX";
    bool staged = mkdtemp(stage) != NULL;
    const char *dir = staged ? stage : f->env.work_dir;
    int ret = 0;
    for (unsigned i = from; i < to && ret == 0; i++) {
        char key[PATH_LEN], crt[PATH_LEN], name[32];
        snprintf(name, sizeof(name), "bench-mac-%05u", i);
        snprintf(key, sizeof(key), "%s/%s.key", dir, name);
        snprintf(crt, sizeof(crt), "%s/%s.crt", dir, name);
        mdm_x509_spec_t spec = {
            .common_name = name,
            .organization = "mdmd simulated Macs",
            .validity_days = 365,
            .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE,
            .ext_key_usage = MDM_X509_EKU_CLIENT_AUTH,
        };
        if (f->rsa) {
            char pool_key[PATH_LEN];
            snprintf(pool_key, sizeof(pool_key), "%s/rsa-pool-%03u.key", f->env.work_dir,
                     i % RSA_KEY_POOL);
            ret = access(pool_key, R_OK) == 0
                      ? 0
                      : mdm_x509_key_generate(pool_key, MDM_X509_KEY_RSA_2048);
            if (ret == 0)
                ret = copy_file(pool_key, key, 0600);
        } else {
            ret = mdm_x509_key_generate(key, MDM_X509_KEY_EC_P256);
        }
        if (ret == 0)
            ret = mdm_x509_issue(f->env.ca_key, f->env.ca_cert, key, crt, &spec);
        if (ret == 0 && staged) {
            char k2[PATH_LEN], c2[PATH_LEN];
            mac_paths(f, i, k2, c2);
            ret = copy_file(key, k2, 0600);
            if (ret == 0)
                ret = copy_file(crt, c2, 0644);
            unlink(key);
            unlink(crt);
        }
        if (ret == 0 && (i + 1 - from) % 2000 == 0)
            fprintf(stderr, "mdm-bench: issued %u of %u identities\n", i + 1 - from, to - from);
    }
    if (staged)
        rmdir(stage);
    if (ret != 0)
        fprintf(stderr, "mdm-bench: cannot issue a Mac identity: %s\n", mdm_strerror(ret));
    return ret;
}

int bench_fleet_load(bench_fleet_t *f, const char *instance_dir, const char *cache_dir,
                     unsigned n, bool rsa)
{
    char cache[PATH_LEN];
    if (snprintf(cache, sizeof(cache), "%s/bench-macs%s", instance_dir, rsa ? "-rsa" : "") >=
        (int)sizeof(cache))
        return -ENAMETOOLONG;
    if (!cache_dir)
        cache_dir = cache;
    memset(f, 0, sizeof(*f));
    f->rsa = rsa;
    int ret = sim_env_init(&f->env, instance_dir, cache_dir, 0);
    if (ret != 0) {
        fprintf(stderr, "mdm-bench: cannot create %s: %s\n", cache_dir, mdm_strerror(ret));
        return ret;
    }
    /* The stamp: which CA the cached identities come from, and how many there are. */
    uint8_t *ca = NULL;
    size_t ca_len = 0;
    char ca_hex[MDM_SHA256_HEX_LEN + 1];
    if ((ret = mdm_file_read(f->env.ca_cert, 1 << 20, &ca, &ca_len)) != 0 ||
        (ret = mdm_sha256_hex(ca, ca_len, ca_hex)) != 0) {
        free(ca);
        fprintf(stderr, "mdm-bench: cannot read %s: %s\n", f->env.ca_cert, mdm_strerror(ret));
        return ret;
    }
    free(ca);
    char stamp_path[PATH_LEN];
    if (snprintf(stamp_path, sizeof(stamp_path), "%s/stamp", cache_dir) >= (int)sizeof(stamp_path))
        return -ENAMETOOLONG;
    unsigned have = 0;
    uint8_t *stamp = NULL;
    size_t stamp_len = 0;
    if (mdm_file_read(stamp_path, 4096, &stamp, &stamp_len) == 0) {
        char hex[80] = "";
        unsigned count = 0;
        if (sscanf((const char *)stamp, "ca-sha256 %64s count %u", hex, &count) == 2 &&
            strcmp(hex, ca_hex) == 0)
            have = count;
        free(stamp);
    }
    if (have < n) {
        unlink(stamp_path); /* until the new identities are complete */
        fprintf(stderr, "mdm-bench: issuing %u Mac identities into %s\n", n - have, cache_dir);
        if ((ret = issue_range(f, have, n)) != 0)
            return ret;
        int dfd = open(cache_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)syncfs(dfd);
            close(dfd);
        }
        char text[160];
        int len = snprintf(text, sizeof(text), "ca-sha256 %s count %u\n", ca_hex, n);
        if ((ret = mdm_file_write_atomic(stamp_path, text, (size_t)len, 0644)) != 0) {
            fprintf(stderr, "mdm-bench: cannot write %s: %s\n", stamp_path, mdm_strerror(ret));
            return ret;
        }
        f->generated = n - have;
    }
    f->macs = calloc(n, sizeof(*f->macs));
    if (!f->macs)
        return -ENOMEM;
    f->n = n;
    for (unsigned i = 0; i < n; i++)
        mac_fill(f, &f->macs[i], i);
    return 0;
}

void bench_fleet_free(bench_fleet_t *f)
{
    for (unsigned i = 0; f->macs && i < f->n; i++) {
        mdm_tls_ctx_free(f->macs[i].ctx);
        mdm_buf_dispose(&f->macs[i].idle_req);
        mdm_buf_dispose(&f->macs[i].tu_req);
    }
    free(f->macs);
    f->macs = NULL;
}

/* ---- requests ---- */

struct ck {
    bench_fleet_t *f;
    enum ck_mode mode;
    unsigned connections, visit;
    struct ck_counts *counts;
    mdm_buf_t body, der, sig; /* scratch */
};

enum last_kind { L_NONE, L_AUTH, L_TU, L_IDLE, L_ACK };

struct ck_client {
    unsigned slot, share; /* Macs slot, slot+C, ...: share of them */
    unsigned next;        /* index into the share of the next Mac to visit */
    unsigned finished;    /* enroll: Macs of the share enrolled or given up */
    struct bench_mac *mac;
    unsigned visit_reqs;
    bool advance; /* the visit is over: the next connection (mTLS) or request plays the next Mac */
    enum last_kind last;
};

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Appends "PUT prefix/mdm/endpoint" with body and, with Mdm-Signature, its signature. */
static int put_request(struct ck *k, struct bench_mac *m, const char *endpoint,
                       const mdm_buf_t *body, mdm_buf_t *out)
{
    const bench_fleet_t *f = k->f;
    int ret = mdm_buf_printf(out,
                             "PUT %s/mdm/%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: MDM/1.0\r\n"
                             "Content-Type: application/x-apple-aspen-mdm\r\n"
                             "Content-Length: %zu\r\n",
                             f->prefix, endpoint, f->host, body->len);
    if (ret == 0 && f->signature) {
        char key[PATH_LEN], crt[PATH_LEN];
        mac_paths(f, m->index, key, crt);
        mdm_buf_reset(&k->der);
        mdm_buf_reset(&k->sig);
        ret = mdm_cms_sign_detached(key, crt, mdm_buf_head(body), body->len, &k->der);
        if (ret == 0)
            ret = mdm_base64_encode(mdm_buf_head(&k->der), k->der.len, &k->sig);
        if (ret != 0)
            k->counts->sign_errors++;
        else
            ret = mdm_buf_printf(out, "Mdm-Signature: %.*s\r\n", (int)k->sig.len,
                                 (const char *)mdm_buf_head(&k->sig));
    }
    if (ret == 0)
        ret = mdm_buf_append(out, "\r\n", 2);
    if (ret == 0 && body->len)
        ret = mdm_buf_append(out, mdm_buf_head(body), body->len);
    return ret;
}

/* A request whose bytes never change for this Mac, made once. */
static int cached_request(struct ck *k, struct bench_mac *m, mdm_buf_t *cache, bool idle,
                          mdm_buf_t *out)
{
    if (cache->len == 0) {
        mdm_buf_reset(&k->body);
        int ret = idle ? sim_build_idle(&m->sim, &k->body)
                       : sim_build_token_update(&m->sim, NULL, 0, &k->body);
        if (ret == 0)
            ret = put_request(k, m, idle ? "connect" : "checkin", &k->body, cache);
        if (ret != 0) {
            mdm_buf_reset(cache);
            return ret;
        }
    }
    return mdm_buf_append(out, mdm_buf_head(cache), cache->len);
}

/* Moves c to the next Mac of its share (or marks the share done in the enroll phase). */
static void next_mac(struct ck *k, struct ck_client *c)
{
    c->advance = false;
    c->visit_reqs = 0;
    if (c->share == 0)
        return;
    if (k->mode == CK_ENROLL) {
        if (c->next >= c->share) {
            c->mac = NULL;
            return;
        }
    } else if (c->next >= c->share) {
        c->next = 0;
    }
    c->mac = &k->f->macs[c->slot + c->next * k->connections];
    c->next++;
    k->counts->visits++;
}

static void ensure_mac(struct ck *k, struct ck_client *c)
{
    if (!c->mac || c->advance)
        next_mac(k, c);
}

static int ck_client_init(void *arg, unsigned slot, void **state)
{
    struct ck *k = arg;
    struct ck_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->slot = slot;
    c->share = slot < k->f->n ? (k->f->n - slot + k->connections - 1) / k->connections : 0;
    *state = c;
    return 0;
}

static void ck_client_free(void *arg, void *state)
{
    (void)arg;
    free(state);
}

/* The client context with m's identity, made on first use (NULL when it cannot be: the
 * connection then goes without identity and is refused, which the report counts). */
static mdm_tls_ctx_t *mac_ctx(const bench_fleet_t *f, struct bench_mac *m)
{
    if (!m->ctx) {
        char key[PATH_LEN], crt[PATH_LEN];
        mac_paths(f, m->index, key, crt);
        struct mdm_tls_client_opts o = {.cert_path = crt, .key_path = key};
        if (mdm_tls_ctx_new_client(&m->ctx, &o) != 0)
            m->ctx = NULL;
    }
    return m->ctx;
}

int bench_fleet_prepare_tls(bench_fleet_t *f, const volatile sig_atomic_t *stop)
{
    for (unsigned i = 0; i < f->n; i++)
        if ((stop && *stop) || !mac_ctx(f, &f->macs[i]))
            return -1;
    return 0;
}

static mdm_tls_ctx_t *ck_conn_tls(void *arg, void *state)
{
    struct ck *k = arg;
    struct ck_client *c = state;
    if (k->f->signature)
        return NULL; /* the run's context: no client certificate */
    ensure_mac(k, c);
    return c->mac ? mac_ctx(k->f, c->mac) : NULL;
}

static bool ck_end_connection(void *arg, void *state)
{
    struct ck *k = arg;
    struct ck_client *c = state;
    return !k->f->signature && c->advance;
}

static bool ck_client_done(void *arg, void *state)
{
    struct ck *k = arg;
    struct ck_client *c = state;
    return k->mode == CK_ENROLL && c->finished >= c->share;
}

static int ck_build(void *arg, void *state, bool close, mdm_buf_t *out)
{
    (void)close;
    struct ck *k = arg;
    struct ck_client *c = state;
    if (k->f->signature || !c->mac)
        ensure_mac(k, c);
    struct bench_mac *m = c->mac;
    if (!m)
        return -EINVAL;
    int ret;
    if (k->mode == CK_ENROLL) {
        mdm_buf_reset(&k->body);
        if (m->step == 0) {
            c->last = L_AUTH;
            ret = sim_build_authenticate(&m->sim, &k->body);
            k->counts->authenticate++;
        } else {
            c->last = L_TU;
            ret = sim_build_token_update(&m->sim, NULL, 0, &k->body);
            k->counts->token_update++;
        }
        return ret ? ret : put_request(k, m, "checkin", &k->body, out);
    }
    if (m->cmd.uuid[0]) {
        c->last = L_ACK;
        k->counts->ack++;
        mdm_buf_reset(&k->body);
        ret = sim_build_response(&m->sim, &m->cmd, SIM_ACKNOWLEDGED, &k->body);
        return ret ? ret : put_request(k, m, "connect", &k->body, out);
    }
    if (k->mode == CK_TOKENUPDATE) {
        c->last = L_TU;
        k->counts->token_update++;
        return cached_request(k, m, &m->tu_req, false, out);
    }
    c->last = L_IDLE;
    k->counts->idle++;
    return cached_request(k, m, &m->idle_req, true, out);
}

static enum bench_outcome ck_check(void *arg, void *state, const struct bench_response *r)
{
    struct ck *k = arg;
    struct ck_client *c = state;
    struct bench_mac *m = c->mac;
    enum bench_outcome out = BENCH_OK;
    if (!m)
        return BENCH_ERR_HTTP;
    c->visit_reqs++;
    if (k->mode == CK_ENROLL) {
        if (r->status == 200) {
            if (++m->step == 2)
                k->counts->enrolled++;
        } else {
            out = BENCH_ERR_STATUS;
            if (++m->failures >= GIVE_UP_AFTER) {
                m->step = 2;
                k->counts->given_up++;
            }
        }
        if (m->step == 2) {
            c->finished++;
            c->advance = true;
        }
        return out;
    }
    if (r->status != 200) {
        if (c->last == L_ACK)
            m->cmd.uuid[0] = '\0'; /* do not loop on a refused answer */
        out = BENCH_ERR_STATUS;
    } else if (c->last == L_IDLE || c->last == L_ACK) {
        if (sim_parse_command(r->body, r->body_len, &m->cmd) != 0) {
            m->cmd.uuid[0] = '\0';
            out = BENCH_ERR_HTTP;
        } else if (m->cmd.uuid[0]) {
            k->counts->commands++;
        } else if (c->last == L_IDLE) {
            k->counts->empty_idle++;
            if (k->mode == CK_ANSWER)
                c->advance = true; /* nothing to do: the Mac leaves */
        }
    }
    if (c->visit_reqs >= k->visit)
        c->advance = true;
    return out;
}

static void ck_free(void *arg)
{
    struct ck *k = arg;
    mdm_buf_dispose(&k->body);
    mdm_buf_dispose(&k->der);
    mdm_buf_dispose(&k->sig);
    free(k);
}

/*
 * Mdm-Signature idle runs: signs every Mac's (unchanging) Idle request before the measured
 * phase, so that the client's own RSA/ECDSA signing (milliseconds per Mac with wolfCrypt's
 * generic math) does not throttle the load it offers. The server still verifies every request.
 */
static int presign_idle(struct ck *k)
{
    long long t0 = mono_ms();
    mdm_buf_t scratch;
    mdm_buf_init(&scratch, 0);
    int ret = 0;
    for (unsigned i = 0; i < k->f->n && ret == 0; i++) {
        mdm_buf_reset(&scratch);
        ret = cached_request(k, &k->f->macs[i], &k->f->macs[i].idle_req, true, &scratch);
    }
    mdm_buf_dispose(&scratch);
    if (ret != 0)
        fprintf(stderr, "mdm-bench: cannot sign the Idle requests: %s\n", mdm_strerror(ret));
    else
        fprintf(stderr, "mdm-bench: signed %u Idle requests in %.1f s (before the run)\n",
                k->f->n, (double)(mono_ms() - t0) / 1000.0);
    return ret;
}

int bench_scenario_checkin(struct bench_scenario *s, bench_fleet_t *f, enum ck_mode mode,
                           unsigned connections, unsigned visit, struct ck_counts *counts)
{
    memset(s, 0, sizeof(*s));
    struct ck *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    k->f = f;
    k->mode = mode;
    k->connections = connections;
    k->visit = visit ? visit : 1;
    k->counts = counts;
    mdm_buf_init(&k->body, 0);
    mdm_buf_init(&k->der, 0);
    mdm_buf_init(&k->sig, 0);
    s->name = "checkin";
    s->arg = k;
    s->client_init = ck_client_init;
    s->client_free = ck_client_free;
    s->build_request = ck_build;
    s->check_response = ck_check;
    s->free = ck_free;
    s->conn_tls = ck_conn_tls;
    s->end_connection = ck_end_connection;
    s->client_done = ck_client_done;
    if (mode == CK_IDLE && f->signature)
        return presign_idle(k);
    return 0;
}

/* ---- admin API: bulk command queueing (blocking, one connection per call) ---- */

/* One HTTPS request on a new connection; fills *status and resp (the body). 0 or -1. */
static int admin_call(const char *host, const char *port, const mdm_buf_t *req, int *status,
                      mdm_buf_t *resp)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = -1;
    mdm_tls_ctx_t *ctx = NULL;
    mdm_tls_conn_t *tls = NULL;
    struct mdm_tls_client_opts o = {0};
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
        mdm_tls_ctx_new_client(&ctx, &o) != 0 || mdm_tls_conn_new(&tls, ctx, host) != 0)
        goto out;
    bool sent = false;
    long long deadline = mono_ms() + ADMIN_TIMEOUT_MS;
    uint8_t buf[16384];
    while (mono_ms() < deadline) {
        int adv = mdm_tls_advance(tls);
        if (adv == MDM_ETLS || adv == -ENOMEM)
            goto out;
        if (!sent && mdm_tls_handshake_done(tls)) {
            if (mdm_tls_write(tls, mdm_buf_head(req), req->len) != 0)
                goto out;
            sent = true;
        }
        mdm_buf_t *co = mdm_tls_cipher_out(tls);
        while (co->len) {
            ssize_t w = send(fd, mdm_buf_head(co), co->len, MSG_NOSIGNAL);
            if (w <= 0)
                goto out;
            mdm_buf_consume(co, (size_t)w);
        }
        mdm_buf_t *pi = mdm_tls_plain_in(tls);
        size_t off = 0, blen = 0;
        bool cls;
        long n = sim_parse_http_response(mdm_buf_head(pi), pi->len, status, &off, &blen, &cls);
        if (n < 0)
            goto out;
        if (n > 0) {
            rc = mdm_buf_append(resp, mdm_buf_head(pi) + off, blen) == 0 ? 0 : -1;
            goto out;
        }
        if (adv == MDM_ECLOSED)
            goto out;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 1000) < 0)
            goto out;
        if (p.revents) {
            ssize_t r = recv(fd, buf, sizeof(buf), 0);
            if (r < 0)
                goto out;
            if (r == 0)
                mdm_tls_feed_eof(tls);
            else if (mdm_tls_feed(tls, buf, (size_t)r) != 0)
                goto out;
        }
    }
out:
    mdm_tls_conn_free(tls);
    mdm_tls_ctx_free(ctx);
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return rc;
}

long bench_queue_commands(const bench_fleet_t *f, const char *host, const char *port,
                          const char *api_key, unsigned per_mac)
{
    static const char tail[] =
        "],\"request_type\":\"DeviceInformation\",\"params\":{\"Queries\":[\"UDID\","
        "\"OSVersion\",\"BuildVersion\",\"SerialNumber\",\"DeviceName\",\"ModelName\"]}}";
    mdm_buf_t body, req, resp;
    mdm_buf_init(&body, 0);
    mdm_buf_init(&req, 0);
    mdm_buf_init(&resp, 0);
    long queued = 0;
    for (unsigned round = 0; round < per_mac && queued >= 0; round++) {
        for (unsigned from = 0; from < f->n && queued >= 0; from += BULK_MAX) {
            unsigned to = from + BULK_MAX < f->n ? from + BULK_MAX : f->n;
            mdm_buf_reset(&body);
            mdm_buf_reset(&req);
            mdm_buf_reset(&resp);
            int ret = mdm_buf_printf(&body, "{\"udids\":[");
            for (unsigned i = from; i < to && ret == 0; i++)
                ret = mdm_buf_printf(&body, "%s\"%s\"", i > from ? "," : "",
                                     f->macs[i].sim.udid);
            if (ret == 0)
                ret = mdm_buf_append(&body, tail, sizeof(tail) - 1);
            if (ret == 0)
                ret = mdm_buf_printf(&req,
                                     "POST /api/v1/commands HTTP/1.1\r\nHost: %s:%s\r\n"
                                     "Authorization: Bearer %s\r\n"
                                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                                     "Connection: close\r\n\r\n",
                                     host, port, api_key, body.len);
            if (ret == 0)
                ret = mdm_buf_append(&req, mdm_buf_head(&body), body.len);
            int status = 0;
            if (ret != 0 || admin_call(host, port, &req, &status, &resp) != 0) {
                fprintf(stderr, "mdm-bench: the bulk command call to %s:%s failed\n", host, port);
                queued = -1;
                break;
            }
            json_error_t jerr;
            json_t *j = json_loadb((const char *)mdm_buf_head(&resp), resp.len, 0, &jerr);
            json_t *q = j ? json_object_get(j, "queued") : NULL;
            json_t *fl = j ? json_object_get(j, "failed") : NULL;
            if (status != 201 || !json_is_array(q)) {
                fprintf(stderr, "mdm-bench: bulk commands: HTTP %d: %.*s\n", status,
                        (int)(resp.len > 300 ? 300 : resp.len), (const char *)mdm_buf_head(&resp));
                queued = -1;
            } else {
                queued += (long)json_array_size(q);
                if (json_is_array(fl) && json_array_size(fl))
                    fprintf(stderr, "mdm-bench: bulk commands: %zu devices failed\n",
                            json_array_size(fl));
            }
            json_decref(j);
        }
    }
    mdm_buf_dispose(&body);
    mdm_buf_dispose(&req);
    mdm_buf_dispose(&resp);
    return queued;
}
