/* api/http/route.c - pattern matching over a route table, and what the rows say. */
#include <stdio.h>
#include <string.h>

#include "api/http/route.h"

/* Does path fit pattern? Fills the {param} values. */
static int pattern_match(const char *pat, const char *path, api_route_match_t *m) {
    m->n_params = 0;
    while (*pat && *path) {
        if (*pat == '{') {
            const char *close = strchr(pat, '}');
            size_t n = strcspn(path, "/");
            if (!close || n == 0 || m->n_params >= API_ROUTE_PARAMS) return 0;
            snprintf(m->params[m->n_params], API_ROUTE_PARAM_MAX, "%.*s", (int)n, path);
            m->n_params++;
            pat = close + 1;
            path += n;
            continue;
        }
        if (*pat != *path) return 0;
        pat++, path++;
    }
    return !*pat && !*path;
}

int api_route_match(const api_route_t *table, int n, const char *method, const char *path, api_route_match_t *m) {
    memset(m, 0, sizeof *m);
    for (int i = 0; i < n; i++) {
        if (!pattern_match(table[i].pattern, path, m)) continue;
        m->first = &table[i];
        for (int k = i; k < n && !strcmp(table[k].pattern, table[i].pattern); k++) {
            m->n_rows++;
            if (!m->row && (!table[k].method || !strcmp(table[k].method, method))) m->row = &table[k];
        }
        m->method_ok = m->row != NULL;
        return 1;
    }
    m->n_params = 0;
    return 0;
}

int api_route_is_probe(const api_route_match_t *m) { return m->first && (m->first->flags & API_ROUTE_PROBE); }

unsigned api_route_scope(const api_route_match_t *m, int probes_need_key) {
    if (!m->first) return API_SCOPE_INFER;
    if (api_route_is_probe(m)) return probes_need_key ? API_SCOPE_INFER | API_SCOPE_ADMIN : 0;
    if (m->row) return m->row->scope;
    unsigned any = 0;
    for (int i = 0; i < m->n_rows; i++) any |= m->first[i].scope;
    return any & API_SCOPE_ADMIN ? API_SCOPE_ADMIN : any;
}

void api_route_allowed(const api_route_match_t *m, char *buf, size_t len) {
    size_t w = (size_t)snprintf(buf, len, "use");
    for (int i = 0; m->first && i < m->n_rows && w < len; i++)
        if (m->first[i].method)
            w += (size_t)snprintf(buf + w, len - w, "%s %s", i ? " or" : "", m->first[i].method);
}

static const char *const OTHER = "other";

/* Is table[i]'s label new (not "other", not seen in an earlier row)? */
static int label_first(const api_route_t *table, int i) {
    if (!strcmp(table[i].label, OTHER)) return 0;
    for (int k = 0; k < i; k++)
        if (!strcmp(table[k].label, table[i].label)) return 0;
    return 1;
}

int api_route_label_count(const api_route_t *table, int n) {
    int c = 0;
    for (int i = 0; i < n; i++) c += label_first(table, i);
    return c + 1;
}

const char *api_route_label(const api_route_t *table, int n, int idx) {
    for (int i = 0, c = 0; i < n; i++)
        if (label_first(table, i) && c++ == idx) return table[i].label;
    return OTHER;
}

int api_route_label_index(const api_route_t *table, int n, const api_route_match_t *m) {
    const api_route_t *row = m->row ? m->row : m->first;
    if (!row || !strcmp(row->label, OTHER)) return api_route_label_count(table, n) - 1;
    for (int i = 0, c = 0; i < n; i++) {
        if (!label_first(table, i)) continue;
        if (!strcmp(table[i].label, row->label)) return c;
        c++;
    }
    return api_route_label_count(table, n) - 1;
}
