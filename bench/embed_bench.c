/* bench/embed_bench.c - sentences/s and tokens/s of the engine on a corpus.
 *
 *   bin/bench-embed_bench [--model DIR] [--device cpu|cuda|auto] [--dtype fp32|bf16]
 *                         --corpus FILE [--batch N] [--limit N] [--repeat R]
 *
 * Tokenizes and embeds the first --limit lines of the corpus (one text per
 * line) in batches of --batch inputs, --repeat times after one warm-up pass,
 * and prints one JSON line with the median pass: sentences/s, tokens/s,
 * seconds. Tokenization is included, as it is for the peers in the same run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/cli/cli_common.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One pass over texts in batches of bs; returns seconds, or -1 on error. */
static double one_pass(cli_model_t *cm, char **texts, int n, int bs, long *tokens) {
    const engine_info_t *in = engine_info(cm->model);
    const tok_t *tok = engine_tokenizer(cm->model);
    int max_len = in->max_seq_len;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)bs * max_len), *off = malloc(sizeof(int32_t) * (size_t)(bs + 1));
    float *out = malloc(sizeof(float) * (size_t)bs * in->hidden);
    char err[512];
    double t0 = now_s();
    *tokens = 0;
    for (int first = 0; first < n; first += bs) {
        int b = 0;
        off[0] = 0;
        for (; b < bs && first + b < n; b++) {
            int k = tok_encode(tok, texts[first + b], strlen(texts[first + b]), ids + off[b], max_len, NULL, err,
                               sizeof err);
            if (k < 0) k = 0; /* invalid UTF-8 line: skip it (counted as nothing) */
            off[b + 1] = off[b] + k;
        }
        /* drop skipped lines from the batch */
        int m = 0;
        for (int i = 0; i < b; i++)
            if (off[i + 1] > off[i]) {
                int len = off[i + 1] - off[i];
                memmove(ids + off[m], ids + off[i], sizeof(int32_t) * (size_t)len);
                off[m + 1] = off[m] + len;
                m++;
            }
        if (m && engine_embed(cm->model, ids, off, m, out, err, sizeof err)) {
            fprintf(stderr, "embed: %s\n", err);
            t0 = -1;
            break;
        }
        *tokens += off[m];
    }
    double dt = t0 < 0 ? -1 : now_s() - t0;
    free(ids);
    free(off);
    free(out);
    return dt;
}

int main(int argc, char **argv) {
    const char *model = "models/all-minilm-l6-v2", *device = "cpu", *dtype = "bf16", *corpus = NULL;
    int bs = 32, limit = 1000, repeat = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--device")) device = argv[i + 1];
        else if (!strcmp(argv[i], "--dtype")) dtype = argv[i + 1];
        else if (!strcmp(argv[i], "--corpus")) corpus = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) bs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--limit")) limit = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!corpus || bs < 1 || limit < 1 || repeat < 1 || repeat > 99) {
        fprintf(stderr, "usage: %s --corpus FILE [--batch N] [--limit N] [--repeat R] [--device D]\n", argv[0]);
        return 2;
    }
    char err[1024], **lines;
    int n_all;
    if (cli_read_lines(corpus, &lines, &n_all, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int n = n_all < limit ? n_all : limit;
    engine_opts_t opts = {.max_batch_seqs = bs, .max_batch_tokens = bs * 256};
    cli_model_t cm;
    int rc = cli_model_open(model, device, dtype, &opts, 0, &cm, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s\n", err);
        cli_free_lines(lines, n_all);
        return rc;
    }
    long tokens = 0;
    double times[99];
    rc = one_pass(&cm, lines, n, bs, &tokens) < 0; /* warm-up */
    for (int r = 0; r < repeat && !rc; r++) rc = (times[r] = one_pass(&cm, lines, n, bs, &tokens)) < 0;
    if (!rc) {
        qsort(times, (size_t)repeat, sizeof times[0], cmp_double);
        double med = times[repeat / 2];
        printf("{\"system\":\"sluice\",\"device\":\"%s\",\"dtype\":\"%s\",\"batch\":%d,\"sentences\":%d,"
               "\"tokens\":%ld,\"seconds\":%.4f,\"sentences_per_s\":%.1f,\"tokens_per_s\":%.0f}\n",
               cm.ops->name, ops_dtype_name(cm.ops->dtype), bs, n, tokens, med, n / med, tokens / med);
    }
    cli_model_close(&cm);
    cli_free_lines(lines, n_all);
    return rc;
}
