/*
 * `mdmd init` and `mdmd check-certs`: the instance folder's keys, certificates and secrets.
 *
 * Design: every file goes through core/file: written to a temporary sibling with its final
 * mode (never left to the umask), fsync'ed and renamed into place, so a crash leaves either
 * the old or the new file. mdmd.conf is written last, so a folder with mdmd.conf is complete,
 * and an interrupted init can simply be run again. The admin API key is printed once and
 * stored only as its SHA-256.
 *
 * Threads: CLI commands on the main thread before `serve` starts; blocking I/O is fine here.
 */
#include "actors/instance.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "actors/config.h"
#include "core/cms.h"
#include "core/crypto.h"
#include "core/file.h"
#include "core/seal.h"
#include "core/x509.h"

#define HOSTNAMES_MAX 32       /* SAN entries we put into the TLS certificate */
#define CA_DAYS 3650           /* the CA is a trust anchor: Apple's 398-day rule is for leaves */
#define LEAF_DAYS 397          /* one day under Apple's 398-day limit */
#define RA_DAYS 1825           /* SCEP RA: 5 years, never past the CA's notAfter */
#define RA_RENEW_DAYS 30       /* serve replaces an RA certificate closer than this to expiry */
#define API_KEY_BYTES 32
#define API_KEY_HASH_FILE "admin-api-key.sha256"

/* ---- small helpers --------------------------------------------------------------------- */

static int join(char out[PATH_MAX], const char *dir, const char *rel)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, rel);
    return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

/* Creates dir with mode 0700, or makes an existing folder 0700. */
static int ensure_dir(const char *path)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return -errno;
    struct stat st;
    if (stat(path, &st) != 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    return chmod(path, 0700) != 0 ? -errno : 0;
}

/* Concatenates the PEM files a and b into out (mode 0644). */
static int write_chain(const char *out, const char *a, const char *b)
{
    enum { PART_MAX = 64 * 1024 }; /* a certificate PEM is a few KiB */
    uint8_t *pa = NULL, *pb = NULL, *joined = NULL;
    size_t la = 0, lb = 0;
    int ret;
    if ((ret = mdm_file_read(a, PART_MAX, &pa, &la)) != 0 ||
        (ret = mdm_file_read(b, PART_MAX, &pb, &lb)) != 0)
        goto out;
    joined = malloc(la + 1 + lb);
    if (!joined) {
        ret = -ENOMEM;
        goto out;
    }
    memcpy(joined, pa, la);
    if (la > 0 && pa[la - 1] != '\n')
        joined[la++] = '\n';
    memcpy(joined + la, pb, lb);
    ret = mdm_file_write_atomic(out, joined, la + lb, 0644);
out:
    free(pa);
    free(pb);
    free(joined);
    return ret;
}

/* 1 when path is a folder with at least one entry, 0 when empty or absent, or -errno. */
static int dir_has_entries(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            found = 1;
            break;
        }
    }
    closedir(d);
    return found;
}

/* Splits a comma-separated host list into names (pointing into buf). */
static int split_hostnames(const char *csv, char *buf, size_t size, const char **names,
                           size_t *n, FILE *out)
{
    size_t len = strlen(csv);
    *n = 0;
    if (len >= size) {
        if (out)
            fprintf(out, "error: host name list too long (%zu bytes)\n", len);
        return -EINVAL;
    }
    memcpy(buf, csv, len + 1);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = 0;
        if (*tok == 0)
            continue;
        if (*n == HOSTNAMES_MAX) {
            if (out)
                fprintf(out, "error: more than %d host names\n", HOSTNAMES_MAX);
            return -EINVAL;
        }
        if (!mdm_x509_san_entry_valid(tok)) {
            if (out)
                fprintf(out, "error: '%s' is neither a DNS name nor an IP address\n", tok);
            return -EINVAL;
        }
        names[(*n)++] = tok;
    }
    if (*n == 0) {
        if (out)
            fprintf(out, "error: no host names given\n");
        return -EINVAL;
    }
    return 0;
}

/* Unpadded base64url (RFC 4648 section 5); out needs 4 * ceil(n / 3) + 1 bytes. */
static void base64url(const uint8_t *p, size_t n, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t k = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        out[k++] = alphabet[(v >> 18) & 63];
        out[k++] = alphabet[(v >> 12) & 63];
        if (i + 1 < n)
            out[k++] = alphabet[(v >> 6) & 63];
        if (i + 2 < n)
            out[k++] = alphabet[v & 63];
    }
    out[k] = 0;
}

int mdm_instance_hash_api_key(const char *key, char hex_out[65])
{
    assert(key && hex_out);
    return mdm_sha256_hex(key, strlen(key), hex_out);
}

int mdm_instance_read_admin_key_hash(const char *dir, char hex_out[65])
{
    assert(dir && hex_out);
    enum { FILE_MAX = 128 }; /* 64 hex digits, a line end, some slack for white space */
    char path[PATH_MAX];
    uint8_t *buf = NULL;
    size_t len = 0;
    int ret;
    if ((ret = join(path, dir, API_KEY_HASH_FILE)) != 0)
        return ret;
    if ((ret = mdm_file_read(path, FILE_MAX, &buf, &len)) != 0)
        return ret == MDM_ETOOBIG ? MDM_ECONFIG : ret;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
        len--;
    ret = len == 64 ? 0 : MDM_ECONFIG;
    for (size_t i = 0; i < len && ret == 0; i++)
        if (!((buf[i] >= '0' && buf[i] <= '9') || (buf[i] >= 'a' && buf[i] <= 'f')))
            ret = MDM_ECONFIG;
    if (ret == 0) {
        memcpy(hex_out, buf, 64);
        hex_out[64] = 0;
    }
    free(buf);
    return ret;
}

/* ---- init ------------------------------------------------------------------------------ */

struct init_ctx {
    const char *dir;
    const char *hostnames_csv;
    const char **names;
    size_t n_names;
    FILE *out;
    const char *step; /* what failed, for the error line */
    bool kept_secrets;
    char api_key[sizeof(MDM_INSTANCE_API_KEY_PREFIX) + 44];
};

/* Writes the configuration template to path (mode 0600). */
static int write_config(const char *path, const char *hostnames_csv)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return -errno;
    int ret = mdm_config_write_template(f, hostnames_csv);
    if (fclose(f) != 0 && ret == 0)
        ret = -ENOMEM; /* open_memstream can only fail to grow its buffer */
    if (ret == 0)
        ret = mdm_file_write_atomic(path, text, len, 0600);
    free(text);
    return ret;
}

static int make_ca(struct init_ctx *c)
{
    char key[PATH_MAX], crt[PATH_MAX];
    int ret;
    if ((ret = join(key, c->dir, "ca/ca.key")) != 0 || (ret = join(crt, c->dir, "ca/ca.crt")) != 0)
        return ret;
    c->step = "ca/ca.key";
    if ((ret = mdm_x509_key_generate(key, MDM_X509_KEY_EC_P256)) != 0)
        return ret;
    mdm_x509_spec_t spec = {
        .common_name = "mdmd Device CA",
        .organization = "mdmd",
        .validity_days = CA_DAYS,
        /* digitalSignature too: the SCEP CA signs its CMS replies with this key. */
        .key_usage = MDM_X509_KU_KEY_CERT_SIGN | MDM_X509_KU_CRL_SIGN |
                     MDM_X509_KU_DIGITAL_SIGNATURE,
        .is_ca = true,
    };
    c->step = "ca/ca.crt";
    return mdm_x509_make_self_signed(key, crt, &spec);
}

/* Generates dir/<key_rel>, then a certificate for it issued by the instance CA. */
static int make_leaf(struct init_ctx *c, const char *key_rel, const char *crt_rel,
                     const mdm_x509_spec_t *spec)
{
    char ca_key[PATH_MAX], ca_crt[PATH_MAX], key[PATH_MAX], crt[PATH_MAX];
    int ret;
    if ((ret = join(ca_key, c->dir, "ca/ca.key")) != 0 ||
        (ret = join(ca_crt, c->dir, "ca/ca.crt")) != 0 ||
        (ret = join(key, c->dir, key_rel)) != 0 || (ret = join(crt, c->dir, crt_rel)) != 0)
        return ret;
    c->step = key_rel;
    if ((ret = mdm_x509_key_generate(key, MDM_X509_KEY_EC_P256)) != 0)
        return ret;
    c->step = crt_rel;
    return mdm_x509_issue(ca_key, ca_crt, key, crt, spec);
}

static int make_tls(struct init_ctx *c)
{
    /* CN is informational (Apple matches SANs only); the first name if it fits. */
    const char *cn = strlen(c->names[0]) < 64 ? c->names[0] : "mdmd server";
    mdm_x509_spec_t spec = {
        .common_name = cn,
        .organization = "mdmd",
        .validity_days = LEAF_DAYS,
        .san = c->names,
        .n_san = c->n_names,
        .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE,
        .ext_key_usage = MDM_X509_EKU_SERVER_AUTH,
    };
    int ret = make_leaf(c, "tls/server.key", "tls/server.crt", &spec);
    if (ret != 0)
        return ret;
    char chain[PATH_MAX], crt[PATH_MAX], ca[PATH_MAX];
    if ((ret = join(chain, c->dir, "tls/chain.pem")) != 0 ||
        (ret = join(crt, c->dir, "tls/server.crt")) != 0 ||
        (ret = join(ca, c->dir, "ca/ca.crt")) != 0)
        return ret;
    c->step = "tls/chain.pem";
    return write_chain(chain, crt, ca);
}

static int make_signing(struct init_ctx *c)
{
    mdm_x509_spec_t spec = {
        .common_name = "mdmd Profile Signing",
        .organization = "mdmd",
        .validity_days = LEAF_DAYS,
        .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE,
        .ext_key_usage = MDM_X509_EKU_EMAIL_PROTECTION | MDM_X509_EKU_CODE_SIGNING,
    };
    return make_leaf(c, "signing/signing.key", "signing/signing.crt", &spec);
}

/*
 * An RSA-2048 key and certificate from the instance CA for a service that needs RSA key
 * transport (the CA is EC): the SCEP RA (signs CertReps, receives requests) and the FileVault
 * escrow certificate (Macs encrypt recovery keys to it). Validity ends no later than the CA's.
 */
struct rsa_leaf {
    const char *key_rel, *crt_rel, *common_name;
    uint32_t days;
};

static const struct rsa_leaf scep_ra = {MDM_INSTANCE_RA_KEY, MDM_INSTANCE_RA_CERT,
                                        "mdmd SCEP RA", RA_DAYS};
static const struct rsa_leaf escrow = {MDM_INSTANCE_ESCROW_KEY, MDM_INSTANCE_ESCROW_CERT,
                                       "mdmd FileVault Escrow", RA_DAYS};

static int make_rsa_leaf(const char *dir, const struct rsa_leaf *l, const char **step)
{
    char ca_key[PATH_MAX], ca_crt[PATH_MAX], key[PATH_MAX], crt[PATH_MAX];
    int ret;
    if ((ret = join(ca_key, dir, "ca/ca.key")) != 0 || (ret = join(ca_crt, dir, "ca/ca.crt")) != 0 ||
        (ret = join(key, dir, l->key_rel)) != 0 || (ret = join(crt, dir, l->crt_rel)) != 0)
        return ret;
    mdm_x509_info_t *ca = NULL;
    size_t n = 0;
    *step = "ca/ca.crt";
    if ((ret = mdm_x509_inspect_file(ca_crt, &ca, &n)) != 0)
        return ret;
    int64_t left = (ca[0].not_after - (int64_t)time(NULL)) / 86400;
    free(ca);
    mdm_x509_spec_t spec = {
        .common_name = l->common_name,
        .organization = "mdmd",
        .validity_days = left < 1 ? 1 : left < l->days ? (uint32_t)left : l->days,
        .key_usage = MDM_X509_KU_DIGITAL_SIGNATURE | MDM_X509_KU_KEY_ENCIPHERMENT,
    };
    *step = l->key_rel;
    if ((ret = mdm_x509_key_generate(key, MDM_X509_KEY_RSA_2048)) != 0)
        return ret;
    *step = l->crt_rel;
    return mdm_x509_issue(ca_key, ca_crt, key, crt, &spec);
}

/* True when the leaf is usable: it and its key are there, it chains to the CA, and it is
 * valid for RA_RENEW_DAYS more. */
static bool rsa_leaf_ok(const char *dir, const struct rsa_leaf *l, char *why, size_t whylen)
{
    char ca_crt[PATH_MAX], key[PATH_MAX], crt[PATH_MAX];
    if (join(ca_crt, dir, "ca/ca.crt") != 0 || join(key, dir, l->key_rel) != 0 ||
        join(crt, dir, l->crt_rel) != 0) {
        snprintf(why, whylen, "path too long");
        return false;
    }
    if (access(crt, F_OK) != 0 || access(key, F_OK) != 0) {
        snprintf(why, whylen, "missing");
        return false;
    }
    uint8_t *der = NULL;
    size_t len = 0;
    int ret = mdm_x509_read_cert_der(crt, &der, &len);
    if (ret != 0) {
        snprintf(why, whylen, "unreadable: %s", mdm_strerror(ret));
        return false;
    }
    int64_t now = (int64_t)time(NULL);
    mdm_x509_info_t info;
    bool ok = false;
    if (mdm_cms_cert_verify_chain(der, len, ca_crt, now) != 0)
        snprintf(why, whylen, "not valid under ca/ca.crt (expired, or another CA's)");
    else if (mdm_x509_inspect_der(der, len, &info) != 0 || info.key_alg != MDM_X509_KEYALG_RSA)
        snprintf(why, whylen, "not an RSA certificate");
    else if (info.not_after - now < (int64_t)RA_RENEW_DAYS * 86400)
        snprintf(why, whylen, "expires in less than %d days", RA_RENEW_DAYS);
    else
        ok = true;
    free(der);
    return ok;
}

static int ensure_rsa_leaf(const char *dir, const struct rsa_leaf *l, bool *created, char *why,
                           size_t whylen)
{
    assert(dir && created && why);
    *created = false;
    why[0] = 0;
    if (rsa_leaf_ok(dir, l, why, whylen))
        return 0;
    char sub[PATH_MAX], folder[64];
    snprintf(folder, sizeof(folder), "%.*s", (int)(strchr(l->crt_rel, '/') - l->crt_rel),
             l->crt_rel);
    const char *step = folder;
    int ret;
    if ((ret = join(sub, dir, folder)) != 0 || (ret = ensure_dir(sub)) != 0 ||
        (ret = make_rsa_leaf(dir, l, &step)) != 0) {
        char inner[200];
        snprintf(inner, sizeof(inner), "%s", why);
        snprintf(why, whylen, "%s; creating %s: %s", inner, step, mdm_strerror(ret));
        return ret;
    }
    *created = true;
    return 0;
}

int mdm_instance_ensure_scep_ra(const char *dir, bool *created, char *why, size_t whylen)
{
    return ensure_rsa_leaf(dir, &scep_ra, created, why, whylen);
}

int mdm_instance_ensure_escrow(const char *dir, bool *created, char *why, size_t whylen)
{
    return ensure_rsa_leaf(dir, &escrow, created, why, whylen);
}

static int make_secrets_key(struct init_ctx *c)
{
    char path[PATH_MAX], db[PATH_MAX];
    int ret;
    if ((ret = join(path, c->dir, "secrets.key")) != 0 || (ret = join(db, c->dir, "db")) != 0)
        return ret;
    c->step = "secrets.key";
    struct stat st;
    if (stat(path, &st) == 0) {
        /* The database's sealed secrets only open with this key: keep it while db/ has data. */
        int used = dir_has_entries(db);
        if (used < 0)
            return used;
        if (used) {
            c->kept_secrets = true;
            return chmod(path, 0600) != 0 ? -errno : 0;
        }
        if (unlink(path) != 0)
            return -errno;
    }
    return mdm_seal_key_create(path, NULL); /* mode exactly 0600 */
}

static int make_api_key(struct init_ctx *c)
{
    uint8_t raw[API_KEY_BYTES];
    char b64[4 * ((API_KEY_BYTES + 2) / 3) + 1], hex[65], path[PATH_MAX];
    int ret;
    c->step = API_KEY_HASH_FILE;
    if ((ret = join(path, c->dir, API_KEY_HASH_FILE)) != 0 ||
        (ret = mdm_random_bytes(raw, sizeof(raw))) != 0)
        return ret;
    base64url(raw, sizeof(raw), b64);
    explicit_bzero(raw, sizeof(raw));
    snprintf(c->api_key, sizeof(c->api_key), "%s%s", MDM_INSTANCE_API_KEY_PREFIX, b64);
    explicit_bzero(b64, sizeof(b64));
    if ((ret = mdm_instance_hash_api_key(c->api_key, hex)) != 0)
        return ret;
    hex[64] = '\n';
    return mdm_file_write_atomic(path, hex, 65, 0600);
}

static void print_summary(const struct init_ctx *c)
{
    FILE *o = c->out;
    fprintf(o, "Initialised mdmd instance in %s\n", c->dir);
    fprintf(o, "  host names: ");
    for (size_t i = 0; i < c->n_names; i++)
        fprintf(o, "%s%s", i ? ", " : "", c->names[i]);
    fprintf(o, "\n\n");
    fprintf(o, "  %-22s %s\n", "mdmd.conf", "configuration (every key with its default)");
    fprintf(o, "  %-22s %s\n", "ca/ca.crt", "device identity CA, ECDSA P-256, 10 years");
    fprintf(o, "  %-22s %s\n", "ca/ca.key", "its private key");
    fprintf(o, "  %-22s TLS server certificate, ECDSA P-256, %d days, issued by ca/ca.crt\n",
            "tls/server.crt", LEAF_DAYS);
    fprintf(o, "  %-22s %s\n", "tls/server.key", "its private key");
    fprintf(o, "  %-22s %s\n", "tls/chain.pem", "server certificate + CA, served to clients");
    fprintf(o, "  %-22s profile signing certificate, ECDSA P-256, %d days\n",
            "signing/signing.crt", LEAF_DAYS);
    fprintf(o, "  %-22s %s\n", "signing/signing.key", "its private key");
    fprintf(o, "  %-22s SCEP RA certificate, RSA 2048, issued by ca/ca.crt\n",
            MDM_INSTANCE_RA_CERT);
    fprintf(o, "  %-22s %s\n", MDM_INSTANCE_RA_KEY, "its private key");
    fprintf(o, "  %-22s %s\n", "secrets.key",
            c->kept_secrets ? "kept: db/ holds secrets sealed with it"
                            : "seals secrets at rest (AES-256-GCM)");
    fprintf(o, "  %-22s %s\n", API_KEY_HASH_FILE, "SHA-256 of the admin API key");
    fprintf(o, "  %-22s %s\n", "db/", "database folder (filled by mdmd serve)");
    fprintf(o, "\nMacs must trust ca/ca.crt, or replace tls/ with a publicly trusted certificate;\n"
               "check with: mdmd check-certs %s\n",
            c->dir);
    fprintf(o, "\nAdmin API key: %s\n", c->api_key);
    fprintf(o, "Keep this key: it is stored only as a hash.\n");
}

int mdm_instance_init(const char *dir, const char *hostnames_csv, bool force, FILE *out)
{
    assert(dir && out);
    struct init_ctx c = {.dir = dir, .out = out, .step = dir};
    const char *names[HOSTNAMES_MAX];
    char buf[1024], path[PATH_MAX];
    int ret;

    c.hostnames_csv = hostnames_csv ? hostnames_csv : MDM_INSTANCE_DEFAULT_HOSTNAMES;
    if ((ret = split_hostnames(c.hostnames_csv, buf, sizeof(buf), names, &c.n_names, out)) != 0)
        return ret;
    c.names = names;

    if ((ret = join(path, dir, "mdmd.conf")) != 0)
        goto fail;
    if (!force && access(path, F_OK) == 0) {
        fprintf(out,
                "%s already holds an mdmd instance (mdmd.conf exists).\n"
                "Use --force to regenerate its keys, certificates and API key (db/ is kept).\n",
                dir);
        return -EEXIST;
    }
    static const char *const dirs[] = {"", "ca", "tls", "signing", "scep", "escrow", "db"};
    for (size_t i = 0; i < MDM_ARRAY_LEN(dirs); i++) {
        char sub[PATH_MAX];
        c.step = dirs[i][0] ? dirs[i] : dir;
        if ((ret = join(sub, dir, dirs[i])) != 0 || (ret = ensure_dir(sub)) != 0)
            goto fail;
    }
    if ((ret = make_ca(&c)) != 0 || (ret = make_tls(&c)) != 0 || (ret = make_signing(&c)) != 0 ||
        (ret = make_rsa_leaf(dir, &scep_ra, &c.step)) != 0 ||
        (ret = make_rsa_leaf(dir, &escrow, &c.step)) != 0 || (ret = make_secrets_key(&c)) != 0 ||
        (ret = make_api_key(&c)) != 0)
        goto fail;
    c.step = "mdmd.conf"; /* last: its presence marks a complete instance */
    if ((ret = write_config(path, c.hostnames_csv)) != 0)
        goto fail;
    print_summary(&c);
    explicit_bzero(c.api_key, sizeof(c.api_key));
    return 0;
fail:
    explicit_bzero(c.api_key, sizeof(c.api_key));
    fprintf(out, "error: creating %s: %s\n", c.step, mdm_strerror(ret));
    return ret;
}

/* ---- check-certs ----------------------------------------------------------------------- */

/* Checks one file; returns the number of FAIL lines. */
static int check_file(const char *label, const char *path, enum mdm_x509_profile first,
                      const char *const *names, size_t n_names, FILE *out)
{
    mdm_x509_info_t *infos = NULL;
    size_t n = 0;
    int ret = mdm_x509_inspect_file(path, &infos, &n);
    if (ret != 0) {
        fprintf(out, "%s  FAIL  %-18s  %s\n", label, "readable", mdm_strerror(ret));
        return 1;
    }
    int failures = 0;
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < n; i++) {
        char name[PATH_MAX + 16];
        if (n > 1)
            snprintf(name, sizeof(name), "%s[%zu]", label, i + 1);
        else
            snprintf(name, sizeof(name), "%s", label);
        /* Certificates after the leaf of a chain are its CAs. */
        enum mdm_x509_profile profile = i == 0 ? first : MDM_X509_PROFILE_CA;
        fprintf(out, "%s  INFO  %-18s  %s; %s; issuer %s; SHA-256 %s\n", name, "certificate",
                infos[i].subject, infos[i].key_desc, infos[i].issuer, infos[i].fingerprint);
        mdm_x509_result_t res[MDM_X509_RESULTS_MAX];
        size_t k = mdm_x509_check(&infos[i], profile, names, n_names, now, res,
                                  MDM_X509_RESULTS_MAX);
        for (size_t j = 0; j < k; j++) {
            fprintf(out, "%s  %s  %-18s  %s\n", name, mdm_x509_verdict_name(res[j].verdict),
                    res[j].rule, res[j].reason);
            failures += res[j].verdict == MDM_X509_FAIL;
        }
    }
    free(infos);
    return failures;
}

int mdm_instance_check_certs(const char *dir, const char *hostnames_csv,
                             const char *const *extra_files, size_t n_extra, FILE *out)
{
    assert(dir && out);
    assert(n_extra == 0 || extra_files);
    const char *names[HOSTNAMES_MAX];
    size_t n_names = 0;
    char buf[1024];
    if (hostnames_csv) {
        int ret = split_hostnames(hostnames_csv, buf, sizeof(buf), names, &n_names, out);
        if (ret != 0)
            return ret;
    }
    static const struct {
        const char *rel;
        enum mdm_x509_profile profile;
    } own[] = {
        {"tls/server.crt", MDM_X509_PROFILE_TLS_SERVER},
        {"ca/ca.crt", MDM_X509_PROFILE_CA},
        {"signing/signing.crt", MDM_X509_PROFILE_SIGNING},
    };
    int failures = 0;
    for (size_t i = 0; i < MDM_ARRAY_LEN(own); i++) {
        char path[PATH_MAX];
        if (join(path, dir, own[i].rel) != 0) {
            fprintf(out, "%s  FAIL  %-18s  %s\n", own[i].rel, "readable",
                    mdm_strerror(-ENAMETOOLONG));
            failures++;
            continue;
        }
        failures += check_file(own[i].rel, path, own[i].profile, names, n_names, out);
    }
    for (size_t i = 0; i < n_extra; i++)
        failures += check_file(extra_files[i], extra_files[i], MDM_X509_PROFILE_TLS_SERVER, names,
                               n_names, out);
    return failures;
}
