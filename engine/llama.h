/* engine/llama.h - a Llama-architecture decoder loaded from GGUF, and its
 * forward pass over several sequences at once on a paged KV cache.
 *
 * llama_load reads the hyperparameters from the GGUF metadata (llama.*:
 * block_count, embedding_length, feed_forward_length, attention.head_count,
 * attention.head_count_kv, rope.freq_base, attention.layer_norm_rms_epsilon,
 * context_length; a missing key, another architecture, RoPE scaling or a
 * partial rotary dimension are refused by name), checks every tensor's shape
 * and type, refuses a backend that lacks a decoder op (naming it), and uploads
 * the weights as the file stores them (quantized blocks stay quantized) into
 * one arena block: Q, K and V rows concatenated into one fused matrix, gate
 * and up likewise, so one matmul makes each. token_embd doubles as the LM
 * head when output.weight is absent (tied). The file may be closed after load.
 * GGUF's Q and K rows are permuted by llama.cpp's converter, so RoPE rotates
 * consecutive pairs (ops->rope's "normal" mode).
 *
 * llama_forward runs one step for n sequences: each brings its new tokens (a
 * prefill chunk or one decode token) and its kv_seq_t, on which the caller has
 * already called kv_seq_append for exactly those tokens (so the positions are
 * seq->n_tokens - n .. seq->n_tokens - 1 and their slots are in the block
 * table). It writes the logits of each sequence's last token, or of every new
 * token. The workspace is sized at load for opts->max_tokens tokens and
 * opts->max_seqs sequences per call; a call allocates nothing.
 * Each sequence's logits are bit-identical whatever else shares its call and
 * however its prompt was split into chunks (the ops' batch invariance).
 *
 * Ownership: the model owns its arena blocks and host staging; the arena, the
 * ops and the KV pool must outlive it. Thread-safety: one forward at a time
 * per model (one workspace, one ops stream); the getters are read-only.
 */
#ifndef SLUICE_LLAMA_H
#define SLUICE_LLAMA_H

#include <stddef.h>
#include <stdint.h>
#include "engine/arena.h"
#include "engine/gguf.h"
#include "engine/kv.h"
#include "kernels/ops.h"

enum {
    LLAMA_OK = 0,
    LLAMA_EINVAL = -1,  /* bad input: token out of range, too many tokens or sequences */
    LLAMA_ENOMEM = -2,  /* does not fit the budget */
    LLAMA_EMODEL = -3,  /* missing key, unsupported tensor type or shape, backend lacks an op */
    LLAMA_EDEVICE = -4, /* backend failure */
};

typedef struct {
    int n_layers;
    int hidden;       /* H: embedding_length */
    int ffn;          /* F: feed_forward_length */
    int n_heads;
    int n_kv_heads;
    int head_dim;     /* H / n_heads */
    int vocab;        /* rows of token_embd */
    int n_ctx;        /* context_length: positions the model was trained for */
    float rope_theta; /* rope.freq_base */
    float rms_eps;
} llama_info_t;

typedef struct {
    int max_tokens; /* new tokens per forward call, all sequences together (default 512) */
    int max_seqs;   /* sequences per call (default 64) */
    int max_ctx;    /* positions per sequence (default and cap: the model's n_ctx) */
    int no_graphs;  /* 1: never replay decode steps from CUDA graphs (default 0: replayed where the backend
                     * captures; see llama_forward) */
} llama_opts_t;

typedef struct llama_model llama_model_t;

int llama_load(gguf_file_t *f, ops_t *ops, arena_t *arena, const llama_opts_t *opts, llama_model_t **out,
               char *err, size_t errlen);
void llama_destroy(llama_model_t *m); /* NULL is a no-op; frees its arena blocks */
/* Arena bytes llama_load would take (weights, workspace) with these options,
 * from the file alone: the same checks, no upload. */
int llama_need(gguf_file_t *f, const llama_opts_t *opts, size_t *weight_bytes, size_t *workspace_bytes, char *err,
               size_t errlen);

const llama_info_t *llama_info(const llama_model_t *m);
const llama_opts_t *llama_opts(const llama_model_t *m); /* with the defaults filled in */
size_t llama_weight_bytes(const llama_model_t *m);     /* bytes in the arena */
size_t llama_workspace_bytes(const llama_model_t *m);  /* bytes in the arena */

/* The decoder family behind engine/model.h (engine/llama_family.c): a .gguf
 * file, or a folder holding one. Its workspace: LLAMA_FAMILY_MAX_TOKENS new
 * tokens and LLAMA_FAMILY_MAX_SEQS sequences per step (the encoder's
 * engine_opts_t sizes do not apply: a decoder step is small and frequent). */
#define LLAMA_FAMILY_MAX_TOKENS 512
#define LLAMA_FAMILY_MAX_SEQS 64

/* The KV pool shape this model needs (n_blocks and block_size left to the caller). */
kv_config_t llama_kv_config(const llama_model_t *m);

/* One step for n sequences. tokens: the new tokens end to end (seq_off[n]
 * in all); seq_off (n+1) host int32, seq_off[0] = 0, each sequence >= 1 token;
 * seqs[b] already holds its new tokens (kv_seq_append). logits (host float32):
 * all_logits = 0: (n, vocab), row b = sequence b's last token; all_logits = 1:
 * (seq_off[n], vocab), one row per new token. */
int llama_forward(llama_model_t *m, kv_pool_t *kv, const int32_t *tokens, const int32_t *seq_off, int n,
                  kv_seq_t *const *seqs, float *logits, int all_logits, char *err, size_t errlen);

/* llama_forward (all_logits = 0) that also picks each sequence's greedy token
 * on the device: ids (n, host int32) = the argmax of row b's logits, the
 * lowest id among equal maxima (ops->argmax; a backend without it reduces the
 * downloaded logits on the host). logits may be NULL: then only the n ids
 * cross back to the host, not n x vocab floats.
 *
 * Decode steps (one new token per sequence, both entry points) replay a CUDA
 * graph when the backend captures them and opts.no_graphs is 0: one graph per
 * bucket of (sequences rounded up to a power of two, kept on the same side of
 * ops->mma_min_t; longest context rounded up to a power of two >= 128):
 * its first step runs op by op and is then captured, the next ones replay
 * the graph after the step's ids, positions, slots, sequence offsets, context
 * lengths and block tables are copied into the workspace's fixed device
 * buffers. Padding sequences carry token 0 at
 * position 0, a context of 1 and no KV slot (kv_store skips them), so they
 * change no real row: graph and plain launches give the same bits. A capture
 * that fails is logged once on stderr and the model runs op by op from then on. */
int llama_forward_greedy(llama_model_t *m, kv_pool_t *kv, const int32_t *tokens, const int32_t *seq_off, int n,
                         kv_seq_t *const *seqs, float *logits, int32_t *ids, char *err, size_t errlen);

/* Decode-step graphs captured so far (0 on a backend without graphs, with
 * opts.no_graphs, or after a capture failed). */
int llama_graph_count(const llama_model_t *m);

#endif
