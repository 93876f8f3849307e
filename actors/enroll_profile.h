/*
 * The enrollment profile: the signed .mobileconfig a Mac installs to enroll in mdmd.
 *
 * One profile per enrollment, generated on demand (a user finishing web enrollment, an
 * invitation being opened). It holds three payloads, as Apple's profile schema defines them
 * (shared/apple-device-management/mdm/profiles/):
 *
 *   com.apple.security.root    the instance CA certificate (DER), so the Mac trusts mdmd's
 *                              TLS server and device identities (com.apple.security.pkcs1
 *                              when the CA is not self-issued, i.e. an intermediate);
 *   com.apple.security.scep    how to get the device identity: SCEP URL, CA name, subject
 *                              (CN = the device name chosen by the server, O = organisation),
 *                              the one-time challenge, RSA 2048, signing + encryption;
 *   com.apple.mdm              ServerURL, CheckInURL, APNs topic, IdentityCertificateUUID
 *                              (= the SCEP payload's PayloadUUID), AccessRights, SignMessage,
 *                              CheckOutWhenRemoved, ServerCapabilities (per-user connections,
 *                              bootstrap token).
 *
 * Every PayloadUUID is fresh and random (uppercase RFC 4122 version 4) on each build, so two
 * profiles never share one. The XML is signed into a CMS SignedData that encapsulates it
 * (served as application/x-apple-aspen-config); macOS shows it "Verified" when it trusts the
 * signing chain.
 *
 * Threads: any; nothing is shared between calls. Signing reads key files (blocking I/O):
 * call it from a worker or the CLI, not from a shard's loop.
 */
#ifndef MDM_ACTORS_ENROLL_PROFILE_H
#define MDM_ACTORS_ENROLL_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/common.h"
#include "core/crypto.h"

/* AccessRights bits (com.apple.mdm.yaml). */
#define MDM_ENROLL_ACCESS_PROFILE_INSPECT 1u       /* inspect configuration profiles */
#define MDM_ENROLL_ACCESS_PROFILE_INSTALL 2u       /* install/remove them; needs 1 */
#define MDM_ENROLL_ACCESS_LOCK 4u                  /* device lock and passcode removal */
#define MDM_ENROLL_ACCESS_ERASE 8u                 /* device erase */
#define MDM_ENROLL_ACCESS_DEVICE_INFO 16u          /* query device information */
#define MDM_ENROLL_ACCESS_NETWORK_INFO 32u         /* query network information */
#define MDM_ENROLL_ACCESS_PROVPROFILE_INSPECT 64u  /* inspect provisioning profiles */
#define MDM_ENROLL_ACCESS_PROVPROFILE_INSTALL 128u /* install/remove them; needs 64 */
#define MDM_ENROLL_ACCESS_APPS_INSPECT 256u        /* inspect installed applications */
#define MDM_ENROLL_ACCESS_RESTRICTIONS 512u        /* restriction-related queries */
#define MDM_ENROLL_ACCESS_SECURITY 1024u           /* security-related queries */
#define MDM_ENROLL_ACCESS_SETTINGS 2048u           /* manipulation of settings */
#define MDM_ENROLL_ACCESS_APP_MANAGEMENT 4096u     /* app management */
#define MDM_ENROLL_ACCESS_ALL 8191u                /* every bit above */

/* Fixed SCEP parameters (com.apple.security.scep.yaml). */
#define MDM_ENROLL_SCEP_KEYSIZE 2048    /* schema allows 1024, 2048, 4096 */
#define MDM_ENROLL_SCEP_KEY_USAGE 5     /* 1 signing | 4 encryption */
#define MDM_ENROLL_SCEP_RETRIES 3       /* after a PENDING reply (schema default) */
#define MDM_ENROLL_SCEP_RETRY_DELAY_S 10 /* between those retries (schema default) */

/* Limits of mdm_enroll_profile_spec_t. */
#define MDM_ENROLL_FIELD_MAX 2048      /* bytes of any string field */
#define MDM_ENROLL_CA_DER_MAX (64 * 1024)

/** What goes into one enrollment profile. Borrowed by mdm_enroll_profile_build() only. */
typedef struct mdm_enroll_profile_spec {
    const char *organization;      /* PayloadOrganization, display name "<org> MDM", SCEP O */
    const char *identifier_prefix; /* reverse DNS, e.g. "com.example.mdm": PayloadIdentifiers
                                    * are "<prefix>.enroll", "<prefix>.enroll.scep", ... */
    const char *server_url;        /* ServerURL (the connect endpoint); https:// */
    const char *checkin_url;       /* CheckInURL; https:// */
    const char *scep_url;          /* SCEP URL; https:// */
    const char *scep_name;         /* SCEP Name: the instance name, e.g. "zdm" */
    const char *topic;             /* APNs push topic, "com.apple.mgmt.External...." */
    const char *challenge;         /* one-time SCEP challenge */
    const char *device_cn;         /* CN of the requested device identity */
    const uint8_t *ca_der;         /* the instance CA certificate, DER */
    size_t ca_der_len;
    uint32_t access_rights;        /* MDM_ENROLL_ACCESS_* bits, e.g. MDM_ENROLL_ACCESS_ALL */
    bool sign_message;             /* SignMessage: devices send Mdm-Signature headers */
} mdm_enroll_profile_spec_t;

#define MDM_ENROLL_UUID_LEN MDM_UUID_LEN /* core/crypto.h */

/** The PayloadUUIDs of a built profile, e.g. to record with the enrollment. */
typedef struct mdm_enroll_profile_ids {
    char profile_uuid[MDM_ENROLL_UUID_LEN + 1]; /* the top level */
    char ca_uuid[MDM_ENROLL_UUID_LEN + 1];
    char scep_uuid[MDM_ENROLL_UUID_LEN + 1]; /* = IdentityCertificateUUID */
    char mdm_uuid[MDM_ENROLL_UUID_LEN + 1];
} mdm_enroll_profile_ids_t;

/**
 * Checks spec and appends the profile's XML property list to xml. ids (may be NULL) receives
 * the fresh PayloadUUIDs. On -EINVAL, err (when errlen > 0) names the field and the rule,
 * e.g. "server_url: must start with https://"; the rules: every string present, non-empty, at
 * most MDM_ENROLL_FIELD_MAX bytes, without control characters; identifier_prefix of letters,
 * digits, '-', '_' and non-empty dot-separated labels; the three URLs start with "https://"
 * and name a host; topic starts with "com.apple.mgmt." and goes on; ca_der is one parsable
 * CA certificate of at most MDM_ENROLL_CA_DER_MAX bytes; access_rights non-zero, within
 * MDM_ENROLL_ACCESS_ALL, with 1 whenever 2 and 64 whenever 128 (Apple's rules).
 * Returns 0; -EINVAL (xml unchanged); MDM_ECRYPTO when no random UUID can be made; -ENOMEM;
 * MDM_ETOOBIG when xml would exceed its limit (xml unchanged).
 */
MDM_MUST_CHECK int mdm_enroll_profile_build(const mdm_enroll_profile_spec_t *spec,
                                            mdm_buf_t *xml, mdm_enroll_profile_ids_t *ids,
                                            char *err, size_t errlen);

/**
 * Signs len (> 0) bytes of profile XML into a DER CMS SignedData that encapsulates it (a signed
 * .mobileconfig), appended to der: signed with the key in key_path by the certificate in
 * cert_path (the instance's signing/signing.key and signing/signing.crt), carrying the
 * certificates of chain_path too when it is not NULL (the instance's ca/ca.crt, or an
 * operator's intermediates) so that the Mac can build the chain.
 * Blocks on file reads. Returns the codes of mdm_cms_sign() (core/cms.h): 0; MDM_ECRYPTO
 * (key unusable, signing failed); MDM_ECERT (certificate unreadable); MDM_ETOOBIG; -ENOMEM;
 * -errno from reading the files.
 */
MDM_MUST_CHECK int mdm_enroll_profile_sign(const char *key_path, const char *cert_path,
                                           const char *chain_path, const void *xml, size_t len,
                                           mdm_buf_t *der);

#endif
