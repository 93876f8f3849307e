/*
 * The instance folder: `mdmd init DIR` creates it, `mdmd check-certs DIR` grades its
 * certificates against Apple's rules, and the admin listener reads its API key hash.
 *
 * Layout (folders 0700, private files 0600, certificates 0644):
 *
 *     mdmd.conf              configuration template (written last: its presence means "done")
 *     ca/ca.key, ca.crt      device identity CA, ECDSA P-256, 10 years
 *     tls/server.key, .crt   TLS server certificate from the CA: SAN = host names, serverAuth,
 *                            397 days, ECDSA P-256
 *     tls/chain.pem          server certificate followed by the CA certificate
 *     signing/signing.key,   profile signing certificate from the CA: digitalSignature,
 *       signing.crt          emailProtection + codeSigning, 397 days
 *     scep/ra.key, ra.crt    SCEP RA certificate from the CA: RSA 2048, digitalSignature +
 *                            keyEncipherment, 5 years (never past the CA); created by serve
 *                            for instances made before it existed
 *     escrow/escrow.key,     FileVault recovery-key escrow certificate: the same kind (Macs
 *       escrow.crt           encrypt recovery keys to it); also created by serve when missing
 *     secrets.key            32 random bytes sealing secrets at rest (core/seal)
 *     admin-api-key.sha256   lowercase hex SHA-256 of the admin API key "mdm_<base64url>"
 *     db/                    RocksDB, created by `mdmd serve`
 *
 * These run on the main thread of a CLI command, before any shard exists; they block on I/O.
 */
#ifndef MDM_ACTORS_INSTANCE_H
#define MDM_ACTORS_INSTANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "core/common.h"

/** Host names used when init is given none. */
#define MDM_INSTANCE_DEFAULT_HOSTNAMES "localhost,127.0.0.1,::1"

/** The SCEP RA's files, relative to the instance folder. */
#define MDM_INSTANCE_RA_KEY "scep/ra.key"
#define MDM_INSTANCE_RA_CERT "scep/ra.crt"
#define MDM_INSTANCE_ESCROW_KEY "escrow/escrow.key"
#define MDM_INSTANCE_ESCROW_CERT "escrow/escrow.crt"

/** Prefix of admin API keys; the rest is 43 characters of unpadded base64url (32 bytes). */
#define MDM_INSTANCE_API_KEY_PREFIX "mdm_"

/**
 * Creates (or with force, regenerates) the instance folder dir and prints a summary to out:
 * the files created, the host names and the new admin API key, which is shown only this once
 * (only its SHA-256 is stored). hostnames_csv lists the DNS names and IP addresses Macs use to
 * reach the server ("mdm.example.com,10.0.0.5"; NULL = MDM_INSTANCE_DEFAULT_HOSTNAMES); they
 * go into the TLS certificate's subjectAltName and the config file.
 *
 * Without force, a dir that already holds mdmd.conf is left untouched. With force, every
 * key, certificate, the API key and mdmd.conf are regenerated; db/ is never deleted, and
 * secrets.key is kept when db/ is not empty (the database's sealed secrets need it).
 *
 * Returns 0; -EEXIST when dir holds mdmd.conf and force is false (a hint is printed to out);
 * -EINVAL for an empty or malformed host name list (reason printed to out); MDM_ECRYPTO,
 * MDM_ECERT or -errno when creating a file fails (the failing step is printed to out).
 */
MDM_MUST_CHECK int mdm_instance_init(const char *dir, const char *hostnames_csv, bool force,
                                     FILE *out);

/**
 * Checks the instance's certificates and prints one line per rule per certificate to out,
 * e.g. "tls/server.crt  PASS  subjectAltName      DNS:localhost, IP:127.0.0.1", preceded by
 * an INFO line with the subject, key and SHA-256 fingerprint:
 *   tls/server.crt       against the TLS server rules; every name of hostnames_csv (when not
 *                        NULL) must be in its subjectAltName, otherwise any SAN will do;
 *   ca/ca.crt            against the CA rules;
 *   signing/signing.crt  against the signing rules;
 *   extra_files[i]       the first certificate against the TLS server rules, any further
 *                        certificates of a PEM chain against the CA rules.
 * A file that cannot be read or parsed counts as one failure. Warnings are not failures.
 * Returns the number of FAIL lines (0 = all good), or -EINVAL for a malformed hostnames_csv.
 */
MDM_MUST_CHECK int mdm_instance_check_certs(const char *dir, const char *hostnames_csv,
                                            const char *const *extra_files, size_t n_extra,
                                            FILE *out);

/**
 * Makes sure dir holds a usable SCEP RA (MDM_INSTANCE_RA_KEY, MDM_INSTANCE_RA_CERT): present,
 * an RSA certificate that chains to ca/ca.crt and is valid for 30 more days. Otherwise makes
 * a new key and certificate (*created = true) and says in why (whylen bytes) what was wrong
 * with the old one, for the log. Blocks on file I/O and RSA key generation (about a second):
 * start-up only. Returns 0, or the codes of the x509 functions and -errno (why then also
 * names the failing step).
 */
MDM_MUST_CHECK int mdm_instance_ensure_scep_ra(const char *dir, bool *created, char *why,
                                               size_t whylen);

/**
 * The same for the FileVault recovery-key escrow certificate (MDM_INSTANCE_ESCROW_KEY,
 * MDM_INSTANCE_ESCROW_CERT): RSA-2048 from the instance CA; Macs encrypt the personal recovery
 * keys they escrow to it (CMS EnvelopedData), and only mdmd holds the key.
 */
MDM_MUST_CHECK int mdm_instance_ensure_escrow(const char *dir, bool *created, char *why,
                                              size_t whylen);

/**
 * Reads dir/admin-api-key.sha256 into hex_out (64 lowercase hex digits and a NUL).
 * Returns 0, MDM_ECONFIG when the file does not hold exactly one such hash, or -errno.
 */
MDM_MUST_CHECK int mdm_instance_read_admin_key_hash(const char *dir, char hex_out[65]);

/**
 * Hashes an API key as presented by a client (the full "mdm_..." string) into hex_out
 * (lowercase hex SHA-256 and a NUL), the form stored in admin-api-key.sha256.
 * Returns 0 or MDM_ECRYPTO.
 */
MDM_MUST_CHECK int mdm_instance_hash_api_key(const char *key, char hex_out[65]);

#endif
