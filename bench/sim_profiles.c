/*
 * sim_profiles: what a simulated Mac has installed and the commands that change it:
 * configuration profiles (InstallProfile, RemoveProfile, ProfileList; removing the enrollment
 * profile unenrolls the Mac), applications (InstalledApplicationList, RemoveApplication),
 * Settings, and software updates. What a profile does to FileVault is sim_security.c's.
 *
 * Failures answer as macOS does: Status Error with an ErrorChain of {ErrorCode, ErrorDomain,
 * LocalizedDescription, USEnglishDescription}, outermost error first. The codes follow the
 * domains macOS uses (MCProfileErrorDomain for unreadable or untrusted profiles,
 * MCInstallationErrorDomain for installation and removal, MCPayloadErrorDomain for a payload,
 * MCMDMErrorDomain for MDM-level refusals); the exact numbers are plausible, not Apple's
 * table. Each parse step below returns NULL on success or the ErrorChain to answer with.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/sim_private.h"
#include "core/cms.h"
#include "core/crypto.h"
#include "core/plist.h"

const sim_app_t sim_default_apps[] = {
    {"com.apple.Safari", "Safari", "18.1", "20619.2.8.11.10", 14286848, false},
    {"com.google.Chrome", "Google Chrome", "131.0.6778.86", "6778.86", 1198456832, false},
    {"us.zoom.xos", "zoom.us", "6.2.10", "6.2.10.43047", 287654912, true},
    {"com.tinyspeck.slackmacgap", "Slack", "4.41.97", "441000097", 498765824, true},
};
const size_t sim_default_apps_count = sizeof(sim_default_apps) / sizeof(sim_default_apps[0]);

/* ---- state ---- */

struct sim_state *sim_state_of(sim_mac_t *m)
{
    if (!m->state)
        m->state = calloc(1, sizeof(*m->state));
    return m->state;
}

static void profile_dispose(sim_profile_t *p)
{
    free(p->payloads);
    p->payloads = NULL;
    p->n_payloads = 0;
}

void sim_state_free(sim_mac_t *m)
{
    struct sim_state *st = m->state;
    if (!st)
        return;
    for (size_t i = 0; i < st->n_profiles; i++)
        profile_dispose(&st->profiles[i]);
    free(st->profiles);
    free(st->apps);
    sim_fv_dispose(&st->fv);
    free(st->cmd_body);
    free(st);
    m->state = NULL;
}

/* The app list as it is now: the Mac's own, or the defaults. */
static const sim_app_t *apps_of(const sim_mac_t *m, size_t *n)
{
    if (m->state && m->state->apps_set) {
        *n = m->state->n_apps;
        return m->state->apps;
    }
    *n = sim_default_apps_count;
    return sim_default_apps;
}

int sim_mac_set_apps(sim_mac_t *m, const sim_app_t *apps, size_t n)
{
    if (n > SIM_APPS_MAX)
        return -EINVAL;
    struct sim_state *st = sim_state_of(m);
    if (!st)
        return -ENOMEM;
    if (!st->apps && !(st->apps = calloc(SIM_APPS_MAX, sizeof(*st->apps))))
        return -ENOMEM;
    if (n)
        memmove(st->apps, apps, n * sizeof(*apps)); /* apps may be the Mac's own list */
    st->n_apps = n;
    st->apps_set = true;
    return 0;
}

const sim_app_t *sim_mac_find_app(const sim_mac_t *m, const char *identifier)
{
    size_t n;
    const sim_app_t *a = apps_of(m, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i].identifier, identifier) == 0)
            return &a[i];
    return NULL;
}

size_t sim_mac_app_count(const sim_mac_t *m)
{
    size_t n;
    (void)apps_of(m, &n);
    return n;
}

size_t sim_mac_profile_count(const sim_mac_t *m) { return m->state ? m->state->n_profiles : 0; }

static sim_profile_t *find_profile(const sim_mac_t *m, const char *identifier)
{
    for (size_t i = 0; m->state && i < m->state->n_profiles; i++)
        if (strcmp(m->state->profiles[i].identifier, identifier) == 0)
            return &m->state->profiles[i];
    return NULL;
}

const sim_profile_t *sim_mac_find_profile(const sim_mac_t *m, const char *identifier)
{
    return find_profile(m, identifier);
}

static void drop_profile(sim_mac_t *m, sim_profile_t *p)
{
    struct sim_state *st = m->state;
    profile_dispose(p);
    size_t i = (size_t)(p - st->profiles);
    memmove(p, p + 1, (st->n_profiles - i - 1) * sizeof(*p));
    st->n_profiles--;
}

int sim_mac_remove_profile_locally(sim_mac_t *m, const char *identifier)
{
    sim_profile_t *p = find_profile(m, identifier);
    if (!p)
        return -ENOENT;
    drop_profile(m, p);
    return 0;
}

/* Installs p (taking its payloads), replacing a profile with the same identifier as macOS
 * does. Returns 0, -ENOSPC or -ENOMEM (p is then still the caller's). */
static int store_profile(sim_mac_t *m, sim_profile_t *p)
{
    sim_profile_t *old = find_profile(m, p->identifier);
    if (old) {
        profile_dispose(old);
        *old = *p;
        return 0;
    }
    struct sim_state *st = sim_state_of(m);
    if (!st)
        return -ENOMEM;
    if (st->n_profiles == SIM_PROFILES_MAX)
        return -ENOSPC;
    if (!st->profiles && !(st->profiles = calloc(SIM_PROFILES_MAX, sizeof(*st->profiles))))
        return -ENOMEM;
    st->profiles[st->n_profiles++] = *p;
    return 0;
}

/* ---- the kept command ---- */

static bool needs_body(const sim_cmd_t *cmd, const uint8_t *body, size_t len)
{
    switch (cmd->type) {
    case SIM_REQ_INSTALL_PROFILE:
    case SIM_REQ_SETTINGS:
    case SIM_REQ_SCHEDULE_OS_UPDATE:
    case SIM_REQ_DEVICE_LOCK:
    case SIM_REQ_ERASE_DEVICE:
    case SIM_REQ_ROTATE_FILEVAULT_KEY:
        return true;
    case SIM_REQ_INSTALLED_APPLICATION_LIST:
        /* only a filtered list needs more than sim_cmd_t: most Macs keep nothing */
        return memmem(body, len, "Identifiers", 11) != NULL;
    default:
        return false;
    }
}

int sim_keep_command(sim_mac_t *m, const sim_cmd_t *cmd, const uint8_t *body, size_t len)
{
    if (!cmd->uuid[0] || len == 0 || !needs_body(cmd, body, len))
        return 0;
    struct sim_state *st = sim_state_of(m);
    uint8_t *copy = st ? malloc(len) : NULL;
    if (!copy)
        return -ENOMEM;
    memcpy(copy, body, len);
    free(st->cmd_body);
    st->cmd_body = copy;
    st->cmd_len = len;
    snprintf(st->cmd_uuid, sizeof(st->cmd_uuid), "%s", cmd->uuid);
    return 0;
}

plist_t sim_kept_command(const sim_mac_t *m, const sim_cmd_t *cmd, plist_t *root)
{
    *root = NULL;
    const struct sim_state *st = m->state;
    if (!st || !st->cmd_body || strcmp(st->cmd_uuid, cmd->uuid) != 0 || st->cmd_len > UINT32_MAX)
        return NULL;
    plist_from_memory((const char *)st->cmd_body, (uint32_t)st->cmd_len, root);
    plist_t c = *root && plist_get_node_type(*root) == PLIST_DICT
                    ? plist_dict_get_item(*root, "Command")
                    : NULL;
    return c && plist_get_node_type(c) == PLIST_DICT ? c : NULL;
}

/* ---- ErrorChain ---- */

static plist_t chain_item(uint64_t code, const char *domain, const char *fmt, va_list ap)
{
    char text[512];
    vsnprintf(text, sizeof(text), fmt, ap);
    plist_t e = plist_new_dict();
    sim_set_uint(e, "ErrorCode", code);
    sim_set_str(e, "ErrorDomain", domain);
    sim_set_str(e, "LocalizedDescription", text);
    sim_set_str(e, "USEnglishDescription", text);
    return e;
}

plist_t sim_chain_new(uint64_t code, const char *domain, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    plist_t chain = plist_new_array();
    plist_array_append_item(chain, chain_item(code, domain, fmt, ap));
    va_end(ap);
    return chain;
}

void sim_chain_add(plist_t chain, uint64_t code, const char *domain, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    plist_array_append_item(chain, chain_item(code, domain, fmt, ap));
    va_end(ap);
}

/* Answers with chain: Status Error (the caller sets Status from the return value). */
enum sim_status sim_fail(plist_t resp, plist_t chain, enum sim_status st)
{
    plist_dict_set_item(resp, "ErrorChain", chain);
    return st;
}

/* A required command key is missing or has the wrong type. */
enum sim_status sim_format_error(plist_t resp, const char *key)
{
    return sim_fail(resp,
                sim_chain_new(12001, "MCMDMErrorDomain",
                              "The command is invalid: “%s” is missing or of the wrong type.",
                              key),
                SIM_COMMAND_FORMAT_ERROR);
}

/* ---- profiles ---- */

static bool get_uint(plist_t d, const char *key, uint64_t *out)
{
    plist_t n = plist_dict_get_item(d, key);
    if (!n || plist_get_node_type(n) != PLIST_UINT)
        return false;
    plist_get_uint_val(n, out);
    return true;
}

/* A CMS SignedData is a DER SEQUENCE; a plist starts with '<', "bplist" or a BOM. */
static bool looks_signed(const uint8_t *data, size_t len) { return len && data[0] == 0x30; }

/* The Payload bytes as a plist: as they are, or opened from a CMS SignedData whose signer
 * chains to the instance CA (content then holds them). */
static plist_t open_profile(const sim_mac_t *m, const uint8_t *data, size_t len,
                            mdm_buf_t *content, bool *is_signed)
{
    *is_signed = looks_signed(data, len);
    if (!*is_signed)
        return mdm_buf_append(content, data, len) == 0
                   ? NULL
                   : sim_chain_new(1000, "MCProfileErrorDomain", "The profile is too large.");
    mdm_buf_t signer;
    mdm_buf_init(&signer, 0);
    plist_t chain = NULL;
    int ret = mdm_cms_verify_attached(data, len, content, &signer);
    if (ret == -EBADMSG)
        chain = sim_chain_new(1000, "MCProfileErrorDomain",
                              "The profile could not be parsed: it is neither a property list "
                              "nor signed data.");
    else if (ret != 0)
        chain = sim_chain_new(1012, "MCProfileErrorDomain",
                              "The profile’s signature is not valid.");
    else if (mdm_cms_cert_verify_chain(mdm_buf_head(&signer), signer.len, m->env->ca_cert,
                                       (int64_t)time(NULL)) != 0)
        chain = sim_chain_new(1013, "MCProfileErrorDomain",
                              "The profile is signed by a certificate that is not trusted.");
    mdm_buf_dispose(&signer);
    return chain;
}

/* One PayloadContent item into pl. */
static plist_t parse_payload(plist_t item, uint32_t index, sim_payload_t *pl)
{
    static const char *const required[] = {"PayloadType", "PayloadIdentifier", "PayloadUUID"};
    char *fields[] = {pl->type, pl->identifier, pl->uuid};
    size_t sizes[] = {sizeof(pl->type), sizeof(pl->identifier), sizeof(pl->uuid)};
    if (plist_get_node_type(item) != PLIST_DICT)
        return sim_chain_new(2000, "MCPayloadErrorDomain",
                             "The payload at index %u is not a dictionary.", index);
    for (size_t k = 0; k < 3; k++)
        if (!sim_get_string(item, required[k], fields[k], sizes[k]))
            return sim_chain_new(2003, "MCPayloadErrorDomain",
                                 "The payload at index %u is missing the required field “%s”.",
                                 index, required[k]);
    if (!get_uint(item, "PayloadVersion", &pl->version))
        return sim_chain_new(2003, "MCPayloadErrorDomain",
                             "The payload “%s” is missing the required field “PayloadVersion”.",
                             pl->identifier);
    (void)sim_get_string(item, "PayloadDisplayName", pl->display_name, sizeof(pl->display_name));
    return NULL;
}

static plist_t parse_payloads(plist_t content, sim_profile_t *p)
{
    uint32_t n = plist_array_get_size(content);
    if (n > SIM_PAYLOADS_MAX)
        return sim_chain_new(4000, "MCInstallationErrorDomain",
                             "The profile “%s” has %u payloads; the simulator keeps at most %d.",
                             p->identifier, n, SIM_PAYLOADS_MAX);
    p->payloads = n ? calloc(n, sizeof(*p->payloads)) : NULL;
    if (n && !p->payloads)
        return sim_chain_new(4000, "MCInstallationErrorDomain", "Out of memory.");
    p->n_payloads = n;
    for (uint32_t i = 0; i < n; i++) {
        plist_t chain = parse_payload(plist_array_get_item(content, i), i, &p->payloads[i]);
        if (chain)
            return chain;
    }
    return NULL;
}

/* The top level of a configuration profile into p (payloads malloc'ed, also on failure). */
static plist_t parse_top(plist_t top, sim_profile_t *p)
{
    char type[64];
    if (!sim_get_string(top, "PayloadType", type, sizeof(type)))
        return sim_chain_new(1002, "MCProfileErrorDomain",
                             "The profile is missing the required field “PayloadType”.");
    if (strcmp(type, "Configuration") != 0)
        return sim_chain_new(1005, "MCProfileErrorDomain",
                             "The profile has the unsupported type “%s”.", type);
    if (!sim_get_string(top, "PayloadIdentifier", p->identifier, sizeof(p->identifier)))
        return sim_chain_new(1002, "MCProfileErrorDomain",
                             "The profile is missing the required field “PayloadIdentifier”.");
    if (!sim_get_string(top, "PayloadUUID", p->uuid, sizeof(p->uuid)))
        return sim_chain_new(1002, "MCProfileErrorDomain",
                             "The profile “%s” is missing the required field “PayloadUUID”.",
                             p->identifier);
    if (!get_uint(top, "PayloadVersion", &p->version))
        return sim_chain_new(1002, "MCProfileErrorDomain",
                             "The profile “%s” is missing the required field “PayloadVersion”.",
                             p->identifier);
    plist_t content = plist_dict_get_item(top, "PayloadContent");
    if (!content || plist_get_node_type(content) != PLIST_ARRAY)
        return sim_chain_new(1002, "MCProfileErrorDomain",
                             "The profile “%s” is missing the required field “PayloadContent”.",
                             p->identifier);
    (void)sim_get_string(top, "PayloadDisplayName", p->display_name, sizeof(p->display_name));
    (void)sim_get_string(top, "PayloadOrganization", p->organization, sizeof(p->organization));
    return parse_payloads(content, p);
}

/* A configuration profile (XML or binary plist) into p, and what it does to FileVault into
 * fv (sim_fv_prepare). */
static plist_t parse_profile(const sim_mac_t *m, const uint8_t *data, size_t len,
                             sim_profile_t *p, struct sim_filevault *fv)
{
    plist_t top = NULL;
    if (len && len <= UINT32_MAX)
        plist_from_memory((const char *)data, (uint32_t)len, &top);
    if (!top || plist_get_node_type(top) != PLIST_DICT) {
        if (top)
            plist_free(top);
        return sim_chain_new(1000, "MCProfileErrorDomain",
                             "The profile could not be parsed: it is not a property list "
                             "dictionary.");
    }
    plist_t chain = parse_top(top, p);
    if (!chain)
        chain = sim_fv_prepare(m, plist_dict_get_item(top, "PayloadContent"), fv);
    plist_free(top);
    return chain;
}

/* The test hook's failure: what macOS reports when one payload cannot be installed. */
static plist_t hook_chain(const sim_profile_t *p)
{
    const char *name = p->display_name[0] ? p->display_name : p->identifier;
    plist_t chain = sim_chain_new(4001, "MCInstallationErrorDomain",
                                  "The profile “%s” could not be installed.", name);
    const sim_payload_t *pl = p->n_payloads ? &p->payloads[0] : NULL;
    sim_chain_add(chain, 2001, "MCPayloadErrorDomain",
                  "The payload “%s” (%s) could not be installed.",
                  pl ? (pl->display_name[0] ? pl->display_name : pl->identifier) : name,
                  pl ? pl->type : "Configuration");
    return chain;
}

/* Keeps the Challenge of a com.apple.security.scep payload of the installed profile xml: the
 * Mac uses it for its SCEP request (tests drive that request with sim_scep). */
static void keep_scep_challenge(sim_mac_t *m, const mdm_buf_t *xml)
{
    plist_t top = NULL, content = NULL;
    struct sim_state *st = sim_state_of(m);
    char err[64];
    if (!st || mdm_plist_parse_dict(mdm_buf_head(xml), xml->len, 32, &top, err, sizeof(err)) != 0)
        return;
    if (mdm_plist_get_array(top, "PayloadContent", &content) == 0) {
        for (uint32_t i = 0; i < plist_array_get_size(content); i++) {
            plist_t pl = plist_array_get_item(content, i), inner = NULL;
            const char *type = NULL, *challenge = NULL;
            if (mdm_plist_get_string(pl, "PayloadType", &type) == 0 &&
                strcmp(type, "com.apple.security.scep") == 0 &&
                mdm_plist_get_dict(pl, "PayloadContent", &inner) == 0 &&
                mdm_plist_get_string(inner, "Challenge", &challenge) == 0)
                snprintf(st->scep_challenge, sizeof(st->scep_challenge), "%s", challenge);
        }
    }
    plist_free(top);
}

const char *sim_mac_scep_challenge(const sim_mac_t *m)
{
    return m->state ? m->state->scep_challenge : "";
}

/* Opens, parses and installs one profile; NULL on success. */
static plist_t install(sim_mac_t *m, const uint8_t *data, size_t len, bool managed)
{
    sim_profile_t p = {.managed = managed};
    struct sim_filevault fv = {0};
    mdm_buf_t content;
    mdm_buf_init(&content, 0);
    plist_t chain = open_profile(m, data, len, &content, &p.is_signed);
    if (!chain)
        chain = parse_profile(m, mdm_buf_head(&content), content.len, &p, &fv);
    if (!chain && m->fail_install_identifier &&
        strcmp(m->fail_install_identifier, p.identifier) == 0)
        chain = hook_chain(&p);
    if (!chain) {
        int ret = store_profile(m, &p);
        if (ret == -ENOSPC)
            chain = sim_chain_new(4009, "MCInstallationErrorDomain",
                                  "The profile “%s” could not be installed: too many profiles "
                                  "are installed.",
                                  p.identifier);
        else if (ret != 0)
            chain = sim_chain_new(4000, "MCInstallationErrorDomain", "Out of memory.");
    }
    if (chain) {
        profile_dispose(&p);
    } else {
        sim_fv_commit(m, &fv);
        keep_scep_challenge(m, &content);
    }
    sim_fv_dispose(&fv);
    mdm_buf_dispose(&content);
    return chain;
}

enum sim_status sim_install_profile(sim_mac_t *m, plist_t command, plist_t resp)
{
    plist_t payload = command ? plist_dict_get_item(command, "Payload") : NULL;
    if (!payload || plist_get_node_type(payload) != PLIST_DATA)
        return sim_format_error(resp, "Payload");
    uint64_t len = 0;
    const char *data = plist_get_data_ptr(payload, &len);
    plist_t chain = install(m, (const uint8_t *)data, (size_t)len, true);
    return chain ? sim_fail(resp, chain, SIM_ERROR) : SIM_ACKNOWLEDGED;
}

int sim_mac_install_profile_locally(sim_mac_t *m, const void *profile, size_t len)
{
    if (looks_signed(profile, len))
        return -EBADMSG; /* by hand means unsigned here: no trust question */
    plist_t chain = install(m, profile, len, false);
    if (!chain)
        return 0;
    uint64_t code = 0;
    get_uint(plist_array_get_item(chain, 0), "ErrorCode", &code);
    plist_free(chain);
    return code == 4009 ? -ENOSPC : code == 4000 ? -ENOMEM : -EBADMSG;
}

/* The MDM enrollment profile every enrolled Mac lists; mdmd names it <prefix>.enroll. */
static void enrollment_id(const sim_mac_t *m, char *out, size_t len)
{
    snprintf(out, len, "mdmd.%s.enroll", m->env->instance);
}

/* A UUID derived from the UDID, so that the enrollment profile's UUIDs are stable. */
static void stable_uuid(const sim_mac_t *m, unsigned salt, char out[37])
{
    uint8_t h[MDM_SHA256_LEN] = {0};
    char in[96];
    int n = snprintf(in, sizeof(in), "%s/profile/%u", m->udid, salt);
    (void)!mdm_sha256(in, (size_t)n, h);
    snprintf(out, 37, "%02X%02X%02X%02X-%02X%02X-4%X%02X-A%X%02X-%02X%02X%02X%02X%02X%02X",
             h[0], h[1], h[2], h[3], h[4], h[5], h[6] & 15, h[7], h[8] & 15, h[9], h[10],
             h[11], h[12], h[13], h[14], h[15]);
}

/* The enrollment profile is removed: what MDM installed goes with it (managed apps stay, no
 * longer managed) and the Mac stops talking MDM. */
static void unenroll(sim_mac_t *m)
{
    for (size_t i = sim_mac_profile_count(m); i-- > 0;)
        if (m->state->profiles[i].managed)
            drop_profile(m, &m->state->profiles[i]);
    sim_app_t apps[SIM_APPS_MAX];
    size_t n;
    const sim_app_t *have = apps_of(m, &n);
    memcpy(apps, have, n * sizeof(*apps));
    for (size_t i = 0; i < n; i++)
        apps[i].managed = false;
    (void)sim_mac_set_apps(m, apps, n);
    m->unenrolled = true;
}

enum sim_status sim_remove_profile(sim_mac_t *m, const char *identifier, plist_t resp)
{
    char enroll[160];
    enrollment_id(m, enroll, sizeof(enroll));
    if (!identifier[0])
        return sim_format_error(resp, "Identifier");
    if (strcmp(identifier, enroll) == 0) {
        unenroll(m);
        return SIM_ACKNOWLEDGED;
    }
    sim_profile_t *p = find_profile(m, identifier);
    if (!p)
        return sim_fail(resp,
                    sim_chain_new(1001, "MCProfileErrorDomain",
                                  "The profile “%s” is not installed.", identifier),
                    SIM_ERROR);
    if (!p->managed) /* unsupervised: MDM removes only what it installed */
        return sim_fail(resp,
                    sim_chain_new(4004, "MCInstallationErrorDomain",
                                  "The profile “%s” was not installed by the MDM server and "
                                  "cannot be removed by it.",
                                  identifier),
                    SIM_ERROR);
    drop_profile(m, p);
    return SIM_ACKNOWLEDGED;
}

static plist_t payload_item(const sim_payload_t *pl)
{
    plist_t c = plist_new_dict();
    sim_set_str(c, "PayloadType", pl->type);
    sim_set_str(c, "PayloadIdentifier", pl->identifier);
    sim_set_str(c, "PayloadUUID", pl->uuid);
    sim_set_uint(c, "PayloadVersion", pl->version);
    if (pl->display_name[0])
        sim_set_str(c, "PayloadDisplayName", pl->display_name);
    return c;
}

static plist_t profile_item(const sim_profile_t *p)
{
    plist_t d = plist_new_dict();
    sim_set_str(d, "PayloadIdentifier", p->identifier);
    sim_set_str(d, "PayloadUUID", p->uuid);
    sim_set_uint(d, "PayloadVersion", p->version);
    if (p->display_name[0])
        sim_set_str(d, "PayloadDisplayName", p->display_name);
    if (p->organization[0])
        sim_set_str(d, "PayloadOrganization", p->organization);
    sim_set_bool(d, "IsManaged", p->managed);
    sim_set_bool(d, "IsEncrypted", false);
    sim_set_bool(d, "HasRemovalPasscode", false);
    sim_set_bool(d, "PayloadRemovalDisallowed", false);
    plist_t content = plist_new_array();
    for (size_t i = 0; i < p->n_payloads; i++)
        plist_array_append_item(content, payload_item(&p->payloads[i]));
    plist_dict_set_item(d, "PayloadContent", content);
    return d;
}

/* The enrollment profile as mdmd makes it: CA certificate, SCEP and MDM payloads. It was
 * installed by the user, not over MDM. */
static plist_t enrollment_item(const sim_mac_t *m)
{
    static const char *const types[] = {"com.apple.security.root", "com.apple.security.scep",
                                        "com.apple.mdm"};
    static const char *const names[] = {"ca", "scep", "mdm"};
    sim_payload_t pl[3];
    sim_profile_t p = {.version = 1, .n_payloads = 3, .payloads = pl};
    enrollment_id(m, p.identifier, sizeof(p.identifier));
    stable_uuid(m, 0, p.uuid);
    snprintf(p.display_name, sizeof(p.display_name), "mdmd MDM");
    snprintf(p.organization, sizeof(p.organization), "mdmd");
    for (unsigned i = 0; i < 3; i++) {
        memset(&pl[i], 0, sizeof(pl[i]));
        snprintf(pl[i].type, sizeof(pl[i].type), "%s", types[i]);
        snprintf(pl[i].identifier, sizeof(pl[i].identifier), "%.200s.%s", p.identifier,
                 names[i]);
        stable_uuid(m, i + 1, pl[i].uuid);
        pl[i].version = 1;
    }
    return profile_item(&p);
}

plist_t sim_profile_list(const sim_mac_t *m, bool managed_only)
{
    plist_t a = plist_new_array();
    if (!managed_only && !m->unenrolled && !m->erased)
        plist_array_append_item(a, enrollment_item(m));
    for (size_t i = 0; m->state && i < m->state->n_profiles; i++)
        if (m->state->profiles[i].managed || !managed_only)
            plist_array_append_item(a, profile_item(&m->state->profiles[i]));
    return a;
}

/* ---- applications ---- */

static plist_t app_item(const sim_app_t *a)
{
    plist_t d = plist_new_dict();
    sim_set_str(d, "Identifier", a->identifier);
    sim_set_str(d, "Name", a->name);
    sim_set_str(d, "ShortVersion", a->short_version);
    sim_set_str(d, "Version", a->version);
    sim_set_uint(d, "BundleSize", a->bundle_size);
    sim_set_bool(d, "Installing", false);
    sim_set_bool(d, "IsValidated", true);
    sim_set_bool(d, "HasUpdateAvailable", false);
    return d;
}

static bool listed(plist_t identifiers, const char *id)
{
    uint32_t n = plist_array_get_size(identifiers);
    for (uint32_t i = 0; i < n; i++) {
        plist_t s = plist_array_get_item(identifiers, i);
        uint64_t len = 0;
        const char *v = plist_get_node_type(s) == PLIST_STRING ? plist_get_string_ptr(s, &len)
                                                               : NULL;
        if (v && strcmp(v, id) == 0)
            return true;
    }
    return false;
}

plist_t sim_app_list(const sim_mac_t *m, plist_t identifiers, bool managed_only)
{
    if (identifiers && plist_get_node_type(identifiers) != PLIST_ARRAY)
        identifiers = NULL;
    size_t n;
    const sim_app_t *apps = apps_of(m, &n);
    plist_t a = plist_new_array();
    for (size_t i = 0; i < n; i++)
        if ((!managed_only || apps[i].managed) &&
            (!identifiers || listed(identifiers, apps[i].identifier)))
            plist_array_append_item(a, app_item(&apps[i]));
    return a;
}

enum sim_status sim_remove_application(sim_mac_t *m, const char *identifier, plist_t resp)
{
    if (!identifier[0])
        return sim_format_error(resp, "Identifier");
    const sim_app_t *a = sim_mac_find_app(m, identifier);
    if (!a)
        return sim_fail(resp,
                    sim_chain_new(12028, "MCMDMErrorDomain", "The app “%s” is not installed.",
                                  identifier),
                    SIM_ERROR);
    if (!a->managed)
        return sim_fail(resp,
                    sim_chain_new(12029, "MCMDMErrorDomain", "The app “%s” is not managed.",
                                  identifier),
                    SIM_ERROR);
    /* Copy the list without it (the defaults become the Mac's own list first). */
    sim_app_t keep[SIM_APPS_MAX];
    size_t n, k = 0;
    const sim_app_t *apps = apps_of(m, &n);
    for (size_t i = 0; i < n; i++)
        if (&apps[i] != a)
            keep[k++] = apps[i];
    if (sim_mac_set_apps(m, keep, k) != 0)
        return sim_fail(resp, sim_chain_new(12000, "MCMDMErrorDomain", "Out of memory."),
                    SIM_ERROR);
    return SIM_ACKNOWLEDGED;
}

/* ---- Settings ---- */

/* Applies one Settings item; NULL on success, else its ErrorChain. */
static plist_t apply_setting(sim_mac_t *m, plist_t item, const char *name)
{
    static const char *const accepted[] = {"Bluetooth", "ApplicationConfiguration",
                                           "OrganizationInfo", "MDMOptions"};
    bool dev = strcmp(name, "DeviceName") == 0;
    if (dev || strcmp(name, "HostName") == 0) {
        char value[64];
        if (!sim_get_string(item, name, value, sizeof(value)) || !value[0])
            return sim_chain_new(12001, "MCMDMErrorDomain",
                                 "The setting “%s” needs a non-empty “%s”.", name, name);
        if (dev)
            snprintf(m->device_name, sizeof(m->device_name), "%s", value);
        else
            snprintf(m->host_name, sizeof(m->host_name), "%s", value);
        return NULL;
    }
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++)
        if (strcmp(name, accepted[i]) == 0)
            return NULL; /* accepted; the simulator keeps nothing of it */
    return sim_chain_new(12070, "MCMDMErrorDomain",
                         "The setting “%s” is not supported on this device.", name);
}

enum sim_status sim_apply_settings(sim_mac_t *m, plist_t command, plist_t resp)
{
    plist_t items = command ? plist_dict_get_item(command, "Settings") : NULL;
    if (!items || plist_get_node_type(items) != PLIST_ARRAY)
        return sim_format_error(resp, "Settings");
    /* One result per item, in order: the command is acknowledged, items may fail. */
    plist_t results = plist_new_array();
    uint32_t n = plist_array_get_size(items);
    for (uint32_t i = 0; i < n; i++) {
        plist_t item = plist_array_get_item(items, i);
        char name[64] = "";
        plist_t chain = plist_get_node_type(item) == PLIST_DICT &&
                                sim_get_string(item, "Item", name, sizeof(name))
                            ? apply_setting(m, item, name)
                            : sim_chain_new(12001, "MCMDMErrorDomain",
                                            "The setting at index %u has no “Item”.", i);
        plist_t r = plist_new_dict();
        sim_set_str(r, "Item", name);
        sim_set_str(r, "Status", chain ? "Error" : "Acknowledged");
        if (chain)
            plist_dict_set_item(r, "ErrorChain", chain);
        plist_array_append_item(results, r);
    }
    plist_dict_set_item(resp, "Settings", results);
    return SIM_ACKNOWLEDGED;
}

/* ---- software updates ---- */

/* Releases the simulator offers, newest per line. */
static const struct os_release {
    const char *version, *build, *name;
} releases[] = {
    {"15.1", "24B83", "macOS Sequoia"},
    {"14.7.1", "23H222", "macOS Sonoma"},
    {"13.7.1", "22H221", "macOS Ventura"},
};
#define N_RELEASES (sizeof(releases) / sizeof(releases[0]))
#define NEWEST_MAJOR 15

/* <0, 0, >0 as version a is older, equal or newer than b ("14.4.1" style). */
static int version_cmp(const char *a, const char *b)
{
    for (int i = 0; i < 4; i++) {
        char *ea, *eb;
        long x = strtol(a, &ea, 10), y = strtol(b, &eb, 10);
        if (x != y)
            return x < y ? -1 : 1;
        a = *ea == '.' ? ea + 1 : ea;
        b = *eb == '.' ? eb + 1 : eb;
    }
    return 0;
}

/* Whether release r is offered to m: a newer one of its own major version, or the newest
 * major version when it runs an older one. */
static bool offered(const sim_mac_t *m, const struct os_release *r)
{
    long have = strtol(m->os_version, NULL, 10), major = strtol(r->version, NULL, 10);
    if (major == have)
        return version_cmp(r->version, m->os_version) > 0;
    return major == NEWEST_MAJOR && have < NEWEST_MAJOR;
}

static void product_key(const struct os_release *r, const sim_mac_t *m, char *out, size_t len)
{
    bool major = strtol(r->version, NULL, 10) != strtol(m->os_version, NULL, 10);
    snprintf(out, len, "MSU_UPDATE_%s_patch_%s_%s", r->build, r->version,
             major ? "major" : "minor");
}

static plist_t update_item(const sim_mac_t *m, const struct os_release *r)
{
    char key[96], name[96];
    bool major = strtol(r->version, NULL, 10) != strtol(m->os_version, NULL, 10);
    product_key(r, m, key, sizeof(key));
    snprintf(name, sizeof(name), "%s %s", r->name, r->version);
    plist_t d = plist_new_dict();
    sim_set_str(d, "ProductKey", key);
    sim_set_str(d, "HumanReadableName", name);
    sim_set_str(d, "HumanReadableNameLocale", "en");
    sim_set_str(d, "ProductName", r->name);
    sim_set_str(d, "Version", r->version);
    sim_set_str(d, "Build", r->build);
    sim_set_uint(d, "DownloadSize", major ? 13421772800ull : 1932735283ull);
    sim_set_uint(d, "InstallSize", major ? 26843545600ull : 3865470566ull);
    plist_dict_set_item(d, "AppIdentifiersToClose", plist_new_array());
    sim_set_bool(d, "IsCritical", false);
    sim_set_bool(d, "IsConfigDataUpdate", false);
    sim_set_bool(d, "IsFirmwareUpdate", false);
    sim_set_bool(d, "IsMajorOSUpdate", major);
    sim_set_bool(d, "RestartRequired", true);
    sim_set_bool(d, "AllowsInstallLater", true);
    sim_set_bool(d, "RequiresBootstrapToken", m->apple_silicon);
    sim_set_bool(d, "IsSecurityResponse", false);
    return d;
}

plist_t sim_available_os_updates(const sim_mac_t *m)
{
    plist_t a = plist_new_array();
    for (size_t i = 0; i < N_RELEASES; i++)
        if (offered(m, &releases[i]))
            plist_array_append_item(a, update_item(m, &releases[i]));
    return a;
}

plist_t sim_os_update_status(const sim_mac_t *m)
{
    plist_t a = plist_new_array();
    for (size_t i = 0; m->state && i < m->state->n_updates; i++) {
        const struct sim_os_update *u = &m->state->updates[i];
        plist_t d = plist_new_dict();
        sim_set_str(d, "ProductKey", u->product_key);
        sim_set_bool(d, "IsDownloaded", false);
        plist_dict_set_item(d, "DownloadPercentComplete", plist_new_real(0.0));
        sim_set_str(d, "Status", u->status);
        plist_array_append_item(a, d);
    }
    return a;
}

/* The offered release named by ProductKey or ProductVersion, or NULL. */
static const struct os_release *find_release(const sim_mac_t *m, const char *key,
                                             const char *version)
{
    for (size_t i = 0; i < N_RELEASES; i++) {
        char k[96];
        product_key(&releases[i], m, k, sizeof(k));
        if (offered(m, &releases[i]) &&
            (strcmp(k, key) == 0 || strcmp(releases[i].version, version) == 0))
            return &releases[i];
    }
    return NULL;
}

/* Remembers a scheduled update (replacing one with the same key) for OSUpdateStatus. */
static void remember_update(sim_mac_t *m, const char *key, const char *action,
                            const char *status)
{
    struct sim_state *st = sim_state_of(m);
    if (!st)
        return;
    size_t i = 0;
    while (i < st->n_updates && strcmp(st->updates[i].product_key, key) != 0)
        i++;
    if (i == SIM_OS_UPDATES_MAX)
        return;
    if (i == st->n_updates)
        st->n_updates++;
    snprintf(st->updates[i].product_key, sizeof(st->updates[i].product_key), "%s", key);
    snprintf(st->updates[i].action, sizeof(st->updates[i].action), "%s", action);
    snprintf(st->updates[i].status, sizeof(st->updates[i].status), "%s", status);
}

/* One UpdateResults item for a requested update. */
static plist_t schedule_one(sim_mac_t *m, const char *key, const char *version,
                            const char *action)
{
    const struct os_release *r = find_release(m, key, version);
    plist_t d = plist_new_dict();
    if (!r) {
        sim_set_str(d, "ProductKey", key[0] ? key : version);
        sim_set_str(d, "InstallAction", "Error");
        sim_set_str(d, "Status", "Idle");
        plist_dict_set_item(d, "ErrorChain",
                            sim_chain_new(12064, "MCMDMErrorDomain",
                                          "The software update “%s” is not available.",
                                          key[0] ? key : version));
        return d;
    }
    char k[96];
    product_key(r, m, k, sizeof(k));
    /* Default: macOS downloads and installs as the device state allows. */
    const char *act = strcmp(action, "Default") == 0 || !action[0] ? "InstallASAP" : action;
    const char *status = strcmp(act, "NotifyOnly") == 0 ? "Idle" : "Downloading";
    remember_update(m, k, act, status);
    sim_set_str(d, "ProductKey", k);
    sim_set_str(d, "InstallAction", act);
    sim_set_str(d, "Status", status);
    return d;
}

enum sim_status sim_schedule_os_update(sim_mac_t *m, plist_t command, plist_t resp)
{
    plist_t updates = command ? plist_dict_get_item(command, "Updates") : NULL;
    if (updates && plist_get_node_type(updates) != PLIST_ARRAY)
        return sim_format_error(resp, "Updates");
    plist_t results = plist_new_array();
    if (!updates) { /* no list: the default behaviour for every offered update */
        for (size_t i = 0; i < N_RELEASES; i++)
            if (offered(m, &releases[i]))
                plist_array_append_item(results,
                                        schedule_one(m, "", releases[i].version, "Default"));
    }
    uint32_t n = updates ? plist_array_get_size(updates) : 0;
    for (uint32_t i = 0; i < n; i++) {
        plist_t u = plist_array_get_item(updates, i);
        char key[96] = "", version[32] = "", action[32] = "";
        if (plist_get_node_type(u) != PLIST_DICT)
            continue;
        (void)sim_get_string(u, "ProductKey", key, sizeof(key));
        (void)sim_get_string(u, "ProductVersion", version, sizeof(version));
        (void)sim_get_string(u, "InstallAction", action, sizeof(action));
        plist_array_append_item(results, schedule_one(m, key, version, action));
    }
    plist_dict_set_item(resp, "UpdateResults", results);
    return SIM_ACKNOWLEDGED;
}
