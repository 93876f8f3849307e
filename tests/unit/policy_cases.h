/*
 * The 22 policy cases shared by the catalog's unit test and the policy integration test: per
 * policy type a realistic settings object, what it must produce, a secret value in it (if
 * any), and a broken settings object with the key its refusal must name. Settings texts may
 * hold placeholders for fixture files (@CERT@ a certificate, @P12@ a PKCS#12 with the password
 * p12-s3cret, @FONT@ a TrueType header, @PNG@ a PNG header, @CFG@ a plain .mobileconfig, @SCFG@
 * the same signed), made by policy_cases_setup from the test certificates (MDM_TEST_DATA).
 */
#ifndef MDM_TEST_POLICY_CASES_H
#define MDM_TEST_POLICY_CASES_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct policy_case {
    const char *type;
    const char *valid;
    const char *expect;      /* payload types then "|" then request types, in order */
    const char *secret;      /* a secret value in valid (placeholders allowed), or NULL */
    const char *invalid;     /* refused settings */
    const char *invalid_key; /* what the refusal must name */
} policy_case_t;

extern const policy_case_t policy_cases[];
extern const size_t policy_cases_count;

/* Fixtures (base64 text), set by policy_cases_setup. */
extern char *policy_cert_b64, *policy_p12_b64, *policy_font_b64, *policy_png_b64,
    *policy_cfg_b64, *policy_signed_cfg_b64;
/* The test CA certificate (DER): the unit test's escrow certificate. */
extern uint8_t *policy_ca_der;
extern size_t policy_ca_der_len;

/** Makes the fixtures in the folder tmp (openssl); failures are CHECKs. */
void policy_cases_setup(const char *tmp);
/** base64 of len bytes (malloc'ed). */
char *policy_b64_of(const void *data, size_t len);
/** The plain .mobileconfig with extra_key inside its firewall payload and extra_payload after
 * it, base64 (malloc'ed). */
char *policy_cfg_variant(const char *extra_key, const char *extra_payload);
/** text with the placeholders replaced (malloc'ed). */
char *policy_case_text(const char *text);
/** The same, parsed (NULL when it is not JSON: a bug in the case). */
json_t *policy_case_settings(const char *text);

#endif
