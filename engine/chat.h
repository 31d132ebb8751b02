/* engine/chat.h - chat templates rendered in C: messages -> prompt text.
 *
 * A model's chat template is a Jinja program (`tokenizer.chat_template` in a
 * GGUF); we do not run Jinja. Instead the template text is compared with the
 * templates we know, and a known one is rendered by hand here, byte for byte
 * the same as transformers' apply_chat_template (tested against it on stored
 * conversations, tests/fixtures/chat_render.jsonl). Known templates:
 *   CHAT_SMOLLM2  SmolLM2-Instruct's ChatML: every message is
 *                 "<|im_start|>ROLE\nCONTENT<|im_end|>\n"; when the first
 *                 message is not a system message a default system message
 *                 comes first ("You are a helpful AI assistant named SmolLM,
 *                 trained by Hugging Face"); the generation prompt is
 *                 "<|im_start|>assistant\n".
 *   CHAT_CHATML   the same without the default system message.
 * A model whose template is missing or unknown gets CHAT_NONE: it can still
 * do plain completion, and chat_render refuses with CHAT_EUNSUPPORTED.
 * No BOS is added (SmolLM2's add_bos_token is false; the template has none).
 * The rendered text holds control-token strings ("<|im_start|>"): encode it
 * with BPE_PARSE_SPECIAL. Content is copied as is, so content that itself
 * contains "<|im_end|>" would be read as a control token: callers that take
 * content from users should encode without that flag for content, or refuse.
 *
 * Ownership: chat_template_t is a plain value (no allocation); chat_render
 * writes into the caller's buffer.
 */
#ifndef SLUICE_CHAT_H
#define SLUICE_CHAT_H

#include <stddef.h>

#include <stdint.h>

#include "engine/gguf.h"
#include "engine/tok.h"

enum { CHAT_OK = 0, CHAT_EINVAL = -5, CHAT_EUNSUPPORTED = -6 };

typedef enum { CHAT_NONE = 0, CHAT_SMOLLM2 = 1, CHAT_CHATML = 2 } chat_kind_t;

typedef struct {
    chat_kind_t kind;
} chat_template_t;

typedef struct {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* content_len bytes, need not be NUL-terminated */
    size_t content_len;
} chat_message_t;

/* Which known template this Jinja text is (CHAT_NONE when none). */
chat_kind_t chat_recognise(const char *tmpl, size_t len);

/* The template a GGUF declares: CHAT_NONE when it has no
 * tokenizer.chat_template or an unknown one. Never fails. */
chat_template_t chat_template_from_gguf(const gguf_file_t *f);

const char *chat_kind_name(chat_kind_t k); /* "smollm2", "chatml", "none" */

/* Render n messages (n may be 0), then the generation prompt when
 * add_generation_prompt. *len receives the full length; min(*len + 1, cap)
 * bytes are written, NUL-terminated when cap > 0 (out may be NULL when cap is
 * 0: a size query). Returns CHAT_OK, CHAT_EUNSUPPORTED (no known template,
 * message in err) or CHAT_EINVAL (unknown role, NULL content with a length). */
int chat_render(const chat_template_t *t, const chat_message_t *msgs, size_t n, int add_generation_prompt,
                char *out, size_t cap, size_t *len, char *err, size_t errlen);

/* The ids that end a turn in t's vocabulary (<|im_end|>, <|endoftext|>, the
 * eos role), each once, at most max: a request's stop ids. Returns the count. */
int chat_stop_ids(const tok_t *t, int32_t *ids, int max);

/* 1 when text (n bytes) holds a control token's text (<|im_start|>,
 * <|im_end|>, <|endoftext|>): content from users that would be read as one. */
int chat_has_control_text(const char *text, size_t n);

#endif
