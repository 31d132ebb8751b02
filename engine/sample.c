/* engine/sample.c - token choice and stopping (see sample.h).
 *
 * Everything here is sequential on one request's data, in a fixed order, so
 * a seed names one output whatever the thread count of the forward pass.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sample.h"

#define CAND_WINDOW 30.0f /* scaled logits this far below the best are dropped */

sample_params_t sample_params_default(void) {
    sample_params_t p;
    memset(&p, 0, sizeof p);
    p.top_p = 1.0f;
    p.repetition_penalty = 1.0f;
    return p;
}

/* ---- PRNG: xoshiro256** seeded through splitmix64 (public domain, Vigna) ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void sample_rng_seed(sample_rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sample_rng_next(sample_rng_t *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double sample_rng_uniform(sample_rng_t *r) { return (double)(sample_rng_next(r) >> 11) * 0x1.0p-53; }

/* ---- set-up ---- */

int sample_check_budget(int n_prompt, int n_ctx, int *max_tokens, char *err, size_t errlen) {
    if (n_prompt < 1) {
        snprintf(err, errlen, "the prompt is empty");
        return SAMPLE_EINVAL;
    }
    if (n_prompt >= n_ctx) {
        snprintf(err, errlen, "the prompt has %d tokens; the context holds %d, leaving no room to generate", n_prompt,
                 n_ctx);
        return SAMPLE_EINVAL;
    }
    int room = n_ctx - n_prompt;
    if (*max_tokens < 0 || *max_tokens > room) {
        snprintf(err, errlen, "max_tokens %d does not fit: the prompt has %d tokens and the context %d (room for %d)",
                 *max_tokens, n_prompt, n_ctx, room);
        return SAMPLE_EINVAL;
    }
    if (*max_tokens == 0) *max_tokens = room;
    return SAMPLE_OK;
}

static int check_params(const sample_params_t *p, int vocab, char *err, size_t errlen) {
    if (!(p->temperature == p->temperature) || !(p->top_p > 0.0f && p->top_p <= 1.0f) ||
        !(p->min_p >= 0.0f && p->min_p < 1.0f) || p->top_k < 0 || !(p->repetition_penalty >= 0.0f) ||
        !isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty) || !isfinite(p->temperature)) {
        snprintf(err, errlen,
                 "sampling parameters out of range (temperature %g, top_k %d, top_p %g in (0,1], min_p %g in "
                 "[0,1), repetition_penalty %g)",
                 p->temperature, p->top_k, p->top_p, p->min_p, p->repetition_penalty);
        return SAMPLE_EINVAL;
    }
    if (p->max_tokens < 0 || p->n_stop_ids < 0 || p->n_stop_ids > SAMPLE_MAX_STOP_IDS || p->n_stops < 0 ||
        p->n_stops > SAMPLE_MAX_STOPS) {
        snprintf(err, errlen, "max_tokens %d, %d stop ids (max %d), %d stop strings (max %d)", p->max_tokens,
                 p->n_stop_ids, SAMPLE_MAX_STOP_IDS, p->n_stops, SAMPLE_MAX_STOPS);
        return SAMPLE_EINVAL;
    }
    for (int i = 0; i < p->n_stop_ids; i++) {
        if (p->stop_ids[i] < 0 || p->stop_ids[i] >= vocab) {
            snprintf(err, errlen, "stop token id %d is outside the vocabulary (%d)", (int)p->stop_ids[i], vocab);
            return SAMPLE_EINVAL;
        }
    }
    for (int i = 0; i < p->n_stops; i++) {
        size_t n = p->stops[i] ? strlen(p->stops[i]) : 0;
        if (n == 0 || n > SAMPLE_MAX_STOP_LEN) {
            snprintf(err, errlen, "stop string %d is %s (1 to %d bytes)", i, n ? "too long" : "empty",
                     SAMPLE_MAX_STOP_LEN);
            return SAMPLE_EINVAL;
        }
    }
    return SAMPLE_OK;
}

int sample_seq_init(sample_seq_t *s, const sample_params_t *p, int vocab, const int32_t *prompt, int n_prompt,
                    char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    if (vocab <= 0) {
        snprintf(err, errlen, "vocabulary size %d", vocab);
        return SAMPLE_EINVAL;
    }
    int rc = check_params(p, vocab, err, errlen);
    if (rc) return rc;
    s->p = *p;
    if (s->p.repetition_penalty == 0.0f) s->p.repetition_penalty = 1.0f;
    s->vocab = vocab;
    sample_rng_seed(&s->rng, p->seed);
    size_t stop_bytes = 0;
    for (int i = 0; i < p->n_stops; i++) stop_bytes += strlen(p->stops[i]) + 1;
    s->counts = calloc((size_t)vocab, sizeof *s->counts);
    s->in_prompt = calloc((size_t)vocab, 1);
    s->scratch = malloc((size_t)vocab * sizeof *s->scratch);
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    s->stop_buf = malloc(stop_bytes + 1);
    s->held_cap = 2 * SAMPLE_MAX_STOP_LEN + 64;
    s->held = malloc(s->held_cap);
    s->out_cap = s->held_cap;
    s->out = malloc(s->out_cap);
    if (!s->counts || !s->in_prompt || !s->scratch || !s->cand || !s->stop_buf || !s->held || !s->out) {
        sample_seq_free(s);
        snprintf(err, errlen, "sampler: out of host memory");
        return SAMPLE_ENOMEM;
    }
    char *w = s->stop_buf;
    for (int i = 0; i < p->n_stops; i++) {
        size_t n = strlen(p->stops[i]) + 1;
        memcpy(w, p->stops[i], n);
        s->p.stops[i] = w;
        w += n;
    }
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] >= 0 && prompt[i] < vocab) s->in_prompt[prompt[i]] = 1;
    return SAMPLE_OK;
}

void sample_seq_free(sample_seq_t *s) {
    if (!s) return;
    free(s->counts);
    free(s->in_prompt);
    free(s->scratch);
    free(s->cand);
    free(s->stop_buf);
    free(s->held);
    free(s->out);
    memset(s, 0, sizeof *s);
}

/* ---- choosing ---- */

static int32_t arg_max(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Candidates sorted by scaled logit, best first; ties by the lower id, so the
 * order (and the draw) never depends on the sort's stability. qsort has no
 * context argument in C11: the keys travel in a thread-local. */
static _Thread_local const float *tl_keys;
static int cand_cmp(const void *a, const void *b) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float x = tl_keys[i], y = tl_keys[j];
    if (x != y) return x > y ? -1 : 1;
    return i < j ? -1 : (i > j);
}

int32_t sample_next(sample_seq_t *s, const float *logits) {
    const sample_params_t *p = &s->p;
    int V = s->vocab;
    float *x = s->scratch;
    memcpy(x, logits, (size_t)V * sizeof *x);
    int penalise = p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (penalise) {
        for (int i = 0; i < V; i++) {
            uint32_t c = s->counts[i];
            if (c == 0 && !s->in_prompt[i]) continue;
            if (p->repetition_penalty != 1.0f)
                x[i] = x[i] > 0.0f ? x[i] / p->repetition_penalty : x[i] * p->repetition_penalty;
            if (c) x[i] -= p->presence_penalty + p->frequency_penalty * (float)c;
        }
    }
    if (p->temperature <= 0.0f) return arg_max(x, V);

    float inv_t = 1.0f / p->temperature;
    int32_t best = arg_max(x, V);
    float top = x[best] * inv_t;
    int n = 0;
    for (int i = 0; i < V; i++) {
        x[i] *= inv_t;
        if (x[i] >= top - CAND_WINDOW) s->cand[n++] = i;
    }
    tl_keys = x;
    qsort(s->cand, (size_t)n, sizeof *s->cand, cand_cmp);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    /* softmax over the candidates, in double, best first */
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)(x[s->cand[i]] - top));
    if (p->top_p < 1.0f) {
        double acc = 0.0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            acc += exp((double)(x[s->cand[i]] - top)) / sum;
            if (acc >= (double)p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (p->min_p > 0.0f) {
        /* the best candidate has relative weight exp(0) = 1 */
        int keep = 1;
        while (keep < n && exp((double)(x[s->cand[keep]] - top)) >= (double)p->min_p) keep++;
        n = keep;
    }
    double mass = 0.0;
    for (int i = 0; i < n; i++) mass += exp((double)(x[s->cand[i]] - top));
    double u = sample_rng_uniform(&s->rng) * mass, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += exp((double)(x[s->cand[i]] - top));
        if (u < acc) return s->cand[i];
    }
    return s->cand[n - 1];
}

/* ---- stopping ---- */

static int reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap * 2 > need ? *cap * 2 : need;
    char *nb = realloc(*buf, c);
    if (!nb) return -1;
    *buf = nb;
    *cap = c;
    return 0;
}

/* The earliest start of any stop string inside held, or -1. */
static long find_stop(const sample_seq_t *s) {
    long best = -1;
    for (int i = 0; i < s->p.n_stops; i++) {
        const char *hit = memmem(s->held, s->n_held, s->p.stops[i], strlen(s->p.stops[i]));
        if (hit && (best < 0 || hit - s->held < best)) best = hit - s->held;
    }
    return best;
}

/* Bytes at the end of held that begin some stop string (and so must wait). */
static size_t partial_stop_tail(const sample_seq_t *s) {
    size_t keep = 0;
    for (int i = 0; i < s->p.n_stops; i++) {
        size_t m = strlen(s->p.stops[i]);
        size_t k = m - 1 < s->n_held ? m - 1 : s->n_held;
        for (; k > keep; k--)
            if (memcmp(s->held + s->n_held - k, s->p.stops[i], k) == 0) break;
        if (k > keep) keep = k;
    }
    return keep;
}

/* Move the first n held bytes to out. */
static void release(sample_seq_t *s, size_t n, const char **out, size_t *out_len) {
    if (reserve(&s->out, &s->out_cap, n + 1) != 0) n = 0; /* cannot happen: out grows with held */
    memcpy(s->out, s->held, n);
    memmove(s->held, s->held + n, s->n_held - n);
    s->n_held -= n;
    *out = s->out;
    *out_len = n;
}

sample_finish_t sample_accept(sample_seq_t *s, int32_t token, const char *text, size_t len, const char **out,
                              size_t *out_len) {
    *out = s->out;
    *out_len = 0;
    if (s->finished) return (sample_finish_t)s->finished;
    s->n_generated++;
    if (token >= 0 && token < s->vocab && s->counts[token] < UINT32_MAX) s->counts[token]++;
    for (int i = 0; i < s->p.n_stop_ids; i++) {
        if (token == s->p.stop_ids[i]) {
            release(s, s->n_held, out, out_len);
            return (sample_finish_t)(s->finished = SAMPLE_STOP_TOKEN);
        }
    }
    if (reserve(&s->held, &s->held_cap, s->n_held + len) != 0 ||
        reserve(&s->out, &s->out_cap, s->n_held + len + 1) != 0) {
        /* no memory to hold the text: end the answer with what we have */
        release(s, s->n_held, out, out_len);
        return (sample_finish_t)(s->finished = SAMPLE_LENGTH);
    }
    memcpy(s->held + s->n_held, text, len);
    s->n_held += len;
    long at = find_stop(s);
    if (at >= 0) {
        release(s, (size_t)at, out, out_len);
        s->n_held = 0;
        return (sample_finish_t)(s->finished = SAMPLE_STOP_STRING);
    }
    if (s->p.max_tokens > 0 && s->n_generated >= s->p.max_tokens) {
        release(s, s->n_held, out, out_len);
        return (sample_finish_t)(s->finished = SAMPLE_LENGTH);
    }
    release(s, s->n_held - partial_stop_tail(s), out, out_len);
    return SAMPLE_CONTINUE;
}
