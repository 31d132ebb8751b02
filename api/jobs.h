/* api/jobs.h - the operations this server runs, by batcher op or by name.
 *
 * One table (api/jobs.c) lists the job types (api/job.h); the HTTP routes,
 * the Redis intake and POST /v1/tasks find an operation here, so a new
 * operation is one row. Thread-safety: read-only.
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

#endif
