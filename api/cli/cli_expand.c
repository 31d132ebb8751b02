/* api/cli/cli_expand.c - `sluice expand`: the nearest terms of each input term, as JSON lines.
 *
 *   sluice expand [--model DIR] [--k N] [--min-score S] [--terms-file F] [--cache-dir D]
 *                 [--include-input] [--device auto|cpu|cuda] [--dtype bf16|fp16|fp32] TERM...
 *
 * Opens the model, loads (or builds and caches) its term index, embeds the
 * input terms in one go and prints, in input order:
 *   {"term":"car","neighbours":[{"term":"cars","score":0.87},...]}
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/cli/cli.h"
#include "api/cli/cli_common.h"
#include "engine/expand.h"

#define DEFAULT_MODEL "models/all-minilm-l6-v2"

static void expand_usage(FILE *out) {
    fprintf(out,
            "usage: sluice expand [--model DIR] [--k N] [--min-score S] [--terms-file F] [--cache-dir D]\n"
            "                     [--include-input] [--device auto|cpu|cuda] [--dtype bf16|fp16|fp32] TERM...\n"
            "  --model DIR       model folder (default " DEFAULT_MODEL ")\n"
            "  --k N             neighbours per term, 1..%d (default 10)\n"
            "  --min-score S     drop neighbours with a cosine below S (default -1: keep all)\n"
            "  --terms-file F    index these terms (one per line) instead of the model's vocabulary\n"
            "  --cache-dir D     where the index cache lives (default: the model folder; \"\" for none)\n"
            "  --include-input   keep a term's own entry among its neighbours\n"
            "  --device D        backend: auto (cuda if a GPU is usable, else cpu), cpu or cuda\n"
            "  --dtype T         cuda precision: fp16 (default), bf16 or fp32; the cpu backend is fp32\n"
            "Prints one JSON object per term: {\"term\",\"neighbours\":[{\"term\",\"score\"}...]}.\n",
            EXPAND_MAX_K);
}

/* Parse an int in [lo, hi] or a float; 0 ok, -1 bad. */
static int expand_parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int expand_parse_float(const char *s, float *out) {
    char *end;
    float v = strtof(s, &end);
    if (!*s || *end || v != v) return -1;
    *out = v;
    return 0;
}

static int expand_print(const expand_index_t *ix, const char *term, const expand_hit_t *hits, int n) {
    json_t *neigh = json_array(), *obj = json_object();
    int rc = 1;
    if (!neigh || !obj) goto done;
    for (int j = 0; j < n; j++)
        if (json_array_append_new(neigh, json_pack("{s:s,s:f}", "term", expand_index_term(ix, hits[j].id), "score",
                                                   (double)hits[j].score)))
            goto done;
    if (json_object_set_new(obj, "term", json_string(term)) || json_object_set(obj, "neighbours", neigh)) goto done;
    char *line = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(6));
    if (!line) goto done;
    puts(line);
    free(line);
    rc = 0;
done:
    json_decref(neigh);
    json_decref(obj);
    return rc;
}

int cli_expand(int argc, char **argv) {
    const char *model = DEFAULT_MODEL, *device = "auto", *dtype = "fp16";
    expand_opts_t opts = {0};
    int k = 10, include_input = 0, n_terms = 0;
    float min_score = -1.0f;
    const char **terms = calloc((size_t)argc, sizeof *terms); /* argv strings, not owned */
    if (!terms) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            expand_usage(stdout);
            free(terms);
            return 0;
        }
        if (!strcmp(a, "--include-input")) {
            include_input = 1;
            continue;
        }
        if (strncmp(a, "--", 2)) {
            terms[n_terms++] = a;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sluice expand: %s needs a value (try --help)\n", a);
            free(terms);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--terms-file")) opts.terms_file = v;
        else if (!strcmp(a, "--cache-dir")) opts.cache_dir = v;
        else if (!strcmp(a, "--k")) bad = expand_parse_int(v, 1, EXPAND_MAX_K, &k);
        else if (!strcmp(a, "--min-score")) bad = expand_parse_float(v, &min_score);
        else {
            fprintf(stderr, "sluice expand: unknown option '%s' (try --help)\n", a);
            free(terms);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "sluice expand: bad value '%s' for %s (try --help)\n", v, a);
            free(terms);
            return 2;
        }
    }
    if (n_terms == 0) {
        fprintf(stderr, "sluice expand: no terms given (try --help)\n");
        free(terms);
        return 2;
    }
    char err[1024], note[1024];
    char **list = NULL;
    int n_list = 0, rc;
    /* the index's size, to give it an arena of its own beside the model's */
    if (expand_terms_load(model, opts.terms_file, &list, &n_list, err, sizeof err)) {
        fprintf(stderr, "sluice expand: %s\n", err);
        free(terms);
        return 2;
    }
    expand_terms_free(list, n_list);
    opts.max_queries = n_terms < EXPAND_DEFAULT_MAX_QUERIES ? n_terms : EXPAND_DEFAULT_MAX_QUERIES;
    cli_model_t cm;
    rc = cli_model_open(model, device, dtype, NULL, 0, &cm, err, sizeof err);
    if (rc) {
        fprintf(stderr, "sluice expand: %s\n", err);
        free(terms);
        return rc;
    }
    expand_index_t *ix = NULL;
    expand_hit_t *hits = malloc((size_t)n_terms * k * sizeof *hits);
    int *n_hits = malloc((size_t)n_terms * sizeof *n_hits);
    size_t need = expand_index_need(cm.ops, n_list, engine_info(cm.model)->hidden, opts.max_queries);
    arena_t *arena = need ? arena_create(cm.ops, need + (1 << 20), err, sizeof err) : NULL;
    rc = 1;
    if (!hits || !n_hits || !arena) {
        if (!arena && !need) snprintf(err, sizeof err, "the %s backend has no similarity_topk op", cm.ops->name);
        fprintf(stderr, "sluice expand: %s\n", hits && n_hits ? err : "out of memory");
        goto done;
    }
    if (expand_index_open(model, cm.model, cm.ops, arena, &opts, &ix, note, sizeof note, err, sizeof err)) {
        fprintf(stderr, "sluice expand: %s\n", err);
        goto done;
    }
    if (note[0]) fprintf(stderr, "sluice: %s\n", note);
    int qrc = expand_terms(ix, terms, n_terms, k, min_score, !include_input, hits, n_hits, err, sizeof err);
    if (qrc) {
        fprintf(stderr, "sluice expand: %s\n", err);
        rc = qrc == EXPAND_EINVAL ? 2 : 1;
        goto done;
    }
    rc = 0;
    for (int i = 0; i < n_terms && !rc; i++) rc = expand_print(ix, terms[i], hits + (size_t)i * k, n_hits[i]);
done:
    expand_index_destroy(ix);
    arena_destroy(arena);
    cli_model_close(&cm);
    free(hits);
    free(n_hits);
    free(terms);
    return rc;
}
