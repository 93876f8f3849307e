/*
 * mdm_cms: CMS (PKCS#7) SignedData on wolfCrypt, detached or with encapsulated content,
 * certificate trust checks, and strict base64.
 *
 * Verification answers "did the holder of this certificate's key sign exactly these bytes?"
 * (mdm_cms_verify_detached) and, separately, "does this certificate chain to a CA we trust
 * and is it valid at time now?" (mdm_cms_trust_verify). Callers need both before they
 * believe an identity; neither decides on its own what the identity may do.
 *
 * Signing with encapsulated content (mdm_cms_sign) makes signed configuration profiles;
 * mdm_cms_verify_attached opens them again. Detached signing (mdm_cms_sign_detached) exists
 * for tests and the load generator: it produces what a client puts into a signature header.
 *
 * This module knows nothing about MDM. Threads: every function is reentrant; a loaded
 * mdm_cms_trust_t is immutable and may be used by many threads at once.
 *
 *
 * Cost with Debian's wolfSSL 5.5.4 (generic sp_int math with FP_ECC, no P-256 assembly):
 * an ECDSA P-256 verification takes about 0.1 ms when both points (the generator and the
 * signer's key) already have a fixed-point table in the calling thread's small cache, and
 * 3.5-5 ms when one has not (a device key seen for the first time, or evicted): so verifying
 * signatures of thousands of different devices costs milliseconds each. Callers keep this
 * off latency-sensitive threads (mdmd verifies on a worker pool). Threads that verify call
 * mdm_tls_thread_cleanup() (core/tls.h) before they exit.
 */
#ifndef MDM_CORE_CMS_H
#define MDM_CORE_CMS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/common.h"

/* ---- base64 (RFC 4648 section 4, standard alphabet) ------------------------------------ */

/**
 * Decodes len bytes of base64 text and appends the bytes to out. Strict: only the standard
 * alphabet, padding '=' required so that the text is a multiple of 4 characters, '=' only
 * at the end, and unused bits of the last character zero. Space, tab, CR and LF are ignored
 * anywhere. Empty (or all-white-space) input decodes to nothing.
 * Returns 0; -EINVAL for text that is not strict base64 (out is then unchanged); -ENOMEM;
 * MDM_ETOOBIG when out would exceed its limit.
 */
MDM_MUST_CHECK int mdm_base64_decode(const char *in, size_t len, mdm_buf_t *out);

/**
 * Appends the padded base64 text of len bytes of data to out (no line breaks, no NUL).
 * Returns 0, -ENOMEM or MDM_ETOOBIG.
 */
MDM_MUST_CHECK int mdm_base64_encode(const void *data, size_t len, mdm_buf_t *out);

/* ---- SignedData ----------------------------------------------------------------------- */

/** Where the signed content goes. */
enum mdm_cms_content {
    MDM_CMS_DETACHED,     /* not inside the SignedData (a signature header) */
    MDM_CMS_ENCAPSULATED, /* inside, as eContent of type id-data (a signed .mobileconfig) */
};

/* Certificates in extra_certs_path of mdm_cms_sign(), besides the signer's. */
#define MDM_CMS_EXTRA_CERTS_MAX 8

/**
 * Verifies that the DER CMS SignedData der (der_len bytes) carries a valid signature over
 * content (content_len bytes, the detached content), made with the key of a certificate
 * inside the SignedData, and appends that signer certificate (DER) to signer_cert_der.
 * A SignedData that encapsulates its content is accepted only if that content is exactly
 * content. Signed attributes, when present, must include the matching message digest.
 * Neither the certificate's trust nor its dates are checked here (see mdm_cms_trust_verify).
 * wolfCrypt 5.5 cannot verify a detached signature over empty content (-EBADMSG).
 *
 * Returns 0; MDM_ECRYPTO when the signature does not verify, content differs from the
 * signed content, or the SignedData has no signer; MDM_ECERT when it holds no certificate
 * to verify the signature with; -EBADMSG when der is not a well-formed SignedData;
 * MDM_ETOOBIG for inputs of 4 GiB or more, or when signer_cert_der would exceed its limit;
 * -ENOMEM. signer_cert_der is unchanged on failure.
 */
MDM_MUST_CHECK int mdm_cms_verify_detached(const uint8_t *der, size_t der_len,
                                           const void *content, size_t content_len,
                                           mdm_buf_t *signer_cert_der);

/**
 * Verifies a DER CMS SignedData der (der_len bytes) that encapsulates its content (as a
 * signed configuration profile does): the signature must verify with the key of a
 * certificate inside the SignedData. Appends the encapsulated content to content_out and the
 * signer certificate (DER) to signer_cert_der. As with mdm_cms_verify_detached(), trust and
 * dates of the certificate are the caller's business (mdm_cms_trust_verify), and signed
 * attributes, when present, must carry the matching message digest.
 *
 * Returns 0; -EBADMSG when der is not a well-formed SignedData or encapsulates no content
 * (a detached signature, or empty content); MDM_ECRYPTO when the signature does not verify or
 * there is no signer; MDM_ECERT when no certificate to verify the signature with is inside;
 * MDM_ETOOBIG for der of 4 GiB or more, or when an output would exceed its limit; -ENOMEM.
 * Both outputs are unchanged on failure.
 */
MDM_MUST_CHECK int mdm_cms_verify_attached(const uint8_t *der, size_t der_len,
                                           mdm_buf_t *content_out, mdm_buf_t *signer_cert_der);

/**
 * Signs len bytes of content with the private key in key_pem_path (PEM or DER; EC or RSA) as
 * a CMS SignedData (SHA-256, with the default signed attributes: content type id-data,
 * message digest, signing time) and appends the DER to der_out. The content is left out or
 * encapsulated as mode says. The SignedData carries the signer certificate, the first one in
 * cert_pem_path (PEM or DER), and, when extra_certs_path is not NULL, every certificate in
 * that file (PEM chain or one DER certificate; at most MDM_CMS_EXTRA_CERTS_MAX; a copy of the
 * signer certificate is skipped, so a chain file may be given as both) so that a verifier can
 * build the chain to its trust anchor.
 * Returns 0; MDM_ECRYPTO when the key cannot be loaded or signing fails; MDM_ECERT when a
 * certificate cannot be read or is not valid PEM, or extra_certs_path holds none; MDM_ETOOBIG
 * for more than MDM_CMS_EXTRA_CERTS_MAX extra certificates, content of 4 GiB or more, or when
 * der_out would exceed its limit; -ENOMEM; -errno from reading the files.
 */
MDM_MUST_CHECK int mdm_cms_sign(const char *key_pem_path, const char *cert_pem_path,
                                const char *extra_certs_path, const void *content, size_t len,
                                enum mdm_cms_content mode, mdm_buf_t *der_out);

/**
 * mdm_cms_sign() of a detached signature carrying only the signer certificate: what a client
 * puts into a detached-signature header. Returns the codes of mdm_cms_sign().
 */
MDM_MUST_CHECK int mdm_cms_sign_detached(const char *key_pem_path, const char *cert_pem_path,
                                         const void *content, size_t len, mdm_buf_t *der_out);

/* ---- enveloped data (encryption to a certificate) --------------------------------------- */

/**
 * Encrypts len (> 0) bytes to the RSA certificate cert_der (DER) as a CMS EnvelopedData (RSA
 * key transport, PKCS#1 v1.5, content encrypted with AES-256-CBC) and appends the DER to
 * der_out: what a Mac sends when it escrows a FileVault recovery key to the certificate of an
 * FDERecoveryKeyEscrow payload or a RotateFileVaultKey ReplyEncryptionCertificate.
 * Returns 0; MDM_ECERT (not a parsable RSA certificate); MDM_ECRYPTO; MDM_ETOOBIG; -ENOMEM.
 */
MDM_MUST_CHECK int mdm_cms_envelope(const uint8_t *cert_der, size_t cert_len, const void *data,
                                    size_t len, mdm_buf_t *der_out);

/**
 * Decrypts a CMS EnvelopedData (der, len) with the RSA private key in key_pem_path (PEM or DER)
 * whose certificate is cert_pem_path (the recipient must be that certificate, named by issuer
 * and serial or by subject key identifier) and appends the content to plain_out. wolfCrypt 5.5
 * opens only an EnvelopedData with a single RecipientInfo: one with several fails (-EBADMSG or
 * MDM_ECRYPTO). EnvelopedData has no integrity protection: a changed ciphertext may decrypt
 * to other bytes. Returns 0; -EBADMSG (not an EnvelopedData, or not for this recipient);
 * MDM_ECRYPTO (the key cannot be loaded or is not RSA, decryption fails); MDM_ECERT (the
 * certificate cannot be read, or the key is not its key); MDM_ETOOBIG; -ENOMEM; -errno from
 * reading the files. Blocks on the file reads.
 */
MDM_MUST_CHECK int mdm_cms_open_envelope(const char *key_pem_path, const char *cert_pem_path,
                                         const uint8_t *der, size_t len, mdm_buf_t *plain_out);

/* ---- trust ----------------------------------------------------------------------------- */

typedef struct mdm_cms_trust mdm_cms_trust_t;

#define MDM_CMS_TRUST_MAX 64 /* certificates in one trust set */

/**
 * Loads every CERTIFICATE block of the n PEM files (a single DER certificate per file is
 * accepted too) as a trust anchor. Every loaded certificate must be a CA (basicConstraints
 * CA:TRUE). Intermediate CAs may be listed: each listed certificate is trusted on its own,
 * so list only CAs that may issue the certificates to be verified. Blocks: disk I/O, so
 * load at start-up; the result is immutable and shared read-only by any number of threads.
 * Free with mdm_cms_trust_free().
 * Returns 0; MDM_ECERT when a file holds no certificate, a certificate cannot be parsed or
 * is not a CA (logged with the file name); MDM_ETOOBIG for more than MDM_CMS_TRUST_MAX
 * certificates or a file over 1 MiB; -ENOMEM; -errno from reading a file; MDM_ETLS when
 * wolfSSL cannot be initialised.
 */
MDM_MUST_CHECK int mdm_cms_trust_load(const char *const *pem_paths, size_t n,
                                      mdm_cms_trust_t **out);

/** Frees a trust set (NULL is fine). No thread may be using it. */
void mdm_cms_trust_free(mdm_cms_trust_t *trust);

/** Number of trusted certificates in the set. */
size_t mdm_cms_trust_count(const mdm_cms_trust_t *trust);

/**
 * Checks that the DER certificate cert_der (len bytes) is signed by one of the trusted
 * certificates, and that both it and that issuer are valid at now (Unix seconds; the time is
 * the caller's so that tests can move it). err (when errlen > 0) receives a short reason on
 * failure, e.g. "certificate expired at 2024-05-01T00:00:00Z", "issuer not trusted".
 * Returns 0; MDM_ECERT when the certificate cannot be parsed, no trusted certificate signed
 * it, or either one is outside its validity period at now; -ENOMEM.
 */
MDM_MUST_CHECK int mdm_cms_trust_verify(const mdm_cms_trust_t *trust, const uint8_t *cert_der,
                                        size_t len, int64_t now, char *err, size_t errlen);

/**
 * One-shot mdm_cms_trust_load() of ca_pem_path, mdm_cms_trust_verify(), free. For tools and
 * tests; servers load the trust set once. Returns the codes of both.
 */
MDM_MUST_CHECK int mdm_cms_cert_verify_chain(const uint8_t *cert_der, size_t len,
                                             const char *ca_pem_path, int64_t now);

#endif
