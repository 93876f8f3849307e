/*
 * The admin command line. See cli.h.
 *
 * Each subcommand parses its arguments, sends one request to the admin API (HTTPS, bearer API
 * key, the instance CA as trust anchor) and prints the answer as a table, or as the API's
 * JSON with --json. Nothing here keeps state between runs.
 */
#include "actors/cli.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "actors/config.h"
#include "core/buf.h"
#include "core/cms.h"
#include "core/file.h"
#include "core/https_client.h"

#define CLI_TIMEOUT_MS 60000
#define ARGS_MAX 64
#define REPEAT_MAX 256 /* values of one repeated option; the API checks its own limits */
#define PASSWORD_MAX 1024

/* The values of an option that may be given more than once (--group G --group H). */
struct repeated {
    const char *v[REPEAT_MAX];
    int n;
};

struct opts {
    const char *dir;
    const char *pos[ARGS_MAX]; /* positional arguments after DIR */
    int n_pos;
    bool json, yes, allow_unknown, force, all, password_stdin, signed_, all_devices, jsonl;
    const char *url, *api_key, *ca;
    const char *limit, *after, *serial, *enrolled, *since;
    const char *params_json, *plist_file;
    const char *cert_file, *key_file, *p12_file, *password;
    const char *display_name, *email, *mode, *expires_hours, *status;
    const char *name, *settings_json, *out_file, *below;
    const char *action, *target, *who; /* audit filters */
    const char *pin, *message, *phone, *confirm, *obliteration; /* security actions */
    /* Repeated; where one value is expected (a list filter, policy-profile --device) the
     * first is used. */
    struct repeated groups, users, devices, user_groups, policies;
};

struct target {
    char host[256];
    int port;
    char ca[PATH_MAX];
};

static const struct {
    const char *name;
    int min_pos, max_pos; /* positional arguments after DIR */
} commands[] = {
    {"devices", 0, 0}, {"device", 1, 1},   {"send", 2, ARGS_MAX}, {"commands", 1, 1},
    {"cancel", 2, 2},  {"audit", 0, 0},    {"delete-device", 1, 1},
    {"push-cert", 1, 1}, {"push", 0, 1},
    {"users", 0, 2},   {"invite", 1, 1},   {"invitations", 0, 2}, {"enrollments", 0, 2},
    {"policy-types", 0, 0}, {"policies", 0, 1}, {"policy-create", 2, 2},
    {"policy-update", 1, 1}, {"policy-delete", 1, 1}, {"policy-profile", 1, 1},
    {"deployments", 1, 1}, {"device-policies", 1, 1},
    {"groups", 0, 1},  {"group-create", 1, 1}, {"group-update", 2, 2}, {"group-delete", 1, 1},
    {"apps", 1, 1},    {"device-apps", 1, 1},
    {"lock", 1, 1},    {"cancel-lock", 1, 1}, {"erase", 1, 1}, {"selective-wipe", 1, 1},
    {"restore-policies", 1, 1}, {"revoke", 1, 1}, {"rotate-filevault-key", 1, 1},
    {"renew-certificate", 1, 1}, {"set-ade", 2, 2}, {"actions", 1, 1}, {"lock-pin", 1, 1},
    {"filevault-key", 1, 1},
};

bool mdm_cli_is_command(const char *cmd)
{
    for (size_t i = 0; i < MDM_ARRAY_LEN(commands); i++)
        if (strcmp(commands[i].name, cmd) == 0)
            return true;
    return false;
}

void mdm_cli_usage(FILE *f)
{
    fprintf(f,
            "  mdmd devices DIR [--limit N] [--after UDID] [--serial S] [--enrolled true|false]\n"
            "  mdmd device DIR UDID\n"
            "  mdmd send DIR UDID[,UDID...] REQUEST_TYPE [KEY=STRING | KEY:=JSON]...\n"
            "            [--params-json JSON|@FILE] [--plist FILE] [--allow-unknown]\n"
            "  mdmd commands DIR UDID [--limit N] [--after UUID]\n"
            "  mdmd cancel DIR UDID UUID\n"
            "  mdmd delete-device DIR UDID --yes\n"
            "  mdmd audit DIR [--since UNIX_MS] [--limit N] [--after ID] [--action A|PREFIX.]\n"
            "            [--target T] [--who W] [--status NNN|error] [--jsonl]\n"
            "  mdmd push-cert DIR show\n"
            "  mdmd push-cert DIR upload (--cert FILE --key FILE | --p12 FILE [--password P])\n"
            "            [--force]\n"
            "  mdmd push DIR (UDID[,UDID...] | --all)\n"
            "  mdmd users DIR [list [--group G] [--limit N] [--after NAME]] | show NAME\n"
            "  mdmd users DIR add NAME [--password-stdin | --password P] [--display-name D]\n"
            "            [--email E] [--group G]...\n"
            "  mdmd users DIR passwd NAME [--password-stdin | --password P]\n"
            "  mdmd users DIR disable NAME | enable NAME | delete NAME\n"
            "  mdmd invite DIR USER [--mode password|pin|password_and_pin] [--expires-hours N]\n"
            "  mdmd invitations DIR [list [--user U] [--status S] | show ID | revoke ID]\n"
            "  mdmd enrollments DIR [list [--user U] | show ID]\n"
            "  mdmd policy-types DIR\n"
            "  mdmd policies DIR [ID] [--limit N] [--after ID]\n"
            "  mdmd policy-create DIR TYPE NAME [--settings-json JSON|@FILE]\n"
            "  mdmd policy-update DIR ID [--name N] [--settings-json JSON|@FILE]\n"
            "  mdmd policy-delete DIR ID --yes\n"
            "  mdmd policy-profile DIR ID [--device UDID] [--signed] [--out FILE]\n"
            "  mdmd deployments DIR ID [--limit N] [--after UDID]\n"
            "  mdmd device-policies DIR UDID\n"
            "  mdmd groups DIR [ID] [--limit N] [--after ID]\n"
            "  mdmd group-create DIR NAME [--all-devices] [--device UDID]... [--user NAME]...\n"
            "            [--user-group G]... [--policy ID]...\n"
            "  mdmd group-update DIR ID NAME (the options of group-create: replaces the group)\n"
            "  mdmd group-delete DIR ID --yes\n"
            "  mdmd apps DIR BUNDLE_ID [--below VERSION] [--limit N] [--after UDID]\n"
            "  mdmd device-apps DIR UDID\n"
            "  mdmd lock DIR UDID [--pin 6DIGITS] [--message TEXT] [--phone NUMBER]\n"
            "  mdmd cancel-lock DIR UDID\n"
            "  mdmd erase DIR UDID --confirm UDID [--pin 6DIGITS]\n"
            "            [--obliteration Default|DoNotObliterate|ObliterateWithWarning|Always]\n"
            "  mdmd selective-wipe DIR UDID --yes\n"
            "  mdmd restore-policies DIR UDID\n"
            "  mdmd revoke DIR UDID --yes\n"
            "  mdmd rotate-filevault-key DIR UDID\n"
            "  mdmd renew-certificate DIR UDID\n"
            "  mdmd set-ade DIR UDID on|off\n"
            "  mdmd actions DIR UDID\n"
            "  mdmd lock-pin DIR UDID          (audited)\n"
            "  mdmd filevault-key DIR UDID     (audited)\n"
            "      talk to the admin API of a running server; tables by default, --json for\n"
            "      scripts; --url https://HOST:PORT (default: admin_listen in DIR/mdmd.conf),\n"
            "      --api-key KEY (default: $MDMD_API_KEY), --ca FILE (default: DIR/ca/ca.crt)\n");
}

/* ---- arguments ---- */

static int parse_args(const char *cmd, int argc, char **argv, struct opts *o, FILE *err)
{
    static const struct {
        const char *flag;
        size_t off;
    } flags[] = {
        {"--json", offsetof(struct opts, json)},
        {"--yes", offsetof(struct opts, yes)},
        {"--allow-unknown", offsetof(struct opts, allow_unknown)},
        {"--force", offsetof(struct opts, force)},
        {"--all", offsetof(struct opts, all)},
        {"--password-stdin", offsetof(struct opts, password_stdin)},
        {"--signed", offsetof(struct opts, signed_)},
        {"--all-devices", offsetof(struct opts, all_devices)},
        {"--jsonl", offsetof(struct opts, jsonl)},
    }, repeats[] = {
        {"--group", offsetof(struct opts, groups)},
        {"--user", offsetof(struct opts, users)},
        {"--device", offsetof(struct opts, devices)},
        {"--user-group", offsetof(struct opts, user_groups)},
        {"--policy", offsetof(struct opts, policies)},
    }, valued[] = {
        {"--url", offsetof(struct opts, url)},
        {"--api-key", offsetof(struct opts, api_key)},
        {"--ca", offsetof(struct opts, ca)},
        {"--limit", offsetof(struct opts, limit)},
        {"--after", offsetof(struct opts, after)},
        {"--serial", offsetof(struct opts, serial)},
        {"--enrolled", offsetof(struct opts, enrolled)},
        {"--since", offsetof(struct opts, since)},
        {"--params-json", offsetof(struct opts, params_json)},
        {"--plist", offsetof(struct opts, plist_file)},
        {"--cert", offsetof(struct opts, cert_file)},
        {"--key", offsetof(struct opts, key_file)},
        {"--p12", offsetof(struct opts, p12_file)},
        {"--password", offsetof(struct opts, password)},
        {"--display-name", offsetof(struct opts, display_name)},
        {"--email", offsetof(struct opts, email)},
        {"--mode", offsetof(struct opts, mode)},
        {"--expires-hours", offsetof(struct opts, expires_hours)},
        {"--status", offsetof(struct opts, status)},
        {"--name", offsetof(struct opts, name)},
        {"--settings-json", offsetof(struct opts, settings_json)},
        {"--out", offsetof(struct opts, out_file)},
        {"--below", offsetof(struct opts, below)},
        {"--action", offsetof(struct opts, action)},
        {"--target", offsetof(struct opts, target)},
        {"--who", offsetof(struct opts, who)},
        {"--pin", offsetof(struct opts, pin)},
        {"--message", offsetof(struct opts, message)},
        {"--phone", offsetof(struct opts, phone)},
        {"--confirm", offsetof(struct opts, confirm)},
        {"--obliteration", offsetof(struct opts, obliteration)},
    };
    memset(o, 0, sizeof(*o));
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool *flag = NULL;
        for (size_t f = 0; !flag && f < MDM_ARRAY_LEN(flags); f++)
            if (strcmp(a, flags[f].flag) == 0)
                flag = (bool *)((char *)o + flags[f].off);
        if (flag) {
            *flag = true;
            continue;
        }
        const char **slot = NULL;
        for (size_t v = 0; !slot && v < MDM_ARRAY_LEN(valued); v++)
            if (strcmp(a, valued[v].flag) == 0)
                slot = (const char **)((char *)o + valued[v].off);
        for (size_t r = 0; !slot && r < MDM_ARRAY_LEN(repeats); r++) {
            struct repeated *rep = (struct repeated *)((char *)o + repeats[r].off);
            if (strcmp(a, repeats[r].flag) != 0)
                continue;
            if (rep->n == REPEAT_MAX) {
                fprintf(err, "mdmd %s: %s: at most %d times\n", cmd, a, REPEAT_MAX);
                return 2;
            }
            slot = &rep->v[rep->n++];
        }
        if (slot) {
            if (i + 1 >= argc) {
                fprintf(err, "mdmd %s: %s needs a value\n", cmd, a);
                return 2;
            }
            *slot = argv[++i];
            continue;
        }
        if (a[0] == '-' && a[1] == '-') {
            fprintf(err, "mdmd %s: unknown option %s\n", cmd, a);
            return 2;
        }
        if (!o->dir)
            o->dir = a;
        else if (o->n_pos < ARGS_MAX)
            o->pos[o->n_pos++] = a;
        else
            return 2;
    }
    for (size_t i = 0; i < MDM_ARRAY_LEN(commands); i++) {
        if (strcmp(commands[i].name, cmd) != 0)
            continue;
        if (!o->dir || o->n_pos < commands[i].min_pos || o->n_pos > commands[i].max_pos) {
            fprintf(err, "mdmd %s: wrong number of arguments; usage:\n", cmd);
            mdm_cli_usage(err);
            return 2;
        }
    }
    if (!o->api_key)
        o->api_key = getenv("MDMD_API_KEY");
    if (!o->api_key || !o->api_key[0]) {
        fprintf(err, "mdmd %s: no API key: pass --api-key or set MDMD_API_KEY (the key "
                     "`mdmd init` printed)\n", cmd);
        return 2;
    }
    return 0;
}

/* Splits "https://host:port[/]" or "host:port" (host may be [v6]). */
static int parse_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    if (strncmp(s, "https://", 8) == 0)
        s += 8;
    const char *end = s + strcspn(s, "/");
    const char *colon = NULL;
    if (*s == '[') {
        const char *close = memchr(s, ']', (size_t)(end - s));
        if (!close || close + 1 >= end || close[1] != ':')
            return -EINVAL;
        if ((size_t)(close - s - 1) >= hostlen)
            return -EINVAL;
        snprintf(host, hostlen, "%.*s", (int)(close - s - 1), s + 1);
        colon = close + 1;
    } else {
        for (const char *p = s; p < end; p++)
            if (*p == ':')
                colon = p;
        if (!colon || (size_t)(colon - s) >= hostlen)
            return -EINVAL;
        snprintf(host, hostlen, "%.*s", (int)(colon - s), s);
    }
    char *e;
    long p = strtol(colon + 1, &e, 10);
    if (e != end || p <= 0 || p > 65535 || !host[0])
        return -EINVAL;
    *port = (int)p;
    return 0;
}

static int resolve_target(const char *cmd, const struct opts *o, struct target *t, FILE *err)
{
    if (o->ca)
        snprintf(t->ca, sizeof(t->ca), "%s", o->ca);
    else
        snprintf(t->ca, sizeof(t->ca), "%s/ca/ca.crt", o->dir);
    if (o->url) {
        if (parse_hostport(o->url, t->host, sizeof(t->host), &t->port) != 0) {
            fprintf(err, "mdmd %s: --url %s: expected https://HOST:PORT\n", cmd, o->url);
            return 2;
        }
        return 0;
    }
    static mdm_config_t cfg; /* large; one per process run */
    char e[512];
    if (mdm_config_load(&cfg, o->dir, e, sizeof(e)) != 0) {
        fprintf(err, "mdmd %s: %s (or pass --url)\n", cmd, e);
        return 2;
    }
    if (parse_hostport(cfg.admin_listen, t->host, sizeof(t->host), &t->port) != 0) {
        fprintf(err, "mdmd %s: admin_listen '%s' has no fixed port; pass --url\n", cmd,
                cfg.admin_listen);
        return 2;
    }
    /* A wildcard listener is reached on loopback. */
    if (strcmp(t->host, "0.0.0.0") == 0)
        snprintf(t->host, sizeof(t->host), "127.0.0.1");
    else if (strcmp(t->host, "::") == 0)
        snprintf(t->host, sizeof(t->host), "::1");
    return 0;
}

/* ---- requests ---- */

/* Sends one request; on a 2xx answer resp holds its body (JSON or not) and 0 is returned.
 * Otherwise returns the exit code, having printed the API's error (the JSON body's "error"
 * and "detail") to err, and with --json the error body to outf. resp is the caller's,
 * initialised; after an answer that is not 2xx (exit code 1) it holds that answer's body,
 * otherwise nothing useful after a failure. */
static int call_api_raw(const char *cmd, const struct opts *o, const char *method,
                        const char *path, const char *content_type, const void *body,
                        size_t body_len, mdm_buf_t *resp, FILE *outf, FILE *err)
{
    struct target t;
    int code = resolve_target(cmd, o, &t, err);
    if (code != 0)
        return code;
    char headers[600];
    snprintf(headers, sizeof(headers), "Authorization: Bearer %s\r\nAccept: application/json\r\n",
             o->api_key);
    struct mdm_https_connect_opts co = {
        .host = t.host,
        .port = t.port,
        .ca_path = t.ca,
        .timeout_ms = 10000,
    };
    int status = mdm_https_request(&co, method, path, headers, content_type, body, body_len,
                                   resp, CLI_TIMEOUT_MS);
    if (status < 0) {
        fprintf(err, "mdmd %s: cannot reach the admin API at %s:%d: %s\n", cmd, t.host, t.port,
                status == -1 ? "no answer" : mdm_strerror(status));
        return 3;
    }
    if (status >= 200 && status <= 299)
        return 0;
    json_error_t je;
    json_t *j = resp->len ? json_loadb((const char *)mdm_buf_head(resp), resp->len, 0, &je)
                          : NULL;
    if (resp->len && !j) {
        fprintf(err, "mdmd %s: HTTP %d with a body that is not JSON: %.200s\n", cmd, status,
                (const char *)mdm_buf_head(resp));
        return 1;
    }
    const char *e = json_string_value(json_object_get(j, "error"));
    const char *d = json_string_value(json_object_get(j, "detail"));
    if (o->json && j) {
        json_dumpf(j, outf, JSON_INDENT(2));
        fputc('\n', outf);
    }
    fprintf(err, "mdmd %s: %d %s%s%s\n", cmd, status, e ? e : "error", d && d[0] ? ": " : "",
            d ? d : "");
    json_decref(j);
    return 1;
}

/* call_api_raw() for a JSON answer: on success *out holds it parsed (or NULL when empty);
 * after an error answer (exit code 1) its JSON body, when it had one (cancel-lock reads the
 * PIN from its 409), else NULL. The caller json_decref()s *out either way. Returns the exit
 * code (0 for a 2xx answer). */
static int call_api(const char *cmd, const struct opts *o, const char *method, const char *path,
                    const char *content_type, const void *body, size_t body_len, json_t **out,
                    FILE *outf, FILE *err)
{
    mdm_buf_t resp;
    mdm_buf_init(&resp, 64 * 1024 * 1024);
    int code = call_api_raw(cmd, o, method, path, content_type, body, body_len, &resp, outf,
                            err);
    json_error_t je;
    json_t *j = (code == 0 || code == 1) && resp.len
                    ? json_loadb((const char *)mdm_buf_head(&resp), resp.len, 0, &je)
                    : NULL;
    if (code == 0 && resp.len && !j) {
        fprintf(err, "mdmd %s: an answer that is not JSON: %.200s\n", cmd,
                (const char *)mdm_buf_head(&resp));
        code = 1;
    }
    mdm_buf_dispose(&resp);
    *out = j;
    return code;
}

/* ---- output ---- */

static void fmt_time(json_t *v, char *buf, size_t len)
{
    json_int_t ms = json_integer_value(v);
    if (ms <= 0) {
        snprintf(buf, len, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%SZ", &tm);
}

static const char *str_or(json_t *obj, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s && s[0] ? s : dflt;
}

static void print_json(json_t *j, FILE *out)
{
    json_dumpf(j, out, JSON_INDENT(2));
    fputc('\n', out);
}

static void print_devices(json_t *j, FILE *out)
{
    json_t *list = json_object_get(j, "devices");
    fprintf(out, "%-40s %-14s %-14s %-16s %-10s %s\n", "UDID", "SERIAL", "STATE", "MODEL", "OS",
            "LAST SEEN");
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d) {
        char seen[32];
        fmt_time(json_object_get(d, "last_seen_ms"), seen, sizeof(seen));
        fprintf(out, "%-40s %-14s %-14s %-16s %-10s %s\n", str_or(d, "udid", "-"),
                str_or(d, "serial", "-"), str_or(d, "state", "-"), str_or(d, "model", "-"),
                str_or(d, "os_version", "-"), seen);
    }
    fprintf(out, "%zu device%s", json_array_size(list), json_array_size(list) == 1 ? "" : "s");
    const char *next = json_string_value(json_object_get(j, "next_after"));
    if (next)
        fprintf(out, " (more: --after %s)", next);
    fputc('\n', out);
}

static void print_device(json_t *d, FILE *out)
{
    const char *k;
    json_t *v;
    json_object_foreach(d, k, v) {
        char buf[64];
        size_t kl = strlen(k);
        if (kl > 3 && strcmp(k + kl - 3, "_ms") == 0 && json_integer_value(v) > 0) {
            fmt_time(v, buf, sizeof(buf));
            fprintf(out, "%-24s %s\n", k, buf);
        } else if (json_is_string(v)) {
            fprintf(out, "%-24s %s\n", k, json_string_value(v)[0] ? json_string_value(v) : "-");
        } else {
            char *t = json_dumps(v, JSON_ENCODE_ANY);
            fprintf(out, "%-24s %s\n", k, t ? t : "?");
            free(t);
        }
    }
}

static void print_commands(json_t *j, FILE *out)
{
    json_t *list = json_object_get(j, "commands");
    fprintf(out, "%-36s %-26s %-14s %s\n", "UUID", "REQUEST TYPE", "STATUS", "UPDATED");
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c) {
        json_t *ev = json_object_get(c, "events");
        char when[32];
        fmt_time(json_object_get(json_array_get(ev, json_array_size(ev) - 1), "at_ms"), when,
                 sizeof(when));
        fprintf(out, "%-36s %-26s %-14s %s\n", str_or(c, "command_uuid", "-"),
                str_or(c, "request_type", "?"), str_or(c, "status", "-"), when);
    }
    fprintf(out, "%zu command%s\n", json_array_size(list), json_array_size(list) == 1 ? "" : "s");
}

static void print_audit(json_t *j, FILE *out)
{
    json_t *list = json_object_get(j, "events");
    fprintf(out, "%-20s %-18s %-16s %-30s %-22s %-6s %s\n", "TIME", "WHO", "ACTION", "TARGET",
            "SOURCE", "STATUS", "DETAIL");
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        char when[32];
        fmt_time(json_object_get(e, "at_ms"), when, sizeof(when));
        fprintf(out, "%-20s %-18s %-16s %-30s %-22s %-6lld %s\n", when, str_or(e, "who", "-"),
                str_or(e, "action", "-"), str_or(e, "target", "-"), str_or(e, "source", "-"),
                (long long)json_integer_value(json_object_get(e, "status")),
                str_or(e, "detail", ""));
    }
    fprintf(out, "%zu event%s", json_array_size(list), json_array_size(list) == 1 ? "" : "s");
    const char *next = json_string_value(json_object_get(j, "next_after"));
    if (next)
        fprintf(out, " (more: --after %s)", next);
    fputc('\n', out);
}

static void print_enqueued(json_t *j, FILE *out)
{
    fprintf(out, "command %s (%s)\n", str_or(j, "command_uuid", "?"),
            str_or(j, "request_type", "?"));
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j, "queued"), i, v)
        fprintf(out, "  queued  %s\n", json_string_value(v));
    json_array_foreach(json_object_get(j, "failed"), i, v)
        fprintf(out, "  FAILED  %s  %lld %s\n", str_or(v, "udid", "?"),
                (long long)json_integer_value(json_object_get(v, "status")),
                str_or(v, "error", ""));
}

/* ---- subcommands ---- */

/* Appends "&name=value" (percent-encoding the value) to the query in q. */
static int add_query(mdm_buf_t *q, const char *name, const char *value)
{
    if (!value)
        return 0;
    int ret = mdm_buf_printf(q, "%c%s=", q->len ? '&' : '?', name);
    for (const unsigned char *p = (const unsigned char *)value; ret == 0 && *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~')
            ret = mdm_buf_printf(q, "%c", *p);
        else
            ret = mdm_buf_printf(q, "%%%02X", *p);
    }
    return ret;
}

/* The values of a repeated option as a JSON array of strings. */
static json_t *string_array(const struct repeated *r)
{
    json_t *a = json_array();
    for (int i = 0; a && i < r->n; i++)
        json_array_append_new(a, json_string(r->v[i]));
    return a;
}

/* A removal goes ahead only with --yes; without it, says what would go ("this removes ..."). */
static bool confirmed(const char *cmd, const struct opts *o, FILE *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool confirmed(const char *cmd, const struct opts *o, FILE *err, const char *fmt, ...)
{
    if (o->yes)
        return true;
    va_list ap;
    va_start(ap, fmt);
    fprintf(err, "mdmd %s: this removes ", cmd);
    vfprintf(err, fmt, ap);
    fprintf(err, "; add --yes\n");
    va_end(ap);
    return false;
}

/* The JSON object given to option flag as text or as @FILE; NULL (reported) when it is not
 * one. */
static json_t *json_object_arg(const char *cmd, const char *flag, const char *value, FILE *err)
{
    json_error_t je;
    json_t *j;
    if (value[0] == '@') {
        uint8_t *data = NULL;
        size_t len = 0;
        int ret = mdm_file_read(value + 1, 8u * 1024 * 1024, &data, &len);
        if (ret != 0) {
            fprintf(err, "mdmd %s: %s %s: %s\n", cmd, flag, value + 1, mdm_strerror(ret));
            return NULL;
        }
        j = json_loadb((const char *)data, len, 0, &je);
        free(data);
    } else {
        j = json_loads(value, 0, &je);
    }
    if (!json_is_object(j)) {
        if (j)
            fprintf(err, "mdmd %s: %s: expected a JSON object\n", cmd, flag);
        else
            fprintf(err, "mdmd %s: %s: not valid JSON: %s (line %d, column %d)\n", cmd, flag,
                    je.text, je.line, je.column);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Builds the JSON params object from KEY=STRING / KEY:=JSON words and --params-json. */
static json_t *build_params(const char *cmd, const struct opts *o, int first, FILE *err)
{
    json_error_t je;
    json_t *params = o->params_json ? json_object_arg(cmd, "--params-json", o->params_json, err)
                                    : json_object();
    if (!params)
        return NULL;
    for (int i = first; i < o->n_pos; i++) {
        const char *w = o->pos[i];
        const char *eq = strchr(w, '=');
        if (!eq || eq == w) {
            fprintf(err, "mdmd %s: '%s': expected KEY=STRING or KEY:=JSON\n", cmd, w);
            json_decref(params);
            return NULL;
        }
        bool raw = eq[-1] == ':';
        char key[128];
        size_t klen = (size_t)(eq - w) - (raw ? 1 : 0);
        if (klen == 0 || klen >= sizeof(key)) {
            fprintf(err, "mdmd %s: '%s': bad key\n", cmd, w);
            json_decref(params);
            return NULL;
        }
        memcpy(key, w, klen);
        key[klen] = '\0';
        json_t *v = raw ? json_loads(eq + 1, JSON_DECODE_ANY, &je) : json_string(eq + 1);
        if (!v) {
            fprintf(err, "mdmd %s: %s: not valid JSON: %s\n", cmd, key, raw ? je.text : "");
            json_decref(params);
            return NULL;
        }
        json_object_set_new(params, key, v);
    }
    return params;
}

static int cmd_send(const char *cmd, const struct opts *o, FILE *out, FILE *err)
{
    const char *udids = o->pos[0];
    const char *type = o->pos[1];
    bool bulk = strchr(udids, ',') != NULL;
    char path[256];
    json_t *answer = NULL;
    int code;
    if (o->plist_file) {
        if (bulk || o->n_pos > 2 || o->params_json) {
            fprintf(err, "mdmd %s: --plist sends one Command dictionary to one device; "
                         "leave out parameters\n", cmd);
            return 2;
        }
        uint8_t *data = NULL;
        size_t len = 0;
        int ret = mdm_file_read(o->plist_file, 8u * 1024 * 1024, &data, &len);
        if (ret != 0) {
            fprintf(err, "mdmd %s: %s: %s\n", cmd, o->plist_file, mdm_strerror(ret));
            return 2;
        }
        snprintf(path, sizeof(path), "/api/v1/devices/%s/commands%s", udids,
                 o->allow_unknown ? "?allow_unknown=1" : "");
        code = call_api(cmd, o, "POST", path, "application/xml", data, len, &answer, out, err);
        free(data);
    } else {
        json_t *params = build_params(cmd, o, 2, err);
        if (!params)
            return 2;
        json_t *body = json_pack("{s:s, s:o}", "request_type", type, "params", params);
        if (bulk) {
            json_t *list = json_array();
            char *copy = strdup(udids);
            for (char *save = NULL, *u = strtok_r(copy, ",", &save); u;
                 u = strtok_r(NULL, ",", &save))
                json_array_append_new(list, json_string(u));
            free(copy);
            json_object_set_new(body, "udids", list);
            snprintf(path, sizeof(path), "/api/v1/commands%s",
                     o->allow_unknown ? "?allow_unknown=1" : "");
        } else {
            snprintf(path, sizeof(path), "/api/v1/devices/%s/commands%s", udids,
                     o->allow_unknown ? "?allow_unknown=1" : "");
        }
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        if (!text)
            return 1;
        code = call_api(cmd, o, "POST", path, "application/json", text, strlen(text), &answer,
                        out, err);
        free(text);
    }
    if (code == 0) {
        if (o->json)
            print_json(answer, out);
        else
            print_enqueued(answer, out);
        if (json_array_size(json_object_get(answer, "failed")) > 0)
            code = 1;
    }
    json_decref(answer);
    return code;
}

/* Reads a certificate, key or PKCS#12 file for push-cert upload (bounded). */
static char *read_text_file(const char *cmd, const char *path, size_t *len, FILE *err)
{
    uint8_t *data = NULL;
    int ret = mdm_file_read(path, 1024 * 1024, &data, len);
    if (ret != 0) {
        fprintf(err, "mdmd %s: %s: %s\n", cmd, path, mdm_strerror(ret));
        return NULL;
    }
    return (char *)data;
}

/* The JSON body of PUT /api/v1/push-certificate from the files given, or NULL (reported). */
static json_t *push_cert_body(const char *cmd, const struct opts *o, FILE *err)
{
    bool pem = o->cert_file || o->key_file;
    if (pem == (o->p12_file != NULL) || (pem && !(o->cert_file && o->key_file))) {
        fprintf(err, "mdmd %s: give --cert FILE --key FILE, or --p12 FILE [--password P]\n", cmd);
        return NULL;
    }
    size_t a_len = 0, b_len = 0;
    if (pem) {
        char *cert = read_text_file(cmd, o->cert_file, &a_len, err);
        char *key = cert ? read_text_file(cmd, o->key_file, &b_len, err) : NULL;
        json_t *body = key ? json_pack("{s:s, s:s}", "certificate_pem", cert, "key_pem", key)
                           : NULL;
        if (key)
            explicit_bzero(key, b_len);
        free(cert);
        free(key);
        return body;
    }
    char *p12 = read_text_file(cmd, o->p12_file, &a_len, err);
    if (!p12)
        return NULL;
    mdm_buf_t b64;
    mdm_buf_init(&b64, 0);
    json_t *body = NULL;
    if (mdm_base64_encode(p12, a_len, &b64) == 0 && mdm_buf_append(&b64, "", 1) == 0)
        body = json_pack("{s:s, s:s}", "pkcs12_base64", (const char *)mdm_buf_head(&b64),
                         "password", o->password ? o->password : "");
    explicit_bzero(p12, a_len);
    free(p12);
    mdm_buf_dispose(&b64);
    return body;
}

/* mdmd push-cert DIR show|upload, and mdmd push DIR UDID[,UDID...]|--all. */
static int cmd_push(const char *cmd, const struct opts *o, FILE *out, FILE *err)
{
    const char *method = "POST", *path = "/api/v1/push";
    json_t *body = NULL;
    if (strcmp(cmd, "push-cert") == 0) {
        path = "/api/v1/push-certificate";
        if (strcmp(o->pos[0], "show") == 0) {
            method = "GET";
        } else if (strcmp(o->pos[0], "upload") == 0) {
            method = "PUT";
            if (o->force)
                path = "/api/v1/push-certificate?force=1";
            if (!(body = push_cert_body(cmd, o, err)))
                return 2;
        } else {
            fprintf(err, "mdmd %s: expected show or upload, not '%s'\n", cmd, o->pos[0]);
            return 2;
        }
    } else {
        if ((o->n_pos == 1) == o->all) {
            fprintf(err, "mdmd %s: give UDID[,UDID...] or --all\n", cmd);
            return 2;
        }
        body = o->all ? json_pack("{s:b}", "all", 1) : json_pack("{s:[]}", "udids");
        if (body && !o->all) {
            char *copy = strdup(o->pos[0]);
            for (char *save = NULL, *u = copy ? strtok_r(copy, ",", &save) : NULL; u;
                 u = strtok_r(NULL, ",", &save))
                json_array_append_new(json_object_get(body, "udids"), json_string(u));
            free(copy);
        }
    }
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (strcmp(method, "GET") != 0 && !text)
        return 1;
    json_t *answer = NULL;
    int code = call_api(cmd, o, method, path, text ? "application/json" : NULL, text,
                        text ? strlen(text) : 0, &answer, out, err);
    if (text) {
        explicit_bzero(text, strlen(text)); /* it held the private key */
        free(text);
    }
    if (code == 0)
        print_json(answer, out);
    json_decref(answer);
    return code;
}

/* ---- users, invitations, enrollments ---- */

/* Prints "N things (more: --after X)" under a table; plural NULL: noun + "s". */
static void print_footer(json_t *j, size_t n, const char *noun, const char *plural, FILE *out)
{
    if (n == 1 || !plural)
        fprintf(out, "%zu %s%s", n, noun, n == 1 ? "" : "s");
    else
        fprintf(out, "%zu %s", n, plural);
    const char *next = json_string_value(json_object_get(j, "next_after"));
    if (next)
        fprintf(out, " (more: --after %s)", next);
    fputc('\n', out);
}

static void print_users(json_t *j, FILE *out)
{
    json_t *list = json_object_get(j, "users");
    fprintf(out, "%-24s %-24s %-28s %-8s %-8s %s\n", "NAME", "DISPLAY NAME", "GROUPS",
            "PASSWORD", "STATE", "CREATED");
    size_t i;
    json_t *u;
    json_array_foreach(list, i, u) {
        char groups[256] = "", created[32];
        size_t n = 0, k;
        json_t *g;
        json_array_foreach(json_object_get(u, "groups"), k, g) {
            int w = snprintf(groups + n, sizeof(groups) - n, "%s%s", k ? "," : "",
                             json_string_value(g) ? json_string_value(g) : "?");
            n = w < 0 || (size_t)w >= sizeof(groups) - n ? sizeof(groups) - 1 : n + (size_t)w;
        }
        fmt_time(json_object_get(u, "created_ms"), created, sizeof(created));
        fprintf(out, "%-24s %-24s %-28s %-8s %-8s %s\n", str_or(u, "name", "-"),
                str_or(u, "display_name", "-"), groups[0] ? groups : "-",
                json_is_true(json_object_get(u, "has_password")) ? "set" : "none",
                json_is_true(json_object_get(u, "disabled")) ? "disabled" : "active", created);
    }
    print_footer(j, json_array_size(list), "user", NULL, out);
}

static void print_invitations(json_t *j, FILE *out)
{
    json_t *list = json_object_get(j, "invitations");
    fprintf(out, "%-32s %-24s %-16s %-8s %s\n", "ID", "USER", "MODE", "STATUS", "EXPIRES");
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        char expires[32];
        fmt_time(json_object_get(v, "expires_ms"), expires, sizeof(expires));
        fprintf(out, "%-32s %-24s %-16s %-8s %s\n", str_or(v, "id", "-"), str_or(v, "user", "-"),
                str_or(v, "mode", "-"), str_or(v, "status", "-"), expires);
    }
    print_footer(j, json_array_size(list), "invitation", NULL, out);
}

static void print_enrollments(json_t *j, FILE *out)
{
    json_t *list = json_object_get(j, "enrollments");
    fprintf(out, "%-32s %-24s %-10s %-9s %-40s %s\n", "ID", "USER", "METHOD", "STATUS", "UDID",
            "CREATED");
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        char created[32];
        fmt_time(json_object_get(e, "created_ms"), created, sizeof(created));
        fprintf(out, "%-32s %-24s %-10s %-9s %-40s %s\n", str_or(e, "id", "-"),
                str_or(e, "user", "-"), str_or(e, "method", "-"), str_or(e, "status", "-"),
                str_or(e, "udid", "-"), created);
    }
    print_footer(j, json_array_size(list), "enrollment", NULL, out);
}

/* The answer of mdmd invite: where to send the user, and the PIN (shown this once). */
static void print_invitation_made(json_t *j, FILE *out)
{
    char expires[32];
    fmt_time(json_object_get(j, "expires_ms"), expires, sizeof(expires));
    fprintf(out, "invitation %s for %s (mode %s), expires %s\n", str_or(j, "id", "?"),
            str_or(j, "user", "?"), str_or(j, "mode", "?"), expires);
    fprintf(out, "URL: %s\n", str_or(j, "url", "(unknown: the device listener is not bound)"));
    const char *pin = json_string_value(json_object_get(j, "pin"));
    if (pin)
        fprintf(out, "PIN: %s   (shown only now; give it to the user with the URL)\n", pin);
}

/* Appends "/" and seg percent-encoded (anything but unreserved characters and '@'). */
static int add_segment(mdm_buf_t *b, const char *seg)
{
    int ret = mdm_buf_append_str(b, "/");
    for (const unsigned char *p = (const unsigned char *)seg; ret == 0 && *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.' || *p == '~' || *p == '@')
            ret = mdm_buf_printf(b, "%c", *p);
        else
            ret = mdm_buf_printf(b, "%%%02X", *p);
    }
    return ret;
}

/* Reads one line (without its end) of at most PASSWORD_MAX bytes from f into buf. Returns its
 * length, or -1 (EOF before anything, or too long). */
static int read_line(FILE *f, char buf[PASSWORD_MAX + 2])
{
    if (!fgets(buf, PASSWORD_MAX + 2, f))
        return -1;
    size_t n = strlen(buf);
    if (n && buf[n - 1] == '\n')
        buf[--n] = '\0';
    else if (n > PASSWORD_MAX)
        return -1;
    if (n && buf[n - 1] == '\r')
        buf[--n] = '\0';
    return (int)n;
}

/* Asks on the terminal (echo off). Returns the length or -1. */
static int prompt_password(const char *prompt, char buf[PASSWORD_MAX + 2])
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (!tty)
        return -1;
    struct termios old, quiet;
    bool restore = tcgetattr(fileno(tty), &old) == 0;
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
    }
    fputs(prompt, tty);
    fflush(tty);
    int n = read_line(tty, buf);
    if (restore)
        tcsetattr(fileno(tty), TCSAFLUSH, &old);
    fputc('\n', tty);
    fclose(tty);
    return n;
}

/*
 * The new password for users add / passwd: --password P, --password-stdin (the first line of
 * standard input), else (required only) asked twice on the terminal, or the first line of
 * standard input when it is not a terminal. Writes it into buf; returns 1 (got one), 0 (none:
 * not required and not given) or 2 (usage error, reported).
 */
static int get_password(const char *cmd, const struct opts *o, bool required,
                        char buf[PASSWORD_MAX + 2], FILE *err)
{
    int n;
    if (o->password && o->password_stdin) {
        fprintf(err, "mdmd %s: give --password or --password-stdin, not both\n", cmd);
        return 2;
    }
    if (o->password) {
        n = (int)strlen(o->password);
        if (n > PASSWORD_MAX)
            n = -1;
        else
            memcpy(buf, o->password, (size_t)n + 1);
    } else if (o->password_stdin || (required && !isatty(STDIN_FILENO))) {
        n = read_line(stdin, buf);
    } else if (required) {
        char again[PASSWORD_MAX + 2];
        n = prompt_password("New password: ", buf);
        if (n >= 0 && (prompt_password("Again: ", again) != n || strcmp(buf, again) != 0)) {
            fprintf(err, "mdmd %s: the passwords differ\n", cmd);
            explicit_bzero(again, sizeof(again));
            explicit_bzero(buf, PASSWORD_MAX + 2);
            return 2;
        }
        explicit_bzero(again, sizeof(again));
    } else {
        return 0;
    }
    if (n < 1) {
        fprintf(err, "mdmd %s: expected a password of 1 to %d bytes\n", cmd, PASSWORD_MAX);
        explicit_bzero(buf, PASSWORD_MAX + 2);
        return 2;
    }
    return 1;
}

/* Sends body (consumed; may hold a password: wiped) and prints the answer with print. */
static int send_and_print(const char *cmd, const struct opts *o, const char *method,
                          const char *path, json_t *body, void (*print)(json_t *, FILE *),
                          FILE *out, FILE *err)
{
    bool has_body = body != NULL;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (has_body && !text)
        return 1;
    json_t *answer = NULL;
    int code = call_api(cmd, o, method, path, text ? "application/json" : NULL, text,
                        text ? strlen(text) : 0, &answer, out, err);
    if (text) {
        explicit_bzero(text, strlen(text));
        free(text);
    }
    if (code == 0)
        (o->json ? print_json : print)(answer, out);
    json_decref(answer);
    return code;
}

/* Builds path from a base, an optional segment, an optional tail and query parameters: with
 * list the paging and filter options, then the pairs of extra (name, value, ..., NULL; a
 * NULL value is left out). NULL when out of memory (then reported as exit 1 by the caller).
 * The buffer is the caller's. */
static const char *build_path(mdm_buf_t *p, const char *base, const char *seg,
                              const char *tail, const struct opts *o, bool list,
                              const char *const *extra)
{
    mdm_buf_t q;
    mdm_buf_init(&q, 0);
    int ret = mdm_buf_append_str(p, base);
    if (ret == 0 && seg)
        ret = add_segment(p, seg);
    if (ret == 0 && tail)
        ret = mdm_buf_append_str(p, tail);
    if (list) {
        ret |= add_query(&q, "limit", o->limit) | add_query(&q, "after", o->after) |
               add_query(&q, "user", o->users.v[0]) | add_query(&q, "status", o->status) |
               add_query(&q, "group", o->groups.v[0]);
    }
    for (size_t i = 0; extra && extra[i]; i += 2)
        ret |= add_query(&q, extra[i], extra[i + 1]);
    if (ret == 0 && q.len)
        ret = mdm_buf_append(p, mdm_buf_head(&q), q.len);
    if (ret == 0)
        ret = mdm_buf_append(p, "", 1);
    mdm_buf_dispose(&q);
    return ret == 0 ? (const char *)mdm_buf_head(p) : NULL;
}

/* mdmd users DIR [list|show|add|passwd|disable|enable|delete] [NAME]. */
static int cmd_users(const char *cmd, const struct opts *o, FILE *out, FILE *err)
{
    const char *sub = o->n_pos ? o->pos[0] : "list";
    const char *name = o->n_pos > 1 ? o->pos[1] : NULL;
    bool is_list = strcmp(sub, "list") == 0;
    if (is_list != (name == NULL)) {
        fprintf(err, "mdmd %s: expected list, or show|add|passwd|disable|enable|delete NAME\n",
                cmd);
        return 2;
    }
    mdm_buf_t path;
    mdm_buf_init(&path, 0);
    const char *p = build_path(&path, "/api/v1/users", name, NULL, o, is_list, NULL);
    int code = 2;
    char password[PASSWORD_MAX + 2];
    if (!p) {
        code = 1;
    } else if (is_list) {
        code = send_and_print(cmd, o, "GET", p, NULL, print_users, out, err);
    } else if (strcmp(sub, "show") == 0) {
        code = send_and_print(cmd, o, "GET", p, NULL, print_device, out, err);
    } else if (strcmp(sub, "delete") == 0) {
        code = send_and_print(cmd, o, "DELETE", p, NULL, print_device, out, err);
    } else if (strcmp(sub, "disable") == 0 || strcmp(sub, "enable") == 0) {
        json_t *body = json_pack("{s:b}", "disabled", strcmp(sub, "disable") == 0);
        code = send_and_print(cmd, o, "PATCH", p, body, print_device, out, err);
    } else if (strcmp(sub, "passwd") == 0) {
        code = get_password(cmd, o, true, password, err);
        if (code == 1) {
            json_t *body = json_pack("{s:s}", "password", password);
            explicit_bzero(password, sizeof(password));
            code = send_and_print(cmd, o, "PATCH", p, body, print_device, out, err);
        }
    } else if (strcmp(sub, "add") == 0) {
        code = get_password(cmd, o, false, password, err);
        if (code != 2) {
            json_t *body = json_pack("{s:s}", "name", name);
            if (body && code == 1)
                json_object_set_new(body, "password", json_string(password));
            explicit_bzero(password, sizeof(password));
            if (body && o->display_name)
                json_object_set_new(body, "display_name", json_string(o->display_name));
            if (body && o->email)
                json_object_set_new(body, "email", json_string(o->email));
            if (body && o->groups.n)
                json_object_set_new(body, "groups", string_array(&o->groups));
            code = send_and_print(cmd, o, "POST", "/api/v1/users", body, print_device, out,
                                  err);
        }
    } else {
        fprintf(err, "mdmd %s: unknown action '%s' (list, show, add, passwd, disable, enable, "
                     "delete)\n", cmd, sub);
    }
    mdm_buf_dispose(&path);
    return code;
}

/* mdmd invite DIR USER [--mode M] [--expires-hours N]. */
static int cmd_invite(const char *cmd, const struct opts *o, FILE *out, FILE *err)
{
    json_t *body = json_pack("{s:s, s:s}", "user", o->pos[0], "mode",
                             o->mode ? o->mode : "password");
    if (o->expires_hours) {
        char *end;
        long h = strtol(o->expires_hours, &end, 10);
        if (!*o->expires_hours || *end) {
            fprintf(err, "mdmd %s: --expires-hours: expected a number of hours\n", cmd);
            json_decref(body);
            return 2;
        }
        json_object_set_new(body, "expires_hours", json_integer(h));
    }
    return send_and_print(cmd, o, "POST", "/api/v1/invitations", body, print_invitation_made,
                          out, err);
}

/* mdmd invitations DIR [list|show ID|revoke ID], mdmd enrollments DIR [list|show ID]. */
static int cmd_invitations(const char *cmd, const struct opts *o, FILE *out, FILE *err)
{
    bool inv = strcmp(cmd, "invitations") == 0;
    const char *sub = o->n_pos ? o->pos[0] : "list";
    const char *id = o->n_pos > 1 ? o->pos[1] : NULL;
    bool is_list = strcmp(sub, "list") == 0;
    bool known = is_list || strcmp(sub, "show") == 0 || (inv && strcmp(sub, "revoke") == 0);
    if (!known || is_list != (id == NULL)) {
        fprintf(err, "mdmd %s: expected list, show ID%s\n", cmd, inv ? " or revoke ID" : "");
        return 2;
    }
    bool revoke = strcmp(sub, "revoke") == 0;
    mdm_buf_t path;
    mdm_buf_init(&path, 0);
    const char *p = build_path(&path, inv ? "/api/v1/invitations" : "/api/v1/enrollments", id,
                               revoke ? "/revoke" : NULL, o, is_list, NULL);
    int code = !p ? 1
                  : send_and_print(cmd, o, revoke ? "POST" : "GET", p,
                                   revoke ? json_object() : NULL,
                                   is_list ? (inv ? print_invitations : print_enrollments)
                                           : print_device,
                                   out, err);
    mdm_buf_dispose(&path);
    return code;
}

/* ---- policies, groups, applications ---- */

static long long int_of(json_t *obj, const char *key)
{
    return (long long)json_integer_value(json_object_get(obj, key));
}

static void print_policy_types(json_t *j, FILE *out)
{
    json_t *list = json_object_get(j, "policy_types");
    fprintf(out, "%-28s %-9s %s\n", "TYPE", "DELIVERS", "TITLE");
    size_t i;
    json_t *t;
    json_array_foreach(list, i, t)
        fprintf(out, "%-28s %-9s %s\n", str_or(t, "type", "-"), str_or(t, "delivers", "-"),
                str_or(t, "title", "-"));
    print_footer(j, json_array_size(list), "policy type", NULL, out);
}

static void print_policies(json_t *j, FILE *out)
{
    json_t *list = json_object_get(j, "policies");
    fprintf(out, "%-16s %-28s %-7s %-9s %-20s %s\n", "ID", "TYPE", "VERSION", "DELIVERS",
            "UPDATED", "NAME");
    size_t i;
    json_t *p;
    json_array_foreach(list, i, p) {
        char updated[32];
        fmt_time(json_object_get(p, "updated_ms"), updated, sizeof(updated));
        fprintf(out, "%-16s %-28s %-7lld %-9s %-20s %s\n", str_or(p, "id", "-"),
                str_or(p, "type", "-"), int_of(p, "version"), str_or(p, "delivers", "-"),
                updated, str_or(p, "name", "-"));
    }
    print_footer(j, json_array_size(list), "policy", "policies", out);
}

/* The answer of policy-create / policy-update. */
static void print_policy_saved(json_t *p, FILE *out)
{
    fprintf(out, "policy %s version %lld (%s \"%s\")\n", str_or(p, "id", "?"),
            int_of(p, "version"), str_or(p, "type", "?"), str_or(p, "name", ""));
    json_t *sealed = json_object_get(p, "sealed_settings");
    size_t i;
    json_t *v;
    json_array_foreach(sealed, i, v)
        fprintf(out, "  sealed  %s\n", json_string_value(v) ? json_string_value(v) : "?");
}

static void print_groups(json_t *j, FILE *out)
{
    json_t *list = json_object_get(j, "groups");
    fprintf(out, "%-16s %-7s %-11s %-7s %-5s %-11s %-8s %s\n", "ID", "VERSION", "ALL DEVICES",
            "DEVICES", "USERS", "USER GROUPS", "POLICIES", "NAME");
    size_t i;
    json_t *g;
    json_array_foreach(list, i, g) {
        fprintf(out, "%-16s %-7lld %-11s %-7zu %-5zu %-11zu %-8zu %s\n", str_or(g, "id", "-"),
                int_of(g, "version"),
                json_is_true(json_object_get(g, "all_devices")) ? "yes" : "no",
                json_array_size(json_object_get(g, "devices")),
                json_array_size(json_object_get(g, "users")),
                json_array_size(json_object_get(g, "user_groups")),
                json_array_size(json_object_get(g, "policies")), str_or(g, "name", "-"));
    }
    print_footer(j, json_array_size(list), "group", NULL, out);
}

/* The answer of group-create / group-update. */
static void print_group_saved(json_t *g, FILE *out)
{
    fprintf(out, "group %s version %lld (\"%s\")\n", str_or(g, "id", "?"), int_of(g, "version"),
            str_or(g, "name", ""));
}

/* Deployments, by device (one policy's) or by policy (one device's). */
static void print_deployment_table(json_t *j, bool by_device, FILE *out)
{
    json_t *list = json_object_get(j, "deployments");
    const char *first = by_device ? "UDID" : "POLICY", *key = by_device ? "udid" : "policy_id";
    fprintf(out, "%-40s %-10s %-7s %-8s %-20s %s\n", first, "STATUS", "VERSION", "ACTION",
            "UPDATED", "ERROR");
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d) {
        char updated[32];
        json_t *at = json_object_get(d, "updated_ms");
        fmt_time(at ? at : json_object_get(d, "sent_ms"), updated, sizeof(updated));
        fprintf(out, "%-40s %-10s %-7lld %-8s %-20s %s\n", str_or(d, key, "-"),
                str_or(d, "status", "-"), int_of(d, "policy_version"), str_or(d, "action", "-"),
                updated, str_or(d, "error", ""));
    }
    print_footer(j, json_array_size(list), "deployment", NULL, out);
}

static void print_policy_deployments(json_t *j, FILE *out) { print_deployment_table(j, true, out); }

static void print_device_deployments(json_t *j, FILE *out)
{
    print_deployment_table(j, false, out);
}

/* Applications: a device's ("apps": by bundle id) or an app's Macs ("devices": by UDID). */
static void print_apps(json_t *j, FILE *out)
{
    json_t *list = json_object_get(j, "apps");
    bool by_app = list != NULL;
    if (!by_app)
        list = json_object_get(j, "devices");
    const char *key = by_app ? "bundle_id" : "udid";
    fprintf(out, "%-40s %-14s %-14s %-20s %s\n", by_app ? "BUNDLE ID" : "UDID", "VERSION",
            "BUILD", "REPORTED", "NAME");
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a) {
        char reported[32];
        fmt_time(json_object_get(a, "reported_ms"), reported, sizeof(reported));
        fprintf(out, "%-40s %-14s %-14s %-20s %s\n", str_or(a, key, "-"),
                str_or(a, "short_version", "-"), str_or(a, "version", "-"), reported,
                str_or(a, "name", "-"));
    }
    print_footer(j, json_array_size(list), by_app ? "app" : "device", NULL, out);
}

/* The body of group-create / group-update: the whole group (PUT replaces it). */
static json_t *group_body(const struct opts *o, const char *name)
{
    return json_pack("{s:s, s:b, s:o, s:o, s:o, s:o}", "name", name, "all_devices",
                     o->all_devices, "devices", string_array(&o->devices), "users",
                     string_array(&o->users), "user_groups", string_array(&o->user_groups),
                     "policies", string_array(&o->policies));
}

/* mdmd policy-profile DIR ID [--device UDID] [--signed --out FILE]: the answer is the
 * profile (XML, or DER when signed), not JSON. */
static int cmd_policy_profile(const char *cmd, const struct opts *o, FILE *out, FILE *err)
{
    if (o->signed_ && !o->out_file) {
        fprintf(err, "mdmd %s: --signed gives a binary .mobileconfig: add --out FILE\n", cmd);
        return 2;
    }
    if (o->devices.n > 1) {
        fprintf(err, "mdmd %s: one --device at most\n", cmd);
        return 2;
    }
    const char *query[] = {"device", o->devices.v[0], "signed", o->signed_ ? "1" : NULL, NULL};
    mdm_buf_t path, resp;
    mdm_buf_init(&path, 0);
    mdm_buf_init(&resp, 64 * 1024 * 1024);
    const char *p = build_path(&path, "/api/v1/policies", o->pos[0], "/profile", o, false, query);
    int code = p ? call_api_raw(cmd, o, "GET", p, NULL, NULL, 0, &resp, out, err) : 1;
    const uint8_t *body = mdm_buf_head(&resp);
    if (code == 0 && o->out_file) {
        int ret = mdm_file_write_atomic(o->out_file, body, resp.len, 0600);
        if (ret != 0) {
            fprintf(err, "mdmd %s: %s: %s\n", cmd, o->out_file, mdm_strerror(ret));
            code = 1;
        } else {
            fprintf(out, "%s: %zu bytes\n", o->out_file, resp.len);
        }
    } else if (code == 0) {
        fwrite(body, 1, resp.len, out);
        if (resp.len && body[resp.len - 1] != '\n')
            fputc('\n', out);
    }
    mdm_buf_dispose(&resp);
    mdm_buf_dispose(&path);
    return code;
}

/* GETs path and prints the answer's body as it came (the audit log's JSON lines). */
static int print_body(const char *cmd, const struct opts *o, const char *path, FILE *out,
                      FILE *err)
{
    mdm_buf_t resp;
    mdm_buf_init(&resp, MDM_HTTPS_RESPONSE_MAX);
    int code = call_api_raw(cmd, o, "GET", path, NULL, NULL, 0, &resp, out, err);
    if (code == 0 && resp.len && fwrite(mdm_buf_head(&resp), 1, resp.len, out) != resp.len)
        code = 1;
    mdm_buf_dispose(&resp);
    return code;
}

/* mdmd audit DIR [filters] [--jsonl]: a table, the API's JSON, or the export as is. */
static int cmd_audit(const char *cmd, const struct opts *o, FILE *out, FILE *err)
{
    const char *query[] = {"since",  o->since,  "limit",  o->limit,  "after",  o->after,
                           "action", o->action, "target", o->target, "who",    o->who,
                           "status", o->status, "format", o->jsonl ? "jsonl" : NULL, NULL};
    mdm_buf_t path;
    mdm_buf_init(&path, 0);
    const char *p = build_path(&path, "/api/v1/audit", NULL, NULL, o, false, query);
    int code = !p         ? 1
               : o->jsonl ? print_body(cmd, o, p, out, err)
                          : send_and_print(cmd, o, "GET", p, NULL, print_audit, out, err);
    mdm_buf_dispose(&path);
    return code;
}

/* The policy, group and application subcommands but policy-profile: one request each, under
 * base[/ARG][tail]. */
static int cmd_policy(const char *cmd, const struct opts *o, FILE *out, FILE *err)
{
    const char *arg = o->n_pos ? o->pos[0] : NULL;
    const char *method = "GET", *base = "/api/v1/policies", *seg = arg, *tail = NULL;
    const char *apps_query[] = {"bundle_id", arg, "version_below", o->below, NULL};
    const char *const *extra = NULL;
    bool list = false;
    json_t *body = NULL;
    void (*print)(json_t *, FILE *) = print_device;
    if (strcmp(cmd, "policy-types") == 0) {
        base = "/api/v1/policy-types";
        print = print_policy_types;
    } else if (strcmp(cmd, "policies") == 0 || strcmp(cmd, "groups") == 0) {
        bool pol = cmd[0] == 'p';
        base = pol ? "/api/v1/policies" : "/api/v1/groups";
        list = !arg;
        if (list)
            print = pol ? print_policies : print_groups;
    } else if (strcmp(cmd, "policy-create") == 0 || strcmp(cmd, "policy-update") == 0) {
        bool create = strcmp(cmd, "policy-create") == 0;
        json_t *settings = o->settings_json
                               ? json_object_arg(cmd, "--settings-json", o->settings_json, err)
                               : (create ? json_object() : NULL);
        if (o->settings_json && !settings)
            return 2;
        body = create ? json_pack("{s:s, s:s}", "type", o->pos[0], "name", o->pos[1])
                      : json_object();
        if (body && !create && o->name)
            json_object_set_new(body, "name", json_string(o->name));
        if (body && settings)
            json_object_set(body, "settings", settings);
        json_decref(settings);
        method = create ? "POST" : "PUT";
        seg = create ? NULL : arg;
        print = print_policy_saved;
    } else if (strcmp(cmd, "group-create") == 0 || strcmp(cmd, "group-update") == 0) {
        bool create = strcmp(cmd, "group-create") == 0;
        base = "/api/v1/groups";
        body = group_body(o, o->pos[create ? 0 : 1]);
        method = create ? "POST" : "PUT";
        seg = create ? NULL : arg;
        print = print_group_saved;
    } else if (strcmp(cmd, "policy-delete") == 0) {
        if (!confirmed(cmd, o, err, "policy %s: it leaves every group, and the Macs that have "
                                    "its profile remove it", arg))
            return 2;
        method = "DELETE";
    } else if (strcmp(cmd, "group-delete") == 0) {
        if (!confirmed(cmd, o, err, "group %s: its Macs lose the policies no other group "
                                    "gives them", arg))
            return 2;
        base = "/api/v1/groups";
        method = "DELETE";
    } else if (strcmp(cmd, "deployments") == 0) {
        tail = "/deployments";
        list = true;
        print = print_policy_deployments;
    } else if (strcmp(cmd, "device-policies") == 0 || strcmp(cmd, "device-apps") == 0) {
        bool apps = strcmp(cmd, "device-apps") == 0;
        base = "/api/v1/devices";
        tail = apps ? "/apps" : "/policies";
        print = apps ? print_apps : print_device_deployments;
    } else if (strcmp(cmd, "apps") == 0) {
        base = "/api/v1/apps";
        seg = NULL;
        list = true;
        extra = apps_query;
        print = print_apps;
    } else {
        return 2;
    }
    if ((strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) && !body)
        return 1;
    mdm_buf_t path;
    mdm_buf_init(&path, 0);
    const char *p = build_path(&path, base, seg, tail, o, list, extra);
    int code = 1;
    if (p)
        code = send_and_print(cmd, o, method, p, body, print, out, err);
    else
        json_decref(body);
    mdm_buf_dispose(&path);
    return code;
}

/* ---- security actions (docs/security-actions.md) ---- */

/* The answer of an action: what it queued (with the PIN of a lock or erase), or the flags it
 * set. */
static void print_action_done(json_t *j, FILE *out)
{
    fprintf(out, "%s %s: %s", str_or(j, "action", "?"), str_or(j, "udid", "?"),
            str_or(j, "status", "?"));
    const char *uuid = str_or(j, "command_uuid", NULL), *type = str_or(j, "request_type", NULL);
    if (uuid)
        fprintf(out, ", command %s", uuid);
    if (type)
        fprintf(out, " (%s)", type);
    const char *enrollment = str_or(j, "enrollment_id", NULL); /* renew-certificate */
    if (enrollment)
        fprintf(out, ", enrollment %s", enrollment);
    fputc('\n', out);
    const char *pin = str_or(j, "pin", NULL);
    if (pin)
        fprintf(out, "PIN: %s   (%s; mdmd lock-pin shows it again)\n", pin,
                json_is_true(json_object_get(j, "pin_generated")) ? "generated by mdmd"
                                                                    : "as given");
    json_t *suspended = json_object_get(j, "policies_suspended"), *ade = json_object_get(j, "ade");
    if (suspended || ade)
        fprintf(out, "policies %s, ade %s\n", json_is_true(suspended) ? "suspended" : "delivered",
                json_is_true(ade) ? "on" : "off");
}

/* mdmd actions: the actions sent to the Mac and how they went. */
static void print_actions(json_t *j, FILE *out)
{
    fprintf(out, "%s: %s; policies %s; ade %s; FileVault key %s\n", str_or(j, "udid", "?"),
            str_or(j, "state", "?"),
            json_is_true(json_object_get(j, "policies_suspended")) ? "suspended" : "delivered",
            json_is_true(json_object_get(j, "ade")) ? "on" : "off",
            json_is_true(json_object_get(j, "filevault_key_escrowed")) ? "escrowed"
                                                                        : "not escrowed");
    json_t *list = json_object_get(j, "actions");
    fprintf(out, "%-22s %-13s %-36s %-20s %s\n", "ACTION", "STATUS", "COMMAND UUID", "UPDATED",
            "ERROR");
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a) {
        json_t *ev = json_object_get(a, "events");
        char when[32];
        fmt_time(json_object_get(json_array_get(ev, json_array_size(ev) - 1), "at_ms"), when,
                 sizeof(when));
        fprintf(out, "%-22s %-13s %-36s %-20s %s\n", str_or(a, "action", "-"),
                str_or(a, "status", "-"), str_or(a, "command_uuid", "-"), when,
                str_or(a, "error", ""));
    }
    print_footer(j, json_array_size(list), "action", NULL, out);
}

/* mdmd lock-pin: the last lock and erase PINs. */
static void print_lock_pin(json_t *j, FILE *out)
{
    fprintf(out, "%-6s %-8s %-20s %s\n", "KIND", "PIN", "SET", "COMMAND UUID");
    static const char *const kinds[] = {"lock", "erase"};
    for (size_t k = 0; k < MDM_ARRAY_LEN(kinds); k++) {
        json_t *p = json_object_get(j, kinds[k]);
        if (!json_is_object(p)) /* null: no such PIN */
            continue;
        char set[32];
        fmt_time(json_object_get(p, "created_ms"), set, sizeof(set));
        fprintf(out, "%-6s %-8s %-20s %s\n", kinds[k], str_or(p, "pin", "-"), set,
                str_or(p, "command_uuid", "-"));
    }
}

/* mdmd filevault-key: the current recovery key, then the earlier ones. */
static void print_filevault_key(json_t *j, FILE *out)
{
    fprintf(out, "%-8s %-32s %-20s %-20s %s\n", "", "RECOVERY KEY", "ESCROWED", "REPLACED",
            "SOURCE");
    json_t *cur = json_object_get(j, "current");
    json_t *hist = json_object_get(j, "history");
    for (size_t i = 0; i <= json_array_size(hist); i++) {
        json_t *k = i == 0 ? cur : json_array_get(hist, i - 1);
        if (!json_is_object(k))
            continue;
        char escrowed[32], replaced[32];
        fmt_time(json_object_get(k, "escrowed_ms"), escrowed, sizeof(escrowed));
        fmt_time(json_object_get(k, "replaced_ms"), replaced, sizeof(replaced));
        fprintf(out, "%-8s %-32s %-20s %-20s %s\n", i == 0 ? "current" : "earlier",
                str_or(k, "key", "-"), escrowed, replaced, str_or(k, "source", "-"));
    }
}

/* The security actions, one request each under /api/v1/devices/UDID: POST actions/CMD (the
 * command names are the API's), GET actions, lock-pin, filevault-key. */
static int cmd_action(const char *cmd, const struct opts *o, FILE *out, FILE *err)
{
    const char *udid = o->pos[0];
    bool lock = strcmp(cmd, "lock") == 0, erase = strcmp(cmd, "erase") == 0;
    bool pin_view = strcmp(cmd, "lock-pin") == 0, key_view = strcmp(cmd, "filevault-key") == 0;
    bool list = strcmp(cmd, "actions") == 0, set_ade = strcmp(cmd, "set-ade") == 0;
    bool post = !list && !pin_view && !key_view;
    void (*print)(json_t *, FILE *) = list       ? print_actions
                                      : pin_view ? print_lock_pin
                                      : key_view ? print_filevault_key
                                                 : print_action_done;
    if (erase && !o->confirm) {
        fprintf(err, "mdmd %s: this erases all content and settings of %s; add --confirm %s\n",
                cmd, udid, udid);
        return 2;
    }
    if ((strcmp(cmd, "selective-wipe") == 0 &&
         !confirmed(cmd, o, err, "every profile mdmd installed on %s (its policies stay "
                                 "suspended until restore-policies)", udid)) ||
        (strcmp(cmd, "revoke") == 0 &&
         !confirmed(cmd, o, err, "%s from management: its MDM profile and every profile MDM "
                                 "installed; it comes back only by enrolling again", udid)))
        return 2;
    bool ade = set_ade && strcmp(o->pos[1], "on") == 0;
    if (set_ade && !ade && strcmp(o->pos[1], "off") != 0) {
        fprintf(err, "mdmd %s: expected on or off, not '%s'\n", cmd, o->pos[1]);
        return 2;
    }
    char tail[64];
    snprintf(tail, sizeof(tail), "/%s%s", post ? "actions/" : "", cmd);
    mdm_buf_t path;
    mdm_buf_init(&path, 0);
    const char *p = build_path(&path, "/api/v1/devices", udid, tail, o, false, NULL);
    int code = 1;
    if (p && strcmp(cmd, "cancel-lock") == 0) {
        /* A lock that reached the Mac is not cancelled: the 409 carries the PIN. */
        json_t *answer = NULL;
        code = call_api(cmd, o, "POST", p, "application/json", "{}", 2, &answer, out, err);
        const char *pin = str_or(answer, "pin", NULL);
        if (code == 0)
            (o->json ? print_json : print)(answer, out);
        else if (pin && !o->json)
            fprintf(out, "PIN: %s   (the lock reached the Mac: it unlocks with this PIN)\n", pin);
        if (pin)
            fprintf(err, "mdmd %s: this view of the PIN is audited\n", cmd);
        json_decref(answer);
    } else if (p) {
        json_t *body = !post ? NULL
                       : set_ade ? json_pack("{s:b}", "ade", ade)
                                 : json_object();
        const char *fields[] = {"pin", lock || erase ? o->pin : NULL,
                                "message", lock ? o->message : NULL,
                                "phone_number", lock ? o->phone : NULL,
                                "confirm", erase ? o->confirm : NULL,
                                "obliteration_behavior", erase ? o->obliteration : NULL};
        for (size_t i = 0; body && i < MDM_ARRAY_LEN(fields); i += 2)
            if (fields[i + 1])
                json_object_set_new(body, fields[i], json_string(fields[i + 1]));
        if (body || !post)
            code = send_and_print(cmd, o, post ? "POST" : "GET", p, body, print, out, err);
        if (code == 0 && !post && !list)
            fprintf(err, "mdmd %s: this view of the %s is audited (%s)\n", cmd,
                    pin_view ? "PIN" : "recovery key",
                    pin_view ? "device.pin_view" : "device.filevault_key_reveal");
    }
    mdm_buf_dispose(&path);
    return code;
}

int mdm_cli_run(const char *cmd, int argc, char **argv, FILE *out, FILE *err)
{
    struct opts o;
    int code = parse_args(cmd, argc, argv, &o, err);
    if (code != 0)
        return code;
    if (strcmp(cmd, "send") == 0)
        return cmd_send(cmd, &o, out, err);
    if (strcmp(cmd, "push-cert") == 0 || strcmp(cmd, "push") == 0)
        return cmd_push(cmd, &o, out, err);
    if (strcmp(cmd, "users") == 0)
        return cmd_users(cmd, &o, out, err);
    if (strcmp(cmd, "invite") == 0)
        return cmd_invite(cmd, &o, out, err);
    if (strcmp(cmd, "invitations") == 0 || strcmp(cmd, "enrollments") == 0)
        return cmd_invitations(cmd, &o, out, err);
    if (strcmp(cmd, "policy-profile") == 0)
        return cmd_policy_profile(cmd, &o, out, err);
    if (strcmp(cmd, "audit") == 0)
        return cmd_audit(cmd, &o, out, err);
    if (strncmp(cmd, "polic", 5) == 0 || strncmp(cmd, "group", 5) == 0 ||
        strcmp(cmd, "deployments") == 0 || strcmp(cmd, "device-policies") == 0 ||
        strcmp(cmd, "apps") == 0 || strcmp(cmd, "device-apps") == 0)
        return cmd_policy(cmd, &o, out, err);
    static const char *const security[] = {
        "lock",   "cancel-lock", "erase",   "selective-wipe", "restore-policies",
        "revoke", "rotate-filevault-key",   "renew-certificate", "set-ade", "actions",
        "lock-pin", "filevault-key"};
    for (size_t i = 0; i < MDM_ARRAY_LEN(security); i++)
        if (strcmp(cmd, security[i]) == 0)
            return cmd_action(cmd, &o, out, err);
    mdm_buf_t path;
    mdm_buf_init(&path, 0);
    mdm_buf_t q;
    mdm_buf_init(&q, 0);
    const char *method = "GET";
    void (*print)(json_t *, FILE *) = print_json;
    int ret = 0;
    if (strcmp(cmd, "devices") == 0) {
        ret = mdm_buf_append_str(&path, "/api/v1/devices");
        ret |= add_query(&q, "limit", o.limit) | add_query(&q, "after", o.after) |
               add_query(&q, "serial", o.serial) | add_query(&q, "enrolled", o.enrolled);
        print = print_devices;
    } else if (strcmp(cmd, "device") == 0) {
        ret = mdm_buf_printf(&path, "/api/v1/devices/%s", o.pos[0]);
        print = print_device;
    } else if (strcmp(cmd, "commands") == 0) {
        ret = mdm_buf_printf(&path, "/api/v1/devices/%s/commands", o.pos[0]);
        ret |= add_query(&q, "limit", o.limit) | add_query(&q, "after", o.after);
        print = print_commands;
    } else if (strcmp(cmd, "cancel") == 0) {
        ret = mdm_buf_printf(&path, "/api/v1/devices/%s/commands/%s", o.pos[0], o.pos[1]);
        method = "DELETE";
        print = print_device;
    } else if (strcmp(cmd, "delete-device") == 0) {
        if (!confirmed(cmd, &o, err, "%s, its queue and its escrowed secrets", o.pos[0]))
            return 2;
        ret = mdm_buf_printf(&path, "/api/v1/devices/%s", o.pos[0]);
        method = "DELETE";
        print = print_device;
    } else {
        return 2;
    }
    if (ret == 0 && q.len)
        ret = mdm_buf_append(&path, mdm_buf_head(&q), q.len);
    if (ret == 0)
        ret = mdm_buf_append(&path, "", 1);
    json_t *answer = NULL;
    code = ret != 0 ? 1
                    : call_api(cmd, &o, method, (const char *)mdm_buf_head(&path), NULL, NULL, 0,
                               &answer, out, err);
    if (code == 0)
        (o.json ? print_json : print)(answer, out);
    json_decref(answer);
    mdm_buf_dispose(&path);
    mdm_buf_dispose(&q);
    return code;
}
