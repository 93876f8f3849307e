/*
 * Unit tests of core/http: the request parser (limits, framing, smuggling defences,
 * pipelining, arbitrary feed splits), the response writer (exact bytes) and the router.
 * Everything runs in memory; no sockets.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/http.h"

/* ------------------------------------------------------------------------------------------
 * Fixture: a router behind the on_headers callback, as the server wires it.
 */

static int h_health, h_mdm, h_upload, h_any; /* handler identities */

struct ctx {
    mdm_http_router_t router;
    unsigned calls;            /* on_headers invocations */
    size_t body_len_at_cb;     /* req->body.len seen by the callback (must be 0) */
    const mdm_http_route_t *route;
};

static int on_headers(void *arg, mdm_http_request_t *req, size_t *max_body)
{
    struct ctx *c = arg;
    c->calls++;
    c->body_len_at_cb = req->body.len;
    int status = 0;
    c->route = mdm_http_router_match(&c->router, req->method, req->path, &status);
    if (!c->route)
        return status;
    if (c->route->max_body_bytes)
        *max_body = c->route->max_body_bytes;
    return 0;
}

static void ctx_init(struct ctx *c)
{
    memset(c, 0, sizeof(*c));
    mdm_http_router_init(&c->router);
    int ret = mdm_http_router_add(&c->router, MDM_HTTP_GET, "/healthz", &h_health, NULL, 0);
    ret |= mdm_http_router_add(&c->router, MDM_HTTP_PUT, "/zdm/mdm/*", &h_mdm, NULL, 100);
    ret |= mdm_http_router_add(&c->router, MDM_HTTP_POST, "/upload", &h_upload, NULL, 1000);
    ret |= mdm_http_router_add(&c->router, MDM_HTTP_PUT, "/upload", &h_upload, NULL, 1000);
    ret |= mdm_http_router_add(&c->router, MDM_HTTP_ANY, "/any", &h_any, NULL, 0);
    CHECK_EQ_INT(ret, 0);
}

/* Feeds s in pieces of step bytes (0: all at once) until a request completes or fails.
 * Returns the last feed's code (>= 0 on success) and the total consumed. */
struct fed {
    int ret;
    bool done;
    size_t consumed;
};

static struct fed feed_steps(mdm_http_parser_t *p, const char *s, size_t len, size_t step)
{
    struct fed f = {0, false, 0};
    if (step == 0)
        step = len ? len : 1;
    while (f.consumed < len && !f.done) {
        size_t n = len - f.consumed < step ? len - f.consumed : step;
        int r = mdm_http_parser_feed(p, s + f.consumed, n, &f.done);
        f.ret = r;
        if (r < 0)
            return f;
        if (!f.done && (size_t)r != n) { /* without done every byte must be consumed */
            f.ret = -9999;
            return f;
        }
        f.consumed += (size_t)r;
    }
    return f;
}

static struct fed feed_str(mdm_http_parser_t *p, const char *s, size_t step)
{
    return feed_steps(p, s, strlen(s), step);
}

/* Parses s with fresh limits/callback and expects the failure status. */
static void expect_status(const struct mdm_http_limits *lim, const char *s, size_t step,
                          int status, const char *text)
{
    struct ctx c;
    ctx_init(&c);
    mdm_http_parser_t p;
    CHECK_EQ_INT(mdm_http_parser_init(&p, lim, on_headers, &c), 0);
    struct fed f = feed_str(&p, s, step);
    CHECK(f.ret < 0);
    CHECK(!f.done);
    CHECK_EQ_INT(mdm_http_parser_error_status(&p), status);
    if (text)
        CHECK_STR(mdm_http_parser_error_text(&p), text);
    if (mdm_http_parser_error_status(&p) != status)
        fprintf(stderr, "  request: %.60s... -> %d %s\n", s, mdm_http_parser_error_status(&p),
                mdm_http_parser_error_text(&p));
    mdm_http_parser_dispose(&p);
}

/* ------------------------------------------------------------------------------------------
 * Parser
 */

static const char simple_get[] = "GET /healthz?verbose=1&x=%20 HTTP/1.1\r\n"
                                 "Host: mdm.example.com\r\n"
                                 "User-Agent: MDM/1.0\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "X-Padded:   spaced value \t \r\n"
                                 "X-Empty:\r\n"
                                 "\r\n";

static void check_simple_get(const mdm_http_request_t *r)
{
    CHECK_EQ_INT(r->method, MDM_HTTP_GET);
    CHECK_STR(r->method_name, "GET");
    CHECK_STR(r->target, "/healthz?verbose=1&x=%20");
    CHECK_STR(r->path, "/healthz");
    CHECK_STR(r->query, "verbose=1&x=%20");
    CHECK_EQ_INT(r->n_headers, 5);
    CHECK_EQ_INT(r->http_major, 1);
    CHECK_EQ_INT(r->http_minor, 1);
    CHECK(r->keep_alive);
    CHECK(!r->has_content_length);
    CHECK(!r->chunked);
    CHECK(!r->expect_continue);
    CHECK_EQ_INT(r->body.len, 0);
    CHECK_STR(mdm_http_request_header(r, "host"), "mdm.example.com");
    CHECK_STR(mdm_http_request_header(r, "HOST"), "mdm.example.com");
    CHECK_STR(mdm_http_request_header(r, "content-type"), "text/plain");
    CHECK_STR(mdm_http_request_header(r, "CONTENT-TYPE"), "text/plain");
    CHECK_STR(mdm_http_request_header(r, "Content-Type"), "text/plain");
    CHECK_STR(mdm_http_request_header(r, "x-padded"), "spaced value");
    CHECK_STR(mdm_http_request_header(r, "x-empty"), "");
    CHECK(mdm_http_request_header(r, "x-missing") == NULL);
    CHECK(mdm_http_request_header(r, "hos") == NULL);
    CHECK_STR(r->headers[1].name, "User-Agent");
    CHECK_EQ_INT(r->headers[1].name_len, 10);
    CHECK_EQ_INT(r->headers[1].value_len, 7);
}

static void test_simple_get(void)
{
    for (size_t step = 0; step <= 7; step++) { /* 0: one feed, 1: byte by byte, ... */
        struct ctx c;
        ctx_init(&c);
        mdm_http_parser_t p;
        CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, on_headers, &c), 0);
        CHECK(!mdm_http_parser_in_progress(&p));
        struct fed f = feed_str(&p, simple_get, step);
        CHECK_EQ_INT(f.ret >= 0, 1);
        CHECK(f.done);
        CHECK_EQ_INT(f.consumed, strlen(simple_get));
        CHECK(mdm_http_parser_in_progress(&p));
        CHECK_EQ_INT(c.calls, 1);
        CHECK(c.route && c.route->handler == &h_health);
        check_simple_get(mdm_http_parser_request(&p));
        CHECK_EQ_INT(mdm_http_parser_error_status(&p), 0);
        CHECK_STR(mdm_http_parser_error_text(&p), "");
        mdm_http_parser_reset(&p);
        CHECK(!mdm_http_parser_in_progress(&p));
        mdm_http_parser_dispose(&p);
    }
}

static void test_pipelined(void)
{
    static const char two[] = "PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                              "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                              "GET /any?x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    size_t first = strlen("PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    size_t second = strlen("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    struct ctx c;
    ctx_init(&c);
    mdm_http_parser_t p;
    CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, on_headers, &c), 0);
    size_t len = strlen(two);

    bool done = false;
    int n = mdm_http_parser_feed(&p, two, len, &done);
    CHECK(done);
    CHECK_EQ_INT(n, first);
    mdm_http_request_t *r = mdm_http_parser_request(&p);
    CHECK_EQ_INT(r->method, MDM_HTTP_PUT);
    CHECK_EQ_INT(r->body.len, 5);
    CHECK(memcmp(mdm_buf_head(&r->body), "hello", 5) == 0);
    CHECK(r->has_content_length);
    CHECK_EQ_INT(r->content_length, 5);

    mdm_http_parser_reset(&p);
    n = mdm_http_parser_feed(&p, two + first, len - first, &done);
    CHECK(done);
    CHECK_EQ_INT(n, second);
    r = mdm_http_parser_request(&p);
    CHECK_STR(r->path, "/healthz");
    CHECK(r->query == NULL);
    CHECK_EQ_INT(r->body.len, 0);
    CHECK(r->keep_alive);

    mdm_http_parser_reset(&p);
    n = mdm_http_parser_feed(&p, two + first + second, len - first - second, &done);
    CHECK(done);
    CHECK_EQ_INT(n, len - first - second);
    r = mdm_http_parser_request(&p);
    CHECK_STR(r->path, "/any");
    CHECK_STR(r->query, "x");
    CHECK(!r->keep_alive);
    CHECK(c.route && c.route->handler == &h_any);
    mdm_http_parser_dispose(&p);

    /* The same three, byte by byte: each request ends on its own last byte. */
    CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, on_headers, &c), 0);
    size_t off = 0;
    unsigned requests = 0;
    while (off < len) {
        n = mdm_http_parser_feed(&p, two + off, 1, &done);
        CHECK_EQ_INT(n, 1);
        off++;
        if (done) {
            requests++;
            CHECK(off == first || off == first + second || off == len);
            mdm_http_parser_reset(&p);
        }
    }
    CHECK_EQ_INT(requests, 3);
    mdm_http_parser_dispose(&p);
}

static void test_content_length_split(void)
{
    static const char req[] = "PUT /zdm/mdm/checkin HTTP/1.1\r\nHost: a\r\n"
                              "Content-Type: application/x-apple-aspen-mdm-checkin\r\n"
                              "Content-Length: 26\r\n\r\n"
                              "abcdefghijklmnopqrstuvwxyz";
    for (size_t step = 1; step <= 40; step += 3) {
        struct ctx c;
        ctx_init(&c);
        mdm_http_parser_t p;
        CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, on_headers, &c), 0);
        struct fed f = feed_str(&p, req, step);
        CHECK(f.done);
        CHECK_EQ_INT(f.consumed, strlen(req));
        mdm_http_request_t *r = mdm_http_parser_request(&p);
        CHECK_STR(r->path, "/zdm/mdm/checkin");
        CHECK_EQ_INT(r->body.len, 26);
        CHECK(memcmp(mdm_buf_head(&r->body), "abcdefghijklmnopqrstuvwxyz", 26) == 0);
        CHECK_EQ_INT(c.body_len_at_cb, 0);
        mdm_http_parser_dispose(&p);
    }

    /* Headers in one feed, body in another: the first feed consumes everything. */
    struct ctx c;
    ctx_init(&c);
    mdm_http_parser_t p;
    CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, on_headers, &c), 0);
    size_t hlen = strlen(req) - 26;
    bool done = true;
    CHECK_EQ_INT(mdm_http_parser_feed(&p, req, hlen, &done), hlen);
    CHECK(!done);
    CHECK_EQ_INT(c.calls, 1); /* routed before any body byte */
    CHECK_EQ_INT(mdm_http_parser_feed(&p, req + hlen, 10, &done), 10);
    CHECK(!done);
    CHECK_EQ_INT(mdm_http_parser_feed(&p, req + hlen + 10, 16, &done), 16);
    CHECK(done);
    mdm_http_parser_dispose(&p);
}

static void test_chunked(void)
{
    static const char req[] = "POST /upload HTTP/1.1\r\nHost: a\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"
                              "5;name=value;flag\r\nhello\r\n"
                              "1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
                              "0;last=1\r\n"
                              "X-Trailer: one\r\n"
                              "X-Other: two\r\n"
                              "\r\n"
                              "GET /healthz HTTP/1.1\r\n\r\n";
    size_t first = strlen(req) - strlen("GET /healthz HTTP/1.1\r\n\r\n");
    for (size_t step = 0; step <= 9; step++) {
        struct ctx c;
        ctx_init(&c);
        mdm_http_parser_t p;
        CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, on_headers, &c), 0);
        struct fed f = feed_str(&p, req, step);
        CHECK(f.done);
        CHECK_EQ_INT(f.consumed, first);
        mdm_http_request_t *r = mdm_http_parser_request(&p);
        CHECK(r->chunked);
        CHECK(!r->has_content_length);
        CHECK_EQ_INT(r->body.len, 31);
        CHECK(memcmp(mdm_buf_head(&r->body), "helloabcdefghijklmnopqrstuvwxyz", 31) == 0);
        CHECK_EQ_INT(r->n_headers, 2); /* trailers are not headers */
        CHECK(mdm_http_request_header(r, "x-trailer") == NULL);
        CHECK_STR(mdm_http_request_header(r, "transfer-encoding"), "chunked");
        mdm_http_parser_reset(&p);
        f = feed_str(&p, req + first, step);
        CHECK(f.done);
        CHECK_STR(mdm_http_parser_request(&p)->path, "/healthz");
        mdm_http_parser_dispose(&p);
    }
}

static void test_bad_chunks(void)
{
    expect_status(NULL,
                  "POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "zz\r\nhello\r\n0\r\n\r\n",
                  0, 400, "chunk size is not hex");
    expect_status(NULL,
                  "POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\nhello\r\nq\r\n",
                  1, 400, "chunk size is not hex");
    expect_status(NULL,
                  "POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "fffffffffffffffffffff\r\n",
                  0, 400, "chunk size too large");
    /* data longer than its chunk size */
    expect_status(NULL,
                  "POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "2\r\nhello\r\n0\r\n\r\n",
                  0, 400, NULL);
    /* codings other than plain chunked */
    expect_status(NULL,
                  "POST /upload HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 0,
                  501, "unsupported transfer coding");
    expect_status(NULL, "POST /upload HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 0, 501,
                  NULL);
}

static void test_header_limits(void)
{
    struct mdm_http_limits lim = {.max_header_bytes = 256};

    /* A section of exactly 256 bytes passes, 257 does not. */
    char req[512];
    const char *head = "GET /healthz HTTP/1.1\r\nX-Fill: ";
    size_t fill = 256 - strlen(head) - 4; /* value, then "\r\n\r\n" */
    snprintf(req, sizeof(req), "%s%.*s\r\n\r\n", head, (int)fill,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    CHECK_EQ_INT(strlen(req), 256);
    for (size_t step = 0; step <= 3; step++) {
        struct ctx c;
        ctx_init(&c);
        mdm_http_parser_t p;
        CHECK_EQ_INT(mdm_http_parser_init(&p, &lim, on_headers, &c), 0);
        struct fed f = feed_str(&p, req, step);
        CHECK(f.done);
        CHECK_EQ_INT(f.consumed, 256);
        CHECK_EQ_INT(mdm_http_request_header(mdm_http_parser_request(&p), "x-fill")[0], 'a');
        mdm_http_parser_dispose(&p);
    }
    snprintf(req, sizeof(req), "%s%.*sb\r\n\r\n", head, (int)fill,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    for (size_t step = 0; step <= 3; step++)
        expect_status(&lim, req, step, 431, "header section larger than 256 bytes");

    /* A section that never ends, in small feeds: refused once it reaches the limit, having
     * consumed no more than the limit. */
    for (size_t step = 1; step <= 13; step += 4) {
        mdm_http_parser_t p;
        CHECK_EQ_INT(mdm_http_parser_init(&p, &lim, NULL, NULL), 0);
        bool done = false;
        int ret = mdm_http_parser_feed(&p, "GET / HTTP/1.1\r\n", 16, &done);
        CHECK_EQ_INT(ret, 16);
        size_t total = 16;
        static const char line[] = "X-Endless: 0123456789\r\n";
        size_t off = 0;
        for (int i = 0; i < 1000 && ret >= 0; i++) {
            size_t n = step;
            char chunk[16];
            for (size_t k = 0; k < n; k++)
                chunk[k] = line[(off + k) % (sizeof(line) - 1)];
            ret = mdm_http_parser_feed(&p, chunk, n, &done);
            if (ret >= 0) {
                CHECK_EQ_INT(ret, n);
                total += (size_t)ret;
                off += n;
            }
        }
        CHECK(ret < 0);
        CHECK_EQ_INT(ret, MDM_ETOOBIG);
        CHECK(total <= 256);
        CHECK_EQ_INT(mdm_http_parser_error_status(&p), 431);
        /* sticky */
        CHECK_EQ_INT(mdm_http_parser_feed(&p, "\r\n", 2, &done), MDM_ETOOBIG);
        mdm_http_parser_dispose(&p);
    }

    /* Leading empty lines count too. */
    char crlf[600];
    for (size_t i = 0; i < 300; i++)
        crlf[2 * i] = '\r', crlf[2 * i + 1] = '\n';
    {
        mdm_http_parser_t p;
        CHECK_EQ_INT(mdm_http_parser_init(&p, &lim, NULL, NULL), 0);
        bool done;
        CHECK_EQ_INT(mdm_http_parser_feed(&p, crlf, sizeof(crlf), &done), MDM_ETOOBIG);
        CHECK_EQ_INT(mdm_http_parser_error_status(&p), 431);
        mdm_http_parser_dispose(&p);
    }
}

static void test_header_count(void)
{
    struct mdm_http_limits lim = {.max_headers = 4};
    static const char four[] = "GET /healthz HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    static const char five[] = "GET /healthz HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
    for (size_t step = 0; step <= 2; step++) {
        mdm_http_parser_t p;
        CHECK_EQ_INT(mdm_http_parser_init(&p, &lim, NULL, NULL), 0);
        struct fed f = feed_str(&p, four, step);
        CHECK(f.done);
        CHECK_EQ_INT(mdm_http_parser_request(&p)->n_headers, 4);
        CHECK_STR(mdm_http_request_header(mdm_http_parser_request(&p), "d"), "4");
        mdm_http_parser_dispose(&p);
        expect_status(&lim, five, step, 431, "more than 4 header fields");
    }
    /* the default is 64 */
    char many[2048];
    size_t n = (size_t)snprintf(many, sizeof(many), "GET /healthz HTTP/1.1\r\n");
    for (int i = 0; i < 65; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "H%d: v\r\n", i);
    snprintf(many + n, sizeof(many) - n, "\r\n");
    expect_status(NULL, many, 0, 431, "more than 64 header fields");
}

static void test_url_limit(void)
{
    struct mdm_http_limits lim = {.max_url_bytes = 64};
    char req[256];
    /* "/any?" + 59 = 64 bytes */
    snprintf(req, sizeof(req), "GET /any?%.59s HTTP/1.1\r\n\r\n",
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    struct ctx c;
    ctx_init(&c);
    mdm_http_parser_t p;
    CHECK_EQ_INT(mdm_http_parser_init(&p, &lim, on_headers, &c), 0);
    struct fed f = feed_str(&p, req, 1);
    CHECK(f.done);
    CHECK_EQ_INT(strlen(mdm_http_parser_request(&p)->target), 64);
    CHECK_EQ_INT(strlen(mdm_http_parser_request(&p)->query), 59);
    mdm_http_parser_dispose(&p);

    snprintf(req, sizeof(req), "GET /any?%.60s HTTP/1.1\r\n\r\n",
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    expect_status(&lim, req, 0, 414, "request target longer than 64 bytes");
    expect_status(&lim, req, 1, 414, NULL);
    expect_status(&lim, req, 5, 414, NULL);
    /* default 4096, found before the end of the request line */
    char *big = malloc(5000);
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', 4994);
    big[4999] = '\0';
    expect_status(NULL, big, 0, 414, "request target longer than 4096 bytes");
    free(big);
}

static void test_body_limits(void)
{
    /* Content-Length above the route's 100 bytes: 413 from the header feed, no body byte. */
    static const char big_cl[] = "PUT /zdm/mdm/connect HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n";
    struct ctx c;
    ctx_init(&c);
    mdm_http_parser_t p;
    CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, on_headers, &c), 0);
    bool done = false;
    CHECK_EQ_INT(mdm_http_parser_feed(&p, big_cl, strlen(big_cl), &done), MDM_ETOOBIG);
    CHECK(!done);
    CHECK_EQ_INT(c.calls, 1);
    CHECK_EQ_INT(mdm_http_parser_error_status(&p), 413);
    CHECK_STR(mdm_http_parser_error_text(&p), "body of 101 bytes exceeds the limit of 100 bytes");
    mdm_http_parser_dispose(&p);

    /* exactly 100 passes */
    char ok[256];
    snprintf(ok, sizeof(ok), "PUT /zdm/mdm/connect HTTP/1.1\r\nContent-Length: 100\r\n\r\n%0100d",
             0);
    CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, on_headers, &c), 0);
    struct fed f = feed_str(&p, ok, 0);
    CHECK(f.done);
    CHECK_EQ_INT(mdm_http_parser_request(&p)->body.len, 100);
    mdm_http_parser_dispose(&p);

    /* default limit (1 MiB) when the route has none */
    expect_status(NULL, "PUT /any HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n", 0, 413, NULL);
    struct mdm_http_limits lim = {.max_body_bytes = 10};
    expect_status(&lim, "PUT /any HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 0, 413, NULL);
    expect_status(NULL, "PUT /any HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 0,
                  400, "invalid Content-Length");

    /* chunked growing past 100: refused at the chunk that crosses the limit */
    static const char chunked[] = "PUT /zdm/mdm/connect HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "32\r\n01234567890123456789012345678901234567890123456789\r\n"
                                  "32\r\n01234567890123456789012345678901234567890123456789\r\n"
                                  "1\r\nx\r\n0\r\n\r\n";
    for (size_t step = 0; step <= 5; step++)
        expect_status(NULL, chunked, step, 413, "chunked body exceeds the limit of 100 bytes");

    /* chunked framing without data: bounded on the wire (100 + 16384 bytes) */
    size_t cap = 40000, n = 0;
    char *ext = malloc(cap + 1);
    n += (size_t)snprintf(ext, cap, "PUT /zdm/mdm/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    while (n + 20 < cap)
        n += (size_t)snprintf(ext + n, cap - n, "1;ext=abcdefg\r\nx\r\n");
    ext[n] = '\0';
    expect_status(NULL, ext, 0, 413, NULL);
    /* the same through chunk extensions alone */
    n = (size_t)snprintf(ext, cap, "PUT /zdm/mdm/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1");
    while (n < cap)
        ext[n++] = ';';
    ext[n] = '\0';
    expect_status(NULL, ext, 1000, 413, "chunked body larger than 16484 bytes on the wire");
    free(ext);
}

static void test_smuggling(void)
{
    expect_status(NULL,
                  "POST /upload HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "0\r\n\r\n",
                  0, 400, "both Content-Length and Transfer-Encoding");
    expect_status(NULL,
                  "POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                  "0\r\n\r\n",
                  1, 400, "both Content-Length and Transfer-Encoding");
    expect_status(NULL,
                  "POST /upload HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                  0, 400, "duplicate Content-Length");
    expect_status(NULL,
                  "POST /upload HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\nhello!",
                  1, 400, "duplicate Content-Length");
    /* http_parser refuses even an identical repeat; that is allowed (RFC 7230 3.3.2) */
    expect_status(NULL,
                  "POST /upload HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
                  0, 400, "duplicate Content-Length");
    expect_status(NULL, "POST /upload HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello", 0, 400,
                  "invalid Content-Length");
    expect_status(NULL, "POST /upload HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 0, 400,
                  "invalid Content-Length");
    expect_status(NULL, "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0, 400,
                  "more than one Host header");
    /* obs-fold, also when the CRLF falls on a feed boundary */
    for (size_t step = 0; step <= 3; step++)
        expect_status(NULL, "GET /healthz HTTP/1.1\r\nX-A: one\r\n two\r\nHost: a\r\n\r\n", step,
                      400, "obsolete line folding in header section");
    /* what the non-strict libhttp_parser build would let through */
    expect_status(NULL, "GET /healthz HTTP/1.1\r\nHost : a\r\n\r\n", 0, 400,
                  "invalid character in header name");
    expect_status(NULL, "GET /healthz HTTP/1.1\r\nHo\"st: a\r\n\r\n", 1, 400,
                  "invalid character in header name");
    expect_status(NULL, "GET /healthz HTTP/1.1\r\nX: 1\rZY: 2\r\n\r\n", 0, 400,
                  "CR not followed by LF in header section");
    expect_status(NULL, "GET /healthz HTTP/1.1\rX: 1\r\n\r\n", 1, 400,
                  "CR not followed by LF in header section");
    expect_status(NULL, "GET /a\tb HTTP/1.1\r\n\r\n", 0, 400,
                  "invalid character in request target");
    expect_status(NULL, "GET /a\xc3\xa9 HTTP/1.1\r\n\r\n", 0, 400,
                  "invalid character in request target");
    expect_status(NULL, "GET / HTTX/1.1\r\n\r\n", 0, 400, "invalid HTTP version");
    expect_status(NULL, "GET / HTTP/1.1 \r\n\r\n", 0, 400, "invalid HTTP version");
    expect_status(NULL, "GET /healthz HTTP/1.1\r\nX-A: a\001b\r\n\r\n", 0, 400, NULL);
    expect_status(NULL, "GET /zdm/mdm/../../api HTTP/1.1\r\n\r\n", 0, 400,
                  "dot segment in request path");
    expect_status(NULL, "GET /zdm/./x HTTP/1.1\r\n\r\n", 0, 400, "dot segment in request path");
    expect_status(NULL, "GET /zdm/.. HTTP/1.1\r\n\r\n", 0, 400, NULL);
}

static void test_length_required(void)
{
    expect_status(NULL, "PUT /zdm/mdm/connect HTTP/1.1\r\nHost: a\r\n\r\n", 0, 411,
                  "PUT without Content-Length");
    expect_status(NULL, "POST /upload HTTP/1.1\r\n\r\n", 1, 411, "POST without Content-Length");
    /* HTTP/1.0: no length means no body */
    struct ctx c;
    ctx_init(&c);
    mdm_http_parser_t p;
    CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, on_headers, &c), 0);
    struct fed f = feed_str(&p, "PUT /upload HTTP/1.0\r\n\r\n", 0);
    CHECK(f.done);
    CHECK_EQ_INT(mdm_http_parser_request(&p)->body.len, 0);
    CHECK(!mdm_http_parser_request(&p)->keep_alive);
    mdm_http_parser_dispose(&p);
}

static bool keep_alive_of(const char *req)
{
    mdm_http_parser_t p;
    if (mdm_http_parser_init(&p, NULL, NULL, NULL) != 0)
        return false;
    struct fed f = feed_str(&p, req, 0);
    CHECK(f.done);
    bool ka = f.done && mdm_http_parser_request(&p)->keep_alive;
    mdm_http_parser_dispose(&p);
    return ka;
}

static void test_keep_alive(void)
{
    CHECK(keep_alive_of("GET / HTTP/1.1\r\n\r\n"));
    CHECK(!keep_alive_of("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
    CHECK(!keep_alive_of("GET / HTTP/1.1\r\nconnection: Close\r\n\r\n"));
    CHECK(!keep_alive_of("GET / HTTP/1.0\r\n\r\n"));
    CHECK(keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    CHECK(keep_alive_of("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));

    /* A websocket-style upgrade is not honoured: a plain request, and the next one parses. */
    static const char up[] = "GET /any HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                             "GET /healthz HTTP/1.1\r\n\r\n";
    mdm_http_parser_t p;
    CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, NULL, NULL), 0);
    bool done;
    int n = mdm_http_parser_feed(&p, up, strlen(up), &done);
    CHECK(done);
    CHECK_EQ_INT(n, strlen(up) - strlen("GET /healthz HTTP/1.1\r\n\r\n"));
    mdm_http_parser_reset(&p);
    CHECK_EQ_INT(mdm_http_parser_feed(&p, up + n, strlen(up) - (size_t)n, &done),
                 strlen(up) - (size_t)n);
    CHECK(done);
    CHECK_STR(mdm_http_parser_request(&p)->path, "/healthz");
    mdm_http_parser_dispose(&p);
}

static void test_garbage(void)
{
    static const char tls_hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    expect_status(NULL, tls_hello, 0, 400, "invalid request line");
    expect_status(NULL, "hello world\r\n\r\n", 0, 400, NULL);
    expect_status(NULL, "GET\r\n\r\n", 0, 400, NULL);
    expect_status(NULL, "GET / HTTP/1.1\n\rX\r\n\r\n", 0, 400,
                  "CR not followed by LF in header section");
    expect_status(NULL, "GET /a b HTTP/1.1\r\n\r\n", 0, 400, NULL);
    expect_status(NULL, "FOO / HTTP/1.1\r\n\r\n", 0, 501, "unknown method");
    expect_status(NULL, "CONNECT example.com:443 HTTP/1.1\r\n\r\n", 0, 501, NULL);
    expect_status(NULL, "GET / HTTP/2.0\r\n\r\n", 0, 505, "HTTP/2.0 is not supported");
    expect_status(NULL, "GET /\r\n\r\n", 0, 400, "invalid HTTP version"); /* HTTP/0.9 */
    expect_status(NULL, "GET / HTTP/0.9\r\n\r\n", 0, 505, NULL);
    expect_status(NULL, "GET ftp://host/x HTTP/1.1\r\n\r\n", 0, 400, "invalid request target");
    /* 404 / 405 decided by the callback stop the parse */
    expect_status(NULL, "GET /nope HTTP/1.1\r\n\r\n", 0, 404, "Not Found");
    expect_status(NULL, "DELETE /healthz HTTP/1.1\r\n\r\n", 0, 405, "Method Not Allowed");
}

static void test_targets(void)
{
    struct {
        const char *line, *path, *query;
    } cases[] = {
        {"GET /scep?operation=GetCACert&message=ca HTTP/1.1", "/scep",
         "operation=GetCACert&message=ca"},
        {"GET http://mdm.example.com:8443/zdm/mdm/x?a=b HTTP/1.1", "/zdm/mdm/x", "a=b"},
        {"GET https://mdm.example.com HTTP/1.1", "/", NULL},
        {"GET http://h?q=1 HTTP/1.1", "/", "q=1"},
        {"OPTIONS * HTTP/1.1", "*", NULL},
        {"GET /a? HTTP/1.1", "/a", ""},
        {"GET /.well-known/x HTTP/1.1", "/.well-known/x", NULL},
        {"GET /a%2F..%2Fb HTTP/1.1", "/a%2F..%2Fb", NULL}, /* raw, not decoded */
    };
    for (size_t i = 0; i < MDM_ARRAY_LEN(cases); i++) {
        char req[256];
        snprintf(req, sizeof(req), "%s\r\nHost: a\r\n\r\n", cases[i].line);
        mdm_http_parser_t p;
        CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, NULL, NULL), 0);
        struct fed f = feed_str(&p, req, i % 3);
        CHECK(f.done);
        if (f.done) {
            mdm_http_request_t *r = mdm_http_parser_request(&p);
            CHECK_STR(r->path, cases[i].path);
            if (cases[i].query)
                CHECK_STR(r->query, cases[i].query);
            else
                CHECK(r->query == NULL);
        } else {
            fprintf(stderr, "  %s -> %d %s\n", cases[i].line, mdm_http_parser_error_status(&p),
                    mdm_http_parser_error_text(&p));
        }
        mdm_http_parser_dispose(&p);
    }
}

static void test_expect_and_other_methods(void)
{
    mdm_http_parser_t p;
    CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, NULL, NULL), 0);
    struct fed f = feed_str(
        &p, "PUT /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nhi", 0);
    CHECK(f.done);
    CHECK(mdm_http_parser_request(&p)->expect_continue);
    mdm_http_parser_reset(&p);
    f = feed_str(&p, "PROPFIND /x HTTP/1.1\r\n\r\n", 0);
    CHECK(f.done);
    CHECK_EQ_INT(mdm_http_parser_request(&p)->method, MDM_HTTP_OTHER);
    CHECK_STR(mdm_http_parser_request(&p)->method_name, "PROPFIND");
    mdm_http_parser_reset(&p);
    /* a GET may carry a body with Content-Length */
    f = feed_str(&p, "GET /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 2);
    CHECK(f.done);
    CHECK_EQ_INT(mdm_http_parser_request(&p)->body.len, 3);
    /* taking the body over */
    mdm_http_request_t *r = mdm_http_parser_request(&p);
    mdm_buf_t taken = r->body;
    mdm_buf_init(&r->body, 0);
    mdm_http_parser_reset(&p);
    f = feed_str(&p, "PUT /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nok", 1);
    CHECK(f.done);
    CHECK(memcmp(mdm_buf_head(&taken), "abc", 3) == 0);
    CHECK(memcmp(mdm_buf_head(&mdm_http_parser_request(&p)->body), "ok", 2) == 0);
    mdm_buf_dispose(&taken);
    mdm_http_parser_dispose(&p);

    /* the callback may forbid any body */
    mdm_http_parser_t q;
    CHECK_EQ_INT(mdm_http_parser_init(&q, &(struct mdm_http_limits){.max_body_bytes = 1}, NULL,
                                      NULL),
                 0);
    f = feed_str(&q, "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
                 1);
    CHECK(f.ret < 0);
    CHECK_EQ_INT(mdm_http_parser_error_status(&q), 413);
    mdm_http_parser_dispose(&q);
}

/* A stream of requests cut at pseudo-random points parses the same as in one piece. */
static void test_random_splits(void)
{
    static const char stream[] =
        "\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
        "PUT /zdm/mdm/checkin HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world"
        "POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        "3;x=y\r\nabc\r\n4\r\ndefg\r\n0\r\nT: 1\r\n\r\n"
        "GET /any?q HTTP/1.1\r\nConnection: close\r\n\r\n";
    static const char *paths[] = {"/healthz", "/zdm/mdm/checkin", "/upload", "/any"};
    static const char *bodies[] = {"", "hello world", "abcdefg", ""};
    size_t len = strlen(stream);
    unsigned seed = 12345;
    for (int round = 0; round < 300; round++) {
        struct ctx c;
        ctx_init(&c);
        mdm_http_parser_t p;
        CHECK_EQ_INT(mdm_http_parser_init(&p, NULL, on_headers, &c), 0);
        size_t off = 0, pending = 0; /* bytes fed but not consumed are fed again */
        unsigned got = 0;
        bool ok = true;
        while (off < len && ok) {
            seed = seed * 1103515245u + 12345u;
            size_t n = 1 + (seed >> 16) % 40;
            if (n < pending)
                n = pending; /* a caller re-feeds at least what it still holds */
            if (n > len - off)
                n = len - off;
            bool done = false;
            int r = mdm_http_parser_feed(&p, stream + off, n, &done);
            if (r < 0) {
                ok = false;
                break;
            }
            off += (size_t)r;
            pending = n - (size_t)r;
            if (done) {
                mdm_http_request_t *req = mdm_http_parser_request(&p);
                ok = got < 4 && strcmp(req->path, paths[got]) == 0 &&
                     req->body.len == strlen(bodies[got]) &&
                     (req->body.len == 0 ||
                      memcmp(mdm_buf_head(&req->body), bodies[got], req->body.len) == 0);
                got++;
                mdm_http_parser_reset(&p);
            }
        }
        CHECK(ok);
        CHECK_EQ_INT(got, 4);
        mdm_http_parser_dispose(&p);
    }
}

/* ------------------------------------------------------------------------------------------
 * Responses
 */

/* Checks the Date line of a response and removes it, so the rest compares exactly. */
static bool strip_date(char *s)
{
    char *d = strstr(s, "\r\nDate: ");
    if (!d)
        return false;
    char *v = d + 8, *e = strstr(v, "\r\n");
    if (!e || e - v != 29 || memcmp(e - 4, " GMT", 4) != 0 || v[3] != ',')
        return false;
    memmove(d, e, strlen(e) + 1);
    return true;
}

static void test_response_writer(void)
{
    char date[30];
    CHECK_STR(mdm_http_format_date(784111777, date), "Sun, 06 Nov 1994 08:49:37 GMT");
    CHECK_STR(mdm_http_format_date(0, date), "Thu, 01 Jan 1970 00:00:00 GMT");
    CHECK_STR(mdm_http_format_date(1709251199, date), "Thu, 29 Feb 2024 23:59:59 GMT");

    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    mdm_http_header_t extra[] = {
        {"X-A", 3, "1", 1},
        {"Cache-Control", 13, "no-store", 8},
    };
    CHECK_EQ_INT(mdm_http_write_response(&out, 200, extra, 2, "application/x-plist", "hi", 2,
                                         false),
                 0);
    CHECK_EQ_INT(mdm_buf_append(&out, "", 1), 0);
    char *s = (char *)mdm_buf_head(&out);
    CHECK(strip_date(s));
    CHECK_STR(s, "HTTP/1.1 200 OK\r\n"
                 "Server: mdmd\r\n"
                 "Content-Type: application/x-plist\r\n"
                 "Content-Length: 2\r\n"
                 "Connection: close\r\n"
                 "X-A: 1\r\n"
                 "Cache-Control: no-store\r\n"
                 "\r\n"
                 "hi");

    mdm_buf_reset(&out);
    CHECK_EQ_INT(mdm_http_write_response(&out, 200, NULL, 0, NULL, NULL, 0, true), 0);
    CHECK_EQ_INT(mdm_buf_append(&out, "", 1), 0);
    s = (char *)mdm_buf_head(&out);
    CHECK(strip_date(s));
    CHECK_STR(s, "HTTP/1.1 200 OK\r\nServer: mdmd\r\nContent-Length: 0\r\n\r\n");

    mdm_buf_reset(&out);
    CHECK_EQ_INT(mdm_http_write_response(&out, 201, NULL, 0, NULL, "{}", 2, true), 0);
    CHECK_EQ_INT(mdm_buf_append(&out, "", 1), 0);
    s = (char *)mdm_buf_head(&out);
    CHECK(strip_date(s));
    CHECK_STR(s, "HTTP/1.1 201 Created\r\nServer: mdmd\r\n"
                 "Content-Type: application/octet-stream\r\nContent-Length: 2\r\n\r\n{}");

    mdm_buf_reset(&out);
    CHECK_EQ_INT(mdm_http_write_response(&out, 204, NULL, 0, NULL, NULL, 0, true), 0);
    CHECK_EQ_INT(mdm_buf_append(&out, "", 1), 0);
    s = (char *)mdm_buf_head(&out);
    CHECK(strip_date(s));
    CHECK_STR(s, "HTTP/1.1 204 No Content\r\nServer: mdmd\r\n\r\n");

    mdm_buf_reset(&out);
    CHECK_EQ_INT(mdm_http_write_error(&out, 404, "no route for /x", true), 0);
    CHECK_EQ_INT(mdm_buf_append(&out, "", 1), 0);
    s = (char *)mdm_buf_head(&out);
    CHECK(strip_date(s));
    CHECK_STR(s, "HTTP/1.1 404 Not Found\r\nServer: mdmd\r\n"
                 "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\n\r\n"
                 "no route for /x\n");

    mdm_buf_reset(&out);
    CHECK_EQ_INT(mdm_http_write_error(&out, 431, "header section larger than 16384 bytes", false),
                 0);
    CHECK_EQ_INT(mdm_buf_append(&out, "", 1), 0);
    s = (char *)mdm_buf_head(&out);
    CHECK(strip_date(s));
    CHECK_STR(s, "HTTP/1.1 431 Request Header Fields Too Large\r\nServer: mdmd\r\n"
                 "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 39\r\n"
                 "Connection: close\r\n\r\nheader section larger than 16384 bytes\n");

    mdm_buf_reset(&out);
    CHECK_EQ_INT(mdm_http_write_continue(&out), 0);
    CHECK_EQ_INT(out.len, 25);
    CHECK(memcmp(mdm_buf_head(&out), "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0);

    /* response splitting is refused and nothing is written */
    mdm_buf_reset(&out);
    mdm_http_header_t evil[] = {{"Location", 8, "/x\r\nSet-Cookie: a=b", 19}};
    CHECK_EQ_INT(mdm_http_write_response(&out, 200, evil, 1, NULL, NULL, 0, true), -EINVAL);
    CHECK_EQ_INT(mdm_http_write_response(&out, 200, NULL, 0, "text/html\r\nX: y", NULL, 0, true),
                 -EINVAL);
    CHECK_EQ_INT(out.len, 0);
    /* a full buffer leaves out unchanged */
    mdm_buf_t small;
    mdm_buf_init(&small, 64);
    CHECK_EQ_INT(mdm_buf_append(&small, "keep", 4), 0);
    CHECK_EQ_INT(mdm_http_write_response(&small, 200, NULL, 0, NULL, "0123456789", 10, true),
                 MDM_ETOOBIG);
    CHECK_EQ_INT(small.len, 4);
    mdm_buf_dispose(&small);
    mdm_buf_dispose(&out);

    int statuses[] = {200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 410,
                      411, 413, 414, 415, 429, 431, 500, 501, 503, 505};
    for (size_t i = 0; i < MDM_ARRAY_LEN(statuses); i++)
        CHECK(strcmp(mdm_http_status_text(statuses[i]), "Unknown") != 0);
    CHECK_STR(mdm_http_status_text(405), "Method Not Allowed");
    CHECK_STR(mdm_http_status_text(599), "Unknown");
}

/* ------------------------------------------------------------------------------------------
 * Router
 */

static void test_router(void)
{
    static mdm_http_router_t r; /* large: keep it off the stack */
    int a, b, c, d, e, st;
    mdm_http_router_init(&r);
    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_GET, "/healthz", &a, NULL, 0), 0);
    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_PUT, "/zdm/mdm/*", &b, &c, 4096), 0);
    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_PUT, "/zdm/mdm/checkin", &c, NULL, 0), 0);
    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_GET, "/zdm/*", &d, NULL, 0), 0);
    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_ANY, "/api/*", &e, NULL, 0), 0);
    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_HEAD, "/healthz", &a, NULL, 0), 0);

    const mdm_http_route_t *rt = mdm_http_router_match(&r, MDM_HTTP_GET, "/healthz", &st);
    CHECK(rt && rt->handler == &a && st == 0);
    rt = mdm_http_router_match(&r, MDM_HTTP_PUT, "/zdm/mdm/connect", &st);
    CHECK(rt && rt->handler == &b && rt->handler_ctx == &c && rt->max_body_bytes == 4096);
    rt = mdm_http_router_match(&r, MDM_HTTP_PUT, "/zdm/mdm", &st);
    CHECK(rt && rt->handler == &b);
    rt = mdm_http_router_match(&r, MDM_HTTP_PUT, "/zdm/mdm/a/b/c", &st);
    CHECK(rt && rt->handler == &b);
    rt = mdm_http_router_match(&r, MDM_HTTP_PUT, "/zdm/mdm/checkin", &st); /* exact wins */
    CHECK(rt && rt->handler == &c);
    rt = mdm_http_router_match(&r, MDM_HTTP_GET, "/zdm/mdm/x", &st); /* shorter prefix, GET */
    CHECK(rt && rt->handler == &d);
    rt = mdm_http_router_match(&r, MDM_HTTP_DELETE, "/api/v1/devices/1", &st);
    CHECK(rt && rt->handler == &e);

    rt = mdm_http_router_match(&r, MDM_HTTP_GET, "/nope", &st);
    CHECK(rt == NULL && st == 404);
    rt = mdm_http_router_match(&r, MDM_HTTP_PUT, "/zdmx", &st);
    CHECK(rt == NULL && st == 404);
    rt = mdm_http_router_match(&r, MDM_HTTP_GET, "/healthz/", &st);
    CHECK(rt == NULL && st == 404);
    CHECK(mdm_http_router_match(&r, MDM_HTTP_GET, "/nope", NULL) == NULL);
    rt = mdm_http_router_match(&r, MDM_HTTP_POST, "/healthz", &st);
    CHECK(rt == NULL && st == 405);
    rt = mdm_http_router_match(&r, MDM_HTTP_DELETE, "/zdm/mdm/x", &st);
    CHECK(rt == NULL && st == 405);

    char allow[64];
    CHECK_EQ_INT(mdm_http_router_allow(&r, "/healthz", allow, sizeof(allow)), 9);
    CHECK_STR(allow, "GET, HEAD");
    CHECK(mdm_http_router_allow(&r, "/zdm/mdm/x", allow, sizeof(allow)) > 0);
    CHECK_STR(allow, "GET, PUT");
    CHECK_EQ_INT(mdm_http_router_allow(&r, "/nope", allow, sizeof(allow)), 0);
    CHECK_STR(allow, "");
    CHECK(mdm_http_router_allow(&r, "/api/x", allow, sizeof(allow)) > 0);
    CHECK_STR(allow, "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");
    CHECK_EQ_INT(mdm_http_router_allow(&r, "/healthz", allow, 5), -ENOSPC);

    /* a 405 answer as the server builds it */
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    CHECK(mdm_http_router_allow(&r, "/healthz", allow, sizeof(allow)) > 0);
    mdm_http_header_t h = {"Allow", 5, allow, strlen(allow)};
    CHECK_EQ_INT(mdm_http_write_response(&out, 405, &h, 1, NULL, NULL, 0, true), 0);
    CHECK_EQ_INT(mdm_buf_append(&out, "", 1), 0);
    char *s = (char *)mdm_buf_head(&out);
    CHECK(strip_date(s));
    CHECK_STR(s, "HTTP/1.1 405 Method Not Allowed\r\nServer: mdmd\r\nContent-Length: 0\r\n"
                 "Allow: GET, HEAD\r\n\r\n");
    mdm_buf_dispose(&out);

    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_GET, "/healthz", &a, NULL, 0), -EEXIST);
    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_GET, "healthz", &a, NULL, 0), -EINVAL);
    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_GET, "/a*", &a, NULL, 0), -EINVAL);
    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_GET, "/a/*/b", &a, NULL, 0), -EINVAL);
    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_OTHER, "/a", &a, NULL, 0), -EINVAL);
    char longp[MDM_HTTP_PATTERN_MAX + 1];
    memset(longp, 'a', sizeof(longp));
    longp[0] = '/';
    longp[MDM_HTTP_PATTERN_MAX] = '\0';
    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_GET, longp, &a, NULL, 0), -ENAMETOOLONG);
    int ret = 0;
    for (unsigned i = r.n_routes; i < MDM_HTTP_ROUTES_MAX && ret == 0; i++) {
        char pat[32];
        snprintf(pat, sizeof(pat), "/r%u", i);
        ret = mdm_http_router_add(&r, MDM_HTTP_GET, pat, &a, NULL, 0);
    }
    CHECK_EQ_INT(ret, 0);
    CHECK_EQ_INT(mdm_http_router_add(&r, MDM_HTTP_GET, "/one-more", &a, NULL, 0), -ENOSPC);
    CHECK_STR(mdm_http_method_name(MDM_HTTP_PATCH), "PATCH");
}

static void test_url_encoded(void)
{
    char out[16];
    CHECK_EQ_INT(mdm_http_percent_decode("a%20b+c", 7, true, out, sizeof(out)), 5);
    CHECK_STR(out, "a b c");
    CHECK_EQ_INT(mdm_http_percent_decode("a+b%2B", 6, false, out, sizeof(out)), 4);
    CHECK_STR(out, "a+b+");
    CHECK_EQ_INT(mdm_http_percent_decode("", 0, true, out, sizeof(out)), 0);
    CHECK_STR(out, "");
    CHECK_EQ_INT(mdm_http_percent_decode("%4", 2, true, out, sizeof(out)), -1);  /* truncated */
    CHECK_EQ_INT(mdm_http_percent_decode("%zz", 3, true, out, sizeof(out)), -1); /* not hex */
    CHECK_EQ_INT(mdm_http_percent_decode("a%00b", 5, true, out, sizeof(out)), -1); /* NUL */
    CHECK_EQ_INT(mdm_http_percent_decode("0123456789abcdef", 16, true, out, sizeof(out)), -1);
    CHECK_EQ_INT(mdm_http_percent_decode("0123456789abcde", 15, true, out, sizeof(out)), 15);

    const char *v;
    size_t vlen;
    const char list[] = "userx=1&user=a%40b&flag&empty=&user=second";
    CHECK(mdm_http_param_find(list, sizeof(list) - 1, "user", &v, &vlen));
    CHECK(vlen == 5 && memcmp(v, "a%40b", 5) == 0); /* not "userx", the first "user" */
    CHECK(mdm_http_param_find(list, sizeof(list) - 1, "flag", &v, &vlen) && vlen == 0);
    CHECK(mdm_http_param_find(list, sizeof(list) - 1, "empty", &v, &vlen) && vlen == 0);
    CHECK(!mdm_http_param_find(list, sizeof(list) - 1, "use", &v, &vlen));
    CHECK(!mdm_http_param_find(list, sizeof(list) - 1, "nope", &v, &vlen));
    CHECK(!mdm_http_param_find(NULL, 0, "user", &v, &vlen));
    /* the length bounds the search: "user=a" cut before its value's end */
    CHECK(mdm_http_param_find("user=abc", 6, "user", &v, &vlen) && vlen == 1);
}

int main(void)
{
    test_simple_get();
    test_pipelined();
    test_content_length_split();
    test_chunked();
    test_bad_chunks();
    test_header_limits();
    test_header_count();
    test_url_limit();
    test_body_limits();
    test_smuggling();
    test_length_required();
    test_keep_alive();
    test_garbage();
    test_targets();
    test_expect_and_other_methods();
    test_random_splits();
    test_response_writer();
    test_router();
    test_url_encoded();
    return check_finish("http");
}
