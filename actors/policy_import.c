/*
 * import_profile: an administrator's own .mobileconfig, signed (CMS; the signature is only
 * unwrapped, trust is not required since mdmd re-delivers it) or plain XML. Every payload
 * whose type the vendored schema knows is checked against it, unknown types are refused
 * unless allowed, and the profile goes out under the policy's identifier with a fresh UUID.
 */
#include "actors/policy_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cms.h"
#include "core/crypto.h"
#include "core/plist.h"

#define MOBILECONFIG_MAX (8u << 20) /* decoded bytes */
#define PROFILE_DEPTH 64

static int bad(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t errlen, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mdm_errf(err, errlen, "settings.mobileconfig: %s", msg);
    return -EINVAL;
}

/* The settings' profile as a plist dictionary (CMS unwrapped). */
static int parse_profile(const json_t *s, plist_t *out, char *err, size_t errlen)
{
    const char *b64 = json_string_value(json_object_get(s, "mobileconfig"));
    mdm_buf_t raw, inner, signer;
    mdm_buf_init(&raw, MOBILECONFIG_MAX);
    mdm_buf_init(&inner, MOBILECONFIG_MAX);
    mdm_buf_init(&signer, 0);
    int ret = b64 ? mdm_base64_decode(b64, strlen(b64), &raw) : -EINVAL;
    if (ret != 0) {
        ret = ret == -ENOMEM ? ret : bad(err, errlen, "expected base64 of a .mobileconfig");
        goto out;
    }
    const mdm_buf_t *body = &raw;
    /* A signed profile is DER: a SEQUENCE. */
    if (raw.len > 0 && mdm_buf_head(&raw)[0] == 0x30) {
        ret = mdm_cms_verify_attached(mdm_buf_head(&raw), raw.len, &inner, &signer);
        if (ret != 0) {
            ret = ret == -ENOMEM ? ret : bad(err, errlen, "a CMS signature that does not open (%s)",
                                             mdm_strerror(ret));
            goto out;
        }
        body = &inner;
    }
    char why[128] = "";
    ret = mdm_plist_parse_dict(mdm_buf_head(body), body->len, PROFILE_DEPTH, out, why,
                               sizeof(why));
    if (ret != 0)
        ret = ret == -ENOMEM ? ret : bad(err, errlen, "not a property list: %s", why);
out:
    mdm_buf_dispose(&raw);
    mdm_buf_dispose(&inner);
    mdm_buf_dispose(&signer);
    return ret;
}

/* One payload: its type's keys plus the common ones. */
static int check_payload(plist_t d, bool allow_unknown, mdm_spath_t *path, char *err,
                         size_t errlen)
{
    const char *type = NULL;
    if (plist_get_node_type(d) != PLIST_DICT)
        return bad(err, errlen, "%s: not a dictionary", path->s);
    if (mdm_plist_get_string(d, "PayloadType", &type) != 0)
        return bad(err, errlen, "%s.PayloadType: missing or not a string", path->s);
    const mdm_payload_schema_t *s = mdm_payload_schema_find(type);
    const mdm_payload_schema_t *common = mdm_payload_schema_find("CommonPayloadKeys");
    if (!s || strcmp(type, "TopLevel") == 0 || strcmp(type, "CommonPayloadKeys") == 0) {
        if (allow_unknown)
            return 0;
        return bad(err, errlen, "%s.PayloadType: '%s' is not a payload type mdmd knows "
                   "(set allow_unknown_payloads to send it anyway)", path->s, type);
    }
    unsigned n = s->n_keys + common->n_keys;
    mdm_pkey_t *keys = calloc(n, sizeof(*keys));
    if (!keys)
        return -ENOMEM;
    memcpy(keys, s->keys, s->n_keys * sizeof(*keys));
    memcpy(keys + s->n_keys, common->keys, common->n_keys * sizeof(*keys));
    char why[384] = "";
    int ret = mdm_schema_check_plist(keys, n, d, type, path, why, sizeof(why));
    free(keys);
    return ret == -EINVAL ? bad(err, errlen, "%s", why) : ret;
}

/* The parsed, checked profile. */
static int load_checked(const json_t *s, plist_t *out, char *err, size_t errlen)
{
    plist_t p = NULL;
    int ret = parse_profile(s, &p, err, errlen);
    if (ret != 0)
        return ret;
    const mdm_payload_schema_t *top = mdm_payload_schema_find("TopLevel");
    const char *type = NULL;
    plist_t content = NULL;
    mdm_spath_t path;
    mdm_spath_init(&path, "");
    char why[384] = "";
    bool allow = json_is_true(json_object_get(s, "allow_unknown_payloads"));
    if (mdm_plist_get_string(p, "PayloadType", &type) != 0 || strcmp(type, "Configuration"))
        ret = bad(err, errlen, "PayloadType: not a Configuration profile");
    else if (mdm_plist_get_array(p, "PayloadContent", &content) != 0)
        ret = bad(err, errlen, "PayloadContent: missing (encrypted profiles are not supported)");
    else if ((ret = mdm_schema_check_plist(top->keys, top->n_keys, p, "a profile", &path, why,
                                           sizeof(why))) != 0)
        ret = ret == -EINVAL ? bad(err, errlen, "%s", why) : ret;
    for (uint32_t i = 0; ret == 0 && i < plist_array_get_size(content); i++) {
        mdm_spath_init(&path, "PayloadContent");
        mdm_spath_index(&path, i);
        ret = check_payload(plist_array_get_item(content, i), allow, &path, err, errlen);
    }
    if (ret != 0) {
        plist_free(p);
        return ret;
    }
    *out = p;
    return 0;
}

static int import_validate(const mdm_policy_type_t *t, const json_t *s, mdm_spath_t *path,
                           char *err, size_t errlen)
{
    (void)t;
    static const char *const keys[] = {"mobileconfig", "allow_unknown_payloads", NULL};
    int ret = mdm_policy_only_keys(s, keys, "import_profile", path, err, errlen);
    if (ret != 0)
        return ret;
    const json_t *a = json_object_get(s, "allow_unknown_payloads");
    if (a && !json_is_boolean(a)) {
        mdm_errf(err, errlen, "%s.allow_unknown_payloads: expected a boolean", path->s);
        return -EINVAL;
    }
    if (!json_is_string(json_object_get(s, "mobileconfig"))) {
        mdm_errf(err, errlen, "%s.mobileconfig: required (base64 of a .mobileconfig)", path->s);
        return -EINVAL;
    }
    plist_t p = NULL;
    ret = load_checked(s, &p, err, errlen);
    plist_free(p);
    return ret;
}

static int import_build(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    (void)t;
    plist_t p = NULL;
    char uuid[MDM_UUID_LEN + 1];
    int ret = load_checked(c->settings, &p, c->err, c->errlen);
    if (ret == 0)
        ret = mdm_uuid_v4(uuid);
    if (ret == 0)
        ret = mdm_plist_dict_set_string(p, "PayloadIdentifier",
                                        c->meta->profile_identifier ? c->meta->profile_identifier
                                                                    : "");
    if (ret == 0)
        ret = mdm_plist_dict_set_string(p, "PayloadUUID", uuid);
    if (ret == 0)
        ret = mdm_plist_to_xml(p, &c->out->profile_xml);
    plist_free(p);
    return ret;
}

const mdm_policy_type_t mdm_policy_t_import_profile = {
    .name = "import_profile", .title = "Imported profile", .is_profile = true,
    .validate = import_validate, .build = import_build};
