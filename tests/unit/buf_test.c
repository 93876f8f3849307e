/* mdm_buf: growth, limits, consume/compaction, printf. */
#include <string.h>

#include "check.h"
#include "core/buf.h"

int main(void)
{
    mdm_buf_t b;
    mdm_buf_init(&b, 1000);
    CHECK_EQ_INT(mdm_buf_append_str(&b, "hello "), 0);
    CHECK_EQ_INT(mdm_buf_printf(&b, "%s %d", "world", 42), 0);
    CHECK_EQ_INT(b.len, 14);
    CHECK(memcmp(mdm_buf_head(&b), "hello world 42", 14) == 0);
    mdm_buf_consume(&b, 6);
    CHECK(memcmp(mdm_buf_head(&b), "world 42", 8) == 0);
    char big[2000];
    memset(big, 'x', sizeof(big));
    CHECK_EQ_INT(mdm_buf_append(&b, big, 993), MDM_ETOOBIG); /* 8 + 993 > 1000 */
    CHECK_EQ_INT(b.len, 8);
    CHECK_EQ_INT(mdm_buf_append(&b, big, 992), 0);
    CHECK_EQ_INT(b.len, 1000);
    CHECK_EQ_INT(mdm_buf_append(&b, "y", 1), MDM_ETOOBIG);
    mdm_buf_consume(&b, 5000);
    CHECK_EQ_INT(b.len, 0);
    CHECK_EQ_INT(b.off, 0);
    /* Compaction: consuming from the head makes room without growing. */
    mdm_buf_t c;
    mdm_buf_init(&c, 0);
    CHECK_EQ_INT(mdm_buf_append(&c, big, 256), 0);
    size_t cap = c.cap;
    mdm_buf_consume(&c, 200);
    CHECK_EQ_INT(mdm_buf_append(&c, big, 150), 0);
    CHECK_EQ_INT(c.cap, cap);
    CHECK_EQ_INT(c.len, 206);
    mdm_buf_dispose(&c);
    mdm_buf_dispose(&b);
    CHECK(mdm_hash64("abc", 3) == mdm_hash64("abc", 3));
    CHECK(mdm_hash64("abc", 3) != mdm_hash64("abd", 3));
    CHECK(strcmp(mdm_strerror(MDM_ETOOBIG), "size limit exceeded") == 0);
    return check_finish("buf");
}
