/* engine/llama_family.c - the Llama decoder (engine/llama.h) behind the model
 * interface (engine/model.h): a .gguf file, or a folder holding one. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/llama.h"
#include "engine/model.h"
#include "engine/tok_bpe.h"

static int is_gguf_file(const char *p) {
    size_t n = strlen(p);
    struct stat st;
    return n > 5 && !strcmp(p + n - 5, ".gguf") && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The model file of path: path itself, or the first .gguf (by name) in the
 * folder. 1 when found. */
static int gguf_path(const char *path, char *out, size_t cap) {
    if (is_gguf_file(path)) {
        snprintf(out, cap, "%s", path);
        return 1;
    }
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *de;
    char best[256] = "";
    while ((de = readdir(d))) {
        char p[1400];
        if (de->d_name[0] == '.' || strlen(de->d_name) >= sizeof best) continue;
        snprintf(p, sizeof p, "%s/%s", path, de->d_name);
        if (is_gguf_file(p) && (!best[0] || strcmp(de->d_name, best) < 0)) snprintf(best, sizeof best, "%s", de->d_name);
    }
    closedir(d);
    if (!best[0]) return 0;
    snprintf(out, cap, "%s/%s", path, best);
    return 1;
}

static int open_file(const char *path, gguf_file_t **f, char *err, size_t errlen) {
    char p[1400];
    *f = NULL;
    if (!gguf_path(path, p, sizeof p)) {
        snprintf(err, errlen, "%s: no .gguf file", path);
        return ENGINE_EMODEL;
    }
    return gguf_open(p, f, err, errlen) ? ENGINE_EMODEL : ENGINE_OK;
}

static chat_template_t llama_family_chat(const char *path) {
    chat_template_t t = {CHAT_NONE};
    gguf_file_t *f = NULL;
    char err[256];
    if (open_file(path, &f, err, sizeof err) == ENGINE_OK) {
        t = chat_template_from_gguf(f);
        gguf_close(f);
    }
    return t;
}

static const llama_opts_t FAMILY_OPTS = {.max_tokens = LLAMA_FAMILY_MAX_TOKENS, .max_seqs = LLAMA_FAMILY_MAX_SEQS};

static int llama_detect(const char *path) {
    char p[1400];
    return gguf_path(path, p, sizeof p);
}

static int llama_family_need(const char *path, ops_dtype_t dtype, const engine_opts_t *opts, size_t *weight_bytes,
                             size_t *workspace_bytes, char *err, size_t errlen) {
    (void)dtype; /* weights stay in the file's block formats on every backend */
    (void)opts;
    gguf_file_t *f;
    int rc = open_file(path, &f, err, errlen);
    if (!rc) rc = llama_need(f, &FAMILY_OPTS, weight_bytes, workspace_bytes, err, errlen);
    gguf_close(f);
    return rc;
}

static int llama_family_tokenizer(const char *path, tok_t **out, char *err, size_t errlen) {
    gguf_file_t *f;
    *out = NULL;
    int rc = open_file(path, &f, err, errlen);
    if (rc) return TOK_EFORMAT;
    rc = tok_bpe_from_gguf(f, out, err, errlen);
    gguf_close(f);
    return rc;
}

static int llama_family_load(const char *path, ops_t *ops, arena_t *arena, const engine_opts_t *opts, void **out,
                             char *err, size_t errlen) {
    gguf_file_t *f;
    llama_model_t *m = NULL;
    llama_opts_t lo = FAMILY_OPTS;
    lo.no_graphs = !(opts && opts->graphs); /* decode steps replay CUDA graphs where the engine asks for them */
    int rc = open_file(path, &f, err, errlen);
    if (!rc) rc = llama_load(f, ops, arena, &lo, &m, err, errlen);
    gguf_close(f); /* the weights were copied into the arena */
    *out = m;
    return rc;
}

static void llama_family_free(void *impl) { llama_destroy(impl); }

static void llama_family_info(const void *impl, model_info_t *out) {
    const llama_model_t *m = impl;
    const llama_info_t *in = llama_info(m);
    const llama_opts_t *o = llama_opts(m);
    *out = (model_info_t){.family = "llama", .kind = MODEL_DECODER, .hidden = in->hidden, .vocab = in->vocab,
                          .max_seq_len = o->max_ctx, .weight_bytes = llama_weight_bytes(m),
                          .workspace_bytes = llama_workspace_bytes(m), .max_batch_tokens = o->max_tokens,
                          .max_batch_seqs = o->max_seqs, .kv_layers = in->n_layers, .kv_heads = in->n_kv_heads,
                          .kv_head_dim = in->head_dim, .kv_dtype = llama_kv_config(m).dtype};
}

static int llama_family_step(void *impl, const model_step_t *s, char *err, size_t errlen) {
    /* LLAMA_E* and ENGINE_E* share their values */
    return llama_forward(impl, s->kv, s->ids, s->seq_off, s->n_seqs, (kv_seq_t *const *)s->seqs, s->logits,
                         s->all_logits, err, errlen);
}

const model_family_t model_llama = {
    .name = "llama",
    .kind = MODEL_DECODER,
    .detect = llama_detect,
    .need = llama_family_need,
    .tokenizer = llama_family_tokenizer,
    .chat_template = llama_family_chat,
    .load = llama_family_load,
    .free = llama_family_free,
    .info = llama_family_info,
    .embed = NULL,
    .step = llama_family_step,
};
