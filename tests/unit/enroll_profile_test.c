/*
 * actors/enroll_profile tests, with certificates made by core/x509 in a temporary folder
 * (a root CA, a profile-signing certificate it issued, an RSA one, an intermediate CA and a
 * signer under it, a plain leaf).
 * - build: the XML parses back; every value of the three payloads and the top level is
 *   checked; IdentityCertificateUUID points at the SCEP payload; UUIDs are uppercase v4 and
 *   fresh per profile; awkward organisation names (XML metacharacters, UTF-8) round-trip;
 *   an intermediate CA goes into a com.apple.security.pkcs1 payload;
 * - schema: every key emitted exists, with that type, in a table of the allowed keys per
 *   payload type copied from Apple's YAML (shared/apple-device-management/mdm/profiles/);
 *   when that folder is present, the table (keys, types, listed values, the AccessRights
 *   and Key Usage bits) is cross-checked against the YAML itself;
 * - refusals: every invalid spec field gives -EINVAL, a reason naming the field, and no output;
 * - signing: encapsulated SignedData verified by mdm_cms_verify_attached (content = XML,
 *   signer = the signing certificate, chaining to the CA), by `openssl cms -verify` and
 *   `openssl smime -verify` (their output = the XML), the chain certificate carried inside
 *   (openssl verifies a signer under an intermediate given only the root); tampering, a
 *   detached signature given to the attached verifier, an openssl-made attached signature,
 *   and signing errors (missing files, a file without certificates, too many certificates).
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "actors/enroll_profile.h"
#include "check.h"
#include "core/buf.h"
#include "core/cms.h"
#include "core/file.h"
#include "core/plist.h"
#include "core/tls.h"
#include "core/x509.h"

#define SCHEMA_DIR MDM_SOURCE_ROOT "/../shared/apple-device-management/mdm/profiles"

static char dir[PATH_MAX / 2];
static bool have_openssl;

/* Makes <name>.key and <name>.pem, self-signed (ca NULL) or issued by <ca>. Aborts on error. */
static void make(const char *name, const char *ca, const char *cn, bool is_ca,
                 enum mdm_x509_key_type kt)
{
    char key[64], crt[64], ca_key[64], ca_crt[64];
    snprintf(key, sizeof(key), "%s.key", name);
    snprintf(crt, sizeof(crt), "%s.pem", name);
    int ret = mdm_x509_key_generate(check_path(dir, key), kt);
    /* As `mdmd init` makes them: the CA also signs, the signer has digitalSignature with
     * emailProtection + codeSigning. */
    mdm_x509_spec_t spec = {
        .common_name = cn,
        .organization = "mdmd test",
        .validity_days = 30,
        .is_ca = is_ca,
        .key_usage = is_ca ? MDM_X509_KU_KEY_CERT_SIGN | MDM_X509_KU_CRL_SIGN |
                                 MDM_X509_KU_DIGITAL_SIGNATURE
                           : MDM_X509_KU_DIGITAL_SIGNATURE,
        .ext_key_usage = is_ca ? 0 : MDM_X509_EKU_EMAIL_PROTECTION | MDM_X509_EKU_CODE_SIGNING,
    };
    if (ret == 0) {
        if (!ca) {
            ret = mdm_x509_make_self_signed(check_path(dir, key), check_path(dir, crt), &spec);
        } else {
            snprintf(ca_key, sizeof(ca_key), "%s.key", ca);
            snprintf(ca_crt, sizeof(ca_crt), "%s.pem", ca);
            ret = mdm_x509_issue(check_path(dir, ca_key), check_path(dir, ca_crt), check_path(dir, key), check_path(dir, crt), &spec);
        }
    }
    if (ret != 0) {
        fprintf(stderr, "cannot make %s: %s\n", name, mdm_strerror(ret));
        exit(99);
    }
}

/* DER of the first certificate in <name>.pem into out (reset first). Aborts on error. */
static void der_of(const char *name, mdm_buf_t *out)
{
    char c[64];
    snprintf(c, sizeof(c), "%s.pem", name);
    uint8_t *der = NULL;
    size_t len = 0;
    if (mdm_x509_read_cert_der(check_path(dir, c), &der, &len) != 0)
        exit(99);
    mdm_buf_reset(out);
    if (mdm_buf_append(out, der, len) != 0)
        exit(99);
    free(der);
}

static bool buf_eq(const mdm_buf_t *a, const mdm_buf_t *b)
{
    return a->len == b->len &&
           (a->len == 0 || memcmp(mdm_buf_head(a), mdm_buf_head(b), a->len) == 0);
}

/* Whole file into out (reset first); false when unreadable. */
static bool slurp(const char *file, mdm_buf_t *out)
{
    uint8_t *data = NULL;
    size_t len = 0;
    mdm_buf_reset(out);
    if (mdm_file_read(file, 16 << 20, &data, &len) != 0)
        return false;
    bool ok = mdm_buf_append(out, data, len) == 0;
    free(data);
    return ok;
}

/* ---- the spec -------------------------------------------------------------------------- */

static mdm_buf_t ca_der, int_der, leaf_der;

static mdm_enroll_profile_spec_t good_spec(void)
{
    return (mdm_enroll_profile_spec_t){
        .organization = "Example Corp",
        .identifier_prefix = "com.example.mdm",
        .server_url = "https://mdm.example.com:8443/zdm/mdm/connect",
        .checkin_url = "https://mdm.example.com:8443/zdm/mdm/checkin",
        .scep_url = "https://mdm.example.com:8443/zdm/scep",
        .scep_name = "zdm",
        .topic = "com.apple.mgmt.External.0b5c2f6e-7d1a-4f33-9a58-2b1c3d4e5f60",
        .challenge = "Q2hhbGxlbmdlLTEyMzQ1Njc4OTA",
        .device_cn = "mdmd-enroll-4F2A9C",
        .ca_der = mdm_buf_head(&ca_der),
        .ca_der_len = ca_der.len,
        .access_rights = MDM_ENROLL_ACCESS_ALL,
        .sign_message = true,
    };
}

/* ---- schema: allowed keys per payload, copied from Apple's YAML ------------------------- */

struct schema_key {
    const char *scope; /* "TopLevel", "Common", a PayloadType, or "<type>/PayloadContent" */
    const char *file;  /* YAML file under SCHEMA_DIR */
    const char *key;
    const char *type; /* as the YAML writes it */
};

#define TOP "TopLevel", "TopLevel.yaml"
#define COMMON "Common", "CommonPayloadKeys.yaml"
#define ROOT "com.apple.security.root", "com.apple.security.root.yaml"
#define PKCS1 "com.apple.security.pkcs1", "com.apple.security.pkcs1.yaml"
#define SCEP "com.apple.security.scep", "com.apple.security.scep.yaml"
#define SCEP_IN "com.apple.security.scep/PayloadContent", "com.apple.security.scep.yaml"
#define MDM "com.apple.mdm", "com.apple.mdm.yaml"

static const struct schema_key schema[] = {
    {TOP, "PayloadIdentifier", "<string>"},
    {TOP, "PayloadUUID", "<string>"},
    {TOP, "PayloadType", "<string>"},
    {TOP, "PayloadVersion", "<integer>"},
    {TOP, "IsEncrypted", "<boolean>"},
    {TOP, "PayloadContent", "<array>"},
    {TOP, "EncryptedPayloadContent", "<data>"},
    {TOP, "PayloadDescription", "<string>"},
    {TOP, "PayloadDisplayName", "<string>"},
    {TOP, "HasRemovalPasscode", "<boolean>"},
    {TOP, "PayloadOrganization", "<string>"},
    {TOP, "PayloadRemovalDisallowed", "<boolean>"},
    {TOP, "PayloadScope", "<string>"},
    {TOP, "RemovalDate", "<date>"},
    {TOP, "DurationUntilRemoval", "<real>"},
    {TOP, "PayloadExpirationDate", "<date>"},
    {TOP, "TargetDeviceType", "<integer>"},
    {TOP, "ConsentText", "<dictionary>"},

    {COMMON, "PayloadIdentifier", "<string>"},
    {COMMON, "PayloadUUID", "<string>"},
    {COMMON, "PayloadType", "<string>"},
    {COMMON, "PayloadVersion", "<integer>"},
    {COMMON, "PayloadDescription", "<string>"},
    {COMMON, "PayloadDisplayName", "<string>"},
    {COMMON, "PayloadOrganization", "<string>"},

    {ROOT, "PayloadCertificateFileName", "<string>"},
    {ROOT, "PayloadContent", "<data>"},
    {PKCS1, "PayloadCertificateFileName", "<string>"},
    {PKCS1, "PayloadContent", "<data>"},

    {SCEP, "PayloadContent", "<dictionary>"},
    {SCEP_IN, "URL", "<string>"},
    {SCEP_IN, "Name", "<string>"},
    {SCEP_IN, "Subject", "<array>"},
    {SCEP_IN, "Challenge", "<string>"},
    {SCEP_IN, "Keysize", "<integer>"},
    {SCEP_IN, "Key Type", "<string>"},
    {SCEP_IN, "Key Usage", "<integer>"},
    {SCEP_IN, "CAFingerprint", "<data>"},
    {SCEP_IN, "Retries", "<integer>"},
    {SCEP_IN, "RetryDelay", "<integer>"},
    {SCEP_IN, "SubjectAltName", "<dictionary>"},
    {SCEP_IN, "KeyIsExtractable", "<boolean>"},
    {SCEP_IN, "AllowAllAppsAccess", "<boolean>"},

    {MDM, "IdentityCertificateUUID", "<string>"},
    {MDM, "Topic", "<string>"},
    {MDM, "ServerURL", "<string>"},
    {MDM, "CheckInURL", "<string>"},
    {MDM, "SignMessage", "<boolean>"},
    {MDM, "AccessRights", "<integer>"},
    {MDM, "UseDevelopmentAPNS", "<boolean>"},
    {MDM, "ManagedAppleID", "<string>"},
    {MDM, "AssignedManagedAppleID", "<string>"},
    {MDM, "EnrollmentMode", "<string>"},
    {MDM, "ServerURLPinningCertificateUUIDs", "<array>"},
    {MDM, "CheckInURLPinningCertificateUUIDs", "<array>"},
    {MDM, "PinningRevocationCheckRequired", "<boolean>"},
    {MDM, "ServerCapabilities", "<array>"},
    {MDM, "CheckOutWhenRemoved", "<boolean>"},
    {MDM, "RequiredAppIDForMDM", "<integer>"},
    {MDM, "PromptUserToAllowBootstrapTokenForAuthentication", "<boolean>"},
};

/* Values the profile uses that the YAML restricts with a rangelist. */
static const struct {
    const char *file, *key, *value;
} schema_values[] = {
    {"TopLevel.yaml", "PayloadType", "Configuration"},
    {"TopLevel.yaml", "PayloadVersion", "1"},
    {"TopLevel.yaml", "PayloadScope", "System"},
    {"CommonPayloadKeys.yaml", "PayloadVersion", "1"},
    {"com.apple.security.scep.yaml", "Keysize", "2048"},
    {"com.apple.mdm.yaml", "ServerCapabilities", "com.apple.mdm.per-user-connections"},
    {"com.apple.mdm.yaml", "ServerCapabilities", "com.apple.mdm.bootstraptoken"},
};

static const char *type_name(plist_t node)
{
    switch (plist_get_node_type(node)) {
    case PLIST_BOOLEAN: return "<boolean>";
    case PLIST_UINT: return "<integer>";
    case PLIST_REAL: return "<real>";
    case PLIST_STRING: return "<string>";
    case PLIST_ARRAY: return "<array>";
    case PLIST_DICT: return "<dictionary>";
    case PLIST_DATE: return "<date>";
    case PLIST_DATA: return "<data>";
    default: return "?";
    }
}

static const struct schema_key *schema_find(const char *scope, const char *key)
{
    for (size_t i = 0; i < MDM_ARRAY_LEN(schema); i++)
        if (strcmp(schema[i].scope, scope) == 0 && strcmp(schema[i].key, key) == 0)
            return &schema[i];
    return NULL;
}

/* Every key of dict is allowed in scope (or, with common, in the common payload keys) with
 * the type of its value; counts the keys checked into *n. */
static void check_keys(plist_t dict, const char *scope, bool common, size_t *n)
{
    plist_dict_iter it = NULL;
    plist_dict_new_iter(dict, &it);
    for (;;) {
        char *key = NULL;
        plist_t val = NULL;
        plist_dict_next_item(dict, it, &key, &val);
        if (!key)
            break;
        const struct schema_key *k = schema_find(scope, key);
        if (!k && common)
            k = schema_find("Common", key);
        if (!k || strcmp(k->type, type_name(val)) != 0)
            fprintf(stderr, "%s: key \"%s\" (%s) is not in the schema\n", scope, key,
                    type_name(val));
        CHECK(k != NULL && strcmp(k->type, type_name(val)) == 0);
        (*n)++;
        free(key);
    }
    free(it);
}

/* ---- YAML cross-check (only when the schema folder is there) ------------------------------ */

/* The lines of key's entry in yaml: from "- key: <key>" to the next "- key:" that is not
 * nested deeper. Returns a malloc'ed copy or NULL. */
static char *yaml_block(const char *yaml, const char *key)
{
    char want[256];
    snprintf(want, sizeof(want), "- key: %s\n", key);
    const char *p = yaml;
    while ((p = strstr(p, want)) != NULL) {
        const char *bol = p;
        while (bol > yaml && bol[-1] == ' ')
            bol--;
        if (bol == yaml || bol[-1] == '\n')
            break;
        p++;
    }
    if (!p)
        return NULL;
    const char *bol = p;
    while (bol > yaml && bol[-1] == ' ')
        bol--;
    size_t indent = (size_t)(p - bol);
    const char *end = strchr(p, '\n');
    while (end && end[1]) {
        const char *q = end + 1;
        size_t sp = 0;
        while (q[sp] == ' ')
            sp++;
        if (sp <= indent && strncmp(q + sp, "- key:", 6) == 0)
            break;
        if (sp < indent && q[sp] != '\n' && q[sp] != '-')
            break; /* a shallower mapping key */
        end = strchr(q, '\n');
    }
    size_t len = end ? (size_t)(end - bol) : strlen(bol);
    char *out = malloc(len + 1);
    if (!out)
        exit(99);
    memcpy(out, bol, len);
    out[len] = 0;
    return out;
}

/* The value of the first "type: " line of a block, or "". */
static void yaml_type(const char *block, char *out, size_t size)
{
    const char *t = strstr(block, "  type: ");
    out[0] = 0;
    if (!t)
        return;
    t += strlen("  type: ");
    size_t n = strcspn(t, "\n");
    snprintf(out, size, "%.*s", (int)n, t);
}

/* True when block lists value as an item ("- value" on a line of its own). */
static bool yaml_lists(const char *block, const char *value)
{
    char want[256];
    snprintf(want, sizeof(want), "- %s\n", value);
    for (const char *p = block; (p = strstr(p, want)) != NULL; p++) {
        const char *q = p;
        while (q > block && q[-1] == ' ')
            q--;
        if (q == block || q[-1] == '\n')
            return true;
    }
    return false;
}

/* OR of the numbers in lines like "* 'N': ..." or "* N: ..." of a block. */
static unsigned long yaml_bits(const char *block)
{
    unsigned long bits = 0;
    for (const char *p = block; (p = strstr(p, "* ")) != NULL; p += 2) {
        const char *q = p + 2;
        if (*q == '\'')
            q++;
        char *endp = NULL;
        unsigned long v = strtoul(q, &endp, 10);
        if (endp != q && (*endp == ':' || (*endp == '\'' && endp[1] == ':')))
            bits |= v;
    }
    return bits;
}

static char *yaml_file(const char *name)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", SCHEMA_DIR, name);
    uint8_t *data = NULL;
    size_t len = 0;
    if (mdm_file_read(p, 1 << 20, &data, &len) != 0)
        return NULL;
    return (char *)data;
}

static void test_schema_yaml(void)
{
    struct stat st;
    if (stat(SCHEMA_DIR, &st) != 0) {
        fprintf(stderr, "%s absent: schema table not cross-checked\n", SCHEMA_DIR);
        return;
    }
    int bad = 0;
    for (size_t i = 0; i < MDM_ARRAY_LEN(schema); i++) {
        char *yaml = yaml_file(schema[i].file);
        CHECK(yaml != NULL);
        if (!yaml)
            continue;
        char *block = yaml_block(yaml, schema[i].key);
        char type[64] = "";
        if (block)
            yaml_type(block, type, sizeof(type));
        if (!block || strcmp(type, schema[i].type) != 0) {
            fprintf(stderr, "%s: %s is %s in the YAML, %s in the table\n", schema[i].file,
                    schema[i].key, block ? type : "missing", schema[i].type);
            bad++;
        }
        free(block);
        free(yaml);
    }
    CHECK_EQ_INT(bad, 0);
    for (size_t i = 0; i < MDM_ARRAY_LEN(schema_values); i++) {
        char *yaml = yaml_file(schema_values[i].file);
        char *block = yaml ? yaml_block(yaml, schema_values[i].key) : NULL;
        bool ok = block && yaml_lists(block, schema_values[i].value);
        if (!ok)
            fprintf(stderr, "%s: %s does not list %s\n", schema_values[i].file,
                    schema_values[i].key, schema_values[i].value);
        CHECK(ok);
        free(block);
        free(yaml);
    }
    /* The bits the YAML documents are the ones mdmd allows. */
    char *yaml = yaml_file("com.apple.mdm.yaml");
    char *block = yaml ? yaml_block(yaml, "AccessRights") : NULL;
    CHECK(block && yaml_bits(block) == MDM_ENROLL_ACCESS_ALL);
    free(block);
    free(yaml);
    yaml = yaml_file("com.apple.security.scep.yaml");
    block = yaml ? yaml_block(yaml, "Key Usage") : NULL;
    CHECK(block && yaml_bits(block) == MDM_ENROLL_SCEP_KEY_USAGE);
    free(block);
    /* "Key Type: Always 'RSA'" */
    block = yaml ? yaml_block(yaml, "Key Type") : NULL;
    CHECK(block && strstr(block, "default: RSA") != NULL);
    free(block);
    free(yaml);
    yaml = yaml_file("com.apple.mdm.yaml");
    block = yaml ? yaml_block(yaml, "Topic") : NULL;
    CHECK(block && strstr(block, "'com.apple.mgmt.' prefix") != NULL);
    free(block);
    free(yaml);
}

/* ---- building -------------------------------------------------------------------------- */

static const char *str_of(plist_t dict, const char *key)
{
    const char *s = NULL;
    return mdm_plist_get_string(dict, key, &s) == 0 ? s : "(missing)";
}

static uint64_t uint_of(plist_t dict, const char *key)
{
    uint64_t v = 0;
    return mdm_plist_get_uint(dict, key, &v) == 0 ? v : UINT64_MAX;
}

static int bool_of(plist_t dict, const char *key)
{
    bool b = false;
    return mdm_plist_get_bool(dict, key, &b) == 0 ? b : -1;
}

static bool uuid_ok(const char *s)
{
    if (strlen(s) != MDM_ENROLL_UUID_LEN)
        return false;
    for (size_t i = 0; i < MDM_ENROLL_UUID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    }
    return s[14] == '4' && strchr("89AB", s[19]) != NULL;
}

/* Builds spec, parses the XML back into *root. Returns the build code. */
static int build(const mdm_enroll_profile_spec_t *spec, mdm_buf_t *xml,
                 mdm_enroll_profile_ids_t *ids, plist_t *root)
{
    char err[256] = "";
    mdm_buf_reset(xml);
    int ret = mdm_enroll_profile_build(spec, xml, ids, err, sizeof(err));
    if (ret != 0) {
        fprintf(stderr, "build: %s (%s)\n", mdm_strerror(ret), err);
        return ret;
    }
    char perr[128] = "";
    int r = mdm_plist_parse_dict(mdm_buf_head(xml), xml->len, 8, root, perr, sizeof(perr));
    if (r != 0)
        fprintf(stderr, "parse: %s\n", perr);
    CHECK_EQ_INT(r, 0);
    return r;
}

/* Checks every value of the profile built from s, whose PayloadUUIDs are ids. */
static void check_profile(const mdm_enroll_profile_spec_t *s, plist_t top,
                          const mdm_enroll_profile_ids_t *ids, const char *ca_type)
{
    char want[512];
    /* Top level. */
    CHECK_STR(str_of(top, "PayloadType"), "Configuration");
    CHECK_EQ_INT(uint_of(top, "PayloadVersion"), 1);
    snprintf(want, sizeof(want), "%s.enroll", s->identifier_prefix);
    CHECK_STR(str_of(top, "PayloadIdentifier"), want);
    CHECK_STR(str_of(top, "PayloadUUID"), ids->profile_uuid);
    CHECK(uuid_ok(str_of(top, "PayloadUUID")));
    snprintf(want, sizeof(want), "%s MDM", s->organization);
    CHECK_STR(str_of(top, "PayloadDisplayName"), want);
    CHECK(strstr(str_of(top, "PayloadDescription"), s->organization) != NULL);
    CHECK_STR(str_of(top, "PayloadOrganization"), s->organization);
    CHECK_STR(str_of(top, "PayloadScope"), "System");
    CHECK_EQ_INT(bool_of(top, "PayloadRemovalDisallowed"), 0);
    plist_t content = NULL;
    CHECK_EQ_INT(mdm_plist_get_array(top, "PayloadContent", &content), 0);
    if (!content || plist_array_get_size(content) != 3) {
        CHECK(false);
        return;
    }
    size_t n_keys = 0;
    check_keys(top, "TopLevel", false, &n_keys);
    CHECK_EQ_INT(n_keys, 10);

    /* The CA certificate. */
    plist_t ca = plist_array_get_item(content, 0);
    CHECK_STR(str_of(ca, "PayloadType"), ca_type);
    CHECK_EQ_INT(uint_of(ca, "PayloadVersion"), 1);
    snprintf(want, sizeof(want), "%s.enroll.ca", s->identifier_prefix);
    CHECK_STR(str_of(ca, "PayloadIdentifier"), want);
    CHECK_STR(str_of(ca, "PayloadUUID"), ids->ca_uuid);
    CHECK(uuid_ok(ids->ca_uuid));
    CHECK(strstr(str_of(ca, "PayloadDisplayName"), s->organization) != NULL);
    const uint8_t *data = NULL;
    size_t len = 0;
    CHECK_EQ_INT(mdm_plist_get_data(ca, "PayloadContent", &data, &len), 0);
    CHECK(len == s->ca_der_len && data && memcmp(data, s->ca_der, len) == 0);
    n_keys = 0;
    check_keys(ca, ca_type, true, &n_keys);
    CHECK_EQ_INT(n_keys, 8);

    /* SCEP. */
    plist_t scep = plist_array_get_item(content, 1);
    CHECK_STR(str_of(scep, "PayloadType"), "com.apple.security.scep");
    CHECK_EQ_INT(uint_of(scep, "PayloadVersion"), 1);
    snprintf(want, sizeof(want), "%s.enroll.scep", s->identifier_prefix);
    CHECK_STR(str_of(scep, "PayloadIdentifier"), want);
    CHECK_STR(str_of(scep, "PayloadUUID"), ids->scep_uuid);
    CHECK(uuid_ok(ids->scep_uuid));
    CHECK(strstr(str_of(scep, "PayloadDisplayName"), s->organization) != NULL);
    n_keys = 0;
    check_keys(scep, "com.apple.security.scep", true, &n_keys);
    CHECK_EQ_INT(n_keys, 8);
    plist_t in = NULL;
    CHECK_EQ_INT(mdm_plist_get_dict(scep, "PayloadContent", &in), 0);
    if (in) {
        CHECK_STR(str_of(in, "URL"), s->scep_url);
        CHECK_STR(str_of(in, "Name"), s->scep_name);
        CHECK_STR(str_of(in, "Challenge"), s->challenge);
        CHECK_EQ_INT(uint_of(in, "Keysize"), 2048);
        CHECK_STR(str_of(in, "Key Type"), "RSA");
        CHECK_EQ_INT(uint_of(in, "Key Usage"), 5);
        CHECK_EQ_INT(uint_of(in, "Retries"), 3);
        CHECK_EQ_INT(uint_of(in, "RetryDelay"), 10);
        n_keys = 0;
        check_keys(in, "com.apple.security.scep/PayloadContent", false, &n_keys);
        CHECK_EQ_INT(n_keys, 9);
        /* Subject: [[["CN", cn]], [["O", org]]] */
        plist_t subj = NULL;
        CHECK_EQ_INT(mdm_plist_get_array(in, "Subject", &subj), 0);
        const char *want_rdn[2][2] = {{"CN", s->device_cn}, {"O", s->organization}};
        CHECK(subj && plist_array_get_size(subj) == 2);
        for (uint32_t i = 0; subj && i < 2 && i < plist_array_get_size(subj); i++) {
            plist_t rdn = plist_array_get_item(subj, i);
            CHECK(plist_get_node_type(rdn) == PLIST_ARRAY && plist_array_get_size(rdn) == 1);
            plist_t pair = plist_array_get_item(rdn, 0);
            CHECK(plist_get_node_type(pair) == PLIST_ARRAY && plist_array_get_size(pair) == 2);
            for (uint32_t k = 0; k < 2 && plist_array_get_size(pair) == 2; k++) {
                plist_t item = plist_array_get_item(pair, k);
                CHECK(plist_get_node_type(item) == PLIST_STRING);
                const char *v = plist_get_string_ptr(item, NULL);
                CHECK_STR(v, want_rdn[i][k]);
            }
        }
    }

    /* MDM. */
    plist_t mdm = plist_array_get_item(content, 2);
    CHECK_STR(str_of(mdm, "PayloadType"), "com.apple.mdm");
    CHECK_EQ_INT(uint_of(mdm, "PayloadVersion"), 1);
    snprintf(want, sizeof(want), "%s.enroll.mdm", s->identifier_prefix);
    CHECK_STR(str_of(mdm, "PayloadIdentifier"), want);
    CHECK_STR(str_of(mdm, "PayloadUUID"), ids->mdm_uuid);
    CHECK(uuid_ok(ids->mdm_uuid));
    snprintf(want, sizeof(want), "%s MDM", s->organization);
    CHECK_STR(str_of(mdm, "PayloadDisplayName"), want);
    CHECK_STR(str_of(mdm, "ServerURL"), s->server_url);
    CHECK_STR(str_of(mdm, "CheckInURL"), s->checkin_url);
    CHECK_STR(str_of(mdm, "Topic"), s->topic);
    CHECK_STR(str_of(mdm, "IdentityCertificateUUID"), ids->scep_uuid);
    CHECK_EQ_INT(uint_of(mdm, "AccessRights"), s->access_rights);
    CHECK_EQ_INT(bool_of(mdm, "SignMessage"), s->sign_message);
    CHECK_EQ_INT(bool_of(mdm, "CheckOutWhenRemoved"), 1);
    plist_t caps = NULL;
    CHECK_EQ_INT(mdm_plist_get_array(mdm, "ServerCapabilities", &caps), 0);
    CHECK(caps && plist_array_get_size(caps) == 2);
    if (caps && plist_array_get_size(caps) == 2) {
        CHECK_STR(plist_get_string_ptr(plist_array_get_item(caps, 0), NULL),
                  "com.apple.mdm.per-user-connections");
        CHECK_STR(plist_get_string_ptr(plist_array_get_item(caps, 1), NULL),
                  "com.apple.mdm.bootstraptoken");
    }
    n_keys = 0;
    check_keys(mdm, "com.apple.mdm", true, &n_keys);
    CHECK_EQ_INT(n_keys, 15);

    /* All UUIDs differ. */
    const char *u[] = {ids->profile_uuid, ids->ca_uuid, ids->scep_uuid, ids->mdm_uuid};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = i + 1; j < 4; j++)
            CHECK(strcmp(u[i], u[j]) != 0);
}

static void test_build(void)
{
    mdm_buf_t xml;
    mdm_buf_init(&xml, 0);
    mdm_enroll_profile_spec_t s = good_spec();
    mdm_enroll_profile_ids_t a, b;
    plist_t root = NULL;
    if (build(&s, &xml, &a, &root) == 0) {
        check_profile(&s, root, &a, "com.apple.security.root");
        plist_free(root);
    }
    CHECK(xml.len > 0 && memcmp(mdm_buf_head(&xml), "<?xml", 5) == 0);

    /* A second profile: every UUID fresh. */
    s.sign_message = false;
    s.access_rights = MDM_ENROLL_ACCESS_PROFILE_INSPECT | MDM_ENROLL_ACCESS_DEVICE_INFO;
    root = NULL;
    if (build(&s, &xml, &b, &root) == 0) {
        check_profile(&s, root, &b, "com.apple.security.root");
        plist_free(root);
    }
    CHECK(strcmp(a.profile_uuid, b.profile_uuid) != 0);
    CHECK(strcmp(a.ca_uuid, b.ca_uuid) != 0);
    CHECK(strcmp(a.scep_uuid, b.scep_uuid) != 0);
    CHECK(strcmp(a.mdm_uuid, b.mdm_uuid) != 0);

    /* Names with XML metacharacters and UTF-8 round-trip. */
    s = good_spec();
    s.organization = "M\xc3\xbcller & S\xc3\xb6hne <Gr\xc3\xbcn> \"AG\" \xe2\x9c\x93";
    s.challenge = "a<b>&c'd\"e";
    root = NULL;
    if (build(&s, &xml, &a, &root) == 0) {
        check_profile(&s, root, &a, "com.apple.security.root");
        plist_free(root);
    }

    /* An intermediate CA: a com.apple.security.pkcs1 payload. */
    s = good_spec();
    s.ca_der = mdm_buf_head(&int_der);
    s.ca_der_len = int_der.len;
    root = NULL;
    if (build(&s, &xml, &a, &root) == 0) {
        check_profile(&s, root, &a, "com.apple.security.pkcs1");
        plist_free(root);
    }

    /* ids may be NULL; output is appended. */
    mdm_buf_reset(&xml);
    CHECK_EQ_INT(mdm_buf_append_str(&xml, "keep"), 0);
    s = good_spec();
    CHECK_EQ_INT(mdm_enroll_profile_build(&s, &xml, NULL, NULL, 0), 0);
    CHECK(xml.len > 4 && memcmp(mdm_buf_head(&xml), "keep<?xml", 9) == 0);

    /* A full buffer. */
    mdm_buf_t small;
    mdm_buf_init(&small, 100);
    CHECK_EQ_INT(mdm_enroll_profile_build(&s, &small, NULL, NULL, 0), MDM_ETOOBIG);
    CHECK_EQ_INT(small.len, 0);
    mdm_buf_dispose(&small);
    mdm_buf_dispose(&xml);
}

/* ---- refusals -------------------------------------------------------------------------- */

struct refusal {
    const char *field; /* expected at the start of the reason */
    void (*mutate)(mdm_enroll_profile_spec_t *s);
};

static char long_text[MDM_ENROLL_FIELD_MAX + 2];
static char long_url[MDM_ENROLL_FIELD_MAX + 2];

#define MUT(name, body) static void name(mdm_enroll_profile_spec_t *s) { body; }
MUT(org_null, s->organization = NULL)
MUT(org_empty, s->organization = "")
MUT(org_long, s->organization = "0123456789012345678901234567890123456789012345678901234567890123X")
MUT(org_ctrl, s->organization = "Example\nCorp")
MUT(org_utf8, s->organization = "Example \xc3\x28 Corp")
MUT(org_overlong, s->organization = "Example \xc0\xaf")
MUT(org_surrogate, s->organization = "Example \xed\xa0\x80")
MUT(org_truncated, s->organization = "Example \xe2\x9c")
MUT(id_null, s->identifier_prefix = NULL)
MUT(id_empty, s->identifier_prefix = "")
MUT(id_space, s->identifier_prefix = "com.example mdm")
MUT(id_dots, s->identifier_prefix = "com..example")
MUT(id_trailing, s->identifier_prefix = "com.example.")
MUT(id_leading, s->identifier_prefix = ".com.example")
MUT(id_slash, s->identifier_prefix = "com/example")
MUT(srv_null, s->server_url = NULL)
MUT(srv_empty, s->server_url = "")
MUT(srv_http, s->server_url = "http://mdm.example.com/zdm/mdm/connect")
MUT(srv_upper, s->server_url = "HTTPS://mdm.example.com/zdm/mdm/connect")
MUT(srv_nohost, s->server_url = "https://")
MUT(srv_path, s->server_url = "https:///zdm/mdm/connect")
MUT(srv_space, s->server_url = "https://mdm.example.com/zdm/mdm connect")
MUT(srv_long, s->server_url = long_url)
MUT(chk_null, s->checkin_url = NULL)
MUT(chk_http, s->checkin_url = "http://mdm.example.com/zdm/mdm/checkin")
MUT(chk_other, s->checkin_url = "ftp://mdm.example.com/")
MUT(scep_null, s->scep_url = NULL)
MUT(scep_http, s->scep_url = "http://mdm.example.com/zdm/scep")
MUT(scep_port_only, s->scep_url = "https://:8443/zdm/scep")
MUT(name_null, s->scep_name = NULL)
MUT(name_empty, s->scep_name = "")
MUT(name_long, s->scep_name = long_text)
MUT(topic_null, s->topic = NULL)
MUT(topic_empty, s->topic = "")
MUT(topic_other, s->topic = "com.apple.foo.External.1234")
MUT(topic_prefix, s->topic = "com.apple.mgmt.")
MUT(topic_space, s->topic = "com.apple.mgmt.External 1234")
MUT(topic_case, s->topic = "com.apple.MGMT.External.1234")
MUT(chal_null, s->challenge = NULL)
MUT(chal_empty, s->challenge = "")
MUT(chal_ctrl, s->challenge = "abc\x7f")
MUT(chal_tab, s->challenge = "abc\tdef")
MUT(cn_null, s->device_cn = NULL)
MUT(cn_empty, s->device_cn = "")
MUT(cn_long, s->device_cn = "0123456789012345678901234567890123456789012345678901234567890123X")
MUT(ca_null, s->ca_der = NULL)
MUT(ca_zero, s->ca_der_len = 0)
MUT(ca_junk, s->ca_der = (const uint8_t *)"junk junk junk"; s->ca_der_len = 14)
MUT(ca_cut, s->ca_der_len = s->ca_der_len - 1)
MUT(ca_huge, s->ca_der_len = MDM_ENROLL_CA_DER_MAX + 1)
MUT(ca_leaf, s->ca_der = mdm_buf_head(&leaf_der); s->ca_der_len = leaf_der.len)
MUT(ar_zero, s->access_rights = 0)
MUT(ar_high, s->access_rights = 8192)
MUT(ar_all_high, s->access_rights = MDM_ENROLL_ACCESS_ALL | 0x10000)
MUT(ar_2_alone, s->access_rights = 2)
MUT(ar_128_no_64, s->access_rights = 1 | 128)
MUT(ar_all_but_1, s->access_rights = MDM_ENROLL_ACCESS_ALL & ~1u)
MUT(ar_all_but_64, s->access_rights = MDM_ENROLL_ACCESS_ALL & ~64u)

static const struct refusal refusals[] = {
    {"organization", org_null},      {"organization", org_empty},
    {"organization", org_long},      {"organization", org_ctrl},
    {"organization", org_utf8},      {"organization", org_overlong},
    {"organization", org_surrogate}, {"organization", org_truncated},
    {"identifier_prefix", id_null},  {"identifier_prefix", id_empty},
    {"identifier_prefix", id_space}, {"identifier_prefix", id_dots},
    {"identifier_prefix", id_trailing}, {"identifier_prefix", id_leading},
    {"identifier_prefix", id_slash}, {"server_url", srv_null},
    {"server_url", srv_empty},       {"server_url", srv_http},
    {"server_url", srv_upper},       {"server_url", srv_nohost},
    {"server_url", srv_path},        {"server_url", srv_space},
    {"server_url", srv_long},        {"checkin_url", chk_null},
    {"checkin_url", chk_http},       {"checkin_url", chk_other},
    {"scep_url", scep_null},         {"scep_url", scep_http},
    {"scep_url", scep_port_only},    {"scep_name", name_null},
    {"scep_name", name_empty},       {"scep_name", name_long},
    {"topic", topic_null},           {"topic", topic_empty},
    {"topic", topic_other},          {"topic", topic_prefix},
    {"topic", topic_space},          {"topic", topic_case},
    {"challenge", chal_null},        {"challenge", chal_empty},
    {"challenge", chal_ctrl},        {"challenge", chal_tab},
    {"device_cn", cn_null},          {"device_cn", cn_empty},
    {"device_cn", cn_long},          {"ca_der", ca_null},
    {"ca_der", ca_zero},             {"ca_der", ca_junk},
    {"ca_der", ca_cut},              {"ca_der", ca_huge},
    {"ca_der", ca_leaf},             {"access_rights", ar_zero},
    {"access_rights", ar_high},      {"access_rights", ar_all_high},
    {"access_rights", ar_2_alone},   {"access_rights", ar_128_no_64},
    {"access_rights", ar_all_but_1}, {"access_rights", ar_all_but_64},
};

static void test_refusals(void)
{
    memset(long_text, 'x', sizeof(long_text) - 1);
    snprintf(long_url, sizeof(long_url), "https://");
    memset(long_url + 8, 'h', sizeof(long_url) - 9);
    /* The boundaries themselves are fine. */
    static char cn64[65], text_max[MDM_ENROLL_FIELD_MAX + 1];
    memset(cn64, 'c', 64);
    memset(text_max, 't', MDM_ENROLL_FIELD_MAX);
    mdm_enroll_profile_spec_t s = good_spec();
    s.device_cn = cn64;
    s.organization = cn64;
    s.challenge = text_max;
    s.access_rights = 1;
    mdm_buf_t xml;
    mdm_buf_init(&xml, 0);
    char err[256];
    CHECK_EQ_INT(mdm_enroll_profile_build(&s, &xml, NULL, err, sizeof(err)), 0);
    for (size_t i = 0; i < MDM_ARRAY_LEN(refusals); i++) {
        s = good_spec();
        refusals[i].mutate(&s);
        mdm_buf_reset(&xml);
        CHECK_EQ_INT(mdm_buf_append_str(&xml, "keep"), 0);
        snprintf(err, sizeof(err), "(none)");
        mdm_enroll_profile_ids_t ids;
        memset(&ids, 0x5a, sizeof(ids));
        int r = mdm_enroll_profile_build(&s, &xml, &ids, err, sizeof(err));
        size_t n = strlen(refusals[i].field);
        bool named = strncmp(err, refusals[i].field, n) == 0 && err[n] == ':';
        if (r != -EINVAL || !named)
            fprintf(stderr, "refusal #%zu (%s): %d, \"%s\"\n", i, refusals[i].field, r, err);
        CHECK_EQ_INT(r, -EINVAL);
        CHECK(named);
        CHECK(xml.len == 4);
        CHECK(((unsigned char *)&ids)[0] == 0x5a);
    }
    /* err may be NULL. */
    s = good_spec();
    s.topic = "nope";
    CHECK_EQ_INT(mdm_enroll_profile_build(&s, &xml, NULL, NULL, 0), -EINVAL);
    mdm_buf_dispose(&xml);
}

/* ---- signing --------------------------------------------------------------------------- */

static void test_sign(void)
{
    mdm_buf_t xml, der, content, cert, want;
    mdm_buf_init(&xml, 0);
    mdm_buf_init(&der, 0);
    mdm_buf_init(&content, 0);
    mdm_buf_init(&cert, 0);
    mdm_buf_init(&want, 0);
    mdm_enroll_profile_spec_t s = good_spec();
    CHECK_EQ_INT(mdm_enroll_profile_build(&s, &xml, NULL, NULL, 0), 0);
    int64_t now = (int64_t)time(NULL);

    /* EC signer (as mdmd init makes it) with the CA inside, and an RSA signer. */
    static const char *const signers[] = {"sign", "rsign"};
    for (size_t i = 0; i < MDM_ARRAY_LEN(signers); i++) {
        char key[64], crt[64];
        snprintf(key, sizeof(key), "%s.key", signers[i]);
        snprintf(crt, sizeof(crt), "%s.pem", signers[i]);
        mdm_buf_reset(&der);
        int r = mdm_enroll_profile_sign(check_path(dir, key), check_path(dir, crt), check_path(dir, "ca.pem"),
                                        mdm_buf_head(&xml), xml.len, &der);
        if (r != 0)
            fprintf(stderr, "sign %s: %s\n", signers[i], mdm_strerror(r));
        CHECK_EQ_INT(r, 0);
        mdm_buf_reset(&content);
        mdm_buf_reset(&cert);
        CHECK_EQ_INT(mdm_cms_verify_attached(mdm_buf_head(&der), der.len, &content, &cert), 0);
        CHECK(buf_eq(&content, &xml));
        der_of(signers[i], &want);
        CHECK(buf_eq(&cert, &want));
        CHECK_EQ_INT(mdm_cms_cert_verify_chain(mdm_buf_head(&cert), cert.len, check_path(dir, "ca.pem"),
                                               now),
                     0);
        /* The detached verifier accepts it for exactly this content. */
        mdm_buf_reset(&cert);
        CHECK_EQ_INT(mdm_cms_verify_detached(mdm_buf_head(&der), der.len, mdm_buf_head(&xml),
                                             xml.len, &cert),
                     0);
        CHECK_EQ_INT(mdm_cms_verify_detached(mdm_buf_head(&der), der.len, "other", 5, &cert),
                     MDM_ECRYPTO);
        if (!have_openssl)
            continue;
        char file[64];
        snprintf(file, sizeof(file), "%s.mobileconfig", signers[i]);
        CHECK_EQ_INT(mdm_file_write_atomic(check_path(dir, file), mdm_buf_head(&der), der.len, 0644), 0);
        CHECK_EQ_INT(check_sh("openssl cms -verify -inform DER -in '%s' -CAfile '%s' -purpose any "
                        "-out '%s'",
                        check_path(dir, file), check_path(dir, "ca.pem"), check_path(dir, "cms.out")),
                     0);
        CHECK(slurp(check_path(dir, "cms.out"), &content) && buf_eq(&content, &xml));
        CHECK_EQ_INT(check_sh("openssl smime -verify -inform DER -in '%s' -CAfile '%s' -purpose any "
                        "-out '%s'",
                        check_path(dir, file), check_path(dir, "ca.pem"), check_path(dir, "smime.out")),
                     0);
        CHECK(slurp(check_path(dir, "smime.out"), &content) && buf_eq(&content, &xml));
        /* Two certificates inside: the signer and the CA. */
        CHECK_EQ_INT(check_sh("test \"$(openssl pkcs7 -inform DER -in '%s' -print_certs | "
                        "grep -c '^subject=')\" = 2",
                        check_path(dir, file)),
                     0);
        /* Another CA does not vouch for it. */
        CHECK(check_sh("openssl cms -verify -inform DER -in '%s' -CAfile '%s' -purpose any "
                 "-out /dev/null",
                 check_path(dir, file), check_path(dir, "other.pem")) != 0);
    }

    /* A signer under an intermediate: the chain inside lets openssl get to the root. */
    mdm_buf_reset(&der);
    CHECK_EQ_INT(mdm_enroll_profile_sign(check_path(dir, "isign.key"), check_path(dir, "isign.pem"), check_path(dir, "int.pem"),
                                         mdm_buf_head(&xml), xml.len, &der),
                 0);
    if (have_openssl) {
        CHECK_EQ_INT(mdm_file_write_atomic(check_path(dir, "i.mobileconfig"), mdm_buf_head(&der), der.len,
                                           0644),
                     0);
        CHECK_EQ_INT(check_sh("openssl cms -verify -inform DER -in '%s' -CAfile '%s' -purpose any "
                        "-out /dev/null",
                        check_path(dir, "i.mobileconfig"), check_path(dir, "ca.pem")),
                     0);
    }
    /* Without the chain, openssl cannot. */
    mdm_buf_reset(&der);
    CHECK_EQ_INT(mdm_enroll_profile_sign(check_path(dir, "isign.key"), check_path(dir, "isign.pem"), NULL,
                                         mdm_buf_head(&xml), xml.len, &der),
                 0);
    if (have_openssl) {
        CHECK_EQ_INT(mdm_file_write_atomic(check_path(dir, "n.mobileconfig"), mdm_buf_head(&der), der.len,
                                           0644),
                     0);
        CHECK(check_sh("openssl cms -verify -inform DER -in '%s' -CAfile '%s' -purpose any "
                 "-out /dev/null",
                 check_path(dir, "n.mobileconfig"), check_path(dir, "ca.pem")) != 0);
    }
    /* A chain file holding the signer too (leaf + intermediate): the copy is skipped. */
    CHECK_EQ_INT(check_sh("cat '%s' '%s' > '%s'", check_path(dir, "isign.pem"), check_path(dir, "int.pem"),
                    check_path(dir, "ichain.pem")),
                 0);
    mdm_buf_reset(&der);
    CHECK_EQ_INT(mdm_enroll_profile_sign(check_path(dir, "isign.key"), check_path(dir, "ichain.pem"),
                                         check_path(dir, "ichain.pem"), mdm_buf_head(&xml), xml.len, &der),
                 0);
    mdm_buf_reset(&content);
    mdm_buf_reset(&cert);
    CHECK_EQ_INT(mdm_cms_verify_attached(mdm_buf_head(&der), der.len, &content, &cert), 0);
    der_of("isign", &want);
    CHECK(buf_eq(&cert, &want) && buf_eq(&content, &xml));
    if (have_openssl) {
        CHECK_EQ_INT(mdm_file_write_atomic(check_path(dir, "c.mobileconfig"), mdm_buf_head(&der), der.len,
                                           0644),
                     0);
        CHECK_EQ_INT(check_sh("test \"$(openssl pkcs7 -inform DER -in '%s' -print_certs | "
                        "grep -c '^subject=')\" = 2",
                        check_path(dir, "c.mobileconfig")),
                     0);
    }

    mdm_buf_dispose(&xml);
    mdm_buf_dispose(&der);
    mdm_buf_dispose(&content);
    mdm_buf_dispose(&cert);
    mdm_buf_dispose(&want);
}

static void test_verify_attached(void)
{
    static const char doc[] = "<plist version=\"1.0\"><dict/></plist>\n";
    mdm_buf_t der, content, cert;
    mdm_buf_init(&der, 0);
    mdm_buf_init(&content, 0);
    mdm_buf_init(&cert, 0);

    /* Tampering with the encapsulated content. */
    CHECK_EQ_INT(mdm_cms_sign(check_path(dir, "sign.key"), check_path(dir, "sign.pem"), NULL, doc, strlen(doc),
                              MDM_CMS_ENCAPSULATED, &der),
                 0);
    uint8_t *at = memmem(mdm_buf_head(&der), der.len, "dict/", 5);
    CHECK(at != NULL);
    if (at) {
        at[0] = 'D';
        CHECK_EQ_INT(mdm_buf_append_str(&content, "keep"), 0);
        CHECK_EQ_INT(mdm_cms_verify_attached(mdm_buf_head(&der), der.len, &content, &cert),
                     MDM_ECRYPTO);
        CHECK(content.len == 4 && cert.len == 0);
        at[0] = 'd';
    }
    /* Truncations fail cleanly. */
    int wrong = 0;
    for (size_t n = 0; n < der.len; n += 7) {
        mdm_buf_reset(&content);
        if (mdm_cms_verify_attached(mdm_buf_head(&der), n, &content, &cert) == 0)
            wrong++;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(cert.len, 0);
    /* Output limits leave both outputs unchanged. */
    mdm_buf_t small;
    mdm_buf_init(&small, 10);
    mdm_buf_reset(&content);
    CHECK_EQ_INT(mdm_cms_verify_attached(mdm_buf_head(&der), der.len, &content, &small),
                 MDM_ETOOBIG);
    CHECK(content.len == 0 && small.len == 0);
    CHECK_EQ_INT(mdm_cms_verify_attached(mdm_buf_head(&der), der.len, &small, &cert),
                 MDM_ETOOBIG);
    CHECK(small.len == 0 && cert.len == 0);
    mdm_buf_dispose(&small);

    /* A detached signature has no content to return. */
    mdm_buf_reset(&der);
    CHECK_EQ_INT(mdm_cms_sign(check_path(dir, "sign.key"), check_path(dir, "sign.pem"), check_path(dir, "ca.pem"), doc,
                              strlen(doc), MDM_CMS_DETACHED, &der),
                 0);
    mdm_buf_reset(&content);
    int r = mdm_cms_verify_attached(mdm_buf_head(&der), der.len, &content, &cert);
    CHECK_EQ_INT(r, -EBADMSG);
    CHECK(content.len == 0 && cert.len == 0);
    CHECK_EQ_INT(mdm_cms_verify_attached((const uint8_t *)"", 0, &content, &cert), -EBADMSG);

    /* openssl's attached signatures (a profile to re-sign) open with ours. */
    if (have_openssl) {
        if (mdm_file_write_atomic(check_path(dir, "doc"), doc, strlen(doc), 0644) != 0)
            exit(99);
        static const char *const opts[] = {"", "-noattr", "-certfile '%s'"};
        for (size_t i = 0; i < MDM_ARRAY_LEN(opts); i++) {
            char extra[PATH_MAX + 32];
            snprintf(extra, sizeof(extra), opts[i], check_path(dir, "ca.pem"));
            CHECK_EQ_INT(check_sh("openssl cms -sign -nodetach -binary -outform DER -signer '%s' "
                            "-inkey '%s' %s -in '%s' -out '%s'",
                            check_path(dir, "rsign.pem"), check_path(dir, "rsign.key"), extra, check_path(dir, "doc"),
                            check_path(dir, "ossl.der")),
                         0);
            uint8_t *d = NULL;
            size_t dl = 0;
            if (mdm_file_read(check_path(dir, "ossl.der"), 1 << 20, &d, &dl) != 0)
                exit(99);
            mdm_buf_reset(&content);
            mdm_buf_reset(&cert);
            r = mdm_cms_verify_attached(d, dl, &content, &cert);
            if (r != 0)
                fprintf(stderr, "openssl attached %zu: %s\n", i, mdm_strerror(r));
            CHECK_EQ_INT(r, 0);
            CHECK(content.len == strlen(doc) && memcmp(mdm_buf_head(&content), doc,
                                                       content.len) == 0);
            mdm_buf_t want;
            mdm_buf_init(&want, 0);
            der_of("rsign", &want);
            CHECK(buf_eq(&cert, &want));
            mdm_buf_dispose(&want);
            free(d);
        }
        /* openssl's detached one: no content. */
        CHECK_EQ_INT(check_sh("openssl cms -sign -binary -outform DER -signer '%s' -inkey '%s' "
                        "-in '%s' -out '%s'",
                        check_path(dir, "sign.pem"), check_path(dir, "sign.key"), check_path(dir, "doc"), check_path(dir, "odet.der")),
                     0);
        uint8_t *d = NULL;
        size_t dl = 0;
        if (mdm_file_read(check_path(dir, "odet.der"), 1 << 20, &d, &dl) != 0)
            exit(99);
        mdm_buf_reset(&content);
        mdm_buf_reset(&cert);
        r = mdm_cms_verify_attached(d, dl, &content, &cert);
        CHECK_EQ_INT(r, -EBADMSG);
        CHECK(content.len == 0 && cert.len == 0);
        free(d);
    }
    mdm_buf_dispose(&der);
    mdm_buf_dispose(&content);
    mdm_buf_dispose(&cert);
}

static void test_sign_errors(void)
{
    static const char doc[] = "<plist/>";
    mdm_buf_t der;
    mdm_buf_init(&der, 0);
    CHECK_EQ_INT(mdm_enroll_profile_sign(check_path(dir, "nope.key"), check_path(dir, "sign.pem"), NULL, doc, 8, &der),
                 -ENOENT);
    CHECK_EQ_INT(mdm_enroll_profile_sign(check_path(dir, "sign.key"), check_path(dir, "nope.pem"), NULL, doc, 8, &der),
                 -ENOENT);
    CHECK_EQ_INT(mdm_enroll_profile_sign(check_path(dir, "sign.key"), check_path(dir, "sign.pem"), check_path(dir, "nope.pem"),
                                         doc, 8, &der),
                 -ENOENT);
    /* A key file as the chain: no certificate in it. */
    CHECK_EQ_INT(mdm_enroll_profile_sign(check_path(dir, "sign.key"), check_path(dir, "sign.pem"), check_path(dir, "ca.key"),
                                         doc, 8, &der),
                 MDM_ECERT);
    /* Garbage DER as the chain. */
    if (mdm_file_write_atomic(check_path(dir, "junk.der"), "junkjunk", 8, 0644) != 0)
        exit(99);
    CHECK_EQ_INT(mdm_enroll_profile_sign(check_path(dir, "sign.key"), check_path(dir, "sign.pem"), check_path(dir, "junk.der"),
                                         doc, 8, &der),
                 MDM_ECERT);
    /* More than MDM_CMS_EXTRA_CERTS_MAX certificates. */
    CHECK_EQ_INT(check_sh("for i in 1 2 3 4 5; do cat '%s' '%s'; done > '%s'", check_path(dir, "ca.pem"),
                    check_path(dir, "other.pem"), check_path(dir, "many.pem")),
                 0);
    CHECK_EQ_INT(mdm_enroll_profile_sign(check_path(dir, "sign.key"), check_path(dir, "sign.pem"), check_path(dir, "many.pem"),
                                         doc, 8, &der),
                 MDM_ETOOBIG);
    /* The key of another certificate: what it signs does not verify. */
    int r = mdm_enroll_profile_sign(check_path(dir, "rsign.key"), check_path(dir, "sign.pem"), NULL, doc, 8, &der);
    if (r == 0) {
        mdm_buf_t content, cert;
        mdm_buf_init(&content, 0);
        mdm_buf_init(&cert, 0);
        CHECK(mdm_cms_verify_attached(mdm_buf_head(&der), der.len, &content, &cert) != 0);
        mdm_buf_dispose(&content);
        mdm_buf_dispose(&cert);
    } else {
        CHECK_EQ_INT(r, MDM_ECRYPTO);
    }
    /* An output limit. */
    mdm_buf_t small;
    mdm_buf_init(&small, 16);
    CHECK_EQ_INT(mdm_enroll_profile_sign(check_path(dir, "sign.key"), check_path(dir, "sign.pem"), NULL, doc, 8,
                                         &small),
                 MDM_ETOOBIG);
    CHECK_EQ_INT(small.len, 0);
    mdm_buf_dispose(&small);
    mdm_buf_dispose(&der);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("enroll-profile"));
    have_openssl = check_sh("command -v openssl") == 0;
    if (!have_openssl)
        fprintf(stderr, "openssl CLI not found: skipping the cross-checks\n");
    make("ca", NULL, "mdmd Device CA", true, MDM_X509_KEY_EC_P256);
    make("sign", "ca", "mdmd Profile Signing", false, MDM_X509_KEY_EC_P256);
    make("rsign", "ca", "mdmd Profile Signing RSA", false, MDM_X509_KEY_RSA_2048);
    make("int", "ca", "mdmd Intermediate CA", true, MDM_X509_KEY_EC_P256);
    make("isign", "int", "mdmd Profile Signing (intermediate)", false, MDM_X509_KEY_EC_P256);
    make("other", NULL, "Other CA", true, MDM_X509_KEY_EC_P256);
    mdm_buf_init(&ca_der, 0);
    mdm_buf_init(&int_der, 0);
    mdm_buf_init(&leaf_der, 0);
    der_of("ca", &ca_der);
    der_of("int", &int_der);
    der_of("sign", &leaf_der);

    test_schema_yaml();
    test_build();
    test_refusals();
    test_sign();
    test_verify_attached();
    test_sign_errors();

    mdm_buf_dispose(&ca_der);
    mdm_buf_dispose(&int_der);
    mdm_buf_dispose(&leaf_der);
    mdm_tls_thread_cleanup();
    mdm_tls_global_cleanup();
    if (check_failed == 0)
        check_sh("rm -rf '%s'", dir);
    return check_finish("enroll_profile");
}
