/*
 * Security: the secrets of security actions and FileVault escrow, kept sealed per device in
 * the secrets column family (storage/mdm.h):
 *   "lock_pin", "erase_pin"  {"pin", "created_ms", "command_uuid"}: the PIN of the last
 *                            DeviceLock / EraseDevice, for the administrator who must unlock
 *   "fv_prk"                 {"current": {"key", "escrowed_ms", "source"}, "history": [...]}:
 *                            the FileVault personal recovery key and the ones it replaced
 * Each is one JSON document sealed with the instance's secrets key, bound to its name and UDID
 * (the same binding as the device actor's bootstrap and unlock tokens).
 *
 * FileVault escrow: a Mac with the FileVault policy reports its personal recovery key in
 * SecurityInfo (FDE_PersonalRecoveryKeyCMS), a RotateFileVaultKey answer carries the new one
 * (RotateResult.EncryptedNewRecoveryKey); both are CMS EnvelopedData to the instance's escrow
 * certificate. mdm_security_command_answered decrypts them on a storage worker, stores the key
 * sealed (the previous one moves to the history) and marks the device "filevault key escrowed".
 *
 * Threads: mdm_security_command_answered on a shard; the rest anywhere (blocking file reads in
 * the escrow decryption: storage workers).
 */
#ifndef MDM_ACTORS_SECURITY_H
#define MDM_ACTORS_SECURITY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actors/actor.h"
#include "core/buf.h"
#include "core/shard.h"
#include "storage/store.h"

#define MDM_PIN_DIGITS 6
/* CommandUUID prefixes of security actions (the device history shows them as actions). */
#define MDM_ACTION_LOCK_PREFIX "act-lock-"
#define MDM_ACTION_ERASE_PREFIX "act-erase-"
#define MDM_ACTION_ROTATE_PREFIX "act-rotate-"
#define MDM_ACTION_RENEW_PREFIX "act-renew-"

/** Sets the module up (main thread, after mdm_policy_engine_setup made the escrow
 * certificate): the escrow certificate and key of dir, the secrets key, shard hooks on g. */
MDM_MUST_CHECK int mdm_security_setup(mdm_shard_group_t *g, const char *dir,
                                      const uint8_t *secrets_key, mdm_actors_t *rt);

/** A PIN macOS takes for DeviceLock / EraseDevice: exactly six ASCII digits. */
bool mdm_pin_valid(const char *pin);
/** A PIN a passcode policy with allowSimple false refuses: one digit repeated, or a run
 * ascending or descending by one (123456, 987654). */
bool mdm_pin_simple(const char *pin);
/** A fresh, not simple PIN from the CSPRNG into pin[7]. Returns 0 or MDM_ECRYPTO. */
MDM_MUST_CHECK int mdm_pin_generate(char pin[MDM_PIN_DIGITS + 1]);

/** Seals doc as secret name of udid into out (mdm_seal codes). */
MDM_MUST_CHECK int mdm_security_seal(const char *udid, const char *name, const json_t *doc,
                                     mdm_buf_t *out);
/** Reads and opens secret name of udid: *doc NULL when there is none. Synchronous (workers).
 * Returns 0, or the store / mdm_unseal codes, -EBADMSG. */
MDM_MUST_CHECK int mdm_security_read(mdm_store_t *s, const char *udid, const char *name,
                                     json_t **doc);

/** The escrow certificate (DER), for RotateFileVaultKey's ReplyEncryptionCertificate. */
const uint8_t *mdm_security_escrow_cert(size_t *len);

/** shard: a device answered a command; acts on SecurityInfo with a recovery key and on
 * RotateFileVaultKey results (copies what it needs). */
void mdm_security_command_answered(mdm_shard_t *sh, const char *udid, const char *uuid,
                                   int status, const uint8_t *response, size_t len);

#endif
