/* tests/test_serve_gen.c - text generation over real HTTP: a real server, the
 * real SmolLM2 GGUF, the real scheduler. 400s naming fields, concurrent
 * streams identical to each request alone, a KV cache small enough to force
 * preemption, a request larger than the cache, a client that disconnects
 * (its blocks come back), prefix-cache hits, and SIGTERM with streams in
 * flight. Short max_tokens throughout: the suite must stay quick on 2 cores. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <libgen.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tests/support_http.h"
#include "tests/support_llm.h"
#include "tests/support_server.h"

/* The folder of the decoder model. */
static const char *llm_dir(void) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s", support_llm_path());
    return dirname(dir);
}

/* A generation server's settings: the decoder, small workspaces, two compute threads. */
static void gen_config(api_config_t *c, int kv_tokens, int max_seqs) {
    support_server_config(c);
    snprintf(c->models, sizeof c->models, "%s", llm_dir());
    c->kv_cache_tokens = kv_tokens;
    c->max_running_seqs = max_seqs;
    c->http_threads = 4;
    c->cpu_threads = 2;
    c->workspace_tokens = 1024;
    c->workspace_seqs = 64;
}

static void start(support_server_t *s, int kv_tokens, int max_seqs) {
    api_config_t c;
    gen_config(&c, kv_tokens, max_seqs);
    cr_assert_eq(support_server_start(s, &c), 0, "%s", s->err);
}

static json_t *post(int port, const char *path, const char *body, int want_status) {
    http_resp_t r;
    cr_assert_eq(http_request(port, "POST", path, NULL, body, strlen(body), &r, 120000), 0, "no answer to %s", body);
    cr_assert_eq(r.status, want_status, "%s -> %d: %s", body, r.status, r.body);
    json_t *o = json_loads(r.body, 0, NULL);
    cr_assert(o, "not JSON: %s", r.body);
    http_resp_free(&r);
    return o;
}

/* A metric's value from /metrics (the first series whose line starts with prefix); -1 when absent. */
static double metric(int port, const char *prefix) {
    http_resp_t r;
    cr_assert_eq(http_get(port, "/metrics", &r), 0);
    double v = -1;
    for (char *line = r.body; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        if (!strncmp(line, prefix, strlen(prefix))) {
            v = strtod(strrchr(line, ' ') + 1, NULL);
            break;
        }
        line = nl ? nl + 1 : NULL;
    }
    http_resp_free(&r);
    return v;
}

/* A stream's text, its last finish_reason and whether it ended with [DONE]. */
typedef struct {
    char text[4096];
    char finish[32];
    int done, chunks;
    json_t *usage;
} sse_t;

static void parse_sse(const char *body, sse_t *out) {
    memset(out, 0, sizeof *out);
    for (const char *p = body; (p = strstr(p, "data: "));) {
        p += 6;
        const char *end = strstr(p, "\n\n");
        if (!end) break;
        if (!strncmp(p, "[DONE]", 6)) {
            out->done = 1;
            break;
        }
        json_t *o = json_loadb(p, (size_t)(end - p), 0, NULL);
        cr_assert(o, "bad chunk %.*s", (int)(end - p), p);
        out->chunks++;
        json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
        json_t *t = json_object_get(json_object_get(ch, "delta"), "content");
        if (!t) t = json_object_get(ch, "text");
        if (json_is_string(t)) strncat(out->text, json_string_value(t), sizeof out->text - strlen(out->text) - 1);
        json_t *f = json_object_get(ch, "finish_reason");
        if (json_is_string(f)) snprintf(out->finish, sizeof out->finish, "%s", json_string_value(f));
        json_t *u = json_object_get(o, "usage");
        if (json_is_object(u)) out->usage = json_incref(u);
        json_decref(o);
        p = end;
    }
}

Test(serve_gen, refuses_bad_fields_and_requests_over_the_cache, .timeout = 120) {
    support_server_t s;
    start(&s, 256, 8);
    json_t *o = post(s.port, "/v1/chat/completions",
                     "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temprature\":0.5}", 400);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(o, "error"), "param")), "temprature");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(o, "error"), "type")), "invalid_request_error");
    json_decref(o);
    o = post(s.port, "/v1/completions", "{\"prompt\":\"x\",\"top_p\":5}", 400);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(o, "error"), "param")), "top_p");
    json_decref(o);
    o = post(s.port, "/v1/chat/completions", "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(o, "error"), "param")), "messages[0].role");
    json_decref(o);
    /* prompt + max_tokens over the 256-token cache: 400 with the numbers */
    o = post(s.port, "/v1/completions", "{\"prompt\":\"Once upon a time\",\"max_tokens\":300}", 400);
    const char *msg = json_string_value(json_object_get(json_object_get(o, "error"), "message"));
    cr_expect(msg && strstr(msg, "300") && strstr(msg, "256"), "message without the numbers: %s", msg);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(o, "error"), "code")), "context_length_exceeded");
    json_decref(o);
    /* without max_tokens it fits what the cache leaves */
    o = post(s.port, "/v1/completions", "{\"prompt\":\"Once upon a time\",\"max_tokens\":4,\"temperature\":0}", 200);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(o, "usage"), "completion_tokens")), 4);
    json_decref(o);
    support_server_stop(&s);
}

Test(serve_gen, deadline_ends_a_stream_clearly, .timeout = 120) {
    support_server_t s;
    start(&s, 0, 8);
    const char *body = "{\"prompt\":\"1, 2, 3, 4, 5,\",\"max_tokens\":1500,\"temperature\":0,\"stream\":true,"
                       "\"deadline_ms\":400}";
    http_resp_t r;
    cr_assert_eq(http_request(s.port, "POST", "/v1/completions", NULL, body, strlen(body), &r, 60000), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    sse_t e;
    parse_sse(r.body, &e);
    cr_expect(e.done, "no [DONE]");
    cr_expect_str_eq(e.finish, "deadline");
    http_resp_free(&r);
    /* without a stream: 408 */
    json_t *o = post(s.port, "/v1/completions",
                     "{\"prompt\":\"1, 2, 3, 4, 5,\",\"max_tokens\":1500,\"temperature\":0,\"deadline_ms\":400}", 408);
    json_decref(o);
    support_server_stop(&s);
}

/* ---------------------------------------------------------------- many streams at once */

#define N_PROMPTS 16
static const char *const PROMPTS[N_PROMPTS] = {
    "The capital of France is", "Water boils at", "My favourite colour is", "The quick brown fox",
    "In 1969, humans", "To make bread you need", "The sun rises in the", "A cat and a dog",
    "Python is a programming", "The ocean is", "Once upon a time", "The best way to learn",
    "Mountains are", "Coffee tastes", "The first rule of", "Music makes people"};

typedef struct {
    int port, prompt, stream, seeded;
    char text[4096];
    char finish[32];
    int ok;
} job_t;

static void job_body(const job_t *j, char *body, size_t cap) {
    snprintf(body, cap, "{\"prompt\":\"%s\",\"max_tokens\":12,%s%s}", PROMPTS[j->prompt],
             j->seeded ? "\"temperature\":0.8,\"seed\":11" : "\"temperature\":0",
             j->stream ? ",\"stream\":true" : "");
}

static void *run_job(void *arg) {
    job_t *j = arg;
    char body[512];
    job_body(j, body, sizeof body);
    http_resp_t r;
    if (http_request(j->port, "POST", "/v1/completions", NULL, body, strlen(body), &r, 120000) || r.status != 200)
        return NULL;
    if (j->stream) {
        sse_t e;
        parse_sse(r.body, &e);
        snprintf(j->text, sizeof j->text, "%s", e.text);
        snprintf(j->finish, sizeof j->finish, "%s", e.finish);
        j->ok = e.done;
        json_decref(e.usage);
    } else {
        json_t *o = json_loads(r.body, 0, NULL);
        json_t *c = json_array_get(json_object_get(o, "choices"), 0);
        snprintf(j->text, sizeof j->text, "%s", json_string_value(json_object_get(c, "text")));
        snprintf(j->finish, sizeof j->finish, "%s", json_string_value(json_object_get(c, "finish_reason")));
        j->ok = 1;
        json_decref(o);
    }
    http_resp_free(&r);
    return NULL;
}

/* 64 concurrent streams (16 prompts, greedy and seeded) against each alone. */
static void streams_match_alone(int kv_tokens, int expect_preemption) {
    support_server_t s;
    start(&s, kv_tokens, 64);
    job_t alone[2 * N_PROMPTS];
    for (int i = 0; i < 2 * N_PROMPTS; i++) {
        alone[i] = (job_t){.port = s.port, .prompt = i % N_PROMPTS, .seeded = i >= N_PROMPTS};
        run_job(&alone[i]);
        cr_assert(alone[i].ok, "request %d alone failed", i);
    }
    enum { N = 64 };
    job_t jobs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (job_t){.port = s.port, .prompt = i % N_PROMPTS, .stream = 1, .seeded = (i / N_PROMPTS) % 2};
        cr_assert_eq(pthread_create(&th[i], NULL, run_job, &jobs[i]), 0);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        const job_t *a = &alone[jobs[i].prompt + (jobs[i].seeded ? N_PROMPTS : 0)];
        cr_expect(jobs[i].ok, "stream %d did not end with [DONE]", i);
        cr_expect_str_eq(jobs[i].text, a->text, "stream %d (prompt %d, seeded %d) differs from alone: '%s' vs '%s'", i,
                         jobs[i].prompt, jobs[i].seeded, jobs[i].text, a->text);
        cr_expect_str_eq(jobs[i].finish, a->finish);
    }
    double pre = metric(s.port, "sluice_gen_preemptions_total{");
    if (expect_preemption) cr_expect_gt(pre, 0, "the small cache never preempted (%g)", pre);
    cr_expect_eq(metric(s.port, "sluice_gen_sequences{model=\"smollm2-135m-instruct\",state=\"running\"}"), 0);
    support_server_stop(&s);
}

Test(serve_gen, concurrent_streams_match_each_alone, .timeout = 300) { streams_match_alone(0, 0); }

/* 64 sequences of ~5 prompt + 12 new tokens cross into a second block of 16 as they
 * generate: 24 blocks force preemption. */
Test(serve_gen, small_kv_cache_preempts_and_stays_correct, .timeout = 300) { streams_match_alone(24 * 16, 1); }

/* ---------------------------------------------------------------- disconnect, prefix cache */

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

Test(serve_gen, client_disconnect_frees_its_blocks, .timeout = 120) {
    support_server_t s;
    start(&s, 0, 8);
    /* counting goes on and on (greedy): only the cancel ends it early */
    const char *body = "{\"prompt\":\"1, 2, 3, 4, 5, 6, 7, 8,\",\"max_tokens\":1500,\"stream\":true,\"temperature\":0}";
    int fd = connect_to(s.port);
    char req[1024];
    int n = snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    char buf[4096] = "";
    size_t got = 0;
    while (got < sizeof buf - 1 && !strstr(buf, "data: {")) { /* the first chunk: it is generating */
        ssize_t k = read(fd, buf + got, sizeof buf - 1 - got);
        cr_assert_gt(k, 0, "the stream closed early");
        got += (size_t)k;
        buf[got] = '\0';
    }
    const char *used = "sluice_gen_kv_blocks{model=\"smollm2-135m-instruct\",state=\"used\"}";
    const char *cached = "sluice_gen_kv_blocks{model=\"smollm2-135m-instruct\",state=\"cached\"}";
    double u0 = 0, c0 = 0;
    for (int i = 0; i < 100 && u0 - c0 <= 0; i++) { /* the gauges follow the steps */
        u0 = metric(s.port, used), c0 = metric(s.port, cached);
        if (u0 - c0 <= 0) usleep(20000);
    }
    cr_expect_gt(u0 - c0, 0, "no block held while generating (used %g, cached %g, running %g, total %g): %s", u0, c0,
                 metric(s.port, "sluice_gen_sequences{model=\"smollm2-135m-instruct\",state=\"running\"}"),
                 metric(s.port, "sluice_gen_kv_blocks{model=\"smollm2-135m-instruct\",state=\"total\"}"), buf);
    close(fd); /* the client goes away */
    double held = -1, gen = -1;
    for (int i = 0; i < 200; i++) {
        held = metric(s.port, used) - metric(s.port, cached);
        if (held == 0) break;
        usleep(50000);
    }
    cr_expect_eq(held, 0, "blocks still held by a sequence 10 s after its client left");
    gen = metric(s.port, "sluice_gen_generated_tokens_total{");
    cr_expect_lt(gen, 1500, "the sequence ran to its end (%g tokens) instead of being cancelled", gen);
    cr_expect_eq(metric(s.port, "sluice_gen_sequences{model=\"smollm2-135m-instruct\",state=\"running\"}"), 0);
    support_server_stop(&s);
}

Test(serve_gen, repeated_system_prompt_hits_the_prefix_cache, .timeout = 120) {
    support_server_t s;
    start(&s, 0, 8);
    char sys[2048] = "";
    for (int i = 0; i < 12; i++) strcat(sys, "You are a careful assistant who answers briefly and politely. ");
    char body[4096];
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"system\",\"content\":\"%s\"},{\"role\":\"user\",\"content\":\"Hi\"}],"
             "\"max_tokens\":2,\"temperature\":0}", sys);
    json_t *a = post(s.port, "/v1/chat/completions", body, 200);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(json_object_get(a, "usage"), "prompt_tokens_details"),
                                                    "cached_tokens")), 0);
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"system\",\"content\":\"%s\"},{\"role\":\"user\",\"content\":\"Hello\"}],"
             "\"max_tokens\":2,\"temperature\":0}", sys);
    json_t *b = post(s.port, "/v1/chat/completions", body, 200);
    json_int_t cached = json_integer_value(
        json_object_get(json_object_get(json_object_get(b, "usage"), "prompt_tokens_details"), "cached_tokens"));
    cr_expect_gt(cached, 64, "the shared system prompt was not reused (%lld cached tokens)", (long long)cached);
    cr_expect_gt(metric(s.port, "sluice_gen_prefix_cache_hits_total{"), 0);
    cr_expect_gt(metric(s.port, "sluice_gen_prefix_cache_lookups_total{"), 0);
    json_decref(a);
    json_decref(b);
    support_server_stop(&s);
}

/* ---------------------------------------------------------------- SIGTERM with streams in flight */

typedef struct {
    int port;
    sse_t e;
    int status;
} term_job_t;

static void *term_stream(void *arg) {
    term_job_t *j = arg;
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell me about rivers.\"}],\"max_tokens\":40,"
                       "\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}";
    http_resp_t r;
    if (http_request(j->port, "POST", "/v1/chat/completions", NULL, body, strlen(body), &r, 120000) == 0) {
        j->status = r.status;
        parse_sse(r.body, &j->e);
        http_resp_free(&r);
    }
    return NULL;
}

Test(serve_gen, sigterm_ends_streams_cleanly, .timeout = 180) {
    support_proc_t p;
    char dir[600];
    snprintf(dir, sizeof dir, "%s", llm_dir());
    const char *extra[] = {"--models", dir, "--drain-timeout-ms", "60000", "--cpu-threads", "2", NULL};
    cr_assert_eq(support_proc_start(&p, extra), 0, "%s", p.err);
    /* warm: the model loads on first use */
    json_t *w = post(p.port, "/v1/completions", "{\"prompt\":\"hi\",\"max_tokens\":1}", 200);
    json_decref(w);
    enum { N = 4 };
    term_job_t jobs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (term_job_t){.port = p.port};
        pthread_create(&th[i], NULL, term_stream, &jobs[i]);
    }
    /* SIGTERM once they are generating */
    for (int i = 0; i < 200 && metric(p.port, "sluice_gen_generated_tokens_total{") < 8; i++) usleep(20000);
    int rc = support_proc_stop(&p, SIGTERM, 120000);
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    cr_expect_eq(rc, 0, "exit status %d", rc);
    for (int i = 0; i < N; i++) {
        cr_expect_eq(jobs[i].status, 200, "stream %d: status %d", i, jobs[i].status);
        cr_expect(jobs[i].e.done, "stream %d did not end with [DONE]", i);
        cr_expect(!strcmp(jobs[i].e.finish, "length") || !strcmp(jobs[i].e.finish, "stop") ||
                      !strcmp(jobs[i].e.finish, "shutdown"),
                  "stream %d ended with finish_reason '%s'", i, jobs[i].e.finish);
        cr_expect(jobs[i].e.usage, "stream %d: no usage chunk", i);
        json_decref(jobs[i].e.usage);
    }
}

/* ---------------------------------------------------------------- idle streams */

typedef struct {
    int port;
    double took;
    int status;
} hog_t;

/* A non-streamed generation that holds the only running slot for a while. */
/* A generation long enough to hold the one running slot for more than 2 s on
 * a fast CPU (240 tokens took only 1.1 s once the decoder got faster). */
static void *hog(void *arg) {
    hog_t *h = arg;
    const char *body = "{\"prompt\":\"1, 2, 3, 4, 5,\",\"max_tokens\":900,\"temperature\":0}";
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    http_resp_t r;
    h->status = http_request(h->port, "POST", "/v1/completions", NULL, body, strlen(body), &r, 120000) ? 0 : r.status;
    if (h->status) http_resp_free(&r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    h->took = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    return NULL;
}

/* POST body and read the answer as a proxy does: a read that waits more than
 * read_timeout_ms for the next bytes gives up (nginx's proxy_read_timeout).
 * The bytes read into buf (NUL-terminated); -1 when a read timed out. */
static int read_like_a_proxy(int port, const char *path, const char *body, int read_timeout_ms, char *buf, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {read_timeout_ms / 1000, (read_timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char head[256];
    int hn = snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                         "Connection: close\r\nContent-Length: %zu\r\n\r\n", path, strlen(body));
    cr_assert(send(fd, head, (size_t)hn, MSG_NOSIGNAL) == hn && send(fd, body, strlen(body), MSG_NOSIGNAL) > 0);
    size_t len = 0;
    int rc = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r == 0) break;
        if (r < 0) {
            rc = -1;
            break;
        }
        len += (size_t)r;
        if (len + 1 >= cap) break;
    }
    buf[len] = '\0';
    close(fd);
    return rc;
}

/* A stream that waits longer than --idle-timeout-ms for its first token
 * (queued behind another generation) gets SSE keep-alive comments, so a
 * proxy reading with a timeout of the same order does not cut it, and it
 * completes; a connection that is truly idle is still closed. */
Test(serve_gen, idle_stream_kept_alive, .timeout = 120) {
    api_config_t c;
    gen_config(&c, 0, 1); /* one running sequence: the stream waits for the hog's slot */
    c.idle_timeout_ms = 1000;
    c.header_timeout_ms = 0; /* the idle timeout alone closes a silent connection */
    support_server_t s;
    cr_assert_eq(support_server_start(&s, &c), 0, "%s", s.err);
    json_decref(post(s.port, "/v1/completions", "{\"prompt\":\"warm\",\"max_tokens\":1}", 200));
    hog_t h = {.port = s.port};
    pthread_t th;
    pthread_create(&th, NULL, hog, &h);
    struct timespec ts = {0, 200000000L};
    nanosleep(&ts, NULL);
    const char *body = "{\"prompt\":\"Once upon a time\",\"max_tokens\":4,\"temperature\":0,\"stream\":true}";
    static char buf[1 << 16];
    int cut = read_like_a_proxy(s.port, "/v1/completions", body, 1500, buf, sizeof buf);
    pthread_join(th, NULL);
    cr_assert_eq(h.status, 200);
    cr_assert_gt(h.took, 2.0, "the hog took %.2f s: the stream did not wait past the 1 s idle timeout", h.took);
    cr_assert(!strncmp(buf, "HTTP/1.1 200", 12), "%.300s", buf);
    sse_t e;
    parse_sse(buf, &e);
    fprintf(stderr, "idle stream: waited behind %.2f s of generation, %d chunks, [DONE] %d, keep-alives %s\n", h.took,
            e.chunks, e.done, strstr(buf, ": keep-alive\n\n") ? "yes" : "no");
    cr_assert(!cut, "a stream silent for %.2f s waiting for its first token: a reader with a 1.5 s read timeout gave "
              "up: %.300s", h.took, buf);
    cr_assert(e.done, "the stream waiting %.2f s for its first token did not end: %.300s", h.took, buf);
    cr_assert_str_eq(e.finish, "length");
    cr_assert(strstr(buf, ": keep-alive\n\n"), "no keep-alive comment in a stream silent for %.2f s", h.took);
    /* a silent connection is closed after the idle timeout (MHD counts whole seconds) */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {4, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char b[16];
    ssize_t got = recv(fd, b, sizeof b, 0);
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double idle = (t1.tv_sec - ts.tv_sec) + (t1.tv_nsec - ts.tv_nsec) * 1e-9;
    cr_assert_leq(got, 0, "a silent connection got bytes");
    cr_assert_lt(idle, 3.5, "a silent connection stayed open %.2f s with a 1 s idle timeout", idle);
    close(fd);
    support_server_stop(&s);
}
