/*
 * mdm_h2c: a sans-I/O HTTP/2 client session over nghttp2 (knows nothing about APNs).
 *
 * Plaintext from TLS goes in through mdm_h2c_recv; frames to send come out of mdm_h2c_output.
 * Requests are copied into a fixed pool of request slots made at mdm_h2c_new (no allocation
 * per request beyond growing a slot's buffers the first times it is used). h2c submits them
 * to nghttp2 only after the peer's first SETTINGS and only while fewer than the peer's
 * SETTINGS_MAX_CONCURRENT_STREAMS are open; the rest wait in a FIFO queue inside h2c.
 *
 * Every accepted request gets exactly one outcome through the response callback, which runs
 * only from mdm_h2c_recv, mdm_h2c_output and mdm_h2c_abort (never from mdm_h2c_submit and
 * never inside an nghttp2 callback). The callback may submit new requests; it must not free
 * the session.
 *
 * Threads: a session is used by one thread (the shard owning the connection).
 */
#ifndef MDM_CORE_H2C_H
#define MDM_CORE_H2C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

typedef struct mdm_h2c mdm_h2c_t;

/** Response headers (besides :status) that can be captured per stream. */
#define MDM_H2C_CAPTURE_MAX 4
/** Longest captured header value kept (bytes, without the NUL); longer values are cut. */
#define MDM_H2C_VALUE_MAX 127
/** Request headers per request, pseudo-headers not counted. */
#define MDM_H2C_HEADERS_MAX 16

enum mdm_h2c_outcome {
    MDM_H2C_DONE,          /* the server answered: status, headers, body are valid */
    MDM_H2C_NOT_PROCESSED, /* never reached the server or refused by it (queued when the
                              connection ended, above a GOAWAY's last_stream_id,
                              REFUSED_STREAM): safe to retry on another connection */
    MDM_H2C_FAILED,        /* reset or lost after the request was sent: the server may or
                              may not have acted on it */
};

struct mdm_h2c_header {
    const char *name; /* lowercase (HTTP/2 rule; not checked) */
    const char *value;
};

/** What the callback gets; every pointer is valid only during the callback. */
struct mdm_h2c_response {
    enum mdm_h2c_outcome outcome;
    int32_t stream_id;   /* 0 when the request never got a stream */
    int status;          /* :status, 0 when none arrived */
    uint32_t h2_error;   /* RST_STREAM or GOAWAY error code, 0 = none */
    const uint8_t *body; /* first body_max bytes of the body */
    size_t body_len;
    bool body_truncated; /* the body was longer than body_max */
    /* values of the opts' capture[i] headers, NULL when absent */
    const char *captured[MDM_H2C_CAPTURE_MAX];
};

typedef void (*mdm_h2c_response_cb)(mdm_h2c_t *h, void *stream_user,
                                    const struct mdm_h2c_response *r, void *arg);
/** A PING ack arrived for the ping sent at sent_ms (the value given to mdm_h2c_ping). */
typedef void (*mdm_h2c_ping_cb)(mdm_h2c_t *h, uint64_t sent_ms, void *arg);

struct mdm_h2c_opts {
    const char *authority;   /* :authority, e.g. "api.push.apple.com" (copied) */
    uint32_t requests_max;   /* slots: open + queued requests; 0 = 1024 */
    size_t body_max;         /* response body bytes kept per stream; 0 = 4096 */
    /* NULL-terminated list of up to MDM_H2C_CAPTURE_MAX lowercase header names to capture,
     * e.g. {"apns-id", NULL}; the strings must outlive the session */
    const char *const *capture;
    mdm_h2c_response_cb response_callback; /* required */
    mdm_h2c_ping_cb ping_callback;         /* optional */
    void *arg;                             /* passed to both */
};

/**
 * Creates a client session and queues the connection preface and our SETTINGS (no push).
 * *out is owned by the caller (mdm_h2c_free). Returns 0, -ENOMEM or MDM_ECONFIG.
 */
MDM_MUST_CHECK int mdm_h2c_new(mdm_h2c_t **out, const struct mdm_h2c_opts *o);

/** Frees the session without reporting anything (call mdm_h2c_abort first). h may be NULL. */
void mdm_h2c_free(mdm_h2c_t *h);

/**
 * Queues a request: method, path, headers (copied) and body (copied, may be NULL/0) with a
 * per-stream user pointer handed back to the response callback. Does not call the callback.
 *
 * Returns 0; MDM_EFULL (every slot is taken); MDM_ETOOBIG (more than MDM_H2C_HEADERS_MAX
 * headers); MDM_ECLOSED (GOAWAY received, aborted, or the session ended); -ENOMEM.
 */
MDM_MUST_CHECK int mdm_h2c_submit(mdm_h2c_t *h, const char *method, const char *path,
                                  const struct mdm_h2c_header *headers, size_t n_headers,
                                  const void *body, size_t body_len, void *stream_user);

/**
 * Feeds plaintext received from the peer; all len bytes are consumed on success. Reports the
 * streams that ended.
 *
 * Returns 0; MDM_EHTTP (protocol error: the session is closed and every pending request was
 * reported); MDM_ECLOSED (the session was already closed).
 */
MDM_MUST_CHECK int mdm_h2c_recv(mdm_h2c_t *h, const uint8_t *data, size_t len);

/**
 * Frames to send: at most room bytes in *data, *len (0 = nothing to send now). The bytes are
 * taken as sent: *data is valid until the next call on h. Also submits queued requests and
 * reports streams that ended. Returns 0 or MDM_EHTTP (fatal nghttp2 error: closed, reported).
 */
MDM_MUST_CHECK int mdm_h2c_output(mdm_h2c_t *h, size_t room, const uint8_t **data, size_t *len);

/** Queues a PING carrying now_ms; its ack is reported through ping_callback. 0 or -ENOMEM. */
MDM_MUST_CHECK int mdm_h2c_ping(mdm_h2c_t *h, uint64_t now_ms);

/**
 * The connection is gone (EOF, transport error, timeout): reports every request still
 * pending (queued or unsent: NOT_PROCESSED; sent without a full answer: FAILED) and closes
 * the session. Idempotent.
 */
void mdm_h2c_abort(mdm_h2c_t *h);

/** nghttp2 wants more input. */
bool mdm_h2c_want_read(const mdm_h2c_t *h);
/** There are frames to send (or requests waiting for room in the staging buffer). */
bool mdm_h2c_want_write(const mdm_h2c_t *h);
/** The session is over (aborted, fatal error, or nothing more to read or write): close. */
bool mdm_h2c_closed(const mdm_h2c_t *h);
/** A GOAWAY was received; new requests are refused. */
bool mdm_h2c_goaway_received(const mdm_h2c_t *h);

/** Requests submitted to nghttp2 and not yet ended. */
uint32_t mdm_h2c_open_streams(const mdm_h2c_t *h);
/** Requests waiting in h2c's queue. */
uint32_t mdm_h2c_queued(const mdm_h2c_t *h);
/**
 * How many more requests the peer would take on new streams right now: its
 * SETTINGS_MAX_CONCURRENT_STREAMS minus open and queued requests. 0 before its first SETTINGS,
 * after a GOAWAY and once closed. Callers that spread requests over several sessions submit
 * only while this is positive, so that none waits inside one session while another is free.
 */
uint32_t mdm_h2c_room(const mdm_h2c_t *h);

#endif
