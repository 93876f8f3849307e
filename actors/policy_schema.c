/*
 * policy_schema: settings and payloads checked against Apple's schema tables (see the header).
 *
 * The JSON and plist checkers walk the same tables with the same rules; they differ only in
 * how a value's type is read, so the per-rule helpers (range, rangelist, format) are shared.
 */
#include "actors/policy_schema.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cms.h"
#include "core/x509.h"

/* Seconds from the Unix epoch to the plist epoch (2001-01-01T00:00:00Z). */
#define PLIST_EPOCH 978307200

/* ---- table lookup ---------------------------------------------------------------------- */

static const mdm_payload_schema_t *schema_find(const char *type, bool command)
{
    if (!type)
        return NULL;
    for (size_t i = 0; i < mdm_payload_schemas_count; i++)
        if (mdm_payload_schemas[i].is_command == command &&
            strcmp(mdm_payload_schemas[i].type, type) == 0)
            return &mdm_payload_schemas[i];
    return NULL;
}

const mdm_payload_schema_t *mdm_payload_schema_find(const char *payload_type)
{
    return schema_find(payload_type, false);
}

const mdm_payload_schema_t *mdm_command_schema_find(const char *request_type)
{
    return schema_find(request_type, true);
}

const mdm_pkey_t *mdm_pkey_find(const mdm_pkey_t *keys, unsigned n, const char *name)
{
    const mdm_pkey_t *any = NULL;
    for (unsigned i = 0; i < n; i++) {
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
        if (strcmp(keys[i].name, MDM_PKEY_ANY) == 0)
            any = &keys[i];
    }
    return any;
}

const char *mdm_ptype_name(enum mdm_ptype t)
{
    static const char *const names[] = {"a string",  "a boolean",   "an integer",
                                        "a number",  "base64 data", "an ISO-8601 date",
                                        "an object", "an array",    "any value"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

/* ---- paths ----------------------------------------------------------------------------- */

void mdm_spath_init(mdm_spath_t *p, const char *root)
{
    snprintf(p->s, sizeof(p->s), "%s", root);
    p->len = strlen(p->s);
}

size_t mdm_spath_key(mdm_spath_t *p, const char *key)
{
    size_t old = p->len;
    int n = snprintf(p->s + old, sizeof(p->s) - old, "%s%s", old ? "." : "", key);
    p->len = n < 0 ? old : (old + (size_t)n >= sizeof(p->s) ? sizeof(p->s) - 1 : old + (size_t)n);
    return old;
}

size_t mdm_spath_index(mdm_spath_t *p, size_t i)
{
    size_t old = p->len;
    int n = snprintf(p->s + old, sizeof(p->s) - old, "[%zu]", i);
    p->len = n < 0 ? old : (old + (size_t)n >= sizeof(p->s) ? sizeof(p->s) - 1 : old + (size_t)n);
    return old;
}

/* ---- shared rules ---------------------------------------------------------------------- */

static int fail(char *err, size_t errlen, const mdm_spath_t *p, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, const mdm_spath_t *p, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    mdm_errf(err, errlen, "%s: %s", p->s, why);
    return -EINVAL;
}

/* Strings end up in XML 1.0, which has no place for most control characters. */
static int check_text(const char *s, const mdm_spath_t *p, char *err, size_t errlen)
{
    for (const unsigned char *c = (const unsigned char *)s; *c; c++)
        if ((*c < 0x20 && *c != '\t' && *c != '\n' && *c != '\r') || *c == 0x7f)
            return fail(err, errlen, p, "control character not allowed");
    return 0;
}

static int check_string_rules(const mdm_pkey_t *k, const char *s, const mdm_spath_t *p,
                              char *err, size_t errlen)
{
    int ret = check_text(s, p, err, errlen);
    if (ret != 0)
        return ret;
    if (k->rangelist_str) {
        bool ok = false;
        char list[256] = "";
        for (unsigned i = 0; i < k->n_rangelist; i++) {
            ok = ok || strcmp(s, k->rangelist_str[i]) == 0;
            size_t used = strlen(list);
            if (used < sizeof(list) - 1)
                snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "",
                         k->rangelist_str[i]);
        }
        if (!ok)
            return fail(err, errlen, p, "'%s' is not one of %s", s, list);
    }
    if (k->format) {
        regex_t re;
        if (regcomp(&re, k->format, REG_EXTENDED | REG_NOSUB) != 0)
            return fail(err, errlen, p, "bad format in schema");
        int m = regexec(&re, s, 0, NULL, 0);
        regfree(&re);
        if (m != 0)
            return fail(err, errlen, p, "'%s' does not match %s", s, k->format);
    }
    return 0;
}

static int check_number_rules(const mdm_pkey_t *k, double v, const mdm_spath_t *p, char *err,
                              size_t errlen)
{
    if (k->has_min && v < k->min)
        return fail(err, errlen, p, "%g is below the minimum %g", v, k->min);
    if (k->has_max && v > k->max)
        return fail(err, errlen, p, "%g is above the maximum %g", v, k->max);
    if (k->rangelist_int || k->rangelist_real) {
        char list[256] = "";
        bool ok = false;
        for (unsigned i = 0; i < k->n_rangelist; i++) {
            double r = k->rangelist_int ? (double)k->rangelist_int[i] : k->rangelist_real[i];
            ok = ok || r == v;
            size_t used = strlen(list);
            if (used < sizeof(list) - 1)
                snprintf(list + used, sizeof(list) - used, "%s%g", i ? ", " : "", r);
        }
        if (!ok)
            return fail(err, errlen, p, "%g is not one of %s", v, list);
    }
    return 0;
}

/* For an array with several item forms (the Settings command), the form whose "Item" key
 * allows the value's Item; otherwise the first form. */
static const mdm_pkey_t *item_form(const mdm_pkey_t *k, const char *item)
{
    if (k->n_sub <= 1 || !item)
        return k->n_sub ? &k->sub[0] : NULL;
    for (unsigned i = 0; i < k->n_sub; i++) {
        const mdm_pkey_t *f = &k->sub[i];
        const mdm_pkey_t *ik = mdm_pkey_find(f->sub, f->n_sub, "Item");
        if (ik && ik->rangelist_str && ik->n_rangelist == 1 &&
            strcmp(ik->rangelist_str[0], item) == 0)
            return f;
    }
    return &k->sub[0];
}

static int check_repetition(const mdm_pkey_t *form, size_t n, const mdm_spath_t *p, char *err,
                            size_t errlen)
{
    if (form && form->rep_min && n < (size_t)form->rep_min)
        return fail(err, errlen, p, "needs at least %d items", form->rep_min);
    if (form && form->rep_max && n > (size_t)form->rep_max)
        return fail(err, errlen, p, "holds at most %d items", form->rep_max);
    return 0;
}

/* ---- dates and data -------------------------------------------------------------------- */

int mdm_schema_parse_date(const char *s, int64_t *out)
{
    int y, mo, d, h, mi, sec, n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
        return -EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || y < 1970)
        return -EINVAL;
    const char *t = s + 19;
    if (*t == '.') /* fractions of a second: dropped (plist dates hold seconds here) */
        for (t++; *t >= '0' && *t <= '9'; t++)
            ;
    long off = 0;
    if (*t == 'Z') {
        t++;
    } else if ((*t == '+' || *t == '-') && strlen(t) == 6 && t[3] == ':') {
        int oh, om;
        if (sscanf(t + 1, "%2d:%2d", &oh, &om) != 2 || oh > 23 || om > 59)
            return -EINVAL;
        off = (*t == '+' ? 1 : -1) * (oh * 3600L + om * 60L);
        t += 6;
    } else {
        return -EINVAL;
    }
    if (*t != '\0')
        return -EINVAL;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                    .tm_min = mi, .tm_sec = sec};
    time_t u = timegm(&tm);
    if (u == (time_t)-1 || tm.tm_mday != d) /* 2025-02-30 normalises to March */
        return -EINVAL;
    *out = (int64_t)u - off;
    return 0;
}

#define PEM_CERT "-----BEGIN CERTIFICATE-----"

int mdm_schema_decode_data(const char *s, mdm_buf_t *out)
{
    size_t len = strlen(s);
    if (strncmp(s, PEM_CERT, strlen(PEM_CERT)) == 0) {
        uint8_t *der = NULL;
        size_t der_len = 0;
        int ret = mdm_x509_pem_to_der(s, len, false, &der, &der_len);
        if (ret != 0)
            return ret == -ENOMEM ? ret : -EINVAL;
        ret = mdm_buf_append(out, der, der_len);
        free(der);
        return ret;
    }
    return mdm_base64_decode(s, len, out);
}

/* ---- JSON checks ----------------------------------------------------------------------- */

static int check_json_value(const mdm_pkey_t *k, const json_t *v, mdm_spath_t *p, char *err,
                            size_t errlen);

static int check_json_array(const mdm_pkey_t *k, const json_t *v, mdm_spath_t *p, char *err,
                            size_t errlen)
{
    size_t i;
    const json_t *item;
    if (k->n_sub == 0)
        return 0;
    int ret = check_repetition(&k->sub[0], json_array_size(v), p, err, errlen);
    json_array_foreach(v, i, item) {
        if (ret != 0)
            return ret;
        const json_t *it = json_is_object(item) ? json_object_get(item, "Item") : NULL;
        const mdm_pkey_t *form = item_form(k, json_string_value(it));
        size_t old = mdm_spath_index(p, i);
        ret = check_json_value(form, item, p, err, errlen);
        mdm_spath_pop(p, old);
    }
    return ret;
}

static int check_json_value(const mdm_pkey_t *k, const json_t *v, mdm_spath_t *p, char *err,
                            size_t errlen)
{
    switch (k->type) {
    case MDM_PT_STRING:
        if (!json_is_string(v))
            break;
        return check_string_rules(k, json_string_value(v), p, err, errlen);
    case MDM_PT_BOOL:
        if (!json_is_boolean(v))
            break;
        return 0;
    case MDM_PT_INT:
        if (!json_is_integer(v))
            break;
        return check_number_rules(k, (double)json_integer_value(v), p, err, errlen);
    case MDM_PT_REAL:
        if (!json_is_number(v))
            break;
        return check_number_rules(k, json_number_value(v), p, err, errlen);
    case MDM_PT_DATA: {
        if (!json_is_string(v))
            break;
        mdm_buf_t b;
        mdm_buf_init(&b, 0);
        int ret = mdm_schema_decode_data(json_string_value(v), &b);
        mdm_buf_dispose(&b);
        if (ret == -ENOMEM)
            return ret;
        return ret ? fail(err, errlen, p, "not valid base64 (or PEM certificate)") : 0;
    }
    case MDM_PT_DATE: {
        int64_t t;
        if (!json_is_string(v))
            break;
        if (mdm_schema_parse_date(json_string_value(v), &t) != 0)
            return fail(err, errlen, p, "'%s' is not an ISO-8601 date (2025-01-31T12:00:00Z)",
                        json_string_value(v));
        return 0;
    }
    case MDM_PT_DICT:
        if (!json_is_object(v))
            break;
        return k->n_sub ? mdm_schema_check_json(k->sub, k->n_sub, v, k->name, p, err, errlen)
                        : 0;
    case MDM_PT_ARRAY:
        if (!json_is_array(v))
            break;
        return check_json_array(k, v, p, err, errlen);
    case MDM_PT_ANY:
        return 0;
    }
    return fail(err, errlen, p, "expected %s", mdm_ptype_name(k->type));
}

int mdm_schema_check_json(const mdm_pkey_t *keys, unsigned n, const json_t *obj,
                          const char *owner, mdm_spath_t *path, char *err, size_t errlen)
{
    const char *name;
    const json_t *v;
    if (!json_is_object(obj))
        return fail(err, errlen, path, "expected an object");
    json_object_foreach((json_t *)obj, name, v) {
        const mdm_pkey_t *k = mdm_pkey_find(keys, n, name);
        size_t old = mdm_spath_key(path, name);
        int ret = k ? check_json_value(k, v, path, err, errlen)
                    : fail(err, errlen, path, "unknown key for %s", owner);
        mdm_spath_pop(path, old);
        if (ret != 0)
            return ret;
    }
    for (unsigned i = 0; i < n; i++) {
        if (!keys[i].required || strcmp(keys[i].name, MDM_PKEY_ANY) == 0 ||
            json_object_get(obj, keys[i].name))
            continue;
        size_t old = mdm_spath_key(path, keys[i].name);
        int ret = fail(err, errlen, path, "required by %s", owner);
        mdm_spath_pop(path, old);
        return ret;
    }
    return 0;
}

/* ---- plist checks ---------------------------------------------------------------------- */

static int check_plist_value(const mdm_pkey_t *k, plist_t v, mdm_spath_t *p, char *err,
                             size_t errlen);

static int check_plist_array(const mdm_pkey_t *k, plist_t v, mdm_spath_t *p, char *err,
                             size_t errlen)
{
    uint32_t n = plist_array_get_size(v);
    if (k->n_sub == 0)
        return 0;
    int ret = check_repetition(&k->sub[0], n, p, err, errlen);
    for (uint32_t i = 0; i < n && ret == 0; i++) {
        plist_t item = plist_array_get_item(v, i);
        char *itemname = NULL;
        plist_t it = plist_get_node_type(item) == PLIST_DICT ? plist_dict_get_item(item, "Item")
                                                            : NULL;
        if (it && plist_get_node_type(it) == PLIST_STRING)
            plist_get_string_val(it, &itemname);
        const mdm_pkey_t *form = item_form(k, itemname);
        free(itemname);
        size_t old = mdm_spath_index(p, i);
        ret = check_plist_value(form, item, p, err, errlen);
        mdm_spath_pop(p, old);
    }
    return ret;
}

static int check_plist_string(const mdm_pkey_t *k, plist_t v, mdm_spath_t *p, char *err,
                              size_t errlen)
{
    char *s = NULL;
    plist_get_string_val(v, &s);
    if (!s)
        return -ENOMEM;
    int ret = check_string_rules(k, s, p, err, errlen);
    free(s);
    return ret;
}

static int check_plist_value(const mdm_pkey_t *k, plist_t v, mdm_spath_t *p, char *err,
                             size_t errlen)
{
    plist_type t = plist_get_node_type(v);
    switch (k->type) {
    case MDM_PT_STRING:
        return t == PLIST_STRING ? check_plist_string(k, v, p, err, errlen)
                                 : fail(err, errlen, p, "expected a string");
    case MDM_PT_BOOL:
        return t == PLIST_BOOLEAN ? 0 : fail(err, errlen, p, "expected a boolean");
    case MDM_PT_INT: {
        uint64_t u = 0;
        if (t != PLIST_UINT)
            return fail(err, errlen, p, "expected an integer");
        plist_get_uint_val(v, &u);
        return check_number_rules(k, (double)(int64_t)u, p, err, errlen);
    }
    case MDM_PT_REAL: {
        double d = 0;
        uint64_t u = 0;
        if (t == PLIST_UINT)
            plist_get_uint_val(v, &u), d = (double)(int64_t)u;
        else if (t == PLIST_REAL)
            plist_get_real_val(v, &d);
        else
            return fail(err, errlen, p, "expected a real");
        return check_number_rules(k, d, p, err, errlen);
    }
    case MDM_PT_DATA:
        return t == PLIST_DATA ? 0 : fail(err, errlen, p, "expected data");
    case MDM_PT_DATE:
        return t == PLIST_DATE ? 0 : fail(err, errlen, p, "expected a date");
    case MDM_PT_DICT:
        if (t != PLIST_DICT)
            return fail(err, errlen, p, "expected a dictionary");
        return k->n_sub ? mdm_schema_check_plist(k->sub, k->n_sub, v, k->name, p, err, errlen)
                        : 0;
    case MDM_PT_ARRAY:
        return t == PLIST_ARRAY ? check_plist_array(k, v, p, err, errlen)
                                : fail(err, errlen, p, "expected an array");
    case MDM_PT_ANY:
        return 0;
    }
    return fail(err, errlen, p, "unknown schema type");
}

int mdm_schema_check_plist(const mdm_pkey_t *keys, unsigned n, plist_t dict, const char *owner,
                           mdm_spath_t *path, char *err, size_t errlen)
{
    plist_dict_iter it = NULL;
    plist_dict_new_iter(dict, &it);
    if (!it)
        return -ENOMEM;
    int ret = 0;
    for (;;) {
        char *name = NULL;
        plist_t v = NULL;
        plist_dict_next_item(dict, it, &name, &v);
        if (!name)
            break;
        const mdm_pkey_t *k = mdm_pkey_find(keys, n, name);
        size_t old = mdm_spath_key(path, name);
        ret = k ? check_plist_value(k, v, path, err, errlen)
                : fail(err, errlen, path, "unknown key for %s", owner);
        mdm_spath_pop(path, old);
        free(name);
        if (ret != 0)
            break;
    }
    free(it);
    for (unsigned i = 0; i < n && ret == 0; i++) {
        if (!keys[i].required || strcmp(keys[i].name, MDM_PKEY_ANY) == 0 ||
            plist_dict_get_item(dict, keys[i].name))
            continue;
        size_t old = mdm_spath_key(path, keys[i].name);
        ret = fail(err, errlen, path, "required by %s", owner);
        mdm_spath_pop(path, old);
    }
    return ret;
}

/* ---- conversion ------------------------------------------------------------------------ */

static plist_t to_plist(const mdm_pkey_t *k, const json_t *v);

static plist_t data_node(const char *s)
{
    mdm_buf_t b;
    mdm_buf_init(&b, 0);
    plist_t node = NULL;
    if (mdm_schema_decode_data(s, &b) == 0)
        node = plist_new_data((const char *)mdm_buf_head(&b), b.len);
    mdm_buf_dispose(&b);
    return node;
}

static plist_t date_node(const char *s)
{
    int64_t t;
    if (mdm_schema_parse_date(s, &t) != 0)
        return NULL;
    return plist_new_date((int32_t)(t - PLIST_EPOCH), 0);
}

static plist_t array_node(const mdm_pkey_t *k, const json_t *v)
{
    plist_t a = plist_new_array();
    size_t i;
    const json_t *item;
    json_array_foreach(v, i, item) {
        const json_t *it = json_is_object(item) ? json_object_get(item, "Item") : NULL;
        plist_t node = to_plist(k ? item_form(k, json_string_value(it)) : NULL, item);
        if (!a || !node) {
            plist_free(node);
            plist_free(a);
            return NULL;
        }
        plist_array_append_item(a, node);
    }
    return a;
}

static plist_t dict_node(const mdm_pkey_t *k, const json_t *v)
{
    plist_t d = plist_new_dict();
    if (d && mdm_schema_json_to_plist(k ? k->sub : NULL, k ? k->n_sub : 0, v, d) != 0) {
        plist_free(d);
        return NULL;
    }
    return d;
}

/* By JSON type alone (keys typed "any", or dictionaries without a key list). */
static plist_t generic_node(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return plist_new_string(json_string_value(v));
    case JSON_INTEGER:
        return plist_new_uint((uint64_t)json_integer_value(v));
    case JSON_REAL:
        return plist_new_real(json_real_value(v));
    case JSON_TRUE:
    case JSON_FALSE:
        return plist_new_bool(json_is_true(v));
    case JSON_OBJECT:
        return dict_node(NULL, v);
    case JSON_ARRAY:
        return array_node(NULL, v);
    case JSON_NULL:
        break;
    }
    return NULL;
}

static plist_t to_plist(const mdm_pkey_t *k, const json_t *v)
{
    switch (k ? k->type : MDM_PT_ANY) {
    case MDM_PT_STRING:
        return json_is_string(v) ? plist_new_string(json_string_value(v)) : NULL;
    case MDM_PT_BOOL:
        return json_is_boolean(v) ? plist_new_bool(json_is_true(v)) : NULL;
    case MDM_PT_INT:
        return json_is_integer(v) ? plist_new_uint((uint64_t)json_integer_value(v)) : NULL;
    case MDM_PT_REAL:
        return json_is_number(v) ? plist_new_real(json_number_value(v)) : NULL;
    case MDM_PT_DATA:
        return json_is_string(v) ? data_node(json_string_value(v)) : NULL;
    case MDM_PT_DATE:
        return json_is_string(v) ? date_node(json_string_value(v)) : NULL;
    case MDM_PT_DICT:
        return json_is_object(v) ? dict_node(k->n_sub ? k : NULL, v) : NULL;
    case MDM_PT_ARRAY:
        return json_is_array(v) ? array_node(k->n_sub ? k : NULL, v) : NULL;
    case MDM_PT_ANY:
        return generic_node(v);
    }
    return NULL;
}

int mdm_schema_json_to_plist(const mdm_pkey_t *keys, unsigned n, const json_t *obj,
                             plist_t dict)
{
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)obj, name, v) {
        const mdm_pkey_t *k = keys ? mdm_pkey_find(keys, n, name) : NULL;
        plist_t node = to_plist(k, v);
        if (!node)
            return -EINVAL;
        plist_dict_set_item(dict, name, node);
    }
    return 0;
}

/* ---- secrets --------------------------------------------------------------------------- */

/* Every key of the vendored schemas whose string value is a password, a shared secret or a
 * one-time challenge (grep the YAML for Password|Secret|Challenge|PIN). Booleans with such
 * names (OneTimeUserPassword) are not secrets: only string values are taken. "mobileconfig"
 * (import_profile) is sealed whole: an uploaded profile may hold any of these inside. */
static const char *const secret_keys[] = {
    "Password",          "AuthPassword",       "CalDAVPassword",  "CardDAVPassword",
    "Challenge",         "HTTPProxyPassword",  "IncomingPassword", "LDAPAccountPassword",
    "OutgoingPassword",  "ProxyPassword",      "SharedSecret",    "UserPassword",
    "XAuthPassword",     "PayloadCertificatePassword", "PIN",      "Passphrase",
    "mobileconfig",
};

bool mdm_schema_is_secret_key(const char *key)
{
    for (size_t i = 0; i < sizeof(secret_keys) / sizeof(secret_keys[0]); i++)
        if (strcmp(key, secret_keys[i]) == 0)
            return true;
    return false;
}
