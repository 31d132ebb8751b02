/* api/jobs.c - the table of operations. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "api/embed_job.h"
#include "api/expand_job.h"
#include "api/jobs.h"

static const api_job_type_t *const JOBS[] = {&api_embed_job, &api_expand_job};
#define N_JOBS (sizeof JOBS / sizeof JOBS[0])

const api_job_type_t *api_jobs_for_op(batcher_op_t op) {
    for (size_t i = 0; i < N_JOBS; i++)
        if (JOBS[i]->op == op) return JOBS[i];
    return NULL;
}

const api_job_type_t *api_jobs_find(const char *name) {
    for (size_t i = 0; name && i < N_JOBS; i++)
        if (!strcmp(JOBS[i]->name, name)) return JOBS[i];
    return NULL;
}

static char names[128];
static pthread_once_t names_once = PTHREAD_ONCE_INIT;

static void names_init(void) {
    size_t w = 0;
    for (size_t i = 0; i < N_JOBS && w < sizeof names; i++)
        w += (size_t)snprintf(names + w, sizeof names - w, "%s%s", i ? ", " : "", JOBS[i]->name);
}

const char *api_jobs_names(void) {
    pthread_once(&names_once, names_init);
    return names;
}
