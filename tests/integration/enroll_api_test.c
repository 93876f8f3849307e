/*
 * The administrator's side of enrollment end to end: a real mdmd (2 shards, ephemeral ports,
 * fresh instance folder) and its admin API for local users, invitations and enrollment records,
 * then the same through the command line (mdmd users / invite / invitations / enrollments).
 * Checks every endpoint's success and failure statuses, that passwords and PINs never come
 * back (a PIN only in the answer that made it), and the audit events of each change.
 */
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "admin_api.h"
#include "check.h"
#include "harness.h"

#define PASSWORD "correct horse battery staple"
#define PASSWORD2 "Tr0ub4dor&3"

static char dir[512];
static char api_key[128];
static server_proc_t srv;
static char pin_seen[16]; /* a PIN answered by POST invitations: must never appear again */

/* One API request with the key (or without: key NULL); *out (may be NULL) gets the parsed
 * answer. Returns the HTTP status. */
static int api_as(const char *key, const char *method, const char *path, const char *body,
                  json_t **out)
{
    return admin_api(srv.admin_port, dir, key, method, path, NULL, body, out);
}

static int api(const char *method, const char *path, const char *body, json_t **out)
{
    return api_as(api_key, method, path, body, out);
}

static bool contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

/* True when the digits pin occur in hay as a number of their own (not inside a longer one,
 * such as a timestamp). */
static bool has_number(const char *hay, const char *pin)
{
    size_t n = strlen(pin);
    for (const char *p = strstr(hay, pin); p; p = strstr(p + 1, pin)) {
        bool before = p > hay && p[-1] >= '0' && p[-1] <= '9';
        bool after = p[n] >= '0' && p[n] <= '9';
        if (!before && !after)
            return true;
    }
    return false;
}

/* The whole answer as text (for "never shows X" checks); the caller frees it. */
static char *dump(json_t *j) { return j ? json_dumps(j, JSON_COMPACT) : strdup(""); }

/* Status and the detail of a 422 naming field. */
static void expect_422(const char *method, const char *path, const char *body, const char *field)
{
    json_t *j = NULL;
    int st = api(method, path, body, &j);
    CHECK_EQ_INT(st, 422);
    CHECK(contains(jstr(j, "detail"), field));
    if (st != 422 || !contains(jstr(j, "detail"), field))
        fprintf(stderr, "  body %s -> %d %s\n", body, st, jstr(j, "detail"));
    json_decref(j);
}

static void test_auth(void)
{
    static const char *const paths[][2] = {
        {"GET", "/api/v1/users"},          {"POST", "/api/v1/users"},
        {"GET", "/api/v1/users/anna"},     {"PATCH", "/api/v1/users/anna"},
        {"DELETE", "/api/v1/users/anna"},  {"GET", "/api/v1/invitations"},
        {"POST", "/api/v1/invitations"},   {"GET", "/api/v1/enrollments"},
        {"POST", "/api/v1/invitations/00000000000000000000000000000000/revoke"},
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        json_t *j = NULL;
        const char *body = strcmp(paths[i][0], "GET") == 0 ? NULL : "{}";
        CHECK_EQ_INT(api_as(NULL, paths[i][0], paths[i][1], body, &j), 401);
        CHECK_STR(jstr(j, "error"), "unauthorized");
        json_decref(j);
        CHECK_EQ_INT(api_as("mdm_wrong", paths[i][0], paths[i][1], body, NULL), 401);
    }
}

static void test_users(void)
{
    json_t *j = NULL;
    /* Create: 201 with the record, never the password or its hash. */
    CHECK_EQ_INT(api("POST", "/api/v1/users",
                     "{\"name\":\"anna@example.com\",\"password\":\"" PASSWORD "\","
                     "\"display_name\":\"Anna Åberg\",\"email\":\"anna@example.com\","
                     "\"groups\":[\"staff\",\"it\"]}",
                     &j),
                 201);
    CHECK_STR(jstr(j, "name"), "anna@example.com");
    CHECK_STR(jstr(j, "display_name"), "Anna Åberg");
    CHECK(json_is_true(json_object_get(j, "has_password")));
    CHECK(json_is_false(json_object_get(j, "disabled")));
    CHECK_EQ_INT(json_array_size(json_object_get(j, "groups")), 2);
    CHECK(json_integer_value(json_object_get(j, "created_ms")) > 0);
    CHECK(json_integer_value(json_object_get(j, "password_changed_ms")) > 0);
    char *text = dump(j);
    CHECK(!contains(text, PASSWORD) && !contains(text, "argon2") && !contains(text, "hash"));
    free(text);
    json_decref(j);
    uint64_t changed_ms = 0;

    /* Duplicate: 409. */
    CHECK_EQ_INT(api("POST", "/api/v1/users", "{\"name\":\"anna@example.com\"}", &j), 409);
    CHECK_STR(jstr(j, "error"), "conflict");
    json_decref(j);
    /* Without a password (PIN invitations only). */
    CHECK_EQ_INT(api("POST", "/api/v1/users", "{\"name\":\"carl\"}", &j), 201);
    CHECK(json_is_false(json_object_get(j, "has_password")));
    json_decref(j);

    /* Refusals name the field. */
    expect_422("POST", "/api/v1/users", "{\"name\":\"anna smith\"}", "name");
    expect_422("POST", "/api/v1/users", "{\"display_name\":\"No Name\"}", "name");
    expect_422("POST", "/api/v1/users",
               "{\"name\":\"a234567890123456789012345678901234567890123456789012345678901234\"}",
               "name");
    expect_422("POST", "/api/v1/users", "{\"name\":\"dora\",\"password\":\"\"}", "password");
    expect_422("POST", "/api/v1/users", "{\"name\":\"dora\",\"password\":12}", "password");
    expect_422("POST", "/api/v1/users",
               "{\"name\":\"dora\",\"groups\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\","
               "\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}",
               "groups");
    expect_422("POST", "/api/v1/users", "{\"name\":\"dora\",\"groups\":[\"ok\",\"\"]}",
               "groups[1]");
    expect_422("POST", "/api/v1/users", "{\"name\":\"dora\",\"groups\":[\"a\\u0001b\"]}",
               "groups[0]");
    expect_422("POST", "/api/v1/users", "{\"name\":\"dora\",\"groups\":[\"x\",\"x\"]}",
               "groups[1]");
    expect_422("POST", "/api/v1/users", "{\"name\":\"dora\",\"email\":7}", "email");
    expect_422("POST", "/api/v1/users", "{\"name\":\"dora\",\"disabled\":\"yes\"}", "disabled");
    char body[600];
    snprintf(body, sizeof(body), "{\"name\":\"dora\",\"display_name\":\"%0200d\"}", 0);
    expect_422("POST", "/api/v1/users", body, "display_name");
    expect_422("POST", "/api/v1/users", "{\"name\":\"dora\",\"role\":\"admin\"}", "role");
    CHECK_EQ_INT(api("POST", "/api/v1/users", "{\"name\":", NULL), 400);
    CHECK_EQ_INT(api("POST", "/api/v1/users", "[]", NULL), 400);
    CHECK_EQ_INT(admin_api(srv.admin_port, dir, api_key, "POST", "/api/v1/users", "text/plain",
                           "{\"name\":\"dora\"}", NULL),
                 415);
    CHECK_EQ_INT(api("PUT", "/api/v1/users", "{}", &j), 405);
    json_decref(j);

    /* Reads: the list (paged), one user by name (raw or percent-encoded '@'). */
    CHECK_EQ_INT(api("GET", "/api/v1/users", NULL, &j), 200);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "count")), 2);
    CHECK(json_is_null(json_object_get(j, "next_after")));
    text = dump(j);
    CHECK(!contains(text, "argon2") && !contains(text, PASSWORD));
    free(text);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/users?limit=1", NULL, &j), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "users")), 1);
    CHECK_STR(jstr(j, "next_after"), "anna@example.com");
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/users?limit=1&after=anna%40example.com", NULL, &j), 200);
    CHECK_STR(jstr(json_array_get(json_object_get(j, "users"), 0), "name"), "carl");
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/users?group=it", NULL, &j), 200);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "count")), 1);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/users?limit=0", NULL, NULL), 400);
    CHECK_EQ_INT(api("GET", "/api/v1/users?after=a%20b", NULL, NULL), 400);
    CHECK_EQ_INT(api("GET", "/api/v1/users/anna%40example.com", NULL, &j), 200);
    CHECK_STR(jstr(j, "email"), "anna@example.com");
    CHECK(json_object_get(j, "password") == NULL && json_object_get(j, "password_hash") == NULL);
    changed_ms = (uint64_t)json_integer_value(json_object_get(j, "password_changed_ms"));
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/users/anna@example.com", NULL, NULL), 200);
    CHECK_EQ_INT(api("GET", "/api/v1/users/nobody", NULL, &j), 404);
    CHECK_STR(jstr(j, "error"), "not found");
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/users/bad%20name", NULL, NULL), 404);
    CHECK_EQ_INT(api("GET", "/api/v1/users/anna/extra/deep", NULL, NULL), 404);

    /* Changes: disable, enable, reset the password, profile fields. */
    CHECK_EQ_INT(api("PATCH", "/api/v1/users/anna@example.com", "{\"disabled\":true}", &j), 200);
    CHECK(json_is_true(json_object_get(j, "disabled")));
    json_decref(j);
    CHECK_EQ_INT(api("PATCH", "/api/v1/users/anna@example.com",
                     "{\"disabled\":false,\"email\":\"anna@corp.example\",\"groups\":[\"ops\"]}",
                     &j),
                 200);
    CHECK(json_is_false(json_object_get(j, "disabled")));
    CHECK_STR(jstr(j, "email"), "anna@corp.example");
    CHECK_STR(json_string_value(json_array_get(json_object_get(j, "groups"), 0)), "ops");
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "password_changed_ms")), changed_ms);
    json_decref(j);
    usleep(5000);
    CHECK_EQ_INT(api("PATCH", "/api/v1/users/anna@example.com",
                     "{\"password\":\"" PASSWORD2 "\"}", &j),
                 200);
    CHECK((uint64_t)json_integer_value(json_object_get(j, "password_changed_ms")) > changed_ms);
    CHECK(json_is_true(json_object_get(j, "has_password")));
    json_decref(j);
    CHECK_EQ_INT(api("PATCH", "/api/v1/users/carl", "{\"password\":\"" PASSWORD2 "\"}", &j), 200);
    CHECK(json_is_true(json_object_get(j, "has_password")));
    json_decref(j);
    CHECK_EQ_INT(api("PATCH", "/api/v1/users/carl", "{\"password\":null}", &j), 200);
    CHECK(json_is_false(json_object_get(j, "has_password")));
    json_decref(j);
    expect_422("PATCH", "/api/v1/users/anna@example.com", "{}", "nothing to change");
    expect_422("PATCH", "/api/v1/users/anna@example.com", "{\"name\":\"x\"}", "name");
    expect_422("PATCH", "/api/v1/users/anna@example.com", "{\"password\":\"\"}", "password");
    CHECK_EQ_INT(api("PATCH", "/api/v1/users/nobody", "{\"disabled\":true}", &j), 404);
    json_decref(j);
    CHECK_EQ_INT(api("POST", "/api/v1/users/anna@example.com", "{}", &j), 405);
    json_decref(j);

    /* Delete: gone, a second time 404. */
    CHECK_EQ_INT(api("POST", "/api/v1/users", "{\"name\":\"temp\"}", NULL), 201);
    CHECK_EQ_INT(api("DELETE", "/api/v1/users/temp", NULL, &j), 200);
    CHECK_STR(jstr(j, "deleted"), "temp");
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/users/temp", NULL, NULL), 404);
    CHECK_EQ_INT(api("DELETE", "/api/v1/users/temp", NULL, NULL), 404);
}

static bool all_digits(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* POST invitations with body; returns the status, the id copied into id (33 bytes). */
static int invite(const char *body, char *id, json_t **out)
{
    json_t *j = NULL;
    int st = api("POST", "/api/v1/invitations", body, &j);
    if (id)
        snprintf(id, 33, "%s", jstr(j, "id"));
    if (out)
        *out = j;
    else
        json_decref(j);
    return st;
}

static void test_invitations(void)
{
    json_t *j = NULL;
    char id[33], id2[33], path[200];
    /* Mode pin for a local user: the PIN comes back once, with the URL. */
    CHECK_EQ_INT(invite("{\"user\":\"anna@example.com\",\"mode\":\"pin\"}", id, &j), 201);
    CHECK_EQ_INT(strlen(id), 32);
    CHECK_STR(jstr(j, "user"), "anna@example.com");
    CHECK_STR(jstr(j, "mode"), "pin");
    CHECK_STR(jstr(j, "status"), "pending");
    CHECK(all_digits(jstr(j, "pin"), 6));
    snprintf(pin_seen, sizeof(pin_seen), "%s", jstr(j, "pin"));
    const char *url = jstr(j, "url");
    char tail[80];
    snprintf(tail, sizeof(tail), "/macos/invite/%s", id);
    CHECK(strncmp(url, "https://", 8) == 0);
    CHECK(strlen(url) > strlen(tail) && strcmp(url + strlen(url) - strlen(tail), tail) == 0);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "expires_ms")) -
                     json_integer_value(json_object_get(j, "created_ms")),
                 72LL * 3600 * 1000);
    CHECK(contains(jstr(j, "expires_at"), "T") && contains(jstr(j, "expires_at"), "Z"));
    CHECK(json_is_true(json_object_get(j, "pin_required")));
    CHECK(json_is_false(json_object_get(j, "password_required")));
    CHECK(!contains(jstr(j, "created_by"), api_key) && contains(jstr(j, "created_by"), "admin"));
    json_decref(j);

    /* Reads never show the PIN nor its hash. */
    snprintf(path, sizeof(path), "/api/v1/invitations/%s", id);
    CHECK_EQ_INT(api("GET", path, NULL, &j), 200);
    CHECK_STR(jstr(j, "id"), id);
    CHECK(json_object_get(j, "pin") == NULL);
    char *text = dump(j);
    CHECK(!has_number(text, pin_seen) && !contains(text, "argon2"));
    free(text);
    json_decref(j);

    /* Directory users (no local record): any name without control characters. */
    CHECK_EQ_INT(invite("{\"user\":\"Dan Directory\",\"mode\":\"password_and_pin\","
                        "\"expires_hours\":1}",
                        id2, &j),
                 201);
    CHECK(all_digits(jstr(j, "pin"), 6));
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "expires_ms")) -
                     json_integer_value(json_object_get(j, "created_ms")),
                 3600LL * 1000);
    json_decref(j);
    CHECK_EQ_INT(invite("{\"user\":\"CORP\\\\eve\"}", NULL, &j), 201); /* mode password */
    CHECK_STR(jstr(j, "mode"), "password");
    CHECK(json_object_get(j, "pin") == NULL);
    json_decref(j);
    CHECK_EQ_INT(invite("{\"user\":\"eve\",\"expires_hours\":720}", NULL, NULL), 201);

    /* Refusals. */
    expect_422("POST", "/api/v1/invitations", "{\"mode\":\"pin\"}", "user");
    expect_422("POST", "/api/v1/invitations", "{\"user\":\"\"}", "user");
    expect_422("POST", "/api/v1/invitations", "{\"user\":\"a\\nb\"}", "user");
    expect_422("POST", "/api/v1/invitations", "{\"user\":\"eve\",\"mode\":\"otp\"}", "mode");
    expect_422("POST", "/api/v1/invitations", "{\"user\":\"eve\",\"expires_hours\":0}",
               "expires_hours");
    expect_422("POST", "/api/v1/invitations", "{\"user\":\"eve\",\"expires_hours\":721}",
               "expires_hours");
    expect_422("POST", "/api/v1/invitations", "{\"user\":\"eve\",\"expires_hours\":\"1\"}",
               "expires_hours");
    expect_422("POST", "/api/v1/invitations", "{\"user\":\"eve\",\"pin\":\"123456\"}", "pin");
    /* A local user who cannot use it: disabled, or no password for a password mode. */
    CHECK_EQ_INT(api("PATCH", "/api/v1/users/carl", "{\"disabled\":true}", NULL), 200);
    CHECK_EQ_INT(invite("{\"user\":\"carl\",\"mode\":\"pin\"}", NULL, &j), 409);
    CHECK(contains(jstr(j, "detail"), "disabled"));
    json_decref(j);
    CHECK_EQ_INT(api("PATCH", "/api/v1/users/carl", "{\"disabled\":false}", NULL), 200);
    CHECK_EQ_INT(invite("{\"user\":\"carl\",\"mode\":\"password\"}", NULL, &j), 409);
    CHECK(contains(jstr(j, "detail"), "password"));
    json_decref(j);
    CHECK_EQ_INT(invite("{\"user\":\"carl\",\"mode\":\"pin\"}", NULL, NULL), 201);

    /* Lists: every one, filters, paging. */
    CHECK_EQ_INT(api("GET", "/api/v1/invitations", NULL, &j), 200);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "count")), 5);
    text = dump(j);
    CHECK(!has_number(text, pin_seen) && !contains(text, "argon2"));
    free(text);
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(j, "invitations"), i, item)
        CHECK(json_object_get(item, "pin") == NULL);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/invitations?user=Dan%20Directory", NULL, &j), 200);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "count")), 1);
    CHECK_STR(jstr(json_array_get(json_object_get(j, "invitations"), 0), "id"), id2);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/invitations?limit=2", NULL, &j), 200);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "invitations")), 2);
    CHECK_EQ_INT(strlen(jstr(j, "next_after")), 32);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/invitations?status=bogus", NULL, NULL), 400);
    CHECK_EQ_INT(api("GET", "/api/v1/invitations?after=xyz", NULL, NULL), 400);
    CHECK_EQ_INT(api("GET", "/api/v1/invitations/00000000000000000000000000000000", NULL, &j),
                 404);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/invitations/not-an-id", NULL, NULL), 404);

    /* Revoke: pending -> revoked; twice 409; unknown 404. */
    snprintf(path, sizeof(path), "/api/v1/invitations/%s/revoke", id);
    CHECK_EQ_INT(api("POST", path, "{}", &j), 200);
    CHECK_STR(jstr(j, "status"), "revoked");
    CHECK(json_object_get(j, "pin") == NULL);
    json_decref(j);
    CHECK_EQ_INT(api("POST", path, "{}", &j), 409);
    CHECK(contains(jstr(j, "detail"), "revoked"));
    json_decref(j);
    CHECK_EQ_INT(api("GET", path, NULL, NULL), 405);
    CHECK_EQ_INT(api("POST", "/api/v1/invitations/00000000000000000000000000000000/revoke", "{}",
                     NULL),
                 404);
    CHECK_EQ_INT(api("POST", "/api/v1/invitations/nope/revoke", "{}", NULL), 404);
    CHECK_EQ_INT(api("GET", "/api/v1/invitations?status=revoked", NULL, &j), 200);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "count")), 1);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/invitations?status=pending", NULL, &j), 200);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "count")), 4);
    json_decref(j);
    CHECK_EQ_INT(api("DELETE", "/api/v1/invitations", NULL, NULL), 405);
}

static void test_enrollments(void)
{
    json_t *j = NULL;
    /* Nothing enrolled through these calls: empty, but well-formed. */
    CHECK_EQ_INT(api("GET", "/api/v1/enrollments", NULL, &j), 200);
    CHECK(json_is_array(json_object_get(j, "enrollments")));
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "count")), 0);
    CHECK(json_is_null(json_object_get(j, "next_after")));
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/enrollments?user=anna%40example.com&limit=5", NULL, &j),
                 200);
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/enrollments?user=a%01b", NULL, NULL), 400);
    CHECK_EQ_INT(api("GET", "/api/v1/enrollments/00000000000000000000000000000000", NULL, &j),
                 404);
    CHECK_STR(jstr(j, "error"), "not found");
    json_decref(j);
    CHECK_EQ_INT(api("GET", "/api/v1/enrollments/xyz", NULL, NULL), 404);
    CHECK_EQ_INT(api("POST", "/api/v1/enrollments", "{}", NULL), 405);
}

/* Every change above left one audit event, none holding a password or a PIN. */
static void test_audit(void)
{
    json_t *j = NULL;
    CHECK_EQ_INT(api("GET", "/api/v1/audit?limit=1000", NULL, &j), 200);
    bool create = false, create_409 = false, create_422 = false, disable = false,
         reset = false, del = false, del_404 = false, inv_pin = false, inv_409 = false,
         revoke = false, revoke_409 = false;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(j, "events"), i, e) {
        const char *action = jstr(e, "action"), *target = jstr(e, "target");
        const char *detail = jstr(e, "detail");
        int status = (int)json_integer_value(json_object_get(e, "status"));
        CHECK(!contains(detail, PASSWORD) && !contains(detail, PASSWORD2));
        CHECK(!pin_seen[0] || !has_number(detail, pin_seen));
        CHECK(!contains(target, PASSWORD) && !contains(detail, "argon2"));
        if (strcmp(action, "user.create") == 0) {
            create |= status == 201 && strcmp(target, "anna@example.com") == 0;
            create_409 |= status == 409;
            create_422 |= status == 422 && contains(detail, "name");
        } else if (strcmp(action, "user.update") == 0) {
            disable |= status == 200 && contains(detail, "disabled");
            reset |= status == 200 && contains(detail, "password reset");
        } else if (strcmp(action, "user.delete") == 0) {
            del |= status == 200 && strcmp(target, "temp") == 0;
            del_404 |= status == 404;
        } else if (strcmp(action, "invitation.create") == 0) {
            inv_pin |= status == 201 && contains(detail, "anna@example.com") &&
                       contains(detail, "mode pin") && strlen(target) == 32;
            inv_409 |= status == 409 && strcmp(target, "carl") == 0;
        } else if (strcmp(action, "invitation.revoke") == 0) {
            revoke |= status == 200;
            revoke_409 |= status == 409;
        }
    }
    CHECK(create && create_409 && create_422 && disable && reset && del && del_404);
    CHECK(inv_pin && inv_409 && revoke && revoke_409);
    json_decref(j);
}

/* Runs mdmd with args (NULL-terminated) plus --url/--api-key, stdin from in (NULL: /dev/null);
 * stdout and stderr into out. Returns the exit code, -1 on a spawn failure. */
static int cli(const char *const *args, const char *in, char *out, size_t outlen)
{
    char url[64], inpath[700], outpath[700];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", srv.admin_port);
    snprintf(inpath, sizeof(inpath), "%s.cli-in", dir);
    snprintf(outpath, sizeof(outpath), "%s.cli-out", dir);
    FILE *f = fopen(inpath, "w");
    if (!f)
        return -1;
    fputs(in ? in : "", f);
    fclose(f);
    const char *argv[40];
    size_t n = 0;
    const char *bin = getenv("MDMD_BIN");
    argv[n++] = bin ? bin : "mdmd";
    for (size_t i = 0; args[i] && n < 34; i++)
        argv[n++] = args[i];
    argv[n++] = "--url";
    argv[n++] = url;
    argv[n++] = "--api-key";
    argv[n++] = api_key;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int i0 = open(inpath, O_RDONLY), o1 = open(outpath, O_CREAT | O_TRUNC | O_WRONLY, 0600);
        if (i0 < 0 || o1 < 0)
            _exit(126);
        dup2(i0, 0);
        dup2(o1, 1);
        dup2(o1, 2);
        setsid(); /* no controlling terminal: passwd reads standard input */
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    f = fopen(outpath, "r");
    size_t len = f ? fread(out, 1, outlen - 1, f) : 0;
    out[len] = '\0';
    if (f)
        fclose(f);
    unlink(inpath);
    unlink(outpath);
    if (getenv("VERBOSE"))
        fprintf(stderr, "mdmd %s ... -> %d\n%s", args[0], WEXITSTATUS(status), out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_cli(void)
{
    char out[16384];
    /* users add with the password on standard input. */
    const char *add[] = {"users", dir, "add", "frank", "--password-stdin", "--display-name",
                         "Frank F", "--group", "staff", "--group", "mac-users", NULL};
    CHECK_EQ_INT(cli(add, PASSWORD "\n", out, sizeof(out)), 0);
    CHECK(contains(out, "frank") && contains(out, "mac-users") && !contains(out, PASSWORD));
    json_t *j = NULL;
    CHECK_EQ_INT(api("GET", "/api/v1/users/frank", NULL, &j), 200);
    CHECK(json_is_true(json_object_get(j, "has_password")));
    json_decref(j);
    CHECK_EQ_INT(cli(add, PASSWORD "\n", out, sizeof(out)), 1); /* exists */
    CHECK(contains(out, "409"));
    const char *add2[] = {"users", dir, "add", "gina", "--email", "gina@example.com", NULL};
    CHECK_EQ_INT(cli(add2, NULL, out, sizeof(out)), 0);
    const char *badadd[] = {"users", dir, "add", "bad name", NULL};
    CHECK_EQ_INT(cli(badadd, NULL, out, sizeof(out)), 1);
    CHECK(contains(out, "422") && contains(out, "name"));

    /* list (table and JSON), show. */
    const char *list[] = {"users", dir, NULL};
    CHECK_EQ_INT(cli(list, NULL, out, sizeof(out)), 0);
    CHECK(contains(out, "NAME") && contains(out, "frank") && contains(out, "Frank F") &&
          contains(out, "staff,mac-users") && contains(out, "gina"));
    const char *listj[] = {"users", dir, "list", "--group", "staff", "--json", NULL};
    CHECK_EQ_INT(cli(listj, NULL, out, sizeof(out)), 0);
    json_error_t je;
    j = json_loads(out, 0, &je);
    CHECK(j != NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "count")), 1); /* frank (anna: ops) */
    json_decref(j);
    const char *show[] = {"users", dir, "show", "anna@example.com", NULL};
    CHECK_EQ_INT(cli(show, NULL, out, sizeof(out)), 0);
    CHECK(contains(out, "anna@corp.example") && !contains(out, "argon2"));

    /* passwd (standard input, no terminal), disable, enable. */
    const char *passwd[] = {"users", dir, "passwd", "gina", NULL};
    CHECK_EQ_INT(cli(passwd, PASSWORD2 "\n", out, sizeof(out)), 0);
    CHECK(contains(out, "has_password") && contains(out, "true"));
    CHECK_EQ_INT(cli(passwd, "", out, sizeof(out)), 2); /* no password given */
    const char *passwd2[] = {"users", dir, "passwd", "gina", "--password", PASSWORD, NULL};
    CHECK_EQ_INT(cli(passwd2, NULL, out, sizeof(out)), 0);
    const char *disable[] = {"users", dir, "disable", "gina", "--json", NULL};
    CHECK_EQ_INT(cli(disable, NULL, out, sizeof(out)), 0);
    j = json_loads(out, 0, &je);
    CHECK(json_is_true(json_object_get(j, "disabled")));
    json_decref(j);
    const char *enable[] = {"users", dir, "enable", "gina", NULL};
    CHECK_EQ_INT(cli(enable, NULL, out, sizeof(out)), 0);
    const char *nouser[] = {"users", dir, "disable", "nobody", NULL};
    CHECK_EQ_INT(cli(nouser, NULL, out, sizeof(out)), 1);
    CHECK(contains(out, "404"));
    const char *badsub[] = {"users", dir, "frobnicate", "gina", NULL};
    CHECK_EQ_INT(cli(badsub, NULL, out, sizeof(out)), 2);

    /* invite: prints the URL and the PIN. */
    const char *inv[] = {"invite", dir, "frank", "--mode", "password_and_pin",
                         "--expires-hours", "24", NULL};
    CHECK_EQ_INT(cli(inv, NULL, out, sizeof(out)), 0);
    CHECK(contains(out, "/macos/invite/") && contains(out, "PIN: "));
    char id[33] = "";
    const char *p = strstr(out, "invitation ");
    if (p)
        snprintf(id, sizeof(id), "%.32s", p + strlen("invitation "));
    CHECK_EQ_INT(strlen(id), 32);
    const char *pin = strstr(out, "PIN: ");
    char digits[8] = "";
    if (pin)
        snprintf(digits, sizeof(digits), "%.6s", pin + 5);
    CHECK(pin && all_digits(digits, 6) && (pin[11] == ' ' || pin[11] == '\n'));
    const char *inv2[] = {"invite", dir, "frank", "--mode", "otp", NULL};
    CHECK_EQ_INT(cli(inv2, NULL, out, sizeof(out)), 1);
    CHECK(contains(out, "422") && contains(out, "mode"));
    const char *inv3[] = {"invite", dir, "frank", "--expires-hours", "soon", NULL};
    CHECK_EQ_INT(cli(inv3, NULL, out, sizeof(out)), 2);

    /* invitations list / show / revoke. */
    const char *ilist[] = {"invitations", dir, "list", "--user", "frank", NULL};
    CHECK_EQ_INT(cli(ilist, NULL, out, sizeof(out)), 0);
    CHECK(contains(out, id) && contains(out, "password_and_pin") && contains(out, "pending") &&
          contains(out, "1 invitation"));
    const char *ishow[] = {"invitations", dir, "show", id, NULL};
    CHECK_EQ_INT(cli(ishow, NULL, out, sizeof(out)), 0);
    CHECK(contains(out, "frank") && !contains(out, "PIN: "));
    const char *revoke[] = {"invitations", dir, "revoke", id, NULL};
    CHECK_EQ_INT(cli(revoke, NULL, out, sizeof(out)), 0);
    CHECK(contains(out, "revoked"));
    CHECK_EQ_INT(cli(revoke, NULL, out, sizeof(out)), 1);
    CHECK(contains(out, "409"));
    const char *ibad[] = {"invitations", dir, "revoke", NULL};
    CHECK_EQ_INT(cli(ibad, NULL, out, sizeof(out)), 2);

    /* enrollments. */
    const char *enr[] = {"enrollments", dir, NULL};
    CHECK_EQ_INT(cli(enr, NULL, out, sizeof(out)), 0);
    CHECK(contains(out, "0 enrollments"));
    const char *enrj[] = {"enrollments", dir, "--json", NULL};
    CHECK_EQ_INT(cli(enrj, NULL, out, sizeof(out)), 0);
    CHECK(contains(out, "\"enrollments\""));

    /* delete. */
    const char *del[] = {"users", dir, "delete", "gina", NULL};
    CHECK_EQ_INT(cli(del, NULL, out, sizeof(out)), 0);
    CHECK_EQ_INT(cli(del, NULL, out, sizeof(out)), 1);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s", check_tmpdir("enroll-api"));
    const char *args[] = {"init", dir, "--hostnames", "localhost,127.0.0.1", NULL};
    char out[8192];
    if (harness_run(dir, args, 60000, out, sizeof(out)) != 0) {
        fprintf(stderr, "mdmd init failed:\n%s\n", out);
        return 99;
    }
    if (admin_key_from_init(out, api_key, sizeof(api_key)) != 0) {
        fprintf(stderr, "no admin API key in the init output:\n%s\n", out);
        return 99;
    }
    const char *extra[] = {"--shards", "2", NULL};
    if (harness_start(&srv, dir, extra) != 0)
        return 99;
    test_auth();
    test_users();
    test_invitations();
    test_enrollments();
    test_audit();
    test_cli();
    CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);

    /* Users and invitations survive a restart. */
    if (harness_start(&srv, dir, extra) == 0) {
        json_t *j = NULL;
        CHECK_EQ_INT(api("GET", "/api/v1/users/frank", NULL, &j), 200);
        CHECK(json_is_true(json_object_get(j, "has_password")));
        json_decref(j);
        CHECK_EQ_INT(api("GET", "/api/v1/invitations?status=revoked", NULL, &j), 200);
        CHECK_EQ_INT(json_integer_value(json_object_get(j, "count")), 2);
        json_decref(j);
        CHECK_EQ_INT(harness_stop(&srv, SIGTERM, 20000), 0);
    } else {
        CHECK(!"restart failed");
    }
    return check_finish("integ-enroll-api");
}
