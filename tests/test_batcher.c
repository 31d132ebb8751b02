/* tests/test_batcher.c - the batcher over the real registry and model (CPU):
 * strict priority then age, items split across batches with unchanged
 * results, cancellation and deadlines without compute, queue bounds, live
 * limits, pause/resume/drain, lazy load and unload back to the baseline.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "batcher/batcher.h"
#include "engine/registry.h"
#include "tests/support_server.h"

#define H 384
#define MAXI 16

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    batcher_item_t *order[64];
} tracker_t;

static tracker_t tr = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}};

static void on_done(batcher_item_t *it, void *user) {
    (void)user;
    pthread_mutex_lock(&tr.mu);
    tr.order[tr.done++] = it;
    pthread_cond_broadcast(&tr.cv);
    pthread_mutex_unlock(&tr.mu);
}

static void wait_done(int n) {
    pthread_mutex_lock(&tr.mu);
    while (tr.done < n) pthread_cond_wait(&tr.cv, &tr.mu);
    pthread_mutex_unlock(&tr.mu);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static registry_t *reg;
static batcher_t *bat;

static void open_registry(void) {
    registry_opts_t o = {.models_dir = support_model_dir(), .device = "cpu", .budget = (size_t)512 << 20,
                         .cpu_threads = 1, .engine = {.max_batch_tokens = 2048, .max_batch_seqs = 64}};
    char err[512];
    cr_assert_eq(registry_create(&o, &reg, err, sizeof err), 0, "%s", err);
    cr_assert_eq(registry_count(reg), 1);
}

static void open_batcher(int max_seqs, int delay_ms) {
    batcher_limits_t l;
    batcher_limits_default(&l);
    l.max_batch_seqs = max_seqs;
    l.max_queue_delay_us = delay_ms * 1000;
    char err[256];
    cr_assert_eq(batcher_create(reg, &l, &bat, err, sizeof err), 0, "%s", err);
}

static void teardown(void) {
    batcher_destroy(bat);
    registry_destroy(reg);
    bat = NULL;
    reg = NULL;
}

/* An item of n sequences: [CLS] w.. [SEP] with distinct words per sequence. */
typedef struct {
    batcher_item_t it;
    int32_t ids[MAXI * 16];
    int32_t off[MAXI + 1];
    float out[MAXI * H];
} test_item_t;

static void make_item(test_item_t *t, int n, int seed, int priority) {
    memset(t, 0, sizeof *t);
    int T = 0;
    t->off[0] = 0;
    for (int s = 0; s < n; s++) {
        int len = 3 + (seed + s) % 9;
        t->ids[T++] = 101;
        for (int k = 0; k < len; k++) t->ids[T++] = 2000 + (seed * 131 + s * 17 + k * 7) % 20000;
        t->ids[T++] = 102;
        t->off[s + 1] = T;
    }
    t->it.model = 0;
    t->it.op = BATCHER_OP_EMBED;
    t->it.priority = priority;
    t->it.n_seqs = n;
    t->it.ids = t->ids;
    t->it.seq_off = t->off;
    t->it.out = t->out;
    t->it.done = on_done;
}

static void submit(test_item_t *t) {
    char err[256];
    int rc = batcher_submit(bat, &t->it, err, sizeof err);
    cr_assert_eq(rc, 0, "submit: %s", err);
}

static void set_limits(int max_seqs, int delay_ms) {
    batcher_limits_t l;
    batcher_get_limits(bat, &l);
    l.max_batch_seqs = max_seqs;
    l.max_queue_delay_us = delay_ms * 1000;
    char err[256];
    cr_assert_eq(batcher_set_limits(bat, &l, err, sizeof err), 0, "%s", err);
}

TestSuite(batcher, .init = open_registry, .fini = teardown, .timeout = 120);

Test(batcher, strict_priority_then_age) {
    open_batcher(64, 10000); /* nothing leaves until the limits change */
    static test_item_t a, b, c, d;
    make_item(&a, 1, 1, 0);
    make_item(&b, 1, 2, 0);
    make_item(&c, 1, 3, 5);
    make_item(&d, 1, 4, 5);
    submit(&a);
    submit(&b);
    submit(&c);
    submit(&d);
    sleep_ms(50);
    cr_assert_eq(tr.done, 0, "dispatched before the batch window");
    set_limits(1, 0); /* now: batches of one, in order */
    wait_done(4);
    cr_assert_eq(tr.order[0], &c.it);
    cr_assert_eq(tr.order[1], &d.it);
    cr_assert_eq(tr.order[2], &a.it);
    cr_assert_eq(tr.order[3], &b.it);
    for (int i = 0; i < 4; i++) cr_assert_eq(tr.order[i]->outcome, BATCHER_DONE_OK);
    batcher_stats_t st;
    batcher_stats(bat, &st);
    cr_assert_eq(st.batches, 4);
}

Test(batcher, item_split_across_batches_gives_the_same_result) {
    open_batcher(64, 0);
    static test_item_t whole, split;
    make_item(&whole, 10, 7, 0);
    submit(&whole);
    wait_done(1);
    cr_assert_eq(whole.it.outcome, BATCHER_DONE_OK);
    cr_assert_eq(whole.it.batches, 1);
    set_limits(4, 0);
    make_item(&split, 10, 7, 0);
    submit(&split);
    wait_done(2);
    cr_assert_eq(split.it.outcome, BATCHER_DONE_OK);
    cr_assert_eq(split.it.batches, 3, "10 sequences in batches of 4 -> 3 batches, got %d", split.it.batches);
    for (int i = 0; i < 10 * H; i++) cr_assert_float_eq(split.out[i], whole.out[i], 1e-6, "value %d", i);
    batcher_stats_t st;
    batcher_stats(bat, &st);
    cr_assert_eq(st.max_batch_seqs_seen, 10);
}

Test(batcher, cancelled_and_expired_items_are_not_computed) {
    open_batcher(64, 10000);
    static test_item_t a, b;
    make_item(&a, 2, 1, 0);
    make_item(&b, 2, 2, 0);
    b.it.deadline_ns = batcher_now_ns() + 30 * 1000000LL;
    submit(&a);
    submit(&b);
    cr_assert_eq(batcher_cancel(bat, a.it.id), 0);
    cr_assert_eq(batcher_cancel(bat, a.it.id), -1, "cancelled twice");
    wait_done(2); /* b expires at a sweep, within ~40 ms */
    cr_assert_eq(a.it.outcome, BATCHER_DONE_CANCELLED);
    cr_assert_eq(b.it.outcome, BATCHER_DONE_EXPIRED);
    batcher_stats_t st;
    batcher_stats(bat, &st);
    cr_assert_eq(st.batches, 0);
    cr_assert_eq(st.items_cancelled, 1);
    cr_assert_eq(st.items_expired, 1);
    cr_assert_eq(st.pending_items, 0);
    cr_assert_eq(st.pending_bytes, 0);
}

Test(batcher, bounded_queue_pause_resume_drain) {
    batcher_limits_t l;
    batcher_limits_default(&l);
    l.max_pending_items = 2;
    l.max_queue_delay_us = 10000000;
    char err[256];
    cr_assert_eq(batcher_create(reg, &l, &bat, err, sizeof err), 0, "%s", err);
    static test_item_t a, b, c;
    make_item(&a, 1, 1, 0);
    make_item(&b, 1, 2, 0);
    make_item(&c, 1, 3, 0);
    submit(&a);
    cr_assert_eq(batcher_room(bat, 0), 1);
    submit(&b);
    cr_assert_eq(batcher_room(bat, -1), 0);
    cr_assert_eq(batcher_submit(bat, &c.it, err, sizeof err), BATCHER_EBUSY);
    cr_assert(strstr(err, "limits"), "BUSY without the numbers: %s", err);
    batcher_pause(bat);
    cr_assert_eq(batcher_room(bat, 0), 0);
    /* drain: no waiting for the 10 s window, nothing new taken */
    cr_assert_eq(batcher_drain(bat, 30000), 0);
    cr_assert_eq(a.it.outcome, BATCHER_DONE_OK);
    cr_assert_eq(b.it.outcome, BATCHER_DONE_OK);
    cr_assert_eq(batcher_submit(bat, &c.it, err, sizeof err), BATCHER_EPAUSED);
    batcher_resume(bat);
    cr_assert_eq(batcher_room(bat, 0), 2);
    /* a byte bound: an item bigger than it is refused */
    l.max_pending_bytes = 4096;
    l.max_queue_delay_us = 0;
    cr_assert_eq(batcher_set_limits(bat, &l, err, sizeof err), 0, "%s", err);
    make_item(&c, 4, 3, 0); /* 4 results of 384 floats: over 4096 bytes */
    cr_assert_eq(batcher_submit(bat, &c.it, err, sizeof err), BATCHER_EBUSY);
    /* bad limits are refused, the old ones stay */
    l.max_batch_seqs = 0;
    cr_assert_eq(batcher_set_limits(bat, &l, err, sizeof err), BATCHER_EINVAL);
    batcher_limits_t now;
    batcher_get_limits(bat, &now);
    cr_assert_eq(now.max_pending_bytes, 4096);
    cr_assert_gt(now.max_batch_seqs, 0);
}

Test(batcher, invalid_items_are_refused) {
    open_batcher(64, 0);
    static test_item_t a;
    char err[256];
    make_item(&a, 1, 1, 0);
    a.ids[1] = 999999;
    cr_assert_eq(batcher_submit(bat, &a.it, err, sizeof err), BATCHER_EINVAL);
    cr_assert(strstr(err, "vocabulary"), "%s", err);
    make_item(&a, 1, 1, 0);
    a.it.model = 7;
    cr_assert_eq(batcher_submit(bat, &a.it, err, sizeof err), BATCHER_EINVAL);
    make_item(&a, 1, 1, 0);
    a.it.n_seqs = 0;
    cr_assert_eq(batcher_submit(bat, &a.it, err, sizeof err), BATCHER_EINVAL);
    cr_assert_eq(tr.done, 0, "a refused item was called back");
}

static void wait_state(registry_state_t want) {
    for (int i = 0; i < 1000 && registry_state(reg, 0) != want; i++) sleep_ms(5);
    cr_assert_eq(registry_state(reg, 0), want, "model is %s, want %s", registry_state_name(registry_state(reg, 0)),
                 registry_state_name(want));
}

Test(batcher, lazy_load_and_unload_back_to_baseline) {
    open_batcher(64, 0);
    size_t baseline = registry_used(reg);
    cr_assert_eq(registry_state(reg, 0), REGISTRY_UNLOADED);
    static test_item_t a, b;
    make_item(&a, 3, 1, 0);
    submit(&a); /* first use loads it */
    wait_done(1);
    cr_assert_eq(a.it.outcome, BATCHER_DONE_OK);
    cr_assert_eq(registry_state(reg, 0), REGISTRY_READY);
    registry_model_info_t info;
    registry_info(reg, 0, &info);
    cr_assert_gt(info.weight_bytes, 80u << 20);
    cr_assert_gt(info.workspace_bytes, 0);
    cr_assert_eq(registry_used(reg), baseline + info.weight_bytes + info.workspace_bytes);
    cr_assert_eq(batcher_request_unload(bat, 0), 0);
    wait_state(REGISTRY_UNLOADED);
    cr_assert_eq(registry_used(reg), baseline, "unload left %zu bytes", registry_used(reg) - baseline);
    make_item(&b, 3, 1, 0);
    submit(&b); /* and loads again */
    wait_done(2);
    cr_assert_eq(b.it.outcome, BATCHER_DONE_OK);
    for (int i = 0; i < 3 * H; i++) cr_assert_float_eq(b.out[i], a.out[i], 1e-6);
    registry_info(reg, 0, &info);
    cr_assert_eq(info.loads, 2);
    cr_assert_eq(info.unloads, 1);
    cr_assert_eq(info.requests, 2);
}

/* The compute span of every finished batch, from the batch hook: it runs on
 * the worker right after the forward pass, so [now - compute_s, now] holds
 * that pass, and one worker runs its next batch only after the hook. */
static struct {
    int n;
    int64_t start_ns[64], end_ns[64];
} spans;

static void on_batch(const batcher_batch_info_t *bi, void *user) {
    (void)user;
    if (spans.n >= 64) return;
    int64_t now = batcher_now_ns();
    spans.start_ns[spans.n] = now - (int64_t)(bi->compute_s * 1e9);
    spans.end_ns[spans.n++] = now;
}

/* Two workers (the shape used on a GPU: engine runners = 2): batches compute
 * side by side (two batches' compute spans overlap) and every result still
 * equals the one-at-a-time run. */
Test(batcher, two_workers_keep_results) {
    registry_destroy(reg);
    registry_opts_t o = {.models_dir = support_model_dir(), .device = "cpu", .budget = (size_t)512 << 20,
                         .cpu_threads = 1, .engine = {.max_batch_tokens = 2048, .max_batch_seqs = 64, .runners = 2}};
    char err[512];
    cr_assert_eq(registry_create(&o, &reg, err, sizeof err), 0, "%s", err);
    cr_assert_eq(registry_engine_opts(reg)->runners, 2);
    open_batcher(2, 0);
    batcher_set_batch_hook(bat, on_batch, NULL);
    enum { N = 12 };
    static test_item_t alone[N], together[N];
    for (int i = 0; i < N; i++) {
        make_item(&alone[i], 1 + i % 3, 100 + i, 0);
        submit(&alone[i]);
        wait_done(i + 1);
    }
    for (int i = 0; i < N; i++) {
        make_item(&together[i], 1 + i % 3, 100 + i, 0);
        submit(&together[i]);
    }
    wait_done(2 * N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(together[i].it.outcome, BATCHER_DONE_OK);
        for (int k = 0; k < together[i].it.n_seqs * H; k++)
            cr_assert_float_eq(together[i].out[k], alone[i].out[k], 1e-6, "item %d value %d", i, k);
    }
    int overlaps = 0;
    for (int i = 0; i < spans.n; i++)
        for (int j = i + 1; j < spans.n; j++)
            overlaps += spans.start_ns[i] < spans.end_ns[j] && spans.start_ns[j] < spans.end_ns[i];
    cr_assert_gt(overlaps, 0, "no two of %d batches computed at the same time", spans.n);
}
