/* engine/prefix.h - automatic prefix caching over the paged KV pool.
 *
 * A full KV block is keyed by a hash of its tokens chained with the hash of
 * every token before it (prefix_hash(parent, block tokens)), so a key names
 * one exact prefix. The cache holds one reference on each block it lists
 * (engine/kv.h refcounts); a sequence whose prompt begins with listed blocks
 * attaches them (kv_seq_attach) and computes only the rest. A block only the
 * cache still references is idle: prefix_evict frees idle blocks least
 * recently used first, and the scheduler calls it only when the pool has no
 * free block left, so cached prefixes live as long as memory allows.
 *
 * A lookup compares the block's stored tokens and parent key too, so a hash
 * collision cannot hand a sequence the wrong cache.
 *
 * Ownership: the cache owns its tables and one reference per listed block;
 * prefix_destroy drops them (before kv_pool_destroy). Thread-safety: none;
 * the thread that drives the pool drives its cache.
 */
#ifndef SLUICE_PREFIX_H
#define SLUICE_PREFIX_H

#include <stddef.h>
#include <stdint.h>

#include "engine/kv.h"

typedef struct prefix_cache prefix_cache_t;

/* The key of a block of n tokens after a prefix whose key is parent (0 for
 * the first block). */
uint64_t prefix_hash(uint64_t parent, const int32_t *tokens, int n);

/* 0, or KV_ENOMEM. The pool must outlive the cache. */
int prefix_create(kv_pool_t *kv, prefix_cache_t **out);
void prefix_destroy(prefix_cache_t *c); /* NULL is a no-op */

/* How many leading full blocks of ids[0..n) are cached, at most max_blocks:
 * their ids into blocks (most recently used now). Counts one lookup per
 * block tried and one hit per block found. */
int prefix_lookup(prefix_cache_t *c, const int32_t *ids, int n, int32_t *blocks, int max_blocks);

/* List block (full: block_size tokens, key = prefix_hash(parent, tokens))
 * unless that key is listed already; the cache takes a reference. */
void prefix_insert(prefix_cache_t *c, uint64_t parent, const int32_t *tokens, int32_t block);

/* Free up to n idle blocks, least recently used first; returns how many. */
int prefix_evict(prefix_cache_t *c, int n);

int prefix_blocks(const prefix_cache_t *c); /* blocks listed */
int prefix_idle(const prefix_cache_t *c);   /* of them, referenced by the cache alone */
uint64_t prefix_lookups(const prefix_cache_t *c);
uint64_t prefix_hits(const prefix_cache_t *c);

#endif
