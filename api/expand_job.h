/* api/expand_job.h - a term-expansion request (POST /v1/expand, Redis op "expand").
 *
 * A job type of the job layer (api/job.h): the terms are validated and
 * tokenized as the shared encoder inputs (so the limits, truncation and
 * errors are the same as an embeddings request's), the item runs the
 * batcher's expand op and the job's args hold the options below. The
 * batcher computes each term's best min(N, 1000) neighbours; the answer keeps
 * k of them per term, drops those under min_score and, with exclude_input,
 * the term's own entry (compared as the index finds terms: ASCII case folded).
 *
 * The operation serves itself on the batcher (api_expand_job.attach): its
 * handler runs engine/expand.h's expand_batch on the model's term index,
 * kept in an expand_set_t that belongs to this operation, not to the
 * registry; the index is dropped before its model unloads.
 *
 * Ownership: the args belong to their job (freed by api_job_free).
 */
#ifndef SLUICE_API_EXPAND_JOB_H
#define SLUICE_API_EXPAND_JOB_H

#include "api/job.h"

typedef struct api_expand_args {
    struct expand_set *set; /* the term indexes (engine/expand.h): names the neighbours in the answer */
    int model;         /* registry index */
    int k;             /* neighbours per term, 1..EXPAND_MAX_K (default 10) */
    float min_score;   /* cosine floor (default: none) */
    int exclude_input; /* default 1 */
    char **terms;      /* (n) the terms as given, trimmed */
    int n;
} api_expand_args_t;

/* Parse and validate {model, terms (string | [string]), k, min_score,
 * exclude_input, priority, deadline_ms}; tokenize the terms. 0, or -1 with *e. */
int api_expand_parse(const api_job_env_t *env, json_t *body, api_job_t **out, api_err_t *e);
/* {"object":"list","data":[{"object":"expansion","index","term","neighbours":[{"term","score"}]}],
 *  "model","usage"}; malloc'd, *len bytes, or NULL when out of memory. */
char *api_expand_result_json(api_job_t *j, size_t *len);

extern const api_job_type_t api_expand_job;

#endif
