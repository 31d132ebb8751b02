/* kernels/cuda/decoder.cu - the decoder's element-wise and row ops on CUDA
 * (kernels/ops.h "decoder ops"): embed_q, add_rms_norm (the residual add
 * fused), rope, silu_mul and kv_store (float32 -> the fp16 paged cache).
 *
 * Index arrays (ids, pos, slot) live in device memory, so the launchers check
 * shapes and pointers only; their values are the caller's contract (engine/
 * llama.c checks them on the host before upload). A kernel that meets a
 * negative one does not write out of bounds: embed_q writes NaN for the row (so
 * the fault shows in the logits), rope leaves the row as it is, kv_store skips
 * the token.
 *
 * Batch invariance: every row is computed by the same code whatever T is;
 * add_rms_norm's sum of squares is one block of RMS_THREADS threads in a fixed
 * order that depends on H alone.
 */
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

#define RMS_THREADS 256

/* ---- embed_q ---- */

/* Value j of a row in wtype, by gguf.h's formulas (the CPU reference's roundings). */
template <int WT> static __device__ __forceinline__ float dequant1(const uint8_t *row, int j);
template <> __device__ __forceinline__ float dequant1<OPS_W_F32>(const uint8_t *row, int j) {
    return ((const float *)row)[j];
}
template <> __device__ __forceinline__ float dequant1<OPS_W_F16>(const uint8_t *row, int j) {
    return __half2float(((const __half *)row)[j]);
}
template <> __device__ __forceinline__ float dequant1<OPS_W_Q8_0>(const uint8_t *row, int j) {
    const uint8_t *blk = row + (size_t)(j >> 5) * 34;
    return __fmul_rn(half_bits_to_f32(*(const uint16_t *)blk), (float)(int8_t)blk[2 + (j & 31)]);
}
template <> __device__ __forceinline__ float dequant1<OPS_W_Q4_0>(const uint8_t *row, int j) {
    const uint8_t *blk = row + (size_t)(j >> 5) * 18;
    const int i = j & 31, byte = blk[2 + (i & 15)];
    return __fmul_rn(half_bits_to_f32(*(const uint16_t *)blk), (float)((i < 16 ? byte & 15 : byte >> 4) - 8));
}
template <> __device__ __forceinline__ float dequant1<OPS_W_Q4_1>(const uint8_t *row, int j) {
    const uint8_t *blk = row + (size_t)(j >> 5) * 20;
    const int i = j & 31, byte = blk[4 + (i & 15)];
    const float d = half_bits_to_f32(*(const uint16_t *)blk), m = half_bits_to_f32(*(const uint16_t *)(blk + 2));
    return __fadd_rn(__fmul_rn(d, (float)(i < 16 ? byte & 15 : byte >> 4)), m);
}

template <int WT>
static __global__ void embed_q_kernel(float *__restrict__ out, const int32_t *__restrict__ ids,
                                      const uint8_t *__restrict__ table, int H, size_t row_bytes) {
    const int t = blockIdx.x;
    const int id = ids[t];
    float *o = out + (size_t)t * H;
    if (id < 0) {
        for (int j = threadIdx.x; j < H; j += blockDim.x) o[j] = __int_as_float(0x7fc00000);
        return;
    }
    const uint8_t *row = table + (size_t)id * row_bytes;
    for (int j = threadIdx.x; j < H; j += blockDim.x) o[j] = dequant1<WT>(row, j);
}

int cuda_embed_q(ops_t *ops, float *out, const int32_t *ids, const void *table, ops_wtype_t wtype, int T, int H) {
    if ((unsigned)wtype > OPS_W_Q4_1) return cuda_fail(ops, OPS_EINVAL, "embed_q: unknown weight type %d", (int)wtype);
    if (T < 0 || H <= 0) return cuda_fail(ops, OPS_EINVAL, "embed_q: bad shape T=%d H=%d", T, H);
    const size_t rb = cuda_wrow_bytes(wtype, H);
    if (!rb) return cuda_fail(ops, OPS_EINVAL, "embed_q: H=%d is not a multiple of 32 (block format)", H);
    if (T == 0) return OPS_OK;
    if (!out || !ids || !table) return cuda_fail(ops, OPS_EINVAL, "embed_q: NULL buffer");
    if (T > INT32_MAX / 2) return cuda_fail(ops, OPS_EINVAL, "embed_q: T=%d too large", T);
    int rc = cuda_enter(ops);
    if (rc) return rc;
    cudaStream_t s = cuda_impl(ops)->stream;
    const unsigned threads = H >= 256 ? 256 : 128;
    const uint8_t *tb = (const uint8_t *)table;
    switch (wtype) {
    case OPS_W_F32: embed_q_kernel<OPS_W_F32><<<T, threads, 0, s>>>(out, ids, tb, H, rb); break;
    case OPS_W_F16: embed_q_kernel<OPS_W_F16><<<T, threads, 0, s>>>(out, ids, tb, H, rb); break;
    case OPS_W_Q8_0: embed_q_kernel<OPS_W_Q8_0><<<T, threads, 0, s>>>(out, ids, tb, H, rb); break;
    case OPS_W_Q4_0: embed_q_kernel<OPS_W_Q4_0><<<T, threads, 0, s>>>(out, ids, tb, H, rb); break;
    case OPS_W_Q4_1: embed_q_kernel<OPS_W_Q4_1><<<T, threads, 0, s>>>(out, ids, tb, H, rb); break;
    }
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

/* ---- add_rms_norm ---- */

/* One block per row. Each thread reads delta's and resid's columns before it
 * writes any, and writes only its own columns, so out may alias delta. */
static __global__ void __launch_bounds__(RMS_THREADS)
    add_rms_norm_kernel(float *out, float *resid, const float *delta, const float *__restrict__ w, int H,
                        float eps) {
    __shared__ float red[32];
    const size_t base = (size_t)blockIdx.x * H;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < H; j += RMS_THREADS) {
        float r = resid[base + j];
        if (delta) {
            r += delta[base + j];
            resid[base + j] = r;
        }
        ss = fmaf(r, r, ss);
    }
    ss = block_sum(ss, red);
    const float inv = 1.0f / sqrtf(ss / (float)H + eps);
    for (int j = threadIdx.x; j < H; j += RMS_THREADS) out[base + j] = resid[base + j] * inv * w[j];
}

int cuda_add_rms_norm(ops_t *ops, float *out, float *resid, const float *delta, const float *w, int T, int H,
                      float eps) {
    if (T < 0 || H <= 0) return cuda_fail(ops, OPS_EINVAL, "add_rms_norm: bad shape T=%d H=%d", T, H);
    if (!(eps >= 0.0f) || !isfinite(eps)) return cuda_fail(ops, OPS_EINVAL, "add_rms_norm: eps = %g", eps);
    if (T == 0) return OPS_OK;
    if (!out || !resid || !w) return cuda_fail(ops, OPS_EINVAL, "add_rms_norm: NULL buffer");
    if (out == resid) return cuda_fail(ops, OPS_EINVAL, "add_rms_norm: out must not alias resid");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    add_rms_norm_kernel<<<T, RMS_THREADS, 0, cuda_impl(ops)->stream>>>(out, resid, delta, w, H, eps);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

/* ---- rope ---- */

#define ROPE_MAX_HD 256 /* the inverse frequencies travel by value in the launch (512 bytes) */
typedef struct {
    float inv[ROPE_MAX_HD / 2]; /* 1 / theta^(2i/head_dim), computed on the host as the CPU backend does */
} rope_freqs_t;

/* One thread per (token, pair i); it rotates pair i of every head. The
 * inverse frequencies come from the host (powf there, as kernels/cpu does and
 * transformers' float32 inv_freq): a one-ulp difference in them moves the
 * angle at position 30,000 by 2e-3 rad. The angle is (float)pos * inv rounded
 * to float, then sincosf (full precision: no fast-math in this build). */
static __global__ void rope_kernel(float *x, const int32_t *__restrict__ pos, int T, int n_heads, int head_dim,
                                   int row_stride, rope_freqs_t f) {
    const int half = head_dim >> 1;
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)T * half) return;
    const int t = (int)(idx / half), i = (int)(idx % half);
    const int p = pos[t];
    if (p < 0) return;
    const float a = (float)p * f.inv[i];
    float sn, cs;
    sincosf(a, &sn, &cs);
    float *row = x + (size_t)t * row_stride + 2 * i;
    for (int h = 0; h < n_heads; h++) {
        float2 v = *(float2 *)(row + (size_t)h * head_dim);
        float2 r;
        r.x = v.x * cs - v.y * sn;
        r.y = v.x * sn + v.y * cs;
        *(float2 *)(row + (size_t)h * head_dim) = r;
    }
}

int cuda_rope(ops_t *ops, float *x, const int32_t *pos, int T, int n_heads, int head_dim, int row_stride,
              float theta) {
    if (T < 0 || n_heads <= 0 || head_dim <= 0 || head_dim % 2 || head_dim > INT32_MAX / n_heads)
        return cuda_fail(ops, OPS_EINVAL, "rope: bad shape T=%d n_heads=%d head_dim=%d (head_dim even)", T, n_heads,
                         head_dim);
    if (row_stride < n_heads * head_dim)
        return cuda_fail(ops, OPS_EINVAL, "rope: row_stride %d < n_heads * head_dim = %d", row_stride,
                         n_heads * head_dim);
    if (!(theta > 0.0f) || !isfinite(theta)) return cuda_fail(ops, OPS_EINVAL, "rope: theta = %g", theta);
    if (T == 0) return OPS_OK;
    if (!x || !pos) return cuda_fail(ops, OPS_EINVAL, "rope: NULL buffer");
    if (((uintptr_t)x & 7) || (row_stride & 1))
        return cuda_fail(ops, OPS_EINVAL, "rope: x and row_stride must keep pairs 8-byte aligned");
    if (head_dim > ROPE_MAX_HD)
        return cuda_fail(ops, OPS_EINVAL, "rope: head_dim %d too large on cuda (at most %d)", head_dim, ROPE_MAX_HD);
    rope_freqs_t f;
    for (int i = 0; i < head_dim / 2; i++) f.inv[i] = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
    int rc = cuda_enter(ops);
    if (rc) return rc;
    const int64_t n = (int64_t)T * (head_dim / 2);
    rope_kernel<<<grid_1d(n, 256, 1u << 30), 256, 0, cuda_impl(ops)->stream>>>(x, pos, T, n_heads, head_dim,
                                                                              row_stride, f);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

/* ---- silu_mul ---- */

static __global__ void silu_mul_kernel(float *__restrict__ out, const float *__restrict__ gu, int T, int F) {
    const int64_t n = (int64_t)T * F;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = idx / F, i = idx % F;
        const float g = gu[t * 2 * F + i], u = gu[t * 2 * F + F + i];
        out[idx] = g / (1.0f + expf(-g)) * u;
    }
}

int cuda_silu_mul(ops_t *ops, float *out, const float *gu, int T, int F) {
    if (T < 0 || F <= 0 || F > INT32_MAX / 2) return cuda_fail(ops, OPS_EINVAL, "silu_mul: bad shape T=%d F=%d", T, F);
    if (T == 0) return OPS_OK;
    if (!out || !gu) return cuda_fail(ops, OPS_EINVAL, "silu_mul: NULL buffer");
    if (out < gu + (size_t)T * 2 * F && gu < out + (size_t)T * F)
        return cuda_fail(ops, OPS_EINVAL, "silu_mul: out must not overlap gu");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    const int64_t n = (int64_t)T * F;
    silu_mul_kernel<<<grid_1d(n, 256, 65535u * 16), 256, 0, cuda_impl(ops)->stream>>>(out, gu, T, F);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

/* ---- kv_store ---- */

/* One thread per (token, value); the cache row of a slot is n_kv_heads*head_dim halves. */
static __global__ void kv_store_kernel(__half *__restrict__ kc, __half *__restrict__ vc, const float *__restrict__ k,
                                       const float *__restrict__ v, int row_stride, const int32_t *__restrict__ slot,
                                       int T, int width) {
    const int64_t n = (int64_t)T * width;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = idx / width, e = idx % width;
        const int sl = slot[t];
        if (sl < 0) continue;
        kc[(size_t)sl * width + e] = __float2half_rn(k[t * row_stride + e]);
        vc[(size_t)sl * width + e] = __float2half_rn(v[t * row_stride + e]);
    }
}

int cuda_kv_store(ops_t *ops, void *k_cache, void *v_cache, const float *k, const float *v, int row_stride,
                  const int32_t *slot, int T, int n_kv_heads, int head_dim) {
    if (T < 0 || n_kv_heads <= 0 || head_dim <= 0 || head_dim > INT32_MAX / n_kv_heads)
        return cuda_fail(ops, OPS_EINVAL, "kv_store: bad shape T=%d n_kv_heads=%d head_dim=%d", T, n_kv_heads,
                         head_dim);
    const int width = n_kv_heads * head_dim;
    if (row_stride < width)
        return cuda_fail(ops, OPS_EINVAL, "kv_store: row_stride %d < n_kv_heads * head_dim = %d", row_stride, width);
    if (T == 0) return OPS_OK;
    if (!k_cache || !v_cache || !k || !v || !slot) return cuda_fail(ops, OPS_EINVAL, "kv_store: NULL buffer");
    if (ops->kv_dtype != OPS_F16) return cuda_fail(ops, OPS_EINVAL, "kv_store: the cuda cache is fp16");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    const int64_t n = (int64_t)T * width;
    kv_store_kernel<<<grid_1d(n, 256, 65535u * 16), 256, 0, cuda_impl(ops)->stream>>>(
        (__half *)k_cache, (__half *)v_cache, k, v, row_stride, slot, T, width);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}
