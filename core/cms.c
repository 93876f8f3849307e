/*
 * CMS SignedData (detached or encapsulating its content), EnvelopedData, trust anchors and
 * base64 on wolfSSL/wolfCrypt.
 *
 * Design:
 * - Verification hands the detached content to wc_PKCS7_VerifySignedData through
 *   PKCS7.content. wolfCrypt 5.5 then has two behaviours we must not inherit:
 *   - a SignedData that encapsulates its own content is verified over *that* content and
 *     the detached bytes are ignored, so afterwards the content wolfCrypt verified is compared
 *     with the caller's bytes;
 *   - a "degenerate" SignedData (certificates, no SignerInfo) verifies as success unless
 *     wc_PKCS7_AllowDegenerate(p7, 0) is set.
 *   The signer is the certificate whose key verified the signature (PKCS7.verifyCert), not
 *   simply the first certificate of the bag.
 * - Encapsulated content (signed profiles) is verified by the same call without detached
 *   content; a SignedData without eContent then leaves PKCS7.content empty, which is refused.
 * - Signing: one function for both forms. Extra certificates (the signer's chain) are handed
 *   to wolfCrypt by pointer (wc_PKCS7_AddCertificate does not copy), so they live until
 *   wc_PKCS7_Free.
 * - Trust: one wolfSSL CertManager per trusted certificate. Verifying against each tells
 *   which anchor signed the certificate, so the dates of exactly that anchor can be checked.
 *   wolfSSL checks dates against the wall clock and reports a date error only after the
 *   signature verified (ParseCertRelative keeps badDate until the end), so a date error from
 *   wolfSSL means "signed by this anchor"; the dates themselves are then judged at the
 *   caller's now. CertManagers lock their CA table internally, so one loaded set serves many
 *   threads.
 * - EnvelopedData (RSA key transport, AES-256-CBC) through wc_PKCS7_{En,De}codeEnvelopedData.
 *   wolfCrypt 5.5 quirks:
 *   - wc_PKCS7_EncodeEnvelopedData adds the InitWithCert certificate as a KTRI recipient by
 *     itself; adding it with wc_PKCS7_AddRecipient_KTRI as well makes two RecipientInfos;
 *   - the decoder does not match recipients: it decrypts whichever it meets with our key
 *     (RSA errors for someone else's), and fails on any EnvelopedData with more than one
 *     RecipientInfo. So we look for our issuer and serial (or key identifier) ourselves;
 *   - the CBC pad length is taken from the last byte unchecked: a changed ciphertext may come
 *     back shorter instead of failing. EnvelopedData has no integrity of its own anyway;
 *     whoever needs it gets it from a signature or the channel.
 * - Base64 is strict (one canonical text per byte string) so that a signature header has
 *   exactly one accepted spelling.
 *
 * Invariants: private keys are wiped from our buffers before they are freed.
 * Threads: reentrant; a mdm_cms_trust_t is immutable after mdm_cms_trust_load().
 */
#include "core/cms.h"

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/pkcs7.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/file.h"
#include "core/log.h"
#include "core/tls.h"
#include "core/x509.h"

#define LOG_MOD "cms"
#define FILE_MAX (1024 * 1024)     /* largest key or certificate file we read */
#define SIGNED_OVERHEAD 8192       /* SignedData bytes besides the certificate */
#define ENVELOPE_OVERHEAD 1024     /* EnvelopedData bytes besides content and certificate */



/* ---- base64 ---------------------------------------------------------------------------- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Decoding table: 0..63 for the alphabet, B64_SPACE, B64_PAD, B64_BAD for the rest. */
enum { B64_BAD = 0xff, B64_SPACE = 0xfe, B64_PAD = 0xfd };
static uint8_t b64_table[256];
static pthread_once_t b64_once = PTHREAD_ONCE_INIT;

static void b64_table_init(void)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(b64_table, B64_BAD, sizeof(b64_table));
    for (unsigned i = 0; i < 64; i++)
        b64_table[(unsigned char)alphabet[i]] = (uint8_t)i;
    b64_table[' '] = b64_table['\t'] = b64_table['\r'] = b64_table['\n'] = B64_SPACE;
    b64_table['='] = B64_PAD;
}

int mdm_base64_decode(const char *in, size_t len, mdm_buf_t *out)
{
    assert((in || len == 0) && out);
    pthread_once(&b64_once, b64_table_init);
    /* Pass 1: validate and size, so that out is untouched on failure. */
    size_t n = 0, pad = 0;
    unsigned last = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned v = b64_table[(unsigned char)in[i]];
        if (v < 64) {
            if (pad > 0)
                return -EINVAL; /* data after padding */
            last = v;
        } else if (v == B64_PAD) {
            if (++pad > 2)
                return -EINVAL;
        } else if (v == B64_SPACE) {
            continue;
        } else {
            return -EINVAL;
        }
        n++;
    }
    if (n % 4 != 0)
        return -EINVAL;
    if ((pad == 1 && (last & 0x03) != 0) || (pad == 2 && (last & 0x0f) != 0))
        return -EINVAL; /* non-zero unused bits: a second spelling of the same bytes */
    size_t out_len = n / 4 * 3 - pad;
    if (out_len == 0)
        return 0;
    int ret = mdm_buf_reserve(out, out_len);
    if (ret != 0)
        return ret;
    /* Pass 2: decode (valid input: every byte is a digit, padding or space). */
    uint8_t *dst = mdm_buf_tail(out);
    size_t w = 0;
    uint32_t acc = 0;
    unsigned got = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned v = b64_table[(unsigned char)in[i]];
        if (v == B64_SPACE)
            continue;
        acc = acc << 6 | (v < 64 ? v : 0);
        if (++got == 4) {
            uint8_t group[3] = {(uint8_t)(acc >> 16), (uint8_t)(acc >> 8), (uint8_t)acc};
            for (unsigned k = 0; k < 3 && w < out_len; k++)
                dst[w++] = group[k];
            acc = 0;
            got = 0;
        }
    }
    assert(w == out_len);
    mdm_buf_commit(out, out_len);
    return 0;
}

int mdm_base64_encode(const void *data, size_t len, mdm_buf_t *out)
{
    assert((data || len == 0) && out);
    if (len == 0)
        return 0;
    if (len > (SIZE_MAX / 4) * 3 - 3)
        return MDM_ETOOBIG;
    size_t out_len = (len + 2) / 3 * 4;
    int ret = mdm_buf_reserve(out, out_len);
    if (ret != 0)
        return ret;
    const uint8_t *p = data;
    char *dst = (char *)mdm_buf_tail(out);
    size_t w = 0;
    for (size_t i = 0; i < len; i += 3) {
        size_t rem = len - i;
        uint32_t v = (uint32_t)p[i] << 16;
        if (rem > 1)
            v |= (uint32_t)p[i + 1] << 8;
        if (rem > 2)
            v |= p[i + 2];
        dst[w++] = b64_alphabet[v >> 18 & 0x3f];
        dst[w++] = b64_alphabet[v >> 12 & 0x3f];
        dst[w++] = rem > 1 ? b64_alphabet[v >> 6 & 0x3f] : '=';
        dst[w++] = rem > 2 ? b64_alphabet[v & 0x3f] : '=';
    }
    mdm_buf_commit(out, out_len);
    return 0;
}

/* ---- files ----------------------------------------------------------------------------- */

/* DER of a private key file (PEM or DER), malloc'ed; *key_oid is ECDSAk or RSAk. */
static int read_key_der(const char *path, uint8_t **der, size_t *len, int *key_oid)
{
    uint8_t *file = NULL, *out = NULL;
    size_t file_len = 0, out_len = 0;
    int ret = mdm_file_read(path, FILE_MAX, &file, &file_len);
    if (ret != 0)
        return ret;
    if (strstr((const char *)file, "-----BEGIN")) {
        out = malloc(file_len);
        if (!out) {
            ret = -ENOMEM;
            goto out;
        }
        int n = wc_KeyPemToDer(file, (int)file_len, out, (int)file_len, NULL);
        if (n <= 0) {
            ret = MDM_ECRYPTO;
            goto out;
        }
        out_len = (size_t)n;
    } else {
        out = file;
        out_len = file_len;
        file = NULL;
    }
    ret = MDM_ECRYPTO;
    word32 idx = 0;
    ecc_key ecc;
    if (wc_ecc_init(&ecc) == 0) {
        int r = wc_EccPrivateKeyDecode(out, &idx, &ecc, (word32)out_len);
        wc_ecc_free(&ecc);
        if (r == 0) {
            *key_oid = ECDSAk;
            ret = 0;
            goto out;
        }
    }
    idx = 0;
    RsaKey rsa;
    if (wc_InitRsaKey(&rsa, NULL) == 0) {
        int r = wc_RsaPrivateKeyDecode(out, &idx, &rsa, (word32)out_len);
        wc_FreeRsaKey(&rsa);
        if (r == 0) {
            *key_oid = RSAk;
            ret = 0;
        }
    }
out:
    mdm_free_wiped(file, file_len);
    if (ret == 0) {
        *der = out;
        *len = out_len;
    } else {
        mdm_free_wiped(out, out_len);
    }
    return ret;
}

typedef int (*cert_fn)(void *ctx, const char *path, const uint8_t *der, size_t len);

/*
 * Calls fn for every certificate of the file path, in file order: each CERTIFICATE block of a
 * PEM file, or the whole file when it is not PEM (then a single DER certificate, which fn
 * judges). Problems with the file are logged with its name.
 * Returns 0; the first non-zero code of fn; MDM_ECERT when a block is not valid PEM or a PEM
 * file holds no certificate; -ENOMEM; MDM_ETOOBIG or -errno from reading.
 */
static int each_cert(const char *path, cert_fn fn, void *ctx)
{
    uint8_t *file = NULL, *der = NULL;
    size_t file_len = 0;
    int ret = mdm_file_read(path, FILE_MAX, &file, &file_len);
    if (ret != 0) {
        mdm_error(LOG_MOD, "%s: %s", path, mdm_strerror(ret));
        return ret;
    }
    static const char begin[] = "-----BEGIN CERTIFICATE-----";
    static const char end[] = "-----END CERTIFICATE-----";
    const char *text = (const char *)file; /* NUL-terminated by mdm_file_read */
    if (!strstr(text, "-----BEGIN")) {
        ret = fn(ctx, path, file, file_len);
        goto out;
    }
    if (!(der = malloc(file_len))) {
        ret = -ENOMEM;
        goto out;
    }
    size_t found = 0;
    for (const char *p = strstr(text, begin); p; p = strstr(p, begin)) {
        const char *e = strstr(p, end);
        if (!e)
            break;
        e += sizeof(end) - 1;
        int n = wc_CertPemToDer((const unsigned char *)p, (int)(e - p), der, (int)file_len,
                                CERT_TYPE);
        p = e;
        if (n <= 0) {
            mdm_error(LOG_MOD, "%s: certificate %zu is not valid PEM", path, found + 1);
            ret = MDM_ECERT;
            goto out;
        }
        if ((ret = fn(ctx, path, der, (size_t)n)) != 0)
            goto out;
        found++;
    }
    if (found == 0) {
        mdm_error(LOG_MOD, "%s: no certificate", path);
        ret = MDM_ECERT;
    }
out:
    free(file);
    free(der);
    return ret;
}

/* ---- SignedData ------------------------------------------------------------------------ */

/* One place that maps wolfCrypt's PKCS#7 verification codes. */
static int map_verify_error(int r)
{
    switch (r) {
    case SIG_VERIFY_E:       /* signature or message digest mismatch */
    case ASN_SIG_CONFIRM_E:
    case PKCS7_NO_SIGNER_E:  /* no SignerInfo: nothing signed these bytes */
    case BAD_PADDING_E:      /* RSA signature block */
    case RSA_BUFFER_E:
    case ECC_OUT_OF_RANGE_E: /* ECDSA r or s out of range */
    case ASN_SIG_HASH_E:     /* unsupported digest or signature algorithms */
    case ASN_SIG_KEY_E:
    case ASN_SIG_OID_E:
    case HASH_TYPE_E:
        return MDM_ECRYPTO;
    case PKCS7_SIGNEEDS_CHECK: /* a signature, but no certificate to check it with */
        return MDM_ECERT;
    case MEMORY_E:
        return -ENOMEM;
    default:
        return -EBADMSG;
    }
}

/*
 * Runs wolfCrypt's verification of der, handing it content as the detached content (NULL for
 * none). On success *out is the PKCS7 that verified (the caller frees it with wc_PKCS7_Free):
 * its content/contentSz are the bytes the signature covers (the encapsulated content when
 * der has one, else ours) and verifyCert is the certificate whose key verified the signature.
 */
static int verify_signed(const uint8_t *der, size_t der_len, const void *content,
                         size_t content_len, PKCS7 **out)
{
    if (der_len == 0)
        return -EBADMSG;
    if (der_len > UINT32_MAX || content_len > UINT32_MAX)
        return MDM_ETOOBIG;
    PKCS7 *p7 = wc_PKCS7_New(NULL, INVALID_DEVID);
    if (!p7)
        return -ENOMEM;
    int ret;
    if (wc_PKCS7_InitWithCert(p7, NULL, 0) != 0) {
        ret = -ENOMEM;
        goto out;
    }
    wc_PKCS7_AllowDegenerate(p7, 0);
    /* wolfCrypt only reads both buffers (it copies what it keeps); its API is not const. */
    p7->content = (byte *)(uintptr_t)content;
    p7->contentSz = (word32)content_len;
    int r = wc_PKCS7_VerifySignedData(p7, (byte *)(uintptr_t)der, (word32)der_len);
    ret = r == 0 ? 0 : map_verify_error(r);
out:
    if (ret == 0)
        *out = p7;
    else
        wc_PKCS7_Free(p7);
    return ret;
}

int mdm_cms_verify_detached(const uint8_t *der, size_t der_len, const void *content,
                            size_t content_len, mdm_buf_t *signer_cert_der)
{
    assert((der || der_len == 0) && (content || content_len == 0) && signer_cert_der);
    PKCS7 *p7 = NULL;
    int ret = verify_signed(der, der_len, content, content_len, &p7);
    if (ret != 0)
        return ret;
    /* The content wolfCrypt verified: ours if detached, the encapsulated one otherwise. */
    if (p7->contentSz != content_len ||
        (content_len > 0 && (!p7->content || memcmp(p7->content, content, content_len) != 0))) {
        ret = MDM_ECRYPTO;
        goto out;
    }
    if (!p7->verifyCert || p7->verifyCertSz == 0) {
        ret = MDM_ECERT;
        goto out;
    }
    ret = mdm_buf_append(signer_cert_der, p7->verifyCert, p7->verifyCertSz);
out:
    wc_PKCS7_Free(p7);
    return ret;
}

int mdm_cms_verify_attached(const uint8_t *der, size_t der_len, mdm_buf_t *content_out,
                            mdm_buf_t *signer_cert_der)
{
    assert((der || der_len == 0) && content_out && signer_cert_der);
    PKCS7 *p7 = NULL;
    int ret = verify_signed(der, der_len, NULL, 0, &p7);
    if (ret != 0)
        return ret;
    /* A detached SignedData verified against no content would leave nothing here. */
    if (!p7->content || p7->contentSz == 0) {
        ret = -EBADMSG;
        goto out;
    }
    if (!p7->verifyCert || p7->verifyCertSz == 0) {
        ret = MDM_ECERT;
        goto out;
    }
    size_t before = content_out->len;
    if ((ret = mdm_buf_append(content_out, p7->content, p7->contentSz)) != 0)
        goto out;
    if ((ret = mdm_buf_append(signer_cert_der, p7->verifyCert, p7->verifyCertSz)) != 0)
        content_out->len = before; /* both unchanged on failure */
out:
    wc_PKCS7_Free(p7);
    return ret;
}

/* Certificates that go into a SignedData besides the signer's. */
struct extra_certs {
    const uint8_t *signer; /* skipped when met again */
    size_t signer_len;
    size_t n;
    size_t total; /* bytes in der[0..n) */
    uint8_t *der[MDM_CMS_EXTRA_CERTS_MAX];
    size_t len[MDM_CMS_EXTRA_CERTS_MAX];
};

static int extra_fn(void *ctx, const char *path, const uint8_t *der, size_t len)
{
    struct extra_certs *x = ctx;
    if (len == x->signer_len && memcmp(der, x->signer, len) == 0)
        return 0;
    mdm_x509_info_t *info = malloc(sizeof(*info));
    if (!info)
        return -ENOMEM;
    int ok = mdm_x509_inspect_der(der, len, info) == 0;
    free(info);
    if (!ok) {
        mdm_error(LOG_MOD, "%s: a certificate cannot be parsed", path);
        return MDM_ECERT;
    }
    if (x->n == MDM_CMS_EXTRA_CERTS_MAX) {
        mdm_error(LOG_MOD, "%s: more than %d certificates", path, MDM_CMS_EXTRA_CERTS_MAX);
        return MDM_ETOOBIG;
    }
    if (!(x->der[x->n] = malloc(len)))
        return -ENOMEM;
    memcpy(x->der[x->n], der, len);
    x->len[x->n++] = len;
    x->total += len;
    return 0;
}

int mdm_cms_sign(const char *key_pem_path, const char *cert_pem_path,
                 const char *extra_certs_path, const void *content, size_t len,
                 enum mdm_cms_content mode, mdm_buf_t *der_out)
{
    assert(key_pem_path && cert_pem_path && (content || len == 0) && der_out);
    assert(mode == MDM_CMS_DETACHED || mode == MDM_CMS_ENCAPSULATED);
    if (len > UINT32_MAX)
        return MDM_ETOOBIG;
    uint8_t *key = NULL, *cert = NULL, *sig = NULL;
    size_t key_len = 0, cert_len = 0;
    int key_oid = 0;
    struct extra_certs extra = {0};
    PKCS7 *p7 = NULL;
    WC_RNG rng;
    bool rng_ok = false;
    int ret = read_key_der(key_pem_path, &key, &key_len, &key_oid);
    if (ret != 0)
        goto out;
    if ((ret = mdm_x509_read_cert_der(cert_pem_path, &cert, &cert_len)) != 0)
        goto out;
    extra.signer = cert;
    extra.signer_len = cert_len;
    if (extra_certs_path && (ret = each_cert(extra_certs_path, extra_fn, &extra)) != 0)
        goto out;
    /* Certificates are below FILE_MAX each, so fixed cannot wrap; wolfCrypt counts in 32 bits. */
    size_t fixed = SIGNED_OVERHEAD + cert_len + extra.total;
    size_t body = mode == MDM_CMS_ENCAPSULATED ? len : 0;
    if (fixed > UINT32_MAX || body > UINT32_MAX - fixed) {
        ret = MDM_ETOOBIG;
        goto out;
    }
    size_t sig_cap = fixed + body;
    if (!(sig = malloc(sig_cap))) {
        ret = -ENOMEM;
        goto out;
    }
    if (wc_InitRng(&rng) != 0) {
        ret = MDM_ECRYPTO;
        goto out;
    }
    rng_ok = true;
    if (!(p7 = wc_PKCS7_New(NULL, INVALID_DEVID))) {
        ret = -ENOMEM;
        goto out;
    }
    if (wc_PKCS7_InitWithCert(p7, cert, (word32)cert_len) != 0) {
        ret = MDM_ECERT;
        goto out;
    }
    /* wolfCrypt keeps pointers to the certificates (not copies) until wc_PKCS7_Free. */
    for (size_t i = 0; i < extra.n; i++) {
        if (wc_PKCS7_AddCertificate(p7, extra.der[i], (word32)extra.len[i]) != 0) {
            ret = -ENOMEM;
            goto out;
        }
    }
    p7->rng = &rng;
    p7->privateKey = key;
    p7->privateKeySz = (word32)key_len;
    p7->encryptOID = key_oid;
    p7->hashOID = SHA256h;
    p7->content = (byte *)(uintptr_t)content; /* read only */
    p7->contentSz = (word32)len;
    if (mode == MDM_CMS_DETACHED && wc_PKCS7_SetDetached(p7, 1) != 0) {
        ret = MDM_ECRYPTO;
        goto out;
    }
    int n = wc_PKCS7_EncodeSignedData(p7, sig, (word32)sig_cap);
    if (n <= 0) {
        mdm_debug(LOG_MOD, "wc_PKCS7_EncodeSignedData: %d", n);
        ret = MDM_ECRYPTO;
        goto out;
    }
    ret = mdm_buf_append(der_out, sig, (size_t)n);
out:
    if (p7) {
        p7->privateKey = NULL; /* ours, wiped below */
        p7->rng = NULL;
        wc_PKCS7_Free(p7);
    }
    if (rng_ok)
        wc_FreeRng(&rng);
    mdm_free_wiped(key, key_len);
    free(cert);
    free(sig);
    for (size_t i = 0; i < extra.n; i++)
        free(extra.der[i]);
    return ret;
}

int mdm_cms_sign_detached(const char *key_pem_path, const char *cert_pem_path,
                          const void *content, size_t len, mdm_buf_t *der_out)
{
    return mdm_cms_sign(key_pem_path, cert_pem_path, NULL, content, len, MDM_CMS_DETACHED,
                        der_out);
}

/* ---- EnvelopedData --------------------------------------------------------------------- */

/* One place that maps wolfCrypt's EnvelopedData decoding codes. */
static int map_envelope_error(int r)
{
    switch (r) {
    case PKCS7_RECIP_E: /* no RecipientInfo for our certificate */
    case PKCS7_OID_E:   /* another content type, e.g. a SignedData */
        return -EBADMSG;
    case RSA_BUFFER_E: /* what 5.5 reports for a bad RSA block: a changed wrapped key */
    case RSA_OUT_OF_RANGE_E:
    case BAD_PADDING_E:
    case RSA_PAD_E:
    case WC_KEY_SIZE_E:
    case ALGO_ID_E: /* an algorithm wolfCrypt does not have */
        return MDM_ECRYPTO;
    case MEMORY_E:
        return -ENOMEM;
    default: /* ASN parse errors, WC_PKCS7_WANT_READ_E for truncated input, ... */
        return -EBADMSG;
    }
}

/* True when the serial INTEGER at p (at most n bytes) holds the serial wolfCrypt took from the
 * certificate (its bytes without tag and length; DER may add one leading zero byte). */
static bool serial_at(const uint8_t *p, size_t n, const uint8_t *sn, size_t sn_len)
{
    if (n < 2 || p[0] != 0x02 || p[1] > n - 2 || p[1] > 0x7f)
        return false;
    const uint8_t *v = p + 2;
    size_t v_len = p[1];
    if (v_len == sn_len + 1 && v[0] == 0) {
        v++;
        v_len--;
    }
    return v_len == sn_len && memcmp(v, sn, sn_len) == 0;
}

/*
 * True when der names p7's certificate as a recipient: its issuer Name followed by its serial
 * (IssuerAndSerialNumber), or its subject key identifier ([0] IMPLICIT OCTET STRING). A byte
 * search, not a parse: wolfCrypt 5.5 decrypts whatever recipient it meets, so this check is
 * what tells "not for us" from a damaged key. A false match only lets wolfCrypt fail later.
 */
static bool names_recipient(const PKCS7 *p7, const uint8_t *der, size_t len)
{
    uint8_t skid[2 + KEYID_SIZE] = {0x80, KEYID_SIZE};
    memcpy(skid + 2, p7->issuerSubjKeyId, KEYID_SIZE);
    if (memmem(der, len, skid, sizeof(skid)))
        return true;
    if (!p7->issuer || p7->issuerSz == 0)
        return false;
    const uint8_t *end = der + len;
    for (const uint8_t *p = der; p < end; p++) {
        p = memmem(p, (size_t)(end - p), p7->issuer, p7->issuerSz);
        if (!p)
            return false;
        const uint8_t *after = p + p7->issuerSz;
        if (serial_at(after, (size_t)(end - after), p7->issuerSn, p7->issuerSnSz))
            return true;
    }
    return false;
}

int mdm_cms_envelope(const uint8_t *cert_der, size_t cert_len, const void *data, size_t len,
                     mdm_buf_t *der_out)
{
    assert((cert_der || cert_len == 0) && data && len > 0 && der_out);
    if (cert_len == 0 || cert_len > FILE_MAX)
        return MDM_ECERT;
    /* The RecipientInfo (issuer, serial, wrapped key) is smaller than the certificate. */
    size_t fixed = ENVELOPE_OVERHEAD + cert_len;
    if (len > UINT32_MAX - fixed)
        return MDM_ETOOBIG;
    size_t cap = fixed + len;
    uint8_t *env = malloc(cap);
    if (!env)
        return -ENOMEM;
    WC_RNG rng;
    if (wc_InitRng(&rng) != 0) {
        free(env);
        return MDM_ECRYPTO;
    }
    int ret;
    PKCS7 *p7 = wc_PKCS7_New(NULL, INVALID_DEVID);
    if (!p7) {
        ret = -ENOMEM;
        goto out;
    }
    /* wolfCrypt reads the certificate only; its API is not const. */
    byte *cert = (byte *)(uintptr_t)cert_der;
    if (wc_PKCS7_InitWithCert(p7, cert, (word32)cert_len) != 0 || p7->publicKeyOID != RSAk) {
        ret = MDM_ECERT;
        goto out;
    }
    p7->rng = &rng;
    p7->content = (byte *)(uintptr_t)data; /* read only */
    p7->contentSz = (word32)len;
    p7->contentOID = DATA;
    p7->encryptOID = AES256CBCb;
    /* The recipient is the InitWithCert certificate: wolfCrypt adds its KTRI by itself. */
    int n = wc_PKCS7_EncodeEnvelopedData(p7, env, (word32)cap);
    if (n <= 0) {
        mdm_debug(LOG_MOD, "wc_PKCS7_EncodeEnvelopedData: %d", n);
        ret = n == MEMORY_E ? -ENOMEM : MDM_ECRYPTO;
        goto out;
    }
    ret = mdm_buf_append(der_out, env, (size_t)n);
out:
    if (p7) {
        p7->rng = NULL;
        wc_PKCS7_Free(p7);
    }
    wc_FreeRng(&rng);
    free(env);
    return ret;
}

/* The RSA private key (DER, wiped by the caller) and the certificate it belongs to. */
static int load_recipient(const char *key_path, const char *cert_path, uint8_t **key,
                          size_t *key_len, uint8_t **cert, size_t *cert_len)
{
    int key_oid = 0;
    int ret = read_key_der(key_path, key, key_len, &key_oid);
    if (ret != 0)
        return ret;
    if (key_oid != RSAk)
        return MDM_ECRYPTO;
    if ((ret = mdm_x509_read_cert_der(cert_path, cert, cert_len)) != 0)
        return ret;
    /* A key that is not the certificate's would fail RSA unpadding only most of the time. */
    return mdm_x509_key_matches(*cert, *cert_len, *key, *key_len);
}

int mdm_cms_open_envelope(const char *key_pem_path, const char *cert_pem_path,
                          const uint8_t *der, size_t len, mdm_buf_t *plain_out)
{
    assert(key_pem_path && cert_pem_path && (der || len == 0) && plain_out);
    if (len == 0)
        return -EBADMSG;
    if (len > UINT32_MAX)
        return MDM_ETOOBIG;
    uint8_t *key = NULL, *cert = NULL, *plain = NULL;
    size_t key_len = 0, cert_len = 0;
    PKCS7 *p7 = NULL;
    WC_RNG rng;
    bool rng_ok = false;
    int ret = load_recipient(key_pem_path, cert_pem_path, &key, &key_len, &cert, &cert_len);
    if (ret != 0)
        goto out;
    /* The plaintext is shorter than the EnvelopedData around it. */
    if (!(plain = malloc(len))) {
        ret = -ENOMEM;
        goto out;
    }
    if (wc_InitRng(&rng) != 0) { /* RSA blinding needs one */
        ret = MDM_ECRYPTO;
        goto out;
    }
    rng_ok = true;
    if (!(p7 = wc_PKCS7_New(NULL, INVALID_DEVID))) {
        ret = -ENOMEM;
        goto out;
    }
    if (wc_PKCS7_InitWithCert(p7, cert, (word32)cert_len) != 0) {
        ret = MDM_ECERT;
        goto out;
    }
    if (!names_recipient(p7, der, len)) {
        ret = -EBADMSG;
        goto out;
    }
    p7->rng = &rng;
    p7->privateKey = key;
    p7->privateKeySz = (word32)key_len;
    /* wolfCrypt only reads der; its API is not const. */
    int n = wc_PKCS7_DecodeEnvelopedData(p7, (byte *)(uintptr_t)der, (word32)len, plain,
                                         (word32)len);
    if (n < 0) {
        mdm_debug(LOG_MOD, "wc_PKCS7_DecodeEnvelopedData: %d", n);
        ret = map_envelope_error(n);
        goto out;
    }
    ret = mdm_buf_append(plain_out, plain, (size_t)n);
out:
    if (p7) {
        p7->privateKey = NULL; /* ours, wiped below */
        p7->rng = NULL;
        wc_PKCS7_Free(p7);
    }
    if (rng_ok)
        wc_FreeRng(&rng);
    mdm_free_wiped(key, key_len);
    mdm_free_wiped(plain, len);
    free(cert);
    return ret;
}

/* ---- trust ----------------------------------------------------------------------------- */

struct anchor {
    WOLFSSL_CERT_MANAGER *cm; /* holds only this certificate */
    mdm_x509_info_t info;     /* subject and dates, for messages and validity at now */
};

struct mdm_cms_trust {
    size_t n, cap;
    struct anchor *a;
};

void mdm_cms_trust_free(mdm_cms_trust_t *trust)
{
    if (!trust)
        return;
    for (size_t i = 0; i < trust->n; i++)
        wolfSSL_CertManagerFree(trust->a[i].cm);
    free(trust->a);
    free(trust);
}

size_t mdm_cms_trust_count(const mdm_cms_trust_t *trust) { return trust->n; }

static int add_anchor(mdm_cms_trust_t *t, const char *path, const uint8_t *der, size_t len)
{
    if (t->n == MDM_CMS_TRUST_MAX) {
        mdm_error(LOG_MOD, "%s: more than %d trusted certificates", path, MDM_CMS_TRUST_MAX);
        return MDM_ETOOBIG;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 2;
        struct anchor *na = realloc(t->a, cap * sizeof(*na));
        if (!na)
            return -ENOMEM;
        t->a = na;
        t->cap = cap;
    }
    struct anchor *a = &t->a[t->n];
    if (mdm_x509_inspect_der(der, len, &a->info) != 0) {
        mdm_error(LOG_MOD, "%s: certificate %zu cannot be parsed", path, t->n + 1);
        return MDM_ECERT;
    }
    if (!a->info.is_ca) {
        mdm_error(LOG_MOD, "%s: %s is not a CA certificate", path, a->info.subject);
        return MDM_ECERT;
    }
    if (!(a->cm = wolfSSL_CertManagerNew()))
        return -ENOMEM;
    t->n++; /* owned by t from here on */
    int r = wolfSSL_CertManagerLoadCABuffer(a->cm, der, (long)len, WOLFSSL_FILETYPE_ASN1);
    if (r != WOLFSSL_SUCCESS) {
        mdm_error(LOG_MOD, "%s: %s cannot be trusted (wolfSSL %d)", path, a->info.subject, r);
        return MDM_ECERT;
    }
    return 0;
}

static int anchor_fn(void *ctx, const char *path, const uint8_t *der, size_t len)
{
    return add_anchor(ctx, path, der, len);
}

int mdm_cms_trust_load(const char *const *pem_paths, size_t n, mdm_cms_trust_t **out)
{
    assert(pem_paths && n > 0 && out);
    *out = NULL;
    int ret = mdm_tls_global_init();
    if (ret != 0)
        return ret;
    mdm_cms_trust_t *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if ((ret = each_cert(pem_paths[i], anchor_fn, t)) != 0) {
            mdm_cms_trust_free(t);
            return ret;
        }
    }
    *out = t;
    return 0;
}

static void fmt_time(int64_t t, char *buf, size_t size)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (!gmtime_r(&tt, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, size, "%lld", (long long)t);
}

/* 0 when info is valid at now, else MDM_ECERT with a reason naming what (leaf or issuer). */
static int check_dates(const mdm_x509_info_t *info, const char *what, int64_t now, char *err,
                       size_t errlen)
{
    char when[40];
    if (now < info->not_before) {
        fmt_time(info->not_before, when, sizeof(when));
        mdm_errf(err, errlen, "%s not valid before %s", what, when);
        return MDM_ECERT;
    }
    if (now > info->not_after) {
        fmt_time(info->not_after, when, sizeof(when));
        mdm_errf(err, errlen, "%s expired at %s", what, when);
        return MDM_ECERT;
    }
    return 0;
}

int mdm_cms_trust_verify(const mdm_cms_trust_t *trust, const uint8_t *cert_der, size_t len,
                         int64_t now, char *err, size_t errlen)
{
    assert(trust && (cert_der || len == 0));
    if (len == 0 || len > FILE_MAX) {
        mdm_errf(err, errlen, "certificate cannot be parsed");
        return MDM_ECERT;
    }
    mdm_x509_info_t *leaf = malloc(sizeof(*leaf));
    if (!leaf)
        return -ENOMEM;
    int ret = MDM_ECERT;
    if (mdm_x509_inspect_der(cert_der, len, leaf) != 0) {
        mdm_errf(err, errlen, "certificate cannot be parsed");
        goto out;
    }
    const struct anchor *issuer = NULL;
    int last = ASN_NO_SIGNER_E;
    for (size_t i = 0; i < trust->n && !issuer; i++) {
        /* The CertManager is only read (its CA table is locked inside wolfSSL). */
        int r = wolfSSL_CertManagerVerifyBuffer(trust->a[i].cm, cert_der, (long)len,
                                                WOLFSSL_FILETYPE_ASN1);
        if (r == WOLFSSL_SUCCESS || r == ASN_BEFORE_DATE_E || r == ASN_AFTER_DATE_E)
            issuer = &trust->a[i]; /* signature verified; dates are judged below */
        else if (r != ASN_NO_SIGNER_E)
            last = r;
    }
    if (!issuer) {
        if (last == ASN_SIG_CONFIRM_E)
            mdm_errf(err, errlen, "certificate signature does not verify (issuer %s)",
                    leaf->issuer);
        else if (last == ASN_NO_SIGNER_E)
            mdm_errf(err, errlen, "issuer not trusted (%s)", leaf->issuer);
        else
            mdm_errf(err, errlen, "certificate not accepted (wolfSSL %d)", last);
        goto out;
    }
    if ((ret = check_dates(leaf, "certificate", now, err, errlen)) != 0)
        goto out;
    char what[MDM_X509_TEXT_MAX + 32];
    snprintf(what, sizeof(what), "trusted issuer %s", issuer->info.subject);
    ret = check_dates(&issuer->info, what, now, err, errlen);
out:
    free(leaf);
    return ret;
}

int mdm_cms_cert_verify_chain(const uint8_t *cert_der, size_t len, const char *ca_pem_path,
                              int64_t now)
{
    assert(ca_pem_path);
    mdm_cms_trust_t *t = NULL;
    int ret = mdm_cms_trust_load(&ca_pem_path, 1, &t);
    if (ret != 0)
        return ret;
    ret = mdm_cms_trust_verify(t, cert_der, len, now, NULL, 0);
    mdm_cms_trust_free(t);
    return ret;
}
