/*
 * The policy types whose settings are a payload's keys, a command's parameters, or a small
 * mix of them: plain payloads, payload-type selectors (exchange, network), restrictions,
 * app inventory and uninstall, profile removal, device name templates, OS updates.
 */
#include "actors/policy_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/plist.h"

/* ---- plain one-payload profiles -------------------------------------------------------- */

#define PLAIN(id, title_, ptype)                                                            \
    const mdm_policy_type_t mdm_policy_t_##id = {                                           \
        .name = #id, .title = title_, .is_profile = true, .payload_type = ptype}

PLAIN(airplay, "AirPlay mirroring", "com.apple.airplay");
PLAIN(caldav, "CalDAV calendar account", "com.apple.caldav.account");
PLAIN(carddav, "CardDAV contacts account", "com.apple.carddav.account");
PLAIN(firewall, "Application firewall", "com.apple.security.firewall");
PLAIN(ldap, "LDAP directory account", "com.apple.ldap.account");
PLAIN(mail, "Mail account", "com.apple.mail.managed");
PLAIN(passcode, "Login password policy", "com.apple.mobiledevice.passwordpolicy");
PLAIN(vpn, "VPN", "com.apple.vpn.managed");

/* ---- payload picked by settings.PayloadType -------------------------------------------- */

/* Checks settings.PayloadType against allowed (NULL-terminated; allowed[0] is the default
 * when absent) and the rest against that payload; *type_out is the chosen type. */
int mdm_policy_check_selected(const json_t *s, const char *const *allowed, mdm_spath_t *path,
                          char *err, size_t errlen, const char **type_out)
{
    const json_t *pt = json_object_get(s, "PayloadType");
    const char *type = pt ? json_string_value(pt) : allowed[0];
    bool ok = false;
    for (const char *const *a = allowed; type && *a && !ok; a++)
        ok = strcmp(*a, type) == 0;
    if (!ok) {
        char list[512] = "";
        for (const char *const *a = allowed; *a; a++)
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
                     a == allowed ? "" : ", ", *a);
        mdm_errf(err, errlen, "%s.PayloadType: %s%s%s is not one of %s", path->s,
                 type ? "'" : "", type ? type : "not a string", type ? "'" : "", list);
        return -EINVAL;
    }
    if (type_out)
        *type_out = type;
    return mdm_policy_check_payload(type, s, "PayloadType", path, err, errlen);
}

int mdm_policy_build_selected(const char *const *allowed, mdm_pctx_t *c)
{
    const json_t *pt = json_object_get(c->settings, "PayloadType");
    const char *type = pt ? json_string_value(pt) : allowed[0];
    int ret = mdm_pctx_profile_begin(c);
    if (ret == 0)
        ret = mdm_pctx_add_payload(c, type, c->settings, "PayloadType", NULL, NULL);
    return ret;
}

/* macOS has no Exchange ActiveSync payload (com.apple.eas.account is iOS only). */
static const char *const exchange_types[] = {"com.apple.ews.account", NULL};

static int exchange_validate(const mdm_policy_type_t *t, const json_t *s, mdm_spath_t *path,
                             char *err, size_t errlen)
{
    (void)t;
    const char *pt = json_string_value(json_object_get(s, "PayloadType"));
    if (pt && strcmp(pt, "com.apple.eas.account") == 0) {
        mdm_errf(err, errlen, "%s.PayloadType: com.apple.eas.account is not supported on macOS "
                 "(use com.apple.ews.account)", path->s);
        return -EINVAL;
    }
    return mdm_policy_check_selected(s, exchange_types, path, err, errlen, NULL);
}

static int exchange_build(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    (void)t;
    return mdm_policy_build_selected(exchange_types, c);
}

const mdm_policy_type_t mdm_policy_t_exchange = {
    .name = "exchange", .title = "Exchange account", .is_profile = true,
    .validate = exchange_validate, .build = exchange_build};

static const char *const network_types[] = {
    "com.apple.wifi.managed",
    "com.apple.firstactiveethernet.managed",
    "com.apple.firstethernet.managed",
    "com.apple.globalethernet.managed",
    "com.apple.secondactiveethernet.managed",
    "com.apple.secondethernet.managed",
    "com.apple.thirdactiveethernet.managed",
    "com.apple.thirdethernet.managed",
    NULL,
};

static int network_validate(const mdm_policy_type_t *t, const json_t *s, mdm_spath_t *path,
                            char *err, size_t errlen)
{
    (void)t;
    return mdm_policy_check_selected(s, network_types, path, err, errlen, NULL);
}

static int network_build(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    (void)t;
    return mdm_policy_build_selected(network_types, c);
}

const mdm_policy_type_t mdm_policy_t_network = {
    .name = "network", .title = "Wi-Fi or Ethernet network", .is_profile = true,
    .validate = network_validate, .build = network_build};

/* ---- restrictions ---------------------------------------------------------------------- */

/* Members of the settings object, each the keys of "com.apple." + name. */
static const char *const restriction_parts[] = {
    "applicationaccess", "applicationaccess.new", "systempreferences", "preference.security",
    "systemuiserver", NULL,
};

static int restrictions_validate(const mdm_policy_type_t *t, const json_t *s,
                                 mdm_spath_t *path, char *err, size_t errlen)
{
    (void)t;
    int ret = mdm_policy_only_keys(s, restriction_parts, "restrictions", path, err, errlen);
    if (ret != 0)
        return ret;
    if (json_object_size(s) == 0) {
        mdm_errf(err, errlen, "%s: needs at least one of applicationaccess, "
                 "applicationaccess.new, systempreferences, preference.security, "
                 "systemuiserver", path->s);
        return -EINVAL;
    }
    for (const char *const *part = restriction_parts; *part && ret == 0; part++) {
        const json_t *v = json_object_get(s, *part);
        if (!v)
            continue;
        char type[64];
        snprintf(type, sizeof(type), "com.apple.%s", *part);
        size_t old = mdm_spath_key(path, *part);
        ret = mdm_policy_check_payload(type, v, NULL, path, err, errlen);
        mdm_spath_pop(path, old);
    }
    return ret;
}

static int restrictions_build(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    (void)t;
    int ret = mdm_pctx_profile_begin(c);
    for (const char *const *part = restriction_parts; *part && ret == 0; part++) {
        const json_t *v = json_object_get(c->settings, *part);
        char type[64];
        snprintf(type, sizeof(type), "com.apple.%s", *part);
        if (v)
            ret = mdm_pctx_add_payload(c, type, v, NULL, NULL, NULL);
    }
    return ret;
}

const mdm_policy_type_t mdm_policy_t_restrictions = {
    .name = "restrictions", .title = "Restrictions", .is_profile = true,
    .validate = restrictions_validate, .build = restrictions_build};

/* ---- commands whose parameters are the settings ---------------------------------------- */

/* Adds command request_type with the members of params converted per its schema. */
static int add_command_with(mdm_pctx_t *c, const char *request_type, const json_t *params)
{
    plist_t cmd;
    int ret = mdm_pctx_add_command(c, request_type, &cmd);
    const mdm_payload_schema_t *s = mdm_command_schema_find(request_type);
    if (ret == 0 && params)
        ret = mdm_schema_json_to_plist(s ? s->keys : NULL, s ? s->n_keys : 0, params, cmd);
    return ret;
}

static int app_uninstall_validate(const mdm_policy_type_t *t, const json_t *s,
                                  mdm_spath_t *path, char *err, size_t errlen)
{
    (void)t;
    return mdm_policy_check_command("RemoveApplication", s, path, err, errlen);
}

static int app_uninstall_build(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    (void)t;
    return add_command_with(c, "RemoveApplication", c->settings);
}

const mdm_policy_type_t mdm_policy_t_app_uninstall = {
    .name = "app_uninstall", .title = "Uninstall a managed app",
    .validate = app_uninstall_validate, .build = app_uninstall_build};

static int profile_removal_validate(const mdm_policy_type_t *t, const json_t *s,
                                    mdm_spath_t *path, char *err, size_t errlen)
{
    (void)t;
    return mdm_policy_check_command("RemoveProfile", s, path, err, errlen);
}

static int profile_removal_build(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    (void)t;
    return add_command_with(c, "RemoveProfile", c->settings);
}

const mdm_policy_type_t mdm_policy_t_profile_removal = {
    .name = "profile_removal", .title = "Remove a profile",
    .validate = profile_removal_validate, .build = profile_removal_build};

/* ---- app inventory --------------------------------------------------------------------- */

#define INVENTORY_DEFAULT_HOURS 24
#define INVENTORY_MAX_HOURS 168 /* a week */

static int app_inventory_validate(const mdm_policy_type_t *t, const json_t *s,
                                  mdm_spath_t *path, char *err, size_t errlen)
{
    (void)t;
    static const char *const keys[] = {"interval_hours", "ManagedAppsOnly", NULL};
    long long hours;
    int ret = mdm_policy_only_keys(s, keys, "app_inventory", path, err, errlen);
    if (ret == 0)
        ret = mdm_policy_get_int(s, "interval_hours", 1, INVENTORY_MAX_HOURS,
                                 INVENTORY_DEFAULT_HOURS, &hours, path, err, errlen);
    const json_t *m = json_object_get(s, "ManagedAppsOnly");
    if (ret == 0 && m && !json_is_boolean(m)) {
        mdm_errf(err, errlen, "%s.ManagedAppsOnly: expected a boolean", path->s);
        ret = -EINVAL;
    }
    return ret;
}

static int app_inventory_build(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    (void)t;
    plist_t cmd;
    int ret = mdm_pctx_add_command(c, "InstalledApplicationList", &cmd);
    const json_t *m = json_object_get(c->settings, "ManagedAppsOnly");
    if (ret == 0 && m)
        ret = mdm_plist_dict_set_bool(cmd, "ManagedAppsOnly", json_is_true(m));
    const json_t *h = json_object_get(c->settings, "interval_hours");
    long long hours = h ? json_integer_value(h) : INVENTORY_DEFAULT_HOURS;
    c->out->repeat_interval_s = (uint32_t)(hours * 3600);
    return ret;
}

const mdm_policy_type_t mdm_policy_t_app_inventory = {
    .name = "app_inventory", .title = "Installed apps inventory",
    .validate = app_inventory_validate, .build = app_inventory_build};

/* ---- device name ----------------------------------------------------------------------- */

#define NAME_MAX_LEN 255

/* The template variables and where their value comes from. */
static const char *device_var(const mdm_policy_device_t *d, const char *name, size_t len)
{
    static const char *const names[] = {"serial", "udid", "user", "user_full_name", "model",
                                        "device_name"};
    const char *values[] = {d ? d->serial : "",         d ? d->udid : "",
                            d ? d->user_short_name : "", d ? d->user_full_name : "",
                            d ? d->model : "",          d ? d->device_name : ""};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0)
            return values[i] ? values[i] : "";
    return NULL;
}

/* Expands tmpl into out (when out is non-NULL); -EINVAL naming a bad or unknown variable. */
static int expand(const char *tmpl, const mdm_policy_device_t *dev, mdm_buf_t *out,
                  bool *uses_vars, char *err, size_t errlen)
{
    static const mdm_policy_device_t none = {"", "", "", "", "", "", "", ""};
    *uses_vars = false;
    for (const char *p = tmpl; *p;) {
        if (*p != '{') {
            if (*p == '}') {
                mdm_errf(err, errlen, "settings.DeviceName: '}' without '{'");
                return -EINVAL;
            }
            if (out && mdm_buf_append(out, p, 1) != 0)
                return -ENOMEM;
            p++;
            continue;
        }
        const char *end = strchr(p, '}');
        if (!end) {
            mdm_errf(err, errlen, "settings.DeviceName: '{' without '}'");
            return -EINVAL;
        }
        const char *v = device_var(dev ? dev : &none, p + 1, (size_t)(end - p - 1));
        if (!v) {
            mdm_errf(err, errlen, "settings.DeviceName: unknown variable {%.*s} (known: serial, "
                     "udid, user, user_full_name, model, device_name)", (int)(end - p - 1),
                     p + 1);
            return -EINVAL;
        }
        *uses_vars = true;
        if (out && mdm_buf_append_str(out, v) != 0)
            return -ENOMEM;
        p = end + 1;
    }
    return 0;
}

static int device_name_validate(const mdm_policy_type_t *t, const json_t *s, mdm_spath_t *path,
                                char *err, size_t errlen)
{
    (void)t;
    static const char *const keys[] = {"DeviceName", NULL};
    int ret = mdm_policy_only_keys(s, keys, "device_name", path, err, errlen);
    if (ret != 0)
        return ret;
    const char *tmpl = json_string_value(json_object_get(s, "DeviceName"));
    if (!tmpl || !*tmpl || strlen(tmpl) > NAME_MAX_LEN) {
        mdm_errf(err, errlen, "%s.DeviceName: expected a string of 1 to %d bytes", path->s,
                 NAME_MAX_LEN);
        return -EINVAL;
    }
    bool vars;
    return expand(tmpl, NULL, NULL, &vars, err, errlen);
}

static bool device_name_needs_device(const json_t *s)
{
    const char *tmpl = json_string_value(json_object_get(s, "DeviceName"));
    bool vars = false;
    return tmpl && expand(tmpl, NULL, NULL, &vars, NULL, 0) == 0 && vars;
}

static int device_name_build(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    (void)t;
    mdm_buf_t name;
    mdm_buf_init(&name, 0);
    bool vars;
    plist_t cmd, settings = plist_new_array(), item = plist_new_dict();
    int ret = expand(json_string_value(json_object_get(c->settings, "DeviceName")), c->dev,
                     &name, &vars, c->err, c->errlen);
    if (ret == 0)
        ret = mdm_buf_append(&name, "", 1);
    if (ret == 0 && name.len <= 1) {
        mdm_errf(c->err, c->errlen, "settings.DeviceName: expands to an empty name");
        ret = -EINVAL;
    }
    if (ret == 0 && (!settings || !item))
        ret = -ENOMEM;
    if (ret == 0 && (ret = mdm_plist_dict_set_string(item, "Item", "DeviceName")) == 0 &&
        (ret = mdm_plist_dict_set_string(item, "DeviceName",
                                         (const char *)mdm_buf_head(&name))) == 0) {
        plist_array_append_item(settings, item);
        item = NULL;
        ret = mdm_pctx_add_command(c, "Settings", &cmd);
        if (ret == 0) {
            ret = mdm_plist_dict_set_item(cmd, "Settings", settings);
            settings = NULL;
        }
    }
    plist_free(item);
    plist_free(settings);
    mdm_buf_dispose(&name);
    return ret;
}

const mdm_policy_type_t mdm_policy_t_device_name = {
    .name = "device_name", .title = "Computer name", .validate = device_name_validate,
    .build = device_name_build, .needs_device = device_name_needs_device};

/* ---- OS updates ------------------------------------------------------------------------ */

/* The key list of one ScheduleOSUpdate Updates item, from the command's schema. */
static const mdm_pkey_t *update_item(void)
{
    const mdm_payload_schema_t *s = mdm_command_schema_find("ScheduleOSUpdate");
    const mdm_pkey_t *u = s ? mdm_pkey_find(s->keys, s->n_keys, "Updates") : NULL;
    return u && u->n_sub ? &u->sub[0] : NULL;
}

static int os_update_validate(const mdm_policy_type_t *t, const json_t *s, mdm_spath_t *path,
                              char *err, size_t errlen)
{
    (void)t;
    static const char *const keys[] = {"SoftwareUpdate", "ScheduleOSUpdate", "scan", NULL};
    int ret = mdm_policy_only_keys(s, keys, "os_update", path, err, errlen);
    if (ret != 0)
        return ret;
    const json_t *su = json_object_get(s, "SoftwareUpdate");
    const json_t *sched = json_object_get(s, "ScheduleOSUpdate");
    const json_t *scan = json_object_get(s, "scan");
    if (scan && !json_is_boolean(scan)) {
        mdm_errf(err, errlen, "%s.scan: expected a boolean", path->s);
        return -EINVAL;
    }
    if (!su && !sched && !json_is_true(scan)) {
        mdm_errf(err, errlen, "%s: needs SoftwareUpdate, ScheduleOSUpdate or scan: true",
                 path->s);
        return -EINVAL;
    }
    size_t old = mdm_spath_key(path, "SoftwareUpdate");
    if (su)
        ret = mdm_policy_check_payload("com.apple.SoftwareUpdate", su, NULL, path, err, errlen);
    mdm_spath_pop(path, old);
    const mdm_pkey_t *item = update_item();
    old = mdm_spath_key(path, "ScheduleOSUpdate");
    if (ret == 0 && sched)
        ret = item ? mdm_schema_check_json(item->sub, item->n_sub, sched, "ScheduleOSUpdate",
                                           path, err, errlen)
                   : -EINVAL;
    mdm_spath_pop(path, old);
    return ret;
}

static int os_update_build(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    (void)t;
    const json_t *su = json_object_get(c->settings, "SoftwareUpdate");
    const json_t *sched = json_object_get(c->settings, "ScheduleOSUpdate");
    int ret = 0;
    if (su && (ret = mdm_pctx_profile_begin(c)) == 0)
        ret = mdm_pctx_add_payload(c, "com.apple.SoftwareUpdate", su, NULL, NULL, NULL);
    if (ret == 0 && json_is_true(json_object_get(c->settings, "scan")))
        ret = mdm_pctx_add_command(c, "ScheduleOSUpdateScan", NULL);
    if (ret == 0)
        ret = mdm_pctx_add_command(c, "AvailableOSUpdates", NULL);
    if (ret == 0 && sched) {
        const mdm_pkey_t *item = update_item();
        plist_t cmd, updates = plist_new_array(), d = plist_new_dict();
        ret = mdm_pctx_add_command(c, "ScheduleOSUpdate", &cmd);
        if (ret == 0 && (!updates || !d))
            ret = -ENOMEM;
        if (ret == 0)
            ret = mdm_schema_json_to_plist(item->sub, item->n_sub, sched, d);
        if (ret == 0) {
            plist_array_append_item(updates, d);
            d = NULL;
            ret = mdm_plist_dict_set_item(cmd, "Updates", updates);
            updates = NULL;
        }
        plist_free(d);
        plist_free(updates);
    }
    if (ret == 0)
        ret = mdm_pctx_add_command(c, "OSUpdateStatus", NULL);
    return ret;
}

/* is_profile: the SoftwareUpdate part is a profile; without it the engine sees no profile in
 * the output (profile_xml.len == 0) and removal sends nothing. */
const mdm_policy_type_t mdm_policy_t_os_update = {
    .name = "os_update", .title = "macOS updates", .is_profile = true,
    .validate = os_update_validate, .build = os_update_build};
