/* kernels/cuda/topk.cu - similarity top-k on the GPU: cuBLASLt scores, then our
 * radix-select + bitonic-sort kernel per segment, merged level by level.
 *
 * The contract is ops->similarity_topk's (kernels/ops.h). Scores come from one
 * cuBLASLt GEMM per chunk of queries and index rows on the backend's handle
 * and scratch (fp32: fp32 compute, no TF32; bf16 or fp16: Q converted to the
 * index's type in the workspace, fp32 accumulation and output), or from the
 * backend's fallback GEMM where cuBLASLt has no algorithm (and under
 * SLUICE_CUDA_FALLBACK=1). The workspace is bounded whatever nq is: queries
 * are processed in chunks sized to it.
 *
 * Why this shape: k goes up to 1000 and N to millions, with few queries per
 * batch, so one block per query would leave the GPU idle. Each (query,
 * segment) block instead reduces TOPK_SEG scores to its k best; merge passes
 * (same kernel, candidates as input) reduce groups of segments until one
 * remains. Scores are mapped to order-preserving uint32 keys; the k-th
 * largest key T is found by 4 passes of an 8-bit histogram, all keys above T
 * are taken, and the keys equal to T are taken in position order (a block
 * scan), which is index order: within a segment by construction, and in a
 * merge because each input group is sorted (score desc, index asc) and groups
 * are laid out in index order. A short group pads its output with (-inf,
 * INT32_MAX), which sorts after every finite score.
 */
#include <cub/block/block_scan.cuh>
#include <math.h>
#include <string.h>
#include "kernels/cuda/cuda_common.cuh"

enum {
    TOPK_THREADS = 256,
    TOPK_MAX_K = 1000,
    TOPK_SORT_MAX = 1024,          /* bitonic sort width: next power of two >= TOPK_MAX_K */
    TOPK_SEG = 4096,               /* scores per first-level block (>= 4 * TOPK_MAX_K) */
    TOPK_MERGE_ELEMS = 16384,      /* candidates a merge block aims to take */
    TOPK_COL_CHUNK = 64 * TOPK_SEG /* index rows per GEMM, a multiple of TOPK_SEG */
};

static const size_t TOPK_SCORE_CAP = (size_t)64 << 20; /* bytes of fp32 scores per GEMM */
static const size_t TOPK_CAND_CAP = (size_t)64 << 20;  /* bytes of first-level candidates */
static const size_t TOPK_Q16_BYTES = (size_t)1 << 20;  /* bf16/fp16 copy of a chunk of queries */
static const int TOPK_MAX_QCHUNK = 4096;               /* grid.y bound and a sane chunk */

/* ---- keys ---- */

/* float -> uint32 whose unsigned order is the float order; -0 maps with +0. */
static __device__ __forceinline__ uint32_t topk_key(float f) {
    uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static __device__ __forceinline__ float topk_unkey(uint32_t key) {
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
}

/* ---- the select kernel ---- */

typedef struct {
    const float *in_score;    /* row q at in_score + q * in_row_stride */
    const int32_t *in_idx;    /* same layout; NULL: index = idx_base + position */
    long long in_row_stride;  /* elements */
    int n_row;                /* valid elements per row */
    int group_len;            /* elements per block */
    int idx_base;
    float *out_score;         /* block (g, q) writes k entries at q * out_row_stride + (out_group0 + g) * k */
    int32_t *out_idx;
    long long out_row_stride; /* elements */
    int out_group0;
    int k;
} topk_select_args_t;

/* a goes before b: higher key, or the same key at a lower index. */
static __device__ __forceinline__ bool topk_before(uint32_t ka, int32_t ia, uint32_t kb, int32_t ib) {
    return ka > kb || (ka == kb && ia < ib);
}

/* Sort keys/idx[0..P) best first; P a power of two, called by the whole block. */
static __device__ void topk_bitonic_sort(uint32_t *keys, int32_t *idx, int P) {
    for (int size = 2; size <= P; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            __syncthreads();
            for (int i = threadIdx.x; i < P / 2; i += blockDim.x) {
                int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
                bool want_first = (lo & size) == 0; /* this run ends best first */
                bool ordered = topk_before(keys[lo], idx[lo], keys[hi], idx[hi]);
                if (ordered != want_first) {
                    uint32_t tk = keys[lo];
                    keys[lo] = keys[hi];
                    keys[hi] = tk;
                    int32_t ti = idx[lo];
                    idx[lo] = idx[hi];
                    idx[hi] = ti;
                }
            }
        }
    }
    __syncthreads();
}

static __global__ void __launch_bounds__(TOPK_THREADS) topk_select_kernel(topk_select_args_t a) {
    typedef cub::BlockScan<unsigned, TOPK_THREADS> scan_t;
    __shared__ typename scan_t::TempStorage scan_tmp;
    __shared__ unsigned hist[256];
    __shared__ unsigned s_digit, s_rest, s_gt;
    __shared__ uint32_t keys[TOPK_SORT_MAX];
    __shared__ int32_t idx[TOPK_SORT_MAX];

    const int tid = threadIdx.x, g = blockIdx.x, q = blockIdx.y;
    const int start = g * a.group_len;
    const int n = min(a.group_len, a.n_row - start);
    const float *in = a.in_score + (long long)q * a.in_row_stride + start;
    const int32_t *in_idx = a.in_idx ? a.in_idx + (long long)q * a.in_row_stride + start : NULL;
    const int32_t idx0 = a.idx_base + start;
    const int kk = min(a.k, n); /* real entries this block outputs */

    /* Radix select: after the loop, prefix is the key of rank kk and rest is
     * how many keys equal to it belong to the answer. */
    uint32_t prefix = 0, mask = 0;
    unsigned rest = (unsigned)kk;
    for (int shift = 24; shift >= 0; shift -= 8) {
        hist[tid] = 0;
        __syncthreads();
        for (int p = tid; p < n; p += TOPK_THREADS) {
            uint32_t key = topk_key(in[p]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        /* thread t holds digit 255 - t: an inclusive scan counts keys with digit >= it */
        unsigned count = hist[255 - tid], above_incl;
        scan_t(scan_tmp).InclusiveSum(count, above_incl);
        unsigned above_excl = above_incl - count;
        if (above_excl < rest && above_incl >= rest) {
            s_digit = 255u - (unsigned)tid;
            s_rest = rest - above_excl;
        }
        __syncthreads();
        prefix |= s_digit << shift;
        mask |= 255u << shift;
        rest = s_rest;
        __syncthreads(); /* s_digit, s_rest and hist are rewritten next pass */
    }
    const uint32_t T = prefix;
    const unsigned n_gt = (unsigned)kk - rest;

    /* Gather: every key above T (any order), then the first `rest` keys equal
     * to T in position order; the bitonic sort orders them afterwards. */
    if (tid == 0) s_gt = 0;
    __syncthreads();
    unsigned eq_seen = 0;
    for (int base = 0; base < n; base += TOPK_THREADS) {
        int p = base + tid;
        uint32_t key = p < n ? topk_key(in[p]) : 0u;
        bool gt = p < n && key > T, eq = p < n && key == T;
        int32_t id = 0;
        if (gt || eq) id = in_idx ? in_idx[p] : idx0 + p;
        if (gt) {
            unsigned slot = atomicAdd(&s_gt, 1u);
            keys[slot] = key;
            idx[slot] = id;
        }
        unsigned rank, eq_total;
        scan_t(scan_tmp).ExclusiveSum(eq ? 1u : 0u, rank, eq_total);
        if (eq && eq_seen + rank < rest) {
            keys[n_gt + eq_seen + rank] = key;
            idx[n_gt + eq_seen + rank] = id;
        }
        eq_seen += eq_total;
        __syncthreads(); /* scan_tmp is reused */
    }

    int P = 1;
    while (P < kk) P <<= 1;
    for (int j = kk + tid; j < P; j += TOPK_THREADS) { /* padding sorts last */
        keys[j] = 0u;
        idx[j] = INT32_MAX;
    }
    topk_bitonic_sort(keys, idx, P);

    float *out_s = a.out_score + (long long)q * a.out_row_stride + (long long)(a.out_group0 + g) * a.k;
    int32_t *out_i = a.out_idx + (long long)q * a.out_row_stride + (long long)(a.out_group0 + g) * a.k;
    for (int j = tid; j < a.k; j += TOPK_THREADS) {
        out_s[j] = j < kk ? topk_unkey(keys[j]) : -INFINITY;
        out_i[j] = j < kk ? idx[j] : INT32_MAX;
    }
}

/* ---- scores: one cuBLASLt GEMM, bf16, fp16 or fp32 in, fp32 out, fp32 accumulation ---- */

typedef struct {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulPreference_t pref;
} topk_gemm_descs_t;

static void topk_gemm_descs_free(topk_gemm_descs_t *g) {
    if (g->pref) cublasLtMatmulPreferenceDestroy(g->pref);
    if (g->d) cublasLtMatrixLayoutDestroy(g->d);
    if (g->b) cublasLtMatrixLayoutDestroy(g->b);
    if (g->a) cublasLtMatrixLayoutDestroy(g->a);
    if (g->op) cublasLtMatmulDescDestroy(g->op);
}

/* Largest power of two (<= 256) dividing the address: what cuBLASLt may assume. */
static uint32_t topk_ptr_alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1))) al >>= 1;
    return al;
}

static int topk_gemm_run(ops_t *ops, topk_gemm_descs_t *g, cudaDataType_t in_type, const void *X, const void *Q,
                         float *scores, int ncc, int qcc, int D) {
    const cuda_impl_t *c = cuda_impl(ops);
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&g->a, in_type, (uint64_t)D, (uint64_t)ncc, (int64_t)D));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&g->b, in_type, (uint64_t)D, (uint64_t)qcc, (int64_t)D));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&g->d, CUDA_R_32F, (uint64_t)ncc, (uint64_t)qcc, (int64_t)ncc));
    const uint64_t ws = c->lt_workspace_bytes;
    const uint32_t al_a = topk_ptr_alignment(X), al_b = topk_ptr_alignment(Q), al_d = topk_ptr_alignment(scores);
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&g->pref));
    CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(g->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(g->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                           &al_a, sizeof al_a));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(g->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                           &al_b, sizeof al_b));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(g->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                           &al_d, sizeof al_d));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(g->pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                           &al_d, sizeof al_d));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    memset(&res, 0, sizeof res);
    /* NOT_SUPPORTED (or nothing found) is an answer: the backend's fallback GEMM runs instead */
    cublasStatus_t hrc =
        cublasLtMatmulAlgoGetHeuristic(c->lt, g->op, g->a, g->b, g->d, g->d, g->pref, 1, &res, &found);
    if (hrc != CUBLAS_STATUS_NOT_SUPPORTED) CUBLAS_CHECK(hrc);
    if (hrc == CUBLAS_STATUS_NOT_SUPPORTED || found < 1)
        return cuda_simple_gemm_f32out(ops, scores, Q, X, qcc, D, ncc);
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasLtMatmul(c->lt, g->op, &alpha, X, g->a, Q, g->b, &beta, scores, g->d, scores, g->d, &res.algo,
                                c->lt_workspace, c->lt_workspace_bytes, c->stream));
    return OPS_OK;
}

static int topk_gemm(ops_t *ops, cudaDataType_t in_type, const void *X, const void *Q, float *scores, int ncc,
                     int qcc, int D) {
    if (cuda_impl(ops)->fallback) return cuda_simple_gemm_f32out(ops, scores, Q, X, qcc, D, ncc);
    topk_gemm_descs_t g;
    memset(&g, 0, sizeof g);
    int rc = topk_gemm_run(ops, &g, in_type, X, Q, scores, ncc, qcc, D);
    topk_gemm_descs_free(&g);
    return rc;
}

/* ---- plan: chunk sizes and workspace layout, the same for sizing and running ---- */

typedef struct {
    int qc;           /* queries per chunk */
    int nc;           /* index rows per GEMM (multiple of TOPK_SEG, or N) */
    int nseg;         /* first-level segments per query */
    int fan_in;       /* segments' candidate groups merged per block */
    size_t q16_bytes, score_bytes, cand_bytes, cand2_bytes;
} topk_plan_t;

static size_t topk_align(size_t b) { return (b + 255) & ~(size_t)255; }

static int topk_merge_groups(int groups, int fan_in) { return (groups + fan_in - 1) / fan_in; }

static topk_plan_t topk_make_plan(ops_dtype_t dtype, int nq, int N, int k, int D) {
    topk_plan_t p;
    p.nc = N < TOPK_COL_CHUNK ? N : TOPK_COL_CHUNK;
    p.nseg = (N + TOPK_SEG - 1) / TOPK_SEG;
    p.fan_in = TOPK_MERGE_ELEMS / k < 2 ? 2 : TOPK_MERGE_ELEMS / k;
    size_t per_q_score = (size_t)p.nc * sizeof(float);
    size_t per_q_cand = p.nseg > 1 ? (size_t)p.nseg * k * (sizeof(float) + sizeof(int32_t)) : 0;
    size_t qc = TOPK_SCORE_CAP / per_q_score;
    if (per_q_cand && TOPK_CAND_CAP / per_q_cand < qc) qc = TOPK_CAND_CAP / per_q_cand;
    if (dtype != OPS_F32 && D > 0 && TOPK_Q16_BYTES / ((size_t)D * 2) < qc)
        qc = TOPK_Q16_BYTES / ((size_t)D * 2);
    if (qc > (size_t)nq) qc = nq;
    if (qc > (size_t)TOPK_MAX_QCHUNK) qc = TOPK_MAX_QCHUNK;
    if (qc < 1) qc = 1;
    p.qc = (int)qc;
    p.q16_bytes = dtype != OPS_F32 ? TOPK_Q16_BYTES : 0;
    p.score_bytes = qc * per_q_score;
    p.cand_bytes = qc * per_q_cand;
    p.cand2_bytes = p.nseg > 1 ? qc * (size_t)topk_merge_groups(p.nseg, p.fan_in) * k *
                                     (sizeof(float) + sizeof(int32_t))
                               : 0;
    return p;
}

size_t cuda_topk_workspace(ops_t *ops, int nq, int N, int k) {
    if (nq <= 0 || N <= 0 || k <= 0) return 0;
    topk_plan_t p = topk_make_plan(ops->dtype, nq, N, k, 0);
    return topk_align(p.q16_bytes) + topk_align(p.score_bytes) + topk_align(p.cand_bytes) +
           topk_align(p.cand2_bytes);
}

/* A candidate buffer of `groups` groups of k per query: scores, then indices. */
typedef struct {
    float *score;
    int32_t *idx;
} topk_cand_t;

static topk_cand_t topk_cand_at(char *base, int qc, int groups, int k) {
    topk_cand_t c;
    c.score = (float *)base;
    c.idx = (int32_t *)(base + (size_t)qc * groups * k * sizeof(float));
    return c;
}

static int topk_launch_select(ops_t *ops, const topk_select_args_t *a, int groups, int rows) {
    dim3 grid((unsigned)groups, (unsigned)rows);
    cudaStream_t stream = cuda_impl(ops)->stream;
    topk_select_kernel<<<grid, TOPK_THREADS, 0, stream>>>(*a);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

int cuda_similarity_topk(ops_t *ops, int32_t *out_idx, float *out_score, const float *Q, const void *X, int nq,
                         int N, int D, int k, void *workspace) {
    if (!out_idx || !out_score || !Q || !X || !workspace || nq <= 0 || N <= 0 || D <= 0 || k <= 0 ||
        k > (N < TOPK_MAX_K ? N : TOPK_MAX_K))
        return cuda_fail(ops, OPS_EINVAL,
                         "similarity_topk: bad arguments (nq=%d N=%d D=%d k=%d; k must be 1..min(N,%d), "
                         "buffers non-NULL)",
                         nq, N, D, k, TOPK_MAX_K);
    const ops_dtype_t dtype = ops->dtype;
    if (dtype != OPS_F32 && (size_t)D * 2 > TOPK_Q16_BYTES)
        return cuda_fail(ops, OPS_EINVAL, "similarity_topk: D=%d is over the %s query buffer (%zu bytes)", D,
                         ops_dtype_name(dtype), TOPK_Q16_BYTES);
    int rc = cuda_enter(ops);
    if (rc) return rc;
    /* the workspace was sized without D: a smaller chunk only uses less of it */
    topk_plan_t plan = topk_make_plan(dtype, nq, N, k, D);
    topk_plan_t sized = topk_make_plan(dtype, nq, N, k, 0);
    char *ws = (char *)workspace;
    void *q16 = ws; /* the queries in the index's 16-bit type */
    float *scores = (float *)(ws + topk_align(sized.q16_bytes));
    char *cand_a = ws + topk_align(sized.q16_bytes) + topk_align(sized.score_bytes);
    char *cand_b = cand_a + topk_align(sized.cand_bytes);
    const bool half = dtype != OPS_F32; /* bf16 or fp16 */
    const size_t x_elem = ops_dtype_size(dtype);
    const cudaDataType_t in_type = dtype == OPS_BF16 ? CUDA_R_16BF : dtype == OPS_F16 ? CUDA_R_16F : CUDA_R_32F;

    for (int q0 = 0; q0 < nq; q0 += plan.qc) {
        int qcc = nq - q0 < plan.qc ? nq - q0 : plan.qc;
        const void *Qc = Q + (size_t)q0 * D;
        if (half) {
            if ((rc = cuda_f32_to_act(ops, q16, Q + (size_t)q0 * D, (int64_t)qcc * D))) return rc;
            Qc = q16;
        }
        topk_cand_t first = topk_cand_at(cand_a, qcc, plan.nseg, k);
        for (int c0 = 0; c0 < N; c0 += plan.nc) {
            int ncc = N - c0 < plan.nc ? N - c0 : plan.nc;
            /* column-major view: scores^T (ncc, qcc) = X_chunk (D, ncc)^T x Q_chunk (D, qcc),
             * which is the row-major (qcc, ncc) score block */
            rc = topk_gemm(ops, in_type, (const char *)X + (size_t)c0 * D * x_elem, Qc,
                           scores, ncc, qcc, D);
            if (rc) return rc;
            topk_select_args_t a;
            a.in_score = scores;
            a.in_idx = NULL;
            a.in_row_stride = ncc;
            a.n_row = ncc;
            a.group_len = TOPK_SEG;
            a.idx_base = c0;
            a.k = k;
            if (plan.nseg == 1) { /* one segment: straight to the answer */
                a.out_score = out_score + (size_t)q0 * k;
                a.out_idx = out_idx + (size_t)q0 * k;
                a.out_row_stride = k;
                a.out_group0 = 0;
            } else {
                a.out_score = first.score;
                a.out_idx = first.idx;
                a.out_row_stride = (long long)plan.nseg * k;
                a.out_group0 = c0 / TOPK_SEG;
            }
            rc = topk_launch_select(ops, &a, (ncc + TOPK_SEG - 1) / TOPK_SEG, qcc);
            if (rc) return rc;
        }
        /* merge passes, ping-ponging between the two candidate buffers */
        topk_cand_t src = first;
        char *spare = cand_b;
        for (int groups = plan.nseg; groups > 1;) {
            int out_groups = topk_merge_groups(groups, plan.fan_in);
            topk_cand_t dst = topk_cand_at(spare, qcc, out_groups, k);
            topk_select_args_t a;
            a.in_score = src.score;
            a.in_idx = src.idx;
            a.in_row_stride = (long long)groups * k;
            a.n_row = groups * k;
            a.group_len = plan.fan_in * k;
            a.idx_base = 0;
            a.k = k;
            a.out_group0 = 0;
            if (out_groups == 1) {
                a.out_score = out_score + (size_t)q0 * k;
                a.out_idx = out_idx + (size_t)q0 * k;
                a.out_row_stride = k;
            } else {
                a.out_score = dst.score;
                a.out_idx = dst.idx;
                a.out_row_stride = (long long)out_groups * k;
            }
            rc = topk_launch_select(ops, &a, out_groups, qcc);
            if (rc) return rc;
            spare = (char *)src.score;
            src = dst;
            groups = out_groups;
        }
    }
    return OPS_OK;
}
