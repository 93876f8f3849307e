/* Integration-test client of the admin API; see admin_api.h. */
#include "admin_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/https_client.h"
#include "harness.h"

int admin_api(int port, const char *dir, const char *key, const char *method, const char *path,
              const char *ctype, const char *body, json_t **out)
{
    char headers[256] = "";
    if (key)
        snprintf(headers, sizeof(headers), "Authorization: Bearer %s\r\n", key);
    struct mdm_https_connect_opts o = {
        .host = "127.0.0.1", .port = port, .sni = "localhost", .ca_path = instance_ca(dir)};
    mdm_buf_t resp;
    mdm_buf_init(&resp, 0);
    int status = mdm_https_request(&o, method, path, headers,
                                   body ? (ctype ? ctype : "application/json") : NULL, body,
                                   body ? strlen(body) : 0, &resp, 60000);
    json_t *j = NULL;
    if (resp.len) {
        json_error_t je;
        j = json_loadb((const char *)mdm_buf_head(&resp), resp.len, 0, &je);
        if (!j && out)
            fprintf(stderr, "not JSON (%d): %.*s\n", status, (int)(resp.len > 2000 ? 2000 : resp.len),
                    (const char *)mdm_buf_head(&resp));
    }
    if (getenv("VERBOSE") && resp.len)
        fprintf(stderr, "%s %s -> %d %.*s\n", method, path, status,
                (int)(resp.len > 2000 ? 2000 : resp.len), (const char *)mdm_buf_head(&resp));
    mdm_buf_dispose(&resp);
    if (out)
        *out = j;
    else
        json_decref(j);
    return status;
}

const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

int admin_key_from_init(const char *out, char *key, size_t keylen)
{
    const char *k = strstr(out, "Admin API key: mdm_");
    if (!k)
        return -1;
    k += strlen("Admin API key: ");
    size_t n = strcspn(k, " \r\n");
    if (n == 0 || n >= keylen)
        return -1;
    memcpy(key, k, n);
    key[n] = '\0';
    return 0;
}
