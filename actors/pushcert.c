/* The APNs push certificate. See pushcert.h. Certificate work is core/x509's. */
#include "actors/pushcert.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crypto.h"
#include "core/x509.h"
#include "storage/pushcert.h"

#define PEM_MAX (1u << 20)

void mdm_pushcert_dispose(mdm_pushcert_t *pc)
{
    if (!pc)
        return;
    free(pc->cert_der);
    mdm_free_wiped(pc->key_der, pc->key_len);
    memset(pc, 0, sizeof(*pc));
}

/* Takes ownership of cert and key (malloc'ed DER); checks everything and fills out. */
static int finish(uint8_t *cert, size_t cert_len, uint8_t *key, size_t key_len, int64_t now,
                  mdm_pushcert_t *out, char *err, size_t errlen)
{
    out->cert_der = cert;
    out->cert_len = cert_len;
    out->key_der = key;
    out->key_len = key_len;
    if (mdm_x509_inspect_der(cert, cert_len, &out->info) != 0) {
        mdm_errf(err, errlen, "the certificate cannot be parsed");
        return MDM_ECERT;
    }
    if (mdm_x509_subject_uid(cert, cert_len, out->topic, sizeof(out->topic)) != 0) {
        mdm_errf(err, errlen,
               "not an APNs MDM push certificate: its subject has no UID (the topic, "
               "com.apple.mgmt.External.<uuid>); subject is %s",
               out->info.subject);
        return MDM_ECERT;
    }
    if (strncmp(out->topic, MDM_PUSHCERT_TOPIC_PREFIX, strlen(MDM_PUSHCERT_TOPIC_PREFIX)) != 0) {
        mdm_errf(err, errlen,
               "not an APNs MDM push certificate: its UID \"%.100s\" does not start with "
               MDM_PUSHCERT_TOPIC_PREFIX,
               out->topic);
        return MDM_ECERT;
    }
    if (mdm_x509_key_matches(cert, cert_len, key, key_len) != 0) {
        mdm_errf(err, errlen, "the private key does not belong to the certificate (topic %s)",
               out->topic);
        return MDM_ECERT;
    }
    if (now >= out->info.not_after) {
        mdm_errf(err, errlen,
               "the push certificate for %s expired %lld day(s) ago; renew it at "
               "https://identity.apple.com and upload the new one",
               out->topic, (long long)((now - out->info.not_after) / 86400));
        return MDM_ECERT;
    }
    if (now < out->info.not_before) {
        mdm_errf(err, errlen, "the push certificate for %s is not valid yet (notBefore is in %lld s)",
               out->topic, (long long)(out->info.not_before - now));
        return MDM_ECERT;
    }
    return 0;
}

int mdm_pushcert_parse_pem(const char *cert_pem, size_t cert_len, const char *key_pem,
                           size_t key_len, int64_t now, mdm_pushcert_t *out, char *err,
                           size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (cert_len == 0 || key_len == 0 || cert_len > PEM_MAX || key_len > PEM_MAX) {
        mdm_errf(err, errlen, "both the certificate and the key are needed (PEM, at most 1 MiB)");
        return -EINVAL;
    }
    uint8_t *cert = NULL, *key = NULL;
    size_t cl = 0, kl = 0;
    int cr = mdm_x509_pem_to_der(cert_pem, cert_len, false, &cert, &cl);
    int kr = cr == 0 ? mdm_x509_pem_to_der(key_pem, key_len, true, &key, &kl) : 0;
    if (cr == -ENOMEM || kr == -ENOMEM) {
        free(cert);
        return -ENOMEM;
    }
    if (cr != 0 || kr != 0) {
        free(cert);
        mdm_errf(err, errlen, "%s",
               cr != 0 ? "certificate_pem holds no PEM CERTIFICATE block"
                       : "key_pem holds no unencrypted PEM private key (RSA, EC or PKCS#8)");
        return -EINVAL;
    }
    return finish(cert, cl, key, kl, now, out, err, errlen);
}

int mdm_pushcert_parse_pkcs12(const uint8_t *p12, size_t len, const char *password, int64_t now,
                              mdm_pushcert_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (len == 0 || len > PEM_MAX) {
        mdm_errf(err, errlen, "the PKCS#12 is empty or over 1 MiB");
        return -EINVAL;
    }
    uint8_t *cert = NULL, *key = NULL;
    size_t cert_len = 0, key_len = 0;
    int ret = mdm_x509_pkcs12_parse(p12, len, password, &cert, &cert_len, &key, &key_len);
    if (ret == -EBADMSG)
        mdm_errf(err, errlen, "pkcs12_base64 is not a PKCS#12 file");
    else if (ret == MDM_ECRYPTO)
        mdm_errf(err, errlen, "the PKCS#12 cannot be opened: wrong password, or an encryption "
                              "this server does not support");
    else if (ret == MDM_ENOTFOUND)
        mdm_errf(err, errlen, "the PKCS#12 must hold both the certificate and its private key");
    if (ret == -EBADMSG || ret == MDM_ECRYPTO || ret == MDM_ENOTFOUND)
        return -EINVAL;
    if (ret != 0)
        return ret;
    return finish(cert, cert_len, key, key_len, now, out, err, errlen);
}

int64_t mdm_pushcert_days_left(const mdm_pushcert_t *pc, int64_t now)
{
    int64_t d = pc->info.not_after - now;
    return d >= 0 ? d / 86400 : -((-d + 86399) / 86400);
}

int mdm_pushcert_save(mdm_batch_t *b, const uint8_t seal_key[MDM_SEAL_KEY_LEN],
                      const mdm_pushcert_t *pc, uint64_t now_ms)
{
    mdm_buf_t sealed;
    mdm_buf_init(&sealed, 0);
    int ret = mdm_seal(seal_key, MDM_PUSHCERT_SEAL_AAD, strlen(MDM_PUSHCERT_SEAL_AAD), pc->key_der,
                       pc->key_len, &sealed);
    if (ret == 0)
        mdm_store_put_pushcert(b, pc->cert_der, pc->cert_len, now_ms, mdm_buf_head(&sealed),
                               sealed.len);
    mdm_buf_dispose(&sealed);
    return ret;
}

int mdm_pushcert_load(mdm_store_t *s, const uint8_t *seal_key, mdm_pushcert_t *out,
                      uint64_t *uploaded_ms)
{
    memset(out, 0, sizeof(*out));
    mdm_buf_t cert, sealed, key;
    mdm_buf_init(&cert, 0);
    mdm_buf_init(&sealed, 0);
    mdm_buf_init(&key, 0);
    int ret = mdm_store_get_pushcert(s, &cert, uploaded_ms, seal_key ? &sealed : NULL);
    if (ret == 0 && seal_key)
        ret = mdm_unseal(seal_key, MDM_PUSHCERT_SEAL_AAD, strlen(MDM_PUSHCERT_SEAL_AAD),
                         mdm_buf_head(&sealed), sealed.len, &key);
    if (ret == 0) {
        out->cert_der = malloc(cert.len);
        out->key_der = key.len ? malloc(key.len) : NULL;
        if (!out->cert_der || (key.len && !out->key_der)) {
            ret = -ENOMEM;
        } else {
            memcpy(out->cert_der, mdm_buf_head(&cert), cert.len);
            out->cert_len = cert.len;
            if (key.len)
                memcpy(out->key_der, mdm_buf_head(&key), key.len);
            out->key_len = key.len;
            ret = mdm_x509_inspect_der(out->cert_der, out->cert_len, &out->info);
            if (ret == 0)
                ret = mdm_x509_subject_uid(out->cert_der, out->cert_len, out->topic,
                                       sizeof(out->topic));
        }
    }
    if (key.len)
        memset(mdm_buf_head(&key), 0, key.len);
    mdm_buf_dispose(&key);
    mdm_buf_dispose(&cert);
    mdm_buf_dispose(&sealed);
    if (ret != 0)
        mdm_pushcert_dispose(out);
    return ret;
}
