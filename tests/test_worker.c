/* tests/test_worker.c - the device worker over the real registry and model
 * (CPU): operations are registered, not built in (an op without a handler is
 * refused; a registered one runs on real batches and its unload hook runs
 * before the model goes), and a model is never unloaded under a running
 * batch, whichever thread runs it.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "batcher/batcher.h"
#include "batcher/worker.h"
#include "engine/registry.h"
#include "kernels/util.h"
#include "tests/support_server.h"

static registry_t *reg;

static void open_registry(void) {
    registry_opts_t o = {.models_dir = support_model_dir(), .device = "cpu", .budget = (size_t)512 << 20,
                         .cpu_threads = 1, .engine = {.max_batch_tokens = 2048, .max_batch_seqs = 64}};
    char err[512];
    cr_assert_eq(registry_create(&o, &reg, err, sizeof err), 0, "%s", err);
}

static void close_registry(void) {
    registry_destroy(reg);
    reg = NULL;
}

/* A test op: per sequence, its length and its first token id; slow when asked. */
typedef struct {
    atomic_int runs, unloads;
    int sleep_ms;
    atomic_int saw_unloaded; /* the model left READY while a run held it */
} probe_op_t;

static int probe_floats(void *user, registry_t *r, int model) {
    (void)user, (void)r, (void)model;
    return 2;
}

static int probe_run(void *user, registry_t *r, model_t *m, const worker_batch_t *in, float *out, char *err,
                     size_t errlen) {
    (void)m, (void)err, (void)errlen;
    probe_op_t *p = user;
    atomic_fetch_add(&p->runs, 1);
    for (int s = 0; s < in->n_seqs; s++) {
        out[2 * s] = (float)(in->seq_off[s + 1] - in->seq_off[s]);
        out[2 * s + 1] = (float)in->ids[in->seq_off[s]];
    }
    for (int t = 0; t < p->sleep_ms; t += 10) {
        util_sleep_ms(10);
        if (registry_state(r, in->model) != REGISTRY_READY) atomic_store(&p->saw_unloaded, 1);
    }
    return 0;
}

static void probe_unload(void *user, int model) {
    (void)model;
    atomic_fetch_add(&((probe_op_t *)user)->unloads, 1);
}

static const worker_op_t PROBE = {"probe", probe_floats, probe_run, probe_unload};

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} waiter_t;

static void on_done(batcher_item_t *it, void *user) {
    (void)it;
    waiter_t *w = user;
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

Test(worker, ops_are_registered_not_built_in, .init = open_registry, .fini = close_registry, .timeout = 60) {
    batcher_t *b = NULL;
    char err[256];
    cr_assert_eq(batcher_create(reg, NULL, &b, err, sizeof err), 0, "%s", err);
    int32_t ids[] = {101, 7592, 2088, 102, 101, 2023, 102}, off[] = {0, 4, 7};
    float out[4] = {0};
    waiter_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    batcher_item_t it = {.model = 0, .op = BATCHER_OP_EXPAND, .n_seqs = 2, .ids = ids, .seq_off = off, .out = out,
                         .done = on_done, .user = &w};
    /* nothing serves expand in a bare batcher: refused, never computed */
    cr_assert_eq(batcher_submit(b, &it, err, sizeof err), BATCHER_EINVAL);
    cr_assert(strstr(err, "does not run op expand"), "%s", err);
    cr_assert_eq(batcher_result_floats(b, BATCHER_OP_EXPAND, 0), 0);
    cr_assert_gt(batcher_result_floats(b, BATCHER_OP_EMBED, 0), 0, "embed is the batcher's own");
    /* registered: it runs on real packed batches, and its unload hook runs before the model goes */
    probe_op_t p = {0};
    cr_assert_eq(batcher_register_op(b, BATCHER_OP_EXPAND, &PROBE, &p), 0);
    cr_assert_eq(batcher_result_floats(b, BATCHER_OP_EXPAND, 0), 2);
    cr_assert_eq(batcher_submit(b, &it, err, sizeof err), 0, "%s", err);
    pthread_mutex_lock(&w.mu);
    while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    cr_assert_eq(it.outcome, BATCHER_DONE_OK, "%s", it.err);
    cr_assert(out[0] == 4 && out[1] == 101 && out[2] == 3 && out[3] == 101, "%g %g %g %g", out[0], out[1], out[2],
              out[3]);
    cr_assert_geq(atomic_load(&p.runs), 1);
    cr_assert_eq(registry_state(reg, 0), REGISTRY_READY, "loaded on first use");
    batcher_request_unload(b, 0);
    for (int i = 0; i < 500 && registry_state(reg, 0) == REGISTRY_READY; i++) util_sleep_ms(10);
    cr_assert_eq(registry_state(reg, 0), REGISTRY_UNLOADED);
    cr_assert_eq(atomic_load(&p.unloads), 1);
    batcher_destroy(b);
}

typedef struct {
    worker_t *w;
    int rc;
    char err[128];
} runner_arg_t;

static void *run_thread(void *arg) {
    runner_arg_t *a = arg;
    static const int32_t ids[] = {101, 7592, 102}, off[] = {0, 3};
    float out[2];
    worker_batch_t in = {0, 1, ids, off};
    a->rc = worker_run(a->w, 1, &in, out, a->err, sizeof a->err);
    return NULL;
}

Test(worker, no_unload_under_a_running_batch, .init = open_registry, .fini = close_registry, .timeout = 60) {
    worker_t *w = NULL;
    cr_assert_eq(worker_create(reg, &w), 0);
    probe_op_t p = {.sleep_ms = 300};
    cr_assert_eq(worker_register_op(w, 1, &PROBE, &p), 0);
    char err[256];
    cr_assert_eq(worker_load(w, 0, err, sizeof err), 0, "%s", err);
    runner_arg_t a = {.w = w};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, run_thread, &a), 0);
    while (atomic_load(&p.runs) == 0) util_sleep_ms(1);
    int64_t t0 = util_now_ns();
    worker_unload(w, 0); /* another producer's unload: waits for the run */
    double waited = (util_now_ns() - t0) * 1e-9;
    pthread_join(th, NULL);
    cr_assert_eq(a.rc, 0, "%s", a.err);
    cr_assert(!atomic_load(&p.saw_unloaded), "the model was unloaded under a running batch");
    cr_assert_gt(waited, 0.15, "the unload did not wait (%.3f s)", waited);
    cr_assert_eq(atomic_load(&p.unloads), 1);
    cr_assert_eq(registry_state(reg, 0), REGISTRY_UNLOADED);
    /* and a run after it finds no model */
    runner_arg_t b = {.w = w};
    run_thread(&b);
    cr_assert_eq(b.rc, ENGINE_EMODEL);
    cr_assert(strstr(b.err, "not loaded"), "%s", b.err);
    worker_destroy(w);
}
