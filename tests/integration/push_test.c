/*
 * APNs pushes end to end: a real mdmd pushing to the fake APNs ($FAKE_APNS_BIN) over HTTP/2 +
 * TLS with an uploaded push certificate (signed by a CA the fake trusts, made with the openssl
 * CLI), simulated Macs (bench/sim) enrolling and polling.
 *
 * - the loop: queue a command -> the fake records a POST for the Mac's token with the right
 *   headers and body -> the Mac connects and gets the command;
 * - 410 marks the token invalid: no push for the next command, POST .../push is 409, a new
 *   TokenUpdate makes pushes flow again;
 * - 503 then 200 (the script is changed between attempts): retried and delivered;
 * - coalescing: 5 commands inside the window -> 1 push, then one more at the window's end
 *   because the commands still wait;
 * - without a push certificate POST .../push is 503;
 * - keep-alive: with apns.ping_interval_ms short, an idle connection survives several
 *   intervals (PINGs acked) and the next push goes over the same connection; with the fake
 *   frozen (SIGSTOP) the PING goes unanswered, the connection is closed ("no PING ack" in
 *   the log) and the next push goes over a new one;
 * - 429 then 200: retried and delivered;
 * - a connection dropped mid-stream (`drop`): the push is resent on a new connection and
 *   delivered once the script says 200;
 * - GOAWAY that excludes the stream: resent on a new connection and delivered;
 * - 403: recorded on the device (last_push status 403, reason BadCertificate);
 * - fake restarted with --max-streams 1 and slow answers: 20 devices pushed at once are all
 *   delivered (h2c queues what exceeds the limit).
 */
#include <jansson.h>
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
#include "core/plist.h"
#include "core/https_client.h"
#include "admin_api.h"
#include "harness.h"

#define TOPIC "com.apple.mgmt.External.11111111-2222-3333-4444-555555555555"
#define COALESCE_MS 1500
#define PING_MS 300

static char dir[512], work[600], script[700], rec[700];
static char api_key[128];
static server_proc_t srv;
static sim_env_t env;
static int apns_port;
static pid_t fake_pid;
static int fake_max_streams; /* 0 = the fake's default */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int api(const char *method, const char *path, const char *body, json_t **out)
{
    return admin_api(srv.admin_port, dir, api_key, method, path, NULL, body, out);
}

static void write_script(const char *text)
{
    char tmp[720];
    snprintf(tmp, sizeof(tmp), "%s.tmp", script);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
    rename(tmp, script);
}

static void token_hex(const sim_mac_t *m, char out[65])
{
    mdm_hex_encode(m->push_token, sizeof(m->push_token), out);
}

/* Records for m's current token (with status st, or any when st == 0). */
static int count_pushes(const sim_mac_t *m, int st)
{
    char hex[65], path[100], status[32];
    token_hex(m, hex);
    snprintf(path, sizeof(path), "\"path\":\"/3/device/%s\"", hex);
    snprintf(status, sizeof(status), "\"status\":%d,", st);
    FILE *f = fopen(rec, "r");
    if (!f)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, path) && (st == 0 || strstr(line, status)))
            n++;
    fclose(f);
    return n;
}

static bool wait_pushes(const sim_mac_t *m, int st, int n, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (count_pushes(m, st) >= n)
            return true;
        sleep_ms(50);
    }
    return false;
}

/* The last record for m's token, parsed. */
static json_t *last_push(const sim_mac_t *m)
{
    char hex[65], path[100];
    token_hex(m, hex);
    snprintf(path, sizeof(path), "\"path\":\"/3/device/%s\"", hex);
    FILE *f = fopen(rec, "r");
    if (!f)
        return NULL;
    char line[4096];
    json_t *j = NULL;
    while (fgets(line, sizeof(line), f)) {
        if (!strstr(line, path))
            continue;
        json_decref(j);
        j = json_loads(line, 0, NULL);
    }
    fclose(f);
    return j;
}


static int enqueue(const sim_mac_t *m)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/commands", m->udid);
    return api("POST", path, "{\"request_type\":\"SecurityInfo\"}", NULL);
}

static int push(const sim_mac_t *m)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/push", m->udid);
    return api("POST", path, "{}", NULL);
}

static json_t *get_device(const sim_mac_t *m)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/devices/%s", m->udid);
    json_t *j = NULL;
    CHECK_EQ_INT(api("GET", path, NULL, &j), 200);
    return j;
}

static void enroll(sim_mac_t *m, unsigned seq)
{
    CHECK_EQ_INT(sim_mac_init(m, &env, NULL, seq), 0);
    CHECK_EQ_INT(sim_authenticate(m, NULL), 200);
    CHECK_EQ_INT(sim_token_update(m, NULL, 0, NULL), 200);
}

static char loop_udid[64]; /* the Mac of test_loop, checked again after a restart */

static void test_loop(void)
{
    sim_mac_t m;
    enroll(&m, 1);
    CHECK_EQ_INT(enqueue(&m), 201);
    CHECK(wait_pushes(&m, 200, 1, 10000));
    json_t *p = last_push(&m);
    CHECK(p != NULL);
    CHECK_STR(jstr(p, "method"), "POST");
    CHECK_STR(jstr(p, "topic"), TOPIC);
    CHECK_STR(jstr(p, "client_topic"), TOPIC);
    CHECK_STR(jstr(p, "push_type"), "mdm");
    CHECK_STR(jstr(p, "priority"), "10");
    CHECK(strlen(jstr(p, "expiration")) > 0);
    char body[128];
    snprintf(body, sizeof(body), "{\"mdm\":\"%s\"}", m.push_magic);
    CHECK_STR(jstr(p, "body"), body);
    json_decref(p);
    /* Woken, the Mac connects and gets the command. */
    sim_cmd_t cmd;
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    CHECK_STR(cmd.request_type, "SecurityInfo");
    CHECK_EQ_INT(sim_respond(&m, &cmd, SIM_ACKNOWLEDGED, NULL), 200);
    /* The device shows the push's outcome. */
    json_t *d = NULL;
    for (int i = 0; i < 100; i++) {
        json_decref(d);
        d = get_device(&m);
        if (json_integer_value(json_object_get(json_object_get(d, "last_push"), "status")) == 200)
            break;
        sleep_ms(50);
    }
    json_t *lp = json_object_get(d, "last_push");
    CHECK_EQ_INT((int)json_integer_value(json_object_get(lp, "status")), 200);
    CHECK(json_integer_value(json_object_get(lp, "result_ms")) > 0);
    json_decref(d);
    snprintf(loop_udid, sizeof(loop_udid), "%s", m.udid);
    /* An explicit push is taken (202) once the window is over. */
    sleep_ms(COALESCE_MS + 100);
    CHECK_EQ_INT(push(&m), 202);
    CHECK(wait_pushes(&m, 200, 2, 10000));
    sim_mac_dispose(&m);
}

#define USER_ID "A1B2C3D4-0000-4000-8000-00000000ABCD"

/* A user channel's TokenUpdate (macOS sends one per user with MDM): its own token and magic. */
static int user_token_update(sim_mac_t *m, const uint8_t token[32], const char *magic)
{
    plist_t d = plist_new_dict();
    plist_dict_set_item(d, "MessageType", plist_new_string("TokenUpdate"));
    plist_dict_set_item(d, "UDID", plist_new_string(m->udid));
    plist_dict_set_item(d, "Topic", plist_new_string(TOPIC));
    plist_dict_set_item(d, "UserID", plist_new_string(USER_ID));
    plist_dict_set_item(d, "UserShortName", plist_new_string("jappleseed"));
    plist_dict_set_item(d, "UserLongName", plist_new_string("Johnny Appleseed"));
    plist_dict_set_item(d, "Token", plist_new_data((const char *)token, 32));
    plist_dict_set_item(d, "PushMagic", plist_new_string(magic));
    mdm_buf_t body;
    mdm_buf_init(&body, 0);
    int st = mdm_plist_to_xml(d, &body) == 0 ? sim_checkin(m, &body, NULL) : -1;
    mdm_buf_dispose(&body);
    plist_free(d);
    return st;
}

/* Records whose path is /3/device/<hex>. */
static int count_token_pushes(const char *hex, const char *body)
{
    char path[128];
    snprintf(path, sizeof(path), "\"path\":\"/3/device/%s\"", hex);
    FILE *f = fopen(rec, "r");
    if (!f)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, path) && (!body || strstr(line, body)))
            n++;
    fclose(f);
    return n;
}

static void test_user_channel(void)
{
    sim_mac_t m;
    enroll(&m, 300);
    uint8_t token[32];
    for (int i = 0; i < 32; i++)
        token[i] = (uint8_t)(0xA0 + i);
    char hex[65];
    mdm_hex_encode(token, sizeof(token), hex);
    const char *magic = "USER-MAGIC-0001";
    CHECK_EQ_INT(user_token_update(&m, token, magic), 200);
    /* A command for the user channel wakes that channel: its token, its magic. */
    char path[200];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/commands?channel=%s", m.udid, USER_ID);
    CHECK_EQ_INT(api("POST", path, "{\"request_type\":\"ProfileList\"}", NULL), 201);
    const char *body = "\\\"mdm\\\":\\\"USER-MAGIC-0001\\\"";
    bool seen = false;
    for (int i = 0; i < 200 && !seen; i++, sleep_ms(50))
        seen = count_token_pushes(hex, body) >= 1;
    CHECK(seen);
    CHECK_EQ_INT(count_pushes(&m, 0), 0); /* not the device channel's token */
    /* APNs drops the user's token: no more pushes to it until the user's next TokenUpdate. */
    char script_text[160];
    snprintf(script_text, sizeof(script_text), "%s 410\n* 200\n", hex);
    write_script(script_text);
    sleep_ms(COALESCE_MS + 100);
    CHECK_EQ_INT(api("POST", path, "{\"request_type\":\"ProfileList\"}", NULL), 201);
    seen = false;
    for (int i = 0; i < 200 && !seen; i++, sleep_ms(50))
        seen = count_token_pushes(hex, "\"status\":410") >= 1;
    CHECK(seen);
    sleep_ms(COALESCE_MS + 300); /* the result is back and stored */
    json_t *d = get_device(&m);
    json_t *u = json_array_get(json_object_get(d, "user_channels"), 0);
    CHECK_STR(jstr(u, "user_id"), USER_ID);
    CHECK_STR(jstr(u, "short_name"), "jappleseed");
    CHECK_STR(jstr(u, "long_name"), "Johnny Appleseed");
    CHECK(json_is_true(json_object_get(u, "push_token_invalid")));
    CHECK_EQ_INT((int)json_integer_value(json_object_get(json_object_get(u, "last_push"),
                                                         "status")), 410);
    json_decref(d);
    int before = count_token_pushes(hex, NULL);
    CHECK_EQ_INT(api("POST", path, "{\"request_type\":\"ProfileList\"}", NULL), 201);
    sleep_ms(COALESCE_MS + 300);
    CHECK_EQ_INT(count_token_pushes(hex, NULL), before);
    write_script("* 200\n");
    CHECK_EQ_INT(user_token_update(&m, token, magic), 200);
    CHECK_EQ_INT(api("POST", path, "{\"request_type\":\"ProfileList\"}", NULL), 201);
    seen = false;
    for (int i = 0; i < 200 && !seen; i++, sleep_ms(50))
        seen = count_token_pushes(hex, "\"status\":200") >= 2;
    CHECK(seen);
    /* A user channel before the device's own TokenUpdate is refused. */
    sim_mac_t fresh;
    CHECK_EQ_INT(sim_mac_init(&fresh, &env, NULL, 301), 0);
    CHECK_EQ_INT(sim_authenticate(&fresh, NULL), 200);
    CHECK_EQ_INT(user_token_update(&fresh, token, magic), 403);
    sim_mac_dispose(&fresh);
    sim_mac_dispose(&m);
}

static void test_unregistered(void)
{
    sim_mac_t m;
    enroll(&m, 2);
    char hex[65], line[200];
    token_hex(&m, hex);
    snprintf(line, sizeof(line), "%s 410\n* 200\n", hex);
    write_script(line);
    CHECK_EQ_INT(enqueue(&m), 201);
    CHECK(wait_pushes(&m, 410, 1, 10000));
    bool invalid = false;
    for (int i = 0; i < 100 && !invalid; i++) {
        json_t *d = get_device(&m);
        invalid = json_is_true(json_object_get(d, "push_token_invalid"));
        json_decref(d);
        if (!invalid)
            sleep_ms(50);
    }
    CHECK(invalid);
    sleep_ms(COALESCE_MS + 100);
    CHECK_EQ_INT(enqueue(&m), 201);
    CHECK_EQ_INT(push(&m), 409);
    sleep_ms(COALESCE_MS + 500);
    CHECK_EQ_INT(count_pushes(&m, 0), 1); /* no second push to a refused token */
    /* A new TokenUpdate (new token) makes pushes flow again. */
    CHECK_EQ_INT(sim_token_update(&m, NULL, 0, NULL), 200);
    json_t *d = get_device(&m);
    CHECK(json_is_false(json_object_get(d, "push_token_invalid")));
    json_decref(d);
    CHECK_EQ_INT(push(&m), 202);
    CHECK(wait_pushes(&m, 200, 1, 10000));
    sim_mac_dispose(&m);
}

static void test_retry(void)
{
    sim_mac_t m;
    enroll(&m, 3);
    char hex[65], line[200];
    token_hex(&m, hex);
    snprintf(line, sizeof(line), "%s 503\n* 200\n", hex);
    write_script(line);
    CHECK_EQ_INT(enqueue(&m), 201);
    CHECK(wait_pushes(&m, 503, 1, 10000));
    write_script("* 200\n");
    CHECK(wait_pushes(&m, 200, 1, 15000));
    json_t *d = NULL;
    for (int i = 0; i < 100; i++) {
        json_decref(d);
        d = get_device(&m);
        if (json_integer_value(json_object_get(json_object_get(d, "last_push"), "status")) == 200)
            break;
        sleep_ms(50);
    }
    CHECK_EQ_INT((int)json_integer_value(json_object_get(json_object_get(d, "last_push"),
                                                         "status")),
                 200);
    CHECK(json_is_false(json_object_get(d, "push_token_invalid")));
    json_decref(d);
    sim_mac_dispose(&m);
}

static void test_coalescing(void)
{
    sim_mac_t m;
    enroll(&m, 4);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(enqueue(&m), 201);
    CHECK(wait_pushes(&m, 0, 1, 10000));
    sleep_ms(COALESCE_MS / 3);
    CHECK_EQ_INT(count_pushes(&m, 0), 1);
    /* The commands still wait at the window's end: one more push, and only one. */
    CHECK(wait_pushes(&m, 0, 2, COALESCE_MS + 5000));
    sleep_ms(COALESCE_MS + 500);
    CHECK_EQ_INT(count_pushes(&m, 0), 2);
    sim_mac_dispose(&m);
}

static pid_t start_fake(void)
{
    int pfd[2];
    if (pipe(pfd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        char ca[700], port[16], ms[16];
        snprintf(ca, sizeof(ca), "%s/ca.crt", work);
        snprintf(port, sizeof(port), "%d", apns_port); /* 0 the first time: ephemeral */
        snprintf(ms, sizeof(ms), "%d", fake_max_streams ? fake_max_streams : 1000);
        execl(getenv("FAKE_APNS_BIN"), "fake-apns", "--cert", MDM_TEST_DATA "/server.crt",
              "--key", MDM_TEST_DATA "/server.key", "--ca", ca, "--script", script, "--record",
              rec, "--port", port, "--max-streams", ms, (char *)NULL);
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

static int upload_cert(void)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/push.crt", work);
    char *c = NULL, *k = NULL;
    size_t n = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        c = calloc(1, 65536);
        n = fread(c, 1, 65535, f);
        fclose(f);
    }
    snprintf(path, sizeof(path), "%s/push.key", work);
    if ((f = fopen(path, "r"))) {
        k = calloc(1, 65536);
        n = fread(k, 1, 65535, f);
        fclose(f);
    }
    (void)n;
    json_t *b = json_pack("{s:s, s:s}", "certificate_pem", c ? c : "", "key_pem", k ? k : "");
    char *text = json_dumps(b, JSON_COMPACT);
    int st = api("PUT", "/api/v1/push-certificate", text, NULL);
    free(text);
    json_decref(b);
    free(c);
    free(k);
    return st;
}

/* Records for m's current token whose action is action. */
static int count_action(const sim_mac_t *m, const char *action)
{
    char hex[65], path[100], act[64];
    token_hex(m, hex);
    snprintf(path, sizeof(path), "\"path\":\"/3/device/%s\"", hex);
    snprintf(act, sizeof(act), "\"action\":\"%s\"", action);
    FILE *f = fopen(rec, "r");
    if (!f)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, path) && strstr(line, act))
            n++;
    fclose(f);
    return n;
}

static bool wait_action(const sim_mac_t *m, const char *action, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (count_action(m, action) >= 1)
            return true;
        sleep_ms(50);
    }
    return false;
}

/* Polls GET /api/v1/devices/{udid} until last_push.status is st; returns the last_push
 * reason (or "" on timeout, with the check failed). */
static void wait_device_push(const sim_mac_t *m, int st, const char *reason, int timeout_ms)
{
    json_t *d = NULL;
    int got = -1;
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        json_decref(d);
        d = get_device(m);
        got = (int)json_integer_value(json_object_get(json_object_get(d, "last_push"), "status"));
        if (got == st)
            break;
        sleep_ms(50);
    }
    CHECK_EQ_INT(got, st);
    if (reason)
        CHECK_STR(jstr(json_object_get(d, "last_push"), "reason"), reason);
    json_decref(d);
}

/* The fake's connection id of m's last record, -1 when none. */
static int last_conn(const sim_mac_t *m)
{
    json_t *p = last_push(m);
    int id = p ? (int)json_integer_value(json_object_get(p, "conn")) : -1;
    json_decref(p);
    return id;
}

static void test_ping_keepalive(void)
{
    sim_mac_t m;
    enroll(&m, 5);
    write_script("* 200\n");
    CHECK_EQ_INT(push(&m), 202);
    CHECK(wait_pushes(&m, 200, 1, 10000));
    int conn1 = last_conn(&m);
    /* Idle for several ping intervals (and past the coalescing window). */
    sleep_ms(PING_MS * 6 + COALESCE_MS);
    CHECK_EQ_INT(push(&m), 202);
    CHECK(wait_pushes(&m, 200, 2, 10000));
    CHECK_EQ_INT(last_conn(&m), conn1); /* no reconnect: the PINGs were answered */
    CHECK_EQ_INT(count_pushes(&m, 0), 2);
    sim_mac_dispose(&m);
}

static bool log_has(const char *needle)
{
    char path[600];
    snprintf(path, sizeof(path), "%s.serve.log", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static void test_ping_timeout(void)
{
    sim_mac_t m;
    enroll(&m, 10);
    CHECK_EQ_INT(push(&m), 202);
    CHECK(wait_pushes(&m, 200, 1, 10000));
    int conn1 = last_conn(&m);
    CHECK(!log_has("no PING ack"));
    /* A frozen APNs: the PING sent after PING_MS idle is not acked within 1 s (the timeout's
     * floor), so mdmd closes the connection. */
    kill(fake_pid, SIGSTOP);
    sleep_ms(PING_MS + 1000 + 1200);
    kill(fake_pid, SIGCONT);
    CHECK(log_has("no PING ack"));
    CHECK_EQ_INT(push(&m), 202); /* past the coalescing window */
    CHECK(wait_pushes(&m, 200, 2, 10000));
    CHECK(last_conn(&m) != conn1);
    sim_mac_dispose(&m);
}

static void test_retry_429(void)
{
    sim_mac_t m;
    enroll(&m, 6);
    char hex[65], line[200];
    token_hex(&m, hex);
    snprintf(line, sizeof(line), "%s 429\n* 200\n", hex);
    write_script(line);
    CHECK_EQ_INT(enqueue(&m), 201);
    CHECK(wait_pushes(&m, 429, 1, 10000));
    write_script("* 200\n");
    CHECK(wait_pushes(&m, 200, 1, 15000));
    wait_device_push(&m, 200, "", 5000);
    sim_mac_dispose(&m);
}

/* The fake answers m's first push with action (drop: the connection is closed unanswered;
 * goaway: a GOAWAY that does not cover the stream): the push is resent on a new connection
 * and delivered. */
static void test_resent_after(unsigned seq, const char *action)
{
    sim_mac_t m;
    enroll(&m, seq);
    char hex[65], line[200];
    token_hex(&m, hex);
    snprintf(line, sizeof(line), "%s %s\n* 200\n", hex, action);
    write_script(line);
    CHECK_EQ_INT(enqueue(&m), 201);
    CHECK(wait_action(&m, action, 10000));
    int first_conn = last_conn(&m);
    write_script("* 200\n");
    CHECK(wait_pushes(&m, 200, 1, 15000));
    CHECK(last_conn(&m) != first_conn);
    wait_device_push(&m, 200, "", 5000);
    sim_mac_dispose(&m);
}

static void test_forbidden(void)
{
    sim_mac_t m;
    enroll(&m, 9);
    char hex[65], line[200];
    token_hex(&m, hex);
    snprintf(line, sizeof(line), "%s 403\n* 200\n", hex);
    write_script(line);
    CHECK_EQ_INT(enqueue(&m), 201);
    CHECK(wait_pushes(&m, 403, 1, 10000));
    /* Final (not retried) and visible to the operator on the device. */
    wait_device_push(&m, 403, "BadCertificate", 5000);
    sleep_ms(1000);
    CHECK_EQ_INT(count_pushes(&m, 0), 1);
    json_t *d = get_device(&m);
    CHECK(json_is_false(json_object_get(d, "push_token_invalid")));
    json_decref(d);
    write_script("* 200\n");
    sim_mac_dispose(&m);
}

#define MANY 20

static void test_max_streams(void)
{
    /* The fake again on the same port, now advertising MAX_CONCURRENT_STREAMS 1; mdmd's
     * connections to the old one are reset and reopened. */
    kill(fake_pid, SIGTERM);
    waitpid(fake_pid, NULL, 0);
    fake_max_streams = 1;
    int port = apns_port;
    write_script("* slow:100\n");
    fake_pid = start_fake();
    CHECK(fake_pid > 0 && apns_port == port);
    sim_mac_t *macs = calloc(MANY, sizeof(*macs));
    CHECK(macs != NULL);
    if (!macs)
        return;
    for (unsigned i = 0; i < MANY; i++)
        enroll(&macs[i], 100 + i);
    for (unsigned i = 0; i < MANY; i++)
        CHECK_EQ_INT(enqueue(&macs[i]), 201);
    for (unsigned i = 0; i < MANY; i++)
        CHECK(wait_pushes(&macs[i], 200, 1, 30000));
    int conns[MANY], distinct = 0;
    for (unsigned i = 0; i < MANY; i++) {
        wait_device_push(&macs[i], 200, "", 5000);
        CHECK_EQ_INT(count_pushes(&macs[i], 0), 1);
        conns[i] = last_conn(&macs[i]);
        bool seen = false;
        for (unsigned k = 0; k < i; k++)
            seen = seen || conns[k] == conns[i];
        distinct += !seen;
    }
    /* One stream per connection: each shard's pusher opened extra connections (up to
     * [apns] connections, 4) rather than queueing ten pushes on one. Without growth there
     * would be one connection per shard, two in all. */
    printf("# %d pushes over %d connections\n", MANY, distinct);
    CHECK(distinct > 2);
    for (unsigned i = 0; i < MANY; i++)
        sim_mac_dispose(&macs[i]);
    free(macs);
    write_script("* 200\n");
}

int main(void)
{
    if (!getenv("FAKE_APNS_BIN")) {
        fprintf(stderr, "FAKE_APNS_BIN is not set\n");
        return 77;
    }
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("push"));
    snprintf(work, sizeof(work), "%s-apns", dir);
    snprintf(script, sizeof(script), "%s/script", work);
    snprintf(rec, sizeof(rec), "%s/record.jsonl", work);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "rm -rf '%s' && mkdir -p '%s' && cd '%s' && "
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
    write_script("* 200\n");
    pid_t fake = fake_pid = start_fake();
    if (fake <= 0 || apns_port <= 0) {
        fprintf(stderr, "fake-apns did not start\n");
        return 99;
    }
    const char *args[] = {"init", dir, "--hostnames", "localhost,127.0.0.1", NULL};
    char out[8192];
    if (harness_run(dir, args, 60000, out, sizeof(out)) != 0)
        return 99;
    if (admin_key_from_init(out, api_key, sizeof(api_key)) != 0)
        return 99;
    /* No apns.address: mdmd resolves "localhost" itself (integ-push-bulk sets an address). */
    char set_url[128], set_coalesce[64], set_ping[64];
    snprintf(set_url, sizeof(set_url), "apns.url=https://localhost:%d", apns_port);
    snprintf(set_coalesce, sizeof(set_coalesce), "apns.coalesce_ms=%d", COALESCE_MS);
    snprintf(set_ping, sizeof(set_ping), "apns.ping_interval_ms=%d", PING_MS);
    const char *extra[] = {"--shards", "2", "--set", set_url,
                           "--set", "apns.ca=" MDM_TEST_DATA "/test-ca.crt",
                           "--set", set_coalesce, "--set", set_ping, NULL};
    if (harness_start(&srv, dir, extra) != 0) {
        kill(fake, SIGKILL);
        return 99;
    }
    char simdir[700];
    snprintf(simdir, sizeof(simdir), "%s/sim", work);
    CHECK_EQ_INT(sim_env_init(&env, dir, simdir, srv.device_port), 0);
    snprintf(env.topic, sizeof(env.topic), "%s", TOPIC);

    /* No push certificate yet: an explicit push is 503. */
    sim_mac_t m0;
    enroll(&m0, 0);
    CHECK_EQ_INT(push(&m0), 503);
    sim_mac_dispose(&m0);

    CHECK_EQ_INT(upload_cert(), 200);
    test_loop();
    test_unregistered();
    test_retry();
    test_coalescing();
    test_ping_keepalive();
    test_ping_timeout();
    test_retry_429();
    test_resent_after(7, "drop");
    test_resent_after(8, "goaway");
    test_forbidden();
    test_max_streams();
    test_user_channel();

    /* The last push's outcome is stored: it is still there after a restart. */
    CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);
    CHECK_EQ_INT(harness_start(&srv, dir, extra), 0);
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/devices/%s", loop_udid);
    json_t *d = NULL;
    CHECK_EQ_INT(api("GET", path, NULL, &d), 200);
    json_t *lp = json_object_get(d, "last_push");
    CHECK_EQ_INT((int)json_integer_value(json_object_get(lp, "status")), 200);
    CHECK(json_integer_value(json_object_get(lp, "result_ms")) > 0);
    json_decref(d);

    CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);
    kill(fake_pid, SIGTERM);
    waitpid(fake_pid, NULL, 0);
    return check_finish("integ-push");
}
