/* kernels/cuda/embed.cu - the embedding layer in one pass: gather the word,
 * position and token-type rows of each token, add them, LayerNorm, and write
 * the activation in the ops_t's dtype. One warp per token; the summed row is
 * cached in shared memory so the tables are read once. */
#include "kernels/cuda/cuda_common.cuh"

template <typename T>
static __global__ void embed_ln_kernel(T *out, const int32_t *ids, const int32_t *pos_ids, const float *word,
                                       const float *pos, const float *type, const float *gamma,
                                       const float *beta, int T_, int H, float eps) {
    extern __shared__ float embed_rows[]; /* (rows per block, H) */
    float *row;
    const int64_t t = ln_warp_row(embed_rows, H, &row);
    if (t >= T_) return; /* whole warp leaves together; no block-wide barrier follows */
    const int lane = threadIdx.x & 31;
    const float *w = word + (int64_t)ids[t] * H;
    const float *p = pos + (int64_t)pos_ids[t] * H;
    for (int c = lane; c < H; c += 32) row[c] = w[c] + p[c] + type[c];
    warp_layernorm_row<T>(row, out + t * H, gamma, beta, H, eps);
}

template <typename T>
static int embed_ln_launch(ops_t *ops, T *out, const int32_t *ids, const int32_t *pos_ids, const float *word,
                           const float *pos, const float *type, const float *gamma, const float *beta, int T_,
                           int H, float eps) {
    const ln_launch_t l = ln_launch_shape(T_, H);
    embed_ln_kernel<T><<<l.blocks, l.threads, l.smem, cuda_impl(ops)->stream>>>(out, ids, pos_ids, word, pos, type,
                                                                           gamma, beta, T_, H, eps);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

int cuda_embed_ln(ops_t *ops, void *out, const int32_t *ids, const int32_t *pos_ids, const float *word,
                  const float *pos, const float *type, const float *gamma, const float *beta, int T, int H,
                  float eps) {
    if (T < 0 || H <= 0 || H > LN_MAX_H)
        return cuda_fail(ops, OPS_EINVAL, "embed_ln: bad shape T=%d H=%d (H must be 1..%d)", T, H, LN_MAX_H);
    if (T == 0) return OPS_OK;
    if (!out || !ids || !pos_ids || !word || !pos || !type || !gamma || !beta)
        return cuda_fail(ops, OPS_EINVAL, "embed_ln: NULL buffer");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    if (ops->dtype == OPS_BF16)
        return embed_ln_launch(ops, (__nv_bfloat16 *)out, ids, pos_ids, word, pos, type, gamma, beta, T, H, eps);
    if (ops->dtype == OPS_F16)
        return embed_ln_launch(ops, (__half *)out, ids, pos_ids, word, pos, type, gamma, beta, T, H, eps);
    return embed_ln_launch(ops, (float *)out, ids, pos_ids, word, pos, type, gamma, beta, T, H, eps);
}
