/*
 * mdm_x509: X.509 certificate generation and inspection on wolfCrypt, and rule checks.
 *
 * Generation works on PEM files: keys are written with mode 0600 and certificates with 0644,
 * each through a temporary file renamed over the target, so a crash never leaves a torn file
 * and the mode never depends on the umask. Certificates are v3, signed with SHA-256 (unless
 * the spec says otherwise), carry a random positive 16-byte serial, a subjectKeyIdentifier
 * and, when issued by a CA, an authorityKeyIdentifier.
 *
 * Inspection parses DER or PEM (a PEM file may hold a chain) into mdm_x509_info_t, and
 * mdm_x509_check() grades one certificate against a rule profile, for example Apple's
 * requirements for trusted TLS server certificates. This module knows nothing about MDM.
 *
 * Threads: every function is reentrant; nothing is shared between calls.
 */
#ifndef MDM_CORE_X509_H
#define MDM_CORE_X509_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

/* ---- keys ---------------------------------------------------------------------------- */

enum mdm_x509_key_type {
    MDM_X509_KEY_EC_P256, /* ECDSA on secp256r1, the default everywhere */
    MDM_X509_KEY_EC_P384,
    MDM_X509_KEY_RSA_2048,
    MDM_X509_KEY_RSA_3072,
};

/**
 * Generates a private key of the given type and writes it as PEM ("EC PRIVATE KEY" or
 * "RSA PRIVATE KEY") to path with mode 0600, replacing any existing file atomically.
 * Returns 0, MDM_ECRYPTO (key generation failed), -ENOMEM or another -errno from the file.
 */
MDM_MUST_CHECK int mdm_x509_key_generate(const char *path, enum mdm_x509_key_type type);

/* ---- certificate generation ------------------------------------------------------------ */

/** Signature hash. SHA-1 exists only so tests can produce certificates that must fail. */
enum mdm_x509_hash {
    MDM_X509_HASH_SHA256 = 0, /* default */
    MDM_X509_HASH_SHA384,
    MDM_X509_HASH_SHA512,
    MDM_X509_HASH_SHA1, /* weak: never for real certificates */
    MDM_X509_HASH_SHA224, /* inspection only */
    MDM_X509_HASH_MD5,    /* inspection only */
    MDM_X509_HASH_UNKNOWN, /* inspection only */
};

/* keyUsage bits (the extension is marked critical when any bit is set). */
#define MDM_X509_KU_DIGITAL_SIGNATURE 0x01u
#define MDM_X509_KU_KEY_ENCIPHERMENT 0x02u
#define MDM_X509_KU_KEY_AGREEMENT 0x04u
#define MDM_X509_KU_KEY_CERT_SIGN 0x08u
#define MDM_X509_KU_CRL_SIGN 0x10u

/* extendedKeyUsage bits. */
#define MDM_X509_EKU_SERVER_AUTH 0x01u
#define MDM_X509_EKU_CLIENT_AUTH 0x02u
#define MDM_X509_EKU_CODE_SIGNING 0x04u
#define MDM_X509_EKU_EMAIL_PROTECTION 0x08u
#define MDM_X509_EKU_TIME_STAMPING 0x10u /* inspection only */
#define MDM_X509_EKU_OCSP_SIGNING 0x20u  /* inspection only */
#define MDM_X509_EKU_ANY 0x40u           /* inspection only */

/** What to put into a new certificate. Borrowed by the call only. */
typedef struct mdm_x509_spec {
    const char *common_name;  /* required; 1..63 bytes */
    const char *organization; /* NULL = no O attribute; at most 63 bytes */
    uint32_t validity_days;   /* notAfter = notBefore + validity_days * 86400; >= 1 */
    int64_t not_before;       /* Unix seconds; 0 = now minus 5 minutes (clock skew margin) */
    const char *const *san;   /* subjectAltNames: IPv4/IPv6 literals become iPAddress, anything
                               * else dNSName (letters, digits, '-', '.', leading "*.") */
    size_t n_san;             /* 0 = no subjectAltName extension */
    unsigned key_usage;       /* MDM_X509_KU_* bits; 0 = no keyUsage extension */
    unsigned ext_key_usage;   /* MDM_X509_EKU_SERVER_AUTH..EMAIL_PROTECTION; 0 = no EKU */
    bool is_ca;               /* basicConstraints CA:TRUE (critical) */
    enum mdm_x509_hash hash;  /* SHA256 (0), SHA384, SHA512 or SHA1 */
} mdm_x509_spec_t;

/**
 * True when name can be a subjectAltName entry of mdm_x509_spec_t: an IPv4 or IPv6 literal,
 * or a DNS name (labels of 1..63 letters, digits, '-' or '_', at most 253 bytes, optionally
 * starting with the wildcard label "*.").
 */
bool mdm_x509_san_entry_valid(const char *name);

/**
 * Makes a self-signed certificate for the key in key_path (PEM, EC or RSA; see
 * mdm_x509_key_generate) and writes it as PEM to cert_path (mode 0644, atomic replace).
 * For a CA set spec->is_ca and key_usage MDM_X509_KU_KEY_CERT_SIGN | MDM_X509_KU_CRL_SIGN.
 * Returns 0; -EINVAL for a bad spec (empty or too long names, bad SAN entry, unsupported hash,
 * validity_days 0); MDM_ECRYPTO when a key file holds no EC or RSA private key (PEM: SEC1,
 * PKCS#1 or unencrypted PKCS#8; or DER) or signing fails; MDM_ECERT when wolfCrypt rejects the
 * certificate; -ENOMEM, MDM_ETOOBIG or -errno (e.g. -ENOENT) from the files.
 */
MDM_MUST_CHECK int mdm_x509_make_self_signed(const char *key_path, const char *cert_path,
                                             const mdm_x509_spec_t *spec);

/**
 * Issues a certificate for the public half of the key in key_path, signed by the CA key in
 * ca_key_path, with issuer and authorityKeyIdentifier taken from the CA certificate in
 * ca_cert_path (PEM or DER; the first certificate of a PEM chain). Writes it as PEM to
 * cert_path (mode 0644, atomic replace). Only the leaf is written; callers that need a chain
 * file concatenate the PEMs. Returns the codes of mdm_x509_make_self_signed(), and
 * MDM_ECERT when the CA certificate cannot be parsed or ca_key_path is not its key.
 */
MDM_MUST_CHECK int mdm_x509_issue(const char *ca_key_path, const char *ca_cert_path,
                                  const char *key_path, const char *cert_path,
                                  const mdm_x509_spec_t *spec);

/* ---- inspection ------------------------------------------------------------------------ */

enum mdm_x509_key_alg {
    MDM_X509_KEYALG_OTHER = 0,
    MDM_X509_KEYALG_RSA,
    MDM_X509_KEYALG_EC,
    MDM_X509_KEYALG_ED25519,
    MDM_X509_KEYALG_ED448,
};

enum mdm_x509_san_type {
    MDM_X509_SAN_DNS,
    MDM_X509_SAN_IP,
    MDM_X509_SAN_EMAIL,
    MDM_X509_SAN_URI,
    MDM_X509_SAN_OTHER,
};

#define MDM_X509_SAN_MAX 32   /* entries kept per certificate; more set san_truncated */
#define MDM_X509_TEXT_MAX 256 /* bytes of a name or SAN value, including the NUL */

typedef struct mdm_x509_san {
    enum mdm_x509_san_type type;
    char value[MDM_X509_TEXT_MAX]; /* DNS name, IP literal (inet_ntop form), email, URI */
} mdm_x509_san_t;

/** Everything mdmd reports about one certificate. Plain data, no pointers. */
typedef struct mdm_x509_info {
    char subject[MDM_X509_TEXT_MAX]; /* e.g. "CN=mdm.example.com, O=Example" */
    char issuer[MDM_X509_TEXT_MAX];
    char serial_hex[2 * 32 + 1];     /* uppercase hex, as in the DER INTEGER */
    int64_t not_before;              /* Unix seconds */
    int64_t not_after;               /* Unix seconds */
    enum mdm_x509_key_alg key_alg;
    unsigned key_bits;               /* RSA modulus bits or EC field bits */
    char key_desc[32];               /* "ECDSA P-256", "RSA 2048", "Ed25519", ... */
    char sig_alg[40];                /* "ecdsa-with-SHA256", "sha1WithRSAEncryption", ... */
    enum mdm_x509_hash sig_hash;     /* hash of the signature algorithm */
    bool has_san;                    /* the subjectAltName extension is present */
    bool san_truncated;              /* more than MDM_X509_SAN_MAX entries */
    size_t n_san;
    mdm_x509_san_t san[MDM_X509_SAN_MAX];
    bool has_eku;                    /* the extendedKeyUsage extension is present */
    unsigned eku;                    /* MDM_X509_EKU_* bits */
    bool has_key_usage;              /* the keyUsage extension is present */
    unsigned key_usage;              /* MDM_X509_KU_* bits */
    bool is_ca;                      /* basicConstraints CA:TRUE */
    bool self_issued;                /* subject == issuer */
    uint8_t sha256[32];              /* SHA-256 over the DER */
    char fingerprint[32 * 3];        /* "AB:CD:..." of sha256 */
} mdm_x509_info_t;

/**
 * Parses one DER certificate into info. No signature or date is verified.
 * Returns 0 or MDM_ECERT (not a certificate, or one wolfCrypt cannot parse).
 */
MDM_MUST_CHECK int mdm_x509_inspect_der(const uint8_t *der, size_t len, mdm_x509_info_t *info);

/**
 * Reads a certificate file: PEM with one or more CERTIFICATE blocks (a chain, leaf first),
 * or a single DER certificate. On success *infos is a malloc'ed array of *n (>= 1) entries
 * in file order that the caller frees with free(). Returns 0; MDM_ECERT when the file holds
 * no parsable certificate; -ENOMEM; MDM_ETOOBIG for files over 1 MiB; -errno from open/read.
 */
MDM_MUST_CHECK int mdm_x509_inspect_file(const char *path, mdm_x509_info_t **infos, size_t *n);

/** Formats "DNS:a, IP:127.0.0.1, ..." into out (always NUL-terminated, "..." on overflow). */
void mdm_x509_format_san(const mdm_x509_info_t *info, char *out, size_t size);

/* ---- rule checks ----------------------------------------------------------------------- */

enum mdm_x509_profile {
    MDM_X509_PROFILE_TLS_SERVER, /* Apple's requirements for trusted TLS server certificates */
    MDM_X509_PROFILE_CA,         /* an issuing or root CA */
    MDM_X509_PROFILE_SIGNING,    /* a profile (CMS) signing certificate */
};

enum mdm_x509_verdict { MDM_X509_PASS = 0, MDM_X509_WARN, MDM_X509_FAIL };

/* Rule names (stable: tests and scripts match on them). */
#define MDM_X509_RULE_SAN "subjectAltName"           /* server: present, holds expected names */
#define MDM_X509_RULE_EKU "extendedKeyUsage"         /* server: EKU has serverAuth */
#define MDM_X509_RULE_SIG "signatureAlgorithm"       /* all: SHA-256 or stronger */
#define MDM_X509_RULE_KEY "keyStrength"              /* all: ECDSA P-256/384/521, RSA >= 2048 */
#define MDM_X509_RULE_PERIOD "validityPeriod"        /* server: notAfter - notBefore <= 398 d */
#define MDM_X509_RULE_NOW "validNow"                 /* all: within dates; WARN < 30 days left */
#define MDM_X509_RULE_BASIC "basicConstraints"       /* CA: CA:TRUE, keyCertSign if KU present */
#define MDM_X509_RULE_KU "keyUsage"                  /* signing: digitalSignature if KU present */

#define MDM_X509_MAX_VALIDITY_DAYS 398 /* Apple, TLS server certificates issued since 2020-09 */
#define MDM_X509_EXPIRY_WARN_DAYS 30
#define MDM_X509_RESULTS_MAX 8

typedef struct mdm_x509_result {
    const char *rule;              /* one of MDM_X509_RULE_*, static */
    enum mdm_x509_verdict verdict;
    char reason[512];              /* e.g. "validity 825 days > 398 days" */
} mdm_x509_result_t;

/**
 * Grades info against profile at Unix time now and writes one result per rule of the
 * profile into out, in a fixed order. For MDM_X509_PROFILE_TLS_SERVER, each of the
 * n_expected expected_names (DNS names or IP literals; wildcard SANs match one label) must
 * be in the subjectAltName; with n_expected == 0 a non-empty subjectAltName is enough.
 * Other profiles ignore expected_names. Returns the number of results written (<= out_max,
 * never more than MDM_X509_RESULTS_MAX).
 */
size_t mdm_x509_check(const mdm_x509_info_t *info, enum mdm_x509_profile profile,
                      const char *const *expected_names, size_t n_expected, int64_t now,
                      mdm_x509_result_t *out, size_t out_max);

/** "PASS", "WARN" or "FAIL". */
const char *mdm_x509_verdict_name(enum mdm_x509_verdict v);

/**
 * Reads the first certificate of a PEM (or DER) file as DER into a malloc'ed buffer the
 * caller frees. Returns 0, -errno, MDM_ETOOBIG (file over 1 MiB) or MDM_ECERT (bad PEM).
 */
MDM_MUST_CHECK int mdm_x509_read_cert_der(const char *path, uint8_t **der, size_t *len);

/** PEM text (a certificate, or with is_key an unencrypted private key: SEC1, PKCS#1 or
 * PKCS#8) to DER in a malloc'ed buffer. Returns 0, -EINVAL (no such PEM block), -ENOMEM. */
MDM_MUST_CHECK int mdm_x509_pem_to_der(const char *pem, size_t len, bool is_key, uint8_t **der,
                                       size_t *der_len);

/** 0 when key_der (a DER private key, EC or RSA) is the private half of cert_der's public
 * key; MDM_ECERT when it is not, MDM_ECRYPTO when the key cannot be decoded, -ENOMEM. */
MDM_MUST_CHECK int mdm_x509_key_matches(const uint8_t *cert_der, size_t cert_len,
                                        const uint8_t *key_der, size_t key_len);

/** The subject's UID attribute (OID 0.9.2342.19200300.100.1.1; Apple puts push topics
 * there) into out. Returns 0, MDM_ENOTFOUND (no UID) or MDM_ECERT (not a certificate). */
MDM_MUST_CHECK int mdm_x509_subject_uid(const uint8_t *der, size_t len, char *out, size_t size);

/**
 * Opens a PKCS#12 file with password: its certificate and private key as DER in malloc'ed
 * buffers (the key's holder wipes and frees it). Returns 0, -EBADMSG (not PKCS#12),
 * MDM_ECRYPTO (wrong password or unsupported encryption), MDM_ENOTFOUND (certificate or key
 * missing), -ENOMEM.
 */
MDM_MUST_CHECK int mdm_x509_pkcs12_parse(const uint8_t *p12, size_t len, const char *password,
                                         uint8_t **cert_der, size_t *cert_len,
                                         uint8_t **key_der, size_t *key_len);

/* ---- in-memory generation (DER) -------------------------------------------------------- */

/**
 * Generates a private key of the given type and returns it as DER (SEC1 "EC PRIVATE KEY" or
 * PKCS#1 "RSA PRIVATE KEY") in a malloc'ed buffer that the caller wipes and frees
 * (mdm_free_wiped(*key_der, *key_len)). Nothing touches the disk.
 * Returns 0, -EINVAL (unknown type), MDM_ECRYPTO (key generation failed) or -ENOMEM.
 */
MDM_MUST_CHECK int mdm_x509_key_generate_der(enum mdm_x509_key_type type, uint8_t **key_der,
                                             size_t *key_len);

/**
 * The SubjectPublicKeyInfo (DER) of the private key key_der (EC or RSA; SEC1, PKCS#1 or
 * unencrypted PKCS#8), in a malloc'ed buffer the caller frees.
 * Returns 0, MDM_ECRYPTO (not a private key we can decode) or -ENOMEM.
 */
MDM_MUST_CHECK int mdm_x509_key_public_der(const uint8_t *key_der, size_t key_len,
                                           uint8_t **spki, size_t *spki_len);

/**
 * mdm_x509_make_self_signed() on DER buffers: a self-signed certificate for the private key
 * key_der (EC or RSA), returned as DER in a malloc'ed buffer the caller frees.
 * Returns the codes of mdm_x509_make_self_signed() except the file errors.
 */
MDM_MUST_CHECK int mdm_x509_make_self_signed_der(const uint8_t *key_der, size_t key_len,
                                                 const mdm_x509_spec_t *spec,
                                                 uint8_t **cert_der, size_t *cert_len);

/**
 * Issues a certificate for a public key given as SubjectPublicKeyInfo DER (spki_der, e.g.
 * taken from a PKCS#10 request; RSA of at least 2048 bits, or EC on a named curve), signed by
 * the CA private key ca_key_der (DER, EC or RSA) with issuer and authorityKeyIdentifier from
 * the CA certificate ca_cert_der (DER). Subject (CN, optional O), validity, key usage, EKU,
 * SANs and basicConstraints come from spec only: nothing of a request is copied. The serial
 * is random. Works on buffers so a server can keep its CA loaded; the DER of the new
 * certificate is returned in a malloc'ed buffer the caller frees.
 * Returns 0; -EINVAL for a bad spec; MDM_ECRYPTO when ca_key_der is not a private key,
 * spki_der is not a supported public key, or signing fails; MDM_ECERT when the CA
 * certificate cannot be parsed, ca_key_der is not its key, or wolfCrypt rejects the
 * certificate; -ENOMEM.
 */
MDM_MUST_CHECK int mdm_x509_issue_der(const uint8_t *ca_key_der, size_t ca_key_len,
                                      const uint8_t *ca_cert_der, size_t ca_cert_len,
                                      const uint8_t *spki_der, size_t spki_len,
                                      const mdm_x509_spec_t *spec, uint8_t **cert_der,
                                      size_t *cert_len);

/**
 * Makes a PKCS#10 certificate request (DER, SHA-256 signature) for the private key key_der
 * (EC or RSA) with subject CN=common_name (and O=organization unless NULL) and, unless
 * challenge is NULL, a challengePassword attribute (PrintableString when the text allows it,
 * else UTF8String; 1..63 bytes). The DER is returned in a malloc'ed buffer the caller frees.
 * Returns 0; -EINVAL for empty or too long names or challenge; MDM_ECRYPTO when key_der is not
 * a private key or signing fails; MDM_ECERT when wolfCrypt cannot encode the request; -ENOMEM.
 */
/** What mdm_x509_write_pem() writes. */
enum mdm_x509_pem_kind {
    MDM_X509_PEM_CERT,    /* "CERTIFICATE", mode 0644 */
    MDM_X509_PEM_RSA_KEY, /* "RSA PRIVATE KEY" (PKCS#1 DER), mode 0600 */
    MDM_X509_PEM_EC_KEY,  /* "EC PRIVATE KEY" (SEC1 DER), mode 0600 */
};

/**
 * Writes len bytes of DER as one PEM block of kind to path (atomic replace).
 * Returns 0, -EINVAL (an unknown kind or empty der), MDM_ECRYPTO (cannot encode), -ENOMEM or
 * -errno from the file.
 */
MDM_MUST_CHECK int mdm_x509_write_pem(const char *path, enum mdm_x509_pem_kind kind,
                                      const uint8_t *der, size_t len);

MDM_MUST_CHECK int mdm_x509_make_csr_der(const uint8_t *key_der, size_t key_len,
                                         const char *common_name, const char *organization,
                                         const char *challenge, uint8_t **csr_der,
                                         size_t *csr_len);

#endif
