/* tests/test_sched.c - the generation scheduler over the real decoder
 * (SmolLM2-135M GGUF, CPU), without HTTP: a request's tokens are the same
 * alone or among 63 others (greedy and seeded, prefix-cache hits, chunked
 * prefill), under preemption, and the cache, cancel, prefix-cache, chunking
 * and drain contracts of batcher/sched.h.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "batcher/sched.h"
#include "batcher/worker.h"
#include "engine/kv.h"
#include "engine/registry.h"
#include "engine/tok.h"
#include "kernels/util.h"
#include "tests/support_llm.h"

#define MAXGEN 64

static registry_t *reg;
static worker_t *wk;

static void setup(void) {
    registry_opts_t o = {.models_dir = support_llm_path(), .device = "cpu", .budget = (size_t)512 << 20,
                         .cpu_threads = 1};
    char err[512];
    cr_assert_eq(registry_create(&o, &reg, err, sizeof err), 0, "%s", err);
    cr_assert_eq(registry_count(reg), 1);
    cr_assert_eq(worker_create(reg, &wk), 0);
}

static void teardown(void) {
    worker_destroy(wk);
    registry_destroy(reg);
}

TestSuite(sched, .init = setup, .fini = teardown, .timeout = 120);

/* ---- a request's answer, filled by the callbacks (scheduler thread) ---- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t ids[MAXGEN + 2];
    int n_ids;
    char text[4096];
    size_t n_text;
    int done;
    sched_result_t res;
    char msg[256];
    /* for the chunking test */
    uint64_t step_at_first;
    const int *watch; /* another request's done/first-token flag */
    int during;       /* tokens received while *watch was 0 */
} answer_t;


static void on_delta(void *user, const sched_delta_t *d) {
    answer_t *a = user;
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < d->n_ids && a->n_ids < MAXGEN + 2; i++) a->ids[a->n_ids++] = d->ids[i];
    if (d->text_len && a->n_text + d->text_len < sizeof a->text) {
        memcpy(a->text + a->n_text, d->text, d->text_len);
        a->n_text += d->text_len;
    }
    if (a->watch && !*a->watch && d->n_ids) a->during++;
    pthread_mutex_unlock(&a->mu);
}

static void on_done(void *user, const sched_result_t *r) {
    answer_t *a = user;
    pthread_mutex_lock(&a->mu);
    a->res = *r;
    snprintf(a->msg, sizeof a->msg, "%s", r->message);
    a->res.message = a->msg;
    a->done = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void answer_init(answer_t *a) {
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
}

static void answer_wait(answer_t *a) {
    pthread_mutex_lock(&a->mu);
    while (!a->done) pthread_cond_wait(&a->cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

static int encode(const char *text, int32_t *ids, int cap) {
    char err[256];
    const tok_t *t = registry_tokenizer(reg, 0, err, sizeof err);
    cr_assert(t, "%s", err);
    int n = tok_encode(t, text, strlen(text), ids, cap, NULL, err, sizeof err);
    cr_assert_gt(n, 0, "%s", err);
    return n;
}

typedef struct {
    int32_t ids[512];
    int n;
    float temperature;
    uint64_t seed;
    int max_tokens;
    int priority;
} job_t;

static job_t job_of(const char *text, int max_tokens) {
    job_t j;
    memset(&j, 0, sizeof j);
    j.n = encode(text, j.ids, 512);
    j.max_tokens = max_tokens;
    return j;
}

static sched_t *make(const sched_config_t *c) {
    sched_t *s;
    char err[512];
    cr_assert_eq(sched_create(reg, wk, c, &s, err, sizeof err), 0, "%s", err);
    return s;
}

static int submit(sched_t *s, const job_t *j, answer_t *a, uint64_t *id, char *err, size_t errlen) {
    answer_init(a);
    sched_req_t r = {.model = 0, .prompt = j->ids, .n_prompt = j->n, .sample = sample_params_default(),
                     .priority = j->priority, .on_delta = on_delta, .on_done = on_done, .user = a};
    r.sample.temperature = j->temperature;
    r.sample.top_p = 0.9f;
    r.sample.seed = j->seed;
    r.sample.max_tokens = j->max_tokens;
    r.sample.stop_ids[0] = 2; /* <|im_end|> */
    r.sample.n_stop_ids = 1;
    return sched_submit(s, &r, id, err, errlen);
}

static void run_one(sched_t *s, const job_t *j, answer_t *a) {
    char err[512];
    cr_assert_eq(submit(s, j, a, NULL, err, sizeof err), 0, "%s", err);
    answer_wait(a);
}

static const char *PROMPTS[] = {
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "The three primary colors are",
    "In 1969, the first humans",
    "<|im_start|>system\nYou are a helpful assistant who answers briefly and precisely, in one sentence, "
    "without lists.<|im_end|>\n<|im_start|>user\nName a planet.<|im_end|>\n<|im_start|>assistant\n",
    "Water boils at",
};
#define N_PROMPTS (int)(sizeof PROMPTS / sizeof PROMPTS[0])

/* 16 distinct jobs: each prompt greedy and seeded. */
static void make_jobs(job_t *jobs, int max_tokens) {
    for (int i = 0; i < 2 * N_PROMPTS; i++) {
        job_t *j = &jobs[i];
        memset(j, 0, sizeof *j);
        j->n = encode(PROMPTS[i / 2], j->ids, 512);
        j->temperature = i % 2 ? 0.8f : 0.0f;
        j->seed = 1000 + (uint64_t)i;
        j->max_tokens = max_tokens;
    }
}

static void assert_same(const answer_t *a, const answer_t *ref, const char *what, int i) {
    cr_assert_eq(a->res.finish, ref->res.finish, "%s %d: finish %s vs %s alone (%s)", what, i,
                 sched_finish_name(a->res.finish), sched_finish_name(ref->res.finish), a->msg);
    cr_assert_eq(a->n_ids, ref->n_ids, "%s %d: %d tokens vs %d alone", what, i, a->n_ids, ref->n_ids);
    for (int t = 0; t < a->n_ids; t++)
        cr_assert_eq(a->ids[t], ref->ids[t], "%s %d: token %d is %d, alone %d", what, i, t, a->ids[t], ref->ids[t]);
    cr_assert_eq(a->n_text, ref->n_text, "%s %d: text differs", what, i);
    cr_assert(!memcmp(a->text, ref->text, a->n_text), "%s %d: text differs", what, i);
}

/* References: each job alone, one prompt chunk, no prefix cache. */
static void references(const job_t *jobs, int n, answer_t *ref) {
    sched_config_t c = {.prefix_cache = -1, .step_tokens = 512};
    sched_t *s = make(&c);
    for (int i = 0; i < n; i++) {
        run_one(s, &jobs[i], &ref[i]);
        cr_assert(ref[i].res.finish == SCHED_FINISH_LENGTH || ref[i].res.finish == SCHED_FINISH_STOP, "%s",
                  ref[i].msg);
        cr_assert_gt(ref[i].n_ids, 0);
    }
    sched_destroy(s);
}

/* Submit n requests at once (jobs[i % n_jobs]), wait for all, compare each
 * with its reference. */
static void all_at_once(sched_t *s, const job_t *jobs, int n_jobs, int n, answer_t *got, const answer_t *ref) {
    char err[512];
    for (int i = 0; i < n; i++)
        cr_assert_eq(submit(s, &jobs[i % n_jobs], &got[i], NULL, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < n; i++) answer_wait(&got[i]);
    for (int i = 0; i < n; i++) assert_same(&got[i], &ref[i % n_jobs], "request", i);
}

/* The KV cache bytes of n blocks of SmolLM2-135M (30 layers, 3 KV heads of 64, fp32 on the CPU). */
static size_t kv_bytes_of(int n_blocks) {
    kv_config_t kc = {.n_layers = 30, .n_kv_heads = 3, .head_dim = 64, .block_size = 16, .n_blocks = n_blocks,
                      .dtype = OPS_F32};
    return kv_pool_bytes(&kc);
}

/* Under AddressSanitizer (make test's sanitized list) every forward pass is
 * several times slower: the two heaviest tests there run the same paths with
 * a quarter of the requests, or shorter ones. */
#if defined(__SANITIZE_ADDRESS__)
#define ASAN_SHRINK 4
#else
#define ASAN_SHRINK 1
#endif

Test(sched, sixty_four_at_once_match_alone) {
    static job_t jobs[16];
    static answer_t ref[16], got[64];
    enum { N_JOBS = 16 / ASAN_SHRINK, N = 64 / ASAN_SHRINK };
    make_jobs(jobs, 6);
    const job_t *some = jobs + 16 - N_JOBS; /* the last: the long system prompt that fills cache blocks among them */
    references(some, N_JOBS, ref);
    /* all 64 at once: prefix cache on, prompts chunked by a small step budget */
    sched_config_t c = {.step_tokens = 96, .max_seqs = 64};
    sched_t *s = make(&c);
    all_at_once(s, some, N_JOBS, N, got, ref);
    sched_stats_t st;
    sched_stats(s, -1, &st);
    cr_assert_eq(st.finished, N);
    cr_assert_gt(st.prefix_hits, 0, "repeated prompts hit the prefix cache");
    cr_assert_eq(st.running, 0);
    cr_assert_eq(st.waiting, 0);
    cr_assert_eq(st.kv_blocks_used, st.kv_blocks_cached, "only the prefix cache holds blocks at rest");
    sched_destroy(s);
}

Test(sched, preemption_keeps_every_answer) {
    static job_t jobs[16];
    static answer_t ref[16], got[16];
    make_jobs(jobs, 24 / ASAN_SHRINK); /* sanitized: 16 requests of 6 new tokens still overflow 192 positions */
    references(jobs, 16, ref);
    /* 12 blocks of 16 tokens: 192 positions for 16 requests of ~10-60 + 24 */
    sched_config_t c = {.kv_bytes = kv_bytes_of(12), .max_seqs = 16};
    sched_t *s = make(&c);
    int kv_tokens = 0;
    char err[512];
    cr_assert_eq(sched_prepare(s, 0, NULL, &kv_tokens, err, sizeof err), 0, "%s", err);
    cr_assert_eq(kv_tokens, 192, "the model's KV shape is what this test assumes");
    all_at_once(s, jobs, 16, 16, got, ref);
    sched_stats_t st;
    sched_stats(s, 0, &st);
    cr_assert_gt(st.preemptions, 0, "a cache this small must preempt");
    int pre = 0;
    for (int i = 0; i < 16; i++) pre += got[i].res.preemptions;
    cr_assert_eq((uint64_t)pre, st.preemptions);
    sched_destroy(s);
}

Test(sched, too_big_is_refused_with_numbers) {
    sched_config_t c = {.kv_bytes = kv_bytes_of(8)};
    sched_t *s = make(&c);
    job_t j = job_of(PROMPTS[1], 120);
    answer_t a;
    char err[512] = "";
    cr_assert_eq(submit(s, &j, &a, NULL, err, sizeof err), SCHED_ETOOBIG);
    char want[64];
    snprintf(want, sizeof want, "%d tokens", j.n + 120);
    cr_assert(strstr(err, want) && strstr(err, "KV cache of 128 tokens"), "%s", err);
    /* over the context, too; and bad input named */
    j.max_tokens = 1 << 20;
    cr_assert_eq(submit(s, &j, &a, NULL, err, sizeof err), SCHED_ETOOBIG);
    j.ids[0] = 1 << 24;
    j.max_tokens = 4;
    cr_assert_eq(submit(s, &j, &a, NULL, err, sizeof err), SCHED_EINVAL);
    cr_assert(strstr(err, "vocabulary"), "%s", err);
    /* a request that fits runs */
    j.n = encode(PROMPTS[0], j.ids, 512);
    j.max_tokens = 4;
    run_one(s, &j, &a);
    cr_assert_eq(a.res.finish, SCHED_FINISH_LENGTH, "%s", a.msg);
    cr_assert_eq(a.res.completion_tokens, 4);
    sched_stats_t st;
    sched_stats(s, 0, &st);
    cr_assert_eq(st.refused, 2);
    sched_destroy(s);
}

typedef struct {
    answer_t a;
    sched_logprob_t lp[8];
    int n;
} lp_answer_t;

static void on_delta_lp(void *user, const sched_delta_t *d) {
    lp_answer_t *l = user;
    on_delta(&l->a, d);
    for (int i = 0; i < d->n_ids && d->logprobs && l->n < 8; i++) l->lp[l->n++] = d->logprobs[i];
}

Test(sched, logprobs_of_greedy_tokens) {
    sched_t *s = make(NULL);
    job_t j = job_of(PROMPTS[0], 4);
    static lp_answer_t l;
    answer_init(&l.a);
    sched_req_t r = {.model = 0, .prompt = j.ids, .n_prompt = j.n, .sample = sample_params_default(),
                     .logprobs = 1, .top_logprobs = 3, .on_delta = on_delta_lp, .on_done = on_done, .user = &l};
    r.sample.max_tokens = 4;
    char err[512];
    cr_assert_eq(sched_submit(s, &r, NULL, err, sizeof err), 0, "%s", err);
    answer_wait(&l.a);
    cr_assert_eq(l.n, 4);
    for (int i = 0; i < 4; i++) {
        const sched_logprob_t *p = &l.lp[i];
        cr_assert_eq(p->id, l.a.ids[i]);
        cr_assert_eq(p->n_top, 3);
        cr_assert_eq(p->top_ids[0], p->id, "greedy picks the most likely token");
        cr_assert_float_eq(p->top_logprobs[0], p->logprob, 1e-6);
        cr_assert(p->logprob <= 0 && p->top_logprobs[1] <= p->top_logprobs[0] &&
                  p->top_logprobs[2] <= p->top_logprobs[1], "%f %f %f", p->top_logprobs[0], p->top_logprobs[1],
                  p->top_logprobs[2]);
    }
    r.top_logprobs = 21;
    cr_assert_eq(sched_submit(s, &r, NULL, err, sizeof err), SCHED_EINVAL);
    cr_assert(strstr(err, "top_logprobs"), "%s", err);
    sched_destroy(s);
}

Test(sched, cancel_frees_blocks) {
    sched_config_t c = {.prefix_cache = -1};
    sched_t *s = make(&c);
    char err[512];
    cr_assert_eq(sched_prepare(s, 0, NULL, NULL, err, sizeof err), 0, "%s", err);
    sched_stats_t st;
    sched_stats(s, 0, &st);
    int base = st.kv_blocks_used;
    job_t j = job_of(PROMPTS[1], 400);
    answer_t a;
    uint64_t id;
    cr_assert_eq(submit(s, &j, &a, &id, err, sizeof err), 0, "%s", err);
    for (int t = 0; t < 6000; t++) { /* until it has generated a few tokens */
        pthread_mutex_lock(&a.mu);
        int n = a.n_ids;
        pthread_mutex_unlock(&a.mu);
        if (n >= 3) break;
        util_sleep_ms(5);
    }
    sched_stats(s, 0, &st);
    cr_assert_gt(st.kv_blocks_used, base, "a running sequence holds blocks");
    cr_assert_eq(st.running, 1);
    cr_assert_eq(sched_cancel(s, id), 0);
    answer_wait(&a);
    cr_assert_eq(a.res.finish, SCHED_FINISH_CANCELLED);
    cr_assert_lt(a.res.completion_tokens, 400);
    sched_stats(s, 0, &st);
    cr_assert_eq(st.kv_blocks_used, base, "blocks back: %d used, %d before", st.kv_blocks_used, base);
    cr_assert_eq(st.running, 0);
    cr_assert_eq(sched_cancel(s, id), -1, "a finished request is unknown");
    sched_destroy(s);
}

Test(sched, prefix_cache_hits_on_a_repeated_system_prompt) {
    const char *sys = "<|im_start|>system\nYou are a careful assistant. You answer in one short sentence, you never "
                      "use lists, and you say when you do not know something.<|im_end|>\n<|im_start|>user\n";
    const char *users[] = {"Name a color.<|im_end|>\n<|im_start|>assistant\n",
                           "Name a fruit.<|im_end|>\n<|im_start|>assistant\n"};
    job_t j[2];
    answer_t ref[2], a[2];
    for (int i = 0; i < 2; i++) {
        char text[1024];
        snprintf(text, sizeof text, "%s%s", sys, users[i]);
        memset(&j[i], 0, sizeof j[i]);
        j[i].n = encode(text, j[i].ids, 512);
        j[i].max_tokens = 5;
    }
    int n_sys = encode(sys, j[0].ids + 256, 256);
    cr_assert_geq(n_sys, 32, "the system prompt spans two full blocks");
    references(j, 2, ref);
    sched_t *s = make(NULL);
    run_one(s, &j[0], &a[0]);
    run_one(s, &j[1], &a[1]);
    cr_assert_eq(a[0].res.cached_prompt_tokens, 0);
    cr_assert_geq(a[1].res.cached_prompt_tokens, n_sys / 16 * 16, "second request reused the system prompt: %d",
                  a[1].res.cached_prompt_tokens);
    for (int i = 0; i < 2; i++) assert_same(&a[i], &ref[i], "request", i);
    sched_stats_t st;
    sched_stats(s, 0, &st);
    cr_assert_geq(st.prefix_hits, (uint64_t)(n_sys / 16));
    cr_assert_gt(st.prefix_lookups, st.prefix_hits);
    cr_assert_gt(st.kv_blocks_cached, 0);
    sched_destroy(s);
}

Test(sched, chunked_prefill_does_not_stall_running_streams) {
    sched_config_t c = {.step_tokens = 16, .prefix_cache = -1};
    sched_t *s = make(&c);
    char err[512];
    job_t ja = job_of(PROMPTS[1], 40);
    static job_t jb;
    char longtext[4096] = "";
    for (int i = 0; i < 12; i++) strcat(longtext, "The quick brown fox jumps over the lazy dog near the river. ");
    jb.n = encode(longtext, jb.ids, 512);
    jb.max_tokens = 2;
    cr_assert_gt(jb.n, 120, "a prompt of many chunks");
    answer_t a, b;
    cr_assert_eq(submit(s, &ja, &a, NULL, err, sizeof err), 0, "%s", err);
    for (int t = 0; t < 6000; t++) {
        pthread_mutex_lock(&a.mu);
        int n = a.n_ids;
        pthread_mutex_unlock(&a.mu);
        if (n >= 1) break;
        util_sleep_ms(5);
    }
    pthread_mutex_lock(&a.mu);
    a.watch = &b.done;
    pthread_mutex_unlock(&a.mu);
    cr_assert_eq(submit(s, &jb, &b, NULL, err, sizeof err), 0, "%s", err);
    answer_wait(&b);
    answer_wait(&a);
    /* b's prompt needs >= 8 steps at 15 prefill tokens a step beside a's
     * decode token: a kept streaming through them */
    cr_assert_geq(a.during, jb.n / 16 - 1, "a got %d tokens while b (%d tokens) prefilled", a.during, jb.n);
    cr_assert_eq(a.res.finish, SCHED_FINISH_LENGTH);
    cr_assert_eq(b.res.finish, SCHED_FINISH_LENGTH);
    sched_destroy(s);
}

Test(sched, drain_ends_everything_clearly) {
    sched_t *s = make(NULL);
    char err[512];
    job_t j = job_of(PROMPTS[2], 1000);
    job_t k = job_of(PROMPTS[0], 2);
    answer_t a[3];
    cr_assert_eq(submit(s, &j, &a[0], NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(submit(s, &j, &a[1], NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(submit(s, &k, &a[2], NULL, err, sizeof err), 0, "%s", err);
    int ended = sched_drain(s, 1500);
    for (int i = 0; i < 3; i++) cr_assert(a[i].done, "drain returns once every request is done");
    cr_assert_eq(a[2].res.finish, SCHED_FINISH_LENGTH, "a short request finishes within the drain time");
    cr_assert_eq(a[0].res.finish, SCHED_FINISH_SHUTDOWN);
    cr_assert_eq(a[1].res.finish, SCHED_FINISH_SHUTDOWN);
    cr_assert_eq(ended, 2);
    cr_assert_gt(a[0].res.completion_tokens, 0, "running requests ran until the deadline");
    answer_t late;
    cr_assert_eq(submit(s, &k, &late, NULL, err, sizeof err), SCHED_EDRAIN);
    sched_stats_t st;
    sched_stats(s, 0, &st);
    cr_assert_eq(st.running + st.waiting, 0);
    sched_destroy(s);
}

Test(sched, a_model_unloaded_meanwhile_loads_again) {
    sched_t *s = make(NULL);
    job_t j = job_of(PROMPTS[0], 3);
    answer_t a, b;
    run_one(s, &j, &a);
    worker_unload(wk, 0);
    cr_assert_eq(registry_state(reg, 0), REGISTRY_UNLOADED);
    run_one(s, &j, &b);
    cr_assert_eq(b.res.finish, SCHED_FINISH_LENGTH, "%s", b.msg);
    assert_same(&b, &a, "after reload", 0);
    sched_destroy(s);
}

static int order_seen;
static int order_of[3];

static void on_done_order(void *user, const sched_result_t *r) {
    answer_t *a = user;
    order_of[a->during] = ++order_seen; /* `during` holds the request's index here; before on_done wakes the test */
    on_done(user, r);
}

typedef struct {
    pthread_mutex_t mu;
    int ttft, itl, e2e, queue;
} seen_t;

static void observe(void *user, int model, const char *kind, double secs) {
    seen_t *o = user;
    cr_assert_eq(model, 0);
    cr_assert_geq(secs, 0);
    pthread_mutex_lock(&o->mu);
    if (!strcmp(kind, "ttft")) o->ttft++;
    else if (!strcmp(kind, "itl")) o->itl++;
    else if (!strcmp(kind, "e2e")) o->e2e++;
    else if (!strcmp(kind, "queue")) o->queue++;
    pthread_mutex_unlock(&o->mu);
}

Test(sched, priority_then_age_and_the_observer) {
    sched_config_t c = {.max_seqs = 1};
    sched_t *s = make(&c);
    seen_t seen = {.mu = PTHREAD_MUTEX_INITIALIZER};
    sched_set_observer(s, observe, &seen);
    job_t j = job_of(PROMPTS[1], 12);
    answer_t a[3];
    int prio[3] = {0, 0, 5};
    char err[512];
    for (int i = 0; i < 3; i++) {
        answer_init(&a[i]);
        a[i].during = i;
        sched_req_t r = {.model = 0, .prompt = j.ids, .n_prompt = j.n, .sample = sample_params_default(),
                         .priority = prio[i], .on_delta = on_delta, .on_done = on_done_order, .user = &a[i]};
        r.sample.max_tokens = 12;
        cr_assert_eq(sched_submit(s, &r, NULL, err, sizeof err), 0, "%s", err);
        for (int t = 0; i == 0 && t < 6000; t++) { /* the first is running (a token out); the others wait */
            pthread_mutex_lock(&a[0].mu);
            int n = a[0].n_ids;
            pthread_mutex_unlock(&a[0].mu);
            if (n) break;
            util_sleep_ms(5);
        }
    }
    for (int i = 0; i < 3; i++) answer_wait(&a[i]);
    cr_assert_eq(order_of[0], 1, "the running one ends first");
    cr_assert_eq(order_of[2], 2, "then the higher priority, though it came last (queue %.3f %.3f %.3f)",
                 a[0].res.queue_s, a[1].res.queue_s, a[2].res.queue_s);
    cr_assert_eq(order_of[1], 3);
    cr_assert_eq(seen.ttft, 3);
    cr_assert_eq(seen.queue, 3);
    cr_assert_eq(seen.e2e, 3);
    cr_assert_eq(seen.itl, 3 * 11);
    cr_assert_gt(a[1].res.queue_s, a[2].res.queue_s);
    sched_destroy(s);
}

Test(sched, deadline_and_destroy_end_requests) {
    sched_t *s = make(NULL);
    char err[512];
    job_t j = job_of(PROMPTS[2], 1000);
    answer_t a, b;
    answer_init(&a);
    sched_req_t r = {.model = 0, .prompt = j.ids, .n_prompt = j.n, .sample = sample_params_default(),
                     .deadline_ns = util_now_ns() + 200 * 1000000ll, .on_delta = on_delta, .on_done = on_done,
                     .user = &a};
    r.sample.max_tokens = 1000;
    cr_assert_eq(sched_submit(s, &r, NULL, err, sizeof err), 0, "%s", err);
    answer_wait(&a);
    cr_assert_eq(a.res.finish, SCHED_FINISH_DEADLINE);
    cr_assert_eq(submit(s, &j, &b, NULL, err, sizeof err), 0, "%s", err);
    sched_destroy(s); /* ends b */
    cr_assert(b.done);
    cr_assert_eq(b.res.finish, SCHED_FINISH_SHUTDOWN);
}
