/*
 * fake-apns: a stand-in for Apple Push Notification service, for tests and benchmarks.
 *
 *   fake-apns --cert server.crt --key server.key --ca client-ca.crt
 *             [--port 0] [--script FILE] [--record FILE] [--max-streams N]
 *
 * HTTP/2 over TLS (ALPN h2 required) on nghttp2 and wolfSSL, one blocking thread per
 * connection (a test tool: simplicity over scale). The client must present a certificate that
 * verifies against --ca; its subject UID is the only topic it may push to.
 *
 * Each request must be POST /3/device/<hex token> with apns-topic (= the client's topic),
 * apns-push-type: mdm, apns-priority (5 or 10) and apns-expiration (digits) when present, and a
 * body {"mdm":"<PushMagic>"}; otherwise it is answered 400/404/405/403 with APNs' reason. A valid
 * request is answered from the script (re-read when its mtime changes), lines "<token> <action>"
 * ("*" for every other token; '#' comments), actions:
 *   200 | 400 (BadDeviceToken) | 410 (Unregistered) | 429 (TooManyRequests)
 *   | 503 (ServiceUnavailable) | 500 (InternalServerError) | 403 (BadCertificate)
 *   | slow:<ms> (200 after ms) | goaway (GOAWAY that does not cover the stream: retry it)
 *   | drop (the TCP connection is closed without answering)
 * Default 200 with an apns-id header (the request's apns-id or a new UUID).
 * Every request is appended to --record as one JSON line:
 *   {"conn":1,"stream":1,"method":"POST","path":"/3/device/ab..","token":"ab..",
 *    "topic":"..","client_topic":"..","push_type":"mdm","priority":"10","expiration":"0",
 *    "apns_id":"..","body":"{\"mdm\":\"..\"}","status":200,"reason":"","action":"200"}
 * Prints "listening <port>" on stdout once it accepts connections; runs until killed.
 */
#include <wolfssl/options.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <wolfssl/ssl.h>

#define MAX_BODY 8192
#define FIELD 256

static struct {
    WOLFSSL_CTX *ctx;
    const char *script_path, *record_path;
    uint32_t max_streams;
    pthread_mutex_t mu; /* script and record */
    FILE *record;
    struct timespec script_mtime;
    char *script; /* file contents */
    unsigned next_conn;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .max_streams = 1000};

struct stream {
    int32_t id;
    char method[16], path[FIELD], topic[FIELD], push_type[32], priority[16], expiration[32],
        apns_id[64];
    bool has_priority, has_expiration;
    char body[MAX_BODY];
    size_t body_len;
    bool body_overflow;
    /* response */
    int status;
    char reason[64];
    char resp_body[128];
    size_t resp_len, resp_off;
    uint64_t due_ms; /* slow: answer at */
    bool pending;    /* waiting for due_ms */
    struct stream *next;
};

struct conn {
    unsigned id;
    int fd;
    WOLFSSL *ssl;
    nghttp2_session *h2;
    char client_topic[FIELD];
    struct stream *streams;
    bool drop, goaway_sent;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- script ------------------------------------------------------------------------------- */

/* Looks token up in the script (reloaded when changed); "200" when nothing matches. */
static void script_action(const char *token, char *out, size_t outlen)
{
    snprintf(out, outlen, "200");
    if (!g.script_path)
        return;
    pthread_mutex_lock(&g.mu);
    struct stat st;
    if (stat(g.script_path, &st) == 0 &&
        (st.st_mtim.tv_sec != g.script_mtime.tv_sec ||
         st.st_mtim.tv_nsec != g.script_mtime.tv_nsec || !g.script)) {
        FILE *f = fopen(g.script_path, "r");
        if (f) {
            free(g.script);
            g.script = calloc(1, (size_t)st.st_size + 1);
            if (g.script && fread(g.script, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
                g.script[0] = '\0';
            fclose(f);
            g.script_mtime = st.st_mtim;
        }
    }
    char def[64] = "";
    bool found = false;
    for (const char *p = g.script; p && *p && !found;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[512], tok[256], act[64];
        snprintf(line, sizeof(line), "%.*s", (int)(len < 511 ? len : 511), p);
        if (line[0] != '#' && sscanf(line, "%255s %63s", tok, act) == 2) {
            if (strcasecmp(tok, token) == 0) {
                snprintf(out, outlen, "%s", act);
                found = true;
            } else if (strcmp(tok, "*") == 0) {
                snprintf(def, sizeof(def), "%s", act);
            }
        }
        p = nl ? nl + 1 : NULL;
    }
    if (!found && def[0])
        snprintf(out, outlen, "%s", def);
    pthread_mutex_unlock(&g.mu);
}

/* ---- recording ---------------------------------------------------------------------------- */

static void json_str(FILE *f, const char *key, const char *s, size_t len, bool comma)
{
    fprintf(f, "\"%s\":\"", key);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fprintf(f, "\"%s", comma ? "," : "");
}

static void record(struct conn *c, struct stream *s, const char *token, const char *action)
{
    if (!g.record)
        return;
    pthread_mutex_lock(&g.mu);
    FILE *f = g.record;
    fprintf(f, "{\"conn\":%u,\"stream\":%d,", c->id, s->id);
    json_str(f, "method", s->method, strlen(s->method), true);
    json_str(f, "path", s->path, strlen(s->path), true);
    json_str(f, "token", token, strlen(token), true);
    json_str(f, "topic", s->topic, strlen(s->topic), true);
    json_str(f, "client_topic", c->client_topic, strlen(c->client_topic), true);
    json_str(f, "push_type", s->push_type, strlen(s->push_type), true);
    json_str(f, "priority", s->priority, strlen(s->priority), true);
    json_str(f, "expiration", s->expiration, strlen(s->expiration), true);
    json_str(f, "apns_id", s->apns_id, strlen(s->apns_id), true);
    json_str(f, "body", s->body, s->body_len, true);
    fprintf(f, "\"status\":%d,", s->status);
    json_str(f, "reason", s->reason, strlen(s->reason), true);
    json_str(f, "action", action, strlen(action), false);
    fprintf(f, "}\n");
    fflush(f);
    pthread_mutex_unlock(&g.mu);
}

/* ---- HTTP/2 ------------------------------------------------------------------------------- */

static struct stream *find_stream(struct conn *c, int32_t id)
{
    for (struct stream *s = c->streams; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

static ssize_t on_send(nghttp2_session *h2, const uint8_t *data, size_t len, int flags,
                       void *arg)
{
    (void)h2;
    (void)flags;
    struct conn *c = arg;
    int n = wolfSSL_write(c->ssl, data, (int)len);
    return n > 0 ? n : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *arg)
{
    (void)h2;
    struct conn *c = arg;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    s->id = frame->hd.stream_id;
    s->next = c->streams;
    c->streams = s;
    return 0;
}

static void copy(char *dst, size_t size, const uint8_t *v, size_t len)
{
    snprintf(dst, size, "%.*s", (int)(len < size - 1 ? len : size - 1), (const char *)v);
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
    (void)h2;
    (void)flags;
    struct stream *s = find_stream(arg, frame->hd.stream_id);
    if (!s)
        return 0;
#define IS(n) (nlen == sizeof(n) - 1 && memcmp(name, n, nlen) == 0)
    if (IS(":method"))
        copy(s->method, sizeof(s->method), value, vlen);
    else if (IS(":path"))
        copy(s->path, sizeof(s->path), value, vlen);
    else if (IS("apns-topic"))
        copy(s->topic, sizeof(s->topic), value, vlen);
    else if (IS("apns-push-type"))
        copy(s->push_type, sizeof(s->push_type), value, vlen);
    else if (IS("apns-priority"))
        copy(s->priority, sizeof(s->priority), value, vlen), s->has_priority = true;
    else if (IS("apns-expiration"))
        copy(s->expiration, sizeof(s->expiration), value, vlen), s->has_expiration = true;
    else if (IS("apns-id"))
        copy(s->apns_id, sizeof(s->apns_id), value, vlen);
#undef IS
    return 0;
}

static int on_data(nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data,
                   size_t len, void *arg)
{
    (void)h2;
    (void)flags;
    struct stream *s = find_stream(arg, id);
    if (!s)
        return 0;
    if (s->body_len + len > MAX_BODY) {
        s->body_overflow = true;
        return 0;
    }
    memcpy(s->body + s->body_len, data, len);
    s->body_len += len;
    return 0;
}

static ssize_t read_resp(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    (void)h2;
    (void)id;
    (void)arg;
    struct stream *s = src->ptr;
    size_t n = s->resp_len - s->resp_off;
    if (n > len)
        n = len;
    memcpy(buf, s->resp_body + s->resp_off, n);
    s->resp_off += n;
    if (s->resp_off == s->resp_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void new_uuid(char out[37])
{
    uint8_t b[16];
    for (int i = 0; i < 16; i++)
        b[i] = (uint8_t)(random() & 0xff);
    snprintf(out, 37, "%02X%02X%02X%02X-%02X%02X-4%01X%02X-%02X%02X-%02X%02X%02X%02X%02X%02X",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6] & 0xf, b[7], (b[8] & 0x3f) | 0x80, b[9],
             b[10], b[11], b[12], b[13], b[14], b[15]);
}

static void respond(struct conn *c, struct stream *s)
{
    if (!s->apns_id[0])
        new_uuid(s->apns_id);
    char status[4];
    snprintf(status, sizeof(status), "%d", s->status);
    nghttp2_nv nv[] = {
        {(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"apns-id", (uint8_t *)s->apns_id, 7, strlen(s->apns_id),
         NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/json", 12, 16, NGHTTP2_NV_FLAG_NONE},
    };
    if (s->status == 200) {
        nghttp2_submit_response(c->h2, s->id, nv, 2, NULL);
        return;
    }
    if (s->status == 410)
        s->resp_len = (size_t)snprintf(s->resp_body, sizeof(s->resp_body),
                                       "{\"reason\":\"%s\",\"timestamp\":%lld}", s->reason,
                                       (long long)time(NULL) * 1000);
    else
        s->resp_len = (size_t)snprintf(s->resp_body, sizeof(s->resp_body),
                                       "{\"reason\":\"%s\"}", s->reason);
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = read_resp};
    nghttp2_submit_response(c->h2, s->id, nv, 3, &dp);
}

static bool is_hex(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s))
            return false;
    return true;
}

static void set(struct stream *s, int status, const char *reason)
{
    s->status = status;
    snprintf(s->reason, sizeof(s->reason), "%s", reason);
}

/* A complete request: checks it, consults the script, answers (or schedules). */
static void on_request(struct conn *c, struct stream *s)
{
    const char *token = strncmp(s->path, "/3/device/", 10) == 0 ? s->path + 10 : "";
    char action[64] = "";
    /* {"mdm":"<magic>"}: strict enough for a fake. */
    bool body_ok = !s->body_overflow && s->body_len > 10 &&
                   memcmp(s->body, "{\"mdm\":\"", 8) == 0 &&
                   memcmp(s->body + s->body_len - 2, "\"}", 2) == 0 &&
                   !memchr(s->body + 8, '"', s->body_len - 10);
    if (strcmp(s->method, "POST") != 0)
        set(s, 405, "MethodNotAllowed");
    else if (!is_hex(token))
        set(s, 404, "BadPath");
    else if (!s->topic[0])
        set(s, 400, "MissingTopic");
    else if (strcmp(s->topic, c->client_topic) != 0)
        set(s, 400, "TopicDisallowed");
    else if (strcmp(s->push_type, "mdm") != 0)
        set(s, 400, "InvalidPushType");
    else if (s->has_priority && strcmp(s->priority, "10") != 0 && strcmp(s->priority, "5") != 0)
        set(s, 400, "BadPriority");
    else if (s->has_expiration &&
             (!s->expiration[0] || strspn(s->expiration, "0123456789") != strlen(s->expiration)))
        set(s, 400, "BadExpirationDate");
    else if (!body_ok)
        set(s, 400, s->body_len ? "BadPayload" : "PayloadEmpty");
    else {
        script_action(token, action, sizeof(action));
        if (strcmp(action, "400") == 0)
            set(s, 400, "BadDeviceToken");
        else if (strcmp(action, "410") == 0)
            set(s, 410, "Unregistered");
        else if (strcmp(action, "429") == 0)
            set(s, 429, "TooManyRequests");
        else if (strcmp(action, "503") == 0)
            set(s, 503, "ServiceUnavailable");
        else if (strcmp(action, "500") == 0)
            set(s, 500, "InternalServerError");
        else if (strcmp(action, "403") == 0)
            set(s, 403, "BadCertificate");
        else if (strncmp(action, "slow:", 5) == 0) {
            set(s, 200, "");
            s->pending = true;
            s->due_ms = now_ms() + strtoull(action + 5, NULL, 10);
        } else if (strcmp(action, "goaway") == 0) {
            set(s, 0, "goaway");
        } else if (strcmp(action, "drop") == 0) {
            set(s, 0, "drop");
        } else {
            set(s, 200, "");
        }
    }
    record(c, s, token, action[0] ? action : "refused");
    if (strcmp(action, "goaway") == 0) {
        /* The last stream id excludes this one: the client must send it again elsewhere. */
        nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, s->id - 2 > 0 ? s->id - 2 : 0,
                              NGHTTP2_NO_ERROR, NULL, 0);
        c->goaway_sent = true;
    } else if (strcmp(action, "drop") == 0) {
        c->drop = true;
    } else if (!s->pending) {
        respond(c, s);
    }
}

static int on_frame(nghttp2_session *h2, const nghttp2_frame *frame, void *arg)
{
    (void)h2;
    struct conn *c = arg;
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct stream *s = find_stream(c, frame->hd.stream_id);
        if (s)
            on_request(c, s);
    }
    return 0;
}

static int on_close(nghttp2_session *h2, int32_t id, uint32_t err, void *arg)
{
    (void)h2;
    (void)err;
    struct conn *c = arg;
    for (struct stream **p = &c->streams; *p; p = &(*p)->next) {
        if ((*p)->id == id) {
            struct stream *s = *p;
            *p = s->next;
            free(s);
            break;
        }
    }
    return 0;
}

/* ---- connections -------------------------------------------------------------------------- */

static void *serve_conn(void *arg)
{
    struct conn *c = arg;
    c->ssl = wolfSSL_new(g.ctx);
    if (!c->ssl)
        goto out;
    wolfSSL_set_fd(c->ssl, c->fd);
    char alpn[] = "h2";
    if (wolfSSL_UseALPN(c->ssl, alpn, 2, WOLFSSL_ALPN_FAILED_ON_MISMATCH) != WOLFSSL_SUCCESS)
        goto out;
    if (wolfSSL_accept(c->ssl) != WOLFSSL_SUCCESS) {
        int e = wolfSSL_get_error(c->ssl, 0);
        char buf[80];
        fprintf(stderr, "fake-apns: conn %u: TLS handshake failed: %s\n", c->id,
                wolfSSL_ERR_error_string((unsigned long)e, buf));
        goto out;
    }
    char *proto = NULL;
    unsigned short plen = 0;
    if (wolfSSL_ALPN_GetProtocol(c->ssl, &proto, &plen) != WOLFSSL_SUCCESS || plen != 2 ||
        memcmp(proto, "h2", 2) != 0) {
        fprintf(stderr, "fake-apns: conn %u: no ALPN h2\n", c->id);
        goto out;
    }
    WOLFSSL_X509 *peer = wolfSSL_get_peer_certificate(c->ssl);
    if (peer) {
        WOLFSSL_X509_NAME *name = wolfSSL_X509_get_subject_name(peer);
        if (name && wolfSSL_X509_NAME_get_text_by_NID(name, NID_userId, c->client_topic,
                                                      sizeof(c->client_topic)) <= 0)
            c->client_topic[0] = '\0';
        wolfSSL_X509_free(peer);
    }
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        goto out;
    nghttp2_session_callbacks_set_send_callback(cb, on_send);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
    int rv = nghttp2_session_server_new(&c->h2, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0)
        goto out;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, g.max_streams}};
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 1);
    uint8_t buf[16384];
    for (;;) {
        if (nghttp2_session_send(c->h2) != 0 || c->drop)
            break;
        if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
            break;
        /* Slow answers that are due. */
        uint64_t now = now_ms(), next = 0;
        for (struct stream *s = c->streams; s; s = s->next) {
            if (!s->pending)
                continue;
            if (s->due_ms <= now) {
                s->pending = false;
                respond(c, s);
            } else if (!next || s->due_ms < next) {
                next = s->due_ms;
            }
        }
        if (nghttp2_session_want_write(c->h2))
            continue;
        if (wolfSSL_pending(c->ssl) == 0) {
            struct pollfd p = {.fd = c->fd, .events = POLLIN};
            int pr = poll(&p, 1, next ? (int)(next - now) + 1 : 1000);
            if (pr < 0 && errno != EINTR)
                break;
            if (pr <= 0)
                continue;
        }
        int n = wolfSSL_read(c->ssl, buf, sizeof(buf));
        if (n <= 0)
            break;
        if (nghttp2_session_mem_recv(c->h2, buf, (size_t)n) < 0)
            break;
    }
out:
    if (c->drop) {
        struct linger l = {.l_onoff = 1, .l_linger = 0}; /* RST: a lost connection */
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    } else if (c->ssl) {
        wolfSSL_shutdown(c->ssl);
    }
    nghttp2_session_del(c->h2);
    wolfSSL_free(c->ssl);
    close(c->fd);
    while (c->streams) {
        struct stream *s = c->streams;
        c->streams = s->next;
        free(s);
    }
    free(c);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: fake-apns --cert FILE --key FILE --ca FILE [--port N] "
                    "[--script FILE] [--record FILE] [--max-streams N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *cert = NULL, *key = NULL, *ca = NULL;
    int port = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (strcmp(a, "--cert") == 0)
            cert = v;
        else if (strcmp(a, "--key") == 0)
            key = v;
        else if (strcmp(a, "--ca") == 0)
            ca = v;
        else if (strcmp(a, "--port") == 0)
            port = atoi(v);
        else if (strcmp(a, "--script") == 0)
            g.script_path = v;
        else if (strcmp(a, "--record") == 0)
            g.record_path = v;
        else if (strcmp(a, "--max-streams") == 0)
            g.max_streams = (uint32_t)strtoul(v, NULL, 10);
        else
            usage();
        i++;
    }
    if (!cert || !key || !ca)
        usage();
    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());
    if (g.record_path && !(g.record = fopen(g.record_path, "a"))) {
        perror(g.record_path);
        return 1;
    }
    wolfSSL_Init();
    g.ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
    if (!g.ctx || wolfSSL_CTX_SetMinVersion(g.ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
        wolfSSL_CTX_use_certificate_chain_file(g.ctx, cert) != WOLFSSL_SUCCESS ||
        wolfSSL_CTX_use_PrivateKey_file(g.ctx, key, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS ||
        wolfSSL_CTX_load_verify_locations(g.ctx, ca, NULL) != WOLFSSL_SUCCESS) {
        fprintf(stderr, "fake-apns: cannot load %s / %s / %s\n", cert, key, ca);
        return 1;
    }
    wolfSSL_CTX_set_verify(g.ctx, WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 128) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("fake-apns: listen");
        return 1;
    }
    printf("listening %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("fake-apns: accept");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        pthread_mutex_lock(&g.mu);
        c->id = ++g.next_conn;
        pthread_mutex_unlock(&g.mu);
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &at, serve_conn, c) != 0) {
            close(fd);
            free(c);
        }
        pthread_attr_destroy(&at);
    }
}
