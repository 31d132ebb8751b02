/* engine/llama.c - Llama decoder from GGUF: load, then the forward pass
 * through the backend's decoder ops (see llama.h).
 *
 * Arena layout, per model:
 *   weights   - one block: the token embedding (also the LM head when tied),
 *               per layer the fused QKV matrix (rows: n_heads*head_dim query,
 *               then n_kv_heads*head_dim key, then value), the attention
 *               output, the fused gate|up matrix (rows: F gate, then F up),
 *               down, and the two RMSNorm weights (float32); then the final
 *               norm and output.weight if the file has one. Matrices stay in
 *               the file's block format: a row of K values is K/32 blocks, so
 *               fusing matrices is concatenating their bytes.
 *   workspace - one block carved by a pointer walk into the buffers of one
 *               call of up to max_tokens tokens and max_seqs sequences.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/llama.h"

#define ALIGN 256

typedef struct {
    const void *wqkv; /* (n_heads*hd + 2*n_kv*hd, H) in wt_qkv */
    const void *wo;   /* (H, n_heads*hd) in wt_o */
    const void *wgu;  /* (2F, H) in wt_gu */
    const void *wd;   /* (H, F) in wt_d */
    const float *attn_norm; /* (H) */
    const float *ffn_norm;  /* (H) */
    ops_wtype_t wt_qkv, wt_o, wt_gu, wt_d;
} llama_layer_t;

typedef struct {
    int32_t *ids;      /* (max_tokens) token ids; also the row index of each sequence's last token */
    int32_t *pos;      /* (max_tokens) positions */
    int32_t *slot;     /* (max_tokens) KV slots */
    int32_t *seq_off;  /* (max_seqs + 1) */
    int32_t *ctx_len;  /* (max_seqs) tokens in the cache after this step */
    int32_t *table;    /* (max_seqs * max_blocks) block tables, max_blocks of this call per row */
    int32_t *last;     /* (max_tokens) rows whose logits are wanted */
    float *x;          /* (T, H) residual stream */
    float *xn;         /* (T, H) normed */
    float *qkv;        /* (T, n_qkv) */
    float *attn;       /* (T, n_heads*hd) */
    float *delta;      /* (T, H) attention or MLP output, added to x by the next norm */
    float *gu;         /* (T, 2F) */
    float *act;        /* (T, F) */
    float *rows;       /* (max_seqs, H) gathered rows for the LM head */
    float *logits;     /* (max_seqs, V) */
    int32_t *next;     /* (max_seqs) each row's argmax (greedy token) */
} llama_ws_t;

/* One captured decode step: np sequences of one token, contexts up to ctx,
 * block tables of mb entries a row, over the caches of one KV pool (their
 * addresses are in the graph). */
typedef struct {
    const kv_pool_t *kv;
    int np, ctx, mb;
    void *exec; /* the backend's graph */
} llama_graph_t;
#define LLAMA_MAX_GRAPHS 64

struct llama_model {
    llama_info_t info;
    llama_opts_t opts;
    ops_t *ops;
    arena_t *arena;
    void *wblock;  /* the weights' arena block */
    size_t wbytes;
    void *wsblock; /* the workspace's arena block */
    size_t wsbytes;
    const void *embd;  /* (V, H) in wt_embd */
    ops_wtype_t wt_embd;
    const void *head;  /* (V, H) in wt_head: output.weight or embd */
    ops_wtype_t wt_head;
    const float *out_norm; /* (H) */
    llama_layer_t *layers;
    llama_ws_t ws;
    int n_qkv;          /* (n_heads + 2 n_kv) * hd */
    int table_cap;      /* int32 entries in ws.table */
    /* host staging for the per-call integer arrays */
    int32_t *h_pos, *h_slot, *h_seq_off, *h_ctx, *h_table, *h_last, *h_ids, *h_next;
    llama_graph_t graphs[LLAMA_MAX_GRAPHS]; /* decode-step graphs, n_graphs of them */
    int n_graphs;
    int graphs_off; /* no graphs: opts.no_graphs, a backend without them, or a capture that failed */
};

/* ---- metadata ---- */

static int need_int(gguf_file_t *f, const char *key, int lo, int hi, int *out, char *err, size_t errlen) {
    int64_t v;
    int rc = gguf_get_int(f, key, &v);
    if (rc == GGUF_ENOTFOUND) {
        snprintf(err, errlen, "llama: the GGUF lacks the key %s", key);
        return LLAMA_EMODEL;
    }
    if (rc != GGUF_OK || v < lo || v > hi) {
        snprintf(err, errlen, "llama: %s %s (want an integer in %d..%d)", key, rc ? "is not an integer" : "out of range",
                 lo, hi);
        return LLAMA_EMODEL;
    }
    *out = (int)v;
    return LLAMA_OK;
}

static int need_float(gguf_file_t *f, const char *key, double lo, double hi, float *out, char *err, size_t errlen) {
    double v;
    int rc = gguf_get_float(f, key, &v);
    if (rc == GGUF_ENOTFOUND) {
        snprintf(err, errlen, "llama: the GGUF lacks the key %s", key);
        return LLAMA_EMODEL;
    }
    if (rc != GGUF_OK || !(v >= lo && v <= hi)) {
        snprintf(err, errlen, "llama: %s %s (want a float in %g..%g)", key, rc ? "is not a float" : "out of range", lo,
                 hi);
        return LLAMA_EMODEL;
    }
    *out = (float)v;
    return LLAMA_OK;
}

static int read_info(gguf_file_t *f, llama_info_t *in, char *err, size_t errlen) {
    const char *arch;
    size_t alen;
    if (gguf_get_str(f, "general.architecture", &arch, &alen) != GGUF_OK) {
        snprintf(err, errlen, "llama: the GGUF lacks the key general.architecture");
        return LLAMA_EMODEL;
    }
    if (alen != 5 || memcmp(arch, "llama", 5) != 0) {
        snprintf(err, errlen, "llama: architecture '%.*s' is not supported (only llama)", (int)(alen > 64 ? 64 : alen),
                 arch);
        return LLAMA_EMODEL;
    }
    int rc;
    if ((rc = need_int(f, "llama.block_count", 1, 1024, &in->n_layers, err, errlen)) ||
        (rc = need_int(f, "llama.embedding_length", 32, 65536, &in->hidden, err, errlen)) ||
        (rc = need_int(f, "llama.feed_forward_length", 32, 262144, &in->ffn, err, errlen)) ||
        (rc = need_int(f, "llama.attention.head_count", 1, 1024, &in->n_heads, err, errlen)) ||
        (rc = need_int(f, "llama.attention.head_count_kv", 1, 1024, &in->n_kv_heads, err, errlen)) ||
        (rc = need_int(f, "llama.context_length", 1, 1 << 24, &in->n_ctx, err, errlen)) ||
        (rc = need_float(f, "llama.rope.freq_base", 1.0, 1e12, &in->rope_theta, err, errlen)) ||
        (rc = need_float(f, "llama.attention.layer_norm_rms_epsilon", 0.0, 1.0, &in->rms_eps, err, errlen)))
        return rc;
    if (in->hidden % in->n_heads != 0 || in->n_heads % in->n_kv_heads != 0 || (in->hidden / in->n_heads) % 2 != 0) {
        snprintf(err, errlen, "llama: %d heads and %d KV heads do not divide width %d into even head dims",
                 in->n_heads, in->n_kv_heads, in->hidden);
        return LLAMA_EMODEL;
    }
    in->head_dim = in->hidden / in->n_heads;
    int64_t rot;
    if (gguf_get_int(f, "llama.rope.dimension_count", &rot) == GGUF_OK && rot != in->head_dim) {
        snprintf(err, errlen, "llama: partial RoPE (rope.dimension_count %lld of head dim %d) is not supported",
                 (long long)rot, in->head_dim);
        return LLAMA_EMODEL;
    }
    const char *scaling;
    size_t slen;
    if (gguf_get_str(f, "llama.rope.scaling.type", &scaling, &slen) == GGUF_OK &&
        !(slen == 4 && memcmp(scaling, "none", 4) == 0)) {
        snprintf(err, errlen, "llama: RoPE scaling '%.*s' is not supported", (int)(slen > 32 ? 32 : slen), scaling);
        return LLAMA_EMODEL;
    }
    return LLAMA_OK;
}

/* ---- tensors ---- */

static int wtype_of(gguf_type_t t, ops_wtype_t *w) {
    switch (t) {
    case GGUF_T_F32: *w = OPS_W_F32; return 1;
    case GGUF_T_F16: *w = OPS_W_F16; return 1;
    case GGUF_T_Q8_0: *w = OPS_W_Q8_0; return 1;
    case GGUF_T_Q4_0: *w = OPS_W_Q4_0; return 1;
    case GGUF_T_Q4_1: *w = OPS_W_Q4_1; return 1;
    default: return 0;
    }
}

/* The named tensor, 2-D (ne0 = cols, ne1 = rows) or 1-D (rows = 0), in a
 * type the matmul takes (matrix) or F32 (vector). */
static const gguf_tensor_t *get_tensor(gguf_file_t *f, const char *name, int64_t cols, int64_t rows, char *err,
                                       size_t errlen) {
    const gguf_tensor_t *t = gguf_find_tensor(f, name);
    if (!t) {
        snprintf(err, errlen, "llama: the GGUF lacks the tensor %s", name);
        return NULL;
    }
    int ok_shape = rows ? (t->n_dims == 2 && t->ne[0] == cols && t->ne[1] == rows)
                        : (t->n_dims == 1 && t->ne[0] == cols);
    if (!ok_shape) {
        snprintf(err, errlen, "llama: tensor %s has shape [%lld, %lld], want [%lld%s%lld]", name, (long long)t->ne[0],
                 (long long)(t->n_dims > 1 ? t->ne[1] : 1), (long long)cols, rows ? ", " : "",
                 (long long)(rows ? rows : 0));
        if (!rows) snprintf(err, errlen, "llama: tensor %s has %d dims [%lld, ...], want [%lld]", name, t->n_dims,
                            (long long)t->ne[0], (long long)cols);
        return NULL;
    }
    ops_wtype_t w;
    if (rows ? !wtype_of(t->type, &w) : t->type != GGUF_T_F32) {
        snprintf(err, errlen, "llama: tensor %s has type %s, not supported here (%s)", name, gguf_type_name(t->type),
                 rows ? "matrices: F32, F16, Q8_0, Q4_0, Q4_1" : "norms: F32");
        return NULL;
    }
    return t;
}

/* A pointer walk over one arena block; with base NULL it only measures. */
typedef struct {
    unsigned char *base;
    size_t off;
} walk_t;

static void *walk(walk_t *w, size_t bytes) {
    w->off = (w->off + ALIGN - 1) / ALIGN * ALIGN;
    void *p = w->base ? w->base + w->off : NULL;
    w->off += bytes;
    return p;
}

typedef struct {
    const gguf_tensor_t *q, *k, *v, *o, *gate, *up, *down, *an, *fn;
} layer_src_t;

static int same_type(const gguf_tensor_t *a, const gguf_tensor_t *b, char *err, size_t errlen) {
    if (a->type == b->type) return 1;
    snprintf(err, errlen, "llama: %s is %s but %s is %s: fused matrices need one type", a->name,
             gguf_type_name(a->type), b->name, gguf_type_name(b->type));
    return 0;
}

static int find_layer(gguf_file_t *f, const llama_info_t *in, int l, layer_src_t *s, char *err, size_t errlen) {
    char name[GGUF_MAX_NAME];
    int H = in->hidden, hd = in->head_dim;
#define GET(field, suffix, cols, rows)                                                                                 \
    snprintf(name, sizeof name, "blk.%d.%s", l, suffix);                                                              \
    if (!(s->field = get_tensor(f, name, cols, rows, err, errlen))) return LLAMA_EMODEL;
    GET(q, "attn_q.weight", H, in->n_heads * hd)
    GET(k, "attn_k.weight", H, in->n_kv_heads * hd)
    GET(v, "attn_v.weight", H, in->n_kv_heads * hd)
    GET(o, "attn_output.weight", in->n_heads * hd, H)
    GET(gate, "ffn_gate.weight", H, in->ffn)
    GET(up, "ffn_up.weight", H, in->ffn)
    GET(down, "ffn_down.weight", in->ffn, H)
    GET(an, "attn_norm.weight", H, 0)
    GET(fn, "ffn_norm.weight", H, 0)
#undef GET
    if (!same_type(s->q, s->k, err, errlen) || !same_type(s->q, s->v, err, errlen) ||
        !same_type(s->gate, s->up, err, errlen))
        return LLAMA_EMODEL;
    return LLAMA_OK;
}

static const char *missing_op(const ops_t *ops) {
    if (!ops->matmul_q) return "matmul_q";
    if (!ops->embed_q) return "embed_q";
    if (!ops->add_rms_norm) return "add_rms_norm";
    if (!ops->rope) return "rope";
    if (!ops->silu_mul) return "silu_mul";
    if (!ops->kv_store) return "kv_store";
    if (!ops->attention_paged) return "attention_paged";
    return NULL;
}

/* Copy tensors end to end into dst (backend memory). */
static int upload_cat(ops_t *ops, void *dst, const gguf_tensor_t *const *parts, int n, char *err, size_t errlen) {
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (ops->upload(ops, (unsigned char *)dst + off, parts[i]->data, parts[i]->nbytes) != 0) {
            snprintf(err, errlen, "llama: upload of %s: %s", parts[i]->name, ops->err);
            return LLAMA_EDEVICE;
        }
        off += parts[i]->nbytes;
    }
    return LLAMA_OK;
}

/* Lay out (or, with w->base set, fill) the weights. */
static int place_weights(llama_model_t *m, gguf_file_t *f, walk_t *w, const gguf_tensor_t *embd,
                         const gguf_tensor_t *head, const gguf_tensor_t *onorm, char *err, size_t errlen) {
    ops_t *ops = m->ops;
    int fill = w->base != NULL;
    int rc = LLAMA_OK;
    void *p = walk(w, embd->nbytes);
    if (fill && (rc = upload_cat(ops, p, &embd, 1, err, errlen))) return rc;
    m->embd = p;
    if (head != embd) {
        p = walk(w, head->nbytes);
        if (fill && (rc = upload_cat(ops, p, &head, 1, err, errlen))) return rc;
        m->head = p;
    } else {
        m->head = m->embd;
    }
    p = walk(w, onorm->nbytes);
    if (fill && (rc = upload_cat(ops, p, &onorm, 1, err, errlen))) return rc;
    m->out_norm = p;
    for (int l = 0; l < m->info.n_layers; l++) {
        layer_src_t s;
        if ((rc = find_layer(f, &m->info, l, &s, err, errlen))) return rc;
        llama_layer_t *L = &m->layers[l];
        const gguf_tensor_t *qkv[3] = {s.q, s.k, s.v}, *gu[2] = {s.gate, s.up};
        struct {
            const void **dst;
            const gguf_tensor_t *const *src;
            int n;
        } parts[] = {{&L->wqkv, qkv, 3},     {&L->wo, &s.o, 1},
                     {&L->wgu, gu, 2},       {&L->wd, &s.down, 1},
                     {(const void **)&L->attn_norm, &s.an, 1}, {(const void **)&L->ffn_norm, &s.fn, 1}};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            size_t bytes = 0;
            for (int j = 0; j < parts[i].n; j++) bytes += parts[i].src[j]->nbytes;
            p = walk(w, bytes);
            if (fill && (rc = upload_cat(ops, p, parts[i].src, parts[i].n, err, errlen))) return rc;
            *parts[i].dst = p;
        }
        wtype_of(s.q->type, &L->wt_qkv);
        wtype_of(s.o->type, &L->wt_o);
        wtype_of(s.gate->type, &L->wt_gu);
        wtype_of(s.down->type, &L->wt_d);
    }
    return LLAMA_OK;
}

/* Carve the workspace (w->base NULL: measure only). */
static void place_workspace(llama_model_t *m, walk_t *w) {
    const llama_info_t *in = &m->info;
    size_t T = (size_t)m->opts.max_tokens, B = (size_t)m->opts.max_seqs;
    llama_ws_t *ws = &m->ws;
    ws->ids = walk(w, T * sizeof(int32_t));
    ws->pos = walk(w, T * sizeof(int32_t));
    ws->slot = walk(w, T * sizeof(int32_t));
    ws->seq_off = walk(w, (B + 1) * sizeof(int32_t));
    ws->ctx_len = walk(w, B * sizeof(int32_t));
    ws->table = walk(w, (size_t)m->table_cap * sizeof(int32_t));
    ws->last = walk(w, T * sizeof(int32_t));
    ws->x = walk(w, T * (size_t)in->hidden * sizeof(float));
    ws->xn = walk(w, T * (size_t)in->hidden * sizeof(float));
    ws->qkv = walk(w, T * (size_t)m->n_qkv * sizeof(float));
    ws->attn = walk(w, T * (size_t)in->n_heads * in->head_dim * sizeof(float));
    ws->delta = walk(w, T * (size_t)in->hidden * sizeof(float));
    ws->gu = walk(w, T * 2 * (size_t)in->ffn * sizeof(float));
    ws->act = walk(w, T * (size_t)in->ffn * sizeof(float));
    ws->rows = walk(w, B * (size_t)in->hidden * sizeof(float));
    ws->logits = walk(w, B * (size_t)in->vocab * sizeof(float));
    ws->next = walk(w, B * sizeof(int32_t));
}

/* Read the hyperparameters, find the tensors, fix the options and the host
 * staging: everything a load does before it touches the arena. */
static int plan(llama_model_t *m, gguf_file_t *f, const llama_opts_t *opts, const gguf_tensor_t **embd_out,
                const gguf_tensor_t **head_out, const gguf_tensor_t **onorm_out, char *err, size_t errlen) {
    int rc = read_info(f, &m->info, err, errlen);
    if (rc) return rc;
    llama_info_t *in = &m->info;
    const gguf_tensor_t *embd = gguf_find_tensor(f, "token_embd.weight");
    if (!embd || embd->n_dims != 2 || embd->ne[0] != in->hidden || embd->ne[1] < 1 || embd->ne[1] > (1 << 24)) {
        snprintf(err, errlen, "llama: token_embd.weight %s", embd ? "has the wrong shape" : "is missing");
        return LLAMA_EMODEL;
    }
    in->vocab = (int)embd->ne[1];
    if (!(embd = get_tensor(f, "token_embd.weight", in->hidden, in->vocab, err, errlen))) return LLAMA_EMODEL;
    const gguf_tensor_t *head = embd;
    if (gguf_find_tensor(f, "output.weight") &&
        !(head = get_tensor(f, "output.weight", in->hidden, in->vocab, err, errlen)))
        return LLAMA_EMODEL;
    const gguf_tensor_t *onorm = get_tensor(f, "output_norm.weight", in->hidden, 0, err, errlen);
    if (!onorm) return LLAMA_EMODEL;
    wtype_of(embd->type, &m->wt_embd);
    wtype_of(head->type, &m->wt_head);

    m->opts.max_tokens = opts && opts->max_tokens > 0 ? opts->max_tokens : 512;
    m->opts.max_seqs = opts && opts->max_seqs > 0 ? opts->max_seqs : 64;
    m->opts.max_ctx = opts && opts->max_ctx > 0 && opts->max_ctx < in->n_ctx ? opts->max_ctx : in->n_ctx;
    m->opts.no_graphs = opts && opts->no_graphs;
    if (m->opts.max_seqs > m->opts.max_tokens) m->opts.max_seqs = m->opts.max_tokens;
    if (m->opts.max_tokens > (1 << 20)) {
        snprintf(err, errlen, "llama: max_tokens %d per call is too many", m->opts.max_tokens);
        return LLAMA_EINVAL;
    }
    m->n_qkv = (in->n_heads + 2 * in->n_kv_heads) * in->head_dim;
    /* a block table row per sequence, long enough for max_ctx positions with blocks of one token */
    m->table_cap = m->opts.max_seqs * m->opts.max_ctx;

    m->layers = calloc((size_t)in->n_layers, sizeof *m->layers);
    size_t T = (size_t)m->opts.max_tokens, B = (size_t)m->opts.max_seqs;
    m->h_pos = malloc(T * sizeof(int32_t));
    m->h_slot = malloc(T * sizeof(int32_t));
    m->h_last = malloc(T * sizeof(int32_t));
    m->h_seq_off = malloc((B + 1) * sizeof(int32_t));
    m->h_ctx = malloc(B * sizeof(int32_t));
    m->h_table = malloc((size_t)m->table_cap * sizeof(int32_t));
    m->h_ids = malloc(T * sizeof(int32_t));
    m->h_next = malloc(B * sizeof(int32_t));
    if (!m->layers || !m->h_pos || !m->h_slot || !m->h_last || !m->h_seq_off || !m->h_ctx || !m->h_table ||
        !m->h_ids || !m->h_next) {
        snprintf(err, errlen, "llama: out of host memory");
        return LLAMA_ENOMEM;
    }
    *embd_out = embd;
    *head_out = head;
    *onorm_out = onorm;
    return LLAMA_OK;
}

int llama_need(gguf_file_t *f, const llama_opts_t *opts, size_t *weight_bytes, size_t *workspace_bytes, char *err,
               size_t errlen) {
    llama_model_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "llama: out of host memory");
        return LLAMA_ENOMEM;
    }
    const gguf_tensor_t *embd, *head, *onorm;
    walk_t w = {0}, ws = {0};
    int rc = plan(m, f, opts, &embd, &head, &onorm, err, errlen);
    if (!rc) rc = place_weights(m, f, &w, embd, head, onorm, err, errlen);
    if (!rc) {
        place_workspace(m, &ws);
        *weight_bytes = w.off;
        *workspace_bytes = ws.off;
    }
    llama_destroy(m);
    return rc;
}

int llama_load(gguf_file_t *f, ops_t *ops, arena_t *arena, const llama_opts_t *opts, llama_model_t **out,
               char *err, size_t errlen) {
    *out = NULL;
    llama_model_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "llama: out of host memory");
        return LLAMA_ENOMEM;
    }
    m->ops = ops;
    m->arena = arena;
    const gguf_tensor_t *embd, *head, *onorm;
    int rc = LLAMA_EMODEL;
    const char *op = missing_op(ops);
    if (op) {
        snprintf(err, errlen, "llama: the %s backend lacks the decoder op %s", ops->name, op);
        goto fail;
    }
    if ((rc = plan(m, f, opts, &embd, &head, &onorm, err, errlen))) goto fail;
    m->graphs_off = m->opts.no_graphs || !ops->capture_begin || !ops->capture_end || !ops->graph_launch ||
                    !ops->graph_destroy;

    /* measure, take the two arena blocks, then fill */
    walk_t w = {0};
    if ((rc = place_weights(m, f, &w, embd, head, onorm, err, errlen))) goto fail;
    m->wbytes = w.off;
    walk_t ws = {0};
    place_workspace(m, &ws);
    m->wsbytes = ws.off;
    char aerr[256];
    if (!(m->wblock = arena_alloc(arena, m->wbytes, "llama weights", aerr, sizeof aerr)) ||
        !(m->wsblock = arena_alloc(arena, m->wsbytes, "llama workspace", aerr, sizeof aerr))) {
        snprintf(err, errlen, "llama: weights %zu + workspace %zu bytes (%d tokens, %d sequences a call): %s",
                 m->wbytes, m->wsbytes, m->opts.max_tokens, m->opts.max_seqs, aerr);
        rc = LLAMA_ENOMEM;
        goto fail;
    }
    w = (walk_t){.base = m->wblock};
    if ((rc = place_weights(m, f, &w, embd, head, onorm, err, errlen))) goto fail;
    ws = (walk_t){.base = m->wsblock};
    place_workspace(m, &ws);
    if (ops->sync(ops) != 0) {
        snprintf(err, errlen, "llama: upload: %s", ops->err);
        rc = LLAMA_EDEVICE;
        goto fail;
    }
    *out = m;
    return LLAMA_OK;
fail:
    llama_destroy(m);
    return rc;
}

void llama_destroy(llama_model_t *m) {
    if (!m) return;
    for (int i = 0; i < m->n_graphs; i++) m->ops->graph_destroy(m->ops, m->graphs[i].exec);
    if (m->arena) {
        arena_free(m->arena, m->wblock);
        arena_free(m->arena, m->wsblock);
    }
    free(m->layers);
    free(m->h_pos);
    free(m->h_slot);
    free(m->h_last);
    free(m->h_seq_off);
    free(m->h_ctx);
    free(m->h_table);
    free(m->h_ids);
    free(m->h_next);
    free(m);
}

const llama_info_t *llama_info(const llama_model_t *m) { return &m->info; }
const llama_opts_t *llama_opts(const llama_model_t *m) { return &m->opts; }
size_t llama_weight_bytes(const llama_model_t *m) { return m->wbytes; }
size_t llama_workspace_bytes(const llama_model_t *m) { return m->wsbytes; }
int llama_graph_count(const llama_model_t *m) { return m->n_graphs; }

kv_config_t llama_kv_config(const llama_model_t *m) {
    return (kv_config_t){.n_layers = m->info.n_layers, .n_kv_heads = m->info.n_kv_heads,
                         .head_dim = m->info.head_dim, .block_size = KV_DEFAULT_BLOCK_SIZE, .n_blocks = 0,
                         .dtype = m->ops->kv_dtype};
}

/* ---- forward ---- */

static int check_batch(llama_model_t *m, kv_pool_t *kv, const int32_t *tokens, const int32_t *seq_off, int n,
                       kv_seq_t *const *seqs, int *max_blocks, int *max_ctx, char *err, size_t errlen) {
    const kv_config_t *kc = kv_pool_config(kv);
    if (kc->n_layers != m->info.n_layers || kc->n_kv_heads != m->info.n_kv_heads || kc->head_dim != m->info.head_dim ||
        kc->dtype != m->ops->kv_dtype) {
        snprintf(err, errlen, "llama: the KV pool's shape does not match the model");
        return LLAMA_EINVAL;
    }
    if (n < 1 || n > m->opts.max_seqs || seq_off[0] != 0) {
        snprintf(err, errlen, "llama: %d sequences in one call (1..%d)", n, m->opts.max_seqs);
        return LLAMA_EINVAL;
    }
    *max_blocks = 1;
    *max_ctx = 1;
    for (int b = 0; b < n; b++) {
        int nb = seq_off[b + 1] - seq_off[b];
        const kv_seq_t *s = seqs[b];
        if (nb < 1 || seq_off[b + 1] > m->opts.max_tokens) {
            snprintf(err, errlen, "llama: sequence %d has %d new tokens, %d in all (1 each, %d a call)", b, nb,
                     seq_off[b + 1], m->opts.max_tokens);
            return LLAMA_EINVAL;
        }
        if (s->n_tokens < nb || s->n_tokens > m->opts.max_ctx ||
            s->n_blocks * kc->block_size < s->n_tokens) {
            snprintf(err, errlen, "llama: sequence %d holds %d positions in %d blocks for %d new tokens (context %d)",
                     b, s->n_tokens, s->n_blocks, nb, m->opts.max_ctx);
            return LLAMA_EINVAL;
        }
        if (s->n_blocks > *max_blocks) *max_blocks = s->n_blocks;
        if (s->n_tokens > *max_ctx) *max_ctx = s->n_tokens;
    }
    if ((int64_t)n * *max_blocks > m->table_cap) {
        snprintf(err, errlen, "llama: block tables of %d x %d entries exceed the workspace", n, *max_blocks);
        return LLAMA_EINVAL;
    }
    for (int t = 0; t < seq_off[n]; t++) {
        if (tokens[t] < 0 || tokens[t] >= m->info.vocab) {
            snprintf(err, errlen, "llama: token id %d at %d is outside the vocabulary (%d)", (int)tokens[t], t,
                     m->info.vocab);
            return LLAMA_EINVAL;
        }
    }
    return LLAMA_OK;
}

#define OPS_CALL(call)                                                                                                 \
    do {                                                                                                               \
        if ((call) != 0) {                                                                                             \
            snprintf(err, errlen, "llama: %s", ops->err);                                                              \
            return LLAMA_EDEVICE;                                                                                      \
        }                                                                                                              \
    } while (0)

/* The ops of one step over the uploaded workspace: T tokens of n sequences,
 * block tables of mb entries a row, contexts up to max_ctx; then, with
 * lm_rows > 0, the LM head on the rows ws->last names (uploaded by the
 * caller; lm_rows <= max_seqs) into ws->logits, and with want_ids their
 * argmax into ws->next. Nothing here copies between host and device, so it can
 * be captured into a graph. */
static int run_ops(llama_model_t *m, kv_pool_t *kv, int T, int n, int mb, int max_ctx, int lm_rows, int want_ids,
                   char *err, size_t errlen) {
    ops_t *ops = m->ops;
    const llama_info_t *in = &m->info;
    const llama_ws_t *ws = &m->ws;
    const int H = in->hidden, F = in->ffn, hd = in->head_dim, bs = kv_pool_config(kv)->block_size;
    const int nq = in->n_heads * hd, nkv = in->n_kv_heads * hd;
    float scale = 1.0f / sqrtf((float)hd);
    OPS_CALL(ops->embed_q(ops, ws->x, ws->ids, m->embd, m->wt_embd, T, H));
    for (int l = 0; l < in->n_layers; l++) {
        const llama_layer_t *L = &m->layers[l];
        /* the previous layer's MLP output joins the residual inside the norm */
        OPS_CALL(ops->add_rms_norm(ops, ws->xn, ws->x, l ? ws->delta : NULL, L->attn_norm, T, H, in->rms_eps));
        OPS_CALL(ops->matmul_q(ops, ws->qkv, ws->xn, L->wqkv, L->wt_qkv, T, H, m->n_qkv));
        OPS_CALL(ops->rope(ops, ws->qkv, ws->pos, T, in->n_heads, hd, m->n_qkv, in->rope_theta));
        OPS_CALL(ops->rope(ops, ws->qkv + nq, ws->pos, T, in->n_kv_heads, hd, m->n_qkv, in->rope_theta));
        OPS_CALL(ops->kv_store(ops, kv_k_cache(kv, l), kv_v_cache(kv, l), ws->qkv + nq, ws->qkv + nq + nkv, m->n_qkv,
                               ws->slot, T, in->n_kv_heads, hd));
        OPS_CALL(ops->attention_paged(ops, ws->attn, ws->qkv, m->n_qkv, kv_k_cache(kv, l), kv_v_cache(kv, l),
                                      ws->table, mb, ws->seq_off, T, ws->ctx_len, n, max_ctx, in->n_heads,
                                      in->n_kv_heads, hd, bs, scale));
        OPS_CALL(ops->matmul_q(ops, ws->delta, ws->attn, L->wo, L->wt_o, T, nq, H));
        OPS_CALL(ops->add_rms_norm(ops, ws->xn, ws->x, ws->delta, L->ffn_norm, T, H, in->rms_eps));
        OPS_CALL(ops->matmul_q(ops, ws->gu, ws->xn, L->wgu, L->wt_gu, T, H, 2 * F));
        OPS_CALL(ops->silu_mul(ops, ws->act, ws->gu, T, F));
        OPS_CALL(ops->matmul_q(ops, ws->delta, ws->act, L->wd, L->wt_d, T, F, H));
    }
    OPS_CALL(ops->add_rms_norm(ops, ws->xn, ws->x, ws->delta, m->out_norm, T, H, in->rms_eps));
    if (lm_rows > 0) {
        /* gather the wanted rows (embed_q over the F32 hidden states is a row gather), multiply */
        OPS_CALL(ops->embed_q(ops, ws->rows, ws->last, ws->xn, OPS_W_F32, lm_rows, H));
        OPS_CALL(ops->matmul_q(ops, ws->logits, ws->rows, m->head, m->wt_head, lm_rows, H, in->vocab));
        if (want_ids) OPS_CALL(ops->argmax(ops, ws->next, ws->logits, lm_rows, in->vocab));
    }
    return LLAMA_OK;
}

/* The decode graph bucket of n sequences: a power of two, but below
 * ops->mma_min_t when n is (so matmul_q takes the same path as for n: padding
 * changes no bits), and at most max_seqs. */
static int seq_bucket(const llama_model_t *m, int n) {
    int np = 1;
    while (np < n) np <<= 1;
    const int mt = m->ops->mma_min_t;
    if (mt > 0 && n < mt && np >= mt) np = mt - 1;
    return np > m->opts.max_seqs ? m->opts.max_seqs : np;
}

static int ctx_bucket(const llama_model_t *m, int max_ctx) {
    int c = 128;
    while (c < max_ctx && c < (1 << 30)) c <<= 1;
    return c > m->opts.max_ctx ? (max_ctx > m->opts.max_ctx ? max_ctx : m->opts.max_ctx) : c;
}

/* The captured decode step of (kv, np, ctx, mb), or NULL. */
static void *find_graph(const llama_model_t *m, const kv_pool_t *kv, int np, int ctx, int mb) {
    for (int i = 0; i < m->n_graphs; i++)
        if (m->graphs[i].kv == kv && m->graphs[i].np == np && m->graphs[i].ctx == ctx && m->graphs[i].mb == mb)
            return m->graphs[i].exec;
    return NULL;
}

/* Records the decode step of (np, ctx, mb) into a graph for the steps after
 * this one, which the caller has just run op by op: the step's results are
 * that run's, and every kernel the capture records has been launched once
 * before (none is first loaded inside a capture). A failure turns graphs off,
 * logged once; nothing recorded runs, so nothing is lost. */
static void capture_graph(llama_model_t *m, kv_pool_t *kv, int np, int ctx, int mb) {
    ops_t *ops = m->ops;
    void *exec = NULL;
    char why[512] = "";
    if (ops->capture_begin(ops)) {
        snprintf(why, sizeof why, "capture_begin: %.400s", ops->err);
    } else {
        int rc = run_ops(m, kv, np, np, mb, ctx, np, ops->argmax != NULL, why, sizeof why);
        int crc = ops->capture_end(ops, &exec); /* ends the capture whatever happened inside */
        if (!rc && crc) snprintf(why, sizeof why, "capture_end: %.400s", ops->err);
        if (rc || crc) {
            if (exec) ops->graph_destroy(ops, exec);
            exec = NULL;
        }
    }
    if (!exec) {
        m->graphs_off = 1;
        fprintf(stderr, "llama: capturing the decode step of %d sequences (context %d) into a %s graph failed (%s); "
                        "running op by op from now on\n", np, ctx, ops->name, why);
        return;
    }
    m->graphs[m->n_graphs++] = (llama_graph_t){.kv = kv, .np = np, .ctx = ctx, .mb = mb, .exec = exec};
}

static int forward_impl(llama_model_t *m, kv_pool_t *kv, const int32_t *tokens, const int32_t *seq_off, int n,
                        kv_seq_t *const *seqs, float *logits, int all_logits, int32_t *ids_out, char *err,
                        size_t errlen) {
    int max_blocks, max_ctx;
    int rc = check_batch(m, kv, tokens, seq_off, n, seqs, &max_blocks, &max_ctx, err, errlen);
    if (rc) return rc;
    ops_t *ops = m->ops;
    const llama_info_t *in = &m->info;
    const llama_ws_t *ws = &m->ws;
    const kv_config_t *kc = kv_pool_config(kv);
    const int T = seq_off[n], bs = kc->block_size, V = in->vocab;

    /* a decode step replays a graph: padded to its bucket of sequences, contexts and table width */
    int np = n, ctx = max_ctx, mb = max_blocks, use_graph = 0;
    if (!m->graphs_off && T == n && !all_logits) {
        np = seq_bucket(m, n);
        ctx = ctx_bucket(m, max_ctx);
        mb = (ctx + bs - 1) / bs;
        if (mb < max_blocks) mb = max_blocks;
        use_graph = np >= n && (int64_t)np * mb <= m->table_cap;
        if (!use_graph) np = n, ctx = max_ctx, mb = max_blocks;
    }

    /* positions, slots, block tables: from each sequence's table; the padding after them */
    memcpy(m->h_ids, tokens, (size_t)T * sizeof(int32_t));
    memcpy(m->h_seq_off, seq_off, (size_t)(n + 1) * sizeof(int32_t));
    for (int b = 0; b < n; b++) {
        const kv_seq_t *s = seqs[b];
        int nb = seq_off[b + 1] - seq_off[b], p0 = s->n_tokens - nb;
        for (int i = 0; i < nb; i++) {
            int p = p0 + i, t = seq_off[b] + i;
            m->h_pos[t] = p;
            m->h_slot[t] = s->blocks[p / bs] * bs + p % bs;
        }
        m->h_ctx[b] = s->n_tokens;
        memcpy(m->h_table + (size_t)b * mb, s->blocks, (size_t)s->n_blocks * sizeof(int32_t));
        for (int j = s->n_blocks; j < mb; j++) m->h_table[(size_t)b * mb + j] = 0;
        m->h_last[b] = seq_off[b + 1] - 1;
    }
    for (int b = n; b < np; b++) { /* padding: token 0 at position 0, context 1, no slot */
        m->h_ids[b] = 0, m->h_pos[b] = 0, m->h_slot[b] = -1, m->h_ctx[b] = 1, m->h_last[b] = b;
        m->h_seq_off[b + 1] = b + 1;
        for (int j = 0; j < mb; j++) m->h_table[(size_t)b * mb + j] = 0;
    }
    const int Tp = T + (np - n);
    OPS_CALL(ops->upload(ops, ws->ids, m->h_ids, (size_t)Tp * sizeof(int32_t)));
    OPS_CALL(ops->upload(ops, ws->pos, m->h_pos, (size_t)Tp * sizeof(int32_t)));
    OPS_CALL(ops->upload(ops, ws->slot, m->h_slot, (size_t)Tp * sizeof(int32_t)));
    OPS_CALL(ops->upload(ops, ws->seq_off, m->h_seq_off, (size_t)(np + 1) * sizeof(int32_t)));
    OPS_CALL(ops->upload(ops, ws->ctx_len, m->h_ctx, (size_t)np * sizeof(int32_t)));
    OPS_CALL(ops->upload(ops, ws->table, m->h_table, (size_t)np * mb * sizeof(int32_t)));

    /* the LM head in the same run when one chunk holds the wanted rows (every
     * last-token step: n <= max_seqs); all_logits steps take it in chunks below */
    const int want_ids = ids_out && ops->argmax;
    const int lm_rows = all_logits ? 0 : np;
    if (lm_rows) OPS_CALL(ops->upload(ops, ws->last, m->h_last, (size_t)np * sizeof(int32_t)));
    void *graph = use_graph ? find_graph(m, kv, np, ctx, mb) : NULL;
    if (graph) {
        OPS_CALL(ops->graph_launch(ops, graph));
    } else {
        rc = run_ops(m, kv, Tp, np, mb, ctx, lm_rows, want_ids, err, errlen);
        if (rc) return rc;
        if (use_graph && m->n_graphs < LLAMA_MAX_GRAPHS) capture_graph(m, kv, np, ctx, mb);
    }
    if (lm_rows) {
        if (logits) OPS_CALL(ops->download(ops, logits, ws->logits, (size_t)n * V * sizeof(float)));
        if (want_ids) OPS_CALL(ops->download(ops, m->h_next, ws->next, (size_t)n * sizeof(int32_t)));
    } else {
        const int rows = T;
        for (int t = 0; t < T; t++) m->h_last[t] = t;
        for (int r0 = 0; r0 < rows; r0 += m->opts.max_seqs) {
            int nr = rows - r0 < m->opts.max_seqs ? rows - r0 : m->opts.max_seqs;
            OPS_CALL(ops->upload(ops, ws->last, m->h_last + r0, (size_t)nr * sizeof(int32_t)));
            OPS_CALL(ops->embed_q(ops, ws->rows, ws->last, ws->xn, OPS_W_F32, nr, in->hidden));
            OPS_CALL(ops->matmul_q(ops, ws->logits, ws->rows, m->head, m->wt_head, nr, in->hidden, V));
            OPS_CALL(ops->download(ops, logits + (size_t)r0 * V, ws->logits, (size_t)nr * V * sizeof(float)));
        }
    }
    OPS_CALL(ops->sync(ops));
    if (want_ids) {
        memcpy(ids_out, m->h_next, (size_t)n * sizeof(int32_t));
    } else if (ids_out) { /* a backend without argmax: reduce the logits here (the same rule) */
        float *lg = logits ? logits : malloc((size_t)n * V * sizeof(float));
        if (!lg) {
            snprintf(err, errlen, "llama: out of host memory");
            return LLAMA_ENOMEM;
        }
        if (!logits) {
            OPS_CALL(ops->download(ops, lg, ws->logits, (size_t)n * V * sizeof(float)));
            OPS_CALL(ops->sync(ops));
        }
        for (int b = 0; b < n; b++) ids_out[b] = ops_argmax_row(lg + (size_t)b * V, V);
        if (!logits) free(lg);
    }
    return LLAMA_OK;
}

int llama_forward(llama_model_t *m, kv_pool_t *kv, const int32_t *tokens, const int32_t *seq_off, int n,
                  kv_seq_t *const *seqs, float *logits, int all_logits, char *err, size_t errlen) {
    if (!logits) {
        snprintf(err, errlen, "llama: NULL logits");
        return LLAMA_EINVAL;
    }
    return forward_impl(m, kv, tokens, seq_off, n, seqs, logits, all_logits, NULL, err, errlen);
}

int llama_forward_greedy(llama_model_t *m, kv_pool_t *kv, const int32_t *tokens, const int32_t *seq_off, int n,
                         kv_seq_t *const *seqs, float *logits, int32_t *ids, char *err, size_t errlen) {
    if (!ids) {
        snprintf(err, errlen, "llama: NULL ids");
        return LLAMA_EINVAL;
    }
    return forward_impl(m, kv, tokens, seq_off, n, seqs, logits, 0, ids, err, errlen);
}
