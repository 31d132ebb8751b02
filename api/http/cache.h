/* api/http/cache.h - an optional, bounded in-memory cache of embeddings answers.
 *
 * The same input for the same model within the TTL is answered from memory
 * instead of being embedded again, for the same API key only. The key is the
 * SHA-256 of the API key's name, the resolved model name and the request's fields that shape the answer (input,
 * encoding_format, dimensions, truncate; not priority or deadline_ms), as
 * canonical JSON with sorted keys. Bounded in entries and in bytes; when full
 * the oldest entry goes first (with one TTL for all, oldest is also
 * first to expire).
 *
 * Ownership: get returns a malloc'd copy the caller frees. Thread-safety:
 * every call is thread-safe (one mutex). A NULL cache is off: get misses
 * without counting, put does nothing, stats are zero.
 */
#ifndef SLUICE_API_CACHE_H
#define SLUICE_API_CACHE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define API_CACHE_KEY_BYTES 32

typedef struct api_cache api_cache_t;

typedef struct {
    uint64_t hits, misses;
    size_t entries, bytes;
} api_cache_stats_t;

int api_cache_create(size_t max_entries, size_t max_bytes, int ttl_ms, api_cache_t **out); /* 0 or -1 */
void api_cache_destroy(api_cache_t *c);
/* The key of an embeddings request (body: the request object) for one
 * tenant: scope is the API key's name ("" or NULL without keys), so a hit
 * never tells one key what another sent. */
void api_cache_key(const char *scope, const char *model, const json_t *body, unsigned char key[API_CACHE_KEY_BYTES]);
/* A copy of the cached answer (and *len), or NULL on a miss. */
char *api_cache_get(api_cache_t *c, const unsigned char key[API_CACHE_KEY_BYTES], size_t *len);
void api_cache_put(api_cache_t *c, const unsigned char key[API_CACHE_KEY_BYTES], const char *body, size_t len);
void api_cache_stats(api_cache_t *c, api_cache_stats_t *out);

#endif
