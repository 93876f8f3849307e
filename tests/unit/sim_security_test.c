/*
 * The simulated Mac's security actions (bench/sim_security.c), driven without a server:
 * command plists go through sim_handle_command and the responses are read back as plists.
 * - DeviceLock: no PIN (CommandFormatError), a malformed PIN (Error), a lock with a message;
 *   a locked Mac opens no connection (sim_connect_idle, sim_answer: -1); sim_mac_unlock with
 *   the wrong and the right PIN;
 * - EraseDevice: an Intel Mac needs a PIN, Apple Silicon does not; the wipe (profiles,
 *   FileVault, managed apps, names) and re-enrollment with sim_mac_new_identity;
 * - RemoveProfile of the enrollment profile: acknowledged, unenrolled, MDM's profiles gone
 *   (the CheckOut that sim_answer sends is I/O: the integration tests cover it);
 * - FileVault from a profile (FileVault2 + pkcs1 + FDERecoveryKeyEscrow): SecurityInfo
 *   without and with it, FDE_PersonalRecoveryKeyCMS opened with openssl; a broken escrow
 *   reference and an EC escrow certificate fail the install;
 * - RotateFileVaultKey: FileVault off, wrong password, institutional, the right password
 *   (EncryptedNewRecoveryKey opened with openssl; the escrow follows the new key).
 * Certificates: an instance CA (for the Macs' identities), RSA escrow and reply certificates
 * and an EC one, made with openssl.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <plist/plist.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/sim.h"
#include "check.h"
#include "core/x509.h"

static const char *dir;
static sim_env_t env;
static unsigned seq; /* CommandUUIDs */
static int listener = -1; /* env.port: a socket nobody should connect to */

/* ---- files and plists ---- */

/* The whole file at path (malloc'ed, NUL-terminated) or NULL. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *b = malloc(1 << 16);
    size_t n = b ? fread(b, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (b)
        b[n] = '\0';
    if (len)
        *len = n;
    return b;
}

static void to_xml(plist_t p, mdm_buf_t *out)
{
    char *xml = NULL;
    uint32_t len = 0;
    plist_to_xml(p, &xml, &len);
    if (!xml || mdm_buf_append(out, xml, len) != 0)
        exit(99);
    free(xml);
}

/* Runs one command (its Command dict, taken) through m; returns the response plist. */
static plist_t run(sim_mac_t *m, const char *type, plist_t command)
{
    if (!command)
        command = plist_new_dict();
    plist_dict_set_item(command, "RequestType", plist_new_string(type));
    char uuid[64];
    snprintf(uuid, sizeof(uuid), "0000%04u-AAAA-4BBB-8CCC-EEEEEEEEEEEE", ++seq);
    plist_t root = plist_new_dict();
    plist_dict_set_item(root, "CommandUUID", plist_new_string(uuid));
    plist_dict_set_item(root, "Command", command);
    mdm_buf_t body, out;
    mdm_buf_init(&body, 0);
    mdm_buf_init(&out, 0);
    to_xml(root, &body);
    plist_free(root);
    sim_cmd_t cmd;
    CHECK_EQ_INT(sim_handle_command(m, mdm_buf_head(&body), body.len, &cmd, &out), 0);
    CHECK_STR(cmd.uuid, uuid);
    plist_t resp = NULL;
    plist_from_memory((const char *)mdm_buf_head(&out), (uint32_t)out.len, &resp);
    CHECK(resp != NULL);
    mdm_buf_dispose(&body);
    mdm_buf_dispose(&out);
    return resp ? resp : plist_new_dict();
}

static void set_str(plist_t d, const char *k, const char *v)
{
    plist_dict_set_item(d, k, plist_new_string(v));
}

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

/* 1 true, 0 false, -1 absent. */
static int bool_of(plist_t d, const char *key)
{
    uint8_t v = 0;
    plist_t n = d ? plist_dict_get_item(d, key) : NULL;
    if (!n || plist_get_node_type(n) != PLIST_BOOLEAN)
        return -1;
    plist_get_bool_val(n, &v);
    return v != 0;
}

/* Checks Status and the first ErrorChain entry's code and domain. */
static void expect_error(plist_t resp, const char *status, uint64_t code, const char *domain)
{
    CHECK_STR(str(resp, "Status"), status);
    plist_t chain = plist_dict_get_item(resp, "ErrorChain");
    plist_t e = chain && plist_get_node_type(chain) == PLIST_ARRAY
                    ? plist_array_get_item(chain, 0)
                    : NULL;
    uint64_t c = 0;
    plist_t cn = e ? plist_dict_get_item(e, "ErrorCode") : NULL;
    if (cn)
        plist_get_uint_val(cn, &c);
    CHECK_EQ_INT(c, code);
    CHECK_STR(str(e, "ErrorDomain"), domain);
    CHECK(str(e, "USEnglishDescription")[0] != '\0');
}

static void expect_status(sim_mac_t *m, const char *type, plist_t command, const char *status)
{
    plist_t r = run(m, type, command);
    CHECK_STR(str(r, "Status"), status);
    plist_free(r);
}

/* Opens a CMS EnvelopedData (the data node) with <name>.key/.crt via openssl; "" on failure. */
static const char *open_cms(plist_t data, const char *name)
{
    static char plain[128];
    plain[0] = '\0';
    uint64_t len = 0;
    const char *der = data && plist_get_node_type(data) == PLIST_DATA
                          ? plist_get_data_ptr(data, &len)
                          : NULL;
    FILE *f = der ? fopen(check_path(dir, "cms.der"), "wb") : NULL;
    if (!f)
        return plain;
    fwrite(der, 1, (size_t)len, f);
    fclose(f);
    unlink(check_path(dir, "cms.txt"));
    if (check_sh("openssl cms -decrypt -inform DER -in '%s' -inkey '%s/%s.key' "
                 "-recip '%s/%s.crt' -out '%s'",
                 check_path(dir, "cms.der"), dir, name, dir, name,
                 check_path(dir, "cms.txt")) != 0)
        return plain;
    size_t n = 0;
    char *t = slurp(check_path(dir, "cms.txt"), &n);
    if (t && n < sizeof(plain))
        memcpy(plain, t, n + 1);
    free(t);
    return plain;
}

/* The DER of <name>.crt as a plist data node. */
static plist_t cert_data(const char *name)
{
    char file[64];
    snprintf(file, sizeof(file), "%s.der", name);
    size_t n = 0;
    char *der = slurp(check_path(dir, file), &n);
    if (!der)
        exit(99);
    plist_t d = plist_new_data(der, n);
    free(der);
    return d;
}

/* A payload dict with type, identifier and UUID. */
static plist_t payload(const char *type, const char *id, const char *uuid)
{
    plist_t d = plist_new_dict();
    set_str(d, "PayloadType", type);
    set_str(d, "PayloadIdentifier", id);
    set_str(d, "PayloadUUID", uuid);
    plist_dict_set_item(d, "PayloadVersion", plist_new_uint(1));
    return d;
}

/* A FileVault profile as mdmd's filevault policy makes it: FileVault2 (Enable On), the escrow
 * certificate <cert>.der as pkcs1, and an escrow payload naming ref. InstallProfile command. */
static plist_t filevault_profile(const char *id, const char *cert, const char *ref)
{
    plist_t top = payload("Configuration", id, "FV-TOP");
    plist_t content = plist_new_array();
    plist_t fv = payload("com.apple.MCX.FileVault2", "fv.fv2", "FV-FV2");
    set_str(fv, "Enable", "On");
    plist_dict_set_item(fv, "Defer", plist_new_bool(1));
    plist_array_append_item(content, fv);
    plist_t c = payload("com.apple.security.pkcs1", "fv.cert", "FV-CERT");
    plist_dict_set_item(c, "PayloadContent", cert_data(cert));
    plist_array_append_item(content, c);
    plist_t e = payload("com.apple.security.FDERecoveryKeyEscrow", "fv.escrow", "FV-ESC");
    set_str(e, "Location", "mdmd test");
    set_str(e, "EncryptCertPayloadUUID", ref);
    plist_array_append_item(content, e);
    plist_dict_set_item(top, "PayloadContent", content);
    mdm_buf_t xml;
    mdm_buf_init(&xml, 0);
    to_xml(top, &xml);
    plist_free(top);
    plist_t cmd = plist_new_dict();
    plist_dict_set_item(cmd, "Payload", plist_new_data((const char *)mdm_buf_head(&xml), xml.len));
    mdm_buf_dispose(&xml);
    return cmd;
}

/* A plain profile with one restrictions payload (InstallProfile command). */
static plist_t plain_profile(const char *id)
{
    plist_t top = payload("Configuration", id, "PLAIN-TOP");
    plist_t content = plist_new_array();
    plist_array_append_item(content, payload("com.apple.applicationaccess", "p.r", "PLAIN-R"));
    plist_dict_set_item(top, "PayloadContent", content);
    mdm_buf_t xml;
    mdm_buf_init(&xml, 0);
    to_xml(top, &xml);
    plist_free(top);
    plist_t cmd = plist_new_dict();
    plist_dict_set_item(cmd, "Payload", plist_new_data((const char *)mdm_buf_head(&xml), xml.len));
    mdm_buf_dispose(&xml);
    return cmd;
}

static plist_t security_info(sim_mac_t *m)
{
    plist_t r = run(m, "SecurityInfo", NULL);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    plist_t s = plist_dict_get_item(r, "SecurityInfo");
    plist_t copy = s ? plist_copy(s) : plist_new_dict();
    plist_free(r);
    return copy;
}

/* Whether a PRK looks like macOS's: 6 groups of 4 of A-Z 0-9. */
static bool prk_shaped(const char *p)
{
    if (strlen(p) != 29)
        return false;
    for (int i = 0; i < 29; i++) {
        bool dash = i % 5 == 4;
        bool ok = dash ? p[i] == '-' : (p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= '0' && p[i] <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* Whether someone connected to the listener (the Mac must not have). */
static bool connection_pending(void)
{
    struct pollfd p = {.fd = listener, .events = POLLIN};
    return poll(&p, 1, 50) > 0;
}

static void new_mac(sim_mac_t *m, unsigned s)
{
    CHECK_EQ_INT(sim_mac_init(m, &env, NULL, s), 0);
}

/* ---- tests ---- */

static void test_lock(void)
{
    sim_mac_t m;
    new_mac(&m, 0);
    plist_t r = run(&m, "DeviceLock", NULL);
    expect_error(r, "CommandFormatError", 12001, "MCMDMErrorDomain");
    plist_free(r);
    plist_t c = plist_new_dict();
    set_str(c, "PIN", "12ab56");
    r = run(&m, "DeviceLock", c);
    expect_error(r, "Error", 12080, "MCMDMErrorDomain");
    plist_free(r);
    c = plist_new_dict();
    plist_dict_set_item(c, "PIN", plist_new_uint(123456));
    r = run(&m, "DeviceLock", c);
    expect_error(r, "CommandFormatError", 12001, "MCMDMErrorDomain");
    plist_free(r);
    CHECK(!m.locked);

    c = plist_new_dict();
    set_str(c, "PIN", "123456");
    set_str(c, "Message", "Please return this Mac");
    set_str(c, "PhoneNumber", "+49 30 1234567");
    r = run(&m, "DeviceLock", c);
    CHECK_STR(str(r, "Status"), "Acknowledged");
    CHECK_STR(str(r, "MessageResult"), "Success");
    plist_free(r);
    CHECK(m.locked);
    CHECK_STR(m.lock_pin, "123456");
    CHECK_STR(m.lock_message, "Please return this Mac");

    /* at the firmware PIN screen: no MDM, no connection */
    sim_cmd_t cmd, next;
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), -1);
    CHECK_STR(cmd.uuid, "");
    memset(&cmd, 0, sizeof(cmd));
    snprintf(cmd.uuid, sizeof(cmd.uuid), "1");
    cmd.type = SIM_REQ_PROFILE_LIST;
    CHECK_EQ_INT(sim_answer(&m, &cmd, &next), -1);
    CHECK_EQ_INT(sim_respond(&m, &cmd, SIM_ACKNOWLEDGED, &next), -1);
    CHECK(!connection_pending());
    CHECK_EQ_INT(m.connects, 0);

    CHECK_EQ_INT(sim_mac_unlock(&m, "654321"), -EACCES);
    CHECK(m.locked);
    CHECK_EQ_INT(sim_mac_unlock(&m, "123456"), 0);
    CHECK(!m.locked);
    CHECK_EQ_INT(sim_mac_unlock(&m, "000000"), 0); /* not locked */
    sim_mac_dispose(&m);
}

static void test_erase(void)
{
    sim_mac_t intel, as;
    new_mac(&intel, 1); /* MacBookPro16,1 */
    new_mac(&as, 0);    /* Mac14,2 */
    CHECK(!intel.apple_silicon && as.apple_silicon);
    expect_status(&intel, "InstallProfile", plain_profile("com.example.r"), "Acknowledged");
    expect_status(&intel, "InstallProfile", filevault_profile("com.example.fv", "escrow",
                                                                 "FV-CERT"),
                  "Acknowledged");
    plist_t c = plist_new_dict();
    set_str(c, "DeviceName", "Finance Mac");
    plist_dict_set_item(c, "Item", plist_new_string("DeviceName"));
    plist_t settings = plist_new_array();
    plist_array_append_item(settings, c);
    c = plist_new_dict();
    plist_dict_set_item(c, "Settings", settings);
    expect_status(&intel, "Settings", c, "Acknowledged");
    CHECK_EQ_INT(sim_mac_profile_count(&intel), 2);
    CHECK(sim_mac_filevault_prk(&intel)[0] != '\0');

    /* an Intel Mac needs the PIN; a bad ObliterationBehavior is a format error */
    plist_t r = run(&intel, "EraseDevice", NULL);
    expect_error(r, "CommandFormatError", 12001, "MCMDMErrorDomain");
    plist_free(r);
    c = plist_new_dict();
    set_str(c, "PIN", "123456");
    set_str(c, "ObliterationBehavior", "Sometimes");
    r = run(&intel, "EraseDevice", c);
    expect_error(r, "CommandFormatError", 12001, "MCMDMErrorDomain");
    plist_free(r);
    CHECK(!intel.erased);

    char crt[640];
    snprintf(crt, sizeof(crt), "%s/%s.crt", env.work_dir, intel.name);
    char *old_cert = slurp(crt, NULL);
    c = plist_new_dict();
    set_str(c, "PIN", "246810");
    set_str(c, "ObliterationBehavior", "DoNotObliterate");
    expect_status(&intel, "EraseDevice", c, "Acknowledged");
    CHECK(intel.erased);
    CHECK_STR(intel.erase_pin, "246810");
    CHECK_EQ_INT(sim_mac_profile_count(&intel), 0);
    CHECK_STR(sim_mac_filevault_prk(&intel), "");
    CHECK_EQ_INT(sim_mac_app_count(&intel), 1); /* Safari: Apple's own */
    CHECK(sim_mac_find_app(&intel, "com.apple.Safari") != NULL);
    CHECK(sim_mac_find_app(&intel, "us.zoom.xos") == NULL);
    CHECK_STR(intel.device_name, "");
    sim_cmd_t cmd;
    CHECK_EQ_INT(sim_connect_idle(&intel, &cmd), -1);
    CHECK(!connection_pending());
    /* re-enrollment: a new identity */
    CHECK_EQ_INT(sim_mac_new_identity(&intel), 0);
    CHECK(!intel.erased);
    char *new_cert = slurp(crt, NULL);
    CHECK(old_cert && new_cert && strcmp(old_cert, new_cert) != 0);
    free(old_cert);
    free(new_cert);

    /* Apple Silicon: no PIN needed, and a malformed one is ignored */
    expect_status(&as, "EraseDevice", NULL, "Acknowledged");
    CHECK(as.erased);
    CHECK_STR(as.erase_pin, "");
    CHECK_EQ_INT(sim_mac_new_identity(&as), 0);
    c = plist_new_dict();
    set_str(c, "PIN", "12");
    expect_status(&as, "EraseDevice", c, "Acknowledged");
    sim_mac_dispose(&intel);
    sim_mac_dispose(&as);
}

static void test_unenroll(void)
{
    sim_mac_t m;
    new_mac(&m, 2);
    expect_status(&m, "InstallProfile", plain_profile("com.example.mdm"), "Acknowledged");
    mdm_buf_t xml;
    mdm_buf_init(&xml, 0);
    plist_t c = plain_profile("com.example.byhand");
    uint64_t n = 0;
    const char *p = plist_get_data_ptr(plist_dict_get_item(c, "Payload"), &n);
    CHECK_EQ_INT(sim_mac_install_profile_locally(&m, p, (size_t)n), 0);
    plist_free(c);
    mdm_buf_dispose(&xml);
    CHECK_EQ_INT(sim_mac_profile_count(&m), 2);

    c = plist_new_dict();
    set_str(c, "Identifier", "mdmd.zdm.enroll");
    expect_status(&m, "RemoveProfile", c, "Acknowledged");
    CHECK(m.unenrolled);
    CHECK_EQ_INT(m.checkout_status, 0); /* sim_answer sends it; not without I/O */
    CHECK(sim_mac_find_profile(&m, "com.example.mdm") == NULL);
    CHECK(sim_mac_find_profile(&m, "com.example.byhand") != NULL);
    const sim_app_t *zoom = sim_mac_find_app(&m, "us.zoom.xos");
    CHECK(zoom && !zoom->managed);
    plist_t r = run(&m, "ProfileList", NULL);
    plist_t list = plist_dict_get_item(r, "ProfileList");
    CHECK_EQ_INT(list ? plist_array_get_size(list) : 99, 1); /* only the one by hand */
    plist_free(r);
    sim_cmd_t cmd;
    CHECK_EQ_INT(sim_connect_idle(&m, &cmd), -1);
    CHECK(!connection_pending());
    CHECK_EQ_INT(m.connects, 0);
    sim_mac_dispose(&m);
}

static void test_filevault(void)
{
    sim_mac_t m;
    new_mac(&m, 3);
    plist_t s = security_info(&m);
    CHECK_EQ_INT(bool_of(s, "FDE_Enabled"), 0);
    CHECK_EQ_INT(bool_of(s, "FDE_HasPersonalRecoveryKey"), 0);
    CHECK(plist_dict_get_item(s, "FDE_PersonalRecoveryKeyCMS") == NULL);
    CHECK(plist_dict_get_item(s, "FDE_PersonalRecoveryKeyDeviceKey") == NULL);
    plist_free(s);
    CHECK_STR(sim_mac_filevault_prk(&m), "");

    /* the escrow payload names a payload that is not there, or an EC certificate */
    plist_t r = run(&m, "InstallProfile", filevault_profile("com.example.fv", "escrow", "NOPE"));
    expect_error(r, "Error", 4001, "MCInstallationErrorDomain");
    plist_t e = plist_array_get_item(plist_dict_get_item(r, "ErrorChain"), 1);
    CHECK_STR(str(e, "ErrorDomain"), "MCPayloadErrorDomain");
    plist_free(r);
    r = run(&m, "InstallProfile", filevault_profile("com.example.fv", "ec", "FV-CERT"));
    expect_error(r, "Error", 4001, "MCInstallationErrorDomain");
    plist_free(r);
    CHECK_EQ_INT(sim_mac_profile_count(&m), 0);
    CHECK_STR(sim_mac_filevault_prk(&m), "");

    expect_status(&m, "InstallProfile", filevault_profile("com.example.fv", "escrow", "FV-CERT"),
                  "Acknowledged");
    char prk[32];
    snprintf(prk, sizeof(prk), "%s", sim_mac_filevault_prk(&m));
    CHECK(prk_shaped(prk));
    s = security_info(&m);
    CHECK_EQ_INT(bool_of(s, "FDE_Enabled"), 1);
    CHECK_EQ_INT(bool_of(s, "FDE_HasPersonalRecoveryKey"), 1);
    CHECK_EQ_INT(bool_of(s, "FDE_HasInstitutionalRecoveryKey"), 0);
    CHECK_STR(str(s, "FDE_PersonalRecoveryKeyDeviceKey"), m.serial);
    CHECK_STR(open_cms(plist_dict_get_item(s, "FDE_PersonalRecoveryKeyCMS"), "escrow"), prk);
    plist_free(s);

    /* installed again: the key stays; removed: FileVault stays on */
    expect_status(&m, "InstallProfile", filevault_profile("com.example.fv", "escrow", "FV-CERT"),
                  "Acknowledged");
    CHECK_STR(sim_mac_filevault_prk(&m), prk);
    plist_t c = plist_new_dict();
    set_str(c, "Identifier", "com.example.fv");
    expect_status(&m, "RemoveProfile", c, "Acknowledged");
    CHECK_STR(sim_mac_filevault_prk(&m), prk);
    sim_mac_dispose(&m);
}

/* A RotateFileVaultKey command. */
static plist_t rotate_cmd(const char *type, const char *password, const char *reply)
{
    plist_t c = plist_new_dict();
    if (type)
        set_str(c, "KeyType", type);
    plist_t u = plist_new_dict();
    if (password)
        set_str(u, "Password", password);
    plist_dict_set_item(c, "FileVaultUnlock", u);
    if (reply)
        plist_dict_set_item(c, "ReplyEncryptionCertificate", cert_data(reply));
    return c;
}

static void test_rotate(void)
{
    sim_mac_t m;
    new_mac(&m, 4);
    plist_t r = run(&m, "RotateFileVaultKey", rotate_cmd("personal", "X", "reply"));
    expect_error(r, "Error", 12075, "MCMDMErrorDomain"); /* FileVault is off */
    plist_free(r);
    expect_status(&m, "InstallProfile", filevault_profile("com.example.fv", "escrow", "FV-CERT"),
                  "Acknowledged");
    char old[32];
    snprintf(old, sizeof(old), "%s", sim_mac_filevault_prk(&m));

    r = run(&m, "RotateFileVaultKey", rotate_cmd(NULL, old, "reply"));
    expect_error(r, "CommandFormatError", 12001, "MCMDMErrorDomain");
    plist_free(r);
    r = run(&m, "RotateFileVaultKey", rotate_cmd("institutional", old, "reply"));
    expect_error(r, "Error", 12077, "MCMDMErrorDomain");
    plist_free(r);
    r = run(&m, "RotateFileVaultKey", rotate_cmd("personal", "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF",
                                                 "reply"));
    expect_error(r, "Error", 12076, "MCMDMErrorDomain");
    CHECK(plist_dict_get_item(r, "RotateResult") == NULL);
    plist_free(r);
    CHECK_STR(sim_mac_filevault_prk(&m), old);

    r = run(&m, "RotateFileVaultKey", rotate_cmd("personal", old, "reply"));
    CHECK_STR(str(r, "Status"), "Acknowledged");
    const char *now = sim_mac_filevault_prk(&m);
    CHECK(prk_shaped(now) && strcmp(now, old) != 0);
    plist_t rr = plist_dict_get_item(r, "RotateResult");
    CHECK_STR(open_cms(rr ? plist_dict_get_item(rr, "EncryptedNewRecoveryKey") : NULL, "reply"),
              now);
    plist_free(r);
    /* the escrow follows the new key; the old one no longer unlocks */
    plist_t s = security_info(&m);
    CHECK_STR(open_cms(plist_dict_get_item(s, "FDE_PersonalRecoveryKeyCMS"), "escrow"), now);
    plist_free(s);
    r = run(&m, "RotateFileVaultKey", rotate_cmd("personal", old, "reply"));
    expect_error(r, "Error", 12076, "MCMDMErrorDomain");
    plist_free(r);
    /* without a reply certificate: rotated, nothing sent back */
    char second[32];
    snprintf(second, sizeof(second), "%s", sim_mac_filevault_prk(&m));
    r = run(&m, "RotateFileVaultKey", rotate_cmd("personal", second, NULL));
    CHECK_STR(str(r, "Status"), "Acknowledged");
    CHECK(plist_dict_get_item(r, "RotateResult") == NULL);
    CHECK(strcmp(sim_mac_filevault_prk(&m), second) != 0);
    plist_free(r);
    sim_mac_dispose(&m);
}

/* ---- set-up ---- */

/* The instance CA (in inst/ca, where sim_env_init looks), RSA escrow and reply certificates
 * and an EC one (<name>.key/.crt/.der in dir). */
static int make_certs(const char *inst)
{
    mdm_x509_spec_t ca = {.common_name = "sim-ca", .validity_days = 30, .is_ca = true,
                          .key_usage = MDM_X509_KU_KEY_CERT_SIGN | MDM_X509_KU_CRL_SIGN};
    char key[600], crt[600];
    snprintf(key, sizeof(key), "%s/ca/ca.key", inst);
    snprintf(crt, sizeof(crt), "%s/ca/ca.crt", inst);
    if (mdm_x509_key_generate(key, MDM_X509_KEY_EC_P256) != 0 ||
        mdm_x509_make_self_signed(key, crt, &ca) != 0)
        return -1;
    return check_sh("cd '%s' && for n in escrow reply; do "
                    "openssl req -x509 -newkey rsa:2048 -nodes -keyout $n.key "
                    "-out $n.crt -subj /CN=$n -days 30 && "
                    "openssl x509 -in $n.crt -outform DER -out $n.der || exit 1; done && "
                    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-keyout ec.key -out ec.crt -subj /CN=ec -days 30 && "
                    "openssl x509 -in ec.crt -outform DER -out ec.der",
                    dir);
}

static int listen_somewhere(void)
{
    listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (listener < 0 || bind(listener, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(listener, 4) != 0 || getsockname(listener, (struct sockaddr *)&a, &len) != 0)
        return -1;
    return ntohs(a.sin_port);
}

int main(void)
{
    dir = check_tmpdir("sim_security");
    char inst[512];
    snprintf(inst, sizeof(inst), "%s", check_path(dir, "inst"));
    if (mkdir(inst, 0700) != 0 || mkdir(check_path(inst, "ca"), 0700) != 0 ||
        make_certs(inst) != 0)
        return 99;
    int port = listen_somewhere();
    if (port <= 0)
        return 99;
    CHECK_EQ_INT(sim_env_init(&env, inst, check_path(dir, "work"), port), 0);
    env.timeout_ms = 500;

    test_lock();
    test_erase();
    test_unenroll();
    test_filevault();
    test_rotate();

    close(listener);
    return check_finish("sim_security");
}
