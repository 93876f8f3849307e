/* Configuration: the mdmd key table, loading, errors with file:line, template round trip. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "actors/config.h"
#include "check.h"
#include "core/common.h"

static char dir[512];

static void write_conf(const char *text)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/mdmd.conf", dir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static int load(mdm_config_t *c, char *err, size_t len) { return mdm_config_load(c, dir, err, len); }

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("cfg"));
    mdm_config_t c;
    char err[1024];

    /* Defaults. */
    mdm_config_defaults(&c);
    CHECK_STR(c.instance, "zdm");
    CHECK_EQ_INT(c.shards, 0);
    CHECK_EQ_INT(c.durability, MDM_CFG_DURABILITY_FSYNC);
    CHECK_EQ_INT(c.client_cert, MDM_CLIENT_CERT_OPTIONAL);
    CHECK(c.session_tickets);

    /* The template lists every key and loads back to the defaults (hostnames overridden). */
    char path[600];
    snprintf(path, sizeof(path), "%s/mdmd.conf", dir);
    FILE *f = fopen(path, "w");
    CHECK_EQ_INT(mdm_config_write_template(f, "mdm.example.com,10.0.0.1"), 0);
    fclose(f);
    CHECK_EQ_INT(load(&c, err, sizeof(err)), 0);
    CHECK_STR(c.hostnames, "mdm.example.com,10.0.0.1");
    CHECK_EQ_INT(c.max_body_bytes, 1048576);
    f = fopen(path, "r");
    char text[16384];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    for (size_t i = 0; i < mdm_config_keys_len; i++) {
        char line[128];
        snprintf(line, sizeof(line), "\n%s = ", mdm_config_keys[i].name);
        CHECK(strstr(text, line) != NULL);
    }

    /* Values and paths. */
    write_conf("[server]\nshards = 3\nclient_cert = required\n[tls]\nsession_tickets = no\n"
               "[storage]\npath = /var/lib/mdmd/db\n[log]\nlevel = debug\nformat = json\n");
    CHECK_EQ_INT(load(&c, err, sizeof(err)), 0);
    CHECK_EQ_INT(c.shards, 3);
    CHECK_EQ_INT(c.client_cert, MDM_CLIENT_CERT_REQUIRED);
    CHECK(!c.session_tickets);
    CHECK_EQ_INT(c.log_level, 0);
    CHECK_EQ_INT(c.log_format, MDM_CFG_LOG_JSON);
    char resolved[PATH_MAX];
    mdm_config_path(&c, c.db_path, resolved, sizeof(resolved));
    CHECK_STR(resolved, "/var/lib/mdmd/db");
    mdm_config_path(&c, c.tls_key, resolved, sizeof(resolved));
    char expect[PATH_MAX + 32];
    snprintf(expect, sizeof(expect), "%s/tls/server.key", dir);
    CHECK_STR(resolved, expect);

    /* Errors name file:line and what is wrong. */
    write_conf("[server]\nshards = 2\nshrads = 2\n");
    CHECK_EQ_INT(load(&c, err, sizeof(err)), MDM_ECONFIG);
    CHECK(strstr(err, "mdmd.conf:3:") != NULL);
    CHECK(strstr(err, "unknown key 'shrads'") != NULL);

    write_conf("# comment\n[sever]\nshards = 2\n");
    CHECK_EQ_INT(load(&c, err, sizeof(err)), MDM_ECONFIG);
    CHECK(strstr(err, "mdmd.conf:3:") != NULL);
    CHECK(strstr(err, "unknown section [sever]") != NULL);

    write_conf("[server]\nshards = 999\n");
    CHECK_EQ_INT(load(&c, err, sizeof(err)), MDM_ECONFIG);
    CHECK(strstr(err, ":2:") != NULL && strstr(err, "between 0 and 256") != NULL);

    write_conf("[server]\n\nmax_connections = 12x\n");
    CHECK_EQ_INT(load(&c, err, sizeof(err)), MDM_ECONFIG);
    CHECK(strstr(err, ":3:") != NULL && strstr(err, "not a whole number") != NULL);

    write_conf("[storage]\ndurability = sometimes\n");
    CHECK_EQ_INT(load(&c, err, sizeof(err)), MDM_ECONFIG);
    CHECK(strstr(err, "fsync, wal, none") != NULL);

    write_conf("[tls]\nsession_tickets = maybe\n");
    CHECK_EQ_INT(load(&c, err, sizeof(err)), MDM_ECONFIG);
    CHECK(strstr(err, "not true or false") != NULL);

    write_conf("[server]\nthis line has no equals sign\n");
    CHECK_EQ_INT(load(&c, err, sizeof(err)), MDM_ECONFIG);
    CHECK(strstr(err, ":2:") != NULL);

    write_conf("[server]\ninstance = a/b\n");
    CHECK_EQ_INT(load(&c, err, sizeof(err)), MDM_ECONFIG);
    CHECK(strstr(err, "one non-empty path segment") != NULL);

    char longline[600];
    memset(longline, 'a', sizeof(longline));
    memcpy(longline, "[server]\nhostnames = ", 21);
    longline[sizeof(longline) - 2] = '\n';
    longline[sizeof(longline) - 1] = '\0';
    write_conf(longline);
    CHECK_EQ_INT(load(&c, err, sizeof(err)), MDM_ECONFIG);
    CHECK(strstr(err, ":2:") != NULL && strstr(err, "longer than") != NULL);

    snprintf(path, sizeof(path), "%s/nowhere", dir);
    CHECK(mdm_config_load(&c, path, err, sizeof(err)) < 0);
    CHECK(strstr(err, "No such file") != NULL);

    /* docs/configuration.md documents every key. */
    f = fopen(MDM_SOURCE_ROOT "/docs/configuration.md", "r");
    CHECK(f != NULL);
    if (f) {
        static char doc[65536];
        size_t dn = fread(doc, 1, sizeof(doc) - 1, f);
        doc[dn] = '\0';
        fclose(f);
        for (size_t i = 0; i < mdm_config_keys_len; i++) {
            char section[64], row[128];
            snprintf(section, sizeof(section), "## [%s]", mdm_config_keys[i].section);
            if (mdm_config_keys[i].def[0])
                snprintf(row, sizeof(row), "| `%s` | `%s` |", mdm_config_keys[i].name,
                         mdm_config_keys[i].def);
            else /* an empty default is an empty cell */
                snprintf(row, sizeof(row), "| `%s` | |", mdm_config_keys[i].name);
            const char *sec = strstr(doc, section);
            CHECK(sec != NULL && strstr(sec, row) != NULL);
            if (!sec || !strstr(sec, row))
                fprintf(stderr, "docs/configuration.md lacks %s %s\n", section, row);
        }
    }

    /* Overrides from the command line. */
    mdm_config_defaults(&c);
    CHECK_EQ_INT(mdm_config_override(&c, "server.device_listen", "127.0.0.1:0", err, sizeof(err)), 0);
    CHECK_STR(c.device_listen, "127.0.0.1:0");
    CHECK_EQ_INT(mdm_config_override(&c, "server.nope", "1", err, sizeof(err)), MDM_ECONFIG);
    CHECK_EQ_INT(mdm_config_override(&c, "noseparator", "1", err, sizeof(err)), MDM_ECONFIG);
    return check_finish("cfg");
}
