/* engine/engine.h - a loaded sentence-encoder model and its forward pass: the
 * BERT family's own API (engine/bert.c). The server reaches it through the
 * model interface (engine/model.h, model_bert); tests, benchmarks and the
 * expand index call it directly.
 *
 * engine_model_load reads a model folder (config.json, model.safetensors,
 * vocab.txt, tokenizer_config.json, sentence_bert_config.json, modules.json,
 * 1_Pooling/config.json), checks the architecture (BertModel family only; any
 * other: a clear error), binds the weights by their HF names, converts and
 * uploads them into the arena, and carves a workspace for max_batch_tokens
 * tokens. Config, weights and run state are kept apart: the weights are
 * read-only after load; the workspace is the only state a forward pass writes.
 *
 * engine_embed runs one packed batch: sequences end to end (see kernels/ops.h),
 * then pooling and normalisation as the model's modules say. A sequence's
 * result does not depend on which other sequences share its batch.
 *
 * Ownership: the model owns its tokenizer, its weights and its workspace (all
 * in the arena it was given; arena and ops must outlive the model).
 * Thread-safety: engine_embed is safe from several threads: each call takes a
 * free runner (waiting for one when all are busy), so with runners = 2 one
 * thread can upload and launch a batch while another's computes. The getters
 * are read-only and safe from any thread.
 */
#ifndef SLUICE_ENGINE_H
#define SLUICE_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include "engine/arena.h"
#include "engine/tokenizer.h"
#include "kernels/ops.h"

enum {
    ENGINE_OK = 0,
    ENGINE_EINVAL = -1,   /* bad input (token id out of range, too many tokens) */
    ENGINE_ENOMEM = -2,   /* does not fit the budget */
    ENGINE_EMODEL = -3,   /* model folder missing, unreadable or not supported */
    ENGINE_EDEVICE = -4,  /* backend failure */
};

typedef struct {
    int hidden;          /* H */
    int layers;
    int heads;
    int head_dim;        /* H / heads */
    int intermediate;    /* FFN width */
    int vocab;
    int max_positions;   /* position table rows */
    int max_seq_len;     /* tokens per input incl. [CLS]/[SEP] (sentence-transformers) */
    float ln_eps;
    int pool_mean;       /* 1 mean pooling, 0 CLS pooling */
    int normalize;       /* 1: L2-normalise the pooled vector */
} engine_info_t;

/* A model's workspace when its options leave it at 0: the one home of these
 * numbers (the serve flags --workspace-tokens/--workspace-seqs default to them). */
#define ENGINE_DEFAULT_BATCH_TOKENS 16384
#define ENGINE_DEFAULT_BATCH_SEQS 1024

typedef struct {
    int max_batch_tokens; /* workspace is sized for this many packed tokens (default ENGINE_DEFAULT_BATCH_TOKENS) */
    int max_batch_seqs;   /* and this many sequences (default ENGINE_DEFAULT_BATCH_SEQS) */
    int runners;          /* batches that can be in flight at once, each with its own
                           * stream and workspace (default 1; 2 on a GPU lets the CPU
                           * prepare batch N+1 while batch N computes) */
    int graphs;           /* 1: replay CUDA graphs captured per (tokens, sequences)
                           * bucket for batches up to ENGINE_GRAPH_MAX_TOKENS, where the
                           * backend has graphs; 0: always launch op by op */
} engine_opts_t;

#define ENGINE_GRAPH_MAX_TOKENS 4096

typedef struct engine_model engine_model_t;

int engine_model_load(const char *dir, ops_t *ops, arena_t *arena, const engine_opts_t *opts,
                      engine_model_t **out, char *err, size_t errlen);
void engine_model_destroy(engine_model_t *m); /* NULL is a no-op; frees every arena block */

const engine_info_t *engine_info(const engine_model_t *m);
const tok_t *engine_tokenizer(const engine_model_t *m);
size_t engine_weight_bytes(const engine_model_t *m);    /* bytes in the arena */
size_t engine_workspace_bytes(const engine_model_t *m); /* bytes in the arena */
int engine_max_batch_tokens(const engine_model_t *m);
int engine_max_batch_seqs(const engine_model_t *m);
/* Bytes the workspace needs for a batch of T tokens and B sequences. */
size_t engine_workspace_need(const engine_info_t *info, ops_dtype_t dtype, int T, int B);

/* Arena bytes a model folder will take with this dtype and these options, read
 * from its config alone (nothing is loaded): weights and workspace. Lets a
 * caller size an arena, or refuse a model that does not fit, with the numbers. */
int engine_model_need(const char *dir, ops_dtype_t dtype, const engine_opts_t *opts, size_t *weight_bytes,
                      size_t *workspace_bytes, char *err, size_t errlen);

/* Forward pass: n sequences packed in ids (seq_off[n] tokens), seq_off (n+1)
 * host arrays. out (n, hidden) float32 host. Each sequence must hold 1 ..
 * max_seq_len tokens; T <= max_batch_tokens, n <= max_batch_seqs. */
int engine_embed(engine_model_t *m, const int32_t *ids, const int32_t *seq_off, int n, float *out,
                 char *err, size_t errlen);

#endif
