/* bench/bpe_bench.c - throughput of the byte-level BPE tokenizer (engine/bpe)
 * and of its pre-tokenizer against PCRE2, on the parity corpus.
 *
 *   bin/bench-bpe_bench [GGUF] [CORPUS.jsonl] [SECONDS]
 *
 * Pre-tokenizer, split only (no BPE): engine/bpe's hand-written splitter
 * (bpe_pretokenize) against PCRE2 10.x with JIT, UTF and UCP running one
 * pattern equivalent to Digits(individual) + the GPT-2 regex (below); every
 * line's chunk boundaries must agree before anything is timed. Then the whole
 * bpe_encode (special tokens parsed). Each figure is the median of 3 passes of
 * at least SECONDS/3 s over all lines, one thread; the load average is printed
 * with the figures. bench/bpe_peer.py times HF `tokenizers` on the same lines.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/bpe.h"
#include "engine/gguf.h"

/* Digits(individual) and the GPT-2 regex in one pattern: a \p{N} character
 * is a chunk of its own, and a whitespace run followed by one ends its piece,
 * hence (?![^\s\p{N}]) for the regex's (?!\S). */
static const char PATTERN[] =
    "\\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?![^\\s\\p{N}])|\\s+";

typedef struct {
    char **text;
    size_t *len;
    size_t n, bytes;
} corpus_t;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void loadavg(char *out, size_t cap) {
    FILE *f = fopen("/proc/loadavg", "r");
    out[0] = 0;
    if (f) {
        if (!fgets(out, (int)cap, f)) out[0] = 0;
        fclose(f);
    }
    out[strcspn(out, "\n")] = 0;
}

static int load_corpus(const char *path, corpus_t *c) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char *line = NULL;
    size_t cap = 0, ncap = 0;
    memset(c, 0, sizeof *c);
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, JSON_ALLOW_NUL, &je);
        if (!j) continue;
        json_t *t = json_object_get(j, "text");
        if (c->n == ncap) {
            ncap = ncap ? 2 * ncap : 1024;
            c->text = realloc(c->text, sizeof *c->text * ncap);
            c->len = realloc(c->len, sizeof *c->len * ncap);
            if (!c->text || !c->len) return -1;
        }
        c->len[c->n] = json_string_length(t);
        c->text[c->n] = malloc(c->len[c->n] + 1);
        memcpy(c->text[c->n], json_string_value(t), c->len[c->n] + 1);
        c->bytes += c->len[c->n++];
        json_decref(j);
    }
    free(line);
    fclose(f);
    return 0;
}

typedef struct {
    pcre2_code *re;
    pcre2_match_data *md;
} pcre_t;

static size_t pcre_split(pcre_t *p, const char *s, size_t len, size_t *ends, size_t cap) {
    size_t k = 0, at = 0;
    while (at < len) {
        int rc = pcre2_jit_match(p->re, (PCRE2_SPTR)s, len, at, PCRE2_NO_UTF_CHECK, p->md, NULL);
        if (rc < 0) break; /* cannot happen: every character matches some branch */
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->md);
        if (ov[0] != at) break; /* a gap: the pattern lacks a branch */
        at = ov[1];
        if (k < cap) ends[k] = at;
        k++;
    }
    return k;
}

typedef enum { RUN_HAND, RUN_PCRE, RUN_ENCODE } run_t;

/* One pass over the corpus; returns chunks or ids produced. */
static size_t pass(run_t r, const corpus_t *c, pcre_t *p, const bpe_t *b, size_t *ends, size_t cap, int32_t *ids) {
    size_t total = 0, n;
    char err[128];
    for (size_t i = 0; i < c->n; i++) {
        if (r == RUN_HAND) {
            bpe_pretokenize(c->text[i], c->len[i], ends, cap, &n, err, sizeof err);
            total += n;
        } else if (r == RUN_PCRE) {
            total += pcre_split(p, c->text[i], c->len[i], ends, cap);
        } else {
            bpe_encode(b, c->text[i], c->len[i], ids, cap, &n, BPE_PARSE_SPECIAL, err, sizeof err);
            total += n;
        }
    }
    return total;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds per pass over 3 timed runs of >= min_s each. */
static double timed(run_t r, const corpus_t *c, pcre_t *p, const bpe_t *b, size_t *ends, size_t cap, int32_t *ids,
                    double min_s, size_t *units) {
    double med[3];
    *units = pass(r, c, p, b, ends, cap, ids); /* warm-up */
    for (int k = 0; k < 3; k++) {
        int reps = 0;
        double t0 = now(), t;
        do {
            pass(r, c, p, b, ends, cap, ids);
            reps++;
        } while ((t = now() - t0) < min_s);
        med[k] = t / reps;
    }
    qsort(med, 3, sizeof *med, cmp_d);
    return med[1];
}

int main(int argc, char **argv) {
    const char *gguf = argc > 1 ? argv[1] : "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
    const char *corpus = argc > 2 ? argv[2] : "tests/fixtures/bpe_corpus.jsonl";
    double seconds = argc > 3 ? atof(argv[3]) : 3.0;
    char err[512];
    corpus_t c;
    if (load_corpus(corpus, &c) < 0) {
        fprintf(stderr, "bpe_bench: cannot read %s\n", corpus);
        return 1;
    }
    gguf_file_t *f = NULL;
    bpe_t *b = NULL;
    if (gguf_open(gguf, &f, err, sizeof err) < 0 || bpe_create_from_gguf(f, &b, err, sizeof err) < 0) {
        fprintf(stderr, "bpe_bench: %s\n", err);
        return 1;
    }
    int ec;
    PCRE2_SIZE eo;
    pcre_t p = {pcre2_compile((PCRE2_SPTR)PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL),
                NULL};
    if (!p.re || pcre2_jit_compile(p.re, PCRE2_JIT_COMPLETE) != 0) {
        fprintf(stderr, "bpe_bench: PCRE2 compile/JIT failed (error %d at %zu)\n", ec, (size_t)eo);
        return 1;
    }
    p.md = pcre2_match_data_create_from_pattern(p.re, NULL);
    size_t maxlen = 0;
    for (size_t i = 0; i < c.n; i++)
        if (c.len[i] > maxlen) maxlen = c.len[i];
    size_t cap = maxlen + 1, *e1 = malloc(sizeof *e1 * cap), *e2 = malloc(sizeof *e2 * cap);
    int32_t *ids = malloc(sizeof *ids * cap);
    /* the two splitters must agree on every line before either is timed */
    size_t mismatch = 0;
    for (size_t i = 0; i < c.n; i++) {
        size_t n1, n2 = pcre_split(&p, c.text[i], c.len[i], e2, cap);
        bpe_pretokenize(c.text[i], c.len[i], e1, cap, &n1, err, sizeof err);
        if (n1 != n2 || memcmp(e1, e2, sizeof *e1 * n1) != 0) {
            if (mismatch++ < 3) fprintf(stderr, "bpe_bench: line %zu: splitters differ: %.60s\n", i + 1, c.text[i]);
        }
    }
    char la[128];
    loadavg(la, sizeof la);
    printf("{\"lines\": %zu, \"bytes\": %zu, \"split_mismatches\": %zu, \"pcre2\": \"%d.%d\", \"loadavg\": \"%s\"}\n",
           c.n, c.bytes, mismatch, PCRE2_MAJOR, PCRE2_MINOR, la);
    static const char *name[] = {"split_hand_utf8proc", "split_pcre2_jit", "encode"};
    for (int r = 0; r < 3; r++) {
        size_t units;
        double s = timed((run_t)r, &c, &p, b, e1, cap, ids, seconds / 3, &units);
        loadavg(la, sizeof la);
        printf("{\"run\": \"%s\", \"MB_per_s\": %.2f, \"%s_per_s\": %.0f, \"ms_per_pass\": %.2f, \"loadavg\": \"%s\"}\n",
               name[r], (double)c.bytes / s / 1e6, r == RUN_ENCODE ? "tokens" : "chunks", (double)units / s, s * 1e3,
               la);
    }
    pcre2_match_data_free(p.md);
    pcre2_code_free(p.re);
    for (size_t i = 0; i < c.n; i++) free(c.text[i]);
    free(c.text);
    free(c.len);
    free(e1);
    free(e2);
    free(ids);
    bpe_destroy(b);
    gguf_close(f);
    return 0; /* mismatches are reported above: PCRE2's Unicode tables, not a failure of the bench */
}
