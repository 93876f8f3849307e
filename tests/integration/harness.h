/*
 * Integration harness: runs the real mdmd binary ($MDMD_BIN) on 127.0.0.1 with ephemeral
 * ports and a temporary instance folder, and talks to it over real TLS sockets.
 */
#ifndef MDM_TEST_HARNESS_H
#define MDM_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/buf.h"
#include "core/https_client.h"
#include "core/tls.h"

typedef struct server_proc {
    pid_t pid;
    int device_port, admin_port;
    int device_plain_port; /* plain-HTTP device listener, 0 when not configured */
    char dir[512];
    int out_fd; /* reads the server's log file (stdout and stderr) */
} server_proc_t;

/** Runs `mdmd init DIR --hostnames localhost,127.0.0.1` (quietly); returns its exit code. */
int harness_init(const char *dir);
/** The same, and copies the admin API key init printed into key (keylen bytes). */
int harness_init_key(const char *dir, char *key, size_t keylen);

/** Runs mdmd with argv (NULL-terminated, without the binary), stdout+stderr to a file in dir.
 * Returns the exit code, or -1 after timeout_ms (the process is killed). */
int harness_run(const char *dir, const char *const *argv, int timeout_ms, char *output,
                size_t output_len);

/** Starts `mdmd serve DIR --device-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 [extra...]`
 * and waits (bounded) for its "listening" line. Returns 0 or -1. */
int harness_start(server_proc_t *p, const char *dir, const char *const *extra);

/** Sends sig and waits up to timeout_ms; returns the exit status (128+signal when killed by
 * one), or -1 on timeout (then SIGKILLs it). */
int harness_stop(server_proc_t *p, int sig, int timeout_ms);

/** A blocking TLS client: core/https_client (shared with the mdmd command line). */
typedef mdm_https_client_t hclient_t;

/** Connects to 127.0.0.1:port and completes the handshake. ca verifies the server; cert/key
 * are an optional client certificate. session (may be NULL) resumes. Returns 0, or -1 when
 * the connection or handshake fails (e.g. the server refused the client certificate). */
int hclient_connect(hclient_t *c, int port, const char *ca, const char *cert, const char *key,
                    void *session);
void hclient_close(hclient_t *c);

/** Sends raw plaintext bytes. Returns 0 or -1. */
int hclient_send(hclient_t *c, const void *data, size_t len);

/** Reads one HTTP response (headers + Content-Length body) into out; returns the status
 * code, or -1 on error/EOF/timeout (timeout_ms). */
int hclient_read_response(hclient_t *c, mdm_buf_t *out, int timeout_ms);

/** Reads until the server closes; returns 0 when it closed within timeout_ms, else -1. */
int hclient_wait_close(hclient_t *c, int timeout_ms);

/** GET path on a new connection; returns the status and the body in out. */
int https_get(int port, const char *ca, const char *path, mdm_buf_t *out);

/** True when any file of the database folder DIR/db holds len bytes of secret in clear (file
 * receives the first such file's path). For "no secret at rest" checks; stop the server first. */
bool harness_db_holds(const char *dir, const void *secret, size_t len, char *file,
                      size_t file_len);

/** The instance CA path of dir (server certificates chain to it). */
const char *instance_ca(const char *dir);

#endif
