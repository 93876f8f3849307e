/*
 * The APNs push certificate through the admin API, end to end on a real mdmd:
 * push-like certificates made with the openssl CLI (a CA, leaves whose subject carries
 * UID=com.apple.mgmt.External.<uuid>, an expired one, a not-yet-valid one, one expiring in 10
 * days, one without an Apple topic, one of another topic, PKCS#12 files with a password);
 * checks, refusals, the topic guard, the warning, audit events, persistence across a restart
 * and that the stored key is sealed (it unseals with the instance's secrets key only).
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/pushcert.h"
#include "check.h"
#include "core/cms.h"
#include "core/file.h"
#include "core/https_client.h"
#include "core/seal.h"
#include "admin_api.h"
#include "harness.h"
#include "storage/store.h"

#define U1 "11111111-2222-3333-4444-555555555555"
#define U2 "66666666-7777-8888-9999-AAAAAAAAAAAA"
#define TOPIC1 "com.apple.mgmt.External." U1
#define TOPIC2 "com.apple.mgmt.External." U2

static char dir[512], certs[600];
static char api_key[128];
static server_proc_t srv;

static const char gen_script[] =
    "set -e\n"
    "mkdir -p db && : > db/index.txt && echo 01 > db/serial\n"
    "printf '[ca]\\ndefault_ca = c\\n[c]\\ndir = .\\ndatabase = db/index.txt\\n"
    "serial = db/serial\\nnew_certs_dir = db\\ndefault_md = sha256\\npolicy = p\\n"
    "unique_subject = no\\ncopy_extensions = none\\nemail_in_dn = no\\npreserve = yes\\n"
    "[p]\\nUID = optional\\nCN = optional\\nC = optional\\n' > ca.cnf\n"
    "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt "
    "-subj '/CN=Test APNs CA' -days 3650 2>/dev/null\n"
    "mk() {\n"
    "  openssl req -new -newkey rsa:2048 -nodes -keyout $1.key -out $1.csr "
    "-subj \"/UID=$2/CN=APSP:$1/C=US\" 2>/dev/null\n"
    "  openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in $1.csr -out $1.crt "
    "-notext -startdate $3 -enddate $4 2>/dev/null\n"
    "}\n"
    "mk push " TOPIC1 " 20200101000000Z 20991231000000Z\n"
    "mk other " TOPIC2 " 20200101000000Z 20991231000000Z\n"
    "mk expired " TOPIC1 " 20200101000000Z 20210101000000Z\n"
    "mk future " TOPIC1 " 20980101000000Z 20991231000000Z\n"
    "mk notapple com.example.something 20200101000000Z 20991231000000Z\n"
    "mk soon " TOPIC1 " 20200101000000Z $(date -u -d '+10 days' +%Y%m%d%H%M%SZ)\n"
    "openssl pkcs12 -export -in push.crt -inkey push.key -out push.p12 -passout pass:s3cret "
    "-certpbe PBE-SHA1-3DES -keypbe PBE-SHA1-3DES -macalg sha1\n"
    "openssl pkcs12 -export -in push.crt -inkey push.key -out push-aes.p12 "
    "-passout pass:s3cret\n"
    "openssl pkcs8 -topk8 -nocrypt -in other.key -out other.pk8\n";

static char *slurp(const char *name, size_t *len)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/%s", certs, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static int api(const char *method, const char *path, const char *body, json_t **out)
{
    return admin_api(srv.admin_port, dir, api_key, method, path, NULL, body, out);
}


static int put_pem(const char *cert, const char *key, const char *query, json_t **out)
{
    char *c = slurp(cert, NULL), *k = slurp(key, NULL);
    json_t *b = json_pack("{s:s, s:s}", "certificate_pem", c ? c : "", "key_pem", k ? k : "");
    char *text = json_dumps(b, JSON_COMPACT);
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/push-certificate%s", query ? query : "");
    int st = api("PUT", path, text, out);
    free(text);
    json_decref(b);
    free(c);
    free(k);
    return st;
}

static int put_p12(const char *file, const char *password, json_t **out)
{
    size_t len = 0;
    char *p = slurp(file, &len);
    mdm_buf_t b64;
    mdm_buf_init(&b64, 0);
    CHECK(p && mdm_base64_encode(p, len, &b64) == 0 && mdm_buf_append(&b64, "", 1) == 0);
    json_t *b = json_pack("{s:s, s:s}", "pkcs12_base64", (const char *)mdm_buf_head(&b64),
                          "password", password);
    char *text = json_dumps(b, JSON_COMPACT);
    int st = api("PUT", "/api/v1/push-certificate", text, out);
    free(text);
    json_decref(b);
    mdm_buf_dispose(&b64);
    free(p);
    return st;
}

static bool detail_has(json_t *j, const char *needle)
{
    bool ok = strstr(jstr(j, "detail"), needle) != NULL;
    if (!ok)
        fprintf(stderr, "detail \"%s\" lacks \"%s\"\n", jstr(j, "detail"), needle);
    return ok;
}

static void test_refusals(void)
{
    json_t *j = NULL;
    CHECK_EQ_INT(api("GET", "/api/v1/push-certificate", NULL, &j), 404);
    json_decref(j);
    CHECK_EQ_INT(api("PUT", "/api/v1/push-certificate", "[1]", &j), 400);
    json_decref(j);
    CHECK_EQ_INT(api("PUT", "/api/v1/push-certificate", "{\"certificate_pem\":\"x\"}", &j), 400);
    json_decref(j);
    CHECK_EQ_INT(api("DELETE", "/api/v1/push-certificate", NULL, &j), 405);
    json_decref(j);
    CHECK_EQ_INT(put_pem("push.crt", "push.csr", NULL, &j), 400); /* not a key */
    json_decref(j);
    CHECK_EQ_INT(put_pem("expired.crt", "expired.key", NULL, &j), 422);
    CHECK(detail_has(j, "expired"));
    json_decref(j);
    CHECK_EQ_INT(put_pem("future.crt", "future.key", NULL, &j), 422);
    CHECK(detail_has(j, "not valid yet"));
    json_decref(j);
    CHECK_EQ_INT(put_pem("push.crt", "other.key", NULL, &j), 422);
    CHECK(detail_has(j, "does not belong"));
    json_decref(j);
    CHECK_EQ_INT(put_pem("notapple.crt", "notapple.key", NULL, &j), 422);
    CHECK(detail_has(j, "com.apple.mgmt."));
    json_decref(j);
    CHECK_EQ_INT(put_pem("ca.crt", "ca.key", NULL, &j), 422); /* no UID at all */
    CHECK(detail_has(j, "no UID"));
    json_decref(j);
    CHECK_EQ_INT(put_p12("push.p12", "wrong", &j), 400);
    CHECK(detail_has(j, "password"));
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/push-certificate", NULL, &j), 404);
    json_decref(j);
}

static void test_upload(void)
{
    json_t *j = NULL;
    CHECK_EQ_INT(put_pem("push.crt", "push.key", NULL, &j), 200);
    CHECK_STR(jstr(j, "topic"), TOPIC1);
    CHECK(json_integer_value(json_object_get(j, "days_left")) > 10000);
    CHECK(json_object_get(j, "warning") == NULL);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/push-certificate", NULL, &j), 200);
    CHECK_STR(jstr(j, "topic"), TOPIC1);
    CHECK(strstr(jstr(j, "subject"), "APSP:push") != NULL);
    CHECK(json_integer_value(json_object_get(j, "not_after")) == 4102358400); /* 2099-12-31 */
    json_decref(j);

    /* Another topic is refused without force, and says why. */
    CHECK_EQ_INT(put_pem("other.crt", "other.pk8", NULL, &j), 409);
    CHECK(detail_has(j, TOPIC2));
    CHECK(detail_has(j, "force=1"));
    CHECK(detail_has(j, "re-enroll"));
    json_decref(j);

    /* PKCS#12 with its password (legacy 3DES, as Keychain Access exports). */
    CHECK_EQ_INT(put_p12("push.p12", "s3cret", &j), 200);
    CHECK_STR(jstr(j, "topic"), TOPIC1);
    json_decref(j);
    /* OpenSSL 3's default (AES-256-CBC, PBKDF2): accepted or refused with a clear 400. */
    int st = put_p12("push-aes.p12", "s3cret", &j);
    CHECK(st == 200 || (st == 400 && detail_has(j, "encryption")));
    if (st != 200)
        fprintf(stderr, "note: PKCS#12 with AES/PBKDF2 refused by this wolfSSL\n");
    json_decref(j);

    /* Under 30 days: accepted with a warning, also on GET. */
    CHECK_EQ_INT(put_pem("soon.crt", "soon.key", NULL, &j), 200);
    CHECK(json_integer_value(json_object_get(j, "days_left")) >= 9);
    CHECK(json_integer_value(json_object_get(j, "days_left")) <= 10);
    CHECK(strstr(jstr(j, "warning"), "expires in") != NULL);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/push-certificate", NULL, &j), 200);
    CHECK(strstr(jstr(j, "warning"), "expires in") != NULL);
    json_decref(j);

    /* Forced replacement with another topic. */
    CHECK_EQ_INT(put_pem("other.crt", "other.pk8", "?force=1", &j), 200);
    CHECK_STR(jstr(j, "topic"), TOPIC2);
    CHECK_STR(jstr(j, "replaced_topic"), TOPIC1);
    json_decref(j);

    /* Every upload attempt is audited. */
    CHECK_EQ_INT(api("GET", "/api/v1/audit?limit=1000", NULL, &j), 200);
    json_t *events = json_object_get(j, "events");
    size_t i, ok = 0, refused = 0;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        if (strcmp(jstr(ev, "action"), "push_certificate.upload") != 0)
            continue;
        if (json_integer_value(json_object_get(ev, "status")) == 200)
            ok++;
        else
            refused++;
    }
    CHECK(ok >= 4);
    CHECK(refused >= 9);
    json_decref(j);
}

/* The command line over the same API: mdmd push-cert show|upload, mdmd push. */
static void test_cli(void)
{
    char url[64], out[8192], cert[700], key[700], p12[700];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", srv.admin_port);
    snprintf(cert, sizeof(cert), "%s/push.crt", certs);
    snprintf(key, sizeof(key), "%s/push.key", certs);
    snprintf(p12, sizeof(p12), "%s/push.p12", certs);
    const char *up[] = {"push-cert", dir, "upload", "--cert", cert, "--key", key, "--force",
                        "--url", url, "--api-key", api_key, NULL};
    CHECK_EQ_INT(harness_run(dir, up, 30000, out, sizeof(out)), 0);
    CHECK(strstr(out, TOPIC1) != NULL);
    const char *show[] = {"push-cert", dir, "show", "--url", url, "--api-key", api_key, NULL};
    CHECK_EQ_INT(harness_run(dir, show, 30000, out, sizeof(out)), 0);
    CHECK(strstr(out, TOPIC1) != NULL && strstr(out, "days_left") != NULL);
    const char *pk[] = {"push-cert", dir, "upload", "--p12", p12, "--password", "s3cret",
                        "--url", url, "--api-key", api_key, NULL};
    CHECK_EQ_INT(harness_run(dir, pk, 30000, out, sizeof(out)), 0);
    const char *half[] = {"push-cert", dir, "upload", "--cert", cert, "--url", url, NULL};
    CHECK_EQ_INT(harness_run(dir, half, 30000, out, sizeof(out)), 2);
    /* The pusher is off here (apns.url empty) and the API says so (503). */
    const char *all[] = {"push", dir, "--all", "--url", url, "--api-key", api_key, NULL};
    CHECK_EQ_INT(harness_run(dir, all, 30000, out, sizeof(out)), 1);
    CHECK(strstr(out, "503") != NULL);
    const char *none[] = {"push", dir, "--url", url, "--api-key", api_key, NULL};
    CHECK_EQ_INT(harness_run(dir, none, 30000, out, sizeof(out)), 2);
}

/* After the server stopped: the key in the database is sealed with the instance key. */
static void test_sealed_at_rest(void)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/db", dir);
    mdm_store_t *s = NULL;
    struct mdm_store_options o = {.path = path};
    CHECK_EQ_INT(mdm_store_open(&s, &o), 0);
    if (!s)
        return;
    uint8_t key[MDM_SEAL_KEY_LEN], wrong[MDM_SEAL_KEY_LEN] = {0};
    snprintf(path, sizeof(path), "%s/secrets.key", dir);
    CHECK_EQ_INT(mdm_seal_key_load(path, key), 0);
    mdm_pushcert_t pc;
    CHECK_EQ_INT(mdm_pushcert_load(s, wrong, &pc, NULL), MDM_ECRYPTO);
    mdm_pushcert_dispose(&pc);
    CHECK_EQ_INT(mdm_pushcert_load(s, key, &pc, NULL), 0);
    CHECK_STR(pc.topic, TOPIC2);
    CHECK(pc.key_len > 1000); /* RSA 2048 */
    mdm_pushcert_dispose(&pc);
    mdm_store_close(s);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("pushcert"));
    snprintf(certs, sizeof(certs), "%s-certs", dir);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s' && cd '%s' && sh -c \"$GEN\"", certs,
             certs, certs);
    setenv("GEN", gen_script, 1);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot make the test certificates with the openssl CLI\n");
        return 99;
    }
    const char *args[] = {"init", dir, "--hostnames", "localhost,127.0.0.1", NULL};
    char out[8192];
    if (harness_run(dir, args, 60000, out, sizeof(out)) != 0) {
        fprintf(stderr, "mdmd init failed:\n%s\n", out);
        return 99;
    }
    if (admin_key_from_init(out, api_key, sizeof(api_key)) != 0)
        return 99;
    /* apns.url empty: pushes are off (the CLI's push then reports 503). */
    const char *extra[] = {"--shards", "2", "--set", "apns.url=", NULL};
    if (harness_start(&srv, dir, extra) != 0)
        return 99;
    test_refusals();
    test_upload();
    CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);
    test_sealed_at_rest();
    if (harness_start(&srv, dir, extra) == 0) {
        json_t *j = NULL;
        CHECK_EQ_INT(api("GET", "/api/v1/push-certificate", NULL, &j), 200);
        CHECK_STR(jstr(j, "topic"), TOPIC2);
        json_decref(j);
        test_cli();
        CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);
    } else {
        CHECK(!"restart failed");
    }
    return check_finish("integ-pushcert");
}
