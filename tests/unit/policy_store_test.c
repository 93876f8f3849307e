/*
 * storage/policy tests on temporary RocksDB directories: round trips of every record kind
 * (policy, delivery group, deployment, application) with every field at its limit and sparse,
 * owned JSON and sealed buffers empty and large; both index copies ("d/" + "r/", "a/" + "b/")
 * written and deleted together; the documented value layouts (values built by hand decode);
 * strict decoding (every truncation, trailing bytes, unknown formats, unknown actions, a NUL in
 * JSON, bad keys -> -EBADMSG with the output zeroed; byte flips decode or are rejected, never
 * overread: run it under ASan); identifier checks (-EINVAL); listings in key order with paging,
 * a device's listing not seeing a device whose UDID extends its own; purge of one device;
 * records surviving close and reopen.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/log.h"
#include "storage/policy.h"
#include "storage/store.h"

static void rm_rf(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static mdm_store_t *open_store(const char *path)
{
    struct mdm_store_options opt = {.path = path, .durability = MDM_DURABILITY_NONE};
    mdm_store_t *s = NULL;
    int ret = mdm_store_open(&s, &opt);
    if (ret != 0)
        fprintf(stderr, "mdm_store_open(%s): %s\n", path, mdm_strerror(ret));
    return s;
}

static void commit(mdm_store_t *s, mdm_batch_t *b)
{
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
}

/* Fills a char[size] field with size - 1 copies of c (the longest string it holds). */
#define FILL_MAX(field, c)                                                                     \
    do {                                                                                       \
        memset((field), (c), sizeof(field) - 1);                                               \
        (field)[sizeof(field) - 1] = 0;                                                        \
    } while (0)

static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* ---- keys (test knowledge of the layouts) --------------------------------------------------- */

struct key {
    uint8_t b[256];
    size_t n;
};

/* prefix, a, and when b is not NULL a 0x00 and b. */
static struct key key_of(const char *prefix, const char *a, const char *b)
{
    struct key k = {.n = 0};
    size_t n = strlen(prefix);
    memcpy(k.b, prefix, n);
    k.n = n;
    n = strlen(a);
    memcpy(k.b + k.n, a, n);
    k.n += n;
    if (b) {
        k.b[k.n++] = 0;
        n = strlen(b);
        memcpy(k.b + k.n, b, n);
        k.n += n;
    }
    return k;
}

/* The raw value under k into v (reset first); returns the store's code. */
static int raw_get(mdm_store_t *s, struct key k, mdm_buf_t *v)
{
    mdm_buf_reset(v);
    return mdm_store_get(s, MDM_CF_POLICY, k.b, k.n, v);
}

static bool raw_exists(mdm_store_t *s, struct key k)
{
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    int ret = raw_get(s, k, &v);
    mdm_buf_dispose(&v);
    return ret == 0;
}

/* Both copies exist and hold the same value. */
static bool both_copies(mdm_store_t *s, struct key k1, struct key k2)
{
    mdm_buf_t v1, v2;
    mdm_buf_init(&v1, 0);
    mdm_buf_init(&v2, 0);
    bool ok = raw_get(s, k1, &v1) == 0 && raw_get(s, k2, &v2) == 0 && v1.len == v2.len &&
              memcmp(mdm_buf_head(&v1), mdm_buf_head(&v2), v1.len) == 0;
    mdm_buf_dispose(&v1);
    mdm_buf_dispose(&v2);
    return ok;
}

/* Identifier number n of each kind. */
static void pid_of(unsigned n, char out[MDM_POLICY_ID_LEN + 1])
{
    snprintf(out, MDM_POLICY_ID_LEN + 1, "%016x", n);
}

static void udid_of(unsigned n, char out[MDM_UDID_MAX + 1])
{
    snprintf(out, MDM_UDID_MAX + 1, "U%07u", n);
}

static void bundle_of(unsigned n, char out[MDM_BUNDLE_ID_MAX + 1])
{
    snprintf(out, MDM_BUNDLE_ID_MAX + 1, "com.example.b%07u", n);
}

/* ---- full records --------------------------------------------------------------------------- */

static void full_policy(mdm_policy_t *p, const char *id, size_t json_len, size_t sealed_len)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->id, sizeof(p->id), "%s", id);
    FILL_MAX(p->type, 't');
    FILL_MAX(p->name, 'n');
    p->name[0] = (char)0xc3; /* UTF-8 bytes pass through */
    p->name[1] = (char)0xa9;
    p->version = UINT32_MAX;
    FILL_MAX(p->profile_identifier, 'i');
    p->created_ms = UINT64_MAX;
    p->updated_ms = 0x0102030405060708ull;
    FILL_MAX(p->created_by, 'c');
    p->settings_json = malloc(json_len + 1);
    for (size_t i = 0; i < json_len; i++)
        p->settings_json[i] = (char)(' ' + i % 95);
    p->settings_json[json_len] = 0;
    p->settings_len = json_len;
    p->sealed_len = sealed_len;
    p->sealed_secrets = sealed_len ? malloc(sealed_len) : NULL;
    for (size_t i = 0; i < sealed_len; i++)
        p->sealed_secrets[i] = (uint8_t)(i * 7); /* zero bytes included */
}

static bool policy_eq(const mdm_policy_t *a, const mdm_policy_t *b)
{
    bool sealed_same = a->sealed_len == b->sealed_len &&
                       (a->sealed_len == 0 ||
                        memcmp(a->sealed_secrets, b->sealed_secrets, a->sealed_len) == 0);
    const char *ja = a->settings_json ? a->settings_json : "";
    const char *jb = b->settings_json ? b->settings_json : "";
    return strcmp(a->id, b->id) == 0 && strcmp(a->type, b->type) == 0 &&
           strcmp(a->name, b->name) == 0 && a->version == b->version &&
           strcmp(a->profile_identifier, b->profile_identifier) == 0 &&
           a->created_ms == b->created_ms && a->updated_ms == b->updated_ms &&
           strcmp(a->created_by, b->created_by) == 0 && a->settings_len == b->settings_len &&
           strcmp(ja, jb) == 0 && sealed_same;
}

static void full_group(mdm_group_t *g, const char *id, const char *spec)
{
    memset(g, 0, sizeof(*g));
    snprintf(g->id, sizeof(g->id), "%s", id);
    FILL_MAX(g->name, 'g');
    g->version = 0x80000001u;
    g->created_ms = UINT64_MAX - 1;
    g->updated_ms = 3;
    g->spec_json = spec ? strdup(spec) : NULL;
    g->spec_len = spec ? strlen(spec) : 0;
}

static bool group_eq(const mdm_group_t *a, const mdm_group_t *b)
{
    const char *ja = a->spec_json ? a->spec_json : "";
    const char *jb = b->spec_json ? b->spec_json : "";
    return strcmp(a->id, b->id) == 0 && strcmp(a->name, b->name) == 0 &&
           a->version == b->version && a->created_ms == b->created_ms &&
           a->updated_ms == b->updated_ms && a->spec_len == b->spec_len && strcmp(ja, jb) == 0;
}

static void full_deployment(mdm_deployment_t *d, const char *udid, const char *pid)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->udid, sizeof(d->udid), "%s", udid);
    snprintf(d->policy_id, sizeof(d->policy_id), "%s", pid);
    d->action = MDM_DEPLOY_REMOVED;
    d->policy_version = UINT32_MAX;
    FILL_MAX(d->profile_identifier, 'p');
    FILL_MAX(d->command_uuid, 'C');
    d->sent_ms = UINT64_MAX;
}

static bool deployment_eq(const mdm_deployment_t *a, const mdm_deployment_t *b)
{
    return strcmp(a->udid, b->udid) == 0 && strcmp(a->policy_id, b->policy_id) == 0 &&
           a->action == b->action && a->policy_version == b->policy_version &&
           strcmp(a->profile_identifier, b->profile_identifier) == 0 &&
           strcmp(a->command_uuid, b->command_uuid) == 0 && a->sent_ms == b->sent_ms;
}

static void full_app(mdm_app_t *a, const char *udid, const char *bundle)
{
    memset(a, 0, sizeof(*a));
    snprintf(a->udid, sizeof(a->udid), "%s", udid);
    snprintf(a->bundle_id, sizeof(a->bundle_id), "%s", bundle);
    FILL_MAX(a->name, 'a');
    FILL_MAX(a->short_version, '1');
    FILL_MAX(a->version, '2');
    a->bundle_size = UINT64_MAX;
    a->reported_ms = 0x1122334455667788ull;
}

static bool app_eq(const mdm_app_t *a, const mdm_app_t *b)
{
    return strcmp(a->udid, b->udid) == 0 && strcmp(a->bundle_id, b->bundle_id) == 0 &&
           strcmp(a->name, b->name) == 0 && strcmp(a->short_version, b->short_version) == 0 &&
           strcmp(a->version, b->version) == 0 && a->bundle_size == b->bundle_size &&
           a->reported_ms == b->reported_ms;
}

/* ---- listing callbacks ---------------------------------------------------------------------- */

/* Collects up to 64 records of a listing (copies), returns 7 at stop_at (0: never). */
struct seen {
    int n;
    int stop_at;
    mdm_deployment_t dep[64];
    mdm_app_t app[64];
    char ids[64][MDM_POLICY_ID_LEN + 1];
    size_t json_len[64];
    bool json_ok[64]; /* the borrowed JSON was readable and NUL-terminated at its length */
};

static int stop(struct seen *c)
{
    c->n++;
    return c->stop_at && c->n == c->stop_at ? 7 : 0;
}

static int seen_dep(void *arg, const mdm_deployment_t *d)
{
    struct seen *c = arg;
    if (c->n < 64)
        c->dep[c->n] = *d;
    return stop(c);
}

static int seen_app(void *arg, const mdm_app_t *a)
{
    struct seen *c = arg;
    if (c->n < 64)
        c->app[c->n] = *a;
    return stop(c);
}

static int seen_policy(void *arg, const mdm_policy_t *p)
{
    struct seen *c = arg;
    if (c->n < 64) {
        memcpy(c->ids[c->n], p->id, sizeof(c->ids[0]));
        c->json_len[c->n] = p->settings_len;
        c->json_ok[c->n] = p->settings_json && strlen(p->settings_json) == p->settings_len;
    }
    return stop(c);
}

static int seen_group(void *arg, const mdm_group_t *g)
{
    struct seen *c = arg;
    if (c->n < 64) {
        memcpy(c->ids[c->n], g->id, sizeof(c->ids[0]));
        c->json_len[c->n] = g->spec_len;
        c->json_ok[c->n] = g->spec_json && strlen(g->spec_json) == g->spec_len;
    }
    return stop(c);
}

/* ---- identifiers ---------------------------------------------------------------------------- */

static void test_identifiers(void)
{
    char id[MDM_POLICY_ID_LEN + 1], id2[MDM_POLICY_ID_LEN + 1];
    CHECK_EQ_INT(mdm_policy_id_new(id), 0);
    CHECK_EQ_INT(mdm_policy_id_new(id2), 0);
    CHECK(mdm_policy_id_valid(id));
    CHECK_EQ_INT(strlen(id), MDM_POLICY_ID_LEN);
    CHECK(strcmp(id, id2) != 0);
    CHECK(mdm_policy_id_valid("0123456789abcdef"));
    CHECK(!mdm_policy_id_valid("0123456789ABCDEF"));
    CHECK(!mdm_policy_id_valid("0123456789abcde"));
    CHECK(!mdm_policy_id_valid("0123456789abcdef0"));
    CHECK(!mdm_policy_id_valid("0123456789abcdeg"));
    CHECK(!mdm_policy_id_valid(""));
    CHECK(!mdm_policy_id_valid(NULL));

    CHECK(mdm_bundle_id_valid("com.apple.Safari"));
    CHECK(mdm_bundle_id_valid("x"));
    CHECK(mdm_bundle_id_valid("caf\xc3\xa9 app"));
    CHECK(!mdm_bundle_id_valid(""));
    CHECK(!mdm_bundle_id_valid(NULL));
    CHECK(!mdm_bundle_id_valid("a\tb"));
    CHECK(!mdm_bundle_id_valid("a\x7f"));
    char b127[MDM_BUNDLE_ID_MAX + 1], b128[MDM_BUNDLE_ID_MAX + 2];
    memset(b127, 'b', MDM_BUNDLE_ID_MAX);
    b127[MDM_BUNDLE_ID_MAX] = 0;
    memset(b128, 'b', MDM_BUNDLE_ID_MAX + 1);
    b128[MDM_BUNDLE_ID_MAX + 1] = 0;
    CHECK(mdm_bundle_id_valid(b127));
    CHECK(!mdm_bundle_id_valid(b128));

    CHECK_STR(mdm_deploy_action_name(MDM_DEPLOY_INSTALL), "install");
    CHECK_STR(mdm_deploy_action_name(MDM_DEPLOY_REMOVE), "remove");
    CHECK_STR(mdm_deploy_action_name(MDM_DEPLOY_REMOVED), "removed");
    CHECK_STR(mdm_deploy_action_name((enum mdm_deploy_action)9), "unknown");
}

/* ---- round trips, both copies, overwrite, delete -------------------------------------------- */

enum { BIG_JSON = 1 << 20, BIG_SEALED = 100000 };

static void test_round_trip(void)
{
    char *dir = strdup(check_tmpdir("policy-rt"));
    mdm_store_t *s = open_store(dir);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();

    /* Policies: large buffers, and sparse ones (settings_json NULL, no secrets). */
    static mdm_policy_t p, sp, gp;
    char pid[MDM_POLICY_ID_LEN + 1], spid[MDM_POLICY_ID_LEN + 1];
    CHECK_EQ_INT(mdm_policy_id_new(pid), 0);
    pid_of(1, spid);
    full_policy(&p, pid, BIG_JSON, BIG_SEALED);
    memset(&sp, 0, sizeof(sp));
    memcpy(sp.id, spid, sizeof(sp.id));
    mdm_store_put_policy(b, &p);
    mdm_store_put_policy(b, &sp);

    /* Groups: a real spec and none. */
    static mdm_group_t g, sg, gg;
    char gid[MDM_POLICY_ID_LEN + 1], sgid[MDM_POLICY_ID_LEN + 1];
    CHECK_EQ_INT(mdm_policy_id_new(gid), 0);
    pid_of(2, sgid);
    full_group(&g, gid,
               "{\"all_devices\":false,\"devices\":[\"U1\"],\"users\":[],\"user_groups\":[],"
               "\"policies\":[\"0000000000000001\"]}");
    memset(&sg, 0, sizeof(sg));
    memcpy(sg.id, sgid, sizeof(sg.id));
    mdm_store_put_group(b, &g);
    mdm_store_put_group(b, &sg);

    /* Deployments and apps: every field at its limit, and sparse. */
    char udid[MDM_UDID_MAX + 1], bundle[MDM_BUNDLE_ID_MAX + 1];
    FILL_MAX(udid, 'U');
    FILL_MAX(bundle, 'B');
    bundle[3] = (char)0xff; /* any byte but controls */
    mdm_deployment_t d, sd, gd;
    full_deployment(&d, udid, pid);
    memset(&sd, 0, sizeof(sd));
    snprintf(sd.udid, sizeof(sd.udid), "x");
    memcpy(sd.policy_id, spid, sizeof(sd.policy_id));
    mdm_store_put_deployment(b, &d);
    mdm_store_put_deployment(b, &sd);
    mdm_app_t a, sa;
    full_app(&a, udid, bundle);
    memset(&sa, 0, sizeof(sa));
    snprintf(sa.udid, sizeof(sa.udid), "x");
    snprintf(sa.bundle_id, sizeof(sa.bundle_id), "y");
    mdm_store_put_app(b, &a);
    mdm_store_put_app(b, &sa);
    commit(s, b);

    CHECK_EQ_INT(mdm_store_get_policy(s, pid, &gp), 0);
    CHECK(policy_eq(&gp, &p));
    CHECK(gp.settings_json != p.settings_json && gp.sealed_secrets != p.sealed_secrets);
    mdm_policy_dispose(&gp);
    CHECK(all_zero(&gp, sizeof(gp)));
    CHECK_EQ_INT(mdm_store_get_policy(s, spid, &gp), 0);
    CHECK(policy_eq(&gp, &sp));
    CHECK(gp.settings_json != NULL && gp.settings_json[0] == 0 && gp.settings_len == 0);
    CHECK(gp.sealed_secrets == NULL && gp.sealed_len == 0);
    mdm_policy_dispose(&gp);
    CHECK_EQ_INT(mdm_store_get_group(s, gid, &gg), 0);
    CHECK(group_eq(&gg, &g));
    mdm_group_dispose(&gg);
    CHECK_EQ_INT(mdm_store_get_group(s, sgid, &gg), 0);
    CHECK(group_eq(&gg, &sg));
    CHECK(gg.spec_json != NULL && gg.spec_len == 0);
    mdm_group_dispose(&gg);
    mdm_group_dispose(NULL);
    mdm_policy_dispose(NULL);
    CHECK_EQ_INT(mdm_store_get_deployment(s, udid, pid, &gd), 0);
    CHECK(deployment_eq(&gd, &d));
    CHECK_EQ_INT(mdm_store_get_deployment(s, "x", spid, &gd), 0);
    CHECK(deployment_eq(&gd, &sd));
    CHECK_EQ_INT(gd.action, MDM_DEPLOY_INSTALL);
    struct seen *c = calloc(1, sizeof(*c));
    CHECK_EQ_INT(mdm_store_list_device_apps(s, udid, seen_app, c), 0);
    CHECK(c->n == 1 && app_eq(&c->app[0], &a));
    memset(c, 0, sizeof(*c));
    CHECK_EQ_INT(mdm_store_list_app_devices(s, "y", NULL, seen_app, c), 0);
    CHECK(c->n == 1 && app_eq(&c->app[0], &sa));
    memset(c, 0, sizeof(*c));
    CHECK_EQ_INT(mdm_store_list_policy_deployments(s, pid, NULL, seen_dep, c), 0);
    CHECK(c->n == 1 && deployment_eq(&c->dep[0], &d));

    /* Both copies, one value; values are small (key fields not repeated). */
    CHECK(both_copies(s, key_of("d/", udid, pid), key_of("r/", pid, udid)));
    CHECK(both_copies(s, key_of("d/", "x", spid), key_of("r/", spid, "x")));
    CHECK(both_copies(s, key_of("a/", udid, bundle), key_of("b/", bundle, udid)));
    CHECK(both_copies(s, key_of("a/", "x", "y"), key_of("b/", "y", "x")));
    mdm_buf_t raw;
    mdm_buf_init(&raw, 0);
    CHECK_EQ_INT(raw_get(s, key_of("d/", "x", spid), &raw), 0);
    CHECK_EQ_INT(raw.len, 1 + 1 + 4 + 2 + 2 + 8);
    CHECK_EQ_INT(raw_get(s, key_of("a/", "x", "y"), &raw), 0);
    CHECK_EQ_INT(raw.len, 1 + 3 * 2 + 2 * 8);
    CHECK_EQ_INT(raw_get(s, key_of("p/", spid, NULL), &raw), 0);
    CHECK_EQ_INT(raw.len, 1 + 2 + 2 + 4 + 2 + 8 + 8 + 2 + 4 + 4);
    CHECK_EQ_INT(raw_get(s, key_of("g/", sgid, NULL), &raw), 0);
    CHECK_EQ_INT(raw.len, 1 + 2 + 4 + 8 + 8 + 4);
    mdm_buf_dispose(&raw);

    /* Not found, and identifiers that cannot exist. */
    char other[MDM_POLICY_ID_LEN + 1];
    pid_of(99, other);
    CHECK_EQ_INT(mdm_store_get_policy(s, other, &gp), MDM_ENOTFOUND);
    CHECK(all_zero(&gp, sizeof(gp)));
    CHECK_EQ_INT(mdm_store_get_group(s, other, &gg), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_deployment(s, udid, other, &gd), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_deployment(s, "nobody", pid, &gd), MDM_ENOTFOUND);
    CHECK(all_zero(&gd, sizeof(gd)));
    char long_udid[MDM_UDID_MAX + 2];
    memset(long_udid, 'L', MDM_UDID_MAX + 1);
    long_udid[MDM_UDID_MAX + 1] = 0;
    CHECK_EQ_INT(mdm_store_get_policy(s, "short", &gp), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_policy(s, "0123456789ABCDEF", &gp), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_policy(s, NULL, &gp), -EINVAL);
    CHECK(all_zero(&gp, sizeof(gp)));
    CHECK_EQ_INT(mdm_store_get_group(s, "", &gg), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_deployment(s, "", pid, &gd), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_deployment(s, long_udid, pid, &gd), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_deployment(s, udid, "nope", &gd), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_deployment(s, NULL, pid, &gd), -EINVAL);
    CHECK(all_zero(&gd, sizeof(gd)));

    /* Overwrite: the newest put wins, in both copies. */
    free(p.settings_json);
    p.settings_json = strdup("{\"a\":1}");
    p.settings_len = strlen(p.settings_json);
    free(p.sealed_secrets);
    p.sealed_secrets = NULL;
    p.sealed_len = 0;
    p.version = 2;
    d.action = MDM_DEPLOY_REMOVE;
    d.command_uuid[0] = 0;
    a.version[0] = 0;
    mdm_store_put_policy(b, &p);
    mdm_store_put_deployment(b, &d);
    mdm_store_put_app(b, &a);
    commit(s, b);
    CHECK_EQ_INT(mdm_store_get_policy(s, pid, &gp), 0);
    CHECK(policy_eq(&gp, &p));
    CHECK(gp.sealed_secrets == NULL);
    mdm_policy_dispose(&gp);
    CHECK_EQ_INT(mdm_store_get_deployment(s, udid, pid, &gd), 0);
    CHECK(deployment_eq(&gd, &d));
    CHECK(both_copies(s, key_of("d/", udid, pid), key_of("r/", pid, udid)));
    CHECK(both_copies(s, key_of("a/", udid, bundle), key_of("b/", bundle, udid)));
    memset(c, 0, sizeof(*c));
    CHECK_EQ_INT(mdm_store_list_app_devices(s, bundle, NULL, seen_app, c), 0);
    CHECK(c->n == 1 && app_eq(&c->app[0], &a));

    /* Delete: both copies go together; the neighbours stay. */
    mdm_store_delete_policy(b, pid);
    mdm_store_delete_group(b, gid);
    mdm_store_delete_deployment(b, udid, pid);
    mdm_store_delete_app(b, udid, bundle);
    commit(s, b);
    CHECK_EQ_INT(mdm_store_get_policy(s, pid, &gp), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_group(s, gid, &gg), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_deployment(s, udid, pid, &gd), MDM_ENOTFOUND);
    CHECK(!raw_exists(s, key_of("d/", udid, pid)) && !raw_exists(s, key_of("r/", pid, udid)));
    CHECK(!raw_exists(s, key_of("a/", udid, bundle)) &&
          !raw_exists(s, key_of("b/", bundle, udid)));
    CHECK_EQ_INT(mdm_store_get_policy(s, spid, &gp), 0);
    mdm_policy_dispose(&gp);
    CHECK_EQ_INT(mdm_store_get_group(s, sgid, &gg), 0);
    mdm_group_dispose(&gg);
    CHECK(both_copies(s, key_of("d/", "x", spid), key_of("r/", spid, "x")));
    CHECK(both_copies(s, key_of("a/", "x", "y"), key_of("b/", "y", "x")));

    free(c);
    mdm_policy_dispose(&p);
    mdm_group_dispose(&g);
    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* ---- strict decoding ------------------------------------------------------------------------ */

/* A value built by hand, following the layouts documented in storage/policy.c. */
struct vb {
    uint8_t b[4096];
    size_t n;
};

static void vb_be(struct vb *v, uint64_t x, int nbytes)
{
    for (int i = nbytes - 1; i >= 0; i--)
        v->b[v->n++] = (uint8_t)(x >> (8 * i));
}

static void vb_bytes(struct vb *v, const void *p, size_t n, int lenbytes)
{
    vb_be(v, n, lenbytes);
    memcpy(v->b + v->n, p, n);
    v->n += n;
}

static void vb_str(struct vb *v, const char *s)
{
    vb_bytes(v, s, strlen(s), 2);
}

static void vb_policy(struct vb *v, unsigned format, const void *json, size_t json_len)
{
    v->n = 0;
    vb_be(v, format, 1);
    vb_str(v, "wifi");
    vb_str(v, "Office Wi-Fi");
    vb_be(v, 4, 4);
    vb_str(v, "com.example.wifi");
    vb_be(v, 1, 8);
    vb_be(v, 2, 8);
    vb_str(v, "admin");
    vb_bytes(v, json, json_len, 4);
    vb_bytes(v, "\x00\x01\x02", 3, 4);
}

static void vb_group(struct vb *v, const void *json, size_t json_len)
{
    v->n = 0;
    vb_be(v, 1, 1);
    vb_str(v, "Everyone");
    vb_be(v, 5, 4);
    vb_be(v, 6, 8);
    vb_be(v, 7, 8);
    vb_bytes(v, json, json_len, 4);
}

static void vb_deployment(struct vb *v, unsigned action)
{
    v->n = 0;
    vb_be(v, 1, 1);
    vb_be(v, action, 1);
    vb_be(v, 9, 4);
    vb_str(v, "com.example.wifi");
    vb_str(v, "CMD-1");
    vb_be(v, 10, 8);
}

static void vb_app(struct vb *v)
{
    v->n = 0;
    vb_be(v, 1, 1);
    vb_str(v, "Safari");
    vb_str(v, "17.1");
    vb_str(v, "19617");
    vb_be(v, 12345, 8);
    vb_be(v, 11, 8);
}

/* The record kinds, as the test reads them; record number n has its own identifiers. */
enum kind { POLICY, GROUP, DEP_DEV, DEP_POL, APP_DEV, APP_BUNDLE, NKINDS };

static struct key kind_key(enum kind k, unsigned n)
{
    char pid[MDM_POLICY_ID_LEN + 1], udid[MDM_UDID_MAX + 1], bundle[MDM_BUNDLE_ID_MAX + 1];
    pid_of(n, pid);
    udid_of(n, udid);
    bundle_of(n, bundle);
    switch (k) {
    case POLICY: return key_of("p/", pid, NULL);
    case GROUP: return key_of("g/", pid, NULL);
    case DEP_DEV: return key_of("d/", udid, pid);
    case DEP_POL: return key_of("r/", pid, udid);
    case APP_DEV: return key_of("a/", udid, bundle);
    default: return key_of("b/", bundle, udid);
    }
}

static void put_raw(mdm_batch_t *b, struct key k, const void *val, size_t vlen)
{
    mdm_batch_put(b, MDM_CF_POLICY, k.b, k.n, val, vlen);
}

/*
 * Reads record n of kind k through the typed API (a get, or a listing that sees only it);
 * *ok tells whether the result was well formed: after a failure the output zeroed (gets) or
 * no record delivered (listings).
 */
static int read_kind(mdm_store_t *s, enum kind k, unsigned n, bool *ok)
{
    char pid[MDM_POLICY_ID_LEN + 1], udid[MDM_UDID_MAX + 1], bundle[MDM_BUNDLE_ID_MAX + 1];
    pid_of(n, pid);
    udid_of(n, udid);
    bundle_of(n, bundle);
    static struct seen c;
    memset(&c, 0, sizeof(c));
    int ret;
    switch (k) {
    case POLICY: {
        mdm_policy_t p;
        ret = mdm_store_get_policy(s, pid, &p);
        *ok = ret == 0 ? p.settings_json && strlen(p.settings_json) == p.settings_len
                       : all_zero(&p, sizeof(p));
        mdm_policy_dispose(&p);
        return ret;
    }
    case GROUP: {
        mdm_group_t g;
        ret = mdm_store_get_group(s, pid, &g);
        *ok = ret == 0 ? g.spec_json && strlen(g.spec_json) == g.spec_len
                       : all_zero(&g, sizeof(g));
        mdm_group_dispose(&g);
        return ret;
    }
    case DEP_DEV: {
        mdm_deployment_t d;
        ret = mdm_store_get_deployment(s, udid, pid, &d);
        *ok = ret == 0 || all_zero(&d, sizeof(d));
        return ret;
    }
    case DEP_POL: ret = mdm_store_list_policy_deployments(s, pid, NULL, seen_dep, &c); break;
    case APP_DEV: ret = mdm_store_list_device_apps(s, udid, seen_app, &c); break;
    default: ret = mdm_store_list_app_devices(s, bundle, NULL, seen_app, &c); break;
    }
    *ok = ret == 0 ? c.n == 1 : c.n == 0;
    return ret;
}

/* -EBADMSG, well formed. */
static bool bad(mdm_store_t *s, enum kind k, unsigned n)
{
    bool ok;
    return read_kind(s, k, n, &ok) == -EBADMSG && ok;
}

/* A valid hand-built value of kind k into v (record 0 of each kind). */
static void vb_valid(struct vb *v, enum kind k)
{
    switch (k) {
    case POLICY: vb_policy(v, 1, "{}", 2); break;
    case GROUP: vb_group(v, "{\"all_devices\":true}", 20); break;
    case DEP_DEV:
    case DEP_POL: vb_deployment(v, MDM_DEPLOY_REMOVE); break;
    default: vb_app(v); break;
    }
}

static void test_layouts_and_damage(void)
{
    char *dir = strdup(check_tmpdir("policy-damage"));
    mdm_store_t *s = open_store(dir);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    static struct vb v;
    bool ok;

    /* Hand-built values decode: the documented layouts are the real ones. */
    for (int k = 0; k < NKINDS; k++) {
        vb_valid(&v, (enum kind)k);
        put_raw(b, kind_key((enum kind)k, 0), v.b, v.n);
    }
    commit(s, b);
    for (int k = 0; k < NKINDS; k++) {
        CHECK_EQ_INT(read_kind(s, (enum kind)k, 0, &ok), 0);
        CHECK(ok);
    }
    mdm_policy_t p;
    CHECK_EQ_INT(mdm_store_get_policy(s, "0000000000000000", &p), 0);
    CHECK_STR(p.type, "wifi");
    CHECK_STR(p.name, "Office Wi-Fi");
    CHECK_STR(p.profile_identifier, "com.example.wifi");
    CHECK_STR(p.created_by, "admin");
    CHECK_STR(p.settings_json, "{}");
    CHECK(p.version == 4 && p.created_ms == 1 && p.updated_ms == 2 && p.settings_len == 2);
    CHECK(p.sealed_len == 3 && memcmp(p.sealed_secrets, "\x00\x01\x02", 3) == 0);
    mdm_policy_dispose(&p);
    mdm_group_t g;
    CHECK_EQ_INT(mdm_store_get_group(s, "0000000000000000", &g), 0);
    CHECK_STR(g.name, "Everyone");
    CHECK_STR(g.spec_json, "{\"all_devices\":true}");
    CHECK(g.version == 5 && g.created_ms == 6 && g.updated_ms == 7 && g.spec_len == 20);
    mdm_group_dispose(&g);
    mdm_deployment_t d;
    CHECK_EQ_INT(mdm_store_get_deployment(s, "U0000000", "0000000000000000", &d), 0);
    CHECK(d.action == MDM_DEPLOY_REMOVE && d.policy_version == 9 && d.sent_ms == 10);
    CHECK_STR(d.command_uuid, "CMD-1");
    CHECK_STR(d.profile_identifier, "com.example.wifi");
    static struct seen c;
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_app_devices(s, "com.example.b0000000", NULL, seen_app, &c), 0);
    CHECK(c.n == 1 && c.app[0].bundle_size == 12345 && c.app[0].reported_ms == 11);
    CHECK_STR(c.app[0].name, "Safari");
    CHECK_STR(c.app[0].short_version, "17.1");
    CHECK_STR(c.app[0].version, "19617");
    CHECK_STR(c.app[0].udid, "U0000000");

    /* Every truncation of every kind. */
    for (int k = 0; k < NKINDS; k++) {
        vb_valid(&v, (enum kind)k);
        for (size_t n = 0; n < v.n; n++)
            put_raw(b, kind_key((enum kind)k, 1000 + (unsigned)n), v.b, n);
    }
    commit(s, b);
    for (int k = 0; k < NKINDS; k++) {
        vb_valid(&v, (enum kind)k);
        int wrong = 0;
        for (size_t n = 0; n < v.n; n++)
            wrong += !bad(s, (enum kind)k, 1000 + (unsigned)n);
        if (wrong)
            fprintf(stderr, "kind %d: %d truncations accepted\n", k, wrong);
        CHECK_EQ_INT(wrong, 0);
    }

    /* Trailing bytes and unknown formats. */
    static const uint8_t formats[] = {0, 2, 0x7f, 0xff};
    for (int k = 0; k < NKINDS; k++) {
        vb_valid(&v, (enum kind)k);
        v.b[v.n] = 0;
        put_raw(b, kind_key((enum kind)k, 500), v.b, v.n + 1);
        for (unsigned f = 0; f < sizeof(formats); f++) {
            v.b[0] = formats[f];
            put_raw(b, kind_key((enum kind)k, 600 + f), v.b, v.n);
        }
    }
    commit(s, b);
    for (int k = 0; k < NKINDS; k++) {
        CHECK(bad(s, (enum kind)k, 500));
        for (unsigned f = 0; f < sizeof(formats); f++)
            CHECK(bad(s, (enum kind)k, 600 + f));
    }

    /* Field damage: unknown actions, a NUL inside JSON, a string longer than its field. */
    static const unsigned actions[] = {MDM_DEPLOY_REMOVED + 1, 0x80, 0xff};
    for (unsigned i = 0; i < 3; i++) {
        vb_deployment(&v, actions[i]);
        put_raw(b, kind_key(DEP_DEV, 700 + i), v.b, v.n);
        put_raw(b, kind_key(DEP_POL, 700 + i), v.b, v.n);
    }
    vb_policy(&v, 1, "{\0}", 3);
    put_raw(b, kind_key(POLICY, 700), v.b, v.n);
    vb_group(&v, "\0", 1);
    put_raw(b, kind_key(GROUP, 700), v.b, v.n);
    {
        char s64[65]; /* fits an app's name (127), not its short_version (63) */
        memset(s64, 's', 64);
        s64[64] = 0;
        v.n = 0;
        vb_be(&v, 1, 1);
        vb_str(&v, s64);
        vb_str(&v, s64);
        vb_str(&v, "1");
        vb_be(&v, 1, 8);
        vb_be(&v, 1, 8);
        put_raw(b, kind_key(APP_DEV, 700), v.b, v.n);
    }
    commit(s, b);
    for (unsigned i = 0; i < 3; i++) {
        CHECK(bad(s, DEP_DEV, 700 + i));
        CHECK(bad(s, DEP_POL, 700 + i));
    }
    CHECK(bad(s, POLICY, 700));
    CHECK(bad(s, GROUP, 700));
    CHECK(bad(s, APP_DEV, 700));

    /* Keys no writer produces: a bad policy id, a bad bundle id, a missing separator. */
    vb_valid(&v, POLICY);
    put_raw(b, key_of("p/", "0123456789ABCDEF", NULL), v.b, v.n);
    put_raw(b, key_of("p/", "00000000000000001", NULL), v.b, v.n);
    vb_valid(&v, DEP_DEV);
    put_raw(b, key_of("d/", "U0000800", "0123456789ABCDEF"), v.b, v.n);
    put_raw(b, key_of("d/", "U0000801", NULL), v.b, v.n);
    put_raw(b, key_of("r/", "0000000000000320", ""), v.b, v.n); /* empty UDID */
    vb_valid(&v, APP_DEV);
    put_raw(b, key_of("a/", "U0000800", "a\tb"), v.b, v.n);
    put_raw(b, key_of("b/", "com.example.b0000800", NULL), v.b, v.n);
    commit(s, b);
    memset(&c, 0, sizeof(c)); /* only the bad upper-case id lies after 0000000000009999 */
    CHECK_EQ_INT(mdm_store_list_policies(s, "0000000000009999", seen_policy, &c), -EBADMSG);
    CHECK_EQ_INT(c.n, 0);
    CHECK_EQ_INT(mdm_store_list_device_deployments(s, "U0000800", seen_dep, &c), -EBADMSG);
    CHECK_EQ_INT(c.n, 0);
    CHECK_EQ_INT(mdm_store_list_policy_deployments(s, "0000000000000320", NULL, seen_dep, &c),
                 -EBADMSG);
    CHECK_EQ_INT(mdm_store_list_device_apps(s, "U0000800", seen_app, &c), -EBADMSG);
    CHECK_EQ_INT(c.n, 0);
    /* "U0000801" with no separator is not under the prefix "d/U0000801\0": not seen. */
    CHECK_EQ_INT(mdm_store_list_device_deployments(s, "U0000801", seen_dep, &c), 0);
    CHECK_EQ_INT(mdm_store_list_app_devices(s, "com.example.b0000800", NULL, seen_app, &c), 0);
    CHECK_EQ_INT(c.n, 0);

    /* Byte flips anywhere: decoded or rejected, never a crash or an overread (ASan). */
    static const uint8_t masks[] = {0x01, 0x80, 0xff};
    for (int k = 0; k < NKINDS; k++) {
        vb_valid(&v, (enum kind)k);
        static struct vb w;
        for (size_t i = 0; i < v.n; i++)
            for (unsigned m = 0; m < sizeof(masks); m++) {
                w = v;
                w.b[i] ^= masks[m];
                put_raw(b, kind_key((enum kind)k, 100000 + (unsigned)(i * 4 + m)), w.b, w.n);
            }
    }
    commit(s, b);
    int odd = 0, rejected = 0;
    for (int k = 0; k < NKINDS; k++) {
        vb_valid(&v, (enum kind)k);
        for (size_t i = 0; i < v.n; i++)
            for (unsigned m = 0; m < sizeof(masks); m++) {
                int ret = read_kind(s, (enum kind)k, 100000 + (unsigned)(i * 4 + m), &ok);
                odd += !ok || (ret != 0 && ret != -EBADMSG);
                rejected += ret != 0;
            }
    }
    CHECK_EQ_INT(odd, 0);
    CHECK(rejected > 0);

    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* ---- listings ------------------------------------------------------------------------------- */

enum { N = 25, PAGE = 10 };

/* Pages through policies (groups when groups) PAGE at a time; true when every page held the
 * next ids in order and all N were seen once, each with its JSON. */
static bool page_ids(mdm_store_t *s, bool groups)
{
    char after[MDM_POLICY_ID_LEN + 1] = "";
    int seen = 0;
    static struct seen c;
    for (int pages = 0; pages <= N; pages++) {
        memset(&c, 0, sizeof(c));
        c.stop_at = PAGE;
        int ret = groups ? mdm_store_list_groups(s, after, seen_group, &c)
                         : mdm_store_list_policies(s, after, seen_policy, &c);
        if (ret != 0 && ret != 7)
            return false;
        if (c.n == 0)
            return seen == N;
        for (int i = 0; i < c.n; i++) {
            char want[MDM_POLICY_ID_LEN + 1];
            pid_of((unsigned)(seen + i), want);
            if (strcmp(c.ids[i], want) != 0 || !c.json_ok[i] ||
                c.json_len[i] != (size_t)(seen + i))
                return false;
        }
        seen += c.n;
        memcpy(after, c.ids[c.n - 1], sizeof(after));
    }
    return false;
}

/* A JSON string of n bytes. */
static char *json_of(size_t n)
{
    char *j = malloc(n + 1);
    memset(j, 'j', n);
    j[n] = 0;
    return j;
}

static void test_listings(void)
{
    char *dir = strdup(check_tmpdir("policy-list"));
    mdm_store_t *s = open_store(dir);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    static struct seen c;

    /* Empty store: nothing listed, no error. */
    CHECK_EQ_INT(mdm_store_list_policies(s, NULL, seen_policy, &c), 0);
    CHECK_EQ_INT(mdm_store_list_groups(s, "", seen_group, &c), 0);
    CHECK_EQ_INT(mdm_store_list_device_deployments(s, "A", seen_dep, &c), 0);
    CHECK_EQ_INT(mdm_store_list_policy_deployments(s, "0000000000000000", "", seen_dep, &c), 0);
    CHECK_EQ_INT(mdm_store_list_device_apps(s, "A", seen_app, &c), 0);
    CHECK_EQ_INT(mdm_store_list_app_devices(s, "x", NULL, seen_app, &c), 0);
    CHECK_EQ_INT(c.n, 0);

    /* N policies and groups (JSON of i bytes), written in reverse order. */
    for (int i = N - 1; i >= 0; i--) {
        mdm_policy_t p = {0};
        pid_of((unsigned)i, p.id);
        p.settings_json = json_of((size_t)i);
        p.settings_len = (size_t)i;
        mdm_store_put_policy(b, &p);
        free(p.settings_json);
        mdm_group_t g = {0};
        pid_of((unsigned)i, g.id);
        g.spec_json = json_of((size_t)i);
        g.spec_len = (size_t)i;
        mdm_store_put_group(b, &g);
        free(g.spec_json);
    }
    /* Deployments and apps of "A", "AB" (A as a prefix) and "B", policies 0..N-1 on A. */
    static const char *const devices[] = {"A", "AB", "B"};
    for (unsigned dv = 0; dv < 3; dv++)
        for (int i = N - 1; i >= 0; i--) {
            char pid[MDM_POLICY_ID_LEN + 1], bundle[MDM_BUNDLE_ID_MAX + 1];
            pid_of((unsigned)i, pid);
            bundle_of((unsigned)i, bundle);
            mdm_deployment_t d;
            full_deployment(&d, devices[dv], pid);
            d.policy_version = dv;
            mdm_store_put_deployment(b, &d);
            mdm_app_t a;
            full_app(&a, devices[dv], bundle);
            a.bundle_size = dv;
            mdm_store_put_app(b, &a);
        }
    commit(s, b);

    /* Policies and groups: pages of 10, 10, 5, each with its own JSON; kinds apart. */
    CHECK(page_ids(s, false));
    CHECK(page_ids(s, true));

    /* A device's records: in policy / bundle order, never those of "AB". */
    for (unsigned dv = 0; dv < 3; dv++) {
        memset(&c, 0, sizeof(c));
        CHECK_EQ_INT(mdm_store_list_device_deployments(s, devices[dv], seen_dep, &c), 0);
        CHECK_EQ_INT(c.n, N);
        int wrong = 0;
        for (int i = 0; i < N && i < c.n; i++) {
            char pid[MDM_POLICY_ID_LEN + 1];
            pid_of((unsigned)i, pid);
            wrong += strcmp(c.dep[i].policy_id, pid) != 0 ||
                     strcmp(c.dep[i].udid, devices[dv]) != 0 || c.dep[i].policy_version != dv;
        }
        CHECK_EQ_INT(wrong, 0);
        memset(&c, 0, sizeof(c));
        CHECK_EQ_INT(mdm_store_list_device_apps(s, devices[dv], seen_app, &c), 0);
        CHECK_EQ_INT(c.n, N);
        wrong = 0;
        for (int i = 0; i < N && i < c.n; i++) {
            char bundle[MDM_BUNDLE_ID_MAX + 1];
            bundle_of((unsigned)i, bundle);
            wrong += strcmp(c.app[i].bundle_id, bundle) != 0 ||
                     strcmp(c.app[i].udid, devices[dv]) != 0 || c.app[i].bundle_size != dv;
        }
        CHECK_EQ_INT(wrong, 0);
    }

    /* A policy's devices and an app's devices: A, AB, B; paging after a UDID. */
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_policy_deployments(s, "0000000000000003", NULL, seen_dep, &c),
                 0);
    CHECK(c.n == 3 && strcmp(c.dep[0].udid, "A") == 0 && strcmp(c.dep[1].udid, "AB") == 0 &&
          strcmp(c.dep[2].udid, "B") == 0);
    CHECK_STR(c.dep[1].policy_id, "0000000000000003");
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_policy_deployments(s, "0000000000000003", "A", seen_dep, &c), 0);
    CHECK(c.n == 2 && strcmp(c.dep[0].udid, "AB") == 0);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_policy_deployments(s, "0000000000000003", "AA", seen_dep, &c),
                 0); /* `after` need not exist */
    CHECK(c.n == 2 && strcmp(c.dep[0].udid, "AB") == 0);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_policy_deployments(s, "0000000000000003", "B", seen_dep, &c), 0);
    CHECK_EQ_INT(c.n, 0);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_app_devices(s, "com.example.b0000007", "", seen_app, &c), 0);
    CHECK(c.n == 3 && strcmp(c.app[2].udid, "B") == 0 && c.app[2].bundle_size == 2);
    CHECK_STR(c.app[0].bundle_id, "com.example.b0000007");
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_app_devices(s, "com.example.b0000007", "AB", seen_app, &c), 0);
    CHECK(c.n == 1 && strcmp(c.app[0].udid, "B") == 0);
    /* An app id that extends another is another app. */
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_app_devices(s, "com.example.b000000", NULL, seen_app, &c), 0);
    CHECK_EQ_INT(c.n, 0);

    /* The callback's stop value comes back, from every listing. */
    memset(&c, 0, sizeof(c));
    c.stop_at = 1;
    CHECK_EQ_INT(mdm_store_list_policies(s, NULL, seen_policy, &c), 7);
    c.n = 0;
    CHECK_EQ_INT(mdm_store_list_groups(s, NULL, seen_group, &c), 7);
    c.n = 0;
    CHECK_EQ_INT(mdm_store_list_device_deployments(s, "A", seen_dep, &c), 7);
    c.n = 0;
    CHECK_EQ_INT(mdm_store_list_policy_deployments(s, "0000000000000000", NULL, seen_dep, &c),
                 7);
    c.n = 0;
    CHECK_EQ_INT(mdm_store_list_device_apps(s, "A", seen_app, &c), 7);
    c.n = 0;
    CHECK_EQ_INT(mdm_store_list_app_devices(s, "com.example.b0000000", NULL, seen_app, &c), 7);

    /* Bad identifiers and too long `after`: -EINVAL. */
    char long_udid[MDM_UDID_MAX + 2], long_bundle[MDM_BUNDLE_ID_MAX + 2];
    memset(long_udid, 'L', MDM_UDID_MAX + 1);
    long_udid[MDM_UDID_MAX + 1] = 0;
    memset(long_bundle, 'L', MDM_BUNDLE_ID_MAX + 1);
    long_bundle[MDM_BUNDLE_ID_MAX + 1] = 0;
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_policies(s, "00000000000000000", seen_policy, &c), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_groups(s, "00000000000000000", seen_group, &c), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_device_deployments(s, "", seen_dep, &c), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_device_deployments(s, long_udid, seen_dep, &c), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_device_deployments(s, NULL, seen_dep, &c), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_policy_deployments(s, "nope", NULL, seen_dep, &c), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_policy_deployments(s, "0000000000000000", long_udid, seen_dep,
                                                   &c),
                 -EINVAL);
    CHECK_EQ_INT(mdm_store_list_device_apps(s, long_udid, seen_app, &c), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_app_devices(s, "", NULL, seen_app, &c), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_app_devices(s, long_bundle, NULL, seen_app, &c), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_app_devices(s, "a\nb", NULL, seen_app, &c), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_app_devices(s, "x", long_udid, seen_app, &c), -EINVAL);
    CHECK_EQ_INT(c.n, 0);

    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* ---- purge ---------------------------------------------------------------------------------- */

static int count_listed(mdm_store_t *s, const char *udid, bool apps)
{
    static struct seen c;
    memset(&c, 0, sizeof(c));
    int ret = apps ? mdm_store_list_device_apps(s, udid, seen_app, &c)
                   : mdm_store_list_device_deployments(s, udid, seen_dep, &c);
    return ret == 0 ? c.n : -1;
}

/* Raw records in the store under prefix (plen bytes). */
static int on_count(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)key, (void)klen, (void)val, (void)vlen;
    (*(int *)arg)++;
    return 0;
}

static int count_raw(mdm_store_t *s, const char *prefix)
{
    int n = 0;
    if (mdm_store_iter_prefix(s, MDM_CF_POLICY, prefix, strlen(prefix), on_count, &n) != 0)
        return -1;
    return n;
}

static void test_purge(void)
{
    char *dir = strdup(check_tmpdir("policy-purge"));
    mdm_store_t *s = open_store(dir);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    static const char *const devices[] = {"A", "AB", "B"};
    enum { M = 5 };
    for (unsigned dv = 0; dv < 3; dv++)
        for (unsigned i = 0; i < M; i++) {
            char pid[MDM_POLICY_ID_LEN + 1], bundle[MDM_BUNDLE_ID_MAX + 1];
            pid_of(i, pid);
            bundle_of(i, bundle);
            mdm_deployment_t d;
            full_deployment(&d, devices[dv], pid);
            mdm_store_put_deployment(b, &d);
            mdm_app_t a;
            full_app(&a, devices[dv], bundle);
            mdm_store_put_app(b, &a);
        }
    mdm_policy_t p = {0};
    pid_of(0, p.id);
    mdm_store_put_policy(b, &p);
    commit(s, b);
    /* A record of A with a damaged value is purged too (only keys are read). */
    put_raw(b, key_of("d/", "A", "00000000000000ff"), "\x09", 1);
    put_raw(b, key_of("r/", "00000000000000ff", "A"), "\x09", 1);
    commit(s, b);
    CHECK_EQ_INT(count_raw(s, "d/"), 3 * M + 1);
    CHECK_EQ_INT(count_raw(s, "r/"), 3 * M + 1);

    CHECK_EQ_INT(mdm_store_purge_device_policy(s, b, "A"), 0);
    CHECK_EQ_INT(mdm_batch_count(b), 4 * M + 2);
    commit(s, b);
    CHECK_EQ_INT(count_listed(s, "A", false), 0);
    CHECK_EQ_INT(count_listed(s, "A", true), 0);
    CHECK_EQ_INT(count_listed(s, "AB", false), M);
    CHECK_EQ_INT(count_listed(s, "AB", true), M);
    CHECK_EQ_INT(count_listed(s, "B", false), M);
    CHECK_EQ_INT(count_listed(s, "B", true), M);
    CHECK_EQ_INT(count_raw(s, "d/"), 2 * M);
    CHECK_EQ_INT(count_raw(s, "r/"), 2 * M);
    CHECK_EQ_INT(count_raw(s, "a/"), 2 * M);
    CHECK_EQ_INT(count_raw(s, "b/"), 2 * M);
    CHECK(!raw_exists(s, key_of("r/", "0000000000000000", "A")));
    CHECK(!raw_exists(s, key_of("b/", "com.example.b0000000", "A")));
    CHECK(both_copies(s, key_of("d/", "AB", "0000000000000000"),
                      key_of("r/", "0000000000000000", "AB")));
    CHECK(both_copies(s, key_of("a/", "AB", "com.example.b0000000"),
                      key_of("b/", "com.example.b0000000", "AB")));
    mdm_policy_t gp;
    CHECK_EQ_INT(mdm_store_get_policy(s, p.id, &gp), 0); /* not a device's record */
    mdm_policy_dispose(&gp);

    /* Again: nothing left; unknown devices and bad UDIDs. */
    CHECK_EQ_INT(mdm_store_purge_device_policy(s, b, "A"), 0);
    CHECK_EQ_INT(mdm_store_purge_device_policy(s, b, "nobody"), 0);
    CHECK_EQ_INT(mdm_batch_count(b), 0);
    CHECK_EQ_INT(mdm_store_purge_device_policy(s, b, ""), -EINVAL);
    CHECK_EQ_INT(mdm_store_purge_device_policy(s, b, NULL), -EINVAL);

    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* ---- persistence ---------------------------------------------------------------------------- */

static void test_reopen(void)
{
    char *dir = strdup(check_tmpdir("policy-reopen"));
    mdm_store_t *s = open_store(dir);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    static mdm_policy_t p, gp;
    full_policy(&p, "00000000000000aa", 4000, 300);
    mdm_group_t g, gg;
    full_group(&g, "00000000000000bb", "{\"all_devices\":true}");
    mdm_deployment_t d, gd;
    full_deployment(&d, "MAC-1", p.id);
    mdm_app_t a;
    full_app(&a, "MAC-1", "com.example.app");
    mdm_store_put_policy(b, &p);
    mdm_store_put_group(b, &g);
    mdm_store_put_deployment(b, &d);
    mdm_store_put_app(b, &a);
    commit(s, b);
    mdm_store_close(s);

    s = open_store(dir);
    CHECK(s != NULL);
    if (s) {
        CHECK_EQ_INT(mdm_store_get_policy(s, p.id, &gp), 0);
        CHECK(policy_eq(&gp, &p));
        mdm_policy_dispose(&gp);
        CHECK_EQ_INT(mdm_store_get_group(s, g.id, &gg), 0);
        CHECK(group_eq(&gg, &g));
        mdm_group_dispose(&gg);
        CHECK_EQ_INT(mdm_store_get_deployment(s, "MAC-1", p.id, &gd), 0);
        CHECK(deployment_eq(&gd, &d));
        static struct seen c;
        memset(&c, 0, sizeof(c));
        CHECK_EQ_INT(mdm_store_list_app_devices(s, "com.example.app", NULL, seen_app, &c), 0);
        CHECK(c.n == 1 && app_eq(&c.app[0], &a));
        mdm_store_close(s);
    }
    mdm_policy_dispose(&p);
    mdm_group_dispose(&g);
    mdm_batch_free(b);
out:
    rm_rf(dir);
    free(dir);
}

int main(void)
{
    mdm_log_setup(MDM_LOG_ERROR, false);
    test_identifiers();
    test_round_trip();
    test_layouts_and_damage();
    test_listings();
    test_purge();
    test_reopen();
    return check_finish("policy_store");
}
