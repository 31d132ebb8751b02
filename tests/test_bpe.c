/* tests/test_bpe.c - the byte-level BPE tokenizer against HF `tokenizers`.
 *
 * Parity: every line of tests/fixtures/bpe_corpus.jsonl must encode to the ids
 * in tests/fixtures/bpe_ids.jsonl (made by tests/tools/gen_bpe_fixture.py from
 * the GGUF's own vocabulary with the smollm pre-tokenizer), decode back to the
 * text wherever HF's does, and decode the same token by token (never emitting
 * part of a character) as in one piece. The rest checks the contract of
 * engine/bpe.h on hand-made vocabularies: merge order, dropped bytes, special
 * tokens, bad UTF-8, empty and huge inputs, the streaming decoder.
 * Model: $SLUICE_TEST_LLM (default the SmolLM2 GGUF under models/); run from
 * the repository root.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/bpe.h"
#include "engine/gguf.h"
#include "tests/support_gguf.h"
#include "tests/support_llm.h"
#include "tests/support_tmpdir.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define assert_no_leaks() cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked")
#else
#define assert_no_leaks() ((void)0)
#endif

#define CORPUS "tests/fixtures/bpe_corpus.jsonl"
#define IDS "tests/fixtures/bpe_ids.jsonl"

static bpe_t *model_bpe(void) {
    gguf_file_t *f = support_llm_open();
    char err[512];
    bpe_t *b = NULL;
    int rc = bpe_create_from_gguf(f, &b, err, sizeof err);
    cr_assert_eq(rc, BPE_OK, "bpe_create_from_gguf: %s", err);
    gguf_close(f); /* the tokenizer keeps its own copies */
    return b;
}

/* Valid UTF-8, complete characters only. */
static int utf8_ok(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        int k = c < 0x80 ? 1 : c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!k || i + (size_t)k > n) return 0;
        for (int j = 1; j < k; j++)
            if ((u[i + j] & 0xC0) != 0x80) return 0;
        if ((c == 0xE0 && u[i + 1] < 0xA0) || (c == 0xED && u[i + 1] > 0x9F) || (c == 0xF0 && u[i + 1] < 0x90) ||
            (c == 0xF4 && u[i + 1] > 0x8F))
            return 0;
        i += (size_t)k;
    }
    return 1;
}

/* Whole decode into a fresh buffer; *n its length. */
static char *decode_all(const bpe_t *b, const int32_t *ids, size_t n_ids, unsigned flags, size_t *n) {
    int rc = bpe_decode(b, ids, n_ids, NULL, 0, n, flags);
    cr_assert_eq(rc, BPE_OK);
    char *out = malloc(*n + 1);
    size_t n2;
    rc = bpe_decode(b, ids, n_ids, out, *n + 1, &n2, flags);
    cr_assert_eq(rc, BPE_OK);
    cr_assert_eq(n2, *n);
    out[*n] = 0;
    return out;
}

/* Token-by-token decode: every step's output must be whole characters, and
 * the concatenation must equal the whole decode. */
static void check_stream(const bpe_t *b, const int32_t *ids, size_t n_ids, const char *whole, size_t wlen,
                         int line) {
    bpe_decoder_t d;
    bpe_decoder_init(&d, 0);
    size_t cap = bpe_decode_step_max(b);
    char *buf = malloc(cap), *acc = malloc(wlen + 1);
    size_t at = 0;
    for (size_t i = 0; i <= n_ids; i++) {
        int w = i < n_ids ? bpe_decode_step(b, &d, ids[i], buf, cap) : bpe_decode_flush(&d, buf, cap);
        cr_assert_geq(w, 0, "line %d: step %zu failed", line, i);
        cr_assert(utf8_ok(buf, (size_t)w), "line %d: step %zu emitted part of a character", line, i);
        cr_assert_leq(at + (size_t)w, wlen, "line %d: stream longer than the whole decode", line);
        memcpy(acc + at, buf, (size_t)w);
        at += (size_t)w;
    }
    cr_assert_eq(at, wlen, "line %d: stream gives %zu bytes, whole decode %zu", line, at, wlen);
    cr_assert(memcmp(acc, whole, wlen) == 0, "line %d: stream and whole decode differ", line);
    free(buf);
    free(acc);
}

/* ------------------------------------------------------------- parity */

Test(bpe, corpus_parity_roundtrip_stream, .timeout = 300) {
    bpe_t *b = model_bpe();
    FILE *fc = fopen(CORPUS, "r"), *fi = fopen(IDS, "r");
    cr_assert(fc && fi, "cannot open %s / %s (run from the repository root)", CORPUS, IDS);
    char *lc = NULL, *li = NULL;
    size_t cc = 0, ci = 0;
    int line = 0, n_rt = 0;
    size_t cap = 1 << 16, total_ids = 0;
    int32_t *ids = malloc(sizeof *ids * cap);
    while (getline(&lc, &cc, fc) > 0) {
        line++;
        cr_assert(getline(&li, &ci, fi) > 0, "%s ends before line %d", IDS, line);
        json_error_t je;
        json_t *jc = json_loads(lc, JSON_ALLOW_NUL, &je), *ji = json_loads(li, JSON_ALLOW_NUL, &je);
        cr_assert(jc && ji, "line %d: bad JSON", line);
        const char *text = json_string_value(json_object_get(jc, "text"));
        size_t len = json_string_length(json_object_get(jc, "text"));
        json_t *want = json_object_get(ji, "ids");
        int rt = (int)json_integer_value(json_object_get(ji, "rt"));
        size_t n;
        char err[256];
        int rc = bpe_encode(b, text, len, ids, cap, &n, BPE_PARSE_SPECIAL, err, sizeof err);
        cr_assert_eq(rc, BPE_OK, "line %d: %s", line, err);
        cr_assert_leq(n, cap);
        cr_assert_eq(n, json_array_size(want), "line %d: %zu ids, HF %zu: %.80s", line, n, json_array_size(want),
                     text);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(ids[i], json_integer_value(json_array_get(want, i)),
                         "line %d id %zu: %d, HF %lld: %.80s", line, i, ids[i],
                         (long long)json_integer_value(json_array_get(want, i)), text);
        size_t dl;
        char *dec = decode_all(b, ids, n, 0, &dl);
        int same = dl == len && memcmp(dec, text, len) == 0;
        cr_assert_eq(same, rt, "line %d: decode(encode(x)) %s x, HF's %s", line, same ? "==" : "!=",
                     rt ? "==" : "!=");
        n_rt += same;
        json_t *jd = json_object_get(ji, "dec"); /* HF's lossy decode where the text does not round-trip */
        if (jd)
            cr_assert(dl == json_string_length(jd) && memcmp(dec, json_string_value(jd), dl) == 0,
                      "line %d: decode differs from HF's: %.80s", line, dec);
        check_stream(b, ids, n, dec, dl, line);
        free(dec);
        total_ids += n;
        json_decref(jc);
        json_decref(ji);
    }
    cr_assert_geq(line, 3000, "corpus has only %d lines", line);
    cr_assert(getline(&li, &ci, fi) <= 0, "%s has more lines than %s", IDS, CORPUS);
    cr_log_info("bpe parity: %d lines, %zu ids, %d round-trip", line, total_ids, n_rt);
    free(lc);
    free(li);
    free(ids);
    fclose(fc);
    fclose(fi);
    bpe_destroy(b);
    assert_no_leaks();
}

/* ------------------------------------------------------------- model facts */

/* How many ids text (len bytes, special tokens parsed) encodes to. */
static size_t enc_len(const bpe_t *b, const char *s, size_t len) {
    size_t n;
    char err[256];
    cr_assert_eq(bpe_encode(b, s, len, NULL, 0, &n, BPE_PARSE_SPECIAL, err, sizeof err), BPE_OK, "%s", err);
    return n;
}

static size_t enc(const bpe_t *b, const char *s, int32_t *ids, size_t cap, unsigned flags) {
    size_t n;
    char err[256];
    int rc = bpe_encode(b, s, strlen(s), ids, cap, &n, flags, err, sizeof err);
    cr_assert_eq(rc, BPE_OK, "%s", err);
    return n;
}

Test(bpe, model_specials_and_digits) {
    bpe_t *b = model_bpe();
    cr_assert_eq(bpe_vocab_size(b), 49152);
    cr_assert_eq(bpe_bos_id(b), 1);
    cr_assert_eq(bpe_eos_id(b), 2);
    cr_assert_eq(bpe_unk_id(b), 0);
    cr_assert_eq(bpe_add_bos(b), 0);
    cr_assert_eq(bpe_lookup(b, "<|im_end|>", 10), 2);
    cr_assert_eq(bpe_token_type(b, 2), BPE_TT_CONTROL);
    cr_assert_str_eq(bpe_token_text(b, 1), "<|im_start|>");
    int32_t ids[64];
    /* "a  1": the digit split leaves the two spaces together */
    size_t n = enc(b, "a  1", ids, 64, 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(ids[1], bpe_lookup(b, "\xc4\xa0\xc4\xa0", 4)); /* "ĠĠ" */
    cr_assert_eq(ids[2], bpe_lookup(b, "1", 1));
    /* control tokens in the text, only with BPE_PARSE_SPECIAL */
    const char *chat = "<|im_start|>user\nhi<|im_end|>";
    n = enc(b, chat, ids, 64, BPE_PARSE_SPECIAL);
    cr_assert_gt(n, 2);
    cr_assert_eq(ids[0], 1);
    cr_assert_eq(ids[n - 1], 2);
    n = enc(b, chat, ids, 64, 0);
    for (size_t i = 0; i < n; i++) cr_assert(ids[i] != 1 && ids[i] != 2, "special id without the flag");
    /* decode: control text, or nothing when skipped */
    int32_t in[3] = {1, bpe_lookup(b, "hi", 2), 2};
    size_t dl;
    char *d = decode_all(b, in, 3, 0, &dl);
    cr_assert_str_eq(d, "<|im_start|>hi<|im_end|>");
    free(d);
    d = decode_all(b, in, 3, BPE_SKIP_SPECIAL, &dl);
    cr_assert_str_eq(d, "hi");
    free(d);
    bpe_destroy(b);
}

Test(bpe, empty_truncated_and_count_only) {
    bpe_t *b = model_bpe();
    size_t n = 99;
    char err[256];
    cr_assert_eq(bpe_encode(b, NULL, 0, NULL, 0, &n, BPE_PARSE_SPECIAL, err, sizeof err), BPE_OK);
    cr_assert_eq(n, 0);
    cr_assert_eq(bpe_encode(b, NULL, 3, NULL, 0, &n, 0, err, sizeof err), BPE_EINVAL);
    const char *s = "Hello, world! 12345 <|im_end|> done.";
    int32_t all[64], few[4] = {-7, -7, -7, -7};
    size_t na = enc(b, s, all, 64, BPE_PARSE_SPECIAL);
    size_t nc = enc(b, s, NULL, 0, BPE_PARSE_SPECIAL);
    size_t nf = enc(b, s, few, 3, BPE_PARSE_SPECIAL);
    cr_assert_eq(nc, na);
    cr_assert_eq(nf, na);
    cr_assert(memcmp(few, all, 3 * sizeof *few) == 0);
    cr_assert_eq(few[3], -7, "wrote past cap");
    bpe_destroy(b);
}

Test(bpe, bad_utf8_is_an_error) {
    bpe_t *b = model_bpe();
    static const struct {
        const char *s;
        size_t at;
    } bad[] = {
        {"abc\x80", 3},         {"\xc3", 0},           {"x\xc3(", 1},        {"\xc0\x80", 0},
        {"\xed\xa0\x80", 0},    {"\xf4\x90\x80\x80", 0}, {"ok \xf8\x88\x80\x80\x80", 3}, {"\xe2\x82", 0},
        {"<|im_end|>\xff", 10}, {"\xef\xbf", 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int32_t ids[16];
        size_t n;
        char err[256] = "";
        int rc = bpe_encode(b, bad[i].s, strlen(bad[i].s), ids, 16, &n, BPE_PARSE_SPECIAL, err, sizeof err);
        cr_assert_eq(rc, BPE_EUTF8, "case %zu: rc %d", i, rc);
        char want[64];
        snprintf(want, sizeof want, "invalid UTF-8 at byte %zu", bad[i].at);
        cr_assert_str_eq(err, want, "case %zu", i);
    }
    bpe_destroy(b);
}

Test(bpe, long_inputs_fast_and_exact, .timeout = 120) {
    bpe_t *b = model_bpe();
    /* 1 MiB of one letter: one chunk, the merge loop on a long word */
    size_t L = 1 << 20;
    char *s = malloc(L + 1);
    memset(s, 'a', L);
    s[L] = 0;
    size_t n = enc(b, s, NULL, 0, 0);
    cr_assert_gt(n, 0);
    int32_t *ids = malloc(sizeof *ids * n);
    cr_assert_eq(enc(b, s, ids, n, 0), n);
    size_t dl;
    char *d = decode_all(b, ids, n, 0, &dl);
    cr_assert(dl == L && memcmp(d, s, L) == 0);
    free(d);
    free(ids);
    /* 8 MiB of text: the same ids as the pieces it is made of, line by line */
    const char *unit = "The 3 quick brown foxes don't jump; they're  \tresting. 日本語 😀 café\n";
    size_t ul = strlen(unit), reps = (8u << 20) / ul;
    free(s);
    s = malloc(ul * reps + 1);
    for (size_t i = 0; i < reps; i++) memcpy(s + i * ul, unit, ul);
    s[ul * reps] = 0;
    int32_t uids[128];
    size_t un = enc(b, unit, uids, 128, 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    n = enc(b, s, NULL, 0, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    cr_log_info("bpe: %zu bytes -> %zu ids in %.3f s (%.1f MB/s)", ul * reps, n, sec, (double)(ul * reps) / sec / 1e6);
    /* "\n" ends the unit and "The" begins the next: no chunk spans units */
    cr_assert_eq(n, un * reps);
    ids = malloc(sizeof *ids * n);
    enc(b, s, ids, n, 0);
    for (size_t i = 0; i < reps; i += reps / 7) cr_assert(memcmp(ids + i * un, uids, un * sizeof *ids) == 0);
    free(ids);
    free(s);
    bpe_destroy(b);
    assert_no_leaks();
}

/* ------------------------------------------------------------- hand-made vocabularies */

/* GPT-2's printable stand-in of a byte, as UTF-8. */
static int byte_char(int by, char *out) {
    int cp = by, extra = 0;
    int printable = (by >= 33 && by <= 126) || (by >= 161 && by <= 172) || by >= 174;
    if (!printable) {
        for (int x = 0; x < by; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174)) extra++;
        cp = 256 + extra;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

typedef struct {
    char *tok[400];
    size_t tlen[400];
    int32_t type[400];
    int n;
    char *mer[64];
    size_t mlen[64];
    int nm;
} tiny_t;

static void tiny_add(tiny_t *t, const char *s, int type) {
    t->tok[t->n] = strdup(s);
    t->tlen[t->n] = strlen(s);
    t->type[t->n++] = type;
}

/* All 256 byte tokens (but the ones in skip), then extra tokens and merges. */
static bpe_t *tiny(tiny_t *t, const char *skip, const char *const *extra, const char *const *merges, int *rc,
                   char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    tiny_add(t, "<|im_start|>", BPE_TT_CONTROL);
    tiny_add(t, "<|im_end|>", BPE_TT_CONTROL);
    tiny_add(t, "<|im_end|>x", BPE_TT_USER_DEFINED);
    for (int by = 0; by < 256; by++) {
        if (skip && strchr(skip, by) && by) continue;
        char c[3] = {0};
        byte_char(by, c);
        tiny_add(t, c, BPE_TT_NORMAL);
    }
    for (int i = 0; extra && extra[i]; i++) tiny_add(t, extra[i], BPE_TT_NORMAL);
    for (int i = 0; merges && merges[i]; i++) {
        t->mer[t->nm] = strdup(merges[i]);
        t->mlen[t->nm++] = strlen(merges[i]);
    }
    bpe_vocab_t v = {.n_tokens = t->n, .tokens = (const char *const *)t->tok, .token_lens = t->tlen,
                     .types = t->type, .n_merges = t->nm, .merges = (const char *const *)t->mer,
                     .merge_lens = t->mlen, .bos = 0, .eos = 1, .unk = -1};
    bpe_t *b = NULL;
    *rc = bpe_create(&v, &b, err, errlen);
    for (int i = 0; i < t->n; i++) free(t->tok[i]);
    for (int i = 0; i < t->nm; i++) free(t->mer[i]);
    return b;
}

static void expect_tokens(const bpe_t *b, const char *text, unsigned flags, const char *const *want) {
    int32_t ids[64];
    size_t n = enc(b, text, ids, 64, flags);
    size_t k = 0;
    while (want[k]) k++;
    cr_assert_eq(n, k, "\"%s\": %zu tokens, want %zu", text, n, k);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(bpe_token_text(b, ids[i]), want[i], "\"%s\" token %zu", text, i);
}

Test(bpe, tiny_merge_order_and_ties) {
    tiny_t t;
    int rc;
    char err[256];
    /* rank order, not text order: "bc" (rank 0) beats "ab" (rank 1); ties go left: "aaa" -> "aa" "a" */
    const char *extra[] = {"ab", "bc", "abc", "aa", "Ġb", "12", NULL};
    const char *merges[] = {"b c", "a b", "a bc", "a a", "Ġ b", "1 2", NULL};
    bpe_t *b = tiny(&t, NULL, extra, merges, &rc, err, sizeof err);
    cr_assert_eq(rc, BPE_OK, "%s", err);
    expect_tokens(b, "abc", 0, (const char *const[]){"abc", NULL});
    expect_tokens(b, "abx", 0, (const char *const[]){"ab", "x", NULL});
    expect_tokens(b, "aaa", 0, (const char *const[]){"aa", "a", NULL});
    expect_tokens(b, "aaaa", 0, (const char *const[]){"aa", "aa", NULL});
    /* pre-tokenizer: " b" is one chunk, digits alone (the merge "1 2" never applies), "  1" keeps both spaces, contractions */
    expect_tokens(b, "a b", 0, (const char *const[]){"a", "Ġb", NULL});
    expect_tokens(b, "a  1", 0, (const char *const[]){"a", "Ġ", "Ġ", "1", NULL});
    expect_tokens(b, "x  b", 0, (const char *const[]){"x", "Ġ", "Ġb", NULL});
    expect_tokens(b, "12", 0, (const char *const[]){"1", "2", NULL});
    expect_tokens(b, "bc's", 0, (const char *const[]){"bc", "'", "s", NULL});
    /* specials: leftmost-longest, only with the flag */
    expect_tokens(b, "<|im_end|>x", BPE_PARSE_SPECIAL, (const char *const[]){"<|im_end|>x", NULL});
    expect_tokens(b, "<|im_end|>", BPE_PARSE_SPECIAL, (const char *const[]){"<|im_end|>", NULL});
    expect_tokens(b, "a<|im_start|>b", BPE_PARSE_SPECIAL, (const char *const[]){"a", "<|im_start|>", "b", NULL});
    bpe_destroy(b);
}

Test(bpe, tiny_missing_byte_dropped_before_merging) {
    tiny_t t;
    int rc;
    char err[256];
    const char *extra[] = {"a\xc2\xa9", NULL}; /* "a©": 'a' then the stand-in of byte 0xA9 */
    const char *merges[] = {"a \xc2\xa9", NULL};
    bpe_t *b = tiny(&t, "\xc3", extra, merges, &rc, err, sizeof err);
    cr_assert_eq(rc, BPE_OK, "%s", err);
    /* "aé" is a, 0xC3, 0xA9: the missing 0xC3 goes, and its neighbours merge, as in HF */
    expect_tokens(b, "a\xc3\xa9", 0, (const char *const[]){"a\xc2\xa9", NULL});
    int32_t ids[4];
    cr_assert_eq(enc(b, "\xc3\xa9", ids, 4, 0), 1);
    bpe_destroy(b);
}

Test(bpe, tiny_bad_vocabularies_refused) {
    tiny_t t;
    int rc;
    char err[256];
    const char *m1[] = {"a b", NULL};
    bpe_t *b = tiny(&t, NULL, NULL, m1, &rc, err, sizeof err); /* "ab" is not a token */
    cr_assert_eq(rc, BPE_EFORMAT);
    cr_assert_null(b);
    cr_assert(strstr(err, "merge 0"), "%s", err);
    const char *m2[] = {"ab", NULL};
    const char *e2[] = {"ab", NULL};
    b = tiny(&t, NULL, e2, m2, &rc, err, sizeof err); /* no space */
    cr_assert_eq(rc, BPE_EFORMAT);
    const char *e3[] = {"a", NULL}; /* duplicate */
    b = tiny(&t, NULL, e3, NULL, &rc, err, sizeof err);
    cr_assert_eq(rc, BPE_EFORMAT);
    cr_assert(strstr(err, "twice"), "%s", err);
    const char *e4[] = {"\xff", NULL}; /* invalid UTF-8 */
    b = tiny(&t, NULL, e4, NULL, &rc, err, sizeof err);
    cr_assert_eq(rc, BPE_EFORMAT);
    assert_no_leaks();
}

/* ------------------------------------------------------------- streaming decoder */

Test(bpe, stream_holds_partial_characters) {
    tiny_t t;
    int rc;
    char err[256];
    bpe_t *b = tiny(&t, NULL, NULL, NULL, &rc, err, sizeof err);
    cr_assert_eq(rc, BPE_OK, "%s", err);
    /* "é😀" byte by byte: nothing until each character completes */
    const unsigned char text[] = {0xC3, 0xA9, 0xF0, 0x9F, 0x98, 0x80};
    int expect_w[] = {0, 2, 0, 0, 0, 4};
    bpe_decoder_t d;
    bpe_decoder_init(&d, 0);
    size_t cap = bpe_decode_step_max(b);
    char out[4096];
    cr_assert_leq(cap, sizeof out);
    for (int i = 0; i < 6; i++) {
        char c[3] = {0};
        byte_char(text[i], c);
        int w = bpe_decode_step(b, &d, bpe_lookup(b, c, strlen(c)), out, cap);
        cr_assert_eq(w, expect_w[i], "byte %d: %d", i, w);
    }
    cr_assert_eq(bpe_decode_flush(&d, out, cap), 0);
    /* ill-formed: a lone continuation, a lead cut by ASCII, a tail at the end */
    static const struct {
        unsigned char in[6];
        int n;
        const char *want;
    } bad[] = {
        {{0x80, 'a'}, 2, "\xef\xbf\xbd" "a"},
        {{0xE2, 0x82, 'x'}, 3, "\xef\xbf\xbd" "x"},
        {{'o', 'k', 0xE2, 0x82}, 4, "ok\xef\xbf\xbd"},
        {{0xED, 0xA0, 0x80}, 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate: 3 maximal subparts */
        {{0xF0, 0x9F, 0xC3, 0xA9}, 4, "\xef\xbf\xbd\xc3\xa9"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        int32_t ids[6];
        for (int i = 0; i < bad[k].n; i++) {
            char c[3] = {0};
            byte_char(bad[k].in[i], c);
            ids[i] = bpe_lookup(b, c, strlen(c));
        }
        size_t dl;
        char *dd = decode_all(b, ids, (size_t)bad[k].n, 0, &dl);
        cr_assert_str_eq(dd, bad[k].want, "case %zu", k);
        check_stream(b, ids, (size_t)bad[k].n, dd, dl, (int)k);
        free(dd);
    }
    cr_assert_eq(bpe_decode_step(b, &d, 100000, out, cap), BPE_EINVAL);
    cr_assert_eq(bpe_decode_step(b, &d, 5, out, 8), BPE_EINVAL);
    bpe_destroy(b);
}

/* ------------------------------------------------------------- GGUF keys */

TestSuite(bpe_gguf, .init = tmpdir_init, .fini = tmpdir_fini);

/* A small GGUF holding the 256 byte tokens, "ab", one merge and the keys
 * given; what = which key to spoil. */
static int gguf_case(const char *what, char *err, size_t errlen) {
    const char *toks[260];
    char store[256][3];
    int n = 0;
    toks[n++] = "<|im_start|>";
    for (int by = 0; by < 256; by++) {
        memset(store[by], 0, 3);
        byte_char(by, store[by]);
        toks[n++] = store[by];
    }
    toks[n++] = "ab";
    int32_t types[260];
    for (int i = 0; i < n; i++) types[i] = i == 0 ? BPE_TT_CONTROL : BPE_TT_NORMAL;
    const char *merges[1] = {strcmp(what, "merge") == 0 ? "a c" : "a b"};
    gw_t *w = gw_new();
    gw_kv_str(w, "tokenizer.ggml.model", strcmp(what, "model") == 0 ? "llama" : "gpt2");
    if (strcmp(what, "no-pre") != 0) gw_kv_str(w, "tokenizer.ggml.pre", strcmp(what, "pre") == 0 ? "llama3" : "smollm");
    gw_kv_arr_str(w, "tokenizer.ggml.tokens", (size_t)n, toks);
    if (strcmp(what, "no-merges") != 0) gw_kv_arr_str(w, "tokenizer.ggml.merges", 1, merges);
    if (strcmp(what, "types-short") == 0) gw_kv_arr(w, "tokenizer.ggml.token_type", GGUF_V_INT32, 3, types);
    else if (strcmp(what, "types-float") == 0) gw_kv_arr(w, "tokenizer.ggml.token_type", GGUF_V_FLOAT32, (size_t)n, types);
    else gw_kv_arr(w, "tokenizer.ggml.token_type", GGUF_V_INT32, (size_t)n, types);
    gw_kv_u32(w, "tokenizer.ggml.bos_token_id", 0);
    gw_kv_bool(w, "tokenizer.ggml.add_bos_token", 1);
    gw_kv_u32(w, "tokenizer.ggml.eos_token_id", strcmp(what, "eos") == 0 ? 100000 : 0);
    if (strcmp(what, "unk-huge") == 0) gw_kv_u64(w, "tokenizer.ggml.unknown_token_id", 1ull << 40);
    if (strcmp(what, "unk-str") == 0) gw_kv_str(w, "tokenizer.ggml.unknown_token_id", "0");
    const char *path = tmpdir_file("tok.gguf");
    cr_assert_eq(gw_write(w, path), 0);
    gw_free(w);
    gguf_file_t *f = NULL;
    int rc = gguf_open(path, &f, err, errlen);
    cr_assert_eq(rc, GGUF_OK, "%s", err);
    bpe_t *b = NULL;
    rc = bpe_create_from_gguf(f, &b, err, errlen);
    if (rc == BPE_OK) {
        int32_t ids[4];
        size_t k = enc(b, "ab", ids, 4, 0);
        cr_assert(k == 1 && ids[0] == 257, "\"ab\" -> %zu ids", k);
        cr_assert_eq(bpe_bos_id(b), 0);
        cr_assert_eq(bpe_unk_id(b), -1);
        cr_assert_eq(bpe_add_bos(b), 1);
        cr_assert_eq(bpe_token_type(b, 0), BPE_TT_CONTROL);
    }
    bpe_destroy(b);
    gguf_close(f);
    return rc;
}

Test(bpe_gguf, keys_checked) {
    char err[512];
    cr_assert_eq(gguf_case("ok", err, sizeof err), BPE_OK, "%s", err);
    static const struct {
        const char *what, *msg;
    } bad[] = {
        {"pre", "tokenizer.ggml.pre is \"llama3\""},
        {"no-pre", "no string tokenizer.ggml.pre"},
        {"model", "tokenizer.ggml.model is \"llama\""},
        {"no-merges", "tokenizer.ggml.merges"},
        {"merge", "merge 0"},
        {"types-short", "token_type"},
        {"types-float", "token_type"},
        {"eos", "out of range"},
        {"unk-huge", "out of range"},
        {"unk-str", "out of range"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        int rc = gguf_case(bad[i].what, err, sizeof err);
        cr_assert_eq(rc, BPE_EFORMAT, "%s: rc %d", bad[i].what, rc);
        cr_assert(strstr(err, bad[i].msg), "%s: \"%s\"", bad[i].what, err);
    }
    assert_no_leaks();
}

Test(bpe, pretokenize_chunks) {
    const char *s = "Hello  world's 123\n\n";
    size_t want[] = {5, 6, 12, 14, 15, 16, 17, 18, 20}, ends[16], n;
    char err[128];
    cr_assert_eq(bpe_pretokenize(s, strlen(s), ends, 16, &n, err, sizeof err), BPE_OK);
    cr_assert_eq(n, sizeof want / sizeof *want);
    for (size_t i = 0; i < n; i++) cr_assert_eq(ends[i], want[i], "chunk %zu ends at %zu", i, ends[i]);
    cr_assert_eq(bpe_pretokenize(s, strlen(s), NULL, 0, &n, err, sizeof err), BPE_OK);
    cr_assert_eq(n, sizeof want / sizeof *want);
    cr_assert_eq(bpe_pretokenize("a\xff", 2, ends, 16, &n, err, sizeof err), BPE_EUTF8);
}

/* ------------------------------------------------------------- random inputs */

static uint32_t rnd(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*s >> 33);
}

/* Random byte strings (ASCII, multi-byte characters, digits, specials and
 * stray bytes mixed): encode answers OK or BPE_EUTF8 and never crashes; valid
 * text decodes back to itself unless it holds a byte the vocabulary lacks. */
Test(bpe, random_bytes_never_crash, .timeout = 120) {
    bpe_t *b = model_bpe();
    static const char *const pieces[] = {"a", " ", "  ", "\n", "7", "'s", "é", "日本", "😀", "<|im_end|>", "<|im_",
                                         "\t", "!!", "\xc2\x85", "\xe2\x80\xa8", "x", "Q", "٣", "\xf3\xa0\x80\x81"};
    uint64_t seed = 20261203;
    char text[512];
    int32_t ids[1024];
    size_t cap = bpe_decode_step_max(b);
    char *dec = malloc(4 * sizeof text + 16), *step = malloc(cap);
    int n_ok = 0, n_bad = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = 0, want = rnd(&seed) % 200;
        while (len < want) {
            if (rnd(&seed) % 8 == 0) {
                text[len++] = (char)(rnd(&seed) & 0xFF); /* any byte, often invalid */
            } else {
                const char *p = pieces[rnd(&seed) % (sizeof pieces / sizeof *pieces)];
                size_t l = strlen(p);
                if (len + l > sizeof text) break;
                memcpy(text + len, p, l);
                len += l;
            }
        }
        size_t n;
        char err[128];
        int rc = bpe_encode(b, text, len, ids, 1024, &n, (unsigned)(iter & 1), err, sizeof err);
        cr_assert(rc == BPE_OK || rc == BPE_EUTF8, "iter %d: rc %d", iter, rc);
        if (rc != BPE_OK) {
            n_bad++;
            continue;
        }
        n_ok++;
        cr_assert_leq(n, 1024);
        size_t dl;
        cr_assert_eq(bpe_decode(b, ids, n, dec, 4 * sizeof text + 16, &dl, 0), BPE_OK);
        cr_assert(utf8_ok(dec, dl), "iter %d: decode is not valid UTF-8", iter);
        int lossy = 0;
        for (size_t i = 0; i < len; i++) {
            char c[3] = {0};
            byte_char((unsigned char)text[i], c);
            lossy |= bpe_lookup(b, c, strlen(c)) < 0;
        }
        if (!lossy) cr_assert(dl == len && memcmp(dec, text, len) == 0, "iter %d: no round trip", iter);
        /* streaming agrees with whole decoding, any ids at all */
        for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(rnd(&seed) % 49152);
        cr_assert_eq(bpe_decode(b, ids, n, dec, 4 * sizeof text + 16, &dl, 0), BPE_OK);
        if (dl <= 4 * sizeof text + 16) check_stream(b, ids, n, dec, dl, iter);
    }
    cr_assert_gt(n_ok, 1000);
    cr_assert_gt(n_bad, 1000);
    free(dec);
    free(step);
    bpe_destroy(b);
    assert_no_leaks();
}

/* One tokenizer, several threads at once: the same ids as one thread. */
typedef struct {
    const bpe_t *b;
    const char *text;
    size_t len, n;
    int32_t *ids;
} job_t;

static void *encode_job(void *arg) {
    job_t *j = arg;
    char err[128];
    for (int r = 0; r < 5; r++)
        if (bpe_encode(j->b, j->text, j->len, j->ids, j->n, &j->n, BPE_PARSE_SPECIAL, err, sizeof err) != BPE_OK)
            j->n = 0;
    return NULL;
}

Test(bpe, threads_share_one_tokenizer, .timeout = 120) {
    bpe_t *b = model_bpe();
    FILE *f = fopen(CORPUS, "r");
    cr_assert_not_null(f);
    char *all = NULL, *line = NULL;
    size_t len = 0, cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, JSON_ALLOW_NUL, NULL);
        const char *t = json_string_value(json_object_get(j, "text"));
        size_t l = json_string_length(json_object_get(j, "text"));
        all = realloc(all, len + l + 1);
        memcpy(all + len, t, l);
        len += l;
        all[len++] = '\n';
        json_decref(j);
    }
    fclose(f);
    free(line);
    size_t n = enc_len(b, all, len);
    int32_t *want = malloc(sizeof *want * n);
    job_t one = {b, all, len, n, want};
    encode_job(&one);
    cr_assert_eq(one.n, n);
    pthread_t th[4];
    job_t jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job_t){b, all, len, n, malloc(sizeof(int32_t) * n)};
        pthread_create(&th[i], NULL, encode_job, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(jobs[i].n, n, "thread %d", i);
        cr_assert(memcmp(jobs[i].ids, want, sizeof *want * n) == 0, "thread %d: other ids", i);
        free(jobs[i].ids);
    }
    free(want);
    free(all);
    bpe_destroy(b);
}
