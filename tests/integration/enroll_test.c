/*
 * Enrollment end to end on a real mdmd (2 shards, ephemeral ports, small argon2id costs set
 * with --set): SCEP GetCACaps/GetCACert (the RA chains to the CA); no push certificate -> 503
 * page; the web enrollment link (form POST -> page with a one-time download link -> the signed
 * profile, signature and payloads checked); the simulated Mac's SCEP with the profile's
 * challenge (certificate issued from the CA, index record written), a reused and an unknown
 * challenge (FAILURE, not a certificate), GET PKIOperation, RenewalReq; Authenticate and
 * TokenUpdate with the issued identity; identical pages for every failed sign-on; invitation
 * pages of each mode, used/revoked/expired/unknown invitations refused; OTAE disabled and
 * invitation-only (403); domain + one-time PIN; Domain sign-on against a real slapd (the
 * bind password file must be private); lockout per user and per source address; and the
 * records and audit events left in the store. Enrollments remember the user's groups at
 * sign-on: a local user's (web link, PIN invitation), the directory's (names too long for an
 * enrollment left out), none for a PIN invitation of a user mdmd does not know.
 *
 * Users and invitations come from the admin API (POST /api/v1/users, /api/v1/invitations)
 * when the server has it; records the API cannot make (expired, revoked, used invitations,
 * disabled users) are written straight into the instance's database while the server is
 * stopped.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <plist/plist.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "actors/auth.h"
#include "bench/sim.h"
#include "check.h"
#include "core/cms.h"
#include "core/crypto.h"
#include "core/file.h"
#include "core/https_client.h"
#include "core/plist.h"
#include "core/scep.h"
#include "core/x509.h"
#include "admin_api.h"
#include "harness.h"
#include "storage/audit.h"
#include "storage/enroll.h"
#include "storage/store.h"

#define TOPIC "com.apple.mgmt.External.11111111-2222-3333-4444-555555555555"
#define ALICE_PW "correct horse battery"
#define PIN_OK "482915"

static char dir[512], certs[600], work[600];
static char base_url[200]; /* what the profile's URLs start with (the port changes per start) */
static char api_key[128];
static server_proc_t srv;
static bool running;
static const struct mdm_argon2_params small = {1, 256, 1}; /* seeded hashes: fast */

static const char gen_script[] =
    "set -e\n"
    "mkdir -p db && : > db/index.txt && echo 01 > db/serial\n"
    "printf '[ca]\\ndefault_ca = c\\n[c]\\ndir = .\\ndatabase = db/index.txt\\n"
    "serial = db/serial\\nnew_certs_dir = db\\ndefault_md = sha256\\npolicy = p\\n"
    "unique_subject = no\\ncopy_extensions = none\\nemail_in_dn = no\\npreserve = yes\\n"
    "[p]\\nUID = optional\\nCN = optional\\nC = optional\\n' > ca.cnf\n"
    "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt "
    "-subj '/CN=Test APNs CA' -days 3650 2>/dev/null\n"
    "openssl req -new -newkey rsa:2048 -nodes -keyout push.key -out push.csr "
    "-subj '/UID=" TOPIC "/CN=APSP:push/C=US' 2>/dev/null\n"
    "openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in push.csr -out push.crt "
    "-notext -startdate 20200101000000Z -enddate 20991231000000Z 2>/dev/null\n";

/* ---- server --------------------------------------------------------------------------------- */

/* Starts mdmd with the test's base settings plus sets (NULL-terminated "section.key=value"). */
static int start(const char *const *sets)
{
    const char *extra[40];
    size_t n = 0;
    static const char *const base[] = {
        "log.level=warn",           "enroll.argon2_memory_kib=256", "enroll.argon2_iterations=1",
        "enroll.max_failures=50",   "enroll.lockout_minutes=1",     NULL};
    extra[n++] = "--shards";
    extra[n++] = "2";
    for (size_t i = 0; base[i]; i++) {
        extra[n++] = "--set";
        extra[n++] = base[i];
    }
    for (size_t i = 0; sets && sets[i] && n < 37; i++) {
        extra[n++] = "--set";
        extra[n++] = sets[i];
    }
    extra[n] = NULL;
    if (harness_start(&srv, dir, extra) != 0)
        return -1;
    running = true;
    snprintf(base_url, sizeof(base_url), "https://localhost:%d/zdm", srv.device_port);
    return 0;
}

static void stop(void)
{
    if (!running)
        return;
    CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);
    running = false;
}

static bool restart(const char *const *sets)
{
    stop();
    int ok = start(sets) == 0;
    CHECK(ok);
    return ok;
}

static mdm_store_t *open_db(void)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/db", dir);
    struct mdm_store_options o = {.path = path};
    mdm_store_t *s = NULL;
    if (mdm_store_open(&s, &o) != 0)
        return NULL;
    return s;
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

typedef struct resp {
    int status;
    mdm_buf_t raw;    /* head + body, NUL-terminated */
    const char *body; /* into raw */
    size_t body_len;
} resp_t;

static void resp_free(resp_t *r) { mdm_buf_dispose(&r->raw); }

/* One request on a new connection to the device listener. */
static int device_req(const char *method, const char *path, const char *ctype, const void *body,
                      size_t len, resp_t *r)
{
    memset(r, 0, sizeof(*r));
    mdm_buf_init(&r->raw, 0);
    r->status = -1;
    hclient_t c;
    if (hclient_connect(&c, srv.device_port, instance_ca(dir), NULL, NULL, NULL) != 0) {
        hclient_close(&c);
        return -1;
    }
    mdm_buf_t req;
    mdm_buf_init(&req, 0);
    int ret = mdm_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: localhost\r\n", method, path);
    if (ret == 0 && body)
        ret = mdm_buf_printf(&req, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, len);
    if (ret == 0)
        ret = mdm_buf_append_str(&req, "Connection: close\r\n\r\n");
    if (ret == 0 && body && len)
        ret = mdm_buf_append(&req, body, len);
    if (ret == 0 && hclient_send(&c, mdm_buf_head(&req), req.len) == 0) {
        r->status = hclient_read_response(&c, &r->raw, 30000);
        if (r->status > 0 && mdm_https_response_body(&r->raw, &r->body, &r->body_len) != 0)
            r->status = -1;
    }
    mdm_buf_dispose(&req);
    hclient_close(&c);
    return r->status;
}

static int get(const char *path, resp_t *r) { return device_req("GET", path, NULL, NULL, 0, r); }

/* HEAD path (the answer has no body, so it is only waited for): 0 once the server closed. */
static int head_req(const char *path)
{
    hclient_t c;
    int ret = -1;
    char req[600];
    int n = snprintf(req, sizeof(req), "HEAD %s HTTP/1.1\r\nHost: localhost\r\n"
                                       "Connection: close\r\n\r\n", path);
    if (hclient_connect(&c, srv.device_port, instance_ca(dir), NULL, NULL, NULL) == 0 &&
        hclient_send(&c, req, (size_t)n) == 0)
        ret = hclient_wait_close(&c, 30000);
    hclient_close(&c);
    return ret;
}

/* The value of header name in r (a static copy), or "". */
static const char *header(const resp_t *r, const char *name)
{
    static char val[512];
    val[0] = 0;
    const char *p = (const char *)mdm_buf_head(&r->raw);
    const char *end = r->body ? r->body : p;
    size_t nlen = strlen(name);
    for (const char *line = strstr(p, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, name, nlen) == 0 && h[nlen] == ':') {
            h += nlen + 1;
            while (*h == ' ')
                h++;
            size_t n = strcspn(h, "\r\n");
            snprintf(val, sizeof(val), "%.*s", (int)n, h);
            break;
        }
    }
    return val;
}

static bool body_has(const resp_t *r, const char *text)
{
    bool ok = r->body && strstr(r->body, text) != NULL;
    if (!ok)
        fprintf(stderr, "expected \"%s\" in the %d answer: %.*s\n", text, r->status,
                (int)(r->body_len > 1500 ? 1500 : r->body_len), r->body ? r->body : "");
    return ok;
}

/* Appends s form-encoded to b. */
static void form_add(mdm_buf_t *b, const char *name, const char *s)
{
    int ret = mdm_buf_printf(b, "%s%s=", b->len ? "&" : "", name);
    for (; *s && ret == 0; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.')
            ret = mdm_buf_append(b, s, 1);
        else if (c == ' ')
            ret = mdm_buf_append(b, "+", 1);
        else
            ret = mdm_buf_printf(b, "%%%02X", c);
    }
    CHECK_EQ_INT(ret, 0);
}

/* POSTs the form fields (NULL values are left out) to path. */
static int post_form(const char *path, const char *user, const char *password, const char *pin,
                     resp_t *r)
{
    mdm_buf_t b;
    mdm_buf_init(&b, 0);
    if (user)
        form_add(&b, "user", user);
    if (password)
        form_add(&b, "password", password);
    if (pin)
        form_add(&b, "pin", pin);
    int st = device_req("POST", path, "application/x-www-form-urlencoded", mdm_buf_head(&b),
                        b.len, r);
    mdm_buf_dispose(&b);
    return st;
}

static int otae_post(const char *user, const char *password, const char *pin, resp_t *r)
{
    return post_form("/zdm/macos/otae", user, password, pin, r);
}

/* ---- seeding -------------------------------------------------------------------------------- */

static bool api_ok; /* the admin API has /users and /invitations */

/* A local user; group (NULL: none) its one group, "staff" its second when given. */
static void seed_user_in(mdm_batch_t *b, const char *name, const char *password, bool disabled,
                         const char *group)
{
    mdm_local_user_t u = {.disabled = disabled, .created_ms = 1};
    snprintf(u.name, sizeof(u.name), "%s", name);
    if (group) {
        u.n_groups = 2;
        snprintf(u.groups[0], sizeof(u.groups[0]), "%s", group);
        snprintf(u.groups[1], sizeof(u.groups[1]), "staff");
    }
    CHECK_EQ_INT(mdm_password_hash(&small, password, strlen(password), u.password_hash,
                                   sizeof(u.password_hash)),
                 0);
    mdm_store_put_local_user(b, &u);
}

static void seed_user(mdm_batch_t *b, const char *name, const char *password, bool disabled)
{
    seed_user_in(b, name, password, disabled, NULL);
}

/* True when the JSON array groups holds exactly the n names of want, in order. */
static bool groups_are(json_t *groups, const char *const *want, size_t n)
{
    if (!json_is_array(groups) || json_array_size(groups) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        const char *g = json_string_value(json_array_get(groups, i));
        if (!g || strcmp(g, want[i]) != 0)
            return false;
    }
    return true;
}

/* GET /api/v1/enrollments/{id} (id: its first 32 bytes): its groups are exactly the n names
 * of want. */
static void check_enrollment_groups(const char *id, const char *const *want, size_t n)
{
    char path[200];
    snprintf(path, sizeof(path), "/api/v1/enrollments/%.32s", id);
    json_t *j = NULL;
    CHECK_EQ_INT(admin_api(srv.admin_port, dir, api_key, "GET", path, NULL, NULL, &j), 200);
    CHECK(groups_are(json_object_get(j, "groups"), want, n));
    json_decref(j);
}

/* An invitation with a known id (32 hex digits from n) and PIN_OK. */
static void seed_invitation(mdm_batch_t *b, char id[33], unsigned n, const char *user,
                            enum mdm_invite_mode mode, enum mdm_invite_status status,
                            int64_t expires_in_ms)
{
    mdm_invitation_t inv = {.mode = (uint8_t)mode, .status = (uint8_t)status, .created_ms = 1};
    snprintf(inv.id, sizeof(inv.id), "%032x", 0xe0000000u + n);
    snprintf(inv.user_name, sizeof(inv.user_name), "%s", user);
    inv.expires_ms = (uint64_t)((int64_t)mdm_wall_ms() + expires_in_ms);
    snprintf(inv.created_by, sizeof(inv.created_by), "test");
    CHECK_EQ_INT(mdm_pin_hash(&small, PIN_OK, inv.pin_hash, sizeof(inv.pin_hash)), 0);
    mdm_store_put_invitation(b, &inv);
    snprintf(id, 33, "%s", inv.id);
}

/* Invitations of the test, by purpose. */
static char inv_pw[33], inv_pin[33], inv_both[33], inv_expired[33], inv_revoked[33],
    inv_used[33], inv_otp[33], inv_spare[33];
static char api_inv[33], api_pin[32];

static void seed_all(void)
{
    stop();
    mdm_store_t *s = open_db();
    CHECK(s != NULL);
    if (!s)
        return;
    mdm_batch_t *b = mdm_batch_new();
    seed_user_in(b, "alice", ALICE_PW, false, "Mac Fleet");
    seed_user(b, "bob", "bob password", true); /* disabled */
    seed_user(b, "dave", "dave password", false);
    seed_user(b, "erin", "erin password", false);
    seed_user(b, "locky", "locky password", false);
    const int64_t hour = 3600 * 1000;
    seed_invitation(b, inv_pw, 1, "alice", MDM_INVITE_PASSWORD, MDM_INVITE_PENDING, hour);
    seed_invitation(b, inv_pin, 2, "carol", MDM_INVITE_PIN, MDM_INVITE_PENDING, hour);
    seed_invitation(b, inv_both, 3, "dave", MDM_INVITE_PASSWORD_AND_PIN, MDM_INVITE_PENDING,
                    hour);
    seed_invitation(b, inv_expired, 4, "carol", MDM_INVITE_PIN, MDM_INVITE_PENDING, -60000);
    seed_invitation(b, inv_revoked, 5, "carol", MDM_INVITE_PIN, MDM_INVITE_REVOKED, hour);
    seed_invitation(b, inv_used, 6, "carol", MDM_INVITE_PIN, MDM_INVITE_USED, hour);
    seed_invitation(b, inv_otp, 7, "erin", MDM_INVITE_PIN, MDM_INVITE_PENDING, hour);
    seed_invitation(b, inv_spare, 8, "carol", MDM_INVITE_PIN, MDM_INVITE_PENDING, hour);
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_free(b);
    mdm_store_close(s);
    CHECK_EQ_INT(start(NULL), 0);
}

/* Through the admin API when it is there: a user and a PIN invitation. */
static void api_seed(void)
{
    json_t *j = NULL;
    int st = admin_api(srv.admin_port, dir, api_key, "POST", "/api/v1/users", NULL,
                       "{\"name\":\"apiuser\",\"password\":\"api user password\","
                       "\"groups\":[\"api-group\"]}",
                       &j);
    json_decref(j);
    CHECK_EQ_INT(st, 201);
    j = NULL;
    st = admin_api(srv.admin_port, dir, api_key, "POST", "/api/v1/invitations", NULL,
                   "{\"user\":\"apiuser\",\"mode\":\"pin\",\"expires_hours\":1}", &j);
    CHECK(st == 200 || st == 201);
    if (j && (st == 200 || st == 201)) {
        snprintf(api_inv, sizeof(api_inv), "%s", jstr(j, "id"));
        snprintf(api_pin, sizeof(api_pin), "%s", jstr(j, "pin"));
        char want[200];
        snprintf(want, sizeof(want), "/zdm/macos/invite/%s", api_inv);
        CHECK(strstr(jstr(j, "url"), want) != NULL);
        api_ok = api_inv[0] && api_pin[0];
    }
    json_decref(j);
}

/* ---- SCEP ----------------------------------------------------------------------------------- */

static mdm_buf_t ra_cert, ca_der;

static void test_scep_ca(void)
{
    resp_t r;
    CHECK_EQ_INT(get("/zdm/scep?operation=GetCACaps", &r), 200);
    CHECK(strncmp(header(&r, "Content-Type"), "text/plain", 10) == 0);
    CHECK(body_has(&r, "POSTPKIOperation") && body_has(&r, "SHA-256") &&
          body_has(&r, "Renewal"));
    resp_free(&r);

    CHECK_EQ_INT(get("/zdm/scep?operation=GetCACert&message=mdmd", &r), 200);
    CHECK_STR(header(&r, "Content-Type"), MDM_SCEP_CA_RA_CERT_TYPE);
    mdm_buf_init(&ra_cert, 0);
    mdm_buf_init(&ca_der, 0);
    CHECK_EQ_INT(mdm_scep_pick_ra((const uint8_t *)r.body, r.body_len, &ra_cert, &ca_der), 0);
    resp_free(&r);
    /* The RA is issued by the instance CA, and the CA in the answer is the instance's. */
    CHECK_EQ_INT(mdm_cms_cert_verify_chain(mdm_buf_head(&ra_cert), ra_cert.len,
                                           instance_ca(dir), time(NULL)),
                 0);
    uint8_t *ca = NULL;
    size_t ca_len = 0;
    CHECK_EQ_INT(mdm_x509_read_cert_der(instance_ca(dir), &ca, &ca_len), 0);
    CHECK(ca && ca_len == ca_der.len && memcmp(ca, mdm_buf_head(&ca_der), ca_len) == 0);
    free(ca);
    mdm_x509_info_t info;
    CHECK_EQ_INT(mdm_x509_inspect_der(mdm_buf_head(&ra_cert), ra_cert.len, &info), 0);
    CHECK_EQ_INT(info.key_alg, MDM_X509_KEYALG_RSA);
    CHECK(info.has_key_usage && (info.key_usage & MDM_X509_KU_DIGITAL_SIGNATURE) &&
          (info.key_usage & MDM_X509_KU_KEY_ENCIPHERMENT) && !info.is_ca);

    CHECK_EQ_INT(get("/zdm/scep", &r), 400);
    resp_free(&r);
    CHECK_EQ_INT(get("/zdm/scep?operation=GetNextCACert", &r), 400);
    resp_free(&r);
    CHECK_EQ_INT(device_req("POST", "/zdm/scep?operation=PKIOperation",
                            MDM_SCEP_PKI_MESSAGE_TYPE, "junk", 4, &r),
                 400);
    resp_free(&r);
}

/* ---- profile -------------------------------------------------------------------------------- */

static uint8_t *issued_cert, *renewed_cert;
static size_t issued_len, renewed_len;
static char alice_enrollment[33];

/* Reads the download link of a "ready" page into path. */
static bool download_link(const resp_t *r, char *path, size_t size)
{
    const char *a = r->body ? strstr(r->body, "id=\"download\" href=\"") : NULL;
    if (!a)
        return false;
    a += strlen("id=\"download\" href=\"");
    size_t n = strcspn(a, "\"");
    if (n >= size)
        return false;
    snprintf(path, size, "%.*s", (int)n, a);
    return strncmp(path, "/zdm/macos/profile/", 19) == 0;
}

/* Downloads the profile of a ready page; checks the answer and the signature; returns the
 * payload XML parsed (caller frees) and the enrollment id. */
static plist_t fetch_profile(const resp_t *ready, char enrollment_id[33])
{
    char path[300];
    CHECK(download_link(ready, path, sizeof(path)));
    if (!download_link(ready, path, sizeof(path)))
        return NULL;
    snprintf(enrollment_id, 33, "%.32s", path + 19);
    resp_t r;
    /* A HEAD (link previews, download managers) does not spend the link. */
    CHECK_EQ_INT(head_req(path), 0);
    CHECK_EQ_INT(get(path, &r), 200);
    CHECK_STR(header(&r, "Content-Type"), "application/x-apple-aspen-config");
    CHECK_STR(header(&r, "Content-Disposition"), "attachment; filename=\"enroll.mobileconfig\"");
    CHECK_STR(header(&r, "Cache-Control"), "no-store");
    plist_t top = NULL;
    mdm_buf_t xml, signer;
    mdm_buf_init(&xml, 0);
    mdm_buf_init(&signer, 0);
    if (r.status == 200) {
        CHECK_EQ_INT(mdm_cms_verify_attached((const uint8_t *)r.body, r.body_len, &xml, &signer),
                     0);
        /* Signed by the instance's profile-signing certificate, which chains to the CA. */
        char sp[700];
        snprintf(sp, sizeof(sp), "%s/signing/signing.crt", dir);
        uint8_t *sd = NULL;
        size_t sl = 0;
        CHECK_EQ_INT(mdm_x509_read_cert_der(sp, &sd, &sl), 0);
        CHECK(sd && sl == signer.len && memcmp(sd, mdm_buf_head(&signer), sl) == 0);
        free(sd);
        CHECK_EQ_INT(mdm_cms_cert_verify_chain(mdm_buf_head(&signer), signer.len,
                                               instance_ca(dir), time(NULL)),
                     0);
        char err[200];
        CHECK_EQ_INT(mdm_plist_parse_dict(mdm_buf_head(&xml), xml.len, 8, &top, err, sizeof(err)),
                     0);
    }
    resp_free(&r);
    /* The link works once. */
    CHECK_EQ_INT(get(path, &r), 410);
    CHECK(body_has(&r, "no longer valid"));
    resp_free(&r);
    mdm_buf_dispose(&xml);
    mdm_buf_dispose(&signer);
    return top;
}

static const char *str_of(plist_t d, const char *key)
{
    const char *s = NULL;
    return d && mdm_plist_get_string(d, key, &s) == 0 ? s : "(missing)";
}

/* Checks the payloads against the instance; returns the SCEP challenge (static copy). */
static const char *check_profile(plist_t top)
{
    static char challenge[128];
    challenge[0] = 0;
    plist_t content = NULL;
    CHECK_EQ_INT(mdm_plist_get_array(top, "PayloadContent", &content), 0);
    if (!content || plist_array_get_size(content) != 3) {
        CHECK(!"three payloads");
        return challenge;
    }
    plist_t ca = plist_array_get_item(content, 0), scep = plist_array_get_item(content, 1),
            mdm = plist_array_get_item(content, 2);
    CHECK_STR(str_of(top, "PayloadType"), "Configuration");
    CHECK_STR(str_of(ca, "PayloadType"), "com.apple.security.root");
    const uint8_t *data = NULL;
    size_t len = 0;
    CHECK_EQ_INT(mdm_plist_get_data(ca, "PayloadContent", &data, &len), 0);
    CHECK(len == ca_der.len && data && memcmp(data, mdm_buf_head(&ca_der), len) == 0);

    CHECK_STR(str_of(scep, "PayloadType"), "com.apple.security.scep");
    plist_t in = NULL;
    CHECK_EQ_INT(mdm_plist_get_dict(scep, "PayloadContent", &in), 0);
    char url[300];
    snprintf(url, sizeof(url), "%s/scep", base_url);
    CHECK_STR(str_of(in, "URL"), url);
    CHECK_STR(str_of(in, "Name"), "zdm");
    snprintf(challenge, sizeof(challenge), "%s", str_of(in, "Challenge"));
    CHECK(strlen(challenge) >= 32 && strcmp(challenge, "(missing)") != 0);

    CHECK_STR(str_of(mdm, "PayloadType"), "com.apple.mdm");
    CHECK_STR(str_of(mdm, "Topic"), TOPIC);
    snprintf(url, sizeof(url), "%s/mdm/connect", base_url);
    CHECK_STR(str_of(mdm, "ServerURL"), url);
    snprintf(url, sizeof(url), "%s/mdm/checkin", base_url);
    CHECK_STR(str_of(mdm, "CheckInURL"), url);
    CHECK_STR(str_of(mdm, "IdentityCertificateUUID"), str_of(scep, "PayloadUUID"));
    uint64_t rights = 0;
    CHECK_EQ_INT(mdm_plist_get_uint(mdm, "AccessRights", &rights), 0);
    CHECK_EQ_INT(rights, 8191);
    bool sign = true;
    CHECK_EQ_INT(mdm_plist_get_bool(mdm, "SignMessage", &sign), 0);
    CHECK(!sign);
    return challenge;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_no_pushcert(void)
{
    resp_t r;
    CHECK_EQ_INT(get("/zdm/macos/otae", &r), 503);
    CHECK(body_has(&r, "push certificate"));
    CHECK(strncmp(header(&r, "Content-Type"), "text/html", 9) == 0);
    resp_free(&r);
    CHECK_EQ_INT(otae_post("alice", ALICE_PW, NULL, &r), 503);
    CHECK(body_has(&r, "push certificate"));
    resp_free(&r);
}

static void upload_pushcert(void)
{
    char cp[700], kp[700];
    snprintf(cp, sizeof(cp), "%s/push.crt", certs);
    snprintf(kp, sizeof(kp), "%s/push.key", certs);
    uint8_t *c = NULL, *k = NULL;
    size_t cl = 0, kl = 0;
    CHECK_EQ_INT(mdm_file_read(cp, 1 << 20, &c, &cl), 0);
    CHECK_EQ_INT(mdm_file_read(kp, 1 << 20, &k, &kl), 0);
    json_t *b = json_pack("{s:s%, s:s%}", "certificate_pem", c ? (char *)c : "", c ? cl : 0,
                          "key_pem", k ? (char *)k : "", k ? kl : 0);
    char *text = json_dumps(b, JSON_COMPACT);
    json_t *j = NULL;
    CHECK_EQ_INT(admin_api(srv.admin_port, dir, api_key, "PUT", "/api/v1/push-certificate", NULL,
                           text, &j),
                 200);
    json_decref(j);
    free(text);
    json_decref(b);
    free(c);
    free(k);
}

static void test_web_enrollment(void)
{
    resp_t r;
    CHECK_EQ_INT(get("/zdm/macos/otae", &r), 200);
    CHECK(strncmp(header(&r, "Content-Type"), "text/html", 9) == 0);
    CHECK_STR(header(&r, "Cache-Control"), "no-store");
    CHECK(strstr(header(&r, "Content-Security-Policy"), "default-src 'none'") != NULL);
    CHECK(body_has(&r, "name=\"user\"") && body_has(&r, "name=\"password\""));
    CHECK(!strstr(r.body ? r.body : "", "name=\"pin\""));
    CHECK(!strstr(r.body ? r.body : "", "<script"));
    resp_free(&r);

    /* Not a form: 400 page. */
    CHECK_EQ_INT(device_req("POST", "/zdm/macos/otae", "application/json", "{}", 2, &r), 400);
    resp_free(&r);

    CHECK_EQ_INT(otae_post("alice", ALICE_PW, NULL, &r), 200);
    CHECK(body_has(&r, "System Settings") && body_has(&r, "enroll.mobileconfig"));
    plist_t top = fetch_profile(&r, alice_enrollment);
    resp_free(&r);
    CHECK(top != NULL);
    if (!top)
        return;
    char challenge[128];
    snprintf(challenge, sizeof(challenge), "%s", check_profile(top));
    plist_free(top);

    /* A bad token or id: the same 410 page. */
    char path[200];
    snprintf(path, sizeof(path), "/zdm/macos/profile/%s?t=%064d", alice_enrollment, 0);
    CHECK_EQ_INT(get(path, &r), 410);
    resp_free(&r);
    CHECK_EQ_INT(get("/zdm/macos/profile/nothing?t=1", &r), 410);
    resp_free(&r);

    /* The simulated Mac gets its identity with the challenge (PKCSReq over SCEP). */
    sim_env_t env;
    CHECK_EQ_INT(sim_env_init(&env, dir, work, srv.device_port), 0);
    snprintf(env.topic, sizeof(env.topic), "%s", TOPIC);
    sim_mac_t m;
    CHECK_EQ_INT(sim_mac_init(&m, &env, NULL, 1), 0);
    char crt[800];
    snprintf(crt, sizeof(crt), "%s/%s.crt", work, m.name);
    sim_scep_t sc = {.type = MDM_SCEP_PKCS_REQ, .challenge = challenge};
    CHECK_EQ_INT(sim_scep(&m, &sc), 0);
    CHECK_EQ_INT(sc.status, MDM_SCEP_SUCCESS);
    CHECK_EQ_INT(mdm_x509_read_cert_der(crt, &issued_cert, &issued_len), 0);
    if (issued_cert) {
        CHECK_EQ_INT(mdm_cms_cert_verify_chain(issued_cert, issued_len, instance_ca(dir),
                                               time(NULL)),
                     0);
        mdm_x509_info_t info;
        CHECK_EQ_INT(mdm_x509_inspect_der(issued_cert, issued_len, &info), 0);
        char cn[100];
        snprintf(cn, sizeof(cn), "CN=%s", m.name);
        CHECK(strstr(info.subject, cn) != NULL);
        CHECK(strstr(info.subject, "O=mdmd") != NULL);
        CHECK(info.has_eku && info.eku == MDM_X509_EKU_CLIENT_AUTH && !info.is_ca);
        CHECK(info.key_usage == (MDM_X509_KU_DIGITAL_SIGNATURE | MDM_X509_KU_KEY_ENCIPHERMENT));
        CHECK(info.key_alg == MDM_X509_KEYALG_RSA);
        int64_t days = (info.not_after - info.not_before) / 86400;
        CHECK(days >= 364 && days <= 366);
    }
    /* The challenge is spent: FAILURE, not a certificate; as for an unknown one (sent by GET)
     * and for none. The Mac keeps its identity. */
    sc = (sim_scep_t){.type = MDM_SCEP_PKCS_REQ, .challenge = challenge};
    CHECK_EQ_INT(sim_scep(&m, &sc), 0);
    CHECK_EQ_INT(sc.status, MDM_SCEP_FAILURE);
    CHECK_EQ_INT(sc.fail_info, MDM_SCEP_BAD_REQUEST);
    sc = (sim_scep_t){.type = MDM_SCEP_PKCS_REQ,
                      .challenge = "0123456789abcdef0123456789abcdef",
                      .use_get = true};
    CHECK_EQ_INT(sim_scep(&m, &sc), 0);
    CHECK_EQ_INT(sc.status, MDM_SCEP_FAILURE);
    sc = (sim_scep_t){.type = MDM_SCEP_PKCS_REQ};
    CHECK_EQ_INT(sim_scep(&m, &sc), 0);
    CHECK_EQ_INT(sc.status, MDM_SCEP_FAILURE);
    uint8_t *now = NULL;
    size_t now_len = 0;
    CHECK_EQ_INT(mdm_x509_read_cert_der(crt, &now, &now_len), 0);
    CHECK(now_len == issued_len && issued_cert && memcmp(now, issued_cert, now_len) == 0);
    free(now);

    /* Renewal: signed by the current identity -> a certificate for a new key; signed by a
     * self-signed certificate -> FAILURE. */
    sc = (sim_scep_t){.type = MDM_SCEP_RENEWAL_REQ};
    CHECK_EQ_INT(sim_scep(&m, &sc), 0);
    CHECK_EQ_INT(sc.status, MDM_SCEP_SUCCESS);
    CHECK_EQ_INT(mdm_x509_read_cert_der(crt, &renewed_cert, &renewed_len), 0);
    CHECK(renewed_cert && mdm_cms_cert_verify_chain(renewed_cert, renewed_len, instance_ca(dir),
                                                    time(NULL)) == 0);
    sim_mac_t selfsigned;
    CHECK_EQ_INT(sim_mac_init(&selfsigned, &env, NULL, 2), 0);
    char skey[800], scrt[800];
    snprintf(skey, sizeof(skey), "%s/%s.key", work, selfsigned.name);
    snprintf(scrt, sizeof(scrt), "%s/%s.crt", work, selfsigned.name);
    mdm_x509_spec_t self = {.common_name = selfsigned.name, .validity_days = 1};
    CHECK_EQ_INT(mdm_x509_key_generate(skey, MDM_X509_KEY_RSA_2048), 0);
    CHECK_EQ_INT(mdm_x509_make_self_signed(skey, scrt, &self), 0);
    sc = (sim_scep_t){.type = MDM_SCEP_RENEWAL_REQ};
    CHECK_EQ_INT(sim_scep(&selfsigned, &sc), 0);
    CHECK_EQ_INT(sc.status, MDM_SCEP_FAILURE);
    sim_mac_dispose(&selfsigned);

    /* Authenticate and TokenUpdate with the SCEP identity: enrolled, and the enrollment is
     * completed by this Mac. */
    CHECK_EQ_INT(sim_authenticate(&m, NULL), 200);
    CHECK_EQ_INT(sim_token_update(&m, NULL, 0, NULL), 200);
    char path2[200];
    snprintf(path2, sizeof(path2), "/api/v1/devices/%s", m.udid);
    json_t *j = NULL;
    CHECK_EQ_INT(admin_api(srv.admin_port, dir, api_key, "GET", path2, NULL, NULL, &j), 200);
    CHECK_STR(jstr(j, "enrollment_id"), alice_enrollment);
    CHECK(json_is_true(json_object_get(j, "enrolled")));
    json_decref(j);
    j = NULL;
    snprintf(path2, sizeof(path2), "/api/v1/enrollments/%s", alice_enrollment);
    CHECK_EQ_INT(admin_api(srv.admin_port, dir, api_key, "GET", path2, NULL, NULL, &j), 200);
    CHECK_STR(jstr(j, "udid"), m.udid);
    CHECK_STR(jstr(j, "user"), "alice");
    json_decref(j);
    static const char *const alice_groups[] = {"Mac Fleet", "staff"};
    check_enrollment_groups(alice_enrollment, alice_groups, 2);

    /* The certificate of that enrollment cannot enroll another Mac (a copy of its key and
     * certificate under another UDID). */
    sim_mac_t thief;
    CHECK_EQ_INT(sim_mac_init(&thief, &env, NULL, 3), 0);
    char tkey[800], tcrt[800], mkey[800], cmd[4000];
    snprintf(tkey, sizeof(tkey), "%s/%s.key", work, thief.name);
    snprintf(tcrt, sizeof(tcrt), "%s/%s.crt", work, thief.name);
    snprintf(mkey, sizeof(mkey), "%s/%s.key", work, m.name);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && cp '%s' '%s'", mkey, tkey, crt, tcrt);
    CHECK_EQ_INT(system(cmd), 0);
    CHECK_EQ_INT(sim_authenticate(&thief, NULL), 403);
    sim_mac_dispose(&thief);

    /* A Mac enrolled through mdmd re-enrolls only with a new enrollment's certificate: one
     * issued outside enrollment (straight from the CA) is refused for it. */
    CHECK_EQ_INT(sim_mac_new_identity(&m), 0);
    CHECK_EQ_INT(sim_authenticate(&m, NULL), 403);
    sim_mac_dispose(&m);
}

/* Every failed sign-on answers the same page. */
static void test_failures(void)
{
    resp_t ref, r;
    CHECK_EQ_INT(otae_post("alice", "wrong password", NULL, &ref), 403);
    CHECK(body_has(&ref, "Sign-on failed"));
    CHECK(body_has(&ref, "name=\"user\"")); /* the form again */
    const char *cases[][2] = {
        {"nobody-here", "some password"}, /* unknown user */
        {"bob", "bob password"},          /* disabled, right password */
        {"alice", ""},                    /* empty password */
        {"", ALICE_PW},                   /* empty user */
        {"ALICE", ALICE_PW},              /* local names are case-sensitive */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK_EQ_INT(otae_post(cases[i][0], cases[i][1], NULL, &r), 403);
        bool same = r.body_len == ref.body_len && r.body && ref.body &&
                    memcmp(r.body, ref.body, r.body_len) == 0;
        CHECK(same);
        if (!same)
            fprintf(stderr, "case %zu answered a different page\n", i);
        resp_free(&r);
    }
    /* A form field that is not valid percent-encoding: 400. */
    CHECK_EQ_INT(device_req("POST", "/zdm/macos/otae", "application/x-www-form-urlencoded",
                            "user=a%zz&password=b", 20, &r),
                 400);
    resp_free(&r);
    resp_free(&ref);
}

static void test_invitations(void)
{
    resp_t r;
    char path[200];
    struct {
        const char *id;
        bool password, pin;
        const char *user;
    } forms[] = {
        {inv_pw, true, false, "alice"},
        {inv_pin, false, true, "carol"},
        {inv_both, true, true, "dave"},
    };
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "/zdm/macos/invite/%s", forms[i].id);
        CHECK_EQ_INT(get(path, &r), 200);
        char want[100];
        snprintf(want, sizeof(want), "value=\"%s\" readonly", forms[i].user);
        CHECK(body_has(&r, want));
        CHECK((strstr(r.body ? r.body : "", "name=\"password\"") != NULL) == forms[i].password);
        CHECK((strstr(r.body ? r.body : "", "name=\"pin\"") != NULL) == forms[i].pin);
        resp_free(&r);
    }
    /* Unusable invitations: one 410 page. */
    const char *bad[] = {inv_expired, inv_revoked, inv_used, "0123456789abcdef0123456789abcdef",
                         "not-an-id"};
    for (size_t i = 0; i < 5; i++) {
        snprintf(path, sizeof(path), "/zdm/macos/invite/%s", bad[i]);
        CHECK_EQ_INT(get(path, &r), 410);
        CHECK(body_has(&r, "not valid"));
        resp_free(&r);
        CHECK_EQ_INT(post_form(path, NULL, NULL, PIN_OK, &r), 410);
        resp_free(&r);
    }

    /* PIN mode: a wrong PIN, then the right one; then the invitation is spent. */
    snprintf(path, sizeof(path), "/zdm/macos/invite/%s", inv_pin);
    CHECK_EQ_INT(post_form(path, NULL, NULL, "000000", &r), 403);
    CHECK(body_has(&r, "Sign-on failed") && body_has(&r, "value=\"carol\" readonly"));
    resp_free(&r);
    CHECK_EQ_INT(post_form(path, "someone-else", NULL, PIN_OK, &r), 200); /* user is ignored */
    char eid[33];
    plist_t top = fetch_profile(&r, eid);
    CHECK(top != NULL);
    if (top) {
        (void)check_profile(top);
        plist_free(top);
    }
    resp_free(&r);
    CHECK_EQ_INT(get(path, &r), 410);
    resp_free(&r);
    CHECK_EQ_INT(post_form(path, NULL, NULL, PIN_OK, &r), 410);
    resp_free(&r);

    /* Password mode: the local user's password. */
    snprintf(path, sizeof(path), "/zdm/macos/invite/%s", inv_pw);
    CHECK_EQ_INT(post_form(path, NULL, "nope", NULL, &r), 403);
    resp_free(&r);
    CHECK_EQ_INT(post_form(path, NULL, ALICE_PW, NULL, &r), 200);
    CHECK(body_has(&r, "id=\"download\""));
    resp_free(&r);

    /* Both: the right password with a wrong PIN fails, both right succeeds. */
    snprintf(path, sizeof(path), "/zdm/macos/invite/%s", inv_both);
    CHECK_EQ_INT(post_form(path, NULL, "dave password", "111111", &r), 403);
    resp_free(&r);
    CHECK_EQ_INT(post_form(path, NULL, "wrong", PIN_OK, &r), 403);
    resp_free(&r);
    CHECK_EQ_INT(post_form(path, NULL, "dave password", PIN_OK, &r), 200);
    resp_free(&r);

    /* An invitation made through the admin API. */
    if (api_ok) {
        snprintf(path, sizeof(path), "/zdm/macos/invite/%s", api_inv);
        CHECK_EQ_INT(get(path, &r), 200);
        resp_free(&r);
        CHECK_EQ_INT(post_form(path, NULL, NULL, api_pin, &r), 200);
        CHECK(body_has(&r, "id=\"download\""));
        /* PIN alone: the local user's groups all the same. */
        char dl[300];
        CHECK(download_link(&r, dl, sizeof(dl)));
        static const char *const api_groups[] = {"api-group"};
        check_enrollment_groups(dl + 19, api_groups, 1);
        resp_free(&r);
        CHECK_EQ_INT(otae_post("apiuser", "api user password", NULL, &r), 200);
        resp_free(&r);
    }
}

static void test_closed(void)
{
    const char *off[] = {"enroll.otae_enabled=false", NULL};
    const char *inv_only[] = {"enroll.auth=invitation_otp", NULL};
    const char *const *modes[] = {off, inv_only};
    for (int i = 0; i < 2; i++) {
        if (!restart(modes[i]))
            return;
        resp_t r;
        CHECK_EQ_INT(get("/zdm/macos/otae", &r), 403);
        CHECK(body_has(&r, "by invitation only"));
        resp_free(&r);
        CHECK_EQ_INT(otae_post("alice", ALICE_PW, NULL, &r), 403);
        CHECK(body_has(&r, "by invitation only"));
        resp_free(&r);
        /* Invitations still work. */
        char path[200];
        snprintf(path, sizeof(path), "/zdm/macos/invite/%s", inv_spare);
        CHECK_EQ_INT(get(path, &r), 200);
        resp_free(&r);
    }
}

static void test_domain_otp(void)
{
    const char *otp[] = {"enroll.auth=domain_otp", NULL};
    if (!restart(otp))
        return;
    resp_t r;
    CHECK_EQ_INT(get("/zdm/macos/otae", &r), 200);
    CHECK(body_has(&r, "name=\"pin\""));
    resp_free(&r);
    CHECK_EQ_INT(otae_post("erin", "erin password", "999999", &r), 403);
    resp_free(&r);
    CHECK_EQ_INT(otae_post("erin", "erin password", NULL, &r), 403);
    resp_free(&r);
    CHECK_EQ_INT(otae_post("alice", ALICE_PW, PIN_OK, &r), 403); /* alice has none pending */
    resp_free(&r);
    CHECK_EQ_INT(otae_post("erin", "erin password", PIN_OK, &r), 200);
    char eid[33];
    plist_t top = fetch_profile(&r, eid);
    if (top)
        plist_free(top);
    resp_free(&r);
    /* The PIN was one-time. */
    CHECK_EQ_INT(otae_post("erin", "erin password", PIN_OK, &r), 403);
    resp_free(&r);
}

/* ---- LDAP: a real slapd on plain ldap:// (TLS variants are covered by tests/unit/auth_test) ---- */

#define SLAPD "/usr/sbin/slapd"
#define SLAPADD "/usr/sbin/slapadd"
#define SCHEMA_DIR "/etc/ldap/schema"

#define LONG_GROUP "a-directory-group-with-a-name-longer-than-sixty-three-bytes-is-left-out"

static const char ldif[] =
    "dn: dc=example,dc=org\n"
    "objectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n"
    "dn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n\n"
    "dn: cn=reader,dc=example,dc=org\nobjectClass: organizationalRole\n"
    "objectClass: simpleSecurityObject\ncn: reader\nuserPassword: reader-pw\n\n"
    "dn: uid=lara,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: lara\n"
    "cn: Lara Lane\nsn: Lane\nuserPassword: lara-pw\n\n"
    "dn: uid=alice,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: alice\n"
    "cn: Directory Alice\nsn: Alice\nuserPassword: directory-alice-pw\n\n"
    "dn: ou=groups,dc=example,dc=org\nobjectClass: organizationalUnit\nou: groups\n\n"
    "dn: cn=Mac Fleet,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: Mac Fleet\n"
    "member: uid=lara,ou=people,dc=example,dc=org\n\n"
    /* a name longer than an enrollment keeps (63 bytes): left out */
    "dn: cn=" LONG_GROUP ",ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\n"
    "cn: " LONG_GROUP "\nmember: uid=lara,ou=people,dc=example,dc=org\n";

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static bool port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Starts slapd with the directory above on a free port; it dies with this process. */
static pid_t slapd_start(const char sdir[600], int *port)
{
    char conf_path[700], data[700], db[700], conf[4096];
    snprintf(conf_path, sizeof(conf_path), "%s/slapd.conf", sdir);
    snprintf(data, sizeof(data), "%s/data.ldif", sdir);
    snprintf(db, sizeof(db), "%s/db", sdir);
    snprintf(conf, sizeof(conf),
             "include " SCHEMA_DIR "/core.schema\ninclude " SCHEMA_DIR "/cosine.schema\n"
             "include " SCHEMA_DIR "/inetorgperson.schema\n"
             "pidfile %s/slapd.pid\nargsfile %s/slapd.args\nmodulepath /usr/lib/ldap\n"
             "moduleload back_mdb\n"
             "access to attrs=userPassword by self write by anonymous auth by * none\n"
             "access to * by * read\ndatabase mdb\nmaxsize 10485760\n"
             "suffix \"dc=example,dc=org\"\nrootdn \"cn=admin,dc=example,dc=org\"\n"
             "rootpw admin-secret\ndirectory %s\n",
             sdir, sdir, db);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && %s -f '%s' -l '%s' > '%s/slapadd.log' 2>&1", db,
             SLAPADD, conf_path, data, sdir);
    if ((mkdir(sdir, 0700) != 0 && errno != EEXIST) ||
        mdm_file_write_atomic(conf_path, conf, strlen(conf), 0600) != 0 ||
        mdm_file_write_atomic(data, ldif, strlen(ldif), 0600) != 0 || system(cmd) != 0) {
        fprintf(stderr, "slapadd failed (see %s/slapadd.log)\n", sdir);
        return -1;
    }
    for (int attempt = 0; attempt < 3; attempt++) {
        *port = free_port();
        char url[64];
        snprintf(url, sizeof(url), "ldap://127.0.0.1:%d/", *port);
        pid_t parent = getpid(), pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(126);
            execl(SLAPD, SLAPD, "-f", conf_path, "-h", url, "-d", "0", (char *)NULL);
            _exit(127);
        }
        for (int waited = 0; pid > 0 && waited < 5000; waited += 20) { /* bounded: 5 s */
            if (port_accepts(*port))
                return pid;
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                pid = -1;
                break;
            }
            usleep(20000);
        }
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
    }
    return -1;
}

static void test_ldap(void)
{
    if (access(SLAPD, X_OK) != 0 || access(SLAPADD, X_OK) != 0) {
        fprintf(stderr, "note: slapd is not installed: the LDAP case is skipped here (auth_test "
                        "fails without it)\n");
        return;
    }
    char sdir[600], pwfile[700];
    snprintf(sdir, sizeof(sdir), "%s-slapd", dir);
    snprintf(pwfile, sizeof(pwfile), "%s/bind.pw", sdir);
    int port = 0;
    pid_t slapd = slapd_start(sdir, &port);
    CHECK(slapd > 0);
    if (slapd <= 0)
        return;
    char url[80], pwset[800];
    snprintf(url, sizeof(url), "ldap.url=ldap://127.0.0.1:%d", port);
    snprintf(pwset, sizeof(pwset), "ldap.bind_password_file=%s", pwfile);
    const char *sets[] = {url,
                          "ldap.allow_plaintext=true",
                          "ldap.base_dn=dc=example,dc=org",
                          "ldap.bind_dn=cn=reader,dc=example,dc=org",
                          pwset,
                          "ldap.timeout_ms=3000",
                          "ldap.group_filter=(&(objectClass=groupOfNames)(member=%s))",
                          NULL};
    /* A password file others can read stops the server at start. */
    CHECK_EQ_INT(mdm_file_write_atomic(pwfile, "reader-pw\n", 10, 0644), 0);
    stop();
    CHECK(start(sets) != 0);
    running = false;
    CHECK_EQ_INT(chmod(pwfile, 0600), 0);
    if (start(sets) != 0) {
        CHECK(!"mdmd starts with a private bind password file");
        kill(slapd, SIGKILL);
        waitpid(slapd, NULL, 0);
        return;
    }
    resp_t ref, r;
    CHECK_EQ_INT(otae_post("alice", "wrong password", NULL, &ref), 403);
    CHECK_EQ_INT(otae_post("lara", "lara-pw", NULL, &r), 200); /* a directory user */
    CHECK(body_has(&r, "id=\"download\""));
    /* The enrollment keeps the directory's groups that fit. */
    char dl[300];
    CHECK(download_link(&r, dl, sizeof(dl)));
    static const char *const lara_groups[] = {"Mac Fleet"};
    check_enrollment_groups(dl + 19, lara_groups, 1);
    resp_free(&r);
    CHECK_EQ_INT(otae_post("lara", "not-laras", NULL, &r), 403);
    CHECK(r.body_len == ref.body_len && memcmp(r.body, ref.body, r.body_len) == 0);
    resp_free(&r);
    /* A local user of the same name wins over the directory entry. */
    CHECK_EQ_INT(otae_post("alice", "directory-alice-pw", NULL, &r), 403);
    resp_free(&r);
    CHECK_EQ_INT(otae_post("alice", ALICE_PW, NULL, &r), 200);
    resp_free(&r);
    /* The directory is down: the same failure page. */
    kill(slapd, SIGKILL);
    waitpid(slapd, NULL, 0);
    CHECK_EQ_INT(otae_post("lara", "lara-pw", NULL, &r), 403);
    CHECK(r.body_len == ref.body_len && memcmp(r.body, ref.body, r.body_len) == 0);
    resp_free(&r);
    resp_free(&ref);
}

/* Deletes the failure counter of the test's source address (so the next phase starts clean). */
static void forget_source(void)
{
    stop();
    mdm_store_t *s = open_db();
    CHECK(s != NULL);
    if (!s)
        return;
    mdm_batch_t *b = mdm_batch_new();
    mdm_store_delete_signon_failures(b, MDM_SIGNON_ADDRESS, "127.0.0.1");
    CHECK_EQ_INT(mdm_store_commit(s, b), 0);
    mdm_batch_free(b);
    mdm_store_close(s);
}

static void test_lockout(void)
{
    const char *strict[] = {"enroll.max_failures=3", NULL};
    forget_source();
    if (start(strict) != 0)
        return;
    resp_t ref, r;
    CHECK_EQ_INT(otae_post("locky", "bad 1", NULL, &ref), 403);
    CHECK_EQ_INT(otae_post("locky", "bad 2", NULL, &r), 403);
    resp_free(&r);
    CHECK_EQ_INT(otae_post("Locky", "bad 3", NULL, &r), 403); /* the same counter */
    resp_free(&r);
    /* Locked: the right password gets the same page. */
    CHECK_EQ_INT(otae_post("locky", "locky password", NULL, &r), 403);
    CHECK(r.body_len == ref.body_len && memcmp(r.body, ref.body, r.body_len) == 0);
    resp_free(&r);
    resp_free(&ref);

    /* Per user: with the source's counter gone, locky is still locked, alice is not. */
    forget_source();
    if (start(strict) != 0)
        return;
    CHECK_EQ_INT(otae_post("locky", "locky password", NULL, &r), 403);
    resp_free(&r);
    CHECK_EQ_INT(otae_post("alice", ALICE_PW, NULL, &r), 200);
    resp_free(&r);

    /* Per source: three different unknown users lock the address for everyone. */
    forget_source();
    if (start(strict) != 0)
        return;
    CHECK_EQ_INT(otae_post("ghost1", "x", NULL, &r), 403);
    resp_free(&r);
    CHECK_EQ_INT(otae_post("ghost2", "x", NULL, &r), 403);
    resp_free(&r);
    CHECK_EQ_INT(otae_post("ghost3", "x", NULL, &r), 403);
    resp_free(&r);
    CHECK_EQ_INT(otae_post("alice", ALICE_PW, NULL, &r), 403);
    resp_free(&r);
    char path[200];
    snprintf(path, sizeof(path), "/zdm/macos/invite/%s", inv_spare); /* invitations too */
    CHECK_EQ_INT(post_form(path, NULL, NULL, PIN_OK, &r), 403);
    resp_free(&r);
}

/* What the store holds afterwards. */
struct audit_seen {
    int signon_ok, signon_refused, scep_issue, scep_refuse, scep_renew, invitation_ok;
    bool refused_has_source;
};

static int on_audit(void *arg, const mdm_audit_event_t *ev)
{
    struct audit_seen *a = arg;
    if (strcmp(ev->action, "enroll.signon") == 0 && ev->status == 200)
        a->signon_ok++;
    if (strcmp(ev->action, "enroll.signon") == 0 && ev->status == 403) {
        a->signon_refused++;
        if (strncmp(ev->source, "127.0.0.1:", 10) == 0)
            a->refused_has_source = true;
    }
    a->scep_issue += strcmp(ev->action, "scep.issue") == 0;
    a->scep_refuse += strcmp(ev->action, "scep.refuse") == 0;
    a->scep_renew += strcmp(ev->action, "scep.renew") == 0;
    a->invitation_ok += strcmp(ev->action, "enroll.invitation") == 0 && ev->status == 200;
    return 0;
}

static void test_records(void)
{
    stop();
    mdm_store_t *s = open_db();
    CHECK(s != NULL);
    if (!s)
        return;
    mdm_enrollment_t e;
    CHECK_EQ_INT(mdm_store_get_enrollment(s, alice_enrollment, &e), 0);
    CHECK_STR(e.user_name, "alice");
    CHECK_EQ_INT(e.method, MDM_ENROLL_WEB);
    char hex[65], got[33];
    if (issued_cert) {
        CHECK_EQ_INT(mdm_sha256_hex(issued_cert, issued_len, hex), 0);
        CHECK_EQ_INT(mdm_store_get_enrollment_cert(s, hex, got), 0);
        CHECK_STR(got, alice_enrollment);
    }
    if (renewed_cert) {
        CHECK_EQ_INT(mdm_sha256_hex(renewed_cert, renewed_len, hex), 0);
        CHECK_STR(e.cert_sha256, hex); /* the newest identity */
        CHECK_EQ_INT(mdm_store_get_enrollment_cert(s, hex, got), 0);
        CHECK_STR(got, alice_enrollment);
    }
    mdm_invitation_t inv;
    CHECK_EQ_INT(mdm_store_get_invitation(s, inv_pin, &inv), 0);
    CHECK_EQ_INT(inv.status, MDM_INVITE_USED);
    CHECK(inv.used_ms > 0 && mdm_enroll_id_valid(inv.enrollment_id));
    CHECK_EQ_INT(mdm_store_get_enrollment(s, inv.enrollment_id, &e), 0);
    CHECK_EQ_INT(e.method, MDM_ENROLL_INVITATION);
    CHECK_STR(e.invitation_id, inv_pin);
    CHECK_STR(e.user_name, "carol");
    CHECK_EQ_INT(e.n_groups, 0); /* no local user carol, and a PIN asks no directory */
    CHECK_EQ_INT(mdm_store_get_invitation(s, inv_otp, &inv), 0);
    CHECK_EQ_INT(inv.status, MDM_INVITE_USED);
    CHECK_EQ_INT(mdm_store_get_invitation(s, inv_spare, &inv), 0);
    CHECK_EQ_INT(inv.status, MDM_INVITE_PENDING);
    mdm_signon_failures_t f;
    CHECK_EQ_INT(mdm_store_get_signon_failures(s, MDM_SIGNON_USER, "locky", &f), 0);
    CHECK(f.locked_until_ms > mdm_wall_ms());
    CHECK_EQ_INT(mdm_store_get_signon_failures(s, MDM_SIGNON_ADDRESS, "127.0.0.1", &f), 0);
    CHECK(f.locked_until_ms > mdm_wall_ms());
    struct audit_seen a = {0};
    CHECK_EQ_INT(mdm_store_list_audit(s, 0, NULL, 0, on_audit, &a), 0);
    CHECK(a.signon_ok >= 3 && a.signon_refused >= 8 && a.refused_has_source);
    CHECK(a.scep_issue == 1 && a.scep_refuse >= 4 && a.scep_renew == 1);
    CHECK(a.invitation_ok >= 3);
    mdm_store_close(s);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("enroll"));
    snprintf(certs, sizeof(certs), "%s-certs", dir);
    snprintf(work, sizeof(work), "%s-macs", dir);
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
    /* init makes the SCEP RA; serve makes it again for an instance that has none (made before
     * it existed). */
    char ra[700], ra_key[700];
    snprintf(ra, sizeof(ra), "%s/scep/ra.crt", dir);
    snprintf(ra_key, sizeof(ra_key), "%s/scep/ra.key", dir);
    CHECK(access(ra, R_OK) == 0 && access(ra_key, R_OK) == 0);
    CHECK(unlink(ra) == 0 && unlink(ra_key) == 0);
    if (start(NULL) != 0)
        return 99;
    struct stat st;
    CHECK(stat(ra, &st) == 0 && stat(ra_key, &st) == 0 && (st.st_mode & 077) == 0);

    test_scep_ca();
    test_no_pushcert();
    upload_pushcert();
    seed_all();
    if (running) {
        api_seed();
        test_web_enrollment();
        test_failures();
        test_invitations();
        test_closed();
        test_domain_otp();
        test_ldap();
        test_lockout();
    }
    test_records();
    stop();
    free(issued_cert);
    free(renewed_cert);
    mdm_buf_dispose(&ra_cert);
    mdm_buf_dispose(&ca_der);
    return check_finish("integ-enroll");
}
