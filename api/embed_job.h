/* api/embed_job.h - an embeddings request, from JSON to tokens to the answer.
 *
 * Shared by both intakes: POST /v1/embeddings parses the HTTP body, the
 * Redis intake parses a task's inputs, and both get the same job (a batcher
 * work item with its token ids and result buffer) and the same response JSON
 * (OpenAI's embeddings object). Validation errors come back with the HTTP
 * status, an error code and the offending field.
 *
 * Ownership: the job owns its buffers; api_embed_job_free frees them (NULL:
 * no-op). Thread-safety: no shared state; one job is used by one thread at a
 * time (the batcher hands it back through the item's done callback).
 */
#ifndef SLUICE_API_EMBED_JOB_H
#define SLUICE_API_EMBED_JOB_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "api/config.h"
#include "batcher/batcher.h"
#include "engine/registry.h"

typedef struct {
    unsigned status;   /* HTTP status: 400, 404, 413, 422, 503 */
    const char *code;  /* e.g. "invalid_input", "model_not_found" */
    const char *param; /* the field at fault, or NULL */
    char message[512];
} api_err_t;

/* Fill e (status, code, param, printf-style message) and return -1, so a
 * parser can `return api_err_set(...)`. */
int api_err_set(api_err_t *e, unsigned status, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

typedef struct {
    batcher_item_t item;     /* model, op, priority, ids, seq_off, out filled */
    char model_name[REGISTRY_NAME_MAX];
    int n;                   /* inputs */
    int32_t *ids;            /* (prompt_tokens) */
    int32_t *seq_off;        /* (n+1) */
    float *out;              /* (n, hidden) */
    int hidden;
    int dims;                /* answer width: hidden, or `dimensions` (truncated + re-normalised) */
    int base64;              /* encoding_format "base64" */
    int prompt_tokens;       /* after truncation */
    int64_t deadline_ms;     /* relative deadline asked for (0: none given) */
    struct api_expand_args *expand; /* op expand: its options and terms (api/expand_job.h); else NULL */
} api_embed_job_t;

/* Parse and validate an embeddings request object and tokenize its inputs:
 * input (string | [string] | [int] | [[int]]), model (may be omitted when
 * only one model exists), encoding_format, dimensions, truncate, and the
 * extensions priority (-1000..1000) and deadline_ms. 0, or -1 with *e. */
int api_embed_parse(registry_t *reg, const api_config_t *cfg, json_t *body, api_embed_job_t **out,
                    api_err_t *e);
/* The shape every request parser has (embed, expand): routes and the Redis
 * intake pick one by op. */
typedef int (*api_job_parse_fn)(registry_t *reg, const api_config_t *cfg, json_t *body, api_embed_job_t **out,
                                api_err_t *e);
/* The answer of a finished job: {"object":"list","data":[...],"model":..,"usage":..}.
 * malloc'd, *len bytes (NUL-terminated), or NULL when out of memory. */
char *api_embed_result_json(api_embed_job_t *j, size_t *len);
void api_embed_job_free(api_embed_job_t *j);

#endif
