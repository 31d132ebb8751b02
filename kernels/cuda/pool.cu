/* kernels/cuda/pool.cu - sentence embeddings: the mean of each sequence's
 * token rows, then (optionally) L2 normalisation, in one kernel. One block per
 * sequence; threads walk the columns so every token row is read coalesced;
 * the means wait in shared memory for the norm. */
#include "kernels/cuda/cuda_common.cuh"

#define POOL_THREADS 256
#define POOL_MAX_H (40 * 1024 / (int)sizeof(float))

template <typename T>
static __global__ void mean_pool_kernel(float *out, const T *x, const int32_t *seq_off, int H, int l2_normalize) {
    extern __shared__ float pool_means[]; /* (H) */
    __shared__ float pool_red[32];
    const int b = blockIdx.x;
    const int64_t start = seq_off[b], end = seq_off[b + 1];
    const int64_t len = end - start;
    /* An empty sequence pools to zeros rather than 0/0. */
    const float inv_len = len > 0 ? 1.0f / (float)len : 0.0f;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < H; c += blockDim.x) {
        float s = 0.0f;
        for (int64_t t = start; t < end; t++) s += to_f32(x[t * H + c]);
        const float m = s * inv_len;
        pool_means[c] = m;
        ss += m * m;
    }
    float scale = 1.0f;
    if (l2_normalize) { /* uniform across the block: block_sum's barriers are safe */
        const float norm = sqrtf(block_sum(ss, pool_red));
        scale = 1.0f / fmaxf(norm, 1e-12f);
    }
    /* Each thread reads back only the columns it wrote: no barrier needed. */
    for (int c = threadIdx.x; c < H; c += blockDim.x) out[(int64_t)b * H + c] = pool_means[c] * scale;
}

template <typename T>
static int mean_pool_launch(ops_t *ops, float *out, const T *x, const int32_t *seq_off, int B, int H,
                            int l2_normalize) {
    mean_pool_kernel<T><<<(unsigned)B, POOL_THREADS, (size_t)H * sizeof(float), cuda_impl(ops)->stream>>>(
        out, x, seq_off, H, l2_normalize);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

int cuda_mean_pool(ops_t *ops, float *out, const void *x, const int32_t *seq_off, int B, int H,
                   int l2_normalize) {
    if (B < 0 || H <= 0 || H > POOL_MAX_H)
        return cuda_fail(ops, OPS_EINVAL, "mean_pool: bad shape B=%d H=%d (H must be 1..%d)", B, H, POOL_MAX_H);
    if (B == 0) return OPS_OK;
    if (!out || !x || !seq_off) return cuda_fail(ops, OPS_EINVAL, "mean_pool: NULL buffer");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    if (ops->dtype == OPS_BF16)
        return mean_pool_launch(ops, out, (const __nv_bfloat16 *)x, seq_off, B, H, l2_normalize);
    if (ops->dtype == OPS_F16) return mean_pool_launch(ops, out, (const __half *)x, seq_off, B, H, l2_normalize);
    return mean_pool_launch(ops, out, (const float *)x, seq_off, B, H, l2_normalize);
}
