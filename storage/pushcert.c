/* The push certificate records. See pushcert.h. */
#include "storage/pushcert.h"

#include <errno.h>
#include <string.h>

#define PUSHCERT_FORMAT 1
#define HEADER_LEN 9

static const char meta_key[] = "pushcert";
static const char secret_key[] = "\0pushcert"; /* 9 bytes, leading NUL */
#define META_KLEN (sizeof(meta_key) - 1)
#define SECRET_KLEN (sizeof(secret_key) - 1)

void mdm_store_put_pushcert(mdm_batch_t *b, const uint8_t *cert_der, size_t cert_len,
                            uint64_t uploaded_ms, const void *sealed_key, size_t sealed_len)
{
    uint8_t *p = mdm_batch_put_space(b, MDM_CF_META, meta_key, META_KLEN, HEADER_LEN + cert_len);
    if (p) {
        p[0] = PUSHCERT_FORMAT;
        for (int i = 0; i < 8; i++)
            p[1 + i] = (uint8_t)(uploaded_ms >> (56 - 8 * i));
        memcpy(p + HEADER_LEN, cert_der, cert_len);
    }
    mdm_batch_put(b, MDM_CF_SECRETS, secret_key, SECRET_KLEN, sealed_key, sealed_len);
}

void mdm_store_delete_pushcert(mdm_batch_t *b)
{
    mdm_batch_delete(b, MDM_CF_META, meta_key, META_KLEN);
    mdm_batch_delete(b, MDM_CF_SECRETS, secret_key, SECRET_KLEN);
}

int mdm_store_get_pushcert(mdm_store_t *s, mdm_buf_t *cert_der, uint64_t *uploaded_ms,
                           mdm_buf_t *sealed_key)
{
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    int ret = mdm_store_get(s, MDM_CF_META, meta_key, META_KLEN, &v);
    if (ret == 0) {
        const uint8_t *p = mdm_buf_head(&v);
        if (v.len <= HEADER_LEN || p[0] != PUSHCERT_FORMAT) {
            ret = -EBADMSG;
        } else {
            uint64_t ms = 0;
            for (int i = 0; i < 8; i++)
                ms = ms << 8 | p[1 + i];
            if (uploaded_ms)
                *uploaded_ms = ms;
            ret = mdm_buf_append(cert_der, p + HEADER_LEN, v.len - HEADER_LEN);
        }
    }
    mdm_buf_dispose(&v);
    if (ret == 0 && sealed_key) {
        ret = mdm_store_get(s, MDM_CF_SECRETS, secret_key, SECRET_KLEN, sealed_key);
        if (ret == MDM_ENOTFOUND)
            ret = -EBADMSG;
    }
    return ret;
}
