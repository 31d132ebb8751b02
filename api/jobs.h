/* api/jobs.h - the operations this server runs, by batcher op or by name.
 *
 * One table (api/jobs.c) lists the job types (api/job.h); the HTTP routes,
 * the Redis intake and POST /v1/tasks find an operation here, so a new
 * operation is one row. api_jobs_start attaches every type to a batcher
 * (their handlers) and keeps each one's state for its parser.
 * Thread-safety: lookups and api_jobs_parse from any thread; start/destroy
 * by the server's owner thread.
 */
#ifndef SLUICE_API_JOBS_H
#define SLUICE_API_JOBS_H

#include "api/job.h"

/* The type of an op, or NULL when this server has none for it. */
const api_job_type_t *api_jobs_for_op(batcher_op_t op);
/* The type named `name` ("embed", "expand"), or NULL. */
const api_job_type_t *api_jobs_find(const char *name);
/* "embed, expand": the names, for error messages. */
const char *api_jobs_names(void);

/* The operations of one server: each type attached to its batcher. */
typedef struct api_jobs api_jobs_t;
int api_jobs_start(registry_t *reg, const api_config_t *cfg, batcher_t *bat, api_jobs_t **out, char *err,
                   size_t errlen);
/* After batcher_stop, before the models unload (what the ops built on them goes first). NULL: no-op. */
void api_jobs_destroy(api_jobs_t *j);
/* The generation scheduler jobs may submit to (before the intakes start). */
void api_jobs_set_sched(api_jobs_t *j, sched_t *s, const api_sched_ops_t *ops);
/* Start a parsed job: its type's submit, or batcher_submit. 0 or BATCHER_E*. */
int api_jobs_submit(const api_jobs_t *j, batcher_t *bat, api_job_t *job, char *err, size_t errlen);
/* The ids that cancel a job (call under the lock that keeps it alive): their count (<= max). */
int api_jobs_cancel_ids(api_job_t *job, uint64_t *ids, int max);
/* Cancel one of them (any thread, no lock held): a no-op when it has ended. */
void api_jobs_cancel(const api_jobs_t *j, batcher_t *bat, const api_job_type_t *type, uint64_t id);
/* type->parse with this server's environment: 0, or -1 with *e. */
int api_jobs_parse(const api_jobs_t *j, const api_job_type_t *type, json_t *body, api_job_t **out, api_err_t *e);

#endif
