/* api/gen_job.h - the text-generation operation: POST /v1/chat/completions,
 * POST /v1/completions and the Redis op "generate".
 *
 * A request body is parsed strictly, the way OpenAI's API reads it: every
 * field is known and in range or the answer is 400 naming the field (an
 * unknown field too), so a typo never silently changes sampling. Chat
 * messages are rendered through the model's chat template (engine/chat.h)
 * and tokenized piecewise: the template's own text with special-token
 * parsing (its "<|im_start|>" is the control token), each message's content
 * without (a user who types "<|im_end|>" gets those characters, never the
 * control token that would end their turn).
 *
 * The parsed request (api_gen_req_t) is what the generation scheduler needs
 * (prompt ids per choice, sampling parameters, stop strings and tokens,
 * logprobs); the writers turn finished choices into OpenAI's answer objects
 * (chat.completion / text_completion) and streamed deltas into its chunk
 * objects (chat.completion.chunk) for server-sent events.
 *
 * Ownership: api_gen_req_free frees a request and everything in it (NULL:
 * no-op); the writers return malloc'd text. Thread-safety: no shared state;
 * a model's chat template is kept with its registry entry
 * (registry_chat_template).
 */
#ifndef SLUICE_API_GEN_JOB_H
#define SLUICE_API_GEN_JOB_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "api/job.h"
#include "batcher/sched.h"
#include "engine/chat.h"
#include "engine/sample.h"

#define API_GEN_MAX_STOPS 4      /* stop strings per request (OpenAI's limit) */
#define API_GEN_MAX_N 16         /* choices per prompt */
#define API_GEN_MAX_PROMPTS 32   /* prompts in one /v1/completions array */
#define API_GEN_MAX_TOP_LOGPROBS 20
#define API_GEN_MAX_MESSAGES 256

typedef enum { API_GEN_CHAT = 1, API_GEN_COMPLETION = 0 } api_gen_kind_t;

typedef enum {
    API_GEN_FINISH_NONE = 0,
    API_GEN_FINISH_STOP = 1,      /* a stop token or stop string */
    API_GEN_FINISH_LENGTH = 2,    /* max_tokens or the context */
    API_GEN_FINISH_CANCELLED = 3, /* the client went away / the task was cancelled */
    API_GEN_FINISH_SHUTDOWN = 4,  /* the server stopped mid-generation */
    API_GEN_FINISH_ERROR = 5,
    API_GEN_FINISH_DEADLINE = 6,  /* the request's deadline passed mid-generation */
} api_gen_finish_t;

/* One parsed request. */
typedef struct {
    api_gen_kind_t kind;
    int model;                        /* registry index */
    char model_name[REGISTRY_NAME_MAX];
    int ctx_len;                      /* the model's context, tokens */
    int vocab;
    int n_prompts;                    /* completions: prompts in the array; chat: 1 */
    int32_t **prompt_ids;             /* (n_prompts) arrays of prompt_len[i] ids */
    int *prompt_len;                  /* (n_prompts) */
    int n;                            /* choices per prompt (`n`) */
    int max_tokens;                   /* per choice; 0 when not given: the room the context and KV cache leave */
    int max_tokens_given;
    sample_params_t sp;               /* stop strings point into stops[]; stop ids set */
    char *stops[API_GEN_MAX_STOPS];
    int logprobs;                     /* 1: each token's logprob in the answer */
    int top_logprobs;                 /* 0..20 alternatives per token */
    int stream, include_usage;
    int priority;                     /* -1000..1000 */
    int64_t deadline_ms;              /* 0: the server's default */
    char user[128];
} api_gen_req_t;

/* Parse body (a JSON object) for kind against the registry's models: 0, or
 * -1 with *e (400 naming the field; 404 for an unknown model). */
int api_gen_parse(registry_t *reg, json_t *body, api_gen_kind_t kind, api_gen_req_t **out, api_err_t *e);
void api_gen_req_free(api_gen_req_t *g);

/* What the parser needs of a model (api_gen_parse finds it in the registry;
 * tests make it from a model file). */
typedef struct {
    int index;              /* registry index */
    const char *name;
    const tok_t *tok;
    chat_template_t chat;   /* CHAT_NONE: /v1/completions only */
    int ctx_len;            /* tokens */
} api_gen_model_t;
/* The same as api_gen_parse once the model is known. */
int api_gen_parse_model(const api_gen_model_t *m, json_t *body, api_gen_kind_t kind, api_gen_req_t **out,
                        api_err_t *e);

/* Total choices of a request (n_prompts * n); choice c reads prompt c / n. */
static inline int api_gen_choices(const api_gen_req_t *g) { return g->n_prompts * g->n; }

/* One token's log-probability and its most likely alternatives. */
typedef struct {
    int32_t id;
    float logprob;
    int n_top;
    const int32_t *top_ids;     /* (n_top) */
    const float *top_logprobs;  /* (n_top) */
} api_gen_logprob_t;

/* One finished (or streaming) choice. */
typedef struct {
    char *text;                  /* what was generated (stop strings removed) */
    size_t len, cap;
    int completion_tokens;
    api_gen_finish_t finish;
    json_t *logprobs;            /* array of OpenAI logprob entries (chat: content items), or NULL */
} api_gen_choice_t;

/* Append text to a choice: 0, or -1 out of memory. */
int api_gen_choice_add(api_gen_choice_t *c, const char *text, size_t len);
/* The logprob entry of one token in the request's shape (chat: {token, logprob,
 * bytes, top_logprobs}); added to c->logprobs. tok: the model's tokenizer. */
void api_gen_choice_add_logprob(api_gen_choice_t *c, const api_gen_req_t *g, const tok_t *tok,
                                const api_gen_logprob_t *lp);
void api_gen_choice_clear(api_gen_choice_t *c);

const char *api_gen_finish_name(api_gen_finish_t f); /* "stop", "length", "cancelled", ... */

typedef struct {
    int prompt_tokens, completion_tokens, cached_tokens;
} api_gen_usage_t;

/* The whole answer (chat.completion / text_completion), malloc'd, *len bytes. */
char *api_gen_answer_json(const api_gen_req_t *g, const char *id, int64_t created, const api_gen_choice_t *choices,
                          const api_gen_usage_t *u, size_t *len);
/* One server-sent event "data: {chunk}\n\n" (malloc'd). role: the first chunk
 * of a chat choice carries it; text may be NULL; finish NONE: not the last;
 * logprobs (stolen, may be NULL): the delta's entries. */
char *api_gen_chunk_sse(const api_gen_req_t *g, const char *id, int64_t created, int index, int role,
                        const char *text, size_t len, api_gen_finish_t finish, json_t *logprobs, size_t *out_len);
/* The usage chunk of stream_options.include_usage (choices []). */
char *api_gen_usage_sse(const api_gen_req_t *g, const char *id, int64_t created, const api_gen_usage_t *u,
                        size_t *out_len);

/* ---- running a request on the scheduler (batcher/sched.h) ---- */
/* The scheduler request of choice c (prompt c / n; seed + c % n, so the n
 * choices of a prompt differ and a seeded request repeats). */
sched_req_t api_gen_sched_req(const api_gen_req_t *g, int c, int priority, int64_t deadline_ns, sched_delta_fn on_delta,
                              sched_done_fn on_done, void *user);
/* A delta's token count and logprobs into a choice (its text too when add_text). */
void api_gen_choice_add_delta(api_gen_choice_t *c, const api_gen_req_t *g, const tok_t *tok, const sched_delta_t *d,
                              int add_text);
/* How serious a finish is (stop, length 1 .. error 5): a request reports its choices' worst. */
int api_gen_finish_rank(sched_finish_t f);
/* sched_finish_name's words ("stop", "length", "cancelled", "deadline", "error", "shutdown"). */
const char *api_gen_sched_finish_word(sched_finish_t f);

/* ---- the "generate" job (api/gen_task.c): one answer through the scheduler ----
 * Its body is a chat body ("messages") or a completion body ("prompt");
 * stream fields are ignored (a task streams to its Redis stream). The job's
 * item.done runs when its last choice ends. */
extern const api_job_type_t api_gen_task_job;
/* Called (on the scheduler thread; must not block) with each piece of text
 * of choice `index` (finish NULL), and once when that choice ends well
 * (text NULL, finish "stop" | "length"). */
typedef void (*api_gen_listen_fn)(void *user, api_job_t *j, int index, const char *text, size_t len,
                                  const char *finish);
/* Set before the job is submitted. */
void api_gen_task_listen(api_job_t *j, api_gen_listen_fn fn, void *user);
/* Its counts so far, for the log line (finish: the most serious choice's). */
void api_gen_task_counts(api_job_t *j, api_gen_usage_t *u, double *ttft_s, const char **finish);

#endif
