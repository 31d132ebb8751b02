/* tests/support_decoder_ref.c - references for the decoder ops (see
 * support_decoder_ref.h). Naive loops, built without contraction: every
 * float expression is the formula as written. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "tests/support_decoder_ref.h"

float dref_half_to_float(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
    double v;
    if (exp == 0) v = ldexp(man, -24);
    else if (exp == 31) v = man ? NAN : INFINITY;
    else v = ldexp(1024 + man, exp - 25);
    return (float)(sign ? -v : v);
}

uint16_t dref_float_to_half(float f) {
    /* Search is simplest to trust: the half whose value is nearest (ties to even). */
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    uint16_t best = 0;
    double best_err = INFINITY;
    for (uint32_t h = 0; h < 0x7c00; h++) {
        double err = fabs((double)dref_half_to_float((uint16_t)h) - a);
        if (err < best_err || (err == best_err && (h & 1) == 0)) best = (uint16_t)h, best_err = err;
        if ((double)dref_half_to_float((uint16_t)h) > a) break;
    }
    return sign | best;
}

size_t dref_row_bytes(ops_wtype_t wtype, int K) {
    switch (wtype) {
    case OPS_W_F32: return (size_t)K * 4;
    case OPS_W_F16: return (size_t)K * 2;
    case OPS_W_Q8_0: return (size_t)K / 32 * 34;
    case OPS_W_Q4_0: return (size_t)K / 32 * 18;
    case OPS_W_Q4_1: return (size_t)K / 32 * 20;
    }
    return 0;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

void dref_dequant_row(float *out, const void *row, ops_wtype_t wtype, int K) {
    const uint8_t *r = row;
    for (int k = 0; k < K; k++) {
        if (wtype == OPS_W_F32) {
            memcpy(&out[k], r + 4 * (size_t)k, 4);
            continue;
        }
        if (wtype == OPS_W_F16) {
            out[k] = dref_half_to_float(get16(r + 2 * (size_t)k));
            continue;
        }
        int j = k % 32;
        const uint8_t *blk = r + (size_t)(k / 32) * dref_row_bytes(wtype, 32);
        float d = dref_half_to_float(get16(blk));
        if (wtype == OPS_W_Q8_0) {
            out[k] = d * (float)(int8_t)blk[2 + j];
        } else if (wtype == OPS_W_Q4_0) {
            int q = j < 16 ? (blk[2 + j] & 15) : (blk[2 + j - 16] >> 4);
            out[k] = d * (float)(q - 8);
        } else {
            float m = dref_half_to_float(get16(blk + 2));
            int q = j < 16 ? (blk[4 + j] & 15) : (blk[4 + j - 16] >> 4);
            float dq = d * (float)q;
            out[k] = dq + m;
        }
    }
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void *dref_random_weights(ref_rng_t *rng, ops_wtype_t wtype, int N, int K) {
    size_t rb = dref_row_bytes(wtype, K), n = (size_t)N * rb;
    uint8_t *w = malloc(n ? n : 1);
    if (!w) return NULL;
    /* Halves for a few d and m values, looked up from a small table (the
     * nearest-half search is slow); their values are what matter, not their spread. */
    uint16_t dh[64], mh[64];
    for (int i = 0; i < 64; i++) {
        dh[i] = dref_float_to_half((float)ref_rng_uniform(rng, 0.002, 0.02));
        mh[i] = dref_float_to_half((float)ref_rng_uniform(rng, -0.15, 0.0));
    }
    for (int r = 0; r < N; r++) {
        uint8_t *row = w + (size_t)r * rb;
        if (wtype == OPS_W_F32) {
            for (int k = 0; k < K; k++) {
                float v = (float)ref_rng_uniform(rng, -0.1, 0.1);
                memcpy(row + 4 * (size_t)k, &v, 4);
            }
            continue;
        }
        if (wtype == OPS_W_F16) {
            for (int k = 0; k < K; k++) {
                /* a random finite half in about [-0.1, 0.1]: exponent 0..11 (below 2^-4), random mantissa and sign */
                uint16_t h = (uint16_t)(ref_rng_int(rng, 0, 11) << 10 | ref_rng_int(rng, 0, 1023) |
                                        ref_rng_int(rng, 0, 1) << 15);
                put16(row + 2 * (size_t)k, h);
            }
            continue;
        }
        size_t bb = dref_row_bytes(wtype, 32);
        for (int b = 0; b < K / 32; b++) {
            uint8_t *blk = row + (size_t)b * bb;
            put16(blk, dh[ref_rng_int(rng, 0, 63)]);
            if (wtype == OPS_W_Q8_0) {
                for (int i = 0; i < 32; i++) blk[2 + i] = (uint8_t)ref_rng_int(rng, 0, 255);
            } else if (wtype == OPS_W_Q4_0) {
                for (int i = 0; i < 16; i++) blk[2 + i] = (uint8_t)ref_rng_int(rng, 0, 255);
            } else {
                put16(blk + 2, mh[ref_rng_int(rng, 0, 63)]);
                for (int i = 0; i < 16; i++) blk[4 + i] = (uint8_t)ref_rng_int(rng, 0, 255);
            }
        }
    }
    return w;
}

void dref_matmul_q(double *out, const float *x, const void *W, ops_wtype_t wtype, int T, int K, int N) {
    float *row = malloc((size_t)K * sizeof *row);
    size_t rb = dref_row_bytes(wtype, K);
    for (int n = 0; n < N; n++) {
        dref_dequant_row(row, (const uint8_t *)W + (size_t)n * rb, wtype, K);
        for (int t = 0; t < T; t++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++) acc += (double)x[(size_t)t * K + k] * row[k];
            out[(size_t)t * N + n] = acc;
        }
    }
    free(row);
}

void dref_embed_q(float *out, const int32_t *ids, const void *table, ops_wtype_t wtype, int T, int H) {
    size_t rb = dref_row_bytes(wtype, H);
    for (int t = 0; t < T; t++) dref_dequant_row(out + (size_t)t * H, (const uint8_t *)table + ids[t] * rb, wtype, H);
}

void dref_add_rms_norm(double *out, float *resid_out, const float *resid, const float *delta, const float *w, int T,
                       int H, double eps) {
    for (int t = 0; t < T; t++) {
        float *r = resid_out + (size_t)t * H;
        for (int i = 0; i < H; i++) r[i] = delta ? resid[(size_t)t * H + i] + delta[(size_t)t * H + i] : resid[(size_t)t * H + i];
        double ss = 0.0;
        for (int i = 0; i < H; i++) ss += (double)r[i] * r[i];
        double inv = 1.0 / sqrt(ss / H + eps);
        for (int i = 0; i < H; i++) out[(size_t)t * H + i] = r[i] * inv * w[i];
    }
}

void dref_rope(double *out, const float *x, const int32_t *pos, int T, int n_heads, int head_dim, int row_stride,
               float theta) {
    for (int t = 0; t < T; t++) {
        for (int c = 0; c < row_stride; c++) out[(size_t)t * row_stride + c] = x[(size_t)t * row_stride + c];
        for (int i = 0; i < head_dim / 2; i++) {
            float inv = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
            double a = (float)pos[t] * inv;
            for (int h = 0; h < n_heads; h++) {
                size_t o = (size_t)t * row_stride + (size_t)h * head_dim + 2 * i;
                double x0 = x[o], x1 = x[o + 1];
                out[o] = x0 * cos(a) - x1 * sin(a);
                out[o + 1] = x0 * sin(a) + x1 * cos(a);
            }
        }
    }
}

void dref_silu_mul(double *out, const float *gu, int T, int F) {
    for (int t = 0; t < T; t++)
        for (int i = 0; i < F; i++) {
            double g = gu[(size_t)t * 2 * F + i], u = gu[(size_t)t * 2 * F + F + i];
            out[(size_t)t * F + i] = g / (1.0 + exp(-g)) * u;
        }
}

void dref_attention_paged(double *out, const float *q, int q_stride, const float *k_cache, const float *v_cache,
                          const int32_t *block_table, int max_blocks, const int32_t *seq_off, const int32_t *ctx_len,
                          int B, int n_heads, int n_kv_heads, int head_dim, int block_size, double scale) {
    int group = n_heads / n_kv_heads, H = n_heads * head_dim;
    double *s = malloc(((size_t)ctx_len[0] + 1) * sizeof *s);
    for (int b = 0; b < B; b++) {
        s = realloc(s, ((size_t)ctx_len[b] + 1) * sizeof *s);
        int n_b = seq_off[b + 1] - seq_off[b];
        for (int i = 0; i < n_b; i++) {
            int t = seq_off[b] + i, p = ctx_len[b] - n_b + i;
            for (int h = 0; h < n_heads; h++) {
                int g = h / group;
                const float *qv = q + (size_t)t * q_stride + (size_t)h * head_dim;
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j <= p; j++) {
                    size_t slot = (size_t)block_table[(size_t)b * max_blocks + j / block_size] * block_size + j % block_size;
                    const float *k = k_cache + (slot * n_kv_heads + g) * head_dim;
                    double acc = 0.0;
                    for (int c = 0; c < head_dim; c++) acc += (double)qv[c] * k[c];
                    s[j] = acc * scale;
                    if (s[j] > mx) mx = s[j];
                }
                for (int j = 0; j <= p; j++) sum += (s[j] = exp(s[j] - mx));
                double *o = out + (size_t)t * H + (size_t)h * head_dim;
                for (int c = 0; c < head_dim; c++) o[c] = 0.0;
                for (int j = 0; j <= p; j++) {
                    size_t slot = (size_t)block_table[(size_t)b * max_blocks + j / block_size] * block_size + j % block_size;
                    const float *v = v_cache + (slot * n_kv_heads + g) * head_dim;
                    for (int c = 0; c < head_dim; c++) o[c] += s[j] / sum * v[c];
                }
            }
        }
    }
    free(s);
}
