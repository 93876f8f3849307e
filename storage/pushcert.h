/*
 * storage/pushcert: the instance's APNs MDM push certificate.
 *
 *   meta:    "pushcert"          -> [format 1][uploaded_ms be64][certificate DER]
 *   secrets: 0x00 "pushcert"     -> the private key (DER), sealed by the caller (core/seal,
 *                                   aad "pushcert")
 * The secrets key starts with 0x00 so it can never share a prefix with a device's secrets
 * (<udid> 0x00 <name>, UDIDs are never empty). Both records are written in one batch.
 */
#ifndef MDM_STORAGE_PUSHCERT_H
#define MDM_STORAGE_PUSHCERT_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "storage/store.h"

/** Appends the certificate (DER) and the sealed key to b. */
void mdm_store_put_pushcert(mdm_batch_t *b, const uint8_t *cert_der, size_t cert_len,
                            uint64_t uploaded_ms, const void *sealed_key, size_t sealed_len);

/** Appends the deletion of both records to b. */
void mdm_store_delete_pushcert(mdm_batch_t *b);

/**
 * Reads the certificate (DER appended to cert_der) and, when sealed_key is not NULL, the
 * sealed key (appended to sealed_key). *uploaded_ms may be NULL. Synchronous: storage workers,
 * tools, tests. Returns 0, MDM_ENOTFOUND (no certificate), -EBADMSG (corrupt record, or a
 * certificate without its key), MDM_ESTORE, -ENOMEM / MDM_ETOOBIG from the buffers.
 */
MDM_MUST_CHECK int mdm_store_get_pushcert(mdm_store_t *s, mdm_buf_t *cert_der,
                                          uint64_t *uploaded_ms, mdm_buf_t *sealed_key);

#endif
