/*
 * core/x509 tests: a CA and a server certificate that pass every rule; then one certificate
 * per rule that breaks exactly that rule (no SAN, wrong SAN, no serverAuth, SHA-1, weak keys,
 * 825-day validity, expired, not yet valid, expiring in 10 days -> WARN); the CA and signing
 * profiles; file modes independent of the umask; PEM chains and DER files; error codes.
 * When the openssl CLI is installed, it cross-checks our output (verify, SAN text) and feeds
 * us certificates wolfCrypt cannot make (PKCS#8 keys, RSASSA-PSS).
 */
#include <wolfssl/options.h>

#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/x509.h"

static char dir[PATH_MAX / 2];
static bool have_openssl;

static int file_mode(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

/* Runs a shell command quietly; returns its exit status. */
/* Loads the first certificate of a file; aborts the test program when that fails. */
static mdm_x509_info_t load(const char *file)
{
    mdm_x509_info_t *arr = NULL, info;
    size_t n = 0;
    int ret = mdm_x509_inspect_file(file, &arr, &n);
    if (ret != 0 || n == 0) {
        fprintf(stderr, "cannot inspect %s: %s\n", file, mdm_strerror(ret));
        exit(99);
    }
    info = arr[0];
    free(arr);
    return info;
}

/*
 * Checks info against profile and expects every rule to PASS except bad_rule (NULL: none),
 * which must have verdict want. Prints the results of a mismatch.
 */
static void expect_only(const char *what, const mdm_x509_info_t *info,
                        enum mdm_x509_profile profile, const char *const *names, size_t n_names,
                        const char *bad_rule, enum mdm_x509_verdict want)
{
    mdm_x509_result_t res[MDM_X509_RESULTS_MAX];
    size_t n = mdm_x509_check(info, profile, names, n_names, (int64_t)time(NULL), res,
                              MDM_X509_RESULTS_MAX);
    bool ok = n > 0, seen = bad_rule == NULL;
    for (size_t i = 0; i < n; i++) {
        bool is_bad = bad_rule && strcmp(res[i].rule, bad_rule) == 0;
        seen |= is_bad;
        if (res[i].verdict != (is_bad ? want : MDM_X509_PASS))
            ok = false;
    }
    if (!ok || !seen) {
        fprintf(stderr, "%s: expected only %s to be %s:\n", what, bad_rule ? bad_rule : "(none)",
                mdm_x509_verdict_name(want));
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "  %s  %s  %s\n", mdm_x509_verdict_name(res[i].verdict), res[i].rule,
                    res[i].reason);
    }
    CHECK(ok && seen);
}

/* Returns the reason of rule in the results for info (static buffer). */
static const char *reason_of(const mdm_x509_info_t *info, enum mdm_x509_profile profile,
                             const char *const *names, size_t n_names, const char *rule)
{
    static mdm_x509_result_t res[MDM_X509_RESULTS_MAX];
    size_t n = mdm_x509_check(info, profile, names, n_names, (int64_t)time(NULL), res,
                              MDM_X509_RESULTS_MAX);
    for (size_t i = 0; i < n; i++)
        if (strcmp(res[i].rule, rule) == 0)
            return res[i].reason;
    return "";
}

static int verdict_of(const mdm_x509_info_t *info, enum mdm_x509_profile profile,
                      const char *rule)
{
    mdm_x509_result_t res[MDM_X509_RESULTS_MAX];
    size_t n = mdm_x509_check(info, profile, NULL, 0, (int64_t)time(NULL), res,
                              MDM_X509_RESULTS_MAX);
    for (size_t i = 0; i < n; i++)
        if (strcmp(res[i].rule, rule) == 0)
            return (int)res[i].verdict;
    return -1;
}

static const char *const hosts[] = {"localhost", "127.0.0.1", "::1"};

/* A server spec that passes every rule; tests copy it and break one thing. */
static mdm_x509_spec_t good_server(void)
{
    return (mdm_x509_spec_t){
        .common_name = "localhost",
        .organization = "mdmd test",
        .validity_days = 397,
        .san = hosts,
        .n_san = 3,
        .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE,
        .ext_key_usage = MDM_X509_EKU_SERVER_AUTH,
    };
}

/* Issues spec for server.key into name and loads it. */
static mdm_x509_info_t issue(const char *name, const mdm_x509_spec_t *spec, const char *key)
{
    int ret = mdm_x509_issue(check_path(dir, "ca.key"), check_path(dir, "ca.crt"), check_path(dir, key), check_path(dir, name), spec);
    if (ret != 0) {
        fprintf(stderr, "issue %s: %s\n", name, mdm_strerror(ret));
        exit(99);
    }
    return load(check_path(dir, name));
}

/* Writes a wolfCrypt key (P-224 or RSA-1024: weaker than mdm_x509_key_generate offers). */
static int write_weak_key(const char *file, bool rsa)
{
    WC_RNG rng;
    uint8_t der[4096], pem[8192];
    int der_len = -1, pem_len = -1, type;
    if (wc_InitRng(&rng) != 0)
        return -1;
    if (rsa) {
        RsaKey k;
        wc_InitRsaKey(&k, NULL);
        if (wc_MakeRsaKey(&k, 1024, WC_RSA_EXPONENT, &rng) == 0)
            der_len = wc_RsaKeyToDer(&k, der, sizeof(der));
        wc_FreeRsaKey(&k);
        type = PRIVATEKEY_TYPE;
    } else {
        ecc_key k;
        wc_ecc_init(&k);
        if (wc_ecc_make_key_ex(&rng, 28, &k, ECC_SECP224R1) == 0)
            der_len = wc_EccKeyToDer(&k, der, sizeof(der));
        wc_ecc_free(&k);
        type = ECC_PRIVATEKEY_TYPE;
    }
    wc_FreeRng(&rng);
    if (der_len > 0)
        pem_len = wc_DerToPem(der, (word32)der_len, pem, sizeof(pem), type);
    if (pem_len <= 0)
        return -1;
    FILE *f = fopen(file, "w");
    if (!f)
        return -1;
    size_t w = fwrite(pem, 1, (size_t)pem_len, f);
    return fclose(f) == 0 && w == (size_t)pem_len ? 0 : -1;
}

static void test_good(void)
{
    /* Modes must not depend on the umask. */
    mode_t old = umask(0);
    CHECK_EQ_INT(mdm_x509_key_generate(check_path(dir, "ca.key"), MDM_X509_KEY_EC_P256), 0);
    umask(077);
    mdm_x509_spec_t ca = {
        .common_name = "mdmd Test CA",
        .organization = "mdmd test",
        .validity_days = 3650,
        .key_usage = MDM_X509_KU_KEY_CERT_SIGN | MDM_X509_KU_CRL_SIGN,
        .is_ca = true,
    };
    CHECK_EQ_INT(mdm_x509_make_self_signed(check_path(dir, "ca.key"), check_path(dir, "ca.crt"), &ca), 0);
    CHECK_EQ_INT(mdm_x509_key_generate(check_path(dir, "server.key"), MDM_X509_KEY_EC_P256), 0);
    umask(old);
    CHECK_EQ_INT(file_mode(check_path(dir, "ca.key")), 0600);
    CHECK_EQ_INT(file_mode(check_path(dir, "ca.crt")), 0644);
    CHECK_EQ_INT(file_mode(check_path(dir, "server.key")), 0600);

    mdm_x509_info_t c = load(check_path(dir, "ca.crt"));
    CHECK_STR(c.subject, "O=mdmd test, CN=mdmd Test CA");
    CHECK_STR(c.issuer, c.subject);
    CHECK(c.is_ca);
    CHECK(c.self_issued);
    CHECK(c.has_key_usage);
    CHECK_EQ_INT(c.key_usage, MDM_X509_KU_KEY_CERT_SIGN | MDM_X509_KU_CRL_SIGN);
    CHECK(!c.has_san);
    CHECK_EQ_INT(c.not_after - c.not_before, 3650LL * 86400);
    expect_only("CA", &c, MDM_X509_PROFILE_CA, NULL, 0, NULL, MDM_X509_PASS);

    mdm_x509_spec_t s = good_server();
    mdm_x509_info_t v = issue("server.crt", &s, "server.key");
    CHECK_EQ_INT(file_mode(check_path(dir, "server.crt")), 0644);
    CHECK_STR(v.subject, "O=mdmd test, CN=localhost");
    CHECK_STR(v.issuer, "O=mdmd test, CN=mdmd Test CA");
    CHECK(!v.is_ca);
    CHECK(!v.self_issued);
    CHECK_STR(v.key_desc, "ECDSA P-256");
    CHECK_EQ_INT(v.key_alg, MDM_X509_KEYALG_EC);
    CHECK_EQ_INT(v.key_bits, 256);
    CHECK_STR(v.sig_alg, "ecdsa-with-SHA256");
    CHECK_EQ_INT(v.sig_hash, MDM_X509_HASH_SHA256);
    CHECK(v.has_san);
    CHECK_EQ_INT(v.n_san, 3);
    CHECK(v.san[0].type == MDM_X509_SAN_DNS && strcmp(v.san[0].value, "localhost") == 0);
    CHECK(v.san[1].type == MDM_X509_SAN_IP && strcmp(v.san[1].value, "127.0.0.1") == 0);
    CHECK(v.san[2].type == MDM_X509_SAN_IP && strcmp(v.san[2].value, "::1") == 0);
    CHECK(v.has_eku);
    CHECK_EQ_INT(v.eku, MDM_X509_EKU_SERVER_AUTH);
    CHECK_EQ_INT(v.key_usage, MDM_X509_KU_DIGITAL_SIGNATURE);
    CHECK_EQ_INT(v.not_after - v.not_before, 397LL * 86400);
    int64_t now = (int64_t)time(NULL);
    CHECK(v.not_before <= now && v.not_before >= now - 3600);
    CHECK_EQ_INT(strlen(v.serial_hex), 32); /* 16 bytes, positive, no leading zero */
    CHECK(v.serial_hex[0] >= '4' && v.serial_hex[0] <= '7');
    char san[256];
    mdm_x509_format_san(&v, san, sizeof(san));
    CHECK_STR(san, "DNS:localhost, IP:127.0.0.1, IP:::1");

    /* Fingerprint = SHA-256 of the DER. */
    FILE *f = fopen(check_path(dir, "server.crt"), "r");
    uint8_t pem[8192], der[8192], digest[32];
    size_t pem_len = f ? fread(pem, 1, sizeof(pem), f) : 0;
    if (f)
        fclose(f);
    int der_len = wc_CertPemToDer(pem, (int)pem_len, der, sizeof(der), CERT_TYPE);
    CHECK(der_len > 0);
    if (der_len > 0) {
        CHECK_EQ_INT(wc_Sha256Hash(der, (word32)der_len, digest), 0);
        CHECK(memcmp(digest, v.sha256, 32) == 0);
        char hex[4];
        snprintf(hex, sizeof(hex), "%02X:", digest[0]);
        CHECK(strncmp(v.fingerprint, hex, 3) == 0);
        CHECK_EQ_INT(strlen(v.fingerprint), 95);

        /* The same certificate as a DER file. */
        FILE *d = fopen(check_path(dir, "server.der"), "wb");
        if (d) {
            fwrite(der, 1, (size_t)der_len, d);
            fclose(d);
        }
        mdm_x509_info_t w = load(check_path(dir, "server.der"));
        CHECK(memcmp(w.sha256, v.sha256, 32) == 0);
        CHECK_EQ_INT(w.n_san, 3);
    }

    /* All server rules pass, with and without expected names; IPv6 in another spelling. */
    expect_only("server", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, NULL, MDM_X509_PASS);
    expect_only("server, no names", &v, MDM_X509_PROFILE_TLS_SERVER, NULL, 0, NULL,
                MDM_X509_PASS);
    const char *const ipv6_long[] = {"0:0:0:0:0:0:0:1", "LOCALHOST"};
    expect_only("server, other spelling", &v, MDM_X509_PROFILE_TLS_SERVER, ipv6_long, 2, NULL,
                MDM_X509_PASS);
    CHECK_STR(reason_of(&v, MDM_X509_PROFILE_TLS_SERVER, NULL, 0, MDM_X509_RULE_SAN),
              "DNS:localhost, IP:127.0.0.1, IP:::1");
    CHECK_STR(reason_of(&v, MDM_X509_PROFILE_TLS_SERVER, NULL, 0, MDM_X509_RULE_PERIOD),
              "validity 397 days <= 398 days");

    /* A server certificate is not a CA. */
    expect_only("server as CA", &v, MDM_X509_PROFILE_CA, NULL, 0, MDM_X509_RULE_BASIC,
                MDM_X509_FAIL);

    /* A PEM chain: leaf then CA. */
    CHECK_EQ_INT(check_sh("cat '%s' '%s' > '%s'", check_path(dir, "server.crt"), check_path(dir, "ca.crt"),
                    check_path(dir, "chain.pem")),
                 0);
    mdm_x509_info_t *arr = NULL;
    size_t n = 0;
    CHECK_EQ_INT(mdm_x509_inspect_file(check_path(dir, "chain.pem"), &arr, &n), 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK(!arr[0].is_ca);
        CHECK(arr[1].is_ca);
        CHECK(memcmp(arr[1].sha256, c.sha256, 32) == 0);
    }
    free(arr);

    if (have_openssl) {
        CHECK_EQ_INT(check_sh("openssl verify -x509_strict -purpose sslserver -CAfile '%s' '%s'",
                        check_path(dir, "ca.crt"), check_path(dir, "server.crt")),
                     0);
        CHECK_EQ_INT(check_sh("openssl x509 -in '%s' -noout -ext subjectAltName | grep -q "
                        "'DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1'",
                        check_path(dir, "server.crt")),
                     0);
        CHECK_EQ_INT(check_sh("openssl x509 -in '%s' -noout -text | grep -q 'Basic Constraints: "
                        "critical'",
                        check_path(dir, "ca.crt")),
                     0);
        CHECK_EQ_INT(check_sh("openssl x509 -in '%s' -noout -fingerprint -sha256 | grep -q '%s'",
                        check_path(dir, "server.crt"), v.fingerprint),
                     0);
        CHECK_EQ_INT(check_sh("openssl pkey -in '%s' -noout", check_path(dir, "server.key")), 0);
    }
}

static void test_each_rule_fails(void)
{
    int64_t now = (int64_t)time(NULL);
    mdm_x509_spec_t s;
    mdm_x509_info_t v;

    s = good_server();
    s.n_san = 0;
    v = issue("nosan.crt", &s, "server.key");
    CHECK(!v.has_san);
    expect_only("no SAN", &v, MDM_X509_PROFILE_TLS_SERVER, NULL, 0, MDM_X509_RULE_SAN,
                MDM_X509_FAIL);

    const char *const other[] = {"mdm.example.com", "10.0.0.1"};
    s = good_server();
    s.san = other;
    s.n_san = 2;
    v = issue("wrongsan.crt", &s, "server.key");
    expect_only("wrong SAN", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_SAN,
                MDM_X509_FAIL);
    CHECK(strstr(reason_of(&v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_SAN),
                 "missing localhost, 127.0.0.1, ::1") != NULL);
    expect_only("wrong SAN, right names", &v, MDM_X509_PROFILE_TLS_SERVER, other, 2, NULL,
                MDM_X509_PASS);

    const char *const wild[] = {"*.example.com"};
    const char *const one_label[] = {"mdm.example.com"};
    const char *const two_labels[] = {"a.mdm.example.com"};
    const char *const apex[] = {"example.com"};
    s = good_server();
    s.san = wild;
    s.n_san = 1;
    v = issue("wild.crt", &s, "server.key");
    expect_only("wildcard", &v, MDM_X509_PROFILE_TLS_SERVER, one_label, 1, NULL, MDM_X509_PASS);
    expect_only("wildcard 2 labels", &v, MDM_X509_PROFILE_TLS_SERVER, two_labels, 1,
                MDM_X509_RULE_SAN, MDM_X509_FAIL);
    expect_only("wildcard apex", &v, MDM_X509_PROFILE_TLS_SERVER, apex, 1, MDM_X509_RULE_SAN,
                MDM_X509_FAIL);

    s = good_server();
    s.ext_key_usage = MDM_X509_EKU_CLIENT_AUTH;
    v = issue("clientauth.crt", &s, "server.key");
    expect_only("no serverAuth", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_EKU,
                MDM_X509_FAIL);
    s.ext_key_usage = 0;
    v = issue("noeku.crt", &s, "server.key");
    CHECK(!v.has_eku);
    expect_only("no EKU", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_EKU,
                MDM_X509_FAIL);

    s = good_server();
    s.hash = MDM_X509_HASH_SHA1;
    v = issue("sha1.crt", &s, "server.key");
    CHECK_STR(v.sig_alg, "ecdsa-with-SHA1");
    expect_only("SHA-1", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_SIG,
                MDM_X509_FAIL);
    s.hash = MDM_X509_HASH_SHA384;
    v = issue("sha384.crt", &s, "server.key");
    CHECK_STR(v.sig_alg, "ecdsa-with-SHA384");
    expect_only("SHA-384", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, NULL, MDM_X509_PASS);

    CHECK_EQ_INT(write_weak_key(check_path(dir, "p224.key"), false), 0);
    s = good_server();
    v = issue("p224.crt", &s, "p224.key");
    CHECK_STR(v.key_desc, "ECDSA P-224");
    expect_only("P-224", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_KEY,
                MDM_X509_FAIL);

    CHECK_EQ_INT(write_weak_key(check_path(dir, "rsa1024.key"), true), 0);
    v = issue("rsa1024.crt", &s, "rsa1024.key");
    CHECK_STR(v.key_desc, "RSA 1024");
    expect_only("RSA-1024", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_KEY,
                MDM_X509_FAIL);
    CHECK_STR(reason_of(&v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_KEY),
              "RSA 1024 bits < 2048 bits");

    CHECK_EQ_INT(mdm_x509_key_generate(check_path(dir, "rsa2048.key"), MDM_X509_KEY_RSA_2048), 0);
    s.key_usage = MDM_X509_KU_DIGITAL_SIGNATURE | MDM_X509_KU_KEY_ENCIPHERMENT;
    v = issue("rsa2048.crt", &s, "rsa2048.key");
    CHECK_STR(v.key_desc, "RSA 2048");
    expect_only("RSA-2048", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, NULL, MDM_X509_PASS);

    CHECK_EQ_INT(mdm_x509_key_generate(check_path(dir, "p384.key"), MDM_X509_KEY_EC_P384), 0);
    s = good_server();
    v = issue("p384.crt", &s, "p384.key");
    CHECK_STR(v.key_desc, "ECDSA P-384");
    expect_only("P-384", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, NULL, MDM_X509_PASS);

    s = good_server();
    s.validity_days = 825;
    v = issue("825.crt", &s, "server.key");
    expect_only("825 days", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_PERIOD,
                MDM_X509_FAIL);
    CHECK_STR(reason_of(&v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_PERIOD),
              "validity 825 days > 398 days");
    s.validity_days = 398;
    v = issue("398.crt", &s, "server.key");
    expect_only("398 days", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, NULL, MDM_X509_PASS);
    s.validity_days = 399;
    v = issue("399.crt", &s, "server.key");
    expect_only("399 days", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_PERIOD,
                MDM_X509_FAIL);

    s = good_server();
    s.not_before = now - 400 * 86400LL;
    v = issue("expired.crt", &s, "server.key");
    CHECK_EQ_INT(v.not_before, s.not_before);
    expect_only("expired", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_NOW,
                MDM_X509_FAIL);
    CHECK(strncmp(reason_of(&v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_NOW),
                  "expired on ", 11) == 0);

    s.not_before = now + 10 * 86400LL;
    v = issue("future.crt", &s, "server.key");
    expect_only("not yet valid", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_NOW,
                MDM_X509_FAIL);

    s.not_before = now - 387 * 86400LL; /* 397 days long: 10 days left */
    v = issue("expiring.crt", &s, "server.key");
    expect_only("expiring", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_NOW,
                MDM_X509_WARN);
    const char *why = reason_of(&v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, MDM_X509_RULE_NOW);
    CHECK(strncmp(why, "expires in 9 days", 17) == 0 ||
          strncmp(why, "expires in 10 days", 18) == 0);

    /* Dates past 2049 are GeneralizedTime and still round-trip. */
    s.not_before = 2524608000LL; /* 2050-01-01 */
    v = issue("2050.crt", &s, "server.key");
    CHECK_EQ_INT(v.not_before, 2524608000LL);
    CHECK_EQ_INT(v.not_after, 2524608000LL + 397 * 86400LL);
    if (have_openssl)
        CHECK_EQ_INT(check_sh("openssl x509 -in '%s' -noout -startdate | grep -q 'Jan  1 00:00:00 2050'",
                        check_path(dir, "2050.crt")),
                     0);
}

static void test_signing_and_ca_profiles(void)
{
    CHECK_EQ_INT(mdm_x509_key_generate(check_path(dir, "signing.key"), MDM_X509_KEY_EC_P256), 0);
    mdm_x509_spec_t s = {
        .common_name = "mdmd profile signing",
        .validity_days = 397,
        .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE,
        .ext_key_usage = MDM_X509_EKU_EMAIL_PROTECTION | MDM_X509_EKU_CODE_SIGNING,
    };
    mdm_x509_info_t v = issue("signing.crt", &s, "signing.key");
    CHECK_STR(v.subject, "CN=mdmd profile signing");
    CHECK_EQ_INT(v.eku, MDM_X509_EKU_EMAIL_PROTECTION | MDM_X509_EKU_CODE_SIGNING);
    expect_only("signing", &v, MDM_X509_PROFILE_SIGNING, NULL, 0, NULL, MDM_X509_PASS);
    /* Signing certificates are not TLS server certificates. */
    CHECK_EQ_INT(verdict_of(&v, MDM_X509_PROFILE_TLS_SERVER, MDM_X509_RULE_SAN), MDM_X509_FAIL);
    CHECK_EQ_INT(verdict_of(&v, MDM_X509_PROFILE_TLS_SERVER, MDM_X509_RULE_EKU), MDM_X509_FAIL);
    s.key_usage = MDM_X509_KU_KEY_ENCIPHERMENT;
    v = issue("signing-nods.crt", &s, "signing.key");
    expect_only("signing without digitalSignature", &v, MDM_X509_PROFILE_SIGNING, NULL, 0,
                MDM_X509_RULE_KU, MDM_X509_FAIL);

    s.key_usage = MDM_X509_KU_DIGITAL_SIGNATURE;
    s.not_before = (int64_t)time(NULL) - 390 * 86400LL;
    v = issue("signing-old.crt", &s, "signing.key");
    expect_only("signing expiring", &v, MDM_X509_PROFILE_SIGNING, NULL, 0, MDM_X509_RULE_NOW,
                MDM_X509_WARN);

    /* A CA without keyCertSign, and an expired CA. */
    mdm_x509_spec_t ca = {
        .common_name = "odd CA",
        .validity_days = 365,
        .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE,
        .is_ca = true,
    };
    CHECK_EQ_INT(mdm_x509_make_self_signed(check_path(dir, "signing.key"), check_path(dir, "oddca.crt"), &ca), 0);
    v = load(check_path(dir, "oddca.crt"));
    expect_only("CA without keyCertSign", &v, MDM_X509_PROFILE_CA, NULL, 0, MDM_X509_RULE_BASIC,
                MDM_X509_FAIL);
    ca.key_usage = MDM_X509_KU_KEY_CERT_SIGN;
    ca.validity_days = 3650;
    ca.not_before = (int64_t)time(NULL) - 3660 * 86400LL;
    CHECK_EQ_INT(mdm_x509_make_self_signed(check_path(dir, "signing.key"), check_path(dir, "oldca.crt"), &ca), 0);
    v = load(check_path(dir, "oldca.crt"));
    expect_only("expired CA", &v, MDM_X509_PROFILE_CA, NULL, 0, MDM_X509_RULE_NOW,
                MDM_X509_FAIL);
    ca.hash = MDM_X509_HASH_SHA1;
    ca.not_before = 0;
    CHECK_EQ_INT(mdm_x509_make_self_signed(check_path(dir, "signing.key"), check_path(dir, "sha1ca.crt"), &ca), 0);
    v = load(check_path(dir, "sha1ca.crt"));
    expect_only("SHA-1 CA", &v, MDM_X509_PROFILE_CA, NULL, 0, MDM_X509_RULE_SIG, MDM_X509_FAIL);
}

static void test_errors(void)
{
    mdm_x509_info_t *arr = NULL;
    size_t n = 7;
    CHECK_EQ_INT(mdm_x509_inspect_file(check_path(dir, "missing.crt"), &arr, &n), -ENOENT);
    CHECK(arr == NULL && n == 0);
    CHECK_EQ_INT(check_sh("echo 'not a certificate' > '%s'", check_path(dir, "junk.crt")), 0);
    CHECK_EQ_INT(mdm_x509_inspect_file(check_path(dir, "junk.crt"), &arr, &n), MDM_ECERT);
    CHECK_EQ_INT(check_sh("printf -- '-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n'"
                    " > '%s'",
                    check_path(dir, "badpem.crt")),
                 0);
    CHECK_EQ_INT(mdm_x509_inspect_file(check_path(dir, "badpem.crt"), &arr, &n), MDM_ECERT);
    /* A key file holds no certificate. */
    CHECK_EQ_INT(mdm_x509_inspect_file(check_path(dir, "server.key"), &arr, &n), MDM_ECERT);

    mdm_x509_spec_t s = good_server();
    const char *const bad_names[] = {"bad name!"};
    s.san = bad_names;
    s.n_san = 1;
    CHECK_EQ_INT(mdm_x509_issue(check_path(dir, "ca.key"), check_path(dir, "ca.crt"), check_path(dir, "server.key"),
                                check_path(dir, "bad.crt"), &s),
                 -EINVAL);
    const char *const bad_wild[] = {"a.*.example.com"};
    s.san = bad_wild;
    CHECK_EQ_INT(mdm_x509_issue(check_path(dir, "ca.key"), check_path(dir, "ca.crt"), check_path(dir, "server.key"),
                                check_path(dir, "bad.crt"), &s),
                 -EINVAL);
    s = good_server();
    s.common_name = "0123456789012345678901234567890123456789012345678901234567890123456789";
    CHECK_EQ_INT(mdm_x509_issue(check_path(dir, "ca.key"), check_path(dir, "ca.crt"), check_path(dir, "server.key"),
                                check_path(dir, "bad.crt"), &s),
                 -EINVAL);
    s = good_server();
    s.validity_days = 0;
    CHECK_EQ_INT(mdm_x509_issue(check_path(dir, "ca.key"), check_path(dir, "ca.crt"), check_path(dir, "server.key"),
                                check_path(dir, "bad.crt"), &s),
                 -EINVAL);
    s = good_server();
    /* The CA key must belong to the CA certificate. */
    CHECK_EQ_INT(mdm_x509_issue(check_path(dir, "server.key"), check_path(dir, "ca.crt"), check_path(dir, "server.key"),
                                check_path(dir, "bad.crt"), &s),
                 MDM_ECERT);
    CHECK_EQ_INT(mdm_x509_issue(check_path(dir, "ca.key"), check_path(dir, "ca.crt"), check_path(dir, "missing.key"),
                                check_path(dir, "bad.crt"), &s),
                 -ENOENT);
    CHECK_EQ_INT(mdm_x509_issue(check_path(dir, "ca.key"), check_path(dir, "ca.crt"), check_path(dir, "ca.crt"), check_path(dir, "bad.crt"),
                                &s),
                 MDM_ECRYPTO);
    CHECK(access(check_path(dir, "bad.crt"), F_OK) != 0);
    CHECK_EQ_INT(mdm_x509_key_generate(check_path(dir, "nodir/x.key"), MDM_X509_KEY_EC_P256), -ENOENT);
}

/* Certificates and keys from another implementation (OpenSSL), when it is installed. */
static void test_openssl_interop(void)
{
    if (!have_openssl)
        return;
    /* PKCS#8 key from OpenSSL used as a subject key and as a CA key. */
    CHECK_EQ_INT(check_sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out '%s'",
                    check_path(dir, "p8.key")),
                 0);
    mdm_x509_spec_t s = good_server();
    mdm_x509_info_t v = issue("p8.crt", &s, "p8.key");
    expect_only("PKCS#8 key", &v, MDM_X509_PROFILE_TLS_SERVER, hosts, 3, NULL, MDM_X509_PASS);

    /* RSASSA-PSS with SHA-256 passes; SHA-1 RSA fails; an OpenSSL CA issues, we inspect. */
    CHECK_EQ_INT(check_sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' -days 200 "
                    "-subj /CN=pss -sha256 -sigopt rsa_padding_mode:pss "
                    "-addext subjectAltName=DNS:pss.example -addext extendedKeyUsage=serverAuth",
                    check_path(dir, "pss.key"), check_path(dir, "pss.crt")),
                 0);
    v = load(check_path(dir, "pss.crt"));
    CHECK_STR(v.sig_alg, "rsassaPss-SHA256");
    CHECK_EQ_INT(v.sig_hash, MDM_X509_HASH_SHA256);
    CHECK_STR(v.subject, "CN=pss");
    expect_only("openssl PSS", &v, MDM_X509_PROFILE_TLS_SERVER, NULL, 0, NULL, MDM_X509_PASS);

    CHECK_EQ_INT(check_sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' -days 200 "
                    "-subj '/C=DE/O=Ex, Inc./CN=sha1' -sha1 "
                    "-addext subjectAltName=DNS:sha1.example,email:a@b.example "
                    "-addext extendedKeyUsage=serverAuth",
                    check_path(dir, "rsa-sha1.key"), check_path(dir, "rsa-sha1.crt")),
                 0);
    v = load(check_path(dir, "rsa-sha1.crt"));
    CHECK_STR(v.sig_alg, "sha1WithRSAEncryption");
    CHECK_STR(v.subject, "C=DE, O=Ex, Inc., CN=sha1");
    CHECK_STR(v.key_desc, "RSA 2048");
    expect_only("openssl SHA-1", &v, MDM_X509_PROFILE_TLS_SERVER, NULL, 0, MDM_X509_RULE_SIG,
                MDM_X509_FAIL);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("x509"));
    have_openssl = check_sh("command -v openssl") == 0;
    if (!have_openssl)
        fprintf(stderr, "openssl CLI not found: skipping the cross-checks\n");
    test_good();
    test_each_rule_fails();
    test_signing_and_ca_profiles();
    test_errors();
    test_openssl_interop();
    if (check_failed == 0)
        check_sh("rm -rf '%s'", dir);
    return check_finish("x509");
}
