/*
 * Device identity end to end: a real mdmd (2 shards, ephemeral ports, a plain-HTTP device
 * listener besides the TLS one) and simulated Macs that prove who they are with the TLS client
 * certificate, the Mdm-Signature header, or both.
 *
 * [mdm] identity = either (the default) first, then mtls and signature after restarts. The
 * plain listener accepts only Mdm-Signature whatever identity says.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench/sim.h"
#include "check.h"
#include "core/log.h"
#include "admin_api.h"
#include "harness.h"

#ifndef MDM_TEST_DATA
#define MDM_TEST_DATA "tests/data"
#endif

static char dir[512];
static char work[600];
static char data_dir[512];
static server_proc_t srv;
static char api_key[128];
static sim_env_t env;
static bool running;

static int start(const char *identity)
{
    char id[64];
    snprintf(id, sizeof(id), "mdm.identity=%s", identity);
    const char *extra[] = {"--shards", "2", "--set", "log.level=warn", "--set",
                           "server.device_plain_listen=127.0.0.1:0", "--set", id, NULL};
    if (harness_start(&srv, dir, extra) != 0)
        return -1;
    running = true;
    env.port = srv.device_port;
    env.plain_port = srv.device_plain_port;
    return 0;
}

static void stop(void)
{
    if (!running)
        return;
    CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);
    running = false;
}

static void restart(const char *identity)
{
    stop();
    CHECK_EQ_INT(start(identity), 0);
    CHECK(srv.device_plain_port > 0);
}

static bool enroll(sim_mac_t *m)
{
    return sim_authenticate(m, NULL) == 200 && sim_token_update(m, NULL, 0, NULL) == 200;
}

/* True when the reply body (a one-line reason) contains text. */
static bool says(mdm_buf_t *out, const char *text)
{
    if (mdm_buf_append(out, "", 1) != 0)
        return false;
    out->len--;
    bool ok = strstr((const char *)mdm_buf_head(out), text) != NULL;
    if (!ok)
        fprintf(stderr, "expected '%s' in: %s\n", text, (const char *)mdm_buf_head(out));
    return ok;
}

/* Idle on /connect; 200 with no command expected from an enrolled Mac. */
static int idle(sim_mac_t *m)
{
    sim_cmd_t cmd;
    int status = sim_connect_idle(m, &cmd);
    if (status == 200)
        CHECK_STR(cmd.uuid, "");
    return status;
}

static void paths_of(const sim_mac_t *m, char *key, char *crt, size_t len)
{
    snprintf(key, len, "%s/%s.key", env.work_dir, m->name);
    snprintf(crt, len, "%s/%s.crt", env.work_dir, m->name);
}

/* One raw request on a new plain-HTTP connection. Returns the status or -1. */
static int raw_plain(const char *extra_headers, const char *body, mdm_buf_t *out)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)env.plain_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int status = -1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        goto out;
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "PUT /zdm/mdm/connect HTTP/1.1\r\nHost: localhost\r\nContent-Length: %zu\r\n"
                     "%s\r\n%s",
                     strlen(body), extra_headers, body);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        goto out;
    mdm_buf_t in;
    mdm_buf_init(&in, 0);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0)
            break;
        uint8_t buf[4096];
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r <= 0 || mdm_buf_append(&in, buf, (size_t)r) != 0)
            break;
        size_t off, blen;
        bool cls;
        long len = sim_parse_http_response(mdm_buf_head(&in), in.len, &status, &off, &blen, &cls);
        if (len < 0)
            break;
        if (len > 0) {
            mdm_buf_reset(out);
            if (mdm_buf_append(out, mdm_buf_head(&in) + off, blen) != 0)
                status = -1;
            break;
        }
        status = -1;
    }
    mdm_buf_dispose(&in);
out:
    if (fd >= 0)
        close(fd);
    return status;
}

static void test_either(sim_mac_t *sig, sim_mac_t *tls, sim_mac_t *plain)
{
    mdm_buf_t out;
    mdm_buf_init(&out, 0);

    /* A Mac without a client certificate enrolls and works with Mdm-Signature alone. */
    sig->no_identity = true;
    sig->sign = true;
    CHECK(enroll(sig));
    CHECK_EQ_INT(idle(sig), 200);
    /* A check-in that needs the identity too (bootstrap escrow: the Mac counts as ADE). */
    char path[160];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/actions/set-ade", sig->udid);
    CHECK_EQ_INT(admin_api(srv.admin_port, dir, api_key, "POST", path, NULL, "{\"ade\":true}",
                           NULL), 200);
    const uint8_t token[] = "bootstrap token over Mdm-Signature";
    CHECK_EQ_INT(sim_set_bootstrap_token(sig, token, sizeof(token), NULL), 200);
    mdm_buf_t tok;
    mdm_buf_init(&tok, 0);
    CHECK_EQ_INT(sim_get_bootstrap_token(sig, &tok), 200);
    CHECK(tok.len == sizeof(token) && memcmp(mdm_buf_head(&tok), token, tok.len) == 0);
    mdm_buf_dispose(&tok);

    /* The body changed after signing. */
    sig->sign_tamper = true;
    CHECK_EQ_INT(sim_token_update(sig, NULL, 0, &out), 403);
    CHECK(says(&out, "Mdm-Signature does not verify"));
    sig->sign_tamper = false;
    CHECK_EQ_INT(idle(sig), 200);

    /* A signature by a certificate of a CA that mdmd does not trust, for a known UDID and for
     * a new one. */
    char other_key[600], other_crt[600];
    snprintf(other_key, sizeof(other_key), "%s/other-client.key", data_dir);
    snprintf(other_crt, sizeof(other_crt), "%s/other-client.crt", data_dir);
    sig->sign_key = other_key;
    sig->sign_cert = other_crt;
    CHECK_EQ_INT(sim_token_update(sig, NULL, 0, &out), 403);
    CHECK(says(&out, "signer certificate not issued by a trusted CA"));
    sim_mac_t stranger;
    CHECK_EQ_INT(sim_mac_init(&stranger, &env, NULL, 7), 0);
    stranger.no_identity = true;
    stranger.sign = true;
    stranger.sign_key = other_key;
    stranger.sign_cert = other_crt;
    CHECK_EQ_INT(sim_authenticate(&stranger, &out), 403);
    CHECK(says(&out, "not issued by a trusted CA"));
    sim_mac_dispose(&stranger);
    sig->sign_key = sig->sign_cert = NULL;

    /* Enrolled over mTLS; then the same certificate signs over a connection without one. */
    CHECK(enroll(tls));
    CHECK_EQ_INT(idle(tls), 200);
    tls->sign = true; /* both, same certificate */
    CHECK_EQ_INT(idle(tls), 200);
    tls->no_identity = true;
    sim_mac_disconnect(tls);
    CHECK_EQ_INT(idle(tls), 200);
    CHECK_EQ_INT(sim_token_update(tls, NULL, 0, NULL), 200);
    tls->no_identity = false;
    tls->sign = false;
    sim_mac_disconnect(tls);
    CHECK_EQ_INT(idle(tls), 200);

    /* mTLS with certificate A, Mdm-Signature by certificate B (same CA, also enrolled). */
    char b_key[700], b_crt[700];
    paths_of(sig, b_key, b_crt, sizeof(b_key));
    tls->sign = true;
    tls->sign_key = b_key;
    tls->sign_cert = b_crt;
    CHECK_EQ_INT(sim_token_update(tls, NULL, 0, &out), 403);
    CHECK(says(&out, "different certificates"));
    /* B's valid signature over A's UDID without a client certificate: not A's identity. */
    tls->no_identity = true;
    sim_mac_disconnect(tls);
    CHECK_EQ_INT(sim_token_update(tls, NULL, 0, &out), 403);
    tls->no_identity = false;
    tls->sign = false;
    tls->sign_key = tls->sign_cert = NULL;
    sim_mac_disconnect(tls);
    CHECK_EQ_INT(idle(tls), 200);

    /* The plain-HTTP listener: a Mac signs everything and works end to end. */
    plain->plain_http = true;
    plain->sign = true;
    CHECK(enroll(plain));
    CHECK_EQ_INT(idle(plain), 200);
    CHECK(plain->connects == 1); /* keep-alive over plain HTTP */
    /* ...without the signature, or with a broken one: refused. */
    plain->sign = false;
    CHECK_EQ_INT(sim_token_update(plain, NULL, 0, &out), 403);
    CHECK(says(&out, "accepts only requests signed"));
    plain->sign = true;
    plain->sign_tamper = true;
    CHECK_EQ_INT(sim_token_update(plain, NULL, 0, &out), 403);
    CHECK(says(&out, "does not verify"));
    plain->sign_tamper = false;
    CHECK_EQ_INT(idle(plain), 200);
    /* A Mac enrolled over mTLS may come in through the proxy with the same certificate. */
    tls->plain_http = true;
    tls->sign = true;
    sim_mac_disconnect(tls);
    CHECK_EQ_INT(idle(tls), 200);
    tls->plain_http = false;
    tls->sign = false;
    sim_mac_disconnect(tls);

    /* Raw requests: no signature, not base64, a SignedData that is garbage. */
    const char *body = "<plist><dict><key>Status</key><string>Idle</string></dict></plist>";
    CHECK_EQ_INT(raw_plain("", body, &out), 403);
    CHECK(says(&out, "no device identity"));
    CHECK_EQ_INT(raw_plain("Mdm-Signature: not*base64\r\n", body, &out), 403);
    CHECK(says(&out, "not base64"));
    CHECK_EQ_INT(raw_plain("Mdm-Signature: AAAAAAAA\r\n", body, &out), 403);
    CHECK(says(&out, "Mdm-Signature"));
    mdm_buf_dispose(&out);
}

static void test_mtls_only(sim_mac_t *sig, sim_mac_t *tls, sim_mac_t *plain)
{
    restart("mtls");
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    /* Signature only on the TLS listener: refused, even for an enrolled Mac. */
    CHECK_EQ_INT(sim_token_update(sig, NULL, 0, &out), 403);
    CHECK(says(&out, "TLS client certificate"));
    CHECK_EQ_INT(idle(tls), 200);
    /* The plain listener still takes signatures. */
    CHECK_EQ_INT(idle(plain), 200);
    mdm_buf_dispose(&out);
}

static void test_signature_only(sim_mac_t *sig, sim_mac_t *tls)
{
    restart("signature");
    mdm_buf_t out;
    mdm_buf_init(&out, 0);
    CHECK_EQ_INT(idle(sig), 200);
    CHECK_EQ_INT(sim_token_update(tls, NULL, 0, &out), 403); /* the certificate alone */
    CHECK(says(&out, "Mdm-Signature"));
    tls->sign = true;
    CHECK_EQ_INT(idle(tls), 200);
    tls->sign = false;
    mdm_buf_dispose(&out);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("identity"));
    snprintf(work, sizeof(work), "%s/macs", dir);
    strncat(dir, "/inst", sizeof(dir) - strlen(dir) - 1);
    const char *d = getenv("MDM_TEST_DATA");
    snprintf(data_dir, sizeof(data_dir), "%s", d ? d : MDM_TEST_DATA);
    mdm_log_setup(MDM_LOG_WARN, false);
    if (harness_init_key(dir, api_key, sizeof(api_key)) != 0)
        return 99;
    if (start("either") != 0)
        return 99;
    if (sim_env_init(&env, dir, work, srv.device_port) != 0)
        return 99;
    env.plain_port = srv.device_plain_port;
    CHECK(env.plain_port > 0);

    sim_mac_t sig, tls, plain;
    CHECK_EQ_INT(sim_mac_init(&sig, &env, NULL, 0), 0);
    CHECK_EQ_INT(sim_mac_init(&tls, &env, NULL, 1), 0);
    CHECK_EQ_INT(sim_mac_init(&plain, &env, NULL, 2), 0);
    test_either(&sig, &tls, &plain);
    test_mtls_only(&sig, &tls, &plain);
    test_signature_only(&sig, &tls);
    sim_mac_dispose(&sig);
    sim_mac_dispose(&tls);
    sim_mac_dispose(&plain);

    stop();
    mdm_tls_thread_cleanup();
    mdm_tls_global_cleanup();
    return check_finish("integ-identity");
}
