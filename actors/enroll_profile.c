/*
 * Enrollment profiles: spec -> checked fields -> plist tree -> XML -> CMS SignedData.
 *
 * Design:
 * - Every key written here is one Apple's profile schema defines for its payload type
 *   (TopLevel.yaml, CommonPayloadKeys.yaml, com.apple.security.root/pkcs1.yaml,
 *   com.apple.security.scep.yaml, com.apple.mdm.yaml); tests/unit/enroll_profile_test.c
 *   holds the allowed keys as a table and cross-checks it against the YAML when present.
 * - The spec is checked in full before anything is built, so a refused spec names exactly
 *   one field. Strings are refused when libplist would write invalid XML from them (control
 *   characters, malformed UTF-8), and the subject attributes when they exceed X.509's upper
 *   bounds (RFC 5280: 64 characters for CN and O), which a CA would refuse later anyway.
 * - The tree is plain libplist built through core/plist; signing is core/cms, so this file
 *   touches no wolfSSL type.
 *
 * Threads: reentrant; nothing is shared between calls.
 */
#include "actors/enroll_profile.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cms.h"
#include "core/crypto.h"
#include "core/plist.h"
#include "core/x509.h"

#define HTTPS "https://"
#define TOPIC_PREFIX "com.apple.mgmt."
#define X509_NAME_UB 64 /* RFC 5280 ub-common-name, ub-organization-name */
#define TEXT_MAX (MDM_ENROLL_FIELD_MAX + 64) /* a field plus the words around it */

#define TRY(expr)                                                                            \
    do {                                                                                     \
        if ((ret = (expr)) != 0)                                                             \
            goto out;                                                                        \
    } while (0)

/* ---- checks ---------------------------------------------------------------------------- */

/* True when s (len bytes) is well-formed UTF-8: no overlong forms, surrogates or > U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, min = 0x80, c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, min = 0x800, c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, min = 0x10000, c &= 0x07;
        } else {
            return false;
        }
        if (len - i <= n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            c = c << 6 | (s[i + k] & 0x3fu);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

/* A present, non-empty, bounded string that libplist writes as valid XML. */
static int check_text(const char *name, const char *s, size_t max, char *err, size_t errlen)
{
    if (!s || !*s) {
        mdm_errf(err, errlen, "%s: missing", name);
        return -EINVAL;
    }
    size_t len = strlen(s);
    if (len > max) {
        mdm_errf(err, errlen, "%s: longer than %zu bytes", name, max);
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            mdm_errf(err, errlen, "%s: control character at byte %zu", name, i);
            return -EINVAL;
        }
    }
    if (!utf8_valid((const unsigned char *)s, len)) {
        mdm_errf(err, errlen, "%s: not valid UTF-8", name);
        return -EINVAL;
    }
    return 0;
}

/* Printable ASCII without spaces: what a URL or a push topic may hold unescaped. */
static bool ascii_token(const char *s)
{
    for (; *s; s++)
        if (*s <= 0x20 || *s >= 0x7f)
            return false;
    return true;
}

static int check_url(const char *name, const char *url, char *err, size_t errlen)
{
    int ret = check_text(name, url, MDM_ENROLL_FIELD_MAX, err, errlen);
    if (ret != 0)
        return ret;
    /* com.apple.mdm.yaml: format ^https://.*$ (lower case, as written). */
    if (strncmp(url, HTTPS, strlen(HTTPS)) != 0) {
        mdm_errf(err, errlen, "%s: must start with " HTTPS, name);
        return -EINVAL;
    }
    const char *host = url + strlen(HTTPS);
    if (*host == '\0' || *host == '/' || *host == ':' || *host == '?' || *host == '#') {
        mdm_errf(err, errlen, "%s: no host name", name);
        return -EINVAL;
    }
    if (!ascii_token(url)) {
        mdm_errf(err, errlen, "%s: spaces or non-ASCII characters (percent-encode them)", name);
        return -EINVAL;
    }
    return 0;
}

static int check_identifier(const char *id, char *err, size_t errlen)
{
    int ret = check_text("identifier_prefix", id, MDM_ENROLL_FIELD_MAX, err, errlen);
    if (ret != 0)
        return ret;
    size_t label = 0;
    for (const char *p = id;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0) {
                mdm_errf(err, errlen, "identifier_prefix: empty label (reverse DNS expected)");
                return -EINVAL;
            }
            if (*p == '\0')
                return 0;
            label = 0;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9') || *p == '-' || *p == '_') {
            label++;
        } else {
            mdm_errf(err, errlen, "identifier_prefix: character '%c' not allowed", *p);
            return -EINVAL;
        }
    }
}

static int check_access_rights(uint32_t r, char *err, size_t errlen)
{
    if (r == 0) {
        mdm_errf(err, errlen, "access_rights: must not be 0");
        return -EINVAL;
    }
    if (r & ~(uint32_t)MDM_ENROLL_ACCESS_ALL) {
        mdm_errf(err, errlen, "access_rights: unknown bits 0x%x", r & ~MDM_ENROLL_ACCESS_ALL);
        return -EINVAL;
    }
    if ((r & MDM_ENROLL_ACCESS_PROFILE_INSTALL) && !(r & MDM_ENROLL_ACCESS_PROFILE_INSPECT)) {
        mdm_errf(err, errlen, "access_rights: 2 (install profiles) requires 1 (inspect them)");
        return -EINVAL;
    }
    if ((r & MDM_ENROLL_ACCESS_PROVPROFILE_INSTALL) &&
        !(r & MDM_ENROLL_ACCESS_PROVPROFILE_INSPECT)) {
        mdm_errf(err, errlen,
                 "access_rights: 128 (install provisioning profiles) requires 64 (inspect them)");
        return -EINVAL;
    }
    return 0;
}

/* Checks every field; on success *self_issued tells root CA from intermediate. */
static int check_spec(const mdm_enroll_profile_spec_t *s, bool *self_issued, char *err,
                      size_t errlen)
{
    int ret;
    if ((ret = check_text("organization", s->organization, X509_NAME_UB, err, errlen)) != 0 ||
        (ret = check_identifier(s->identifier_prefix, err, errlen)) != 0 ||
        (ret = check_url("server_url", s->server_url, err, errlen)) != 0 ||
        (ret = check_url("checkin_url", s->checkin_url, err, errlen)) != 0 ||
        (ret = check_url("scep_url", s->scep_url, err, errlen)) != 0 ||
        (ret = check_text("scep_name", s->scep_name, MDM_ENROLL_FIELD_MAX, err, errlen)) != 0 ||
        (ret = check_text("topic", s->topic, MDM_ENROLL_FIELD_MAX, err, errlen)) != 0 ||
        (ret = check_text("challenge", s->challenge, MDM_ENROLL_FIELD_MAX, err, errlen)) != 0 ||
        (ret = check_text("device_cn", s->device_cn, X509_NAME_UB, err, errlen)) != 0 ||
        (ret = check_access_rights(s->access_rights, err, errlen)) != 0)
        return ret;
    /* com.apple.mdm.yaml: "The topic must begin with the 'com.apple.mgmt.' prefix." */
    if (strncmp(s->topic, TOPIC_PREFIX, strlen(TOPIC_PREFIX)) != 0 ||
        strlen(s->topic) == strlen(TOPIC_PREFIX) || !ascii_token(s->topic)) {
        mdm_errf(err, errlen, "topic: must be " TOPIC_PREFIX "<name> without spaces");
        return -EINVAL;
    }
    if (!s->ca_der || s->ca_der_len == 0) {
        mdm_errf(err, errlen, "ca_der: missing");
        return -EINVAL;
    }
    if (s->ca_der_len > MDM_ENROLL_CA_DER_MAX) {
        mdm_errf(err, errlen, "ca_der: larger than %d bytes", MDM_ENROLL_CA_DER_MAX);
        return -EINVAL;
    }
    mdm_x509_info_t *info = malloc(sizeof(*info));
    if (!info)
        return -ENOMEM;
    ret = -EINVAL;
    if (mdm_x509_inspect_der(s->ca_der, s->ca_der_len, info) != 0)
        mdm_errf(err, errlen, "ca_der: not a DER certificate");
    else if (!info->is_ca)
        mdm_errf(err, errlen, "ca_der: not a CA certificate (%s)", info->subject);
    else
        ret = 0;
    *self_issued = info->self_issued;
    free(info);
    return ret;
}

/* ---- building -------------------------------------------------------------------------- */

/* snprintf into a TEXT_MAX buffer; fields are at most MDM_ENROLL_FIELD_MAX bytes. */
static const char *text(char buf[TEXT_MAX], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static const char *text(char buf[TEXT_MAX], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, TEXT_MAX, fmt, ap);
    va_end(ap);
    assert(n >= 0 && n < TEXT_MAX);
    (void)n;
    return buf;
}

/* The keys every payload carries (CommonPayloadKeys.yaml). */
static int set_common(plist_t d, const char *type, const char *identifier, const char *uuid,
                      const char *display_name, const char *description,
                      const char *organization)
{
    int ret;
    if ((ret = mdm_plist_dict_set_string(d, "PayloadType", type)) != 0 ||
        (ret = mdm_plist_dict_set_uint(d, "PayloadVersion", 1)) != 0 ||
        (ret = mdm_plist_dict_set_string(d, "PayloadIdentifier", identifier)) != 0 ||
        (ret = mdm_plist_dict_set_string(d, "PayloadUUID", uuid)) != 0 ||
        (ret = mdm_plist_dict_set_string(d, "PayloadDisplayName", display_name)) != 0 ||
        (ret = mdm_plist_dict_set_string(d, "PayloadDescription", description)) != 0 ||
        (ret = mdm_plist_dict_set_string(d, "PayloadOrganization", organization)) != 0)
        return ret;
    return 0;
}

/* [["attr", value]]: one relative distinguished name of a SCEP Subject. */
static plist_t rdn_new(const char *attr, const char *value)
{
    plist_t rdn = plist_new_array(), pair = plist_new_array();
    if (!rdn || !pair || mdm_plist_array_append_string(pair, attr) != 0 ||
        mdm_plist_array_append_string(pair, value) != 0) {
        plist_free(rdn);
        plist_free(pair);
        return NULL;
    }
    if (mdm_plist_array_append_item(rdn, pair) != 0) { /* pair is rdn's now */
        plist_free(rdn);
        return NULL;
    }
    return rdn;
}

static int add_ca(plist_t content, const mdm_enroll_profile_spec_t *s, bool self_issued,
                  const char *uuid)
{
    char id[TEXT_MAX], name[TEXT_MAX], desc[TEXT_MAX];
    plist_t d = plist_new_dict();
    if (!d)
        return -ENOMEM;
    int ret;
    /* com.apple.security.root is "an alias for com.apple.security.pkcs1": both take DER; the
     * name says what the certificate is. */
    TRY(set_common(d, self_issued ? "com.apple.security.root" : "com.apple.security.pkcs1",
                   text(id, "%s.enroll.ca", s->identifier_prefix), uuid,
                   text(name, "%s CA", s->organization),
                   text(desc, "The certificate authority of %s's device management server.",
                        s->organization),
                   s->organization));
    TRY(mdm_plist_dict_set_data(d, "PayloadContent", s->ca_der, s->ca_der_len));
    ret = mdm_plist_array_append_item(content, d);
    d = NULL;
out:
    plist_free(d);
    return ret;
}

static int add_scep(plist_t content, const mdm_enroll_profile_spec_t *s, const char *uuid)
{
    char id[TEXT_MAX], name[TEXT_MAX], desc[TEXT_MAX];
    plist_t d = plist_new_dict(), inner = plist_new_dict(), subject = plist_new_array();
    int ret = -ENOMEM;
    if (!d || !inner || !subject)
        goto out;
    TRY(set_common(d, "com.apple.security.scep",
                   text(id, "%s.enroll.scep", s->identifier_prefix), uuid,
                   text(name, "%s device identity", s->organization),
                   text(desc, "Requests this Mac's identity certificate from %s.",
                        s->organization),
                   s->organization));
    TRY(mdm_plist_array_append_item(subject, rdn_new("CN", s->device_cn)));
    TRY(mdm_plist_array_append_item(subject, rdn_new("O", s->organization)));
    TRY(mdm_plist_dict_set_string(inner, "URL", s->scep_url));
    TRY(mdm_plist_dict_set_string(inner, "Name", s->scep_name));
    TRY(mdm_plist_dict_set_item(inner, "Subject", subject));
    subject = NULL;
    TRY(mdm_plist_dict_set_string(inner, "Challenge", s->challenge));
    TRY(mdm_plist_dict_set_uint(inner, "Keysize", MDM_ENROLL_SCEP_KEYSIZE));
    TRY(mdm_plist_dict_set_string(inner, "Key Type", "RSA")); /* the schema's name, space too */
    TRY(mdm_plist_dict_set_uint(inner, "Key Usage", MDM_ENROLL_SCEP_KEY_USAGE));
    TRY(mdm_plist_dict_set_uint(inner, "Retries", MDM_ENROLL_SCEP_RETRIES));
    TRY(mdm_plist_dict_set_uint(inner, "RetryDelay", MDM_ENROLL_SCEP_RETRY_DELAY_S));
    TRY(mdm_plist_dict_set_item(d, "PayloadContent", inner));
    inner = NULL;
    ret = mdm_plist_array_append_item(content, d);
    d = NULL;
out:
    plist_free(d);
    plist_free(inner);
    plist_free(subject);
    return ret;
}

static int add_mdm(plist_t content, const mdm_enroll_profile_spec_t *s, const char *uuid,
                   const char *identity_uuid)
{
    char id[TEXT_MAX], name[TEXT_MAX], desc[TEXT_MAX];
    plist_t d = plist_new_dict(), caps = plist_new_array();
    int ret = -ENOMEM;
    if (!d || !caps)
        goto out;
    TRY(set_common(d, "com.apple.mdm", text(id, "%s.enroll.mdm", s->identifier_prefix), uuid,
                   text(name, "%s MDM", s->organization),
                   text(desc, "Lets %s manage this Mac.", s->organization), s->organization));
    TRY(mdm_plist_dict_set_string(d, "ServerURL", s->server_url));
    TRY(mdm_plist_dict_set_string(d, "CheckInURL", s->checkin_url));
    TRY(mdm_plist_dict_set_string(d, "Topic", s->topic));
    TRY(mdm_plist_dict_set_string(d, "IdentityCertificateUUID", identity_uuid));
    TRY(mdm_plist_dict_set_uint(d, "AccessRights", s->access_rights));
    TRY(mdm_plist_dict_set_bool(d, "SignMessage", s->sign_message));
    TRY(mdm_plist_dict_set_bool(d, "CheckOutWhenRemoved", true));
    /* User channels (macOS requires per-user-connections for them) and bootstrap token
     * escrow; "com.apple.mdm.token" (GetToken) is left out until mdmd answers GetToken. */
    TRY(mdm_plist_array_append_string(caps, "com.apple.mdm.per-user-connections"));
    TRY(mdm_plist_array_append_string(caps, "com.apple.mdm.bootstraptoken"));
    TRY(mdm_plist_dict_set_item(d, "ServerCapabilities", caps));
    caps = NULL;
    ret = mdm_plist_array_append_item(content, d);
    d = NULL;
out:
    plist_free(d);
    plist_free(caps);
    return ret;
}

int mdm_enroll_profile_build(const mdm_enroll_profile_spec_t *spec, mdm_buf_t *xml,
                             mdm_enroll_profile_ids_t *ids, char *err, size_t errlen)
{
    assert(spec && xml);
    bool self_issued = false;
    int ret = check_spec(spec, &self_issued, err, errlen);
    if (ret != 0)
        return ret;
    mdm_enroll_profile_ids_t u;
    if ((ret = mdm_uuid_v4(u.profile_uuid)) != 0 || (ret = mdm_uuid_v4(u.ca_uuid)) != 0 ||
        (ret = mdm_uuid_v4(u.scep_uuid)) != 0 || (ret = mdm_uuid_v4(u.mdm_uuid)) != 0)
        return ret;
    char id[TEXT_MAX], name[TEXT_MAX], desc[TEXT_MAX];
    plist_t top = plist_new_dict(), content = plist_new_array();
    ret = -ENOMEM;
    if (!top || !content)
        goto out;
    TRY(mdm_plist_dict_set_string(top, "PayloadType", "Configuration"));
    TRY(mdm_plist_dict_set_uint(top, "PayloadVersion", 1));
    TRY(mdm_plist_dict_set_string(top, "PayloadIdentifier",
                                  text(id, "%s.enroll", spec->identifier_prefix)));
    TRY(mdm_plist_dict_set_string(top, "PayloadUUID", u.profile_uuid));
    TRY(mdm_plist_dict_set_string(top, "PayloadDisplayName",
                                  text(name, "%s MDM", spec->organization)));
    TRY(mdm_plist_dict_set_string(
        top, "PayloadDescription",
        text(desc, "Enrolls this Mac in %s's device management.", spec->organization)));
    TRY(mdm_plist_dict_set_string(top, "PayloadOrganization", spec->organization));
    TRY(mdm_plist_dict_set_string(top, "PayloadScope", "System"));
    TRY(mdm_plist_dict_set_bool(top, "PayloadRemovalDisallowed", false));
    TRY(add_ca(content, spec, self_issued, u.ca_uuid));
    TRY(add_scep(content, spec, u.scep_uuid));
    TRY(add_mdm(content, spec, u.mdm_uuid, u.scep_uuid));
    TRY(mdm_plist_dict_set_item(top, "PayloadContent", content));
    content = NULL;
    TRY(mdm_plist_to_xml(top, xml));
    if (ids)
        *ids = u;
out:
    plist_free(top);
    plist_free(content);
    return ret;
}

/* ---- signing --------------------------------------------------------------------------- */

int mdm_enroll_profile_sign(const char *key_path, const char *cert_path, const char *chain_path,
                            const void *xml, size_t len, mdm_buf_t *der)
{
    assert(key_path && cert_path && xml && len > 0 && der);
    return mdm_cms_sign(key_path, cert_path, chain_path, xml, len, MDM_CMS_ENCAPSULATED, der);
}
