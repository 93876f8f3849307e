/*
 * The device endpoints end to end: a real mdmd (2 shards, ephemeral ports, fresh instance
 * folder) and simulated Macs (bench/sim) over real mutual TLS.
 *
 * Commands are queued and their results read through the admin API (JSON over HTTPS with the
 * key printed by `mdmd init`), each call on a new connection, so calls land on either shard
 * (SO_REUSEPORT). Queued and in-flight commands must survive kill -9.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <plist/plist.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/sim.h"
#include "check.h"
#include "core/log.h"
#include "admin_api.h"
#include "harness.h"
#include "storage/mdm.h"

static char dir[512];
static char work[600];
static char api_key[128];
static server_proc_t srv;
static sim_env_t env;
static bool running;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Copies what mdmd printed to our stderr without blocking: the harness reads its output only
 * at start and stop, and a full pipe would block the server's log writes. */
static void drain_server(void)
{
    if (!running)
        return;
    fcntl(srv.out_fd, F_SETFL, O_NONBLOCK);
    char buf[4096];
    ssize_t r;
    while ((r = read(srv.out_fd, buf, sizeof(buf))) > 0)
        (void)!write(2, buf, (size_t)r);
}

static int start(void)
{
    /* log.level=warn: the fleet test would otherwise log a line per enrollment. */
    const char *extra[] = {"--shards", "2", "--set", "log.level=warn", NULL};
    if (harness_start(&srv, dir, extra) != 0)
        return -1;
    running = true;
    env.port = srv.device_port;
    return 0;
}

/* Stops mdmd: SIGKILL (crash) or SIGTERM (clean). */
static void stop(int sig)
{
    if (!running)
        return;
    int code = harness_stop(&srv, sig, 20000);
    if (sig == SIGTERM)
        CHECK_EQ_INT(code, 0);
    else
        CHECK_EQ_INT(code, 128 + SIGKILL);
    running = false;
}

static void restart(int sig)
{
    stop(sig);
    CHECK_EQ_INT(start(), 0);
}

static bool has_text(const mdm_buf_t *b)
{
    return b->len > 0 && b->len < 600;
}

/* Enrolls m: Authenticate + TokenUpdate. */
static bool enroll(sim_mac_t *m)
{
    return sim_authenticate(m, NULL) == 200 && sim_token_update(m, NULL, 0, NULL) == 200;
}

/* ---- the admin API ---- */

/* One API request on a new connection; *out (may be NULL) gets the parsed JSON answer. Returns
 * the HTTP status. Thread-safe (the bulk test calls it from several threads). */
static int api(const char *method, const char *path, const char *body, json_t **out)
{
    return admin_api(srv.admin_port, dir, api_key, method, path, NULL, body, out);
}

/* Bootstrap tokens are escrowed for Macs enrolled through Automated Device Enrollment only:
 * mark m as one (what that enrollment path does). */
static void set_ade(const sim_mac_t *m)
{
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/actions/set-ade", m->udid);
    CHECK_EQ_INT(api("POST", path, "{\"ade\":true}", NULL), 200);
}


#define DEVINFO_PARAMS                                                                         \
    "{\"Queries\":[\"UDID\",\"DeviceName\",\"OSVersion\",\"SerialNumber\",\"Model\"]}"

/* POST /api/v1/devices/{udid}/commands with request_type and params (a JSON object or NULL).
 * uuid[64] receives the command UUID ("" unless 201). Returns the HTTP status. */
static int api_enqueue(const char *udid, const char *request_type, const char *params,
                       char *uuid)
{
    char path[160], body[1024];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/commands", udid);
    snprintf(body, sizeof(body), "{\"request_type\":\"%s\"%s%s}", request_type,
             params ? ",\"params\":" : "", params ? params : "");
    json_t *j = NULL;
    int status = api("POST", path, body, &j);
    uuid[0] = '\0';
    if (status == 201) {
        snprintf(uuid, 64, "%s", jstr(j, "command_uuid"));
        if (strlen(uuid) != 36 || json_array_size(json_object_get(j, "queued")) != 1)
            status = -2;
    }
    json_decref(j);
    return status;
}

struct qcmd {
    const char *type, *params; /* params: JSON object or NULL */
    char uuid[64];             /* assigned by the server */
};

/* Queues cmds for udid, in order, each call on its own connection; each must answer 201. */
static void enqueue(const char *udid, struct qcmd *cmds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        CHECK_EQ_INT(api_enqueue(udid, cmds[i].type, cmds[i].params, cmds[i].uuid), 201);
}

/* The entry of uuid in udid's command history (GET /api/v1/devices/{udid}/commands, every
 * page), or NULL; *owner must be json_decref'd. */
static json_t *api_history_entry(const char *udid, const char *uuid, json_t **owner)
{
    char after[64] = "";
    *owner = NULL;
    for (int page = 0; page < 100; page++) {
        char path[256];
        snprintf(path, sizeof(path), "/api/v1/devices/%s/commands?limit=1000%s%s", udid,
                 after[0] ? "&after=" : "", after);
        json_t *j = NULL;
        if (api("GET", path, NULL, &j) != 200) {
            json_decref(j);
            return NULL;
        }
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(j, "commands"), i, c) {
            if (strcmp(jstr(c, "command_uuid"), uuid) == 0) {
                *owner = j;
                return c;
            }
        }
        const char *next = json_string_value(json_object_get(j, "next_after"));
        snprintf(after, sizeof(after), "%s", next ? next : "");
        json_decref(j);
        if (!after[0])
            break;
    }
    return NULL;
}

/* A command's status from the API ("acknowledged", "error", ...; "(none)" when the history has
 * no such command); response (may be NULL) receives the Mac's response. Not thread-safe. */
static const char *api_result(const char *udid, const char *uuid, mdm_buf_t *response)
{
    static char status[32];
    json_t *owner = NULL;
    json_t *c = api_history_entry(udid, uuid, &owner);
    snprintf(status, sizeof(status), "%s", c ? jstr(c, "status") : "(none)");
    if (response) {
        mdm_buf_reset(response);
        const char *r = c ? jstr(c, "response") : "";
        CHECK(mdm_buf_append(response, r, strlen(r) + 1) == 0);
        response->len--;
    }
    json_decref(owner);
    return status;
}

/* ---- tests ---- */

static void test_lifecycle(void)
{
    sim_mac_t m;
    CHECK_EQ_INT(sim_mac_init(&m, &env, NULL, 0), 0);
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    sim_cmd_t cmd;

    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 403); /* unknown device */
    CHECK_EQ_INT(sim_authenticate(&m, &out), 200);
    CHECK_EQ_INT(out.len, 0);
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 403); /* not enrolled before TokenUpdate */
    uint8_t unlock[48];
    memset(unlock, 0x5a, sizeof(unlock));
    CHECK_EQ_INT(sim_token_update(&m, unlock, sizeof(unlock), NULL), 200);
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    CHECK_STR(cmd.uuid, "");
    CHECK_EQ_INT(sim_token_update(&m, NULL, 0, NULL), 200); /* token rotation */
    CHECK(m.connects == 1);                                 /* one keep-alive connection */

    /* A command: queued, handed out, acknowledged with data, stored; then nothing. */
    struct qcmd q = {"DeviceInformation", DEVINFO_PARAMS, ""};
    enqueue(m.udid, &q, 1);
    CHECK_STR(api_result(m.udid, q.uuid, NULL), "queued");
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/devices/%s", m.udid);
    json_t *j = NULL;
    CHECK_EQ_INT(api("GET", path, NULL, &j), 200);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "queued")), 1);
    json_decref(j);
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    CHECK_STR(cmd.uuid, q.uuid);
    CHECK_STR(cmd.request_type, "DeviceInformation");
    CHECK(cmd.query_mask != 0);
    sim_cmd_t next;
    CHECK_EQ_INT(sim_respond(&m, &cmd, SIM_ACKNOWLEDGED, &next), 200);
    CHECK_STR(next.uuid, "");
    CHECK_EQ_INT(sim_respond(&m, &cmd, SIM_ACKNOWLEDGED, &next), 200); /* a repeat: once */
    /* The repeat after a crash (the server forgot what it answered recently): found in the
     * stored history, still recorded once. */
    sim_cmd_t answered = cmd;
    restart(SIGKILL);
    CHECK_EQ_INT(sim_respond(&m, &answered, SIM_ACKNOWLEDGED, &next), 200);
    CHECK_STR(next.uuid, "");
    {
        char hp[200];
        snprintf(hp, sizeof(hp), "/api/v1/devices/%s/commands", m.udid);
        json_t *h = NULL;
        CHECK_EQ_INT(api("GET", hp, NULL, &h), 200);
        json_t *cmds = json_object_get(h, "commands");
        CHECK_EQ_INT(json_array_size(cmds), 1);
        json_t *evs = json_object_get(json_array_get(cmds, 0), "events");
        int acks = 0;
        for (size_t e = 0; e < json_array_size(evs); e++)
            acks += strcmp(jstr(json_array_get(evs, e), "status"), "acknowledged") == 0;
        CHECK_EQ_INT(acks, 1);
        json_decref(h);
    }
    /* A response for a command this device never had is refused. */
    sim_cmd_t bogus = answered;
    snprintf(bogus.uuid, sizeof(bogus.uuid), "%s", "00000000-0000-4000-8000-000000000000");
    CHECK_EQ_INT(sim_respond(&m, &bogus, SIM_ACKNOWLEDGED, &next), 400);
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    CHECK_STR(cmd.uuid, "");
    CHECK_STR(api_result(m.udid, q.uuid, &out), "acknowledged");
    const char *resp = (const char *)mdm_buf_head(&out);
    CHECK(out.len && strstr(resp, "<key>QueryResponses</key>") != NULL);
    CHECK(out.len && strstr(resp, m.serial) != NULL);
    CHECK(out.len && strstr(resp, "<key>ModelName</key>") == NULL); /* not asked for */

    /* Bootstrap token escrow: refused until the Mac counts as enrolled through ADE. */
    mdm_buf_t tok;
    mdm_buf_init(&tok, 0);
    const uint8_t early[] = "too early";
    CHECK_EQ_INT(sim_set_bootstrap_token(&m, early, sizeof(early), NULL), 403);
    set_ade(&m);
    CHECK_EQ_INT(sim_get_bootstrap_token(&m, &tok), 200);
    CHECK_EQ_INT(tok.len, 0);
    const uint8_t secret[] = "bootstrap-token-\x01\x02\x03-binary\x00-bytes";
    CHECK_EQ_INT(sim_set_bootstrap_token(&m, secret, sizeof(secret), NULL), 200);
    CHECK_EQ_INT(sim_get_bootstrap_token(&m, &tok), 200);
    CHECK(tok.len == sizeof(secret) && memcmp(mdm_buf_head(&tok), secret, tok.len) == 0);
    CHECK_EQ_INT(sim_set_bootstrap_token(&m, NULL, 0, NULL), 200); /* empty: delete */
    CHECK_EQ_INT(sim_get_bootstrap_token(&m, &tok), 200);
    CHECK_EQ_INT(tok.len, 0);

    /* CheckOut closes everything. */
    CHECK_EQ_INT(sim_checkout(&m, NULL), 200);
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 403);
    CHECK_EQ_INT(sim_token_update(&m, NULL, 0, &out), 403);
    CHECK(has_text(&out));
    /* ...until it enrolls again. */
    CHECK(enroll(&m));
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    CHECK_STR(cmd.uuid, "");

    mdm_buf_dispose(&tok);
    mdm_buf_dispose(&out);
    sim_mac_dispose(&m);
}

static void test_spoofing(void)
{
    sim_mac_t a, b, anon;
    CHECK_EQ_INT(sim_mac_init(&a, &env, NULL, 1), 0);
    CHECK(enroll(&a));
    /* Mac B has its own valid identity from the same CA but claims A's UDID. */
    CHECK_EQ_INT(sim_mac_init(&b, &env, a.udid, 2), 0);
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    sim_cmd_t cmd;
    CHECK_EQ_INT(sim_token_update(&b, NULL, 0, &out), 403);
    CHECK(has_text(&out));
    CHECK_EQ_INT(sim_connect_idle(&b, &cmd), 403);
    CHECK_EQ_INT(sim_set_bootstrap_token(&b, (const uint8_t *)"x", 1, NULL), 403);
    CHECK_EQ_INT(sim_get_bootstrap_token(&b, &out), 403);
    CHECK_EQ_INT(sim_checkout(&b, NULL), 403);
    /* No client certificate at all (the listener's client_cert is "optional"). */
    CHECK_EQ_INT(sim_mac_init(&anon, &env, a.udid, 3), 0);
    anon.no_identity = true;
    CHECK_EQ_INT(sim_token_update(&anon, NULL, 0, &out), 403);
    CHECK(has_text(&out));
    CHECK_EQ_INT(sim_connect_idle(&anon, &cmd), 403);
    CHECK_EQ_INT(sim_authenticate(&anon, NULL), 403);
    /* A is untouched. */
    CHECK_EQ_INT(sim_connect_idle(&a, &cmd), 200);
    CHECK_STR(cmd.uuid, "");
    CHECK_EQ_INT(sim_token_update(&a, NULL, 0, NULL), 200);
    sim_mac_dispose(&a);
    sim_mac_dispose(&b);
    sim_mac_dispose(&anon);
    mdm_buf_dispose(&out);
}

/* Sends body to path and expects 400 with a one-line message. */
static void expect_400(sim_mac_t *m, const char *endpoint, const void *body, size_t len,
                       int line)
{
    char path[128];
    snprintf(path, sizeof(path), "/%s/mdm/%s", env.instance, endpoint);
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    int status = 0;
    int ret = sim_put(m, path, body, len, &status, &out);
    if (ret != 0 || status != 400 || !has_text(&out))
        fprintf(stderr, "line %d: %s body of %zu bytes: ret %d status %d\n", line, endpoint,
                len, ret, status);
    CHECK(ret == 0 && status == 400 && has_text(&out));
    mdm_buf_dispose(&out);
}

static void test_malformed(void)
{
    sim_mac_t m;
    CHECK_EQ_INT(sim_mac_init(&m, &env, NULL, 4), 0);
    CHECK(enroll(&m));
    set_ade(&m);
    const uint8_t keep[] = "the escrowed token";
    CHECK_EQ_INT(sim_set_bootstrap_token(&m, keep, sizeof(keep), NULL), 200);

    /* Truncated bodies at many prefix lengths: every one that cuts the root dictionary
     * short is refused; none of them changes the escrowed token. */
    mdm_buf_t body;
    mdm_buf_init(&body, 0);
    const uint8_t other[] = "another token that must never be stored";
    CHECK_EQ_INT(sim_build_set_bootstrap(&m, other, sizeof(other), &body), 0);
    const char *xml = (const char *)mdm_buf_head(&body);
    const char *dict_end = memmem(xml, body.len, "</dict>", 7);
    CHECK(dict_end != NULL);
    size_t cut = dict_end ? (size_t)(dict_end - xml) + 6 : 0; /* without the final '>' */
    unsigned tried = 0;
    for (size_t len = 0; len <= cut && tried < 400; len += (len < 64 || cut - len < 48) ? 1 : 9) {
        expect_400(&m, "checkin", xml, len, __LINE__);
        tried++;
    }
    CHECK(tried > 60);
    mdm_buf_t tok;
    mdm_buf_init(&tok, 0);
    CHECK_EQ_INT(sim_get_bootstrap_token(&m, &tok), 200);
    CHECK(tok.len == sizeof(keep) && memcmp(mdm_buf_head(&tok), keep, tok.len) == 0);

    /* The same on the command channel. */
    mdm_buf_reset(&body);
    CHECK_EQ_INT(sim_build_idle(&m, &body), 0);
    xml = (const char *)mdm_buf_head(&body);
    dict_end = memmem(xml, body.len, "</dict>", 7);
    cut = dict_end ? (size_t)(dict_end - xml) + 6 : 0;
    for (size_t len = 0; len <= cut; len += 7)
        expect_400(&m, "connect", xml, len, __LINE__);

    /* Well-formed but wrong. */
    static const char array_root[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><array>"
        "<string>Authenticate</string></array></plist>\n";
    expect_400(&m, "checkin", array_root, strlen(array_root), __LINE__);
    expect_400(&m, "connect", array_root, strlen(array_root), __LINE__);
    static const char garbage[] = "\x00\x01\x02 this is not a plist { \"json\": true }";
    expect_400(&m, "checkin", garbage, sizeof(garbage) - 1, __LINE__);
    expect_400(&m, "checkin", "bplist00\xff\xff\xff", 11, __LINE__);
    char doc[1024];
    snprintf(doc, sizeof(doc),
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
             "<key>UDID</key><string>%s</string><key>Topic</key><string>x</string>"
             "</dict></plist>\n",
             m.udid);
    expect_400(&m, "checkin", doc, strlen(doc), __LINE__); /* no MessageType */
    snprintf(doc, sizeof(doc),
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
             "<key>MessageType</key><string>TokenUpdate</string></dict></plist>\n");
    expect_400(&m, "checkin", doc, strlen(doc), __LINE__); /* no UDID */
    snprintf(doc, sizeof(doc),
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
             "<key>MessageType</key><integer>7</integer><key>UDID</key><string>%s</string>"
             "</dict></plist>\n",
             m.udid);
    expect_400(&m, "checkin", doc, strlen(doc), __LINE__); /* MessageType not a string */
    snprintf(doc, sizeof(doc),
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
             "<key>MessageType</key><string>SetBootstrapToken</string>"
             "<key>UDID</key><string>../../%s</string></dict></plist>\n",
             m.udid);
    expect_400(&m, "checkin", doc, strlen(doc), __LINE__); /* UDID with bad characters */

    mdm_buf_reset(&body);
    CHECK_EQ_INT(sim_build_checkin(&m, "FlyMeToTheMoon", &body), 0);
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    CHECK_EQ_INT(sim_checkin(&m, &body, &out), 400);
    CHECK(out.len && strstr((const char *)mdm_buf_head(&out), "FlyMeToTheMoon") != NULL);

    /* TokenUpdate without its fields. */
    mdm_buf_reset(&body);
    CHECK_EQ_INT(sim_build_checkin(&m, "TokenUpdate", &body), 0);
    CHECK_EQ_INT(sim_checkin(&m, &body, &out), 400);
    CHECK(has_text(&out));

    /* Command channel: no Status, an unknown Status, an answer to a command never sent. */
    snprintf(doc, sizeof(doc),
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
             "<key>UDID</key><string>%s</string></dict></plist>\n",
             m.udid);
    expect_400(&m, "connect", doc, strlen(doc), __LINE__);
    snprintf(doc, sizeof(doc),
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
             "<key>UDID</key><string>%s</string><key>Status</key><string>Busy</string>"
             "</dict></plist>\n",
             m.udid);
    expect_400(&m, "connect", doc, strlen(doc), __LINE__);
    sim_cmd_t ghost = {.uuid = "00000000-0000-4000-A000-00000000DEAD",
                       .request_type = "DeviceInformation",
                       .type = SIM_REQ_DEVICE_INFORMATION};
    sim_cmd_t cmd;
    CHECK_EQ_INT(sim_respond(&m, &ghost, SIM_ACKNOWLEDGED, &cmd), 400);

    /* Nothing of the above changed the device. */
    CHECK_EQ_INT(sim_get_bootstrap_token(&m, &tok), 200);
    CHECK(tok.len == sizeof(keep) && memcmp(mdm_buf_head(&tok), keep, tok.len) == 0);
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    CHECK_STR(cmd.uuid, "");
    mdm_buf_dispose(&out);
    mdm_buf_dispose(&tok);
    mdm_buf_dispose(&body);
    sim_mac_dispose(&m);
}

static void test_unsupported(void)
{
    sim_mac_t m;
    CHECK_EQ_INT(sim_mac_init(&m, &env, NULL, 5), 0);
    CHECK(enroll(&m));
    mdm_buf_t body, out;
    mdm_buf_init(&body, 0);
    mdm_buf_init(&out, 0);

    /* UserAuthenticate: 410 says "no user channel here" (the Mac stops asking). */
    char doc[1024];
    snprintf(doc, sizeof(doc),
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
             "<key>MessageType</key><string>UserAuthenticate</string>"
             "<key>UDID</key><string>%s</string>"
             "<key>UserID</key><string>A1B2C3D4-0000-4000-8000-000000000501</string>"
             "<key>UserShortName</key><string>jappleseed</string>"
             "<key>UserLongName</key><string>John Appleseed</string></dict></plist>\n",
             m.udid);
    char path[128];
    snprintf(path, sizeof(path), "/%s/mdm/checkin", env.instance);
    int status = 0;
    CHECK_EQ_INT(sim_put(&m, path, doc, strlen(doc), &status, &out), 0);
    CHECK_EQ_INT(status, 410);

    CHECK_EQ_INT(sim_build_checkin(&m, "DeclarativeManagement", &body), 0);
    CHECK_EQ_INT(sim_checkin(&m, &body, &out), 404);
    CHECK(has_text(&out));
    mdm_buf_reset(&body);
    CHECK_EQ_INT(sim_build_checkin(&m, "GetToken", &body), 0);
    CHECK_EQ_INT(sim_checkin(&m, &body, &out), 404);
    CHECK(has_text(&out));

    /* Still enrolled and working. */
    sim_cmd_t cmd;
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    mdm_buf_dispose(&body);
    mdm_buf_dispose(&out);
    sim_mac_dispose(&m);
}

static void test_commands(void)
{
    sim_mac_t m;
    CHECK_EQ_INT(sim_mac_init(&m, &env, NULL, 6), 0);
    CHECK(enroll(&m));
    m.notnow_mask = 1u << SIM_REQ_SECURITY_INFO;
    struct qcmd q[] = {
        {"SecurityInfo", NULL, ""},
        {"InstalledApplicationList", "{\"ManagedAppsOnly\":false}", ""},
        {"ProfileList", NULL, ""},
        {"CertificateList", "{\"ManagedOnly\":false}", ""},
        {"RestartDevice", "{\"NotifyUser\":true}", ""},
    };
    enqueue(m.udid, q, 5);
    /* Crash right after the 201s: the queue is durable and keeps its order. */
    restart(SIGKILL);

    /* FIFO; NotNow parks SecurityInfo and the next command comes with the reply. */
    sim_cmd_t cmd, next;
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    CHECK_STR(cmd.uuid, q[0].uuid);
    CHECK_EQ_INT(sim_answer(&m, &cmd, &next), 200); /* NotNow */
    CHECK_STR(next.uuid, q[1].uuid);
    CHECK_STR(next.request_type, "InstalledApplicationList");
    /* Parked until the next Idle: the answer to q1 brings q2, not q0. */
    CHECK_EQ_INT(sim_answer(&m, &next, &cmd), 200);
    CHECK_STR(cmd.uuid, q[2].uuid);

    /* Crash with ProfileList in flight: the next Idle hands it out again, same UUID. */
    restart(SIGKILL);
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    CHECK_STR(cmd.uuid, q[2].uuid);
    CHECK_STR(cmd.request_type, "ProfileList");
    /* And once more: an Idle while a command is in flight means the Mac never got it. */
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    CHECK_STR(cmd.uuid, q[2].uuid);
    /* That Idle made the parked SecurityInfo eligible again: it comes next (FIFO). */
    CHECK_EQ_INT(sim_respond(&m, &cmd, SIM_ERROR, &next), 200);
    CHECK_STR(next.uuid, q[0].uuid);
    CHECK_EQ_INT(sim_answer(&m, &next, &cmd), 200); /* NotNow again */
    CHECK_STR(cmd.uuid, q[3].uuid);
    CHECK_EQ_INT(sim_answer(&m, &cmd, &next), 200);
    CHECK_STR(next.uuid, q[4].uuid);
    CHECK_STR(next.request_type, "RestartDevice");
    CHECK_EQ_INT(sim_respond(&m, &next, SIM_COMMAND_FORMAT_ERROR, &cmd), 200);
    CHECK_STR(cmd.uuid, ""); /* only the parked SecurityInfo is left */
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    CHECK_STR(cmd.uuid, q[0].uuid);
    m.notnow_mask = 0;
    CHECK_EQ_INT(sim_answer(&m, &cmd, &next), 200);
    CHECK_STR(next.uuid, "");
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    CHECK_STR(cmd.uuid, "");

    mdm_buf_t resp;
    mdm_buf_init(&resp, 0);
    CHECK_STR(api_result(m.udid, q[0].uuid, &resp), "acknowledged");
    CHECK(resp.len && strstr((const char *)mdm_buf_head(&resp), "FDE_Enabled") != NULL);
    CHECK_STR(api_result(m.udid, q[1].uuid, &resp), "acknowledged");
    CHECK(resp.len && strstr((const char *)mdm_buf_head(&resp), "com.apple.Safari") != NULL);
    CHECK_STR(api_result(m.udid, q[2].uuid, &resp), "error");
    CHECK(resp.len && strstr((const char *)mdm_buf_head(&resp), "ErrorChain") != NULL);
    CHECK_STR(api_result(m.udid, q[3].uuid, &resp), "acknowledged");
    CHECK(resp.len && strstr((const char *)mdm_buf_head(&resp), "IsIdentity") != NULL);
    CHECK_STR(api_result(m.udid, q[4].uuid, NULL), "format_error");
    /* The status history survived the crashes: SecurityInfo was parked twice (NotNow). */
    json_t *owner = NULL;
    json_t *h = api_history_entry(m.udid, q[0].uuid, &owner);
    int not_now = 0;
    size_t i;
    json_t *ev;
    json_array_foreach(h ? json_object_get(h, "events") : NULL, i, ev)
        if (strcmp(jstr(ev, "status"), "not_now") == 0)
            not_now++;
    CHECK_EQ_INT(not_now, 2);
    json_decref(owner);
    mdm_buf_dispose(&resp);
    sim_mac_dispose(&m);
}

static void test_restart(void)
{
    sim_mac_t m;
    CHECK_EQ_INT(sim_mac_init(&m, &env, NULL, 7), 0);
    CHECK(enroll(&m));
    set_ade(&m);
    const uint8_t tokv[] = "survives kill -9";
    CHECK_EQ_INT(sim_set_bootstrap_token(&m, tokv, sizeof(tokv), NULL), 200);
    restart(SIGKILL);
    sim_cmd_t cmd;
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200); /* same identity, still enrolled */
    CHECK_STR(cmd.uuid, "");
    mdm_buf_t tok;
    mdm_buf_init(&tok, 0);
    CHECK_EQ_INT(sim_get_bootstrap_token(&m, &tok), 200);
    CHECK(tok.len == sizeof(tokv) && memcmp(mdm_buf_head(&tok), tokv, tok.len) == 0);
    /* A clean stop keeps it too. */
    restart(SIGTERM);
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    mdm_buf_dispose(&tok);
    sim_mac_dispose(&m);
}

/* An erase-and-re-enroll: the same UDID authenticates with a new identity. */
static void test_reenroll(void)
{
    sim_mac_t old, fresh;
    CHECK_EQ_INT(sim_mac_init(&old, &env, NULL, 8), 0);
    CHECK(enroll(&old));
    struct qcmd q = {"DeviceInformation", DEVINFO_PARAMS, ""};
    enqueue(old.udid, &q, 1);
    CHECK_EQ_INT(sim_mac_init(&fresh, &env, old.udid, 9), 0);
    CHECK(enroll(&fresh));
    sim_cmd_t cmd;
    CHECK_EQ_INT(sim_connect_idle(&fresh, &cmd), 200);
    CHECK_STR(cmd.uuid, ""); /* the queue of the old enrollment is closed */
    CHECK_EQ_INT(sim_connect_idle(&old, &cmd), 403); /* the old identity is no longer bound */
    CHECK_STR(api_result(old.udid, q.uuid, NULL), "cancelled");
    CHECK_EQ_INT(sim_connect_idle(&fresh, &cmd), 200);
    sim_mac_dispose(&old);
    sim_mac_dispose(&fresh);
}

/* Receives n commands in a row (Idle, then each acknowledgement brings the next) and checks
 * they are q[0..n) in that order, with nothing after them. */
static void expect_in_order(sim_mac_t *m, const struct qcmd *q, int n)
{
    sim_cmd_t cmd, next;
    CHECK_EQ_INT(sim_connect_idle(m, &cmd), 200);
    int in_order = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(cmd.uuid, q[i].uuid) != 0) {
            fprintf(stderr, "order: command %d is %s (%s), expected %s (%s)\n", i, cmd.uuid,
                    cmd.request_type, q[i].uuid, q[i].type);
            break;
        }
        CHECK_STR(cmd.request_type, q[i].type);
        in_order++;
        CHECK_EQ_INT(sim_respond(m, &cmd, SIM_ACKNOWLEDGED, &next), 200);
        cmd = next;
    }
    CHECK_EQ_INT(in_order, n);
    CHECK_STR(cmd.uuid, "");
}

/* Commands queued over many admin connections (so through both shards: SO_REUSEPORT spreads
 * them, we cannot choose) reach the device in the order the API answered 201: FIFO. The
 * chance that 20 new connections all land on one of 2 shards is about 2 in a million. The
 * order also survives kill -9 (the queue is reloaded from storage). */
static void test_order_across_shards(void)
{
    sim_mac_t m;
    CHECK_EQ_INT(sim_mac_init(&m, &env, NULL, 10), 0);
    CHECK(enroll(&m));
    static const char *const types[] = {"ProfileList", "CertificateList", "SecurityInfo",
                                        "AvailableOSUpdates", "OSUpdateStatus"};
    enum { N = 20 };
    struct qcmd q[N];
    for (int i = 0; i < N; i++)
        q[i] = (struct qcmd){.type = types[i % 5]};
    enqueue(m.udid, q, N); /* one new connection per call */
    for (int i = 0; i < N; i++)
        for (int k = 0; k < i; k++)
            CHECK(strcmp(q[i].uuid, q[k].uuid) != 0);
    expect_in_order(&m, q, N);
    for (int i = 0; i < N; i += 7)
        CHECK_STR(api_result(m.udid, q[i].uuid, NULL), "acknowledged");

    /* Again, with a crash between queuing and polling. */
    for (int i = 0; i < N; i++)
        q[i] = (struct qcmd){.type = types[(i + 2) % 5]};
    enqueue(m.udid, q, N);
    restart(SIGKILL);
    expect_in_order(&m, q, N);
    sim_mac_dispose(&m);
}

#define FLEET 1000
#define FLEET_THREADS 8 /* concurrent Macs: their writes share group commits */

struct fleet_part {
    sim_mac_t *macs;
    int from, to;
    long long deadline;
    int made, enrolled, idle_ok;
};

static void *fleet_worker(void *arg)
{
    struct fleet_part *p = arg;
    for (int i = p->from; i < p->to && now_ms() < p->deadline; i++) {
        if (sim_mac_init(&p->macs[i], &env, NULL, (unsigned)i) != 0)
            break;
        p->made++;
        if (enroll(&p->macs[i]))
            p->enrolled++;
        sim_mac_disconnect(&p->macs[i]); /* keep file descriptors bounded */
    }
    /* A second round over new connections: every Mac is known and enrolled. */
    for (int i = p->from; i < p->from + p->made && now_ms() < p->deadline; i++) {
        sim_cmd_t cmd;
        if (sim_connect_idle(&p->macs[i], &cmd) == 200 && cmd.uuid[0] == '\0')
            p->idle_ok++;
        sim_mac_disconnect(&p->macs[i]);
    }
    mdm_tls_thread_cleanup();
    return NULL;
}

static sim_mac_t *fleet; /* the enrolled Macs of test_fleet, for test_bulk */

static void test_fleet(void)
{
    sim_mac_t *macs = calloc(FLEET, sizeof(*macs));
    CHECK(macs != NULL);
    if (!macs)
        return;
    fleet = macs;
    long long t0 = now_ms();
    struct fleet_part parts[FLEET_THREADS];
    pthread_t threads[FLEET_THREADS];
    int started = 0;
    for (int t = 0; t < FLEET_THREADS; t++) {
        parts[t] = (struct fleet_part){.macs = macs,
                                       .from = t * FLEET / FLEET_THREADS,
                                       .to = (t + 1) * FLEET / FLEET_THREADS,
                                       .deadline = t0 + 150000};
        if (pthread_create(&threads[t], NULL, fleet_worker, &parts[t]) != 0)
            break;
        started++;
    }
    CHECK_EQ_INT(started, FLEET_THREADS);
    for (int t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
    int made = 0, enrolled = 0, idle_ok = 0;
    for (int t = 0; t < started; t++) {
        made += parts[t].made;
        enrolled += parts[t].enrolled;
        idle_ok += parts[t].idle_ok;
    }
    fprintf(stderr, "fleet: %d Macs, %d enrolled, %d idle, in %lld ms (%d threads)\n", made,
            enrolled, idle_ok, now_ms() - t0, started);
    CHECK_EQ_INT(made, FLEET);
    CHECK_EQ_INT(enrolled, FLEET);
    CHECK_EQ_INT(idle_ok, FLEET);
    drain_server();
}

static void fleet_dispose(void)
{
    for (int i = 0; fleet && i < FLEET; i++)
        if (fleet[i].env)
            sim_mac_dispose(&fleet[i]);
    free(fleet);
    fleet = NULL;
}

struct bulk_part {
    int from, to;
    const char *uuid;
    uint64_t t0_ms; /* wall clock before the bulk call */
    long long deadline;
    int received, acked, history_ok;
};

static void *bulk_worker(void *arg)
{
    struct bulk_part *p = arg;
    /* Every Mac polls: the bulk command, same UUID for all; it acknowledges, nothing follows. */
    for (int i = p->from; i < p->to && now_ms() < p->deadline; i++) {
        sim_cmd_t cmd, next;
        if (sim_connect_idle(&fleet[i], &cmd) == 200 && strcmp(cmd.uuid, p->uuid) == 0 &&
            strcmp(cmd.request_type, "ProfileList") == 0) {
            p->received++;
            if (sim_respond(&fleet[i], &cmd, SIM_ACKNOWLEDGED, &next) == 200 &&
                next.uuid[0] == '\0')
                p->acked++;
        }
        sim_mac_disconnect(&fleet[i]);
    }
    /* Every Mac's history says acknowledged, with its response and sane times. */
    for (int i = p->from; i < p->to && now_ms() < p->deadline; i++) {
        char path[160];
        snprintf(path, sizeof(path), "/api/v1/devices/%s/commands", fleet[i].udid);
        json_t *j = NULL;
        int status = api("GET", path, NULL, &j);
        int before = p->history_ok;
        if (status == 200) {
            json_t *c = json_array_get(json_object_get(j, "commands"), 0);
            json_t *evs = json_object_get(c, "events");
            json_t *last = json_array_get(evs, json_array_size(evs) - 1);
            uint64_t at = (uint64_t)json_integer_value(json_object_get(last, "at_ms"));
            if (json_array_size(json_object_get(j, "commands")) == 1 &&
                strcmp(jstr(c, "command_uuid"), p->uuid) == 0 &&
                strcmp(jstr(c, "status"), "acknowledged") == 0 &&
                strcmp(jstr(c, "request_type"), "ProfileList") == 0 &&
                strstr(jstr(c, "response"), "<key>ProfileList</key>") &&
                strcmp(jstr(last, "status"), "acknowledged") == 0 && at >= p->t0_ms &&
                at <= wall_ms())
                p->history_ok++;
        }
        if (p->history_ok == before) {
            char *dump = j ? json_dumps(j, JSON_COMPACT) : NULL;
            fprintf(stderr, "bulk: history of %s (%d): %.2000s\n", fleet[i].udid, status,
                    dump ? dump : "(none)");
            free(dump);
        }
        json_decref(j);
    }
    mdm_tls_thread_cleanup();
    return NULL;
}

/* One bulk call queues a command for the whole fleet; every Mac gets it on Idle and answers. */
/* A response far larger than the TLS output buffer (256 KiB) goes out whole, in pieces. */
static void test_large_response(void)
{
    json_t *j = NULL;
    CHECK_EQ_INT(api("GET", "/api/v1/devices?limit=1000", NULL, &j), 200);
    json_t *list = json_object_get(j, "devices");
    CHECK(json_array_size(list) >= 1000);
    char *text = json_dumps(j, JSON_COMPACT);
    CHECK(text && strlen(text) > 300000);
    free(text);
    json_decref(j);
}

static void test_bulk(void)
{
    CHECK(fleet != NULL);
    if (!fleet)
        return;
    long long t0 = now_ms();
    uint64_t wall0 = wall_ms();
    json_t *req = json_pack("{s:[], s:s, s:{s:b}}", "udids", "request_type", "ProfileList",
                            "params", "ManagedOnly", 1);
    json_t *udids = json_object_get(req, "udids");
    for (int i = 0; i < FLEET; i++)
        json_array_append_new(udids, json_string(fleet[i].udid));
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_t *j = NULL;
    CHECK_EQ_INT(api("POST", "/api/v1/commands", body, &j), 201);
    free(body);
    char uuid[64];
    snprintf(uuid, sizeof(uuid), "%s", jstr(j, "command_uuid"));
    CHECK_EQ_INT(strlen(uuid), 36);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "queued")), FLEET);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "failed")), 0);
    json_decref(j);
    long long t_queued = now_ms();

    struct bulk_part parts[FLEET_THREADS];
    pthread_t threads[FLEET_THREADS];
    int started = 0;
    for (int t = 0; t < FLEET_THREADS; t++) {
        parts[t] = (struct bulk_part){.from = t * FLEET / FLEET_THREADS,
                                      .to = (t + 1) * FLEET / FLEET_THREADS,
                                      .uuid = uuid,
                                      .t0_ms = wall0,
                                      .deadline = t0 + 150000};
        if (pthread_create(&threads[t], NULL, bulk_worker, &parts[t]) != 0)
            break;
        started++;
    }
    CHECK_EQ_INT(started, FLEET_THREADS);
    int received = 0, acked = 0, history_ok = 0;
    for (int t = 0; t < started; t++) {
        pthread_join(threads[t], NULL);
        received += parts[t].received;
        acked += parts[t].acked;
        history_ok += parts[t].history_ok;
    }
    fprintf(stderr,
            "bulk: %d Macs queued in %lld ms; %d received, %d acknowledged, %d histories "
            "checked, in %lld ms\n",
            FLEET, t_queued - t0, received, acked, history_ok, now_ms() - t0);
    CHECK_EQ_INT(received, FLEET);
    CHECK_EQ_INT(acked, FLEET);
    CHECK_EQ_INT(history_ok, FLEET);
    CHECK(now_ms() - t0 < 150000);
    drain_server();
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("mdm"));
    snprintf(work, sizeof(work), "%s/macs", dir);
    strncat(dir, "/inst", sizeof(dir) - strlen(dir) - 1);
    mdm_log_setup(MDM_LOG_WARN, false);
    const char *init_args[] = {"init", dir, "--hostnames", "localhost,127.0.0.1", NULL};
    char init_out[8192];
    if (harness_run(dir, init_args, 60000, init_out, sizeof(init_out)) != 0) {
        fprintf(stderr, "mdmd init failed:\n%s\n", init_out);
        return 99;
    }
    if (admin_key_from_init(init_out, api_key, sizeof(api_key)) != 0) {
        fprintf(stderr, "no admin API key in the init output:\n%s\n", init_out);
        return 99;
    }
    if (start() != 0)
        return 99;
    if (sim_env_init(&env, dir, work, srv.device_port) != 0)
        return 99;

    test_lifecycle();
    drain_server();
    test_spoofing();
    drain_server();
    test_malformed();
    drain_server();
    test_unsupported();
    drain_server();
    test_commands();
    drain_server();
    test_restart();
    drain_server();
    test_reenroll();
    drain_server();
    test_order_across_shards();
    drain_server();
    test_fleet();
    test_large_response();
    test_bulk();
    fleet_dispose();

    stop(SIGTERM);
    mdm_tls_thread_cleanup();
    mdm_tls_global_cleanup();
    return check_finish("integ-mdm");
}
