/* engine/prefix.c - full KV blocks by the hash of their prefix (see prefix.h).
 *
 * Entries are indexed by block id (a block is listed at most once); a
 * chained hash table (heads by key, next by block) finds them by key. */
#include <stdlib.h>
#include <string.h>

#include "engine/prefix.h"

typedef struct {
    uint64_t key, parent;
    uint64_t used;  /* LRU stamp */
    int listed;
} entry_t;

struct prefix_cache {
    kv_pool_t *kv;
    int n_blocks, bs, n_heads;
    entry_t *e;      /* (n_blocks) */
    int32_t *tokens; /* (n_blocks, bs) each listed block's tokens */
    int32_t *head;   /* (n_heads) first block of each hash chain, -1 none */
    int32_t *next;   /* (n_blocks) */
    int n_listed;
    uint64_t clock, lookups, hits;
};

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t prefix_hash(uint64_t parent, const int32_t *tokens, int n) {
    uint64_t h = mix(parent ^ 0x5eed);
    for (int i = 0; i < n; i++) h = mix(h ^ (uint32_t)tokens[i]);
    return h ? h : 1; /* 0 is "no parent" */
}

int prefix_create(kv_pool_t *kv, prefix_cache_t **out) {
    *out = NULL;
    prefix_cache_t *c = calloc(1, sizeof *c);
    if (!c) return KV_ENOMEM;
    const kv_config_t *kc = kv_pool_config(kv);
    c->kv = kv;
    c->n_blocks = kc->n_blocks;
    c->bs = kc->block_size;
    c->n_heads = 1;
    while (c->n_heads < c->n_blocks) c->n_heads *= 2;
    c->e = calloc((size_t)c->n_blocks, sizeof *c->e);
    c->tokens = malloc((size_t)c->n_blocks * (size_t)c->bs * sizeof *c->tokens);
    c->head = malloc((size_t)c->n_heads * sizeof *c->head);
    c->next = malloc((size_t)c->n_blocks * sizeof *c->next);
    if (!c->e || !c->tokens || !c->head || !c->next) {
        prefix_destroy(c);
        return KV_ENOMEM;
    }
    for (int i = 0; i < c->n_heads; i++) c->head[i] = -1;
    *out = c;
    return KV_OK;
}

static void unlist(prefix_cache_t *c, int32_t b) {
    int32_t *pp = &c->head[c->e[b].key & (uint64_t)(c->n_heads - 1)];
    while (*pp != b) pp = &c->next[*pp];
    *pp = c->next[b];
    c->e[b].listed = 0;
    c->n_listed--;
    kv_block_unref(c->kv, b);
}

void prefix_destroy(prefix_cache_t *c) {
    if (!c) return;
    if (c->e && c->head && c->next)
        for (int b = 0; b < c->n_blocks; b++)
            if (c->e[b].listed) unlist(c, b);
    free(c->e);
    free(c->tokens);
    free(c->head);
    free(c->next);
    free(c);
}

static int32_t find(const prefix_cache_t *c, uint64_t key, uint64_t parent, const int32_t *tokens) {
    for (int32_t b = c->head[key & (uint64_t)(c->n_heads - 1)]; b >= 0; b = c->next[b])
        if (c->e[b].key == key && c->e[b].parent == parent &&
            !memcmp(c->tokens + (size_t)b * c->bs, tokens, (size_t)c->bs * sizeof *tokens))
            return b;
    return -1;
}

int prefix_lookup(prefix_cache_t *c, const int32_t *ids, int n, int32_t *blocks, int max_blocks) {
    uint64_t parent = 0;
    int k = 0;
    while (k < max_blocks && (k + 1) * c->bs <= n) {
        const int32_t *t = ids + (size_t)k * c->bs;
        uint64_t key = prefix_hash(parent, t, c->bs);
        c->lookups++;
        int32_t b = find(c, key, parent, t);
        if (b < 0) break;
        c->hits++;
        c->e[b].used = ++c->clock;
        blocks[k++] = b;
        parent = key;
    }
    return k;
}

void prefix_insert(prefix_cache_t *c, uint64_t parent, const int32_t *tokens, int32_t block) {
    if (block < 0 || block >= c->n_blocks || c->e[block].listed) return;
    uint64_t key = prefix_hash(parent, tokens, c->bs);
    if (find(c, key, parent, tokens) >= 0) return; /* the same prefix, computed twice at once: keep the first */
    entry_t *e = &c->e[block];
    *e = (entry_t){.key = key, .parent = parent, .used = ++c->clock, .listed = 1};
    memcpy(c->tokens + (size_t)block * c->bs, tokens, (size_t)c->bs * sizeof *tokens);
    int32_t *h = &c->head[key & (uint64_t)(c->n_heads - 1)];
    c->next[block] = *h;
    *h = block;
    c->n_listed++;
    kv_block_ref(c->kv, block);
}

int prefix_evict(prefix_cache_t *c, int n) {
    int freed = 0;
    while (freed < n) {
        int32_t best = -1;
        for (int32_t b = 0; b < c->n_blocks; b++)
            if (c->e[b].listed && kv_block_refs(c->kv, b) == 1 && (best < 0 || c->e[b].used < c->e[best].used))
                best = b;
        if (best < 0) break;
        unlist(c, best);
        freed++;
    }
    return freed;
}

int prefix_blocks(const prefix_cache_t *c) { return c->n_listed; }

int prefix_idle(const prefix_cache_t *c) {
    int n = 0;
    for (int32_t b = 0; b < c->n_blocks; b++) n += c->e[b].listed && kv_block_refs(c->kv, b) == 1;
    return n;
}

uint64_t prefix_lookups(const prefix_cache_t *c) { return c->lookups; }
uint64_t prefix_hits(const prefix_cache_t *c) { return c->hits; }
