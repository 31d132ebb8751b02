/* engine/expand.h - term expansion: an index of term embeddings and nearest-term queries.
 *
 * An index is a list of terms (by default the whole words of the model's own
 * vocab.txt: no "##" pieces, no [special] tokens, nothing without a letter,
 * nothing of one character; or a user's file, one term per line), each
 * embedded with the model (L2-normalised, so scores are cosines) and kept as
 * one (N, dim) weight matrix in the arena, in ops->dtype. A query is one
 * similarity GEMM plus top-k (ops->similarity_topk) per chunk of queries.
 *
 * Cache: embedding ~20k terms takes a while on a CPU, so expand_index_open
 * saves the float32 embeddings as safetensors, named after the model folder
 * and the term list's hash ("expand-<model>-<hash>.safetensors", in the model
 * folder unless told otherwise), with the model files' hash, the list's hash
 * and the shape in its metadata. A later open with the same model and list
 * loads the file instead of recomputing; any mismatch rebuilds it. Failing to
 * write the cache is not an error (a note says so).
 *
 * Memory: the embeddings and every buffer a query needs (query block, results,
 * top-k workspace for up to max_queries queries and k <= EXPAND_MAX_K) are
 * carved from the caller's arena at open, expand_index_need bytes in all, so a
 * query never allocates device memory.
 *
 * Ownership: the index owns its terms, its arena blocks and a clone of ops
 * (its own stream / thread pool). The model, arena and ops must outlive it.
 * Thread-safety: expand_query and expand_terms are safe from any thread
 * (serialised on the index); getters are read-only.
 */
#ifndef SLUICE_EXPAND_H
#define SLUICE_EXPAND_H

#include <stddef.h>
#include <stdint.h>
#include "engine/engine.h"
#include "engine/registry.h"

#define EXPAND_MAX_K 1000
#define EXPAND_DEFAULT_MAX_QUERIES 256

enum {
    EXPAND_OK = 0,
    EXPAND_EINVAL = -1,  /* bad argument (k, empty term, ...) */
    EXPAND_ENOMEM = -2,  /* does not fit the arena or host memory */
    EXPAND_EIO = -3,     /* term list unreadable or empty */
    EXPAND_EDEVICE = -4, /* backend or model failure */
};

typedef struct {
    const char *terms_file; /* NULL: the whole words of the model's vocab.txt */
    const char *cache_dir;  /* NULL: the model folder; "": no cache */
    int max_queries;        /* queries per similarity call (0: EXPAND_DEFAULT_MAX_QUERIES) */
} expand_opts_t;

typedef struct {
    int32_t id;  /* term id in the index */
    float score; /* cosine similarity */
} expand_hit_t;

typedef struct expand_index expand_index_t;

/* The term list opts would index: vocab whole words or the file's non-empty,
 * trimmed, de-duplicated lines, in order. *terms and each term are malloc'ed
 * (free with expand_terms_free). */
int expand_terms_load(const char *model_dir, const char *terms_file, char ***terms, int *n, char *err,
                      size_t errlen);
void expand_terms_free(char **terms, int n);

/* Arena bytes an index of n_terms x dim needs on ops (max_queries 0: default). */
size_t expand_index_need(ops_t *ops, int n_terms, int dim, int max_queries);

/* Build or load the index for model (loaded from model_dir on ops into
 * arena). note (may be NULL) receives one line on what happened: loaded from
 * or written to the cache, or why the cache was not written. */
int expand_index_open(const char *model_dir, engine_model_t *model, ops_t *ops, arena_t *arena,
                      const expand_opts_t *opts, expand_index_t **out, char *note, size_t notelen, char *err,
                      size_t errlen);
void expand_index_destroy(expand_index_t *ix); /* NULL is a no-op */

int expand_index_size(const expand_index_t *ix); /* N terms */
int expand_index_dim(const expand_index_t *ix);
const char *expand_index_term(const expand_index_t *ix, int32_t id);   /* NULL when out of range */
int32_t expand_index_find(const expand_index_t *ix, const char *term); /* ASCII case-insensitive; -1 */
const char *expand_index_cache_path(const expand_index_t *ix);         /* "" when not cached */
size_t expand_index_bytes(const expand_index_t *ix);                   /* arena bytes held */

/* Neighbours of nq query vectors (nq, dim) float32 host (normalised here):
 * for query q, up to k hits (1 <= k <= EXPAND_MAX_K) with score >= min_score,
 * best first, ties by lower id, skipping id exclude[q] when exclude is not
 * NULL and exclude[q] >= 0. hits (nq, k) host, n_hits (nq) host. */
int expand_query(expand_index_t *ix, const float *queries, int nq, int k, float min_score, const int32_t *exclude,
                 expand_hit_t *hits, int *n_hits, char *err, size_t errlen);

/* The whole op: embed the nq terms with the model, then expand_query; with
 * exclude_input, a term's own entry (expand_index_find) is skipped. */
int expand_terms(expand_index_t *ix, const char *const *terms, int nq, int k, float min_score, int exclude_input,
                 expand_hit_t *hits, int *n_hits, char *err, size_t errlen);

/* The batcher's expand op over one packed batch of input terms (sequences as
 * engine_embed takes them): embed them, query the index at k = min(N,
 * EXPAND_MAX_K) and write each sequence's row of out: EXPAND_RESULT_FLOATS
 * floats holding EXPAND_MAX_K expand_hit_t, best first, id -1 past the last.
 * The caller filters (k, min_score, its own term). Same thread rules as
 * expand_query. */
#define EXPAND_RESULT_FLOATS (2 * EXPAND_MAX_K)
int expand_batch(expand_index_t *ix, const int32_t *ids, const int32_t *seq_off, int n, float *out, char *err,
                 size_t errlen);

/* ---------------------------------------------------------------- per model of a registry */

/* The term indexes of a registry's models, for the expand operation (which
 * owns one set; the registry knows nothing of it). An index is built (or
 * loaded from its cache) on the first query of a model, in the registry's
 * arena so it counts in the budget, and dropped before the model unloads.
 * The term list outlives the index, so answers finished after an unload can
 * still name their neighbours.
 * Thread-safety: expand_set_index and expand_set_drop are for the device
 * worker (the thread that loads and unloads models); expand_set_term is safe
 * from any thread. */
typedef struct expand_set expand_set_t;

int expand_set_create(registry_t *reg, expand_set_t **out); /* 0, or -1 out of memory */
void expand_set_destroy(expand_set_t *s);                    /* NULL is a no-op */
/* The index of a READY model (built on first call); NULL with a message. */
expand_index_t *expand_set_index(expand_set_t *s, int model, char *err, size_t errlen);
/* Copy term `id` of the model's list into buf: 0, or -1 when no index was
 * ever built or id is out of range. */
int expand_set_term(expand_set_t *s, int model, int32_t id, char *buf, size_t len);
/* The model is about to unload: free its index (its arena blocks and its use of the model). */
void expand_set_drop(expand_set_t *s, int model);

#endif
