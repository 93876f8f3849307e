/*
 * mdm-bench: the load generator that ships with mdmd.
 *
 *   mdm-bench http --url https://127.0.0.1:8443/healthz [--connections N] [--duration S]
 *                  [--requests N] [--timeout MS] [--new-conn [--resume]] [--ca FILE]
 *                  [--cert FILE --key FILE] [--json]
 *   mdm-bench checkin --url https://127.0.0.1:8443/zdm --instance DIR --macs N
 *                  [--connections C] --mode idle|tokenupdate|answer [--visit K]
 *                  [--duration S] [--server-pid PID] [--signature] [--no-enroll]
 *                  [--identity-key ec|rsa]
 *                  [--api-url https://127.0.0.1:9443 [--api-key KEY] [--commands Q]] [--json]
 *
 * Design: a verb names a scenario (scenario.h: what to ask, what a good answer is; checkin.h
 * for the simulated Macs); the driver (driver.h: connections, TLS, HTTP framing, timing) runs
 * it over N concurrent connections from one thread on one io_uring ring; this file parses the
 * command line, measures the client's own CPU time around the run (getrusage) and, with
 * --server-pid, the server's (utime+stime from /proc/PID/stat), and prints the report, as text
 * or as one JSON object for scripts. Latencies come from a log-linear histogram (hist.h), so
 * memory stays fixed however long the run.
 *
 * checkin runs two phases: enroll (every Mac sends Authenticate and TokenUpdate; skipped with
 * --no-enroll), then, for answer mode, queues Q commands per Mac through the admin API bulk
 * endpoint, then the measured phase. Only the measured phase is in the report's figures.
 *
 * Exit codes: 0 at least one request succeeded; 1 none did, or the run could not be set up;
 * 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench/checkin.h"
#include "bench/driver.h"
#include "bench/hist.h"
#include "bench/scenario.h"
#include "core/log.h"
#include "core/tls.h"

#define CONNECTIONS_MAX 100000

struct cli {
    const char *verb;
    const char *url;
    const char *ca, *cert, *key;
    unsigned connections;
    uint64_t duration_ms, requests, timeout_ms;
    bool new_conn, resume, json;
    /* checkin */
    const char *instance, *cache, *mode_arg, *api_url, *api_key;
    unsigned macs, visit, commands;
    long server_pid;
    bool signature, no_enroll, rsa;
    enum ck_mode mode;
    char api_host[256], api_port[8];
    /* from the URL */
    char host[256];        /* without brackets: for SNI and resolution */
    char host_header[300]; /* Host header value */
    char port[8];
    char path[1024];
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = interrupted < 2 ? interrupted + 1 : 2; /* second Ctrl-C cuts off at once */
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mdm-bench http --url https://HOST[:PORT]/PATH [options]\n"
            "       mdm-bench checkin --url https://HOST[:PORT]/INSTANCE --instance DIR --macs N\n"
            "                         --mode idle|tokenupdate|answer [options]\n"
            "\n"
            "Scenario http: GET the URL over and over; any 2xx answer is a success.\n"
            "Scenario checkin: N simulated Macs enroll (Authenticate, TokenUpdate), then check in\n"
            "over C connections: Idle (idle), TokenUpdate (tokenupdate), or Idle and acknowledge\n"
            "each command handed out (answer; commands are queued first through the admin API).\n"
            "\n"
            "checkin options:\n"
            "  --instance DIR    the mdmd instance (its ca/ issues the Macs' identities)\n"
            "  --macs N          simulated Macs (default 1000); identities cached in DIR/bench-macs\n"
            "  --cache DIR       keep the identities there instead\n"
            "  --mode M          idle, tokenupdate or answer (default idle)\n"
            "  --visit K         requests per Mac visit (default 10); with mTLS a visit is one\n"
            "                    TLS connection, then the slot reconnects as its next Mac\n"
            "  --signature       identity by Mdm-Signature header, not client certificates: one\n"
            "                    connection carries all of its slot's Macs\n"
            "  --no-enroll       skip the enroll phase (the Macs are enrolled already)\n"
            "  --identity-key ec|rsa  identity keys: EC P-256 (default) or RSA-2048 (as SCEP\n"
            "                    issues them to Macs; 128 keys shared under distinct certificates);\n"
            "                    RSA ones are cached in DIR/bench-macs-rsa\n"
            "  --server-pid PID  report the server's CPU time per request from /proc/PID/stat\n"
            "  --api-url URL     admin listener (answer mode), e.g. https://127.0.0.1:9443\n"
            "  --api-key KEY     admin API key (default: $MDMD_API_KEY)\n"
            "  --commands Q      commands queued per Mac in answer mode (default 4)\n"
            "\n"
            "options:\n"
            "  --connections N   concurrent connections (default 50)\n"
            "  --duration S      run time: seconds, or with a unit (500ms, 10s, 2m); default 10\n"
            "  --requests N      stop after N requests (whichever of duration/requests is first)\n"
            "  --timeout MS      per-request timeout in milliseconds (default 5000)\n"
            "  --new-conn        a new TCP+TLS connection per request (Connection: close)\n"
            "  --resume          with --new-conn: resume the first connection's TLS session\n"
            "  --ca FILE         verify the server certificate against FILE (default: no check)\n"
            "  --cert FILE --key FILE   present a client certificate\n"
            "  --json            print one JSON object instead of the text report\n");
}

/* ---- command line ---- */

static bool parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s[0] || s[0] == '-')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* "10", "10s", "1.5s", "500ms", "2m" -> milliseconds, 1 ms to 24 h. */
static bool parse_duration(const char *s, uint64_t *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v <= 0)
        return false;
    double scale = 1000;
    if (strcmp(end, "ms") == 0)
        scale = 1;
    else if (strcmp(end, "m") == 0)
        scale = 60000;
    else if (*end && strcmp(end, "s") != 0)
        return false;
    double t = v * scale;
    if (t < 1 || t > 86400000)
        return false;
    *ms = (uint64_t)t;
    return true;
}

/* https://host[:port][/path]; host may be [v6]. */
static bool parse_url(struct cli *c)
{
    const char *p = c->url;
    if (strncmp(p, "https://", 8) != 0)
        return false;
    p += 8;
    const char *host = p, *host_end;
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (!host_end)
            return false;
        p = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/?#");
        p = host_end;
    }
    size_t hl = (size_t)(host_end - host);
    if (hl == 0 || hl >= sizeof(c->host))
        return false;
    memcpy(c->host, host, hl);
    c->host[hl] = '\0';
    const char *port = "443";
    size_t pl = 3;
    if (*p == ':') {
        port = ++p;
        pl = strspn(p, "0123456789");
        p += pl;
    }
    uint64_t pn;
    char portbuf[8];
    if (pl == 0 || pl >= sizeof(portbuf))
        return false;
    memcpy(portbuf, port, pl);
    portbuf[pl] = '\0';
    if (!parse_u64(portbuf, 1, 65535, &pn))
        return false;
    snprintf(c->port, sizeof(c->port), "%u", (unsigned)pn);
    if (*p && *p != '/')
        return false;
    snprintf(c->path, sizeof(c->path), "%s", *p ? p : "/");
    bool v6 = strchr(c->host, ':') != NULL;
    if (pn == 443)
        snprintf(c->host_header, sizeof(c->host_header), v6 ? "[%s]" : "%s", c->host);
    else
        snprintf(c->host_header, sizeof(c->host_header), v6 ? "[%s]:%s" : "%s:%s", c->host,
                 c->port);
    return true;
}

/* The checkin verb's own checks; 0 or -1 after printing what is wrong. */
static int parse_checkin(struct cli *c)
{
    if (!c->instance) {
        fprintf(stderr, "mdm-bench: checkin needs --instance DIR\n");
        return -1;
    }
    if (c->new_conn || c->cert) {
        fprintf(stderr, "mdm-bench: checkin makes its own connections and identities "
                        "(--visit, --signature)\n");
        return -1;
    }
    if (strcmp(c->mode_arg, "idle") == 0)
        c->mode = CK_IDLE;
    else if (strcmp(c->mode_arg, "tokenupdate") == 0)
        c->mode = CK_TOKENUPDATE;
    else if (strcmp(c->mode_arg, "answer") == 0)
        c->mode = CK_ANSWER;
    else {
        fprintf(stderr, "mdm-bench: --mode is idle, tokenupdate or answer\n");
        return -1;
    }
    if (c->connections > c->macs)
        c->connections = c->macs; /* a slot plays its own Macs: no more slots than Macs */
    if (c->mode == CK_ANSWER) {
        if (!c->api_key)
            c->api_key = getenv("MDMD_API_KEY");
        if (!c->api_url || !c->api_key) {
            fprintf(stderr, "mdm-bench: answer mode needs --api-url and --api-key (or "
                            "MDMD_API_KEY)\n");
            return -1;
        }
        struct cli tmp;
        memset(&tmp, 0, sizeof(tmp));
        tmp.url = c->api_url;
        if (!parse_url(&tmp)) {
            fprintf(stderr, "mdm-bench: --api-url https://HOST:PORT\n");
            return -1;
        }
        snprintf(c->api_host, sizeof(c->api_host), "%s", tmp.host);
        snprintf(c->api_port, sizeof(c->api_port), "%s", tmp.port);
    }
    return 0;
}

/* Returns 0, or 2 after printing what is wrong. */
static int parse_cli(struct cli *c, int argc, char **argv)
{
    enum { O_URL = 1, O_CONN, O_DUR, O_REQ, O_TIMEOUT, O_NEW, O_RESUME, O_CA, O_CERT, O_KEY,
           O_JSON, O_HELP, O_INSTANCE, O_MACS, O_CACHE, O_MODE, O_VISIT, O_SIG, O_NOENROLL, O_IDKEY,
           O_PID, O_APIURL, O_APIKEY, O_COMMANDS };
    static const struct option opts[] = {
        {"url", required_argument, NULL, O_URL},
        {"connections", required_argument, NULL, O_CONN},
        {"duration", required_argument, NULL, O_DUR},
        {"requests", required_argument, NULL, O_REQ},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"new-conn", no_argument, NULL, O_NEW},
        {"resume", no_argument, NULL, O_RESUME},
        {"ca", required_argument, NULL, O_CA},
        {"cert", required_argument, NULL, O_CERT},
        {"key", required_argument, NULL, O_KEY},
        {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, O_HELP},
        {"instance", required_argument, NULL, O_INSTANCE},
        {"macs", required_argument, NULL, O_MACS},
        {"cache", required_argument, NULL, O_CACHE},
        {"mode", required_argument, NULL, O_MODE},
        {"visit", required_argument, NULL, O_VISIT},
        {"signature", no_argument, NULL, O_SIG},
        {"no-enroll", no_argument, NULL, O_NOENROLL},
        {"identity-key", required_argument, NULL, O_IDKEY},
        {"server-pid", required_argument, NULL, O_PID},
        {"api-url", required_argument, NULL, O_APIURL},
        {"api-key", required_argument, NULL, O_APIKEY},
        {"commands", required_argument, NULL, O_COMMANDS},
        {NULL, 0, NULL, 0},
    };
    memset(c, 0, sizeof(*c));
    c->connections = 50;
    c->duration_ms = 10000;
    c->timeout_ms = 5000;
    c->macs = 1000;
    c->visit = 10;
    c->commands = 4;
    c->mode_arg = "idle";
    if (argc < 2 || (strcmp(argv[1], "http") != 0 && strcmp(argv[1], "checkin") != 0)) {
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))
            usage(stdout), exit(0);
        fprintf(stderr, "mdm-bench: %s\n", argc < 2 ? "missing scenario" : "unknown scenario");
        goto bad;
    }
    c->verb = argv[1];
    optind = 2;
    opterr = 0;
    int opt, idx = 0;
    uint64_t v;
    while ((opt = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        switch (opt) {
        case O_URL: c->url = optarg; break;
        case O_CONN:
            if (!parse_u64(optarg, 1, CONNECTIONS_MAX, &v))
                goto bad_value;
            c->connections = (unsigned)v;
            break;
        case O_DUR:
            if (!parse_duration(optarg, &c->duration_ms))
                goto bad_value;
            break;
        case O_REQ:
            if (!parse_u64(optarg, 1, UINT64_MAX / 2, &c->requests))
                goto bad_value;
            break;
        case O_TIMEOUT:
            if (!parse_u64(optarg, 1, 3600000, &c->timeout_ms))
                goto bad_value;
            break;
        case O_NEW: c->new_conn = true; break;
        case O_RESUME: c->resume = true; break;
        case O_CA: c->ca = optarg; break;
        case O_CERT: c->cert = optarg; break;
        case O_KEY: c->key = optarg; break;
        case O_JSON: c->json = true; break;
        case O_HELP: usage(stdout); exit(0);
        case O_INSTANCE: c->instance = optarg; break;
        case O_CACHE: c->cache = optarg; break;
        case O_MODE: c->mode_arg = optarg; break;
        case O_SIG: c->signature = true; break;
        case O_NOENROLL: c->no_enroll = true; break;
        case O_IDKEY:
            if (strcmp(optarg, "rsa") != 0 && strcmp(optarg, "ec") != 0) {
                fprintf(stderr, "mdm-bench: --identity-key is ec or rsa\n");
                return -1;
            }
            c->rsa = strcmp(optarg, "rsa") == 0;
            break;
        case O_APIURL: c->api_url = optarg; break;
        case O_APIKEY: c->api_key = optarg; break;
        case O_MACS:
            if (!parse_u64(optarg, 1, 1000000, &v))
                goto bad_value;
            c->macs = (unsigned)v;
            break;
        case O_VISIT:
            if (!parse_u64(optarg, 1, 1000000000, &v))
                goto bad_value;
            c->visit = (unsigned)v;
            break;
        case O_COMMANDS:
            if (!parse_u64(optarg, 1, 1000, &v))
                goto bad_value;
            c->commands = (unsigned)v;
            break;
        case O_PID:
            if (!parse_u64(optarg, 1, 1u << 30, &v))
                goto bad_value;
            c->server_pid = (long)v;
            break;
        default:
            fprintf(stderr, "mdm-bench: unknown option or missing value: %s\n", argv[optind - 1]);
            goto bad;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mdm-bench: unexpected argument: %s\n", argv[optind]);
        goto bad;
    }
    if (!c->url || !parse_url(c)) {
        fprintf(stderr, "mdm-bench: --url https://HOST[:PORT]/PATH is required\n");
        goto bad;
    }
    if (!c->cert != !c->key) {
        fprintf(stderr, "mdm-bench: --cert and --key go together\n");
        goto bad;
    }
    if (c->resume && !c->new_conn) {
        fprintf(stderr, "mdm-bench: --resume needs --new-conn\n");
        goto bad;
    }
    if (strcmp(c->verb, "checkin") == 0 && parse_checkin(c) != 0)
        goto bad;
    return 0;
bad_value:
    fprintf(stderr, "mdm-bench: bad value for --%s: %s\n", opts[idx].name, optarg);
bad:
    usage(stderr);
    return 2;
}

/* ---- setup ---- */

static int resolve(const struct cli *c, struct bench_options *o)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(c->host, c->port, &hints, &res);
    if (rc != 0 || !res) {
        fprintf(stderr, "mdm-bench: cannot resolve %s: %s\n", c->host, gai_strerror(rc));
        return -1;
    }
    memcpy(&o->addr, res->ai_addr, res->ai_addrlen);
    o->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static double cpu_seconds(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/* utime+stime of pid in seconds (every thread), or -1 when it cannot be read. */
static double proc_cpu_seconds(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
    unsigned long long ut = 0, stime = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                     &stime) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + stime) / (double)(hz > 0 ? hz : 100);
}

/* ---- report ---- */

struct report {
    const struct cli *cli;
    const struct bench_stats *st;
    double elapsed_s, user_s, sys_s;
    double server_s; /* server CPU over the measured phase; < 0 unknown */
    /* checkin */
    const struct ck_counts *counts;
    const struct ck_counts *enroll;
    double enroll_s;
    unsigned generated;
    long queued;
};

static bool is_checkin(const struct cli *c)
{
    return strcmp(c->verb, "checkin") == 0;
}

static const char *mode_name(const struct cli *c)
{
    if (is_checkin(c))
        return c->mode_arg;
    return !c->new_conn ? "keep-alive" : c->resume ? "new-conn-resume" : "new-conn";
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static uint64_t requests_done(const struct bench_stats *st)
{
    return st->completed[BENCH_OK] + bench_stats_errors(st);
}

static double per_request_us(double seconds, uint64_t n)
{
    return n ? seconds * 1e6 / (double)n : 0;
}

static void print_text(const struct report *r)
{
    const struct bench_stats *st = r->st;
    const struct cli *c = r->cli;
    const bench_hist_t *l = &st->latency, *h = &st->handshake;
    uint64_t ok = st->completed[BENCH_OK];
    printf("mdm-bench %s %s: %u connections, %s, %.2f s\n", c->verb, c->url, c->connections,
           mode_name(c), r->elapsed_s);
    if (is_checkin(c)) {
        printf("  fleet        %u Macs, identity %s, %u requests per visit, %u identities "
               "issued now\n",
               c->macs, c->signature ? "Mdm-Signature" : "mTLS", c->visit, r->generated);
        if (r->enroll)
            printf("  enroll       %llu enrolled, %llu given up, in %.1f s\n",
                   (unsigned long long)r->enroll->enrolled,
                   (unsigned long long)r->enroll->given_up, r->enroll_s);
        if (r->queued >= 0)
            printf("  queued       %ld commands (admin API bulk)\n", r->queued);
        const struct ck_counts *k = r->counts;
        printf("  sent         %llu Idle, %llu TokenUpdate, %llu Acknowledged; %llu commands "
               "received, %llu empty Idle replies, %llu visits\n",
               (unsigned long long)k->idle, (unsigned long long)k->token_update,
               (unsigned long long)k->ack, (unsigned long long)k->commands,
               (unsigned long long)k->empty_idle, (unsigned long long)k->visits);
    }
    printf("  requests     %llu ok, %llu errors", (unsigned long long)ok,
           (unsigned long long)bench_stats_errors(st));
    const char *sep = " (";
    for (int k = BENCH_OK + 1; k < BENCH_OUTCOMES; k++) {
        printf("%s%s %llu", sep, bench_outcome_name(k), (unsigned long long)st->completed[k]);
        sep = ", ";
    }
    printf("), %llu unfinished\n", (unsigned long long)st->unfinished);
    printf("  throughput   %.1f req/s\n", r->elapsed_s > 0 ? (double)ok / r->elapsed_s : 0);
    printf("  latency ms   p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f\n",
           ms(bench_hist_quantile(l, 0.5)), ms(bench_hist_quantile(l, 0.9)),
           ms(bench_hist_quantile(l, 0.99)), ms(bench_hist_quantile(l, 0.999)), ms(l->max),
           bench_hist_mean(l) / 1e6);
    printf("  connections  %llu opened, %llu handshakes (%llu resumed), %llu closed by server\n",
           (unsigned long long)st->connects, (unsigned long long)st->handshakes,
           (unsigned long long)st->resumed, (unsigned long long)st->server_closes);
    if (h->count)
        printf("  handshake ms p50 %.3f  p99 %.3f  max %.3f (connect start to TLS done)\n",
               ms(bench_hist_quantile(h, 0.5)), ms(bench_hist_quantile(h, 0.99)), ms(h->max));
    uint64_t n = requests_done(st);
    printf("  client CPU   %.1f us/request (user %.2f s, sys %.2f s)\n",
           per_request_us(r->user_s + r->sys_s, n), r->user_s, r->sys_s);
    if (r->server_s >= 0)
        printf("  server CPU   %.1f us/request (%.2f s, pid %ld)\n",
               per_request_us(r->server_s, n), r->server_s, c->server_pid);
    for (int k = BENCH_OK + 1; k < BENCH_OUTCOMES; k++)
        if (st->first_error[k][0])
            printf("  first %s error: %s\n", bench_outcome_name(k), st->first_error[k]);
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void json_hist(const char *name, const bench_hist_t *h)
{
    printf("\"%s\":{\"count\":%llu,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
           "\"max\":%.1f,\"mean\":%.1f}",
           name, (unsigned long long)h->count, bench_hist_quantile(h, 0.5) / 1e3,
           bench_hist_quantile(h, 0.9) / 1e3, bench_hist_quantile(h, 0.99) / 1e3,
           bench_hist_quantile(h, 0.999) / 1e3, h->count ? h->max / 1e3 : 0.0,
           bench_hist_mean(h) / 1e3);
}

static void json_counts(const char *name, const struct ck_counts *k)
{
    printf("\"%s\":{\"authenticate\":%llu,\"token_update\":%llu,\"idle\":%llu,\"ack\":%llu,"
           "\"commands\":%llu,\"empty_idle\":%llu,\"enrolled\":%llu,\"given_up\":%llu,"
           "\"visits\":%llu,\"sign_errors\":%llu}",
           name, (unsigned long long)k->authenticate, (unsigned long long)k->token_update,
           (unsigned long long)k->idle, (unsigned long long)k->ack,
           (unsigned long long)k->commands, (unsigned long long)k->empty_idle,
           (unsigned long long)k->enrolled, (unsigned long long)k->given_up,
           (unsigned long long)k->visits, (unsigned long long)k->sign_errors);
}

static void print_json(const struct report *r)
{
    const struct bench_stats *st = r->st;
    const struct cli *c = r->cli;
    uint64_t ok = st->completed[BENCH_OK], n = requests_done(st);
    printf("{\"scenario\":");
    json_string(c->verb);
    printf(",\"url\":");
    json_string(c->url);
    printf(",\"mode\":\"%s\",\"connections\":%u,\"elapsed_s\":%.3f,", mode_name(c),
           c->connections, r->elapsed_s);
    if (is_checkin(c)) {
        printf("\"macs\":%u,\"identity\":\"%s\",\"visit\":%u,\"identities_issued\":%u,"
               "\"enroll_s\":%.3f,\"queued_commands\":%ld,",
               c->macs, c->signature ? "signature" : "mtls", c->visit, r->generated,
               r->enroll_s, r->queued);
        if (r->enroll) {
            json_counts("enroll", r->enroll);
            printf(",");
        }
        json_counts("sent", r->counts);
        printf(",");
    }
    printf("\"requests\":%llu,\"ok\":%llu,\"errors\":%llu,\"unfinished\":%llu,",
           (unsigned long long)n, (unsigned long long)ok,
           (unsigned long long)bench_stats_errors(st), (unsigned long long)st->unfinished);
    printf("\"errors_by_kind\":{");
    for (int k = BENCH_OK + 1; k < BENCH_OUTCOMES; k++)
        printf("%s\"%s\":%llu", k == BENCH_OK + 1 ? "" : ",", bench_outcome_name(k),
               (unsigned long long)st->completed[k]);
    printf("},\"rps\":%.1f,", r->elapsed_s > 0 ? (double)ok / r->elapsed_s : 0);
    json_hist("latency_us", &st->latency);
    printf(",");
    json_hist("handshake_us", &st->handshake);
    printf(",\"connects\":%llu,\"handshakes\":%llu,\"resumed\":%llu,\"server_closes\":%llu,",
           (unsigned long long)st->connects, (unsigned long long)st->handshakes,
           (unsigned long long)st->resumed, (unsigned long long)st->server_closes);
    printf("\"client_cpu_us_per_request\":%.2f,\"client_user_s\":%.3f,\"client_sys_s\":%.3f,",
           per_request_us(r->user_s + r->sys_s, n), r->user_s, r->sys_s);
    if (r->server_s >= 0)
        printf("\"server_pid\":%ld,\"server_cpu_s\":%.3f,\"server_cpu_us_per_request\":%.2f,",
               c->server_pid, r->server_s, per_request_us(r->server_s, n));
    printf("\"first_errors\":{");
    const char *sep = "";
    for (int k = BENCH_OK + 1; k < BENCH_OUTCOMES; k++) {
        if (!st->first_error[k][0])
            continue;
        printf("%s\"%s\":", sep, bench_outcome_name(k));
        json_string(st->first_error[k]);
        sep = ",";
    }
    printf("}}\n");
}

/* ---- main ---- */

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: the ring wait returns and the run stops */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* checkin's phases before the measured one: enroll, then queue commands (answer mode). */
static int checkin_setup(const struct cli *cli, struct bench_options o, bench_fleet_t *fleet,
                         struct report *rep, struct ck_counts *enroll)
{
    if (!cli->no_enroll) {
        struct bench_scenario sc;
        struct bench_stats *st = calloc(1, sizeof(*st));
        if (!st || bench_scenario_checkin(&sc, fleet, CK_ENROLL, o.connections, 1, enroll) != 0) {
            free(st);
            return -1;
        }
        o.scenario = &sc;
        o.duration_ms = 3600000; /* bounded by the Macs: every slot ends when its Macs did */
        o.requests = 0;
        fprintf(stderr, "mdm-bench: enrolling %u Macs over %u connections\n", cli->macs,
                o.connections);
        int ret = bench_run(&o, st);
        sc.free(sc.arg);
        rep->enroll = enroll;
        rep->enroll_s = (double)st->elapsed_ns / 1e9;
        fprintf(stderr, "mdm-bench: enrolled %llu Macs (%llu given up, %llu errors) in %.1f s\n",
                (unsigned long long)enroll->enrolled, (unsigned long long)enroll->given_up,
                (unsigned long long)bench_stats_errors(st), rep->enroll_s);
        for (int k = BENCH_OK + 1; k < BENCH_OUTCOMES; k++)
            if (st->first_error[k][0])
                fprintf(stderr, "mdm-bench: enroll: first %s error: %s\n",
                        bench_outcome_name(k), st->first_error[k]);
        free(st);
        if (ret != 0 || enroll->enrolled == 0 || interrupted)
            return -1;
    }
    if (!cli->signature && bench_fleet_prepare_tls(fleet, &interrupted) != 0) {
        fprintf(stderr, "mdm-bench: cannot load a Mac's identity into a TLS context\n");
        return -1;
    }
    if (cli->mode == CK_ANSWER) {
        fprintf(stderr, "mdm-bench: queueing %u commands per Mac through %s\n", cli->commands,
                cli->api_url);
        rep->queued = bench_queue_commands(fleet, cli->api_host, cli->api_port, cli->api_key,
                                           cli->commands);
        if (rep->queued < 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct cli cli;
    int code = parse_cli(&cli, argc, argv);
    if (code != 0)
        return code;
    mdm_log_setup(MDM_LOG_WARN, false);

    struct bench_options o = {
        .sni = cli.host,
        .connections = cli.connections,
        .duration_ms = cli.duration_ms,
        .requests = cli.requests,
        .timeout_ms = cli.timeout_ms,
        .new_conn = cli.new_conn,
        .resume = cli.resume,
        .interrupted = &interrupted,
    };
    struct bench_scenario sc;
    bool have_sc = false;
    mdm_tls_ctx_t *tls = NULL;
    bench_fleet_t fleet = {0};
    struct ck_counts counts = {0}, enroll = {0};
    struct report rep = {.cli = &cli, .server_s = -1, .queued = -1};
    struct bench_stats *st = calloc(1, sizeof(*st));
    code = 1;
    if (!st || resolve(&cli, &o) != 0)
        goto out;
    struct mdm_tls_client_opts to = {.ca_path = cli.ca, .cert_path = cli.cert, .key_path = cli.key};
    int ret = mdm_tls_ctx_new_client(&tls, &to);
    if (ret != 0) {
        fprintf(stderr, "mdm-bench: TLS client setup failed: %s\n", mdm_strerror(ret));
        goto out;
    }
    o.tls = tls;
    install_signals();
    if (is_checkin(&cli)) {
        if (bench_fleet_load(&fleet, cli.instance, cli.cache, cli.macs, cli.rsa) != 0)
            goto out;
        fleet.signature = cli.signature;
        snprintf(fleet.prefix, sizeof(fleet.prefix), "%s",
                 strcmp(cli.path, "/") == 0 ? "" : cli.path);
        size_t pl = strlen(fleet.prefix);
        if (pl && fleet.prefix[pl - 1] == '/')
            fleet.prefix[pl - 1] = '\0';
        snprintf(fleet.host, sizeof(fleet.host), "%s", cli.host_header);
        rep.generated = fleet.generated;
        if (checkin_setup(&cli, o, &fleet, &rep, &enroll) != 0)
            goto out;
        ret = bench_scenario_checkin(&sc, &fleet, cli.mode, o.connections, cli.visit, &counts);
        rep.counts = &counts;
    } else {
        ret = bench_scenario_http_get(&sc, cli.host_header, cli.path);
    }
    if (ret != 0) {
        fprintf(stderr, "mdm-bench: %s\n", mdm_strerror(ret));
        goto out;
    }
    have_sc = true;
    o.scenario = &sc;

    struct rusage ru0, ru1;
    double srv0 = cli.server_pid ? proc_cpu_seconds(cli.server_pid) : -1;
    getrusage(RUSAGE_SELF, &ru0);
    ret = bench_run(&o, st);
    getrusage(RUSAGE_SELF, &ru1);
    double srv1 = cli.server_pid ? proc_cpu_seconds(cli.server_pid) : -1;
    if (ret != 0) {
        fprintf(stderr, "mdm-bench: cannot run: %s\n", mdm_strerror(ret));
        goto out;
    }
    rep.st = st;
    rep.elapsed_s = (double)st->elapsed_ns / 1e9;
    rep.user_s = cpu_seconds(&ru1.ru_utime) - cpu_seconds(&ru0.ru_utime);
    rep.sys_s = cpu_seconds(&ru1.ru_stime) - cpu_seconds(&ru0.ru_stime);
    if (srv0 >= 0 && srv1 >= 0)
        rep.server_s = srv1 - srv0;
    else if (cli.server_pid)
        fprintf(stderr, "mdm-bench: cannot read /proc/%ld/stat\n", cli.server_pid);
    if (cli.json)
        print_json(&rep);
    else
        print_text(&rep);
    code = st->completed[BENCH_OK] > 0 ? 0 : 1;
out:
    if (have_sc)
        sc.free(sc.arg);
    bench_fleet_free(&fleet);
    mdm_tls_ctx_free(tls);
    free(st);
    return code;
}
