/*
 * Property lists on libplist 2.2: guarded parsing, typed getters, builders.
 *
 * Design:
 * - libplist parses, writes and frees trees recursively (measured with 2.2 on an 8 MiB
 *   stack: 10^6 nested XML arrays crash the parser, 10^5 nested arrays crash plist_to_bin;
 *   shard threads with smaller stacks crash sooner), and its binary parser re-parses an
 *   object once per reference, so a DAG of shared arrays expands exponentially. Neither can be
 *   stopped from outside once libplist runs, so both formats are pre-scanned here:
 *   - XML: a linear scan counts open elements (skipping comments, CDATA, processing
 *     instructions and the DOCTYPE, honouring quoted attribute values) and refuses more
 *     than max_depth + 2 open elements (<plist> and a leaf element around max_depth
 *     containers). libplist's tree is never deeper than that count. The same scan refuses
 *     two things libplist 2.2 lets through: elements left open at the end (a body cut
 *     after "</dict>" parses), and <data> that is not base64 (bad characters and partial
 *     groups are dropped silently, so a truncated value would just come out shorter).
 *   - Binary: the trailer, offset table and container headers are validated and the object
 *     graph is walked iteratively from the root with memoised heights and expanded costs
 *     (nodes, and string/data bytes, counted once per reference as libplist copies them),
 *     refusing cycles, nesting deeper than max_depth and expansions beyond
 *     MDM_PLIST_EXPANSION_MAX units per input byte. Only structure and lengths are read
 *     here; values (strings, numbers, dates) are left to libplist.
 * - After parsing, a walk bounded by max_depth checks the real tree (exact for both formats).
 * - libplist 2.2 reports no error codes: a failed parse is a NULL tree. Its plist_new_*
 *   return NULL when malloc fails; deeper allocations inside libplist are unchecked.
 *
 * Threads: reentrant; nothing is shared between calls.
 */
#include "core/plist.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BPLIST_MAGIC "bplist00"
#define BPLIST_MAGIC_LEN 8
#define BPLIST_TRAILER_LEN 32


static int not_well_formed(char *err, size_t errlen)
{
    mdm_errf(err, errlen, "plist is not well-formed");
    return -EBADMSG;
}

static int too_deep(size_t max_depth, char *err, size_t errlen)
{
    mdm_errf(err, errlen, "nesting deeper than %zu", max_depth);
    return MDM_ETOOBIG;
}

/* ---- XML pre-scan ---------------------------------------------------------------------- */

static bool starts_with(const uint8_t *p, const uint8_t *end, const char *s)
{
    size_t n = strlen(s);
    return (size_t)(end - p) >= n && memcmp(p, s, n) == 0;
}

/* First occurrence of s in [p, end), or NULL. */
static const uint8_t *find(const uint8_t *p, const uint8_t *end, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(end - p) < n)
        return NULL;
    return memmem(p, (size_t)(end - p), s, n);
}

/*
 * True when text is base64 as <data> holds it: the standard alphabet in groups of four,
 * '=' padding only at the end, white space anywhere.
 */
static bool base64_text_ok(const uint8_t *text, size_t len)
{
    size_t n = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = text[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        if (c == '=') {
            if (++pad > 2)
                return false;
        } else if (pad > 0 || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                (c >= '0' && c <= '9') || c == '+' || c == '/')) {
            return false;
        }
        n++;
    }
    return n % 4 == 0;
}

/*
 * Refuses XML with more than max_open elements open at once. Returns 0; MDM_ETOOBIG;
 * -EBADMSG for an unterminated comment, CDATA section, declaration or tag, for elements left
 * open at the end, and for <data> that is not base64 (the last two libplist 2.2 accepts).
 */
static int xml_prescan(const uint8_t *p, size_t len, size_t max_open, size_t max_depth,
                       char *err, size_t errlen)
{
    const uint8_t *end = p + len;
    size_t open = 0;
    while ((p = memchr(p, '<', (size_t)(end - p))) != NULL) {
        const uint8_t *close;
        if (starts_with(p, end, "<!--")) {
            if (!(close = find(p + 4, end, "-->")))
                return not_well_formed(err, errlen);
            p = close + 3;
        } else if (starts_with(p, end, "<![CDATA[")) {
            if (!(close = find(p + 9, end, "]]>")))
                return not_well_formed(err, errlen);
            p = close + 3;
        } else if (starts_with(p, end, "<?")) {
            if (!(close = find(p + 2, end, "?>")))
                return not_well_formed(err, errlen);
            p = close + 2;
        } else if (starts_with(p, end, "<!")) {
            /* DOCTYPE: skip to the '>' outside an internal subset and quotes. */
            size_t brackets = 0;
            uint8_t quote = 0;
            for (p += 2; p < end; p++) {
                if (quote) {
                    if (*p == quote)
                        quote = 0;
                } else if (*p == '"' || *p == '\'') {
                    quote = *p;
                } else if (*p == '[') {
                    brackets++;
                } else if (*p == ']' && brackets > 0) {
                    brackets--;
                } else if (*p == '>' && brackets == 0) {
                    break;
                }
            }
            if (p == end)
                return not_well_formed(err, errlen);
            p++;
        } else {
            bool closing = p + 1 < end && p[1] == '/';
            uint8_t quote = 0;
            const uint8_t *q;
            for (q = p + 1; q < end; q++) {
                if (quote) {
                    if (*q == quote)
                        quote = 0;
                } else if (*q == '"' || *q == '\'') {
                    quote = *q;
                } else if (*q == '>') {
                    break;
                }
            }
            if (q == end)
                return not_well_formed(err, errlen);
            if (closing) {
                if (open > 0)
                    open--;
            } else if (q[-1] != '/') { /* not self-closing like <true/> */
                if (++open > max_open)
                    return too_deep(max_depth, err, errlen);
                if (q - p == 5 && memcmp(p, "<data", 5) == 0) {
                    /* libplist 2.2 drops bad characters and partial groups silently */
                    const uint8_t *text = q + 1;
                    const uint8_t *lt = memchr(text, '<', (size_t)(end - text));
                    if (!lt || !base64_text_ok(text, (size_t)(lt - text))) {
                        mdm_errf(err, errlen, "plist is not well-formed (bad <data> base64)");
                        return -EBADMSG;
                    }
                }
            }
            p = q + 1;
        }
    }
    if (open != 0) /* libplist 2.2 accepts a document whose end tags are missing */
        return not_well_formed(err, errlen);
    return 0;
}

/* ---- binary pre-scan ------------------------------------------------------------------- */

struct bplist {
    const uint8_t *p;
    size_t len;
    unsigned off_size;  /* bytes per offset table entry, 1..8 */
    unsigned ref_size;  /* bytes per object reference, 1..8 */
    uint64_t n_obj;
    uint64_t root;
    uint64_t table;     /* offset of the offset table; objects lie in [8, table) */
};

/*
 * Expansion is measured in cost units: one per node libplist will allocate, plus one per
 * PAYLOAD_BYTES_PER_UNIT bytes of string or data it will copy (it copies a shared string or
 * data object once per reference, too).
 */
#define PAYLOAD_BYTES_PER_UNIT 8

struct memo {
    uint32_t cost;      /* expanded cost of the subtree (saturated at the cap + 1) */
    uint16_t height;    /* containers on the longest path down, this one included */
    uint8_t state;      /* MEMO_* */
};

enum { MEMO_NEW = 0, MEMO_ACTIVE, MEMO_DONE };

struct frame {
    uint64_t obj;
    uint64_t next;      /* next reference to follow */
    uint64_t n_refs;
    size_t refs;        /* offset of the first reference */
    uint64_t cost;      /* cost so far, this container included */
    size_t height;      /* tallest child so far */
};

static uint64_t be_read(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

static int bp_init(struct bplist *b, const uint8_t *p, size_t len)
{
    if (len < BPLIST_MAGIC_LEN + 1 + BPLIST_TRAILER_LEN)
        return -EBADMSG;
    const uint8_t *t = p + len - BPLIST_TRAILER_LEN;
    b->p = p;
    b->len = len;
    b->off_size = t[6];
    b->ref_size = t[7];
    b->n_obj = be_read(t + 8, 8);
    b->root = be_read(t + 16, 8);
    b->table = be_read(t + 24, 8);
    size_t table_end = len - BPLIST_TRAILER_LEN;
    if (b->off_size < 1 || b->off_size > 8 || b->ref_size < 1 || b->ref_size > 8)
        return -EBADMSG;
    if (b->n_obj == 0 || b->root >= b->n_obj)
        return -EBADMSG;
    if (b->table <= BPLIST_MAGIC_LEN || b->table >= table_end)
        return -EBADMSG;
    if (b->n_obj > (table_end - b->table) / b->off_size)
        return -EBADMSG;
    return 0;
}

/* Offset of object i, checked to lie in the object area. */
static int bp_offset(const struct bplist *b, uint64_t i, size_t *off)
{
    if (i >= b->n_obj)
        return -EBADMSG;
    uint64_t o = be_read(b->p + b->table + i * b->off_size, b->off_size);
    if (o < BPLIST_MAGIC_LEN || o >= b->table)
        return -EBADMSG;
    *off = (size_t)o;
    return 0;
}

/*
 * The element count of the object at o (the marker's low nibble, or the integer object that
 * follows when it is 0xF) and the offset of what follows the count.
 */
static int bp_count(const struct bplist *b, size_t o, uint64_t *count, size_t *pos)
{
    *count = b->p[o] & 0x0f;
    *pos = o + 1;
    if (*count != 0x0f)
        return 0;
    if (*pos >= b->table)
        return -EBADMSG;
    uint8_t int_marker = b->p[(*pos)++];
    if (int_marker >> 4 != 0x1 || (int_marker & 0x0f) > 3)
        return -EBADMSG;
    unsigned n = 1u << (int_marker & 0x0f);
    if (b->table - *pos < n)
        return -EBADMSG;
    *count = be_read(b->p + *pos, n);
    *pos += n;
    return 0;
}

/*
 * Object i: for a container (array, ordered set, set, dictionary) fills f with its references
 * and returns 1; for a scalar stores the cost of one copy in *cost and returns 0; returns
 * -EBADMSG when the header or the references do not fit in the object area.
 */
static int bp_object(const struct bplist *b, uint64_t i, struct frame *f, uint64_t *cost)
{
    size_t o, pos;
    uint64_t count;
    int ret = bp_offset(b, i, &o);
    if (ret != 0)
        return ret;
    unsigned type = b->p[o] >> 4;
    unsigned per_entry = 0;
    uint64_t bytes_per_unit = 0; /* payload bytes libplist makes per count unit */
    switch (type) {
    case 0xA: /* array */
    case 0xB: /* ordered set */
    case 0xC: /* set */
        per_entry = 1;
        break;
    case 0xD: /* dictionary: a key reference and a value reference per entry */
        per_entry = 2;
        break;
    case 0x4: /* data */
    case 0x5: /* ASCII string */
        bytes_per_unit = 1;
        break;
    case 0x6: /* UTF-16 string, converted to UTF-8: up to 3 bytes per unit */
        bytes_per_unit = 3;
        break;
    default:  /* null, booleans, integers, reals, dates, UIDs */
        *cost = 1;
        return 0;
    }
    if ((ret = bp_count(b, o, &count, &pos)) != 0)
        return ret;
    if (per_entry == 0) {
        /* A payload larger than the object area is refused by libplist; cap the estimate. */
        uint64_t bytes = count > b->table ? b->table : count;
        *cost = 1 + bytes * bytes_per_unit / PAYLOAD_BYTES_PER_UNIT;
        return 0;
    }
    uint64_t room = (b->table - pos) / ((uint64_t)per_entry * b->ref_size);
    if (count > room)
        return -EBADMSG;
    f->obj = i;
    f->next = 0;
    f->n_refs = count * per_entry;
    f->refs = pos;
    f->cost = 1;
    f->height = 0;
    return 1;
}

static int too_big(uint64_t cap, char *err, size_t errlen)
{
    mdm_errf(err, errlen, "binary plist expands beyond %llu units (shared references)",
            (unsigned long long)cap);
    return MDM_ETOOBIG;
}

static int bplist_prescan(const uint8_t *p, size_t len, size_t max_depth, char *err,
                          size_t errlen)
{
    struct bplist b;
    if (bp_init(&b, p, len) != 0)
        return not_well_formed(err, errlen);
    uint64_t cap = sat_add((uint64_t)len * MDM_PLIST_EXPANSION_MAX, 1024);
    if (cap > UINT32_MAX - 1)
        cap = UINT32_MAX - 1;

    struct frame first;
    uint64_t cost = 0;
    int ret = bp_object(&b, b.root, &first, &cost);
    if (ret < 0)
        return not_well_formed(err, errlen);
    if (ret == 0) /* a scalar root */
        return cost > cap ? too_big(cap, err, errlen) : 0;

    struct memo *memo = calloc((size_t)b.n_obj, sizeof(*memo));
    struct frame *stack = malloc(max_depth * sizeof(*stack));
    if (!memo || !stack) {
        ret = -ENOMEM;
        goto out;
    }
    size_t depth = 0;
    stack[depth++] = first;
    memo[first.obj].state = MEMO_ACTIVE;
    while (depth > 0) {
        struct frame *f = &stack[depth - 1];
        if (f->next == f->n_refs) { /* all children seen: finish this container */
            uint64_t total = f->cost;
            size_t height = f->height + 1;
            memo[f->obj] = (struct memo){.cost = (uint32_t)(total > cap ? cap + 1 : total),
                                         .height = (uint16_t)height,
                                         .state = MEMO_DONE};
            depth--;
            if (depth > 0) {
                struct frame *parent = &stack[depth - 1];
                parent->cost = sat_add(parent->cost, total);
                if (height > parent->height)
                    parent->height = height;
            }
            if (total > cap) {
                ret = too_big(cap, err, errlen);
                goto out;
            }
            continue;
        }
        uint64_t child = be_read(b.p + f->refs + f->next * b.ref_size, b.ref_size);
        f->next++;
        if (child >= b.n_obj) {
            ret = not_well_formed(err, errlen);
            goto out;
        }
        const struct memo *m = &memo[child];
        if (m->state == MEMO_DONE) {
            f->cost = sat_add(f->cost, m->cost);
            if (m->height > f->height)
                f->height = m->height;
            if (depth + m->height > max_depth) {
                ret = too_deep(max_depth, err, errlen);
                goto out;
            }
        } else if (m->state == MEMO_ACTIVE) {
            mdm_errf(err, errlen, "plist is not well-formed (reference cycle)");
            ret = -EBADMSG;
            goto out;
        } else {
            struct frame next;
            int r = bp_object(&b, child, &next, &cost);
            if (r < 0) {
                ret = not_well_formed(err, errlen);
                goto out;
            }
            if (r == 0) {
                f->cost = sat_add(f->cost, cost); /* a scalar: copied once per reference */
            } else {
                if (depth == max_depth) {
                    ret = too_deep(max_depth, err, errlen);
                    goto out;
                }
                memo[child].state = MEMO_ACTIVE;
                stack[depth++] = next;
            }
        }
        if (f->cost > cap) {
            ret = too_big(cap, err, errlen);
            goto out;
        }
    }
    ret = 0;
out:
    free(stack);
    free(memo);
    return ret;
}

/* ---- parsing --------------------------------------------------------------------------- */

/* True when node nests at most depth_left containers (node included). */
static bool depth_ok(plist_t node, size_t depth_left)
{
    plist_type t = plist_get_node_type(node);
    if (t != PLIST_DICT && t != PLIST_ARRAY)
        return true;
    if (depth_left == 0)
        return false;
    if (t == PLIST_ARRAY) {
        uint32_t n = plist_array_get_size(node);
        for (uint32_t i = 0; i < n; i++)
            if (!depth_ok(plist_array_get_item(node, i), depth_left - 1))
                return false;
        return true;
    }
    plist_dict_iter it = NULL;
    plist_dict_new_iter(node, &it);
    if (!it)
        return false; /* out of memory: refuse rather than guess */
    bool ok = true;
    for (;;) {
        plist_t val = NULL;
        plist_dict_next_item(node, it, NULL, &val);
        if (!val)
            break;
        if (!depth_ok(val, depth_left - 1)) {
            ok = false;
            break;
        }
    }
    free(it); /* libplist 2.2 mallocs the iterator and has no function to free it */
    return ok;
}

int mdm_plist_parse(const void *data, size_t len, size_t max_depth, plist_t *out, char *err,
                    size_t errlen)
{
    assert(out && (data || len == 0));
    assert(max_depth >= 1 && max_depth <= MDM_PLIST_DEPTH_LIMIT);
    *out = NULL;
    const uint8_t *p = data;
    if (len == 0) {
        mdm_errf(err, errlen, "plist is empty");
        return -EBADMSG;
    }
    if (len > UINT32_MAX) { /* libplist takes 32-bit lengths */
        mdm_errf(err, errlen, "plist larger than 4 GiB");
        return MDM_ETOOBIG;
    }
    plist_t root = NULL;
    int ret;
    if (len >= BPLIST_MAGIC_LEN && memcmp(p, BPLIST_MAGIC, BPLIST_MAGIC_LEN) == 0) {
        if ((ret = bplist_prescan(p, len, max_depth, err, errlen)) != 0)
            return ret;
        plist_from_bin((const char *)p, (uint32_t)len, &root);
    } else {
        size_t i = 0;
        if (len >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
            i = 3; /* UTF-8 byte order mark, which libplist 2.2 refuses */
        while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
            i++;
        const uint8_t *x = p + i, *end = p + len;
        if (!starts_with(x, end, "<?xml") && !starts_with(x, end, "<!") &&
            !starts_with(x, end, "<plist")) {
            mdm_errf(err, errlen, "not a property list (neither XML nor binary)");
            return -EBADMSG;
        }
        if ((ret = xml_prescan(x, len - i, max_depth + 2, max_depth, err, errlen)) != 0)
            return ret;
        plist_from_xml((const char *)x, (uint32_t)(len - i), &root);
    }
    if (!root)
        return not_well_formed(err, errlen);
    if (!depth_ok(root, max_depth)) {
        plist_free(root);
        return too_deep(max_depth, err, errlen);
    }
    *out = root;
    return 0;
}

int mdm_plist_parse_dict(const void *data, size_t len, size_t max_depth, plist_t *out,
                         char *err, size_t errlen)
{
    int ret = mdm_plist_parse(data, len, max_depth, out, err, errlen);
    if (ret != 0)
        return ret;
    if (plist_get_node_type(*out) != PLIST_DICT) {
        plist_free(*out);
        *out = NULL;
        mdm_errf(err, errlen, "root is not a dictionary");
        return -EBADMSG;
    }
    return 0;
}

/* ---- getters --------------------------------------------------------------------------- */

static int lookup(plist_t dict, const char *key, plist_type type, plist_t *node)
{
    assert(dict && key && plist_get_node_type(dict) == PLIST_DICT);
    plist_t n = plist_dict_get_item(dict, key);
    if (!n)
        return MDM_ENOTFOUND;
    if (plist_get_node_type(n) != type)
        return -EINVAL;
    *node = n;
    return 0;
}

int mdm_plist_get_string(plist_t dict, const char *key, const char **out)
{
    plist_t n;
    int ret = lookup(dict, key, PLIST_STRING, &n);
    if (ret != 0)
        return ret;
    uint64_t len = 0;
    const char *s = plist_get_string_ptr(n, &len);
    if (!s || strlen(s) != len)
        return -EINVAL; /* an embedded NUL would make C code see another string */
    *out = s;
    return 0;
}

int mdm_plist_get_bool(plist_t dict, const char *key, bool *out)
{
    plist_t n;
    int ret = lookup(dict, key, PLIST_BOOLEAN, &n);
    if (ret != 0)
        return ret;
    uint8_t v = 0;
    plist_get_bool_val(n, &v);
    *out = v != 0;
    return 0;
}

int mdm_plist_get_uint(plist_t dict, const char *key, uint64_t *out)
{
    plist_t n;
    int ret = lookup(dict, key, PLIST_UINT, &n);
    if (ret != 0)
        return ret;
    uint64_t v = 0;
    plist_get_uint_val(n, &v);
    *out = v;
    return 0;
}

int mdm_plist_get_data(plist_t dict, const char *key, const uint8_t **out, size_t *len)
{
    assert(out && len);
    plist_t n;
    int ret = lookup(dict, key, PLIST_DATA, &n);
    if (ret != 0)
        return ret;
    uint64_t l = 0;
    const char *d = plist_get_data_ptr(n, &l);
    if (l > SIZE_MAX)
        return -EINVAL;
    *out = (const uint8_t *)d;
    *len = (size_t)l;
    return 0;
}

int mdm_plist_get_dict(plist_t dict, const char *key, plist_t *out)
{
    return lookup(dict, key, PLIST_DICT, out);
}

int mdm_plist_get_array(plist_t dict, const char *key, plist_t *out)
{
    return lookup(dict, key, PLIST_ARRAY, out);
}

/* ---- builders -------------------------------------------------------------------------- */

int mdm_plist_dict_set_item(plist_t dict, const char *key, plist_t item)
{
    assert(dict && key && plist_get_node_type(dict) == PLIST_DICT);
    if (!item)
        return -ENOMEM;
    plist_dict_set_item(dict, key, item);
    return 0;
}

int mdm_plist_dict_set_string(plist_t dict, const char *key, const char *val)
{
    assert(val);
    return mdm_plist_dict_set_item(dict, key, plist_new_string(val));
}

int mdm_plist_dict_set_bool(plist_t dict, const char *key, bool val)
{
    return mdm_plist_dict_set_item(dict, key, plist_new_bool(val ? 1 : 0));
}

int mdm_plist_dict_set_uint(plist_t dict, const char *key, uint64_t val)
{
    return mdm_plist_dict_set_item(dict, key, plist_new_uint(val));
}

int mdm_plist_dict_set_data(plist_t dict, const char *key, const void *data, size_t len)
{
    assert(data || len == 0);
    return mdm_plist_dict_set_item(dict, key, plist_new_data(len ? data : "", len));
}

int mdm_plist_array_append_item(plist_t array, plist_t item)
{
    assert(array && plist_get_node_type(array) == PLIST_ARRAY);
    if (!item)
        return -ENOMEM;
    plist_array_append_item(array, item);
    return 0;
}

int mdm_plist_array_append_string(plist_t array, const char *val)
{
    assert(val);
    return mdm_plist_array_append_item(array, plist_new_string(val));
}

/* ---- serialisation --------------------------------------------------------------------- */

int mdm_plist_to_xml(plist_t p, mdm_buf_t *out)
{
    assert(p && out);
    char *x = NULL;
    uint32_t len = 0;
    plist_to_xml(p, &x, &len);
    if (!x)
        return -ENOMEM;
    int ret = mdm_buf_append(out, x, len);
    plist_to_xml_free(x);
    return ret;
}

int mdm_plist_to_bin(plist_t p, mdm_buf_t *out)
{
    assert(p && out);
    char *b = NULL;
    uint32_t len = 0;
    plist_to_bin(p, &b, &len);
    if (!b)
        return -ENOMEM;
    int ret = mdm_buf_append(out, b, len);
    plist_to_bin_free(b);
    return ret;
}
