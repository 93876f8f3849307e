/*
 * actors/auth tests.
 *
 * argon2id: hash and verify (small memory cost, plus one run with the defaults), a wrong
 * password refused, salts differ per hash, bounds on passwords, PINs and parameters, damaged
 * encoded strings, the dummy verification.
 *
 * LDAP against a REAL slapd that the test starts itself: a temporary slapd.conf (core, cosine,
 * inetorgperson and nis schemas; an mdb database in a temporary directory), entries loaded with
 * slapadd before the start, a server certificate for 127.0.0.1 issued by a test CA made with
 * core/x509, and slapd listening on ldap:// and ldaps:// on free loopback ports. Cases: success
 * with groups (groupOfNames search and a group attribute), display name fallback, wrong
 * password, unknown user, empty password (refused before any traffic), filter injection in
 * the user name, ambiguous users, anonymous service bind, misconfiguration (service password,
 * bind DN, base DN, filter), LDAPS and StartTLS with the CA file, an untrusted certificate, a
 * host name the certificate does not name, a closed port and a server that never answers
 * (unavailable, quickly). slapd is killed at the end, also when the test process dies (it gets
 * SIGKILL through PR_SET_PDEATHSIG). A missing slapd FAILS the test: CI installs it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "actors/auth.h"
#include "check.h"
#include "core/common.h"
#include "core/log.h"
#include "core/x509.h"

#ifndef SLAPD /* overridable to check the failure when slapd is missing */
#define SLAPD "/usr/sbin/slapd"
#endif
#define SLAPADD "/usr/sbin/slapadd"
#define SCHEMA_DIR "/etc/ldap/schema"

static void rm_rf(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- argon2id ------------------------------------------------------------------------------- */

static const struct mdm_argon2_params small = {.t_cost = 1, .m_cost_kib = 256, .parallelism = 1};

static void test_password_hash(void)
{
    char h1[MDM_AUTH_ENCODED_MAX + 1], h2[MDM_AUTH_ENCODED_MAX + 1];
    const char *pw = "correct horse battery staple";
    CHECK_EQ_INT(mdm_password_hash(&small, pw, strlen(pw), h1, sizeof(h1)), 0);
    CHECK(strncmp(h1, "$argon2id$v=19$m=256,t=1,p=1$", 29) == 0);
    CHECK_EQ_INT(mdm_password_verify(h1, pw, strlen(pw)), 0);
    CHECK_EQ_INT(mdm_password_verify(h1, "correct horse battery stapl", strlen(pw) - 1), -EACCES);
    CHECK_EQ_INT(mdm_password_verify(h1, "Correct horse battery staple", strlen(pw)), -EACCES);
    /* A fresh salt each time: the same password gives another string, both verify. */
    CHECK_EQ_INT(mdm_password_hash(&small, pw, strlen(pw), h2, sizeof(h2)), 0);
    CHECK(strcmp(h1, h2) != 0);
    CHECK(strncmp(h1, h2, 29) == 0);
    CHECK(strncmp(h1 + 29, h2 + 29, 22) != 0); /* the salts */
    CHECK_EQ_INT(mdm_password_verify(h2, pw, strlen(pw)), 0);

    /* Passwords are bytes: a NUL inside counts. */
    static const char bin[] = {'a', 0, 'b'};
    CHECK_EQ_INT(mdm_password_hash(&small, bin, sizeof(bin), h1, sizeof(h1)), 0);
    CHECK_EQ_INT(mdm_password_verify(h1, bin, sizeof(bin)), 0);
    CHECK_EQ_INT(mdm_password_verify(h1, "a", 1), -EACCES);

    /* Bounds: empty and too long passwords; 1 and MDM_PASSWORD_MAX bytes are fine. */
    static char big[MDM_PASSWORD_MAX + 1];
    memset(big, 'p', sizeof(big));
    CHECK_EQ_INT(mdm_password_hash(&small, "", 0, h1, sizeof(h1)), -EINVAL);
    CHECK_EQ_INT(h1[0], 0);
    CHECK_EQ_INT(mdm_password_hash(&small, big, sizeof(big), h1, sizeof(h1)), -EINVAL);
    CHECK_EQ_INT(mdm_password_hash(&small, "x", 1, h1, sizeof(h1)), 0);
    CHECK_EQ_INT(mdm_password_verify(h1, "x", 1), 0);
    CHECK_EQ_INT(mdm_password_verify(h1, "", 0), -EACCES);
    CHECK_EQ_INT(mdm_password_hash(&small, big, MDM_PASSWORD_MAX, h2, sizeof(h2)), 0);
    CHECK_EQ_INT(mdm_password_verify(h2, big, MDM_PASSWORD_MAX), 0);
    CHECK_EQ_INT(mdm_password_verify(h2, big, MDM_PASSWORD_MAX + 1), -EACCES);
    /* Output too small. */
    char tiny[40];
    CHECK_EQ_INT(mdm_password_hash(&small, "x", 1, tiny, sizeof(tiny)), MDM_ETOOBIG);
    CHECK_EQ_INT(tiny[0], 0);

    /* Parameters out of bounds. */
    struct mdm_argon2_params p = small;
    p.t_cost = 0;
    CHECK_EQ_INT(mdm_password_hash(&p, "x", 1, h1, sizeof(h1)), -EINVAL);
    p = small;
    p.parallelism = 0;
    CHECK_EQ_INT(mdm_password_hash(&p, "x", 1, h1, sizeof(h1)), -EINVAL);
    p = small;
    p.parallelism = 9;
    CHECK_EQ_INT(mdm_password_hash(&p, "x", 1, h1, sizeof(h1)), -EINVAL);
    p = small;
    p.m_cost_kib = 7;
    CHECK_EQ_INT(mdm_password_hash(&p, "x", 1, h1, sizeof(h1)), -EINVAL);
    p = small;
    p.m_cost_kib = 1024 * 1024 + 1;
    CHECK_EQ_INT(mdm_password_hash(&p, "x", 1, h1, sizeof(h1)), -EINVAL);
    p = (struct mdm_argon2_params){.t_cost = 2, .m_cost_kib = 64, .parallelism = 2};
    CHECK_EQ_INT(mdm_password_hash(&p, "x", 1, h1, sizeof(h1)), 0);
    CHECK(strncmp(h1, "$argon2id$v=19$m=64,t=2,p=2$", 28) == 0);
    CHECK_EQ_INT(mdm_password_verify(h1, "x", 1), 0);

    /* Damaged or foreign encoded strings. */
    CHECK_EQ_INT(mdm_password_hash(&small, "x", 1, h1, sizeof(h1)), 0);
    CHECK_EQ_INT(mdm_password_verify("", "x", 1), -EINVAL);
    CHECK_EQ_INT(mdm_password_verify("plain", "x", 1), -EINVAL);
    char d[MDM_AUTH_ENCODED_MAX + 64];
    snprintf(d, sizeof(d), "$argon2i$%s", h1 + strlen("$argon2id$"));
    CHECK_EQ_INT(mdm_password_verify(d, "x", 1), -EINVAL);
    snprintf(d, sizeof(d), "$argon2id$v=19$m=99999999,t=1,p=1$%s", h1 + 29);
    CHECK_EQ_INT(mdm_password_verify(d, "x", 1), -EINVAL); /* would allocate ~95 GiB */
    snprintf(d, sizeof(d), "$argon2id$v=19$m=256,t=100,p=1$%s", h1 + 29);
    CHECK_EQ_INT(mdm_password_verify(d, "x", 1), -EINVAL);
    snprintf(d, sizeof(d), "$argon2id$v=19$m=+256,t=1,p=1$%s", h1 + 29);
    CHECK_EQ_INT(mdm_password_verify(d, "x", 1), -EINVAL);
    snprintf(d, sizeof(d), "%s", h1);
    d[strlen(d) - 5] = '*'; /* not base64 */
    CHECK_EQ_INT(mdm_password_verify(d, "x", 1), -EINVAL);
    snprintf(d, sizeof(d), "%s", h1);
    d[strlen(d) - 10] = d[strlen(d) - 10] == 'A' ? 'B' : 'A'; /* another hash */
    CHECK_EQ_INT(mdm_password_verify(d, "x", 1), -EACCES);
    snprintf(d, sizeof(d), "%.*s", (int)strlen(h1) - 8, h1); /* truncated hash */
    CHECK(mdm_password_verify(d, "x", 1) != 0);
    memset(d, 'a', sizeof(d) - 1);
    d[sizeof(d) - 1] = 0;
    memcpy(d, "$argon2id$v=19$m=256,t=1,p=1$", 29); /* too long */
    CHECK_EQ_INT(mdm_password_verify(d, "x", 1), -EINVAL);

    /* PINs: 4..16 digits. */
    CHECK_EQ_INT(mdm_pin_hash(&small, "123456", h1, sizeof(h1)), 0);
    CHECK_EQ_INT(mdm_pin_verify(h1, "123456"), 0);
    CHECK_EQ_INT(mdm_pin_verify(h1, "123457"), -EACCES);
    CHECK_EQ_INT(mdm_pin_verify(h1, "12345"), -EACCES);
    CHECK_EQ_INT(mdm_pin_verify(h1, ""), -EACCES);
    CHECK_EQ_INT(mdm_pin_verify(h1, "12345a"), -EACCES);
    CHECK_EQ_INT(mdm_pin_hash(&small, "123", h2, sizeof(h2)), -EINVAL);
    CHECK_EQ_INT(mdm_pin_hash(&small, "12a4", h2, sizeof(h2)), -EINVAL);
    CHECK_EQ_INT(mdm_pin_hash(&small, "12345678901234567", h2, sizeof(h2)), -EINVAL);
    CHECK_EQ_INT(mdm_pin_hash(&small, "1234567890123456", h2, sizeof(h2)), 0);
    CHECK_EQ_INT(mdm_pin_hash(&small, "0000", h2, sizeof(h2)), 0);
    CHECK_EQ_INT(mdm_pin_verify(h2, "0000"), 0);

    /* The defaults: t=3, 64 MiB, p=1 (NULL params). */
    uint64_t t0 = mdm_now_ms();
    CHECK_EQ_INT(mdm_password_hash(NULL, pw, strlen(pw), h1, sizeof(h1)), 0);
    CHECK(strncmp(h1, "$argon2id$v=19$m=65536,t=3,p=1$", 31) == 0);
    CHECK_EQ_INT(mdm_password_verify(h1, pw, strlen(pw)), 0);
    CHECK_EQ_INT(mdm_password_verify(h1, "nope", 4), -EACCES);
    uint64_t t1 = mdm_now_ms();
    mdm_password_verify_dummy(NULL);
    uint64_t t2 = mdm_now_ms();
    /* The dummy costs about what a verification does (a third of the three runs above; loose
     * bounds: the machine may be busy). */
    fprintf(stderr, "argon2id defaults: 3 runs %llu ms, dummy %llu ms\n",
            (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1));
    CHECK(5 * (t2 - t1) + 100 >= (t1 - t0) / 3);
    mdm_password_verify_dummy(&small);
}

/* ---- LDAP: pure functions -------------------------------------------------------------------- */

static void test_ldap_escape_and_options(void)
{
    char out[64];
    const char in[] = "a*b()\\c\x01\x7f\xc3\xa9";
    CHECK_EQ_INT(mdm_ldap_escape_filter(in, sizeof(in) - 1, out, sizeof(out)), 0);
    CHECK_STR(out, "a\\2ab\\28\\29\\5cc\\01\\7f\xc3\xa9");
    static const char withnul[] = {'a', 0, 'b'};
    CHECK_EQ_INT(mdm_ldap_escape_filter(withnul, 3, out, sizeof(out)), 0);
    CHECK_STR(out, "a\\00b");
    CHECK_EQ_INT(mdm_ldap_escape_filter("***", 3, out, 10), 0);
    CHECK_STR(out, "\\2a\\2a\\2a");
    CHECK_EQ_INT(mdm_ldap_escape_filter("***", 3, out, 9), MDM_ETOOBIG);
    CHECK_STR(out, "");
    CHECK_EQ_INT(mdm_ldap_escape_filter("", 0, out, 1), 0);

    struct mdm_ldap_options ok = {
        .url = "ldaps://ldap.example.org",
        .base_dn = "dc=example,dc=org",
        .user_filter = "(uid=%s)",
    };
    char err[256];
    CHECK_EQ_INT(mdm_ldap_options_check(&ok, err, sizeof(err)), 0);
    struct mdm_ldap_options o = ok;
    o.url = "";
    CHECK_EQ_INT(mdm_ldap_options_check(&o, err, sizeof(err)), MDM_LDAP_ECONFIG);
    o.url = "http://ldap.example.org";
    CHECK_EQ_INT(mdm_ldap_options_check(&o, err, sizeof(err)), MDM_LDAP_ECONFIG);
    o.url = "ldap://a ldap://b";
    o.starttls = true;
    CHECK_EQ_INT(mdm_ldap_options_check(&o, err, sizeof(err)), MDM_LDAP_ECONFIG);
    o = ok;
    o.starttls = true; /* on ldaps:// */
    CHECK_EQ_INT(mdm_ldap_options_check(&o, err, sizeof(err)), MDM_LDAP_ECONFIG);
    o = ok;
    o.url = "ldap://ldap.example.org"; /* passwords in clear */
    CHECK_EQ_INT(mdm_ldap_options_check(&o, err, sizeof(err)), MDM_LDAP_ECONFIG);
    CHECK(strstr(err, "StartTLS") != NULL);
    o.starttls = true;
    CHECK_EQ_INT(mdm_ldap_options_check(&o, err, sizeof(err)), 0);
    o.starttls = false;
    o.allow_plaintext = true;
    CHECK_EQ_INT(mdm_ldap_options_check(&o, err, sizeof(err)), 0);
    o.url = "LDAP://LDAP.EXAMPLE.ORG:389";
    CHECK_EQ_INT(mdm_ldap_options_check(&o, NULL, 0), 0);
    o = ok;
    o.base_dn = NULL;
    CHECK_EQ_INT(mdm_ldap_options_check(&o, err, sizeof(err)), MDM_LDAP_ECONFIG);
    o = ok;
    o.user_filter = "(uid=alice)";
    CHECK_EQ_INT(mdm_ldap_options_check(&o, err, sizeof(err)), MDM_LDAP_ECONFIG);
    o = ok;
    o.bind_dn = "cn=reader,dc=example,dc=org";
    CHECK_EQ_INT(mdm_ldap_options_check(&o, err, sizeof(err)), MDM_LDAP_ECONFIG);
    o.bind_password = "x";
    CHECK_EQ_INT(mdm_ldap_options_check(&o, err, sizeof(err)), 0);

    /* Bad options are refused by authenticate too, before anything else. */
    mdm_ldap_user_t u;
    o = ok;
    o.url = "ftp://x";
    CHECK_EQ_INT(mdm_ldap_authenticate(&o, "alice", "pw", &u, err, sizeof(err)),
                 MDM_LDAP_ECONFIG);
}

/* ---- LDAP: a real slapd ---------------------------------------------------------------------- */

struct slapd {
    char dir[512];
    char conf[600], log[600], ca[600], other_ca[600];
    int port, tls_port;
    pid_t pid;
};

/* A free loopback TCP port (bound, then released for slapd). */
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

static bool write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

static void print_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f))
        fprintf(stderr, "  | %s", line);
    fclose(f);
}

/* Starts argv[0] with stdout and stderr to log; it gets SIGKILL when this process dies. */
static pid_t spawn(char *const argv[], const char *log)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(126);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    execv(argv[0], argv);
    _exit(127);
}

/* Waits up to timeout_ms for pid; kills it when it takes longer. Returns its exit status or
 * -1. */
static int wait_bounded(pid_t pid, unsigned timeout_ms)
{
    int status;
    for (unsigned waited = 0;; waited += 10) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (r < 0)
            return -1;
        if (waited >= timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        sleep_ms(10);
    }
}

static void slapd_stop(struct slapd *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGTERM);
    if (wait_bounded(d->pid, 3000) < 0 && kill(d->pid, 0) == 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
    }
    CHECK(kill(d->pid, 0) != 0 && errno == ESRCH); /* no process left behind */
    d->pid = 0;
}

static const char ldif[] =
    "dn: dc=example,dc=org\n"
    "objectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n"
    "dn: ou=people,dc=example,dc=org\nobjectClass: organizationalUnit\nou: people\n\n"
    "dn: ou=others,dc=example,dc=org\nobjectClass: organizationalUnit\nou: others\n\n"
    "dn: ou=groups,dc=example,dc=org\nobjectClass: organizationalUnit\nou: groups\n\n"
    "dn: cn=reader,dc=example,dc=org\nobjectClass: organizationalRole\n"
    "objectClass: simpleSecurityObject\ncn: reader\nuserPassword: reader-pw\n\n"
    "dn: uid=alice,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: alice\n"
    "cn: Alice Archer\nsn: Archer\ndisplayName: Alice A.\nmail: alice@example.org\n"
    "businessCategory: cn=engineering,ou=groups,dc=example,dc=org\n"
    "businessCategory: plain-name\nuserPassword: alice-pw\n\n"
    "dn: uid=bob,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: bob\n"
    "cn: Bob Builder\nsn: Builder\nuserPassword: bob-pw\n\n"
    "dn: uid=dup,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: dup\n"
    "cn: Dup One\nsn: One\nuserPassword: dup-pw\n\n"
    "dn: uid=dup,ou=others,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: dup\n"
    "cn: Dup Two\nsn: Two\nuserPassword: dup-pw\n\n"
    "dn: uid=nopw,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\nuid: nopw\n"
    "cn: No Password\nsn: Password\n\n"
    "dn: cn=staff,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: staff\n"
    "member: uid=alice,ou=people,dc=example,dc=org\n"
    "member: uid=bob,ou=people,dc=example,dc=org\n\n"
    "dn: cn=admins,ou=groups,dc=example,dc=org\nobjectClass: groupOfNames\ncn: admins\n"
    "member: uid=alice,ou=people,dc=example,dc=org\n";

/* Certificates: a test CA, a server certificate for 127.0.0.1 from it, and an unrelated CA. */
static bool make_certs(struct slapd *d)
{
    char ca_key[600], srv_key[600], srv_cert[600], other_key[600];
    snprintf(ca_key, sizeof(ca_key), "%s/ca.key", d->dir);
    snprintf(d->ca, sizeof(d->ca), "%s/ca.pem", d->dir);
    snprintf(srv_key, sizeof(srv_key), "%s/server.key", d->dir);
    snprintf(srv_cert, sizeof(srv_cert), "%s/server.pem", d->dir);
    snprintf(other_key, sizeof(other_key), "%s/other.key", d->dir);
    snprintf(d->other_ca, sizeof(d->other_ca), "%s/other.pem", d->dir);
    mdm_x509_spec_t ca = {.common_name = "auth test CA", .validity_days = 2, .is_ca = true,
                          .key_usage = MDM_X509_KU_KEY_CERT_SIGN | MDM_X509_KU_CRL_SIGN};
    static const char *const san[] = {"127.0.0.1"};
    mdm_x509_spec_t srv = {.common_name = "127.0.0.1", .validity_days = 2, .san = san,
                           .n_san = 1, .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE,
                           .ext_key_usage = MDM_X509_EKU_SERVER_AUTH};
    mdm_x509_spec_t other = ca;
    other.common_name = "unrelated CA";
    int ret;
    if ((ret = mdm_x509_key_generate(ca_key, MDM_X509_KEY_EC_P256)) != 0 ||
        (ret = mdm_x509_make_self_signed(ca_key, d->ca, &ca)) != 0 ||
        (ret = mdm_x509_key_generate(srv_key, MDM_X509_KEY_EC_P256)) != 0 ||
        (ret = mdm_x509_issue(ca_key, d->ca, srv_key, srv_cert, &srv)) != 0 ||
        (ret = mdm_x509_key_generate(other_key, MDM_X509_KEY_EC_P256)) != 0 ||
        (ret = mdm_x509_make_self_signed(other_key, d->other_ca, &other)) != 0) {
        fprintf(stderr, "certificates: %s\n", mdm_strerror(ret));
        return false;
    }
    return true;
}

/* Sets up the directory, loads it and starts slapd; false (with the reason printed) if not. */
static bool slapd_start(struct slapd *d)
{
    memset(d, 0, sizeof(*d));
    if (access(SLAPD, X_OK) != 0 || access(SLAPADD, X_OK) != 0 ||
        access(SCHEMA_DIR "/inetorgperson.schema", R_OK) != 0) {
        fprintf(stderr, "FAIL: slapd is not installed (%s, %s, %s): run ./scripts/dev.sh deps "
                        "(Debian packages slapd and ldap-utils)\n",
                SLAPD, SLAPADD, SCHEMA_DIR);
        return false;
    }
    snprintf(d->dir, sizeof(d->dir), "%s", check_tmpdir("auth-slapd"));
    snprintf(d->conf, sizeof(d->conf), "%s/slapd.conf", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/slapd.log", d->dir);
    char db[600], data[600], conf[4096];
    snprintf(db, sizeof(db), "%s/db", d->dir);
    snprintf(data, sizeof(data), "%s/data.ldif", d->dir);
    if (mkdir(db, 0700) != 0 || !make_certs(d) || !write_file(data, ldif))
        return false;
    snprintf(conf, sizeof(conf),
             "include " SCHEMA_DIR "/core.schema\n"
             "include " SCHEMA_DIR "/cosine.schema\n"
             "include " SCHEMA_DIR "/inetorgperson.schema\n"
             "include " SCHEMA_DIR "/nis.schema\n"
             "pidfile %s/slapd.pid\n"
             "argsfile %s/slapd.args\n"
             "modulepath /usr/lib/ldap\n"
             "moduleload back_mdb\n"
             "TLSCertificateFile %s/server.pem\n"
             "TLSCertificateKeyFile %s/server.key\n"
             "access to attrs=userPassword by self write by anonymous auth by * none\n"
             "access to * by * read\n"
             "database mdb\n"
             "maxsize 10485760\n"
             "suffix \"dc=example,dc=org\"\n"
             "rootdn \"cn=admin,dc=example,dc=org\"\n"
             "rootpw admin-secret\n"
             "directory %s\n",
             d->dir, d->dir, d->dir, d->dir, db);
    if (!write_file(d->conf, conf))
        return false;
    char *add_argv[] = {SLAPADD, "-f", d->conf, "-l", data, NULL};
    pid_t pid = spawn(add_argv, d->log);
    int st = pid > 0 ? wait_bounded(pid, 20000) : -1;
    if (st != 0) {
        fprintf(stderr, "slapadd failed (%d):\n", st);
        print_file(d->log);
        return false;
    }
    /* A port may be taken between free_port() and slapd's bind: try a few times. */
    for (int attempt = 0; attempt < 3; attempt++) {
        d->port = free_port();
        d->tls_port = free_port();
        char urls[128];
        snprintf(urls, sizeof(urls), "ldap://127.0.0.1:%d/ ldaps://127.0.0.1:%d/", d->port,
                 d->tls_port);
        char *argv[] = {SLAPD, "-f", d->conf, "-h", urls, "-d", "0", NULL};
        d->pid = spawn(argv, d->log);
        if (d->pid < 0)
            return false;
        for (unsigned waited = 0; waited < 5000; waited += 20) { /* bounded: 5 s */
            if (port_accepts(d->port) && port_accepts(d->tls_port))
                return true;
            if (waitpid(d->pid, NULL, WNOHANG) == d->pid) {
                d->pid = 0;
                break;
            }
            sleep_ms(20);
        }
        slapd_stop(d);
    }
    fprintf(stderr, "slapd did not start:\n");
    print_file(d->log);
    return false;
}

static bool has_group(const mdm_ldap_user_t *u, const char *g)
{
    for (unsigned i = 0; i < u->n_groups; i++)
        if (strcmp(u->groups[i], g) == 0)
            return true;
    return false;
}

/* authenticate, with the elapsed time; checks that err never holds the password. */
static int auth(const struct mdm_ldap_options *o, const char *user, const char *pw,
                mdm_ldap_user_t *u, char *err, uint64_t *ms)
{
    uint64_t t0 = mdm_now_ms();
    int ret = mdm_ldap_authenticate(o, user, pw, u, err, 512);
    if (ms)
        *ms = mdm_now_ms() - t0;
    if (pw[0] && strstr(err, pw)) {
        fprintf(stderr, "password in the error text: %s\n", err);
        check_failed++;
    }
    if (ret != 0 && (u->dn[0] || u->n_groups)) {
        fprintf(stderr, "result not zeroed after %d\n", ret);
        check_failed++;
    }
    return ret;
}

static void test_ldap(void)
{
    struct slapd d;
    bool up = slapd_start(&d);
    CHECK(up); /* missing slapd fails: CI installs it (./scripts/dev.sh deps) */
    if (!up) {
        if (d.dir[0])
            rm_rf(d.dir);
        return;
    }
    char url[128], tls_url[128], name_url[128];
    snprintf(url, sizeof(url), "ldap://127.0.0.1:%d", d.port);
    snprintf(tls_url, sizeof(tls_url), "ldaps://127.0.0.1:%d", d.tls_port);
    snprintf(name_url, sizeof(name_url), "ldaps://localhost:%d", d.tls_port);
    const struct mdm_ldap_options base = {
        .url = url,
        .allow_plaintext = true,
        .bind_dn = "cn=reader,dc=example,dc=org",
        .bind_password = "reader-pw",
        .base_dn = "dc=example,dc=org",
        .user_filter = "(&(objectClass=inetOrgPerson)(uid=%s))",
        .group_filter = "(&(objectClass=groupOfNames)(member=%s))",
        .timeout_ms = 5000,
    };
    struct mdm_ldap_options o = base;
    mdm_ldap_user_t u;
    char err[512];
    uint64_t ms;
    int ret;

    /* Success with groups (groupOfNames search as the service account). */
    ret = auth(&o, "alice", "alice-pw", &u, err, NULL);
    CHECK_EQ_INT(ret, 0);
    if (ret != 0)
        fprintf(stderr, "alice: %s\n", err);
    CHECK_STR(u.dn, "uid=alice,ou=people,dc=example,dc=org");
    CHECK_STR(u.display_name, "Alice A.");
    CHECK_STR(u.email, "alice@example.org");
    CHECK_EQ_INT(u.n_groups, 2);
    CHECK(has_group(&u, "staff") && has_group(&u, "admins"));
    CHECK(!u.groups_truncated);
    /* No displayName: cn; no mail: "". */
    CHECK_EQ_INT(auth(&o, "bob", "bob-pw", &u, err, NULL), 0);
    CHECK_STR(u.display_name, "Bob Builder");
    CHECK_STR(u.email, "");
    CHECK_EQ_INT(u.n_groups, 1);
    CHECK(has_group(&u, "staff"));
    /* A group attribute on the user entry: DNs give their first RDN's value. */
    o.group_attr = "businessCategory";
    o.group_filter = NULL;
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, NULL), 0);
    CHECK_EQ_INT(u.n_groups, 2);
    CHECK(has_group(&u, "engineering") && has_group(&u, "plain-name"));
    o.group_filter = base.group_filter; /* both: merged, no duplicates */
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, NULL), 0);
    CHECK_EQ_INT(u.n_groups, 4);
    o = base;
    /* %u in the group filter: the user name. */
    o.group_filter = "(&(objectClass=groupOfNames)(member=uid=%u,ou=people,dc=example,dc=org))";
    CHECK_EQ_INT(auth(&o, "bob", "bob-pw", &u, err, NULL), 0);
    CHECK(has_group(&u, "staff") && u.n_groups == 1);
    o = base;
    /* Anonymous service bind (the ACL lets anyone read). */
    o.bind_dn = "";
    o.bind_password = "";
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, NULL), 0);
    CHECK_EQ_INT(u.n_groups, 2);
    o = base;

    /* Wrong password, unknown user, empty password: bad credentials. */
    CHECK_EQ_INT(auth(&o, "alice", "wrong", &u, err, NULL), MDM_LDAP_EBADCRED);
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw ", &u, err, NULL), MDM_LDAP_EBADCRED);
    CHECK_EQ_INT(auth(&o, "nobody", "alice-pw", &u, err, NULL), MDM_LDAP_EBADCRED);
    CHECK(strstr(err, "no such user") != NULL);
    CHECK_EQ_INT(auth(&o, "alice", "", &u, err, NULL), MDM_LDAP_EBADCRED);
    CHECK_EQ_INT(auth(&o, "nopw", "", &u, err, NULL), MDM_LDAP_EBADCRED);
    CHECK_EQ_INT(auth(&o, "nopw", "x", &u, err, NULL), MDM_LDAP_EBADCRED);
    CHECK_EQ_INT(auth(&o, "", "alice-pw", &u, err, NULL), MDM_LDAP_EBADCRED);
    /* The empty password is refused before any traffic: even with no directory at all. */
    struct mdm_ldap_options nowhere = base;
    char closed_url[64];
    snprintf(closed_url, sizeof(closed_url), "ldap://127.0.0.1:%d", free_port());
    nowhere.url = closed_url;
    CHECK_EQ_INT(auth(&nowhere, "alice", "", &u, err, NULL), MDM_LDAP_EBADCRED);
    /* Two entries match: refused. */
    CHECK_EQ_INT(auth(&o, "dup", "dup-pw", &u, err, NULL), MDM_LDAP_EBADCRED);
    CHECK(strstr(err, "several") != NULL);

    /* Filter injection: the user name is escaped, so these match no entry at all. */
    static const char *const evil[] = {"*", "a*", "al*ce", "alice)(uid=*", "*)(objectClass=*",
                                       "alice)(|(uid=*", "\\2a", "alice\\"};
    for (size_t i = 0; i < MDM_ARRAY_LEN(evil); i++) {
        ret = auth(&o, evil[i], "alice-pw", &u, err, NULL);
        CHECK_EQ_INT(ret, MDM_LDAP_EBADCRED);
        if (!strstr(err, "no such user"))
            fprintf(stderr, "injection \"%s\": %s\n", evil[i], err);
        CHECK(strstr(err, "no such user") != NULL);
    }

    /* Misconfiguration: service password, bind DN, base DN, filter. */
    o.bind_password = "wrong";
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, NULL), MDM_LDAP_ECONFIG);
    CHECK(strstr(err, "service bind") != NULL);
    o = base;
    o.bind_dn = "cn=nobody,dc=example,dc=org";
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, NULL), MDM_LDAP_ECONFIG);
    o = base;
    o.base_dn = "dc=nowhere,dc=org";
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, NULL), MDM_LDAP_ECONFIG);
    o = base;
    o.user_filter = "(uid=%s";
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, NULL), MDM_LDAP_ECONFIG);
    o = base;

    /* LDAPS and StartTLS, the server certificate verified with the CA file. */
    o.url = tls_url;
    o.allow_plaintext = false;
    o.ca_file = d.ca;
    ret = auth(&o, "alice", "alice-pw", &u, err, NULL);
    CHECK_EQ_INT(ret, 0);
    if (ret != 0)
        fprintf(stderr, "ldaps: %s\n", err);
    CHECK_EQ_INT(u.n_groups, 2);
    CHECK_EQ_INT(auth(&o, "alice", "wrong", &u, err, NULL), MDM_LDAP_EBADCRED);
    o.ca_file = d.other_ca; /* untrusted certificate */
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, NULL), MDM_LDAP_EUNAVAILABLE);
    o.ca_file = NULL; /* the system trust store does not know the test CA */
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, NULL), MDM_LDAP_EUNAVAILABLE);
    o.ca_file = d.ca;
    o.url = name_url; /* "localhost" is not in the certificate */
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, NULL), MDM_LDAP_EUNAVAILABLE);
    o = base;
    o.starttls = true;
    o.allow_plaintext = false;
    o.ca_file = d.ca;
    ret = auth(&o, "bob", "bob-pw", &u, err, NULL);
    CHECK_EQ_INT(ret, 0);
    if (ret != 0)
        fprintf(stderr, "starttls: %s\n", err);
    CHECK(has_group(&u, "staff"));
    o.ca_file = d.other_ca;
    CHECK_EQ_INT(auth(&o, "bob", "bob-pw", &u, err, NULL), MDM_LDAP_EUNAVAILABLE);
    o.ca_file = "/nonexistent/ca.pem";
    ret = auth(&o, "bob", "bob-pw", &u, err, NULL);
    CHECK(ret == MDM_LDAP_ECONFIG || ret == MDM_LDAP_EUNAVAILABLE);
    o = base;
    /* Plain ldap:// needs allow_plaintext. */
    o.allow_plaintext = false;
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, NULL), MDM_LDAP_ECONFIG);
    o = base;

    /* Directory down: a closed port is unavailable at once. */
    o.url = closed_url;
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, &ms), MDM_LDAP_EUNAVAILABLE);
    CHECK(ms < 2000);
    /* A server that accepts connections but never answers: unavailable after timeout_ms. */
    int hole = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof(sa);
    CHECK(hole >= 0 && bind(hole, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
          listen(hole, 16) == 0 && getsockname(hole, (struct sockaddr *)&sa, &salen) == 0);
    char hole_url[64], hole_tls_url[64];
    snprintf(hole_url, sizeof(hole_url), "ldap://127.0.0.1:%d", ntohs(sa.sin_port));
    snprintf(hole_tls_url, sizeof(hole_tls_url), "ldaps://127.0.0.1:%d", ntohs(sa.sin_port));
    o.timeout_ms = 700;
    o.url = hole_url;
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, &ms), MDM_LDAP_EUNAVAILABLE);
    fprintf(stderr, "silent server (ldap://): %llu ms: %s\n", (unsigned long long)ms, err);
    CHECK(ms >= 600 && ms < 3000);
    o.url = hole_tls_url;
    o.allow_plaintext = false;
    o.ca_file = d.ca;
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, &ms), MDM_LDAP_EUNAVAILABLE);
    fprintf(stderr, "silent server (ldaps://): %llu ms: %s\n", (unsigned long long)ms, err);
    CHECK(ms < 3000);
    o.url = hole_url;
    o.starttls = true;
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, &ms), MDM_LDAP_EUNAVAILABLE);
    CHECK(ms < 3000);
    close(hole);
    o = base;

    /* The directory stopped: unavailable. */
    slapd_stop(&d);
    CHECK_EQ_INT(auth(&o, "alice", "alice-pw", &u, err, &ms), MDM_LDAP_EUNAVAILABLE);
    CHECK(ms < 2000);
    rm_rf(d.dir);
}

int main(void)
{
    mdm_log_setup(MDM_LOG_ERROR, false);
    signal(SIGPIPE, SIG_IGN);
    test_password_hash();
    test_ldap_escape_and_options();
    test_ldap();
    return check_finish("auth");
}
