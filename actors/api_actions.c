/*
 * Admin API v1, security actions (docs/security-actions.md). Dispatched by api.c:
 *
 *   POST devices/{udid}/actions/lock               DeviceLock with a PIN      device.lock
 *   POST devices/{udid}/actions/cancel-lock        cancel an undelivered lock device.cancel_lock
 *   POST devices/{udid}/actions/erase              EraseDevice (confirm)      device.erase
 *   POST devices/{udid}/actions/selective-wipe     remove what mdmd installed device.selective_wipe
 *   POST devices/{udid}/actions/restore-policies   deliver policies again     device.restore_policies
 *   POST devices/{udid}/actions/revoke             leave management           device.revoke
 *   POST devices/{udid}/actions/rotate-filevault-key  RotateFileVaultKey      device.rotate_filevault_key
 *   POST devices/{udid}/actions/renew-certificate  a new identity (SCEP)     device.renew_certificate
 *   POST devices/{udid}/actions/set-ade            {"ade": bool}              device.set_ade
 *   GET  devices/{udid}/actions                    the actions and their progress
 *   GET  devices/{udid}/lock-pin                   the last lock/erase PIN    device.pin_view
 *   GET  devices/{udid}/filevault-key              the escrowed key + history device.filevault_key_reveal
 *
 * Every call is audited (who, what, target, source, status); PIN views and key reveals are
 * audit events of their own, and no audit detail holds a PIN or key.
 *
 * Flow of an action that sends a command: the request is checked on the shard (PIN format,
 * confirmation); a storage job reads what the action depends on (the device, a pending action
 * of the same kind, the Mac's passcode policy, the escrowed FileVault key) and builds the
 * command; back on the shard the sealed command record and the sealed PIN go into the shard's
 * batch, and once durable the command is handed to the device actor (which pushes the Mac).
 * The answer says what was queued; the progress is the command's result (queued, sent,
 * acknowledged, error with Apple's error chain), shown by GET devices/{udid}/actions.
 */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/api_internal.h"
#include "actors/device.h"
#include "actors/enroll.h"
#include "actors/policy.h"
#include "actors/security.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/plist.h"
#include "storage/mdm.h"
#include "storage/policy.h"

#define PLIST_DEPTH 32
#define MESSAGE_MAX 255
#define PHONE_MAX 63

enum akind { A_LOCK, A_CANCEL_LOCK, A_ERASE, A_SELECTIVE_WIPE, A_RESTORE, A_REVOKE, A_ROTATE,
             A_RENEW, A_SET_ADE, A_PIN_VIEW, A_FV_REVEAL };

static const struct {
    const char *name;   /* path segment */
    const char *audit;  /* audit action */
} actions[] = {
    [A_LOCK] = {"lock", "device.lock"},
    [A_CANCEL_LOCK] = {"cancel-lock", "device.cancel_lock"},
    [A_ERASE] = {"erase", "device.erase"},
    [A_SELECTIVE_WIPE] = {"selective-wipe", "device.selective_wipe"},
    [A_RESTORE] = {"restore-policies", "device.restore_policies"},
    [A_REVOKE] = {"revoke", "device.revoke"},
    [A_ROTATE] = {"rotate-filevault-key", "device.rotate_filevault_key"},
    [A_RENEW] = {"renew-certificate", "device.renew_certificate"},
    [A_SET_ADE] = {"set-ade", "device.set_ade"},
    [A_PIN_VIEW] = {"lock-pin", "device.pin_view"},
    [A_FV_REVEAL] = {"filevault-key", "device.filevault_key_reveal"},
};

struct ajob {
    struct mdm_api_call c; /* first */
    mdm_shard_msg_t msg;
    enum akind kind;
    char udid[MDM_UDID_MAX + 1];
    /* request */
    char pin[MDM_PIN_DIGITS + 1];
    bool pin_generated;
    char message[MESSAGE_MAX + 1], phone[PHONE_MAX + 1];
    char obliteration[32];
    int disallow_proximity, preserve_data_plan; /* -1 = not given */
    bool ade;
    /* planned on the worker */
    struct mdm_api_outcome out;
    char uuid[MDM_UUID_MAX + 1];
    char request_type[32];
    mdm_buf_t plist;        /* the command, plain: handed to the device actor */
    mdm_buf_t sealed_cmd;   /* the command record's plist, sealed */
    bool seal_command;
    char secret_name[16];   /* "" = no secret to store */
    mdm_buf_t sealed_secret;
    json_t *reveal;         /* PIN / key views, cancel after delivery: what to answer */
    mdm_batch_t *records;   /* renewal: the enrollment and challenge, committed by the job */
    char enrollment_id[MDM_ENROLL_ID_LEN + 1];
    int pending_status;     /* cancel-lock: the lock command's status */
};

static void ajob_free(struct mdm_api_call *c)
{
    struct ajob *j = (struct ajob *)c;
    mdm_buf_dispose(&j->plist);
    mdm_buf_dispose(&j->sealed_cmd);
    mdm_buf_dispose(&j->sealed_secret);
    json_decref(j->reveal);
    mdm_batch_free(j->records);
    explicit_bzero(j->pin, sizeof(j->pin));
    free(j);
}

#define ajob_fail(j, ...) mdm_api_outcome_set(&(j)->out, __VA_ARGS__)

/* ------------------------------------------------------------------------------------------
 * Worker side
 */

static int action_uuid(const char *prefix, char out[MDM_UUID_MAX + 1])
{
    uint8_t r[12];
    char hex[25];
    if (mdm_random_bytes(r, sizeof(r)) != 0)
        return MDM_ECRYPTO;
    mdm_hex_encode(r, sizeof(r), hex);
    snprintf(out, MDM_UUID_MAX + 1, "%s%s", prefix, hex);
    return 0;
}

/* Encodes {Command: cmd, CommandUUID} into j->plist (cmd is consumed). */
static int encode_command(struct ajob *j, plist_t cmd)
{
    plist_t root = plist_new_dict();
    int ret = root && cmd ? mdm_plist_dict_set_item(root, "Command", cmd) : -ENOMEM;
    if (ret != 0 && !root)
        plist_free(cmd);
    if (ret == 0)
        ret = mdm_plist_dict_set_string(root, "CommandUUID", j->uuid);
    if (ret == 0)
        ret = mdm_plist_to_xml(root, &j->plist);
    plist_free(root);
    if (ret == 0 && j->seal_command)
        ret = mdm_dev_seal_command(j->uuid, mdm_buf_head(&j->plist), j->plist.len,
                                   &j->sealed_cmd);
    return ret;
}

struct pending {
    const char *prefix;
    char uuid[MDM_UUID_MAX + 1]; /* the newest command with the prefix */
    uint64_t at_ms;
    int status;
};

static int on_result(void *arg, const mdm_result_t *r)
{
    struct pending *p = arg;
    if (strncmp(r->uuid, p->prefix, strlen(p->prefix)) != 0 || !r->n_events)
        return 0;
    uint64_t at = r->events[0].at_ms;
    if (!p->uuid[0] || at >= p->at_ms) {
        snprintf(p->uuid, sizeof(p->uuid), "%s", r->uuid);
        p->at_ms = at;
        p->status = r->status;
    }
    return 0;
}

static bool in_flight(int status)
{
    return status == MDM_CMD_QUEUED || status == MDM_CMD_SENT || status == MDM_CMD_NOTNOW;
}

/* The newest command of the device whose UUID starts with prefix. */
static int newest_action(mdm_store_t *s, const char *udid, const char *prefix, struct pending *p)
{
    memset(p, 0, sizeof(*p));
    p->prefix = prefix;
    p->status = -1;
    return mdm_store_list_results(s, udid, on_result, p);
}

struct passcode_check {
    mdm_store_t *s;
    bool forbids_simple;
};

static int on_deployment(void *arg, const mdm_deployment_t *d)
{
    struct passcode_check *pc = arg;
    if (d->action != MDM_DEPLOY_INSTALL)
        return 0;
    mdm_policy_t p;
    if (mdm_store_get_policy(pc->s, d->policy_id, &p) == 0 && strcmp(p.type, "passcode") == 0) {
        json_t *set = json_loads(p.settings_json ? p.settings_json : "{}", 0, NULL);
        json_t *simple = json_object_get(set, "allowSimple");
        if (simple && json_is_false(simple))
            pc->forbids_simple = true;
        json_decref(set);
    }
    mdm_policy_dispose(&p);
    return 0;
}

/* The PIN against the Mac's passcode policy (a Passcode policy delivered to it). */
static int check_pin_policy(mdm_store_t *s, struct ajob *j)
{
    struct passcode_check pc = {s, false};
    int ret = mdm_store_list_device_deployments(s, j->udid, on_deployment, &pc);
    if (ret != 0)
        return ret;
    if (pc.forbids_simple && mdm_pin_simple(j->pin))
        return ajob_fail(j, 422, "invalid parameter",
                         "pin: the Mac's passcode policy does not allow simple values (one digit "
                         "repeated, or a run such as 123456)");
    return 0;
}

static int store_pin_secret(struct ajob *j, const char *name)
{
    json_t *doc = json_pack("{s:s, s:I, s:s}", "pin", j->pin, "created_ms",
                            (json_int_t)mdm_wall_ms(), "command_uuid", j->uuid);
    int ret = doc ? mdm_security_seal(j->udid, name, doc, &j->sealed_secret) : -ENOMEM;
    json_decref(doc);
    snprintf(j->secret_name, sizeof(j->secret_name), "%s", name);
    return ret;
}

static int plan_lock_or_erase(mdm_store_t *s, struct ajob *j)
{
    bool lock = j->kind == A_LOCK;
    const char *prefix = lock ? MDM_ACTION_LOCK_PREFIX : MDM_ACTION_ERASE_PREFIX;
    struct pending p;
    int ret = newest_action(s, j->udid, prefix, &p);
    if (ret != 0)
        return ret;
    if (p.uuid[0] && in_flight(p.status))
        return ajob_fail(j, 409, "conflict", "a %s of this Mac is already pending (command %s)",
                         lock ? "lock" : "erase", p.uuid);
    if ((ret = check_pin_policy(s, j)) != 0)
        return ret;
    j->seal_command = true; /* it carries the PIN */
    snprintf(j->request_type, sizeof(j->request_type), lock ? "DeviceLock" : "EraseDevice");
    if ((ret = action_uuid(prefix, j->uuid)) != 0)
        return ret;
    plist_t cmd = plist_new_dict();
    ret = cmd ? mdm_plist_dict_set_string(cmd, "RequestType", j->request_type) : -ENOMEM;
    if (ret == 0)
        ret = mdm_plist_dict_set_string(cmd, "PIN", j->pin);
    if (ret == 0 && lock && j->message[0])
        ret = mdm_plist_dict_set_string(cmd, "Message", j->message);
    if (ret == 0 && lock && j->phone[0])
        ret = mdm_plist_dict_set_string(cmd, "PhoneNumber", j->phone);
    if (ret == 0 && !lock && j->obliteration[0])
        ret = mdm_plist_dict_set_string(cmd, "ObliterationBehavior", j->obliteration);
    if (ret == 0 && !lock && j->disallow_proximity >= 0)
        ret = mdm_plist_dict_set_bool(cmd, "DisallowProximitySetup", j->disallow_proximity);
    if (ret == 0 && !lock && j->preserve_data_plan >= 0)
        ret = mdm_plist_dict_set_bool(cmd, "PreserveDataPlan", j->preserve_data_plan);
    if (ret != 0) {
        plist_free(cmd);
        return ret;
    }
    if ((ret = encode_command(j, cmd)) != 0)
        return ret;
    return store_pin_secret(j, lock ? "lock_pin" : "erase_pin");
}

static int plan_revoke(struct ajob *j)
{
    char ident[128];
    snprintf(ident, sizeof(ident), "%s.enroll", mdm_enroll_profile_prefix());
    snprintf(j->request_type, sizeof(j->request_type), "RemoveProfile");
    int ret = action_uuid(MDM_DEV_REVOKE_PREFIX, j->uuid);
    if (ret != 0)
        return ret;
    plist_t cmd = plist_new_dict();
    ret = cmd ? mdm_plist_dict_set_string(cmd, "RequestType", "RemoveProfile") : -ENOMEM;
    if (ret == 0)
        ret = mdm_plist_dict_set_string(cmd, "Identifier", ident);
    if (ret != 0) {
        plist_free(cmd);
        return ret;
    }
    return encode_command(j, cmd);
}

static int plan_rotate(mdm_store_t *s, struct ajob *j)
{
    struct pending p;
    int ret = newest_action(s, j->udid, MDM_ACTION_ROTATE_PREFIX, &p);
    if (ret != 0)
        return ret;
    if (p.uuid[0] && in_flight(p.status))
        return ajob_fail(j, 409, "conflict", "a key rotation of this Mac is already pending");
    json_t *doc = NULL;
    if ((ret = mdm_security_read(s, j->udid, "fv_prk", &doc)) != 0)
        return ret;
    const char *key = json_string_value(json_object_get(json_object_get(doc, "current"), "key"));
    if (!key) {
        json_decref(doc);
        return ajob_fail(j, 409, "conflict",
                         "mdmd holds no FileVault recovery key of this Mac (the FileVault "
                         "policy escrows it)");
    }
    size_t clen;
    const uint8_t *cert = mdm_security_escrow_cert(&clen);
    j->seal_command = true; /* it carries the current key */
    snprintf(j->request_type, sizeof(j->request_type), "RotateFileVaultKey");
    ret = action_uuid(MDM_ACTION_ROTATE_PREFIX, j->uuid);
    plist_t cmd = plist_new_dict(), unlock = plist_new_dict();
    if (ret == 0)
        ret = cmd && unlock ? mdm_plist_dict_set_string(cmd, "RequestType", j->request_type)
                            : -ENOMEM;
    if (ret == 0)
        ret = mdm_plist_dict_set_string(cmd, "KeyType", "personal");
    if (ret == 0)
        ret = mdm_plist_dict_set_string(unlock, "Password", key);
    if (ret == 0) {
        ret = mdm_plist_dict_set_item(cmd, "FileVaultUnlock", unlock);
        unlock = NULL;
    }
    if (ret == 0)
        ret = mdm_plist_dict_set_data(cmd, "ReplyEncryptionCertificate", cert, clen);
    json_decref(doc);
    plist_free(unlock);
    if (ret != 0) {
        plist_free(cmd);
        return ret;
    }
    return encode_command(j, cmd);
}

/* A renewal: a new enrollment bound to the Mac and its profile, sent with InstallProfile (the
 * profile holds the one-time SCEP challenge: the command record is sealed). */
static int plan_renew(mdm_store_t *s, struct ajob *j, const mdm_device_t *d)
{
    struct pending p;
    int ret = newest_action(s, j->udid, MDM_ACTION_RENEW_PREFIX, &p);
    if (ret != 0)
        return ret;
    if (p.uuid[0] && in_flight(p.status))
        return ajob_fail(j, 409, "conflict", "a certificate renewal of this Mac is pending");
    if (!(j->records = mdm_batch_new()))
        return -ENOMEM;
    mdm_buf_t der;
    mdm_buf_init(&der, 0);
    ret = mdm_enroll_prepare_renewal(j->udid, d->enroll_id, d->topic, j->records, &der,
                                     j->enrollment_id);
    if (ret == -ESHUTDOWN)
        ret = ajob_fail(j, 409, "conflict", "enrollment (SCEP) is not running on this server");
    j->seal_command = true;
    snprintf(j->request_type, sizeof(j->request_type), "InstallProfile");
    if (ret == 0)
        ret = action_uuid(MDM_ACTION_RENEW_PREFIX, j->uuid);
    plist_t cmd = ret == 0 ? plist_new_dict() : NULL;
    if (ret == 0)
        ret = cmd ? mdm_plist_dict_set_string(cmd, "RequestType", "InstallProfile") : -ENOMEM;
    if (ret == 0)
        ret = mdm_plist_dict_set_data(cmd, "Payload", mdm_buf_head(&der), der.len);
    if (der.data)
        explicit_bzero(der.data, der.cap);
    mdm_buf_dispose(&der);
    if (ret != 0) {
        plist_free(cmd);
        return ret;
    }
    return encode_command(j, cmd);
}

/* The view of a PIN or key (audited by the caller). */
static int plan_reveal(mdm_store_t *s, struct ajob *j)
{
    if (j->kind == A_FV_REVEAL) {
        int ret = mdm_security_read(s, j->udid, "fv_prk", &j->reveal);
        if (ret == 0 && !j->reveal)
            return ajob_fail(j, 404, "not found", "no FileVault recovery key escrowed");
        return ret;
    }
    json_t *lock = NULL, *erase = NULL;
    int ret = mdm_security_read(s, j->udid, "lock_pin", &lock);
    if (ret == 0)
        ret = mdm_security_read(s, j->udid, "erase_pin", &erase);
    if (ret == 0 && !lock && !erase)
        ret = ajob_fail(j, 404, "not found", "no lock or erase PIN was set for this Mac");
    if (ret == 0)
        j->reveal = json_pack("{s:O?, s:O?}", "lock", lock, "erase", erase);
    json_decref(lock);
    json_decref(erase);
    return ret;
}

static int plan_cancel(mdm_store_t *s, struct ajob *j)
{
    struct pending p;
    int ret = newest_action(s, j->udid, MDM_ACTION_LOCK_PREFIX, &p);
    if (ret != 0)
        return ret;
    if (!p.uuid[0] || p.status == MDM_CMD_CANCELLED)
        return ajob_fail(j, 404, "not found", "this Mac has no lock to cancel");
    snprintf(j->uuid, sizeof(j->uuid), "%s", p.uuid);
    j->pending_status = p.status;
    if (p.status == MDM_CMD_QUEUED || p.status == MDM_CMD_NOTNOW)
        return 0; /* not delivered: cancelled on the shard */
    /* Delivered (or on its way): the Mac is locked; the administrator needs the PIN. */
    json_t *doc = NULL;
    ret = mdm_security_read(s, j->udid, "lock_pin", &doc);
    if (ret == 0)
        j->reveal = json_pack("{s:s, s:s, s:s, s:O?}", "error", "already delivered", "detail",
                              "the lock reached the Mac; unlock it at the Mac with this PIN",
                              "status", mdm_command_status_name(p.status), "pin",
                              json_object_get(doc, "pin"));
    json_decref(doc);
    return ret;
}

static void on_ajob_planned(mdm_shard_t *sh, mdm_shard_msg_t *m);

static void on_records_committed(void *arg, int status)
{
    struct ajob *j = arg;
    if (status != 0)
        ajob_fail(j, 503, "storage failure", "the renewal could not be stored");
    mdm_shard_post(j->c.shard, &j->msg);
}

static void run_ajob(mdm_store_t *s, void *arg)
{
    struct ajob *j = arg;
    mdm_device_t d;
    int ret = mdm_store_get_device(s, j->udid, &d);
    if (ret == MDM_ENOTFOUND || (ret == 0 && d.state == MDM_DEVICE_NEW))
        ret = ajob_fail(j, 404, "not found", "no such device");
    bool needs_enrolled = j->kind == A_LOCK || j->kind == A_ERASE || j->kind == A_REVOKE ||
                          j->kind == A_ROTATE || j->kind == A_SELECTIVE_WIPE ||
                          j->kind == A_RENEW;
    if (ret == 0 && needs_enrolled && d.state != MDM_DEVICE_ENROLLED)
        ret = ajob_fail(j, 409, "conflict", "the device is %s, not enrolled",
                        mdm_device_state_name(d.state));
    if (ret == 0 && needs_enrolled && d.revoked_ms)
        ret = ajob_fail(j, 409, "conflict", "the device is being revoked");
    /* Apple's schema: ObliterationBehavior from macOS 12 on. */
    if (ret == 0 && j->kind == A_ERASE && j->obliteration[0] && atoi(d.os_version) < 12)
        ret = ajob_fail(j, 409, "conflict",
                        "obliteration_behavior needs macOS 12 or later; the Mac runs %s",
                        d.os_version[0] ? d.os_version : "an unknown version");
    if (ret == 0) {
        switch (j->kind) {
        case A_LOCK:
        case A_ERASE:
            ret = plan_lock_or_erase(s, j);
            break;
        case A_REVOKE:
            ret = plan_revoke(j);
            break;
        case A_ROTATE:
            ret = plan_rotate(s, j);
            break;
        case A_RENEW:
            ret = plan_renew(s, j, &d);
            break;
        case A_PIN_VIEW:
        case A_FV_REVEAL:
            ret = plan_reveal(s, j);
            break;
        case A_CANCEL_LOCK:
            ret = plan_cancel(s, j);
            break;
        default:
            break;
        }
    }
    if (ret != 0 && ret != -1 && !j->out.status)
        ajob_fail(j, 503, "unavailable", "%s", mdm_strerror(ret));
    j->msg.fn = on_ajob_planned;
    if (!j->out.status && j->records) {
        /* The renewal's enrollment and challenge are durable before the profile goes out. */
        if (mdm_store_commit_async(s, j->records, on_records_committed, j) == 0)
            return;
        ajob_fail(j, 503, "storage failure", "the renewal could not be stored");
    }
    mdm_shard_post(j->c.shard, &j->msg);
}

/* ------------------------------------------------------------------------------------------
 * Shard side
 */

static json_t *answer_body(struct ajob *j, const char *status)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "action", actions[j->kind].name, "udid", j->udid,
                          "status", status);
    if (j->uuid[0])
        json_object_set_new(o, "command_uuid", json_string(j->uuid));
    if (j->request_type[0])
        json_object_set_new(o, "request_type", json_string(j->request_type));
    if (j->enrollment_id[0])
        json_object_set_new(o, "enrollment_id", json_string(j->enrollment_id));
    if (j->pin[0] && (j->kind == A_LOCK || j->kind == A_ERASE)) {
        json_object_set_new(o, "pin", json_string(j->pin));
        json_object_set_new(o, "pin_generated", json_boolean(j->pin_generated));
    }
    return o;
}

static void on_device_done(mdm_dev_req_t *r)
{
    struct ajob *j = r->ctx;
    char detail[200];
    if (r->status >= 300) {
        snprintf(detail, sizeof(detail), "%s", r->error);
        mdm_api_call_fail(&j->c, r->status, r->status == 404 ? "not found" : "conflict", detail);
    } else if (j->kind == A_SELECTIVE_WIPE || j->kind == A_RESTORE || j->kind == A_SET_ADE) {
        json_t *o = answer_body(j, "done");
        json_object_set_new(o, "policies_suspended", json_boolean(r->device.policies_suspended));
        json_object_set_new(o, "ade", json_boolean(r->device.ade));
        if (j->kind != A_SET_ADE)
            mdm_policy_reconcile_device(j->c.shard, j->udid); /* removes or delivers */
        snprintf(detail, sizeof(detail), "%s", j->kind == A_SET_ADE
                                                   ? (j->ade ? "ade on" : "ade off")
                                                   : "policies reconciled");
        mdm_api_call_finish(&j->c, 200, o, detail);
    } else if (j->kind == A_CANCEL_LOCK) {
        snprintf(detail, sizeof(detail), "lock %s cancelled before delivery", j->uuid);
        mdm_api_call_finish(&j->c, 200, answer_body(j, "cancelled"), detail);
    } else {
        snprintf(detail, sizeof(detail), "%s %s queued%s", j->request_type, j->uuid,
                 j->pin_generated ? "; PIN generated and shown in the answer" : "");
        mdm_api_call_finish(&j->c, 202, answer_body(j, "queued"), detail);
    }
    mdm_dev_req_free(r);
}

static void send_to_device(struct ajob *j, enum mdm_dev_req_kind kind)
{
    mdm_dev_req_t *r = mdm_dev_req_new(kind, j->udid);
    if (!r) {
        mdm_api_call_fail(&j->c, 503, "out of memory", NULL);
        return;
    }
    snprintf(r->uuid, sizeof(r->uuid), "%s", j->uuid);
    if (j->plist.len) {
        r->plist = malloc(j->plist.len);
        if (!r->plist) {
            mdm_dev_req_free(r);
            mdm_api_call_fail(&j->c, 503, "out of memory", NULL);
            return;
        }
        memcpy(r->plist, mdm_buf_head(&j->plist), j->plist.len);
        r->plist_len = j->plist.len;
    }
    if (kind == MDM_DEV_FLAGS) {
        if (j->kind == A_SET_ADE)
            r->set_ade = j->ade;
        else
            r->set_suspended = j->kind == A_SELECTIVE_WIPE;
    }
    r->done = on_device_done;
    r->ctx = j;
    mdm_dev_send(r);
}

static void on_records_durable(mdm_commit_waiter_t *w, int status)
{
    struct ajob *j = MDM_CONTAINER_OF(w, struct ajob, c.waiter);
    if (status != 0) {
        mdm_api_call_fail(&j->c, 503, "storage failure", "the command could not be stored");
        return;
    }
    send_to_device(j, j->kind == A_REVOKE ? MDM_DEV_REVOKE : MDM_DEV_ENQUEUE);
}

/* The command record (sealed when it carries a secret) and the PIN, then the device. */
static void store_and_send(struct ajob *j)
{
    mdm_batch_t *b = mdm_actors_shard_batch(j->c.shard);
    mdm_command_t rec;
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.uuid, sizeof(rec.uuid), "%s", j->uuid);
    snprintf(rec.request_type, sizeof(rec.request_type), "%s", j->request_type);
    rec.created_ms = mdm_wall_ms();
    snprintf(rec.created_by, sizeof(rec.created_by), "%s", mdm_api_who());
    const mdm_buf_t *body = j->seal_command ? &j->sealed_cmd : &j->plist;
    rec.flags = j->seal_command ? MDM_COMMAND_SEALED : 0;
    rec.plist = (uint8_t *)mdm_buf_head(body);
    rec.plist_len = body->len;
    mdm_store_put_command(b, &rec);
    if (j->secret_name[0])
        mdm_store_put_secret(b, j->udid, j->secret_name, mdm_buf_head(&j->sealed_secret),
                             j->sealed_secret.len);
    j->c.waiter.fn = on_records_durable;
    mdm_actors_after_commit(j->c.shard, &j->c.waiter);
}

static void on_ajob_planned(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct ajob *j = MDM_CONTAINER_OF(m, struct ajob, msg);
    if (j->out.status) {
        mdm_api_call_fail(&j->c, j->out.status, j->out.error, j->out.detail);
        return;
    }
    switch (j->kind) {
    case A_PIN_VIEW:
    case A_FV_REVEAL: {
        json_t *o = json_deep_copy(j->reveal);
        json_object_set_new(o, "udid", json_string(j->udid));
        mdm_api_call_finish(&j->c, 200, o, j->kind == A_PIN_VIEW ? "PIN shown" : "key shown");
        return;
    }
    case A_CANCEL_LOCK:
        if (j->reveal) {
            char d[160];
            snprintf(d, sizeof(d), "lock %s already delivered; PIN shown", j->uuid);
            mdm_api_call_finish(&j->c, 409, json_incref(j->reveal), d);
        } else {
            send_to_device(j, MDM_DEV_CANCEL);
        }
        return;
    case A_SELECTIVE_WIPE:
    case A_RESTORE:
    case A_SET_ADE:
        send_to_device(j, MDM_DEV_FLAGS);
        return;
    default:
        store_and_send(j);
        return;
    }
}

/* ------------------------------------------------------------------------------------------
 * Requests
 */

static bool text_field(struct ajob *j, json_t *body, const char *key, char *out, size_t size)
{
    json_t *v = json_object_get(body, key);
    if (!v)
        return true;
    const char *s = json_string_value(v);
    char d[120];
    if (!s || strlen(s) >= size) {
        snprintf(d, sizeof(d), "%s: a string of at most %zu bytes", key, size - 1);
        mdm_api_call_fail(&j->c, 422, "invalid parameter", d);
        return false;
    }
    snprintf(out, size, "%s", s);
    return true;
}

static int bool_field(struct ajob *j, json_t *body, const char *key, bool *bad)
{
    json_t *v = json_object_get(body, key);
    if (!v)
        return -1;
    if (!json_is_boolean(v)) {
        char d[100];
        snprintf(d, sizeof(d), "%s: expected a boolean", key);
        mdm_api_call_fail(&j->c, 422, "invalid parameter", d);
        *bad = true;
        return -1;
    }
    return json_is_true(v);
}

static bool known_keys(struct ajob *j, json_t *body, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, k) == 0;
        if (!ok) {
            char d[120];
            snprintf(d, sizeof(d), "unknown key '%.64s'", k);
            mdm_api_call_fail(&j->c, 422, "invalid parameter", d);
            return false;
        }
    }
    return true;
}

/* pin given (checked: six digits) or generated. */
static bool read_pin(struct ajob *j, json_t *body)
{
    json_t *v = json_object_get(body, "pin");
    if (!v) {
        j->pin_generated = true;
        if (mdm_pin_generate(j->pin) != 0) {
            mdm_api_call_fail(&j->c, 500, "internal error", "no random bytes for the PIN");
            return false;
        }
        return true;
    }
    const char *pin = json_string_value(v);
    if (!mdm_pin_valid(pin)) {
        mdm_api_call_fail(&j->c, 422, "invalid parameter",
                          "pin: macOS takes a string of exactly 6 digits; leave it out and mdmd "
                          "generates one");
        return false;
    }
    snprintf(j->pin, sizeof(j->pin), "%s", pin);
    return true;
}

static bool read_body(struct ajob *j)
{
    const mdm_http_request_t *r = mdm_exchange_request(j->c.x);
    json_t *body = r->body.len ? mdm_api_body_object(&j->c) : json_object();
    if (!body)
        return false;
    bool ok = true, bad = false;
    switch (j->kind) {
    case A_LOCK: {
        static const char *const keys[] = {"pin", "message", "phone_number", NULL};
        ok = known_keys(j, body, keys) && read_pin(j, body) &&
             text_field(j, body, "message", j->message, sizeof(j->message)) &&
             text_field(j, body, "phone_number", j->phone, sizeof(j->phone));
        break;
    }
    case A_ERASE: {
        static const char *const keys[] = {"confirm", "pin", "obliteration_behavior",
                                           "disallow_proximity_setup", "preserve_data_plan",
                                           NULL};
        const char *confirm = json_string_value(json_object_get(body, "confirm"));
        ok = known_keys(j, body, keys);
        if (ok && (!confirm || strcmp(confirm, j->udid) != 0)) {
            mdm_api_call_fail(&j->c, 422, "confirmation required",
                              "confirm: give the device's UDID to confirm the erase of all its "
                              "data");
            ok = false;
        }
        ok = ok && read_pin(j, body) &&
             text_field(j, body, "obliteration_behavior", j->obliteration,
                        sizeof(j->obliteration));
        static const char *const oblit[] = {"", "Default", "DoNotObliterate",
                                            "ObliterateWithWarning", "Always"};
        bool known = false;
        for (size_t i = 0; ok && i < MDM_ARRAY_LEN(oblit); i++)
            known = known || strcmp(oblit[i], j->obliteration) == 0;
        if (ok && !known) {
            mdm_api_call_fail(&j->c, 422, "invalid parameter",
                              "obliteration_behavior: one of Default, DoNotObliterate, "
                              "ObliterateWithWarning, Always");
            ok = false;
        }
        j->disallow_proximity = ok ? bool_field(j, body, "disallow_proximity_setup", &bad) : -1;
        j->preserve_data_plan = ok && !bad ? bool_field(j, body, "preserve_data_plan", &bad) : -1;
        ok = ok && !bad;
        break;
    }
    case A_SET_ADE: {
        static const char *const keys[] = {"ade", NULL};
        int v = known_keys(j, body, keys) ? bool_field(j, body, "ade", &bad) : -2;
        if (v == -1 && !bad)
            mdm_api_call_fail(&j->c, 422, "invalid parameter", "ade: a boolean is required");
        ok = v >= 0;
        j->ade = v == 1;
        break;
    }
    default: {
        static const char *const none[] = {NULL};
        ok = known_keys(j, body, none);
        break;
    }
    }
    json_decref(body);
    return ok;
}

static void start(mdm_exchange_t *x, enum akind kind, const char *udid)
{
    struct ajob *j = (struct ajob *)mdm_api_call_new(x, sizeof(*j), actions[kind].audit, udid);
    if (!j) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return;
    }
    j->c.free_fn = ajob_free;
    j->kind = kind;
    j->disallow_proximity = j->preserve_data_plan = -1;
    snprintf(j->udid, sizeof(j->udid), "%s", udid);
    mdm_buf_init(&j->plist, 0);
    mdm_buf_init(&j->sealed_cmd, 0);
    mdm_buf_init(&j->sealed_secret, 0);
    if (kind != A_PIN_VIEW && kind != A_FV_REVEAL && !read_body(j))
        return;
    if (mdm_store_run_async(mdm_api_store(), run_ajob, j) != 0)
        mdm_api_call_fail(&j->c, 503, "unavailable", "storage is shutting down");
}

/* ---- the action list: the device's commands that actions queued ---- */

struct list_job {
    mdm_shard_msg_t msg;
    mdm_exchange_t *x;
    mdm_shard_t *shard;
    char udid[MDM_UDID_MAX + 1];
    json_t *items;
    char *text;
    int status;
};

static const char *action_of(const char *uuid)
{
    static const struct { const char *prefix, *name; } map[] = {
        {MDM_ACTION_LOCK_PREFIX, "lock"},
        {MDM_ACTION_ERASE_PREFIX, "erase"},
        {MDM_ACTION_ROTATE_PREFIX, "rotate-filevault-key"},
        {MDM_ACTION_RENEW_PREFIX, "renew-certificate"},
        {MDM_DEV_REVOKE_PREFIX, "revoke"},
    };
    for (size_t i = 0; i < MDM_ARRAY_LEN(map); i++)
        if (strncmp(uuid, map[i].prefix, strlen(map[i].prefix)) == 0)
            return map[i].name;
    return NULL;
}

static int on_list_result(void *arg, const mdm_result_t *r)
{
    struct list_job *j = arg;
    const char *name = action_of(r->uuid);
    if (!name)
        return 0;
    json_t *o = json_pack("{s:s, s:s, s:s}", "action", name, "command_uuid", r->uuid, "status",
                          mdm_command_status_name(r->status));
    json_t *events = json_array();
    for (unsigned i = 0; i < r->n_events; i++)
        json_array_append_new(events, json_pack("{s:s, s:I}", "status",
                                                mdm_command_status_name(r->events[i].status),
                                                "at_ms", (json_int_t)r->events[i].at_ms));
    json_object_set_new(o, "events", events);
    mdm_deployment_t d = {.action = MDM_DEPLOY_INSTALL};
    char err[1024];
    if (mdm_policy_deploy_status(&d, r, err, sizeof(err)) == MDM_DEPLOY_STATUS_FAILED)
        json_object_set_new(o, "error", json_string(err));
    return json_array_append_new(j->items, o);
}

static void on_list_done(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct list_job *j = MDM_CONTAINER_OF(m, struct list_job, msg);
    if (j->text)
        mdm_exchange_respond(j->x, 200, NULL, 0, "application/json", j->text, strlen(j->text));
    else
        mdm_api_respond_error(j->x, j->status ? j->status : 503,
                              j->status == 404 ? "not found" : "unavailable",
                              j->status == 404 ? "no such device" : "storage failure");
    free(j->text);
    free(j);
}

static void run_list(mdm_store_t *s, void *arg)
{
    struct list_job *j = arg;
    mdm_device_t d;
    int ret = mdm_store_get_device(s, j->udid, &d);
    j->items = json_array();
    if (ret == MDM_ENOTFOUND)
        j->status = 404;
    else if (ret == 0 && j->items && mdm_store_list_results(s, j->udid, on_list_result, j) == 0) {
        json_t *o = json_pack("{s:s, s:s, s:O, s:b, s:b, s:b}", "udid", j->udid, "state",
                              mdm_device_state_name(d.state), "actions", j->items,
                              "policies_suspended", d.policies_suspended,
                              "filevault_key_escrowed", d.fv_key_escrowed, "ade", d.ade);
        j->text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
    }
    json_decref(j->items);
    j->msg.fn = on_list_done;
    mdm_shard_post(j->shard, &j->msg);
}

static void list_actions(mdm_exchange_t *x, const char *udid)
{
    struct list_job *j = calloc(1, sizeof(*j));
    if (!j) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return;
    }
    j->x = x;
    j->shard = mdm_exchange_shard(x);
    snprintf(j->udid, sizeof(j->udid), "%s", udid);
    if (mdm_store_run_async(mdm_api_store(), run_list, j) != 0) {
        free(j);
        mdm_api_respond_error(x, 503, "unavailable", "storage is shutting down");
    }
}

/* ------------------------------------------------------------------------------------------
 * Dispatch: devices/{udid}/actions[/{action}], devices/{udid}/lock-pin|filevault-key
 */

bool mdm_api_actions_owns(const char *rest)
{
    if (strncmp(rest, "devices/", 8) != 0)
        return false;
    const char *tail = strchr(rest + 8, '/');
    return tail && (strcmp(tail, "/actions") == 0 || strncmp(tail, "/actions/", 9) == 0 ||
                    strcmp(tail, "/lock-pin") == 0 || strcmp(tail, "/filevault-key") == 0);
}

void mdm_api_actions_handle(mdm_exchange_t *x, const char *rest)
{
    const char *udid_at = rest + 8;
    size_t ulen = strcspn(udid_at, "/");
    char udid[MDM_UDID_MAX + 1];
    if (!mdm_api_id_valid(udid_at, ulen)) {
        mdm_api_respond_error(x, 404, "not found", "no such device");
        return;
    }
    memcpy(udid, udid_at, ulen);
    udid[ulen] = 0;
    const char *tail = udid_at + ulen;
    enum mdm_http_method m = mdm_exchange_request(x)->method;
    if (strcmp(tail, "/actions") == 0) {
        if (m == MDM_HTTP_GET)
            list_actions(x, udid);
        else
            mdm_api_method_not_allowed(x, "GET");
        return;
    }
    if (strcmp(tail, "/lock-pin") == 0 || strcmp(tail, "/filevault-key") == 0) {
        if (m == MDM_HTTP_GET)
            start(x, tail[1] == 'l' ? A_PIN_VIEW : A_FV_REVEAL, udid);
        else
            mdm_api_method_not_allowed(x, "GET");
        return;
    }
    const char *name = tail + strlen("/actions/");
    for (size_t k = 0; k < MDM_ARRAY_LEN(actions); k++) {
        if (k == A_PIN_VIEW || k == A_FV_REVEAL || strcmp(actions[k].name, name) != 0)
            continue;
        if (m == MDM_HTTP_POST)
            start(x, (enum akind)k, udid);
        else
            mdm_api_method_not_allowed(x, "POST");
        return;
    }
    mdm_api_respond_error(x, 404, "not found",
                          "no such action (lock, cancel-lock, erase, selective-wipe, "
                          "restore-policies, revoke, rotate-filevault-key, renew-certificate, "
                          "set-ade)");
}
