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
#include <strings.h>
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

/* The security-action commands of the CLI on the enrolled Mac udid. Every lock is cancelled
 * before the Mac polls, so the Mac stays usable (and unlocked) for what follows. */
static void test_actions_cli(sim_mac_t *mac)
{
    const char *udid = mac->udid;
    char out[65536];
    /* The API checks the PIN (exit 1, the 422 names it). */
    const char *badpin[] = {"lock", dir, udid, "--pin", "12345", NULL};
    CHECK_EQ_INT(cli(badpin, out, sizeof(out)), 1);
    CHECK(contains(out, "422") && contains(out, "pin"));

    /* A generated PIN, as JSON; cancelled while queued. */
    const char *genj[] = {"lock", dir, udid, "--json", NULL};
    json_t *j = cli_json(genj, out, sizeof(out));
    CHECK(j != NULL && json_is_true(json_object_get(j, "pin_generated")));
    CHECK_EQ_INT(strlen(jstr(j, "pin")), 6);
    CHECK_STR(jstr(j, "request_type"), "DeviceLock");
    json_decref(j);
    const char *cancelj[] = {"cancel-lock", dir, udid, "--json", NULL};
    j = cli_json(cancelj, out, sizeof(out));
    CHECK_STR(jstr(j, "status"), "cancelled");
    json_decref(j);

    /* A given PIN: the table shows the command and the PIN. */
    const char *lock[] = {"lock", dir, udid, "--pin", "482917", "--message", "Lost Mac",
                          "--phone", "+1 555 0100", NULL};
    CHECK_EQ_INT(cli(lock, out, sizeof(out)), 0);
    CHECK(contains(out, "PIN: 482917") && contains(out, "as given") &&
          contains(out, "(DeviceLock)"));
    char uuid[64] = "";
    const char *cp = strstr(out, "command ");
    CHECK(cp && sscanf(cp, "command %63[^ ,\n]", uuid) == 1);
    CHECK(strncmp(uuid, "act-lock-", 9) == 0);
    CHECK_EQ_INT(cli(lock, out, sizeof(out)), 1); /* one lock at a time */
    CHECK(contains(out, "409") && contains(out, uuid));
    const char *actions[] = {"actions", dir, udid, NULL};
    CHECK_EQ_INT(cli(actions, out, sizeof(out)), 0);
    CHECK(contains(out, uuid) && contains(out, "queued") && contains(out, "2 actions\n"));
    const char *cancel[] = {"cancel-lock", dir, udid, NULL};
    CHECK_EQ_INT(cli(cancel, out, sizeof(out)), 0);
    CHECK(contains(out, "cancelled") && contains(out, uuid));
    CHECK_EQ_INT(cli(cancel, out, sizeof(out)), 1); /* nothing left to cancel */
    CHECK(contains(out, "404"));
    const char *actionsj[] = {"actions", dir, udid, "--json", NULL};
    j = cli_json(actionsj, out, sizeof(out));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "actions")), 2);
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(j, "actions"), i, a) {
        CHECK_STR(jstr(a, "action"), "lock");
        CHECK_STR(jstr(a, "status"), "cancelled");
    }
    json_decref(j);

    /* The PIN again: an audited view, said so on stderr (the JSON follows that line here,
     * where stdout and stderr share one file). */
    const char *pin[] = {"lock-pin", dir, udid, NULL};
    CHECK_EQ_INT(cli(pin, out, sizeof(out)), 0);
    CHECK(contains(out, "482917") && contains(out, uuid) && contains(out, "audited"));
    const char *pinj[] = {"lock-pin", dir, udid, "--json", NULL};
    CHECK_EQ_INT(cli(pinj, out, sizeof(out)), 0);
    j = strchr(out, '{') ? json_loads(strchr(out, '{'), 0, NULL) : NULL;
    CHECK_STR(jstr(json_object_get(j, "lock"), "pin"), "482917");
    json_decref(j);

    /* Erase: --confirm is required by the CLI (exit 2, nothing sent) and checked by the API
     * (a wrong UDID: 422, exit 1). Nothing is erased here. */
    const char *erase[] = {"erase", dir, udid, NULL};
    CHECK_EQ_INT(cli(erase, out, sizeof(out)), 2);
    CHECK(contains(out, "--confirm"));
    const char *erase_wrong[] = {"erase", dir, udid, "--confirm", "NOT-THIS-MAC", NULL};
    CHECK_EQ_INT(cli(erase_wrong, out, sizeof(out)), 1);
    CHECK(contains(out, "422") && contains(out, "confirm"));
    const char *wipe[] = {"selective-wipe", dir, udid, NULL};
    CHECK_EQ_INT(cli(wipe, out, sizeof(out)), 2);
    CHECK(contains(out, "--yes"));
    const char *revoke[] = {"revoke", dir, udid, NULL};
    CHECK_EQ_INT(cli(revoke, out, sizeof(out)), 2);
    CHECK(contains(out, "--yes"));

    /* No FileVault key escrowed: nothing to reveal or rotate. */
    const char *fv[] = {"filevault-key", dir, udid, NULL};
    CHECK_EQ_INT(cli(fv, out, sizeof(out)), 1);
    CHECK(contains(out, "404"));
    const char *rotate[] = {"rotate-filevault-key", dir, udid, NULL};
    CHECK_EQ_INT(cli(rotate, out, sizeof(out)), 1);
    CHECK(contains(out, "409") && contains(out, "recovery key"));

    /* ADE flag on and off again; restore-policies changes nothing for a Mac not wiped. */
    const char *ade_bad[] = {"set-ade", dir, udid, "yes", NULL};
    CHECK_EQ_INT(cli(ade_bad, out, sizeof(out)), 2);
    const char *ade_on[] = {"set-ade", dir, udid, "on", NULL};
    CHECK_EQ_INT(cli(ade_on, out, sizeof(out)), 0);
    CHECK(contains(out, "ade on") && contains(out, "done"));
    const char *ade_off[] = {"set-ade", dir, udid, "off", "--json", NULL};
    j = cli_json(ade_off, out, sizeof(out));
    CHECK(j != NULL && json_is_false(json_object_get(j, "ade")));
    json_decref(j);
    const char *restore[] = {"restore-policies", dir, udid, NULL};
    CHECK_EQ_INT(cli(restore, out, sizeof(out)), 0);
    CHECK(contains(out, "policies delivered"));

    /* A lock that reached the Mac (handed out, not answered yet) is not cancelled: exit 1 and
     * the PIN that unlocks it. The Mac then answers with sim_respond, which does not act on
     * the command: it stays unlocked. */
    const char *lock2[] = {"lock", dir, udid, "--pin", "602394", NULL};
    CHECK_EQ_INT(cli(lock2, out, sizeof(out)), 0);
    cp = strstr(out, "command ");
    CHECK(cp && sscanf(cp, "command %63[^ ,\n]", uuid) == 1);
    sim_cmd_t cmd, next;
    bool delivered = false;
    CHECK_EQ_INT(sim_connect_idle(mac, &cmd), 200);
    for (int k = 0; k < 20 && cmd.uuid[0] && !delivered; k++) {
        delivered = strcmp(cmd.uuid, uuid) == 0;
        if (!delivered) {
            CHECK_EQ_INT(sim_respond(mac, &cmd, SIM_ACKNOWLEDGED, &next), 200);
            cmd = next;
        }
    }
    CHECK(delivered);
    CHECK_EQ_INT(cli(cancel, out, sizeof(out)), 1);
    CHECK(contains(out, "409") && contains(out, "already delivered") &&
          contains(out, "PIN: 602394") && contains(out, "audited"));
    CHECK_EQ_INT(cli(cancelj, out, sizeof(out)), 1);
    j = strchr(out, '{') ? json_loads(strchr(out, '{'), JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    CHECK_STR(jstr(j, "pin"), "602394");
    json_decref(j);
    CHECK_EQ_INT(sim_respond(mac, &cmd, SIM_ACKNOWLEDGED, &next), 200);
    j = cli_json(actionsj, out, sizeof(out));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "actions")), 3);
    const char *status = "";
    json_array_foreach(json_object_get(j, "actions"), i, a) /* in no particular order */
        if (strcmp(jstr(a, "command_uuid"), uuid) == 0)
            status = jstr(a, "status");
    CHECK_STR(status, "acknowledged");
    json_decref(j);

    /* A certificate renewal is queued (the Mac is deleted after this test). */
    const char *renew[] = {"renew-certificate", dir, udid, NULL};
    CHECK_EQ_INT(cli(renew, out, sizeof(out)), 0);
    CHECK(contains(out, "queued, command act-renew-") && contains(out, "(InstallProfile)") &&
          contains(out, "enrollment "));
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
    test_actions_cli(&mac);

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

/* A raw GET on the admin listener: status, Content-Type, X-Next-After ("" when absent) and
 * the body (NUL-terminated, the caller's to free). */
struct raw_answer {
    int status;
    char ctype[64], next[64];
    char *body;
    size_t body_len;
};

/* The value of header name in head (up to the blank line) into out; "" when absent. */
static void head_value(const char *head, size_t head_len, const char *name, char *out,
                       size_t outlen)
{
    out[0] = '\0';
    size_t nlen = strlen(name);
    const char *end = head + head_len;
    for (const char *p = head; p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        if (*p == '\n')
            p++;
        if ((size_t)(end - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1 + strspn(p + nlen + 1, " ");
            snprintf(out, outlen, "%.*s", (int)strcspn(v, "\r\n"), v);
            return;
        }
    }
}

static int raw_get(const char *path, const char *accept, struct raw_answer *a)
{
    memset(a, 0, sizeof(*a));
    a->status = -1;
    hclient_t c;
    mdm_buf_t req, resp;
    mdm_buf_init(&req, 0);
    mdm_buf_init(&resp, 0);
    int ret = mdm_buf_printf(&req, "GET %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
                                   "%s\r\nAccept: %s\r\nConnection: close\r\n\r\n",
                             path, api_key, accept ? accept : "*/*");
    const char *body;
    if (ret == 0) {
        if (hclient_connect(&c, srv.admin_port, instance_ca(dir), NULL, NULL, NULL) == 0 &&
            hclient_send(&c, mdm_buf_head(&req), req.len) == 0)
            a->status = hclient_read_response(&c, &resp, 60000);
        hclient_close(&c);
    }
    if (a->status > 0 && mdm_https_response_body(&resp, &body, &a->body_len) == 0) {
        const char *head = (const char *)mdm_buf_head(&resp);
        size_t head_len = (size_t)(body - head);
        head_value(head, head_len, "Content-Type", a->ctype, sizeof(a->ctype));
        head_value(head, head_len, "X-Next-After", a->next, sizeof(a->next));
        a->body = strndup(body, a->body_len);
    }
    mdm_buf_dispose(&req);
    mdm_buf_dispose(&resp);
    return a->status;
}

/* Parses a JSON-lines body: every line an event object with the list's fields; appends the
 * ids to ids (a JSON array). Returns the number of lines, or -1 when one is not an event. */
static int parse_jsonl(const char *body, json_t *ids)
{
    int n = 0;
    for (const char *p = body; *p;) {
        const char *nl = strchr(p, '\n');
        if (!nl)
            return -1; /* every line ends in a newline */
        json_error_t je;
        json_t *o = json_loadb(p, (size_t)(nl - p), 0, &je);
        bool ok = json_is_object(o) && json_is_integer(json_object_get(o, "at_ms")) &&
                  json_is_integer(json_object_get(o, "status")) &&
                  json_is_string(json_object_get(o, "who")) &&
                  json_is_string(json_object_get(o, "action")) &&
                  json_is_string(json_object_get(o, "target")) &&
                  json_is_string(json_object_get(o, "source")) &&
                  json_is_string(json_object_get(o, "detail")) &&
                  strlen(jstr(o, "id")) == 32;
        if (ok)
            json_array_append_new(ids, json_string(jstr(o, "id")));
        json_decref(o);
        if (!ok)
            return -1;
        n++;
        p = nl + 1;
    }
    return n;
}

/* The ids of events (a JSON array of event objects) that pass keep, as a JSON array. */
static json_t *ids_where(json_t *events, bool (*keep)(json_t *e))
{
    json_t *ids = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
        if (!keep || keep(e))
            json_array_append_new(ids, json_string(jstr(e, "id")));
    return ids;
}

static bool is_command(json_t *e) { return strncmp(jstr(e, "action"), "command.", 8) == 0; }
static bool is_device(json_t *e) { return strncmp(jstr(e, "action"), "device.", 7) == 0; }
static bool is_nope1(json_t *e) { return strcmp(jstr(e, "target"), "NOPE-1") == 0; }
static bool is_error(json_t *e) { return json_integer_value(json_object_get(e, "status")) >= 400; }

/* Pages through query (JSON, limit 2, following next_after); the ids seen, as an array. */
static json_t *page_json(const char *query)
{
    json_t *ids = json_array();
    char after[64] = "";
    for (int pages = 0; pages < 1000; pages++) {
        char path[512];
        snprintf(path, sizeof(path), "/api/v1/audit?limit=2&%s%s%s", query,
                 after[0] ? "&after=" : "", after);
        json_t *j = NULL;
        CHECK_EQ_INT(api("GET", path, api_key, NULL, NULL, &j), 200);
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(j, "events"), i, e)
            json_array_append_new(ids, json_string(jstr(e, "id")));
        const char *next = json_string_value(json_object_get(j, "next_after"));
        snprintf(after, sizeof(after), "%s", next ? next : "");
        json_decref(j);
        if (!after[0])
            break;
    }
    return ids;
}

/* Pages through the JSON-lines export of query (limit 3, following X-Next-After). */
static json_t *page_jsonl(const char *query, int *pages)
{
    json_t *ids = json_array();
    char after[64] = "";
    for (*pages = 0; *pages < 1000;) {
        char path[512];
        snprintf(path, sizeof(path), "/api/v1/audit?format=jsonl&limit=3%s%s%s%s",
                 query[0] ? "&" : "", query, after[0] ? "&after=" : "", after);
        struct raw_answer a;
        CHECK_EQ_INT(raw_get(path, NULL, &a), 200);
        CHECK_STR(a.ctype, "application/x-ndjson");
        (*pages)++;
        int n = a.body ? parse_jsonl(a.body, ids) : -1;
        CHECK(n >= 0 && n <= 3);
        snprintf(after, sizeof(after), "%s", a.next);
        free(a.body);
        if (!after[0])
            break;
        CHECK_EQ_INT(strlen(after), 32);
    }
    return ids;
}

/* Filters, the JSON-lines export and its paging, against the whole list events. */
static void test_audit_filters(json_t *events)
{
    struct {
        const char *query;
        bool (*keep)(json_t *e);
        size_t at_least;
        bool none;
    } cases[] = {
        {"action=command.", is_command, 3, false}, {"action=device.", is_device, 1, false},
        {"target=NOPE-1", is_nope1, 1, false},     {"status=error", is_error, 3, false},
        {"", NULL, 10, false},
        {"action=command", NULL, 0, true}, /* exact: no such action */
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        json_t *want = cases[c].none ? json_array() : ids_where(events, cases[c].keep);
        CHECK(json_array_size(want) >= cases[c].at_least);
        json_t *got = page_json(cases[c].query);
        CHECK(json_equal(got, want));
        json_decref(got);
        int pages = 0;
        got = page_jsonl(cases[c].query, &pages);
        CHECK(json_equal(got, want));
        CHECK_EQ_INT(pages, json_array_size(want) / 3 + 1);
        json_decref(got);
        json_decref(want);
    }
    /* Filters together; who exact. */
    char path[256];
    json_t *j = NULL;
    snprintf(path, sizeof(path), "/api/v1/audit?limit=1000&action=command.enqueue&status=404&who=%s",
             jstr(json_array_get(events, 0), "who"));
    CHECK_EQ_INT(api("GET", path, api_key, NULL, NULL, &j), 200);
    size_t i;
    json_t *e;
    CHECK(json_array_size(json_object_get(j, "events")) >= 1);
    json_array_foreach(json_object_get(j, "events"), i, e) {
        CHECK_STR(jstr(e, "action"), "command.enqueue");
        CHECK_EQ_INT(json_integer_value(json_object_get(e, "status")), 404);
    }
    CHECK(json_is_null(json_object_get(j, "next_after")));
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/audit?who=admin-key:00000000", api_key, NULL, NULL, &j), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "events")), 0);
    json_decref(j);

    /* The whole export in one answer, asked for with Accept. */
    struct raw_answer a;
    CHECK_EQ_INT(raw_get("/api/v1/audit", "application/x-ndjson", &a), 200);
    CHECK_STR(a.ctype, "application/x-ndjson");
    CHECK_STR(a.next, "");
    json_t *ids = json_array();
    CHECK_EQ_INT(a.body ? parse_jsonl(a.body, ids) : -1, (int)json_array_size(events));
    json_t *all = ids_where(events, NULL);
    CHECK(json_equal(ids, all));
    json_decref(all);
    json_decref(ids);
    free(a.body);
    /* format=json wins over Accept. */
    CHECK_EQ_INT(raw_get("/api/v1/audit?format=json&limit=1", "application/x-ndjson", &a), 200);
    CHECK_STR(a.ctype, "application/json");
    free(a.body);

    /* Bad parameters. */
    const char *bad[] = {
        "/api/v1/audit?status=oops",         "/api/v1/audit?status=42",
        "/api/v1/audit?format=xml",          "/api/v1/audit?limit=1001",
        "/api/v1/audit?format=jsonl&limit=100001", "/api/v1/audit?format=jsonl&limit=0",
        "/api/v1/audit?after=zz",            "/api/v1/audit?after=0000000000000000000000000000000g",
        "/api/v1/audit?action=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "/api/v1/audit?target=%00",
    };
    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
        CHECK_EQ_INT(api("GET", bad[b], api_key, NULL, NULL, &j), 400);
        CHECK_STR(jstr(j, "error"), "invalid parameter");
        json_decref(j);
    }
    CHECK_EQ_INT(raw_get("/api/v1/audit?format=jsonl&limit=100000", NULL, &a), 200);
    free(a.body);
}

/* mdmd audit with filters: a table, and --jsonl printing the export as is. */
static void test_audit_cli(void)
{
    char out[65536];
    const char *table[] = {"audit", dir, "--action", "device.", "--status", "200", NULL};
    CHECK_EQ_INT(cli(table, out, sizeof(out)), 0);
    CHECK(contains(out, "device.delete"));
    CHECK(!contains(out, "command.enqueue"));
    const char *lines[] = {"audit", dir, "--target", "NOPE-1", "--status", "error", "--jsonl",
                           NULL};
    CHECK_EQ_INT(cli(lines, out, sizeof(out)), 0);
    json_t *ids = json_array();
    CHECK(parse_jsonl(out, ids) >= 1);
    json_decref(ids);
    CHECK(contains(out, "\"target\":\"NOPE-1\""));
    const char *bad[] = {"audit", dir, "--status", "nope", NULL};
    CHECK_EQ_INT(cli(bad, out, sizeof(out)), 1);
    CHECK(contains(out, "status"));
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
    test_audit_filters(json_object_get(j, "events"));
    json_decref(j);
    test_audit_cli();
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
