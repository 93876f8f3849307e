/*
 * policy_catalog: the 22 kinds of device policy mdmd knows, what their settings look like,
 * and what a Mac gets for each (a configuration profile and/or MDM commands).
 *
 * Settings are a JSON object. For profile policies they are the payload's own keys as Apple's
 * schema names them (spec/apple-device-management, tables in actors/payload_schema.c); the
 * keys every payload carries (PayloadType, PayloadIdentifier, PayloadUUID, PayloadVersion,
 * PayloadDisplayName, ...) are mdmd's and refused, except PayloadType where a policy picks one
 * of several payloads. JSON stands for plist types as in actors/policy_schema.h: base64 (or
 * PEM certificate) strings for <data>, ISO-8601 strings for <date>.
 *
 *   airplay          com.apple.airplay keys
 *   app_inventory    {"interval_hours": 1..168 (default 24), "ManagedAppsOnly": bool}
 *                    -> InstalledApplicationList, resent every interval_hours
 *   app_uninstall    {"Identifier": bundle id} -> RemoveApplication
 *   caldav           com.apple.caldav.account keys
 *   carddav          com.apple.carddav.account keys
 *   credentials      {"PayloadType": "com.apple.security.root" | ".pkcs1" | ".pem" | ".pkcs12",
 *                     "PayloadContent": base64 DER or PEM certificate (pkcs12: base64
 *                     PKCS#12), "Password" (pkcs12, secret), other keys of that payload}
 *   device_name      {"DeviceName": "Mac-{serial}"} -> Settings/DeviceName; variables {serial}
 *                    {udid} {user} {user_full_name} {model} {device_name}
 *   exchange         com.apple.ews.account keys, "PayloadType" optional (macOS has no EAS)
 *   filevault        com.apple.MCX.FileVault2 keys; mdmd adds the escrow certificate
 *                    (pkcs1) and com.apple.security.FDERecoveryKeyEscrow
 *   firewall         com.apple.security.firewall keys
 *   font             {"Name": optional, "Font": base64 TTF/OTF}
 *   import_profile   {"mobileconfig": base64 .mobileconfig (signed or plain XML),
 *                     "allow_unknown_payloads": bool}
 *   ldap             com.apple.ldap.account keys
 *   mail             com.apple.mail.managed keys
 *   network          {"PayloadType": "com.apple.wifi.managed" or an Ethernet 802.1X payload
 *                     type (com.apple.firstethernet.managed, ...), other keys of that payload}
 *   os_update        {"SoftwareUpdate": {com.apple.SoftwareUpdate keys}, "ScheduleOSUpdate":
 *                     {keys of one Updates item}, "scan": bool}: at least one of them
 *   passcode         com.apple.mobiledevice.passwordpolicy keys
 *   profile_removal  {"Identifier": profile identifier} -> RemoveProfile
 *   restrictions     {"applicationaccess": {...}, "applicationaccess.new": {...},
 *                     "systempreferences": {...}, "preference.security": {...},
 *                     "systemuiserver": {...}}: each object holds the keys of the payload
 *                    "com.apple." + its name; at least one
 *   scep             com.apple.security.scep PayloadContent keys (URL, Name, Subject,
 *                    Challenge (secret), Keysize, "Key Type", "Key Usage", ...), or
 *                    {"ca": "instance", other keys but URL/Name/Challenge}: mdmd's own SCEP
 *                    service, its CA as a root payload, a per-device challenge
 *   vpn              com.apple.vpn.managed keys
 *   webclip          com.apple.webClip.managed keys (Icon: base64 PNG)
 *
 * Threads: reentrant; the catalog is constant data.
 */
#ifndef MDM_ACTORS_POLICY_CATALOG_H
#define MDM_ACTORS_POLICY_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <plist/plist.h>

#include "core/buf.h"
#include "core/common.h"

typedef struct mdm_policy_type mdm_policy_type_t; /* opaque */

/** The type named name ("airplay", ...), or NULL if unknown. */
const mdm_policy_type_t *mdm_policy_type_find(const char *name);
size_t mdm_policy_type_count(void);
/** The i-th type (i < count), in alphabetical order of names; NULL past the end. */
const mdm_policy_type_t *mdm_policy_type_at(size_t i);
const char *mdm_policy_type_name(const mdm_policy_type_t *t);  /* "airplay" */
const char *mdm_policy_type_title(const mdm_policy_type_t *t); /* "AirPlay mirroring" */
/** True when the type delivers a profile (removal = RemoveProfile of its identifier). */
bool mdm_policy_type_is_profile(const mdm_policy_type_t *t);

/**
 * Validates settings (a JSON object). Returns 0, or -EINVAL with err naming the key path and
 * the rule, e.g. "settings.Applications[1].BundleID: expected a string",
 * "settings.LoggingOption: 'x' is not one of throttled, brief, detail",
 * "settings.Foo: unknown key for com.apple.security.firewall". -ENOMEM.
 */
MDM_MUST_CHECK int mdm_policy_validate(const mdm_policy_type_t *t, const json_t *settings,
                                       char *err, size_t errlen);

/** True when this type's output for these settings depends on the device (a template
 * variable, a per-device SCEP challenge): the engine builds it per device. */
bool mdm_policy_needs_device(const mdm_policy_type_t *t, const json_t *settings);

/* ---- secrets ----------------------------------------------------------------------------
 * A secret is the string value of a key named Password, AuthPassword, CalDAVPassword,
 * CardDAVPassword, Challenge, HTTPProxyPassword, IncomingPassword, LDAPAccountPassword,
 * OutgoingPassword, ProxyPassword, SharedSecret, UserPassword, XAuthPassword,
 * PayloadCertificatePassword, PIN or Passphrase, at any depth.
 * The secrets object mirrors the settings' shape: objects keep their key names, arrays
 * become objects keyed by the decimal index ("0", "1", ...), leaves are the secret strings.
 */

/**
 * Splits valid settings into *public_out (a copy without secret values) and *secrets_out
 * (NULL when there is none), such that mdm_policy_merge_secrets(public, secrets) equals
 * settings. Returns 0, -EINVAL (settings not an object), -ENOMEM.
 */
MDM_MUST_CHECK int mdm_policy_split_secrets(const mdm_policy_type_t *t, const json_t *settings,
                                            json_t **public_out, json_t **secrets_out);

/** public_settings with secrets put back (a new reference; secrets may be NULL); NULL on
 * -ENOMEM. */
json_t *mdm_policy_merge_secrets(const json_t *public_settings, const json_t *secrets);

/** The paths of the secrets in settings, relative to it ("Password",
 * "Passwords[0].Password"), as a new JSON array (empty when none); NULL on -ENOMEM. */
json_t *mdm_policy_secret_paths(const mdm_policy_type_t *t, const json_t *settings);

/* ---- building --------------------------------------------------------------------------- */

/** Where a policy is going; any field may be "" (never NULL). */
typedef struct mdm_policy_device {
    const char *udid, *serial, *device_name, *model, *os_version, *user_short_name,
        *user_full_name, *user_email;
} mdm_policy_device_t;

typedef struct mdm_policy_env {
    const char *identifier_prefix; /* e.g. "com.example.mdm" */
    const char *organization;
    const uint8_t *escrow_cert_der; /* FileVault PRK escrow certificate (instance) */
    size_t escrow_cert_der_len;
    const char *escrow_location; /* FDERecoveryKeyEscrow Location shown to users */
    const uint8_t *ca_der;       /* the instance CA (SCEP policy with ca="instance") */
    size_t ca_der_len;
    const char *scep_url;
    const char *scep_name;
    const char *scep_challenge; /* a fresh one-time challenge for this device, or NULL */
} mdm_policy_env_t;

typedef struct mdm_policy_meta {
    const char *id, *name;
    uint32_t version;
    const char *profile_identifier; /* stable; the top-level PayloadIdentifier */
} mdm_policy_meta_t;

#define MDM_POLICY_COMMANDS_MAX 8

typedef struct mdm_policy_output {
    mdm_buf_t profile_xml; /* unsigned .mobileconfig XML; len 0 when the policy has no profile */
    plist_t commands[MDM_POLICY_COMMANDS_MAX]; /* Command dicts (with RequestType); owned */
    unsigned n_commands;
    bool per_device;            /* depends on the device: not shareable between devices */
    uint32_t repeat_interval_s; /* > 0: resend the commands every this many seconds */
} mdm_policy_output_t;

void mdm_policy_output_init(mdm_policy_output_t *o);
void mdm_policy_output_dispose(mdm_policy_output_t *o);

/**
 * Builds what a Mac gets for this policy from the FULL settings (secrets merged), which are
 * validated again first. A profile has PayloadIdentifier meta->profile_identifier, a fresh
 * PayloadUUID on every build, PayloadScope System; each payload has the stable identifier
 * "<profile_identifier>.<PayloadType>" and a fresh UUID. out must be freshly initialised.
 * Returns 0; -EINVAL (err says why: invalid settings, a template naming an unknown
 * variable, no escrow certificate for FileVault, no challenge for an instance SCEP policy);
 * -ENOMEM; MDM_ECRYPTO (no random bytes). On failure out holds nothing.
 */
MDM_MUST_CHECK int mdm_policy_build(const mdm_policy_type_t *t, const json_t *settings,
                                    const mdm_policy_meta_t *meta, const mdm_policy_env_t *env,
                                    const mdm_policy_device_t *dev, mdm_policy_output_t *out,
                                    char *err, size_t errlen);

#endif
