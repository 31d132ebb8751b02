/* engine/arena.h - a memory budget over one backend allocation.
 *
 * One arena per device: at creation it takes `budget` bytes with a single
 * ops->mem_alloc, and every weight and workspace buffer of every model on
 * that device is carved from it. Nothing on the request path allocates from
 * the backend, so the budget is enforced by construction: a request that does
 * not fit gets ARENA_ENOMEM with the numbers, never a device out-of-memory.
 *
 * Blocks are 256-byte aligned and can be freed in any order (first-fit free
 * list with coalescing), so models can load and unload while others stay.
 *
 * Thread-safety: all calls take the arena's mutex; safe from any thread.
 * Ownership: the arena owns the backend block; arena_destroy frees it, and
 * every pointer carved from it dies with it.
 */
#ifndef SLUICE_ARENA_H
#define SLUICE_ARENA_H

#include <stddef.h>
#include "kernels/ops.h"

enum { ARENA_OK = 0, ARENA_ENOMEM = -2, ARENA_EINVAL = -1 };

typedef struct arena arena_t;

/* Take `budget` bytes from ops. NULL with a message when the backend refuses. */
arena_t *arena_create(ops_t *ops, size_t budget, char *err, size_t errlen);
void arena_destroy(arena_t *a); /* NULL is a no-op */

/* A block of `bytes` (rounded up to 256), or NULL with the numbers in err. */
void *arena_alloc(arena_t *a, size_t bytes, const char *what, char *err, size_t errlen);
void arena_free(arena_t *a, void *p); /* NULL is a no-op */

size_t arena_budget(const arena_t *a); /* bytes */
size_t arena_used(const arena_t *a);   /* bytes in live blocks */
size_t arena_largest_free(const arena_t *a); /* bytes */

#endif
