/* tests/test_tokenizer.c - the WordPiece tokenizer against HF `tokenizers`.
 *
 * Parity: every line of tests/fixtures/tokenizer_ids.jsonl (made by
 * tests/tools/gen_tokenizer_fixture.py from the model's own tokenizer.json)
 * must give the same ids, untruncated and truncated to the model's 256. The
 * rest checks the contract of engine/tokenizer.h: errors, lookups, limits.
 * Model folder: $SLUICE_TEST_MODEL (default models/all-minilm-l6-v2); run from
 * the repository root.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/tokenizer.h"

/* Criterion counts a passed test as passed even when LeakSanitizer reports at
 * exit, so under ASan the tests that allocate ask for a leak check themselves. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define assert_no_leaks() cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked")
#else
#define assert_no_leaks() ((void)0)
#endif

#define FIXTURE "tests/fixtures/tokenizer_ids.jsonl"
#define MAX_IDS 100000

static const char *model_dir(void) {
    const char *d = getenv("SLUICE_TEST_MODEL");
    return d && *d ? d : "models/all-minilm-l6-v2";
}

static char *vocab_path(void) {
    static char p[4096];
    snprintf(p, sizeof p, "%s/vocab.txt", model_dir());
    struct stat st;
    if (stat(p, &st)) cr_assert_fail("no vocab at %s (run `make model`, or set SLUICE_TEST_MODEL)", p);
    return p;
}

static tok_t *make_tok(int max_len) {
    tok_options_t o = {.lowercase = 1, .strip_accents = 1, .tokenize_cjk = 1, .max_len = max_len};
    tok_t *t = NULL;
    char err[512];
    int rc = tok_create(vocab_path(), &o, &t, err, sizeof err);
    cr_assert_eq(rc, TOK_OK, "tok_create: %s", err);
    return t;
}

static tok_t *make_model_tok(void) {
    tok_t *t = NULL;
    char err[512];
    int rc = tok_create_for_model(model_dir(), &t, err, sizeof err);
    cr_assert_eq(rc, TOK_OK, "tok_create_for_model(%s): %s", model_dir(), err);
    return t;
}

/* ------------------------------------------------------------- fixture */

typedef struct {
    char *kind;
    char *text;
    size_t len;
    int32_t *ids;
    int n;
} ref_line_t;

static ref_line_t *load_fixture(int *count) {
    FILE *f = fopen(FIXTURE, "r");
    cr_assert_not_null(f, "cannot open %s (run the tests from the repository root)", FIXTURE);
    ref_line_t *v = NULL;
    int n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, f)) > 0) {
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &je);
        cr_assert_not_null(j, "%s line %d: %s", FIXTURE, n + 1, je.text);
        json_t *text = json_object_get(j, "text"), *ids = json_object_get(j, "ids");
        cr_assert(json_is_string(text) && json_is_array(ids), "%s line %d: needs text and ids",
                  FIXTURE, n + 1);
        if (n == cap) {
            cap = cap ? 2 * cap : 4096;
            v = realloc(v, (size_t)cap * sizeof *v);
            cr_assert_not_null(v);
        }
        ref_line_t *r = &v[n++];
        r->len = json_string_length(text);
        r->text = malloc(r->len + 1);
        memcpy(r->text, json_string_value(text), r->len + 1);
        const char *kind = json_string_value(json_object_get(j, "kind"));
        r->kind = strdup(kind ? kind : "?");
        r->n = (int)json_array_size(ids);
        r->ids = malloc(((size_t)r->n + 1) * sizeof *r->ids);
        for (int i = 0; i < r->n; i++) r->ids[i] = (int32_t)json_integer_value(json_array_get(ids, i));
        json_decref(j);
    }
    free(line);
    fclose(f);
    *count = n;
    return v;
}

static void free_fixture(ref_line_t *v, int n) {
    for (int i = 0; i < n; i++) {
        free(v[i].kind);
        free(v[i].text);
        free(v[i].ids);
    }
    free(v);
}

/* Text as a short printable string: escapes for controls and non-UTF-8-safe cuts. */
static void show_text(const char *s, size_t len, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < len && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 80 && (c & 0xC0) != 0x80) {
            o += (size_t)snprintf(out + o, cap - o, "...");
            break;
        }
        if (c < 0x20 || c == 0x7F) o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        else out[o++] = (char)c;
    }
    out[o] = 0;
}

/* One mismatch, readably: where the ids part and the pieces around it. */
static void report(const tok_t *t, int lineno, const ref_line_t *r, const int32_t *got, int ngot) {
    int at = 0;
    while (at < r->n && at < ngot && r->ids[at] == got[at]) at++;
    char text[512], want[512] = "", have[512] = "";
    show_text(r->text, r->len, text, sizeof text);
    for (int i = at; i < r->n && i < at + 6; i++) {
        size_t o = strlen(want);
        const char *p = tok_piece(t, r->ids[i]);
        snprintf(want + o, sizeof want - o, "%d:%s ", r->ids[i], p ? p : "?");
    }
    for (int i = at; i < ngot && i < at + 6; i++) {
        size_t o = strlen(have);
        const char *p = tok_piece(t, got[i]);
        snprintf(have + o, sizeof have - o, "%d:%s ", got[i], p ? p : "?");
    }
    cr_log_error("%s line %d (%s) \"%s\": %d ids expected, %d got; first difference at id %d: "
                 "HF [%s] sluice [%s]", FIXTURE, lineno, r->kind, text, r->n, ngot, at, want, have);
}

static void check_fixture(tok_t *t, int truncate_to) {
    int n = 0;
    ref_line_t *ref = load_fixture(&n);
    cr_assert_geq(n, 3000, "the fixture has %d lines, want at least 3000", n);
    int32_t *ids = malloc(MAX_IDS * sizeof *ids);
    int bad = 0, truncated = 0;
    for (int i = 0; i < n; i++) {
        const ref_line_t *r = &ref[i];
        int32_t *want = r->ids;
        int nwant = r->n;
        int32_t cut[512];
        if (truncate_to && r->n > truncate_to) { /* [CLS] + first (max-2) pieces + [SEP] */
            memcpy(cut, r->ids, (size_t)(truncate_to - 1) * sizeof *cut);
            cut[truncate_to - 1] = r->ids[r->n - 1];
            want = cut;
            nwant = truncate_to;
            truncated++;
        }
        char err[256];
        int untrunc = -1;
        int got = tok_encode(t, r->text, r->len, ids, MAX_IDS, &untrunc, err, sizeof err);
        if (got < 0) {
            if (bad++ < 5) cr_log_error("%s line %d: tok_encode failed: %s", FIXTURE, i + 1, err);
            continue;
        }
        ref_line_t shown = *r;
        shown.ids = want;
        shown.n = nwant;
        if (got != nwant || memcmp(ids, want, (size_t)got * sizeof *ids) || untrunc != r->n) {
            if (bad++ < 5) {
                report(t, i + 1, &shown, ids, got);
                if (untrunc != r->n)
                    cr_log_error("  n_untruncated %d, expected %d", untrunc, r->n);
            }
        }
    }
    if (truncate_to) cr_assert_gt(truncated, 20, "only %d fixture lines exercise truncation", truncated);
    cr_log_info("%d fixture lines, %d truncated to %d, %d mismatches", n, truncated, truncate_to, bad);
    free(ids);
    free_fixture(ref, n);
    cr_assert_eq(bad, 0, "%d of %d fixture lines differ from HF tokenizers (first ones logged above)",
                 bad, n);
    assert_no_leaks();
}

Test(tokenizer, parity_untruncated) {
    tok_t *t = make_tok(MAX_IDS);
    check_fixture(t, 0);
    tok_destroy(t);
}

Test(tokenizer, parity_truncated_by_model_config) {
    tok_t *t = make_model_tok();
    cr_assert_eq(tok_max_len(t), 256, "max_len from sentence_bert_config.json");
    check_fixture(t, 256);
    tok_destroy(t);
}

/* ------------------------------------------------------------ behaviour */

static int encode(const tok_t *t, const char *s, int32_t *ids, int cap) {
    char err[256];
    int n = tok_encode(t, s, strlen(s), ids, cap, NULL, err, sizeof err);
    cr_assert_geq(n, 2, "tok_encode(\"%s\"): %d %s", s, n, err);
    return n;
}

Test(tokenizer, known_sentences) {
    tok_t *t = make_model_tok();
    int32_t ids[64];
    int n = encode(t, "Hello, world!", ids, 64);
    int32_t want[] = {101, 7592, 1010, 2088, 999, 102};
    cr_assert_eq(n, 6);
    cr_assert_arr_eq(ids, want, sizeof want);
    /* accents stripped, "##" continuation pieces, CJK split */
    n = encode(t, "Café tokenization 中文", ids, 64);
    const char *pieces[] = {"[CLS]", "cafe", "token", "##ization", "中", "文", "[SEP]"};
    cr_assert_eq(n, 7);
    for (int i = 0; i < n; i++) cr_assert_str_eq(tok_piece(t, ids[i]), pieces[i], "piece %d", i);
    /* a special token inside the text is kept whole, as HF's added tokens are */
    n = encode(t, "a [MASK] b", ids, 64);
    cr_assert_eq(n, 5);
    cr_assert_str_eq(tok_piece(t, ids[2]), "[MASK]");
    tok_destroy(t);
}

Test(tokenizer, empty_and_blank_text) {
    tok_t *t = make_model_tok();
    int32_t ids[8];
    char err[128];
    int untrunc = -1;
    cr_assert_eq(tok_encode(t, NULL, 0, ids, 8, &untrunc, err, sizeof err), 2);
    cr_assert_eq(ids[0], tok_cls_id(t));
    cr_assert_eq(ids[1], tok_sep_id(t));
    cr_assert_eq(untrunc, 2);
    cr_assert_eq(tok_encode(t, " \t\r\n\x00\xe2\x80\x8b", 8, ids, 8, NULL, err, sizeof err), 2);
    tok_destroy(t);
}

Test(tokenizer, words_over_100_chars_are_unk) {
    tok_t *t = make_model_tok();
    char word[202];
    int32_t ids[8];
    memset(word, 'a', 101);
    word[100] = 0;
    int n = encode(t, word, ids, 8);
    cr_assert(n > 2 && ids[1] != tok_unk_id(t), "100 chars are still split into pieces");
    word[100] = 'a';
    word[101] = 0;
    n = encode(t, word, ids, 8);
    cr_assert_eq(n, 3);
    cr_assert_eq(ids[1], tok_unk_id(t), "101 chars -> [UNK]");
    tok_destroy(t);
}

Test(tokenizer, output_capacity_truncates) {
    tok_t *t = make_model_tok();
    int32_t ids[5];
    char err[128];
    const char *s = "one two three four five six";
    int untrunc = 0;
    int n = tok_encode(t, s, strlen(s), ids, 5, &untrunc, err, sizeof err);
    cr_assert_eq(n, 5);
    cr_assert_eq(untrunc, 8);
    cr_assert_eq(ids[0], tok_cls_id(t));
    cr_assert_str_eq(tok_piece(t, ids[3]), "three");
    cr_assert_eq(ids[4], tok_sep_id(t));
    cr_assert_eq(tok_encode(t, s, strlen(s), ids, 1, NULL, err, sizeof err), TOK_EINVAL);
    cr_assert(strstr(err, "at least 2"), "%s", err);
    cr_assert_eq(tok_encode(NULL, s, 1, ids, 5, NULL, err, sizeof err), TOK_EINVAL);
    tok_destroy(t);
}

Test(tokenizer, invalid_utf8_is_rejected) {
    tok_t *t = make_model_tok();
    static const struct { const char *s; size_t at; } bad[] = {
        {"ab\xC3\x28", 2},              /* lead byte without continuation */
        {"\xA0\xA1", 0},                /* lone continuation bytes */
        {"x \xE2\x28\xA1", 2},          /* broken 3-byte sequence */
        {"\xF0\x28\x8C\xBC", 0},        /* broken 4-byte sequence */
        {"over\xC0\xAF", 4},            /* overlong '/' */
        {"\xE0\x80\xAF", 0},            /* overlong 3-byte */
        {"sur\xED\xA0\x80", 3},         /* UTF-16 surrogate */
        {"\xF4\x90\x80\x80", 0},        /* above U+10FFFF */
        {"\xF8\x88\x80\x80\x80", 0},    /* 5-byte form */
        {"\xFF", 0},
        {"end\xE2\x82", 3},             /* cut at the end */
        {"[MASK]\xFE", 6},              /* after a special token */
    };
    int32_t ids[64];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[128] = "";
        int rc = tok_encode(t, bad[i].s, strlen(bad[i].s), ids, 64, NULL, err, sizeof err);
        cr_assert_eq(rc, TOK_EUTF8, "case %zu: rc %d", i, rc);
        char where[64];
        snprintf(where, sizeof where, "invalid UTF-8 at byte %zu", bad[i].at);
        cr_assert(strstr(err, where), "case %zu: \"%s\" should say \"%s\"", i, err, where);
    }
    /* valid 2-, 3- and 4-byte sequences pass */
    cr_assert_geq(encode(t, "\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF", ids, 64), 2);
    tok_destroy(t);
}

/* ------------------------------------------------------- create errors */

static char tmpdir[64];

static void make_tmpdir(void) {
    strcpy(tmpdir, "/tmp/sluice-tok-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmpdir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static const char *write_file(const char *name, const char *content, size_t len) {
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(content, 1, len, f), len);
    fclose(f);
    return p;
}

static int create_from(const char *content, size_t len, int max_len, tok_t **t, char *err,
                       size_t errlen) {
    const char *p = write_file("vocab.txt", content, len);
    tok_options_t o = {1, 1, 1, max_len};
    return tok_create(p, &o, t, err, errlen);
}

#define SPECIALS "[PAD]\n[UNK]\n[CLS]\n[SEP]\n"

Test(tokenizer, create_errors, .init = make_tmpdir, .fini = rm_tmpdir) {
    char err[512];
    tok_t *t = (tok_t *)0x1;
    tok_options_t o = {1, 1, 1, 128};
    int rc = tok_create("/nonexistent/vocab.txt", &o, &t, err, sizeof err);
    cr_assert_eq(rc, TOK_EIO);
    cr_assert_null(t, "*out is cleared on failure");
    cr_assert(strstr(err, "/nonexistent/vocab.txt"), "message names the file: %s", err);

    rc = tok_create(tmpdir, &o, &t, err, sizeof err);
    cr_assert_eq(rc, TOK_EIO, "a directory is not a vocab: %s", err);

    const char no_unk[] = "[PAD]\n[CLS]\n[SEP]\nhello\n";
    rc = create_from(no_unk, sizeof no_unk - 1, 128, &t, err, sizeof err);
    cr_assert_eq(rc, TOK_EFORMAT);
    cr_assert(strstr(err, "[UNK]"), "message names the missing piece: %s", err);

    rc = create_from("", 0, 128, &t, err, sizeof err);
    cr_assert_eq(rc, TOK_EFORMAT);
    cr_assert(strstr(err, "empty"), "%s", err);

    const char bad_utf8[] = SPECIALS "ok\nb\xC3\x28\n";
    rc = create_from(bad_utf8, sizeof bad_utf8 - 1, 128, &t, err, sizeof err);
    cr_assert_eq(rc, TOK_EFORMAT);
    cr_assert(strstr(err, "line 6") && strstr(err, "UTF-8"), "%s", err);

    rc = create_from(SPECIALS, sizeof SPECIALS - 1, 1, &t, err, sizeof err);
    cr_assert_eq(rc, TOK_EINVAL, "max_len 1 leaves no room for [CLS] [SEP]");
    cr_assert_eq(tok_create(NULL, &o, &t, err, sizeof err), TOK_EINVAL);
    tok_destroy(NULL);
    assert_no_leaks();
}

Test(tokenizer, small_vocab_semantics, .init = make_tmpdir, .fini = rm_tmpdir) {
    /* CRLF lines, no final newline, duplicates (the later line wins, as in HF) */
    const char v[] = SPECIALS "[MASK]\r\nun\r\n##aff\r\n##able\r\nun\r\n##a\r\n.\r\nx";
    tok_t *t = NULL;
    char err[512];
    cr_assert_eq(create_from(v, sizeof v - 1, 16, &t, err, sizeof err), TOK_OK, "%s", err);
    cr_assert_eq(tok_vocab_size(t), 12);
    cr_assert_eq(tok_lookup(t, "un"), 8);
    cr_assert_str_eq(tok_piece(t, 5), "un");
    cr_assert_str_eq(tok_piece(t, 11), "x");
    cr_assert_eq(tok_lookup(t, "##able"), 7);
    cr_assert_eq(tok_lookup(t, "able"), -1);
    cr_assert_eq(tok_pad_id(t), 0);
    cr_assert_eq(tok_unk_id(t), 1);
    int32_t ids[16];
    int n = encode(t, "UNAFFABLE. unaffablex [MASK]", ids, 16);
    int32_t want[] = {2, 8, 6, 7, 10, 1, 4, 3};
    cr_assert_eq(n, 8);
    cr_assert_arr_eq(ids, want, sizeof want);
    tok_destroy(t);
}

Test(tokenizer, model_folder, .init = make_tmpdir, .fini = rm_tmpdir) {
    tok_t *t = make_model_tok();
    cr_assert_eq(tok_vocab_size(t), 30522);
    cr_assert_eq(tok_cls_id(t), 101);
    cr_assert_eq(tok_sep_id(t), 102);
    cr_assert_eq(tok_pad_id(t), 0);
    cr_assert_eq(tok_unk_id(t), 100);
    cr_assert_str_eq(tok_piece(t, 101), "[CLS]");
    cr_assert_str_eq(tok_piece(t, 30521), "##～");
    cr_assert_null(tok_piece(t, -1));
    cr_assert_null(tok_piece(t, 30522));
    cr_assert_eq(tok_lookup(t, "hello"), 7592);
    cr_assert_eq(tok_lookup(t, "##s"), 2015);
    cr_assert_eq(tok_lookup(t, "not-a-piece"), -1);
    cr_assert_eq(tok_lookup(t, NULL), -1);
    tok_destroy(t);

    char err[512];
    int rc = tok_create_for_model("/nonexistent-model", &t, err, sizeof err);
    cr_assert_eq(rc, TOK_EIO);
    cr_assert(strstr(err, "/nonexistent-model/vocab.txt"), "%s", err);

    /* a folder with only vocab.txt: BERT uncased defaults, 512 ids */
    char vocab[4096];
    snprintf(vocab, sizeof vocab, "cp '%s' '%s/'", vocab_path(), tmpdir);
    cr_assert_eq(system(vocab), 0);
    cr_assert_eq(tok_create_for_model(tmpdir, &t, err, sizeof err), TOK_OK, "%s", err);
    cr_assert_eq(tok_max_len(t), 512);
    tok_destroy(t);

    /* the configs are read: max_seq_length wins over model_max_length */
    const char tc[] = "{\"do_lower_case\": false, \"model_max_length\": 384}";
    write_file("tokenizer_config.json", tc, sizeof tc - 1);
    cr_assert_eq(tok_create_for_model(tmpdir, &t, err, sizeof err), TOK_OK, "%s", err);
    cr_assert_eq(tok_max_len(t), 384);
    int32_t ids[8];
    cr_assert_eq(encode(t, "Hello", ids, 8), 3);
    cr_assert_eq(ids[1], tok_unk_id(t), "cased: \"Hello\" is not in an uncased vocab");
    tok_destroy(t);
    const char sb[] = "{\"max_seq_length\": 128}";
    write_file("sentence_bert_config.json", sb, sizeof sb - 1);
    cr_assert_eq(tok_create_for_model(tmpdir, &t, err, sizeof err), TOK_OK, "%s", err);
    cr_assert_eq(tok_max_len(t), 128);
    tok_destroy(t);

    /* broken or unsupported configs: clear errors naming the file */
    const char bad_json[] = "{\"max_seq_length\": ";
    write_file("sentence_bert_config.json", bad_json, sizeof bad_json - 1);
    cr_assert_eq(tok_create_for_model(tmpdir, &t, err, sizeof err), TOK_EFORMAT);
    cr_assert(strstr(err, "sentence_bert_config.json"), "%s", err);
    const char bad_len[] = "{\"max_seq_length\": 1}";
    write_file("sentence_bert_config.json", bad_len, sizeof bad_len - 1);
    cr_assert_eq(tok_create_for_model(tmpdir, &t, err, sizeof err), TOK_EFORMAT);
    cr_assert(strstr(err, "max_seq_length"), "%s", err);
    write_file("sentence_bert_config.json", sb, sizeof sb - 1);
    static const struct { const char *json, *says; } tj[] = {
        {"{\"model\": {\"type\": \"BPE\"}}", "BPE"},
        {"{\"normalizer\": null}", "normalizer null"},
        {"{\"normalizer\": {\"type\": \"NFKC\"}}", "NFKC"},
        {"{\"pre_tokenizer\": {\"type\": \"Whitespace\"}}", "Whitespace"},
        {"{\"model\": {\"type\": \"WordPiece\", \"max_input_chars_per_word\": 200}}", "200"},
        {"{\"added_tokens\": [{\"id\": 99999, \"content\": \"[X]\"}]}", "added_tokens[0]"},
    };
    for (size_t i = 0; i < sizeof tj / sizeof tj[0]; i++) {
        write_file("tokenizer.json", tj[i].json, strlen(tj[i].json));
        cr_assert_eq(tok_create_for_model(tmpdir, &t, err, sizeof err), TOK_EFORMAT, "%s", tj[i].json);
        cr_assert(strstr(err, tj[i].says) && strstr(err, "tokenizer.json"), "%s: %s", tj[i].json, err);
        cr_assert_null(t);
    }
    /* a tokenizer.json with its own added token: matched in text like [MASK] */
    const char added[] = "{\"added_tokens\": [{\"id\": 1996, \"content\": \"<THE>\"}]}";
    write_file("tokenizer.json", added, sizeof added - 1);
    cr_assert_eq(tok_create_for_model(tmpdir, &t, err, sizeof err), TOK_OK, "%s", err);
    int32_t ids2[16];
    int n2 = encode(t, "a<THE>b [MASK]", ids2, 16);
    cr_assert_eq(n2, 8, "[CLS] a <THE> b [ MASK ] [SEP]");
    cr_assert_eq(ids2[2], 1996);
    cr_assert_str_eq(tok_piece(t, ids2[4]), "[", "[MASK] is special only if tokenizer.json lists it");
    tok_destroy(t);
    assert_no_leaks();
}

/* ------------------------------------------------------ thread safety */

typedef struct {
    const tok_t *t;
    int mismatches;
} worker_t;

static const char *sentences[] = {
    "The quick brown fox jumps over the lazy dog.", "Ça va? Très bien, merci!", "東京は日本の首都です。",
    "Emoji 😀 and [MASK] tokens", "supercalifragilisticexpialidocious",
};

static void *worker(void *arg) {
    worker_t *w = arg;
    int32_t ref[5][64], ids[64];
    int nref[5];
    char err[128];
    for (int i = 0; i < 5; i++)
        nref[i] =
            tok_encode(w->t, sentences[i], strlen(sentences[i]), ref[i], 64, NULL, err, sizeof err);
    for (int round = 0; round < 2000; round++) {
        int i = round % 5;
        int n = tok_encode(w->t, sentences[i], strlen(sentences[i]), ids, 64, NULL, err, sizeof err);
        if (n != nref[i] || memcmp(ids, ref[i], (size_t)n * sizeof *ids)) w->mismatches++;
    }
    return NULL;
}

Test(tokenizer, concurrent_encode_on_one_tokenizer) {
    tok_t *t = make_model_tok();
    pthread_t th[4];
    worker_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_t){t, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, worker, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].mismatches, 0, "thread %d saw different ids", i);
    }
    tok_destroy(t);
}

/* ------------------------------------------------------------------ CLI */

static const char *sluice_bin(void) {
    const char *b = getenv("SLUICE_BIN");
    b = b && *b ? b : "bin/sluice";
    cr_assert_eq(access(b, X_OK), 0, "no %s (build it with make, or set SLUICE_BIN)", b);
    return b;
}

/* Run a shell command; its exit status, stdout in *out (malloc'ed), stderr lines counted. */
static int run_cli(const char *args, char **out, int *err_lines, char *first_err, size_t cap) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s tokenize %s 2>%s/err.txt", sluice_bin(), args, tmpdir);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = 0, size = 1 << 16;
    *out = malloc(size);
    size_t got;
    while ((got = fread(*out + n, 1, size - n - 1, p)) > 0) {
        n += got;
        if (n + 1 == size) *out = realloc(*out, size *= 2);
    }
    (*out)[n] = 0;
    int st = pclose(p);
    snprintf(cmd, sizeof cmd, "%s/err.txt", tmpdir);
    FILE *e = fopen(cmd, "r");
    cr_assert_not_null(e);
    char line[1024];
    *err_lines = 0;
    first_err[0] = 0;
    while (fgets(line, sizeof line, e))
        if ((*err_lines)++ == 0) snprintf(first_err, cap, "%s", line);
    fclose(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(tokenizer_cli, prints_ids_and_pieces, .init = make_tmpdir, .fini = rm_tmpdir) {
    char model[2048], *out, first[1024];
    int nerr;
    const char *lines = "Hello, world!\nCafé 中文 [MASK]\n";
    const char *path = write_file("in.txt", lines, strlen(lines));
    snprintf(model, sizeof model, "--model '%s' --text 'A short one.' --file '%s'", model_dir(), path);
    int rc = run_cli(model, &out, &nerr, first, sizeof first);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, first);
    cr_assert_eq(nerr, 0, "stderr: %s", first);
    tok_t *t = make_model_tok();
    const char *inputs[] = {"A short one.", "Hello, world!", "Café 中文 [MASK]"};
    char *save = NULL, *line = strtok_r(out, "\n", &save);
    for (int i = 0; i < 3; i++, line = strtok_r(NULL, "\n", &save)) {
        cr_assert_not_null(line, "output line %d missing", i);
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        cr_assert_not_null(j, "line %d is not JSON: %s", i, line);
        cr_assert_eq(json_integer_value(json_object_get(j, "index")), i);
        int32_t ids[64];
        int n = encode(t, inputs[i], ids, 64);
        json_t *jids = json_object_get(j, "ids"), *pieces = json_object_get(j, "pieces");
        cr_assert_eq((int)json_array_size(jids), n, "line %d: %s", i, line);
        cr_assert_eq((int)json_array_size(pieces), n);
        for (int k = 0; k < n; k++) {
            cr_assert_eq(json_integer_value(json_array_get(jids, k)), ids[k]);
            cr_assert_str_eq(json_string_value(json_array_get(pieces, k)), tok_piece(t, ids[k]));
        }
        cr_assert(json_is_false(json_object_get(j, "truncated")));
        json_decref(j);
    }
    cr_assert_null(line, "extra output: %s", line);
    tok_destroy(t);
    free(out);
}

Test(tokenizer_cli, bad_input_exits_2_with_one_line, .init = make_tmpdir, .fini = rm_tmpdir) {
    static const struct { const char *args, *says; } cases[] = {
        {"--model /nonexistent-model --text hi", "/nonexistent-model/vocab.txt"},
        {"--file /nonexistent-input.txt", "/nonexistent-input.txt"},
        {"--text \"$(printf 'ok \\377')\"", "invalid UTF-8 at byte 3"},
        {"", "no input"},
        {"--bogus 1", "--bogus"},
        {"--text", "needs a value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out, first[1024];
        int nerr;
        int rc = run_cli(cases[i].args, &out, &nerr, first, sizeof first);
        cr_assert_eq(rc, 2, "`tokenize %s`: exit %d", cases[i].args, rc);
        cr_assert_eq(nerr, 1, "`tokenize %s`: %d lines on stderr", cases[i].args, nerr);
        cr_assert(strstr(first, cases[i].says), "`tokenize %s` said: %s", cases[i].args, first);
        cr_assert_str_eq(out, "", "no output on error");
        free(out);
    }
}

/* ------------------------------------------------------------ robustness */

/* Whatever the bytes: a clean error or [CLS] ... [SEP] with ids inside the vocab. */
static void check_invariants(const tok_t *t, const char *s, size_t len, int cap) {
    int32_t ids[300];
    char err[128];
    int untrunc = -1;
    int n = tok_encode(t, s, len, ids, cap, &untrunc, err, sizeof err);
    if (n == TOK_EUTF8) return;
    cr_assert(n >= 2 && n <= cap && n <= tok_max_len(t), "n %d (cap %d): %s", n, cap, err);
    cr_assert(untrunc >= n, "n_untruncated %d < %d", untrunc, n);
    cr_assert_eq(ids[0], tok_cls_id(t));
    cr_assert_eq(ids[n - 1], tok_sep_id(t));
    for (int i = 0; i < n; i++) cr_assert(ids[i] >= 0 && ids[i] < tok_vocab_size(t), "id %d", ids[i]);
}

Test(tokenizer, random_bytes_never_crash) {
    tok_t *t = make_model_tok();
    static const char *bits[] = {"a", "Z", " ", ".", "[MASK]", "[", "\xC3\xA9", "e\xCC\x81", "\xE4\xB8\xAD",
                                 "\xF0\x9F\x98\x80", "\xE2\x80\x8D", "\x00", "\t", "\xEF\xBF\xBD",
                                 "\xCC\x81", "\xF0\x9D\x85\xA5", "\xC4\xB0", "##", "\xFF", "\xE2\x82"};
    unsigned seed = 12345;
    char buf[1024];
    for (int round = 0; round < 20000; round++) {
        size_t len = 0, want = (size_t)(rand_r(&seed) % 200);
        if (round % 2) { /* raw bytes */
            for (; len < want; len++) buf[len] = (char)(rand_r(&seed) & 0xFF);
        } else { /* mostly valid pieces, sometimes cut */
            while (len < want) {
                const char *b = bits[rand_r(&seed) % (sizeof bits / sizeof bits[0])];
                size_t bl = b[0] ? strlen(b) : 1;
                memcpy(buf + len, b, bl);
                len += bl;
            }
        }
        check_invariants(t, buf, len, 2 + rand_r(&seed) % 298);
    }
    tok_destroy(t);
    assert_no_leaks();
}

Test(tokenizer, pathological_inputs) {
    tok_t *t = make_model_tok();
    size_t big = 1u << 20;
    char *s = malloc(big * 2);
    /* 1 MiB of words: cut to 256, counted in full */
    for (size_t i = 0; i < big; i++) s[i] = "ab. "[i % 4];
    int32_t ids[256];
    char err[128];
    int untrunc = 0;
    cr_assert_eq(tok_encode(t, s, big, ids, 256, &untrunc, err, sizeof err), 256);
    cr_assert_eq(untrunc, (int)(big / 4) * 2 + 2, "'ab' and '.' per 4 bytes");
    /* one 1 MiB word, 500k combining marks, and a run of marks HF would reorder */
    memset(s, 'x', big);
    cr_assert_eq(tok_encode(t, s, big, ids, 256, NULL, err, sizeof err), 3);
    cr_assert_eq(ids[1], tok_unk_id(t));
    for (size_t i = 0; i + 1 < big; i += 2) memcpy(s + i, "\xCC\x81", 2);
    cr_assert_eq(tok_encode(t, s, big, ids, 256, NULL, err, sizeof err), 2, "all stripped");
    size_t n = 1;
    s[0] = 'x';
    while (n + 4 <= big) { /* MUSICAL SYMBOL COMBINING STEM: Mc, ccc 216, kept */
        memcpy(s + n, "\xF0\x9D\x85\xA5", 4);
        n += 4;
    }
    cr_assert_eq(tok_encode(t, s, n, ids, 256, NULL, err, sizeof err), 3);
    cr_assert_eq(ids[1], tok_unk_id(t));
    free(s);
    tok_destroy(t);
    assert_no_leaks();
}
