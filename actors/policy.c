/*
 * The policy engine. See policy.h.
 *
 * A reconcile is a job on a storage worker: it reads the groups and policies once, then, per
 * device of its page (or its one device), the wanted policies and the deployments, and plans
 * what to send. Each delivery that does not depend on the device is built and signed once per
 * job and stored as one command record queued to every device of the page that needs it. The
 * job commits its command and deployment records in one batch, then posts itself back to its
 * shard, which hands each command to the device actor (MDM_DEV_ENQUEUE, which pushes the Mac)
 * and starts the next page.
 */
#include "actors/policy.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/device.h"
#include "actors/enroll.h"
#include "actors/enroll_profile.h"
#include "actors/instance.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/plist.h"
#include "core/seal.h"
#include "core/x509.h"
#include "storage/enroll.h"

#define PAGE_DEVICES 64        /* devices per reconcile job */
#define RESEND_AFTER_MS 60000  /* a delivery without a result record this old is sent again */
#define PLIST_DEPTH 32
#define CMD_PREFIX "pol-"
#define PROFILELIST_PREFIX "pol-profilelist-"
#define SECURITYINFO_PREFIX "pol-securityinfo-"

static struct {
    mdm_actors_t *rt;
    mdm_store_t *store;
    char instance[64];
    char organization[64];
    char id_prefix[96];
    uint8_t seal_key[MDM_SEAL_KEY_LEN];
    char signing_key[PATH_MAX], signing_crt[PATH_MAX], ca_crt[PATH_MAX];
    uint8_t *escrow_der, *ca_der;
    size_t escrow_len, ca_len;
    uint64_t sweep_ms;
    atomic_uint inflight; /* jobs not yet back on their shard */
    /* One reconcile of every device at a time: changes made meanwhile ask for one more
     * (bit 1), with ProfileList (bit 2), run when the current one ends. */
    atomic_bool all_running;
    atomic_uint all_again;
    mdm_timer_t sweep_timer; /* on shard 0 */
    mdm_shard_t *sweep_shard;
} E;

/* ------------------------------------------------------------------------------------------
 * Names and identifiers
 */

const char *mdm_deploy_status_name(enum mdm_deploy_status s)
{
    switch (s) {
    case MDM_DEPLOY_STATUS_PENDING: return "pending";
    case MDM_DEPLOY_STATUS_INSTALLED: return "installed";
    case MDM_DEPLOY_STATUS_FAILED: return "failed";
    case MDM_DEPLOY_STATUS_REMOVING: return "removing";
    case MDM_DEPLOY_STATUS_REMOVED: return "removed";
    }
    return "unknown";
}

void mdm_policy_profile_identifier(const char *policy_id, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s.policy.%s", E.id_prefix, policy_id);
}

/* "pol-<policy id>-<version>-<hex>" for a policy's delivery; without a policy id
 * "pol-profilelist-<hex>" (version 0) or "pol-securityinfo-<hex>" (version 1). */
static int command_uuid(const char *policy_id, uint32_t version, char out[MDM_UUID_MAX + 1])
{
    uint8_t r[8];
    char hex[17];
    int ret = mdm_random_bytes(r, sizeof(r));
    if (ret != 0)
        return ret;
    mdm_hex_encode(r, sizeof(r), hex);
    if (policy_id)
        snprintf(out, MDM_UUID_MAX + 1, CMD_PREFIX "%s-%u-%s", policy_id, version, hex);
    else
        snprintf(out, MDM_UUID_MAX + 1, "%s%s", version ? SECURITYINFO_PREFIX : PROFILELIST_PREFIX,
                 hex);
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Secrets of policies: one sealed JSON object per policy, bound to its id.
 */

int mdm_policy_seal_secrets(const char *policy_id, const json_t *secrets, mdm_buf_t *out)
{
    char *text = json_dumps(secrets, JSON_COMPACT);
    if (!text)
        return -ENOMEM;
    char aad[64];
    int n = snprintf(aad, sizeof(aad), "policy:%s", policy_id);
    int ret = mdm_seal(E.seal_key, aad, (size_t)n, text, strlen(text), out);
    explicit_bzero(text, strlen(text));
    free(text);
    return ret;
}

int mdm_policy_open_secrets(const mdm_policy_t *p, json_t **secrets_out)
{
    *secrets_out = NULL;
    if (!p->sealed_secrets || p->sealed_len == 0)
        return 0;
    char aad[64];
    int n = snprintf(aad, sizeof(aad), "policy:%s", p->id);
    mdm_buf_t plain;
    mdm_buf_init(&plain, 0);
    int ret = mdm_unseal(E.seal_key, aad, (size_t)n, p->sealed_secrets, p->sealed_len, &plain);
    if (ret == 0) {
        *secrets_out = json_loadb((const char *)mdm_buf_head(&plain), plain.len, 0, NULL);
        if (!*secrets_out)
            ret = -EBADMSG;
    }
    explicit_bzero(mdm_buf_head(&plain), plain.len);
    mdm_buf_dispose(&plain);
    return ret;
}

/* The full settings of p (secrets merged); NULL on failure (logged). */
static json_t *full_settings(const mdm_policy_t *p)
{
    json_t *pub = json_loads(p->settings_json ? p->settings_json : "{}", 0, NULL);
    json_t *secrets = NULL;
    int ret = pub ? mdm_policy_open_secrets(p, &secrets) : -EBADMSG;
    json_t *full = ret == 0 ? mdm_policy_merge_secrets(pub, secrets) : NULL;
    if (!full)
        mdm_error("policy", "policy %s: cannot read its settings: %s", p->id,
                  ret ? mdm_strerror(ret) : "out of memory");
    json_decref(pub);
    json_decref(secrets);
    return full;
}

/* ------------------------------------------------------------------------------------------
 * Status of a deployment
 */

/* Appends Apple's ErrorChain of response as "Domain Code: description; ..." to err. */
static void error_chain(const uint8_t *resp, size_t len, char *err, size_t errlen)
{
    err[0] = 0;
    plist_t root = NULL, chain = NULL;
    char perr[64];
    if (!resp || !len || mdm_plist_parse_dict(resp, len, PLIST_DEPTH, &root, perr, sizeof(perr)))
        return;
    size_t used = 0;
    if (mdm_plist_get_array(root, "ErrorChain", &chain) == 0) {
        for (uint32_t i = 0; i < plist_array_get_size(chain) && used + 1 < errlen; i++) {
            plist_t e = plist_array_get_item(chain, i);
            const char *domain = NULL, *desc = NULL;
            uint64_t code = 0;
            if (mdm_plist_get_string(e, "ErrorDomain", &domain) != 0)
                domain = "";
            if (mdm_plist_get_string(e, "USEnglishDescription", &desc) != 0 &&
                mdm_plist_get_string(e, "LocalizedDescription", &desc) != 0)
                desc = "";
            if (mdm_plist_get_uint(e, "ErrorCode", &code) != 0)
                code = 0;
            int n = snprintf(err + used, errlen - used, "%s%s %llu: %s", i ? "; " : "", domain,
                             (unsigned long long)code, desc);
            used = n < 0 ? used : used + (size_t)n >= errlen ? errlen - 1 : used + (size_t)n;
        }
    }
    plist_free(root);
}

enum mdm_deploy_status mdm_policy_deploy_status(const mdm_deployment_t *d, const mdm_result_t *r,
                                                char *err, size_t errlen)
{
    if (errlen)
        err[0] = 0;
    if (d->action == MDM_DEPLOY_REMOVED)
        return MDM_DEPLOY_STATUS_REMOVED;
    bool removing = d->action == MDM_DEPLOY_REMOVE;
    if (!r)
        return removing ? MDM_DEPLOY_STATUS_REMOVING : MDM_DEPLOY_STATUS_PENDING;
    switch ((enum mdm_command_status)r->status) {
    case MDM_CMD_ACKNOWLEDGED:
        return removing ? MDM_DEPLOY_STATUS_REMOVED : MDM_DEPLOY_STATUS_INSTALLED;
    case MDM_CMD_ERROR:
    case MDM_CMD_FORMAT_ERROR:
    case MDM_CMD_EXPIRED:
    case MDM_CMD_CANCELLED:
        if (errlen) {
            error_chain(r->response, r->response_len, err, errlen);
            if (!err[0])
                snprintf(err, errlen, "%s", mdm_command_status_name(r->status));
        }
        return MDM_DEPLOY_STATUS_FAILED;
    default:
        return removing ? MDM_DEPLOY_STATUS_REMOVING : MDM_DEPLOY_STATUS_PENDING;
    }
}

/* ------------------------------------------------------------------------------------------
 * What a device is: the template variables and group membership inputs
 */

struct device_ctx {
    mdm_device_t dev;
    char user[MDM_USER_NAME_MAX + 1];
    char user_full[128];
    char user_email[256];
    unsigned n_groups;
    char groups[MDM_USER_GROUPS_MAX][MDM_GROUP_NAME_MAX + 1];
};

/* Reads the device's enrollment user and that user's groups: those the enrollment kept from
 * sign-on (local or directory), and a local user's current groups besides. */
static void add_group(struct device_ctx *c, const char *g)
{
    for (unsigned i = 0; i < c->n_groups; i++)
        if (strcmp(c->groups[i], g) == 0)
            return;
    if (c->n_groups < MDM_USER_GROUPS_MAX)
        snprintf(c->groups[c->n_groups++], sizeof(c->groups[0]), "%s", g);
}

static void load_user(mdm_store_t *s, struct device_ctx *c)
{
    if (!c->dev.enroll_id[0])
        return;
    mdm_enrollment_t e;
    if (mdm_store_get_enrollment(s, c->dev.enroll_id, &e) != 0)
        return;
    snprintf(c->user, sizeof(c->user), "%s", e.user_name);
    for (unsigned i = 0; i < e.n_groups; i++)
        add_group(c, e.groups[i]);
    mdm_local_user_t u;
    if (mdm_store_get_local_user(s, e.user_name, &u) != 0)
        return; /* a directory user: the groups of its sign-on */
    snprintf(c->user_full, sizeof(c->user_full), "%s", u.display_name);
    snprintf(c->user_email, sizeof(c->user_email), "%s", u.email);
    for (unsigned i = 0; i < u.n_groups; i++)
        add_group(c, u.groups[i]);
}

static mdm_policy_device_t device_vars(const struct device_ctx *c)
{
    return (mdm_policy_device_t){
        .udid = c->dev.udid,
        .serial = c->dev.serial,
        .device_name = c->dev.device_name,
        .model = c->dev.model,
        .os_version = c->dev.os_version,
        .user_short_name = c->user,
        .user_full_name = c->user_full,
        .user_email = c->user_email,
    };
}

static bool json_array_has(const json_t *a, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        const char *t = json_string_value(v);
        if (t && strcmp(t, s) == 0)
            return true;
    }
    return false;
}

static bool group_targets(const json_t *spec, const struct device_ctx *c)
{
    if (json_is_true(json_object_get(spec, "all_devices")))
        return true;
    if (json_array_has(json_object_get(spec, "devices"), c->dev.udid))
        return true;
    if (c->user[0] && json_array_has(json_object_get(spec, "users"), c->user))
        return true;
    const json_t *ug = json_object_get(spec, "user_groups");
    for (unsigned i = 0; i < c->n_groups; i++)
        if (json_array_has(ug, c->groups[i]))
            return true;
    return false;
}

/* ------------------------------------------------------------------------------------------
 * Building deliveries
 */

#define CHALLENGE_BYTES 24                    /* as enrollment's challenges */
#define CHALLENGE_TTL_MS (72ull * 3600 * 1000) /* the Mac uses it when it installs the profile */
#define NO_CHALLENGE "(one-time challenge per Mac)" /* previews, shared builds */
#define CHALLENGE_TEXT_MAX 64

static mdm_policy_env_t policy_env(const char *scep_url)
{
    return (mdm_policy_env_t){
        .identifier_prefix = E.id_prefix,
        .organization = E.organization,
        .escrow_cert_der = E.escrow_der,
        .escrow_cert_der_len = E.escrow_len,
        .escrow_location = E.organization,
        .ca_der = E.ca_der,
        .ca_der_len = E.ca_len,
        .scep_url = scep_url,
        .scep_name = E.instance,
        .scep_challenge = NULL,
    };
}

/* challenge: the instance SCEP challenge a SCEP policy with "ca": "instance" carries. */
static int build_output(const mdm_policy_t *p, const json_t *settings,
                        const struct device_ctx *c, const char *challenge,
                        mdm_policy_output_t *out, char *err, size_t errlen)
{
    const mdm_policy_type_t *t = mdm_policy_type_find(p->type);
    if (!t) {
        snprintf(err, errlen, "unknown policy type '%s'", p->type);
        return -EINVAL;
    }
    char scep_url[600];
    snprintf(scep_url, sizeof(scep_url), "%s/scep", mdm_enroll_base_url());
    mdm_policy_env_t env = policy_env(scep_url);
    env.scep_challenge = challenge;
    struct device_ctx none;
    memset(&none, 0, sizeof(none));
    mdm_policy_device_t dev = device_vars(c ? c : &none);
    mdm_policy_meta_t meta = {
        .id = p->id,
        .name = p->name,
        .version = p->version,
        .profile_identifier = p->profile_identifier,
    };
    return mdm_policy_build(t, settings, &meta, &env, &dev, out, err, errlen);
}

static int sign_profile(const mdm_buf_t *xml, mdm_buf_t *der)
{
    return mdm_enroll_profile_sign(E.signing_key, E.signing_crt, E.ca_crt, mdm_buf_head(xml),
                                   xml->len, der);
}

/* The full command plist {Command, CommandUUID} of cmd (borrowed), as XML into out. */
static int command_xml(plist_t cmd, const char *uuid, mdm_buf_t *out)
{
    plist_t root = plist_new_dict();
    plist_t copy = plist_copy(cmd);
    int ret = root && copy ? mdm_plist_dict_set_item(root, "Command", copy) : -ENOMEM;
    if (ret == 0)
        ret = mdm_plist_dict_set_string(root, "CommandUUID", uuid);
    if (ret == 0)
        ret = mdm_plist_to_xml(root, out);
    else if (!root)
        plist_free(copy);
    plist_free(root);
    return ret;
}

/* InstallProfile of a signed profile. */
static plist_t install_profile_command(const mdm_buf_t *der)
{
    plist_t cmd = plist_new_dict();
    if (cmd && (mdm_plist_dict_set_string(cmd, "RequestType", "InstallProfile") != 0 ||
                mdm_plist_dict_set_data(cmd, "Payload", mdm_buf_head(der), der->len) != 0)) {
        plist_free(cmd);
        return NULL;
    }
    return cmd;
}

static plist_t remove_profile_command(const char *identifier)
{
    plist_t cmd = plist_new_dict();
    if (cmd && (mdm_plist_dict_set_string(cmd, "RequestType", "RemoveProfile") != 0 ||
                mdm_plist_dict_set_string(cmd, "Identifier", identifier) != 0)) {
        plist_free(cmd);
        return NULL;
    }
    return cmd;
}

int mdm_policy_render(mdm_store_t *s, const mdm_policy_t *p, const char *udid, bool sign,
                      mdm_policy_output_t *out, mdm_buf_t *signed_der, char *err,
                      size_t errlen)
{
    struct device_ctx c;
    memset(&c, 0, sizeof(c));
    bool have_dev = udid && udid[0];
    if (have_dev) {
        int ret = mdm_store_get_device(s, udid, &c.dev);
        if (ret != 0)
            return ret;
        load_user(s, &c);
    }
    json_t *settings = full_settings(p);
    if (!settings) {
        snprintf(err, errlen, "the policy's settings cannot be read");
        return MDM_ECRYPTO;
    }
    int ret = build_output(p, settings, have_dev ? &c : NULL, NO_CHALLENGE, out, err, errlen);
    json_decref(settings);
    if (ret == 0 && sign && out->profile_xml.len)
        ret = sign_profile(&out->profile_xml, signed_der);
    return ret;
}

/* ------------------------------------------------------------------------------------------
 * Reconcile jobs
 */

/* One command to hand to one device actor once the job's batch is durable. */
struct send {
    char udid[MDM_UDID_MAX + 1];
    char uuid[MDM_UUID_MAX + 1];
    uint8_t *plist;     /* owned copy */
    size_t len;
};

/* A delivery built in this job that several devices share (device-independent output). */
struct shared_cmd {
    char key[MDM_POLICY_ID_LEN + 16]; /* "<policy id>:<command index>" or "remove:<ident>" */
    char uuid[MDM_UUID_MAX + 1];
    mdm_buf_t xml;
};

struct policy_entry {
    mdm_policy_t p;        /* owned copy (settings and secrets) */
    json_t *settings;      /* full settings, loaded on first use */
    bool bad;              /* settings unreadable or build failed: skipped */
    const mdm_policy_type_t *type;
    mdm_policy_output_t out; /* device-independent output, built on first use */
    bool built;
    mdm_buf_t der;         /* signed profile of out */
};

enum job_kind { JOB_ALL, JOB_DEVICE, JOB_PROFILE_LIST, JOB_INVENTORY };

struct job {
    mdm_shard_msg_t msg;
    mdm_commit_waiter_t waiter;   /* the job starts once its trigger's writes are durable */
    mdm_shard_t *home;
    enum job_kind kind;
    char udid[MDM_UDID_MAX + 1];  /* JOB_DEVICE / JOB_PROFILE_LIST / JOB_INVENTORY */
    char after[MDM_UDID_MAX + 1]; /* JOB_ALL: the page starts after this UDID */
    bool ask_profile_list;        /* JOB_ALL from the sweep: also queue ProfileList */
    uint8_t *response;            /* JOB_PROFILE_LIST / JOB_INVENTORY: the answer (owned) */
    size_t response_len;
    /* loaded */
    json_t *groups;               /* array of group spec objects, in id order */
    struct policy_entry *policies;
    size_t n_policies;
    struct shared_cmd *shared;
    size_t n_shared;
    /* planned */
    mdm_batch_t *batch;
    struct send *sends;
    size_t n_sends, cap_sends;
    size_t n_devices;             /* JOB_ALL: devices seen in this page */
    char last[MDM_UDID_MAX + 1];
    bool more;
    /* JOB_PROFILE_LIST: identifiers the Mac reported */
    json_t *present;
};

static void job_free(struct job *j)
{
    for (size_t i = 0; i < j->n_policies; i++) {
        struct policy_entry *pe = &j->policies[i];
        mdm_policy_dispose(&pe->p);
        json_decref(pe->settings);
        mdm_policy_output_dispose(&pe->out);
        mdm_buf_dispose(&pe->der);
    }
    free(j->policies);
    for (size_t i = 0; i < j->n_shared; i++)
        mdm_buf_dispose(&j->shared[i].xml);
    free(j->shared);
    for (size_t i = 0; i < j->n_sends; i++)
        free(j->sends[i].plist);
    free(j->sends);
    json_decref(j->groups);
    json_decref(j->present);
    mdm_batch_free(j->batch);
    free(j->response);
    free(j);
}

static int copy_policy(void *arg, const mdm_policy_t *p)
{
    struct job *j = arg;
    struct policy_entry *grown = realloc(j->policies, (j->n_policies + 1) * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    j->policies = grown;
    struct policy_entry *pe = &grown[j->n_policies];
    memset(pe, 0, sizeof(*pe));
    pe->p = *p;
    pe->p.settings_json = strdup(p->settings_json ? p->settings_json : "{}");
    pe->p.sealed_secrets = NULL;
    if (p->sealed_len) {
        pe->p.sealed_secrets = malloc(p->sealed_len);
        if (pe->p.sealed_secrets)
            memcpy(pe->p.sealed_secrets, p->sealed_secrets, p->sealed_len);
    }
    mdm_policy_output_init(&pe->out);
    mdm_buf_init(&pe->der, 0);
    j->n_policies++;
    if (!pe->p.settings_json || (p->sealed_len && !pe->p.sealed_secrets))
        return -ENOMEM;
    pe->type = mdm_policy_type_find(p->type);
    pe->bad = pe->type == NULL;
    return 0;
}

static int copy_group(void *arg, const mdm_group_t *g)
{
    struct job *j = arg;
    json_t *spec = json_loads(g->spec_json ? g->spec_json : "{}", 0, NULL);
    if (!spec) {
        mdm_error("policy", "group %s: unreadable spec", g->id);
        return 0;
    }
    return json_array_append_new(j->groups, spec) == 0 ? 0 : -ENOMEM;
}

static struct policy_entry *find_policy(struct job *j, const char *id)
{
    for (size_t i = 0; i < j->n_policies; i++)
        if (strcmp(j->policies[i].p.id, id) == 0)
            return &j->policies[i];
    return NULL;
}

static int load_rules(mdm_store_t *s, struct job *j)
{
    j->groups = json_array();
    if (!j->groups)
        return -ENOMEM;
    int ret = mdm_store_list_groups(s, "", copy_group, j);
    if (ret == 0)
        ret = mdm_store_list_policies(s, "", copy_policy, j);
    return ret;
}

static int add_send(struct job *j, const char *udid, const char *uuid, const mdm_buf_t *xml)
{
    if (j->n_sends == j->cap_sends) {
        size_t cap = j->cap_sends ? j->cap_sends * 2 : 16;
        struct send *grown = realloc(j->sends, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        j->sends = grown;
        j->cap_sends = cap;
    }
    struct send *sd = &j->sends[j->n_sends];
    sd->plist = malloc(xml->len);
    if (!sd->plist)
        return -ENOMEM;
    memcpy(sd->plist, mdm_buf_head(xml), xml->len);
    sd->len = xml->len;
    snprintf(sd->udid, sizeof(sd->udid), "%s", udid);
    snprintf(sd->uuid, sizeof(sd->uuid), "%s", uuid);
    j->n_sends++;
    return 0;
}

/* The command record; sealed when the command carries secrets of its policy. */
static int put_command_record(struct job *j, const char *uuid, const char *created_by,
                              const mdm_buf_t *xml, const char *request_type, bool seal)
{
    mdm_command_t rec;
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.uuid, sizeof(rec.uuid), "%s", uuid);
    snprintf(rec.request_type, sizeof(rec.request_type), "%s", request_type);
    rec.created_ms = mdm_wall_ms();
    snprintf(rec.created_by, sizeof(rec.created_by), "%s", created_by);
    mdm_buf_t sealed;
    mdm_buf_init(&sealed, 0);
    int ret = 0;
    if (seal) {
        ret = mdm_dev_seal_command(uuid, mdm_buf_head(xml), xml->len, &sealed);
        rec.flags = MDM_COMMAND_SEALED;
        rec.plist = mdm_buf_head(&sealed);
        rec.plist_len = sealed.len;
    } else {
        rec.plist = (uint8_t *)mdm_buf_head(xml);
        rec.plist_len = xml->len;
    }
    if (ret == 0)
        mdm_store_put_command(j->batch, &rec);
    mdm_buf_dispose(&sealed);
    return ret;
}

static const char *request_type_of(plist_t cmd)
{
    const char *t = NULL;
    return mdm_plist_get_string(cmd, "RequestType", &t) == 0 ? t : "?";
}

/* The shared command under key, made on first use from cmd (borrowed). */
static struct shared_cmd *shared_command(struct job *j, const char *key, const char *policy_id,
                                         uint32_t version, plist_t cmd, const char *created_by,
                                         bool seal)
{
    for (size_t i = 0; i < j->n_shared; i++)
        if (strcmp(j->shared[i].key, key) == 0)
            return &j->shared[i];
    struct shared_cmd *grown = realloc(j->shared, (j->n_shared + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    j->shared = grown;
    struct shared_cmd *sc = &grown[j->n_shared];
    memset(sc, 0, sizeof(*sc));
    mdm_buf_init(&sc->xml, 0);
    snprintf(sc->key, sizeof(sc->key), "%s", key);
    if (command_uuid(policy_id, version, sc->uuid) != 0 || command_xml(cmd, sc->uuid, &sc->xml) ||
        put_command_record(j, sc->uuid, created_by, &sc->xml, request_type_of(cmd), seal)) {
        mdm_buf_dispose(&sc->xml);
        return NULL;
    }
    j->n_shared++;
    return sc;
}

/* Queues cmd (borrowed) for device c: shared when the output is device-independent. */
static int send_command(struct job *j, const struct device_ctx *c, const mdm_policy_t *p,
                        plist_t cmd, const char *key, bool per_device, char uuid_out[])
{
    char created_by[64];
    snprintf(created_by, sizeof(created_by), "policy:%s", p ? p->id : "drift");
    bool seal = p && p->sealed_len > 0; /* its profile holds the policy's secrets */
    if (!per_device) {
        struct shared_cmd *sc = shared_command(j, key, p ? p->id : NULL, p ? p->version : 0, cmd,
                                               created_by, seal);
        if (!sc)
            return -ENOMEM;
        snprintf(uuid_out, MDM_UUID_MAX + 1, "%s", sc->uuid);
        return add_send(j, c->dev.udid, sc->uuid, &sc->xml);
    }
    mdm_buf_t xml;
    mdm_buf_init(&xml, 0);
    int ret = command_uuid(p ? p->id : NULL, p ? p->version : 0, uuid_out);
    if (ret == 0)
        ret = command_xml(cmd, uuid_out, &xml);
    if (ret == 0)
        ret = put_command_record(j, uuid_out, created_by, &xml, request_type_of(cmd), seal);
    if (ret == 0)
        ret = add_send(j, c->dev.udid, uuid_out, &xml);
    mdm_buf_dispose(&xml);
    return ret;
}

static void put_deployment(struct job *j, const struct device_ctx *c, const mdm_policy_t *p,
                           enum mdm_deploy_action action, const char *ident, const char *uuid)
{
    mdm_deployment_t d;
    memset(&d, 0, sizeof(d));
    snprintf(d.udid, sizeof(d.udid), "%s", c->dev.udid);
    snprintf(d.policy_id, sizeof(d.policy_id), "%s", p->id);
    d.action = (uint8_t)action;
    d.policy_version = p->version;
    snprintf(d.profile_identifier, sizeof(d.profile_identifier), "%s", ident ? ident : "");
    snprintf(d.command_uuid, sizeof(d.command_uuid), "%s", uuid ? uuid : "");
    d.sent_ms = mdm_wall_ms();
    mdm_store_put_deployment(j->batch, &d);
}

/* A SCEP policy on the instance CA gets a one-time challenge per Mac: its record (only the
 * hash, "certificate only": the certificate is no MDM identity) goes into the job's batch. */
static int device_challenge(struct job *j, const mdm_policy_t *p, char out[CHALLENGE_TEXT_MAX])
{
    snprintf(out, CHALLENGE_TEXT_MAX, "%s", NO_CHALLENGE);
    if (strcmp(p->type, "scep") != 0)
        return 0;
    uint8_t raw[CHALLENGE_BYTES];
    mdm_scep_challenge_t ch = {.expires_ms = mdm_wall_ms() + CHALLENGE_TTL_MS,
                               .certificate_only = true};
    int ret = mdm_random_bytes(raw, sizeof(raw));
    if (ret == 0) {
        mdm_hex_encode(raw, sizeof(raw), out);
        ret = mdm_scep_challenge_hash(out, strlen(out), ch.hash);
    }
    if (ret == 0)
        mdm_store_put_scep_challenge(j->batch, &ch);
    explicit_bzero(raw, sizeof(raw));
    return ret;
}

/* Builds (once per job, unless per device) what pe delivers. */
static int output_for(struct job *j, struct policy_entry *pe, const struct device_ctx *c,
                      mdm_policy_output_t *per_dev, mdm_buf_t *per_der,
                      mdm_policy_output_t **out, mdm_buf_t **der)
{
    char err[256] = "";
    int ret = 0;
    if (!pe->settings && !(pe->settings = full_settings(&pe->p)))
        return MDM_ECRYPTO;
    if (!pe->built) {
        ret = build_output(&pe->p, pe->settings, c, NO_CHALLENGE, &pe->out, err, sizeof(err));
        if (ret == 0 && pe->out.profile_xml.len)
            ret = sign_profile(&pe->out.profile_xml, &pe->der);
        if (ret != 0) {
            mdm_error("policy", "policy %s (%s): cannot build it: %s", pe->p.id, pe->p.type,
                      err[0] ? err : mdm_strerror(ret));
            pe->bad = true;
            return ret;
        }
        pe->built = true;
    }
    *out = &pe->out;
    *der = &pe->der;
    if (!pe->out.per_device)
        return 0;
    /* The first build told us the output depends on the device: build it for this one. */
    char challenge[CHALLENGE_TEXT_MAX];
    if ((ret = device_challenge(j, &pe->p, challenge)) != 0)
        return ret;
    ret = build_output(&pe->p, pe->settings, c, challenge, per_dev, err, sizeof(err));
    explicit_bzero(challenge, sizeof(challenge));
    if (ret == 0 && per_dev->profile_xml.len)
        ret = sign_profile(&per_dev->profile_xml, per_der);
    if (ret != 0) {
        mdm_warn("policy", "policy %s for %s: %s", pe->p.id, c->dev.udid,
                 err[0] ? err : mdm_strerror(ret));
        return ret;
    }
    *out = per_dev;
    *der = per_der;
    return 0;
}

/* Sends policy pe to device c: its profile, then its commands. */
static int deliver(struct job *j, struct policy_entry *pe, const struct device_ctx *c)
{
    mdm_policy_output_t per_dev, *out = NULL;
    mdm_buf_t per_der, *der = NULL;
    mdm_policy_output_init(&per_dev);
    mdm_buf_init(&per_der, 0);
    int ret = output_for(j, pe, c, &per_dev, &per_der, &out, &der);
    char uuid[MDM_UUID_MAX + 1] = "";
    bool per_device = pe->out.per_device;
    if (ret == 0 && out->profile_xml.len) {
        plist_t cmd = install_profile_command(der);
        char key[sizeof(((struct shared_cmd *)0)->key)];
        snprintf(key, sizeof(key), "%s:p", pe->p.id);
        ret = cmd ? send_command(j, c, &pe->p, cmd, key, per_device, uuid) : -ENOMEM;
        plist_free(cmd);
    }
    for (unsigned i = 0; ret == 0 && i < out->n_commands; i++) {
        char key[sizeof(((struct shared_cmd *)0)->key)];
        snprintf(key, sizeof(key), "%s:%u", pe->p.id, i);
        char cuuid[MDM_UUID_MAX + 1];
        ret = send_command(j, c, &pe->p, out->commands[i], key, per_device, cuuid);
        if (ret == 0 && !uuid[0])
            snprintf(uuid, sizeof(uuid), "%s", cuuid); /* status follows the first command */
    }
    if (ret == 0)
        put_deployment(j, c, &pe->p, MDM_DEPLOY_INSTALL,
                       out->profile_xml.len ? pe->p.profile_identifier : "", uuid);
    mdm_policy_output_dispose(&per_dev);
    mdm_buf_dispose(&per_der);
    return ret;
}

static int remove_profile(struct job *j, const struct device_ctx *c, const mdm_deployment_t *d)
{
    plist_t cmd = remove_profile_command(d->profile_identifier);
    if (!cmd)
        return -ENOMEM;
    char key[sizeof(((struct shared_cmd *)0)->key)], uuid[MDM_UUID_MAX + 1];
    snprintf(key, sizeof(key), "%s:r", d->policy_id);
    mdm_policy_t stub;
    memset(&stub, 0, sizeof(stub));
    snprintf(stub.id, sizeof(stub.id), "%s", d->policy_id);
    stub.version = d->policy_version;
    int ret = send_command(j, c, &stub, cmd, key, false, uuid);
    plist_free(cmd);
    if (ret == 0)
        put_deployment(j, c, &stub, MDM_DEPLOY_REMOVE, d->profile_identifier, uuid);
    return ret;
}

/* The device's deployments, collected for planning. */
struct deployments {
    mdm_deployment_t *d;
    size_t n;
};

static int collect_deployment(void *arg, const mdm_deployment_t *d)
{
    struct deployments *ds = arg;
    mdm_deployment_t *grown = realloc(ds->d, (ds->n + 1) * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    ds->d = grown;
    ds->d[ds->n++] = *d;
    return 0;
}

static const mdm_deployment_t *find_deployment(const struct deployments *ds, const char *pid)
{
    for (size_t i = 0; i < ds->n; i++)
        if (strcmp(ds->d[i].policy_id, pid) == 0)
            return &ds->d[i];
    return NULL;
}

/* True when the Mac reported profile identifier ident (drift checks only). */
static bool present_on_mac(const struct job *j, const char *ident)
{
    return json_array_has(j->present, ident);
}

/* Whether deployment d of policy pe must be sent (again). */
static bool needs_delivery(mdm_store_t *s, const struct job *j, const struct policy_entry *pe,
                           const mdm_deployment_t *d, uint64_t now)
{
    if (!d || d->action != MDM_DEPLOY_INSTALL || d->policy_version != pe->p.version)
        return true;
    if (pe->built && pe->out.repeat_interval_s &&
        now - d->sent_ms >= (uint64_t)pe->out.repeat_interval_s * 1000)
        return true;
    mdm_result_t r;
    int ret = d->command_uuid[0] ? mdm_store_get_result(s, d->udid, d->command_uuid, &r)
                                 : MDM_ENOTFOUND;
    bool resend = false;
    if (ret == MDM_ENOTFOUND)
        resend = now - d->sent_ms >= RESEND_AFTER_MS; /* queued but never reached the actor */
    else if (ret == 0 && j->present && r.status == MDM_CMD_ACKNOWLEDGED &&
             d->profile_identifier[0] && !present_on_mac(j, d->profile_identifier))
        resend = true; /* drift: installed, and the Mac no longer has it */
    mdm_result_dispose(&r);
    return resend;
}

/* The repeat interval is known once the output was built; build it when it may matter. */
static void ensure_built(struct job *j, struct policy_entry *pe, const struct device_ctx *c)
{
    if (pe->built || pe->bad)
        return;
    mdm_policy_output_t o;
    mdm_buf_t d;
    mdm_policy_output_init(&o);
    mdm_buf_init(&d, 0);
    mdm_policy_output_t *out;
    mdm_buf_t *der;
    (void)output_for(j, pe, c, &o, &d, &out, &der);
    mdm_policy_output_dispose(&o);
    mdm_buf_dispose(&d);
}

static bool wanted(struct job *j, const struct device_ctx *c, const char *pid)
{
    size_t gi;
    json_t *spec;
    json_array_foreach(j->groups, gi, spec) {
        if (json_array_has(json_object_get(spec, "policies"), pid) && group_targets(spec, c))
            return true;
    }
    return false;
}

/* True when the Mac was sent the FileVault policy (the escrow follows its install). */
static bool has_filevault(struct job *j, const struct deployments *ds)
{
    for (size_t i = 0; i < ds->n; i++) {
        const struct policy_entry *pe = find_policy(j, ds->d[i].policy_id);
        if (ds->d[i].action == MDM_DEPLOY_INSTALL && pe && strcmp(pe->p.type, "filevault") == 0)
            return true;
    }
    return false;
}

/* SecurityInfo, once per job for all its devices. */
static int send_security_info(struct job *j, const struct device_ctx *c, plist_t cmd,
                              char uuid[MDM_UUID_MAX + 1])
{
    struct shared_cmd *sc = NULL;
    for (size_t i = 0; i < j->n_shared; i++)
        if (strcmp(j->shared[i].key, "securityinfo") == 0)
            sc = &j->shared[i];
    if (!sc)
        sc = shared_command(j, "securityinfo", NULL, 1, cmd, "policy:filevault", false);
    if (!sc)
        return -ENOMEM;
    snprintf(uuid, MDM_UUID_MAX + 1, "%s", sc->uuid);
    return add_send(j, c->dev.udid, sc->uuid, &sc->xml);
}

static int reconcile_device(mdm_store_t *s, struct job *j, struct device_ctx *c)
{
    if (c->dev.state != MDM_DEVICE_ENROLLED)
        return 0;
    load_user(s, c);
    struct deployments ds = {NULL, 0};
    int ret = mdm_store_list_device_deployments(s, c->dev.udid, collect_deployment, &ds);
    uint64_t now = mdm_wall_ms();
    /* Wanted policies, in group order (each once). */
    size_t gi;
    json_t *spec;
    json_t *done = json_array();
    if (!done)
        ret = -ENOMEM;
    bool suspended = c->dev.policies_suspended; /* selective wipe: nothing of mdmd's stays */
    json_array_foreach(j->groups, gi, spec) {
        if (ret != 0 || suspended)
            break;
        if (!group_targets(spec, c))
            continue;
        size_t pi;
        json_t *pidv;
        json_array_foreach(json_object_get(spec, "policies"), pi, pidv) {
            const char *pid = json_string_value(pidv);
            struct policy_entry *pe = pid ? find_policy(j, pid) : NULL;
            if (!pe || pe->bad || json_array_has(done, pid))
                continue;
            json_array_append_new(done, json_string(pid));
            ensure_built(j, pe, c);
            if (pe->bad)
                continue;
            const mdm_deployment_t *d = find_deployment(&ds, pid);
            if (needs_delivery(s, j, pe, d, now) && (ret = deliver(j, pe, c)) != 0)
                break;
        }
    }
    /* Deployments of policies the Mac no longer gets (or that were deleted). */
    for (size_t i = 0; ret == 0 && i < ds.n; i++) {
        const mdm_deployment_t *d = &ds.d[i];
        if (d->action != MDM_DEPLOY_INSTALL)
            continue;
        const struct policy_entry *pe = find_policy(j, d->policy_id);
        if (pe && !suspended && wanted(j, c, d->policy_id))
            continue;
        if (d->profile_identifier[0]) {
            ret = remove_profile(j, c, d);
        } else {
            mdm_policy_t stub;
            memset(&stub, 0, sizeof(stub));
            snprintf(stub.id, sizeof(stub.id), "%s", d->policy_id);
            stub.version = d->policy_version;
            put_deployment(j, c, &stub, MDM_DEPLOY_REMOVED, "", d->command_uuid);
        }
    }
    /* Drift: a policy profile of this instance on the Mac that no deployment installs. */
    if (ret == 0 && j->present) {
        char prefix[128];
        int plen = snprintf(prefix, sizeof(prefix), "%s.policy.", E.id_prefix);
        size_t k;
        json_t *v;
        json_array_foreach(j->present, k, v) {
            const char *ident = json_string_value(v);
            if (!ident || strncmp(ident, prefix, (size_t)plen) != 0)
                continue;
            const char *pid = ident + plen;
            const mdm_deployment_t *d = find_deployment(&ds, pid);
            if (d && d->action == MDM_DEPLOY_INSTALL && !suspended && wanted(j, c, pid))
                continue;
            if (d && d->action == MDM_DEPLOY_REMOVE)
                continue; /* already being removed */
            mdm_deployment_t gone;
            memset(&gone, 0, sizeof(gone));
            snprintf(gone.udid, sizeof(gone.udid), "%s", c->dev.udid);
            snprintf(gone.policy_id, sizeof(gone.policy_id), "%.16s", pid);
            snprintf(gone.profile_identifier, sizeof(gone.profile_identifier), "%s", ident);
            gone.policy_version = d ? d->policy_version : 0;
            if (mdm_policy_id_valid(gone.policy_id) && (ret = remove_profile(j, c, &gone)) != 0)
                break;
        }
    }
    /* FileVault: ask for the recovery key until mdmd holds it (SecurityInfo; the answer is
     * escrowed by actors/security.c). */
    if (ret == 0 && j->ask_profile_list && !c->dev.fv_key_escrowed && has_filevault(j, &ds)) {
        plist_t cmd = plist_new_dict();
        char uuid[MDM_UUID_MAX + 1];
        ret = cmd ? mdm_plist_dict_set_string(cmd, "RequestType", "SecurityInfo") : -ENOMEM;
        if (ret == 0)
            ret = send_security_info(j, c, cmd, uuid);
        plist_free(cmd);
    }
    if (ret == 0 && j->ask_profile_list && ds.n > 0) {
        plist_t cmd = plist_new_dict();
        char uuid[MDM_UUID_MAX + 1];
        ret = cmd ? mdm_plist_dict_set_string(cmd, "RequestType", "ProfileList") : -ENOMEM;
        if (ret == 0)
            ret = mdm_plist_dict_set_bool(cmd, "ManagedOnly", true);
        if (ret == 0)
            ret = send_command(j, c, NULL, cmd, "profilelist", false, uuid);
        plist_free(cmd);
    }
    json_decref(done);
    free(ds.d);
    return ret;
}

static int on_page_device(void *arg, const mdm_device_t *d)
{
    struct job *j = arg;
    struct device_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->dev = *d;
    snprintf(j->last, sizeof(j->last), "%s", d->udid);
    int ret = reconcile_device(mdm_actors_store(E.rt), j, c);
    free(c);
    if (ret != 0)
        return ret;
    return ++j->n_devices >= PAGE_DEVICES ? 1 : 0;
}

/* ---- answers to the engine's own commands ---- */

/* The PayloadIdentifiers of a ProfileList answer, as a JSON array. */
static json_t *profile_identifiers(const uint8_t *resp, size_t len)
{
    plist_t root = NULL, list = NULL;
    char perr[64];
    json_t *out = json_array();
    if (!out || mdm_plist_parse_dict(resp, len, PLIST_DEPTH, &root, perr, sizeof(perr)) != 0 ||
        mdm_plist_get_array(root, "ProfileList", &list) != 0) {
        plist_free(root);
        json_decref(out);
        return NULL;
    }
    for (uint32_t i = 0; i < plist_array_get_size(list); i++) {
        const char *ident = NULL;
        if (mdm_plist_get_string(plist_array_get_item(list, i), "PayloadIdentifier", &ident) == 0)
            json_array_append_new(out, json_string(ident));
    }
    plist_free(root);
    return out;
}

static void copy_plist_string(plist_t d, const char *key, char *dst, size_t size)
{
    const char *v = NULL;
    snprintf(dst, size, "%s", mdm_plist_get_string(d, key, &v) == 0 ? v : "");
}

static int drop_app(void *arg, const mdm_app_t *a)
{
    mdm_store_delete_app(arg, a->udid, a->bundle_id);
    return 0;
}

/* Replaces the device's application inventory with an InstalledApplicationList answer. */
static int store_inventory(mdm_store_t *s, struct job *j)
{
    plist_t root = NULL, list = NULL;
    char perr[64];
    if (mdm_plist_parse_dict(j->response, j->response_len, PLIST_DEPTH, &root, perr,
                             sizeof(perr)) != 0 ||
        mdm_plist_get_array(root, "InstalledApplicationList", &list) != 0) {
        plist_free(root);
        return 0; /* not an inventory answer */
    }
    int ret = mdm_store_list_device_apps(s, j->udid, drop_app, j->batch);
    uint64_t now = mdm_wall_ms();
    for (uint32_t i = 0; ret == 0 && i < plist_array_get_size(list); i++) {
        plist_t item = plist_array_get_item(list, i);
        mdm_app_t a;
        memset(&a, 0, sizeof(a));
        snprintf(a.udid, sizeof(a.udid), "%s", j->udid);
        copy_plist_string(item, "Identifier", a.bundle_id, sizeof(a.bundle_id));
        if (!mdm_bundle_id_valid(a.bundle_id))
            continue;
        copy_plist_string(item, "Name", a.name, sizeof(a.name));
        copy_plist_string(item, "ShortVersion", a.short_version, sizeof(a.short_version));
        copy_plist_string(item, "Version", a.version, sizeof(a.version));
        uint64_t size = 0;
        if (mdm_plist_get_uint(item, "BundleSize", &size) == 0)
            a.bundle_size = size;
        a.reported_ms = now;
        mdm_store_put_app(j->batch, &a);
    }
    plist_free(root);
    return ret;
}

/* ---- job plumbing ---- */

static bool start_job(struct job *j);
static void all_chain_ended(mdm_shard_t *sh);

static void on_enqueued(mdm_dev_req_t *r)
{
    if (r->status >= 300)
        mdm_warn("policy", "device %s refused command %s: %d %s", r->base.id, r->uuid,
                 r->status, r->error);
    mdm_dev_req_free(r);
}

/* Back on the home shard: hand the commands to the device actors, then the next page. */
static void on_job_back(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct job *j = MDM_CONTAINER_OF(m, struct job, msg);
    for (size_t i = 0; i < j->n_sends; i++) {
        struct send *sd = &j->sends[i];
        mdm_dev_req_t *r = mdm_dev_req_new(MDM_DEV_ENQUEUE, sd->udid);
        if (!r) {
            mdm_error("policy", "out of memory queueing %s for %s", sd->uuid, sd->udid);
            continue;
        }
        r->plist = sd->plist;
        r->plist_len = sd->len;
        sd->plist = NULL;
        snprintf(r->uuid, sizeof(r->uuid), "%s", sd->uuid);
        r->done = on_enqueued;
        mdm_dev_send(r);
    }
    if (j->kind == JOB_ALL) {
        struct job *next = j->more ? calloc(1, sizeof(*next)) : NULL;
        if (next) {
            next->home = j->home;
            next->kind = JOB_ALL;
            next->ask_profile_list = j->ask_profile_list;
            snprintf(next->after, sizeof(next->after), "%s", j->last);
        }
        if (!next || !start_job(next))
            all_chain_ended(j->home);
    }
    job_free(j);
    atomic_fetch_sub(&E.inflight, 1);
}

static void on_job_committed(void *arg, int status)
{
    struct job *j = arg;
    if (status != 0) {
        mdm_error("policy", "storing the planned commands failed: %s", mdm_strerror(status));
        for (size_t i = 0; i < j->n_sends; i++)
            free(j->sends[i].plist);
        j->n_sends = 0; /* nothing was stored: send nothing, the next reconcile retries */
    }
    j->msg.fn = on_job_back;
    mdm_shard_post(j->home, &j->msg);
}

static void run_job(mdm_store_t *s, void *arg)
{
    struct job *j = arg;
    int ret = 0;
    if (j->kind == JOB_INVENTORY) {
        ret = store_inventory(s, j);
    } else {
        ret = load_rules(s, j);
        if (ret == 0 && j->kind == JOB_PROFILE_LIST) {
            j->present = profile_identifiers(j->response, j->response_len);
            if (!j->present)
                j->kind = JOB_DEVICE; /* not a ProfileList answer: plain reconcile */
        }
        if (ret == 0 && j->kind == JOB_ALL) {
            ret = mdm_store_list_devices(s, j->after, on_page_device, j);
            j->more = ret == 1;
            ret = ret == 1 ? 0 : ret;
        } else if (ret == 0) {
            struct device_ctx *c = calloc(1, sizeof(*c));
            ret = c ? mdm_store_get_device(s, j->udid, &c->dev) : -ENOMEM;
            if (ret == 0)
                ret = reconcile_device(s, j, c);
            else if (ret == MDM_ENOTFOUND)
                ret = 0;
            free(c);
        }
    }
    if (ret != 0)
        mdm_error("policy", "reconcile%s%s: %s", j->udid[0] ? " of " : "", j->udid,
                  mdm_strerror(ret));
    /* Commit what was planned even after an error: every record stands on its own. */
    if (mdm_store_commit_async(s, j->batch, on_job_committed, j) != 0)
        on_job_committed(j, MDM_ESTORE);
}

static void start_now(struct job *j)
{
    if (mdm_store_run_async(E.store, run_job, j) != 0) {
        bool all = j->kind == JOB_ALL;
        atomic_fetch_sub(&E.inflight, 1);
        job_free(j);
        if (all)
            atomic_store(&E.all_running, false); /* the store is closing: nothing follows */
    }
}

static void on_trigger_durable(mdm_commit_waiter_t *w, int status)
{
    struct job *j = MDM_CONTAINER_OF(w, struct job, waiter);
    (void)status; /* a failed commit still leaves the store consistent: reconcile anyway */
    start_now(j);
}

/* Runs j on a storage worker once everything its shard wrote so far is durable, so the job
 * reads the writes that triggered it (an enrollment, a policy change). */
static bool start_job(struct job *j)
{
    j->batch = mdm_batch_new();
    if (!j->batch) {
        job_free(j);
        return false;
    }
    atomic_fetch_add(&E.inflight, 1);
    j->waiter.fn = on_trigger_durable;
    mdm_actors_after_commit(j->home, &j->waiter);
    return true;
}

static struct job *new_job(mdm_shard_t *sh, enum job_kind kind, const char *udid)
{
    if (!E.store)
        return NULL; /* engine not set up (tools, tests of other parts) */
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->home = sh;
    j->kind = kind;
    if (udid)
        snprintf(j->udid, sizeof(j->udid), "%s", udid);
    return j;
}

/* Starts a chain of page jobs over every device; false when it could not start. */
static bool start_all(mdm_shard_t *sh, bool ask_profile_list)
{
    struct job *j = new_job(sh, JOB_ALL, NULL);
    if (!j)
        return false;
    j->ask_profile_list = ask_profile_list;
    return start_job(j);
}

void mdm_policy_reconcile_all(mdm_shard_t *sh, bool ask_profile_list)
{
    if (!E.store)
        return;
    if (atomic_exchange(&E.all_running, true)) {
        /* A reconcile of every device runs: one more follows it (changes coalesce). */
        atomic_fetch_or(&E.all_again, ask_profile_list ? 3u : 1u);
        return;
    }
    if (!start_all(sh, ask_profile_list))
        all_chain_ended(sh);
}

/* The reconcile of every device ended: run the one asked for meanwhile, if any. */
static void all_chain_ended(mdm_shard_t *sh)
{
    for (;;) {
        unsigned again = atomic_exchange(&E.all_again, 0u);
        if (again && start_all(sh, again & 2u))
            return; /* still running */
        atomic_store(&E.all_running, false);
        /* A request between the exchange and the store saw "running" and only set again. */
        if (!atomic_load(&E.all_again) || atomic_exchange(&E.all_running, true))
            return;
    }
}

void mdm_policy_reconcile_device(mdm_shard_t *sh, const char *udid)
{
    struct job *j = new_job(sh, JOB_DEVICE, udid);
    if (j)
        start_job(j);
}

void mdm_policy_command_answered(mdm_shard_t *sh, const char *udid, const char *uuid,
                                 int status, const uint8_t *response, size_t len)
{
    if (strncmp(uuid, CMD_PREFIX, strlen(CMD_PREFIX)) != 0 || status != MDM_CMD_ACKNOWLEDGED ||
        !response || !len)
        return;
    bool profile_list = strncmp(uuid, PROFILELIST_PREFIX, strlen(PROFILELIST_PREFIX)) == 0;
    /* Only two kinds of answers carry data the engine keeps: cheap test before a job. */
    if (!profile_list && !memmem(response, len, "InstalledApplicationList", 24))
        return;
    struct job *j = new_job(sh, profile_list ? JOB_PROFILE_LIST : JOB_INVENTORY, udid);
    if (!j)
        return;
    j->response = malloc(len);
    if (!j->response) {
        free(j);
        return;
    }
    memcpy(j->response, response, len);
    j->response_len = len;
    start_job(j);
}

/* ------------------------------------------------------------------------------------------
 * Sweep and shard hooks
 */

static void on_sweep(mdm_timer_t *t)
{
    (void)t;
    mdm_policy_reconcile_all(E.sweep_shard, true);
    mdm_timer_arm(&E.sweep_shard->loop, &E.sweep_timer, E.sweep_ms);
}

static void hook_start(mdm_shard_t *sh, void *arg)
{
    (void)arg;
    if (sh->index != 0 || !E.sweep_ms)
        return;
    E.sweep_shard = sh;
    mdm_timer_init(&E.sweep_timer, on_sweep);
    mdm_timer_arm(&sh->loop, &E.sweep_timer, E.sweep_ms);
}

static void hook_stop(mdm_shard_t *sh, void *arg)
{
    (void)arg;
    if (sh == E.sweep_shard && mdm_timer_armed(&E.sweep_timer))
        mdm_timer_disarm(&sh->loop, &E.sweep_timer);
}

/* A job posts back to its shard: that shard must not exit before. */
static bool hook_drained(mdm_shard_t *sh, void *arg)
{
    (void)sh;
    (void)arg;
    return atomic_load(&E.inflight) == 0;
}

static int read_der(const char *dir, const char *rel, uint8_t **der, size_t *len)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    return mdm_x509_read_cert_der(path, der, len);
}

int mdm_policy_engine_setup(mdm_shard_group_t *g, mdm_actors_t *rt,
                            const struct mdm_policy_engine_options *o)
{
    E.rt = rt;
    snprintf(E.instance, sizeof(E.instance), "%s", o->instance);
    snprintf(E.organization, sizeof(E.organization), "%s", o->organization);
    mdm_enroll_identifier_prefix(o->instance, E.id_prefix, sizeof(E.id_prefix));
    memcpy(E.seal_key, o->secrets_key, MDM_SEAL_KEY_LEN);
    E.sweep_ms = o->sweep_interval_ms;
    snprintf(E.signing_key, sizeof(E.signing_key), "%s/signing/signing.key", o->dir);
    snprintf(E.signing_crt, sizeof(E.signing_crt), "%s/signing/signing.crt", o->dir);
    snprintf(E.ca_crt, sizeof(E.ca_crt), "%s/ca/ca.crt", o->dir);
    bool created = false;
    char why[300] = "";
    int ret = mdm_instance_ensure_escrow(o->dir, &created, why, sizeof(why));
    if (ret != 0) {
        mdm_error("policy", "FileVault escrow certificate: %s", why);
        return ret;
    }
    if (created)
        mdm_info("policy", "created the FileVault escrow certificate %s/%s (%s)", o->dir,
                 MDM_INSTANCE_ESCROW_CERT, why);
    if ((ret = read_der(o->dir, MDM_INSTANCE_ESCROW_CERT, &E.escrow_der, &E.escrow_len)) != 0 ||
        (ret = read_der(o->dir, "ca/ca.crt", &E.ca_der, &E.ca_len)) != 0)
        return ret;
    E.store = mdm_actors_store(rt);
    mdm_shard_hooks_t h = {
        .start = hook_start,
        .stop_requested = hook_stop,
        .drained = hook_drained,
    };
    return mdm_shards_add_hooks(g, &h);
}
