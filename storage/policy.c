/*
 * storage/policy: key layouts and record codecs of policy records (see policy.h).
 *
 * Encoding (storage/codec.h), format 1 of every record; key fields are not repeated:
 *
 *   policy:      u8 format, str type, str name, u32 version, str profile_identifier,
 *                u64 created_ms, u64 updated_ms, str created_by, blob32 settings_json,
 *                blob32 sealed_secrets
 *   group:       u8 format, str name, u32 version, u64 created_ms, u64 updated_ms,
 *                blob32 spec_json
 *   deployment:  u8 format, u8 action, u32 policy_version, str profile_identifier,
 *                str command_uuid, u64 sent_ms        (the same value under "d/" and "r/")
 *   app:         u8 format, str name, str short_version, str version, u64 bundle_size,
 *                u64 reported_ms                      (the same value under "a/" and "b/")
 *
 * JSON blobs hold no NUL (they are C strings; the decoder adds one). Decoders are strict as in
 * storage/enroll.c: besides the codec's checks they refuse identifiers a writer could not have
 * written and unknown deployment actions. Policies and groups own their buffers, so their
 * decoders copy them out of the borrowed value once it has decoded; the listings free each
 * copy after its callback.
 *
 * Threads: puts on whichever thread owns the batch; reads where synchronous reads are allowed.
 */
#include "storage/policy.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/crypto.h"
#include "storage/codec.h"

#define FORMAT_1 1

/* Longest key: "b/" <bundle id> 0x00 <udid>. */
#define KEY_MAX (2 + MDM_BUNDLE_ID_MAX + 1 + MDM_UDID_MAX)

_Static_assert(MDM_POLICY_ID_LEN <= MDM_BUNDLE_ID_MAX, "policy ids fit KEY_MAX");

/* Key prefixes, all two bytes. */
#define P_POLICY "p/"
#define P_GROUP "g/"
#define P_DEPLOY_DEV "d/"
#define P_DEPLOY_POL "r/"
#define P_APP_DEV "a/"
#define P_APP_BUNDLE "b/"
#define PLEN 2

/* ---- identifiers ---------------------------------------------------------------------------- */

/* Length of s when it has min..max bytes, else -1. Reads at most max + 1 bytes. */
static int len_in(const char *s, size_t min, size_t max)
{
    if (!s)
        return -1;
    size_t n = strnlen(s, max + 1);
    return n >= min && n <= max ? (int)n : -1;
}

bool mdm_policy_id_valid(const char *id)
{
    if (len_in(id, MDM_POLICY_ID_LEN, MDM_POLICY_ID_LEN) < 0)
        return false;
    for (int i = 0; i < MDM_POLICY_ID_LEN; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
}

bool mdm_bundle_id_valid(const char *id)
{
    int n = len_in(id, 1, MDM_BUNDLE_ID_MAX);
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return n > 0;
}

/* A UDID as storage/mdm.h takes it: 1..MDM_UDID_MAX bytes. */
static bool udid_ok(const char *udid)
{
    return len_in(udid, 1, MDM_UDID_MAX) > 0;
}

int mdm_policy_id_new(char out[MDM_POLICY_ID_LEN + 1])
{
    assert(out);
    uint8_t raw[MDM_POLICY_ID_LEN / 2];
    int ret = mdm_random_bytes(raw, sizeof(raw));
    if (ret != 0) {
        out[0] = 0;
        return ret;
    }
    mdm_hex_encode(raw, sizeof(raw), out);
    return 0;
}

const char *mdm_deploy_action_name(enum mdm_deploy_action a)
{
    switch (a) {
    case MDM_DEPLOY_INSTALL: return "install";
    case MDM_DEPLOY_REMOVE: return "remove";
    case MDM_DEPLOY_REMOVED: return "removed";
    }
    return "unknown";
}

static bool action_valid(unsigned a)
{
    return a <= MDM_DEPLOY_REMOVED;
}

/* ---- keys ----------------------------------------------------------------------------------- */

struct key {
    uint8_t b[KEY_MAX];
    size_t n;
};

/* prefix, then s (no separator). The caller checked the lengths. */
static void key_one(struct key *k, const char *prefix, const char *s)
{
    size_t n = strlen(s);
    assert(PLEN + n <= sizeof(k->b));
    memcpy(k->b, prefix, PLEN);
    memcpy(k->b + PLEN, s, n);
    k->n = PLEN + n;
}

/* prefix, first, 0x00, then second. The caller checked the lengths. */
static void key_two(struct key *k, const char *prefix, const char *first, const char *second)
{
    size_t n1 = strlen(first), n2 = strlen(second);
    assert(PLEN + n1 + 1 + n2 <= sizeof(k->b));
    memcpy(k->b, prefix, PLEN);
    memcpy(k->b + PLEN, first, n1 + 1); /* with its NUL as the separator */
    memcpy(k->b + PLEN + n1 + 1, second, n2);
    k->n = PLEN + n1 + 1 + n2;
}

/* A key of one identifier (prefix skipped) that valid accepts; 0 or -EBADMSG. */
static int key_parse_one(const void *key, size_t klen, char *dst, size_t size,
                         bool (*valid)(const char *))
{
    const uint8_t *p = key;
    int ret = mdm_key_take(&p, &klen, dst, size, 1, true);
    return ret == 0 && !valid(dst) ? -EBADMSG : ret;
}

/* A key of two identifiers "first 0x00 second" (prefix skipped); 0 or -EBADMSG. */
static int key_parse_two(const void *key, size_t klen, char *first, size_t first_size,
                         bool (*first_valid)(const char *), char *second, size_t second_size,
                         bool (*second_valid)(const char *))
{
    const uint8_t *p = key;
    int ret = mdm_key_take(&p, &klen, first, first_size, 1, false);
    if (ret == 0)
        ret = mdm_key_take(&p, &klen, second, second_size, 1, true);
    if (ret == 0 && (!first_valid(first) || !second_valid(second)))
        ret = -EBADMSG;
    return ret;
}

/* ---- owned JSON and secrets ----------------------------------------------------------------- */

/* A blob32 JSON document, borrowed into *json and *len; a NUL inside it is -EBADMSG. */
static void rd_json(struct mdm_rd *r, const uint8_t **json, size_t *len)
{
    *json = mdm_rd_blob(r, 4, len);
    if (*json && memchr(*json, 0, *len))
        r->err = -EBADMSG;
}

/* A NUL-terminated copy of json[0..len) (NULL when out of memory). */
static char *copy_json(const uint8_t *json, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return NULL;
    if (len)
        memcpy(copy, json, len);
    copy[len] = 0;
    return copy;
}

/* A copy of p[0..len); NULL with *ok true when len is 0, *ok false when out of memory. */
static uint8_t *copy_bytes(const uint8_t *p, size_t len, bool *ok)
{
    *ok = true;
    if (len == 0)
        return NULL;
    uint8_t *copy = malloc(len);
    if (copy)
        memcpy(copy, p, len);
    else
        *ok = false;
    return copy;
}

/* A JSON field as a blob32: NULL is written as ""; len is asserted to be its strlen. */
static void wr_json(struct mdm_wr *w, const char *json, size_t len)
{
    assert(json ? strlen(json) == len : len == 0);
    mdm_wr_blob32(w, (const uint8_t *)json, len);
}

/* ---- policies ------------------------------------------------------------------------------- */

static void enc_policy(struct mdm_wr *w, const void *rec)
{
    const mdm_policy_t *p = rec;
    mdm_wr_u8(w, FORMAT_1);
    MDM_WR_STR(w, p->type);
    MDM_WR_STR(w, p->name);
    mdm_wr_be(w, p->version, 4);
    MDM_WR_STR(w, p->profile_identifier);
    mdm_wr_be(w, p->created_ms, 8);
    mdm_wr_be(w, p->updated_ms, 8);
    MDM_WR_STR(w, p->created_by);
    wr_json(w, p->settings_json, p->settings_len);
    mdm_wr_blob32(w, p->sealed_secrets, p->sealed_len);
}

/* The blobs of a policy value, borrowed from it until copied. */
struct policy_blobs {
    const uint8_t *settings, *sealed;
};

/* Decodes the fixed fields into p and the blobs into *bl (borrowed); p zeroed on failure. */
static int parse_policy(const void *key, size_t klen, const void *val, size_t vlen,
                        mdm_policy_t *p, struct policy_blobs *bl)
{
    struct mdm_rd r = mdm_rd_start(p, sizeof(*p), val, vlen);
    r.err = key_parse_one(key, klen, p->id, sizeof(p->id), mdm_policy_id_valid);
    switch (mdm_rd_format(&r, FORMAT_1)) {
    case FORMAT_1:
        MDM_RD_STR(&r, p->type);
        MDM_RD_STR(&r, p->name);
        p->version = (uint32_t)mdm_rd_be(&r, 4);
        MDM_RD_STR(&r, p->profile_identifier);
        p->created_ms = mdm_rd_be(&r, 8);
        p->updated_ms = mdm_rd_be(&r, 8);
        MDM_RD_STR(&r, p->created_by);
        rd_json(&r, &bl->settings, &p->settings_len);
        bl->sealed = mdm_rd_blob(&r, 4, &p->sealed_len);
        break;
    }
    return mdm_rd_finish(&r, p, sizeof(*p));
}

/* mdm_decode_fn of "p/" records: p owns its buffers on 0 (-ENOMEM: none, zeroed). */
static int dec_policy(const void *key, size_t klen, const void *val, size_t vlen, void *rec)
{
    mdm_policy_t *p = rec;
    struct policy_blobs bl = {0};
    int ret = parse_policy(key, klen, val, vlen, p, &bl);
    if (ret != 0)
        return ret;
    bool ok;
    p->settings_json = copy_json(bl.settings, p->settings_len);
    p->sealed_secrets = copy_bytes(bl.sealed, p->sealed_len, &ok);
    if (!p->settings_json || !ok) {
        mdm_policy_dispose(p);
        return -ENOMEM;
    }
    return 0;
}

void mdm_store_put_policy(mdm_batch_t *b, const mdm_policy_t *p)
{
    assert(b && p && mdm_policy_id_valid(p->id));
    struct key k;
    key_one(&k, P_POLICY, p->id);
    mdm_put_encoded(b, MDM_CF_POLICY, k.b, k.n, enc_policy, p);
}

void mdm_store_delete_policy(mdm_batch_t *b, const char *id)
{
    assert(b && mdm_policy_id_valid(id));
    struct key k;
    key_one(&k, P_POLICY, id);
    mdm_batch_delete(b, MDM_CF_POLICY, k.b, k.n);
}

void mdm_policy_dispose(mdm_policy_t *p)
{
    if (!p)
        return;
    free(p->settings_json);
    free(p->sealed_secrets);
    memset(p, 0, sizeof(*p));
}

/* ---- groups --------------------------------------------------------------------------------- */

static void enc_group(struct mdm_wr *w, const void *rec)
{
    const mdm_group_t *g = rec;
    mdm_wr_u8(w, FORMAT_1);
    MDM_WR_STR(w, g->name);
    mdm_wr_be(w, g->version, 4);
    mdm_wr_be(w, g->created_ms, 8);
    mdm_wr_be(w, g->updated_ms, 8);
    wr_json(w, g->spec_json, g->spec_len);
}

/* Decodes the fixed fields into g and spec_json into *spec (borrowed); g zeroed on failure. */
static int parse_group(const void *key, size_t klen, const void *val, size_t vlen,
                       mdm_group_t *g, const uint8_t **spec)
{
    struct mdm_rd r = mdm_rd_start(g, sizeof(*g), val, vlen);
    r.err = key_parse_one(key, klen, g->id, sizeof(g->id), mdm_policy_id_valid);
    switch (mdm_rd_format(&r, FORMAT_1)) {
    case FORMAT_1:
        MDM_RD_STR(&r, g->name);
        g->version = (uint32_t)mdm_rd_be(&r, 4);
        g->created_ms = mdm_rd_be(&r, 8);
        g->updated_ms = mdm_rd_be(&r, 8);
        rd_json(&r, spec, &g->spec_len);
        break;
    }
    return mdm_rd_finish(&r, g, sizeof(*g));
}

/* mdm_decode_fn of "g/" records: g owns spec_json on 0 (-ENOMEM: none, zeroed). */
static int dec_group(const void *key, size_t klen, const void *val, size_t vlen, void *rec)
{
    mdm_group_t *g = rec;
    const uint8_t *spec = NULL;
    int ret = parse_group(key, klen, val, vlen, g, &spec);
    if (ret != 0)
        return ret;
    g->spec_json = copy_json(spec, g->spec_len);
    if (!g->spec_json) {
        memset(g, 0, sizeof(*g));
        return -ENOMEM;
    }
    return 0;
}

void mdm_store_put_group(mdm_batch_t *b, const mdm_group_t *g)
{
    assert(b && g && mdm_policy_id_valid(g->id));
    struct key k;
    key_one(&k, P_GROUP, g->id);
    mdm_put_encoded(b, MDM_CF_POLICY, k.b, k.n, enc_group, g);
}

void mdm_store_delete_group(mdm_batch_t *b, const char *id)
{
    assert(b && mdm_policy_id_valid(id));
    struct key k;
    key_one(&k, P_GROUP, id);
    mdm_batch_delete(b, MDM_CF_POLICY, k.b, k.n);
}

void mdm_group_dispose(mdm_group_t *g)
{
    if (!g)
        return;
    free(g->spec_json);
    memset(g, 0, sizeof(*g));
}

/* ---- deployments ---------------------------------------------------------------------------- */

static void enc_deployment(struct mdm_wr *w, const void *rec)
{
    const mdm_deployment_t *d = rec;
    mdm_wr_u8(w, FORMAT_1);
    mdm_wr_u8(w, d->action);
    mdm_wr_be(w, d->policy_version, 4);
    MDM_WR_STR(w, d->profile_identifier);
    MDM_WR_STR(w, d->command_uuid);
    mdm_wr_be(w, d->sent_ms, 8);
}

/* The value of a deployment whose key fields r.err already reflects; d zeroed on failure. */
static int dec_deployment_value(struct mdm_rd *r, mdm_deployment_t *d)
{
    switch (mdm_rd_format(r, FORMAT_1)) {
    case FORMAT_1:
        d->action = mdm_rd_u8(r);
        if (!action_valid(d->action))
            r->err = -EBADMSG;
        d->policy_version = (uint32_t)mdm_rd_be(r, 4);
        MDM_RD_STR(r, d->profile_identifier);
        MDM_RD_STR(r, d->command_uuid);
        d->sent_ms = mdm_rd_be(r, 8);
        break;
    }
    return mdm_rd_finish(r, d, sizeof(*d));
}

/* "d/" records: key <udid> 0x00 <policy id>. */
static int dec_deployment_dev(const void *key, size_t klen, const void *val, size_t vlen,
                              void *rec)
{
    mdm_deployment_t *d = rec;
    struct mdm_rd r = mdm_rd_start(d, sizeof(*d), val, vlen);
    r.err = key_parse_two(key, klen, d->udid, sizeof(d->udid), udid_ok, d->policy_id,
                          sizeof(d->policy_id), mdm_policy_id_valid);
    return dec_deployment_value(&r, d);
}

/* "r/" records: key <policy id> 0x00 <udid>. */
static int dec_deployment_pol(const void *key, size_t klen, const void *val, size_t vlen,
                              void *rec)
{
    mdm_deployment_t *d = rec;
    struct mdm_rd r = mdm_rd_start(d, sizeof(*d), val, vlen);
    r.err = key_parse_two(key, klen, d->policy_id, sizeof(d->policy_id), mdm_policy_id_valid,
                          d->udid, sizeof(d->udid), udid_ok);
    return dec_deployment_value(&r, d);
}

static void assert_deployment_keys(const char *udid, const char *policy_id)
{
    assert(udid_ok(udid) && mdm_policy_id_valid(policy_id));
    (void)udid;
    (void)policy_id;
}

void mdm_store_put_deployment(mdm_batch_t *b, const mdm_deployment_t *d)
{
    assert(b && d && action_valid(d->action));
    assert_deployment_keys(d->udid, d->policy_id);
    struct key k;
    key_two(&k, P_DEPLOY_DEV, d->udid, d->policy_id);
    mdm_put_encoded(b, MDM_CF_POLICY, k.b, k.n, enc_deployment, d);
    key_two(&k, P_DEPLOY_POL, d->policy_id, d->udid);
    mdm_put_encoded(b, MDM_CF_POLICY, k.b, k.n, enc_deployment, d);
}

void mdm_store_delete_deployment(mdm_batch_t *b, const char *udid, const char *policy_id)
{
    assert(b);
    assert_deployment_keys(udid, policy_id);
    struct key k;
    key_two(&k, P_DEPLOY_DEV, udid, policy_id);
    mdm_batch_delete(b, MDM_CF_POLICY, k.b, k.n);
    key_two(&k, P_DEPLOY_POL, policy_id, udid);
    mdm_batch_delete(b, MDM_CF_POLICY, k.b, k.n);
}

/* ---- applications --------------------------------------------------------------------------- */

static void enc_app(struct mdm_wr *w, const void *rec)
{
    const mdm_app_t *a = rec;
    mdm_wr_u8(w, FORMAT_1);
    MDM_WR_STR(w, a->name);
    MDM_WR_STR(w, a->short_version);
    MDM_WR_STR(w, a->version);
    mdm_wr_be(w, a->bundle_size, 8);
    mdm_wr_be(w, a->reported_ms, 8);
}

/* The value of an app whose key fields r.err already reflects; a zeroed on failure. */
static int dec_app_value(struct mdm_rd *r, mdm_app_t *a)
{
    switch (mdm_rd_format(r, FORMAT_1)) {
    case FORMAT_1:
        MDM_RD_STR(r, a->name);
        MDM_RD_STR(r, a->short_version);
        MDM_RD_STR(r, a->version);
        a->bundle_size = mdm_rd_be(r, 8);
        a->reported_ms = mdm_rd_be(r, 8);
        break;
    }
    return mdm_rd_finish(r, a, sizeof(*a));
}

/* "a/" records: key <udid> 0x00 <bundle id>. */
static int dec_app_dev(const void *key, size_t klen, const void *val, size_t vlen, void *rec)
{
    mdm_app_t *a = rec;
    struct mdm_rd r = mdm_rd_start(a, sizeof(*a), val, vlen);
    r.err = key_parse_two(key, klen, a->udid, sizeof(a->udid), udid_ok, a->bundle_id,
                          sizeof(a->bundle_id), mdm_bundle_id_valid);
    return dec_app_value(&r, a);
}

/* "b/" records: key <bundle id> 0x00 <udid>. */
static int dec_app_bundle(const void *key, size_t klen, const void *val, size_t vlen,
                          void *rec)
{
    mdm_app_t *a = rec;
    struct mdm_rd r = mdm_rd_start(a, sizeof(*a), val, vlen);
    r.err = key_parse_two(key, klen, a->bundle_id, sizeof(a->bundle_id), mdm_bundle_id_valid,
                          a->udid, sizeof(a->udid), udid_ok);
    return dec_app_value(&r, a);
}

static void assert_app_keys(const char *udid, const char *bundle_id)
{
    assert(udid_ok(udid) && mdm_bundle_id_valid(bundle_id));
    (void)udid;
    (void)bundle_id;
}

void mdm_store_put_app(mdm_batch_t *b, const mdm_app_t *a)
{
    assert(b && a);
    assert_app_keys(a->udid, a->bundle_id);
    struct key k;
    key_two(&k, P_APP_DEV, a->udid, a->bundle_id);
    mdm_put_encoded(b, MDM_CF_POLICY, k.b, k.n, enc_app, a);
    key_two(&k, P_APP_BUNDLE, a->bundle_id, a->udid);
    mdm_put_encoded(b, MDM_CF_POLICY, k.b, k.n, enc_app, a);
}

void mdm_store_delete_app(mdm_batch_t *b, const char *udid, const char *bundle_id)
{
    assert(b);
    assert_app_keys(udid, bundle_id);
    struct key k;
    key_two(&k, P_APP_DEV, udid, bundle_id);
    mdm_batch_delete(b, MDM_CF_POLICY, k.b, k.n);
    key_two(&k, P_APP_BUNDLE, bundle_id, udid);
    mdm_batch_delete(b, MDM_CF_POLICY, k.b, k.n);
}

/* ---- point reads ---------------------------------------------------------------------------- */

struct view {
    mdm_decode_fn dec;
    const struct key *k; /* the record's key; dec is given it without the prefix */
    void *out;
};

static int on_view(void *arg, const void *val, size_t vlen)
{
    struct view *v = arg;
    return v->dec(v->k->b + PLEN, v->k->n - PLEN, val, vlen, v->out);
}

/* Reads the record under k with dec into out (size bytes); zeroed unless 0. */
static int get_record(mdm_store_t *s, const struct key *k, mdm_decode_fn dec, void *out,
                      size_t size)
{
    struct view v = {dec, k, out};
    int ret = mdm_store_get_view(s, MDM_CF_POLICY, k->b, k->n, on_view, &v);
    if (ret != 0) /* the decoders own nothing after a failure */
        memset(out, 0, size);
    return ret;
}

int mdm_store_get_policy(mdm_store_t *s, const char *id, mdm_policy_t *out)
{
    assert(s && out);
    memset(out, 0, sizeof(*out));
    if (!mdm_policy_id_valid(id))
        return -EINVAL;
    struct key k;
    key_one(&k, P_POLICY, id);
    return get_record(s, &k, dec_policy, out, sizeof(*out));
}

int mdm_store_get_group(mdm_store_t *s, const char *id, mdm_group_t *out)
{
    assert(s && out);
    memset(out, 0, sizeof(*out));
    if (!mdm_policy_id_valid(id))
        return -EINVAL;
    struct key k;
    key_one(&k, P_GROUP, id);
    return get_record(s, &k, dec_group, out, sizeof(*out));
}

int mdm_store_get_deployment(mdm_store_t *s, const char *udid, const char *policy_id,
                             mdm_deployment_t *out)
{
    assert(s && out);
    memset(out, 0, sizeof(*out));
    if (!udid_ok(udid) || !mdm_policy_id_valid(policy_id))
        return -EINVAL;
    struct key k;
    key_two(&k, P_DEPLOY_DEV, udid, policy_id);
    return get_record(s, &k, dec_deployment_dev, out, sizeof(*out));
}

/* ---- listings ------------------------------------------------------------------------------- */

MDM_LISTING_OF(list_policy_records, mdm_policy_t)
MDM_LISTING_OF(list_group_records, mdm_group_t)
MDM_LISTING_OF(list_deployments, mdm_deployment_t)
MDM_LISTING_OF(list_apps, mdm_app_t)

/* Length of an `after` key part of at most max bytes (NULL = 0), or -1 when longer. */
static int after_len(const char *after, size_t max)
{
    return after ? len_in(after, 0, max) : 0;
}

/*
 * The listing of the records under prefix, then head (and its 0x00 separator when head is not
 * NULL), strictly after the key part after[0..alen) (alen 0: from the start). The prefix and the
 * bound both point into *k; dec is given the key without the two-byte kind prefix.
 */
static struct mdm_listing range_listing(struct key *k, const char *prefix, const char *head,
                                        const char *after, size_t alen, mdm_decode_fn dec,
                                        const char *what)
{
    memcpy(k->b, prefix, PLEN);
    k->n = PLEN;
    if (head) {
        size_t n = strlen(head) + 1; /* with its NUL as the separator */
        memcpy(k->b + k->n, head, n);
        k->n += n;
    }
    size_t plen = k->n;
    assert(k->n + alen <= sizeof(k->b));
    if (alen)
        memcpy(k->b + k->n, after, alen);
    k->n += alen;
    return (struct mdm_listing){.cf = MDM_CF_POLICY,
                                .prefix = k->b,
                                .plen = plen,
                                .after = alen ? k->b : NULL,
                                .alen = alen ? k->n : 0,
                                .key_skip = PLEN,
                                .dec = dec,
                                .what = what};
}

/* Policies and groups are decoded into owned copies; these free them after each callback
 * (the record is the listing's own scratch, so dropping const is sound). */
struct policy_cb {
    int (*cb)(void *arg, const mdm_policy_t *p);
    void *arg;
};

static int on_listed_policy(void *arg, const mdm_policy_t *p)
{
    const struct policy_cb *c = arg;
    int ret = c->cb(c->arg, p);
    mdm_policy_dispose((mdm_policy_t *)(uintptr_t)p);
    return ret;
}

struct group_cb {
    int (*cb)(void *arg, const mdm_group_t *g);
    void *arg;
};

static int on_listed_group(void *arg, const mdm_group_t *g)
{
    const struct group_cb *c = arg;
    int ret = c->cb(c->arg, g);
    mdm_group_dispose((mdm_group_t *)(uintptr_t)g);
    return ret;
}

int mdm_store_list_policies(mdm_store_t *s, const char *after,
                            int (*cb)(void *arg, const mdm_policy_t *p), void *arg)
{
    assert(s && cb);
    int alen = after_len(after, MDM_POLICY_ID_LEN);
    if (alen < 0)
        return -EINVAL;
    struct key k;
    struct mdm_listing l =
        range_listing(&k, P_POLICY, NULL, after, (size_t)alen, dec_policy, "policy");
    struct policy_cb c = {cb, arg};
    return list_policy_records(s, &l, on_listed_policy, &c);
}

int mdm_store_list_groups(mdm_store_t *s, const char *after,
                          int (*cb)(void *arg, const mdm_group_t *g), void *arg)
{
    assert(s && cb);
    int alen = after_len(after, MDM_POLICY_ID_LEN);
    if (alen < 0)
        return -EINVAL;
    struct key k;
    struct mdm_listing l =
        range_listing(&k, P_GROUP, NULL, after, (size_t)alen, dec_group, "delivery group");
    struct group_cb c = {cb, arg};
    return list_group_records(s, &l, on_listed_group, &c);
}

int mdm_store_list_device_deployments(mdm_store_t *s, const char *udid,
                                      int (*cb)(void *arg, const mdm_deployment_t *d),
                                      void *arg)
{
    assert(s && cb);
    if (!udid_ok(udid))
        return -EINVAL;
    struct key k;
    struct mdm_listing l = range_listing(&k, P_DEPLOY_DEV, udid, NULL, 0, dec_deployment_dev,
                                         "deployment (by device)");
    return list_deployments(s, &l, cb, arg);
}

int mdm_store_list_policy_deployments(mdm_store_t *s, const char *policy_id, const char *after,
                                      int (*cb)(void *arg, const mdm_deployment_t *d),
                                      void *arg)
{
    assert(s && cb);
    int alen = after_len(after, MDM_UDID_MAX);
    if (!mdm_policy_id_valid(policy_id) || alen < 0)
        return -EINVAL;
    struct key k;
    struct mdm_listing l = range_listing(&k, P_DEPLOY_POL, policy_id, after, (size_t)alen,
                                         dec_deployment_pol, "deployment (by policy)");
    return list_deployments(s, &l, cb, arg);
}

int mdm_store_list_device_apps(mdm_store_t *s, const char *udid,
                               int (*cb)(void *arg, const mdm_app_t *a), void *arg)
{
    assert(s && cb);
    if (!udid_ok(udid))
        return -EINVAL;
    struct key k;
    struct mdm_listing l =
        range_listing(&k, P_APP_DEV, udid, NULL, 0, dec_app_dev, "application (by device)");
    return list_apps(s, &l, cb, arg);
}

int mdm_store_list_app_devices(mdm_store_t *s, const char *bundle_id, const char *after,
                               int (*cb)(void *arg, const mdm_app_t *a), void *arg)
{
    assert(s && cb);
    int alen = after_len(after, MDM_UDID_MAX);
    if (!mdm_bundle_id_valid(bundle_id) || alen < 0)
        return -EINVAL;
    struct key k;
    struct mdm_listing l = range_listing(&k, P_APP_BUNDLE, bundle_id, after, (size_t)alen,
                                         dec_app_bundle, "application (by app)");
    return list_apps(s, &l, cb, arg);
}

/* ---- purge ---------------------------------------------------------------------------------- */

/* Deletes one record of a device and its mirror ("r/" or "b/" <second> 0x00 <udid>). Only the
 * keys are read, so a record with a damaged value is purged too. */
struct purge {
    mdm_batch_t *b;
    const char *udid;
    const char *mirror;   /* the mirror's prefix */
    size_t head;          /* bytes of the device prefix: "d/" <udid> 0x00 */
    size_t second_max;    /* longest key part after it a writer produces */
};

static int on_purged(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    struct purge *pg = arg;
    mdm_batch_delete(pg->b, MDM_CF_POLICY, key, klen);
    const uint8_t *second = (const uint8_t *)key + pg->head;
    size_t n = klen - pg->head;
    if (n == 0 || n > pg->second_max || memchr(second, 0, n))
        return 0; /* no writer made this key, so it has no mirror */
    struct key k;
    size_t ulen = strlen(pg->udid);
    memcpy(k.b, pg->mirror, PLEN);
    memcpy(k.b + PLEN, second, n);
    k.b[PLEN + n] = 0;
    memcpy(k.b + PLEN + n + 1, pg->udid, ulen);
    k.n = PLEN + n + 1 + ulen;
    mdm_batch_delete(pg->b, MDM_CF_POLICY, k.b, k.n);
    return 0;
}

/* Appends the deletion of every record under prefix <udid> 0x00 and its mirror. */
static int purge_range(mdm_store_t *s, mdm_batch_t *b, const char *udid, const char *prefix,
                       const char *mirror, size_t second_max)
{
    struct key k;
    key_two(&k, prefix, udid, "");
    struct purge pg = {b, udid, mirror, k.n, second_max};
    return mdm_store_iter_prefix(s, MDM_CF_POLICY, k.b, k.n, on_purged, &pg);
}

int mdm_store_purge_device_policy(mdm_store_t *s, mdm_batch_t *b, const char *udid)
{
    assert(s && b);
    if (!udid_ok(udid))
        return -EINVAL;
    int ret = purge_range(s, b, udid, P_DEPLOY_DEV, P_DEPLOY_POL, MDM_POLICY_ID_LEN);
    if (ret == 0)
        ret = purge_range(s, b, udid, P_APP_DEV, P_APP_BUNDLE, MDM_BUNDLE_ID_MAX);
    return ret;
}
