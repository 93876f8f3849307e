/*
 * The APNs MDM push certificate: parsing an upload (PEM certificate + key, or PKCS#12 with
 * its password), the checks mdmd makes before accepting it, and loading it back.
 *
 * Checks (mdm_pushcert_parse_*): the certificate parses; its subject carries a UID
 * (0.9.2342.19200300.100.1.1) starting with "com.apple.mgmt." (the APNs topic, e.g.
 * com.apple.mgmt.External.<uuid>); the private key is the certificate's (wolfSSL's key-pair
 * check); now lies within notBefore..notAfter. The key is stored as DER sealed under the
 * instance secrets key with aad "pushcert" (storage/pushcert.h), the certificate as DER.
 *
 * Threads: every function is reentrant. The parse functions do RSA/EC work (and the PKCS#12
 * KDF): run them on a storage worker or a tool, not on a shard thread.
 */
#ifndef MDM_ACTORS_PUSHCERT_H
#define MDM_ACTORS_PUSHCERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/seal.h"
#include "core/x509.h"
#include "storage/store.h"

#define MDM_PUSHCERT_TOPIC_PREFIX "com.apple.mgmt."
#define MDM_PUSHCERT_TOPIC_MAX 160
#define MDM_PUSHCERT_WARN_DAYS 30
#define MDM_PUSHCERT_SEAL_AAD "pushcert"

typedef struct mdm_pushcert {
    uint8_t *cert_der; /* owned */
    size_t cert_len;
    uint8_t *key_der;  /* owned, wiped by dispose */
    size_t key_len;
    char topic[MDM_PUSHCERT_TOPIC_MAX];
    mdm_x509_info_t info;
} mdm_pushcert_t;

/** Frees the buffers (the key is wiped first) and zeroes pc. NULL is a no-op. */
void mdm_pushcert_dispose(mdm_pushcert_t *pc);

/**
 * Parses a PEM certificate (the first CERTIFICATE block) and its unencrypted PEM private key
 * (RSA, EC or PKCS#8), checks them at Unix time now and fills *out (dispose it in every case).
 * On failure err gets a sentence for the operator. Returns 0; -EINVAL (unreadable input);
 * MDM_ECERT (not a push certificate, key mismatch, expired, not yet valid); -ENOMEM.
 */
MDM_MUST_CHECK int mdm_pushcert_parse_pem(const char *cert_pem, size_t cert_len,
                                          const char *key_pem, size_t key_len, int64_t now,
                                          mdm_pushcert_t *out, char *err, size_t errlen);

/** As mdm_pushcert_parse_pem, from a PKCS#12 (DER) and its password (may be ""). A wrong
 * password or an unsupported encryption reads as -EINVAL. */
MDM_MUST_CHECK int mdm_pushcert_parse_pkcs12(const uint8_t *p12, size_t len,
                                             const char *password, int64_t now,
                                             mdm_pushcert_t *out, char *err, size_t errlen);

/** Whole days from now until not_after (negative once expired). */
int64_t mdm_pushcert_days_left(const mdm_pushcert_t *pc, int64_t now);


/**
 * Appends pc to b: the certificate and its key sealed under seal_key.
 * Returns 0, MDM_ECRYPTO or -ENOMEM (nothing appended).
 */
MDM_MUST_CHECK int mdm_pushcert_save(mdm_batch_t *b, const uint8_t seal_key[MDM_SEAL_KEY_LEN],
                                     const mdm_pushcert_t *pc, uint64_t now_ms);

/**
 * Loads the stored push certificate. With seal_key NULL only the certificate (topic, info) is
 * read and key_der stays NULL. Synchronous (storage workers, tools). Returns 0, MDM_ENOTFOUND,
 * MDM_ECRYPTO (key does not unseal), MDM_ECERT, -EBADMSG, MDM_ESTORE, -ENOMEM.
 */
MDM_MUST_CHECK int mdm_pushcert_load(mdm_store_t *s, const uint8_t *seal_key,
                                     mdm_pushcert_t *out, uint64_t *uploaded_ms);

#endif
