/*
 * The device endpoints end to end: a real mdmd (2 shards, ephemeral ports, fresh instance
 * folder) and simulated Macs (bench/sim) over real mutual TLS.
 *
 * Until the admin API can queue commands, commands are queued the way the device actor finds
 * them at load: written straight into the instance's database while mdmd is stopped (see
 * offline_enqueue), and results are read back the same way. Every such step is therefore also
 * a restart test.
 */
#include <errno.h>
#include <fcntl.h>
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
#include "harness.h"
#include "storage/mdm.h"

static char dir[512];
static char work[600];
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

/* ---- commands written into the database while mdmd is stopped ---- */

static mdm_store_t *open_store(void)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/db", dir);
    struct mdm_store_options o = {.path = path, .durability = MDM_DURABILITY_FSYNC};
    mdm_store_t *s = NULL;
    if (mdm_store_open(&s, &o) != 0)
        return NULL;
    return s;
}

/* A command plist as an API would store it. */
static void command_plist(const char *uuid, const char *request_type, mdm_buf_t *out)
{
    plist_t d = plist_new_dict();
    plist_dict_set_item(d, "CommandUUID", plist_new_string(uuid));
    plist_t c = plist_new_dict();
    plist_dict_set_item(c, "RequestType", plist_new_string(request_type));
    if (strcmp(request_type, "DeviceInformation") == 0) {
        plist_t q = plist_new_array();
        const char *keys[] = {"UDID", "DeviceName", "OSVersion", "SerialNumber", "Model"};
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            plist_array_append_item(q, plist_new_string(keys[i]));
        plist_dict_set_item(c, "Queries", q);
    }
    plist_dict_set_item(d, "Command", c);
    char *xml = NULL;
    uint32_t len = 0;
    plist_to_xml(d, &xml, &len);
    plist_free(d);
    mdm_buf_reset(out);
    CHECK(xml && mdm_buf_append(out, xml, len) == 0);
    plist_to_xml_free(xml);
}

struct qcmd {
    const char *udid, *uuid, *type;
};

/* Stops mdmd (SIGKILL), queues the commands in the database, starts mdmd again. */
static void offline_enqueue(const struct qcmd *cmds, size_t n)
{
    stop(SIGKILL);
    mdm_store_t *s = open_store();
    CHECK(s != NULL);
    if (s) {
        mdm_batch_t *b = mdm_batch_new();
        mdm_buf_t pl;
        mdm_buf_init(&pl, 0);
        uint64_t now = wall_ms();
        for (size_t i = 0; i < n; i++) {
            mdm_device_t d;
            CHECK_EQ_INT(mdm_store_get_device(s, cmds[i].udid, &d), 0);
            command_plist(cmds[i].uuid, cmds[i].type, &pl);
            mdm_command_t c = {.created_ms = now, .plist = mdm_buf_head(&pl),
                               .plist_len = pl.len};
            snprintf(c.uuid, sizeof(c.uuid), "%s", cmds[i].uuid);
            snprintf(c.request_type, sizeof(c.request_type), "%s", cmds[i].type);
            snprintf(c.created_by, sizeof(c.created_by), "integ-mdm");
            mdm_store_put_command(b, &c);
            mdm_queue_entry_t e = {.enqueued_ms = now + i, .enrollment = d.enrollment,
                                   .status = MDM_CMD_QUEUED, .updated_ms = now};
            snprintf(e.udid, sizeof(e.udid), "%s", cmds[i].udid);
            snprintf(e.uuid, sizeof(e.uuid), "%s", cmds[i].uuid);
            mdm_store_put_queue_entry(b, &e);
            mdm_result_t r = {0};
            snprintf(r.udid, sizeof(r.udid), "%s", cmds[i].udid);
            snprintf(r.uuid, sizeof(r.uuid), "%s", cmds[i].uuid);
            mdm_result_add_event(&r, MDM_CMD_QUEUED, now);
            mdm_store_put_result(b, &r);
        }
        CHECK_EQ_INT(mdm_store_commit(s, b), 0);
        mdm_batch_free(b);
        mdm_buf_dispose(&pl);
        mdm_store_close(s);
    }
    CHECK_EQ_INT(start(), 0);
}

/* Stops mdmd cleanly and reads a command's result; restarts it. Returns the latest status or
 * -1; the response (if any) goes to response. */
static int offline_result(const char *udid, const char *uuid, mdm_buf_t *response)
{
    stop(SIGTERM);
    int status = -1;
    mdm_store_t *s = open_store();
    CHECK(s != NULL);
    if (s) {
        mdm_result_t r;
        if (mdm_store_get_result(s, udid, uuid, &r) == 0) {
            status = r.status;
            if (response) {
                mdm_buf_reset(response);
                CHECK(mdm_buf_append(response, r.response, r.response_len) == 0 &&
                      mdm_buf_append(response, "", 1) == 0);
                response->len--;
            }
        }
        mdm_result_dispose(&r);
        mdm_store_close(s);
    }
    CHECK_EQ_INT(start(), 0);
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
    struct qcmd q = {m.udid, "6F1A0C52-0B4E-4B8E-9D0C-0000000000D1", "DeviceInformation"};
    offline_enqueue(&q, 1);
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200); /* reconnects after the restart */
    CHECK_STR(cmd.uuid, q.uuid);
    CHECK_STR(cmd.request_type, "DeviceInformation");
    CHECK(cmd.query_mask != 0);
    sim_cmd_t next;
    CHECK_EQ_INT(sim_respond(&m, &cmd, SIM_ACKNOWLEDGED, &next), 200);
    CHECK_STR(next.uuid, "");
    CHECK_EQ_INT(sim_respond(&m, &cmd, SIM_ACKNOWLEDGED, &next), 200); /* a repeat: once */
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), 200);
    CHECK_STR(cmd.uuid, "");
    CHECK_EQ_INT(offline_result(m.udid, q.uuid, &out), MDM_CMD_ACKNOWLEDGED);
    const char *resp = (const char *)mdm_buf_head(&out);
    CHECK(out.len && strstr(resp, "<key>QueryResponses</key>") != NULL);
    CHECK(out.len && strstr(resp, m.serial) != NULL);
    CHECK(out.len && strstr(resp, "<key>ModelName</key>") == NULL); /* not asked for */

    /* Bootstrap token escrow. */
    mdm_buf_t tok;
    mdm_buf_init(&tok, 0);
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
        {m.udid, "C0000001-0000-4000-8000-000000000001", "SecurityInfo"},
        {m.udid, "C0000001-0000-4000-8000-000000000002", "InstalledApplicationList"},
        {m.udid, "C0000001-0000-4000-8000-000000000003", "ProfileList"},
        {m.udid, "C0000001-0000-4000-8000-000000000004", "CertificateList"},
        {m.udid, "C0000001-0000-4000-8000-000000000005", "RestartDevice"},
    };
    offline_enqueue(q, 5);

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
    CHECK_EQ_INT(offline_result(m.udid, q[0].uuid, &resp), MDM_CMD_ACKNOWLEDGED);
    CHECK(resp.len && strstr((const char *)mdm_buf_head(&resp), "FDE_Enabled") != NULL);
    CHECK_EQ_INT(offline_result(m.udid, q[1].uuid, &resp), MDM_CMD_ACKNOWLEDGED);
    CHECK(resp.len && strstr((const char *)mdm_buf_head(&resp), "com.apple.Safari") != NULL);
    CHECK_EQ_INT(offline_result(m.udid, q[2].uuid, &resp), MDM_CMD_ERROR);
    CHECK(resp.len && strstr((const char *)mdm_buf_head(&resp), "ErrorChain") != NULL);
    CHECK_EQ_INT(offline_result(m.udid, q[3].uuid, &resp), MDM_CMD_ACKNOWLEDGED);
    CHECK(resp.len && strstr((const char *)mdm_buf_head(&resp), "IsIdentity") != NULL);
    CHECK_EQ_INT(offline_result(m.udid, q[4].uuid, NULL), MDM_CMD_FORMAT_ERROR);
    mdm_buf_dispose(&resp);
    sim_mac_dispose(&m);
}

static void test_restart(void)
{
    sim_mac_t m;
    CHECK_EQ_INT(sim_mac_init(&m, &env, NULL, 7), 0);
    CHECK(enroll(&m));
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
    struct qcmd q = {old.udid, "E0000001-0000-4000-8000-000000000001", "DeviceInformation"};
    offline_enqueue(&q, 1);
    CHECK_EQ_INT(sim_mac_init(&fresh, &env, old.udid, 9), 0);
    CHECK(enroll(&fresh));
    sim_cmd_t cmd;
    CHECK_EQ_INT(sim_connect_idle(&fresh, &cmd), 200);
    CHECK_STR(cmd.uuid, ""); /* the queue of the old enrollment is closed */
    CHECK_EQ_INT(sim_connect_idle(&old, &cmd), 403); /* the old identity is no longer bound */
    CHECK_EQ_INT(offline_result(old.udid, q.uuid, NULL), MDM_CMD_CANCELLED);
    CHECK_EQ_INT(sim_connect_idle(&fresh, &cmd), 200);
    sim_mac_dispose(&old);
    sim_mac_dispose(&fresh);
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

static void test_fleet(void)
{
    sim_mac_t *macs = calloc(FLEET, sizeof(*macs));
    CHECK(macs != NULL);
    if (!macs)
        return;
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
    for (int i = 0; i < FLEET; i++)
        if (macs[i].env)
            sim_mac_dispose(&macs[i]);
    free(macs);
    drain_server();
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("mdm"));
    snprintf(work, sizeof(work), "%s/macs", dir);
    strncat(dir, "/inst", sizeof(dir) - strlen(dir) - 1);
    mdm_log_setup(MDM_LOG_WARN, false);
    if (harness_init(dir) != 0)
        return 99;
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
    test_fleet();

    stop(SIGTERM);
    mdm_tls_thread_cleanup();
    mdm_tls_global_cleanup();
    return check_finish("integ-mdm");
}
