/*
 * SCEP (RFC 8894) pkiMessages on wolfCrypt, server and client side.
 *
 * Design:
 * - CMS SignedData is encoded and verified here, with a small DER writer and reader, rather
 *   than with wc_PKCS7_EncodeSignedData/wc_PKCS7_VerifySignedData, because Debian's wolfSSL
 *   5.5.4:
 *   - refuses more than 4 custom signed attributes next to its 3 default ones (BUFFER_E;
 *     MAX_SIGNED_ATTRIBS_SZ is 7), and a CertRep carries 6 SCEP attributes;
 *   - cannot verify a SignedData whose content is empty or absent (BAD_FUNC_ARG), which is
 *     what every FAILURE or PENDING CertRep is.
 *   Signatures are wc_SignatureGenerate/wc_SignatureVerify (RSA PKCS#1 v1.5 over a DigestInfo,
 *   or ECDSA) over the DER SET OF signed attributes (RFC 5652 5.4), whose messageDigest
 *   attribute binds the content.
 * - EnvelopedData is wolfCrypt's: wc_PKCS7_EncodeEnvelopedData with the recipient
 *   certificate as its single KTRI recipient, wc_PKCS7_DecodeEnvelopedData with ours.
 * - The reader is strict DER (definite minimal lengths, low tag numbers) and checks every
 *   length against its parent before use, so malformed input of any kind is an error code and
 *   never a read out of bounds. A message whose outer length is indefinite (BER from a
 *   streaming encoder) is first converted with wc_BerToDer.
 * - The signature is checked before the envelope is opened, so only a message signed with
 *   the certificate it carries reaches the decryptor. That certificate proves nothing by
 *   itself (a PKCSReq's is self-signed): the challenge password, or for a RenewalReq the
 *   certificate's chain, is what the caller checks.
 *
 * Invariants: outputs appended to a caller's mdm_buf_t are built aside and appended once, so
 * a failure leaves them unchanged; challenge passwords are wiped before they are freed.
 * Threads: reentrant; each call owns its wolfCrypt RNG and keys.
 */
#include "core/scep.h"

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/pkcs7.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>
#include <wolfssl/wolfcrypt/signature.h>

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crypto.h"
#include "core/log.h"
#include "core/x509.h"

#define LOG_MOD "scep"
#define CERTS_MAX 8              /* certificates looked at in one SignedData */
#define ATTRS_OUT_MAX 10         /* signed attributes we write */
#define DW_DEPTH 12              /* nesting depth of the DER writer */
#define SIG_MAX 1024             /* RSA-4096: 512 bytes; ECDSA P-521: ~139 */
#define RSA_MIN_BYTES 256        /* moduli of 2048 bits and up */
#define ENVELOPE_OVERHEAD 4096   /* EnvelopedData bytes besides content and the issuer name */
#define TEXT_MAX 1024            /* bytes of a name or challenge we accept */

/* ---- object identifiers (contents octets) ---------------------------------------------- */

#define OID(name, ...) static const uint8_t name[] = {__VA_ARGS__}
OID(OID_DATA, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01);
OID(OID_SIGNED_DATA, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02);
OID(OID_CONTENT_TYPE, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03);
OID(OID_MESSAGE_DIGEST, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04);
OID(OID_CHALLENGE, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x07);
OID(OID_RSA, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01);
OID(OID_EC_PUBLIC_KEY, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01);
OID(OID_SHA256, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01);
OID(OID_CN, 0x55, 0x04, 0x03);
/* SCEP attributes: id-VeriSign pki attributes, 2.16.840.1.113733.1.9.n */
#define SCEP_ATTR(n) 0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x45, 0x01, 0x09, (n)
OID(OID_MESSAGE_TYPE, SCEP_ATTR(2));
OID(OID_PKI_STATUS, SCEP_ATTR(3));
OID(OID_FAIL_INFO, SCEP_ATTR(4));
OID(OID_SENDER_NONCE, SCEP_ATTR(5));
OID(OID_RECIPIENT_NONCE, SCEP_ATTR(6));
OID(OID_TRANSACTION_ID, SCEP_ATTR(7));
#undef OID

enum sig_kind { KIND_RSA, KIND_ECDSA };

/* A signature algorithm: hash NONE means "rsaEncryption: the digest algorithm decides". */
struct sig_alg {
    uint8_t oid[9];
    uint8_t oid_len;
    enum wc_HashType hash;
    enum sig_kind kind;
};

static const struct sig_alg sig_algs[] = {
    {{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01}, 9, WC_HASH_TYPE_NONE, KIND_RSA},
    {{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b}, 9, WC_HASH_TYPE_SHA256, KIND_RSA},
    {{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c}, 9, WC_HASH_TYPE_SHA384, KIND_RSA},
    {{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d}, 9, WC_HASH_TYPE_SHA512, KIND_RSA},
    {{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02}, 8, WC_HASH_TYPE_SHA256, KIND_ECDSA},
    {{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03}, 8, WC_HASH_TYPE_SHA384, KIND_ECDSA},
    {{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04}, 8, WC_HASH_TYPE_SHA512, KIND_ECDSA},
};

/* Digest algorithms; SHA-1 is not among them (we advertise SHA-256). */
struct hash_alg {
    uint8_t last; /* 2.16.840.1.101.3.4.2.<last> */
    enum wc_HashType hash;
};

static const struct hash_alg hash_algs[] = {
    {1, WC_HASH_TYPE_SHA256},
    {2, WC_HASH_TYPE_SHA384},
    {3, WC_HASH_TYPE_SHA512},
};

/* ---- DER reader -------------------------------------------------------------------------- */

/* A range of bytes being read: [p, end). */
struct dr {
    const uint8_t *p;
    const uint8_t *end;
};

static struct dr dr_of(const uint8_t *p, size_t n) { return (struct dr){p, p ? p + n : p}; }
static size_t dr_len(const struct dr *r) { return (size_t)(r->end - r->p); }
static bool dr_empty(const struct dr *r) { return r->p == r->end; }
static bool dr_peek(const struct dr *r, uint8_t tag) { return r->p < r->end && *r->p == tag; }

static bool dr_eq(const struct dr *r, const void *b, size_t n)
{
    return dr_len(r) == n && (n == 0 || memcmp(r->p, b, n) == 0);
}

static bool dr_same(const struct dr *a, const struct dr *b)
{
    return dr_eq(a, b->p, dr_len(b));
}

/*
 * Reads the next TLV of r into its tag, its value (val) and its whole encoding (tlv); either
 * may be NULL. Strict DER: definite minimal lengths (at most 3 length bytes), low tag numbers.
 * On failure r is unchanged.
 */
static bool dr_next(struct dr *r, uint8_t *tag, struct dr *val, struct dr *tlv)
{
    const uint8_t *q = r->p;
    if (r->end - q < 2)
        return false;
    uint8_t t = *q++;
    if ((t & 0x1f) == 0x1f)
        return false;
    size_t len = *q++;
    if (len & 0x80) {
        size_t nb = len & 0x7f;
        if (nb == 0 || nb > 3 || (size_t)(r->end - q) < nb || q[0] == 0)
            return false;
        len = 0;
        for (size_t i = 0; i < nb; i++)
            len = len << 8 | *q++;
        if (len < 0x80)
            return false;
    }
    if ((size_t)(r->end - q) < len)
        return false;
    *tag = t;
    if (val)
        *val = (struct dr){q, q + len};
    if (tlv)
        *tlv = (struct dr){r->p, q + len};
    r->p = q + len;
    return true;
}

/* Reads the next TLV, which must have tag; val receives its value. */
static bool dr_get(struct dr *r, uint8_t tag, struct dr *val)
{
    struct dr save = *r;
    uint8_t t;
    if (!dr_next(r, &t, val, NULL))
        return false;
    if (t != tag) {
        *r = save;
        return false;
    }
    return true;
}

/* Reads the next TLV, which must have tag; tlv receives its whole encoding. */
static bool dr_get_tlv(struct dr *r, uint8_t tag, struct dr *tlv)
{
    struct dr save = *r;
    uint8_t t;
    if (!dr_next(r, &t, NULL, tlv))
        return false;
    if (t != tag) {
        *r = save;
        return false;
    }
    return true;
}

/* ---- DER writer -------------------------------------------------------------------------- */

/* Writes TLVs into b; open constructions get their length when closed. Errors are sticky. */
struct dw {
    mdm_buf_t b;
    size_t open[DW_DEPTH]; /* offsets (from the head) of the length byte of open TLVs */
    unsigned depth;
    int err;
};

static void dw_init(struct dw *w)
{
    mdm_buf_init(&w->b, MDM_SCEP_MESSAGE_MAX);
    w->depth = 0;
    w->err = 0;
}

static void dw_bytes(struct dw *w, const void *p, size_t n)
{
    if (w->err == 0 && n > 0)
        w->err = mdm_buf_append(&w->b, p, n);
}

static void dw_open(struct dw *w, uint8_t tag)
{
    assert(w->depth < DW_DEPTH);
    uint8_t head[2] = {tag, 0};
    dw_bytes(w, head, 2);
    if (w->err == 0)
        w->open[w->depth++] = w->b.len - 1;
}

static void dw_close(struct dw *w)
{
    if (w->err != 0)
        return;
    assert(w->depth > 0);
    size_t at = w->open[--w->depth];
    size_t n = w->b.len - at - 1;
    size_t extra = n < 0x80 ? 0 : n <= 0xff ? 1 : n <= 0xffff ? 2 : 3;
    if (extra > 0) {
        if ((w->err = mdm_buf_reserve(&w->b, extra)) != 0)
            return;
        uint8_t *body = mdm_buf_head(&w->b) + at + 1;
        memmove(body + extra, body, n);
        mdm_buf_commit(&w->b, extra);
    }
    uint8_t *p = mdm_buf_head(&w->b) + at;
    if (extra == 0) {
        p[0] = (uint8_t)n;
        return;
    }
    p[0] = (uint8_t)(0x80 | extra);
    for (size_t i = 0; i < extra; i++)
        p[1 + i] = (uint8_t)(n >> (8 * (extra - 1 - i)));
}

static void dw_prim(struct dw *w, uint8_t tag, const void *v, size_t n)
{
    dw_open(w, tag);
    dw_bytes(w, v, n);
    dw_close(w);
}

/* AlgorithmIdentifier with the given OID and, when null_params, NULL parameters. */
static void dw_alg(struct dw *w, const uint8_t *oid, size_t oid_len, bool null_params)
{
    dw_open(w, 0x30);
    dw_prim(w, 0x06, oid, oid_len);
    if (null_params)
        dw_prim(w, 0x05, NULL, 0);
    dw_close(w);
}

/* Appends what w wrote to out and frees w. Returns w's error, or out's. */
static int dw_finish(struct dw *w, mdm_buf_t *out)
{
    int ret = w->err;
    assert(ret != 0 || w->depth == 0);
    if (ret == 0)
        ret = mdm_buf_append(out, mdm_buf_head(&w->b), w->b.len);
    mdm_buf_dispose(&w->b);
    return ret;
}

/* ---- certificates and keys --------------------------------------------------------------- */

/* The parts of a certificate we use; every range points into der. */
struct cert {
    struct dr der;     /* whole certificate */
    struct dr serial;  /* INTEGER TLV */
    struct dr issuer;  /* Name TLV */
    struct dr subject; /* Name TLV */
    struct dr spki;    /* SubjectPublicKeyInfo TLV */
};

static bool cert_parse(struct dr der, struct cert *c)
{
    struct dr r = der, outer, tbs, v;
    if (!dr_get(&r, 0x30, &outer) || !dr_empty(&r) || !dr_get(&outer, 0x30, &tbs))
        return false;
    if (dr_peek(&tbs, 0xa0) && !dr_get(&tbs, 0xa0, &v)) /* version */
        return false;
    if (!dr_get_tlv(&tbs, 0x02, &c->serial) || !dr_get(&tbs, 0x30, &v) /* signature */ ||
        !dr_get_tlv(&tbs, 0x30, &c->issuer) || !dr_get(&tbs, 0x30, &v) /* validity */ ||
        !dr_get_tlv(&tbs, 0x30, &c->subject) || !dr_get_tlv(&tbs, 0x30, &c->spki))
        return false;
    c->der = der;
    return true;
}

struct pubkey {
    int type; /* RSA_TYPE or ECC_TYPE; 0 when nothing is loaded */
    union {
        RsaKey rsa;
        ecc_key ecc;
    } u;
};

static void pubkey_free(struct pubkey *k)
{
    if (k->type == RSA_TYPE)
        wc_FreeRsaKey(&k->u.rsa);
    else if (k->type == ECC_TYPE)
        wc_ecc_free(&k->u.ecc);
    k->type = 0;
}

/* Loads a SubjectPublicKeyInfo: RSA of at least 2048 bits or a valid EC point. Returns 0,
 * -EOPNOTSUPP for other keys, -EBADMSG when it does not decode. */
static int pubkey_load(struct dr spki, struct pubkey *k)
{
    struct dr r = spki, seq, alg, oid;
    k->type = 0;
    if (!dr_get(&r, 0x30, &seq) || !dr_get(&seq, 0x30, &alg) || !dr_get(&alg, 0x06, &oid))
        return -EBADMSG;
    word32 idx = 0, len = (word32)dr_len(&spki);
    if (dr_eq(&oid, OID_RSA, sizeof(OID_RSA))) {
        if (wc_InitRsaKey(&k->u.rsa, NULL) != 0)
            return -ENOMEM;
        k->type = RSA_TYPE;
        if (wc_RsaPublicKeyDecode(spki.p, &idx, &k->u.rsa, len) != 0 || idx != len)
            return -EBADMSG;
        if (wc_RsaEncryptSize(&k->u.rsa) < RSA_MIN_BYTES)
            return -EOPNOTSUPP;
        return 0;
    }
    if (dr_eq(&oid, OID_EC_PUBLIC_KEY, sizeof(OID_EC_PUBLIC_KEY))) {
        if (wc_ecc_init(&k->u.ecc) != 0)
            return -ENOMEM;
        k->type = ECC_TYPE;
        if (wc_EccPublicKeyDecode(spki.p, &idx, &k->u.ecc, len) != 0 || idx != len ||
            wc_ecc_check_key(&k->u.ecc) != 0)
            return -EBADMSG;
        return 0;
    }
    return -EOPNOTSUPP;
}

/*
 * Verifies sig over data with the key in spki. Returns 0; MDM_ECRYPTO when it does not
 * verify or the key does not decode; -EOPNOTSUPP for keys we do not take or a key that does
 * not fit kind.
 */
static int sig_verify(struct dr spki, enum sig_kind kind, enum wc_HashType hash,
                      const uint8_t *data, size_t len, struct dr sig)
{
    struct pubkey k;
    int ret = pubkey_load(spki, &k);
    if (ret == 0 && (k.type == RSA_TYPE) != (kind == KIND_RSA))
        ret = -EOPNOTSUPP;
    if (ret == 0 && (dr_len(&sig) == 0 || dr_len(&sig) > SIG_MAX || len > UINT32_MAX))
        ret = MDM_ECRYPTO;
    if (ret == 0) {
        int r = k.type == RSA_TYPE
                    ? wc_SignatureVerify(hash, WC_SIGNATURE_TYPE_RSA_W_ENC, data, (word32)len,
                                         sig.p, (word32)dr_len(&sig), &k.u.rsa,
                                         sizeof(k.u.rsa))
                    : wc_SignatureVerify(hash, WC_SIGNATURE_TYPE_ECC, data, (word32)len, sig.p,
                                         (word32)dr_len(&sig), &k.u.ecc, sizeof(k.u.ecc));
        if (r == MEMORY_E)
            ret = -ENOMEM;
        else if (r != 0)
            ret = MDM_ECRYPTO;
    }
    if (ret == -EBADMSG)
        ret = MDM_ECRYPTO;
    pubkey_free(&k);
    return ret;
}

static const struct sig_alg *sig_alg_find(const struct dr *oid)
{
    for (size_t i = 0; i < MDM_ARRAY_LEN(sig_algs); i++)
        if (dr_eq(oid, sig_algs[i].oid, sig_algs[i].oid_len))
            return &sig_algs[i];
    return NULL;
}

static enum wc_HashType hash_find(const struct dr *oid)
{
    for (size_t i = 0; i < MDM_ARRAY_LEN(hash_algs); i++)
        if (dr_len(oid) == sizeof(OID_SHA256) &&
            memcmp(oid->p, OID_SHA256, sizeof(OID_SHA256) - 1) == 0 &&
            oid->p[sizeof(OID_SHA256) - 1] == hash_algs[i].last)
            return hash_algs[i].hash;
    return WC_HASH_TYPE_NONE;
}

/* ---- strings ----------------------------------------------------------------------------- */

/* Structural UTF-8 check: lead bytes and continuation bytes (no overlong 2-byte forms). */
static bool utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k;
        if (c < 0x80)
            k = 0;
        else if (c >= 0xc2 && c <= 0xdf)
            k = 1;
        else if ((c & 0xf0) == 0xe0)
            k = 2;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3;
        else
            return false;
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

/*
 * A DirectoryString-like value as a NUL-terminated UTF-8 string in *out (malloc'ed):
 * UTF8String, PrintableString, IA5String, TeletexString (ASCII only) or BMPString. Control
 * characters are refused so that names are safe to log. Returns 0, -EBADMSG or -ENOMEM.
 */
static int text_decode(uint8_t tag, struct dr v, char **out)
{
    size_t n = dr_len(&v);
    if (n > TEXT_MAX)
        return -EBADMSG;
    char *s = malloc(3 * n / 2 + 1); /* a BMP character takes 2 bytes in, at most 3 out */
    if (!s)
        return -ENOMEM;
    size_t k = 0;
    if (tag == 0x1e) { /* BMPString: UCS-2 big endian */
        if (n % 2 != 0)
            goto bad;
        for (size_t i = 0; i < n; i += 2) {
            unsigned cp = (unsigned)v.p[i] << 8 | v.p[i + 1];
            if (cp >= 0xd800 && cp <= 0xdfff)
                goto bad;
            if (cp < 0x80) {
                s[k++] = (char)cp;
            } else if (cp < 0x800) {
                s[k++] = (char)(0xc0 | cp >> 6);
                s[k++] = (char)(0x80 | (cp & 0x3f));
            } else {
                s[k++] = (char)(0xe0 | cp >> 12);
                s[k++] = (char)(0x80 | (cp >> 6 & 0x3f));
                s[k++] = (char)(0x80 | (cp & 0x3f));
            }
        }
    } else if (tag == 0x0c || tag == 0x13 || tag == 0x16 || tag == 0x14) {
        for (size_t i = 0; i < n; i++)
            if (tag != 0x0c && v.p[i] >= 0x80)
                goto bad;
        if (tag == 0x0c && !utf8_valid(v.p, n))
            goto bad;
        memcpy(s, v.p, n);
        k = n;
    } else {
        goto bad;
    }
    for (size_t i = 0; i < k; i++)
        if ((uint8_t)s[i] < 0x20 || s[i] == 0x7f)
            goto bad;
    s[k] = '\0';
    *out = s;
    return 0;
bad:
    free(s);
    return -EBADMSG;
}

/* The first commonName of a Name TLV into *cn (NULL when there is none). */
static int name_common_name(struct dr name_tlv, char **cn)
{
    struct dr r = name_tlv, name;
    *cn = NULL;
    if (!dr_get(&r, 0x30, &name) || !dr_empty(&r))
        return -EBADMSG;
    while (!dr_empty(&name)) {
        struct dr rdn;
        if (!dr_get(&name, 0x31, &rdn) || dr_empty(&rdn))
            goto bad;
        while (!dr_empty(&rdn)) {
            struct dr atv, oid, val;
            uint8_t tag;
            if (!dr_get(&rdn, 0x30, &atv) || !dr_get(&atv, 0x06, &oid) ||
                !dr_next(&atv, &tag, &val, NULL) || !dr_empty(&atv))
                goto bad;
            if (!*cn && dr_eq(&oid, OID_CN, sizeof(OID_CN))) {
                int ret = text_decode(tag, val, cn);
                if (ret != 0)
                    return ret;
            }
        }
    }
    return 0;
bad:
    free(*cn);
    *cn = NULL;
    return -EBADMSG;
}

/* Parses a short decimal PrintableString ("0".."99") into *v. */
static bool decimal(const struct dr *s, int *v)
{
    size_t n = dr_len(s);
    if (n == 0 || n > 2)
        return false;
    int x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s->p[i] < '0' || s->p[i] > '9')
            return false;
        x = x * 10 + (s->p[i] - '0');
    }
    *v = x;
    return true;
}

static int dup_bytes(struct dr src, uint8_t **dst, size_t *len)
{
    size_t n = dr_len(&src);
    *dst = malloc(n ? n : 1);
    if (!*dst)
        return -ENOMEM;
    memcpy(*dst, src.p, n);
    *len = n;
    return 0;
}

/* ---- SignedData: parsing and verification ----------------------------------------------- */

struct signed_data {
    uint8_t *der_copy;     /* DER made from BER input, or NULL */
    uint8_t *content_copy; /* a constructed eContent put together, or NULL */
    bool has_content;
    struct dr content;      /* eContent octets */
    struct dr content_type; /* eContentType OID value */
    struct dr certs[CERTS_MAX];
    size_t n_certs;
    bool has_signer;
    struct dr sid_issuer, sid_serial; /* IssuerAndSerialNumber TLVs (empty: other sid) */
    struct dr digest_oid;
    struct dr attrs; /* signedAttrs, the whole [0] TLV */
    struct dr sig_oid;
    struct dr signature;
};

static void sd_dispose(struct signed_data *sd)
{
    free(sd->der_copy);
    free(sd->content_copy);
    memset(sd, 0, sizeof(*sd));
}

/* Puts a constructed OCTET STRING (one level of primitive chunks) together. */
static int join_octets(struct dr v, struct signed_data *sd)
{
    size_t total = 0;
    struct dr r = v, chunk;
    while (!dr_empty(&r)) {
        if (!dr_get(&r, 0x04, &chunk))
            return -EBADMSG;
        total += dr_len(&chunk);
    }
    if (!(sd->content_copy = malloc(total ? total : 1)))
        return -ENOMEM;
    size_t k = 0;
    for (r = v; !dr_empty(&r);) {
        if (!dr_get(&r, 0x04, &chunk)) /* checked by the first pass */
            break;
        memcpy(sd->content_copy + k, chunk.p, dr_len(&chunk));
        k += dr_len(&chunk);
    }
    sd->content = dr_of(sd->content_copy, total);
    return 0;
}

/* Parses a ContentInfo holding a SignedData; a degenerate one has no signer. */
static int sd_parse(const uint8_t *der, size_t len, struct signed_data *sd)
{
    memset(sd, 0, sizeof(*sd));
    if (len > MDM_SCEP_MESSAGE_MAX)
        return MDM_ETOOBIG;
    if (len >= 2 && der[0] == 0x30 && der[1] == 0x80) { /* BER, indefinite length */
        word32 n = 0;
        if (wc_BerToDer(der, (word32)len, NULL, &n) != LENGTH_ONLY_E || n == 0 ||
            n > MDM_SCEP_MESSAGE_MAX)
            return -EBADMSG;
        if (!(sd->der_copy = malloc(n)))
            return -ENOMEM;
        if (wc_BerToDer(der, (word32)len, sd->der_copy, &n) != 0)
            return -EBADMSG;
        der = sd->der_copy;
        len = n;
    }
    struct dr r = dr_of(der, len), ci, oid, explicit_sd, s, v, eci;
    if (!dr_get(&r, 0x30, &ci) || !dr_empty(&r) || !dr_get(&ci, 0x06, &oid) ||
        !dr_eq(&oid, OID_SIGNED_DATA, sizeof(OID_SIGNED_DATA)) ||
        !dr_get(&ci, 0xa0, &explicit_sd) || !dr_empty(&ci) ||
        !dr_get(&explicit_sd, 0x30, &s) || !dr_empty(&explicit_sd))
        return -EBADMSG;
    if (!dr_get(&s, 0x02, &v) /* version */ || !dr_get(&s, 0x31, &v) /* digestAlgorithms */ ||
        !dr_get(&s, 0x30, &eci) || !dr_get(&eci, 0x06, &sd->content_type))
        return -EBADMSG;
    if (!dr_empty(&eci)) {
        struct dr ex;
        if (!dr_get(&eci, 0xa0, &ex) || !dr_empty(&eci))
            return -EBADMSG;
        if (dr_get(&ex, 0x04, &sd->content)) {
            /* primitive */
        } else if (dr_get(&ex, 0x24, &v)) {
            int ret = join_octets(v, sd);
            if (ret != 0)
                return ret;
        } else {
            return -EBADMSG;
        }
        if (!dr_empty(&ex))
            return -EBADMSG;
        sd->has_content = true;
    }
    if (dr_peek(&s, 0xa0)) {
        struct dr certs, c;
        uint8_t tag;
        if (!dr_get(&s, 0xa0, &certs))
            return -EBADMSG;
        while (!dr_empty(&certs)) {
            if (!dr_next(&certs, &tag, NULL, &c))
                return -EBADMSG;
            if (tag == 0x30 && sd->n_certs < CERTS_MAX) /* other choices are skipped */
                sd->certs[sd->n_certs++] = c;
        }
    }
    if (dr_peek(&s, 0xa1) && !dr_get(&s, 0xa1, &v)) /* crls: not used */
        return -EBADMSG;
    struct dr infos, si, alg;
    if (!dr_get(&s, 0x31, &infos) || !dr_empty(&s))
        return -EBADMSG;
    if (dr_empty(&infos))
        return 0; /* degenerate: certificates only */
    if (!dr_get(&infos, 0x30, &si) || !dr_empty(&infos)) /* exactly one signer */
        return -EBADMSG;
    if (!dr_get(&si, 0x02, &v))
        return -EBADMSG;
    if (dr_peek(&si, 0x30)) {
        struct dr ias;
        if (!dr_get(&si, 0x30, &ias) || !dr_get_tlv(&ias, 0x30, &sd->sid_issuer) ||
            !dr_get_tlv(&ias, 0x02, &sd->sid_serial) || !dr_empty(&ias))
            return -EBADMSG;
    } else if (!dr_get(&si, 0x80, &v)) { /* subjectKeyIdentifier: every certificate is tried */
        return -EBADMSG;
    }
    if (!dr_get(&si, 0x30, &alg) || !dr_get(&alg, 0x06, &sd->digest_oid) ||
        !dr_get_tlv(&si, 0xa0, &sd->attrs) /* SCEP needs signed attributes */ ||
        !dr_get(&si, 0x30, &alg) || !dr_get(&alg, 0x06, &sd->sig_oid) ||
        !dr_get(&si, 0x04, &sd->signature))
        return -EBADMSG;
    if (dr_peek(&si, 0xa1) && !dr_get(&si, 0xa1, &v)) /* unsignedAttrs */
        return -EBADMSG;
    if (!dr_empty(&si))
        return -EBADMSG;
    sd->has_signer = true;
    return 0;
}

/* Values of the signed attributes we read; p == NULL when absent. */
struct attrs {
    struct dr content_type, message_digest;
    struct dr message_type, transaction_id, pki_status, fail_info;
    struct dr sender_nonce, recipient_nonce;
};

struct attr_slot {
    const uint8_t *oid;
    size_t oid_len;
    bool text; /* a printable string; else the tag below */
    uint8_t tag;
    size_t off; /* of the struct dr in struct attrs */
};

#define SLOT(o, text, tag, field) {o, sizeof(o), text, tag, offsetof(struct attrs, field)}
static const struct attr_slot attr_slots[] = {
    SLOT(OID_CONTENT_TYPE, false, 0x06, content_type),
    SLOT(OID_MESSAGE_DIGEST, false, 0x04, message_digest),
    SLOT(OID_MESSAGE_TYPE, true, 0, message_type),
    SLOT(OID_TRANSACTION_ID, true, 0, transaction_id),
    SLOT(OID_PKI_STATUS, true, 0, pki_status),
    SLOT(OID_FAIL_INFO, true, 0, fail_info),
    SLOT(OID_SENDER_NONCE, false, 0x04, sender_nonce),
    SLOT(OID_RECIPIENT_NONCE, false, 0x04, recipient_nonce),
};
#undef SLOT

/* Reads the signed attributes; each known one must be single-valued and appear once. */
static int attrs_parse(struct dr attrs_tlv, struct attrs *a)
{
    memset(a, 0, sizeof(*a));
    struct dr r = attrs_tlv, set;
    if (!dr_get(&r, 0xa0, &set))
        return -EBADMSG;
    while (!dr_empty(&set)) {
        struct dr attr, oid, vals, val;
        uint8_t tag;
        if (!dr_get(&set, 0x30, &attr) || !dr_get(&attr, 0x06, &oid) ||
            !dr_get(&attr, 0x31, &vals) || !dr_empty(&attr))
            return -EBADMSG;
        for (size_t i = 0; i < MDM_ARRAY_LEN(attr_slots); i++) {
            const struct attr_slot *s = &attr_slots[i];
            if (!dr_eq(&oid, s->oid, s->oid_len))
                continue;
            struct dr *dst = (struct dr *)((char *)a + s->off);
            if (dst->p || !dr_next(&vals, &tag, &val, NULL) || !dr_empty(&vals))
                return -EBADMSG;
            bool ok = s->text ? tag == 0x13 || tag == 0x0c || tag == 0x16 : tag == s->tag;
            if (!ok)
                return -EBADMSG;
            *dst = val;
            break;
        }
    }
    return 0;
}

/*
 * Verifies sd's signature: the message digest over the content (empty when absent), then the
 * signature over the signed attributes with the certificate the signer identifier names.
 * Candidates are sd's certificates, or only *only when it is given. On success *signer is
 * that certificate and *a the signed attributes.
 * Returns 0; -EBADMSG (malformed attributes, contentType mismatch); MDM_ECRYPTO (no signer,
 * unsupported algorithm, digest or signature mismatch); MDM_ECERT (no candidate certificate
 * matches the signer identifier); -ENOMEM.
 */
static int sd_verify(const struct signed_data *sd, const struct dr *only, struct attrs *a,
                     struct dr *signer)
{
    static const uint8_t nothing[1];
    if (!sd->has_signer)
        return MDM_ECRYPTO;
    int ret = attrs_parse(sd->attrs, a);
    if (ret != 0)
        return ret;
    if (!a->content_type.p || !a->message_digest.p || !dr_same(&a->content_type, &sd->content_type))
        return -EBADMSG;
    enum wc_HashType hash = hash_find(&sd->digest_oid);
    const struct sig_alg *alg = sig_alg_find(&sd->sig_oid);
    if (hash == WC_HASH_TYPE_NONE || !alg || (alg->hash != WC_HASH_TYPE_NONE && alg->hash != hash))
        return MDM_ECRYPTO;
    uint8_t md[WC_MAX_DIGEST_SIZE];
    int md_len = wc_HashGetDigestSize(hash);
    const uint8_t *content = sd->has_content && dr_len(&sd->content) ? sd->content.p : nothing;
    if (md_len <= 0 || wc_Hash(hash, content, (word32)(sd->has_content ? dr_len(&sd->content) : 0),
                               md, sizeof(md)) != 0)
        return MDM_ECRYPTO;
    if (!dr_eq(&a->message_digest, md, (size_t)md_len))
        return MDM_ECRYPTO;

    /* The signature covers the attributes with their SET OF tag, not the [0] of the message. */
    size_t n = dr_len(&sd->attrs);
    uint8_t *set = malloc(n);
    if (!set)
        return -ENOMEM;
    memcpy(set, sd->attrs.p, n);
    set[0] = 0x31;
    const struct dr *cands = only ? only : sd->certs;
    size_t n_cands = only ? 1 : sd->n_certs;
    bool named = false;
    ret = MDM_ECERT;
    for (size_t i = 0; i < n_cands; i++) {
        struct cert c;
        if (!cert_parse(cands[i], &c))
            continue;
        if (sd->sid_issuer.p &&
            (!dr_same(&c.issuer, &sd->sid_issuer) || !dr_same(&c.serial, &sd->sid_serial)))
            continue;
        named = true;
        int r = sig_verify(c.spki, alg->kind, hash, set, n, sd->signature);
        if (r == 0) {
            *signer = cands[i];
            ret = 0;
            break;
        }
        ret = r == -ENOMEM ? r : MDM_ECRYPTO;
    }
    if (ret == MDM_ECERT && named)
        ret = MDM_ECRYPTO;
    free(set);
    return ret;
}

/* ---- SignedData: encoding ---------------------------------------------------------------- */

/* One signed attribute to write: oid, and a single value of tag. */
struct attr_out {
    const uint8_t *oid;
    size_t oid_len;
    uint8_t tag;
    const void *val;
    size_t len;
};

static int cmp_der(const void *x, const void *y)
{
    const struct dr *a = x, *b = y;
    size_t la = dr_len(a), lb = dr_len(b);
    int c = memcmp(a->p, b->p, la < lb ? la : lb);
    return c != 0 ? c : (la > lb) - (la < lb);
}

/* Loads an RSA private key (PKCS#1 or PKCS#8 DER). */
static int rsa_private_load(const uint8_t *der, size_t len, RsaKey *rsa)
{
    word32 idx = 0;
    if (len == 0 || len > UINT32_MAX || wc_InitRsaKey(rsa, NULL) != 0)
        return MDM_ECRYPTO;
    if (wc_RsaPrivateKeyDecode(der, &idx, rsa, (word32)len) != 0) {
        wc_FreeRsaKey(rsa);
        return MDM_ECRYPTO;
    }
    return 0;
}

/*
 * Encodes a SignedData over content (absent when !has_content) signed with the RSA key (DER)
 * of cert (DER, carried in the message), SHA-256, with contentType id-data, messageDigest and
 * the n attributes given, and appends it to out.
 */
static int sd_sign(const uint8_t *cert_der, size_t cert_len, const uint8_t *key, size_t key_len,
                   bool has_content, const uint8_t *content, size_t content_len,
                   const struct attr_out *attrs, size_t n, mdm_buf_t *out)
{
    assert(n + 2 <= ATTRS_OUT_MAX);
    struct cert c;
    if (!cert_der || cert_len == 0 || !cert_parse(dr_of(cert_der, cert_len), &c))
        return MDM_ECERT;
    if (content_len > MDM_SCEP_MESSAGE_MAX)
        return MDM_ETOOBIG;
    static const uint8_t nothing[1];
    uint8_t md[MDM_SHA256_LEN];
    int ret = mdm_sha256(has_content && content_len ? content : nothing,
                         has_content ? content_len : 0, md);
    if (ret != 0)
        return ret;

    /* Each attribute on its own, then sorted: DER orders a SET OF by encoding. */
    struct attr_out all[ATTRS_OUT_MAX];
    all[0] = (struct attr_out){OID_CONTENT_TYPE, sizeof(OID_CONTENT_TYPE), 0x06, OID_DATA,
                               sizeof(OID_DATA)};
    all[1] = (struct attr_out){OID_MESSAGE_DIGEST, sizeof(OID_MESSAGE_DIGEST), 0x04, md,
                               sizeof(md)};
    memcpy(all + 2, attrs, n * sizeof(*attrs));
    n += 2;
    struct dw aw[ATTRS_OUT_MAX], set, w;
    struct dr enc[ATTRS_OUT_MAX];
    RsaKey rsa;
    bool rsa_ok = false, rng_ok = false;
    WC_RNG rng;
    uint8_t sig[SIG_MAX];
    word32 sig_len = sizeof(sig);
    dw_init(&set);
    dw_init(&w);
    for (size_t i = 0; i < n; i++) {
        dw_init(&aw[i]);
        dw_open(&aw[i], 0x30);
        dw_prim(&aw[i], 0x06, all[i].oid, all[i].oid_len);
        dw_open(&aw[i], 0x31);
        dw_prim(&aw[i], all[i].tag, all[i].val, all[i].len);
        dw_close(&aw[i]);
        dw_close(&aw[i]);
        if ((ret = aw[i].err) != 0) {
            for (size_t j = 0; j <= i; j++)
                mdm_buf_dispose(&aw[j].b);
            goto out;
        }
        enc[i] = dr_of(mdm_buf_head(&aw[i].b), aw[i].b.len);
    }
    qsort(enc, n, sizeof(enc[0]), cmp_der);
    dw_open(&set, 0x31);
    for (size_t i = 0; i < n; i++)
        dw_bytes(&set, enc[i].p, dr_len(&enc[i]));
    dw_close(&set);
    for (size_t i = 0; i < n; i++)
        mdm_buf_dispose(&aw[i].b);
    if ((ret = set.err) != 0)
        goto out;

    if ((ret = rsa_private_load(key, key_len, &rsa)) != 0)
        goto out;
    rsa_ok = true;
    if (wc_InitRng(&rng) != 0) {
        ret = MDM_ECRYPTO;
        goto out;
    }
    rng_ok = true;
    int r = wc_SignatureGenerate(WC_HASH_TYPE_SHA256, WC_SIGNATURE_TYPE_RSA_W_ENC,
                                 mdm_buf_head(&set.b), (word32)set.b.len, sig, &sig_len, &rsa,
                                 sizeof(rsa), &rng);
    if (r != 0) {
        mdm_debug(LOG_MOD, "wc_SignatureGenerate: %d", r);
        ret = r == MEMORY_E ? -ENOMEM : MDM_ECRYPTO;
        goto out;
    }

    static const uint8_t one = 1;
    dw_open(&w, 0x30); /* ContentInfo */
    dw_prim(&w, 0x06, OID_SIGNED_DATA, sizeof(OID_SIGNED_DATA));
    dw_open(&w, 0xa0);
    dw_open(&w, 0x30); /* SignedData */
    dw_prim(&w, 0x02, &one, 1);
    dw_open(&w, 0x31);
    dw_alg(&w, OID_SHA256, sizeof(OID_SHA256), false);
    dw_close(&w);
    dw_open(&w, 0x30); /* encapContentInfo */
    dw_prim(&w, 0x06, OID_DATA, sizeof(OID_DATA));
    if (has_content) {
        dw_open(&w, 0xa0);
        dw_prim(&w, 0x04, content, content_len);
        dw_close(&w);
    }
    dw_close(&w);
    dw_open(&w, 0xa0); /* certificates */
    dw_bytes(&w, cert_der, cert_len);
    dw_close(&w);
    dw_open(&w, 0x31); /* signerInfos */
    dw_open(&w, 0x30);
    dw_prim(&w, 0x02, &one, 1);
    dw_open(&w, 0x30); /* IssuerAndSerialNumber */
    dw_bytes(&w, c.issuer.p, dr_len(&c.issuer));
    dw_bytes(&w, c.serial.p, dr_len(&c.serial));
    dw_close(&w);
    dw_alg(&w, OID_SHA256, sizeof(OID_SHA256), false);
    static const uint8_t implicit0 = 0xa0; /* signedAttrs [0] IMPLICIT */
    dw_bytes(&w, &implicit0, 1);
    dw_bytes(&w, mdm_buf_head(&set.b) + 1, set.b.len - 1);
    dw_alg(&w, OID_RSA, sizeof(OID_RSA), true);
    dw_prim(&w, 0x04, sig, sig_len);
    dw_close(&w);
    dw_close(&w);
    dw_close(&w);
    dw_close(&w);
    dw_close(&w);
    ret = dw_finish(&w, out);
out:
    mdm_buf_dispose(&w.b);
    mdm_buf_dispose(&set.b);
    if (rsa_ok)
        wc_FreeRsaKey(&rsa);
    if (rng_ok)
        wc_FreeRng(&rng);
    return ret;
}

/* A certificates-only SignedData holding the n certificates (DER). */
static int degenerate_encode(const struct dr *certs, size_t n, mdm_buf_t *out)
{
    static const uint8_t one = 1;
    struct dw w;
    dw_init(&w);
    dw_open(&w, 0x30);
    dw_prim(&w, 0x06, OID_SIGNED_DATA, sizeof(OID_SIGNED_DATA));
    dw_open(&w, 0xa0);
    dw_open(&w, 0x30);
    dw_prim(&w, 0x02, &one, 1);
    dw_prim(&w, 0x31, NULL, 0); /* no digest algorithms */
    dw_open(&w, 0x30);
    dw_prim(&w, 0x06, OID_DATA, sizeof(OID_DATA));
    dw_close(&w);
    dw_open(&w, 0xa0);
    for (size_t i = 0; i < n; i++)
        dw_bytes(&w, certs[i].p, dr_len(&certs[i]));
    dw_close(&w);
    dw_prim(&w, 0x31, NULL, 0); /* no signers */
    dw_close(&w);
    dw_close(&w);
    dw_close(&w);
    return dw_finish(&w, out);
}

/* ---- EnvelopedData (wolfCrypt) ------------------------------------------------------------ */

static int cipher_oid(enum mdm_scep_cipher cipher)
{
    switch (cipher) {
    case MDM_SCEP_AES_128_CBC: return AES128CBCb;
    case MDM_SCEP_AES_256_CBC: return AES256CBCb;
    case MDM_SCEP_DES3_CBC: return DES3b;
    }
    return -1;
}

/* Encrypts content for the RSA key of recipient (DER certificate) and appends it to out. */
static int envelope_seal(const uint8_t *recipient, size_t recipient_len, const uint8_t *content,
                         size_t len, int encrypt_oid, mdm_buf_t *out)
{
    if (!recipient || recipient_len == 0 || recipient_len > MDM_SCEP_MESSAGE_MAX)
        return MDM_ECERT;
    if (len == 0 || len > MDM_SCEP_MESSAGE_MAX)
        return -EINVAL;
    if (encrypt_oid < 0)
        return -EINVAL;
    size_t cap = len + recipient_len + ENVELOPE_OVERHEAD;
    uint8_t *buf = malloc(cap);
    PKCS7 *p7 = wc_PKCS7_New(NULL, INVALID_DEVID);
    WC_RNG rng;
    bool rng_ok = false;
    int ret = 0;
    if (!buf || !p7) {
        ret = -ENOMEM;
        goto out;
    }
    /* wolfCrypt only reads the certificate and the content; its API is not const. */
    if (wc_PKCS7_InitWithCert(p7, (byte *)(uintptr_t)recipient, (word32)recipient_len) != 0 ||
        p7->publicKeyOID != RSAk) {
        ret = MDM_ECERT;
        goto out;
    }
    if (wc_InitRng(&rng) != 0) {
        ret = MDM_ECRYPTO;
        goto out;
    }
    rng_ok = true;
    p7->rng = &rng;
    p7->content = (byte *)(uintptr_t)content;
    p7->contentSz = (word32)len;
    p7->contentOID = DATA;
    p7->encryptOID = encrypt_oid;
    int n = wc_PKCS7_EncodeEnvelopedData(p7, buf, (word32)cap);
    if (n <= 0) {
        mdm_debug(LOG_MOD, "wc_PKCS7_EncodeEnvelopedData: %d", n);
        ret = n == MEMORY_E ? -ENOMEM : MDM_ECRYPTO;
        goto out;
    }
    ret = mdm_buf_append(out, buf, (size_t)n);
out:
    if (p7) {
        p7->rng = NULL;
        wc_PKCS7_Free(p7);
    }
    if (rng_ok)
        wc_FreeRng(&rng);
    free(buf);
    return ret;
}

/*
 * Decrypts the EnvelopedData env with key (DER, RSA) as the recipient cert (DER) into a
 * malloc'ed *out. Returns 0; MDM_ECRYPTO when it is not for us, cannot be decrypted or is
 * malformed (wolfCrypt does not tell these apart reliably); MDM_ECERT for a bad cert; -ENOMEM.
 */
static int envelope_open(const uint8_t *cert, size_t cert_len, const uint8_t *key,
                         size_t key_len, struct dr env, uint8_t **out, size_t *out_len)
{
    size_t len = dr_len(&env);
    if (len == 0 || len > MDM_SCEP_MESSAGE_MAX)
        return MDM_ECRYPTO;
    if (!cert || cert_len == 0 || cert_len > MDM_SCEP_MESSAGE_MAX || key_len > UINT32_MAX)
        return MDM_ECERT;
    uint8_t *buf = malloc(len);
    PKCS7 *p7 = wc_PKCS7_New(NULL, INVALID_DEVID);
    int ret = 0;
    if (!buf || !p7) {
        ret = -ENOMEM;
        goto out;
    }
    if (wc_PKCS7_InitWithCert(p7, (byte *)(uintptr_t)cert, (word32)cert_len) != 0) {
        ret = MDM_ECERT;
        goto out;
    }
    p7->privateKey = (byte *)(uintptr_t)key; /* read only */
    p7->privateKeySz = (word32)key_len;
    int n = wc_PKCS7_DecodeEnvelopedData(p7, (byte *)(uintptr_t)env.p, (word32)len, buf,
                                         (word32)len);
    if (n <= 0) {
        mdm_debug(LOG_MOD, "wc_PKCS7_DecodeEnvelopedData: %d", n);
        ret = n == MEMORY_E ? -ENOMEM : MDM_ECRYPTO;
        goto out;
    }
    *out = buf;
    *out_len = (size_t)n;
    buf = NULL;
out:
    if (p7) {
        p7->privateKey = NULL; /* the caller's */
        wc_PKCS7_Free(p7);
    }
    free(buf);
    return ret;
}

/* ---- PKCS#10 ------------------------------------------------------------------------------- */

/* The parts of a CertificationRequest; ranges point into the DER. */
struct csr {
    struct dr info;    /* certificationRequestInfo TLV (what is signed) */
    struct dr subject; /* Name TLV */
    struct dr spki;    /* SubjectPublicKeyInfo TLV */
    struct dr attrs;   /* attributes [0] value (empty when absent) */
    struct dr sig_oid;
    struct dr sig;     /* BIT STRING value without the unused-bits octet */
};

static bool csr_split(struct dr der, struct csr *c)
{
    struct dr r = der, req, info, v, alg;
    memset(c, 0, sizeof(*c));
    if (!dr_get(&r, 0x30, &req) || !dr_empty(&r) || !dr_get_tlv(&req, 0x30, &c->info))
        return false;
    r = c->info;
    if (!dr_get(&r, 0x30, &info) || !dr_get(&info, 0x02, &v) || !dr_eq(&v, "\0", 1) ||
        !dr_get_tlv(&info, 0x30, &c->subject) || !dr_get_tlv(&info, 0x30, &c->spki))
        return false;
    if (dr_peek(&info, 0xa0) && !dr_get(&info, 0xa0, &c->attrs))
        return false;
    if (!dr_empty(&info) || !dr_get(&req, 0x30, &alg) || !dr_get(&alg, 0x06, &c->sig_oid) ||
        !dr_get(&req, 0x03, &c->sig) || !dr_empty(&req) || dr_len(&c->sig) < 2 ||
        c->sig.p[0] != 0)
        return false;
    c->sig.p++;
    return true;
}

/* Parses and verifies a PKCS#10 request into req; req->fail_info says why on failure. */
static int csr_parse(struct dr der, mdm_scep_request_t *req)
{
    struct csr c;
    req->fail_info = MDM_SCEP_BAD_REQUEST;
    if (!csr_split(der, &c))
        return -EBADMSG;
    const struct sig_alg *alg = sig_alg_find(&c.sig_oid);
    if (!alg || alg->hash == WC_HASH_TYPE_NONE) {
        req->fail_info = MDM_SCEP_BAD_ALG;
        return MDM_ECRYPTO;
    }
    int ret = sig_verify(c.spki, alg->kind, alg->hash, c.info.p, dr_len(&c.info), c.sig);
    if (ret == -EOPNOTSUPP) {
        req->fail_info = MDM_SCEP_BAD_ALG;
        return MDM_ECRYPTO;
    }
    if (ret != 0)
        return ret;
    /* attributes: SET OF SEQUENCE { type, SET OF value } */
    struct dr attrs = c.attrs;
    while (!dr_empty(&attrs)) {
        struct dr attr, oid, vals, val;
        uint8_t tag;
        if (!dr_get(&attrs, 0x30, &attr) || !dr_get(&attr, 0x06, &oid) ||
            !dr_get(&attr, 0x31, &vals) || !dr_empty(&attr))
            return -EBADMSG;
        if (!dr_eq(&oid, OID_CHALLENGE, sizeof(OID_CHALLENGE)))
            continue; /* extensionRequest and others: the issuer decides, not the request */
        if (req->challenge || !dr_next(&vals, &tag, &val, NULL) || !dr_empty(&vals))
            return -EBADMSG;
        if ((ret = text_decode(tag, val, &req->challenge)) != 0)
            return ret;
    }
    if ((ret = name_common_name(c.subject, &req->common_name)) != 0 ||
        (ret = dup_bytes(c.subject, &req->subject, &req->subject_len)) != 0 ||
        (ret = dup_bytes(c.spki, &req->spki, &req->spki_len)) != 0 ||
        (ret = dup_bytes(der, &req->csr, &req->csr_len)) != 0)
        return ret;
    return 0;
}

/* CertPoll content: IssuerAndSubject ::= SEQUENCE { issuer Name, subject Name }. */
static int poll_parse(struct dr der, mdm_scep_request_t *req)
{
    struct dr r = der, seq, issuer, subject;
    req->fail_info = MDM_SCEP_BAD_REQUEST;
    if (!dr_get(&r, 0x30, &seq) || !dr_empty(&r) || !dr_get_tlv(&seq, 0x30, &issuer) ||
        !dr_get_tlv(&seq, 0x30, &subject) || !dr_empty(&seq))
        return -EBADMSG;
    int ret;
    if ((ret = name_common_name(subject, &req->common_name)) != 0 ||
        (ret = dup_bytes(subject, &req->subject, &req->subject_len)) != 0 ||
        (ret = dup_bytes(issuer, &req->issuer, &req->issuer_len)) != 0)
        return ret;
    return 0;
}

/* ---- server ------------------------------------------------------------------------------- */

const char *mdm_scep_caps(void)
{
    return "POSTPKIOperation\nSHA-256\nAES\nSCEPStandard\nRenewal\n";
}

int mdm_scep_ca_certs(const uint8_t *ra_cert, size_t ra_len, const uint8_t *ca_cert,
                      size_t ca_len, mdm_buf_t *out)
{
    assert(ra_cert && ca_cert && out);
    struct dr certs[2] = {dr_of(ra_cert, ra_len), dr_of(ca_cert, ca_len)};
    struct cert c;
    for (size_t i = 0; i < 2; i++)
        if (dr_empty(&certs[i]) || dr_len(&certs[i]) > MDM_SCEP_MESSAGE_MAX / 4 ||
            !cert_parse(certs[i], &c))
            return MDM_ECERT;
    return degenerate_encode(certs, 2, out);
}

/* Frees what was read from the envelope, keeping what a reply needs. */
static void drop_content(mdm_scep_request_t *req)
{
    free(req->csr);
    free(req->subject);
    free(req->common_name);
    free(req->spki);
    if (req->challenge)
        mdm_free_wiped(req->challenge, strlen(req->challenge));
    free(req->issuer);
    req->csr = req->subject = req->spki = req->issuer = NULL;
    req->common_name = req->challenge = NULL;
    req->csr_len = req->subject_len = req->spki_len = req->issuer_len = 0;
}

void mdm_scep_request_dispose(mdm_scep_request_t *req)
{
    if (!req)
        return;
    drop_content(req);
    free(req->signer_cert);
    memset(req, 0, sizeof(*req));
}

/* Reads messageType, transactionID and senderNonce of a request. */
static int request_attrs(const struct attrs *a, mdm_scep_request_t *req)
{
    int type;
    if (!a->message_type.p || !decimal(&a->message_type, &type) || !a->transaction_id.p ||
        !a->sender_nonce.p || dr_len(&a->sender_nonce) != MDM_SCEP_NONCE_LEN)
        return -EBADMSG;
    size_t n = dr_len(&a->transaction_id);
    if (n == 0 || n > MDM_SCEP_TRANSACTION_ID_MAX)
        return -EBADMSG;
    for (size_t i = 0; i < n; i++)
        if (a->transaction_id.p[i] < 0x20 || a->transaction_id.p[i] > 0x7e)
            return -EBADMSG;
    memcpy(req->transaction_id, a->transaction_id.p, n);
    req->transaction_id[n] = '\0';
    memcpy(req->sender_nonce, a->sender_nonce.p, MDM_SCEP_NONCE_LEN);
    req->type = (enum mdm_scep_message_type)type;
    return 0;
}

int mdm_scep_parse_request(const mdm_scep_ra_t *ra, const uint8_t *der, size_t len,
                           mdm_scep_request_t *req)
{
    assert(ra && (der || len == 0) && req);
    memset(req, 0, sizeof(*req));
    struct signed_data sd;
    struct attrs a;
    struct dr signer;
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    int ret = sd_parse(der, len, &sd);
    if (ret != 0)
        goto out;
    if ((ret = sd_verify(&sd, NULL, &a, &signer)) != 0 || (ret = request_attrs(&a, req)) != 0 ||
        (ret = dup_bytes(signer, &req->signer_cert, &req->signer_cert_len)) != 0)
        goto out;
    req->replyable = true;
    req->fail_info = MDM_SCEP_BAD_REQUEST;
    if (req->type != MDM_SCEP_PKCS_REQ && req->type != MDM_SCEP_RENEWAL_REQ &&
        req->type != MDM_SCEP_CERT_POLL) {
        ret = -ENOTSUP;
        goto out;
    }
    if (!sd.has_content || dr_empty(&sd.content)) {
        ret = -EBADMSG;
        goto out;
    }
    ret = envelope_open(ra->cert, ra->cert_len, ra->key, ra->key_len, sd.content, &plain,
                        &plain_len);
    if (ret != 0) {
        req->fail_info = MDM_SCEP_BAD_MESSAGE_CHECK;
        if (ret == MDM_ECERT)
            ret = MDM_ECRYPTO; /* our RA certificate: not the client's fault, but no answer */
        goto out;
    }
    if (req->type == MDM_SCEP_CERT_POLL)
        ret = poll_parse(dr_of(plain, plain_len), req);
    else
        ret = csr_parse(dr_of(plain, plain_len), req);
out:
    if (ret != 0)
        drop_content(req);
    free(plain);
    sd_dispose(&sd);
    return ret;
}

/* Decimal text of a small number, for messageType, pkiStatus and failInfo. */
static size_t decimal_text(int v, char out[4])
{
    assert(v >= 0 && v < 100);
    return (size_t)snprintf(out, 4, "%d", v);
}

int mdm_scep_cert_rep(const mdm_scep_ra_t *ra, const mdm_scep_request_t *req,
                      enum mdm_scep_status status, enum mdm_scep_fail_info fail_info,
                      const uint8_t *cert, size_t cert_len, mdm_buf_t *out)
{
    assert(ra && req && out);
    if (!req->replyable || !req->transaction_id[0])
        return -EINVAL;
    if (status != MDM_SCEP_SUCCESS && status != MDM_SCEP_FAILURE && status != MDM_SCEP_PENDING)
        return -EINVAL;
    if (status == MDM_SCEP_FAILURE && ((int)fail_info < 0 || (int)fail_info > MDM_SCEP_BAD_CERT_ID))
        return -EINVAL;
    mdm_buf_t inner, env;
    mdm_buf_init(&inner, MDM_SCEP_MESSAGE_MAX);
    mdm_buf_init(&env, MDM_SCEP_MESSAGE_MAX);
    int ret = 0;
    if (status == MDM_SCEP_SUCCESS) {
        struct cert c;
        struct dr issued = dr_of(cert, cert_len);
        if (!cert || cert_len == 0) {
            ret = -EINVAL;
            goto out;
        }
        if (!cert_parse(issued, &c)) {
            ret = MDM_ECERT;
            goto out;
        }
        if ((ret = degenerate_encode(&issued, 1, &inner)) != 0 ||
            (ret = envelope_seal(req->signer_cert, req->signer_cert_len, mdm_buf_head(&inner),
                                 inner.len, AES256CBCb, &env)) != 0)
            goto out;
    }
    uint8_t nonce[MDM_SCEP_NONCE_LEN];
    if ((ret = mdm_random_bytes(nonce, sizeof(nonce))) != 0)
        goto out;
    char type_text[4], status_text[4], fail_text[4];
    size_t type_len = decimal_text(MDM_SCEP_CERT_REP, type_text);
    size_t status_len = decimal_text((int)status, status_text);
    size_t fail_len = decimal_text((int)fail_info, fail_text);
    struct attr_out attrs[] = {
        {OID_TRANSACTION_ID, sizeof(OID_TRANSACTION_ID), 0x13, req->transaction_id,
         strlen(req->transaction_id)},
        {OID_MESSAGE_TYPE, sizeof(OID_MESSAGE_TYPE), 0x13, type_text, type_len},
        {OID_PKI_STATUS, sizeof(OID_PKI_STATUS), 0x13, status_text, status_len},
        {OID_SENDER_NONCE, sizeof(OID_SENDER_NONCE), 0x04, nonce, sizeof(nonce)},
        {OID_RECIPIENT_NONCE, sizeof(OID_RECIPIENT_NONCE), 0x04, req->sender_nonce,
         MDM_SCEP_NONCE_LEN},
        {OID_FAIL_INFO, sizeof(OID_FAIL_INFO), 0x13, fail_text, fail_len}, /* FAILURE only */
    };
    size_t n = MDM_ARRAY_LEN(attrs) - (status == MDM_SCEP_FAILURE ? 0 : 1);
    ret = sd_sign(ra->cert, ra->cert_len, ra->key, ra->key_len, status == MDM_SCEP_SUCCESS,
                  mdm_buf_head(&env), env.len, attrs, n, out);
out:
    mdm_buf_dispose(&inner);
    mdm_buf_dispose(&env);
    return ret;
}

/* ---- client ------------------------------------------------------------------------------- */

int mdm_scep_pick_ra(const uint8_t *der, size_t len, mdm_buf_t *ra_cert, mdm_buf_t *ca_cert)
{
    assert((der || len == 0) && ra_cert);
    struct signed_data sd;
    struct dr single = dr_of(der, len);
    const struct dr *certs = &single;
    size_t n = 1;
    struct cert c;
    int ret = sd_parse(der, len, &sd);
    if (ret == 0) {
        certs = sd.certs;
        n = sd.n_certs;
    } else if (ret == -EBADMSG && cert_parse(single, &c)) {
        ret = 0; /* application/x-x509-ca-cert: the CA is the RA */
    }
    if (ret != 0)
        goto out;
    mdm_x509_info_t *info = calloc(n ? n : 1, sizeof(*info));
    if (!info) {
        ret = -ENOMEM;
        goto out;
    }
    size_t ra = n, any_rsa = n, ca = n, parsed = 0;
    for (size_t i = 0; i < n; i++) {
        if (mdm_x509_inspect_der(certs[i].p, dr_len(&certs[i]), &info[i]) != 0) {
            info[i].key_alg = MDM_X509_KEYALG_OTHER;
            info[i].is_ca = false;
            continue;
        }
        parsed++;
        if (info[i].key_alg != MDM_X509_KEYALG_RSA)
            continue;
        bool transport =
            !info[i].has_key_usage || (info[i].key_usage & MDM_X509_KU_KEY_ENCIPHERMENT);
        if (ra == n && transport && !info[i].is_ca)
            ra = i;
        if (any_rsa == n)
            any_rsa = i;
    }
    if (ra == n)
        ra = any_rsa;
    if (parsed == 0) {
        ret = -EBADMSG;
    } else if (ra == n) {
        ret = MDM_ENOTFOUND;
    } else {
        for (size_t i = 0; i < n && ca == n; i++)
            if (info[i].is_ca && strcmp(info[i].subject, info[ra].issuer) == 0)
                ca = i;
        if (ca == n && info[ra].is_ca)
            ca = ra;
        ret = mdm_buf_append(ra_cert, certs[ra].p, dr_len(&certs[ra]));
        if (ret == 0 && ca_cert && ca < n &&
            (ret = mdm_buf_append(ca_cert, certs[ca].p, dr_len(&certs[ca]))) != 0)
            ra_cert->len -= dr_len(&certs[ra]); /* leave both unchanged */
    }
    free(info);
out:
    sd_dispose(&sd);
    return ret;
}

int mdm_scep_client_wrap(const mdm_scep_client_t *c, enum mdm_scep_message_type type,
                         const mdm_scep_transaction_t *tx, const uint8_t *envelope,
                         size_t envelope_len, mdm_buf_t *out)
{
    assert(c && tx && (envelope || envelope_len == 0) && out);
    if ((int)type <= 0 || (int)type >= 100 || type == MDM_SCEP_CERT_REP)
        return -EINVAL;
    size_t tid_len = strnlen(tx->transaction_id, sizeof(tx->transaction_id));
    if (tid_len == 0 || tid_len > MDM_SCEP_TRANSACTION_ID_MAX)
        return -EINVAL;
    char type_text[4];
    size_t type_len = decimal_text((int)type, type_text);
    struct attr_out attrs[] = {
        {OID_TRANSACTION_ID, sizeof(OID_TRANSACTION_ID), 0x13, tx->transaction_id, tid_len},
        {OID_MESSAGE_TYPE, sizeof(OID_MESSAGE_TYPE), 0x13, type_text, type_len},
        {OID_SENDER_NONCE, sizeof(OID_SENDER_NONCE), 0x04, tx->sender_nonce,
         MDM_SCEP_NONCE_LEN},
    };
    return sd_sign(c->cert, c->cert_len, c->key, c->key_len, true, envelope, envelope_len,
                   attrs, MDM_ARRAY_LEN(attrs), out);
}

int mdm_scep_client_request(const mdm_scep_client_t *c, enum mdm_scep_message_type type,
                            const uint8_t *csr, size_t csr_len, enum mdm_scep_cipher cipher,
                            mdm_scep_transaction_t *tx, mdm_buf_t *out)
{
    assert(c && (csr || csr_len == 0) && tx && out);
    if (type != MDM_SCEP_PKCS_REQ && type != MDM_SCEP_RENEWAL_REQ)
        return -EINVAL;
    struct csr parts;
    if (csr_len > MDM_SCEP_MESSAGE_MAX || !csr_split(dr_of(csr, csr_len), &parts) ||
        dr_len(&parts.spki) > MDM_SCEP_SPKI_MAX)
        return -EINVAL;
    memset(tx, 0, sizeof(*tx));
    tx->spki_len = dr_len(&parts.spki);
    memcpy(tx->spki, parts.spki.p, tx->spki_len);
    int ret;
    if ((ret = mdm_sha256_hex(tx->spki, tx->spki_len, tx->transaction_id)) != 0 ||
        (ret = mdm_random_bytes(tx->sender_nonce, sizeof(tx->sender_nonce))) != 0)
        return ret;
    mdm_buf_t env;
    mdm_buf_init(&env, MDM_SCEP_MESSAGE_MAX);
    ret = envelope_seal(c->ra_cert, c->ra_cert_len, csr, csr_len, cipher_oid(cipher), &env);
    if (ret == 0)
        ret = mdm_scep_client_wrap(c, type, tx, mdm_buf_head(&env), env.len, out);
    mdm_buf_dispose(&env);
    return ret;
}

void mdm_scep_reply_dispose(mdm_scep_reply_t *reply)
{
    if (!reply)
        return;
    free(reply->cert);
    memset(reply, 0, sizeof(*reply));
}

int mdm_scep_client_parse_reply(const mdm_scep_client_t *c, const mdm_scep_transaction_t *tx,
                                const uint8_t *der, size_t len, mdm_scep_reply_t *reply)
{
    assert(c && tx && (der || len == 0) && reply);
    memset(reply, 0, sizeof(*reply));
    struct signed_data sd, inner;
    struct attrs a;
    struct dr signer, ra = dr_of(c->ra_cert, c->ra_cert_len);
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    int type, status, fail;
    memset(&inner, 0, sizeof(inner));
    int ret = sd_parse(der, len, &sd);
    if (ret != 0)
        goto out;
    if (!c->ra_cert || c->ra_cert_len == 0) {
        ret = MDM_ECRYPTO;
        goto out;
    }
    if ((ret = sd_verify(&sd, &ra, &a, &signer)) != 0) {
        if (ret == MDM_ECERT)
            ret = MDM_ECRYPTO; /* not signed by the RA */
        goto out;
    }
    if (!a.message_type.p || !a.pki_status.p || !decimal(&a.message_type, &type) ||
        !decimal(&a.pki_status, &status)) {
        ret = -EBADMSG;
        goto out;
    }
    size_t tid_len = strnlen(tx->transaction_id, sizeof(tx->transaction_id));
    if (type != MDM_SCEP_CERT_REP || !a.transaction_id.p ||
        !dr_eq(&a.transaction_id, tx->transaction_id, tid_len) || !a.recipient_nonce.p ||
        !dr_eq(&a.recipient_nonce, tx->sender_nonce, MDM_SCEP_NONCE_LEN)) {
        ret = -EPROTO;
        goto out;
    }
    switch (status) {
    case MDM_SCEP_SUCCESS:
    case MDM_SCEP_PENDING:
        break;
    case MDM_SCEP_FAILURE:
        if (!a.fail_info.p || !decimal(&a.fail_info, &fail) || fail > MDM_SCEP_BAD_CERT_ID) {
            ret = -EBADMSG;
            goto out;
        }
        reply->fail_info = (enum mdm_scep_fail_info)fail;
        break;
    default:
        ret = -EBADMSG;
        goto out;
    }
    reply->status = (enum mdm_scep_status)status;
    if (status != MDM_SCEP_SUCCESS)
        goto out;
    if (!sd.has_content || dr_empty(&sd.content)) {
        ret = -EBADMSG;
        goto out;
    }
    if ((ret = envelope_open(c->cert, c->cert_len, c->key, c->key_len, sd.content, &plain,
                             &plain_len)) != 0)
        goto out;
    if ((ret = sd_parse(plain, plain_len, &inner)) != 0)
        goto out;
    ret = MDM_ECERT;
    for (size_t i = 0; i < inner.n_certs; i++) {
        struct cert ic;
        if (cert_parse(inner.certs[i], &ic) && dr_eq(&ic.spki, tx->spki, tx->spki_len)) {
            ret = dup_bytes(inner.certs[i], &reply->cert, &reply->cert_len);
            break;
        }
    }
out:
    if (ret != 0)
        mdm_scep_reply_dispose(reply);
    sd_dispose(&inner);
    sd_dispose(&sd);
    free(plain);
    return ret;
}
