/* tests/test_sample.c - token choice (greedy, temperature, top-k/p, min-p,
 * penalties, seeds) and stopping (stop ids, stop strings held back across
 * token boundaries, max tokens, the context budget).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sample.h"

static char err[256];

static void init_seq(sample_seq_t *s, const sample_params_t *p, int vocab, const int32_t *prompt, int n) {
    cr_assert_eq(sample_seq_init(s, p, vocab, prompt, n, err, sizeof err), SAMPLE_OK, "%s", err);
}

/* Draw `draws` tokens from fixed logits and count them. */
static void histogram(const sample_params_t *p, const float *logits, int V, int draws, int *counts) {
    sample_seq_t s;
    init_seq(&s, p, V, NULL, 0);
    memset(counts, 0, (size_t)V * sizeof *counts);
    for (int i = 0; i < draws; i++) {
        int32_t t = sample_next(&s, logits);
        cr_assert(t >= 0 && t < V);
        counts[t]++;
    }
    sample_seq_free(&s);
}

Test(sample, greedy_is_argmax_lowest_id_on_ties) {
    float x[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f, 0.0f};
    sample_params_t p = sample_params_default();
    sample_seq_t s;
    init_seq(&s, &p, 6, NULL, 0);
    for (int i = 0; i < 3; i++) cr_assert_eq(sample_next(&s, x), 1);
    sample_seq_free(&s);
    sample_seq_free(&s); /* twice is harmless */
}

Test(sample, temperature_follows_the_distribution) {
    /* p = 1/7, 2/7, 4/7 */
    float x[3] = {0.0f, logf(2.0f), logf(4.0f)};
    sample_params_t p = sample_params_default();
    p.temperature = 1.0f;
    p.seed = 42;
    int c[3];
    histogram(&p, x, 3, 70000, c);
    cr_assert(abs(c[0] - 10000) < 500 && abs(c[1] - 20000) < 700 && abs(c[2] - 40000) < 700, "%d %d %d", c[0],
              c[1], c[2]);
    /* temperature 0.5 squares the ratios: 1/21, 4/21, 16/21 */
    p.temperature = 0.5f;
    histogram(&p, x, 3, 21000, c);
    cr_assert(abs(c[0] - 1000) < 150 && abs(c[1] - 4000) < 300 && abs(c[2] - 16000) < 400, "%d %d %d", c[0], c[1],
              c[2]);
}

Test(sample, top_k_top_p_min_p_cut_the_tail) {
    /* p = 0.5, 0.3, 0.2 */
    float x[4] = {logf(0.5f), logf(0.3f), logf(0.2f), -1e9f};
    sample_params_t p = sample_params_default();
    p.temperature = 1.0f;
    p.seed = 7;
    int c[4];
    p.top_k = 1;
    histogram(&p, x, 4, 500, c);
    cr_assert_eq(c[0], 500);
    p.top_k = 2;
    histogram(&p, x, 4, 4000, c);
    cr_assert(c[2] == 0 && c[3] == 0 && abs(c[0] - 2500) < 200, "%d %d %d", c[0], c[1], c[2]);
    p.top_k = 0;
    p.top_p = 0.6f; /* 0.5 < 0.6 <= 0.8: two tokens */
    histogram(&p, x, 4, 4000, c);
    cr_assert(c[2] == 0 && c[1] > 0 && abs(c[0] - 2500) < 200, "%d %d %d", c[0], c[1], c[2]);
    p.top_p = 0.5f;
    histogram(&p, x, 4, 500, c);
    cr_assert_eq(c[0], 500);
    p.top_p = 1.0f;
    p.min_p = 0.5f; /* keep p >= 0.25 */
    histogram(&p, x, 4, 4000, c);
    cr_assert(c[2] == 0 && c[1] > 0, "%d %d %d", c[0], c[1], c[2]);
    p.min_p = 0.35f; /* keep p >= 0.175: all three */
    histogram(&p, x, 4, 4000, c);
    cr_assert(c[2] > 0 && c[3] == 0, "%d %d %d", c[0], c[1], c[2]);
}

Test(sample, same_seed_same_tokens_other_seed_other_tokens) {
    enum { V = 1000, N = 200 };
    float *x = malloc(V * sizeof *x);
    for (int i = 0; i < V; i++) x[i] = (float)((i * 7919) % 1000) / 250.0f;
    sample_params_t p = sample_params_default();
    p.temperature = 0.9f;
    p.top_p = 0.95f;
    p.seed = 1234;
    int32_t a[N], b[N], c[N];
    sample_seq_t s;
    for (int run = 0; run < 3; run++) {
        if (run == 2) p.seed = 1235;
        init_seq(&s, &p, V, NULL, 0);
        int32_t *out = run == 0 ? a : run == 1 ? b : c;
        for (int i = 0; i < N; i++) out[i] = sample_next(&s, x);
        sample_seq_free(&s);
    }
    cr_assert(memcmp(a, b, sizeof a) == 0);
    cr_assert(memcmp(a, c, sizeof a) != 0);
    /* the generator itself is pinned: portable across machines */
    sample_rng_t r;
    sample_rng_seed(&r, 0);
    uint64_t first = sample_rng_next(&r);
    cr_assert_eq(first, 0x99EC5F36CB75F2B4ull, "xoshiro256** from splitmix64(0): %016llx", (unsigned long long)first);
    free(x);
}

typedef struct {
    const float *x;
    int32_t out[100];
} thread_arg_t;

static void *draw_in_thread(void *arg) {
    thread_arg_t *t = arg;
    sample_params_t p = sample_params_default();
    p.temperature = 1.2f;
    p.seed = 99;
    sample_seq_t s;
    if (sample_seq_init(&s, &p, 500, NULL, 0, err, sizeof err)) return NULL;
    for (int i = 0; i < 100; i++) t->out[i] = sample_next(&s, t->x);
    sample_seq_free(&s);
    return NULL;
}

Test(sample, threads_do_not_disturb_each_other) {
    float x[500];
    for (int i = 0; i < 500; i++) x[i] = (float)((i * 31) % 97) / 30.0f;
    thread_arg_t one = {.x = x}, th[4];
    draw_in_thread(&one);
    pthread_t tid[4];
    for (int i = 0; i < 4; i++) {
        th[i].x = x;
        pthread_create(&tid[i], NULL, draw_in_thread, &th[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(tid[i], NULL);
        cr_assert(memcmp(one.out, th[i].out, sizeof one.out) == 0, "thread %d drew other tokens", i);
    }
}

Test(sample, repetition_presence_frequency_penalties) {
    float x[4] = {3.0f, 2.9f, -1.0f, 2.0f};
    int32_t prompt[1] = {0};
    sample_params_t p = sample_params_default();
    p.repetition_penalty = 1.1f; /* 3.0 / 1.1 = 2.73 < 2.9 */
    sample_seq_t s;
    init_seq(&s, &p, 4, prompt, 1);
    cr_assert_eq(sample_next(&s, x), 1);
    sample_seq_free(&s);
    p.repetition_penalty = 1.0f;
    init_seq(&s, &p, 4, prompt, 1);
    cr_assert_eq(sample_next(&s, x), 0);
    sample_seq_free(&s);
    /* a negative logit is multiplied: -1 * 4 = -4 loses to everything */
    float y[2] = {-1.0f, -3.0f};
    int32_t prompt0[1] = {0};
    p.repetition_penalty = 4.0f;
    init_seq(&s, &p, 2, prompt0, 1);
    cr_assert_eq(sample_next(&s, y), 1);
    sample_seq_free(&s);
    /* presence/frequency count generated tokens only, not the prompt */
    p = sample_params_default();
    p.presence_penalty = 0.05f;
    p.frequency_penalty = 0.04f;
    init_seq(&s, &p, 4, prompt, 1);
    const char *out;
    size_t n;
    cr_assert_eq(sample_next(&s, x), 0);
    sample_accept(&s, 0, "a", 1, &out, &n); /* 3.0 - 0.09 = 2.91 > 2.9 */
    cr_assert_eq(sample_next(&s, x), 0);
    sample_accept(&s, 0, "a", 1, &out, &n); /* 3.0 - 0.13 = 2.87 < 2.9 */
    cr_assert_eq(sample_next(&s, x), 1);
    sample_seq_free(&s);
}

/* Feed pieces; collect what is streamed; return the finish reason. */
static sample_finish_t run_pieces(sample_seq_t *s, const char *const *pieces, const int32_t *ids, int n, char *got,
                                  size_t cap, int *steps) {
    size_t used = 0;
    sample_finish_t f = SAMPLE_CONTINUE;
    got[0] = 0;
    for (int i = 0; i < n && f == SAMPLE_CONTINUE; i++) {
        const char *out;
        size_t len;
        f = sample_accept(s, ids ? ids[i] : 5, pieces[i], strlen(pieces[i]), &out, &len);
        cr_assert(used + len < cap);
        memcpy(got + used, out, len);
        used += len;
        got[used] = 0;
        if (steps) steps[i] = (int)used;
    }
    return f;
}

Test(sample, stop_string_across_tokens_is_held_back_never_retracted) {
    sample_params_t p = sample_params_default();
    p.stops[0] = "\nuser";
    p.stops[1] = "###";
    p.n_stops = 2;
    sample_seq_t s;
    init_seq(&s, &p, 10, NULL, 0);
    char got[256];
    int steps[8];
    const char *pieces[] = {"Hello", " there\n", "us", "er: hi", "more"};
    cr_assert_eq(run_pieces(&s, pieces, NULL, 5, got, sizeof got, steps), SAMPLE_STOP_STRING);
    cr_assert_str_eq(got, "Hello there");
    cr_assert_eq(steps[0], 5);  /* "Hello" streamed at once */
    cr_assert_eq(steps[1], 11); /* " there" out, "\n" held */
    cr_assert_eq(steps[2], 11); /* "\nus" held */
    sample_seq_free(&s);

    /* a false alarm is released as soon as it cannot be a stop any more */
    init_seq(&s, &p, 10, NULL, 0);
    const char *pieces2[] = {"a\n", "u", "x#", "#", "b"};
    cr_assert_eq(run_pieces(&s, pieces2, NULL, 5, got, sizeof got, steps), SAMPLE_CONTINUE);
    cr_assert_str_eq(got, "a\nux##b");
    cr_assert_eq(steps[0], 1);
    cr_assert_eq(steps[1], 1);
    cr_assert_eq(steps[2], 4); /* "\nux" released, "#" held */
    cr_assert_eq(steps[3], 4); /* "##" held */
    sample_seq_free(&s);

    /* a stop inside one token: the text before it is kept */
    init_seq(&s, &p, 10, NULL, 0);
    const char *pieces3[] = {"ab###cd"};
    cr_assert_eq(run_pieces(&s, pieces3, NULL, 1, got, sizeof got, NULL), SAMPLE_STOP_STRING);
    cr_assert_str_eq(got, "ab");
    /* finished stays finished */
    const char *out;
    size_t len;
    cr_assert_eq(sample_accept(&s, 1, "x", 1, &out, &len), SAMPLE_STOP_STRING);
    cr_assert_eq(len, 0);
    sample_seq_free(&s);
}

Test(sample, stop_strings_random_splits) {
    /* random texts over a tiny alphabet, split at random: what is streamed is
     * always exactly the text up to the first stop, whatever the split */
    const char *stops[3] = {"aab", "ba\n", "\n\n\n"};
    unsigned rng = 12345;
    for (int trial = 0; trial < 2000; trial++) {
        char text[64];
        int L = 1 + (int)((rng = rng * 1103515245u + 12345u) >> 16) % 40;
        for (int i = 0; i < L; i++) text[i] = "ab\n"[((rng = rng * 1103515245u + 12345u) >> 16) % 3];
        text[L] = 0;
        /* expected: up to the earliest stop */
        int cut = L;
        for (int k = 0; k < 3; k++) {
            char *h = strstr(text, stops[k]);
            if (h && h - text < cut) cut = (int)(h - text);
        }
        sample_params_t p = sample_params_default();
        for (int k = 0; k < 3; k++) p.stops[k] = stops[k];
        p.n_stops = 3;
        p.stop_ids[0] = 2;
        p.n_stop_ids = 1;
        sample_seq_t s;
        init_seq(&s, &p, 10, NULL, 0);
        char got[128] = "";
        size_t used = 0;
        sample_finish_t f = SAMPLE_CONTINUE;
        for (int i = 0; i < L && f == SAMPLE_CONTINUE;) {
            int n = 1 + (int)((rng = rng * 1103515245u + 12345u) >> 16) % 4;
            if (i + n > L) n = L - i;
            const char *out;
            size_t len;
            f = sample_accept(&s, 5, text + i, (size_t)n, &out, &len);
            memcpy(got + used, out, len);
            used += len;
            /* never ahead of the answer */
            cr_assert(used <= (size_t)cut && memcmp(got, text, used) == 0, "trial %d: %s", trial, text);
            i += n;
        }
        if (f == SAMPLE_CONTINUE) { /* end of text: a stop token flushes what is held */
            const char *out;
            size_t len;
            cr_assert_eq(sample_accept(&s, 2, "", 0, &out, &len), SAMPLE_STOP_TOKEN);
            memcpy(got + used, out, len);
            used += len;
            cr_assert(used == (size_t)L && memcmp(got, text, used) == 0, "trial %d: %s", trial, text);
            sample_seq_free(&s);
            continue;
        }
        cr_assert_eq(f, SAMPLE_STOP_STRING);
        cr_assert_eq(used, (size_t)cut, "trial %d: %s -> %zu of %d", trial, text, used, cut);
        sample_seq_free(&s);
    }
}

Test(sample, stop_token_and_max_tokens_flush_held_text) {
    sample_params_t p = sample_params_default();
    p.stops[0] = "<END>";
    p.n_stops = 1;
    p.stop_ids[0] = 2;
    p.stop_ids[1] = 0;
    p.n_stop_ids = 2;
    p.max_tokens = 3;
    sample_seq_t s;
    init_seq(&s, &p, 10, NULL, 0);
    char got[64];
    const char *pieces[] = {"x <E", "<|im_end|>"};
    int32_t ids[] = {5, 2};
    cr_assert_eq(run_pieces(&s, pieces, ids, 2, got, sizeof got, NULL), SAMPLE_STOP_TOKEN);
    cr_assert_str_eq(got, "x <E"); /* held "<E" flushed; the stop token's text never streamed */
    sample_seq_free(&s);

    init_seq(&s, &p, 10, NULL, 0);
    const char *pieces2[] = {"a", "b", "c<EN", "d"};
    cr_assert_eq(run_pieces(&s, pieces2, NULL, 4, got, sizeof got, NULL), SAMPLE_LENGTH);
    cr_assert_str_eq(got, "abc<EN");
    cr_assert_eq(s.n_generated, 3);
    sample_seq_free(&s);
}

Test(sample, budget_and_bad_parameters) {
    int m = 0;
    cr_assert_eq(sample_check_budget(10, 100, &m, err, sizeof err), SAMPLE_OK);
    cr_assert_eq(m, 90);
    m = 90;
    cr_assert_eq(sample_check_budget(10, 100, &m, err, sizeof err), SAMPLE_OK);
    m = 91;
    cr_assert_eq(sample_check_budget(10, 100, &m, err, sizeof err), SAMPLE_EINVAL);
    cr_assert(strstr(err, "room for 90"), "%s", err);
    m = 0;
    cr_assert_eq(sample_check_budget(100, 100, &m, err, sizeof err), SAMPLE_EINVAL);
    cr_assert(strstr(err, "100 tokens"), "%s", err);
    cr_assert_eq(sample_check_budget(0, 100, &m, err, sizeof err), SAMPLE_EINVAL);

    sample_seq_t s;
    sample_params_t p = sample_params_default();
    p.top_p = 0.0f;
    cr_assert_eq(sample_seq_init(&s, &p, 10, NULL, 0, err, sizeof err), SAMPLE_EINVAL);
    p = sample_params_default();
    p.temperature = NAN;
    cr_assert_eq(sample_seq_init(&s, &p, 10, NULL, 0, err, sizeof err), SAMPLE_EINVAL);
    p = sample_params_default();
    p.stop_ids[0] = 10;
    p.n_stop_ids = 1;
    cr_assert_eq(sample_seq_init(&s, &p, 10, NULL, 0, err, sizeof err), SAMPLE_EINVAL);
    cr_assert(strstr(err, "outside the vocabulary"), "%s", err);
    p = sample_params_default();
    p.stops[0] = "";
    p.n_stops = 1;
    cr_assert_eq(sample_seq_init(&s, &p, 10, NULL, 0, err, sizeof err), SAMPLE_EINVAL);
    cr_assert(strstr(err, "empty"), "%s", err);
    p.n_stops = SAMPLE_MAX_STOPS + 1;
    cr_assert_eq(sample_seq_init(&s, &p, 10, NULL, 0, err, sizeof err), SAMPLE_EINVAL);
    sample_seq_free(&s);
}
