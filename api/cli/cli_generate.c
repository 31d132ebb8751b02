/* api/cli/cli_generate.c - `sluice generate` (plain completion) and `sluice chat`
 * (the model's chat template), streaming tokens to stdout as they come.
 *
 *   sluice generate --prompt TEXT [options]
 *   sluice chat [--system T] [--user T] [--assistant T]... [options]
 *
 * chat with no --user reads one user turn per line from stdin (interactive);
 * each turn reuses the KV cache of the conversation so far (the common prefix
 * of the new prompt's ids and the cached ones). Generation ends at the
 * model's end tokens (<|im_end|>, <|endoftext|>), a --stop string, --max-tokens
 * or the context. A summary line goes to stderr: prompt and generated tokens
 * and tokens/s for each phase.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/cli/cli.h"
#include "engine/arena.h"
#include "engine/bpe.h"
#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/kv.h"
#include "engine/llama.h"
#include "engine/sample.h"

#define DEFAULT_LLM "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
#define CHUNK 256        /* prefill tokens per forward call */
#define MAX_MESSAGES 64

typedef struct {
    const char *model;
    int threads;
    int ctx;
    sample_params_t sp;
    int seed_given;
} gen_opts_t;

typedef struct {
    ops_t *ops;
    arena_t *arena;
    gguf_file_t *file;
    bpe_t *bpe;
    chat_template_t chat;
    llama_model_t *m;
    kv_pool_t *kv;
    kv_seq_t seq;
    int32_t *hist;   /* (ctx) the ids whose K/V are in seq */
    int32_t *ids;    /* (ctx) prompt ids of the current turn */
    float *logits;   /* (vocab) */
    char *piece;     /* bpe_decode_step_max bytes */
    size_t piece_cap;
    int ctx;
} gen_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void gen_close(gen_t *g) {
    if (g->kv) kv_seq_free(g->kv, &g->seq);
    kv_pool_destroy(g->kv);
    llama_destroy(g->m);
    arena_destroy(g->arena);
    bpe_destroy(g->bpe);
    gguf_close(g->file);
    ops_destroy(g->ops);
    free(g->hist);
    free(g->ids);
    free(g->logits);
    free(g->piece);
    memset(g, 0, sizeof *g);
}

/* Returns 0, or 2 (bad model or option) / 1 (runtime) with a message. */
static int gen_open(gen_t *g, const gen_opts_t *o, char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    struct stat st;
    if (stat(o->model, &st) != 0) {
        snprintf(err, errlen, "%s: no such model file (run `make model`)", o->model);
        return 2;
    }
    if (gguf_open(o->model, &g->file, err, errlen) || bpe_create_from_gguf(g->file, &g->bpe, err, errlen)) return 2;
    g->chat = chat_template_from_gguf(g->file);
    g->ops = ops_cpu_create(o->threads);
    if (!g->ops) {
        snprintf(err, errlen, "cannot create the cpu backend");
        return 1;
    }
    /* the arena: the file's bytes (weights stay in its block formats), the
     * workspace and the KV cache of one sequence of ctx positions */
    int64_t n_ctx = 0;
    gguf_get_int(g->file, "llama.context_length", &n_ctx);
    g->ctx = o->ctx > 0 ? o->ctx : 4096;
    if (n_ctx > 0 && g->ctx > n_ctx) g->ctx = (int)n_ctx;
    int n_layers = 0, kvh = 0, hd = 0;
    int64_t v;
    if (gguf_get_int(g->file, "llama.block_count", &v) == GGUF_OK) n_layers = (int)v;
    if (gguf_get_int(g->file, "llama.attention.head_count_kv", &v) == GGUF_OK) kvh = (int)v;
    int64_t H = 0, nh = 1;
    gguf_get_int(g->file, "llama.embedding_length", &H);
    gguf_get_int(g->file, "llama.attention.head_count", &nh);
    hd = nh > 0 ? (int)(H / nh) : 0;
    kv_config_t kc = {.n_layers = n_layers, .n_kv_heads = kvh, .head_dim = hd, .block_size = KV_DEFAULT_BLOCK_SIZE,
                      .n_blocks = (g->ctx + KV_DEFAULT_BLOCK_SIZE - 1) / KV_DEFAULT_BLOCK_SIZE,
                      .dtype = g->ops->kv_dtype};
    size_t budget = (size_t)st.st_size + (64u << 20) + kv_pool_bytes(&kc);
    if (!(g->arena = arena_create(g->ops, budget, err, errlen))) return 1;
    llama_opts_t lo = {.max_tokens = CHUNK, .max_seqs = 1, .max_ctx = g->ctx};
    int rc = llama_load(g->file, g->ops, g->arena, &lo, &g->m, err, errlen);
    if (rc) return rc == LLAMA_EMODEL || rc == LLAMA_EINVAL ? 2 : 1;
    kc = llama_kv_config(g->m);
    kc.n_blocks = (g->ctx + kc.block_size - 1) / kc.block_size;
    if (kv_pool_create(g->arena, &kc, &g->kv, err, errlen) || kv_seq_init(g->kv, &g->seq, g->ctx, err, errlen))
        return 1;
    int V = llama_info(g->m)->vocab;
    g->piece_cap = bpe_decode_step_max(g->bpe) + 8;
    g->hist = malloc((size_t)g->ctx * sizeof *g->hist);
    g->ids = malloc((size_t)g->ctx * sizeof *g->ids);
    g->logits = malloc((size_t)V * sizeof *g->logits);
    g->piece = malloc(g->piece_cap);
    if (!g->hist || !g->ids || !g->logits || !g->piece) {
        snprintf(err, errlen, "out of memory");
        return 1;
    }
    return 0;
}

/* Feed ids[0..n) after what the cache holds; logits of the last. */
static int feed(gen_t *g, const int32_t *ids, int n, char *err, size_t errlen) {
    int32_t slots[CHUNK];
    for (int t0 = 0; t0 < n; t0 += CHUNK) {
        int c = n - t0 < CHUNK ? n - t0 : CHUNK;
        if (kv_seq_append(g->kv, &g->seq, c, slots, err, errlen)) return 1;
        int32_t off[2] = {0, c};
        kv_seq_t *sp[1] = {&g->seq};
        if (llama_forward(g->m, g->kv, ids + t0, off, 1, sp, g->logits, 0, err, errlen)) return 1;
        memcpy(g->hist + g->seq.n_tokens - c, ids + t0, (size_t)c * sizeof *ids);
    }
    return 0;
}

/* Stop ids: every control token that ends a turn in this vocabulary. */
static void add_stop_ids(const bpe_t *b, sample_params_t *p) {
    const char *names[] = {"<|im_end|>", "<|endoftext|>"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int32_t id = bpe_lookup(b, names[i], strlen(names[i]));
        if (id >= 0 && p->n_stop_ids < SAMPLE_MAX_STOP_IDS) p->stop_ids[p->n_stop_ids++] = id;
    }
    int32_t eos = bpe_eos_id(b);
    int have = 0;
    for (int i = 0; i < p->n_stop_ids; i++) have |= p->stop_ids[i] == eos;
    if (eos >= 0 && !have && p->n_stop_ids < SAMPLE_MAX_STOP_IDS) p->stop_ids[p->n_stop_ids++] = eos;
}

static const char *finish_name(sample_finish_t f) {
    return f == SAMPLE_STOP_TOKEN ? "end token" : f == SAMPLE_STOP_STRING ? "stop string" : "length";
}

/* Generate after the prompt text; streams to stdout; the answer's text (for
 * chat history) into *answer (malloc'd) when answer is not NULL. */
static int gen_run(gen_t *g, const char *prompt, size_t plen, const gen_opts_t *o, char **answer) {
    char err[1024];
    size_t n = 0;
    if (bpe_encode(g->bpe, prompt, plen, g->ids, (size_t)g->ctx, &n, BPE_PARSE_SPECIAL, err, sizeof err)) {
        fprintf(stderr, "sluice: %s\n", err);
        return 2;
    }
    sample_params_t sp = o->sp;
    if (n > (size_t)g->ctx) n = (size_t)g->ctx; /* refused just below, with the numbers */
    if (sample_check_budget((int)n, g->ctx, &sp.max_tokens, err, sizeof err)) {
        fprintf(stderr, "sluice: %s (--ctx to change the context)\n", err);
        return 2;
    }
    /* keep the cached prefix the new prompt shares (a chat's earlier turns) */
    int keep = 0;
    while (keep < g->seq.n_tokens && keep < (int)n - 1 && g->hist[keep] == g->ids[keep]) keep++;
    kv_seq_truncate(g->kv, &g->seq, keep);
    sample_seq_t ss;
    if (sample_seq_init(&ss, &sp, llama_info(g->m)->vocab, g->ids, (int)n, err, sizeof err)) {
        fprintf(stderr, "sluice: %s\n", err);
        return 2;
    }
    int rc = 0, n_gen = 0;
    size_t alen = 0, acap = 256;
    char *ans = malloc(acap);
    double t0 = now_s();
    if (!ans || feed(g, g->ids + keep, (int)n - keep, err, sizeof err)) {
        fprintf(stderr, "sluice: %s\n", ans ? err : "out of memory");
        rc = 1;
        goto done;
    }
    double t1 = now_s(), t2 = t1;
    bpe_decoder_t dec;
    bpe_decoder_init(&dec, BPE_SKIP_SPECIAL);
    sample_finish_t fin = SAMPLE_CONTINUE;
    while (fin == SAMPLE_CONTINUE) {
        int32_t tok = sample_next(&ss, g->logits);
        n_gen++;
        int k = bpe_decode_step(g->bpe, &dec, tok, g->piece, g->piece_cap);
        if (k < 0) k = 0;
        /* the context's end is a length stop too */
        if (g->seq.n_tokens + 1 >= g->ctx && ss.p.max_tokens > n_gen) ss.p.max_tokens = n_gen;
        const char *out;
        size_t olen;
        fin = sample_accept(&ss, tok, g->piece, (size_t)k, &out, &olen);
        if (olen) {
            fwrite(out, 1, olen, stdout);
            fflush(stdout);
            if (alen + olen + 1 > acap) {
                while (alen + olen + 1 > acap) acap *= 2;
                char *na = realloc(ans, acap);
                if (!na) {
                    rc = 1;
                    break;
                }
                ans = na;
            }
            memcpy(ans + alen, out, olen);
            alen += olen;
        }
        if (fin != SAMPLE_CONTINUE) break;
        if (feed(g, &tok, 1, err, sizeof err)) {
            fprintf(stderr, "\nsluice: %s\n", err);
            rc = 1;
            break;
        }
    }
    t2 = now_s();
    if (fin == SAMPLE_LENGTH) { /* a character cut by the limit */
        int k = bpe_decode_flush(&dec, g->piece, g->piece_cap);
        if (k > 0) fwrite(g->piece, 1, (size_t)k, stdout);
    }
    fputc('\n', stdout);
    fflush(stdout);
    double pre = t1 - t0, dc = t2 - t1;
    fprintf(stderr,
            "sluice: prompt %zu tokens (%d from cache, prefill %.1f tokens/s), generated %d tokens (%.1f tokens/s), "
            "stopped by %s\n",
            n, keep, pre > 0 ? (double)(n - (size_t)keep) / pre : 0.0, n_gen,
            dc > 0 && n_gen > 1 ? (double)(n_gen - 1) / dc : 0.0, finish_name(fin));
done:
    sample_seq_free(&ss);
    if (answer && rc == 0) {
        ans[alen] = 0;
        *answer = ans;
    } else {
        free(ans);
    }
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
    add_stop_ids(g.bpe, &o.sp);
    if (o.sp.temperature > 0 && !o.seed_given) fprintf(stderr, "sluice: seed %llu\n", (unsigned long long)o.sp.seed);
    rc = gen_run(&g, prompt, strlen(prompt), &o, NULL);
    gen_close(&g);
    return rc;
}

/* A control token's text inside user content would be read as the token. */
static int has_control_text(const char *s, size_t n) {
    static const char *const ctl[] = {"<|im_start|>", "<|im_end|>", "<|endoftext|>"};
    for (size_t i = 0; i < sizeof ctl / sizeof ctl[0]; i++)
        if (memmem(s, n, ctl[i], strlen(ctl[i]))) return 1;
    return 0;
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
        if (has_control_text(msgs[i].content, msgs[i].content_len)) {
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
    add_stop_ids(g.bpe, &o.sp);
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
            if (has_control_text(line, (size_t)got)) {
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
