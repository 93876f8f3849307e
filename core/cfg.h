/*
 * cfg: table-driven INI configuration (read with inih).
 *
 * A program describes its keys once in a table (section, key, type, where the value lives
 * in its config struct, default, allowed range or choices, a comment). From that one table
 * cfg fills defaults, loads a file (rejecting unknown sections/keys and bad values with
 * "file:line: message"), and writes a commented template listing every key.
 */
#ifndef MDM_CORE_CFG_H
#define MDM_CORE_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum mdm_cfg_type {
    MDM_CFG_STRING, /* char[size] inside the struct */
    MDM_CFG_INT,    /* long long, within [min, max] */
    MDM_CFG_BOOL,   /* bool: true/false/yes/no/on/off/1/0 */
    MDM_CFG_ENUM,   /* int index into choices */
};

typedef struct mdm_cfg_key {
    const char *section;
    const char *name;
    enum mdm_cfg_type type;
    size_t offset;              /* offsetof(config struct, field) */
    size_t size;                /* MDM_CFG_STRING: capacity of the char array */
    const char *def;            /* default, as it would be written in the file */
    long long min, max;         /* MDM_CFG_INT bounds */
    const char *const *choices; /* MDM_CFG_ENUM: NULL-terminated names */
    const char *help;           /* one-line comment for the template and docs */
} mdm_cfg_key_t;

/** Fills every field of out from the defaults. Returns 0 or MDM_ECONFIG (bad table). */
int mdm_cfg_defaults(const mdm_cfg_key_t *keys, size_t n, void *out);

/**
 * Sets one key from text. Returns 0, or MDM_ECONFIG with a reason in err
 * ("unknown key", "must be between 1 and 256", ...).
 */
int mdm_cfg_set(const mdm_cfg_key_t *keys, size_t n, void *out, const char *section,
                const char *name, const char *value, char *err, size_t errlen);

/**
 * Loads path over the current values of out (call mdm_cfg_defaults first).
 * Returns 0, -errno when the file cannot be read, or MDM_ECONFIG with
 * "path:line: reason" in err.
 */
int mdm_cfg_load(const mdm_cfg_key_t *keys, size_t n, void *out, const char *path, char *err,
                 size_t errlen);

/**
 * Writes a template with every key, its default and comment, grouped by section.
 * override(key, ctx) may return a value to write instead of the default (or NULL).
 * Returns 0 or -EIO.
 */
int mdm_cfg_write_template(const mdm_cfg_key_t *keys, size_t n, FILE *f,
                           const char *(*override)(const mdm_cfg_key_t *key, void *ctx),
                           void *ctx);

/** Parses a boolean word; returns 0/1, or -1 when it is not one. */
int mdm_cfg_parse_bool(const char *s);

#endif
