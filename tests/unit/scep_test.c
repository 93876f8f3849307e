/*
 * core/scep tests. Keys and certificates are made at test time with core/x509 in a temporary
 * folder: an EC P-256 CA, an RSA-2048 RA it issued (and a second RA, the wrong one), and
 * simulated devices with RSA keys and self-signed certificates.
 * - GetCACaps text; GetCACert (RA + CA) picked apart by the client;
 * - round trip PKCSReq -> parse -> issue -> CertRep -> client, for AES-128, AES-256 and 3DES
 *   envelopes: the issued certificate chains to the CA and carries the CSR's public key;
 *   RenewalReq signed with that certificate for a new key; CertPoll; unsupported types;
 * - FAILURE (badRequest) and PENDING replies; a request for the wrong RA (badMessageCheck);
 *   tampered signatures; replies for another transaction, from another RA, or for another
 *   key;
 * - every truncation and one bit flip per byte of a request and of a reply, CSRs and
 *   envelopes mangled inside validly signed messages: errors or the exact original result,
 *   never a crash (run under ASan too);
 * - with the openssl CLI: `openssl cms -verify` and `-decrypt` of our CertRep and requests,
 *   `openssl pkcs7 -print_certs` of GetCACert and of the issued certificate, an OpenSSL CSR
 *   (with challengePassword) and PKCS#8 key used by our client, and OpenSSL envelopes.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"
#include "core/buf.h"
#include "core/cms.h"
#include "core/crypto.h"
#include "core/file.h"
#include "core/scep.h"
#include "core/tls.h"
#include "core/x509.h"

#define DAY 86400

static char dir[PATH_MAX / 2];
static bool have_openssl;
static int64_t now;

/* A DER blob owned by the test. */
struct blob {
    uint8_t *p;
    size_t n;
};

/* The fixtures. */
static struct blob ca_cert, ca_key, ra_cert, ra_key, ra2_cert, ra2_key;
static struct blob dev_key, dev_cert, dev_csr, dev_spki; /* a simulated Mac */
static struct blob oth_key, oth_cert;                    /* another device */

static const char challenge[] = "s3cret-Challenge!"; /* '!' forces a UTF8String */

static void die(const char *what, int ret)
{
    fprintf(stderr, "setup: %s: %s\n", what, mdm_strerror(ret));
    exit(99);
}

static void blob_free(struct blob *b)
{
    free(b->p);
    b->p = NULL;
    b->n = 0;
}

static bool blob_eq(const struct blob *b, const uint8_t *p, size_t n)
{
    return p && b->n == n && memcmp(b->p, p, n) == 0;
}

static void write_blob(const char *name, const void *p, size_t n)
{
    int ret = mdm_file_write_atomic(check_path(dir, name), p, n, 0600);
    if (ret != 0)
        die(name, ret);
}

static struct blob read_blob(const char *name)
{
    struct blob b = {0};
    int ret = mdm_file_read(check_path(dir, name), 1 << 20, &b.p, &b.n);
    if (ret != 0)
        die(name, ret);
    return b;
}

/* DER of the first PEM block of a file: a key (is_key) or a certificate. */
static struct blob read_pem(const char *name, bool is_key)
{
    struct blob file = read_blob(name), der = {0};
    int ret = mdm_x509_pem_to_der((const char *)file.p, file.n, is_key, &der.p, &der.n);
    if (ret != 0)
        die(name, ret);
    blob_free(&file);
    return der;
}

static mdm_x509_spec_t device_spec(const char *cn)
{
    return (mdm_x509_spec_t){
        .common_name = cn,
        .organization = "mdmd test",
        .validity_days = 365,
        .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE | MDM_X509_KU_KEY_ENCIPHERMENT,
        .ext_key_usage = MDM_X509_EKU_CLIENT_AUTH,
    };
}

/* An RSA key and its self-signed certificate, in memory. */
static void make_device(const char *cn, struct blob *key, struct blob *cert)
{
    int ret = mdm_x509_key_generate_der(MDM_X509_KEY_RSA_2048, &key->p, &key->n);
    if (ret != 0)
        die("device key", ret);
    mdm_x509_spec_t spec = device_spec(cn);
    spec.validity_days = 1;
    if ((ret = mdm_x509_make_self_signed_der(key->p, key->n, &spec, &cert->p, &cert->n)) != 0)
        die("device certificate", ret);
}

/* <name>.key (RSA-2048) and <name>.pem issued by the CA as an RA. */
static void make_ra(const char *name, struct blob *cert, struct blob *key)
{
    char k[64], c[64];
    snprintf(k, sizeof(k), "%s.key", name);
    snprintf(c, sizeof(c), "%s.pem", name);
    mdm_x509_spec_t spec = {
        .common_name = name,
        .organization = "mdmd test",
        .validity_days = 365,
        .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE | MDM_X509_KU_KEY_ENCIPHERMENT,
    };
    int ret = mdm_x509_key_generate(check_path(dir, k), MDM_X509_KEY_RSA_2048);
    if (ret == 0)
        ret = mdm_x509_issue(check_path(dir, "ca.key"), check_path(dir, "ca.pem"), check_path(dir, k), check_path(dir, c), &spec);
    if (ret != 0)
        die(name, ret);
    *cert = read_pem(c, false);
    *key = read_pem(k, true);
}

static void setup(void)
{
    mdm_x509_spec_t ca_spec = {
        .common_name = "mdmd test CA",
        .organization = "mdmd test",
        .validity_days = 3650,
        .is_ca = true,
        .key_usage = MDM_X509_KU_KEY_CERT_SIGN | MDM_X509_KU_CRL_SIGN,
    };
    int ret = mdm_x509_key_generate(check_path(dir, "ca.key"), MDM_X509_KEY_EC_P256);
    if (ret == 0)
        ret = mdm_x509_make_self_signed(check_path(dir, "ca.key"), check_path(dir, "ca.pem"), &ca_spec);
    if (ret != 0)
        die("CA", ret);
    ca_cert = read_pem("ca.pem", false);
    ca_key = read_pem("ca.key", true);
    make_ra("ra", &ra_cert, &ra_key);
    make_ra("ra2", &ra2_cert, &ra2_key);
    make_device("device-1 self-signed", &dev_key, &dev_cert);
    make_device("device-2 self-signed", &oth_key, &oth_cert);
    if ((ret = mdm_x509_make_csr_der(dev_key.p, dev_key.n, "device-1", "mdmd test", challenge,
                                     &dev_csr.p, &dev_csr.n)) != 0)
        die("CSR", ret);
    if ((ret = mdm_x509_key_public_der(dev_key.p, dev_key.n, &dev_spki.p, &dev_spki.n)) != 0)
        die("public key", ret);
}

static const mdm_scep_ra_t *ra(void)
{
    static mdm_scep_ra_t r;
    r = (mdm_scep_ra_t){ra_cert.p, ra_cert.n, ra_key.p, ra_key.n};
    return &r;
}

static mdm_scep_client_t client(const struct blob *key, const struct blob *cert)
{
    return (mdm_scep_client_t){key->p, key->n, cert->p, cert->n, ra_cert.p, ra_cert.n};
}

/* A PKCSReq of dev for dev_csr. */
static void make_request(enum mdm_scep_cipher cipher, mdm_scep_transaction_t *tx,
                         mdm_buf_t *out)
{
    mdm_scep_client_t c = client(&dev_key, &dev_cert);
    mdm_buf_init(out, 0);
    int ret = mdm_scep_client_request(&c, MDM_SCEP_PKCS_REQ, dev_csr.p, dev_csr.n, cipher, tx,
                                      out);
    if (ret != 0)
        die("request", ret);
}

/* Issues a device certificate for req's public key. */
static struct blob issue(const mdm_scep_request_t *req, const char *cn)
{
    struct blob b = {0};
    mdm_x509_spec_t spec = device_spec(cn);
    int ret = mdm_x509_issue_der(ca_key.p, ca_key.n, ca_cert.p, ca_cert.n, req->spki,
                                 req->spki_len, &spec, &b.p, &b.n);
    if (ret != 0)
        die("issue", ret);
    return b;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_caps(void)
{
    CHECK_STR(mdm_scep_caps(), "POSTPKIOperation\nSHA-256\nAES\nSCEPStandard\nRenewal\n");
}

static void test_ca_certs(void)
{
    mdm_buf_t out, ra_b, ca_b;
    mdm_buf_init(&out, 0);
    mdm_buf_init(&ra_b, 0);
    mdm_buf_init(&ca_b, 0);
    CHECK_EQ_INT(mdm_scep_ca_certs(ra_cert.p, ra_cert.n, ca_cert.p, ca_cert.n, &out), 0);
    CHECK_EQ_INT(mdm_scep_pick_ra(mdm_buf_head(&out), out.len, &ra_b, &ca_b), 0);
    CHECK(blob_eq(&ra_cert, mdm_buf_head(&ra_b), ra_b.len));
    CHECK(blob_eq(&ca_cert, mdm_buf_head(&ca_b), ca_b.len));
    if (have_openssl) {
        write_blob("cacerts.der", mdm_buf_head(&out), out.len);
        CHECK_EQ_INT(check_sh("openssl pkcs7 -inform DER -in '%s' -print_certs -out '%s'",
                        check_path(dir, "cacerts.der"), check_path(dir, "cacerts.txt")), 0);
        CHECK_EQ_INT(check_sh("test $(grep -c 'BEGIN CERTIFICATE' '%s') -eq 2 && "
                        "grep -q 'CN *= *ra$' '%s' && grep -q 'CN *= *mdmd test CA' '%s'",
                        check_path(dir, "cacerts.txt"), check_path(dir, "cacerts.txt"), check_path(dir, "cacerts.txt")), 0);
        /* A BER answer from a streaming encoder (indefinite lengths, constructed content). */
        mdm_buf_reset(&ra_b);
        mdm_buf_reset(&ca_b);
        CHECK_EQ_INT(check_sh("echo hello | openssl cms -sign -stream -nodetach -binary -signer '%s' "
                        "-inkey '%s' -certfile '%s' -outform DER -out '%s'",
                        check_path(dir, "ra.pem"), check_path(dir, "ra.key"), check_path(dir, "ca.pem"), check_path(dir, "ber.der")), 0);
        struct blob ber = read_blob("ber.der");
        CHECK(ber.n > 2 && ber.p[1] == 0x80);
        CHECK_EQ_INT(mdm_scep_pick_ra(ber.p, ber.n, &ra_b, &ca_b), 0);
        CHECK(blob_eq(&ra_cert, mdm_buf_head(&ra_b), ra_b.len));
        CHECK(blob_eq(&ca_cert, mdm_buf_head(&ca_b), ca_b.len));
        blob_free(&ber);
    }

    /* The order does not matter; a single RSA certificate is its own RA. */
    mdm_buf_reset(&out);
    mdm_buf_reset(&ra_b);
    mdm_buf_reset(&ca_b);
    CHECK_EQ_INT(mdm_scep_ca_certs(ca_cert.p, ca_cert.n, ra_cert.p, ra_cert.n, &out), 0);
    CHECK_EQ_INT(mdm_scep_pick_ra(mdm_buf_head(&out), out.len, &ra_b, NULL), 0);
    CHECK(blob_eq(&ra_cert, mdm_buf_head(&ra_b), ra_b.len));
    mdm_buf_reset(&ra_b);
    CHECK_EQ_INT(mdm_scep_pick_ra(ra_cert.p, ra_cert.n, &ra_b, &ca_b), 0);
    CHECK(blob_eq(&ra_cert, mdm_buf_head(&ra_b), ra_b.len));
    CHECK_EQ_INT(ca_b.len, 0); /* not a CA, and its issuer is not in the answer */

    /* An EC CA alone cannot be an RA; garbage is not an answer. */
    mdm_buf_reset(&ra_b);
    CHECK_EQ_INT(mdm_scep_pick_ra(ca_cert.p, ca_cert.n, &ra_b, NULL), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_scep_pick_ra((const uint8_t *)"garbage", 7, &ra_b, NULL), -EBADMSG);
    CHECK_EQ_INT(ra_b.len, 0);
    mdm_buf_reset(&out);
    CHECK_EQ_INT(mdm_scep_ca_certs(ra_cert.p, ra_cert.n - 1, ca_cert.p, ca_cert.n, &out),
                 MDM_ECERT);
    CHECK_EQ_INT(out.len, 0);
    mdm_buf_dispose(&out);
    mdm_buf_dispose(&ra_b);
    mdm_buf_dispose(&ca_b);
}

/* Issued certificate checks: chains to the CA, carries key's public key, device usages. */
static void check_issued(const uint8_t *cert, size_t len, const struct blob *key,
                         const char *cn)
{
    CHECK_EQ_INT(mdm_cms_cert_verify_chain(cert, len, check_path(dir, "ca.pem"), now), 0);
    CHECK_EQ_INT(mdm_x509_key_matches(cert, len, key->p, key->n), 0);
    mdm_x509_info_t *info = calloc(1, sizeof(*info));
    if (!info)
        exit(99);
    CHECK_EQ_INT(mdm_x509_inspect_der(cert, len, info), 0);
    char want[128];
    snprintf(want, sizeof(want), "O=mdmd test, CN=%s", cn); /* wolfCrypt's RDN order */
    CHECK_STR(info->subject, want);
    CHECK(info->has_key_usage && info->key_usage == (MDM_X509_KU_DIGITAL_SIGNATURE |
                                                     MDM_X509_KU_KEY_ENCIPHERMENT));
    CHECK(info->has_eku && info->eku == MDM_X509_EKU_CLIENT_AUTH);
    CHECK(!info->is_ca);
    CHECK(info->not_after - info->not_before == 365 * DAY);
    free(info);
}

static void test_round_trip(enum mdm_scep_cipher cipher)
{
    mdm_scep_transaction_t tx;
    mdm_buf_t msg, rep;
    make_request(cipher, &tx, &msg);
    mdm_buf_init(&rep, 0);

    /* transactionID = hex SHA-256 of the CSR's public key (here the signer's too). */
    char want_tid[MDM_SHA256_HEX_LEN + 1];
    CHECK_EQ_INT(mdm_sha256_hex(dev_spki.p, dev_spki.n, want_tid), 0);
    CHECK_STR(tx.transaction_id, want_tid);
    CHECK(blob_eq(&dev_spki, tx.spki, tx.spki_len));

    mdm_scep_request_t req;
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &req), 0);
    CHECK(req.replyable);
    CHECK_EQ_INT(req.type, MDM_SCEP_PKCS_REQ);
    CHECK_STR(req.transaction_id, tx.transaction_id);
    CHECK(memcmp(req.sender_nonce, tx.sender_nonce, MDM_SCEP_NONCE_LEN) == 0);
    CHECK(blob_eq(&dev_cert, req.signer_cert, req.signer_cert_len));
    CHECK(blob_eq(&dev_csr, req.csr, req.csr_len));
    CHECK(blob_eq(&dev_spki, req.spki, req.spki_len));
    CHECK_STR(req.challenge, challenge);
    CHECK_STR(req.common_name, "device-1");
    CHECK(req.subject && req.subject_len > 10 && req.subject[0] == 0x30);
    CHECK(!req.issuer);

    /* The same message with an indefinite outer length (BER) reads the same. */
    size_t hdr = 2 + (mdm_buf_head(&msg)[1] & 0x7f);
    uint8_t *ber = malloc(msg.len - hdr + 4);
    if (!ber)
        exit(99);
    ber[0] = 0x30;
    ber[1] = 0x80;
    memcpy(ber + 2, mdm_buf_head(&msg) + hdr, msg.len - hdr);
    ber[msg.len - hdr + 2] = ber[msg.len - hdr + 3] = 0;
    mdm_scep_request_t again;
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), ber, msg.len - hdr + 4, &again), 0);
    CHECK_STR(again.challenge, challenge);
    CHECK(again.csr_len == req.csr_len && memcmp(again.csr, req.csr, req.csr_len) == 0);
    mdm_scep_request_dispose(&again);
    free(ber);

    struct blob issued = issue(&req, "device-1");
    CHECK_EQ_INT(mdm_scep_cert_rep(ra(), &req, MDM_SCEP_SUCCESS, 0, issued.p, issued.n, &rep), 0);

    mdm_scep_client_t c = client(&dev_key, &dev_cert);
    mdm_scep_reply_t reply;
    CHECK_EQ_INT(mdm_scep_client_parse_reply(&c, &tx, mdm_buf_head(&rep), rep.len, &reply), 0);
    CHECK_EQ_INT(reply.status, MDM_SCEP_SUCCESS);
    CHECK(blob_eq(&issued, reply.cert, reply.cert_len));
    if (reply.cert)
        check_issued(reply.cert, reply.cert_len, &dev_key, "device-1");
    mdm_scep_reply_dispose(&reply);
    CHECK(reply.cert == NULL);

    /* Another device cannot open the reply; a reply read against another transaction, or
     * another RA, is refused. */
    mdm_scep_client_t other = client(&oth_key, &oth_cert);
    CHECK_EQ_INT(mdm_scep_client_parse_reply(&other, &tx, mdm_buf_head(&rep), rep.len, &reply),
                 MDM_ECRYPTO);
    mdm_scep_transaction_t tx2 = tx;
    tx2.sender_nonce[3] ^= 1;
    CHECK_EQ_INT(mdm_scep_client_parse_reply(&c, &tx2, mdm_buf_head(&rep), rep.len, &reply),
                 -EPROTO);
    tx2 = tx;
    tx2.transaction_id[0] = tx2.transaction_id[0] == 'a' ? 'b' : 'a';
    CHECK_EQ_INT(mdm_scep_client_parse_reply(&c, &tx2, mdm_buf_head(&rep), rep.len, &reply),
                 -EPROTO);
    tx2 = tx;
    tx2.spki[tx2.spki_len - 1] ^= 1; /* the reply holds no certificate for this key */
    CHECK_EQ_INT(mdm_scep_client_parse_reply(&c, &tx2, mdm_buf_head(&rep), rep.len, &reply),
                 MDM_ECERT);
    mdm_scep_client_t wrong_ra = c;
    wrong_ra.ra_cert = ra2_cert.p;
    wrong_ra.ra_cert_len = ra2_cert.n;
    CHECK_EQ_INT(
        mdm_scep_client_parse_reply(&wrong_ra, &tx, mdm_buf_head(&rep), rep.len, &reply),
        MDM_ECRYPTO);
    mdm_scep_reply_dispose(&reply);

    /* A reply is not a request. */
    mdm_scep_request_t bad;
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&rep), rep.len, &bad), -ENOTSUP);
    CHECK(bad.replyable);
    mdm_scep_request_dispose(&bad);

    if (have_openssl && cipher == MDM_SCEP_AES_128_CBC) {
        /* Our request through OpenSSL: signature, envelope for the RA, CSR self-signature. */
        write_blob("req.der", mdm_buf_head(&msg), msg.len);
        CHECK_EQ_INT(check_sh("openssl cms -verify -noverify -binary -inform DER -in '%s' -out '%s'",
                        check_path(dir, "req.der"), check_path(dir, "req-env.der")), 0);
        CHECK_EQ_INT(check_sh("openssl cms -decrypt -binary -inform DER -in '%s' -recip '%s' "
                        "-inkey '%s' -out '%s'",
                        check_path(dir, "req-env.der"), check_path(dir, "ra.pem"), check_path(dir, "ra.key"),
                        check_path(dir, "req-csr.der")), 0);
        CHECK_EQ_INT(check_sh("openssl req -inform DER -in '%s' -verify -noout", check_path(dir, "req-csr.der")),
                     0);
        struct blob csr = read_blob("req-csr.der");
        CHECK(blob_eq(&dev_csr, csr.p, csr.n));
        blob_free(&csr);

        /* Our CertRep through OpenSSL: verify, decrypt as the device, print the issued
         * certificate from the certificates-only SignedData. */
        write_blob("rep.der", mdm_buf_head(&rep), rep.len);
        write_blob("dev.crt.der", dev_cert.p, dev_cert.n);
        write_blob("dev.key.der", dev_key.p, dev_key.n);
        CHECK_EQ_INT(check_sh("openssl x509 -inform DER -in '%s' -out '%s' && "
                        "openssl pkey -inform DER -in '%s' -out '%s'",
                        check_path(dir, "dev.crt.der"), check_path(dir, "dev.crt"), check_path(dir, "dev.key.der"),
                        check_path(dir, "dev.key")), 0);
        CHECK_EQ_INT(check_sh("openssl cms -verify -noverify -binary -inform DER -in '%s' -out '%s'",
                        check_path(dir, "rep.der"), check_path(dir, "rep-env.der")), 0);
        CHECK_EQ_INT(check_sh("openssl cms -decrypt -binary -inform DER -in '%s' -recip '%s' "
                        "-inkey '%s' -out '%s'",
                        check_path(dir, "rep-env.der"), check_path(dir, "dev.crt"), check_path(dir, "dev.key"),
                        check_path(dir, "rep-inner.der")), 0);
        CHECK_EQ_INT(check_sh("openssl pkcs7 -inform DER -in '%s' -print_certs -out '%s'",
                        check_path(dir, "rep-inner.der"), check_path(dir, "rep-certs.pem")), 0);
        CHECK_EQ_INT(check_sh("grep -q 'CN *= *device-1' '%s' && "
                        "openssl x509 -in '%s' -outform DER -out '%s'",
                        check_path(dir, "rep-certs.pem"), check_path(dir, "rep-certs.pem"), check_path(dir, "rep-cert.der")), 0);
        struct blob got = read_blob("rep-cert.der");
        CHECK(blob_eq(&issued, got.p, got.n));
        blob_free(&got);
        /* The RA signed it: verifying against the CA as trust anchor succeeds. */
        CHECK_EQ_INT(check_sh("openssl cms -verify -binary -inform DER -in '%s' -CAfile '%s' "
                        "-purpose any -out /dev/null",
                        check_path(dir, "rep.der"), check_path(dir, "ca.pem")), 0);
    }
    blob_free(&issued);
    mdm_scep_request_dispose(&req);
    CHECK(req.csr == NULL && req.challenge == NULL);
    mdm_buf_dispose(&msg);
    mdm_buf_dispose(&rep);
}

static void test_failure_pending(void)
{
    mdm_scep_transaction_t tx;
    mdm_buf_t msg, rep;
    make_request(MDM_SCEP_AES_128_CBC, &tx, &msg);
    mdm_buf_init(&rep, 0);
    mdm_scep_request_t req;
    mdm_scep_reply_t reply;
    mdm_scep_client_t c = client(&dev_key, &dev_cert);
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &req), 0);

    CHECK_EQ_INT(mdm_scep_cert_rep(ra(), &req, MDM_SCEP_FAILURE, MDM_SCEP_BAD_REQUEST, NULL, 0,
                                   &rep), 0);
    CHECK_EQ_INT(mdm_scep_client_parse_reply(&c, &tx, mdm_buf_head(&rep), rep.len, &reply), 0);
    CHECK_EQ_INT(reply.status, MDM_SCEP_FAILURE);
    CHECK_EQ_INT(reply.fail_info, MDM_SCEP_BAD_REQUEST);
    CHECK(reply.cert == NULL);
    mdm_scep_reply_dispose(&reply);
    if (have_openssl) {
        /* No content: OpenSSL verifies it as a detached signature over nothing. */
        write_blob("fail.der", mdm_buf_head(&rep), rep.len);
        CHECK_EQ_INT(check_sh("openssl cms -verify -noverify -binary -inform DER -in '%s' "
                        "-content /dev/null -out /dev/null", check_path(dir, "fail.der")), 0);
    }

    mdm_buf_reset(&rep);
    CHECK_EQ_INT(mdm_scep_cert_rep(ra(), &req, MDM_SCEP_PENDING, 0, NULL, 0, &rep), 0);
    CHECK_EQ_INT(mdm_scep_client_parse_reply(&c, &tx, mdm_buf_head(&rep), rep.len, &reply), 0);
    CHECK_EQ_INT(reply.status, MDM_SCEP_PENDING);
    mdm_scep_reply_dispose(&reply);

    /* Bad arguments leave out unchanged. */
    mdm_buf_reset(&rep);
    CHECK_EQ_INT(mdm_scep_cert_rep(ra(), &req, MDM_SCEP_SUCCESS, 0, NULL, 0, &rep), -EINVAL);
    CHECK_EQ_INT(mdm_scep_cert_rep(ra(), &req, MDM_SCEP_SUCCESS, 0, ca_cert.p, 10, &rep),
                 MDM_ECERT);
    CHECK_EQ_INT(mdm_scep_cert_rep(ra(), &req, (enum mdm_scep_status)1, 0, NULL, 0, &rep),
                 -EINVAL);
    mdm_scep_request_t empty = {0};
    CHECK_EQ_INT(mdm_scep_cert_rep(ra(), &empty, MDM_SCEP_FAILURE, MDM_SCEP_BAD_ALG, NULL, 0,
                                   &rep), -EINVAL);
    CHECK_EQ_INT(rep.len, 0);
    mdm_scep_request_dispose(&req);
    mdm_buf_dispose(&msg);
    mdm_buf_dispose(&rep);
}

static void test_wrong_ra_and_tampering(void)
{
    mdm_scep_transaction_t tx;
    mdm_buf_t msg, rep;
    make_request(MDM_SCEP_AES_256_CBC, &tx, &msg);
    mdm_buf_init(&rep, 0);
    mdm_scep_request_t req;

    /* The second RA cannot decrypt; the request can still be answered with badMessageCheck. */
    mdm_scep_ra_t r2 = {ra2_cert.p, ra2_cert.n, ra2_key.p, ra2_key.n};
    CHECK_EQ_INT(mdm_scep_parse_request(&r2, mdm_buf_head(&msg), msg.len, &req), MDM_ECRYPTO);
    CHECK(req.replyable);
    CHECK_EQ_INT(req.fail_info, MDM_SCEP_BAD_MESSAGE_CHECK);
    CHECK(req.csr == NULL && req.challenge == NULL);
    CHECK_EQ_INT(mdm_scep_cert_rep(&r2, &req, MDM_SCEP_FAILURE, req.fail_info, NULL, 0, &rep), 0);
    mdm_scep_request_dispose(&req);
    /* ... and that answer is the second RA's, not the one the client trusts. */
    mdm_scep_client_t c = client(&dev_key, &dev_cert);
    mdm_scep_reply_t reply;
    CHECK_EQ_INT(mdm_scep_client_parse_reply(&c, &tx, mdm_buf_head(&rep), rep.len, &reply),
                 MDM_ECRYPTO);
    mdm_scep_reply_dispose(&reply);

    /* The RA certificate with another key cannot decrypt. The key is what counts: with the
     * right key, wolfCrypt decrypts even under another certificate (it does not insist that
     * the recipient identifier names that certificate), which keeps a re-certified RA key
     * working. */
    mdm_scep_ra_t mixed = {ra_cert.p, ra_cert.n, ra2_key.p, ra2_key.n};
    CHECK_EQ_INT(mdm_scep_parse_request(&mixed, mdm_buf_head(&msg), msg.len, &req),
                 MDM_ECRYPTO);
    mdm_scep_request_dispose(&req);
    mixed = (mdm_scep_ra_t){ra2_cert.p, ra2_cert.n, ra_key.p, ra_key.n};
    CHECK_EQ_INT(mdm_scep_parse_request(&mixed, mdm_buf_head(&msg), msg.len, &req), 0);
    mdm_scep_request_dispose(&req);

    /* A changed signature (the last bytes of the message) is refused, unanswerable. */
    uint8_t *m = mdm_buf_head(&msg);
    m[msg.len - 5] ^= 0x40;
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), m, msg.len, &req), MDM_ECRYPTO);
    CHECK(!req.replyable);
    mdm_scep_request_dispose(&req);
    m[msg.len - 5] ^= 0x40;
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), m, msg.len, &req), 0);
    mdm_scep_request_dispose(&req);

    /* Signed by a key that is not the carried certificate's. */
    mdm_scep_client_t liar = client(&oth_key, &dev_cert);
    mdm_buf_t forged;
    mdm_buf_init(&forged, 0);
    mdm_scep_transaction_t tx3;
    CHECK_EQ_INT(mdm_scep_client_request(&liar, MDM_SCEP_PKCS_REQ, dev_csr.p, dev_csr.n,
                                         MDM_SCEP_AES_128_CBC, &tx3, &forged), 0);
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&forged), forged.len, &req),
                 MDM_ECRYPTO);
    CHECK(!req.replyable);
    mdm_scep_request_dispose(&req);

    /* Garbage, nothing, too much, and a certificates-only SignedData (no signer). */
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), (const uint8_t *)"\x30\x03\x02\x01\x01", 5, &req),
                 -EBADMSG);
    mdm_scep_request_dispose(&req);
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), NULL, 0, &req), -EBADMSG);
    mdm_scep_request_dispose(&req);
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), m, MDM_SCEP_MESSAGE_MAX + 1, &req), MDM_ETOOBIG);
    mdm_scep_request_dispose(&req);
    mdm_buf_t certs;
    mdm_buf_init(&certs, 0);
    CHECK_EQ_INT(mdm_scep_ca_certs(ra_cert.p, ra_cert.n, ca_cert.p, ca_cert.n, &certs), 0);
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&certs), certs.len, &req),
                 MDM_ECRYPTO);
    mdm_scep_request_dispose(&req);

    /* Client-side argument errors. */
    mdm_buf_reset(&forged);
    CHECK_EQ_INT(mdm_scep_client_request(&c, MDM_SCEP_CERT_POLL, dev_csr.p, dev_csr.n,
                                         MDM_SCEP_AES_128_CBC, &tx3, &forged), -EINVAL);
    CHECK_EQ_INT(mdm_scep_client_request(&c, MDM_SCEP_PKCS_REQ, dev_csr.p, dev_csr.n - 1,
                                         MDM_SCEP_AES_128_CBC, &tx3, &forged), -EINVAL);
    mdm_scep_client_t ec_ra = c;
    ec_ra.ra_cert = ca_cert.p; /* EC: no key transport */
    ec_ra.ra_cert_len = ca_cert.n;
    CHECK_EQ_INT(mdm_scep_client_request(&ec_ra, MDM_SCEP_PKCS_REQ, dev_csr.p, dev_csr.n,
                                         MDM_SCEP_AES_128_CBC, &tx3, &forged), MDM_ECERT);
    CHECK_EQ_INT(forged.len, 0);
    mdm_buf_dispose(&certs);
    mdm_buf_dispose(&forged);
    mdm_buf_dispose(&msg);
    mdm_buf_dispose(&rep);
}

static void test_renewal(void)
{
    /* First enrolment. */
    mdm_scep_transaction_t tx;
    mdm_buf_t msg, rep;
    make_request(MDM_SCEP_AES_128_CBC, &tx, &msg);
    mdm_buf_init(&rep, 0);
    mdm_scep_request_t req;
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &req), 0);
    struct blob first = issue(&req, "device-1");
    mdm_scep_request_dispose(&req);

    /* Renewal: a new key, signed with the current certificate and key. */
    struct blob new_key = {0}, new_csr = {0}, new_spki = {0};
    if (mdm_x509_key_generate_der(MDM_X509_KEY_RSA_2048, &new_key.p, &new_key.n) != 0 ||
        mdm_x509_make_csr_der(new_key.p, new_key.n, "device-1", NULL, NULL, &new_csr.p,
                              &new_csr.n) != 0 ||
        mdm_x509_key_public_der(new_key.p, new_key.n, &new_spki.p, &new_spki.n) != 0)
        die("renewal key", -1);
    mdm_scep_client_t c = client(&dev_key, &first);
    mdm_buf_reset(&msg);
    CHECK_EQ_INT(mdm_scep_client_request(&c, MDM_SCEP_RENEWAL_REQ, new_csr.p, new_csr.n,
                                         MDM_SCEP_AES_256_CBC, &tx, &msg), 0);
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &req), 0);
    CHECK_EQ_INT(req.type, MDM_SCEP_RENEWAL_REQ);
    CHECK(blob_eq(&first, req.signer_cert, req.signer_cert_len));
    CHECK(blob_eq(&new_spki, req.spki, req.spki_len));
    CHECK(req.challenge == NULL);
    /* What the caller checks for a renewal: the signer is a certificate of our CA. */
    CHECK_EQ_INT(mdm_cms_cert_verify_chain(req.signer_cert, req.signer_cert_len, check_path(dir, "ca.pem"),
                                           now), 0);
    CHECK(mdm_cms_cert_verify_chain(dev_cert.p, dev_cert.n, check_path(dir, "ca.pem"), now) != 0);

    struct blob second = issue(&req, "device-1");
    CHECK_EQ_INT(mdm_scep_cert_rep(ra(), &req, MDM_SCEP_SUCCESS, 0, second.p, second.n, &rep), 0);
    mdm_scep_reply_t reply;
    CHECK_EQ_INT(mdm_scep_client_parse_reply(&c, &tx, mdm_buf_head(&rep), rep.len, &reply), 0);
    CHECK_EQ_INT(reply.status, MDM_SCEP_SUCCESS);
    CHECK(blob_eq(&second, reply.cert, reply.cert_len));
    if (reply.cert)
        check_issued(reply.cert, reply.cert_len, &new_key, "device-1");
    mdm_scep_reply_dispose(&reply);
    mdm_scep_request_dispose(&req);
    blob_free(&first);
    blob_free(&second);
    blob_free(&new_key);
    blob_free(&new_csr);
    blob_free(&new_spki);
    mdm_buf_dispose(&msg);
    mdm_buf_dispose(&rep);
}

/* Parses msg and checks that it either fails or yields exactly what want holds. Returns
 * whether it parsed. */
static bool parse_same_or_fail(const uint8_t *msg, size_t len, const mdm_scep_request_t *want)
{
    mdm_scep_request_t req;
    int ret = mdm_scep_parse_request(ra(), msg, len, &req);
    if (ret == 0) {
        CHECK(req.type == want->type);
        CHECK_STR(req.transaction_id, want->transaction_id);
        CHECK(memcmp(req.sender_nonce, want->sender_nonce, MDM_SCEP_NONCE_LEN) == 0);
        CHECK(req.csr_len == want->csr_len && memcmp(req.csr, want->csr, req.csr_len) == 0);
        CHECK_STR(req.challenge, want->challenge);
    } else {
        CHECK(ret == -EBADMSG || ret == MDM_ECRYPTO || ret == MDM_ECERT || ret == -ENOTSUP);
    }
    mdm_scep_request_dispose(&req);
    return ret == 0;
}

static void test_fuzz_request(void)
{
    mdm_scep_transaction_t tx;
    mdm_buf_t msg;
    make_request(MDM_SCEP_AES_128_CBC, &tx, &msg);
    mdm_scep_request_t want;
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &want), 0);
    size_t len = msg.len;
    uint8_t *copy = malloc(len);
    if (!copy)
        exit(99);

    int truncated_ok = 0, flipped_ok = 0;
    for (size_t n = 0; n < len; n++) {
        memcpy(copy, mdm_buf_head(&msg), n); /* exactly n bytes: ASan sees overreads */
        mdm_scep_request_t req;
        int ret = mdm_scep_parse_request(ra(), copy, n, &req);
        truncated_ok += ret == 0;
        mdm_scep_request_dispose(&req);
    }
    CHECK_EQ_INT(truncated_ok, 0);
    for (size_t i = 0; i < len; i++) {
        memcpy(copy, mdm_buf_head(&msg), len);
        copy[i] ^= (uint8_t)(1u << (i % 8));
        flipped_ok += parse_same_or_fail(copy, len, &want);
    }
    /* Only bytes nobody signs may change (the certificate's own signature, versions...). */
    CHECK(flipped_ok < (int)len / 4);
    fprintf(stderr, "request fuzz: %zu truncations refused, %d of %zu bit flips harmless\n",
            len, flipped_ok, len);

    /* The BER path (wc_BerToDer first): the message with an indefinite outer length,
     * truncated and flipped. */
    size_t hdr = 2 + (mdm_buf_head(&msg)[1] & 0x7f), ber_len = len - hdr + 4;
    uint8_t *ber = malloc(ber_len), *bcopy = malloc(ber_len);
    if (!ber || !bcopy)
        exit(99);
    ber[0] = 0x30;
    ber[1] = 0x80;
    memcpy(ber + 2, mdm_buf_head(&msg) + hdr, len - hdr);
    ber[ber_len - 2] = ber[ber_len - 1] = 0;
    truncated_ok = 0;
    for (size_t n = 2; n < ber_len; n += 3) {
        memcpy(bcopy, ber, n);
        mdm_scep_request_t req;
        truncated_ok += mdm_scep_parse_request(ra(), bcopy, n, &req) == 0;
        mdm_scep_request_dispose(&req);
    }
    CHECK_EQ_INT(truncated_ok, 0);
    for (size_t i = 0; i < ber_len; i += 3) {
        memcpy(bcopy, ber, ber_len);
        bcopy[i] ^= (uint8_t)(1u << (i % 8));
        (void)parse_same_or_fail(bcopy, ber_len, &want);
    }
    free(ber);
    free(bcopy);
    free(copy);
    mdm_scep_request_dispose(&want);
    mdm_buf_dispose(&msg);
}

static void test_fuzz_reply(void)
{
    mdm_scep_transaction_t tx;
    mdm_buf_t msg, rep;
    make_request(MDM_SCEP_AES_128_CBC, &tx, &msg);
    mdm_buf_init(&rep, 0);
    mdm_scep_request_t req;
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &req), 0);
    struct blob issued = issue(&req, "device-1");
    CHECK_EQ_INT(mdm_scep_cert_rep(ra(), &req, MDM_SCEP_SUCCESS, 0, issued.p, issued.n, &rep), 0);
    mdm_scep_client_t c = client(&dev_key, &dev_cert);
    size_t len = rep.len;
    uint8_t *copy = malloc(len);
    if (!copy)
        exit(99);
    int truncated_ok = 0, flipped_ok = 0;
    mdm_scep_reply_t reply;
    for (size_t n = 0; n < len; n++) {
        memcpy(copy, mdm_buf_head(&rep), n);
        truncated_ok += mdm_scep_client_parse_reply(&c, &tx, copy, n, &reply) == 0;
        mdm_scep_reply_dispose(&reply);
    }
    CHECK_EQ_INT(truncated_ok, 0);
    for (size_t i = 0; i < len; i++) {
        memcpy(copy, mdm_buf_head(&rep), len);
        copy[i] ^= (uint8_t)(1u << (i % 8));
        int ret = mdm_scep_client_parse_reply(&c, &tx, copy, len, &reply);
        if (ret == 0) {
            flipped_ok++;
            CHECK_EQ_INT(reply.status, MDM_SCEP_SUCCESS);
            CHECK(blob_eq(&issued, reply.cert, reply.cert_len));
        }
        mdm_scep_reply_dispose(&reply);
    }
    /* The client verifies with its own copy of the RA certificate, so flips in the copy the
     * reply carries are harmless; anything else that survives must not change the result. */
    CHECK(flipped_ok < (int)len / 2);
    fprintf(stderr, "reply fuzz: %zu truncations refused, %d of %zu bit flips harmless\n", len,
            flipped_ok, len);
    free(copy);
    blob_free(&issued);
    mdm_scep_request_dispose(&req);
    mdm_buf_dispose(&msg);
    mdm_buf_dispose(&rep);
}

/* CSRs mangled before the client encrypts and signs them: the message is authentic, so the
 * server can answer, and the CSR is refused (or, for harmless flips, read unchanged). */
static void test_fuzz_csr(void)
{
    mdm_scep_client_t c = client(&dev_key, &dev_cert);
    uint8_t *copy = malloc(dev_csr.n);
    if (!copy)
        exit(99);
    int sent = 0, accepted = 0;
    for (size_t i = 0; i < dev_csr.n + 40; i += 3) {
        size_t n = dev_csr.n;
        memcpy(copy, dev_csr.p, n);
        if (i < dev_csr.n)
            copy[i] ^= (uint8_t)(1u << (i % 8));
        else
            n = (i - dev_csr.n) * dev_csr.n / 40; /* a few truncations */
        mdm_scep_transaction_t tx;
        mdm_buf_t msg;
        mdm_buf_init(&msg, 0);
        if (mdm_scep_client_request(&c, MDM_SCEP_PKCS_REQ, copy, n, MDM_SCEP_AES_128_CBC, &tx,
                                    &msg) == 0) {
            sent++;
            mdm_scep_request_t req;
            int ret = mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &req);
            if (ret == 0) {
                accepted++;
                CHECK_STR(req.challenge, challenge);
                CHECK(blob_eq(&dev_spki, req.spki, req.spki_len));
            } else {
                CHECK(ret == -EBADMSG || ret == MDM_ECRYPTO);
                CHECK(req.replyable);
                CHECK(req.fail_info == MDM_SCEP_BAD_REQUEST || req.fail_info == MDM_SCEP_BAD_ALG);
            }
            mdm_scep_request_dispose(&req);
        }
        mdm_buf_dispose(&msg);
    }
    CHECK(sent > 100);
    CHECK(accepted < 5);
    free(copy);
}

/* OpenSSL-made envelope (and mangled ones) wrapped by our client: the server decrypts what
 * another implementation encrypted; wolfCrypt's decoder meets malformed envelopes that are
 * validly signed. Also CertPoll and an unsupported messageType. */
static void test_openssl_envelopes(void)
{
    if (!have_openssl)
        return;
    mdm_scep_client_t c = client(&dev_key, &dev_cert);
    mdm_scep_transaction_t tx;
    memset(&tx, 0, sizeof(tx));
    snprintf(tx.transaction_id, sizeof(tx.transaction_id), "openssl-envelope");
    memset(tx.sender_nonce, 0x5a, sizeof(tx.sender_nonce));
    write_blob("csr.der", dev_csr.p, dev_csr.n);
    static const char *const ciphers[] = {"-aes128", "-aes256", "-des3"};
    for (size_t k = 0; k < MDM_ARRAY_LEN(ciphers); k++) {
        CHECK_EQ_INT(check_sh("openssl cms -encrypt -binary %s -in '%s' -outform DER -out '%s' '%s'",
                        ciphers[k], check_path(dir, "csr.der"), check_path(dir, "env.der"), check_path(dir, "ra.pem")), 0);
        struct blob env = read_blob("env.der");
        mdm_buf_t msg;
        mdm_buf_init(&msg, 0);
        CHECK_EQ_INT(mdm_scep_client_wrap(&c, MDM_SCEP_PKCS_REQ, &tx, env.p, env.n, &msg), 0);
        mdm_scep_request_t req;
        CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &req), 0);
        CHECK_STR(req.transaction_id, "openssl-envelope");
        CHECK(blob_eq(&dev_csr, req.csr, req.csr_len));
        CHECK_STR(req.challenge, challenge);
        mdm_scep_request_dispose(&req);

        if (k == 0) {
            /* An unsupported messageType (GetCert, 21) is authentic and answerable. */
            mdm_buf_reset(&msg);
            CHECK_EQ_INT(mdm_scep_client_wrap(&c, (enum mdm_scep_message_type)21, &tx, env.p,
                                              env.n, &msg), 0);
            CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &req),
                         -ENOTSUP);
            CHECK(req.replyable);
            CHECK_EQ_INT(req.fail_info, MDM_SCEP_BAD_REQUEST);
            mdm_scep_request_dispose(&req);

            /* Mangled envelopes, validly signed. */
            uint8_t *copy = malloc(env.n);
            if (!copy)
                exit(99);
            int opened = 0;
            for (size_t i = 0; i < env.n + 30; i += 2) {
                size_t n = env.n;
                memcpy(copy, env.p, n);
                if (i < env.n)
                    copy[i] ^= (uint8_t)(1u << (i % 8));
                else
                    n = (i - env.n) * env.n / 30;
                mdm_buf_reset(&msg);
                if (mdm_scep_client_wrap(&c, MDM_SCEP_PKCS_REQ, &tx, copy, n, &msg) != 0)
                    continue;
                int ret = mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &req);
                if (ret == 0) {
                    opened++;
                    CHECK_STR(req.challenge, challenge);
                } else {
                    CHECK(req.replyable);
                }
                mdm_scep_request_dispose(&req);
            }
            /* Padding-only or parameter-encoding changes may survive; content changes not. */
            CHECK(opened < (int)env.n / 4);
            free(copy);
        }
        blob_free(&env);
        mdm_buf_dispose(&msg);
    }

    /* CertPoll: IssuerAndSubject (here the CSR's subject twice). */
    mdm_scep_request_t first;
    mdm_buf_t msg;
    make_request(MDM_SCEP_AES_128_CBC, &tx, &msg);
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &first), 0);
    size_t n = 2 * first.subject_len;
    uint8_t *ias = malloc(n + 4);
    if (!ias)
        exit(99);
    size_t k = 0;
    ias[k++] = 0x30;
    if (n >= 0x80) {
        ias[k++] = 0x82;
        ias[k++] = (uint8_t)(n >> 8);
    }
    ias[k++] = (uint8_t)n;
    memcpy(ias + k, first.subject, first.subject_len);
    memcpy(ias + k + first.subject_len, first.subject, first.subject_len);
    write_blob("ias.der", ias, k + n);
    CHECK_EQ_INT(check_sh("openssl cms -encrypt -binary -aes128 -in '%s' -outform DER -out '%s' '%s'",
                    check_path(dir, "ias.der"), check_path(dir, "ias-env.der"), check_path(dir, "ra.pem")), 0);
    struct blob env = read_blob("ias-env.der");
    mdm_buf_reset(&msg);
    CHECK_EQ_INT(mdm_scep_client_wrap(&c, MDM_SCEP_CERT_POLL, &tx, env.p, env.n, &msg), 0);
    mdm_scep_request_t poll;
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &poll), 0);
    CHECK_EQ_INT(poll.type, MDM_SCEP_CERT_POLL);
    CHECK(poll.subject_len == first.subject_len &&
          memcmp(poll.subject, first.subject, poll.subject_len) == 0);
    CHECK(poll.issuer_len == first.subject_len &&
          memcmp(poll.issuer, first.subject, poll.issuer_len) == 0);
    CHECK_STR(poll.common_name, "device-1");
    CHECK(poll.csr == NULL && poll.spki == NULL && poll.challenge == NULL);
    mdm_scep_request_dispose(&poll);
    mdm_scep_request_dispose(&first);
    blob_free(&env);
    free(ias);
    mdm_buf_dispose(&msg);
}

/* A CSR and a PKCS#8 key made by OpenSSL, sent by our client, read by our server. */
static void test_openssl_csr(void)
{
    if (!have_openssl)
        return;
    FILE *f = fopen(check_path(dir, "req.cnf"), "w");
    if (!f)
        exit(99);
    /* The subject comes from the file: with -subj, openssl req drops the attributes. */
    fputs("[req]\nprompt = no\ndistinguished_name = dn\nattributes = attrs\n"
          "[dn]\nO = mdmd test\nCN = ossl-device\n[attrs]\nchallengePassword = ossl pass 123\n",
          f);
    fclose(f);
    CHECK_EQ_INT(check_sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out '%s' && "
                    "openssl pkey -in '%s' -outform DER -out '%s' && "
                    "openssl req -new -key '%s' -config '%s' -addext keyUsage=digitalSignature "
                    "-outform DER -out '%s'",
                    check_path(dir, "ossl.key"), check_path(dir, "ossl.key"), check_path(dir, "ossl.p8"), check_path(dir, "ossl.key"),
                    check_path(dir, "req.cnf"), check_path(dir, "ossl.csr")), 0);
    struct blob key = read_blob("ossl.p8"), csr = read_blob("ossl.csr"), cert = {0};
    CHECK(key.n > 26 && key.p[0] == 0x30 && key.p[4] == 0x02); /* PKCS#8: version first */
    mdm_x509_spec_t spec = device_spec("ossl self-signed");
    CHECK_EQ_INT(mdm_x509_make_self_signed_der(key.p, key.n, &spec, &cert.p, &cert.n), 0);
    mdm_scep_client_t c = client(&key, &cert);
    mdm_scep_transaction_t tx;
    mdm_buf_t msg, rep;
    mdm_buf_init(&msg, 0);
    mdm_buf_init(&rep, 0);
    CHECK_EQ_INT(mdm_scep_client_request(&c, MDM_SCEP_PKCS_REQ, csr.p, csr.n,
                                         MDM_SCEP_AES_128_CBC, &tx, &msg), 0);
    mdm_scep_request_t req;
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &req), 0);
    CHECK_STR(req.challenge, "ossl pass 123");
    CHECK_STR(req.common_name, "ossl-device");
    CHECK(blob_eq(&csr, req.csr, req.csr_len));
    if (req.spki) {
        struct blob issued = issue(&req, "ossl-device");
        CHECK_EQ_INT(mdm_scep_cert_rep(ra(), &req, MDM_SCEP_SUCCESS, 0, issued.p, issued.n,
                                       &rep), 0);
        mdm_scep_reply_t reply;
        CHECK_EQ_INT(mdm_scep_client_parse_reply(&c, &tx, mdm_buf_head(&rep), rep.len, &reply),
                     0);
        CHECK(blob_eq(&issued, reply.cert, reply.cert_len));
        if (reply.cert)
            check_issued(reply.cert, reply.cert_len, &key, "ossl-device");
        mdm_scep_reply_dispose(&reply);
        blob_free(&issued);
    }
    mdm_scep_request_dispose(&req);

    /* A CSR with an unknown signature (bad proof of possession): answerable, badRequest. */
    csr.p[csr.n - 3] ^= 0x10;
    mdm_buf_reset(&msg);
    CHECK_EQ_INT(mdm_scep_client_request(&c, MDM_SCEP_PKCS_REQ, csr.p, csr.n,
                                         MDM_SCEP_AES_128_CBC, &tx, &msg), 0);
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &req), MDM_ECRYPTO);
    CHECK(req.replyable);
    CHECK_EQ_INT(req.fail_info, MDM_SCEP_BAD_REQUEST);
    CHECK(req.challenge == NULL && req.csr == NULL && req.spki == NULL);
    CHECK(blob_eq(&cert, req.signer_cert, req.signer_cert_len));
    mdm_scep_request_dispose(&req);

    /* An EC CSR (PrintableString challenge) issues too: mdm_x509_issue_der takes EC keys. */
    f = fopen(check_path(dir, "req2.cnf"), "w");
    if (!f)
        exit(99);
    fputs("[req]\nprompt = no\nutf8 = no\nstring_mask = nombstr\ndistinguished_name = dn\n"
          "attributes = attrs\n[dn]\nCN = ec-device\n[attrs]\nchallengePassword = plain\n",
          f);
    fclose(f);
    CHECK_EQ_INT(check_sh("openssl ecparam -name prime256v1 -genkey -noout -out '%s' && "
                    "openssl req -new -key '%s' -config '%s' -outform DER -out '%s'",
                    check_path(dir, "ec.key"), check_path(dir, "ec.key"), check_path(dir, "req2.cnf"), check_path(dir, "ec.csr")), 0);
    struct blob ec_csr = read_blob("ec.csr");
    mdm_buf_reset(&msg);
    CHECK_EQ_INT(mdm_scep_client_request(&c, MDM_SCEP_PKCS_REQ, ec_csr.p, ec_csr.n,
                                         MDM_SCEP_AES_256_CBC, &tx, &msg), 0);
    CHECK_EQ_INT(mdm_scep_parse_request(ra(), mdm_buf_head(&msg), msg.len, &req), 0);
    CHECK_STR(req.common_name, "ec-device");
    CHECK_STR(req.challenge, "plain");
    if (req.spki) {
        struct blob issued = issue(&req, "ec-device");
        CHECK_EQ_INT(mdm_cms_cert_verify_chain(issued.p, issued.n, check_path(dir, "ca.pem"), now), 0);
        write_blob("ec-issued.der", issued.p, issued.n);
        CHECK_EQ_INT(check_sh("openssl x509 -inform DER -in '%s' -noout -pubkey -out '%s' && "
                        "openssl pkey -in '%s' -pubout -out '%s' && cmp -s '%s' '%s'",
                        check_path(dir, "ec-issued.der"), check_path(dir, "ec-issued.pub"), check_path(dir, "ec.key"),
                        check_path(dir, "ec.pub"), check_path(dir, "ec-issued.pub"), check_path(dir, "ec.pub")), 0);
        blob_free(&issued);
    }
    mdm_scep_request_dispose(&req);
    blob_free(&ec_csr);
    blob_free(&key);
    blob_free(&csr);
    blob_free(&cert);
    mdm_buf_dispose(&msg);
    mdm_buf_dispose(&rep);
}

static void test_x509_der(void)
{
    /* mdm_x509_issue_der argument checks: a key that is not the CA's, a bad public key. */
    uint8_t *der = NULL;
    size_t len = 0;
    mdm_x509_spec_t spec = device_spec("x");
    CHECK_EQ_INT(mdm_x509_issue_der(ra_key.p, ra_key.n, ca_cert.p, ca_cert.n, dev_spki.p,
                                    dev_spki.n, &spec, &der, &len), MDM_ECERT);
    CHECK_EQ_INT(mdm_x509_issue_der(ca_key.p, ca_key.n, ca_cert.p, ca_cert.n, dev_spki.p,
                                    dev_spki.n - 1, &spec, &der, &len), MDM_ECRYPTO);
    CHECK_EQ_INT(mdm_x509_issue_der(ca_key.p, ca_key.n, ca_cert.p, ca_cert.n, dev_key.p,
                                    dev_key.n, &spec, &der, &len), MDM_ECRYPTO);
    spec.validity_days = 0;
    CHECK_EQ_INT(mdm_x509_issue_der(ca_key.p, ca_key.n, ca_cert.p, ca_cert.n, dev_spki.p,
                                    dev_spki.n, &spec, &der, &len), -EINVAL);
    /* An RSA-1024 public key is refused. */
    if (have_openssl) {
        CHECK_EQ_INT(check_sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 "
                        "-outform DER -out '%s' && openssl pkey -inform DER -in '%s' -pubout "
                        "-outform DER -out '%s'",
                        check_path(dir, "small.key"), check_path(dir, "small.key"), check_path(dir, "small.pub")), 0);
        struct blob pub = read_blob("small.pub");
        spec.validity_days = 1;
        CHECK_EQ_INT(mdm_x509_issue_der(ca_key.p, ca_key.n, ca_cert.p, ca_cert.n, pub.p, pub.n,
                                        &spec, &der, &len), MDM_ECRYPTO);
        blob_free(&pub);
    }
    /* The CSR maker's limits. */
    CHECK_EQ_INT(mdm_x509_make_csr_der(dev_key.p, dev_key.n, "", NULL, NULL, &der, &len),
                 -EINVAL);
    char long_pw[80];
    memset(long_pw, 'a', sizeof(long_pw) - 1);
    long_pw[sizeof(long_pw) - 1] = '\0';
    CHECK_EQ_INT(mdm_x509_make_csr_der(dev_key.p, dev_key.n, "x", NULL, long_pw, &der, &len),
                 -EINVAL);
    CHECK_EQ_INT(mdm_x509_make_csr_der(ra_cert.p, ra_cert.n, "x", NULL, NULL, &der, &len),
                 MDM_ECRYPTO);
    if (have_openssl) {
        write_blob("dev.csr", dev_csr.p, dev_csr.n);
        CHECK_EQ_INT(check_sh("openssl req -inform DER -in '%s' -verify -noout -text | "
                        "grep -q 'challengePassword *: *s3cret-Challenge!'",
                        check_path(dir, "dev.csr")), 0);
    }
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("scep"));
    now = (int64_t)time(NULL);
    have_openssl = check_sh("command -v openssl") == 0;
    if (!have_openssl)
        fprintf(stderr, "openssl CLI not found: skipping the cross-checks\n");
    setup();
    test_caps();
    test_ca_certs();
    test_round_trip(MDM_SCEP_AES_128_CBC);
    test_round_trip(MDM_SCEP_AES_256_CBC);
    test_round_trip(MDM_SCEP_DES3_CBC);
    test_failure_pending();
    test_wrong_ra_and_tampering();
    test_renewal();
    test_fuzz_request();
    test_fuzz_reply();
    test_fuzz_csr();
    test_openssl_envelopes();
    test_openssl_csr();
    test_x509_der();
    struct blob *all[] = {&ca_cert, &ca_key, &ra_cert, &ra_key, &ra2_cert, &ra2_key, &dev_key,
                          &dev_cert, &dev_csr, &dev_spki, &oth_key, &oth_cert};
    for (size_t i = 0; i < MDM_ARRAY_LEN(all); i++)
        blob_free(all[i]);
    mdm_tls_global_cleanup();
    if (check_failed == 0)
        check_sh("rm -rf '%s'", dir);
    return check_finish("scep");
}
