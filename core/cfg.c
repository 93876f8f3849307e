/*
 * cfg: table-driven INI configuration. See cfg.h.
 *
 * inih hands us (section, name, value) triples; a line-counting reader gives each triple
 * its line number so errors read "file:line: reason". Lines longer than inih's buffer are
 * refused rather than silently split.
 */
#include "core/cfg.h"

#include <errno.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

static const mdm_cfg_key_t *find_key(const mdm_cfg_key_t *keys, size_t n, const char *section,
                                     const char *name, bool *section_known)
{
    *section_known = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(keys[i].section, section) != 0)
            continue;
        *section_known = true;
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    }
    return NULL;
}

int mdm_cfg_parse_bool(const char *s)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return 1;
        if (strcasecmp(s, no[i]) == 0)
            return 0;
    }
    return -1;
}

static int set_value(const mdm_cfg_key_t *k, void *out, const char *value, char *err, size_t errlen)
{
    char *field = (char *)out + k->offset;
    switch (k->type) {
    case MDM_CFG_STRING:
        if (strlen(value) >= k->size) {
            snprintf(err, errlen, "%s.%s: value longer than %zu characters", k->section, k->name,
                     k->size - 1);
            return MDM_ECONFIG;
        }
        memcpy(field, value, strlen(value) + 1);
        return 0;
    case MDM_CFG_INT: {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0') {
            snprintf(err, errlen, "%s.%s: '%s' is not a whole number", k->section, k->name, value);
            return MDM_ECONFIG;
        }
        if (v < k->min || v > k->max) {
            snprintf(err, errlen, "%s.%s: %lld must be between %lld and %lld", k->section, k->name,
                     v, k->min, k->max);
            return MDM_ECONFIG;
        }
        memcpy(field, &v, sizeof(v));
        return 0;
    }
    case MDM_CFG_BOOL: {
        int b = mdm_cfg_parse_bool(value);
        if (b < 0) {
            snprintf(err, errlen, "%s.%s: '%s' is not true or false", k->section, k->name, value);
            return MDM_ECONFIG;
        }
        bool v = b == 1;
        memcpy(field, &v, sizeof(v));
        return 0;
    }
    case MDM_CFG_ENUM:
        for (int i = 0; k->choices[i]; i++) {
            if (strcmp(k->choices[i], value) == 0) {
                memcpy(field, &i, sizeof(i));
                return 0;
            }
        }
        {
            char allowed[256] = "";
            for (int i = 0; k->choices[i]; i++) {
                if (i)
                    strncat(allowed, ", ", sizeof(allowed) - strlen(allowed) - 1);
                strncat(allowed, k->choices[i], sizeof(allowed) - strlen(allowed) - 1);
            }
            snprintf(err, errlen, "%s.%s: '%s' is not one of: %s", k->section, k->name, value,
                     allowed);
        }
        return MDM_ECONFIG;
    }
    snprintf(err, errlen, "%s.%s: bad key type", k->section, k->name);
    return MDM_ECONFIG;
}

int mdm_cfg_defaults(const mdm_cfg_key_t *keys, size_t n, void *out)
{
    char err[256];
    for (size_t i = 0; i < n; i++)
        if (set_value(&keys[i], out, keys[i].def, err, sizeof(err)) != 0)
            return MDM_ECONFIG;
    return 0;
}

int mdm_cfg_set(const mdm_cfg_key_t *keys, size_t n, void *out, const char *section,
                const char *name, const char *value, char *err, size_t errlen)
{
    bool section_known;
    const mdm_cfg_key_t *k = find_key(keys, n, section, name, &section_known);
    if (!k) {
        if (section_known)
            snprintf(err, errlen, "unknown key '%s' in section [%s]", name, section);
        else
            snprintf(err, errlen, "unknown section [%s]", section);
        return MDM_ECONFIG;
    }
    return set_value(k, out, value, err, errlen);
}

struct load_state {
    const mdm_cfg_key_t *keys;
    size_t n;
    void *out;
    FILE *f;
    int line;          /* line most recently read */
    bool line_too_long;
    int error_line;
    char *err;
    size_t errlen;
};

/* inih reader that counts lines and refuses lines longer than inih's buffer. */
static char *read_line(char *str, int num, void *stream)
{
    struct load_state *st = stream;
    if (!fgets(str, num, st->f))
        return NULL;
    st->line++;
    size_t len = strlen(str);
    if (len == (size_t)num - 1 && str[len - 1] != '\n' && !feof(st->f)) {
        st->line_too_long = true;
        int c;
        while ((c = fgetc(st->f)) != EOF && c != '\n') {
        }
        str[0] = '\0'; /* hand inih an empty line; the error is reported after parsing */
        if (!st->error_line) {
            st->error_line = st->line;
            snprintf(st->err, st->errlen, "line longer than %d characters", num - 2);
        }
    }
    return str;
}

static int on_ini_value(void *user, const char *section, const char *name, const char *value)
{
    struct load_state *st = user;
    if (st->error_line)
        return 1;
    char reason[256];
    if (mdm_cfg_set(st->keys, st->n, st->out, section, name, value, reason, sizeof(reason)) != 0) {
        st->error_line = st->line;
        snprintf(st->err, st->errlen, "%s", reason);
        return 0;
    }
    return 1;
}

int mdm_cfg_load(const mdm_cfg_key_t *keys, size_t n, void *out, const char *path, char *err,
                 size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    char reason[512] = "";
    struct load_state st = {.keys = keys, .n = n, .out = out, .f = f, .err = reason,
                            .errlen = sizeof(reason)};
    int rc = ini_parse_stream(read_line, &st, on_ini_value, &st);
    fclose(f);
    if (st.error_line) {
        snprintf(err, errlen, "%s:%d: %s", path, st.error_line, reason);
        return MDM_ECONFIG;
    }
    if (rc > 0) {
        snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)", path, rc);
        return MDM_ECONFIG;
    }
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot parse", path);
        return MDM_ECONFIG;
    }
    return 0;
}

int mdm_cfg_write_template(const mdm_cfg_key_t *keys, size_t n, FILE *f,
                           const char *(*override)(const mdm_cfg_key_t *key, void *ctx),
                           void *ctx)
{
    const char *section = NULL;
    for (size_t i = 0; i < n; i++) {
        const mdm_cfg_key_t *k = &keys[i];
        if (!section || strcmp(section, k->section) != 0) {
            fprintf(f, "%s[%s]\n", section ? "\n" : "", k->section);
            section = k->section;
        }
        fprintf(f, "# %s", k->help);
        if (k->type == MDM_CFG_ENUM) {
            fprintf(f, " (");
            for (int c = 0; k->choices[c]; c++)
                fprintf(f, "%s%s", c ? ", " : "", k->choices[c]);
            fprintf(f, ")");
        } else if (k->type == MDM_CFG_INT) {
            fprintf(f, " (%lld..%lld)", k->min, k->max);
        }
        fprintf(f, "; default: %s\n", k->def[0] ? k->def : "(empty)");
        const char *v = override ? override(k, ctx) : NULL;
        fprintf(f, "%s = %s\n", k->name, v ? v : k->def);
    }
    return ferror(f) ? -EIO : 0;
}
