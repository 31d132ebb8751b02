/* engine/model.h - the model interface: one struct of function pointers per
 * model family, so the registry, the batcher and the device worker run any
 * family without knowing which it is.
 *
 * A family says whether a folder (or file) holds one of its models, what
 * loading it would take (weights and workspace bytes, from the config alone),
 * how to load and free it, what it is (model_info_t), and its forward pass,
 * one per kind:
 *   MODEL_ENCODER  embed: packed sequences -> one pooled vector each (BERT).
 *   MODEL_DECODER  step: one iteration over packed sequences that read and
 *                  extend a paged KV cache -> next-token logits per sequence
 *                  (the Llama family, with engine/kv.h).
 * A family that lacks a kind leaves its pointer NULL; model_embed/model_step
 * answer ENGINE_EINVAL then. The families this build knows are listed in
 * engine/model.c (model_family_for); a new family is a file with its
 * model_family_t and one line there.
 *
 * Ownership: a model_t owns its implementation (weights in the arena it was
 * given; ops and arena outlive it). Thread-safety: as the family says; every
 * family must allow embed/step from the device worker while getters run on
 * other threads.
 */
#ifndef SLUICE_MODEL_H
#define SLUICE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/arena.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/tok.h"
#include "kernels/ops.h"

typedef enum { MODEL_ENCODER = 0, MODEL_DECODER = 1 } model_kind_t;

typedef struct {
    const char *family;     /* "bert" */
    model_kind_t kind;
    int hidden;             /* width of an embedding / of the residual stream */
    int vocab;
    int max_seq_len;        /* tokens per sequence (encoder input, decoder context) */
    size_t weight_bytes;    /* in the arena */
    size_t workspace_bytes; /* in the arena */
    int max_batch_tokens;   /* per forward call */
    int max_batch_seqs;
    /* MODEL_DECODER: the shape of its KV cache (engine/kv.h kv_config_t) */
    int kv_layers;
    int kv_heads;
    int kv_head_dim;
    ops_dtype_t kv_dtype;
} model_info_t;

struct kv_pool; /* engine/kv.h: the paged KV block pool a decoder step reads and extends */

/* One decoder iteration: for each sequence, its new tokens (a prefill chunk,
 * or the one token sampled last step), attending to everything its KV
 * blocks hold; each sequence's kv_seq_t (engine/kv.h: block table, positions)
 * already holds room for its new tokens. */
typedef struct {
    int n_seqs;
    const int32_t *ids;      /* (seq_off[n_seqs]) new tokens, sequences end to end */
    const int32_t *seq_off;  /* (n_seqs+1), seq_off[0] = 0, each sequence >= 1 token */
    struct kv_pool *kv;
    void *const *seqs;       /* (n_seqs) kv_seq_t * of each sequence */
    float *logits;           /* host float32: (n_seqs, vocab), each sequence's last new token;
                              * with all_logits (seq_off[n_seqs], vocab), every new token */
    int all_logits;
} model_step_t;

typedef struct model_family {
    const char *name;
    model_kind_t kind;
    /* 1 when path (a model folder or file) holds a model of this family. */
    int (*detect)(const char *path);
    /* Arena bytes a load would take with this dtype and these options. */
    int (*need)(const char *path, ops_dtype_t dtype, const engine_opts_t *opts, size_t *weight_bytes,
                size_t *workspace_bytes, char *err, size_t errlen);
    /* The tokenizer of the model at path, without loading weights (requests
     * are validated before the model loads). */
    int (*tokenizer)(const char *path, tok_t **out, char *err, size_t errlen);
    /* The chat template the model declares (CHAT_NONE when none), read
     * without loading weights; NULL: the family has none. */
    chat_template_t (*chat_template)(const char *path);
    int (*load)(const char *path, ops_t *ops, arena_t *arena, const engine_opts_t *opts, void **out, char *err,
                size_t errlen);
    void (*free)(void *impl);
    void (*info)(const void *impl, model_info_t *out);
    /* MODEL_ENCODER: out (n, hidden) float32 host; see engine_embed. */
    int (*embed)(void *impl, const int32_t *ids, const int32_t *seq_off, int n, float *out, char *err,
                 size_t errlen);
    /* MODEL_DECODER: one step (above). */
    int (*step)(void *impl, const model_step_t *s, char *err, size_t errlen);
} model_family_t;

typedef struct model model_t;

/* The family that knows path, or NULL. */
const model_family_t *model_family_for(const char *path);

int model_need(const char *path, ops_dtype_t dtype, const engine_opts_t *opts, size_t *weight_bytes,
               size_t *workspace_bytes, char *err, size_t errlen);
int model_tokenizer(const char *path, tok_t **out, char *err, size_t errlen);
/* ENGINE_OK or ENGINE_E* with a message (ENGINE_EMODEL: no family knows path). */
int model_load(const char *path, ops_t *ops, arena_t *arena, const engine_opts_t *opts, model_t **out, char *err,
               size_t errlen);
void model_free(model_t *m); /* NULL is a no-op */

const model_family_t *model_family(const model_t *m);
void model_info(const model_t *m, model_info_t *out);
void *model_impl(model_t *m); /* the family's own handle (engine_model_t * for bert) */

int model_embed(model_t *m, const int32_t *ids, const int32_t *seq_off, int n, float *out, char *err,
                size_t errlen);
int model_step(model_t *m, const model_step_t *s, char *err, size_t errlen);

/* The families this build knows (engine/model.c lists them in order). */
extern const model_family_t model_bert;
extern const model_family_t model_llama; /* engine/llama_family.c */

#endif
