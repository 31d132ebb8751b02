/* kernels/cuda/attention.cu - fused multi-head self-attention over packed
 * variable-length sequences (no padding, up to 512 tokens each). No T x T
 * matrix ever exists: K and V are walked in tiles staged in shared memory and
 * each tile's scores fold into an online softmax (running max m, running sum
 * l). Two kernels:
 *
 * - bf16 or fp16, head_dim 32, 64 or 128 (BERT's): tensor cores. One warp =
 *   16 queries, a block = 4 warps = 64 queries of one head of one sequence;
 *   grid (sequence, query tile, head). S = Q K^T and O += P V are mma.sync
 *   m16n8k16 (16-bit in, fp32 accumulate); the S fragments are re-packed in
 *   registers as the A operand of P V (the C and A fragment layouts line up),
 *   so P never touches shared memory. P is rounded to the activation type for
 *   the product. One kernel source for both types: the mma instruction, the
 *   pair packing and the rounding are the type traits mma_elem<T>. fp16's
 *   three extra mantissa bits matter here (P in [0, 1] never overflows it).
 * - everything else (fp32, other head sizes, SLUICE_CUDA_FALLBACK=1): CUDA
 *   cores, fp32 throughout. Four threads share a query, each owning a quarter
 *   of the head dimensions (float4 chunks part, part+4, ...), so q and the
 *   accumulator fit in registers up to head_dim 128; 32 queries per block.
 *
 * The QKV bias (optional) is applied here: attention is qkv's only reader, so
 * this saves the QKV matmul a bias pass over (T, 3H). The CUDA-core kernel
 * adds it in fp32 as q, K and V are read. The tensor-core kernel adds q's in
 * fp32 and rounds the sum once for the mma; it leaves K's out, because k's
 * bias moves every score of query row i by the same (q_i + b_q) . b_k, which
 * softmax cancels exactly; and it adds V's in fp32 to the normalised output, because
 * the weights of the sum add up to one (l sums the very P that multiplies V).
 * So K and V reach the products rounded once (by the QKV matmul), not twice.
 *
 * Control flow (both): a block whose query tile starts past its sequence's
 * end returns as a whole before any barrier; inside, every thread runs every
 * tile (queries past the end compute on zeros and write nothing), so the
 * barriers, shuffles and mma.sync always see full warps. */
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

#define ATTN_BQ 32      /* queries per block */
#define ATTN_BK 32      /* keys per shared-memory tile */
#define ATTN_THREADS (ATTN_BQ * 4)

/* Where a block stands: grid (sequence, query tile of bq, head). Returns
 * false when its query tile starts past the sequence's end; the caller then
 * returns, the whole block together, before any barrier. */
typedef struct attention_tile {
    int64_t start; /* first token of the sequence */
    int len;       /* tokens in the sequence */
    int q0;        /* first query of this block, within the sequence */
    int64_t hoff;  /* first column of this head within a q, k or v part */
} attention_tile_t;

static __device__ __forceinline__ bool attention_tile(const int32_t *seq_off, int bq, int head_dim,
                                                      attention_tile_t *at) {
    const int b = blockIdx.x;
    at->start = seq_off[b];
    at->len = seq_off[b + 1] - seq_off[b];
    at->q0 = blockIdx.y * bq;
    at->hoff = (int64_t)blockIdx.z * head_dim;
    return at->q0 < at->len;
}

template <typename T, int DMAX>
static __global__ void __launch_bounds__(ATTN_THREADS)
    attention_kernel(T *out, const T *qkv, const float *bias, const int32_t *seq_off, int H, int head_dim,
                     float scale) {
    constexpr int CH = DMAX / 16; /* float4 chunks per thread */
    static_assert(ATTN_THREADS % DMAX == 0, "each thread stages one fixed column of K and V");
    __shared__ __align__(16) float Ks[ATTN_BK * DMAX];
    __shared__ __align__(16) float Vs[ATTN_BK * DMAX];

    attention_tile_t at;
    if (!attention_tile(seq_off, ATTN_BQ, head_dim, &at)) return; /* uniform over the block */
    const int64_t start = at.start, hoff = at.hoff;
    const int len = at.len, q0 = at.q0;

    const int tid = threadIdx.x, part = tid & 3;
    const int qi = q0 + (tid >> 2);
    const bool q_live = qi < len;
    const int64_t row3 = 3 * (int64_t)H; /* elements per token in qkv */

    float q[4 * CH], acc[4 * CH];
#pragma unroll
    for (int i = 0; i < CH; i++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int d = 4 * (part + 4 * i) + e;
            float qv = 0.0f;
            if (q_live && d < head_dim) {
                qv = to_f32(qkv[(start + qi) * row3 + hoff + d]);
                if (bias) qv += bias[hoff + d];
            }
            q[4 * i + e] = qv;
            acc[4 * i + e] = 0.0f;
        }
    }
    float m = -INFINITY, l = 0.0f;

    /* The column this thread stages in every K/V tile (rows tid / DMAX, then
     * every ATTN_THREADS / DMAX), and its k and v bias. */
    const int sd = tid % DMAX;
    const bool sd_live = sd < head_dim;
    const float kb = (bias && sd_live) ? bias[H + hoff + sd] : 0.0f;
    const float vb = (bias && sd_live) ? bias[2 * (int64_t)H + hoff + sd] : 0.0f;

    const int ntiles = (len + ATTN_BK - 1) / ATTN_BK;
    for (int kt = 0; kt < ntiles; kt++) {
        const int k0 = kt * ATTN_BK;
        __syncthreads(); /* the previous tile is no longer read */
        for (int j = tid / DMAX; j < ATTN_BK; j += ATTN_THREADS / DMAX) {
            float kv = 0.0f, vv = 0.0f;
            if (k0 + j < len && sd_live) {
                const T *src = qkv + (start + k0 + j) * row3 + hoff + sd;
                kv = to_f32(src[H]) + kb;
                vv = to_f32(src[2 * (int64_t)H]) + vb;
            }
            Ks[j * DMAX + sd] = kv;
            Vs[j * DMAX + sd] = vv;
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

/* ---- tensor cores (bf16, fp16) ---- */

#define MMA_BQ 64 /* queries per block: 4 warps x 16 */
#define MMA_BK 64 /* keys per shared-memory tile */
#define MMA_THREADS 128

/* d += a b for one warp: a 16x16 (row-major fragments), b 16x8 (column), d 16x8 fp32.
 * Fragment layouts (PTX ISA, mma.m16n8k16; the same for .bf16 and .f16), g = lane / 4, tg = lane % 4:
 *   a[0] = A[g][2tg..2tg+1]   a[1] = A[g+8][2tg..]   a[2] = A[g][2tg+8..]   a[3] = A[g+8][2tg+8..]
 *   b[0] = B[2tg..2tg+1][g]   b[1] = B[2tg+8..2tg+9][g]
 *   d[0..1] = D[g][2tg..2tg+1]   d[2..3] = D[g+8][2tg..2tg+1]
 * (lower element in the low 16 bits of each register).
 *
 * mma_elem<T>: what the tensor-core kernel needs of its 16-bit element type. */
template <typename T> struct mma_elem;

template <> struct mma_elem<__nv_bfloat16> {
    static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    static __device__ __forceinline__ uint32_t bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
    static __device__ __forceinline__ __nv_bfloat16 value(uint32_t b) {
        return __ushort_as_bfloat16((unsigned short)b);
    }
};

template <> struct mma_elem<__half> {
    static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    static __device__ __forceinline__ uint32_t bits(__half v) { return __half_as_ushort(v); }
    static __device__ __forceinline__ __half value(uint32_t b) { return __ushort_as_half((unsigned short)b); }
};

/* Two elements in one register, lo in the low 16 bits (the fragment order). */
template <typename T> static __device__ __forceinline__ uint32_t pack_pair(T lo, T hi) {
    return mma_elem<T>::bits(lo) | (mma_elem<T>::bits(hi) << 16);
}

/* A packed pair plus (b_lo, b_hi): widened to fp32, added, rounded back once. */
template <typename T>
static __device__ __forceinline__ uint32_t add_bias_pair(uint32_t pair, float b_lo, float b_hi) {
    const float lo = to_f32(mma_elem<T>::value(pair & 0xffffu)) + b_lo;
    const float hi = to_f32(mma_elem<T>::value(pair >> 16)) + b_hi;
    return pack_pair(from_f32<T>(lo), from_f32<T>(hi));
}

/* Blocks per SM the register budget must allow: nvcc alone let the head_dim
 * 128 kernel grow past 170 registers (2 blocks) once q's bias came in; 3 and
 * 4 (128 registers) are what 128 and 64 fit without spills (checked with
 * -Xptxas -v for sm_80 and sm_90); 0 leaves head_dim 32 to nvcc (~80-96). */
#define MMA_MIN_BLOCKS(HD) ((HD) == 128 ? 3 : (HD) == 64 ? 4 : 0)

template <typename T, int HD>
static __global__ void __launch_bounds__(MMA_THREADS, MMA_MIN_BLOCKS(HD))
    attention_mma_kernel(T *out, const T *qkv, const float *bias, const int32_t *seq_off, int H, float scale) {
    constexpr int LD = HD + 8;      /* shared row stride: 16 bytes of padding keep fragment reads conflict-free */
    constexpr int KC = HD / 16;     /* k-chunks of the head for S = Q K^T */
    constexpr int DT = HD / 8;      /* n-tiles of the head for O += P V */
    constexpr int NT = MMA_BK / 8;  /* n-tiles of keys in S */
    constexpr int CPR = HD / 8;     /* 16-byte chunks per K/V row */
    __shared__ __align__(16) T Ks[MMA_BK * LD];
    __shared__ __align__(16) T Vs[MMA_BK * LD];

    attention_tile_t at;
    if (!attention_tile(seq_off, MMA_BQ, HD, &at)) return; /* uniform over the block */
    const int64_t start = at.start, hoff = at.hoff;
    const int len = at.len, q0 = at.q0;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
    const int64_t row3 = 3 * (int64_t)H;
    const int qa = q0 + warp * 16 + g, qb = qa + 8; /* this thread's two query rows */

    /* Q as A fragments (plus q's bias, rounded once), zero past the sequence's end. */
    uint32_t qf[KC][4];
#pragma unroll
    for (int kc = 0; kc < KC; kc++) {
        const int c = kc * 16 + 2 * tg;
        const T *ra = qkv + (start + qa) * row3 + hoff, *rb = qkv + (start + qb) * row3 + hoff;
        qf[kc][0] = qa < len ? *reinterpret_cast<const uint32_t *>(ra + c) : 0u;
        qf[kc][1] = qb < len ? *reinterpret_cast<const uint32_t *>(rb + c) : 0u;
        qf[kc][2] = qa < len ? *reinterpret_cast<const uint32_t *>(ra + c + 8) : 0u;
        qf[kc][3] = qb < len ? *reinterpret_cast<const uint32_t *>(rb + c + 8) : 0u;
        if (bias) {
            const float *bq = bias + hoff + c;
            if (qa < len) {
                qf[kc][0] = add_bias_pair<T>(qf[kc][0], bq[0], bq[1]);
                qf[kc][2] = add_bias_pair<T>(qf[kc][2], bq[8], bq[9]);
            }
            if (qb < len) {
                qf[kc][1] = add_bias_pair<T>(qf[kc][1], bq[0], bq[1]);
                qf[kc][3] = add_bias_pair<T>(qf[kc][3], bq[8], bq[9]);
            }
        }
    }
    float o[DT][4];
#pragma unroll
    for (int dt = 0; dt < DT; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    /* Per row (a: g, b: g+8): running max, and this thread's part of the running sum. */
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;

    const int ntiles = (len + MMA_BK - 1) / MMA_BK;
    for (int kt = 0; kt < ntiles; kt++) {
        const int k0 = kt * MMA_BK;
        __syncthreads(); /* the previous tile is no longer read */
        for (int idx = tid; idx < MMA_BK * CPR; idx += MMA_THREADS) {
            const int j = idx / CPR, ch = idx % CPR;
            uint4 kv = make_uint4(0u, 0u, 0u, 0u), vv = make_uint4(0u, 0u, 0u, 0u);
            if (k0 + j < len) { /* rows past the end stay zero: 0 * p, never NaN * 0 */
                const T *src = qkv + (start + k0 + j) * row3 + hoff + ch * 8;
                kv = *reinterpret_cast<const uint4 *>(src + H);
                vv = *reinterpret_cast<const uint4 *>(src + 2 * (int64_t)H);
            }
            *reinterpret_cast<uint4 *>(&Ks[j * LD + ch * 8]) = kv;
            *reinterpret_cast<uint4 *>(&Vs[j * LD + ch * 8]) = vv;
        }
        __syncthreads();

        /* S = Q K^T: 16 rows x 64 keys per warp. */
        float s[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
            for (int kc = 0; kc < KC; kc++) {
                const T *kr = &Ks[(nt * 8 + g) * LD + kc * 16 + 2 * tg];
                const uint32_t kb[2] = {*reinterpret_cast<const uint32_t *>(kr),
                                        *reinterpret_cast<const uint32_t *>(kr + 8)};
                mma_elem<T>::mma(s[nt], qf[kc], kb);
            }
        }
        /* Scale, mask the keys past the end, and take each row's tile maximum
         * (the four threads of a row hold 16 of its 64 scores each). */
        float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const bool live = k0 + nt * 8 + 2 * tg + e < len;
                s[nt][e] = live ? s[nt][e] * scale : -INFINITY;
                s[nt][2 + e] = live ? s[nt][2 + e] * scale : -INFINITY;
                mx_a = fmaxf(mx_a, s[nt][e]);
                mx_b = fmaxf(mx_b, s[nt][2 + e]);
            }
        }
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
        /* Finite: key k0 < len is in every tile. */
        const float mn_a = fmaxf(m_a, mx_a), mn_b = fmaxf(m_b, mx_b);
        const float c_a = expf(m_a - mn_a), c_b = expf(m_b - mn_b); /* 0 on the first tile */
        m_a = mn_a;
        m_b = mn_b;
        l_a *= c_a;
        l_b *= c_b;
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            o[dt][0] *= c_a;
            o[dt][1] *= c_a;
            o[dt][2] *= c_b;
            o[dt][3] *= c_b;
        }
        /* O += P V, 16 keys at a time: S tiles 2kc and 2kc+1 are exactly the
         * A fragment of P for those keys. l sums the rounded P (bf16 or fp16)
         * that V is multiplied by, so the weights still add up to one. */
#pragma unroll
        for (int kc = 0; kc < MMA_BK / 16; kc++) {
            uint32_t pf[4];
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const float *sv = s[2 * kc + half];
                const T p0 = from_f32<T>(expf(sv[0] - m_a));
                const T p1 = from_f32<T>(expf(sv[1] - m_a));
                const T p2 = from_f32<T>(expf(sv[2] - m_b));
                const T p3 = from_f32<T>(expf(sv[3] - m_b));
                l_a += to_f32(p0) + to_f32(p1);
                l_b += to_f32(p2) + to_f32(p3);
                pf[2 * half] = pack_pair(p0, p1);     /* row g */
                pf[2 * half + 1] = pack_pair(p2, p3); /* row g+8 */
            }
#pragma unroll
            for (int dt = 0; dt < DT; dt++) {
                const T *vr = &Vs[(kc * 16 + 2 * tg) * LD + dt * 8 + g];
                const uint32_t vb[2] = {pack_pair(vr[0], vr[LD]), pack_pair(vr[8 * LD], vr[9 * LD])};
                mma_elem<T>::mma(o[dt], pf, vb);
            }
        }
    }

    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
    const float inv_a = 1.0f / l_a, inv_b = 1.0f / l_b; /* >= 1 each: the maximum's own term */
#pragma unroll
    for (int dt = 0; dt < DT; dt++) {
        const int c = dt * 8 + 2 * tg;
        float bv0 = 0.0f, bv1 = 0.0f; /* V's bias: sum_j p_j (v_j + b) / l = sum_j p_j v_j / l + b */
        if (bias) {
            bv0 = bias[2 * (int64_t)H + hoff + c];
            bv1 = bias[2 * (int64_t)H + hoff + c + 1];
        }
        if (qa < len)
            *reinterpret_cast<uint32_t *>(out + (start + qa) * (int64_t)H + hoff + c) =
                pack_pair(from_f32<T>(o[dt][0] * inv_a + bv0), from_f32<T>(o[dt][1] * inv_a + bv1));
        if (qb < len)
            *reinterpret_cast<uint32_t *>(out + (start + qb) * (int64_t)H + hoff + c) =
                pack_pair(from_f32<T>(o[dt][2] * inv_b + bv0), from_f32<T>(o[dt][3] * inv_b + bv1));
    }
}

template <typename T>
static int attention_launch(ops_t *ops, T *out, const T *qkv, const float *bias, const int32_t *seq_off, int B,
                            int max_len, int n_heads, int head_dim, float scale) {
    const dim3 grid((unsigned)B, (unsigned)((max_len + ATTN_BQ - 1) / ATTN_BQ), (unsigned)n_heads);
    const int H = n_heads * head_dim;
    cudaStream_t s = cuda_impl(ops)->stream;
    if (head_dim <= 32)
        attention_kernel<T, 32><<<grid, ATTN_THREADS, 0, s>>>(out, qkv, bias, seq_off, H, head_dim, scale);
    else if (head_dim <= 64)
        attention_kernel<T, 64><<<grid, ATTN_THREADS, 0, s>>>(out, qkv, bias, seq_off, H, head_dim, scale);
    else
        attention_kernel<T, 128><<<grid, ATTN_THREADS, 0, s>>>(out, qkv, bias, seq_off, H, head_dim, scale);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

/* The tensor-core kernel reads 16-byte rows and writes 16-bit pairs: it needs
 * head_dim 32/64/128, H a multiple of 8 and 16-byte aligned buffers. */
static bool attention_mma_fits(const void *out, const void *qkv, int n_heads, int head_dim) {
    const int H = n_heads * head_dim;
    return (head_dim == 32 || head_dim == 64 || head_dim == 128) && H % 8 == 0 && ((uintptr_t)out & 15) == 0 &&
           ((uintptr_t)qkv & 15) == 0;
}

template <typename T>
static int attention_mma_launch(ops_t *ops, T *out, const T *qkv, const float *bias, const int32_t *seq_off, int B,
                                int max_len, int n_heads, int head_dim, float scale) {
    const dim3 grid((unsigned)B, (unsigned)((max_len + MMA_BQ - 1) / MMA_BQ), (unsigned)n_heads);
    const int H = n_heads * head_dim;
    cudaStream_t s = cuda_impl(ops)->stream;
    if (head_dim == 32)
        attention_mma_kernel<T, 32><<<grid, MMA_THREADS, 0, s>>>(out, qkv, bias, seq_off, H, scale);
    else if (head_dim == 64)
        attention_mma_kernel<T, 64><<<grid, MMA_THREADS, 0, s>>>(out, qkv, bias, seq_off, H, scale);
    else
        attention_mma_kernel<T, 128><<<grid, MMA_THREADS, 0, s>>>(out, qkv, bias, seq_off, H, scale);
    CUDA_CHECK_LAUNCH();
    return OPS_OK;
}

int cuda_attention(ops_t *ops, void *out, const void *qkv, const float *qkv_bias, const int32_t *seq_off, int B,
                   int max_len, int n_heads, int head_dim, float scale) {
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
    const bool mma = !cuda_impl(ops)->fallback && attention_mma_fits(out, qkv, n_heads, head_dim);
    const float *b = qkv_bias;
    if (ops->dtype == OPS_BF16 && mma)
        return attention_mma_launch(ops, (__nv_bfloat16 *)out, (const __nv_bfloat16 *)qkv, b, seq_off, B, max_len,
                                    n_heads, head_dim, scale);
    if (ops->dtype == OPS_F16 && mma)
        return attention_mma_launch(ops, (__half *)out, (const __half *)qkv, b, seq_off, B, max_len, n_heads,
                                    head_dim, scale);
    if (ops->dtype == OPS_BF16)
        return attention_launch(ops, (__nv_bfloat16 *)out, (const __nv_bfloat16 *)qkv, b, seq_off, B, max_len,
                                n_heads, head_dim, scale);
    if (ops->dtype == OPS_F16)
        return attention_launch(ops, (__half *)out, (const __half *)qkv, b, seq_off, B, max_len, n_heads, head_dim,
                                scale);
    return attention_launch(ops, (float *)out, (const float *)qkv, b, seq_off, B, max_len, n_heads, head_dim, scale);
}
