/*
 * Admin API v1, the administrator's side of enrollment: local users, invitations and the
 * enrollment records (docs/api.md). Dispatched by api.c for paths under /api/v1/users,
 * /api/v1/invitations and /api/v1/enrollments, after the API key was checked:
 *
 *   GET    users                      list, paged by name (storage job)
 *   POST   users                      create                                  user.create
 *   GET    users/{name}               one (storage job); never the password hash
 *   PATCH  users/{name}               password, disabled, display_name, ...   user.update
 *   DELETE users/{name}                                                       user.delete
 *   GET    invitations                list, paged by id; ?user= ?status=
 *   POST   invitations                create; answers the PIN once            invitation.create
 *   GET    invitations/{id}
 *   POST   invitations/{id}/revoke    pending -> revoked                      invitation.revoke
 *   GET    enrollments                list, paged by id; ?user=
 *   GET    enrollments/{id}
 *
 * Path segments are percent-decoded (user names may hold '@').
 *
 * Mutations: the request is checked on the shard; the record's key is claimed in a small
 * process-wide table (a second change to the same user or invitation while one is in flight
 * gets 409: the read below would not see the first one's write before it is committed); a
 * job then reads the current record, and hashes the password or PIN with argon2id (a few
 * hundred milliseconds) on the enrollment worker pool (mdm_enroll_run), or runs on a storage
 * worker when there is nothing to hash; back on the shard, the record goes into the shard's
 * open batch, the call ends with its audit event in the same batch, and the answer waits for
 * that commit (api_internal.h). The claim is released with the call.
 *
 * Secrets: passwords and PINs live in a job only until hashed, then are wiped; only argon2id
 * strings are stored; a PIN is answered once, by the POST that made it; audit events and
 * logs never hold either.
 *
 * Threads: handlers and answers on the shard of the admin connection; jobs on storage or
 * enrollment workers, which post their results back to that shard.
 */
#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "actors/api_internal.h"
#include "actors/auth.h"
#include "actors/enroll.h"
#include "core/crypto.h"
#include "core/log.h"
#include "storage/enroll.h"

#define SEGS_MAX 3
#define SEG_MAX 63                 /* decoded bytes of a path segment */
#define INVITE_PIN_DIGITS 6
#define INVITE_HOURS_DEFAULT 72
#define INVITE_HOURS_MAX 720       /* 30 days */
#define DISPLAY_NAME_MAX 127       /* bytes; the record's field holds 128 with the NUL */
#define EMAIL_MAX 255

/* ------------------------------------------------------------------------------------------
 * Pure helpers
 */

enum mdm_invite_status mdm_api_invitation_status(const mdm_invitation_t *inv, uint64_t now_ms)
{
    enum mdm_invite_status s = (enum mdm_invite_status)inv->status;
    if (s == MDM_INVITE_PENDING && now_ms >= inv->expires_ms)
        return MDM_INVITE_EXPIRED;
    return s;
}

const char *mdm_api_enrollment_status(const mdm_enrollment_t *e, uint64_t now_ms)
{
    if (e->completed_ms != 0 || e->udid[0])
        return "completed";
    return now_ms < e->challenge_expires_ms ? "pending" : "expired";
}

static bool mode_uses_pin(enum mdm_invite_mode m)
{
    return m == MDM_INVITE_PIN || m == MDM_INVITE_PASSWORD_AND_PIN;
}

static bool mode_uses_password(enum mdm_invite_mode m)
{
    return m == MDM_INVITE_PASSWORD || m == MDM_INVITE_PASSWORD_AND_PIN;
}

/* Text an administrator types (display names, e-mail): at most max bytes, no control bytes. */
static bool text_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* RFC 3339 UTC time of ms ("2024-05-01T09:00:00Z"). */
static void fmt_rfc3339(uint64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* 6 uniformly random decimal digits from the CSPRNG. Returns 0 or MDM_ECRYPTO. */
static int make_pin(char pin[INVITE_PIN_DIGITS + 1])
{
    for (;;) {
        uint32_t v;
        int ret = mdm_random_bytes(&v, sizeof(v));
        if (ret != 0)
            return ret;
        if (v < 4294000000u) { /* a multiple of 10^6: no modulo bias */
            snprintf(pin, INVITE_PIN_DIGITS + 1, "%06u", (unsigned)(v % 1000000u));
            return 0;
        }
    }
}

/* argon2id cost of new hashes: [enroll] argon2_memory_kib and argon2_iterations, like the
 * hashes the enrollment service makes and checks. */
static const struct mdm_argon2_params *argon2_params(void) { return mdm_enroll_argon2_params(); }

/* ------------------------------------------------------------------------------------------
 * JSON of records (any thread)
 */

/* A JSON array of n group names; NULL when out of memory. */
static json_t *groups_json(unsigned n, const char (*groups)[MDM_GROUP_NAME_MAX + 1])
{
    json_t *a = json_array();
    for (unsigned i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(groups[i]));
    return a;
}

static json_t *user_json(const mdm_local_user_t *u)
{
    json_t *o = json_object();
    json_t *groups = groups_json(u->n_groups, u->groups);
    if (!o || !groups) {
        json_decref(o);
        json_decref(groups);
        return NULL;
    }
    mdm_api_set_str(o, "name", u->name);
    mdm_api_set_str(o, "display_name", u->display_name);
    mdm_api_set_str(o, "email", u->email);
    json_object_set_new(o, "groups", groups);
    json_object_set_new(o, "has_password", json_boolean(u->password_hash[0] != '\0'));
    json_object_set_new(o, "disabled", json_boolean(u->disabled));
    mdm_api_set_int(o, "created_ms", u->created_ms);
    mdm_api_set_int(o, "updated_ms", u->updated_ms);
    mdm_api_set_int(o, "password_changed_ms", u->password_changed_ms);
    return o;
}

static void set_id_or_null(json_t *o, const char *key, const char *id)
{
    if (id[0])
        mdm_api_set_str(o, key, id);
    else
        json_object_set_new(o, key, json_null());
}

static json_t *invitation_json(const mdm_invitation_t *inv, uint64_t now_ms)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    enum mdm_invite_mode mode = (enum mdm_invite_mode)inv->mode;
    char when[32];
    mdm_api_set_str(o, "id", inv->id);
    mdm_api_set_str(o, "user", inv->user_name);
    mdm_api_set_str(o, "mode", mdm_invite_mode_name(mode));
    mdm_api_set_str(o, "status", mdm_invite_status_name(mdm_api_invitation_status(inv, now_ms)));
    const char *base = mdm_enroll_base_url();
    if (base[0]) {
        char url[700];
        snprintf(url, sizeof(url), "%s/macos/invite/%s", base, inv->id);
        mdm_api_set_str(o, "url", url);
    } else {
        json_object_set_new(o, "url", json_null()); /* the device listener is not bound */
    }
    json_object_set_new(o, "password_required", json_boolean(mode_uses_password(mode)));
    json_object_set_new(o, "pin_required", json_boolean(mode_uses_pin(mode)));
    mdm_api_set_int(o, "created_ms", inv->created_ms);
    mdm_api_set_int(o, "expires_ms", inv->expires_ms);
    fmt_rfc3339(inv->expires_ms, when);
    mdm_api_set_str(o, "expires_at", when);
    mdm_api_set_int(o, "used_ms", inv->used_ms);
    mdm_api_set_str(o, "created_by", inv->created_by);
    set_id_or_null(o, "enrollment_id", inv->enrollment_id);
    return o;
}

static json_t *enrollment_json(const mdm_enrollment_t *e, uint64_t now_ms)
{
    json_t *o = json_object();
    json_t *groups = groups_json(e->n_groups, e->groups);
    if (!o || !groups) {
        json_decref(o);
        json_decref(groups);
        return NULL;
    }
    mdm_api_set_str(o, "id", e->id);
    mdm_api_set_str(o, "user", e->user_name);
    mdm_api_set_str(o, "method", mdm_enroll_method_name((enum mdm_enroll_method)e->method));
    mdm_api_set_str(o, "status", mdm_api_enrollment_status(e, now_ms));
    set_id_or_null(o, "invitation_id", e->invitation_id);
    json_object_set_new(o, "groups", groups);
    mdm_api_set_int(o, "created_ms", e->created_ms);
    mdm_api_set_int(o, "challenge_expires_ms", e->challenge_expires_ms);
    set_id_or_null(o, "udid", e->udid);
    set_id_or_null(o, "identity_sha256", e->cert_sha256);
    mdm_api_set_int(o, "completed_ms", e->completed_ms);
    return o;
}

/* ------------------------------------------------------------------------------------------
 * Mutations: user create / update / delete, invitation create / revoke
 */

enum ejob_kind { EJ_USER_CREATE, EJ_USER_UPDATE, EJ_USER_DELETE, EJ_INVITE_CREATE,
                 EJ_INVITE_REVOKE };

/* Fields a user create or update sets (ejob.given). */
enum {
    F_PASSWORD = 1 << 0,    /* password: a new one (hashed on the worker) */
    F_NO_PASSWORD = 1 << 1, /* password: null (the user signs on with invitation PINs only) */
    F_DISABLED = 1 << 2,
    F_DISPLAY = 1 << 3,
    F_EMAIL = 1 << 4,
    F_GROUPS = 1 << 5,
};

struct ejob {
    struct mdm_api_call c; /* first */
    mdm_shard_msg_t msg;
    enum ejob_kind kind;
    char claim[MDM_API_CLAIM_KEY_MAX];    /* claimed key; "" = none */
    /* request */
    mdm_local_user_t want;        /* user: name, and the fields named by given */
    unsigned given;               /* F_* */
    char *password;               /* F_PASSWORD: malloc'ed; wiped once hashed */
    size_t password_len;
    mdm_invitation_t inv;         /* invitation create: the new record; revoke: id */
    char pin[INVITE_PIN_DIGITS + 1]; /* answered once; wiped with the job */
    /* outcome, set on the worker (status 0: write the record on the shard) */
    struct mdm_api_outcome out;
    mdm_local_user_t user;        /* user: the record to write (or the deleted one) */
    uint64_t now_ms;
};

static void wipe_password(struct ejob *j)
{
    if (j->password) {
        explicit_bzero(j->password, j->password_len);
        free(j->password);
        j->password = NULL;
    }
}

static void ejob_free(struct mdm_api_call *c)
{
    struct ejob *j = (struct ejob *)c;
    if (j->claim[0])
        mdm_api_unclaim(j->claim);
    wipe_password(j);
    explicit_bzero(j->pin, sizeof(j->pin));
    explicit_bzero(&j->user, sizeof(j->user));
    explicit_bzero(&j->inv, sizeof(j->inv));
    free(j);
}

#define ejob_fail(j, ...) ((void)mdm_api_outcome_set(&(j)->out, __VA_ARGS__))

static void hash_password(struct ejob *j)
{
    int ret = mdm_password_hash(argon2_params(), j->password, j->password_len,
                                j->user.password_hash, sizeof(j->user.password_hash));
    wipe_password(j);
    if (ret != 0)
        ejob_fail(j, ret == -EINVAL ? 422 : 503, ret == -EINVAL ? "invalid parameter"
                                                                : "internal error",
                  "cannot hash the password: %s", mdm_strerror(ret));
    else
        j->user.password_changed_ms = j->now_ms;
}

/* Applies the given fields of want to j->user. */
static void apply_user_fields(struct ejob *j)
{
    mdm_local_user_t *u = &j->user;
    if (j->given & F_DISPLAY)
        memcpy(u->display_name, j->want.display_name, sizeof(u->display_name));
    if (j->given & F_EMAIL)
        memcpy(u->email, j->want.email, sizeof(u->email));
    if (j->given & F_GROUPS) {
        memcpy(u->groups, j->want.groups, sizeof(u->groups));
        u->n_groups = j->want.n_groups;
    }
    if (j->given & F_DISABLED)
        u->disabled = j->want.disabled;
    if (j->given & F_NO_PASSWORD) {
        u->password_hash[0] = '\0';
        u->password_changed_ms = j->now_ms;
    }
    u->updated_ms = j->now_ms;
}

static void on_ejob_done(mdm_shard_t *sh, mdm_shard_msg_t *m);

/* snprintf at *n into buf (size bytes), advancing *n; a full buffer truncates quietly. */
static void append(char *buf, size_t size, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t size, size_t *n, const char *fmt, ...)
{
    if (*n + 1 >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *n, size - *n, fmt, ap);
    va_end(ap);
    if (w > 0)
        *n = *n + (size_t)w < size ? *n + (size_t)w : size - 1;
}

/* The job, on a storage or enrollment worker: reads, checks, hashes. */
static void run_ejob(mdm_store_t *s, struct ejob *j)
{
    int ret;
    j->now_ms = mdm_wall_ms();
    switch (j->kind) {
    case EJ_USER_CREATE:
        ret = mdm_store_get_local_user(s, j->want.name, &j->user);
        if (ret == 0) {
            ejob_fail(j, 409, "conflict", "user %s exists", j->want.name);
            break;
        }
        if (ret != MDM_ENOTFOUND) {
            ejob_fail(j, 503, "storage failure", "%s", mdm_strerror(ret));
            break;
        }
        memset(&j->user, 0, sizeof(j->user));
        memcpy(j->user.name, j->want.name, sizeof(j->user.name));
        j->user.created_ms = j->now_ms;
        apply_user_fields(j);
        j->user.password_changed_ms = 0;
        if (j->given & F_PASSWORD)
            hash_password(j);
        break;
    case EJ_USER_UPDATE:
    case EJ_USER_DELETE:
        ret = mdm_store_get_local_user(s, j->want.name, &j->user);
        if (ret == MDM_ENOTFOUND) {
            ejob_fail(j, 404, "not found", "no user %s", j->want.name);
            break;
        }
        if (ret != 0) {
            ejob_fail(j, 503, "storage failure", "%s", mdm_strerror(ret));
            break;
        }
        if (j->kind == EJ_USER_UPDATE) {
            apply_user_fields(j);
            if (j->given & F_PASSWORD)
                hash_password(j);
        }
        break;
    case EJ_INVITE_CREATE: {
        /* A local user of that name must be able to use the invitation; any other name is
         * taken as a directory user (checked when the invitation is used). */
        mdm_local_user_t u;
        ret = mdm_user_name_valid(j->inv.user_name)
                  ? mdm_store_get_local_user(s, j->inv.user_name, &u)
                  : MDM_ENOTFOUND;
        enum mdm_invite_mode mode = (enum mdm_invite_mode)j->inv.mode;
        if (ret == 0 && u.disabled)
            ejob_fail(j, 409, "conflict", "user %s is disabled", u.name);
        else if (ret == 0 && mode_uses_password(mode) && !u.password_hash[0])
            ejob_fail(j, 409, "conflict",
                      "user %s has no password: set one, or invite with mode pin", u.name);
        else if (ret != 0 && ret != MDM_ENOTFOUND)
            ejob_fail(j, 503, "storage failure", "%s", mdm_strerror(ret));
        explicit_bzero(&u, sizeof(u));
        if (j->out.status == 0 && mode_uses_pin(mode)) {
            ret = mdm_pin_hash(argon2_params(), j->pin, j->inv.pin_hash,
                               sizeof(j->inv.pin_hash));
            if (ret != 0)
                ejob_fail(j, 503, "internal error", "cannot hash the PIN: %s",
                          mdm_strerror(ret));
        }
        j->inv.created_ms = j->now_ms;
        j->inv.expires_ms += j->now_ms; /* held the lifetime until now */
        break;
    }
    case EJ_INVITE_REVOKE: {
        char id[MDM_ENROLL_ID_LEN + 1];
        memcpy(id, j->inv.id, sizeof(id)); /* the call overwrites j->inv */
        ret = mdm_enroll_revoke_invitation(id, j->now_ms, &j->inv);
        if (ret == MDM_ENOTFOUND || ret == -EINVAL) {
            ejob_fail(j, 404, "not found", "no invitation %s", j->c.audit.target);
        } else if (ret == -EALREADY) {
            ejob_fail(j, 409, "conflict", "invitation %s is %s, not pending", j->inv.id,
                      mdm_invite_status_name(mdm_api_invitation_status(&j->inv, j->now_ms)));
        } else if (ret != 0) {
            ejob_fail(j, 503, "storage failure", "%s", mdm_strerror(ret));
        }
        break;
    }
    }
    wipe_password(j);
    j->msg.fn = on_ejob_done;
    mdm_shard_post(j->c.shard, &j->msg);
}

static void run_ejob_store(mdm_store_t *s, void *arg) { run_ejob(s, arg); }

static void run_ejob_enroll(void *arg) { run_ejob(mdm_api_store(), arg); }

/* Back on the shard: the record into the shard's batch, then the call ends (audited). */
static void on_ejob_done(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct ejob *j = MDM_CONTAINER_OF(m, struct ejob, msg);
    if (j->out.status != 0) {
        mdm_api_call_fail(&j->c, j->out.status, j->out.error, j->out.detail);
        return;
    }
    mdm_batch_t *b = mdm_actors_shard_batch(j->c.shard);
    char detail[256] = "";
    json_t *body = NULL;
    int status = 200;
    switch (j->kind) {
    case EJ_USER_CREATE:
    case EJ_USER_UPDATE: {
        mdm_store_put_local_user(b, &j->user);
        body = user_json(&j->user);
        status = j->kind == EJ_USER_CREATE ? 201 : 200;
        /* What changed, never the password itself. */
        size_t n = 0;
        if (j->kind == EJ_USER_CREATE)
            append(detail, sizeof(detail), &n, "%s",
                   j->user.password_hash[0] ? "with a password" : "without a password");
        if (j->kind == EJ_USER_UPDATE && (j->given & F_PASSWORD))
            append(detail, sizeof(detail), &n, "password reset");
        if (j->kind == EJ_USER_UPDATE && (j->given & F_NO_PASSWORD))
            append(detail, sizeof(detail), &n, "password removed");
        if (j->given & F_DISABLED)
            append(detail, sizeof(detail), &n, "%s%s", n ? ", " : "",
                   j->user.disabled ? "disabled" : "enabled");
        if (j->given & F_DISPLAY)
            append(detail, sizeof(detail), &n, "%sdisplay_name", n ? ", " : "");
        if (j->given & F_EMAIL)
            append(detail, sizeof(detail), &n, "%semail", n ? ", " : "");
        if (j->given & F_GROUPS) {
            append(detail, sizeof(detail), &n, "%sgroups [", n ? ", " : "");
            for (unsigned i = 0; i < j->user.n_groups; i++)
                append(detail, sizeof(detail), &n, "%s%s", i ? "," : "", j->user.groups[i]);
            append(detail, sizeof(detail), &n, "]");
        }
        break;
    }
    case EJ_USER_DELETE:
        mdm_store_delete_local_user(b, j->user.name);
        body = json_pack("{s:s}", "deleted", j->user.name);
        snprintf(detail, sizeof(detail), "deleted");
        break;
    case EJ_INVITE_CREATE: {
        mdm_store_put_invitation(b, &j->inv);
        body = invitation_json(&j->inv, j->now_ms);
        if (body && mode_uses_pin((enum mdm_invite_mode)j->inv.mode))
            json_object_set_new(body, "pin", json_string(j->pin));
        status = 201;
        char when[32];
        fmt_rfc3339(j->inv.expires_ms, when);
        snprintf(j->c.audit.target, sizeof(j->c.audit.target), "%s", j->inv.id);
        snprintf(detail, sizeof(detail), "user %.63s, mode %s, expires %s", j->inv.user_name,
                 mdm_invite_mode_name((enum mdm_invite_mode)j->inv.mode), when);
        break;
    }
    case EJ_INVITE_REVOKE: /* committed already, under the enrollment service's lock */
        body = invitation_json(&j->inv, j->now_ms);
        snprintf(detail, sizeof(detail), "user %.63s, mode %s", j->inv.user_name,
                 mdm_invite_mode_name((enum mdm_invite_mode)j->inv.mode));
        break;
    }
    if (!body) {
        /* The record is in the batch already: it is written; only the answer is short. */
        body = mdm_api_error_json("out of memory", "the change was made; read it back");
        status = 503;
    }
    mdm_api_call_finish(&j->c, status, body, detail);
}

/* Claims key for j and queues its job (slow: hashing, on the enrollment pool). On failure
 * ends the call. */
static void ejob_start(struct ejob *j, const char *key, bool slow)
{
    if (key) {
        int ret = mdm_api_claim(key);
        if (ret == -EBUSY) {
            mdm_api_call_fail(&j->c, 409, "conflict",
                              "another change to this record is in progress; retry");
            return;
        }
        if (ret != 0) {
            mdm_api_call_fail(&j->c, 503, "unavailable", "too many changes in progress; retry");
            return;
        }
        snprintf(j->claim, sizeof(j->claim), "%s", key);
    }
    int ret = slow ? mdm_enroll_run(run_ejob_enroll, j)
                   : mdm_store_run_async(mdm_api_store(), run_ejob_store, j);
    if (ret == -ESHUTDOWN)
        mdm_api_call_fail(&j->c, 503, "unavailable",
                          slow ? "the enrollment service is not running" : "storage is closing");
    else if (ret != 0)
        mdm_api_call_fail(&j->c, 503, "unavailable", mdm_strerror(ret));
}

static struct ejob *ejob_new(mdm_exchange_t *x, enum ejob_kind kind, const char *action,
                             const char *target)
{
    struct ejob *j = (struct ejob *)mdm_api_call_new(x, sizeof(*j), action, target);
    if (!j) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return NULL;
    }
    j->c.free_fn = ejob_free;
    j->kind = kind;
    return j;
}

/* Fails the call with 422 naming the field. Returns false (for `return bad(...)`). */
static bool bad_field(struct ejob *j, const char *field, const char *why)
{
    char d[200];
    snprintf(d, sizeof(d), "%s: %s", field, why);
    mdm_api_call_fail(&j->c, 422, "invalid parameter", d);
    return false;
}

/* Reads the user fields of body into j->want and j->given; create: name is required (and a
 * null or absent password both mean none), else name is refused. Returns false after ending
 * the call. */
static bool read_user_fields(struct ejob *j, json_t *body, bool create)
{
    static const char *const keys[] = {"name", "password", "display_name", "email",
                                       "groups", "disabled"};
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        bool known = false;
        for (size_t i = 0; i < MDM_ARRAY_LEN(keys); i++)
            known = known || strcmp(k, keys[i]) == 0;
        if (!known) {
            char d[120];
            snprintf(d, sizeof(d), "unknown key '%.64s'", k);
            mdm_api_call_fail(&j->c, 422, "invalid parameter", d);
            return false;
        }
    }
    if ((v = json_object_get(body, "name"))) {
        if (!create)
            return bad_field(j, "name", "cannot be changed (delete the user and create it "
                                        "again)");
        if (!json_is_string(v) || !mdm_user_name_valid(json_string_value(v)))
            return bad_field(j, "name", "1 to 63 of A-Z a-z 0-9 . _ @ -");
        snprintf(j->want.name, sizeof(j->want.name), "%s", json_string_value(v));
    } else if (create) {
        return bad_field(j, "name", "required (1 to 63 of A-Z a-z 0-9 . _ @ -)");
    }
    if ((v = json_object_get(body, "password"))) {
        if (json_is_null(v)) {
            j->given |= F_NO_PASSWORD;
        } else {
            size_t len = json_string_length(v);
            if (!json_is_string(v) || len < MDM_PASSWORD_MIN || len > MDM_PASSWORD_MAX)
                return bad_field(j, "password", "a string of 1 to 1024 bytes (or null: none)");
            if (!(j->password = malloc(len))) {
                mdm_api_call_fail(&j->c, 503, "out of memory", NULL);
                return false;
            }
            memcpy(j->password, json_string_value(v), len);
            j->password_len = len;
            j->given |= F_PASSWORD;
        }
    }
    if ((v = json_object_get(body, "display_name"))) {
        if (!json_is_string(v) || !text_ok(json_string_value(v), DISPLAY_NAME_MAX))
            return bad_field(j, "display_name", "a string of at most 127 bytes, no control "
                                                "characters");
        snprintf(j->want.display_name, sizeof(j->want.display_name), "%s",
                 json_string_value(v));
        j->given |= F_DISPLAY;
    }
    if ((v = json_object_get(body, "email"))) {
        if (!json_is_string(v) || !text_ok(json_string_value(v), EMAIL_MAX))
            return bad_field(j, "email", "a string of at most 255 bytes, no control "
                                         "characters");
        snprintf(j->want.email, sizeof(j->want.email), "%s", json_string_value(v));
        j->given |= F_EMAIL;
    }
    if ((v = json_object_get(body, "groups"))) {
        if (!json_is_array(v) || json_array_size(v) > MDM_USER_GROUPS_MAX)
            return bad_field(j, "groups", "an array of at most 16 group names");
        size_t i;
        json_t *g;
        json_array_foreach(v, i, g) {
            char field[32];
            snprintf(field, sizeof(field), "groups[%zu]", i);
            const char *name = json_string_value(g);
            if (!name || !mdm_group_name_valid(name))
                return bad_field(j, field, "1 to 63 bytes, no control characters");
            for (size_t k2 = 0; k2 < i; k2++)
                if (strcmp(j->want.groups[k2], name) == 0)
                    return bad_field(j, field, "listed twice");
            snprintf(j->want.groups[i], sizeof(j->want.groups[i]), "%s", name);
        }
        j->want.n_groups = (unsigned)json_array_size(v);
        j->given |= F_GROUPS;
    }
    if ((v = json_object_get(body, "disabled"))) {
        if (!json_is_boolean(v))
            return bad_field(j, "disabled", "true or false");
        j->want.disabled = json_is_true(v);
        j->given |= F_DISABLED;
    }
    if (!create && !j->given)
        return bad_field(j, "body", "nothing to change (password, disabled, display_name, "
                                    "email, groups)");
    return true;
}

static void handle_user_change(mdm_exchange_t *x, enum ejob_kind kind, const char *name)
{
    const char *action = kind == EJ_USER_CREATE   ? "user.create"
                         : kind == EJ_USER_UPDATE ? "user.update"
                                                  : "user.delete";
    struct ejob *j = ejob_new(x, kind, action, name ? name : "");
    if (!j)
        return;
    if (name)
        snprintf(j->want.name, sizeof(j->want.name), "%s", name);
    if (kind != EJ_USER_DELETE) {
        json_t *body = mdm_api_body_object(&j->c);
        if (!body)
            return;
        bool ok = read_user_fields(j, body, kind == EJ_USER_CREATE);
        json_decref(body);
        if (!ok)
            return;
    }
    snprintf(j->c.audit.target, sizeof(j->c.audit.target), "%s", j->want.name);
    char key[MDM_API_CLAIM_KEY_MAX];
    snprintf(key, sizeof(key), "u/%s", j->want.name);
    ejob_start(j, key, (j->given & F_PASSWORD) != 0);
}

static void handle_invite_create(mdm_exchange_t *x)
{
    struct ejob *j = ejob_new(x, EJ_INVITE_CREATE, "invitation.create", "");
    if (!j)
        return;
    json_t *body = mdm_api_body_object(&j->c);
    if (!body)
        return;
    const char *k;
    json_t *v;
    const char *unknown = NULL;
    json_object_foreach(body, k, v) {
        if (strcmp(k, "user") != 0 && strcmp(k, "mode") != 0 && strcmp(k, "expires_hours") != 0)
            unknown = k;
    }
    const char *user = json_string_value(json_object_get(body, "user"));
    json_t *mode_v = json_object_get(body, "mode");
    json_t *hours_v = json_object_get(body, "expires_hours");
    const char *mode = mode_v ? json_string_value(mode_v) : "password";
    json_int_t hours = hours_v ? json_integer_value(hours_v) : INVITE_HOURS_DEFAULT;
    int m = -1;
    for (int i = MDM_INVITE_PASSWORD; mode && i <= MDM_INVITE_PASSWORD_AND_PIN; i++)
        if (strcmp(mode, mdm_invite_mode_name((enum mdm_invite_mode)i)) == 0)
            m = i;
    if (user && mdm_user_ref_valid(user))
        snprintf(j->c.audit.target, sizeof(j->c.audit.target), "%s", user);
    bool ok = false;
    if (unknown) {
        char d[120];
        snprintf(d, sizeof(d), "unknown key '%.64s' (expected user, mode, expires_hours)",
                 unknown);
        mdm_api_call_fail(&j->c, 422, "invalid parameter", d);
    } else if (!user || !mdm_user_ref_valid(user)) {
        bad_field(j, "user", "a user name: 1 to 63 bytes, no control characters");
    } else if (m < 0) {
        bad_field(j, "mode", "password, pin or password_and_pin");
    } else if ((hours_v && !json_is_integer(hours_v)) || hours < 1 ||
               hours > INVITE_HOURS_MAX) {
        bad_field(j, "expires_hours", "an integer from 1 to 720");
    } else {
        ok = true;
        j->inv.mode = (uint8_t)m;
    }
    if (ok)
        snprintf(j->inv.user_name, sizeof(j->inv.user_name), "%s", user);
    json_decref(body);
    if (!ok)
        return;
    j->inv.status = MDM_INVITE_PENDING;
    j->inv.expires_ms = (uint64_t)hours * 3600u * 1000u; /* the worker adds the time */
    snprintf(j->inv.created_by, sizeof(j->inv.created_by), "%s", mdm_api_who());
    if (mdm_enroll_id_new(j->inv.id) != 0 ||
        (mode_uses_pin((enum mdm_invite_mode)j->inv.mode) && make_pin(j->pin) != 0)) {
        mdm_api_call_fail(&j->c, 503, "internal error", "no random bytes");
        return;
    }
    /* A new random id: nothing to claim. Hashing the PIN is slow; without a PIN the job only
     * reads. */
    ejob_start(j, NULL, mode_uses_pin((enum mdm_invite_mode)j->inv.mode));
}

static void handle_invite_revoke(mdm_exchange_t *x, const char *id)
{
    struct ejob *j = ejob_new(x, EJ_INVITE_REVOKE, "invitation.revoke", id);
    if (!j)
        return;
    if (!mdm_enroll_id_valid(id)) {
        mdm_api_call_fail(&j->c, 404, "not found", "no such invitation");
        return;
    }
    memcpy(j->inv.id, id, MDM_ENROLL_ID_LEN + 1); /* valid: 32 digits */
    char key[MDM_API_CLAIM_KEY_MAX];
    snprintf(key, sizeof(key), "i/%s", id);
    ejob_start(j, key, true); /* on the enrollment pool: it takes the service's lock */
}

/* ------------------------------------------------------------------------------------------
 * Reads: lists and single records, on a storage worker
 */

enum ljob_kind { LJ_USERS, LJ_USER, LJ_INVITATIONS, LJ_INVITATION, LJ_ENROLLMENTS,
                 LJ_ENROLLMENT };

struct ljob {
    mdm_shard_msg_t msg;
    mdm_exchange_t *x;
    mdm_shard_t *shard;
    enum ljob_kind kind;
    char key[SEG_MAX + 1];               /* single record: its name or id */
    char after[SEG_MAX + 1];             /* paging cursor */
    unsigned limit;
    char user[MDM_USER_NAME_MAX + 1];    /* filter (invitations, enrollments); "" = any */
    char group[MDM_GROUP_NAME_MAX + 1];  /* filter (users); "" = any */
    int status;                          /* filter (invitations): enum mdm_invite_status, -1 */
    uint64_t now_ms;
    /* result, built on the worker */
    json_t *items;
    unsigned count;
    char last[SEG_MAX + 1];
    char *text;                          /* the answer (200) */
    int err_status;
    char error[48], detail[160];
};

static int list_add(struct ljob *j, json_t *o, const char *key)
{
    if (!o || json_array_append_new(j->items, o) != 0)
        return -ENOMEM;
    snprintf(j->last, sizeof(j->last), "%s", key);
    return ++j->count >= j->limit ? 1 : 0;
}

static int on_user(void *arg, const mdm_local_user_t *u)
{
    struct ljob *j = arg;
    if (j->group[0]) {
        bool member = false;
        for (unsigned i = 0; i < u->n_groups && !member; i++)
            member = strcmp(u->groups[i], j->group) == 0;
        if (!member)
            return 0;
    }
    return list_add(j, user_json(u), u->name);
}

static int on_invitation(void *arg, const mdm_invitation_t *inv)
{
    struct ljob *j = arg;
    if (j->user[0] && strcmp(inv->user_name, j->user) != 0)
        return 0;
    if (j->status >= 0 && (int)mdm_api_invitation_status(inv, j->now_ms) != j->status)
        return 0;
    return list_add(j, invitation_json(inv, j->now_ms), inv->id);
}

static int on_enrollment(void *arg, const mdm_enrollment_t *e)
{
    struct ljob *j = arg;
    if (j->user[0] && strcmp(e->user_name, j->user) != 0)
        return 0;
    return list_add(j, enrollment_json(e, j->now_ms), e->id);
}

static void on_ljob_result(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct ljob *j = MDM_CONTAINER_OF(m, struct ljob, msg);
    if (j->text)
        mdm_exchange_respond(j->x, 200, NULL, 0, "application/json", j->text, strlen(j->text));
    else
        mdm_api_respond_error(j->x, j->err_status ? j->err_status : 503,
                              j->error[0] ? j->error : "out of memory", j->detail);
    free(j->text);
    free(j);
}

static void ljob_fail(struct ljob *j, int status, const char *error, const char *detail)
{
    j->err_status = status;
    snprintf(j->error, sizeof(j->error), "%s", error);
    snprintf(j->detail, sizeof(j->detail), "%s", detail);
}

/* Serializes o (consumed) as one line into j->text. */
static void ljob_answer(struct ljob *j, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    char *line = text ? realloc(text, strlen(text) + 2) : NULL;
    if (!line) {
        free(text);
        ljob_fail(j, 503, "out of memory", "");
        return;
    }
    strcat(line, "\n");
    j->text = line;
}

static void run_ljob(mdm_store_t *s, void *arg)
{
    struct ljob *j = arg;
    j->now_ms = mdm_wall_ms();
    const char *name = NULL;
    int ret = 0;
    char d[160];
    switch (j->kind) {
    case LJ_USER: {
        mdm_local_user_t u;
        ret = mdm_store_get_local_user(s, j->key, &u);
        if (ret == 0)
            ljob_answer(j, user_json(&u));
        explicit_bzero(&u, sizeof(u));
        snprintf(d, sizeof(d), "no user %s", j->key);
        break;
    }
    case LJ_INVITATION: {
        mdm_invitation_t inv;
        ret = mdm_store_get_invitation(s, j->key, &inv);
        if (ret == 0)
            ljob_answer(j, invitation_json(&inv, j->now_ms));
        explicit_bzero(&inv, sizeof(inv));
        snprintf(d, sizeof(d), "no invitation %s", j->key);
        break;
    }
    case LJ_ENROLLMENT: {
        mdm_enrollment_t e;
        ret = mdm_store_get_enrollment(s, j->key, &e);
        if (ret == 0)
            ljob_answer(j, enrollment_json(&e, j->now_ms));
        snprintf(d, sizeof(d), "no enrollment %s", j->key);
        break;
    }
    case LJ_USERS:
    case LJ_INVITATIONS:
    case LJ_ENROLLMENTS:
        if (!(j->items = json_array())) {
            ret = -ENOMEM;
            break;
        }
        if (j->kind == LJ_USERS) {
            name = "users";
            ret = mdm_store_list_local_users(s, j->after, on_user, j);
        } else if (j->kind == LJ_INVITATIONS) {
            name = "invitations";
            ret = mdm_store_list_invitations(s, j->after, on_invitation, j);
        } else {
            name = "enrollments";
            ret = mdm_store_list_enrollments(s, j->after, on_enrollment, j);
        }
        if (ret == 1)
            ret = 0; /* stopped after a full page */
        if (ret == 0) {
            bool more = j->count >= j->limit;
            json_t *o = json_pack("{s:O, s:i}", name, j->items, "count", (int)j->count);
            if (o)
                json_object_set_new(o, "next_after", more ? json_string(j->last) : json_null());
            ljob_answer(j, o);
        }
        snprintf(d, sizeof(d), "after: not a valid cursor for %s", name);
        break;
    }
    json_decref(j->items);
    j->items = NULL;
    if (ret == MDM_ENOTFOUND || (ret == -EINVAL && !name))
        ljob_fail(j, 404, "not found", d);
    else if (ret == -EINVAL)
        ljob_fail(j, 400, "invalid parameter", d);
    else if (ret != 0)
        ljob_fail(j, 503, ret == -ENOMEM ? "out of memory" : "storage failure",
                  mdm_strerror(ret));
    j->msg.fn = on_ljob_result;
    mdm_shard_post(j->shard, &j->msg);
}

static bool after_user(const char *s) { return mdm_user_name_valid(s); }

static bool after_id(const char *s) { return mdm_enroll_id_valid(s); }

static void handle_read(mdm_exchange_t *x, enum ljob_kind kind, const char *key)
{
    const char *query = mdm_exchange_request(x)->query;
    struct ljob *j = calloc(1, sizeof(*j));
    if (!j) {
        mdm_api_respond_error(x, 503, "out of memory", NULL);
        return;
    }
    j->x = x;
    j->shard = mdm_exchange_shard(x);
    j->kind = kind;
    j->status = -1;
    const char *bad = NULL;
    char v[256];
    if (key) {
        snprintf(j->key, sizeof(j->key), "%s", key);
    } else if (!mdm_api_paging(x, query, &j->limit, j->after, sizeof(j->after),
                               kind == LJ_USERS ? after_user : after_id,
                               kind == LJ_USERS ? "a user name" : "an id (32 hex digits)")) {
        free(j);
        return;
    }
    if (!key && kind != LJ_USERS && mdm_api_query_param(query, "user", v, sizeof(v))) {
        if (!mdm_user_ref_valid(v))
            bad = "user: expected a user name";
        else
            memcpy(j->user, v, strlen(v) + 1); /* valid: at most 63 bytes */
    }
    if (!key && kind == LJ_USERS && mdm_api_query_param(query, "group", v, sizeof(v))) {
        if (!mdm_group_name_valid(v))
            bad = "group: expected a group name";
        else
            memcpy(j->group, v, strlen(v) + 1); /* valid: at most 63 bytes */
    }
    if (!key && kind == LJ_INVITATIONS && mdm_api_query_param(query, "status", v, sizeof(v))) {
        for (int s = MDM_INVITE_PENDING; s <= MDM_INVITE_REVOKED; s++)
            if (strcmp(v, mdm_invite_status_name((enum mdm_invite_status)s)) == 0)
                j->status = s;
        if (j->status < 0)
            bad = "status: expected pending, used, expired or revoked";
    }
    if (bad) {
        free(j);
        mdm_api_respond_error(x, 400, "invalid parameter", bad);
        return;
    }
    if (mdm_store_run_async(mdm_api_store(), run_ljob, j) != 0) {
        free(j);
        mdm_api_respond_error(x, 503, "unavailable", "storage is shutting down");
    }
}

/* ------------------------------------------------------------------------------------------
 * Dispatch
 */

static const char *const resources[] = {"users", "invitations", "enrollments"};

bool mdm_api_enroll_owns(const char *rest)
{
    for (size_t i = 0; i < MDM_ARRAY_LEN(resources); i++) {
        size_t n = strlen(resources[i]);
        if (strncmp(rest, resources[i], n) == 0 && (rest[n] == '\0' || rest[n] == '/'))
            return true;
    }
    return false;
}

/* Percent-decodes len bytes of s into out (SEG_MAX + 1). False when it does not fit or
 * decodes to a control byte. */
static bool decode_segment(const char *s, size_t len, char out[SEG_MAX + 1])
{
    int n = mdm_http_percent_decode(s, len, false, out, SEG_MAX + 1);
    for (int i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
            return false;
    return n > 0;
}

void mdm_api_enroll_handle(mdm_exchange_t *x, const char *rest)
{
    char segs[SEGS_MAX][SEG_MAX + 1];
    size_t n = 0;
    while (*rest) {
        size_t len = strcspn(rest, "/");
        if (len > 0) {
            if (n == SEGS_MAX || !decode_segment(rest, len, segs[n])) {
                mdm_api_respond_error(x, 404, "not found", "no such resource");
                return;
            }
            n++;
        }
        rest += len;
        if (*rest == '/')
            rest++;
    }
    enum mdm_http_method m = mdm_exchange_request(x)->method;
    bool get = m == MDM_HTTP_GET;
    const char *what = segs[0];
    if (n == 1 && strcmp(what, "users") == 0) {
        if (get)
            handle_read(x, LJ_USERS, NULL);
        else if (m == MDM_HTTP_POST)
            handle_user_change(x, EJ_USER_CREATE, NULL);
        else
            mdm_api_method_not_allowed(x, "GET, POST");
    } else if (n == 2 && strcmp(what, "users") == 0) {
        if (!mdm_user_name_valid(segs[1]))
            mdm_api_respond_error(x, 404, "not found", "no such user");
        else if (get)
            handle_read(x, LJ_USER, segs[1]);
        else if (m == MDM_HTTP_PATCH)
            handle_user_change(x, EJ_USER_UPDATE, segs[1]);
        else if (m == MDM_HTTP_DELETE)
            handle_user_change(x, EJ_USER_DELETE, segs[1]);
        else
            mdm_api_method_not_allowed(x, "GET, PATCH, DELETE");
    } else if (n == 1 && strcmp(what, "invitations") == 0) {
        if (get)
            handle_read(x, LJ_INVITATIONS, NULL);
        else if (m == MDM_HTTP_POST)
            handle_invite_create(x);
        else
            mdm_api_method_not_allowed(x, "GET, POST");
    } else if (n == 2 && strcmp(what, "invitations") == 0) {
        if (!get)
            mdm_api_method_not_allowed(x, "GET");
        else if (!mdm_enroll_id_valid(segs[1]))
            mdm_api_respond_error(x, 404, "not found", "no such invitation");
        else
            handle_read(x, LJ_INVITATION, segs[1]);
    } else if (n == 3 && strcmp(what, "invitations") == 0 && strcmp(segs[2], "revoke") == 0) {
        if (m == MDM_HTTP_POST)
            handle_invite_revoke(x, segs[1]);
        else
            mdm_api_method_not_allowed(x, "POST");
    } else if (n == 1 && strcmp(what, "enrollments") == 0) {
        if (get)
            handle_read(x, LJ_ENROLLMENTS, NULL);
        else
            mdm_api_method_not_allowed(x, "GET");
    } else if (n == 2 && strcmp(what, "enrollments") == 0) {
        if (!get)
            mdm_api_method_not_allowed(x, "GET");
        else if (!mdm_enroll_id_valid(segs[1]))
            mdm_api_respond_error(x, 404, "not found", "no such enrollment");
        else
            handle_read(x, LJ_ENROLLMENT, segs[1]);
    } else {
        mdm_api_respond_error(x, 404, "not found", "no such resource");
    }
}
