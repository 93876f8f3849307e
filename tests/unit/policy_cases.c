/* The shared policy cases; see policy_cases.h. */
#include "policy_cases.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/buf.h"
#include "core/cms.h"
#include "core/file.h"
#include "core/x509.h"

char *policy_cert_b64, *policy_p12_b64, *policy_font_b64, *policy_png_b64, *policy_cfg_b64,
    *policy_signed_cfg_b64;
uint8_t *policy_ca_der;
size_t policy_ca_der_len;

char *policy_b64_of(const void *data, size_t len)
{
    mdm_buf_t b;
    mdm_buf_init(&b, 0);
    if (mdm_base64_encode(data, len, &b) != 0 || mdm_buf_append(&b, "", 1) != 0)
        abort();
    char *s = strdup((const char *)mdm_buf_head(&b));
    mdm_buf_dispose(&b);
    return s;
}

static char *b64_file(const char *path)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (mdm_file_read(path, 1 << 20, &data, &len) != 0)
        return NULL;
    char *s = policy_b64_of(data, len);
    free(data);
    return s;
}

static const char plain_cfg[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
    "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
    "<plist version=\"1.0\"><dict>"
    "<key>PayloadType</key><string>Configuration</string>"
    "<key>PayloadVersion</key><integer>1</integer>"
    "<key>PayloadIdentifier</key><string>org.example.admin</string>"
    "<key>PayloadUUID</key><string>11111111-2222-4333-8444-555555555555</string>"
    "<key>PayloadDisplayName</key><string>Admin's own</string>"
    "<key>PayloadContent</key><array><dict>"
    "<key>PayloadType</key><string>com.apple.security.firewall</string>"
    "<key>PayloadVersion</key><integer>1</integer>"
    "<key>PayloadIdentifier</key><string>org.example.admin.fw</string>"
    "<key>PayloadUUID</key><string>11111111-2222-4333-8444-666666666666</string>"
    "<key>EnableFirewall</key><true/>%s"
    "</dict>%s</array></dict></plist>\n";

char *policy_cfg_variant(const char *extra_key, const char *extra_payload)
{
    char buf[4096];
    snprintf(buf, sizeof(buf), plain_cfg, extra_key, extra_payload);
    return policy_b64_of(buf, strlen(buf));
}

void policy_cases_setup(const char *tmp)
{
    const char *ca = MDM_TEST_DATA "/test-ca.crt";
    CHECK(mdm_x509_read_cert_der(ca, &policy_ca_der, &policy_ca_der_len) == 0);
    policy_cert_b64 = policy_b64_of(policy_ca_der, policy_ca_der_len);
    CHECK(check_sh("cd %s && openssl pkcs12 -export -in %s/client.crt -inkey %s/client.key "
                   "-out c.p12 -passout pass:p12-s3cret -certpbe PBE-SHA1-3DES "
                   "-keypbe PBE-SHA1-3DES -macalg sha1", tmp, MDM_TEST_DATA,
                   MDM_TEST_DATA) == 0);
    policy_p12_b64 = b64_file(check_path(tmp, "c.p12"));
    CHECK(policy_p12_b64 != NULL);
    policy_font_b64 = policy_b64_of("\x00\x01\x00\x00\x00\x0a\x00\x80", 8);
    policy_png_b64 = policy_b64_of("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", 16);
    policy_cfg_b64 = policy_cfg_variant("", "");
    char xml[4096];
    snprintf(xml, sizeof(xml), plain_cfg, "", "");
    CHECK(mdm_file_write_atomic(check_path(tmp, "in.mobileconfig"), xml, strlen(xml), 0600) ==
          0);
    CHECK(check_sh("cd %s && openssl cms -sign -nodetach -binary -outform DER -in "
                   "in.mobileconfig -signer %s/test-ca.crt -inkey %s/test-ca.key -out "
                   "signed.mobileconfig", tmp, MDM_TEST_DATA, MDM_TEST_DATA) == 0);
    policy_signed_cfg_b64 = b64_file(check_path(tmp, "signed.mobileconfig"));
    CHECK(policy_signed_cfg_b64 != NULL);
}

char *policy_case_text(const char *text)
{
    static const struct { const char *tag; char **val; } subs[] = {
        {"@CERT@", &policy_cert_b64}, {"@P12@", &policy_p12_b64}, {"@FONT@", &policy_font_b64},
        {"@PNG@", &policy_png_b64},   {"@CFG@", &policy_cfg_b64}, {"@SCFG@", &policy_signed_cfg_b64},
    };
    mdm_buf_t b;
    mdm_buf_init(&b, 0);
    for (const char *p = text; *p;) {
        bool done = false;
        for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]) && !done; i++) {
            size_t n = strlen(subs[i].tag);
            if (strncmp(p, subs[i].tag, n) == 0) {
                CHECK(mdm_buf_append_str(&b, *subs[i].val ? *subs[i].val : "") == 0);
                p += n;
                done = true;
            }
        }
        if (!done)
            CHECK(mdm_buf_append(&b, p++, 1) == 0);
    }
    CHECK(mdm_buf_append(&b, "", 1) == 0);
    char *out = strdup((const char *)mdm_buf_head(&b));
    mdm_buf_dispose(&b);
    return out;
}

json_t *policy_case_settings(const char *text)
{
    char *t = policy_case_text(text);
    json_error_t e;
    json_t *j = t ? json_loads(t, 0, &e) : NULL;
    if (!j)
        fprintf(stderr, "bad test JSON: %s: %s\n", t ? e.text : "out of memory", text);
    free(t);
    return j;
}

const policy_case_t policy_cases[] = {
    {"airplay",
     "{\"AllowList\":[{\"DeviceID\":\"AA:BB:CC:DD:EE:FF\",\"DeviceName\":\"Boardroom\"}],"
     "\"Passwords\":[{\"DeviceName\":\"Boardroom\",\"Password\":\"air-s3cret\"}]}",
     "com.apple.airplay|", "air-s3cret",
     "{\"AllowList\":[{\"DeviceID\":\"not-a-mac\"}]}", "settings.AllowList[0].DeviceID"},
    {"app_inventory", "{\"interval_hours\":12,\"ManagedAppsOnly\":false}",
     "|InstalledApplicationList", NULL, "{\"interval_hours\":500}", "settings.interval_hours"},
    {"app_uninstall", "{\"Identifier\":\"com.example.app\"}", "|RemoveApplication", NULL,
     "{\"Identifier\":7}", "settings.Identifier"},
    {"caldav",
     "{\"CalDAVHostName\":\"cal.example.com\",\"CalDAVUsername\":\"ann\","
     "\"CalDAVPassword\":\"cal-s3cret\",\"CalDAVPort\":443,\"CalDAVUseSSL\":true}",
     "com.apple.caldav.account|", "cal-s3cret", "{\"CalDAVUsername\":\"ann\"}",
     "settings.CalDAVHostName"},
    {"carddav", "{\"CardDAVHostName\":\"dav.example.com\",\"CardDAVPassword\":\"card-s3cret\"}",
     "com.apple.carddav.account|", "card-s3cret",
     "{\"CardDAVHostName\":\"x\",\"CardDAVPort\":\"443\"}", "settings.CardDAVPort"},
    {"credentials",
     "{\"PayloadType\":\"com.apple.security.pkcs12\",\"PayloadContent\":\"@P12@\","
     "\"Password\":\"p12-s3cret\",\"PayloadCertificateFileName\":\"client.p12\"}",
     "com.apple.security.pkcs12|", "p12-s3cret",
     "{\"PayloadType\":\"com.apple.security.root\",\"PayloadContent\":\"@CERT@\","
     "\"PayloadUUID\":\"x\"}", "settings.PayloadUUID"},
    {"device_name", "{\"DeviceName\":\"Mac-{serial}-{user}\"}", "|Settings", NULL,
     "{\"DeviceName\":\"Mac-{serail}\"}", "{serail}"},
    {"exchange",
     "{\"EmailAddress\":\"ann@example.com\",\"Host\":\"ews.example.com\",\"SSL\":true,"
     "\"UserName\":\"ann\",\"Password\":\"ews-s3cret\"}",
     "com.apple.ews.account|", "ews-s3cret",
     "{\"PayloadType\":\"com.apple.eas.account\",\"Host\":\"x\"}", "settings.PayloadType"},
    {"filevault", "{\"Enable\":\"On\",\"Defer\":true,\"ShowRecoveryKey\":false,"
                  "\"DeferForceAtUserLoginMaxBypassAttempts\":-1}",
     "com.apple.MCX.FileVault2,com.apple.security.pkcs1,"
     "com.apple.security.FDERecoveryKeyEscrow|", NULL,
     "{\"Enable\":\"On\",\"Defer\":true,\"DeferForceAtUserLoginMaxBypassAttempts\":10000}",
     "settings.DeferForceAtUserLoginMaxBypassAttempts"},
    {"firewall",
     "{\"EnableFirewall\":true,\"EnableStealthMode\":true,\"Applications\":"
     "[{\"BundleID\":\"com.example.a\",\"Allowed\":true}]}",
     "com.apple.security.firewall|", NULL,
     "{\"EnableFirewall\":true,\"Applications\":[{\"BundleID\":\"a\",\"Allowed\":true},"
     "{\"BundleID\":3,\"Allowed\":true}]}", "settings.Applications[1].BundleID: expected a string"},
    {"font", "{\"Name\":\"Example Sans\",\"Font\":\"@FONT@\"}", "com.apple.font|", NULL,
     "{\"Font\":\"@PNG@\"}", "settings.Font"},
    {"import_profile", "{\"mobileconfig\":\"@SCFG@\"}", "com.apple.security.firewall|", "@SCFG@",
     "{\"mobileconfig\":\"@CFG@\",\"extra\":1}", "settings.extra"},
    {"ldap",
     "{\"LDAPAccountHostName\":\"ldap.example.com\",\"LDAPAccountPassword\":\"ldap-s3cret\","
     "\"LDAPSearchSettings\":[{\"LDAPSearchSettingSearchBase\":\"dc=example,dc=com\","
     "\"LDAPSearchSettingScope\":\"LDAPSearchSettingScopeSubtree\"}]}",
     "com.apple.ldap.account|", "ldap-s3cret",
     "{\"LDAPAccountHostName\":\"x\",\"LDAPSearchSettings\":[{\"LDAPSearchSettingSearchBase\":"
     "\"dc=x\",\"LDAPSearchSettingScope\":\"deep\"}]}",
     "settings.LDAPSearchSettings[0].LDAPSearchSettingScope"},
    {"mail",
     "{\"EmailAccountType\":\"EmailTypeIMAP\",\"IncomingMailServerAuthentication\":"
     "\"EmailAuthPassword\",\"IncomingMailServerHostName\":\"imap.example.com\","
     "\"IncomingPassword\":\"in-s3cret\",\"OutgoingMailServerAuthentication\":"
     "\"EmailAuthPassword\",\"OutgoingMailServerHostName\":\"smtp.example.com\","
     "\"OutgoingMailServerPortNumber\":587}",
     "com.apple.mail.managed|", "in-s3cret",
     "{\"EmailAccountType\":\"EmailTypeMAPI\"}", "settings.EmailAccountType"},
    {"network",
     "{\"PayloadType\":\"com.apple.wifi.managed\",\"SSID_STR\":\"Office\","
     "\"EncryptionType\":\"WPA2\",\"Password\":\"wifi-s3cret\",\"AutoJoin\":true}",
     "com.apple.wifi.managed|", "wifi-s3cret",
     "{\"PayloadType\":\"com.apple.wifi.managed\",\"SSID_STR\":\"x\",\"EncryptionType\":"
     "\"WEP2\"}", "settings.EncryptionType"},
    {"os_update",
     "{\"SoftwareUpdate\":{\"AutomaticCheckEnabled\":true,\"AutomaticDownload\":true},"
     "\"ScheduleOSUpdate\":{\"InstallAction\":\"InstallASAP\",\"ProductVersion\":\"15.1\"},"
     "\"scan\":true}",
     "com.apple.SoftwareUpdate|ScheduleOSUpdateScan,AvailableOSUpdates,ScheduleOSUpdate,"
     "OSUpdateStatus", NULL,
     "{\"ScheduleOSUpdate\":{\"InstallAction\":\"Now\"}}",
     "settings.ScheduleOSUpdate.InstallAction"},
    {"passcode", "{\"minLength\":12,\"requireAlphanumeric\":true,\"maxPINAgeInDays\":90}",
     "com.apple.mobiledevice.passwordpolicy|", NULL, "{\"minLength\":true}",
     "settings.minLength"},
    {"profile_removal", "{\"Identifier\":\"com.example.old\"}", "|RemoveProfile", NULL,
     "{}", "settings.Identifier"},
    {"restrictions",
     "{\"applicationaccess\":{\"allowCamera\":false},\"systempreferences\":"
     "{\"DisabledPreferencePanes\":[\"com.apple.preferences.sharing\"]}}",
     "com.apple.applicationaccess,com.apple.systempreferences|", NULL,
     "{\"applicationaccess\":{\"allowCamera\":\"no\"}}",
     "settings.applicationaccess.allowCamera"},
    {"scep",
     "{\"URL\":\"https://scep.example.com/scep\",\"Name\":\"ca\",\"Challenge\":\"scep-s3cret\","
     "\"Subject\":[[[\"CN\",\"mac\"]]],\"Keysize\":2048,\"Key Type\":\"RSA\","
     "\"Key Usage\":5}",
     "com.apple.security.scep|", "scep-s3cret", "{\"URL\":\"https://x\",\"Keysize\":1000}",
     "settings.Keysize"},
    {"vpn",
     "{\"UserDefinedName\":\"Office VPN\",\"VPNType\":\"IKEv2\",\"IKEv2\":{\"RemoteAddress\":"
     "\"vpn.example.com\",\"RemoteIdentifier\":\"vpn.example.com\",\"LocalIdentifier\":"
     "\"mac\",\"AuthenticationMethod\":\"SharedSecret\",\"SharedSecret\":\"vpn-s3cret\"}}",
     "com.apple.vpn.managed|", "vpn-s3cret", "{\"VPNType\":\"Carrier\"}", "settings.VPNType"},
    {"webclip", "{\"URL\":\"https://intranet.example.com\",\"Label\":\"Intranet\",\"Icon\":"
                "\"@PNG@\"}",
     "com.apple.webClip.managed|", NULL, "{\"URL\":\"https://x\",\"Label\":\"x\",\"Icon\":"
                                         "\"!!notbase64\"}", "settings.Icon"},
};

const size_t policy_cases_count = sizeof(policy_cases) / sizeof(policy_cases[0]);
