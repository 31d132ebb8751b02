/* api/expand_job.c - the term-expansion operation: terms and options in, neighbours out. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/expand_job.h"
#include "batcher/worker.h"
#include "engine/expand.h"

static void expand_args_free(void *p) {
    api_expand_args_t *a = p;
    if (!a) return;
    if (a->terms)
        for (int i = 0; i < a->n; i++) free(a->terms[i]);
    free(a->terms);
    free(a);
}

/* A copy of s without leading/trailing ASCII whitespace (NULL: out of memory). */
static char *expand_trimmed(const char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) n--;
    char *t = malloc(n + 1);
    if (t) {
        memcpy(t, s, n);
        t[n] = '\0';
    }
    return t;
}

/* The shared input parser speaks of "input": an expansion's field is "terms". */
static void expand_rename_input(api_err_t *e) {
    if (e->param && !strcmp(e->param, "input")) e->param = "terms";
    char msg[sizeof e->message];
    size_t w = 0;
    for (const char *p = e->message; *p && w + 6 < sizeof msg;) {
        if (!strncmp(p, "input", 5)) {
            memcpy(msg + w, "terms", 5);
            w += 5;
            p += 5;
        } else {
            msg[w++] = *p++;
        }
    }
    msg[w] = '\0';
    memcpy(e->message, msg, w + 1);
}

/* k, min_score and exclude_input from body into a. 0, or -1 with *e. */
static int expand_parse_options(json_t *body, api_expand_args_t *a, api_err_t *e) {
    json_t *v = json_object_get(body, "k");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > EXPAND_MAX_K)
            return api_err_set(e, 400, "invalid_value", "k", "k must be an integer from 1 to %d", EXPAND_MAX_K);
        a->k = (int)json_integer_value(v);
    }
    v = json_object_get(body, "min_score");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return api_err_set(e, 400, "invalid_value", "min_score", "min_score must be a number (a cosine, -1..1)");
        a->min_score = (float)json_number_value(v);
    }
    v = json_object_get(body, "exclude_input");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return api_err_set(e, 400, "invalid_type", "exclude_input", "exclude_input must be true or false");
        a->exclude_input = json_is_true(v);
    }
    return 0;
}

int api_expand_parse(const api_job_env_t *env, json_t *body, api_job_t **out, api_err_t *e) {
    registry_t *reg = env->reg;
    const api_config_t *cfg = env->cfg;
    *out = NULL;
    if (!json_is_object(body)) return api_err_set(e, 400, "invalid_json", NULL, "request body must be a JSON object");
    json_t *terms = json_object_get(body, "terms");
    if (!terms) return api_err_set(e, 400, "missing_field", "terms", "terms is required");
    if (!json_is_string(terms) && !json_is_array(terms))
        return api_err_set(e, 400, "invalid_type", "terms", "terms must be a string or an array of strings");
    size_t n = json_is_string(terms) ? 1 : json_array_size(terms);
    if (n == 0) return api_err_set(e, 400, "empty_input", "terms", "terms must not be empty");
    if (n > (size_t)cfg->max_inputs)
        return api_err_set(e, 413, "too_many_inputs", "terms", "%zu terms in one request; the limit is %d", n,
                           cfg->max_inputs);
    api_expand_args_t *a = calloc(1, sizeof *a);
    json_t *input = json_array(), *sub = json_object();
    if (!a || !input || !sub || !(a->terms = calloc(n, sizeof *a->terms))) goto oom;
    *a = (api_expand_args_t){.set = env->state, .k = 10, .min_score = -INFINITY, .exclude_input = 1, .terms = a->terms};
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_is_string(terms) ? terms : json_array_get(terms, i);
        if (!json_is_string(t)) {
            api_err_set(e, 400, "invalid_type", "terms", "terms[%zu] must be a string", i);
            goto fail;
        }
        if (!(a->terms[i] = expand_trimmed(json_string_value(t)))) goto oom;
        a->n = (int)i + 1;
        if (!a->terms[i][0]) {
            api_err_set(e, 400, "empty_input", "terms", "terms[%zu] is empty", i);
            goto fail;
        }
        if (json_array_append_new(input, json_string(a->terms[i]))) goto oom;
    }
    if (expand_parse_options(body, a, e)) goto fail;
    /* the answer grows with terms x k (about 40 bytes a neighbour): bounded before any work */
    if (cfg->max_expand_results > 0 && (long long)n * a->k > cfg->max_expand_results) {
        api_err_set(e, 413, "too_many_results", "k",
                    "%zu terms x k=%d = %lld neighbours in one answer; the limit is %d (--max-expand-results)", n,
                    a->k, (long long)n * a->k, cfg->max_expand_results);
        goto fail;
    }
    /* the shared encoder inputs: model, priority and deadline validated, the terms tokenized */
    const char *pass[] = {"model", "priority", "deadline_ms"};
    for (size_t i = 0; i < sizeof pass / sizeof pass[0]; i++) {
        json_t *v = json_object_get(body, pass[i]);
        if (v && json_object_set(sub, pass[i], v)) goto oom;
    }
    if (json_object_set(sub, "input", input)) goto oom;
    api_job_t *j = NULL;
    if (api_job_parse_inputs(reg, cfg, sub, NULL, NULL, EXPAND_RESULT_FLOATS, &j, e)) {
        expand_rename_input(e);
        goto fail;
    }
    j->type = &api_expand_job;
    j->item.op = BATCHER_OP_EXPAND;
    a->model = j->item.model;
    j->args = a;
    json_decref(input);
    json_decref(sub);
    *out = j;
    return 0;
oom:
    api_err_set(e, 503, "out_of_memory", NULL, "out of memory for %zu terms", n);
fail:
    expand_args_free(a);
    json_decref(input);
    json_decref(sub);
    return -1;
}

/* ASCII case-insensitive equality, as expand_index_find compares. */
static int expand_same_term(const char *a, const char *b) {
    for (;; a++, b++) {
        int ca = (unsigned char)*a, cb = (unsigned char)*b;
        if (ca >= 'A' && ca <= 'Z') ca += 'a' - 'A';
        if (cb >= 'A' && cb <= 'Z') cb += 'a' - 'A';
        if (ca != cb) return 0;
        if (!ca) return 1;
    }
}

/* One term's entry: its best k neighbours after the filters. NULL when out of memory. */
static json_t *expand_entry(const api_expand_args_t *a, int i, const expand_hit_t *hits) {
    json_t *neigh = json_array();
    json_t *obj = json_pack("{s:s,s:i,s:s,s:o}", "object", "expansion", "index", i, "term", a->terms[i],
                            "neighbours", neigh);
    if (!obj) return NULL;
    char term[256];
    for (int j = 0, kept = 0; j < EXPAND_MAX_K && kept < a->k; j++) {
        if (hits[j].id < 0 || hits[j].score < a->min_score) break; /* best first: the rest is worse */
        if (expand_set_term(a->set, a->model, hits[j].id, term, sizeof term)) continue;
        if (a->exclude_input && expand_same_term(term, a->terms[i])) continue;
        json_t *h = json_pack("{s:s,s:f}", "term", term, "score", (double)hits[j].score);
        if (!h || json_array_append_new(neigh, h)) {
            json_decref(obj);
            return NULL;
        }
        kept++;
    }
    return obj;
}

char *api_expand_result_json(api_job_t *j, size_t *len) {
    const api_expand_args_t *a = j->args;
    json_t *data = json_array();
    json_t *root = json_pack("{s:s,s:o,s:s,s:{s:i,s:i}}", "object", "list", "data", data, "model", j->model_name,
                             "usage", "prompt_tokens", j->prompt_tokens, "total_tokens", j->prompt_tokens);
    if (!root) return NULL;
    for (int i = 0; i < j->n; i++) {
        json_t *entry = expand_entry(a, i, (const expand_hit_t *)(j->out + (size_t)i * EXPAND_RESULT_FLOATS));
        if (!entry || json_array_append_new(data, entry)) {
            json_decref(root);
            return NULL;
        }
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(7));
    json_decref(root);
    if (s) *len = strlen(s);
    return s;
}

/* ---------------------------------------------------------------- the batcher's side */

static int expand_result_floats(void *user, registry_t *reg, int model) {
    (void)user;
    (void)reg;
    (void)model;
    return EXPAND_RESULT_FLOATS;
}

/* The input terms' neighbours in the model's term index (built on first use,
 * on the worker thread); the answer filters k, min_score and own terms. */
static int expand_run(void *user, registry_t *reg, model_t *m, const worker_batch_t *in, float *out, char *err,
                      size_t errlen) {
    (void)reg;
    (void)m;
    expand_index_t *ix = expand_set_index(user, in->model, err, errlen);
    if (!ix) return BATCHER_ECOMPUTE;
    return expand_batch(ix, in->ids, in->seq_off, in->n_seqs, out, err, errlen);
}

static void expand_unload(void *user, int model) { expand_set_drop(user, model); }

static const worker_op_t expand_op = {"expand", expand_result_floats, expand_run, expand_unload};

static int expand_attach(batcher_t *bat, registry_t *reg, void **state, char *err, size_t errlen) {
    expand_set_t *set = NULL;
    if (expand_set_create(reg, &set)) {
        snprintf(err, errlen, "out of memory for the expand indexes");
        return -1;
    }
    if (batcher_register_op(bat, BATCHER_OP_EXPAND, &expand_op, set)) {
        expand_set_destroy(set);
        snprintf(err, errlen, "cannot register the expand op");
        return -1;
    }
    *state = set;
    return 0;
}

static void expand_detach(void *state) { expand_set_destroy(state); }

const api_job_type_t api_expand_job = {
    .name = "expand",
    .op = BATCHER_OP_EXPAND,
    .input_field = "terms",
    .cacheable = 0,
    .parse = api_expand_parse,
    .result_json = api_expand_result_json,
    .free_args = expand_args_free,
    .attach = expand_attach,
    .detach = expand_detach,
};
