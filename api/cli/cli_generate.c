/* api/cli/cli_generate.c - `sluice generate` (plain completion) and `sluice chat`
 * (the model's chat template), streaming tokens to stdout as they come.
 *
 *   sluice generate --prompt TEXT [options]
 *   sluice chat [--system T] [--user T] [--assistant T]... [options]
 *
 * chat with no --user reads one user turn per line from stdin (interactive);
 * each turn reuses the KV cache of the conversation so far (the prefix cache
 * of the generation scheduler, batcher/sched.h, which runs every request
 * here as in the server: full KV blocks of the earlier turns are found by
 * their tokens). Generation ends at the
 * model's end tokens (<|im_end|>, <|endoftext|>), a --stop string, --max-tokens
 * or the context. A summary line goes to stderr: prompt and generated tokens
 * and tokens/s for each phase.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/cli/cli.h"
#include "batcher/sched.h"
#include "batcher/worker.h"
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/registry.h"
#include "engine/sample.h"
#include "kernels/util.h"

#define DEFAULT_LLM "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
#define MAX_MESSAGES 64

typedef struct {
    const char *model;
    int threads;
    int ctx;
    sample_params_t sp;
    int seed_given;
} gen_opts_t;

/* The model on the same registry, device worker and scheduler as the server
 * (batcher/sched.h): a chat's earlier turns come back from the prefix cache. */
typedef struct {
    registry_t *reg;
    worker_t *w;
    sched_t *s;
    const tok_t *tok;
    chat_template_t chat;
    int ctx;
} gen_t;

/* One answer, streamed to stdout by the scheduler's callbacks. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, oom;
    sched_result_t res;
    char msg[512];
    char *ans;
    size_t alen, acap;
} turn_t;

static void gen_close(gen_t *g) {
    sched_destroy(g->s);
    worker_destroy(g->w);
    registry_destroy(g->reg);
    memset(g, 0, sizeof *g);
}

/* Returns 0, or 2 (bad model or option) / 1 (runtime) with a message. */
static int gen_open(gen_t *g, const gen_opts_t *o, char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    struct stat st;
    gguf_file_t *f = NULL;
    if (stat(o->model, &st) != 0) {
        snprintf(err, errlen, "%s: no such model file (run `make model`)", o->model);
        return 2;
    }
    if (gguf_open(o->model, &f, err, errlen)) return 2;
    g->chat = chat_template_from_gguf(f);
    gguf_close(f);
    registry_opts_t ro = {.models_dir = o->model, .device = "cpu", .cpu_threads = o->threads};
    if (registry_create(&ro, &g->reg, err, errlen)) return 2;
    if (worker_create(g->reg, &g->w)) {
        snprintf(err, errlen, "out of memory");
        return 1;
    }
    /* the KV cache holds one sequence of the whole context */
    int ctx = o->ctx > 0 ? o->ctx : 4096;
    sched_config_t sc = {.max_ctx = ctx, .kv_tokens = ctx, .max_seqs = 1, .step_tokens = 256};
    if (sched_create(g->reg, g->w, &sc, &g->s, err, errlen)) return 1;
    int rc = sched_prepare(g->s, 0, &g->ctx, NULL, err, errlen);
    if (rc) return rc == SCHED_ENOMEM ? 1 : 2;
    if (!(g->tok = registry_tokenizer(g->reg, 0, err, errlen))) return 2;
    return 0;
}

static void on_delta(void *user, const sched_delta_t *d) {
    turn_t *t = user;
    if (!d->text_len) return;
    fwrite(d->text, 1, d->text_len, stdout); /* a terminal: the CLI's one stream may block here */
    fflush(stdout);
    pthread_mutex_lock(&t->mu);
    if (util_grow(&t->ans, &t->acap, t->alen + d->text_len + 1, 256) == 0) {
        memcpy(t->ans + t->alen, d->text, d->text_len);
        t->alen += d->text_len;
    } else {
        t->oom = 1;
    }
    pthread_mutex_unlock(&t->mu);
}

static void on_done(void *user, const sched_result_t *r) {
    turn_t *t = user;
    pthread_mutex_lock(&t->mu);
    t->res = *r;
    snprintf(t->msg, sizeof t->msg, "%s", r->message);
    t->res.message = t->msg;
    t->done = 1;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static const char *finish_name(const sched_result_t *r) {
    if (r->finish == SCHED_FINISH_STOP) return r->stop_id >= 0 ? "end token" : "stop string";
    return sched_finish_name(r->finish);
}

/* Generate after the prompt text; streams to stdout; the answer's text (for
 * chat history) into *answer (malloc'd) when answer is not NULL. */
static int gen_run(gen_t *g, const char *prompt, size_t plen, const gen_opts_t *o, char **answer) {
    char err[1024];
    int n_untrunc = 0;
    int32_t *ids = malloc((size_t)g->ctx * sizeof *ids);
    if (!ids) {
        fprintf(stderr, "sluice: out of memory\n");
        return 1;
    }
    int n = tok_encode(g->tok, prompt, plen, ids, g->ctx, &n_untrunc, err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "sluice: %s\n", err);
        free(ids);
        return 2;
    }
    turn_t t = {.done = 0};
    pthread_mutex_init(&t.mu, NULL);
    pthread_cond_init(&t.cv, NULL);
    sched_req_t req = {.model = 0, .prompt = ids, .n_prompt = n, .sample = o->sp, .on_delta = on_delta,
                       .on_done = on_done, .user = &t};
    req.sample.n_stop_ids = chat_stop_ids(g->tok, req.sample.stop_ids, SAMPLE_MAX_STOP_IDS);
    int rc = 0;
    if (n_untrunc > n) {
        snprintf(err, sizeof err, "prompt of %d tokens exceeds the context of %d tokens", n_untrunc, g->ctx);
        rc = SCHED_ETOOBIG;
    } else {
        rc = sched_submit(g->s, &req, NULL, err, sizeof err);
    }
    free(ids);
    if (rc) {
        fprintf(stderr, "sluice: %s%s\n", err, rc == SCHED_ETOOBIG ? " (--ctx to change the context)" : "");
        free(t.ans);
        return rc == SCHED_ENOMEM ? 1 : 2;
    }
    pthread_mutex_lock(&t.mu);
    while (!t.done) pthread_cond_wait(&t.cv, &t.mu);
    pthread_mutex_unlock(&t.mu);
    fputc('\n', stdout);
    fflush(stdout);
    const sched_result_t *r = &t.res;
    rc = r->finish == SCHED_FINISH_STOP || r->finish == SCHED_FINISH_LENGTH ? 0 : 1;
    if (rc) fprintf(stderr, "sluice: %s\n", r->message);
    double pre = r->ttft_s, dc = r->e2e_s - r->ttft_s;
    int n_gen = r->completion_tokens, fresh = r->prompt_tokens - r->cached_prompt_tokens;
    fprintf(stderr,
            "sluice: prompt %d tokens (%d from cache, prefill %.1f tokens/s), generated %d tokens (%.1f tokens/s), "
            "stopped by %s\n",
            r->prompt_tokens, r->cached_prompt_tokens, pre > 0 ? fresh / pre : 0.0, n_gen,
            dc > 0 && n_gen > 1 ? (n_gen - 1) / dc : 0.0, finish_name(r));
    if (answer && rc == 0 && !t.oom) {
        if (!t.ans) t.ans = calloc(1, 1);
        else t.ans[t.alen] = 0;
        *answer = t.ans;
    } else {
        free(t.ans);
    }
    pthread_mutex_destroy(&t.mu);
    pthread_cond_destroy(&t.cv);
    return rc;
}

static void gen_usage(FILE *out, int chat) {
    if (chat)
        fprintf(out, "usage: sluice chat [--system T] [--user T] [--assistant T]... [options]\n"
                     "  messages in the order given; with no --user, one user turn per line of stdin\n");
    else
        fprintf(out, "usage: sluice generate --prompt TEXT [options]\n"
                     "  plain completion (control tokens such as <|im_start|> in TEXT are read as such)\n");
    fprintf(out,
            "  --model GGUF        model file (default " DEFAULT_LLM ")\n"
            "  --max-tokens N      tokens to generate (default: up to the context)\n"
            "  --temperature T     0 = greedy (default 0)\n"
            "  --top-p P           nucleus sampling (default 1: off)\n"
            "  --top-k K           (default 0: off)\n"
            "  --min-p P           (default 0: off)\n"
            "  --repeat-penalty R  (default 1: off)\n"
            "  --seed S            sampling seed (default: from the clock, printed)\n"
            "  --stop STR          stop string, not printed (repeatable, up to %d)\n"
            "  --ctx N             context positions (default 4096, at most the model's)\n"
            "  --threads N         CPU threads (default: one per core)\n",
            SAMPLE_MAX_STOPS);
}

static int numeric_flag(const char *a) {
    static const char *const flags[] = {"--max-tokens", "--temperature", "--top-p", "--top-k", "--min-p",
                                        "--repeat-penalty", "--seed", "--ctx", "--threads"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (!strcmp(a, flags[i])) return 1;
    return 0;
}

/* Parse the shared options; messages (chat) collected in order. Returns -1
 * to go on, else an exit code. */
static int parse(int argc, char **argv, int chat, gen_opts_t *o, const char **prompt, chat_message_t *msgs,
                 int *n_msgs) {
    const char *name = chat ? "chat" : "generate";
    o->model = DEFAULT_LLM;
    o->sp = sample_params_default();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            gen_usage(stdout, chat);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sluice %s: %s needs a value (try --help)\n", name, a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) o->model = v;
        else if (!chat && !strcmp(a, "--prompt")) *prompt = v;
        else if (chat && (!strcmp(a, "--system") || !strcmp(a, "--user") || !strcmp(a, "--assistant"))) {
            if (*n_msgs >= MAX_MESSAGES) {
                fprintf(stderr, "sluice chat: more than %d messages\n", MAX_MESSAGES);
                return 2;
            }
            msgs[(*n_msgs)++] = (chat_message_t){.role = a + 2, .content = v, .content_len = strlen(v)};
        } else if (!strcmp(a, "--stop")) {
            if (o->sp.n_stops >= SAMPLE_MAX_STOPS) {
                fprintf(stderr, "sluice %s: more than %d --stop strings\n", name, SAMPLE_MAX_STOPS);
                return 2;
            }
            o->sp.stops[o->sp.n_stops++] = v;
        } else if (numeric_flag(a)) {
            char *end = NULL;
            double d = strtod(v, &end);
            if (end == v || *end || d != d || d < -1e18 || d > 1e18) {
                fprintf(stderr, "sluice %s: %s wants a number, not '%s'\n", name, a, v);
                return 2;
            }
            if (!strcmp(a, "--max-tokens")) o->sp.max_tokens = (int)d;
            else if (!strcmp(a, "--temperature")) o->sp.temperature = (float)d;
            else if (!strcmp(a, "--top-p")) o->sp.top_p = (float)d;
            else if (!strcmp(a, "--top-k")) o->sp.top_k = (int)d;
            else if (!strcmp(a, "--min-p")) o->sp.min_p = (float)d;
            else if (!strcmp(a, "--repeat-penalty")) o->sp.repetition_penalty = (float)d;
            else if (!strcmp(a, "--ctx")) o->ctx = (int)d;
            else if (!strcmp(a, "--threads")) o->threads = (int)d;
            else {
                o->sp.seed = strtoull(v, NULL, 10);
                o->seed_given = 1;
            }
        } else {
            fprintf(stderr, "sluice %s: unknown option '%s' (try --help)\n", name, a);
            return 2;
        }
    }
    if (o->sp.max_tokens < 0 || o->ctx < 0 || o->threads < 0) {
        fprintf(stderr, "sluice %s: --max-tokens, --ctx and --threads must not be negative\n", name);
        return 2;
    }
    if (!o->seed_given) o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    char err[256];
    sample_seq_t probe;
    if (sample_seq_init(&probe, &o->sp, 1 << 20, NULL, 0, err, sizeof err)) {
        fprintf(stderr, "sluice %s: %s\n", name, err);
        return 2;
    }
    sample_seq_free(&probe);
    return -1;
}

int cli_generate(int argc, char **argv) {
    gen_opts_t o = {0};
    const char *prompt = NULL;
    int n_msgs = 0, rc = parse(argc, argv, 0, &o, &prompt, NULL, &n_msgs);
    if (rc >= 0) return rc;
    if (!prompt) {
        fprintf(stderr, "sluice generate: give --prompt TEXT (try --help)\n");
        return 2;
    }
    gen_t g;
    char err[1024];
    if ((rc = gen_open(&g, &o, err, sizeof err))) {
        fprintf(stderr, "sluice generate: %s\n", err);
        gen_close(&g);
        return rc;
    }
    if (o.sp.temperature > 0 && !o.seed_given) fprintf(stderr, "sluice: seed %llu\n", (unsigned long long)o.sp.seed);
    rc = gen_run(&g, prompt, strlen(prompt), &o, NULL);
    gen_close(&g);
    return rc;
}

/* Render msgs and answer; the answer joins the history. */
static int chat_turn(gen_t *g, const gen_opts_t *o, chat_message_t *msgs, int *n_msgs, char **owned) {
    char err[512];
    size_t len = 0;
    if (chat_render(&g->chat, msgs, (size_t)*n_msgs, 1, NULL, 0, &len, err, sizeof err)) {
        fprintf(stderr, "sluice chat: %s\n", err);
        return 2;
    }
    char *text = malloc(len + 1);
    if (!text) return 1;
    chat_render(&g->chat, msgs, (size_t)*n_msgs, 1, text, len + 1, &len, err, sizeof err);
    char *answer = NULL;
    int rc = gen_run(g, text, len, o, &answer);
    free(text);
    if (rc == 0 && *n_msgs < MAX_MESSAGES) {
        owned[*n_msgs] = answer;
        msgs[(*n_msgs)++] = (chat_message_t){.role = "assistant", .content = answer, .content_len = strlen(answer)};
    } else {
        free(answer);
    }
    return rc;
}

int cli_chat(int argc, char **argv) {
    gen_opts_t o = {0};
    chat_message_t msgs[MAX_MESSAGES];
    char *owned[MAX_MESSAGES] = {0};
    int n_msgs = 0, rc = parse(argc, argv, 1, &o, NULL, msgs, &n_msgs);
    if (rc >= 0) return rc;
    int has_user = 0;
    for (int i = 0; i < n_msgs; i++) {
        has_user |= !strcmp(msgs[i].role, "user");
        if (chat_has_control_text(msgs[i].content, msgs[i].content_len)) {
            fprintf(stderr, "sluice chat: message %d holds a control token's text (<|im_start|> ...)\n", i + 1);
            return 2;
        }
    }
    gen_t g;
    char err[1024];
    if ((rc = gen_open(&g, &o, err, sizeof err))) {
        fprintf(stderr, "sluice chat: %s\n", err);
        gen_close(&g);
        return rc;
    }
    if (g.chat.kind == CHAT_NONE) {
        fprintf(stderr, "sluice chat: %s has no chat template we know; use `sluice generate`\n", o.model);
        gen_close(&g);
        return 2;
    }
    if (has_user) {
        rc = chat_turn(&g, &o, msgs, &n_msgs, owned);
    } else {
        int tty = isatty(0);
        char *line = NULL;
        size_t cap = 0;
        ssize_t got;
        rc = 0;
        while (rc == 0 && n_msgs < MAX_MESSAGES - 1) {
            if (tty) fputs("> ", stderr);
            if ((got = getline(&line, &cap, stdin)) <= 0) break;
            while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
            if (got == 0) continue;
            if (chat_has_control_text(line, (size_t)got)) {
                fprintf(stderr, "sluice chat: that line holds a control token's text; not sent\n");
                continue;
            }
            owned[n_msgs] = strdup(line);
            if (!owned[n_msgs]) break;
            msgs[n_msgs] = (chat_message_t){.role = "user", .content = owned[n_msgs], .content_len = (size_t)got};
            n_msgs++;
            rc = chat_turn(&g, &o, msgs, &n_msgs, owned);
        }
        free(line);
    }
    for (int i = 0; i < MAX_MESSAGES; i++) free(owned[i]);
    gen_close(&g);
    return rc;
}
