/* engine/model.c - the families this build knows, and calls through a model's family. */
#include <stdio.h>
#include <stdlib.h>

#include "engine/model.h"

/* First match wins: a family that detects more specific files goes first. */
static const model_family_t *const FAMILIES[] = {&model_bert, &model_llama};
#define N_FAMILIES (sizeof FAMILIES / sizeof FAMILIES[0])

struct model {
    const model_family_t *family;
    void *impl;
};

const model_family_t *model_family_for(const char *path) {
    for (size_t i = 0; i < N_FAMILIES; i++)
        if (FAMILIES[i]->detect(path)) return FAMILIES[i];
    return NULL;
}

static const model_family_t *family_or_err(const char *path, char *err, size_t errlen) {
    const model_family_t *f = model_family_for(path);
    if (!f) snprintf(err, errlen, "%s: no model family this build knows (config.json of a BertModel, or a .gguf Llama decoder)", path);
    return f;
}

int model_need(const char *path, ops_dtype_t dtype, const engine_opts_t *opts, size_t *weight_bytes,
               size_t *workspace_bytes, char *err, size_t errlen) {
    const model_family_t *f = family_or_err(path, err, errlen);
    return f ? f->need(path, dtype, opts, weight_bytes, workspace_bytes, err, errlen) : ENGINE_EMODEL;
}

int model_tokenizer(const char *path, tok_t **out, char *err, size_t errlen) {
    *out = NULL;
    const model_family_t *f = family_or_err(path, err, errlen);
    return f ? f->tokenizer(path, out, err, errlen) : TOK_EFORMAT;
}

int model_load(const char *path, ops_t *ops, arena_t *arena, const engine_opts_t *opts, model_t **out, char *err,
               size_t errlen) {
    *out = NULL;
    const model_family_t *f = family_or_err(path, err, errlen);
    if (!f) return ENGINE_EMODEL;
    model_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of host memory");
        return ENGINE_ENOMEM;
    }
    m->family = f;
    int rc = f->load(path, ops, arena, opts, &m->impl, err, errlen);
    if (rc) {
        free(m);
        return rc;
    }
    *out = m;
    return ENGINE_OK;
}

void model_free(model_t *m) {
    if (!m) return;
    m->family->free(m->impl);
    free(m);
}

const model_family_t *model_family(const model_t *m) { return m->family; }
void model_info(const model_t *m, model_info_t *out) { m->family->info(m->impl, out); }
void *model_impl(model_t *m) { return m->impl; }

int model_embed(model_t *m, const int32_t *ids, const int32_t *seq_off, int n, float *out, char *err,
                size_t errlen) {
    if (!m->family->embed) {
        snprintf(err, errlen, "%s models do not embed", m->family->name);
        return ENGINE_EINVAL;
    }
    return m->family->embed(m->impl, ids, seq_off, n, out, err, errlen);
}

int model_step(model_t *m, const model_step_t *s, char *err, size_t errlen) {
    if (!m->family->step) {
        snprintf(err, errlen, "%s models do not generate", m->family->name);
        return ENGINE_EINVAL;
    }
    return m->family->step(m->impl, s, err, errlen);
}
