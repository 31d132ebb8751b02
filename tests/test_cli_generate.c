/* tests/test_cli_generate.c - `sluice generate` and `sluice chat` end to end
 * on the real model: greedy output equal to transformers' greedy
 * continuation in the fixture (decoded by our tokenizer), a stop string cut
 * out of the stream, a chat answer ending at <|im_end|>, an interactive
 * conversation reusing its cache, and bad options refused with exit code 2.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/bpe.h"
#include "engine/gguf.h"
#include "tests/support_llm.h"
#include "tests/support_tmpdir.h"

#define LLM_PATH support_llm_path() /* $SLUICE_TEST_LLM or the file `make model` fetches */
#define FIX_JSON "tests/fixtures/llama_fixture.json"

TestSuite(cli_generate, .init = tmpdir_init, .fini = tmpdir_fini, .timeout = 300);

static const char *bin(void) { return getenv("SLUICE_BIN") ? getenv("SLUICE_BIN") : "bin/sluice"; }

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    char *buf = malloc(1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* Run `sluice ARGS` (a shell fragment) with optional stdin text; returns the
 * exit code, stdout and stderr (malloc'd). */
static int run(const char *args, const char *input, char **out, char **errout) {
    if (access(LLM_PATH, R_OK) != 0) cr_skip_test("%s is missing (run `make model`)", LLM_PATH);
    char in_path[512], cmd[4096];
    snprintf(in_path, sizeof in_path, "%s", tmpdir_file("in.txt"));
    FILE *f = fopen(in_path, "w");
    cr_assert_not_null(f);
    if (input) fputs(input, f);
    fclose(f);
    char out_path[512], err_path[512];
    snprintf(out_path, sizeof out_path, "%s", tmpdir_file("out.txt"));
    snprintf(err_path, sizeof err_path, "%s", tmpdir_file("err.txt"));
    /* the subcommand, then --model (a case may name another model after it) */
    int sub = (int)strcspn(args, " ");
    snprintf(cmd, sizeof cmd, "%s %.*s --model '%s'%s%s <%s >%s 2>%s", bin(), sub, args, LLM_PATH, args + sub,
             strstr(args, "--threads") ? "" : " --threads 2", in_path, out_path, err_path);
    int st = system(cmd);
    cr_assert(WIFEXITED(st), "%s did not exit", cmd);
    *out = slurp(out_path);
    *errout = slurp(err_path);
    return WEXITSTATUS(st);
}

/* transformers' greedy continuation of fixture prompt i, decoded by our
 * tokenizer: the first n tokens, or up to (not including) a stop id. */
static char *expected(int i, int n, int stop_at_end) {
    json_error_t je;
    json_t *root = json_load_file(FIX_JSON, 0, &je);
    cr_assert_not_null(root, "%s", je.text);
    json_t *g = json_object_get(json_array_get(json_object_get(root, "prompts"), i), "greedy");
    int32_t ids[64];
    int k = 0;
    for (; k < n && k < (int)json_array_size(g); k++) {
        ids[k] = (int32_t)json_integer_value(json_array_get(g, k));
        if (stop_at_end && (ids[k] == 2 || ids[k] == 0)) break;
    }
    json_decref(root);
    gguf_file_t *f;
    bpe_t *b;
    char err[256];
    cr_assert_eq(gguf_open(LLM_PATH, &f, err, sizeof err), GGUF_OK, "%s", err);
    cr_assert_eq(bpe_create_from_gguf(f, &b, err, sizeof err), BPE_OK, "%s", err);
    char *text = malloc(4096);
    size_t len = 0;
    cr_assert_eq(bpe_decode(b, ids, (size_t)k, text, 4095, &len, BPE_SKIP_SPECIAL), BPE_OK);
    text[len] = 0;
    bpe_destroy(b);
    gguf_close(f);
    return text;
}

Test(cli_generate, greedy_completion_equals_transformers) {
    char *out, *err;
    int rc = run("generate --prompt 'The capital of France is' --max-tokens 20", NULL, &out, &err);
    cr_assert_eq(rc, 0, "%s", err);
    char *want = expected(1, 20, 0); /* fixture prompt 1 is this text */
    size_t wl = strlen(want);
    cr_assert(strncmp(out, want, wl) == 0 && !strcmp(out + wl, "\n"), "got [%s] want [%s]", out, want);
    cr_assert(strstr(err, "prompt 5 tokens") && strstr(err, "generated 20 tokens") && strstr(err, "tokens/s") &&
                  strstr(err, "stopped by length"),
              "%s", err);
    free(out), free(err), free(want);
}

Test(cli_generate, stop_string_is_cut_from_the_stream) {
    char *out, *err;
    int rc = run("generate --prompt 'The capital of France is' --max-tokens 20 --stop 'answer is'", NULL, &out, &err);
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_str_eq(out, " Paris.\n\nThe \n");
    cr_assert(strstr(err, "stopped by stop string"), "%s", err);
    free(out), free(err);
}

Test(cli_generate, chat_answer_ends_at_im_end) {
    char *out, *err;
    int rc = run("chat --user 'What is the capital of France?' --max-tokens 40", NULL, &out, &err);
    cr_assert_eq(rc, 0, "%s", err);
    char *want = expected(16, 48, 1); /* fixture prompt 16: this question in the model's template */
    size_t wl = strlen(want);
    cr_assert(strncmp(out, want, wl) == 0 && !strcmp(out + wl, "\n"), "got [%s] want [%s]", out, want);
    cr_assert(strstr(err, "prompt 37 tokens") && strstr(err, "stopped by end token"), "%s", err);
    free(out), free(err), free(want);
}

Test(cli_generate, interactive_chat_reuses_the_cache) {
    char *out, *err;
    int rc = run("chat --max-tokens 16", "What is the capital of France?\nAnd of Italy?\n", &out, &err);
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert(!strncmp(out, "The capital of France is Paris.\n", 32), "%s", out);
    /* the second turn's prompt starts with the first: its ids come from the cache */
    const char *second = strstr(err, "\nsluice: prompt");
    cr_assert_not_null(second, "%s", err);
    cr_assert(!strstr(second, "(0 from cache"), "%s", err);
    free(out), free(err);
}

Test(cli_generate, same_seed_same_text_on_any_thread_count) {
    char *a, *b, *c, *err;
    const char *args = "generate --prompt 'Once upon a time,' --max-tokens 24 --temperature 0.9 --top-p 0.95";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --seed 7 --threads 1", args);
    cr_assert_eq(run(cmd, NULL, &a, &err), 0, "%s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "%s --seed 7 --threads 2", args);
    cr_assert_eq(run(cmd, NULL, &b, &err), 0, "%s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "%s --seed 8 --threads 2", args);
    cr_assert_eq(run(cmd, NULL, &c, &err), 0, "%s", err);
    free(err);
    cr_assert_str_eq(a, b);
    cr_assert_str_neq(a, c, "seeds 7 and 8 gave the same text: %s", a);
    free(a), free(b), free(c);
}

Test(cli_generate, bad_options_exit_2) {
    static const char *const cases[][2] = {
        {"generate --prompt hi --temperature warm", "wants a number"},
        {"generate --prompt hi --top-p 0", "top_p"},
        {"generate --max-tokens 3", "--prompt"},
        {"generate --prompt 'one two three four five six' --ctx 4", "context"},
        {"generate --prompt hi --max-tokens 5000 --ctx 64", "max_tokens"},
        {"generate --prompt hi --model /nonexistent.gguf", "/nonexistent.gguf"},
        {"chat --user 'x<|im_end|>y'", "control token"},
        {"generate --prompt hi --bogus 1", "unknown option"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out, *err;
        int rc = run(cases[i][0], NULL, &out, &err);
        cr_assert_eq(rc, 2, "%s: exit %d (%s)", cases[i][0], rc, err);
        cr_assert(strstr(err, cases[i][1]), "%s: %s", cases[i][0], err);
        free(out), free(err);
    }
}
