/* kernels/cuda/gemm.cu - the linear layers: out(T,N) = in(T,K) @ W(N,K)^T,
 * then bias and GELU. The product is cuBLASLt (tensor cores for bf16 and fp16; fp32
 * with CUBLAS_COMPUTE_32F, no TF32, so it matches the CPU backend to 1e-5).
 *
 * Why bias and GELU are our own fused kernel and not a cuBLASLt epilogue:
 * the model needs the exact erf GELU, and cuBLASLt documents its GELU
 * epilogue only as "GELU" (it is the tanh approximation in practice); and its
 * bias vector must have D's type, which for bf16 or fp16 would round our
 * float32 biases. One extra pass over out, in exchange for the exact function.
 *
 * When cuBLASLt offers no algorithm for a shape or alignment, our own simple
 * tiled kernel computes the product instead (the choice is cached per shape).
 *
 * Row-major to cuBLASLt's column-major: out^T(N,T) = W(N,K) @ in^T(K,T), so
 * A = W seen as (K,N) col-major, transposed; B = in seen as (K,T) col-major;
 * D = out seen as (N,T) col-major. */
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

/* VEC elements of an activation row moved as one access (16 bytes when VEC > 1). */
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) act_vec {
    T e[VEC];
};

/* In place: row = act(row + bias), VEC elements per thread and access; N % VEC == 0. */
template <typename T, bool GELU, int VEC>
static __global__ void bias_act_kernel(T *out, const float *bias, int T_, int N) {
    const int nv = N / VEC;
    for (int64_t r = blockIdx.x; r < T_; r += gridDim.x) {
        act_vec<T, VEC> *row = reinterpret_cast<act_vec<T, VEC> *>(out + r * N);
        for (int c = threadIdx.x; c < nv; c += blockDim.x) {
            act_vec<T, VEC> v = row[c];
#pragma unroll
            for (int i = 0; i < VEC; i++) {
                float x = to_f32(v.e[i]) + (bias ? bias[c * VEC + i] : 0.0f);
                if (GELU) x = 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
                v.e[i] = from_f32<T>(x);
            }
            row[c] = v;
        }
    }
}

template <typename T, int VEC>
static void bias_act_start(cudaStream_t s, T *out, const float *bias, int T_, int N, bool gelu) {
    const int nv = N / VEC;
    const unsigned threads = nv >= 256 ? 256u : (unsigned)((nv + 31) / 32 * 32);
    const unsigned blocks = (unsigned)(T_ < 65535 ? T_ : 65535);
    if (gelu)
        bias_act_kernel<T, true, VEC><<<blocks, threads, 0, s>>>(out, bias, T_, N);
    else
        bias_act_kernel<T, false, VEC><<<blocks, threads, 0, s>>>(out, bias, T_, N);
}

/* 16-byte accesses when every row starts 16-byte aligned, else one element at a time. */
template <typename T>
static int bias_act_launch(ops_t *ops, T *out, const float *bias, int T_, int N, bool gelu) {
    constexpr int VEC = 16 / sizeof(T);
    cudaStream_t s = cuda_impl(ops)->stream;
    if (N % VEC == 0 && ((uintptr_t)out & 15) == 0)
        bias_act_start<T, VEC>(s, out, bias, T_, N, gelu);
    else
        bias_act_start<T, 1>(s, out, bias, T_, N, gelu);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

/* Largest power of two (<= 256) dividing the address: what cuBLASLt may assume. */
static uint32_t ptr_alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1))) al >>= 1;
    return al;
}

/* The fallback product, for shapes or alignments cuBLASLt has no algorithm
 * for: 32x32 output tiles, K in chunks of 32 through shared memory (rows
 * padded by one so the column reads of W do not conflict), fp32 sums. Slow
 * and simple; the parity checks run it too (SLUICE_CUDA_FALLBACK=1). */
#define SG_TILE 32
#define SG_ROWS 8 /* threads per tile column: each thread sums 4 rows */

template <typename T, typename Tout = T>
static __global__ void __launch_bounds__(SG_TILE * SG_ROWS)
    simple_gemm_kernel(Tout *out, const T *in, const T *W, int T_, int K, int N) {
    __shared__ float As[SG_TILE][SG_TILE + 1]; /* in rows t0.., k chunk */
    __shared__ float Ws[SG_TILE][SG_TILE + 1]; /* W rows n0.., k chunk */
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t t0 = (int64_t)blockIdx.y * SG_TILE;
    const int n0 = blockIdx.x * SG_TILE;
    float acc[SG_TILE / SG_ROWS] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k0 = 0; k0 < K; k0 += SG_TILE) {
        __syncthreads(); /* the previous chunk is no longer read */
#pragma unroll
        for (int r = 0; r < SG_TILE / SG_ROWS; r++) {
            const int row = ty + SG_ROWS * r, k = k0 + tx;
            As[row][tx] = (t0 + row < T_ && k < K) ? to_f32(in[(t0 + row) * K + k]) : 0.0f;
            Ws[row][tx] = (n0 + row < N && k < K) ? to_f32(W[(int64_t)(n0 + row) * K + k]) : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < SG_TILE; k++) {
            const float w = Ws[tx][k];
#pragma unroll
            for (int r = 0; r < SG_TILE / SG_ROWS; r++) acc[r] = fmaf(As[ty + SG_ROWS * r][k], w, acc[r]);
        }
    }
#pragma unroll
    for (int r = 0; r < SG_TILE / SG_ROWS; r++) {
        const int64_t t = t0 + ty + SG_ROWS * r;
        if (t < T_ && n0 + tx < N) out[t * N + n0 + tx] = from_f32<Tout>(acc[r]);
    }
}

/* in and W in ops->dtype; out in ops->dtype too, or float32 when out_f32. */
static int simple_gemm_launch_as(ops_t *ops, void *out, bool out_f32, const void *in, const void *W, int T, int K,
                                 int N) {
    const dim3 grid((unsigned)((N + SG_TILE - 1) / SG_TILE), (unsigned)(((int64_t)T + SG_TILE - 1) / SG_TILE));
    const dim3 block(SG_TILE, SG_ROWS);
    if (grid.y > 65535) return cuda_fail(ops, OPS_EINVAL, "matmul: T=%d too large for the fallback kernel", T);
    cudaStream_t s = cuda_impl(ops)->stream;
    if (ops->dtype == OPS_BF16 && out_f32)
        simple_gemm_kernel<__nv_bfloat16, float><<<grid, block, 0, s>>>((float *)out, (const __nv_bfloat16 *)in,
                                                                        (const __nv_bfloat16 *)W, T, K, N);
    else if (ops->dtype == OPS_BF16)
        simple_gemm_kernel<__nv_bfloat16><<<grid, block, 0, s>>>((__nv_bfloat16 *)out, (const __nv_bfloat16 *)in,
                                                                 (const __nv_bfloat16 *)W, T, K, N);
    else if (ops->dtype == OPS_F16 && out_f32)
        simple_gemm_kernel<__half, float><<<grid, block, 0, s>>>((float *)out, (const __half *)in, (const __half *)W,
                                                                 T, K, N);
    else if (ops->dtype == OPS_F16)
        simple_gemm_kernel<__half><<<grid, block, 0, s>>>((__half *)out, (const __half *)in, (const __half *)W, T, K,
                                                          N);
    else
        simple_gemm_kernel<float><<<grid, block, 0, s>>>((float *)out, (const float *)in, (const float *)W, T, K, N);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

static int simple_gemm_launch(ops_t *ops, void *out, const void *in, const void *W, int T, int K, int N) {
    return simple_gemm_launch_as(ops, out, false, in, W, T, K, N);
}

int cuda_simple_gemm_f32out(ops_t *ops, float *out, const void *in, const void *W, int T, int K, int N) {
    return simple_gemm_launch_as(ops, out, true, in, W, T, K, N);
}

/* Destroys whatever of the four descriptors exists. */
typedef struct gemm_descs {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulPreference_t pref;
} gemm_descs_t;

static void gemm_descs_free(gemm_descs_t *g) {
    if (g->pref) cublasLtMatmulPreferenceDestroy(g->pref);
    if (g->d) cublasLtMatrixLayoutDestroy(g->d);
    if (g->b) cublasLtMatrixLayoutDestroy(g->b);
    if (g->a) cublasLtMatrixLayoutDestroy(g->a);
    if (g->op) cublasLtMatmulDescDestroy(g->op);
}

static int gemm_run(ops_t *ops, gemm_descs_t *g, void *out, const void *in, const void *W, int T, int K, int N) {
    cuda_impl_t *c = cuda_impl(ops);
    /* 16-bit A, B and D with fp32 compute and scale: fp32 accumulation, one rounding at the store. */
    const cudaDataType_t dt = ops->dtype == OPS_BF16 ? CUDA_R_16BF : ops->dtype == OPS_F16 ? CUDA_R_16F : CUDA_R_32F;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&g->a, dt, (uint64_t)K, (uint64_t)N, (int64_t)K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&g->b, dt, (uint64_t)K, (uint64_t)T, (int64_t)K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&g->d, dt, (uint64_t)N, (uint64_t)T, (int64_t)N));

    const uint32_t al[3] = {ptr_alignment(W), ptr_alignment(in), ptr_alignment(out)};
    const gemm_algo_entry_t *hit = NULL;
    for (int i = 0; i < GEMM_ALGO_CACHE && !hit; i++) {
        const gemm_algo_entry_t *e = &c->gemm_cache[i];
        if (e->used && e->T == T && e->K == K && e->N == N && !memcmp(e->align, al, sizeof al)) hit = e;
    }
    if (!hit) {
        const uint64_t ws = c->lt_workspace_bytes;
        CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&g->pref));
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(g->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                          sizeof ws));
        /* The engine carves buffers from an arena: tell cuBLASLt the real alignment
         * (it assumes 256 bytes otherwise and may pick a kernel that faults). */
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(g->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                          &al[0], sizeof al[0]));
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(g->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                          &al[1], sizeof al[1]));
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(g->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                          &al[2], sizeof al[2]));
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(g->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                          &al[2], sizeof al[2]));
        cublasLtMatmulHeuristicResult_t res;
        int found = 0;
        memset(&res, 0, sizeof res);
        /* NOT_SUPPORTED (or nothing found) is an answer, not an error: the fallback kernel runs. */
        cublasStatus_t hrc = cublasLtMatmulAlgoGetHeuristic(c->lt, g->op, g->a, g->b, g->d, g->d, g->pref, 1, &res,
                                                            &found);
        if (hrc != CUBLAS_STATUS_NOT_SUPPORTED) CUBLAS_CHECK(hrc);
        gemm_algo_entry_t *e = &c->gemm_cache[c->gemm_cache_next];
        c->gemm_cache_next = (c->gemm_cache_next + 1) % GEMM_ALGO_CACHE;
        e->T = T;
        e->K = K;
        e->N = N;
        memcpy(e->align, al, sizeof al);
        e->algo = res.algo;
        e->simple = hrc == CUBLAS_STATUS_NOT_SUPPORTED || found < 1;
        e->used = 1;
        hit = e;
    }
    if (hit->simple) return simple_gemm_launch(ops, out, in, W, T, K, N);
    /* beta = 0: D is not read, so out may hold anything (NaN poison included). */
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasLtMatmul(c->lt, g->op, &alpha, W, g->a, in, g->b, &beta, out, g->d, out, g->d, &hit->algo,
                                c->lt_workspace, c->lt_workspace_bytes, c->stream));
    return OPS_OK;
}

int cuda_matmul(ops_t *ops, void *out, const void *in, const void *W, const float *bias, int T, int K, int N,
                ops_epilogue_t epi) {
    if (T < 0 || K <= 0 || N <= 0)
        return cuda_fail(ops, OPS_EINVAL, "matmul: bad shape T=%d K=%d N=%d", T, K, N);
    if (epi != OPS_EPI_NONE && epi != OPS_EPI_BIAS && epi != OPS_EPI_BIAS_GELU)
        return cuda_fail(ops, OPS_EINVAL, "matmul: unknown epilogue %d", (int)epi);
    if (epi != OPS_EPI_NONE && !bias) return cuda_fail(ops, OPS_EINVAL, "matmul: epilogue needs a bias");
    if (T == 0) return OPS_OK;
    if (!out || !in || !W) return cuda_fail(ops, OPS_EINVAL, "matmul: NULL buffer");
    if (out == in) return cuda_fail(ops, OPS_EINVAL, "matmul: out must not alias in");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    if (cuda_impl(ops)->fallback) {
        rc = simple_gemm_launch(ops, out, in, W, T, K, N);
    } else {
        gemm_descs_t g;
        memset(&g, 0, sizeof g);
        rc = gemm_run(ops, &g, out, in, W, T, K, N);
        gemm_descs_free(&g);
    }
    if (rc || epi == OPS_EPI_NONE) return rc;
    const bool gelu = epi == OPS_EPI_BIAS_GELU;
    if (ops->dtype == OPS_BF16) return bias_act_launch(ops, (__nv_bfloat16 *)out, bias, T, N, gelu);
    if (ops->dtype == OPS_F16) return bias_act_launch(ops, (__half *)out, bias, T, N, gelu);
    return bias_act_launch(ops, (float *)out, bias, T, N, gelu);
}
