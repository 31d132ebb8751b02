/* api/embed_job.c - parse, validate and tokenize an embeddings request; write the answer. */
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/embed_job.h"
#include "api/expand_job.h"

int api_err_set(api_err_t *e, unsigned status, const char *code, const char *param, const char *fmt, ...) {
    e->status = status;
    e->code = code;
    e->param = param;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

void api_embed_job_free(api_embed_job_t *j) {
    if (!j) return;
    api_expand_args_free(j->expand);
    free(j->ids);
    free(j->seq_off);
    free(j->out);
    free(j);
}

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

static int grow_ids(api_embed_job_t *j, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    int32_t *p = realloc(j->ids, c * sizeof *p);
    if (!p) return -1;
    j->ids = p;
    *cap = c;
    return 0;
}

int api_embed_parse(registry_t *reg, const api_config_t *cfg, json_t *body, api_embed_job_t **out,
                    api_err_t *e) {
    *out = NULL;
    if (!json_is_object(body)) return api_err_set(e, 400, "invalid_json", NULL, "request body must be a JSON object");

    /* model */
    json_t *jm = json_object_get(body, "model");
    int model = -1;
    if (!jm || json_is_null(jm)) {
        if (registry_count(reg) != 1) return api_err_set(e, 400, "missing_field", "model", "model is required");
        model = 0;
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

    /* options */
    int base64 = 0, truncate = 1, priority = 0, dims = info.hidden;
    int64_t deadline_ms = 0;
    json_t *v = json_object_get(body, "encoding_format");
    if (v && !json_is_null(v)) {
        if (json_is_string(v) && !strcmp(json_string_value(v), "float")) base64 = 0;
        else if (json_is_string(v) && !strcmp(json_string_value(v), "base64")) base64 = 1;
        else return api_err_set(e, 400, "invalid_value", "encoding_format", "encoding_format must be \"float\" or \"base64\"");
    }
    v = json_object_get(body, "dimensions");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > info.hidden)
            return api_err_set(e, 400, "invalid_value", "dimensions", "dimensions must be an integer from 1 to %d",
                        info.hidden);
        dims = (int)json_integer_value(v);
    }
    v = json_object_get(body, "truncate");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) return api_err_set(e, 400, "invalid_type", "truncate", "truncate must be true or false");
        truncate = json_is_true(v);
    }
    v = json_object_get(body, "priority");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < -1000 || json_integer_value(v) > 1000)
            return api_err_set(e, 400, "invalid_value", "priority", "priority must be an integer from -1000 to 1000");
        priority = (int)json_integer_value(v);
    }
    v = json_object_get(body, "deadline_ms");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 86400000)
            return api_err_set(e, 400, "invalid_value", "deadline_ms", "deadline_ms must be an integer from 1 to 86400000");
        deadline_ms = json_integer_value(v);
    }
    if (info.hidden <= 0)
        return api_err_set(e, 503, "model_unavailable", "model", "model %s: config.json has no hidden_size", info.name);

    char terr[256];
    const tok_t *tok = registry_tokenizer(reg, model, terr, sizeof terr);
    if (!tok) return api_err_set(e, 503, "model_unavailable", "model", "model %s: tokenizer: %s", info.name, terr);
    int max_len = tok_max_len(tok), vocab = tok_vocab_size(tok);
    int32_t sep = tok_sep_id(tok);

    api_embed_job_t *j = calloc(1, sizeof *j);
    if (!j) return api_err_set(e, 503, "out_of_memory", NULL, "out of memory");
    snprintf(j->model_name, sizeof j->model_name, "%s", info.name);
    j->n = n;
    j->hidden = info.hidden;
    j->dims = dims;
    j->base64 = base64;
    j->deadline_ms = deadline_ms;
    j->seq_off = malloc(((size_t)n + 1) * sizeof *j->seq_off);
    j->out = malloc((size_t)n * info.hidden * sizeof *j->out);
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
                api_embed_job_free(j);
                return api_err_set(e, 400, "empty_input", "input", "input[%d] is an empty string", i);
            }
            int untrunc = 0;
            len = tok_encode(tok, json_string_value(s), bytes, j->ids + T, max_len, &untrunc, terr, sizeof terr);
            if (len < 0) {
                api_embed_job_free(j);
                return api_err_set(e, 400, "invalid_input", "input", "input[%d]: %s", i, terr);
            }
            if (untrunc > max_len && !truncate) {
                api_embed_job_free(j);
                return api_err_set(e, 422, "input_too_long", "input",
                            "input[%d] is %d tokens; model %s takes at most %d (send truncate: true to cut it)",
                            i, untrunc, info.name, max_len);
            }
        } else {
            json_t *arr = kind == IN_TOKENS ? in : json_array_get(in, i);
            size_t sz = json_array_size(arr);
            if (sz == 0) {
                api_embed_job_free(j);
                return api_err_set(e, 400, "empty_input", "input", "input[%d] is an empty token list", i);
            }
            if (sz > (size_t)max_len && !truncate) {
                api_embed_job_free(j);
                return api_err_set(e, 422, "input_too_long", "input",
                            "input[%d] is %zu tokens; model %s takes at most %d (send truncate: true to cut it)",
                            i, sz, info.name, max_len);
            }
            len = sz > (size_t)max_len ? max_len : (int)sz;
            for (int k = 0; k < len; k++) {
                json_int_t id = json_integer_value(json_array_get(arr, k));
                if (id < 0 || id >= vocab) {
                    api_embed_job_free(j);
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
    j->item.op = BATCHER_OP_EMBED;
    j->item.priority = priority;
    j->item.n_seqs = n;
    j->item.ids = j->ids;
    j->item.seq_off = j->seq_off;
    j->item.out = j->out;
    *out = j;
    return 0;
oom:
    api_embed_job_free(j);
    return api_err_set(e, 503, "out_of_memory", NULL, "out of memory for %d inputs", n);
}

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf_t;

static void sb_reserve(sbuf_t *b, size_t more) {
    if (b->oom || b->n + more + 1 <= b->cap) return;
    size_t c = b->cap ? b->cap : 4096;
    while (c < b->n + more + 1) c *= 2;
    char *p = realloc(b->p, c);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = c;
}

static void sb_add(sbuf_t *b, const char *s, size_t len) {
    sb_reserve(b, len);
    if (b->oom) return;
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf_t *b, const char *s) { sb_add(b, s, strlen(s)); }

char *api_embed_result_json(api_embed_job_t *j, size_t *len) {
    if (j->expand) return api_expand_result_json(j, len);
    sbuf_t b = {0};
    sb_reserve(&b, (size_t)j->n * (j->base64 ? (size_t)j->dims * 4 / 3 + 64 : (size_t)j->dims * 16 + 64) + 256);
    float *row = malloc((size_t)j->dims * sizeof *row);
    if (!row) return NULL;
    sb_str(&b, "{\"object\":\"list\",\"data\":[");
    char num[160];
    for (int i = 0; i < j->n; i++) {
        const float *src = j->out + (size_t)i * j->hidden;
        memcpy(row, src, (size_t)j->dims * sizeof *row);
        if (j->dims < j->hidden) { /* Matryoshka-style: cut, then back to unit length */
            double ss = 0;
            for (int k = 0; k < j->dims; k++) ss += (double)row[k] * row[k];
            double norm = sqrt(ss);
            if (norm < 1e-12) norm = 1e-12;
            for (int k = 0; k < j->dims; k++) row[k] = (float)(row[k] / norm);
        }
        int l = snprintf(num, sizeof num, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i ? "," : "", i);
        sb_add(&b, num, (size_t)l);
        if (j->base64) {
            size_t raw = (size_t)j->dims * sizeof(float), enc = 4 * ((raw + 2) / 3);
            sb_reserve(&b, enc + 2);
            if (b.oom) break;
            b.p[b.n++] = '"';
            EVP_EncodeBlock((unsigned char *)b.p + b.n, (const unsigned char *)row, (int)raw);
            b.n += enc;
            b.p[b.n++] = '"';
            b.p[b.n] = '\0';
        } else {
            sb_add(&b, "[", 1);
            for (int k = 0; k < j->dims; k++) {
                float x = row[k];
                l = isfinite(x) ? snprintf(num, sizeof num, "%s%.9g", k ? "," : "", x)
                                : snprintf(num, sizeof num, "%s0", k ? "," : "");
                sb_add(&b, num, (size_t)l);
            }
            sb_add(&b, "]", 1);
        }
        sb_add(&b, "}", 1);
    }
    free(row);
    sb_str(&b, "],\"model\":");
    json_t *m = json_string(j->model_name);
    char *ms = json_dumps(m, JSON_ENCODE_ANY);
    json_decref(m);
    sb_str(&b, ms ? ms : "\"\"");
    free(ms);
    int l = snprintf(num, sizeof num, ",\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d}}", j->prompt_tokens,
                     j->prompt_tokens);
    sb_add(&b, num, (size_t)l);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.n;
    return b.p;
}
