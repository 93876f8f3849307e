/*
 * Security secrets and FileVault escrow. See security.h.
 */
#include "actors/security.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/device.h"
#include "actors/instance.h"
#include "core/cms.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/plist.h"
#include "core/seal.h"
#include "core/x509.h"
#include "storage/mdm.h"

#define PLIST_DEPTH 32
#define PRK_MAX 128          /* bytes of a recovery key we accept */
#define FV_HISTORY_MAX 20    /* replaced recovery keys kept */

static struct {
    mdm_actors_t *rt;
    uint8_t seal_key[MDM_SEAL_KEY_LEN];
    char escrow_key[PATH_MAX], escrow_crt[PATH_MAX];
    uint8_t *escrow_der;
    size_t escrow_len;
    atomic_uint inflight;
} S;

/* ---- PINs ---- */

bool mdm_pin_valid(const char *pin)
{
    if (!pin || strlen(pin) != MDM_PIN_DIGITS)
        return false;
    for (int i = 0; i < MDM_PIN_DIGITS; i++)
        if (pin[i] < '0' || pin[i] > '9')
            return false;
    return true;
}

bool mdm_pin_simple(const char *pin)
{
    bool same = true, up = true, down = true;
    for (int i = 1; i < MDM_PIN_DIGITS; i++) {
        same = same && pin[i] == pin[0];
        up = up && pin[i] == pin[i - 1] + 1;
        down = down && pin[i] == pin[i - 1] - 1;
    }
    return same || up || down;
}

int mdm_pin_generate(char pin[MDM_PIN_DIGITS + 1])
{
    for (int tries = 0; tries < 16; tries++) {
        uint8_t r[MDM_PIN_DIGITS * 2];
        if (mdm_random_bytes(r, sizeof(r)) != 0)
            return MDM_ECRYPTO;
        for (int i = 0; i < MDM_PIN_DIGITS; i++) {
            unsigned v = ((unsigned)r[2 * i] << 8 | r[2 * i + 1]) % 10000u; /* bias < 0.2% */
            pin[i] = (char)('0' + v % 10);
        }
        pin[MDM_PIN_DIGITS] = 0;
        explicit_bzero(r, sizeof(r));
        if (!mdm_pin_simple(pin))
            return 0;
    }
    return MDM_ECRYPTO;
}

/* ---- sealed documents ---- */

static int aad_of(const char *udid, const char *name, char *aad, size_t size)
{
    return snprintf(aad, size, "%s:%s", name, udid);
}

int mdm_security_seal(const char *udid, const char *name, const json_t *doc, mdm_buf_t *out)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    if (!text)
        return -ENOMEM;
    char aad[MDM_UDID_MAX + MDM_SECRET_NAME_MAX + 2];
    int n = aad_of(udid, name, aad, sizeof(aad));
    int ret = mdm_seal(S.seal_key, aad, (size_t)n, text, strlen(text), out);
    explicit_bzero(text, strlen(text));
    free(text);
    return ret;
}

int mdm_security_read(mdm_store_t *s, const char *udid, const char *name, json_t **doc)
{
    *doc = NULL;
    mdm_buf_t sealed, plain;
    mdm_buf_init(&sealed, 0);
    mdm_buf_init(&plain, 0);
    int ret = mdm_store_get_secret(s, udid, name, &sealed);
    if (ret == MDM_ENOTFOUND) {
        mdm_buf_dispose(&sealed);
        return 0;
    }
    char aad[MDM_UDID_MAX + MDM_SECRET_NAME_MAX + 2];
    int n = aad_of(udid, name, aad, sizeof(aad));
    if (ret == 0)
        ret = mdm_unseal(S.seal_key, aad, (size_t)n, mdm_buf_head(&sealed), sealed.len, &plain);
    if (ret == 0 && !(*doc = json_loadb((const char *)mdm_buf_head(&plain), plain.len, 0, NULL)))
        ret = -EBADMSG;
    explicit_bzero(mdm_buf_head(&plain), plain.len);
    mdm_buf_dispose(&plain);
    mdm_buf_dispose(&sealed);
    return ret;
}

const uint8_t *mdm_security_escrow_cert(size_t *len)
{
    *len = S.escrow_len;
    return S.escrow_der;
}

/* ---- FileVault escrow ---- */

struct escrow_job {
    mdm_shard_msg_t msg;
    mdm_shard_t *home;
    char udid[MDM_UDID_MAX + 1];
    char source[32];          /* "SecurityInfo" or "RotateFileVaultKey" */
    uint8_t *response;
    size_t len;
    mdm_batch_t *batch;
    bool stored;
};

static void escrow_free(struct escrow_job *j)
{
    free(j->response);
    mdm_batch_free(j->batch);
    free(j);
    atomic_fetch_sub(&S.inflight, 1);
}

/* The EnvelopedData of the answer: SecurityInfo.FDE_PersonalRecoveryKeyCMS or
 * RotateResult.EncryptedNewRecoveryKey. Borrowed from root. */
static int find_envelope(plist_t root, const uint8_t **der, size_t *len)
{
    plist_t d = NULL;
    if (mdm_plist_get_dict(root, "SecurityInfo", &d) == 0 &&
        mdm_plist_get_data(d, "FDE_PersonalRecoveryKeyCMS", der, len) == 0)
        return 0;
    if (mdm_plist_get_dict(root, "RotateResult", &d) == 0 &&
        mdm_plist_get_data(d, "EncryptedNewRecoveryKey", der, len) == 0)
        return 0;
    return -ENOENT;
}

static bool prk_ok(const mdm_buf_t *k)
{
    if (k->len == 0 || k->len > PRK_MAX)
        return false;
    for (size_t i = 0; i < k->len; i++) {
        uint8_t c = mdm_buf_head(k)[i];
        if (c < 0x21 || c > 0x7e)
            return false;
    }
    return true;
}

/* The new fv_prk document: key current, the old current moved to the history. NULL: the key
 * is already the current one. */
static json_t *next_fv_doc(json_t *old, const char *key, const char *source)
{
    json_t *cur = json_object_get(old, "current");
    if (cur && json_is_string(json_object_get(cur, "key")) &&
        strcmp(json_string_value(json_object_get(cur, "key")), key) == 0)
        return NULL;
    json_t *hist = json_array();
    json_t *oldh = json_object_get(old, "history");
    if (cur) {
        json_t *moved = json_deep_copy(cur);
        json_object_set_new(moved, "replaced_ms", json_integer((json_int_t)mdm_wall_ms()));
        json_array_append_new(hist, moved);
    }
    size_t i;
    json_t *v;
    json_array_foreach(oldh, i, v) {
        if (json_array_size(hist) < FV_HISTORY_MAX)
            json_array_append(hist, v);
    }
    return json_pack("{s:{s:s, s:I, s:s}, s:o}", "current", "key", key, "escrowed_ms",
                     (json_int_t)mdm_wall_ms(), "source", source, "history", hist);
}

static void on_flag_set(mdm_dev_req_t *r)
{
    mdm_dev_req_free(r);
}

static void on_escrow_back(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct escrow_job *j = MDM_CONTAINER_OF(m, struct escrow_job, msg);
    if (j->stored) {
        mdm_dev_req_t *r = mdm_dev_req_new(MDM_DEV_FLAGS, j->udid);
        if (r) {
            r->set_fv_escrowed = 1;
            r->done = on_flag_set;
            mdm_dev_send(r);
        }
    }
    escrow_free(j);
}

static void on_escrow_committed(void *arg, int status)
{
    struct escrow_job *j = arg;
    if (status != 0) {
        mdm_error("security", "%s: storing the FileVault key failed: %s", j->udid,
                  mdm_strerror(status));
        j->stored = false;
    }
    j->msg.fn = on_escrow_back;
    mdm_shard_post(j->home, &j->msg);
}

static int escrow(mdm_store_t *s, struct escrow_job *j)
{
    plist_t root = NULL;
    char perr[64];
    const uint8_t *der = NULL;
    size_t dlen = 0;
    int ret = mdm_plist_parse_dict(j->response, j->len, PLIST_DEPTH, &root, perr, sizeof(perr));
    if (ret == 0 && find_envelope(root, &der, &dlen) != 0) {
        plist_free(root);
        return 0; /* no recovery key in this answer */
    }
    mdm_buf_t key;
    mdm_buf_init(&key, 0);
    if (ret == 0)
        ret = mdm_cms_open_envelope(S.escrow_key, S.escrow_crt, der, dlen, &key);
    plist_free(root);
    if (ret == 0 && !prk_ok(&key))
        ret = -EBADMSG;
    json_t *old = NULL, *doc = NULL;
    if (ret == 0)
        ret = mdm_security_read(s, j->udid, "fv_prk", &old);
    if (ret == 0) {
        char text[PRK_MAX + 1];
        memcpy(text, mdm_buf_head(&key), key.len);
        text[key.len] = 0;
        doc = next_fv_doc(old, text, j->source);
        explicit_bzero(text, sizeof(text));
    }
    j->stored = ret == 0;
    if (doc) {
        mdm_buf_t sealed;
        mdm_buf_init(&sealed, 0);
        ret = mdm_security_seal(j->udid, "fv_prk", doc, &sealed);
        if (ret == 0)
            mdm_store_put_secret(j->batch, j->udid, "fv_prk", mdm_buf_head(&sealed), sealed.len);
        mdm_buf_dispose(&sealed);
        j->stored = ret == 0;
    }
    explicit_bzero(mdm_buf_head(&key), key.len);
    mdm_buf_dispose(&key);
    json_decref(old);
    json_decref(doc);
    return ret;
}

static void run_escrow(mdm_store_t *s, void *arg)
{
    struct escrow_job *j = arg;
    int ret = escrow(s, j);
    if (ret != 0)
        mdm_error("security", "%s: the FileVault recovery key of a %s answer cannot be "
                              "escrowed: %s", j->udid, j->source, mdm_strerror(ret));
    else if (j->stored)
        mdm_info("security", "%s: FileVault recovery key escrowed (%s)", j->udid, j->source);
    if (mdm_store_commit_async(s, j->batch, on_escrow_committed, j) != 0)
        on_escrow_committed(j, MDM_ESTORE);
}

void mdm_security_command_answered(mdm_shard_t *sh, const char *udid, const char *uuid,
                                   int status, const uint8_t *response, size_t len)
{
    if (status != MDM_CMD_ACKNOWLEDGED || !response || !len || !S.rt)
        return;
    bool rotation = strncmp(uuid, MDM_ACTION_ROTATE_PREFIX, strlen(MDM_ACTION_ROTATE_PREFIX)) == 0;
    if (!rotation && !memmem(response, len, "FDE_PersonalRecoveryKeyCMS", 26))
        return;
    struct escrow_job *j = calloc(1, sizeof(*j));
    if (!j || !(j->response = malloc(len)) || !(j->batch = mdm_batch_new())) {
        if (j)
            free(j->response);
        free(j);
        mdm_error("security", "%s: out of memory escrowing a FileVault key", udid);
        return;
    }
    atomic_fetch_add(&S.inflight, 1);
    j->home = sh;
    snprintf(j->udid, sizeof(j->udid), "%s", udid);
    snprintf(j->source, sizeof(j->source), "%s", rotation ? "RotateFileVaultKey" : "SecurityInfo");
    memcpy(j->response, response, len);
    j->len = len;
    if (mdm_store_run_async(mdm_actors_store(S.rt), run_escrow, j) != 0)
        escrow_free(j);
}

/* ---- setup ---- */

static bool hook_drained(mdm_shard_t *sh, void *arg)
{
    (void)sh;
    (void)arg;
    return atomic_load(&S.inflight) == 0;
}

int mdm_security_setup(mdm_shard_group_t *g, const char *dir, const uint8_t *secrets_key,
                       mdm_actors_t *rt)
{
    memcpy(S.seal_key, secrets_key, MDM_SEAL_KEY_LEN);
    snprintf(S.escrow_key, sizeof(S.escrow_key), "%s/%s", dir, MDM_INSTANCE_ESCROW_KEY);
    snprintf(S.escrow_crt, sizeof(S.escrow_crt), "%s/%s", dir, MDM_INSTANCE_ESCROW_CERT);
    int ret = mdm_x509_read_cert_der(S.escrow_crt, &S.escrow_der, &S.escrow_len);
    if (ret != 0) {
        mdm_error("security", "%s: %s", S.escrow_crt, mdm_strerror(ret));
        return ret;
    }
    S.rt = rt;
    mdm_shard_hooks_t h = {.drained = hook_drained};
    return mdm_shards_add_hooks(g, &h);
}
