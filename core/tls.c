/*
 * mdm_tls: sans-I/O TLS over wolfSSL (see tls.h).
 *
 * Design: wolfSSL is given custom I/O callbacks (set once on the WOLFSSL_CTX) whose context is
 * the mdm_tls_conn. recv_cb copies from cin and answers WANT_READ when it is empty (or
 * CONN_CLOSE after the peer's EOF); send_cb appends to cout and answers WANT_WRITE when cout
 * is at its cap. Nothing here touches a file descriptor, a clock or a thread: the loop moves
 * ciphertext, this file only transforms it. This is the memory-BIO shape of h2o's socket.c.
 *
 * Invariants:
 *  - cin, cout and plain_in never exceed their max (mdm_buf enforces it);
 *  - mdm_tls_write is all-or-nothing: it checks the room in cout before calling wolfSSL_write,
 *    so wolfSSL never holds a half-sent record that a later call would have to repeat;
 *  - once a fatal error is seen, c->failed holds it and every entry point returns it;
 *  - wolfSSL error codes are mapped to MDM_* codes only in this file (fail(), map_io_error()).
 *
 * Threads: an mdm_tls_ctx is written only while it is created, then shared read-only by the
 * shard threads (wolfSSL_new takes the context's lock for its reference count; the session
 * cache and the default ticket-key callback lock internally). A connection belongs to the
 * thread that drives it.
 */
#include "core/tls.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>

#include <wolfssl/error-ssl.h>
#include <wolfssl/openssl/evp.h>
#include <wolfssl/openssl/pem.h>
#include <wolfssl/openssl/x509v3.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "core/log.h"

#define LOG_MOD "tls"

/* AEAD suites only, ECDHE only; wolfSSL names. TLS 1.3 suites first (ignored by 1.2 peers). */
static const char CIPHER_LIST[] = "TLS13-AES128-GCM-SHA256:"
                                  "TLS13-AES256-GCM-SHA384:"
                                  "TLS13-CHACHA20-POLY1305-SHA256:"
                                  "ECDHE-ECDSA-AES128-GCM-SHA256:"
                                  "ECDHE-ECDSA-AES256-GCM-SHA384:"
                                  "ECDHE-ECDSA-CHACHA20-POLY1305:"
                                  "ECDHE-RSA-AES128-GCM-SHA256:"
                                  "ECDHE-RSA-AES256-GCM-SHA384:"
                                  "ECDHE-RSA-CHACHA20-POLY1305";

#define ALPN_WIRE_MAX 256 /* bytes of length-prefixed protocol names (server preference list) */
#define ALPN_NAME_MAX 255 /* longest protocol name ALPN can carry */

struct mdm_tls_ctx {
    WOLFSSL_CTX *wctx;
    bool is_server;
    bool verify_peer;      /* client: a CA file was given, so certificates are checked */
    size_t cipher_in_max;  /* bytes, per connection */
    size_t cipher_out_max; /* bytes, per connection */
    size_t plain_in_max;   /* bytes, per connection */
    /* server: ALPN preference list in wire form (len byte + name)*; read by on_alpn_select */
    uint8_t alpn_wire[ALPN_WIRE_MAX];
    size_t alpn_wire_len;
    /* client: the protocol offered, "" = none */
    char alpn_offer[ALPN_NAME_MAX + 1];
};

struct mdm_tls_conn {
    WOLFSSL *ssl;
    mdm_tls_ctx_t *ctx; /* borrowed; outlives the connection */
    mdm_buf_t cin;      /* ciphertext from the network, drained by recv_cb */
    mdm_buf_t cout;     /* ciphertext for the network, filled by send_cb */
    mdm_buf_t plain_in; /* decrypted bytes for the upper layer */
    int failed;         /* 0, or the sticky MDM_ETLS / MDM_ECLOSED / -ENOMEM */
    bool eof;           /* the peer closed its side of the transport */
    bool handshake_done;
    bool resumed;
    bool shutdown_queued; /* close_notify is in cout (or was refused before the handshake) */
    size_t rec_plain_max; /* plaintext bytes per record (set at handshake end) */
    size_t rec_overhead;  /* ciphertext bytes added per record (header, tag, ...) */
    struct mdm_tls_peer peer;
    uint8_t *peer_der;            /* owned copy behind peer.der */
    char alpn[ALPN_NAME_MAX + 1]; /* negotiated protocol, "" = none */
    uint8_t verify_ip[16];        /* client: address an IP SAN of the leaf must carry */
    size_t verify_ip_len;         /* 4 or 16 when the server name is an IP literal, else 0 */
    char last_error[160];
};

/* ---- process-wide init ---- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_result = MDM_ETLS;

static void do_global_init(void) { init_result = wolfSSL_Init() == WOLFSSL_SUCCESS ? 0 : MDM_ETLS; }

int mdm_tls_global_init(void)
{
    pthread_once(&init_once, do_global_init);
    if (init_result != 0)
        mdm_error(LOG_MOD, "wolfSSL_Init failed");
    return init_result;
}

void mdm_tls_thread_cleanup(void) { wc_ecc_fp_free(); }

void mdm_tls_global_cleanup(void)
{
    wc_ecc_fp_free();
    wolfSSL_Cleanup();
}

/* ---- error mapping (the only place wolfSSL codes become MDM codes) ---- */

static const char *side_name(const struct mdm_tls_conn *c)
{
    return c->ctx->is_server ? "server" : "client";
}

/* Text for a wolfSSL error code (negative internal code or an OpenSSL-style one). */
static void reason_text(int err, char *out, size_t out_len)
{
    wolfSSL_ERR_error_string_n((unsigned long)(long)err, out, (unsigned long)out_len);
}

/* Records a fatal error; returns the code every later call will return. */
static int fail(struct mdm_tls_conn *c, int err, const char *stage)
{
    char reason[96];
    reason_text(err, reason, sizeof(reason));
    int n = snprintf(c->last_error, sizeof(c->last_error), "%s: %s (%d)", stage, reason, err);
    WOLFSSL_ALERT_HISTORY h;
    if (err == FATAL_ERROR && n > 0 && (size_t)n < sizeof(c->last_error) &&
        wolfSSL_get_alert_history(c->ssl, &h) == WOLFSSL_SUCCESS && h.last_rx.code >= 0)
        snprintf(c->last_error + n, sizeof(c->last_error) - (size_t)n, ", peer alert %d",
                 h.last_rx.code);
    long vr = wolfSSL_get_verify_result(c->ssl);
    mdm_debug(LOG_MOD, "%s: %s (verify result %ld)", side_name(c), c->last_error, vr);
    /* wolfSSL's compat layer queues errors per thread; nobody reads that queue. */
    wolfSSL_ERR_clear_error();
    c->failed = MDM_ETLS;
    return c->failed;
}

/* Records a fatal error found by this layer rather than reported by wolfSSL. */
static int fail_text(struct mdm_tls_conn *c, const char *stage, const char *text)
{
    snprintf(c->last_error, sizeof(c->last_error), "%s: %s", stage, text);
    mdm_debug(LOG_MOD, "%s: %s", side_name(c), c->last_error);
    wolfSSL_ERR_clear_error();
    c->failed = MDM_ETLS;
    return c->failed;
}

/* A return value <= 0 from accept/connect/read: 0 when it only needs more I/O, else fatal. */
static int map_io_error(struct mdm_tls_conn *c, int ret, const char *stage)
{
    int err = wolfSSL_get_error(c->ssl, ret);
    switch (err) {
    case WOLFSSL_ERROR_WANT_READ:
    case WOLFSSL_ERROR_WANT_WRITE: /* cout full: the caller drains it and advances again */
        return 0;
    case WOLFSSL_ERROR_ZERO_RETURN: /* close_notify */
        snprintf(c->last_error, sizeof(c->last_error), "%s: peer sent close_notify", stage);
        c->failed = MDM_ECLOSED;
        return c->failed;
    case SOCKET_PEER_CLOSED_E:
    case SOCKET_ERROR_E:
    case WOLFSSL_ERROR_SYSCALL:
        if (c->eof) { /* recv_cb reported the transport's EOF */
            snprintf(c->last_error, sizeof(c->last_error), "%s: transport closed", stage);
            wolfSSL_ERR_clear_error();
            c->failed = MDM_ECLOSED;
            return c->failed;
        }
        return fail(c, err, stage);
    case MEMORY_E:
        snprintf(c->last_error, sizeof(c->last_error), "%s: out of memory", stage);
        wolfSSL_ERR_clear_error();
        c->failed = -ENOMEM;
        return c->failed;
    default:
        return fail(c, err, stage);
    }
}

/* ---- I/O callbacks: the only bridge between wolfSSL and the buffers ---- */

static int recv_cb(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    (void)ssl;
    struct mdm_tls_conn *c = arg;
    if (c->cin.len == 0)
        return c->eof ? WOLFSSL_CBIO_ERR_CONN_CLOSE : WOLFSSL_CBIO_ERR_WANT_READ;
    size_t n = c->cin.len < (size_t)sz ? c->cin.len : (size_t)sz;
    memcpy(buf, mdm_buf_head(&c->cin), n);
    mdm_buf_consume(&c->cin, n);
    return (int)n;
}

static int send_cb(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    (void)ssl;
    struct mdm_tls_conn *c = arg;
    /* cout may have been swapped by the caller since the last call: read it afresh. */
    size_t room = c->cout.max ? c->cout.max - c->cout.len : (size_t)sz;
    size_t n = room < (size_t)sz ? room : (size_t)sz;
    if (n == 0)
        return WOLFSSL_CBIO_ERR_WANT_WRITE;
    /* wolfSSL retries the rest of a partial send, so a short append is fine. */
    if (mdm_buf_append(&c->cout, buf, n) != 0)
        return WOLFSSL_CBIO_ERR_GENERAL;
    return (int)n;
}

/* ---- contexts ---- */

/* Server-preference ALPN: the first of our protocols the client also offers. */
static int on_alpn_select(WOLFSSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const struct mdm_tls_ctx *ctx = arg;
    for (size_t i = 0; i < ctx->alpn_wire_len; i += 1 + ctx->alpn_wire[i]) {
        const uint8_t *ours = &ctx->alpn_wire[i + 1];
        uint8_t ours_len = ctx->alpn_wire[i];
        for (unsigned int j = 0; j < inlen; j += 1u + in[j]) {
            uint8_t theirs_len = in[j];
            if (j + 1u + theirs_len > inlen)
                break; /* malformed list: wolfSSL rejects it too */
            if (theirs_len == ours_len && memcmp(&in[j + 1], ours, ours_len) == 0) {
                *out = &in[j + 1];
                *outlen = theirs_len;
                return 0; /* SSL_TLSEXT_ERR_OK */
            }
        }
    }
    return noack_return; /* no overlap: carry on without ALPN */
}

static int ctx_alloc(mdm_tls_ctx_t **out, bool is_server, size_t cin_max, size_t cout_max,
                     size_t plain_max)
{
    int ret = mdm_tls_global_init();
    if (ret != 0)
        return ret;
    mdm_tls_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return -ENOMEM;
    ctx->is_server = is_server;
    ctx->cipher_in_max = cin_max ? cin_max : MDM_TLS_CIPHER_IN_MAX_DEFAULT;
    ctx->cipher_out_max = cout_max ? cout_max : MDM_TLS_CIPHER_OUT_MAX_DEFAULT;
    ctx->plain_in_max = plain_max ? plain_max : MDM_TLS_PLAIN_IN_MAX_DEFAULT;
    WOLFSSL_METHOD *method = is_server ? wolfSSLv23_server_method() : wolfSSLv23_client_method();
    ctx->wctx = method ? wolfSSL_CTX_new(method) : NULL;
    if (!ctx->wctx) {
        free(ctx);
        return -ENOMEM;
    }
    *out = ctx;
    return 0;
}

/* Settings common to both sides: versions, groups, suites, I/O callbacks. */
static int ctx_common(mdm_tls_ctx_t *ctx)
{
    WOLFSSL_CTX *w = ctx->wctx;
    int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1};
    if (wolfSSL_CTX_SetMinVersion(w, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS) {
        mdm_error(LOG_MOD, "cannot set the minimum version to TLS 1.2");
        return MDM_ETLS;
    }
    if (wolfSSL_CTX_set_groups(w, groups, (int)MDM_ARRAY_LEN(groups)) != WOLFSSL_SUCCESS) {
        mdm_error(LOG_MOD, "cannot set the key exchange groups");
        return MDM_ETLS;
    }
    if (wolfSSL_CTX_set_cipher_list(w, CIPHER_LIST) != WOLFSSL_SUCCESS) {
        mdm_error(LOG_MOD, "cannot set the cipher list");
        return MDM_ETLS;
    }
    wolfSSL_CTX_SetIORecv(w, recv_cb);
    wolfSSL_CTX_SetIOSend(w, send_cb);
    return 0;
}

/* Fails early, with the OS reason, on a file that is missing or unreadable. */
static int check_readable(const char *what, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        mdm_error(LOG_MOD, "cannot open %s %s: %s", what, path, strerror(errno));
        return MDM_ETLS;
    }
    fclose(f);
    return 0;
}

static void log_load_error(const char *what, const char *path, int ret)
{
    mdm_error(LOG_MOD, "cannot load %s from %s: not valid PEM or unsupported (wolfSSL %d)", what,
              path, ret);
    wolfSSL_ERR_clear_error();
}

/*
 * Signs a test message with the key and verifies it with the certificate's public key.
 * wolfSSL_CTX_check_private_key (5.5) accepts a mismatched ECDSA key, which would only show
 * up as every handshake failing. RSA and EC keys are checked; other types are left to
 * wolfSSL. Returns 0 or MDM_ETLS (logged).
 */
static int check_key_pair(const char *cert_path, const char *key_path)
{
    static const char msg[] = "mdmd key pair check";
    uint8_t sig[1024]; /* RSA-8192 or any ECDSA signature fits */
    size_t sig_len = sizeof(sig);
    int ok = 0;
    WOLFSSL_EVP_MD_CTX *md = NULL;
    WOLFSSL_EVP_PKEY *pub = NULL, *priv = NULL;
    WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_file(cert_path, WOLFSSL_FILETYPE_PEM);
    FILE *f = fopen(key_path, "rb");
    if (f) {
        priv = wolfSSL_PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    pub = x ? wolfSSL_X509_get_pubkey(x) : NULL;
    if (!pub || !priv)
        goto out;
    int type = wolfSSL_EVP_PKEY_base_id(pub);
    if (type != EVP_PKEY_RSA && type != EVP_PKEY_EC) {
        ok = 1;
        goto out;
    }
    if (wolfSSL_EVP_PKEY_base_id(priv) != type || !(md = wolfSSL_EVP_MD_CTX_new()))
        goto out;
    ok = wolfSSL_EVP_DigestSignInit(md, NULL, wolfSSL_EVP_sha256(), NULL, priv) == 1 &&
         wolfSSL_EVP_DigestSignUpdate(md, msg, sizeof(msg)) == 1 &&
         wolfSSL_EVP_DigestSignFinal(md, sig, &sig_len) == 1;
    wolfSSL_EVP_MD_CTX_free(md);
    md = ok ? wolfSSL_EVP_MD_CTX_new() : NULL;
    ok = md && wolfSSL_EVP_DigestVerifyInit(md, NULL, wolfSSL_EVP_sha256(), NULL, pub) == 1 &&
         wolfSSL_EVP_DigestVerifyUpdate(md, msg, sizeof(msg)) == 1 &&
         wolfSSL_EVP_DigestVerifyFinal(md, sig, sig_len) == 1;
out:
    wolfSSL_EVP_MD_CTX_free(md);
    wolfSSL_EVP_PKEY_free(pub);
    wolfSSL_EVP_PKEY_free(priv);
    wolfSSL_X509_free(x);
    wolfSSL_ERR_clear_error();
    if (!ok) {
        mdm_error(LOG_MOD, "private key %s does not match certificate %s", key_path, cert_path);
        return MDM_ETLS;
    }
    return 0;
}

/*
 * Loads a certificate chain and its key into the context. With prove_pair, also proves they
 * match with a signature (wolfSSL's own check passes mismatched ECDSA pairs); servers do,
 * since a mismatch would fail every handshake; a client's mismatch fails its own handshake
 * visibly, and the proof (a P-256 sign and verify) would dominate creating many client
 * identities (mdm-bench's simulated Macs).
 */
static int load_identity(WOLFSSL_CTX *w, const char *cert_path, const char *key_path,
                         bool prove_pair)
{
    int r;
    if ((r = check_readable("certificate chain", cert_path)) != 0 ||
        (r = check_readable("private key", key_path)) != 0)
        return r;
    r = wolfSSL_CTX_use_certificate_chain_file(w, cert_path);
    if (r != WOLFSSL_SUCCESS) {
        log_load_error("certificate chain", cert_path, r);
        return MDM_ETLS;
    }
    r = wolfSSL_CTX_use_PrivateKey_file(w, key_path, WOLFSSL_FILETYPE_PEM);
    if (r != WOLFSSL_SUCCESS) {
        log_load_error("private key", key_path, r);
        return MDM_ETLS;
    }
    if (wolfSSL_CTX_check_private_key(w) != WOLFSSL_SUCCESS) {
        wolfSSL_ERR_clear_error();
        mdm_error(LOG_MOD, "private key %s does not match certificate %s", key_path, cert_path);
        return MDM_ETLS;
    }
    return prove_pair ? check_key_pair(cert_path, key_path) : 0;
}

/* A client identity from DER buffers (certificate and its key, checked to match). */
static int load_identity_der(WOLFSSL_CTX *w, const struct mdm_tls_client_opts *o)
{
    if (o->cert_der_len > INT32_MAX || o->key_der_len > INT32_MAX)
        return MDM_ECONFIG;
    int r = wolfSSL_CTX_use_certificate_buffer(w, o->cert_der, (long)o->cert_der_len,
                                               WOLFSSL_FILETYPE_ASN1);
    if (r != WOLFSSL_SUCCESS) {
        wolfSSL_ERR_clear_error();
        mdm_error(LOG_MOD, "the client certificate (DER) does not load (%d)", r);
        return MDM_ETLS;
    }
    r = wolfSSL_CTX_use_PrivateKey_buffer(w, o->key_der, (long)o->key_der_len,
                                          WOLFSSL_FILETYPE_ASN1);
    if (r != WOLFSSL_SUCCESS || wolfSSL_CTX_check_private_key(w) != WOLFSSL_SUCCESS) {
        wolfSSL_ERR_clear_error();
        mdm_error(LOG_MOD, "the client key (DER) does not load or does not match (%d)", r);
        return MDM_ETLS;
    }
    return 0;
}

static int load_trust(WOLFSSL_CTX *w, const char *ca_path)
{
    int r = check_readable("CA certificates", ca_path);
    if (r != 0)
        return r;
    r = wolfSSL_CTX_load_verify_locations(w, ca_path, NULL);
    if (r != WOLFSSL_SUCCESS) {
        log_load_error("CA certificates", ca_path, r);
        return MDM_ETLS;
    }
    return 0;
}

int mdm_tls_ctx_new_server(mdm_tls_ctx_t **out, const struct mdm_tls_server_opts *o)
{
    assert(out && o);
    mdm_tls_ctx_t *ctx = NULL;
    int ret;
    *out = NULL;
    if (!o->cert_path || !o->key_path) {
        mdm_error(LOG_MOD, "server TLS needs a certificate and a key");
        return MDM_ECONFIG;
    }
    if (o->client_auth != MDM_TLS_CLIENT_NONE && !o->client_ca_path) {
        mdm_error(LOG_MOD, "client certificate authentication needs a client CA file");
        return MDM_ECONFIG;
    }
    if ((ret = ctx_alloc(&ctx, true, o->cipher_in_max, o->cipher_out_max, o->plain_in_max)) != 0)
        return ret;
    WOLFSSL_CTX *w = ctx->wctx;
    if ((ret = ctx_common(ctx)) != 0)
        goto out;
    if ((ret = load_identity(w, o->cert_path, o->key_path, true)) != 0)
        goto out;

    int mode = WOLFSSL_VERIFY_NONE;
    if (o->client_auth != MDM_TLS_CLIENT_NONE) {
        /* Only client_ca_path is trusted: the server context has no other CA loaded. */
        if ((ret = load_trust(w, o->client_ca_path)) != 0)
            goto out;
        mode = WOLFSSL_VERIFY_PEER;
        if (o->client_auth == MDM_TLS_CLIENT_REQUIRED)
            mode |= WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    }
    wolfSSL_CTX_set_verify(w, mode, NULL);

    /*
     * Resumption and client certificates do not mix in wolfSSL 5.5: a TLS 1.2 ticket does not
     * carry the client certificate, a TLS 1.3 one finds it only while the session is still in
     * the fixed-size, process-wide session cache, and that cache is shared by every server
     * context in the process (the session id context is not checked on lookup), so a session
     * could move between contexts with different client-auth policies. A context that asks
     * for client certificates therefore never resumes: every handshake verifies the
     * certificate it reports.
     */
    bool tickets = o->session_tickets && o->client_auth == MDM_TLS_CLIENT_NONE;
    if (o->client_auth != MDM_TLS_CLIENT_NONE &&
        wolfSSL_CTX_set_session_cache_mode(w, WOLFSSL_SESS_CACHE_OFF) != WOLFSSL_SUCCESS) {
        mdm_error(LOG_MOD, "cannot turn the session cache off");
        ret = MDM_ETLS;
        goto out;
    }
    if (!tickets) {
        /* The default ticket-key callback stays installed but is never asked for a ticket. */
        if (wolfSSL_CTX_NoTicketTLSv12(w) != WOLFSSL_SUCCESS ||
            wolfSSL_CTX_no_ticket_TLSv13(w) != 0 /* this one returns 0 on success */) {
            mdm_error(LOG_MOD, "cannot disable session tickets");
            ret = MDM_ETLS;
            goto out;
        }
    }

    if (o->alpn && o->alpn[0]) {
        for (const char *const *p = o->alpn; *p; p++) {
            size_t n = strlen(*p);
            if (n == 0 || n > ALPN_NAME_MAX || ctx->alpn_wire_len + 1 + n > ALPN_WIRE_MAX) {
                mdm_error(LOG_MOD, "ALPN protocol list too long or has an empty name");
                ret = MDM_ECONFIG;
                goto out;
            }
            ctx->alpn_wire[ctx->alpn_wire_len] = (uint8_t)n;
            memcpy(&ctx->alpn_wire[ctx->alpn_wire_len + 1], *p, n);
            ctx->alpn_wire_len += 1 + n;
        }
        wolfSSL_CTX_set_alpn_select_cb(w, on_alpn_select, ctx);
    }
    *out = ctx;
    return 0;
out:
    mdm_tls_ctx_free(ctx);
    return ret;
}

int mdm_tls_ctx_new_client(mdm_tls_ctx_t **out, const struct mdm_tls_client_opts *o)
{
    assert(out && o);
    mdm_tls_ctx_t *ctx = NULL;
    int ret;
    *out = NULL;
    if (!o->cert_path != !o->key_path || !o->cert_der != !o->key_der ||
        (o->cert_path && o->cert_der)) {
        mdm_error(LOG_MOD, "client certificate and key must be given together, once");
        return MDM_ECONFIG;
    }
    if (o->alpn && (strlen(o->alpn) == 0 || strlen(o->alpn) > ALPN_NAME_MAX)) {
        mdm_error(LOG_MOD, "bad ALPN protocol name");
        return MDM_ECONFIG;
    }
    if ((ret = ctx_alloc(&ctx, false, o->cipher_in_max, o->cipher_out_max, o->plain_in_max)) != 0)
        return ret;
    WOLFSSL_CTX *w = ctx->wctx;
    if ((ret = ctx_common(ctx)) != 0)
        goto out;
    if (o->tls12_only && wolfSSL_CTX_set_max_proto_version(w, TLS1_2_VERSION) != WOLFSSL_SUCCESS) {
        mdm_error(LOG_MOD, "cannot cap the version at TLS 1.2");
        ret = MDM_ETLS;
        goto out;
    }
    if (o->cert_path && (ret = load_identity(w, o->cert_path, o->key_path, false)) != 0)
        goto out;
    if (o->cert_der && (ret = load_identity_der(w, o)) != 0)
        goto out;
    if (o->ca_path) {
        if ((ret = load_trust(w, o->ca_path)) != 0)
            goto out;
        ctx->verify_peer = true;
        wolfSSL_CTX_set_verify(w, WOLFSSL_VERIFY_PEER, NULL);
    } else {
        wolfSSL_CTX_set_verify(w, WOLFSSL_VERIFY_NONE, NULL);
    }
    /*
     * TLS 1.2 tickets are not offered: a wolfSSL 5.5 client that offers a ticket the server
     * cannot decrypt (new ticket key after a restart) takes the server's fresh session id for
     * an abbreviated handshake and fails with "out of order message". TLS 1.2 resumes by
     * session id instead; TLS 1.3 tickets are unaffected.
     */
    if (o->alpn)
        snprintf(ctx->alpn_offer, sizeof(ctx->alpn_offer), "%s", o->alpn);
    *out = ctx;
    return 0;
out:
    mdm_tls_ctx_free(ctx);
    return ret;
}

void mdm_tls_ctx_free(mdm_tls_ctx_t *ctx)
{
    if (!ctx)
        return;
    wolfSSL_CTX_free(ctx->wctx);
    free(ctx);
}

/* ---- connections ---- */

/* Parses an IPv4 or IPv6 literal into out (network order); returns its length or 0. */
static size_t parse_ip(const char *s, uint8_t out[16])
{
    if (inet_pton(AF_INET, s, out) == 1)
        return 4;
    if (inet_pton(AF_INET6, s, out) == 1)
        return 16;
    return 0;
}

/* True when one of the certificate's IP SANs equals ip (compared as bytes, so "::1" matches
 * whatever text form wolfSSL would print). */
static bool cert_has_ip(WOLFSSL_X509 *x, const uint8_t *ip, size_t ip_len)
{
    WOLFSSL_GENERAL_NAMES *names = wolfSSL_X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    bool found = false;
    for (int i = 0; names && !found && i < wolfSSL_sk_GENERAL_NAME_num(names); i++) {
        WOLFSSL_GENERAL_NAME *gn = wolfSSL_sk_GENERAL_NAME_value(names, i);
        if (!gn || gn->type != GEN_IPADD || !gn->d.iPAddress)
            continue;
        const uint8_t *d = wolfSSL_ASN1_STRING_get0_data(gn->d.iPAddress);
        int len = wolfSSL_ASN1_STRING_length(gn->d.iPAddress);
        found = d && len >= 0 && (size_t)len == ip_len && memcmp(d, ip, ip_len) == 0;
    }
    wolfSSL_GENERAL_NAMES_free(names);
    return found;
}

/*
 * Client verify callback, installed only when the server name is an IP literal (wolfSSL's
 * name check looks at DNS names only). wolfSSL calls it for every certificate of the chain
 * (WOLFSSL_ALWAYS_VERIFY_CB) after its own checks; at the leaf it adds the IP SAN match.
 */
static int on_verify(int preverify, WOLFSSL_X509_STORE_CTX *store)
{
    if (!preverify)
        return 0;
    if (wolfSSL_X509_STORE_CTX_get_error_depth(store) != 0)
        return 1;
    WOLFSSL *ssl =
        wolfSSL_X509_STORE_CTX_get_ex_data(store, wolfSSL_get_ex_data_X509_STORE_CTX_idx());
    const struct mdm_tls_conn *c = ssl ? wolfSSL_GetIOReadCtx(ssl) : NULL;
    WOLFSSL_X509 *leaf = wolfSSL_X509_STORE_CTX_get_current_cert(store);
    if (c && leaf && cert_has_ip(leaf, c->verify_ip, c->verify_ip_len))
        return 1;
    wolfSSL_X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
    return 0;
}

int mdm_tls_conn_new(mdm_tls_conn_t **out, mdm_tls_ctx_t *ctx, const char *sni)
{
    assert(out && ctx);
    *out = NULL;
    struct mdm_tls_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    int ret = 0;
    c->ctx = ctx;
    mdm_buf_init(&c->cin, ctx->cipher_in_max);
    mdm_buf_init(&c->cout, ctx->cipher_out_max);
    mdm_buf_init(&c->plain_in, ctx->plain_in_max);
    c->ssl = wolfSSL_new(ctx->wctx);
    if (!c->ssl) {
        ret = -ENOMEM;
        goto out;
    }
    wolfSSL_SetIOReadCtx(c->ssl, c);
    wolfSSL_SetIOWriteCtx(c->ssl, c);
    if (!ctx->is_server) {
        if (sni && *sni && (c->verify_ip_len = parse_ip(sni, c->verify_ip)) != 0) {
            /* RFC 6066: no SNI for address literals; on_verify matches the IP SANs. */
            if (ctx->verify_peer)
                wolfSSL_set_verify(c->ssl, WOLFSSL_VERIFY_PEER, on_verify);
        } else if (sni && *sni) {
            size_t n = strlen(sni);
            if (n > UINT16_MAX ||
                wolfSSL_UseSNI(c->ssl, WOLFSSL_SNI_HOST_NAME, sni, (unsigned short)n) !=
                    WOLFSSL_SUCCESS ||
                /* checked during verification against the SAN DNS names, then the CN */
                wolfSSL_check_domain_name(c->ssl, sni) != WOLFSSL_SUCCESS) {
                ret = MDM_ETLS;
                goto out;
            }
        }
        if (ctx->alpn_offer[0]) {
            char proto[ALPN_NAME_MAX + 1]; /* wolfSSL_UseALPN wants a mutable list */
            size_t n = strlen(ctx->alpn_offer);
            memcpy(proto, ctx->alpn_offer, n + 1);
            if (wolfSSL_UseALPN(c->ssl, proto, (unsigned int)n,
                                WOLFSSL_ALPN_CONTINUE_ON_MISMATCH) != WOLFSSL_SUCCESS) {
                ret = MDM_ETLS;
                goto out;
            }
        }
    }
    *out = c;
    return 0;
out:
    wolfSSL_ERR_clear_error();
    mdm_tls_conn_free(c);
    return ret;
}

void mdm_tls_conn_free(mdm_tls_conn_t *c)
{
    if (!c)
        return;
    if (c->ssl)
        wolfSSL_free(c->ssl);
    mdm_buf_dispose(&c->cin);
    mdm_buf_dispose(&c->cout);
    mdm_buf_dispose(&c->plain_in);
    free(c->peer_der);
    free(c);
}

int mdm_tls_feed(mdm_tls_conn_t *c, const void *cipher, size_t len)
{
    assert(c && (cipher || len == 0));
    return mdm_buf_append(&c->cin, cipher, len);
}

void mdm_tls_feed_eof(mdm_tls_conn_t *c)
{
    assert(c);
    c->eof = true;
}

/* Fills c->peer from the leaf of the peer's chain (kept by wolfSSL under SESSION_CERTS). */
static int capture_peer(struct mdm_tls_conn *c)
{
    WOLFSSL_X509_CHAIN *chain = wolfSSL_get_peer_chain(c->ssl);
    if (!chain || wolfSSL_get_chain_count(chain) <= 0)
        return 0;
    const uint8_t *der = wolfSSL_get_chain_cert(chain, 0);
    int der_len = wolfSSL_get_chain_length(chain, 0);
    if (!der || der_len <= 0)
        return 0;

    uint8_t digest[WC_SHA256_DIGEST_SIZE];
    if (wc_Sha256Hash(der, (word32)der_len, digest) != 0)
        return MDM_ETLS;
    WOLFSSL_X509 *x = wolfSSL_X509_d2i(NULL, der, der_len);
    if (!x)
        return MDM_ETLS;
    c->peer_der = malloc((size_t)der_len);
    if (!c->peer_der) {
        wolfSSL_X509_free(x);
        return -ENOMEM;
    }
    memcpy(c->peer_der, der, (size_t)der_len);
    struct mdm_tls_peer *p = &c->peer;
    if (!wolfSSL_X509_NAME_oneline(wolfSSL_X509_get_subject_name(x), p->subject,
                                   (int)sizeof(p->subject)))
        p->subject[0] = '\0';
    if (!wolfSSL_X509_NAME_oneline(wolfSSL_X509_get_issuer_name(x), p->issuer,
                                   (int)sizeof(p->issuer)))
        p->issuer[0] = '\0';
    wolfSSL_X509_free(x);
    mdm_hex_encode(digest, sizeof(digest), p->sha256_hex);
    p->der = c->peer_der;
    p->der_len = (size_t)der_len;
    p->present = true;
    return 0;
}

static int on_handshake_done(struct mdm_tls_conn *c)
{
    c->handshake_done = true;
    c->resumed = wolfSSL_session_reused(c->ssl) == 1;

    char *proto = NULL;
    unsigned short proto_len = 0;
    if (wolfSSL_ALPN_GetProtocol(c->ssl, &proto, &proto_len) == WOLFSSL_SUCCESS && proto &&
        proto_len <= ALPN_NAME_MAX) {
        memcpy(c->alpn, proto, proto_len);
        c->alpn[proto_len] = '\0';
    }

    int max_plain = wolfSSL_GetMaxOutputSize(c->ssl);
    int max_record = max_plain > 0 ? wolfSSL_GetOutputSize(c->ssl, max_plain) : -1;
    if (max_plain <= 0 || max_record < max_plain)
        return fail_text(c, "handshake", "cannot size records");
    c->rec_plain_max = (size_t)max_plain;
    c->rec_overhead = (size_t)(max_record - max_plain);

    int ret = capture_peer(c);
    if (ret == -ENOMEM) {
        c->failed = ret;
        return ret;
    }
    if (ret != 0)
        return fail_text(c, "handshake", "cannot parse the peer certificate");
    const char *group = wolfSSL_get_curve_name(c->ssl);
    mdm_debug(LOG_MOD, "%s: handshake done, %s %s %s%s, alpn '%s', peer '%s'", side_name(c),
              wolfSSL_get_version(c->ssl), wolfSSL_get_cipher_name(c->ssl), group ? group : "-",
              c->resumed ? " (resumed)" : "", c->alpn, c->peer.present ? c->peer.subject : "");
    return 0;
}

int mdm_tls_advance(mdm_tls_conn_t *c)
{
    assert(c);
    if (c->failed)
        return c->failed;
    int ret;
    if (!c->handshake_done) {
        ret = c->ctx->is_server ? wolfSSL_accept(c->ssl) : wolfSSL_connect(c->ssl);
        if (ret != WOLFSSL_SUCCESS)
            return map_io_error(c, ret, "handshake");
        if ((ret = on_handshake_done(c)) != 0)
            return ret;
    }
    /* Decrypt until wolfSSL wants more ciphertext or plain_in is full. */
    for (;;) {
        size_t room = c->plain_in.max - c->plain_in.len;
        if (room == 0)
            return 0;
        size_t want = room < 16384 ? room : 16384;
        if ((ret = mdm_buf_reserve(&c->plain_in, want)) != 0)
            return ret; /* -ENOMEM; the bytes stay in wolfSSL for a later call */
        int n = wolfSSL_read(c->ssl, mdm_buf_tail(&c->plain_in), (int)want);
        if (n <= 0)
            return map_io_error(c, n, "read");
        mdm_buf_commit(&c->plain_in, (size_t)n);
    }
}

bool mdm_tls_handshake_done(const mdm_tls_conn_t *c) { return c->handshake_done; }

mdm_buf_t *mdm_tls_plain_in(mdm_tls_conn_t *c) { return &c->plain_in; }

mdm_buf_t *mdm_tls_cipher_out(mdm_tls_conn_t *c) { return &c->cout; }

size_t mdm_tls_write_room(mdm_tls_conn_t *c)
{
    if (!c->handshake_done || c->failed || c->shutdown_queued)
        return 0;
    /* max is the same for a swapped-in buffer; 0 (unlimited) is not expected but harmless */
    size_t room = c->cout.max ? c->cout.max - c->cout.len : SIZE_MAX / 2;
    size_t rec_full = c->rec_plain_max + c->rec_overhead;
    size_t plain = room / rec_full * c->rec_plain_max;
    size_t rest = room % rec_full;
    if (rest > c->rec_overhead)
        plain += rest - c->rec_overhead;
    return plain;
}

int mdm_tls_write(mdm_tls_conn_t *c, const void *plain, size_t len)
{
    assert(c && (plain || len == 0));
    assert(c->handshake_done);
    if (c->failed)
        return c->failed;
    if (c->shutdown_queued)
        return MDM_ECLOSED;
    if (len > mdm_tls_write_room(c))
        return MDM_ETOOBIG;
    const uint8_t *p = plain;
    while (len > 0) {
        /* wolfSSL_write takes an int and splits it into records itself. */
        int chunk = len > (1u << 20) ? (1 << 20) : (int)len;
        int n = wolfSSL_write(c->ssl, p, chunk);
        if (n <= 0) {
            int err = wolfSSL_get_error(c->ssl, n);
            /* The room check makes WANT_WRITE impossible; if it happens, the record is half
             * out and cannot be taken back, so the connection is done. */
            if (err == WOLFSSL_ERROR_WANT_WRITE)
                return fail_text(c, "write", "cipher_out overflow");
            return fail(c, err, "write");
        }
        assert(n == chunk);
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int mdm_tls_shutdown(mdm_tls_conn_t *c)
{
    assert(c);
    if (c->shutdown_queued)
        return 0;
    if (c->failed == MDM_ETLS)
        return c->failed;
    if (!c->handshake_done) {
        /* Nothing worth saying to a peer that never finished the handshake. */
        c->shutdown_queued = true;
        return 0;
    }
    if (c->cout.max && c->cout.max - c->cout.len < c->rec_overhead + 2 /* alert body */)
        return MDM_ETOOBIG; /* an alert record must fit whole */
    int r = wolfSSL_shutdown(c->ssl);
    if (r != WOLFSSL_SUCCESS && r != WOLFSSL_SHUTDOWN_NOT_DONE) {
        int err = wolfSSL_get_error(c->ssl, r);
        if (err != WOLFSSL_ERROR_ZERO_RETURN)
            return fail(c, err, "shutdown");
    }
    c->shutdown_queued = true;
    return 0;
}

const struct mdm_tls_peer *mdm_tls_peer(mdm_tls_conn_t *c) { return &c->peer; }

bool mdm_tls_session_resumed(const mdm_tls_conn_t *c) { return c->resumed; }

const char *mdm_tls_version(const mdm_tls_conn_t *c)
{
    return c->handshake_done ? wolfSSL_get_version(c->ssl) : "unknown";
}

const char *mdm_tls_alpn(const mdm_tls_conn_t *c) { return c->alpn[0] ? c->alpn : NULL; }

const char *mdm_tls_last_error(const mdm_tls_conn_t *c) { return c->last_error; }

int mdm_tls_conn_get_session(mdm_tls_conn_t *c, void **session)
{
    assert(c && session);
    *session = NULL;
    if (!c->handshake_done || c->ctx->is_server)
        return MDM_ENOTFOUND;
    WOLFSSL_SESSION *s = wolfSSL_get1_session(c->ssl);
    if (!s)
        return MDM_ENOTFOUND;
    if (wolfSSL_SESSION_is_resumable(s) != 1) { /* e.g. TLS 1.3 without a ticket */
        wolfSSL_SESSION_free(s);
        return MDM_ENOTFOUND;
    }
    *session = s;
    return 0;
}

int mdm_tls_conn_set_session(mdm_tls_conn_t *c, void *session)
{
    assert(c && session);
    assert(!c->ctx->is_server && !c->handshake_done);
    if (wolfSSL_set_session(c->ssl, session) != WOLFSSL_SUCCESS) {
        wolfSSL_ERR_clear_error();
        return MDM_ENOTFOUND; /* expired or unusable: the handshake will be a full one */
    }
    return 0;
}

void mdm_tls_session_free(void *session)
{
    if (session)
        wolfSSL_SESSION_free(session);
}
