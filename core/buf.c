/* mdm_buf: growable byte buffer with a hard limit (see buf.h). */
#include "core/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mdm_buf_init(mdm_buf_t *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void mdm_buf_dispose(mdm_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

int mdm_buf_reserve(mdm_buf_t *b, size_t n)
{
    if (b->max && b->len + n > b->max)
        return MDM_ETOOBIG;
    if (b->off + b->len + n <= b->cap)
        return 0;
    if (b->off > 0) { /* compact before growing */
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
        if (b->len + n <= b->cap)
            return 0;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int mdm_buf_append(mdm_buf_t *b, const void *p, size_t n)
{
    int ret = mdm_buf_reserve(b, n);
    if (ret != 0)
        return ret;
    if (n)
        memcpy(mdm_buf_tail(b), p, n);
    b->len += n;
    return 0;
}

int mdm_buf_append_str(mdm_buf_t *b, const char *s)
{
    return mdm_buf_append(b, s, strlen(s));
}

int mdm_buf_printf(mdm_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (need < 0)
        return -EINVAL;
    int ret = mdm_buf_reserve(b, (size_t)need + 1);
    if (ret != 0)
        return ret;
    va_start(ap, fmt);
    vsnprintf((char *)mdm_buf_tail(b), (size_t)need + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)need;
    return 0;
}

void mdm_buf_consume(mdm_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->off = b->len = 0;
        return;
    }
    b->off += n;
    b->len -= n;
}
