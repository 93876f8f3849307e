/*
 * storage/enroll: typed records of enrollment (who may enroll) on top of store.h, all in the
 * column family MDM_CF_ENROLL: local users, invitations, SCEP challenges, enrollments and the
 * sign-on failure counters behind lockouts. Every record is a versioned binary encoding (a
 * format byte first, codecs in storage/enroll.c); decoding is strict: a truncated, corrupt or
 * unknown-format record, trailing bytes, an unknown enum value or flag bit, or a string longer
 * than its field read as -EBADMSG.
 *
 * Keys (a kind prefix, then the record's identifier; key fields are not repeated in values):
 *   "u/"  <user name>                  -> mdm_local_user_t
 *   "i/"  <invitation id, 32 hex>      -> mdm_invitation_t
 *   "c/"  <SHA-256 of the challenge, 32 raw bytes>  -> mdm_scep_challenge_t
 *   "e/"  <enrollment id, 32 hex>      -> mdm_enrollment_t
 *   "fu/" <user name>                  -> mdm_signon_failures_t (per user name)
 *   "fa/" <source address>             -> mdm_signon_failures_t (per source address)
 *   "ec/" <identity certificate SHA-256, 64 lowercase hex> -> enrollment id (the certificate
 *                                       SCEP issued for that enrollment; found at Authenticate)
 *   "rc/" <identity certificate SHA-256, 64 lowercase hex> -> mdm_revoked_cert_t (revoked by
 *                                       an administrator: SCEP renews it no more)
 * No prefix is a prefix of another, so each kind is one contiguous, separately listable range.
 *
 * Identifiers:
 * - local user names: 1..63 bytes of [A-Za-z0-9._@-], case-sensitive (mdm_user_name_valid);
 * - user names in invitations and enrollments may also name a directory (LDAP) user: 1..63
 *   bytes without control characters (mdm_user_ref_valid);
 * - invitation and enrollment ids: 32 lowercase hex digits (128 random bits, mdm_enroll_id_new);
 * - sign-on failure subjects: 1..63 bytes without NUL (the caller passes the canonical form:
 *   the user name as it looks it up, the address without port).
 * Writers assert them (the structs cannot hold longer ones); readers take them from the
 * network too, so they return -EINVAL for a bad one instead.
 *
 * Secrets: only argon2id encoded strings (actors/auth.h) are stored for passwords and PINs,
 * and only the SHA-256 of a SCEP challenge, never the values themselves.
 */
#ifndef MDM_STORAGE_ENROLL_H
#define MDM_STORAGE_ENROLL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/crypto.h"
#include "storage/mdm.h"
#include "storage/store.h"

#define MDM_USER_NAME_MAX 63
#define MDM_USER_GROUPS_MAX 16
#define MDM_GROUP_NAME_MAX 63
#define MDM_PASSWORD_HASH_MAX 191 /* an argon2id encoded string ("$argon2id$v=19$m=...") */
#define MDM_ENROLL_ID_LEN 32      /* hex digits of a 128-bit random id */
#define MDM_SIGNON_SUBJECT_MAX 63

/** A user defined in mdmd itself (as opposed to a directory user). */
typedef struct mdm_local_user {
    char name[MDM_USER_NAME_MAX + 1];       /* key */
    char display_name[128];
    char email[256];
    unsigned n_groups;                      /* <= MDM_USER_GROUPS_MAX */
    char groups[MDM_USER_GROUPS_MAX][MDM_GROUP_NAME_MAX + 1]; /* each 1..63 bytes, no controls */
    char password_hash[MDM_PASSWORD_HASH_MAX + 1]; /* argon2id encoded; "" = no password set */
    bool disabled;                          /* may not sign on */
    uint64_t created_ms, updated_ms, password_changed_ms; /* wall clock; 0 = never */
} mdm_local_user_t;

enum mdm_invite_mode {
    MDM_INVITE_PASSWORD = 0,     /* user name + password */
    MDM_INVITE_PIN,              /* user name + the invitation's PIN */
    MDM_INVITE_PASSWORD_AND_PIN, /* both (two factors) */
};

enum mdm_invite_status {
    MDM_INVITE_PENDING = 0,
    MDM_INVITE_USED,
    MDM_INVITE_EXPIRED,
    MDM_INVITE_REVOKED,
};

/** An invitation to enroll one Mac (URL with the id + one-time secret). */
typedef struct mdm_invitation {
    char id[MDM_ENROLL_ID_LEN + 1];               /* key */
    char user_name[MDM_USER_NAME_MAX + 1];        /* mdm_user_ref_valid */
    uint8_t mode;                                 /* enum mdm_invite_mode */
    uint8_t status;                               /* enum mdm_invite_status */
    char pin_hash[MDM_PASSWORD_HASH_MAX + 1];     /* argon2id of the PIN (never the PIN); "" */
    uint64_t created_ms, expires_ms, used_ms;     /* wall clock; used_ms 0 until used */
    char created_by[64];                          /* admin key name, "cli", ... */
    char enrollment_id[MDM_ENROLL_ID_LEN + 1];    /* "" until used */
} mdm_invitation_t;

/** A one-time SCEP challenge, stored under its SHA-256 only. */
typedef struct mdm_scep_challenge {
    uint8_t hash[MDM_SHA256_LEN];                 /* key: mdm_scep_challenge_hash() */
    char enrollment_id[MDM_ENROLL_ID_LEN + 1];    /* the enrollment it was issued for */
    uint64_t expires_ms;                          /* wall clock */
    bool used;
    bool certificate_only; /* a SCEP policy's (enrollment_id ""): the certificate is no MDM
                              identity and belongs to no enrollment */
} mdm_scep_challenge_t;

enum mdm_enroll_method {
    MDM_ENROLL_WEB = 0,    /* user name + password on the enrollment page */
    MDM_ENROLL_INVITATION, /* an invitation URL */
    MDM_ENROLL_RENEWAL,    /* an administrator renewed a Mac's identity (udid set from the
                              start: only that Mac may use its certificate) */
};

/** One enrollment: who asked for an enrollment profile, and which Mac completed it. */
typedef struct mdm_enrollment {
    char id[MDM_ENROLL_ID_LEN + 1];               /* key */
    char user_name[MDM_USER_NAME_MAX + 1];        /* mdm_user_ref_valid */
    uint8_t method;                               /* enum mdm_enroll_method */
    char invitation_id[MDM_ENROLL_ID_LEN + 1];    /* method invitation: which one; else "" */
    uint64_t created_ms;                          /* wall clock */
    uint64_t challenge_expires_ms;                /* expiry of its SCEP challenge */
    char udid[MDM_UDID_MAX + 1];                  /* "" until the Mac completes */
    char cert_sha256[MDM_SHA256_HEX_LEN + 1];     /* identity certificate (hex); "" until then */
    uint64_t completed_ms;                        /* 0 until the Mac completes */
    /* The groups of the user who signed on, as known then (the local user's, or the
     * directory's); <= MDM_USER_GROUPS_MAX, each mdm_group_name_valid. Records of the first
     * format read with none. */
    unsigned n_groups;
    char groups[MDM_USER_GROUPS_MAX][MDM_GROUP_NAME_MAX + 1];
} mdm_enrollment_t;

enum mdm_signon_kind {
    MDM_SIGNON_USER = 0, /* failures per user name */
    MDM_SIGNON_ADDRESS,  /* failures per source address */
};

/** Failed sign-on counter of one user name or source address (lockout). */
typedef struct mdm_signon_failures {
    uint8_t kind;                                 /* enum mdm_signon_kind; part of the key */
    char subject[MDM_SIGNON_SUBJECT_MAX + 1];     /* key: user name or address */
    uint32_t count;                               /* failures since window_start_ms */
    uint64_t window_start_ms;                     /* wall clock */
    uint64_t locked_until_ms;                     /* 0 = not locked */
} mdm_signon_failures_t;

/** An identity certificate an administrator revoked (security action Revoke). */
typedef struct mdm_revoked_cert {
    char udid[MDM_UDID_MAX + 1]; /* the Mac it identified */
    uint64_t revoked_ms;
} mdm_revoked_cert_t;

/** True for a local user name: 1..63 bytes of [A-Za-z0-9._@-]. NULL is false. */
bool mdm_user_name_valid(const char *name);
/** True for a user name in an invitation or enrollment: 1..63 bytes, no byte < 0x20 or 0x7f. */
bool mdm_user_ref_valid(const char *name);
/** True for a group name: 1..63 bytes, no byte < 0x20 or 0x7f. */
bool mdm_group_name_valid(const char *name);
/** True for an invitation or enrollment id: exactly 32 lowercase hex digits. */
bool mdm_enroll_id_valid(const char *id);

/** Writes a new random id (128 bits as 32 lowercase hex digits and a NUL). Returns 0 or
 * MDM_ECRYPTO (id is then ""). Any thread. */
MDM_MUST_CHECK int mdm_enroll_id_new(char id[MDM_ENROLL_ID_LEN + 1]);

/** The key of a SCEP challenge: SHA-256 of its len bytes. Returns 0 or MDM_ECRYPTO. */
MDM_MUST_CHECK int mdm_scep_challenge_hash(const void *challenge, size_t len,
                                           uint8_t hash[MDM_SHA256_LEN]);

/** Lower-case names for logs and the API ("password_and_pin", "revoked", ...); "unknown"
 * for other values. */
const char *mdm_invite_mode_name(enum mdm_invite_mode m);
const char *mdm_invite_status_name(enum mdm_invite_status s);
const char *mdm_enroll_method_name(enum mdm_enroll_method m);

/* ---- writes: append to a batch (the caller commits it) -------------------------------------
 * Records are encoded straight into the batch (a failed growth is remembered by the batch and
 * reported by its commit as -ENOMEM). Preconditions (asserted): identifiers valid as above,
 * enum fields valid, every string NUL-terminated inside its field, n_groups <=
 * MDM_USER_GROUPS_MAX with valid group names, an invitation's enrollment_id and an
 * enrollment's invitation_id "" or valid ids. */
void mdm_store_put_local_user(mdm_batch_t *b, const mdm_local_user_t *u);
void mdm_store_delete_local_user(mdm_batch_t *b, const char *name);
void mdm_store_put_invitation(mdm_batch_t *b, const mdm_invitation_t *inv);
void mdm_store_delete_invitation(mdm_batch_t *b, const char *id);
void mdm_store_put_scep_challenge(mdm_batch_t *b, const mdm_scep_challenge_t *c);
void mdm_store_delete_scep_challenge(mdm_batch_t *b, const uint8_t hash[MDM_SHA256_LEN]);
void mdm_store_put_enrollment(mdm_batch_t *b, const mdm_enrollment_t *e);
void mdm_store_delete_enrollment(mdm_batch_t *b, const char *id);
void mdm_store_put_signon_failures(mdm_batch_t *b, const mdm_signon_failures_t *f);
void mdm_store_delete_signon_failures(mdm_batch_t *b, enum mdm_signon_kind kind,
                                      const char *subject);

/**
 * Appends the index record "ec/<cert_sha256_hex>" -> enrollment_id: the identity certificate
 * (lowercase hex SHA-256 of its DER, 64 digits) issued for that enrollment. Written in the batch
 * that records the issuance, so a certificate never exists without its index. Asserted: both
 * identifiers valid.
 */
void mdm_store_put_enrollment_cert(mdm_batch_t *b, const char *cert_sha256_hex,
                                   const char *enrollment_id);
void mdm_store_delete_enrollment_cert(mdm_batch_t *b, const char *cert_sha256_hex);

/* ---- reads (synchronous: storage workers and jobs, tools, tests; never on a shard thread) ---
 * On every return *out is fully set (0) or zeroed. Each returns 0, MDM_ENOTFOUND, -EINVAL (bad
 * identifier), MDM_ESTORE or -EBADMSG (undecodable record). */
MDM_MUST_CHECK int mdm_store_get_local_user(mdm_store_t *s, const char *name,
                                            mdm_local_user_t *out);
MDM_MUST_CHECK int mdm_store_get_invitation(mdm_store_t *s, const char *id,
                                            mdm_invitation_t *out);
/** Never -EINVAL: every hash is a valid key. */
MDM_MUST_CHECK int mdm_store_get_scep_challenge(mdm_store_t *s,
                                                const uint8_t hash[MDM_SHA256_LEN],
                                                mdm_scep_challenge_t *out);
MDM_MUST_CHECK int mdm_store_get_enrollment(mdm_store_t *s, const char *id,
                                            mdm_enrollment_t *out);
MDM_MUST_CHECK int mdm_store_get_signon_failures(mdm_store_t *s, enum mdm_signon_kind kind,
                                                 const char *subject,
                                                 mdm_signon_failures_t *out);
/** The enrollment whose SCEP issuance produced the certificate with this SHA-256 (64 lowercase
 * hex digits; -EINVAL otherwise) into enrollment_id ("" unless 0). */
/** Marks a certificate revoked (key: its hex SHA-256). */
void mdm_store_put_revoked_cert(mdm_batch_t *b, const char *cert_sha256_hex,
                                const mdm_revoked_cert_t *rc);
/** 0 (revoked: *out set), MDM_ENOTFOUND, -EINVAL, MDM_ESTORE, -EBADMSG. */
MDM_MUST_CHECK int mdm_store_get_revoked_cert(mdm_store_t *s, const char *cert_sha256_hex,
                                              mdm_revoked_cert_t *out);
MDM_MUST_CHECK int mdm_store_get_enrollment_cert(mdm_store_t *s, const char *cert_sha256_hex,
                                                 char enrollment_id[MDM_ENROLL_ID_LEN + 1]);

/*
 * Listings page through one record kind in key order, strictly after `after` (NULL or "" =
 * from the start; to page, pass the last identifier of the previous page and stop cb after a
 * page's worth). cb runs synchronously for each record, which is borrowed for the call only,
 * and returns nonzero to stop. They return 0 when all were visited, cb's nonzero value,
 * -EINVAL (after longer than an identifier of its kind), MDM_ESTORE, -ENOMEM, or -EBADMSG at
 * the first undecodable record (logged with its key; the records before it were delivered).
 */

/** Local users by name (bytewise order). */
MDM_MUST_CHECK int mdm_store_list_local_users(mdm_store_t *s, const char *after,
                                              int (*cb)(void *arg, const mdm_local_user_t *u),
                                              void *arg);
/** Invitations by id. */
MDM_MUST_CHECK int mdm_store_list_invitations(mdm_store_t *s, const char *after,
                                              int (*cb)(void *arg, const mdm_invitation_t *inv),
                                              void *arg);
/** SCEP challenges by hash, strictly after the hash `after` (NULL = from the start); for
 * pruning expired and used ones. Never -EINVAL. */
MDM_MUST_CHECK int mdm_store_list_scep_challenges(mdm_store_t *s,
                                                  const uint8_t *after /* MDM_SHA256_LEN */,
                                                  int (*cb)(void *arg,
                                                            const mdm_scep_challenge_t *c),
                                                  void *arg);
/** Enrollments by id. */
MDM_MUST_CHECK int mdm_store_list_enrollments(mdm_store_t *s, const char *after,
                                              int (*cb)(void *arg, const mdm_enrollment_t *e),
                                              void *arg);
/** Sign-on failure counters of one kind by subject. */
MDM_MUST_CHECK int mdm_store_list_signon_failures(mdm_store_t *s, enum mdm_signon_kind kind,
                                                  const char *after,
                                                  int (*cb)(void *arg,
                                                            const mdm_signon_failures_t *f),
                                                  void *arg);

#endif
