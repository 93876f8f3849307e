/*
 * mdmd's configuration: the key table (section, key, default, comment) and the loaded values.
 * Being written; see config.c.
 */
#ifndef MDM_ACTORS_CONFIG_H
#define MDM_ACTORS_CONFIG_H

#include <stdio.h>

/**
 * Writes the full config file template: every key with its default and a comment.
 * hostnames_csv replaces the default of [server] hostnames (e.g. "mdm.example.com,127.0.0.1").
 * Returns 0 or -errno.
 */
int mdm_config_write_template(FILE *f, const char *hostnames_csv);

#endif
