/* api/cli/cli_embed.c - `sluice embed`: sentence embeddings as JSON lines.
 *
 *   sluice embed [--model DIR] [--device auto|cpu|cuda] [--dtype bf16|fp16|fp32]
 *                [--text T]... [--file F]
 *
 * Inputs are tokenized, packed into batches as large as the workspace allows,
 * and printed in input order: {"index":i,"tokens":n,"embedding":[...]}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/cli/cli.h"
#include "api/cli/cli_common.h"

#define DEFAULT_MODEL "models/all-minilm-l6-v2"

static void embed_usage(FILE *out) {
    fprintf(out,
            "usage: sluice embed [--model DIR] [--device auto|cpu|cuda] [--dtype bf16|fp16|fp32]\n"
            "                    [--text T]... [--file F]\n"
            "  --model DIR    model folder (default " DEFAULT_MODEL ")\n"
            "  --device D     backend: auto (cuda if a GPU is usable, else cpu), cpu or cuda\n"
            "  --dtype T      cuda precision: fp16 (default), bf16 or fp32; the cpu backend is fp32\n"
            "  --text T       an input text (repeatable)\n"
            "  --file F       a file of inputs, one per line\n"
            "Prints one JSON object per input: {\"index\",\"tokens\",\"embedding\"}.\n");
}

/* Embed texts[0..n) and print them; returns an exit code. */
static int embed_all(cli_model_t *cm, char **texts, int n) {
    const engine_info_t *in = engine_info(cm->model);
    const tok_t *tok = engine_tokenizer(cm->model);
    const int max_len = in->max_seq_len, H = in->hidden;
    const int max_tokens = engine_max_batch_tokens(cm->model), max_seqs = engine_max_batch_seqs(cm->model);
    int32_t *ids = malloc((size_t)max_tokens * sizeof *ids);
    int32_t *off = malloc(((size_t)max_seqs + 1) * sizeof *off);
    float *out = malloc((size_t)max_seqs * H * sizeof *out);
    int *ntok = malloc(((size_t)max_seqs + 1) * sizeof *ntok);
    char err[512];
    int rc = 0;
    if (!ids || !off || !out || !ntok) {
        fprintf(stderr, "sluice embed: out of memory\n");
        rc = 1;
        goto done;
    }
    for (int first = 0; first < n;) {
        int b = 0;
        off[0] = 0;
        /* pack whole sequences while they fit */
        while (first + b < n && b < max_seqs && off[b] + max_len <= max_tokens) {
            int k = tok_encode(tok, texts[first + b], strlen(texts[first + b]), ids + off[b], max_len, NULL, err,
                               sizeof err);
            if (k < 0) {
                fprintf(stderr, "sluice embed: input %d: %s\n", first + b, err);
                rc = 2;
                goto done;
            }
            ntok[b] = k;
            off[b + 1] = off[b] + k;
            b++;
        }
        if (engine_embed(cm->model, ids, off, b, out, err, sizeof err)) {
            fprintf(stderr, "sluice embed: %s\n", err);
            rc = 1;
            goto done;
        }
        for (int i = 0; i < b; i++) {
            printf("{\"index\":%d,\"tokens\":%d,\"embedding\":[", first + i, ntok[i]);
            for (int h = 0; h < H; h++) printf(h ? ",%.9g" : "%.9g", out[(size_t)i * H + h]);
            printf("]}\n");
        }
        first += b;
    }
done:
    free(ids);
    free(off);
    free(out);
    free(ntok);
    return rc;
}

int cli_embed(int argc, char **argv) {
    const char *model = DEFAULT_MODEL, *device = "auto", *dtype = "fp16", *file = NULL;
    char **texts = calloc((size_t)argc, sizeof *texts); /* argv strings, not owned */
    int n_texts = 0, rc = 2;
    char **lines = NULL;
    int n_lines = 0;
    if (!texts) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            embed_usage(stdout);
            rc = 0;
            goto done;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sluice embed: %s needs a value (try --help)\n", a);
            goto done;
        }
        if (!strcmp(a, "--model")) model = argv[++i];
        else if (!strcmp(a, "--device")) device = argv[++i];
        else if (!strcmp(a, "--dtype")) dtype = argv[++i];
        else if (!strcmp(a, "--text")) texts[n_texts++] = argv[++i];
        else if (!strcmp(a, "--file")) file = argv[++i];
        else {
            fprintf(stderr, "sluice embed: unknown option '%s' (try --help)\n", a);
            goto done;
        }
    }
    char err[1024];
    if (file) {
        if (cli_read_lines(file, &lines, &n_lines, err, sizeof err)) {
            fprintf(stderr, "sluice embed: %s\n", err);
            goto done;
        }
        char **all = realloc(texts, (size_t)(n_texts + n_lines + 1) * sizeof *all);
        if (!all) {
            rc = 1;
            goto done;
        }
        texts = all;
        for (int i = 0; i < n_lines; i++) texts[n_texts++] = lines[i];
    }
    if (n_texts == 0) {
        fprintf(stderr, "sluice embed: no input (give --text or --file)\n");
        goto done;
    }
    cli_model_t cm;
    rc = cli_model_open(model, device, dtype, NULL, 0, &cm, err, sizeof err);
    if (rc) {
        fprintf(stderr, "sluice embed: %s\n", err);
        goto done;
    }
    rc = embed_all(&cm, texts, n_texts);
    cli_model_close(&cm);
done:
    cli_free_lines(lines, n_lines);
    free(texts);
    return rc;
}
