/*
 * mdmd: the server and its command line.
 *
 *   mdmd init DIR [--hostnames a,b,c] [--force]
 *   mdmd check-certs DIR [FILE...]
 *   mdmd serve DIR [--set section.key=value]... [--device-listen A] [--admin-listen A]
 *                  [--shards N]
 *   mdmd config-template
 *   mdmd devices|device|send|commands|cancel|delete-device|audit|push-cert|push|users|...
 *        DIR ...   (the admin command line: actors/cli.h)
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/cli.h"
#include "actors/config.h"
#include "actors/instance.h"
#include "actors/serve.h"
#include "core/common.h"

#define MAX_OVERRIDES 64

static int usage(FILE *f, int code)
{
    fprintf(f,
            "usage:\n"
            "  mdmd init DIR [--hostnames NAME,...] [--force]\n"
            "      create an instance folder: config, CA, TLS and signing certificates,\n"
            "      secrets key, admin API key (printed once) and the database folder\n"
            "  mdmd check-certs DIR [FILE...]\n"
            "      check the instance's certificates (and FILEs) against Apple's rules\n"
            "  mdmd serve DIR [--set SECTION.KEY=VALUE]... [--device-listen ADDR:PORT]\n"
            "             [--admin-listen ADDR:PORT] [--shards N]\n"
            "      run the server until SIGINT/SIGTERM\n"
            "  mdmd config-template\n"
            "      print the configuration file with every key and its default\n");
    mdm_cli_usage(f);
    return code;
}

static int cmd_init(int argc, char **argv)
{
    const char *dir = NULL, *hostnames = NULL;
    bool force = false;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--force") == 0)
            force = true;
        else if (strcmp(argv[i], "--hostnames") == 0 && i + 1 < argc)
            hostnames = argv[++i];
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else
            return usage(stderr, 2);
    }
    if (!dir)
        return usage(stderr, 2);
    int ret = mdm_instance_init(dir, hostnames, force, stdout);
    if (ret != 0) {
        fprintf(stderr, "mdmd init: %s\n", mdm_strerror(ret));
        return 1;
    }
    return 0;
}

static int cmd_check_certs(int argc, char **argv)
{
    if (argc < 1)
        return usage(stderr, 2);
    mdm_config_t cfg;
    char err[1024];
    const char *hostnames = NULL;
    if (mdm_config_load(&cfg, argv[0], err, sizeof(err)) == 0)
        hostnames = cfg.hostnames;
    else
        fprintf(stderr, "mdmd check-certs: %s (checking without the configured host names)\n",
                err);
    int failures = mdm_instance_check_certs(argv[0], hostnames, (const char *const *)argv + 1,
                                            (size_t)(argc - 1), stdout);
    if (failures < 0) {
        fprintf(stderr, "mdmd check-certs: %s\n", mdm_strerror(failures));
        return 2;
    }
    printf("%d failure%s\n", failures, failures == 1 ? "" : "s");
    return failures == 0 ? 0 : 1;
}

static int cmd_serve(int argc, char **argv)
{
    const char *dir = NULL;
    const char *overrides[MAX_OVERRIDES];
    char owned[MAX_OVERRIDES][300];
    size_t n = 0;
    static const struct {
        const char *flag, *key;
    } shortcuts[] = {
        {"--device-listen", "server.device_listen"},
        {"--admin-listen", "server.admin_listen"},
        {"--shards", "server.shards"},
    };
    for (int i = 0; i < argc; i++) {
        bool matched = false;
        if (n == MAX_OVERRIDES)
            return usage(stderr, 2);
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            overrides[n++] = argv[++i];
            continue;
        }
        for (size_t s = 0; s < MDM_ARRAY_LEN(shortcuts); s++) {
            if (strcmp(argv[i], shortcuts[s].flag) == 0 && i + 1 < argc) {
                snprintf(owned[n], sizeof(owned[n]), "%s=%s", shortcuts[s].key, argv[++i]);
                overrides[n] = owned[n];
                n++;
                matched = true;
                break;
            }
        }
        if (matched)
            continue;
        if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else
            return usage(stderr, 2);
    }
    if (!dir)
        return usage(stderr, 2);
    return mdm_serve(dir, overrides, n, stdout);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr, 2);
    const char *cmd = argv[1];
    if (strcmp(cmd, "init") == 0)
        return cmd_init(argc - 2, argv + 2);
    if (strcmp(cmd, "check-certs") == 0)
        return cmd_check_certs(argc - 2, argv + 2);
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "config-template") == 0)
        return mdm_config_write_template(stdout, NULL) == 0 ? 0 : 1;
    if (mdm_cli_is_command(cmd))
        return mdm_cli_run(cmd, argc - 2, argv + 2, stdout, stderr);
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)
        return usage(stdout, 0);
    fprintf(stderr, "mdmd: unknown command '%s'\n", cmd);
    return usage(stderr, 2);
}
