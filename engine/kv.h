/* engine/kv.h - the paged KV cache: a pool of fixed-size token blocks.
 *
 * The pool holds n_blocks blocks of block_size tokens. Each layer has a K and
 * a V cache of shape (n_blocks, block_size, n_kv_heads, head_dim) in the
 * backend's kv_dtype, all carved from one arena allocation (so the cache is a
 * budget: a pool that does not fit is refused with the numbers). A block id
 * means the same rows in every layer. Slot s = block * block_size + offset is
 * what ops->kv_store and ops->attention_paged take.
 *
 * A sequence (kv_seq_t) owns a block table: the blocks holding its positions
 * 0, block_size, 2*block_size, ... in order. Blocks are reference counted so a
 * prefix cache can hand the same full blocks to several sequences
 * (kv_seq_attach). Only full blocks may be shared: kv_seq_append writes only
 * into a sequence's last, partially filled block or into fresh ones, and it
 * refuses to write into a block another holder also references.
 *
 * Running out of blocks is an answer (KV_ENOSPACE, nothing changed), never a
 * crash: the scheduler preempts a sequence and tries again.
 *
 * Ownership: the pool owns its arena block and its host tables; a kv_seq_t
 * owns its block table (host memory) and one reference on each listed block.
 * Thread-safety: none. One thread (the scheduler) drives a pool and its
 * sequences; the caches themselves are read and written by the ops.
 */
#ifndef SLUICE_KV_H
#define SLUICE_KV_H

#include <stddef.h>
#include <stdint.h>
#include "engine/arena.h"
#include "kernels/ops.h"

enum { KV_OK = 0, KV_EINVAL = -1, KV_ENOMEM = -2, KV_ENOSPACE = -3 };

#define KV_DEFAULT_BLOCK_SIZE 16

typedef struct {
    int n_layers;
    int n_kv_heads;
    int head_dim;
    int block_size;     /* tokens per block (0: KV_DEFAULT_BLOCK_SIZE) */
    int n_blocks;       /* blocks in the pool */
    ops_dtype_t dtype;  /* element type of the caches (ops->kv_dtype) */
} kv_config_t;

typedef struct kv_pool kv_pool_t;

typedef struct {
    int32_t *blocks;    /* (max_blocks) block table; the first n_blocks entries are live */
    int n_blocks;       /* blocks held */
    int max_blocks;     /* capacity of the table: ceil(max_tokens / block_size) */
    int n_tokens;       /* positions written (or reserved by kv_seq_append) */
    int max_tokens;     /* the sequence's context limit */
} kv_seq_t;

/* Bytes the caches of cfg take in the arena (both K and V, all layers). */
size_t kv_pool_bytes(const kv_config_t *cfg);
/* Bytes of one block across all layers (K and V): budget / this = blocks. */
size_t kv_block_bytes(const kv_config_t *cfg);

int kv_pool_create(arena_t *arena, const kv_config_t *cfg, kv_pool_t **out, char *err, size_t errlen);
void kv_pool_destroy(kv_pool_t *p); /* NULL is a no-op; sequences must be freed first */

const kv_config_t *kv_pool_config(const kv_pool_t *p);
void *kv_k_cache(kv_pool_t *p, int layer); /* (n_blocks, block_size, n_kv_heads, head_dim) */
void *kv_v_cache(kv_pool_t *p, int layer);
int kv_free_blocks(const kv_pool_t *p);
int kv_block_refs(const kv_pool_t *p, int32_t block); /* 0 when free, -1 when out of range */

/* Raw block references (a prefix cache holds its own). alloc: a fresh block
 * with one reference, or -1 when none is free. unref frees at zero. */
int32_t kv_block_alloc(kv_pool_t *p);
void kv_block_ref(kv_pool_t *p, int32_t block);
void kv_block_unref(kv_pool_t *p, int32_t block);

/* An empty sequence that may grow to max_tokens positions (host table only;
 * no block is taken yet). */
int kv_seq_init(kv_pool_t *p, kv_seq_t *s, int max_tokens, char *err, size_t errlen);
/* Drop every block reference and the table. Safe on a zeroed or freed seq. */
void kv_seq_free(kv_pool_t *p, kv_seq_t *s);

/* Start an empty sequence on n shared full blocks (a cached prefix of
 * n * block_size tokens): each gains a reference. */
int kv_seq_attach(kv_pool_t *p, kv_seq_t *s, const int32_t *blocks, int n, char *err, size_t errlen);

/* Reserve n more positions: takes the blocks they need (all or none), writes
 * their slots (n int32) and advances n_tokens. KV_ENOSPACE when the pool has
 * too few free blocks, KV_EINVAL past max_tokens or into a shared block; on
 * error nothing changed. */
int kv_seq_append(kv_pool_t *p, kv_seq_t *s, int n, int32_t *slots, char *err, size_t errlen);

/* Forget positions from n_tokens on (n_tokens <= s->n_tokens), releasing
 * blocks no longer needed: undoes an append whose forward pass failed. */
void kv_seq_truncate(kv_pool_t *p, kv_seq_t *s, int n_tokens);

/* Blocks n more positions would need beyond those the sequence holds. */
int kv_seq_blocks_needed(const kv_pool_t *p, const kv_seq_t *s, int n);

#endif
