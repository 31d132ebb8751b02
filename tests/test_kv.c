/* tests/test_kv.c - the paged KV block pool: slots, block accounting, sharing
 * by reference count, running out (an answer, nothing changed), and the
 * arena budget refusing a pool that does not fit with the numbers.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "engine/arena.h"
#include "engine/kv.h"

static ops_t *ops;
static arena_t *arena;
static char err[512];

static void setup(void) {
    ops = ops_cpu_create(1);
    cr_assert_not_null(ops);
    arena = arena_create(ops, 8u << 20, err, sizeof err);
    cr_assert_not_null(arena, "%s", err);
}

static void teardown(void) {
    arena_destroy(arena);
    ops_destroy(ops);
}

TestSuite(kv, .init = setup, .fini = teardown);

static kv_config_t small_cfg(int n_blocks) {
    return (kv_config_t){.n_layers = 3, .n_kv_heads = 2, .head_dim = 8, .block_size = 4, .n_blocks = n_blocks,
                         .dtype = OPS_F32};
}

static kv_pool_t *make_pool(int n_blocks) {
    kv_config_t c = small_cfg(n_blocks);
    kv_pool_t *p = NULL;
    cr_assert_eq(kv_pool_create(arena, &c, &p, err, sizeof err), KV_OK, "%s", err);
    return p;
}

Test(kv, sizes_and_layer_caches) {
    kv_config_t c = small_cfg(10);
    cr_assert_eq(kv_block_bytes(&c), 2u * 3 * 4 * 2 * 8 * 4);
    cr_assert_eq(kv_pool_bytes(&c), 10 * kv_block_bytes(&c));
    kv_config_t d = c;
    d.block_size = 0;
    cr_assert_eq(kv_pool_bytes(&d), 2u * 3 * 10 * KV_DEFAULT_BLOCK_SIZE * 2 * 8 * 4);
    kv_pool_t *p = make_pool(10);
    size_t cache = 10u * 4 * 2 * 8 * 4;
    for (int l = 0; l < 3; l++) {
        cr_assert_eq((char *)kv_v_cache(p, l) - (char *)kv_k_cache(p, l), (ptrdiff_t)cache);
        if (l) cr_assert_eq((char *)kv_k_cache(p, l) - (char *)kv_v_cache(p, l - 1), (ptrdiff_t)cache);
        memset(kv_k_cache(p, l), 0x11, cache); /* the whole cache is writable (ASan) */
        memset(kv_v_cache(p, l), 0x22, cache);
    }
    cr_assert_null(kv_k_cache(p, 3));
    cr_assert_null(kv_v_cache(p, -1));
    cr_assert_eq(arena_used(arena), kv_pool_bytes(&c) + (256 - kv_pool_bytes(&c) % 256) % 256);
    kv_pool_destroy(p);
    cr_assert_eq(arena_used(arena), 0);
    kv_pool_destroy(NULL);
}

Test(kv, append_gives_slots_in_order) {
    kv_pool_t *p = make_pool(8);
    kv_seq_t s;
    cr_assert_eq(kv_seq_init(p, &s, 20, err, sizeof err), KV_OK);
    cr_assert_eq(s.max_blocks, 5);
    int32_t slots[20];
    cr_assert_eq(kv_seq_append(p, &s, 6, slots, err, sizeof err), KV_OK, "%s", err);
    cr_assert_eq(s.n_tokens, 6);
    cr_assert_eq(s.n_blocks, 2);
    cr_assert_eq(kv_free_blocks(p), 6);
    /* blocks 0 then 1: slots 0..5 */
    for (int i = 0; i < 6; i++) cr_assert_eq(slots[i], i);
    cr_assert_eq(kv_seq_append(p, &s, 1, slots, err, sizeof err), KV_OK);
    cr_assert_eq(slots[0], 6);
    /* a second sequence takes block 2 */
    kv_seq_t t;
    cr_assert_eq(kv_seq_init(p, &t, 100, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_append(p, &t, 3, slots, err, sizeof err), KV_OK);
    cr_assert_eq(slots[0], 8);
    cr_assert_eq(slots[2], 10);
    /* s's next token fills block 1, then a new block (3) */
    cr_assert_eq(kv_seq_append(p, &s, 2, slots, err, sizeof err), KV_OK);
    cr_assert_eq(slots[0], 7);
    cr_assert_eq(slots[1], 12);
    cr_assert_eq(s.blocks[2], 3);
    cr_assert_eq(kv_free_blocks(p), 4);
    kv_seq_free(p, &s);
    kv_seq_free(p, &t);
    kv_seq_free(p, &t); /* twice is harmless */
    cr_assert_eq(kv_free_blocks(p), 8);
    for (int b = 0; b < 8; b++) cr_assert_eq(kv_block_refs(p, b), 0);
    kv_pool_destroy(p);
}

Test(kv, full_pool_is_an_answer_and_changes_nothing) {
    kv_pool_t *p = make_pool(3);
    kv_seq_t s, t;
    int32_t slots[64];
    cr_assert_eq(kv_seq_init(p, &s, 64, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_init(p, &t, 64, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_append(p, &s, 5, slots, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_blocks_needed(p, &t, 5), 2);
    int32_t before = slots[0];
    cr_assert_eq(kv_seq_append(p, &t, 5, slots, err, sizeof err), KV_ENOSPACE);
    cr_assert(strstr(err, "2 more blocks needed, 1 free of 3"), "%s", err);
    cr_assert_eq(slots[0], before);
    cr_assert_eq(t.n_tokens, 0);
    cr_assert_eq(t.n_blocks, 0);
    cr_assert_eq(kv_free_blocks(p), 1);
    /* what fits still fits */
    cr_assert_eq(kv_seq_append(p, &t, 4, slots, err, sizeof err), KV_OK);
    cr_assert_eq(kv_free_blocks(p), 0);
    cr_assert_eq(kv_block_alloc(p), -1);
    kv_seq_free(p, &s);
    cr_assert_eq(kv_free_blocks(p), 2);
    kv_seq_free(p, &t);
    kv_pool_destroy(p);
}

Test(kv, context_limit_refused) {
    kv_pool_t *p = make_pool(8);
    kv_seq_t s;
    int32_t slots[16];
    cr_assert_eq(kv_seq_init(p, &s, 6, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_append(p, &s, 7, slots, err, sizeof err), KV_EINVAL);
    cr_assert(strstr(err, "limit of 6"), "%s", err);
    cr_assert_eq(kv_seq_append(p, &s, 6, slots, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_append(p, &s, 1, slots, err, sizeof err), KV_EINVAL);
    cr_assert_eq(kv_seq_append(p, &s, 0, slots, err, sizeof err), KV_EINVAL);
    kv_seq_t bad;
    cr_assert_eq(kv_seq_init(p, &bad, 0, err, sizeof err), KV_EINVAL);
    kv_seq_free(p, &bad);
    kv_seq_free(p, &s);
    kv_pool_destroy(p);
}

Test(kv, shared_prefix_blocks_are_reference_counted) {
    kv_pool_t *p = make_pool(6);
    kv_seq_t a, b;
    int32_t slots[16];
    cr_assert_eq(kv_seq_init(p, &a, 32, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_append(p, &a, 8, slots, err, sizeof err), KV_OK); /* blocks 0, 1 full */
    cr_assert_eq(kv_seq_init(p, &b, 32, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_attach(p, &b, a.blocks, 2, err, sizeof err), KV_OK);
    cr_assert_eq(b.n_tokens, 8);
    cr_assert_eq(kv_block_refs(p, 0), 2);
    cr_assert_eq(kv_block_refs(p, 1), 2);
    /* each continues into its own block */
    cr_assert_eq(kv_seq_append(p, &a, 1, slots, err, sizeof err), KV_OK);
    cr_assert_eq(slots[0], 8);
    cr_assert_eq(kv_seq_append(p, &b, 1, slots, err, sizeof err), KV_OK);
    cr_assert_eq(slots[0], 12);
    kv_seq_free(p, &a);
    cr_assert_eq(kv_block_refs(p, 0), 1); /* still held by b */
    cr_assert_eq(kv_block_refs(p, 2), 0);
    cr_assert_eq(kv_free_blocks(p), 6 - 3);
    /* a shared block that is not full may not be written */
    kv_seq_t c;
    cr_assert_eq(kv_seq_init(p, &c, 32, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_attach(p, &c, b.blocks, 2, err, sizeof err), KV_OK);
    kv_seq_truncate(p, &c, 6);
    cr_assert_eq(c.n_blocks, 2);
    cr_assert_eq(kv_seq_append(p, &c, 1, slots, err, sizeof err), KV_EINVAL);
    cr_assert(strstr(err, "shared"), "%s", err);
    /* attaching a free block is refused */
    kv_seq_t d;
    int32_t freed[1] = {5};
    cr_assert_eq(kv_seq_init(p, &d, 32, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_attach(p, &d, freed, 1, err, sizeof err), KV_EINVAL);
    kv_seq_free(p, &d);
    kv_seq_free(p, &c);
    kv_seq_free(p, &b);
    cr_assert_eq(kv_free_blocks(p), 6);
    kv_pool_destroy(p);
}

Test(kv, truncate_releases_blocks) {
    kv_pool_t *p = make_pool(6);
    kv_seq_t s;
    int32_t slots[16];
    cr_assert_eq(kv_seq_init(p, &s, 32, err, sizeof err), KV_OK);
    cr_assert_eq(kv_seq_append(p, &s, 10, slots, err, sizeof err), KV_OK);
    cr_assert_eq(kv_free_blocks(p), 3);
    kv_seq_truncate(p, &s, 5);
    cr_assert_eq(s.n_tokens, 5);
    cr_assert_eq(s.n_blocks, 2);
    cr_assert_eq(kv_free_blocks(p), 4);
    cr_assert_eq(kv_seq_append(p, &s, 1, slots, err, sizeof err), KV_OK);
    cr_assert_eq(slots[0], 5);
    kv_seq_truncate(p, &s, 0);
    cr_assert_eq(s.n_blocks, 0);
    cr_assert_eq(kv_free_blocks(p), 6);
    kv_seq_free(p, &s);
    kv_pool_destroy(p);
}

Test(kv, over_budget_refused_with_numbers) {
    kv_config_t c = small_cfg(100000); /* 76.8 MB > 8 MiB */
    kv_pool_t *p = (kv_pool_t *)1;
    cr_assert_eq(kv_pool_create(arena, &c, &p, err, sizeof err), KV_ENOMEM);
    cr_assert_null(p);
    cr_assert(strstr(err, "100000 blocks"), "%s", err);
    cr_assert(strstr(err, "1536 bytes a block"), "%s", err);
    cr_assert_eq(arena_used(arena), 0);
    kv_config_t bad = small_cfg(0);
    cr_assert_eq(kv_pool_create(arena, &bad, &p, err, sizeof err), KV_EINVAL);
}
