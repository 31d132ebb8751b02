/* api/embed_job.c - the embeddings operation: its options (encoding_format,
 * dimensions) and its answer (OpenAI's embeddings object). */
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/embed_job.h"

typedef struct {
    int hidden; /* the model's width */
    int dims;   /* answer width: hidden, or `dimensions` (truncated + re-normalised) */
    int base64; /* encoding_format "base64" */
} embed_args_t;

/* encoding_format and dimensions, read between the input count and the shared options. */
static int embed_options(json_t *body, const registry_model_info_t *info, void *ctx, api_err_t *e) {
    embed_args_t *a = ctx;
    a->hidden = info->hidden;
    a->dims = info->hidden;
    a->base64 = 0;
    json_t *v = json_object_get(body, "encoding_format");
    if (v && !json_is_null(v)) {
        if (json_is_string(v) && !strcmp(json_string_value(v), "float")) a->base64 = 0;
        else if (json_is_string(v) && !strcmp(json_string_value(v), "base64")) a->base64 = 1;
        else return api_err_set(e, 400, "invalid_value", "encoding_format", "encoding_format must be \"float\" or \"base64\"");
    }
    v = json_object_get(body, "dimensions");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > info->hidden)
            return api_err_set(e, 400, "invalid_value", "dimensions", "dimensions must be an integer from 1 to %d",
                        info->hidden);
        a->dims = (int)json_integer_value(v);
    }
    return 0;
}

int api_embed_parse(const api_job_env_t *env, json_t *body, api_job_t **out, api_err_t *e) {
    *out = NULL;
    embed_args_t opt;
    if (api_job_parse_inputs(env->reg, env->cfg, body, embed_options, &opt, 0, out, e)) return -1;
    embed_args_t *a = malloc(sizeof *a);
    if (!a) {
        api_job_free(*out);
        *out = NULL;
        return api_err_set(e, 503, "out_of_memory", NULL, "out of memory");
    }
    *a = opt;
    (*out)->type = &api_embed_job;
    (*out)->args = a;
    (*out)->item.op = BATCHER_OP_EMBED;
    return 0;
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

char *api_embed_result_json(api_job_t *job, size_t *len) {
    const embed_args_t *j = job->args;
    const int n = job->n;
    sbuf_t b = {0};
    sb_reserve(&b, (size_t)n * (j->base64 ? (size_t)j->dims * 4 / 3 + 64 : (size_t)j->dims * 16 + 64) + 256);
    float *row = malloc((size_t)j->dims * sizeof *row);
    if (!row) return NULL;
    sb_str(&b, "{\"object\":\"list\",\"data\":[");
    char num[160];
    for (int i = 0; i < n; i++) {
        const float *src = job->out + (size_t)i * j->hidden;
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
    json_t *m = json_string(job->model_name);
    char *ms = json_dumps(m, JSON_ENCODE_ANY);
    json_decref(m);
    sb_str(&b, ms ? ms : "\"\"");
    free(ms);
    int l = snprintf(num, sizeof num, ",\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d}}", job->prompt_tokens,
                     job->prompt_tokens);
    sb_add(&b, num, (size_t)l);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.n;
    return b.p;
}

const api_job_type_t api_embed_job = {
    .name = "embed",
    .op = BATCHER_OP_EMBED,
    .input_field = "input",
    .cacheable = 1,
    .parse = api_embed_parse,
    .result_json = api_embed_result_json,
    .free_args = free,
};
