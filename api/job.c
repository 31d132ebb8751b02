/* api/job.c - what every operation shares: errors, the error mapping of both
 * intakes, and the encoder inputs (model, input shapes, tokens, truncation). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/job.h"
#include "kernels/util.h"

int api_err_set(api_err_t *e, unsigned status, const char *code, const char *param, const char *fmt, ...) {
    e->status = status;
    e->code = code;
    e->param = param;
    va_list ap;
    va_start(ap, fmt);
    util_verrf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

int api_json_int(json_t *obj, const char *name, int64_t lo, int64_t hi, int64_t *out, api_err_t *e) {
    json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return api_err_set(e, 400, "invalid_value", name, "%s must be an integer from %lld to %lld", name,
                           (long long)lo, (long long)hi);
    *out = json_integer_value(v);
    return 0;
}

int api_job_priority_deadline(json_t *body, int *priority, int64_t *deadline_ms, api_err_t *e) {
    int64_t p = *priority;
    if (api_json_int(body, "priority", API_PRIORITY_MIN, API_PRIORITY_MAX, &p, e) ||
        api_json_int(body, "deadline_ms", 1, API_DEADLINE_MS_MAX, deadline_ms, e))
        return -1;
    *priority = (int)p;
    return 0;
}

const char *api_err_param(api_err_t *e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->param_buf, sizeof e->param_buf, fmt, ap);
    va_end(ap);
    return e->param_buf;
}

const char *api_error_type(unsigned status) {
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 408: return "timeout_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable_error";
    case 507: return "insufficient_storage_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

json_t *api_error_object(unsigned status, const char *code, const char *param, const char *msg, int with_status) {
    json_t *o = json_pack("{s:{s:s,s:s,s:o,s:s}}", "error", "message", msg, "type", api_error_type(status), "param",
                          param ? json_string(param) : json_null(), "code", code ? code : "error");
    if (o && with_status) json_object_set_new(o, "status", json_integer((json_int_t)status));
    return o;
}

char *api_error_json(unsigned status, const char *code, const char *param, const char *msg, int with_status) {
    json_t *o = api_error_object(status, code, param, msg, with_status);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

unsigned api_status_for_batcher(int err_code, const char **code) {
    switch (err_code) {
    case BATCHER_EINVAL: *code = "invalid_input"; return 400;
    case BATCHER_EBUSY: *code = "queue_full"; return 429;
    case BATCHER_EPAUSED: *code = "not_accepting_work"; return 503;
    case BATCHER_ENOMEM: *code = "model_too_large"; return 507;
    case BATCHER_EMODEL: *code = "model_unavailable"; return 503;
    case BATCHER_ESTOPPED: *code = "shutting_down"; return 503;
    default: *code = "compute_failed"; return 500;
    }
}

void api_job_free(api_job_t *j) {
    if (!j) return;
    if (j->type && j->type->free_args) j->type->free_args(j->args);
    free(j->ids);
    free(j->seq_off);
    free(j->out);
    free(j);
}

int api_job_only_model(registry_t *reg, model_kind_t kind) {
    int found = -1;
    for (int i = 0; i < registry_count(reg); i++) {
        registry_model_info_t info;
        if (registry_info(reg, i, &info)) continue;
        if (info.kind != kind) continue;
        if (found >= 0) return -2;
        found = i;
    }
    return found;
}

char *api_job_result_json(api_job_t *j, size_t *len) { return j->type->result_json(j, len); }

typedef enum { IN_TEXTS, IN_TOKENS, IN_TOKEN_LISTS } input_kind_t;

/* Which of the four OpenAI input shapes, and how many inputs. */
static int classify_input(json_t *in, input_kind_t *kind, int *n, api_err_t *e) {
    if (json_is_string(in)) {
        *kind = IN_TEXTS;
        *n = 1;
        return 0;
    }
    if (!json_is_array(in))
        return api_err_set(e, 400, "invalid_type", "input",
                    "input must be a string, an array of strings, an array of token ids or an array of arrays of token ids");
    size_t sz = json_array_size(in);
    if (sz == 0) return api_err_set(e, 400, "empty_input", "input", "input must not be empty");
    json_t *first = json_array_get(in, 0);
    size_t i;
    json_t *v;
    if (json_is_string(first)) {
        json_array_foreach(in, i, v) if (!json_is_string(v))
            return api_err_set(e, 400, "invalid_type", "input", "input[%zu] must be a string like input[0]", i);
        *kind = IN_TEXTS;
        *n = (int)(sz > 0x7fffffff ? 0x7fffffff : sz);
        return 0;
    }
    if (json_is_integer(first)) {
        json_array_foreach(in, i, v) if (!json_is_integer(v))
            return api_err_set(e, 400, "invalid_type", "input", "input[%zu] must be a token id (integer) like input[0]", i);
        *kind = IN_TOKENS;
        *n = 1;
        return 0;
    }
    if (json_is_array(first)) {
        json_array_foreach(in, i, v) {
            if (!json_is_array(v))
                return api_err_set(e, 400, "invalid_type", "input", "input[%zu] must be an array of token ids", i);
            size_t k;
            json_t *t;
            json_array_foreach(v, k, t) if (!json_is_integer(t))
                return api_err_set(e, 400, "invalid_type", "input", "input[%zu][%zu] must be a token id (integer)", i, k);
        }
        *kind = IN_TOKEN_LISTS;
        *n = (int)(sz > 0x7fffffff ? 0x7fffffff : sz);
        return 0;
    }
    return api_err_set(e, 400, "invalid_type", "input",
                "input[0] must be a string, a token id or an array of token ids");
}

static int grow_ids(api_job_t *j, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    int32_t *p = realloc(j->ids, c * sizeof *p);
    if (!p) return -1;
    j->ids = p;
    *cap = c;
    return 0;
}

int api_job_parse_inputs(registry_t *reg, const api_config_t *cfg, json_t *body, api_job_options_fn options,
                         void *ctx, int result_floats, api_job_t **out, api_err_t *e) {
    *out = NULL;
    if (!json_is_object(body)) return api_err_set(e, 400, "invalid_json", NULL, "request body must be a JSON object");

    /* model */
    json_t *jm = json_object_get(body, "model");
    int model = -1;
    if (!jm || json_is_null(jm)) {
        model = api_job_only_model(reg, MODEL_ENCODER);
        if (model < 0)
            return api_err_set(e, 400, "missing_field", "model",
                               model == -1 ? "model is required (this server has no encoder model)"
                                           : "model is required (this server has several encoder models)");
    } else if (!json_is_string(jm)) {
        return api_err_set(e, 400, "invalid_type", "model", "model must be a string");
    } else {
        model = registry_find(reg, json_string_value(jm));
        if (model < 0) {
            char avail[256] = "";
            for (int i = 0; i < registry_count(reg) && strlen(avail) < 200; i++) {
                registry_model_info_t info;
                registry_info(reg, i, &info);
                size_t l = strlen(avail);
                snprintf(avail + l, sizeof avail - l, "%s%s", l ? ", " : "", info.name);
            }
            return api_err_set(e, 404, "model_not_found", "model", "model '%.128s' not found (available: %s)",
                        json_string_value(jm), avail[0] ? avail : "none");
        }
    }
    registry_model_info_t info;
    registry_info(reg, model, &info);

    /* input */
    json_t *in = json_object_get(body, "input");
    if (!in) return api_err_set(e, 400, "missing_field", "input", "input is required");
    input_kind_t kind;
    int n;
    if (classify_input(in, &kind, &n, e)) return -1;
    if (n > cfg->max_inputs)
        return api_err_set(e, 413, "too_many_inputs", "input", "%d inputs in one request; the limit is %d", n,
                    cfg->max_inputs);

    /* the op's own options, then the shared ones */
    if (options && options(body, &info, ctx, e)) return -1;
    int truncate = 1, priority = 0;
    int64_t deadline_ms = 0;
    json_t *v;
    v = json_object_get(body, "truncate");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) return api_err_set(e, 400, "invalid_type", "truncate", "truncate must be true or false");
        truncate = json_is_true(v);
    }
    if (api_job_priority_deadline(body, &priority, &deadline_ms, e)) return -1;
    if (info.hidden <= 0)
        return api_err_set(e, 503, "model_unavailable", "model", "model %s: config.json has no hidden_size", info.name);

    char terr[256];
    const tok_t *tok = registry_tokenizer(reg, model, terr, sizeof terr);
    if (!tok) return api_err_set(e, 503, "model_unavailable", "model", "model %s: tokenizer: %s", info.name, terr);
    int max_len = tok_max_len(tok), vocab = tok_vocab_size(tok);
    int32_t sep = tok_sep_id(tok);

    api_job_t *j = calloc(1, sizeof *j);
    if (!j) return api_err_set(e, 503, "out_of_memory", NULL, "out of memory");
    snprintf(j->model_name, sizeof j->model_name, "%s", info.name);
    j->n = n;
    j->deadline_ms = deadline_ms;
    j->seq_off = malloc(((size_t)n + 1) * sizeof *j->seq_off);
    j->out = malloc((size_t)n * (result_floats > 0 ? result_floats : info.hidden) * sizeof *j->out);
    size_t cap = 0, T = 0;
    if (!j->seq_off || !j->out) goto oom;
    j->seq_off[0] = 0;
    for (int i = 0; i < n; i++) {
        if (grow_ids(j, &cap, T + (size_t)max_len)) goto oom;
        int len;
        if (kind == IN_TEXTS) {
            json_t *s = json_is_string(in) ? in : json_array_get(in, i);
            size_t bytes = json_string_length(s);
            if (bytes == 0) {
                api_job_free(j);
                return api_err_set(e, 400, "empty_input", "input", "input[%d] is an empty string", i);
            }
            int untrunc = 0;
            len = tok_encode(tok, json_string_value(s), bytes, j->ids + T, max_len, &untrunc, terr, sizeof terr);
            if (len < 0) {
                api_job_free(j);
                return api_err_set(e, 400, "invalid_input", "input", "input[%d]: %s", i, terr);
            }
            if (untrunc > max_len && !truncate) {
                api_job_free(j);
                return api_err_set(e, 422, "input_too_long", "input",
                            "input[%d] is %d tokens; model %s takes at most %d (send truncate: true to cut it)",
                            i, untrunc, info.name, max_len);
            }
        } else {
            json_t *arr = kind == IN_TOKENS ? in : json_array_get(in, i);
            size_t sz = json_array_size(arr);
            if (sz == 0) {
                api_job_free(j);
                return api_err_set(e, 400, "empty_input", "input", "input[%d] is an empty token list", i);
            }
            if (sz > (size_t)max_len && !truncate) {
                api_job_free(j);
                return api_err_set(e, 422, "input_too_long", "input",
                            "input[%d] is %zu tokens; model %s takes at most %d (send truncate: true to cut it)",
                            i, sz, info.name, max_len);
            }
            len = sz > (size_t)max_len ? max_len : (int)sz;
            for (int k = 0; k < len; k++) {
                json_int_t id = json_integer_value(json_array_get(arr, k));
                if (id < 0 || id >= vocab) {
                    api_job_free(j);
                    return api_err_set(e, 400, "invalid_input", "input",
                                "token id %lld at input[%d][%d] is outside the vocabulary (0..%d)",
                                (long long)id, i, k, vocab - 1);
                }
                j->ids[T + k] = (int32_t)id;
            }
            /* cut like the tokenizer does: keep the closing [SEP] */
            if ((int)sz > len && json_integer_value(json_array_get(arr, sz - 1)) == sep) j->ids[T + len - 1] = sep;
        }
        T += (size_t)len;
        j->seq_off[i + 1] = (int32_t)T;
    }
    j->prompt_tokens = (int)T;
    j->item.model = model;
    j->item.priority = priority;
    j->item.n_seqs = n;
    j->item.ids = j->ids;
    j->item.seq_off = j->seq_off;
    j->item.out = j->out;
    *out = j;
    return 0;
oom:
    api_job_free(j);
    return api_err_set(e, 503, "out_of_memory", NULL, "out of memory for %d inputs", n);
}

