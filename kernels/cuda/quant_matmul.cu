/* kernels/cuda/quant_matmul.cu - matmul_q: out(T,N) f32 = x(T,K) f32 @ W(N,K)^T
 * with W kept in its GGUF block format (Q8_0, Q4_0, Q4_1) or dense (F16, F32)
 * in device memory and dequantized in registers (kernels/ops.h).
 *
 * Two paths, chosen by T against ops->mma_min_t (kernels/ops.h):
 *
 * GEMV (T < mma_min_t, and every T for F16/F32 rows)
 *   - a warp owns one output row n and a tile of up to QM_TT tokens; its
 *     lanes walk the row in chunks of 8 weights (a quarter of a 32-value
 *     block: Q4 bytes 4s..4s+3 give values 4s..4s+3 and 16+4s..16+4s+3), lane l
 *     taking chunks l, l+32, ...; the 8 weights are dequantized once into
 *     registers and multiplied into every token of the tile;
 *   - so at T <= QM_TT (decode at batch 1..8) each weight byte is read once
 *     per step, and x is read with float4 loads; fp32 throughout.
 *   Batch invariance: out[t][n] is lane partial sums in chunk order (fmaf,
 *   weights 0..7 of a chunk in order), then the same butterfly warp_sum,
 *   whatever T is and whichever tile t falls in.
 *
 * Tensor cores (T >= mma_min_t; Q8_0, Q4_0, Q4_1)
 *   - a block of 4 warps owns a tile of MM_BM tokens x MM_BN output rows; per
 *     32-wide K step (one quant block of each row) it stages x as 16-bit
 *     values and the 64 rows' blocks dequantized to 16-bit values in shared
 *     memory, then each warp runs mma.sync m16n8k16 (fp32 accumulation) on
 *     its 32 x 32 quarter: 2 k-steps of 2 x 4 MMAs;
 *   - the 16-bit type is bf16 on an OPS_BF16 backend, fp16 otherwise. fp16
 *     is the default for its 11-bit mantissa: both operands are rounded once
 *     (relative error 2^-11 each, so about 4e-4 rms on a dot product of
 *     random terms; bf16: 2^-8, about 3e-3): the activations are rounded
 *     to 16 bits, and so is each dequantized weight. fp16 overflows
 *     beyond 65504: an activation that large becomes inf (the decoder's
 *     matmul inputs are normed rows, the attention output and silu*up; the
 *     bf16 backend has fp32's range for a model that needs it).
 *   Batch invariance within the path: out[t][n] is the MMA chain over k in
 *   order with row t of the tile as A's row; the MMA unit computes every
 *   element the same way whatever row of the tile it is, and rows past T are
 *   zeros that touch no other row. So rows are bit-identical among calls with
 *   T >= mma_min_t, and close (not equal) to the GEMV's: the threshold is
 *   ops->mma_min_t so callers (engine/llama.c's graph buckets) can keep a
 *   batch on one side.
 *   tests/tools/mma_emu.py runs this kernel's source on the host (threads,
 *   barriers and the MMA emulated after the PTX ISA's fragment layout) to
 *   check its indexing without a GPU.
 *
 * Dequantization is gguf.h's formulas with the roundings of the CPU
 * reference: Q8_0 d*q, Q4_0 d*(q-8), Q4_1 d*q then + m (two roundings, no fma).
 */
#include "kernels/cuda/cuda_common.cuh"

#define QM_WARPS 4 /* output rows per block, one warp each */
#define QM_TT 8    /* tokens per warp */

size_t cuda_wrow_bytes(ops_wtype_t wtype, int K) {
    if (K <= 0) return 0;
    switch (wtype) {
    case OPS_W_F32: return (size_t)K * 4;
    case OPS_W_F16: return (size_t)K * 2;
    case OPS_W_Q8_0: return K % 32 ? 0 : (size_t)K / 32 * 34;
    case OPS_W_Q4_0: return K % 32 ? 0 : (size_t)K / 32 * 18;
    case OPS_W_Q4_1: return K % 32 ? 0 : (size_t)K / 32 * 20;
    }
    return 0;
}

static __device__ __forceinline__ uint16_t ld_u16(const uint8_t *p) { return *(const uint16_t *)p; }

/* The 8 weights of chunk c of a block row, and the column of each, by type. */
template <int WT> struct qchunk;

template <> struct qchunk<OPS_W_Q8_0> {
    static __device__ __forceinline__ void load(const uint8_t *row, int c, float w[8], int *col0, int *col1) {
        const int b = c >> 2, s = c & 3;
        const uint8_t *blk = row + (size_t)b * 34;
        const float d = half_bits_to_f32(ld_u16(blk));
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint16_t two = ld_u16(blk + 2 + 8 * s + 2 * i);
            w[2 * i] = __fmul_rn(d, (float)(int8_t)(two & 0xff));
            w[2 * i + 1] = __fmul_rn(d, (float)(int8_t)(two >> 8));
        }
        *col0 = b * 32 + 8 * s; /* values 0..3 */
        *col1 = b * 32 + 8 * s + 4; /* values 4..7 */
    }
};

template <> struct qchunk<OPS_W_Q4_0> {
    static __device__ __forceinline__ void load(const uint8_t *row, int c, float w[8], int *col0, int *col1) {
        const int b = c >> 2, s = c & 3;
        const uint8_t *blk = row + (size_t)b * 18;
        const float d = half_bits_to_f32(ld_u16(blk));
        const uint32_t q = (uint32_t)ld_u16(blk + 2 + 4 * s) | ((uint32_t)ld_u16(blk + 4 + 4 * s) << 16);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int byte = (int)((q >> (8 * i)) & 0xff);
            w[i] = __fmul_rn(d, (float)((byte & 15) - 8));
            w[4 + i] = __fmul_rn(d, (float)((byte >> 4) - 8));
        }
        *col0 = b * 32 + 4 * s;
        *col1 = b * 32 + 16 + 4 * s;
    }
};

template <> struct qchunk<OPS_W_Q4_1> {
    static __device__ __forceinline__ void load(const uint8_t *row, int c, float w[8], int *col0, int *col1) {
        const int b = c >> 2, s = c & 3;
        const uint8_t *blk = row + (size_t)b * 20;
        const float d = half_bits_to_f32(ld_u16(blk)), m = half_bits_to_f32(ld_u16(blk + 2));
        const uint32_t q = (uint32_t)ld_u16(blk + 4 + 4 * s) | ((uint32_t)ld_u16(blk + 6 + 4 * s) << 16);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int byte = (int)((q >> (8 * i)) & 0xff);
            w[i] = __fadd_rn(__fmul_rn(d, (float)(byte & 15)), m);
            w[4 + i] = __fadd_rn(__fmul_rn(d, (float)(byte >> 4)), m);
        }
        *col0 = b * 32 + 4 * s;
        *col1 = b * 32 + 16 + 4 * s;
    }
};

static __device__ __forceinline__ float dot4(float4 a, const float *w, float acc) {
    acc = fmaf(w[0], a.x, acc);
    acc = fmaf(w[1], a.y, acc);
    acc = fmaf(w[2], a.z, acc);
    return fmaf(w[3], a.w, acc);
}

/* This warp's output row n and token tile [t0, t0 + nt). */
typedef struct {
    int lane, n, t0, nt;
} qm_tile_t;
static __device__ __forceinline__ qm_tile_t qm_tile(int T) {
    qm_tile_t q;
    q.lane = threadIdx.x & 31;
    q.n = blockIdx.x * QM_WARPS + (threadIdx.x >> 5);
    q.t0 = blockIdx.y * QM_TT;
    q.nt = T - q.t0 < QM_TT ? T - q.t0 : QM_TT;
    return q;
}

/* The warp's sums: out[t0+t][n] for the nt tokens of its tile (every lane
 * calls warp_sum: the warp is whole). */
static __device__ __forceinline__ void qm_store(float *out, const float acc[QM_TT], int t0, int nt, int N, int n) {
#pragma unroll
    for (int t = 0; t < QM_TT; t++) {
        const float s = warp_sum(acc[t]);
        if (t < nt && (threadIdx.x & 31) == 0) out[(size_t)(t0 + t) * N + n] = s;
    }
}

/* Block formats: K a multiple of 32, x 16-byte aligned (checked by the launcher). */
template <int WT>
static __global__ void __launch_bounds__(QM_WARPS * 32)
    matmul_q_block_kernel(float *__restrict__ out, const float *__restrict__ x, const uint8_t *__restrict__ W,
                          int T, int K, int N, size_t row_bytes) {
    const qm_tile_t q = qm_tile(T);
    if (q.n >= N) return; /* whole warps leave together */
    const int lane = q.lane, n = q.n, t0 = q.t0, nt = q.nt;
    const uint8_t *row = W + (size_t)n * row_bytes;
    const float *xt = x + (size_t)t0 * K;
    float acc[QM_TT] = {0.0f};
    const int chunks = K >> 3;
    for (int c = lane; c < chunks; c += 32) {
        float w[8];
        int c0, c1;
        qchunk<WT>::load(row, c, w, &c0, &c1);
#pragma unroll
        for (int t = 0; t < QM_TT; t++) {
            if (t < nt) {
                const float4 a = __ldg((const float4 *)(xt + (size_t)t * K + c0));
                const float4 b = __ldg((const float4 *)(xt + (size_t)t * K + c1));
                acc[t] = dot4(b, w + 4, dot4(a, w, acc[t]));
            }
        }
    }
    qm_store(out, acc, t0, nt, N, n);
}

/* Dense rows of any K: lane l takes columns l, l+32, ... (coalesced). */
template <typename WTy>
static __global__ void __launch_bounds__(QM_WARPS * 32)
    matmul_q_dense_kernel(float *__restrict__ out, const float *__restrict__ x, const WTy *__restrict__ W, int T,
                          int K, int N) {
    const qm_tile_t q = qm_tile(T);
    if (q.n >= N) return;
    const int lane = q.lane, n = q.n, t0 = q.t0, nt = q.nt;
    const WTy *row = W + (size_t)n * K;
    const float *xt = x + (size_t)t0 * K;
    float acc[QM_TT] = {0.0f};
    for (int k = lane; k < K; k += 32) {
        const float w = to_f32(row[k]);
#pragma unroll
        for (int t = 0; t < QM_TT; t++)
            if (t < nt) acc[t] = fmaf(w, __ldg(xt + (size_t)t * K + k), acc[t]);
    }
    qm_store(out, acc, t0, nt, N, n);
}

/* ---- tensor-core path ---- */

#define MM_BM 64       /* tokens per block tile */
#define MM_BN 64       /* output rows per block tile */
#define MM_LD 40       /* 16-bit values per shared row: 32 + 8 of padding (80 bytes), so a warp's fragment
                        * loads (8 rows x 4 words) fall in 32 different banks */
#define MM_THREADS 128 /* 4 warps, 2 x 2 over the tile */

/* The 16-bit tile types: packing and the MMA. */
template <typename H> static __device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], const uint32_t b[2]);
template <> __device__ __forceinline__ void mma16816<__half>(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <typename H> struct __align__(8) h4_t { H v[4]; };

/* Two 16-bit weights (columns j, j+1 of a tile row) from two floats. */
template <typename H> static __device__ __forceinline__ void put2(H *d, float a, float b) {
    d[0] = from_f32<H>(a);
    d[1] = from_f32<H>(b);
}

/* Half h (0 or 1) of one 32-value block, dequantized by the GEMV's formulas
 * (the same fp32 roundings), rounded to H, written to row[0..32) at the
 * values' own columns: Q4 bytes 8h..8h+7 give values 8h..8h+7 (low nibbles)
 * and 16+8h..16+8h+7 (high); Q8_0 values 16h..16h+15. */
template <int WT> struct qtile {
    static constexpr int bytes = WT == OPS_W_Q8_0 ? 34 : WT == OPS_W_Q4_0 ? 18 : 20;
    /* a 4-bit value q of a block with scale d and minimum m, as the GEMV rounds it */
    static __device__ __forceinline__ float q4(float d, float m, int q) {
        return WT == OPS_W_Q4_0 ? __fmul_rn(d, (float)(q - 8)) : __fadd_rn(__fmul_rn(d, (float)q), m);
    }
    template <typename H> static __device__ __forceinline__ void load(const uint8_t *blk, int h, H *row) {
        const float d = half_bits_to_f32(ld_u16(blk));
        if (WT == OPS_W_Q8_0) {
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const uint16_t two = ld_u16(blk + 2 + 16 * h + 2 * i);
                put2(row + 16 * h + 2 * i, __fmul_rn(d, (float)(int8_t)(two & 0xff)),
                     __fmul_rn(d, (float)(int8_t)(two >> 8)));
            }
        } else {
            const float m = WT == OPS_W_Q4_1 ? half_bits_to_f32(ld_u16(blk + 2)) : 0.0f;
            const uint8_t *qs = blk + (WT == OPS_W_Q4_1 ? 4 : 2);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const uint16_t two = ld_u16(qs + 8 * h + 2 * i);
                const int b0 = two & 0xff, b1 = two >> 8, j = 8 * h + 2 * i;
                put2(row + j, q4(d, m, b0 & 15), q4(d, m, b1 & 15));
                put2(row + 16 + j, q4(d, m, b0 >> 4), q4(d, m, b1 >> 4));
            }
        }
    }
};

/* Block formats, T >= 1, K a multiple of 32, x 16-byte aligned (the launcher checks). */
template <int WT, typename H>
static __global__ void __launch_bounds__(MM_THREADS)
    matmul_q_mma_kernel(float *__restrict__ out, const float *__restrict__ x, const uint8_t *__restrict__ W, int T,
                        int K, int N, size_t row_bytes) {
    __shared__ __align__(16) H sA[MM_BM * MM_LD]; /* tokens x k: x rounded to H */
    __shared__ __align__(16) H sB[MM_BN * MM_LD]; /* output rows x k: W dequantized to H */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int m0 = blockIdx.y * MM_BM, n0 = blockIdx.x * MM_BN;
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32; /* this warp's quarter */
    const int g = lane >> 2, q = lane & 3;                 /* fragment coordinates (PTX ISA, m16n8k16) */
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    /* this thread's staging duties: A float4s tid + 128 i (row e / 8, columns 4 (e % 8) ..), B row tid / 2, half tid % 2 */
    const int b_row = tid >> 1, b_half = tid & 1;
    const uint8_t *wrow = n0 + b_row < N ? W + (size_t)(n0 + b_row) * row_bytes : NULL;
    const int nkb = K >> 5;
    for (int kb = 0; kb < nkb; kb++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int e = tid + i * MM_THREADS, r = e >> 3, c4 = (e & 7) * 4, t = m0 + r;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (t < T) v = __ldg((const float4 *)(x + (size_t)t * K + (size_t)kb * 32 + c4));
            h4_t<H> hv;
            hv.v[0] = from_f32<H>(v.x), hv.v[1] = from_f32<H>(v.y), hv.v[2] = from_f32<H>(v.z), hv.v[3] = from_f32<H>(v.w);
            *(h4_t<H> *)(sA + r * MM_LD + c4) = hv;
        }
        H *brow = sB + b_row * MM_LD;
        if (wrow) {
            qtile<WT>::load(wrow + (size_t)kb * qtile<WT>::bytes, b_half, brow);
        } else { /* rows past N: zeros (their outputs are not stored); the halves split columns 0..15, 16..31 */
#pragma unroll
            for (int i = 0; i < 8; i++) put2(brow + 16 * b_half + 2 * i, 0.0f, 0.0f);
        }
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < 32; ks += 16) {
            uint32_t a[2][4], b[4][2];
#pragma unroll
            for (int mi = 0; mi < 2; mi++) {
                const H *pa = sA + (wm + mi * 16 + g) * MM_LD + ks + 2 * q;
                a[mi][0] = *(const uint32_t *)pa;
                a[mi][1] = *(const uint32_t *)(pa + 8 * MM_LD);
                a[mi][2] = *(const uint32_t *)(pa + 8);
                a[mi][3] = *(const uint32_t *)(pa + 8 * MM_LD + 8);
            }
#pragma unroll
            for (int ni = 0; ni < 4; ni++) {
                const H *pb = sB + (wn + ni * 8 + g) * MM_LD + ks + 2 * q;
                b[ni][0] = *(const uint32_t *)pb;
                b[ni][1] = *(const uint32_t *)(pb + 8);
            }
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int ni = 0; ni < 4; ni++) mma16816<H>(acc[mi][ni], a[mi], b[ni]);
        }
        __syncthreads(); /* the tiles are consumed before the next step overwrites them */
    }
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++) {
            const int row = m0 + wm + mi * 16 + g, col = n0 + wn + ni * 8 + 2 * q;
#pragma unroll
            for (int hlf = 0; hlf < 2; hlf++) { /* c0, c1 at row; c2, c3 at row + 8 */
                const int t = row + 8 * hlf;
                if (t >= T) continue;
                if (col < N) out[(size_t)t * N + col] = acc[mi][ni][2 * hlf];
                if (col + 1 < N) out[(size_t)t * N + col + 1] = acc[mi][ni][2 * hlf + 1];
            }
        }
}

template <typename H>
static int launch_mma(ops_t *ops, float *out, const float *x, const uint8_t *W, ops_wtype_t wtype, int T, int K, int N,
                      size_t rb) {
    const dim3 grid((unsigned)((N + MM_BN - 1) / MM_BN), (unsigned)((T + MM_BM - 1) / MM_BM));
    if (grid.y > 65535) return cuda_fail(ops, OPS_EINVAL, "matmul_q: T=%d too large (at most %d)", T, 65535 * MM_BM);
    cudaStream_t s = cuda_impl(ops)->stream;
    switch (wtype) {
    case OPS_W_Q8_0: matmul_q_mma_kernel<OPS_W_Q8_0, H><<<grid, MM_THREADS, 0, s>>>(out, x, W, T, K, N, rb); break;
    case OPS_W_Q4_0: matmul_q_mma_kernel<OPS_W_Q4_0, H><<<grid, MM_THREADS, 0, s>>>(out, x, W, T, K, N, rb); break;
    case OPS_W_Q4_1: matmul_q_mma_kernel<OPS_W_Q4_1, H><<<grid, MM_THREADS, 0, s>>>(out, x, W, T, K, N, rb); break;
    default: return cuda_fail(ops, OPS_EINVAL, "matmul_q: no tensor-core path for weight type %d", (int)wtype);
    }
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

static const char *wtype_name(ops_wtype_t w) {
    static const char *names[] = {"F32", "F16", "Q8_0", "Q4_0", "Q4_1"};
    return (unsigned)w < 5 ? names[w] : "unknown";
}

int cuda_matmul_q(ops_t *ops, float *out, const float *x, const void *W, ops_wtype_t wtype, int T, int K, int N) {
    if ((unsigned)wtype > OPS_W_Q4_1) return cuda_fail(ops, OPS_EINVAL, "matmul_q: unknown weight type %d", (int)wtype);
    if (T < 0 || K <= 0 || N <= 0)
        return cuda_fail(ops, OPS_EINVAL, "matmul_q: bad shape T=%d K=%d N=%d (T >= 0, K > 0, N > 0)", T, K, N);
    const size_t rb = cuda_wrow_bytes(wtype, K);
    if (!rb)
        return cuda_fail(ops, OPS_EINVAL, "matmul_q: K=%d is not a multiple of 32 (%s blocks)", K, wtype_name(wtype));
    if (T == 0) return OPS_OK;
    if (!out || !x || !W) return cuda_fail(ops, OPS_EINVAL, "matmul_q: NULL buffer");
    if (out == x) return cuda_fail(ops, OPS_EINVAL, "matmul_q: out must not alias x");
    const int blocked = wtype >= OPS_W_Q8_0;
    if (blocked && ((uintptr_t)x & 15))
        return cuda_fail(ops, OPS_EINVAL, "matmul_q: x must be 16-byte aligned for %s rows", wtype_name(wtype));
    if ((uintptr_t)W & 3) return cuda_fail(ops, OPS_EINVAL, "matmul_q: W must be 4-byte aligned");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    if (blocked && ops->mma_min_t > 0 && T >= ops->mma_min_t)
        return ops->dtype == OPS_BF16 ? launch_mma<__nv_bfloat16>(ops, out, x, (const uint8_t *)W, wtype, T, K, N, rb)
                                      : launch_mma<__half>(ops, out, x, (const uint8_t *)W, wtype, T, K, N, rb);
    const dim3 grid((unsigned)((N + QM_WARPS - 1) / QM_WARPS), (unsigned)((T + QM_TT - 1) / QM_TT));
    if (grid.y > 65535) return cuda_fail(ops, OPS_EINVAL, "matmul_q: T=%d too large (at most %d)", T, 65535 * QM_TT);
    const unsigned threads = QM_WARPS * 32;
    cudaStream_t s = cuda_impl(ops)->stream;
    const uint8_t *Wb = (const uint8_t *)W;
    switch (wtype) {
    case OPS_W_Q8_0: matmul_q_block_kernel<OPS_W_Q8_0><<<grid, threads, 0, s>>>(out, x, Wb, T, K, N, rb); break;
    case OPS_W_Q4_0: matmul_q_block_kernel<OPS_W_Q4_0><<<grid, threads, 0, s>>>(out, x, Wb, T, K, N, rb); break;
    case OPS_W_Q4_1: matmul_q_block_kernel<OPS_W_Q4_1><<<grid, threads, 0, s>>>(out, x, Wb, T, K, N, rb); break;
    case OPS_W_F16:
        matmul_q_dense_kernel<__half><<<grid, threads, 0, s>>>(out, x, (const __half *)W, T, K, N);
        break;
    case OPS_W_F32: matmul_q_dense_kernel<float><<<grid, threads, 0, s>>>(out, x, (const float *)W, T, K, N); break;
    }
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}
