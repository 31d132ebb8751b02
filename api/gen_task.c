/* api/gen_task.c - the "generate" operation of the job layer: a generation
 * request run to one answer through the scheduler (batcher/sched.h), for the
 * Redis intake (and POST /v1/tasks).
 *
 * The body is a chat body (with "messages") or a completion body (with
 * "prompt"), parsed as the HTTP routes parse them (api/gen_job.h). Each
 * choice is one scheduler request; when the last ends, the job's item gets
 * the outcome the intake knows from the batcher (OK, CANCELLED, EXPIRED,
 * SHUTDOWN, FAILED) and its done callback runs. While it runs, a listener
 * (api_gen_task_listen) hears each piece of text, for the task's token
 * stream.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/gen_job.h"

typedef struct gen_task gen_task_t;

typedef struct {
    gen_task_t *t;
    int index;
} slot_t;

struct gen_task {
    pthread_mutex_t mu;
    api_job_t *job;
    api_gen_req_t *g;
    const tok_t *tok;
    int n;
    api_gen_choice_t *ch;    /* (n) */
    slot_t *slots;           /* (n) */
    uint64_t *ids;           /* (n) */
    int n_submitted, n_done;
    int refused;             /* a later choice was refused: the job fails */
    char refuse_err[256];
    int refuse_code;
    api_gen_usage_t usage;
    sched_finish_t worst;
    char err[256];
    double ttft_s, queue_s;
    int64_t created;
    api_gen_listen_fn listen;
    void *listen_user;
};

static void task_free(void *args) {
    gen_task_t *t = args;
    if (!t) return;
    for (int i = 0; i < t->n; i++) api_gen_choice_clear(&t->ch[i]);
    free(t->ch);
    free(t->slots);
    free(t->ids);
    api_gen_req_free(t->g);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

void api_gen_task_listen(api_job_t *j, api_gen_listen_fn fn, void *user) {
    gen_task_t *t = j->args;
    t->listen = fn;
    t->listen_user = user;
}

static int parse(const api_job_env_t *env, json_t *body, api_job_t **out, api_err_t *e) {
    *out = NULL;
    api_gen_kind_t kind = json_object_get(body, "messages") ? API_GEN_CHAT : API_GEN_COMPLETION;
    json_object_del(body, "stream"); /* a task streams to its Redis stream whatever it asks */
    json_object_del(body, "stream_options");
    api_gen_req_t *g = NULL;
    if (api_gen_parse(env->reg, body, kind, &g, e)) return -1;
    gen_task_t *t = calloc(1, sizeof *t);
    api_job_t *j = calloc(1, sizeof *j);
    int n = api_gen_choices(g);
    if (t) {
        t->ch = calloc((size_t)n, sizeof *t->ch);
        t->slots = calloc((size_t)n, sizeof *t->slots);
        t->ids = calloc((size_t)n, sizeof *t->ids);
    }
    if (!t || !j || !t->ch || !t->slots || !t->ids) {
        if (t) free(t->ch), free(t->slots), free(t->ids);
        free(t);
        free(j);
        api_gen_req_free(g);
        return api_err_set(e, 503, "out_of_memory", NULL, "out of memory");
    }
    char err[256];
    pthread_mutex_init(&t->mu, NULL);
    t->job = j;
    t->g = g;
    t->n = n;
    t->tok = registry_tokenizer(env->reg, g->model, err, sizeof err);
    t->worst = SCHED_FINISH_STOP;
    t->ttft_s = -1;
    j->type = &api_gen_task_job;
    j->args = t;
    j->n = n;
    j->prompt_tokens = 0;
    for (int i = 0; i < g->n_prompts; i++) j->prompt_tokens += g->prompt_len[i];
    j->deadline_ms = g->deadline_ms;
    j->item.model = g->model;
    j->item.op = BATCHER_OP_COUNT; /* not a batcher op */
    j->item.priority = g->priority;
    snprintf(j->model_name, sizeof j->model_name, "%s", g->model_name);
    *out = j;
    return 0;
}

static void on_delta(void *user, const sched_delta_t *d) {
    slot_t *s = user;
    gen_task_t *t = s->t;
    pthread_mutex_lock(&t->mu);
    api_gen_choice_add_delta(&t->ch[s->index], t->g, t->tok, d, 1);
    api_gen_listen_fn fn = t->listen;
    void *lu = t->listen_user;
    pthread_mutex_unlock(&t->mu);
    if (fn && d->text_len) fn(lu, t->job, s->index, d->text, d->text_len, NULL);
}

/* Every choice ended: the job's outcome as the batcher would give it, and its done. */
static void finish_job(gen_task_t *t) {
    /* the last choice: the job's outcome as the batcher would give it */
    batcher_item_t *it = &t->job->item;
    it->t_end_ns = batcher_now_ns();
    it->t_start_ns = it->t_submit_ns + (int64_t)(t->queue_s > 0 ? t->queue_s * 1e9 : 0);
    it->compute_s = (it->t_end_ns - it->t_start_ns) * 1e-9;
    if (t->refused) {
        it->outcome = BATCHER_DONE_FAILED;
        it->err_code = t->refuse_code;
        snprintf(it->err, sizeof it->err, "%s", t->refuse_err);
    } else {
        switch (t->worst) {
        case SCHED_FINISH_STOP:
        case SCHED_FINISH_LENGTH: it->outcome = BATCHER_DONE_OK; break;
        case SCHED_FINISH_CANCELLED: it->outcome = BATCHER_DONE_CANCELLED; break;
        case SCHED_FINISH_DEADLINE: it->outcome = BATCHER_DONE_EXPIRED; break;
        case SCHED_FINISH_SHUTDOWN: it->outcome = BATCHER_DONE_SHUTDOWN; break;
        default:
            it->outcome = BATCHER_DONE_FAILED;
            it->err_code = BATCHER_ECOMPUTE;
            snprintf(it->err, sizeof it->err, "%s", t->err[0] ? t->err : "generation failed");
        }
    }
    it->done(it, it->user); /* the job may be freed from here on */
}

static void on_done(void *user, const sched_result_t *r) {
    slot_t *s = user;
    gen_task_t *t = s->t;
    pthread_mutex_lock(&t->mu);
    api_gen_choice_t *c = &t->ch[s->index];
    c->finish = r->finish == SCHED_FINISH_STOP ? API_GEN_FINISH_STOP : API_GEN_FINISH_LENGTH;
    c->completion_tokens = r->completion_tokens;
    t->usage.completion_tokens += r->completion_tokens;
    if (s->index % t->g->n == 0) {
        t->usage.prompt_tokens += r->prompt_tokens;
        t->usage.cached_tokens += r->cached_prompt_tokens;
    }
    if (s->index == 0) {
        t->ttft_s = r->ttft_s;
        t->queue_s = r->queue_s;
    }
    if (t->n_done == 0 || api_gen_finish_rank(r->finish) > api_gen_finish_rank(t->worst)) { /* the first, or worse */
        t->worst = r->finish;
        snprintf(t->err, sizeof t->err, "%s", r->message ? r->message : "");
    }
    int all = ++t->n_done == t->n_submitted;
    api_gen_listen_fn fn = t->listen;
    void *lu = t->listen_user;
    const char *fin = api_gen_finish_name(c->finish);
    pthread_mutex_unlock(&t->mu);
    if (fn && (r->finish == SCHED_FINISH_STOP || r->finish == SCHED_FINISH_LENGTH))
        fn(lu, t->job, s->index, NULL, 0, fin);
    if (all) finish_job(t);
}

/* A scheduler refusal as a batcher code (the intakes map those). */
static int batcher_code(int rc) {
    switch (rc) {
    case SCHED_EFULL: return BATCHER_EBUSY;
    case SCHED_EDRAIN: return BATCHER_ESTOPPED;
    case SCHED_EMODEL: return BATCHER_EMODEL;
    case SCHED_ENOMEM: return BATCHER_ENOMEM;
    default: return BATCHER_EINVAL;
    }
}

static int submit(const api_job_env_t *env, api_job_t *j, char *err, size_t errlen) {
    gen_task_t *t = j->args;
    if (!env->sched || !env->sched_ops) {
        snprintf(err, errlen, "this server has no generation scheduler");
        return BATCHER_EMODEL;
    }
    const api_gen_req_t *g = t->g;
    batcher_item_t *it = &j->item;
    it->t_submit_ns = batcher_now_ns();
    t->created = (int64_t)time(NULL);
    /* one count more than submitted while submitting: a choice that ends
     * before the next is submitted must not end the job */
    t->n_submitted = 1;
    int rc = 0, ok = 0;
    char e[256] = "";
    for (int i = 0; i < t->n && !rc; i++) {
        t->slots[i] = (slot_t){t, i};
        /* the task's deadline is when it must start (the queue expires it unstarted); once leased it runs
         * to its end, or to the deadline its body asks for */
        int64_t deadline = g->deadline_ms > 0 ? it->t_submit_ns + g->deadline_ms * 1000000LL : 0;
        sched_req_t q = api_gen_sched_req(g, i, it->priority, deadline, on_delta, on_done, &t->slots[i]);
        uint64_t id = 0;
        pthread_mutex_lock(&t->mu);
        t->n_submitted++;
        pthread_mutex_unlock(&t->mu);
        rc = env->sched_ops->submit(env->sched, &q, &id, e, sizeof e);
        pthread_mutex_lock(&t->mu);
        if (rc) t->n_submitted--;
        else t->ids[ok++] = id;
        pthread_mutex_unlock(&t->mu);
    }
    if (rc && ok) { /* those accepted end now; the job fails with the refusal */
        pthread_mutex_lock(&t->mu);
        t->refused = 1;
        t->refuse_code = batcher_code(rc);
        snprintf(t->refuse_err, sizeof t->refuse_err, "%s", e);
        pthread_mutex_unlock(&t->mu);
        for (int k = 0; k < ok; k++) env->sched_ops->cancel(env->sched, t->ids[k]);
    }
    pthread_mutex_lock(&t->mu);
    t->n_submitted--;
    int finished = ok && t->n_done == t->n_submitted;
    pthread_mutex_unlock(&t->mu);
    if (!ok) { /* nothing runs: a plain refusal, done is never called */
        snprintf(err, errlen, "%s", e);
        return batcher_code(rc);
    }
    if (finished) finish_job(t);
    return 0;
}

static int cancel_ids(api_job_t *j, uint64_t *ids, int max) {
    gen_task_t *t = j->args;
    pthread_mutex_lock(&t->mu);
    int n = 0;
    for (int i = 0; i < t->n && n < max; i++)
        if (t->ids[i]) ids[n++] = t->ids[i];
    pthread_mutex_unlock(&t->mu);
    return n;
}

static void cancel(const api_job_env_t *env, uint64_t id) {
    if (env->sched && env->sched_ops && id) env->sched_ops->cancel(env->sched, id);
}

static char *result_json(api_job_t *j, size_t *len) {
    gen_task_t *t = j->args;
    char id[64];
    snprintf(id, sizeof id, "%s-%.32s", t->g->kind == API_GEN_CHAT ? "chatcmpl" : "cmpl", j->item.request_id);
    return api_gen_answer_json(t->g, id, t->created, t->ch, &t->usage, len);
}

void api_gen_task_counts(api_job_t *j, api_gen_usage_t *u, double *ttft_s, const char **finish) {
    gen_task_t *t = j->args;
    pthread_mutex_lock(&t->mu);
    *u = t->usage;
    *ttft_s = t->ttft_s;
    *finish = api_gen_sched_finish_word(t->worst);
    pthread_mutex_unlock(&t->mu);
}

const api_job_type_t api_gen_task_job = {
    .name = "generate",
    .op = BATCHER_OP_COUNT,
    .input_field = "prompt",
    .cacheable = 0,
    .task_all_fields = 1,
    .parse = parse,
    .result_json = result_json,
    .free_args = task_free,
    .submit = submit,
    .cancel_ids = cancel_ids,
    .cancel = cancel,
};
