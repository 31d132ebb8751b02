/* api/cli/cli_tokenize.c - `sluice tokenize`: token ids and pieces as JSON lines.
 *
 *   sluice tokenize [--model DIR] [--text T]... [--file F]
 *
 * Only the model's tokenizer is loaded (no weights), so this is the quick way
 * to see what the engine will be fed: {"index":i,"ids":[...],"pieces":[...],
 * "truncated":bool} per input, --text inputs first, then the file's lines.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/cli/cli.h"
#include "api/cli/cli_common.h"
#include "engine/tokenizer.h"

#define DEFAULT_MODEL "models/all-minilm-l6-v2"

static void tokenize_usage(FILE *out) {
    fprintf(out,
            "usage: sluice tokenize [--model DIR] [--text T]... [--file F]\n"
            "  --model DIR    model folder (default " DEFAULT_MODEL "): vocab.txt and its configs\n"
            "  --text T       an input text (repeatable)\n"
            "  --file F       a file of inputs, one per line\n"
            "Prints one JSON object per input: {\"index\",\"ids\",\"pieces\",\"truncated\"};\n"
            "ids are cut to the model's max sequence length ([CLS] ... [SEP]).\n");
}

/* One input as a JSON line; returns an exit code. */
static int print_one(const tok_t *tok, int index, const char *text, int32_t *ids, int max_ids) {
    char err[256];
    int untruncated = 0;
    int n = tok_encode(tok, text, strlen(text), ids, max_ids, &untruncated, err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "sluice tokenize: input %d: %s\n", index, err);
        return 2;
    }
    json_t *jids = json_array(), *pieces = json_array();
    json_t *o = json_pack("{s:i, s:o, s:o, s:b}", "index", index, "ids", jids, "pieces", pieces,
                          "truncated", untruncated > n);
    if (!o) goto nomem;
    for (int i = 0; i < n; i++)
        if (json_array_append_new(jids, json_integer(ids[i])) ||
            json_array_append_new(pieces, json_string(tok_piece(tok, ids[i]))))
            goto nomem;
    char *line = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!line) {
        fprintf(stderr, "sluice tokenize: out of memory\n");
        return 1;
    }
    int bad = puts(line) < 0;
    free(line);
    if (bad) {
        perror("sluice tokenize: writing output");
        return 1;
    }
    return 0;
nomem:
    json_decref(o);
    fprintf(stderr, "sluice tokenize: out of memory\n");
    return 1;
}

int cli_tokenize(int argc, char **argv) {
    const char *model = DEFAULT_MODEL, *file = NULL;
    char **texts = calloc((size_t)argc + 1, sizeof *texts); /* argv strings, not owned */
    int n_texts = 0, rc = 2, n_lines = 0;
    char **lines = NULL;
    tok_t *tok = NULL;
    int32_t *ids = NULL;
    if (!texts) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            tokenize_usage(stdout);
            rc = 0;
            goto done;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sluice tokenize: %s needs a value (try --help)\n", a);
            goto done;
        }
        if (!strcmp(a, "--model")) model = argv[++i];
        else if (!strcmp(a, "--text")) texts[n_texts++] = argv[++i];
        else if (!strcmp(a, "--file")) file = argv[++i];
        else {
            fprintf(stderr, "sluice tokenize: unknown option '%s' (try --help)\n", a);
            goto done;
        }
    }
    char err[1024];
    if (file && cli_read_lines(file, &lines, &n_lines, err, sizeof err)) {
        fprintf(stderr, "sluice tokenize: %s\n", err);
        goto done;
    }
    if (n_texts + n_lines == 0) {
        fprintf(stderr, "sluice tokenize: no input (give --text or --file)\n");
        goto done;
    }
    if (tok_create_for_model(model, &tok, err, sizeof err)) {
        fprintf(stderr, "sluice tokenize: %s\n", err);
        goto done;
    }
    int max_ids = tok_max_len(tok);
    ids = malloc((size_t)max_ids * sizeof *ids);
    if (!ids) {
        fprintf(stderr, "sluice tokenize: out of memory\n");
        rc = 1;
        goto done;
    }
    rc = 0;
    for (int i = 0; i < n_texts + n_lines && !rc; i++)
        rc = print_one(tok, i, i < n_texts ? texts[i] : lines[i - n_texts], ids, max_ids);
    if (!rc && fflush(stdout)) {
        perror("sluice tokenize: writing output");
        rc = 1;
    }
done:
    free(ids);
    tok_destroy(tok);
    cli_free_lines(lines, n_lines);
    free(texts);
    return rc;
}
