/*
 * HTTP/1.1 server side, sans-I/O (see http.h).
 *
 * Design: http_parser does the syntax (request line, header tokens, chunk framing, the
 * Content-Length/Transfer-Encoding conflicts); this file adds what a server needs around it.
 *  - Debian builds libhttp_parser with HTTP_PARSER_STRICT=0, which accepts "HTTX/1.1", a
 *    space inside header names ("Host : x") and any byte after a CR. Before http_parser sees
 *    a byte of the header section, scan_header_bytes() checks the line structure strictly:
 *    every CR followed by LF, the request line ending in " HTTP/d.d", header names made of
 *    token characters up to the colon, no continuation lines (obs-fold). It stops at the
 *    empty line, so body bytes are never scanned. Request-target bytes are checked in
 *    on_url (visible ASCII only). Chunk framing stays with http_parser, leniency included
 *    (it takes any two bytes as the CRLF after chunk data): checking it again here would
 *    mean a second chunked parser.
 *  - exactly one request per feed: on_message_complete pauses the parser, so the count
 *    http_parser_execute returns is the exact end of the request and pipelined bytes stay
 *    with the caller;
 *  - exact header-section accounting across feeds: until the header section ends, at most
 *    (max_header_bytes - bytes so far) bytes are handed to http_parser, so a section that
 *    never ends fails as soon as it reaches the limit; on_headers_complete pauses too, which
 *    tells where the section ended (at the final LF, which the resumed parser re-reads);
 *  - header fragments (split across feeds) are copied into a per-parser arena allocated at
 *    init and sized from the limits: everything stored is a subset of the header section
 *    plus one NUL per string, so the arena never grows;
 *  - routing happens in on_headers_complete through the caller's callback, before any body
 *    byte, which is where 404/405/411/413 are decided;
 *  - a chunked body is bounded twice: decoded bytes by the route limit, bytes on the wire
 *    (chunk sizes, extensions, trailers) by route limit + max_header_bytes.
 * http_parser error codes are mapped to HTTP statuses in one place, map_parser_error().
 *
 * Invariants: _status != 0 iff the parser failed (sticky until reset); _complete implies
 * _headers_done; _arena_len <= _arena_cap. A parser is used by the one thread owning its
 * connection; the router is read-only after startup.
 */
#include "core/http.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum scan_state {
    SCAN_LEAD,       /* empty lines before the request line (http_parser skips them) */
    SCAN_REQLINE,    /* inside the request line */
    SCAN_LINE_START, /* first byte of a header line, or the empty line */
    SCAN_NAME,       /* header name, up to the colon */
    SCAN_VALUE,      /* header value, up to the line end */
    SCAN_DONE,       /* past the empty line: the rest is body */
};

enum hdr_state {
    HDR_NONE,  /* no header yet: still in the request-target */
    HDR_FIELD, /* accumulating the name of _headers[n_headers] */
    HDR_VALUE, /* accumulating its value */
};

/* ------------------------------------------------------------------------------------------
 * Helpers
 */

static bool ascii_ieq(const char *a, size_t a_len, const char *b)
{
    size_t b_len = strlen(b);
    return a_len == b_len && strncasecmp(a, b, a_len) == 0;
}

/* Records the first failure (later ones are consequences) and returns -1, the value that
 * makes http_parser stop from inside a callback. */
__attribute__((format(printf, 4, 5))) static int fail(mdm_http_parser_t *p, int status, int err,
                                                     const char *fmt, ...)
{
    if (p->_status == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->_error_text, sizeof(p->_error_text), fmt, ap);
        va_end(ap);
        p->_status = status;
        p->_err = err;
    }
    return -1;
}

static int arena_put(mdm_http_parser_t *p, const char *s, size_t n)
{
    /* Cannot happen with the sizing in init; kept as a guard rather than an assert because
     * the bound depends on http_parser's callback behaviour. */
    if (n > p->_arena_cap - p->_arena_len)
        return fail(p, 431, MDM_ETOOBIG, "header section larger than %zu bytes",
                    p->_lim.max_header_bytes);
    if (n)
        memcpy(p->_arena + p->_arena_len, s, n);
    p->_arena_len += n;
    return 0;
}

static enum mdm_http_method map_method(unsigned m)
{
    switch ((enum http_method)m) {
    case HTTP_GET: return MDM_HTTP_GET;
    case HTTP_HEAD: return MDM_HTTP_HEAD;
    case HTTP_POST: return MDM_HTTP_POST;
    case HTTP_PUT: return MDM_HTTP_PUT;
    case HTTP_DELETE: return MDM_HTTP_DELETE;
    case HTTP_PATCH: return MDM_HTTP_PATCH;
    case HTTP_OPTIONS: return MDM_HTTP_OPTIONS;
    default: return MDM_HTTP_OTHER;
    }
}

const char *mdm_http_method_name(enum mdm_http_method m)
{
    switch (m) {
    case MDM_HTTP_ANY: return "*";
    case MDM_HTTP_GET: return "GET";
    case MDM_HTTP_HEAD: return "HEAD";
    case MDM_HTTP_POST: return "POST";
    case MDM_HTTP_PUT: return "PUT";
    case MDM_HTTP_DELETE: return "DELETE";
    case MDM_HTTP_PATCH: return "PATCH";
    case MDM_HTTP_OPTIONS: return "OPTIONS";
    case MDM_HTTP_OTHER: return "OTHER";
    }
    return "OTHER";
}

const char *mdm_http_request_header(const mdm_http_request_t *r, const char *name)
{
    assert(r && name);
    for (unsigned i = 0; i < r->n_headers; i++)
        if (ascii_ieq(r->headers[i].name, r->headers[i].name_len, name))
            return r->headers[i].value;
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * http_parser callbacks
 */

static int on_url(http_parser *hp, const char *at, size_t len)
{
    mdm_http_parser_t *p = hp->data;
    if (len > p->_lim.max_url_bytes - p->_url_len)
        return fail(p, 414, MDM_ETOOBIG, "request target longer than %zu bytes",
                    p->_lim.max_url_bytes);
    /* non-strict http_parser lets TAB, FF and bytes >= 0x80 through (RFC 3986: none) */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)at[i] <= 0x20 || (unsigned char)at[i] >= 0x7f)
            return fail(p, 400, MDM_EHTTP, "invalid character in request target");
    if (arena_put(p, at, len) != 0)
        return -1;
    p->_url_len += len;
    return 0;
}

static int close_url(mdm_http_parser_t *p)
{
    if (p->_url_closed)
        return 0;
    p->_url_closed = true;
    p->_req.target = p->_arena; /* the target is stored first, at offset 0 */
    return arena_put(p, "", 1);
}

/* Completes _headers[n_headers]: trims trailing whitespace, NUL-terminates the value. */
static int finish_header(mdm_http_parser_t *p)
{
    mdm_http_header_t *h = &p->_headers[p->_req.n_headers];
    if (arena_put(p, "", 1) != 0)
        return -1;
    char *v = p->_arena + (h->value - p->_arena); /* writable: the arena is ours */
    while (h->value_len > 0 && (v[h->value_len - 1] == ' ' || v[h->value_len - 1] == '\t'))
        v[--h->value_len] = '\0';
    p->_req.n_headers++;
    p->_hdr_state = HDR_NONE;
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    mdm_http_parser_t *p = hp->data;
    if (p->_headers_done)
        return 0; /* a trailer of a chunked body: bounded by the wire limit, not kept */
    if (p->_hdr_state != HDR_FIELD) {
        if (p->_hdr_state == HDR_VALUE && finish_header(p) != 0)
            return -1;
        if (close_url(p) != 0)
            return -1;
        if (p->_req.n_headers >= p->_lim.max_headers)
            return fail(p, 431, MDM_ETOOBIG, "more than %u header fields", p->_lim.max_headers);
        mdm_http_header_t *h = &p->_headers[p->_req.n_headers];
        h->name = p->_arena + p->_arena_len;
        h->name_len = 0;
        h->value = NULL;
        h->value_len = 0;
        p->_hdr_state = HDR_FIELD;
    }
    if (arena_put(p, at, len) != 0)
        return -1;
    p->_headers[p->_req.n_headers].name_len += len;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    mdm_http_parser_t *p = hp->data;
    if (p->_headers_done)
        return 0;
    assert(p->_hdr_state != HDR_NONE);
    mdm_http_header_t *h = &p->_headers[p->_req.n_headers];
    if (p->_hdr_state == HDR_FIELD) {
        if (arena_put(p, "", 1) != 0) /* NUL after the name */
            return -1;
        h->value = p->_arena + p->_arena_len;
        h->value_len = 0;
        p->_hdr_state = HDR_VALUE;
        if (ascii_ieq(h->name, h->name_len, "transfer-encoding"))
            p->_saw_te = true;
        else if (ascii_ieq(h->name, h->name_len, "content-length"))
            p->_saw_cl = true;
    }
    if (arena_put(p, at, len) != 0)
        return -1;
    h->value_len += len;
    return 0;
}

/* Splits the target into path and query (copied, NUL-terminated). Accepts origin-form
 * ("/p?q"), absolute-form ("http://host/p?q") and "*"; refuses dot segments. */
static int split_target(mdm_http_parser_t *p)
{
    const char *t = p->_req.target;
    size_t n = p->_url_len;
    const char *end = memchr(t, '#', n); /* a fragment is not sent, but tolerate one */
    if (end)
        n = (size_t)(end - t);

    const char *path = t;
    size_t path_len;
    if (n >= 1 && t[0] == '/') {
        /* origin-form */
    } else if (n == 1 && t[0] == '*') {
        /* asterisk-form (OPTIONS *) */
    } else {
        const char *sep = memchr(t, ':', n);
        if (!sep || (size_t)(sep - t) + 3 > n || sep[1] != '/' || sep[2] != '/' ||
            !(ascii_ieq(t, (size_t)(sep - t), "http") || ascii_ieq(t, (size_t)(sep - t), "https")))
            return fail(p, 400, MDM_EHTTP, "invalid request target");
        const char *auth = sep + 3;
        const char *slash = memchr(auth, '/', n - (size_t)(auth - t));
        const char *qm = memchr(auth, '?', n - (size_t)(auth - t));
        if (slash && qm && qm < slash)
            slash = NULL;
        path = slash ? slash : "/";
        if (!slash) {
            /* "http://host" or "http://host?q": path "/", query after '?' */
            if (arena_put(p, "/", 2) != 0)
                return -1;
            p->_req.path = p->_arena + p->_arena_len - 2;
            if (qm) {
                p->_req.query = p->_arena + p->_arena_len;
                if (arena_put(p, qm + 1, (size_t)(t + n - qm - 1)) != 0 || arena_put(p, "", 1))
                    return -1;
            }
            return 0;
        }
        n -= (size_t)(path - t);
    }
    const char *qm = memchr(path, '?', n);
    path_len = qm ? (size_t)(qm - path) : n;

    /* "." and ".." segments: no client has a reason to send them, and refusing them keeps a
     * prefix route from being escaped ("/zdm/mdm/../api"). */
    for (size_t i = 0; i < path_len;) {
        size_t j = i + 1;
        while (j < path_len && path[j] != '/')
            j++;
        size_t seg = j - i - 1; /* bytes after the '/' at i */
        if (path[i] == '/' && ((seg == 1 && path[i + 1] == '.') ||
                               (seg == 2 && path[i + 1] == '.' && path[i + 2] == '.')))
            return fail(p, 400, MDM_EHTTP, "dot segment in request path");
        i = j;
    }

    p->_req.path = p->_arena + p->_arena_len;
    if (arena_put(p, path, path_len) != 0 || arena_put(p, "", 1) != 0)
        return -1;
    if (qm) {
        p->_req.query = p->_arena + p->_arena_len;
        if (arena_put(p, qm + 1, n - path_len - 1) != 0 || arena_put(p, "", 1) != 0)
            return -1;
    }
    return 0;
}

static bool is_tchar(unsigned char c)
{
    /* RFC 7230 3.2.6 token characters */
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Strict line-structure check of header-section bytes before http_parser reads them (see
 * the top comment). State persists across feeds; stops at the end of the section. */
static int scan_header_bytes(mdm_http_parser_t *p, const char *in, size_t n)
{
    for (size_t i = 0; i < n && p->_scan != SCAN_DONE; i++) {
        unsigned char c = (unsigned char)in[i];
        if (p->_scan_cr) {
            if (c != '\n')
                return fail(p, 400, MDM_EHTTP, "CR not followed by LF in header section");
            p->_scan_cr = false;
        } else if (c == '\r') {
            if (p->_scan == SCAN_NAME)
                return fail(p, 400, MDM_EHTTP, "invalid character in header name");
            p->_scan_cr = true;
            continue;
        }
        switch ((enum scan_state)p->_scan) {
        case SCAN_LEAD:
            if (c == '\n')
                break;
            p->_scan = SCAN_REQLINE;
            /* fall through */
        case SCAN_REQLINE:
            if (c != '\n') {
                memmove(p->_rl_tail, p->_rl_tail + 1, sizeof(p->_rl_tail) - 1);
                p->_rl_tail[sizeof(p->_rl_tail) - 1] = (char)c;
                p->_rl_len++;
                break;
            }
            {
                const char *t = p->_rl_tail;
                if (p->_rl_len < sizeof(p->_rl_tail) || memcmp(t, " HTTP/", 6) != 0 ||
                    t[6] < '0' || t[6] > '9' || t[7] != '.' || t[8] < '0' || t[8] > '9')
                    return fail(p, 400, MDM_EHTTP, "invalid HTTP version");
            }
            p->_scan = SCAN_LINE_START;
            break;
        case SCAN_LINE_START:
            if (c == '\n') {
                p->_scan = SCAN_DONE;
                break;
            }
            if (c == ' ' || c == '\t')
                return fail(p, 400, MDM_EHTTP, "obsolete line folding in header section");
            if (!is_tchar(c))
                return fail(p, 400, MDM_EHTTP, "invalid character in header name");
            p->_scan = SCAN_NAME;
            break;
        case SCAN_NAME:
            if (c == ':')
                p->_scan = SCAN_VALUE;
            else if (!is_tchar(c))
                return fail(p, 400, MDM_EHTTP, "invalid character in header name");
            break;
        case SCAN_VALUE:
            if (c == '\n')
                p->_scan = SCAN_LINE_START;
            break;
        case SCAN_DONE:
            break;
        }
    }
    return 0;
}

static bool method_needs_length(enum mdm_http_method m)
{
    return m == MDM_HTTP_POST || m == MDM_HTTP_PUT || m == MDM_HTTP_PATCH;
}

static int on_headers_complete(http_parser *hp)
{
    mdm_http_parser_t *p = hp->data;
    mdm_http_request_t *r = &p->_req;

    if (p->_hdr_state == HDR_VALUE && finish_header(p) != 0)
        return -1;
    if (close_url(p) != 0)
        return -1;

    r->method = map_method(hp->method);
    r->method_name = http_method_str((enum http_method)hp->method);
    r->http_major = hp->http_major;
    r->http_minor = hp->http_minor;
    if (hp->http_major != 1)
        return fail(p, 505, MDM_EHTTP, "HTTP/%u.%u is not supported", hp->http_major,
                    hp->http_minor);
    if (hp->method == HTTP_CONNECT)
        return fail(p, 501, MDM_EHTTP, "CONNECT is not supported");
    if (split_target(p) != 0)
        return -1;

    unsigned n_host = 0, n_te = 0;
    const char *te = NULL, *expect = NULL;
    for (unsigned i = 0; i < r->n_headers; i++) {
        const mdm_http_header_t *h = &r->headers[i];
        if (ascii_ieq(h->name, h->name_len, "host"))
            n_host++;
        else if (ascii_ieq(h->name, h->name_len, "transfer-encoding"))
            n_te++, te = h->value;
        else if (ascii_ieq(h->name, h->name_len, "expect"))
            expect = h->value;
    }
    if (n_host > 1)
        return fail(p, 400, MDM_EHTTP, "more than one Host header");
    /* http_parser accepts codings such as "gzip, chunked"; mdmd decodes only chunked. */
    if (n_te > 1 || (n_te == 1 && strcasecmp(te, "chunked") != 0))
        return fail(p, 501, MDM_EHTTP, "unsupported transfer coding");

    r->chunked = (hp->flags & F_CHUNKED) != 0;
    r->has_content_length = (hp->flags & F_CONTENTLENGTH) != 0;
    r->content_length = r->has_content_length ? hp->content_length : 0;
    r->keep_alive = http_should_keep_alive(hp) != 0;
    r->expect_continue = expect && strcasecmp(expect, "100-continue") == 0;
    r->head = false; /* set by a server that maps HEAD onto GET */

    /* RFC 7230 3.3.3: a request without either has no body, which for these methods almost
     * always means a client that streams; HTTP/1.0 clients cannot send chunked. */
    if (method_needs_length(r->method) && !r->chunked && !r->has_content_length &&
        (r->http_major > 1 || r->http_minor >= 1))
        return fail(p, 411, MDM_EHTTP, "%s without Content-Length", r->method_name);

    size_t max_body = p->_lim.max_body_bytes;
    if (p->_on_headers) {
        int status = p->_on_headers(p->_ctx, r, &max_body);
        if (status != 0) {
            assert(status >= 400 && status <= 599);
            return fail(p, status, MDM_EHTTP, "%s", mdm_http_status_text(status));
        }
    }
    p->_max_body = max_body;
    if (r->has_content_length && r->content_length > max_body)
        return fail(p, 413, MDM_ETOOBIG, "body of %llu bytes exceeds the limit of %zu bytes",
                    (unsigned long long)r->content_length, max_body);
    mdm_buf_reset(&r->body);
    r->body.max = max_body ? max_body : 1; /* 0 would mean unlimited; on_body checks first */
    if (r->has_content_length && r->content_length > 0) {
        /* Reserve up front, but only what a peer cannot use to pin memory without sending
         * anything; larger bodies grow as they arrive. */
        size_t want = r->content_length < 65536 ? (size_t)r->content_length : 65536;
        int ret = mdm_buf_reserve(&r->body, want);
        if (ret != 0)
            return fail(p, 500, ret, "cannot allocate a body of %llu bytes",
                        (unsigned long long)r->content_length);
    }
    p->_headers_done = true;
    /* Stop here so feed() learns where the header section ends (see the top comment). */
    http_parser_pause(hp, 1);
    return 0;
}

static int on_chunk_header(http_parser *hp)
{
    mdm_http_parser_t *p = hp->data;
    /* The chunk size is in content_length: refuse before its data arrives. */
    if (hp->content_length > p->_max_body - p->_req.body.len)
        return fail(p, 413, MDM_ETOOBIG, "chunked body exceeds the limit of %zu bytes",
                    p->_max_body);
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    mdm_http_parser_t *p = hp->data;
    if (len > p->_max_body - p->_req.body.len)
        return fail(p, 413, MDM_ETOOBIG, "body exceeds the limit of %zu bytes", p->_max_body);
    int ret = mdm_buf_append(&p->_req.body, at, len);
    if (ret == MDM_ETOOBIG)
        return fail(p, 413, MDM_ETOOBIG, "body exceeds the limit of %zu bytes", p->_max_body);
    if (ret != 0)
        return fail(p, 500, ret, "cannot grow the request body");
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    mdm_http_parser_t *p = hp->data;
    assert(p->_headers_done);
    p->_complete = true;
    http_parser_pause(hp, 1); /* one request per feed: pipelined bytes stay unread */
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

/* The one place where http_parser errors become HTTP statuses. bad points at the byte
 * http_parser refused (NULL when unknown). */
static int map_parser_error(mdm_http_parser_t *p, enum http_errno e, const char *bad)
{
    switch (e) {
    case HPE_HEADER_OVERFLOW:
        return fail(p, 431, MDM_ETOOBIG, "header section larger than %u bytes",
                    MDM_HTTP_MAX_HEADER_BYTES_CAP);
    case HPE_INVALID_METHOD:
        /* An upper-case token http_parser does not know is a method we do not implement;
         * anything else (a TLS ClientHello on the plaintext port, ...) is garbage. */
        if (bad && *bad >= 'A' && *bad <= 'Z')
            return fail(p, 501, MDM_EHTTP, "unknown method");
        return fail(p, 400, MDM_EHTTP, "invalid request line");
    case HPE_INVALID_VERSION:
        return fail(p, 400, MDM_EHTTP, "invalid HTTP version");
    case HPE_INVALID_URL:
    case HPE_INVALID_HOST:
    case HPE_INVALID_PORT:
    case HPE_INVALID_PATH:
    case HPE_INVALID_QUERY_STRING:
    case HPE_INVALID_FRAGMENT:
        return fail(p, 400, MDM_EHTTP, "invalid request target");
    case HPE_LF_EXPECTED:
    case HPE_STRICT:
        return fail(p, 400, MDM_EHTTP, p->_headers_done ? "malformed chunked framing"
                                                        : "malformed line ending");
    case HPE_INVALID_CONSTANT:
        return fail(p, 400, MDM_EHTTP, "invalid request line");
    case HPE_INVALID_HEADER_TOKEN:
        return fail(p, 400, MDM_EHTTP, p->_headers_done ? "invalid character in trailer"
                                                        : "invalid character in header");
    case HPE_INVALID_CONTENT_LENGTH:
        /* http_parser reports chunk-size overflow with this code too */
        return fail(p, 400, MDM_EHTTP, p->_headers_done ? "chunk size too large"
                                                        : "invalid Content-Length");
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        /* http_parser refuses any second Content-Length, and Content-Length together with
         * Transfer-Encoding (RFC 7230 3.3.3, request smuggling). */
        if (p->_hdr_state == HDR_FIELD || !p->_saw_te)
            return fail(p, 400, MDM_EHTTP, "duplicate Content-Length");
        return fail(p, 400, MDM_EHTTP, "both Content-Length and Transfer-Encoding");
    case HPE_INVALID_CHUNK_SIZE:
        return fail(p, 400, MDM_EHTTP, "chunk size is not hex");
    case HPE_INVALID_TRANSFER_ENCODING:
        return fail(p, 400, MDM_EHTTP, "Transfer-Encoding does not end with chunked");
    case HPE_CLOSED_CONNECTION:
        return fail(p, 400, MDM_EHTTP, "data after the last request");
    default:
        /* callback failures carry their own status (fail() keeps the first); the rest are
         * http_parser internals */
        return fail(p, 400, MDM_EHTTP, "malformed request (%s)", http_errno_name(e));
    }
}

/* ------------------------------------------------------------------------------------------
 * Parser API
 */

static void clear_request(mdm_http_parser_t *p)
{
    mdm_buf_t body = p->_req.body;
    mdm_buf_reset(&body);
    memset(&p->_req, 0, sizeof(p->_req));
    p->_req.body = body;
    p->_req.headers = p->_headers;
    p->_req.path = "";
    p->_req.target = "";
    p->_req.method_name = "";

    http_parser_init(&p->_hp, HTTP_REQUEST);
    p->_hp.data = p;
    p->_arena_len = 0;
    p->_url_len = 0;
    p->_hdr_bytes = 0;
    p->_body_wire = 0;
    p->_max_body = p->_lim.max_body_bytes;
    p->_hdr_state = HDR_NONE;
    p->_scan = SCAN_LEAD;
    p->_rl_len = 0;
    memset(p->_rl_tail, 0, sizeof(p->_rl_tail));
    p->_scan_cr = false;
    p->_url_closed = false;
    p->_headers_done = false;
    p->_complete = false;
    p->_saw_te = p->_saw_cl = false;
    p->_status = 0;
    p->_err = 0;
    p->_error_text[0] = '\0';
}

int mdm_http_parser_init(mdm_http_parser_t *p, const struct mdm_http_limits *lim,
                         mdm_http_headers_cb on_headers, void *ctx)
{
    assert(p);
    memset(p, 0, sizeof(*p));
    struct mdm_http_limits l = lim ? *lim : (struct mdm_http_limits){0};
    if (l.max_header_bytes == 0)
        l.max_header_bytes = MDM_HTTP_DEFAULT_MAX_HEADER_BYTES;
    if (l.max_header_bytes > MDM_HTTP_MAX_HEADER_BYTES_CAP)
        l.max_header_bytes = MDM_HTTP_MAX_HEADER_BYTES_CAP;
    if (l.max_url_bytes == 0)
        l.max_url_bytes = MDM_HTTP_DEFAULT_MAX_URL_BYTES;
    if (l.max_url_bytes > MDM_HTTP_MAX_URL_BYTES_CAP)
        l.max_url_bytes = MDM_HTTP_MAX_URL_BYTES_CAP;
    if (l.max_body_bytes == 0)
        l.max_body_bytes = MDM_HTTP_DEFAULT_MAX_BODY_BYTES;
    if (l.max_headers == 0)
        l.max_headers = MDM_HTTP_DEFAULT_MAX_HEADERS;
    p->_lim = l;
    p->_on_headers = on_headers;
    p->_ctx = ctx;

    /* Arena: every stored byte of the target, names and values is a header-section byte
     * (max_header_bytes), plus one NUL per name and value (2 * max_headers), the target's
     * NUL (1), the path copy with NUL (max_url_bytes + 2, "/" when absent) and the query
     * copy with NUL (max_url_bytes + 1). */
    p->_arena_cap = l.max_header_bytes + 2 * (size_t)l.max_headers + 1 +
                    (l.max_url_bytes + 2) + (l.max_url_bytes + 1);
    p->_arena = malloc(p->_arena_cap);
    p->_headers = calloc(l.max_headers, sizeof(*p->_headers));
    if (!p->_arena || !p->_headers) {
        mdm_http_parser_dispose(p);
        return -ENOMEM;
    }
    mdm_buf_init(&p->_req.body, l.max_body_bytes);
    clear_request(p);
    return 0;
}

void mdm_http_parser_dispose(mdm_http_parser_t *p)
{
    assert(p);
    mdm_buf_dispose(&p->_req.body);
    free(p->_arena);
    free(p->_headers);
    memset(p, 0, sizeof(*p));
}

void mdm_http_parser_reset(mdm_http_parser_t *p)
{
    assert(p && p->_arena);
    clear_request(p);
}

int mdm_http_parser_feed(mdm_http_parser_t *p, const void *data, size_t len, bool *done)
{
    assert(p && p->_arena && (data || len == 0) && done && len <= INT_MAX);
    *done = false;
    if (p->_status != 0)
        return p->_err;
    assert(!p->_complete && "reset the parser before feeding the next request");

    const char *in = data;
    size_t off = 0;
    while (off < len) {
        size_t n = len - off;
        bool in_headers = !p->_headers_done;
        if (in_headers && n > p->_lim.max_header_bytes - p->_hdr_bytes)
            n = p->_lim.max_header_bytes - p->_hdr_bytes;
        assert(n > 0);
        if (in_headers && scan_header_bytes(p, in + off, n) != 0)
            return p->_err;
        size_t got = http_parser_execute(&p->_hp, &parser_settings, in + off, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&p->_hp);

        if (e == HPE_PAUSED) {
            http_parser_pause(&p->_hp, 0);
            if (p->_complete) {
                /* got includes the request's last byte; it may be in a header slice (no
                 * body) or a body slice */
                *done = true;
                return (int)(off + got);
            }
            /* Paused by on_headers_complete, positioned on the final LF of the section:
             * got bytes precede it. The resumed parser re-reads that LF. */
            assert(in_headers && p->_headers_done && got < n && in[off + got] == '\n');
            p->_hdr_bytes += got + 1;
            p->_body_wire = 0;
            off += got;
            /* the LF is counted in the header section, not on the wire of the body */
            size_t more = len - off;
            got = http_parser_execute(&p->_hp, &parser_settings, in + off, more);
            e = HTTP_PARSER_ERRNO(&p->_hp);
            if (e == HPE_PAUSED) {
                http_parser_pause(&p->_hp, 0);
                assert(p->_complete);
                *done = true;
                return (int)(off + got);
            }
            if (e != HPE_OK) {
                map_parser_error(p, e, got < more ? in + off + got : NULL);
                return p->_err;
            }
            p->_body_wire += got - 1;
            off += got;
        } else if (e != HPE_OK) {
            map_parser_error(p, e, got < n ? in + off + got : NULL);
            return p->_err;
        } else {
            assert(got == n);
            if (in_headers) {
                p->_hdr_bytes += got;
                if (p->_hdr_bytes >= p->_lim.max_header_bytes) {
                    /* the section did not end within the limit */
                    fail(p, 431, MDM_ETOOBIG, "header section larger than %zu bytes",
                         p->_lim.max_header_bytes);
                    return p->_err;
                }
            } else {
                p->_body_wire += got;
            }
            off += got;
        }
        if (p->_req.chunked) {
            uint64_t wire_max = (uint64_t)p->_max_body + p->_lim.max_header_bytes;
            if (wire_max < p->_max_body) /* a callback may raise the limit to SIZE_MAX */
                wire_max = UINT64_MAX;
            if (p->_body_wire > wire_max) {
                fail(p, 413, MDM_ETOOBIG,
                     "chunked body larger than %llu bytes on the wire",
                     (unsigned long long)wire_max);
                return p->_err;
            }
        }
    }
    return (int)off;
}

mdm_http_request_t *mdm_http_parser_request(mdm_http_parser_t *p)
{
    assert(p && p->_complete);
    return &p->_req;
}

bool mdm_http_parser_in_progress(const mdm_http_parser_t *p)
{
    return p->_hdr_bytes > 0 || p->_headers_done;
}

bool mdm_http_parser_in_body(const mdm_http_parser_t *p)
{
    return p->_headers_done && !p->_complete;
}

int mdm_http_parser_error_status(const mdm_http_parser_t *p)
{
    return p->_status;
}

const char *mdm_http_parser_error_text(const mdm_http_parser_t *p)
{
    return p->_error_text;
}

/* ------------------------------------------------------------------------------------------
 * Responses
 */

const char *mdm_http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

char *mdm_http_format_date(time_t t, char out[30])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        memset(&tm, 0, sizeof(tm));
    /* By hand: strftime's %a and %b follow the locale. */
    unsigned year = (unsigned)(tm.tm_year + 1900) % 10000u;
    unsigned f[] = {(unsigned)tm.tm_mday % 100u, (unsigned)tm.tm_hour % 100u,
                    (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u};
    memcpy(out, days[(unsigned)tm.tm_wday % 7u], 3);
    memcpy(out + 3, ", ", 2);
    out[5] = (char)('0' + f[0] / 10), out[6] = (char)('0' + f[0] % 10), out[7] = ' ';
    memcpy(out + 8, months[(unsigned)tm.tm_mon % 12u], 3);
    out[11] = ' ';
    out[12] = (char)('0' + year / 1000), out[13] = (char)('0' + year / 100 % 10);
    out[14] = (char)('0' + year / 10 % 10), out[15] = (char)('0' + year % 10), out[16] = ' ';
    for (int i = 0; i < 3; i++) {
        out[17 + 3 * i] = (char)('0' + f[1 + i] / 10);
        out[18 + 3 * i] = (char)('0' + f[1 + i] % 10);
        out[19 + 3 * i] = i < 2 ? ':' : ' ';
    }
    memcpy(out + 26, "GMT", 4); /* with the NUL: 29 characters + 1 */
    return out;
}

/* Per thread, so shards never share it; refreshed when the second changes. */
static _Thread_local struct {
    time_t sec;
    char text[30];
} date_cache;

static const char *current_date(void)
{
    time_t now = time(NULL);
    if (now != date_cache.sec || date_cache.text[0] == '\0') {
        mdm_http_format_date(now, date_cache.text);
        date_cache.sec = now;
    }
    return date_cache.text;
}

static bool header_text_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return false;
    return true;
}

/* The body is given in two pieces so mdm_http_write_error() can append its "\n" without a
 * copy. */
static int write_response(mdm_buf_t *out, int status, const mdm_http_header_t *extra,
                          unsigned n_extra, const char *content_type, const void *body,
                          size_t body_len, const void *tail, size_t tail_len, bool keep_alive)
{
    assert(out && status >= 100 && status <= 599 && (extra || n_extra == 0));
    assert((body || body_len == 0) && (tail || tail_len == 0));
    size_t total = body_len + tail_len;
    bool no_body = status < 200 || status == 204 || status == 304;
    assert(!no_body || total == 0);

    /* Response splitting: nothing that could end a header line gets through. */
    if (content_type && !header_text_ok(content_type, strlen(content_type)))
        return -EINVAL;
    for (unsigned i = 0; i < n_extra; i++)
        if (extra[i].name_len == 0 || !header_text_ok(extra[i].name, extra[i].name_len) ||
            !header_text_ok(extra[i].value, extra[i].value_len))
            return -EINVAL;

    size_t mark = out->len; /* undo point */
    int ret = mdm_buf_printf(out, "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: mdmd\r\n", status,
                             mdm_http_status_text(status), current_date());
    if (ret == 0 && (content_type || total > 0))
        ret = mdm_buf_printf(out, "Content-Type: %s\r\n",
                             content_type ? content_type : "application/octet-stream");
    if (ret == 0 && !no_body)
        ret = mdm_buf_printf(out, "Content-Length: %zu\r\n", total);
    if (ret == 0 && !keep_alive)
        ret = mdm_buf_append_str(out, "Connection: close\r\n");
    for (unsigned i = 0; ret == 0 && i < n_extra; i++) {
        ret = mdm_buf_append(out, extra[i].name, extra[i].name_len);
        if (ret == 0)
            ret = mdm_buf_append(out, ": ", 2);
        if (ret == 0)
            ret = mdm_buf_append(out, extra[i].value, extra[i].value_len);
        if (ret == 0)
            ret = mdm_buf_append(out, "\r\n", 2);
    }
    if (ret == 0)
        ret = mdm_buf_append(out, "\r\n", 2);
    if (ret == 0)
        ret = mdm_buf_append(out, body, body_len);
    if (ret == 0)
        ret = mdm_buf_append(out, tail, tail_len);
    if (ret != 0)
        out->len = mark;
    return ret;
}

int mdm_http_write_response(mdm_buf_t *out, int status, const mdm_http_header_t *extra,
                            unsigned n_extra, const char *content_type, const void *body,
                            size_t body_len, bool keep_alive)
{
    return write_response(out, status, extra, n_extra, content_type, body, body_len, NULL, 0,
                          keep_alive);
}

int mdm_http_write_error(mdm_buf_t *out, int status, const char *message, bool keep_alive)
{
    assert(message);
    return write_response(out, status, NULL, 0, "text/plain; charset=utf-8", message,
                          strlen(message), "\n", 1, keep_alive);
}

int mdm_http_write_continue(mdm_buf_t *out)
{
    return mdm_buf_append_str(out, "HTTP/1.1 100 Continue\r\n\r\n");
}

/* ------------------------------------------------------------------------------------------
 * Router
 */

void mdm_http_router_init(mdm_http_router_t *r)
{
    assert(r);
    memset(r, 0, sizeof(*r));
}

int mdm_http_router_add(mdm_http_router_t *r, enum mdm_http_method method, const char *pattern,
                        void *handler, void *handler_ctx, size_t max_body_bytes)
{
    assert(r && pattern);
    size_t n = strlen(pattern);
    if (n == 0 || pattern[0] != '/' || method == MDM_HTTP_OTHER)
        return -EINVAL;
    bool is_prefix = n >= 2 && pattern[n - 1] == '*' && pattern[n - 2] == '/';
    const char *star = strchr(pattern, '*');
    if (star && !(is_prefix && star == pattern + n - 1))
        return -EINVAL;
    if (n >= MDM_HTTP_PATTERN_MAX)
        return -ENAMETOOLONG;
    for (unsigned i = 0; i < r->n_routes; i++)
        if (r->routes[i].method == method && strcmp(r->routes[i].pattern, pattern) == 0)
            return -EEXIST;
    if (r->n_routes >= MDM_HTTP_ROUTES_MAX)
        return -ENOSPC;
    mdm_http_route_t *rt = &r->routes[r->n_routes++];
    memset(rt, 0, sizeof(*rt));
    rt->method = method;
    memcpy(rt->pattern, pattern, n + 1);
    rt->is_prefix = is_prefix;
    rt->prefix_len = is_prefix ? n - 2 : 0;
    rt->handler = handler;
    rt->handler_ctx = handler_ctx;
    rt->max_body_bytes = max_body_bytes;
    return 0;
}

/* How well rt's pattern matches path: 0 no match; exact matches beat every prefix, and a
 * longer prefix beats a shorter one. */
static size_t path_score(const mdm_http_route_t *rt, const char *path, size_t path_len)
{
    if (!rt->is_prefix)
        return strcmp(rt->pattern, path) == 0 ? (size_t)MDM_HTTP_PATTERN_MAX + 1 : 0;
    size_t k = rt->prefix_len;
    if (path_len < k || memcmp(path, rt->pattern, k) != 0)
        return 0;
    if (path[k] != '\0' && path[k] != '/')
        return 0; /* prefix "/zdm/mdm" must not match "/zdm/mdmx" */
    return k + 1;
}

const mdm_http_route_t *mdm_http_router_match(const mdm_http_router_t *r,
                                              enum mdm_http_method method, const char *path,
                                              int *status)
{
    assert(r && path);
    size_t path_len = strlen(path);
    const mdm_http_route_t *best = NULL;
    size_t best_score = 0;
    bool path_matched = false;
    for (unsigned i = 0; i < r->n_routes; i++) {
        const mdm_http_route_t *rt = &r->routes[i];
        size_t s = path_score(rt, path, path_len);
        if (s == 0)
            continue;
        path_matched = true;
        if (rt->method != MDM_HTTP_ANY && rt->method != method)
            continue;
        /* on a tie the method-specific route wins over ANY */
        if (s > best_score || (s == best_score && best && best->method == MDM_HTTP_ANY &&
                               rt->method != MDM_HTTP_ANY)) {
            best = rt;
            best_score = s;
        }
    }
    if (status)
        *status = best ? 0 : path_matched ? 405 : 404;
    return best;
}

int mdm_http_router_allow(const mdm_http_router_t *r, const char *path, char *buf, size_t size)
{
    assert(r && path && buf);
    size_t path_len = strlen(path);
    unsigned mask = 0;
    for (unsigned i = 0; i < r->n_routes; i++) {
        const mdm_http_route_t *rt = &r->routes[i];
        if (path_score(rt, path, path_len) == 0)
            continue;
        if (rt->method == MDM_HTTP_ANY)
            mask |= ((1u << MDM_HTTP_OTHER) - 1) & ~1u; /* every named method */
        else
            mask |= 1u << rt->method;
    }
    size_t len = 0;
    if (size == 0)
        return -ENOSPC;
    buf[0] = '\0';
    for (unsigned m = MDM_HTTP_GET; m < MDM_HTTP_OTHER; m++) {
        if (!(mask & (1u << m)))
            continue;
        const char *name = mdm_http_method_name((enum mdm_http_method)m);
        int w = snprintf(buf + len, size - len, "%s%s", len ? ", " : "", name);
        if (w < 0 || (size_t)w >= size - len)
            return -ENOSPC;
        len += (size_t)w;
    }
    return (int)len;
}

/* ---- URL-encoded values ---------------------------------------------------------------- */

int mdm_http_percent_decode(const char *src, size_t len, bool plus_space, char *dst,
                            size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)src[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = mdm_hex_digit(src[i + 1]), lo = mdm_hex_digit(src[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi << 4 | lo;
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        }
        if (c == 0 || n + 1 >= size)
            return -1;
        dst[n++] = (char)c;
    }
    if (size == 0)
        return -1;
    dst[n] = '\0';
    return (int)n;
}

bool mdm_http_param_find(const char *list, size_t len, const char *name, const char **val,
                         size_t *vlen)
{
    if (!list)
        return false;
    size_t nlen = strlen(name);
    const char *p = list, *end = list + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        size_t plen = (size_t)(stop - p);
        if (plen >= nlen && memcmp(p, name, nlen) == 0 && (plen == nlen || p[nlen] == '=')) {
            *val = plen == nlen ? stop : p + nlen + 1;
            *vlen = (size_t)(stop - *val);
            return true;
        }
        p = stop + 1;
    }
    return false;
}
