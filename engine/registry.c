/* engine/registry.c - the model catalog: discovery, lazy load/unload on one device.
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

#include "engine/registry.h"
#include "kernels/util.h"

typedef struct {
    registry_model_info_t info;
    const model_family_t *family;
    tok_t *tok;
    chat_template_t chat; /* valid once chat_read */
    int chat_read;
    model_t *model;
} registry_entry_t;

struct registry {
    pthread_mutex_t mu;
    device_t *dev;
    registry_entry_t *models;
    int n;
};

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

static int add_model(registry_t *r, const char *name, const char *dir, const model_family_t *family) {
    registry_entry_t *m = realloc(r->models, (r->n + 1) * sizeof *m);
    if (!m) return -1;
    r->models = m;
    registry_entry_t *e = &m[r->n];
    memset(e, 0, sizeof *e);
    snprintf(e->info.name, sizeof e->info.name, "%.*s", (int)sizeof e->info.name - 1, name);
    snprintf(e->info.dir, sizeof e->info.dir, "%s", dir);
    e->family = family;
    e->info.kind = family->kind;
    e->info.hidden = family->kind == MODEL_ENCODER ? read_hidden(dir) : 0;
    e->info.state = REGISTRY_UNLOADED;
    r->n++;
    return 0;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const registry_entry_t *)a)->info.name, ((const registry_entry_t *)b)->info.name);
}

static int discover(registry_t *r, const char *models_dir, char *err, size_t errlen) {
    const model_family_t *f = model_family_for(models_dir);
    if (f) {
        const char *base = strrchr(models_dir, '/');
        char name[REGISTRY_NAME_MAX];
        snprintf(name, sizeof name, "%s", base && base[1] ? base + 1 : models_dir);
        size_t l = strlen(name);
        while (l > 1 && name[l - 1] == '/') name[--l] = '\0';
        return add_model(r, name, models_dir, f);
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
        f = model_family_for(p);
        if (f && add_model(r, de->d_name, p, f)) {
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
    int rc = ENGINE_EMODEL;
    if (discover(r, opts->models_dir ? opts->models_dir : "models", err, errlen)) goto fail;
    device_opts_t dopts = {.device = opts->device, .budget = opts->budget, .cpu_threads = opts->cpu_threads,
                           .dtype = opts->dtype, .engine = opts->engine};
    rc = device_create(&dopts, &r->dev, err, errlen);
    if (rc) goto fail;
    *out = r;
    return ENGINE_OK;
fail:
    registry_destroy(r);
    return rc;
}

void registry_destroy(registry_t *r) {
    if (!r) return;
    for (int i = 0; i < r->n; i++) {
        model_free(r->models[i].model);
        tok_destroy(r->models[i].tok);
    }
    free(r->models);
    device_destroy(r->dev);
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
        if (e->family->tokenizer(e->info.dir, &t, err, errlen) == TOK_OK) {
            e->tok = t;
            e->info.max_seq_len = tok_max_len(t);
        }
    }
    const tok_t *t = e->tok;
    pthread_mutex_unlock(&r->mu);
    return t;
}

chat_template_t registry_chat_template(registry_t *r, int idx) {
    chat_template_t t = {CHAT_NONE};
    if (idx < 0 || idx >= r->n) return t;
    /* held across the read (a header, once per model), as for the tokenizer */
    pthread_mutex_lock(&r->mu);
    registry_entry_t *e = &r->models[idx];
    if (!e->chat_read) {
        e->chat = e->family->chat_template ? e->family->chat_template(e->info.dir) : t;
        e->chat_read = 1;
    }
    t = e->chat;
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

    int64_t t0 = util_now_ns();
    model_t *m = NULL;
    ops_t *ops = device_ops(r->dev);
    arena_t *arena = device_arena(r->dev);
    const engine_opts_t *eo = device_engine_opts(r->dev);
    /* Refuse what cannot fit before touching the arena, with the numbers. */
    size_t need_w = 0, need_ws = 0;
    int rc = model_need(dir, ops->dtype, eo, &need_w, &need_ws, err, errlen);
    if (rc == ENGINE_OK && need_w + need_ws > arena_largest_free(arena)) {
        snprintf(err, errlen,
                 "model %s needs %zu bytes (weights %zu + workspace %zu) but the %s memory budget has "
                 "%zu bytes free in one piece (budget %zu, in use %zu)",
                 e->info.name, need_w + need_ws, need_w, need_ws, ops->name,
                 arena_largest_free(arena), arena_budget(arena), arena_used(arena));
        rc = ENGINE_ENOMEM;
    }
    if (rc == ENGINE_OK) rc = model_load(dir, ops, arena, eo, &m, err, errlen);

    pthread_mutex_lock(&r->mu);
    e = &r->models[idx];
    e->info.load_s = (util_now_ns() - t0) * 1e-9;
    if (rc == ENGINE_OK) {
        model_info_t mi;
        model_info(m, &mi);
        e->model = m;
        e->info.state = REGISTRY_READY;
        e->info.weight_bytes = mi.weight_bytes;
        e->info.workspace_bytes = mi.workspace_bytes;
        e->info.hidden = mi.hidden;
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
    model_t *m = e->model;
    e->model = NULL;
    /* Free before the state says "unloaded", under the lock: whoever sees the
     * new state also sees the memory back at its baseline. (What was built on
     * the model, e.g. an expand index, is dropped by its owner first.) */
    model_free(m);
    if (m) e->info.unloads++;
    if (e->info.state != REGISTRY_FAILED) e->info.state = REGISTRY_UNLOADED;
    e->info.weight_bytes = e->info.workspace_bytes = 0;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

model_t *registry_model(registry_t *r, int idx) {
    if (idx < 0 || idx >= r->n) return NULL;
    pthread_mutex_lock(&r->mu);
    model_t *m = r->models[idx].info.state == REGISTRY_READY ? r->models[idx].model : NULL;
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

device_t *registry_device(const registry_t *r) { return r->dev; }
const char *registry_device_name(const registry_t *r) { return device_name(r->dev); }
const char *registry_precision(const registry_t *r) { return device_precision(r->dev); }
const char *registry_device_note(const registry_t *r) { return device_note(r->dev); }
size_t registry_budget(const registry_t *r) { return device_budget(r->dev); }
size_t registry_used(const registry_t *r) { return device_used(r->dev); }
const engine_opts_t *registry_engine_opts(const registry_t *r) { return device_engine_opts(r->dev); }

const char *registry_state_name(registry_state_t s) {
    switch (s) {
    case REGISTRY_UNLOADED: return "unloaded";
    case REGISTRY_LOADING: return "loading";
    case REGISTRY_READY: return "ready";
    case REGISTRY_FAILED: return "failed";
    }
    return "unknown";
}
