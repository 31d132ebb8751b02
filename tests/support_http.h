/* tests/support_http.h - a tiny HTTP/1.1 client over loopback sockets for tests.
 *
 * One request per connection (Connection: close), the whole answer read into
 * memory. Thread-safe: no shared state, so many threads can hammer a server.
 */
#ifndef SLUICE_SUPPORT_HTTP_H
#define SLUICE_SUPPORT_HTTP_H

#include <stddef.h>

typedef struct {
    int status;     /* 0 when no answer came */
    char *headers;  /* raw header block, NUL-terminated */
    char *body;     /* NUL-terminated */
    size_t body_len;
} http_resp_t;

/* method, path ("/v1/embeddings?x=1"), extra headers ("Name: value", NULL-terminated
 * list, or NULL), body (may be NULL). 0 when an answer was read, -1 otherwise. */
int http_request(int port, const char *method, const char *path, const char *const *headers,
                 const char *body, size_t body_len, http_resp_t *out, int timeout_ms);
/* Shorthands: POST a JSON string; GET. */
int http_post_json(int port, const char *path, const char *json, http_resp_t *out);
int http_get(int port, const char *path, http_resp_t *out);
/* One request with `Authorization: Bearer KEY` (key NULL: no header); body may be NULL. */
int http_request_key(int port, const char *method, const char *path, const char *key, const char *body,
                     http_resp_t *out);
/* error.code of an answer in OpenAI's error shape, copied into buf, or NULL. */
const char *http_error_code(const http_resp_t *r, char *buf, size_t len);
/* Value of a response header (case-insensitive name) copied into buf, or NULL. */
const char *http_header(const http_resp_t *r, const char *name, char *buf, size_t len);
void http_resp_free(http_resp_t *r);

#endif
