/* kernels/cpu/cpu_gemm.c - out(rows,cols) = in(rows,K) @ W(cols,K)^T, our own
 * kernel for the CPU backend's matmul, in place of OpenBLAS sgemm.
 *
 * Why not sgemm: OpenBLAS packs both operands into its panel layout on every
 * call and has no pack-once API. At the engine's token counts (a sentence is
 * ~50 tokens) packing the weight matrix cost about as much as the arithmetic
 * (perf: 43% sgemm kernel, 32% packing at batch 1).
 *
 * Why no packing at all: both operands are already K-contiguous (rows of in,
 * rows of W as in HF Linear), so the kernel works on dot products. A block of
 * MR rows of in and NR rows of W keeps MR*NR vector accumulators; each step
 * of k loads MR + NR vectors and issues MR*NR FMAs, straight from the
 * uploaded weights. Each accumulator is folded to its sum once per output.
 * W's upload stays a plain copy, so ops.h's layout contract is unchanged.
 *
 * Summation order: out[r][c] is, lane by lane, the sum over k in steps of
 * the vector width (the K tail as a masked step of the same lanes), then a
 * fixed fold of the lanes. It depends only on K and the instruction set, not
 * on rows, cols, the block an element falls in or the thread split; so a
 * sentence gets the same bits alone or in any batch.
 *
 * Paths, picked once at first use by ops_cpu_isa (the backend's one feature
 * probe, capped by $SLUICE_CPU_ISA): AVX-512F+DQ (MR 6, NR 4 of 16 lanes),
 * AVX2+FMA (MR 3, NR 4 of 8 lanes), else portable C of the same structure
 * (8 lanes).
 */
#include <stddef.h>
#include <string.h>
#include "kernels/cpu/cpu_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GEMM_X86 1
#else
#define GEMM_X86 0
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Columns of W swept per pass over a row block: kept to about 192 KB of W so
 * it stays in L2 while every MR-row block of in streams past it. */
static int gemm_col_block(int K, int nr) {
    int cb = (int)((192u * 1024u) / ((unsigned)K * sizeof(float)));
    cb = cb / nr * nr;
    return cb < nr ? nr : cb;
}

/* Rows of in per chunk: about 256 KB, so a chunk stays in L2 while every
 * column block of W passes over it, and W (a few MB, in L3) is what is
 * re-read per chunk, not in (tens of MB at large batches, from memory).
 * A multiple of every path's MR (6, 3, 2), so only the last chunk has edges. */
static int gemm_row_block(int K) {
    int rb = (int)((256u * 1024u) / ((unsigned)K * sizeof(float)));
    rb = rb / 6 * 6;
    return rb < 6 ? 6 : rb;
}

/* ---------------- portable C ---------------- */

#define C_LANES 8
#define C_MR 2
#define C_NR 4

ALWAYS_INLINE float c_fold(const float acc[C_LANES]) {
    float a0 = acc[0] + acc[4], a1 = acc[1] + acc[5], a2 = acc[2] + acc[6], a3 = acc[3] + acc[7];
    return (a0 + a2) + (a1 + a3);
}

static void c_block(float *out, int ldo, const float *in, int lda, const float *W, int ldw, int mr, int nr, int K) {
    float acc[C_MR][C_NR][C_LANES];
    memset(acc, 0, sizeof acc);
    for (int k = 0; k < K; k += C_LANES) {
        int n = K - k < C_LANES ? K - k : C_LANES;
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++)
                for (int l = 0; l < n; l++)
                    acc[i][j][l] += in[(size_t)i * lda + k + l] * W[(size_t)j * ldw + k + l];
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) out[(size_t)i * ldo + j] = c_fold(acc[i][j]);
}

static void gemm_c(float *out, int ldo, const float *in, int lda, const float *W, int ldw, int rows, int cols, int K) {
    int cb = gemm_col_block(K, C_NR);
    for (int c0 = 0; c0 < cols; c0 += cb) {
        int c1 = cols - c0 < cb ? cols : c0 + cb;
        for (int r = 0; r < rows; r += C_MR) {
            int mr = rows - r < C_MR ? rows - r : C_MR;
            for (int c = c0; c < c1; c += C_NR) {
                int nr = c1 - c < C_NR ? c1 - c : C_NR;
                c_block(out + (size_t)r * ldo + c, ldo, in + (size_t)r * lda, lda, W + (size_t)c * ldw, ldw, mr, nr,
                        K);
            }
        }
    }
}

#if GEMM_X86
/* ---------------- AVX2+FMA and AVX-512F: one template ---------------- */

/* Four 8-lane accumulators to their four sums, lanes folded in a fixed tree. */
__attribute__((target("avx2,fma"))) ALWAYS_INLINE __m128 a2_fold4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 b4 = _mm_add_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps(b, 1));
    __m128 c4 = _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));
    __m128 d4 = _mm_add_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps(d, 1));
    return _mm_hadd_ps(_mm_hadd_ps(a4, b4), _mm_hadd_ps(c4, d4));
}

/* Four 16-lane accumulators: halves added, then the 8-lane tree above. */
__attribute__((target("avx512f,avx512dq,avx2,fma"))) ALWAYS_INLINE __m128 a5_fold4(__m512 a, __m512 b, __m512 c,
                                                                                  __m512 d) {
    return a2_fold4(_mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1)),
                    _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1)),
                    _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1)),
                    _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1)));
}

/* The K tail's masks: the first `left` lanes (0 < left < lanes). */
__attribute__((target("avx2,fma"))) ALWAYS_INLINE __m256i a2_mask(int left) {
    static const int32_t ramp[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(ramp + 8 - left));
}
#define A5_MASK(left) ((__mmask16)((1u << (left)) - 1u))
#define A2_MASKLOAD(m, p) _mm256_maskload_ps((p), (m))
#define A5_MASKLOAD(m, p) _mm512_maskz_loadu_ps((m), (p))

/* GEMM_PATH(P, TARGET, MR, NR, LANES, VEC, MASK_T, ZERO, LOAD, MASK, MASKLOAD, FMA, FOLD4) defines
 *   P##_block: one MR x NR block of outputs; mr, nr are constants at each
 *     call site, so the accumulators live in registers. Missing rows or
 *     columns are not loaded; their accumulators stay zero and unused. The W
 *     rows are held in registers while the MR rows of in stream past them.
 *   P##_edge: every (mr, nr) below the full block, each with constant bounds.
 *   gemm_##P: the driver: W column blocks that fit L2, MR-row blocks of in. */
#define GEMM_PATH(P, TARGET, MR, NR, LANES, VEC, MASK_T, ZERO, LOAD, MASK, MASKLOAD, FMA, FOLD4)                     \
    __attribute__((target(TARGET))) ALWAYS_INLINE void P##_block(float *out, int ldo, const float *in, int lda,      \
                                                                 const float *W, int ldw, int mr, int nr, int K) {   \
        VEC acc[MR][NR];                                                                                              \
        _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                                          \
            _Pragma("GCC unroll 8") for (int j = 0; j < NR; j++) acc[i][j] = ZERO();                                  \
        int k = 0;                                                                                                    \
        for (; k + LANES <= K; k += LANES) {                                                                          \
            VEC w[NR];                                                                                                \
            _Pragma("GCC unroll 8") for (int j = 0; j < nr; j++) w[j] = LOAD(W + (size_t)j * ldw + k);                \
            _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++) {                                                    \
                VEC x = LOAD(in + (size_t)i * lda + k);                                                               \
                _Pragma("GCC unroll 8") for (int j = 0; j < nr; j++) acc[i][j] = FMA(x, w[j], acc[i][j]);             \
            }                                                                                                         \
        }                                                                                                             \
        if (k < K) {                                                                                                  \
            MASK_T m = MASK(K - k);                                                                                   \
            VEC w[NR];                                                                                                \
            _Pragma("GCC unroll 8") for (int j = 0; j < nr; j++) w[j] = MASKLOAD(m, W + (size_t)j * ldw + k);         \
            _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++) {                                                    \
                VEC x = MASKLOAD(m, in + (size_t)i * lda + k);                                                        \
                _Pragma("GCC unroll 8") for (int j = 0; j < nr; j++) acc[i][j] = FMA(x, w[j], acc[i][j]);             \
            }                                                                                                         \
        }                                                                                                             \
        _Pragma("GCC unroll 8") for (int i = 0; i < mr; i++) {                                                        \
            __m128 s = FOLD4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);                                             \
            float *o = out + (size_t)i * ldo;                                                                         \
            if (nr == 4) {                                                                                            \
                _mm_storeu_ps(o, s);                                                                                  \
            } else {                                                                                                  \
                float t[4];                                                                                           \
                _mm_storeu_ps(t, s);                                                                                  \
                for (int j = 0; j < nr; j++) o[j] = t[j];                                                             \
            }                                                                                                         \
        }                                                                                                             \
    }                                                                                                                 \
    __attribute__((target(TARGET))) static void P##_edge(float *out, int ldo, const float *in, int lda,              \
                                                         const float *W, int ldw, int mr, int nr, int K) {            \
        switch (mr * 8 + nr) {                                                                                        \
            GEMM_CASE(P, MR, 1, 1); GEMM_CASE(P, MR, 1, 2); GEMM_CASE(P, MR, 1, 3); GEMM_CASE(P, MR, 1, 4);                           \
            GEMM_CASE(P, MR, 2, 1); GEMM_CASE(P, MR, 2, 2); GEMM_CASE(P, MR, 2, 3); GEMM_CASE(P, MR, 2, 4);                           \
            GEMM_CASE(P, MR, 3, 1); GEMM_CASE(P, MR, 3, 2); GEMM_CASE(P, MR, 3, 3); GEMM_CASE(P, MR, 3, 4);                           \
            GEMM_CASE(P, MR, 4, 1); GEMM_CASE(P, MR, 4, 2); GEMM_CASE(P, MR, 4, 3); GEMM_CASE(P, MR, 4, 4);                           \
            GEMM_CASE(P, MR, 5, 1); GEMM_CASE(P, MR, 5, 2); GEMM_CASE(P, MR, 5, 3); GEMM_CASE(P, MR, 5, 4);                           \
            GEMM_CASE(P, MR, 6, 1); GEMM_CASE(P, MR, 6, 2); GEMM_CASE(P, MR, 6, 3);                                               \
            default: break;                                                                                           \
        }                                                                                                             \
    }                                                                                                                 \
    __attribute__((target(TARGET))) static void gemm_##P(float *out, int ldo, const float *in, int lda,              \
                                                         const float *W, int ldw, int rows, int cols, int K) {        \
        int cb = gemm_col_block(K, NR);                                                                               \
        for (int c0 = 0; c0 < cols; c0 += cb) {                                                                       \
            int c1 = cols - c0 < cb ? cols : c0 + cb;                                                                 \
            for (int r = 0; r < rows; r += MR) {                                                                      \
                int mr = rows - r < MR ? rows - r : MR;                                                               \
                const float *a = in + (size_t)r * lda;                                                                \
                float *o = out + (size_t)r * ldo;                                                                     \
                int c = c0;                                                                                           \
                if (mr == MR)                                                                                         \
                    for (; c + NR <= c1; c += NR) P##_block(o + c, ldo, a, lda, W + (size_t)c * ldw, ldw, MR, NR, K); \
                for (; c < c1; c += NR) {                                                                             \
                    int nr = c1 - c < NR ? c1 - c : NR;                                                               \
                    P##_edge(o + c, ldo, a, lda, W + (size_t)c * ldw, ldw, mr, nr, K);                                \
                }                                                                                                     \
            }                                                                                                         \
        }                                                                                                             \
    }

/* Cases above the path's MR are never reached (mr <= MR); the clamp keeps
 * their unreachable code in bounds. */
#define GEMM_CASE(P, MR, M, N)                                                \
    case (M) * 8 + (N):                                                       \
        P##_block(out, ldo, in, lda, W, ldw, (M) < (MR) ? (M) : (MR), N, K); \
        break

/* AVX2: 16 registers = 12 accumulators (3 rows x 4 columns) + 4 loads. */
GEMM_PATH(avx2, "avx2,fma", 3, 4, 8, __m256, __m256i, _mm256_setzero_ps, _mm256_loadu_ps, a2_mask, A2_MASKLOAD,
          _mm256_fmadd_ps, a2_fold4)
/* AVX-512: 32 registers = 24 accumulators (6 rows x 4 columns) + 4 W + 1 in. */
GEMM_PATH(avx512, "avx512f,avx512dq,avx2,fma", 6, 4, 16, __m512, __mmask16, _mm512_setzero_ps, _mm512_loadu_ps,
          A5_MASK, A5_MASKLOAD, _mm512_fmadd_ps, a5_fold4)
#endif /* GEMM_X86 */

typedef void (*gemm_fn)(float *, int, const float *, int, const float *, int, int, int, int);

/* The path by name ("avx512", "avx2", "c"), NULL when ops_cpu_isa (this
 * CPU, under the $SLUICE_CPU_ISA cap) does not reach it. */
static gemm_fn gemm_by_name(const char *path) {
    if (!strcmp(path, "c")) return gemm_c;
#if GEMM_X86
    if (!strcmp(path, "avx512") && ops_cpu_isa() >= OPS_CPU_AVX512) return gemm_avx512;
    if (!strcmp(path, "avx2") && ops_cpu_isa() >= OPS_CPU_AVX2) return gemm_avx2;
#endif
    return NULL;
}

const char *ops_cpu_gemm_path(void) {
#if GEMM_X86
    if (ops_cpu_isa() >= OPS_CPU_AVX512) return "avx512";
    if (ops_cpu_isa() >= OPS_CPU_AVX2) return "avx2";
#endif
    return "c";
}

/* f over chunks of rows (see gemm_row_block); each element's sum is the same
 * whatever chunk it falls in. */
static void gemm_chunked(gemm_fn f, float *out, int ldo, const float *in, int lda, const float *W, int ldw, int rows,
                         int cols, int K) {
    int rb = gemm_row_block(K);
    if (rows <= 2 * rb) rb = rows; /* a sentence or two: one pass, W read once */
    for (int r = 0; r < rows; r += rb)
        f(out + (size_t)r * ldo, ldo, in + (size_t)r * lda, lda, W, ldw, rows - r < rb ? rows - r : rb, cols, K);
}

int ops_cpu_gemm_nt_on(const char *path, float *out, int ldo, const float *in, int lda, const float *W, int ldw,
                       int rows, int cols, int K) {
    gemm_fn f = gemm_by_name(path);
    if (!f) return -1;
    gemm_chunked(f, out, ldo, in, lda, W, ldw, rows, cols, K);
    return 0;
}

void ops_cpu_gemm_nt(float *out, int ldo, const float *in, int lda, const float *W, int ldw, int rows, int cols,
                     int K) {
    /* The pick is a pure function of the CPU, so racing first callers agree. */
    static gemm_fn fn;
    gemm_fn f = __atomic_load_n(&fn, __ATOMIC_RELAXED);
    if (!f) {
        f = gemm_by_name(ops_cpu_gemm_path());
        __atomic_store_n(&fn, f, __ATOMIC_RELAXED);
    }
    gemm_chunked(f, out, ldo, in, lda, W, ldw, rows, cols, K);
}
