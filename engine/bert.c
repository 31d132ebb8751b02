/* engine/bert.c - BERT-family sentence encoder: load a model folder, run the
 * forward pass over packed batches through the ops table (see engine.h).
 *
 * Layout in the arena, per model:
 *   weights   - embedding tables and LayerNorm params in float32, weight
 *               matrices in ops->dtype (Q, K and V fused into one (3H, H)
 *               matrix so one GEMM makes all three), biases in float32;
 *   workspace - one block carved by a pointer walk into the buffers of one
 *               batch of up to max_batch_tokens tokens.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/engine.h"
#include "engine/model.h"
#include "engine/safetensors.h"

typedef struct {
    void *w_qkv;  /* (3H, H) dtype: rows 0..H-1 query, then key, then value */
    float *b_qkv; /* (3H) */
    void *w_ao;   /* (H, H) attention output dense */
    float *b_ao;  /* (H) */
    float *ln1_g, *ln1_b; /* (H) attention output LayerNorm */
    void *w_in;   /* (I, H) intermediate dense */
    float *b_in;  /* (I) */
    void *w_out;  /* (H, I) output dense */
    float *b_out; /* (H) */
    float *ln2_g, *ln2_b; /* (H) output LayerNorm */
} bert_layer_t;

typedef struct {
    float *word;  /* (V, H) */
    float *pos;   /* (P, H) */
    float *type;  /* (types, H) */
    float *ln_g, *ln_b; /* (H) */
    bert_layer_t *layers; /* (L) */
} bert_weights_t;

typedef struct {
    int32_t *ids;     /* (T) token ids */
    int32_t *pos;     /* (T) position ids */
    int32_t *seq_off; /* (B+1) */
    void *x;          /* (T, H) act: the hidden state */
    void *qkv;        /* (T, 3H) act; also the (T, H) scratch for dense outputs */
    void *ctx;        /* (T, H) act: attention output */
    void *ffn;        /* (T, I) act */
    float *pooled;    /* (B, H) */
} bert_workspace_t;

#define MAX_RUNNERS 4
#define GRAPH_T_BUCKETS 9 /* 16, 32, ... 4096 tokens */
#define GRAPH_B_BUCKETS 13 /* 1, 2, 4, ... 4096 sequences */

/* One batch in flight: a stream (ops), a workspace, host staging, graphs. */
typedef struct {
    ops_t *ops;       /* the model's ops for runner 0, a clone for the others */
    int owns_ops;
    bert_workspace_t ws;
    int32_t *h_ids, *h_pos, *h_off; /* (max_tokens), (max_tokens), (max_seqs+1) host staging */
    float *h_out;                   /* (max_seqs, H) host staging */
    void *graphs[GRAPH_T_BUCKETS][GRAPH_B_BUCKETS];
    int busy;
} bert_runner_t;

struct engine_model {
    engine_info_t info;
    ops_t *ops;
    arena_t *arena;
    tok_t *tok;
    bert_weights_t w;
    void **blocks; /* every arena block we own, freed at destroy */
    int n_blocks, cap_blocks;
    size_t weight_bytes, workspace_bytes;
    int max_tokens, max_seqs, graphs;
    bert_runner_t runners[MAX_RUNNERS];
    int n_runners;
    pthread_mutex_t mu; /* guards runner busy flags */
    pthread_cond_t freed;
};

/* ---- small helpers ---- */

static json_t *read_json(const char *dir, const char *name, int required, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    json_error_t je;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (required) snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    json_t *j = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
    fclose(f);
    if (!j) snprintf(err, errlen, "%s:%d: invalid JSON: %s", path, je.line, je.text);
    else if (!json_is_object(j) && !json_is_array(j)) {
        snprintf(err, errlen, "%s: expected a JSON object", path);
        json_decref(j);
        j = NULL;
    }
    return j;
}

static int json_int_field(json_t *obj, const char *key, int *out, int lo, int hi, const char *file,
                          char *err, size_t errlen) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(err, errlen, "%s: field \"%s\" must be an integer in [%d, %d]", file, key, lo, hi);
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

static void *model_alloc(engine_model_t *m, size_t bytes, const char *what, char *err, size_t errlen) {
    if (m->n_blocks == m->cap_blocks) {
        int cap = m->cap_blocks ? 2 * m->cap_blocks : 64;
        void **nb = realloc(m->blocks, (size_t)cap * sizeof *nb);
        if (!nb) {
            snprintf(err, errlen, "out of host memory");
            return NULL;
        }
        m->blocks = nb;
        m->cap_blocks = cap;
    }
    void *p = arena_alloc(m->arena, bytes, what, err, errlen);
    if (p) m->blocks[m->n_blocks++] = p;
    return p;
}

/* ---- config ---- */

static int load_config(engine_model_t *m, const char *dir, char *err, size_t errlen) {
    engine_info_t *in = &m->info;
    int rc = -1, types = 0;
    json_t *cfg = read_json(dir, "config.json", 1, err, errlen), *mods = NULL, *pool = NULL, *sb = NULL;
    if (!cfg) return -1;
    const char *mt = json_string_value(json_object_get(cfg, "model_type"));
    json_t *arch = json_object_get(cfg, "architectures");
    const char *a0 = json_is_array(arch) ? json_string_value(json_array_get(arch, 0)) : NULL;
    if (!mt || strcmp(mt, "bert") != 0 || (a0 && strncmp(a0, "Bert", 4) != 0)) {
        snprintf(err, errlen, "%s/config.json: unsupported architecture (model_type %s, architectures %s): "
                 "only BertModel-family encoders are supported",
                 dir, mt ? mt : "missing", a0 ? a0 : "missing");
        goto done;
    }
    const char *act = json_string_value(json_object_get(cfg, "hidden_act"));
    if (act && strcmp(act, "gelu") != 0) {
        snprintf(err, errlen, "%s/config.json: hidden_act \"%s\" is not supported (only gelu)", dir, act);
        goto done;
    }
    const char *pet = json_string_value(json_object_get(cfg, "position_embedding_type"));
    if (pet && strcmp(pet, "absolute") != 0) {
        snprintf(err, errlen, "%s/config.json: position_embedding_type \"%s\" is not supported", dir, pet);
        goto done;
    }
    const char *cf = "config.json";
    if (json_int_field(cfg, "hidden_size", &in->hidden, 1, 16384, cf, err, errlen) ||
        json_int_field(cfg, "num_hidden_layers", &in->layers, 1, 256, cf, err, errlen) ||
        json_int_field(cfg, "num_attention_heads", &in->heads, 1, 256, cf, err, errlen) ||
        json_int_field(cfg, "intermediate_size", &in->intermediate, 1, 65536, cf, err, errlen) ||
        json_int_field(cfg, "vocab_size", &in->vocab, 1, 1 << 22, cf, err, errlen) ||
        json_int_field(cfg, "max_position_embeddings", &in->max_positions, 2, 1 << 16, cf, err, errlen))
        goto done;
    if (json_object_get(cfg, "type_vocab_size") &&
        json_int_field(cfg, "type_vocab_size", &types, 1, 1024, cf, err, errlen))
        goto done;
    if (in->hidden % in->heads) {
        snprintf(err, errlen, "%s/config.json: hidden_size %d is not a multiple of num_attention_heads %d", dir,
                 in->hidden, in->heads);
        goto done;
    }
    in->head_dim = in->hidden / in->heads;
    json_t *eps = json_object_get(cfg, "layer_norm_eps");
    in->ln_eps = json_is_number(eps) ? (float)json_number_value(eps) : 1e-12f;

    /* sentence-transformers modules: pooling and normalisation. Without
     * modules.json the folder is a plain BertModel: mean pooling, no normalise. */
    in->pool_mean = 1;
    in->normalize = 0;
    mods = read_json(dir, "modules.json", 0, err, errlen);
    if (mods) {
        size_t i;
        json_t *mod;
        json_array_foreach(mods, i, mod) {
            const char *type = json_string_value(json_object_get(mod, "type"));
            const char *path = json_string_value(json_object_get(mod, "path"));
            if (!type) continue;
            if (strstr(type, "Normalize")) in->normalize = 1;
            if (strstr(type, "Pooling") && path) {
                char sub[4096];
                snprintf(sub, sizeof sub, "%s/config.json", path);
                pool = read_json(dir, sub, 1, err, errlen);
                if (!pool) goto done;
                if (!json_is_true(json_object_get(pool, "pooling_mode_mean_tokens"))) {
                    snprintf(err, errlen, "%s/%s: only mean-token pooling is supported", dir, sub);
                    goto done;
                }
            }
        }
    }
    in->max_seq_len = in->max_positions;
    sb = read_json(dir, "sentence_bert_config.json", 0, err, errlen);
    json_t *msl = sb ? json_object_get(sb, "max_seq_length") : NULL;
    if (json_is_integer(msl) && json_integer_value(msl) >= 2 && json_integer_value(msl) < in->max_seq_len)
        in->max_seq_len = (int)json_integer_value(msl);
    err[0] = '\0';
    rc = 0;
done:
    json_decref(cfg);
    json_decref(mods);
    json_decref(pool);
    json_decref(sb);
    return rc;
}

/* ---- weights ---- */

typedef struct {
    engine_model_t *m;
    st_file_t *st;
    const char *prefix; /* "" or "bert." */
    const char *path;
    float *host;        /* conversion scratch, large enough for the biggest tensor */
} binder_t;

/* Find `name` with the expected shape; NULL and a message otherwise. */
static const st_tensor_t *bind_find(binder_t *b, const char *name, int64_t d0, int64_t d1, char *err,
                                    size_t errlen) {
    char full[ST_MAX_NAME];
    snprintf(full, sizeof full, "%s%s", b->prefix, name);
    const st_tensor_t *t = st_find(b->st, full);
    if (!t) {
        snprintf(err, errlen, "%s: tensor %s is missing", b->path, full);
        return NULL;
    }
    int ok = d1 ? (t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1) : (t->ndim == 1 && t->shape[0] == d0);
    if (!ok) {
        char got[128] = "[", want[64];
        for (int i = 0; i < t->ndim; i++) {
            size_t at = strlen(got);
            snprintf(got + at, sizeof got - at, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        }
        strncat(got, "]", sizeof got - strlen(got) - 1);
        if (d1) snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
        else snprintf(want, sizeof want, "[%lld]", (long long)d0);
        snprintf(err, errlen, "%s: tensor %s has shape %s, expected %s", b->path, full, got, want);
        return NULL;
    }
    return t;
}

/* A float32 table or vector (uploaded as is). */
static float *bind_f32(binder_t *b, const char *name, int64_t d0, int64_t d1, char *err, size_t errlen) {
    const st_tensor_t *t = bind_find(b, name, d0, d1, err, errlen);
    if (!t) return NULL;
    size_t bytes = (size_t)t->numel * sizeof(float);
    float *dst = model_alloc(b->m, bytes, name, err, errlen);
    if (!dst) return NULL;
    st_to_f32(t, b->host);
    ops_t *ops = b->m->ops;
    if (ops->upload(ops, dst, b->host, bytes)) {
        snprintf(err, errlen, "uploading %s: %s", name, ops->err);
        return NULL;
    }
    b->m->weight_bytes += bytes;
    return dst;
}

/* Weight matrices: `n` tensors of shape (rows[i], cols) stacked into one
 * (sum rows, cols) matrix in ops->dtype. Same for their biases (float32). */
static void *bind_matrix(binder_t *b, const char *const *names, const int64_t *rows, int n, int64_t cols,
                         char *err, size_t errlen) {
    ops_t *ops = b->m->ops;
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += rows[i];
    size_t esz = ops_dtype_size(ops->dtype);
    char *dst = model_alloc(b->m, (size_t)(total * cols) * esz, names[0], err, errlen);
    if (!dst) return NULL;
    char *at = dst;
    for (int i = 0; i < n; i++) {
        const st_tensor_t *t = bind_find(b, names[i], rows[i], cols, err, errlen);
        if (!t) return NULL;
        st_to_f32(t, b->host);
        if (ops->upload_weight(ops, at, b->host, (size_t)t->numel)) {
            snprintf(err, errlen, "uploading %s: %s", names[i], ops->err);
            return NULL;
        }
        at += (size_t)t->numel * esz;
    }
    b->m->weight_bytes += (size_t)(total * cols) * esz;
    return dst;
}

static float *bind_vectors(binder_t *b, const char *const *names, const int64_t *lens, int n, char *err,
                           size_t errlen) {
    ops_t *ops = b->m->ops;
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += lens[i];
    float *dst = model_alloc(b->m, (size_t)total * sizeof(float), names[0], err, errlen);
    if (!dst) return NULL;
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        const st_tensor_t *t = bind_find(b, names[i], lens[i], 0, err, errlen);
        if (!t) return NULL;
        st_to_f32(t, b->host);
        if (ops->upload(ops, dst + at, b->host, (size_t)lens[i] * sizeof(float))) {
            snprintf(err, errlen, "uploading %s: %s", names[i], ops->err);
            return NULL;
        }
        at += lens[i];
    }
    b->m->weight_bytes += (size_t)total * sizeof(float);
    return dst;
}

/* HF checkpoints name LayerNorm parameters weight/bias (new) or gamma/beta (old). */
static float *bind_ln(binder_t *b, const char *base, const char *which, int64_t H, char *err, size_t errlen) {
    char name[ST_MAX_NAME], full[ST_MAX_NAME];
    snprintf(name, sizeof name, "%s.%s", base, which);
    snprintf(full, sizeof full, "%s%s", b->prefix, name);
    if (!st_find(b->st, full)) snprintf(name, sizeof name, "%s.%s", base, strcmp(which, "weight") ? "beta" : "gamma");
    return bind_f32(b, name, H, 0, err, errlen);
}

static int load_weights(engine_model_t *m, const char *dir, char *err, size_t errlen) {
    const engine_info_t *in = &m->info;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_file_t *st = NULL;
    if (st_open(path, &st, err, errlen)) return -1;
    binder_t b = {.m = m, .st = st, .prefix = "", .path = path};
    if (!st_find(st, "embeddings.word_embeddings.weight") && st_find(st, "bert.embeddings.word_embeddings.weight"))
        b.prefix = "bert.";
    int64_t biggest = 0;
    for (int i = 0; i < st_count(st); i++)
        if (st_get(st, i)->numel > biggest) biggest = st_get(st, i)->numel;
    b.host = malloc((size_t)biggest * sizeof(float));
    m->w.layers = calloc((size_t)in->layers, sizeof(bert_layer_t));
    int rc = -1;
    if (!b.host || !m->w.layers) {
        snprintf(err, errlen, "out of host memory loading %s", path);
        goto done;
    }
    const int64_t H = in->hidden, I = in->intermediate;
    const st_tensor_t *tt = st_find(st, b.prefix[0] ? "bert.embeddings.token_type_embeddings.weight"
                                                    : "embeddings.token_type_embeddings.weight");
    int64_t types = tt && tt->ndim == 2 ? tt->shape[0] : 1;
    if (!(m->w.word = bind_f32(&b, "embeddings.word_embeddings.weight", in->vocab, H, err, errlen)) ||
        !(m->w.pos = bind_f32(&b, "embeddings.position_embeddings.weight", in->max_positions, H, err, errlen)) ||
        !(m->w.type = bind_f32(&b, "embeddings.token_type_embeddings.weight", types, H, err, errlen)) ||
        !(m->w.ln_g = bind_ln(&b, "embeddings.LayerNorm", "weight", H, err, errlen)) ||
        !(m->w.ln_b = bind_ln(&b, "embeddings.LayerNorm", "bias", H, err, errlen)))
        goto done;
    for (int l = 0; l < in->layers; l++) {
        bert_layer_t *L = &m->w.layers[l];
        char n[12][ST_MAX_NAME];
        const char *suffix[12] = {"attention.self.query.weight", "attention.self.key.weight",
                                  "attention.self.value.weight", "attention.self.query.bias",
                                  "attention.self.key.bias", "attention.self.value.bias",
                                  "attention.output.dense.weight", "attention.output.dense.bias",
                                  "intermediate.dense.weight", "intermediate.dense.bias",
                                  "output.dense.weight", "output.dense.bias"};
        for (int i = 0; i < 12; i++) snprintf(n[i], sizeof n[i], "encoder.layer.%d.%s", l, suffix[i]);
        const char *qkv_w[3] = {n[0], n[1], n[2]}, *qkv_b[3] = {n[3], n[4], n[5]};
        const int64_t hhh[3] = {H, H, H};
        char ln1[ST_MAX_NAME], ln2[ST_MAX_NAME];
        snprintf(ln1, sizeof ln1, "encoder.layer.%d.attention.output.LayerNorm", l);
        snprintf(ln2, sizeof ln2, "encoder.layer.%d.output.LayerNorm", l);
        const char *ao[1] = {n[6]}, *wi[1] = {n[8]}, *wo[1] = {n[10]};
        const char *bao[1] = {n[7]}, *bi[1] = {n[9]}, *bo[1] = {n[11]};
        const int64_t rh[1] = {H}, ri[1] = {I};
        if (!(L->w_qkv = bind_matrix(&b, qkv_w, hhh, 3, H, err, errlen)) ||
            !(L->b_qkv = bind_vectors(&b, qkv_b, hhh, 3, err, errlen)) ||
            !(L->w_ao = bind_matrix(&b, ao, rh, 1, H, err, errlen)) ||
            !(L->b_ao = bind_vectors(&b, bao, rh, 1, err, errlen)) ||
            !(L->ln1_g = bind_ln(&b, ln1, "weight", H, err, errlen)) ||
            !(L->ln1_b = bind_ln(&b, ln1, "bias", H, err, errlen)) ||
            !(L->w_in = bind_matrix(&b, wi, ri, 1, H, err, errlen)) ||
            !(L->b_in = bind_vectors(&b, bi, ri, 1, err, errlen)) ||
            !(L->w_out = bind_matrix(&b, wo, rh, 1, I, err, errlen)) ||
            !(L->b_out = bind_vectors(&b, bo, rh, 1, err, errlen)) ||
            !(L->ln2_g = bind_ln(&b, ln2, "weight", H, err, errlen)) ||
            !(L->ln2_b = bind_ln(&b, ln2, "bias", H, err, errlen)))
            goto done;
    }
    /* uploads may be asynchronous: the host scratch must outlive them */
    if (m->ops->sync(m->ops)) {
        snprintf(err, errlen, "uploading weights: %s", m->ops->err);
        goto done;
    }
    rc = 0;
done:
    free(b.host);
    st_close(st);
    return rc;
}

/* ---- workspace ---- */

static size_t align_up(size_t n) { return (n + 255) / 256 * 256; }

size_t engine_workspace_need(const engine_info_t *in, ops_dtype_t dtype, int T, int B) {
    size_t e = ops_dtype_size(dtype), t = (size_t)T, H = (size_t)in->hidden;
    return align_up(t * 4) * 2 + align_up(((size_t)B + 1) * 4) + align_up(t * H * e) * 2 +
           align_up(t * 3 * H * e) + align_up(t * (size_t)in->intermediate * e) + align_up((size_t)B * H * 4);
}

static int carve_workspace(engine_model_t *m, bert_runner_t *r, char *err, size_t errlen) {
    const engine_info_t *in = &m->info;
    size_t e = ops_dtype_size(m->ops->dtype), T = (size_t)m->max_tokens, H = (size_t)in->hidden;
    size_t need = engine_workspace_need(in, m->ops->dtype, m->max_tokens, m->max_seqs);
    char *p = model_alloc(m, need, "the batch workspace", err, errlen);
    if (!p) return -1;
    m->workspace_bytes += need;
    /* the pointer walk; sizes must match engine_workspace_need */
    r->ws.ids = (int32_t *)p, p += align_up(T * 4);
    r->ws.pos = (int32_t *)p, p += align_up(T * 4);
    r->ws.seq_off = (int32_t *)p, p += align_up(((size_t)m->max_seqs + 1) * 4);
    r->ws.x = p, p += align_up(T * H * e);
    r->ws.ctx = p, p += align_up(T * H * e);
    r->ws.qkv = p, p += align_up(T * 3 * H * e);
    r->ws.ffn = p, p += align_up(T * (size_t)in->intermediate * e);
    r->ws.pooled = (float *)p;
    return 0;
}

static void *host_alloc(ops_t *ops, size_t bytes) {
    return ops->host_alloc ? ops->host_alloc(ops, bytes) : malloc(bytes);
}

static void host_free(ops_t *ops, void *p) {
    if (!p) return;
    if (ops->host_free) ops->host_free(ops, p);
    else free(p);
}

static int runner_init(engine_model_t *m, int i, char *err, size_t errlen) {
    bert_runner_t *r = &m->runners[i];
    r->ops = m->ops;
    if (i > 0) {
        if (!m->ops->clone || !(r->ops = m->ops->clone(m->ops))) {
            snprintf(err, errlen, "%s backend cannot make a second stream: %s", m->ops->name, m->ops->err);
            r->ops = NULL;
            return -1;
        }
        r->owns_ops = 1;
    }
    size_t T = (size_t)m->max_tokens, B = (size_t)m->max_seqs;
    r->h_ids = host_alloc(r->ops, T * 4);
    r->h_pos = host_alloc(r->ops, T * 4);
    r->h_off = host_alloc(r->ops, (B + 1) * 4);
    r->h_out = host_alloc(r->ops, B * (size_t)m->info.hidden * 4);
    if (!r->h_ids || !r->h_pos || !r->h_off || !r->h_out) {
        snprintf(err, errlen, "out of host memory for staging buffers");
        return -1;
    }
    return carve_workspace(m, r, err, errlen);
}

static void runner_destroy(bert_runner_t *r) {
    if (!r->ops) return;
    r->ops->sync(r->ops);
    for (int t = 0; t < GRAPH_T_BUCKETS; t++)
        for (int b = 0; b < GRAPH_B_BUCKETS; b++)
            if (r->graphs[t][b]) r->ops->graph_destroy(r->ops, r->graphs[t][b]);
    host_free(r->ops, r->h_ids);
    host_free(r->ops, r->h_pos);
    host_free(r->ops, r->h_off);
    host_free(r->ops, r->h_out);
    if (r->owns_ops) ops_destroy(r->ops);
    memset(r, 0, sizeof *r);
}

/* ---- public ---- */

int engine_model_need(const char *dir, ops_dtype_t dtype, const engine_opts_t *opts, size_t *weight_bytes,
                      size_t *workspace_bytes, char *err, size_t errlen) {
    engine_model_t m = {0};
    if (load_config(&m, dir, err, errlen)) return ENGINE_EMODEL;
    const size_t H = (size_t)m.info.hidden, I = (size_t)m.info.intermediate, e = ops_dtype_size(dtype);
    /* the same blocks load_weights allocates, each rounded to the arena's alignment;
     * the token-type table is taken at its usual 2 rows */
    size_t w = align_up((size_t)m.info.vocab * H * 4) + align_up((size_t)m.info.max_positions * H * 4) +
               align_up(2 * H * 4) + 2 * align_up(H * 4);
    size_t layer = align_up(3 * H * H * e) + align_up(3 * H * 4) + align_up(H * H * e) + align_up(H * 4) +
                   align_up(I * H * e) + align_up(I * 4) + align_up(H * I * e) + align_up(H * 4) +
                   4 * align_up(H * 4);
    w += layer * (size_t)m.info.layers;
    int T = opts && opts->max_batch_tokens > 0 ? opts->max_batch_tokens : ENGINE_DEFAULT_BATCH_TOKENS;
    int B = opts && opts->max_batch_seqs > 0 ? opts->max_batch_seqs : ENGINE_DEFAULT_BATCH_SEQS;
    if (T < m.info.max_seq_len) T = m.info.max_seq_len;
    int runners = opts && opts->runners > 0 ? opts->runners : 1;
    if (runners > MAX_RUNNERS) runners = MAX_RUNNERS;
    *weight_bytes = w;
    *workspace_bytes = align_up(engine_workspace_need(&m.info, dtype, T, B)) * (size_t)runners;
    return ENGINE_OK;
}

int engine_model_load(const char *dir, ops_t *ops, arena_t *arena, const engine_opts_t *opts,
                      engine_model_t **out, char *err, size_t errlen) {
    *out = NULL;
    engine_model_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of host memory");
        return ENGINE_ENOMEM;
    }
    m->ops = ops;
    m->arena = arena;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->freed, NULL);
    m->max_tokens = opts && opts->max_batch_tokens > 0 ? opts->max_batch_tokens : ENGINE_DEFAULT_BATCH_TOKENS;
    m->max_seqs = opts && opts->max_batch_seqs > 0 ? opts->max_batch_seqs : ENGINE_DEFAULT_BATCH_SEQS;
    m->n_runners = opts && opts->runners > 0 ? opts->runners : 1;
    if (m->n_runners > MAX_RUNNERS) m->n_runners = MAX_RUNNERS;
    m->graphs = opts && opts->graphs && ops->capture_begin != NULL;
    int rc = ENGINE_EMODEL;
    if (load_config(m, dir, err, errlen)) goto fail;
    if (tok_create_for_model(dir, &m->tok, err, errlen)) goto fail;
    if (tok_max_len(m->tok) < m->info.max_seq_len) m->info.max_seq_len = tok_max_len(m->tok);
    if (m->info.max_seq_len > m->info.max_positions) m->info.max_seq_len = m->info.max_positions;
    if (m->max_tokens < m->info.max_seq_len) m->max_tokens = m->info.max_seq_len;
    if (load_weights(m, dir, err, errlen)) {
        rc = strstr(err, "budget") ? ENGINE_ENOMEM : ENGINE_EMODEL;
        goto fail;
    }
    for (int i = 0; i < m->n_runners; i++)
        if (runner_init(m, i, err, errlen)) {
            rc = strstr(err, "budget") ? ENGINE_ENOMEM : ENGINE_EDEVICE;
            goto fail;
        }
    *out = m;
    return ENGINE_OK;
fail:
    engine_model_destroy(m);
    return rc;
}

void engine_model_destroy(engine_model_t *m) {
    if (!m) return;
    /* no block may be freed under a running batch: runners sync first */
    for (int i = 0; i < MAX_RUNNERS; i++) runner_destroy(&m->runners[i]);
    if (m->ops) m->ops->sync(m->ops);
    for (int i = 0; i < m->n_blocks; i++) arena_free(m->arena, m->blocks[i]);
    free(m->blocks);
    free(m->w.layers);
    tok_destroy(m->tok);
    pthread_cond_destroy(&m->freed);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

const engine_info_t *engine_info(const engine_model_t *m) { return &m->info; }
const tok_t *engine_tokenizer(const engine_model_t *m) { return m->tok; }
size_t engine_weight_bytes(const engine_model_t *m) { return m->weight_bytes; }
size_t engine_workspace_bytes(const engine_model_t *m) { return m->workspace_bytes; }
int engine_max_batch_tokens(const engine_model_t *m) { return m->max_tokens; }
int engine_max_batch_seqs(const engine_model_t *m) { return m->max_seqs; }

static int check_batch(const engine_model_t *m, const int32_t *ids, const int32_t *seq_off, int n,
                       int *max_len, char *err, size_t errlen) {
    if (n < 1 || n > m->max_seqs) {
        snprintf(err, errlen, "batch of %d sequences (allowed 1..%d)", n, m->max_seqs);
        return -1;
    }
    if (seq_off[0] != 0) {
        snprintf(err, errlen, "seq_off[0] must be 0");
        return -1;
    }
    *max_len = 0;
    for (int b = 0; b < n; b++) {
        int len = seq_off[b + 1] - seq_off[b];
        if (len < 1 || len > m->info.max_seq_len) {
            snprintf(err, errlen, "sequence %d has %d tokens (allowed 1..%d)", b, len, m->info.max_seq_len);
            return -1;
        }
        if (len > *max_len) *max_len = len;
    }
    int T = seq_off[n];
    if (T > m->max_tokens) {
        snprintf(err, errlen, "batch of %d tokens exceeds the workspace (%d tokens)", T, m->max_tokens);
        return -1;
    }
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= m->info.vocab) {
            snprintf(err, errlen, "token id %d at position %d is outside the vocabulary (0..%d)", ids[t], t,
                     m->info.vocab - 1);
            return -1;
        }
    return 0;
}

#define OPS_TRY(call)                                                   \
    do {                                                                \
        if ((call) != 0) {                                              \
            snprintf(err, errlen, "%s backend: %s", ops->name, ops->err); \
            return ENGINE_EDEVICE;                                      \
        }                                                               \
    } while (0)

/* Every op of the forward pass, from the uploaded inputs in r->ws to the
 * pooled rows. T tokens, n sequences, the longest max_len tokens. */
static int forward_ops(engine_model_t *m, bert_runner_t *r, int T, int n, int max_len, char *err, size_t errlen) {
    const engine_info_t *in = &m->info;
    ops_t *ops = r->ops;
    const bert_workspace_t *ws = &r->ws;
    const int H = in->hidden, I = in->intermediate;
    const float scale = 1.0f / sqrtf((float)in->head_dim);
    OPS_TRY(ops->embed_ln(ops, ws->x, ws->ids, ws->pos, m->w.word, m->w.pos, m->w.type, m->w.ln_g, m->w.ln_b, T,
                          H, in->ln_eps));
    for (int l = 0; l < in->layers; l++) {
        const bert_layer_t *L = &m->w.layers[l];
        void *dense = ws->qkv; /* (T, H) scratch once attention has read qkv */
        /* The QKV bias is added by attention as it reads q, k and v: attention
         * is qkv's only reader, so a bias pass over (T, 3H) would be wasted. */
        OPS_TRY(ops->matmul(ops, ws->qkv, ws->x, L->w_qkv, NULL, T, H, 3 * H, OPS_EPI_NONE));
        OPS_TRY(ops->attention(ops, ws->ctx, ws->qkv, L->b_qkv, ws->seq_off, n, max_len, in->heads, in->head_dim,
                               scale));
        OPS_TRY(ops->matmul(ops, dense, ws->ctx, L->w_ao, NULL, T, H, H, OPS_EPI_NONE));
        OPS_TRY(ops->add_ln(ops, ws->x, dense, L->b_ao, ws->x, L->ln1_g, L->ln1_b, T, H, in->ln_eps));
        OPS_TRY(ops->matmul(ops, ws->ffn, ws->x, L->w_in, L->b_in, T, H, I, OPS_EPI_BIAS_GELU));
        OPS_TRY(ops->matmul(ops, dense, ws->ffn, L->w_out, NULL, T, I, H, OPS_EPI_NONE));
        OPS_TRY(ops->add_ln(ops, ws->x, dense, L->b_out, ws->x, L->ln2_g, L->ln2_b, T, H, in->ln_eps));
    }
    OPS_TRY(ops->mean_pool(ops, ws->pooled, ws->x, ws->seq_off, n, H, in->normalize));
    return ENGINE_OK;
}

static int bucket_index(int v, int first) { /* smallest i with first << i >= v */
    int i = 0;
    while ((first << i) < v) i++;
    return i;
}

/* Run one checked batch on runner r. Small batches replay a graph captured for
 * their (tokens, sequences) bucket: the batch is padded to the bucket with
 * empty sequences and pad tokens that no sequence reads, and attention is
 * launched for the model's longest sequence, so one graph serves every batch
 * of its bucket. */
static int run_batch(engine_model_t *m, bert_runner_t *r, const int32_t *ids, const int32_t *seq_off, int n,
                     int max_len, float *out, char *err, size_t errlen) {
    ops_t *ops = r->ops;
    const int T = seq_off[n], H = m->info.hidden;
    int tb = bucket_index(T, 16), bb = bucket_index(n, 1);
    int use_graph = m->graphs && T <= ENGINE_GRAPH_MAX_TOKENS && tb < GRAPH_T_BUCKETS && bb < GRAPH_B_BUCKETS &&
                    (16 << tb) <= m->max_tokens && (1 << bb) <= m->max_seqs;
    int Tp = use_graph ? 16 << tb : T, np = use_graph ? 1 << bb : n;
    memcpy(r->h_ids, ids, (size_t)T * 4);
    memcpy(r->h_off, seq_off, (size_t)(n + 1) * 4);
    for (int b = 0; b < n; b++)
        for (int t = seq_off[b]; t < seq_off[b + 1]; t++) r->h_pos[t] = t - seq_off[b];
    for (int t = T; t < Tp; t++) r->h_ids[t] = 0, r->h_pos[t] = 0;
    for (int b = n + 1; b <= np; b++) r->h_off[b] = T;
    OPS_TRY(ops->upload(ops, r->ws.ids, r->h_ids, (size_t)Tp * 4));
    OPS_TRY(ops->upload(ops, r->ws.pos, r->h_pos, (size_t)Tp * 4));
    OPS_TRY(ops->upload(ops, r->ws.seq_off, r->h_off, (size_t)(np + 1) * 4));
    if (use_graph) {
        void **g = &r->graphs[tb][bb];
        if (!*g) {
            OPS_TRY(ops->capture_begin(ops));
            int rc = forward_ops(m, r, Tp, np, m->info.max_seq_len, err, errlen);
            void *graph = NULL;
            int crc = ops->capture_end(ops, &graph);
            if (rc) return rc;
            OPS_TRY(crc);
            *g = graph;
        }
        OPS_TRY(ops->graph_launch(ops, *g));
    } else {
        int rc = forward_ops(m, r, T, n, max_len, err, errlen);
        if (rc) return rc;
    }
    OPS_TRY(ops->download(ops, r->h_out, r->ws.pooled, (size_t)n * H * sizeof(float)));
    OPS_TRY(ops->sync(ops));
    memcpy(out, r->h_out, (size_t)n * H * sizeof(float));
    return ENGINE_OK;
}

int engine_embed(engine_model_t *m, const int32_t *ids, const int32_t *seq_off, int n, float *out, char *err,
                 size_t errlen) {
    int max_len = 0;
    if (check_batch(m, ids, seq_off, n, &max_len, err, errlen)) return ENGINE_EINVAL;
    pthread_mutex_lock(&m->mu);
    bert_runner_t *r = NULL;
    while (!r) {
        for (int i = 0; i < m->n_runners && !r; i++)
            if (!m->runners[i].busy) r = &m->runners[i];
        if (!r) pthread_cond_wait(&m->freed, &m->mu);
    }
    r->busy = 1;
    pthread_mutex_unlock(&m->mu);
    int rc = run_batch(m, r, ids, seq_off, n, max_len, out, err, errlen);
    pthread_mutex_lock(&m->mu);
    r->busy = 0;
    pthread_cond_signal(&m->freed);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* ---- the model interface (engine/model.h) ---- */

static int bert_detect(const char *path) {
    char p[1100];
    struct stat st;
    snprintf(p, sizeof p, "%s/config.json", path);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int bert_tokenizer(const char *path, tok_t **out, char *err, size_t errlen) {
    return tok_create_for_model(path, out, err, errlen);
}

static int bert_load(const char *path, ops_t *ops, arena_t *arena, const engine_opts_t *opts, void **out, char *err,
                     size_t errlen) {
    engine_model_t *m = NULL;
    int rc = engine_model_load(path, ops, arena, opts, &m, err, errlen);
    *out = m;
    return rc;
}

static void bert_free(void *impl) { engine_model_destroy(impl); }

static void bert_info(const void *impl, model_info_t *out) {
    const engine_model_t *m = impl;
    *out = (model_info_t){.family = "bert", .kind = MODEL_ENCODER, .hidden = m->info.hidden, .vocab = m->info.vocab,
                          .max_seq_len = m->info.max_seq_len, .weight_bytes = m->weight_bytes,
                          .workspace_bytes = m->workspace_bytes, .max_batch_tokens = m->max_tokens,
                          .max_batch_seqs = m->max_seqs};
}

static int bert_embed(void *impl, const int32_t *ids, const int32_t *seq_off, int n, float *out, char *err,
                      size_t errlen) {
    return engine_embed(impl, ids, seq_off, n, out, err, errlen);
}

const model_family_t model_bert = {
    .name = "bert",
    .kind = MODEL_ENCODER,
    .detect = bert_detect,
    .need = engine_model_need,
    .tokenizer = bert_tokenizer,
    .load = bert_load,
    .free = bert_free,
    .info = bert_info,
    .embed = bert_embed,
    .step = NULL,
};
