/* kernels/cuda/layernorm.cu - the transformer block's "add & norm" in one
 * pass: out = LayerNorm(x + bias + residual) * gamma + beta, fp32 math on
 * float, bf16 or fp16 activations. One warp per row, the row cached in shared
 * memory. out may alias x or residual: every lane reads its own columns of
 * both before it writes those same columns. */
#include "kernels/cuda/cuda_common.cuh"

template <typename T>
static __global__ void add_ln_kernel(T *out, const T *x, const float *bias, const T *residual, const float *gamma,
                                     const float *beta, int T_, int H, float eps) {
    extern __shared__ float add_ln_rows[]; /* (rows per block, H) */
    float *row;
    const int64_t t = ln_warp_row(add_ln_rows, H, &row);
    if (t >= T_) return; /* whole warp leaves together; no block-wide barrier follows */
    const int lane = threadIdx.x & 31;
    const T *xr = x + t * H, *rr = residual + t * H;
    for (int c = lane; c < H; c += 32) row[c] = to_f32(xr[c]) + (bias ? bias[c] : 0.0f) + to_f32(rr[c]);
    warp_layernorm_row<T>(row, out + t * H, gamma, beta, H, eps);
}

template <typename T>
static int add_ln_launch(ops_t *ops, T *out, const T *x, const float *bias, const T *residual, const float *gamma,
                         const float *beta, int T_, int H, float eps) {
    const ln_launch_t l = ln_launch_shape(T_, H);
    add_ln_kernel<T><<<l.blocks, l.threads, l.smem, cuda_impl(ops)->stream>>>(out, x, bias, residual, gamma, beta, T_,
                                                                         H, eps);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

int cuda_add_ln(ops_t *ops, void *out, const void *x, const float *bias, const void *residual,
                const float *gamma, const float *beta, int T, int H, float eps) {
    if (T < 0 || H <= 0 || H > LN_MAX_H)
        return cuda_fail(ops, OPS_EINVAL, "add_ln: bad shape T=%d H=%d (H must be 1..%d)", T, H, LN_MAX_H);
    if (T == 0) return OPS_OK;
    if (!out || !x || !residual || !gamma || !beta) return cuda_fail(ops, OPS_EINVAL, "add_ln: NULL buffer");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    if (ops->dtype == OPS_BF16)
        return add_ln_launch(ops, (__nv_bfloat16 *)out, (const __nv_bfloat16 *)x, bias,
                             (const __nv_bfloat16 *)residual, gamma, beta, T, H, eps);
    if (ops->dtype == OPS_F16)
        return add_ln_launch(ops, (__half *)out, (const __half *)x, bias, (const __half *)residual, gamma, beta, T,
                             H, eps);
    return add_ln_launch(ops, (float *)out, (const float *)x, bias, (const float *)residual, gamma, beta, T, H, eps);
}
