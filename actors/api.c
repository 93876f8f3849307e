/*
 * The admin API v1. See api.h and docs/api.md.
 *
 * One prefix route, "/api/v1/" + '*', dispatches on method and path segments:
 *
 *   GET    devices                      list (job on a storage worker)
 *   GET    devices/{udid}               MDM_DEV_GET to the device actor
 *   DELETE devices/{udid}               MDM_DEV_DELETE                          (audited)
 *   GET    devices/{udid}/commands      history (job)
 *   POST   devices/{udid}/commands      enqueue to one device                   (audited)
 *   DELETE devices/{udid}/commands/{u}  MDM_DEV_CANCEL                          (audited)
 *   POST   commands                     enqueue to a list of devices            (audited)
 *   GET    audit                        audit log, filtered; JSON lines export (job)
 *   POST   devices/{udid}/push          MDM_DEV_PUSH: wake the Mac through APNs  (audited)
 *   POST   push                         MDM_DEV_PUSH to a list or every device   (audited)
 *   GET    push-certificate             topic and expiry of the APNs certificate (job)
 *   PUT    push-certificate             upload it, PEM or PKCS#12 (job, then audited)
 *   ...    users, invitations, enrollments  see api_enroll.c
 *   ...    policy-types, policies, groups, apps, devices/{udid}/policies|apps  see api_policy.c
 *
 * Enqueue: the command is checked against the schema table below (JSON params are converted
 * to plist with it), gets an uppercase UUID v4, and its record goes into the shard's open batch.
 * Only once that commit is durable does one MDM_DEV_ENQUEUE per device go out, at most
 * MDM_API_INFLIGHT_MAX at a time; the answer is built when every device has answered.
 *
 * Audit: a mutating call's event (who, action, target, source address, status, detail) is
 * appended to the shard's batch when the call's outcome is known, and the HTTP answer waits
 * for that commit, so an acknowledged action always has its audit event.
 *
 * Owning thread: each call belongs to the shard of its admin connection; device replies and
 * storage job results are posted back to that shard.
 */
#include "actors/api.h"
#include "actors/api_internal.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "actors/apns.h"
#include "actors/device.h"
#include "actors/instance.h"
#include "actors/pushcert.h"
#include "core/cms.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/plist.h"
#include "core/seal.h"
#include "core/server.h"
#include "storage/audit.h"
#include "storage/mdm.h"
#include "storage/pushcert.h"

#define API_PREFIX "/api/v1/"
#define SEGMENTS_MAX 6
#define PLIST_DEPTH 32

static atomic_bool have_pushcert; /* a push certificate is stored (start-up, then uploads) */

static struct {
    mdm_actors_t *rt;
    mdm_store_t *store;
    bool have_key;
    char key_hash[65];
    char who[64]; /* audit name of the admin key */
    uint8_t seal_key[MDM_SEAL_KEY_LEN]; /* seals the push certificate's key */
} api;

mdm_store_t *mdm_api_store(void) { return api.store; }

const char *mdm_api_who(void) { return api.who; }

/* ------------------------------------------------------------------------------------------
 * Answers
 */

void mdm_api_respond_json(mdm_exchange_t *x, int status, json_t *body,
                          const mdm_http_header_t *extra, unsigned n_extra)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] = "{\"error\":\"internal error\",\"detail\":\"out of memory\"}\n";
        mdm_exchange_respond(x, 500, NULL, 0, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    size_t len = strlen(text);
    char *withnl = realloc(text, len + 2);
    if (withnl) {
        text = withnl;
        text[len++] = '\n';
        text[len] = '\0';
    }
    mdm_exchange_respond(x, status, extra, n_extra, "application/json", text, len);
    free(text);
}

json_t *mdm_api_error_json(const char *error, const char *detail)
{
    return json_pack("{s:s, s:s}", "error", error, "detail", detail ? detail : "");
}

void mdm_api_respond_error(mdm_exchange_t *x, int status, const char *error, const char *detail)
{
    mdm_api_respond_json(x, status, mdm_api_error_json(error, detail), NULL, 0);
}

/* Sets key to a JSON string of s, or null when s is not valid UTF-8 (device-supplied text). */
void mdm_api_set_str(json_t *obj, const char *key, const char *s)
{
    json_t *v = json_string(s);
    json_object_set_new(obj, key, v ? v : json_null());
}

void mdm_api_set_int(json_t *obj, const char *key, uint64_t v)
{
    json_object_set_new(obj, key, json_integer((json_int_t)v));
}

/* ------------------------------------------------------------------------------------------
 * Small parsers
 */

/* Finds name=value in a query string; percent-decodes the value into out. Returns true when
 * found (and it fit); a value that does not fit or decode reads as absent. */
bool mdm_api_query_param(const char *query, const char *name, char *out, size_t outlen)
{
    const char *v;
    size_t vlen;
    return query && mdm_http_param_find(query, strlen(query), name, &v, &vlen) &&
           mdm_http_percent_decode(v, vlen, true, out, outlen) >= 0;
}

/* Parses an unsigned decimal query value. Returns false when malformed. */
bool mdm_api_parse_u64(const char *s, uint64_t *out)
{
    if (!*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

/* UDIDs and UUIDs in paths and bodies: 1..63 of A-Z a-z 0-9 - _ . : */
bool mdm_api_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > MDM_UDID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return false;
    }
    return true;
}

static bool ct_equal(const char *a, const char *b, size_t len)
{
    unsigned char diff = 0;
    for (size_t i = 0; i < len; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

static bool authorized(const mdm_http_request_t *r)
{
    if (!api.have_key)
        return false;
    const char *h = mdm_http_request_header(r, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    const char *key = h + 7;
    while (*key == ' ')
        key++;
    char hex[65];
    if (!*key || strlen(key) > 256 || mdm_instance_hash_api_key(key, hex) != 0)
        return false;
    return ct_equal(hex, api.key_hash, 64);
}

/* ------------------------------------------------------------------------------------------
 * Command schema: the RequestTypes mdmd knows and their parameter keys, from Apple's
 * device-management YAML (the files under mdm/commands/).
 */

enum ptype { P_STRING, P_BOOL, P_INT, P_DATA, P_DICT, P_ARRAY, P_ANY };

struct pkey {
    const char *name;
    enum ptype type;
    enum ptype item;          /* P_ARRAY: type of the items */
    bool required;
    const struct pkey *sub;   /* P_DICT (or array of P_DICT): its keys, NULL-name terminated */
    bool open;                /* sub lists the known keys; others of any type are allowed */
};

struct rtype {
    const char *name;
    const struct pkey *keys; /* NULL-name terminated; NULL = no parameters */
};

#define END {NULL, P_ANY, P_ANY, false, NULL, false}

static const struct pkey k_device_information[] = {
    {"Queries", P_ARRAY, P_STRING, true, NULL, false},
    {"DeviceAttestationNonce", P_DATA, P_ANY, false, NULL, false},
    END,
};
static const struct pkey k_installed_apps[] = {
    {"Identifiers", P_ARRAY, P_STRING, false, NULL, false},
    {"ManagedAppsOnly", P_BOOL, P_ANY, false, NULL, false},
    {"Items", P_ARRAY, P_STRING, false, NULL, false},
    END,
};
static const struct pkey k_managed_only[] = {
    {"ManagedOnly", P_BOOL, P_ANY, false, NULL, false},
    END,
};
static const struct pkey k_install_profile[] = {
    {"Payload", P_DATA, P_ANY, true, NULL, false},
    END,
};
static const struct pkey k_remove_profile[] = {
    {"Identifier", P_STRING, P_ANY, true, NULL, false},
    END,
};
static const struct pkey k_restart[] = {
    {"RebuildKernelCache", P_BOOL, P_ANY, false, NULL, false},
    {"KextPaths", P_ARRAY, P_STRING, false, NULL, false},
    {"NotifyUser", P_BOOL, P_ANY, false, NULL, false},
    END,
};
static const struct pkey k_lock[] = {
    {"Message", P_STRING, P_ANY, false, NULL, false},
    {"PhoneNumber", P_STRING, P_ANY, false, NULL, false},
    {"PIN", P_STRING, P_ANY, false, NULL, false},
    END,
};
static const struct pkey k_return_to_service[] = {
    {"Enabled", P_BOOL, P_ANY, true, NULL, false},
    {"WiFiProfileData", P_DATA, P_ANY, false, NULL, false},
    {"MDMProfileData", P_DATA, P_ANY, false, NULL, false},
    END,
};
static const struct pkey k_erase[] = {
    {"PreserveDataPlan", P_BOOL, P_ANY, false, NULL, false},
    {"DisallowProximitySetup", P_BOOL, P_ANY, false, NULL, false},
    {"PIN", P_STRING, P_ANY, false, NULL, false},
    {"ObliterationBehavior", P_STRING, P_ANY, false, NULL, false},
    {"ReturnToService", P_DICT, P_ANY, false, k_return_to_service, false},
    END,
};
/* Settings items differ by Item; each needs Item, and carries item-specific keys. */
static const struct pkey k_settings_item[] = {
    {"Item", P_STRING, P_ANY, true, NULL, false},
    END,
};
static const struct pkey k_settings[] = {
    {"Settings", P_ARRAY, P_DICT, true, k_settings_item, true},
    END,
};
static const struct pkey k_update_scan[] = {
    {"Force", P_BOOL, P_ANY, false, NULL, false},
    END,
};
static const struct pkey k_update_item[] = {
    {"ProductKey", P_STRING, P_ANY, false, NULL, false},
    {"ProductVersion", P_STRING, P_ANY, false, NULL, false},
    {"InstallAction", P_STRING, P_ANY, true, NULL, false},
    {"MaxUserDeferrals", P_INT, P_ANY, false, NULL, false},
    {"Priority", P_STRING, P_ANY, false, NULL, false},
    END,
};
static const struct pkey k_schedule_update[] = {
    {"Updates", P_ARRAY, P_DICT, true, k_update_item, false},
    END,
};
static const struct pkey k_fv_unlock[] = {
    {"Password", P_STRING, P_ANY, false, NULL, false},
    {"PrivateKeyExport", P_DATA, P_ANY, false, NULL, false},
    {"PrivateKeyExportPassword", P_STRING, P_ANY, false, NULL, false},
    END,
};
static const struct pkey k_rotate_fv[] = {
    {"KeyType", P_STRING, P_ANY, true, NULL, false},
    {"FileVaultUnlock", P_DICT, P_ANY, true, k_fv_unlock, false},
    {"NewCertificate", P_DATA, P_ANY, false, NULL, false},
    {"ReplyEncryptionCertificate", P_DATA, P_ANY, false, NULL, false},
    END,
};

static const struct rtype request_types[] = {
    {"DeviceInformation", k_device_information},
    {"SecurityInfo", NULL},
    {"InstalledApplicationList", k_installed_apps},
    {"ProfileList", k_managed_only},
    {"CertificateList", k_managed_only},
    {"InstallProfile", k_install_profile},
    {"RemoveProfile", k_remove_profile},
    {"RestartDevice", k_restart},
    {"ShutDownDevice", NULL},
    {"DeviceLock", k_lock},
    {"EraseDevice", k_erase},
    {"Settings", k_settings},
    {"ScheduleOSUpdateScan", k_update_scan},
    {"AvailableOSUpdates", NULL},
    {"OSUpdateStatus", NULL},
    {"ScheduleOSUpdate", k_schedule_update},
    {"RotateFileVaultKey", k_rotate_fv},
    {"DeviceConfigured", NULL},
};

static const struct rtype *find_rtype(const char *name)
{
    for (size_t i = 0; i < MDM_ARRAY_LEN(request_types); i++)
        if (strcmp(request_types[i].name, name) == 0)
            return &request_types[i];
    return NULL;
}

static const struct pkey *find_key(const struct pkey *keys, const char *name)
{
    for (const struct pkey *k = keys; k && k->name; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

static const char *ptype_name(enum ptype t)
{
    switch (t) {
    case P_STRING: return "a string";
    case P_BOOL: return "a boolean";
    case P_INT: return "a non-negative integer";
    case P_DATA: return "data (base64 in JSON)";
    case P_DICT: return "a dictionary";
    case P_ARRAY: return "an array";
    case P_ANY: return "a value";
    }
    return "a value";
}

/* A schema failure: the key path it concerns and what is wrong. */
struct verr {
    char path[200];
    char msg[300];
};

static void verr_set(struct verr *e, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void verr_set(struct verr *e, const char *path, const char *fmt, ...)
{
    snprintf(e->path, sizeof(e->path), "%s", path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
}

/* ---- JSON -> plist, guided by the schema (sub == NULL and type P_ANY: generic) ---- */

static plist_t json_to_plist(json_t *v, enum ptype type, enum ptype item,
                             const struct pkey *sub, bool open, const char *path,
                             struct verr *e, int depth);

static plist_t json_dict_to_plist(json_t *obj, const struct pkey *keys, bool open,
                                  const char *path, struct verr *e, int depth)
{
    plist_t dict = plist_new_dict();
    if (!dict) {
        verr_set(e, path, "out of memory");
        return NULL;
    }
    const char *name;
    json_t *val;
    json_object_foreach(obj, name, val) {
        char sub[sizeof(e->path)];
        snprintf(sub, sizeof(sub), "%s%s%s", path, path[0] ? "." : "", name);
        const struct pkey *k = find_key(keys, name);
        if (!k && keys && !open) {
            verr_set(e, sub, "unknown key");
            plist_free(dict);
            return NULL;
        }
        plist_t pv = k ? json_to_plist(val, k->type, k->item, k->sub, k->open, sub, e, depth + 1)
                       : json_to_plist(val, P_ANY, P_ANY, NULL, false, sub, e, depth + 1);
        if (!pv || mdm_plist_dict_set_item(dict, name, pv) != 0) {
            if (!pv && !e->msg[0])
                verr_set(e, sub, "out of memory");
            plist_free(dict);
            return NULL;
        }
    }
    for (const struct pkey *k = keys; k && k->name; k++) {
        if (k->required && !json_object_get(obj, k->name)) {
            char sub[sizeof(e->path)];
            snprintf(sub, sizeof(sub), "%s%s%s", path, path[0] ? "." : "", k->name);
            verr_set(e, sub, "required key is missing (%s)", ptype_name(k->type));
            plist_free(dict);
            return NULL;
        }
    }
    return dict;
}

static plist_t json_to_plist(json_t *v, enum ptype type, enum ptype item,
                             const struct pkey *sub, bool open, const char *path,
                             struct verr *e, int depth)
{
    if (depth > PLIST_DEPTH) {
        verr_set(e, path, "nested too deeply");
        return NULL;
    }
    if (type == P_ANY) {
        /* Generic conversion: JSON types map to their plist counterparts. */
        if (json_is_string(v))
            type = P_STRING;
        else if (json_is_boolean(v))
            type = P_BOOL;
        else if (json_is_integer(v))
            type = P_INT;
        else if (json_is_object(v))
            type = P_DICT;
        else if (json_is_array(v))
            type = P_ARRAY;
        else if (json_is_real(v))
            return plist_new_real(json_real_value(v));
        else {
            verr_set(e, path, "null has no property list equivalent");
            return NULL;
        }
    }
    switch (type) {
    case P_STRING:
        if (!json_is_string(v))
            break;
        return plist_new_string(json_string_value(v));
    case P_BOOL:
        if (!json_is_boolean(v))
            break;
        return plist_new_bool(json_is_true(v));
    case P_INT:
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            break;
        return plist_new_uint((uint64_t)json_integer_value(v));
    case P_DATA: {
        if (!json_is_string(v))
            break;
        mdm_buf_t bytes;
        mdm_buf_init(&bytes, 0);
        if (mdm_base64_decode(json_string_value(v), json_string_length(v), &bytes) != 0) {
            mdm_buf_dispose(&bytes);
            verr_set(e, path, "expected data as standard base64 text");
            return NULL;
        }
        plist_t p = plist_new_data((const char *)mdm_buf_head(&bytes), bytes.len);
        mdm_buf_dispose(&bytes);
        return p;
    }
    case P_DICT:
        if (!json_is_object(v))
            break;
        return json_dict_to_plist(v, sub, open, path, e, depth);
    case P_ARRAY: {
        if (!json_is_array(v))
            break;
        plist_t arr = plist_new_array();
        size_t i;
        json_t *el;
        json_array_foreach(v, i, el) {
            char ip[sizeof(e->path)];
            snprintf(ip, sizeof(ip), "%s[%zu]", path, i);
            plist_t pv = json_to_plist(el, item, P_ANY, sub, open, ip, e, depth + 1);
            if (!pv || mdm_plist_array_append_item(arr, pv) != 0) {
                if (!pv && !e->msg[0])
                    verr_set(e, ip, "out of memory");
                plist_free(arr);
                return NULL;
            }
        }
        return arr;
    }
    case P_ANY:
        break;
    }
    verr_set(e, path, "expected %s", ptype_name(type));
    return NULL;
}

/* ---- plist checked against the schema (raw plist bodies) ---- */

static bool check_plist(plist_t v, enum ptype type, enum ptype item, const struct pkey *sub,
                        bool open, const char *path, struct verr *e);

static bool check_plist_dict(plist_t dict, const struct pkey *keys, bool open,
                             const char *path, struct verr *e, const char *skip)
{
    plist_dict_iter it = NULL;
    plist_dict_new_iter(dict, &it);
    bool ok = it != NULL;
    for (;;) {
        char *name = NULL;
        plist_t val = NULL;
        if (!ok)
            break;
        plist_dict_next_item(dict, it, &name, &val);
        if (!val) {
            free(name);
            break;
        }
        char sp[sizeof(e->path)];
        snprintf(sp, sizeof(sp), "%s%s%s", path, path[0] ? "." : "", name);
        if (!skip || strcmp(name, skip) != 0) {
            const struct pkey *k = find_key(keys, name);
            if (!k && !open) {
                verr_set(e, sp, "unknown key");
                ok = false;
            } else if (k && !check_plist(val, k->type, k->item, k->sub, k->open, sp, e)) {
                ok = false;
            }
        }
        free(name);
    }
    free(it);
    if (!ok)
        return false;
    for (const struct pkey *k = keys; k && k->name; k++) {
        if (k->required && !plist_dict_get_item(dict, k->name)) {
            char sp[sizeof(e->path)];
            snprintf(sp, sizeof(sp), "%s%s%s", path, path[0] ? "." : "", k->name);
            verr_set(e, sp, "required key is missing (%s)", ptype_name(k->type));
            return false;
        }
    }
    return true;
}

static bool check_plist(plist_t v, enum ptype type, enum ptype item, const struct pkey *sub,
                        bool open, const char *path, struct verr *e)
{
    plist_type t = plist_get_node_type(v);
    switch (type) {
    case P_ANY:
        return true;
    case P_STRING:
        if (t == PLIST_STRING)
            return true;
        break;
    case P_BOOL:
        if (t == PLIST_BOOLEAN)
            return true;
        break;
    case P_INT:
        if (t == PLIST_UINT)
            return true;
        break;
    case P_DATA:
        if (t == PLIST_DATA)
            return true;
        break;
    case P_DICT:
        if (t != PLIST_DICT)
            break;
        return !sub || check_plist_dict(v, sub, open, path, e, NULL);
    case P_ARRAY:
        if (t != PLIST_ARRAY)
            break;
        for (uint32_t i = 0; i < plist_array_get_size(v); i++) {
            char ip[sizeof(e->path)];
            snprintf(ip, sizeof(ip), "%s[%u]", path, i);
            if (!check_plist(plist_array_get_item(v, i), item, P_ANY, sub, open, ip, e))
                return false;
        }
        return true;
    }
    verr_set(e, path, "expected %s", ptype_name(type));
    return false;
}

/* ------------------------------------------------------------------------------------------
 * Calls: one per mutating request; ends with an audit event and the answer after its commit
 */

/* struct mdm_api_call: see api_internal.h. */

static void call_free_plain(struct mdm_api_call *c) { free(c); }

struct mdm_api_call *mdm_api_call_new(mdm_exchange_t *x, size_t size, const char *action,
                                      const char *target)
{
    struct mdm_api_call *c = calloc(1, size);
    if (!c)
        return NULL;
    c->x = x;
    c->shard = mdm_exchange_shard(x);
    c->free_fn = call_free_plain;
    c->audit.at_ms = mdm_wall_ms();
    snprintf(c->audit.who, sizeof(c->audit.who), "%s", api.who);
    snprintf(c->audit.action, sizeof(c->audit.action), "%s", action);
    snprintf(c->audit.target, sizeof(c->audit.target), "%s", target);
    snprintf(c->audit.source, sizeof(c->audit.source), "%s", mdm_exchange_peer_addr(x));
    return c;
}

static void on_audit_durable(mdm_commit_waiter_t *w, int status)
{
    struct mdm_api_call *c = MDM_CONTAINER_OF(w, struct mdm_api_call, waiter);
    if (status != 0) {
        mdm_error("api", "audit event %s %s (status %d) could not be stored: %s",
                  c->audit.action, c->audit.target, c->status, mdm_strerror(status));
        json_decref(c->body);
        mdm_api_respond_error(c->x, 503, "storage failure",
                              "the audit event could not be stored; check the server log");
    } else {
        mdm_api_respond_json(c->x, c->status, c->body, NULL, 0);
    }
    c->body = NULL;
    c->free_fn(c);
}

/* Ends c: appends its audit event (with status and detail), answers once it is durable. */
void mdm_api_call_finish(struct mdm_api_call *c, int status, json_t *body, const char *detail)
{
    c->status = status;
    c->body = body;
    c->audit.status = (uint16_t)status;
    snprintf(c->audit.detail, sizeof(c->audit.detail), "%.*s",
             (int)sizeof(c->audit.detail) - 1, detail ? detail : "");
    c->audit.at_ms = mdm_wall_ms();
    if (mdm_store_put_audit(mdm_actors_shard_batch(c->shard), &c->audit) != 0) {
        json_decref(c->body);
        c->body = mdm_api_error_json("internal error", "no random bytes for the audit event key");
        c->status = 500;
    }
    c->waiter.fn = on_audit_durable;
    mdm_actors_after_commit(c->shard, &c->waiter);
}

int mdm_api_outcome_set(struct mdm_api_outcome *o, int status, const char *error,
                        const char *fmt, ...)
{
    o->status = status;
    snprintf(o->error, sizeof(o->error), "%s", error);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->detail, sizeof(o->detail), fmt, ap);
    va_end(ap);
    return -1;
}

void mdm_api_call_fail(struct mdm_api_call *c, int status, const char *error,
                       const char *detail)
{
    char d[300];
    snprintf(d, sizeof(d), "%.40s: %.250s", error, detail ? detail : "");
    mdm_api_call_finish(c, status, mdm_api_error_json(error, detail), d);
}

/* ------------------------------------------------------------------------------------------
 * Claims: one change in flight per record (any shard)
 */

static struct {
    pthread_mutex_t lock;
    char keys[MDM_API_CLAIMS_MAX][MDM_API_CLAIM_KEY_MAX]; /* "" = free slot */
} claims = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Returns 0, -EBUSY (key already claimed) or -ENOSPC (table full). */
int mdm_api_claim(const char *key)
{
    assert(key[0] && strlen(key) < MDM_API_CLAIM_KEY_MAX);
    int ret = -ENOSPC, free_slot = -1;
    pthread_mutex_lock(&claims.lock);
    for (int i = 0; i < MDM_API_CLAIMS_MAX; i++) {
        if (!claims.keys[i][0]) {
            if (free_slot < 0)
                free_slot = i;
        } else if (strcmp(claims.keys[i], key) == 0) {
            ret = -EBUSY;
            goto out;
        }
    }
    if (free_slot >= 0) {
        memcpy(claims.keys[free_slot], key, strlen(key) + 1);
        ret = 0;
    }
out:
    pthread_mutex_unlock(&claims.lock);
    return ret;
}

void mdm_api_unclaim(const char *key)
{
    pthread_mutex_lock(&claims.lock);
    for (int i = 0; i < MDM_API_CLAIMS_MAX; i++) {
        if (strcmp(claims.keys[i], key) == 0) {
            claims.keys[i][0] = '\0';
            break;
        }
    }
    pthread_mutex_unlock(&claims.lock);
}

/* Parses the request body as a JSON object; on failure ends the call (400/415), NULL. */
json_t *mdm_api_body_object(struct mdm_api_call *c)
{
    const mdm_http_request_t *r = mdm_exchange_request(c->x);
    const char *ct = mdm_http_request_header(r, "Content-Type");
    if (ct && strncasecmp(ct, "application/json", 16) != 0) {
        mdm_api_call_fail(c, 415, "unsupported content type", "send application/json");
        return NULL;
    }
    json_error_t je;
    json_t *body = json_loadb((const char *)mdm_buf_head(&r->body), r->body.len,
                              JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(body)) {
        char d[200];
        if (body)
            snprintf(d, sizeof(d), "the body must be a JSON object");
        else
            snprintf(d, sizeof(d), "line %d column %d: %s", je.line, je.column, je.text);
        json_decref(body);
        mdm_api_call_fail(c, 400, "invalid JSON", d);
        return NULL;
    }
    return body;
}


/* ------------------------------------------------------------------------------------------
 * Enqueue (one device or many)
 */

struct enqueue {
    struct mdm_api_call c; /* first */
    char uuid[37];
    char request_type[64];
    char channel[MDM_CHANNEL_MAX + 1]; /* "" device channel, else a user channel's UserID */
    uint8_t *plist;
    size_t plist_len;
    char (*udids)[MDM_UDID_MAX + 1];
    size_t n, next, outstanding, answered, n_queued;
    json_t *queued, *failed;
    bool single;  /* POST devices/{udid}/commands: a device failure is the call's status */
    bool pumping; /* inside pump(): replies that arrive synchronously do not recurse */
};

static void enqueue_free(struct mdm_api_call *c)
{
    struct enqueue *e = (struct enqueue *)c;
    free(e->plist);
    free(e->udids);
    json_decref(e->queued);
    json_decref(e->failed);
    free(e);
}

static void pump(struct enqueue *e);

static void enqueue_done(struct enqueue *e)
{
    char detail[256];
    snprintf(detail, sizeof(detail), "%s %s: %zu queued, %zu failed", e->request_type, e->uuid,
             e->n_queued, e->n - e->n_queued);
    int status = 201;
    json_t *body = json_pack("{s:s, s:s, s:O, s:O}", "command_uuid", e->uuid, "request_type",
                             e->request_type, "queued", e->queued, "failed", e->failed);
    if (e->single && e->n_queued == 0) {
        /* One device, and it refused: its status is the call's. */
        json_t *f = json_array_get(e->failed, 0);
        status = (int)json_integer_value(json_object_get(f, "status"));
        json_object_set(body, "error", json_object_get(f, "error"));
        json_object_set_new(body, "detail", json_string("the device did not take the command"));
    }
    mdm_api_call_finish(&e->c, status, body, detail);
}

static void add_failure(struct enqueue *e, const char *udid, int status, const char *error)
{
    json_t *f = json_pack("{s:s, s:i, s:s}", "udid", udid, "status", status, "error", error);
    json_array_append_new(e->failed, f);
}

static void on_enqueued(mdm_dev_req_t *r)
{
    struct enqueue *e = r->ctx;
    if (r->status == 201 || r->status == 200) {
        json_array_append_new(e->queued, json_string(r->base.id));
        e->n_queued++;
    } else {
        add_failure(e, r->base.id, r->status, r->error[0] ? r->error : "refused");
    }
    mdm_dev_req_free(r);
    e->outstanding--;
    e->answered++;
    pump(e);
}

static void pump(struct enqueue *e)
{
    if (e->pumping)
        return;
    e->pumping = true;
    while (e->outstanding < MDM_API_INFLIGHT_MAX && e->next < e->n) {
        const char *udid = e->udids[e->next++];
        mdm_dev_req_t *r = mdm_dev_req_new(MDM_DEV_ENQUEUE, udid);
        uint8_t *copy = r ? malloc(e->plist_len) : NULL;
        if (!r || !copy) {
            mdm_dev_req_free(r);
            free(copy);
            add_failure(e, udid, 503, "out of memory");
            e->answered++;
            continue;
        }
        memcpy(copy, e->plist, e->plist_len);
        r->plist = copy;
        r->plist_len = e->plist_len;
        snprintf(r->uuid, sizeof(r->uuid), "%s", e->uuid);
        snprintf(r->channel, sizeof(r->channel), "%s", e->channel);
        r->done = on_enqueued;
        r->ctx = e;
        e->outstanding++;
        mdm_dev_send(r); /* may answer at once (mailbox full): see pumping */
    }
    e->pumping = false;
    if (e->answered == e->n)
        enqueue_done(e);
}

static void on_command_durable(mdm_commit_waiter_t *w, int status)
{
    struct enqueue *e = MDM_CONTAINER_OF(w, struct enqueue, c.waiter);
    if (status != 0) {
        mdm_api_call_fail(&e->c, 503, "storage failure", "the command could not be stored");
        return;
    }
    pump(e);
}

/* Builds the command plist around cmd (handed over) and stores the command record. */
static void enqueue_start(struct enqueue *e, plist_t cmd)
{
    plist_t root = plist_new_dict();
    mdm_buf_t xml;
    mdm_buf_init(&xml, 0);
    int ret = mdm_plist_dict_set_item(root, "Command", cmd);
    if (ret == 0)
        ret = mdm_plist_dict_set_string(root, "CommandUUID", e->uuid);
    if (ret == 0)
        ret = mdm_plist_to_xml(root, &xml);
    plist_free(root);
    if (ret == 0 && !(e->plist = malloc(xml.len)))
        ret = -ENOMEM;
    if (ret != 0) {
        mdm_buf_dispose(&xml);
        mdm_api_call_fail(&e->c, 500, "internal error", "cannot encode the command");
        return;
    }
    memcpy(e->plist, mdm_buf_head(&xml), xml.len);
    e->plist_len = xml.len;
    mdm_buf_dispose(&xml);
    mdm_command_t rec;
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.uuid, sizeof(rec.uuid), "%s", e->uuid);
    snprintf(rec.request_type, sizeof(rec.request_type), "%s", e->request_type);
    rec.created_ms = mdm_wall_ms();
    snprintf(rec.created_by, sizeof(rec.created_by), "%s", api.who);
    rec.plist = e->plist;
    rec.plist_len = e->plist_len;
    mdm_store_put_command(mdm_actors_shard_batch(e->c.shard), &rec);
    e->c.waiter.fn = on_command_durable;
    mdm_actors_after_commit(e->c.shard, &e->c.waiter);
}

static bool is_plist_type(const char *ct)
{
    if (!ct)
        return false;
    return strncasecmp(ct, "application/xml", 15) == 0 ||
           strncasecmp(ct, "application/x-plist", 19) == 0 ||
           strncasecmp(ct, "text/xml", 8) == 0;
}

/*
 * Turns the request into the Command dictionary (returned, owned by the caller) and sets
 * e->request_type; for bulk calls also fills e->udids from the JSON "udids". On failure ends
 * the call and returns NULL.
 */
static plist_t command_from_request(struct enqueue *e, const mdm_http_request_t *r, bool bulk)
{
    char flag[8] = "";
    bool allow_unknown = mdm_api_query_param(r->query, "allow_unknown", flag, sizeof(flag)) &&
                         (strcmp(flag, "1") == 0 || strcmp(flag, "true") == 0);
    const char *ct = mdm_http_request_header(r, "Content-Type");
    struct verr ve;
    memset(&ve, 0, sizeof(ve));
    char detail[600];
    /* ?channel=<UserID> queues for a user channel instead of the device channel. */
    char channel[256] = "";
    bool has_channel = mdm_api_query_param(r->query, "channel", channel, sizeof(channel));
    if ((has_channel || (r->query && strstr(r->query, "channel="))) &&
        (!has_channel || strlen(channel) > MDM_CHANNEL_MAX || !mdm_api_id_valid(channel, strlen(channel)))) {
        mdm_api_call_fail(&e->c, 422, "invalid parameter",
                          "channel: a user channel's UserID (1-63 of A-Z a-z 0-9 - _ . :)");
        return NULL;
    }
    memcpy(e->channel, channel, strlen(channel) + 1); /* checked: at most MDM_CHANNEL_MAX */

    if (is_plist_type(ct)) {
        if (bulk) {
            mdm_api_call_fail(&e->c, 415, "unsupported content type",
                              "POST /api/v1/commands takes JSON with \"udids\"");
            return NULL;
        }
        plist_t root = NULL;
        char err[128] = "";
        if (mdm_plist_parse_dict(mdm_buf_head(&r->body), r->body.len, PLIST_DEPTH, &root, err,
                                 sizeof(err)) != 0) {
            mdm_api_call_fail(&e->c, 400, "invalid plist", err);
            return NULL;
        }
        plist_t cmd = root;
        plist_t inner = NULL;
        if (mdm_plist_get_dict(root, "Command", &inner) == 0)
            cmd = inner; /* a full command: {Command, CommandUUID}; our UUID replaces theirs */
        const char *type = NULL;
        if (mdm_plist_get_string(cmd, "RequestType", &type) != 0) {
            plist_free(root);
            mdm_api_call_fail(&e->c, 422, "invalid command", "RequestType (a string) is required");
            return NULL;
        }
        snprintf(e->request_type, sizeof(e->request_type), "%s", type);
        const struct rtype *rt = find_rtype(type);
        if (!rt && !allow_unknown) {
            plist_free(root);
            snprintf(detail, sizeof(detail),
                     "RequestType '%.64s' is not known to mdmd (add ?allow_unknown=1 to send "
                     "it unchecked)", e->request_type);
            mdm_api_call_fail(&e->c, 422, "unknown request_type", detail);
            return NULL;
        }
        if (rt && !check_plist_dict(cmd, rt->keys, false, "", &ve, "RequestType")) {
            plist_free(root);
            snprintf(detail, sizeof(detail), "%s: %s (%s)", ve.path, ve.msg, e->request_type);
            mdm_api_call_fail(&e->c, 422, "invalid parameter", detail);
            return NULL;
        }
        plist_t out = plist_copy(cmd);
        plist_free(root);
        if (!out)
            mdm_api_call_fail(&e->c, 503, "out of memory", NULL);
        return out;
    }
    if (ct && strncasecmp(ct, "application/json", 16) != 0) {
        mdm_api_call_fail(&e->c, 415, "unsupported content type",
                          "send application/json, or a plist as application/xml");
        return NULL;
    }
    json_error_t jerr;
    json_t *body = json_loadb((const char *)mdm_buf_head(&r->body), r->body.len,
                              JSON_REJECT_DUPLICATES, &jerr);
    if (!body || !json_is_object(body)) {
        snprintf(detail, sizeof(detail), body ? "the body must be a JSON object"
                                              : "line %d column %d: %s",
                 jerr.line, jerr.column, jerr.text);
        json_decref(body);
        mdm_api_call_fail(&e->c, 400, "invalid JSON", detail);
        return NULL;
    }
    plist_t cmd = NULL;
    const char *type = json_string_value(json_object_get(body, "request_type"));
    json_t *params = json_object_get(body, "params");
    const char *bad_top = NULL;
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (strcmp(k, "request_type") != 0 && strcmp(k, "params") != 0 &&
            !(bulk && strcmp(k, "udids") == 0))
            bad_top = k;
    }
    if (bad_top) {
        snprintf(detail, sizeof(detail), "unknown key '%.64s' (expected request_type, params%s)",
                 bad_top, bulk ? ", udids" : "");
        mdm_api_call_fail(&e->c, 422, "invalid parameter", detail);
        goto out;
    }
    if (!type || !type[0] || strlen(type) >= sizeof(e->request_type)) {
        mdm_api_call_fail(&e->c, 422, "invalid parameter",
                          "request_type: a non-empty string is required");
        goto out;
    }
    snprintf(e->request_type, sizeof(e->request_type), "%s", type);
    if (params && !json_is_object(params)) {
        mdm_api_call_fail(&e->c, 422, "invalid parameter", "params: expected an object");
        goto out;
    }
    const struct rtype *rt = find_rtype(type);
    if (!rt && !allow_unknown) {
        snprintf(detail, sizeof(detail),
                 "request_type '%.64s' is not known to mdmd (add ?allow_unknown=1 to send it "
                 "unchecked)", e->request_type);
        mdm_api_call_fail(&e->c, 422, "unknown request_type", detail);
        goto out;
    }
    if (params && json_object_get(params, "RequestType")) {
        mdm_api_call_fail(&e->c, 422, "invalid parameter",
                          "params.RequestType: set request_type instead");
        goto out;
    }
    json_t *empty = params ? NULL : json_object();
    cmd = json_dict_to_plist(params ? params : empty, rt ? rt->keys : NULL, false, "params",
                             &ve, 1);
    json_decref(empty);
    if (!cmd) {
        snprintf(detail, sizeof(detail), "%s: %s (%s)", ve.path, ve.msg, e->request_type);
        mdm_api_call_fail(&e->c, 422, "invalid parameter", detail);
        goto out;
    }
    if (mdm_plist_dict_set_string(cmd, "RequestType", type) != 0) {
        plist_free(cmd);
        cmd = NULL;
        mdm_api_call_fail(&e->c, 503, "out of memory", NULL);
        goto out;
    }
    if (bulk) {
        json_t *udids = json_object_get(body, "udids");
        size_t n = json_array_size(udids);
        if (!json_is_array(udids) || n == 0 || n > MDM_API_BULK_MAX) {
            snprintf(detail, sizeof(detail), "udids: expected an array of 1 to %d UDIDs",
                     MDM_API_BULK_MAX);
            mdm_api_call_fail(&e->c, 422, "invalid parameter", detail);
            plist_free(cmd);
            cmd = NULL;
            goto out;
        }
        e->udids = calloc(n, sizeof(*e->udids));
        if (!e->udids) {
            mdm_api_call_fail(&e->c, 503, "out of memory", NULL);
            plist_free(cmd);
            cmd = NULL;
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            const char *u = json_string_value(json_array_get(udids, i));
            if (!u || !mdm_api_id_valid(u, strlen(u))) {
                snprintf(detail, sizeof(detail),
                         "udids[%zu]: expected a UDID (1-63 of A-Z a-z 0-9 - _ . :)", i);
                mdm_api_call_fail(&e->c, 422, "invalid parameter", detail);
                plist_free(cmd);
                cmd = NULL;
                goto out;
            }
            snprintf(e->udids[i], sizeof(e->udids[i]), "%s", u);
        }
        e->n = n;
        snprintf(e->c.audit.target, sizeof(e->c.audit.target), "%zu device%s: %s%s", n,
                 n == 1 ? "" : "s", e->udids[0], n > 1 ? ", ..." : "");
    }
out:
    json_decref(body);
    return cmd;
}

static void handle_enqueue(mdm_exchange_t *x, const char *udid)
{
    const mdm_http_request_t *r = mdm_exchange_request(x);
    struct enqueue *e = (struct enqueue *)mdm_api_call_new(x, sizeof(struct enqueue),
                                                           "command.enqueue", udid ? udid : "");
    if (!e) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return;
    }
    e->c.free_fn = enqueue_free;
    e->queued = json_array();
    e->failed = json_array();
    if (!e->queued || !e->failed || mdm_uuid_v4(e->uuid) != 0) {
        mdm_api_call_fail(&e->c, 503, "internal error", "out of memory or random bytes");
        return;
    }
    plist_t cmd = command_from_request(e, r, udid == NULL);
    if (!cmd)
        return; /* the call was ended */
    if (udid) {
        e->single = true;
        e->udids = calloc(1, sizeof(*e->udids));
        if (!e->udids) {
            plist_free(cmd);
            mdm_api_call_fail(&e->c, 503, "out of memory", NULL);
            return;
        }
        snprintf(e->udids[0], sizeof(e->udids[0]), "%s", udid);
        e->n = 1;
    }
    enqueue_start(e, cmd);
}

/* ------------------------------------------------------------------------------------------
 * Device actor requests: GET, DELETE, cancel
 */

static json_t *device_json(const mdm_device_t *d)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    mdm_api_set_str(o, "udid", d->udid);
    mdm_api_set_str(o, "serial", d->serial);
    mdm_api_set_str(o, "state", mdm_device_state_name((enum mdm_device_state)d->state));
    json_object_set_new(o, "enrolled", json_boolean(d->state == MDM_DEVICE_ENROLLED));
    mdm_api_set_str(o, "model", d->model);
    mdm_api_set_str(o, "model_name", d->model_name);
    mdm_api_set_str(o, "product_name", d->product_name);
    mdm_api_set_str(o, "os_version", d->os_version);
    mdm_api_set_str(o, "build_version", d->build_version);
    mdm_api_set_str(o, "device_name", d->device_name);
    mdm_api_set_int(o, "enrollment", d->enrollment);
    mdm_api_set_str(o, "topic", d->topic);
    json_object_set_new(o, "push_token", json_boolean(d->push_token_len > 0));
    json_object_set_new(o, "push_token_invalid", json_boolean(d->push_token_invalid));
    json_object_set_new(o, "awaiting_configuration", json_boolean(d->awaiting_configuration));
    mdm_api_set_str(o, "identity_sha256", d->cert_sha256);
    mdm_api_set_int(o, "authenticated_ms", d->authenticated_ms);
    mdm_api_set_int(o, "enrolled_ms", d->enrolled_ms);
    mdm_api_set_int(o, "last_seen_ms", d->last_seen_ms);
    mdm_api_set_int(o, "checked_out_ms", d->checked_out_ms);
    mdm_api_set_int(o, "vshard", d->vshard);
    mdm_api_set_int(o, "version", d->version);
    mdm_api_set_str(o, "enrollment_id", d->enroll_id);
    json_object_set_new(o, "ade", json_boolean(d->ade));
    json_object_set_new(o, "policies_suspended", json_boolean(d->policies_suspended));
    json_object_set_new(o, "filevault_key_escrowed", json_boolean(d->fv_key_escrowed));
    mdm_api_set_int(o, "revoked_ms", d->revoked_ms);
    return o;
}

/* The stored outcome of the last push to a channel. */
static json_t *last_push_json(uint64_t result_ms, int status, const char *reason)
{
    json_t *push = json_object();
    mdm_api_set_int(push, "result_ms", result_ms);
    json_object_set_new(push, "status", json_integer(status));
    mdm_api_set_str(push, "reason", reason);
    return push;
}

static json_t *user_channels_json(const mdm_user_channel_t *u, unsigned n)
{
    json_t *a = json_array();
    for (unsigned i = 0; a && i < n; i++) {
        json_t *o = json_object();
        mdm_api_set_str(o, "user_id", u[i].user_id);
        mdm_api_set_str(o, "short_name", u[i].short_name);
        mdm_api_set_str(o, "long_name", u[i].long_name);
        json_object_set_new(o, "push_token", json_boolean(u[i].push_token_len > 0));
        json_object_set_new(o, "push_token_invalid", json_boolean(u[i].push_token_invalid));
        mdm_api_set_int(o, "updated_ms", u[i].updated_ms);
        json_object_set_new(o, "last_push", last_push_json(u[i].last_push_ms,
                                                           u[i].last_push_status,
                                                           u[i].last_push_reason));
        json_array_append_new(a, o);
    }
    return a;
}

static void on_device_got(mdm_dev_req_t *r)
{
    mdm_exchange_t *x = r->ctx;
    if (r->status != 200) {
        mdm_api_respond_error(x, r->status, r->status == 404 ? "not found" : "unavailable",
                              r->error);
    } else {
        json_t *o = device_json(&r->device);
        if (o) {
            mdm_api_set_int(o, "queued", r->queued);
            const mdm_device_t *d = &r->device;
            json_t *push = last_push_json(d->last_push_ms, d->last_push_status,
                                          d->last_push_reason);
            mdm_api_set_int(push, "requested_ms", r->push_requested_ms);
            json_object_set_new(o, "last_push", push);
            json_object_set_new(o, "user_channels", user_channels_json(r->users, r->n_users));
            json_object_set_new(o, "bootstrap_token_escrowed", json_boolean(r->has_bootstrap));
        }
        mdm_api_respond_json(x, 200, o, NULL, 0);
    }
    mdm_dev_req_free(r);
}

static void handle_get_device(mdm_exchange_t *x, const char *udid)
{
    mdm_dev_req_t *r = mdm_dev_req_new(MDM_DEV_GET, udid);
    if (!r) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return;
    }
    r->done = on_device_got;
    r->ctx = x;
    mdm_dev_send(r);
}

static void on_device_answer(mdm_dev_req_t *r)
{
    struct mdm_api_call *c = r->ctx;
    int status = r->status;
    if (status == 200 || status == 201 || status == 202) {
        json_t *body;
        if (r->kind == MDM_DEV_DELETE)
            body = json_pack("{s:s}", "deleted", r->base.id);
        else if (r->kind == MDM_DEV_PUSH)
            body = json_pack("{s:s, s:b}", "udid", r->base.id, "push_queued", 1);
        else
            body = json_pack("{s:s, s:s}", "cancelled", r->uuid, "udid", r->base.id);
        if (r->kind == MDM_DEV_PUSH)
            mdm_api_call_finish(c, 202, body, "push queued");
        else
            mdm_api_call_finish(c, 200, body, r->kind == MDM_DEV_DELETE ? "deleted" : "cancelled");
    } else {
        const char *error = status == 404   ? "not found"
                            : status == 409 ? "conflict"
                                            : "unavailable";
        mdm_api_call_fail(c, status, error, r->error);
    }
    mdm_dev_req_free(r);
}

static void handle_device_change(mdm_exchange_t *x, enum mdm_dev_req_kind kind,
                                 const char *udid, const char *uuid)
{
    char target[128];
    snprintf(target, sizeof(target), "%s%s%s", udid, uuid ? "/" : "", uuid ? uuid : "");
    struct mdm_api_call *c = mdm_api_call_new(x, sizeof(struct mdm_api_call),
                                              kind == MDM_DEV_DELETE ? "device.delete"
                                              : kind == MDM_DEV_PUSH ? "device.push"
                                                                     : "command.cancel",
                                              target);
    if (!c) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return;
    }
    if (kind == MDM_DEV_PUSH && !mdm_apns_enabled()) {
        mdm_api_call_fail(c, 503, "unavailable",
                          "the APNs pusher is off: set [apns] url and address (see the server "
                          "log)");
        return;
    }
    if (kind == MDM_DEV_PUSH && !atomic_load(&have_pushcert)) {
        mdm_api_call_fail(c, 503, "unavailable",
                          "no push certificate: upload one (PUT /api/v1/push-certificate)");
        return;
    }
    mdm_dev_req_t *r = mdm_dev_req_new(kind, udid);
    if (!r) {
        mdm_api_call_fail(c, 503, "out of memory", NULL);
        return;
    }
    if (uuid)
        snprintf(r->uuid, sizeof(r->uuid), "%s", uuid);
    r->done = on_device_answer;
    r->ctx = c;
    mdm_dev_send(r);
}

/* ------------------------------------------------------------------------------------------
 * Bulk push: POST push with {"udids":[...]} or {"all":true}. One MDM_DEV_PUSH per device (the
 * path of POST devices/{udid}/push, so coalescing and refused tokens apply), at most
 * MDM_API_INFLIGHT_MAX at a time. "all" reads the device list in pages of PUSH_PAGE UDIDs on
 * a storage worker, one page at a time, the next once the current one is handed out: memory
 * stays one page whatever the fleet's size.
 */

#define PUSH_PAGE 1000
#define PUSH_FAILURES_MAX 100 /* failures listed in the answer (all are counted) */

struct bulkpush {
    struct mdm_api_call c; /* first */
    mdm_shard_msg_t msg;
    bool all;      /* every device, paged from storage */
    bool fetching; /* a page job is on a storage worker: udids, n, after are its own */
    bool eof;      /* all: the last page was read */
    bool pumping, finished;
    int store_err; /* a page could not be read (the call ends with 503) */
    char (*udids)[MDM_UDID_MAX + 1]; /* the list, or the current page */
    size_t n, next, outstanding;
    char after[MDM_UDID_MAX + 1]; /* all: last UDID read */
    uint64_t requested, queued, skipped, failed;
    json_t *failures;
};

static void bulkpush_free(struct mdm_api_call *c)
{
    struct bulkpush *b = (struct bulkpush *)c;
    free(b->udids);
    json_decref(b->failures);
    free(b);
}

static void bulkpush_pump(struct bulkpush *b);

static void bulkpush_failure(struct bulkpush *b, const char *udid, int status, const char *error)
{
    b->failed++;
    if (json_array_size(b->failures) < PUSH_FAILURES_MAX)
        json_array_append_new(b->failures, json_pack("{s:s, s:i, s:s}", "udid", udid, "status",
                                                     status, "error", error));
}

static void bulkpush_finish(struct bulkpush *b)
{
    b->finished = true;
    char detail[200];
    snprintf(detail, sizeof(detail),
             "requested %llu, queued %llu, skipped_no_token %llu, failed %llu%s",
             (unsigned long long)b->requested, (unsigned long long)b->queued,
             (unsigned long long)b->skipped, (unsigned long long)b->failed,
             b->store_err ? ", device list unreadable" : "");
    json_t *body = json_pack("{s:I, s:I, s:I, s:I, s:O}", "requested", (json_int_t)b->requested,
                             "queued", (json_int_t)b->queued, "skipped_no_token",
                             (json_int_t)b->skipped, "failed", (json_int_t)b->failed,
                             "failures", b->failures);
    int status = 202;
    if (b->store_err) {
        status = 503;
        json_object_set_new(body, "error", json_string("storage failure"));
        char d[200];
        snprintf(d, sizeof(d), "the device list could not be read (%s): devices after %s were "
                               "not pushed", mdm_strerror(b->store_err), b->after[0] ? b->after
                                                                                  : "the start");
        json_object_set_new(body, "detail", json_string(d));
    }
    mdm_api_call_finish(&b->c, status, body, detail);
}

static void on_bulk_pushed(mdm_dev_req_t *r)
{
    struct bulkpush *b = r->ctx;
    if (r->status == 202)
        b->queued++;
    else if (r->status == 409)
        b->skipped++;
    else
        bulkpush_failure(b, r->base.id, r->status, r->error[0] ? r->error : "refused");
    mdm_dev_req_free(r);
    b->outstanding--;
    bulkpush_pump(b);
}

static int on_page_device(void *arg, const mdm_device_t *d)
{
    struct bulkpush *b = arg;
    snprintf(b->udids[b->n], sizeof(b->udids[b->n]), "%s", d->udid);
    snprintf(b->after, sizeof(b->after), "%s", d->udid);
    return ++b->n >= PUSH_PAGE ? 1 : 0;
}

static void on_page_read(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct bulkpush *b = MDM_CONTAINER_OF(m, struct bulkpush, msg);
    b->fetching = false;
    bulkpush_pump(b);
}

static void run_page(mdm_store_t *s, void *arg)
{
    struct bulkpush *b = arg;
    int ret = mdm_store_list_devices(s, b->after, on_page_device, b);
    if (ret < 0) {
        b->store_err = ret;
        b->eof = true;
    } else if (ret == 0) {
        b->eof = true; /* the list ended before a full page */
    }
    b->msg.fn = on_page_read;
    mdm_shard_post(b->c.shard, &b->msg);
}

static void bulkpush_pump(struct bulkpush *b)
{
    if (b->pumping || b->finished)
        return;
    b->pumping = true;
    while (!b->fetching) {
        if (b->next < b->n) {
            if (b->outstanding >= MDM_API_INFLIGHT_MAX)
                break;
            const char *udid = b->udids[b->next++];
            b->requested++;
            mdm_dev_req_t *r = mdm_dev_req_new(MDM_DEV_PUSH, udid);
            if (!r) {
                bulkpush_failure(b, udid, 503, "out of memory");
                continue;
            }
            r->done = on_bulk_pushed;
            r->ctx = b;
            b->outstanding++;
            mdm_dev_send(r); /* may answer at once (mailbox full): see pumping */
            continue;
        }
        if (!b->all || b->eof)
            break;
        /* The page is handed out: read the next one. */
        b->n = b->next = 0;
        b->fetching = true;
        int ret = mdm_store_run_async(api.store, run_page, b);
        if (ret != 0) {
            b->fetching = false;
            b->store_err = ret;
            b->eof = true;
        }
    }
    b->pumping = false;
    if (!b->fetching && b->next == b->n && b->outstanding == 0 && (!b->all || b->eof))
        bulkpush_finish(b);
}

static void handle_bulk_push(mdm_exchange_t *x)
{
    const mdm_http_request_t *r = mdm_exchange_request(x);
    struct bulkpush *b = (struct bulkpush *)mdm_api_call_new(x, sizeof(*b), "push.bulk", "");
    if (!b) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return;
    }
    b->c.free_fn = bulkpush_free;
    b->failures = json_array();
    if (!b->failures) {
        mdm_api_call_fail(&b->c, 503, "out of memory", NULL);
        return;
    }
    const char *ct = mdm_http_request_header(r, "Content-Type");
    if (ct && strncasecmp(ct, "application/json", 16) != 0) {
        mdm_api_call_fail(&b->c, 415, "unsupported content type", "send application/json");
        return;
    }
    json_error_t jerr;
    json_t *body = json_loadb((const char *)mdm_buf_head(&r->body), r->body.len,
                              JSON_REJECT_DUPLICATES, &jerr);
    char detail[200];
    if (!body || !json_is_object(body)) {
        snprintf(detail, sizeof(detail), body ? "the body must be a JSON object"
                                              : "line %d column %d: %s",
                 jerr.line, jerr.column, jerr.text);
        json_decref(body);
        mdm_api_call_fail(&b->c, 400, "invalid JSON", detail);
        return;
    }
    const char *why = NULL;
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (strcmp(k, "udids") != 0 && strcmp(k, "all") != 0)
            why = "unknown key (expected udids or all)";
    }
    json_t *udids = json_object_get(body, "udids");
    json_t *all = json_object_get(body, "all");
    size_t n = json_array_size(udids);
    if (!why && (udids != NULL) == (all != NULL)) {
        why = "give either udids (an array of UDIDs) or all: true";
    } else if (!why && all && !json_is_true(all)) {
        why = "all: only true is meaningful (or give udids)";
    } else if (!why && udids &&
               (!json_is_array(udids) || n == 0 || n > MDM_API_BULK_MAX)) {
        snprintf(detail, sizeof(detail), "udids: expected an array of 1 to %d UDIDs",
                 MDM_API_BULK_MAX);
        why = detail;
    }
    if (!why && udids) {
        b->udids = calloc(n, sizeof(*b->udids));
        if (!b->udids) {
            json_decref(body);
            mdm_api_call_fail(&b->c, 503, "out of memory", NULL);
            return;
        }
        for (size_t i = 0; i < n && !why; i++) {
            const char *u = json_string_value(json_array_get(udids, i));
            if (!u || !mdm_api_id_valid(u, strlen(u))) {
                snprintf(detail, sizeof(detail),
                         "udids[%zu]: expected a UDID (1-63 of A-Z a-z 0-9 - _ . :)", i);
                why = detail;
            } else {
                snprintf(b->udids[i], sizeof(b->udids[i]), "%s", u);
            }
        }
        b->n = n;
    }
    if (why) {
        char copy[200];
        snprintf(copy, sizeof(copy), "%s", why);
        json_decref(body);
        mdm_api_call_fail(&b->c, 422, "invalid parameter", copy);
        return;
    }
    json_decref(body);
    if (all) {
        b->all = true;
        snprintf(b->c.audit.target, sizeof(b->c.audit.target), "all devices");
        b->udids = calloc(PUSH_PAGE, sizeof(*b->udids));
        if (!b->udids) {
            mdm_api_call_fail(&b->c, 503, "out of memory", NULL);
            return;
        }
    } else {
        snprintf(b->c.audit.target, sizeof(b->c.audit.target), "%zu device%s: %s%s", n,
                 n == 1 ? "" : "s", b->udids[0], n > 1 ? ", ..." : "");
    }
    if (!mdm_apns_enabled()) {
        mdm_api_call_fail(&b->c, 503, "unavailable",
                          "the APNs pusher is off: set [apns] url and address (see the server "
                          "log)");
        return;
    }
    if (!atomic_load(&have_pushcert)) {
        mdm_api_call_fail(&b->c, 503, "unavailable",
                          "no push certificate: upload one (PUT /api/v1/push-certificate)");
        return;
    }
    bulkpush_pump(b);
}

/* ------------------------------------------------------------------------------------------
 * Reads on a storage worker: device list, command history, audit log
 */

enum job_kind { JOB_DEVICES, JOB_HISTORY, JOB_AUDIT };

struct job {
    mdm_shard_msg_t msg;
    mdm_exchange_t *x;
    mdm_shard_t *shard;
    enum job_kind kind;
    /* parameters */
    char udid[MDM_UDID_MAX + 1];   /* HISTORY: device; DEVICES: exact filter ("" = none) */
    char after[MDM_UDID_MAX + 1];  /* paging cursor (udid, uuid or audit id) */
    char serial[64];
    int enrolled;                  /* -1 any, 0 not enrolled, 1 enrolled */
    uint64_t since_ms;
    unsigned limit;
    struct {
        char action[64], target[128], who[64]; /* filters ("" = any) */
        int status;                            /* see mdm_audit_filter_t */
        bool jsonl;                            /* export: body is JSON lines */
        mdm_buf_t body;                        /* the export, built on the worker */
    } audit;
    /* result, built on the worker */
    int status;
    json_t *items;
    char *text;
    char error[64], detail[200];
    mdm_store_t *store;
    unsigned count;
    char last[MDM_UDID_MAX + 1];
};

static int job_fail(struct job *j, int status, const char *error, const char *detail)
{
    j->status = status;
    snprintf(j->error, sizeof(j->error), "%s", error);
    snprintf(j->detail, sizeof(j->detail), "%s", detail);
    return -1;
}

static bool device_matches(const struct job *j, const mdm_device_t *d)
{
    if (j->serial[0] && strcmp(j->serial, d->serial) != 0)
        return false;
    if (j->enrolled >= 0 && (d->state == MDM_DEVICE_ENROLLED) != (j->enrolled == 1))
        return false;
    if (j->since_ms && d->last_seen_ms < j->since_ms)
        return false;
    return true;
}

static int on_list_device(void *arg, const mdm_device_t *d)
{
    struct job *j = arg;
    if (!device_matches(j, d))
        return 0;
    json_t *o = device_json(d);
    if (!o || json_array_append_new(j->items, o) != 0)
        return -ENOMEM;
    snprintf(j->last, sizeof(j->last), "%s", d->udid);
    return ++j->count >= j->limit ? 1 : 0;
}

static int on_list_result(void *arg, const mdm_result_t *r)
{
    struct job *j = arg;
    if (j->after[0] && strcmp(r->uuid, j->after) <= 0)
        return 0;
    json_t *o = json_object();
    if (!o)
        return -ENOMEM;
    mdm_api_set_str(o, "command_uuid", r->uuid);
    mdm_api_set_str(o, "channel", r->channel[0] ? r->channel : "device");
    mdm_api_set_str(o, "status", mdm_command_status_name((enum mdm_command_status)r->status));
    mdm_command_t cmd;
    if (mdm_store_get_command(j->store, r->uuid, &cmd) == 0) {
        mdm_api_set_str(o, "request_type", cmd.request_type);
        mdm_api_set_str(o, "created_by", cmd.created_by);
        mdm_api_set_int(o, "created_ms", cmd.created_ms);
    } else {
        json_object_set_new(o, "request_type", json_null());
    }
    mdm_command_dispose(&cmd);
    json_t *events = json_array();
    for (unsigned i = 0; events && i < r->n_events; i++)
        json_array_append_new(
            events, json_pack("{s:s, s:I}", "status",
                              mdm_command_status_name((enum mdm_command_status)r->events[i].status),
                              "at_ms", (json_int_t)r->events[i].at_ms));
    json_object_set_new(o, "events", events ? events : json_null());
    json_t *resp = r->response_len
                       ? json_stringn((const char *)r->response, r->response_len)
                       : json_null();
    if (!resp) {
        /* Not UTF-8 text (e.g. a binary plist): hand it over as base64. */
        mdm_buf_t b64;
        mdm_buf_init(&b64, 0);
        if (mdm_base64_encode(r->response, r->response_len, &b64) == 0)
            json_object_set_new(o, "response_base64",
                                json_stringn((const char *)mdm_buf_head(&b64), b64.len));
        mdm_buf_dispose(&b64);
        resp = json_null();
    }
    json_object_set_new(o, "response", resp);
    if (json_array_append_new(j->items, o) != 0)
        return -ENOMEM;
    snprintf(j->last, sizeof(j->last), "%s", r->uuid);
    return ++j->count >= j->limit ? 1 : 0;
}

/* Audit: filters and bounds of GET /api/v1/audit (see docs/api.md). */
#define AUDIT_SCAN_MAX 100000                  /* records read per request */
#define AUDIT_EXPORT_LIMIT_DEFAULT 10000       /* events per JSON-lines page */
#define AUDIT_EXPORT_LIMIT_MAX 100000
#define AUDIT_EXPORT_BYTES_MAX (32u << 20)     /* a page ends after the line that passes it */

static json_t *audit_json(const mdm_audit_event_t *ev)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    mdm_api_set_str(o, "id", ev->id);
    mdm_api_set_int(o, "at_ms", ev->at_ms);
    mdm_api_set_str(o, "who", ev->who);
    mdm_api_set_str(o, "action", ev->action);
    mdm_api_set_str(o, "target", ev->target);
    mdm_api_set_str(o, "source", ev->source);
    mdm_api_set_int(o, "status", ev->status);
    mdm_api_set_str(o, "detail", ev->detail);
    return o;
}

static int on_list_audit(void *arg, const mdm_audit_event_t *ev)
{
    struct job *j = arg;
    json_t *o = audit_json(ev);
    if (!o || json_array_append_new(j->items, o) != 0)
        return -ENOMEM;
    j->count++;
    return 0;
}

/* One JSON line per event; stops (1) once the body passes AUDIT_EXPORT_BYTES_MAX. */
static int on_export_audit(void *arg, const mdm_audit_event_t *ev)
{
    struct job *j = arg;
    json_t *o = audit_json(ev);
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    int ret = line ? mdm_buf_append_str(&j->audit.body, line) : -ENOMEM;
    if (ret == 0)
        ret = mdm_buf_append(&j->audit.body, "\n", 1);
    free(line);
    if (ret != 0)
        return -ENOMEM;
    j->count++;
    return j->audit.body.len >= AUDIT_EXPORT_BYTES_MAX ? 1 : 0;
}

/* Lists (or exports) one page; j->last gets where to continue ("" at the end). */
static int list_audit(mdm_store_t *s, struct job *j)
{
    mdm_audit_query_t q = {
        .since_ms = j->since_ms,
        .after_id = j->after,
        .filter = {.action = j->audit.action, .target = j->audit.target, .who = j->audit.who,
                   .status = j->audit.status},
        .limit = j->limit,
        .max_scan = AUDIT_SCAN_MAX,
    };
    int ret = mdm_store_query_audit(s, &q, j->audit.jsonl ? on_export_audit : on_list_audit, j);
    if (ret == -EINVAL)
        job_fail(j, 400, "invalid parameter", "after: expected an event id");
    snprintf(j->last, sizeof(j->last), "%s", q.next_after);
    return ret;
}

/* The export's answer: JSON lines, X-Next-After when there is more. */
static void respond_export(struct job *j)
{
    mdm_http_header_t next = {"X-Next-After", 12, j->last, strlen(j->last)};
    mdm_exchange_respond(j->x, 200, &next, j->last[0] ? 1 : 0, "application/x-ndjson",
                         mdm_buf_head(&j->audit.body), j->audit.body.len);
}

static void on_job_result(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct job *j = MDM_CONTAINER_OF(m, struct job, msg);
    if (j->text) {
        size_t len = strlen(j->text);
        mdm_exchange_respond(j->x, 200, NULL, 0, "application/json", j->text, len);
    } else if (j->audit.jsonl && !j->status) {
        respond_export(j);
    } else {
        mdm_api_respond_error(j->x, j->status ? j->status : 500,
                              j->error[0] ? j->error : "internal error", j->detail);
    }
    free(j->text);
    mdm_buf_dispose(&j->audit.body);
    free(j);
}

static void run_job(mdm_store_t *s, void *arg)
{
    struct job *j = arg;
    j->store = s;
    j->items = json_array();
    int ret = j->items ? 0 : -ENOMEM;
    const char *list_name = "devices";
    if (ret == 0) {
        switch (j->kind) {
        case JOB_DEVICES:
            if (j->udid[0]) {
                mdm_device_t d;
                ret = mdm_store_get_device(s, j->udid, &d);
                if (ret == 0 && device_matches(j, &d))
                    ret = on_list_device(j, &d);
                if (ret == MDM_ENOTFOUND || ret == 1)
                    ret = 0;
                j->last[0] = '\0'; /* an exact match has no next page */
                j->count = 0;
            } else {
                ret = mdm_store_list_devices(s, j->after, on_list_device, j);
            }
            break;
        case JOB_HISTORY: {
            list_name = "commands";
            mdm_device_t d;
            ret = mdm_store_get_device(s, j->udid, &d);
            if (ret == MDM_ENOTFOUND) {
                job_fail(j, 404, "not found", "no such device");
                break;
            }
            if (ret == 0)
                ret = mdm_store_list_results(s, j->udid, on_list_result, j);
            break;
        }
        case JOB_AUDIT:
            list_name = "events";
            ret = list_audit(s, j);
            break;
        }
    }
    if (ret == 1)
        ret = 0; /* stopped after a full page */
    if (ret == 0 && !j->status && j->audit.jsonl) {
        /* the export's body is ready */
    } else if (ret == 0 && !j->status) {
        bool more = j->kind == JOB_AUDIT || j->count >= j->limit; /* audit: last says */
        json_t *o = json_pack("{s:O, s:i}", list_name, j->items, "count", (int)j->count);
        if (o) {
            json_object_set_new(o, "next_after", more && j->last[0] ? json_string(j->last)
                                                                    : json_null());
            j->text = json_dumps(o, JSON_COMPACT);
            json_decref(o);
        }
        if (!j->text)
            job_fail(j, 503, "out of memory", "");
    } else if (!j->status) {
        job_fail(j, 503, "storage failure", mdm_strerror(ret));
    }
    json_decref(j->items);
    j->items = NULL;
    j->msg.fn = on_job_result;
    mdm_shard_post(j->shard, &j->msg);
}

static void start_job(mdm_exchange_t *x, struct job *j)
{
    j->x = x;
    j->shard = mdm_exchange_shard(x);
    int ret = mdm_store_run_async(api.store, run_job, j);
    if (ret != 0) {
        free(j);
        mdm_api_respond_error(x, 503, "unavailable", "storage is shutting down");
    }
}

bool mdm_api_paging(mdm_exchange_t *x, const char *query, unsigned *limit, char *after,
                    size_t after_size, bool (*after_valid)(const char *s),
                    const char *after_what)
{
    char v[256];
    *limit = MDM_API_LIST_LIMIT_DEFAULT;
    after[0] = '\0';
    if (mdm_api_query_param(query, "limit", v, sizeof(v))) {
        uint64_t n;
        if (!mdm_api_parse_u64(v, &n) || n < 1 || n > MDM_API_LIST_LIMIT_MAX) {
            mdm_api_respond_error(x, 400, "invalid parameter", "limit: expected 1 to 1000");
            return false;
        }
        *limit = (unsigned)n;
    }
    if (mdm_api_query_param(query, "after", v, sizeof(v)) && v[0]) {
        if (strlen(v) >= after_size || !after_valid(v)) {
            char d[160];
            snprintf(d, sizeof(d), "after: expected %s", after_what);
            mdm_api_respond_error(x, 400, "invalid parameter", d);
            return false;
        }
        memcpy(after, v, strlen(v) + 1);
    }
    return true;
}

static bool valid_after(const char *s) { return mdm_api_id_valid(s, strlen(s)); }

/* Paging of the lists in this file: the cursor is a UDID, a command UUID or an audit id. */
static bool paging(mdm_exchange_t *x, const char *query, struct job *j)
{
    return mdm_api_paging(x, query, &j->limit, j->after, sizeof(j->after), valid_after,
                          "a UDID, UUID or id");
}

static void handle_list(mdm_exchange_t *x, enum job_kind kind, const char *udid)
{
    const char *query = mdm_exchange_request(x)->query;
    struct job *j = calloc(1, sizeof(*j));
    if (!j) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return;
    }
    j->kind = kind;
    j->enrolled = -1;
    if (udid)
        snprintf(j->udid, sizeof(j->udid), "%s", udid);
    if (!paging(x, query, j)) {
        free(j);
        return;
    }
    char v[64];
    const char *bad = NULL;
    if (kind == JOB_DEVICES) {
        if (mdm_api_query_param(query, "udid", v, sizeof(v))) {
            if (!mdm_api_id_valid(v, strlen(v)))
                bad = "udid: expected a UDID";
            snprintf(j->udid, sizeof(j->udid), "%s", v);
        }
        if (mdm_api_query_param(query, "serial", v, sizeof(v)))
            snprintf(j->serial, sizeof(j->serial), "%s", v);
        if (mdm_api_query_param(query, "enrolled", v, sizeof(v))) {
            if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
                j->enrolled = 1;
            else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
                j->enrolled = 0;
            else
                bad = "enrolled: expected true or false";
        }
        if (mdm_api_query_param(query, "seen_since", v, sizeof(v)) &&
            !mdm_api_parse_u64(v, &j->since_ms))
            bad = "seen_since: expected milliseconds since the epoch";
    }
    if (bad) {
        free(j);
        mdm_api_respond_error(x, 400, "invalid parameter", bad);
        return;
    }
    start_job(x, j);
}

/* JSON lines when format=jsonl, or without format when Accept names application/x-ndjson. */
static const char *audit_format(mdm_exchange_t *x, const char *query, bool *jsonl)
{
    char v[16];
    if (mdm_api_query_param(query, "format", v, sizeof(v))) {
        *jsonl = strcmp(v, "jsonl") == 0;
        return *jsonl || strcmp(v, "json") == 0 ? NULL : "format: expected json or jsonl";
    }
    const char *accept = mdm_http_request_header(mdm_exchange_request(x), "Accept");
    *jsonl = accept && strcasestr(accept, "application/x-ndjson");
    return NULL;
}

/* limit (its range depends on the format) and after. */
static const char *audit_paging(const char *query, struct job *j)
{
    char v[256];
    uint64_t max = j->audit.jsonl ? AUDIT_EXPORT_LIMIT_MAX : MDM_API_LIST_LIMIT_MAX, n;
    j->limit = j->audit.jsonl ? AUDIT_EXPORT_LIMIT_DEFAULT : MDM_API_LIST_LIMIT_DEFAULT;
    if (mdm_api_query_param(query, "limit", v, sizeof(v))) {
        if (!mdm_api_parse_u64(v, &n) || n < 1 || n > max)
            return j->audit.jsonl ? "limit: expected 1 to 100000" : "limit: expected 1 to 1000";
        j->limit = (unsigned)n;
    }
    if (mdm_api_query_param(query, "after", v, sizeof(v)) && v[0]) {
        if (strlen(v) != MDM_AUDIT_ID_LEN) /* the hex digits are checked by storage */
            return "after: expected an event id";
        memcpy(j->after, v, MDM_AUDIT_ID_LEN + 1); /* checked: exactly that long */
    }
    return NULL;
}

/* A filter into out ("" when absent). False when given but too long for out or malformed. */
static bool audit_param(const char *query, const char *name, char *out, size_t outlen)
{
    const char *raw;
    size_t rawlen;
    out[0] = '\0';
    if (!query || !mdm_http_param_find(query, strlen(query), name, &raw, &rawlen))
        return true;
    return mdm_api_query_param(query, name, out, outlen);
}

/* status=NNN (exact) or status=error (400 and above). */
static bool audit_status(const char *query, int *status)
{
    char v[16];
    uint64_t n;
    *status = 0;
    if (!mdm_api_query_param(query, "status", v, sizeof(v)))
        return true;
    if (strcmp(v, "error") == 0)
        *status = MDM_AUDIT_STATUS_ERROR;
    else if (mdm_api_parse_u64(v, &n) && n >= 100 && n <= 599)
        *status = (int)n;
    return *status != 0;
}

/* The query of GET /api/v1/audit; returns what is wrong with it, or NULL. */
static const char *audit_query(mdm_exchange_t *x, const char *query, struct job *j)
{
    char v[32];
    const char *bad = audit_format(x, query, &j->audit.jsonl);
    if (!bad)
        bad = audit_paging(query, j);
    if (bad)
        return bad;
    if (mdm_api_query_param(query, "since", v, sizeof(v)) &&
        !mdm_api_parse_u64(v, &j->since_ms))
        return "since: expected milliseconds since the epoch";
    if (!audit_param(query, "action", j->audit.action, sizeof(j->audit.action)))
        return "action: too long or malformed";
    if (!audit_param(query, "target", j->audit.target, sizeof(j->audit.target)))
        return "target: too long or malformed";
    if (!audit_param(query, "who", j->audit.who, sizeof(j->audit.who)))
        return "who: too long or malformed";
    if (!audit_status(query, &j->audit.status))
        return "status: expected an HTTP status (100..599) or error";
    return NULL;
}

static void handle_audit(mdm_exchange_t *x)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return;
    }
    j->kind = JOB_AUDIT;
    mdm_buf_init(&j->audit.body, 0);
    const char *bad = audit_query(x, mdm_exchange_request(x)->query, j);
    if (bad) {
        free(j);
        mdm_api_respond_error(x, 400, "invalid parameter", bad);
        return;
    }
    start_job(x, j);
}

/* ------------------------------------------------------------------------------------------
 * Push certificate: parsing, checks and sealing run on a storage worker (RSA and the PKCS#12
 * KDF are too slow for a shard); the records and the audit event go into the shard's batch.
 */

struct pushjob {
    struct mdm_api_call c; /* first */
    mdm_shard_msg_t msg;
    bool is_put, force;
    char *cert_pem, *key_pem, *password;
    mdm_buf_t p12;
    /* result, built on the worker */
    int status;
    json_t *body;
    char detail[300];
    mdm_pushcert_t pc;
    mdm_buf_t sealed;
};

static void pushjob_free(struct mdm_api_call *c)
{
    struct pushjob *j = (struct pushjob *)c;
    free(j->cert_pem);
    free(j->key_pem);
    if (j->password) {
        memset(j->password, 0, strlen(j->password));
        free(j->password);
    }
    mdm_buf_dispose(&j->p12);
    mdm_buf_dispose(&j->sealed);
    mdm_pushcert_dispose(&j->pc);
    json_decref(j->body);
    free(j);
}

static json_t *pushcert_json(const mdm_pushcert_t *pc, int64_t now)
{
    int64_t days = mdm_pushcert_days_left(pc, now);
    json_t *o = json_object();
    if (!o)
        return NULL;
    mdm_api_set_str(o, "topic", pc->topic);
    mdm_api_set_str(o, "subject", pc->info.subject);
    mdm_api_set_str(o, "issuer", pc->info.issuer);
    mdm_api_set_str(o, "serial", pc->info.serial_hex);
    mdm_api_set_str(o, "fingerprint_sha256", pc->info.fingerprint);
    json_object_set_new(o, "not_before", json_integer(pc->info.not_before));
    json_object_set_new(o, "not_after", json_integer(pc->info.not_after));
    json_object_set_new(o, "days_left", json_integer(days));
    if (days < 0)
        mdm_api_set_str(o, "warning",
                        "the push certificate has expired: Macs can no longer be woken; renew "
                        "it and upload the new one");
    else if (days < MDM_PUSHCERT_WARN_DAYS) {
        char w[200];
        snprintf(w, sizeof(w), "the push certificate expires in %lld day(s): renew it with the "
                               "same Apple ID and upload the new one",
                 (long long)days);
        mdm_api_set_str(o, "warning", w);
    }
    return o;
}

static void pushjob_set_error(struct pushjob *j, int status, const char *error,
                              const char *detail)
{
    j->status = status;
    j->body = mdm_api_error_json(error, detail);
    snprintf(j->detail, sizeof(j->detail), "%.40s: %.250s", error, detail);
}

/* After a new push certificate is durable, the pushers reload it. */
struct cert_notice {
    mdm_commit_waiter_t w;
};

static void on_cert_durable(mdm_commit_waiter_t *w, int status)
{
    if (status == 0) {
        atomic_store(&have_pushcert, true);
        mdm_apns_cert_changed();
    }
    free(MDM_CONTAINER_OF(w, struct cert_notice, w));
}

static void on_pushjob_result(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct pushjob *j = MDM_CONTAINER_OF(m, struct pushjob, msg);
    json_t *body = j->body;
    j->body = NULL;
    if (!j->is_put) {
        mdm_api_respond_json(j->c.x, j->status, body, NULL, 0);
        pushjob_free(&j->c);
        return;
    }
    if (j->status == 200) {
        mdm_store_put_pushcert(mdm_actors_shard_batch(j->c.shard), j->pc.cert_der,
                               j->pc.cert_len, mdm_wall_ms(), mdm_buf_head(&j->sealed),
                               j->sealed.len);
        int64_t days = mdm_pushcert_days_left(&j->pc, (int64_t)(mdm_wall_ms() / 1000));
        if (days < MDM_PUSHCERT_WARN_DAYS)
            mdm_warn("api", "push certificate %s expires in %lld day(s)", j->pc.topic,
                     (long long)days);
        mdm_info("api", "push certificate uploaded: topic %s, %lld day(s) left", j->pc.topic,
                 (long long)days);
        struct cert_notice *n = calloc(1, sizeof(*n));
        if (n) {
            n->w.fn = on_cert_durable;
            mdm_actors_after_commit(j->c.shard, &n->w);
        } else {
            mdm_error("api", "out of memory: the pushers keep the previous certificate until "
                             "a restart");
        }
    }
    mdm_api_call_finish(&j->c, j->status, body, j->detail);
}

static void run_pushjob(mdm_store_t *s, void *arg)
{
    struct pushjob *j = arg;
    int64_t now = (int64_t)(mdm_wall_ms() / 1000);
    mdm_pushcert_t cur;
    int ret = mdm_pushcert_load(s, NULL, &cur, NULL);
    if (!j->is_put) {
        if (ret == 0) {
            j->status = 200;
            j->body = pushcert_json(&cur, now);
            if (!j->body)
                pushjob_set_error(j, 503, "out of memory", "");
            else if (mdm_pushcert_days_left(&cur, now) < MDM_PUSHCERT_WARN_DAYS)
                mdm_warn("api", "push certificate %s expires in %lld day(s)", cur.topic,
                         (long long)mdm_pushcert_days_left(&cur, now));
        } else if (ret == MDM_ENOTFOUND) {
            pushjob_set_error(j, 404, "not found",
                              "no push certificate uploaded yet (PUT /api/v1/push-certificate)");
        } else {
            pushjob_set_error(j, 503, "storage failure", mdm_strerror(ret));
        }
        goto out;
    }
    if (ret != 0 && ret != MDM_ENOTFOUND) {
        pushjob_set_error(j, 503, "storage failure", mdm_strerror(ret));
        goto out;
    }
    char err[400] = "";
    int pr = j->cert_pem
                 ? mdm_pushcert_parse_pem(j->cert_pem, strlen(j->cert_pem), j->key_pem,
                                          strlen(j->key_pem), now, &j->pc, err, sizeof(err))
                 : mdm_pushcert_parse_pkcs12(mdm_buf_head(&j->p12), j->p12.len, j->password, now,
                                             &j->pc, err, sizeof(err));
    if (pr == -ENOMEM) {
        pushjob_set_error(j, 503, "out of memory", "");
    } else if (pr == -EINVAL) {
        pushjob_set_error(j, 400, "invalid body", err);
    } else if (pr != 0) {
        pushjob_set_error(j, 422, "invalid push certificate", err);
    } else if (ret == 0 && strcmp(cur.topic, j->pc.topic) != 0 && !j->force) {
        char d[600];
        snprintf(d, sizeof(d),
                 "the new certificate's topic %.100s differs from the current %.100s: every "
                 "enrolled Mac is bound to the current topic and would have to re-enroll. Renew "
                 "the existing certificate instead, or add ?force=1 to replace it anyway",
                 j->pc.topic, cur.topic);
        pushjob_set_error(j, 409, "topic mismatch", d);
    } else if (mdm_seal(api.seal_key, MDM_PUSHCERT_SEAL_AAD, strlen(MDM_PUSHCERT_SEAL_AAD),
                        j->pc.key_der, j->pc.key_len, &j->sealed) != 0) {
        pushjob_set_error(j, 503, "internal error", "cannot seal the private key");
    } else {
        j->status = 200;
        j->body = pushcert_json(&j->pc, now);
        if (!j->body) {
            pushjob_set_error(j, 503, "out of memory", "");
        } else {
            if (ret == 0 && strcmp(cur.topic, j->pc.topic) != 0)
                json_object_set_new(j->body, "replaced_topic", json_string(cur.topic));
            snprintf(j->detail, sizeof(j->detail), "topic %.100s, not_after %lld%s%.100s",
                     j->pc.topic, (long long)j->pc.info.not_after,
                     ret == 0 && strcmp(cur.topic, j->pc.topic) != 0 ? ", forced over " : "",
                     ret == 0 && strcmp(cur.topic, j->pc.topic) != 0 ? cur.topic : "");
        }
    }
out:
    mdm_pushcert_dispose(&cur);
    j->msg.fn = on_pushjob_result;
    mdm_shard_post(j->c.shard, &j->msg);
}

/* Copies a JSON string member into a malloc'ed C string; NULL when absent. */
static bool dup_member(json_t *o, const char *key, char **out, bool *bad)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v)
        return false;
    if (!json_is_string(v)) {
        *bad = true;
        return false;
    }
    *out = strdup(json_string_value(v));
    if (!*out)
        *bad = true;
    return *out != NULL;
}

static void handle_pushcert(mdm_exchange_t *x, bool is_put)
{
    const mdm_http_request_t *r = mdm_exchange_request(x);
    struct pushjob *j = (struct pushjob *)mdm_api_call_new(x, sizeof(*j), "push_certificate.upload",
                                                           "push-certificate");
    if (!j) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return;
    }
    j->c.free_fn = pushjob_free;
    j->is_put = is_put;
    mdm_buf_init(&j->p12, 0);
    mdm_buf_init(&j->sealed, 0);
    if (is_put) {
        char v[8];
        j->force = mdm_api_query_param(r->query, "force", v, sizeof(v)) &&
                   (strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
        const char *why = NULL;
        json_error_t je;
        json_t *body = r->body.len ? json_loadb((const char *)mdm_buf_head(&r->body),
                                                 r->body.len, 0, &je)
                                    : NULL;
        bool bad = false;
        char *b64 = NULL;
        if (!json_is_object(body)) {
            why = "expected a JSON object: {\"certificate_pem\", \"key_pem\"} or "
                  "{\"pkcs12_base64\", \"password\"}";
        } else {
            bool pem = dup_member(body, "certificate_pem", &j->cert_pem, &bad);
            bool key = dup_member(body, "key_pem", &j->key_pem, &bad);
            bool p12 = dup_member(body, "pkcs12_base64", &b64, &bad);
            dup_member(body, "password", &j->password, &bad);
            if (bad)
                why = "certificate_pem, key_pem, pkcs12_base64 and password must be strings";
            else if (p12 == (pem || key))
                why = "give either certificate_pem and key_pem, or pkcs12_base64 (and password)";
            else if (pem != key)
                why = "certificate_pem and key_pem go together";
            else if (p12 && mdm_base64_decode(b64, strlen(b64), &j->p12) != 0)
                why = "pkcs12_base64: not base64";
        }
        free(b64);
        json_decref(body);
        if (why) {
            mdm_api_call_fail(&j->c, 400, "invalid body", why);
            return;
        }
    }
    if (mdm_store_run_async(api.store, run_pushjob, j) != 0) {
        if (is_put) {
            mdm_api_call_fail(&j->c, 503, "unavailable", "storage is shutting down");
        } else {
            mdm_api_respond_error(x, 503, "unavailable", "storage is shutting down");
            pushjob_free(&j->c);
        }
    }
}

/* Start-up: a look at the stored push certificate, sealed under the instance secrets key. */
static void pushcert_setup(const uint8_t seal_key[32])
{
    memcpy(api.seal_key, seal_key, sizeof(api.seal_key));
    mdm_pushcert_t pc;
    int ret = mdm_pushcert_load(api.store, api.seal_key, &pc, NULL);
    if (ret == 0) {
        atomic_store(&have_pushcert, true);
        int64_t days = mdm_pushcert_days_left(&pc, (int64_t)(mdm_wall_ms() / 1000));
        if (days < MDM_PUSHCERT_WARN_DAYS)
            mdm_warn("api", "push certificate %s expires in %lld day(s): renew it", pc.topic,
                     (long long)days);
        else
            mdm_info("api", "push certificate %s: %lld day(s) left", pc.topic, (long long)days);
    } else if (ret == MDM_ENOTFOUND) {
        mdm_warn("api", "no push certificate: Macs cannot be woken until one is uploaded "
                        "(PUT /api/v1/push-certificate, see docs/apns.md)");
    } else {
        mdm_error("api", "the stored push certificate cannot be read: %s", mdm_strerror(ret));
    }
    mdm_pushcert_dispose(&pc);
}

/* ------------------------------------------------------------------------------------------
 * Dispatch
 */

void mdm_api_method_not_allowed(mdm_exchange_t *x, const char *allow)
{
    mdm_http_header_t h = {"Allow", 5, allow, strlen(allow)};
    char detail[96];
    snprintf(detail, sizeof(detail), "this resource takes %s", allow);
    mdm_api_respond_json(x, 405, mdm_api_error_json("method not allowed", detail), &h, 1);
}

static void handle_api(mdm_exchange_t *x, void *ctx)
{
    (void)ctx;
    const mdm_http_request_t *r = mdm_exchange_request(x);
    if (!authorized(r)) {
        mdm_http_header_t h = {"WWW-Authenticate", 16, "Bearer realm=\"mdmd\"", 19};
        json_t *body = mdm_api_error_json(
            "unauthorized", "send Authorization: Bearer <admin API key> (see mdmd init)");
        mdm_api_respond_json(x, 401, body, &h, 1);
        return;
    }
    /* Split the path after the prefix into segments. */
    const char *rest = r->path;
    if (strncmp(rest, API_PREFIX, strlen(API_PREFIX)) == 0)
        rest += strlen(API_PREFIX);
    else
        rest = "";
    if (mdm_api_enroll_owns(rest)) {
        /* users, invitations, enrollments: names with '@' and percent-escapes (api_enroll.c) */
        mdm_api_enroll_handle(x, rest);
        return;
    }
    if (mdm_api_actions_owns(rest)) {
        mdm_api_actions_handle(x, rest);
        return;
    }
    if (mdm_api_policy_owns(rest)) {
        mdm_api_policy_handle(x, rest);
        return;
    }
    char segs[SEGMENTS_MAX][MDM_UDID_MAX + 1];
    size_t n = 0;
    while (*rest) {
        size_t len = strcspn(rest, "/");
        if (len > 0) {
            if (n == SEGMENTS_MAX || !mdm_api_id_valid(rest, len)) {
                mdm_api_respond_error(x, 404, "not found", "no such resource");
                return;
            }
            memcpy(segs[n], rest, len);
            segs[n][len] = '\0';
            n++;
        }
        rest += len;
        if (*rest == '/')
            rest++;
    }
    enum mdm_http_method m = r->method;
    bool is_get = m == MDM_HTTP_GET;
    if (n == 1 && strcmp(segs[0], "devices") == 0) {
        if (is_get)
            handle_list(x, JOB_DEVICES, NULL);
        else
            mdm_api_method_not_allowed(x, "GET");
    } else if (n == 2 && strcmp(segs[0], "devices") == 0) {
        if (is_get)
            handle_get_device(x, segs[1]);
        else if (m == MDM_HTTP_DELETE)
            handle_device_change(x, MDM_DEV_DELETE, segs[1], NULL);
        else
            mdm_api_method_not_allowed(x, "GET, DELETE");
    } else if (n == 3 && strcmp(segs[0], "devices") == 0 && strcmp(segs[2], "commands") == 0) {
        if (is_get)
            handle_list(x, JOB_HISTORY, segs[1]);
        else if (m == MDM_HTTP_POST)
            handle_enqueue(x, segs[1]);
        else
            mdm_api_method_not_allowed(x, "GET, POST");
    } else if (n == 3 && strcmp(segs[0], "devices") == 0 && strcmp(segs[2], "push") == 0) {
        if (m == MDM_HTTP_POST)
            handle_device_change(x, MDM_DEV_PUSH, segs[1], NULL);
        else
            mdm_api_method_not_allowed(x, "POST");
    } else if (n == 4 && strcmp(segs[0], "devices") == 0 && strcmp(segs[2], "commands") == 0) {
        if (m == MDM_HTTP_DELETE)
            handle_device_change(x, MDM_DEV_CANCEL, segs[1], segs[3]);
        else
            mdm_api_method_not_allowed(x, "DELETE");
    } else if (n == 1 && strcmp(segs[0], "commands") == 0) {
        if (m == MDM_HTTP_POST)
            handle_enqueue(x, NULL);
        else
            mdm_api_method_not_allowed(x, "POST");
    } else if (n == 1 && strcmp(segs[0], "push") == 0) {
        if (m == MDM_HTTP_POST)
            handle_bulk_push(x);
        else
            mdm_api_method_not_allowed(x, "POST");
    } else if (n == 1 && strcmp(segs[0], "push-certificate") == 0) {
        if (is_get || m == MDM_HTTP_PUT)
            handle_pushcert(x, !is_get);
        else
            mdm_api_method_not_allowed(x, "GET, PUT");
    } else if (n == 1 && strcmp(segs[0], "audit") == 0) {
        if (is_get)
            handle_audit(x);
        else
            mdm_api_method_not_allowed(x, "GET");
    } else {
        mdm_api_respond_error(x, 404, "not found", "no such resource");
    }
}

int mdm_api_add_routes(mdm_http_router_t *router, mdm_actors_t *rt, const char *dir,
                       const uint8_t seal_key[32])
{
    api.rt = rt;
    api.store = mdm_actors_store(rt);
    int ret = mdm_instance_read_admin_key_hash(dir, api.key_hash);
    api.have_key = ret == 0;
    if (ret != 0)
        mdm_error("api", "cannot read %s/admin-api-key.sha256 (%s): the admin API refuses "
                         "every request until it is there (mdmd init creates it)",
                  dir, mdm_strerror(ret));
    snprintf(api.who, sizeof(api.who), "admin-key:%.8s", api.have_key ? api.key_hash : "none");
    pushcert_setup(seal_key);
    return mdm_http_router_add(router, MDM_HTTP_ANY, API_PREFIX "*", (void *)handle_api, NULL,
                               MDM_API_BODY_MAX);
}
