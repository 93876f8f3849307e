/*
 * The device actor. See device.h.
 *
 * State: the device record, the sealed bootstrap token, and the command queue in memory
 * (every entry with its status history; command plists are shared per shard, so a command
 * sent to many devices is in memory once per shard), loaded once by a job on a storage
 * worker and then kept current by the actor's own writes. Rules:
 * - every answer waits for the group commit of the writes behind it;
 * - per channel, FIFO; at most one command SENT; an Idle while one is SENT hands the same
 *   command out again (the Mac never got it); NotNow parks a command until the next Idle;
 * - a response is recorded once: a repeat of an answered command is not stored again;
 *   a response for a command that is not in flight is refused (400) and logged;
 * - a new Authenticate for a known UDID starts a new enrollment and closes the old queue;
 * - identity: after Authenticate every request must present the certificate bound then; a
 *   certificate issued by mdmd's SCEP belongs to one enrollment and completes it for one Mac
 *   only, and a Mac enrolled that way re-enrolls only with a certificate of a new enrollment;
 *   refusals are 400/403, never 401 (a 401 makes a Mac remove its MDM profile).
 */
#include "actors/device.h"

#include "actors/apns.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/plist.h"
#include "core/seal.h"
#include "storage/enroll.h"

#define RECENT_DONE 8 /* answered command UUIDs remembered for duplicate responses */
#define USER_CHANNELS_MAX 32 /* user channels (macOS users with MDM) kept per device */

/*
 * A command's plist, shared by every queue entry of the shard that holds it: a command sent to
 * many devices is in memory once per shard, as it is on disk once. Shard thread only.
 */
struct cmd_blob {
    char uuid[MDM_UUID_MAX + 1];
    uint8_t *plist;
    size_t len;
    unsigned refs;
    struct cmd_blob *next; /* hash chain */
};

struct qentry {
    mdm_queue_entry_t e;
    mdm_result_t result;
    struct cmd_blob *cmd;  /* NULL when the command record is missing */
    uint8_t *loaded_plist; /* from the load job, until interned on the shard */
    size_t loaded_len;
    struct qentry *next;
};

static _Thread_local struct blob_table {
    struct cmd_blob **slots;
    size_t size, count; /* size: power of two */
} blobs;

static size_t blob_slot(const char *uuid)
{
    return (size_t)mdm_hash64(uuid, strlen(uuid)) & (blobs.size - 1);
}

static void blobs_grow(void)
{
    size_t size = blobs.size ? blobs.size * 2 : 256;
    struct cmd_blob **slots = calloc(size, sizeof(*slots));
    if (!slots)
        return; /* keep the current table: chains just get longer */
    for (size_t i = 0; i < blobs.size; i++) {
        for (struct cmd_blob *b = blobs.slots[i], *next; b; b = next) {
            next = b->next;
            size_t j = (size_t)mdm_hash64(b->uuid, strlen(b->uuid)) & (size - 1);
            b->next = slots[j];
            slots[j] = b;
        }
    }
    free(blobs.slots);
    blobs.slots = slots;
    blobs.size = size;
}

/* Takes plist (owned) for command uuid and returns the shard's shared copy with one more
 * reference; NULL (plist freed) when out of memory. */
static struct cmd_blob *blob_intern(const char *uuid, uint8_t *plist, size_t len)
{
    if (blobs.count >= blobs.size)
        blobs_grow();
    if (!blobs.slots) {
        free(plist);
        return NULL;
    }
    size_t i = blob_slot(uuid);
    for (struct cmd_blob *b = blobs.slots[i]; b; b = b->next) {
        if (strcmp(b->uuid, uuid) == 0) {
            free(plist);
            b->refs++;
            return b;
        }
    }
    struct cmd_blob *b = calloc(1, sizeof(*b));
    if (!b) {
        free(plist);
        return NULL;
    }
    snprintf(b->uuid, sizeof(b->uuid), "%s", uuid);
    b->plist = plist;
    b->len = len;
    b->refs = 1;
    b->next = blobs.slots[i];
    blobs.slots[i] = b;
    blobs.count++;
    return b;
}

static void blob_unref(struct cmd_blob *b)
{
    if (!b || --b->refs > 0)
        return;
    for (struct cmd_blob **pp = &blobs.slots[blob_slot(b->uuid)]; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    }
    blobs.count--;
    free(b->plist);
    free(b);
    if (blobs.count == 0) { /* nothing queued on this shard: give the table back */
        free(blobs.slots);
        blobs.slots = NULL;
        blobs.size = 0;
    }
}

struct device_actor {
    mdm_actor_t base;
    bool exists;
    mdm_device_t dev;
    mdm_buf_t bootstrap; /* sealed bootstrap token, empty when none */
    struct qentry *queue; /* ordered by channel, enqueued_ms, uuid */
    unsigned queue_len;
    char recent_done[RECENT_DONE][MDM_UUID_MAX + 1];
    unsigned recent_next;
    mdm_user_channel_t *users; /* user channels (TokenUpdate with a UserID), loaded */
    unsigned n_users;
    mdm_shard_msg_t load_msg;
    int load_status;
    /* push coalescing (memory only: a reloaded actor starts afresh; results are stored) */
    uint64_t push_requested_ms; /* last push handed to the pusher */
    bool push_wake_armed;       /* a wake-up is due at the end of the coalescing window */
};

static struct mdm_device_options opts;
static mdm_actors_t *runtime;

static void device_load(mdm_actor_t *a);
static void device_receive(mdm_actor_t *a, mdm_actor_msg_t *m);
static void device_evict(mdm_actor_t *a);

static const mdm_actor_type_t device_type = {
    .name = "device",
    .size = sizeof(struct device_actor),
    .load = device_load,
    .receive = device_receive,
    .evict = device_evict,
};

void mdm_device_setup(mdm_actors_t *rt, const struct mdm_device_options *o)
{
    runtime = rt;
    opts = *o;
}

/* ---- requests ---- */

mdm_dev_req_t *mdm_dev_req_new(enum mdm_dev_req_kind kind, const char *udid)
{
    size_t len = strlen(udid);
    if (len == 0 || len > MDM_UDID_MAX)
        return NULL;
    mdm_dev_req_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->kind = kind;
    r->base.type = &device_type;
    r->set_ade = r->set_suspended = r->set_fv_escrowed = -1;
    memcpy(r->base.id, udid, len + 1);
    mdm_buf_init(&r->reply, 0);
    return r;
}

void mdm_dev_req_free(mdm_dev_req_t *r)
{
    if (!r)
        return;
    if (r->msg)
        plist_free(r->msg);
    free(r->body);
    free(r->plist);
    free(r->users);
    mdm_buf_dispose(&r->reply);
    free(r);
}

static void on_done_here(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    mdm_dev_req_t *r = MDM_CONTAINER_OF(m, mdm_dev_req_t, base.shard_msg);
    r->done(r);
}

static void answer(mdm_dev_req_t *r) { mdm_actor_reply(&r->base, on_done_here); }

static void on_reject(mdm_actor_msg_t *m, int err)
{
    mdm_dev_req_t *r = (mdm_dev_req_t *)m;
    r->status = 503;
    snprintf(r->error, sizeof(r->error), "%s",
             err == MDM_EFULL ? "device is busy, retry later" : "device state is unavailable");
    answer(r);
}

void mdm_dev_send(mdm_dev_req_t *r)
{
    r->base.on_reject = on_reject;
    mdm_actor_send(runtime, &r->base);
}

static void fail(mdm_dev_req_t *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(mdm_dev_req_t *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof(r->error), fmt, ap);
    va_end(ap);
    r->status = status;
}

/* Answers r once everything written so far on this shard is durable. */
static void on_durable(mdm_commit_waiter_t *w, int status)
{
    mdm_dev_req_t *r = MDM_CONTAINER_OF(w, mdm_dev_req_t, _waiter);
    if (status != 0) {
        r->status = 503;
        snprintf(r->error, sizeof(r->error), "storage failure, nothing was recorded");
        mdm_buf_reset(&r->reply);
    }
    answer(r);
}

static void answer_after_commit(struct device_actor *da, mdm_dev_req_t *r)
{
    r->_waiter.fn = on_durable;
    mdm_actors_after_commit(mdm_actor_shard(&da->base), &r->_waiter);
}

/* ---- loading (storage worker) ---- */

struct load_ctx {
    struct device_actor *da;
    mdm_store_t *store;
    struct qentry **tail;
    int status;
};

/* Commands that carry secrets (profiles with passwords) are sealed at rest, bound to their
 * UUID. */
static int command_aad(const char *uuid, char aad[MDM_UUID_MAX + 16])
{
    return snprintf(aad, MDM_UUID_MAX + 16, "command:%s", uuid);
}

int mdm_dev_seal_command(const char *uuid, const void *plist, size_t len, mdm_buf_t *out)
{
    char aad[MDM_UUID_MAX + 16];
    int n = command_aad(uuid, aad);
    return mdm_seal(opts.secrets_key, aad, (size_t)n, plist, len, out);
}

/* Replaces cmd's sealed plist by its plaintext (owned by cmd); on failure cmd has none. */
static int open_command(mdm_command_t *cmd)
{
    char aad[MDM_UUID_MAX + 16];
    int n = command_aad(cmd->uuid, aad);
    mdm_buf_t plain;
    mdm_buf_init(&plain, 0);
    int ret = mdm_unseal(opts.secrets_key, aad, (size_t)n, cmd->plist, cmd->plist_len, &plain);
    free(cmd->plist);
    cmd->plist = NULL;
    cmd->plist_len = 0;
    if (ret == 0 && plain.len && (cmd->plist = malloc(plain.len))) {
        memcpy(cmd->plist, mdm_buf_head(&plain), plain.len);
        cmd->plist_len = plain.len;
    } else if (ret == 0) {
        ret = -ENOMEM;
    }
    explicit_bzero(mdm_buf_head(&plain), plain.len);
    mdm_buf_dispose(&plain);
    return ret;
}

static int load_queue_entry(void *arg, const mdm_queue_entry_t *e)
{
    struct load_ctx *lc = arg;
    struct qentry *q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    q->e = *e;
    mdm_command_t cmd;
    int ret = mdm_store_get_command(lc->store, e->uuid, &cmd);
    if (ret == 0 && (cmd.flags & MDM_COMMAND_SEALED)) {
        ret = open_command(&cmd);
        if (ret != 0)
            mdm_error("device", "%s: command %s cannot be unsealed: %s", e->udid, e->uuid,
                      mdm_strerror(ret));
        ret = 0; /* an unreadable command is handed out as missing (CommandFormatError) */
    }
    if (ret == 0) {
        q->loaded_plist = cmd.plist;
        q->loaded_len = cmd.plist_len;
        cmd.plist = NULL;
        mdm_command_dispose(&cmd);
    } else if (ret != MDM_ENOTFOUND) {
        free(q);
        return ret;
    }
    ret = mdm_store_get_result(lc->store, e->udid, e->uuid, &q->result);
    if (ret == MDM_ENOTFOUND) {
        memset(&q->result, 0, sizeof(q->result));
        snprintf(q->result.udid, sizeof(q->result.udid), "%s", e->udid);
        snprintf(q->result.uuid, sizeof(q->result.uuid), "%s", e->uuid);
        snprintf(q->result.channel, sizeof(q->result.channel), "%s", e->channel);
        ret = 0;
    }
    if (ret != 0) {
        free(q->loaded_plist);
        free(q);
        return ret;
    }
    *lc->tail = q;
    lc->tail = &q->next;
    lc->da->queue_len++;
    return 0;
}

static void on_loaded(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct device_actor *da = MDM_CONTAINER_OF(m, struct device_actor, load_msg);
    for (struct qentry *q = da->queue; q; q = q->next) {
        if (q->loaded_plist)
            q->cmd = blob_intern(q->e.uuid, q->loaded_plist, q->loaded_len);
        q->loaded_plist = NULL;
    }
    mdm_actor_loaded(&da->base, da->load_status);
}

static int load_user_channel(void *arg, const mdm_user_channel_t *u)
{
    struct device_actor *da = arg;
    if (da->n_users >= USER_CHANNELS_MAX)
        return 0; /* the rest is not pushed: logged once at load */
    if (!da->users && !(da->users = calloc(USER_CHANNELS_MAX, sizeof(*da->users))))
        return -ENOMEM;
    da->users[da->n_users++] = *u;
    return 0;
}

static void load_job(mdm_store_t *s, void *arg)
{
    struct device_actor *da = arg;
    int ret = mdm_store_get_device(s, da->base.id, &da->dev);
    if (ret == 0) {
        da->exists = true;
        struct load_ctx lc = {.da = da, .store = s, .tail = &da->queue};
        ret = mdm_store_list_queue(s, da->base.id, load_queue_entry, &lc);
        if (ret == 0)
            ret = mdm_store_list_user_channels(s, da->base.id, load_user_channel, da);
        if (ret == 0) {
            ret = mdm_store_get_secret(s, da->base.id, "bootstrap", &da->bootstrap);
            if (ret == MDM_ENOTFOUND)
                ret = 0;
        }
    } else if (ret == MDM_ENOTFOUND) {
        ret = 0;
    }
    da->load_status = ret;
    da->load_msg.fn = on_loaded;
    mdm_shard_post(mdm_actor_shard(&da->base), &da->load_msg);
}

static void device_load(mdm_actor_t *a)
{
    struct device_actor *da = (struct device_actor *)a;
    mdm_buf_init(&da->bootstrap, 0);
    int ret = mdm_store_run_async(mdm_actors_store(mdm_actors_of(a)), load_job, da);
    if (ret != 0)
        mdm_actor_loaded(a, ret);
}

static void free_entry(struct qentry *q)
{
    mdm_result_dispose(&q->result);
    blob_unref(q->cmd);
    free(q->loaded_plist);
    free(q);
}

static void device_evict(mdm_actor_t *a)
{
    struct device_actor *da = (struct device_actor *)a;
    for (struct qentry *q = da->queue, *next; q; q = next) {
        next = q->next;
        free_entry(q);
    }
    da->queue = NULL;
    mdm_buf_dispose(&da->bootstrap);
    free(da->users);
    da->users = NULL;
    da->n_users = 0;
}

/* ---- writes ---- */

static mdm_batch_t *batch(struct device_actor *da) { return mdm_actor_batch(&da->base); }

static void save_device(struct device_actor *da)
{
    da->dev.version++;
    mdm_store_put_device(batch(da), &da->dev);
}

static void record_event(struct device_actor *da, struct qentry *q, enum mdm_command_status st)
{
    uint64_t now = mdm_wall_ms();
    mdm_result_add_event(&q->result, st, now);
    mdm_store_put_result(batch(da), &q->result);
}

static void set_entry_status(struct device_actor *da, struct qentry *q,
                             enum mdm_command_status st)
{
    q->e.status = (uint8_t)st;
    q->e.updated_ms = mdm_wall_ms();
    mdm_store_put_queue_entry(batch(da), &q->e);
    record_event(da, q, st);
}

/* Removes q from the queue, recording its final status (with the response, if any). */
static void retire_entry(struct device_actor *da, struct qentry *q, enum mdm_command_status st,
                         const uint8_t *response, size_t response_len)
{
    if (response && response_len) {
        free(q->result.response);
        q->result.response = malloc(response_len);
        if (q->result.response) {
            memcpy(q->result.response, response, response_len);
            q->result.response_len = response_len;
        }
    }
    record_event(da, q, st);
    mdm_store_delete_queue_entry(batch(da), &q->e);
    for (struct qentry **pp = &da->queue; *pp; pp = &(*pp)->next) {
        if (*pp == q) {
            *pp = q->next;
            break;
        }
    }
    da->queue_len--;
    snprintf(da->recent_done[da->recent_next], MDM_UUID_MAX + 1, "%s", q->e.uuid);
    da->recent_next = (da->recent_next + 1) % RECENT_DONE;
    free_entry(q);
}

/* Closes the queue: a new enrollment or CheckOut never receives older commands. */
static void close_queue(struct device_actor *da)
{
    while (da->queue)
        retire_entry(da, da->queue, MDM_CMD_CANCELLED, NULL, 0);
}

/* ---- check-in ---- */

static const char *dict_string(plist_t d, const char *key)
{
    const char *s = NULL;
    return mdm_plist_get_string(d, key, &s) == 0 ? s : NULL;
}

static void copy_field(char *dst, size_t dstlen, plist_t d, const char *key)
{
    const char *s = dict_string(d, key);
    if (s)
        snprintf(dst, dstlen, "%s", s);
}

static bool identity_matches(struct device_actor *da, mdm_dev_req_t *r)
{
    if (!da->exists || da->dev.state == MDM_DEVICE_NEW) {
        fail(r, 403, "unknown device %s: it must enroll (Authenticate) first", da->base.id);
        return false;
    }
    if (da->dev.state == MDM_DEVICE_REVOKED) {
        fail(r, 403, "device %s was revoked by an administrator; it must enroll again",
             da->base.id);
        return false;
    }
    if (strcmp(da->dev.cert_sha256, r->cert_sha256) != 0) {
        mdm_warn("device", "%s: refused a request with another identity certificate (%.16s...)",
                 da->base.id, r->cert_sha256);
        fail(r, 403, "the identity certificate does not belong to device %s", da->base.id);
        return false;
    }
    return true;
}

/* The enrollment record of the Authenticate's certificate, looked up before it is handled. */
struct enroll_lookup {
    struct device_actor *da;
    mdm_dev_req_t *r;
    int status; /* 0 found, MDM_ENOTFOUND: not issued by mdmd's SCEP, else a storage error */
    mdm_enrollment_t e;
    mdm_shard_msg_t msg;
};

/* May r's certificate (enrollment record l->e when l->status is 0) enroll this device? */
static bool enrollment_allows(struct device_actor *da, mdm_dev_req_t *r,
                              const struct enroll_lookup *l)
{
    if (l->status != 0 && l->status != MDM_ENOTFOUND) {
        fail(r, 503, "enrollment records are unavailable, retry later");
        return false;
    }
    if (l->status == 0 && l->e.udid[0] && strcmp(l->e.udid, da->base.id) != 0) {
        mdm_warn("device", "%s: refused Authenticate with the certificate of enrollment %s, "
                           "completed by %s", da->base.id, l->e.id, l->e.udid);
        fail(r, 403, "this identity certificate belongs to the enrollment of another device");
        return false;
    }
    const mdm_device_t *d = &da->dev;
    if (l->status == MDM_ENOTFOUND && da->exists && d->state != MDM_DEVICE_NEW &&
        d->enroll_id[0] && strcmp(d->cert_sha256, r->cert_sha256) != 0) {
        mdm_warn("device", "%s: refused re-enrollment with a certificate mdmd did not issue for "
                           "an enrollment", da->base.id);
        fail(r, 403, "device %s enrolled through mdmd: it re-enrolls with the certificate of a "
                     "new enrollment", da->base.id);
        return false;
    }
    return true;
}

static void on_authenticate(struct device_actor *da, mdm_dev_req_t *r,
                            const struct enroll_lookup *l)
{
    mdm_device_t *d = &da->dev;
    const char *topic = dict_string(r->msg, "Topic");
    if (!topic) {
        fail(r, 400, "Authenticate without Topic");
        return;
    }
    if (da->exists && da->dev.revoked_cert[0] &&
        strcmp(da->dev.revoked_cert, r->cert_sha256) == 0) {
        fail(r, 403, "this identity certificate of %s was revoked", da->base.id);
        return;
    }
    if (!enrollment_allows(da, r, l))
        return;
    if (!da->exists) {
        memset(d, 0, sizeof(*d));
        snprintf(d->udid, sizeof(d->udid), "%.63s", da->base.id);
        d->vshard = mdm_vshard(da->base.id);
        da->exists = true;
    }
    if (d->state != MDM_DEVICE_NEW) {
        /* Re-enrollment (e.g. after an erase): the old queue is closed for good; the
         * escrowed bootstrap token stays (it survives an erase). */
        mdm_info("device", "%s: re-enrollment %u -> %u", d->udid, d->enrollment, d->enrollment + 1);
        close_queue(da);
    }
    d->enrollment++;
    d->state = MDM_DEVICE_AUTHENTICATED;
    d->revoked_ms = 0; /* a revoked Mac that enrolls again is managed again */
    snprintf(d->topic, sizeof(d->topic), "%s", topic);
    copy_field(d->serial, sizeof(d->serial), r->msg, "SerialNumber");
    copy_field(d->model, sizeof(d->model), r->msg, "Model");
    copy_field(d->model_name, sizeof(d->model_name), r->msg, "ModelName");
    copy_field(d->product_name, sizeof(d->product_name), r->msg, "ProductName");
    copy_field(d->os_version, sizeof(d->os_version), r->msg, "OSVersion");
    copy_field(d->build_version, sizeof(d->build_version), r->msg, "BuildVersion");
    copy_field(d->device_name, sizeof(d->device_name), r->msg, "DeviceName");
    snprintf(d->cert_sha256, sizeof(d->cert_sha256), "%s", r->cert_sha256);
    d->push_token_len = 0;
    d->push_magic[0] = '\0';
    d->authenticated_ms = mdm_wall_ms();
    d->enroll_id[0] = '\0';
    if (l->status == 0) {
        snprintf(d->enroll_id, sizeof(d->enroll_id), "%s", l->e.id);
        if (!l->e.completed_ms) { /* the enrollment is complete: this Mac, this certificate */
            mdm_enrollment_t e = l->e;
            snprintf(e.udid, sizeof(e.udid), "%s", d->udid);
            snprintf(e.cert_sha256, sizeof(e.cert_sha256), "%s", r->cert_sha256);
            e.completed_ms = d->authenticated_ms;
            mdm_store_put_enrollment(batch(da), &e);
            mdm_info("device", "%s: enrollment %s completed (user %s)", d->udid, e.id,
                     e.user_name);
        }
    }
    r->status = 200;
}

static int seal_secret(struct device_actor *da, const char *name, const uint8_t *data,
                       size_t len, mdm_buf_t *out)
{
    char aad[MDM_UDID_MAX + 32];
    int n = snprintf(aad, sizeof(aad), "%s:%s", name, da->base.id);
    return mdm_seal(opts.secrets_key, aad, (size_t)n, data, len, out);
}

static mdm_user_channel_t *find_user(struct device_actor *da, const char *user_id)
{
    for (unsigned i = 0; i < da->n_users; i++)
        if (strcmp(da->users[i].user_id, user_id) == 0)
            return &da->users[i];
    return NULL;
}

/* TokenUpdate of a user channel (r->channel is its UserID): where its pushes go. */
static void on_user_token_update(struct device_actor *da, mdm_dev_req_t *r)
{
    const uint8_t *token = NULL;
    size_t token_len = 0;
    const char *magic = dict_string(r->msg, "PushMagic");
    mdm_user_channel_t *u = find_user(da, r->channel);
    if (mdm_plist_get_data(r->msg, "Token", &token, &token_len) != 0 || token_len == 0 ||
        token_len > sizeof(u->push_token) || !magic || strlen(magic) >= sizeof(u->push_magic)) {
        fail(r, 400, "TokenUpdate needs Token (data, 1-%zu bytes) and PushMagic",
             sizeof(u->push_token));
        return;
    }
    if (da->dev.state != MDM_DEVICE_ENROLLED) {
        fail(r, 403, "device %s is not enrolled: user channels come after the device's "
                     "TokenUpdate", da->base.id);
        return;
    }
    if (!u) {
        if (!da->users && !(da->users = calloc(USER_CHANNELS_MAX, sizeof(*da->users)))) {
            fail(r, 503, "out of memory");
            return;
        }
        if (da->n_users >= USER_CHANNELS_MAX) {
            fail(r, 403, "device %s has %d user channels, the most this server keeps",
                 da->base.id, USER_CHANNELS_MAX);
            return;
        }
        u = &da->users[da->n_users++];
        memset(u, 0, sizeof(*u));
        snprintf(u->udid, sizeof(u->udid), "%.63s", da->base.id);
        snprintf(u->user_id, sizeof(u->user_id), "%s", r->channel);
    }
    copy_field(u->short_name, sizeof(u->short_name), r->msg, "UserShortName");
    copy_field(u->long_name, sizeof(u->long_name), r->msg, "UserLongName");
    memcpy(u->push_token, token, token_len);
    u->push_token_len = (uint16_t)token_len;
    snprintf(u->push_magic, sizeof(u->push_magic), "%s", magic);
    u->push_token_invalid = false;
    u->updated_ms = mdm_wall_ms();
    mdm_store_put_user_channel(batch(da), u);
    r->status = 200;
}

static void on_token_update(struct device_actor *da, mdm_dev_req_t *r)
{
    mdm_device_t *d = &da->dev;
    if (r->channel[0]) {
        on_user_token_update(da, r);
        return;
    }
    const uint8_t *token = NULL;
    size_t token_len = 0;
    const char *magic = dict_string(r->msg, "PushMagic");
    if (mdm_plist_get_data(r->msg, "Token", &token, &token_len) != 0 || token_len == 0 ||
        token_len > sizeof(d->push_token) || !magic) {
        fail(r, 400, "TokenUpdate needs Token (data, 1-%zu bytes) and PushMagic",
             sizeof(d->push_token));
        return;
    }
    if (d->state == MDM_DEVICE_CHECKED_OUT) {
        fail(r, 403, "device %s checked out; it must enroll again", d->udid);
        return;
    }
    memcpy(d->push_token, token, token_len);
    d->push_token_len = (uint16_t)token_len;
    d->push_token_invalid = false;
    snprintf(d->push_magic, sizeof(d->push_magic), "%s", magic);
    bool awaiting = false;
    if (mdm_plist_get_bool(r->msg, "AwaitingConfiguration", &awaiting) == 0)
        d->awaiting_configuration = awaiting;
    const uint8_t *unlock = NULL;
    size_t unlock_len = 0;
    if (mdm_plist_get_data(r->msg, "UnlockToken", &unlock, &unlock_len) == 0 && unlock_len) {
        mdm_buf_t sealed;
        mdm_buf_init(&sealed, 0);
        if (seal_secret(da, "unlock", unlock, unlock_len, &sealed) == 0)
            mdm_store_put_secret(batch(da), d->udid, "unlock", mdm_buf_head(&sealed), sealed.len);
        mdm_buf_dispose(&sealed);
    }
    if (d->state == MDM_DEVICE_AUTHENTICATED) {
        d->state = MDM_DEVICE_ENROLLED;
        d->enrolled_ms = mdm_wall_ms();
        mdm_info("device", "%s: enrolled (enrollment %u)", d->udid, d->enrollment);
        if (opts.on_enrolled)
            opts.on_enrolled(mdm_actor_shard(&da->base), d->udid);
    }
    r->status = 200;
}

/* Bootstrap tokens are escrowed only for Macs enrolled through Automated Device Enrollment
 * (supervised) that run macOS 11 or later. */
static bool bootstrap_allowed(const mdm_device_t *d)
{
    return d->ade && atoi(d->os_version) >= 11;
}

static void on_set_bootstrap(struct device_actor *da, mdm_dev_req_t *r)
{
    if (!bootstrap_allowed(&da->dev)) {
        fail(r, 403, "bootstrap token escrow is offered only to Macs enrolled through Automated "
                     "Device Enrollment on macOS 11 or later");
        return;
    }
    const uint8_t *tok = NULL;
    size_t len = 0;
    mdm_buf_reset(&da->bootstrap);
    if (mdm_plist_get_data(r->msg, "BootstrapToken", &tok, &len) == 0 && len > 0) {
        if (seal_secret(da, "bootstrap", tok, len, &da->bootstrap) != 0) {
            fail(r, 500, "cannot seal the bootstrap token");
            return;
        }
        mdm_store_put_secret(batch(da), da->dev.udid, "bootstrap", mdm_buf_head(&da->bootstrap),
                             da->bootstrap.len);
    } else {
        mdm_store_delete_secret(batch(da), da->dev.udid, "bootstrap");
    }
    r->status = 200;
}

static void on_get_bootstrap(struct device_actor *da, mdm_dev_req_t *r)
{
    plist_t dict = plist_new_dict();
    if (da->bootstrap.len && bootstrap_allowed(&da->dev)) {
        char aad[MDM_UDID_MAX + 32];
        int n = snprintf(aad, sizeof(aad), "bootstrap:%s", da->base.id);
        mdm_buf_t plain;
        mdm_buf_init(&plain, 0);
        if (mdm_unseal(opts.secrets_key, aad, (size_t)n, mdm_buf_head(&da->bootstrap),
                       da->bootstrap.len, &plain) != 0) {
            mdm_buf_dispose(&plain);
            plist_free(dict);
            fail(r, 500, "the escrowed bootstrap token cannot be unsealed");
            return;
        }
        plist_dict_set_item(dict, "BootstrapToken",
                            plist_new_data((const char *)mdm_buf_head(&plain), plain.len));
        memset(mdm_buf_head(&plain), 0, plain.len);
        mdm_buf_dispose(&plain);
    }
    if (mdm_plist_to_xml(dict, &r->reply) != 0)
        fail(r, 500, "cannot encode the reply");
    else {
        r->status = 200;
        r->reply_type = "application/xml";
    }
    plist_free(dict);
}

static void handle_checkin(struct device_actor *da, mdm_dev_req_t *r,
                           const struct enroll_lookup *lookup)
{
    const char *type = dict_string(r->msg, "MessageType");
    if (!type) {
        fail(r, 400, "check-in without MessageType");
        return;
    }
    if (strcmp(type, "Authenticate") == 0) {
        on_authenticate(da, r, lookup);
    } else if (strcmp(type, "UserAuthenticate") == 0) {
        /* 410 tells the Mac this server does not manage that user. */
        if (!opts.user_auth_digest) {
            fail(r, 410, "user channel authentication is not offered by this server");
            return;
        }
        plist_t dict = plist_new_dict();
        plist_dict_set_item(dict, "DigestChallenge", plist_new_string(""));
        int ret = mdm_plist_to_xml(dict, &r->reply);
        plist_free(dict);
        if (ret != 0) {
            fail(r, 500, "cannot encode the reply");
            return;
        }
        r->status = 200;
        r->reply_type = "application/xml";
        return;
    } else if (strcmp(type, "CheckOut") == 0 && da->exists &&
               da->dev.state == MDM_DEVICE_REVOKED &&
               strcmp(da->dev.cert_sha256, r->cert_sha256) == 0) {
        /* The revoked Mac removed its MDM profile and says goodbye: nothing left to do. */
        r->status = 200;
        return;
    } else if (!identity_matches(da, r)) {
        return;
    } else if (strcmp(type, "TokenUpdate") == 0) {
        on_token_update(da, r);
    } else if (strcmp(type, "CheckOut") == 0) {
        close_queue(da);
        da->dev.state = da->dev.revoked_ms ? MDM_DEVICE_REVOKED : MDM_DEVICE_CHECKED_OUT;
        da->dev.checked_out_ms = mdm_wall_ms();
        mdm_info("device", "%s: checked out%s", da->dev.udid,
                 da->dev.revoked_ms ? " (revoked)" : "");
        r->status = 200;
    } else if (strcmp(type, "SetBootstrapToken") == 0) {
        on_set_bootstrap(da, r);
    } else if (strcmp(type, "GetBootstrapToken") == 0) {
        on_get_bootstrap(da, r);
    } else if (strcmp(type, "DeclarativeManagement") == 0) {
        fail(r, 404, "declarative management is not enabled on this server");
        return;
    } else if (strcmp(type, "GetToken") == 0) {
        fail(r, 404, "this server offers no token services (GetToken)");
        return;
    } else {
        fail(r, 400, "unknown check-in MessageType '%.64s'", type);
        return;
    }
    if (r->status == 200) {
        da->dev.last_seen_ms = mdm_wall_ms();
        save_device(da);
    }
}

/* ---- command channel ---- */

static bool expired(const struct qentry *q, uint64_t now)
{
    return q->e.expires_ms && q->e.expires_ms <= now && q->e.status != MDM_CMD_SENT;
}

/* The command to hand out on channel: the one in flight, else the oldest queued. */
static struct qentry *next_command(struct device_actor *da, const char *channel)
{
    uint64_t now = mdm_wall_ms();
    struct qentry *q = da->queue;
    while (q) {
        struct qentry *next = q->next;
        if (strcmp(q->e.channel, channel) == 0) {
            if (expired(q, now))
                retire_entry(da, q, MDM_CMD_EXPIRED, NULL, 0);
            else if (q->e.status == MDM_CMD_SENT)
                return q;
        }
        q = next;
    }
    for (q = da->queue; q; q = q->next)
        if (strcmp(q->e.channel, channel) == 0 && q->e.status == MDM_CMD_QUEUED)
            return q;
    return NULL;
}

static struct qentry *find_entry(struct device_actor *da, const char *channel, const char *uuid)
{
    for (struct qentry *q = da->queue; q; q = q->next)
        if (strcmp(q->e.uuid, uuid) == 0 && strcmp(q->e.channel, channel) == 0)
            return q;
    return NULL;
}

static bool recently_done(struct device_actor *da, const char *uuid)
{
    for (unsigned i = 0; i < RECENT_DONE; i++)
        if (strcmp(da->recent_done[i], uuid) == 0)
            return true;
    return false;
}

static void hand_out_next(struct device_actor *da, mdm_dev_req_t *r)
{
    struct qentry *q = next_command(da, r->channel);
    r->status = 200;
    if (!q)
        return; /* empty 200: nothing to do */
    if (!q->cmd) {
        /* The command record is gone (should not happen): never send an empty command. */
        retire_entry(da, q, MDM_CMD_ERROR, NULL, 0);
        hand_out_next(da, r);
        return;
    }
    if (q->e.status != MDM_CMD_SENT)
        set_entry_status(da, q, MDM_CMD_SENT);
    if (mdm_buf_append(&r->reply, q->cmd->plist, q->cmd->len) != 0) {
        fail(r, 503, "out of memory");
        return;
    }
    r->reply_type = "application/xml";
}

static void refuse_not_in_flight(struct device_actor *da, mdm_dev_req_t *r, const char *status,
                                 const char *uuid)
{
    mdm_warn("device", "%s: response %s for command %.64s, which is not in flight",
             da->dev.udid, status, uuid);
    fail(r, 400, "command %.64s is not in flight on this channel", uuid);
}

/* A response for a command no longer in the queue, looked up in the stored history (the
 * answer to an earlier copy of it may have been lost in a crash, or the actor reloaded). */
struct answered_check {
    struct device_actor *da;
    mdm_dev_req_t *r;
    char uuid[MDM_UUID_MAX + 1];
    int found_status; /* -1: no final result stored */
    mdm_shard_msg_t msg;
};

static void finish_connect(struct device_actor *da, mdm_dev_req_t *r);

static void on_answered_checked(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct answered_check *c = MDM_CONTAINER_OF(m, struct answered_check, msg);
    const char *status = NULL;
    if (mdm_plist_get_string(c->r->msg, "Status", &status) != 0)
        status = "?";
    if (c->found_status >= 0)
        hand_out_next(c->da, c->r); /* answered before: recorded once */
    else
        refuse_not_in_flight(c->da, c->r, status, c->uuid);
    finish_connect(c->da, c->r);
    free(c);
}

static void answered_job(mdm_store_t *s, void *arg)
{
    struct answered_check *c = arg;
    mdm_result_t res;
    c->found_status = -1;
    if (mdm_store_get_result(s, c->da->base.id, c->uuid, &res) == 0) {
        switch (res.status) {
        case MDM_CMD_ACKNOWLEDGED:
        case MDM_CMD_ERROR:
        case MDM_CMD_FORMAT_ERROR:
            c->found_status = res.status;
            break;
        default:
            break;
        }
        mdm_result_dispose(&res);
    }
    c->msg.fn = on_answered_checked;
    mdm_shard_post(mdm_actor_shard(&c->da->base), &c->msg);
}

/* Starts the history lookup; returns true when the actor must wait for it. */
static bool check_answered_before(struct device_actor *da, mdm_dev_req_t *r, const char *uuid)
{
    struct answered_check *c = calloc(1, sizeof(*c));
    if (!c) {
        fail(r, 503, "out of memory");
        return false;
    }
    c->da = da;
    c->r = r;
    snprintf(c->uuid, sizeof(c->uuid), "%s", uuid);
    if (mdm_store_run_async(mdm_actors_store(mdm_actors_of(&da->base)), answered_job, c) != 0) {
        free(c);
        fail(r, 503, "storage is shutting down");
        return false;
    }
    return true;
}

/* Handles a command-channel request; returns true when it finishes later (history lookup). */
static bool handle_connect(struct device_actor *da, mdm_dev_req_t *r)
{
    if (!identity_matches(da, r))
        return false;
    if (da->dev.state != MDM_DEVICE_ENROLLED) {
        fail(r, 403, "device %s is not enrolled", da->dev.udid);
        return false;
    }
    const char *status = dict_string(r->msg, "Status");
    if (!status) {
        fail(r, 400, "command response without Status");
        return false;
    }
    da->dev.last_seen_ms = mdm_wall_ms();
    if (strcmp(status, "Idle") == 0) {
        /* NotNow'd commands become eligible again: the Mac polls with Idle when it can. */
        for (struct qentry *q = da->queue; q; q = q->next)
            if (q->e.status == MDM_CMD_NOTNOW && strcmp(q->e.channel, r->channel) == 0)
                set_entry_status(da, q, MDM_CMD_QUEUED);
        hand_out_next(da, r);
        return false;
    }
    enum mdm_command_status outcome;
    if (strcmp(status, "Acknowledged") == 0)
        outcome = MDM_CMD_ACKNOWLEDGED;
    else if (strcmp(status, "Error") == 0)
        outcome = MDM_CMD_ERROR;
    else if (strcmp(status, "CommandFormatError") == 0)
        outcome = MDM_CMD_FORMAT_ERROR;
    else if (strcmp(status, "NotNow") == 0)
        outcome = MDM_CMD_NOTNOW;
    else {
        fail(r, 400, "unknown Status '%.32s'", status);
        return false;
    }
    const char *uuid = dict_string(r->msg, "CommandUUID");
    if (!uuid) {
        fail(r, 400, "Status %s without CommandUUID", status);
        return false;
    }
    struct qentry *q = find_entry(da, r->channel, uuid);
    if (q && q->e.status == MDM_CMD_NOTNOW && outcome == MDM_CMD_NOTNOW) {
        hand_out_next(da, r); /* the same NotNow again (its reply was lost): nothing new */
        return false;
    }
    if (!q || q->e.status != MDM_CMD_SENT) {
        if (!q && recently_done(da, uuid)) {
            hand_out_next(da, r); /* the same response again: recorded once */
            return false;
        }
        if (!q)
            return check_answered_before(da, r, uuid);
        refuse_not_in_flight(da, r, status, uuid);
        return false;
    }
    if (outcome == MDM_CMD_NOTNOW) {
        set_entry_status(da, q, MDM_CMD_NOTNOW);
        /* Hand out the next command that was not NotNow'd, if any (next_command skips the
         * NotNow'd one: nothing is SENT on this channel any more). */
        hand_out_next(da, r);
        return false;
    }
    if (opts.on_answered)
        opts.on_answered(mdm_actor_shard(&da->base), da->dev.udid, q->e.uuid, (int)outcome,
                         r->body, r->body_len);
    bool revoked = outcome == MDM_CMD_ACKNOWLEDGED && da->dev.revoked_ms &&
                   strncmp(q->e.uuid, MDM_DEV_REVOKE_PREFIX, strlen(MDM_DEV_REVOKE_PREFIX)) == 0;
    retire_entry(da, q, outcome, r->body, r->body_len);
    if (revoked) {
        /* The Mac removed its MDM profile: nothing more goes out, its identity is refused. */
        close_queue(da);
        da->dev.state = MDM_DEVICE_REVOKED;
        save_device(da);
        mdm_info("device", "%s: revoked (the MDM profile was removed)", da->dev.udid);
        hand_out_next(da, r);
        return false;
    }
    hand_out_next(da, r);
    return false;
}

/* ---- pushes ---- */

static bool commands_waiting(const struct device_actor *da, const char *channel)
{
    for (const struct qentry *q = da->queue; q; q = q->next)
        if (q->e.status == MDM_CMD_QUEUED && strcmp(q->e.channel, channel) == 0)
            return true;
    return false;
}

/* Where a push for channel ("" = the device) goes; false when it has no usable token. */
static bool push_target(struct device_actor *da, const char *channel, const uint8_t **token,
                        size_t *len, const char **magic)
{
    const mdm_device_t *d = &da->dev;
    if (!da->exists || d->state != MDM_DEVICE_ENROLLED)
        return false;
    if (channel[0]) {
        const mdm_user_channel_t *u = find_user(da, channel);
        if (!u || !u->push_token_len || u->push_token_invalid || !u->push_magic[0])
            return false;
        *token = u->push_token, *len = u->push_token_len, *magic = u->push_magic;
        return true;
    }
    if (!d->push_token_len || d->push_token_invalid || !d->push_magic[0])
        return false;
    *token = d->push_token, *len = d->push_token_len, *magic = d->push_magic;
    return true;
}

/*
 * Asks the shard's pusher to wake channel ("" = the device channel, else a user channel), at
 * most once per device per coalescing window: inside one, a single wake-up is set for the
 * window's end (which pushes every channel whose commands still wait).
 * Returns 0 (pushed or scheduled), 409 (no usable token) or 503 (the pusher is full or off).
 */
static int request_push(struct device_actor *da, const char *channel)
{
    const uint8_t *token;
    size_t len;
    const char *magic;
    if (!push_target(da, channel, &token, &len, &magic))
        return 409;
    if (!mdm_apns_enabled())
        return 503;
    uint64_t now = mdm_now_ms(), window = mdm_apns_coalesce_ms();
    mdm_shard_t *sh = mdm_actor_shard(&da->base);
    if (da->push_requested_ms && now - da->push_requested_ms < window) {
        if (!da->push_wake_armed &&
            mdm_apns_wake_later(sh, da->base.id, da->push_requested_ms + window - now) == 0)
            da->push_wake_armed = true;
        return da->push_wake_armed ? 0 : 503;
    }
    if (mdm_apns_push(sh, da->base.id, token, len, magic) != 0)
        return 503;
    da->push_requested_ms = now;
    return 0;
}

/* End of a coalescing window: push every channel that still has commands waiting (one new
 * window for all of them). */
static void push_waiting_channels(struct device_actor *da)
{
    da->push_wake_armed = false;
    uint64_t now = mdm_now_ms();
    mdm_shard_t *sh = mdm_actor_shard(&da->base);
    for (unsigned i = 0; i <= da->n_users; i++) {
        const char *channel = i < da->n_users ? da->users[i].user_id : "";
        const uint8_t *token;
        size_t len;
        const char *magic;
        if (commands_waiting(da, channel) && push_target(da, channel, &token, &len, &magic) &&
            mdm_apns_push(sh, da->base.id, token, len, magic) == 0)
            da->push_requested_ms = now;
    }
}

static void handle_push(struct device_actor *da, mdm_dev_req_t *r)
{
    if (r->wake) {
        push_waiting_channels(da);
        r->status = 200;
        return;
    }
    if (!da->exists) {
        fail(r, 404, "no device %s", da->base.id);
        return;
    }
    int st = request_push(da, "");
    if (st == 409)
        fail(r, 409, "device %s has no valid push token (not enrolled, no TokenUpdate yet, or "
                     "APNs refused the token: it is used again after the next TokenUpdate)",
             da->base.id);
    else if (st != 0)
        fail(r, 503, "the pusher cannot take the push now");
    else
        r->status = 202;
}

/* The pusher's final outcome of a push, stored with the channel whose token it went to. */
static void handle_push_result(struct device_actor *da, mdm_dev_req_t *r)
{
    mdm_device_t *d = &da->dev;
    r->status = 200;
    if (!da->exists)
        return;
    bool invalid = r->push_status == 410 ||
                   (r->push_status == 400 && strcmp(r->push_reason, "BadDeviceToken") == 0);
    uint64_t now = mdm_wall_ms();
    if (r->push_token_len == d->push_token_len &&
        memcmp(r->push_token, d->push_token, d->push_token_len) == 0) {
        d->last_push_ms = now;
        d->last_push_status = (uint16_t)r->push_status;
        snprintf(d->last_push_reason, sizeof(d->last_push_reason), "%s", r->push_reason);
        d->push_token_invalid = d->push_token_invalid || invalid;
        save_device(da);
        return;
    }
    for (unsigned i = 0; i < da->n_users; i++) {
        mdm_user_channel_t *u = &da->users[i];
        if (r->push_token_len != u->push_token_len ||
            memcmp(r->push_token, u->push_token, u->push_token_len) != 0)
            continue;
        u->last_push_ms = now;
        u->last_push_status = (uint16_t)r->push_status;
        snprintf(u->last_push_reason, sizeof(u->last_push_reason), "%s", r->push_reason);
        u->push_token_invalid = u->push_token_invalid || invalid;
        mdm_store_put_user_channel(batch(da), u);
        return;
    }
    /* about a token the device no longer has */
}

/* ---- admin requests ---- */

static void handle_enqueue(struct device_actor *da, mdm_dev_req_t *r)
{
    if (!da->exists || da->dev.state == MDM_DEVICE_NEW) {
        fail(r, 404, "no device %s", da->base.id);
        return;
    }
    if (da->dev.state == MDM_DEVICE_CHECKED_OUT) {
        fail(r, 409, "device %s checked out; its queue is closed", da->base.id);
        return;
    }
    if (da->dev.state == MDM_DEVICE_REVOKED || da->dev.revoked_ms) {
        fail(r, 409, "device %s is revoked%s", da->base.id,
             da->dev.state == MDM_DEVICE_REVOKED ? "" : " (waiting for it to leave management)");
        return;
    }
    if (find_entry(da, r->channel, r->uuid)) {
        fail(r, 409, "command %s is already queued for %s", r->uuid, da->base.id);
        return;
    }
    if (da->queue_len >= opts.max_queue) {
        fail(r, 409, "the queue of %s is full (%u commands)", da->base.id, opts.max_queue);
        return;
    }
    struct qentry *q = calloc(1, sizeof(*q));
    if (!q) {
        fail(r, 503, "out of memory");
        return;
    }
    uint64_t now = mdm_wall_ms();
    snprintf(q->e.udid, sizeof(q->e.udid), "%.63s", da->base.id);
    snprintf(q->e.channel, sizeof(q->e.channel), "%s", r->channel);
    snprintf(q->e.uuid, sizeof(q->e.uuid), "%s", r->uuid);
    q->e.enrollment = da->dev.enrollment;
    q->e.status = MDM_CMD_QUEUED;
    q->e.enqueued_ms = now;
    q->e.updated_ms = now;
    q->e.expires_ms = opts.command_ttl_ms ? now + opts.command_ttl_ms : 0;
    memcpy(q->result.udid, q->e.udid, sizeof(q->result.udid));
    memcpy(q->result.uuid, q->e.uuid, sizeof(q->result.uuid));
    memcpy(q->result.channel, q->e.channel, sizeof(q->result.channel));
    q->cmd = blob_intern(r->uuid, r->plist, r->plist_len); /* takes the request's copy */
    r->plist = NULL;
    if (!q->cmd) {
        free(q);
        fail(r, 503, "out of memory");
        return;
    }
    /* Append at the tail. The stored key orders by enqueued_ms (then UUID), so keep it
     * strictly increasing per channel: two commands in one millisecond, or a wall clock that
     * stepped back, must not swap places when the queue is reloaded. */
    struct qentry **pp = &da->queue;
    while (*pp) {
        const mdm_queue_entry_t *e = &(*pp)->e;
        if (strcmp(e->channel, q->e.channel) == 0 && e->enqueued_ms >= q->e.enqueued_ms)
            q->e.enqueued_ms = e->enqueued_ms + 1;
        pp = &(*pp)->next;
    }
    *pp = q;
    da->queue_len++;
    mdm_store_put_queue_entry(batch(da), &q->e);
    record_event(da, q, MDM_CMD_QUEUED);
    r->status = 201;
    (void)request_push(da, q->e.channel); /* no token or no pusher: found at the next poll */
}

/* Revoke: the RemoveProfile of the enrollment profile goes out like any command; the identity
 * certificate is revoked at once for SCEP renewal, and refused for MDM once the Mac removed
 * its profile (acknowledgement or CheckOut). */
static void handle_revoke(struct device_actor *da, mdm_dev_req_t *r)
{
    mdm_device_t *d = &da->dev;
    if (!da->exists || d->state != MDM_DEVICE_ENROLLED) {
        fail(r, 409, "device %s is not enrolled (%s)", da->base.id,
             da->exists ? mdm_device_state_name(d->state) : "unknown");
        return;
    }
    if (d->revoked_ms) {
        fail(r, 409, "device %s is already being revoked", da->base.id);
        return;
    }
    handle_enqueue(da, r);
    if (r->status != 201)
        return;
    d->revoked_ms = mdm_wall_ms();
    snprintf(d->revoked_cert, sizeof(d->revoked_cert), "%s", d->cert_sha256);
    if (d->cert_sha256[0]) {
        mdm_revoked_cert_t rc = {.revoked_ms = d->revoked_ms};
        snprintf(rc.udid, sizeof(rc.udid), "%s", d->udid);
        mdm_store_put_revoked_cert(batch(da), d->cert_sha256, &rc);
    }
    save_device(da);
    mdm_info("device", "%s: revocation requested", d->udid);
}

static void handle_flags(struct device_actor *da, mdm_dev_req_t *r)
{
    if (!da->exists || da->dev.state == MDM_DEVICE_NEW) {
        fail(r, 404, "no device %s", da->base.id);
        return;
    }
    if (r->set_ade >= 0)
        da->dev.ade = r->set_ade == 1;
    if (r->set_suspended >= 0)
        da->dev.policies_suspended = r->set_suspended == 1;
    if (r->set_fv_escrowed >= 0)
        da->dev.fv_key_escrowed = r->set_fv_escrowed == 1;
    save_device(da);
    r->device = da->dev;
    r->status = 200;
}

static void handle_cancel(struct device_actor *da, mdm_dev_req_t *r)
{
    struct qentry *q = NULL;
    for (struct qentry *c = da->queue; c; c = c->next)
        if (strcmp(c->e.uuid, r->uuid) == 0)
            q = c;
    if (!q) {
        fail(r, 404, "command %s is not queued for %s", r->uuid, da->base.id);
        return;
    }
    if (q->e.status == MDM_CMD_SENT) {
        fail(r, 409, "command %s was already sent to %s", r->uuid, da->base.id);
        return;
    }
    retire_entry(da, q, MDM_CMD_CANCELLED, NULL, 0);
    r->status = 200;
}

struct purge {
    struct device_actor *da;
    mdm_dev_req_t *r;
    mdm_batch_t *b;
    int status;
    mdm_shard_msg_t msg;
    mdm_commit_waiter_t waiter;
};

static void on_purged(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct purge *p = MDM_CONTAINER_OF(m, struct purge, msg);
    if (p->status != 0)
        fail(p->r, 503, "storage failure while deleting %s", p->da->base.id);
    else
        p->r->status = 200;
    mdm_batch_free(p->b);
    answer(p->r);
    mdm_actor_done(&p->da->base); /* the actor took nothing else meanwhile */
    free(p);
}

static void on_purge_committed(void *arg, int status)
{
    struct purge *p = arg;
    p->status = status;
    p->msg.fn = on_purged;
    mdm_shard_post(mdm_actor_shard(&p->da->base), &p->msg);
}

static void purge_job(mdm_store_t *s, void *arg)
{
    struct purge *p = arg;
    int ret = mdm_store_purge_device(s, p->b, p->da->base.id);
    if (ret == 0)
        ret = mdm_store_commit_async(s, p->b, on_purge_committed, p);
    if (ret != 0)
        on_purge_committed(p, ret);
}

static void on_prior_writes_durable(mdm_commit_waiter_t *w, int status)
{
    struct purge *p = MDM_CONTAINER_OF(w, struct purge, waiter);
    p->status = status;
    if (status == 0 &&
        mdm_store_run_async(mdm_actors_store(mdm_actors_of(&p->da->base)), purge_job, p) == 0)
        return;
    p->status = status ? status : -ESHUTDOWN;
    on_purged(mdm_actor_shard(&p->da->base), &p->msg);
}

/* Deletes everything of the device. Returns true when the actor must stay busy. */
static bool handle_delete(struct device_actor *da, mdm_dev_req_t *r)
{
    if (!da->exists) {
        fail(r, 404, "no device %s", da->base.id);
        return false;
    }
    struct purge *p = calloc(1, sizeof(*p));
    if (!p || !(p->b = mdm_batch_new())) {
        free(p);
        fail(r, 503, "out of memory");
        return false;
    }
    p->da = da;
    p->r = r;
    device_evict(&da->base); /* drop the queue and secrets from memory */
    mdm_buf_init(&da->bootstrap, 0);
    da->queue_len = 0;
    da->exists = false;
    memset(&da->dev, 0, sizeof(da->dev));
    /* The purge lists what is on disk: start it only once this device's earlier writes (still
     * in the shard's batches) are durable, or they would land after it and bring it back. */
    p->waiter.fn = on_prior_writes_durable;
    mdm_actors_after_commit(mdm_actor_shard(&da->base), &p->waiter);
    return true;
}

/* Saves last_seen and any state change of a command-channel request, answers it after the
 * commit and takes the next message. */
static void finish_connect(struct device_actor *da, mdm_dev_req_t *r)
{
    if (r->status == 200)
        save_device(da);
    answer_after_commit(da, r);
    mdm_actor_done(&da->base);
}

/* A request of an enrolled Mac with another certificate than its own: when that certificate
 * is the one of an identity renewal made for this Mac (not used yet), the Mac moves to it and
 * the old certificate stops working. */
static void adopt_renewal(struct device_actor *da, const struct enroll_lookup *l)
{
    mdm_device_t *d = &da->dev;
    if (l->status != 0 || l->e.method != MDM_ENROLL_RENEWAL || l->e.completed_ms ||
        strcmp(l->e.udid, d->udid) != 0 || d->state != MDM_DEVICE_ENROLLED)
        return;
    mdm_enrollment_t e = l->e;
    snprintf(e.cert_sha256, sizeof(e.cert_sha256), "%s", l->r->cert_sha256);
    e.completed_ms = mdm_wall_ms();
    mdm_store_put_enrollment(batch(da), &e);
    mdm_info("device", "%s: identity renewed (enrollment %s, certificate %.16s...; the previous "
                       "one %.16s... is no longer accepted)", d->udid, e.id, l->r->cert_sha256,
             d->cert_sha256);
    snprintf(d->cert_sha256, sizeof(d->cert_sha256), "%s", l->r->cert_sha256);
    snprintf(d->enroll_id, sizeof(d->enroll_id), "%s", e.id);
    save_device(da);
}

static void on_enrollment_looked_up(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct enroll_lookup *l = MDM_CONTAINER_OF(m, struct enroll_lookup, msg);
    struct device_actor *da = l->da;
    mdm_dev_req_t *r = l->r;
    const char *type = r->kind == MDM_DEV_CHECKIN ? dict_string(r->msg, "MessageType") : NULL;
    bool authenticate = type && strcmp(type, "Authenticate") == 0;
    if (!authenticate)
        adopt_renewal(da, l);
    if (r->kind == MDM_DEV_CONNECT) {
        free(l);
        if (!handle_connect(da, r))
            finish_connect(da, r);
        return;
    }
    handle_checkin(da, r, authenticate ? l : NULL);
    answer_after_commit(da, r);
    free(l);
    mdm_actor_done(&da->base);
}

static void enrollment_lookup_job(mdm_store_t *s, void *arg)
{
    struct enroll_lookup *l = arg;
    char id[MDM_ENROLL_ID_LEN + 1];
    l->status = mdm_store_get_enrollment_cert(s, l->r->cert_sha256, id);
    if (l->status == -EINVAL)
        l->status = MDM_ENOTFOUND; /* not a fingerprint mdmd could have indexed */
    if (l->status == 0)
        l->status = mdm_store_get_enrollment(s, id, &l->e);
    l->msg.fn = on_enrollment_looked_up;
    mdm_shard_post(mdm_actor_shard(&l->da->base), &l->msg);
}

/* An Authenticate, or a request of an enrolled Mac with another certificate than its own,
 * waits for the enrollment record of its certificate; returns true when the lookup was
 * started (the request finishes in on_enrollment_looked_up). */
static bool start_enrollment_lookup(struct device_actor *da, mdm_dev_req_t *r)
{
    const char *type = r->kind == MDM_DEV_CHECKIN ? dict_string(r->msg, "MessageType") : NULL;
    bool authenticate = type && strcmp(type, "Authenticate") == 0;
    /* Another certificate than the bound one: maybe the Mac's renewed identity. */
    bool other_cert = da->exists && da->dev.state == MDM_DEVICE_ENROLLED && r->cert_sha256[0] &&
                      strcmp(r->cert_sha256, da->dev.cert_sha256) != 0;
    if (!authenticate && !other_cert)
        return false;
    struct enroll_lookup *l = calloc(1, sizeof(*l));
    if (!l) {
        fail(r, 503, "out of memory");
        return false;
    }
    l->da = da;
    l->r = r;
    if (mdm_store_run_async(mdm_actors_store(mdm_actors_of(&da->base)), enrollment_lookup_job,
                            l) != 0) {
        free(l);
        fail(r, 503, "storage is shutting down");
        return false;
    }
    return true;
}

static void device_receive(mdm_actor_t *a, mdm_actor_msg_t *m)
{
    struct device_actor *da = (struct device_actor *)a;
    mdm_dev_req_t *r = (mdm_dev_req_t *)m;
    switch (r->kind) {
    case MDM_DEV_CHECKIN:
        if (start_enrollment_lookup(da, r))
            return; /* handled when the enrollment record is back */
        if (r->status == 0)
            handle_checkin(da, r, NULL);
        break;
    case MDM_DEV_CONNECT:
        if (start_enrollment_lookup(da, r))
            return; /* a certificate to look up first (renewal) */
        if (r->status != 0) {
            finish_connect(da, r);
            return;
        }
        if (handle_connect(da, r))
            return; /* finish_connect runs when the history lookup is back */
        finish_connect(da, r);
        return;
    case MDM_DEV_ENQUEUE:
        handle_enqueue(da, r);
        break;
    case MDM_DEV_CANCEL:
        handle_cancel(da, r);
        break;
    case MDM_DEV_REVOKE:
        handle_revoke(da, r);
        break;
    case MDM_DEV_FLAGS:
        handle_flags(da, r);
        break;
    case MDM_DEV_GET:
        if (!da->exists) {
            fail(r, 404, "no device %s", da->base.id);
        } else {
            r->device = da->dev;
            r->has_bootstrap = da->bootstrap.len > 0;
            r->queued = da->queue_len;
            r->push_requested_ms = da->push_requested_ms
                                       ? mdm_wall_ms() - (mdm_now_ms() - da->push_requested_ms)
                                       : 0;
            if (da->n_users && (r->users = malloc(da->n_users * sizeof(*r->users)))) {
                memcpy(r->users, da->users, da->n_users * sizeof(*r->users));
                r->n_users = da->n_users;
            }
            r->status = 200;
        }
        break; /* answered once what it shows is durable */
    case MDM_DEV_PUSH:
        handle_push(da, r);
        break;
    case MDM_DEV_PUSH_RESULT:
        handle_push_result(da, r);
        break;
    case MDM_DEV_DELETE:
        if (handle_delete(da, r))
            return; /* answered and done once the purge is durable */
        break;
    }
    answer_after_commit(da, r);
    mdm_actor_done(a);
}
