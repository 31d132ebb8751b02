/* api/http/openapi.c - the OpenAPI 3.1 document of the route table, and its
 * route GET /openapi.json. The component schemas are the JSON file
 * api/http/openapi_schemas.json, embedded at build time (.incbin, as the
 * queue's Lua scripts are); everything else comes from the rows. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http/openapi.h"
#include "api/http/routes.h"
#include "kernels/util.h"

/* the Makefile makes openapi.o depend on the file */
UTIL_EMBED(api_openapi_schemas, "api/http/openapi_schemas.json");

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted: the work goes on";
    case 400: return "Bad request: malformed JSON, a wrong field, bad HTTP framing, nesting too deep";
    case 401: return "No API key, or one the key file does not hold";
    case 403: return "The key lacks the route's scope";
    case 404: return "Unknown model, task, queue or route";
    case 408: return "Deadline passed before compute";
    case 409: return "The task has already ended";
    case 413: return "Body, inputs or results over their limits";
    case 422: return "Input too long, or a value out of range";
    case 429: return "Rate limit of the key or a full queue; see Retry-After";
    case 500: return "Compute failed, or out of memory";
    case 503: return "Shutting down, paused, busy, a model or Redis unavailable; see Retry-After";
    case 507: return "The model does not fit the memory budget";
    default: return "See docs/api.md";
    }
}

/* Statuses as a sorted set: bit (status - 100). */
typedef struct {
    unsigned char on[500];
} status_set_t;

static int add_statuses(status_set_t *set, const char *list, char *err, size_t errlen, const char *who) {
    for (const char *p = list ? list : ""; *p;) {
        while (*p == ' ') p++;
        if (!*p) break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 100 || v > 599) {
            snprintf(err, errlen, "%s: bad status list '%s'", who, list);
            return -1;
        }
        set->on[v - 100] = 1;
        p = end;
    }
    return 0;
}

static json_t *ref(const char *schema) {
    char buf[160];
    snprintf(buf, sizeof buf, "#/components/schemas/%s", schema);
    return json_pack("{s:s}", "$ref", buf);
}

static json_t *content(const char *media, const char *schema) {
    return json_pack("{s:{s:o}}", media, "schema", ref(schema));
}

/* The scopes of a row (or, for a probe, those --auth-probes asks for) as
 * alternative requirements: [{"bearer":["infer"]},{"bearer":["admin"]}]; []: open. */
static json_t *security(unsigned scope) {
    json_t *a = json_array();
    if (scope & API_SCOPE_INFER) json_array_append_new(a, json_pack("{s:[s]}", "bearer", "infer"));
    if (scope & API_SCOPE_ADMIN) json_array_append_new(a, json_pack("{s:[s]}", "bearer", "admin"));
    return a;
}

static const api_route_doc_t *find_doc(const api_route_doc_t *docs, int n, const api_route_t *row) {
    for (int i = 0; i < n; i++)
        if (!strcmp(docs[i].method, row->method) && !strcmp(docs[i].pattern, row->pattern)) return &docs[i];
    return NULL;
}

static int has_schema(json_t *schemas, const char *name, char *err, size_t errlen, const char *who) {
    if (!name || json_object_get(schemas, name)) return 0;
    snprintf(err, errlen, "%s names schema '%s', which api/http/openapi_schemas.json does not have", who, name);
    return -1;
}

static json_t *parameters(const api_route_t *row, const api_route_doc_t *d, char *err, size_t errlen,
                          const char *who) {
    json_t *ps = json_array();
    for (const char *p = strchr(row->pattern, '{'); p; p = strchr(p + 1, '{')) {
        const char *close = strchr(p, '}');
        if (!close) break;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(close - p - 1), p + 1);
        json_array_append_new(ps, json_pack("{s:s,s:s,s:b,s:{s:s}}", "name", name, "in", "path", "required", 1,
                                            "schema", "type", "string"));
    }
    for (const char *p = d->query ? d->query : ""; *p;) {
        while (*p == ' ') p++;
        size_t n = strcspn(p, " ");
        if (!n) break;
        char name[64], type[16];
        const char *colon = memchr(p, ':', n);
        if (!colon || colon == p || n - (size_t)(colon - p) - 1 >= sizeof type || (size_t)(colon - p) >= sizeof name) {
            snprintf(err, errlen, "%s: bad query list '%s'", who, d->query);
            json_decref(ps);
            return NULL;
        }
        snprintf(name, sizeof name, "%.*s", (int)(colon - p), p);
        snprintf(type, sizeof type, "%.*s", (int)(n - (size_t)(colon - p) - 1), colon + 1);
        json_array_append_new(ps, json_pack("{s:s,s:s,s:b,s:{s:s}}", "name", name, "in", "query", "required", 0,
                                            "schema", "type", type));
        p += n;
    }
    return ps;
}

/* "GET /v1/tasks/{id}" -> "get_v1_tasks_id" */
static void operation_id(const api_route_t *row, char *buf, size_t len) {
    size_t w = 0;
    for (const char *m = row->method; *m && w + 1 < len; m++) buf[w++] = (char)tolower((unsigned char)*m);
    int sep = 1;
    for (const char *p = row->pattern; *p && w + 1 < len; p++) {
        if (isalnum((unsigned char)*p)) {
            if (sep && w + 2 < len) buf[w++] = '_';
            buf[w++] = *p;
            sep = 0;
        } else {
            sep = 1;
        }
    }
    buf[w] = '\0';
}

static json_t *operation(const api_route_t *row, const api_route_doc_t *d, json_t *schemas, int probes_need_key,
                         char *err, size_t errlen) {
    char who[300];
    snprintf(who, sizeof who, "route %s %s", row->method, row->pattern);
    if (has_schema(schemas, d->request, err, errlen, who) || has_schema(schemas, d->response, err, errlen, who) ||
        has_schema(schemas, d->stream, err, errlen, who) || has_schema(schemas, "Error", err, errlen, who))
        return NULL;
    int probe = (row->flags & API_ROUTE_PROBE) != 0;
    unsigned scope = probe ? (probes_need_key ? API_SCOPE_INFER | API_SCOPE_ADMIN : 0) : row->scope;
    status_set_t ok = {{0}}, bad = {{0}};
    if (add_statuses(&ok, d->success, err, errlen, who) || add_statuses(&bad, d->errors, err, errlen, who))
        return NULL;
    /* what any row can answer before its handler runs (api/http/http.c, api/http/ctl.c) */
    bad.on[400 - 100] = bad.on[413 - 100] = 1; /* framing, nesting; Content-Length over the limit */
    if (scope) bad.on[401 - 100] = bad.on[403 - 100] = 1;
    if (!probe) bad.on[429 - 100] = bad.on[503 - 100] = 1; /* rate limit; shutting down, body budgets */
    if (row->flags & API_ROUTE_NEEDS_MODEL) bad.on[404 - 100] = 1;
    json_t *responses = json_object();
    for (int i = 0; i < 500; i++) {
        if (!ok.on[i] && !bad.on[i]) continue;
        char code[16];
        snprintf(code, sizeof code, "%d", i + 100);
        json_t *c;
        if (ok.on[i] && bad.on[i]) { /* e.g. 429 with the batch's own answer, or the rate limit's Error */
            const char *media = d->media ? d->media : "application/json";
            c = json_pack("{s:{s:{s:[o,o]}}}", media, "schema", "oneOf", ref(d->response), ref("Error"));
        } else if (ok.on[i]) {
            c = content(d->media ? d->media : "application/json", d->response);
            if (d->stream) json_object_set_new(c, "text/event-stream", json_pack("{s:o}", "schema", ref(d->stream)));
        } else {
            c = content("application/json", "Error");
        }
        json_object_set_new(responses, code, json_pack("{s:s,s:o}", "description", reason(i + 100), "content", c));
    }
    json_t *params = parameters(row, d, err, errlen, who);
    if (!params) {
        json_decref(responses);
        return NULL;
    }
    char opid[128];
    operation_id(row, opid, sizeof opid);
    json_t *op = json_pack("{s:s,s:s,s:o,s:o,s:o}", "summary", d->summary, "operationId", opid, "security",
                           security(scope), "responses", responses, "parameters", params);
    if (row->flags & API_ROUTE_PROBE)
        json_object_set_new(op, "x-sluice-probe", json_true()); /* open unless --auth-probes */
    if (d->request)
        json_object_set_new(op, "requestBody", json_pack("{s:b,s:o}", "required", 1, "content",
                                                         content("application/json", d->request)));
    return op;
}

json_t *api_openapi_document(const api_route_t *routes, int n_routes, const api_route_doc_t *docs, int n_docs,
                             int probes_need_key, char *err, size_t errlen) {
    json_error_t je;
    json_t *schemas = json_loads(api_openapi_schemas, 0, &je);
    json_t *paths = json_object(), *doc = NULL;
    if (!schemas || !json_is_object(schemas)) {
        snprintf(err, errlen, "api/http/openapi_schemas.json: %s (line %d)", schemas ? "not an object" : je.text,
                 je.line);
        goto fail;
    }
    for (int i = 0; i < n_docs; i++) { /* a doc row for a route that is gone */
        int found = 0;
        for (int k = 0; k < n_routes && !found; k++)
            found = routes[k].method && !strcmp(routes[k].method, docs[i].method) &&
                    !strcmp(routes[k].pattern, docs[i].pattern);
        if (!found) {
            snprintf(err, errlen, "doc row %s %s describes no route", docs[i].method, docs[i].pattern);
            goto fail;
        }
    }
    for (int k = 0; k < n_routes; k++) {
        const api_route_t *row = &routes[k];
        if (!row->method) continue; /* catch-alls: 404 for any method, not an operation */
        const api_route_doc_t *d = find_doc(docs, n_docs, row);
        if (!d) {
            snprintf(err, errlen, "route %s %s has no doc row (api_route_docs, api/http/routes.c)", row->method,
                     row->pattern);
            goto fail;
        }
        json_t *op = operation(row, d, schemas, probes_need_key, err, errlen);
        if (!op) goto fail;
        json_t *item = json_object_get(paths, row->pattern);
        if (!item) {
            item = json_object();
            json_object_set_new(paths, row->pattern, item);
        }
        char method[16];
        size_t w = 0;
        for (const char *m = row->method; *m && w + 1 < sizeof method; m++) method[w++] = (char)tolower((unsigned char)*m);
        method[w] = '\0';
        json_object_set_new(item, method, op);
    }
    doc = json_pack(
        "{s:s,s:{s:s,s:s,s:s},s:o,s:{s:o,s:{s:{s:s,s:s,s:s}}}}", "openapi", "3.1.0", "info", "title", "sluice",
        "version", "1",
        "description",
        "The HTTP API of `sluice serve`, made from its route table at run time. With --key-file a route needs "
        "`Authorization: Bearer <key>` with one of the scopes its security lists (infer, admin); an empty list: "
        "open. A method a path does not take answers 405, an unknown path 404 (both with the Error shape). "
        "docs/api.md is the reference.",
        "paths", paths, "components", "schemas", schemas, "securitySchemes", "bearer", "type", "http", "scheme",
        "bearer", "description", "an API key made by `sluice keys add` (sk-sluice-...)");
    if (!doc) snprintf(err, errlen, "out of memory");
    return doc;
fail:
    json_decref(schemas);
    json_decref(paths);
    return NULL;
}

int api_route_openapi(api_req_t *r) {
    char err[512];
    json_t *doc = api_openapi_document(r->ctx->routes, r->ctx->n_routes, api_route_docs, api_route_docs_count,
                                       r->ctx->cfg->auth_probes, err, sizeof err);
    if (!doc) return api_respond_error(r, 500, "openapi_failed", NULL, "%s", err);
    char *text = json_dumps(doc, JSON_INDENT(1));
    json_decref(doc);
    if (!text) return api_respond_error(r, 500, "oom", NULL, "out of memory");
    static const char *const headers[] = {"X-Content-Type-Options", "nosniff", "Cache-Control", "no-cache", NULL};
    return api_respond_raw_headers(r, 200, text, strlen(text), "application/json", headers);
}
