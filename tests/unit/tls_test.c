/*
 * Unit tests for core/tls: a client and a server connection pumped back to back in memory.
 *
 * Certificates come from tests/data (regenerate with tests/data/make-test-certs.sh); the
 * directory is $MDM_TEST_DATA when set, else the MDM_TEST_DATA compile-time define. The test
 * also prints (never asserts) the CPU time of full versus resumed handshakes.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wolfssl/options.h>

#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "check.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/tls.h"

#ifndef MDM_TEST_DATA
#define MDM_TEST_DATA "tests/data"
#endif

#define PUMP_ROUNDS_MAX 100000 /* bound on exchanges; a handshake needs a handful */

static const char *data_path(const char *name)
{
    static char paths[16][512];
    static int next;
    const char *dir = getenv("MDM_TEST_DATA");
    if (!dir || !*dir)
        dir = MDM_TEST_DATA;
    char *p = paths[next++ % 16];
    snprintf(p, sizeof(paths[0]), "%s/%s", dir, name);
    return p;
}

/* ---- contexts ---- */

static const char *const server_alpn[] = {"h2", "http/1.1", NULL};

static mdm_tls_ctx_t *server_ctx(enum mdm_tls_client_auth auth, bool tickets)
{
    struct mdm_tls_server_opts o = {
        .cert_path = data_path("server.crt"),
        .key_path = data_path("server.key"),
        .client_ca_path = auth == MDM_TLS_CLIENT_NONE ? NULL : data_path("test-ca.crt"),
        .client_auth = auth,
        .session_tickets = tickets,
        .alpn = server_alpn,
    };
    mdm_tls_ctx_t *ctx = NULL;
    int ret = mdm_tls_ctx_new_server(&ctx, &o);
    CHECK_EQ_INT(ret, 0);
    if (ret != 0) {
        fprintf(stderr, "cannot create server ctx: fatal\n");
        exit(99);
    }
    return ctx;
}

struct client_cfg {
    const char *ca;   /* file name in tests/data, NULL = no verification */
    const char *cert; /* base name: "client" -> client.crt/client.key, NULL = none */
    bool tls12;
    const char *alpn;
};

static mdm_tls_ctx_t *client_ctx(struct client_cfg cfg)
{
    char crt[64], key[64];
    struct mdm_tls_client_opts o = {
        .ca_path = cfg.ca ? data_path(cfg.ca) : NULL,
        .alpn = cfg.alpn,
        .tls12_only = cfg.tls12,
    };
    if (cfg.cert) {
        snprintf(crt, sizeof(crt), "%s.crt", cfg.cert);
        snprintf(key, sizeof(key), "%s.key", cfg.cert);
        o.cert_path = data_path(crt);
        o.key_path = data_path(key);
    }
    mdm_tls_ctx_t *ctx = NULL;
    int ret = mdm_tls_ctx_new_client(&ctx, &o);
    CHECK_EQ_INT(ret, 0);
    if (ret != 0) {
        fprintf(stderr, "cannot create client ctx: fatal\n");
        exit(99);
    }
    return ctx;
}

/* ---- the in-memory wire ---- */

struct end {
    mdm_tls_conn_t *conn;
    int rc;        /* first non-zero mdm_tls_advance result, sticky */
    mdm_buf_t got; /* plaintext collected from plain_in */
};

struct pair {
    struct end c, s;
};

static void end_advance(struct end *e)
{
    if (e->rc != 0)
        return;
    e->rc = mdm_tls_advance(e->conn);
    mdm_buf_t *pin = mdm_tls_plain_in(e->conn);
    if (pin->len) {
        CHECK_EQ_INT(mdm_buf_append(&e->got, mdm_buf_head(pin), pin->len), 0);
        mdm_buf_consume(pin, pin->len);
        /* plain_in may have filled up: decrypt the rest now that there is room. */
        end_advance(e);
    }
}

/* Moves ciphertext from one end to the other, chunk bytes per feed; returns bytes moved. */
static size_t move(struct end *from, struct end *to, size_t chunk)
{
    mdm_buf_t *out = mdm_tls_cipher_out(from->conn);
    size_t moved = 0;
    bool stalled = false;
    while (out->len > 0 && to->rc == 0) {
        size_t n = out->len < chunk ? out->len : chunk;
        int ret = mdm_tls_feed(to->conn, mdm_buf_head(out), n);
        if (ret == MDM_ETOOBIG && !stalled) { /* receiver's cin is full: let it decrypt */
            end_advance(to);
            stalled = true;
            continue;
        }
        CHECK_EQ_INT(ret, 0);
        if (ret != 0)
            break;
        stalled = false;
        mdm_buf_consume(out, n);
        moved += n;
        end_advance(to);
    }
    return moved;
}

/* Exchanges bytes until both sides are quiet (or one failed); returns rounds used. */
static int pump_chunked(struct pair *p, size_t chunk)
{
    end_advance(&p->c); /* the client speaks first */
    end_advance(&p->s);
    int rounds = 0;
    for (; rounds < PUMP_ROUNDS_MAX; rounds++) {
        size_t moved = move(&p->c, &p->s, chunk) + move(&p->s, &p->c, chunk);
        if (moved == 0)
            break;
    }
    CHECK(rounds < PUMP_ROUNDS_MAX);
    return rounds;
}

#define CHUNK 16384 /* bytes per feed, like one receive buffer */

static int pump(struct pair *p) { return pump_chunked(p, CHUNK); }

static void pair_open(struct pair *p, mdm_tls_ctx_t *cctx, mdm_tls_ctx_t *sctx, const char *sni)
{
    memset(p, 0, sizeof(*p));
    mdm_buf_init(&p->c.got, 0);
    mdm_buf_init(&p->s.got, 0);
    CHECK_EQ_INT(mdm_tls_conn_new(&p->c.conn, cctx, sni), 0);
    CHECK_EQ_INT(mdm_tls_conn_new(&p->s.conn, sctx, NULL), 0);
    if (!p->c.conn || !p->s.conn)
        exit(99);
}

static void pair_close(struct pair *p)
{
    mdm_tls_conn_free(p->c.conn);
    mdm_tls_conn_free(p->s.conn);
    mdm_buf_dispose(&p->c.got);
    mdm_buf_dispose(&p->s.got);
}

static bool handshake_ok(const struct pair *p)
{
    return p->c.rc == 0 && p->s.rc == 0 && mdm_tls_handshake_done(p->c.conn) &&
           mdm_tls_handshake_done(p->s.conn);
}

/* Writes len bytes of a pattern from one end, pumps, and checks the other end got them. */
static void check_transfer(struct pair *p, bool client_to_server, size_t len, size_t chunk)
{
    struct end *from = client_to_server ? &p->c : &p->s;
    struct end *to = client_to_server ? &p->s : &p->c;
    uint8_t *data = malloc(len);
    if (!data)
        exit(99);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)(i * 131 + (client_to_server ? 7 : 11));
    mdm_buf_reset(&to->got);
    CHECK_EQ_INT(mdm_tls_write(from->conn, data, len), 0);
    pump_chunked(p, chunk);
    CHECK_EQ_INT(to->got.len, len);
    CHECK(to->got.len == len && memcmp(mdm_buf_head(&to->got), data, len) == 0);
    free(data);
}

/* ---- cases ---- */

static void test_handshake(bool tls12)
{
    mdm_tls_ctx_t *sctx = server_ctx(MDM_TLS_CLIENT_NONE, true);
    mdm_tls_ctx_t *cctx =
        client_ctx((struct client_cfg){.ca = "test-ca.crt", .tls12 = tls12, .alpn = "h2"});
    struct pair p;
    pair_open(&p, cctx, sctx, "localhost");
    CHECK(!mdm_tls_handshake_done(p.c.conn));
    CHECK_STR(mdm_tls_version(p.c.conn), "unknown");
    pump(&p);
    CHECK(handshake_ok(&p));
    const char *want = tls12 ? "TLSv1.2" : "TLSv1.3";
    CHECK_STR(mdm_tls_version(p.c.conn), want);
    CHECK_STR(mdm_tls_version(p.s.conn), want);
    CHECK_STR(mdm_tls_alpn(p.c.conn), "h2");
    CHECK_STR(mdm_tls_alpn(p.s.conn), "h2");
    CHECK(!mdm_tls_session_resumed(p.c.conn));
    CHECK(!mdm_tls_session_resumed(p.s.conn));
    CHECK_STR(mdm_tls_last_error(p.c.conn), "");

    /* client side: the verified server certificate */
    const struct mdm_tls_peer *peer = mdm_tls_peer(p.c.conn);
    CHECK(peer->present);
    CHECK(strstr(peer->subject, "CN=localhost") != NULL);
    CHECK(strstr(peer->issuer, "CN=mdmd Test CA") != NULL);
    CHECK(peer->der && peer->der_len > 100);
    CHECK_EQ_INT(strlen(peer->sha256_hex), 64);
    /* server side: no client certificate requested */
    CHECK(!mdm_tls_peer(p.s.conn)->present);

    /* data both ways, small and large (the 100 KiB exceed plain_in and a TLS record) */
    check_transfer(&p, true, 5, CHUNK);
    check_transfer(&p, false, 5, CHUNK);
    check_transfer(&p, true, 100 * 1024, CHUNK);
    check_transfer(&p, false, 100 * 1024, CHUNK);
    /* ciphertext one byte at a time after the handshake */
    check_transfer(&p, true, 3000, 1);

    /* close_notify: the receiver reports MDM_ECLOSED; plaintext sent before it survives */
    CHECK_EQ_INT(mdm_tls_write(p.c.conn, "bye", 3), 0);
    CHECK_EQ_INT(mdm_tls_shutdown(p.c.conn), 0);
    CHECK_EQ_INT(mdm_tls_shutdown(p.c.conn), 0); /* idempotent */
    CHECK_EQ_INT(mdm_tls_write(p.c.conn, "x", 1), MDM_ECLOSED);
    mdm_buf_reset(&p.s.got);
    pump(&p);
    CHECK_EQ_INT(p.s.rc, MDM_ECLOSED);
    CHECK(p.s.got.len == 3 && memcmp(mdm_buf_head(&p.s.got), "bye", 3) == 0);
    CHECK_EQ_INT(mdm_tls_advance(p.s.conn), MDM_ECLOSED); /* sticky */
    pair_close(&p);
    mdm_tls_ctx_free(cctx);
    mdm_tls_ctx_free(sctx);
}

/* The whole handshake and some data with ciphertext delivered one byte per feed. */
static void test_one_byte_at_a_time(bool tls12)
{
    mdm_tls_ctx_t *sctx = server_ctx(MDM_TLS_CLIENT_OPTIONAL, true);
    mdm_tls_ctx_t *cctx =
        client_ctx((struct client_cfg){.ca = "test-ca.crt", .cert = "client", .tls12 = tls12});
    struct pair p;
    pair_open(&p, cctx, sctx, "localhost");
    pump_chunked(&p, 1);
    CHECK(handshake_ok(&p));
    CHECK(mdm_tls_peer(p.s.conn)->present);
    check_transfer(&p, true, 20000, 1);
    check_transfer(&p, false, 20000, 7);
    pair_close(&p);
    mdm_tls_ctx_free(cctx);
    mdm_tls_ctx_free(sctx);
}

/* SHA-256 of the DER inside a PEM certificate file, computed without core/tls. */
static void pem_sha256_hex(const char *path, char out[65])
{
    out[0] = '\0';
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f)
        return;
    unsigned char pem[8192], der[8192];
    size_t n = fread(pem, 1, sizeof(pem), f);
    fclose(f);
    int der_len = wc_CertPemToDer(pem, (int)n, der, (int)sizeof(der), CERT_TYPE);
    CHECK(der_len > 0);
    if (der_len <= 0)
        return;
    uint8_t digest[WC_SHA256_DIGEST_SIZE];
    CHECK_EQ_INT(wc_Sha256Hash(der, (word32)der_len, digest), 0);
    for (size_t i = 0; i < sizeof(digest); i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

/* Handshake with the given server auth mode and client config; returns the pair pumped. */
static void auth_pair(struct pair *p, mdm_tls_ctx_t **sctx, mdm_tls_ctx_t **cctx,
                      enum mdm_tls_client_auth auth, struct client_cfg cfg)
{
    *sctx = server_ctx(auth, true);
    *cctx = client_ctx(cfg);
    pair_open(p, *cctx, *sctx, "localhost");
    pump(p);
}

static void auth_done(struct pair *p, mdm_tls_ctx_t *sctx, mdm_tls_ctx_t *cctx)
{
    pair_close(p);
    mdm_tls_ctx_free(cctx);
    mdm_tls_ctx_free(sctx);
}

static void test_client_auth(bool tls12)
{
    struct pair p;
    mdm_tls_ctx_t *s, *c;

    /* OPTIONAL, no certificate: fine, no peer */
    auth_pair(&p, &s, &c, MDM_TLS_CLIENT_OPTIONAL,
              (struct client_cfg){.ca = "test-ca.crt", .tls12 = tls12});
    CHECK(handshake_ok(&p));
    CHECK(!mdm_tls_peer(p.s.conn)->present);
    check_transfer(&p, true, 10, CHUNK);
    auth_done(&p, s, c);

    /* OPTIONAL with the test client certificate: verified, identity exposed */
    auth_pair(&p, &s, &c, MDM_TLS_CLIENT_OPTIONAL,
              (struct client_cfg){.ca = "test-ca.crt", .cert = "client", .tls12 = tls12});
    CHECK(handshake_ok(&p));
    const struct mdm_tls_peer *peer = mdm_tls_peer(p.s.conn);
    CHECK(peer->present);
    CHECK(strstr(peer->subject, "test-device") != NULL);
    CHECK(strstr(peer->issuer, "mdmd Test CA") != NULL);
    char want[65];
    pem_sha256_hex(data_path("client.crt"), want);
    CHECK_STR(peer->sha256_hex, want);
    uint8_t digest[WC_SHA256_DIGEST_SIZE];
    CHECK(peer->der && wc_Sha256Hash(peer->der, (word32)peer->der_len, digest) == 0);
    check_transfer(&p, false, 10, CHUNK);
    auth_done(&p, s, c);

    /* REQUIRED with the certificate: fine */
    auth_pair(&p, &s, &c, MDM_TLS_CLIENT_REQUIRED,
              (struct client_cfg){.ca = "test-ca.crt", .cert = "client", .tls12 = tls12});
    CHECK(handshake_ok(&p));
    CHECK(mdm_tls_peer(p.s.conn)->present);
    auth_done(&p, s, c);

    /* REQUIRED without a certificate: the server refuses */
    auth_pair(&p, &s, &c, MDM_TLS_CLIENT_REQUIRED,
              (struct client_cfg){.ca = "test-ca.crt", .tls12 = tls12});
    CHECK_EQ_INT(p.s.rc, MDM_ETLS);
    CHECK(!mdm_tls_handshake_done(p.s.conn));
    CHECK(mdm_tls_last_error(p.s.conn)[0] != '\0');
    /* the client hears an alert, or (TLS 1.2) the transport closing */
    mdm_tls_feed_eof(p.c.conn);
    end_advance(&p.c);
    CHECK(p.c.rc != 0);
    CHECK_EQ_INT(mdm_tls_advance(p.s.conn), MDM_ETLS); /* sticky */
    auth_done(&p, s, c);

    /* a client certificate from another CA: refused under OPTIONAL and REQUIRED */
    for (int i = 0; i < 2; i++) {
        auth_pair(&p, &s, &c, i ? MDM_TLS_CLIENT_REQUIRED : MDM_TLS_CLIENT_OPTIONAL,
                  (struct client_cfg){.ca = "test-ca.crt", .cert = "other-client", .tls12 = tls12});
        CHECK_EQ_INT(p.s.rc, MDM_ETLS);
        CHECK(!mdm_tls_handshake_done(p.s.conn));
        CHECK(!mdm_tls_peer(p.s.conn)->present);
        /* the client hears an alert, or (TLS 1.2) the transport closing */
        mdm_tls_feed_eof(p.c.conn);
        end_advance(&p.c);
        CHECK(p.c.rc != 0);
        auth_done(&p, s, c);
    }
}

static void test_server_verification(void)
{
    struct pair p;
    mdm_tls_ctx_t *s, *c;

    /* trusting the wrong CA */
    auth_pair(&p, &s, &c, MDM_TLS_CLIENT_NONE, (struct client_cfg){.ca = "other-ca.crt"});
    CHECK_EQ_INT(p.c.rc, MDM_ETLS);
    CHECK(!mdm_tls_handshake_done(p.c.conn));
    CHECK(mdm_tls_last_error(p.c.conn)[0] != '\0');
    CHECK(p.s.rc != 0); /* the client's alert ends the server side too */
    auth_done(&p, s, c);

    /* right CA, wrong name */
    s = server_ctx(MDM_TLS_CLIENT_NONE, true);
    c = client_ctx((struct client_cfg){.ca = "test-ca.crt"});
    pair_open(&p, c, s, "mdm.example.com");
    pump(&p);
    CHECK_EQ_INT(p.c.rc, MDM_ETLS);
    pair_close(&p);

    /* IP literals are matched against IP SANs (and not sent as SNI) */
    const char *ips[] = {"127.0.0.1", "::1"};
    for (size_t i = 0; i < 2; i++) {
        pair_open(&p, c, s, ips[i]);
        pump(&p);
        CHECK(handshake_ok(&p));
        pair_close(&p);
    }
    pair_open(&p, c, s, "127.0.0.2");
    pump(&p);
    CHECK_EQ_INT(p.c.rc, MDM_ETLS);
    pair_close(&p);

    /* no name at all: chain verified, name not checked */
    pair_open(&p, c, s, NULL);
    pump(&p);
    CHECK(handshake_ok(&p));
    pair_close(&p);
    mdm_tls_ctx_free(c);

    /* no trust anchors: nothing verified (tests/bench mode), peer still reported */
    c = client_ctx((struct client_cfg){0});
    pair_open(&p, c, s, "mdm.example.com");
    pump(&p);
    CHECK(handshake_ok(&p));
    CHECK(mdm_tls_peer(p.c.conn)->present);
    CHECK(mdm_tls_alpn(p.c.conn) == NULL);
    CHECK(mdm_tls_alpn(p.s.conn) == NULL);
    pair_close(&p);
    mdm_tls_ctx_free(c);
    mdm_tls_ctx_free(s);
}

static void test_garbage(void)
{
    mdm_tls_ctx_t *s = server_ctx(MDM_TLS_CLIENT_NONE, true);
    mdm_tls_conn_t *conn = NULL;
    CHECK_EQ_INT(mdm_tls_conn_new(&conn, s, NULL), 0);
    static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    CHECK_EQ_INT(mdm_tls_feed(conn, http, sizeof(http) - 1), 0);
    CHECK_EQ_INT(mdm_tls_advance(conn), MDM_ETLS);
    CHECK(mdm_tls_last_error(conn)[0] != '\0');
    mdm_tls_conn_free(conn);

    /* a record header announcing a handshake message, then junk */
    conn = NULL;
    CHECK_EQ_INT(mdm_tls_conn_new(&conn, s, NULL), 0);
    uint8_t junk[64] = {0x16, 0x03, 0x01, 0x00, 59, 0x01, 0x00, 0x00, 55};
    for (size_t i = 9; i < sizeof(junk); i++)
        junk[i] = (uint8_t)(i * 37);
    CHECK_EQ_INT(mdm_tls_feed(conn, junk, sizeof(junk)), 0);
    CHECK_EQ_INT(mdm_tls_advance(conn), MDM_ETLS);
    mdm_tls_conn_free(conn);

    /* a truncated ClientHello followed by EOF: closed, not an error */
    mdm_tls_ctx_t *c = client_ctx((struct client_cfg){.ca = "test-ca.crt"});
    struct pair p;
    pair_open(&p, c, s, "localhost");
    CHECK_EQ_INT(mdm_tls_advance(p.c.conn), 0);
    mdm_buf_t *out = mdm_tls_cipher_out(p.c.conn);
    CHECK(out->len > 20);
    CHECK_EQ_INT(mdm_tls_feed(p.s.conn, mdm_buf_head(out), 20), 0);
    CHECK_EQ_INT(mdm_tls_advance(p.s.conn), 0);
    CHECK(!mdm_tls_handshake_done(p.s.conn));
    mdm_tls_feed_eof(p.s.conn);
    CHECK_EQ_INT(mdm_tls_advance(p.s.conn), MDM_ECLOSED);
    pair_close(&p);
    mdm_tls_ctx_free(c);
    mdm_tls_ctx_free(s);
}

static void test_eof_after_handshake(void)
{
    mdm_tls_ctx_t *s = server_ctx(MDM_TLS_CLIENT_NONE, true);
    mdm_tls_ctx_t *c = client_ctx((struct client_cfg){.ca = "test-ca.crt"});
    struct pair p;
    pair_open(&p, c, s, "localhost");
    pump(&p);
    CHECK(handshake_ok(&p));
    /* half a record, then EOF: the bytes before are delivered, the cut one is not */
    CHECK_EQ_INT(mdm_tls_write(p.c.conn, "whole", 5), 0);
    pump(&p);
    CHECK_EQ_INT(mdm_tls_write(p.c.conn, "cut in half", 11), 0);
    mdm_buf_t *out = mdm_tls_cipher_out(p.c.conn);
    CHECK_EQ_INT(mdm_tls_feed(p.s.conn, mdm_buf_head(out), out->len / 2), 0);
    mdm_tls_feed_eof(p.s.conn);
    end_advance(&p.s);
    CHECK_EQ_INT(p.s.rc, MDM_ECLOSED);
    CHECK(p.s.got.len == 5 && memcmp(mdm_buf_head(&p.s.got), "whole", 5) == 0);
    pair_close(&p);
    mdm_tls_ctx_free(c);
    mdm_tls_ctx_free(s);
}

/* Buffer caps: feed, write_room, all-or-nothing writes, swapping cipher_out. */
static void test_limits(bool tls12)
{
    mdm_tls_ctx_t *s = server_ctx(MDM_TLS_CLIENT_NONE, true);
    mdm_tls_ctx_t *c = client_ctx((struct client_cfg){.ca = "test-ca.crt", .tls12 = tls12});
    struct pair p;
    pair_open(&p, c, s, "localhost");

    CHECK_EQ_INT(mdm_tls_write_room(p.c.conn), 0); /* before the handshake */
    static uint8_t big[MDM_TLS_CIPHER_IN_MAX_DEFAULT + 1];
    CHECK_EQ_INT(mdm_tls_feed(p.s.conn, big, sizeof(big)), MDM_ETOOBIG);
    CHECK_EQ_INT(mdm_tls_feed(p.s.conn, big, 0), 0);
    pump(&p);
    CHECK(handshake_ok(&p));

    size_t room = mdm_tls_write_room(p.c.conn);
    CHECK(room > 200 * 1024 && room < MDM_TLS_CIPHER_OUT_MAX_DEFAULT);
    uint8_t *data = calloc(1, room + 1);
    if (!data)
        exit(99);
    mdm_buf_t *out = mdm_tls_cipher_out(p.c.conn);
    size_t before = out->len;
    CHECK_EQ_INT(mdm_tls_write(p.c.conn, data, room + 1), MDM_ETOOBIG);
    CHECK_EQ_INT(out->len, before);                       /* nothing written */
    CHECK_EQ_INT(mdm_tls_write(p.c.conn, data, room), 0); /* exactly the room fits */
    CHECK_EQ_INT(mdm_tls_write_room(p.c.conn), 0);
    CHECK(out->len <= out->max);

    /* swap cipher_out for an empty buffer of the same max, as the loop does during a send */
    mdm_buf_t inflight;
    mdm_buf_init(&inflight, out->max);
    mdm_buf_t tmp = *out;
    *out = inflight;
    inflight = tmp;
    CHECK_EQ_INT(mdm_tls_write(p.c.conn, "after swap", 10), 0);
    /* deliver the in-flight bytes first, then the new ones */
    mdm_buf_reset(&p.s.got);
    for (size_t off = 0; off < inflight.len;) {
        size_t n = inflight.len - off < 4096 ? inflight.len - off : 4096;
        int ret = mdm_tls_feed(p.s.conn, mdm_buf_head(&inflight) + off, n);
        if (ret == 0)
            off += n;
        else
            CHECK_EQ_INT(ret, MDM_ETOOBIG);
        end_advance(&p.s);
    }
    mdm_buf_dispose(&inflight);
    pump(&p);
    CHECK_EQ_INT(p.s.got.len, room + 10);
    CHECK(p.s.got.len == room + 10 && memcmp(mdm_buf_head(&p.s.got) + room, "after swap", 10) == 0);
    free(data);
    pair_close(&p);
    mdm_tls_ctx_free(c);
    mdm_tls_ctx_free(s);
}

/* Full handshake, save the session, resume it. Returns false if anything failed. */
static bool resume_once(mdm_tls_ctx_t *cctx, mdm_tls_ctx_t *sctx, void **session, bool *resumed_c,
                        bool *resumed_s)
{
    struct pair p;
    pair_open(&p, cctx, sctx, "localhost");
    if (*session)
        CHECK_EQ_INT(mdm_tls_conn_set_session(p.c.conn, *session), 0);
    pump(&p);
    bool ok = handshake_ok(&p);
    *resumed_c = mdm_tls_session_resumed(p.c.conn);
    *resumed_s = mdm_tls_session_resumed(p.s.conn);
    if (ok && !*session)
        ok = mdm_tls_conn_get_session(p.c.conn, session) == 0;
    pair_close(&p);
    return ok;
}

static void test_resumption(bool tls12, bool tickets)
{
    mdm_tls_ctx_t *sctx = server_ctx(MDM_TLS_CLIENT_NONE, tickets);
    mdm_tls_ctx_t *cctx =
        client_ctx((struct client_cfg){.ca = "test-ca.crt", .tls12 = tls12, .alpn = "h2"});
    struct pair p;
    pair_open(&p, cctx, sctx, "localhost");
    pump(&p);
    CHECK(handshake_ok(&p));
    CHECK(!mdm_tls_session_resumed(p.s.conn));
    void *session = NULL;
    int ret = mdm_tls_conn_get_session(p.c.conn, &session);
    pair_close(&p);
    /* TLS 1.3 resumes with tickets only; TLS 1.2 by session id (the client offers no ticket) */
    bool expect = tickets || tls12;
    CHECK_EQ_INT(ret, expect ? 0 : MDM_ENOTFOUND);
    if (!expect) {
        CHECK(session == NULL);
        mdm_tls_ctx_free(cctx);
        mdm_tls_ctx_free(sctx);
        return;
    }

    for (int i = 0; i < 2; i++) { /* the same session resumes more than once */
        pair_open(&p, cctx, sctx, "localhost");
        CHECK_EQ_INT(mdm_tls_conn_set_session(p.c.conn, session), 0);
        pump(&p);
        CHECK(handshake_ok(&p));
        CHECK_STR(mdm_tls_version(p.s.conn), tls12 ? "TLSv1.2" : "TLSv1.3");
        CHECK(mdm_tls_session_resumed(p.c.conn));
        CHECK(mdm_tls_session_resumed(p.s.conn));
        CHECK_STR(mdm_tls_alpn(p.s.conn), "h2");
        if (i == 0)
            printf("# resumed %s: client still reports the server certificate: %s\n",
                   tls12 ? "TLS 1.2" : "TLS 1.3", mdm_tls_peer(p.c.conn)->present ? "yes" : "no");
        check_transfer(&p, true, 100, CHUNK);
        check_transfer(&p, false, 100, CHUNK);
        pair_close(&p);
    }

    /* A TLS 1.3 ticket from another server context (another process, a restart): the ticket
     * key differs, so the handshake falls back to a full one. (TLS 1.2 session ids live in
     * wolfSSL's process-wide cache and do resume across contexts of one process.) */
    if (!tls12) {
        mdm_tls_ctx_t *other = server_ctx(MDM_TLS_CLIENT_NONE, tickets);
        pair_open(&p, cctx, other, "localhost");
        CHECK_EQ_INT(mdm_tls_conn_set_session(p.c.conn, session), 0);
        pump(&p);
        CHECK(handshake_ok(&p));
        CHECK(!mdm_tls_session_resumed(p.c.conn));
        CHECK(!mdm_tls_session_resumed(p.s.conn));
        pair_close(&p);
        mdm_tls_ctx_free(other);
    }
    mdm_tls_session_free(session);
    mdm_tls_ctx_free(cctx);
    mdm_tls_ctx_free(sctx);
}

/* A server that asks for client certificates never resumes, so the identity it reports
 * always comes from a certificate verified in this handshake. */
static void test_no_resumption_with_client_auth(bool tls12)
{
    mdm_tls_ctx_t *sctx = server_ctx(MDM_TLS_CLIENT_OPTIONAL, true);
    mdm_tls_ctx_t *cctx =
        client_ctx((struct client_cfg){.ca = "test-ca.crt", .cert = "client", .tls12 = tls12});
    void *session = NULL;
    for (int i = 0; i < 3; i++) {
        struct pair p;
        pair_open(&p, cctx, sctx, "localhost");
        if (session)
            CHECK_EQ_INT(mdm_tls_conn_set_session(p.c.conn, session), 0);
        pump(&p);
        CHECK(handshake_ok(&p));
        CHECK(!mdm_tls_session_resumed(p.s.conn));
        CHECK(!mdm_tls_session_resumed(p.c.conn));
        CHECK(mdm_tls_peer(p.s.conn)->present);
        CHECK(strstr(mdm_tls_peer(p.s.conn)->subject, "test-device") != NULL);
        if (!session && mdm_tls_conn_get_session(p.c.conn, &session) != 0)
            session = NULL; /* no ticket to offer (TLS 1.3): nothing is offered */
        pair_close(&p);
    }
    mdm_tls_session_free(session);
    mdm_tls_ctx_free(cctx);
    mdm_tls_ctx_free(sctx);
}

static void test_ctx_errors(void)
{
    mdm_tls_ctx_t *ctx = (mdm_tls_ctx_t *)1;
    struct mdm_tls_server_opts o = {.cert_path = data_path("missing.crt"),
                                    .key_path = data_path("server.key")};
    CHECK_EQ_INT(mdm_tls_ctx_new_server(&ctx, &o), MDM_ETLS);
    CHECK(ctx == NULL);
    o.cert_path = data_path("server.crt");
    o.key_path = data_path("client.key"); /* does not match */
    CHECK_EQ_INT(mdm_tls_ctx_new_server(&ctx, &o), MDM_ETLS);
    o.key_path = data_path("missing.key");
    CHECK_EQ_INT(mdm_tls_ctx_new_server(&ctx, &o), MDM_ETLS);
    o.key_path = data_path("server.key");
    o.client_auth = MDM_TLS_CLIENT_REQUIRED;
    CHECK_EQ_INT(mdm_tls_ctx_new_server(&ctx, &o), MDM_ECONFIG);
    o.client_ca_path = data_path("missing-ca.crt");
    CHECK_EQ_INT(mdm_tls_ctx_new_server(&ctx, &o), MDM_ETLS);
    o.client_ca_path = data_path("test-ca.crt");
    const char *const empty_name[] = {"h2", "", NULL};
    o.alpn = empty_name;
    CHECK_EQ_INT(mdm_tls_ctx_new_server(&ctx, &o), MDM_ECONFIG);
    o.alpn = NULL;
    CHECK_EQ_INT(mdm_tls_ctx_new_server(&ctx, &o), 0);
    mdm_tls_ctx_free(ctx);

    struct mdm_tls_client_opts co = {.ca_path = data_path("missing-ca.crt")};
    CHECK_EQ_INT(mdm_tls_ctx_new_client(&ctx, &co), MDM_ETLS);
    co.ca_path = data_path("test-ca.crt");
    co.cert_path = data_path("client.crt");
    CHECK_EQ_INT(mdm_tls_ctx_new_client(&ctx, &co), MDM_ECONFIG); /* key missing */
    /* A client whose key does not match its certificate: the context is made (clients skip the
     * costly proof), but a server requiring client certificates refuses the handshake. */
    co.key_path = data_path("other-client.key");
    CHECK_EQ_INT(mdm_tls_ctx_new_client(&ctx, &co), 0);
    mdm_tls_ctx_t *sctx = server_ctx(MDM_TLS_CLIENT_REQUIRED, false);
    struct pair p;
    pair_open(&p, ctx, sctx, "localhost");
    (void)pump(&p);
    CHECK(!handshake_ok(&p));
    pair_close(&p);
    mdm_tls_ctx_free(sctx);
    mdm_tls_ctx_free(ctx);
    mdm_tls_ctx_free(NULL);
    mdm_tls_conn_free(NULL);
    mdm_tls_session_free(NULL);
}

/* ---- several threads on shared contexts ---- */

struct thread_arg {
    mdm_tls_ctx_t *cctx, *sctx;           /* no client auth: resumption */
    mdm_tls_ctx_t *cctx_cert, *sctx_auth; /* client certificate required */
    int ok, resumed, identified;
};

static void *thread_main(void *arg)
{
    struct thread_arg *t = arg;
    void *session = NULL;
    for (int i = 0; i < 20; i++) {
        bool rc = false, rs = false;
        if (resume_once(t->cctx, t->sctx, &session, &rc, &rs))
            t->ok++;
        if (rc && rs)
            t->resumed++;

        struct pair p;
        pair_open(&p, t->cctx_cert, t->sctx_auth, "localhost");
        pump(&p);
        if (handshake_ok(&p) && mdm_tls_peer(p.s.conn)->present &&
            strstr(mdm_tls_peer(p.s.conn)->subject, "test-device"))
            t->identified++;
        pair_close(&p);
    }
    mdm_tls_session_free(session);
    mdm_tls_thread_cleanup();
    return NULL;
}

static void test_threads(bool tls12)
{
    struct thread_arg base = {
        .sctx = server_ctx(MDM_TLS_CLIENT_NONE, true),
        .cctx = client_ctx((struct client_cfg){.ca = "test-ca.crt", .tls12 = tls12}),
        .sctx_auth = server_ctx(MDM_TLS_CLIENT_REQUIRED, true),
        .cctx_cert =
            client_ctx((struct client_cfg){.ca = "test-ca.crt", .cert = "client", .tls12 = tls12}),
    };
    enum { N = 4 };
    pthread_t th[N];
    struct thread_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = base;
        CHECK_EQ_INT(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(args[i].ok, 20);
        CHECK_EQ_INT(args[i].resumed, 19); /* all but the first */
        CHECK_EQ_INT(args[i].identified, 20);
    }
    mdm_tls_ctx_free(base.cctx);
    mdm_tls_ctx_free(base.sctx);
    mdm_tls_ctx_free(base.cctx_cert);
    mdm_tls_ctx_free(base.sctx_auth);
}

/* ---- CPU cost of full vs resumed handshakes (printed, never asserted) ---- */

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void measure_handshakes(bool tls12)
{
    enum { N = 200 };
    mdm_tls_ctx_t *sctx = server_ctx(MDM_TLS_CLIENT_NONE, true);
    mdm_tls_ctx_t *cctx = client_ctx((struct client_cfg){.ca = "test-ca.crt", .tls12 = tls12});
    mdm_tls_ctx_t *sctx_auth = server_ctx(MDM_TLS_CLIENT_REQUIRED, true);
    mdm_tls_ctx_t *cctx_cert =
        client_ctx((struct client_cfg){.ca = "test-ca.crt", .cert = "client", .tls12 = tls12});
    void *session = NULL;
    bool rc, rs;
    int full_ok = 0, resumed_ok = 0, mtls_ok = 0;

    double t0 = cpu_seconds();
    for (int i = 0; i < N; i++) {
        void *fresh = NULL;
        full_ok += resume_once(cctx, sctx, &fresh, &rc, &rs) && !rs;
        /* keep the newest: wolfSSL's TLS 1.2 session-id cache is small and evicts */
        mdm_tls_session_free(session);
        session = fresh;
    }
    double t1 = cpu_seconds();
    for (int i = 0; i < N; i++)
        resumed_ok += resume_once(cctx, sctx, &session, &rc, &rs) && rs;
    double t2 = cpu_seconds();
    for (int i = 0; i < N; i++) {
        struct pair p;
        pair_open(&p, cctx_cert, sctx_auth, "localhost");
        pump(&p);
        mtls_ok += handshake_ok(&p) && mdm_tls_peer(p.s.conn)->present;
        pair_close(&p);
    }
    double t3 = cpu_seconds();
    CHECK_EQ_INT(full_ok, N);
    CHECK_EQ_INT(resumed_ok, N);
    CHECK_EQ_INT(mtls_ok, N);
    printf("# %s, CPU for client+server together, %d handshakes each: full %.1f ms (%.0f us "
           "each), resumed %.1f ms (%.0f us each), full with client cert %.1f ms (%.0f us each)\n",
           tls12 ? "TLS 1.2" : "TLS 1.3", N, (t1 - t0) * 1e3, (t1 - t0) * 1e6 / N, (t2 - t1) * 1e3,
           (t2 - t1) * 1e6 / N, (t3 - t2) * 1e3, (t3 - t2) * 1e6 / N);
    mdm_tls_session_free(session);
    mdm_tls_ctx_free(cctx);
    mdm_tls_ctx_free(sctx);
    mdm_tls_ctx_free(cctx_cert);
    mdm_tls_ctx_free(sctx_auth);
}

int main(void)
{
    const char *lvl = getenv("MDM_TEST_LOG");
    mdm_log_setup(lvl ? (enum mdm_log_level)mdm_log_level_parse(lvl) : MDM_LOG_ERROR + 1, false);
    if (mdm_tls_global_init() != 0)
        return 99;
    CHECK_EQ_INT(mdm_tls_global_init(), 0); /* idempotent */

    test_ctx_errors();
    for (int v = 0; v < 2; v++) {
        test_handshake(v);
        test_one_byte_at_a_time(v);
        test_client_auth(v);
        test_resumption(v, true);
        test_resumption(v, false);
        test_no_resumption_with_client_auth(v);
        test_threads(v);
    }
    test_server_verification();
    test_garbage();
    test_eof_after_handshake();
    test_limits(false);
    test_limits(true);
    for (int v = 0; v < 2; v++)
        measure_handshakes(v);
    mdm_tls_global_cleanup();
    return check_finish("tls");
}
