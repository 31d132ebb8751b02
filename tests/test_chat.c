/* tests/test_chat.c - chat templates rendered in C against transformers'
 * apply_chat_template (tests/fixtures/chat_render.jsonl, made by
 * tests/tools/gen_chat_fixture.py): the same text for every stored
 * conversation, and, for the model's own template, the same prompt ids
 * through engine/bpe. Then recognition and the errors of engine/chat.h.
 * Model: $SLUICE_TEST_LLM (default the SmolLM2 GGUF under models/).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/bpe.h"
#include "engine/chat.h"
#include "engine/gguf.h"
#include "tests/support_llm.h"

#define FIXTURE "tests/fixtures/chat_render.jsonl"

Test(chat, model_template_recognised) {
    gguf_file_t *f = support_llm_open();
    chat_template_t t = chat_template_from_gguf(f);
    cr_assert_eq(t.kind, CHAT_SMOLLM2, "kind %s", chat_kind_name(t.kind));
    cr_assert_eq(chat_template_from_gguf(NULL).kind, CHAT_NONE);
    gguf_close(f);
}

Test(chat, renders_like_transformers, .timeout = 60) {
    gguf_file_t *f = support_llm_open();
    chat_template_t model_t = chat_template_from_gguf(f), chatml = {CHAT_CHATML};
    char err[512];
    bpe_t *b = NULL;
    cr_assert_eq(bpe_create_from_gguf(f, &b, err, sizeof err), BPE_OK, "%s", err);
    FILE *fx = fopen(FIXTURE, "r");
    cr_assert_not_null(fx, "cannot open %s (run from the repository root)", FIXTURE);
    char *line = NULL;
    size_t lcap = 0;
    int n = 0;
    while (getline(&line, &lcap, fx) > 0) {
        n++;
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        cr_assert_not_null(j, "line %d: %s", n, je.text);
        const char *tname = json_string_value(json_object_get(j, "template"));
        json_t *jm = json_object_get(j, "messages");
        size_t nm = json_array_size(jm);
        chat_message_t msgs[16];
        cr_assert_leq(nm, 16);
        for (size_t i = 0; i < nm; i++) {
            json_t *o = json_array_get(jm, i);
            msgs[i].role = json_string_value(json_object_get(o, "role"));
            msgs[i].content = json_string_value(json_object_get(o, "content"));
            msgs[i].content_len = json_string_length(json_object_get(o, "content"));
        }
        int gen = json_is_true(json_object_get(j, "add_generation_prompt"));
        const char *want = json_string_value(json_object_get(j, "text"));
        const chat_template_t *t = strcmp(tname, "smollm2") == 0 ? &model_t : &chatml;
        size_t len;
        cr_assert_eq(chat_render(t, msgs, nm, gen, NULL, 0, &len, err, sizeof err), CHAT_OK, "%s", err);
        char *out = malloc(len + 1);
        size_t len2;
        cr_assert_eq(chat_render(t, msgs, nm, gen, out, len + 1, &len2, err, sizeof err), CHAT_OK, "%s", err);
        cr_assert_eq(len2, len);
        cr_assert_str_eq(out, want, "line %d (%s)", n, tname);
        json_t *jids = json_object_get(j, "ids");
        if (jids) {
            int32_t ids[1024];
            size_t ni;
            cr_assert_eq(bpe_encode(b, out, len, ids, 1024, &ni, BPE_PARSE_SPECIAL, err, sizeof err), BPE_OK);
            cr_assert_eq(ni, json_array_size(jids), "line %d: %zu ids, HF %zu", n, ni, json_array_size(jids));
            for (size_t i = 0; i < ni; i++)
                cr_assert_eq(ids[i], json_integer_value(json_array_get(jids, i)), "line %d id %zu", n, i);
        }
        free(out);
        json_decref(j);
    }
    cr_assert_geq(n, 20, "only %d cases in %s", n, FIXTURE);
    free(line);
    fclose(fx);
    bpe_destroy(b);
    gguf_close(f);
}

Test(chat, truncation_empty_and_errors) {
    chat_template_t t = {CHAT_SMOLLM2};
    chat_message_t m[2] = {{"user", "hi", 2}, {"tool", "x", 1}};
    char out[16], err[256];
    size_t len;
    /* truncated output is NUL-terminated and *len is the full length */
    cr_assert_eq(chat_render(&t, m, 1, 1, out, sizeof out, &len, err, sizeof err), CHAT_OK);
    cr_assert_gt(len, sizeof out);
    cr_assert_eq(strlen(out), sizeof out - 1);
    cr_assert(strncmp(out, "<|im_start|>sys", 15) == 0);
    /* no messages: only the generation prompt (no default system line) */
    cr_assert_eq(chat_render(&t, NULL, 0, 1, out, sizeof out, &len, err, sizeof err), CHAT_OK);
    cr_assert_eq(len, strlen("<|im_start|>assistant\n"));
    cr_assert_eq(chat_render(&t, NULL, 0, 0, out, sizeof out, &len, err, sizeof err), CHAT_OK);
    cr_assert_str_eq(out, "");
    /* an unknown role, NULL content with a length */
    cr_assert_eq(chat_render(&t, m, 2, 0, out, sizeof out, &len, err, sizeof err), CHAT_EINVAL);
    cr_assert(strstr(err, "\"tool\""), "%s", err);
    chat_message_t bad = {"user", NULL, 3};
    cr_assert_eq(chat_render(&t, &bad, 1, 0, out, sizeof out, &len, err, sizeof err), CHAT_EINVAL);
    /* a model without a known template: plain completion only */
    chat_template_t none = {CHAT_NONE};
    cr_assert_eq(chat_render(&none, m, 1, 1, out, sizeof out, &len, err, sizeof err), CHAT_EUNSUPPORTED);
    cr_assert(strstr(err, "plain completion"), "%s", err);
}

Test(chat, recognition_is_exact) {
    gguf_file_t *f = support_llm_open();
    const char *s;
    size_t l;
    cr_assert_eq(gguf_get_str(f, "tokenizer.chat_template", &s, &l), GGUF_OK);
    cr_assert_eq(chat_recognise(s, l), CHAT_SMOLLM2);
    char *c = malloc(l + 1);
    memcpy(c, s, l);
    c[l] = 0;
    cr_assert_eq(chat_recognise(c, l - 1), CHAT_NONE, "a cut template is not the known one");
    char *p = strstr(c, "SmolLM");
    cr_assert_not_null(p);
    p[0] = 'X'; /* another default system line */
    cr_assert_eq(chat_recognise(c, l), CHAT_NONE);
    cr_assert_eq(chat_recognise(NULL, 0), CHAT_NONE);
    cr_assert_eq(chat_recognise("", 0), CHAT_NONE);
    free(c);
    gguf_close(f);
}
