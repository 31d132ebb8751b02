/* engine/chat.c - the known chat templates, rendered by hand (see chat.h).
 *
 * Recognition is by exact text: a template that differs in any byte may do
 * something else (another default system line, trimming, other roles), and
 * rendering it wrongly would quietly change what the model sees. Known texts
 * are listed below as copied from the model files.
 */
#include "engine/chat.h"

#include <stdio.h>
#include <string.h>

/* SmolLM2-135M-Instruct's tokenizer.chat_template (GGUF and tokenizer_config.json) */
static const char SMOLLM2_TEMPLATE[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/* Plain ChatML, as many ChatML models ship it */
static const char CHATML_TEMPLATE[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

static const char SMOLLM2_SYSTEM[] = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

chat_kind_t chat_recognise(const char *tmpl, size_t len) {
    if (!tmpl) return CHAT_NONE;
    if (len == sizeof SMOLLM2_TEMPLATE - 1 && memcmp(tmpl, SMOLLM2_TEMPLATE, len) == 0) return CHAT_SMOLLM2;
    if (len == sizeof CHATML_TEMPLATE - 1 && memcmp(tmpl, CHATML_TEMPLATE, len) == 0) return CHAT_CHATML;
    return CHAT_NONE;
}

chat_template_t chat_template_from_gguf(const gguf_file_t *f) {
    const char *s;
    size_t l;
    chat_template_t t = {CHAT_NONE};
    if (f && gguf_get_str(f, "tokenizer.chat_template", &s, &l) == GGUF_OK) t.kind = chat_recognise(s, l);
    return t;
}

const char *chat_kind_name(chat_kind_t k) {
    return k == CHAT_SMOLLM2 ? "smollm2" : k == CHAT_CHATML ? "chatml" : "none";
}

typedef struct {
    char *out;
    size_t cap, len;
} sbuf_t;

static void put(sbuf_t *b, const char *s, size_t n) {
    if (b->len < b->cap) {
        size_t room = b->cap - b->len;
        memcpy(b->out + b->len, s, n < room ? n : room);
    }
    b->len += n;
}

static void puts_(sbuf_t *b, const char *s) { put(b, s, strlen(s)); }

static void message(sbuf_t *b, const char *role, const char *content, size_t len) {
    puts_(b, "<|im_start|>");
    puts_(b, role);
    puts_(b, "\n");
    put(b, content, len);
    puts_(b, "<|im_end|>\n");
}

int chat_render(const chat_template_t *t, const chat_message_t *msgs, size_t n, int add_generation_prompt,
                char *out, size_t cap, size_t *len, char *err, size_t errlen) {
    *len = 0;
    if (err && errlen) err[0] = 0;
    if (!t || (t->kind != CHAT_SMOLLM2 && t->kind != CHAT_CHATML)) {
        if (err && errlen)
            snprintf(err, errlen, "the model's chat template is not one sluice knows; use plain completion");
        return CHAT_EUNSUPPORTED;
    }
    int bad_args = (n && !msgs) || (cap && !out);
    for (size_t i = 0; i < n && !bad_args; i++) {
        const char *r = msgs[i].role;
        if (!r || (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))) {
            if (err && errlen)
                snprintf(err, errlen, "chat: message %zu has role \"%.32s\"; expected system, user or assistant", i,
                         r ? r : "(null)");
            return CHAT_EINVAL;
        }
        bad_args = !msgs[i].content && msgs[i].content_len;
    }
    if (bad_args) {
        if (err && errlen) snprintf(err, errlen, "chat: bad arguments (NULL messages, content or output)");
        return CHAT_EINVAL;
    }
    sbuf_t b = {out, cap ? cap - 1 : 0, 0};
    for (size_t i = 0; i < n; i++) {
        if (i == 0 && t->kind == CHAT_SMOLLM2 && strcmp(msgs[0].role, "system") != 0)
            message(&b, "system", SMOLLM2_SYSTEM, sizeof SMOLLM2_SYSTEM - 1);
        message(&b, msgs[i].role, msgs[i].content ? msgs[i].content : "", msgs[i].content_len);
    }
    if (add_generation_prompt) puts_(&b, "<|im_start|>assistant\n");
    if (cap) out[b.len < cap - 1 ? b.len : cap - 1] = 0;
    *len = b.len;
    return CHAT_OK;
}

int chat_stop_ids(const tok_t *t, int32_t *ids, int max) {
    int32_t cand[3] = {tok_lookup(t, "<|im_end|>"), tok_lookup(t, "<|endoftext|>"), tok_special(t, "eos")};
    int n = 0;
    for (int i = 0; i < 3 && n < max; i++) {
        int have = cand[i] < 0;
        for (int j = 0; j < n; j++) have |= ids[j] == cand[i];
        if (!have) ids[n++] = cand[i];
    }
    return n;
}

int chat_has_control_text(const char *text, size_t n) {
    static const char *const ctl[] = {"<|im_start|>", "<|im_end|>", "<|endoftext|>"};
    for (size_t i = 0; i < sizeof ctl / sizeof ctl[0]; i++)
        if (memmem(text, n, ctl[i], strlen(ctl[i]))) return 1;
    return 0;
}
