/*
 * actors/auth: argon2id password/PIN hashes and LDAP sign-on (see auth.h).
 *
 * Hashing: libargon2's encoded API. Before verifying, the parameters of the encoded string are
 * parsed and bounded, so a damaged record cannot make a sign-on allocate gigabytes.
 *
 * LDAP: one connection (LDAP handle) per call, closed before returning; nothing is cached, so
 * calls are independent and reentrant (libldap 2.5 is thread-safe per handle). TLS settings
 * are set on the handle and made effective with a new per-handle TLS context
 * (LDAP_OPT_X_TLS_NEWCTX), never process-wide. The whole call runs against one deadline:
 * before each step LDAP_OPT_NETWORK_TIMEOUT (connect, TLS handshake) and LDAP_OPT_TIMEOUT
 * (synchronous operations) are set to the time left, and an I/O layer under TLS bounds every
 * read and write by the deadline (see "deadline layer" below: libldap's own timeouts do not
 * cover the TLS handshake). libldap result codes are mapped to the four outcomes in one place
 * (classify()).
 *
 * Threads: any worker thread; BLOCKING (never a shard thread).
 */
#include "actors/auth.h"

#include <argon2.h>
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <ldap.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "core/crypto.h"
#include "storage/enroll.h"

#define SALT_LEN 16
#define HASH_LEN 32

#define T_MAX 16
#define M_MAX_KIB (1024u * 1024u) /* 1 GiB */
#define P_MAX 8

_Static_assert(MDM_AUTH_ENCODED_MAX <= MDM_PASSWORD_HASH_MAX,
               "encoded hashes fit the stored records");

const struct mdm_argon2_params mdm_argon2_defaults = {
    .t_cost = 3,
    .m_cost_kib = 64 * 1024,
    .parallelism = 1,
};

/* ---- argon2id ------------------------------------------------------------------------------- */

static bool params_ok(const struct mdm_argon2_params *p)
{
    return p->t_cost >= 1 && p->t_cost <= T_MAX && p->parallelism >= 1 &&
           p->parallelism <= P_MAX && p->m_cost_kib >= 8 * p->parallelism &&
           p->m_cost_kib <= M_MAX_KIB;
}

static int map_argon2(int rc)
{
    switch (rc) {
    case ARGON2_OK: return 0;
    case ARGON2_VERIFY_MISMATCH: return -EACCES;
    case ARGON2_MEMORY_ALLOCATION_ERROR: return -ENOMEM;
    case ARGON2_DECODING_FAIL:
    case ARGON2_INCORRECT_TYPE:
    case ARGON2_DECODING_LENGTH_FAIL: return -EINVAL;
    default: return MDM_ECRYPTO;
    }
}

int mdm_password_hash(const struct mdm_argon2_params *params, const void *password, size_t len,
                      char *out, size_t size)
{
    assert(out && size > 0);
    assert(password || len == 0);
    out[0] = 0;
    const struct mdm_argon2_params *p = params ? params : &mdm_argon2_defaults;
    if (len < MDM_PASSWORD_MIN || len > MDM_PASSWORD_MAX || !params_ok(p))
        return -EINVAL;
    size_t need = argon2_encodedlen(p->t_cost, p->m_cost_kib, p->parallelism, SALT_LEN,
                                    HASH_LEN, Argon2_id);
    assert(need <= MDM_AUTH_ENCODED_MAX + 1); /* argon2_encodedlen counts the NUL */
    if (need > size)
        return MDM_ETOOBIG;
    uint8_t salt[SALT_LEN];
    int ret = mdm_random_bytes(salt, sizeof(salt));
    if (ret != 0)
        return ret;
    ret = map_argon2(argon2id_hash_encoded(p->t_cost, p->m_cost_kib, p->parallelism, password,
                                           len, salt, sizeof(salt), HASH_LEN, out, size));
    if (ret != 0)
        out[0] = 0;
    return ret == -EINVAL ? MDM_ECRYPTO : ret;
}

/* Parses the parameters of "$argon2id$v=19$m=M,t=T,p=P$..." strictly (digits only). */
static bool encoded_params(const char *enc, struct mdm_argon2_params *p)
{
    static const char head[] = "$argon2id$v=19$m=";
    if (strnlen(enc, MDM_AUTH_ENCODED_MAX + 1) > MDM_AUTH_ENCODED_MAX ||
        strncmp(enc, head, sizeof(head) - 1) != 0)
        return false;
    const char *s = enc + sizeof(head) - 1;
    uint32_t *fields[] = {&p->m_cost_kib, &p->t_cost, &p->parallelism};
    static const char *const after[] = {",t=", ",p=", "$"};
    for (size_t i = 0; i < MDM_ARRAY_LEN(fields); i++) {
        uint64_t v = 0;
        size_t digits = 0;
        for (; *s >= '0' && *s <= '9' && digits < 10; s++, digits++)
            v = v * 10 + (uint64_t)(*s - '0');
        if (digits == 0 || v > UINT32_MAX || strncmp(s, after[i], strlen(after[i])) != 0)
            return false;
        *fields[i] = (uint32_t)v;
        s += strlen(after[i]);
    }
    return params_ok(p);
}

int mdm_password_verify(const char *encoded, const void *password, size_t len)
{
    assert(encoded);
    assert(password || len == 0);
    if (len < MDM_PASSWORD_MIN || len > MDM_PASSWORD_MAX)
        return -EACCES;
    struct mdm_argon2_params p;
    if (!encoded_params(encoded, &p))
        return -EINVAL;
    return map_argon2(argon2id_verify(encoded, password, len));
}

void mdm_password_verify_dummy(const struct mdm_argon2_params *params)
{
    const struct mdm_argon2_params *p = params ? params : &mdm_argon2_defaults;
    if (!params_ok(p))
        return;
    static const uint8_t salt[SALT_LEN] = "mdmd-dummy-salt";
    static const char pwd[] = "dummy";
    uint8_t hash[HASH_LEN];
    (void)argon2id_hash_raw(p->t_cost, p->m_cost_kib, p->parallelism, pwd, sizeof(pwd) - 1,
                            salt, sizeof(salt), hash, sizeof(hash));
}

static bool pin_ok(const char *pin)
{
    size_t n = strnlen(pin, MDM_PIN_MAX + 1);
    if (n < MDM_PIN_MIN || n > MDM_PIN_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (pin[i] < '0' || pin[i] > '9')
            return false;
    return true;
}

int mdm_pin_hash(const struct mdm_argon2_params *params, const char *pin, char *out, size_t size)
{
    assert(pin && out && size > 0);
    if (!pin_ok(pin)) {
        out[0] = 0;
        return -EINVAL;
    }
    return mdm_password_hash(params, pin, strlen(pin), out, size);
}

int mdm_pin_verify(const char *encoded, const char *pin)
{
    assert(encoded && pin);
    if (!pin_ok(pin))
        return -EACCES;
    return mdm_password_verify(encoded, pin, strlen(pin));
}

/* ---- LDAP: options and filters --------------------------------------------------------------- */

static bool empty(const char *s)
{
    return !s || !s[0];
}

static bool has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

int mdm_ldap_options_check(const struct mdm_ldap_options *o, char *err, size_t errlen)
{
    assert(o);
    if (empty(o->url)) {
        mdm_errf(err, errlen, "LDAP: no URL");
        return MDM_LDAP_ECONFIG;
    }
    bool ldaps = has_prefix_ci(o->url, "ldaps://");
    if (!ldaps && !has_prefix_ci(o->url, "ldap://")) {
        mdm_errf(err, errlen, "LDAP: URL must start with ldap:// or ldaps://");
        return MDM_LDAP_ECONFIG;
    }
    if (strpbrk(o->url, " \t,")) {
        mdm_errf(err, errlen, "LDAP: one URL only");
        return MDM_LDAP_ECONFIG;
    }
    if (ldaps && o->starttls) {
        mdm_errf(err, errlen, "LDAP: StartTLS is for ldap:// URLs (ldaps:// is TLS already)");
        return MDM_LDAP_ECONFIG;
    }
    if (!ldaps && !o->starttls && !o->allow_plaintext) {
        mdm_errf(err, errlen,
                 "LDAP: ldap:// without StartTLS would send passwords in clear; enable StartTLS "
                 "or use ldaps://");
        return MDM_LDAP_ECONFIG;
    }
    if (empty(o->base_dn)) {
        mdm_errf(err, errlen, "LDAP: no base DN");
        return MDM_LDAP_ECONFIG;
    }
    if (empty(o->user_filter) || !strstr(o->user_filter, "%s")) {
        mdm_errf(err, errlen, "LDAP: the user filter needs %%s (the user name)");
        return MDM_LDAP_ECONFIG;
    }
    if (!empty(o->bind_dn) && empty(o->bind_password)) {
        mdm_errf(err, errlen, "LDAP: bind DN without a password");
        return MDM_LDAP_ECONFIG;
    }
    return 0;
}

int mdm_ldap_escape_filter(const char *value, size_t len, char *out, size_t size)
{
    assert((value || len == 0) && out && size > 0);
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        bool esc = c == '*' || c == '(' || c == ')' || c == '\\' || c < 0x20 || c == 0x7f;
        if (n + (esc ? 3 : 1) >= size) {
            out[0] = 0;
            return MDM_ETOOBIG;
        }
        if (esc) {
            out[n++] = '\\';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = 0;
    return 0;
}

/* Expands tmpl: "%s" -> escaped s, "%u" -> escaped u (when u is non-NULL); other text as is.
 * Returns a malloc'ed filter or NULL (-ENOMEM). */
static char *expand_filter(const char *tmpl, const char *s, const char *u)
{
    size_t slen = strlen(s), ulen = u ? strlen(u) : 0;
    size_t cap = strlen(tmpl) + 1, n = 0;
    for (const char *p = tmpl; *p; p++)
        if (p[0] == '%' && (p[1] == 's' || (u && p[1] == 'u')))
            cap += 3 * (p[1] == 's' ? slen : ulen);
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (const char *p = tmpl; *p;) {
        if (p[0] == '%' && (p[1] == 's' || (u && p[1] == 'u'))) {
            const char *v = p[1] == 's' ? s : u;
            int ret = mdm_ldap_escape_filter(v, strlen(v), out + n, cap - n);
            assert(ret == 0); /* cap counts 3 bytes per escaped byte */
            (void)ret;
            n += strlen(out + n);
            p += 2;
        } else {
            out[n++] = *p++;
        }
    }
    assert(n < cap);
    out[n] = 0;
    return out;
}

/* ---- LDAP: one sign-on ----------------------------------------------------------------------- */

/* The state of one mdm_ldap_authenticate() call. */
struct ldap_call {
    const struct mdm_ldap_options *o;
    LDAP *ld;
    uint64_t deadline_ms; /* mdm_now_ms() clock */
    bool timed_out;       /* the deadline layer refused a read or write */
    ldap_conncb conn_cb;  /* installs the deadline layer; borrowed by ld */
    char *err;
    size_t errlen;
};

/*
 * The deadline layer: an lber I/O layer between TLS and TCP that waits (poll) for the socket
 * before every read and write, and fails them with ETIMEDOUT once the call's deadline has
 * passed. It exists because LDAP_OPT_NETWORK_TIMEOUT does not bound the TLS handshake of
 * libldap 2.5 with GnuTLS: with a sub-second timeout the handshake reads a blocking socket
 * forever, with a longer one it spins on EAGAIN forever (against a server that accepts the
 * connection but never answers). With the layer the handshake fails (GnuTLS pull error),
 * libldap reports LDAP_SERVER_DOWN and we report MDM_LDAP_EUNAVAILABLE.
 */
static int wait_socket(Sockbuf_IO_Desc *sbiod, short events)
{
    struct ldap_call *c = sbiod->sbiod_pvt;
    ber_socket_t fd = -1;
    if (ber_sockbuf_ctrl(sbiod->sbiod_sb, LBER_SB_OPT_GET_FD, &fd) != 1 || fd < 0) {
        errno = EBADF;
        return -1;
    }
    for (;;) {
        uint64_t now = mdm_now_ms();
        if (now >= c->deadline_ms)
            break;
        uint64_t left = c->deadline_ms - now;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n > 0) /* ready, or an error/hang-up that the read or write reports */
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
    c->timed_out = true;
    errno = ETIMEDOUT;
    return -1;
}

static int deadline_setup(Sockbuf_IO_Desc *sbiod, void *arg)
{
    sbiod->sbiod_pvt = arg;
    return 0;
}

static int deadline_remove(Sockbuf_IO_Desc *sbiod)
{
    sbiod->sbiod_pvt = NULL;
    return 0;
}

static int deadline_ctrl(Sockbuf_IO_Desc *sbiod, int opt, void *arg)
{
    return LBER_SBIOD_CTRL_NEXT(sbiod, opt, arg);
}

static ber_slen_t deadline_read(Sockbuf_IO_Desc *sbiod, void *buf, ber_len_t len)
{
    if (wait_socket(sbiod, POLLIN) != 0)
        return -1;
    return LBER_SBIOD_READ_NEXT(sbiod, buf, len);
}

static ber_slen_t deadline_write(Sockbuf_IO_Desc *sbiod, void *buf, ber_len_t len)
{
    if (wait_socket(sbiod, POLLOUT) != 0)
        return -1;
    return LBER_SBIOD_WRITE_NEXT(sbiod, buf, len);
}

static Sockbuf_IO deadline_io = {
    .sbi_setup = deadline_setup,
    .sbi_remove = deadline_remove,
    .sbi_ctrl = deadline_ctrl,
    .sbi_read = deadline_read,
    .sbi_write = deadline_write,
};

/* Called by libldap once connected. The TCP layer is added after this callback (at
 * LBER_SBIOD_LEVEL_PROVIDER) and TLS later (at LBER_SBIOD_LEVEL_TRANSPORT, above layers of
 * its own level): at TRANSPORT level ours ends up between them. */
static int on_conn_add(LDAP *ld, Sockbuf *sb, LDAPURLDesc *srv, struct sockaddr *addr,
                       struct ldap_conncb *ctx)
{
    (void)ld;
    (void)srv;
    (void)addr;
    return ber_sockbuf_add_io(sb, &deadline_io, LBER_SBIOD_LEVEL_TRANSPORT, ctx->lc_arg) == 0
               ? 0
               : -1;
}

static void on_conn_del(LDAP *ld, Sockbuf *sb, struct ldap_conncb *ctx)
{
    (void)ld;
    (void)sb; /* NULL just before the handle is freed; the layer goes with the Sockbuf */
    (void)ctx;
}

enum step { STEP_CONNECT, STEP_SERVICE_BIND, STEP_SEARCH, STEP_USER_BIND, STEP_GROUPS };

static const char *step_name(enum step s)
{
    switch (s) {
    case STEP_CONNECT: return "connect";
    case STEP_SERVICE_BIND: return "service bind";
    case STEP_SEARCH: return "user search";
    case STEP_USER_BIND: return "user bind";
    case STEP_GROUPS: return "group search";
    }
    return "?";
}

/* Maps a libldap result code of a step to an outcome and fills err (with the server's
 * diagnostic message when it sent one). The only place that interprets LDAP codes. */
static int classify(struct ldap_call *c, enum step step, int rc)
{
    int ret;
    switch (rc) {
    case LDAP_SUCCESS: return 0;
    case LDAP_NO_MEMORY: ret = -ENOMEM; break;
    /* The directory cannot be reached or does not answer in time. */
    case LDAP_SERVER_DOWN:
    case LDAP_CONNECT_ERROR:
    case LDAP_TIMEOUT:
    case LDAP_TIMELIMIT_EXCEEDED:
    case LDAP_BUSY:
    case LDAP_UNAVAILABLE:
    case LDAP_OTHER: ret = MDM_LDAP_EUNAVAILABLE; break;
    /* The user's credentials are refused (account locked, expired, disabled included). */
    case LDAP_INVALID_CREDENTIALS:
    case LDAP_INAPPROPRIATE_AUTH:
    case LDAP_UNWILLING_TO_PERFORM:
    case LDAP_CONSTRAINT_VIOLATION:
    case LDAP_INVALID_DN_SYNTAX:
        ret = step == STEP_USER_BIND ? MDM_LDAP_EBADCRED : MDM_LDAP_ECONFIG;
        break;
    /* Everything else: bad base DN (noSuchObject), filter, protocol, insufficient access. */
    default: ret = MDM_LDAP_ECONFIG; break;
    }
    if (c->timed_out)
        ret = MDM_LDAP_EUNAVAILABLE;
    char *diag = NULL;
    if (c->ld)
        (void)ldap_get_option(c->ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
    mdm_errf(c->err, c->errlen, "LDAP %s: %s%s%s%s", step_name(step), ldap_err2string(rc),
             c->timed_out ? " (timed out)" : "", diag && diag[0] ? ": " : "",
             diag && diag[0] ? diag : "");
    ldap_memfree(diag);
    return ret;
}

/* Sets both timeouts to the time left (also into *tv_out when non-NULL);
 * MDM_LDAP_EUNAVAILABLE when none is left. */
static int arm_timeouts(struct ldap_call *c, enum step step, struct timeval *tv_out)
{
    uint64_t now = mdm_now_ms();
    if (now >= c->deadline_ms) {
        mdm_errf(c->err, c->errlen, "LDAP %s: timed out", step_name(step));
        return MDM_LDAP_EUNAVAILABLE;
    }
    uint64_t left = c->deadline_ms - now;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000),
                         .tv_usec = (suseconds_t)(left % 1000) * 1000};
    if (ldap_set_option(c->ld, LDAP_OPT_NETWORK_TIMEOUT, &tv) != LDAP_OPT_SUCCESS ||
        ldap_set_option(c->ld, LDAP_OPT_TIMEOUT, &tv) != LDAP_OPT_SUCCESS) {
        mdm_errf(c->err, c->errlen, "LDAP: cannot set timeouts");
        return MDM_LDAP_ECONFIG;
    }
    if (tv_out)
        *tv_out = tv;
    return 0;
}

static int set_opt(struct ldap_call *c, int option, const void *value, const char *what)
{
    int rc = ldap_set_option(c->ld, option, value);
    if (rc == LDAP_OPT_SUCCESS)
        return 0;
    mdm_errf(c->err, c->errlen, "LDAP: cannot set %s (%s)", what, ldap_err2string(rc));
    return rc == LDAP_NO_MEMORY ? -ENOMEM : MDM_LDAP_ECONFIG;
}

/* Creates the handle with its options and TLS context; StartTLS when configured. */
static int ldap_open(struct ldap_call *c)
{
    const struct mdm_ldap_options *o = c->o;
    int rc = ldap_initialize(&c->ld, o->url);
    if (rc != LDAP_SUCCESS) {
        c->ld = NULL;
        mdm_errf(c->err, c->errlen, "LDAP: bad URL \"%s\" (%s)", o->url, ldap_err2string(rc));
        return rc == LDAP_NO_MEMORY ? -ENOMEM : MDM_LDAP_ECONFIG;
    }
    static const int version = LDAP_VERSION3;
    static const int require = LDAP_OPT_X_TLS_DEMAND;
    static const int tls_min = LDAP_OPT_X_TLS_PROTOCOL_TLS1_2;
    static const int new_client_ctx = 0;
    int ret;
    c->conn_cb = (ldap_conncb){.lc_add = on_conn_add, .lc_del = on_conn_del, .lc_arg = c};
    if ((ret = set_opt(c, LDAP_OPT_PROTOCOL_VERSION, &version, "protocol version")) != 0 ||
        (ret = set_opt(c, LDAP_OPT_CONNECT_CB, &c->conn_cb, "connect callback")) != 0 ||
        (ret = set_opt(c, LDAP_OPT_REFERRALS, LDAP_OPT_OFF, "referrals")) != 0 ||
        (ret = set_opt(c, LDAP_OPT_RESTART, LDAP_OPT_ON, "restart")) != 0 ||
        (ret = set_opt(c, LDAP_OPT_X_TLS_REQUIRE_CERT, &require, "TLS verification")) != 0 ||
        (ret = set_opt(c, LDAP_OPT_X_TLS_PROTOCOL_MIN, &tls_min, "TLS version")) != 0)
        return ret;
    if (!empty(o->ca_file) &&
        (ret = set_opt(c, LDAP_OPT_X_TLS_CACERTFILE, o->ca_file, "CA file")) != 0)
        return ret;
    /* Makes the handle's TLS settings effective (a per-handle context; fails on a bad CA
     * file). */
    if ((ret = set_opt(c, LDAP_OPT_X_TLS_NEWCTX, &new_client_ctx, "TLS context")) != 0)
        return ret;
    if (!o->starttls)
        return 0;
    if ((ret = arm_timeouts(c, STEP_CONNECT, NULL)) != 0)
        return ret;
    rc = ldap_start_tls_s(c->ld, NULL, NULL);
    if (rc == LDAP_SUCCESS)
        return 0;
    /* A refused StartTLS or a failed handshake: the directory cannot be used safely. */
    ret = classify(c, STEP_CONNECT, rc);
    return ret == -ENOMEM ? ret : MDM_LDAP_EUNAVAILABLE;
}

static int simple_bind(struct ldap_call *c, enum step step, const char *dn, const char *password)
{
    int ret = arm_timeouts(c, step, NULL);
    if (ret != 0)
        return ret;
    struct berval cred = {.bv_len = strlen(password), .bv_val = (char *)(uintptr_t)password};
    return classify(c, step, ldap_sasl_bind_s(c->ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL,
                                              NULL));
}

/* Searches the subtree of base; *res is set (free with ldap_msgfree) also on some errors. */
static int search(struct ldap_call *c, enum step step, const char *base, const char *filter,
                  char **attrs, int sizelimit, LDAPMessage **res, bool *truncated)
{
    *res = NULL;
    *truncated = false;
    struct timeval tv;
    int ret = arm_timeouts(c, step, &tv);
    if (ret != 0)
        return ret;
    int rc = ldap_search_ext_s(c->ld, base, LDAP_SCOPE_SUBTREE, filter, attrs, 0, NULL, NULL, &tv,
                               sizelimit, res);
    if (rc == LDAP_SIZELIMIT_EXCEEDED) {
        *truncated = true;
        return 0;
    }
    return classify(c, step, rc);
}

/* Copies at most size - 1 bytes of v into dst, cut at a UTF-8 character boundary; control
 * bytes become '?'. */
static void copy_text(char *dst, size_t size, const struct berval *v)
{
    size_t n = v->bv_len < size ? v->bv_len : size - 1;
    if (n < v->bv_len) /* cut: do not end inside a multi-byte character */
        while (n > 0 && ((unsigned char)v->bv_val[n] & 0xc0) == 0x80)
            n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v->bv_val[i];
        dst[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    dst[n] = 0;
}

/* The first value of attr into dst (""); true when there was one. */
static bool first_value(LDAP *ld, LDAPMessage *entry, const char *attr, char *dst, size_t size)
{
    struct berval **vals = ldap_get_values_len(ld, entry, attr);
    bool found = vals && vals[0];
    if (found)
        copy_text(dst, size, vals[0]);
    ldap_value_free_len(vals);
    return found;
}

static void add_group(mdm_ldap_user_t *u, const char *name, size_t len)
{
    if (len == 0)
        return;
    if (len >= sizeof(u->groups[0]) || memchr(name, 0, len)) {
        u->groups_truncated = true;
        return;
    }
    for (unsigned i = 0; i < u->n_groups; i++)
        if (strlen(u->groups[i]) == len && memcmp(u->groups[i], name, len) == 0)
            return;
    if (u->n_groups == MDM_LDAP_GROUPS_MAX) {
        u->groups_truncated = true;
        return;
    }
    struct berval v = {.bv_len = len, .bv_val = (char *)(uintptr_t)name};
    copy_text(u->groups[u->n_groups++], sizeof(u->groups[0]), &v);
}

/* A group_attr value: the first RDN's value of a DN ("cn=staff,ou=groups,..." -> "staff"),
 * else the value itself. */
static void add_group_value(mdm_ldap_user_t *u, const struct berval *v)
{
    LDAPDN dn = NULL;
    if (ldap_bv2dn((struct berval *)(uintptr_t)v, &dn, LDAP_DN_FORMAT_LDAPV3) == LDAP_SUCCESS &&
        dn && dn[0] && dn[0][0]) {
        add_group(u, dn[0][0]->la_value.bv_val, dn[0][0]->la_value.bv_len);
    } else {
        add_group(u, v->bv_val, v->bv_len);
    }
    if (dn)
        ldap_dnfree(dn);
}

/* Reads DN, names, mail and group_attr groups of the single entry of res. */
static int read_user(struct ldap_call *c, LDAPMessage *res, mdm_ldap_user_t *out)
{
    LDAPMessage *entry = ldap_first_entry(c->ld, res);
    assert(entry);
    char *dn = ldap_get_dn(c->ld, entry);
    if (!dn) {
        mdm_errf(c->err, c->errlen, "LDAP user search: entry without a DN");
        return MDM_LDAP_ECONFIG;
    }
    size_t dnlen = strlen(dn);
    int ret = 0;
    if (dnlen == 0 || dnlen >= sizeof(out->dn)) {
        /* An empty DN would make the password bind an anonymous one. */
        mdm_errf(c->err, c->errlen, "LDAP user search: unusable DN (%zu bytes)", dnlen);
        ret = MDM_LDAP_EBADCRED;
    } else {
        memcpy(out->dn, dn, dnlen + 1);
    }
    ldap_memfree(dn);
    if (ret != 0)
        return ret;
    if (!first_value(c->ld, entry, "displayName", out->display_name, sizeof(out->display_name)))
        (void)first_value(c->ld, entry, "cn", out->display_name, sizeof(out->display_name));
    (void)first_value(c->ld, entry, "mail", out->email, sizeof(out->email));
    if (!empty(c->o->group_attr)) {
        struct berval **vals = ldap_get_values_len(c->ld, entry, c->o->group_attr);
        for (size_t i = 0; vals && vals[i]; i++)
            add_group_value(out, vals[i]);
        ldap_value_free_len(vals);
    }
    return 0;
}

static int search_groups(struct ldap_call *c, const char *user, mdm_ldap_user_t *out)
{
    const struct mdm_ldap_options *o = c->o;
    char *filter = expand_filter(o->group_filter, out->dn, user);
    if (!filter)
        return -ENOMEM;
    char *attrs[] = {"cn", NULL};
    LDAPMessage *res = NULL;
    bool truncated;
    int ret = search(c, STEP_GROUPS, empty(o->group_base_dn) ? o->base_dn : o->group_base_dn,
                     filter, attrs, MDM_LDAP_GROUPS_MAX + 1, &res, &truncated);
    free(filter);
    if (ret == 0) {
        out->groups_truncated |= truncated;
        for (LDAPMessage *e = ldap_first_entry(c->ld, res); e; e = ldap_next_entry(c->ld, e)) {
            struct berval **vals = ldap_get_values_len(c->ld, e, "cn");
            if (vals && vals[0])
                add_group(out, vals[0]->bv_val, vals[0]->bv_len);
            ldap_value_free_len(vals);
        }
    }
    ldap_msgfree(res);
    return ret;
}

int mdm_ldap_authenticate(const struct mdm_ldap_options *o, const char *user,
                          const char *password, mdm_ldap_user_t *out, char *err, size_t errlen)
{
    assert(o && user && password && out);
    memset(out, 0, sizeof(*out));
    if (err && errlen)
        err[0] = 0;
    struct ldap_call c = {.o = o, .err = err, .errlen = errlen};
    LDAPMessage *res = NULL;
    char *filter = NULL;
    int ret = mdm_ldap_options_check(o, err, errlen);
    if (ret != 0)
        goto out;
    size_t ulen = strnlen(user, MDM_LDAP_USER_MAX + 1), plen = strnlen(password,
                                                                         MDM_PASSWORD_MAX + 1);
    if (ulen == 0 || ulen > MDM_LDAP_USER_MAX) {
        mdm_errf(err, errlen, "LDAP: empty or too long user name");
        ret = MDM_LDAP_EBADCRED;
        goto out;
    }
    if (plen == 0 || plen > MDM_PASSWORD_MAX) {
        /* Never bind with an empty password: the server would accept it as anonymous. */
        mdm_errf(err, errlen, "LDAP: empty or too long password refused");
        ret = MDM_LDAP_EBADCRED;
        goto out;
    }
    c.deadline_ms = mdm_now_ms() + (o->timeout_ms ? o->timeout_ms : MDM_LDAP_TIMEOUT_MS_DEFAULT);
    if ((ret = ldap_open(&c)) != 0)
        goto out;
    bool service = !empty(o->bind_dn);
    if ((ret = simple_bind(&c, STEP_SERVICE_BIND, service ? o->bind_dn : "",
                           service ? o->bind_password : "")) != 0)
        goto out;

    if (!(filter = expand_filter(o->user_filter, user, NULL))) {
        ret = -ENOMEM;
        goto out;
    }
    char *attrs[] = {"cn", "displayName", "mail", (char *)(uintptr_t)o->group_attr, NULL};
    if (empty(o->group_attr))
        attrs[3] = NULL;
    bool ambiguous;
    if ((ret = search(&c, STEP_SEARCH, o->base_dn, filter, attrs, 2, &res, &ambiguous)) != 0)
        goto out;
    int n = ldap_count_entries(c.ld, res);
    if (ambiguous || n != 1) {
        mdm_errf(err, errlen, "LDAP user search: %s", n == 0 ? "no such user"
                                                              : "several entries match");
        ret = MDM_LDAP_EBADCRED;
        goto out;
    }
    if ((ret = read_user(&c, res, out)) != 0)
        goto out;

    if ((ret = simple_bind(&c, STEP_USER_BIND, out->dn, password)) != 0)
        goto out;

    if (!empty(o->group_filter)) {
        /* Read groups with the service account's rights, as the user search did. */
        if (service && (ret = simple_bind(&c, STEP_SERVICE_BIND, o->bind_dn,
                                          o->bind_password)) != 0)
            goto out;
        ret = search_groups(&c, user, out);
    }
out:
    ldap_msgfree(res);
    free(filter);
    if (c.ld)
        ldap_unbind_ext_s(c.ld, NULL, NULL);
    if (ret != 0)
        memset(out, 0, sizeof(*out));
    return ret;
}
