/*
 * Integration-test client of mdmd's admin API: one request per new HTTPS connection to the
 * admin listener, JSON answers parsed with jansson. Shared by every test that queues
 * commands or reads state through the API.
 */
#ifndef MDM_TEST_ADMIN_API_H
#define MDM_TEST_ADMIN_API_H

#include <jansson.h>
#include <stddef.h>

/**
 * method path on 127.0.0.1:port, trusting DIR/ca/ca.crt, with "Authorization: Bearer key"
 * (key NULL: none) and body (NULL: none) of content type ctype (NULL: application/json).
 * *out (out may be NULL) gets the parsed JSON answer or NULL. $VERBOSE prints the exchange.
 * Returns the HTTP status, or -1 when no answer came.
 */
int admin_api(int port, const char *dir, const char *key, const char *method, const char *path,
              const char *ctype, const char *body, json_t **out);

/** The string member key of o, or "" when absent or not a string. */
const char *jstr(json_t *o, const char *key);

/** Copies the admin API key that `mdmd init` printed in out into key. Returns 0 or -1. */
int admin_key_from_init(const char *out, char *key, size_t keylen);

#endif
