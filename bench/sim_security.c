/*
 * sim_security: the security actions of a simulated Mac (see sim.h, "security"): DeviceLock,
 * EraseDevice, FileVault turned on by a profile, SecurityInfo's FDE_* keys, and
 * RotateFileVaultKey. Failures answer with an ErrorChain as in sim_profiles.c (plausible
 * codes, macOS's domains).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bench/sim_private.h"
#include "core/cms.h"
#include "core/crypto.h"

#define FV2_TYPE "com.apple.MCX.FileVault2"
#define ESCROW_TYPE "com.apple.security.FDERecoveryKeyEscrow"
#define PKCS1_TYPE "com.apple.security.pkcs1"

bool sim_mac_silent(const sim_mac_t *m) { return m->locked || m->erased || m->unenrolled; }

int sim_mac_unlock(sim_mac_t *m, const char *pin)
{
    if (m->locked && strcmp(pin ? pin : "", m->lock_pin) != 0)
        return -EACCES;
    m->locked = false;
    return 0;
}

const char *sim_mac_filevault_prk(const sim_mac_t *m)
{
    return m->state ? m->state->fv.prk : "";
}

/* ---- PINs ---- */

static bool six_digits(const char *s)
{
    if (strlen(s) != 6)
        return false;
    for (size_t i = 0; i < 6; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Reads command's PIN into pin ("" when absent and not required). SIM_ACKNOWLEDGED when it is
 * usable; else the ErrorChain is in resp and the status says why. */
static enum sim_status read_pin(plist_t command, bool required, char pin[8], plist_t resp)
{
    pin[0] = '\0';
    plist_t n = command ? plist_dict_get_item(command, "PIN") : NULL;
    if (!n && !required)
        return SIM_ACKNOWLEDGED;
    char v[64];
    if (!sim_get_string(command, "PIN", v, sizeof(v)))
        return sim_format_error(resp, "PIN");
    if (!six_digits(v))
        return sim_fail(resp,
                        sim_chain_new(12080, "MCMDMErrorDomain",
                                      "The PIN must be exactly six digits."),
                        SIM_ERROR);
    memcpy(pin, v, 7); /* six digits and the NUL: checked above */
    return SIM_ACKNOWLEDGED;
}

/* Whether the optional key is absent or a string. */
static bool string_or_absent(plist_t command, const char *key)
{
    plist_t n = command ? plist_dict_get_item(command, key) : NULL;
    return !n || plist_get_node_type(n) == PLIST_STRING;
}

/* ---- DeviceLock ---- */

enum sim_status sim_device_lock(sim_mac_t *m, plist_t command, plist_t resp)
{
    char pin[8], message[256] = "";
    enum sim_status st = read_pin(command, true, pin, resp);
    if (st != SIM_ACKNOWLEDGED)
        return st;
    if (!string_or_absent(command, "Message"))
        return sim_format_error(resp, "Message");
    if (!string_or_absent(command, "PhoneNumber"))
        return sim_format_error(resp, "PhoneNumber");
    bool has_message = sim_get_string(command, "Message", message, sizeof(message));
    if (has_message || plist_dict_get_item(command, "PhoneNumber"))
        sim_set_str(resp, "MessageResult", "Success"); /* shown on the lock screen */
    snprintf(m->lock_pin, sizeof(m->lock_pin), "%s", pin);
    snprintf(m->lock_message, sizeof(m->lock_message), "%s", message);
    m->locked = true;
    return SIM_ACKNOWLEDGED;
}

/* ---- EraseDevice ---- */

static bool valid_obliteration(plist_t command)
{
    static const char *const values[] = {"Default", "DoNotObliterate", "ObliterateWithWarning",
                                         "Always"};
    char v[32];
    if (!plist_dict_get_item(command, "ObliterationBehavior"))
        return true;
    if (!sim_get_string(command, "ObliterationBehavior", v, sizeof(v)))
        return false;
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        if (strcmp(v, values[i]) == 0)
            return true;
    return false;
}

/* Erase All Content and Settings: what is left is a Mac fresh from the factory, with Apple's
 * own apps, that talks no MDM until it is enrolled again. */
static void wipe(sim_mac_t *m, const char *pin)
{
    sim_app_t apps[SIM_APPS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < sim_default_apps_count; i++)
        if (strncmp(sim_default_apps[i].identifier, "com.apple.", 10) == 0)
            apps[n++] = sim_default_apps[i];
    sim_state_free(m); /* profiles, apps, FileVault, updates, the kept command */
    (void)sim_mac_set_apps(m, apps, n);
    m->device_name[0] = m->host_name[0] = '\0';
    m->locked = m->unenrolled = false;
    m->lock_pin[0] = m->lock_message[0] = '\0';
    memset(m->push_token, 0, sizeof(m->push_token));
    m->push_magic[0] = '\0';
    snprintf(m->erase_pin, sizeof(m->erase_pin), "%s", pin);
    m->erased = true;
}

enum sim_status sim_erase_device(sim_mac_t *m, plist_t command, plist_t resp)
{
    char pin[8] = "";
    if (!m->apple_silicon) { /* T2 and Intel Macs lock the firmware with the PIN */
        enum sim_status st = read_pin(command, true, pin, resp);
        if (st != SIM_ACKNOWLEDGED)
            return st;
    } else if (sim_get_string(command, "PIN", pin, sizeof(pin)) && !six_digits(pin)) {
        pin[0] = '\0'; /* Apple Silicon ignores the PIN */
    }
    if (command && !valid_obliteration(command))
        return sim_format_error(resp, "ObliterationBehavior");
    wipe(m, pin);
    return SIM_ACKNOWLEDGED;
}

/* ---- FileVault ---- */

/* A new personal recovery key: 6 groups of 4 of A-Z 0-9, from the CSPRNG. 0 or -EIO. */
static int make_prk(char out[SIM_PRK_LEN + 1])
{
    static const char set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    size_t k = 0;
    while (k < 24) {
        uint8_t b[32];
        if (mdm_random_bytes(b, sizeof(b)) != 0)
            return -EIO;
        for (size_t i = 0; i < sizeof(b) && k < 24; i++)
            if (b[i] < 252) { /* 252 = 7 * 36: no bias; a '-' after every 4 */
                out[k + k / 4] = set[b[i] % 36];
                k++;
            }
    }
    for (size_t g = 1; g < 6; g++)
        out[5 * g - 1] = '-';
    out[SIM_PRK_LEN] = '\0';
    return 0;
}

void sim_fv_dispose(struct sim_filevault *fv)
{
    mdm_buf_dispose(&fv->cert);
    mdm_buf_dispose(&fv->cms);
    memset(fv, 0, sizeof(*fv));
}

void sim_fv_commit(sim_mac_t *m, struct sim_filevault *next)
{
    struct sim_state *st = next->prk[0] ? sim_state_of(m) : NULL;
    if (!st)
        return;
    sim_fv_dispose(&st->fv);
    st->fv = *next;
    memset(next, 0, sizeof(*next));
}

/* Escrows next->prk: a copy of the certificate and the PRK enveloped to it into next. 0 or a
 * cms code. */
static int escrow(struct sim_filevault *next, const uint8_t *cert, size_t len)
{
    int ret = mdm_buf_append(&next->cert, cert, len);
    if (ret == 0)
        ret = mdm_cms_envelope(cert, len, next->prk, strlen(next->prk), &next->cms);
    return ret;
}

/* The first payload of content whose key equals value, or NULL. */
static plist_t payload_with(plist_t content, const char *key, const char *value)
{
    uint32_t n = content ? plist_array_get_size(content) : 0;
    for (uint32_t i = 0; i < n; i++) {
        plist_t p = plist_array_get_item(content, i);
        char v[256];
        if (sim_get_string(p, key, v, sizeof(v)) && strcmp(v, value) == 0)
            return p;
    }
    return NULL;
}

/* An escrow payload that cannot be installed. */
static plist_t escrow_chain(plist_t escrow, const char *fmt, const char *arg)
{
    char id[256] = "";
    (void)sim_get_string(escrow, "PayloadIdentifier", id, sizeof(id));
    plist_t chain = sim_chain_new(4001, "MCInstallationErrorDomain",
                                  "The profile could not be installed.");
    sim_chain_add(chain, 2004, "MCPayloadErrorDomain", "The payload “%s”: %s%s", id, fmt, arg);
    return chain;
}

/* The escrow certificate escrow names (DER in *cert), or the ErrorChain why not. */
static plist_t escrow_cert(plist_t content, plist_t escrow, const uint8_t **cert, size_t *len)
{
    char ref[64];
    if (!sim_get_string(escrow, "EncryptCertPayloadUUID", ref, sizeof(ref)))
        return escrow_chain(escrow, "the required field “EncryptCertPayloadUUID” is missing",
                            ".");
    plist_t p = payload_with(content, "PayloadUUID", ref);
    char type[64] = "";
    (void)sim_get_string(p, "PayloadType", type, sizeof(type));
    plist_t data = p ? plist_dict_get_item(p, "PayloadContent") : NULL;
    if (strcmp(type, PKCS1_TYPE) != 0 || !data || plist_get_node_type(data) != PLIST_DATA)
        return escrow_chain(escrow, "no certificate payload (" PKCS1_TYPE ") has the UUID ",
                            ref);
    uint64_t n = 0;
    *cert = (const uint8_t *)plist_get_data_ptr(data, &n);
    *len = (size_t)n;
    return n ? NULL : escrow_chain(escrow, "the certificate payload is empty: ", ref);
}

plist_t sim_fv_prepare(const sim_mac_t *m, plist_t content, struct sim_filevault *next)
{
    memset(next, 0, sizeof(*next));
    plist_t esc = payload_with(content, "PayloadType", ESCROW_TYPE);
    if (!esc)
        return NULL;
    const uint8_t *cert = NULL;
    size_t len = 0;
    plist_t chain = escrow_cert(content, esc, &cert, &len);
    plist_t fv2 = payload_with(content, "PayloadType", FV2_TYPE);
    char enable[8] = "";
    if (chain || !sim_get_string(fv2, "Enable", enable, sizeof(enable)) ||
        strcmp(enable, "On") != 0)
        return chain;
    /* Turned on now, or already on: the key stays and is escrowed to this certificate. */
    const char *have = sim_mac_filevault_prk(m);
    if (have[0])
        snprintf(next->prk, sizeof(next->prk), "%s", have);
    else if (make_prk(next->prk) != 0)
        return escrow_chain(esc, "no random numbers", "");
    if (escrow(next, cert, len) != 0) {
        sim_fv_dispose(next);
        return escrow_chain(esc, "the certificate cannot encrypt the recovery key", ".");
    }
    return NULL;
}

void sim_fv_security_info(const sim_mac_t *m, plist_t info)
{
    const struct sim_filevault *fv = m->state ? &m->state->fv : NULL;
    bool on = fv && fv->prk[0];
    sim_set_bool(info, "FDE_Enabled", on);
    sim_set_bool(info, "FDE_HasPersonalRecoveryKey", on);
    sim_set_bool(info, "FDE_HasInstitutionalRecoveryKey", false);
    if (!on || !fv->cms.len)
        return;
    plist_dict_set_item(info, "FDE_PersonalRecoveryKeyCMS",
                        plist_new_data((const char *)mdm_buf_head(&fv->cms), fv->cms.len));
    sim_set_str(info, "FDE_PersonalRecoveryKeyDeviceKey", m->serial);
}

/* ---- RotateFileVaultKey ---- */

static enum sim_status rotate_error(plist_t resp, uint64_t code, const char *text)
{
    return sim_fail(resp, sim_chain_new(code, "MCMDMErrorDomain", "%s", text), SIM_ERROR);
}

/* The command's keys, checked: SIM_ACKNOWLEDGED, or the status with resp's ErrorChain. */
static enum sim_status rotate_check(const sim_mac_t *m, plist_t command, plist_t resp)
{
    char type[32];
    plist_t unlock = command ? plist_dict_get_item(command, "FileVaultUnlock") : NULL;
    plist_t reply = command ? plist_dict_get_item(command, "ReplyEncryptionCertificate") : NULL;
    if (!sim_get_string(command, "KeyType", type, sizeof(type)) ||
        (strcmp(type, "personal") != 0 && strcmp(type, "institutional") != 0))
        return sim_format_error(resp, "KeyType");
    if (!unlock || plist_get_node_type(unlock) != PLIST_DICT)
        return sim_format_error(resp, "FileVaultUnlock");
    if (reply && plist_get_node_type(reply) != PLIST_DATA)
        return sim_format_error(resp, "ReplyEncryptionCertificate");
    if (strcmp(type, "institutional") == 0)
        return rotate_error(resp, 12077,
                            "Institutional recovery keys are not supported on APFS volumes.");
    const char *prk = sim_mac_filevault_prk(m);
    char password[128];
    if (!prk[0])
        return rotate_error(resp, 12075, "FileVault is not turned on.");
    if (!sim_get_string(unlock, "Password", password, sizeof(password)) ||
        strcmp(password, prk) != 0)
        return rotate_error(resp, 12076, "The recovery key could not be verified.");
    return SIM_ACKNOWLEDGED;
}

enum sim_status sim_rotate_filevault_key(sim_mac_t *m, plist_t command, plist_t resp)
{
    enum sim_status st = rotate_check(m, command, resp);
    if (st != SIM_ACKNOWLEDGED)
        return st;
    const struct sim_filevault *fv = &m->state->fv;
    struct sim_filevault next = {0};
    mdm_buf_t sealed;
    mdm_buf_init(&sealed, 0);
    plist_t reply = plist_dict_get_item(command, "ReplyEncryptionCertificate");
    uint64_t rlen = 0;
    const char *rcert = reply ? plist_get_data_ptr(reply, &rlen) : NULL;
    if (make_prk(next.prk) != 0 ||
        (fv->cert.len &&
         escrow(&next, mdm_buf_head(&fv->cert), fv->cert.len) != 0))
        st = rotate_error(resp, 12078, "The new recovery key could not be escrowed.");
    else if (rcert && mdm_cms_envelope((const uint8_t *)rcert, (size_t)rlen, next.prk,
                                       SIM_PRK_LEN, &sealed) != 0)
        st = rotate_error(resp, 12079,
                          "The reply encryption certificate cannot encrypt the recovery key.");
    if (st == SIM_ACKNOWLEDGED) {
        if (rcert) { /* without a certificate the new key goes only to the escrow */
            plist_t result = plist_new_dict();
            plist_dict_set_item(result, "EncryptedNewRecoveryKey",
                                plist_new_data((const char *)mdm_buf_head(&sealed),
                                               sealed.len));
            plist_dict_set_item(resp, "RotateResult", result);
        }
        sim_fv_commit(m, &next);
    }
    sim_fv_dispose(&next);
    mdm_buf_dispose(&sealed);
    return st;
}
