/*
 * payload_schema: Apple's published schema for the configuration-profile payloads and MDM
 * commands mdmd produces, as C tables generated from spec/apple-device-management by
 * tools/gen-payload-schema.py (actors/payload_schema.c is generated and committed; a meson
 * test regenerates it and diffs, so the tables are the spec).
 *
 * Only what macOS has is in the tables: keys whose macOS 'introduced' is 'n/a' or that were
 * removed from macOS are left out. A key named "ANY" stands for any key name (an open
 * dictionary). An array's sub lists the forms its items may take (usually one, the Settings
 * command has one per Item).
 *
 * Threads: read-only data.
 */
#ifndef MDM_ACTORS_PAYLOAD_SCHEMA_H
#define MDM_ACTORS_PAYLOAD_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mdm_ptype {
    MDM_PT_STRING,
    MDM_PT_BOOL,
    MDM_PT_INT,
    MDM_PT_REAL,
    MDM_PT_DATA,
    MDM_PT_DATE,
    MDM_PT_DICT,
    MDM_PT_ARRAY,
    MDM_PT_ANY,
};

/* The name every schema gives a wildcard key. */
#define MDM_PKEY_ANY "ANY"

typedef struct mdm_pkey {
    const char *name;
    enum mdm_ptype type;
    bool required;
    const char *const *rangelist_str; /* allowed values (n_rangelist), one of the three or none */
    const int64_t *rangelist_int;
    const double *rangelist_real;
    unsigned n_rangelist;
    bool has_min, has_max; /* range of a number */
    double min, max;
    int rep_min, rep_max;  /* on an array item: how many items the array holds (0 = any) */
    const char *format;    /* POSIX extended regular expression a string matches, or NULL */
    const struct mdm_pkey *sub; /* dict: its keys; array: its item forms */
    unsigned n_sub;
} mdm_pkey_t;

typedef struct mdm_payload_schema {
    const char *type;  /* PayloadType, or RequestType for a command */
    const char *title;
    bool is_command;
    const mdm_pkey_t *keys;
    unsigned n_keys;
} mdm_payload_schema_t;

extern const mdm_payload_schema_t mdm_payload_schemas[];
extern const size_t mdm_payload_schemas_count;

/** The profile payload schema of payload_type ("TopLevel" and "CommonPayloadKeys" too), or
 * NULL when mdmd's vendored schema does not know it. */
const mdm_payload_schema_t *mdm_payload_schema_find(const char *payload_type);

/** The command schema of request_type, or NULL. */
const mdm_payload_schema_t *mdm_command_schema_find(const char *request_type);

/** The key named name in keys (n), else the "ANY" wildcard when keys has one, else NULL. */
const mdm_pkey_t *mdm_pkey_find(const mdm_pkey_t *keys, unsigned n, const char *name);

/** Human name of a type: "string", "boolean", ... */
const char *mdm_ptype_name(enum mdm_ptype t);

#endif
