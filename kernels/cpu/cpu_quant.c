/* kernels/cpu/cpu_quant.c - matmul_q and embed_q: float32 activations against
 * weight rows stored as the GGUF file has them (Q8_0, Q4_0, Q4_1, F16, F32).
 *
 * matmul_q dequantizes each 32-value block in registers (no fp32 copy of W)
 * into its exact weights (the values embed_q writes: d*q is exact in float,
 * so Q4_1's d*q + m rounds once, fused or not), and applies them to a tile of
 * up to MQ_MR rows of x, MQ_NR weight rows at a time: a weight block is
 * loaded and unpacked once per tile rather than once per token, and at T = 1
 * the NR rows' independent sums keep the FMA latency hidden.
 *
 * Batch invariance. out[t][n] must not depend on T, on which tile row t lands
 * in, or on the thread count. So every output element is computed by the same
 * sequence of operations whatever its tile (the micro-kernel is one
 * always-inline function instantiated per tile shape, and a (row, weight row)
 * pair only ever touches its own accumulators), work is split over N only,
 * and the per-element order is fixed:
 *   acc0 = acc1 = 0                               (vectors of 8 or 16 lanes)
 *   for each block b: acc0 = fma(w_b[0..15], x_b[0..15], acc0)
 *                     acc1 = fma(w_b[16..31], x_b[16..31], acc1)
 *                     (AVX2: two FMAs of 8 lanes into each, in value order)
 *   out = hsum(acc0 + acc1)                        (fixed tree)
 * F16/F32 rows: acc = fma(w, x, acc) over chunks of 8, hsum8, then the K % 8
 * tail added in order. Every operation is an explicit intrinsic; the file is
 * compiled without floating-point contraction (ISO C mode, and the pragma
 * below), so the compiler cannot fuse one copy of a product differently from
 * another.
 *
 * AVX-512F runs the block formats 16 lanes wide, and looks a Q4 block's
 * weights up with a permute from its 16 possible values; AVX2 converts the
 * levels and scales them. Machines without AVX2+FMA+F16C run a portable
 * scalar path. Each path has its own fixed order (batch-invariant, not
 * bit-identical to the others); the path is chosen once per process
 * (ops_cpu_isa), never by shape.
 *
 * embed_q writes the dequantized values exactly as gguf.h's formulas say, so
 * a table row is bit-identical to what the gguf package's dequantize gives
 * (tested on every tensor of SmolLM2).
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

#define MQ_BAND_BYTES (128 * 1024) /* rows of x kept in L2 while weight rows pass */

typedef struct {
    float *out;         /* (T, N) */
    const float *x;     /* (T, K) */
    const uint8_t *W;   /* N rows of row_bytes */
    ops_wtype_t wt;
    int T, K, N;
    size_t row_bytes;
    int rows_per_task;  /* weight rows (output columns) per pool task */
    int tb;             /* rows of x per band (a multiple of 6) */
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

/* ---- AVX2 + FMA + F16C and AVX-512F paths ---- */
#if MQ_X86

#define MQ_INLINE static inline __attribute__((always_inline))

MQ_AVX2 MQ_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

MQ_AVX512 MQ_INLINE float hsum16(__m512 v) {
    __m256 lo = _mm512_castps512_ps256(v);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return hsum8(_mm256_add_ps(lo, hi));
}

/* A block's scale d (and Q4_1's min m) from the halves at its start: one
 * 4-byte load and one conversion for both (every block is at least 18 bytes). */
MQ_AVX2 MQ_INLINE void scales(const uint8_t *blk, const ops_wtype_t wt, float *d, float *m) {
    uint32_t dm_bits;
    memcpy(&dm_bits, blk, sizeof dm_bits);
    __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dm_bits));
    *d = _mm_cvtss_f32(dm);
    if (wt == OPS_W_Q4_1) *m = _mm_cvtss_f32(_mm_movehdup_ps(dm));
}

/* AVX2: a block's 32 weights, dequantized exactly (d*q is exact in float, so
 * Q4_1's d*q + m rounds once, fused or not: the values embed_q writes), as
 * four vectors of 8 (values 0..7, 8..15, 16..23, 24..31). */
MQ_AVX2 MQ_INLINE void deq8(const uint8_t *blk, const ops_wtype_t wt, __m256 w[4]) {
    float d, m = 0.0f;
    scales(blk, wt, &d, &m);
    __m256 dv = _mm256_set1_ps(d), q[4];
    if (wt == OPS_W_Q8_0) {
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            q[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * i))));
    } else {
        __m128i raw = _mm_loadu_si128((const __m128i *)(blk + (wt == OPS_W_Q4_1 ? 4 : 2))), low4 = _mm_set1_epi8(15);
        __m128i lo = _mm_and_si128(raw, low4), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low4);
        if (wt == OPS_W_Q4_0) {
            lo = _mm_sub_epi8(lo, _mm_set1_epi8(8));
            hi = _mm_sub_epi8(hi, _mm_set1_epi8(8));
        }
        q[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)); /* levels 0..15 (or -8..7): signed widening is exact */
        q[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
        q[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
        q[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
    }
    if (wt == OPS_W_Q4_1) {
        __m256 mv = _mm256_set1_ps(m);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) w[i] = _mm256_fmadd_ps(dv, q[i], mv);
    } else {
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) w[i] = _mm256_mul_ps(dv, q[i]);
    }
}

/* AVX-512: the same 32 weights as two vectors of 16. Q4: the block's 16
 * possible weights d*i + m (i = 0..15) form one vector, and each nibble picks
 * its weight with one permute (vpermps reads the low 4 bits of an index, so
 * the byte itself indexes its low nibble, the byte >> 4 its high one). */
MQ_AVX512 MQ_INLINE void deq16(const uint8_t *blk, const ops_wtype_t wt, __m512 w[2]) {
    if (wt == OPS_W_Q8_0) {
        uint16_t h = read_u16(blk);
        __m512 d = _mm512_cvtph_ps(_mm256_set1_epi16((short)h));
        w[0] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2)))));
        w[1] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18)))));
        return;
    }
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512 table;
    if (wt == OPS_W_Q4_1) {
        uint32_t dm;
        memcpy(&dm, blk, sizeof dm);
        __m512 dmv = _mm512_cvtph_ps(_mm256_set1_epi32((int)dm)); /* d, m, d, m, ... */
        table = _mm512_fmadd_ps(_mm512_moveldup_ps(dmv), iota, _mm512_movehdup_ps(dmv));
    } else {
        __m512 d = _mm512_cvtph_ps(_mm256_set1_epi16((short)read_u16(blk)));
        table = _mm512_mul_ps(d, _mm512_sub_ps(iota, _mm512_set1_ps(8.0f)));
    }
    __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blk + (wt == OPS_W_Q4_1 ? 4 : 2))));
    w[0] = _mm512_permutexvar_ps(idx, table);
    w[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(idx, 4), table);
}

/* The block micro-kernel: weight rows n .. n+NR-1 against x rows t0 ..
 * t0+MR-1 (MR, NR constants at every call site, so the accumulators live in
 * registers). Each weight block is dequantized once and used for the MR
 * rows. Every (row, weight row) pair has two accumulators: the block's first
 * 16 values go to acc0, the last 16 to acc1, block after block; out =
 * hsum(acc0 + acc1). A pair only ever touches its own two accumulators, in
 * the same order whatever MR, NR, the tile or the thread: that is what makes
 * out[t] independent of the batch. Two chains per pair, and NR pairs at
 * once, keep the FMA latency hidden at T = 1. */
#define MQ_KERNEL_FN(NAME, ATTR, VEC, LANES, DEQ, SETZERO, LOADU, FMADD, ADD, HSUM)                                    \
    ATTR MQ_INLINE void NAME(const mq_job_t *j, const ops_wtype_t wt, int n, int t0, const int MR, const int NR) {      \
        const size_t bb = wt == OPS_W_Q8_0 ? 34 : wt == OPS_W_Q4_0 ? 18 : 20;                                         \
        const uint8_t *w[MQ_NR];                                                                                      \
        const float *xr[MQ_MR];                                                                                       \
        VEC acc[MQ_MR][MQ_NR][2];                                                                                     \
        _Pragma("GCC unroll 4") for (int c = 0; c < NR; c++) w[c] = j->W + (size_t)(n + c) * j->row_bytes;           \
        _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++) {                                                       \
            xr[r] = j->x + (size_t)(t0 + r) * j->K;                                                                  \
            _Pragma("GCC unroll 4") for (int c = 0; c < NR; c++) acc[r][c][0] = acc[r][c][1] = SETZERO();            \
        }                                                                                                             \
        const int nb = j->K / 32;                                                                                     \
        const uint8_t *pf = w[0] + (size_t)NR * j->row_bytes * MQ_PF_CHUNKS;                                         \
        const size_t pf_step = ((size_t)NR * j->row_bytes + (size_t)nb - 1) / (size_t)nb;                             \
        for (int b = 0; b < nb; b++) {                                                                                \
            if (MR <= 2) {                                                                                            \
                _mm_prefetch((const char *)pf + (size_t)b * pf_step, _MM_HINT_T0);                                    \
                _mm_prefetch((const char *)pf + (size_t)b * pf_step + 64, _MM_HINT_T0);                               \
            }                                                                                                         \
            _Pragma("GCC unroll 4") for (int c = 0; c < NR; c++) {                                                   \
                VEC wv[32 / LANES];                                                                                   \
                DEQ(w[c] + (size_t)b * bb, wt, wv);                                                                   \
                _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++) {                                               \
                    const float *xb = xr[r] + (size_t)b * 32;                                                        \
                    _Pragma("GCC unroll 4") for (int v = 0; v < 16 / LANES; v++)                                     \
                        acc[r][c][0] = FMADD(wv[v], LOADU(xb + v * LANES), acc[r][c][0]);                             \
                    _Pragma("GCC unroll 4") for (int v = 16 / LANES; v < 32 / LANES; v++)                            \
                        acc[r][c][1] = FMADD(wv[v], LOADU(xb + v * LANES), acc[r][c][1]);                             \
                }                                                                                                     \
            }                                                                                                         \
        }                                                                                                             \
        _Pragma("GCC unroll 6") for (int r = 0; r < MR; r++)                                                         \
            _Pragma("GCC unroll 4") for (int c = 0; c < NR; c++)                                                     \
                j->out[(size_t)(t0 + r) * j->N + n + c] = HSUM(ADD(acc[r][c][0], acc[r][c][1]));                     \
    }

#define MQ_MR 6 /* most rows of x in one micro-kernel call */
#define MQ_PF_CHUNKS 2 /* small T: prefetch the weight rows this many calls ahead */
#define MQ_NR 4 /* most weight rows in one micro-kernel call; tasks hold multiples of it */

MQ_KERNEL_FN(kern_blocks, MQ_AVX2, __m256, 8, deq8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_add_ps,
             hsum8)
MQ_KERNEL_FN(kern_blocks512, MQ_AVX512, __m512, 16, deq16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps,
             _mm512_add_ps, hsum16)

/* Weight rows n0..n1 against every row of x. Rows of x go in bands that stay
 * in L2 while the task's weight rows pass; within a band, MQ_NR weight rows
 * at a time (kept in L1) against tiles of the band's rows. A tile of mr rows
 * runs the kernel with the widest NR its registers hold (NR_OF(mr)), as many
 * times as it takes to cover the MQ_NR weight rows; fewer than MQ_NR weight
 * rows left run one at a time. MRMAX: the path's tallest tile. */
#define MQ_CASE(KERNEL, WT, MR, NR_OF)                                                                                 \
    case MR:                                                                                                           \
        for (int c = 0; c < MQ_NR; c += NR_OF(MR)) KERNEL(j, WT, n + c, t0, MR, NR_OF(MR));                          \
        break
#define MQ_CASE1(KERNEL, WT, MR)                                                                                       \
    case MR: KERNEL(j, WT, n, t0, MR, 1); break
#define MQ_BLOCK_ROWS_FN(ATTR, NAME, KERNEL, WT, MRMAX, NR_OF)                                                          \
    ATTR static void NAME(const mq_job_t *j, int n0, int n1) {                                                          \
        for (int b0 = 0; b0 < j->T; b0 += j->tb) {                                                                     \
            int b1 = b0 + j->tb < j->T ? b0 + j->tb : j->T;                                                            \
            int n = n0;                                                                                                \
            for (; n + MQ_NR <= n1; n += MQ_NR)                                                                        \
                for (int t0 = b0; t0 < b1; t0 += MRMAX) {                                                              \
                    switch (b1 - t0 < MRMAX ? b1 - t0 : MRMAX) {                                                       \
                        MQ_CASE(KERNEL, WT, 1, NR_OF); MQ_CASE(KERNEL, WT, 2, NR_OF); MQ_CASE(KERNEL, WT, 3, NR_OF);    \
                        MQ_CASE(KERNEL, WT, 4, NR_OF); MQ_CASE(KERNEL, WT, 5, NR_OF); MQ_CASE(KERNEL, WT, 6, NR_OF);    \
                    default: break;                                                                                    \
                    }                                                                                                  \
                }                                                                                                      \
            for (; n < n1; n++)                                                                                        \
                for (int t0 = b0; t0 < b1; t0 += MRMAX) {                                                              \
                    switch (b1 - t0 < MRMAX ? b1 - t0 : MRMAX) {                                                       \
                        MQ_CASE1(KERNEL, WT, 1); MQ_CASE1(KERNEL, WT, 2); MQ_CASE1(KERNEL, WT, 3);                      \
                        MQ_CASE1(KERNEL, WT, 4); MQ_CASE1(KERNEL, WT, 5); MQ_CASE1(KERNEL, WT, 6);                      \
                    default: break;                                                                                    \
                    }                                                                                                  \
                }                                                                                                      \
        }                                                                                                              \
    }

/* Register budgets: AVX2 has 16 vectors (2 MR NR accumulators + 4 weights),
 * AVX-512 32 (24 accumulators for 3 x 4, the x rows and a block's weights:
 * measured against 6 x 2, 5 x 2, 4 x 2 and 4 x 4, 3 x 4 ran T = 32 about 20%
 * faster than 6 x 2, whose x rows spilled). The cases above MRMAX are never
 * reached. */
#define MQ_NR_AVX2(mr) ((mr) == 1 ? 4 : (mr) == 2 ? 2 : 1)
#define MQ_NR_AVX512(mr) 4
MQ_BLOCK_ROWS_FN(MQ_AVX2, mq_rows_q8_0, kern_blocks, OPS_W_Q8_0, 4, MQ_NR_AVX2)
MQ_BLOCK_ROWS_FN(MQ_AVX2, mq_rows_q4_0, kern_blocks, OPS_W_Q4_0, 4, MQ_NR_AVX2)
MQ_BLOCK_ROWS_FN(MQ_AVX2, mq_rows_q4_1, kern_blocks, OPS_W_Q4_1, 4, MQ_NR_AVX2)
MQ_BLOCK_ROWS_FN(MQ_AVX512, mq_rows512_q8_0, kern_blocks512, OPS_W_Q8_0, 3, MQ_NR_AVX512)
MQ_BLOCK_ROWS_FN(MQ_AVX512, mq_rows512_q4_0, kern_blocks512, OPS_W_Q4_0, 3, MQ_NR_AVX512)
MQ_BLOCK_ROWS_FN(MQ_AVX512, mq_rows512_q4_1, kern_blocks512, OPS_W_Q4_1, 3, MQ_NR_AVX512)

/* ---- F16 / F32 rows (AVX2) ---- */

/* Eight F16 or F32 weights as floats. */
MQ_AVX2 MQ_INLINE __m256 dense8(const uint8_t *w, const ops_wtype_t wt, int k) {
    if (wt == OPS_W_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + (size_t)k * 2)));
    return _mm256_loadu_ps((const float *)(const void *)(w + (size_t)k * 4));
}

MQ_AVX2 MQ_INLINE float dense1(const uint8_t *w, const ops_wtype_t wt, int k) {
    if (wt == OPS_W_F16) return _cvtsh_ss(read_u16(w + (size_t)k * 2));
    float v;
    memcpy(&v, w + (size_t)k * 4, sizeof v);
    return v;
}

#define MQ_TILE 6 /* F16/F32: rows of x per weight-row pass */

/* Weight row n against x rows t0 .. t0+TR-1: acc = fma(w, x, acc) over
 * chunks of 8, hsum8, then the K % 8 tail in order (per row, whatever TR). */
MQ_AVX2 MQ_INLINE void tile_dense(const mq_job_t *j, const ops_wtype_t wt, int n, int t0, const int TR) {
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

#define MQ_DENSE_ROWS_FN(NAME, WT)                                                   \
    MQ_AVX2 static void NAME(const mq_job_t *j, int n0, int n1) {                    \
        for (int b0 = 0; b0 < j->T; b0 += j->tb) {                                   \
            int b1 = b0 + j->tb < j->T ? b0 + j->tb : j->T;                          \
            for (int n = n0; n < n1; n++) {                                          \
                int t0 = b0;                                                         \
                for (; t0 + MQ_TILE <= b1; t0 += MQ_TILE) tile_dense(j, WT, n, t0, 6); \
                switch (b1 - t0) {                                                   \
                case 5: tile_dense(j, WT, n, t0, 5); break;                          \
                case 4: tile_dense(j, WT, n, t0, 4); break;                          \
                case 3: tile_dense(j, WT, n, t0, 3); break;                          \
                case 2: tile_dense(j, WT, n, t0, 2); break;                          \
                case 1: tile_dense(j, WT, n, t0, 1); break;                          \
                default: break;                                                      \
                }                                                                    \
            }                                                                        \
        }                                                                            \
    }
MQ_DENSE_ROWS_FN(mq_rows_f16, OPS_W_F16)
MQ_DENSE_ROWS_FN(mq_rows_f32, OPS_W_F32)

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
    j.tb = (int)(MQ_BAND_BYTES / ((long)K * 4) / 6 * 6);
    if (j.tb < 6) j.tb = 6;
    /* Several tasks per thread, so a core slowed by another process does not
     * hold up the whole op; rows in multiples of 8 (of MQ_NR). */
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
