/* api/job.h - the job layer: one operation's request, from JSON to a batcher
 * work item to the answer, shared by every intake.
 *
 * An operation (embed, expand; generation later) is one api_job_type_t: a
 * parser (request object -> job with its token ids and result buffer), a
 * writer (finished job -> response JSON) and a destructor for its own
 * options. POST /v1/embeddings and the Redis intake's "embed" tasks go
 * through the same type, so an operation validates, answers and fails the
 * same way from HTTP and from Redis. api/jobs.h names the types this server
 * runs; adding an operation is one more type there.
 *
 * Errors: a parser fills api_err_t (HTTP status, code, field, message);
 * api_error_type maps a status to the OpenAI error type once for every
 * intake, and api_error_json writes the error object both return.
 *
 * Ownership: a job owns its buffers and its options; api_job_free frees them
 * (NULL: no-op). Thread-safety: no shared state; one job is used by one
 * thread at a time (the batcher hands it back through the item's callback).
 */
#ifndef SLUICE_API_JOB_H
#define SLUICE_API_JOB_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "api/config.h"
#include "batcher/batcher.h"
#include "batcher/sched.h"
#include "engine/registry.h"

typedef struct {
    unsigned status;   /* HTTP status: 400, 404, 413, 422, 503 */
    const char *code;  /* e.g. "invalid_input", "model_not_found" */
    const char *param; /* the field at fault, or NULL (static text, or param_buf) */
    char message[512];
    char param_buf[128]; /* a field name made for this error ("messages[2].role") */
} api_err_t;

/* Write a field name into e->param_buf and return it (for api_err_set's param). */
const char *api_err_param(api_err_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Fill e (status, code, param, printf-style message) and return -1, so a
 * parser can `return api_err_set(...)`. */
int api_err_set(api_err_t *e, unsigned status, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* An integer field of obj from lo to hi into *out: absent or null leaves *out
 * as it is; anything else is 400 invalid_value naming the field and the range. */
int api_json_int(json_t *obj, const char *name, int64_t lo, int64_t hi, int64_t *out, api_err_t *e);

/* The fields every operation takes the same way: priority (higher runs first)
 * and deadline_ms (relative to receipt). Absent or null leaves *priority and
 * *deadline_ms as they are; else 400 invalid_value naming the field and range.
 * One validator, so embeddings, expand and generation answer alike. */
#define API_PRIORITY_MIN (-1000)
#define API_PRIORITY_MAX 1000
#define API_DEADLINE_MS_MAX INT64_C(86400000) /* a day */
int api_job_priority_deadline(json_t *body, int *priority, int64_t *deadline_ms, api_err_t *e);

/* The OpenAI error type of a status ("not_found_error", "rate_limit_error",
 * ...; "invalid_request_error" for other 4xx, "server_error" for other 5xx). */
const char *api_error_type(unsigned status);
/* {"error":{"message","type","param","code"}} (+ "status" when with_status:
 * the form a Redis task's result takes). Returns a new reference. */
json_t *api_error_object(unsigned status, const char *code, const char *param, const char *msg, int with_status);
/* The same, dumped: malloc'd text, or NULL when out of memory. */
char *api_error_json(unsigned status, const char *code, const char *param, const char *msg, int with_status);
/* A batcher error (BATCHER_E*) as a status and an error code. */
unsigned api_status_for_batcher(int err_code, const char **code);

typedef struct api_job api_job_t;
typedef struct api_job_type api_job_type_t;

/* The generation scheduler's calls (batcher/sched.h), given by the server's
 * owner with the scheduler itself, so the intakes depend on the contract only. */
typedef struct {
    int (*submit)(sched_t *s, const sched_req_t *r, uint64_t *id, char *err, size_t errlen);
    int (*cancel)(sched_t *s, uint64_t id);
    void (*stats)(sched_t *s, int model, sched_stats_t *out);
} api_sched_ops_t;

/* What a parser may use: the models, the settings, the state its operation
 * attached to the batcher (api/jobs.h; NULL when not attached), and the
 * generation scheduler (NULL when this server has none). */
typedef struct {
    registry_t *reg;
    const api_config_t *cfg;
    void *state;
    sched_t *sched;
    const api_sched_ops_t *sched_ops;
} api_job_env_t;

struct api_job_type {
    const char *name;        /* the op's name in a Redis task ("embed") */
    batcher_op_t op;
    const char *input_field; /* the field holding the inputs ("input", "terms") */
    int cacheable;           /* answers may come from the result cache */
    int task_all_fields;     /* POST /v1/tasks: every field the parser took travels with the task
                              * (0: the encoder ops' own list, api/http/routes_tasks.c) */
    /* Parse and validate a request object, tokenize its inputs: 0, or -1 with *e. */
    int (*parse)(const api_job_env_t *env, json_t *body, api_job_t **out, api_err_t *e);
    /* The answer of a finished job: malloc'd, *len bytes (NUL-terminated), or NULL when out of memory. */
    char *(*result_json)(api_job_t *j, size_t *len);
    void (*free_args)(void *args); /* the op's options (NULL: nothing to free) */
    /* Serve the op on the batcher (its handler, batcher/worker.h) and make the
     * state the parser gets in env->state; NULL: the batcher serves it already.
     * detach runs after the batcher stopped and before models unload. */
    int (*attach)(batcher_t *bat, registry_t *reg, void **state, char *err, size_t errlen);
    void (*detach)(void *state);
    /* Work that does not ride the batcher (generation: env->sched): start it;
     * item.done is called once when it ends, with item.outcome (and err) set
     * as the batcher sets them. NULL: batcher_submit. 0, or a BATCHER_E* code
     * with err, and then done is never called. */
    int (*submit)(const api_job_env_t *env, api_job_t *j, char *err, size_t errlen);
    /* The ids its cancel takes, copied while the holder's lock keeps the job
     * alive (cancelling an id that ended is a no-op), and the cancel. */
    int (*cancel_ids)(api_job_t *j, uint64_t *ids, int max);
    void (*cancel)(const api_job_env_t *env, uint64_t id);
};

struct api_job {
    batcher_item_t item;     /* model, op, priority, ids, seq_off, out filled */
    const api_job_type_t *type;
    char model_name[REGISTRY_NAME_MAX];
    int n;                   /* inputs */
    int32_t *ids;            /* (prompt_tokens) */
    int32_t *seq_off;        /* (n+1) */
    float *out;              /* (n, result_floats) */
    int prompt_tokens;       /* after truncation */
    int64_t deadline_ms;     /* relative deadline asked for (0: none given) */
    void *args;              /* the op's options (api/embed_job.h, api/expand_job.h) */
};

/* Parse the inputs every encoder op shares: model (may be omitted when only
 * one model exists), `input` (string | [string] | [int] | [[int]]), truncate,
 * priority (-1000..1000), deadline_ms. `options`, when not NULL, is called
 * after the input count is checked to read the op's own fields (so errors
 * come in one fixed order); result_floats sizes the result buffer per input
 * (0: the model's hidden width).
 * The job comes back with its type unset. 0, or -1 with *e. */
typedef int (*api_job_options_fn)(json_t *body, const registry_model_info_t *info, void *ctx, api_err_t *e);
int api_job_parse_inputs(registry_t *reg, const api_config_t *cfg, json_t *body, api_job_options_fn options,
                         void *ctx, int result_floats, api_job_t **out, api_err_t *e);

/* The one model of a kind on the registry (what a request that names none
 * gets): its index, -1 when there is none, -2 when there are several. */
int api_job_only_model(registry_t *reg, model_kind_t kind);

char *api_job_result_json(api_job_t *j, size_t *len); /* j->type->result_json */
void api_job_free(api_job_t *j);                      /* NULL is a no-op */

#endif
