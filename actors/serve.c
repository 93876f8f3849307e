/*
 * `mdmd serve`: wiring of config, storage, shards, actors and listeners. See serve.h.
 *
 * Start-up order: config -> logging -> secrets key check -> TLS contexts and the device
 * identity trust set -> storage -> listening sockets (so a port clash fails before any thread
 * starts) -> shards. SIGINT and SIGTERM are blocked in every thread and taken by sigwait() on
 * the main thread; shutdown stops accepting, lets in-flight requests finish (bounded by
 * shutdown_timeout_ms), commits what is pending, joins the shards and closes the database.
 */
#include "actors/serve.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/actor.h"
#include "actors/api.h"
#include "actors/apns.h"
#include "actors/policy.h"
#include "actors/security.h"
#include "actors/config.h"
#include "actors/device.h"
#include "actors/enroll.h"
#include "actors/mdm.h"
#include "actors/probe.h"
#include "core/log.h"
#include "core/seal.h"
#include "core/server.h"
#include "core/workers.h"
#include "storage/store.h"

struct app {
    mdm_config_t cfg;
    mdm_store_t *store;
    mdm_shard_group_t shards;
    bool shards_ready;
    mdm_actors_t *actors;
    mdm_tls_ctx_t *device_tls, *admin_tls;
    mdm_cms_trust_t *identity_trust; /* signer CAs for Mdm-Signature; NULL when unused */
    mdm_workers_t *verifiers;        /* verify Mdm-Signature off the shards; NULL when unused */
    struct mdm_mdm_options mdm_opts; /* read by the device routes on every shard */
    mdm_http_router_t device_router, admin_router;
    mdm_server_t *device, *admin;
    mdm_server_t *device_plain; /* plain-HTTP device listener, NULL when not configured */
    uint8_t secrets_key[32];
};

static int load_config(struct app *app, const char *dir, const char *const *overrides,
                       size_t n_overrides)
{
    char err[1024];
    int ret = mdm_config_load(&app->cfg, dir, err, sizeof(err));
    if (ret != 0) {
        fprintf(stderr, "mdmd: %s\n", err);
        return ret;
    }
    for (size_t i = 0; i < n_overrides; i++) {
        char key[128];
        const char *eq = strchr(overrides[i], '=');
        if (!eq || (size_t)(eq - overrides[i]) >= sizeof(key)) {
            fprintf(stderr, "mdmd: --set %s: expected section.key=value\n", overrides[i]);
            return MDM_ECONFIG;
        }
        memcpy(key, overrides[i], (size_t)(eq - overrides[i]));
        key[eq - overrides[i]] = '\0';
        if (mdm_config_override(&app->cfg, key, eq + 1, err, sizeof(err)) != 0) {
            fprintf(stderr, "mdmd: --set %s: %s\n", overrides[i], err);
            return MDM_ECONFIG;
        }
    }
    return 0;
}

static unsigned shard_count(const mdm_config_t *c)
{
    if (c->shards > 0)
        return (unsigned)c->shards;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static int open_storage(struct app *app)
{
    char path[PATH_MAX];
    mdm_config_path(&app->cfg, app->cfg.db_path, path, sizeof(path));
    static const enum mdm_durability map[] = {
        [MDM_CFG_DURABILITY_FSYNC] = MDM_DURABILITY_FSYNC,
        [MDM_CFG_DURABILITY_WAL] = MDM_DURABILITY_WAL,
        [MDM_CFG_DURABILITY_NONE] = MDM_DURABILITY_NONE,
    };
    struct mdm_store_options so = {
        .path = path,
        .durability = map[app->cfg.durability],
        .threads = (unsigned)app->cfg.storage_threads,
        .cache_mb = (size_t)app->cfg.cache_mb,
        .thread_exit = mdm_tls_thread_cleanup, /* jobs sign profiles (wolfSSL ECC caches) */
    };
    int ret = mdm_store_open(&app->store, &so);
    if (ret != 0)
        mdm_error("serve", "cannot open the database in %s: %s", path, mdm_strerror(ret));
    return ret;
}

/* The secrets key must be there and private before the server takes any traffic. */
static int load_secrets_key(struct app *app)
{
    char path[PATH_MAX];
    mdm_config_path(&app->cfg, app->cfg.secrets_key, path, sizeof(path));
    int ret = mdm_seal_key_load(path, app->secrets_key);
    if (ret != 0)
        mdm_error("serve", "secrets key %s: %s", path, mdm_strerror(ret));
    return ret;
}

static int make_tls(struct app *app)
{
    char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
    mdm_config_path(&app->cfg, app->cfg.tls_cert, cert, sizeof(cert));
    mdm_config_path(&app->cfg, app->cfg.tls_key, key, sizeof(key));
    mdm_config_path(&app->cfg, app->cfg.client_ca, ca, sizeof(ca));
    static const enum mdm_tls_client_auth map[] = {
        [MDM_CLIENT_CERT_NONE] = MDM_TLS_CLIENT_NONE,
        [MDM_CLIENT_CERT_OPTIONAL] = MDM_TLS_CLIENT_OPTIONAL,
        [MDM_CLIENT_CERT_REQUIRED] = MDM_TLS_CLIENT_REQUIRED,
    };
    struct mdm_tls_server_opts dev = {
        .cert_path = cert,
        .key_path = key,
        .client_ca_path = app->cfg.client_cert == MDM_CLIENT_CERT_NONE ? NULL : ca,
        .client_auth = map[app->cfg.client_cert],
        .session_tickets = app->cfg.session_tickets,
    };
    int ret = mdm_tls_ctx_new_server(&app->device_tls, &dev);
    if (ret != 0)
        return ret;
    struct mdm_tls_server_opts adm = {
        .cert_path = cert,
        .key_path = key,
        .client_auth = MDM_TLS_CLIENT_NONE,
        .session_tickets = app->cfg.session_tickets,
    };
    return mdm_tls_ctx_new_server(&app->admin_tls, &adm);
}

/* Loads the CAs trusted for Mdm-Signature: [tls] client_ca plus [mdm] identity_cas. Skipped
 * when no listener could accept a signature. */
static int load_identity_trust(struct app *app)
{
    const mdm_config_t *c = &app->cfg;
    if (c->identity == MDM_CFG_IDENTITY_MTLS && c->device_plain_listen[0] == '\0')
        return 0;
    static char paths[MDM_CMS_TRUST_MAX][PATH_MAX]; /* start-up only, one thread */
    const char *list[MDM_CMS_TRUST_MAX];
    size_t n = 0;
    mdm_config_path(c, c->client_ca, paths[n], sizeof(paths[n]));
    list[n] = paths[n];
    n++;
    for (const char *p = c->identity_cas; *p;) {
        size_t len = strcspn(p, ",");
        const char *end = p + len;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end > p) {
            if (n == MDM_CMS_TRUST_MAX) {
                mdm_error("serve", "mdm.identity_cas: more than %d files", MDM_CMS_TRUST_MAX - 1);
                return MDM_ECONFIG;
            }
            char one[PATH_MAX];
            snprintf(one, sizeof(one), "%.*s", (int)(end - p), p);
            mdm_config_path(c, one, paths[n], sizeof(paths[n]));
            list[n] = paths[n];
            n++;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    int ret = mdm_cms_trust_load(list, n, &app->identity_trust);
    if (ret != 0) {
        mdm_error("serve", "cannot load the CAs for device identities ([tls] client_ca, [mdm] "
                           "identity_cas): %s",
                  mdm_strerror(ret));
        return ret;
    }
    ret = mdm_workers_new(&app->verifiers, (unsigned)c->verify_threads, "mdm-verify",
                          mdm_tls_thread_cleanup);
    if (ret != 0)
        mdm_error("serve", "cannot start the signature verifiers: %s", mdm_strerror(ret));
    return ret;
}

static int make_servers(struct app *app, unsigned n)
{
    const mdm_config_t *c = &app->cfg;
    struct mdm_http_limits lim = {
        .max_header_bytes = (size_t)c->max_header_bytes,
        .max_url_bytes = MDM_HTTP_DEFAULT_MAX_URL_BYTES,
        .max_body_bytes = (size_t)c->max_body_bytes,
        .max_headers = MDM_HTTP_DEFAULT_MAX_HEADERS,
    };
    mdm_http_router_init(&app->device_router);
    mdm_http_router_init(&app->admin_router);
    int ret = mdm_probe_add_routes(&app->device_router, app->actors);
    if (ret == 0)
        ret = mdm_probe_add_routes(&app->admin_router, app->actors);
    static const enum mdm_identity_mode identity_map[] = {
        [MDM_CFG_IDENTITY_MTLS] = MDM_IDENTITY_MTLS,
        [MDM_CFG_IDENTITY_SIGNATURE] = MDM_IDENTITY_SIGNATURE,
        [MDM_CFG_IDENTITY_EITHER] = MDM_IDENTITY_EITHER,
    };
    app->mdm_opts = (struct mdm_mdm_options){
        .instance = c->instance,
        .max_body_bytes = (size_t)c->mdm_max_body_bytes,
        .identity = identity_map[c->identity],
        .trust = app->identity_trust,
        .verifiers = app->verifiers,
    };
    if (ret == 0)
        ret = mdm_mdm_add_routes(&app->device_router, &app->mdm_opts);
    /* SCEP and the enrollment pages: reached by Macs and browsers without a client
     * certificate (the device listener asks for one but does not require it by default). */
    if (ret == 0)
        ret = mdm_enroll_add_routes(&app->device_router, c->instance);
    if (ret == 0)
        ret = mdm_api_add_routes(&app->admin_router, app->actors, c->dir, app->secrets_key);
    if (ret != 0)
        return ret;
    struct mdm_server_opts dev = {
        .name = "device",
        .listen = c->device_listen,
        .tls = app->device_tls,
        .router = &app->device_router,
        .limits = lim,
        .header_timeout_ms = (uint64_t)c->header_timeout_ms,
        .idle_timeout_ms = (uint64_t)c->idle_timeout_ms,
        .max_connections = (unsigned)c->max_connections,
    };
    struct mdm_server_opts adm = dev;
    adm.name = "admin";
    adm.listen = c->admin_listen;
    adm.tls = app->admin_tls;
    adm.router = &app->admin_router;
    if ((ret = mdm_server_new(&app->device, &dev, n)) != 0)
        return ret;
    if ((ret = mdm_server_new(&app->admin, &adm, n)) != 0)
        return ret;
    if ((ret = mdm_server_attach(app->device, &app->shards, MDM_SLOT_SERVER_DEVICE)) != 0)
        return ret;
    if ((ret = mdm_server_attach(app->admin, &app->shards, MDM_SLOT_SERVER_ADMIN)) != 0)
        return ret;
    if (c->device_plain_listen[0] == '\0')
        return 0;
    /* Same routes; without TLS the device handlers accept only Mdm-Signature. */
    struct mdm_server_opts plain = dev;
    plain.name = "device-plain";
    plain.listen = c->device_plain_listen;
    plain.tls = NULL;
    if ((ret = mdm_server_new(&app->device_plain, &plain, n)) != 0)
        return ret;
    return mdm_server_attach(app->device_plain, &app->shards, MDM_SLOT_SERVER_DEVICE_PLAIN);
}

/* First host name of the config, bracketed when it is an IPv6 address. */
static void url_host(const mdm_config_t *c, char *out, size_t outlen)
{
    size_t len = strcspn(c->hostnames, ",");
    char host[256];
    snprintf(host, sizeof(host), "%.*s", (int)len, c->hostnames);
    if (strchr(host, ':'))
        snprintf(out, outlen, "[%s]", host);
    else
        snprintf(out, outlen, "%s", host);
}

static void print_ready(const struct app *app, unsigned n, FILE *out)
{
    char host[300];
    url_host(&app->cfg, host, sizeof(host));
    fprintf(out, "mdmd is running with %u shard%s (Ctrl-C stops it)\n", n, n == 1 ? "" : "s");
    fprintf(out, "  device URL:    https://%s:%d/%s/\n", host, mdm_server_port(app->device),
            app->cfg.instance);
    if (app->device_plain) {
        const char *listen = app->cfg.device_plain_listen;
        int hlen = (int)(strrchr(listen, ':') - listen); /* the address parsed as host:port */
        fprintf(out, "  device plain:  http://%.*s:%d/%s/ (behind a TLS-terminating proxy; "
                     "Mdm-Signature only)\n",
                hlen, listen, mdm_server_port(app->device_plain), app->cfg.instance);
    }
    fprintf(out, "  enrollment:    %s/macos/otae\n", mdm_enroll_base_url());
    fprintf(out, "  admin URL:     https://%s:%d/\n", host, mdm_server_port(app->admin));
    fprintf(out, "  admin API key: printed once by `mdmd init`; its hash is in %s/admin-api-key.sha256\n",
            app->cfg.dir);
    fprintf(out, "listening device=%d admin=%d device_plain=%d\n", mdm_server_port(app->device),
            mdm_server_port(app->admin),
            app->device_plain ? mdm_server_port(app->device_plain) : 0);
    fflush(out);
}


/* A command's final answer goes to the policy engine (deployments, inventory, drift) and to
 * the security module (FileVault escrow). */
static void on_command_answered(mdm_shard_t *sh, const char *udid, const char *uuid, int status,
                                const uint8_t *response, size_t len)
{
    mdm_policy_command_answered(sh, udid, uuid, status, response, len);
    mdm_security_command_answered(sh, udid, uuid, status, response, len);
}

static void app_free(struct app *app)
{
    if (app->shards_ready)
        mdm_shards_join(&app->shards);
    mdm_workers_free(app->verifiers); /* idle by now: their requests were answered */
    mdm_enroll_stop();                /* after the shards, before the store: jobs commit */
    mdm_store_close(app->store);      /* waits for commits still in flight */
    if (app->shards.shards)
        mdm_shards_dispose(&app->shards);
    mdm_server_free(app->device);
    mdm_server_free(app->admin);
    mdm_server_free(app->device_plain);
    mdm_actors_free(app->actors);
    mdm_cms_trust_free(app->identity_trust);
    mdm_tls_ctx_free(app->device_tls);
    mdm_tls_ctx_free(app->admin_tls);
    mdm_tls_thread_cleanup();
    mdm_tls_global_cleanup();
    memset(app->secrets_key, 0, sizeof(app->secrets_key));
}

int mdm_serve(const char *dir, const char *const *overrides, size_t n_overrides, FILE *out)
{
    struct app *app = calloc(1, sizeof(*app));
    if (!app)
        return 1;
    int code = 1;
    if (load_config(app, dir, overrides, n_overrides) != 0)
        goto out;
    mdm_log_setup((enum mdm_log_level)app->cfg.log_level, app->cfg.log_format == MDM_CFG_LOG_JSON);

    /* Signals go to sigwait() below, never to a shard thread. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    unsigned n = shard_count(&app->cfg);
    if (load_secrets_key(app) != 0 || mdm_tls_global_init() != 0 || make_tls(app) != 0 ||
        load_identity_trust(app) != 0 || open_storage(app) != 0)
        goto out;
    if (mdm_shards_init(&app->shards, n) != 0)
        goto out;
    struct mdm_actors_options ao = {
        .store = app->store,
        .max_in_memory = (unsigned)app->cfg.actors_in_memory,
        .mailbox_size = (unsigned)app->cfg.mailbox_size,
    };
    if (mdm_actors_new(&app->actors, &app->shards, &ao) != 0)
        goto out;
    struct mdm_device_options dopts = {
        .max_queue = (unsigned)app->cfg.max_queue,
        .command_ttl_ms = (uint64_t)app->cfg.command_ttl_hours * 3600 * 1000,
        .user_auth_digest = app->cfg.user_authenticate == MDM_CFG_USER_AUTH_DIGEST,
        .secrets_key = app->secrets_key,
        .on_enrolled = mdm_policy_reconcile_device,
        .on_answered = on_command_answered,
    };
    mdm_device_setup(app->actors, &dopts);
    struct mdm_policy_engine_options po = {
        .dir = app->cfg.dir,
        .instance = app->cfg.instance,
        .organization = app->cfg.organization,
        .secrets_key = app->secrets_key,
        .sweep_interval_ms = (uint64_t)app->cfg.sweep_interval_minutes * 60000,
    };
    if (mdm_policy_engine_setup(&app->shards, app->actors, &po) != 0 ||
        mdm_security_setup(&app->shards, app->cfg.dir, app->secrets_key, app->actors) != 0)
        goto out;
    if (mdm_apns_setup(&app->shards, &app->cfg, app->store, app->secrets_key) != 0)
        goto out;
    struct mdm_enroll_options eo = {.cfg = &app->cfg, .store = app->store};
    if (mdm_enroll_start(&eo) != 0)
        goto out;
    if (make_servers(app, n) != 0)
        goto out;
    char host[300];
    url_host(&app->cfg, host, sizeof(host));
    mdm_enroll_set_base_url(host, mdm_server_port(app->device), app->cfg.instance);
    int ret = mdm_shards_start(&app->shards);
    app->shards_ready = true;
    if (ret != 0) {
        mdm_error("serve", "cannot start the shards (is io_uring allowed here?): %s",
                  mdm_strerror(ret));
        mdm_shards_stop(&app->shards, 0);
        goto out;
    }
    print_ready(app, n, out);
    mdm_info("serve", "ready: %u shards, device port %d, admin port %d, plain device port %d", n,
             mdm_server_port(app->device), mdm_server_port(app->admin),
             app->device_plain ? mdm_server_port(app->device_plain) : 0);

    int sig = 0;
    sigwait(&sigs, &sig);
    mdm_info("serve", "%s: stopping (finishing in-flight requests, committing pending writes)",
             sig == SIGINT ? "SIGINT" : "SIGTERM");
    mdm_shards_stop(&app->shards, (uint64_t)app->cfg.shutdown_timeout_ms);
    code = 0;
out:
    app_free(app);
    if (code == 0)
        mdm_info("serve", "stopped cleanly");
    free(app);
    return code;
}
