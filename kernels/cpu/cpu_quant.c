/* kernels/cpu/cpu_quant.c - matmul_q and embed_q: float32 activations against
 * weight rows stored as the GGUF file has them (Q8_0, Q4_0, Q4_1, F16, F32).
 *
 * matmul_q dequantizes each 32-value block in registers (no fp32 copy of W)
 * and applies it to a tile of up to MQ_TILE rows of x, so a weight block is
 * loaded and unpacked once per tile rather than once per token.
 *
 * Batch invariance. out[t][n] must not depend on T, on which tile row t lands
 * in, or on the thread count. So every output element is computed by the same
 * sequence of operations whatever its tile (the tile kernel is one
 * always-inline function instantiated per tile height, and a lane of the
 * tile only ever touches its own accumulator), work is split over N only, and
 * the per-element order is fixed (AVX2 path):
 *   acc(8 lanes) = 0
 *   for each block b: p = q0*x0; p = fma(q1,x1,p); p = fma(q2,x2,p); p = fma(q3,x3,p)
 *                     (qi, xi: the block's values i*8 .. i*8+7)
 *                     acc = fma(d_b, p, acc)
 *   Q4_1 only, after each group of 8 blocks g: acc = fma(m[g], sx[g], acc), m and
 *                     sx the 8 blocks' mins and block sums of x (zero past the row)
 *   out = hsum8(acc)  (fixed tree)
 * This is the factored form d * sum(q x) + m * sum(x): the block sums of x
 * are computed once per call and row of x (sx), shared by every weight row.
 * F16/F32 rows: acc = fma(w, x, acc) over chunks of 8, hsum8, then the K % 8
 * tail added in order. Every operation is an explicit intrinsic; the file is
 * compiled without floating-point contraction (ISO C mode, and the pragma
 * below), so the compiler cannot fuse one copy of a product differently from
 * another.
 *
 * CPUs with AVX-512F run the block formats 16 lanes wide (the same
 * structure: p = q0*x0 + q1*x1 over the block's two halves of 16, acc =
 * fma(d, p, acc), the mins in groups of 16 blocks, then the 16 lanes folded
 * to 8 and hsum8): half the instructions of the AVX2 kernel. Machines
 * without AVX2+FMA+F16C run a portable scalar path. Each path has its own
 * fixed order (batch-invariant, not bit-identical to the others); the path is
 * chosen once per process (ops_cpu_isa), never by shape.
 *
 * embed_q writes the dequantized values exactly as gguf.h's formulas say, so
 * a table row is bit-identical to what the gguf package's dequantize gives
 * (tested on every tensor of SmolLM2). d*q is exact in float (an 11-bit half
 * times a level of at most 8 bits), so Q4_1's d*q + m rounds once whether or
 * not a compiler fuses it.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#include <stdlib.h>
#include <string.h>
#include "kernels/cpu/cpu_internal.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MQ_X86 1
#define MQ_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MQ_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#else
#define MQ_X86 0
#endif

#define MQ_TILE 6  /* rows of x per weight-block load */
#define MQ_GROUP 8 /* Q4_1: blocks per m * sum(x) step (one vector of mins) */
#define MQ_GROUP512 16 /* the same, AVX-512 */
#define MQ_BAND_BYTES (16 * 1024) /* rows of x kept in L1 while weight rows pass (measured: 16-64 KB) */

typedef struct {
    float *out;         /* (T, N) */
    const float *x;     /* (T, K) */
    const uint8_t *W;   /* N rows of row_bytes */
    ops_wtype_t wt;
    int T, K, N;
    size_t row_bytes;
    const float *sx;    /* Q4_1: (T, sx_ld) block sums of x, zero past K/32 */
    int sx_ld;          /* multiple of MQ_GROUP512 (so of MQ_GROUP) */
    int rows_per_task;  /* weight rows (output columns) per pool task */
    int tb;             /* rows of x per band (a multiple of MQ_TILE) */
} mq_job_t;

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

static int is_block_type(ops_wtype_t wt) { return wt == OPS_W_Q8_0 || wt == OPS_W_Q4_0 || wt == OPS_W_Q4_1; }

/* Bytes of one row of K values, 0 for an unknown type. */
static size_t row_bytes_of(ops_wtype_t wt, int K) {
    switch (wt) {
    case OPS_W_F32: return (size_t)K * 4;
    case OPS_W_F16: return (size_t)K * 2;
    case OPS_W_Q8_0: return (size_t)(K / 32) * 34;
    case OPS_W_Q4_0: return (size_t)(K / 32) * 18;
    case OPS_W_Q4_1: return (size_t)(K / 32) * 20;
    }
    return 0;
}

static const char *wtype_name(ops_wtype_t wt) {
    switch (wt) {
    case OPS_W_F32: return "F32";
    case OPS_W_F16: return "F16";
    case OPS_W_Q8_0: return "Q8_0";
    case OPS_W_Q4_0: return "Q4_0";
    case OPS_W_Q4_1: return "Q4_1";
    }
    return "unknown";
}

static uint16_t read_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ---- portable path ---- */

/* One block's 32 integer levels as floats (exact), its d and m (0 unless Q4_1). */
static void block_levels(const uint8_t *blk, ops_wtype_t wt, float q[32], float *d, float *m) {
    *d = ops_cpu_half_to_float(read_u16(blk));
    *m = 0.0f;
    if (wt == OPS_W_Q8_0) {
        for (int i = 0; i < 32; i++) q[i] = (float)(int8_t)blk[2 + i];
    } else if (wt == OPS_W_Q4_0) {
        for (int i = 0; i < 16; i++) {
            q[i] = (float)((blk[2 + i] & 15) - 8);
            q[i + 16] = (float)((blk[2 + i] >> 4) - 8);
        }
    } else {
        *m = ops_cpu_half_to_float(read_u16(blk + 2));
        for (int i = 0; i < 16; i++) {
            q[i] = (float)(blk[4 + i] & 15);
            q[i + 16] = (float)(blk[4 + i] >> 4);
        }
    }
}

static float dot_row_scalar(const mq_job_t *j, const uint8_t *w, const float *x) {
    int K = j->K;
    if (j->wt == OPS_W_F32 || j->wt == OPS_W_F16) {
        float acc = 0.0f;
        for (int k = 0; k < K; k++) {
            float wk;
            if (j->wt == OPS_W_F32) memcpy(&wk, w + (size_t)k * 4, sizeof wk);
            else wk = ops_cpu_half_to_float(read_u16(w + (size_t)k * 2));
            acc += wk * x[k];
        }
        return acc;
    }
    size_t bb = row_bytes_of(j->wt, 32);
    float acc = 0.0f;
    for (int b = 0; b < K / 32; b++) {
        float q[32], d, m, p = 0.0f, s = 0.0f;
        block_levels(w + (size_t)b * bb, j->wt, q, &d, &m);
        const float *xb = x + (size_t)b * 32;
        for (int i = 0; i < 32; i++) {
            p += q[i] * xb[i];
            s += xb[i];
        }
        acc += d * p;
        if (j->wt == OPS_W_Q4_1) acc += m * s;
    }
    return acc;
}

static void mq_rows_scalar(const mq_job_t *j, int n0, int n1) {
    for (int n = n0; n < n1; n++) {
        const uint8_t *w = j->W + (size_t)n * j->row_bytes;
        for (int t = 0; t < j->T; t++) j->out[(size_t)t * j->N + n] = dot_row_scalar(j, w, j->x + (size_t)t * j->K);
    }
}

/* ---- AVX2 + FMA + F16C path ---- */
#if MQ_X86

MQ_AVX2 static inline __attribute__((always_inline)) float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* A block's scale d (and Q4_1's min m) from the halves at its start: one
 * 4-byte load and one conversion for both (every block is at least 18 bytes). */
MQ_AVX2 static inline __attribute__((always_inline)) void scales(const uint8_t *blk, const ops_wtype_t wt, float *d,
                                                                  float *m) {
    uint32_t dm_bits;
    memcpy(&dm_bits, blk, sizeof dm_bits);
    __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dm_bits));
    *d = _mm_cvtss_f32(dm);
    if (wt == OPS_W_Q4_1) *m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
}

/* A Q4 block's 16 low nibbles (values 0..15) and 16 high ones (16..31) as
 * bytes; minus 8 (signed) for Q4_0. */
MQ_AVX2 static inline __attribute__((always_inline)) void nibbles(const uint8_t *blk, const ops_wtype_t wt, __m128i *lo,
                                                                   __m128i *hi) {
    __m128i raw = _mm_loadu_si128((const __m128i *)(blk + (wt == OPS_W_Q4_1 ? 4 : 2))), low4 = _mm_set1_epi8(15);
    *lo = _mm_and_si128(raw, low4);
    *hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low4);
    if (wt == OPS_W_Q4_0) {
        *lo = _mm_sub_epi8(*lo, _mm_set1_epi8(8));
        *hi = _mm_sub_epi8(*hi, _mm_set1_epi8(8));
    }
}

/* A block's 32 levels as four vectors of 8 floats (exact), its d and m. */
MQ_AVX2 static inline __attribute__((always_inline)) void levels8(const uint8_t *blk, const ops_wtype_t wt,
                                                                   __m256 q[4], float *d, float *m) {
    scales(blk, wt, d, m);
    if (wt == OPS_W_Q8_0) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            __m128i b8 = _mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * i));
            q[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b8));
        }
        return;
    }
    __m128i lo, hi;
    nibbles(blk, wt, &lo, &hi);
    if (wt == OPS_W_Q4_0) {
        q[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
        q[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
        q[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
        q[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
        return;
    }
    q[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    q[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    q[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    q[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}

/* Eight F16 or F32 weights as floats. */
MQ_AVX2 static inline __attribute__((always_inline)) __m256 dense8(const uint8_t *w, const ops_wtype_t wt, int k) {
    if (wt == OPS_W_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + (size_t)k * 2)));
    return _mm256_loadu_ps((const float *)(const void *)(w + (size_t)k * 4));
}

MQ_AVX2 static inline __attribute__((always_inline)) float dense1(const uint8_t *w, const ops_wtype_t wt, int k) {
    if (wt == OPS_W_F16) return _cvtsh_ss(read_u16(w + (size_t)k * 2));
    float v;
    memcpy(&v, w + (size_t)k * 4, sizeof v);
    return v;
}

MQ_AVX2 static inline __attribute__((always_inline)) void tile_dense(const mq_job_t *j, const ops_wtype_t wt, int n,
                                                                      int t0, const int TR) {
    const uint8_t *w = j->W + (size_t)n * j->row_bytes;
    const float *xr[MQ_TILE];
    __m256 acc[MQ_TILE];
#pragma GCC unroll 6
    for (int i = 0; i < TR; i++) {
        xr[i] = j->x + (size_t)(t0 + i) * j->K;
        acc[i] = _mm256_setzero_ps();
    }
    int K8 = j->K / 8 * 8;
    for (int k = 0; k < K8; k += 8) {
        __m256 wv = dense8(w, wt, k);
#pragma GCC unroll 6
        for (int i = 0; i < TR; i++) acc[i] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr[i] + k), acc[i]);
    }
#pragma GCC unroll 6
    for (int i = 0; i < TR; i++) {
        float s = hsum8(acc[i]);
        for (int k = K8; k < j->K; k++) s += dense1(w, wt, k) * xr[i][k];
        j->out[(size_t)(t0 + i) * j->N + n] = s;
    }
}

/* Weight rows n0..n1 against every row of x, in tiles of MQ_TILE rows of x
 * (the last tile shorter: the same kernel at a smaller constant TR). Rows of x
 * go in bands of tb (a multiple of MQ_TILE) that stay in L1 while the task's
 * weight rows stream past them. */
#define MQ_ROWS_FN(ATTR, NAME, KERNEL, WT)                                          \
    ATTR static void NAME(const mq_job_t *j, int n0, int n1) {                      \
        for (int b0 = 0; b0 < j->T; b0 += j->tb) {                                  \
            int b1 = b0 + j->tb < j->T ? b0 + j->tb : j->T;                         \
            for (int n = n0; n < n1; n++) {                                         \
                int t0 = b0;                                                        \
                for (; t0 + MQ_TILE <= b1; t0 += MQ_TILE) KERNEL(j, WT, n, t0, 6);  \
                switch (b1 - t0) {                                                  \
                case 5: KERNEL(j, WT, n, t0, 5); break;                             \
                case 4: KERNEL(j, WT, n, t0, 4); break;                             \
                case 3: KERNEL(j, WT, n, t0, 3); break;                             \
                case 2: KERNEL(j, WT, n, t0, 2); break;                             \
                case 1: KERNEL(j, WT, n, t0, 1); break;                             \
                default: break;                                                     \
                }                                                                   \
            }                                                                       \
        }                                                                           \
    }

/* ---- AVX-512F: the block formats 16 lanes wide ---- */

/* A block's 32 levels as two vectors of 16 floats (values 0..15, 16..31). */
MQ_AVX512 static inline __attribute__((always_inline)) void levels16(const uint8_t *blk, const ops_wtype_t wt,
                                                                      __m512 q[2], float *d, float *m) {
    scales(blk, wt, d, m);
    if (wt == OPS_W_Q8_0) {
        q[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2))));
        q[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18))));
        return;
    }
    __m128i lo, hi;
    nibbles(blk, wt, &lo, &hi);
    if (wt == OPS_W_Q4_0) {
        q[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo));
        q[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi));
        return;
    }
    q[0] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo));
    q[1] = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
}

MQ_AVX512 static inline __attribute__((always_inline)) float hsum16(__m512 v) {
    __m256 lo = _mm512_castps512_ps256(v);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The micro-kernel: weight row n against x rows t0 .. t0+TR-1 (TR <= MQ_TILE,
 * a constant at every call site). Lane i of the tile touches only acc[i], with
 * the same operations whatever TR is: that is what makes out[t] independent of
 * where t falls in the batch. One template for both vector widths (LANES lanes,
 * 32/LANES vectors a block, the mins in groups of GROUP blocks). */
#define MQ_TILE_BLOCKS_FN(NAME, ATTR, VEC, LANES, GROUP, LEVELS, SETZERO, SET1, LOADU, MUL, FMADD, HSUM)                 \
    ATTR static inline __attribute__((always_inline)) void NAME(const mq_job_t *j, const ops_wtype_t wt, int n,       \
                                                                 int t0, const int TR) {                              \
        const uint8_t *w = j->W + (size_t)n * j->row_bytes;                                                          \
        const size_t bb = wt == OPS_W_Q8_0 ? 34 : wt == OPS_W_Q4_0 ? 18 : 20;                                        \
        const float *xr[MQ_TILE];                                                                                     \
        VEC acc[MQ_TILE];                                                                                             \
        _Pragma("GCC unroll 6") for (int i = 0; i < TR; i++) {                                                       \
            xr[i] = j->x + (size_t)(t0 + i) * j->K;                                                                  \
            acc[i] = SETZERO();                                                                                       \
        }                                                                                                             \
        int nb = j->K / 32;                                                                                           \
        for (int g0 = 0; g0 < nb; g0 += GROUP) {                                                                     \
            int g1 = g0 + GROUP < nb ? g0 + GROUP : nb;                                                               \
            float mins[GROUP] = {0};                                                                                  \
            for (int b = g0; b < g1; b++) {                                                                           \
                VEC q[32 / LANES];                                                                                        \
                float d, m = 0.0f;                                                                                    \
                LEVELS(w + (size_t)b * bb, wt, q, &d, &m);                                                            \
                mins[b - g0] = m;                                                                                     \
                VEC dv = SET1(d);                                                                                     \
                _Pragma("GCC unroll 6") for (int i = 0; i < TR; i++) {                                               \
                    const float *xb = xr[i] + (size_t)b * 32;                                                        \
                    VEC p = MUL(q[0], LOADU(xb));                                                                     \
                    _Pragma("GCC unroll 4") for (int v = 1; v < 32 / LANES; v++) p = FMADD(q[v], LOADU(xb + v * LANES), p);  \
                    acc[i] = FMADD(dv, p, acc[i]);                                                                    \
                }                                                                                                     \
            }                                                                                                         \
            if (wt == OPS_W_Q4_1) {                                                                                   \
                VEC mv = LOADU(mins);                                                                                 \
                _Pragma("GCC unroll 6") for (int i = 0; i < TR; i++) acc[i] =                                        \
                    FMADD(mv, LOADU(j->sx + (size_t)(t0 + i) * j->sx_ld + g0), acc[i]);                              \
            }                                                                                                         \
        }                                                                                                             \
        _Pragma("GCC unroll 6") for (int i = 0; i < TR; i++) j->out[(size_t)(t0 + i) * j->N + n] = HSUM(acc[i]);     \
    }
MQ_TILE_BLOCKS_FN(tile_blocks, MQ_AVX2, __m256, 8, MQ_GROUP, levels8, _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps,
                  _mm256_mul_ps, _mm256_fmadd_ps, hsum8)
MQ_TILE_BLOCKS_FN(tile_blocks512, MQ_AVX512, __m512, 16, MQ_GROUP512, levels16, _mm512_setzero_ps, _mm512_set1_ps,
                  _mm512_loadu_ps, _mm512_mul_ps, _mm512_fmadd_ps, hsum16)

MQ_ROWS_FN(MQ_AVX2, mq_rows_q8_0, tile_blocks, OPS_W_Q8_0)
MQ_ROWS_FN(MQ_AVX2, mq_rows_q4_0, tile_blocks, OPS_W_Q4_0)
MQ_ROWS_FN(MQ_AVX2, mq_rows_q4_1, tile_blocks, OPS_W_Q4_1)
MQ_ROWS_FN(MQ_AVX2, mq_rows_f16, tile_dense, OPS_W_F16)
MQ_ROWS_FN(MQ_AVX2, mq_rows_f32, tile_dense, OPS_W_F32)
MQ_ROWS_FN(MQ_AVX512, mq_rows512_q8_0, tile_blocks512, OPS_W_Q8_0)
MQ_ROWS_FN(MQ_AVX512, mq_rows512_q4_0, tile_blocks512, OPS_W_Q4_0)
MQ_ROWS_FN(MQ_AVX512, mq_rows512_q4_1, tile_blocks512, OPS_W_Q4_1)

/* sx[t][g] = sum of x[t][32g .. 32g+31] (four vector adds, then hsum8), zero
 * for g in [K/32, sx_ld). */
MQ_AVX2 static void block_sums_avx2(float *sx, int sx_ld, const float *x, int T, int K) {
    int nb = K / 32;
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * K;
        float *s = sx + (size_t)t * sx_ld;
        for (int b = 0; b < nb; b++) {
            const float *xb = xr + (size_t)b * 32;
            __m256 v = _mm256_add_ps(_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8));
            v = _mm256_add_ps(v, _mm256_loadu_ps(xb + 16));
            v = _mm256_add_ps(v, _mm256_loadu_ps(xb + 24));
            s[b] = hsum8(v);
        }
        for (int b = nb; b < sx_ld; b++) s[b] = 0.0f;
    }
}

#endif

static void mq_task(void *ctx, int task, int worker) {
    (void)worker;
    const mq_job_t *j = ctx;
    int n0 = task * j->rows_per_task;
    int n1 = n0 + j->rows_per_task < j->N ? n0 + j->rows_per_task : j->N;
#if MQ_X86
    if (ops_cpu_isa() == OPS_CPU_AVX512) {
        switch (j->wt) {
        case OPS_W_Q8_0: mq_rows512_q8_0(j, n0, n1); return;
        case OPS_W_Q4_0: mq_rows512_q4_0(j, n0, n1); return;
        case OPS_W_Q4_1: mq_rows512_q4_1(j, n0, n1); return;
        default: break; /* F16/F32: the AVX2 kernel */
        }
    }
    if (ops_cpu_has_avx2()) {
        switch (j->wt) {
        case OPS_W_Q8_0: mq_rows_q8_0(j, n0, n1); return;
        case OPS_W_Q4_0: mq_rows_q4_0(j, n0, n1); return;
        case OPS_W_Q4_1: mq_rows_q4_1(j, n0, n1); return;
        case OPS_W_F16: mq_rows_f16(j, n0, n1); return;
        case OPS_W_F32: mq_rows_f32(j, n0, n1); return;
        }
    }
#endif
    mq_rows_scalar(j, n0, n1);
}

int ops_cpu_matmul_q(ops_t *ops, float *out, const float *x, const void *W, ops_wtype_t wtype, int T, int K, int N) {
    size_t rb = row_bytes_of(wtype, K);
    if (rb == 0 && K > 0) return ops_cpu_fail(ops, OPS_EINVAL, "matmul_q: unknown weight type %d", (int)wtype);
    if (T < 0 || K <= 0 || N <= 0)
        return ops_cpu_fail(ops, OPS_EINVAL, "matmul_q: bad shape T=%d K=%d N=%d (T >= 0, K > 0, N > 0)", T, K, N);
    if (is_block_type(wtype) && K % 32)
        return ops_cpu_fail(ops, OPS_EINVAL, "matmul_q: K=%d is not a multiple of 32 (%s blocks)", K,
                            wtype_name(wtype));
    if (T == 0) return OPS_OK;
    if (!out || !x || !W) return ops_cpu_fail(ops, OPS_EINVAL, "matmul_q: NULL buffer");
    if (out == x) return ops_cpu_fail(ops, OPS_EINVAL, "matmul_q: out must not alias x");

    ops_cpu_impl_t *impl = ops->impl;
    mq_job_t j = {.out = out, .x = x, .W = W, .wt = wtype, .T = T, .K = K, .N = N, .row_bytes = rb};
#if MQ_X86
    if (wtype == OPS_W_Q4_1 && ops_cpu_has_avx2()) {
        j.sx_ld = ceil_div(K / 32, MQ_GROUP512) * MQ_GROUP512; /* serves both widths */
        int rc = ops_cpu_ensure_shared(ops, "matmul_q", (size_t)T * j.sx_ld);
        if (rc) return rc;
        block_sums_avx2(impl->shared, j.sx_ld, x, T, K);
        j.sx = impl->shared;
    }
#endif
    j.tb = (int)(MQ_BAND_BYTES / ((long)K * 4) / MQ_TILE * MQ_TILE);
    if (j.tb < MQ_TILE) j.tb = MQ_TILE;
    /* Several tasks per thread, so a core slowed by another process does not
     * hold up the whole op; rows in multiples of 8. */
    int tasks = impl->threads > 1 ? 4 * impl->threads : 1;
    j.rows_per_task = ceil_div(ceil_div(N, tasks), 8) * 8;
    ops_cpu_threadpool_run(impl->pool, mq_task, &j, ceil_div(N, j.rows_per_task));
    return OPS_OK;
}

/* ---- embed_q ---- */

/* One row of H values dequantized exactly as gguf.h's formulas (no fused
 * multiply-add: Q4_1 is d*q rounded, then + m rounded). */
static void dequant_row(float *out, const uint8_t *row, ops_wtype_t wt, int H) {
    if (wt == OPS_W_F32) {
        memcpy(out, row, (size_t)H * sizeof(float));
        return;
    }
    if (wt == OPS_W_F16) {
        for (int k = 0; k < H; k++) out[k] = ops_cpu_half_to_float(read_u16(row + (size_t)k * 2));
        return;
    }
    size_t bb = row_bytes_of(wt, 32);
    for (int b = 0; b < H / 32; b++) {
        float q[32], d, m;
        block_levels(row + (size_t)b * bb, wt, q, &d, &m);
        float *o = out + (size_t)b * 32;
        if (wt == OPS_W_Q4_1) {
            for (int i = 0; i < 32; i++) {
                float dq = d * q[i];
                o[i] = dq + m;
            }
        } else {
            for (int i = 0; i < 32; i++) o[i] = d * q[i];
        }
    }
}

int ops_cpu_embed_q(ops_t *ops, float *out, const int32_t *ids, const void *table, ops_wtype_t wtype, int T, int H) {
    size_t rb = row_bytes_of(wtype, H);
    if (rb == 0 && H > 0) return ops_cpu_fail(ops, OPS_EINVAL, "embed_q: unknown weight type %d", (int)wtype);
    if (T < 0 || H <= 0) return ops_cpu_fail(ops, OPS_EINVAL, "embed_q: bad shape T=%d H=%d", T, H);
    if (is_block_type(wtype) && H % 32)
        return ops_cpu_fail(ops, OPS_EINVAL, "embed_q: H=%d is not a multiple of 32 (%s blocks)", H,
                            wtype_name(wtype));
    if (T == 0) return OPS_OK;
    if (!out || !ids || !table) return ops_cpu_fail(ops, OPS_EINVAL, "embed_q: NULL buffer");
    for (int t = 0; t < T; t++)
        if (ids[t] < 0) return ops_cpu_fail(ops, OPS_EINVAL, "embed_q: ids[%d] = %d is negative", t, ids[t]);
    for (int t = 0; t < T; t++)
        dequant_row(out + (size_t)t * H, (const uint8_t *)table + (size_t)ids[t] * rb, wtype, H);
    return OPS_OK;
}
