/*
 * The simulated Mac's device state (bench/sim_profiles.c), driven without a server: command
 * plists go through sim_handle_command, and the responses are read back as plists.
 * - InstallProfile: plain XML and CMS-signed profiles install; the same identifier replaces;
 *   a broken signature, a signer outside the instance CA, garbage, a wrong PayloadType, a
 *   missing key answer Error with a MCProfileErrorDomain ErrorChain; no Payload is a
 *   CommandFormatError; fail_install_identifier gives a two-entry chain;
 * - RemoveProfile and removal by hand (drift); ProfileList with and without ManagedOnly;
 * - InstalledApplicationList (all, Identifiers, ManagedAppsOnly), RemoveApplication of a
 *   managed, an unmanaged and a missing app, sim_mac_set_apps;
 * - Settings DeviceName (reported by DeviceInformation afterwards) and an unsupported item;
 * - software updates: scan, available, schedule, status;
 * - NotNow wins, sim_build_response does not act, a command whose body is gone.
 * Certificates: an instance CA with a profile signer, and a rogue CA with its own signer.
 */
#include <errno.h>
#include <plist/plist.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench/sim.h"
#include "check.h"
#include "core/cms.h"
#include "core/x509.h"

static const char *dir;
static sim_env_t env;
static sim_mac_t mac;
static unsigned seq; /* CommandUUIDs */

/* <name>.key and <name>.crt in dir, self-signed CA (ca NULL) or issued by ca. Exits on error. */
static void make_cert(const char *name, const char *ca, bool is_ca)
{
    char key[128], crt[128], ca_key[128], ca_crt[128];
    snprintf(key, sizeof(key), "%s.key", name);
    snprintf(crt, sizeof(crt), "%s.crt", name);
    mdm_x509_spec_t spec = {
        .common_name = name,
        .organization = "mdmd test",
        .validity_days = 30,
        .is_ca = is_ca,
        .key_usage = is_ca ? MDM_X509_KU_KEY_CERT_SIGN | MDM_X509_KU_CRL_SIGN
                           : MDM_X509_KU_DIGITAL_SIGNATURE,
    };
    int ret = mdm_x509_key_generate(check_path(dir, key), MDM_X509_KEY_EC_P256);
    if (ret == 0 && !ca) {
        ret = mdm_x509_make_self_signed(check_path(dir, key), check_path(dir, crt), &spec);
    } else if (ret == 0) {
        snprintf(ca_key, sizeof(ca_key), "%s.key", ca);
        snprintf(ca_crt, sizeof(ca_crt), "%s.crt", ca);
        ret = mdm_x509_issue(check_path(dir, ca_key), check_path(dir, ca_crt),
                             check_path(dir, key), check_path(dir, crt), &spec);
    }
    if (ret != 0) {
        fprintf(stderr, "cannot make %s: %d\n", name, ret);
        exit(99);
    }
}

/* ---- plists ---- */

static void to_xml(plist_t p, mdm_buf_t *out)
{
    char *xml = NULL;
    uint32_t len = 0;
    plist_to_xml(p, &xml, &len);
    if (!xml || mdm_buf_append(out, xml, len) != 0)
        exit(99);
    free(xml);
}

static plist_t payload(const char *type, const char *id, const char *uuid)
{
    plist_t d = plist_new_dict();
    plist_dict_set_item(d, "PayloadType", plist_new_string(type));
    plist_dict_set_item(d, "PayloadIdentifier", plist_new_string(id));
    plist_dict_set_item(d, "PayloadUUID", plist_new_string(uuid));
    plist_dict_set_item(d, "PayloadVersion", plist_new_uint(1));
    plist_dict_set_item(d, "PayloadDisplayName", plist_new_string("Restrictions"));
    return d;
}

/* A configuration profile with n payloads (XML into out); type NULL = "Configuration". */
static void profile(const char *type, const char *id, const char *uuid, int n, mdm_buf_t *out)
{
    plist_t top = plist_new_dict();
    plist_dict_set_item(top, "PayloadType", plist_new_string(type ? type : "Configuration"));
    if (id)
        plist_dict_set_item(top, "PayloadIdentifier", plist_new_string(id));
    plist_dict_set_item(top, "PayloadUUID", plist_new_string(uuid));
    plist_dict_set_item(top, "PayloadVersion", plist_new_uint(1));
    plist_dict_set_item(top, "PayloadDisplayName", plist_new_string("Policy"));
    plist_t content = plist_new_array();
    for (int i = 0; i < n; i++) {
        char pid[300], puuid[64];
        snprintf(pid, sizeof(pid), "%s.p%d", id ? id : "x", i);
        snprintf(puuid, sizeof(puuid), "%s-%d", uuid, i);
        plist_array_append_item(content, payload("com.apple.applicationaccess", pid, puuid));
    }
    plist_dict_set_item(top, "PayloadContent", content);
    to_xml(top, out);
    plist_free(top);
}

/* Signs xml with <signer>.key/.crt (encapsulated) into out. */
static void sign(const char *signer, const mdm_buf_t *xml, mdm_buf_t *out)
{
    char key[128], crt[128];
    snprintf(key, sizeof(key), "%s.key", signer);
    snprintf(crt, sizeof(crt), "%s.crt", signer);
    if (mdm_cms_sign(check_path(dir, key), check_path(dir, crt), NULL, mdm_buf_head(xml),
                     xml->len, MDM_CMS_ENCAPSULATED, out) != 0)
        exit(99);
}

/* Runs one command (its Command dict, taken) through the Mac; returns the response plist. */
static plist_t run(const char *type, plist_t command, sim_cmd_t *cmd)
{
    if (!command)
        command = plist_new_dict();
    plist_dict_set_item(command, "RequestType", plist_new_string(type));
    char uuid[64];
    snprintf(uuid, sizeof(uuid), "0000%04u-AAAA-4BBB-8CCC-DDDDDDDDDDDD", ++seq);
    plist_t root = plist_new_dict();
    plist_dict_set_item(root, "CommandUUID", plist_new_string(uuid));
    plist_dict_set_item(root, "Command", command);
    mdm_buf_t body, out;
    mdm_buf_init(&body, 0);
    mdm_buf_init(&out, 0);
    to_xml(root, &body);
    plist_free(root);
    sim_cmd_t local;
    cmd = cmd ? cmd : &local;
    CHECK_EQ_INT(sim_handle_command(&mac, mdm_buf_head(&body), body.len, cmd, &out), 0);
    CHECK_STR(cmd->uuid, uuid);
    plist_t resp = NULL;
    plist_from_memory((const char *)mdm_buf_head(&out), (uint32_t)out.len, &resp);
    CHECK(resp != NULL);
    mdm_buf_dispose(&body);
    mdm_buf_dispose(&out);
    return resp ? resp : plist_new_dict();
}

static plist_t with_data(const char *key, const mdm_buf_t *b)
{
    plist_t d = plist_new_dict();
    plist_dict_set_item(d, key, plist_new_data((const char *)mdm_buf_head(b), b->len));
    return d;
}

static plist_t with_string(const char *key, const char *v)
{
    plist_t d = plist_new_dict();
    plist_dict_set_item(d, key, plist_new_string(v));
    return d;
}

/* The string at key of dict d ("" when absent); one static buffer per call site is enough. */
static const char *str(plist_t d, const char *key)
{
    static char buf[4][512];
    static int k;
    char *b = buf[k++ % 4];
    b[0] = '\0';
    plist_t n = d ? plist_dict_get_item(d, key) : NULL;
    if (n && plist_get_node_type(n) == PLIST_STRING) {
        uint64_t len = 0;
        snprintf(b, 512, "%s", plist_get_string_ptr(n, &len));
    }
    return b;
}

static uint64_t uint_of(plist_t d, const char *key)
{
    uint64_t v = 0;
    plist_t n = d ? plist_dict_get_item(d, key) : NULL;
    if (n && plist_get_node_type(n) == PLIST_UINT)
        plist_get_uint_val(n, &v);
    return v;
}

static bool bool_of(plist_t d, const char *key)
{
    uint8_t v = 0;
    plist_t n = d ? plist_dict_get_item(d, key) : NULL;
    if (n && plist_get_node_type(n) == PLIST_BOOLEAN)
        plist_get_bool_val(n, &v);
    return v != 0;
}

static plist_t array_of(plist_t d, const char *key)
{
    plist_t n = d ? plist_dict_get_item(d, key) : NULL;
    return n && plist_get_node_type(n) == PLIST_ARRAY ? n : NULL;
}

static uint32_t count(plist_t d, const char *key)
{
    plist_t a = array_of(d, key);
    return a ? plist_array_get_size(a) : 0;
}

/* The item of array d[key] whose field equals value, or NULL. */
static plist_t find(plist_t d, const char *key, const char *field, const char *value)
{
    plist_t a = array_of(d, key);
    for (uint32_t i = 0; a && i < plist_array_get_size(a); i++)
        if (strcmp(str(plist_array_get_item(a, i), field), value) == 0)
            return plist_array_get_item(a, i);
    return NULL;
}

/* Checks Status Error with an ErrorChain whose first entry has code and domain. */
static void expect_error(plist_t resp, const char *status, uint64_t code, const char *domain)
{
    CHECK_STR(str(resp, "Status"), status);
    plist_t chain = array_of(resp, "ErrorChain");
    CHECK(chain && plist_array_get_size(chain) >= 1);
    plist_t e = chain ? plist_array_get_item(chain, 0) : NULL;
    CHECK_EQ_INT(uint_of(e, "ErrorCode"), code);
    CHECK_STR(str(e, "ErrorDomain"), domain);
    CHECK(str(e, "LocalizedDescription")[0] != '\0');
    CHECK_STR(str(e, "USEnglishDescription"), str(e, "LocalizedDescription"));
}

/* InstallProfile of payload bytes b; returns the response. */
static plist_t install(const mdm_buf_t *b)
{
    return run("InstallProfile", with_data("Payload", b), NULL);
}

/* ---- tests ---- */

static void test_install_list_replace(void)
{
    mdm_buf_t xml, der;
    mdm_buf_init(&xml, 0);
    mdm_buf_init(&der, 0);
    profile(NULL, "com.example.plain", "UUID-PLAIN-1", 1, &xml);
    plist_t r = install(&xml);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    CHECK(plist_dict_get_item(r, "ErrorChain") == NULL);
    plist_free(r);
    CHECK_EQ_INT(sim_mac_profile_count(&mac), 1);
    const sim_profile_t *p = sim_mac_find_profile(&mac, "com.example.plain");
    CHECK(p && !p->is_signed && p->managed && p->n_payloads == 1);

    /* signed by a certificate of the instance CA */
    mdm_buf_reset(&xml);
    profile(NULL, "com.example.signed", "UUID-SIGNED-1", 2, &xml);
    sign("signer", &xml, &der);
    r = install(&der);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    plist_free(r);
    p = sim_mac_find_profile(&mac, "com.example.signed");
    CHECK(p && p->is_signed && p->n_payloads == 2);
    CHECK_STR(p ? p->payloads[1].type : "", "com.apple.applicationaccess");
    CHECK_STR(p ? p->payloads[1].uuid : "", "UUID-SIGNED-1-1");

    /* the same identifier replaces (new UUID, one payload fewer) */
    mdm_buf_reset(&xml);
    mdm_buf_reset(&der);
    profile(NULL, "com.example.signed", "UUID-SIGNED-2", 1, &xml);
    sign("signer", &xml, &der);
    r = install(&der);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    plist_free(r);
    CHECK_EQ_INT(sim_mac_profile_count(&mac), 2);
    p = sim_mac_find_profile(&mac, "com.example.signed");
    CHECK_STR(p ? p->uuid : "", "UUID-SIGNED-2");
    CHECK_EQ_INT(p ? p->n_payloads : 0, 1);

    /* a binary plist installs too (and is gone again) */
    plist_t top = NULL;
    plist_from_memory((const char *)mdm_buf_head(&xml), (uint32_t)xml.len, &top);
    plist_dict_set_item(top, "PayloadIdentifier", plist_new_string("com.example.binary"));
    char *bin = NULL;
    uint32_t bin_len = 0;
    plist_to_bin(top, &bin, &bin_len);
    plist_free(top);
    mdm_buf_t b;
    mdm_buf_init(&b, 0);
    CHECK_EQ_INT(mdm_buf_append(&b, bin, bin_len), 0);
    free(bin);
    r = install(&b);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    plist_free(r);
    mdm_buf_dispose(&b);
    CHECK_EQ_INT(sim_mac_remove_profile_locally(&mac, "com.example.binary"), 0);

    /* ProfileList: the enrollment profile, then the two */
    r = run("ProfileList", NULL, NULL);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    CHECK_EQ_INT(count(r, "ProfileList"), 3);
    plist_t e = find(r, "ProfileList", "PayloadIdentifier", "mdmd.zdm.enroll");
    CHECK(e && !bool_of(e, "IsManaged"));
    plist_t s = find(r, "ProfileList", "PayloadIdentifier", "com.example.signed");
    CHECK(s != NULL);
    CHECK_STR(str(s, "PayloadUUID"), "UUID-SIGNED-2");
    CHECK_EQ_INT(uint_of(s, "PayloadVersion"), 1);
    CHECK_STR(str(s, "PayloadDisplayName"), "Policy");
    CHECK(bool_of(s, "IsManaged") && !bool_of(s, "IsEncrypted"));
    CHECK(plist_dict_get_item(s, "HasRemovalPasscode") && !bool_of(s, "HasRemovalPasscode"));
    CHECK(plist_dict_get_item(s, "PayloadRemovalDisallowed") &&
          !bool_of(s, "PayloadRemovalDisallowed"));
    CHECK_EQ_INT(count(s, "PayloadContent"), 1);
    plist_t c = find(s, "PayloadContent", "PayloadIdentifier", "com.example.signed.p0");
    CHECK_STR(str(c, "PayloadType"), "com.apple.applicationaccess");
    CHECK_STR(str(c, "PayloadUUID"), "UUID-SIGNED-2-0");
    CHECK_EQ_INT(uint_of(c, "PayloadVersion"), 1);
    /* stable across answers */
    plist_t r2 = run("ProfileList", NULL, NULL);
    CHECK_STR(str(find(r2, "ProfileList", "PayloadIdentifier", "mdmd.zdm.enroll"), "PayloadUUID"),
              str(e, "PayloadUUID"));
    plist_free(r2);
    plist_free(r);
    mdm_buf_dispose(&xml);
    mdm_buf_dispose(&der);
}

static void test_install_errors(void)
{
    mdm_buf_t xml, der;
    mdm_buf_init(&xml, 0);
    mdm_buf_init(&der, 0);
    size_t before = sim_mac_profile_count(&mac);

    /* one changed byte of the signed XML: the signature no longer verifies */
    profile(NULL, "com.example.tampered", "UUID-T", 1, &xml);
    sign("signer", &xml, &der);
    uint8_t *hit = memmem(mdm_buf_head(&der), der.len, "tampered", 8);
    CHECK(hit != NULL);
    if (hit)
        hit[0] = 'T';
    plist_t r = install(&der);
    expect_error(r, "Error", 1012, "MCProfileErrorDomain");
    plist_free(r);

    /* a valid signature by a certificate the Mac does not trust */
    mdm_buf_reset(&der);
    sign("rogue-signer", &xml, &der);
    r = install(&der);
    expect_error(r, "Error", 1013, "MCProfileErrorDomain");
    plist_free(r);

    /* neither a plist nor signed data; a plist that is not a dict */
    mdm_buf_reset(&der);
    CHECK_EQ_INT(mdm_buf_append_str(&der, "\x30\x03garbage"), 0);
    r = install(&der);
    expect_error(r, "Error", 1000, "MCProfileErrorDomain");
    plist_free(r);
    mdm_buf_reset(&der);
    CHECK_EQ_INT(mdm_buf_append_str(&der, "<plist><array/></plist>"), 0);
    r = install(&der);
    expect_error(r, "Error", 1000, "MCProfileErrorDomain");
    plist_free(r);

    /* wrong PayloadType; no PayloadIdentifier */
    mdm_buf_reset(&xml);
    profile("com.apple.wifi.managed", "com.example.wifi", "UUID-W", 1, &xml);
    r = install(&xml);
    expect_error(r, "Error", 1005, "MCProfileErrorDomain");
    plist_free(r);
    mdm_buf_reset(&xml);
    profile(NULL, NULL, "UUID-N", 1, &xml);
    r = install(&xml);
    expect_error(r, "Error", 1002, "MCProfileErrorDomain");
    plist_free(r);

    /* no Payload at all */
    r = run("InstallProfile", NULL, NULL);
    expect_error(r, "CommandFormatError", 12001, "MCMDMErrorDomain");
    plist_free(r);

    /* the test hook: two entries, installation then payload */
    mac.fail_install_identifier = "com.example.hook";
    mdm_buf_reset(&xml);
    profile(NULL, "com.example.hook", "UUID-H", 1, &xml);
    r = install(&xml);
    expect_error(r, "Error", 4001, "MCInstallationErrorDomain");
    plist_t chain = array_of(r, "ErrorChain");
    CHECK_EQ_INT(chain ? plist_array_get_size(chain) : 0, 2);
    plist_t second = chain && plist_array_get_size(chain) > 1 ? plist_array_get_item(chain, 1)
                                                              : NULL;
    CHECK_EQ_INT(uint_of(second, "ErrorCode"), 2001);
    CHECK_STR(str(second, "ErrorDomain"), "MCPayloadErrorDomain");
    CHECK(strstr(str(plist_array_get_item(chain, 0), "LocalizedDescription"), "Policy") != NULL);
    plist_free(r);
    mac.fail_install_identifier = NULL;

    CHECK_EQ_INT(sim_mac_profile_count(&mac), before);
    CHECK(sim_mac_find_profile(&mac, "com.example.hook") == NULL);
    mdm_buf_dispose(&xml);
    mdm_buf_dispose(&der);
}

static void test_remove_and_drift(void)
{
    size_t before = sim_mac_profile_count(&mac);
    plist_t r = run("RemoveProfile", with_string("Identifier", "com.example.plain"), NULL);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    plist_free(r);
    CHECK_EQ_INT(sim_mac_profile_count(&mac), before - 1);
    r = run("RemoveProfile", with_string("Identifier", "com.example.plain"), NULL);
    expect_error(r, "Error", 1001, "MCProfileErrorDomain");
    CHECK(strstr(str(plist_array_get_item(array_of(r, "ErrorChain"), 0), "USEnglishDescription"),
                 "com.example.plain") != NULL);
    plist_free(r);
    r = run("RemoveProfile", NULL, NULL);
    expect_error(r, "CommandFormatError", 12001, "MCMDMErrorDomain");
    plist_free(r);

    /* the user removes one by hand, and installs one */
    CHECK_EQ_INT(sim_mac_remove_profile_locally(&mac, "com.example.signed"), 0);
    CHECK_EQ_INT(sim_mac_remove_profile_locally(&mac, "com.example.signed"), -ENOENT);
    mdm_buf_t xml;
    mdm_buf_init(&xml, 0);
    profile(NULL, "com.example.byhand", "UUID-BH", 1, &xml);
    CHECK_EQ_INT(sim_mac_install_profile_locally(&mac, mdm_buf_head(&xml), xml.len), 0);
    CHECK_EQ_INT(sim_mac_install_profile_locally(&mac, "nope", 4), -EBADMSG);
    mdm_buf_dispose(&xml);
    r = run("ProfileList", NULL, NULL);
    CHECK(find(r, "ProfileList", "PayloadIdentifier", "com.example.signed") == NULL);
    plist_t h = find(r, "ProfileList", "PayloadIdentifier", "com.example.byhand");
    CHECK(h && !bool_of(h, "IsManaged"));
    plist_free(r);
    /* ManagedOnly: neither the enrollment profile nor the one installed by hand */
    plist_t cmdd = plist_new_dict();
    plist_dict_set_item(cmdd, "ManagedOnly", plist_new_bool(1));
    r = run("ProfileList", cmdd, NULL);
    CHECK_EQ_INT(count(r, "ProfileList"), 0);
    plist_free(r);
    /* MDM may not remove what it did not install */
    r = run("RemoveProfile", with_string("Identifier", "com.example.byhand"), NULL);
    expect_error(r, "Error", 4004, "MCInstallationErrorDomain");
    plist_free(r);
}

static void test_apps(void)
{
    plist_t r = run("InstalledApplicationList", NULL, NULL);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    CHECK_EQ_INT(count(r, "InstalledApplicationList"), sim_default_apps_count);
    plist_t a = find(r, "InstalledApplicationList", "Identifier", "com.google.Chrome");
    CHECK_STR(str(a, "Name"), "Google Chrome");
    CHECK_STR(str(a, "ShortVersion"), "131.0.6778.86");
    CHECK(uint_of(a, "BundleSize") > 0 && plist_dict_get_item(a, "Installing") &&
          !bool_of(a, "Installing"));
    plist_free(r);

    plist_t c = plist_new_dict(), ids = plist_new_array();
    plist_array_append_item(ids, plist_new_string("us.zoom.xos"));
    plist_array_append_item(ids, plist_new_string("com.example.absent"));
    plist_dict_set_item(c, "Identifiers", ids);
    r = run("InstalledApplicationList", c, NULL);
    CHECK_EQ_INT(count(r, "InstalledApplicationList"), 1);
    CHECK(find(r, "InstalledApplicationList", "Identifier", "us.zoom.xos") != NULL);
    plist_free(r);
    c = plist_new_dict();
    plist_dict_set_item(c, "ManagedAppsOnly", plist_new_bool(1));
    r = run("InstalledApplicationList", c, NULL);
    CHECK_EQ_INT(count(r, "InstalledApplicationList"), 2);
    plist_free(r);

    r = run("RemoveApplication", with_string("Identifier", "us.zoom.xos"), NULL);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    plist_free(r);
    CHECK(sim_mac_find_app(&mac, "us.zoom.xos") == NULL);
    CHECK_EQ_INT(sim_mac_app_count(&mac), sim_default_apps_count - 1);
    r = run("RemoveApplication", with_string("Identifier", "us.zoom.xos"), NULL);
    expect_error(r, "Error", 12028, "MCMDMErrorDomain");
    plist_free(r);
    r = run("RemoveApplication", with_string("Identifier", "com.apple.Safari"), NULL);
    expect_error(r, "Error", 12029, "MCMDMErrorDomain");
    plist_free(r);
    CHECK(sim_mac_find_app(&mac, "com.apple.Safari") != NULL);

    sim_app_t one = {"com.example.tool", "Tool", "1.0", "100", 1024, true};
    CHECK_EQ_INT(sim_mac_set_apps(&mac, &one, 1), 0);
    r = run("InstalledApplicationList", NULL, NULL);
    CHECK_EQ_INT(count(r, "InstalledApplicationList"), 1);
    CHECK_STR(str(find(r, "InstalledApplicationList", "Identifier", "com.example.tool"), "Version"),
              "100");
    plist_free(r);
}

static void test_settings(void)
{
    plist_t c = plist_new_dict(), items = plist_new_array();
    plist_t dn = plist_new_dict();
    plist_dict_set_item(dn, "Item", plist_new_string("DeviceName"));
    plist_dict_set_item(dn, "DeviceName", plist_new_string("Finance Mac 7"));
    plist_array_append_item(items, dn);
    plist_t wp = plist_new_dict();
    plist_dict_set_item(wp, "Item", plist_new_string("Wallpaper"));
    plist_array_append_item(items, wp);
    plist_dict_set_item(c, "Settings", items);
    plist_t r = run("Settings", c, NULL);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    CHECK_EQ_INT(count(r, "Settings"), 2);
    CHECK_STR(str(find(r, "Settings", "Item", "DeviceName"), "Status"), "Acknowledged");
    plist_t w = find(r, "Settings", "Item", "Wallpaper");
    CHECK_STR(str(w, "Status"), "Error");
    CHECK_EQ_INT(count(w, "ErrorChain"), 1);
    plist_free(r);
    CHECK_STR(mac.device_name, "Finance Mac 7");

    plist_t q = plist_new_dict(), qs = plist_new_array();
    plist_array_append_item(qs, plist_new_string("DeviceName"));
    plist_dict_set_item(q, "Queries", qs);
    r = run("DeviceInformation", q, NULL);
    CHECK_STR(str(plist_dict_get_item(r, "QueryResponses"), "DeviceName"), "Finance Mac 7");
    plist_free(r);

    r = run("Settings", NULL, NULL);
    expect_error(r, "CommandFormatError", 12001, "MCMDMErrorDomain");
    plist_free(r);
}

static void test_os_updates(void)
{
    plist_t r = run("ScheduleOSUpdateScan", NULL, NULL);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    CHECK(bool_of(r, "ScanInitiated"));
    plist_free(r);

    r = run("AvailableOSUpdates", NULL, NULL);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    CHECK(count(r, "AvailableOSUpdates") >= 1);
    plist_t u = plist_array_get_item(array_of(r, "AvailableOSUpdates"), 0);
    char key[128];
    snprintf(key, sizeof(key), "%s", str(u, "ProductKey"));
    CHECK(strncmp(key, "MSU_UPDATE_", 11) == 0);
    CHECK(str(u, "Version")[0] && str(u, "Build")[0] && str(u, "HumanReadableName")[0]);
    plist_free(r);

    r = run("OSUpdateStatus", NULL, NULL);
    CHECK_EQ_INT(count(r, "OSUpdateStatus"), 0);
    plist_free(r);

    plist_t c = plist_new_dict(), ups = plist_new_array(), one = plist_new_dict();
    plist_dict_set_item(one, "ProductKey", plist_new_string(key));
    plist_dict_set_item(one, "InstallAction", plist_new_string("DownloadOnly"));
    plist_array_append_item(ups, one);
    plist_t bad = plist_new_dict();
    plist_dict_set_item(bad, "ProductVersion", plist_new_string("9.9"));
    plist_dict_set_item(bad, "InstallAction", plist_new_string("InstallASAP"));
    plist_array_append_item(ups, bad);
    plist_dict_set_item(c, "Updates", ups);
    r = run("ScheduleOSUpdate", c, NULL);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    CHECK_EQ_INT(count(r, "UpdateResults"), 2);
    plist_t ok = find(r, "UpdateResults", "ProductKey", key);
    CHECK_STR(str(ok, "InstallAction"), "DownloadOnly");
    CHECK_STR(str(ok, "Status"), "Downloading");
    plist_t no = find(r, "UpdateResults", "ProductKey", "9.9");
    CHECK_STR(str(no, "InstallAction"), "Error");
    CHECK_EQ_INT(count(no, "ErrorChain"), 1);
    plist_free(r);

    r = run("OSUpdateStatus", NULL, NULL);
    CHECK_EQ_INT(count(r, "OSUpdateStatus"), 1);
    plist_t st = find(r, "OSUpdateStatus", "ProductKey", key);
    CHECK_STR(str(st, "Status"), "Downloading");
    CHECK(plist_dict_get_item(st, "IsDownloaded") &&
          plist_dict_get_item(st, "DownloadPercentComplete"));
    plist_free(r);
}

static void test_notnow_and_explicit(void)
{
    mdm_buf_t xml, out;
    mdm_buf_init(&xml, 0);
    mdm_buf_init(&out, 0);
    profile(NULL, "com.example.later", "UUID-L", 1, &xml);
    size_t before = sim_mac_profile_count(&mac);
    mac.notnow_mask = 1u << SIM_REQ_INSTALL_PROFILE;
    sim_cmd_t cmd;
    plist_t r = run("InstallProfile", with_data("Payload", &xml), &cmd);
    CHECK_STR(str(r, "Status"), "NotNow");
    plist_free(r);
    CHECK_EQ_INT(sim_mac_profile_count(&mac), before);
    mac.notnow_mask = 0;
    /* the explicit status does not act */
    CHECK_EQ_INT(sim_build_response(&mac, &cmd, SIM_ACKNOWLEDGED, &out), 0);
    CHECK(memmem(mdm_buf_head(&out), out.len, "Acknowledged", 12) != NULL);
    CHECK_EQ_INT(sim_mac_profile_count(&mac), before);
    /* answering later: the body is still kept */
    mdm_buf_reset(&out);
    CHECK_EQ_INT(sim_build_answer(&mac, &cmd, &out), 0);
    CHECK(memmem(mdm_buf_head(&out), out.len, "Acknowledged", 12) != NULL);
    CHECK(sim_mac_find_profile(&mac, "com.example.later") != NULL);
    /* a command whose body the Mac no longer holds reads as one without keys */
    sim_cmd_t ghost = cmd;
    snprintf(ghost.uuid, sizeof(ghost.uuid), "00000000-0000-4000-A000-00000000DEAD");
    mdm_buf_reset(&out);
    CHECK_EQ_INT(sim_build_answer(&mac, &ghost, &out), 0);
    CHECK(memmem(mdm_buf_head(&out), out.len, "CommandFormatError", 18) != NULL);
    /* an empty reply is no command */
    sim_cmd_t none;
    mdm_buf_reset(&out);
    CHECK_EQ_INT(sim_handle_command(&mac, (const uint8_t *)"", 0, &none, &out), 0);
    CHECK_STR(none.uuid, "");
    CHECK_EQ_INT(out.len, 0);
    mdm_buf_dispose(&xml);
    mdm_buf_dispose(&out);
}

int main(void)
{
    dir = check_tmpdir("sim_profiles");
    char inst[512];
    snprintf(inst, sizeof(inst), "%s", check_path(dir, "inst"));
    if (mkdir(inst, 0700) != 0 || mkdir(check_path(inst, "ca"), 0700) != 0)
        return 99;
    make_cert("ca", NULL, true);
    make_cert("signer", "ca", false);
    make_cert("rogue", NULL, true);
    make_cert("rogue-signer", "rogue", false);
    /* the instance CA where sim_env_init looks for it */
    if (check_sh("cp '%s' '%s/ca/ca.crt' && cp '%s' '%s/ca/ca.key'", check_path(dir, "ca.crt"),
                 inst, check_path(dir, "ca.key"), inst) != 0)
        return 99;
    CHECK_EQ_INT(sim_env_init(&env, inst, check_path(dir, "work"), 0), 0);
    CHECK_EQ_INT(sim_mac_init(&mac, &env, NULL, 0), 0);

    test_install_list_replace();
    test_install_errors();
    test_remove_and_drift();
    test_apps();
    test_settings();
    test_os_updates();
    test_notnow_and_explicit();

    sim_mac_dispose(&mac);
    return check_finish("sim_profiles");
}
