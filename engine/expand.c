/* engine/expand.c - the term-expansion index: term list, embedding, cache, queries.
 *
 * Build: the terms are tokenized and packed into batches as large as the
 * model's workspace allows (engine_embed), each embedding L2-normalised on the
 * host (the model may not normalise), then uploaded once as an (N, dim) weight
 * matrix. The cache holds those float32 rows; its file name carries the list's
 * hash, its metadata the model files' hash too, so a changed model or list
 * never reuses a stale file. Queries normalise the query vectors, run the
 * backend's similarity_topk in chunks the arena-carved buffers hold, and
 * filter the answers (own term, min_score) on the host.
 */
#include "engine/expand.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utf8proc.h>
#include "engine/safetensors.h"
#include "kernels/util.h"

#define EXPAND_FORMAT "sluice-expand-index/1"

struct expand_index {
    engine_model_t *model;
    ops_t *ops;      /* a clone of the caller's: own stream / pool */
    arena_t *arena;
    char **terms;    /* (N) */
    int32_t *sorted; /* (N) term ids by ASCII-case-folded term, for expand_index_find */
    int N, D;
    int max_queries;
    void *X;          /* (N, D) ops->dtype, arena */
    float *dQ;        /* (max_queries, D) f32, arena */
    int32_t *d_idx;   /* (max_queries, EXPAND_MAX_K) arena */
    float *d_score;   /* (max_queries, EXPAND_MAX_K) arena */
    void *ws;         /* ws_bytes, arena */
    size_t ws_bytes;
    size_t bytes;     /* arena bytes held */
    float *q_host;    /* (max_queries, D) normalised queries */
    int32_t *h_idx;   /* (max_queries, EXPAND_MAX_K) */
    float *h_score;   /* (max_queries, EXPAND_MAX_K) */
    char cache_path[4096];
    pthread_mutex_t mu; /* one query at a time: the buffers above are shared */
};

/* ---- term lists ---- */

void expand_terms_free(char **terms, int n) {
    if (!terms) return;
    for (int i = 0; i < n; i++) free(terms[i]);
    free(terms);
}

/* A vocab entry is a whole word: not a "##" piece, not [SPECIAL], valid UTF-8
 * of at least two code points, at least one of them a letter. */
static int expand_is_word(const char *s) {
    size_t len = strlen(s);
    if (len < 2 || !strncmp(s, "##", 2) || (s[0] == '[' && s[len - 1] == ']')) return 0;
    int points = 0, letters = 0;
    for (const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s; *p;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate(p, -1, &cp);
        if (n <= 0) return 0;
        utf8proc_category_t cat = utf8proc_category(cp);
        letters += cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
        points++;
        p += n;
    }
    return points >= 2 && letters > 0;
}

static int expand_valid_utf8(const char *s) {
    for (const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s; *p;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate(p, -1, &cp);
        if (n <= 0) return 0;
        p += n;
    }
    return 1;
}

/* s without leading/trailing ASCII whitespace, in place. */
static char *expand_trim(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) s[--n] = '\0';
    return s;
}

static int expand_casecmp(const char *a, const char *b) {
    for (;; a++, b++) {
        int ca = (unsigned char)*a, cb = (unsigned char)*b;
        if (ca >= 'A' && ca <= 'Z') ca += 'a' - 'A';
        if (cb >= 'A' && cb <= 'Z') cb += 'a' - 'A';
        if (ca != cb || !ca) return ca - cb;
    }
}

typedef struct {
    char **terms;
    const int32_t *ids;
} expand_sort_ctx_t;

/* qsort_r order: case-folded term, then id (so the first of equals is the lowest id). */
static int expand_cmp_ids(const void *pa, const void *pb, void *pctx) {
    const expand_sort_ctx_t *c = pctx;
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    int r = expand_casecmp(c->terms[a], c->terms[b]);
    return r ? r : (a > b) - (a < b);
}

/* ids 0..n-1 sorted by case-folded term (then id); NULL when out of memory. */
static int32_t *expand_sort_terms(char **terms, int n) {
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    if (!ids) return NULL;
    for (int i = 0; i < n; i++) ids[i] = i;
    expand_sort_ctx_t c = {.terms = terms};
    qsort_r(ids, (size_t)n, sizeof *ids, expand_cmp_ids, &c);
    return ids;
}

/* Drop duplicates, ASCII case folded as expand_index_find folds (keeping the
 * first), from terms[0..*n), in order. */
static int expand_dedup(char **terms, int *n) {
    int32_t *ids = expand_sort_terms(terms, *n);
    if (!ids) return -1;
    char *dup = calloc((size_t)(*n ? *n : 1), 1);
    if (!dup) {
        free(ids);
        return -1;
    }
    for (int i = 1; i < *n; i++) /* equal runs are id-ordered: all but the first are duplicates */
        if (!expand_casecmp(terms[ids[i]], terms[ids[i - 1]])) dup[ids[i]] = 1;
    int w = 0;
    for (int i = 0; i < *n; i++) {
        if (dup[i]) free(terms[i]);
        else terms[w++] = terms[i];
    }
    *n = w;
    free(dup);
    free(ids);
    return 0;
}

int expand_terms_load(const char *model_dir, const char *terms_file, char ***terms_out, int *n_out, char *err,
                      size_t errlen) {
    *terms_out = NULL;
    *n_out = 0;
    char path[4096];
    if (terms_file) snprintf(path, sizeof path, "%s", terms_file);
    else snprintf(path, sizeof path, "%s/vocab.txt", model_dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return EXPAND_EIO;
    }
    char **terms = NULL, *line = NULL;
    size_t cap = 0;
    int n = 0, alloc = 0, lineno = 0, rc = EXPAND_ENOMEM;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        char *t = expand_trim(line);
        if (terms_file) {
            if (!*t) continue;
            if (!expand_valid_utf8(t)) {
                snprintf(err, errlen, "%s:%d: not valid UTF-8", path, lineno);
                rc = EXPAND_EIO;
                goto fail;
            }
        } else if (!expand_is_word(t)) {
            continue;
        }
        if (n == alloc) {
            alloc = alloc ? 2 * alloc : 1024;
            char **na = realloc(terms, (size_t)alloc * sizeof *na);
            if (!na) goto oom;
            terms = na;
        }
        if (!(terms[n] = strdup(t))) goto oom;
        n++;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = EXPAND_EIO;
        goto fail;
    }
    if (terms_file && expand_dedup(terms, &n)) goto oom;
    if (n == 0) {
        snprintf(err, errlen, "%s: no terms to index", path);
        rc = EXPAND_EIO;
        goto fail;
    }
    free(line);
    fclose(f);
    *terms_out = terms;
    *n_out = n;
    return EXPAND_OK;
oom:
    snprintf(err, errlen, "%s: out of memory reading the term list", path);
fail:
    free(line);
    fclose(f);
    expand_terms_free(terms, n);
    return rc;
}

/* ---- hashes: 64-bit FNV-1a, over 8-byte words for files (fast enough for a model's weights) ---- */

#define EXPAND_FNV_OFFSET 0xcbf29ce484222325ull
#define EXPAND_FNV_PRIME 0x100000001b3ull

static uint64_t expand_hash_bytes(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * EXPAND_FNV_PRIME;
    }
    for (; i < n; i++) h = (h ^ p[i]) * EXPAND_FNV_PRIME;
    return h;
}

/* The term list, one term per line. */
static uint64_t expand_hash_terms(char **terms, int n) {
    uint64_t h = EXPAND_FNV_OFFSET;
    for (int i = 0; i < n; i++) {
        h = expand_hash_bytes(h, terms[i], strlen(terms[i]));
        h = expand_hash_bytes(h, "\n", 1);
    }
    return h;
}

/* Every file of the model folder that shapes an embedding (a missing one
 * hashes as its name alone). */
static int expand_hash_model(const char *dir, uint64_t *out, char *err, size_t errlen) {
    static const char *const files[] = {"model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json",
                                        "sentence_bert_config.json", "modules.json", "1_Pooling/config.json"};
    uint64_t h = EXPAND_FNV_OFFSET;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        h = expand_hash_bytes(h, files[i], strlen(files[i]));
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        struct stat st;
        if (fstat(fd, &st) || st.st_size == 0) {
            close(fd);
            continue;
        }
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (map == MAP_FAILED) {
            snprintf(err, errlen, "%s: cannot map for hashing: %s", path, strerror(errno));
            return EXPAND_EIO;
        }
        h = expand_hash_bytes(h, map, (size_t)st.st_size);
        munmap(map, (size_t)st.st_size);
    }
    *out = h;
    return EXPAND_OK;
}

/* ---- sizing ---- */

static size_t expand_align(size_t b) { return (b + 255) & ~(size_t)255; }

/* Top-k workspace for up to max_queries queries at any k: the backends' needs
 * are not monotonic in k, so take the largest of the ends and the middle. */
static size_t expand_ws_need(ops_t *ops, int N, int max_queries) {
    int kmax = N < EXPAND_MAX_K ? N : EXPAND_MAX_K;
    int ks[] = {1, 10, 100, kmax};
    size_t need = 0;
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        if (ks[i] > kmax) continue;
        size_t b = ops->topk_workspace(ops, max_queries, N, ks[i]);
        if (b > need) need = b;
    }
    return need;
}

size_t expand_index_need(ops_t *ops, int n_terms, int dim, int max_queries) {
    if (max_queries <= 0) max_queries = EXPAND_DEFAULT_MAX_QUERIES;
    if (!ops || !ops->topk_workspace || n_terms <= 0 || dim <= 0) return 0;
    return expand_align((size_t)n_terms * dim * ops_dtype_size(ops->dtype)) +
           expand_align((size_t)max_queries * dim * sizeof(float)) +
           2 * expand_align((size_t)max_queries * EXPAND_MAX_K * sizeof(float)) +
           expand_align(expand_ws_need(ops, n_terms, max_queries));
}

/* ---- embedding ---- */

static void expand_normalize(float *v, int D) {
    double ss = 0;
    for (int d = 0; d < D; d++) ss += (double)v[d] * v[d];
    float inv = (float)(1.0 / fmax(sqrt(ss), 1e-12));
    for (int d = 0; d < D; d++) v[d] *= inv;
}

/* out (n, dim): the normalised embeddings of texts[0..n), in batches the
 * model's workspace holds. */
static int expand_embed(engine_model_t *m, const char *const *texts, int n, float *out, char *err, size_t errlen) {
    const engine_info_t *info = engine_info(m);
    const tok_t *tok = engine_tokenizer(m);
    const int max_len = info->max_seq_len, D = info->hidden;
    const int max_tokens = engine_max_batch_tokens(m), max_seqs = engine_max_batch_seqs(m);
    int32_t *ids = malloc((size_t)max_tokens * sizeof *ids);
    int32_t *off = malloc(((size_t)max_seqs + 1) * sizeof *off);
    int rc = EXPAND_OK;
    if (!ids || !off) {
        snprintf(err, errlen, "expand: out of host memory for a batch");
        rc = EXPAND_ENOMEM;
        goto done;
    }
    for (int first = 0; first < n;) {
        int b = 0;
        off[0] = 0;
        while (first + b < n && b < max_seqs && off[b] + max_len <= max_tokens) {
            const char *t = texts[first + b];
            char why[256];
            int k = tok_encode(tok, t, strlen(t), ids + off[b], max_len, NULL, why, sizeof why);
            if (k < 0) {
                snprintf(err, errlen, "term %d (\"%.64s\"): %s", first + b, t, why);
                rc = EXPAND_EINVAL;
                goto done;
            }
            off[b + 1] = off[b] + k;
            b++;
        }
        if (engine_embed(m, ids, off, b, out + (size_t)first * D, err, errlen)) {
            rc = EXPAND_EDEVICE;
            goto done;
        }
        first += b;
    }
    for (int i = 0; i < n; i++) expand_normalize(out + (size_t)i * D, D);
done:
    free(ids);
    free(off);
    return rc;
}

/* ---- cache ---- */

/* Embeddings from the cache file when it matches (model, list, shape); 1 when
 * loaded, 0 when absent or stale (rebuild), negative on a real failure. */
static int expand_cache_load(const char *path, const char *model_hash, const char *terms_hash, int N, int D,
                             float *out) {
    st_file_t *f = NULL;
    char why[512];
    if (access(path, R_OK)) return 0;
    if (st_open(path, &f, why, sizeof why)) return 0; /* unreadable or corrupt: rebuild and overwrite */
    const char *fmt = st_metadata(f, "format"), *mh = st_metadata(f, "model_hash"),
               *th = st_metadata(f, "terms_hash");
    const st_tensor_t *t = st_find(f, "embeddings");
    int ok = fmt && !strcmp(fmt, EXPAND_FORMAT) && mh && !strcmp(mh, model_hash) && th &&
             !strcmp(th, terms_hash) && t && t->ndim == 2 && t->shape[0] == N && t->shape[1] == D;
    if (ok) st_to_f32(t, out);
    st_close(f);
    return ok;
}

static int expand_cache_save(const char *path, const char *model_name, const char *model_hash,
                             const char *terms_hash, int N, int D, const float *emb, char *err, size_t errlen) {
    char n_s[32], d_s[32];
    snprintf(n_s, sizeof n_s, "%d", N);
    snprintf(d_s, sizeof d_s, "%d", D);
    const char *names[] = {"embeddings"};
    const int ndims[] = {2};
    const int64_t shape[] = {N, D};
    const int64_t *shapes[] = {shape};
    const float *data[] = {emb};
    const char *keys[] = {"format", "model", "model_hash", "terms_hash", "n_terms", "dim"};
    const char *vals[] = {EXPAND_FORMAT, model_name, model_hash, terms_hash, n_s, d_s};
    return st_write_f32(path, 1, names, ndims, shapes, data, 6, keys, vals, err, errlen);
}

/* The folder's last path component, for file names and metadata. */
static void expand_model_name(const char *dir, char *out, size_t outlen) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/') start--;
    snprintf(out, outlen, "%.*s", (int)(len - start), dir + start);
    for (char *p = out; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.'))
            *p = '_';
}

/* ---- the index ---- */

void expand_index_destroy(expand_index_t *ix) {
    if (!ix) return;
    if (ix->ops) ix->ops->sync(ix->ops); /* nothing in flight on blocks about to go */
    arena_free(ix->arena, ix->ws);
    arena_free(ix->arena, ix->d_score);
    arena_free(ix->arena, ix->d_idx);
    arena_free(ix->arena, ix->dQ);
    arena_free(ix->arena, ix->X);
    ops_destroy(ix->ops);
    free(ix->q_host);
    free(ix->h_idx);
    free(ix->h_score);
    free(ix->sorted);
    expand_terms_free(ix->terms, ix->N);
    pthread_mutex_destroy(&ix->mu);
    free(ix);
}

/* Carve one block of the index's buffers from the arena. */
static void *expand_carve(expand_index_t *ix, size_t bytes, const char *what, char *err, size_t errlen) {
    void *p = arena_alloc(ix->arena, bytes, what, err, errlen);
    if (p) ix->bytes += expand_align(bytes);
    return p;
}

/* The embeddings: from the cache when it matches, else computed (and cached). */
static int expand_build(expand_index_t *ix, const char *model_dir, const expand_opts_t *opts, float *emb,
                        char *note, size_t notelen, char *err, size_t errlen) {
    uint64_t mh;
    int rc = expand_hash_model(model_dir, &mh, err, errlen);
    if (rc) return rc;
    char model_name[256], model_hash[17], terms_hash[17];
    expand_model_name(model_dir, model_name, sizeof model_name);
    snprintf(model_hash, sizeof model_hash, "%016llx", (unsigned long long)mh);
    snprintf(terms_hash, sizeof terms_hash, "%016llx", (unsigned long long)expand_hash_terms(ix->terms, ix->N));
    const char *cache_dir = opts && opts->cache_dir ? opts->cache_dir : model_dir;
    if (cache_dir[0])
        snprintf(ix->cache_path, sizeof ix->cache_path, "%s/expand-%s-%s.safetensors", cache_dir, model_name,
                 terms_hash);
    if (ix->cache_path[0] && expand_cache_load(ix->cache_path, model_hash, terms_hash, ix->N, ix->D, emb) == 1) {
        snprintf(note, notelen, "expand index: %d terms loaded from %s", ix->N, ix->cache_path);
        return EXPAND_OK;
    }
    int64_t t0 = util_now_ns();
    rc = expand_embed(ix->model, (const char *const *)ix->terms, ix->N, emb, err, errlen);
    if (rc) return rc;
    double secs = (util_now_ns() - t0) * 1e-9;
    if (!ix->cache_path[0]) {
        snprintf(note, notelen, "expand index: %d terms embedded in %.1f s (no cache)", ix->N, secs);
        return EXPAND_OK;
    }
    char why[512];
    if (expand_cache_save(ix->cache_path, model_name, model_hash, terms_hash, ix->N, ix->D, emb, why, sizeof why)) {
        snprintf(note, notelen, "expand index: %d terms embedded in %.1f s; cache not written: %s", ix->N, secs, why);
        ix->cache_path[0] = '\0';
    } else {
        snprintf(note, notelen, "expand index: %d terms embedded in %.1f s, cached in %s", ix->N, secs,
                 ix->cache_path);
    }
    return EXPAND_OK;
}

int expand_index_open(const char *model_dir, engine_model_t *model, ops_t *ops, arena_t *arena,
                      const expand_opts_t *opts, expand_index_t **out, char *note, size_t notelen, char *err,
                      size_t errlen) {
    char note_buf[1];
    if (!note || !notelen) {
        note = note_buf;
        notelen = sizeof note_buf;
    }
    note[0] = '\0';
    *out = NULL;
    if (!model_dir || !model || !ops || !arena) {
        snprintf(err, errlen, "expand_index_open: NULL argument");
        return EXPAND_EINVAL;
    }
    if (!ops->similarity_topk || !ops->topk_workspace || !ops->clone) {
        snprintf(err, errlen, "the %s backend has no similarity_topk op", ops->name);
        return EXPAND_EINVAL;
    }
    expand_index_t *ix = calloc(1, sizeof *ix);
    if (!ix) {
        snprintf(err, errlen, "expand: out of host memory");
        return EXPAND_ENOMEM;
    }
    pthread_mutex_init(&ix->mu, NULL);
    ix->model = model;
    ix->arena = arena;
    ix->D = engine_info(model)->hidden;
    ix->max_queries = opts && opts->max_queries > 0 ? opts->max_queries : EXPAND_DEFAULT_MAX_QUERIES;
    float *emb = NULL;
    int rc = expand_terms_load(model_dir, opts ? opts->terms_file : NULL, &ix->terms, &ix->N, err, errlen);
    if (rc) goto fail;
    const int N = ix->N, D = ix->D, Q = ix->max_queries;
    rc = EXPAND_ENOMEM;
    ix->sorted = expand_sort_terms(ix->terms, N);
    emb = malloc((size_t)N * D * sizeof *emb);
    ix->q_host = malloc((size_t)Q * D * sizeof *ix->q_host);
    ix->h_idx = malloc((size_t)Q * EXPAND_MAX_K * sizeof *ix->h_idx);
    ix->h_score = malloc((size_t)Q * EXPAND_MAX_K * sizeof *ix->h_score);
    if (!ix->sorted || !emb || !ix->q_host || !ix->h_idx || !ix->h_score) {
        snprintf(err, errlen, "expand: out of host memory for %d terms x %d", N, D);
        goto fail;
    }
    if (!(ix->ops = ops->clone(ops))) {
        snprintf(err, errlen, "expand: cannot clone the %s backend: %s", ops->name, ops->err);
        rc = EXPAND_EDEVICE;
        goto fail;
    }
    rc = expand_build(ix, model_dir, opts, emb, note, notelen, err, errlen);
    if (rc) goto fail;
    rc = EXPAND_ENOMEM;
    ix->ws_bytes = expand_ws_need(ix->ops, N, Q);
    if (!(ix->X = expand_carve(ix, (size_t)N * D * ops_dtype_size(ix->ops->dtype), "expand index", err, errlen)) ||
        !(ix->dQ = expand_carve(ix, (size_t)Q * D * sizeof(float), "expand queries", err, errlen)) ||
        !(ix->d_idx = expand_carve(ix, (size_t)Q * EXPAND_MAX_K * sizeof(int32_t), "expand ids", err, errlen)) ||
        !(ix->d_score = expand_carve(ix, (size_t)Q * EXPAND_MAX_K * sizeof(float), "expand scores", err, errlen)) ||
        !(ix->ws = expand_carve(ix, ix->ws_bytes ? ix->ws_bytes : 1, "expand top-k workspace", err, errlen)))
        goto fail;
    if (ix->ops->upload_weight(ix->ops, ix->X, emb, (size_t)N * D) || ix->ops->sync(ix->ops)) {
        snprintf(err, errlen, "expand: uploading the index: %s", ix->ops->err);
        rc = EXPAND_EDEVICE;
        goto fail;
    }
    free(emb);
    *out = ix;
    return EXPAND_OK;
fail:
    free(emb);
    expand_index_destroy(ix);
    return rc;
}

int expand_index_size(const expand_index_t *ix) { return ix->N; }
int expand_index_dim(const expand_index_t *ix) { return ix->D; }
const char *expand_index_cache_path(const expand_index_t *ix) { return ix->cache_path; }
size_t expand_index_bytes(const expand_index_t *ix) { return ix->bytes; }

const char *expand_index_term(const expand_index_t *ix, int32_t id) {
    return id >= 0 && id < ix->N ? ix->terms[id] : NULL;
}

int32_t expand_index_find(const expand_index_t *ix, const char *term) {
    int lo = 0, hi = ix->N; /* first sorted entry >= term */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (expand_casecmp(ix->terms[ix->sorted[mid]], term) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < ix->N && !expand_casecmp(ix->terms[ix->sorted[lo]], term) ? ix->sorted[lo] : -1;
}

/* ---- queries ---- */

/* One chunk of nq queries (already in q_host) through the backend; the
 * caller holds the lock. kq results per query land in h_idx / h_score. */
static int expand_run_chunk(expand_index_t *ix, int nq, int kq, char *err, size_t errlen) {
    ops_t *o = ix->ops;
    if (o->upload(o, ix->dQ, ix->q_host, (size_t)nq * ix->D * sizeof(float)) ||
        o->similarity_topk(o, ix->d_idx, ix->d_score, ix->dQ, ix->X, nq, ix->N, ix->D, kq, ix->ws) ||
        o->download(o, ix->h_idx, ix->d_idx, (size_t)nq * kq * sizeof(int32_t)) ||
        o->download(o, ix->h_score, ix->d_score, (size_t)nq * kq * sizeof(float)) || o->sync(o)) {
        snprintf(err, errlen, "expand: %s", o->err);
        return EXPAND_EDEVICE;
    }
    return EXPAND_OK;
}

int expand_query(expand_index_t *ix, const float *queries, int nq, int k, float min_score, const int32_t *exclude,
                 expand_hit_t *hits, int *n_hits, char *err, size_t errlen) {
    if (nq < 0 || (nq > 0 && (!queries || !hits || !n_hits)) || k < 1 || k > EXPAND_MAX_K) {
        snprintf(err, errlen, "bad query (nq=%d, k=%d: k must be 1..%d)", nq, k, EXPAND_MAX_K);
        return EXPAND_EINVAL;
    }
    const int N = ix->N, D = ix->D, kcap = N < EXPAND_MAX_K ? N : EXPAND_MAX_K;
    /* one more than asked when a query's own term may have to go */
    const int kq = (exclude && k < kcap) ? k + 1 : (k < kcap ? k : kcap);
    int rc = EXPAND_OK;
    pthread_mutex_lock(&ix->mu);
    for (int q0 = 0; q0 < nq;) {
        int chunk = nq - q0 < ix->max_queries ? nq - q0 : ix->max_queries;
        while (chunk > 1 && ix->ops->topk_workspace(ix->ops, chunk, N, kq) > ix->ws_bytes) chunk = (chunk + 1) / 2;
        if (ix->ops->topk_workspace(ix->ops, chunk, N, kq) > ix->ws_bytes) {
            snprintf(err, errlen, "expand: top-k workspace of %zu bytes is too small for k=%d", ix->ws_bytes, kq);
            rc = EXPAND_ENOMEM;
            break;
        }
        memcpy(ix->q_host, queries + (size_t)q0 * D, (size_t)chunk * D * sizeof(float));
        for (int q = 0; q < chunk; q++) expand_normalize(ix->q_host + (size_t)q * D, D);
        if ((rc = expand_run_chunk(ix, chunk, kq, err, errlen))) break;
        for (int q = 0; q < chunk; q++) {
            const int32_t *ids = ix->h_idx + (size_t)q * kq;
            const float *sc = ix->h_score + (size_t)q * kq;
            int32_t skip = exclude ? exclude[q0 + q] : -1;
            expand_hit_t *h = hits + (size_t)(q0 + q) * k;
            int n = 0;
            for (int j = 0; j < kq && n < k && sc[j] >= min_score; j++)
                if (ids[j] != skip) h[n++] = (expand_hit_t){.id = ids[j], .score = sc[j]};
            n_hits[q0 + q] = n;
        }
        q0 += chunk;
    }
    pthread_mutex_unlock(&ix->mu);
    return rc;
}

int expand_terms(expand_index_t *ix, const char *const *terms, int nq, int k, float min_score, int exclude_input,
                 expand_hit_t *hits, int *n_hits, char *err, size_t errlen) {
    if (nq < 0 || (nq > 0 && !terms)) {
        snprintf(err, errlen, "bad arguments (nq=%d terms)", nq);
        return EXPAND_EINVAL;
    }
    if (nq == 0) return EXPAND_OK;
    char **trimmed = calloc((size_t)nq, sizeof *trimmed);
    float *q = malloc((size_t)nq * ix->D * sizeof *q);
    int32_t *own = malloc((size_t)nq * sizeof *own);
    int rc = EXPAND_ENOMEM;
    if (!trimmed || !q || !own) {
        snprintf(err, errlen, "expand: out of host memory for %d terms", nq);
        goto done;
    }
    rc = EXPAND_EINVAL;
    for (int i = 0; i < nq; i++) {
        if (!terms[i] || !(trimmed[i] = strdup(terms[i]))) {
            snprintf(err, errlen, terms[i] ? "expand: out of host memory" : "term %d is NULL", i);
            rc = terms[i] ? EXPAND_ENOMEM : EXPAND_EINVAL;
            goto done;
        }
        char *t = expand_trim(trimmed[i]);
        memmove(trimmed[i], t, strlen(t) + 1);
        if (!trimmed[i][0]) {
            snprintf(err, errlen, "term %d is empty", i);
            goto done;
        }
        own[i] = exclude_input ? expand_index_find(ix, trimmed[i]) : -1;
    }
    rc = expand_embed(ix->model, (const char *const *)trimmed, nq, q, err, errlen);
    if (!rc) rc = expand_query(ix, q, nq, k, min_score, exclude_input ? own : NULL, hits, n_hits, err, errlen);
done:
    if (trimmed)
        for (int i = 0; i < nq; i++) free(trimmed[i]);
    free(trimmed);
    free(q);
    free(own);
    return rc;
}

int expand_batch(expand_index_t *ix, const int32_t *ids, const int32_t *seq_off, int n, float *out, char *err,
                 size_t errlen) {
    _Static_assert(sizeof(expand_hit_t) == 2 * sizeof(float), "a hit is two floats wide");
    if (n < 1 || !ids || !seq_off || !out) {
        snprintf(err, errlen, "bad arguments (n=%d sequences)", n);
        return EXPAND_EINVAL;
    }
    float *q = malloc((size_t)n * ix->D * sizeof *q);
    int *n_hits = malloc((size_t)n * sizeof *n_hits);
    int rc = EXPAND_ENOMEM;
    if (!q || !n_hits) {
        snprintf(err, errlen, "expand: out of host memory for %d terms", n);
        goto done;
    }
    rc = EXPAND_EDEVICE;
    if (engine_embed(ix->model, ids, seq_off, n, q, err, errlen)) goto done;
    expand_hit_t *rows = (expand_hit_t *)out; /* (n, EXPAND_MAX_K) */
    rc = expand_query(ix, q, n, EXPAND_MAX_K, -INFINITY, NULL, rows, n_hits, err, errlen);
    if (rc) goto done;
    for (int i = 0; i < n; i++)
        for (int j = n_hits[i]; j < EXPAND_MAX_K; j++)
            rows[(size_t)i * EXPAND_MAX_K + j] = (expand_hit_t){.id = -1, .score = -INFINITY};
done:
    free(q);
    free(n_hits);
    return rc;
}

/* ---------------------------------------------------------------- per model of a registry */

typedef struct {
    expand_index_t *ix; /* NULL until the first query, and after a drop */
    char **terms;       /* (n_terms) the list the index was built from: ids agree */
    int n_terms;
} expand_slot_t;

struct expand_set {
    registry_t *reg;
    pthread_mutex_t mu; /* guards slots */
    expand_slot_t *slots; /* (n) */
    int n;
};

int expand_set_create(registry_t *reg, expand_set_t **out) {
    *out = NULL;
    expand_set_t *s = calloc(1, sizeof *s);
    int n = registry_count(reg);
    if (!s || !(s->slots = calloc((size_t)(n > 0 ? n : 1), sizeof *s->slots))) {
        free(s);
        return -1;
    }
    s->reg = reg;
    s->n = n;
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return 0;
}

void expand_set_destroy(expand_set_t *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        expand_index_destroy(s->slots[i].ix);
        expand_terms_free(s->slots[i].terms, s->slots[i].n_terms);
    }
    pthread_mutex_destroy(&s->mu);
    free(s->slots);
    free(s);
}

expand_index_t *expand_set_index(expand_set_t *s, int idx, char *err, size_t errlen) {
    if (idx < 0 || idx >= s->n) {
        snprintf(err, errlen, "no such model");
        return NULL;
    }
    pthread_mutex_lock(&s->mu);
    expand_index_t *ix = s->slots[idx].ix;
    int have_terms = s->slots[idx].terms != NULL;
    pthread_mutex_unlock(&s->mu);
    if (ix) return ix;
    model_t *m = registry_model(s->reg, idx);
    registry_model_info_t info;
    if (!m || registry_info(s->reg, idx, &info)) {
        snprintf(err, errlen, "model is not loaded");
        return NULL;
    }
    if (model_family(m) != &model_bert) { /* the index embeds terms with a BERT encoder */
        snprintf(err, errlen, "model %s is not a sentence encoder: no term expansion", info.name);
        return NULL;
    }
    char note[1024], **terms = NULL;
    int n_terms = 0;
    if (!have_terms && expand_terms_load(info.dir, NULL, &terms, &n_terms, err, errlen)) return NULL;
    device_t *dev = registry_device(s->reg);
    if (expand_index_open(info.dir, model_impl(m), device_ops(dev), device_arena(dev), NULL, &ix, note, sizeof note,
                          err, errlen)) {
        expand_terms_free(terms, n_terms);
        return NULL;
    }
    pthread_mutex_lock(&s->mu);
    s->slots[idx].ix = ix;
    if (terms) {
        s->slots[idx].terms = terms;
        s->slots[idx].n_terms = n_terms;
    }
    pthread_mutex_unlock(&s->mu);
    return ix;
}

int expand_set_term(expand_set_t *s, int idx, int32_t id, char *buf, size_t len) {
    if (!s || idx < 0 || idx >= s->n || !len) return -1;
    pthread_mutex_lock(&s->mu);
    const expand_slot_t *sl = &s->slots[idx];
    const char *t = id >= 0 && id < sl->n_terms ? sl->terms[id] : NULL;
    if (t) snprintf(buf, len, "%s", t);
    pthread_mutex_unlock(&s->mu);
    return t ? 0 : -1;
}

void expand_set_drop(expand_set_t *s, int idx) {
    if (!s || idx < 0 || idx >= s->n) return;
    pthread_mutex_lock(&s->mu);
    expand_index_t *ix = s->slots[idx].ix;
    s->slots[idx].ix = NULL;
    pthread_mutex_unlock(&s->mu);
    expand_index_destroy(ix);
}
