/* batcher/worker.c - the operation table of a device and its engine calls. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "batcher/worker.h"

struct worker {
    registry_t *reg;
    const worker_op_t *ops[WORKER_MAX_OPS];
    void *users[WORKER_MAX_OPS];
    /* per model: runs hold it shared, an unload exclusive, so whichever
     * producer runs a model (the batcher's threads, a generation scheduler)
     * never sees it unloaded under it */
    pthread_rwlock_t *in_use; /* (n_models) */
    int n_models;
};

int worker_create(registry_t *reg, worker_t **out) {
    *out = NULL;
    worker_t *w = calloc(1, sizeof *w);
    int n = registry_count(reg);
    if (!w || !(w->in_use = calloc((size_t)(n > 0 ? n : 1), sizeof *w->in_use))) {
        free(w);
        return -1;
    }
    w->reg = reg;
    w->n_models = n;
    for (int i = 0; i < n; i++) pthread_rwlock_init(&w->in_use[i], NULL);
    *out = w;
    return 0;
}

void worker_destroy(worker_t *w) {
    if (!w) return;
    for (int i = 0; i < w->n_models; i++) pthread_rwlock_destroy(&w->in_use[i]);
    free(w->in_use);
    free(w);
}

int worker_register_op(worker_t *w, int op, const worker_op_t *h, void *user) {
    if (op < 0 || op >= WORKER_MAX_OPS || !h || !h->run || !h->result_floats) return -1;
    w->ops[op] = h;
    w->users[op] = user;
    return 0;
}

int worker_has_op(const worker_t *w, int op) { return op >= 0 && op < WORKER_MAX_OPS && w->ops[op]; }

int worker_result_floats(worker_t *w, int op, int model) {
    return worker_has_op(w, op) ? w->ops[op]->result_floats(w->users[op], w->reg, model) : 0;
}

typedef struct {
    worker_t *w;
    int op;
    const worker_batch_t *in;
    float *out;
} run_ctx_t;

static int run_op(void *user, model_t *m, char *err, size_t errlen) {
    run_ctx_t *c = user;
    return c->w->ops[c->op]->run(c->w->users[c->op], c->w->reg, m, c->in, c->out, err, errlen);
}

int worker_run(worker_t *w, int op, const worker_batch_t *in, float *out, char *err, size_t errlen) {
    if (!worker_has_op(w, op)) {
        snprintf(err, errlen, "no handler for op %d", op);
        return ENGINE_EINVAL;
    }
    run_ctx_t c = {w, op, in, out};
    return worker_with_model(w, in->model, run_op, &c, err, errlen);
}

int worker_with_model(worker_t *w, int model, worker_model_fn fn, void *user, char *err, size_t errlen) {
    if (model < 0 || model >= w->n_models) {
        snprintf(err, errlen, "no such model");
        return ENGINE_EINVAL;
    }
    pthread_rwlock_rdlock(&w->in_use[model]);
    model_t *m = registry_model(w->reg, model);
    int rc = ENGINE_EMODEL;
    if (m) rc = fn(user, m, err, errlen);
    else snprintf(err, errlen, "model is not loaded");
    pthread_rwlock_unlock(&w->in_use[model]);
    return rc;
}

int worker_load(worker_t *w, int model, char *err, size_t errlen) { return registry_load(w->reg, model, err, errlen); }

void worker_unload(worker_t *w, int model) {
    if (model < 0 || model >= w->n_models) return;
    pthread_rwlock_wrlock(&w->in_use[model]); /* the runs of this model end first */
    for (int op = 0; op < WORKER_MAX_OPS; op++)
        if (w->ops[op] && w->ops[op]->unload) w->ops[op]->unload(w->users[op], model);
    registry_unload(w->reg, model);
    pthread_rwlock_unlock(&w->in_use[model]);
}

/* ---------------------------------------------------------------- embed */

static int embed_result_floats(void *user, registry_t *reg, int model) {
    (void)user;
    registry_model_info_t info;
    if (registry_info(reg, model, &info)) return 0;
    return info.hidden;
}

static int embed_run(void *user, registry_t *reg, model_t *m, const worker_batch_t *in, float *out, char *err,
                     size_t errlen) {
    (void)user;
    (void)reg;
    return model_embed(m, in->ids, in->seq_off, in->n_seqs, out, err, errlen);
}

const worker_op_t worker_embed_op = {"embed", embed_result_floats, embed_run, NULL};
