/*
 * The policy engine: turns policies and delivery groups (storage/policy.h) into what each Mac
 * gets, and keeps every Mac there.
 *
 * For a Mac, the wanted policies are those of every delivery group that targets it (all
 * devices, its UDID, the user who enrolled it, or a user group of that user), in group order.
 * Reconciling a Mac compares them with its deployments (what mdmd last sent it per policy) and
 * queues, per difference, the policy's InstallProfile (a profile signed by the instance's
 * signing certificate, built by actors/policy_catalog.h) or commands, or the RemoveProfile of a
 * policy it no longer gets; the Mac is pushed by the device actor as for any command.
 *
 * Triggers: a Mac finishing enrollment (its first TokenUpdate), any change of a policy or a
 * group (every Mac is reconciled, a page at a time), and a periodic sweep that also asks each
 * managed Mac for its ProfileList: a profile mdmd installed that the Mac no longer has is
 * installed again, and a profile of a policy it should not have is removed (drift). Answers to
 * InstalledApplicationList feed the application inventory.
 *
 * Commands the engine queues have CommandUUIDs "pol-<policy id>-<version>-<16 hex>" (policy
 * deliveries) or "pol-profilelist-<16 hex>" (drift checks), so their answers are recognised
 * without a lookup.
 *
 * Idempotence: two reconciles of one Mac may run at once (a group and a policy edited
 * together); both then queue the same profile, which the Mac installs twice (a profile with an
 * installed PayloadIdentifier replaces it), and the later deployment record wins.
 *
 * Threads: mdm_policy_* entry points marked "shard" run on a shard thread; the work runs as
 * jobs on storage workers, which post back to the calling shard to queue commands.
 */
#ifndef MDM_ACTORS_POLICY_H
#define MDM_ACTORS_POLICY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actors/actor.h"
#include "actors/policy_catalog.h"
#include "core/shard.h"
#include "storage/policy.h"

struct mdm_policy_engine_options {
    const char *dir;             /* the instance folder: signing/, ca/, escrow/ */
    const char *instance;        /* [server] instance: identifiers, SCEP name */
    const char *organization;    /* PayloadOrganization */
    const uint8_t *secrets_key;  /* 32 bytes: seals the secret settings of policies */
    uint64_t sweep_interval_ms;  /* periodic reconcile + ProfileList; 0 = none */
};

/**
 * Sets the engine up (main thread, before the shards start): reads the certificates (creating
 * the escrow certificate when missing) and registers its shard hooks on g. Returns 0, or the
 * codes of the x509/file functions and -ENOSPC.
 */
MDM_MUST_CHECK int mdm_policy_engine_setup(mdm_shard_group_t *g, mdm_actors_t *rt,
                                           const struct mdm_policy_engine_options *o);

/** shard: reconcile every device (after a policy or group change); with ask_profile_list also
 * ask each managed Mac for its ProfileList (what the sweep does: drift repair follows). One
 * such reconcile runs at a time; calls meanwhile coalesce into one more after it. */
void mdm_policy_reconcile_all(mdm_shard_t *sh, bool ask_profile_list);
/** shard: reconcile one device (it finished enrollment). */
void mdm_policy_reconcile_device(mdm_shard_t *sh, const char *udid);
/** shard: a device answered command uuid with status (enum mdm_command_status) and response
 * (the plist body as received; copied). Acts on the engine's own commands, ignores others. */
void mdm_policy_command_answered(mdm_shard_t *sh, const char *udid, const char *uuid,
                                 int status, const uint8_t *response, size_t len);

/** The PayloadIdentifier a policy's profile gets: "<prefix>.policy.<id>". */
void mdm_policy_profile_identifier(const char *policy_id, char *out, size_t outlen);

/** Seals / opens the secret settings of policy id (bound to it). 0 or the core/seal codes. */
MDM_MUST_CHECK int mdm_policy_seal_secrets(const char *policy_id, const json_t *secrets,
                                           mdm_buf_t *out);
MDM_MUST_CHECK int mdm_policy_open_secrets(const mdm_policy_t *p, json_t **secrets_out);

/**
 * What policy p produces for device udid (NULL or "": a device without details, for policies
 * whose output does not depend on it), built exactly as for delivery; with sign the profile
 * is returned signed (DER CMS) instead of as XML. Synchronous (storage worker or tool).
 * Returns 0, MDM_ENOTFOUND (no such device), -EINVAL (err says why), or another code.
 */
MDM_MUST_CHECK int mdm_policy_render(mdm_store_t *s, const mdm_policy_t *p, const char *udid,
                                     bool sign, mdm_policy_output_t *out, mdm_buf_t *signed_der,
                                     char *err, size_t errlen);

/** Deployment status names an administrator sees. */
enum mdm_deploy_status {
    MDM_DEPLOY_STATUS_PENDING,   /* queued or sent, no answer yet (or NotNow) */
    MDM_DEPLOY_STATUS_INSTALLED, /* acknowledged */
    MDM_DEPLOY_STATUS_FAILED,    /* Error / CommandFormatError: see the error chain */
    MDM_DEPLOY_STATUS_REMOVING,  /* RemoveProfile queued or sent */
    MDM_DEPLOY_STATUS_REMOVED,   /* removal acknowledged, or nothing was left to remove */
};
const char *mdm_deploy_status_name(enum mdm_deploy_status s);

/**
 * The status of deployment d given its command's result r (NULL: no result record); err
 * receives Apple's ErrorChain of a failed answer as one line ("Domain Code: description; ...").
 */
enum mdm_deploy_status mdm_policy_deploy_status(const mdm_deployment_t *d, const mdm_result_t *r,
                                                char *err, size_t errlen);

#endif
