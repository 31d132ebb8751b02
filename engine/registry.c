/* engine/registry.c - model discovery, lazy load/unload, one arena per device.
 *
 * One mutex guards the table. A load runs without the lock held (it reads
 * files and uploads weights for hundreds of milliseconds) with the model in
 * LOADING, so info and tokenizer calls from HTTP threads never wait on it.
 */
#include <ctype.h>
#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/expand.h"
#include "engine/registry.h"

typedef struct {
    registry_model_info_t info;
    tok_t *tok;
    engine_model_t *model;
    expand_index_t *expand; /* term index of the model, built on first expand (NULL until then) */
    char **expand_terms;    /* (n_expand_terms) its terms, kept until registry_destroy so answers */
    int n_expand_terms;     /* being written can name them while the model unloads */
} registry_entry_t;

struct registry {
    pthread_mutex_t mu;
    ops_t *ops;
    arena_t *arena;
    engine_opts_t engine;
    char note[256];
    registry_entry_t *models;
    int n;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

size_t registry_default_budget(ops_t *ops) {
    size_t free_b = 0, total_b = 0;
    if (ops->mem_info) ops->mem_info(ops, &free_b, &total_b);
    if (!strcmp(ops->name, "cuda")) return (size_t)(free_b * 0.8);
    size_t cap = (size_t)2 << 30;
    if (total_b && total_b / 2 < cap) cap = total_b / 2;
    return cap;
}

static int is_model_dir(const char *dir) {
    char p[1100];
    struct stat st;
    snprintf(p, sizeof p, "%s/config.json", dir);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int read_hidden(const char *dir) {
    char p[1100];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_t *j = json_load_file(p, 0, NULL);
    int h = 0;
    if (j) {
        json_t *v = json_object_get(j, "hidden_size");
        if (json_is_integer(v)) h = (int)json_integer_value(v);
        json_decref(j);
    }
    return h;
}

static int add_model(registry_t *r, const char *name, const char *dir) {
    registry_entry_t *m = realloc(r->models, (r->n + 1) * sizeof *m);
    if (!m) return -1;
    r->models = m;
    registry_entry_t *e = &m[r->n];
    memset(e, 0, sizeof *e);
    snprintf(e->info.name, sizeof e->info.name, "%.*s", (int)sizeof e->info.name - 1, name);
    snprintf(e->info.dir, sizeof e->info.dir, "%s", dir);
    e->info.hidden = read_hidden(dir);
    e->info.state = REGISTRY_UNLOADED;
    r->n++;
    return 0;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const registry_entry_t *)a)->info.name, ((const registry_entry_t *)b)->info.name);
}

static int discover(registry_t *r, const char *models_dir, char *err, size_t errlen) {
    if (is_model_dir(models_dir)) {
        const char *base = strrchr(models_dir, '/');
        char name[REGISTRY_NAME_MAX];
        snprintf(name, sizeof name, "%s", base && base[1] ? base + 1 : models_dir);
        size_t l = strlen(name);
        while (l > 1 && name[l - 1] == '/') name[--l] = '\0';
        return add_model(r, name, models_dir);
    }
    DIR *d = opendir(models_dir);
    if (!d) {
        snprintf(err, errlen, "cannot open the models folder '%s'", models_dir);
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", models_dir, de->d_name);
        if (is_model_dir(p) && add_model(r, de->d_name, p)) {
            closedir(d);
            snprintf(err, errlen, "out of memory listing models");
            return -1;
        }
    }
    closedir(d);
    if (r->n > 1) qsort(r->models, r->n, sizeof *r->models, cmp_entry);
    return 0;
}

int registry_create(const registry_opts_t *opts, registry_t **out, char *err, size_t errlen) {
    *out = NULL;
    registry_t *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return ENGINE_ENOMEM;
    }
    pthread_mutex_init(&r->mu, NULL);
    r->engine = opts->engine;
    if (r->engine.max_batch_tokens <= 0) r->engine.max_batch_tokens = 16384;
    if (r->engine.max_batch_seqs <= 0) r->engine.max_batch_seqs = 1024;
    int rc = ENGINE_EMODEL;
    if (discover(r, opts->models_dir ? opts->models_dir : "models", err, errlen)) goto fail;
    rc = ENGINE_EDEVICE;
    /* fp16 by default: it holds the end-to-end parity target that bf16 misses
     * (docs/benchmarks.md) at the same speed */
    ops_dtype_t dtype = OPS_F16;
    if (opts->dtype && !strcmp(opts->dtype, "bf16")) dtype = OPS_BF16;
    else if (opts->dtype && !strcmp(opts->dtype, "fp32")) dtype = OPS_F32;
    else if (opts->dtype && strcmp(opts->dtype, "fp16")) {
        snprintf(err, errlen, "unknown dtype '%s' (expected fp16, bf16 or fp32)", opts->dtype);
        rc = ENGINE_EINVAL;
        goto fail;
    }
    r->ops = ops_create(opts->device ? opts->device : "auto", dtype, opts->cpu_threads, err, errlen, r->note,
                        sizeof r->note);
    if (!r->ops) goto fail;
    /* Two runners on a GPU: one batch uploads and launches while the other computes. */
    if (r->engine.runners <= 0) r->engine.runners = strcmp(r->ops->name, "cuda") ? 1 : 2;
    /* and CUDA graphs replayed for small batches, where launches cost most */
    if (!strcmp(r->ops->name, "cuda")) r->engine.graphs = 1;
    size_t budget = opts->budget ? opts->budget : registry_default_budget(r->ops);
    r->arena = arena_create(r->ops, budget, err, errlen);
    if (!r->arena) {
        rc = ENGINE_ENOMEM;
        goto fail;
    }
    *out = r;
    return ENGINE_OK;
fail:
    registry_destroy(r);
    return rc;
}

void registry_destroy(registry_t *r) {
    if (!r) return;
    for (int i = 0; i < r->n; i++) {
        expand_index_destroy(r->models[i].expand);
        expand_terms_free(r->models[i].expand_terms, r->models[i].n_expand_terms);
        engine_model_destroy(r->models[i].model);
        tok_destroy(r->models[i].tok);
    }
    free(r->models);
    arena_destroy(r->arena);
    ops_destroy(r->ops);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

int registry_count(const registry_t *r) { return r->n; }

/* "Org/Name" -> "Name"; compare without case. */
int registry_find(const registry_t *r, const char *name) {
    if (!name || !*name) return -1;
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->models[i].info.name, name)) return i;
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    for (int i = 0; i < r->n; i++)
        if (!strcasecmp(r->models[i].info.name, base)) return i;
    return -1;
}

int registry_info(registry_t *r, int idx, registry_model_info_t *out) {
    if (idx < 0 || idx >= r->n) return -1;
    pthread_mutex_lock(&r->mu);
    *out = r->models[idx].info;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

const tok_t *registry_tokenizer(registry_t *r, int idx, char *err, size_t errlen) {
    if (idx < 0 || idx >= r->n) {
        snprintf(err, errlen, "no such model");
        return NULL;
    }
    /* Held across tok_create_for_model (a few ms, once per model) so two
     * first requests do not both build it. */
    pthread_mutex_lock(&r->mu);
    registry_entry_t *e = &r->models[idx];
    if (!e->tok) {
        tok_t *t = NULL;
        if (tok_create_for_model(e->info.dir, &t, err, errlen) == TOK_OK) {
            e->tok = t;
            e->info.max_seq_len = tok_max_len(t);
        }
    }
    const tok_t *t = e->tok;
    pthread_mutex_unlock(&r->mu);
    return t;
}

int registry_load(registry_t *r, int idx, char *err, size_t errlen) {
    if (idx < 0 || idx >= r->n) {
        snprintf(err, errlen, "no such model");
        return ENGINE_EINVAL;
    }
    pthread_mutex_lock(&r->mu);
    registry_entry_t *e = &r->models[idx];
    if (e->info.state == REGISTRY_READY || e->info.state == REGISTRY_LOADING) {
        pthread_mutex_unlock(&r->mu);
        return ENGINE_OK;
    }
    e->info.state = REGISTRY_LOADING;
    char dir[sizeof e->info.dir];
    memcpy(dir, e->info.dir, sizeof dir);
    pthread_mutex_unlock(&r->mu);

    double t0 = now_s();
    engine_model_t *m = NULL;
    /* Refuse what cannot fit before touching the arena, with the numbers. */
    size_t need_w = 0, need_ws = 0;
    int rc = engine_model_need(dir, r->ops->dtype, &r->engine, &need_w, &need_ws, err, errlen);
    if (rc == ENGINE_OK && need_w + need_ws > arena_largest_free(r->arena)) {
        snprintf(err, errlen,
                 "model %s needs %zu bytes (weights %zu + workspace %zu) but the %s memory budget has "
                 "%zu bytes free in one piece (budget %zu, in use %zu)",
                 e->info.name, need_w + need_ws, need_w, need_ws, r->ops->name,
                 arena_largest_free(r->arena), arena_budget(r->arena), arena_used(r->arena));
        rc = ENGINE_ENOMEM;
    }
    if (rc == ENGINE_OK) rc = engine_model_load(dir, r->ops, r->arena, &r->engine, &m, err, errlen);

    pthread_mutex_lock(&r->mu);
    e = &r->models[idx];
    e->info.load_s = now_s() - t0;
    if (rc == ENGINE_OK) {
        e->model = m;
        e->info.state = REGISTRY_READY;
        e->info.weight_bytes = engine_weight_bytes(m);
        e->info.workspace_bytes = engine_workspace_bytes(m);
        e->info.hidden = engine_info(m)->hidden;
        e->info.last_error_code = 0;
        e->info.loads++;
    } else {
        e->info.state = REGISTRY_FAILED;
        e->info.last_error_code = rc;
        snprintf(e->info.last_error, sizeof e->info.last_error, "%s", err);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int registry_unload(registry_t *r, int idx) {
    if (idx < 0 || idx >= r->n) return -1;
    pthread_mutex_lock(&r->mu);
    registry_entry_t *e = &r->models[idx];
    engine_model_t *m = e->model;
    expand_index_t *ix = e->expand;
    e->model = NULL;
    e->expand = NULL;
    /* Free before the state says "unloaded", under the lock: whoever sees the
     * new state also sees the memory back at its baseline. */
    expand_index_destroy(ix); /* its arena blocks and its use of the model go first */
    engine_model_destroy(m);
    if (m) e->info.unloads++;
    if (e->info.state != REGISTRY_FAILED) e->info.state = REGISTRY_UNLOADED;
    e->info.weight_bytes = e->info.workspace_bytes = 0;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

expand_index_t *registry_expand_index(registry_t *r, int idx, char *err, size_t errlen) {
    if (idx < 0 || idx >= r->n) {
        snprintf(err, errlen, "no such model");
        return NULL;
    }
    pthread_mutex_lock(&r->mu);
    registry_entry_t *e = &r->models[idx];
    expand_index_t *ix = e->expand;
    engine_model_t *m = e->info.state == REGISTRY_READY ? e->model : NULL;
    char dir[sizeof e->info.dir];
    memcpy(dir, e->info.dir, sizeof dir);
    pthread_mutex_unlock(&r->mu);
    if (ix) return ix;
    if (!m) {
        snprintf(err, errlen, "model is not loaded");
        return NULL;
    }
    char note[1024], **terms = NULL;
    int n_terms = 0;
    if (!e->expand_terms && expand_terms_load(dir, NULL, &terms, &n_terms, err, errlen)) return NULL;
    if (expand_index_open(dir, m, r->ops, r->arena, NULL, &ix, note, sizeof note, err, errlen)) {
        expand_terms_free(terms, n_terms);
        return NULL;
    }
    pthread_mutex_lock(&r->mu);
    e->expand = ix;
    if (terms) { /* the same list the index holds: ids agree */
        e->expand_terms = terms;
        e->n_expand_terms = n_terms;
    }
    pthread_mutex_unlock(&r->mu);
    return ix;
}

int registry_expand_term(registry_t *r, int idx, int32_t id, char *buf, size_t len) {
    if (idx < 0 || idx >= r->n || !len) return -1;
    pthread_mutex_lock(&r->mu);
    const registry_entry_t *e = &r->models[idx];
    const char *t = id >= 0 && id < e->n_expand_terms ? e->expand_terms[id] : NULL;
    if (t) snprintf(buf, len, "%s", t);
    pthread_mutex_unlock(&r->mu);
    return t ? 0 : -1;
}

engine_model_t *registry_engine(registry_t *r, int idx) {
    if (idx < 0 || idx >= r->n) return NULL;
    pthread_mutex_lock(&r->mu);
    engine_model_t *m = r->models[idx].info.state == REGISTRY_READY ? r->models[idx].model : NULL;
    pthread_mutex_unlock(&r->mu);
    return m;
}

registry_state_t registry_state(registry_t *r, int idx) {
    if (idx < 0 || idx >= r->n) return REGISTRY_FAILED;
    pthread_mutex_lock(&r->mu);
    registry_state_t s = r->models[idx].info.state;
    pthread_mutex_unlock(&r->mu);
    return s;
}

void registry_count_request(registry_t *r, int idx, int failed) {
    if (idx < 0 || idx >= r->n) return;
    pthread_mutex_lock(&r->mu);
    r->models[idx].info.requests++;
    if (failed) r->models[idx].info.errors++;
    pthread_mutex_unlock(&r->mu);
}

const char *registry_device_name(const registry_t *r) { return r->ops->name; }
const char *registry_precision(const registry_t *r) { return ops_dtype_name(r->ops->dtype); }
const char *registry_device_note(const registry_t *r) { return r->note; }
size_t registry_budget(const registry_t *r) { return arena_budget(r->arena); }
size_t registry_used(const registry_t *r) { return arena_used(r->arena); }
const engine_opts_t *registry_engine_opts(const registry_t *r) { return &r->engine; }

const char *registry_state_name(registry_state_t s) {
    switch (s) {
    case REGISTRY_UNLOADED: return "unloaded";
    case REGISTRY_LOADING: return "loading";
    case REGISTRY_READY: return "ready";
    case REGISTRY_FAILED: return "failed";
    }
    return "unknown";
}
