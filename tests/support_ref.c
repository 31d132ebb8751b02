/* tests/support_ref.c - float64 reference ops and random inputs for the op
 * tests (see support_ref.h). Plain loops in double, no cleverness: these are
 * what the backends are measured against. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tests/support_ref.h"

uint64_t ref_seed_from_env_or_time(void) {
    const char *s = getenv("SLUICE_TEST_SEED");
    if (s && *s) return strtoull(s, NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
}

void ref_rng_init(ref_rng_t *rng, uint64_t seed) { rng->state = seed; }

uint64_t ref_rng_next(ref_rng_t *rng) {
    uint64_t z = (rng->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double ref_rng_uniform(ref_rng_t *rng, double lo, double hi) {
    return lo + (hi - lo) * ((double)(ref_rng_next(rng) >> 11) * 0x1.0p-53);
}

int ref_rng_int(ref_rng_t *rng, int lo, int hi) {
    return lo + (int)(ref_rng_next(rng) % (uint64_t)(hi - lo + 1));
}

void ref_fill_uniform(ref_rng_t *rng, float *x, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++) x[i] = (float)ref_rng_uniform(rng, lo, hi);
}

void ref_fill_nan(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

long ref_first_nonfinite(const float *out, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(out[i])) return (long)i;
    return -1;
}

double ref_rel_error(const float *out, const double *ref, size_t n) {
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) return INFINITY;
        double d = (double)out[i] - ref[i];
        diff += d * d;
        norm += ref[i] * ref[i];
    }
    return norm > 0.0 ? sqrt(diff / norm) : sqrt(diff);
}

/* LayerNorm of one row v(H) in double, into out. */
static void ref_layernorm_row(double *out, const double *v, const float *gamma, const float *beta, int H,
                              double eps) {
    double mean = 0.0, var = 0.0;
    for (int i = 0; i < H; i++) mean += v[i];
    mean /= H;
    for (int i = 0; i < H; i++) var += (v[i] - mean) * (v[i] - mean);
    var /= H;
    double rstd = 1.0 / sqrt(var + eps);
    for (int i = 0; i < H; i++) out[i] = (v[i] - mean) * rstd * gamma[i] + beta[i];
}

void ref_embed_ln(double *out, const int32_t *ids, const int32_t *pos_ids, const float *word, const float *pos,
                  const float *type, const float *gamma, const float *beta, int T, int H, double eps) {
    double *v = malloc((size_t)H * sizeof *v);
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < H; i++)
            v[i] = (double)word[(size_t)ids[t] * H + i] + pos[(size_t)pos_ids[t] * H + i] + type[i];
        ref_layernorm_row(out + (size_t)t * H, v, gamma, beta, H, eps);
    }
    free(v);
}

/* 1 + erf(x / sqrt 2) written as erfc(-x / sqrt 2): no cancellation for large negative x. */
double ref_gelu_erf(double x) { return 0.5 * x * erfc(-x / sqrt(2.0)); }

void ref_matmul(double *out, const float *in, const float *W, const float *bias, int T, int K, int N, int epi) {
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++) acc += (double)in[(size_t)t * K + k] * W[(size_t)n * K + k];
            if (epi >= 1) acc += bias[n];
            if (epi == 2) acc = ref_gelu_erf(acc);
            out[(size_t)t * N + n] = acc;
        }
}

void ref_add_ln(double *out, const float *x, const float *bias, const float *residual, const float *gamma,
                const float *beta, int T, int H, double eps) {
    double *v = malloc((size_t)H * sizeof *v);
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < H; i++)
            v[i] = (double)x[(size_t)t * H + i] + (bias ? bias[i] : 0.0) + residual[(size_t)t * H + i];
        ref_layernorm_row(out + (size_t)t * H, v, gamma, beta, H, eps);
    }
    free(v);
}

void ref_attention(double *out, const float *qkv, const float *qkv_bias, const int32_t *seq_off, int B, int n_heads,
                   int head_dim, double scale) {
    int H = n_heads * head_dim;
    size_t ld = 3 * (size_t)H;
    /* element col of token t's [q | k | v], bias included */
#define REF_QKV(t, col) ((double)qkv[(size_t)(t) * ld + (col)] + (qkv_bias ? (double)qkv_bias[(col)] : 0.0))
    for (int b = 0; b < B; b++) {
        int t0 = seq_off[b], L = seq_off[b + 1] - seq_off[b];
        double *p = malloc((size_t)(L > 0 ? L : 1) * sizeof *p);
        for (int h = 0; h < n_heads; h++)
            for (int i = 0; i < L; i++) {
                size_t qc = (size_t)h * head_dim, kc = H + qc, vc = 2 * (size_t)H + qc;
                double m = -INFINITY, sum = 0.0;
                for (int j = 0; j < L; j++) {
                    double s = 0.0;
                    for (int c = 0; c < head_dim; c++) s += REF_QKV(t0 + i, qc + c) * REF_QKV(t0 + j, kc + c);
                    p[j] = s * scale;
                    if (p[j] > m) m = p[j];
                }
                for (int j = 0; j < L; j++) {
                    p[j] = exp(p[j] - m);
                    sum += p[j];
                }
                double *o = out + (size_t)(t0 + i) * H + qc;
                for (int c = 0; c < head_dim; c++) {
                    double acc = 0.0;
                    for (int j = 0; j < L; j++) acc += p[j] * REF_QKV(t0 + j, vc + c);
                    o[c] = acc / sum;
                }
            }
        free(p);
    }
#undef REF_QKV
}

void ref_mean_pool(double *out, const float *x, const int32_t *seq_off, int B, int H, int l2_normalize) {
    for (int b = 0; b < B; b++) {
        int t0 = seq_off[b], L = seq_off[b + 1] - seq_off[b];
        double *o = out + (size_t)b * H;
        for (int i = 0; i < H; i++) {
            double acc = 0.0;
            for (int t = t0; t < t0 + L; t++) acc += x[(size_t)t * H + i];
            o[i] = acc / L;
        }
        if (l2_normalize) {
            double ss = 0.0;
            for (int i = 0; i < H; i++) ss += o[i] * o[i];
            double norm = sqrt(ss);
            if (norm < 1e-12) norm = 1e-12;
            for (int i = 0; i < H; i++) o[i] /= norm;
        }
    }
}
