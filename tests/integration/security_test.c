/*
 * Security actions end to end with a real mdmd and simulated Macs: Lock (generated and admin
 * PINs, weak and malformed PINs refused, the Mac's passcode policy, Cancel Lock before and
 * after delivery, the PIN view), Full Wipe (confirmation, re-enrollment), Revoke (the MDM
 * profile removed, CheckOut, the identity refused afterwards, SCEP renewal refused),
 * FileVault escrow and key rotation (real CMS EnvelopedData to the escrow certificate),
 * Selective Wipe and restore, bootstrap token rules, the audit trail, and no secret in clear
 * in the database files.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin_api.h"
#include "bench/sim.h"
#include "check.h"
#include "core/file.h"
#include "core/x509.h"
#include "harness.h"

#define WAIT_MS 20000

static char dir[512];
static char api_key[128];
static server_proc_t srv;
static sim_env_t env;
static sim_mac_t mac_a, mac_b, mac_c, mac_d;
static char secrets[16][64]; /* values that must never be in the database files in clear */
static size_t n_secrets;

static int api(const char *method, const char *path, const char *body, json_t **out)
{
    return admin_api(srv.admin_port, dir, api_key, method, path, NULL, body, out);
}

static int action(const sim_mac_t *m, const char *name, const char *body, json_t **out)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/actions/%s", m->udid, name);
    return api("POST", path, body ? body : "{}", out);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void remember_secret(const char *s)
{
    if (s && s[0] && n_secrets < 16)
        snprintf(secrets[n_secrets++], sizeof(secrets[0]), "%s", s);
}

/* Polls and answers until the server has nothing more or the Mac stops talking MDM. */
static int drain(sim_mac_t *m)
{
    sim_cmd_t cmd, next;
    int n = 0;
    if (sim_connect_idle(m, &cmd) != 200)
        return -1;
    while (cmd.uuid[0] && n < 200) {
        int st = sim_answer(m, &cmd, &next);
        n++;
        if (st != 200)
            break; /* locked, erased or unenrolled by that command */
        cmd = next;
    }
    return n;
}

static json_t *device(const sim_mac_t *m)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s", m->udid);
    json_t *j = NULL;
    if (api("GET", path, NULL, &j) != 200) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static bool device_flag(const sim_mac_t *m, const char *key)
{
    json_t *j = device(m);
    bool v = json_is_true(json_object_get(j, key));
    json_decref(j);
    return v;
}

/* Gives m an RSA-2048 identity from the instance CA, as SCEP issues them (a SCEP renewal is
 * signed with the identity's key, and SCEP signs with RSA only). */
static void rsa_identity(sim_mac_t *m)
{
    char key[700], crt[700];
    snprintf(key, sizeof(key), "%s/%s.key", env.work_dir, m->name);
    snprintf(crt, sizeof(crt), "%s/%s.crt", env.work_dir, m->name);
    mdm_x509_spec_t spec = {
        .common_name = m->name,
        .organization = "mdmd simulated Macs",
        .validity_days = 365,
        .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE | MDM_X509_KU_KEY_ENCIPHERMENT,
        .ext_key_usage = MDM_X509_EKU_CLIENT_AUTH,
    };
    CHECK_EQ_INT(mdm_x509_key_generate(key, MDM_X509_KEY_RSA_2048), 0);
    CHECK_EQ_INT(mdm_x509_issue(env.ca_key, env.ca_cert, key, crt, &spec), 0);
    sim_mac_disconnect(m);
}

static void enroll(sim_mac_t *m, unsigned seq)
{
    CHECK_EQ_INT(sim_mac_init(m, &env, NULL, seq), 0);
    if (seq == 3)
        rsa_identity(m); /* mac_c: its SCEP renewal is tried after the revocation */
    CHECK_EQ_INT(sim_authenticate(m, NULL), 200);
    CHECK_EQ_INT(sim_token_update(m, NULL, 0, NULL), 200);
}

static bool policy_installed(sim_mac_t *m, const char *pid)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/policies", m->udid);
    for (int waited = 0; waited < WAIT_MS; waited += 100) {
        if (drain(m) < 0)
            return false;
        json_t *j = NULL;
        bool ok = false;
        if (api("GET", path, NULL, &j) == 200) {
            size_t i;
            json_t *d;
            json_array_foreach(json_object_get(j, "deployments"), i, d) {
                ok = ok || (strcmp(jstr(d, "policy_id"), pid) == 0 &&
                            strcmp(jstr(d, "status"), "installed") == 0);
            }
        }
        json_decref(j);
        if (ok)
            return true;
        sleep_ms(100);
    }
    return false;
}

/* Creates a policy and a group delivering it to m; returns the policy id in pid. */
static void deliver(sim_mac_t *m, const char *type, const char *settings, char *pid)
{
    char body[1024];
    snprintf(body, sizeof(body), "{\"type\":\"%s\",\"name\":\"%s\",\"settings\":%s}", type, type,
             settings);
    json_t *j = NULL;
    CHECK_EQ_INT(api("POST", "/api/v1/policies", body, &j), 201);
    snprintf(pid, 32, "%s", jstr(j, "id"));
    json_decref(j);
    snprintf(body, sizeof(body), "{\"name\":\"%s for %s\",\"devices\":[\"%s\"],\"policies\":[\"%s\"]}",
             type, m->udid, m->udid, pid);
    CHECK_EQ_INT(api("POST", "/api/v1/groups", body, &j), 201);
    json_decref(j);
    CHECK(policy_installed(m, pid));
}

static void test_lock(void)
{
    json_t *j = NULL;
    char pid[32];
    /* Malformed PINs: macOS takes exactly six digits. */
    CHECK_EQ_INT(action(&mac_a, "lock", "{\"pin\":\"12345\"}", &j), 422);
    CHECK(strstr(jstr(j, "detail"), "pin") != NULL);
    json_decref(j);
    CHECK_EQ_INT(action(&mac_a, "lock", "{\"pin\":\"12a456\"}", &j), 422);
    json_decref(j);
    CHECK_EQ_INT(action(&mac_a, "lock", "{\"pin\":123456}", &j), 422);
    json_decref(j);
    CHECK_EQ_INT(action(&mac_a, "lock", "{\"pin\":\"482916\",\"color\":1}", &j), 422);
    json_decref(j);
    /* The Mac's passcode policy forbids simple values: 111111 and 123456 are refused. */
    deliver(&mac_a, "passcode", "{\"allowSimple\":false,\"minLength\":8}", pid);
    CHECK_EQ_INT(action(&mac_a, "lock", "{\"pin\":\"111111\"}", &j), 422);
    CHECK(strstr(jstr(j, "detail"), "passcode policy") != NULL);
    json_decref(j);
    CHECK_EQ_INT(action(&mac_a, "lock", "{\"pin\":\"123456\"}", &j), 422);
    json_decref(j);

    /* A generated PIN; a second lock while one is pending is refused. */
    CHECK_EQ_INT(action(&mac_a, "lock", "{\"message\":\"Lost. Call IT\",\"phone_number\":"
                                        "\"+1 555 0100\"}", &j), 202);
    const char *pin = jstr(j, "pin");
    CHECK(strlen(pin) == 6 && json_is_true(json_object_get(j, "pin_generated")));
    remember_secret(pin);
    json_decref(j);
    CHECK_EQ_INT(action(&mac_a, "lock", NULL, &j), 409);
    json_decref(j);
    /* Cancel before delivery: the Mac never gets it. */
    CHECK_EQ_INT(action(&mac_a, "cancel-lock", NULL, &j), 200);
    CHECK_STR(jstr(j, "status"), "cancelled");
    json_decref(j);
    CHECK(drain(&mac_a) >= 0);
    CHECK(!mac_a.locked);

    /* An admin PIN, delivered: the Mac locks; Cancel Lock then tells the unlocking PIN. */
    CHECK_EQ_INT(action(&mac_a, "lock", "{\"pin\":\"482916\"}", &j), 202);
    CHECK(!json_is_true(json_object_get(j, "pin_generated")));
    json_decref(j);
    remember_secret("482916");
    CHECK(drain(&mac_a) >= 1);
    CHECK(mac_a.locked);
    CHECK_STR(mac_a.lock_pin, "482916");
    CHECK_EQ_INT(action(&mac_a, "cancel-lock", NULL, &j), 409);
    CHECK_STR(jstr(j, "pin"), "482916");
    CHECK_STR(jstr(j, "status"), "acknowledged");
    json_decref(j);
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/lock-pin", mac_a.udid);
    CHECK_EQ_INT(api("GET", path, NULL, &j), 200);
    CHECK_STR(jstr(json_object_get(j, "lock"), "pin"), "482916");
    json_decref(j);
    CHECK_EQ_INT(sim_mac_unlock(&mac_a, "000000"), -EACCES);
    CHECK_EQ_INT(sim_mac_unlock(&mac_a, "482916"), 0);
    /* The action list shows both locks and how they went. */
    snprintf(path, sizeof(path), "/api/v1/devices/%s/actions", mac_a.udid);
    CHECK_EQ_INT(api("GET", path, NULL, &j), 200);
    json_t *acts = json_object_get(j, "actions");
    int cancelled = 0, acked = 0;
    size_t i;
    json_t *a;
    json_array_foreach(acts, i, a) {
        CHECK_STR(jstr(a, "action"), "lock");
        cancelled += strcmp(jstr(a, "status"), "cancelled") == 0;
        acked += strcmp(jstr(a, "status"), "acknowledged") == 0;
    }
    CHECK_EQ_INT(cancelled, 1);
    CHECK_EQ_INT(acked, 1);
    json_decref(j);
    /* Unknown device and action. */
    CHECK_EQ_INT(api("POST", "/api/v1/devices/NOPE-1/actions/lock", "{}", &j), 404);
    json_decref(j);
    CHECK_EQ_INT(action(&mac_a, "frobnicate", NULL, &j), 404);
    json_decref(j);
}

static void test_selective_wipe(void)
{
    json_t *j = NULL;
    CHECK(sim_mac_profile_count(&mac_a) >= 1); /* the passcode policy */
    CHECK_EQ_INT(action(&mac_a, "selective-wipe", NULL, &j), 200);
    CHECK(json_is_true(json_object_get(j, "policies_suspended")));
    json_decref(j);
    bool gone = false;
    for (int waited = 0; waited < WAIT_MS && !gone; waited += 100) {
        CHECK(drain(&mac_a) >= 0);
        gone = sim_mac_profile_count(&mac_a) == 0;
        if (!gone)
            sleep_ms(100);
    }
    CHECK(gone);
    CHECK(device_flag(&mac_a, "policies_suspended"));
    CHECK(device_flag(&mac_a, "enrolled")); /* it stays enrolled */
    CHECK_EQ_INT(action(&mac_a, "restore-policies", NULL, &j), 200);
    json_decref(j);
    bool back = false;
    for (int waited = 0; waited < WAIT_MS && !back; waited += 100) {
        CHECK(drain(&mac_a) >= 0);
        back = sim_mac_profile_count(&mac_a) == 1;
        if (!back)
            sleep_ms(100);
    }
    CHECK(back);
}

static void test_erase(void)
{
    json_t *j = NULL;
    CHECK_EQ_INT(action(&mac_b, "erase", "{\"pin\":\"135792\"}", &j), 422);
    CHECK_STR(jstr(j, "error"), "confirmation required");
    json_decref(j);
    CHECK_EQ_INT(action(&mac_b, "erase", "{\"confirm\":\"someone-else\"}", &j), 422);
    json_decref(j);
    char body[256];
    snprintf(body, sizeof(body), "{\"confirm\":\"%s\",\"pin\":\"135792\",\"obliteration_behavior\":"
                                 "\"Sometimes\"}", mac_b.udid);
    CHECK_EQ_INT(action(&mac_b, "erase", body, &j), 422);
    json_decref(j);
    snprintf(body, sizeof(body), "{\"confirm\":\"%s\",\"pin\":\"135792\",\"obliteration_behavior\":"
                                 "\"DoNotObliterate\"}", mac_b.udid);
    CHECK_EQ_INT(action(&mac_b, "erase", body, &j), 202);
    CHECK_STR(jstr(j, "request_type"), "EraseDevice");
    json_decref(j);
    remember_secret("135792");
    CHECK(drain(&mac_b) >= 1);
    CHECK(mac_b.erased);
    CHECK(!mac_b.erase_pin[0] || strcmp(mac_b.erase_pin, "135792") == 0);
    /* The erased Mac enrolls again as itself. */
    CHECK_EQ_INT(sim_mac_new_identity(&mac_b), 0);
    CHECK_EQ_INT(sim_authenticate(&mac_b, NULL), 200);
    CHECK_EQ_INT(sim_token_update(&mac_b, NULL, 0, NULL), 200);
    CHECK(device_flag(&mac_b, "enrolled"));
}

static void test_revoke(void)
{
    json_t *j = NULL;
    CHECK_EQ_INT(action(&mac_c, "revoke", NULL, &j), 202);
    CHECK_STR(jstr(j, "request_type"), "RemoveProfile");
    json_decref(j);
    CHECK_EQ_INT(action(&mac_c, "revoke", NULL, &j), 409); /* already being revoked */
    json_decref(j);
    CHECK_EQ_INT(action(&mac_c, "lock", NULL, &j), 409);
    json_decref(j);
    CHECK(drain(&mac_c) >= 1);
    CHECK(mac_c.unenrolled);
    CHECK_EQ_INT(mac_c.checkout_status, 200);
    j = device(&mac_c);
    CHECK_STR(jstr(j, "state"), "revoked");
    CHECK(json_integer_value(json_object_get(j, "revoked_ms")) > 0);
    json_decref(j);
    /* Its identity is refused from now on: a new Authenticate with it, any check-in. */
    CHECK_EQ_INT(sim_authenticate(&mac_c, NULL), 403);
    mdm_buf_t body;
    mdm_buf_init(&body, 0);
    CHECK_EQ_INT(sim_build_idle(&mac_c, &body), 0);
    CHECK_EQ_INT(sim_connect(&mac_c, &body, NULL), 403);
    mdm_buf_dispose(&body);
    /* And SCEP does not renew it. */
    sim_scep_t s = {.type = MDM_SCEP_RENEWAL_REQ};
    CHECK_EQ_INT(sim_scep(&mac_c, &s), 0);
    CHECK_EQ_INT(s.http_status, 200);
    CHECK(s.status == MDM_SCEP_FAILURE);
}

static bool escrowed(void *unused)
{
    (void)unused;
    return device_flag(&mac_d, "filevault_key_escrowed");
}

static const char *escrowed_key(json_t **holder)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/filevault-key", mac_d.udid);
    json_decref(*holder);
    *holder = NULL;
    if (api("GET", path, NULL, holder) != 200)
        return "";
    return jstr(json_object_get(*holder, "current"), "key");
}

static void test_filevault(void)
{
    json_t *j = NULL;
    char pid[32], path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/filevault-key", mac_d.udid);
    CHECK_EQ_INT(api("GET", path, NULL, &j), 404);
    json_decref(j);
    CHECK_EQ_INT(action(&mac_d, "rotate-filevault-key", NULL, &j), 409); /* no key yet */
    json_decref(j);
    deliver(&mac_d, "filevault", "{\"Enable\":\"On\",\"Defer\":true}", pid);
    CHECK(sim_mac_filevault_prk(&mac_d)[0] != '\0');
    char first[64];
    snprintf(first, sizeof(first), "%s", sim_mac_filevault_prk(&mac_d));
    remember_secret(first);
    /* The sweep asks for SecurityInfo; the key arrives encrypted to the escrow certificate. */
    CHECK_EQ_INT(api("POST", "/api/v1/reconcile", "{\"profile_list\":true}", &j), 202);
    json_decref(j);
    bool ok = false;
    for (int waited = 0; waited < WAIT_MS && !ok; waited += 100) {
        CHECK(drain(&mac_d) >= 0);
        ok = escrowed(NULL);
        if (!ok)
            sleep_ms(100);
    }
    CHECK(ok);
    json_t *holder = NULL;
    CHECK_STR(escrowed_key(&holder), first);
    CHECK_STR(jstr(json_object_get(holder, "current"), "source"), "SecurityInfo");

    /* Rotation: the Mac gets the current key to unlock, answers with the new one. */
    CHECK_EQ_INT(action(&mac_d, "rotate-filevault-key", NULL, &j), 202);
    CHECK_STR(jstr(j, "request_type"), "RotateFileVaultKey");
    json_decref(j);
    CHECK_EQ_INT(action(&mac_d, "rotate-filevault-key", NULL, &j), 409); /* pending */
    json_decref(j);
    bool rotated = false;
    for (int waited = 0; waited < WAIT_MS && !rotated; waited += 100) {
        CHECK(drain(&mac_d) >= 0);
        rotated = strcmp(escrowed_key(&holder), first) != 0 &&
                  strcmp(escrowed_key(&holder), sim_mac_filevault_prk(&mac_d)) == 0;
        if (!rotated)
            sleep_ms(100);
    }
    CHECK(rotated);
    remember_secret(sim_mac_filevault_prk(&mac_d));
    CHECK_STR(jstr(json_object_get(holder, "current"), "source"), "RotateFileVaultKey");
    CHECK_STR(jstr(json_array_get(json_object_get(holder, "history"), 0), "key"), first);
    json_decref(holder);
}

/* Certificate renewal: a new identity through the renewal profile's SCEP challenge, bound to
 * the same Mac; the old certificate stops working once the new one is in use. */
static void test_renewal(void)
{
    json_t *j = NULL;
    char old_key[700], old_crt[700], keep_key[700], keep_crt[700];
    snprintf(old_key, sizeof(old_key), "%s/%s.key", env.work_dir, mac_b.name);
    snprintf(old_crt, sizeof(old_crt), "%s/%s.crt", env.work_dir, mac_b.name);
    snprintf(keep_key, sizeof(keep_key), "%s/old-%.50s.key", env.work_dir, mac_b.name);
    snprintf(keep_crt, sizeof(keep_crt), "%s/old-%.50s.crt", env.work_dir, mac_b.name);
    CHECK(check_sh("cp '%s' '%s' && cp '%s' '%s'", old_key, keep_key, old_crt, keep_crt) == 0);
    json_t *before = device(&mac_b);
    char old_sha[80];
    snprintf(old_sha, sizeof(old_sha), "%s", jstr(before, "identity_sha256"));
    json_decref(before);

    CHECK_EQ_INT(action(&mac_b, "renew-certificate", NULL, &j), 202);
    char enrollment[40];
    snprintf(enrollment, sizeof(enrollment), "%s", jstr(j, "enrollment_id"));
    CHECK(strlen(enrollment) == 32);
    json_decref(j);
    CHECK_EQ_INT(action(&mac_b, "renew-certificate", NULL, &j), 409); /* pending */
    json_decref(j);
    CHECK(drain(&mac_b) >= 1);
    const char *challenge = sim_mac_scep_challenge(&mac_b);
    CHECK(challenge[0] != '\0');
    sim_scep_t sc = {.type = MDM_SCEP_PKCS_REQ, .challenge = challenge};
    CHECK_EQ_INT(sim_scep(&mac_b, &sc), 0);
    CHECK(sc.status == MDM_SCEP_SUCCESS);
    /* The next request with the new certificate moves the Mac to it. */
    CHECK(drain(&mac_b) >= 0);
    json_t *after = device(&mac_b);
    CHECK(strcmp(jstr(after, "identity_sha256"), old_sha) != 0);
    CHECK_STR(jstr(after, "enrollment_id"), enrollment);
    CHECK(json_is_true(json_object_get(after, "enrolled")));
    json_decref(after);
    /* The old certificate is refused now. */
    sim_mac_t old = mac_b;
    old.state = NULL;
    old.fd = -1;
    old.ctx = NULL;
    old.tls = NULL;
    mdm_buf_init(&old.plain_in, 0);
    snprintf(old.name, sizeof(old.name), "old-%.50s", mac_b.name);
    mdm_buf_t body;
    mdm_buf_init(&body, 0);
    CHECK_EQ_INT(sim_build_idle(&old, &body), 0);
    CHECK_EQ_INT(sim_connect(&old, &body, NULL), 403);
    mdm_buf_dispose(&body);
    sim_mac_disconnect(&old);
}

static void test_bootstrap(void)
{
    static const uint8_t token[] = "bootstrap-token-of-mac-a-0123456789";
    json_t *j = NULL;
    /* Not an ADE Mac: nothing is escrowed. */
    CHECK_EQ_INT(sim_set_bootstrap_token(&mac_a, token, sizeof(token) - 1, NULL), 403);
    CHECK_EQ_INT(action(&mac_a, "set-ade", "{\"ade\":\"yes\"}", &j), 422);
    json_decref(j);
    CHECK_EQ_INT(action(&mac_a, "set-ade", "{\"ade\":true}", &j), 200);
    json_decref(j);
    CHECK_EQ_INT(sim_set_bootstrap_token(&mac_a, token, sizeof(token) - 1, NULL), 200);
    remember_secret((const char *)token);
    mdm_buf_t got;
    mdm_buf_init(&got, 0);
    CHECK_EQ_INT(sim_get_bootstrap_token(&mac_a, &got), 200);
    CHECK(got.len == sizeof(token) - 1 && memcmp(mdm_buf_head(&got), token, got.len) == 0);
    CHECK(device_flag(&mac_a, "bootstrap_token_escrowed"));
    /* Re-enrolling the same Mac keeps it. */
    CHECK_EQ_INT(sim_authenticate(&mac_a, NULL), 200);
    CHECK_EQ_INT(sim_token_update(&mac_a, NULL, 0, NULL), 200);
    mdm_buf_reset(&got);
    CHECK_EQ_INT(sim_get_bootstrap_token(&mac_a, &got), 200);
    CHECK(got.len == sizeof(token) - 1);
    /* Deleting the device deletes it. */
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s", mac_a.udid);
    CHECK_EQ_INT(api("DELETE", path, NULL, &j), 200);
    json_decref(j);
    CHECK_EQ_INT(sim_authenticate(&mac_a, NULL), 200);
    CHECK_EQ_INT(sim_token_update(&mac_a, NULL, 0, NULL), 200);
    CHECK(!device_flag(&mac_a, "bootstrap_token_escrowed"));
    mdm_buf_reset(&got);
    CHECK_EQ_INT(sim_get_bootstrap_token(&mac_a, &got), 200);
    CHECK_EQ_INT(got.len, 0);
    mdm_buf_dispose(&got);
}

static void test_audit(void)
{
    json_t *j = NULL;
    CHECK_EQ_INT(api("GET", "/api/v1/audit?limit=1000", NULL, &j), 200);
    static const char *const want[] = {"device.lock", "device.cancel_lock", "device.pin_view",
                                       "device.erase", "device.revoke", "device.selective_wipe",
                                       "device.rotate_filevault_key",
                                       "device.filevault_key_reveal", "device.set_ade",
                                       "device.renew_certificate"};
    char *text = json_dumps(j, 0);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        char needle[80];
        snprintf(needle, sizeof(needle), "\"%s\"", want[i]);
        if (!text || !strstr(text, needle)) {
            fprintf(stderr, "no audit event %s\n", want[i]);
            CHECK(!"audit event");
        }
    }
    /* Audit events name the actions, never the PINs or keys. */
    for (size_t i = 0; text && i < n_secrets; i++)
        CHECK(!strstr(text, secrets[i]) || !"secret in the audit log");
    free(text);
    json_decref(j);
}

static void test_secrets_at_rest(void)
{
    CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);
    for (size_t i = 0; i < n_secrets; i++) {
        char file[1200];
        if (harness_db_holds(dir, secrets[i], strlen(secrets[i]), file, sizeof(file))) {
            fprintf(stderr, "secret %zu in clear in %s\n", i, file);
            CHECK(!"secret at rest");
        }
    }
    CHECK(n_secrets >= 6);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("security"));
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
    enroll(&mac_c, 3);
    enroll(&mac_d, 4);
    test_lock();
    test_selective_wipe();
    test_erase();
    test_revoke();
    test_renewal();
    test_filevault();
    test_bootstrap();
    test_audit();
    test_secrets_at_rest();
    sim_mac_dispose(&mac_a);
    sim_mac_dispose(&mac_b);
    sim_mac_dispose(&mac_c);
    sim_mac_dispose(&mac_d);
    return check_finish("integ-security");
}
