/* tests/support_http.c - blocking HTTP/1.1 client, one request per connection. */
#include <jansson.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "tests/support_http.h"

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int http_request(int port, const char *method, const char *path, const char *const *headers,
                 const char *body, size_t body_len, http_resp_t *out, int timeout_ms) {
    memset(out, 0, sizeof *out);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        close(fd);
        return -1;
    }
    char head[4096];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n", method,
                     path, port);
    for (const char *const *h = headers; h && *h; h++) n += snprintf(head + n, sizeof head - n, "%s\r\n", *h);
    if (body) {
        n += snprintf(head + n, sizeof head - n, "Content-Type: application/json\r\nContent-Length: %zu\r\n", body_len);
    }
    n += snprintf(head + n, sizeof head - n, "\r\n");
    /* A server may answer (413) and close before the body is sent: keep reading anyway. */
    if (send_all(fd, head, (size_t)n) == 0 && body) send_all(fd, body, body_len);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) || !sep) {
        free(buf);
        return -1;
    }
    out->status = atoi(buf + 9);
    size_t hl = (size_t)(sep - buf);
    out->headers = malloc(hl + 1);
    memcpy(out->headers, buf, hl);
    out->headers[hl] = '\0';
    out->body_len = len - hl - 4;
    out->body = malloc(out->body_len + 1);
    memcpy(out->body, sep + 4, out->body_len);
    out->body[out->body_len] = '\0';
    free(buf);
    return 0;
}

int http_post_json(int port, const char *path, const char *json, http_resp_t *out) {
    return http_request(port, "POST", path, NULL, json, strlen(json), out, 60000);
}

int http_get(int port, const char *path, http_resp_t *out) {
    return http_request(port, "GET", path, NULL, NULL, 0, out, 60000);
}

int http_request_key(int port, const char *method, const char *path, const char *key, const char *body,
                     http_resp_t *out) {
    char auth[256];
    const char *hdrs[] = {auth, NULL};
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key ? key : "");
    return http_request(port, method, path, key ? hdrs : NULL, body, body ? strlen(body) : 0, out, 60000);
}

const char *http_error_code(const http_resp_t *r, char *buf, size_t len) {
    json_t *j = r->body ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    if (c) snprintf(buf, len, "%s", c);
    json_decref(j);
    return c ? buf : NULL;
}

const char *http_header(const http_resp_t *r, const char *name, char *buf, size_t len) {
    if (!r->headers) return NULL;
    size_t nl = strlen(name);
    for (const char *p = strstr(r->headers, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (!strncasecmp(line, name, nl) && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ') v++;
            size_t vl = strcspn(v, "\r\n");
            if (vl >= len) vl = len - 1;
            memcpy(buf, v, vl);
            buf[vl] = '\0';
            return buf;
        }
    }
    return NULL;
}

void http_resp_free(http_resp_t *r) {
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}
