/*
 * mdmd's configuration: one key table (actors/config.c) drives defaults, loading, the
 * template that `mdmd init` writes and docs/configuration.md.
 *
 * Paths in the file are relative to the instance folder; mdm_config_load resolves them.
 */
#ifndef MDM_ACTORS_CONFIG_H
#define MDM_ACTORS_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>

#include "core/cfg.h"

enum mdm_client_cert_mode { MDM_CLIENT_CERT_NONE, MDM_CLIENT_CERT_OPTIONAL, MDM_CLIENT_CERT_REQUIRED };
enum mdm_cfg_durability { MDM_CFG_DURABILITY_FSYNC, MDM_CFG_DURABILITY_WAL, MDM_CFG_DURABILITY_NONE };
enum mdm_cfg_log_format { MDM_CFG_LOG_PLAIN, MDM_CFG_LOG_JSON };
enum mdm_cfg_user_auth { MDM_CFG_USER_AUTH_DECLINE, MDM_CFG_USER_AUTH_DIGEST };
/* Who may enroll through the web enrollment link ([enroll] auth). */
enum mdm_cfg_enroll_auth {
    MDM_CFG_ENROLL_DOMAIN,         /* user name + password (local users, then LDAP) */
    MDM_CFG_ENROLL_DOMAIN_OTP,     /* the same + the PIN of a pending invitation of the user */
    MDM_CFG_ENROLL_INVITATION_OTP, /* invitation links only; the web link is closed */
};
/* How a Mac proves its identity on the TLS device listener ([mdm] identity). */
enum mdm_cfg_identity { MDM_CFG_IDENTITY_MTLS, MDM_CFG_IDENTITY_SIGNATURE, MDM_CFG_IDENTITY_EITHER };

typedef struct mdm_config {
    char dir[PATH_MAX]; /* the instance folder (not a key) */

    /* [server] */
    char instance[64];
    char hostnames[512];
    char device_listen[128];
    char device_plain_listen[128]; /* "" = no plain-HTTP device listener */
    char admin_listen[128];
    long long shards;
    long long max_connections;
    long long header_timeout_ms;
    long long idle_timeout_ms;
    long long shutdown_timeout_ms;
    long long max_header_bytes;
    long long max_body_bytes;
    int client_cert; /* enum mdm_client_cert_mode */

    /* [tls] */
    char tls_cert[PATH_MAX];
    char tls_key[PATH_MAX];
    char client_ca[PATH_MAX];
    bool session_tickets;

    /* [storage] */
    char db_path[PATH_MAX];
    int durability; /* enum mdm_cfg_durability */
    long long storage_threads;
    long long cache_mb;
    char secrets_key[PATH_MAX];

    /* [mdm] */
    long long mdm_max_body_bytes;
    long long command_ttl_hours;
    long long max_queue;
    long long verify_threads;
    int user_authenticate; /* enum mdm_cfg_user_auth */
    int identity;          /* enum mdm_cfg_identity */
    char identity_cas[1024]; /* comma-separated PEM files, besides [tls] client_ca */

    /* [apns] */
    char apns_url[256];     /* https://host[:port]: :authority, SNI and verified name */
    char apns_address[128]; /* IP:port to connect to; "" = the url's host when an IP literal */
    char apns_ca[PATH_MAX]; /* PEM trust anchors for the APNs server; "" = no verification */
    long long apns_coalesce_ms;
    long long apns_connections;
    long long apns_ping_interval_ms; /* PING an idle connection after this; 0 = never */

    /* [enroll] */
    bool otae_enabled;                  /* "Enable macOS OTAE": the web enrollment link */
    int enroll_auth;                    /* enum mdm_cfg_enroll_auth */
    long long max_failures;             /* failed sign-ons per user / source before lockout */
    long long failure_window_minutes;   /* failures count within this window */
    long long lockout_minutes;
    long long challenge_ttl_minutes;    /* SCEP challenge lifetime */
    long long device_cert_days;         /* validity of issued device identities */
    bool sign_message;                  /* the profile's SignMessage */
    long long access_rights;            /* the profile's AccessRights */
    char organization[64];              /* profile organisation, certificate O */
    long long enroll_threads;           /* enrollment worker pool */
    long long argon2_memory_kib;        /* argon2id cost of new hashes and dummy verifies */
    long long argon2_iterations;

    /* [ldap] */
    char ldap_url[256];                 /* "" = no directory */
    char ldap_bind_dn[512];
    char ldap_bind_password_file[PATH_MAX]; /* the bind password, in a file of mode 0600 */
    char ldap_base_dn[512];
    char ldap_user_filter[512];
    char ldap_group_attr[64];
    char ldap_group_base_dn[512];
    char ldap_group_filter[512];
    char ldap_ca_file[PATH_MAX];
    bool ldap_starttls;
    bool ldap_allow_plaintext;
    long long ldap_timeout_ms;

    /* [actors] */
    long long actors_in_memory;
    long long mailbox_size;
    /* [policies] */
    long long sweep_interval_minutes;

    /* [log] */
    int log_level; /* enum mdm_log_level */
    int log_format; /* enum mdm_cfg_log_format */
} mdm_config_t;

/** The key table and its length. */
extern const mdm_cfg_key_t mdm_config_keys[];
extern const size_t mdm_config_keys_len;

/** Sets every field to its default. */
void mdm_config_defaults(mdm_config_t *c);

/**
 * Loads DIR/mdmd.conf over the defaults and resolves relative paths against DIR.
 * Returns 0, -errno or MDM_ECONFIG with "file:line: reason" in err.
 */
int mdm_config_load(mdm_config_t *c, const char *dir, char *err, size_t errlen);

/** Overrides one key ("server.device_listen", "127.0.0.1:0"), e.g. from the command line. */
int mdm_config_override(mdm_config_t *c, const char *dotted_key, const char *value, char *err,
                        size_t errlen);

/**
 * Writes the full config file template: every key with its default and a comment.
 * hostnames_csv replaces the default of [server] hostnames (NULL keeps the default).
 * Returns 0 or -errno.
 */
int mdm_config_write_template(FILE *f, const char *hostnames_csv);

/** Resolves path against the instance dir into out (absolute paths are kept). */
void mdm_config_path(const mdm_config_t *c, const char *path, char *out, size_t outlen);

#endif
