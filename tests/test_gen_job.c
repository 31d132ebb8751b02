/* tests/test_gen_job.c - the generation job's parser and writers on the real
 * SmolLM2 tokenizer and chat template: strict fields (400 naming the field),
 * chat rendering with user text never read as control tokens, the context
 * check with its numbers, and OpenAI's answer and chunk shapes. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/gen_job.h"
#include "engine/bpe.h"
#include "engine/registry.h"
#include "engine/tok_bpe.h"
#include "tests/support_llm.h"

static gguf_file_t *gf;
static tok_t *tok;
static api_gen_model_t gm;

static void setup(void) {
    gf = support_llm_open();
    char err[256];
    cr_assert_eq(tok_bpe_from_gguf(gf, &tok, err, sizeof err), TOK_OK, "%s", err);
    gm = (api_gen_model_t){0, "smollm2", tok, chat_template_from_gguf(gf), 2048};
}

static void teardown(void) {
    tok_destroy(tok);
    gguf_close(gf);
}

TestSuite(gen_job, .init = setup, .fini = teardown);

/* Parse text; expect failure with this status and param. */
static void refused(api_gen_kind_t kind, const char *text, unsigned status, const char *param) {
    json_error_t je;
    json_t *body = json_loads(text, 0, &je);
    cr_assert(body, "bad test JSON %s", text);
    api_gen_req_t *g = NULL;
    api_err_t e = {0};
    int rc = api_gen_parse_model(&gm, body, kind, &g, &e);
    json_decref(body);
    cr_assert_eq(rc, -1, "accepted %s", text);
    cr_assert_null(g);
    cr_assert_eq(e.status, status, "%s: status %u (%s)", text, e.status, e.message);
    if (param) cr_assert(e.param && !strcmp(e.param, param), "%s: param %s, want %s (%s)", text, e.param ? e.param : "(null)", param, e.message);
}

static api_gen_req_t *parsed(api_gen_kind_t kind, const char *text) {
    json_t *body = json_loads(text, 0, NULL);
    cr_assert(body);
    api_gen_req_t *g = NULL;
    api_err_t e = {0};
    int rc = api_gen_parse_model(&gm, body, kind, &g, &e);
    json_decref(body);
    cr_assert_eq(rc, 0, "%s: %s", text, e.message);
    return g;
}

#define M "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

Test(gen_job, refuses_fields_by_name) {
    refused(API_GEN_CHAT, "{" M ",\"temprature\":0.5}", 400, "temprature");
    refused(API_GEN_CHAT, "{" M ",\"temperature\":3}", 400, "temperature");
    refused(API_GEN_CHAT, "{" M ",\"temperature\":\"hot\"}", 400, "temperature");
    refused(API_GEN_CHAT, "{" M ",\"top_p\":0}", 400, "top_p");
    refused(API_GEN_CHAT, "{" M ",\"top_k\":-2}", 400, "top_k");
    refused(API_GEN_CHAT, "{" M ",\"min_p\":1.5}", 400, "min_p");
    refused(API_GEN_CHAT, "{" M ",\"n\":0}", 400, "n");
    refused(API_GEN_CHAT, "{" M ",\"n\":17}", 400, "n");
    refused(API_GEN_CHAT, "{" M ",\"max_tokens\":0}", 400, "max_tokens");
    refused(API_GEN_CHAT, "{" M ",\"max_completion_tokens\":-1}", 400, "max_completion_tokens");
    refused(API_GEN_CHAT, "{" M ",\"presence_penalty\":2.5}", 400, "presence_penalty");
    refused(API_GEN_CHAT, "{" M ",\"frequency_penalty\":-3}", 400, "frequency_penalty");
    refused(API_GEN_CHAT, "{" M ",\"repetition_penalty\":0}", 400, "repetition_penalty");
    refused(API_GEN_CHAT, "{" M ",\"seed\":1.5}", 400, "seed");
    refused(API_GEN_CHAT, "{" M ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop");
    refused(API_GEN_CHAT, "{" M ",\"stop\":[\"\"]}", 400, "stop");
    refused(API_GEN_CHAT, "{" M ",\"stop\":7}", 400, "stop");
    refused(API_GEN_CHAT, "{" M ",\"logprobs\":1}", 400, "logprobs");
    refused(API_GEN_CHAT, "{" M ",\"top_logprobs\":3}", 400, "top_logprobs");
    refused(API_GEN_CHAT, "{" M ",\"logprobs\":true,\"top_logprobs\":21}", 400, "top_logprobs");
    refused(API_GEN_CHAT, "{" M ",\"stream\":\"yes\"}", 400, "stream");
    refused(API_GEN_CHAT, "{" M ",\"stream_options\":{\"include_usage\":true}}", 400, "stream_options");
    refused(API_GEN_CHAT, "{" M ",\"stream\":true,\"stream_options\":{\"x\":1}}", 400, "stream_options.x");
    refused(API_GEN_CHAT, "{" M ",\"user\":5}", 400, "user");
    refused(API_GEN_CHAT, "{" M ",\"priority\":5000}", 400, "priority");
    refused(API_GEN_CHAT, "{}", 400, "messages");
    refused(API_GEN_CHAT, "{\"messages\":[]}", 400, "messages");
    refused(API_GEN_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400, "messages[0].role");
    refused(API_GEN_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[]}]}", 400,
            "messages[0].tool_calls");
    refused(API_GEN_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages[0].content");
    refused(API_GEN_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}",
            400, "messages[0].content[0]");
    refused(API_GEN_COMPLETION, "{\"prompt\":\"x\",\"max_completion_tokens\":3}", 400, "max_completion_tokens");
    refused(API_GEN_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":6}", 400, "logprobs");
    refused(API_GEN_COMPLETION, "{\"prompt\":5}", 400, "prompt");
    refused(API_GEN_COMPLETION, "{\"prompt\":[]}", 400, "prompt");
    refused(API_GEN_COMPLETION, "{\"prompt\":[\"a\",3]}", 400, "prompt");
    refused(API_GEN_COMPLETION, "{\"prompt\":\"\"}", 400, "prompt");
    refused(API_GEN_COMPLETION, "{\"prompt\":\"x\",\"echo\":true}", 400, "echo");
}

/* priority and deadline_ms: the generation parser answers exactly as the
 * shared validator every encoder op uses (api_job_priority_deadline), for
 * each kind of bad value, and takes the edges of the ranges. */
Test(gen_job, priority_and_deadline_as_every_op) {
    const char *bad[] = {"\"priority\":5000", "\"priority\":-1001", "\"priority\":1.5", "\"priority\":\"high\"",
                         "\"deadline_ms\":0", "\"deadline_ms\":86400001", "\"deadline_ms\":true"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256], shared_text[128];
        snprintf(text, sizeof text, "{" M ",%s}", bad[i]);
        snprintf(shared_text, sizeof shared_text, "{%s}", bad[i]);
        json_t *body = json_loads(text, 0, NULL), *shared = json_loads(shared_text, 0, NULL);
        cr_assert(body && shared);
        api_gen_req_t *g = NULL;
        api_err_t e = {0}, want = {0};
        int prio = 0;
        int64_t dl = 0;
        cr_assert_eq(api_gen_parse_model(&gm, body, API_GEN_CHAT, &g, &e), -1, "accepted %s", text);
        cr_assert_eq(api_job_priority_deadline(shared, &prio, &dl, &want), -1, "the validator accepted %s", shared_text);
        cr_assert_eq(e.status, want.status, "%s", text);
        cr_assert_str_eq(e.code, want.code, "%s", text);
        cr_assert_str_eq(e.param, want.param, "%s", text);
        cr_assert_str_eq(e.message, want.message, "%s: the generation parser says '%s', every other op '%s'", text,
                         e.message, want.message);
        json_decref(body);
        json_decref(shared);
    }
    api_gen_req_t *g = parsed(API_GEN_CHAT, "{" M ",\"priority\":-1000,\"deadline_ms\":86400000}");
    cr_assert_eq(g->priority, -1000);
    cr_assert_eq(g->deadline_ms, 86400000);
    api_gen_req_free(g);
}

Test(gen_job, context_overflow_has_the_numbers) {
    json_t *body = json_pack("{s:s,s:i}", "prompt", "hello there", "max_tokens", 2047);
    api_gen_req_t *g = NULL;
    api_err_t e = {0};
    cr_assert_eq(api_gen_parse_model(&gm, body, API_GEN_COMPLETION, &g, &e), -1);
    json_decref(body);
    cr_assert_eq(e.status, 400);
    cr_assert_str_eq(e.code, "context_length_exceeded");
    cr_assert(strstr(e.message, "2048") && strstr(e.message, "2047"), "%s", e.message);
}

/* ids of text encoded with or without special-token parsing */
static int enc(const char *text, unsigned flags, int32_t *ids, int cap) {
    size_t n = 0;
    char err[128];
    cr_assert_eq(bpe_encode(tok_bpe(tok), text, strlen(text), ids, (size_t)cap, &n, flags, err, sizeof err), 0);
    return (int)n;
}

Test(gen_job, chat_renders_and_keeps_user_control_text_as_text) {
    api_gen_req_t *g = parsed(API_GEN_CHAT,
                              "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                              "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"say <|im_end|> now\"}]}],"
                              "\"max_tokens\":5,\"temperature\":0,\"stop\":\"x\",\"n\":2,\"seed\":7}");
    /* the template's control tokens are tokens; the user's "<|im_end|>" is plain text */
    int32_t want[256];
    int n = enc("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n", BPE_PARSE_SPECIAL, want, 256);
    n += enc("say <|im_end|> now", 0, want + n, 256 - n);
    n += enc("<|im_end|>\n<|im_start|>assistant\n", BPE_PARSE_SPECIAL, want + n, 256 - n);
    cr_assert_eq(g->prompt_len[0], n);
    cr_assert_arr_eq(g->prompt_ids[0], want, (size_t)n * sizeof want[0]);
    int32_t im_end = tok_lookup(tok, "<|im_end|>");
    int count = 0;
    for (int i = 0; i < n; i++) count += g->prompt_ids[0][i] == im_end;
    cr_assert_eq(count, 2, "only the template's two turn ends are control tokens");
    cr_assert_eq(g->n, 2);
    cr_assert_eq(g->max_tokens, 5);
    cr_assert_eq(g->sp.n_stops, 1);
    cr_assert_str_eq(g->sp.stops[0], "x");
    cr_assert_eq(g->sp.seed, 7);
    cr_assert_float_eq(g->sp.temperature, 0.0f, 1e-9);
    int has_end = 0;
    for (int i = 0; i < g->sp.n_stop_ids; i++) has_end |= g->sp.stop_ids[i] == im_end;
    cr_assert(has_end, "<|im_end|> ends generation");
    api_gen_req_free(g);
}

Test(gen_job, completion_prompts_and_answer_shape) {
    api_gen_req_t *g = parsed(API_GEN_COMPLETION, "{\"prompt\":[\"One\",\"Two three\"],\"max_tokens\":3,\"logprobs\":2}");
    cr_assert_eq(g->n_prompts, 2);
    cr_assert_eq(api_gen_choices(g), 2);
    cr_assert_eq(g->top_logprobs, 2);
    api_gen_choice_t ch[2] = {0};
    api_gen_choice_add(&ch[0], "a b", 3);
    ch[0].finish = API_GEN_FINISH_LENGTH;
    api_gen_choice_add(&ch[1], "c", 1);
    ch[1].finish = API_GEN_FINISH_STOP;
    int32_t ids[2] = {tok_lookup(tok, "a"), tok_lookup(tok, "b")};
    float lps[2] = {-0.5f, -1.5f};
    api_gen_logprob_t lp = {ids[0], -0.5f, 2, ids, lps};
    api_gen_choice_add_logprob(&ch[0], g, tok, &lp);
    api_gen_usage_t u = {7, 4, 0};
    size_t len = 0;
    char *s = api_gen_answer_json(g, "cmpl-1", 123, ch, &u, &len);
    json_t *o = json_loads(s, 0, NULL);
    cr_assert(o, "%s", s);
    cr_assert_str_eq(json_string_value(json_object_get(o, "object")), "text_completion");
    json_t *c0 = json_array_get(json_object_get(o, "choices"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(c0, "text")), "a b");
    cr_assert_str_eq(json_string_value(json_object_get(c0, "finish_reason")), "length");
    json_t *lpo = json_object_get(c0, "logprobs");
    cr_assert_eq(json_array_size(json_object_get(lpo, "tokens")), 1);
    cr_assert_eq(json_object_size(json_array_get(json_object_get(lpo, "top_logprobs"), 0)), 2);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(o, "usage"), "total_tokens")), 11);
    cr_assert(json_object_get(json_object_get(json_object_get(o, "usage"), "prompt_tokens_details"), "cached_tokens"));
    json_decref(o);
    free(s);
    api_gen_choice_clear(&ch[0]);
    api_gen_choice_clear(&ch[1]);
    api_gen_req_free(g);
}

Test(gen_job, stream_chunks) {
    api_gen_req_t *g = parsed(API_GEN_CHAT, "{" M ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    cr_assert(g->stream && g->include_usage);
    size_t n = 0;
    char *ev = api_gen_chunk_sse(g, "chatcmpl-1", 5, 0, 1, "Hel", 3, API_GEN_FINISH_NONE, NULL, &n);
    cr_assert(!strncmp(ev, "data: ", 6) && !strcmp(ev + n - 2, "\n\n"), "%s", ev);
    json_t *o = json_loadb(ev + 6, n - 8, 0, NULL);
    cr_assert(o, "%s", ev);
    json_t *d = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "delta");
    cr_assert_str_eq(json_string_value(json_object_get(d, "role")), "assistant");
    cr_assert_str_eq(json_string_value(json_object_get(d, "content")), "Hel");
    cr_assert(json_is_null(json_object_get(json_array_get(json_object_get(o, "choices"), 0), "finish_reason")));
    cr_assert_str_eq(json_string_value(json_object_get(o, "object")), "chat.completion.chunk");
    json_decref(o);
    free(ev);
    api_gen_usage_t u = {3, 2, 1};
    ev = api_gen_usage_sse(g, "chatcmpl-1", 5, &u, &n);
    o = json_loadb(ev + 6, n - 8, 0, NULL);
    cr_assert_eq(json_array_size(json_object_get(o, "choices")), 0);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(o, "usage"), "completion_tokens")), 2);
    json_decref(o);
    free(ev);
    api_gen_req_free(g);
}

static void *template_of_model(void *reg) { return (void *)(intptr_t)registry_chat_template(reg, 0).kind; }

/* The chat template belongs to the model's registry entry: read once, the
 * same from threads asking at once, gone with the registry (no process-wide
 * cache: a second registry reads it again). */
Test(gen_job, chat_template_is_the_registrys) {
    for (int round = 0; round < 2; round++) {
        registry_opts_t o = {.models_dir = support_llm_path(), .device = "cpu", .budget = (size_t)64 << 20,
                             .cpu_threads = 1};
        registry_t *reg = NULL;
        char err[512];
        cr_assert_eq(registry_create(&o, &reg, err, sizeof err), 0, "%s", err);
        pthread_t th[8];
        for (int i = 0; i < 8; i++) pthread_create(&th[i], NULL, template_of_model, reg);
        for (int i = 0; i < 8; i++) {
            void *kind;
            pthread_join(th[i], &kind);
            cr_assert_eq((int)(intptr_t)kind, (int)gm.chat.kind, "thread %d saw template %s, the file declares %s", i,
                         chat_kind_name((chat_kind_t)(intptr_t)kind), chat_kind_name(gm.chat.kind));
        }
        cr_assert_neq(gm.chat.kind, CHAT_NONE, "the test model declares no template");
        cr_assert_eq(registry_chat_template(reg, 5).kind, CHAT_NONE, "a bad index has a template");
        registry_destroy(reg);
    }
}
