/* api/jobs.c - the table of operations. */
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "api/embed_job.h"
#include "api/expand_job.h"
#include "api/gen_job.h"
#include "api/jobs.h"

static const api_job_type_t *const JOBS[] = {&api_embed_job, &api_expand_job, &api_gen_task_job};
#define N_JOBS (sizeof JOBS / sizeof JOBS[0])

const api_job_type_t *api_jobs_for_op(batcher_op_t op) {
    for (size_t i = 0; i < N_JOBS; i++)
        if (JOBS[i]->op == op && op != BATCHER_OP_COUNT) return JOBS[i];
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

struct api_jobs {
    registry_t *reg;
    const api_config_t *cfg;
    void *state[N_JOBS]; /* each type's attached state */
    int attached[N_JOBS];
    sched_t *sched;
    const api_sched_ops_t *sched_ops;
};

void api_jobs_set_sched(api_jobs_t *j, sched_t *s, const api_sched_ops_t *ops) {
    j->sched = s;
    j->sched_ops = ops;
}

static api_job_env_t env_of(const api_jobs_t *j, const api_job_type_t *type) {
    api_job_env_t env = {j->reg, j->cfg, NULL, j->sched, j->sched_ops};
    for (size_t i = 0; i < N_JOBS; i++)
        if (JOBS[i] == type) env.state = j->state[i];
    return env;
}

int api_jobs_submit(const api_jobs_t *j, batcher_t *bat, api_job_t *job, char *err, size_t errlen) {
    if (!job->type->submit) return batcher_submit(bat, &job->item, err, errlen);
    api_job_env_t env = env_of(j, job->type);
    return job->type->submit(&env, job, err, errlen);
}

int api_jobs_cancel_ids(api_job_t *job, uint64_t *ids, int max) {
    if (job->type->cancel_ids) return job->type->cancel_ids(job, ids, max);
    if (max < 1) return 0;
    ids[0] = job->item.id;
    return 1;
}

void api_jobs_cancel(const api_jobs_t *j, batcher_t *bat, const api_job_type_t *type, uint64_t id) {
    if (!type->cancel) {
        batcher_cancel(bat, id);
        return;
    }
    api_job_env_t env = env_of(j, type);
    type->cancel(&env, id);
}

int api_jobs_start(registry_t *reg, const api_config_t *cfg, batcher_t *bat, api_jobs_t **out, char *err,
                   size_t errlen) {
    *out = NULL;
    api_jobs_t *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    j->reg = reg;
    j->cfg = cfg;
    for (size_t i = 0; i < N_JOBS; i++) {
        if (!JOBS[i]->attach) continue;
        if (JOBS[i]->attach(bat, reg, &j->state[i], err, errlen)) {
            api_jobs_destroy(j);
            return -1;
        }
        j->attached[i] = 1;
    }
    *out = j;
    return 0;
}

void api_jobs_destroy(api_jobs_t *j) {
    if (!j) return;
    for (size_t i = 0; i < N_JOBS; i++)
        if (j->attached[i] && JOBS[i]->detach) JOBS[i]->detach(j->state[i]);
    free(j);
}

int api_jobs_parse(const api_jobs_t *j, const api_job_type_t *type, json_t *body, api_job_t **out, api_err_t *e) {
    api_job_env_t env = env_of(j, type);
    return type->parse(&env, body, out, e);
}
