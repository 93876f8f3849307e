/*
 * mdm_scep: SCEP (RFC 8894) messages on wolfCrypt, for both ends of the exchange.
 *
 * Server side, RA mode: the CA may have any key (EC P-256 in mdmd), so an RA certificate
 * with an RSA key, issued by the CA, signs the replies and receives the requests (SCEP's
 * envelope needs RSA key transport). GetCACert answers with the RA and CA certificates
 * (mdm_scep_ca_certs), GetCACaps with mdm_scep_caps(), and PKIOperation is
 * mdm_scep_parse_request() followed by mdm_scep_cert_rep(). Issuing the certificate is the
 * caller's business (mdm_x509_issue_der in core/x509.h), as is deciding whether a challenge
 * is valid, whether a RenewalReq signer certificate chains to the CA (mdm_cms_trust_verify),
 * and whether a subject is acceptable.
 *
 * Client side (the simulated Mac of mdm-bench, tests): mdm_scep_pick_ra() reads GetCACert,
 * mdm_scep_client_request() builds a PKCSReq or RenewalReq, and mdm_scep_client_parse_reply()
 * checks and opens the CertRep.
 *
 * A pkiMessage is a CMS SignedData (SHA-256, RSA; the request's signer certificate inside)
 * whose signed attributes carry messageType, transactionID, senderNonce, and in replies
 * pkiStatus, failInfo and recipientNonce; its content, when present, is a CMS EnvelopedData
 * (RSA key transport; AES-128/256-CBC or 3DES) around a PKCS#10 request (PKCSReq, RenewalReq),
 * an IssuerAndSubject (CertPoll) or a certificates-only SignedData (a successful CertRep).
 *
 * Buffers: inputs are borrowed for the call; outputs are appended to a caller's mdm_buf_t
 * (unchanged on failure) or owned by a result struct freed with its _dispose function.
 * This module knows nothing about MDM. Threads: every function is reentrant. Cost: one RSA
 * private-key operation per parse (decryption) and per message built (signature).
 */
#ifndef MDM_CORE_SCEP_H
#define MDM_CORE_SCEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/common.h"

#define MDM_SCEP_NONCE_LEN 16             /* senderNonce, recipientNonce */
#define MDM_SCEP_TRANSACTION_ID_MAX 128   /* bytes of a transactionID we accept */
#define MDM_SCEP_MESSAGE_MAX (256 * 1024) /* largest pkiMessage we parse */
#define MDM_SCEP_SPKI_MAX 1024            /* largest SubjectPublicKeyInfo a client keeps */

/* HTTP content types of the answers. */
#define MDM_SCEP_CA_RA_CERT_TYPE "application/x-x509-ca-ra-cert"
#define MDM_SCEP_PKI_MESSAGE_TYPE "application/x-pki-message"

/** messageType (PrintableString decimal in the message). */
enum mdm_scep_message_type {
    MDM_SCEP_CERT_REP = 3,
    MDM_SCEP_RENEWAL_REQ = 17,
    MDM_SCEP_PKCS_REQ = 19,
    MDM_SCEP_CERT_POLL = 20, /* GetCertInitial in older drafts */
};

/** pkiStatus of a CertRep. */
enum mdm_scep_status {
    MDM_SCEP_SUCCESS = 0,
    MDM_SCEP_FAILURE = 2,
    MDM_SCEP_PENDING = 3,
};

/** failInfo of a CertRep with MDM_SCEP_FAILURE. */
enum mdm_scep_fail_info {
    MDM_SCEP_BAD_ALG = 0,           /* unrecognized or unsupported algorithm */
    MDM_SCEP_BAD_MESSAGE_CHECK = 1, /* integrity check (signature, decryption) failed */
    MDM_SCEP_BAD_REQUEST = 2,       /* transaction not permitted or supported */
    MDM_SCEP_BAD_TIME = 3,
    MDM_SCEP_BAD_CERT_ID = 4,
};

/** Content encryption of an envelope built by a client. */
enum mdm_scep_cipher {
    MDM_SCEP_AES_128_CBC = 0, /* what the "AES" capability promises */
    MDM_SCEP_AES_256_CBC,
    MDM_SCEP_DES3_CBC,        /* for servers without the AES capability; legacy */
};

/** The RA's certificate (DER; RSA key) and private key (DER, PKCS#1 or PKCS#8). Borrowed.
 * The caller checks once that they match (mdm_x509_key_matches). */
typedef struct mdm_scep_ra {
    const uint8_t *cert;
    size_t cert_len;
    const uint8_t *key;
    size_t key_len;
} mdm_scep_ra_t;

/* ---- server --------------------------------------------------------------------------- */

/** The GetCACaps answer: "POSTPKIOperation\nSHA-256\nAES\nSCEPStandard\nRenewal\n". Static. */
const char *mdm_scep_caps(void);

/**
 * Appends the GetCACert answer for RA mode to out: a certificates-only ("degenerate") CMS
 * SignedData (DER) holding the RA certificate and then the CA certificate, both DER. Serve it
 * as MDM_SCEP_CA_RA_CERT_TYPE. Returns 0; MDM_ECERT when either is not a DER certificate;
 * -ENOMEM or MDM_ETOOBIG (out's limit).
 */
MDM_MUST_CHECK int mdm_scep_ca_certs(const uint8_t *ra_cert, size_t ra_len,
                                     const uint8_t *ca_cert, size_t ca_len, mdm_buf_t *out);

/** A parsed PKIOperation request. Every pointer is owned; free with
 * mdm_scep_request_dispose(). Fields that a message type lacks stay NULL / 0. */
typedef struct mdm_scep_request {
    enum mdm_scep_message_type type;
    char transaction_id[MDM_SCEP_TRANSACTION_ID_MAX + 1]; /* printable, NUL-terminated */
    uint8_t sender_nonce[MDM_SCEP_NONCE_LEN];
    /* True once the signature verified and the attributes above are read: a CertRep can be
     * built (a FAILURE with fail_info when the parse failed later). */
    bool replyable;
    enum mdm_scep_fail_info fail_info; /* suggested answer when parsing failed after that */
    uint8_t *signer_cert;              /* DER certificate that signed the message: the device's
                                        * self-signed one, or for RenewalReq its current one */
    size_t signer_cert_len;
    uint8_t *csr; /* PKCSReq, RenewalReq: the PKCS#10 request (DER), self-signature verified */
    size_t csr_len;
    uint8_t *subject; /* DER Name: the CSR's subject, or CertPoll's subject */
    size_t subject_len;
    char *common_name; /* first CN of subject (UTF-8, no control characters); NULL if none */
    uint8_t *spki;     /* CSR: SubjectPublicKeyInfo (DER), for mdm_x509_issue_der */
    size_t spki_len;
    char *challenge;   /* CSR: challengePassword (UTF-8); NULL when absent */
    uint8_t *issuer;   /* CertPoll: DER Name of the issuer */
    size_t issuer_len;
} mdm_scep_request_t;

/**
 * Parses a PKIOperation pkiMessage (der, len bytes: DER, or BER with indefinite lengths) into
 * req (overwritten; dispose it after every call, success or not): verifies the SignedData
 * signature with the signer certificate the message carries (SHA-256/384/512 with RSA of at
 * least 2048 bits or ECDSA; the certificate's trust and dates are not checked here), reads
 * messageType, transactionID and senderNonce, decrypts the envelope with the RA key and, for
 * PKCSReq and RenewalReq, parses the PKCS#10 request and verifies its self-signature (proof
 * of possession); for CertPoll it reads the IssuerAndSubject.
 *
 * Returns 0; -EBADMSG when der is not a well-formed pkiMessage or its content is malformed;
 * MDM_ECRYPTO when the signature does not verify (or uses an unsupported algorithm), the
 * envelope is not for this RA or cannot be decrypted, or the CSR's signature does not verify;
 * MDM_ECERT when no certificate in the message matches the signer; -ENOTSUP for a
 * messageType other than PKCSReq, RenewalReq and CertPoll; MDM_ETOOBIG for inputs over
 * MDM_SCEP_MESSAGE_MAX; -ENOMEM. When req->replyable is set on failure, the error came after
 * the signature verified and req->fail_info tells which failInfo to answer with; fields read
 * from the envelope (csr .. issuer) are then NULL.
 */
MDM_MUST_CHECK int mdm_scep_parse_request(const mdm_scep_ra_t *ra, const uint8_t *der,
                                          size_t len, mdm_scep_request_t *req);

/** Frees what req owns and zeroes it (wipes the challenge). Fine on a zeroed struct. */
void mdm_scep_request_dispose(mdm_scep_request_t *req);

/**
 * Appends a CertRep pkiMessage answering req (which must be replyable) to out: a SignedData
 * signed by the RA key (SHA-256, RSA) carrying the RA certificate, with transactionID,
 * messageType 3, pkiStatus, failInfo (FAILURE only), a fresh senderNonce and recipientNonce =
 * req's senderNonce. For MDM_SCEP_SUCCESS, cert (the issued certificate, DER) goes into a
 * certificates-only SignedData inside an EnvelopedData (AES-256-CBC, RSA key transport) for
 * req's signer certificate; FAILURE and PENDING have no content. fail_info is ignored unless
 * status is FAILURE; cert is ignored unless SUCCESS.
 * Returns 0; -EINVAL when req is not replyable or SUCCESS has no cert; MDM_ECERT when the RA
 * or the recipient certificate cannot be used (e.g. the signer's key is not RSA); MDM_ECRYPTO
 * when the RA key cannot sign; -ENOMEM or MDM_ETOOBIG.
 */
MDM_MUST_CHECK int mdm_scep_cert_rep(const mdm_scep_ra_t *ra, const mdm_scep_request_t *req,
                                     enum mdm_scep_status status,
                                     enum mdm_scep_fail_info fail_info, const uint8_t *cert,
                                     size_t cert_len, mdm_buf_t *out);

/* ---- client --------------------------------------------------------------------------- */

/**
 * Picks the RA certificate from a GetCACert answer (a certificates-only SignedData, or one
 * DER certificate): the first non-CA certificate with an RSA key usable for key transport
 * (keyEncipherment, or no keyUsage extension), else the first RSA certificate (a CA that is
 * its own RA). Appends it to ra_cert and, unless ca_cert is NULL, the CA certificate to
 * ca_cert when the answer holds it (the CA whose subject is the RA's issuer, or the RA itself
 * when it is a CA; ca_cert is left alone otherwise).
 * Returns 0; -EBADMSG when der holds no certificate we can read; MDM_ENOTFOUND when none has
 * an RSA key; -ENOMEM or MDM_ETOOBIG (both buffers unchanged).
 */
MDM_MUST_CHECK int mdm_scep_pick_ra(const uint8_t *der, size_t len, mdm_buf_t *ra_cert,
                                    mdm_buf_t *ca_cert);

/** The client's identity and the RA, all DER, borrowed. key is RSA (PKCS#1 or PKCS#8):
 * it signs requests and decrypts replies. cert is its self-signed certificate (PKCSReq) or
 * its current certificate (RenewalReq). */
typedef struct mdm_scep_client {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *cert;
    size_t cert_len;
    const uint8_t *ra_cert; /* from mdm_scep_pick_ra */
    size_t ra_cert_len;
} mdm_scep_client_t;

/** What a client remembers between its request and the reply. Plain data. */
typedef struct mdm_scep_transaction {
    char transaction_id[MDM_SCEP_TRANSACTION_ID_MAX + 1]; /* hex SHA-256 of spki */
    uint8_t sender_nonce[MDM_SCEP_NONCE_LEN];
    uint8_t spki[MDM_SCEP_SPKI_MAX]; /* the CSR's public key: the issued certificate's */
    size_t spki_len;
} mdm_scep_transaction_t;

/**
 * Builds a PKCSReq or RenewalReq (type) for the PKCS#10 request csr (DER, e.g. from
 * mdm_x509_make_csr_der; not validated beyond finding its public key): encrypts csr for the
 * RA with cipher, signs with the client's key and certificate, and appends the pkiMessage to
 * out. Fills tx: transactionID = lowercase hex SHA-256 of the CSR's SubjectPublicKeyInfo, a
 * random senderNonce, and that public key.
 * Returns 0; -EINVAL for another type or a csr whose public key cannot be found (or is larger
 * than MDM_SCEP_SPKI_MAX); MDM_ECERT when the RA or client certificate cannot be used (the RA
 * key must be RSA); MDM_ECRYPTO when the key cannot sign; -ENOMEM or MDM_ETOOBIG.
 */
MDM_MUST_CHECK int mdm_scep_client_request(const mdm_scep_client_t *c,
                                           enum mdm_scep_message_type type,
                                           const uint8_t *csr, size_t csr_len,
                                           enum mdm_scep_cipher cipher,
                                           mdm_scep_transaction_t *tx, mdm_buf_t *out);

/**
 * The signing half of mdm_scep_client_request(): wraps an already built pkcsPKIEnvelope
 * (any bytes) into a pkiMessage of type with tx's transactionID and senderNonce, signed with
 * the client's key and certificate, and appends it to out. For tests that hand a server
 * envelopes no honest client would make. Returns the codes of mdm_scep_client_request().
 */
MDM_MUST_CHECK int mdm_scep_client_wrap(const mdm_scep_client_t *c,
                                        enum mdm_scep_message_type type,
                                        const mdm_scep_transaction_t *tx,
                                        const uint8_t *envelope, size_t envelope_len,
                                        mdm_buf_t *out);

/** A CertRep as the client sees it. cert is owned; free with mdm_scep_reply_dispose(). */
typedef struct mdm_scep_reply {
    enum mdm_scep_status status;
    enum mdm_scep_fail_info fail_info; /* FAILURE only */
    uint8_t *cert;                     /* SUCCESS: the issued certificate (DER), whose public
                                        * key is the CSR's */
    size_t cert_len;
} mdm_scep_reply_t;

/**
 * Checks and opens a CertRep (der, len bytes) answering tx: the signature must verify with
 * the RA certificate c->ra_cert (carried in the message or not), messageType must be
 * CertRep, transactionID and recipientNonce must be tx's. On SUCCESS the envelope is
 * decrypted with c->key and the certificate for tx's public key is taken from it.
 * reply is overwritten; dispose it after every call.
 * Returns 0 (reply->status tells the outcome); -EBADMSG for a malformed message or content;
 * MDM_ECRYPTO when the signature does not verify or is not the RA's, or the envelope cannot
 * be decrypted with c->key; -EPROTO when it answers another transaction (transactionID,
 * recipientNonce) or is not a CertRep; MDM_ECERT when a SUCCESS holds no certificate for
 * tx's public key; MDM_ETOOBIG for inputs over MDM_SCEP_MESSAGE_MAX; -ENOMEM.
 */
MDM_MUST_CHECK int mdm_scep_client_parse_reply(const mdm_scep_client_t *c,
                                               const mdm_scep_transaction_t *tx,
                                               const uint8_t *der, size_t len,
                                               mdm_scep_reply_t *reply);

/** Frees what reply owns and zeroes it. Fine on a zeroed struct. */
void mdm_scep_reply_dispose(mdm_scep_reply_t *reply);

#endif
