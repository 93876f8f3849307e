/*
 * storage/enroll tests on temporary RocksDB directories: round trips of every record kind
 * (local user, invitation, SCEP challenge, enrollment, sign-on failures per user and per
 * address) with every field at its limit and sparse; the documented value layouts (values
 * built by hand decode, among them an enrollment of the first format, without groups); strict
 * decoding (every truncation, trailing bytes, unknown formats,
 * unknown flag bits and enum values, too many or empty groups, bad ids in values and keys ->
 * -EBADMSG with the output zeroed; byte flips decode or are rejected, never overread: run it
 * under ASan); identifier checks (-EINVAL); overwrite and delete; listings in key order with
 * paging, kinds isolated from each other, and a callback's stop value returned.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/buf.h"
#include "core/common.h"
#include "core/crypto.h"
#include "core/log.h"
#include "storage/enroll.h"
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

/* ---- the record kinds, generically (test knowledge of the key layouts) ---------------------- */

enum kind { USER, INVITATION, CHALLENGE, ENROLLMENT, FAIL_USER, FAIL_ADDRESS, NKINDS };
static const char *const prefixes[NKINDS] = {"u/", "i/", "c/", "e/", "fu/", "fa/"};

/* The format byte writers use for kind k. */
static unsigned newest_format(enum kind k)
{
    return k == ENROLLMENT ? 2 : 1;
}

/* Identifier number n of kind (valid for it) into id; returns its length. */
static size_t make_id(enum kind k, unsigned n, char *id)
{
    switch (k) {
    case USER:
    case FAIL_USER:
    case FAIL_ADDRESS: return (size_t)snprintf(id, 64, "t%06u", n);
    case INVITATION:
    case ENROLLMENT: return (size_t)snprintf(id, 64, "%032x", n);
    case CHALLENGE:
        memset(id, 0xc5, MDM_SHA256_LEN);
        for (int i = 0; i < 4; i++)
            id[MDM_SHA256_LEN - 1 - i] = (char)(n >> (8 * i));
        id[0] = 0; /* binary keys: zero bytes included */
        return MDM_SHA256_LEN;
    default: break;
    }
    return 0;
}

static size_t make_key(enum kind k, const char *id, size_t idlen, uint8_t *key)
{
    size_t plen = strlen(prefixes[k]);
    memcpy(key, prefixes[k], plen);
    memcpy(key + plen, id, idlen);
    return plen + idlen;
}

/* Reads the record of kind k with identifier id through the typed API; *zeroed tells whether
 * the output was zero after a failure. */
static int get_kind(mdm_store_t *s, enum kind k, const char *id, size_t idlen, bool *zeroed)
{
    static union {
        mdm_local_user_t u;
        mdm_invitation_t i;
        mdm_scep_challenge_t c;
        mdm_enrollment_t e;
        mdm_signon_failures_t f;
    } out;
    char str[80];
    memcpy(str, id, idlen);
    str[idlen] = 0;
    memset(&out, 0x5a, sizeof(out));
    int ret;
    size_t size;
    switch (k) {
    case USER: ret = mdm_store_get_local_user(s, str, &out.u), size = sizeof(out.u); break;
    case INVITATION: ret = mdm_store_get_invitation(s, str, &out.i), size = sizeof(out.i); break;
    case CHALLENGE:
        ret = mdm_store_get_scep_challenge(s, (const uint8_t *)id, &out.c), size = sizeof(out.c);
        break;
    case ENROLLMENT: ret = mdm_store_get_enrollment(s, str, &out.e), size = sizeof(out.e); break;
    default:
        ret = mdm_store_get_signon_failures(
            s, k == FAIL_USER ? MDM_SIGNON_USER : MDM_SIGNON_ADDRESS, str, &out.f);
        size = sizeof(out.f);
        break;
    }
    *zeroed = all_zero(&out, size);
    return ret;
}

/* -EBADMSG with the output zeroed. */
static bool bad(mdm_store_t *s, enum kind k, const char *id, size_t idlen)
{
    bool zeroed;
    return get_kind(s, k, id, idlen, &zeroed) == -EBADMSG && zeroed;
}

/* ---- full records ------------------------------------------------------------------------- */

static void full_user(mdm_local_user_t *u, const char *name)
{
    memset(u, 0, sizeof(*u));
    snprintf(u->name, sizeof(u->name), "%s", name);
    FILL_MAX(u->display_name, 'd');
    u->display_name[0] = (char)0xc3; /* UTF-8 bytes pass through */
    u->display_name[1] = (char)0xa9;
    FILL_MAX(u->email, 'e');
    u->n_groups = MDM_USER_GROUPS_MAX;
    for (unsigned i = 0; i < u->n_groups; i++) {
        FILL_MAX(u->groups[i], 'g');
        u->groups[i][0] = (char)('A' + i);
    }
    FILL_MAX(u->password_hash, 'h');
    u->disabled = true;
    u->created_ms = UINT64_MAX;
    u->updated_ms = 0x0102030405060708ull;
    u->password_changed_ms = 1;
}

static bool user_eq(const mdm_local_user_t *a, const mdm_local_user_t *b)
{
    if (a->n_groups != b->n_groups)
        return false;
    for (unsigned i = 0; i < a->n_groups; i++)
        if (strcmp(a->groups[i], b->groups[i]) != 0)
            return false;
    return strcmp(a->name, b->name) == 0 && strcmp(a->display_name, b->display_name) == 0 &&
           strcmp(a->email, b->email) == 0 && strcmp(a->password_hash, b->password_hash) == 0 &&
           a->disabled == b->disabled && a->created_ms == b->created_ms &&
           a->updated_ms == b->updated_ms && a->password_changed_ms == b->password_changed_ms;
}

static void full_invitation(mdm_invitation_t *inv, const char *id)
{
    memset(inv, 0, sizeof(*inv));
    snprintf(inv->id, sizeof(inv->id), "%s", id);
    FILL_MAX(inv->user_name, 'u');
    inv->user_name[5] = ' '; /* a directory user name may hold spaces */
    inv->mode = MDM_INVITE_PASSWORD_AND_PIN;
    inv->status = MDM_INVITE_REVOKED;
    FILL_MAX(inv->pin_hash, 'p');
    inv->created_ms = UINT64_MAX;
    inv->expires_ms = UINT64_MAX - 1;
    inv->used_ms = 0x8000000000000000ull;
    FILL_MAX(inv->created_by, 'c');
    memset(inv->enrollment_id, 'f', MDM_ENROLL_ID_LEN);
}

static bool invitation_eq(const mdm_invitation_t *a, const mdm_invitation_t *b)
{
    return strcmp(a->id, b->id) == 0 && strcmp(a->user_name, b->user_name) == 0 &&
           a->mode == b->mode && a->status == b->status &&
           strcmp(a->pin_hash, b->pin_hash) == 0 && a->created_ms == b->created_ms &&
           a->expires_ms == b->expires_ms && a->used_ms == b->used_ms &&
           strcmp(a->created_by, b->created_by) == 0 &&
           strcmp(a->enrollment_id, b->enrollment_id) == 0;
}

static void full_enrollment(mdm_enrollment_t *e, const char *id)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->id, sizeof(e->id), "%s", id);
    FILL_MAX(e->user_name, 'n');
    e->method = MDM_ENROLL_INVITATION;
    memset(e->invitation_id, '0', MDM_ENROLL_ID_LEN);
    e->created_ms = UINT64_MAX;
    e->challenge_expires_ms = 42;
    FILL_MAX(e->udid, 'U');
    FILL_MAX(e->cert_sha256, 'a');
    e->completed_ms = UINT64_MAX - 7;
    e->n_groups = MDM_USER_GROUPS_MAX;
    for (unsigned i = 0; i < MDM_USER_GROUPS_MAX; i++) {
        FILL_MAX(e->groups[i], 'g');
        e->groups[i][0] = (char)('A' + i);
        e->groups[i][1] = ' '; /* directory group names may hold spaces */
    }
}

static bool groups_eq(unsigned na, const char (*a)[MDM_GROUP_NAME_MAX + 1], unsigned nb,
                      const char (*b)[MDM_GROUP_NAME_MAX + 1])
{
    if (na != nb)
        return false;
    for (unsigned i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

static bool enrollment_eq(const mdm_enrollment_t *a, const mdm_enrollment_t *b)
{
    return strcmp(a->id, b->id) == 0 && strcmp(a->user_name, b->user_name) == 0 &&
           a->method == b->method && strcmp(a->invitation_id, b->invitation_id) == 0 &&
           a->created_ms == b->created_ms && a->challenge_expires_ms == b->challenge_expires_ms &&
           strcmp(a->udid, b->udid) == 0 && strcmp(a->cert_sha256, b->cert_sha256) == 0 &&
           a->completed_ms == b->completed_ms &&
           groups_eq(a->n_groups, a->groups, b->n_groups, b->groups);
}

static void full_failures(mdm_signon_failures_t *f, enum mdm_signon_kind kind, const char *subj)
{
    memset(f, 0, sizeof(*f));
    f->kind = (uint8_t)kind;
    snprintf(f->subject, sizeof(f->subject), "%s", subj);
    f->count = UINT32_MAX;
    f->window_start_ms = UINT64_MAX;
    f->locked_until_ms = 0x1122334455667788ull;
}

static bool failures_eq(const mdm_signon_failures_t *a, const mdm_signon_failures_t *b)
{
    return a->kind == b->kind && strcmp(a->subject, b->subject) == 0 && a->count == b->count &&
           a->window_start_ms == b->window_start_ms && a->locked_until_ms == b->locked_until_ms;
}

/* ---- identifiers and names ------------------------------------------------------------------ */

static void test_identifiers(void)
{
    CHECK(mdm_user_name_valid("alice"));
    CHECK(mdm_user_name_valid("A.b_c-d@example.org"));
    CHECK(!mdm_user_name_valid(""));
    CHECK(!mdm_user_name_valid(NULL));
    CHECK(!mdm_user_name_valid("a b"));
    CHECK(!mdm_user_name_valid("a*"));
    CHECK(!mdm_user_name_valid("a)(uid=*"));
    CHECK(!mdm_user_name_valid("caf\xc3\xa9"));
    char n63[64], n64[65];
    memset(n63, 'x', 63);
    n63[63] = 0;
    memset(n64, 'x', 64);
    n64[64] = 0;
    CHECK(mdm_user_name_valid(n63));
    CHECK(!mdm_user_name_valid(n64));
    CHECK(mdm_user_ref_valid("Jane Doe"));
    CHECK(mdm_user_ref_valid("caf\xc3\xa9"));
    CHECK(!mdm_user_ref_valid("a\tb"));
    CHECK(!mdm_user_ref_valid("a\x7f"));
    CHECK(!mdm_user_ref_valid(n64));
    CHECK(mdm_group_name_valid("Domain Users"));
    CHECK(!mdm_group_name_valid(""));
    CHECK(!mdm_group_name_valid("a\nb"));

    char id[MDM_ENROLL_ID_LEN + 1], id2[MDM_ENROLL_ID_LEN + 1];
    CHECK_EQ_INT(mdm_enroll_id_new(id), 0);
    CHECK_EQ_INT(mdm_enroll_id_new(id2), 0);
    CHECK(mdm_enroll_id_valid(id));
    CHECK_EQ_INT(strlen(id), MDM_ENROLL_ID_LEN);
    CHECK(strcmp(id, id2) != 0);
    CHECK(!mdm_enroll_id_valid("0123456789ABCDEF0123456789abcdef")); /* upper case */
    CHECK(!mdm_enroll_id_valid("0123456789abcdef0123456789abcde"));  /* 31 */
    CHECK(!mdm_enroll_id_valid("0123456789abcdef0123456789abcdef0")); /* 33 */
    CHECK(!mdm_enroll_id_valid("0123456789abcdef0123456789abcdeg"));
    CHECK(!mdm_enroll_id_valid(""));

    uint8_t h1[MDM_SHA256_LEN], h2[MDM_SHA256_LEN];
    CHECK_EQ_INT(mdm_scep_challenge_hash("secret", 6, h1), 0);
    CHECK_EQ_INT(mdm_sha256("secret", 6, h2), 0);
    CHECK(memcmp(h1, h2, sizeof(h1)) == 0);

    CHECK_STR(mdm_invite_mode_name(MDM_INVITE_PASSWORD), "password");
    CHECK_STR(mdm_invite_mode_name(MDM_INVITE_PIN), "pin");
    CHECK_STR(mdm_invite_mode_name(MDM_INVITE_PASSWORD_AND_PIN), "password_and_pin");
    CHECK_STR(mdm_invite_mode_name((enum mdm_invite_mode)9), "unknown");
    CHECK_STR(mdm_invite_status_name(MDM_INVITE_PENDING), "pending");
    CHECK_STR(mdm_invite_status_name(MDM_INVITE_USED), "used");
    CHECK_STR(mdm_invite_status_name(MDM_INVITE_EXPIRED), "expired");
    CHECK_STR(mdm_invite_status_name(MDM_INVITE_REVOKED), "revoked");
    CHECK_STR(mdm_invite_status_name((enum mdm_invite_status)9), "unknown");
    CHECK_STR(mdm_enroll_method_name(MDM_ENROLL_WEB), "web");
    CHECK_STR(mdm_enroll_method_name(MDM_ENROLL_INVITATION), "invitation");
    CHECK_STR(mdm_enroll_method_name(MDM_ENROLL_RENEWAL), "renewal");
    CHECK_STR(mdm_enroll_method_name((enum mdm_enroll_method)9), "unknown");
}

/* ---- round trips, overwrite, delete --------------------------------------------------------- */

static void test_round_trip(void)
{
    char *dir = strdup(check_tmpdir("enroll-rt"));
    mdm_store_t *s = open_store(dir);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();

    char uname[MDM_USER_NAME_MAX + 1];
    memset(uname, 'z', MDM_USER_NAME_MAX);
    memcpy(uname, "a.b_c-d@e", 9);
    uname[MDM_USER_NAME_MAX] = 0;
    static mdm_local_user_t u, sparse_u, gu;
    full_user(&u, uname);
    memset(&sparse_u, 0, sizeof(sparse_u));
    snprintf(sparse_u.name, sizeof(sparse_u.name), "x");
    mdm_store_put_local_user(b, &u);
    mdm_store_put_local_user(b, &sparse_u);

    char iid[MDM_ENROLL_ID_LEN + 1];
    CHECK_EQ_INT(mdm_enroll_id_new(iid), 0);
    static mdm_invitation_t inv, sparse_inv, ginv;
    full_invitation(&inv, iid);
    memset(&sparse_inv, 0, sizeof(sparse_inv));
    snprintf(sparse_inv.id, sizeof(sparse_inv.id), "%032x", 1);
    snprintf(sparse_inv.user_name, sizeof(sparse_inv.user_name), "bob");
    mdm_store_put_invitation(b, &inv);
    mdm_store_put_invitation(b, &sparse_inv);

    mdm_scep_challenge_t ch = {0}, sparse_ch = {0}, gch;
    CHECK_EQ_INT(mdm_scep_challenge_hash("challenge-1", 11, ch.hash), 0);
    snprintf(ch.enrollment_id, sizeof(ch.enrollment_id), "%s", iid);
    ch.expires_ms = UINT64_MAX;
    ch.used = true;
    ch.certificate_only = true;
    CHECK_EQ_INT(mdm_scep_challenge_hash("", 0, sparse_ch.hash), 0);
    mdm_store_put_scep_challenge(b, &ch);
    mdm_store_put_scep_challenge(b, &sparse_ch);

    static mdm_enrollment_t e, sparse_e, ge;
    char eid[MDM_ENROLL_ID_LEN + 1];
    CHECK_EQ_INT(mdm_enroll_id_new(eid), 0);
    full_enrollment(&e, eid);
    memset(&sparse_e, 0, sizeof(sparse_e));
    snprintf(sparse_e.id, sizeof(sparse_e.id), "%032x", 2);
    snprintf(sparse_e.user_name, sizeof(sparse_e.user_name), "bob");
    mdm_store_put_enrollment(b, &e);
    mdm_store_put_enrollment(b, &sparse_e);

    mdm_signon_failures_t fu, fa, gf;
    char subj[MDM_SIGNON_SUBJECT_MAX + 1];
    memset(subj, 'S', MDM_SIGNON_SUBJECT_MAX);
    subj[MDM_SIGNON_SUBJECT_MAX] = 0;
    subj[3] = (char)0xff; /* any byte but NUL */
    full_failures(&fu, MDM_SIGNON_USER, subj);
    full_failures(&fa, MDM_SIGNON_ADDRESS, subj);
    fa.count = 3; /* same subject, other kind: a separate record */
    mdm_store_put_signon_failures(b, &fu);
    mdm_store_put_signon_failures(b, &fa);

    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);

    CHECK_EQ_INT(mdm_store_get_local_user(s, uname, &gu), 0);
    CHECK(user_eq(&gu, &u));
    CHECK_EQ_INT(mdm_store_get_local_user(s, "x", &gu), 0);
    CHECK(user_eq(&gu, &sparse_u));
    CHECK(!gu.disabled && gu.n_groups == 0 && gu.password_hash[0] == 0);
    CHECK_EQ_INT(mdm_store_get_invitation(s, iid, &ginv), 0);
    CHECK(invitation_eq(&ginv, &inv));
    CHECK_EQ_INT(mdm_store_get_invitation(s, sparse_inv.id, &ginv), 0);
    CHECK(invitation_eq(&ginv, &sparse_inv));
    CHECK_EQ_INT(ginv.mode, MDM_INVITE_PASSWORD);
    CHECK_EQ_INT(ginv.status, MDM_INVITE_PENDING);
    CHECK_EQ_INT(mdm_store_get_scep_challenge(s, ch.hash, &gch), 0);
    CHECK(memcmp(gch.hash, ch.hash, MDM_SHA256_LEN) == 0);
    CHECK_STR(gch.enrollment_id, iid);
    CHECK(gch.expires_ms == UINT64_MAX && gch.used && gch.certificate_only);
    CHECK_EQ_INT(mdm_store_get_scep_challenge(s, sparse_ch.hash, &gch), 0);
    CHECK(!gch.used && !gch.certificate_only && gch.expires_ms == 0 &&
          gch.enrollment_id[0] == 0);
    CHECK_EQ_INT(mdm_store_get_enrollment(s, eid, &ge), 0);
    CHECK(enrollment_eq(&ge, &e));
    CHECK_EQ_INT(mdm_store_get_enrollment(s, sparse_e.id, &ge), 0);
    CHECK(enrollment_eq(&ge, &sparse_e));
    CHECK_EQ_INT(ge.n_groups, 0);
    CHECK_EQ_INT(mdm_store_get_signon_failures(s, MDM_SIGNON_USER, subj, &gf), 0);
    CHECK(failures_eq(&gf, &fu));
    CHECK_EQ_INT(mdm_store_get_signon_failures(s, MDM_SIGNON_ADDRESS, subj, &gf), 0);
    CHECK(failures_eq(&gf, &fa));

    /* Values are small: key fields are not repeated; a failure counter is 21 bytes. */
    mdm_buf_t raw;
    mdm_buf_init(&raw, 0);
    uint8_t k[128];
    CHECK_EQ_INT(mdm_store_get(s, MDM_CF_ENROLL, k, make_key(FAIL_USER, subj, strlen(subj), k),
                               &raw),
                 0);
    CHECK_EQ_INT(raw.len, 21);
    mdm_buf_reset(&raw);
    CHECK_EQ_INT(mdm_store_get(s, MDM_CF_ENROLL, k, make_key(USER, "x", 1, k), &raw), 0);
    CHECK_EQ_INT(raw.len, 1 + 1 + 2 + 2 + 1 + 2 + 3 * 8);
    mdm_buf_dispose(&raw);

    /* Not found, and identifiers that cannot exist. */
    uint8_t nohash[MDM_SHA256_LEN] = {1};
    CHECK_EQ_INT(mdm_store_get_local_user(s, "nobody", &gu), MDM_ENOTFOUND);
    CHECK(all_zero(&gu, sizeof(gu)));
    CHECK_EQ_INT(mdm_store_get_invitation(s, "0123456789abcdef0123456789abcdef", &ginv),
                 MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_scep_challenge(s, nohash, &gch), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_enrollment(s, "0123456789abcdef0123456789abcdef", &ge),
                 MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_signon_failures(s, MDM_SIGNON_USER, "nobody", &gf),
                 MDM_ENOTFOUND);
    char too_long[80];
    memset(too_long, 'l', 64);
    too_long[64] = 0;
    CHECK_EQ_INT(mdm_store_get_local_user(s, "", &gu), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_local_user(s, too_long, &gu), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_local_user(s, "a b", &gu), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_local_user(s, NULL, &gu), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_invitation(s, "short", &ginv), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_invitation(s, "0123456789ABCDEF0123456789ABCDEF", &ginv),
                 -EINVAL);
    CHECK_EQ_INT(mdm_store_get_enrollment(s, "", &ge), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_signon_failures(s, MDM_SIGNON_USER, "", &gf), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_signon_failures(s, MDM_SIGNON_ADDRESS, too_long, &gf), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_signon_failures(s, (enum mdm_signon_kind)7, "x", &gf), -EINVAL);
    CHECK(all_zero(&gf, sizeof(gf)));

    /* Overwrite: the newest put wins. */
    u.disabled = false;
    u.n_groups = 1;
    snprintf(u.password_hash, sizeof(u.password_hash), "$argon2id$v=19$m=8,t=1,p=1$x$y");
    inv.status = MDM_INVITE_USED;
    ch.used = false;
    e.udid[0] = 0;
    e.n_groups = 2;
    snprintf(e.groups[1], sizeof(e.groups[1]), "ops");
    fu.count = 0;
    mdm_store_put_local_user(b, &u);
    mdm_store_put_invitation(b, &inv);
    mdm_store_put_scep_challenge(b, &ch);
    mdm_store_put_enrollment(b, &e);
    mdm_store_put_signon_failures(b, &fu);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    CHECK_EQ_INT(mdm_store_get_local_user(s, uname, &gu), 0);
    CHECK(user_eq(&gu, &u));
    CHECK_EQ_INT(mdm_store_get_invitation(s, iid, &ginv), 0);
    CHECK(invitation_eq(&ginv, &inv));
    CHECK_EQ_INT(mdm_store_get_scep_challenge(s, ch.hash, &gch), 0);
    CHECK(!gch.used);
    CHECK_EQ_INT(mdm_store_get_enrollment(s, eid, &ge), 0);
    CHECK(enrollment_eq(&ge, &e));
    CHECK_EQ_INT(mdm_store_get_signon_failures(s, MDM_SIGNON_USER, subj, &gf), 0);
    CHECK(failures_eq(&gf, &fu));

    /* Delete: each record alone; its neighbours of other kinds stay. */
    mdm_store_delete_local_user(b, uname);
    mdm_store_delete_invitation(b, iid);
    mdm_store_delete_scep_challenge(b, ch.hash);
    mdm_store_delete_enrollment(b, eid);
    mdm_store_delete_signon_failures(b, MDM_SIGNON_USER, subj);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    CHECK_EQ_INT(mdm_store_get_local_user(s, uname, &gu), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_invitation(s, iid, &ginv), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_scep_challenge(s, ch.hash, &gch), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_enrollment(s, eid, &ge), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_signon_failures(s, MDM_SIGNON_USER, subj, &gf), MDM_ENOTFOUND);
    CHECK_EQ_INT(mdm_store_get_signon_failures(s, MDM_SIGNON_ADDRESS, subj, &gf), 0);
    CHECK_EQ_INT(mdm_store_get_local_user(s, "x", &gu), 0);
    CHECK_EQ_INT(mdm_store_get_invitation(s, sparse_inv.id, &ginv), 0);
    CHECK_EQ_INT(mdm_store_get_scep_challenge(s, sparse_ch.hash, &gch), 0);
    CHECK_EQ_INT(mdm_store_get_enrollment(s, sparse_e.id, &ge), 0);

    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* ---- strict decoding ------------------------------------------------------------------------- */

/* A value built by hand, following the layouts documented in storage/enroll.c. */
struct vb {
    uint8_t b[4096];
    size_t n;
};

static void vb_be(struct vb *v, uint64_t x, int nbytes)
{
    for (int i = nbytes - 1; i >= 0; i--)
        v->b[v->n++] = (uint8_t)(x >> (8 * i));
}

static void vb_str(struct vb *v, const char *s)
{
    size_t n = strlen(s);
    vb_be(v, n, 2);
    memcpy(v->b + v->n, s, n);
    v->n += n;
}

/* A local user value: flags, display, email, groups, hash, then three u64. */
static void vb_user(struct vb *v, unsigned format, unsigned flags, unsigned n_groups,
                    const char *group)
{
    v->n = 0;
    vb_be(v, format, 1);
    vb_be(v, flags, 1);
    vb_str(v, "Jane");
    vb_str(v, "jane@example.org");
    vb_be(v, n_groups, 1);
    for (unsigned i = 0; i < n_groups; i++)
        vb_str(v, group);
    vb_str(v, "$argon2id$...");
    vb_be(v, 1, 8);
    vb_be(v, 2, 8);
    vb_be(v, 3, 8);
}

static void vb_invitation(struct vb *v, const char *user, unsigned mode, unsigned status,
                          const char *enrollment_id)
{
    v->n = 0;
    vb_be(v, 1, 1);
    vb_str(v, user);
    vb_be(v, mode, 1);
    vb_be(v, status, 1);
    vb_str(v, "");
    vb_be(v, 1, 8);
    vb_be(v, 2, 8);
    vb_be(v, 3, 8);
    vb_str(v, "admin");
    vb_str(v, enrollment_id);
}

static void vb_challenge(struct vb *v, unsigned flags, const char *enrollment_id)
{
    v->n = 0;
    vb_be(v, 1, 1);
    vb_be(v, flags, 1);
    vb_str(v, enrollment_id);
    vb_be(v, 99, 8);
}

/* An enrollment value of format (1 or 2); format 2 ends with n_groups copies of group. */
static void vb_enrollment(struct vb *v, unsigned format, const char *user, unsigned method,
                          const char *invitation_id, unsigned n_groups, const char *group)
{
    v->n = 0;
    vb_be(v, format, 1);
    vb_str(v, user);
    vb_be(v, method, 1);
    vb_str(v, invitation_id);
    vb_be(v, 1, 8);
    vb_be(v, 2, 8);
    vb_str(v, "UDID-1");
    vb_str(v, "");
    vb_be(v, 0, 8);
    if (format < 2)
        return;
    vb_be(v, n_groups, 1);
    for (unsigned i = 0; i < n_groups; i++)
        vb_str(v, group);
}

static void put_raw(mdm_batch_t *b, enum kind k, const char *id, size_t idlen, const void *val,
                    size_t vlen)
{
    uint8_t key[128];
    mdm_batch_put(b, MDM_CF_ENROLL, key, make_key(k, id, idlen, key), val, vlen);
}

static void test_layouts_and_damage(void)
{
    char *dir = strdup(check_tmpdir("enroll-damage"));
    mdm_store_t *s = open_store(dir);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    static struct vb v;
    const char *eid = "0123456789abcdef0123456789abcdef";
    char id[64];
    size_t il;
    bool zeroed;

    /* Hand-built values decode: the documented layouts are the real ones. */
    vb_user(&v, 1, 1, 2, "staff");
    put_raw(b, USER, "jane", 4, v.b, v.n);
    vb_invitation(&v, "Jane Doe", MDM_INVITE_PIN, MDM_INVITE_EXPIRED, eid);
    il = make_id(INVITATION, 1, id);
    put_raw(b, INVITATION, id, il, v.b, v.n);
    vb_challenge(&v, 1, eid);
    il = make_id(CHALLENGE, 1, id);
    put_raw(b, CHALLENGE, id, il, v.b, v.n);
    vb_enrollment(&v, 1, "jane", MDM_ENROLL_WEB, "", 0, "");
    il = make_id(ENROLLMENT, 1, id);
    put_raw(b, ENROLLMENT, id, il, v.b, v.n);
    vb_enrollment(&v, 2, "jane", MDM_ENROLL_WEB, "", 3, "Domain Users");
    il = make_id(ENROLLMENT, 2, id);
    put_raw(b, ENROLLMENT, id, il, v.b, v.n);
    v.n = 0;
    vb_be(&v, 1, 1);
    vb_be(&v, 5, 4);
    vb_be(&v, 6, 8);
    vb_be(&v, 7, 8);
    put_raw(b, FAIL_ADDRESS, "192.0.2.1", 9, v.b, v.n);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    mdm_local_user_t u;
    CHECK_EQ_INT(mdm_store_get_local_user(s, "jane", &u), 0);
    CHECK(u.disabled && u.n_groups == 2 && strcmp(u.groups[1], "staff") == 0);
    CHECK_STR(u.email, "jane@example.org");
    CHECK(u.created_ms == 1 && u.updated_ms == 2 && u.password_changed_ms == 3);
    mdm_invitation_t inv;
    CHECK_EQ_INT(mdm_store_get_invitation(s, "00000000000000000000000000000001", &inv), 0);
    CHECK(inv.mode == MDM_INVITE_PIN && inv.status == MDM_INVITE_EXPIRED);
    CHECK_STR(inv.user_name, "Jane Doe");
    CHECK_STR(inv.enrollment_id, eid);
    CHECK(inv.used_ms == 3);
    mdm_scep_challenge_t ch;
    il = make_id(CHALLENGE, 1, id);
    CHECK_EQ_INT(mdm_store_get_scep_challenge(s, (const uint8_t *)id, &ch), 0);
    CHECK(ch.used && ch.expires_ms == 99);
    mdm_enrollment_t en;
    CHECK_EQ_INT(mdm_store_get_enrollment(s, "00000000000000000000000000000001", &en), 0);
    CHECK(en.method == MDM_ENROLL_WEB && en.challenge_expires_ms == 2);
    CHECK_STR(en.udid, "UDID-1");
    CHECK_EQ_INT(en.n_groups, 0); /* the first format: no groups */
    CHECK_EQ_INT(mdm_store_get_enrollment(s, "00000000000000000000000000000002", &en), 0);
    CHECK_STR(en.user_name, "jane");
    CHECK_EQ_INT(en.n_groups, 3);
    CHECK_STR(en.groups[2], "Domain Users");
    CHECK(en.groups[3][0] == 0);
    mdm_signon_failures_t f;
    CHECK_EQ_INT(mdm_store_get_signon_failures(s, MDM_SIGNON_ADDRESS, "192.0.2.1", &f), 0);
    CHECK(f.kind == MDM_SIGNON_ADDRESS && f.count == 5 && f.window_start_ms == 6 &&
          f.locked_until_ms == 7);

    /* Full valid records of every kind, read back raw, are the base of the damage below. */
    static mdm_local_user_t fu;
    full_user(&fu, "t000000");
    mdm_store_put_local_user(b, &fu);
    static mdm_invitation_t finv;
    make_id(INVITATION, 0, id);
    full_invitation(&finv, id);
    mdm_store_put_invitation(b, &finv);
    mdm_scep_challenge_t fch = {.expires_ms = 5, .used = true};
    make_id(CHALLENGE, 0, (char *)fch.hash);
    memcpy(fch.enrollment_id, eid, MDM_ENROLL_ID_LEN + 1);
    mdm_store_put_scep_challenge(b, &fch);
    static mdm_enrollment_t fen;
    make_id(ENROLLMENT, 0, id);
    full_enrollment(&fen, id);
    mdm_store_put_enrollment(b, &fen);
    mdm_signon_failures_t ffu, ffa;
    full_failures(&ffu, MDM_SIGNON_USER, "t000000");
    full_failures(&ffa, MDM_SIGNON_ADDRESS, "t000000");
    mdm_store_put_signon_failures(b, &ffu);
    mdm_store_put_signon_failures(b, &ffa);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);

    mdm_buf_t raw[NKINDS];
    for (int k = 0; k < NKINDS; k++) {
        mdm_buf_init(&raw[k], 0);
        uint8_t key[128];
        il = make_id((enum kind)k, 0, id);
        CHECK_EQ_INT(mdm_store_get(s, MDM_CF_ENROLL, key, make_key((enum kind)k, id, il, key),
                                   &raw[k]),
                     0);
        CHECK(raw[k].len > 0 && mdm_buf_head(&raw[k])[0] == newest_format((enum kind)k));
    }

    /* Every truncation of every kind. */
    for (int k = 0; k < NKINDS; k++)
        for (size_t n = 0; n < raw[k].len; n++) {
            il = make_id((enum kind)k, 1000 + (unsigned)n, id);
            put_raw(b, (enum kind)k, id, il, mdm_buf_head(&raw[k]), n);
        }
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    for (int k = 0; k < NKINDS; k++) {
        int wrong = 0;
        for (size_t n = 0; n < raw[k].len; n++) {
            il = make_id((enum kind)k, 1000 + (unsigned)n, id);
            wrong += !bad(s, (enum kind)k, id, il);
        }
        if (wrong)
            fprintf(stderr, "kind %d: %d truncations accepted\n", k, wrong);
        CHECK_EQ_INT(wrong, 0);
    }

    /* Trailing bytes and unknown formats (0, the one after the newest, large ones). */
    uint8_t *tmp = malloc(8192);
    uint8_t formats[] = {0, 0, 0x7f, 0xff};
    for (int k = 0; k < NKINDS; k++) {
        size_t n = raw[k].len;
        memcpy(tmp, mdm_buf_head(&raw[k]), n);
        tmp[n] = 0;
        il = make_id((enum kind)k, 500, id);
        put_raw(b, (enum kind)k, id, il, tmp, n + 1);
        formats[1] = (uint8_t)(newest_format((enum kind)k) + 1);
        for (unsigned f2 = 0; f2 < sizeof(formats); f2++) {
            tmp[0] = formats[f2];
            il = make_id((enum kind)k, 600 + f2, id);
            put_raw(b, (enum kind)k, id, il, tmp, n);
        }
    }
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    for (int k = 0; k < NKINDS; k++) {
        il = make_id((enum kind)k, 500, id);
        CHECK(bad(s, (enum kind)k, id, il));
        for (unsigned f2 = 0; f2 < sizeof(formats); f2++) {
            il = make_id((enum kind)k, 600 + f2, id);
            CHECK(bad(s, (enum kind)k, id, il));
        }
    }

    /* Byte flips anywhere: decoded or rejected, never a crash or an overread (ASan). */
    static const uint8_t masks[] = {0x01, 0x80, 0xff};
    for (int k = 0; k < NKINDS; k++)
        for (size_t i = 0; i < raw[k].len; i++)
            for (unsigned m = 0; m < sizeof(masks); m++) {
                memcpy(tmp, mdm_buf_head(&raw[k]), raw[k].len);
                tmp[i] ^= masks[m];
                il = make_id((enum kind)k, 100000 + (unsigned)(i * 4 + m), id);
                put_raw(b, (enum kind)k, id, il, tmp, raw[k].len);
            }
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    int odd = 0, rejected = 0;
    for (int k = 0; k < NKINDS; k++)
        for (size_t i = 0; i < raw[k].len; i++)
            for (unsigned m = 0; m < sizeof(masks); m++) {
                il = make_id((enum kind)k, 100000 + (unsigned)(i * 4 + m), id);
                int ret = get_kind(s, (enum kind)k, id, il, &zeroed);
                odd += ret != 0 && (ret != -EBADMSG || !zeroed);
                rejected += ret != 0;
            }
    CHECK_EQ_INT(odd, 0);
    CHECK(rejected > 0);

    /* Field damage: flags, enums, group count and names, ids inside values. */
    vb_user(&v, 1, 0x02, 0, "");
    put_raw(b, USER, "flags", 5, v.b, v.n);
    vb_user(&v, 1, 0, MDM_USER_GROUPS_MAX + 1, "g");
    put_raw(b, USER, "groups17", 8, v.b, v.n);
    vb_user(&v, 1, 0, MDM_USER_GROUPS_MAX, "g");
    put_raw(b, USER, "groups16", 8, v.b, v.n);
    vb_user(&v, 1, 0, 1, "");
    put_raw(b, USER, "emptygroup", 10, v.b, v.n);
    vb_user(&v, 1, 0, 1, "a\tb");
    put_raw(b, USER, "ctlgroup", 8, v.b, v.n);
    vb_user(&v, 1, 0, 0, "");
    put_raw(b, USER, "bad name", 8, v.b, v.n); /* a key no writer produces */
    il = make_id(INVITATION, 700, id);
    vb_invitation(&v, "bob", MDM_INVITE_PASSWORD_AND_PIN + 1, 0, "");
    put_raw(b, INVITATION, id, il, v.b, v.n);
    il = make_id(INVITATION, 701, id);
    vb_invitation(&v, "bob", 0, MDM_INVITE_REVOKED + 1, "");
    put_raw(b, INVITATION, id, il, v.b, v.n);
    il = make_id(INVITATION, 702, id);
    vb_invitation(&v, "bob", 0, 0, "0123456789ABCDEF0123456789ABCDEF");
    put_raw(b, INVITATION, id, il, v.b, v.n);
    il = make_id(INVITATION, 703, id);
    vb_invitation(&v, "", 0, 0, "");
    put_raw(b, INVITATION, id, il, v.b, v.n);
    il = make_id(INVITATION, 704, id);
    vb_invitation(&v, "bo\nb", 0, 0, "");
    put_raw(b, INVITATION, id, il, v.b, v.n);
    vb_invitation(&v, "bob", 0, 0, "");
    put_raw(b, INVITATION, "0123456789ABCDEF0123456789ABCDEF", 32, v.b, v.n); /* bad key */
    il = make_id(CHALLENGE, 700, id);
    vb_challenge(&v, 0x04, ""); /* a flag bit no writer sets */
    put_raw(b, CHALLENGE, id, il, v.b, v.n);
    il = make_id(CHALLENGE, 701, id);
    vb_challenge(&v, 0, "nope");
    put_raw(b, CHALLENGE, id, il, v.b, v.n);
    il = make_id(ENROLLMENT, 700, id);
    vb_enrollment(&v, 1, "bob", MDM_ENROLL_RENEWAL + 1, "", 0, "");
    put_raw(b, ENROLLMENT, id, il, v.b, v.n);
    il = make_id(ENROLLMENT, 701, id);
    vb_enrollment(&v, 1, "bob", 0, "x", 0, "");
    put_raw(b, ENROLLMENT, id, il, v.b, v.n);
    il = make_id(ENROLLMENT, 702, id);
    vb_enrollment(&v, 1, "", 0, "", 0, "");
    put_raw(b, ENROLLMENT, id, il, v.b, v.n);
    {
        /* Groups of an enrollment: too many, empty, a control byte, one byte too long. */
        char g64[MDM_GROUP_NAME_MAX + 2];
        memset(g64, 'g', MDM_GROUP_NAME_MAX + 1);
        g64[MDM_GROUP_NAME_MAX + 1] = 0;
        static const struct { unsigned n; const char *group; } bad_groups[] = {
            {MDM_USER_GROUPS_MAX + 1, "g"}, {255, "g"}, {1, ""}, {2, "a\x7f" "b"}, {1, NULL}};
        for (unsigned i = 0; i < sizeof(bad_groups) / sizeof(bad_groups[0]); i++) {
            il = make_id(ENROLLMENT, 710 + i, id);
            vb_enrollment(&v, 2, "bob", 0, "", bad_groups[i].n,
                          bad_groups[i].group ? bad_groups[i].group : g64);
            put_raw(b, ENROLLMENT, id, il, v.b, v.n);
        }
        /* At the limits: decodes. */
        g64[MDM_GROUP_NAME_MAX] = 0;
        il = make_id(ENROLLMENT, 720, id);
        vb_enrollment(&v, 2, "bob", 0, "", MDM_USER_GROUPS_MAX, g64);
        put_raw(b, ENROLLMENT, id, il, v.b, v.n);
        /* The first format followed by groups: trailing bytes. */
        il = make_id(ENROLLMENT, 721, id);
        vb_enrollment(&v, 2, "bob", 0, "", 1, "staff");
        v.b[0] = 1;
        put_raw(b, ENROLLMENT, id, il, v.b, v.n);
    }
    {
        /* A string one byte longer than its field (udid: 64 bytes). */
        char udid64[65];
        memset(udid64, 'u', 64);
        udid64[64] = 0;
        v.n = 0;
        vb_be(&v, 1, 1);
        vb_str(&v, "bob");
        vb_be(&v, 0, 1);
        vb_str(&v, "");
        vb_be(&v, 1, 8);
        vb_be(&v, 2, 8);
        vb_str(&v, udid64);
        vb_str(&v, "");
        vb_be(&v, 0, 8);
        il = make_id(ENROLLMENT, 703, id);
        put_raw(b, ENROLLMENT, id, il, v.b, v.n);
    }
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    CHECK(bad(s, USER, "flags", 5));
    CHECK(bad(s, USER, "groups17", 8));
    CHECK_EQ_INT(get_kind(s, USER, "groups16", 8, &zeroed), 0);
    CHECK(bad(s, USER, "emptygroup", 10));
    CHECK(bad(s, USER, "ctlgroup", 8));
    for (unsigned i = 700; i <= 704; i++) {
        il = make_id(INVITATION, i, id);
        CHECK(bad(s, INVITATION, id, il));
    }
    for (unsigned i = 700; i <= 701; i++) {
        il = make_id(CHALLENGE, i, id);
        CHECK(bad(s, CHALLENGE, id, il));
    }
    for (unsigned i = 700; i <= 703; i++) {
        il = make_id(ENROLLMENT, i, id);
        CHECK(bad(s, ENROLLMENT, id, il));
    }
    for (unsigned i = 710; i <= 714; i++) {
        il = make_id(ENROLLMENT, i, id);
        CHECK(bad(s, ENROLLMENT, id, il));
    }
    il = make_id(ENROLLMENT, 720, id);
    CHECK_EQ_INT(get_kind(s, ENROLLMENT, id, il, &zeroed), 0);
    il = make_id(ENROLLMENT, 721, id);
    CHECK(bad(s, ENROLLMENT, id, il));
    free(tmp);
    for (int k = 0; k < NKINDS; k++)
        mdm_buf_dispose(&raw[k]);
    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* Keys no writer produces make listings fail with -EBADMSG at that record (only). */
struct count {
    int n;
    int stop_at; /* return 7 at this count (0: never) */
    char last[80];
    size_t last_len;
};

static int count_user(void *arg, const mdm_local_user_t *u)
{
    struct count *c = arg;
    c->n++;
    c->last_len = strlen(u->name);
    memcpy(c->last, u->name, c->last_len + 1);
    return c->stop_at && c->n == c->stop_at ? 7 : 0;
}

static int count_invitation(void *arg, const mdm_invitation_t *inv)
{
    struct count *c = arg;
    c->n++;
    c->last_len = strlen(inv->id);
    memcpy(c->last, inv->id, c->last_len + 1);
    return c->stop_at && c->n == c->stop_at ? 7 : 0;
}

static int count_challenge(void *arg, const mdm_scep_challenge_t *ch)
{
    struct count *c = arg;
    c->n++;
    c->last_len = MDM_SHA256_LEN;
    memcpy(c->last, ch->hash, MDM_SHA256_LEN);
    return c->stop_at && c->n == c->stop_at ? 7 : 0;
}

static int count_enrollment(void *arg, const mdm_enrollment_t *e)
{
    struct count *c = arg;
    c->n++;
    c->last_len = strlen(e->id);
    memcpy(c->last, e->id, c->last_len + 1);
    return c->stop_at && c->n == c->stop_at ? 7 : 0;
}

static int count_failures(void *arg, const mdm_signon_failures_t *f)
{
    struct count *c = arg;
    c->n++;
    c->last_len = strlen(f->subject);
    memcpy(c->last, f->subject, c->last_len + 1);
    return c->stop_at && c->n == c->stop_at ? 7 : 0;
}

/* Lists kind k after `after` (NULL: from the start) into c. */
static int list_kind(mdm_store_t *s, enum kind k, const char *after, struct count *c)
{
    switch (k) {
    case USER: return mdm_store_list_local_users(s, after, count_user, c);
    case INVITATION: return mdm_store_list_invitations(s, after, count_invitation, c);
    case CHALLENGE:
        return mdm_store_list_scep_challenges(s, (const uint8_t *)after, count_challenge, c);
    case ENROLLMENT: return mdm_store_list_enrollments(s, after, count_enrollment, c);
    case FAIL_USER: return mdm_store_list_signon_failures(s, MDM_SIGNON_USER, after,
                                                          count_failures, c);
    default: return mdm_store_list_signon_failures(s, MDM_SIGNON_ADDRESS, after, count_failures,
                                                   c);
    }
}

static void test_listings(void)
{
    char *dir = strdup(check_tmpdir("enroll-list"));
    mdm_store_t *s = open_store(dir);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    enum { N = 25, PAGE = 10 };
    char id[80];
    size_t il;

    /* Empty store: nothing listed, no error. */
    for (int k = 0; k < NKINDS; k++) {
        struct count c = {0};
        CHECK_EQ_INT(list_kind(s, (enum kind)k, NULL, &c), 0);
        CHECK_EQ_INT(c.n, 0);
    }

    /* N records of every kind, written in reverse order. */
    for (int i = N - 1; i >= 0; i--) {
        mdm_local_user_t u = {0};
        make_id(USER, (unsigned)i, u.name);
        mdm_store_put_local_user(b, &u);
        mdm_invitation_t inv = {0};
        make_id(INVITATION, (unsigned)i, id);
        memcpy(inv.id, id, sizeof(inv.id));
        snprintf(inv.user_name, sizeof(inv.user_name), "u");
        mdm_store_put_invitation(b, &inv);
        mdm_scep_challenge_t ch = {0};
        make_id(CHALLENGE, (unsigned)i, (char *)ch.hash);
        mdm_store_put_scep_challenge(b, &ch);
        mdm_enrollment_t e = {0};
        make_id(ENROLLMENT, (unsigned)i, id);
        memcpy(e.id, id, sizeof(e.id));
        snprintf(e.user_name, sizeof(e.user_name), "u");
        mdm_store_put_enrollment(b, &e);
        mdm_signon_failures_t f = {.kind = MDM_SIGNON_USER};
        make_id(FAIL_USER, (unsigned)i, f.subject);
        mdm_store_put_signon_failures(b, &f);
        f.kind = MDM_SIGNON_ADDRESS;
        mdm_store_put_signon_failures(b, &f);
    }
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);

    for (int k = 0; k < NKINDS; k++) {
        /* Everything, kinds apart. */
        struct count c = {0};
        CHECK_EQ_INT(list_kind(s, (enum kind)k, NULL, &c), 0);
        CHECK_EQ_INT(c.n, N);
        if (k != CHALLENGE) {
            memset(&c, 0, sizeof(c));
            CHECK_EQ_INT(list_kind(s, (enum kind)k, "", &c), 0);
            CHECK_EQ_INT(c.n, N);
        }
        /* Pages of PAGE: 10, 10, 5, then nothing; in order, each once. */
        char after[80];
        bool from_start = true;
        int seen = 0, pages = 0, wrong = 0;
        for (;;) {
            memset(&c, 0, sizeof(c));
            c.stop_at = PAGE;
            int ret = list_kind(s, (enum kind)k, from_start ? NULL : after, &c);
            if (ret != 0 && ret != 7) {
                wrong++;
                break;
            }
            if (c.n == 0)
                break;
            pages++;
            seen += c.n;
            il = make_id((enum kind)k, (unsigned)seen - 1, id);
            wrong += c.last_len != il || memcmp(c.last, id, il) != 0;
            memcpy(after, c.last, c.last_len + 1);
            from_start = false;
            if (pages > N)
                break;
        }
        CHECK_EQ_INT(wrong, 0);
        CHECK_EQ_INT(seen, N);
        CHECK_EQ_INT(pages, 3);
        /* The callback's stop value comes back. */
        memset(&c, 0, sizeof(c));
        c.stop_at = 1;
        CHECK_EQ_INT(list_kind(s, (enum kind)k, NULL, &c), 7);
        CHECK_EQ_INT(c.n, 1);
    }

    /* `after` need not exist; too long is -EINVAL. */
    struct count c = {0};
    CHECK_EQ_INT(mdm_store_list_local_users(s, "t000005x", count_user, &c), 0);
    CHECK_EQ_INT(c.n, N - 6);
    char too_long[80];
    memset(too_long, 't', 64);
    too_long[64] = 0;
    CHECK_EQ_INT(mdm_store_list_local_users(s, too_long, count_user, &c), -EINVAL);
    const char *id33 = "000000000000000000000000000000000";
    CHECK_EQ_INT(mdm_store_list_invitations(s, id33, count_invitation, &c), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_enrollments(s, too_long, count_enrollment, &c), -EINVAL);
    CHECK_EQ_INT(mdm_store_list_signon_failures(s, MDM_SIGNON_USER, too_long, count_failures, &c),
                 -EINVAL);
    CHECK_EQ_INT(mdm_store_list_signon_failures(s, (enum mdm_signon_kind)3, NULL, count_failures,
                                                &c),
                 -EINVAL);

    /* Undecodable records stop a listing with -EBADMSG after the good ones before them. */
    static const uint8_t junk[] = {1};
    put_raw(b, USER, "t000009z", 8, junk, sizeof(junk));           /* truncated value */
    put_raw(b, CHALLENGE, "short", 5, junk, sizeof(junk));         /* key not 32 bytes */
    put_raw(b, INVITATION, "zz", 2, junk, sizeof(junk));           /* key not an id */
    put_raw(b, FAIL_ADDRESS, "x\0y", 3, junk, sizeof(junk));       /* NUL in the subject */
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_local_users(s, NULL, count_user, &c), -EBADMSG);
    CHECK_EQ_INT(c.n, 10);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_scep_challenges(s, NULL, count_challenge, &c), -EBADMSG);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_invitations(s, NULL, count_invitation, &c), -EBADMSG);
    CHECK_EQ_INT(c.n, N);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_signon_failures(s, MDM_SIGNON_ADDRESS, NULL, count_failures, &c),
                 -EBADMSG);
    /* Other kinds are not affected. */
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_enrollments(s, NULL, count_enrollment, &c), 0);
    CHECK_EQ_INT(c.n, N);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_signon_failures(s, MDM_SIGNON_USER, NULL, count_failures, &c), 0);
    CHECK_EQ_INT(c.n, N);

    /* Deleting everything of one kind empties only that kind. */
    for (int i = 0; i < N; i++) {
        make_id(ENROLLMENT, (unsigned)i, id);
        mdm_store_delete_enrollment(b, id);
    }
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_enrollments(s, NULL, count_enrollment, &c), 0);
    CHECK_EQ_INT(c.n, 0);
    memset(&c, 0, sizeof(c));
    CHECK_EQ_INT(mdm_store_list_signon_failures(s, MDM_SIGNON_USER, NULL, count_failures, &c), 0);
    CHECK_EQ_INT(c.n, N);

    mdm_batch_free(b);
    mdm_store_close(s);
out:
    rm_rf(dir);
    free(dir);
}

/* The identity certificate index "ec/<hex SHA-256>" -> enrollment id: round trip, overwrite,
 * delete, bad hex refused, damaged values refused, and enrollments listed without it. */
static void test_cert_index(void)
{
    char *dir = strdup(check_tmpdir("enroll-cert"));
    mdm_store_t *s = open_store(dir);
    CHECK(s != NULL);
    if (!s)
        goto out;
    mdm_batch_t *b = mdm_batch_new();
    char hex[MDM_SHA256_HEX_LEN + 1], id[MDM_ENROLL_ID_LEN + 1], got[MDM_ENROLL_ID_LEN + 1];
    uint8_t sha[MDM_SHA256_LEN];
    CHECK_EQ_INT(mdm_sha256("cert", 4, sha), 0);
    mdm_hex_encode(sha, sizeof(sha), hex);
    CHECK_EQ_INT(mdm_enroll_id_new(id), 0);

    strcpy(got, "x");
    CHECK_EQ_INT(mdm_store_get_enrollment_cert(s, hex, got), MDM_ENOTFOUND);
    CHECK_STR(got, "");
    mdm_store_put_enrollment_cert(b, hex, id);
    mdm_enrollment_t e = {0};
    snprintf(e.id, sizeof(e.id), "%s", id);
    snprintf(e.user_name, sizeof(e.user_name), "alice");
    snprintf(e.cert_sha256, sizeof(e.cert_sha256), "%s", hex);
    mdm_store_put_enrollment(b, &e);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    CHECK_EQ_INT(mdm_store_get_enrollment_cert(s, hex, got), 0);
    CHECK_STR(got, id);

    /* The layout: "ec/" + 64 hex digits -> format 1, u16 length, the id. */
    uint8_t key[3 + MDM_SHA256_HEX_LEN];
    memcpy(key, "ec/", 3);
    memcpy(key + 3, hex, MDM_SHA256_HEX_LEN);
    mdm_buf_t v;
    mdm_buf_init(&v, 0);
    CHECK_EQ_INT(mdm_store_get(s, MDM_CF_ENROLL, key, sizeof(key), &v), 0);
    CHECK_EQ_INT(v.len, 1 + 2 + MDM_ENROLL_ID_LEN);
    CHECK(v.len > 3 && mdm_buf_head(&v)[0] == 1 && mdm_buf_head(&v)[2] == MDM_ENROLL_ID_LEN &&
          memcmp(mdm_buf_head(&v) + 3, id, MDM_ENROLL_ID_LEN) == 0);

    /* Damaged values: truncated, trailing byte, unknown format, an id that is not hex. */
    uint8_t bad[1 + 2 + MDM_ENROLL_ID_LEN + 1];
    memcpy(bad, mdm_buf_head(&v), v.len);
    size_t lens[] = {0, 1, 3, v.len - 1, v.len + 1};
    bad[v.len] = 0;
    for (size_t i = 0; i < MDM_ARRAY_LEN(lens); i++) {
        mdm_batch_put(b, MDM_CF_ENROLL, key, sizeof(key), bad, lens[i]);
        CHECK_EQ_INT(mdm_store_commit(s, b), 0);
        mdm_batch_clear(b);
        strcpy(got, "x");
        CHECK_EQ_INT(mdm_store_get_enrollment_cert(s, hex, got), -EBADMSG);
        CHECK_STR(got, "");
    }
    bad[0] = 2;
    mdm_batch_put(b, MDM_CF_ENROLL, key, sizeof(key), bad, v.len);
    bad[0] = 1;
    bad[3] = 'X';
    uint8_t key2[sizeof(key)];
    memcpy(key2, key, sizeof(key));
    key2[3] = key2[3] == 'a' ? 'b' : 'a';
    mdm_batch_put(b, MDM_CF_ENROLL, key2, sizeof(key2), bad, v.len);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    CHECK_EQ_INT(mdm_store_get_enrollment_cert(s, hex, got), -EBADMSG);
    char hex2[MDM_SHA256_HEX_LEN + 1];
    memcpy(hex2, key2 + 3, MDM_SHA256_HEX_LEN);
    hex2[MDM_SHA256_HEX_LEN] = 0;
    CHECK_EQ_INT(mdm_store_get_enrollment_cert(s, hex2, got), -EBADMSG);

    /* Overwrite, then delete. */
    mdm_store_put_enrollment_cert(b, hex, id);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    CHECK_EQ_INT(mdm_store_get_enrollment_cert(s, hex, got), 0);
    CHECK_STR(got, id);
    mdm_store_delete_enrollment_cert(b, hex);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_clear(b);
    CHECK_EQ_INT(mdm_store_get_enrollment_cert(s, hex, got), MDM_ENOTFOUND);

    /* Identifiers that are not 64 lowercase hex digits. */
    char upper[MDM_SHA256_HEX_LEN + 1];
    memcpy(upper, hex, sizeof(upper));
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    CHECK_EQ_INT(mdm_store_get_enrollment_cert(s, upper, got), -EINVAL);
    CHECK_EQ_INT(mdm_store_get_enrollment_cert(s, "abc", got), -EINVAL);
    char longer[MDM_SHA256_HEX_LEN + 2];
    snprintf(longer, sizeof(longer), "%s0", hex);
    CHECK_EQ_INT(mdm_store_get_enrollment_cert(s, longer, got), -EINVAL);

    /* The index is not an enrollment: listing enrollments sees exactly the one record. */
    struct count c = {0};
    CHECK_EQ_INT(list_kind(s, ENROLLMENT, NULL, &c), 0);
    CHECK_EQ_INT(c.n, 1);

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
    test_cert_index();
    test_identifiers();
    test_round_trip();
    test_layouts_and_damage();
    test_listings();
    return check_finish("enroll_store");
}
