/* kernels/cuda/sample.cu - token selection on the device (kernels/ops.h
 * argmax): the greedy id of each row of logits, so a decode step copies back
 * B int32 ids instead of B x vocab floats.
 *
 * One block of AM_THREADS threads per row: thread i scans columns i, i +
 * AM_THREADS, ... keeping the first of its largest values, then a warp and a
 * block reduction keep the larger value, or on a tie the lower index. The
 * result is exact (a comparison, no arithmetic), so it equals the CPU
 * backend's single pass for every row: the lowest index among equal maxima,
 * NaN never chosen, 0 for a row with no number in it.
 */
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

#define AM_THREADS 1024

/* Replaces (bv, bi) by (v, i) when v is a number and beats it: larger, or
 * equal with a lower index; bi < 0 means nothing yet. */
static __device__ __forceinline__ void am_take(float v, int i, float *bv, int *bi) {
    if (v == v && (*bi < 0 || v > *bv || (v == *bv && i < *bi))) *bv = v, *bi = i;
}

static __device__ __forceinline__ void am_warp(float *bv, int *bi) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, *bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, *bi, o);
        if (oi >= 0) am_take(ov, oi, bv, bi);
    }
}

static __global__ void __launch_bounds__(AM_THREADS)
    argmax_kernel(int32_t *__restrict__ out, const float *__restrict__ x, int n) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const float *row = x + (size_t)blockIdx.x * n;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    float bv = -INFINITY;
    int bi = -1;
    for (int i = threadIdx.x; i < n; i += blockDim.x) am_take(row[i], i, &bv, &bi);
    am_warp(&bv, &bi);
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (warp == 0) {
        bv = lane < nwarps ? sv[lane] : -INFINITY;
        bi = lane < nwarps ? si[lane] : -1;
        am_warp(&bv, &bi);
        if (lane == 0) out[blockIdx.x] = bi < 0 ? 0 : bi;
    }
}

int cuda_argmax(ops_t *ops, int32_t *out_idx, const float *x, int rows, int n) {
    if (rows < 0 || n <= 0) return cuda_fail(ops, OPS_EINVAL, "argmax: bad shape rows=%d n=%d", rows, n);
    if (rows == 0) return OPS_OK;
    if (!out_idx || !x) return cuda_fail(ops, OPS_EINVAL, "argmax: NULL buffer");
    int rc = cuda_enter(ops);
    if (rc) return rc;
    const unsigned threads = n >= AM_THREADS ? AM_THREADS : (unsigned)((n + 31) / 32 * 32);
    argmax_kernel<<<(unsigned)rows, threads, 0, cuda_impl(ops)->stream>>>(out_idx, x, n);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}
