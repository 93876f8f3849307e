/*
 * core/plist tests: a realistic check-in body; XML and binary round trips through the
 * builders; every getter's missing and wrong-type cases; malformed XML; every prefix of an
 * XML and a binary document (each in an exact-size heap buffer so ASan sees over-reads);
 * single-byte corruption of a binary document; nesting limits in both formats (100000 levels
 * must be refused without touching libplist); a binary "reference bomb" and a reference
 * cycle; non-dictionary roots; large data; serialisation against a size-limited buffer.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "core/buf.h"
#include "core/plist.h"

#define DEPTH MDM_PLIST_DEPTH_DEFAULT

static const char checkin[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST "
    "1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\"><plist version=\"1.0\"><dict>"
    "<key>MessageType</key><string>Authenticate</string><key>Topic</key>"
    "<string>com.apple.mgmt.External.x</string><key>UDID</key>"
    "<string>0000FE00-5C1D2F0A3E4B</string><key>SerialNumber</key><string>C02XK1ABCDEF</string>"
    "<key>Model</key><string>MacBookPro18,3</string><key>OSVersion</key><string>14.4</string>"
    "</dict></plist>";

/* Parses a C string as a plist; returns the code, stores the tree (or NULL) and the reason. */
static int parse_str(const char *s, size_t depth, plist_t *out, char *err, size_t errlen)
{
    return mdm_plist_parse(s, strlen(s), depth, out, err, errlen);
}

/* Parses a copy of data in an exact-size heap buffer and frees the tree. */
static int parse_copy(const uint8_t *data, size_t len, size_t depth, bool dict)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        exit(99);
    if (len)
        memcpy(copy, data, len);
    plist_t p = NULL;
    char err[128];
    int ret = dict ? mdm_plist_parse_dict(copy, len, depth, &p, err, sizeof(err))
                   : mdm_plist_parse(copy, len, depth, &p, err, sizeof(err));
    if (ret == 0 && !p)
        ret = 12345; /* success without a tree: make the caller's check fail */
    if (ret != 0 && p)
        ret = 12346; /* failure with a tree */
    if (p)
        plist_free(p);
    free(copy);
    return ret;
}

static void test_checkin(void)
{
    plist_t d = NULL;
    char err[128] = "";
    CHECK_EQ_INT(mdm_plist_parse_dict(checkin, strlen(checkin), DEPTH, &d, err, sizeof(err)), 0);
    CHECK(d != NULL);
    if (!d)
        return;
    const char *s = NULL;
    CHECK_EQ_INT(mdm_plist_get_string(d, "MessageType", &s), 0);
    CHECK_STR(s, "Authenticate");
    CHECK_EQ_INT(mdm_plist_get_string(d, "Topic", &s), 0);
    CHECK_STR(s, "com.apple.mgmt.External.x");
    CHECK_EQ_INT(mdm_plist_get_string(d, "UDID", &s), 0);
    CHECK_STR(s, "0000FE00-5C1D2F0A3E4B");
    CHECK_EQ_INT(mdm_plist_get_string(d, "SerialNumber", &s), 0);
    CHECK_STR(s, "C02XK1ABCDEF");
    CHECK_EQ_INT(mdm_plist_get_string(d, "Model", &s), 0);
    CHECK_STR(s, "MacBookPro18,3");
    CHECK_EQ_INT(mdm_plist_get_string(d, "OSVersion", &s), 0);
    CHECK_STR(s, "14.4");
    CHECK_EQ_INT(mdm_plist_get_string(d, "DeviceName", &s), MDM_ENOTFOUND);
    CHECK_STR(s, "14.4"); /* untouched on failure */
    plist_free(d);

    /* A byte order mark and white space before the XML are fine. */
    char with_bom[sizeof(checkin) + 8];
    snprintf(with_bom, sizeof(with_bom), "\xEF\xBB\xBF \r\n\t%s", checkin);
    CHECK_EQ_INT(parse_copy((const uint8_t *)with_bom, strlen(with_bom), DEPTH, true), 0);
    /* No XML declaration, just <plist>. */
    CHECK_EQ_INT(parse_copy((const uint8_t *)"<plist><dict/></plist>", 22, DEPTH, true), 0);
}

static void test_getters(void)
{
    static const char doc[] =
        "<plist><dict><key>s</key><string>str</string><key>t</key><true/>"
        "<key>f</key><false/><key>u</key><integer>42</integer><key>neg</key>"
        "<integer>-1</integer><key>d</key><data>AAEC/w==</data><key>e</key><data></data>"
        "<key>sub</key><dict><key>x</key><string>y</string></dict><key>a</key><array>"
        "<string>one</string><integer>2</integer></array><key>r</key><real>1.5</real>"
        "<key>dup</key><string>first</string><key>dup</key><string>second</string>"
        "</dict></plist>";
    plist_t d = NULL;
    char err[128] = "";
    CHECK_EQ_INT(parse_str(doc, DEPTH, &d, err, sizeof(err)), 0);
    if (!d)
        return;
    const char *s = "untouched";
    bool b = false;
    uint64_t u = 7;
    const uint8_t *data = NULL;
    size_t len = 99;
    plist_t n = NULL;

    CHECK_EQ_INT(mdm_plist_get_string(d, "s", &s), 0);
    CHECK_STR(s, "str");
    CHECK_EQ_INT(mdm_plist_get_bool(d, "t", &b), 0);
    CHECK(b == true);
    CHECK_EQ_INT(mdm_plist_get_bool(d, "f", &b), 0);
    CHECK(b == false);
    CHECK_EQ_INT(mdm_plist_get_uint(d, "u", &u), 0);
    CHECK_EQ_INT(u, 42);
    CHECK_EQ_INT(mdm_plist_get_uint(d, "neg", &u), 0);
    CHECK(u == UINT64_MAX); /* libplist 2.2: two's complement, documented */
    CHECK_EQ_INT(mdm_plist_get_data(d, "d", &data, &len), 0);
    CHECK_EQ_INT(len, 4);
    CHECK(data && memcmp(data, "\x00\x01\x02\xff", 4) == 0);
    CHECK_EQ_INT(mdm_plist_get_data(d, "e", &data, &len), 0);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(mdm_plist_get_dict(d, "sub", &n), 0);
    CHECK(n && plist_get_node_type(n) == PLIST_DICT);
    CHECK_EQ_INT(mdm_plist_get_string(n, "x", &s), 0);
    CHECK_STR(s, "y");
    CHECK_EQ_INT(mdm_plist_get_array(d, "a", &n), 0);
    CHECK(n && plist_array_get_size(n) == 2);
    CHECK_EQ_INT(mdm_plist_get_string(d, "dup", &s), 0);
    CHECK_STR(s, "second"); /* the last duplicate wins, documented */

    /* Missing keys. */
    s = "keep";
    b = true;
    u = 7;
    data = (const uint8_t *)"keep";
    len = 99;
    n = (plist_t)&len;
    CHECK_EQ_INT(mdm_plist_get_string(d, "nope", &s), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_plist_get_bool(d, "nope", &b), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_plist_get_uint(d, "nope", &u), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_plist_get_data(d, "nope", &data, &len), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_plist_get_dict(d, "nope", &n), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_plist_get_array(d, "nope", &n), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_plist_get_string(d, "", &s), MDM_ENOTFOUND);

    /* Wrong types: each getter against a value of every other type. */
    CHECK_EQ_INT(mdm_plist_get_string(d, "t", &s), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_string(d, "u", &s), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_string(d, "d", &s), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_string(d, "sub", &s), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_bool(d, "s", &b), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_bool(d, "u", &b), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_uint(d, "s", &u), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_uint(d, "t", &u), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_uint(d, "r", &u), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_data(d, "s", &data, &len), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_data(d, "a", &data, &len), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_dict(d, "a", &n), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_dict(d, "s", &n), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_array(d, "sub", &n), -EINVAL);
    CHECK_EQ_INT(mdm_plist_get_array(d, "d", &n), -EINVAL);
    /* Outputs untouched by every failure above. */
    CHECK_STR(s, "keep");
    CHECK(b == true);
    CHECK_EQ_INT(u, 7);
    CHECK(data && memcmp(data, "keep", 4) == 0);
    CHECK_EQ_INT(len, 99);
    CHECK(n == (plist_t)&len);
    plist_free(d);
}

/* Builds a dictionary with every value type the builders offer. */
static plist_t build_sample(const uint8_t *big, size_t big_len)
{
    plist_t d = plist_new_dict();
    if (!d)
        exit(99);
    int r = 0;
    r |= mdm_plist_dict_set_string(d, "RequestType", "DeviceInformation");
    r |= mdm_plist_dict_set_string(d, "Unicode", "gr\xc3\xbc\xc3\x9f <&> \"x\"");
    r |= mdm_plist_dict_set_string(d, "Empty", "");
    r |= mdm_plist_dict_set_bool(d, "Yes", true);
    r |= mdm_plist_dict_set_bool(d, "No", false);
    r |= mdm_plist_dict_set_uint(d, "Zero", 0);
    r |= mdm_plist_dict_set_uint(d, "Big", 1ull << 62);
    r |= mdm_plist_dict_set_data(d, "Blob", "\x00\x01\xfe\xff", 4);
    r |= mdm_plist_dict_set_data(d, "NoBytes", NULL, 0);
    if (big)
        r |= mdm_plist_dict_set_data(d, "Large", big, big_len);
    plist_t q = plist_new_array();
    r |= mdm_plist_array_append_string(q, "UDID");
    r |= mdm_plist_array_append_string(q, "SerialNumber");
    r |= mdm_plist_array_append_item(q, plist_new_bool(1));
    r |= mdm_plist_dict_set_item(d, "Queries", q);
    plist_t sub = plist_new_dict();
    r |= mdm_plist_dict_set_string(sub, "Inner", "value");
    r |= mdm_plist_dict_set_item(d, "Command", sub);
    r |= mdm_plist_dict_set_string(d, "Replaced", "old");
    r |= mdm_plist_dict_set_string(d, "Replaced", "new");
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_INT(mdm_plist_dict_set_item(d, "Null", NULL), -ENOMEM);
    CHECK_EQ_INT(mdm_plist_array_append_item(q, NULL), -ENOMEM);
    return d;
}

static void check_sample(plist_t d, const uint8_t *big, size_t big_len)
{
    const char *s = NULL;
    bool b = false;
    uint64_t u = 1;
    const uint8_t *data = NULL;
    size_t len = 0;
    plist_t n = NULL;
    CHECK_EQ_INT(mdm_plist_get_string(d, "RequestType", &s), 0);
    CHECK_STR(s, "DeviceInformation");
    CHECK_EQ_INT(mdm_plist_get_string(d, "Unicode", &s), 0);
    CHECK_STR(s, "gr\xc3\xbc\xc3\x9f <&> \"x\"");
    CHECK_EQ_INT(mdm_plist_get_string(d, "Empty", &s), 0);
    CHECK_STR(s, "");
    CHECK_EQ_INT(mdm_plist_get_bool(d, "Yes", &b), 0);
    CHECK(b);
    CHECK_EQ_INT(mdm_plist_get_bool(d, "No", &b), 0);
    CHECK(!b);
    CHECK_EQ_INT(mdm_plist_get_uint(d, "Zero", &u), 0);
    CHECK(u == 0);
    CHECK_EQ_INT(mdm_plist_get_uint(d, "Big", &u), 0);
    CHECK(u == 1ull << 62);
    CHECK_EQ_INT(mdm_plist_get_data(d, "Blob", &data, &len), 0);
    CHECK(len == 4 && data && memcmp(data, "\x00\x01\xfe\xff", 4) == 0);
    CHECK_EQ_INT(mdm_plist_get_data(d, "NoBytes", &data, &len), 0);
    CHECK_EQ_INT(len, 0);
    if (big) {
        CHECK_EQ_INT(mdm_plist_get_data(d, "Large", &data, &len), 0);
        CHECK(len == big_len && data && memcmp(data, big, big_len) == 0);
    }
    CHECK_EQ_INT(mdm_plist_get_array(d, "Queries", &n), 0);
    CHECK(n && plist_array_get_size(n) == 3);
    if (n && plist_array_get_size(n) == 3) {
        CHECK(plist_string_val_compare(plist_array_get_item(n, 0), "UDID") == 0);
        CHECK(plist_get_node_type(plist_array_get_item(n, 2)) == PLIST_BOOLEAN);
    }
    CHECK_EQ_INT(mdm_plist_get_dict(d, "Command", &n), 0);
    CHECK_EQ_INT(mdm_plist_get_string(n, "Inner", &s), 0);
    CHECK_STR(s, "value");
    CHECK_EQ_INT(mdm_plist_get_string(d, "Replaced", &s), 0);
    CHECK_STR(s, "new");
    CHECK_EQ_INT(mdm_plist_get_string(d, "Null", &s), MDM_ENOTFOUND);
}

static void test_round_trips(void)
{
    size_t big_len = 3 * 1024 * 1024 + 7; /* a large profile payload */
    uint8_t *big = malloc(big_len);
    if (!big)
        exit(99);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)(i * 131 + (i >> 9));

    for (int with_big = 0; with_big < 2; with_big++) {
        plist_t d = build_sample(with_big ? big : NULL, big_len);
        check_sample(d, with_big ? big : NULL, big_len);

        mdm_buf_t xml, bin;
        mdm_buf_init(&xml, 0);
        mdm_buf_init(&bin, 0);
        CHECK_EQ_INT(mdm_buf_append_str(&xml, "prefix"), 0);
        CHECK_EQ_INT(mdm_plist_to_xml(d, &xml), 0);
        CHECK_EQ_INT(mdm_plist_to_bin(d, &bin), 0);
        CHECK(xml.len > 6 && memcmp(mdm_buf_head(&xml), "prefix<?xml", 11) == 0);
        CHECK(bin.len > 8 && memcmp(mdm_buf_head(&bin), "bplist00", 8) == 0);

        plist_t x = NULL, y = NULL;
        char err[128] = "";
        CHECK_EQ_INT(mdm_plist_parse_dict(mdm_buf_head(&xml) + 6, xml.len - 6, DEPTH, &x, err,
                                          sizeof(err)),
                     0);
        CHECK_EQ_INT(
            mdm_plist_parse_dict(mdm_buf_head(&bin), bin.len, DEPTH, &y, err, sizeof(err)), 0);
        if (x)
            check_sample(x, with_big ? big : NULL, big_len);
        if (y)
            check_sample(y, with_big ? big : NULL, big_len);

        /* A limit too small for the output: MDM_ETOOBIG, buffer unchanged. */
        mdm_buf_t small;
        mdm_buf_init(&small, 64);
        CHECK_EQ_INT(mdm_buf_append_str(&small, "keep"), 0);
        CHECK_EQ_INT(mdm_plist_to_xml(d, &small), MDM_ETOOBIG);
        CHECK_EQ_INT(mdm_plist_to_bin(d, &small), MDM_ETOOBIG);
        CHECK(small.len == 4 && memcmp(mdm_buf_head(&small), "keep", 4) == 0);
        mdm_buf_dispose(&small);

        if (x)
            plist_free(x);
        if (y)
            plist_free(y);
        plist_free(d);
        mdm_buf_dispose(&xml);
        mdm_buf_dispose(&bin);
    }
    free(big);
}

static void test_malformed(void)
{
    static const char *const bad[] = {
        "<plist><dict><key>a</key><string>x</string></plist>",
        "<plist><dict><key>a</key><string>x</string></dict>",
        "<plist><dict><key>a</key><string>x</dict></plist>",
        "<plist><dict><string>value without key</string></dict></plist>",
        "<plist><dict/></plist>trailing garbage",
        "<plist><dict/><dict/></plist>",
        "<plist><dict><key>a</key><string>&bogus;</string></dict></plist>",
        "<plist><dict><key>a</key><string>nul &#0; inside</string></dict></plist>",
        "<plist><dict><key>a</key><data>!!!</data></dict></plist>",
        "<plist><dict><key>a</key><data>QUJ</data></dict></plist>",
        "<plist><dict><key>a</key><data>QUJD=</data></dict></plist>",
        "<plist><dict><key>a</key><data>QQ==QQ==</data></dict></plist>",
        "<plist><dict><key>a</key><data>QUJD",
        "<plist><dict><key>a</key><string>x</string></dict>",
        "<plist><dict><key>a</key><string>x</string>",
        "<plist><dict><key>a</key><unknown/></dict></plist>",
        "<plist><dict><!-- unterminated comment </dict></plist>",
        "<plist><dict><key>a</key><string><![CDATA[unterminated</string></dict></plist>",
        "<plist><dict><key>a</key><string>x</string></dict></plist",
        "<plist><dict attr=\"unterminated></dict></plist>",
        "<?xml version=\"1.0\"?>",
        "<?xml",
        "<plist",
        "<plist>",
        "<!DOCTYPE plist [ <!ENTITY x \"y\"> ]><plist><string>&x;</string></plist>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        plist_t p = (plist_t)&p;
        char err[128] = "";
        int ret = parse_str(bad[i], DEPTH, &p, err, sizeof(err));
        if (ret != -EBADMSG)
            fprintf(stderr, "malformed #%zu: got %d (%s)\n", i, ret, err);
        CHECK_EQ_INT(ret, -EBADMSG);
        CHECK(p == NULL);
        CHECK(err[0] != '\0');
        if (p)
            plist_free(p);
    }

    /* Not a property list at all: a clear reason. */
    static const char *const alien[] = {"{\"json\": true}", "hello", "   ", "\xEF\xBB\xBF",
                                         "<html><body/></html>", "bplist0", "<dict/>"};
    for (size_t i = 0; i < sizeof(alien) / sizeof(alien[0]); i++) {
        plist_t p = NULL;
        char err[128] = "";
        CHECK_EQ_INT(parse_str(alien[i], DEPTH, &p, err, sizeof(err)), -EBADMSG);
        CHECK(strstr(err, "not a property list") != NULL);
    }
    plist_t p = NULL;
    char err[128] = "";
    CHECK_EQ_INT(mdm_plist_parse("", 0, DEPTH, &p, err, sizeof(err)), -EBADMSG);
    CHECK_STR(err, "plist is empty");
    CHECK_EQ_INT(parse_str("<plist><dict><key>a</key></plist>", DEPTH, &p, err, sizeof(err)),
                 -EBADMSG);
    CHECK_STR(err, "plist is not well-formed");
    /* err may be omitted. */
    CHECK_EQ_INT(mdm_plist_parse("<plist>", 7, DEPTH, &p, NULL, 0), -EBADMSG);

    /* <data> with white space inside the base64 is fine. */
    CHECK_EQ_INT(parse_str("<plist><dict><key>d</key><data>\n\tQU JD\n\tRA==\n</data>"
                           "<key>e</key><data/></dict></plist>",
                           DEPTH, &p, err, sizeof(err)),
                 0);
    if (p) {
        const uint8_t *d = NULL;
        size_t dl = 0;
        CHECK_EQ_INT(mdm_plist_get_data(p, "d", &d, &dl), 0);
        CHECK(dl == 4 && d && memcmp(d, "ABCD", 4) == 0);
        CHECK_EQ_INT(mdm_plist_get_data(p, "e", &d, &dl), 0);
        CHECK_EQ_INT(dl, 0);
        plist_free(p);
    }

    /* The pre-scan honours comments, CDATA, quoted '>' and self-closing tags. */
    static const char tricky[] =
        "<?xml version=\"1.0\"?><!-- <array><array><array> --><plist version=\"1>0\">"
        "<dict><key>c</key><string><![CDATA[<array><array><array><array>]]></string>"
        "<key>t</key><true/><key>e</key><array/><key>f</key><dict /></dict></plist>";
    CHECK_EQ_INT(parse_str(tricky, 2, &p, err, sizeof(err)), 0);
    if (p) {
        const char *s = NULL;
        CHECK_EQ_INT(mdm_plist_get_string(p, "c", &s), 0);
        CHECK_STR(s, "<array><array><array><array>");
        plist_free(p);
    }
}

/* Every proper prefix of data must fail cleanly; the whole must parse. */
static void every_prefix(const uint8_t *data, size_t len, const char *what)
{
    int bad = 0;
    for (size_t n = 0; n < len; n++) {
        int ret = parse_copy(data, n, DEPTH, false);
        if (ret != -EBADMSG && ret != MDM_ETOOBIG) {
            if (bad++ < 5)
                fprintf(stderr, "%s prefix %zu/%zu: %d\n", what, n, len, ret);
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(parse_copy(data, len, DEPTH, true), 0);
}

static void test_truncation_and_corruption(void)
{
    every_prefix((const uint8_t *)checkin, strlen(checkin), "xml");

    plist_t d = build_sample(NULL, 0);
    mdm_buf_t bin;
    mdm_buf_init(&bin, 0);
    CHECK_EQ_INT(mdm_plist_to_bin(d, &bin), 0);
    plist_free(d);
    every_prefix(mdm_buf_head(&bin), bin.len, "binary");

    /* Each byte of the binary document replaced by a few values: no crash, no leak, and a
     * clean code. Results vary (a changed string byte still parses). */
    uint8_t *copy = malloc(bin.len);
    if (!copy)
        exit(99);
    static const uint8_t values[] = {0x00, 0x01, 0x0f, 0x7f, 0x80, 0xaf, 0xdf, 0xff};
    int unclean = 0;
    for (size_t i = 0; i < bin.len; i++) {
        for (size_t v = 0; v < sizeof(values); v++) {
            memcpy(copy, mdm_buf_head(&bin), bin.len);
            copy[i] = values[v];
            int ret = parse_copy(copy, bin.len, DEPTH, false);
            if (ret != 0 && ret != -EBADMSG && ret != MDM_ETOOBIG)
                unclean++;
        }
    }
    CHECK_EQ_INT(unclean, 0);
    free(copy);

    /* The same for the XML check-in body. */
    size_t xl = strlen(checkin);
    copy = malloc(xl);
    if (!copy)
        exit(99);
    unclean = 0;
    for (size_t i = 0; i < xl; i++) {
        memcpy(copy, checkin, xl);
        copy[i] = (uint8_t)(copy[i] == '<' ? '>' : copy[i] == '>' ? '<' : 0);
        int ret = parse_copy(copy, xl, DEPTH, false);
        if (ret != 0 && ret != -EBADMSG && ret != MDM_ETOOBIG)
            unclean++;
    }
    CHECK_EQ_INT(unclean, 0);
    free(copy);
    mdm_buf_dispose(&bin);
}

/* ---- hand-made binary plists ---------------------------------------------------------- */

/* Appends a big-endian integer of n bytes. */
static void put_be(mdm_buf_t *b, uint64_t v, unsigned n)
{
    uint8_t tmp[8];
    for (unsigned i = 0; i < n; i++)
        tmp[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    if (mdm_buf_append(b, tmp, n) != 0)
        exit(99);
}

/* Appends the offset table and the trailer (offsets and references are 4 bytes). */
static void bp_finish(mdm_buf_t *b, const uint64_t *offs, uint64_t n, uint64_t root)
{
    uint64_t table = b->len;
    for (uint64_t i = 0; i < n; i++)
        put_be(b, offs[i], 4);
    static const uint8_t pad[6] = {0};
    if (mdm_buf_append(b, pad, sizeof(pad)) != 0)
        exit(99);
    put_be(b, 4, 1);
    put_be(b, 4, 1);
    put_be(b, n, 8);
    put_be(b, root, 8);
    put_be(b, table, 8);
}

/* n nested single-element arrays (the innermost empty); kind 0xA0 array, 0xD0 dict. */
static void bp_nested(mdm_buf_t *b, size_t n, uint8_t kind)
{
    size_t objs = kind == 0xD0 ? n + 1 : n; /* dictionaries also need a key object */
    uint64_t *offs = calloc(objs, sizeof(*offs));
    if (!offs)
        exit(99);
    if (mdm_buf_append(b, "bplist00", 8) != 0)
        exit(99);
    uint64_t key = n; /* index of the shared key "k" */
    for (size_t i = 0; i < n; i++) {
        offs[i] = b->len;
        bool last = i + 1 == n;
        put_be(b, kind | (last ? 0 : 1), 1);
        if (!last) {
            if (kind == 0xD0)
                put_be(b, key, 4);
            put_be(b, i + 1, 4);
        }
    }
    if (kind == 0xD0) {
        offs[key] = b->len;
        put_be(b, 0x51, 1);
        put_be(b, 'k', 1);
    }
    bp_finish(b, offs, objs, 0);
    free(offs);
}

static void test_depth(void)
{
    const size_t deep = 100000;
    char err[128];
    plist_t p = NULL;

    /* XML: 100000 nested arrays and dictionaries, refused before libplist runs. */
    mdm_buf_t x;
    mdm_buf_init(&x, 0);
    int r = mdm_buf_append_str(&x, "<?xml version=\"1.0\"?><plist>");
    for (size_t i = 0; i < deep; i++)
        r |= mdm_buf_append_str(&x, "<array>");
    for (size_t i = 0; i < deep; i++)
        r |= mdm_buf_append_str(&x, "</array>");
    r |= mdm_buf_append_str(&x, "</plist>");
    CHECK_EQ_INT(r, 0);
    err[0] = '\0';
    CHECK_EQ_INT(mdm_plist_parse(mdm_buf_head(&x), x.len, DEPTH, &p, err, sizeof(err)),
                 MDM_ETOOBIG);
    CHECK_STR(err, "nesting deeper than 32");
    CHECK(p == NULL);
    /* Even with the largest allowed limit. */
    CHECK_EQ_INT(mdm_plist_parse(mdm_buf_head(&x), x.len, MDM_PLIST_DEPTH_LIMIT, &p, err,
                                 sizeof(err)),
                 MDM_ETOOBIG);
    mdm_buf_reset(&x);
    r = mdm_buf_append_str(&x, "<plist>");
    for (size_t i = 0; i < deep; i++)
        r |= mdm_buf_append_str(&x, "<dict><key>k</key>");
    /* unterminated on purpose: refused for depth before anything else */
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_INT(mdm_plist_parse(mdm_buf_head(&x), x.len, DEPTH, &p, err, sizeof(err)),
                 MDM_ETOOBIG);

    /* XML: exactly the limit passes, one more fails (arrays and dictionaries). */
    for (size_t limit = 1; limit <= 40; limit += 13) {
        for (size_t extra = 0; extra < 2; extra++) {
            for (int dict = 0; dict < 2; dict++) {
                mdm_buf_reset(&x);
                r = mdm_buf_append_str(&x, "<plist>");
                size_t n = limit + extra;
                for (size_t i = 0; i < n; i++)
                    r |= mdm_buf_append_str(&x, dict ? "<dict><key>k</key>" : "<array>");
                r |= mdm_buf_append_str(&x, "<string>leaf</string>");
                for (size_t i = 0; i < n; i++)
                    r |= mdm_buf_append_str(&x, dict ? "</dict>" : "</array>");
                r |= mdm_buf_append_str(&x, "</plist>");
                CHECK_EQ_INT(r, 0);
                int ret = parse_copy(mdm_buf_head(&x), x.len, limit, false);
                CHECK_EQ_INT(ret, extra ? MDM_ETOOBIG : 0);
            }
        }
    }
    mdm_buf_dispose(&x);

    /* Binary: the same, hand-made (libplist's own writer overflows its stack at this depth). */
    mdm_buf_t b;
    mdm_buf_init(&b, 0);
    bp_nested(&b, deep, 0xA0);
    err[0] = '\0';
    CHECK_EQ_INT(mdm_plist_parse(mdm_buf_head(&b), b.len, DEPTH, &p, err, sizeof(err)),
                 MDM_ETOOBIG);
    CHECK_STR(err, "nesting deeper than 32");
    mdm_buf_reset(&b);
    bp_nested(&b, deep, 0xD0);
    CHECK_EQ_INT(mdm_plist_parse(mdm_buf_head(&b), b.len, DEPTH, &p, err, sizeof(err)),
                 MDM_ETOOBIG);
    for (size_t limit = 1; limit <= 40; limit += 13) {
        for (size_t extra = 0; extra < 2; extra++) {
            for (int dict = 0; dict < 2; dict++) {
                mdm_buf_reset(&b);
                bp_nested(&b, limit + extra, dict ? 0xD0 : 0xA0);
                int ret = parse_copy(mdm_buf_head(&b), b.len, limit, false);
                CHECK_EQ_INT(ret, extra ? MDM_ETOOBIG : 0);
            }
        }
    }
    mdm_buf_dispose(&b);
}

static void test_reference_tricks(void)
{
    char err[128] = "";
    plist_t p = NULL;
    mdm_buf_t b;
    mdm_buf_init(&b, 0);

    /* 30 arrays, each holding the next one twice: 150 bytes that libplist would expand to
     * 2^31 nodes. Refused at once. */
    const size_t levels = 30;
    uint64_t offs[64];
    CHECK_EQ_INT(mdm_buf_append(&b, "bplist00", 8), 0);
    for (size_t i = 0; i < levels; i++) {
        offs[i] = b.len;
        put_be(&b, 0xA2, 1);
        put_be(&b, i + 1, 4);
        put_be(&b, i + 1, 4);
    }
    offs[levels] = b.len;
    put_be(&b, 0x09, 1); /* true */
    bp_finish(&b, offs, levels + 1, 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ_INT(mdm_plist_parse(mdm_buf_head(&b), b.len, DEPTH, &p, err, sizeof(err)),
                 MDM_ETOOBIG);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(strstr(err, "expands beyond") != NULL);
    CHECK(t1.tv_sec - t0.tv_sec < 2);

    /* Moderate sharing is fine: 5 levels of 2 (63 nodes from 76 bytes). */
    mdm_buf_reset(&b);
    CHECK_EQ_INT(mdm_buf_append(&b, "bplist00", 8), 0);
    for (size_t i = 0; i < 5; i++) {
        offs[i] = b.len;
        put_be(&b, 0xA2, 1);
        put_be(&b, i + 1, 4);
        put_be(&b, i + 1, 4);
    }
    offs[5] = b.len;
    put_be(&b, 0x09, 1);
    bp_finish(&b, offs, 6, 0);
    CHECK_EQ_INT(parse_copy(mdm_buf_head(&b), b.len, DEPTH, false), 0);

    /* One shared megabyte of data referenced 100000 times: a 100 GB copy in libplist. */
    mdm_buf_reset(&b);
    CHECK_EQ_INT(mdm_buf_append(&b, "bplist00", 8), 0);
    const size_t refs = 100000, blob = 1 << 20;
    uint64_t two[2];
    two[0] = b.len;
    put_be(&b, 0xAF, 1);
    put_be(&b, 0x12, 1);
    put_be(&b, refs, 4);
    for (size_t i = 0; i < refs; i++)
        put_be(&b, 1, 4);
    two[1] = b.len;
    put_be(&b, 0x4F, 1);
    put_be(&b, 0x12, 1);
    put_be(&b, blob, 4);
    CHECK_EQ_INT(mdm_buf_reserve(&b, blob), 0);
    memset(mdm_buf_tail(&b), 'A', blob);
    mdm_buf_commit(&b, blob);
    bp_finish(&b, two, 2, 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ_INT(mdm_plist_parse(mdm_buf_head(&b), b.len, DEPTH, &p, err, sizeof(err)),
                 MDM_ETOOBIG);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(strstr(err, "expands beyond") != NULL);
    CHECK(t1.tv_sec - t0.tv_sec < 2);

    /* What real writers do is fine: libplist's writer shares equal keys and values. */
    plist_t list = plist_new_array();
    int r = 0;
    for (int i = 0; i < 5000; i++) {
        plist_t app = plist_new_dict();
        r |= mdm_plist_dict_set_string(app, "Identifier", "com.example.same-for-every-entry");
        r |= mdm_plist_dict_set_string(app, "ShortVersion", "1.0");
        r |= mdm_plist_dict_set_bool(app, "IsValidated", true);
        r |= mdm_plist_dict_set_uint(app, "BundleSize", 4096);
        r |= mdm_plist_array_append_item(list, app);
    }
    plist_t top = plist_new_dict();
    r |= mdm_plist_dict_set_item(top, "InstalledApplicationList", list);
    CHECK_EQ_INT(r, 0);
    mdm_buf_reset(&b);
    CHECK_EQ_INT(mdm_plist_to_bin(top, &b), 0);
    plist_free(top);
    CHECK_EQ_INT(parse_copy(mdm_buf_head(&b), b.len, DEPTH, true), 0);

    /* A reference cycle: an array that holds itself. */
    mdm_buf_reset(&b);
    CHECK_EQ_INT(mdm_buf_append(&b, "bplist00", 8), 0);
    offs[0] = b.len;
    put_be(&b, 0xA1, 1);
    put_be(&b, 0, 4);
    bp_finish(&b, offs, 1, 0);
    CHECK_EQ_INT(mdm_plist_parse(mdm_buf_head(&b), b.len, DEPTH, &p, err, sizeof(err)),
                 -EBADMSG);
    CHECK(strstr(err, "cycle") != NULL);

    /* A reference past the object table, and a count larger than the object area. */
    mdm_buf_reset(&b);
    CHECK_EQ_INT(mdm_buf_append(&b, "bplist00", 8), 0);
    offs[0] = b.len;
    put_be(&b, 0xA1, 1);
    put_be(&b, 7, 4);
    bp_finish(&b, offs, 1, 0);
    CHECK_EQ_INT(parse_copy(mdm_buf_head(&b), b.len, DEPTH, false), -EBADMSG);
    mdm_buf_reset(&b);
    CHECK_EQ_INT(mdm_buf_append(&b, "bplist00", 8), 0);
    offs[0] = b.len;
    put_be(&b, 0xAF, 1);
    put_be(&b, 0x13, 1);
    put_be(&b, 1ull << 62, 8);
    bp_finish(&b, offs, 1, 0);
    CHECK_EQ_INT(parse_copy(mdm_buf_head(&b), b.len, DEPTH, false), -EBADMSG);

    /* A string with an embedded NUL byte: libplist 2.2 cuts it at the NUL; were the length
     * kept, the getter would refuse it. Either way C code never sees two different strings. */
    mdm_buf_reset(&b);
    CHECK_EQ_INT(mdm_buf_append(&b, "bplist00", 8), 0);
    offs[0] = b.len;
    put_be(&b, 0xD1, 1);
    put_be(&b, 1, 4);
    put_be(&b, 2, 4);
    offs[1] = b.len;
    CHECK_EQ_INT(mdm_buf_append(&b, "\x51" "a", 2), 0);
    offs[2] = b.len;
    CHECK_EQ_INT(mdm_buf_append(&b, "\x53" "x\0y", 4), 0);
    bp_finish(&b, offs, 3, 0);
    CHECK_EQ_INT(mdm_plist_parse_dict(mdm_buf_head(&b), b.len, DEPTH, &p, err, sizeof(err)), 0);
    if (p) {
        const char *s = "keep";
        int r = mdm_plist_get_string(p, "a", &s);
        CHECK(r == -EINVAL || r == 0);
        CHECK_STR(s, r == 0 ? "x" : "keep");
        plist_free(p);
    }
    mdm_buf_dispose(&b);
}

static void test_roots(void)
{
    static const char *const roots[] = {
        "<plist><array><string>a</string></array></plist>",
        "<plist><string>just a string</string></plist>",
        "<plist><integer>5</integer></plist>",
        "<plist><true/></plist>",
        "<plist><data>AA==</data></plist>",
    };
    for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
        plist_t p = NULL;
        char err[128] = "";
        CHECK_EQ_INT(parse_str(roots[i], DEPTH, &p, err, sizeof(err)), 0);
        if (p)
            plist_free(p);
        p = (plist_t)&p;
        CHECK_EQ_INT(mdm_plist_parse_dict(roots[i], strlen(roots[i]), DEPTH, &p, err,
                                          sizeof(err)),
                     -EBADMSG);
        CHECK_STR(err, "root is not a dictionary");
        CHECK(p == NULL);

        /* The same roots in binary form. */
        plist_t q = NULL;
        CHECK_EQ_INT(parse_str(roots[i], DEPTH, &q, err, sizeof(err)), 0);
        if (!q)
            continue;
        mdm_buf_t b;
        mdm_buf_init(&b, 0);
        CHECK_EQ_INT(mdm_plist_to_bin(q, &b), 0);
        plist_free(q);
        CHECK_EQ_INT(parse_copy(mdm_buf_head(&b), b.len, DEPTH, false), 0);
        CHECK_EQ_INT(parse_copy(mdm_buf_head(&b), b.len, DEPTH, true), -EBADMSG);
        mdm_buf_dispose(&b);
    }
}

int main(void)
{
    test_checkin();
    test_getters();
    test_round_trips();
    test_malformed();
    test_truncation_and_corruption();
    test_depth();
    test_reference_tricks();
    test_roots();
    return check_finish("plist");
}
