/* engine/kv.c - the paged KV block pool (see kv.h).
 *
 * Layout of the one arena block: for layer l, K then V, each
 * n_blocks * block_size * n_kv_heads * head_dim elements. The free list is a
 * stack of block ids (host memory), so allocation order is deterministic:
 * the same sequence of calls hands out the same blocks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kv.h"

struct kv_pool {
    kv_config_t cfg;
    arena_t *arena;
    unsigned char *base;  /* the arena block: 2 * n_layers caches */
    size_t cache_bytes;   /* bytes of one layer's K (or V) cache */
    int32_t *refs;        /* (n_blocks) references per block; 0 = free */
    int32_t *free_stack;  /* (n_blocks) free block ids; top at n_free - 1 */
    int n_free;
};

static size_t cache_bytes(const kv_config_t *c) {
    return (size_t)c->n_blocks * (size_t)c->block_size * (size_t)c->n_kv_heads * (size_t)c->head_dim *
           ops_dtype_size(c->dtype);
}

static kv_config_t with_defaults(const kv_config_t *cfg) {
    kv_config_t c = *cfg;
    if (c.block_size <= 0) c.block_size = KV_DEFAULT_BLOCK_SIZE;
    return c;
}

size_t kv_pool_bytes(const kv_config_t *cfg) {
    kv_config_t c = with_defaults(cfg);
    return 2 * (size_t)c.n_layers * cache_bytes(&c);
}

size_t kv_block_bytes(const kv_config_t *cfg) {
    kv_config_t c = with_defaults(cfg);
    c.n_blocks = 1;
    return 2 * (size_t)c.n_layers * cache_bytes(&c);
}

int kv_pool_create(arena_t *arena, const kv_config_t *cfg, kv_pool_t **out, char *err, size_t errlen) {
    *out = NULL;
    kv_config_t c = with_defaults(cfg);
    if (c.n_layers <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 || c.n_blocks <= 0 || c.n_layers > 4096 ||
        c.n_kv_heads > 4096 || c.head_dim > 4096 || c.block_size > 4096 || c.n_blocks > (1 << 24)) {
        snprintf(err, errlen, "kv pool: bad shape (layers %d, kv heads %d, head dim %d, block %d, blocks %d)",
                 c.n_layers, c.n_kv_heads, c.head_dim, c.block_size, c.n_blocks);
        return KV_EINVAL;
    }
    kv_pool_t *p = calloc(1, sizeof *p);
    if (!p) goto nomem;
    p->cfg = c;
    p->arena = arena;
    p->cache_bytes = cache_bytes(&c);
    p->refs = calloc((size_t)c.n_blocks, sizeof *p->refs);
    p->free_stack = malloc((size_t)c.n_blocks * sizeof *p->free_stack);
    if (!p->refs || !p->free_stack) goto nomem;
    char aerr[256];
    p->base = arena_alloc(arena, kv_pool_bytes(&c), "kv cache", aerr, sizeof aerr);
    if (!p->base) {
        snprintf(err, errlen, "kv pool of %d blocks x %d tokens (%zu bytes a block): %s", c.n_blocks, c.block_size,
                 kv_block_bytes(&c), aerr);
        kv_pool_destroy(p);
        return KV_ENOMEM;
    }
    /* lowest ids on top: block 0 is handed out first */
    for (int i = 0; i < c.n_blocks; i++) p->free_stack[i] = c.n_blocks - 1 - i;
    p->n_free = c.n_blocks;
    *out = p;
    return KV_OK;
nomem:
    kv_pool_destroy(p);
    snprintf(err, errlen, "kv pool: out of host memory");
    return KV_ENOMEM;
}

void kv_pool_destroy(kv_pool_t *p) {
    if (!p) return;
    arena_free(p->arena, p->base);
    free(p->refs);
    free(p->free_stack);
    free(p);
}

const kv_config_t *kv_pool_config(const kv_pool_t *p) { return &p->cfg; }

void *kv_k_cache(kv_pool_t *p, int layer) {
    if (layer < 0 || layer >= p->cfg.n_layers) return NULL;
    return p->base + (size_t)(2 * layer) * p->cache_bytes;
}

void *kv_v_cache(kv_pool_t *p, int layer) {
    if (layer < 0 || layer >= p->cfg.n_layers) return NULL;
    return p->base + (size_t)(2 * layer + 1) * p->cache_bytes;
}

int kv_free_blocks(const kv_pool_t *p) { return p->n_free; }

int kv_block_refs(const kv_pool_t *p, int32_t block) {
    if (block < 0 || block >= p->cfg.n_blocks) return -1;
    return p->refs[block];
}

int32_t kv_block_alloc(kv_pool_t *p) {
    if (p->n_free == 0) return -1;
    int32_t b = p->free_stack[--p->n_free];
    p->refs[b] = 1;
    return b;
}

void kv_block_ref(kv_pool_t *p, int32_t block) {
    if (block >= 0 && block < p->cfg.n_blocks && p->refs[block] > 0) p->refs[block]++;
}

void kv_block_unref(kv_pool_t *p, int32_t block) {
    if (block < 0 || block >= p->cfg.n_blocks || p->refs[block] <= 0) return;
    if (--p->refs[block] == 0) p->free_stack[p->n_free++] = block;
}

int kv_seq_init(kv_pool_t *p, kv_seq_t *s, int max_tokens, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    if (max_tokens <= 0) {
        snprintf(err, errlen, "kv sequence: max_tokens %d must be positive", max_tokens);
        return KV_EINVAL;
    }
    int bs = p->cfg.block_size;
    s->max_blocks = (int)(((int64_t)max_tokens + bs - 1) / bs);
    s->blocks = malloc((size_t)s->max_blocks * sizeof *s->blocks);
    if (!s->blocks) {
        memset(s, 0, sizeof *s);
        snprintf(err, errlen, "kv sequence: out of host memory");
        return KV_ENOMEM;
    }
    s->max_tokens = max_tokens;
    return KV_OK;
}

void kv_seq_free(kv_pool_t *p, kv_seq_t *s) {
    if (!s) return;
    for (int i = 0; i < s->n_blocks; i++) kv_block_unref(p, s->blocks[i]);
    free(s->blocks);
    memset(s, 0, sizeof *s);
}

int kv_seq_attach(kv_pool_t *p, kv_seq_t *s, const int32_t *blocks, int n, char *err, size_t errlen) {
    if (s->n_blocks != 0 || s->n_tokens != 0 || n < 0 || n > s->max_blocks) {
        snprintf(err, errlen, "kv sequence: cannot attach %d blocks (holds %d, room for %d)", n, s->n_blocks,
                 s->max_blocks);
        return KV_EINVAL;
    }
    for (int i = 0; i < n; i++) {
        if (kv_block_refs(p, blocks[i]) <= 0) {
            snprintf(err, errlen, "kv sequence: block %d is not live", (int)blocks[i]);
            return KV_EINVAL;
        }
    }
    for (int i = 0; i < n; i++) {
        kv_block_ref(p, blocks[i]);
        s->blocks[i] = blocks[i];
    }
    s->n_blocks = n;
    s->n_tokens = n * p->cfg.block_size;
    return KV_OK;
}

int kv_seq_blocks_needed(const kv_pool_t *p, const kv_seq_t *s, int n) {
    int bs = p->cfg.block_size;
    int64_t want = ((int64_t)s->n_tokens + n + bs - 1) / bs;
    return want > s->n_blocks ? (int)(want - s->n_blocks) : 0;
}

int kv_seq_append(kv_pool_t *p, kv_seq_t *s, int n, int32_t *slots, char *err, size_t errlen) {
    int bs = p->cfg.block_size;
    if (n <= 0 || (int64_t)s->n_tokens + n > s->max_tokens) {
        snprintf(err, errlen, "kv sequence: %d + %d tokens exceed its limit of %d", s->n_tokens, n, s->max_tokens);
        return KV_EINVAL;
    }
    if (s->n_tokens % bs != 0 && p->refs[s->blocks[s->n_blocks - 1]] > 1) {
        snprintf(err, errlen, "kv sequence: its last block %d is shared and not full", (int)s->blocks[s->n_blocks - 1]);
        return KV_EINVAL;
    }
    int need = kv_seq_blocks_needed(p, s, n);
    if (need > p->n_free) {
        snprintf(err, errlen, "kv cache full: %d more blocks needed, %d free of %d", need, p->n_free,
                 p->cfg.n_blocks);
        return KV_ENOSPACE;
    }
    for (int i = 0; i < need; i++) s->blocks[s->n_blocks++] = kv_block_alloc(p);
    for (int i = 0; i < n; i++) {
        int pos = s->n_tokens + i;
        slots[i] = s->blocks[pos / bs] * bs + pos % bs;
    }
    s->n_tokens += n;
    return KV_OK;
}

void kv_seq_truncate(kv_pool_t *p, kv_seq_t *s, int n_tokens) {
    if (n_tokens < 0 || n_tokens >= s->n_tokens) return;
    int bs = p->cfg.block_size;
    int keep = (n_tokens + bs - 1) / bs;
    while (s->n_blocks > keep) kv_block_unref(p, s->blocks[--s->n_blocks]);
    s->n_tokens = n_tokens;
}
