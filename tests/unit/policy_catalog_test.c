/*
 * The policy catalog: for each of the 22 types a realistic settings object validates, builds
 * the expected profile or commands, and the output passes the independent schema validator
 * (tests/schema/validate_profile.py, reading Apple's YAML directly); a broken settings object
 * is refused naming the key; secrets split and merge back; UUIDs are fresh and identifiers
 * stable. Then the bad inputs of import_profile and credentials.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/policy_catalog.h"
#include "check.h"
#include "policy_cases.h"
#include "core/buf.h"
#include "core/cms.h"
#include "core/file.h"
#include "core/plist.h"
#include "core/x509.h"

#define VALIDATOR "/usr/bin/python3 " MDM_SOURCE_ROOT "/tests/schema/validate_profile.py"
#define PROFILE_ID "com.example.mdm.policy.p1"

static const char *tmp;
static uint8_t *escrow_der; /* the test CA: the escrow certificate of these builds */
static size_t escrow_len;

static void make_fixtures(void)
{
    tmp = check_tmpdir("policy_catalog");
    policy_cases_setup(tmp);
    escrow_der = policy_ca_der;
    escrow_len = policy_ca_der_len;
}

static json_t *settings_of(const char *text) { return policy_case_settings(text); }

typedef policy_case_t tcase_t;
#define cases policy_cases

/* ---- helpers --------------------------------------------------------------------------- */

static const mdm_policy_env_t env = {
    .identifier_prefix = "com.example.mdm", .organization = "Example Org",
    .escrow_location = "Example IT", .scep_url = "https://mdm.example.com/scep",
    .scep_name = "mdmd", .scep_challenge = "one-time-challenge",
};

static const mdm_policy_device_t dev = {"UDID-1", "C02XYZ", "Ann's Mac", "Mac14,2", "15.1",
                                        "ann", "Ann Example", "ann@example.com"};

static mdm_policy_env_t env_full(void)
{
    mdm_policy_env_t e = env;
    e.escrow_cert_der = escrow_der;
    e.escrow_cert_der_len = escrow_len;
    e.ca_der = escrow_der;
    e.ca_der_len = escrow_len;
    return e;
}

static const mdm_policy_meta_t meta = {"p1", "Policy One", 3, PROFILE_ID};

static int build(const mdm_policy_type_t *t, const json_t *s, mdm_policy_output_t *out,
                 char *err, size_t errlen)
{
    mdm_policy_env_t e = env_full();
    mdm_policy_output_init(out);
    return mdm_policy_build(t, s, &meta, &e, &dev, out, err, errlen);
}

static plist_t parse_profile(const mdm_policy_output_t *o)
{
    plist_t p = NULL;
    char err[128];
    if (mdm_plist_parse_dict(mdm_buf_head(&o->profile_xml), o->profile_xml.len, 32, &p, err,
                             sizeof(err)) != 0)
        return NULL;
    return p;
}

static const char *str_at(plist_t d, const char *key)
{
    const char *s = NULL;
    return mdm_plist_get_string(d, key, &s) == 0 ? s : "";
}

/* "type1,type2|cmd1,cmd2" of an output. */
static void describe(const mdm_policy_output_t *o, char *out, size_t size)
{
    out[0] = '\0';
    plist_t p = o->profile_xml.len ? parse_profile(o) : NULL;
    plist_t content = NULL;
    if (p && mdm_plist_get_array(p, "PayloadContent", &content) == 0)
        for (uint32_t i = 0; i < plist_array_get_size(content); i++)
            snprintf(out + strlen(out), size - strlen(out), "%s%s", i ? "," : "",
                     str_at(plist_array_get_item(content, i), "PayloadType"));
    plist_free(p);
    snprintf(out + strlen(out), size - strlen(out), "|");
    for (unsigned i = 0; i < o->n_commands; i++)
        snprintf(out + strlen(out), size - strlen(out), "%s%s", i ? "," : "",
                 str_at(o->commands[i], "RequestType"));
}

/* Runs the independent validator on the profile and each command. */
static int validate_externally(const mdm_policy_output_t *o, const char *name)
{
    char file[256];
    int bad = 0;
    if (o->profile_xml.len) {
        snprintf(file, sizeof(file), "%s.mobileconfig", name);
        const char *path = check_path(tmp, file);
        CHECK(mdm_file_write_atomic(path, mdm_buf_head(&o->profile_xml), o->profile_xml.len,
                                    0600) == 0);
        if (check_sh(VALIDATOR " profile %s >&2", path) != 0) {
            fprintf(stderr, "%s: profile refused by validate_profile.py\n", name);
            bad++;
        }
    }
    for (unsigned i = 0; i < o->n_commands; i++) {
        mdm_buf_t xml;
        mdm_buf_init(&xml, 0);
        CHECK(mdm_plist_to_xml(o->commands[i], &xml) == 0);
        snprintf(file, sizeof(file), "%s.cmd%u.plist", name, i);
        const char *path = check_path(tmp, file);
        CHECK(mdm_file_write_atomic(path, mdm_buf_head(&xml), xml.len, 0600) == 0);
        mdm_buf_dispose(&xml);
        if (check_sh(VALIDATOR " command %s >&2", path) != 0) {
            fprintf(stderr, "%s: command %u refused by validate_profile.py\n", name, i);
            bad++;
        }
    }
    return bad;
}

/* The UUIDs and identifiers of a profile, in order, joined. */
static void ids(const mdm_policy_output_t *o, char *uuids, char *idents, size_t size)
{
    plist_t p = parse_profile(o);
    plist_t content = NULL;
    snprintf(uuids, size, "%s", p ? str_at(p, "PayloadUUID") : "");
    snprintf(idents, size, "%s", p ? str_at(p, "PayloadIdentifier") : "");
    if (p && mdm_plist_get_array(p, "PayloadContent", &content) == 0)
        for (uint32_t i = 0; i < plist_array_get_size(content); i++) {
            plist_t d = plist_array_get_item(content, i);
            snprintf(uuids + strlen(uuids), size - strlen(uuids), " %s",
                     str_at(d, "PayloadUUID"));
            snprintf(idents + strlen(idents), size - strlen(idents), " %s",
                     str_at(d, "PayloadIdentifier"));
        }
    plist_free(p);
}

static bool no_shared_uuid(const char *a, const char *b)
{
    char copy[2048];
    snprintf(copy, sizeof(copy), "%s", a);
    for (char *save = NULL, *tok = strtok_r(copy, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save))
        if (strstr(b, tok))
            return false;
    return true;
}

/* ---- per-type test --------------------------------------------------------------------- */

static void check_secrets(const tcase_t *c, const mdm_policy_type_t *t, const json_t *s)
{
    json_t *pub = NULL, *sec = NULL;
    CHECK(mdm_policy_split_secrets(t, s, &pub, &sec) == 0);
    CHECK((sec != NULL) == (c->secret != NULL));
    char *text = json_dumps(pub, JSON_COMPACT);
    char *secret = c->secret ? policy_case_text(c->secret) : NULL;
    CHECK(text && (!secret || !strstr(text, secret)));
    free(secret);
    free(text);
    json_t *back = mdm_policy_merge_secrets(pub, sec);
    CHECK(back && json_equal(back, s));
    json_t *paths = mdm_policy_secret_paths(t, s);
    CHECK(paths && json_array_size(paths) == (c->secret ? 1u : 0u));
    json_decref(paths);
    json_decref(back);
    json_decref(pub);
    json_decref(sec);
}

static void check_case(const tcase_t *c)
{
    const mdm_policy_type_t *t = mdm_policy_type_find(c->type);
    CHECK(t != NULL);
    if (!t)
        return;
    char err[512] = "";
    json_t *s = settings_of(c->valid);
    CHECK(s != NULL);
    int ret = mdm_policy_validate(t, s, err, sizeof(err));
    if (ret != 0)
        fprintf(stderr, "%s: valid settings refused: %s\n", c->type, err);
    CHECK_EQ_INT(ret, 0);

    mdm_policy_output_t a, b;
    CHECK_EQ_INT(build(t, s, &a, err, sizeof(err)), 0);
    CHECK_EQ_INT(build(t, s, &b, err, sizeof(err)), 0);
    char got[512];
    describe(&a, got, sizeof(got));
    CHECK_STR(got, c->expect);
    CHECK_EQ_INT(mdm_policy_type_is_profile(t) || a.profile_xml.len == 0, 1);
    CHECK_EQ_INT(validate_externally(&a, c->type), 0);
    if (a.profile_xml.len) {
        char ua[2048], ia[2048], ub[2048], ib[2048];
        ids(&a, ua, ia, sizeof(ua));
        ids(&b, ub, ib, sizeof(ub));
        /* Fresh on every build (an imported profile keeps its own payload UUIDs). */
        CHECK(strcmp(c->type, "import_profile") == 0 ? strncmp(ua, ub, 36) != 0
                                                     : no_shared_uuid(ua, ub));
        CHECK_STR(ia, ib);             /* stable */
        CHECK(strncmp(ia, PROFILE_ID, strlen(PROFILE_ID)) == 0);
    }
    mdm_policy_output_dispose(&a);
    mdm_policy_output_dispose(&b);
    check_secrets(c, t, s);
    json_decref(s);

    json_t *bad = settings_of(c->invalid);
    CHECK(bad != NULL);
    err[0] = '\0';
    CHECK_EQ_INT(mdm_policy_validate(t, bad, err, sizeof(err)), -EINVAL);
    if (!strstr(err, c->invalid_key))
        fprintf(stderr, "%s: err \"%s\" does not name %s\n", c->type, err, c->invalid_key);
    CHECK(strstr(err, c->invalid_key) != NULL);
    mdm_policy_output_t o;
    CHECK_EQ_INT(build(t, bad, &o, err, sizeof(err)), -EINVAL);
    CHECK_EQ_INT(o.profile_xml.len, 0);
    CHECK_EQ_INT(o.n_commands, 0);
    json_decref(bad);
}

/* ---- specific behaviour ---------------------------------------------------------------- */

static void expect_refused(const char *type, const char *settings, const char *needle)
{
    char err[512] = "";
    json_t *s = settings_of(settings);
    CHECK(s != NULL);
    int ret = mdm_policy_validate(mdm_policy_type_find(type), s, err, sizeof(err));
    CHECK_EQ_INT(ret, -EINVAL);
    if (!strstr(err, needle))
        fprintf(stderr, "%s: err \"%s\" lacks \"%s\"\n", type, err, needle);
    CHECK(strstr(err, needle) != NULL);
    json_decref(s);
}

static void test_catalog(void)
{
    CHECK_EQ_INT(mdm_policy_type_count(), 22);
    CHECK_EQ_INT(policy_cases_count, 22);
    for (size_t i = 0; i < mdm_policy_type_count(); i++) {
        const mdm_policy_type_t *t = mdm_policy_type_at(i);
        CHECK(mdm_policy_type_find(mdm_policy_type_name(t)) == t);
        CHECK(*mdm_policy_type_title(t) != '\0');
    }
    CHECK(mdm_policy_type_at(22) == NULL);
    CHECK(mdm_policy_type_find("nope") == NULL);
    CHECK_STR(mdm_policy_type_title(mdm_policy_type_find("airplay")), "AirPlay mirroring");
}

static void test_import_bad(void)
{
    char *nonplist = policy_b64_of("hello", 5);
    char text[8192];
    snprintf(text, sizeof(text), "{\"mobileconfig\":\"%s\"}", nonplist);
    expect_refused("import_profile", text, "not a property list");
    free(nonplist);
    const char *nocontent = "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict>"
                            "<key>PayloadType</key><string>Configuration</string></dict></plist>";
    char *b = policy_b64_of(nocontent, strlen(nocontent));
    snprintf(text, sizeof(text), "{\"mobileconfig\":\"%s\"}", b);
    expect_refused("import_profile", text, "PayloadContent");
    free(b);
    const char *unknown = "<dict><key>PayloadType</key><string>com.example.mystery</string>"
                          "<key>PayloadVersion</key><integer>1</integer>"
                          "<key>PayloadIdentifier</key><string>x.y</string>"
                          "<key>PayloadUUID</key><string>u</string></dict>";
    b = policy_cfg_variant("", unknown);
    snprintf(text, sizeof(text), "{\"mobileconfig\":\"%s\"}", b);
    expect_refused("import_profile", text, "com.example.mystery");
    snprintf(text, sizeof(text), "{\"mobileconfig\":\"%s\",\"allow_unknown_payloads\":true}", b);
    json_t *s = settings_of(text);
    char err[512];
    CHECK_EQ_INT(mdm_policy_validate(mdm_policy_type_find("import_profile"), s, err,
                                     sizeof(err)), 0);
    json_decref(s);
    free(b);
    b = policy_cfg_variant("<key>LoggingOption</key><string>loud</string>", "");
    snprintf(text, sizeof(text), "{\"mobileconfig\":\"%s\"}", b);
    expect_refused("import_profile", text, "PayloadContent[0].LoggingOption");
    free(b);
    b = policy_cfg_variant("<key>EnableStealth</key><true/>", "");
    snprintf(text, sizeof(text), "{\"mobileconfig\":\"%s\"}", b);
    expect_refused("import_profile", text, "EnableStealth: unknown key");
    free(b);

    /* Plain XML is accepted too and keeps its payloads; identifier replaced. */
    snprintf(text, sizeof(text), "{\"mobileconfig\":\"%s\"}", policy_cfg_b64);
    s = settings_of(text);
    mdm_policy_output_t o;
    CHECK_EQ_INT(build(mdm_policy_type_find("import_profile"), s, &o, err, sizeof(err)), 0);
    plist_t p = parse_profile(&o);
    CHECK_STR(str_at(p, "PayloadIdentifier"), PROFILE_ID);
    CHECK(strcmp(str_at(p, "PayloadUUID"), "11111111-2222-4333-8444-555555555555") != 0);
    plist_free(p);
    mdm_policy_output_dispose(&o);
    json_decref(s);
}

static void test_credentials_bad(void)
{
    char *garbage = policy_b64_of("\x30\x03\x02\x01\x01", 5);
    char text[4096];
    snprintf(text, sizeof(text),
             "{\"PayloadType\":\"com.apple.security.root\",\"PayloadContent\":\"%s\"}", garbage);
    expect_refused("credentials", text, "settings.PayloadContent: not an X.509 certificate");
    snprintf(text, sizeof(text),
             "{\"PayloadType\":\"com.apple.security.pkcs12\",\"PayloadContent\":\"%s\"}",
             garbage);
    expect_refused("credentials", text, "not a PKCS#12");
    free(garbage);
    expect_refused("credentials", "{\"PayloadType\":\"com.apple.security.pkcs12\","
                   "\"PayloadContent\":\"@P12@\",\"Password\":\"wrong\"}", "settings.Password");
    expect_refused("credentials", "{\"PayloadContent\":\"@CERT@\"}", "settings.PayloadType");
    expect_refused("credentials", "{\"PayloadType\":\"com.apple.security.root\"}",
                   "PayloadContent");

    /* PEM text is accepted; a pem payload carries PEM, a root payload DER. */
    char pem[8192];
    FILE *f = fopen(MDM_TEST_DATA "/test-ca.crt", "r");
    size_t n = f ? fread(pem, 1, sizeof(pem) - 1, f) : 0;
    if (f)
        fclose(f);
    pem[n] = '\0';
    const char *types[] = {"com.apple.security.pem", "com.apple.security.root"};
    for (int i = 0; i < 2; i++) {
        json_t *s = json_pack("{s:s, s:s}", "PayloadType", types[i], "PayloadContent", pem);
        mdm_policy_output_t o;
        char err[512] = "";
        CHECK_EQ_INT(build(mdm_policy_type_find("credentials"), s, &o, err, sizeof(err)), 0);
        CHECK(o.profile_xml.len > 0);
        CHECK_EQ_INT(validate_externally(&o, types[i]), 0);
        plist_t p = parse_profile(&o), content = NULL;
        const uint8_t *data = NULL;
        size_t len = 0;
        CHECK(p && mdm_plist_get_array(p, "PayloadContent", &content) == 0);
        CHECK(content && mdm_plist_get_data(plist_array_get_item(content, 0), "PayloadContent",
                                            &data, &len) == 0);
        if (i == 0)
            CHECK(len > 27 && memcmp(data, "-----BEGIN CERTIFICATE-----", 27) == 0);
        else
            CHECK(len == escrow_len && memcmp(data, escrow_der, len) == 0);
        plist_free(p);
        mdm_policy_output_dispose(&o);
        json_decref(s);
    }
}

static void test_details(void)
{
    char err[512] = "";
    /* Device name: per device, expanded, and no variable means shareable. */
    const mdm_policy_type_t *dn = mdm_policy_type_find("device_name");
    json_t *s = json_pack("{s:s}", "DeviceName", "Mac-{serial}-{user}");
    CHECK(mdm_policy_needs_device(dn, s));
    mdm_policy_output_t o;
    CHECK_EQ_INT(build(dn, s, &o, err, sizeof(err)), 0);
    CHECK(o.per_device);
    plist_t arr = NULL;
    CHECK(mdm_plist_get_array(o.commands[0], "Settings", &arr) == 0);
    CHECK_STR(str_at(plist_array_get_item(arr, 0), "DeviceName"), "Mac-C02XYZ-ann");
    mdm_policy_output_dispose(&o);
    json_decref(s);
    s = json_pack("{s:s}", "DeviceName", "Kiosk");
    CHECK(!mdm_policy_needs_device(dn, s));
    json_decref(s);

    /* App inventory repeats. */
    s = json_pack("{s:i}", "interval_hours", 6);
    CHECK_EQ_INT(build(mdm_policy_type_find("app_inventory"), s, &o, err, sizeof(err)), 0);
    CHECK_EQ_INT(o.repeat_interval_s, 6 * 3600);
    mdm_policy_output_dispose(&o);
    json_decref(s);

    /* FileVault: escrow wired to the certificate; refused without escrow certificate. */
    const mdm_policy_type_t *fv = mdm_policy_type_find("filevault");
    s = json_pack("{s:s, s:b}", "Enable", "On", "Defer", 1);
    CHECK_EQ_INT(build(fv, s, &o, err, sizeof(err)), 0);
    plist_t p = parse_profile(&o), content = NULL;
    CHECK(p && mdm_plist_get_array(p, "PayloadContent", &content) == 0);
    if (content && plist_array_get_size(content) == 3) {
        CHECK_STR(str_at(plist_array_get_item(content, 2), "EncryptCertPayloadUUID"),
                  str_at(plist_array_get_item(content, 1), "PayloadUUID"));
        CHECK_STR(str_at(plist_array_get_item(content, 2), "Location"), "Example IT");
    }
    plist_free(p);
    mdm_policy_output_dispose(&o);
    mdm_policy_output_init(&o);
    CHECK_EQ_INT(mdm_policy_build(fv, s, &meta, &env, &dev, &o, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "escrow") != NULL);
    json_decref(s);
    expect_refused("filevault", "{\"Enable\":\"On\"}", "Defer");
    expect_refused("filevault", "{\"Enable\":\"On\",\"Defer\":true,\"UseRecoveryKey\":false}",
                   "UseRecoveryKey");

    /* SCEP with the instance CA: per device, mdmd's URL and challenge, plus the CA. */
    const mdm_policy_type_t *scep = mdm_policy_type_find("scep");
    s = json_pack("{s:s, s:i}", "ca", "instance", "Keysize", 2048);
    CHECK_EQ_INT(mdm_policy_validate(scep, s, err, sizeof(err)), 0);
    CHECK(mdm_policy_needs_device(scep, s));
    CHECK_EQ_INT(build(scep, s, &o, err, sizeof(err)), 0);
    CHECK(o.per_device);
    CHECK_EQ_INT(validate_externally(&o, "scep-instance"), 0);
    char got[256];
    describe(&o, got, sizeof(got));
    CHECK_STR(got, "com.apple.security.root,com.apple.security.scep|");
    CHECK(memmem(mdm_buf_head(&o.profile_xml), o.profile_xml.len, "one-time-challenge", 18));
    mdm_policy_output_dispose(&o);
    json_decref(s);
    expect_refused("scep", "{\"ca\":\"instance\",\"Challenge\":\"x\"}", "settings.Challenge");

    /* Unknown keys and mdmd's own keys. */
    expect_refused("firewall", "{\"EnableFirewall\":true,\"Foo\":1}",
                   "settings.Foo: unknown key for com.apple.security.firewall");
    expect_refused("firewall", "{\"EnableFirewall\":true,\"PayloadIdentifier\":\"x\"}",
                   "settings.PayloadIdentifier: set by mdmd");
    /* Removed on macOS 15: not in the tables. */
    expect_refused("firewall", "{\"EnableFirewall\":true,\"LoggingOption\":\"brief\"}",
                   "settings.LoggingOption: unknown key");
    expect_refused("os_update", "{}", "needs");
    expect_refused("restrictions", "{\"applicationaccess\":{},\"dock\":{}}", "settings.dock");
    expect_refused("network", "{\"PayloadType\":\"com.apple.vpn.managed\"}",
                   "settings.PayloadType");
    expect_refused("device_name", "{\"DeviceName\":\"Mac-{serial\"}", "'{' without '}'");
    expect_refused("app_inventory", "{\"interval_hours\":0}", "settings.interval_hours");
    expect_refused("passcode", "{\"customRegex\":{\"passwordContentRegex\":\"x\","
                   "\"passwordContentDescription\":{\"en\":3}}}",
                   "settings.customRegex.passwordContentDescription.en");
}

int main(void)
{
    make_fixtures();
    test_catalog();
    for (size_t i = 0; i < policy_cases_count; i++)
        check_case(&cases[i]);
    test_import_bad();
    test_credentials_bad();
    test_details();
    free(policy_cert_b64);
    free(policy_p12_b64);
    free(policy_font_b64);
    free(policy_png_b64);
    free(policy_cfg_b64);
    free(policy_signed_cfg_b64);
    free(escrow_der);
    return check_finish("policy_catalog");
}
