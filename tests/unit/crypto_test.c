/*
 * core/crypto tests: SHA-256 against FIPS 180-2 vectors, hex form, random bytes that differ
 * from call to call. Fork safety of the DRBG is covered by seal_test (nonces across fork()).
 */
#include <string.h>

#include "check.h"
#include "core/crypto.h"

static void test_sha256(void)
{
    char hex[MDM_SHA256_HEX_LEN + 1];
    CHECK_EQ_INT(mdm_sha256_hex("abc", 3, hex), 0);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK_EQ_INT(mdm_sha256_hex(NULL, 0, hex), 0);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK_EQ_INT(mdm_sha256_hex(two, strlen(two), hex), 0);
    CHECK_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    uint8_t raw[MDM_SHA256_LEN];
    CHECK_EQ_INT(mdm_sha256("abc", 3, raw), 0);
    CHECK(raw[0] == 0xba && raw[31] == 0xad);
}

static void test_random(void)
{
    uint8_t a[32], b[32], zero[32] = {0};
    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    CHECK_EQ_INT(mdm_random_bytes(a, sizeof(a)), 0);
    CHECK_EQ_INT(mdm_random_bytes(b, sizeof(b)), 0);
    CHECK(memcmp(a, b, sizeof(a)) != 0);
    CHECK(memcmp(a, zero, sizeof(a)) != 0);
    CHECK_EQ_INT(mdm_random_bytes(NULL, 0), 0);
}

int main(void)
{
    test_sha256();
    test_random();
    return check_finish("crypto");
}
