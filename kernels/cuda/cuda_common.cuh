/* kernels/cuda/cuda_common.cuh - what every CUDA op module shares: the
 * backend state behind ops->impl, the error macros, element conversions and
 * warp/block reductions, and the launchers each module exports to backend.cu.
 *
 * Error discipline: CUDA_CHECK / CUBLAS_CHECK evaluate their statement once;
 * on failure they write "statement: reason (file:line)" into ops->err and
 * return OPS_EDEVICE from the enclosing function, which therefore must
 * return int and have a variable `ops` (ops_t *) in scope. Nothing exits.
 *
 * Threads: an ops_t is used by one thread at a time (kernels/ops.h); siblings
 * made by clone share nothing mutable but the device's memory. */
#ifndef SLUICE_CUDA_COMMON_CUH
#define SLUICE_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>

extern "C" {
#include "kernels/ops.h"
}

/* One remembered cuBLASLt algorithm choice (the heuristic query costs tens of
 * microseconds of host time; a forward pass asks the same shapes every time). */
typedef struct gemm_algo_entry {
    int T, K, N;          /* problem shape */
    uint32_t align[3];    /* bytes: W, in, out base-pointer alignment the choice was made for */
    cublasLtMatmulAlgo_t algo;
    int simple;           /* cuBLASLt offered no algorithm: our own kernel runs it */
    int used;             /* slot holds a choice */
} gemm_algo_entry_t;
#define GEMM_ALGO_CACHE 64

/* Backend state of one ops_t (one stream of work). */
typedef struct cuda_impl {
    int device;                 /* CUDA device ordinal */
    int sm;                     /* compute capability, major*10 + minor */
    cudaStream_t stream;        /* every op of this ops_t runs here */
    cublasLtHandle_t lt;        /* this ops_t's own cuBLASLt handle */
    void *lt_workspace;         /* device, lt_workspace_bytes: cuBLASLt scratch, fixed so graphs capture */
    size_t lt_workspace_bytes;  /* bytes */
    float *staging;             /* device, staging_n floats: upload_weight converts through it */
    size_t staging_n;           /* floats */
    int capturing;              /* a graph capture is open on stream */
    int fallback;               /* $SLUICE_CUDA_FALLBACK=1 at create: the plain kernels only (own GEMM,
                                 * CUDA-core attention), to rule the fast paths in or out */
    float *attn_scratch;        /* device, attn_scratch_bytes: attention_paged's split-K partials (fixed, so
                                 * decode steps capture into graphs; the query tokens run in chunks that fit) */
    size_t attn_scratch_bytes;  /* bytes */
    gemm_algo_entry_t gemm_cache[GEMM_ALGO_CACHE]; /* filled round-robin */
    int gemm_cache_next;                           /* next slot to replace */
} cuda_impl_t;

static inline cuda_impl_t *cuda_impl(ops_t *ops) { return (cuda_impl_t *)ops->impl; }

/* Write a formatted message into ops->err; returns code so callers can
 * `return cuda_fail(ops, OPS_EINVAL, ...)`. */
int cuda_fail(ops_t *ops, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define CUDA_CHECK(stmt)                                                                        \
    do {                                                                                        \
        cudaError_t cuda_check_rc_ = (stmt);                                                    \
        if (cuda_check_rc_ != cudaSuccess)                                                      \
            return cuda_fail(ops, OPS_EDEVICE, "%s: %s (%s:%d)", #stmt,                         \
                             cudaGetErrorString(cuda_check_rc_), __FILE__, __LINE__);           \
    } while (0)

#define CUBLAS_CHECK(stmt)                                                                      \
    do {                                                                                        \
        cublasStatus_t cublas_check_rc_ = (stmt);                                               \
        if (cublas_check_rc_ != CUBLAS_STATUS_SUCCESS)                                          \
            return cuda_fail(ops, OPS_EDEVICE, "%s: %s (%s:%d)", #stmt,                         \
                             cublasLtGetStatusString(cublas_check_rc_), __FILE__, __LINE__);    \
    } while (0)

/* After a kernel launch: a bad configuration shows here, a fault at the next sync. */
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

/* Makes the ops_t's device current on the calling thread (ops may move between threads). */
int cuda_enter(ops_t *ops);

/* ---- element conversions: activations are float, bf16 or fp16; math is fp32 ---- */
static __device__ __forceinline__ float to_f32(float v) { return v; }
static __device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
static __device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
/* Round to nearest even. fp16: beyond +-65504 the result is +-inf (IEEE). */
template <typename T> static __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

/* ---- reductions (full warps only: every caller keeps all 32 lanes alive) ---- */
static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over the block; every thread gets the result. blockDim.x is a multiple
 * of 32 and at most 1024; all threads of the block must call it (it syncs). */
static __device__ __forceinline__ float block_sum(float v, float *shared32) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* shared32 may still be read by a previous call */
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? shared32[lane] : 0.0f;
    return warp_sum(t);
}

/* LayerNorm of one row held in row[0..H) (float, owned by this warp, each lane
 * having written the columns lane, lane+32, ...), written to out in T.
 * Two-pass variance (sum of squared deviations) to keep fp32 parity.
 * Each lane reads and writes only its own columns, so out may alias the
 * inputs the row was built from. */
template <typename T>
static __device__ __forceinline__ void warp_layernorm_row(const float *row, T *out, const float *gamma,
                                                          const float *beta, int H, float eps) {
    const int lane = threadIdx.x & 31;
    float s = 0.0f;
    for (int c = lane; c < H; c += 32) s += row[c];
    const float mean = warp_sum(s) / (float)H;
    float ss = 0.0f;
    for (int c = lane; c < H; c += 32) {
        float d = row[c] - mean;
        ss += d * d;
    }
    const float var = warp_sum(ss) / (float)H;
    const float inv = 1.0f / sqrtf(var + eps);
    for (int c = lane; c < H; c += 32) out[c] = from_f32<T>((row[c] - mean) * inv * gamma[c] + beta[c]);
}

/* One-warp-per-row LayerNorm kernels (embed, add_ln) cache their row in
 * shared memory: rows-per-block * H floats, at most 48 KiB, which sets the
 * number of rows (warps) per block. */
#define LN_MAX_H (48 * 1024 / (int)sizeof(float)) /* one row must fit */
typedef struct ln_launch {
    unsigned blocks, threads; /* grid and block size */
    size_t smem;              /* bytes of dynamic shared memory */
} ln_launch_t;

static inline ln_launch_t ln_launch_shape(int T, int H) {
    int rows = 8;
    while (rows > 1 && (size_t)rows * (size_t)H * sizeof(float) > 48 * 1024) rows >>= 1;
    ln_launch_t l = {(unsigned)(((int64_t)T + rows - 1) / rows), (unsigned)rows * 32,
                     (size_t)rows * (size_t)H * sizeof(float)};
    return l;
}

/* This warp's row index (may be >= T: the warp then has nothing to do) and
 * its row cache inside the block's dynamic shared memory. */
static __device__ __forceinline__ int64_t ln_warp_row(float *rows, int H, float **row) {
    const int warp = threadIdx.x >> 5;
    *row = rows + (size_t)warp * H;
    return (int64_t)blockIdx.x * (blockDim.x >> 5) + warp;
}

static inline unsigned grid_1d(int64_t n, int threads, unsigned cap) {
    int64_t g = (n + threads - 1) / threads;
    if (g < 1) g = 1;
    return g > (int64_t)cap ? cap : (unsigned)g;
}

/* ---- op entries, one module each (filled into the vtable by backend.cu) ---- */
int cuda_embed_ln(ops_t *ops, void *out, const int32_t *ids, const int32_t *pos_ids, const float *word,
                  const float *pos, const float *type, const float *gamma, const float *beta, int T, int H,
                  float eps);
int cuda_matmul(ops_t *ops, void *out, const void *in, const void *W, const float *bias, int T, int K, int N,
                ops_epilogue_t epi);
int cuda_add_ln(ops_t *ops, void *out, const void *x, const float *bias, const void *residual,
                const float *gamma, const float *beta, int T, int H, float eps);
int cuda_attention(ops_t *ops, void *out, const void *qkv, const float *qkv_bias, const int32_t *seq_off, int B,
                   int max_len, int n_heads, int head_dim, float scale);
int cuda_mean_pool(ops_t *ops, float *out, const void *x, const int32_t *seq_off, int B, int H,
                   int l2_normalize);
size_t cuda_topk_workspace(ops_t *ops, int nq, int N, int k);
int cuda_similarity_topk(ops_t *ops, int32_t *out_idx, float *out_score, const float *Q, const void *X, int nq,
                         int N, int D, int k, void *workspace);

/* decoder ops (kernels/ops.h "decoder ops"): quant_matmul.cu, decoder.cu, paged_attention.cu */
int cuda_matmul_q(ops_t *ops, float *out, const float *x, const void *W, ops_wtype_t wtype, int T, int K, int N);
int cuda_embed_q(ops_t *ops, float *out, const int32_t *ids, const void *table, ops_wtype_t wtype, int T, int H);
int cuda_add_rms_norm(ops_t *ops, float *out, float *resid, const float *delta, const float *w, int T, int H,
                      float eps);
int cuda_rope(ops_t *ops, float *x, const int32_t *pos, int T, int n_heads, int head_dim, int row_stride,
              float theta);
int cuda_silu_mul(ops_t *ops, float *out, const float *gu, int T, int F);
int cuda_kv_store(ops_t *ops, void *k_cache, void *v_cache, const float *k, const float *v, int row_stride,
                  const int32_t *slot, int T, int n_kv_heads, int head_dim);
int cuda_attention_paged(ops_t *ops, float *out, const float *q, int q_stride, const void *k_cache,
                         const void *v_cache, const int32_t *block_table, int max_blocks, const int32_t *seq_off, int T,
                         const int32_t *ctx_len, int B, int max_ctx, int n_heads, int n_kv_heads, int head_dim,
                         int block_size, float scale);

int cuda_argmax(ops_t *ops, int32_t *out_idx, const float *x, int rows, int n); /* sample.cu */

/* Bytes of one row of K values of a decoder weight type (0 for an unknown
 * type or a K that is not whole blocks). Device code dequantizes by
 * engine/gguf.h's formulas. */
size_t cuda_wrow_bytes(ops_wtype_t wtype, int K);

/* IEEE half bits -> float, for the block scales (d, m) read as raw uint16. */
static __device__ __forceinline__ float half_bits_to_f32(uint16_t h) {
    return __half2float(__ushort_as_half((unsigned short)h));
}

/* out(T,N) float32 = in(T,K) @ W(N,K)^T with in and W in ops->dtype: the
 * fallback GEMM (gemm.cu) with an fp32 result, for ops whose cuBLASLt call
 * has no algorithm (or under SLUICE_CUDA_FALLBACK=1). */
int cuda_simple_gemm_f32out(ops_t *ops, float *out, const void *in, const void *W, int T, int K, int N);

/* float32 -> ops->dtype (bf16 or fp16) conversion on the device (backend.cu),
 * n elements, round to nearest even; on the ops_t's stream. */
int cuda_f32_to_act(ops_t *ops, void *dst, const float *src, int64_t n);

#define ATTN_MAX_LEN 512
#define ATTN_MAX_HEAD_DIM 128

#endif
