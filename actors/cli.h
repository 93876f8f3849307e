/*
 * The admin command line: mdmd subcommands that talk to a running server's admin API over
 * HTTPS (core/https_client), so an operator never needs curl. See docs/api.md.
 *
 *   mdmd devices  DIR [--limit N] [--after UDID] [--serial S] [--enrolled true|false]
 *   mdmd device   DIR UDID
 *   mdmd send     DIR UDID[,UDID...] REQUEST_TYPE [KEY=STRING | KEY:=JSON]...
 *                     [--params-json JSON|@FILE] [--plist FILE] [--allow-unknown]
 *   mdmd commands DIR UDID [--limit N] [--after UUID]
 *   mdmd cancel   DIR UDID UUID
 *   mdmd delete-device DIR UDID --yes
 *   mdmd audit    DIR [--since MS] [--limit N] [--after ID]
 *   mdmd push-cert, push, users, invite, invitations, enrollments DIR ...
 *   mdmd policy-types, policies, policy-create, policy-update, policy-delete, policy-profile,
 *        deployments, device-policies, groups, group-create, group-update, group-delete,
 *        apps, device-apps DIR ...   (docs/policies-cli.md)
 *
 * mdm_cli_usage() prints the arguments of each.
 *
 * Common options: --json (print the API's JSON instead of a table), --url https://HOST:PORT
 * (default: admin_listen of DIR/mdmd.conf), --api-key KEY (default: $MDMD_API_KEY),
 * --ca FILE (default: DIR/ca/ca.crt).
 *
 * Runs on the main thread of the mdmd process; blocks on the network (bounded by timeouts).
 */
#ifndef MDM_ACTORS_CLI_H
#define MDM_ACTORS_CLI_H

#include <stdbool.h>
#include <stdio.h>

/** True when cmd names one of the subcommands above. */
bool mdm_cli_is_command(const char *cmd);

/**
 * Runs subcommand cmd with its arguments (argv[0] is the first argument after cmd). Output
 * goes to out, errors to err. Returns the process exit code: 0 success, 1 the API answered
 * an error, 2 usage error, 3 the server could not be reached.
 */
int mdm_cli_run(const char *cmd, int argc, char **argv, FILE *out, FILE *err);

/** Prints the usage lines of the subcommands to f. */
void mdm_cli_usage(FILE *f);

#endif
