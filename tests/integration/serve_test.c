/*
 * `mdmd serve` end to end: a real server on 127.0.0.1 (2 shards, ephemeral ports, a fresh
 * instance folder), real TLS, real RocksDB.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"

static char dir[512];

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *body_of(const mdm_buf_t *b)
{
    const char *s = strstr((const char *)mdm_buf_head(b), "\r\n\r\n");
    return s ? s + 4 : "";
}

static long long json_num(const char *body, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(body, pat);
    return p ? atoll(p + strlen(pat)) : -1;
}

/* Sends raw bytes on a new connection and returns the status of the reply. */
static int raw_request(int port, const char *raw, size_t len, mdm_buf_t *out)
{
    hclient_t c;
    int status = -1;
    if (hclient_connect(&c, port, instance_ca(dir), NULL, NULL, NULL) == 0 &&
        hclient_send(&c, raw, len) == 0)
        status = hclient_read_response(&c, out, 10000);
    hclient_close(&c);
    return status;
}

static void test_health(const server_proc_t *p)
{
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    CHECK_EQ_INT(https_get(p->device_port, instance_ca(dir), "/healthz", &out), 200);
    CHECK(strstr(body_of(&out), "\"status\":\"ok\"") != NULL);
    CHECK_EQ_INT(https_get(p->admin_port, instance_ca(dir), "/healthz", &out), 200);
    CHECK_EQ_INT(https_get(p->device_port, instance_ca(dir), "/readyz", &out), 200);
    CHECK(strstr(body_of(&out), "\"status\":\"ready\"") != NULL);
    CHECK_EQ_INT(https_get(p->admin_port, instance_ca(dir), "/readyz", &out), 200);
    mdm_buf_dispose(&out);
}

/* With 2 shards, some actor ids live on the other shard than the one that took the request:
 * the reply must still come back, with the write committed. */
static void test_cross_shard(const server_proc_t *p)
{
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    int crossed = 0, same = 0;
    for (int i = 0; i < 40 && (crossed < 3 || same < 1); i++) {
        char path[64];
        snprintf(path, sizeof(path), "/readyz?actor=x%d", i);
        int st = https_get(p->device_port, instance_ca(dir), path, &out);
        CHECK_EQ_INT(st, 200);
        long long rs = json_num(body_of(&out), "request_shard");
        long long as = json_num(body_of(&out), "actor_shard");
        CHECK(rs >= 0 && as >= 0);
        CHECK_EQ_INT(json_num(body_of(&out), "writes"), 1);
        if (rs != as)
            crossed++;
        else
            same++;
    }
    CHECK(crossed >= 3);
    CHECK(same >= 1);
    CHECK_EQ_INT(https_get(p->device_port, instance_ca(dir), "/readyz?actor=bad/id", &out), 400);
    mdm_buf_dispose(&out);
}

static void test_http_errors(const server_proc_t *p)
{
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    CHECK_EQ_INT(https_get(p->device_port, instance_ca(dir), "/nope", &out), 404);
    const char post[] = "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    CHECK_EQ_INT(raw_request(p->device_port, post, sizeof(post) - 1, &out), 405);
    CHECK(strstr((const char *)mdm_buf_head(&out), "\r\nAllow: GET") != NULL);
    /* HEAD: GET's status and headers without the body. Pipelined before a GET of a missing
     * path, the bytes after the HEAD response's headers are the next response: a client that
     * (wrongly) reads Content-Length bytes as HEAD's body reads the start of the 404. */
    const char head[] = "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    CHECK_EQ_INT(raw_request(p->device_port, head, sizeof(head) - 1, &out), 200);
    CHECK(strstr((const char *)mdm_buf_head(&out), "\r\nContent-Length: ") != NULL);
    const char *after = strstr((const char *)mdm_buf_head(&out), "\r\n\r\n");
    CHECK(after != NULL && strncmp(after + 4, "HTTP/1.1 404", 12) == 0);
    const char garbage[] = "HELLO\r\n\r\n";
    CHECK_EQ_INT(raw_request(p->device_port, garbage, sizeof(garbage) - 1, &out), 400);
    /* A 20 KiB header: over max_header_bytes (16 KiB). */
    size_t big = 20000;
    char *req = malloc(big + 200);
    int n = snprintf(req, big + 200, "GET /healthz HTTP/1.1\r\nX-Big: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 4);
    CHECK_EQ_INT(raw_request(p->device_port, req, (size_t)n + big + 4, &out), 431);
    free(req);
    const char chunk[] = "PUT /readyz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    int st = raw_request(p->device_port, chunk, sizeof(chunk) - 1, &out);
    CHECK(st == 405 || st == 400);
    mdm_buf_dispose(&out);
}

static void test_keepalive_and_pipelining(const server_proc_t *p)
{
    hclient_t c;
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    CHECK_EQ_INT(hclient_connect(&c, p->device_port, instance_ca(dir), NULL, NULL, NULL), 0);
    const char one[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(hclient_send(&c, one, sizeof(one) - 1), 0);
        CHECK_EQ_INT(hclient_read_response(&c, &out, 5000), 200);
    }
    const char two[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /readyz?actor=pipe HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    CHECK_EQ_INT(hclient_send(&c, two, sizeof(two) - 1), 0);
    CHECK_EQ_INT(hclient_read_response(&c, &out, 5000), 200);
    CHECK(strstr(body_of(&out), "\"ok\"") != NULL);
    CHECK_EQ_INT(hclient_read_response(&c, &out, 5000), 200);
    CHECK(strstr(body_of(&out), "\"ready\"") != NULL);
    CHECK_EQ_INT(hclient_read_response(&c, &out, 5000), 404);
    CHECK(strstr((const char *)mdm_buf_head(&out), "Connection: close") != NULL);
    CHECK_EQ_INT(hclient_wait_close(&c, 5000), 0);
    hclient_close(&c);
    mdm_buf_dispose(&out);
}

/* A slow client (slowloris) gets 408 after header_timeout_ms and never holds others up. */
static void test_slow_client(const server_proc_t *p)
{
    hclient_t slow;
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    CHECK_EQ_INT(hclient_connect(&slow, p->device_port, instance_ca(dir), NULL, NULL, NULL), 0);
    long long start = now_ms();
    CHECK_EQ_INT(hclient_send(&slow, "GET /healthz HTTP/1.1\r\n", 23), 0);
    /* Meanwhile a normal client is served at once, on any shard. */
    for (int i = 0; i < 4; i++) {
        long long t0 = now_ms();
        CHECK_EQ_INT(https_get(p->device_port, instance_ca(dir), "/healthz", &out), 200);
        CHECK(now_ms() - t0 < 1000);
    }
    CHECK_EQ_INT(hclient_send(&slow, "X-A: 1\r\n", 8), 0);
    int st = hclient_read_response(&slow, &out, 10000);
    CHECK_EQ_INT(st, 408);
    long long waited = now_ms() - start;
    CHECK(waited >= 900 && waited < 8000);
    CHECK_EQ_INT(hclient_wait_close(&slow, 5000), 0);
    hclient_close(&slow);

    /* A connection that sends nothing after its handshake is closed after idle_timeout_ms. */
    hclient_t idle;
    CHECK_EQ_INT(hclient_connect(&idle, p->device_port, instance_ca(dir), NULL, NULL, NULL), 0);
    CHECK_EQ_INT(hclient_wait_close(&idle, 8000), 0); /* idle_timeout_ms = 1500 */
    hclient_close(&idle);
    mdm_buf_dispose(&out);
}

static void test_client_certs(void)
{
    /* The device listener verifies client certificates against [tls] client_ca; here the
     * test CA of tests/data, with certificates required. */
    char ca_set[600];
    snprintf(ca_set, sizeof(ca_set), "tls.client_ca=%s/test-ca.crt", MDM_TEST_DATA);
    const char *extra[] = {"--shards", "1", "--set", ca_set, "--set", "server.client_cert=required",
                           NULL};
    server_proc_t p;
    CHECK_EQ_INT(harness_start(&p, dir, extra), 0);
    hclient_t c;
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    CHECK_EQ_INT(hclient_connect(&c, p.device_port, instance_ca(dir), MDM_TEST_DATA "/client.crt",
                                 MDM_TEST_DATA "/client.key", NULL),
                 0);
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK_EQ_INT(hclient_send(&c, req, sizeof(req) - 1), 0);
    CHECK_EQ_INT(hclient_read_response(&c, &out, 5000), 200);
    hclient_close(&c);

    /* Another CA's client certificate, and no certificate at all, are refused. */
    int st = -1;
    if (hclient_connect(&c, p.device_port, instance_ca(dir), MDM_TEST_DATA "/other-client.crt",
                        MDM_TEST_DATA "/other-client.key", NULL) == 0 &&
        hclient_send(&c, req, sizeof(req) - 1) == 0)
        st = hclient_read_response(&c, &out, 3000);
    CHECK_EQ_INT(st, -1);
    hclient_close(&c);
    st = -1;
    if (hclient_connect(&c, p.device_port, instance_ca(dir), NULL, NULL, NULL) == 0 &&
        hclient_send(&c, req, sizeof(req) - 1) == 0)
        st = hclient_read_response(&c, &out, 3000);
    CHECK_EQ_INT(st, -1);
    hclient_close(&c);
    /* The admin listener asks for no client certificate. */
    CHECK_EQ_INT(https_get(p.admin_port, instance_ca(dir), "/healthz", &out), 200);
    CHECK_EQ_INT(harness_stop(&p, SIGTERM, 20000), 0);
    mdm_buf_dispose(&out);
}

/* Past max_connections a shard answers 503 and closes; capacity comes back when others go. */
static void test_overload(void)
{
    const char *extra[] = {"--shards", "1", "--set", "server.max_connections=2", NULL};
    server_proc_t p;
    CHECK_EQ_INT(harness_start(&p, dir, extra), 0);
    hclient_t a, b, c;
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK_EQ_INT(hclient_connect(&a, p.device_port, instance_ca(dir), NULL, NULL, NULL), 0);
    CHECK_EQ_INT(hclient_connect(&b, p.device_port, instance_ca(dir), NULL, NULL, NULL), 0);
    CHECK_EQ_INT(hclient_connect(&c, p.device_port, instance_ca(dir), NULL, NULL, NULL), 0);
    CHECK_EQ_INT(hclient_send(&c, req, sizeof(req) - 1), 0);
    CHECK_EQ_INT(hclient_read_response(&c, &out, 5000), 503);
    CHECK(strstr(body_of(&out), "too many connections") != NULL);
    CHECK_EQ_INT(hclient_wait_close(&c, 5000), 0);
    hclient_close(&c);
    CHECK_EQ_INT(hclient_send(&a, req, sizeof(req) - 1), 0);
    CHECK_EQ_INT(hclient_read_response(&a, &out, 5000), 200);
    hclient_close(&a);
    hclient_close(&b);
    int st = -1;
    for (int i = 0; i < 50 && st != 200; i++) { /* the server notices the closes shortly */
        usleep(20000);
        st = https_get(p.device_port, instance_ca(dir), "/healthz", &out);
    }
    CHECK_EQ_INT(st, 200);
    CHECK_EQ_INT(harness_stop(&p, SIGTERM, 20000), 0);
    mdm_buf_dispose(&out);
}

/* Acknowledged writes survive kill -9; SIGTERM exits 0 after finishing. */
static void test_durability(void)
{
    const char *extra[] = {"--shards", "2", NULL};
    server_proc_t p;
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    CHECK_EQ_INT(harness_start(&p, dir, extra), 0);
    long long acked = 0;
    for (int i = 0; i < 30; i++) {
        if (https_get(p.device_port, instance_ca(dir), "/readyz?actor=durable", &out) == 200)
            acked = json_num(body_of(&out), "writes");
    }
    CHECK_EQ_INT(acked, 30);
    CHECK_EQ_INT(harness_stop(&p, SIGKILL, 10000), 128 + SIGKILL);

    CHECK_EQ_INT(harness_start(&p, dir, extra), 0);
    CHECK_EQ_INT(https_get(p.device_port, instance_ca(dir), "/readyz?actor=durable", &out), 200);
    CHECK_EQ_INT(json_num(body_of(&out), "writes"), acked + 1);
    CHECK_EQ_INT(harness_stop(&p, SIGTERM, 20000), 0);

    CHECK_EQ_INT(harness_start(&p, dir, extra), 0);
    CHECK_EQ_INT(https_get(p.device_port, instance_ca(dir), "/readyz?actor=durable", &out), 200);
    CHECK_EQ_INT(json_num(body_of(&out), "writes"), acked + 2);
    CHECK_EQ_INT(harness_stop(&p, SIGINT, 20000), 0);
    mdm_buf_dispose(&out);
}

/* Resumption with the session from an earlier connection; returns whether it resumed. */
static bool resumes(int port)
{
    hclient_t c;
    void *session = NULL;
    bool resumed = false;
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK_EQ_INT(hclient_connect(&c, port, instance_ca(dir), NULL, NULL, NULL), 0);
    CHECK_EQ_INT(hclient_send(&c, req, sizeof(req) - 1), 0);
    CHECK_EQ_INT(hclient_read_response(&c, &out, 5000), 200); /* any ticket has arrived */
    int got = mdm_tls_conn_get_session(c.tls, &session);
    hclient_close(&c);
    if (got == 0) {
        CHECK_EQ_INT(hclient_connect(&c, port, instance_ca(dir), NULL, NULL, session), 0);
        resumed = mdm_tls_session_resumed(c.tls);
        CHECK_EQ_INT(hclient_send(&c, req, sizeof(req) - 1), 0);
        CHECK_EQ_INT(hclient_read_response(&c, &out, 5000), 200);
        hclient_close(&c);
        mdm_tls_session_free(session);
    }
    mdm_buf_dispose(&out);
    return resumed;
}

/* The admin listener resumes sessions (tickets). The device listener asks for client
 * certificates, so it never resumes: wolfSSL does not reliably bring the client identity
 * back with a resumed session, and a device must never lose its identity that way. */
static void test_session_resumption(const server_proc_t *p)
{
    CHECK(resumes(p->admin_port));
    CHECK(!resumes(p->device_port));
}

static void test_bad_config(void)
{
    char conf[700], out[4096];
    snprintf(conf, sizeof(conf), "%s/mdmd.conf", dir);
    FILE *f = fopen(conf, "a");
    fprintf(f, "\n[server]\nshards = lots\n");
    fclose(f);
    const char *args[] = {"serve", dir, NULL};
    int code = harness_run(dir, args, 20000, out, sizeof(out));
    CHECK(code != 0 && code != -1);
    CHECK(strstr(out, "mdmd.conf:") != NULL);
    CHECK(strstr(out, "shards") != NULL);
    CHECK(strstr(out, "whole number") != NULL);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("serve"));
    strncat(dir, "/inst", sizeof(dir) - strlen(dir) - 1);
    if (harness_init(dir) != 0)
        return 99;
    const char *extra[] = {"--shards", "2", "--set", "server.header_timeout_ms=1000", "--set",
                           "server.idle_timeout_ms=1500", NULL};
    server_proc_t p;
    if (harness_start(&p, dir, extra) != 0)
        return 99;
    test_health(&p);
    test_cross_shard(&p);
    test_http_errors(&p);
    test_keepalive_and_pipelining(&p);
    test_session_resumption(&p);
    test_slow_client(&p);
    CHECK_EQ_INT(harness_stop(&p, SIGTERM, 20000), 0);
    test_client_certs();
    test_overload();
    test_durability();
    test_bad_config();
    mdm_tls_thread_cleanup();
    mdm_tls_global_cleanup();
    return check_finish("integ-serve");
}
