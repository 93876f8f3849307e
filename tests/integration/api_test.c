/*
 * The admin API v1 and the admin command line end to end: a real mdmd (2 shards, ephemeral
 * ports, fresh instance folder), the admin key printed by `mdmd init`, JSON over HTTPS, and
 * one simulated Mac (bench/sim) that enrolls and answers commands queued through the API.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/sim.h"
#include "check.h"
#include "core/https_client.h"
#include "admin_api.h"
#include "harness.h"

static char dir[512];
static char api_key[128];
static server_proc_t srv;

/* One API request; *out gets the parsed JSON answer (may be NULL). Returns the status. */
static int api(const char *method, const char *path, const char *key, const char *ctype,
               const char *body, json_t **out)
{
    return admin_api(srv.admin_port, dir, key, method, path, ctype, body, out);
}


static bool contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

/* Runs the CLI with argv (NULL-terminated, without the binary); output in out. */
static int cli(const char *const *args, char *out, size_t outlen)
{
    const char *argv[32];
    size_t n = 0;
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", srv.admin_port);
    for (size_t i = 0; args[i] && n < 24; i++)
        argv[n++] = args[i];
    argv[n++] = "--url";
    argv[n++] = url;
    argv[n++] = "--api-key";
    argv[n++] = api_key;
    argv[n] = NULL;
    return harness_run(dir, argv, 30000, out, outlen);
}

static void test_auth(void)
{
    json_t *j = NULL;
    CHECK_EQ_INT(api("GET", "/api/v1/devices", NULL, NULL, NULL, &j), 401);
    CHECK_STR(jstr(j, "error"), "unauthorized");
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/devices", "mdm_wrongkey", NULL, NULL, &j), 401);
    json_decref(j);
    CHECK_EQ_INT(api("POST", "/api/v1/commands", "mdm_wrongkey", "application/json", "{}", &j),
                 401);
    json_decref(j);
    /* The device listener never says 401 (a Mac would drop its MDM profile). */
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    int st = https_get(srv.device_port, instance_ca(dir), "/api/v1/devices", &out);
    CHECK(st != 401 && st > 0);
    mdm_buf_dispose(&out);
}

static void test_empty_and_errors(void)
{
    json_t *j = NULL;
    CHECK_EQ_INT(api("GET", "/api/v1/devices", api_key, NULL, NULL, &j), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "devices")), 0);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/devices/NOPE-1", api_key, NULL, NULL, &j), 404);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/nothing", api_key, NULL, NULL, &j), 404);
    json_decref(j);
    CHECK_EQ_INT(api("PUT", "/api/v1/devices", api_key, "application/json", "{}", &j), 405);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/devices?limit=0", api_key, NULL, NULL, &j), 400);
    json_decref(j);

    /* Enqueue to a device that does not exist: the device's 404. */
    CHECK_EQ_INT(api("POST", "/api/v1/devices/NOPE-1/commands", api_key, "application/json",
                     "{\"request_type\":\"SecurityInfo\"}", &j),
                 404);
    json_t *f = json_array_get(json_object_get(j, "failed"), 0);
    CHECK_EQ_INT(json_integer_value(json_object_get(f, "status")), 404);
    CHECK_STR(jstr(f, "udid"), "NOPE-1");
    CHECK(jstr(j, "command_uuid")[0] != '\0');
    json_decref(j);

    /* Unknown RequestType: 422 naming it. */
    CHECK_EQ_INT(api("POST", "/api/v1/devices/NOPE-1/commands", api_key, "application/json",
                     "{\"request_type\":\"FrobnicateDevice\"}", &j),
                 422);
    CHECK_STR(jstr(j, "error"), "unknown request_type");
    CHECK(contains(jstr(j, "detail"), "FrobnicateDevice"));
    json_decref(j);

    /* Wrong type: 422 naming the key. */
    CHECK_EQ_INT(api("POST", "/api/v1/devices/NOPE-1/commands", api_key, "application/json",
                     "{\"request_type\":\"DeviceLock\",\"params\":{\"PIN\":123456}}", &j),
                 422);
    CHECK(contains(jstr(j, "detail"), "params.PIN"));
    CHECK(contains(jstr(j, "detail"), "string"));
    json_decref(j);
    /* Unknown key, nested key, missing required key, bad base64. */
    CHECK_EQ_INT(api("POST", "/api/v1/devices/NOPE-1/commands", api_key, "application/json",
                     "{\"request_type\":\"DeviceLock\",\"params\":{\"Pin\":\"1\"}}", &j),
                 422);
    CHECK(contains(jstr(j, "detail"), "params.Pin"));
    json_decref(j);
    CHECK_EQ_INT(api("POST", "/api/v1/devices/NOPE-1/commands", api_key, "application/json",
                     "{\"request_type\":\"DeviceInformation\",\"params\":{\"Queries\":[\"A\",1]}}",
                     &j),
                 422);
    CHECK(contains(jstr(j, "detail"), "params.Queries[1]"));
    json_decref(j);
    CHECK_EQ_INT(api("POST", "/api/v1/devices/NOPE-1/commands", api_key, "application/json",
                     "{\"request_type\":\"RemoveProfile\",\"params\":{}}", &j),
                 422);
    CHECK(contains(jstr(j, "detail"), "params.Identifier"));
    json_decref(j);
    CHECK_EQ_INT(api("POST", "/api/v1/devices/NOPE-1/commands", api_key, "application/json",
                     "{\"request_type\":\"InstallProfile\",\"params\":{\"Payload\":\"@@\"}}", &j),
                 422);
    CHECK(contains(jstr(j, "detail"), "params.Payload"));
    json_decref(j);
    CHECK_EQ_INT(api("POST", "/api/v1/devices/NOPE-1/commands", api_key, "application/json",
                     "{\"request_type\":", &j),
                 400);
    json_decref(j);

    /* Bulk to unknown devices: 201 with every device failed. */
    CHECK_EQ_INT(api("POST", "/api/v1/commands", api_key, "application/json",
                     "{\"udids\":[\"NOPE-1\",\"NOPE-2\"],\"request_type\":\"ProfileList\","
                     "\"params\":{\"ManagedOnly\":true}}",
                     &j),
                 201);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "failed")), 2);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "queued")), 0);
    json_decref(j);
    CHECK_EQ_INT(api("POST", "/api/v1/commands", api_key, "application/json",
                     "{\"udids\":[],\"request_type\":\"ProfileList\"}", &j),
                 422);
    CHECK(contains(jstr(j, "detail"), "udids"));
    json_decref(j);
}

/* Runs the CLI; on success parses its output as JSON (NULL when it is not). */
static json_t *cli_json(const char *const *args, char *out, size_t outlen)
{
    if (cli(args, out, outlen) != 0)
        return NULL;
    return json_loads(out, 0, NULL);
}

/* The policy and group commands of the CLI, with one enrolled Mac (udid). */
static void test_policy_cli(const char *udid)
{
    char out[65536], id[32] = "", gid[32] = "";
    const char *types[] = {"policy-types", dir, NULL};
    CHECK_EQ_INT(cli(types, out, sizeof(out)), 0);
    CHECK(contains(out, "firewall") && contains(out, "policy types"));

    /* Create: settings checked against the type's schema, the key named when refused. */
    const char *bad[] = {"policy-create", dir, "firewall", "Firewall", "--settings-json",
                         "{\"EnableFirewall\": \"yes\"}", NULL};
    CHECK_EQ_INT(cli(bad, out, sizeof(out)), 1);
    CHECK(contains(out, "422") && contains(out, "EnableFirewall"));
    const char *notjson[] = {"policy-create", dir, "firewall", "Firewall", "--settings-json",
                             "{EnableFirewall", NULL};
    CHECK_EQ_INT(cli(notjson, out, sizeof(out)), 2);
    const char *create[] = {"policy-create", dir, "firewall", "Firewall on", "--settings-json",
                            "{\"EnableFirewall\": true}", NULL};
    CHECK_EQ_INT(cli(create, out, sizeof(out)), 0);
    const char *cp = strstr(out, "policy ");
    int version = 0;
    CHECK(cp && sscanf(cp, "policy %16s version %d", id, &version) == 2);
    CHECK_EQ_INT(strlen(id), 16);
    CHECK_EQ_INT(version, 1);

    const char *list[] = {"policies", dir, NULL};
    CHECK_EQ_INT(cli(list, out, sizeof(out)), 0);
    CHECK(contains(out, id) && contains(out, "Firewall on") && contains(out, "1 policy\n"));
    const char *listj[] = {"policies", dir, "--json", "--limit", "10", NULL};
    json_t *j = cli_json(listj, out, sizeof(out));
    CHECK(j != NULL);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "policies")), 1);
    CHECK_STR(jstr(json_array_get(json_object_get(j, "policies"), 0), "id"), id);
    json_decref(j);
    const char *show[] = {"policies", dir, id, NULL};
    CHECK_EQ_INT(cli(show, out, sizeof(out)), 0);
    CHECK(contains(out, "EnableFirewall") && contains(out, "sealed_settings"));

    /* Update from a file: version 2. */
    char file[600];
    snprintf(file, sizeof(file), "%s/firewall.json", dir);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("{\"EnableFirewall\": true, \"EnableStealthMode\": true}\n", f);
        fclose(f);
    }
    char at_file[610];
    snprintf(at_file, sizeof(at_file), "@%s", file);
    const char *update[] = {"policy-update", dir, id, "--name", "Firewall", "--settings-json",
                            at_file, NULL};
    CHECK_EQ_INT(cli(update, out, sizeof(out)), 0);
    CHECK(contains(out, "version 2") && contains(out, "\"Firewall\""));

    /* A group for every Mac with the policy. */
    const char *gcreate[] = {"group-create", dir, "Everyone", "--all-devices", "--policy", id,
                             NULL};
    CHECK_EQ_INT(cli(gcreate, out, sizeof(out)), 0);
    cp = strstr(out, "group ");
    CHECK(cp && sscanf(cp, "group %16s version %d", gid, &version) == 2);
    CHECK_EQ_INT(strlen(gid), 16);
    const char *groups[] = {"groups", dir, NULL};
    CHECK_EQ_INT(cli(groups, out, sizeof(out)), 0);
    CHECK(contains(out, gid) && contains(out, "Everyone") && contains(out, "1 group\n"));
    const char *gshowj[] = {"groups", dir, gid, "--json", NULL};
    j = cli_json(gshowj, out, sizeof(out));
    CHECK(j != NULL && json_is_true(json_object_get(j, "all_devices")));
    CHECK_STR(json_string_value(json_array_get(json_object_get(j, "policies"), 0)), id);
    json_decref(j);
    const char *gupdate[] = {"group-update", dir, gid, "Some Macs", "--device", udid,
                             "--policy", id, "--user-group", "staff", NULL};
    CHECK_EQ_INT(cli(gupdate, out, sizeof(out)), 0);
    CHECK(contains(out, "version 2"));
    j = cli_json(gshowj, out, sizeof(out));
    CHECK(j != NULL && json_is_false(json_object_get(j, "all_devices")));
    CHECK_STR(json_string_value(json_array_get(json_object_get(j, "devices"), 0)), udid);
    CHECK_STR(json_string_value(json_array_get(json_object_get(j, "user_groups"), 0)), "staff");
    json_decref(j);

    /* The profile: the XML, and signed for the Mac into a file. */
    const char *profile[] = {"policy-profile", dir, id, NULL};
    CHECK_EQ_INT(cli(profile, out, sizeof(out)), 0);
    CHECK(contains(out, "<?xml") && contains(out, "com.apple.security.firewall") &&
          contains(out, "EnableStealthMode"));
    char mobileconfig[600];
    snprintf(mobileconfig, sizeof(mobileconfig), "%s/firewall.mobileconfig", dir);
    const char *signed_[] = {"policy-profile", dir, id, "--device", udid, "--signed", "--out",
                             mobileconfig, NULL};
    CHECK_EQ_INT(cli(signed_, out, sizeof(out)), 0);
    f = fopen(mobileconfig, "rb");
    CHECK(f != NULL);
    if (f) {
        CHECK_EQ_INT(fgetc(f), 0x30); /* DER: a CMS SEQUENCE */
        fclose(f);
    }
    const char *nosuch[] = {"policy-profile", dir, "0123456789abcdef", NULL};
    CHECK_EQ_INT(cli(nosuch, out, sizeof(out)), 1);
    CHECK(contains(out, "404"));

    /* The Mac gets it (reconciled once the group change is durable). */
    const char *deps[] = {"deployments", dir, id, NULL};
    bool deployed = false;
    for (int k = 0; k < 50 && !deployed; k++) {
        CHECK_EQ_INT(cli(deps, out, sizeof(out)), 0);
        deployed = contains(out, udid);
        if (!deployed)
            usleep(100 * 1000);
    }
    CHECK(deployed);
    const char *devpol[] = {"device-policies", dir, udid, NULL};
    CHECK_EQ_INT(cli(devpol, out, sizeof(out)), 0);
    CHECK(contains(out, id) && contains(out, "1 deployment\n"));
    const char *devapps[] = {"device-apps", dir, udid, "--json", NULL};
    j = cli_json(devapps, out, sizeof(out));
    CHECK(json_is_array(json_object_get(j, "apps")));
    json_decref(j);
    const char *apps[] = {"apps", dir, "com.apple.Safari", "--below", "18.0", NULL};
    CHECK_EQ_INT(cli(apps, out, sizeof(out)), 0);
    CHECK(contains(out, "0 devices"));

    /* Deletes need --yes. */
    const char *pdel_no[] = {"policy-delete", dir, id, NULL};
    CHECK_EQ_INT(cli(pdel_no, out, sizeof(out)), 2);
    CHECK(contains(out, "--yes"));
    const char *gdel[] = {"group-delete", dir, gid, "--yes", NULL};
    CHECK_EQ_INT(cli(gdel, out, sizeof(out)), 0);
    const char *pdel[] = {"policy-delete", dir, id, "--yes", "--json", NULL};
    j = cli_json(pdel, out, sizeof(out));
    CHECK(json_is_true(json_object_get(j, "deleted")));
    json_decref(j);
    CHECK_EQ_INT(cli(show, out, sizeof(out)), 1);
    CHECK(contains(out, "404"));
    const char *gshow[] = {"groups", dir, gid, NULL};
    CHECK_EQ_INT(cli(gshow, out, sizeof(out)), 1);
    CHECK(contains(out, "404"));
}

/* A simulated Mac: enrolls, gets commands queued, cancelled and answered through the API. */
static void test_device_lifecycle(void)
{
    char work[600];
    snprintf(work, sizeof(work), "%s/sim", dir);
    sim_env_t env;
    sim_mac_t mac;
    CHECK_EQ_INT(sim_env_init(&env, dir, work, srv.device_port), 0);
    CHECK_EQ_INT(sim_mac_init(&mac, &env, NULL, 1), 0);
    CHECK_EQ_INT(sim_authenticate(&mac, NULL), 200);
    CHECK_EQ_INT(sim_token_update(&mac, NULL, 0, NULL), 200);
    char path[256];
    json_t *j = NULL;

    CHECK_EQ_INT(api("GET", "/api/v1/devices", api_key, NULL, NULL, &j), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "devices")), 1);
    CHECK_STR(jstr(json_array_get(json_object_get(j, "devices"), 0), "udid"), mac.udid);
    json_decref(j);
    char q[200];
    snprintf(q, sizeof(q), "/api/v1/devices?serial=%s&enrolled=true", mac.serial);
    CHECK_EQ_INT(api("GET", q, api_key, NULL, NULL, &j), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "devices")), 1);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/devices?enrolled=false", api_key, NULL, NULL, &j), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "devices")), 0);
    json_decref(j);
    snprintf(path, sizeof(path), "/api/v1/devices/%s", mac.udid);
    CHECK_EQ_INT(api("GET", path, api_key, NULL, NULL, &j), 200);
    CHECK(json_is_true(json_object_get(j, "enrolled")));
    CHECK_STR(jstr(j, "serial"), mac.serial);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "queued")), 0);
    json_decref(j);

    /* Two commands: one JSON, one raw plist; cancel the second while it is queued. */
    char uuid1[64] = "", uuid2[64] = "";
    snprintf(path, sizeof(path), "/api/v1/devices/%s/commands", mac.udid);
    CHECK_EQ_INT(api("POST", path, api_key, "application/json",
                     "{\"request_type\":\"DeviceInformation\",\"params\":{\"Queries\":"
                     "[\"UDID\",\"SerialNumber\",\"OSVersion\"]}}",
                     &j),
                 201);
    snprintf(uuid1, sizeof(uuid1), "%s", jstr(j, "command_uuid"));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "queued")), 1);
    CHECK_EQ_INT(strlen(uuid1), 36);
    json_decref(j);
    const char *raw = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>"
                      "<key>RequestType</key><string>ProfileList</string>"
                      "<key>ManagedOnly</key><true/></dict></plist>";
    CHECK_EQ_INT(api("POST", path, api_key, "application/xml", raw, &j), 201);
    snprintf(uuid2, sizeof(uuid2), "%s", jstr(j, "command_uuid"));
    json_decref(j);
    const char *bad_raw = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">"
                          "<dict><key>RequestType</key><string>ProfileList</string>"
                          "<key>ManagedOnly</key><string>yes</string></dict></plist>";
    CHECK_EQ_INT(api("POST", path, api_key, "application/xml", bad_raw, &j), 422);
    CHECK(contains(jstr(j, "detail"), "ManagedOnly"));
    json_decref(j);

    snprintf(path, sizeof(path), "/api/v1/devices/%s", mac.udid);
    CHECK_EQ_INT(api("GET", path, api_key, NULL, NULL, &j), 200);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "queued")), 2);
    json_decref(j);

    snprintf(path, sizeof(path), "/api/v1/devices/%s/commands/%s", mac.udid, uuid2);
    CHECK_EQ_INT(api("DELETE", path, api_key, NULL, NULL, &j), 200);
    json_decref(j);
    CHECK_EQ_INT(api("DELETE", path, api_key, NULL, NULL, &j), 404);
    json_decref(j);

    /* The Mac polls: it gets the first command (with the API's UUID) and answers it. */
    sim_cmd_t cmd, next;
    CHECK_EQ_INT(sim_connect_idle(&mac, &cmd), 200);
    CHECK_STR(cmd.uuid, uuid1);
    CHECK_STR(cmd.request_type, "DeviceInformation");
    CHECK_EQ_INT(sim_respond(&mac, &cmd, SIM_ACKNOWLEDGED, &next), 200);
    CHECK_STR(next.uuid, ""); /* the cancelled one never goes out */

    /* History: the answered command with its full response, the cancelled one. */
    snprintf(path, sizeof(path), "/api/v1/devices/%s/commands", mac.udid);
    CHECK_EQ_INT(api("GET", path, api_key, NULL, NULL, &j), 200);
    json_t *list = json_object_get(j, "commands");
    CHECK_EQ_INT(json_array_size(list), 2);
    int seen = 0;
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c) {
        if (strcmp(jstr(c, "command_uuid"), uuid1) == 0) {
            seen++;
            CHECK_STR(jstr(c, "status"), "acknowledged");
            CHECK_STR(jstr(c, "request_type"), "DeviceInformation");
            CHECK(contains(jstr(c, "response"), "QueryResponses"));
            CHECK(json_array_size(json_object_get(c, "events")) >= 3);
        } else if (strcmp(jstr(c, "command_uuid"), uuid2) == 0) {
            seen++;
            CHECK_STR(jstr(c, "status"), "cancelled");
            CHECK_STR(jstr(c, "request_type"), "ProfileList");
        }
    }
    CHECK_EQ_INT(seen, 2);
    json_decref(j);

    /* The command line, over the same API. */
    char out[16384];
    const char *a1[] = {"devices", dir, NULL};
    CHECK_EQ_INT(cli(a1, out, sizeof(out)), 0);
    CHECK(contains(out, mac.udid) && contains(out, "enrolled"));
    const char *a2[] = {"device", dir, mac.udid, "--json", NULL};
    CHECK_EQ_INT(cli(a2, out, sizeof(out)), 0);
    CHECK(contains(out, "\"serial\""));
    const char *a3[] = {"send", dir, mac.udid, "DeviceLock", "PIN=123456", "Message=lost", NULL};
    CHECK_EQ_INT(cli(a3, out, sizeof(out)), 0);
    CHECK(contains(out, "queued"));
    char uuid3[64] = "";
    const char *cp = strstr(out, "command ");
    if (cp)
        sscanf(cp, "command %36s", uuid3);
    CHECK_EQ_INT(strlen(uuid3), 36);
    const char *a4[] = {"commands", dir, mac.udid, NULL};
    CHECK_EQ_INT(cli(a4, out, sizeof(out)), 0);
    CHECK(contains(out, uuid1) && contains(out, "DeviceLock") && contains(out, "acknowledged"));
    const char *a5[] = {"cancel", dir, mac.udid, uuid3, NULL};
    CHECK_EQ_INT(cli(a5, out, sizeof(out)), 0);
    const char *a6[] = {"send", dir, mac.udid, "NoSuchThing", NULL};
    CHECK_EQ_INT(cli(a6, out, sizeof(out)), 1);
    CHECK(contains(out, "422") && contains(out, "NoSuchThing"));
    const char *a7[] = {"send", dir, mac.udid, "DeviceInformation", "Queries:=[\"UDID\"]",
                        "--json", NULL};
    CHECK_EQ_INT(cli(a7, out, sizeof(out)), 0);
    CHECK(contains(out, "\"command_uuid\""));
    const char *a8[] = {"audit", dir, NULL};
    CHECK_EQ_INT(cli(a8, out, sizeof(out)), 0);
    CHECK(contains(out, "command.cancel") && contains(out, "127.0.0.1:"));
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", srv.admin_port);
    const char *a9[] = {"devices", dir, "--url", url, "--api-key", "mdm_wrong", NULL};
    CHECK_EQ_INT(harness_run(dir, a9, 30000, out, sizeof(out)), 1);
    CHECK(contains(out, "401"));

    /* A user channel has its own queue: ?channel=<UserID>. */
    snprintf(path, sizeof(path), "/api/v1/devices/%s/commands?channel=501", mac.udid);
    CHECK_EQ_INT(api("POST", path, api_key, "application/json",
                     "{\"request_type\":\"ProfileList\"}", &j),
                 201);
    char uuid_user[64];
    snprintf(uuid_user, sizeof(uuid_user), "%s", jstr(j, "command_uuid"));
    json_decref(j);
    snprintf(path, sizeof(path), "/api/v1/devices/%s/commands?channel=bad/user", mac.udid);
    CHECK_EQ_INT(api("POST", path, api_key, "application/json",
                     "{\"request_type\":\"ProfileList\"}", &j),
                 422);
    json_decref(j);
    /* Drain the device channel (the CLI queued a DeviceInformation): the user channel's
     * command never shows up there. */
    for (int k = 0; k < 5; k++) {
        CHECK_EQ_INT(sim_connect_idle(&mac, &cmd), 200);
        if (!cmd.uuid[0])
            break;
        CHECK(strcmp(cmd.uuid, uuid_user) != 0);
        CHECK_EQ_INT(sim_respond(&mac, &cmd, SIM_ACKNOWLEDGED, &next), 200);
        if (!next.uuid[0])
            break;
        cmd = next;
        CHECK(strcmp(cmd.uuid, uuid_user) != 0);
    }
    char body[1024];
    int blen = snprintf(body, sizeof(body),
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict>"
                        "<key>Status</key><string>Idle</string><key>UDID</key><string>%s</string>"
                        "<key>UserID</key><string>501</string></dict></plist>",
                        mac.udid);
    mdm_buf_t reply;
    mdm_buf_init(&reply, 0);
    int st = 0;
    snprintf(path, sizeof(path), "/zdm/mdm/connect");
    CHECK_EQ_INT(sim_put(&mac, path, body, (size_t)blen, &st, &reply), 0);
    CHECK_EQ_INT(st, 200);
    CHECK(reply.len > 0 && memmem(mdm_buf_head(&reply), reply.len, uuid_user,
                                  strlen(uuid_user)) != NULL);
    mdm_buf_dispose(&reply);

    test_policy_cli(mac.udid);

    /* Delete: the device, its queue and its secrets go. */
    snprintf(path, sizeof(path), "/api/v1/devices/%s", mac.udid);
    CHECK_EQ_INT(api("DELETE", path, api_key, NULL, NULL, &j), 200);
    json_decref(j);
    CHECK_EQ_INT(api("GET", path, api_key, NULL, NULL, &j), 404);
    json_decref(j);
    snprintf(path, sizeof(path), "/api/v1/devices/%s/commands", mac.udid);
    CHECK_EQ_INT(api("GET", path, api_key, NULL, NULL, &j), 404);
    json_decref(j);
    sim_mac_dispose(&mac);
}

static void test_audit(void)
{
    json_t *j = NULL;
    CHECK_EQ_INT(api("GET", "/api/v1/audit?limit=1000", api_key, NULL, NULL, &j), 200);
    json_t *events = json_object_get(j, "events");
    CHECK(json_array_size(events) >= 10);
    bool enqueue_404 = false, enqueue_422 = false, cancel = false, del = false;
    uint64_t last_ms = 0;
    bool ordered = true;
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e) {
        const char *action = jstr(e, "action");
        int status = (int)json_integer_value(json_object_get(e, "status"));
        uint64_t at = (uint64_t)json_integer_value(json_object_get(e, "at_ms"));
        ordered = ordered && at >= last_ms;
        last_ms = at;
        CHECK(contains(jstr(e, "who"), "admin-key:"));
        CHECK(contains(jstr(e, "source"), "127.0.0.1:"));
        CHECK_EQ_INT(strlen(jstr(e, "id")), 32);
        if (strcmp(action, "command.enqueue") == 0 && status == 404)
            enqueue_404 = strcmp(jstr(e, "target"), "NOPE-1") == 0;
        if (strcmp(action, "command.enqueue") == 0 && status == 422)
            enqueue_422 = true;
        if (strcmp(action, "command.cancel") == 0 && status == 200)
            cancel = true;
        if (strcmp(action, "device.delete") == 0 && status == 200)
            del = true;
    }
    CHECK(ordered && enqueue_404 && enqueue_422 && cancel && del);
    /* Paging by id. */
    const char *first = jstr(json_array_get(events, 0), "id");
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/audit?limit=2&after=%s", first);
    json_t *p = NULL;
    CHECK_EQ_INT(api("GET", path, api_key, NULL, NULL, &p), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(p, "events")), 2);
    CHECK_STR(jstr(json_array_get(json_object_get(p, "events"), 0), "id"),
              jstr(json_array_get(events, 1), "id"));
    CHECK(json_is_string(json_object_get(p, "next_after")));
    json_decref(p);
    size_t total = json_array_size(events);
    json_decref(j);
    /* GETs are not audited. */
    CHECK_EQ_INT(api("GET", "/api/v1/audit?limit=1000", api_key, NULL, NULL, &j), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "events")), total);
    json_decref(j);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("api"));
    const char *args[] = {"init", dir, "--hostnames", "localhost,127.0.0.1", NULL};
    char out[8192];
    if (harness_run(dir, args, 60000, out, sizeof(out)) != 0) {
        fprintf(stderr, "mdmd init failed:\n%s\n", out);
        return 99;
    }
    if (admin_key_from_init(out, api_key, sizeof(api_key)) != 0) {
        fprintf(stderr, "no admin API key in the init output:\n%s\n", out);
        return 99;
    }
    const char *extra[] = {"--shards", "2", NULL};
    if (harness_start(&srv, dir, extra) != 0)
        return 99;
    test_auth();
    test_empty_and_errors();
    test_device_lifecycle();
    test_audit();
    CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);

    /* The audit log survives a restart. */
    if (harness_start(&srv, dir, extra) == 0) {
        json_t *j = NULL;
        CHECK_EQ_INT(api("GET", "/api/v1/audit", api_key, NULL, NULL, &j), 200);
        CHECK(json_array_size(json_object_get(j, "events")) >= 10);
        json_decref(j);
        CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);
    } else {
        CHECK(!"restart failed");
    }
    return check_finish("integ-api");
}
