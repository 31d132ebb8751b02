/* api/gen_job.c - the generation operation's request parser and answer
 * writers (api/gen_job.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/gen_job.h"
#include "engine/bpe.h"
#include "engine/chat.h"
#include "engine/tok_bpe.h"
#include "kernels/util.h"

/* ---------------------------------------------------------------- ids */

typedef struct {
    int32_t *ids;
    int n, cap;
} idbuf_t;

/* Encode text, special-token text parsed only when special: 0, or -1 with *e. */
static int encode_into(const tok_t *tok, idbuf_t *b, const char *text, size_t len, int special, api_err_t *e,
                       const char *param) {
    if (!len) return 0;
    const bpe_t *bpe = strcmp(tok_kind(tok), "bpe") ? NULL : tok_bpe(tok);
    char err[256];
    size_t n = 0;
    if (bpe) {
        if (bpe_encode(bpe, text, len, NULL, 0, &n, special ? BPE_PARSE_SPECIAL : 0, err, sizeof err))
            return api_err_set(e, 400, "invalid_value", param, "%s: %s", param, err);
    } else {
        int un = 0;
        if (tok_encode(tok, text, len, NULL, 0, &un, err, sizeof err) < 0)
            return api_err_set(e, 400, "invalid_value", param, "%s: %s", param, err);
        n = (size_t)un;
    }
    if (b->n + (int64_t)n > (1 << 24)) return api_err_set(e, 400, "context_length_exceeded", param, "input is too long");
    if (b->n + (int)n > b->cap) {
        int cap = b->cap ? b->cap : 256;
        while (cap < b->n + (int)n) cap *= 2;
        int32_t *p = realloc(b->ids, (size_t)cap * sizeof *p);
        if (!p) return api_err_set(e, 503, "out_of_memory", NULL, "out of memory");
        b->ids = p;
        b->cap = cap;
    }
    size_t got = 0;
    if (bpe) {
        bpe_encode(bpe, text, len, b->ids + b->n, n, &got, special ? BPE_PARSE_SPECIAL : 0, err, sizeof err);
    } else {
        int r = tok_encode(tok, text, len, b->ids + b->n, (int)n, NULL, err, sizeof err);
        got = r > 0 ? (size_t)r : 0;
    }
    b->n += (int)(got < n ? got : n);
    return 0;
}

/* ---------------------------------------------------------------- field checks */

static int get_number(json_t *body, const char *name, double lo, double hi, double *out, api_err_t *e) {
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return api_err_set(e, 400, "invalid_value", name, "%s must be a number from %g to %g", name, lo, hi);
    *out = json_number_value(v);
    return 0;
}

static int get_bool(json_t *body, const char *name, int *out, api_err_t *e) {
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return api_err_set(e, 400, "invalid_type", name, "%s must be true or false", name);
    *out = json_is_true(v);
    return 0;
}

static const char *const CHAT_FIELDS[] = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p", "seed",
    "stop", "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "logprobs", "top_logprobs", "user",
    "stream", "stream_options", "priority", "deadline_ms", NULL};
static const char *const COMPLETION_FIELDS[] = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "n",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "logprobs", "user", "stream", "stream_options",
    "priority", "deadline_ms", NULL};

static int known(const char *const *list, const char *k) {
    for (; *list; list++)
        if (!strcmp(*list, k)) return 1;
    return 0;
}

/* ---------------------------------------------------------------- prompts */

/* The text of a message's content: a string, or an array of text parts
 * joined by "\n" (as vLLM joins them). Malloc'd into *out. */
static int content_text(json_t *c, int i, char **out, size_t *len, api_err_t *e) {
    if (json_is_string(c)) {
        *len = json_string_length(c);
        *out = malloc(*len + 1);
        if (!*out) return api_err_set(e, 503, "out_of_memory", NULL, "out of memory");
        memcpy(*out, json_string_value(c), *len + 1);
        return 0;
    }
    if (!json_is_array(c))
        return api_err_set(e, 400, "invalid_type", api_err_param(e, "messages[%d].content", i),
                           "messages[%d].content must be a string or an array of text parts", i);
    size_t total = 0, k;
    json_t *p;
    json_array_foreach(c, k, p) {
        json_t *t = json_object_get(p, "text"), *ty = json_object_get(p, "type");
        if (!json_is_object(p) || !json_is_string(ty) || strcmp(json_string_value(ty), "text") || !json_is_string(t) ||
            json_object_size(p) != 2)
            return api_err_set(e, 400, "invalid_value", api_err_param(e, "messages[%d].content[%zu]", i, k),
                               "messages[%d].content[%zu] must be {\"type\":\"text\",\"text\":STRING} (only text parts)",
                               i, k);
        total += json_string_length(t) + 1;
    }
    *out = malloc(total + 1);
    if (!*out) return api_err_set(e, 503, "out_of_memory", NULL, "out of memory");
    size_t w = 0;
    json_array_foreach(c, k, p) {
        json_t *t = json_object_get(p, "text");
        if (k) (*out)[w++] = '\n';
        memcpy(*out + w, json_string_value(t), json_string_length(t));
        w += json_string_length(t);
    }
    (*out)[w] = '\0';
    *len = w;
    return 0;
}

/* A sentinel byte stands for each message's content in the rendered
 * template, so the template's text and the users' text are encoded apart. */
#define SENTINEL '\x01'

static int chat_prompt(const tok_t *tok, const chat_template_t *tmpl, json_t *msgs, idbuf_t *b, api_err_t *e) {
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return api_err_set(e, 400, "invalid_value", "messages", "messages must be a non-empty array");
    size_t n = json_array_size(msgs);
    if (n > API_GEN_MAX_MESSAGES)
        return api_err_set(e, 400, "invalid_value", "messages", "messages holds %zu entries; at most %d", n,
                           API_GEN_MAX_MESSAGES);
    chat_message_t cm[API_GEN_MAX_MESSAGES];
    char *texts[API_GEN_MAX_MESSAGES] = {0};
    size_t lens[API_GEN_MAX_MESSAGES] = {0};
    static const char sentinel[1] = {SENTINEL};
    char *rendered = NULL;
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m)) {
            api_err_set(e, 400, "invalid_type", api_err_param(e, "messages[%zu]", i), "messages[%zu] must be an object", i);
            goto out;
        }
        const char *k;
        json_t *v;
        json_object_foreach(m, k, v) {
            if (strcmp(k, "role") && strcmp(k, "content") && strcmp(k, "name")) {
                api_err_set(e, 400, "unknown_parameter", api_err_param(e, "messages[%zu].%s", i, k),
                            "messages[%zu]: unknown field '%s'", i, k);
                goto out;
            }
        }
        json_t *role = json_object_get(m, "role");
        const char *r = json_is_string(role) ? json_string_value(role) : "";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")) {
            api_err_set(e, 400, "invalid_value", api_err_param(e, "messages[%zu].role", i),
                        "messages[%zu].role must be \"system\", \"user\" or \"assistant\"", i);
            goto out;
        }
        json_t *name = json_object_get(m, "name");
        if (name && !json_is_string(name)) {
            api_err_set(e, 400, "invalid_type", api_err_param(e, "messages[%zu].name", i), "messages[%zu].name must be a string", i);
            goto out;
        }
        if (content_text(json_object_get(m, "content"), (int)i, &texts[i], &lens[i], e)) goto out;
        if (memchr(texts[i], SENTINEL, lens[i])) { /* U+0001 has no token in byte-level BPE vocabularies we know */
            api_err_set(e, 400, "invalid_value", "messages", "messages[%zu].content holds a U+0001 control character", i);
            goto out;
        }
        cm[i] = (chat_message_t){.role = r, .content = sentinel, .content_len = 1};
    }
    size_t len = 0;
    char err[256];
    if (chat_render(tmpl, cm, n, 1, NULL, 0, &len, err, sizeof err)) {
        api_err_set(e, 400, "unsupported_model", "model", "this model cannot chat: %s; use /v1/completions", err);
        goto out;
    }
    rendered = malloc(len + 1);
    if (!rendered) {
        api_err_set(e, 503, "out_of_memory", NULL, "out of memory");
        goto out;
    }
    chat_render(tmpl, cm, n, 1, rendered, len + 1, &len, err, sizeof err);
    size_t at = 0, mi = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && rendered[i] != SENTINEL) continue;
        if (encode_into(tok, b, rendered + at, i - at, 1, e, "messages")) goto out;
        if (i < len) {
            if (mi >= n) break;
            if (encode_into(tok, b, texts[mi], lens[mi], 0, e, "messages")) goto out;
            mi++;
        }
        at = i + 1;
    }
    rc = 0;
out:
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(rendered);
    return rc;
}

/* ---------------------------------------------------------------- the parser */

void api_gen_req_free(api_gen_req_t *g) {
    if (!g) return;
    for (int i = 0; i < g->n_prompts; i++) free(g->prompt_ids[i]);
    free(g->prompt_ids);
    free(g->prompt_len);
    for (int i = 0; i < API_GEN_MAX_STOPS; i++) free(g->stops[i]);
    free(g);
}

static int parse_stop(api_gen_req_t *g, json_t *v, api_err_t *e) {
    if (!v || json_is_null(v)) return 0;
    json_t *one = json_is_string(v) ? v : NULL;
    size_t n = one ? 1 : json_is_array(v) ? json_array_size(v) : 0;
    if (!one && (!json_is_array(v) || n > API_GEN_MAX_STOPS))
        return api_err_set(e, 400, "invalid_value", "stop", "stop must be a string or an array of at most %d strings",
                           API_GEN_MAX_STOPS);
    for (size_t i = 0; i < n; i++) {
        json_t *s = one ? one : json_array_get(v, i);
        if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) >= SAMPLE_MAX_STOP_LEN ||
            strlen(json_string_value(s)) != json_string_length(s))
            return api_err_set(e, 400, "invalid_value", "stop", "each stop string must be 1 to %d bytes",
                               SAMPLE_MAX_STOP_LEN - 1);
        g->stops[i] = strdup(json_string_value(s));
        if (!g->stops[i]) return api_err_set(e, 503, "out_of_memory", NULL, "out of memory");
        g->sp.stops[g->sp.n_stops++] = g->stops[i];
    }
    return 0;
}

static int parse_prompts(api_gen_req_t *g, const tok_t *tok, const chat_template_t *tmpl, json_t *body,
                         api_err_t *e) {
    json_t *list = NULL, *one = NULL;
    if (g->kind == API_GEN_CHAT) {
        json_t *m = json_object_get(body, "messages");
        if (!m) return api_err_set(e, 400, "missing_field", "messages", "messages is required");
        g->n_prompts = 1;
    } else {
        json_t *p = json_object_get(body, "prompt");
        if (!p) return api_err_set(e, 400, "missing_field", "prompt", "prompt is required");
        if (json_is_string(p)) one = p;
        else if (json_is_array(p) && json_array_size(p) >= 1 && json_array_size(p) <= API_GEN_MAX_PROMPTS) list = p;
        else
            return api_err_set(e, 400, "invalid_value", "prompt",
                               "prompt must be a string or an array of 1 to %d strings", API_GEN_MAX_PROMPTS);
        g->n_prompts = one ? 1 : (int)json_array_size(list);
    }
    g->prompt_ids = calloc((size_t)g->n_prompts, sizeof *g->prompt_ids);
    g->prompt_len = calloc((size_t)g->n_prompts, sizeof *g->prompt_len);
    if (!g->prompt_ids || !g->prompt_len) return api_err_set(e, 503, "out_of_memory", NULL, "out of memory");
    for (int i = 0; i < g->n_prompts; i++) {
        idbuf_t b = {0};
        if (g->kind == API_GEN_CHAT) {
            if (chat_prompt(tok, tmpl, json_object_get(body, "messages"), &b, e)) {
                free(b.ids);
                return -1;
            }
        } else {
            json_t *s = one ? one : json_array_get(list, (size_t)i);
            if (!json_is_string(s)) return api_err_set(e, 400, "invalid_type", "prompt", "prompt[%d] must be a string", i);
            /* a completion prompt is raw model input: control-token text is the token, as llama.cpp reads it */
            if (encode_into(tok, &b, json_string_value(s), json_string_length(s), 1, e, "prompt")) {
                free(b.ids);
                return -1;
            }
        }
        g->prompt_ids[i] = b.ids;
        g->prompt_len[i] = b.n;
        if (b.n == 0) return api_err_set(e, 400, "invalid_value", g->kind == API_GEN_CHAT ? "messages" : "prompt",
                                         "the prompt encodes to no tokens");
    }
    return 0;
}

/* An object of known fields only: 0, or -1 with *e naming the first unknown one. */
static int check_fields(json_t *body, api_gen_kind_t kind, api_err_t *e) {
    if (!json_is_object(body)) return api_err_set(e, 400, "invalid_type", NULL, "the request body must be a JSON object");
    const char *const *fields = kind == API_GEN_CHAT ? CHAT_FIELDS : COMPLETION_FIELDS;
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (!known(fields, k))
            return api_err_set(e, 400, "unknown_parameter", api_err_param(e, "%s", k),
                               "Unrecognized request argument supplied: %s", k);
    }
    return 0;
}

int api_gen_parse(registry_t *reg, json_t *body, api_gen_kind_t kind, api_gen_req_t **out, api_err_t *e) {
    *out = NULL;
    if (check_fields(body, kind, e)) return -1; /* before the model: a typo is named whatever the model */
    /* the model */
    json_t *m = json_object_get(body, "model");
    int idx = -1;
    if (m && !json_is_string(m)) return api_err_set(e, 400, "invalid_type", "model", "model must be a string");
    if (m) idx = registry_find(reg, json_string_value(m));
    else { /* omitted: the one decoder, when there is exactly one */
        idx = api_job_only_model(reg, MODEL_DECODER);
        if (idx == -2) return api_err_set(e, 400, "missing_field", "model", "model is required (this server has several decoders)");
    }
    if (idx < 0 && !m) return api_err_set(e, 404, "model_not_found", "model", "this server has no decoder model");
    if (idx < 0) return api_err_set(e, 404, "model_not_found", "model", "model '%s' not found", json_string_value(m));
    char terr[256];
    const tok_t *tok = registry_tokenizer(reg, idx, terr, sizeof terr);
    registry_model_info_t info;
    if (!tok || registry_info(reg, idx, &info))
        return api_err_set(e, 503, "model_unavailable", "model", "model tokenizer: %s", tok ? "no info" : terr);
    api_gen_model_t gm = {idx, info.name, tok, registry_chat_template(reg, idx),
                          info.max_seq_len > 0 ? info.max_seq_len : tok_max_len(tok)};
    return api_gen_parse_model(&gm, body, kind, out, e);
}

int api_gen_parse_model(const api_gen_model_t *gm, json_t *body, api_gen_kind_t kind, api_gen_req_t **out,
                        api_err_t *e) {
    *out = NULL;
    if (check_fields(body, kind, e)) return -1;
    const char *k;
    json_t *v;
    const tok_t *tok = gm->tok;
    api_gen_req_t *g = calloc(1, sizeof *g);
    if (!g) return api_err_set(e, 503, "out_of_memory", NULL, "out of memory");
    g->kind = kind;
    g->sp = sample_params_default();
    g->sp.temperature = 1.0f; /* OpenAI's default */
    g->n = 1;
    if (strcmp(tok_kind(tok), "bpe")) {
        api_err_set(e, 400, "invalid_model", "model", "model '%s' is an encoder; it cannot generate text", gm->name);
        goto fail;
    }
    g->model = gm->index;
    snprintf(g->model_name, sizeof g->model_name, "%s", gm->name);
    g->ctx_len = gm->ctx_len;
    g->vocab = tok_vocab_size(tok);

    /* sampling */
    double d = 1.0;
    int64_t iv = 0;
    if (get_number(body, "temperature", 0, 2, &d, e)) goto fail;
    g->sp.temperature = (float)d;
    d = 1.0;
    if (get_number(body, "top_p", 0, 1, &d, e)) goto fail;
    if (d <= 0) {
        api_err_set(e, 400, "invalid_value", "top_p", "top_p must be a number above 0 and at most 1");
        goto fail;
    }
    g->sp.top_p = (float)d;
    iv = 0;
    if (api_json_int(body, "top_k", -1, g->vocab, &iv, e)) goto fail;
    g->sp.top_k = iv < 0 ? 0 : (int)iv; /* -1: off, as vLLM reads it */
    d = 0;
    if (get_number(body, "min_p", 0, 1, &d, e)) goto fail;
    g->sp.min_p = (float)d;
    d = 0;
    if (get_number(body, "presence_penalty", -2, 2, &d, e)) goto fail;
    g->sp.presence_penalty = (float)d;
    d = 0;
    if (get_number(body, "frequency_penalty", -2, 2, &d, e)) goto fail;
    g->sp.frequency_penalty = (float)d;
    d = 1;
    if (get_number(body, "repetition_penalty", 0.01, 10, &d, e)) goto fail;
    g->sp.repetition_penalty = (float)d;
    json_t *seed = json_object_get(body, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) {
            api_err_set(e, 400, "invalid_type", "seed", "seed must be an integer");
            goto fail;
        }
        g->sp.seed = (uint64_t)json_integer_value(seed);
    } else {
        g->sp.seed = 0x5eed; /* fixed: the same request gives the same text, as determinism promises */
    }
    iv = 1;
    if (api_json_int(body, "n", 1, API_GEN_MAX_N, &iv, e)) goto fail;
    g->n = (int)iv;

    /* lengths */
    iv = 0;
    if (api_json_int(body, "max_tokens", 1, 1 << 20, &iv, e)) goto fail;
    if (kind == API_GEN_CHAT) {
        int64_t mc = 0;
        if (api_json_int(body, "max_completion_tokens", 1, 1 << 20, &mc, e)) goto fail;
        if (mc) iv = mc;
    }
    g->max_tokens = (int)iv;
    g->max_tokens_given = iv > 0;

    /* logprobs */
    if (kind == API_GEN_CHAT) {
        if (get_bool(body, "logprobs", &g->logprobs, e)) goto fail;
        iv = -1;
        if (api_json_int(body, "top_logprobs", 0, API_GEN_MAX_TOP_LOGPROBS, &iv, e)) goto fail;
        if (iv >= 0 && !g->logprobs) {
            api_err_set(e, 400, "invalid_value", "top_logprobs", "top_logprobs needs logprobs: true");
            goto fail;
        }
        g->top_logprobs = iv > 0 ? (int)iv : 0;
    } else {
        iv = -1;
        if (api_json_int(body, "logprobs", 0, 5, &iv, e)) goto fail;
        g->logprobs = iv >= 0;
        g->top_logprobs = iv > 0 ? (int)iv : 0;
    }

    /* the rest */
    if (parse_stop(g, json_object_get(body, "stop"), e)) goto fail;
    json_t *u = json_object_get(body, "user");
    if (u && !json_is_null(u)) {
        if (!json_is_string(u) || json_string_length(u) >= sizeof g->user) {
            api_err_set(e, 400, "invalid_value", "user", "user must be a string of at most %zu bytes", sizeof g->user - 1);
            goto fail;
        }
        snprintf(g->user, sizeof g->user, "%s", json_string_value(u));
    }
    if (get_bool(body, "stream", &g->stream, e)) goto fail;
    json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!g->stream) {
            api_err_set(e, 400, "invalid_value", "stream_options", "stream_options is only allowed with stream: true");
            goto fail;
        }
        if (!json_is_object(so)) {
            api_err_set(e, 400, "invalid_type", "stream_options", "stream_options must be an object");
            goto fail;
        }
        json_object_foreach(so, k, v) if (strcmp(k, "include_usage")) {
            api_err_set(e, 400, "unknown_parameter", api_err_param(e, "stream_options.%s", k), "stream_options: unknown field '%s'", k);
            goto fail;
        }
        if (get_bool(so, "include_usage", &g->include_usage, e)) {
            e->param = "stream_options.include_usage";
            goto fail;
        }
    }
    if (api_job_priority_deadline(body, &g->priority, &g->deadline_ms, e)) goto fail;

    /* stop tokens: the end of a turn and of the text, in this vocabulary */
    g->sp.n_stop_ids = chat_stop_ids(tok, g->sp.stop_ids, SAMPLE_MAX_STOP_IDS);
    if (parse_prompts(g, tok, &gm->chat, body, e)) goto fail;
    for (int i = 0; i < g->n_prompts; i++) {
        int want = g->max_tokens_given ? g->max_tokens : 1;
        if (g->prompt_len[i] + want > g->ctx_len) {
            api_err_set(e, 400, "context_length_exceeded", g->max_tokens_given ? "max_tokens" : (kind == API_GEN_CHAT ? "messages" : "prompt"),
                        "This model's maximum context length is %d tokens. However, you requested %d tokens (%d in "
                        "the %s, %d in the completion). Please reduce the length of the %s or the completion.",
                        g->ctx_len, g->prompt_len[i] + want, g->prompt_len[i],
                        kind == API_GEN_CHAT ? "messages" : "prompt", want, kind == API_GEN_CHAT ? "messages" : "prompt");
            goto fail;
        }
    }
    /* not given: 0, and the scheduler fits it to the context and the KV cache */
    g->sp.max_tokens = g->max_tokens_given ? g->max_tokens : 0;
    *out = g;
    return 0;
fail:
    api_gen_req_free(g);
    return -1;
}

/* ---------------------------------------------------------------- choices */

int api_gen_choice_add(api_gen_choice_t *c, const char *text, size_t len) {
    if (util_grow(&c->text, &c->cap, c->len + len + 1, 256)) return -1;
    if (len) memcpy(c->text + c->len, text, len);
    c->len += len;
    c->text[c->len] = '\0';
    return 0;
}

void api_gen_choice_clear(api_gen_choice_t *c) {
    free(c->text);
    json_decref(c->logprobs);
    memset(c, 0, sizeof *c);
}

/* A token's text as JSON (bytes that are not whole UTF-8 become U+FFFD) and its bytes array. */
static json_t *token_entry(const tok_t *tok, int32_t id, float lp) {
    const char *s = NULL;
    size_t n = 0;
    if (!strcmp(tok_kind(tok), "bpe")) s = bpe_token_bytes(tok_bpe(tok), id, &n);
    json_t *o = json_object();
    json_t *str = s ? json_stringn(s, n) : NULL; /* NULL: half a UTF-8 character (the bytes keep it) */
    if (!str) str = json_string(s ? "\xef\xbf\xbd" : "");
    json_object_set_new(o, "token", str);
    json_object_set_new(o, "logprob", json_real(isfinite(lp) ? lp : -9999.0));
    json_t *bytes = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(bytes, json_integer((unsigned char)s[i]));
    json_object_set_new(o, "bytes", bytes);
    return o;
}

void api_gen_choice_add_logprob(api_gen_choice_t *c, const api_gen_req_t *g, const tok_t *tok,
                                const api_gen_logprob_t *lp) {
    if (!g->logprobs) return;
    if (!c->logprobs) c->logprobs = json_array();
    json_t *o = token_entry(tok, lp->id, lp->logprob);
    json_t *top = json_array();
    for (int i = 0; i < lp->n_top && i < g->top_logprobs; i++)
        json_array_append_new(top, token_entry(tok, lp->top_ids[i], lp->top_logprobs[i]));
    json_object_set_new(o, "top_logprobs", top);
    json_array_append_new(c->logprobs, o);
}

const char *api_gen_finish_name(api_gen_finish_t f) {
    switch (f) {
    case API_GEN_FINISH_STOP: return "stop";
    case API_GEN_FINISH_LENGTH: return "length";
    case API_GEN_FINISH_CANCELLED: return "cancelled";
    case API_GEN_FINISH_SHUTDOWN: return "shutdown";
    case API_GEN_FINISH_ERROR: return "error";
    case API_GEN_FINISH_DEADLINE: return "deadline";
    default: return NULL;
    }
}

/* The completions API's logprobs object from chat-shaped entries. */
static json_t *completion_logprobs(json_t *entries, size_t text_offset0) {
    json_t *o = json_object(), *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = text_offset0, i;
    json_t *en;
    json_array_foreach(entries, i, en) {
        json_t *t = json_object_get(en, "token");
        json_array_append(tokens, t);
        json_array_append(lps, json_object_get(en, "logprob"));
        json_t *top = json_object(), *te;
        size_t k;
        json_array_foreach(json_object_get(en, "top_logprobs"), k, te)
            json_object_set(top, json_string_value(json_object_get(te, "token")), json_object_get(te, "logprob"));
        json_array_append_new(tops, top);
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += json_array_size(json_object_get(en, "bytes"));
    }
    json_object_set_new(o, "tokens", tokens);
    json_object_set_new(o, "token_logprobs", lps);
    json_object_set_new(o, "top_logprobs", tops);
    json_object_set_new(o, "text_offset", offs);
    return o;
}

static json_t *usage_object(const api_gen_usage_t *u) {
    return json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", u->prompt_tokens, "completion_tokens",
                     u->completion_tokens, "total_tokens", u->prompt_tokens + u->completion_tokens,
                     "prompt_tokens_details", "cached_tokens", u->cached_tokens);
}

static char *dump(json_t *o, size_t *len) {
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (s) *len = strlen(s);
    return s;
}

char *api_gen_answer_json(const api_gen_req_t *g, const char *id, int64_t created, const api_gen_choice_t *choices,
                          const api_gen_usage_t *u, size_t *len) {
    int chat = g->kind == API_GEN_CHAT;
    json_t *arr = json_array();
    for (int i = 0; i < api_gen_choices(g); i++) {
        const api_gen_choice_t *c = &choices[i];
        const char *fin = api_gen_finish_name(c->finish);
        json_t *text = json_stringn(c->text ? c->text : "", c->len);
        if (!text) text = json_string(""); /* never: the detokenizer streams whole characters */
        json_t *ch = json_pack("{s:i}", "index", i);
        if (chat) json_object_set_new(ch, "message", json_pack("{s:s,s:o}", "role", "assistant", "content", text));
        else json_object_set_new(ch, "text", text);
        json_t *lp = json_null();
        if (g->logprobs && c->logprobs)
            lp = chat ? json_pack("{s:O}", "content", c->logprobs) : completion_logprobs(c->logprobs, 0);
        json_object_set_new(ch, "logprobs", lp);
        json_object_set_new(ch, "finish_reason", fin ? json_string(fin) : json_null());
        json_array_append_new(arr, ch);
    }
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:o,s:o}", "id", id, "object", chat ? "chat.completion" : "text_completion",
                          "created", (json_int_t)created, "model", g->model_name, "system_fingerprint", "sluice",
                          "choices", arr, "usage", usage_object(u));
    return dump(o, len);
}

/* "data: JSON\n\n" around a chunk object (stolen). */
static char *sse(json_t *o, size_t *out_len) {
    size_t n = 0;
    char *s = dump(o, &n);
    if (!s) return NULL;
    char *ev = malloc(n + 9);
    if (ev) {
        memcpy(ev, "data: ", 6);
        memcpy(ev + 6, s, n);
        memcpy(ev + 6 + n, "\n\n", 3);
        *out_len = n + 8;
    }
    free(s);
    return ev;
}

static json_t *chunk_base(const api_gen_req_t *g, const char *id, int64_t created) {
    return json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", id, "object",
                     g->kind == API_GEN_CHAT ? "chat.completion.chunk" : "text_completion", "created",
                     (json_int_t)created, "model", g->model_name, "system_fingerprint", "sluice");
}

char *api_gen_chunk_sse(const api_gen_req_t *g, const char *id, int64_t created, int index, int role,
                        const char *text, size_t len, api_gen_finish_t finish, json_t *logprobs, size_t *out_len) {
    int chat = g->kind == API_GEN_CHAT;
    json_t *o = chunk_base(g, id, created);
    json_t *ch = json_pack("{s:i}", "index", index);
    json_t *t = text ? json_stringn(text, len) : NULL;
    if (text && !t) t = json_string("\xef\xbf\xbd");
    if (chat) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string("assistant"));
        if (t) json_object_set_new(delta, "content", t);
        else if (role) json_object_set_new(delta, "content", json_string(""));
        json_object_set_new(ch, "delta", delta);
    } else {
        json_object_set_new(ch, "text", t ? t : json_string(""));
    }
    json_t *lp = json_null();
    if (logprobs) {
        lp = chat ? json_pack("{s:o}", "content", logprobs) : completion_logprobs(logprobs, 0);
        if (!chat) json_decref(logprobs);
    }
    json_object_set_new(ch, "logprobs", lp);
    const char *fin = api_gen_finish_name(finish);
    json_object_set_new(ch, "finish_reason", fin ? json_string(fin) : json_null());
    json_object_set_new(o, "choices", json_pack("[o]", ch));
    if (g->include_usage) json_object_set_new(o, "usage", json_null());
    return sse(o, out_len);
}

char *api_gen_usage_sse(const api_gen_req_t *g, const char *id, int64_t created, const api_gen_usage_t *u,
                        size_t *out_len) {
    json_t *o = chunk_base(g, id, created);
    json_object_set_new(o, "choices", json_array());
    json_object_set_new(o, "usage", usage_object(u));
    return sse(o, out_len);
}

/* ---------------------------------------------------------------- the scheduler side */

sched_req_t api_gen_sched_req(const api_gen_req_t *g, int c, int priority, int64_t deadline_ns, sched_delta_fn on_delta,
                              sched_done_fn on_done, void *user) {
    sched_req_t q = {
        .model = g->model,
        .prompt = g->prompt_ids[c / g->n],
        .n_prompt = g->prompt_len[c / g->n],
        .sample = g->sp,
        .logprobs = g->logprobs,
        .top_logprobs = g->top_logprobs,
        .priority = priority,
        .deadline_ns = deadline_ns,
        .on_delta = on_delta,
        .on_done = on_done,
        .user = user,
    };
    q.sample.seed = g->sp.seed + (uint64_t)(c % g->n);
    return q;
}

void api_gen_choice_add_delta(api_gen_choice_t *c, const api_gen_req_t *g, const tok_t *tok, const sched_delta_t *d,
                              int add_text) {
    if (add_text) api_gen_choice_add(c, d->text, d->text_len);
    c->completion_tokens += d->n_ids;
    for (int i = 0; d->logprobs && i < d->n_ids; i++) {
        const sched_logprob_t *l = &d->logprobs[i];
        api_gen_logprob_t lp = {l->id, l->logprob, l->n_top, l->top_ids, l->top_logprobs};
        api_gen_choice_add_logprob(c, g, tok, &lp);
    }
}

int api_gen_finish_rank(sched_finish_t f) {
    switch (f) {
    case SCHED_FINISH_ERROR: return 5;
    case SCHED_FINISH_SHUTDOWN: return 4;
    case SCHED_FINISH_DEADLINE: return 3;
    case SCHED_FINISH_CANCELLED: return 2;
    default: return 1;
    }
}

const char *api_gen_sched_finish_word(sched_finish_t f) {
    static const char *const w[] = {"stop", "length", "cancelled", "deadline", "error", "shutdown"};
    return (unsigned)f < sizeof w / sizeof w[0] ? w[f] : "error";
}
