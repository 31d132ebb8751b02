/* engine/arena.c - first-fit allocator over one backend block (see arena.h).
 *
 * The block list is kept in address order on the host; blocks are either free
 * or live. It is small (a few hundred blocks per model at most), so a linear
 * walk is fine and keeps the code obviously right.
 */
#include "engine/arena.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define ARENA_ALIGN 256

typedef struct block {
    size_t off;  /* bytes from the arena base */
    size_t size; /* bytes */
    int live;
    struct block *next;
} block_t;

struct arena {
    ops_t *ops;
    char *base; /* backend memory */
    size_t budget;
    size_t used;
    block_t *blocks; /* address order, covering [0, budget) */
    pthread_mutex_t mu;
};

arena_t *arena_create(ops_t *ops, size_t budget, char *err, size_t errlen) {
    arena_t *a = calloc(1, sizeof *a);
    if (!a) goto fail;
    budget = budget / ARENA_ALIGN * ARENA_ALIGN;
    if (budget == 0) {
        snprintf(err, errlen, "memory budget too small (%zu bytes)", budget);
        free(a);
        return NULL;
    }
    a->ops = ops;
    a->budget = budget;
    pthread_mutex_init(&a->mu, NULL);
    a->blocks = calloc(1, sizeof(block_t));
    if (!a->blocks) goto fail;
    a->blocks->size = budget;
    a->base = ops->mem_alloc(ops, budget);
    if (!a->base) {
        snprintf(err, errlen, "%s backend refused a %zu-byte (%.1f MiB) arena: %s", ops->name, budget,
                 budget / 1048576.0, ops->err[0] ? ops->err : "out of memory");
        free(a->blocks);
        pthread_mutex_destroy(&a->mu);
        free(a);
        return NULL;
    }
    return a;
fail:
    if (a) {
        free(a->blocks);
        free(a);
    }
    snprintf(err, errlen, "out of host memory creating the arena");
    return NULL;
}

void arena_destroy(arena_t *a) {
    if (!a) return;
    a->ops->mem_free(a->ops, a->base);
    for (block_t *b = a->blocks, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void *arena_alloc(arena_t *a, size_t bytes, const char *what, char *err, size_t errlen) {
    if (bytes == 0) bytes = 1;
    if (bytes > SIZE_MAX - ARENA_ALIGN) {
        snprintf(err, errlen, "%s: %zu bytes is not a valid size", what, bytes);
        return NULL;
    }
    size_t need = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    void *p = NULL;
    pthread_mutex_lock(&a->mu);
    for (block_t *b = a->blocks; b; b = b->next) {
        if (b->live || b->size < need) continue;
        if (b->size > need) { /* split: the tail stays free */
            block_t *rest = malloc(sizeof *rest);
            if (!rest) break;
            rest->off = b->off + need;
            rest->size = b->size - need;
            rest->live = 0;
            rest->next = b->next;
            b->next = rest;
            b->size = need;
        }
        b->live = 1;
        a->used += b->size;
        p = a->base + b->off;
        break;
    }
    if (!p) {
        size_t largest = 0;
        for (block_t *b = a->blocks; b; b = b->next)
            if (!b->live && b->size > largest) largest = b->size;
        snprintf(err, errlen,
                 "%s needs %zu bytes (%.1f MiB) but the %s memory budget has %zu bytes (%.1f MiB) "
                 "free in one piece (%zu of %zu bytes used)",
                 what, need, need / 1048576.0, a->ops->name, largest, largest / 1048576.0, a->used,
                 a->budget);
    }
    pthread_mutex_unlock(&a->mu);
    return p;
}

void arena_free(arena_t *a, void *p) {
    if (!a || !p) return;
    size_t off = (size_t)((char *)p - a->base);
    pthread_mutex_lock(&a->mu);
    block_t *prev = NULL;
    for (block_t *b = a->blocks; b; prev = b, b = b->next) {
        if (b->off != off || !b->live) continue;
        b->live = 0;
        a->used -= b->size;
        if (b->next && !b->next->live) { /* merge with the next free block */
            block_t *n = b->next;
            b->size += n->size;
            b->next = n->next;
            free(n);
        }
        if (prev && !prev->live) { /* and with the previous one */
            prev->size += b->size;
            prev->next = b->next;
            free(b);
        }
        break;
    }
    pthread_mutex_unlock(&a->mu);
}

size_t arena_budget(const arena_t *a) { return a->budget; }

size_t arena_used(const arena_t *a) {
    pthread_mutex_lock((pthread_mutex_t *)&a->mu);
    size_t u = a->used;
    pthread_mutex_unlock((pthread_mutex_t *)&a->mu);
    return u;
}

size_t arena_largest_free(const arena_t *a) {
    size_t largest = 0;
    pthread_mutex_lock((pthread_mutex_t *)&a->mu);
    for (block_t *b = a->blocks; b; b = b->next)
        if (!b->live && b->size > largest) largest = b->size;
    pthread_mutex_unlock((pthread_mutex_t *)&a->mu);
    return largest;
}
