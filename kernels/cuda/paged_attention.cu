/* kernels/cuda/paged_attention.cu - attention_paged on CUDA: causal
 * grouped-query attention of packed query tokens over the fp16 paged KV cache
 * (kernels/ops.h), one kernel for decode and prefill.
 *
 * Work split
 *   A thread block owns (query token t, KV head g, split z): it stages the
 *   KV positions of split z in chunks of 32 (K and V rows of head g, fp16 ->
 *   float in shared memory, found through the block table), and every query
 *   head of g's group (n_heads / n_kv_heads of them, one warp per head, a warp
 *   taking several when the group is larger than ATT_WARPS) consumes each
 *   chunk: so the group reads each KV block once. Within a chunk lane j scores
 *   position j (a dot product over head_dim in order), then the warp updates
 *   its running max, sum and output (online softmax), lane l owning output
 *   columns l, l+32, ....
 *
 * Split-K over the sequence
 *   Positions are cut in splits of ATT_SPLIT, a constant. With one split
 *   (max_ctx <= ATT_SPLIT) the block writes out = acc / l directly. Otherwise
 *   each block writes its (max, sum, acc) partial to the backend's fixed
 *   scratch and a merge kernel combines splits 0, 1, ... in order. A split past
 *   a token's causal end contributes exactly zero (weight expf(-inf) = 0), and
 *   the merge of one real split is acc0 * 1 / (l0 * 1), the direct path's
 *   bits: so a token's output depends on its own context length alone, not on
 *   the longest context of the call (batch invariance, ops.h). Query tokens run
 *   in chunks that fit the scratch, each chunk two launches.
 *
 * Not here yet: a tensor-core prefill (mma on 16-query tiles). This kernel
 * re-stages a sequence's KV for every query token, which is right for decode
 * and costs L2 bandwidth in long prefills.
 *
 * The token count T = seq_off[B] comes from the caller (ops.h), so the op
 * never reads device memory back and can be captured in a graph.
 * Index arrays (block_table, seq_off, ctx_len) are in device memory: the
 * launcher checks shapes; a negative block id reads as zeros, a query whose
 * causal end is negative (ctx_len < its query count) gets NaN.
 */
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

#define ATT_WARPS 4     /* warps per block at most */
#define ATT_CHUNK 32    /* KV positions staged at once: one per lane */
#define ATT_SPLIT 128   /* KV positions per split (a multiple of ATT_CHUNK) */
#define ATT_HPW 4       /* query heads per warp at most: group <= ATT_WARPS * ATT_HPW */
#define ATT_MAX_HD 128  /* head_dim at most: 4 output columns per lane */

typedef struct {
    const float *q;
    int q_stride;
    const __half *kc, *vc;
    const int32_t *table;
    int max_blocks;
    const int32_t *seq_off, *ctx_len;
    int B, n_heads, n_kv, hd, bs;
    float scale;
} att_args_t;

static __global__ void __launch_bounds__(ATT_WARPS * 32)
    att_kernel(att_args_t a, float *out, float *partial, int t_begin, int nsplit) {
    extern __shared__ float smem[];
    const int hd = a.hd, group = a.n_heads / a.n_kv;
    const int nw = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *sK = smem;                         /* ATT_CHUNK x (hd + 1): the +1 spreads lanes over banks */
    float *sV = sK + ATT_CHUNK * (hd + 1);    /* ATT_CHUNK x hd */
    float *sQ = sV + ATT_CHUNK * hd;          /* group x hd */
    const int tc = blockIdx.x, t = t_begin + tc, g = blockIdx.y, z = blockIdx.z;

    /* the sequence of token t: the last b with seq_off[b] <= t */
    int lo = 0, hi = a.B - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (a.seq_off[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    const int b = lo;
    const int n_b = a.seq_off[b + 1] - a.seq_off[b];
    const int p = a.ctx_len[b] - n_b + (t - a.seq_off[b]); /* attends to 0..p */
    const int j0 = z * ATT_SPLIT, j1 = min(j0 + ATT_SPLIT, p + 1);

    for (int e = threadIdx.x; e < group * hd; e += blockDim.x) {
        const int hl = e / hd, d = e % hd;
        sQ[e] = a.q[(size_t)t * a.q_stride + (size_t)(g * group + hl) * hd + d];
    }

    float m[ATT_HPW], l[ATT_HPW], acc[ATT_HPW][4];
#pragma unroll
    for (int k = 0; k < ATT_HPW; k++) {
        m[k] = -INFINITY, l[k] = 0.0f;
#pragma unroll
        for (int r = 0; r < 4; r++) acc[k][r] = 0.0f;
    }

    const size_t row = (size_t)a.n_kv * hd; /* halves per cache slot */
    for (int c0 = j0; c0 < j1; c0 += ATT_CHUNK) {
        __syncthreads(); /* sQ written / the previous chunk consumed */
        for (int e = threadIdx.x; e < ATT_CHUNK * hd; e += blockDim.x) {
            const int jj = e / hd, d = e % hd, j = c0 + jj;
            float kv = 0.0f, vv = 0.0f;
            if (j < j1) {
                const int blk = a.table[(size_t)b * a.max_blocks + j / a.bs];
                if (blk >= 0) {
                    const size_t off = ((size_t)blk * a.bs + j % a.bs) * row + (size_t)g * hd + d;
                    kv = __half2float(a.kc[off]);
                    vv = __half2float(a.vc[off]);
                }
            }
            sK[jj * (hd + 1) + d] = kv;
            sV[jj * hd + d] = vv;
        }
        __syncthreads();
        const int n = min(ATT_CHUNK, j1 - c0);
#pragma unroll
        for (int k = 0; k < ATT_HPW; k++) {
            const int hl = warp + k * nw;
            if (hl >= group) break; /* uniform over the warp */
            const float *qh = sQ + hl * hd;
            float s = -INFINITY;
            if (lane < n) {
                float dot = 0.0f;
                for (int d = 0; d < hd; d++) dot = fmaf(qh[d], sK[lane * (hd + 1) + d], dot);
                s = dot * a.scale;
            }
            float mx = s;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float m_new = fmaxf(m[k], mx);
            const float corr = expf(m[k] - m_new); /* 0 on the first chunk (m = -inf) */
            const float pj = lane < n ? expf(s - m_new) : 0.0f;
            l[k] = l[k] * corr + warp_sum(pj);
#pragma unroll
            for (int r = 0; r < 4; r++) acc[k][r] *= corr;
            for (int jj = 0; jj < n; jj++) {
                const float pjj = __shfl_sync(0xffffffffu, pj, jj);
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    const int d = lane + 32 * r;
                    if (d < hd) acc[k][r] = fmaf(pjj, sV[jj * hd + d], acc[k][r]);
                }
            }
            m[k] = m_new;
        }
    }

#pragma unroll
    for (int k = 0; k < ATT_HPW; k++) {
        const int hl = warp + k * nw;
        if (hl >= group) break;
        const int h = g * group + hl;
        if (nsplit == 1) {
            float *o = out + (size_t)t * a.n_heads * hd + (size_t)h * hd;
#pragma unroll
            for (int r = 0; r < 4; r++) {
                const int d = lane + 32 * r;
                if (d < hd) o[d] = p >= 0 ? acc[k][r] / l[k] : __int_as_float(0x7fc00000);
            }
        } else {
            float *pt = partial + (((size_t)tc * a.n_heads + h) * nsplit + z) * (hd + 2);
            if (lane == 0) pt[0] = m[k], pt[1] = l[k];
#pragma unroll
            for (int r = 0; r < 4; r++) {
                const int d = lane + 32 * r;
                if (d < hd) pt[2 + d] = acc[k][r];
            }
        }
    }
}

/* One block per (token, head), thread d owns column d: splits combined in order. */
static __global__ void att_merge_kernel(float *out, const float *__restrict__ partial, int t_begin, int n_heads,
                                        int hd, int nsplit, const int32_t *__restrict__ seq_off,
                                        const int32_t *__restrict__ ctx_len, int B) {
    const int tc = blockIdx.x / n_heads, h = blockIdx.x % n_heads, d = threadIdx.x;
    if (d >= hd) return;
    const float *pt = partial + ((size_t)tc * n_heads + h) * nsplit * (hd + 2);
    float M = -INFINITY;
    for (int z = 0; z < nsplit; z++) M = fmaxf(M, pt[(size_t)z * (hd + 2)]);
    float L = 0.0f, A = 0.0f;
    for (int z = 0; z < nsplit; z++) {
        const float *s = pt + (size_t)z * (hd + 2);
        const float w = expf(s[0] - M); /* an empty split: expf(-inf) = 0, adding exactly nothing */
        if (z == 0) L = s[1] * w, A = s[2 + d] * w;
        else L += s[1] * w, A += s[2 + d] * w;
    }
    (void)seq_off, (void)ctx_len, (void)B;
    const int t = t_begin + tc;
    out[(size_t)t * n_heads * hd + (size_t)h * hd + d] = M > -INFINITY ? A / L : __int_as_float(0x7fc00000);
}

int cuda_attention_paged(ops_t *ops, float *out, const float *q, int q_stride, const void *k_cache,
                         const void *v_cache, const int32_t *block_table, int max_blocks, const int32_t *seq_off, int T,
                         const int32_t *ctx_len, int B, int max_ctx, int n_heads, int n_kv_heads, int head_dim,
                         int block_size, float scale) {
    const char *what = "attention_paged";
    if (n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0 || n_heads % n_kv_heads)
        return cuda_fail(ops, OPS_EINVAL, "%s: bad heads n_heads=%d n_kv_heads=%d head_dim=%d", what, n_heads,
                         n_kv_heads, head_dim);
    if (head_dim > ATT_MAX_HD || n_heads / n_kv_heads > ATT_WARPS * ATT_HPW)
        return cuda_fail(ops, OPS_EINVAL, "%s: head_dim %d (at most %d) or group %d (at most %d) unsupported on cuda",
                         what, head_dim, ATT_MAX_HD, n_heads / n_kv_heads, ATT_WARPS * ATT_HPW);
    if (q_stride < n_heads * head_dim)
        return cuda_fail(ops, OPS_EINVAL, "%s: q_stride %d < n_heads * head_dim = %d", what, q_stride,
                         n_heads * head_dim);
    if (block_size <= 0 || max_blocks <= 0 || max_ctx < 0 || (int64_t)max_ctx > (int64_t)max_blocks * block_size)
        return cuda_fail(ops, OPS_EINVAL, "%s: bad cache shape block_size=%d max_blocks=%d max_ctx=%d", what,
                         block_size, max_blocks, max_ctx);
    if (!isfinite(scale)) return cuda_fail(ops, OPS_EINVAL, "%s: scale = %g", what, scale);
    if (B < 0) return cuda_fail(ops, OPS_EINVAL, "%s: B=%d", what, B);
    if (B == 0) return OPS_OK;
    if (!out || !q || !k_cache || !v_cache || !block_table || !seq_off || !ctx_len)
        return cuda_fail(ops, OPS_EINVAL, "%s: NULL buffer", what);
    cuda_impl_t *c = cuda_impl(ops);
    int rc = cuda_enter(ops);
    if (rc) return rc;
    if (T < 0) return cuda_fail(ops, OPS_EINVAL, "%s: T = %d", what, T);
    if (T == 0) return OPS_OK;

    const int group = n_heads / n_kv_heads;
    const int nw = group < ATT_WARPS ? group : ATT_WARPS;
    const size_t smem = ((size_t)ATT_CHUNK * (head_dim + 1) + (size_t)ATT_CHUNK * head_dim + (size_t)group * head_dim) *
                        sizeof(float);
    if (smem > 48 * 1024) return cuda_fail(ops, OPS_EINVAL, "%s: %zu bytes of shared memory needed", what, smem);
    const int nsplit = max_ctx <= ATT_SPLIT ? 1 : (max_ctx + ATT_SPLIT - 1) / ATT_SPLIT;
    const size_t per_token = (size_t)n_heads * nsplit * (head_dim + 2) * sizeof(float);
    int tchunk = nsplit == 1 ? T : (int)(c->attn_scratch_bytes / per_token);
    if (tchunk < 1)
        return cuda_fail(ops, OPS_EINVAL, "%s: context %d too long for the split scratch (%zu bytes)", what, max_ctx,
                         c->attn_scratch_bytes);
    if (tchunk > 65535 * 16) tchunk = 65535 * 16;
    att_args_t a = {q, q_stride, (const __half *)k_cache, (const __half *)v_cache, block_table, max_blocks,
                    seq_off, ctx_len, B, n_heads, n_kv_heads, head_dim, block_size, scale};
    for (int t0 = 0; t0 < T; t0 += tchunk) {
        const int tc = T - t0 < tchunk ? T - t0 : tchunk;
        const dim3 grid((unsigned)tc, (unsigned)n_kv_heads, (unsigned)nsplit);
        att_kernel<<<grid, nw * 32, smem, c->stream>>>(a, out, c->attn_scratch, t0, nsplit);
        CUDA_CHECK_LAUNCH();
        if (nsplit > 1) {
            att_merge_kernel<<<(unsigned)tc * n_heads, 128, 0, c->stream>>>(out, c->attn_scratch, t0, n_heads,
                                                                            head_dim, nsplit, seq_off, ctx_len, B);
            CUDA_CHECK_LAUNCH();
        }
    }
    return OPS_OK;
}
