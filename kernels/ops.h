/* kernels/ops.h - the backend interface: one struct of op pointers per device.
 *
 * The engine runs every model through this table and never #ifdefs on CUDA.
 * Two backends fill it: kernels/cpu (OpenBLAS + C, the reference) and
 * kernels/cuda (our kernels + cuBLAS/cuBLASLt).
 *
 * Memory model
 *   Every buffer passed to an op lives in the backend's memory space (host
 *   memory for cpu, device memory for cuda). Buffers come from ops->mem_alloc
 *   (one big allocation per arena; callers carve it by a pointer walk), and
 *   cross the host boundary only through ops->upload / ops->download.
 *
 * Precision
 *   ops->dtype is the activation and weight-matrix type of this instance:
 *   OPS_F32 everywhere, OPS_BF16 and OPS_F16 on CUDA (fp32 accumulation and
 *   math, 16-bit storage). bf16 keeps fp32's range with 8 bits of mantissa;
 *   fp16 has 11 bits but a range of +-65504: a float32 weight beyond it
 *   converts to +-inf (IEEE round to nearest), which BERT weights never are.
 *   "act" buffers below hold ops->dtype elements (ops_dtype_size(ops->dtype)
 *   bytes each). Biases, LayerNorm gamma/beta, embedding tables and the pooled
 *   output are always float32. Weight matrices (W of matmul) are in ops->dtype:
 *   upload them with ops->upload_weight, which converts from float32.
 *   Integer metadata (token ids, positions, sequence offsets) is int32.
 *
 * Packed batches
 *   A batch of B sequences is laid end to end: T = total tokens, sequence b
 *   covers tokens [seq_off[b], seq_off[b+1]), seq_off has B+1 entries,
 *   seq_off[0] = 0, seq_off[B] = T. Attention never crosses a sequence border;
 *   there is no padding.
 *
 * Ordering and threads
 *   An ops_t is one stream of work: calls on it execute in order, possibly
 *   asynchronously (cuda); ops->sync waits for all of them. An ops_t is used
 *   by one thread at a time. ops->clone makes a sibling on the same device
 *   with its own stream, so two batches can be in flight at once.
 *
 * Errors
 *   Every op returns 0 or a negative OPS_E* code and, on error, writes a
 *   message (statement, file, line for CUDA) into ops->err.
 */
#ifndef SLUICE_OPS_H
#define SLUICE_OPS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { OPS_F32 = 0, OPS_BF16 = 1, OPS_F16 = 2 } ops_dtype_t;

enum {
    OPS_OK = 0,
    OPS_EINVAL = -1,    /* bad shape or argument */
    OPS_ENOMEM = -2,    /* allocation refused (budget or device) */
    OPS_EDEVICE = -3,   /* device/runtime/library failure */
    OPS_ENODEV = -4,    /* backend not available (no GPU, not built) */
};

typedef enum {
    OPS_EPI_NONE = 0,      /* out = in @ W^T */
    OPS_EPI_BIAS = 1,      /* out = in @ W^T + bias */
    OPS_EPI_BIAS_GELU = 2, /* out = gelu_erf(in @ W^T + bias) */
} ops_epilogue_t;

/* Weight formats of the decoder ops (matmul_q, embed_q): rows of K values,
 * stored as the GGUF file has them (see engine/gguf.h for the block layouts).
 * K is a multiple of 32 for the block formats. */
typedef enum {
    OPS_W_F32 = 0,  /* K floats a row */
    OPS_W_F16 = 1,  /* K IEEE halves a row */
    OPS_W_Q8_0 = 2, /* K/32 blocks of 34 bytes a row */
    OPS_W_Q4_0 = 3, /* K/32 blocks of 18 bytes a row */
    OPS_W_Q4_1 = 4, /* K/32 blocks of 20 bytes a row */
} ops_wtype_t;

typedef struct ops ops_t;

struct ops {
    const char *name;  /* "cpu" or "cuda" */
    ops_dtype_t dtype; /* activation and weight-matrix type */
    void *impl;        /* backend state, owned by the backend */
    char err[512];     /* last error message */

    /* ---- lifetime ---- */
    void (*destroy)(ops_t *ops);
    /* A sibling on the same device with its own stream (and its own
     * BLAS handle). Buffers are shared. NULL on failure (message in ops->err). */
    ops_t *(*clone)(ops_t *ops);

    /* ---- memory ---- */
    void *(*mem_alloc)(ops_t *ops, size_t bytes); /* NULL on failure */
    void (*mem_free)(ops_t *ops, void *p);        /* NULL is a no-op */
    /* Bytes the device has free and in total (host RAM on cpu). */
    int (*mem_info)(ops_t *ops, size_t *free_bytes, size_t *total_bytes);
    int (*upload)(ops_t *ops, void *dst, const void *src_host, size_t bytes);
    int (*download)(ops_t *ops, void *dst_host, const void *src, size_t bytes);
    /* Convert n float32 host values to a weight matrix in ops->dtype at dst. */
    int (*upload_weight)(ops_t *ops, void *dst, const float *src_host, size_t n);
    int (*sync)(ops_t *ops);
    /* Host staging memory that copies can overlap with compute from (pinned on
     * cuda). Optional: NULL means plain malloc/free serves. */
    void *(*host_alloc)(ops_t *ops, size_t bytes);
    void (*host_free)(ops_t *ops, void *p);

    /* ---- ops ---- */

    /* out(T,H) act = LayerNorm(word[ids[t]] + pos[pos_ids[t]] + type[0]) * gamma + beta
     * word (V,H), pos (P,H), type (>=1,H), gamma/beta (H): float32.
     * ids, pos_ids (T): int32, each checked against V and P by the caller. */
    int (*embed_ln)(ops_t *ops, void *out, const int32_t *ids, const int32_t *pos_ids,
                    const float *word, const float *pos, const float *type,
                    const float *gamma, const float *beta, int T, int H, float eps);

    /* out(T,N) act = epilogue(in(T,K) act @ W(N,K)^T + bias(N) f32).
     * W is a weight matrix in ops->dtype, row-major (N,K) as in HF Linear.
     * bias may be NULL only with OPS_EPI_NONE. out must not alias in. */
    int (*matmul)(ops_t *ops, void *out, const void *in, const void *W, const float *bias,
                  int T, int K, int N, ops_epilogue_t epi);

    /* out(T,H) act = LayerNorm(x(T,H) act + bias(H) + residual(T,H) act) * gamma + beta.
     * out may alias residual or x (in-place). bias may be NULL. */
    int (*add_ln)(ops_t *ops, void *out, const void *x, const float *bias, const void *residual,
                  const float *gamma, const float *beta, int T, int H, float eps);

    /* Multi-head self-attention over packed sequences.
     * qkv(T,3*H) act: token t holds [q(H) | k(H) | v(H)], head h at columns
     * h*head_dim .. (h+1)*head_dim of each part (H = n_heads*head_dim).
     * qkv_bias (3*H) float32, or NULL for none: the q, k and v used are
     * qkv[t, :] + qkv_bias, the stored value widened to fp32 plus the bias in
     * fp32 (a 16-bit tensor-core path rounds q's sum once for its product; see
     * kernels/cuda/attention.cu for k and v). So the QKV matmul runs without a
     * bias epilogue and no pass over (T,3H) is spent adding a vector. qkv is
     * not written.
     * out(T,H) act = softmax(q k^T * scale) v within each sequence, heads concatenated.
     * seq_off (B+1) int32 in backend memory; max_len = longest sequence (<= 512 on cuda). */
    int (*attention)(ops_t *ops, void *out, const void *qkv, const float *qkv_bias, const int32_t *seq_off,
                     int B, int max_len, int n_heads, int head_dim, float scale);

    /* out(B,H) float32 = mean of x(T,H) act over each sequence's tokens,
     * then divided by its L2 norm (max(norm, 1e-12)) when l2_normalize != 0. */
    int (*mean_pool)(ops_t *ops, float *out, const void *x, const int32_t *seq_off, int B, int H,
                     int l2_normalize);

    /* Similarity top-k (term expansion): scores = Q(nq,D) float32 @ X(N,D)^T, X a
     * weight matrix in ops->dtype (rows are unit vectors, so scores are cosines).
     * For each query, the k best (0 < k <= min(N, 1000)): out_idx (nq,k) int32 and
     * out_score (nq,k) float32, best first, ties broken by the lower index.
     * workspace: topk_workspace(ops, nq, N, k) bytes of backend memory. */
    size_t (*topk_workspace)(ops_t *ops, int nq, int N, int k);
    int (*similarity_topk)(ops_t *ops, int32_t *out_idx, float *out_score, const float *Q,
                           const void *X, int nq, int N, int D, int k, void *workspace);

    /* ---- decoder ops (Llama family) ----
     * Optional: a backend that lacks one leaves it NULL, and a model that needs
     * it is refused at load naming the op. Activations of these ops are float32
     * on every backend (a backend may use 16-bit tiles inside). KV caches hold
     * ops->kv_dtype elements (OPS_F32 on cpu; OPS_F16 on cuda).
     *
     * Batch invariance (every backend): row t of every output depends only on
     * row t of the inputs (and, for attention, on that sequence's cache), never
     * on T, B, the other rows, the thread count or how a prompt was split into
     * chunks. Kernels split work over output rows/columns, heads and sequences,
     * never over a reduction, and use one summation order per shape of weight.
     * So a sequence gives bit-identical logits alone or among others.
     * One exception, by design: matmul_q on a backend with mma_min_t > 0 has
     * two paths chosen by T (a GEMV in float32 for T < mma_min_t, tensor cores
     * on 16-bit tiles for T >= mma_min_t). Rows are bit-identical among all
     * calls on the same side of mma_min_t; across it they agree within the
     * 16-bit rounding of the activations (see kernels/cuda/quant_matmul.cu). */
    ops_dtype_t kv_dtype;
    /* matmul_q's tensor-core threshold in tokens per call (0: one path for
     * every T, as on cpu). cuda: OPS_CUDA_MMA_MIN_T, or $SLUICE_CUDA_MMA_MIN_T
     * read at create (a value <= 0 there turns the tensor-core path off). */
    int mma_min_t;

    /* out(T,N) f32 = x(T,K) f32 @ W(N,K)^T, W rows in wtype (dequantized in
     * registers; no fp32 copy of W). out must not alias x. */
    int (*matmul_q)(ops_t *ops, float *out, const float *x, const void *W, ops_wtype_t wtype,
                    int T, int K, int N);

    /* out(T,H) f32 = row ids[t] of table(V,H) in wtype, dequantized.
     * ids (T) int32 in backend memory, each < V (checked by the caller). */
    int (*embed_q)(ops_t *ops, float *out, const int32_t *ids, const void *table, ops_wtype_t wtype,
                   int T, int H);

    /* RMSNorm with the residual add fused:
     *   if delta != NULL: resid(T,H) += delta(T,H)   (the residual stream, updated in place)
     *   out(T,H) = resid / sqrt(mean(resid^2) + eps) * w(H)
     * out may alias delta, not resid. */
    int (*add_rms_norm)(ops_t *ops, float *out, float *resid, const float *delta, const float *w,
                        int T, int H, float eps);

    /* RoPE in place, "normal" mode (consecutive pairs, as GGUF's permuted Q/K):
     * for token t, head h, i in [0, head_dim/2): with a = pos[t] * theta^(-2i/head_dim),
     * (x0, x1) = x[t*row_stride + h*head_dim + 2i .. +1] becomes
     * (x0 cos a - x1 sin a, x0 sin a + x1 cos a). pos (T) int32 in backend memory.
     * The angle is computed in float32 as transformers does, so long contexts
     * match it: inv_i = 1 / theta^(2i/head_dim) rounded to float, a =
     * (float)pos * inv_i rounded to float, then cos and sin of that float.
     * head_dim even. row_stride in floats (so q and k inside one fused QKV row
     * can be rotated). */
    int (*rope)(ops_t *ops, float *x, const int32_t *pos, int T, int n_heads, int head_dim,
                int row_stride, float theta);

    /* out(T,F) f32 = silu(gu[t, 0:F]) * gu[t, F:2F], gu (T,2F) the fused
     * [gate | up] matmul output. out must not overlap gu. */
    int (*silu_mul)(ops_t *ops, float *out, const float *gu, int T, int F);

    /* Paged KV cache of one layer: k_cache and v_cache each (n_blocks,
     * block_size, n_kv_heads, head_dim) in kv_dtype. kv_store writes token t's
     * k and v (rows of k/v at stride row_stride floats: n_kv_heads*head_dim
     * values each) to slot slot[t] = block * block_size + offset. */
    int (*kv_store)(ops_t *ops, void *k_cache, void *v_cache, const float *k, const float *v,
                    int row_stride, const int32_t *slot, int T, int n_kv_heads, int head_dim);

    /* Causal grouped-query attention over the paged cache, for packed query
     * tokens of B sequences (seq_off (B+1) as above; their k/v already stored).
     * Sequence b has ctx_len[b] tokens in the cache, the last n_b = seq_off[b+1]
     * - seq_off[b] of which are its queries: query i (0-based) is at position
     * p = ctx_len[b] - n_b + i and attends to positions 0..p. Position j of
     * sequence b lives at block block_table[b*max_blocks + j/block_size], offset
     * j % block_size. Query head h reads KV head h / (n_heads / n_kv_heads).
     * q rows at stride q_stride floats (n_heads*head_dim values);
     * out(T, n_heads*head_dim) f32 = softmax(q k^T * scale) v, heads concatenated.
     * seq_off, ctx_len, block_table int32 in backend memory; T = seq_off[B],
     * the query tokens, given by the caller (who packed them) so no backend
     * reads it back from its memory; max_ctx = the largest ctx_len (sizes scratch). */
    int (*attention_paged)(ops_t *ops, float *out, const float *q, int q_stride, const void *k_cache,
                           const void *v_cache, const int32_t *block_table, int max_blocks,
                           const int32_t *seq_off, int T, const int32_t *ctx_len, int B, int max_ctx,
                           int n_heads, int n_kv_heads, int head_dim, int block_size, float scale);

    /* out_idx(rows) int32 = the index of the largest value of each row of
     * x(rows, n) f32, the lowest index among equal maxima; NaN never wins (a
     * row of NaN gives 0). Greedy decoding on the device: only the ids come
     * back, not the (rows, vocab) logits. Optional (NULL: the caller reduces
     * downloaded logits itself). */
    int (*argmax)(ops_t *ops, int32_t *out_idx, const float *x, int rows, int n);

    /* ---- CUDA graphs (NULL on backends without them: run eagerly) ----
     * capture_begin/capture_end record every op issued on this ops_t in
     * between into a graph; graph_launch replays it on this ops_t's stream. */
    int (*capture_begin)(ops_t *ops);
    int (*capture_end)(ops_t *ops, void **graph);
    int (*graph_launch)(ops_t *ops, void *graph);
    void (*graph_destroy)(ops_t *ops, void *graph);
};

/* The CUDA backend's default mma_min_t (see struct ops): decode batches under
 * 64 sequences stay on the float32 GEMV (bit-identical to batch 1), prefill
 * chunks and the largest batches take the tensor cores. */
#define OPS_CUDA_MMA_MIN_T 64

/* The argmax rule of ops->argmax for one row of n floats, on the host: the
 * lowest index among equal maxima, NaN never chosen, 0 when no value is a
 * number. */
int32_t ops_argmax_row(const float *x, int n);

/* Bytes of one element of dtype (4 for fp32, 2 for bf16 and fp16). */
size_t ops_dtype_size(ops_dtype_t dtype);
const char *ops_dtype_name(ops_dtype_t dtype);

/* The CPU backend: always available. threads <= 0 means one per core.
 * Returns NULL only on allocation failure. */
ops_t *ops_cpu_create(int threads);

/* The CUDA backend on device `device` with activation/weight type dtype.
 * Returns NULL and a one-line reason in err when there is no GPU, no driver,
 * the dtype is unsupported on this card, or the binary was built without CUDA. */
ops_t *ops_cuda_create(int device, ops_dtype_t dtype, char *err, size_t errlen);
/* 1 when this binary carries the CUDA backend (built with nvcc), 0 when
 * kernels/cuda/none.c stands in for it (CUDA=0): tests that check the real
 * backend's refusals skip on the stand-in instead of passing vacuously. */
int ops_cuda_built(void);

/* Pick a backend by name: "cpu", "cuda" or "auto" (cuda if a GPU is usable,
 * else cpu, with the reason logged through note). dtype applies to cuda;
 * "auto" dtype selection: pass OPS_BF16 (or OPS_F16) to get it where supported.
 * Returns NULL with a message in err for an unknown name or an unavailable
 * explicit "cuda". */
ops_t *ops_create(const char *device, ops_dtype_t cuda_dtype, int cpu_threads, char *err,
                  size_t errlen, char *note, size_t notelen);

static inline void ops_destroy(ops_t *ops) {
    if (ops) ops->destroy(ops);
}

#endif
