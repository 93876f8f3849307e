/*
 * Scenarios. See scenario.h.
 *
 * "http" prebuilds its two possible requests (keep-alive and Connection: close) once, so a
 * request costs one append.
 */
#include "bench/scenario.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *bench_outcome_name(enum bench_outcome o)
{
    switch (o) {
    case BENCH_OK: return "ok";
    case BENCH_ERR_CONNECT: return "connect";
    case BENCH_ERR_TLS: return "tls";
    case BENCH_ERR_STATUS: return "status";
    case BENCH_ERR_TIMEOUT: return "timeout";
    case BENCH_ERR_CLOSED: return "closed";
    case BENCH_ERR_HTTP: return "http";
    case BENCH_OUTCOMES: break;
    }
    return "?";
}

/* ---- http: GET one URL ---- */

struct http_get {
    char keep[1024];  /* request asking for keep-alive */
    char close[1024]; /* the same with Connection: close */
    size_t keep_len, close_len;
};

static int http_get_build(void *arg, void *client_state, bool close, mdm_buf_t *out)
{
    (void)client_state;
    const struct http_get *g = arg;
    return close ? mdm_buf_append(out, g->close, g->close_len)
                 : mdm_buf_append(out, g->keep, g->keep_len);
}

static enum bench_outcome http_get_check(void *arg, void *client_state,
                                         const struct bench_response *r)
{
    (void)arg;
    (void)client_state;
    return r->status >= 200 && r->status <= 299 ? BENCH_OK : BENCH_ERR_STATUS;
}

static bool header_safe(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

int bench_scenario_http_get(struct bench_scenario *s, const char *host, const char *path)
{
    memset(s, 0, sizeof(*s));
    if (!header_safe(host) || !header_safe(path) || strlen(host) > 300 || strlen(path) > 600)
        return -EINVAL;
    struct http_get *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    static const char fmt[] = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mdm-bench\r\n%s\r\n";
    int k = snprintf(g->keep, sizeof(g->keep), fmt, path, host, "");
    int c = snprintf(g->close, sizeof(g->close), fmt, path, host, "Connection: close\r\n");
    if (k < 0 || c < 0 || (size_t)k >= sizeof(g->keep) || (size_t)c >= sizeof(g->close)) {
        free(g);
        return -EINVAL;
    }
    g->keep_len = (size_t)k;
    g->close_len = (size_t)c;
    s->name = "http";
    s->arg = g;
    s->build_request = http_get_build;
    s->check_response = http_get_check;
    s->free = free;
    return 0;
}
