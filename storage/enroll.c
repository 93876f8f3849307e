/*
 * storage/enroll: key layouts and record codecs of enrollment records (see enroll.h).
 *
 * Encoding (storage/codec.h), format 1 of every record but the enrollment (format 2); key
 * fields are not repeated:
 *
 *   local user:  u8 format, u8 flags (bit 0 disabled), str display_name, str email,
 *                u8 n_groups, n_groups x str group, str password_hash, u64 created_ms,
 *                u64 updated_ms, u64 password_changed_ms
 *   invitation:  u8 format, str user_name, u8 mode, u8 status, str pin_hash, u64 created_ms,
 *                u64 expires_ms, u64 used_ms, str created_by, str enrollment_id
 *   challenge:   u8 format, u8 flags (bit 0 used), str enrollment_id, u64 expires_ms
 *   enrollment:  u8 format, str user_name, u8 method, str invitation_id, u64 created_ms,
 *                u64 challenge_expires_ms, str udid, str cert_sha256, u64 completed_ms,
 *                then (format 2 only) u8 n_groups, n_groups x str group; format 1 reads
 *                with no groups
 *   failures:    u8 format, u32 count, u64 window_start_ms, u64 locked_until_ms  (21 bytes)
 *   cert index:  u8 format, str enrollment_id   (key "ec/" + 64 hex digits; not listable)
 *
 * Decoders are strict: besides the codec's bounds checks they refuse unknown flag bits and
 * enum values, and identifiers a writer could not have written (a bad user name, an id that
 * is not 32 lowercase hex digits, an empty group), in the decoder frame of storage/codec.h. A
 * new format gets a new format byte and a decoder case next to the old ones; writers always use
 * the newest.
 *
 * One generic put, delete and get serve every kind through a table of key prefixes and
 * decoders, and the listings are the codec's typed listings over that table. Threads: puts on
 * whichever thread owns the batch; reads where synchronous reads are allowed (storage workers,
 * tools, tests).
 */
#include "storage/enroll.h"

#include <assert.h>
#include <errno.h>
#include <string.h>

#include "storage/codec.h"

#define FORMAT_1 1
#define FORMAT_2 2

#define USER_FLAG_DISABLED 0x01u
#define CHALLENGE_FLAG_USED 0x01u
#define CHALLENGE_FLAG_CERT_ONLY 0x02u

/* Longest key: a 3-byte prefix and a 64-byte identifier (a certificate's hex SHA-256). */
#define KEY_MAX (3 + 64)

_Static_assert(MDM_USER_NAME_MAX <= 63 && MDM_SIGNON_SUBJECT_MAX <= 63 &&
                   MDM_ENROLL_ID_LEN <= 63 && MDM_SHA256_LEN <= 63,
               "identifiers fit KEY_MAX");
_Static_assert(MDM_USER_GROUPS_MAX <= UINT8_MAX, "n_groups is a u8");

/* Record kinds in MDM_CF_ENROLL; index into `kinds`. */
enum kind { K_USER, K_INVITATION, K_CHALLENGE, K_ENROLLMENT, K_FAIL_USER, K_FAIL_ADDRESS };

/* The decoders (mdm_decode_fn) are given the key identifier, the key without its prefix:
 * id[0..idlen). */
static int dec_user(const void *id, size_t idlen, const void *val, size_t vlen, void *out);
static int dec_invitation(const void *id, size_t idlen, const void *val, size_t vlen,
                          void *out);
static int dec_challenge(const void *id, size_t idlen, const void *val, size_t vlen,
                         void *out);
static int dec_enrollment(const void *id, size_t idlen, const void *val, size_t vlen,
                          void *out);
static int dec_fail_user(const void *id, size_t idlen, const void *val, size_t vlen,
                         void *out);
static int dec_fail_address(const void *id, size_t idlen, const void *val, size_t vlen,
                            void *out);

static const struct kind_info {
    const char *prefix;
    const char *what; /* for logs */
    mdm_decode_fn dec;
    size_t size;      /* of the record struct */
} kinds[] = {
    [K_USER] = {"u/", "local user", dec_user, sizeof(mdm_local_user_t)},
    [K_INVITATION] = {"i/", "invitation", dec_invitation, sizeof(mdm_invitation_t)},
    [K_CHALLENGE] = {"c/", "SCEP challenge", dec_challenge, sizeof(mdm_scep_challenge_t)},
    [K_ENROLLMENT] = {"e/", "enrollment", dec_enrollment, sizeof(mdm_enrollment_t)},
    [K_FAIL_USER] = {"fu/", "sign-on failures (user)", dec_fail_user,
                     sizeof(mdm_signon_failures_t)},
    [K_FAIL_ADDRESS] = {"fa/", "sign-on failures (address)", dec_fail_address,
                        sizeof(mdm_signon_failures_t)},
};

/* ---- identifiers ---------------------------------------------------------------------------- */

/* Length of s when it has 1..max bytes, else -1. Reads at most max + 1 bytes. */
static int len_in(const char *s, size_t max)
{
    if (!s)
        return -1;
    size_t n = strnlen(s, max + 1);
    return n >= 1 && n <= max ? (int)n : -1;
}

static bool is_control(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

bool mdm_user_name_valid(const char *name)
{
    int n = len_in(name, MDM_USER_NAME_MAX);
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '@' || c == '-';
        if (!ok)
            return false;
    }
    return n > 0;
}

static bool no_controls(const char *s, size_t max)
{
    int n = len_in(s, max);
    for (int i = 0; i < n; i++)
        if (is_control((unsigned char)s[i]))
            return false;
    return n > 0;
}

bool mdm_user_ref_valid(const char *name)
{
    return no_controls(name, MDM_USER_NAME_MAX);
}

bool mdm_group_name_valid(const char *name)
{
    return no_controls(name, MDM_GROUP_NAME_MAX);
}

bool mdm_enroll_id_valid(const char *id)
{
    if (len_in(id, MDM_ENROLL_ID_LEN) != MDM_ENROLL_ID_LEN)
        return false;
    for (int i = 0; i < MDM_ENROLL_ID_LEN; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
}

/* "" or a valid id: the optional id fields. */
static bool opt_id_ok(const char *id)
{
    return id[0] == 0 || mdm_enroll_id_valid(id);
}

static bool subject_ok(const char *subject)
{
    return len_in(subject, MDM_SIGNON_SUBJECT_MAX) > 0;
}

static bool kind_ok(unsigned kind)
{
    return kind <= MDM_SIGNON_ADDRESS;
}

int mdm_enroll_id_new(char id[MDM_ENROLL_ID_LEN + 1])
{
    assert(id);
    uint8_t raw[MDM_ENROLL_ID_LEN / 2];
    int ret = mdm_random_bytes(raw, sizeof(raw));
    if (ret != 0) {
        id[0] = 0;
        return ret;
    }
    mdm_hex_encode(raw, sizeof(raw), id);
    return 0;
}

int mdm_scep_challenge_hash(const void *challenge, size_t len, uint8_t hash[MDM_SHA256_LEN])
{
    assert(challenge || len == 0);
    return mdm_sha256(challenge, len, hash);
}

const char *mdm_invite_mode_name(enum mdm_invite_mode m)
{
    switch (m) {
    case MDM_INVITE_PASSWORD: return "password";
    case MDM_INVITE_PIN: return "pin";
    case MDM_INVITE_PASSWORD_AND_PIN: return "password_and_pin";
    }
    return "unknown";
}

const char *mdm_invite_status_name(enum mdm_invite_status s)
{
    switch (s) {
    case MDM_INVITE_PENDING: return "pending";
    case MDM_INVITE_USED: return "used";
    case MDM_INVITE_EXPIRED: return "expired";
    case MDM_INVITE_REVOKED: return "revoked";
    }
    return "unknown";
}

const char *mdm_enroll_method_name(enum mdm_enroll_method m)
{
    switch (m) {
    case MDM_ENROLL_WEB: return "web";
    case MDM_ENROLL_INVITATION: return "invitation";
    case MDM_ENROLL_RENEWAL: return "renewal";
    }
    return "unknown";
}

static bool mode_valid(unsigned m)
{
    return m <= MDM_INVITE_PASSWORD_AND_PIN;
}

static bool status_valid(unsigned s)
{
    return s <= MDM_INVITE_REVOKED;
}

static bool method_valid(unsigned m)
{
    return m <= MDM_ENROLL_RENEWAL;
}

/* ---- group lists (local users, enrollments) ------------------------------------------------ */

typedef char group_name_t[MDM_GROUP_NAME_MAX + 1];

static bool groups_valid(unsigned n, const group_name_t *groups)
{
    if (n > MDM_USER_GROUPS_MAX)
        return false;
    for (unsigned i = 0; i < n; i++)
        if (!mdm_group_name_valid(groups[i]))
            return false;
    return true;
}

/* u8 n, then n x str. */
static void wr_groups(struct mdm_wr *w, unsigned n, const group_name_t *groups)
{
    mdm_wr_u8(w, n);
    for (unsigned i = 0; i < n; i++)
        MDM_WR_STR(w, groups[i]);
}

/* Reads what wr_groups wrote; a count over MDM_USER_GROUPS_MAX or an invalid name fails. */
static void rd_groups(struct mdm_rd *r, unsigned *n, group_name_t *groups)
{
    *n = mdm_rd_u8(r);
    if (*n > MDM_USER_GROUPS_MAX) {
        r->err = -EBADMSG;
        *n = 0;
        return;
    }
    for (unsigned i = 0; i < *n; i++) {
        MDM_RD_STR(r, groups[i]);
        if (r->err == 0 && !mdm_group_name_valid(groups[i]))
            r->err = -EBADMSG;
    }
}

/* ---- keys ----------------------------------------------------------------------------------- */

struct key {
    uint8_t b[KEY_MAX];
    size_t n;
};

/* prefix of kind, then id[0..idlen) (the caller checked its length). */
static void key_make(struct key *k, enum kind kind, const void *id, size_t idlen)
{
    size_t plen = strlen(kinds[kind].prefix);
    assert(plen + idlen <= sizeof(k->b));
    memcpy(k->b, kinds[kind].prefix, plen);
    if (idlen)
        memcpy(k->b + plen, id, idlen);
    k->n = plen + idlen;
}

static enum kind fail_kind(enum mdm_signon_kind kind)
{
    return kind == MDM_SIGNON_USER ? K_FAIL_USER : K_FAIL_ADDRESS;
}

/* A key identifier (no NUL inside) into a char[size] field, which valid (unless NULL) must
 * accept; 0 or -EBADMSG. */
static int id_take(const void *id, size_t idlen, char *dst, size_t size,
                   bool (*valid)(const char *))
{
    const uint8_t *p = id;
    int ret = mdm_key_take(&p, &idlen, dst, size, 1, true);
    if (ret == 0 && valid && !valid(dst))
        ret = -EBADMSG;
    return ret;
}

/* Puts rec, encoded by enc, under the key of kind and id[0..idlen). */
static void put_record(mdm_batch_t *b, enum kind kind, const void *id, size_t idlen,
                       mdm_encode_fn enc, const void *rec)
{
    struct key k;
    key_make(&k, kind, id, idlen);
    mdm_put_encoded(b, MDM_CF_ENROLL, k.b, k.n, enc, rec);
}

static void delete_record(mdm_batch_t *b, enum kind kind, const void *id, size_t idlen)
{
    struct key k;
    key_make(&k, kind, id, idlen);
    mdm_batch_delete(b, MDM_CF_ENROLL, k.b, k.n);
}

/* ---- local users ---------------------------------------------------------------------------- */

static void enc_user(struct mdm_wr *w, const void *rec)
{
    const mdm_local_user_t *u = rec;
    mdm_wr_u8(w, FORMAT_1);
    mdm_wr_u8(w, u->disabled ? USER_FLAG_DISABLED : 0);
    MDM_WR_STR(w, u->display_name);
    MDM_WR_STR(w, u->email);
    wr_groups(w, u->n_groups, u->groups);
    MDM_WR_STR(w, u->password_hash);
    mdm_wr_be(w, u->created_ms, 8);
    mdm_wr_be(w, u->updated_ms, 8);
    mdm_wr_be(w, u->password_changed_ms, 8);
}

static int dec_user(const void *id, size_t idlen, const void *val, size_t vlen, void *out)
{
    mdm_local_user_t *u = out;
    struct mdm_rd r = mdm_rd_start(u, sizeof(*u), val, vlen);
    r.err = id_take(id, idlen, u->name, sizeof(u->name), mdm_user_name_valid);
    switch (mdm_rd_format(&r, FORMAT_1)) {
    case FORMAT_1: {
        unsigned flags = mdm_rd_u8(&r);
        if (flags & ~USER_FLAG_DISABLED)
            r.err = -EBADMSG;
        u->disabled = flags & USER_FLAG_DISABLED;
        MDM_RD_STR(&r, u->display_name);
        MDM_RD_STR(&r, u->email);
        rd_groups(&r, &u->n_groups, u->groups);
        MDM_RD_STR(&r, u->password_hash);
        u->created_ms = mdm_rd_be(&r, 8);
        u->updated_ms = mdm_rd_be(&r, 8);
        u->password_changed_ms = mdm_rd_be(&r, 8);
        break;
    }
    }
    return mdm_rd_finish(&r, u, sizeof(*u));
}

void mdm_store_put_local_user(mdm_batch_t *b, const mdm_local_user_t *u)
{
    assert(b && u);
    assert(mdm_user_name_valid(u->name));
    assert(groups_valid(u->n_groups, u->groups));
    put_record(b, K_USER, u->name, strlen(u->name), enc_user, u);
}

void mdm_store_delete_local_user(mdm_batch_t *b, const char *name)
{
    assert(b && mdm_user_name_valid(name));
    delete_record(b, K_USER, name, strlen(name));
}

/* ---- invitations ---------------------------------------------------------------------------- */

static void enc_invitation(struct mdm_wr *w, const void *rec)
{
    const mdm_invitation_t *inv = rec;
    mdm_wr_u8(w, FORMAT_1);
    MDM_WR_STR(w, inv->user_name);
    mdm_wr_u8(w, inv->mode);
    mdm_wr_u8(w, inv->status);
    MDM_WR_STR(w, inv->pin_hash);
    mdm_wr_be(w, inv->created_ms, 8);
    mdm_wr_be(w, inv->expires_ms, 8);
    mdm_wr_be(w, inv->used_ms, 8);
    MDM_WR_STR(w, inv->created_by);
    MDM_WR_STR(w, inv->enrollment_id);
}

static int dec_invitation(const void *id, size_t idlen, const void *val, size_t vlen,
                          void *out)
{
    mdm_invitation_t *inv = out;
    struct mdm_rd r = mdm_rd_start(inv, sizeof(*inv), val, vlen);
    r.err = id_take(id, idlen, inv->id, sizeof(inv->id), mdm_enroll_id_valid);
    switch (mdm_rd_format(&r, FORMAT_1)) {
    case FORMAT_1:
        MDM_RD_STR(&r, inv->user_name);
        inv->mode = mdm_rd_u8(&r);
        inv->status = mdm_rd_u8(&r);
        MDM_RD_STR(&r, inv->pin_hash);
        inv->created_ms = mdm_rd_be(&r, 8);
        inv->expires_ms = mdm_rd_be(&r, 8);
        inv->used_ms = mdm_rd_be(&r, 8);
        MDM_RD_STR(&r, inv->created_by);
        MDM_RD_STR(&r, inv->enrollment_id);
        if (r.err == 0 && (!mdm_user_ref_valid(inv->user_name) || !mode_valid(inv->mode) ||
                           !status_valid(inv->status) || !opt_id_ok(inv->enrollment_id)))
            r.err = -EBADMSG;
        break;
    }
    return mdm_rd_finish(&r, inv, sizeof(*inv));
}

void mdm_store_put_invitation(mdm_batch_t *b, const mdm_invitation_t *inv)
{
    assert(b && inv);
    assert(mdm_enroll_id_valid(inv->id) && mdm_user_ref_valid(inv->user_name));
    assert(mode_valid(inv->mode) && status_valid(inv->status));
    assert(opt_id_ok(inv->enrollment_id));
    put_record(b, K_INVITATION, inv->id, strlen(inv->id), enc_invitation, inv);
}

void mdm_store_delete_invitation(mdm_batch_t *b, const char *id)
{
    assert(b && mdm_enroll_id_valid(id));
    delete_record(b, K_INVITATION, id, strlen(id));
}

/* ---- SCEP challenges ------------------------------------------------------------------------ */

static void enc_challenge(struct mdm_wr *w, const void *rec)
{
    const mdm_scep_challenge_t *c = rec;
    mdm_wr_u8(w, FORMAT_1);
    mdm_wr_u8(w, (c->used ? CHALLENGE_FLAG_USED : 0) |
                     (c->certificate_only ? CHALLENGE_FLAG_CERT_ONLY : 0));
    MDM_WR_STR(w, c->enrollment_id);
    mdm_wr_be(w, c->expires_ms, 8);
}

static int dec_challenge(const void *id, size_t idlen, const void *val, size_t vlen,
                         void *out)
{
    mdm_scep_challenge_t *c = out;
    struct mdm_rd r = mdm_rd_start(c, sizeof(*c), val, vlen);
    if (idlen == MDM_SHA256_LEN)
        memcpy(c->hash, id, MDM_SHA256_LEN);
    else
        r.err = -EBADMSG;
    switch (mdm_rd_format(&r, FORMAT_1)) {
    case FORMAT_1: {
        unsigned flags = mdm_rd_u8(&r);
        if (flags & ~(CHALLENGE_FLAG_USED | CHALLENGE_FLAG_CERT_ONLY))
            r.err = -EBADMSG;
        c->used = flags & CHALLENGE_FLAG_USED;
        c->certificate_only = flags & CHALLENGE_FLAG_CERT_ONLY;
        MDM_RD_STR(&r, c->enrollment_id);
        c->expires_ms = mdm_rd_be(&r, 8);
        if (r.err == 0 && !opt_id_ok(c->enrollment_id))
            r.err = -EBADMSG;
        break;
    }
    }
    return mdm_rd_finish(&r, c, sizeof(*c));
}

void mdm_store_put_scep_challenge(mdm_batch_t *b, const mdm_scep_challenge_t *c)
{
    assert(b && c);
    assert(opt_id_ok(c->enrollment_id));
    put_record(b, K_CHALLENGE, c->hash, MDM_SHA256_LEN, enc_challenge, c);
}

void mdm_store_delete_scep_challenge(mdm_batch_t *b, const uint8_t hash[MDM_SHA256_LEN])
{
    assert(b && hash);
    delete_record(b, K_CHALLENGE, hash, MDM_SHA256_LEN);
}

/* ---- enrollments ---------------------------------------------------------------------------- */

static void enc_enrollment(struct mdm_wr *w, const void *rec)
{
    const mdm_enrollment_t *e = rec;
    mdm_wr_u8(w, FORMAT_2);
    MDM_WR_STR(w, e->user_name);
    mdm_wr_u8(w, e->method);
    MDM_WR_STR(w, e->invitation_id);
    mdm_wr_be(w, e->created_ms, 8);
    mdm_wr_be(w, e->challenge_expires_ms, 8);
    MDM_WR_STR(w, e->udid);
    MDM_WR_STR(w, e->cert_sha256);
    mdm_wr_be(w, e->completed_ms, 8);
    wr_groups(w, e->n_groups, e->groups);
}

static int dec_enrollment(const void *id, size_t idlen, const void *val, size_t vlen,
                          void *out)
{
    mdm_enrollment_t *e = out;
    struct mdm_rd r = mdm_rd_start(e, sizeof(*e), val, vlen);
    r.err = id_take(id, idlen, e->id, sizeof(e->id), mdm_enroll_id_valid);
    unsigned format = mdm_rd_format(&r, FORMAT_2);
    switch (format) {
    case FORMAT_1:
    case FORMAT_2:
        MDM_RD_STR(&r, e->user_name);
        e->method = mdm_rd_u8(&r);
        MDM_RD_STR(&r, e->invitation_id);
        e->created_ms = mdm_rd_be(&r, 8);
        e->challenge_expires_ms = mdm_rd_be(&r, 8);
        MDM_RD_STR(&r, e->udid);
        MDM_RD_STR(&r, e->cert_sha256);
        e->completed_ms = mdm_rd_be(&r, 8);
        if (format == FORMAT_2)
            rd_groups(&r, &e->n_groups, e->groups);
        if (r.err == 0 && (!mdm_user_ref_valid(e->user_name) || !method_valid(e->method) ||
                           !opt_id_ok(e->invitation_id)))
            r.err = -EBADMSG;
        break;
    }
    return mdm_rd_finish(&r, e, sizeof(*e));
}

void mdm_store_put_enrollment(mdm_batch_t *b, const mdm_enrollment_t *e)
{
    assert(b && e);
    assert(mdm_enroll_id_valid(e->id) && mdm_user_ref_valid(e->user_name));
    assert(method_valid(e->method) && opt_id_ok(e->invitation_id));
    assert(groups_valid(e->n_groups, e->groups));
    put_record(b, K_ENROLLMENT, e->id, strlen(e->id), enc_enrollment, e);
}

void mdm_store_delete_enrollment(mdm_batch_t *b, const char *id)
{
    assert(b && mdm_enroll_id_valid(id));
    delete_record(b, K_ENROLLMENT, id, strlen(id));
}

/* ---- sign-on failure counters --------------------------------------------------------------- */

static void enc_failures(struct mdm_wr *w, const void *rec)
{
    const mdm_signon_failures_t *f = rec;
    mdm_wr_u8(w, FORMAT_1);
    mdm_wr_be(w, f->count, 4);
    mdm_wr_be(w, f->window_start_ms, 8);
    mdm_wr_be(w, f->locked_until_ms, 8);
}

static int dec_failures(enum mdm_signon_kind kind, const void *id, size_t idlen,
                        const void *val, size_t vlen, mdm_signon_failures_t *f)
{
    struct mdm_rd r = mdm_rd_start(f, sizeof(*f), val, vlen);
    r.err = id_take(id, idlen, f->subject, sizeof(f->subject), NULL);
    f->kind = (uint8_t)kind;
    switch (mdm_rd_format(&r, FORMAT_1)) {
    case FORMAT_1:
        f->count = (uint32_t)mdm_rd_be(&r, 4);
        f->window_start_ms = mdm_rd_be(&r, 8);
        f->locked_until_ms = mdm_rd_be(&r, 8);
        break;
    }
    return mdm_rd_finish(&r, f, sizeof(*f));
}

static int dec_fail_user(const void *id, size_t idlen, const void *val, size_t vlen,
                         void *out)
{
    return dec_failures(MDM_SIGNON_USER, id, idlen, val, vlen, out);
}

static int dec_fail_address(const void *id, size_t idlen, const void *val, size_t vlen,
                            void *out)
{
    return dec_failures(MDM_SIGNON_ADDRESS, id, idlen, val, vlen, out);
}

void mdm_store_put_signon_failures(mdm_batch_t *b, const mdm_signon_failures_t *f)
{
    assert(b && f);
    assert(kind_ok(f->kind) && subject_ok(f->subject));
    put_record(b, fail_kind(f->kind), f->subject, strlen(f->subject), enc_failures, f);
}

void mdm_store_delete_signon_failures(mdm_batch_t *b, enum mdm_signon_kind kind,
                                      const char *subject)
{
    assert(b && kind_ok(kind) && subject_ok(subject));
    delete_record(b, fail_kind(kind), subject, strlen(subject));
}

/* ---- identity certificate index ------------------------------------------------------------ */

#define CERT_PREFIX "ec/"
#define REVOKED_PREFIX "rc/"

static bool cert_hex_ok(const char *hex)
{
    if (!hex || strnlen(hex, MDM_SHA256_HEX_LEN + 1) != MDM_SHA256_HEX_LEN)
        return false;
    for (int i = 0; i < MDM_SHA256_HEX_LEN; i++)
        if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
            return false;
    return true;
}

static void prefixed_cert_key(struct key *k, const char *prefix, const char *hex)
{
    k->n = strlen(prefix) + MDM_SHA256_HEX_LEN;
    memcpy(k->b, prefix, strlen(prefix));
    memcpy(k->b + strlen(prefix), hex, MDM_SHA256_HEX_LEN);
}

static void cert_key(struct key *k, const char *hex)
{
    static_assert(sizeof(CERT_PREFIX) - 1 + MDM_SHA256_HEX_LEN <= KEY_MAX, "fits");
    prefixed_cert_key(k, CERT_PREFIX, hex);
}

static void enc_cert(struct mdm_wr *w, const void *rec)
{
    mdm_wr_u8(w, FORMAT_1);
    mdm_wr_str(w, rec, MDM_ENROLL_ID_LEN + 1);
}

void mdm_store_put_enrollment_cert(mdm_batch_t *b, const char *cert_sha256_hex,
                                   const char *enrollment_id)
{
    assert(b && cert_hex_ok(cert_sha256_hex) && mdm_enroll_id_valid(enrollment_id));
    struct key k;
    cert_key(&k, cert_sha256_hex);
    mdm_put_encoded(b, MDM_CF_ENROLL, k.b, k.n, enc_cert, enrollment_id);
}

void mdm_store_delete_enrollment_cert(mdm_batch_t *b, const char *cert_sha256_hex)
{
    assert(b && cert_hex_ok(cert_sha256_hex));
    struct key k;
    cert_key(&k, cert_sha256_hex);
    mdm_batch_delete(b, MDM_CF_ENROLL, k.b, k.n);
}

static int on_cert_view(void *arg, const void *val, size_t vlen)
{
    char *id = arg;
    struct mdm_rd r = {.p = val, .left = vlen};
    if (mdm_rd_format(&r, FORMAT_1) == FORMAT_1)
        mdm_rd_str(&r, id, MDM_ENROLL_ID_LEN + 1);
    int ret = mdm_rd_end(&r);
    if (ret == 0 && !mdm_enroll_id_valid(id))
        ret = -EBADMSG;
    return ret;
}

int mdm_store_get_enrollment_cert(mdm_store_t *s, const char *cert_sha256_hex,
                                  char enrollment_id[MDM_ENROLL_ID_LEN + 1])
{
    assert(s && enrollment_id);
    enrollment_id[0] = 0;
    if (!cert_hex_ok(cert_sha256_hex))
        return -EINVAL;
    struct key k;
    cert_key(&k, cert_sha256_hex);
    int ret = mdm_store_get_view(s, MDM_CF_ENROLL, k.b, k.n, on_cert_view, enrollment_id);
    if (ret != 0)
        enrollment_id[0] = 0;
    return ret;
}

/* ---- revoked identity certificates ----------------------------------------------------------- */

static void enc_revoked(struct mdm_wr *w, const void *rec)
{
    const mdm_revoked_cert_t *rc = rec;
    mdm_wr_u8(w, FORMAT_1);
    MDM_WR_STR(w, rc->udid);
    mdm_wr_be(w, rc->revoked_ms, 8);
}

void mdm_store_put_revoked_cert(mdm_batch_t *b, const char *cert_sha256_hex,
                                const mdm_revoked_cert_t *rc)
{
    assert(b && rc && cert_hex_ok(cert_sha256_hex));
    static_assert(sizeof(REVOKED_PREFIX) - 1 + MDM_SHA256_HEX_LEN <= KEY_MAX, "fits");
    struct key k;
    prefixed_cert_key(&k, REVOKED_PREFIX, cert_sha256_hex);
    mdm_put_encoded(b, MDM_CF_ENROLL, k.b, k.n, enc_revoked, rc);
}

static int on_revoked_view(void *arg, const void *val, size_t vlen)
{
    mdm_revoked_cert_t *rc = arg;
    struct mdm_rd r = mdm_rd_start(rc, sizeof(*rc), val, vlen);
    if (mdm_rd_format(&r, FORMAT_1) == FORMAT_1) {
        MDM_RD_STR(&r, rc->udid);
        rc->revoked_ms = mdm_rd_be(&r, 8);
    }
    return mdm_rd_finish(&r, rc, sizeof(*rc));
}

int mdm_store_get_revoked_cert(mdm_store_t *s, const char *cert_sha256_hex,
                               mdm_revoked_cert_t *out)
{
    assert(s && out);
    memset(out, 0, sizeof(*out));
    if (!cert_hex_ok(cert_sha256_hex))
        return -EINVAL;
    struct key k;
    prefixed_cert_key(&k, REVOKED_PREFIX, cert_sha256_hex);
    int ret = mdm_store_get_view(s, MDM_CF_ENROLL, k.b, k.n, on_revoked_view, out);
    if (ret != 0)
        memset(out, 0, sizeof(*out));
    return ret;
}

/* ---- generic get ---------------------------------------------------------------------------- */

struct view {
    enum kind kind;
    const void *id;
    size_t idlen;
    void *out;
};

static int on_view(void *arg, const void *val, size_t vlen)
{
    struct view *v = arg;
    return kinds[v->kind].dec(v->id, v->idlen, val, vlen, v->out);
}

/* Reads the record of kind and id[0..idlen) into out (kinds[kind].size bytes); zeroed unless 0. */
static int get_record(mdm_store_t *s, enum kind kind, const void *id, size_t idlen, void *out)
{
    struct key k;
    key_make(&k, kind, id, idlen);
    struct view v = {kind, id, idlen, out};
    int ret = mdm_store_get_view(s, MDM_CF_ENROLL, k.b, k.n, on_view, &v);
    if (ret != 0)
        memset(out, 0, kinds[kind].size);
    return ret;
}

int mdm_store_get_local_user(mdm_store_t *s, const char *name, mdm_local_user_t *out)
{
    assert(s && out);
    memset(out, 0, sizeof(*out));
    if (!mdm_user_name_valid(name))
        return -EINVAL;
    return get_record(s, K_USER, name, strlen(name), out);
}

int mdm_store_get_invitation(mdm_store_t *s, const char *id, mdm_invitation_t *out)
{
    assert(s && out);
    memset(out, 0, sizeof(*out));
    if (!mdm_enroll_id_valid(id))
        return -EINVAL;
    return get_record(s, K_INVITATION, id, strlen(id), out);
}

int mdm_store_get_scep_challenge(mdm_store_t *s, const uint8_t hash[MDM_SHA256_LEN],
                                 mdm_scep_challenge_t *out)
{
    assert(s && hash && out);
    memset(out, 0, sizeof(*out));
    return get_record(s, K_CHALLENGE, hash, MDM_SHA256_LEN, out);
}

int mdm_store_get_enrollment(mdm_store_t *s, const char *id, mdm_enrollment_t *out)
{
    assert(s && out);
    memset(out, 0, sizeof(*out));
    if (!mdm_enroll_id_valid(id))
        return -EINVAL;
    return get_record(s, K_ENROLLMENT, id, strlen(id), out);
}

int mdm_store_get_signon_failures(mdm_store_t *s, enum mdm_signon_kind kind, const char *subject,
                                  mdm_signon_failures_t *out)
{
    assert(s && out);
    memset(out, 0, sizeof(*out));
    if (!kind_ok(kind) || !subject_ok(subject))
        return -EINVAL;
    return get_record(s, fail_kind(kind), subject, strlen(subject), out);
}

/* ---- listings ------------------------------------------------------------------------------- */

MDM_LISTING_OF(list_users, mdm_local_user_t)
MDM_LISTING_OF(list_invitations, mdm_invitation_t)
MDM_LISTING_OF(list_challenges, mdm_scep_challenge_t)
MDM_LISTING_OF(list_enrollments, mdm_enrollment_t)
MDM_LISTING_OF(list_failures, mdm_signon_failures_t)

/* The listing of kind strictly after the identifier after[0..alen) (alen 0: from the start).
 * Its prefix and bound both point into *k: the prefix is the bound's first bytes. */
static struct mdm_listing kind_listing(struct key *k, enum kind kind, const void *after,
                                       size_t alen)
{
    key_make(k, kind, after, alen);
    size_t plen = strlen(kinds[kind].prefix);
    return (struct mdm_listing){.cf = MDM_CF_ENROLL,
                                .prefix = k->b,
                                .plen = plen,
                                .after = alen ? k->b : NULL,
                                .alen = alen ? k->n : 0,
                                .key_skip = plen,
                                .dec = kinds[kind].dec,
                                .what = kinds[kind].what};
}

/* Length of an `after` identifier of at most max bytes (NULL = 0), or -1 when longer. */
static int after_len(const char *after, size_t max)
{
    if (!after)
        return 0;
    size_t n = strnlen(after, max + 1);
    return n <= max ? (int)n : -1;
}

int mdm_store_list_local_users(mdm_store_t *s, const char *after,
                               int (*cb)(void *arg, const mdm_local_user_t *u), void *arg)
{
    assert(s && cb);
    int alen = after_len(after, MDM_USER_NAME_MAX);
    if (alen < 0)
        return -EINVAL;
    struct key k;
    struct mdm_listing l = kind_listing(&k, K_USER, after, (size_t)alen);
    return list_users(s, &l, cb, arg);
}

int mdm_store_list_invitations(mdm_store_t *s, const char *after,
                               int (*cb)(void *arg, const mdm_invitation_t *inv), void *arg)
{
    assert(s && cb);
    int alen = after_len(after, MDM_ENROLL_ID_LEN);
    if (alen < 0)
        return -EINVAL;
    struct key k;
    struct mdm_listing l = kind_listing(&k, K_INVITATION, after, (size_t)alen);
    return list_invitations(s, &l, cb, arg);
}

int mdm_store_list_scep_challenges(mdm_store_t *s, const uint8_t *after,
                                   int (*cb)(void *arg, const mdm_scep_challenge_t *c),
                                   void *arg)
{
    assert(s && cb);
    struct key k;
    struct mdm_listing l = kind_listing(&k, K_CHALLENGE, after, after ? MDM_SHA256_LEN : 0);
    return list_challenges(s, &l, cb, arg);
}

int mdm_store_list_enrollments(mdm_store_t *s, const char *after,
                               int (*cb)(void *arg, const mdm_enrollment_t *e), void *arg)
{
    assert(s && cb);
    int alen = after_len(after, MDM_ENROLL_ID_LEN);
    if (alen < 0)
        return -EINVAL;
    struct key k;
    struct mdm_listing l = kind_listing(&k, K_ENROLLMENT, after, (size_t)alen);
    return list_enrollments(s, &l, cb, arg);
}

int mdm_store_list_signon_failures(mdm_store_t *s, enum mdm_signon_kind kind, const char *after,
                                   int (*cb)(void *arg, const mdm_signon_failures_t *f),
                                   void *arg)
{
    assert(s && cb);
    int alen = after_len(after, MDM_SIGNON_SUBJECT_MAX);
    if (!kind_ok(kind) || alen < 0)
        return -EINVAL;
    struct key k;
    struct mdm_listing l = kind_listing(&k, fail_kind(kind), after, (size_t)alen);
    return list_failures(s, &l, cb, arg);
}
