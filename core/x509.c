/*
 * X.509 generation, inspection and rule checks on wolfCrypt.
 *
 * Design:
 * - Generation fills a wolfCrypt Cert and lets wc_MakeCert_ex/wc_SignCert_ex encode and sign
 *   it. Two pieces wolfCrypt only takes pre-encoded are built here: the subjectAltName
 *   GeneralNames (Cert.altNames holds the DER SEQUENCE that goes inside the extension's OCTET
 *   STRING; wc_SetAltNames* only copy names from another certificate) and the validity
 *   times (Cert.beforeDate/afterDate hold complete UTCTime/GeneralizedTime TLVs; without them
 *   wolfCrypt backdates notBefore by a day, which would make "397 days" really 398).
 * - Inspection uses wc_ParseCert without verification (expired certificates must still be
 *   reported), and a tiny DER reader for what DecodedCert does not give in the shape we want
 *   (names as "CN=x, O=y", times as Unix seconds, the RSASSA-PSS hash).
 * - Files are read and written through core/file: every file is written to a temporary
 *   sibling with its exact mode, fsync'ed and renamed over the target.
 *
 * Invariants: private key material is wiped from our buffers before they are freed.
 * Threads: reentrant; each call owns the wolfCrypt RNG its key generation and signing need,
 * and its keys. Serials come from mdm_random_bytes() and hashes from mdm_sha256() (core/crypto).
 */
#include "core/x509.h"

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/pkcs12.h>
#include <wolfssl/wolfcrypt/rsa.h>
#include <wolfssl/ssl.h>

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/crypto.h"
#include "core/file.h"

#define FILE_MAX (1024 * 1024)     /* largest certificate or key file we read */
#define KEY_DER_MAX 4096           /* RSA-3072 private key DER is ~1.8 KB */
#define KEY_PEM_MAX 8192
#define CERT_DER_MAX (CTC_MAX_ALT_SIZE + 8192) /* SAN bytes plus everything else */
#define SERIAL_LEN 16
#define NOT_BEFORE_MARGIN_S 300    /* default notBefore = now - 5 min: tolerate clock skew */

/* ---- files ----------------------------------------------------------------------------- */

/* Frees a buffer that held key material. */

/* ---- keys ------------------------------------------------------------------------------ */

struct key {
    int type; /* RSA_TYPE or ECC_TYPE; 0 when nothing is loaded */
    union {
        ecc_key ecc;
        RsaKey rsa;
    } u;
};

static void key_free(struct key *k)
{
    if (!k)
        return;
    if (k->type == ECC_TYPE)
        wc_ecc_free(&k->u.ecc);
    else if (k->type == RSA_TYPE)
        wc_FreeRsaKey(&k->u.rsa);
    explicit_bzero(k, sizeof(*k));
    free(k);
}

/* Decodes a DER private key (SEC1, PKCS#1 or unencrypted PKCS#8), EC or RSA. */
static int key_load_der(const uint8_t *der, size_t der_len, struct key **out)
{
    struct key *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    word32 idx = 0;
    if (wc_ecc_init(&k->u.ecc) == 0) {
        if (wc_EccPrivateKeyDecode(der, &idx, &k->u.ecc, (word32)der_len) == 0) {
            k->type = ECC_TYPE;
            *out = k;
            return 0;
        }
        wc_ecc_free(&k->u.ecc);
    }
    idx = 0;
    if (wc_InitRsaKey(&k->u.rsa, NULL) == 0) {
        if (wc_RsaPrivateKeyDecode(der, &idx, &k->u.rsa, (word32)der_len) == 0) {
            k->type = RSA_TYPE;
            *out = k;
            return 0;
        }
        wc_FreeRsaKey(&k->u.rsa);
    }
    free(k); /* never holds an initialised key here */
    return MDM_ECRYPTO;
}

int mdm_x509_pem_to_der(const char *pem, size_t len, bool is_key, uint8_t **der, size_t *der_len)
{
    if (len == 0 || len > INT_MAX)
        return -EINVAL;
    uint8_t *out = malloc(len);
    if (!out)
        return -ENOMEM;
    int n = is_key ? wc_KeyPemToDer((const unsigned char *)pem, (int)len, out, (int)len, NULL)
                   : wc_CertPemToDer((const unsigned char *)pem, (int)len, out, (int)len,
                                     CERT_TYPE);
    if (n <= 0) {
        mdm_free_wiped(out, len);
        return -EINVAL;
    }
    *der = out;
    *der_len = (size_t)n;
    return 0;
}

/* Loads a PEM (SEC1, PKCS#1 or unencrypted PKCS#8) or DER private key file, EC or RSA. */
static int key_load(const char *path, struct key **out)
{
    uint8_t *file = NULL, *der = NULL;
    size_t file_len = 0, der_len = 0;
    int ret = mdm_file_read(path, FILE_MAX, &file, &file_len);
    if (ret != 0)
        return ret;
    if (strstr((const char *)file, "-----BEGIN") != NULL) {
        ret = mdm_x509_pem_to_der((const char *)file, file_len, true, &der, &der_len);
        if (ret == -EINVAL)
            ret = MDM_ECRYPTO;
    } else {
        der = file;
        der_len = file_len;
        file = NULL;
    }
    if (ret == 0)
        ret = key_load_der(der, der_len, out);
    mdm_free_wiped(file, file_len);
    mdm_free_wiped(der, der_len);
    return ret;
}

int mdm_x509_key_generate(const char *path, enum mdm_x509_key_type type)
{
    assert(path);
    WC_RNG rng;
    uint8_t *der = NULL, *pem = NULL;
    struct key *k = NULL;
    int ret = 0;
    if (wc_InitRng(&rng) != 0)
        return MDM_ECRYPTO;
    der = calloc(1, KEY_DER_MAX);
    pem = calloc(1, KEY_PEM_MAX);
    k = calloc(1, sizeof(*k));
    if (!der || !pem || !k) {
        ret = -ENOMEM;
        goto out;
    }
    int der_len, pem_type;
    switch (type) {
    case MDM_X509_KEY_EC_P256:
    case MDM_X509_KEY_EC_P384: {
        int size = type == MDM_X509_KEY_EC_P256 ? 32 : 48;
        int curve = type == MDM_X509_KEY_EC_P256 ? ECC_SECP256R1 : ECC_SECP384R1;
        if (wc_ecc_init(&k->u.ecc) != 0) {
            ret = MDM_ECRYPTO;
            goto out;
        }
        k->type = ECC_TYPE;
        if (wc_ecc_make_key_ex(&rng, size, &k->u.ecc, curve) != 0) {
            ret = MDM_ECRYPTO;
            goto out;
        }
        der_len = wc_EccKeyToDer(&k->u.ecc, der, KEY_DER_MAX);
        pem_type = ECC_PRIVATEKEY_TYPE;
        break;
    }
    case MDM_X509_KEY_RSA_2048:
    case MDM_X509_KEY_RSA_3072:
        if (wc_InitRsaKey(&k->u.rsa, NULL) != 0) {
            ret = MDM_ECRYPTO;
            goto out;
        }
        k->type = RSA_TYPE;
        if (wc_MakeRsaKey(&k->u.rsa, type == MDM_X509_KEY_RSA_2048 ? 2048 : 3072,
                          WC_RSA_EXPONENT, &rng) != 0) {
            ret = MDM_ECRYPTO;
            goto out;
        }
        der_len = wc_RsaKeyToDer(&k->u.rsa, der, KEY_DER_MAX);
        pem_type = PRIVATEKEY_TYPE;
        break;
    default:
        ret = -EINVAL;
        goto out;
    }
    if (der_len <= 0) {
        ret = MDM_ECRYPTO;
        goto out;
    }
    int pem_len = wc_DerToPem(der, (word32)der_len, pem, KEY_PEM_MAX, pem_type);
    if (pem_len <= 0) {
        ret = MDM_ECRYPTO;
        goto out;
    }
    ret = mdm_file_write_atomic(path, pem, (size_t)pem_len, 0600);
out:
    key_free(k);
    mdm_free_wiped(der, KEY_DER_MAX);
    mdm_free_wiped(pem, KEY_PEM_MAX);
    wc_FreeRng(&rng);
    return ret;
}

int mdm_x509_write_pem(const char *path, enum mdm_x509_pem_kind kind, const uint8_t *der,
                       size_t len)
{
    int type;
    mode_t mode = 0600;
    switch (kind) {
    case MDM_X509_PEM_CERT: type = CERT_TYPE, mode = 0644; break;
    case MDM_X509_PEM_RSA_KEY: type = PRIVATEKEY_TYPE; break;
    case MDM_X509_PEM_EC_KEY: type = ECC_PRIVATEKEY_TYPE; break;
    default: return -EINVAL;
    }
    if (!der || len == 0 || len > INT_MAX / 2)
        return -EINVAL;
    size_t cap = len * 2 + 128; /* base64 (4/3), line breaks and the two lines around it */
    uint8_t *pem = malloc(cap);
    if (!pem)
        return -ENOMEM;
    int n = wc_DerToPem(der, (word32)len, pem, (word32)cap, type);
    int ret = n > 0 ? mdm_file_write_atomic(path, pem, (size_t)n, mode) : MDM_ECRYPTO;
    mdm_free_wiped(pem, cap);
    return ret;
}

/* ---- DER helpers ----------------------------------------------------------------------- */

/* Reads one TLV at *p (before end). Returns 0 or -1 on malformed input. */
static int der_next(const uint8_t **p, const uint8_t *end, uint8_t *tag, const uint8_t **val,
                    size_t *len)
{
    const uint8_t *q = *p;
    if (end - q < 2)
        return -1;
    *tag = *q++;
    size_t l = *q++;
    if (l & 0x80) {
        size_t nb = l & 0x7f;
        if (nb == 0 || nb > 4 || (size_t)(end - q) < nb)
            return -1;
        l = 0;
        for (size_t i = 0; i < nb; i++)
            l = (l << 8) | *q++;
    }
    if ((size_t)(end - q) < l)
        return -1;
    *val = q;
    *len = l;
    *p = q + l;
    return 0;
}

/* Appends a DER length to out at *n (out must have 4 spare bytes). */
static void der_put_len(uint8_t *out, size_t *n, size_t len)
{
    if (len < 0x80) {
        out[(*n)++] = (uint8_t)len;
    } else if (len <= 0xff) {
        out[(*n)++] = 0x81;
        out[(*n)++] = (uint8_t)len;
    } else {
        out[(*n)++] = 0x82;
        out[(*n)++] = (uint8_t)(len >> 8);
        out[(*n)++] = (uint8_t)len;
    }
}

/* Encodes t as UTCTime (1950-2049) or GeneralizedTime, as RFC 5280 4.1.2.5 requires. */
static int der_time(int64_t t, uint8_t out[CTC_DATE_SIZE], int *len)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm))
        return -EINVAL;
    int year = tm.tm_year + 1900;
    char s[24];
    int n;
    if (year >= 1950 && year <= 2049) {
        n = snprintf(s, sizeof(s), "%02d%02d%02d%02d%02d%02dZ", year % 100, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        out[0] = 0x17; /* UTCTime */
    } else if (year >= 0 && year <= 9999) {
        n = snprintf(s, sizeof(s), "%04d%02d%02d%02d%02d%02dZ", year, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        out[0] = 0x18; /* GeneralizedTime */
    } else {
        return -EINVAL;
    }
    out[1] = (uint8_t)n;
    memcpy(out + 2, s, (size_t)n);
    *len = n + 2;
    return 0;
}

static int digits(const uint8_t *p, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* Parses a UTCTime/GeneralizedTime TLV (as DecodedCert keeps them) into Unix seconds. */
static int parse_time(const uint8_t *tlv, int tlv_len, int64_t *out)
{
    const uint8_t *p = tlv, *v;
    uint8_t tag;
    size_t len;
    if (!tlv || tlv_len <= 0 || der_next(&p, tlv + tlv_len, &tag, &v, &len) != 0)
        return -1;
    int year;
    if (tag == 0x17 && len >= 13) {
        year = digits(v, 2);
        year += year < 50 ? 2000 : 1900;
        v += 2;
    } else if (tag == 0x18 && len >= 15) {
        year = digits(v, 4);
        v += 4;
    } else {
        return -1;
    }
    struct tm tm = {0};
    tm.tm_year = year - 1900;
    tm.tm_mon = digits(v, 2) - 1;
    tm.tm_mday = digits(v + 2, 2);
    tm.tm_hour = digits(v + 4, 2);
    tm.tm_min = digits(v + 6, 2);
    tm.tm_sec = digits(v + 8, 2);
    if (year < 0 || tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_hour < 0 || tm.tm_min < 0 ||
        tm.tm_sec < 0)
        return -1;
    *out = (int64_t)timegm(&tm);
    return 0;
}

/* ---- subjectAltName encoding ------------------------------------------------------------ */

static bool valid_dns_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return false;
    if (s[0] == '*') { /* wildcard only as the whole left-most label */
        if (s[1] != '.' || n < 3)
            return false;
        s += 2;
    }
    size_t label = 0;
    for (const char *p = s;; p++) {
        char c = *p;
        if (c == '.' || c == 0) {
            if (label == 0 || label > 63)
                return false;
            if (c == 0)
                return true;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_') {
            label++;
        } else {
            return false;
        }
    }
}

bool mdm_x509_san_entry_valid(const char *name)
{
    uint8_t ip[16];
    assert(name);
    return inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1 ||
           valid_dns_name(name);
}

/* Builds GeneralNames (SEQUENCE OF [2] dNSName / [7] iPAddress) into out. */
static int encode_san(const char *const *names, size_t n, uint8_t *out, size_t cap, int *len)
{
    size_t body = 0;
    uint8_t ip[16];
    for (size_t i = 0; i < n; i++) {
        assert(names[i]);
        size_t l;
        if (inet_pton(AF_INET, names[i], ip) == 1)
            l = 4;
        else if (inet_pton(AF_INET6, names[i], ip) == 1)
            l = 16;
        else if (valid_dns_name(names[i]))
            l = strlen(names[i]);
        else
            return -EINVAL;
        body += 1 + (l < 0x80 ? 1 : 2) + l;
    }
    if (body + 4 > cap)
        return -EINVAL;
    size_t k = 0;
    out[k++] = 0x30;
    der_put_len(out, &k, body);
    for (size_t i = 0; i < n; i++) {
        const void *val;
        size_t l;
        uint8_t tag;
        if (inet_pton(AF_INET, names[i], ip) == 1) {
            tag = 0x87, val = ip, l = 4;
        } else if (inet_pton(AF_INET6, names[i], ip) == 1) {
            tag = 0x87, val = ip, l = 16;
        } else {
            tag = 0x82, val = names[i], l = strlen(names[i]);
        }
        out[k++] = tag;
        der_put_len(out, &k, l);
        memcpy(out + k, val, l);
        k += l;
    }
    *len = (int)k;
    return 0;
}

/* ---- certificate generation ------------------------------------------------------------- */

static int sig_type(int key_type, enum mdm_x509_hash h)
{
    bool ec = key_type == ECC_TYPE;
    switch (h) {
    case MDM_X509_HASH_SHA256: return ec ? CTC_SHA256wECDSA : CTC_SHA256wRSA;
    case MDM_X509_HASH_SHA384: return ec ? CTC_SHA384wECDSA : CTC_SHA384wRSA;
    case MDM_X509_HASH_SHA512: return ec ? CTC_SHA512wECDSA : CTC_SHA512wRSA;
    case MDM_X509_HASH_SHA1: return ec ? CTC_SHAwECDSA : CTC_SHAwRSA;
    default: return -1;
    }
}

/* One keyUsage or extendedKeyUsage bit: ours and wolfCrypt's. */
struct usage_bit {
    unsigned mdm;  /* MDM_X509_KU_* or MDM_X509_EKU_* */
    unsigned wolf; /* KEYUSE_* or EXTKEYUSE_* */
};

static const struct usage_bit ku_bits[] = {
    {MDM_X509_KU_DIGITAL_SIGNATURE, KEYUSE_DIGITAL_SIG},
    {MDM_X509_KU_KEY_ENCIPHERMENT, KEYUSE_KEY_ENCIPHER},
    {MDM_X509_KU_KEY_AGREEMENT, KEYUSE_KEY_AGREE},
    {MDM_X509_KU_KEY_CERT_SIGN, KEYUSE_KEY_CERT_SIGN},
    {MDM_X509_KU_CRL_SIGN, KEYUSE_CRL_SIGN},
};

static const struct usage_bit eku_bits[] = {
    {MDM_X509_EKU_SERVER_AUTH, EXTKEYUSE_SERVER_AUTH},
    {MDM_X509_EKU_CLIENT_AUTH, EXTKEYUSE_CLIENT_AUTH},
    {MDM_X509_EKU_CODE_SIGNING, EXTKEYUSE_CODESIGN},
    {MDM_X509_EKU_EMAIL_PROTECTION, EXTKEYUSE_EMAILPROT},
    {MDM_X509_EKU_TIME_STAMPING, EXTKEYUSE_TIMESTAMP},
    {MDM_X509_EKU_OCSP_SIGNING, EXTKEYUSE_OCSP_SIGN},
    {MDM_X509_EKU_ANY, EXTKEYUSE_ANY},
};

/* EKU bits a generated certificate may carry (the others are for inspection only). */
#define EKU_GENERATE                                                                         \
    (MDM_X509_EKU_SERVER_AUTH | MDM_X509_EKU_CLIENT_AUTH | MDM_X509_EKU_CODE_SIGNING |         \
     MDM_X509_EKU_EMAIL_PROTECTION)

/* Translates usage bits through map: ours to wolfCrypt's (to_wolf), or back. */
static unsigned usage_map(const struct usage_bit *map, size_t n, unsigned bits, bool to_wolf)
{
    unsigned out = 0;
    for (size_t i = 0; i < n; i++)
        if (bits & (to_wolf ? map[i].mdm : map[i].wolf))
            out |= to_wolf ? map[i].wolf : map[i].mdm;
    return out;
}

static int set_name(char *dst, char *enc, const char *src)
{
    size_t n = strlen(src);
    if (n == 0 || n >= CTC_NAME_SIZE)
        return -EINVAL;
    memcpy(dst, src, n + 1);
    *enc = CTC_UTF8;
    return 0;
}

/* Public key of k as SubjectPublicKeyInfo DER. Returns the length or -1. */
static int key_spki(struct key *k, uint8_t *out, size_t cap)
{
    if (k->type == ECC_TYPE)
        return wc_EccPublicKeyToDer(&k->u.ecc, out, (word32)cap, 1);
    return wc_RsaKeyToPublicDer(&k->u.rsa, out, (word32)cap);
}

/* Refuses a CA key that does not belong to the CA certificate. */
static int check_ca_key(const uint8_t *ca_der, size_t ca_len, struct key *ca_key)
{
    uint8_t a[1024], b[1024];
    word32 a_len = sizeof(a);
    int ret = MDM_ECERT;
    DecodedCert *dc = calloc(1, sizeof(*dc));
    if (!dc)
        return -ENOMEM;
    wc_InitDecodedCert(dc, ca_der, (word32)ca_len, NULL);
    if (wc_ParseCert(dc, CERT_TYPE, NO_VERIFY, NULL) != 0)
        goto out;
    if (wc_GetPubKeyDerFromCert(dc, a, &a_len) != 0)
        goto out;
    if (ca_key->type == RSA_TYPE) {
        /* Re-encode the certificate's RSA key the way key_spki encodes ours, so that
         * encoding details of the issuer (e.g. the NULL parameters) do not matter. */
        RsaKey pub;
        word32 idx = 0;
        int n = -1;
        if (wc_InitRsaKey(&pub, NULL) == 0) {
            if (wc_RsaPublicKeyDecode(a, &idx, &pub, a_len) == 0)
                n = wc_RsaKeyToPublicDer(&pub, a, sizeof(a));
            wc_FreeRsaKey(&pub);
        }
        if (n <= 0)
            goto out;
        a_len = (word32)n;
    }
    int b_len = key_spki(ca_key, b, sizeof(b));
    if (b_len > 0 && (word32)b_len == a_len && memcmp(a, b, a_len) == 0)
        ret = 0;
out:
    wc_FreeDecodedCert(dc);
    free(dc);
    return ret;
}

int mdm_x509_key_matches(const uint8_t *cert_der, size_t cert_len, const uint8_t *key_der,
                         size_t key_len)
{
    struct key *k = NULL;
    int ret = key_load_der(key_der, key_len, &k);
    if (ret == 0)
        ret = check_ca_key(cert_der, cert_len, k);
    key_free(k);
    return ret;
}

int mdm_x509_subject_uid(const uint8_t *der, size_t len, char *out, size_t size)
{
    out[0] = '\0';
    if (len > INT32_MAX)
        return MDM_ECERT;
    WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_buffer(der, (int)len, WOLFSSL_FILETYPE_ASN1);
    if (!x)
        return MDM_ECERT;
    WOLFSSL_X509_NAME *name = wolfSSL_X509_get_subject_name(x);
    int n = name ? wolfSSL_X509_NAME_get_text_by_NID(name, NID_userId, out, (int)size) : -1;
    wolfSSL_X509_free(x);
    if (n <= 0) {
        out[0] = '\0';
        return MDM_ENOTFOUND;
    }
    return 0;
}

int mdm_x509_pkcs12_parse(const uint8_t *p12, size_t len, const char *password,
                          uint8_t **cert_der, size_t *cert_len, uint8_t **key_der,
                          size_t *key_len)
{
    if (len == 0 || len > UINT32_MAX)
        return -EBADMSG;
    WC_PKCS12 *pk = wc_PKCS12_new();
    if (!pk)
        return -ENOMEM;
    byte *pkey = NULL, *pcert = NULL;
    word32 pkey_len = 0, pcert_len = 0;
    WC_DerCertList *ca = NULL;
    int ret = 0;
    if (wc_d2i_PKCS12(p12, (word32)len, pk) != 0)
        ret = -EBADMSG;
    else if (wc_PKCS12_parse(pk, password ? password : "", &pkey, &pkey_len, &pcert,
                             &pcert_len, &ca) != 0)
        ret = MDM_ECRYPTO;
    else if (!pkey || !pcert)
        ret = MDM_ENOTFOUND;
    wc_PKCS12_free(pk);
    while (ca) { /* wc_FreeCertList is not exported by Debian's build */
        WC_DerCertList *next = ca->next;
        XFREE(ca->buffer, NULL, DYNAMIC_TYPE_PKCS);
        XFREE(ca, NULL, DYNAMIC_TYPE_PKCS);
        ca = next;
    }
    if (ret == 0) {
        *cert_der = malloc(pcert_len);
        *key_der = malloc(pkey_len);
        if (*cert_der && *key_der) {
            memcpy(*cert_der, pcert, pcert_len);
            memcpy(*key_der, pkey, pkey_len);
            *cert_len = pcert_len;
            *key_len = pkey_len;
        } else {
            free(*cert_der);
            free(*key_der);
            ret = -ENOMEM;
        }
    }
    if (pkey) {
        explicit_bzero(pkey, pkey_len);
        XFREE(pkey, NULL, DYNAMIC_TYPE_PUBLIC_KEY);
    }
    if (pcert)
        XFREE(pcert, NULL, DYNAMIC_TYPE_PKCS);
    return ret;
}

int mdm_x509_read_cert_der(const char *path, uint8_t **der, size_t *len)
{
    uint8_t *file = NULL;
    size_t file_len = 0;
    int ret = mdm_file_read(path, FILE_MAX, &file, &file_len);
    if (ret != 0)
        return ret;
    if (file_len > INT_MAX) {
        free(file);
        return MDM_ETOOBIG;
    }
    if (strstr((const char *)file, "-----BEGIN") == NULL) {
        *der = file;
        *len = file_len;
        return 0;
    }
    uint8_t *out = malloc(file_len);
    if (!out) {
        free(file);
        return -ENOMEM;
    }
    int n = wc_CertPemToDer(file, (int)file_len, out, (int)file_len, CERT_TYPE);
    free(file);
    if (n <= 0) {
        free(out);
        return MDM_ECERT;
    }
    *der = out;
    *len = (size_t)n;
    return 0;
}

static size_t len_size(size_t len)
{
    return len < 0x80 ? 1 : len <= 0xff ? 2 : len <= 0xffff ? 3 : 4;
}

/*
 * wolfCrypt 5.5 writes basicConstraints without the critical flag, but RFC 5280 4.2.1.9 says
 * a CA certificate MUST mark it critical. Rewrites the unsigned TBSCertificate in buf (len
 * bytes, cap available) with BOOLEAN TRUE inserted into that extension and the enclosing
 * lengths adjusted. Returns the new length, len when there is nothing to change, or -1.
 */
static int mark_basic_constraints_critical(uint8_t *buf, size_t len, size_t cap)
{
    static const uint8_t bc_oid[] = {0x55, 0x1d, 0x13};
    const uint8_t *p = buf, *tbs, *q, *a3_start = NULL, *a3_end = NULL, *a3 = NULL;
    size_t tbs_len, l, a3_len = 0;
    uint8_t tag;
    if (der_next(&p, buf + len, &tag, &tbs, &tbs_len) != 0 || tag != 0x30)
        return -1;
    for (q = tbs; q < tbs + tbs_len;) {
        const uint8_t *start = q, *v;
        if (der_next(&q, tbs + tbs_len, &tag, &v, &l) != 0)
            return -1;
        if (tag == 0xa3) {
            a3_start = start, a3_end = q, a3 = v, a3_len = l;
            break;
        }
    }
    if (!a3)
        return (int)len;
    const uint8_t *exts, *r = a3;
    size_t exts_len;
    if (der_next(&r, a3 + a3_len, &tag, &exts, &exts_len) != 0 || tag != 0x30 || r != a3_end)
        return -1;
    const uint8_t *ext_start = NULL, *ext_end = NULL, *after_oid = NULL, *ext_val_end = NULL;
    for (q = exts; q < exts + exts_len;) {
        const uint8_t *start = q, *ev, *t, *oid;
        size_t el, oid_len;
        if (der_next(&q, exts + exts_len, &tag, &ev, &el) != 0 || tag != 0x30)
            return -1;
        t = ev;
        if (der_next(&t, ev + el, &tag, &oid, &oid_len) != 0 || tag != 0x06)
            return -1;
        if (oid_len == sizeof(bc_oid) && memcmp(oid, bc_oid, sizeof(bc_oid)) == 0) {
            if (t < ev + el && *t == 0x01)
                return (int)len; /* already has a critical flag */
            ext_start = start, ext_end = q, after_oid = t, ext_val_end = ev + el;
            break;
        }
    }
    if (!ext_start)
        return (int)len;

    /* Lengths from the inside out; each wrapper grows by 3 bytes plus any length growth. */
    const uint8_t *ext_body, *tmp = ext_start;
    if (der_next(&tmp, ext_end, &tag, &ext_body, &l) != 0)
        return -1;
    size_t new_ext_len = (size_t)(ext_val_end - ext_body) + 3;
    size_t new_exts_len = exts_len - (size_t)(ext_end - ext_start) + 1 + len_size(new_ext_len) +
                          new_ext_len;
    size_t new_a3_len = 1 + len_size(new_exts_len) + new_exts_len;
    size_t new_tbs_len = tbs_len - (size_t)(a3_end - a3_start) + 1 + len_size(new_a3_len) +
                         new_a3_len;
    size_t total = 1 + len_size(new_tbs_len) + new_tbs_len;
    if (total > cap || new_tbs_len > 0xffffff)
        return -1;
    uint8_t *o = malloc(total);
    if (!o)
        return -1;
    size_t k = 0;
#define PUT(src, n) (memcpy(o + k, (src), (n)), k += (n))
    o[k++] = 0x30;
    der_put_len(o, &k, new_tbs_len);
    PUT(tbs, (size_t)(a3_start - tbs));
    o[k++] = 0xa3;
    der_put_len(o, &k, new_a3_len);
    o[k++] = 0x30;
    der_put_len(o, &k, new_exts_len);
    PUT(exts, (size_t)(ext_start - exts));
    o[k++] = 0x30;
    der_put_len(o, &k, new_ext_len);
    PUT(ext_body, (size_t)(after_oid - ext_body));
    o[k++] = 0x01, o[k++] = 0x01, o[k++] = 0xff; /* critical BOOLEAN TRUE */
    PUT(after_oid, (size_t)(ext_val_end - after_oid));
    PUT(ext_end, (size_t)(exts + exts_len - ext_end));
    PUT(a3_end, (size_t)(tbs + tbs_len - a3_end));
#undef PUT
    assert(k == total);
    memcpy(buf, o, total);
    free(o);
    return (int)total;
}

static int make_cert_der(const mdm_x509_spec_t *spec, struct key *subj, struct key *signer,
                         const uint8_t *ca_der, size_t ca_len, uint8_t **out, size_t *out_len);

/*
 * Shared body of make_self_signed and issue: make_cert_der, written as PEM to cert_path.
 * ca_der NULL means self-signed: the subject key signs and the issuer is the subject.
 */
static int make_cert(const mdm_x509_spec_t *spec, struct key *subj, struct key *signer,
                     const uint8_t *ca_der, size_t ca_len, const char *cert_path)
{
    uint8_t *der = NULL, *pem = NULL;
    size_t der_len = 0;
    int ret = make_cert_der(spec, subj, signer, ca_der, ca_len, &der, &der_len);
    if (ret != 0)
        return ret;
    pem = malloc(2 * CERT_DER_MAX);
    if (!pem) {
        ret = -ENOMEM;
        goto out;
    }
    int pem_len = wc_DerToPem(der, (word32)der_len, pem, 2 * CERT_DER_MAX, CERT_TYPE);
    if (pem_len <= 0) {
        ret = MDM_ECERT;
        goto out;
    }
    ret = mdm_file_write_atomic(cert_path, pem, (size_t)pem_len, 0644);
out:
    free(der);
    free(pem);
    return ret;
}

int mdm_x509_make_self_signed(const char *key_path, const char *cert_path,
                              const mdm_x509_spec_t *spec)
{
    assert(key_path && cert_path && spec);
    struct key *k = NULL;
    int ret = key_load(key_path, &k);
    if (ret != 0)
        return ret;
    ret = make_cert(spec, k, k, NULL, 0, cert_path);
    key_free(k);
    return ret;
}

int mdm_x509_issue(const char *ca_key_path, const char *ca_cert_path, const char *key_path,
                   const char *cert_path, const mdm_x509_spec_t *spec)
{
    assert(ca_key_path && ca_cert_path && key_path && cert_path && spec);
    struct key *ca = NULL, *k = NULL;
    uint8_t *ca_der = NULL;
    size_t ca_len = 0;
    int ret;
    if ((ret = key_load(ca_key_path, &ca)) != 0 || (ret = key_load(key_path, &k)) != 0 ||
        (ret = mdm_x509_read_cert_der(ca_cert_path, &ca_der, &ca_len)) != 0)
        goto out;
    if ((ret = check_ca_key(ca_der, ca_len, ca)) != 0)
        goto out;
    ret = make_cert(spec, k, ca, ca_der, ca_len, cert_path);
out:
    key_free(ca);
    key_free(k);
    free(ca_der);
    return ret;
}

/* ---- inspection ------------------------------------------------------------------------- */

static const char *attr_name(const uint8_t *oid, size_t len, char *buf, size_t size)
{
    static const struct {
        uint8_t oid[10];
        uint8_t len;
        const char *name;
    } attrs[] = {
        {{0x55, 0x04, 0x03}, 3, "CN"},
        {{0x55, 0x04, 0x06}, 3, "C"},
        {{0x55, 0x04, 0x07}, 3, "L"},
        {{0x55, 0x04, 0x08}, 3, "ST"},
        {{0x55, 0x04, 0x09}, 3, "street"},
        {{0x55, 0x04, 0x0a}, 3, "O"},
        {{0x55, 0x04, 0x0b}, 3, "OU"},
        {{0x55, 0x04, 0x05}, 3, "serialNumber"},
        {{0x55, 0x04, 0x2a}, 3, "GN"},
        {{0x55, 0x04, 0x04}, 3, "SN"},
        {{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01}, 9, "emailAddress"},
        {{0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01}, 10, "UID"},
        {{0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19}, 10, "DC"},
    };
    for (size_t i = 0; i < MDM_ARRAY_LEN(attrs); i++)
        if (attrs[i].len == len && memcmp(attrs[i].oid, oid, len) == 0)
            return attrs[i].name;
    /* Dotted form of an unknown attribute type. */
    size_t k = 0;
    unsigned long v = 0;
    for (size_t i = 0; i < len && k + 24 < size; i++) {
        v = (v << 7) | (oid[i] & 0x7f);
        if (oid[i] & 0x80)
            continue;
        if (k == 0)
            k += (size_t)snprintf(buf, size, "%lu.%lu", v < 80 ? v / 40 : 2,
                                  v < 80 ? v % 40 : v - 80);
        else
            k += (size_t)snprintf(buf + k, size - k, ".%lu", v);
        v = 0;
    }
    if (k == 0)
        snprintf(buf, size, "?");
    return buf;
}

static void append(char *out, size_t size, size_t *k, const char *s, size_t n)
{
    for (size_t i = 0; i < n && *k + 1 < size; i++)
        out[(*k)++] = s[i];
    out[*k] = 0;
}

/*
 * Formats a Name (SEQUENCE OF SET OF AttributeTypeAndValue) as "C=US, O=x, CN=y". raw is
 * either the whole SEQUENCE or, as DecodedCert's subjectRaw/issuerRaw are, its contents.
 */
static int format_name(const uint8_t *raw, int raw_len, char *out, size_t size)
{
    const uint8_t *p = raw, *end;
    uint8_t tag;
    size_t len, k = 0;
    out[0] = 0;
    if (!raw || raw_len < 0)
        return -1;
    end = raw + raw_len;
    if (raw_len > 0 && raw[0] == 0x30) {
        const uint8_t *seq;
        if (der_next(&p, end, &tag, &seq, &len) != 0)
            return -1;
        p = seq;
        end = seq + len;
    }
    while (p < end) {
        const uint8_t *set, *q;
        size_t set_len;
        if (der_next(&p, end, &tag, &set, &set_len) != 0 || tag != 0x31)
            return -1;
        q = set;
        while (q < set + set_len) {
            const uint8_t *atv, *r, *oid, *val;
            size_t atv_len, oid_len, val_len;
            uint8_t vtag;
            if (der_next(&q, set + set_len, &tag, &atv, &atv_len) != 0 || tag != 0x30)
                return -1;
            r = atv;
            if (der_next(&r, atv + atv_len, &tag, &oid, &oid_len) != 0 || tag != 0x06 ||
                der_next(&r, atv + atv_len, &vtag, &val, &val_len) != 0)
                return -1;
            char oidbuf[64];
            const char *name = attr_name(oid, oid_len, oidbuf, sizeof(oidbuf));
            if (k > 0)
                append(out, size, &k, ", ", 2);
            append(out, size, &k, name, strlen(name));
            append(out, size, &k, "=", 1);
            bool bmp = vtag == 0x1e; /* BMPString: UCS-2 big endian */
            for (size_t i = 0; i < val_len; i += bmp ? 2 : 1) {
                unsigned c = bmp ? (i + 1 < val_len ? (unsigned)val[i] << 8 | val[i + 1] : '?')
                                 : val[i];
                /* Printable ASCII and UTF-8 bytes pass; controls and UCS-2 beyond ASCII
                 * become '?' so the line stays one printable line. */
                char ch = (c < 0x20 || c == 0x7f || (bmp && c > 0x7e)) ? '?' : (char)c;
                append(out, size, &k, &ch, 1);
            }
        }
    }
    return 0;
}

static void sig_describe(word32 oid, const DecodedCert *dc, mdm_x509_info_t *info)
{
    static const struct {
        word32 oid;
        const char *name;
        enum mdm_x509_hash hash;
    } sigs[] = {
        {CTC_SHA256wECDSA, "ecdsa-with-SHA256", MDM_X509_HASH_SHA256},
        {CTC_SHA384wECDSA, "ecdsa-with-SHA384", MDM_X509_HASH_SHA384},
        {CTC_SHA512wECDSA, "ecdsa-with-SHA512", MDM_X509_HASH_SHA512},
        {CTC_SHA224wECDSA, "ecdsa-with-SHA224", MDM_X509_HASH_SHA224},
        {CTC_SHAwECDSA, "ecdsa-with-SHA1", MDM_X509_HASH_SHA1},
        {CTC_SHA256wRSA, "sha256WithRSAEncryption", MDM_X509_HASH_SHA256},
        {CTC_SHA384wRSA, "sha384WithRSAEncryption", MDM_X509_HASH_SHA384},
        {CTC_SHA512wRSA, "sha512WithRSAEncryption", MDM_X509_HASH_SHA512},
        {CTC_SHA224wRSA, "sha224WithRSAEncryption", MDM_X509_HASH_SHA224},
        {CTC_SHAwRSA, "sha1WithRSAEncryption", MDM_X509_HASH_SHA1},
        {CTC_MD5wRSA, "md5WithRSAEncryption", MDM_X509_HASH_MD5},
        {CTC_ED25519, "Ed25519", MDM_X509_HASH_UNKNOWN},
        {CTC_ED448, "Ed448", MDM_X509_HASH_UNKNOWN},
    };
    for (size_t i = 0; i < MDM_ARRAY_LEN(sigs); i++) {
        if (sigs[i].oid == oid) {
            snprintf(info->sig_alg, sizeof(info->sig_alg), "%s", sigs[i].name);
            info->sig_hash = sigs[i].hash;
            return;
        }
    }
    if (oid == CTC_RSASSAPSS) {
        /*
         * RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] AlgorithmIdentifier DEFAULT sha1,
         * ... }. Read the hash OID 2.16.840.1.101.3.4.2.x from [0] when present.
         */
        info->sig_hash = MDM_X509_HASH_SHA1;
        const uint8_t *p = dc->source + dc->sigParamsIndex, *v, *end;
        const uint8_t *lim = dc->source + dc->maxIdx;
        uint8_t tag;
        size_t len;
        end = p + dc->sigParamsLength;
        if (end > lim)
            end = lim;
        if (dc->sigParamsLength > 0 && der_next(&p, end, &tag, &v, &len) == 0 && tag == 0x30) {
            const uint8_t *q = v, *a0, *alg, *oidv;
            size_t a0_len, alg_len, oid_len;
            if (der_next(&q, v + len, &tag, &a0, &a0_len) == 0 && tag == 0xa0) {
                const uint8_t *r = a0;
                if (der_next(&r, a0 + a0_len, &tag, &alg, &alg_len) == 0 && tag == 0x30) {
                    const uint8_t *s = alg;
                    static const uint8_t nist[] = {0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02};
                    if (der_next(&s, alg + alg_len, &tag, &oidv, &oid_len) == 0 &&
                        tag == 0x06 && oid_len == 9 && memcmp(oidv, nist, 8) == 0) {
                        switch (oidv[8]) {
                        case 1: info->sig_hash = MDM_X509_HASH_SHA256; break;
                        case 2: info->sig_hash = MDM_X509_HASH_SHA384; break;
                        case 3: info->sig_hash = MDM_X509_HASH_SHA512; break;
                        case 4: info->sig_hash = MDM_X509_HASH_SHA224; break;
                        default: info->sig_hash = MDM_X509_HASH_UNKNOWN; break;
                        }
                    } else {
                        info->sig_hash = MDM_X509_HASH_UNKNOWN;
                    }
                }
            }
        }
        static const char *const names[] = {
            [MDM_X509_HASH_SHA256] = "rsassaPss-SHA256",
            [MDM_X509_HASH_SHA384] = "rsassaPss-SHA384",
            [MDM_X509_HASH_SHA512] = "rsassaPss-SHA512",
            [MDM_X509_HASH_SHA1] = "rsassaPss-SHA1",
            [MDM_X509_HASH_SHA224] = "rsassaPss-SHA224",
            [MDM_X509_HASH_MD5] = "rsassaPss",
            [MDM_X509_HASH_UNKNOWN] = "rsassaPss",
        };
        snprintf(info->sig_alg, sizeof(info->sig_alg), "%s", names[info->sig_hash]);
        return;
    }
    snprintf(info->sig_alg, sizeof(info->sig_alg), "unknown (oid sum %u)", (unsigned)oid);
    info->sig_hash = MDM_X509_HASH_UNKNOWN;
}

static void key_describe(const DecodedCert *dc, mdm_x509_info_t *info)
{
    switch (dc->keyOID) {
    case ECDSAk: {
        static const struct {
            word32 oid;
            const char *name;
            unsigned bits;
        } curves[] = {
            {ECC_SECP256R1_OID, "P-256", 256}, {ECC_SECP384R1_OID, "P-384", 384},
            {ECC_SECP521R1_OID, "P-521", 521}, {ECC_SECP224R1_OID, "P-224", 224},
            {ECC_SECP192R1_OID, "P-192", 192},
        };
        info->key_alg = MDM_X509_KEYALG_EC;
        snprintf(info->key_desc, sizeof(info->key_desc), "ECDSA (other curve)");
        for (size_t i = 0; i < MDM_ARRAY_LEN(curves); i++) {
            if (curves[i].oid == dc->pkCurveOID) {
                info->key_bits = curves[i].bits;
                snprintf(info->key_desc, sizeof(info->key_desc), "ECDSA %s", curves[i].name);
            }
        }
        break;
    }
    case RSAk: {
        info->key_alg = MDM_X509_KEYALG_RSA;
        RsaKey rsa;
        word32 idx = 0;
        if (wc_InitRsaKey(&rsa, NULL) == 0) {
            if (wc_RsaPublicKeyDecode(dc->publicKey, &idx, &rsa, dc->pubKeySize) == 0) {
                int bytes = wc_RsaEncryptSize(&rsa);
                if (bytes > 0)
                    info->key_bits = (unsigned)bytes * 8;
            }
            wc_FreeRsaKey(&rsa);
        }
        snprintf(info->key_desc, sizeof(info->key_desc), "RSA %u", info->key_bits);
        break;
    }
    case ED25519k:
        info->key_alg = MDM_X509_KEYALG_ED25519;
        info->key_bits = 256;
        snprintf(info->key_desc, sizeof(info->key_desc), "Ed25519");
        break;
    case ED448k:
        info->key_alg = MDM_X509_KEYALG_ED448;
        info->key_bits = 456;
        snprintf(info->key_desc, sizeof(info->key_desc), "Ed448");
        break;
    default:
        info->key_alg = MDM_X509_KEYALG_OTHER;
        snprintf(info->key_desc, sizeof(info->key_desc), "other (oid sum %u)",
                 (unsigned)dc->keyOID);
        break;
    }
}

static void san_collect(const DecodedCert *dc, mdm_x509_info_t *info)
{
    for (const DNS_entry *e = dc->altNames; e; e = e->next) {
        if (info->n_san == MDM_X509_SAN_MAX) {
            info->san_truncated = true;
            break;
        }
        mdm_x509_san_t *s = &info->san[info->n_san];
        switch (e->type) {
        case ASN_DNS_TYPE: s->type = MDM_X509_SAN_DNS; break;
        case ASN_IP_TYPE: s->type = MDM_X509_SAN_IP; break;
        case ASN_RFC822_TYPE: s->type = MDM_X509_SAN_EMAIL; break;
        case ASN_URI_TYPE: s->type = MDM_X509_SAN_URI; break;
        default: s->type = MDM_X509_SAN_OTHER; break;
        }
        s->value[0] = 0;
        if (s->type == MDM_X509_SAN_IP) {
            int af = e->len == 4 ? AF_INET : e->len == 16 ? AF_INET6 : 0;
            if (!af || !inet_ntop(af, e->name, s->value, sizeof(s->value)))
                snprintf(s->value, sizeof(s->value), "(%d-byte address)", e->len);
        } else if (e->name && e->len > 0) {
            size_t k = 0;
            for (int i = 0; i < e->len && k + 1 < sizeof(s->value); i++) {
                unsigned char c = (unsigned char)e->name[i];
                s->value[k++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
            }
            s->value[k] = 0;
        }
        info->n_san++;
    }
}

static void copy_trunc(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

int mdm_x509_inspect_der(const uint8_t *der, size_t len, mdm_x509_info_t *info)
{
    assert(der && info);
    memset(info, 0, sizeof(*info));
    if (len == 0 || len > FILE_MAX)
        return MDM_ECERT;
    int ret = MDM_ECERT;
    DecodedCert *dc = calloc(1, sizeof(*dc));
    if (!dc)
        return -ENOMEM;
    wc_InitDecodedCert(dc, der, (word32)len, NULL);
    if (wc_ParseCert(dc, CERT_TYPE, NO_VERIFY, NULL) != 0)
        goto out;

    if (format_name(dc->subjectRaw, dc->subjectRawLen, info->subject, sizeof(info->subject)) != 0)
        copy_trunc(info->subject, sizeof(info->subject), dc->subject);
    if (format_name(dc->issuerRaw, dc->issuerRawLen, info->issuer, sizeof(info->issuer)) != 0)
        copy_trunc(info->issuer, sizeof(info->issuer), dc->issuer);
    info->self_issued = dc->subjectRawLen == dc->issuerRawLen && dc->subjectRaw &&
                        dc->issuerRaw &&
                        memcmp(dc->subjectRaw, dc->issuerRaw, (size_t)dc->subjectRawLen) == 0;
    for (int i = 0; i < dc->serialSz && i < 32; i++)
        snprintf(info->serial_hex + 2 * i, 3, "%02X", dc->serial[i]);
    if (parse_time(dc->beforeDate, dc->beforeDateLen, &info->not_before) != 0 ||
        parse_time(dc->afterDate, dc->afterDateLen, &info->not_after) != 0)
        goto out;
    key_describe(dc, info);
    sig_describe(dc->signatureOID, dc, info);

    info->has_san = dc->extSubjAltNameSet;
    san_collect(dc, info);
    info->has_eku = dc->extExtKeyUsageSet;
    info->eku = usage_map(eku_bits, MDM_ARRAY_LEN(eku_bits), dc->extExtKeyUsage, false);
    info->has_key_usage = dc->extKeyUsageSet;
    info->key_usage = usage_map(ku_bits, MDM_ARRAY_LEN(ku_bits), dc->extKeyUsage, false);
    info->is_ca = dc->isCA;

    if (mdm_sha256(der, len, info->sha256) != 0)
        goto out;
    for (size_t i = 0; i < sizeof(info->sha256); i++)
        snprintf(info->fingerprint + 3 * i, 4, i + 1 < sizeof(info->sha256) ? "%02X:" : "%02X",
                 info->sha256[i]);
    ret = 0;
out:
    wc_FreeDecodedCert(dc);
    free(dc);
    if (ret != 0)
        memset(info, 0, sizeof(*info));
    return ret;
}

int mdm_x509_inspect_file(const char *path, mdm_x509_info_t **infos, size_t *n)
{
    assert(path && infos && n);
    uint8_t *file = NULL, *der = NULL;
    size_t file_len = 0, count = 0, cap = 0;
    mdm_x509_info_t *arr = NULL;
    *infos = NULL;
    *n = 0;
    int ret = mdm_file_read(path, FILE_MAX, &file, &file_len);
    if (ret != 0)
        return ret;
    static const char begin[] = "-----BEGIN CERTIFICATE-----";
    static const char end[] = "-----END CERTIFICATE-----";
    const char *text = (const char *)file;
    if (!strstr(text, "-----BEGIN")) {
        arr = malloc(sizeof(*arr));
        if (!arr) {
            ret = -ENOMEM;
            goto out;
        }
        if ((ret = mdm_x509_inspect_der(file, file_len, arr)) != 0)
            goto out;
        count = 1;
        goto out;
    }
    der = malloc(file_len + 1);
    if (!der) {
        ret = -ENOMEM;
        goto out;
    }
    /* Each CERTIFICATE block separately; other blocks (keys, parameters) are skipped. */
    for (const char *p = strstr(text, begin); p; p = strstr(p, begin)) {
        const char *e = strstr(p, end);
        if (!e)
            break;
        e += sizeof(end) - 1;
        int d = wc_CertPemToDer((const unsigned char *)p, (int)(e - p), der, (int)file_len,
                                CERT_TYPE);
        p = e;
        if (d <= 0) {
            ret = MDM_ECERT;
            goto out;
        }
        if (count == cap) {
            size_t ncap = cap ? 2 * cap : 4;
            mdm_x509_info_t *na = realloc(arr, ncap * sizeof(*arr));
            if (!na) {
                ret = -ENOMEM;
                goto out;
            }
            arr = na;
            cap = ncap;
        }
        if ((ret = mdm_x509_inspect_der(der, (size_t)d, &arr[count])) != 0)
            goto out;
        count++;
    }
    if (count == 0)
        ret = MDM_ECERT;
out:
    free(file);
    free(der);
    if (ret != 0) {
        free(arr);
        return ret;
    }
    *infos = arr;
    *n = count;
    return 0;
}

void mdm_x509_format_san(const mdm_x509_info_t *info, char *out, size_t size)
{
    static const char *const prefix[] = {
        [MDM_X509_SAN_DNS] = "DNS:", [MDM_X509_SAN_IP] = "IP:", [MDM_X509_SAN_EMAIL] = "email:",
        [MDM_X509_SAN_URI] = "URI:", [MDM_X509_SAN_OTHER] = "other:",
    };
    assert(size > 4);
    size_t k = 0;
    out[0] = 0;
    for (size_t i = 0; i < info->n_san; i++) {
        char item[MDM_X509_TEXT_MAX + 16];
        int m = snprintf(item, sizeof(item), "%s%s%s", i ? ", " : "", prefix[info->san[i].type],
                         info->san[i].value);
        if (m < 0 || k + (size_t)m + 4 >= size) {
            append(out, size, &k, "...", 3);
            return;
        }
        append(out, size, &k, item, (size_t)m);
    }
    if (info->san_truncated)
        append(out, size, &k, ", ...", 5);
}

/* ---- rules ------------------------------------------------------------------------------ */

const char *mdm_x509_verdict_name(enum mdm_x509_verdict v)
{
    switch (v) {
    case MDM_X509_PASS: return "PASS";
    case MDM_X509_WARN: return "WARN";
    case MDM_X509_FAIL: return "FAIL";
    }
    return "?";
}

struct results {
    mdm_x509_result_t *out;
    size_t max, n;
};

static void result(struct results *r, const char *rule, enum mdm_x509_verdict v, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));

static void result(struct results *r, const char *rule, enum mdm_x509_verdict v, const char *fmt,
                   ...)
{
    if (r->n >= r->max)
        return;
    mdm_x509_result_t *res = &r->out[r->n++];
    res->rule = rule;
    res->verdict = v;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->reason, sizeof(res->reason), fmt, ap);
    va_end(ap);
}

static void fmt_date(int64_t t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M UTC", &tm) == 0)
        snprintf(buf, size, "@%lld", (long long)t);
}

/* Does the SAN list cover name (a DNS name or an IP literal)? */
static bool san_covers(const mdm_x509_info_t *info, const char *name)
{
    uint8_t want[16], have[16];
    int af = inet_pton(AF_INET, name, want) == 1    ? AF_INET
             : inet_pton(AF_INET6, name, want) == 1 ? AF_INET6
                                                    : 0;
    for (size_t i = 0; i < info->n_san; i++) {
        const mdm_x509_san_t *s = &info->san[i];
        if (af) {
            if (s->type == MDM_X509_SAN_IP && inet_pton(af, s->value, have) == 1 &&
                memcmp(want, have, af == AF_INET ? 4 : 16) == 0)
                return true;
            continue;
        }
        if (s->type != MDM_X509_SAN_DNS)
            continue;
        const char *v = s->value;
        size_t vl = strlen(v), nl = strlen(name);
        /* A trailing dot (absolute name) does not change the name. */
        if (vl && v[vl - 1] == '.')
            vl--;
        if (nl && name[nl - 1] == '.')
            nl--;
        if (vl == nl && strncasecmp(v, name, vl) == 0)
            return true;
        /* "*.example.com" covers exactly one extra left-most label. */
        if (vl > 2 && v[0] == '*' && v[1] == '.') {
            const char *dot = memchr(name, '.', nl);
            if (dot && dot != name && (size_t)(name + nl - dot) == vl - 1 &&
                strncasecmp(dot, v + 1, vl - 1) == 0)
                return true;
        }
    }
    return false;
}

static void rule_san(struct results *r, const mdm_x509_info_t *info, const char *const *names,
                     size_t n_names)
{
    char list[400];
    if (!info->has_san || info->n_san == 0) {
        result(r, MDM_X509_RULE_SAN, MDM_X509_FAIL,
               "no subjectAltName; Apple ignores the common name");
        return;
    }
    mdm_x509_format_san(info, list, sizeof(list));
    char missing[300];
    size_t k = 0;
    missing[0] = 0;
    for (size_t i = 0; i < n_names; i++) {
        if (!san_covers(info, names[i])) {
            if (k)
                append(missing, sizeof(missing), &k, ", ", 2);
            append(missing, sizeof(missing), &k, names[i], strlen(names[i]));
        }
    }
    if (k)
        result(r, MDM_X509_RULE_SAN, MDM_X509_FAIL, "missing %s (has %s)", missing, list);
    else
        result(r, MDM_X509_RULE_SAN, MDM_X509_PASS, "%s", list);
}

static void eku_list(unsigned eku, char *buf, size_t size)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {
        {MDM_X509_EKU_SERVER_AUTH, "serverAuth"}, {MDM_X509_EKU_CLIENT_AUTH, "clientAuth"},
        {MDM_X509_EKU_CODE_SIGNING, "codeSigning"},
        {MDM_X509_EKU_EMAIL_PROTECTION, "emailProtection"},
        {MDM_X509_EKU_TIME_STAMPING, "timeStamping"}, {MDM_X509_EKU_OCSP_SIGNING, "OCSPSigning"},
        {MDM_X509_EKU_ANY, "anyExtendedKeyUsage"},
    };
    size_t k = 0;
    buf[0] = 0;
    for (size_t i = 0; i < MDM_ARRAY_LEN(names); i++) {
        if (eku & names[i].bit) {
            if (k)
                append(buf, size, &k, ", ", 2);
            append(buf, size, &k, names[i].name, strlen(names[i].name));
        }
    }
    if (k == 0)
        snprintf(buf, size, "none known");
}

static void rule_eku(struct results *r, const mdm_x509_info_t *info)
{
    char list[160];
    if (!info->has_eku) {
        result(r, MDM_X509_RULE_EKU, MDM_X509_FAIL, "no extendedKeyUsage extension");
        return;
    }
    eku_list(info->eku, list, sizeof(list));
    if (info->eku & MDM_X509_EKU_SERVER_AUTH)
        result(r, MDM_X509_RULE_EKU, MDM_X509_PASS, "%s", list);
    else
        result(r, MDM_X509_RULE_EKU, MDM_X509_FAIL, "serverAuth missing (has %s)", list);
}

static void rule_sig(struct results *r, const mdm_x509_info_t *info)
{
    switch (info->sig_hash) {
    case MDM_X509_HASH_SHA256:
    case MDM_X509_HASH_SHA384:
    case MDM_X509_HASH_SHA512:
        result(r, MDM_X509_RULE_SIG, MDM_X509_PASS, "%s", info->sig_alg);
        return;
    case MDM_X509_HASH_SHA1:
    case MDM_X509_HASH_MD5:
    case MDM_X509_HASH_SHA224:
        result(r, MDM_X509_RULE_SIG, MDM_X509_FAIL, "%s: hash weaker than SHA-256",
               info->sig_alg);
        return;
    case MDM_X509_HASH_UNKNOWN:
        break;
    }
    result(r, MDM_X509_RULE_SIG, MDM_X509_FAIL, "%s: not an algorithm Apple accepts",
           info->sig_alg);
}

static void rule_key(struct results *r, const mdm_x509_info_t *info)
{
    switch (info->key_alg) {
    case MDM_X509_KEYALG_RSA:
        if (info->key_bits >= 2048)
            result(r, MDM_X509_RULE_KEY, MDM_X509_PASS, "%s", info->key_desc);
        else
            result(r, MDM_X509_RULE_KEY, MDM_X509_FAIL, "RSA %u bits < 2048 bits",
                   info->key_bits);
        return;
    case MDM_X509_KEYALG_EC:
        if (info->key_bits == 256 || info->key_bits == 384 || info->key_bits == 521)
            result(r, MDM_X509_RULE_KEY, MDM_X509_PASS, "%s", info->key_desc);
        else
            result(r, MDM_X509_RULE_KEY, MDM_X509_FAIL, "%s: curve not P-256, P-384 or P-521",
                   info->key_desc);
        return;
    default:
        result(r, MDM_X509_RULE_KEY, MDM_X509_FAIL, "%s: need ECDSA P-256/P-384 or RSA >= 2048",
               info->key_desc);
        return;
    }
}

static void rule_period(struct results *r, const mdm_x509_info_t *info)
{
    int64_t secs = info->not_after - info->not_before;
    int64_t days = (secs + 86399) / 86400; /* round up: 398 days and 1 s is 399 days */
    if (secs < 0)
        result(r, MDM_X509_RULE_PERIOD, MDM_X509_FAIL, "notAfter is before notBefore");
    else if (secs > (int64_t)MDM_X509_MAX_VALIDITY_DAYS * 86400)
        result(r, MDM_X509_RULE_PERIOD, MDM_X509_FAIL, "validity %lld days > %d days",
               (long long)days, MDM_X509_MAX_VALIDITY_DAYS);
    else
        result(r, MDM_X509_RULE_PERIOD, MDM_X509_PASS, "validity %lld days <= %d days",
               (long long)days, MDM_X509_MAX_VALIDITY_DAYS);
}

static void rule_now(struct results *r, const mdm_x509_info_t *info, int64_t now)
{
    char nb[40], na[40];
    fmt_date(info->not_before, nb, sizeof(nb));
    fmt_date(info->not_after, na, sizeof(na));
    if (now < info->not_before) {
        result(r, MDM_X509_RULE_NOW, MDM_X509_FAIL, "not valid before %s", nb);
        return;
    }
    if (now > info->not_after) {
        result(r, MDM_X509_RULE_NOW, MDM_X509_FAIL, "expired on %s (%lld days ago)", na,
               (long long)((now - info->not_after) / 86400));
        return;
    }
    long long left = (long long)((info->not_after - now) / 86400);
    if (info->not_after - now < (int64_t)MDM_X509_EXPIRY_WARN_DAYS * 86400)
        result(r, MDM_X509_RULE_NOW, MDM_X509_WARN, "expires in %lld days (%s)", left, na);
    else
        result(r, MDM_X509_RULE_NOW, MDM_X509_PASS, "valid until %s (%lld days left)", na, left);
}

static void rule_basic(struct results *r, const mdm_x509_info_t *info)
{
    if (!info->is_ca)
        result(r, MDM_X509_RULE_BASIC, MDM_X509_FAIL,
               "not a CA (basicConstraints CA:TRUE missing)");
    else if (info->has_key_usage && !(info->key_usage & MDM_X509_KU_KEY_CERT_SIGN))
        result(r, MDM_X509_RULE_BASIC, MDM_X509_FAIL, "CA:TRUE but keyUsage lacks keyCertSign");
    else
        result(r, MDM_X509_RULE_BASIC, MDM_X509_PASS, "CA:TRUE");
}

static void rule_ku_sign(struct results *r, const mdm_x509_info_t *info)
{
    if (!info->has_key_usage)
        result(r, MDM_X509_RULE_KU, MDM_X509_PASS, "no keyUsage extension (any usage allowed)");
    else if (info->key_usage & MDM_X509_KU_DIGITAL_SIGNATURE)
        result(r, MDM_X509_RULE_KU, MDM_X509_PASS, "digitalSignature");
    else
        result(r, MDM_X509_RULE_KU, MDM_X509_FAIL, "keyUsage lacks digitalSignature");
}

size_t mdm_x509_check(const mdm_x509_info_t *info, enum mdm_x509_profile profile,
                      const char *const *expected_names, size_t n_expected, int64_t now,
                      mdm_x509_result_t *out, size_t out_max)
{
    assert(info && out);
    assert(n_expected == 0 || expected_names);
    struct results r = {.out = out, .max = out_max, .n = 0};
    switch (profile) {
    case MDM_X509_PROFILE_TLS_SERVER:
        rule_san(&r, info, expected_names, n_expected);
        rule_eku(&r, info);
        rule_sig(&r, info);
        rule_key(&r, info);
        rule_period(&r, info);
        rule_now(&r, info, now);
        break;
    case MDM_X509_PROFILE_CA:
        rule_basic(&r, info);
        rule_key(&r, info);
        rule_sig(&r, info);
        rule_now(&r, info, now);
        break;
    case MDM_X509_PROFILE_SIGNING:
        rule_ku_sign(&r, info);
        rule_key(&r, info);
        rule_sig(&r, info);
        rule_now(&r, info, now);
        break;
    }
    assert(r.n <= MDM_X509_RESULTS_MAX);
    return r.n;
}

/* ---- in-memory generation (DER) ------------------------------------------------------- */

/*
 * Makes and signs a certificate for subj's public key, returned as a malloc'ed DER buffer.
 * ca_der NULL means self-signed. subj may hold only a public key (a key decoded from a
 * SubjectPublicKeyInfo).
 */
static int make_cert_der(const mdm_x509_spec_t *spec, struct key *subj, struct key *signer,
                         const uint8_t *ca_der, size_t ca_len, uint8_t **out, size_t *out_len)
{
    WC_RNG rng;
    Cert *cert = NULL;
    uint8_t *der = NULL;
    int ret = 0;

    if (!spec->common_name || spec->validity_days == 0 || spec->validity_days > 100 * 366)
        return -EINVAL;
    if (ca_der && ca_len > INT_MAX)
        return MDM_ECERT;
    if (wc_InitRng(&rng) != 0)
        return MDM_ECRYPTO;
    cert = calloc(1, sizeof(*cert));
    der = malloc(CERT_DER_MAX);
    if (!cert || !der) {
        ret = -ENOMEM;
        goto out;
    }
    if (wc_InitCert(cert) != 0) {
        ret = MDM_ECERT;
        goto out;
    }
    if ((ret = set_name(cert->subject.commonName, &cert->subject.commonNameEnc,
                        spec->common_name)) != 0)
        goto out;
    if (spec->organization &&
        (ret = set_name(cert->subject.org, &cert->subject.orgEnc, spec->organization)) != 0)
        goto out;
    cert->sigType = sig_type(signer->type, spec->hash);
    if (cert->sigType < 0) {
        ret = -EINVAL;
        goto out;
    }
    if ((ret = mdm_random_bytes(cert->serial, SERIAL_LEN)) != 0)
        goto out;
    cert->serial[0] = (uint8_t)((cert->serial[0] & 0x7f) | 0x40);
    cert->serialSz = SERIAL_LEN;

    int64_t nb = spec->not_before ? spec->not_before : (int64_t)time(NULL) - NOT_BEFORE_MARGIN_S;
    int64_t na = nb + (int64_t)spec->validity_days * 86400;
    if ((ret = der_time(nb, cert->beforeDate, &cert->beforeDateSz)) != 0 ||
        (ret = der_time(na, cert->afterDate, &cert->afterDateSz)) != 0)
        goto out;
    cert->daysValid = (int)spec->validity_days;

    if (spec->n_san > 0) {
        assert(spec->san);
        if ((ret = encode_san(spec->san, spec->n_san, cert->altNames, sizeof(cert->altNames),
                              &cert->altNamesSz)) != 0)
            goto out;
    }
    cert->isCA = spec->is_ca ? 1 : 0;
    cert->keyUsage =
        (word16)usage_map(ku_bits, MDM_ARRAY_LEN(ku_bits), spec->key_usage, true);
    cert->extKeyUsage = (byte)usage_map(eku_bits, MDM_ARRAY_LEN(eku_bits),
                                        spec->ext_key_usage & EKU_GENERATE, true);
    if (wc_SetSubjectKeyIdFromPublicKey_ex(cert, subj->type, &subj->u) != 0) {
        ret = MDM_ECERT;
        goto out;
    }
    if (ca_der) {
        cert->selfSigned = 0;
        if (wc_SetIssuerBuffer(cert, ca_der, (int)ca_len) != 0 ||
            wc_SetAuthKeyIdFromCert(cert, ca_der, (int)ca_len) != 0) {
            ret = MDM_ECERT;
            goto out;
        }
    } else {
        cert->selfSigned = 1;
        if (wc_SetAuthKeyIdFromPublicKey_ex(cert, subj->type, &subj->u) != 0) {
            ret = MDM_ECERT;
            goto out;
        }
    }
    int n = wc_MakeCert_ex(cert, der, CERT_DER_MAX, subj->type, &subj->u, &rng);
    if (n <= 0) {
        ret = MDM_ECERT;
        goto out;
    }
    if (spec->is_ca && (n = mark_basic_constraints_critical(der, (size_t)n, CERT_DER_MAX)) < 0) {
        ret = MDM_ECERT;
        goto out;
    }
    n = wc_SignCert_ex(n, cert->sigType, der, CERT_DER_MAX, signer->type, &signer->u, &rng);
    if (n <= 0) {
        ret = MDM_ECRYPTO;
        goto out;
    }
    uint8_t *shrunk = realloc(der, (size_t)n);
    *out = shrunk ? shrunk : der;
    *out_len = (size_t)n;
    der = NULL;
out:
    free(cert);
    free(der);
    wc_FreeRng(&rng);
    return ret;
}

/*
 * Decodes a SubjectPublicKeyInfo (RSA of at least 2048 bits, or EC on a named curve) into a
 * public-only key. The algorithm OID picks the decoder; trailing bytes are refused.
 */
static int key_load_spki(const uint8_t *spki, size_t len, struct key **out)
{
    static const uint8_t rsa_oid[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01};
    static const uint8_t ec_oid[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
    const uint8_t *p = spki, *v, *q, *oid;
    size_t l, oid_len;
    uint8_t tag;
    if (len == 0 || len > KEY_DER_MAX || der_next(&p, spki + len, &tag, &v, &l) != 0 ||
        tag != 0x30 || p != spki + len)
        return MDM_ECRYPTO;
    q = v;
    const uint8_t *alg, *r;
    size_t alg_len;
    if (der_next(&q, v + l, &tag, &alg, &alg_len) != 0 || tag != 0x30)
        return MDM_ECRYPTO;
    r = alg;
    if (der_next(&r, alg + alg_len, &tag, &oid, &oid_len) != 0 || tag != 0x06)
        return MDM_ECRYPTO;
    struct key *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    word32 idx = 0;
    int ret = MDM_ECRYPTO;
    if (oid_len == sizeof(rsa_oid) && memcmp(oid, rsa_oid, oid_len) == 0) {
        if (wc_InitRsaKey(&k->u.rsa, NULL) != 0)
            goto out;
        k->type = RSA_TYPE;
        if (wc_RsaPublicKeyDecode(spki, &idx, &k->u.rsa, (word32)len) == 0 && idx == len &&
            wc_RsaEncryptSize(&k->u.rsa) >= 256)
            ret = 0;
    } else if (oid_len == sizeof(ec_oid) && memcmp(oid, ec_oid, oid_len) == 0) {
        if (wc_ecc_init(&k->u.ecc) != 0)
            goto out;
        k->type = ECC_TYPE;
        if (wc_EccPublicKeyDecode(spki, &idx, &k->u.ecc, (word32)len) == 0 && idx == len &&
            wc_ecc_check_key(&k->u.ecc) == 0)
            ret = 0;
    }
out:
    if (ret == 0)
        *out = k;
    else
        key_free(k);
    return ret;
}

int mdm_x509_key_generate_der(enum mdm_x509_key_type type, uint8_t **key_der, size_t *key_len)
{
    assert(key_der && key_len);
    WC_RNG rng;
    uint8_t *der = calloc(1, KEY_DER_MAX);
    struct key *k = calloc(1, sizeof(*k));
    int ret = 0, n = -1;
    if (!der || !k) {
        free(der);
        free(k);
        return -ENOMEM;
    }
    if (wc_InitRng(&rng) != 0) {
        free(der);
        free(k);
        return MDM_ECRYPTO;
    }
    switch (type) {
    case MDM_X509_KEY_EC_P256:
    case MDM_X509_KEY_EC_P384: {
        bool p256 = type == MDM_X509_KEY_EC_P256;
        if (wc_ecc_init(&k->u.ecc) != 0) {
            ret = MDM_ECRYPTO;
            break;
        }
        k->type = ECC_TYPE;
        if (wc_ecc_make_key_ex(&rng, p256 ? 32 : 48, &k->u.ecc,
                               p256 ? ECC_SECP256R1 : ECC_SECP384R1) == 0)
            n = wc_EccKeyToDer(&k->u.ecc, der, KEY_DER_MAX);
        break;
    }
    case MDM_X509_KEY_RSA_2048:
    case MDM_X509_KEY_RSA_3072:
        if (wc_InitRsaKey(&k->u.rsa, NULL) != 0) {
            ret = MDM_ECRYPTO;
            break;
        }
        k->type = RSA_TYPE;
        if (wc_MakeRsaKey(&k->u.rsa, type == MDM_X509_KEY_RSA_2048 ? 2048 : 3072,
                          WC_RSA_EXPONENT, &rng) == 0)
            n = wc_RsaKeyToDer(&k->u.rsa, der, KEY_DER_MAX);
        break;
    default:
        ret = -EINVAL;
        break;
    }
    if (ret == 0 && n <= 0)
        ret = MDM_ECRYPTO;
    key_free(k);
    wc_FreeRng(&rng);
    if (ret != 0) {
        mdm_free_wiped(der, KEY_DER_MAX);
        return ret;
    }
    uint8_t *exact = malloc((size_t)n);
    if (exact)
        memcpy(exact, der, (size_t)n);
    mdm_free_wiped(der, KEY_DER_MAX);
    if (!exact)
        return -ENOMEM;
    *key_der = exact;
    *key_len = (size_t)n;
    return 0;
}

int mdm_x509_key_public_der(const uint8_t *key_der, size_t key_len, uint8_t **spki,
                            size_t *spki_len)
{
    assert(key_der && spki && spki_len);
    struct key *k = NULL;
    int ret = key_load_der(key_der, key_len, &k);
    if (ret != 0)
        return ret;
    uint8_t *out = malloc(KEY_DER_MAX);
    if (!out) {
        key_free(k);
        return -ENOMEM;
    }
    int n = key_spki(k, out, KEY_DER_MAX);
    key_free(k);
    if (n <= 0) {
        free(out);
        return MDM_ECRYPTO;
    }
    *spki = out;
    *spki_len = (size_t)n;
    return 0;
}

int mdm_x509_make_self_signed_der(const uint8_t *key_der, size_t key_len,
                                  const mdm_x509_spec_t *spec, uint8_t **cert_der,
                                  size_t *cert_len)
{
    assert(key_der && spec && cert_der && cert_len);
    struct key *k = NULL;
    int ret = key_load_der(key_der, key_len, &k);
    if (ret != 0)
        return ret;
    ret = make_cert_der(spec, k, k, NULL, 0, cert_der, cert_len);
    key_free(k);
    return ret;
}

int mdm_x509_issue_der(const uint8_t *ca_key_der, size_t ca_key_len, const uint8_t *ca_cert_der,
                       size_t ca_cert_len, const uint8_t *spki_der, size_t spki_len,
                       const mdm_x509_spec_t *spec, uint8_t **cert_der, size_t *cert_len)
{
    assert(ca_key_der && ca_cert_der && (spki_der || spki_len == 0) && spec && cert_der &&
           cert_len);
    struct key *ca = NULL, *subj = NULL;
    int ret;
    if (ca_cert_len == 0 || ca_cert_len > FILE_MAX)
        return MDM_ECERT;
    if ((ret = key_load_der(ca_key_der, ca_key_len, &ca)) != 0 ||
        (ret = key_load_spki(spki_der, spki_len, &subj)) != 0)
        goto out;
    if ((ret = check_ca_key(ca_cert_der, ca_cert_len, ca)) != 0)
        goto out;
    ret = make_cert_der(spec, subj, ca, ca_cert_der, ca_cert_len, cert_der, cert_len);
out:
    key_free(ca);
    key_free(subj);
    return ret;
}

/* True when s only uses the PrintableString alphabet (X.680 41.4). */
static bool printable_string(const char *s)
{
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr(" '()+,-./:=?", c)))
            return false;
    }
    return true;
}

int mdm_x509_make_csr_der(const uint8_t *key_der, size_t key_len, const char *common_name,
                          const char *organization, const char *challenge, uint8_t **csr_der,
                          size_t *csr_len)
{
    assert(key_der && common_name && csr_der && csr_len);
    struct key *k = NULL;
    Cert *req = NULL;
    uint8_t *der = NULL;
    WC_RNG rng;
    bool rng_ok = false;
    int ret = key_load_der(key_der, key_len, &k);
    if (ret != 0)
        return ret;
    req = calloc(1, sizeof(*req));
    der = malloc(CERT_DER_MAX);
    if (!req || !der) {
        ret = -ENOMEM;
        goto out;
    }
    if (wc_InitCert(req) != 0) {
        ret = MDM_ECERT;
        goto out;
    }
    req->version = 0; /* PKCS#10 v1 */
    if ((ret = set_name(req->subject.commonName, &req->subject.commonNameEnc, common_name)) != 0)
        goto out;
    if (organization &&
        (ret = set_name(req->subject.org, &req->subject.orgEnc, organization)) != 0)
        goto out;
    if (challenge) {
        size_t n = strlen(challenge);
        if (n == 0 || n >= sizeof(req->challengePw)) {
            ret = -EINVAL;
            goto out;
        }
        memcpy(req->challengePw, challenge, n + 1);
        req->challengePwPrintableString = printable_string(challenge) ? 1 : 0; /* else UTF8 */
    }
    req->sigType = sig_type(k->type, MDM_X509_HASH_SHA256);
    if (wc_InitRng(&rng) != 0) {
        ret = MDM_ECRYPTO;
        goto out;
    }
    rng_ok = true;
    int n = wc_MakeCertReq_ex(req, der, CERT_DER_MAX, k->type, &k->u);
    if (n <= 0) {
        ret = MDM_ECERT;
        goto out;
    }
    n = wc_SignCert_ex(req->bodySz, req->sigType, der, CERT_DER_MAX, k->type, &k->u, &rng);
    if (n <= 0) {
        ret = MDM_ECRYPTO;
        goto out;
    }
    uint8_t *shrunk = realloc(der, (size_t)n);
    *csr_der = shrunk ? shrunk : der;
    *csr_len = (size_t)n;
    der = NULL;
out:
    if (req)
        explicit_bzero(req->challengePw, sizeof(req->challengePw));
    free(req);
    free(der);
    key_free(k);
    if (rng_ok)
        wc_FreeRng(&rng);
    return ret;
}
