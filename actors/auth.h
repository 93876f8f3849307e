/*
 * actors/auth: checking who someone is, for enrollment sign-on.
 *
 * - Password and PIN hashes: argon2id (libargon2) with a random 16-byte salt, stored as the
 *   standard encoded string ("$argon2id$v=19$m=65536,t=3,p=1$<salt>$<hash>"), so the
 *   parameters travel with each hash and can be raised later without invalidating old ones.
 *   Verification recomputes the hash with the stored parameters and compares in constant time.
 * - Directory ("Domain") sign-on: a simple bind against LDAP (libldap, OpenLDAP 2.5): bind as
 *   a service account (or anonymously), find the user's entry with a filter, bind as that entry
 *   with the password, read display name, mail and groups.
 *
 * THREADS: every function here that hashes, verifies or talks to a directory BLOCKS (argon2id
 * with the default parameters takes 64 MiB and a few hundred milliseconds; LDAP waits for the
 * network, bounded by timeout_ms). Run them on a worker thread (core/workers), NEVER on a
 * shard thread. They are reentrant: nothing is shared between calls.
 *
 * Secrets: passwords and PINs are borrowed for the call only; nothing here copies, stores or
 * logs them. Error texts (err) never contain them.
 */
#ifndef MDM_ACTORS_AUTH_H
#define MDM_ACTORS_AUTH_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

/* ---- password and PIN hashing ------------------------------------------------------------ */

#define MDM_PASSWORD_MIN 1
#define MDM_PASSWORD_MAX 1024   /* bytes */
#define MDM_PIN_MIN 4           /* ASCII digits */
#define MDM_PIN_MAX 16
#define MDM_AUTH_ENCODED_MAX 127 /* longest encoded string within the parameter bounds below */

/** argon2id cost parameters. Bounds (-EINVAL outside): t 1..16, m 8*p..1048576 KiB, p 1..8. */
struct mdm_argon2_params {
    uint32_t t_cost;      /* passes over memory */
    uint32_t m_cost_kib;  /* memory in KiB */
    uint32_t parallelism; /* lanes (threads) */
};

/** The defaults: t=3, m=64 MiB, p=1 (used when params is NULL). */
extern const struct mdm_argon2_params mdm_argon2_defaults;

/**
 * Hashes len bytes of password (MDM_PASSWORD_MIN..MDM_PASSWORD_MAX; any bytes) with a fresh
 * random salt and writes the encoded string and a NUL into out (size bytes; at least
 * MDM_AUTH_ENCODED_MAX + 1 is always enough). params NULL = mdm_argon2_defaults. BLOCKS.
 * Returns 0; -EINVAL (empty or too long password, parameters out of bounds); MDM_ETOOBIG (out
 * too small); MDM_ECRYPTO (no random bytes or an argon2 failure); -ENOMEM. out is "" unless 0.
 */
MDM_MUST_CHECK int mdm_password_hash(const struct mdm_argon2_params *params, const void *password,
                                     size_t len, char *out, size_t size);

/**
 * Checks len bytes of password against an encoded argon2id string (constant-time compare).
 * BLOCKS for as long as hashing with the stored parameters takes. Returns 0 (match); -EACCES
 * (mismatch, or an empty or too long password: nothing is computed then); -EINVAL (encoded is
 * not an argon2id string within the parameter bounds); -ENOMEM; MDM_ECRYPTO (other argon2
 * failure).
 */
MDM_MUST_CHECK int mdm_password_verify(const char *encoded, const void *password, size_t len);

/**
 * Spends the time of a verification against a hash made with params (NULL = defaults) without
 * a hash to compare with: call it for unknown users so that a sign-on takes as long whether
 * the user exists or not. BLOCKS.
 */
void mdm_password_verify_dummy(const struct mdm_argon2_params *params);

/**
 * PINs (invitations): a NUL-terminated string of MDM_PIN_MIN..MDM_PIN_MAX ASCII digits,
 * hashed and verified exactly like passwords. A PIN has little entropy: its hash protects it
 * only for as long as the invitation lives. Same returns as mdm_password_hash() /
 * mdm_password_verify(); -EINVAL (hash) or -EACCES (verify) for a PIN that is not digits of
 * that length.
 */
MDM_MUST_CHECK int mdm_pin_hash(const struct mdm_argon2_params *params, const char *pin,
                                char *out, size_t size);
MDM_MUST_CHECK int mdm_pin_verify(const char *encoded, const char *pin);

/* ---- LDAP ("Domain") authentication ------------------------------------------------------ */

/* Outcomes of mdm_ldap_authenticate() besides 0, -ENOMEM and -EINVAL: */
#define MDM_LDAP_EBADCRED (-EACCES)          /* wrong password, unknown or ambiguous user,
                                               * empty password: show one generic message */
#define MDM_LDAP_EUNAVAILABLE (-EHOSTUNREACH) /* cannot connect, TLS failure (untrusted or
                                               * mismatched certificate), timeout, server busy */
#define MDM_LDAP_ECONFIG MDM_ECONFIG          /* service bind refused (bad bind DN or password),
                                               * bad base DN, filter, URL or CA file */

#define MDM_LDAP_USER_MAX 256   /* bytes of a user name as typed */
#define MDM_LDAP_GROUPS_MAX 32
#define MDM_LDAP_TIMEOUT_MS_DEFAULT 10000

/** Directory settings; borrowed for the call only. Strings NULL or "" where optional. */
struct mdm_ldap_options {
    const char *url;           /* "ldap://host[:port]" or "ldaps://host[:port]"; required */
    bool starttls;             /* ldap:// only: StartTLS before binding */
    bool allow_plaintext;      /* allow ldap:// without StartTLS (passwords in clear): tests or
                                * a loopback directory only; otherwise MDM_LDAP_ECONFIG */
    const char *ca_file;       /* PEM CA certificates that verify the server; "" = the system
                                * trust store. The server name must match its certificate. */
    const char *bind_dn;       /* service account; "" = anonymous */
    const char *bind_password; /* of bind_dn */
    const char *base_dn;       /* subtree searched for users; required */
    const char *user_filter;   /* each "%s" becomes the RFC 4515-escaped user name, e.g.
                                * "(&(objectClass=inetOrgPerson)(uid=%s))"; required */
    const char *group_attr;    /* attribute of the user entry listing its groups as DNs or
                                * names (e.g. "memberOf"); "" = none */
    const char *group_filter;  /* search for the user's groups, "%s" = escaped user DN, "%u" =
                                * escaped user name, e.g.
                                * "(&(objectClass=groupOfNames)(member=%s))"; "" = none */
    const char *group_base_dn; /* subtree of group_filter; "" = base_dn */
    unsigned timeout_ms;       /* bound of the whole call (connect, TLS, binds, searches);
                                * 0 = MDM_LDAP_TIMEOUT_MS_DEFAULT */
};

/** What the directory says about a user who signed on. */
typedef struct mdm_ldap_user {
    char dn[512];
    char display_name[128]; /* displayName, else cn; "" when neither (cut at a UTF-8 boundary) */
    char email[256];        /* first mail value; "" */
    unsigned n_groups;
    /* Group names without duplicates: the cn of entries found by group_filter, and for
     * group_attr values the value of the first RDN when the value is a DN, else the value. */
    char groups[MDM_LDAP_GROUPS_MAX][128];
    bool groups_truncated;  /* more groups (or longer names) than fit were left out */
} mdm_ldap_user_t;

/**
 * Checks the options without contacting the directory (config load). Returns 0 or
 * MDM_LDAP_ECONFIG with the reason in err (errlen bytes; NULL allowed).
 */
MDM_MUST_CHECK int mdm_ldap_options_check(const struct mdm_ldap_options *opts, char *err,
                                          size_t errlen);

/**
 * Signs user on with password: connects (TLS as configured, certificate verified), binds as
 * bind_dn or anonymously, searches base_dn for user_filter (exactly one entry, else refused),
 * binds as that entry's DN with password, then reads the groups (as bind_dn again when one
 * is set, else as the user). An empty password is refused before any network traffic: a
 * simple bind with an empty password is an "unauthenticated bind" that servers accept. BLOCKS
 * for up to about timeout_ms (plus name resolution); the process must ignore SIGPIPE (mdmd
 * does). On 0, *out describes the user; otherwise *out is zeroed and err (errlen bytes, NULL
 * allowed) says why, for logs only (it may reveal whether the user exists; never shown to the
 * user, never holding the password).
 * Returns 0, MDM_LDAP_EBADCRED, MDM_LDAP_EUNAVAILABLE, MDM_LDAP_ECONFIG or -ENOMEM.
 */
MDM_MUST_CHECK int mdm_ldap_authenticate(const struct mdm_ldap_options *opts, const char *user,
                                         const char *password, mdm_ldap_user_t *out, char *err,
                                         size_t errlen);

/**
 * Escapes len bytes of value for an LDAP filter (RFC 4515): '*', '(', ')', '\', NUL and
 * control bytes become \XX. Writes a NUL-terminated string into out (size bytes; 3 * len + 1
 * is always enough). Returns 0 or MDM_ETOOBIG (out then holds "").
 */
MDM_MUST_CHECK int mdm_ldap_escape_filter(const char *value, size_t len, char *out, size_t size);

#endif
