/* kernels/cuda/attention.cu - fused multi-head self-attention over packed
 * variable-length sequences (no padding, up to 512 tokens each).
 *
 * One block = 32 queries of one head of one sequence; grid (sequence, query
 * tile, head). Four threads share a query, each owning a quarter of the head
 * dimensions (float4 chunks part, part+4, ...), so q and the output
 * accumulator fit in registers up to head_dim 128. K and V are walked in
 * tiles of 32 keys staged in shared memory as float; each tile's scores stay
 * in registers and fold into an online softmax (running max m, running sum
 * l), so no T x T matrix ever exists. All math is fp32 whatever the
 * activation type.
 *
 * Control flow: a block whose query tile starts past its sequence's end
 * returns as a whole before any barrier; inside, every thread runs every
 * tile (queries past the end compute on zeros and write nothing), so the
 * barriers and the quad shuffles always see full warps. */
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

#define ATTN_BQ 32      /* queries per block */
#define ATTN_BK 32      /* keys per shared-memory tile */
#define ATTN_THREADS (ATTN_BQ * 4)

template <typename T, int DMAX>
static __global__ void __launch_bounds__(ATTN_THREADS)
    attention_kernel(T *out, const T *qkv, const int32_t *seq_off, int H, int head_dim, float scale) {
    constexpr int CH = DMAX / 16; /* float4 chunks per thread */
    __shared__ __align__(16) float Ks[ATTN_BK * DMAX];
    __shared__ __align__(16) float Vs[ATTN_BK * DMAX];

    const int b = blockIdx.x, h = blockIdx.z;
    const int64_t start = seq_off[b];
    const int len = seq_off[b + 1] - seq_off[b];
    const int q0 = blockIdx.y * ATTN_BQ;
    if (q0 >= len) return; /* uniform over the block */

    const int tid = threadIdx.x, part = tid & 3;
    const int qi = q0 + (tid >> 2);
    const bool q_live = qi < len;
    const int64_t row3 = 3 * (int64_t)H; /* elements per token in qkv */
    const int64_t hoff = (int64_t)h * head_dim;

    float q[4 * CH], acc[4 * CH];
#pragma unroll
    for (int i = 0; i < CH; i++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int d = 4 * (part + 4 * i) + e;
            q[4 * i + e] = (q_live && d < head_dim) ? to_f32(qkv[(start + qi) * row3 + hoff + d]) : 0.0f;
            acc[4 * i + e] = 0.0f;
        }
    }
    float m = -INFINITY, l = 0.0f;

    const int ntiles = (len + ATTN_BK - 1) / ATTN_BK;
    for (int kt = 0; kt < ntiles; kt++) {
        const int k0 = kt * ATTN_BK;
        __syncthreads(); /* the previous tile is no longer read */
        for (int idx = tid; idx < ATTN_BK * DMAX; idx += ATTN_THREADS) {
            const int j = idx / DMAX, d = idx % DMAX;
            float kv = 0.0f, vv = 0.0f;
            if (k0 + j < len && d < head_dim) {
                const T *src = qkv + (start + k0 + j) * row3 + hoff + d;
                kv = to_f32(src[H]);
                vv = to_f32(src[2 * (int64_t)H]);
            }
            Ks[idx] = kv;
            Vs[idx] = vv;
        }
        __syncthreads();

        float s[ATTN_BK];
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < ATTN_BK; j++) {
            float p = 0.0f;
#pragma unroll
            for (int i = 0; i < CH; i++) {
                const float4 k4 = *reinterpret_cast<const float4 *>(&Ks[j * DMAX + 4 * (part + 4 * i)]);
                p = fmaf(q[4 * i + 0], k4.x, p);
                p = fmaf(q[4 * i + 1], k4.y, p);
                p = fmaf(q[4 * i + 2], k4.z, p);
                p = fmaf(q[4 * i + 3], k4.w, p);
            }
            /* The four owners of this query sum their quarters; all four get the total. */
            p += __shfl_xor_sync(0xffffffffu, p, 1);
            p += __shfl_xor_sync(0xffffffffu, p, 2);
            s[j] = (k0 + j < len) ? p * scale : -INFINITY;
            tile_max = fmaxf(tile_max, s[j]);
        }
        /* tile_max is finite: key k0 < len is in every tile. */
        const float m_new = fmaxf(m, tile_max);
        const float corr = expf(m - m_new); /* 0 on the first tile (m = -inf) */
        l *= corr;
#pragma unroll
        for (int i = 0; i < 4 * CH; i++) acc[i] *= corr;
#pragma unroll
        for (int j = 0; j < ATTN_BK; j++) {
            const float p = expf(s[j] - m_new); /* 0 for masked keys */
            l += p;
#pragma unroll
            for (int i = 0; i < CH; i++) {
                const float4 v4 = *reinterpret_cast<const float4 *>(&Vs[j * DMAX + 4 * (part + 4 * i)]);
                acc[4 * i + 0] = fmaf(p, v4.x, acc[4 * i + 0]);
                acc[4 * i + 1] = fmaf(p, v4.y, acc[4 * i + 1]);
                acc[4 * i + 2] = fmaf(p, v4.z, acc[4 * i + 2]);
                acc[4 * i + 3] = fmaf(p, v4.w, acc[4 * i + 3]);
            }
        }
        m = m_new;
    }

    if (!q_live) return;
    const float inv_l = 1.0f / l; /* l >= 1: the maximum's own term is exp(0) */
    T *o = out + (start + qi) * (int64_t)H + hoff;
#pragma unroll
    for (int i = 0; i < CH; i++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int d = 4 * (part + 4 * i) + e;
            if (d < head_dim) o[d] = from_f32<T>(acc[4 * i + e] * inv_l);
        }
    }
}

template <typename T>
static int attention_launch(ops_t *ops, T *out, const T *qkv, const int32_t *seq_off, int B, int max_len,
                            int n_heads, int head_dim, float scale) {
    const dim3 grid((unsigned)B, (unsigned)((max_len + ATTN_BQ - 1) / ATTN_BQ), (unsigned)n_heads);
    const int H = n_heads * head_dim;
    cudaStream_t s = cuda_impl(ops)->stream;
    if (head_dim <= 32)
        attention_kernel<T, 32><<<grid, ATTN_THREADS, 0, s>>>(out, qkv, seq_off, H, head_dim, scale);
    else if (head_dim <= 64)
        attention_kernel<T, 64><<<grid, ATTN_THREADS, 0, s>>>(out, qkv, seq_off, H, head_dim, scale);
    else
        attention_kernel<T, 128><<<grid, ATTN_THREADS, 0, s>>>(out, qkv, seq_off, H, head_dim, scale);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

int cuda_attention(ops_t *ops, void *out, const void *qkv, const int32_t *seq_off, int B, int max_len,
                   int n_heads, int head_dim, float scale) {
    if (B < 0 || max_len < 0 || max_len > ATTN_MAX_LEN || n_heads <= 0 || n_heads > 65535 || head_dim <= 0 ||
        head_dim > ATTN_MAX_HEAD_DIM)
        return cuda_fail(ops, OPS_EINVAL,
                         "attention: bad shape B=%d max_len=%d n_heads=%d head_dim=%d "
                         "(max_len <= %d, head_dim <= %d)",
                         B, max_len, n_heads, head_dim, ATTN_MAX_LEN, ATTN_MAX_HEAD_DIM);
    if (B == 0 || max_len == 0) return OPS_OK;
    if (!out || !qkv || !seq_off) return cuda_fail(ops, OPS_EINVAL, "attention: NULL buffer");
    if (out == qkv) return cuda_fail(ops, OPS_EINVAL, "attention: out must not alias qkv");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    if (ops->dtype == OPS_BF16)
        return attention_launch(ops, (__nv_bfloat16 *)out, (const __nv_bfloat16 *)qkv, seq_off, B, max_len, n_heads,
                                head_dim, scale);
    return attention_launch(ops, (float *)out, (const float *)qkv, seq_off, B, max_len, n_heads, head_dim, scale);
}
