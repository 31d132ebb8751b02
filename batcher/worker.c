/* batcher/worker.c - the operation table of a device and its engine calls. */
#include <stdio.h>
#include <stdlib.h>

#include "batcher/worker.h"

struct worker {
    registry_t *reg;
    const worker_op_t *ops[WORKER_MAX_OPS];
    void *users[WORKER_MAX_OPS];
};

int worker_create(registry_t *reg, worker_t **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return -1;
    (*out)->reg = reg;
    return 0;
}

void worker_destroy(worker_t *w) { free(w); }

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

int worker_run(worker_t *w, int op, const worker_batch_t *in, float *out, char *err, size_t errlen) {
    if (!worker_has_op(w, op)) {
        snprintf(err, errlen, "no handler for op %d", op);
        return ENGINE_EINVAL;
    }
    model_t *m = registry_model(w->reg, in->model);
    if (!m) {
        snprintf(err, errlen, "model is not loaded");
        return ENGINE_EMODEL;
    }
    return w->ops[op]->run(w->users[op], w->reg, m, in, out, err, errlen);
}

int worker_load(worker_t *w, int model, char *err, size_t errlen) { return registry_load(w->reg, model, err, errlen); }

void worker_unload(worker_t *w, int model) {
    for (int op = 0; op < WORKER_MAX_OPS; op++)
        if (w->ops[op] && w->ops[op]->unload) w->ops[op]->unload(w->users[op], model);
    registry_unload(w->reg, model);
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
