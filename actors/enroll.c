/*
 * The enrollment service: SCEP, the web enrollment link, invitation pages and the one-time
 * profile download. See enroll.h and docs/enrollment.md.
 *
 * Design: a route handler runs on its shard and does only what is cheap and needs no storage:
 * GetCACaps, GetCACert (answered from memory), the closed-OTAE page, and the profile download
 * (an in-memory table). Everything else becomes a job on the enrollment worker pool: the job
 * owns copies of what it needs from the request (body, peer address, path id), so a worker
 * never touches the connection's memory; it reads and commits the store synchronously, builds
 * the whole answer and posts it back to the request's shard, which sends it.
 *
 * Invariants:
 * - One-time secrets are checked and spent atomically: reading a SCEP challenge, an invitation
 *   or a sign-on failure counter, deciding, and committing the change happen under E.lock, so
 *   two workers can never both spend the same challenge or invitation. Slow work (argon2id,
 *   LDAP, profile signing) stays outside the lock; issuing a certificate (one EC signature)
 *   happens inside it.
 * - Nothing is answered before the state behind it is durable: the challenge is marked used,
 *   the enrollment records its certificate and the index "ec/<sha256>" is written in the same
 *   commit as the audit event, before the CertRep goes out.
 * - Device routes never answer 401 (a 401 makes a Mac drop its MDM profile); refusals are 400,
 *   403, 410 or 503. Every failed sign-on answers the same page for its form (no user
 *   enumeration: an unknown user costs a dummy argon2id verification) and counts toward the
 *   lockout of the user name (lower-cased) and of the source address.
 * - Only the SHA-256 of a challenge is stored; the profile that carries it lives in memory for
 *   at most DOWNLOAD_TTL_MS, until its one download, and is wiped when dropped.
 *
 * Threads: handlers on shard threads; jobs on the pool; the download table and E.lock are the
 * only shared mutable state (both mutexes, held briefly). E's other fields are written by
 * mdm_enroll_start() before the shards start and only read afterwards.
 */
#include "actors/enroll.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "actors/enroll_profile.h"
#include "actors/instance.h"
#include "actors/pushcert.h"
#include "core/cms.h"
#include "core/crypto.h"
#include "core/file.h"
#include "core/log.h"
#include "core/scep.h"
#include "core/server.h"
#include "core/tls.h"
#include "core/x509.h"
#include "storage/audit.h"
#include "storage/enroll.h"

#define FORM_BODY_MAX (8 * 1024)         /* a sign-on form: three short fields */
#define GET_BODY_MAX 1024                /* GET routes take no body worth keeping */
#define CHALLENGE_BYTES 24               /* 192 bits; hex fits a CSR challengePassword (<= 63) */
#define TOKEN_BYTES 32                   /* download token: 64 hex digits in the link */
#define DOWNLOADS_MAX 1024               /* profiles waiting for their download */
#define DOWNLOAD_TTL_MS (10 * 60 * 1000) /* a download link works this long */
#define OTP_CANDIDATES_MAX 4             /* domain_otp: pending invitations a PIN is tried on */
#define DEVICE_CN_USER_MAX 40            /* bytes of the user name in a device certificate CN */
#define FIELD_USER_MAX 256               /* form fields as typed (decoded), including the NUL */
#define FIELD_PIN_MAX 64

/* One profile waiting for its download. */
struct download {
    char id[MDM_ENROLL_ID_LEN + 1]; /* enrollment id; "" = free slot */
    uint8_t token_hash[MDM_SHA256_LEN];
    uint64_t expires_ms;
    uint8_t *der; /* signed profile (holds the challenge): wiped when freed */
    size_t len;
};

static struct {
    mdm_workers_t *pool;
    char base_url[512];
    char instance[64];
    const mdm_config_t *cfg;
    mdm_store_t *store;
    bool ready; /* CA, RA and keys loaded: SCEP and profiles can work */
    struct mdm_argon2_params argon2;
    char ca_crt[PATH_MAX], signing_key[PATH_MAX], signing_crt[PATH_MAX];
    uint8_t *ca_der, *ca_key_der, *ra_der, *ra_key_der;
    size_t ca_len, ca_key_len, ra_len, ra_key_len;
    mdm_buf_t ca_ra_certs; /* the GetCACert answer */
    mdm_cms_trust_t *trust; /* the CA, for RenewalReq signers */
    char id_prefix[96];     /* PayloadIdentifier prefix, "mdmd.<instance>" */
    bool have_ldap;
    struct mdm_ldap_options ldap;
    char *ldap_password; /* from bind_password_file; wiped at stop */
    pthread_mutex_t lock; /* read-check-commit of challenges, invitations, counters */
    pthread_mutex_t dl_lock;
    struct download *dl; /* DOWNLOADS_MAX slots */
} E = {
    .argon2 = {3, 65536, 1},
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .dl_lock = PTHREAD_MUTEX_INITIALIZER,
};

int mdm_enroll_run(mdm_worker_fn fn, void *arg)
{
    if (!E.pool)
        return -ESHUTDOWN;
    return mdm_workers_run(E.pool, fn, arg);
}

const char *mdm_enroll_base_url(void) { return E.base_url; }

const char *mdm_enroll_profile_prefix(void) { return E.id_prefix; }

/* Stable per instance, so a new profile replaces the old one on the Mac. */
void mdm_enroll_identifier_prefix(const char *instance, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "mdmd.");
    for (const char *p = instance; *p && n < (int)outlen - 1; p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
        out[n++] = ok ? ch : '-';
    }
    out[n] = 0;
}

void mdm_enroll_set_base_url(const char *host, int port, const char *instance)
{
    snprintf(E.base_url, sizeof(E.base_url), "https://%s:%d/%s", host, port, instance);
}

const struct mdm_argon2_params *mdm_enroll_argon2_params(void) { return &E.argon2; }

/* ------------------------------------------------------------------------------------------
 * Small text helpers
 */

/* Bytes of s (at most max) without cutting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    if (n <= max)
        return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* Copies src into dst (size bytes) for logs and audit events: control bytes become '?'. */
static void sanitize(char *dst, size_t size, const char *src)
{
    size_t n = utf8_cut(src, size - 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    dst[n] = 0;
}

/* The per-user lockout subject: the name lower-cased (ASCII), "" when it cannot be one. */
static void user_subject(const char *user, char out[MDM_SIGNON_SUBJECT_MAX + 1])
{
    out[0] = 0;
    if (!mdm_user_ref_valid(user))
        return;
    size_t n = strlen(user);
    for (size_t i = 0; i < n; i++)
        out[i] = user[i] >= 'A' && user[i] <= 'Z' ? (char)(user[i] - 'A' + 'a') : user[i];
    out[n] = 0;
}

/* "ip:port" or "[ip6]:port" -> the address alone ("unknown" when empty). */
static void peer_address(const char *peer, char *out, size_t size)
{
    const char *start = peer, *end = peer + strlen(peer);
    if (*peer == '[') {
        start = peer + 1;
        const char *close = strchr(start, ']');
        end = close ? close : end;
    } else {
        const char *colon = strrchr(peer, ':');
        if (colon && strchr(peer, ':') == colon) /* exactly one ':': IPv4 with a port */
            end = colon;
    }
    if (end == start)
        snprintf(out, size, "unknown");
    else
        snprintf(out, size, "%.*s", (int)(end - start), start);
}

static bool is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool equal_ct(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

/* n random bytes as lowercase hex into out (2n + 1 bytes). Returns 0 or MDM_ECRYPTO. */
static int random_hex(size_t n, char *out)
{
    uint8_t raw[TOKEN_BYTES];
    if (n > sizeof(raw))
        return -EINVAL;
    int ret = mdm_random_bytes(raw, n);
    if (ret == 0)
        mdm_hex_encode(raw, n, out);
    explicit_bzero(raw, sizeof(raw));
    return ret;
}

/* ------------------------------------------------------------------------------------------
 * Jobs and answers
 */

enum job_kind { JOB_SCEP, JOB_OTAE_FORM, JOB_OTAE_POST, JOB_INVITE_FORM, JOB_INVITE_POST };

enum answer_kind { ANSWER_HTML, ANSWER_SCEP, ANSWER_TEXT };

struct job {
    mdm_shard_msg_t msg; /* posts the answer back to the request's shard */
    mdm_exchange_t *x;   /* the handler owns it until it answers; the worker never touches it */
    mdm_shard_t *shard;
    enum job_kind kind;
    char peer[80];                        /* "ip:port", for audit events */
    char source[64];                      /* the address alone, for lockouts */
    char invite_id[MDM_ENROLL_ID_LEN + 1]; /* JOB_INVITE_*: from the path ("" when malformed) */
    uint8_t *body;                        /* copy of the request body; wiped when freed */
    size_t body_len;
    /* answer, built on the worker */
    int status;
    enum answer_kind answer;
    mdm_buf_t out;
    bool oom;
};

static void job_free(struct job *j)
{
    if (j->body)
        mdm_free_wiped(j->body, j->body_len);
    if (j->out.data)
        explicit_bzero(j->out.data, j->out.cap);
    mdm_buf_dispose(&j->out);
    free(j);
}

#define HDR(n, v) {n, sizeof(n) - 1, v, sizeof(v) - 1}

static const mdm_http_header_t html_headers[] = {
    HDR("Cache-Control", "no-store"),
    HDR("X-Content-Type-Options", "nosniff"),
    HDR("X-Frame-Options", "DENY"),
    HDR("Referrer-Policy", "no-referrer"),
    HDR("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
                                   "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
};

static const mdm_http_header_t profile_headers[] = {
    HDR("Content-Disposition", "attachment; filename=\"enroll.mobileconfig\""),
    HDR("Cache-Control", "no-store"),
    HDR("X-Content-Type-Options", "nosniff"),
};

#define HTML_TYPE "text/html; charset=utf-8"
#define PROFILE_TYPE "application/x-apple-aspen-config"

static void respond_html(mdm_exchange_t *x, int status, const mdm_buf_t *page)
{
    mdm_exchange_respond(x, status, html_headers, MDM_ARRAY_LEN(html_headers), HTML_TYPE,
                         mdm_buf_head(page), page->len);
}

/* Back on the request's shard. */
static void on_job_done(mdm_shard_t *sh, mdm_shard_msg_t *m)
{
    (void)sh;
    struct job *j = MDM_CONTAINER_OF(m, struct job, msg);
    if (j->oom)
        mdm_exchange_error(j->x, 503, "out of memory");
    else if (j->answer == ANSWER_HTML)
        respond_html(j->x, j->status, &j->out);
    else if (j->answer == ANSWER_SCEP)
        mdm_exchange_respond(j->x, j->status, NULL, 0, MDM_SCEP_PKI_MESSAGE_TYPE,
                             mdm_buf_head(&j->out), j->out.len);
    else
        mdm_exchange_respond(j->x, j->status, NULL, 0, "text/plain; charset=utf-8",
                             mdm_buf_head(&j->out), j->out.len);
    job_free(j);
}

static void out_str(struct job *j, const char *s)
{
    if (mdm_buf_append_str(&j->out, s) != 0)
        j->oom = true;
}

static void out_fmt(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_fmt(struct job *j, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line))
        j->oom = true;
    else
        out_str(j, line);
}

/* Appends s HTML-escaped (text and attribute values). */
static void html_esc(mdm_buf_t *b, bool *oom, const char *s)
{
    for (; *s; s++) {
        const char *rep = NULL;
        switch (*s) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default: break;
        }
        int ret = rep ? mdm_buf_append_str(b, rep) : mdm_buf_append(b, s, 1);
        if (ret != 0)
            *oom = true;
    }
}

static void out_esc(struct job *j, const char *s) { html_esc(&j->out, &j->oom, s); }

/* ------------------------------------------------------------------------------------------
 * Pages: self-contained HTML (inline CSS, no script), light and dark.
 */

static const char page_css[] =
    ":root{color-scheme:light dark}"
    "*{box-sizing:border-box}"
    "body{margin:0;padding:0 .75rem;font:16px/1.5 -apple-system,BlinkMacSystemFont,\"Segoe UI\",Helvetica,"
    "Arial,sans-serif;background:#f2f2f7;color:#1c1c1e}"
    "main{max-width:28rem;margin:8vh auto;padding:2rem;background:#fff;border-radius:14px;"
    "box-shadow:0 1px 4px rgba(0,0,0,.12)}"
    "h1{font-size:1.45rem;line-height:1.25;margin:0 0 .25rem}"
    ".org{color:#6e6e73;margin:0 0 1.5rem;font-size:.95rem}"
    "label{display:block;font-weight:600;margin:1rem 0 .3rem}"
    "input{width:100%;padding:.65rem .75rem;font:inherit;color:inherit;background:#fff;"
    "border:1px solid #c7c7cc;border-radius:8px}"
    "input:focus{outline:2px solid #0a84ff;outline-offset:0;border-color:#0a84ff}"
    "input[readonly]{background:#f2f2f7;color:#6e6e73}"
    "button,.button{display:block;width:100%;margin-top:1.5rem;padding:.75rem;font:inherit;"
    "font-weight:600;text-align:center;text-decoration:none;color:#fff;background:#0a84ff;"
    "border:0;border-radius:8px;cursor:pointer}"
    "button:hover,.button:hover{background:#0071e3}"
    ".msg{padding:.75rem 1rem;border-radius:8px;background:#fdecea;color:#8a1c1c;margin:0 0 1rem}"
    "ol{padding-left:1.25rem}li{margin:.45rem 0}"
    ".note{color:#6e6e73;font-size:.9rem;margin-top:1.5rem}"
    "@media (prefers-color-scheme:dark){body{background:#000;color:#f2f2f7}"
    "main{background:#1c1c1e;box-shadow:none}.org,.note{color:#98989d}"
    "input{background:#2c2c2e;border-color:#3a3a3c}input[readonly]{background:#1c1c1e;"
    "color:#98989d}.msg{background:#3b1514;color:#ffb4ab}}";

static void page_begin(struct job *j, int status, const char *title)
{
    j->answer = ANSWER_HTML;
    j->status = status;
    mdm_buf_reset(&j->out);
    out_str(j, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
               "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
               "<meta name=\"robots\" content=\"noindex\"><title>");
    out_esc(j, title);
    out_str(j, "</title><style>");
    out_str(j, page_css);
    out_str(j, "</style></head>\n<body><main>\n<h1>");
    out_esc(j, title);
    out_str(j, "</h1>\n<p class=\"org\">");
    out_esc(j, E.cfg ? E.cfg->organization : "mdmd");
    out_str(j, "</p>\n");
}

static void page_end(struct job *j) { out_str(j, "</main></body></html>\n"); }

/* A page with one paragraph of static text (already HTML). */
static void page_simple(struct job *j, int status, const char *title, const char *text_html)
{
    page_begin(j, status, title);
    out_fmt(j, "<p>%s</p>\n", text_html);
    page_end(j);
}

static void page_unavailable(struct job *j)
{
    page_simple(j, 503, "Enrollment is temporarily unavailable",
                "The server could not complete the request. Try again in a few minutes; if it "
                "keeps failing, tell your administrator.");
}

static void page_no_pushcert(struct job *j)
{
    page_simple(j, 503, "Enrollment is not available yet",
                "Macs cannot enroll until the administrator uploads an Apple push certificate "
                "(APNs). <strong>Administrator:</strong> upload it with <code>mdmd push-cert "
                "upload</code> or <code>PUT /api/v1/push-certificate</code>, then reload this "
                "page.");
}

static void page_closed(struct job *j)
{
    page_simple(j, 403, "Enrollment is by invitation only",
                "This Mac can be enrolled only through an invitation link from your "
                "administrator. Ask them for an invitation.");
}

static void page_bad_form(struct job *j)
{
    page_simple(j, 400, "The form could not be read",
                "Go back, fill in the form again and send it from this page.");
}

static void page_invitation_invalid(struct job *j)
{
    page_simple(j, 410, "This invitation link is not valid",
                "It may have expired, been used already or been revoked. Ask your "
                "administrator for a new invitation.");
}

/* The generic sign-on failure message: one per form, whatever went wrong. */
static const char *failure_text(bool invitation)
{
    return invitation ? "Sign-on failed. Check what you entered and try again. After several "
                        "failed attempts, sign-on is blocked for a while."
                      : "Sign-on failed. Check your user name and password (and one-time PIN, "
                        "if asked) and try again. After several failed attempts, sign-on is "
                        "blocked for a while.";
}

/* The web enrollment form; error adds the generic failure message. */
static void page_otae_form(struct job *j, int status, bool error)
{
    bool otp = E.cfg->enroll_auth == MDM_CFG_ENROLL_DOMAIN_OTP;
    page_begin(j, status, "Enroll your Mac");
    if (error)
        out_fmt(j, "<p class=\"msg\" role=\"alert\">%s</p>\n", failure_text(false));
    out_str(j, "<p>Sign in to download the enrollment profile that puts this Mac under "
               "management.</p>\n<form method=\"post\" autocomplete=\"off\">\n"
               "<label for=\"user\">User name</label>"
               "<input id=\"user\" name=\"user\" autocomplete=\"username\" autocapitalize=\"none\" "
               "spellcheck=\"false\" required maxlength=\"63\">\n"
               "<label for=\"password\">Password</label>"
               "<input id=\"password\" name=\"password\" type=\"password\" "
               "autocomplete=\"current-password\" required maxlength=\"1024\">\n");
    if (otp)
        out_str(j, "<label for=\"pin\">One-time PIN</label>"
                   "<input id=\"pin\" name=\"pin\" inputmode=\"numeric\" pattern=\"[0-9]*\" "
                   "autocomplete=\"one-time-code\" required maxlength=\"16\">\n");
    out_str(j, "<button type=\"submit\">Continue</button>\n</form>\n");
    page_end(j);
}

static bool mode_has_password(unsigned mode)
{
    return mode == MDM_INVITE_PASSWORD || mode == MDM_INVITE_PASSWORD_AND_PIN;
}

static bool mode_has_pin(unsigned mode)
{
    return mode == MDM_INVITE_PIN || mode == MDM_INVITE_PASSWORD_AND_PIN;
}

static void page_invite_form(struct job *j, int status, const mdm_invitation_t *inv, bool error)
{
    page_begin(j, status, "You are invited to enroll this Mac");
    if (error)
        out_fmt(j, "<p class=\"msg\" role=\"alert\">%s</p>\n", failure_text(true));
    out_str(j, "<p>Confirm who you are to download the enrollment profile for this Mac.</p>\n"
               "<form method=\"post\" autocomplete=\"off\">\n"
               "<label for=\"user\">User name</label><input id=\"user\" name=\"user\" value=\"");
    out_esc(j, inv->user_name);
    out_str(j, "\" readonly autocomplete=\"username\">\n");
    if (mode_has_password(inv->mode))
        out_str(j, "<label for=\"password\">Password</label>"
                   "<input id=\"password\" name=\"password\" type=\"password\" "
                   "autocomplete=\"current-password\" required maxlength=\"1024\" autofocus>\n");
    if (mode_has_pin(inv->mode))
        out_str(j, "<label for=\"pin\">PIN from your invitation</label>"
                   "<input id=\"pin\" name=\"pin\" inputmode=\"numeric\" pattern=\"[0-9]*\" "
                   "autocomplete=\"one-time-code\" required maxlength=\"16\">\n");
    out_str(j, "<button type=\"submit\">Continue</button>\n</form>\n");
    page_end(j);
}

static void page_ready(struct job *j, const char *enrollment_id, const char *token)
{
    page_begin(j, 200, "Your enrollment profile is ready");
    out_str(j, "<ol>\n<li>Download the profile: <a id=\"download\" href=\"/");
    out_esc(j, E.instance);
    out_fmt(j, "/macos/profile/%s?t=%s\">enroll.mobileconfig</a>.</li>\n", enrollment_id, token);
    out_str(j, "<li>Open <strong>System Settings</strong> and click <strong>Profile "
               "Downloaded</strong> in the sidebar (or go to <strong>General &gt; Device "
               "Management</strong>; on macOS 12 and earlier: System Preferences &gt; "
               "Profiles). In Chrome, first open the downloaded file from your Downloads "
               "folder.</li>\n"
               "<li>Double-click the <strong>");
    out_esc(j, E.cfg->organization);
    out_str(j, " MDM</strong> profile, click <strong>Install…</strong> and confirm with your "
               "Mac's password.</li>\n"
               "<li>The Mac enrolls by itself; it appears in the management console within a "
               "minute.</li>\n</ol>\n"
               "<a class=\"button\" href=\"/");
    out_esc(j, E.instance);
    out_fmt(j, "/macos/profile/%s?t=%s\">Download profile</a>\n", enrollment_id, token);
    out_str(j, "<p class=\"note\">The download link works once, for 10 minutes. The profile "
               "must be installed within the hour.</p>\n");
    page_end(j);
}

/* ------------------------------------------------------------------------------------------
 * Storage helpers (worker threads)
 */

/* Appends an audit event for a device-side action. */
static void audit(mdm_batch_t *b, const char *who, const char *action, const char *target,
                  const char *peer, int status, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static void audit(mdm_batch_t *b, const char *who, const char *action, const char *target,
                  const char *peer, int status, const char *fmt, ...)
{
    mdm_audit_event_t ev = {.at_ms = mdm_wall_ms(), .status = (uint16_t)status};
    sanitize(ev.who, sizeof(ev.who), who);
    snprintf(ev.action, sizeof(ev.action), "%s", action);
    sanitize(ev.target, sizeof(ev.target), target);
    snprintf(ev.source, sizeof(ev.source), "%s", peer);
    char detail[sizeof(ev.detail)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    sanitize(ev.detail, sizeof(ev.detail), detail);
    if (mdm_store_put_audit(b, &ev) != 0)
        mdm_error("enroll", "no random bytes for the audit event of %s %s", action, ev.target);
}

/* Commits b and clears it; logs a failure. */
static int commit(mdm_batch_t *b, const char *what)
{
    int ret = mdm_store_commit(E.store, b);
    if (ret != 0)
        mdm_error("enroll", "cannot store %s: %s", what, mdm_strerror(ret));
    mdm_batch_clear(b);
    return ret;
}

int mdm_enroll_revoke_invitation(const char *id, uint64_t now_ms, mdm_invitation_t *out)
{
    if (!E.store)
        return -ESHUTDOWN;
    mdm_batch_t *b = mdm_batch_new();
    if (!b)
        return -ENOMEM;
    pthread_mutex_lock(&E.lock);
    int ret = mdm_store_get_invitation(E.store, id, out);
    if (ret == 0 && (out->status != MDM_INVITE_PENDING || out->expires_ms <= now_ms)) {
        ret = -EALREADY;
    } else if (ret == 0) {
        out->status = MDM_INVITE_REVOKED;
        mdm_store_put_invitation(b, out);
        ret = commit(b, "the invitation's revocation");
    }
    pthread_mutex_unlock(&E.lock);
    mdm_batch_free(b);
    return ret;
}

/* The APNs topic of the stored push certificate. Returns 0, MDM_ENOTFOUND or another error. */
static int load_topic(char topic[MDM_PUSHCERT_TOPIC_MAX])
{
    mdm_pushcert_t pc;
    uint64_t at = 0;
    int ret = mdm_pushcert_load(E.store, NULL, &pc, &at);
    if (ret == 0)
        snprintf(topic, MDM_PUSHCERT_TOPIC_MAX, "%s", pc.topic);
    else if (ret != MDM_ENOTFOUND)
        mdm_error("enroll", "cannot read the push certificate: %s", mdm_strerror(ret));
    mdm_pushcert_dispose(&pc);
    return ret;
}

/* ------------------------------------------------------------------------------------------
 * Sign-on: lockouts, password checks
 */

enum verdict { V_OK, V_REFUSED, V_UNAVAILABLE };

static bool locked(enum mdm_signon_kind kind, const char *subject, uint64_t now)
{
    if (!subject[0])
        return false;
    mdm_signon_failures_t f;
    return mdm_store_get_signon_failures(E.store, kind, subject, &f) == 0 &&
           f.locked_until_ms > now;
}

/* One more failure of subject, appended to b. Caller holds E.lock. */
static void count_failure(mdm_batch_t *b, enum mdm_signon_kind kind, const char *subject,
                          uint64_t now, bool *locked_now)
{
    if (!subject[0])
        return;
    mdm_signon_failures_t f;
    if (mdm_store_get_signon_failures(E.store, kind, subject, &f) != 0) {
        memset(&f, 0, sizeof(f));
        f.kind = (uint8_t)kind;
        snprintf(f.subject, sizeof(f.subject), "%s", subject);
    }
    uint64_t window = (uint64_t)E.cfg->failure_window_minutes * 60000;
    if (f.locked_until_ms != 0 && f.locked_until_ms <= now) /* an old lockout is over */
        f.count = 0, f.locked_until_ms = 0;
    if (f.count == 0 || now < f.window_start_ms || now - f.window_start_ms >= window)
        f.count = 0, f.window_start_ms = now;
    f.count++;
    if (f.count >= (uint64_t)E.cfg->max_failures && f.locked_until_ms <= now) {
        f.locked_until_ms = now + (uint64_t)E.cfg->lockout_minutes * 60000;
        *locked_now = true;
        mdm_warn("enroll", "sign-on locked for %lld minutes: %s %s after %u failures",
                 E.cfg->lockout_minutes, kind == MDM_SIGNON_USER ? "user" : "address", subject,
                 f.count);
    }
    mdm_store_put_signon_failures(b, &f);
}

/*
 * Records a failed sign-on: the audit event with the real reason, and (when count) one more
 * failure for the user subject and the source address. Done under E.lock so concurrent
 * failures are all counted.
 */
static void record_failure(struct job *j, const char *action, const char *user,
                           const char *usubj, const char *why, bool count)
{
    mdm_batch_t *b = mdm_batch_new();
    if (!b)
        return;
    uint64_t now = mdm_wall_ms();
    bool locked_now = false;
    pthread_mutex_lock(&E.lock);
    if (count) {
        count_failure(b, MDM_SIGNON_USER, usubj, now, &locked_now);
        count_failure(b, MDM_SIGNON_ADDRESS, j->source, now, &locked_now);
    }
    audit(b, "enroll", action, user[0] ? user : "(empty)", j->peer, 403, "%s%s", why,
          locked_now ? "; now locked out" : "");
    (void)commit(b, "a failed sign-on");
    pthread_mutex_unlock(&E.lock);
    mdm_batch_free(b);
    char u[80];
    sanitize(u, sizeof(u), user);
    mdm_info("enroll", "%s refused for '%s' from %s: %s", action, u, j->source, why);
}

/* The groups of a user who signed on, as the enrollment remembers them. */
struct user_groups {
    unsigned n;
    char names[MDM_USER_GROUPS_MAX][MDM_GROUP_NAME_MAX + 1];
};

static void groups_from_local(struct user_groups *g, const mdm_local_user_t *u)
{
    g->n = u->n_groups;
    memcpy(g->names, u->groups, sizeof(g->names));
}

/* Adds one directory group unless it does not fit an enrollment (logged). */
static void group_add_ldap(struct user_groups *g, const char *user, const char *name)
{
    if (mdm_group_name_valid(name) && g->n < MDM_USER_GROUPS_MAX) {
        snprintf(g->names[g->n++], sizeof(g->names[0]), "%s", name);
        return;
    }
    char u[80], gn[140];
    sanitize(u, sizeof(u), user);
    sanitize(gn, sizeof(gn), name);
    mdm_warn("enroll", "directory group '%s' of '%s' not kept for the enrollment: %s", gn, u,
             mdm_group_name_valid(name) ? "more than 16 groups" :
                                          "longer than 63 bytes, empty or with control bytes");
}

static void groups_from_ldap(struct user_groups *g, const char *user, const mdm_ldap_user_t *lu)
{
    g->n = 0;
    for (unsigned i = 0; i < lu->n_groups && i < MDM_LDAP_GROUPS_MAX; i++)
        group_add_ldap(g, user, lu->groups[i]);
    if (lu->groups_truncated) {
        char u[80];
        sanitize(u, sizeof(u), user);
        mdm_warn("enroll", "the directory listed more groups of '%s' than mdmd reads", u);
    }
}

/*
 * Checks user's password: a local user first (argon2id), then the directory when configured;
 * an unknown user costs a dummy verification. why says what went wrong (logs, audit). On V_OK
 * groups holds the user's groups (local or directory).
 */
static enum verdict check_password(const char *user, const char *password,
                                   struct user_groups *groups, char *why, size_t whylen)
{
    size_t plen = strlen(password);
    if (!mdm_user_ref_valid(user) || plen == 0) {
        mdm_password_verify_dummy(&E.argon2);
        snprintf(why, whylen, "%s", plen ? "invalid user name" : "empty password");
        return V_REFUSED;
    }
    if (mdm_user_name_valid(user)) {
        mdm_local_user_t u;
        int ret = mdm_store_get_local_user(E.store, user, &u);
        if (ret == 0) {
            enum verdict v = V_REFUSED;
            if (!u.password_hash[0]) {
                mdm_password_verify_dummy(&E.argon2);
                snprintf(why, whylen, "local user without a password");
            } else {
                int r = mdm_password_verify(u.password_hash, password, plen);
                if (r == 0 && u.disabled)
                    snprintf(why, whylen, "local user is disabled");
                else if (r == 0)
                    v = V_OK;
                else if (r == -EACCES)
                    snprintf(why, whylen, "wrong password (local user)");
                else {
                    snprintf(why, whylen, "password check failed: %s", mdm_strerror(r));
                    v = V_UNAVAILABLE;
                }
            }
            if (v == V_OK)
                groups_from_local(groups, &u);
            explicit_bzero(&u, sizeof(u));
            return v;
        }
        if (ret != MDM_ENOTFOUND) {
            snprintf(why, whylen, "cannot read local user: %s", mdm_strerror(ret));
            return V_UNAVAILABLE;
        }
    }
    if (E.have_ldap) {
        mdm_ldap_user_t lu;
        char err[200] = "";
        int ret = mdm_ldap_authenticate(&E.ldap, user, password, &lu, err, sizeof(err));
        if (ret == 0) {
            groups_from_ldap(groups, user, &lu);
            return V_OK;
        }
        snprintf(why, whylen, "directory: %s", err[0] ? err : mdm_strerror(ret));
        return ret == MDM_LDAP_EBADCRED ? V_REFUSED : V_UNAVAILABLE;
    }
    mdm_password_verify_dummy(&E.argon2);
    snprintf(why, whylen, "unknown user");
    return V_REFUSED;
}

/*
 * The groups of an invited user who signed on with the invitation's PIN alone: the local
 * user's when there is one, else none (a directory is not asked without a password). V_OK or
 * V_UNAVAILABLE (storage failure, why set).
 */
static enum verdict invited_user_groups(const char *user, struct user_groups *groups,
                                        char *why, size_t whylen)
{
    groups->n = 0;
    if (!mdm_user_name_valid(user))
        return V_OK;
    mdm_local_user_t u;
    int ret = mdm_store_get_local_user(E.store, user, &u);
    if (ret == 0)
        groups_from_local(groups, &u);
    explicit_bzero(&u, sizeof(u));
    if (ret == 0 || ret == MDM_ENOTFOUND)
        return V_OK;
    snprintf(why, whylen, "cannot read local user: %s", mdm_strerror(ret));
    return V_UNAVAILABLE;
}

/* ------------------------------------------------------------------------------------------
 * The download table (any thread)
 */

static void download_clear(struct download *d)
{
    if (d->der)
        mdm_free_wiped(d->der, d->len);
    memset(d, 0, sizeof(*d));
}

/* Keeps der (taken over: the buffer is emptied) for one download. 0 or -ENOSPC. */
static int download_put(const char *id, const uint8_t hash[MDM_SHA256_LEN], mdm_buf_t *der,
                        uint64_t now)
{
    int ret = -ENOSPC;
    pthread_mutex_lock(&E.dl_lock);
    struct download *free_slot = NULL;
    for (size_t i = 0; i < DOWNLOADS_MAX; i++) {
        struct download *d = &E.dl[i];
        if (d->id[0] && d->expires_ms <= now)
            download_clear(d);
        if (!d->id[0] && !free_slot)
            free_slot = d;
    }
    if (free_slot) {
        uint8_t *copy = malloc(der->len);
        if (copy) {
            memcpy(copy, mdm_buf_head(der), der->len);
            snprintf(free_slot->id, sizeof(free_slot->id), "%s", id);
            memcpy(free_slot->token_hash, hash, MDM_SHA256_LEN);
            free_slot->expires_ms = now + DOWNLOAD_TTL_MS;
            free_slot->der = copy;
            free_slot->len = der->len;
            ret = 0;
        } else {
            ret = -ENOMEM;
        }
    }
    pthread_mutex_unlock(&E.dl_lock);
    return ret;
}

static void download_drop(const char *id)
{
    pthread_mutex_lock(&E.dl_lock);
    for (size_t i = 0; i < DOWNLOADS_MAX; i++)
        if (strcmp(E.dl[i].id, id) == 0)
            download_clear(&E.dl[i]);
    pthread_mutex_unlock(&E.dl_lock);
}

/* Takes the profile of enrollment id if the token's hash matches and it has not expired:
 * *der is the caller's (wipe and free). With peek (HEAD requests) the profile stays and *der
 * is a copy. Returns true when found. */
static bool download_take(const char *id, const uint8_t hash[MDM_SHA256_LEN], uint64_t now,
                          bool peek, uint8_t **der, size_t *len)
{
    bool found = false;
    pthread_mutex_lock(&E.dl_lock);
    for (size_t i = 0; E.dl && i < DOWNLOADS_MAX; i++) {
        struct download *d = &E.dl[i];
        if (strcmp(d->id, id) != 0)
            continue;
        if (peek && d->expires_ms > now && equal_ct(d->token_hash, hash, MDM_SHA256_LEN)) {
            *der = malloc(d->len);
            if (*der) {
                memcpy(*der, d->der, d->len);
                *len = d->len;
                found = true;
            }
        } else if (d->expires_ms > now && equal_ct(d->token_hash, hash, MDM_SHA256_LEN)) {
            *der = d->der;
            *len = d->len;
            d->der = NULL;
            found = true;
            download_clear(d);
        }
        break;
    }
    pthread_mutex_unlock(&E.dl_lock);
    return found;
}

/* ------------------------------------------------------------------------------------------
 * Enrollment: profile, records, download link (worker)
 */

/* Builds and signs the enrollment profile into der. Returns 0 or an error (logged). */
static int make_profile(const char *topic, const char *challenge, const char *device_cn,
                        mdm_buf_t *der)
{
    char server_url[600], checkin_url[600], scep_url[600], err[200] = "";
    snprintf(server_url, sizeof(server_url), "%s/mdm/connect", E.base_url);
    snprintf(checkin_url, sizeof(checkin_url), "%s/mdm/checkin", E.base_url);
    snprintf(scep_url, sizeof(scep_url), "%s/scep", E.base_url);
    mdm_enroll_profile_spec_t spec = {
        .organization = E.cfg->organization,
        .identifier_prefix = E.id_prefix,
        .server_url = server_url,
        .checkin_url = checkin_url,
        .scep_url = scep_url,
        .scep_name = E.instance,
        .topic = topic,
        .challenge = challenge,
        .device_cn = device_cn,
        .ca_der = E.ca_der,
        .ca_der_len = E.ca_len,
        .access_rights = (uint32_t)E.cfg->access_rights,
        .sign_message = E.cfg->sign_message,
    };
    mdm_buf_t xml;
    mdm_buf_init(&xml, 0);
    int ret = mdm_enroll_profile_build(&spec, &xml, NULL, err, sizeof(err));
    if (ret == 0)
        ret = mdm_enroll_profile_sign(E.signing_key, E.signing_crt, E.ca_crt,
                                      mdm_buf_head(&xml), xml.len, der);
    if (ret != 0)
        mdm_error("enroll", "cannot make the enrollment profile: %s%s%s", mdm_strerror(ret),
                  err[0] ? ": " : "", err);
    if (xml.data)
        explicit_bzero(xml.data, xml.cap);
    mdm_buf_dispose(&xml);
    return ret;
}

/*
 * The user signed on: creates the enrollment (method; inv_id is the invitation spent with it,
 * or NULL; groups: the user's at sign-on) with its one-time challenge, signs the profile,
 * keeps it for one download and answers the page with the link. With an invitation, it is
 * re-read under the lock and must still be pending: two sign-ons racing for one invitation get
 * one enrollment.
 */
static void deliver(struct job *j, const char *user, const char *usubj,
                    const struct user_groups *groups, enum mdm_enroll_method method,
                    const char *inv_id, const char *topic, const char *action)
{
    uint64_t now = mdm_wall_ms();
    mdm_enrollment_t e = {
        .method = (uint8_t)method,
        .created_ms = now,
        .challenge_expires_ms = now + (uint64_t)E.cfg->challenge_ttl_minutes * 60000,
    };
    mdm_scep_challenge_t ch = {.expires_ms = e.challenge_expires_ms};
    char challenge[2 * CHALLENGE_BYTES + 1], token[2 * TOKEN_BYTES + 1];
    uint8_t token_hash[MDM_SHA256_LEN];
    mdm_buf_t der;
    mdm_buf_init(&der, 0);
    mdm_batch_t *b = mdm_batch_new();
    bool stashed = false;
    snprintf(e.user_name, sizeof(e.user_name), "%s", user);
    e.n_groups = groups->n;
    memcpy(e.groups, groups->names, sizeof(e.groups));
    if (method == MDM_ENROLL_INVITATION && inv_id)
        snprintf(e.invitation_id, sizeof(e.invitation_id), "%s", inv_id);
    if (!b || mdm_enroll_id_new(e.id) != 0 || random_hex(CHALLENGE_BYTES, challenge) != 0 ||
        random_hex(TOKEN_BYTES, token) != 0 ||
        mdm_scep_challenge_hash(challenge, strlen(challenge), ch.hash) != 0 ||
        mdm_sha256(token, strlen(token), token_hash) != 0) {
        page_unavailable(j);
        goto out;
    }
    snprintf(ch.enrollment_id, sizeof(ch.enrollment_id), "%s", e.id);
    char cn[64];
    snprintf(cn, sizeof(cn), "%.*s %.8s", (int)utf8_cut(user, DEVICE_CN_USER_MAX), user, e.id);
    if (make_profile(topic, challenge, cn, &der) != 0) {
        page_unavailable(j);
        goto out;
    }
    if (download_put(e.id, token_hash, &der, now) != 0) {
        mdm_warn("enroll", "%d profiles wait for their download: refusing another",
                 DOWNLOADS_MAX);
        page_unavailable(j);
        goto out;
    }
    stashed = true;

    pthread_mutex_lock(&E.lock);
    if (inv_id) {
        mdm_invitation_t inv;
        int ret = mdm_store_get_invitation(E.store, inv_id, &inv);
        if (ret != 0 || inv.status != MDM_INVITE_PENDING || inv.expires_ms <= now) {
            pthread_mutex_unlock(&E.lock);
            if (ret != 0 && ret != MDM_ENOTFOUND)
                page_unavailable(j);
            else
                page_invitation_invalid(j);
            goto out;
        }
        inv.status = MDM_INVITE_USED;
        inv.used_ms = now;
        snprintf(inv.enrollment_id, sizeof(inv.enrollment_id), "%s", e.id);
        mdm_store_put_invitation(b, &inv);
    }
    mdm_store_put_enrollment(b, &e);
    mdm_store_put_scep_challenge(b, &ch);
    if (usubj[0])
        mdm_store_delete_signon_failures(b, MDM_SIGNON_USER, usubj);
    char who[64];
    snprintf(who, sizeof(who), "user:%.*s", (int)utf8_cut(user, 58), user);
    audit(b, who, action, user, j->peer, 200, "enrollment %s (%s)%s%s", e.id,
          mdm_enroll_method_name(method), inv_id ? ", invitation " : "", inv_id ? inv_id : "");
    int ret = commit(b, "the enrollment");
    pthread_mutex_unlock(&E.lock);
    if (ret != 0) {
        page_unavailable(j);
        goto out;
    }
    stashed = false; /* the download is now the user's */
    char u[80];
    sanitize(u, sizeof(u), user);
    mdm_info("enroll", "enrollment %s created for '%s' (%s) from %s", e.id, u,
             mdm_enroll_method_name(method), j->source);
    page_ready(j, e.id, token);
out:
    if (stashed)
        download_drop(e.id);
    explicit_bzero(challenge, sizeof(challenge));
    explicit_bzero(token, sizeof(token));
    if (der.data)
        explicit_bzero(der.data, der.cap);
    mdm_buf_dispose(&der);
    mdm_batch_free(b);
}

/*
 * An identity renewal for an enrolled Mac: a new enrollment of the same user (and groups),
 * bound to udid from the start, with a one-time challenge, and the signed enrollment profile
 * that carries it (the same PayloadIdentifier as the Mac's enrollment profile, which it
 * replaces). The records go into b; the caller commits them before the profile is sent.
 */
int mdm_enroll_prepare_renewal(const char *udid, const char *current_enrollment,
                               const char *topic, mdm_batch_t *b, mdm_buf_t *der,
                               char new_id[MDM_ENROLL_ID_LEN + 1])
{
    if (!E.ready)
        return -ESHUTDOWN;
    uint64_t now = mdm_wall_ms();
    mdm_enrollment_t cur, e = {
        .method = MDM_ENROLL_RENEWAL,
        .created_ms = now,
        .challenge_expires_ms = now + (uint64_t)E.cfg->challenge_ttl_minutes * 60000,
    };
    if (current_enrollment && current_enrollment[0] &&
        mdm_store_get_enrollment(E.store, current_enrollment, &cur) == 0) {
        snprintf(e.user_name, sizeof(e.user_name), "%s", cur.user_name);
        e.n_groups = cur.n_groups;
        memcpy(e.groups, cur.groups, sizeof(e.groups));
    } else {
        snprintf(e.user_name, sizeof(e.user_name), "device %.50s", udid);
    }
    snprintf(e.udid, sizeof(e.udid), "%s", udid);
    mdm_scep_challenge_t ch = {.expires_ms = e.challenge_expires_ms};
    char challenge[2 * CHALLENGE_BYTES + 1];
    int ret = mdm_enroll_id_new(e.id);
    if (ret == 0)
        ret = random_hex(CHALLENGE_BYTES, challenge);
    if (ret == 0)
        ret = mdm_scep_challenge_hash(challenge, strlen(challenge), ch.hash);
    if (ret == 0) {
        snprintf(ch.enrollment_id, sizeof(ch.enrollment_id), "%s", e.id);
        char cn[64];
        snprintf(cn, sizeof(cn), "%.*s %.8s", (int)utf8_cut(e.user_name, DEVICE_CN_USER_MAX),
                 e.user_name, e.id);
        ret = make_profile(topic, challenge, cn, der);
    }
    if (ret == 0) {
        mdm_store_put_enrollment(b, &e);
        mdm_store_put_scep_challenge(b, &ch);
        snprintf(new_id, MDM_ENROLL_ID_LEN + 1, "%s", e.id);
    }
    explicit_bzero(challenge, sizeof(challenge));
    return ret;
}

/* ------------------------------------------------------------------------------------------
 * Forms (worker)
 */

struct form {
    char user[FIELD_USER_MAX];
    char password[MDM_PASSWORD_MAX + 1];
    char pin[FIELD_PIN_MAX];
    bool has_user, has_password, has_pin;
};

static void form_wipe(struct form *f) { explicit_bzero(f, sizeof(*f)); }

/* Reads the fields of an application/x-www-form-urlencoded body. 0 or -EINVAL. */
static int parse_form(const struct job *j, struct form *f)
{
    memset(f, 0, sizeof(*f));
    const char *body = (const char *)j->body;
    const char *v;
    size_t vlen;
    if (mdm_http_param_find(body, j->body_len, "user", &v, &vlen)) {
        if (mdm_http_percent_decode(v, vlen, true, f->user, sizeof(f->user)) < 0)
            return -EINVAL;
        f->has_user = true;
    }
    if (mdm_http_param_find(body, j->body_len, "password", &v, &vlen)) {
        if (mdm_http_percent_decode(v, vlen, true, f->password, sizeof(f->password)) < 0)
            return -EINVAL;
        f->has_password = true;
    }
    if (mdm_http_param_find(body, j->body_len, "pin", &v, &vlen)) {
        if (mdm_http_percent_decode(v, vlen, true, f->pin, sizeof(f->pin)) < 0)
            return -EINVAL;
        f->has_pin = true;
        /* Tolerate what people type around a PIN: spaces. */
        size_t k = 0;
        for (size_t i = 0; f->pin[i]; i++)
            if (f->pin[i] != ' ')
                f->pin[k++] = f->pin[i];
        f->pin[k] = 0;
    }
    return 0;
}

/* True when the web enrollment link is open. */
static bool otae_open(void)
{
    return E.cfg->otae_enabled && E.cfg->enroll_auth != MDM_CFG_ENROLL_INVITATION_OTP;
}

static void otae_form(struct job *j)
{
    char topic[MDM_PUSHCERT_TOPIC_MAX];
    int ret = load_topic(topic);
    if (ret == MDM_ENOTFOUND)
        page_no_pushcert(j);
    else if (ret != 0)
        page_unavailable(j);
    else
        page_otae_form(j, 200, false);
}

/* Context of the domain_otp PIN search. */
struct otp_search {
    const char *user;
    uint64_t now;
    unsigned n;
    mdm_invitation_t cand[OTP_CANDIDATES_MAX];
};

static int on_invitation(void *arg, const mdm_invitation_t *inv)
{
    struct otp_search *s = arg;
    if (strcmp(inv->user_name, s->user) != 0 || inv->status != MDM_INVITE_PENDING ||
        inv->expires_ms <= s->now || !inv->pin_hash[0])
        return 0;
    s->cand[s->n++] = *inv;
    return s->n == OTP_CANDIDATES_MAX ? 1 : 0;
}

/* domain_otp: the id of a pending invitation of user whose PIN is pin. V_OK fills inv_id. */
static enum verdict find_otp_invitation(const char *user, const char *pin,
                                        char inv_id[MDM_ENROLL_ID_LEN + 1], char *why,
                                        size_t whylen)
{
    struct otp_search *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(why, whylen, "out of memory");
        return V_UNAVAILABLE;
    }
    s->user = user;
    s->now = mdm_wall_ms();
    enum verdict v = V_REFUSED;
    int ret = mdm_store_list_invitations(E.store, NULL, on_invitation, s);
    if (ret < 0) {
        snprintf(why, whylen, "cannot list invitations: %s", mdm_strerror(ret));
        v = V_UNAVAILABLE;
    } else if (s->n == 0) {
        mdm_password_verify_dummy(&E.argon2);
        snprintf(why, whylen, "no pending invitation with a PIN for this user");
    } else {
        snprintf(why, whylen, "wrong one-time PIN");
        for (unsigned i = 0; i < s->n && v != V_OK; i++)
            if (mdm_pin_verify(s->cand[i].pin_hash, pin) == 0) {
                snprintf(inv_id, MDM_ENROLL_ID_LEN + 1, "%s", s->cand[i].id);
                v = V_OK;
            }
    }
    explicit_bzero(s, sizeof(*s));
    free(s);
    return v;
}

static void otae_post(struct job *j)
{
    if (!otae_open()) {
        page_closed(j);
        return;
    }
    struct form f;
    if (parse_form(j, &f) != 0) {
        form_wipe(&f);
        page_bad_form(j);
        return;
    }
    char topic[MDM_PUSHCERT_TOPIC_MAX];
    int ret = load_topic(topic);
    if (ret != 0) {
        form_wipe(&f);
        if (ret == MDM_ENOTFOUND)
            page_no_pushcert(j);
        else
            page_unavailable(j);
        return;
    }
    bool otp = E.cfg->enroll_auth == MDM_CFG_ENROLL_DOMAIN_OTP;
    char usubj[MDM_SIGNON_SUBJECT_MAX + 1], why[300] = "", inv_id[MDM_ENROLL_ID_LEN + 1] = "";
    struct user_groups groups = {0};
    user_subject(f.user, usubj);
    uint64_t now = mdm_wall_ms();
    enum verdict v;
    bool count = true;
    if (locked(MDM_SIGNON_USER, usubj, now) || locked(MDM_SIGNON_ADDRESS, j->source, now)) {
        snprintf(why, sizeof(why), "locked out (user or source address)");
        v = V_REFUSED;
        count = false;
    } else {
        v = check_password(f.user, f.password, &groups, why, sizeof(why));
        if (v == V_OK && otp)
            v = find_otp_invitation(f.user, f.pin, inv_id, why, sizeof(why));
    }
    if (v == V_OK)
        deliver(j, f.user, usubj, &groups, MDM_ENROLL_WEB, otp ? inv_id : NULL, topic,
                "enroll.signon");
    else {
        /* A directory or storage outage is not the user's failure: not counted. */
        record_failure(j, "enroll.signon", f.user, usubj, why, count && v == V_REFUSED);
        page_otae_form(j, 403, true);
    }
    form_wipe(&f);
}

/* Reads the job's invitation. V_OK when it is usable; V_REFUSED when it is unknown, used,
 * revoked or expired; V_UNAVAILABLE on a storage failure. */
static enum verdict read_invitation(const struct job *j, mdm_invitation_t *inv)
{
    if (!mdm_enroll_id_valid(j->invite_id)) {
        memset(inv, 0, sizeof(*inv));
        return V_REFUSED;
    }
    int ret = mdm_store_get_invitation(E.store, j->invite_id, inv);
    if (ret == MDM_ENOTFOUND)
        return V_REFUSED;
    if (ret != 0) {
        mdm_error("enroll", "cannot read invitation %s: %s", j->invite_id, mdm_strerror(ret));
        return V_UNAVAILABLE;
    }
    if (inv->status != MDM_INVITE_PENDING || inv->expires_ms <= mdm_wall_ms())
        return V_REFUSED;
    return V_OK;
}

static void invite_form(struct job *j)
{
    mdm_invitation_t inv;
    enum verdict v = read_invitation(j, &inv);
    char topic[MDM_PUSHCERT_TOPIC_MAX];
    int ret = v == V_OK ? load_topic(topic) : 0;
    if (v == V_UNAVAILABLE || (ret != 0 && ret != MDM_ENOTFOUND))
        page_unavailable(j);
    else if (v == V_REFUSED)
        page_invitation_invalid(j);
    else if (ret == MDM_ENOTFOUND)
        page_no_pushcert(j);
    else
        page_invite_form(j, 200, &inv, false);
    explicit_bzero(&inv, sizeof(inv));
}

static void invite_post(struct job *j)
{
    mdm_invitation_t inv;
    struct form f;
    memset(&f, 0, sizeof(f));
    enum verdict v = read_invitation(j, &inv);
    if (v != V_OK) {
        if (v == V_UNAVAILABLE) {
            page_unavailable(j);
        } else {
            record_failure(j, "enroll.invitation", inv.user_name[0] ? inv.user_name : j->invite_id,
                           "", "invitation unknown, used, revoked or expired", false);
            page_invitation_invalid(j);
        }
        goto out;
    }
    if (parse_form(j, &f) != 0) {
        page_bad_form(j);
        goto out;
    }
    char topic[MDM_PUSHCERT_TOPIC_MAX];
    int ret = load_topic(topic);
    if (ret != 0) {
        if (ret == MDM_ENOTFOUND)
            page_no_pushcert(j);
        else
            page_unavailable(j);
        goto out;
    }
    char usubj[MDM_SIGNON_SUBJECT_MAX + 1], why[300] = "";
    struct user_groups groups = {0};
    user_subject(inv.user_name, usubj);
    uint64_t now = mdm_wall_ms();
    bool count = true;
    if (locked(MDM_SIGNON_USER, usubj, now) || locked(MDM_SIGNON_ADDRESS, j->source, now)) {
        snprintf(why, sizeof(why), "locked out (user or source address)");
        v = V_REFUSED;
        count = false;
    } else {
        /* Both checks run whatever the first one said: the time taken tells nothing. */
        if (mode_has_password(inv.mode))
            v = check_password(inv.user_name, f.password, &groups, why, sizeof(why));
        if (mode_has_pin(inv.mode)) {
            int r = inv.pin_hash[0] ? mdm_pin_verify(inv.pin_hash, f.pin) : -EACCES;
            if (r != 0 && v != V_UNAVAILABLE) {
                if (v == V_OK)
                    snprintf(why, sizeof(why), "wrong PIN");
                else
                    snprintf(why + strlen(why), sizeof(why) - strlen(why), "; wrong PIN");
                v = r == -EACCES || r == -EINVAL ? V_REFUSED : V_UNAVAILABLE;
            }
        }
        if (v == V_OK && !mode_has_password(inv.mode))
            v = invited_user_groups(inv.user_name, &groups, why, sizeof(why));
    }
    if (v == V_OK) {
        deliver(j, inv.user_name, usubj, &groups, MDM_ENROLL_INVITATION, inv.id, topic,
                "enroll.invitation");
    } else {
        record_failure(j, "enroll.invitation", inv.user_name, usubj, why,
                       count && v == V_REFUSED);
        page_invite_form(j, 403, &inv, true);
    }
out:
    form_wipe(&f);
    explicit_bzero(&inv, sizeof(inv));
}

/* ------------------------------------------------------------------------------------------
 * SCEP PKIOperation (worker)
 */

/* The RA as core/scep wants it (a value: workers run concurrently). */
static mdm_scep_ra_t ra(void)
{
    return (mdm_scep_ra_t){E.ra_der, E.ra_len, E.ra_key_der, E.ra_key_len};
}

/* Answers req with a CertRep FAILURE and audits the refusal. */
static void scep_refuse(struct job *j, const mdm_scep_request_t *req,
                        enum mdm_scep_fail_info info, const char *target, const char *why)
{
    mdm_batch_t *b = mdm_batch_new();
    if (b) {
        audit(b, "scep", "scep.refuse", target, j->peer, 403, "%s (transaction %.40s)", why,
              req->transaction_id);
        (void)commit(b, "a SCEP refusal");
        mdm_batch_free(b);
    }
    mdm_info("enroll", "SCEP request from %s refused: %s", j->source, why);
    mdm_scep_ra_t rr = ra();
    j->answer = ANSWER_SCEP;
    j->status = 200;
    mdm_buf_reset(&j->out);
    int ret = mdm_scep_cert_rep(&rr, req, MDM_SCEP_FAILURE, info, NULL, 0, &j->out);
    if (ret != 0) {
        j->answer = ANSWER_TEXT;
        j->status = 503;
        mdm_buf_reset(&j->out);
        out_str(j, "cannot build the SCEP reply\n");
    }
}

/* Issues a device identity for req's public key. The caller frees *cert. */
static int issue(const mdm_scep_request_t *req, uint8_t **cert, size_t *len,
                 char hex[MDM_SHA256_HEX_LEN + 1])
{
    char cn[64];
    const char *src = req->common_name && req->common_name[0] ? req->common_name : "mdmd device";
    snprintf(cn, sizeof(cn), "%.*s", (int)utf8_cut(src, 63), src);
    mdm_x509_spec_t spec = {
        .common_name = cn,
        .organization = E.cfg->organization[0] ? E.cfg->organization : NULL,
        .validity_days = (uint32_t)E.cfg->device_cert_days,
        .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE | MDM_X509_KU_KEY_ENCIPHERMENT,
        .ext_key_usage = MDM_X509_EKU_CLIENT_AUTH,
    };
    int ret = mdm_x509_issue_der(E.ca_key_der, E.ca_key_len, E.ca_der, E.ca_len, req->spki,
                                 req->spki_len, &spec, cert, len);
    if (ret == 0 && (ret = mdm_sha256_hex(*cert, *len, hex)) != 0) {
        free(*cert);
        *cert = NULL;
    }
    return ret;
}

static void scep_success(struct job *j, const mdm_scep_request_t *req, const uint8_t *cert,
                         size_t len)
{
    j->answer = ANSWER_SCEP;
    j->status = 200;
    mdm_buf_reset(&j->out);
    mdm_scep_ra_t rr = ra();
    if (mdm_scep_cert_rep(&rr, req, MDM_SCEP_SUCCESS, 0, cert, len, &j->out) != 0) {
        /* The certificate is recorded but the Mac cannot have it: it retries with a new
         * enrollment. */
        mdm_error("enroll", "cannot build the SCEP reply for %s", j->source);
        j->answer = ANSWER_TEXT;
        j->status = 503;
        mdm_buf_reset(&j->out);
        out_str(j, "cannot build the SCEP reply\n");
    }
}

static void scep_pkcsreq(struct job *j, const mdm_scep_request_t *req)
{
    if (!req->challenge || !req->challenge[0]) {
        scep_refuse(j, req, MDM_SCEP_BAD_REQUEST, "(no challenge)", "no challenge password");
        return;
    }
    uint8_t hash[MDM_SHA256_LEN];
    char hex[MDM_SHA256_HEX_LEN + 1], hint[16];
    if (mdm_scep_challenge_hash(req->challenge, strlen(req->challenge), hash) != 0) {
        scep_refuse(j, req, MDM_SCEP_BAD_REQUEST, "(challenge)", "cannot hash the challenge");
        return;
    }
    mdm_hex_encode(hash, 6, hint); /* names the challenge in the audit without revealing it */
    char target[40];
    snprintf(target, sizeof(target), "challenge %s", hint);
    mdm_batch_t *b = mdm_batch_new();
    if (!b) {
        scep_refuse(j, req, MDM_SCEP_BAD_REQUEST, target, "out of memory");
        return;
    }
    uint8_t *cert = NULL;
    size_t len = 0;
    const char *why = NULL;
    bool policy = false;
    uint64_t now = mdm_wall_ms();
    pthread_mutex_lock(&E.lock);
    mdm_scep_challenge_t ch;
    mdm_enrollment_t e;
    memset(&e, 0, sizeof(e));
    int ret = mdm_store_get_scep_challenge(E.store, hash, &ch);
    if (ret == MDM_ENOTFOUND)
        why = "unknown challenge";
    else if (ret != 0)
        why = "cannot read the challenge";
    else if (ch.used)
        why = "challenge already used";
    else if (ch.expires_ms <= now)
        why = "challenge expired";
    else if (ch.certificate_only)
        policy = true; /* a SCEP policy's certificate: no enrollment to complete */
    else if (mdm_store_get_enrollment(E.store, ch.enrollment_id, &e) != 0)
        why = "the challenge's enrollment cannot be read";
    if (!why && issue(req, &cert, &len, hex) != 0)
        why = "cannot issue the certificate";
    if (!why) {
        ch.used = true;
        mdm_store_put_scep_challenge(b, &ch);
        if (policy) {
            audit(b, "scep", "scep.issue", "policy", j->peer, 200,
                  "certificate %s (SCEP policy)", hex);
        } else {
            snprintf(e.cert_sha256, sizeof(e.cert_sha256), "%s", hex);
            mdm_store_put_enrollment(b, &e);
            mdm_store_put_enrollment_cert(b, hex, e.id);
            audit(b, "scep", "scep.issue", e.id, j->peer, 200, "identity certificate %s for %s",
                  hex, e.user_name);
        }
        if (commit(b, "the certificate issuance") != 0)
            why = "cannot store the issuance";
    }
    pthread_mutex_unlock(&E.lock);
    mdm_batch_free(b);
    if (why) {
        free(cert);
        scep_refuse(j, req, MDM_SCEP_BAD_REQUEST, target, why);
        return;
    }
    if (policy)
        mdm_info("enroll", "SCEP: certificate %s issued for a SCEP policy to %s", hex, j->source);
    else
        mdm_info("enroll", "SCEP: identity certificate %s issued for enrollment %s to %s", hex,
                 e.id, j->source);
    scep_success(j, req, cert, len);
    free(cert);
}

/* True when an administrator revoked the certificate (or its state cannot be read: refuse). */
static bool cert_revoked(const char *hex)
{
    mdm_revoked_cert_t rc;
    int ret = mdm_store_get_revoked_cert(E.store, hex, &rc);
    return ret != MDM_ENOTFOUND;
}

static void scep_renewal(struct job *j, const mdm_scep_request_t *req)
{
    char old_hex[MDM_SHA256_HEX_LEN + 1] = "", hex[MDM_SHA256_HEX_LEN + 1], err[200] = "";
    char why[300] = "";
    mdm_x509_info_t info;
    int64_t now = (int64_t)(mdm_wall_ms() / 1000);
    if (mdm_sha256_hex(req->signer_cert, req->signer_cert_len, old_hex) != 0 ||
        mdm_x509_inspect_der(req->signer_cert, req->signer_cert_len, &info) != 0)
        snprintf(why, sizeof(why), "the signer certificate cannot be read");
    else if (mdm_cms_trust_verify(E.trust, req->signer_cert, req->signer_cert_len, now, err,
                                  sizeof(err)) != 0)
        snprintf(why, sizeof(why), "renewal signer not valid under the instance CA: %s", err);
    else if (info.is_ca || !info.has_eku || !(info.eku & MDM_X509_EKU_CLIENT_AUTH))
        snprintf(why, sizeof(why), "renewal signer is not a device identity (clientAuth)");
    else if (cert_revoked(old_hex))
        snprintf(why, sizeof(why), "the renewal signer was revoked by an administrator");
    if (why[0]) {
        scep_refuse(j, req, MDM_SCEP_BAD_REQUEST, old_hex[0] ? old_hex : "(signer)", why);
        return;
    }
    mdm_batch_t *b = mdm_batch_new();
    uint8_t *cert = NULL;
    size_t len = 0;
    char eid[MDM_ENROLL_ID_LEN + 1] = "";
    pthread_mutex_lock(&E.lock);
    if (!b || issue(req, &cert, &len, hex) != 0) {
        snprintf(why, sizeof(why), "cannot issue the certificate");
    } else {
        mdm_enrollment_t e;
        if (mdm_store_get_enrollment_cert(E.store, old_hex, eid) == 0 &&
            mdm_store_get_enrollment(E.store, eid, &e) == 0) {
            snprintf(e.cert_sha256, sizeof(e.cert_sha256), "%s", hex);
            mdm_store_put_enrollment(b, &e);
            mdm_store_put_enrollment_cert(b, hex, eid);
        }
        audit(b, "scep", "scep.renew", eid[0] ? eid : old_hex, j->peer, 200,
              "identity certificate %s renews %s", hex, old_hex);
        if (commit(b, "the certificate renewal") != 0)
            snprintf(why, sizeof(why), "cannot store the renewal");
    }
    pthread_mutex_unlock(&E.lock);
    mdm_batch_free(b);
    if (why[0]) {
        free(cert);
        scep_refuse(j, req, MDM_SCEP_BAD_REQUEST, old_hex, why);
        return;
    }
    mdm_info("enroll", "SCEP: certificate %s renewed as %s for %s", old_hex, hex, j->source);
    scep_success(j, req, cert, len);
    free(cert);
}

static void scep_operation(struct job *j)
{
    mdm_scep_request_t req;
    mdm_scep_ra_t rr = ra();
    int ret = mdm_scep_parse_request(&rr, j->body, j->body_len, &req);
    if (ret != 0) {
        if (req.replyable) {
            char why[120];
            snprintf(why, sizeof(why), "malformed request: %s", mdm_strerror(ret));
            scep_refuse(j, &req, req.fail_info, "(request)", why);
        } else {
            mdm_info("enroll", "SCEP request from %s unreadable: %s", j->source,
                     mdm_strerror(ret));
            j->answer = ANSWER_TEXT;
            j->status = ret == -ENOMEM ? 503 : 400;
            out_fmt(j, "not a SCEP pkiMessage for this server: %s\n", mdm_strerror(ret));
        }
    } else if (req.type == MDM_SCEP_PKCS_REQ) {
        scep_pkcsreq(j, &req);
    } else if (req.type == MDM_SCEP_RENEWAL_REQ) {
        scep_renewal(j, &req);
    } else {
        /* CertPoll: mdmd never answers PENDING, so there is nothing to poll for. */
        scep_refuse(j, &req, MDM_SCEP_BAD_CERT_ID, "(poll)", "no pending request to poll");
    }
    mdm_scep_request_dispose(&req);
}

/* ------------------------------------------------------------------------------------------
 * Worker entry and route handlers (shard threads)
 */

static void run_job(void *arg)
{
    struct job *j = arg;
    if (!E.ready && j->kind != JOB_OTAE_FORM && j->kind != JOB_INVITE_FORM) {
        page_unavailable(j);
    } else {
        switch (j->kind) {
        case JOB_SCEP: scep_operation(j); break;
        case JOB_OTAE_FORM: otae_form(j); break;
        case JOB_OTAE_POST: otae_post(j); break;
        case JOB_INVITE_FORM: invite_form(j); break;
        case JOB_INVITE_POST: invite_post(j); break;
        }
    }
    j->msg.fn = on_job_done;
    mdm_shard_post(j->shard, &j->msg);
}

/* An answer built on the shard (static pages). */
static void respond_page(mdm_exchange_t *x, void (*fill)(struct job *j))
{
    struct job j = {0};
    mdm_buf_init(&j.out, 0);
    fill(&j);
    if (j.oom)
        mdm_exchange_error(x, 503, "out of memory");
    else
        respond_html(x, j.status, &j.out);
    mdm_buf_dispose(&j.out);
}

/* Queues a job for the request; body (may be NULL) is copied. */
static void start_job(mdm_exchange_t *x, enum job_kind kind, const void *body, size_t len,
                      const char *invite_id)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j) {
        mdm_exchange_error(x, 503, "out of memory");
        return;
    }
    j->x = x;
    j->shard = mdm_exchange_shard(x);
    j->kind = kind;
    mdm_buf_init(&j->out, 0);
    snprintf(j->peer, sizeof(j->peer), "%s", mdm_exchange_peer_addr(x));
    peer_address(j->peer, j->source, sizeof(j->source));
    if (invite_id)
        snprintf(j->invite_id, sizeof(j->invite_id), "%s", invite_id);
    if (len) {
        j->body = malloc(len);
        if (!j->body) {
            free(j);
            mdm_exchange_error(x, 503, "out of memory");
            return;
        }
        memcpy(j->body, body, len);
        j->body_len = len;
    }
    if (mdm_enroll_run(run_job, j) != 0) {
        job_free(j);
        mdm_exchange_error(x, 503, "enrollment is not running, retry later");
    }
}

static void handle_scep(mdm_exchange_t *x, void *ctx)
{
    (void)ctx;
    const mdm_http_request_t *req = mdm_exchange_request(x);
    const char *q = req->query ? req->query : "";
    const char *v;
    size_t vlen;
    char op[32];
    if (!mdm_http_param_find(q, strlen(q), "operation", &v, &vlen) ||
        mdm_http_percent_decode(v, vlen, false, op, sizeof(op)) < 0) {
        mdm_exchange_error(x, 400, "expected ?operation=GetCACaps, GetCACert or PKIOperation");
        return;
    }
    if (strcmp(op, "GetCACaps") == 0) {
        const char *caps = mdm_scep_caps();
        mdm_exchange_respond(x, 200, NULL, 0, "text/plain", caps, strlen(caps));
        return;
    }
    if (!E.ready) {
        mdm_exchange_error(x, 503, "SCEP is not configured on this server (see its log)");
        return;
    }
    if (strcmp(op, "GetCACert") == 0) {
        mdm_exchange_respond(x, 200, NULL, 0, MDM_SCEP_CA_RA_CERT_TYPE,
                             mdm_buf_head(&E.ca_ra_certs), E.ca_ra_certs.len);
        return;
    }
    if (strcmp(op, "PKIOperation") != 0) {
        mdm_exchange_error(x, 400, "unsupported SCEP operation");
        return;
    }
    if (req->method == MDM_HTTP_POST) {
        if (req->body.len == 0) {
            mdm_exchange_error(x, 400, "PKIOperation without a message");
            return;
        }
        start_job(x, JOB_SCEP, mdm_buf_head(&req->body), req->body.len, NULL);
        return;
    }
    /* GET: message=<base64, URL-encoded>; '+' is base64, not a space. */
    char *text = NULL;
    mdm_buf_t der;
    mdm_buf_init(&der, MDM_SCEP_MESSAGE_MAX);
    if (!mdm_http_param_find(q, strlen(q), "message", &v, &vlen) || vlen == 0) {
        mdm_exchange_error(x, 400, "PKIOperation without a message");
        goto out;
    }
    text = malloc(vlen + 1);
    int n = text ? mdm_http_percent_decode(v, vlen, false, text, vlen + 1) : -1;
    if (n <= 0 || mdm_base64_decode(text, (size_t)n, &der) != 0 || der.len == 0) {
        mdm_exchange_error(x, 400, "message is not URL-encoded base64");
        goto out;
    }
    start_job(x, JOB_SCEP, mdm_buf_head(&der), der.len, NULL);
out:
    free(text);
    mdm_buf_dispose(&der);
}

static void handle_otae(mdm_exchange_t *x, void *ctx)
{
    (void)ctx;
    const mdm_http_request_t *req = mdm_exchange_request(x);
    if (!otae_open()) {
        respond_page(x, page_closed);
        return;
    }
    if (req->method == MDM_HTTP_GET) {
        start_job(x, JOB_OTAE_FORM, NULL, 0, NULL);
        return;
    }
    const char *ct = mdm_http_request_header(req, "Content-Type");
    if (!ct || strncasecmp(ct, "application/x-www-form-urlencoded", 33) != 0) {
        respond_page(x, page_bad_form);
        return;
    }
    start_job(x, JOB_OTAE_POST, mdm_buf_head(&req->body), req->body.len, NULL);
}

/* The path segment after prefix (up to the end; "" when the path has another shape). */
static void path_tail(const char *path, const char *prefix, char *out, size_t size)
{
    size_t plen = strlen(prefix);
    out[0] = 0;
    if (strncmp(path, prefix, plen) != 0 || strchr(path + plen, '/'))
        return;
    if (strlen(path + plen) < size)
        snprintf(out, size, "%s", path + plen);
}

static void handle_invite(mdm_exchange_t *x, void *ctx)
{
    (void)ctx;
    const mdm_http_request_t *req = mdm_exchange_request(x);
    char prefix[128], id[MDM_ENROLL_ID_LEN + 1];
    snprintf(prefix, sizeof(prefix), "/%s/macos/invite/", E.instance);
    path_tail(req->path, prefix, id, sizeof(id));
    if (!mdm_enroll_id_valid(id)) {
        respond_page(x, page_invitation_invalid);
        return;
    }
    if (req->method == MDM_HTTP_GET) {
        start_job(x, JOB_INVITE_FORM, NULL, 0, id);
        return;
    }
    const char *ct = mdm_http_request_header(req, "Content-Type");
    if (!ct || strncasecmp(ct, "application/x-www-form-urlencoded", 33) != 0) {
        respond_page(x, page_bad_form);
        return;
    }
    start_job(x, JOB_INVITE_POST, mdm_buf_head(&req->body), req->body.len, id);
}

static void page_download_gone(struct job *j)
{
    page_simple(j, 410, "This download link is no longer valid",
                "A download link works once and for 10 minutes. Sign on again to get a new "
                "one.");
}

static void handle_profile(mdm_exchange_t *x, void *ctx)
{
    (void)ctx;
    const mdm_http_request_t *req = mdm_exchange_request(x);
    char prefix[128], id[MDM_ENROLL_ID_LEN + 1], token[2 * TOKEN_BYTES + 1] = "";
    snprintf(prefix, sizeof(prefix), "/%s/macos/profile/", E.instance);
    path_tail(req->path, prefix, id, sizeof(id));
    const char *q = req->query ? req->query : "", *v;
    size_t vlen;
    if (mdm_http_param_find(q, strlen(q), "t", &v, &vlen) && vlen < sizeof(token)) {
        memcpy(token, v, vlen);
        token[vlen] = 0;
    }
    uint8_t hash[MDM_SHA256_LEN], *der = NULL;
    size_t len = 0;
    if (!mdm_enroll_id_valid(id) || !is_hex(token, 2 * TOKEN_BYTES) ||
        mdm_sha256(token, strlen(token), hash) != 0 ||
        !download_take(id, hash, mdm_wall_ms(), req->head, &der, &len)) {
        respond_page(x, page_download_gone);
        return;
    }
    char peer[80];
    snprintf(peer, sizeof(peer), "%s", mdm_exchange_peer_addr(x));
    if (!req->head)
        mdm_info("enroll", "enrollment profile %s downloaded by %s", id, peer);
    mdm_exchange_respond(x, 200, profile_headers, MDM_ARRAY_LEN(profile_headers), PROFILE_TYPE,
                         der, len);
    mdm_free_wiped(der, len);
}

int mdm_enroll_add_routes(mdm_http_router_t *r, const char *instance)
{
    static const struct {
        enum mdm_http_method method;
        const char *path;
        mdm_handler_fn fn;
        size_t body_max;
    } routes[] = {
        {MDM_HTTP_GET, "scep", handle_scep, GET_BODY_MAX},
        {MDM_HTTP_POST, "scep", handle_scep, MDM_SCEP_MESSAGE_MAX},
        {MDM_HTTP_GET, "macos/otae", handle_otae, GET_BODY_MAX},
        {MDM_HTTP_POST, "macos/otae", handle_otae, FORM_BODY_MAX},
        {MDM_HTTP_GET, "macos/invite/*", handle_invite, GET_BODY_MAX},
        {MDM_HTTP_POST, "macos/invite/*", handle_invite, FORM_BODY_MAX},
        {MDM_HTTP_GET, "macos/profile/*", handle_profile, GET_BODY_MAX},
    };
    snprintf(E.instance, sizeof(E.instance), "%s", instance);
    for (size_t i = 0; i < MDM_ARRAY_LEN(routes); i++) {
        char path[160];
        snprintf(path, sizeof(path), "/%s/%s", instance, routes[i].path);
        int ret = mdm_http_router_add(r, routes[i].method, path, (void *)routes[i].fn, NULL,
                                      routes[i].body_max);
        if (ret != 0)
            return ret;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Start and stop
 */

/* A private key file (PEM or DER) as DER. */
static int read_key_der(const char *path, uint8_t **der, size_t *len)
{
    uint8_t *raw = NULL;
    size_t rlen = 0;
    int ret = mdm_file_read_private(path, 64 * 1024, &raw, &rlen, NULL);
    if (ret != 0)
        return ret;
    ret = mdm_x509_pem_to_der((const char *)raw, rlen, true, der, len);
    if (ret == -EINVAL) { /* no PEM block: take the file as DER */
        *der = raw;
        *len = rlen;
        return 0;
    }
    mdm_free_wiped(raw, rlen);
    return ret;
}

/* Loads the CA, the RA and their keys. Failures are logged; enrollment then stays off. */
static int load_pki(const mdm_config_t *c)
{
    char ca_key[PATH_MAX], ra_crt[PATH_MAX], ra_key[PATH_MAX], why[300] = "";
    bool created = false;
    int ret = mdm_instance_ensure_scep_ra(c->dir, &created, why, sizeof(why));
    if (ret != 0) {
        mdm_error("enroll", "SCEP RA certificate: %s", why);
        return ret;
    }
    if (created)
        mdm_info("enroll", "created the SCEP RA certificate %s/%s (%s)", c->dir,
                 MDM_INSTANCE_RA_CERT, why);
    mdm_config_path(c, "ca/ca.crt", E.ca_crt, sizeof(E.ca_crt));
    mdm_config_path(c, "ca/ca.key", ca_key, sizeof(ca_key));
    mdm_config_path(c, MDM_INSTANCE_RA_CERT, ra_crt, sizeof(ra_crt));
    mdm_config_path(c, MDM_INSTANCE_RA_KEY, ra_key, sizeof(ra_key));
    mdm_config_path(c, "signing/signing.key", E.signing_key, sizeof(E.signing_key));
    mdm_config_path(c, "signing/signing.crt", E.signing_crt, sizeof(E.signing_crt));
    const char *step = E.ca_crt;
    if ((ret = mdm_x509_read_cert_der(E.ca_crt, &E.ca_der, &E.ca_len)) != 0)
        goto fail;
    step = ca_key;
    if ((ret = read_key_der(ca_key, &E.ca_key_der, &E.ca_key_len)) != 0 ||
        (ret = mdm_x509_key_matches(E.ca_der, E.ca_len, E.ca_key_der, E.ca_key_len)) != 0)
        goto fail;
    step = ra_crt;
    if ((ret = mdm_x509_read_cert_der(ra_crt, &E.ra_der, &E.ra_len)) != 0)
        goto fail;
    step = ra_key;
    if ((ret = read_key_der(ra_key, &E.ra_key_der, &E.ra_key_len)) != 0 ||
        (ret = mdm_x509_key_matches(E.ra_der, E.ra_len, E.ra_key_der, E.ra_key_len)) != 0)
        goto fail;
    step = "the GetCACert answer";
    mdm_buf_init(&E.ca_ra_certs, 0);
    if ((ret = mdm_scep_ca_certs(E.ra_der, E.ra_len, E.ca_der, E.ca_len, &E.ca_ra_certs)) != 0)
        goto fail;
    step = E.ca_crt;
    const char *paths[] = {E.ca_crt};
    if ((ret = mdm_cms_trust_load(paths, 1, &E.trust)) != 0)
        goto fail;
    return 0;
fail:
    mdm_error("enroll", "enrollment is off: %s: %s", step, mdm_strerror(ret));
    return ret;
}

static int load_ldap(const mdm_config_t *c)
{
    if (!c->ldap_url[0])
        return 0;
    static char ca[PATH_MAX];
    if (c->ldap_ca_file[0])
        mdm_config_path(c, c->ldap_ca_file, ca, sizeof(ca));
    else
        ca[0] = 0;
    if (c->ldap_bind_password_file[0]) {
        char path[PATH_MAX];
        mdm_config_path(c, c->ldap_bind_password_file, path, sizeof(path));
        uint8_t *data = NULL;
        size_t len = 0;
        struct stat st = {0};
        int ret = mdm_file_read_private(path, 4096, &data, &len, &st);
        if (ret == -EPERM) {
            mdm_error("enroll", "ldap.bind_password_file %s has mode %04o: it must not be "
                                "readable by group or others (chmod 600)",
                      path, (unsigned)(st.st_mode & 07777));
            return MDM_ECONFIG;
        }
        if (ret != 0) {
            mdm_error("enroll", "ldap.bind_password_file %s: %s", path, mdm_strerror(ret));
            return MDM_ECONFIG;
        }
        while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
            len--;
        E.ldap_password = malloc(len + 1);
        if (!E.ldap_password) {
            mdm_free_wiped(data, len);
            return -ENOMEM;
        }
        memcpy(E.ldap_password, data, len);
        E.ldap_password[len] = 0;
        explicit_bzero(data, len);
        free(data);
    }
    E.ldap = (struct mdm_ldap_options){
        .url = c->ldap_url,
        .starttls = c->ldap_starttls,
        .allow_plaintext = c->ldap_allow_plaintext,
        .ca_file = ca,
        .bind_dn = c->ldap_bind_dn,
        .bind_password = E.ldap_password ? E.ldap_password : "",
        .base_dn = c->ldap_base_dn,
        .user_filter = c->ldap_user_filter,
        .group_attr = c->ldap_group_attr,
        .group_filter = c->ldap_group_filter,
        .group_base_dn = c->ldap_group_base_dn,
        .timeout_ms = (unsigned)c->ldap_timeout_ms,
    };
    char err[300] = "";
    if (mdm_ldap_options_check(&E.ldap, err, sizeof(err)) != 0) {
        mdm_error("enroll", "[ldap]: %s", err);
        return MDM_ECONFIG;
    }
    E.have_ldap = true;
    return 0;
}

int mdm_enroll_start(const struct mdm_enroll_options *o)
{
    const mdm_config_t *c = o->cfg;
    E.cfg = c;
    E.store = o->store;
    snprintf(E.instance, sizeof(E.instance), "%s", c->instance);
    E.argon2 = (struct mdm_argon2_params){
        .t_cost = (uint32_t)c->argon2_iterations,
        .m_cost_kib = (uint32_t)c->argon2_memory_kib,
        .parallelism = 1,
    };
    mdm_enroll_identifier_prefix(c->instance, E.id_prefix, sizeof(E.id_prefix));
    if (c->client_cert == MDM_CLIENT_CERT_REQUIRED)
        mdm_warn("enroll", "server.client_cert = required: Macs without an identity cannot "
                           "reach SCEP or the enrollment pages on the device listener");
    int ret = load_ldap(c);
    if (ret != 0)
        return ret;
    E.ready = load_pki(c) == 0;
    E.dl = calloc(DOWNLOADS_MAX, sizeof(*E.dl));
    if (!E.dl)
        return -ENOMEM;
    /* Each worker frees the per-thread ECC caches wolfCrypt keeps after EC signing. */
    ret = mdm_workers_new(&E.pool, (unsigned)c->enroll_threads, "mdm-enroll",
                          mdm_tls_thread_cleanup);
    if (ret != 0)
        mdm_error("enroll", "cannot start the enrollment workers: %s", mdm_strerror(ret));
    return ret;
}

void mdm_enroll_stop(void)
{
    mdm_workers_t *pool = E.pool;
    mdm_workers_free(pool); /* runs what is queued: those jobs still reach the store */
    E.pool = NULL;
    if (E.dl) {
        for (size_t i = 0; i < DOWNLOADS_MAX; i++)
            download_clear(&E.dl[i]);
        free(E.dl);
        E.dl = NULL;
    }
    free(E.ca_der);
    free(E.ra_der);
    if (E.ca_key_der)
        mdm_free_wiped(E.ca_key_der, E.ca_key_len);
    if (E.ra_key_der)
        mdm_free_wiped(E.ra_key_der, E.ra_key_len);
    E.ca_der = E.ra_der = E.ca_key_der = E.ra_key_der = NULL;
    mdm_buf_dispose(&E.ca_ra_certs);
    mdm_cms_trust_free(E.trust);
    E.trust = NULL;
    if (E.ldap_password) {
        explicit_bzero(E.ldap_password, strlen(E.ldap_password));
        free(E.ldap_password);
        E.ldap_password = NULL;
    }
    E.have_ldap = false;
    E.ready = false;
    E.store = NULL;
}
