/*
 * Policy types that need more than the schema: certificates (credentials) are parsed, fonts
 * and web-clip icons must be what they claim, FileVault brings its escrow payloads, SCEP can
 * point at mdmd's own CA.
 */
#include "actors/policy_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cms.h"
#include "core/plist.h"
#include "core/x509.h"

/* Decodes the data string settings.key into b; the schema check ran before. */
static int get_data(const json_t *s, const char *key, mdm_buf_t *b)
{
    const char *v = json_string_value(json_object_get(s, key));
    return v ? mdm_schema_decode_data(v, b) : MDM_ENOTFOUND;
}

/* ---- credentials ----------------------------------------------------------------------- */

static const char *const cred_types[] = {
    "com.apple.security.root", "com.apple.security.pkcs1", "com.apple.security.pem",
    "com.apple.security.pkcs12", NULL,
};

/* A PKCS#12 file opens with the password; without one, it must at least be PKCS#12 (the
 * user types the password at install). */
static int check_pkcs12(const mdm_buf_t *b, const char *password, mdm_spath_t *path, char *err,
                        size_t errlen)
{
    uint8_t *cert = NULL, *key = NULL;
    size_t cert_len = 0, key_len = 0;
    int ret = mdm_x509_pkcs12_parse(mdm_buf_head(b), b->len, password ? password : "", &cert,
                                    &cert_len, &key, &key_len);
    free(cert);
    mdm_free_wiped(key, key_len);
    if (ret == -ENOMEM)
        return ret;
    if (ret == -EBADMSG) {
        mdm_errf(err, errlen, "%s.PayloadContent: not a PKCS#12 file", path->s);
        return -EINVAL;
    }
    if (ret == MDM_ECRYPTO && password) {
        mdm_errf(err, errlen, "%s.Password: does not open the PKCS#12 file", path->s);
        return -EINVAL;
    }
    if (ret == MDM_ENOTFOUND) {
        mdm_errf(err, errlen, "%s.PayloadContent: PKCS#12 without certificate and key", path->s);
        return -EINVAL;
    }
    return 0;
}

static int credentials_validate(const mdm_policy_type_t *t, const json_t *s, mdm_spath_t *path,
                                char *err, size_t errlen)
{
    (void)t;
    const char *type;
    int ret = mdm_policy_check_selected(s, cred_types, path, err, errlen, &type);
    if (ret != 0)
        return ret;
    if (!json_object_get(s, "PayloadType")) {
        mdm_errf(err, errlen, "%s.PayloadType: required (one of com.apple.security.root, "
                 "pkcs1, pem, pkcs12)", path->s);
        return -EINVAL;
    }
    mdm_buf_t b;
    mdm_buf_init(&b, 0);
    ret = get_data(s, "PayloadContent", &b);
    if (ret == MDM_ENOTFOUND) {
        mdm_errf(err, errlen, "%s.PayloadContent: required (the certificate)", path->s);
        ret = -EINVAL;
    } else if (ret == 0 && strcmp(type, "com.apple.security.pkcs12") == 0) {
        ret = check_pkcs12(&b, json_string_value(json_object_get(s, "Password")), path, err,
                           errlen);
    } else if (ret == 0) {
        mdm_x509_info_t info;
        if (mdm_x509_inspect_der(mdm_buf_head(&b), b.len, &info) != 0) {
            mdm_errf(err, errlen, "%s.PayloadContent: not an X.509 certificate", path->s);
            ret = -EINVAL;
        }
    }
    mdm_buf_dispose(&b);
    return ret;
}

/* com.apple.security.pem holds PEM text; the settings may have given DER. */
static int set_pem(plist_t payload, const mdm_buf_t *der)
{
    mdm_buf_t b64, pem;
    mdm_buf_init(&b64, 0);
    mdm_buf_init(&pem, 0);
    int ret = mdm_base64_encode(mdm_buf_head(der), der->len, &b64);
    if (ret == 0)
        ret = mdm_buf_append_str(&pem, "-----BEGIN CERTIFICATE-----\n");
    for (size_t off = 0; ret == 0 && off < b64.len; off += 64) {
        size_t n = b64.len - off < 64 ? b64.len - off : 64;
        if ((ret = mdm_buf_append(&pem, mdm_buf_head(&b64) + off, n)) == 0)
            ret = mdm_buf_append_str(&pem, "\n");
    }
    if (ret == 0)
        ret = mdm_buf_append_str(&pem, "-----END CERTIFICATE-----\n");
    if (ret == 0)
        ret = mdm_plist_dict_set_data(payload, "PayloadContent", mdm_buf_head(&pem), pem.len);
    mdm_buf_dispose(&b64);
    mdm_buf_dispose(&pem);
    return ret;
}

static int credentials_build(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    (void)t;
    const char *type = json_string_value(json_object_get(c->settings, "PayloadType"));
    plist_t payload;
    int ret = mdm_pctx_profile_begin(c);
    if (ret == 0)
        ret = mdm_pctx_add_payload(c, type, c->settings, "PayloadType", &payload, NULL);
    if (ret == 0 && strcmp(type, "com.apple.security.pem") == 0) {
        mdm_buf_t der;
        mdm_buf_init(&der, 0);
        ret = get_data(c->settings, "PayloadContent", &der);
        if (ret == 0)
            ret = set_pem(payload, &der);
        mdm_buf_dispose(&der);
    }
    return ret;
}

const mdm_policy_type_t mdm_policy_t_credentials = {
    .name = "credentials", .title = "Certificate", .is_profile = true,
    .validate = credentials_validate, .build = credentials_build};

/* ---- font and web clip: the data is what it claims ------------------------------------- */

static bool font_magic(const mdm_buf_t *b)
{
    static const char *const magic[] = {"\x00\x01\x00\x00", "OTTO", "true", "ttcf"};
    for (size_t i = 0; i < sizeof(magic) / sizeof(magic[0]); i++)
        if (b->len >= 4 && memcmp(mdm_buf_head(b), magic[i], 4) == 0)
            return true;
    return false;
}

static bool png_magic(const mdm_buf_t *b)
{
    return b->len >= 8 && memcmp(mdm_buf_head(b), "\x89PNG\r\n\x1a\n", 8) == 0;
}

/* The payload's schema, then the data at key must pass magic (absent: fine). */
static int check_magic(const char *ptype, const json_t *s, const char *key,
                       bool (*magic)(const mdm_buf_t *), const char *what, mdm_spath_t *path,
                       char *err, size_t errlen)
{
    int ret = mdm_policy_check_payload(ptype, s, NULL, path, err, errlen);
    if (ret != 0)
        return ret;
    mdm_buf_t b;
    mdm_buf_init(&b, 0);
    ret = get_data(s, key, &b);
    if (ret == 0 && !magic(&b)) {
        mdm_errf(err, errlen, "%s.%s: not %s", path->s, key, what);
        ret = -EINVAL;
    }
    mdm_buf_dispose(&b);
    return ret == MDM_ENOTFOUND ? 0 : ret;
}

static int font_validate(const mdm_policy_type_t *t, const json_t *s, mdm_spath_t *path,
                         char *err, size_t errlen)
{
    (void)t;
    return check_magic("com.apple.font", s, "Font", font_magic, "a TrueType or OpenType font",
                       path, err, errlen);
}

const mdm_policy_type_t mdm_policy_t_font = {.name = "font", .title = "Font",
                                             .is_profile = true,
                                             .payload_type = "com.apple.font",
                                             .validate = font_validate};

static int webclip_validate(const mdm_policy_type_t *t, const json_t *s, mdm_spath_t *path,
                            char *err, size_t errlen)
{
    (void)t;
    return check_magic("com.apple.webClip.managed", s, "Icon", png_magic, "a PNG image", path,
                       err, errlen);
}

const mdm_policy_type_t mdm_policy_t_webclip = {.name = "webclip", .title = "Web clip",
                                                .is_profile = true,
                                                .payload_type = "com.apple.webClip.managed",
                                                .validate = webclip_validate};

/* ---- FileVault ------------------------------------------------------------------------- */

#define FV2 "com.apple.MCX.FileVault2"

static int fv_fail(char *err, size_t errlen, const mdm_spath_t *p, const char *msg)
{
    mdm_errf(err, errlen, "%s.%s", p->s, msg);
    return -EINVAL;
}

/* The rules the FileVault2 schema states in prose. */
static int filevault_validate(const mdm_policy_type_t *t, const json_t *s, mdm_spath_t *path,
                              char *err, size_t errlen)
{
    (void)t;
    int ret = mdm_policy_check_payload(FV2, s, NULL, path, err, errlen);
    if (ret != 0)
        return ret;
    bool on = strcmp(json_string_value(json_object_get(s, "Enable")), "On") == 0;
    bool defer = json_is_true(json_object_get(s, "Defer"));
    bool user = json_object_get(s, "Username") != NULL;
    bool pass = json_object_get(s, "Password") != NULL;
    bool prompt = json_is_true(json_object_get(s, "UserEntersMissingInfo"));
    /* "Payloads set to 'On' sent through MDM need to either include full authentication
     * information in the payload or have the 'Defer' option set to 'true'." */
    if (on && !defer && !(user && (pass || prompt)))
        return fv_fail(err, errlen, path, "Defer: Enable 'On' needs Defer true, or Username "
                       "and Password (or UserEntersMissingInfo)");
    if (!defer && (json_object_get(s, "DeferForceAtUserLoginMaxBypassAttempts") ||
                   json_object_get(s, "DeferDontAskAtUserLogout")))
        return fv_fail(err, errlen, path, "Defer: the Defer* options need Defer true");
    /* mdmd escrows the personal recovery key, so there must be one. */
    const json_t *prk = json_object_get(s, "UseRecoveryKey");
    if (prk && !json_is_true(prk))
        return fv_fail(err, errlen, path, "UseRecoveryKey: must be true (mdmd escrows the "
                       "personal recovery key)");
    /* The payload UUIDs inside the profile are mdmd's. */
    if (json_object_get(s, "PayloadCertificateUUID"))
        return fv_fail(err, errlen, path, "PayloadCertificateUUID: set by mdmd, not allowed "
                       "in settings");
    if (json_object_get(s, "Certificate") && json_object_get(s, "UseKeychain"))
        return fv_fail(err, errlen, path, "UseKeychain: not together with Certificate");
    return 0;
}

static int filevault_build(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    (void)t;
    const mdm_policy_env_t *e = c->env;
    const char *location = e->escrow_location && *e->escrow_location ? e->escrow_location
                                                                     : e->organization;
    if (!e->escrow_cert_der || e->escrow_cert_der_len == 0 || !location || !*location) {
        mdm_errf(c->err, c->errlen, "filevault: no escrow certificate or location configured");
        return -EINVAL;
    }
    char cert_uuid[MDM_UUID_LEN + 1];
    plist_t cert, escrow;
    int ret = mdm_pctx_profile_begin(c);
    if (ret == 0)
        ret = mdm_pctx_add_payload(c, FV2, c->settings, NULL, NULL, NULL);
    if (ret == 0)
        ret = mdm_pctx_add_payload(c, "com.apple.security.pkcs1", NULL, NULL, &cert, cert_uuid);
    if (ret == 0)
        ret = mdm_plist_dict_set_data(cert, "PayloadContent", e->escrow_cert_der,
                                      e->escrow_cert_der_len);
    if (ret == 0)
        ret = mdm_pctx_add_payload(c, "com.apple.security.FDERecoveryKeyEscrow", NULL, NULL,
                                   &escrow, NULL);
    if (ret == 0)
        ret = mdm_plist_dict_set_string(escrow, "Location", location);
    if (ret == 0)
        ret = mdm_plist_dict_set_string(escrow, "EncryptCertPayloadUUID", cert_uuid);
    return ret;
}

const mdm_policy_type_t mdm_policy_t_filevault = {
    .name = "filevault", .title = "FileVault", .is_profile = true,
    .validate = filevault_validate, .build = filevault_build};

/* ---- SCEP ------------------------------------------------------------------------------ */

#define SCEP "com.apple.security.scep"

static const mdm_pkey_t *scep_content(void)
{
    const mdm_payload_schema_t *s = mdm_payload_schema_find(SCEP);
    return s ? mdm_pkey_find(s->keys, s->n_keys, "PayloadContent") : NULL;
}

static bool scep_instance(const json_t *s) { return json_object_get(s, "ca") != NULL; }

static int scep_validate(const mdm_policy_type_t *t, const json_t *s, mdm_spath_t *path,
                         char *err, size_t errlen)
{
    (void)t;
    const mdm_pkey_t *pc = scep_content();
    if (!pc)
        return -EINVAL;
    if (!scep_instance(s))
        return mdm_schema_check_json(pc->sub, pc->n_sub, s, SCEP, path, err, errlen);
    const char *ca = json_string_value(json_object_get(s, "ca"));
    if (!ca || strcmp(ca, "instance") != 0) {
        mdm_errf(err, errlen, "%s.ca: the only value is \"instance\"", path->s);
        return -EINVAL;
    }
    static const char *const own[] = {"URL", "Name", "Challenge"};
    for (size_t i = 0; i < 3; i++)
        if (json_object_get(s, own[i])) {
            mdm_errf(err, errlen, "%s.%s: set by mdmd when ca is \"instance\"", path->s, own[i]);
            return -EINVAL;
        }
    /* The rest as the payload would hold it, with a stand-in for the URL mdmd fills in. */
    json_t *copy = json_copy((json_t *)s);
    if (!copy || json_object_del(copy, "ca") != 0 ||
        json_object_set_new(copy, "URL", json_string("https://instance.invalid/scep")) != 0) {
        json_decref(copy);
        return -ENOMEM;
    }
    int ret = mdm_schema_check_json(pc->sub, pc->n_sub, copy, SCEP, path, err, errlen);
    json_decref(copy);
    return ret;
}

/* The PayloadContent object: the settings, or for the instance CA settings + mdmd's own. */
static json_t *scep_content_json(mdm_pctx_t *c)
{
    json_t *copy = json_copy((json_t *)c->settings);
    if (!copy || !scep_instance(c->settings))
        return copy;
    const mdm_policy_env_t *e = c->env;
    json_object_del(copy, "ca");
    if (json_object_set_new(copy, "URL", json_string(e->scep_url ? e->scep_url : "")) != 0 ||
        (e->scep_name && *e->scep_name &&
         json_object_set_new(copy, "Name", json_string(e->scep_name)) != 0) ||
        json_object_set_new(copy, "Challenge", json_string(e->scep_challenge)) != 0) {
        json_decref(copy);
        return NULL;
    }
    return copy;
}

static int scep_build(const mdm_policy_type_t *t, mdm_pctx_t *c)
{
    (void)t;
    const mdm_policy_env_t *e = c->env;
    bool inst = scep_instance(c->settings);
    if (inst && (!e->scep_url || !*e->scep_url || !e->scep_challenge || !*e->scep_challenge)) {
        mdm_errf(c->err, c->errlen, "scep: the instance SCEP service needs a URL and a "
                 "per-device challenge");
        return -EINVAL;
    }
    int ret = mdm_pctx_profile_begin(c);
    plist_t root;
    if (ret == 0 && inst && e->ca_der && e->ca_der_len) {
        ret = mdm_pctx_add_payload(c, "com.apple.security.root", NULL, NULL, &root, NULL);
        if (ret == 0)
            ret = mdm_plist_dict_set_data(root, "PayloadContent", e->ca_der, e->ca_der_len);
    }
    json_t *content = ret == 0 ? scep_content_json(c) : NULL;
    json_t *obj = content ? json_pack("{sO}", "PayloadContent", content) : NULL;
    if (ret == 0 && !obj)
        ret = -ENOMEM;
    if (ret == 0)
        ret = mdm_pctx_add_payload(c, SCEP, obj, NULL, NULL, NULL);
    json_decref(content);
    json_decref(obj);
    return ret;
}

const mdm_policy_type_t mdm_policy_t_scep = {
    .name = "scep", .title = "SCEP certificate", .is_profile = true,
    .validate = scep_validate, .build = scep_build, .needs_device = scep_instance};
