/*
 * storage/mdm tests on temporary RocksDB directories: round trips of every record type with
 * every field set (longest strings, binary push tokens and plists with zero bytes), strict
 * decoding (every truncation, byte flips, unknown formats, oversized strings, bad enums and
 * keys -> -EBADMSG, never a crash or overread: run it under ASan), queue FIFO order, UDID
 * prefix isolation ("A" vs "AB"), listings and paging, purge, secrets, status history
 * overflow, and the job runner (mdm_store_run_async from several threads; close drains jobs).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/log.h"
#include "storage/mdm.h"
#include "storage/store.h"

static char *tmpdir(const char *tag)
{
    return strdup(check_tmpdir(tag));
}

static void rm_rf(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static mdm_store_t *open_store(const char *path, enum mdm_durability d, unsigned threads)
{
    struct mdm_store_options opt = {.path = path, .durability = d, .threads = threads};
    mdm_store_t *s = NULL;
    int ret = mdm_store_open(&s, &opt);
    if (ret != 0)
        fprintf(stderr, "mdm_store_open(%s): %s\n", path, mdm_strerror(ret));
    return s;
}

/* Fills a char[size] field with size - 1 copies of c (the longest string it holds). */
#define FILL_MAX(field, c)                                                                     \
    do {                                                                                       \
        memset((field), (c), sizeof(field) - 1);                                               \
        (field)[sizeof(field) - 1] = 0;                                                        \
    } while (0)

static void make_long_id(char *dst, size_t max, char c, const char *prefix)
{
    memset(dst, c, max);
    memcpy(dst, prefix, strlen(prefix));
    dst[max] = 0;
}

/* A device with every field set to its extreme. */
static void full_device(mdm_device_t *d, const char *udid)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->udid, sizeof(d->udid), "%s", udid);
    d->vshard = mdm_vshard(d->udid);
    d->version = UINT64_MAX - 1;
    d->enrollment = UINT32_MAX;
    d->state = MDM_DEVICE_CHECKED_OUT;
    FILL_MAX(d->serial, 's');
    FILL_MAX(d->model, 'm');
    FILL_MAX(d->model_name, 'n');
    FILL_MAX(d->product_name, 'p');
    FILL_MAX(d->os_version, 'o');
    FILL_MAX(d->build_version, 'b');
    FILL_MAX(d->device_name, 'd');
    FILL_MAX(d->topic, 't');
    for (size_t i = 0; i < sizeof(d->push_token); i++)
        d->push_token[i] = (uint8_t)(i % 3 == 0 ? 0 : 255 - i); /* zero bytes included */
    d->push_token_len = sizeof(d->push_token);
    FILL_MAX(d->push_magic, 'g');
    FILL_MAX(d->cert_sha256, 'c');
    d->push_token_invalid = true;
    d->awaiting_configuration = true;
    d->authenticated_ms = UINT64_MAX;
    d->enrolled_ms = 0x0102030405060708ull;
    d->last_seen_ms = 0x8000000000000000ull;
    d->checked_out_ms = 1;
    FILL_MAX(d->enroll_id, 'e');
    d->last_push_ms = 0x0a0b0c0d0e0f1011ull;
    d->last_push_status = UINT16_MAX;
    FILL_MAX(d->last_push_reason, 'r');
    d->ade = true;
    d->policies_suspended = true;
    d->fv_key_escrowed = true;
    d->revoked_ms = 0x1112131415161718ull;
    FILL_MAX(d->revoked_cert, 'c');
}

/* Bytes the device formats 2 and 3 add after the one before, for full_device. */
#define DEVICE_FORMAT2_TAIL (2 + 32 + 8 + 2 + 2 + 63)
#define DEVICE_FORMAT3_TAIL (8 + 2 + 64)

static bool device_eq(const mdm_device_t *a, const mdm_device_t *b)
{
    return strcmp(a->udid, b->udid) == 0 && a->vshard == b->vshard &&
           a->version == b->version && a->enrollment == b->enrollment &&
           a->state == b->state && strcmp(a->serial, b->serial) == 0 &&
           strcmp(a->model, b->model) == 0 && strcmp(a->model_name, b->model_name) == 0 &&
           strcmp(a->product_name, b->product_name) == 0 &&
           strcmp(a->os_version, b->os_version) == 0 &&
           strcmp(a->build_version, b->build_version) == 0 &&
           strcmp(a->device_name, b->device_name) == 0 && strcmp(a->topic, b->topic) == 0 &&
           a->push_token_len == b->push_token_len &&
           memcmp(a->push_token, b->push_token, a->push_token_len) == 0 &&
           strcmp(a->push_magic, b->push_magic) == 0 && a->push_token_invalid == b->push_token_invalid &&
           strcmp(a->cert_sha256, b->cert_sha256) == 0 &&
           a->authenticated_ms == b->authenticated_ms && a->enrolled_ms == b->enrolled_ms &&
           a->last_seen_ms == b->last_seen_ms && a->checked_out_ms == b->checked_out_ms &&
           a->awaiting_configuration == b->awaiting_configuration &&
           strcmp(a->enroll_id, b->enroll_id) == 0 && a->last_push_ms == b->last_push_ms &&
           a->last_push_status == b->last_push_status &&
           strcmp(a->last_push_reason, b->last_push_reason) == 0 && a->ade == b->ade &&
           a->policies_suspended == b->policies_suspended &&
           a->fv_key_escrowed == b->fv_key_escrowed && a->revoked_ms == b->revoked_ms &&
           strcmp(a->revoked_cert, b->revoked_cert) == 0;
}

static void simple_device(mdm_device_t *d, const char *udid)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->udid, sizeof(d->udid), "%s", udid);
    d->vshard = mdm_vshard(udid);
    d->version = 1;
    d->enrollment = 1;
    d->state = MDM_DEVICE_ENROLLED;
    snprintf(d->serial, sizeof(d->serial), "SER-%s", udid);
}

static void queue_entry(mdm_queue_entry_t *e, const char *udid, const char *channel,
                        uint64_t enqueued_ms, const char *uuid)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->udid, sizeof(e->udid), "%s", udid);
    snprintf(e->channel, sizeof(e->channel), "%s", channel);
    snprintf(e->uuid, sizeof(e->uuid), "%s", uuid);
    e->enqueued_ms = enqueued_ms;
    e->enrollment = 7;
    e->status = MDM_CMD_QUEUED;
    e->updated_ms = enqueued_ms + 1;
    e->expires_ms = 0;
}

static void simple_result(mdm_result_t *r, const char *udid, const char *uuid, const char *resp)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->udid, sizeof(r->udid), "%s", udid);
    snprintf(r->uuid, sizeof(r->uuid), "%s", uuid);
    mdm_result_add_event(r, MDM_CMD_QUEUED, 10);
    mdm_result_add_event(r, MDM_CMD_ACKNOWLEDGED, 20);
    r->response = (uint8_t *)(uintptr_t)resp;
    r->response_len = resp ? strlen(resp) : 0;
}

/* Raw value of a record (test knowledge of the key layouts), or -1 length when missing. */
static int raw_get(mdm_store_t *s, enum mdm_store_cf cf, const void *key, size_t klen,
                   mdm_buf_t *out)
{
    mdm_buf_reset(out);
    return mdm_store_get(s, cf, key, klen, out);
}

/* <udid> 0x00 <channel> 0x00 <be64 ms> <uuid> */
static size_t qkey(uint8_t *k, const char *udid, const char *channel, uint64_t ms,
                   const char *uuid)
{
    size_t n = 0;
    memcpy(k + n, udid, strlen(udid) + 1);
    n += strlen(udid) + 1;
    memcpy(k + n, channel, strlen(channel) + 1);
    n += strlen(channel) + 1;
    for (int i = 0; i < 8; i++)
        k[n++] = (uint8_t)(ms >> (56 - 8 * i));
    memcpy(k + n, uuid, strlen(uuid));
    return n + strlen(uuid);
}

/* <udid> 0x00 <name> */
static size_t pkey(uint8_t *k, const char *udid, const char *name)
{
    size_t a = strlen(udid), b = strlen(name);
    memcpy(k, udid, a + 1);
    memcpy(k + a + 1, name, b);
    return a + 1 + b;
}

static bool queue_eq(const mdm_queue_entry_t *a, const mdm_queue_entry_t *b)
{
    return strcmp(a->udid, b->udid) == 0 && strcmp(a->channel, b->channel) == 0 &&
           strcmp(a->uuid, b->uuid) == 0 && a->enqueued_ms == b->enqueued_ms &&
           a->enrollment == b->enrollment && a->status == b->status &&
           a->updated_ms == b->updated_ms && a->expires_ms == b->expires_ms;
}

enum { COLLECT_MAX = 64 };

struct collect_queue {
    mdm_queue_entry_t e[COLLECT_MAX];
    int n;
    int stop_at; /* return 1234 from the callback at this count (0: never) */
};

static int on_queue(void *arg, const mdm_queue_entry_t *e)
{
    struct collect_queue *c = arg;
    if (c->n < COLLECT_MAX)
        c->e[c->n] = *e;
    c->n++;
    return c->stop_at && c->n == c->stop_at ? 1234 : 0;
}

struct collect_results {
    char uuid[COLLECT_MAX][MDM_UUID_MAX + 1];
    char response[COLLECT_MAX][32];
    unsigned n_events[COLLECT_MAX];
    int n;
};

static int on_result(void *arg, const mdm_result_t *r)
{
    struct collect_results *c = arg;
    if (c->n < COLLECT_MAX) {
        snprintf(c->uuid[c->n], sizeof(c->uuid[0]), "%s", r->uuid);
        snprintf(c->response[c->n], sizeof(c->response[0]), "%.*s", (int)r->response_len,
                 r->response ? (const char *)r->response : "");
        c->n_events[c->n] = r->n_events;
    }
    c->n++;
    return 0;
}

struct collect_devices {
    char udid[COLLECT_MAX][MDM_UDID_MAX + 1];
    int n;
    int page; /* stop after this many (0: never) */
};

static int on_device(void *arg, const mdm_device_t *d)
{
    struct collect_devices *c = arg;
    if (c->n < COLLECT_MAX)
        snprintf(c->udid[c->n], sizeof(c->udid[0]), "%s", d->udid);
    c->n++;
    return c->page && c->n == c->page ? 1 : 0;
}

/* ---- round trips ----------------------------------------------------------------------------- */

static void test_round_trip(void)
{
    char *dir = tmpdir("mdm-rt");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_FSYNC, 0);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();

    /* Device: longest UDID, every field at its limit; and a sparse one. */
    char udid[MDM_UDID_MAX + 1];
    make_long_id(udid, MDM_UDID_MAX, 'U', "full-");
    static mdm_device_t d, got;
    full_device(&d, udid);
    mdm_device_t sparse;
    memset(&sparse, 0, sizeof(sparse));
    snprintf(sparse.udid, sizeof(sparse.udid), "x");
    sparse.vshard = mdm_vshard("x");
    mdm_store_put_device(b, &d);
    mdm_store_put_device(b, &sparse);

    /* Command: longest strings, a binary plist with zero bytes; and one without a plist. */
    mdm_command_t c = {0}, gc;
    make_long_id(c.uuid, MDM_UUID_MAX, 'C', "cmd-");
    FILL_MAX(c.request_type, 'r');
    FILL_MAX(c.created_by, 'w');
    c.created_ms = UINT64_MAX;
    c.plist_len = 100000;
    c.plist = malloc(c.plist_len);
    for (size_t i = 0; i < c.plist_len; i++)
        c.plist[i] = (uint8_t)(i * 7);
    mdm_command_t empty_cmd = {0};
    snprintf(empty_cmd.uuid, sizeof(empty_cmd.uuid), "empty");
    snprintf(empty_cmd.request_type, sizeof(empty_cmd.request_type), "DeviceInformation");
    mdm_store_put_command(b, &c);
    mdm_store_put_command(b, &empty_cmd);

    /* Queue entry: longest channel and uuid. */
    mdm_queue_entry_t e;
    char channel[MDM_CHANNEL_MAX + 1], quuid[MDM_UUID_MAX + 1];
    make_long_id(channel, MDM_CHANNEL_MAX, 'h', "user-");
    make_long_id(quuid, MDM_UUID_MAX, 'q', "q-");
    queue_entry(&e, udid, channel, UINT64_MAX, quuid);
    e.enrollment = UINT32_MAX;
    e.status = MDM_CMD_NOTNOW;
    e.updated_ms = 0x1122334455667788ull;
    e.expires_ms = UINT64_MAX - 5;
    mdm_store_put_queue_entry(b, &e);

    /* Result: full history, longest channel, binary response. */
    mdm_result_t r = {0}, gr;
    snprintf(r.udid, sizeof(r.udid), "%s", udid);
    snprintf(r.uuid, sizeof(r.uuid), "%s", c.uuid);
    snprintf(r.channel, sizeof(r.channel), "%s", channel);
    for (unsigned i = 0; i < MDM_RESULT_EVENTS_MAX; i++)
        mdm_result_add_event(&r, (enum mdm_command_status)(i % (MDM_CMD_FORMAT_ERROR + 1)),
                             UINT64_MAX - i);
    uint8_t resp[300];
    for (size_t i = 0; i < sizeof(resp); i++)
        resp[i] = (uint8_t)(i % 5 ? i : 0);
    r.response = resp;
    r.response_len = sizeof(resp);
    mdm_store_put_result(b, &r);

    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);

    CHECK_EQ_INT(mdm_store_get_device(s, udid, &got), 0);
    CHECK(device_eq(&got, &d));
    CHECK_EQ_INT(got.push_token[0], 0);
    CHECK_EQ_INT(mdm_store_get_device(s, "x", &got), 0);
    CHECK(device_eq(&got, &sparse));
    CHECK_EQ_INT(got.push_token_len, 0);
    CHECK(!got.push_token_invalid && !got.awaiting_configuration);

    CHECK_EQ_INT(mdm_store_get_command(s, c.uuid, &gc), 0);
    CHECK_STR(gc.uuid, c.uuid);
    CHECK_STR(gc.request_type, c.request_type);
    CHECK_STR(gc.created_by, c.created_by);
    CHECK(gc.created_ms == UINT64_MAX);
    CHECK(gc.plist_len == c.plist_len && memcmp(gc.plist, c.plist, c.plist_len) == 0);
    mdm_command_dispose(&gc);
    CHECK(gc.plist == NULL && gc.plist_len == 0);
    CHECK_EQ_INT(mdm_store_get_command(s, "empty", &gc), 0);
    CHECK_STR(gc.request_type, "DeviceInformation");
    CHECK(gc.plist == NULL && gc.plist_len == 0);
    mdm_command_dispose(&gc);

    CHECK_EQ_INT(mdm_store_get_result(s, udid, c.uuid, &gr), 0);
    CHECK_STR(gr.udid, udid);
    CHECK_STR(gr.uuid, c.uuid);
    CHECK_STR(gr.channel, channel);
    CHECK_EQ_INT(gr.status, r.status);
    CHECK_EQ_INT(gr.n_events, MDM_RESULT_EVENTS_MAX);
    CHECK(memcmp(gr.events, r.events, sizeof(r.events)) == 0);
    CHECK(gr.response_len == sizeof(resp) && memcmp(gr.response, resp, sizeof(resp)) == 0);
    CHECK(gr.response != resp);
    mdm_result_dispose(&gr);
    mdm_result_dispose(NULL);
    mdm_command_dispose(NULL);

    static struct collect_queue seen;
    CHECK_EQ_INT(mdm_store_list_queue(s, udid, on_queue, &seen), 0);
    CHECK_EQ_INT(seen.n, 1);
    CHECK(queue_eq(&seen.e[0], &e));

    /* A queue value is tiny (key fields are not repeated). */
    mdm_buf_t raw;
    mdm_buf_init(&raw, 0);
    uint8_t k[256];
    size_t kl = qkey(k, udid, channel, UINT64_MAX, quuid);
    CHECK_EQ_INT(raw_get(s, MDM_CF_QUEUE, k, kl, &raw), 0);
    CHECK_EQ_INT(raw.len, 22);

    /* Not found, and identifiers that cannot exist. */
    CHECK_EQ_INT(mdm_store_get_device(s, "nope", &got), MDM_ENOTFOUND);
    CHECK_EQ_INT(got.udid[0], 0);
    CHECK_EQ_INT(mdm_store_get_command(s, "nope", &gc), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_result(s, udid, "nope", &gr), MDM_ENOTFOUND);
    char too_long[MDM_UDID_MAX + 2];
    make_long_id(too_long, MDM_UDID_MAX + 1, 'L', "");
    CHECK_EQ_INT(mdm_store_get_device(s, "", &got), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_device(s, too_long, &got), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_command(s, too_long, &gc), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_result(s, udid, "", &gr), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_result(s, too_long, "u", &gr), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_queue(s, "", on_queue, &seen), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_secret(s, udid, too_long, &raw), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_secret(s, udid, "", &raw), -EINVAL);

    /* Overwrite: the newest put wins. */
    d.version++;
    d.state = MDM_DEVICE_ENROLLED;
    d.push_token_len = 32;
    mdm_store_put_device(b, &d);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    CHECK_EQ_INT(mdm_store_get_device(s, udid, &got), 0);
    CHECK(device_eq(&got, &d));

    /* Names. */
    CHECK_STR(mdm_command_status_name(MDM_CMD_NOTNOW), "not_now");
    CHECK_STR(mdm_command_status_name(MDM_CMD_FORMAT_ERROR), "format_error");
    CHECK_STR(mdm_command_status_name((enum mdm_command_status)99), "unknown");
    CHECK_STR(mdm_device_state_name(MDM_DEVICE_CHECKED_OUT), "checked_out");
    CHECK_STR(mdm_device_state_name((enum mdm_device_state)99), "unknown");
    CHECK_EQ_INT(mdm_vshard("A"), mdm_hash64("A", 1) % 4096);
    CHECK_EQ_INT(mdm_vshard(udid), mdm_hash64(udid, strlen(udid)) % MDM_VSHARDS);

    mdm_buf_dispose(&raw);
    free(c.plist);
    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}


/* ---- strict decoding -------------------------------------------------------------------------- */

static bool device_bad(mdm_store_t *s, const char *udid)
{
    mdm_device_t d;
    memset(&d, 0x5a, sizeof(d));
    int ret = mdm_store_get_device(s, udid, &d);
    return ret == -EBADMSG && d.udid[0] == 0 && d.push_token_len == 0;
}

static bool command_bad(mdm_store_t *s, const char *uuid)
{
    mdm_command_t c;
    int ret = mdm_store_get_command(s, uuid, &c);
    bool ok = ret == -EBADMSG && c.plist == NULL && c.uuid[0] == 0;
    mdm_command_dispose(&c);
    return ok;
}

static bool result_bad(mdm_store_t *s, const char *udid, const char *uuid)
{
    mdm_result_t r;
    int ret = mdm_store_get_result(s, udid, uuid, &r);
    bool ok = ret == -EBADMSG && r.response == NULL && r.n_events == 0;
    mdm_result_dispose(&r);
    return ok;
}

/* A queue listing that must fail with -EBADMSG before delivering anything. */
static bool queue_bad(mdm_store_t *s, const char *udid)
{
    struct collect_queue *c = calloc(1, sizeof(*c));
    int ret = mdm_store_list_queue(s, udid, on_queue, c);
    bool ok = ret == -EBADMSG && c->n == 0;
    free(c);
    return ok;
}

/* 0 or -EBADMSG are the only acceptable outcomes of decoding damaged bytes. */
static bool decodes_or_rejects(int ret)
{
    return ret == 0 || ret == -EBADMSG;
}

/* value with bytes [at, at+cut) replaced by ins[0..ilen). */
static size_t splice(uint8_t *out, const uint8_t *v, size_t vlen, size_t at, size_t cut,
                     const void *ins, size_t ilen)
{
    memcpy(out, v, at);
    memcpy(out + at, ins, ilen);
    memcpy(out + at + ilen, v + at + cut, vlen - at - cut);
    return vlen - cut + ilen;
}

static void test_corrupt(void)
{
    char *dir = tmpdir("mdm-corrupt");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_NONE, 2);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();

    /* Valid records of every kind, read back raw. */
    static mdm_device_t d;
    full_device(&d, "dev");
    mdm_store_put_device(b, &d);
    mdm_command_t c = {0};
    snprintf(c.uuid, sizeof(c.uuid), "cmd");
    FILL_MAX(c.request_type, 'r');
    FILL_MAX(c.created_by, 'w');
    uint8_t plist[40] = {1, 0, 2, 0, 0, 3};
    c.plist = plist;
    c.plist_len = sizeof(plist);
    mdm_store_put_command(b, &c);
    mdm_queue_entry_t e;
    queue_entry(&e, "q", "", 42, "u");
    e.expires_ms = 99;
    mdm_store_put_queue_entry(b, &e);
    mdm_result_t r;
    simple_result(&r, "res", "u", "<plist>ok</plist>");
    mdm_store_put_result(b, &r);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);

    mdm_buf_t dev_raw, cmd_raw, q_raw, res_raw;
    mdm_buf_init(&dev_raw, 0);
    mdm_buf_init(&cmd_raw, 0);
    mdm_buf_init(&q_raw, 0);
    mdm_buf_init(&res_raw, 0);
    uint8_t k[512];
    CHECK_EQ_INT(raw_get(s, MDM_CF_DEVICES, "dev", 3, &dev_raw), 0);
    CHECK_EQ_INT(raw_get(s, MDM_CF_COMMANDS, "cmd", 3, &cmd_raw), 0);
    CHECK_EQ_INT(raw_get(s, MDM_CF_QUEUE, k, qkey(k, "q", "", 42, "u"), &q_raw), 0);
    CHECK_EQ_INT(raw_get(s, MDM_CF_HISTORY, k, pkey(k, "res", "u"), &res_raw), 0);
    const uint8_t *dv = mdm_buf_head(&dev_raw), *cv = mdm_buf_head(&cmd_raw),
                  *qv = mdm_buf_head(&q_raw), *rv = mdm_buf_head(&res_raw);
    size_t dl = dev_raw.len, cl = cmd_raw.len, ql = q_raw.len, rl = res_raw.len;
    CHECK(dl == 990 + DEVICE_FORMAT2_TAIL + DEVICE_FORMAT3_TAIL && dv[0] == 3);
    CHECK_EQ_INT(ql, 22);
    CHECK(queue_bad(s, "nothing-there") == false); /* an empty listing is not an error */

    /* Every truncation of every record type. */
    char id[64];
    for (size_t n = 0; n < dl; n++) {
        snprintf(id, sizeof(id), "t%04zu", n);
        mdm_batch_put(b, MDM_CF_DEVICES, id, strlen(id), dv, n);
    }
    for (size_t n = 0; n < cl; n++) {
        snprintf(id, sizeof(id), "t%04zu", n);
        mdm_batch_put(b, MDM_CF_COMMANDS, id, strlen(id), cv, n);
    }
    for (size_t n = 0; n < ql; n++) {
        snprintf(id, sizeof(id), "tq%04zu", n);
        mdm_batch_put(b, MDM_CF_QUEUE, k, qkey(k, id, "", 42, "u"), qv, n);
    }
    for (size_t n = 0; n < rl; n++) {
        snprintf(id, sizeof(id), "t%04zu", n);
        mdm_batch_put(b, MDM_CF_HISTORY, k, pkey(k, "tr", id), rv, n);
    }
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    int wrong = 0;
    for (size_t n = 0; n < dl; n++) {
        snprintf(id, sizeof(id), "t%04zu", n);
        wrong += !device_bad(s, id);
    }
    CHECK_EQ_INT(wrong, 0);
    wrong = 0;
    for (size_t n = 0; n < cl; n++) {
        snprintf(id, sizeof(id), "t%04zu", n);
        wrong += !command_bad(s, id);
    }
    CHECK_EQ_INT(wrong, 0);
    wrong = 0;
    for (size_t n = 0; n < ql; n++) {
        snprintf(id, sizeof(id), "tq%04zu", n);
        wrong += !queue_bad(s, id);
    }
    CHECK_EQ_INT(wrong, 0);
    wrong = 0;
    for (size_t n = 0; n < rl; n++) {
        snprintf(id, sizeof(id), "t%04zu", n);
        wrong += !result_bad(s, "tr", id);
    }
    CHECK_EQ_INT(wrong, 0);
    /* A listing stops at the first bad record with -EBADMSG. */
    struct collect_results *cr = calloc(1, sizeof(*cr));
    CHECK_EQ_INT(mdm_store_list_results(s, "tr", on_result, cr), -EBADMSG);
    free(cr);

    /* Byte flips anywhere: decoded or rejected, never a crash or an overread (ASan). */
    static const uint8_t masks[] = {0x01, 0x80, 0xff};
    uint8_t *tmp = malloc(dl + cl + ql + rl + 64);
    for (size_t i = 0; i < dl; i++)
        for (size_t m = 0; m < sizeof(masks); m++) {
            memcpy(tmp, dv, dl);
            tmp[i] ^= masks[m];
            snprintf(id, sizeof(id), "f%04zu-%zu", i, m);
            mdm_batch_put(b, MDM_CF_DEVICES, id, strlen(id), tmp, dl);
        }
    for (size_t i = 0; i < cl; i++)
        for (size_t m = 0; m < sizeof(masks); m++) {
            memcpy(tmp, cv, cl);
            tmp[i] ^= masks[m];
            snprintf(id, sizeof(id), "f%04zu-%zu", i, m);
            mdm_batch_put(b, MDM_CF_COMMANDS, id, strlen(id), tmp, cl);
        }
    for (size_t i = 0; i < ql; i++)
        for (size_t m = 0; m < sizeof(masks); m++) {
            memcpy(tmp, qv, ql);
            tmp[i] ^= masks[m];
            snprintf(id, sizeof(id), "fq%04zu-%zu", i, m);
            mdm_batch_put(b, MDM_CF_QUEUE, k, qkey(k, id, "", 42, "u"), tmp, ql);
        }
    for (size_t i = 0; i < rl; i++)
        for (size_t m = 0; m < sizeof(masks); m++) {
            memcpy(tmp, rv, rl);
            tmp[i] ^= masks[m];
            snprintf(id, sizeof(id), "f%04zu-%zu", i, m);
            mdm_batch_put(b, MDM_CF_HISTORY, k, pkey(k, "fr", id), tmp, rl);
        }
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    int odd = 0, rejected = 0;
    static mdm_device_t got;
    for (size_t i = 0; i < dl; i++)
        for (size_t m = 0; m < sizeof(masks); m++) {
            snprintf(id, sizeof(id), "f%04zu-%zu", i, m);
            int ret = mdm_store_get_device(s, id, &got);
            odd += !decodes_or_rejects(ret);
            rejected += ret != 0;
            if (ret == 0)
                odd += got.push_token_len > sizeof(got.push_token) ||
                       strlen(got.topic) >= sizeof(got.topic);
        }
    for (size_t i = 0; i < cl; i++)
        for (size_t m = 0; m < sizeof(masks); m++) {
            mdm_command_t gc;
            snprintf(id, sizeof(id), "f%04zu-%zu", i, m);
            int ret = mdm_store_get_command(s, id, &gc);
            odd += !decodes_or_rejects(ret);
            rejected += ret != 0;
            if (ret == 0)
                odd += gc.plist_len > cl;
            mdm_command_dispose(&gc);
        }
    for (size_t i = 0; i < ql; i++)
        for (size_t m = 0; m < sizeof(masks); m++) {
            struct collect_queue *cq = calloc(1, sizeof(*cq));
            snprintf(id, sizeof(id), "fq%04zu-%zu", i, m);
            int ret = mdm_store_list_queue(s, id, on_queue, cq);
            odd += !decodes_or_rejects(ret) || (ret == 0 && cq->n != 1);
            rejected += ret != 0;
            free(cq);
        }
    for (size_t i = 0; i < rl; i++)
        for (size_t m = 0; m < sizeof(masks); m++) {
            mdm_result_t gr;
            snprintf(id, sizeof(id), "f%04zu-%zu", i, m);
            int ret = mdm_store_get_result(s, "fr", id, &gr);
            odd += !decodes_or_rejects(ret);
            rejected += ret != 0;
            if (ret == 0)
                odd += gr.n_events > MDM_RESULT_EVENTS_MAX || gr.response_len > rl;
            mdm_result_dispose(&gr);
        }
    CHECK_EQ_INT(odd, 0);
    CHECK(rejected > 0);

    /* Unknown format bytes and trailing bytes. */
    static const uint8_t formats[] = {0, 4, 0x7f, 0xff};
    for (size_t f = 0; f < sizeof(formats); f++) {
        memcpy(tmp, dv, dl);
        tmp[0] = formats[f];
        mdm_batch_put(b, MDM_CF_DEVICES, "fmt", 3, tmp, dl);
        memcpy(tmp, cv, cl);
        tmp[0] = formats[f];
        mdm_batch_put(b, MDM_CF_COMMANDS, "fmt", 3, tmp, cl);
        memcpy(tmp, qv, ql);
        tmp[0] = formats[f];
        mdm_batch_put(b, MDM_CF_QUEUE, k, qkey(k, "fmt", "", 1, "u"), tmp, ql);
        memcpy(tmp, rv, rl);
        tmp[0] = formats[f];
        mdm_batch_put(b, MDM_CF_HISTORY, k, pkey(k, "fmt", "u"), tmp, rl);
        CHECK_EQ_INT(mdm_store_commit(s, b), 0);
        mdm_batch_clear(b);
        CHECK(device_bad(s, "fmt"));
        CHECK(command_bad(s, "fmt"));
        CHECK(queue_bad(s, "fmt"));
        CHECK(result_bad(s, "fmt", "u"));
    }
    memcpy(tmp, dv, dl);
    tmp[dl] = 0;
    mdm_batch_put(b, MDM_CF_DEVICES, "trail", 5, tmp, dl + 1);
    memcpy(tmp, cv, cl);
    tmp[cl] = 0;
    mdm_batch_put(b, MDM_CF_COMMANDS, "trail", 5, tmp, cl + 1);
    memcpy(tmp, qv, ql);
    tmp[ql] = 0;
    mdm_batch_put(b, MDM_CF_QUEUE, k, qkey(k, "trail", "", 1, "u"), tmp, ql + 1);
    memcpy(tmp, rv, rl);
    tmp[rl] = 0;
    mdm_batch_put(b, MDM_CF_HISTORY, k, pkey(k, "trail", "u"), tmp, rl + 1);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    CHECK(device_bad(s, "trail"));
    CHECK(command_bad(s, "trail"));
    /* Format-1 and format-2 device records (written before the formats after them) still
     * read, the newer fields zero; the same bytes under a newer format byte lack its fields. */
    size_t f2 = dl - DEVICE_FORMAT3_TAIL, f1 = f2 - DEVICE_FORMAT2_TAIL;
    memcpy(tmp, dv, f1);
    tmp[0] = 1;
    mdm_batch_put(b, MDM_CF_DEVICES, "dev1", 4, tmp, f1);
    tmp[0] = 2;
    mdm_batch_put(b, MDM_CF_DEVICES, "short2", 6, tmp, f1);
    memcpy(tmp, dv, f2);
    tmp[0] = 2;
    mdm_batch_put(b, MDM_CF_DEVICES, "dev2", 4, tmp, f2);
    tmp[0] = 3;
    mdm_batch_put(b, MDM_CF_DEVICES, "short3", 6, tmp, f2);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    {
        static mdm_device_t old, want;
        CHECK_EQ_INT(mdm_store_get_device(s, "dev2", &old), 0);
        want = d;
        snprintf(want.udid, sizeof(want.udid), "dev2");
        want.revoked_ms = 0;
        want.revoked_cert[0] = '\0';
        CHECK(device_eq(&old, &want));
        CHECK_EQ_INT(mdm_store_get_device(s, "dev1", &old), 0);
        snprintf(want.udid, sizeof(want.udid), "dev1");
        want.enroll_id[0] = want.last_push_reason[0] = '\0';
        want.last_push_ms = want.last_push_status = 0;
        CHECK(device_eq(&old, &want));
        CHECK(device_bad(s, "short2"));
        CHECK(device_bad(s, "short3"));
    }
    CHECK(queue_bad(s, "trail"));
    CHECK(result_bad(s, "trail", "u"));

    /* Device field damage at known offsets: [0] format, [1..2] vshard, [15] state, [16] flags,
     * [17..] serial (str: u16 length, 63 bytes), push token blob16 after the 8 strings. */
    size_t n;
    uint8_t s64[66];
    memset(s64, 's', sizeof(s64));
    s64[0] = 0;
    s64[1] = 64;
    n = splice(tmp, dv, dl, 17, 2 + 63, s64, 2 + 64); /* serial one byte longer than its field */
    mdm_batch_put(b, MDM_CF_DEVICES, "long", 4, tmp, n);
    memcpy(tmp, dv, dl);
    tmp[17 + 2 + 10] = 0; /* NUL inside a string */
    mdm_batch_put(b, MDM_CF_DEVICES, "nul", 3, tmp, dl);
    memcpy(tmp, dv, dl);
    tmp[15] = MDM_DEVICE_REVOKED + 1;
    mdm_batch_put(b, MDM_CF_DEVICES, "state", 5, tmp, dl);
    memcpy(tmp, dv, dl);
    tmp[16] |= 0x20; /* a flag bit no writer sets */
    mdm_batch_put(b, MDM_CF_DEVICES, "flags", 5, tmp, dl);
    memcpy(tmp, dv, dl);
    tmp[1] = 0x10; /* vshard 4096 + ... */
    tmp[2] = 0x00;
    mdm_batch_put(b, MDM_CF_DEVICES, "vshard", 6, tmp, dl);
    size_t tok = 17 + 8 * 2 + 4 * 63 + 2 * 31 + 127 + 159;
    CHECK(dv[tok] == 0 && dv[tok + 1] == 128);
    uint8_t tok129[2 + 129];
    tok129[0] = 0;
    tok129[1] = 129;
    memcpy(tok129 + 2, dv + tok + 2, 128);
    tok129[2 + 128] = 7;
    n = splice(tmp, dv, dl, tok, 2 + 128, tok129, sizeof(tok129));
    mdm_batch_put(b, MDM_CF_DEVICES, "token", 5, tmp, n);
    /* Command: request_type (offset 1) longer than its field. */
    n = splice(tmp, cv, cl, 1, 2 + 63, s64, 2 + 64);
    mdm_batch_put(b, MDM_CF_COMMANDS, "long", 4, tmp, n);
    /* Queue entry: status (offset 5) out of range. */
    memcpy(tmp, qv, ql);
    tmp[5] = MDM_CMD_FORMAT_ERROR + 1;
    mdm_batch_put(b, MDM_CF_QUEUE, k, qkey(k, "qstatus", "", 1, "u"), tmp, ql);
    /* Result (channel ""): [3] status, [4] n_events, [5] first event status. */
    CHECK(rv[1] == 0 && rv[2] == 0 && rv[4] == 2);
    memcpy(tmp, rv, rl);
    tmp[3] = 200;
    mdm_batch_put(b, MDM_CF_HISTORY, k, pkey(k, "rbad", "status"), tmp, rl);
    memcpy(tmp, rv, rl);
    tmp[5] = 200;
    mdm_batch_put(b, MDM_CF_HISTORY, k, pkey(k, "rbad", "event"), tmp, rl);
    {
        /* n_events = 17 with 17 well-formed events: over the limit. */
        uint8_t evs[17 * 9];
        for (int i = 0; i < 17; i++) {
            memset(evs + 9 * i, 0, 9);
            evs[9 * i + 8] = (uint8_t)i;
        }
        uint8_t hdr[5] = {1, 0, 0, MDM_CMD_ACKNOWLEDGED, 17};
        size_t m = 0;
        memcpy(tmp, hdr, sizeof(hdr));
        m += sizeof(hdr);
        memcpy(tmp + m, evs, sizeof(evs));
        m += sizeof(evs);
        memset(tmp + m, 0, 4); /* empty response */
        m += 4;
        mdm_batch_put(b, MDM_CF_HISTORY, k, pkey(k, "rbad", "events"), tmp, m);
        /* The same with 16 events decodes: the limit itself is fine. */
        tmp[4] = 16;
        memmove(tmp + sizeof(hdr) + 16 * 9, tmp + sizeof(hdr) + 17 * 9, 4);
        mdm_batch_put(b, MDM_CF_HISTORY, k, pkey(k, "rbad", "events16"), tmp, m - 9);
    }
    n = splice(tmp, rv, rl, 1, 2, s64, 2 + 64); /* channel longer than its field */
    mdm_batch_put(b, MDM_CF_HISTORY, k, pkey(k, "rbad", "channel"), tmp, n);

    /* Keys that our writers never produce. */
    char udid64[65];
    make_long_id(udid64, 64, 'z', "");
    mdm_batch_put(b, MDM_CF_DEVICES, udid64, 64, dv, dl); /* UDID longer than the field */
    char chan64[65];
    make_long_id(chan64, 64, 'c', "");
    mdm_batch_put(b, MDM_CF_QUEUE, k, qkey(k, "kchan", chan64, 1, "u"), qv, ql);
    mdm_batch_put(b, MDM_CF_QUEUE, k, qkey(k, "kuuid", "", 1, ""), qv, ql); /* no uuid */
    static const uint8_t short_key[] = {'k', 's', 0, 0, 1, 2, 3};            /* no full be64 */
    mdm_batch_put(b, MDM_CF_QUEUE, short_key, sizeof(short_key), qv, ql);
    static const uint8_t nosep[] = {'k', 'n', 0, 'c', 'h'}; /* channel without its 0x00 */
    mdm_batch_put(b, MDM_CF_QUEUE, nosep, sizeof(nosep), qv, ql);
    static const uint8_t two_nul[] = {'k', 'r', 0, 'a', 0, 'b'}; /* NUL inside the uuid */
    mdm_batch_put(b, MDM_CF_HISTORY, two_nul, sizeof(two_nul), rv, rl);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);

    CHECK(device_bad(s, "long"));
    CHECK(device_bad(s, "nul"));
    CHECK(device_bad(s, "state"));
    CHECK(device_bad(s, "flags"));
    CHECK(device_bad(s, "vshard"));
    CHECK(device_bad(s, "token"));
    CHECK(command_bad(s, "long"));
    CHECK(queue_bad(s, "qstatus"));
    CHECK(result_bad(s, "rbad", "status"));
    CHECK(result_bad(s, "rbad", "event"));
    CHECK(result_bad(s, "rbad", "events"));
    CHECK(result_bad(s, "rbad", "channel"));
    mdm_result_t gr;
    CHECK_EQ_INT(mdm_store_get_result(s, "rbad", "events16", &gr), 0);
    CHECK_EQ_INT(gr.n_events, 16);
    CHECK(gr.events[16 - 1].at_ms == 15);
    mdm_result_dispose(&gr);
    struct collect_devices *cd = calloc(1, sizeof(*cd));
    CHECK_EQ_INT(mdm_store_list_devices(s, "y", on_device, cd), -EBADMSG);
    CHECK_EQ_INT(cd->n, 0);
    free(cd);
    CHECK(queue_bad(s, "kchan"));
    CHECK(queue_bad(s, "kuuid"));
    CHECK(queue_bad(s, "ks"));
    CHECK(queue_bad(s, "kn"));
    cr = calloc(1, sizeof(*cr));
    CHECK_EQ_INT(mdm_store_list_results(s, "kr", on_result, cr), -EBADMSG);
    CHECK_EQ_INT(cr->n, 0);
    free(cr);

    /* The originals still decode. */
    CHECK_EQ_INT(mdm_store_get_device(s, "dev", &got), 0);
    CHECK(device_eq(&got, &d));

    free(tmp);
    mdm_buf_dispose(&dev_raw);
    mdm_buf_dispose(&cmd_raw);
    mdm_buf_dispose(&q_raw);
    mdm_buf_dispose(&res_raw);
    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* ---- queue order, prefixes, listings ---------------------------------------------------------- */

struct qspec {
    const char *channel;
    uint64_t ms;
    const char *uuid;
};

static void test_queue_order(void)
{
    char *dir = tmpdir("mdm-queue");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_NONE, 0);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    /* Inserted out of order, over two batches; big-endian times sort numerically. */
    static const struct qspec in[] = {
        {"", 256, "b"},      {"", 255, "z"},     {"", 256, "a"},      {"user-b", 5, "x"},
        {"", 1ull << 32, "a"}, {"user-a", 7, "y"}, {"user-a", 3, "y"},  {"", 0, "m"},
        {"user-a", 3, "x"},  {"u", 9, "k"},
    };
    static const struct qspec want[] = {
        {"", 0, "m"},       {"", 255, "z"},     {"", 256, "a"},     {"", 256, "b"},
        {"", 1ull << 32, "a"}, {"u", 9, "k"},   {"user-a", 3, "x"}, {"user-a", 3, "y"},
        {"user-a", 7, "y"}, {"user-b", 5, "x"},
    };
    enum { N = MDM_ARRAY_LEN(in) };
    for (size_t i = 0; i < N; i++) {
        mdm_queue_entry_t e;
        queue_entry(&e, "Q", in[i].channel, in[i].ms, in[i].uuid);
        mdm_store_put_queue_entry(b, &e);
        if (i == N / 2) {
            CHECK_EQ_INT(mdm_store_commit(s, b), 0);
            mdm_batch_clear(b);
        }
    }
    mdm_queue_entry_t other;
    queue_entry(&other, "Q2", "", 1, "other"); /* another device: never listed for "Q" */
    mdm_store_put_queue_entry(b, &other);
    queue_entry(&other, "P", "", 1, "other");
    mdm_store_put_queue_entry(b, &other);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);

    static struct collect_queue c;
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_queue(s, "Q", on_queue, &c), 0);
    CHECK_EQ_INT(c.n, N);
    int wrong = 0;
    for (size_t i = 0; i < N && i < (size_t)c.n; i++)
        wrong += strcmp(c.e[i].udid, "Q") != 0 || strcmp(c.e[i].channel, want[i].channel) != 0 ||
                 c.e[i].enqueued_ms != want[i].ms || strcmp(c.e[i].uuid, want[i].uuid) != 0 ||
                 c.e[i].updated_ms != want[i].ms + 1 || c.e[i].enrollment != 7;
    CHECK_EQ_INT(wrong, 0);

    /* The callback stops the listing with its own value. */
    memset(&c, 0, sizeof(c));
    c.stop_at = 3;
    CHECK_EQ_INT(mdm_store_list_queue(s, "Q", on_queue, &c), 1234);
    CHECK_EQ_INT(c.n, 3);

    /* Delete by key fields only; update in place (same key). */
    mdm_queue_entry_t e;
    memset(&e, 0, sizeof(e));
    snprintf(e.udid, sizeof(e.udid), "Q");
    e.enqueued_ms = 256;
    snprintf(e.uuid, sizeof(e.uuid), "a");
    e.status = 77; /* ignored by a delete */
    mdm_store_delete_queue_entry(b, &e);
    queue_entry(&e, "Q", "u", 9, "k");
    e.status = MDM_CMD_SENT;
    e.updated_ms = 1000;
    mdm_store_put_queue_entry(b, &e);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_queue(s, "Q", on_queue, &c), 0);
    CHECK_EQ_INT(c.n, N - 1);
    CHECK(c.e[2].enqueued_ms == 256 && strcmp(c.e[2].uuid, "b") == 0);
    CHECK(strcmp(c.e[4].channel, "u") == 0 && c.e[4].status == MDM_CMD_SENT &&
          c.e[4].updated_ms == 1000);

    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* Everything keyed by a UDID, for the isolation and purge tests. */
static void put_everything(mdm_batch_t *b, const char *udid)
{
    mdm_device_t d;
    simple_device(&d, udid);
    mdm_store_put_device(b, &d);
    mdm_queue_entry_t e;
    queue_entry(&e, udid, "", 1, "cmd-1");
    mdm_store_put_queue_entry(b, &e);
    queue_entry(&e, udid, "", 2, "cmd-2");
    mdm_store_put_queue_entry(b, &e);
    queue_entry(&e, udid, "user", 3, "cmd-3");
    mdm_store_put_queue_entry(b, &e);
    mdm_result_t r;
    simple_result(&r, udid, "cmd-0", udid);
    mdm_store_put_result(b, &r);
    simple_result(&r, udid, "cmd-9", "second");
    mdm_store_put_result(b, &r);
    mdm_store_put_secret(b, udid, "unlock_token", udid, strlen(udid));
    mdm_store_put_secret(b, udid, "bootstrap_token", "\0\1\2", 3);
}

/* How many records udid has in each place; -1 per failed read. */
static int count_everything(mdm_store_t *s, const char *udid, int *queue, int *results,
                            int *secrets)
{
    mdm_device_t d;
    int ret = mdm_store_get_device(s, udid, &d);
    int device = ret == 0 ? 1 : ret == MDM_ENOTFOUND ? 0 : -1;
    struct collect_queue *cq = calloc(1, sizeof(*cq));
    *queue = mdm_store_list_queue(s, udid, on_queue, cq) == 0 ? cq->n : -1;
    for (int i = 0; i < cq->n && i < COLLECT_MAX; i++)
        if (strcmp(cq->e[i].udid, udid) != 0)
            *queue = -1;
    free(cq);
    struct collect_results *cr = calloc(1, sizeof(*cr));
    *results = mdm_store_list_results(s, udid, on_result, cr) == 0 ? cr->n : -1;
    free(cr);
    *secrets = 0;
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    static const char *const names[] = {"unlock_token", "bootstrap_token"};
    for (size_t i = 0; i < MDM_ARRAY_LEN(names); i++) {
        mdm_buf_reset(&v);
        ret = mdm_store_get_secret(s, udid, names[i], &v);
        if (ret == 0)
            (*secrets)++;
        else if (ret != MDM_ENOTFOUND)
            *secrets = -100;
    }
    mdm_buf_reset(&v);
    if (mdm_store_get_secret(s, udid, "unlock_token", &v) == 0 &&
        (v.len != strlen(udid) || memcmp(mdm_buf_head(&v), udid, v.len) != 0))
        *secrets = -100; /* somebody else's secret */
    mdm_buf_dispose(&v);
    return device;
}

static void test_isolation_and_purge(void)
{
    char *dir = tmpdir("mdm-purge");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_NONE, 0);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    /* "A" is a byte prefix of all the others; "A\x01" sorts right after "A" + 0x00. */
    static const char *const udids[] = {"A", "AB", "A\x01", "A ", "B"};
    for (size_t i = 0; i < MDM_ARRAY_LEN(udids); i++)
        put_everything(b, udids[i]);
    mdm_command_t c = {0};
    snprintf(c.uuid, sizeof(c.uuid), "cmd-1");
    mdm_store_put_command(b, &c);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);

    int q, r, sec;
    for (size_t i = 0; i < MDM_ARRAY_LEN(udids); i++) {
        CHECK_EQ_INT(count_everything(s, udids[i], &q, &r, &sec), 1);
        CHECK_EQ_INT(q, 3);
        CHECK_EQ_INT(r, 2);
        CHECK_EQ_INT(sec, 2);
    }

    /* Purge "A": everything of "A" goes, nothing of the others, the command record stays. */
    CHECK_EQ_INT(mdm_store_purge_device(s, b, "A"), 0);
    CHECK_EQ_INT(mdm_batch_count(b), 1 + 3 + 2 + 2);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    CHECK_EQ_INT(count_everything(s, "A", &q, &r, &sec), 0);
    CHECK_EQ_INT(q, 0);
    CHECK_EQ_INT(r, 0);
    CHECK_EQ_INT(sec, 0);
    for (size_t i = 1; i < MDM_ARRAY_LEN(udids); i++) {
        CHECK_EQ_INT(count_everything(s, udids[i], &q, &r, &sec), 1);
        CHECK_EQ_INT(q, 3);
        CHECK_EQ_INT(r, 2);
        CHECK_EQ_INT(sec, 2);
    }
    mdm_command_t gc;
    CHECK_EQ_INT(mdm_store_get_command(s, "cmd-1", &gc), 0);
    mdm_command_dispose(&gc);

    /* Purging a device with nothing left only deletes its (absent) record. */
    CHECK_EQ_INT(mdm_store_purge_device(s, b, "A"), 0);
    CHECK_EQ_INT(mdm_batch_count(b), 1);
    mdm_batch_clear(b);
    CHECK_EQ_INT(mdm_store_purge_device(s, b, ""), -EINVAL);
    CHECK_EQ_INT(mdm_batch_count(b), 0);

    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

struct collect_users {
    int n;
    mdm_user_channel_t u[4];
};

static int on_user(void *arg, const mdm_user_channel_t *u)
{
    struct collect_users *c = arg;
    if (c->n < 4)
        c->u[c->n] = *u;
    c->n++;
    return 0;
}

static void test_user_channels(void)
{
    char *dir = tmpdir("mdm-users");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_NONE, 0);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    static mdm_user_channel_t u;
    memset(&u, 0, sizeof(u));
    snprintf(u.udid, sizeof(u.udid), "A");
    make_long_id(u.user_id, MDM_CHANNEL_MAX, 'g', "guid-");
    FILL_MAX(u.short_name, 's');
    FILL_MAX(u.long_name, 'l');
    for (size_t i = 0; i < sizeof(u.push_token); i++)
        u.push_token[i] = (uint8_t)i;
    u.push_token_len = sizeof(u.push_token);
    FILL_MAX(u.push_magic, 'm');
    u.push_token_invalid = true;
    u.updated_ms = UINT64_MAX;
    u.last_push_ms = 7;
    u.last_push_status = 410;
    FILL_MAX(u.last_push_reason, 'r');
    mdm_store_put_user_channel(b, &u);
    mdm_user_channel_t other = u;
    snprintf(other.udid, sizeof(other.udid), "AB"); /* "A" is its byte prefix */
    snprintf(other.user_id, sizeof(other.user_id), "x");
    mdm_store_put_user_channel(b, &other);
    mdm_device_t d;
    simple_device(&d, "A");
    mdm_store_put_device(b, &d);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);

    struct collect_users c = {0};
    CHECK_EQ_INT(mdm_store_list_user_channels(s, "A", on_user, &c), 0);
    CHECK_EQ_INT(c.n, 1);
    const mdm_user_channel_t *g = &c.u[0];
    CHECK(strcmp(g->udid, "A") == 0 && strcmp(g->user_id, u.user_id) == 0 &&
          strcmp(g->short_name, u.short_name) == 0 && strcmp(g->long_name, u.long_name) == 0 &&
          g->push_token_len == u.push_token_len &&
          memcmp(g->push_token, u.push_token, u.push_token_len) == 0 &&
          strcmp(g->push_magic, u.push_magic) == 0 && g->push_token_invalid &&
          g->updated_ms == UINT64_MAX && g->last_push_ms == 7 && g->last_push_status == 410 &&
          strcmp(g->last_push_reason, u.last_push_reason) == 0);
    CHECK_EQ_INT(mdm_store_list_user_channels(s, "", on_user, &c), -EINVAL);

    /* Every truncation of the record is refused by the listing. */
    uint8_t k[256], raw[1024];
    size_t kl = pkey(k, "A", u.user_id);
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    CHECK_EQ_INT(raw_get(s, MDM_CF_USERS, k, kl, &v), 0);
    CHECK(v.len < sizeof(raw));
    memcpy(raw, mdm_buf_head(&v), v.len);
    int wrong = 0;
    for (size_t n = 0; n < v.len; n++) {
        mdm_batch_put(b, MDM_CF_USERS, k, pkey(k, "T", "u"), raw, n);
        CHECK_EQ_INT(mdm_store_commit(s, b), 0);
        mdm_batch_clear(b);
        c.n = 0;
        wrong += mdm_store_list_user_channels(s, "T", on_user, &c) != -EBADMSG;
    }
    CHECK_EQ_INT(wrong, 0);
    mdm_buf_dispose(&v);

    /* Purging the device takes its user channels, not those of "AB". */
    CHECK_EQ_INT(mdm_store_purge_device(s, b, "A"), 0);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    c.n = 0;
    CHECK_EQ_INT(mdm_store_list_user_channels(s, "A", on_user, &c), 0);
    CHECK_EQ_INT(c.n, 0);
    CHECK_EQ_INT(mdm_store_list_user_channels(s, "AB", on_user, &c), 0);
    CHECK_EQ_INT(c.n, 1);
    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

static void test_list_results(void)
{
    char *dir = tmpdir("mdm-results");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_NONE, 0);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    mdm_result_t r;
    simple_result(&r, "R", "c3", "third");
    mdm_store_put_result(b, &r);
    simple_result(&r, "R", "a1", "first");
    mdm_store_put_result(b, &r);
    simple_result(&r, "R", "b2", NULL); /* no response yet */
    mdm_store_put_result(b, &r);
    simple_result(&r, "R2", "a0", "not mine");
    mdm_store_put_result(b, &r);
    simple_result(&r, "Q", "zz", "not mine");
    mdm_store_put_result(b, &r);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);

    struct collect_results *c = calloc(1, sizeof(*c));
    CHECK_EQ_INT(mdm_store_list_results(s, "R", on_result, c), 0);
    CHECK_EQ_INT(c->n, 3);
    CHECK_STR(c->uuid[0], "a1");
    CHECK_STR(c->uuid[1], "b2");
    CHECK_STR(c->uuid[2], "c3");
    CHECK_STR(c->response[0], "first");
    CHECK_STR(c->response[1], "");
    CHECK_STR(c->response[2], "third");
    CHECK_EQ_INT(c->n_events[0], 2);
    memset(c, 0, sizeof(*c));
    CHECK_EQ_INT(mdm_store_list_results(s, "nobody", on_result, c), 0);
    CHECK_EQ_INT(c->n, 0);
    CHECK_EQ_INT(mdm_store_list_results(s, "", on_result, c), -EINVAL);
    free(c);

    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

static void test_list_devices(void)
{
    char *dir = tmpdir("mdm-devices");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_NONE, 0);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    enum { NDEV = 25, PAGE = 10 };
    for (int i = NDEV - 1; i >= 0; i--) {
        char udid[16];
        snprintf(udid, sizeof(udid), "dev-%02d", i);
        mdm_device_t d;
        simple_device(&d, udid);
        mdm_store_put_device(b, &d);
    }
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);

    struct collect_devices *c = calloc(1, sizeof(*c));
    CHECK_EQ_INT(mdm_store_list_devices(s, "", on_device, c), 0);
    CHECK_EQ_INT(c->n, NDEV);
    memset(c, 0, sizeof(*c));
    CHECK_EQ_INT(mdm_store_list_devices(s, NULL, on_device, c), 0);
    CHECK_EQ_INT(c->n, NDEV);

    /* Pages of PAGE: 10, 10, 5, then nothing; every device once, in order. */
    char after[MDM_UDID_MAX + 1] = "";
    int seen = 0, pages = 0, wrong = 0;
    for (;;) {
        memset(c, 0, sizeof(*c));
        c->page = PAGE;
        int ret = mdm_store_list_devices(s, after, on_device, c);
        if (ret != 0 && ret != 1) {
            wrong++;
            break;
        }
        if (c->n == 0)
            break;
        pages++;
        for (int i = 0; i < c->n; i++) {
            char want[16];
            snprintf(want, sizeof(want), "dev-%02d", seen + i);
            wrong += strcmp(c->udid[i], want) != 0;
        }
        seen += c->n;
        snprintf(after, sizeof(after), "%s", c->udid[c->n - 1]);
        if (pages > NDEV)
            break;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(seen, NDEV);
    CHECK_EQ_INT(pages, 3);

    /* `after` need not exist; past the end lists nothing. */
    memset(c, 0, sizeof(*c));
    CHECK_EQ_INT(mdm_store_list_devices(s, "dev-05x", on_device, c), 0);
    CHECK_EQ_INT(c->n, NDEV - 6);
    CHECK_STR(c->udid[0], "dev-06");
    memset(c, 0, sizeof(*c));
    CHECK_EQ_INT(mdm_store_list_devices(s, "dev-24", on_device, c), 0);
    CHECK_EQ_INT(c->n, 0);
    memset(c, 0, sizeof(*c));
    CHECK_EQ_INT(mdm_store_list_devices(s, "a", on_device, c), 0);
    CHECK_EQ_INT(c->n, NDEV);
    free(c);

    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* ---- secrets and history ---------------------------------------------------------------------- */

static void test_secrets(void)
{
    char *dir = tmpdir("mdm-secrets");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_NONE, 0);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    uint8_t sealed[45];
    for (size_t i = 0; i < sizeof(sealed); i++)
        sealed[i] = (uint8_t)(i & 1 ? 0 : i);
    char name[MDM_SECRET_NAME_MAX + 1];
    make_long_id(name, MDM_SECRET_NAME_MAX, 'n', "long-");
    mdm_store_put_secret(b, "S", "bootstrap_token", sealed, sizeof(sealed));
    mdm_store_put_secret(b, "S", name, "x", 1);
    mdm_store_put_secret(b, "S", "empty", NULL, 0);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);

    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    CHECK_EQ_INT(mdm_store_get_secret(s, "S", "bootstrap_token", &v), 0);
    CHECK(v.len == sizeof(sealed) && memcmp(mdm_buf_head(&v), sealed, v.len) == 0);
    CHECK_EQ_INT(mdm_store_get_secret(s, "S", "bootstrap_token", &v), 0); /* appends */
    CHECK_EQ_INT(v.len, 2 * sizeof(sealed));
    mdm_buf_reset(&v);
    CHECK_EQ_INT(mdm_store_get_secret(s, "S", name, &v), 0);
    CHECK(v.len == 1 && mdm_buf_head(&v)[0] == 'x');
    mdm_buf_reset(&v);
    CHECK_EQ_INT(mdm_store_get_secret(s, "S", "empty", &v), 0);
    CHECK_EQ_INT(v.len, 0);
    CHECK_EQ_INT(mdm_store_get_secret(s, "S", "unlock_token", &v), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_secret(s, "T", "bootstrap_token", &v), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_secret(s, "S", "bootstrap", &v), MDM_ENOTFOUND); /* no prefixes */

    mdm_buf_t small;
    mdm_buf_init(&small, 8);
    CHECK_EQ_INT(mdm_store_get_secret(s, "S", "bootstrap_token", &small), MDM_ETOOBIG);
    mdm_buf_dispose(&small);

    mdm_store_delete_secret(b, "S", "bootstrap_token");
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    CHECK_EQ_INT(mdm_store_get_secret(s, "S", "bootstrap_token", &v), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_secret(s, "S", name, &v), 0);

    mdm_buf_dispose(&v);
    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

static void test_add_event(void)
{
    mdm_result_t r = {0};
    mdm_result_add_event(&r, MDM_CMD_QUEUED, 1);
    mdm_result_add_event(&r, MDM_CMD_SENT, 2);
    CHECK_EQ_INT(r.n_events, 2);
    CHECK_EQ_INT(r.status, MDM_CMD_SENT);
    CHECK(r.events[0].status == MDM_CMD_QUEUED && r.events[0].at_ms == 1);
    CHECK(r.events[1].status == MDM_CMD_SENT && r.events[1].at_ms == 2);
    for (uint64_t t = 3; t <= MDM_RESULT_EVENTS_MAX; t++)
        mdm_result_add_event(&r, MDM_CMD_NOTNOW, t);
    CHECK_EQ_INT(r.n_events, MDM_RESULT_EVENTS_MAX);
    CHECK(r.events[MDM_RESULT_EVENTS_MAX - 1].at_ms == MDM_RESULT_EVENTS_MAX);

    /* Full: the first event stays, the oldest after it goes. */
    mdm_result_add_event(&r, MDM_CMD_ACKNOWLEDGED, 100);
    CHECK_EQ_INT(r.n_events, MDM_RESULT_EVENTS_MAX);
    CHECK(r.events[0].status == MDM_CMD_QUEUED && r.events[0].at_ms == 1);
    CHECK(r.events[1].status == MDM_CMD_NOTNOW && r.events[1].at_ms == 3);
    CHECK(r.events[MDM_RESULT_EVENTS_MAX - 1].status == MDM_CMD_ACKNOWLEDGED &&
          r.events[MDM_RESULT_EVENTS_MAX - 1].at_ms == 100);
    CHECK_EQ_INT(r.status, MDM_CMD_ACKNOWLEDGED);

    for (uint64_t t = 200; t < 220; t++)
        mdm_result_add_event(&r, MDM_CMD_ERROR, t);
    CHECK_EQ_INT(r.n_events, MDM_RESULT_EVENTS_MAX);
    CHECK(r.events[0].at_ms == 1);
    int wrong = 0;
    for (unsigned i = 1; i < MDM_RESULT_EVENTS_MAX; i++) /* the 15 latest, in order */
        wrong += r.events[i].at_ms != 220 - MDM_RESULT_EVENTS_MAX + i ||
                 r.events[i].status != MDM_CMD_ERROR;
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(r.status, MDM_CMD_ERROR);

    /* The overflowed history survives a round trip. */
    char *dir = tmpdir("mdm-events");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_NONE, 0);
    CHECK(s != NULL);
    if (s) {
        snprintf(r.udid, sizeof(r.udid), "E");
        snprintf(r.uuid, sizeof(r.uuid), "u");
        mdm_batch_t *b = mdm_batch_new();
        mdm_store_put_result(b, &r);
        CHECK_EQ_INT(mdm_store_commit(s, b), 0);
        mdm_result_t g;
        CHECK_EQ_INT(mdm_store_get_result(s, "E", "u", &g), 0);
        CHECK_EQ_INT(g.n_events, MDM_RESULT_EVENTS_MAX);
        CHECK(memcmp(g.events, r.events, sizeof(r.events)) == 0);
        CHECK_EQ_INT(g.status, MDM_CMD_ERROR);
        mdm_result_dispose(&g);
        mdm_batch_free(b);
        mdm_store_close(s);
    }
    rm_rf(dir);
    free(dir);
}

/* ---- the job runner ---------------------------------------------------------------------------- */

enum { JOB_THREADS = 4, JOBS_PER_THREAD = 50, JOB_DEVICES = 8 };

struct submitter {
    mdm_store_t *s;
    pthread_t self;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pending;
    int refused;
    int wrong; /* jobs that read something unexpected or ran on the submitter's thread */
    int done;
};

struct read_job {
    struct submitter *sub;
    int i;
};

static int count_entry(void *arg, const mdm_queue_entry_t *e)
{
    (void)e;
    (*(int *)arg)++;
    return 0;
}

/* Two reads on a worker, then "post back" under the submitter's lock and wake it. */
static void read_device_job(mdm_store_t *s, void *arg)
{
    struct read_job *job = arg;
    struct submitter *sub = job->sub;
    char udid[16];
    snprintf(udid, sizeof(udid), "job-%d", job->i % JOB_DEVICES);
    mdm_device_t d;
    int ret = mdm_store_get_device(s, udid, &d);
    int n = 0;
    int lret = mdm_store_list_queue(s, udid, count_entry, &n);
    bool ok = s == sub->s && ret == 0 && strcmp(d.udid, udid) == 0 && lret == 0 &&
              n == 1 + job->i % JOB_DEVICES && !pthread_equal(pthread_self(), sub->self);
    pthread_mutex_lock(&sub->lock);
    sub->wrong += !ok;
    sub->done++;
    sub->pending--;
    pthread_cond_signal(&sub->cond);
    pthread_mutex_unlock(&sub->lock);
    free(job);
}

static void *submit_main(void *arg)
{
    struct submitter *sub = arg;
    sub->self = pthread_self();
    for (int i = 0; i < JOBS_PER_THREAD; i++) {
        struct read_job *job = malloc(sizeof(*job));
        job->sub = sub;
        job->i = i;
        pthread_mutex_lock(&sub->lock);
        sub->pending++;
        pthread_mutex_unlock(&sub->lock);
        if (mdm_store_run_async(sub->s, read_device_job, job) != 0) {
            pthread_mutex_lock(&sub->lock);
            sub->pending--;
            sub->refused++;
            pthread_mutex_unlock(&sub->lock);
            free(job);
        }
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 20;
    pthread_mutex_lock(&sub->lock);
    int rc = 0;
    while (sub->pending > 0 && rc == 0)
        rc = pthread_cond_timedwait(&sub->cond, &sub->lock, &deadline);
    pthread_mutex_unlock(&sub->lock);
    return NULL;
}

static void test_jobs(void)
{
    char *dir = tmpdir("mdm-jobs");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_NONE, 3);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    for (int i = 0; i < JOB_DEVICES; i++) {
        char udid[16], uuid[16];
        snprintf(udid, sizeof(udid), "job-%d", i);
        mdm_device_t d;
        simple_device(&d, udid);
        mdm_store_put_device(b, &d);
        for (int j = 0; j <= i; j++) {
            mdm_queue_entry_t e;
            snprintf(uuid, sizeof(uuid), "c%d", j);
            queue_entry(&e, udid, "", (uint64_t)j, uuid);
            mdm_store_put_queue_entry(b, &e);
        }
    }
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);

    static struct submitter subs[JOB_THREADS];
    pthread_t th[JOB_THREADS];
    for (int t = 0; t < JOB_THREADS; t++) {
        memset(&subs[t], 0, sizeof(subs[t]));
        subs[t].s = s;
        pthread_mutex_init(&subs[t].lock, NULL);
        pthread_cond_init(&subs[t].cond, NULL);
        CHECK_EQ_INT(pthread_create(&th[t], NULL, submit_main, &subs[t]), 0);
    }
    int done = 0, wrong = 0, refused = 0, pending = 0;
    for (int t = 0; t < JOB_THREADS; t++) {
        pthread_join(th[t], NULL);
        pthread_mutex_lock(&subs[t].lock);
        done += subs[t].done;
        wrong += subs[t].wrong;
        refused += subs[t].refused;
        pending += subs[t].pending;
        pthread_mutex_unlock(&subs[t].lock);
    }
    CHECK_EQ_INT(pending, 0);
    CHECK_EQ_INT(refused, 0);
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(done, JOB_THREADS * JOBS_PER_THREAD);
    mdm_store_close(s);
    for (int t = 0; t < JOB_THREADS; t++) {
        pthread_cond_destroy(&subs[t].cond);
        pthread_mutex_destroy(&subs[t].lock);
    }
    mdm_batch_free(b);
out:
    rm_rf(dir);
    free(dir);
}

/* Close drains jobs: queued ones all run, including those queued by a running job until the
 * store starts closing; from then on run_async / commit_async / get_async say -ESHUTDOWN. */
enum { DRAIN_JOBS = 100 };

struct drain {
    atomic_int runs;
    atomic_bool started;
    int accepted;        /* noop jobs the gate job queued before the close */
    int last;            /* the gate job's last run_async result */
    int commit_ret, get_ret;
    mdm_batch_t *b;
};

static void noop_job(mdm_store_t *s, void *arg)
{
    struct drain *dr = arg;
    (void)s;
    usleep(100);
    atomic_fetch_add(&dr->runs, 1);
}

static void never_called_get(void *arg, int status, const void *val, size_t vlen)
{
    (void)status;
    (void)val;
    (void)vlen;
    atomic_fetch_add(&((struct drain *)arg)->runs, 1000000);
}

static void never_called_done(void *arg, int status)
{
    (void)status;
    atomic_fetch_add(&((struct drain *)arg)->runs, 1000000);
}

static void gate_job(mdm_store_t *s, void *arg)
{
    struct drain *dr = arg;
    atomic_store(&dr->started, true);
    for (int i = 0; i < 20000; i++) { /* at most ~20 s */
        dr->last = mdm_store_run_async(s, noop_job, dr);
        if (dr->last != 0)
            break;
        dr->accepted++;
        usleep(1000);
    }
    mdm_batch_put(dr->b, MDM_CF_PROBE, "k", 1, "v", 1);
    dr->commit_ret = mdm_store_commit_async(s, dr->b, never_called_done, dr);
    dr->get_ret = mdm_store_get_async(s, MDM_CF_PROBE, "k", 1, never_called_get, dr);
}

static void test_close_drains_jobs(void)
{
    char *dir = tmpdir("mdm-drain");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_NONE, 1);
    CHECK(s != NULL);
    if (!s)
        goto out;
    static struct drain dr;
    atomic_init(&dr.runs, 0);
    atomic_init(&dr.started, false);
    dr.b = mdm_batch_new();
    /* One worker: the gate job holds it, the others queue up behind. */
    CHECK_EQ_INT(mdm_store_run_async(s, gate_job, &dr), 0);
    int refused = 0;
    for (int i = 0; i < DRAIN_JOBS; i++)
        refused += mdm_store_run_async(s, noop_job, &dr) != 0;
    CHECK_EQ_INT(refused, 0);
    while (!atomic_load(&dr.started))
        usleep(1000);
    usleep(5000); /* let the gate queue a few */
    mdm_store_close(s); /* returns after every queued job ran */
    CHECK_EQ_INT(dr.last, -ESHUTDOWN);
    CHECK_EQ_INT(dr.commit_ret, -ESHUTDOWN);
    CHECK_EQ_INT(dr.get_ret, -ESHUTDOWN);
    CHECK(dr.accepted > 0);
    CHECK_EQ_INT(atomic_load(&dr.runs), DRAIN_JOBS + dr.accepted);
    mdm_batch_free(dr.b);
out:
    rm_rf(dir);
    free(dir);
}

/* ---- store.h additions: iteration after a key, reads in place, puts in place ---------------- */

struct keys_seen {
    char keys[8][8];
    int n;
};

static int on_key(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct keys_seen *ks = arg;
    (void)val;
    (void)vlen;
    if (ks->n < 8 && klen < sizeof(ks->keys[0])) {
        for (size_t i = 0; i < klen; i++) /* show the 0x00 separator as '.' */
            ks->keys[ks->n][i] = ((const char *)key)[i] ? ((const char *)key)[i] : '.';
        ks->keys[ks->n][klen] = 0;
    }
    ks->n++;
    return 0;
}

static int view_len(void *arg, const void *val, size_t vlen)
{
    (void)val;
    *(size_t *)arg = vlen;
    return vlen == 3 ? 0 : -4242;
}

static void test_store_additions(void)
{
    char *dir = tmpdir("mdm-additions");
    mdm_store_t *s = open_store(dir, MDM_DURABILITY_NONE, 0);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    static const char *const keys[] = {"a", "p\0a", "p\0b", "p\0c", "pa", "q"};
    for (size_t i = 0; i < MDM_ARRAY_LEN(keys); i++)
        mdm_batch_put(b, MDM_CF_AUDIT, keys[i], strlen(keys[i]) + (i >= 1 && i <= 3 ? 2 : 0),
                      "v", 1);
    uint8_t *p = mdm_batch_put_space(b, MDM_CF_PROBE, "in-place", 8, 3);
    CHECK(p != NULL);
    if (p)
        memcpy(p, "abc", 3);
    mdm_batch_put(b, MDM_CF_PROBE, "four", 4, "abcd", 4);
    CHECK_EQ_INT(mdm_batch_count(b), MDM_ARRAY_LEN(keys) + 2);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);

    struct keys_seen ks;
    memset(&ks, 0, sizeof(ks));
    CHECK_EQ_INT(mdm_store_iter_after(s, MDM_CF_AUDIT, "p", 2, "p\0a", 3, on_key, &ks), 0);
    CHECK_EQ_INT(ks.n, 2);
    CHECK_STR(ks.keys[0], "p.b");
    CHECK_STR(ks.keys[1], "p.c");
    memset(&ks, 0, sizeof(ks));
    CHECK_EQ_INT(mdm_store_iter_after(s, MDM_CF_AUDIT, "p", 2, "a", 1, on_key, &ks), 0);
    CHECK_EQ_INT(ks.n, 3); /* after lies before the prefix: the whole prefix */
    memset(&ks, 0, sizeof(ks));
    CHECK_EQ_INT(mdm_store_iter_after(s, MDM_CF_AUDIT, "p", 2, "p\0c", 3, on_key, &ks), 0);
    CHECK_EQ_INT(ks.n, 0);
    memset(&ks, 0, sizeof(ks));
    CHECK_EQ_INT(mdm_store_iter_after(s, MDM_CF_AUDIT, "p", 2, "pz", 2, on_key, &ks), 0);
    CHECK_EQ_INT(ks.n, 0); /* after lies beyond the prefix */
    memset(&ks, 0, sizeof(ks));
    CHECK_EQ_INT(mdm_store_iter_after(s, MDM_CF_AUDIT, NULL, 0, "p\0b", 3, on_key, &ks), 0);
    CHECK_EQ_INT(ks.n, 3);
    CHECK_STR(ks.keys[0], "p.c");
    CHECK_STR(ks.keys[2], "q");

    size_t len = 0;
    CHECK_EQ_INT(mdm_store_get_view(s, MDM_CF_PROBE, "in-place", 8, view_len, &len), 0);
    CHECK_EQ_INT(len, 3);
    CHECK_EQ_INT(mdm_store_get_view(s, MDM_CF_PROBE, "four", 4, view_len, &len), -4242);
    len = 99;
    CHECK_EQ_INT(mdm_store_get_view(s, MDM_CF_PROBE, "none", 4, view_len, &len), MDM_ENOTFOUND);
    CHECK_EQ_INT(len, 99); /* the view does not run for a missing record */
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    CHECK_EQ_INT(mdm_store_get(s, MDM_CF_PROBE, "in-place", 8, &v), 0);
    CHECK(v.len == 3 && memcmp(mdm_buf_head(&v), "abc", 3) == 0);
    mdm_buf_dispose(&v);

    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

int main(void)
{
    mdm_log_setup(MDM_LOG_ERROR, false);
    test_round_trip();
    test_corrupt();
    test_queue_order();
    test_isolation_and_purge();
    test_user_channels();
    test_list_results();
    test_list_devices();
    test_secrets();
    test_add_event();
    test_store_additions();
    test_jobs();
    test_close_drains_jobs();
    return check_finish("mdm_store");
}
