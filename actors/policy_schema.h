/*
 * policy_schema: checks settings (JSON) and profile payloads (plist) against the generated
 * payload_schema tables, and converts checked JSON into plist values.
 *
 * Internal to the policy catalog (actors/policy_*.c). JSON stands for plist types thus:
 * string -> <string>; true/false -> <true/>/<false/>; integer -> <integer>; number ->
 * <real>; a string of strict base64 (or a PEM certificate, turned into its DER) -> <data>;
 * an ISO-8601 UTC time "2025-01-31T12:00:00Z" (or with a +hh:mm offset) -> <date>;
 * object -> <dict>; array -> <array>. Keys typed "any" convert by their JSON type.
 *
 * Error messages name the path ("settings.Applications[1].BundleID: expected a string").
 *
 * Threads: reentrant.
 */
#ifndef MDM_ACTORS_POLICY_SCHEMA_H
#define MDM_ACTORS_POLICY_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <plist/plist.h>

#include "actors/payload_schema.h"
#include "core/buf.h"
#include "core/common.h"

#define MDM_SCHEMA_PATH_MAX 512

/* A growing "settings.A[1].B" path; each push is undone by restoring len. */
typedef struct mdm_spath {
    char s[MDM_SCHEMA_PATH_MAX];
    size_t len;
} mdm_spath_t;

void mdm_spath_init(mdm_spath_t *p, const char *root);
/* Appends ".key" (or "key" at the root when the root is empty); returns the old length. */
size_t mdm_spath_key(mdm_spath_t *p, const char *key);
size_t mdm_spath_index(mdm_spath_t *p, size_t i);
static inline void mdm_spath_pop(mdm_spath_t *p, size_t len)
{
    p->len = len;
    p->s[len] = '\0';
}

/**
 * Checks a JSON object against keys (n): unknown keys (owner names the payload in the
 * message), missing required keys, and each value. -EINVAL with err set, or 0.
 */
MDM_MUST_CHECK int mdm_schema_check_json(const mdm_pkey_t *keys, unsigned n, const json_t *obj,
                                         const char *owner, mdm_spath_t *path, char *err,
                                         size_t errlen);

/** The same checks on a plist dictionary (an imported profile's payload). */
MDM_MUST_CHECK int mdm_schema_check_plist(const mdm_pkey_t *keys, unsigned n, plist_t dict,
                                          const char *owner, mdm_spath_t *path, char *err,
                                          size_t errlen);

/**
 * Adds every member of obj (checked against keys) to the plist dictionary dict, converted
 * as the header describes. keys may be NULL (n 0): then conversion goes by JSON type.
 * Returns 0, -ENOMEM, or -EINVAL for a value that does not convert (unchecked input).
 */
MDM_MUST_CHECK int mdm_schema_json_to_plist(const mdm_pkey_t *keys, unsigned n,
                                            const json_t *obj, plist_t dict);

/** Decodes a data value (strict base64, or a PEM certificate to DER) into out. 0 or -EINVAL/-ENOMEM. */
MDM_MUST_CHECK int mdm_schema_decode_data(const char *s, mdm_buf_t *out);

/** Parses an ISO-8601 time into Unix seconds. 0 or -EINVAL. */
MDM_MUST_CHECK int mdm_schema_parse_date(const char *s, int64_t *out);

/** True when key names a secret (a password, shared secret, challenge...). */
bool mdm_schema_is_secret_key(const char *key);

#endif
