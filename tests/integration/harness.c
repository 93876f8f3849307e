/* Integration harness; see harness.h. */
#include "harness.h"

#include "admin_api.h"
#include "core/file.h"

#include <arpa/inet.h>
#include <dirent.h>
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
    static _Thread_local char path[1024]; /* tests call it from several threads at once */
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
    return harness_init_key(dir, NULL, 0);
}

int harness_init_key(const char *dir, char *key, size_t keylen)
{
    const char *args[] = {"init", dir, "--hostnames", "localhost,127.0.0.1", NULL};
    char out[8192];
    int code = harness_run(dir, args, 60000, out, sizeof(out));
    if (code != 0)
        fprintf(stderr, "mdmd init failed (%d):\n%s\n", code, out);
    else if (key && admin_key_from_init(out, key, keylen) != 0) {
        fprintf(stderr, "no admin API key in the init output:\n%s\n", out);
        code = -1;
    }
    return code;
}

int harness_start(server_proc_t *p, const char *dir, const char *const *extra)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->dir, sizeof(p->dir), "%s", dir);
    /* The server logs into a file, never a pipe: a pipe nobody empties would fill up and
     * block the server's log writes (and with them its shard threads). */
    char log[600];
    snprintf(log, sizeof(log), "%s.serve.log", dir);
    int wfd = open(log, O_CREAT | O_WRONLY | O_APPEND | O_CLOEXEC, 0600);
    p->out_fd = open(log, O_RDONLY | O_CLOEXEC);
    if (wfd < 0 || p->out_fd < 0)
        return -1;
    lseek(p->out_fd, 0, SEEK_END); /* earlier runs' lines are not ours */
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
    p->pid = spawn(argv, wfd);
    close(wfd);

    char buf[8192];
    size_t len = 0;
    long long deadline = now_ms() + 30000;
    while (now_ms() < deadline && len < sizeof(buf) - 1) {
        ssize_t r = read(p->out_fd, buf + len, sizeof(buf) - 1 - len);
        if (r <= 0) {
            if (waitpid(p->pid, NULL, WNOHANG) == p->pid)
                break; /* it exited */
            usleep(20000);
            continue;
        }
        len += (size_t)r;
        buf[len] = '\0';
        const char *line = strstr(buf, "listening device=");
        if (line && strchr(line, '\n') &&
            sscanf(line, "listening device=%d admin=%d device_plain=%d", &p->device_port,
                   &p->admin_port, &p->device_plain_port) >= 2)
            return 0;
    }
    buf[len] = '\0';
    fprintf(stderr, "mdmd serve did not start:\n%s\n", buf);
    kill(p->pid, SIGKILL);
    wait_exit(p->pid, 5000);
    close(p->out_fd);
    return -1;
}

/* Copies what the server logged since the last read to our stderr. */
static void drain_output(server_proc_t *p)
{
    char buf[4096];
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

/* ---- TLS client: thin wrappers over core/https_client ---- */

int hclient_connect(hclient_t *c, int port, const char *ca, const char *cert, const char *key,
                    void *session)
{
    struct mdm_https_connect_opts o = {
        .host = "127.0.0.1",
        .port = port,
        .sni = "localhost",
        .ca_path = ca,
        .cert_path = cert,
        .key_path = key,
        .session = session,
    };
    return mdm_https_connect(c, &o) == 0 ? 0 : -1;
}

void hclient_close(hclient_t *c) { mdm_https_close(c); }

int hclient_send(hclient_t *c, const void *data, size_t len)
{
    return mdm_https_send(c, data, len) == 0 ? 0 : -1;
}

int hclient_read_response(hclient_t *c, mdm_buf_t *out, int timeout_ms)
{
    return mdm_https_read_response(c, out, timeout_ms);
}

int hclient_wait_close(hclient_t *c, int timeout_ms) { return mdm_https_wait_close(c, timeout_ms); }

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

bool harness_db_holds(const char *dir, const void *secret, size_t len, char *file,
                      size_t file_len)
{
    char db[600];
    snprintf(db, sizeof(db), "%s/db", dir);
    DIR *d = opendir(db);
    bool found = false;
    struct dirent *e;
    while (d && !found && (e = readdir(d))) {
        char path[1200];
        snprintf(path, sizeof(path), "%s/%s", db, e->d_name);
        uint8_t *data = NULL;
        size_t n = 0;
        if (e->d_name[0] == '.' || mdm_file_read(path, 256u << 20, &data, &n) != 0)
            continue;
        if (memmem(data, n, secret, len)) {
            found = true;
            snprintf(file, file_len, "%s", path);
        }
        free(data);
    }
    if (d)
        closedir(d);
    return found;
}
