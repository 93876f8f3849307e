/*
 * Device policies end to end: a real mdmd (2 shards), policies of all 22 types created through
 * the admin API from the same realistic settings the catalog's unit test uses, delivery groups,
 * and simulated Macs (bench/sim) that install, list and remove profiles and answer commands as
 * macOS does. Checks per policy: created from JSON, its preview passes the independent schema
 * validator, the Mac acknowledges it and the deployment reads "installed"; then invalid
 * settings (422 naming the key), a failed install (Apple's error chain), a group membership
 * change (RemoveProfile, "removed"), an edited policy (version 2 replaces version 1), drift
 * repair after the user removed a profile, the application inventory query, and secrets
 * absent from the database files.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin_api.h"
#include "bench/sim.h"
#include "check.h"
#include "core/cms.h"
#include "core/file.h"
#include "core/https_client.h"
#include "harness.h"
#include "policy_cases.h"

#define VALIDATOR "/usr/bin/python3 " MDM_SOURCE_ROOT "/tests/schema/validate_profile.py"
#define DRAIN_MAX 400      /* commands one drain answers at most */
#define WAIT_MS 20000      /* bound of every wait for the engine */

static char dir[512];
static char api_key[128];
static server_proc_t srv;
static sim_env_t env;
static sim_mac_t mac_a, mac_b;
static char ids[64][32];     /* policy id per case */
static char old_profile_body[2048];

static int api(const char *method, const char *path, const char *body, json_t **out)
{
    return admin_api(srv.admin_port, dir, api_key, method, path, NULL, body, out);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The Mac polls and answers until the server has nothing more. Returns commands answered. */
static int drain(sim_mac_t *m)
{
    sim_cmd_t cmd, next;
    int answered = 0;
    if (sim_connect_idle(m, &cmd) != 200)
        return -1;
    while (cmd.uuid[0] && answered < DRAIN_MAX) {
        if (sim_answer(m, &cmd, &next) != 200)
            return -1;
        answered++;
        cmd = next;
    }
    return answered;
}

/* Drains until pred holds (the engine's jobs run asynchronously), bounded by WAIT_MS. */
static bool drain_until(sim_mac_t *m, bool (*pred)(void *arg), void *arg)
{
    for (int waited = 0; waited < WAIT_MS; waited += 100) {
        if (drain(m) < 0)
            return false;
        if (pred(arg))
            return true;
        sleep_ms(100);
    }
    return false;
}

/* The deployment of policy pid on the Mac (a new reference, or NULL). */
static json_t *deployment(const char *udid, const char *pid)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/policies", udid);
    json_t *j = NULL, *found = NULL;
    if (api("GET", path, NULL, &j) == 200) {
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(j, "deployments"), i, d) {
            if (strcmp(jstr(d, "policy_id"), pid) == 0)
                found = json_incref(d);
        }
    }
    json_decref(j);
    return found;
}

struct want {
    const char *udid, *pid, *status;
    long version; /* 0 = any */
};

static bool deployment_is(void *arg)
{
    struct want *w = arg;
    json_t *d = deployment(w->udid, w->pid);
    bool ok = d && strcmp(jstr(d, "status"), w->status) == 0 &&
              (!w->version || json_integer_value(json_object_get(d, "policy_version")) ==
                                  w->version);
    json_decref(d);
    return ok;
}

static bool all_installed(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < policy_cases_count; i++) {
        struct want w = {mac_a.udid, ids[i], "installed", 1};
        if (!deployment_is(&w))
            return false;
    }
    return true;
}

static const char *profile_identifier(const char *pid)
{
    static char buf[128];
    snprintf(buf, sizeof(buf), "mdmd.zdm.policy.%s", pid);
    return buf;
}

static void enroll(sim_mac_t *m, unsigned seq)
{
    CHECK_EQ_INT(sim_mac_init(m, &env, NULL, seq), 0);
    CHECK_EQ_INT(sim_authenticate(m, NULL), 200);
    CHECK_EQ_INT(sim_token_update(m, NULL, 0, NULL), 200);
}

/* Creates policy type/name/settings; returns the status and copies the id. */
static int create_policy(const char *type, const char *name, const char *settings, char *id)
{
    size_t len = strlen(settings) + 256;
    char *body = malloc(len);
    snprintf(body, len, "{\"type\":\"%s\",\"name\":\"%s\",\"settings\":%s}", type, name,
             settings);
    json_t *j = NULL;
    int st = api("POST", "/api/v1/policies", body, &j);
    if (st == 201 && id)
        snprintf(id, 32, "%s", jstr(j, "id"));
    else if (st != 201)
        fprintf(stderr, "create %s: %d %s: %s\n", type, st, jstr(j, "error"), jstr(j, "detail"));
    json_decref(j);
    free(body);
    return st;
}

static int create_group(const char *json, char *id)
{
    json_t *j = NULL;
    int st = api("POST", "/api/v1/groups", json, &j);
    if (st == 201 && id)
        snprintf(id, 32, "%s", jstr(j, "id"));
    json_decref(j);
    return st;
}

/* GET path as raw bytes into out. Returns the status. */
static int api_raw(const char *path, mdm_buf_t *out)
{
    char headers[256];
    snprintf(headers, sizeof(headers), "Authorization: Bearer %s\r\n", api_key);
    struct mdm_https_connect_opts o = {
        .host = "127.0.0.1", .port = srv.admin_port, .sni = "localhost",
        .ca_path = instance_ca(dir)};
    return mdm_https_request(&o, "GET", path, headers, NULL, NULL, 0, out, 60000);
}

/* The preview of a policy for a Mac passes the independent schema validator. */
static void check_preview(size_t i)
{
    const policy_case_t *pc = &policy_cases[i];
    char path[256], file[600];
    snprintf(path, sizeof(path), "/api/v1/policies/%s/profile?device=%s", ids[i], mac_a.udid);
    snprintf(file, sizeof(file), "%s/preview-%s.plist", dir, pc->type);
    mdm_buf_t body;
    mdm_buf_init(&body, 0);
    CHECK_EQ_INT(api_raw(path, &body), 200);
    CHECK_EQ_INT(mdm_file_write_atomic(file, mdm_buf_head(&body), body.len, 0600), 0);
    char *secret = pc->secret ? policy_case_text(pc->secret) : NULL;
    if (secret)
        CHECK(!memmem(mdm_buf_head(&body), body.len, secret, strlen(secret)));
    free(secret);
    mdm_buf_dispose(&body);
    bool is_profile = pc->expect[0] != '|';
    if (check_sh(VALIDATOR " %s %s >&2", is_profile ? "profile" : "commands", file) != 0) {
        fprintf(stderr, "%s: preview refused by the schema validator\n", pc->type);
        CHECK(!"schema");
    }
}

static void test_all_policies(void)
{
    /* The Mac has the profile that profile_removal removes and the app app_uninstall removes,
     * both installed over MDM, as on a managed Mac. */
    static const char old_profile[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict>"
        "<key>PayloadType</key><string>Configuration</string>"
        "<key>PayloadVersion</key><integer>1</integer>"
        "<key>PayloadIdentifier</key><string>com.example.old</string>"
        "<key>PayloadUUID</key><string>0A0B0C0D-1111-4222-8333-444455556666</string>"
        "<key>PayloadDisplayName</key><string>Old</string>"
        "<key>PayloadContent</key><array/></dict></plist>";
    mdm_buf_t b64;
    mdm_buf_init(&b64, 0);
    CHECK_EQ_INT(mdm_base64_encode(old_profile, strlen(old_profile), &b64), 0);
    snprintf(old_profile_body, sizeof(old_profile_body),
             "{\"request_type\":\"InstallProfile\",\"params\":{\"Payload\":\"%.*s\"}}",
             (int)b64.len, (const char *)mdm_buf_head(&b64));
    mdm_buf_dispose(&b64);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/commands", mac_a.udid);
    json_t *j = NULL;
    CHECK_EQ_INT(api("POST", path, old_profile_body, &j), 201);
    json_decref(j);
    CHECK(drain(&mac_a) >= 1);
    CHECK(sim_mac_find_profile(&mac_a, "com.example.old") != NULL);
    sim_app_t apps[8];
    size_t n_apps = sim_default_apps_count;
    memcpy(apps, sim_default_apps, n_apps * sizeof(apps[0]));
    apps[n_apps] = (sim_app_t){"com.example.app", "Example", "1.0", "100", 1000, true};
    CHECK_EQ_INT(sim_mac_set_apps(&mac_a, apps, n_apps + 1), 0);

    /* Every policy from its JSON, refused when invalid (422 naming the key). */
    for (size_t i = 0; i < policy_cases_count; i++) {
        const policy_case_t *pc = &policy_cases[i];
        char *valid = policy_case_text(pc->valid);
        char name[64];
        snprintf(name, sizeof(name), "%s policy", pc->type);
        CHECK_EQ_INT(create_policy(pc->type, name, valid, ids[i]), 201);
        free(valid);
        char *invalid = policy_case_text(pc->invalid);
        size_t len = strlen(invalid) + 128;
        char *body = malloc(len);
        snprintf(body, len, "{\"type\":\"%s\",\"name\":\"bad\",\"settings\":%s}", pc->type,
                 invalid);
        CHECK_EQ_INT(api("POST", "/api/v1/policies", body, &j), 422);
        if (!strstr(jstr(j, "detail"), pc->invalid_key)) {
            fprintf(stderr, "%s: '%s' does not name %s\n", pc->type, jstr(j, "detail"),
                    pc->invalid_key);
            CHECK(!"invalid key named");
        }
        json_decref(j);
        free(body);
        free(invalid);
    }
    /* One group with every policy, for Mac A. */
    char group[8192], gid[32];
    int n = snprintf(group, sizeof(group), "{\"name\":\"Everything\",\"devices\":[\"%s\"],"
                                           "\"policies\":[", mac_a.udid);
    for (size_t i = 0; i < policy_cases_count; i++)
        n += snprintf(group + n, sizeof(group) - (size_t)n, "%s\"%s\"", i ? "," : "", ids[i]);
    snprintf(group + n, sizeof(group) - (size_t)n, "]}");
    CHECK_EQ_INT(create_group(group, gid), 201);
    CHECK(drain_until(&mac_a, all_installed, NULL));
    for (size_t i = 0; i < policy_cases_count; i++) {
        const policy_case_t *pc = &policy_cases[i];
        struct want w = {mac_a.udid, ids[i], "installed", 1};
        if (!deployment_is(&w)) {
            json_t *d = deployment(mac_a.udid, ids[i]);
            fprintf(stderr, "%s: %s %s\n", pc->type, jstr(d, "status"), jstr(d, "error"));
            json_decref(d);
            CHECK(!"installed");
        }
        if (pc->expect[0] != '|')
            CHECK(sim_mac_find_profile(&mac_a, profile_identifier(ids[i])) != NULL);
        check_preview(i);
    }
    /* What the command policies did on the Mac. */
    CHECK(sim_mac_find_profile(&mac_a, "com.example.old") == NULL);   /* profile_removal */
    CHECK(sim_mac_find_app(&mac_a, "com.example.app") == NULL);       /* app_uninstall */
    CHECK(strncmp(mac_a.device_name, "Mac-", 4) == 0);                 /* device_name */
    /* The group lists the Mac's policies, the policy lists its Macs. */
    snprintf(path, sizeof(path), "/api/v1/policies/%s/deployments", ids[0]);
    CHECK_EQ_INT(api("GET", path, NULL, &j), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "deployments")), 1);
    CHECK_STR(jstr(json_array_get(json_object_get(j, "deployments"), 0), "udid"), mac_a.udid);
    json_decref(j);
}

static bool chrome_reported(void *arg)
{
    (void)arg;
    json_t *j = NULL;
    bool ok = api("GET", "/api/v1/apps?bundle_id=com.google.Chrome&version_below=999", NULL,
                  &j) == 200 &&
              json_array_size(json_object_get(j, "devices")) == 1;
    json_decref(j);
    return ok;
}

static void test_inventory(void)
{
    CHECK(drain_until(&mac_a, chrome_reported, NULL));
    json_t *j = NULL;
    CHECK_EQ_INT(api("GET", "/api/v1/apps?bundle_id=com.google.Chrome&version_below=999", NULL,
                     &j), 200);
    json_t *d = json_array_get(json_object_get(j, "devices"), 0);
    CHECK_STR(jstr(d, "udid"), mac_a.udid);
    CHECK(jstr(d, "short_version")[0] != '\0');
    json_decref(j);
    /* Chrome 131 is not below 100. */
    CHECK_EQ_INT(api("GET", "/api/v1/apps?bundle_id=com.google.Chrome&version_below=100", NULL,
                     &j), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "devices")), 0);
    json_decref(j);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/apps", mac_a.udid);
    CHECK_EQ_INT(api("GET", path, NULL, &j), 200);
    CHECK(json_array_size(json_object_get(j, "apps")) >= 3);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/apps", NULL, &j), 422);
    json_decref(j);
}

static void test_failed_install(void)
{
    char pid[32], gid[32], group[512];
    CHECK_EQ_INT(create_policy("firewall", "FW for B", "{\"EnableFirewall\":true}", pid), 201);
    mac_b.fail_install_identifier = profile_identifier(pid);
    snprintf(group, sizeof(group), "{\"name\":\"B\",\"devices\":[\"%s\"],\"policies\":[\"%s\"]}",
             mac_b.udid, pid);
    CHECK_EQ_INT(create_group(group, gid), 201);
    struct want w = {mac_b.udid, pid, "failed", 1};
    CHECK(drain_until(&mac_b, deployment_is, &w));
    json_t *d = deployment(mac_b.udid, pid);
    CHECK(strstr(jstr(d, "error"), "MCInstallationErrorDomain") != NULL);
    json_decref(d);
    mac_b.fail_install_identifier = NULL;
}

static void test_membership_and_edit(void)
{
    char pid[32], gid[32], group[512], path[256];
    CHECK_EQ_INT(create_policy("webclip", "Intranet",
                               "{\"URL\":\"https://intranet.example.com\",\"Label\":\"Intranet\"}",
                               pid), 201);
    snprintf(group, sizeof(group), "{\"name\":\"Clip\",\"devices\":[\"%s\",\"%s\"],"
                                   "\"policies\":[\"%s\"]}", mac_a.udid, mac_b.udid, pid);
    CHECK_EQ_INT(create_group(group, gid), 201);
    struct want wa = {mac_a.udid, pid, "installed", 1}, wb = {mac_b.udid, pid, "installed", 1};
    CHECK(drain_until(&mac_a, deployment_is, &wa));
    CHECK(drain_until(&mac_b, deployment_is, &wb));
    const sim_profile_t *p = sim_mac_find_profile(&mac_a, profile_identifier(pid));
    CHECK(p != NULL);
    char uuid_v1[64];
    snprintf(uuid_v1, sizeof(uuid_v1), "%s", p ? p->uuid : "");

    /* Edited: version 2 replaces version 1 (a new PayloadUUID, same identifier). */
    snprintf(path, sizeof(path), "/api/v1/policies/%s", pid);
    json_t *j = NULL;
    CHECK_EQ_INT(api("PUT", path, "{\"settings\":{\"URL\":\"https://intranet2.example.com\","
                                  "\"Label\":\"Intranet 2\"}}", &j), 200);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "version")), 2);
    json_decref(j);
    struct want wa2 = {mac_a.udid, pid, "installed", 2};
    CHECK(drain_until(&mac_a, deployment_is, &wa2));
    p = sim_mac_find_profile(&mac_a, profile_identifier(pid));
    CHECK(p && strcmp(p->uuid, uuid_v1) != 0);
    CHECK_EQ_INT(sim_mac_profile_count(&mac_a) > 0, 1);

    /* Mac B leaves the group: its profile is removed, Mac A keeps it. */
    snprintf(path, sizeof(path), "/api/v1/groups/%s", gid);
    snprintf(group, sizeof(group), "{\"name\":\"Clip\",\"devices\":[\"%s\"],"
                                   "\"policies\":[\"%s\"]}", mac_a.udid, pid);
    CHECK_EQ_INT(api("PUT", path, group, &j), 200);
    json_decref(j);
    struct want wr = {mac_b.udid, pid, "removed", 0};
    CHECK(drain_until(&mac_b, deployment_is, &wr));
    CHECK(sim_mac_find_profile(&mac_b, profile_identifier(pid)) == NULL);
    CHECK(drain(&mac_a) >= 0);
    CHECK(sim_mac_find_profile(&mac_a, profile_identifier(pid)) != NULL);

    /* Drift: the user removes the profile by hand; the sweep's ProfileList finds it missing
     * and mdmd installs it again. */
    CHECK_EQ_INT(sim_mac_remove_profile_locally(&mac_a, profile_identifier(pid)), 0);
    CHECK_EQ_INT(api("POST", "/api/v1/reconcile", "{\"profile_list\":true}", &j), 202);
    json_decref(j);
    bool back = false;
    for (int waited = 0; waited < WAIT_MS && !back; waited += 100) {
        CHECK(drain(&mac_a) >= 0);
        back = sim_mac_find_profile(&mac_a, profile_identifier(pid)) != NULL;
        if (!back)
            sleep_ms(100);
    }
    CHECK(back);

    /* Deleting the policy removes its profile from Mac A and the policy from the group. */
    snprintf(path, sizeof(path), "/api/v1/policies/%s", pid);
    CHECK_EQ_INT(api("DELETE", path, NULL, &j), 200);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "groups_changed")), 1);
    json_decref(j);
    struct want wd = {mac_a.udid, pid, "removed", 0};
    CHECK(drain_until(&mac_a, deployment_is, &wd));
    CHECK(sim_mac_find_profile(&mac_a, profile_identifier(pid)) == NULL);
    snprintf(path, sizeof(path), "/api/v1/groups/%s", gid);
    CHECK_EQ_INT(api("GET", path, NULL, &j), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "policies")), 0);
    json_decref(j);
}

/* A SCEP policy on the instance CA: each Mac gets its own one-time challenge; the certificate
 * SCEP issues with it is no MDM identity. */
static void test_scep_instance(void)
{
    char pid[32], gid[32], group[512];
    CHECK_EQ_INT(create_policy("scep", "Wi-Fi certificate",
                               "{\"ca\":\"instance\",\"Subject\":[[[\"CN\",\"wifi\"]]],"
                               "\"Keysize\":2048,\"Key Type\":\"RSA\",\"Key Usage\":5}",
                               pid), 201);
    snprintf(group, sizeof(group), "{\"name\":\"SCEP\",\"devices\":[\"%s\"],"
                                   "\"policies\":[\"%s\"]}", mac_b.udid, pid);
    CHECK_EQ_INT(create_group(group, gid), 201);
    struct want w = {mac_b.udid, pid, "installed", 1};
    CHECK(drain_until(&mac_b, deployment_is, &w));
    char challenge[128];
    snprintf(challenge, sizeof(challenge), "%s", sim_mac_scep_challenge(&mac_b));
    CHECK(strlen(challenge) == 48);
    /* The Mac's SCEP client (its own key files, apart from its MDM identity). */
    sim_mac_t client;
    CHECK_EQ_INT(sim_mac_init(&client, &env, mac_b.udid, 9), 0);
    sim_scep_t sc = {.type = MDM_SCEP_PKCS_REQ, .challenge = challenge};
    CHECK_EQ_INT(sim_scep(&client, &sc), 0);
    CHECK(sc.status == MDM_SCEP_SUCCESS);
    sim_scep_t again = {.type = MDM_SCEP_PKCS_REQ, .challenge = challenge};
    CHECK_EQ_INT(sim_scep(&client, &again), 0);
    CHECK(again.status == MDM_SCEP_FAILURE); /* one-time */
    /* That certificate does not pass for the Mac's MDM identity. */
    mdm_buf_t body;
    mdm_buf_init(&body, 0);
    CHECK_EQ_INT(sim_build_idle(&client, &body), 0);
    CHECK_EQ_INT(sim_connect(&client, &body, NULL), 403);
    mdm_buf_dispose(&body);
    sim_mac_dispose(&client);
    /* The preview shows no challenge. */
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/policies/%s/profile?device=%s", pid, mac_b.udid);
    mdm_buf_t xml;
    mdm_buf_init(&xml, 0);
    CHECK_EQ_INT(api_raw(path, &xml), 200);
    CHECK(!memmem(mdm_buf_head(&xml), xml.len, challenge, strlen(challenge)));
    mdm_buf_dispose(&xml);
}

static void test_api_errors(void)
{
    json_t *j = NULL;
    CHECK_EQ_INT(api("POST", "/api/v1/policies", "{\"type\":\"nope\",\"name\":\"x\","
                                                 "\"settings\":{}}", &j), 422);
    CHECK(strstr(jstr(j, "detail"), "type") != NULL);
    json_decref(j);
    CHECK_EQ_INT(api("POST", "/api/v1/policies", "{\"type\":\"firewall\",\"settings\":{}}", &j),
                 422);
    CHECK(strstr(jstr(j, "detail"), "name") != NULL);
    json_decref(j);
    CHECK_EQ_INT(api("POST", "/api/v1/policies", "not json", &j), 400);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/policies/0123456789abcdef", NULL, &j), 404);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/policies/not-an-id", NULL, &j), 404);
    json_decref(j);
    CHECK_EQ_INT(api("POST", "/api/v1/groups", "{\"name\":\"G\",\"policies\":"
                                               "[\"0123456789abcdef\"]}", &j), 422);
    CHECK(strstr(jstr(j, "detail"), "policies[0]") != NULL);
    json_decref(j);
    CHECK_EQ_INT(api("POST", "/api/v1/groups", "{\"name\":\"G\",\"all_devices\":\"yes\"}", &j),
                 422);
    json_decref(j);
    CHECK_EQ_INT(api("DELETE", "/api/v1/policy-types", NULL, &j), 405);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/policy-types", NULL, &j), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "policy_types")), 22);
    json_decref(j);
}

/* Secret settings: never answered by the API, never in clear in the database files. */
static void test_secrets(void)
{
    json_t *j = NULL;
    char path[256];
    for (size_t i = 0; i < policy_cases_count; i++) {
        const policy_case_t *pc = &policy_cases[i];
        if (!pc->secret)
            continue;
        snprintf(path, sizeof(path), "/api/v1/policies/%.31s", ids[i]);
        CHECK_EQ_INT(api("GET", path, NULL, &j), 200);
        char *text = json_dumps(j, 0);
        char *secret = policy_case_text(pc->secret);
        CHECK(text && secret && !strstr(text, secret));
        free(secret);
        CHECK(json_array_size(json_object_get(j, "sealed_settings")) >= 1);
        free(text);
        json_decref(j);
    }
    CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);
    for (size_t i = 0; i < policy_cases_count; i++) {
        char *secret = policy_cases[i].secret ? policy_case_text(policy_cases[i].secret) : NULL;
        char file[1200];
        if (secret && harness_db_holds(dir, secret, strlen(secret), file, sizeof(file))) {
            fprintf(stderr, "secret of %s in clear in %s\n", policy_cases[i].type, file);
            CHECK(!"secret at rest");
        }
        free(secret);
    }
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("policy"));
    policy_cases_setup(dir);
    const char *args[] = {"init", dir, "--hostnames", "localhost,127.0.0.1", NULL};
    char out[8192];
    if (harness_run(dir, args, 60000, out, sizeof(out)) != 0 ||
        admin_key_from_init(out, api_key, sizeof(api_key)) != 0) {
        fprintf(stderr, "mdmd init failed:\n%s\n", out);
        return 99;
    }
    const char *extra[] = {"--shards", "2", NULL};
    if (harness_start(&srv, dir, extra) != 0)
        return 99;
    char work[600];
    snprintf(work, sizeof(work), "%s/macs", dir);
    CHECK_EQ_INT(sim_env_init(&env, dir, work, srv.device_port), 0);
    enroll(&mac_a, 1);
    enroll(&mac_b, 2);
    test_api_errors();
    test_all_policies();
    test_inventory();
    test_failed_install();
    test_membership_and_edit();
    test_scep_instance();
    test_secrets();
    sim_mac_dispose(&mac_a);
    sim_mac_dispose(&mac_b);
    return check_finish("integ-policy");
}
