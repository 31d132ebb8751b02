/* tests/test_page.c - the operator's page and the OpenAPI document.
 *
 * The generator over the real route table (every row with a method is one
 * operation with its scopes; catch-alls are not; a route without a doc row,
 * a doc row without a route, or a schema that does not exist is an error,
 * not a quiet gap), and over real HTTP with the real model: the page's
 * security headers (a strict Content-Security-Policy on every file of it), a
 * page that names nothing of another origin and fetches only through the one
 * function that adds the key, 404s and 405s as before, and auth: the page
 * loads without a key while /openapi.json and the data routes need one.
 * tests/tools/openapi_check.py validates the document with
 * openapi-spec-validator; tests/tools/page_check.py runs the page in Chromium.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/http/auth.h"
#include "api/http/openapi.h"
#include "api/http/routes.h"
#include "tests/support_http.h"
#include "tests/support_server.h"

static json_t *document(const api_route_t *routes, int n, const api_route_doc_t *docs, int n_docs, int probes_key,
                        char *err, size_t errlen) {
    err[0] = '\0';
    return api_openapi_document(routes, n, docs, n_docs, probes_key, err, errlen);
}

static json_t *operation_of(json_t *doc, const char *method, const char *pattern) {
    char m[16];
    size_t i = 0;
    for (; method[i] && i + 1 < sizeof m; i++) m[i] = (char)(method[i] | 0x20);
    m[i] = '\0';
    return json_object_get(json_object_get(json_object_get(doc, "paths"), pattern), m);
}

/* The scopes a security list allows, as API_SCOPE_* bits; 0: open. */
static unsigned scopes_of(json_t *security) {
    unsigned s = 0;
    size_t i, k;
    json_t *req, *v;
    json_array_foreach(security, i, req) json_array_foreach(json_object_get(req, "bearer"), k, v) {
        if (!strcmp(json_string_value(v), "infer")) s |= API_SCOPE_INFER;
        if (!strcmp(json_string_value(v), "admin")) s |= API_SCOPE_ADMIN;
    }
    return s;
}

Test(openapi, every_route_of_the_table_and_nothing_else) {
    char err[512];
    json_t *doc = document(api_routes, api_routes_count, api_route_docs, api_route_docs_count, 0, err, sizeof err);
    cr_assert(doc, "%s", err);
    cr_assert_str_eq(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
    int with_method = 0;
    for (int i = 0; i < api_routes_count; i++) {
        const api_route_t *row = &api_routes[i];
        if (!row->method) {
            cr_assert_null(json_object_get(json_object_get(doc, "paths"), row->pattern), "catch-all %s listed",
                           row->pattern);
            continue;
        }
        with_method++;
        json_t *op = operation_of(doc, row->method, row->pattern);
        cr_assert(op, "%s %s is not in the document", row->method, row->pattern);
        json_t *sec = json_object_get(op, "security");
        cr_assert(json_is_array(sec), "%s %s: no security list", row->method, row->pattern);
        unsigned want = (row->flags & API_ROUTE_PROBE) ? 0 : row->scope;
        cr_assert_eq(scopes_of(sec), want, "%s %s: scopes %u, the table says %u", row->method, row->pattern,
                     scopes_of(sec), want);
        json_t *resp = json_object_get(op, "responses");
        cr_assert_eq(!!json_object_get(resp, "401"), !!want, "%s %s: 401 listed iff a key is needed", row->method,
                     row->pattern);
        cr_assert(json_object_get(resp, "400") && json_object_get(resp, "413"));
        if (row->flags & API_ROUTE_NEEDS_MODEL) cr_assert(json_object_get(resp, "404"));
    }
    size_t ops = 0;
    const char *path;
    json_t *item;
    json_object_foreach(json_object_get(doc, "paths"), path, item) ops += json_object_size(item);
    cr_assert_eq(ops, (size_t)with_method, "%zu operations for %d routes", ops, with_method);
    /* the page is open, the document needs a key of either scope */
    cr_assert_eq(scopes_of(json_object_get(operation_of(doc, "GET", "/"), "security")), 0u);
    cr_assert_eq(scopes_of(json_object_get(operation_of(doc, "GET", "/openapi.json"), "security")),
                 API_SCOPE_INFER | API_SCOPE_ADMIN);
    json_decref(doc);
    /* --auth-probes: the probes need either scope */
    doc = document(api_routes, api_routes_count, api_route_docs, api_route_docs_count, 1, err, sizeof err);
    cr_assert(doc, "%s", err);
    cr_assert_eq(scopes_of(json_object_get(operation_of(doc, "GET", "/metrics"), "security")),
                 API_SCOPE_INFER | API_SCOPE_ADMIN);
    json_decref(doc);
}

static int dummy(api_req_t *r) {
    (void)r;
    return 0;
}

Test(openapi, a_route_without_description_or_a_stale_description_is_an_error) {
    char err[512];
    api_route_t routes[64];
    int n = api_routes_count;
    cr_assert(n < 63);
    memcpy(routes, api_routes, sizeof routes[0] * (size_t)n);
    routes[n] = (api_route_t){"GET", "/v1/new", API_SCOPE_INFER, "/v1/new", 0, dummy};
    cr_assert_null(document(routes, n + 1, api_route_docs, api_route_docs_count, 0, err, sizeof err));
    cr_assert(strstr(err, "GET /v1/new has no doc row"), "%s", err);
    /* a doc row whose route is gone */
    cr_assert_null(document(api_routes, api_routes_count - 3, api_route_docs, api_route_docs_count, 0, err, sizeof err));
    cr_assert(strstr(err, "describes no route"), "%s", err);
    /* a schema name that the schemas file does not have */
    api_route_doc_t docs[64];
    int nd = api_route_docs_count;
    memcpy(docs, api_route_docs, sizeof docs[0] * (size_t)nd);
    docs[0].response = "NoSuchSchema";
    cr_assert_null(document(api_routes, api_routes_count, docs, nd, 0, err, sizeof err));
    cr_assert(strstr(err, "NoSuchSchema"), "%s", err);
    docs[0] = api_route_docs[0];
    docs[0].errors = "40x";
    cr_assert_null(document(api_routes, api_routes_count, docs, nd, 0, err, sizeof err));
    cr_assert(strstr(err, "bad status list"), "%s", err);
}

/* ---------------------------------------------------------------- over HTTP */

static int req(int port, const char *method, const char *path, const char *key, http_resp_t *out) {
    cr_assert_eq(http_request_key(port, method, path, key, NULL, out), 0, "no answer: %s %s", method, path);
    return out->status;
}

/* The status of a request; with code, the error code must be that. */
static int status_code(int port, const char *method, const char *path, const char *key, const char *code) {
    http_resp_t r;
    char got[64];
    int st = req(port, method, path, key, &r);
    cr_assert(!code || (http_error_code(&r, got, sizeof got) && !strcmp(got, code)), "%s %s: want %s, got %d %s",
              method, path, code, st, r.body);
    http_resp_free(&r);
    return st;
}

/* Every file of the page: its type, the security headers; the text is returned (free it). */
static char *page_file(int port, const char *path, const char *type) {
    http_resp_t r;
    cr_assert_eq(req(port, "GET", path, NULL, &r), 200, "GET %s: %d %s", path, r.status, r.body);
    char h[512];
    cr_assert(http_header(&r, "Content-Type", h, sizeof h) && !strncmp(h, type, strlen(type)), "%s: type %s", path, h);
    cr_assert(http_header(&r, "Content-Security-Policy", h, sizeof h), "%s: no CSP", path);
    cr_assert_str_eq(h, api_page_csp);
    cr_assert(strstr(h, "default-src 'none'") && strstr(h, "script-src 'self';") && strstr(h, "connect-src 'self';"));
    cr_assert_null(strstr(h, "unsafe"), "the policy allows something unsafe: %s", h);
    cr_assert(http_header(&r, "X-Content-Type-Options", h, sizeof h) && !strcmp(h, "nosniff"));
    cr_assert(http_header(&r, "X-Frame-Options", h, sizeof h) && !strcmp(h, "DENY"));
    cr_assert(http_header(&r, "Referrer-Policy", h, sizeof h) && !strcmp(h, "no-referrer"));
    char *text = strdup(r.body);
    http_resp_free(&r);
    return text;
}

/* No URL of another origin in a file of the page (the SVG namespace is a name, not a fetch). */
static void no_other_origin(const char *path, const char *text) {
    for (const char *p = text; (p = strstr(p, "//")); p += 2) {
        if (p > text && p[-1] == ':') {
            int svg_ns = !strncmp(p - 5, "http://www.w3.org/2000/svg", 26);
            cr_assert(svg_ns, "%s names another origin: %.60s", path, p - 6);
        }
    }
}

Test(page, served_with_a_strict_policy_and_no_other_origin, .timeout = 60) {
    api_config_t c;
    support_server_config(&c);
    support_server_t s;
    cr_assert_eq(support_server_start(&s, &c), 0, "server: %s", s.err);
    char *html = page_file(s.port, "/", "text/html");
    char *js = page_file(s.port, "/ui.js", "text/javascript");
    char *css = page_file(s.port, "/ui.css", "text/css");
    cr_assert(strstr(html, "<script src=\"/ui.js\"") && strstr(html, "href=\"/ui.css\""));
    /* nothing inline that the policy would have to allow */
    cr_assert_null(strstr(html, "<script>"), "an inline script");
    cr_assert_null(strstr(html, "<style"), "an inline style sheet");
    cr_assert_null(strstr(html, " style="), "an inline style attribute");
    for (const char *p = html; (p = strstr(p, " on")); p += 3) { /* onclick="..." and the like */
        size_t n = strspn(p + 3, "abcdefghijklmnopqrstuvwxyz");
        cr_assert(!n || p[3 + n] != '=', "an inline event handler: %.40s", p);
    }
    no_other_origin("/", html);
    no_other_origin("/ui.js", js);
    no_other_origin("/ui.css", css);
    /* one fetch in the script, in the function that adds the key to every data call */
    const char *f = strstr(js, "fetch(");
    cr_assert(f && !strstr(f + 1, "fetch("), "the script must fetch in one place");
    cr_assert(strstr(js, "h.Authorization = 'Bearer ' + apiKey"));
    cr_assert(strstr(f, "headers: headers(opts.headers)"), "that fetch must take the key's headers");
    cr_assert_null(strstr(js, "localStorage"), "the key stays in sessionStorage");
    free(html);
    free(js);
    free(css);
    /* 404 and 405 as before: the page adds exact paths only */
    cr_assert_eq(status_code(s.port, "GET", "/nothing", NULL, "not_found"), 404);
    cr_assert_eq(status_code(s.port, "GET", "/index.html", NULL, "not_found"), 404);
    cr_assert_eq(status_code(s.port, "GET", "/ui.jsx", NULL, "not_found"), 404);
    cr_assert_eq(status_code(s.port, "GET", "/v1/nothing", NULL, "not_found"), 404);
    cr_assert_eq(status_code(s.port, "GET", "/v1/admin/nothing", NULL, "not_found"), 404);
    cr_assert_eq(status_code(s.port, "POST", "/", NULL, "method_not_allowed"), 405);
    cr_assert_eq(status_code(s.port, "DELETE", "/openapi.json", NULL, "method_not_allowed"), 405);
    /* the document over HTTP, without keys open like the rest */
    http_resp_t r;
    cr_assert_eq(req(s.port, "GET", "/openapi.json", NULL, &r), 200);
    json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
    cr_assert(doc && json_object_get(json_object_get(doc, "paths"), "/v1/chat/completions"), "%.200s", r.body);
    json_decref(doc);
    http_resp_free(&r);
    support_server_stop(&s);
}

Test(page, loads_without_a_key_while_the_data_and_the_document_need_one, .timeout = 60) {
    char path[64] = "/tmp/sluice-page-keys-XXXXXX", keys[2][96];
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    unlink(path);
    const char *scope[] = {"infer", "admin"};
    for (int i = 0; i < 2; i++) {
        unsigned bits;
        char err[256];
        cr_assert_eq(api_scopes_parse(scope[i], &bits), 0);
        cr_assert_eq(api_key_generate(keys[i], sizeof keys[i]), 0);
        cr_assert_eq(api_keys_append(path, scope[i], keys[i], bits, 0, 0, err, sizeof err), 0, "%s", err);
    }
    api_config_t c;
    support_server_config(&c);
    snprintf(c.key_file, sizeof c.key_file, "%s", path);
    support_server_t s;
    cr_assert_eq(support_server_start(&s, &c), 0, "server: %s", s.err);
    free(page_file(s.port, "/", "text/html"));
    free(page_file(s.port, "/ui.js", "text/javascript"));
    free(page_file(s.port, "/ui.css", "text/css"));
    cr_assert_eq(status_code(s.port, "GET", "/openapi.json", NULL, "missing_api_key"), 401);
    cr_assert_eq(status_code(s.port, "GET", "/openapi.json", "sk-sluice-nope", "invalid_api_key"), 401);
    cr_assert_eq(status_code(s.port, "GET", "/openapi.json", keys[0], NULL), 200);
    cr_assert_eq(status_code(s.port, "GET", "/openapi.json", keys[1], NULL), 200);
    /* what the page polls */
    cr_assert_eq(status_code(s.port, "GET", "/v1/models", NULL, "missing_api_key"), 401);
    cr_assert_eq(status_code(s.port, "GET", "/v1/models", keys[0], NULL), 200);
    cr_assert_eq(status_code(s.port, "GET", "/v1/admin/config", keys[0], "insufficient_scope"), 403);
    cr_assert_eq(status_code(s.port, "GET", "/v1/admin/config", keys[1], NULL), 200);
    /* unknown paths: the key check comes first, as before */
    cr_assert_eq(status_code(s.port, "GET", "/nothing", NULL, "missing_api_key"), 401);
    cr_assert_eq(status_code(s.port, "GET", "/nothing", keys[0], "not_found"), 404);
    support_server_stop(&s);
    unlink(path);
}
