/* kernels/cuda/quant_matmul.cu - matmul_q: out(T,N) f32 = x(T,K) f32 @ W(N,K)^T
 * with W kept in its GGUF block format (Q8_0, Q4_0, Q4_1) or dense (F16, F32)
 * in device memory and dequantized in registers (kernels/ops.h).
 *
 * One kernel for every T (a GEMV with a token tile):
 *   - a warp owns one output row n and a tile of up to QM_TT tokens; its
 *     lanes walk the row in chunks of 8 weights (a quarter of a 32-value
 *     block: Q4 bytes 4s..4s+3 give values 4s..4s+3 and 16+4s..16+4s+3), lane l
 *     taking chunks l, l+32, ...; the 8 weights are dequantized once into
 *     registers and multiplied into every token of the tile;
 *   - so at T <= QM_TT (decode at batch 1..8) each weight byte is read once
 *     per step, and x is read with float4 loads.
 *
 * Batch invariance (ops.h): out[t][n] is lane partial sums in chunk order
 * (fmaf, weights 0..7 of a chunk in order), then the same butterfly warp_sum,
 * whatever T is and whichever tile t falls in. There is deliberately no
 * tensor-core path yet: an mma.sync tile sums K in a different order (16-wide
 * k-steps inside the MMA unit), so choosing it by T would make a row's logits
 * depend on the batch it arrived in. A tensor-core path must be used for every
 * T of a bucket (and the parity test must then compare buckets, not bits);
 * until it exists prefill runs this kernel too and is CUDA-core bound.
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
