/* Integration harness; see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *mdmd_bin(void)
{
    const char *b = getenv("MDMD_BIN");
    return b ? b : "mdmd";
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *instance_ca(const char *dir)
{
    static char path[1024];
    snprintf(path, sizeof(path), "%s/ca/ca.crt", dir);
    return path;
}

static pid_t spawn(const char *const *argv, int out_fd)
{
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out_fd, 1);
        dup2(out_fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(10000);
    }
}

int harness_run(const char *dir, const char *const *args, int timeout_ms, char *output,
                size_t output_len)
{
    char log[1024];
    snprintf(log, sizeof(log), "%s.run.log", dir);
    int fd = open(log, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    const char *argv[32];
    size_t n = 0;
    argv[n++] = mdmd_bin();
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = spawn(argv, fd);
    int code = wait_exit(pid, timeout_ms);
    if (output && output_len) {
        ssize_t r = pread(fd, output, output_len - 1, 0);
        output[r > 0 ? r : 0] = '\0';
    }
    close(fd);
    unlink(log);
    return code;
}

int harness_init(const char *dir)
{
    const char *args[] = {"init", dir, "--hostnames", "localhost,127.0.0.1", NULL};
    char out[8192];
    int code = harness_run(dir, args, 60000, out, sizeof(out));
    if (code != 0)
        fprintf(stderr, "mdmd init failed (%d):\n%s\n", code, out);
    return code;
}

int harness_start(server_proc_t *p, const char *dir, const char *const *extra)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->dir, sizeof(p->dir), "%s", dir);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0)
        return -1;
    const char *argv[48];
    size_t n = 0;
    argv[n++] = mdmd_bin();
    argv[n++] = "serve";
    argv[n++] = dir;
    argv[n++] = "--device-listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--admin-listen";
    argv[n++] = "127.0.0.1:0";
    for (size_t i = 0; extra && extra[i] && n < 47; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    p->pid = spawn(argv, pipefd[1]);
    close(pipefd[1]);
    p->out_fd = pipefd[0];

    char buf[8192];
    size_t len = 0;
    long long deadline = now_ms() + 30000;
    while (now_ms() < deadline && len < sizeof(buf) - 1) {
        struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
        if (poll(&pfd, 1, 200) <= 0)
            continue;
        ssize_t r = read(p->out_fd, buf + len, sizeof(buf) - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = '\0';
        const char *line = strstr(buf, "listening device=");
        if (line && sscanf(line, "listening device=%d admin=%d", &p->device_port,
                           &p->admin_port) == 2)
            return 0;
    }
    buf[len] = '\0';
    fprintf(stderr, "mdmd serve did not start:\n%s\n", buf);
    kill(p->pid, SIGKILL);
    wait_exit(p->pid, 5000);
    return -1;
}

/* Copies what the server printed (logs) to our stderr, without blocking. */
static void drain_output(server_proc_t *p)
{
    char buf[4096];
    fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
    ssize_t r;
    while ((r = read(p->out_fd, buf, sizeof(buf))) > 0) {
        ssize_t w = write(2, buf, (size_t)r);
        (void)w;
    }
}

int harness_stop(server_proc_t *p, int sig, int timeout_ms)
{
    kill(p->pid, sig);
    int code = wait_exit(p->pid, timeout_ms);
    drain_output(p);
    close(p->out_fd);
    return code;
}

/* ---- TLS client ---- */

static int flush_out(hclient_t *c)
{
    mdm_buf_t *out = mdm_tls_cipher_out(c->tls);
    while (out->len) {
        ssize_t w = send(c->fd, mdm_buf_head(out), out->len, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        mdm_buf_consume(out, (size_t)w);
    }
    return 0;
}

/* Reads once (bounded wait) and feeds TLS. Returns 1 data, 0 timeout, -1 closed/error. */
static int pump_in(hclient_t *c, int timeout_ms)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int pr = poll(&pfd, 1, timeout_ms);
    if (pr == 0)
        return 0;
    if (pr < 0)
        return -1;
    uint8_t buf[16384];
    ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
    if (r < 0)
        return -1;
    if (r == 0) {
        mdm_tls_feed_eof(c->tls);
        return -1;
    }
    if (mdm_tls_feed(c->tls, buf, (size_t)r) != 0)
        return -1;
    return 1;
}

int hclient_connect(hclient_t *c, int port, const char *ca, const char *cert, const char *key,
                    void *session)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    if (mdm_tls_global_init() != 0)
        return -1;
    struct mdm_tls_client_opts o = {.ca_path = ca, .cert_path = cert, .key_path = key};
    if (mdm_tls_ctx_new_client(&c->ctx, &o) != 0)
        return -1;
    if (mdm_tls_conn_new(&c->tls, c->ctx, "localhost") != 0)
        return -1;
    if (session && mdm_tls_conn_set_session(c->tls, session) != 0)
        return -1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    long long deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        int ret = mdm_tls_advance(c->tls);
        if (ret != 0)
            return -1;
        if (flush_out(c) != 0)
            return -1;
        if (mdm_tls_handshake_done(c->tls)) {
            /* TLS 1.3: the server may still reject our certificate after its Finished;
             * give its alert a moment to arrive. */
            if (cert || ca) {
                int r = pump_in(c, 50);
                if (r < 0 || mdm_tls_advance(c->tls) != 0)
                    return -1;
                if (flush_out(c) != 0)
                    return -1;
            }
            return 0;
        }
        if (pump_in(c, 1000) < 0)
            return -1;
    }
    return -1;
}

void hclient_close(hclient_t *c)
{
    if (c->tls)
        mdm_tls_conn_free(c->tls);
    if (c->ctx)
        mdm_tls_ctx_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

int hclient_send(hclient_t *c, const void *data, size_t len)
{
    if (mdm_tls_write(c->tls, data, len) != 0)
        return -1;
    return flush_out(c);
}

/* Parses one complete response at the head of plain; returns its length or 0 if partial. */
static size_t response_length(const mdm_buf_t *plain)
{
    const char *s = (const char *)mdm_buf_head(plain);
    size_t len = plain->len;
    const char *end = memmem(s, len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end - s) + 4;
    size_t body = 0;
    const char *cl = memmem(s, head, "Content-Length:", 15);
    if (cl)
        body = strtoul(cl + 15, NULL, 10);
    return head + body <= len ? head + body : 0;
}

int hclient_read_response(hclient_t *c, mdm_buf_t *out, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    mdm_buf_reset(out);
    for (;;) {
        int ret = mdm_tls_advance(c->tls);
        mdm_buf_t *plain = mdm_tls_plain_in(c->tls);
        size_t n = response_length(plain);
        if (n) {
            if (mdm_buf_append(out, mdm_buf_head(plain), n) != 0 ||
                mdm_buf_append(out, "", 1) != 0)
                return -1;
            out->len--; /* keep a NUL after the bytes for string functions */
            mdm_buf_consume(plain, n);
            int status = 0;
            if (sscanf((const char *)mdm_buf_head(out), "HTTP/1.1 %d", &status) != 1)
                return -1;
            return status;
        }
        if (ret != 0)
            return -1;
        long long left = deadline - now_ms();
        if (left <= 0)
            return -1;
        if (pump_in(c, (int)left) < 0) {
            (void)!mdm_tls_advance(c->tls); /* decrypt what came before the close */
            n = response_length(mdm_tls_plain_in(c->tls));
            if (!n)
                return -1;
        }
    }
}

int hclient_wait_close(hclient_t *c, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        int r = pump_in(c, 100);
        if (r < 0)
            return 0;
        if (mdm_tls_advance(c->tls) != 0)
            return 0;
    }
    return -1;
}

int https_get(int port, const char *ca, const char *path, mdm_buf_t *out)
{
    hclient_t c;
    if (hclient_connect(&c, port, ca, NULL, NULL, NULL) != 0) {
        hclient_close(&c);
        return -1;
    }
    char req[1024];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
    int status = -1;
    if (hclient_send(&c, req, (size_t)n) == 0)
        status = hclient_read_response(&c, out, 10000);
    hclient_close(&c);
    return status;
}
