/*
 * sim: the simulated Mac. See sim.h.
 *
 * Bodies are built as libplist trees and written as XML, as macOS sends them; replies are
 * read with libplist too. The blocking client underneath is a plain socket driven through
 * core/tls (sans-I/O): poll, recv, mdm_tls_feed, mdm_tls_advance, send cipher_out; with
 * plain_http the io_* helpers skip TLS and keep received bytes in m->plain_in. Every wait is
 * bounded by env->timeout_ms.
 */
#include "bench/sim.h"
#include "bench/sim_private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <plist/plist.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cms.h"
#include "core/crypto.h"
#include "core/file.h"
#include "core/x509.h"

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sim_env_init(sim_env_t *env, const char *instance_dir, const char *work_dir, int port)
{
    memset(env, 0, sizeof(*env));
    snprintf(env->ca_cert, sizeof(env->ca_cert), "%s/ca/ca.crt", instance_dir);
    snprintf(env->ca_key, sizeof(env->ca_key), "%s/ca/ca.key", instance_dir);
    snprintf(env->work_dir, sizeof(env->work_dir), "%s", work_dir);
    snprintf(env->instance, sizeof(env->instance), "zdm");
    snprintf(env->topic, sizeof(env->topic), "com.apple.mgmt.External.mdmd-sim");
    snprintf(env->host, sizeof(env->host), "127.0.0.1");
    env->port = port;
    env->timeout_ms = 10000;
    if (mkdir(work_dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* ---- identity ---- */

static void random_hex(char *out, size_t nbytes)
{
    uint8_t b[32];
    if (nbytes > sizeof(b))
        nbytes = sizeof(b);
    if (mdm_random_bytes(b, nbytes) != 0)
        for (size_t i = 0; i < nbytes; i++)
            b[i] = (uint8_t)rand();
    for (size_t i = 0; i < nbytes; i++)
        sprintf(out + 2 * i, "%02X", b[i]);
}

/* An uppercase UUID string (36 characters and a NUL). */
static void random_uuid(char out[37])
{
    char h[33];
    random_hex(h, 16);
    snprintf(out, 37, "%.8s-%.4s-4%.3s-A%.3s-%.12s", h, h + 8, h + 13, h + 17, h + 20);
}

static void key_path(const sim_mac_t *m, char *out, size_t len)
{
    snprintf(out, len, "%s/%s.key", m->env->work_dir, m->name);
}

static void cert_path(const sim_mac_t *m, char *out, size_t len)
{
    snprintf(out, len, "%s/%s.crt", m->env->work_dir, m->name);
}

static int issue_identity(sim_mac_t *m)
{
    char key[640], crt[640];
    key_path(m, key, sizeof(key));
    cert_path(m, crt, sizeof(crt));
    int ret = mdm_x509_key_generate(key, MDM_X509_KEY_EC_P256);
    if (ret != 0)
        return ret;
    mdm_x509_spec_t spec = {
        .common_name = m->name,
        .organization = "mdmd simulated Macs",
        .validity_days = 365,
        .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE,
        .ext_key_usage = MDM_X509_EKU_CLIENT_AUTH,
    };
    return mdm_x509_issue(m->env->ca_key, m->env->ca_cert, key, crt, &spec);
}

int sim_mac_init(sim_mac_t *m, const sim_env_t *env, const char *udid, unsigned seq)
{
    static const struct {
        const char *model, *name;
        bool silicon;
    } models[] = {
        {"Mac14,2", "MacBook Air", true},
        {"MacBookPro16,1", "MacBook Pro", false},
        {"Mac14,9", "MacBook Pro", true},
        {"iMac20,1", "iMac", false},
        {"Mac13,1", "Mac Studio", true},
    };
    static const struct {
        const char *os, *build;
    } oses[] = {{"14.4.1", "23E224"}, {"13.6.6", "22G630"}, {"14.5", "23F79"}};
    memset(m, 0, sizeof(*m));
    m->env = env;
    m->fd = -1;
    mdm_buf_init(&m->plain_in, 0);
    size_t mi = seq % (sizeof(models) / sizeof(models[0]));
    size_t oi = seq % (sizeof(oses) / sizeof(oses[0]));
    snprintf(m->model, sizeof(m->model), "%s", models[mi].model);
    snprintf(m->model_name, sizeof(m->model_name), "%s", models[mi].name);
    m->apple_silicon = models[mi].silicon;
    snprintf(m->os_version, sizeof(m->os_version), "%s", oses[oi].os);
    snprintf(m->build_version, sizeof(m->build_version), "%s", oses[oi].build);
    if (udid) {
        snprintf(m->udid, sizeof(m->udid), "%s", udid);
    } else if (m->apple_silicon) {
        char h[17];
        random_hex(h, 8);
        snprintf(m->udid, sizeof(m->udid), "0000FE00-%s", h);
    } else {
        random_uuid(m->udid);
    }
    /* Serial numbers: 10 (Apple Silicon) or 12 characters of A-Z 0-9 without O and I. */
    static const char alnum[] = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";
    uint8_t r[12];
    if (mdm_random_bytes(r, sizeof(r)) != 0)
        memset(r, (int)seq, sizeof(r));
    size_t n = m->apple_silicon ? 10 : 12;
    for (size_t i = 0; i < n; i++)
        m->serial[i] = alnum[r[i] % (sizeof(alnum) - 1)];
    m->serial[n] = '\0';
    /* The certificate is named after the UDID plus a random suffix, so two Macs that claim
     * the same UDID (spoofing tests) never share files. */
    char suffix[9];
    random_hex(suffix, 4);
    snprintf(m->name, sizeof(m->name), "%.40s-%s", m->udid, suffix);
    return issue_identity(m);
}

int sim_mac_new_identity(sim_mac_t *m)
{
    sim_mac_disconnect(m);
    m->erased = false; /* re-enrollment after an erase starts with a new identity */
    return issue_identity(m);
}

void sim_mac_disconnect(sim_mac_t *m)
{
    if (m->tls)
        mdm_tls_conn_free(m->tls);
    if (m->ctx)
        mdm_tls_ctx_free(m->ctx);
    if (m->fd >= 0)
        close(m->fd);
    m->tls = NULL;
    m->ctx = NULL;
    m->fd = -1;
    mdm_buf_dispose(&m->plain_in);
}

void sim_mac_dispose(sim_mac_t *m)
{
    sim_mac_disconnect(m);
    sim_state_free(m);
}

/* ---- plist helpers ---- */

static int emit(plist_t root, mdm_buf_t *out)
{
    char *xml = NULL;
    uint32_t len = 0;
    plist_to_xml(root, &xml, &len);
    plist_free(root);
    if (!xml)
        return -ENOMEM;
    int ret = mdm_buf_append(out, xml, len);
    plist_to_xml_free(xml);
    return ret;
}

void sim_set_str(plist_t d, const char *k, const char *v)
{
    plist_dict_set_item(d, k, plist_new_string(v));
}

void sim_set_bool(plist_t d, const char *k, bool v)
{
    plist_dict_set_item(d, k, plist_new_bool(v));
}

void sim_set_uint(plist_t d, const char *k, uint64_t v)
{
    plist_dict_set_item(d, k, plist_new_uint(v));
}

static plist_t message(const sim_mac_t *m, const char *type)
{
    plist_t d = plist_new_dict();
    sim_set_str(d, "MessageType", type);
    sim_set_str(d, "UDID", m->udid);
    return d;
}

int sim_build_checkin(const sim_mac_t *m, const char *message_type, mdm_buf_t *out)
{
    plist_t d = message(m, message_type);
    sim_set_str(d, "Topic", m->env->topic);
    return emit(d, out);
}

/* The name Settings gave the Mac, or one made of its model and serial. */
static const char *device_name(const sim_mac_t *m, char *buf, size_t len)
{
    if (m->device_name[0])
        return m->device_name;
    snprintf(buf, len, "%s %.6s", m->model_name, m->serial);
    return buf;
}

int sim_build_authenticate(const sim_mac_t *m, mdm_buf_t *out)
{
    char name[64];
    plist_t d = message(m, "Authenticate");
    sim_set_str(d, "Topic", m->env->topic);
    sim_set_str(d, "SerialNumber", m->serial);
    sim_set_str(d, "Model", m->model);
    sim_set_str(d, "ModelName", m->model_name);
    sim_set_str(d, "ProductName", m->model);
    sim_set_str(d, "OSVersion", m->os_version);
    sim_set_str(d, "BuildVersion", m->build_version);
    sim_set_str(d, "DeviceName", device_name(m, name, sizeof(name)));
    return emit(d, out);
}

int sim_build_token_update(const sim_mac_t *m, const uint8_t *unlock, size_t unlock_len,
                           mdm_buf_t *out)
{
    plist_t d = message(m, "TokenUpdate");
    sim_set_str(d, "Topic", m->env->topic);
    plist_dict_set_item(d, "Token",
                        plist_new_data((const char *)m->push_token, sizeof(m->push_token)));
    sim_set_str(d, "PushMagic", m->push_magic);
    if (unlock && unlock_len)
        plist_dict_set_item(d, "UnlockToken", plist_new_data((const char *)unlock, unlock_len));
    sim_set_bool(d, "AwaitingConfiguration", false);
    return emit(d, out);
}

int sim_build_checkout(const sim_mac_t *m, mdm_buf_t *out)
{
    return sim_build_checkin(m, "CheckOut", out);
}

int sim_build_set_bootstrap(const sim_mac_t *m, const uint8_t *token, size_t len, mdm_buf_t *out)
{
    plist_t d = message(m, "SetBootstrapToken");
    if (token && len)
        plist_dict_set_item(d, "BootstrapToken", plist_new_data((const char *)token, len));
    sim_set_bool(d, "AwaitingConfiguration", false);
    return emit(d, out);
}

int sim_build_get_bootstrap(const sim_mac_t *m, mdm_buf_t *out)
{
    plist_t d = message(m, "GetBootstrapToken");
    sim_set_bool(d, "AwaitingConfiguration", false);
    return emit(d, out);
}

int sim_build_idle(const sim_mac_t *m, mdm_buf_t *out)
{
    plist_t d = plist_new_dict();
    sim_set_str(d, "Status", "Idle");
    sim_set_str(d, "UDID", m->udid);
    return emit(d, out);
}

/* ---- command responses ---- */

/* DeviceInformation queries the simulator answers; the index is the bit in query_mask. */
static const char *const device_queries[] = {
    "UDID",          "DeviceName",   "OSVersion",
    "BuildVersion",  "ModelName",    "Model",
    "ProductName",   "SerialNumber", "DeviceCapacity",
    "AvailableDeviceCapacity",       "IsSupervised", "IsAppleSilicon",
    "IsActivationLockEnabled",       "SystemIntegrityProtectionEnabled",
    "LocalHostName", "HostName",     "WiFiMAC",
    "BluetoothMAC",  "EthernetMAC",  "AwaitingConfiguration",
    "IsMultiUser",   "SupportsLOMDevice", "HasBattery",
    "TimeZone",      "MDMOptions",   "OSUpdateSettings",
};
#define N_DEVICE_QUERIES (sizeof(device_queries) / sizeof(device_queries[0]))

/* A MAC address derived from the UDID, so it is stable per Mac. */
static void mac_address(const sim_mac_t *m, unsigned salt, char out[18])
{
    uint8_t h[MDM_SHA256_LEN] = {0};
    char in[80];
    int n = snprintf(in, sizeof(in), "%s/%u", m->udid, salt);
    (void)!mdm_sha256(in, (size_t)n, h);
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", h[0] & 0xfc, h[1], h[2], h[3], h[4],
             h[5]);
}

static void add_device_query(const sim_mac_t *m, plist_t q, size_t i)
{
    char buf[64];
    const char *k = device_queries[i];
    switch (i) {
    case 0: sim_set_str(q, k, m->udid); break;
    case 1: sim_set_str(q, k, device_name(m, buf, sizeof(buf))); break;
    case 2: sim_set_str(q, k, m->os_version); break;
    case 3: sim_set_str(q, k, m->build_version); break;
    case 4: sim_set_str(q, k, m->model_name); break;
    case 5: sim_set_str(q, k, m->model); break;
    case 6: sim_set_str(q, k, m->model); break;
    case 7: sim_set_str(q, k, m->serial); break;
    case 8: plist_dict_set_item(q, k, plist_new_real(494.38)); break;
    case 9: plist_dict_set_item(q, k, plist_new_real(301.12)); break;
    case 10: sim_set_bool(q, k, false); break;
    case 11: sim_set_bool(q, k, m->apple_silicon); break;
    case 12: sim_set_bool(q, k, false); break;
    case 13: sim_set_bool(q, k, true); break;
    case 14:
        snprintf(buf, sizeof(buf), "mac-%.10s", m->serial);
        sim_set_str(q, k, m->host_name[0] ? m->host_name : buf);
        break;
    case 15:
        snprintf(buf, sizeof(buf), "mac-%.10s.local", m->serial);
        sim_set_str(q, k, m->host_name[0] ? m->host_name : buf);
        break;
    case 16:
    case 17:
    case 18:
        mac_address(m, (unsigned)i, buf);
        sim_set_str(q, k, buf);
        break;
    case 19: sim_set_bool(q, k, false); break;
    case 20: sim_set_bool(q, k, false); break;
    case 21: sim_set_bool(q, k, false); break;
    case 22: sim_set_bool(q, k, strstr(m->model_name, "Book") != NULL); break;
    case 23: sim_set_str(q, k, "Europe/Berlin"); break;
    case 24: {
        plist_t o = plist_new_dict();
        sim_set_bool(o, "BootstrapTokenAllowed", true);
        sim_set_bool(o, "ActivationLockAllowedWhileSupervised", false);
        plist_dict_set_item(q, k, o);
        break;
    }
    case 25: {
        plist_t o = plist_new_dict();
        sim_set_str(o, "CatalogURL",
                    "https://swscan.apple.com/content/catalogs/others/index.sucatalog");
        sim_set_bool(o, "IsDefaultCatalog", true);
        sim_set_uint(o, "PreviousScanResult", 0);
        sim_set_bool(o, "PerformPeriodicCheck", true);
        sim_set_bool(o, "AutoCheckEnabled", true);
        sim_set_bool(o, "BackgroundDownloadEnabled", true);
        sim_set_bool(o, "AutomaticAppInstallationEnabled", true);
        sim_set_bool(o, "AutomaticOSInstallationEnabled", false);
        sim_set_bool(o, "AutomaticSecurityUpdatesEnabled", true);
        plist_dict_set_item(q, k, o);
        break;
    }
    }
}

static plist_t security_info(const sim_mac_t *m)
{
    plist_t s = plist_new_dict();
    sim_set_uint(s, "HardwareEncryptionCaps", 3);
    sim_set_bool(s, "PasscodePresent", true);
    sim_set_bool(s, "PasscodeCompliant", true);
    sim_set_bool(s, "PasscodeCompliantWithProfiles", true);
    sim_fv_security_info(m, s);
    sim_set_bool(s, "SystemIntegrityProtectionEnabled", true);
    plist_t fw = plist_new_dict();
    sim_set_bool(fw, "FirewallEnabled", true);
    sim_set_bool(fw, "BlockAllIncoming", false);
    sim_set_bool(fw, "StealthMode", false);
    plist_t apps = plist_new_array();
    plist_t app = plist_new_dict();
    sim_set_bool(app, "Allowed", true);
    sim_set_str(app, "BundleID", "com.apple.screensharing");
    sim_set_str(app, "Name", "Screen Sharing");
    plist_array_append_item(apps, app);
    plist_dict_set_item(fw, "Applications", apps);
    sim_set_bool(fw, "LoggingEnabled", true);
    sim_set_str(fw, "LoggingOption", "throttled");
    plist_dict_set_item(s, "FirewallSettings", fw);
    plist_t fp = plist_new_dict();
    sim_set_bool(fp, "PasswordExists", false);
    sim_set_bool(fp, "ChangePending", false);
    sim_set_bool(fp, "AllowOroms", true);
    plist_dict_set_item(s, "FirmwarePasswordStatus", fp);
    plist_t ms = plist_new_dict();
    sim_set_bool(ms, "EnrolledViaDEP", false);
    sim_set_bool(ms, "UserApprovedEnrollment", true);
    sim_set_bool(ms, "IsUserEnrollment", false);
    sim_set_bool(ms, "IsActivationLockManageable", false);
    plist_dict_set_item(s, "ManagementStatus", ms);
    if (m->apple_silicon) {
        plist_t sb = plist_new_dict();
        sim_set_str(sb, "SecureBootLevel", "full");
        sim_set_str(sb, "ExternalBootLevel", "disallowed");
        plist_dict_set_item(s, "SecureBoot", sb);
    }
    sim_set_bool(s, "RemoteDesktopEnabled", false);
    sim_set_bool(s, "AuthenticatedRootVolumeEnabled", true);
    sim_set_bool(s, "BootstrapTokenAllowedForAuthentication", true);
    sim_set_bool(s, "BootstrapTokenRequiredForSoftwareUpdate", m->apple_silicon);
    sim_set_bool(s, "BootstrapTokenRequiredForKernelExtensionApproval", m->apple_silicon);
    return s;
}

/* The first PEM block (a certificate, or with is_key a private key) of the file at path as
 * DER (malloc'ed). Returns 0 or a negative code; *der is NULL on failure. */
static int read_pem_der(const char *path, bool is_key, uint8_t **der, size_t *len)
{
    uint8_t *text = NULL;
    size_t n = 0;
    *der = NULL;
    *len = 0;
    int ret = mdm_file_read(path, 1 << 16, &text, &n);
    if (ret == 0)
        ret = mdm_x509_pem_to_der((const char *)text, n, is_key, der, len);
    if (text)
        mdm_free_wiped(text, n);
    return ret;
}

static plist_t certificate_list(const sim_mac_t *m)
{
    plist_t a = plist_new_array();
    char path[640];
    cert_path(m, path, sizeof(path));
    uint8_t *der;
    size_t len;
    if (read_pem_der(path, false, &der, &len) == 0) {
        plist_t c = plist_new_dict();
        sim_set_str(c, "CommonName", m->name);
        sim_set_bool(c, "IsIdentity", true);
        plist_dict_set_item(c, "Data", plist_new_data((const char *)der, len));
        plist_array_append_item(a, c);
    }
    free(der);
    if (read_pem_der(m->env->ca_cert, false, &der, &len) == 0) {
        plist_t c = plist_new_dict();
        sim_set_str(c, "CommonName", "mdmd instance CA");
        sim_set_bool(c, "IsIdentity", false);
        plist_dict_set_item(c, "Data", plist_new_data((const char *)der, len));
        plist_array_append_item(a, c);
    }
    free(der);
    return a;
}

const char *sim_status_name(enum sim_status st)
{
    switch (st) {
    case SIM_ACKNOWLEDGED: return "Acknowledged";
    case SIM_ERROR: return "Error";
    case SIM_NOTNOW: return "NotNow";
    case SIM_COMMAND_FORMAT_ERROR: return "CommandFormatError";
    }
    return "Error";
}

/* The keys an Acknowledged response carries for cmd, read from the Mac's state without
 * changing it. command is the kept Command dict (may be NULL). */
static void add_ack_data(const sim_mac_t *m, const sim_cmd_t *cmd, plist_t command, plist_t d)
{
    switch (cmd->type) {
    case SIM_REQ_DEVICE_INFORMATION: {
        plist_t q = plist_new_dict();
        for (size_t i = 0; i < N_DEVICE_QUERIES; i++)
            if (cmd->query_mask == 0 || (cmd->query_mask & (1ull << i)))
                add_device_query(m, q, i);
        plist_dict_set_item(d, "QueryResponses", q);
        break;
    }
    case SIM_REQ_SECURITY_INFO:
        plist_dict_set_item(d, "SecurityInfo", security_info(m));
        break;
    case SIM_REQ_INSTALLED_APPLICATION_LIST: {
        plist_t ids = command ? plist_dict_get_item(command, "Identifiers") : NULL;
        plist_dict_set_item(d, "InstalledApplicationList",
                            sim_app_list(m, ids, cmd->managed_only));
        break;
    }
    case SIM_REQ_PROFILE_LIST:
        plist_dict_set_item(d, "ProfileList", sim_profile_list(m, cmd->managed_only));
        break;
    case SIM_REQ_CERTIFICATE_LIST:
        plist_dict_set_item(d, "CertificateList", certificate_list(m));
        break;
    case SIM_REQ_OS_UPDATE_SCAN:
        sim_set_bool(d, "ScanInitiated", true);
        break;
    case SIM_REQ_AVAILABLE_OS_UPDATES:
        plist_dict_set_item(d, "AvailableOSUpdates", sim_available_os_updates(m));
        break;
    case SIM_REQ_OS_UPDATE_STATUS:
        plist_dict_set_item(d, "OSUpdateStatus", sim_os_update_status(m));
        break;
    case SIM_REQ_SCHEDULE_OS_UPDATE:
        plist_dict_set_item(d, "UpdateResults", plist_new_array());
        break;
    case SIM_REQ_INSTALL_PROFILE:
    case SIM_REQ_REMOVE_PROFILE:
    case SIM_REQ_REMOVE_APPLICATION:
    case SIM_REQ_SETTINGS:
    case SIM_REQ_DEVICE_LOCK:
    case SIM_REQ_ERASE_DEVICE:
    case SIM_REQ_ROTATE_FILEVAULT_KEY:
    case SIM_REQ_OTHER:
        break;
    }
}

/* A response without Status: UDID and CommandUUID. */
static plist_t response_head(const sim_mac_t *m, const sim_cmd_t *cmd)
{
    plist_t d = plist_new_dict();
    sim_set_str(d, "UDID", m->udid);
    sim_set_str(d, "CommandUUID", cmd->uuid);
    return d;
}

int sim_build_response(const sim_mac_t *m, const sim_cmd_t *cmd, enum sim_status st,
                       mdm_buf_t *out)
{
    plist_t d = response_head(m, cmd);
    sim_set_str(d, "Status", sim_status_name(st));
    if (st == SIM_ERROR || st == SIM_COMMAND_FORMAT_ERROR) {
        plist_dict_set_item(d, "ErrorChain",
                            sim_chain_new(st == SIM_ERROR ? 12021 : 12001, "MCMDMErrorDomain",
                                          "The simulated Mac refused the command."));
    } else if (st == SIM_ACKNOWLEDGED) {
        plist_t root;
        plist_t command = sim_kept_command(m, cmd, &root);
        add_ack_data(m, cmd, command, d);
        if (root)
            plist_free(root);
    }
    return emit(d, out);
}

/* Carries cmd out on m: the status, and the response keys added to d. */
static enum sim_status act(sim_mac_t *m, const sim_cmd_t *cmd, plist_t command, plist_t d)
{
    switch (cmd->type) {
    case SIM_REQ_INSTALL_PROFILE: return sim_install_profile(m, command, d);
    case SIM_REQ_REMOVE_PROFILE: return sim_remove_profile(m, cmd->identifier, d);
    case SIM_REQ_REMOVE_APPLICATION: return sim_remove_application(m, cmd->identifier, d);
    case SIM_REQ_SETTINGS: return sim_apply_settings(m, command, d);
    case SIM_REQ_SCHEDULE_OS_UPDATE: return sim_schedule_os_update(m, command, d);
    case SIM_REQ_DEVICE_LOCK: return sim_device_lock(m, command, d);
    case SIM_REQ_ERASE_DEVICE: return sim_erase_device(m, command, d);
    case SIM_REQ_ROTATE_FILEVAULT_KEY: return sim_rotate_filevault_key(m, command, d);
    default:
        add_ack_data(m, cmd, command, d);
        return SIM_ACKNOWLEDGED;
    }
}

int sim_build_answer(sim_mac_t *m, const sim_cmd_t *cmd, mdm_buf_t *out)
{
    if (m->notnow_mask & (1u << cmd->type))
        return sim_build_response(m, cmd, SIM_NOTNOW, out);
    plist_t root;
    plist_t command = sim_kept_command(m, cmd, &root);
    plist_t d = response_head(m, cmd);
    enum sim_status st = act(m, cmd, command, d);
    sim_set_str(d, "Status", sim_status_name(st));
    if (root)
        plist_free(root);
    return emit(d, out);
}

int sim_handle_command(sim_mac_t *m, const uint8_t *body, size_t len, sim_cmd_t *cmd,
                       mdm_buf_t *out)
{
    int ret = sim_parse_command(body, len, cmd);
    if (ret != 0 || !cmd->uuid[0])
        return ret;
    if ((ret = sim_keep_command(m, cmd, body, len)) != 0)
        return ret;
    return sim_build_answer(m, cmd, out);
}

/* ---- HTTP ---- */

int sim_build_http_put(const sim_env_t *env, const char *path, const char *content_type,
                       const void *body, size_t len, mdm_buf_t *out)
{
    int ret = mdm_buf_printf(out,
                             "PUT %s HTTP/1.1\r\nHost: localhost:%d\r\nUser-Agent: MDM/1.0\r\n"
                             "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                             path, env->port, content_type, len);
    if (ret == 0 && len)
        ret = mdm_buf_append(out, body, len);
    return ret;
}

int sim_sign(const sim_mac_t *m, const void *body, size_t len, mdm_buf_t *out)
{
    char key[640], crt[640];
    key_path(m, key, sizeof(key));
    cert_path(m, crt, sizeof(crt));
    mdm_buf_t der;
    mdm_buf_init(&der, 0);
    int ret = mdm_cms_sign_detached(m->sign_key ? m->sign_key : key,
                                    m->sign_cert ? m->sign_cert : crt, body, len, &der);
    if (ret == 0)
        ret = mdm_base64_encode(mdm_buf_head(&der), der.len, out);
    mdm_buf_dispose(&der);
    return ret;
}

/* The request m sends: PUT with, when m->sign, an Mdm-Signature header. */
static int build_request(const sim_mac_t *m, const char *path, const char *content_type,
                         const void *body, size_t len, mdm_buf_t *out)
{
    if (!m->sign)
        return sim_build_http_put(m->env, path, content_type, body, len, out);
    mdm_buf_t sig;
    mdm_buf_init(&sig, 0);
    int ret = sim_sign(m, body, len, &sig);
    if (ret == 0)
        ret = mdm_buf_printf(out,
                             "PUT %s HTTP/1.1\r\nHost: localhost:%d\r\nUser-Agent: MDM/1.0\r\n"
                             "Content-Type: %s\r\nContent-Length: %zu\r\n"
                             "Mdm-Signature: %.*s\r\n\r\n",
                             path, m->plain_http ? m->env->plain_port : m->env->port,
                             content_type, len, (int)sig.len, (const char *)mdm_buf_head(&sig));
    size_t body_off = out->len;
    if (ret == 0 && len)
        ret = mdm_buf_append(out, body, len);
    if (ret == 0 && len && m->sign_tamper)
        ((uint8_t *)mdm_buf_head(out))[body_off + len / 2] ^= 0x20; /* e.g. a letter's case */
    mdm_buf_dispose(&sig);
    return ret;
}

long sim_parse_http_response(const uint8_t *p, size_t len, int *status, size_t *body_off,
                             size_t *body_len, bool *close)
{
    if (len < 4)
        return 0; /* also keeps an empty buffer's NULL away from memmem */
    const char *s = (const char *)p;
    const char *end = memmem(s, len, "\r\n\r\n", 4);
    if (!end)
        return len > 65536 ? -EBADMSG : 0;
    size_t head = (size_t)(end - s) + 4;
    if (len < 12 || memcmp(s, "HTTP/1.", 7) != 0)
        return -EBADMSG;
    int st = 0;
    for (size_t i = 9; i < 12; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EBADMSG;
        st = st * 10 + (s[i] - '0');
    }
    size_t clen = 0;
    bool cls = false;
    /* Header lines after the status line. */
    const char *line = memchr(s, '\n', head);
    while (line && (size_t)(line + 1 - s) < head) {
        line++;
        const char *eol = memchr(line, '\n', head - (size_t)(line - s));
        if (!eol)
            break;
        size_t ll = (size_t)(eol - line);
        if (ll > 15 && strncasecmp(line, "Content-Length:", 15) == 0)
            clen = strtoul(line + 15, NULL, 10);
        else if (ll > 11 && strncasecmp(line, "Connection:", 11) == 0 &&
                 memmem(line, ll, "close", 5))
            cls = true;
        line = eol;
    }
    if (head + clen > len)
        return 0;
    *status = st;
    *body_off = head;
    *body_len = clen;
    *close = cls;
    return (long)(head + clen);
}

/* ---- replies ---- */

static enum sim_request_type request_type_of(const char *t)
{
    if (strcmp(t, "DeviceInformation") == 0)
        return SIM_REQ_DEVICE_INFORMATION;
    if (strcmp(t, "SecurityInfo") == 0)
        return SIM_REQ_SECURITY_INFO;
    if (strcmp(t, "InstalledApplicationList") == 0)
        return SIM_REQ_INSTALLED_APPLICATION_LIST;
    if (strcmp(t, "ProfileList") == 0)
        return SIM_REQ_PROFILE_LIST;
    static const struct {
        const char *name;
        enum sim_request_type type;
    } more[] = {
        {"CertificateList", SIM_REQ_CERTIFICATE_LIST},
        {"InstallProfile", SIM_REQ_INSTALL_PROFILE},
        {"RemoveProfile", SIM_REQ_REMOVE_PROFILE},
        {"RemoveApplication", SIM_REQ_REMOVE_APPLICATION},
        {"Settings", SIM_REQ_SETTINGS},
        {"ScheduleOSUpdateScan", SIM_REQ_OS_UPDATE_SCAN},
        {"AvailableOSUpdates", SIM_REQ_AVAILABLE_OS_UPDATES},
        {"ScheduleOSUpdate", SIM_REQ_SCHEDULE_OS_UPDATE},
        {"OSUpdateStatus", SIM_REQ_OS_UPDATE_STATUS},
        {"DeviceLock", SIM_REQ_DEVICE_LOCK},
        {"EraseDevice", SIM_REQ_ERASE_DEVICE},
        {"RotateFileVaultKey", SIM_REQ_ROTATE_FILEVAULT_KEY},
    };
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++)
        if (strcmp(t, more[i].name) == 0)
            return more[i].type;
    return SIM_REQ_OTHER;
}

bool sim_get_string(plist_t d, const char *key, char *out, size_t len)
{
    plist_t n = d ? plist_dict_get_item(d, key) : NULL;
    if (!n || plist_get_node_type(n) != PLIST_STRING)
        return false;
    char *s = NULL;
    plist_get_string_val(n, &s);
    if (!s)
        return false;
    snprintf(out, len, "%s", s);
    free(s);
    return true;
}

static plist_t parse_dict(const uint8_t *body, size_t len)
{
    if (len == 0 || len > UINT32_MAX)
        return NULL;
    plist_t root = NULL;
    plist_from_memory((const char *)body, (uint32_t)len, &root);
    if (root && plist_get_node_type(root) != PLIST_DICT) {
        plist_free(root);
        root = NULL;
    }
    return root;
}

int sim_parse_command(const uint8_t *body, size_t len, sim_cmd_t *cmd)
{
    memset(cmd, 0, sizeof(*cmd));
    if (len == 0)
        return 0;
    plist_t root = parse_dict(body, len);
    plist_t c = root ? plist_dict_get_item(root, "Command") : NULL;
    if (!c || plist_get_node_type(c) != PLIST_DICT ||
        !sim_get_string(root, "CommandUUID", cmd->uuid, sizeof(cmd->uuid)) ||
        !sim_get_string(c, "RequestType", cmd->request_type, sizeof(cmd->request_type))) {
        if (root)
            plist_free(root);
        memset(cmd, 0, sizeof(*cmd));
        snprintf(cmd->request_type, sizeof(cmd->request_type), "?");
        return -EBADMSG;
    }
    cmd->type = request_type_of(cmd->request_type);
    (void)sim_get_string(c, "Identifier", cmd->identifier, sizeof(cmd->identifier));
    plist_t flag = plist_dict_get_item(
        c, cmd->type == SIM_REQ_PROFILE_LIST ? "ManagedOnly" : "ManagedAppsOnly");
    if (flag && plist_get_node_type(flag) == PLIST_BOOLEAN) {
        uint8_t v = 0;
        plist_get_bool_val(flag, &v);
        cmd->managed_only = v != 0;
    }
    plist_t q = plist_dict_get_item(c, "Queries");
    if (cmd->type == SIM_REQ_DEVICE_INFORMATION && q && plist_get_node_type(q) == PLIST_ARRAY) {
        uint32_t n = plist_array_get_size(q);
        for (uint32_t i = 0; i < n; i++) {
            char key[64];
            plist_t item = plist_array_get_item(q, i);
            if (plist_get_node_type(item) != PLIST_STRING)
                continue;
            char *s = NULL;
            plist_get_string_val(item, &s);
            snprintf(key, sizeof(key), "%s", s ? s : "");
            free(s);
            for (size_t k = 0; k < N_DEVICE_QUERIES; k++)
                if (strcmp(key, device_queries[k]) == 0)
                    cmd->query_mask |= 1ull << k;
        }
        if (cmd->query_mask == 0)
            cmd->query_mask = 1ull << 0; /* asked only for things we do not know: UDID */
    }
    plist_free(root);
    return 0;
}

int sim_parse_bootstrap(const uint8_t *body, size_t len, mdm_buf_t *token)
{
    mdm_buf_reset(token);
    if (len == 0)
        return 0;
    plist_t root = parse_dict(body, len);
    if (!root)
        return -EBADMSG;
    int ret = 0;
    plist_t t = plist_dict_get_item(root, "BootstrapToken");
    if (t && plist_get_node_type(t) == PLIST_DATA) {
        char *data = NULL;
        uint64_t n = 0;
        plist_get_data_val(t, &data, &n);
        ret = mdm_buf_append(token, data, (size_t)n);
        free(data);
    }
    plist_free(root);
    return ret;
}

/* ---- blocking client ---- */

static bool connected(const sim_mac_t *m) { return m->fd >= 0; }

/* Received request bytes not yet parsed. */
static mdm_buf_t *io_plain_in(sim_mac_t *m)
{
    return m->tls ? mdm_tls_plain_in(m->tls) : &m->plain_in;
}

/* TLS: handshake and decryption. Plain HTTP: nothing to do. */
static int io_advance(sim_mac_t *m) { return m->tls ? mdm_tls_advance(m->tls) : 0; }

static int send_all(sim_mac_t *m, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t w = send(m->fd, p, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int flush_out(sim_mac_t *m)
{
    if (!m->tls)
        return 0; /* plain HTTP writes straight to the socket */
    mdm_buf_t *out = mdm_tls_cipher_out(m->tls);
    while (out->len) {
        ssize_t w = send(m->fd, mdm_buf_head(out), out->len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        mdm_buf_consume(out, (size_t)w);
    }
    return 0;
}

/* Waits up to timeout_ms for bytes and feeds them to TLS. 1 data, 0 timeout, -1 closed. */
static int pump_in(sim_mac_t *m, int timeout_ms)
{
    struct pollfd pfd = {.fd = m->fd, .events = POLLIN};
    int pr = poll(&pfd, 1, timeout_ms < 0 ? 0 : timeout_ms);
    if (pr == 0)
        return 0;
    if (pr < 0)
        return errno == EINTR ? 0 : -1;
    uint8_t buf[16384];
    ssize_t r = recv(m->fd, buf, sizeof(buf), 0);
    if (r < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -1;
    if (r == 0) {
        if (m->tls)
            mdm_tls_feed_eof(m->tls);
        return -1;
    }
    if (!m->tls)
        return mdm_buf_append(&m->plain_in, buf, (size_t)r) == 0 ? 1 : -1;
    return mdm_tls_feed(m->tls, buf, (size_t)r) == 0 ? 1 : -1;
}

/* Sends len request bytes. */
static int io_write(sim_mac_t *m, const void *data, size_t len)
{
    if (!m->tls)
        return send_all(m, data, len);
    return mdm_tls_write(m->tls, data, len) == 0 ? flush_out(m) : -1;
}

/* A TCP connection to port (fd in m->fd). */
static int tcp_connect(sim_mac_t *m, int port)
{
    m->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (m->fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, m->env->host, &a.sin_addr) != 1 ||
        connect(m->fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        return -1;
    int one = 1;
    setsockopt(m->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    m->connects++;
    return 0;
}

static int open_connection(sim_mac_t *m)
{
    if (m->plain_http) {
        if (tcp_connect(m, m->env->plain_port) == 0)
            return 0;
        sim_mac_disconnect(m);
        return -1;
    }
    char key[640], crt[640];
    key_path(m, key, sizeof(key));
    cert_path(m, crt, sizeof(crt));
    struct mdm_tls_client_opts o = {
        .ca_path = m->env->ca_cert,
        .cert_path = m->no_identity ? NULL : crt,
        .key_path = m->no_identity ? NULL : key,
    };
    if (mdm_tls_ctx_new_client(&m->ctx, &o) != 0 ||
        mdm_tls_conn_new(&m->tls, m->ctx, "localhost") != 0 || tcp_connect(m, m->env->port) != 0)
        goto fail;
    long long deadline = mono_ms() + m->env->timeout_ms;
    while (mono_ms() < deadline) {
        if (mdm_tls_advance(m->tls) != 0 || flush_out(m) != 0)
            goto fail;
        if (mdm_tls_handshake_done(m->tls))
            return 0;
        if (pump_in(m, (int)(deadline - mono_ms())) < 0)
            goto fail;
    }
fail:
    sim_mac_disconnect(m);
    return -1;
}

/* True when an open keep-alive connection was closed by the server (EOF or close_notify
 * waiting) or holds unexpected bytes: either way it cannot carry a request. */
static bool connection_stale(sim_mac_t *m)
{
    int r;
    while ((r = pump_in(m, 0)) > 0)
        ;
    if (r < 0)
        return true;
    if (io_advance(m) != 0)
        return true;
    return io_plain_in(m)->len != 0;
}

/* One attempt: 0 with *status, 1 when nothing at all came back (retryable), -1 otherwise. */
static int exchange(sim_mac_t *m, const mdm_buf_t *req, int *status, mdm_buf_t *out)
{
    if (io_write(m, mdm_buf_head(req), req->len) != 0)
        return 1;
    long long deadline = mono_ms() + m->env->timeout_ms;
    bool got_any = false;
    for (;;) {
        int ret = io_advance(m);
        mdm_buf_t *plain = io_plain_in(m);
        got_any = got_any || plain->len != 0;
        int st;
        size_t off, blen;
        bool cls;
        long n = sim_parse_http_response(mdm_buf_head(plain), plain->len, &st, &off, &blen, &cls);
        if (n < 0)
            return -1;
        if (n > 0) {
            if (out) {
                mdm_buf_reset(out);
                if (mdm_buf_append(out, mdm_buf_head(plain) + off, blen) != 0)
                    return -1;
            }
            mdm_buf_consume(plain, (size_t)n);
            *status = st;
            if (cls)
                sim_mac_disconnect(m);
            return 0;
        }
        if (ret != 0 || flush_out(m) != 0)
            return got_any ? -1 : 1;
        long long left = deadline - mono_ms();
        if (left <= 0)
            return -1;
        if (pump_in(m, (int)left) < 0) {
            (void)!io_advance(m); /* decrypt what came before the close */
            plain = io_plain_in(m);
            n = sim_parse_http_response(mdm_buf_head(plain), plain->len, &st, &off, &blen, &cls);
            if (n > 0)
                continue;
            return plain->len ? -1 : 1;
        }
    }
}

/* Sends the request in req, retrying once on a new connection when a reused one was closed
 * under it. Returns 0 with *status (and the body in out), or -1. */
static int send_request(sim_mac_t *m, const mdm_buf_t *req, int *status, mdm_buf_t *out)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = connected(m);
        if (reused && connection_stale(m)) {
            sim_mac_disconnect(m);
            reused = false;
        }
        if (!connected(m) && open_connection(m) != 0)
            return -1;
        int r = exchange(m, req, status, out);
        if (r == 0)
            return 0;
        sim_mac_disconnect(m);
        if (r < 0 || !reused)
            return -1; /* only a reused connection closed under us is worth a retry */
    }
    return -1;
}

/* sim_put without the silence check: for the messages a Mac sends as it goes silent. */
static int put_any(sim_mac_t *m, const char *path, const void *body, size_t len, int *status,
                   mdm_buf_t *out)
{
    const char *type = strstr(path, "/connect") ? "application/x-apple-aspen-mdm"
                                                : "application/x-apple-aspen-mdm-checkin";
    mdm_buf_t req;
    mdm_buf_init(&req, 0);
    int ret = build_request(m, path, type, body, len, &req) == 0
                  ? send_request(m, &req, status, out)
                  : -1;
    mdm_buf_dispose(&req);
    return ret;
}

int sim_put(sim_mac_t *m, const char *path, const void *body, size_t len, int *status,
            mdm_buf_t *out)
{
    if (sim_mac_silent(m))
        return -1; /* locked, erased or unenrolled: no MDM traffic */
    return put_any(m, path, body, len, status, out);
}

/* ---- SCEP ---- */

/* GET (body NULL) or POST of an unsigned request, on a connection without a client
 * certificate. */
static int scep_http(sim_mac_t *m, const char *path, const void *body, size_t len, int *status,
                     mdm_buf_t *out)
{
    mdm_buf_t req;
    mdm_buf_init(&req, 0);
    int ret = body ? mdm_buf_printf(&req,
                                    "POST %s HTTP/1.1\r\nHost: localhost:%d\r\n"
                                    "User-Agent: MDM/1.0\r\nContent-Type: %s\r\n"
                                    "Content-Length: %zu\r\n\r\n",
                                    path, m->env->port, MDM_SCEP_PKI_MESSAGE_TYPE, len)
                   : mdm_buf_printf(&req, "GET %s HTTP/1.1\r\nHost: localhost:%d\r\n"
                                          "User-Agent: MDM/1.0\r\n\r\n",
                                    path, m->env->port);
    if (ret == 0 && body)
        ret = mdm_buf_append(&req, body, len);
    bool had_identity = !m->no_identity;
    if (ret == 0) {
        sim_mac_disconnect(m);
        m->no_identity = true;
        ret = send_request(m, &req, status, out);
        sim_mac_disconnect(m);
        m->no_identity = !had_identity;
    }
    mdm_buf_dispose(&req);
    return ret;
}

/* Appends "<prefix><message, base64 with + / = percent-encoded>" to path. */
static int scep_get_path(const char *prefix, const mdm_buf_t *msg, mdm_buf_t *path)
{
    mdm_buf_t b64;
    mdm_buf_init(&b64, 0);
    int ret = mdm_base64_encode(mdm_buf_head(msg), msg->len, &b64);
    if (ret == 0)
        ret = mdm_buf_append_str(path, prefix);
    for (size_t i = 0; ret == 0 && i < b64.len; i++) {
        char ch = (char)mdm_buf_head(&b64)[i];
        ret = ch == '+'   ? mdm_buf_append_str(path, "%2B")
              : ch == '/' ? mdm_buf_append_str(path, "%2F")
              : ch == '=' ? mdm_buf_append_str(path, "%3D")
                          : mdm_buf_append(path, &ch, 1);
    }
    if (ret == 0)
        ret = mdm_buf_append(path, "", 1);
    mdm_buf_dispose(&b64);
    return ret;
}

int sim_scep(sim_mac_t *m, sim_scep_t *s)
{
    char path[256], key_file[640], crt_file[640];
    key_path(m, key_file, sizeof(key_file));
    cert_path(m, crt_file, sizeof(crt_file));
    uint8_t *key = NULL, *cert = NULL, *csr = NULL, *old_key = NULL;
    size_t key_len = 0, cert_len = 0, csr_len = 0, old_key_len = 0;
    mdm_buf_t resp, ra, msg, get_path;
    mdm_buf_init(&resp, 0);
    mdm_buf_init(&ra, 0);
    mdm_buf_init(&msg, 0);
    mdm_buf_init(&get_path, 0);
    mdm_scep_reply_t rep = {0};
    s->http_status = 0;
    int ret = -1;
    snprintf(path, sizeof(path), "/%s/scep?operation=GetCACert", m->env->instance);
    if (scep_http(m, path, NULL, 0, &s->http_status, &resp) != 0 || s->http_status != 200 ||
        mdm_scep_pick_ra(mdm_buf_head(&resp), resp.len, &ra, NULL) != 0)
        goto out;
    bool renewal = s->type == MDM_SCEP_RENEWAL_REQ;
    if (renewal) { /* signed with the current identity, for a new key */
        if ((ret = read_pem_der(crt_file, false, &cert, &cert_len)) != 0 ||
            (ret = read_pem_der(key_file, true, &old_key, &old_key_len)) != 0)
            goto out;
    }
    if ((ret = mdm_x509_key_generate_der(MDM_X509_KEY_RSA_2048, &key, &key_len)) != 0)
        goto out;
    if (!renewal) {
        mdm_x509_spec_t self = {.common_name = m->name, .validity_days = 1};
        if ((ret = mdm_x509_make_self_signed_der(key, key_len, &self, &cert, &cert_len)) != 0)
            goto out;
    }
    if ((ret = mdm_x509_make_csr_der(key, key_len, m->name, NULL, s->challenge, &csr,
                                     &csr_len)) != 0)
        goto out;
    mdm_scep_client_t c = {renewal ? old_key : key, renewal ? old_key_len : key_len, cert,
                           cert_len, mdm_buf_head(&ra), ra.len};
    mdm_scep_transaction_t tx;
    if ((ret = mdm_scep_client_request(&c, s->type, csr, csr_len, MDM_SCEP_AES_256_CBC, &tx,
                                       &msg)) != 0)
        goto out;
    ret = -1;
    mdm_buf_reset(&resp);
    if (s->use_get) {
        snprintf(path, sizeof(path), "/%s/scep?operation=PKIOperation&message=",
                 m->env->instance);
        if (scep_get_path(path, &msg, &get_path) != 0 ||
            scep_http(m, (const char *)mdm_buf_head(&get_path), NULL, 0, &s->http_status,
                      &resp) != 0)
            goto out;
    } else {
        snprintf(path, sizeof(path), "/%s/scep?operation=PKIOperation", m->env->instance);
        if (scep_http(m, path, mdm_buf_head(&msg), msg.len, &s->http_status, &resp) != 0)
            goto out;
    }
    if (s->http_status != 200)
        goto out;
    /* The reply is encrypted for the key that signed the request. */
    if ((ret = mdm_scep_client_parse_reply(&c, &tx, mdm_buf_head(&resp), resp.len, &rep)) != 0)
        goto out;
    s->status = rep.status;
    s->fail_info = rep.fail_info;
    if (rep.status == MDM_SCEP_SUCCESS) {
        /* A renewal's certificate is for the CSR's (new) key. */
        ret = mdm_x509_write_pem(key_file, MDM_X509_PEM_RSA_KEY, key, key_len);
        if (ret == 0)
            ret = mdm_x509_write_pem(crt_file, MDM_X509_PEM_CERT, rep.cert, rep.cert_len);
        sim_mac_disconnect(m);
    }
out:
    mdm_scep_reply_dispose(&rep);
    if (key)
        mdm_free_wiped(key, key_len);
    if (old_key)
        mdm_free_wiped(old_key, old_key_len);
    free(cert);
    free(csr);
    mdm_buf_dispose(&resp);
    mdm_buf_dispose(&ra);
    mdm_buf_dispose(&msg);
    mdm_buf_dispose(&get_path);
    return ret;
}

/* PUT to /<instance>/mdm/<endpoint>; any: also when the Mac is silent. */
static int put_status(sim_mac_t *m, const char *endpoint, const mdm_buf_t *body, mdm_buf_t *out,
                      bool any)
{
    char path[128];
    snprintf(path, sizeof(path), "/%s/mdm/%s", m->env->instance, endpoint);
    int status;
    int ret = any ? put_any(m, path, mdm_buf_head(body), body->len, &status, out)
                  : sim_put(m, path, mdm_buf_head(body), body->len, &status, out);
    return ret != 0 ? -1 : status;
}

int sim_checkin(sim_mac_t *m, const mdm_buf_t *body, mdm_buf_t *out)
{
    return put_status(m, "checkin", body, out, false);
}

int sim_connect(sim_mac_t *m, const mdm_buf_t *body, mdm_buf_t *out)
{
    return put_status(m, "connect", body, out, false);
}

typedef int (*builder_fn)(const sim_mac_t *m, mdm_buf_t *out);

static int send_built(sim_mac_t *m, builder_fn build, mdm_buf_t *out)
{
    mdm_buf_t body;
    mdm_buf_init(&body, 0);
    int status = build(m, &body) == 0 ? sim_checkin(m, &body, out) : -1;
    mdm_buf_dispose(&body);
    return status;
}

int sim_authenticate(sim_mac_t *m, mdm_buf_t *out)
{
    m->erased = m->unenrolled = false; /* enrolling (again) */
    return send_built(m, sim_build_authenticate, out);
}

int sim_token_update(sim_mac_t *m, const uint8_t *unlock, size_t unlock_len, mdm_buf_t *out)
{
    if (mdm_random_bytes(m->push_token, sizeof(m->push_token)) != 0)
        return -1;
    random_uuid(m->push_magic);
    mdm_buf_t body;
    mdm_buf_init(&body, 0);
    int status = -1;
    if (sim_build_token_update(m, unlock, unlock_len, &body) == 0)
        status = sim_checkin(m, &body, out);
    mdm_buf_dispose(&body);
    return status;
}

int sim_checkout(sim_mac_t *m, mdm_buf_t *out) { return send_built(m, sim_build_checkout, out); }

int sim_set_bootstrap_token(sim_mac_t *m, const uint8_t *token, size_t len, mdm_buf_t *out)
{
    mdm_buf_t body;
    mdm_buf_init(&body, 0);
    int status = -1;
    if (sim_build_set_bootstrap(m, token, len, &body) == 0)
        status = sim_checkin(m, &body, out);
    mdm_buf_dispose(&body);
    return status;
}

int sim_get_bootstrap_token(sim_mac_t *m, mdm_buf_t *token)
{
    mdm_buf_t reply;
    mdm_buf_init(&reply, 0);
    int status = send_built(m, sim_build_get_bootstrap, &reply);
    if (status == 200 && sim_parse_bootstrap(mdm_buf_head(&reply), reply.len, token) != 0)
        status = -1;
    mdm_buf_dispose(&reply);
    return status;
}

/* Sends a /connect body (any: also when the Mac is silent) and reads the command that comes
 * back. */
static int connect_and_parse(sim_mac_t *m, const mdm_buf_t *body, sim_cmd_t *cmd, bool any)
{
    mdm_buf_t reply;
    mdm_buf_init(&reply, 0);
    int status = put_status(m, "connect", body, &reply, any);
    if (cmd) {
        memset(cmd, 0, sizeof(*cmd));
        if (status == 200 && sim_parse_command(mdm_buf_head(&reply), reply.len, cmd) == 0)
            (void)sim_keep_command(m, cmd, mdm_buf_head(&reply), reply.len);
    }
    mdm_buf_dispose(&reply);
    return status;
}

int sim_connect_idle(sim_mac_t *m, sim_cmd_t *cmd)
{
    mdm_buf_t body;
    mdm_buf_init(&body, 0);
    int status = sim_build_idle(m, &body) == 0 ? connect_and_parse(m, &body, cmd, false) : -1;
    mdm_buf_dispose(&body);
    return status;
}

int sim_respond(sim_mac_t *m, const sim_cmd_t *cmd, enum sim_status st, sim_cmd_t *next)
{
    mdm_buf_t body;
    mdm_buf_init(&body, 0);
    int status = sim_build_response(m, cmd, st, &body) == 0
                     ? connect_and_parse(m, &body, next, false)
                     : -1;
    mdm_buf_dispose(&body);
    return status;
}

/* What a Mac that the answered command silenced does next: the enrollment profile's removal
 * sends CheckOut; a lock or an erase restarts it. Either way the connection goes. */
static void after_silenced(sim_mac_t *m)
{
    if (m->unenrolled) {
        mdm_buf_t body;
        mdm_buf_init(&body, 0);
        m->checkout_status = sim_build_checkout(m, &body) == 0
                                 ? put_status(m, "checkin", &body, NULL, true)
                                 : -1;
        mdm_buf_dispose(&body);
    }
    sim_mac_disconnect(m);
}

int sim_answer(sim_mac_t *m, const sim_cmd_t *cmd, sim_cmd_t *next)
{
    if (sim_mac_silent(m)) {
        if (next)
            memset(next, 0, sizeof(*next));
        return -1;
    }
    mdm_buf_t body;
    mdm_buf_init(&body, 0);
    int status = -1;
    if (sim_build_answer(m, cmd, &body) == 0) /* may silence m: its answer still goes out */
        status = connect_and_parse(m, &body, next, true);
    mdm_buf_dispose(&body);
    if (sim_mac_silent(m))
        after_silenced(m);
    return status;
}
