/*
 * mdm_tls: sans-I/O TLS over wolfSSL.
 *
 * wolfSSL never sees a socket. Each connection owns three buffers: ciphertext in (filled by
 * mdm_tls_feed from whatever the loop received), ciphertext out (filled by wolfSSL, drained by
 * the loop's sends) and plaintext in (filled by mdm_tls_advance, drained by http/h2c). Outgoing
 * plaintext goes straight through mdm_tls_write into ciphertext out.
 *
 * Typical driver, run on the connection's shard thread:
 *
 *     recv completion:  mdm_tls_feed(c, bytes, n)  (or mdm_tls_feed_eof(c) on 0)
 *                       ret = mdm_tls_advance(c)
 *                       hand mdm_tls_plain_in(c) to the upper layer, which may mdm_tls_write
 *                       send mdm_tls_cipher_out(c) if non-empty (also after an error: it may
 *                       carry an alert), then close on ret != 0
 *     send completion:  consume the sent bytes of cipher_out, send the rest
 *
 * Threads: an mdm_tls_ctx_t is immutable after creation and shared by every shard thread;
 * mdm_tls_conn_new may be called on it from several threads at once. wolfSSL's session cache
 * and the default session-ticket key are process-wide and lock-protected. A connection is used
 * by one thread at a time.
 */
#ifndef MDM_CORE_TLS_H
#define MDM_CORE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/common.h"

typedef struct mdm_tls_ctx mdm_tls_ctx_t;   /* shared by all shard threads */
typedef struct mdm_tls_conn mdm_tls_conn_t; /* one per connection, used by one thread */

/** Default cap of the ciphertext-in buffer: 64 KiB plus one maximal TLS 1.2 record. */
#define MDM_TLS_CIPHER_IN_MAX_DEFAULT (64 * 1024 + 5 + 16384 + 2048)
/** Default cap of the ciphertext-out buffer. */
#define MDM_TLS_CIPHER_OUT_MAX_DEFAULT (256 * 1024)
/** Default cap of the plaintext-in buffer (mdm_tls_advance stops decrypting when full). */
#define MDM_TLS_PLAIN_IN_MAX_DEFAULT (64 * 1024)

enum mdm_tls_client_auth {
    MDM_TLS_CLIENT_NONE,     /* no CertificateRequest */
    MDM_TLS_CLIENT_OPTIONAL, /* request; verify against client_ca_path if one is presented */
    MDM_TLS_CLIENT_REQUIRED, /* request; fail the handshake without a valid certificate */
};

struct mdm_tls_server_opts {
    const char *cert_path;                /* PEM, may be a chain (leaf first) */
    const char *key_path;                 /* PEM private key matching the leaf */
    const char *client_ca_path;           /* PEM CA(s) for client certificates, NULL = none */
    enum mdm_tls_client_auth client_auth; /* != NONE requires client_ca_path */
    /* resumption by ticket (TLS 1.2 and 1.3), usually true; off when client_auth != NONE */
    bool session_tickets;
    const char *const *alpn; /* NULL or NULL-terminated list, in server preference order */
    size_t cipher_in_max;    /* bytes; 0 = MDM_TLS_CIPHER_IN_MAX_DEFAULT */
    size_t cipher_out_max;   /* bytes; 0 = MDM_TLS_CIPHER_OUT_MAX_DEFAULT */
    size_t plain_in_max;     /* bytes; 0 = MDM_TLS_PLAIN_IN_MAX_DEFAULT */
};

struct mdm_tls_client_opts {
    const char *ca_path;   /* PEM trust anchors; NULL = no verification (tests/bench only) */
    const char *cert_path; /* client certificate (PEM, may be a chain), optional */
    const char *key_path;  /* its private key; required when cert_path is set */
    /* or a client certificate and key as DER buffers (copied by wolfSSL; not with cert_path):
     * the APNs push certificate, whose key lives sealed in the database, never in a file */
    const uint8_t *cert_der;
    size_t cert_der_len;
    const uint8_t *key_der; /* PKCS#1/SEC1/PKCS#8 DER; required when cert_der is set */
    size_t key_der_len;
    const char *alpn;      /* protocol to offer, e.g. "h2", or NULL */
    bool tls12_only;       /* cap the version at TLS 1.2 (tests/bench) */
    size_t cipher_in_max;  /* bytes; 0 = MDM_TLS_CIPHER_IN_MAX_DEFAULT */
    size_t cipher_out_max; /* bytes; 0 = MDM_TLS_CIPHER_OUT_MAX_DEFAULT */
    size_t plain_in_max;   /* bytes; 0 = MDM_TLS_PLAIN_IN_MAX_DEFAULT */
};

/**
 * Initialises wolfSSL once per process. Idempotent and thread-safe; the ctx constructors call
 * it too. Returns 0 or MDM_ETLS.
 */
MDM_MUST_CHECK int mdm_tls_global_init(void);

/**
 * Frees the calling thread's wolfSSL caches: wolfSSL keeps a thread-local fixed-point ECC
 * cache (FP_ECC, several MB once warm, bounded). Call on every thread that ran handshakes,
 * just before it exits (shard threads, test threads); harmless on a thread that did not.
 */
void mdm_tls_thread_cleanup(void);

/**
 * Releases wolfSSL's process-wide state (session cache, the calling thread's caches). Call at
 * most once, at exit, after every ctx and conn was freed; TLS cannot be used afterwards.
 */
void mdm_tls_global_cleanup(void);

/**
 * Creates a server context: TLS 1.2 and 1.3 only, ECDHE over X25519 then P-256, AEAD cipher
 * suites only (ECDSA or RSA certificates), session tickets as configured, the client-auth mode
 * of o->client_auth with certificates verified against o->client_ca_path only. The key must
 * match the leaf certificate (checked by signing). The options are copied; o may be freed
 * afterwards. On success *out is owned by the caller (mdm_tls_ctx_free).
 *
 * Resumption: with client_auth == NONE, TLS 1.3 and 1.2 clients resume by ticket (ticket keys
 * are per context, made at random and rotated by wolfSSL) and TLS 1.2 clients without ticket
 * support by session id (wolfSSL's small, fixed-size, process-wide session cache). With
 * client_auth != NONE the context never resumes: wolfSSL 5.5 tickets do not carry the client
 * certificate and its session cache is shared by all contexts, so every handshake verifies
 * the certificate that mdm_tls_peer reports.
 *
 * Returns 0, MDM_ECONFIG (inconsistent options), MDM_ETLS (a file failed to load: an error
 * is logged naming it) or -ENOMEM.
 */
MDM_MUST_CHECK int mdm_tls_ctx_new_server(mdm_tls_ctx_t **out, const struct mdm_tls_server_opts *o);

/**
 * Creates a client context (TLS 1.2 and 1.3, same groups and suites as the server). TLS 1.3
 * resumes by ticket, TLS 1.2 by session id (no 1.2 tickets: a wolfSSL 5.5 client fails the
 * handshake when the server cannot decrypt its ticket). Without o->ca_path the server
 * certificate is not verified at all.
 *
 * Returns 0, MDM_ECONFIG, MDM_ETLS (file named in the error log) or -ENOMEM.
 */
MDM_MUST_CHECK int mdm_tls_ctx_new_client(mdm_tls_ctx_t **out, const struct mdm_tls_client_opts *o);

/** Frees a context; every connection made from it must be freed first. c may be NULL. */
void mdm_tls_ctx_free(mdm_tls_ctx_t *c);

/**
 * Creates a connection on ctx (server or client side, as ctx was made). For a client, sni is
 * the server name sent in SNI and checked against the certificate (DNS name, or an IP literal
 * matched against IP SANs and never sent as SNI); NULL = neither. Ignored by servers. sni is
 * copied. Safe to call from several threads on the same ctx. *out is owned by the caller.
 *
 * Returns 0, -ENOMEM or MDM_ETLS.
 */
MDM_MUST_CHECK int mdm_tls_conn_new(mdm_tls_conn_t **out, mdm_tls_ctx_t *ctx, const char *sni);

/** Frees a connection and its buffers (queues nothing: call mdm_tls_shutdown first). */
void mdm_tls_conn_free(mdm_tls_conn_t *c);

/**
 * Appends ciphertext received from the network; the bytes are copied. Nothing is decrypted
 * until mdm_tls_advance.
 *
 * Returns 0, MDM_ETOOBIG (cipher-in would exceed its cap: stop receiving until advance has
 * drained it; nothing was appended) or -ENOMEM.
 */
MDM_MUST_CHECK int mdm_tls_feed(mdm_tls_conn_t *c, const void *cipher, size_t len);

/** Records that the peer closed its side: once cipher-in is drained, reads report EOF. */
void mdm_tls_feed_eof(mdm_tls_conn_t *c);

/**
 * Drives the handshake (accept or connect), then decrypts everything available into plain_in
 * until it is full or cipher-in runs dry. Check mdm_tls_handshake_done, mdm_tls_plain_in and
 * mdm_tls_cipher_out afterwards: handshake messages and alerts land in cipher_out. A client
 * calls it once before any input to produce its ClientHello.
 *
 * Returns
 *  - 0: progress was made or more bytes are needed. Call again after more ciphertext was fed,
 *    after consuming a full plain_in, or after draining a cipher_out that had reached its
 *    max (the handshake may have been waiting to write);
 *  - MDM_ECLOSED: the peer sent close_notify or the transport hit EOF. Plaintext decrypted
 *    before that is still in plain_in;
 *  - MDM_ETLS: fatal (bad certificate, protocol error, garbage). Logged at debug level with
 *    wolfSSL's reason; mdm_tls_last_error() gives a short text. cipher_out may hold an alert
 *    worth flushing before closing;
 *  - -ENOMEM.
 * Once MDM_ETLS or MDM_ECLOSED is returned, every later call returns the same code.
 */
MDM_MUST_CHECK int mdm_tls_advance(mdm_tls_conn_t *c);

/** True once the handshake completed (and, for a server, the client certificate verified). */
bool mdm_tls_handshake_done(const mdm_tls_conn_t *c);

/**
 * Decrypted bytes waiting for the upper layer, owned by the connection; the caller consumes
 * them with mdm_buf_consume. Valid until mdm_tls_conn_free.
 */
mdm_buf_t *mdm_tls_plain_in(mdm_tls_conn_t *c);

/**
 * Plaintext bytes that mdm_tls_write accepts right now without MDM_ETOOBIG (0 before the
 * handshake is done or after an error). Lets http/h2c stop producing when cipher_out is full.
 */
size_t mdm_tls_write_room(mdm_tls_conn_t *c);

/**
 * Encrypts all len bytes into cipher_out, split into records as needed. All or nothing: on
 * MDM_ETOOBIG nothing was written; drain cipher_out and retry (or split: see
 * mdm_tls_write_room). Only after mdm_tls_handshake_done; plain is not retained.
 *
 * Returns 0, MDM_ETOOBIG, MDM_ECLOSED (mdm_tls_shutdown was called) or MDM_ETLS.
 */
MDM_MUST_CHECK int mdm_tls_write(mdm_tls_conn_t *c, const void *plain, size_t len);

/**
 * Bytes to send, owned by the connection. The caller either consumes what it sent with
 * mdm_buf_consume, or swaps the whole mdm_buf_t contents with its own empty buffer of the same
 * max (to keep bytes stable while a send is in flight) and later gives a buffer back the same
 * way. The connection only ever appends to it.
 */
mdm_buf_t *mdm_tls_cipher_out(mdm_tls_conn_t *c);

/**
 * Queues close_notify into cipher_out (once; later calls do nothing). Writes are refused
 * afterwards. Returns 0, MDM_ETOOBIG (cipher_out full: drain and call again) or MDM_ETLS.
 */
MDM_MUST_CHECK int mdm_tls_shutdown(mdm_tls_conn_t *c);

struct mdm_tls_peer {
    bool present; /* false: no certificate (or none verified / available) */
    /* one-line form, e.g. "/O=mdmd tests/CN=test-device", truncated to fit: for logs and
     * display; identity decisions should use der or sha256_hex */
    char subject[256];
    char issuer[256];    /* same form */
    char sha256_hex[65]; /* lowercase SHA-256 of der */
    const uint8_t *der;  /* leaf certificate; valid while the connection lives */
    size_t der_len;
};

/**
 * The peer's leaf certificate: on a server the client certificate verified in this handshake
 * (servers that request one never resume), on a client the server's (verified only when the
 * ctx has a ca_path; after resumption, the one kept in the session). Filled once the
 * handshake is done; present=false before that or when none. Owned by the connection, valid
 * until mdm_tls_conn_free.
 */
const struct mdm_tls_peer *mdm_tls_peer(mdm_tls_conn_t *c);

/** True when the handshake resumed a session (ticket or session id). */
bool mdm_tls_session_resumed(const mdm_tls_conn_t *c);

/** Negotiated protocol version, e.g. "TLSv1.3"; "unknown" before the handshake. Static. */
const char *mdm_tls_version(const mdm_tls_conn_t *c);

/** Negotiated ALPN protocol, or NULL when none. Valid while the connection lives. */
const char *mdm_tls_alpn(const mdm_tls_conn_t *c);

/** Short description of the last fatal error, "" when none. Valid while the connection lives. */
const char *mdm_tls_last_error(const mdm_tls_conn_t *c);

/**
 * Client side: a reference to the current session for later resumption (call after the
 * handshake; for TLS 1.3 after advance has processed the server's NewSessionTicket). *session
 * is a WOLFSSL_SESSION * owned by the caller: release with mdm_tls_session_free.
 * Returns 0 or MDM_ENOTFOUND (no resumable session, e.g. TLS 1.3 without a ticket).
 */
MDM_MUST_CHECK int mdm_tls_conn_get_session(mdm_tls_conn_t *c, void **session);

/**
 * Client side, before the first advance: offer session (from mdm_tls_conn_get_session) for
 * resumption. The session is copied; the caller still owns it. Returns 0, or MDM_ENOTFOUND
 * when wolfSSL refuses it (expired): the connection stays usable for a full handshake.
 */
MDM_MUST_CHECK int mdm_tls_conn_set_session(mdm_tls_conn_t *c, void *session);

/** Releases a session from mdm_tls_conn_get_session; NULL is fine. */
void mdm_tls_session_free(void *session);

#endif
