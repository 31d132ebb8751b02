/* engine/registry.h - the catalog of models a server can run, on one device.
 *
 * registry_create opens the device (engine/device.h: one backend, cpu or
 * cuda, and one arena sized by the memory budget: every model's weights and
 * workspace are carved from it, so a model that does not fit is refused,
 * ENGINE_ENOMEM with the numbers, instead of running the device out of
 * memory). Models are the entries of models_dir (or models_dir itself) that
 * a model family knows (engine/model.h: a folder with a config.json for
 * BERT); nothing is loaded at creation. A model's tokenizer (host memory,
 * small) is made on first use so requests can be validated and tokenized
 * before the weights load; the weights load on first use (lazy) or by
 * preload, and registry_unload frees every byte (arena_used returns to its
 * baseline).
 *
 * Model names: the folder name; lookups also accept any case and an
 * "org/" prefix ("sentence-transformers/all-MiniLM-L6-v2").
 *
 * Thread-safety: every call is thread-safe. registry_load/registry_unload and
 * registry_model are meant for the device's worker thread (the batcher),
 * which is the only thread that runs forward passes; a model is never
 * unloaded under a running batch because the same thread does both.
 */
#ifndef SLUICE_REGISTRY_H
#define SLUICE_REGISTRY_H

#include <stddef.h>
#include <stdint.h>
#include "engine/device.h"
#include "engine/engine.h"
#include "engine/model.h"

#define REGISTRY_NAME_MAX 128

typedef enum {
    REGISTRY_UNLOADED = 0,
    REGISTRY_LOADING = 1,
    REGISTRY_READY = 2,
    REGISTRY_FAILED = 3, /* last_error says why; the next load tries again */
} registry_state_t;

typedef struct {
    const char *models_dir; /* folder of model folders (or one model folder) */
    const char *device;     /* "auto", "cpu" or "cuda" */
    size_t budget;          /* bytes for the arena; 0: the default (see device_default_budget) */
    int cpu_threads;        /* <= 0: one per core */
    const char *dtype;      /* cuda precision: "fp16" (NULL: the default), "bf16" or "fp32" */
    engine_opts_t engine;   /* workspace per model (max batch tokens / sequences) */
} registry_opts_t;

typedef struct {
    char name[REGISTRY_NAME_MAX];
    char dir[1024];
    registry_state_t state;
    int last_error_code;      /* ENGINE_E* of the last failed load, 0 if none */
    char last_error[512];
    model_kind_t kind;        /* MODEL_ENCODER (embeddings) or MODEL_DECODER (generation), from its family */
    int hidden;               /* embedding width (config.json hidden_size) */
    int max_seq_len;          /* tokens per input incl. [CLS]/[SEP]; 0 until the tokenizer exists */
    size_t weight_bytes;      /* in the arena while READY */
    size_t workspace_bytes;   /* in the arena while READY */
    uint64_t requests, errors;
    uint64_t loads, unloads;
    double load_s;            /* seconds the last load took */
} registry_model_info_t;

typedef struct registry registry_t;

int registry_create(const registry_opts_t *opts, registry_t **out, char *err, size_t errlen);
void registry_destroy(registry_t *r); /* unloads everything; NULL is a no-op */

int registry_count(const registry_t *r);
int registry_find(const registry_t *r, const char *name); /* index or -1 */
int registry_info(registry_t *r, int idx, registry_model_info_t *out); /* 0 or -1 */

/* The model's tokenizer (created on first call; lives as long as the registry). */
const tok_t *registry_tokenizer(registry_t *r, int idx, char *err, size_t errlen);

/* The chat template the model declares (CHAT_NONE: none, an encoder, a bad
 * index); read once, kept with the model's entry. Thread-safe. */
chat_template_t registry_chat_template(registry_t *r, int idx);

/* Load (blocking; no-op when READY): ENGINE_OK or ENGINE_E* with a message. */
int registry_load(registry_t *r, int idx, char *err, size_t errlen);
/* Free the model's weights and workspace; 0, or -1 for a bad index. */
int registry_unload(registry_t *r, int idx);
/* The loaded model, or NULL unless READY. */
model_t *registry_model(registry_t *r, int idx);
registry_state_t registry_state(registry_t *r, int idx);

/* One finished request against the model (failed != 0: an error). */
void registry_count_request(registry_t *r, int idx, int failed);

/* The device the models run on, and its getters by the registry's name. */
device_t *registry_device(const registry_t *r);
const char *registry_device_name(const registry_t *r); /* "cpu" or "cuda" */
const char *registry_precision(const registry_t *r);   /* "fp32", "fp16" or "bf16" */
const char *registry_device_note(const registry_t *r); /* why auto picked cpu, or "" */
size_t registry_budget(const registry_t *r);           /* bytes */
size_t registry_used(const registry_t *r);             /* bytes in live arena blocks */
const engine_opts_t *registry_engine_opts(const registry_t *r);
const char *registry_state_name(registry_state_t s);

#endif
