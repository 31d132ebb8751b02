/* api/embed_job.h - the embeddings operation (POST /v1/embeddings, Redis op "embed").
 *
 * A job type of the job layer (api/job.h): the shared encoder inputs plus
 * encoding_format ("float" | "base64") and dimensions (1..hidden: the vector
 * cut and re-normalised, Matryoshka-style); the answer is OpenAI's
 * embeddings object {"object":"list","data":[...],"model":..,"usage":..}.
 *
 * Ownership and threads: as api/job.h.
 */
#ifndef SLUICE_API_EMBED_JOB_H
#define SLUICE_API_EMBED_JOB_H

#include "api/job.h"

extern const api_job_type_t api_embed_job;

/* The type's parser and writer, callable directly (tests, the fuzz target). */
int api_embed_parse(const api_job_env_t *env, json_t *body, api_job_t **out, api_err_t *e);
char *api_embed_result_json(api_job_t *j, size_t *len);

#endif
