/*
 * tests/fakes/fake-apns driven by an nghttp2 client over a blocking wolfSSL socket: client
 * certificate required, topic/path/header/payload checks, every scripted answer (200, 400,
 * 410, 429, 503, slow, goaway, drop), SETTINGS_MAX_CONCURRENT_STREAMS and the JSON-lines record.
 */
#include <wolfssl/options.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <wolfssl/ssl.h>

#include "check.h"
#include "core/common.h"

#define TOPIC "com.apple.mgmt.External.11111111-2222-3333-4444-555555555555"

static char work[600];
static int port;

struct result {
    int status;   /* HTTP status; -1 refused by GOAWAY; -2 connection lost; -3 no TLS */
    char reason[128];
    char apns_id[64];
    uint32_t max_streams;
    bool goaway;
};

struct client {
    WOLFSSL *ssl;
    struct result *r;
    int32_t stream;
    bool closed;
    const char *body;
    size_t body_len, body_off;
};

static ssize_t c_send(nghttp2_session *h, const uint8_t *d, size_t len, int fl, void *arg)
{
    (void)h;
    (void)fl;
    struct client *c = arg;
    int n = wolfSSL_write(c->ssl, d, (int)len);
    return n > 0 ? n : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int c_header(nghttp2_session *h, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                    const uint8_t *value, size_t vl, uint8_t fl, void *arg)
{
    (void)h;
    (void)f;
    (void)fl;
    struct client *c = arg;
    if (nl == 7 && memcmp(name, ":status", 7) == 0)
        c->r->status = atoi((const char *)value);
    else if (nl == 7 && memcmp(name, "apns-id", 7) == 0)
        snprintf(c->r->apns_id, sizeof(c->r->apns_id), "%.*s", (int)vl, value);
    return 0;
}

static int c_data(nghttp2_session *h, uint8_t fl, int32_t id, const uint8_t *d, size_t len,
                  void *arg)
{
    (void)h;
    (void)fl;
    (void)id;
    struct client *c = arg;
    size_t cur = strlen(c->r->reason);
    snprintf(c->r->reason + cur, sizeof(c->r->reason) - cur, "%.*s", (int)len, d);
    return 0;
}

static int c_frame(nghttp2_session *h, const nghttp2_frame *f, void *arg)
{
    struct client *c = arg;
    if (f->hd.type == NGHTTP2_GOAWAY)
        c->r->goaway = true;
    if (f->hd.type == NGHTTP2_SETTINGS)
        c->r->max_streams =
            nghttp2_session_get_remote_settings(h, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return 0;
}

static int c_close(nghttp2_session *h, int32_t id, uint32_t err, void *arg)
{
    (void)h;
    struct client *c = arg;
    if (id == c->stream) {
        c->closed = true;
        if (err == NGHTTP2_REFUSED_STREAM && c->r->status == 0)
            c->r->status = -1;
    }
    return 0;
}

static ssize_t c_read(nghttp2_session *h, int32_t id, uint8_t *buf, size_t len, uint32_t *fl,
                      nghttp2_data_source *src, void *arg)
{
    (void)h;
    (void)id;
    (void)src;
    struct client *c = arg;
    size_t n = c->body_len - c->body_off;
    if (n > len)
        n = len;
    memcpy(buf, c->body + c->body_off, n);
    c->body_off += n;
    if (c->body_off == c->body_len)
        *fl |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* One push on a fresh connection. cert NULL: no client certificate. */
static void push(const char *cert, const char *key, const char *topic, const char *path,
                 const char *push_type, const char *body, struct result *r)
{
    memset(r, 0, sizeof(*r));
    WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfTLSv1_2_client_method());
    CHECK(wolfSSL_CTX_load_verify_locations(ctx, MDM_TEST_DATA "/test-ca.crt", NULL) ==
          WOLFSSL_SUCCESS);
    if (cert) {
        CHECK(wolfSSL_CTX_use_certificate_file(ctx, cert, WOLFSSL_FILETYPE_PEM) ==
              WOLFSSL_SUCCESS);
        CHECK(wolfSSL_CTX_use_PrivateKey_file(ctx, key, WOLFSSL_FILETYPE_PEM) ==
              WOLFSSL_SUCCESS);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    struct client c = {.r = r, .body = body, .body_len = strlen(body)};
    c.ssl = wolfSSL_new(ctx);
    wolfSSL_set_fd(c.ssl, fd);
    char alpn[] = "h2";
    wolfSSL_UseALPN(c.ssl, alpn, 2, WOLFSSL_ALPN_FAILED_ON_MISMATCH);
    wolfSSL_UseSNI(c.ssl, WOLFSSL_SNI_HOST_NAME, "localhost", 9);
    nghttp2_session *h = NULL;
    /* TLS 1.2: a refused client certificate fails the handshake itself. */
    if (wolfSSL_connect(c.ssl) != WOLFSSL_SUCCESS) {
        r->status = -3;
        goto out;
    }
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_send_callback(cb, c_send);
    nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_close);
    nghttp2_session_client_new(&h, cb, &c);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(h, NGHTTP2_FLAG_NONE, NULL, 0);
    char authority[32];
    snprintf(authority, sizeof(authority), "localhost:%d", port);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nv[] = {NV(":method", "POST"),          NV(":scheme", "https"),
                       NV(":authority", authority),    NV(":path", path),
                       NV("apns-topic", topic),        NV("apns-push-type", push_type),
                       NV("apns-priority", "10"),      NV("apns-expiration", "0")};
    nghttp2_data_provider dp = {.read_callback = c_read};
    c.stream = nghttp2_submit_request(h, NULL, nv, MDM_ARRAY_LEN(nv), &dp, NULL);
    CHECK(c.stream > 0);
    uint8_t buf[16384];
    while (!c.closed) {
        if (nghttp2_session_send(h) != 0)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (wolfSSL_pending(c.ssl) == 0 && poll(&p, 1, 5000) <= 0)
            break;
        int n = wolfSSL_read(c.ssl, buf, sizeof(buf));
        if (n <= 0 || nghttp2_session_mem_recv(h, buf, (size_t)n) < 0)
            break;
    }
    if (!c.closed && r->status == 0)
        r->status = r->goaway ? -1 : -2;
out:
    nghttp2_session_del(h);
    wolfSSL_free(c.ssl);
    close(fd);
    wolfSSL_CTX_free(ctx);
}

static pid_t start_fake(const char *script, const char *rec)
{
    int pfd[2];
    if (pipe(pfd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        char ca[700];
        snprintf(ca, sizeof(ca), "%s/ca.crt", work);
        execl(FAKE_APNS_BIN, "fake-apns", "--cert", MDM_TEST_DATA "/server.crt", "--key",
              MDM_TEST_DATA "/server.key", "--ca", ca, "--script", script, "--record", rec,
              "--max-streams", "2", (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    char line[64] = "";
    FILE *f = fdopen(pfd[0], "r");
    if (!f || !fgets(line, sizeof(line), f) || sscanf(line, "listening %d", &port) != 1)
        port = 0;
    if (f)
        fclose(f);
    return pid;
}

int main(void)
{
    wolfSSL_Init();
    snprintf(work, sizeof(work), "%s", check_tmpdir("fakeapns"));
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt "
             "-subj '/CN=Push CA' -days 30 2>/dev/null && "
             "openssl req -x509 -CA ca.crt -CAkey ca.key -newkey rsa:2048 -nodes "
             "-keyout push.key -out push.crt -subj '/UID=" TOPIC "/CN=APSP:test/C=US' "
             "-days 30 2>/dev/null && "
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout rogue.key -out rogue.crt "
             "-subj '/UID=" TOPIC "/CN=rogue' -days 30 2>/dev/null",
             work);
    if (system(cmd) != 0) {
        fprintf(stderr, "openssl failed\n");
        return 99;
    }
    char script[700], rec[700], cert[700], key[700], rcert[700], rkey[700];
    snprintf(script, sizeof(script), "%s/script", work);
    snprintf(rec, sizeof(rec), "%s/record.jsonl", work);
    snprintf(cert, sizeof(cert), "%s/push.crt", work);
    snprintf(key, sizeof(key), "%s/push.key", work);
    snprintf(rcert, sizeof(rcert), "%s/rogue.crt", work);
    snprintf(rkey, sizeof(rkey), "%s/rogue.key", work);
    FILE *f = fopen(script, "w");
    fprintf(f, "# token action\naa02 400\naa03 410\naa04 429\naa05 503\naa06 slow:300\n"
               "aa07 goaway\naa08 drop\n* 200\n");
    fclose(f);
    pid_t pid = start_fake(script, rec);
    CHECK(port > 0);
    if (port <= 0)
        return check_finish("fake_apns");
    const char *body = "{\"mdm\":\"MAGIC-1\"}";
    struct result r;

    push(cert, key, TOPIC, "/3/device/aa01", "mdm", body, &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strlen(r.apns_id) == 36);
    CHECK_EQ_INT((int)r.max_streams, 2);
    struct {
        const char *token;
        int status;
        const char *reason;
    } cases[] = {
        {"aa02", 400, "BadDeviceToken"}, {"aa03", 410, "Unregistered"},
        {"aa04", 429, "TooManyRequests"}, {"aa05", 503, "ServiceUnavailable"},
    };
    for (size_t i = 0; i < MDM_ARRAY_LEN(cases); i++) {
        char path[64];
        snprintf(path, sizeof(path), "/3/device/%s", cases[i].token);
        push(cert, key, TOPIC, path, "mdm", body, &r);
        CHECK_EQ_INT(r.status, cases[i].status);
        CHECK(strstr(r.reason, cases[i].reason) != NULL);
    }
    CHECK(strstr(r.reason, "timestamp") == NULL);
    push(cert, key, TOPIC, "/3/device/aa03", "mdm", body, &r);
    CHECK(strstr(r.reason, "\"timestamp\":") != NULL);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    push(cert, key, TOPIC, "/3/device/aa06", "mdm", body, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK_EQ_INT(r.status, 200);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    CHECK(ms >= 290);

    push(cert, key, TOPIC, "/3/device/aa07", "mdm", body, &r);
    CHECK(r.goaway);
    CHECK_EQ_INT(r.status, -1);
    push(cert, key, TOPIC, "/3/device/aa08", "mdm", body, &r);
    CHECK_EQ_INT(r.status, -2);

    /* Refusals by the checks. */
    push(cert, key, "com.apple.mgmt.External.other", "/3/device/aa01", "mdm", body, &r);
    CHECK_EQ_INT(r.status, 400);
    CHECK(strstr(r.reason, "TopicDisallowed") != NULL);
    push(cert, key, TOPIC, "/3/device/aa01", "alert", body, &r);
    CHECK(r.status == 400 && strstr(r.reason, "InvalidPushType"));
    push(cert, key, TOPIC, "/3/device/zz", "mdm", body, &r);
    CHECK(r.status == 404 && strstr(r.reason, "BadPath"));
    push(cert, key, TOPIC, "/3/device/aa01", "mdm", "{\"aps\":{}}", &r);
    CHECK(r.status == 400 && strstr(r.reason, "BadPayload"));
    push(NULL, NULL, TOPIC, "/3/device/aa01", "mdm", body, &r);
    CHECK(r.status < 0);
    push(rcert, rkey, TOPIC, "/3/device/aa01", "mdm", body, &r); /* untrusted issuer */
    CHECK(r.status < 0);

    /* The script is re-read when it changes. */
    sleep(1); /* mtime granularity on some file systems */
    f = fopen(script, "w");
    fprintf(f, "aa01 410\n");
    fclose(f);
    push(cert, key, TOPIC, "/3/device/aa01", "mdm", body, &r);
    CHECK_EQ_INT(r.status, 410);

    /* Every request that got through TLS is recorded. */
    f = fopen(rec, "r");
    char line[2048];
    int lines = 0, first_ok = 0, magic = 0;
    while (f && fgets(line, sizeof(line), f)) {
        lines++;
        if (strstr(line, "\"token\":\"aa01\"") && strstr(line, "\"status\":200") &&
            strstr(line, "\"topic\":\"" TOPIC "\"") && strstr(line, "\"push_type\":\"mdm\"") &&
            strstr(line, "\"priority\":\"10\"") && strstr(line, "\"expiration\":\"0\""))
            first_ok++;
        if (strstr(line, "\"body\":\"{\\\"mdm\\\":\\\"MAGIC-1\\\"}\""))
            magic++;
    }
    if (f)
        fclose(f);
    CHECK_EQ_INT(lines, 14);
    CHECK_EQ_INT(first_ok, 1);
    CHECK(magic >= 13);

    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    wolfSSL_Cleanup();
    return check_finish("fake_apns");
}
