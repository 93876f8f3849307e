/*
 * mdmd's configuration keys. This table is the single source of truth for defaults,
 * validation, the template written by `mdmd init` and docs/configuration.md.
 */
#include "actors/config.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/common.h"

static const char *const client_cert_modes[] = {"none", "optional", "required", NULL};
static const char *const durabilities[] = {"fsync", "wal", "none", NULL};
static const char *const user_auths[] = {"decline", "digest", NULL};
/* enum mdm_cfg_identity order */
static const char *const identities[] = {"mtls", "signature", "either", NULL};
/* enum mdm_cfg_enroll_auth order */
static const char *const enroll_auths[] = {"domain", "domain_otp", "invitation_otp", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL}; /* enum mdm_log_level order */
static const char *const log_formats[] = {"plain", "json", NULL};

#define STR(sec, key, field, def, help)                                                     \
    {sec, key, MDM_CFG_STRING, offsetof(mdm_config_t, field),                               \
     sizeof(((mdm_config_t *)0)->field), def, 0, 0, NULL, help}
#define INT(sec, key, field, def, lo, hi, help)                                             \
    {sec, key, MDM_CFG_INT, offsetof(mdm_config_t, field), 0, def, lo, hi, NULL, help}
#define BOOL(sec, key, field, def, help)                                                    \
    {sec, key, MDM_CFG_BOOL, offsetof(mdm_config_t, field), 0, def, 0, 0, NULL, help}
#define ENUM(sec, key, field, def, choices, help)                                           \
    {sec, key, MDM_CFG_ENUM, offsetof(mdm_config_t, field), 0, def, 0, 0, choices, help}

const mdm_cfg_key_t mdm_config_keys[] = {
    STR("server", "instance", instance, "zdm",
        "path prefix of the device endpoints: https://<host>:<port>/<instance>/..."),
    STR("server", "hostnames", hostnames, "localhost,127.0.0.1,::1",
        "comma-separated DNS names and IP addresses Macs use to reach this server "
        "(the TLS certificate must name each)"),
    STR("server", "device_listen", device_listen, "0.0.0.0:8443",
        "address:port of the device-facing HTTPS listener ([::]:8443 for IPv6)"),
    STR("server", "device_plain_listen", device_plain_listen, "",
        "address:port of a plain-HTTP device listener behind a TLS-terminating proxy "
        "(Mdm-Signature only); empty = none"),
    STR("server", "admin_listen", admin_listen, "127.0.0.1:9443",
        "address:port of the admin HTTPS listener (API and console)"),
    INT("server", "shards", shards, "0", 0, 256,
        "event-loop threads, one io_uring ring each; 0 = one per CPU"),
    INT("server", "max_connections", max_connections, "10000", 1, 10000000,
        "open connections per shard; past it new connections get 503"),
    INT("server", "header_timeout_ms", header_timeout_ms, "10000", 100, 3600000,
        "for the TLS handshake and a request's headers, and between pieces of a body (408)"),
    INT("server", "idle_timeout_ms", idle_timeout_ms, "60000", 100, 86400000,
        "keep-alive connections idle this long are closed"),
    INT("server", "shutdown_timeout_ms", shutdown_timeout_ms, "10000", 0, 600000,
        "on SIGTERM/SIGINT, how long in-flight requests may take to finish"),
    INT("server", "max_header_bytes", max_header_bytes, "16384", 1024, 1048576,
        "request line plus headers; larger requests get 431"),
    INT("server", "max_body_bytes", max_body_bytes, "1048576", 1024, 268435456,
        "request body limit for routes that set none; larger bodies get 413"),
    ENUM("server", "client_cert", client_cert, "optional", client_cert_modes,
         "TLS client certificates on the device listener, verified against [tls] client_ca"),

    STR("tls", "cert", tls_cert, "tls/chain.pem",
        "server certificate chain (PEM, leaf first) for both listeners"),
    STR("tls", "key", tls_key, "tls/server.key", "private key of the server certificate (PEM)"),
    STR("tls", "client_ca", client_ca, "ca/ca.crt",
        "CA that issues device identity certificates; client certificates must chain to it"),
    BOOL("tls", "session_tickets", session_tickets, "true",
         "TLS session resumption with tickets (a resumed handshake costs a fraction of a full one)"),

    STR("storage", "path", db_path, "db", "RocksDB folder"),
    ENUM("storage", "durability", durability, "fsync", durabilities,
         "fsync: WAL + fsync before any acknowledgement; wal: survives a crash of mdmd but not "
         "of the machine; none: no WAL (benchmarks only)"),
    INT("storage", "threads", storage_threads, "2", 1, 64,
        "storage worker threads (commits and cold reads run there, never on a shard)"),
    INT("storage", "cache_mb", cache_mb, "64", 8, 65536, "RocksDB block cache size in MiB"),
    STR("storage", "secrets_key", secrets_key, "secrets.key",
        "32-byte key that seals secrets at rest (AES-256-GCM); mode 0600"),

    INT("mdm", "max_body_bytes", mdm_max_body_bytes, "16777216", 4096, 268435456,
        "largest check-in or command response a Mac may send (an app list can be megabytes)"),
    INT("mdm", "command_ttl_hours", command_ttl_hours, "720", 0, 87600,
        "queued commands not yet sent expire after this many hours; 0 = never"),
    INT("mdm", "verify_threads", verify_threads, "2", 1, 256,
        "threads that verify Mdm-Signature (kept off the shard threads)"),
    INT("mdm", "max_queue", max_queue, "1000", 1, 1000000,
        "commands waiting per device; more are refused with 409"),
    ENUM("mdm", "user_authenticate", user_authenticate, "decline", user_auths,
         "UserAuthenticate check-ins: decline (410, the user channel is not managed) or "
         "digest (answer with an empty DigestChallenge)"),
    ENUM("mdm", "identity", identity, "either", identities,
         "how Macs prove their identity: mtls (TLS client certificate), signature "
         "(Mdm-Signature header), either (the certificate if presented, else the header)"),
    STR("mdm", "identity_cas", identity_cas, "",
        "comma-separated PEM files of more CAs that issue identities for Mdm-Signature "
        "(besides [tls] client_ca)"),

    STR("apns", "url", apns_url, "https://api.push.apple.com:443",
        "APNs endpoint; its host is the :authority, TLS server name and certificate name "
        "(sandbox: https://api.sandbox.push.apple.com; empty = no pushes)"),
    STR("apns", "address", apns_address, "",
        "IP:port ([v6]:port) to connect to instead of resolving url's host (resolved again "
        "every 5 minutes, each address tried in turn)"),
    STR("apns", "ca", apns_ca, "/etc/ssl/certs/ca-certificates.crt",
        "PEM trust anchors for the APNs server certificate; empty = no verification (tests only)"),
    INT("apns", "coalesce_ms", apns_coalesce_ms, "1000", 0, 3600000,
        "at most one push per device per this many ms; one more at the window's end if "
        "commands still wait"),
    INT("apns", "connections", apns_connections, "4", 1, 16,
        "most HTTP/2 connections to APNs per shard: one opens when there is something to push, "
        "another while every open one is at the server's stream limit"),
    INT("apns", "ping_interval_ms", apns_ping_interval_ms, "60000", 0, 3600000,
        "HTTP/2 PING on a connection idle this long (an extra one is closed instead); no ack "
        "within as long (1 to 10 s) closes it (0 = no pings)"),

    BOOL("enroll", "otae_enabled", otae_enabled, "true",
         "Enable macOS OTAE: the web enrollment link /<instance>/macos/otae (false: invitations "
         "only; the link answers 403)"),
    ENUM("enroll", "auth", enroll_auth, "domain", enroll_auths,
         "web link sign-on: domain (user name + password), domain_otp (also the PIN of a pending "
         "invitation), invitation_otp (invitation links only)"),
    INT("enroll", "max_failures", max_failures, "5", 1, 1000,
        "failed sign-ons per user name and per source address within the window before a "
        "lockout"),
    INT("enroll", "failure_window_minutes", failure_window_minutes, "15", 1, 10080,
        "failed sign-ons count within this many minutes"),
    INT("enroll", "lockout_minutes", lockout_minutes, "15", 1, 10080,
        "how long a user name or source address stays locked out"),
    INT("enroll", "challenge_ttl_minutes", challenge_ttl_minutes, "60", 1, 10080,
        "lifetime of the one-time SCEP challenge in an enrollment profile"),
    INT("enroll", "device_cert_days", device_cert_days, "365", 1, 3650,
        "validity of the device identity certificates SCEP issues"),
    BOOL("enroll", "sign_message", sign_message, "false",
         "SignMessage in the enrollment profile: Macs sign every request (Mdm-Signature)"),
    INT("enroll", "access_rights", access_rights, "8191", 1, 8191,
        "AccessRights of the enrollment profile (bits; 8191 = all)"),
    STR("enroll", "organization", organization, "mdmd",
        "organisation shown in the enrollment profile and put into device certificates (O)"),
    INT("enroll", "threads", enroll_threads, "2", 1, 64,
        "enrollment worker threads (password hashing, LDAP, SCEP, profile signing)"),
    INT("enroll", "argon2_memory_kib", argon2_memory_kib, "65536", 8, 1048576,
        "argon2id memory (KiB) of new password and PIN hashes and of the check for unknown "
        "users"),
    INT("enroll", "argon2_iterations", argon2_iterations, "3", 1, 16,
        "argon2id passes of new password and PIN hashes and of the check for unknown users"),

    STR("ldap", "url", ldap_url, "",
        "directory for Domain sign-on: ldaps://host[:port] or ldap://host[:port]; empty = no "
        "LDAP (local users only)"),
    STR("ldap", "bind_dn", ldap_bind_dn, "", "service account that searches for users; empty = "
        "anonymous"),
    STR("ldap", "bind_password_file", ldap_bind_password_file, "",
        "file holding bind_dn's password, mode 0600 (passwords never go into mdmd.conf)"),
    STR("ldap", "base_dn", ldap_base_dn, "", "subtree searched for users"),
    STR("ldap", "user_filter", ldap_user_filter, "(&(objectClass=inetOrgPerson)(uid=%s))",
        "filter finding a user; %s = the escaped user name (Active Directory: "
        "(sAMAccountName=%s))"),
    STR("ldap", "group_attr", ldap_group_attr, "",
        "attribute of the user entry listing its groups (e.g. memberOf); empty = none"),
    STR("ldap", "group_base_dn", ldap_group_base_dn, "",
        "subtree searched with group_filter; empty = base_dn"),
    STR("ldap", "group_filter", ldap_group_filter, "",
        "filter finding the user's groups; %s = user DN, %u = user name; empty = none"),
    STR("ldap", "ca_file", ldap_ca_file, "",
        "PEM CA certificates that verify the directory's TLS certificate; empty = system store"),
    BOOL("ldap", "starttls", ldap_starttls, "false", "ldap:// URLs: StartTLS before binding"),
    BOOL("ldap", "allow_plaintext", ldap_allow_plaintext, "false",
         "allow ldap:// without StartTLS (passwords in clear): a loopback directory or tests only"),
    INT("ldap", "timeout_ms", ldap_timeout_ms, "10000", 100, 120000,
        "bound of one sign-on against the directory (connect, TLS, binds, searches)"),

    INT("actors", "max_in_memory", actors_in_memory, "100000", 16, 100000000,
        "actors kept in memory per shard; idle ones past this are evicted and reloaded on demand"),
    INT("actors", "mailbox_size", mailbox_size, "64", 1, 65536,
        "messages an actor may have waiting; more are refused with 503"),

    INT("policies", "sweep_interval_minutes", sweep_interval_minutes, "60", 0, 10080,
        "every so often each managed Mac is reconciled with its policies and asked for its "
        "ProfileList (drift repair, app inventory repeats); 0 = never"),

    ENUM("log", "level", log_level, "info", log_levels, "least severe level logged"),
    ENUM("log", "format", log_format, "plain", log_formats, "plain lines or JSON lines on stderr"),
};
const size_t mdm_config_keys_len = MDM_ARRAY_LEN(mdm_config_keys);

void mdm_config_defaults(mdm_config_t *c)
{
    memset(c, 0, sizeof(*c));
    int ret = mdm_cfg_defaults(mdm_config_keys, mdm_config_keys_len, c);
    (void)ret; /* the table's defaults are valid; config_test checks it */
}

void mdm_config_path(const mdm_config_t *c, const char *path, char *out, size_t outlen)
{
    if (path[0] == '/' || c->dir[0] == '\0')
        snprintf(out, outlen, "%s", path);
    else
        snprintf(out, outlen, "%s/%s", c->dir, path);
}

static int check_semantics(const mdm_config_t *c, char *err, size_t errlen)
{
    if (strchr(c->instance, '/') || c->instance[0] == '\0') {
        snprintf(err, errlen, "server.instance: '%s' must be one non-empty path segment",
                 c->instance);
        return MDM_ECONFIG;
    }
    if (c->identity == MDM_CFG_IDENTITY_MTLS && c->client_cert == MDM_CLIENT_CERT_NONE) {
        snprintf(err, errlen, "mdm.identity = mtls needs server.client_cert = optional or "
                              "required (with none, no Mac could prove who it is)");
        return MDM_ECONFIG;
    }
    return 0;
}

int mdm_config_load(mdm_config_t *c, const char *dir, char *err, size_t errlen)
{
    mdm_config_defaults(c);
    snprintf(c->dir, sizeof(c->dir), "%s", dir);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/mdmd.conf", dir);
    int ret = mdm_cfg_load(mdm_config_keys, mdm_config_keys_len, c, path, err, errlen);
    if (ret != 0)
        return ret;
    if ((ret = check_semantics(c, err, errlen)) != 0) {
        char inner[512];
        snprintf(inner, sizeof(inner), "%s", err);
        snprintf(err, errlen, "%s: %s", path, inner);
    }
    return ret;
}

int mdm_config_override(mdm_config_t *c, const char *dotted_key, const char *value, char *err,
                        size_t errlen)
{
    char section[64];
    const char *dot = strchr(dotted_key, '.');
    if (!dot || (size_t)(dot - dotted_key) >= sizeof(section)) {
        snprintf(err, errlen, "'%s' is not section.key", dotted_key);
        return MDM_ECONFIG;
    }
    memcpy(section, dotted_key, (size_t)(dot - dotted_key));
    section[dot - dotted_key] = '\0';
    int ret = mdm_cfg_set(mdm_config_keys, mdm_config_keys_len, c, section, dot + 1, value, err,
                          errlen);
    if (ret == 0)
        ret = check_semantics(c, err, errlen);
    return ret;
}

static const char *template_override(const mdm_cfg_key_t *k, void *ctx)
{
    const char *hostnames = ctx;
    if (hostnames && strcmp(k->section, "server") == 0 && strcmp(k->name, "hostnames") == 0)
        return hostnames;
    return NULL;
}

int mdm_config_write_template(FILE *f, const char *hostnames_csv)
{
    fprintf(f, "# mdmd instance configuration. Every key is listed with its default.\n"
               "# Relative paths are relative to this folder. Reference: docs/configuration.md\n\n");
    return mdm_cfg_write_template(mdm_config_keys, mdm_config_keys_len, f, template_override,
                                  (void *)hostnames_csv);
}
