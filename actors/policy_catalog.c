/*
 * policy_catalog: the list of policy types, validation and build dispatch, secrets, and the
 * helpers that shape every profile the same way (see policy_catalog.h).
 *
 * Each type lives in a small record (policy_internal.h); plain "one payload" types need no
 * code at all: their settings are checked against the payload's schema table and converted
 * by it. Types with rules of their own are in policy_types.c and policy_special.c.
 */
#include "actors/policy_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crypto.h"
#include "core/plist.h"

/* Alphabetical, so listings are stable. */
static const mdm_policy_type_t *const types[] = {
    &mdm_policy_t_airplay,        &mdm_policy_t_app_inventory,   &mdm_policy_t_app_uninstall,
    &mdm_policy_t_caldav,         &mdm_policy_t_carddav,         &mdm_policy_t_credentials,
    &mdm_policy_t_device_name,    &mdm_policy_t_exchange,        &mdm_policy_t_filevault,
    &mdm_policy_t_firewall,       &mdm_policy_t_font,            &mdm_policy_t_import_profile,
    &mdm_policy_t_ldap,           &mdm_policy_t_mail,            &mdm_policy_t_network,
    &mdm_policy_t_os_update,      &mdm_policy_t_passcode,        &mdm_policy_t_profile_removal,
    &mdm_policy_t_restrictions,   &mdm_policy_t_scep,            &mdm_policy_t_vpn,
    &mdm_policy_t_webclip,
};
#define N_TYPES (sizeof(types) / sizeof(types[0]))

const mdm_policy_type_t *mdm_policy_type_find(const char *name)
{
    for (size_t i = 0; name && i < N_TYPES; i++)
        if (strcmp(types[i]->name, name) == 0)
            return types[i];
    return NULL;
}

size_t mdm_policy_type_count(void) { return N_TYPES; }

const mdm_policy_type_t *mdm_policy_type_at(size_t i) { return i < N_TYPES ? types[i] : NULL; }

const char *mdm_policy_type_name(const mdm_policy_type_t *t) { return t->name; }

const char *mdm_policy_type_title(const mdm_policy_type_t *t) { return t->title; }

bool mdm_policy_type_is_profile(const mdm_policy_type_t *t) { return t->is_profile; }

/* ---- shared checks --------------------------------------------------------------------- */

/* The keys of CommonPayloadKeys.yaml: mdmd sets them, settings may not. */
static bool is_common_key(const char *key)
{
    const mdm_payload_schema_t *c = mdm_payload_schema_find("CommonPayloadKeys");
    return c && mdm_pkey_find(c->keys, c->n_keys, key) != NULL;
}

/* A shallow copy of obj without key skip (obj itself, with a reference, when skip is NULL). */
static json_t *without(const json_t *obj, const char *skip)
{
    json_t *copy = skip ? json_copy((json_t *)obj) : json_incref((json_t *)obj);
    if (copy && skip)
        json_object_del(copy, skip);
    return copy;
}

int mdm_policy_check_payload(const char *payload_type, const json_t *obj, const char *skip,
                             mdm_spath_t *path, char *err, size_t errlen)
{
    const mdm_payload_schema_t *s = mdm_payload_schema_find(payload_type);
    if (!s) {
        mdm_errf(err, errlen, "%s: no schema for %s", path->s, payload_type);
        return -EINVAL;
    }
    if (!json_is_object(obj)) {
        mdm_errf(err, errlen, "%s: expected an object", path->s);
        return -EINVAL;
    }
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)obj, name, v) {
        if ((!skip || strcmp(name, skip) != 0) && is_common_key(name) &&
            !mdm_pkey_find(s->keys, s->n_keys, name)) {
            mdm_errf(err, errlen, "%s.%s: set by mdmd, not allowed in settings", path->s, name);
            return -EINVAL;
        }
    }
    json_t *rest = without(obj, skip);
    if (!rest)
        return -ENOMEM;
    int ret = mdm_schema_check_json(s->keys, s->n_keys, rest, payload_type, path, err, errlen);
    json_decref(rest);
    return ret;
}

int mdm_policy_check_command(const char *request_type, const json_t *obj, mdm_spath_t *path,
                             char *err, size_t errlen)
{
    const mdm_payload_schema_t *s = mdm_command_schema_find(request_type);
    if (!s) {
        mdm_errf(err, errlen, "%s: no schema for command %s", path->s, request_type);
        return -EINVAL;
    }
    return mdm_schema_check_json(s->keys, s->n_keys, obj, request_type, path, err, errlen);
}

int mdm_policy_get_int(const json_t *obj, const char *key, long long min, long long max,
                       long long def, long long *out, mdm_spath_t *path, char *err,
                       size_t errlen)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        mdm_errf(err, errlen, "%s.%s: expected an integer from %lld to %lld", path->s, key,
                 min, max);
        return -EINVAL;
    }
    *out = json_integer_value(v);
    return 0;
}

int mdm_policy_only_keys(const json_t *obj, const char *const *allowed, const char *owner,
                         mdm_spath_t *path, char *err, size_t errlen)
{
    const char *name;
    const json_t *v;
    if (!json_is_object(obj)) {
        mdm_errf(err, errlen, "%s: expected an object", path->s);
        return -EINVAL;
    }
    json_object_foreach((json_t *)obj, name, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, name) == 0;
        if (!ok) {
            mdm_errf(err, errlen, "%s.%s: unknown key for %s", path->s, name, owner);
            return -EINVAL;
        }
    }
    return 0;
}

int mdm_policy_validate(const mdm_policy_type_t *t, const json_t *settings, char *err,
                        size_t errlen)
{
    mdm_spath_t path;
    mdm_spath_init(&path, "settings");
    if (!json_is_object(settings)) {
        mdm_errf(err, errlen, "settings: expected an object");
        return -EINVAL;
    }
    if (t->validate)
        return t->validate(t, settings, &path, err, errlen);
    return mdm_policy_check_payload(t->payload_type, settings, NULL, &path, err, errlen);
}

bool mdm_policy_needs_device(const mdm_policy_type_t *t, const json_t *settings)
{
    return t->needs_device && settings && t->needs_device(settings);
}

/* ---- building -------------------------------------------------------------------------- */

void mdm_policy_output_init(mdm_policy_output_t *o)
{
    memset(o, 0, sizeof(*o));
    mdm_buf_init(&o->profile_xml, 0);
}

void mdm_policy_output_dispose(mdm_policy_output_t *o)
{
    mdm_buf_dispose(&o->profile_xml);
    for (unsigned i = 0; i < o->n_commands; i++)
        plist_free(o->commands[i]);
    mdm_policy_output_init(o);
}

static const char *or_empty(const char *s) { return s ? s : ""; }

int mdm_pctx_profile_begin(mdm_pctx_t *c)
{
    char uuid[MDM_UUID_LEN + 1], desc[256];
    int ret = mdm_uuid_v4(uuid);
    if (ret != 0)
        return ret;
    snprintf(desc, sizeof(desc), "%s (mdmd policy %s, version %u)", or_empty(c->meta->name),
             or_empty(c->meta->id), c->meta->version);
    c->profile = plist_new_dict();
    c->content = plist_new_array();
    if (!c->profile || !c->content) {
        plist_free(c->content);
        c->content = NULL;
        return -ENOMEM;
    }
    plist_t content = c->content;
    if ((ret = mdm_plist_dict_set_string(c->profile, "PayloadType", "Configuration")) != 0 ||
        (ret = mdm_plist_dict_set_uint(c->profile, "PayloadVersion", 1)) != 0 ||
        (ret = mdm_plist_dict_set_string(c->profile, "PayloadIdentifier",
                                         or_empty(c->meta->profile_identifier))) != 0 ||
        (ret = mdm_plist_dict_set_string(c->profile, "PayloadUUID", uuid)) != 0 ||
        (ret = mdm_plist_dict_set_string(c->profile, "PayloadDisplayName",
                                         or_empty(c->meta->name))) != 0 ||
        (ret = mdm_plist_dict_set_string(c->profile, "PayloadDescription", desc)) != 0 ||
        (ret = mdm_plist_dict_set_string(c->profile, "PayloadOrganization",
                                         or_empty(c->env->organization))) != 0 ||
        (ret = mdm_plist_dict_set_string(c->profile, "PayloadScope", "System")) != 0)
        return ret;
    c->content = NULL;
    if ((ret = mdm_plist_dict_set_item(c->profile, "PayloadContent", content)) != 0)
        return ret;
    c->content = content;
    return 0;
}

static int set_payload_common(mdm_pctx_t *c, plist_t d, const char *type, const char *uuid)
{
    char id[512];
    const mdm_payload_schema_t *s = mdm_payload_schema_find(type);
    snprintf(id, sizeof(id), "%s.%s", or_empty(c->meta->profile_identifier), type);
    int ret;
    if ((ret = mdm_plist_dict_set_string(d, "PayloadType", type)) != 0 ||
        (ret = mdm_plist_dict_set_uint(d, "PayloadVersion", 1)) != 0 ||
        (ret = mdm_plist_dict_set_string(d, "PayloadIdentifier", id)) != 0 ||
        (ret = mdm_plist_dict_set_string(d, "PayloadUUID", uuid)) != 0 ||
        (ret = mdm_plist_dict_set_string(d, "PayloadDisplayName", s ? s->title : type)) != 0)
        return ret;
    return 0;
}

int mdm_pctx_add_payload(mdm_pctx_t *c, const char *type, const json_t *obj, const char *skip,
                         plist_t *payload_out, char uuid_out[MDM_UUID_LEN + 1])
{
    char uuid[MDM_UUID_LEN + 1];
    int ret = mdm_uuid_v4(uuid);
    if (ret != 0)
        return ret;
    plist_t d = plist_new_dict();
    if (!d)
        return -ENOMEM;
    if (obj) {
        const mdm_payload_schema_t *s = mdm_payload_schema_find(type);
        json_t *rest = without(obj, skip);
        ret = rest ? mdm_schema_json_to_plist(s ? s->keys : NULL, s ? s->n_keys : 0, rest, d)
                   : -ENOMEM;
        json_decref(rest);
    }
    if (ret == 0)
        ret = set_payload_common(c, d, type, uuid);
    if (ret != 0) {
        plist_free(d);
        return ret;
    }
    plist_array_append_item(c->content, d);
    if (payload_out)
        *payload_out = d;
    if (uuid_out)
        memcpy(uuid_out, uuid, sizeof(uuid));
    return 0;
}

int mdm_pctx_profile_end(mdm_pctx_t *c)
{
    int ret = mdm_plist_to_xml(c->profile, &c->out->profile_xml);
    plist_free(c->profile);
    c->profile = c->content = NULL;
    return ret;
}

int mdm_pctx_add_command(mdm_pctx_t *c, const char *request_type, plist_t *cmd_out)
{
    if (c->out->n_commands >= MDM_POLICY_COMMANDS_MAX) {
        mdm_errf(c->err, c->errlen, "too many commands");
        return -EINVAL;
    }
    plist_t d = plist_new_dict();
    if (!d)
        return -ENOMEM;
    int ret = mdm_plist_dict_set_string(d, "RequestType", request_type);
    if (ret != 0) {
        plist_free(d);
        return ret;
    }
    c->out->commands[c->out->n_commands++] = d;
    if (cmd_out)
        *cmd_out = d;
    return 0;
}

/* A plain profile policy: one payload holding the settings. */
static int build_single(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    int ret = mdm_pctx_profile_begin(c);
    if (ret == 0)
        ret = mdm_pctx_add_payload(c, t->payload_type, c->settings, NULL, NULL, NULL);
    return ret;
}

int mdm_policy_build(const mdm_policy_type_t *t, const json_t *settings,
                     const mdm_policy_meta_t *meta, const mdm_policy_env_t *env,
                     const mdm_policy_device_t *dev, mdm_policy_output_t *out, char *err,
                     size_t errlen)
{
    int ret = mdm_policy_validate(t, settings, err, errlen);
    if (ret != 0)
        return ret;
    mdm_pctx_t c = {.settings = settings, .meta = meta, .env = env, .dev = dev, .out = out,
                    .err = err, .errlen = errlen};
    out->per_device = mdm_policy_needs_device(t, settings);
    ret = t->build ? t->build(t, &c) : build_single(t, &c);
    if (ret == 0 && c.profile)
        ret = mdm_pctx_profile_end(&c);
    plist_free(c.profile);
    if (ret != 0) {
        if (ret == -ENOMEM)
            mdm_errf(err, errlen, "out of memory");
        mdm_policy_output_dispose(out);
    }
    return ret;
}

/* ---- secrets --------------------------------------------------------------------------- */

/* Moves the secrets under pub (a deep copy, modified in place) into a new object *sec (NULL
 * when there is none). path (may be NULL) collects their paths. */
static int split(json_t *pub, json_t **sec, mdm_spath_t *p, json_t *paths)
{
    *sec = NULL;
    json_t *found = json_object();
    if (!found)
        return -ENOMEM;
    int ret = 0;
    if (json_is_object(pub)) {
        const char *name;
        json_t *v;
        void *tmp;
        json_object_foreach_safe(pub, tmp, name, v) {
            json_t *sub = NULL;
            size_t old = mdm_spath_key(p, name);
            if (json_is_string(v) && mdm_schema_is_secret_key(name)) {
                /* Copied before the delete, which frees name (sub stays NULL). */
                ret = json_object_set(found, name, v);
                if (ret == 0)
                    json_object_del(pub, name);
                if (ret == 0 && paths)
                    ret = json_array_append_new(paths, json_string(p->s));
            } else {
                ret = split(v, &sub, p, paths);
            }
            mdm_spath_pop(p, old);
            if (ret == 0 && sub)
                ret = json_object_set_new(found, name, sub);
            if (ret != 0)
                break;
        }
    } else if (json_is_array(pub)) {
        size_t i;
        json_t *v;
        json_array_foreach(pub, i, v) {
            json_t *sub = NULL;
            char idx[24];
            snprintf(idx, sizeof(idx), "%zu", i);
            size_t old = mdm_spath_index(p, i);
            ret = split(v, &sub, p, paths);
            mdm_spath_pop(p, old);
            if (ret == 0 && sub)
                ret = json_object_set_new(found, idx, sub);
            if (ret != 0)
                break;
        }
    }
    if (ret != 0 || json_object_size(found) == 0) {
        json_decref(found);
        return ret ? -ENOMEM : 0;
    }
    *sec = found;
    return 0;
}

int mdm_policy_split_secrets(const mdm_policy_type_t *t, const json_t *settings,
                             json_t **public_out, json_t **secrets_out)
{
    (void)t;
    *public_out = *secrets_out = NULL;
    if (!json_is_object(settings))
        return -EINVAL;
    json_t *pub = json_deep_copy(settings);
    if (!pub)
        return -ENOMEM;
    mdm_spath_t p;
    mdm_spath_init(&p, "");
    int ret = split(pub, secrets_out, &p, NULL);
    if (ret != 0) {
        json_decref(pub);
        return ret;
    }
    *public_out = pub;
    return 0;
}

json_t *mdm_policy_secret_paths(const mdm_policy_type_t *t, const json_t *settings)
{
    (void)t;
    json_t *paths = json_array();
    json_t *pub = json_deep_copy(settings);
    json_t *sec = NULL;
    mdm_spath_t p;
    mdm_spath_init(&p, "");
    if (!paths || !pub || split(pub, &sec, &p, paths) != 0) {
        json_decref(paths);
        paths = NULL;
    }
    json_decref(pub);
    json_decref(sec);
    return paths;
}

/* Puts the secrets of sec back into pub (modified in place). */
static int merge(json_t *pub, const json_t *sec)
{
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)sec, name, v) {
        if (json_is_array(pub)) {
            char *end;
            unsigned long i = strtoul(name, &end, 10);
            json_t *item = json_array_get(pub, i);
            if (*end || !item || merge(item, v) != 0)
                return -EINVAL;
        } else if (json_is_object(pub)) {
            json_t *cur = json_object_get(pub, name);
            if (json_is_string(v)) {
                if (json_object_set(pub, name, v) != 0)
                    return -ENOMEM;
            } else if (!cur || merge(cur, v) != 0) {
                return -EINVAL;
            }
        } else {
            return -EINVAL;
        }
    }
    return 0;
}

json_t *mdm_policy_merge_secrets(const json_t *public_settings, const json_t *secrets)
{
    json_t *all = json_deep_copy(public_settings);
    if (all && secrets && merge(all, secrets) != 0) {
        json_decref(all);
        return NULL;
    }
    return all;
}
