/*
 * Pushes to a fleet, end to end: a real mdmd (2 shards) pushing to the fake APNs
 * ($FAKE_APNS_BIN) with an uploaded push certificate, and 1,000 simulated Macs.
 *
 * - the fleet enrolls (several threads), each Mac with its own push token and PushMagic;
 * - one bulk POST /api/v1/commands queues a command for all: the fake records one push per
 *   token (1,000 distinct tokens, every one a fleet Mac's), headers and body checked on a
 *   sample;
 * - "APNs wakes the Mac": for every recorded token the Mac that owns it connects, gets the
 *   command and acknowledges it; every history says acknowledged;
 * - after the coalescing window, POST /api/v1/push {"all":true}: 1,000 more pushes, one per
 *   token; a Mac without a token is counted as skipped_no_token; the call is audited;
 * - POST /api/v1/push {"udids":[...]} with an unknown UDID, and malformed bodies.
 *
 * Prints the timing figures (enqueue -> all pushes recorded, pushes/s) on stdout.
 */
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/sim.h"
#include "check.h"
#include "core/common.h"
#include "core/https_client.h"
#include "admin_api.h"
#include "harness.h"

#define TOPIC "com.apple.mgmt.External.11111111-2222-3333-4444-555555555555"
#define COALESCE_MS 1000
/* Fleet size: 1,000 in the suite; MDM_PUSH_FLEET (up to 20,000) makes the same run a
 * benchmark (docs/benchmarks.md), with the per-phase deadline scaled to match. */
static int FLEET = 4000; /* well past a shard's h2c request pool (1024): a regression
                           * that strands waiting pushes shows up at this size */
#define THREADS 8
#define DEADLINE_MS (60000LL * (FLEET > 1000 ? FLEET / 1000 : 1)) /* per phase */

static char dir[512], work[600], script[700], rec[700];
static char api_key[128];
static server_proc_t srv;
static sim_env_t env;
static int apns_port;
static sim_mac_t *fleet;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Copies what mdmd printed to our stderr without blocking (a full pipe would block it). */
static void drain_server(void)
{
    fcntl(srv.out_fd, F_SETFL, O_NONBLOCK);
    char buf[4096];
    ssize_t r;
    while ((r = read(srv.out_fd, buf, sizeof(buf))) > 0)
        (void)!write(2, buf, (size_t)r);
}

/* One API request on a new connection (thread-safe). */
static int api(const char *method, const char *path, const char *body, json_t **out)
{
    return admin_api(srv.admin_port, dir, api_key, method, path, NULL, body, out);
}


static long long jint(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* ---- the fake's record ------------------------------------------------------------------ */

/* Fleet Macs sorted by token hex, to find a record's Mac. */
struct tok {
    char hex[65];
    int mac;
};
static struct tok *toks;

static int tok_cmp(const void *a, const void *b)
{
    return strcmp(((const struct tok *)a)->hex, ((const struct tok *)b)->hex);
}

static int mac_of_token(const char *hex)
{
    struct tok key;
    snprintf(key.hex, sizeof(key.hex), "%s", hex);
    struct tok *t = bsearch(&key, toks, FLEET, sizeof(*toks), tok_cmp);
    return t ? t->mac : -1;
}

/*
 * Reads the record from line `from` on: complete lines with status 200 whose token is a fleet
 * Mac's. seen[i] counts pushes to Mac i (may be NULL); order (may be NULL) receives Mac
 * indexes in first-push order. Returns the number of distinct fleet Macs pushed, and sets
 * *lines to the total number of complete lines in the file.
 */
static int scan_record(int from, int *seen, int *order, int *lines)
{
    FILE *f = fopen(rec, "r");
    *lines = 0;
    if (!f)
        return 0;
    int *local = seen ? NULL : calloc(FLEET, sizeof(int));
    int *cnt = seen ? seen : local;
    if (seen)
        memset(seen, 0, FLEET * sizeof(int));
    char line[4096];
    int distinct = 0, n = 0;
    while (fgets(line, sizeof(line), f)) {
        size_t len = strlen(line);
        if (len == 0 || line[len - 1] != '\n')
            break; /* being written */
        if (n++ < from)
            continue;
        if (!strstr(line, "\"status\":200,"))
            continue;
        const char *t = strstr(line, "\"token\":\"");
        if (!t)
            continue;
        t += 9;
        char hex[65];
        size_t k = 0;
        while (k < 64 && t[k] && t[k] != '"') {
            hex[k] = t[k];
            k++;
        }
        hex[k] = '\0';
        int i = mac_of_token(hex);
        if (i < 0 || !cnt)
            continue;
        if (cnt[i]++ == 0) {
            if (order)
                order[distinct] = i;
            distinct++;
        }
    }
    *lines = n;
    fclose(f);
    free(local);
    return distinct;
}

/* Waits until the pushes recorded after line `from` reach every fleet Mac; returns the
 * distinct count reached (FLEET on success). */
static int wait_all_pushed(int from, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    int lines, n = 0;
    while ((n = scan_record(from, NULL, NULL, &lines)) < FLEET && now_ms() < end)
        sleep_ms(5);
    return n;
}

static int record_lines(void)
{
    int lines;
    scan_record(0, NULL, NULL, &lines);
    return lines;
}

/* Prints the records after line `from` whose token appears more than once there, or that
 * belong to no fleet Mac, to explain a count that is off. */
static void dump_extra_records(int from)
{
    FILE *f = fopen(rec, "r");
    if (!f)
        return;
    int *cnt = calloc(FLEET, sizeof(int));
    char line[4096];
    for (int pass = 0; cnt && pass < 2; pass++) {
        rewind(f);
        for (int n = 0; fgets(line, sizeof(line), f); n++) {
            const char *t = n < from ? NULL : strstr(line, "\"token\":\"");
            if (!t)
                continue;
            char hex[65];
            snprintf(hex, sizeof(hex), "%.64s", t + 9);
            int i = mac_of_token(hex);
            if (pass == 0 && i >= 0)
                cnt[i]++;
            else if (pass == 1 && (i < 0 || cnt[i] > 1))
                fprintf(stderr, "record %d (mac %d): %.400s", n, i, line);
        }
    }
    free(cnt);
    fclose(f);
}

/* ---- the fleet ---------------------------------------------------------------------------- */

struct part {
    int from, to;
    const int *order; /* wake: Mac indexes in push order */
    const char *uuid;
    long long deadline;
    int made, enrolled, received, acked, history_ok;
};

static void *enroll_worker(void *arg)
{
    struct part *p = arg;
    for (int i = p->from; i < p->to && now_ms() < p->deadline; i++) {
        if (sim_mac_init(&fleet[i], &env, NULL, (unsigned)i) != 0)
            break;
        p->made++;
        if (sim_authenticate(&fleet[i], NULL) == 200 &&
            sim_token_update(&fleet[i], NULL, 0, NULL) == 200)
            p->enrolled++;
        sim_mac_disconnect(&fleet[i]); /* keep file descriptors bounded */
    }
    mdm_tls_thread_cleanup();
    return NULL;
}

/* APNs wakes the Mac: it connects, gets the command, acknowledges; then its history. */
static void *wake_worker(void *arg)
{
    struct part *p = arg;
    for (int k = p->from; k < p->to && now_ms() < p->deadline; k++) {
        sim_mac_t *m = &fleet[p->order[k]];
        sim_cmd_t cmd, next;
        if (sim_connect_idle(m, &cmd) == 200 && strcmp(cmd.uuid, p->uuid) == 0 &&
            strcmp(cmd.request_type, "SecurityInfo") == 0) {
            p->received++;
            if (sim_respond(m, &cmd, SIM_ACKNOWLEDGED, &next) == 200 && next.uuid[0] == '\0')
                p->acked++;
        }
        sim_mac_disconnect(m);
    }
    for (int k = p->from; k < p->to && now_ms() < p->deadline; k++) {
        sim_mac_t *m = &fleet[p->order[k]];
        char path[160];
        snprintf(path, sizeof(path), "/api/v1/devices/%s/commands", m->udid);
        json_t *j = NULL;
        int st = api("GET", path, NULL, &j);
        json_t *c = json_array_get(json_object_get(j, "commands"), 0);
        if (st == 200 && json_array_size(json_object_get(j, "commands")) == 1 &&
            strcmp(jstr(c, "command_uuid"), p->uuid) == 0 &&
            strcmp(jstr(c, "status"), "acknowledged") == 0) {
            p->history_ok++;
        } else {
            char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
            fprintf(stderr, "history of %s: HTTP %d %.600s\n", m->udid, st,
                    text ? text : "(no body)");
            free(text);
        }
        json_decref(j);
    }
    mdm_tls_thread_cleanup();
    return NULL;
}

static int run_parts(void *(*fn)(void *), struct part *parts, int n_items, const int *order,
                     const char *uuid)
{
    pthread_t th[THREADS];
    int started = 0;
    long long deadline = now_ms() + DEADLINE_MS;
    for (int t = 0; t < THREADS; t++) {
        parts[t] = (struct part){.from = t * n_items / THREADS,
                                 .to = (t + 1) * n_items / THREADS,
                                 .order = order,
                                 .uuid = uuid,
                                 .deadline = deadline};
        if (pthread_create(&th[t], NULL, fn, &parts[t]) != 0)
            break;
        started++;
    }
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    return started;
}

static void enroll_fleet(void)
{
    long long t0 = now_ms();
    struct part parts[THREADS];
    int started = run_parts(enroll_worker, parts, FLEET, NULL, NULL);
    int made = 0, enrolled = 0;
    for (int t = 0; t < started; t++) {
        made += parts[t].made;
        enrolled += parts[t].enrolled;
    }
    fprintf(stderr, "fleet: %d Macs, %d enrolled in %lld ms\n", made, enrolled, now_ms() - t0);
    CHECK_EQ_INT(started, THREADS);
    CHECK_EQ_INT(enrolled, FLEET);
    toks = calloc(FLEET, sizeof(*toks));
    for (int i = 0; toks && i < FLEET; i++) {
        mdm_hex_encode(fleet[i].push_token, sizeof(fleet[i].push_token), toks[i].hex);
        toks[i].mac = i;
    }
    if (toks)
        qsort(toks, FLEET, sizeof(*toks), tok_cmp);
}

/* ---- the tests ---------------------------------------------------------------------------- */

/* Checks one recorded push: headers and body for Mac i. */
static void check_sample(int i)
{
    char hex[65], path[100];
    mdm_hex_encode(fleet[i].push_token, sizeof(fleet[i].push_token), hex);
    snprintf(path, sizeof(path), "\"path\":\"/3/device/%s\"", hex);
    FILE *f = fopen(rec, "r");
    CHECK(f != NULL);
    if (!f)
        return;
    char line[4096];
    json_t *p = NULL;
    while (!p && fgets(line, sizeof(line), f))
        if (strstr(line, path))
            p = json_loads(line, 0, NULL);
    fclose(f);
    CHECK(p != NULL);
    char body[128];
    snprintf(body, sizeof(body), "{\"mdm\":\"%s\"}", fleet[i].push_magic);
    CHECK_STR(jstr(p, "method"), "POST");
    CHECK_STR(jstr(p, "token"), hex);
    CHECK_STR(jstr(p, "topic"), TOPIC);
    CHECK_STR(jstr(p, "client_topic"), TOPIC);
    CHECK_STR(jstr(p, "push_type"), "mdm");
    CHECK_STR(jstr(p, "priority"), "10");
    CHECK(atoll(jstr(p, "expiration")) > (long long)time(NULL));
    CHECK_STR(jstr(p, "body"), body);
    json_decref(p);
}

static void test_enqueue_and_wake(void)
{
    json_t *req = json_pack("{s:[], s:s}", "udids", "request_type", "SecurityInfo");
    json_t *udids = json_object_get(req, "udids");
    for (int i = 0; i < FLEET; i++)
        json_array_append_new(udids, json_string(fleet[i].udid));
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    int from = record_lines();

    long long t0 = now_ms();
    json_t *j = NULL;
    CHECK_EQ_INT(api("POST", "/api/v1/commands", body, &j), 201);
    long long t_answer = now_ms();
    free(body);
    char uuid[64];
    snprintf(uuid, sizeof(uuid), "%s", jstr(j, "command_uuid"));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "queued")), FLEET);
    json_decref(j);
    int pushed = wait_all_pushed(from, DEADLINE_MS);
    long long t_pushed = now_ms();
    CHECK_EQ_INT(pushed, FLEET);

    /* One push per token, no more; every token a fleet Mac's. */
    int *seen = calloc(FLEET, sizeof(int)), *order = calloc(FLEET, sizeof(int));
    int lines;
    CHECK_EQ_INT(scan_record(from, seen, order, &lines), FLEET);
    int dup = 0;
    for (int i = 0; i < FLEET; i++)
        dup += seen[i] > 1;
    CHECK_EQ_INT(dup, 0);
    CHECK_EQ_INT(lines - from, FLEET);
    for (int i = 0; i < FLEET; i += FLEET / 10)
        check_sample(i);
    check_sample(FLEET - 1);

    printf("enqueue: 1 command to %d Macs, API answered in %lld ms; all %d pushes recorded by "
           "the fake %lld ms after the call (%.0f pushes/s)\n",
           FLEET, t_answer - t0, FLEET, t_pushed - t0,
           (double)FLEET * 1000.0 / (double)(t_pushed - t0 > 0 ? t_pushed - t0 : 1));

    /* APNs wakes the Macs, in the order the fake received the pushes. */
    struct part parts[THREADS];
    int started = run_parts(wake_worker, parts, FLEET, order, uuid);
    int received = 0, acked = 0, history_ok = 0;
    for (int t = 0; t < started; t++) {
        received += parts[t].received;
        acked += parts[t].acked;
        history_ok += parts[t].history_ok;
    }
    long long t_done = now_ms();
    CHECK_EQ_INT(received, FLEET);
    CHECK_EQ_INT(acked, FLEET);
    CHECK_EQ_INT(history_ok, FLEET);
    printf("loop: queued -> pushed -> %d Macs woke, fetched and acknowledged (histories "
           "checked) in %lld ms after the call\n",
           acked, t_done - t0);
    free(seen);
    free(order);
    drain_server();
}

static void test_push_all(void)
{
    /* A Mac that authenticated but sent no TokenUpdate: no token, skipped. */
    sim_mac_t half;
    CHECK_EQ_INT(sim_mac_init(&half, &env, NULL, FLEET + 1), 0);
    CHECK_EQ_INT(sim_authenticate(&half, NULL), 200);
    sim_mac_disconnect(&half);

    sleep_ms(COALESCE_MS + 200); /* the enqueue's pushes' window is over */
    int from = record_lines();
    long long t0 = now_ms();
    json_t *j = NULL;
    CHECK_EQ_INT(api("POST", "/api/v1/push", "{\"all\":true}", &j), 202);
    long long t_answer = now_ms();
    CHECK_EQ_INT(jint(j, "requested"), FLEET + 1);
    CHECK_EQ_INT(jint(j, "queued"), FLEET);
    CHECK_EQ_INT(jint(j, "skipped_no_token"), 1);
    CHECK_EQ_INT(jint(j, "failed"), 0);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "failures")), 0);
    json_decref(j);
    int pushed = wait_all_pushed(from, DEADLINE_MS);
    long long t_pushed = now_ms();
    CHECK_EQ_INT(pushed, FLEET);
    sleep_ms(300);
    CHECK_EQ_INT(record_lines() - from, FLEET); /* exactly one per token */
    if (record_lines() - from != FLEET)
        dump_extra_records(from);
    check_sample(FLEET / 2);
    printf("push all: %d devices, API answered (every device handed its push to the pusher) "
           "in %lld ms; all %d pushes recorded %lld ms after the call (%.0f pushes/s)\n",
           FLEET + 1, t_answer - t0, FLEET, t_pushed - t0,
           (double)FLEET * 1000.0 / (double)(t_pushed - t0 > 0 ? t_pushed - t0 : 1));

    /* Inside the window: coalesced (queued, no new push since no command waits). */
    char body[256];
    snprintf(body, sizeof(body), "{\"udids\":[\"%s\",\"%s\",\"NO-SUCH-MAC\"]}", fleet[0].udid,
             half.udid);
    CHECK_EQ_INT(api("POST", "/api/v1/push", body, &j), 202);
    CHECK_EQ_INT(jint(j, "requested"), 3);
    CHECK_EQ_INT(jint(j, "queued"), 1);
    CHECK_EQ_INT(jint(j, "skipped_no_token"), 1);
    CHECK_EQ_INT(jint(j, "failed"), 1);
    json_t *f = json_array_get(json_object_get(j, "failures"), 0);
    CHECK_STR(jstr(f, "udid"), "NO-SUCH-MAC");
    CHECK_EQ_INT(jint(f, "status"), 404);
    json_decref(j);
    sleep_ms(COALESCE_MS + 300);
    CHECK_EQ_INT(record_lines() - from, FLEET);
    if (record_lines() - from != FLEET)
        dump_extra_records(from);
    sim_mac_dispose(&half);

    /* Malformed calls. */
    CHECK_EQ_INT(api("POST", "/api/v1/push", "{}", NULL), 422);
    CHECK_EQ_INT(api("POST", "/api/v1/push", "{\"all\":false}", NULL), 422);
    CHECK_EQ_INT(api("POST", "/api/v1/push", "{\"udids\":[]}", NULL), 422);
    CHECK_EQ_INT(api("POST", "/api/v1/push", "{\"udids\":[\"a/b\"]}", NULL), 422);
    CHECK_EQ_INT(api("POST", "/api/v1/push", "{\"all\":true,\"udids\":[\"A\"]}", NULL), 422);
    CHECK_EQ_INT(api("POST", "/api/v1/push", "{\"all\":true,\"x\":1}", NULL), 422);
    CHECK_EQ_INT(api("POST", "/api/v1/push", "[", NULL), 400);
    CHECK_EQ_INT(api("GET", "/api/v1/push", NULL, NULL), 405);

    /* Audited. */
    CHECK_EQ_INT(api("GET", "/api/v1/audit", NULL, &j), 200);
    json_t *events = json_object_get(j, "events");
    int bulk_ok = 0;
    size_t i;
    json_t *ev;
    char queued_text[32];
    snprintf(queued_text, sizeof(queued_text), "queued %d", FLEET);
    json_array_foreach(events, i, ev) {
        if (strcmp(jstr(ev, "action"), "push.bulk") == 0 && jint(ev, "status") == 202 &&
            strcmp(jstr(ev, "target"), "all devices") == 0 &&
            strstr(jstr(ev, "detail"), queued_text))
            bulk_ok++;
    }
    CHECK_EQ_INT(bulk_ok, 1);
    json_decref(j);
    drain_server();
}

/* ---- set-up ------------------------------------------------------------------------------- */

static pid_t start_fake(void)
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
        execl(getenv("FAKE_APNS_BIN"), "fake-apns", "--cert", MDM_TEST_DATA "/server.crt",
              "--key", MDM_TEST_DATA "/server.key", "--ca", ca, "--script", script, "--record",
              rec, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    char line[64] = "";
    FILE *f = fdopen(pfd[0], "r");
    if (!f || !fgets(line, sizeof(line), f) || sscanf(line, "listening %d", &apns_port) != 1)
        apns_port = 0;
    if (f)
        fclose(f);
    return pid;
}

static char *slurp(const char *name)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/%s", work, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *c = calloc(1, 65536);
    if (c && fread(c, 1, 65535, f) == 0) {
        free(c);
        c = NULL;
    }
    fclose(f);
    return c;
}

static int upload_cert(void)
{
    char *c = slurp("push.crt"), *k = slurp("push.key");
    json_t *b = json_pack("{s:s, s:s}", "certificate_pem", c ? c : "", "key_pem", k ? k : "");
    char *text = json_dumps(b, JSON_COMPACT);
    int st = api("PUT", "/api/v1/push-certificate", text, NULL);
    free(text);
    json_decref(b);
    free(c);
    free(k);
    return st;
}

int main(void)
{
    const char *fleet_env = getenv("MDM_PUSH_FLEET");
    if (fleet_env && atoi(fleet_env) >= 100 && atoi(fleet_env) <= 20000)
        FLEET = atoi(fleet_env);
    if (!getenv("FAKE_APNS_BIN")) {
        fprintf(stderr, "FAKE_APNS_BIN is not set\n");
        return 77;
    }
    long long t_start = now_ms();
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("push_bulk"));
    snprintf(work, sizeof(work), "%s-apns", dir);
    snprintf(script, sizeof(script), "%s/script", work);
    snprintf(rec, sizeof(rec), "%s/record.jsonl", work);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "rm -rf '%s' && mkdir -p '%s' && cd '%s' && echo '* 200' > script && "
             "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt "
             "-subj '/CN=Push CA' -days 30 2>/dev/null && "
             "openssl req -x509 -CA ca.crt -CAkey ca.key -newkey rsa:2048 -nodes "
             "-keyout push.key -out push.crt -subj '/UID=" TOPIC "/CN=APSP:test/C=US' "
             "-days 30 2>/dev/null",
             work, work, work);
    if (system(cmd) != 0) {
        fprintf(stderr, "openssl failed\n");
        return 99;
    }
    pid_t fake = start_fake();
    if (fake <= 0 || apns_port <= 0) {
        fprintf(stderr, "fake-apns did not start\n");
        return 99;
    }
    const char *args[] = {"init", dir, "--hostnames", "localhost,127.0.0.1", NULL};
    char out[8192];
    if (harness_run(dir, args, 60000, out, sizeof(out)) != 0 ||
        admin_key_from_init(out, api_key, sizeof(api_key)) != 0) {
        kill(fake, SIGKILL);
        return 99;
    }
    char set_url[128], set_addr[128], set_coalesce[64];
    snprintf(set_url, sizeof(set_url), "apns.url=https://localhost:%d", apns_port);
    snprintf(set_addr, sizeof(set_addr), "apns.address=127.0.0.1:%d", apns_port);
    snprintf(set_coalesce, sizeof(set_coalesce), "apns.coalesce_ms=%d", COALESCE_MS);
    const char *extra[] = {"--shards", "2", "--set", set_url, "--set", set_addr,
                           "--set", "apns.ca=" MDM_TEST_DATA "/test-ca.crt",
                           "--set", set_coalesce, "--set", "log.level=warn", NULL};
    if (harness_start(&srv, dir, extra) != 0) {
        kill(fake, SIGKILL);
        return 99;
    }
    char simdir[700];
    snprintf(simdir, sizeof(simdir), "%s/sim", work);
    CHECK_EQ_INT(sim_env_init(&env, dir, simdir, srv.device_port), 0);
    snprintf(env.topic, sizeof(env.topic), "%s", TOPIC);

    /* Without a push certificate a bulk push is 503. */
    CHECK_EQ_INT(api("POST", "/api/v1/push", "{\"all\":true}", NULL), 503);
    CHECK_EQ_INT(upload_cert(), 200);

    fleet = calloc(FLEET, sizeof(*fleet));
    CHECK(fleet != NULL);
    if (fleet) {
        enroll_fleet();
        drain_server();
        if (toks) {
            test_enqueue_and_wake();
            test_push_all();
        }
    }
    for (int i = 0; fleet && i < FLEET; i++)
        if (fleet[i].env)
            sim_mac_dispose(&fleet[i]);
    free(fleet);
    free(toks);

    CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);
    kill(fake, SIGTERM);
    waitpid(fake, NULL, 0);
    printf("push_bulk: total %lld ms\n", now_ms() - t_start);
    return check_finish("integ-push-bulk");
}
