/*
 * Admin API v1, device policies (docs/api.md, docs/policies.md). Dispatched by api.c after the
 * API key was checked:
 *
 *   GET    policy-types                    the 22 kinds and what they deliver
 *   GET    policies                        list, paged by id
 *   POST   policies                        create {type, name, settings}        policy.create
 *   GET    policies/{id}                   one; secret settings never shown
 *   PUT    policies/{id}                   {name?, settings?}: version + 1      policy.update
 *   DELETE policies/{id}                   also leaves every group             policy.delete
 *   GET    policies/{id}/profile?device=   what that Mac gets (?signed=1: as sent)
 *   GET    policies/{id}/deployments       per-device status, paged by UDID
 *   GET    groups, groups/{id}             delivery groups
 *   POST   groups                          create                              group.create
 *   PUT    groups/{id}                     replace                             group.update
 *   DELETE groups/{id}                                                         group.delete
 *   GET    devices/{udid}/policies         the Mac's deployments with status
 *   GET    devices/{udid}/apps             the Mac's application inventory
 *   GET    apps?bundle_id=&version_below=  which Macs have an app (below a version)
 *   POST   reconcile {"profile_list":bool} reconcile every Mac now (what the periodic sweep
 *                                          does with profile_list: drift check)  policy.reconcile
 *
 * Mutations: checked on the shard (settings against the policy type's schema: 422 naming the
 * key), then a storage job reads what the change builds on (the current record, the groups a
 * deleted policy leaves, the policies a group names); back on the shard the records go into
 * the shard's batch with the audit event, and once durable every Mac is reconciled
 * (actors/policy.h). One change per record at a time (mdm_api_claim).
 *
 * Secrets: settings a policy type marks secret are sealed (actors/policy.h) before they reach
 * a record; answers list their paths under "sealed_settings", never their values. An update
 * that leaves out a secret keeps the stored one.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "actors/api_internal.h"
#include "actors/policy.h"
#include "core/log.h"
#include "core/plist.h"
#include "storage/policy.h"

#define SEG_MAX 63
#define GROUP_LIST_MAX 10000 /* entries of each target list of a group */

/* ------------------------------------------------------------------------------------------
 * JSON views
 */

static json_t *policy_json(const mdm_policy_t *p)
{
    json_t *o = json_object();
    json_t *settings = json_loads(p->settings_json ? p->settings_json : "{}", 0, NULL);
    json_t *secrets = NULL;
    json_t *sealed = json_array();
    const mdm_policy_type_t *t = mdm_policy_type_find(p->type);
    if (t && mdm_policy_open_secrets(p, &secrets) == 0 && secrets) {
        json_t *full = mdm_policy_merge_secrets(settings, secrets);
        json_t *paths = full ? mdm_policy_secret_paths(t, full) : NULL;
        if (paths)
            json_array_extend(sealed, paths);
        json_decref(paths);
        json_decref(full);
    }
    json_decref(secrets);
    mdm_api_set_str(o, "id", p->id);
    mdm_api_set_str(o, "type", p->type);
    mdm_api_set_str(o, "name", p->name);
    mdm_api_set_int(o, "version", p->version);
    mdm_api_set_str(o, "profile_identifier", p->profile_identifier);
    json_object_set_new(o, "delivers",
                        json_string(t && mdm_policy_type_is_profile(t) ? "profile" : "commands"));
    json_object_set_new(o, "settings", settings ? settings : json_object());
    json_object_set_new(o, "sealed_settings", sealed);
    mdm_api_set_int(o, "created_ms", p->created_ms);
    mdm_api_set_int(o, "updated_ms", p->updated_ms);
    mdm_api_set_str(o, "created_by", p->created_by);
    return o;
}

static json_t *group_json(const mdm_group_t *g)
{
    json_t *o = json_loads(g->spec_json ? g->spec_json : "{}", 0, NULL);
    if (!o)
        o = json_object();
    mdm_api_set_str(o, "id", g->id);
    mdm_api_set_str(o, "name", g->name);
    mdm_api_set_int(o, "version", g->version);
    mdm_api_set_int(o, "created_ms", g->created_ms);
    mdm_api_set_int(o, "updated_ms", g->updated_ms);
    return o;
}

static json_t *deployment_json(mdm_store_t *s, const mdm_deployment_t *d)
{
    mdm_result_t r;
    int ret = d->command_uuid[0] ? mdm_store_get_result(s, d->udid, d->command_uuid, &r)
                                 : MDM_ENOTFOUND;
    char err[1024];
    enum mdm_deploy_status st = mdm_policy_deploy_status(d, ret == 0 ? &r : NULL, err,
                                                         sizeof(err));
    json_t *o = json_object();
    mdm_api_set_str(o, "udid", d->udid);
    mdm_api_set_str(o, "policy_id", d->policy_id);
    mdm_api_set_int(o, "policy_version", d->policy_version);
    json_object_set_new(o, "status", json_string(mdm_deploy_status_name(st)));
    json_object_set_new(o, "action", json_string(mdm_deploy_action_name(d->action)));
    mdm_api_set_str(o, "command_uuid", d->command_uuid);
    mdm_api_set_str(o, "profile_identifier", d->profile_identifier);
    mdm_api_set_int(o, "sent_ms", d->sent_ms);
    if (ret == 0 && r.n_events)
        mdm_api_set_int(o, "updated_ms", r.events[r.n_events - 1].at_ms);
    if (err[0])
        mdm_api_set_str(o, "error", err);
    mdm_result_dispose(&r);
    return o;
}

static json_t *app_json(const mdm_app_t *a)
{
    json_t *o = json_object();
    mdm_api_set_str(o, "udid", a->udid);
    mdm_api_set_str(o, "bundle_id", a->bundle_id);
    mdm_api_set_str(o, "name", a->name);
    mdm_api_set_str(o, "short_version", a->short_version);
    mdm_api_set_str(o, "version", a->version);
    mdm_api_set_int(o, "bundle_size", a->bundle_size);
    mdm_api_set_int(o, "reported_ms", a->reported_ms);
    return o;
}

/* Compares dotted versions numerically ("10.2" > "9.11"); non-digits compare as text. */
static int version_cmp(const char *a, const char *b)
{
    while (*a || *b) {
        char *ea, *eb;
        unsigned long long x = strtoull(a, &ea, 10), y = strtoull(b, &eb, 10);
        if (ea == a || eb == b)
            return strcmp(a, b);
        if (x != y)
            return x < y ? -1 : 1;
        a = *ea == '.' ? ea + 1 : ea;
        b = *eb == '.' ? eb + 1 : eb;
        if ((*ea && *ea != '.') || (*eb && *eb != '.'))
            return strcmp(a, b);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Reads: one job per request, answered with one JSON document
 */

enum rkind { R_POLICIES, R_POLICY, R_PREVIEW, R_POLICY_DEPLOY, R_DEVICE_DEPLOY, R_GROUPS,
             R_GROUP, R_DEVICE_APPS, R_APPS };

struct rjob {
    mdm_shard_msg_t msg;
    mdm_exchange_t *x;
    mdm_shard_t *shard;
    enum rkind kind;
    char id[SEG_MAX + 1];          /* policy / group id, or UDID */
    char device[MDM_UDID_MAX + 1]; /* preview: the Mac */
    bool sign;                     /* preview: signed as sent */
    char bundle_id[MDM_BUNDLE_ID_MAX + 1];
    char version_below[64];
    char after[MDM_UDID_MAX + 1];
    unsigned limit, count;
    char last[MDM_BUNDLE_ID_MAX + 1]; /* a UDID, policy or group id, or a bundle id */
    mdm_store_t *store;
    json_t *items;
    /* answer */
    int status;
    char error[48], detail[300];
    char *body;
    size_t body_len;
    const char *content_type;
};

static int rjob_fail(struct rjob *j, int status, const char *error, const char *detail)
{
    j->status = status;
    snprintf(j->error, sizeof(j->error), "%s", error);
    snprintf(j->detail, sizeof(j->detail), "%s", detail);
    return -1;
}

static int add_item(struct rjob *j, json_t *o, const char *last)
{
    if (!o || json_array_append_new(j->items, o) != 0)
        return -ENOMEM;
    snprintf(j->last, sizeof(j->last), "%s", last);
    return ++j->count >= j->limit ? 1 : 0;
}

static int on_policy(void *arg, const mdm_policy_t *p)
{
    return add_item(arg, policy_json(p), p->id);
}

static int on_group(void *arg, const mdm_group_t *g)
{
    return add_item(arg, group_json(g), g->id);
}

static int on_deployment(void *arg, const mdm_deployment_t *d)
{
    struct rjob *j = arg;
    return add_item(j, deployment_json(j->store, d), j->kind == R_POLICY_DEPLOY ? d->udid
                                                                                : d->policy_id);
}

static int on_app(void *arg, const mdm_app_t *a)
{
    struct rjob *j = arg;
    if (j->version_below[0] &&
        version_cmp(a->short_version[0] ? a->short_version : a->version, j->version_below) >= 0)
        return 0;
    return add_item(j, app_json(a), j->kind == R_APPS ? a->udid : a->bundle_id);
}

static void on_rjob_done(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct rjob *j = MDM_CONTAINER_OF(m, struct rjob, msg);
    if (j->body)
        mdm_exchange_respond(j->x, 200, NULL, 0, j->content_type, j->body, j->body_len);
    else
        mdm_api_respond_error(j->x, j->status ? j->status : 500,
                              j->error[0] ? j->error : "internal error", j->detail);
    free(j->body);
    free(j);
}

static void set_json_body(struct rjob *j, json_t *o)
{
    j->body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!j->body) {
        rjob_fail(j, 503, "out of memory", "");
        return;
    }
    j->body_len = strlen(j->body);
    j->content_type = "application/json";
}

/* Collects the secret strings (leaves of a secrets object) into out. */
static void secret_leaves(const json_t *secrets, json_t *out)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)secrets, k, v) {
        if (json_is_string(v) && json_string_length(v) > 0)
            json_array_append(out, v);
        else if (json_is_object(v))
            secret_leaves(v, out);
    }
}

/* Replaces every <string>secret</string> of xml (XML-escaped as libplist writes it) by
 * <string>********</string>: a preview never shows a sealed setting. */
static int scrub_xml(mdm_buf_t *xml, const json_t *leaves)
{
    size_t i;
    json_t *v;
    json_array_foreach(leaves, i, v) {
        plist_t str = plist_new_string(json_string_value(v));
        mdm_buf_t one;
        mdm_buf_init(&one, 0);
        int ret = str ? mdm_plist_to_xml(str, &one) : -ENOMEM;
        plist_free(str);
        const char *so = ret == 0 ? memmem(mdm_buf_head(&one), one.len, "<string>", 8) : NULL;
        const char *se = so ? memmem(so, one.len - (size_t)(so - (const char *)mdm_buf_head(&one)),
                                     "</string>", 9) : NULL;
        if (se) {
            size_t nlen = (size_t)(se + 9 - so);
            char *needle = strndup(so, nlen);
            char *text = strndup((const char *)mdm_buf_head(xml), xml->len);
            mdm_buf_t out;
            mdm_buf_init(&out, 0);
            const char *p = text;
            for (const char *hit; ret == 0 && text && needle && (hit = strstr(p, needle));
                 p = hit + nlen) {
                ret = mdm_buf_append(&out, p, (size_t)(hit - p));
                if (ret == 0)
                    ret = mdm_buf_append(&out, "<string>********</string>", 25);
            }
            if (ret == 0 && text && needle)
                ret = mdm_buf_append(&out, p, strlen(p));
            if (ret == 0 && text && needle) {
                mdm_buf_reset(xml);
                ret = mdm_buf_append(xml, mdm_buf_head(&out), out.len);
            }
            mdm_buf_dispose(&out);
            free(needle);
            free(text);
        }
        mdm_buf_dispose(&one);
        if (ret != 0)
            return ret;
    }
    return 0;
}

/* The preview: the profile XML (or signed DER), or the commands as a plist array; secret
 * values shown as ********, and no signed profile of a policy with secrets (it would carry
 * them). */
static int run_preview(mdm_store_t *s, struct rjob *j)
{
    mdm_policy_t p;
    int ret = mdm_store_get_policy(s, j->id, &p);
    if (ret == MDM_ENOTFOUND)
        return rjob_fail(j, 404, "not found", "no such policy");
    if (ret != 0)
        return ret;
    json_t *secrets = NULL, *leaves = json_array();
    if (mdm_policy_open_secrets(&p, &secrets) != 0 || !leaves) {
        mdm_policy_dispose(&p);
        json_decref(leaves);
        return rjob_fail(j, 500, "internal error", "the policy's secrets cannot be opened");
    }
    if (secrets)
        secret_leaves(secrets, leaves);
    json_decref(secrets);
    if (j->sign && json_array_size(leaves)) {
        mdm_policy_dispose(&p);
        json_decref(leaves);
        return rjob_fail(j, 403, "forbidden",
                         "the policy has sealed settings: its signed profile goes to Macs only");
    }
    mdm_policy_output_t out;
    mdm_policy_output_init(&out);
    mdm_buf_t der, plist;
    mdm_buf_init(&der, 0);
    mdm_buf_init(&plist, 0);
    char err[256] = "";
    ret = mdm_policy_render(s, &p, j->device, j->sign, &out, &der, err, sizeof(err));
    mdm_policy_dispose(&p);
    const mdm_buf_t *src = &out.profile_xml;
    j->content_type = "application/xml";
    if (ret == MDM_ENOTFOUND || (ret == -EINVAL && !err[0])) {
        ret = rjob_fail(j, 404, "not found", "no such device");
    } else if (ret == -EINVAL) {
        ret = rjob_fail(j, 422, "cannot build", err);
    } else if (ret == 0 && j->sign && der.len) {
        src = &der;
        j->content_type = "application/x-apple-aspen-config";
    } else if (ret == 0 && !out.profile_xml.len) {
        plist_t arr = plist_new_array();
        for (unsigned i = 0; arr && ret == 0 && i < out.n_commands; i++)
            ret = mdm_plist_array_append_item(arr, plist_copy(out.commands[i]));
        if (ret == 0)
            ret = arr ? mdm_plist_to_xml(arr, &plist) : -ENOMEM;
        plist_free(arr);
        src = &plist;
    }
    if (ret == 0 && src != &der)
        ret = scrub_xml((mdm_buf_t *)src, leaves);
    if (ret == 0 && (j->body = malloc(src->len ? src->len : 1))) {
        memcpy(j->body, mdm_buf_head(src), src->len);
        j->body_len = src->len;
    } else if (ret == 0) {
        ret = -ENOMEM;
    }
    json_decref(leaves);
    mdm_buf_dispose(&plist);
    mdm_policy_output_dispose(&out);
    mdm_buf_dispose(&der);
    return ret;
}

static int run_one(mdm_store_t *s, struct rjob *j)
{
    if (j->kind == R_POLICY) {
        mdm_policy_t p;
        int ret = mdm_store_get_policy(s, j->id, &p);
        if (ret == 0)
            set_json_body(j, policy_json(&p));
        mdm_policy_dispose(&p);
        return ret == MDM_ENOTFOUND ? rjob_fail(j, 404, "not found", "no such policy") : ret;
    }
    mdm_group_t g;
    int ret = mdm_store_get_group(s, j->id, &g);
    if (ret == 0)
        set_json_body(j, group_json(&g));
    mdm_group_dispose(&g);
    return ret == MDM_ENOTFOUND ? rjob_fail(j, 404, "not found", "no such group") : ret;
}

static int run_list(mdm_store_t *s, struct rjob *j, const char **name)
{
    switch (j->kind) {
    case R_POLICIES:
        *name = "policies";
        return mdm_store_list_policies(s, j->after, on_policy, j);
    case R_GROUPS:
        *name = "groups";
        return mdm_store_list_groups(s, j->after, on_group, j);
    case R_POLICY_DEPLOY: {
        *name = "deployments";
        mdm_policy_t p;
        int ret = mdm_store_get_policy(s, j->id, &p);
        mdm_policy_dispose(&p);
        if (ret == MDM_ENOTFOUND)
            return rjob_fail(j, 404, "not found", "no such policy");
        return ret ? ret : mdm_store_list_policy_deployments(s, j->id, j->after, on_deployment, j);
    }
    case R_DEVICE_DEPLOY:
    case R_DEVICE_APPS: {
        *name = j->kind == R_DEVICE_APPS ? "apps" : "deployments";
        mdm_device_t d;
        int ret = mdm_store_get_device(s, j->id, &d);
        if (ret == MDM_ENOTFOUND)
            return rjob_fail(j, 404, "not found", "no such device");
        if (ret != 0)
            return ret;
        j->limit = UINT32_MAX; /* a device's own lists are short: one page */
        return j->kind == R_DEVICE_APPS ? mdm_store_list_device_apps(s, j->id, on_app, j)
                                        : mdm_store_list_device_deployments(s, j->id,
                                                                            on_deployment, j);
    }
    case R_APPS:
        *name = "devices";
        return mdm_store_list_app_devices(s, j->bundle_id, j->after, on_app, j);
    default:
        return -EINVAL;
    }
}

static void run_rjob(mdm_store_t *s, void *arg)
{
    struct rjob *j = arg;
    j->store = s;
    int ret;
    if (j->kind == R_PREVIEW) {
        ret = run_preview(s, j);
    } else if (j->kind == R_POLICY || j->kind == R_GROUP) {
        ret = run_one(s, j);
    } else {
        const char *name = "items";
        j->items = json_array();
        ret = j->items ? run_list(s, j, &name) : -ENOMEM;
        bool more = ret == 1;
        if (ret == 1)
            ret = 0;
        if (ret == 0) {
            json_t *o = json_pack("{s:O, s:i}", name, j->items, "count", (int)j->count);
            if (o)
                json_object_set_new(o, "next_after",
                                    more && j->last[0] ? json_string(j->last) : json_null());
            set_json_body(j, o);
        }
        json_decref(j->items);
    }
    if (ret != 0 && ret != -1 && !j->status)
        rjob_fail(j, 503, "storage failure", mdm_strerror(ret));
    j->msg.fn = on_rjob_done;
    mdm_shard_post(j->shard, &j->msg);
}

static bool after_any(const char *s) { return strlen(s) <= MDM_UDID_MAX && !strchr(s, '/'); }

static void start_read(mdm_exchange_t *x, enum rkind kind, const char *id, bool paged)
{
    const mdm_http_request_t *r = mdm_exchange_request(x);
    struct rjob *j = calloc(1, sizeof(*j));
    if (!j) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return;
    }
    j->x = x;
    j->shard = mdm_exchange_shard(x);
    j->kind = kind;
    snprintf(j->id, sizeof(j->id), "%s", id ? id : "");
    j->limit = MDM_API_LIST_LIMIT_DEFAULT;
    if (paged && !mdm_api_paging(x, r->query, &j->limit, j->after, sizeof(j->after), after_any,
                                 "a key of the previous page")) {
        free(j);
        return;
    }
    if (kind == R_PREVIEW) {
        char flag[8] = "";
        bool has_device = mdm_api_query_param(r->query, "device", j->device, sizeof(j->device));
        if ((!has_device && r->query && strstr(r->query, "device=")) ||
            (has_device && !j->device[0])) {
            free(j);
            mdm_api_respond_error(x, 422, "invalid parameter", "device: a UDID of 1 to 63 bytes");
            return;
        }
        j->sign = mdm_api_query_param(r->query, "signed", flag, sizeof(flag)) &&
                  (strcmp(flag, "1") == 0 || strcmp(flag, "true") == 0);
    }
    if (kind == R_APPS) {
        if (!mdm_api_query_param(r->query, "bundle_id", j->bundle_id, sizeof(j->bundle_id)) ||
            !mdm_bundle_id_valid(j->bundle_id)) {
            free(j);
            mdm_api_respond_error(x, 422, "invalid parameter",
                                  "bundle_id: the application's bundle identifier is required");
            return;
        }
        (void)mdm_api_query_param(r->query, "version_below", j->version_below,
                                  sizeof(j->version_below));
    }
    if (mdm_store_run_async(mdm_api_store(), run_rjob, j) != 0) {
        free(j);
        mdm_api_respond_error(x, 503, "unavailable", "storage is shutting down");
    }
}

static void handle_types(mdm_exchange_t *x)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < mdm_policy_type_count(); i++) {
        const mdm_policy_type_t *t = mdm_policy_type_at(i);
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:s}", "type", mdm_policy_type_name(t), "title",
                           mdm_policy_type_title(t), "delivers",
                           mdm_policy_type_is_profile(t) ? "profile" : "commands"));
    }
    mdm_api_respond_json(x, 200, json_pack("{s:o}", "policy_types", arr), NULL, 0);
}

/* ------------------------------------------------------------------------------------------
 * Mutations
 */

enum mkind { M_POLICY_CREATE, M_POLICY_UPDATE, M_POLICY_DELETE, M_GROUP_CREATE,
             M_GROUP_UPDATE, M_GROUP_DELETE };

struct mjob {
    struct mdm_api_call c; /* first */
    mdm_shard_msg_t msg;
    enum mkind kind;
    char claim[MDM_API_CLAIM_KEY_MAX];
    char id[MDM_POLICY_ID_LEN + 1];
    /* request (checked on the shard) */
    bool has_name;
    char name[MDM_POLICY_NAME_MAX + 1];
    char type[MDM_POLICY_TYPE_MAX + 1];
    json_t *settings;  /* policy: as sent (NULL: unchanged) */
    json_t *spec;      /* group: targets + policies */
    /* outcome, on the worker */
    struct mdm_api_outcome out;
    mdm_policy_t policy;      /* record to write (or the deleted one) */
    mdm_group_t group;
    mdm_group_t *touched;     /* policy delete: groups rewritten without it */
    size_t n_touched;
};

static void mjob_free(struct mdm_api_call *c)
{
    struct mjob *j = (struct mjob *)c;
    if (j->claim[0])
        mdm_api_unclaim(j->claim);
    json_decref(j->settings);
    json_decref(j->spec);
    mdm_policy_dispose(&j->policy);
    mdm_group_dispose(&j->group);
    for (size_t i = 0; i < j->n_touched; i++)
        mdm_group_dispose(&j->touched[i]);
    free(j->touched);
    free(j);
}

#define mjob_fail(j, ...) mdm_api_outcome_set(&(j)->out, __VA_ARGS__)

/* Puts back into settings every secret of old_secrets whose key the update left out. */
static void carry_secrets(json_t *settings, const json_t *old)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)old, k, v) {
        json_t *here = NULL;
        if (json_is_object(settings))
            here = json_object_get(settings, k);
        else if (json_is_array(settings))
            here = json_array_get(settings, strtoul(k, NULL, 10));
        if (json_is_string(v)) {
            if (!here && json_is_object(settings))
                json_object_set(settings, k, v);
        } else if (here) {
            carry_secrets(here, v);
        }
    }
}

/* Splits j->settings into public settings and sealed secrets on j->policy. */
static int seal_settings(struct mjob *j, const mdm_policy_type_t *t)
{
    json_t *pub = NULL, *secrets = NULL;
    int ret = mdm_policy_split_secrets(t, j->settings, &pub, &secrets);
    if (ret != 0)
        return ret;
    free(j->policy.settings_json);
    j->policy.settings_json = json_dumps(pub, JSON_COMPACT | JSON_SORT_KEYS);
    j->policy.settings_len = j->policy.settings_json ? strlen(j->policy.settings_json) : 0;
    free(j->policy.sealed_secrets);
    j->policy.sealed_secrets = NULL;
    j->policy.sealed_len = 0;
    if (!j->policy.settings_json)
        ret = -ENOMEM;
    if (ret == 0 && secrets) {
        mdm_buf_t sealed;
        mdm_buf_init(&sealed, 0);
        ret = mdm_policy_seal_secrets(j->policy.id, secrets, &sealed);
        if (ret == 0 && !(j->policy.sealed_secrets = malloc(sealed.len)))
            ret = -ENOMEM;
        if (ret == 0) {
            memcpy(j->policy.sealed_secrets, mdm_buf_head(&sealed), sealed.len);
            j->policy.sealed_len = sealed.len;
        }
        mdm_buf_dispose(&sealed);
    }
    json_decref(pub);
    json_decref(secrets);
    return ret;
}

/* Checks j->settings against the type's schema (422 naming the key) and seals its secrets. */
static int check_and_seal(struct mjob *j, const mdm_policy_type_t *t)
{
    char err[300];
    if (mdm_policy_validate(t, j->settings, err, sizeof(err)) != 0)
        return mjob_fail(j, 422, "invalid settings", "%s", err);
    return seal_settings(j, t);
}

static int run_policy_update(mdm_store_t *s, struct mjob *j)
{
    mdm_policy_t old;
    int ret = mdm_store_get_policy(s, j->id, &old);
    if (ret == MDM_ENOTFOUND)
        return mjob_fail(j, 404, "not found", "no such policy");
    if (ret != 0)
        return ret;
    const mdm_policy_type_t *t = mdm_policy_type_find(old.type);
    j->policy = old; /* takes its buffers */
    j->policy.version++;
    j->policy.updated_ms = mdm_wall_ms();
    if (j->has_name)
        snprintf(j->policy.name, sizeof(j->policy.name), "%s", j->name);
    if (!j->settings)
        return 0;
    if (!t)
        return mjob_fail(j, 409, "conflict", "the policy's type is no longer known");
    json_t *old_secrets = NULL;
    if (mdm_policy_open_secrets(&old, &old_secrets) == 0 && old_secrets)
        carry_secrets(j->settings, old_secrets);
    json_decref(old_secrets);
    return check_and_seal(j, t);
}

/* Drops policy id from every group that names it (for a policy delete). */
static int strip_policy(void *arg, const mdm_group_t *g)
{
    struct mjob *j = arg;
    json_t *spec = json_loads(g->spec_json ? g->spec_json : "{}", 0, NULL);
    json_t *pols = json_object_get(spec, "policies");
    size_t i;
    json_t *v;
    bool found = false;
    json_array_foreach(pols, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), j->id) == 0) {
            json_array_remove(pols, i);
            found = true;
            break;
        }
    }
    int ret = 0;
    if (found) {
        mdm_group_t *grown = realloc(j->touched, (j->n_touched + 1) * sizeof(*grown));
        if (!grown) {
            ret = -ENOMEM;
        } else {
            j->touched = grown;
            mdm_group_t *ng = &grown[j->n_touched++];
            *ng = *g;
            ng->version++;
            ng->updated_ms = mdm_wall_ms();
            ng->spec_json = json_dumps(spec, JSON_COMPACT);
            ng->spec_len = ng->spec_json ? strlen(ng->spec_json) : 0;
            if (!ng->spec_json)
                ret = -ENOMEM;
        }
    }
    json_decref(spec);
    return ret;
}

static bool policy_exists(mdm_store_t *s, const char *id)
{
    mdm_policy_t p;
    int ret = mdm_store_get_policy(s, id, &p);
    mdm_policy_dispose(&p);
    return ret == 0;
}

static int run_group_change(mdm_store_t *s, struct mjob *j)
{
    mdm_group_t old;
    memset(&old, 0, sizeof(old));
    if (j->kind != M_GROUP_CREATE) {
        int ret = mdm_store_get_group(s, j->id, &old);
        if (ret == MDM_ENOTFOUND)
            return mjob_fail(j, 404, "not found", "no such group");
        if (ret != 0)
            return ret;
    }
    j->group = old;
    if (j->kind == M_GROUP_DELETE)
        return 0;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j->spec, "policies"), i, v) {
        if (!policy_exists(s, json_string_value(v)))
            return mjob_fail(j, 422, "invalid parameter", "policies[%zu]: no policy %s", i,
                             json_string_value(v));
    }
    uint64_t now = mdm_wall_ms();
    if (j->kind == M_GROUP_CREATE) {
        snprintf(j->group.id, sizeof(j->group.id), "%s", j->id);
        j->group.created_ms = now;
        j->group.version = 0;
    }
    j->group.version++;
    j->group.updated_ms = now;
    if (j->has_name)
        snprintf(j->group.name, sizeof(j->group.name), "%s", j->name);
    free(j->group.spec_json);
    j->group.spec_json = json_dumps(j->spec, JSON_COMPACT);
    j->group.spec_len = j->group.spec_json ? strlen(j->group.spec_json) : 0;
    return j->group.spec_json ? 0 : -ENOMEM;
}

static void on_mjob_done(mdm_shard_t *sh, mdm_shard_msg_t *m);

static void run_mjob(mdm_store_t *s, void *arg)
{
    struct mjob *j = arg;
    int ret = 0;
    switch (j->kind) {
    case M_POLICY_CREATE:
        ret = check_and_seal(j, mdm_policy_type_find(j->policy.type));
        break; /* the rest of the record was made on the shard */
    case M_POLICY_UPDATE:
        ret = run_policy_update(s, j);
        break;
    case M_POLICY_DELETE:
        ret = mdm_store_get_policy(s, j->id, &j->policy);
        if (ret == MDM_ENOTFOUND)
            ret = mjob_fail(j, 404, "not found", "no such policy");
        else if (ret == 0)
            ret = mdm_store_list_groups(s, "", strip_policy, j);
        break;
    default:
        ret = run_group_change(s, j);
        break;
    }
    if (ret != 0 && !j->out.status)
        mjob_fail(j, 503, "storage failure", "%s", mdm_strerror(ret));
    j->msg.fn = on_mjob_done;
    mdm_shard_post(j->c.shard, &j->msg);
}

/* Back on the shard: the writes, the audit event, and a reconcile once they are durable. */
static void on_mjob_done(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    struct mjob *j = MDM_CONTAINER_OF(m, struct mjob, msg);
    if (j->out.status) {
        mdm_api_call_fail(&j->c, j->out.status, j->out.error, j->out.detail);
        return;
    }
    mdm_batch_t *b = mdm_actors_shard_batch(sh);
    int status = 200;
    json_t *body = NULL;
    char detail[200];
    switch (j->kind) {
    case M_POLICY_CREATE:
    case M_POLICY_UPDATE:
        mdm_store_put_policy(b, &j->policy);
        body = policy_json(&j->policy);
        status = j->kind == M_POLICY_CREATE ? 201 : 200;
        snprintf(detail, sizeof(detail), "%s \"%s\" version %u", j->policy.type,
                 j->policy.name, j->policy.version);
        break;
    case M_POLICY_DELETE:
        mdm_store_delete_policy(b, j->id);
        for (size_t i = 0; i < j->n_touched; i++)
            mdm_store_put_group(b, &j->touched[i]);
        body = json_pack("{s:s, s:b, s:i}", "id", j->id, "deleted", 1, "groups_changed",
                         (int)j->n_touched);
        snprintf(detail, sizeof(detail), "%s \"%s\"; left %zu group(s)", j->policy.type,
                 j->policy.name, j->n_touched);
        break;
    case M_GROUP_CREATE:
    case M_GROUP_UPDATE:
        mdm_store_put_group(b, &j->group);
        body = group_json(&j->group);
        status = j->kind == M_GROUP_CREATE ? 201 : 200;
        snprintf(detail, sizeof(detail), "\"%s\" version %u", j->group.name, j->group.version);
        break;
    case M_GROUP_DELETE:
        mdm_store_delete_group(b, j->id);
        body = json_pack("{s:s, s:b}", "id", j->id, "deleted", 1);
        snprintf(detail, sizeof(detail), "\"%s\"", j->group.name);
        break;
    }
    mdm_api_call_finish(&j->c, status, body, detail);
    mdm_policy_reconcile_all(sh, false); /* starts once the writes above are durable */
}

static void mjob_start(struct mjob *j)
{
    if (j->claim[0]) {
        int ret = mdm_api_claim(j->claim);
        if (ret != 0) {
            j->claim[0] = 0;
            mdm_api_call_fail(&j->c, ret == -EBUSY ? 409 : 503,
                              ret == -EBUSY ? "conflict" : "unavailable",
                              ret == -EBUSY ? "another change to this record is in progress"
                                            : "too many changes in progress; retry");
            return;
        }
    }
    if (mdm_store_run_async(mdm_api_store(), run_mjob, j) != 0)
        mdm_api_call_fail(&j->c, 503, "unavailable", "storage is shutting down");
}

static struct mjob *mjob_new(mdm_exchange_t *x, enum mkind kind, const char *action,
                             const char *id)
{
    struct mjob *j = (struct mjob *)mdm_api_call_new(x, sizeof(*j), action, id ? id : "");
    if (!j) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return NULL;
    }
    j->c.free_fn = mjob_free;
    j->kind = kind;
    if (id) {
        snprintf(j->id, sizeof(j->id), "%s", id);
        snprintf(j->claim, sizeof(j->claim), "%c/%s", kind < M_GROUP_CREATE ? 'p' : 'g', id);
    }
    return j;
}

/* Reads "name" (required when create) into j. False (and the call ended) when invalid. */
static bool read_name(struct mjob *j, json_t *body, bool required)
{
    json_t *v = json_object_get(body, "name");
    const char *name = json_string_value(v);
    if (!v && !required)
        return true;
    if (!name || !name[0] || strlen(name) > MDM_POLICY_NAME_MAX) {
        mdm_api_call_fail(&j->c, 422, "invalid parameter",
                          "name: a string of 1 to 127 bytes is required");
        return false;
    }
    for (const char *p = name; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            mdm_api_call_fail(&j->c, 422, "invalid parameter", "name: no control characters");
            return false;
        }
    }
    j->has_name = true;
    snprintf(j->name, sizeof(j->name), "%s", name);
    return true;
}

static bool only_keys(struct mjob *j, json_t *body, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok = ok || strcmp(*a, k) == 0;
        if (!ok) {
            char d[160];
            snprintf(d, sizeof(d), "unknown key '%.64s'", k);
            mdm_api_call_fail(&j->c, 422, "invalid parameter", d);
            return false;
        }
    }
    return true;
}

static void handle_policy_create(mdm_exchange_t *x)
{
    struct mjob *j = mjob_new(x, M_POLICY_CREATE, "policy.create", NULL);
    json_t *body = j ? mdm_api_body_object(&j->c) : NULL;
    if (!body)
        return;
    static const char *const keys[] = {"type", "name", "settings", NULL};
    const char *type = json_string_value(json_object_get(body, "type"));
    const mdm_policy_type_t *t = type ? mdm_policy_type_find(type) : NULL;
    json_t *settings = json_object_get(body, "settings");
    char err[300];
    if (!only_keys(j, body, keys) || !read_name(j, body, true))
        goto out;
    if (!t) {
        snprintf(err, sizeof(err), "type: one of the policy types (GET /api/v1/policy-types)%s%.40s",
                 type ? "; not " : "", type ? type : "");
        mdm_api_call_fail(&j->c, 422, "invalid parameter", err);
        goto out;
    }
    if (!json_is_object(settings)) {
        mdm_api_call_fail(&j->c, 422, "invalid parameter", "settings: an object is required");
        goto out;
    }
    mdm_policy_t *p = &j->policy;
    if (mdm_policy_id_new(p->id) != 0) {
        mdm_api_call_fail(&j->c, 500, "internal error", "no random bytes");
        goto out;
    }
    snprintf(j->id, sizeof(j->id), "%s", p->id);
    snprintf(j->c.audit.target, sizeof(j->c.audit.target), "%s", p->id);
    snprintf(p->type, sizeof(p->type), "%s", type);
    snprintf(p->name, sizeof(p->name), "%s", j->name);
    p->version = 1;
    mdm_policy_profile_identifier(p->id, p->profile_identifier, sizeof(p->profile_identifier));
    p->created_ms = p->updated_ms = mdm_wall_ms();
    snprintf(p->created_by, sizeof(p->created_by), "%s", mdm_api_who());
    /* Validated and sealed on the worker: checking a PKCS#12 password or a signed profile
     * costs milliseconds of CPU, not for a shard thread. A copy: the body is freed here. */
    if (!(j->settings = json_deep_copy(settings))) {
        mdm_api_call_fail(&j->c, 503, "out of memory", NULL);
        goto out;
    }
    mjob_start(j);
out:
    json_decref(body);
}

static void handle_policy_update(mdm_exchange_t *x, const char *id)
{
    struct mjob *j = mjob_new(x, M_POLICY_UPDATE, "policy.update", id);
    json_t *body = j ? mdm_api_body_object(&j->c) : NULL;
    if (!body)
        return;
    static const char *const keys[] = {"name", "settings", NULL};
    json_t *settings = json_object_get(body, "settings");
    if (!only_keys(j, body, keys) || !read_name(j, body, false))
        goto out;
    if (settings && !json_is_object(settings)) {
        mdm_api_call_fail(&j->c, 422, "invalid parameter", "settings: expected an object");
        goto out;
    }
    if (!settings && !j->has_name) {
        mdm_api_call_fail(&j->c, 422, "invalid parameter", "nothing to change (name, settings)");
        goto out;
    }
    j->settings = settings ? json_deep_copy(settings) : NULL;
    mjob_start(j);
out:
    json_decref(body);
}

/* Checks a group's list field: strings, each valid by ok(); at most GROUP_LIST_MAX. */
static bool check_list(struct mjob *j, json_t *spec, const char *key, bool (*ok)(const char *))
{
    json_t *a = json_object_get(spec, key);
    char d[200];
    if (!a) {
        json_object_set_new(spec, key, json_array());
        return true;
    }
    if (!json_is_array(a) || json_array_size(a) > GROUP_LIST_MAX) {
        snprintf(d, sizeof(d), "%s: expected an array of at most %d strings", key,
                 GROUP_LIST_MAX);
        mdm_api_call_fail(&j->c, 422, "invalid parameter", d);
        return false;
    }
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        if (!json_is_string(v) || !ok(json_string_value(v))) {
            snprintf(d, sizeof(d), "%s[%zu]: not a valid %s", key, i,
                     strcmp(key, "policies") == 0 ? "policy id" : "name");
            mdm_api_call_fail(&j->c, 422, "invalid parameter", d);
            return false;
        }
    }
    return true;
}

static bool udid_ok(const char *s) { return s[0] && strlen(s) <= MDM_UDID_MAX; }

static void handle_group_put(mdm_exchange_t *x, const char *id)
{
    bool create = id == NULL;
    struct mjob *j = mjob_new(x, create ? M_GROUP_CREATE : M_GROUP_UPDATE,
                              create ? "group.create" : "group.update", id);
    json_t *body = j ? mdm_api_body_object(&j->c) : NULL;
    if (!body)
        return;
    static const char *const keys[] = {"name", "all_devices", "devices", "users",
                                       "user_groups", "policies", NULL};
    json_t *all = json_object_get(body, "all_devices");
    if (!only_keys(j, body, keys) || !read_name(j, body, true))
        goto out;
    if (all && !json_is_boolean(all)) {
        mdm_api_call_fail(&j->c, 422, "invalid parameter", "all_devices: expected a boolean");
        goto out;
    }
    json_object_del(body, "name");
    json_object_set_new(body, "all_devices", json_boolean(json_is_true(all)));
    if (!check_list(j, body, "devices", udid_ok) ||
        !check_list(j, body, "users", mdm_user_ref_valid) ||
        !check_list(j, body, "user_groups", mdm_group_name_valid) ||
        !check_list(j, body, "policies", mdm_policy_id_valid))
        goto out;
    if (create) {
        if (mdm_policy_id_new(j->id) != 0) {
            mdm_api_call_fail(&j->c, 500, "internal error", "no random bytes");
            goto out;
        }
        snprintf(j->c.audit.target, sizeof(j->c.audit.target), "%s", j->id);
    }
    j->spec = json_incref(body);
    mjob_start(j);
out:
    json_decref(body);
}

static void handle_delete(mdm_exchange_t *x, bool policy, const char *id)
{
    struct mjob *j = mjob_new(x, policy ? M_POLICY_DELETE : M_GROUP_DELETE,
                              policy ? "policy.delete" : "group.delete", id);
    if (j)
        mjob_start(j);
}

/* An audited "reconcile now": no record to change, only the event and the trigger. */
static void handle_reconcile(mdm_exchange_t *x)
{
    struct mdm_api_call *c = mdm_api_call_new(x, sizeof(*c), "policy.reconcile", "all devices");
    if (!c) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return;
    }
    const mdm_http_request_t *r = mdm_exchange_request(x);
    bool profile_list = false;
    if (r->body.len) {
        json_t *body = mdm_api_body_object(c);
        if (!body)
            return;
        json_t *v = json_object_get(body, "profile_list");
        bool bad = json_object_size(body) > (v ? 1u : 0u) || (v && !json_is_boolean(v));
        profile_list = json_is_true(v);
        json_decref(body);
        if (bad) {
            mdm_api_call_fail(c, 422, "invalid parameter",
                              "expected {\"profile_list\": true|false} or no body");
            return;
        }
    }
    mdm_shard_t *sh = c->shard;
    mdm_api_call_finish(c, 202, json_pack("{s:b, s:b}", "reconciling", 1, "profile_list",
                                          profile_list),
                        profile_list ? "with ProfileList" : "");
    mdm_policy_reconcile_all(sh, profile_list);
}

/* ------------------------------------------------------------------------------------------
 * Dispatch
 */

bool mdm_api_policy_owns(const char *rest)
{
    static const char *const roots[] = {"policy-types", "policies", "groups", "apps",
                                        "reconcile"};
    for (size_t i = 0; i < MDM_ARRAY_LEN(roots); i++) {
        size_t n = strlen(roots[i]);
        if (strncmp(rest, roots[i], n) == 0 && (rest[n] == 0 || rest[n] == '/'))
            return true;
    }
    /* devices/{udid}/policies and devices/{udid}/apps */
    if (strncmp(rest, "devices/", 8) != 0)
        return false;
    const char *tail = strchr(rest + 8, '/');
    return tail && (strcmp(tail, "/policies") == 0 || strcmp(tail, "/apps") == 0);
}

/* Splits rest into up to 3 segments of up to SEG_MAX bytes. Returns the count, -1 if bad. */
static int split(const char *rest, char segs[3][SEG_MAX + 1])
{
    int n = 0;
    while (*rest) {
        size_t len = strcspn(rest, "/");
        if (len > 0) {
            if (n == 3 || len > SEG_MAX)
                return -1;
            memcpy(segs[n], rest, len);
            segs[n][len] = 0;
            n++;
        }
        rest += len;
        if (*rest == '/')
            rest++;
    }
    return n;
}

static bool id_or_404(mdm_exchange_t *x, const char *id, const char *what)
{
    if (mdm_policy_id_valid(id))
        return true;
    char d[64];
    snprintf(d, sizeof(d), "no such %s", what);
    mdm_api_respond_error(x, 404, "not found", d);
    return false;
}

static void handle_policies(mdm_exchange_t *x, char segs[3][SEG_MAX + 1], int n)
{
    enum mdm_http_method m = mdm_exchange_request(x)->method;
    if (n == 1) {
        if (m == MDM_HTTP_GET)
            start_read(x, R_POLICIES, NULL, true);
        else if (m == MDM_HTTP_POST)
            handle_policy_create(x);
        else
            mdm_api_method_not_allowed(x, "GET, POST");
        return;
    }
    if (!id_or_404(x, segs[1], "policy"))
        return;
    if (n == 2) {
        if (m == MDM_HTTP_GET)
            start_read(x, R_POLICY, segs[1], false);
        else if (m == MDM_HTTP_PUT)
            handle_policy_update(x, segs[1]);
        else if (m == MDM_HTTP_DELETE)
            handle_delete(x, true, segs[1]);
        else
            mdm_api_method_not_allowed(x, "GET, PUT, DELETE");
    } else if (strcmp(segs[2], "profile") == 0 || strcmp(segs[2], "deployments") == 0) {
        bool preview = segs[2][0] == 'p';
        if (m == MDM_HTTP_GET)
            start_read(x, preview ? R_PREVIEW : R_POLICY_DEPLOY, segs[1], !preview);
        else
            mdm_api_method_not_allowed(x, "GET");
    } else {
        mdm_api_respond_error(x, 404, "not found", "no such resource");
    }
}

static void handle_groups(mdm_exchange_t *x, char segs[3][SEG_MAX + 1], int n)
{
    enum mdm_http_method m = mdm_exchange_request(x)->method;
    if (n == 1) {
        if (m == MDM_HTTP_GET)
            start_read(x, R_GROUPS, NULL, true);
        else if (m == MDM_HTTP_POST)
            handle_group_put(x, NULL);
        else
            mdm_api_method_not_allowed(x, "GET, POST");
    } else if (n == 2 && id_or_404(x, segs[1], "group")) {
        if (m == MDM_HTTP_GET)
            start_read(x, R_GROUP, segs[1], false);
        else if (m == MDM_HTTP_PUT)
            handle_group_put(x, segs[1]);
        else if (m == MDM_HTTP_DELETE)
            handle_delete(x, false, segs[1]);
        else
            mdm_api_method_not_allowed(x, "GET, PUT, DELETE");
    } else if (n != 2) {
        mdm_api_respond_error(x, 404, "not found", "no such resource");
    }
}

void mdm_api_policy_handle(mdm_exchange_t *x, const char *rest)
{
    char segs[3][SEG_MAX + 1];
    int n = split(rest, segs);
    enum mdm_http_method m = mdm_exchange_request(x)->method;
    if (n < 1) {
        mdm_api_respond_error(x, 404, "not found", "no such resource");
    } else if (strcmp(segs[0], "policy-types") == 0 && n == 1) {
        if (m == MDM_HTTP_GET)
            handle_types(x);
        else
            mdm_api_method_not_allowed(x, "GET");
    } else if (strcmp(segs[0], "policies") == 0) {
        handle_policies(x, segs, n);
    } else if (strcmp(segs[0], "groups") == 0) {
        handle_groups(x, segs, n);
    } else if (strcmp(segs[0], "reconcile") == 0 && n == 1) {
        if (m == MDM_HTTP_POST)
            handle_reconcile(x);
        else
            mdm_api_method_not_allowed(x, "POST");
    } else if (strcmp(segs[0], "apps") == 0 && n == 1) {
        if (m == MDM_HTTP_GET)
            start_read(x, R_APPS, NULL, true);
        else
            mdm_api_method_not_allowed(x, "GET");
    } else if (strcmp(segs[0], "devices") == 0 && n == 3 &&
               mdm_api_id_valid(segs[1], strlen(segs[1]))) {
        if (m == MDM_HTTP_GET)
            start_read(x, segs[2][0] == 'a' ? R_DEVICE_APPS : R_DEVICE_DEPLOY, segs[1], false);
        else
            mdm_api_method_not_allowed(x, "GET");
    } else {
        mdm_api_respond_error(x, 404, "not found", "no such resource");
    }
}
