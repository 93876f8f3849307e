/*
 * storage/policy: typed records of device policies on top of store.h, all in the column family
 * MDM_CF_POLICY: policies, delivery groups, per-device deployments (what mdmd sent a Mac for a
 * policy) and the application inventory Macs report. Every record is a versioned binary
 * encoding (a format byte first, codecs in storage/policy.c); decoding is strict as in
 * storage/mdm.h (truncated, corrupt, unknown format, trailing bytes, too long strings:
 * -EBADMSG).
 *
 * Keys (a kind prefix, then the record's identifiers; key fields are not repeated in values):
 *   "p/"  <policy id>                      -> mdm_policy_t
 *   "g/"  <group id>                       -> mdm_group_t
 *   "d/"  <udid> 0x00 <policy id>          -> mdm_deployment_t   (by device)
 *   "r/"  <policy id> 0x00 <udid>          -> mdm_deployment_t   (the same record, by policy)
 *   "a/"  <udid> 0x00 <bundle id>          -> mdm_app_t          (a Mac's applications)
 *   "b/"  <bundle id> 0x00 <udid>          -> mdm_app_t          (the same record, by app)
 * No prefix is a prefix of another. The "r/" and "b/" copies are written and deleted together
 * with their "d/" and "a/" records by the functions below, so fleet-wide questions ("which
 * Macs have app X", "where is policy P") read one key range instead of every device.
 *
 * Identifiers: policy and group ids are 16 lowercase hex digits (mdm_policy_id_new); UDIDs as
 * in storage/mdm.h; bundle ids 1..127 bytes without 0x00 or control characters.
 *
 * Secrets: a policy's secret settings (passwords, shared secrets, challenges) are never in
 * settings_json; the caller seals them (core/seal) and stores the envelope in sealed_secrets.
 */
#ifndef MDM_STORAGE_POLICY_H
#define MDM_STORAGE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/mdm.h"
#include "storage/store.h"

#define MDM_POLICY_ID_LEN 16
#define MDM_POLICY_TYPE_MAX 31
#define MDM_POLICY_NAME_MAX 127
#define MDM_POLICY_IDENT_MAX 159
#define MDM_BUNDLE_ID_MAX 127

/** A policy: one kind of setting (policy type) with its settings, versioned. */
typedef struct mdm_policy {
    char id[MDM_POLICY_ID_LEN + 1];             /* key */
    char type[MDM_POLICY_TYPE_MAX + 1];         /* actors/policy_catalog.h type name */
    char name[MDM_POLICY_NAME_MAX + 1];
    uint32_t version;                           /* 1 at creation, +1 on every change */
    char profile_identifier[MDM_POLICY_IDENT_MAX + 1]; /* PayloadIdentifier it owns (stable) */
    uint64_t created_ms, updated_ms;
    char created_by[64];
    char *settings_json;   /* public settings (no secrets), NUL-terminated; owned */
    size_t settings_len;   /* strlen(settings_json) */
    uint8_t *sealed_secrets; /* core/seal envelope of the secret settings; NULL = none; owned */
    size_t sealed_len;
} mdm_policy_t;

/**
 * A delivery group: which Macs (all, listed UDIDs, Macs enrolled by listed users or by members
 * of listed user groups) get which policies, in order. The targets and the ordered policy ids
 * are one JSON document (spec_json, validated by the API):
 *   {"all_devices": bool, "devices": [udid...], "users": [name...], "user_groups": [name...],
 *    "policies": [policy id...]}
 */
typedef struct mdm_group {
    char id[MDM_POLICY_ID_LEN + 1];             /* key */
    char name[MDM_POLICY_NAME_MAX + 1];
    uint32_t version;                           /* +1 on every change */
    uint64_t created_ms, updated_ms;
    char *spec_json;       /* NUL-terminated; owned */
    size_t spec_len;
} mdm_group_t;

/** What mdmd last sent a Mac for a policy. */
enum mdm_deploy_action {
    MDM_DEPLOY_INSTALL = 0, /* the policy's profile or commands, at policy_version */
    MDM_DEPLOY_REMOVE,      /* RemoveProfile of its profile (the Mac no longer gets it) */
    MDM_DEPLOY_REMOVED,     /* nothing left to send: removed (acknowledged or nothing to undo) */
};

typedef struct mdm_deployment {
    char udid[MDM_UDID_MAX + 1];                /* key */
    char policy_id[MDM_POLICY_ID_LEN + 1];      /* key */
    uint8_t action;                             /* enum mdm_deploy_action */
    uint32_t policy_version;                    /* version sent */
    char profile_identifier[MDM_POLICY_IDENT_MAX + 1]; /* what RemoveProfile must name */
    char command_uuid[MDM_UUID_MAX + 1];        /* the last command sent ("" = none) */
    uint64_t sent_ms;                           /* when it was queued */
} mdm_deployment_t;
/* The outcome is not copied here: it is the result of command_uuid (storage/mdm.h), which only
 * the device actor writes, so a deployment's status is read from there (one writer each). */

/** One application a Mac reported (InstalledApplicationList). */
typedef struct mdm_app {
    char udid[MDM_UDID_MAX + 1];                /* key */
    char bundle_id[MDM_BUNDLE_ID_MAX + 1];      /* key */
    char name[128];
    char short_version[64];                     /* CFBundleShortVersionString */
    char version[64];                           /* CFBundleVersion */
    uint64_t bundle_size;
    uint64_t reported_ms;
} mdm_app_t;

/** A fresh random id (16 lowercase hex digits + NUL). Returns 0 or MDM_ECRYPTO. */
MDM_MUST_CHECK int mdm_policy_id_new(char out[MDM_POLICY_ID_LEN + 1]);
/** True for 16 lowercase hex digits. */
bool mdm_policy_id_valid(const char *id);
/** True for a bundle id: 1..127 bytes, no byte < 0x20 or 0x7f. */
bool mdm_bundle_id_valid(const char *id);
const char *mdm_deploy_action_name(enum mdm_deploy_action a); /* "install", "remove", "removed" */

/* ---- writes: append to a batch (the caller commits it). Identifiers asserted valid. ---- */
void mdm_store_put_policy(mdm_batch_t *b, const mdm_policy_t *p);
void mdm_store_delete_policy(mdm_batch_t *b, const char *id);
void mdm_store_put_group(mdm_batch_t *b, const mdm_group_t *g);
void mdm_store_delete_group(mdm_batch_t *b, const char *id);
/** Writes both copies ("d/" and "r/"). */
void mdm_store_put_deployment(mdm_batch_t *b, const mdm_deployment_t *d);
void mdm_store_delete_deployment(mdm_batch_t *b, const char *udid, const char *policy_id);
/** Writes both copies ("a/" and "b/"). */
void mdm_store_put_app(mdm_batch_t *b, const mdm_app_t *a);
void mdm_store_delete_app(mdm_batch_t *b, const char *udid, const char *bundle_id);

/* ---- reads (synchronous: storage workers, jobs, tools, tests). *out fully set or zeroed. --- */
/** 0, MDM_ENOTFOUND, -EINVAL (bad id), MDM_ESTORE, -EBADMSG, -ENOMEM. */
MDM_MUST_CHECK int mdm_store_get_policy(mdm_store_t *s, const char *id, mdm_policy_t *out);
MDM_MUST_CHECK int mdm_store_get_group(mdm_store_t *s, const char *id, mdm_group_t *out);
MDM_MUST_CHECK int mdm_store_get_deployment(mdm_store_t *s, const char *udid,
                                            const char *policy_id, mdm_deployment_t *out);
/** Free the owned buffers and zero the struct. NULL is a no-op. */
void mdm_policy_dispose(mdm_policy_t *p);
void mdm_group_dispose(mdm_group_t *g);

/*
 * Listings call cb for each record in key order; the record is borrowed (valid during the call
 * only: copy what you keep, including settings_json/spec_json). cb returns nonzero to stop.
 * They return 0, cb's value, -EINVAL (bad identifier), MDM_ESTORE, -ENOMEM or -EBADMSG.
 * after: list strictly after this key part ("" = from the start), for paging.
 */
MDM_MUST_CHECK int mdm_store_list_policies(mdm_store_t *s, const char *after,
                                           int (*cb)(void *arg, const mdm_policy_t *p),
                                           void *arg);
MDM_MUST_CHECK int mdm_store_list_groups(mdm_store_t *s, const char *after,
                                         int (*cb)(void *arg, const mdm_group_t *g), void *arg);
/** A device's deployments, by policy id. */
MDM_MUST_CHECK int mdm_store_list_device_deployments(
    mdm_store_t *s, const char *udid, int (*cb)(void *arg, const mdm_deployment_t *d), void *arg);
/** A policy's deployments, by UDID, strictly after UDID `after` ("" = from the start). */
MDM_MUST_CHECK int mdm_store_list_policy_deployments(
    mdm_store_t *s, const char *policy_id, const char *after,
    int (*cb)(void *arg, const mdm_deployment_t *d), void *arg);
/** A device's applications, by bundle id. */
MDM_MUST_CHECK int mdm_store_list_device_apps(mdm_store_t *s, const char *udid,
                                              int (*cb)(void *arg, const mdm_app_t *a),
                                              void *arg);
/** The Macs that reported bundle_id, by UDID, strictly after `after` ("" = from the start). */
MDM_MUST_CHECK int mdm_store_list_app_devices(mdm_store_t *s, const char *bundle_id,
                                              const char *after,
                                              int (*cb)(void *arg, const mdm_app_t *a),
                                              void *arg);

/**
 * Appends to b the deletion of everything of udid here (deployments and apps, both copies).
 * Reads the store: run it where synchronous reads are allowed. 0, -EINVAL, MDM_ESTORE, -ENOMEM.
 */
MDM_MUST_CHECK int mdm_store_purge_device_policy(mdm_store_t *s, mdm_batch_t *b,
                                                 const char *udid);

#endif
