/*
 * HTTP/1.1 server side, sans-I/O: bytes in, requests out; responses out as bytes.
 *
 * Three independent pieces:
 *  - mdm_http_parser: one per connection, built on http_parser (HTTP_REQUEST). The caller
 *    feeds plaintext; the parser stops after exactly one complete request so pipelined bytes
 *    stay with the caller. Limits (header section, URL, header count, body) are enforced
 *    across feeds and map to the HTTP status the caller should answer before closing.
 *  - the response writer: status line and headers appended to an mdm_buf.
 *  - mdm_http_router: a fixed table of routes filled at startup, matched by method and path.
 *
 * Nothing here touches a socket, a clock other than time(2) for the Date header, or a
 * thread other than the caller's: each object belongs to the thread (shard) that owns the
 * connection. Memory is allocated by mdm_http_parser_init (sized from the limits) and by the
 * request body buffer as a body arrives; nothing else allocates.
 */
#ifndef MDM_CORE_HTTP_H
#define MDM_CORE_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/buf.h"
#include "core/common.h"

/* ------------------------------------------------------------------------------------------
 * Methods
 */

/** Request methods mdmd distinguishes; every other method parses as MDM_HTTP_OTHER. */
enum mdm_http_method {
    MDM_HTTP_ANY = 0, /* routes only: matches every method */
    MDM_HTTP_GET,
    MDM_HTTP_HEAD,
    MDM_HTTP_POST,
    MDM_HTTP_PUT,
    MDM_HTTP_DELETE,
    MDM_HTTP_PATCH,
    MDM_HTTP_OPTIONS,
    MDM_HTTP_OTHER, /* recognised by http_parser but unused here (TRACE, PROPFIND, ...) */
};

/** Upper-case name ("GET"); "*" for MDM_HTTP_ANY and "OTHER" for MDM_HTTP_OTHER. Static. */
const char *mdm_http_method_name(enum mdm_http_method m);

/* ------------------------------------------------------------------------------------------
 * Requests
 */

/** Per-connection limits. A zero field means "use the default" (MDM_HTTP_DEFAULT_*). */
struct mdm_http_limits {
    size_t max_header_bytes; /* request line + headers + final CRLF; over it -> 431 */
    size_t max_url_bytes;    /* request-target; over it -> 414 */
    size_t max_body_bytes;   /* when the route does not say; over it -> 413 */
    unsigned max_headers;    /* header fields per request; over it -> 431 */
};

#define MDM_HTTP_DEFAULT_MAX_HEADER_BYTES 16384u
#define MDM_HTTP_DEFAULT_MAX_URL_BYTES 4096u
#define MDM_HTTP_DEFAULT_MAX_BODY_BYTES (1024u * 1024u)
#define MDM_HTTP_DEFAULT_MAX_HEADERS 64u
/* http_parser refuses header sections above 80 KiB by itself (HTTP_MAX_HEADER_SIZE); a larger
 * max_header_bytes is clamped to it. Request-targets are clamped to 64 KiB. */
#define MDM_HTTP_MAX_HEADER_BYTES_CAP (80u * 1024u)
#define MDM_HTTP_MAX_URL_BYTES_CAP 65535u

/** One header field. name and value are NUL-terminated (the lengths exclude the NUL); the
 * value has no leading or trailing whitespace. Borrowed from the parser (see request). */
typedef struct mdm_http_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} mdm_http_header_t;

/**
 * A parsed request. Owned by its parser; every pointer (strings, headers, body bytes) stays
 * valid until mdm_http_parser_reset() or mdm_http_parser_dispose() on that parser.
 * The body buffer may be taken over by the caller: copy the struct member and then
 * mdm_buf_init(&req->body, 0); the caller then owns (and disposes) the copy.
 */
typedef struct mdm_http_request {
    enum mdm_http_method method;
    const char *method_name;     /* static, e.g. "GET", "PROPFIND" */
    const char *target;          /* raw request-target as received */
    const char *path;            /* raw (not percent-decoded) path, no query; "/" at least */
    const char *query;           /* after '?', without it and without any fragment; or NULL */
    mdm_http_header_t *headers;  /* n_headers entries, in arrival order (trailers excluded) */
    unsigned n_headers;
    mdm_buf_t body;              /* complete body (chunked: decoded), empty when none */
    uint64_t content_length;     /* the Content-Length value when has_content_length */
    bool has_content_length;
    bool chunked;                /* Transfer-Encoding: chunked */
    bool keep_alive;             /* false: answer with Connection: close, then close */
    bool expect_continue;        /* Expect: 100-continue was sent (see mdm_http_headers_cb) */
    bool head;                   /* a HEAD request, which the server routes and hands to
                                  * handlers as GET (method is MDM_HTTP_GET) and answers
                                  * without the body (method_name stays "HEAD") */
    unsigned short http_major, http_minor;
} mdm_http_request_t;

/**
 * Value of the first header called name (ASCII case-insensitive), NUL-terminated, or NULL
 * when absent. Borrowed: valid as long as the request (see mdm_http_request_t).
 */
const char *mdm_http_request_header(const mdm_http_request_t *r, const char *name);

/**
 * Called once per request when the header section is complete, before any body byte is
 * accepted: the server routes here, so it can refuse early and choose the body limit.
 * *max_body arrives set to limits.max_body_bytes; the callback may lower or raise it
 * (0: no body byte accepted). req->body is still empty; every other field is set.
 * Return 0 to continue, or an HTTP status in 400..599 (404, 405, 401, ...) to stop parsing
 * with that status: mdm_http_parser_feed() then fails with MDM_EHTTP and
 * mdm_http_parser_error_status() returns it.
 * If req->expect_continue, a server that accepts the request should append
 * mdm_http_write_continue() to its output here (the client may wait for it before sending
 * the body), but only when a body is announced that it will take: req->chunked, or
 * 0 < req->content_length <= *max_body (a larger one fails with 413 right after return).
 */
typedef int (*mdm_http_headers_cb)(void *ctx, mdm_http_request_t *req, size_t *max_body);

/** Per-connection request parser. Embed it; fields starting with '_' are private. */
typedef struct mdm_http_parser {
    mdm_http_request_t _req;
    http_parser _hp;
    struct mdm_http_limits _lim;
    mdm_http_headers_cb _on_headers;
    void *_ctx;
    char *_arena;                 /* target, header names and values, path, query */
    size_t _arena_cap;            /* bytes; sized from the limits at init, never grows */
    size_t _arena_len;            /* bytes used by the current request */
    mdm_http_header_t *_headers;  /* max_headers entries */
    size_t _url_len;              /* target bytes so far (stored at _arena[0]) */
    size_t _hdr_bytes;            /* header-section bytes consumed so far */
    uint64_t _body_wire;          /* bytes consumed after the header section */
    size_t _max_body;             /* body limit of this request, set by the callback */
    unsigned _hdr_state;          /* header field/value accumulation state (http.c) */
    unsigned _scan;               /* header-section pre-scan state (http.c) */
    unsigned _rl_len;             /* request-line bytes seen by the pre-scan */
    char _rl_tail[9];             /* last 9 bytes of the request line: " HTTP/1.1" */
    bool _scan_cr;                /* pre-scan: the previous byte was CR */
    bool _url_closed;             /* target NUL-terminated, headers may follow */
    bool _headers_done;           /* header section complete, body phase */
    bool _complete;               /* a whole request is ready */
    bool _saw_te, _saw_cl;        /* Transfer-Encoding / Content-Length names seen */
    int _status;                  /* HTTP status of the failure, 0 while healthy */
    int _err;                     /* return code of the failure */
    char _error_text[128];
} mdm_http_parser_t;

/**
 * Prepares p for the first request of a connection. lim may be NULL (all defaults); it is
 * copied. on_headers may be NULL (no routing, default body limit); ctx is passed to it.
 * Allocates the per-request storage (about max_header_bytes + 2 * max_url_bytes + 32 *
 * max_headers bytes), so call it when the connection slot is set up, not per request.
 * Returns 0 or -ENOMEM (p is then left disposable).
 */
MDM_MUST_CHECK int mdm_http_parser_init(mdm_http_parser_t *p, const struct mdm_http_limits *lim,
                                        mdm_http_headers_cb on_headers, void *ctx);

/** Frees everything p owns, including the body of the last request. */
void mdm_http_parser_dispose(mdm_http_parser_t *p);

/**
 * Feeds len bytes of plaintext. Consumes bytes up to the end of at most ONE request and
 * returns how many (>= 0); *done becomes true when that request is complete (read it with
 * mdm_http_parser_request()). Bytes past the request (pipelining) are not consumed: answer,
 * call mdm_http_parser_reset() and feed them again. Without *done, all len bytes were
 * consumed. The data need not outlive the call; the on_headers callback runs inside it.
 * Must not be called while a completed request is pending (reset first).
 * Returns, on failure (then mdm_http_parser_error_status() gives the status to answer,
 * mdm_http_parser_error_text() a one-line reason, and the caller must close the connection
 * after answering; later calls return the same code):
 *   MDM_EHTTP    malformed request (400), unsupported version (505), method or transfer
 *                coding (501), missing length (411), or refused by the on_headers callback
 *   MDM_ETOOBIG  a limit was exceeded: 413 body, 414 request-target, 431 header section
 *   -ENOMEM      the body buffer could not grow (500)
 */
MDM_MUST_CHECK int mdm_http_parser_feed(mdm_http_parser_t *p, const void *data, size_t len,
                                        bool *done);

/** The completed request (only after feed set *done). Owned by p, valid until reset. */
mdm_http_request_t *mdm_http_parser_request(mdm_http_parser_t *p);

/** Forgets the current request (and its body bytes, keeping the allocation) and any error,
 * ready for the next request on the same connection. */
void mdm_http_parser_reset(mdm_http_parser_t *p);

/** True once a byte of a request was consumed since init/reset (an idle timeout then
 * deserves a 408; before that the connection can be closed silently). */
bool mdm_http_parser_in_progress(const mdm_http_parser_t *p);

/** True while the current request's body is being received (its headers are complete). */
bool mdm_http_parser_in_body(const mdm_http_parser_t *p);

/** HTTP status to answer after a failed feed (400..599), or 0 when feed has not failed. */
int mdm_http_parser_error_status(const mdm_http_parser_t *p);

/** One-line reason of the failure ("chunk size is not hex"), "" when none. Owned by p. */
const char *mdm_http_parser_error_text(const mdm_http_parser_t *p);

/* ------------------------------------------------------------------------------------------
 * Responses
 */

/** Reason phrase of status ("Not Found"); "Unknown" for codes mdmd never sends. Static. */
const char *mdm_http_status_text(int status);

/**
 * Appends a complete response to out:
 *   HTTP/1.1 <status> <reason>, Date (time(2), formatted once per second per thread),
 *   Server: mdmd, Content-Type (content_type, or application/octet-stream when a body is
 *   given without one; omitted when both are absent), Content-Length (omitted for 1xx, 204
 *   and 304, which carry no body), Connection: close when !keep_alive, the n_extra extra
 *   headers in order, an empty line, then the body.
 * extra may be NULL when n_extra is 0; the lengths in extra are used, not NULs.
 * Returns 0, -EINVAL when a header name or value contains CR, LF or NUL (nothing is written),
 * or the error of mdm_buf_append (-ENOMEM, MDM_ETOOBIG); on failure out is left unchanged.
 */
MDM_MUST_CHECK int mdm_http_write_response(mdm_buf_t *out, int status,
                                           const mdm_http_header_t *extra, unsigned n_extra,
                                           const char *content_type, const void *body,
                                           size_t body_len, bool keep_alive);

/** Appends a text/plain; charset=utf-8 response whose body is message + "\n" (message is
 * one line). Returns as mdm_http_write_response(). */
MDM_MUST_CHECK int mdm_http_write_error(mdm_buf_t *out, int status, const char *message,
                                        bool keep_alive);

/** Appends "HTTP/1.1 100 Continue\r\n\r\n". Returns 0, -ENOMEM or MDM_ETOOBIG. */
MDM_MUST_CHECK int mdm_http_write_continue(mdm_buf_t *out);

/** Formats t as an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") into out; returns out. */
char *mdm_http_format_date(time_t t, char out[30]);

/* ------------------------------------------------------------------------------------------
 * Router
 */

#define MDM_HTTP_ROUTES_MAX 64
#define MDM_HTTP_PATTERN_MAX 128 /* bytes including the NUL */

/**
 * A route: method (or MDM_HTTP_ANY) and a path pattern, either exact ("/healthz") or a
 * prefix ending in a slash and a star: "/zdm/mdm/" followed by '*' matches "/zdm/mdm" and
 * everything under "/zdm/mdm/", but not "/zdm/mdmx".
 * Patterns match the raw path: no percent-decoding; the parser refuses "." and ".."
 * segments, but a handler that uses the path must still validate what it takes from it.
 * handler and handler_ctx are opaque to core. max_body_bytes 0: the limits' default.
 */
typedef struct mdm_http_route {
    enum mdm_http_method method;
    char pattern[MDM_HTTP_PATTERN_MAX]; /* as given, with any final slash-star */
    size_t prefix_len;                  /* prefix routes: bytes before the slash-star */
    bool is_prefix;
    void *handler;
    void *handler_ctx;
    size_t max_body_bytes;
} mdm_http_route_t;

/** Fixed table of routes; filled at startup, then read-only (can be shared by shards). */
typedef struct mdm_http_router {
    mdm_http_route_t routes[MDM_HTTP_ROUTES_MAX];
    unsigned n_routes;
} mdm_http_router_t;

/** Empties r. */
void mdm_http_router_init(mdm_http_router_t *r);

/**
 * Adds a route (pattern is copied). Returns 0; -EINVAL when pattern does not start with '/',
 * contains '*' other than after a final '/', or method is MDM_HTTP_OTHER; -ENAMETOOLONG when
 * it does not fit MDM_HTTP_PATTERN_MAX; -EEXIST when the same method and pattern exist;
 * -ENOSPC when the table is full.
 */
MDM_MUST_CHECK int mdm_http_router_add(mdm_http_router_t *r, enum mdm_http_method method,
                                       const char *pattern, void *handler, void *handler_ctx,
                                       size_t max_body_bytes);

/**
 * The route for (method, path), or NULL with *status set: 404 when no pattern matches the
 * path, 405 when some do but not with this method (build Allow with
 * mdm_http_router_allow()). Among matching routes an exact pattern wins, then the longest
 * prefix. status may be NULL. The route is borrowed from r.
 */
const mdm_http_route_t *mdm_http_router_match(const mdm_http_router_t *r,
                                              enum mdm_http_method method, const char *path,
                                              int *status);

/**
 * Writes the Allow header value for path ("GET, HEAD, PUT": the methods of every route whose
 * pattern matches path, in a fixed order, no duplicates) into buf as a NUL-terminated string.
 * Returns its length (0 when no route matches), or -ENOSPC when size is too small.
 */
MDM_MUST_CHECK int mdm_http_router_allow(const mdm_http_router_t *r, const char *path, char *buf,
                                         size_t size);

/* ---- URL-encoded values (query strings, form bodies, path segments) ------------------ */

/**
 * Percent-decodes len bytes of src into dst (size bytes, NUL-terminated); with plus_space
 * ('+' in a query or form value) '+' becomes a space, else it stays '+' (e.g. base64).
 * Returns the decoded length, or -1 for a malformed escape, an encoded NUL, or a value that
 * does not fit.
 */
int mdm_http_percent_decode(const char *src, size_t len, bool plus_space, char *dst,
                            size_t size);

/**
 * Finds name=value in the &-separated list of len bytes (a query string or a form body);
 * *val points at the raw (still encoded) value and *vlen is its length (0 for "name" or
 * "name="). Returns true when present; the first occurrence wins.
 */
bool mdm_http_param_find(const char *list, size_t len, const char *name, const char **val,
                         size_t *vlen);

#endif
