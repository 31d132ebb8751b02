/* api/http/routes_gen.c - POST /v1/chat/completions and POST /v1/completions
 * (OpenAI-compatible): the generation job (api/gen_job.h) over HTTP.
 *
 * The handler parses and tokenizes on the HTTP thread and submits one
 * scheduler request per choice (batcher/sched.h). Without `stream` it
 * returns API_ASYNC and the last on_done wakes the request; the answer is
 * written on an HTTP thread. With `stream` it queues a callback response at
 * once: the scheduler's callbacks append server-sent events to a buffer and
 * resume the connection; MHD's content reader hands the buffer out and
 * suspends the connection when it is empty. So no thread ever waits for a
 * stream. A connection that closes (client gone) cancels every choice still
 * running, which frees its KV blocks at the next step.
 *
 * Lifetime: the state (gen_http_t) is shared by the request, the streamed
 * response and each accepted submit; a reference count frees it when the
 * last of them lets go (on_done comes exactly once per accepted submit).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/gen_job.h"
#include "api/http/routes.h"
#include "api/http/ctl.h"
#include "batcher/sched.h"
#include "kernels/util.h"

typedef struct gen_http gen_http_t;

typedef struct {
    gen_http_t *h;
    int index;
} gen_slot_t;

struct gen_http {
    pthread_mutex_t mu;
    int refs;
    api_req_t *r;              /* NULL once the connection is gone */
    struct MHD_Connection *conn;
    sched_t *sched;
    const api_sched_ops_t *ops;
    api_gen_req_t *g;
    const tok_t *tok;
    int n;                     /* choices */
    api_gen_choice_t *ch;      /* (n) */
    gen_slot_t *slots;         /* (n) */
    uint64_t *ids;             /* (n) scheduler ids */
    int *done, *role_sent;     /* (n) */
    int n_submitted, n_done;
    int refused;               /* a submit failed: the handler answered */
    api_gen_usage_t usage;
    double ttft_s;             /* first choice's */
    int preemptions;
    sched_finish_t worst;      /* the most serious finish among the choices */
    char err[256];
    char id[48];
    int64_t created;
    /* streaming */
    int stream;
    char *buf;                 /* events not yet sent: [off, len) */
    size_t off, len, cap;
    int ended;                 /* the last event is in buf */
    int suspended;             /* the reader suspended the connection */
};

static void gen_unref(gen_http_t *h) {
    pthread_mutex_lock(&h->mu);
    int left = --h->refs;
    pthread_mutex_unlock(&h->mu);
    if (left) return;
    for (int i = 0; i < h->n; i++) api_gen_choice_clear(&h->ch[i]);
    free(h->ch);
    free(h->slots);
    free(h->ids);
    free(h->done);
    free(h->role_sent);
    free(h->buf);
    api_gen_req_free(h->g);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* h->mu held. */
static void buf_add(gen_http_t *h, char *ev, size_t n) {
    if (!ev) return;
    if (h->off && h->off == h->len) h->off = h->len = 0;
    if (util_grow(&h->buf, &h->cap, h->len + n, 4096)) {
        free(ev);
        return;
    }
    memcpy(h->buf + h->len, ev, n);
    h->len += n;
    free(ev);
}

/* h->mu held: let the reader run again. */
static void stream_kick(gen_http_t *h) {
    if (h->suspended && h->conn) {
        h->suspended = 0;
        MHD_resume_connection(h->conn);
    }
}

static api_gen_finish_t finish_of(sched_finish_t f) {
    switch (f) {
    case SCHED_FINISH_STOP: return API_GEN_FINISH_STOP;
    case SCHED_FINISH_LENGTH: return API_GEN_FINISH_LENGTH;
    case SCHED_FINISH_CANCELLED: return API_GEN_FINISH_CANCELLED;
    case SCHED_FINISH_SHUTDOWN: return API_GEN_FINISH_SHUTDOWN;
    case SCHED_FINISH_DEADLINE: return API_GEN_FINISH_DEADLINE;
    default: return API_GEN_FINISH_ERROR;
    }
}

static void on_delta(void *user, const sched_delta_t *d) {
    gen_slot_t *s = user;
    gen_http_t *h = s->h;
    pthread_mutex_lock(&h->mu);
    api_gen_choice_t *c = &h->ch[s->index];
    size_t lp_at = c->logprobs ? json_array_size(c->logprobs) : 0;
    api_gen_choice_add_delta(c, h->g, h->tok, d, !h->stream);
    if (h->stream && h->conn && (d->text_len || !h->role_sent[s->index] || d->logprobs)) {
        json_t *lps = NULL;
        if (c->logprobs && json_array_size(c->logprobs) > lp_at) {
            lps = json_array();
            for (size_t i = lp_at; i < json_array_size(c->logprobs); i++)
                json_array_append(lps, json_array_get(c->logprobs, i));
        }
        size_t n = 0;
        int role = h->g->kind == API_GEN_CHAT && !h->role_sent[s->index];
        char *ev = api_gen_chunk_sse(h->g, h->id, h->created, s->index, role, d->text, d->text_len,
                                     API_GEN_FINISH_NONE, lps, &n);
        h->role_sent[s->index] = 1;
        buf_add(h, ev, n);
        stream_kick(h);
    }
    pthread_mutex_unlock(&h->mu);
}

/* h->mu held, every choice done: the closing events of a stream. */
static void stream_close(gen_http_t *h) {
    size_t n = 0;
    if (h->worst == SCHED_FINISH_ERROR) {
        char *e = api_error_json(500, "compute_failed", NULL, h->err, 0);
        if (e) {
            size_t l = strlen(e);
            char *ev = malloc(l + 9);
            if (ev) {
                memcpy(ev, "data: ", 6);
                memcpy(ev + 6, e, l);
                memcpy(ev + 6 + l, "\n\n", 3);
                buf_add(h, ev, l + 8);
            }
            free(e);
        }
    }
    if (h->g->include_usage) {
        char *ev = api_gen_usage_sse(h->g, h->id, h->created, &h->usage, &n);
        buf_add(h, ev, n);
    }
    buf_add(h, strdup("data: [DONE]\n\n"), 14);
    h->ended = 1;
}

static void on_done(void *user, const sched_result_t *res) {
    gen_slot_t *s = user;
    gen_http_t *h = s->h;
    pthread_mutex_lock(&h->mu);
    api_gen_choice_t *c = &h->ch[s->index];
    c->finish = finish_of(res->finish);
    c->completion_tokens = res->completion_tokens;
    h->done[s->index] = 1;
    h->n_done++;
    h->usage.completion_tokens += res->completion_tokens;
    if (s->index % h->g->n == 0) { /* a prompt counts once, whatever n */
        h->usage.prompt_tokens += res->prompt_tokens;
        h->usage.cached_tokens += res->cached_prompt_tokens;
    }
    h->preemptions += res->preemptions;
    if (s->index == 0) h->ttft_s = res->ttft_s;
    if (h->n_done == 1 || api_gen_finish_rank(res->finish) > api_gen_finish_rank(h->worst)) { /* the first, or worse */
        h->worst = res->finish;
        if (res->message && res->message[0]) snprintf(h->err, sizeof h->err, "%s", res->message);
    }
    int all = h->n_done == h->n_submitted && !h->refused;
    if (h->stream && h->conn && !h->refused) {
        size_t n = 0;
        int role = h->g->kind == API_GEN_CHAT && !h->role_sent[s->index];
        char *ev = api_gen_chunk_sse(h->g, h->id, h->created, s->index, role, NULL, 0, c->finish, NULL, &n);
        h->role_sent[s->index] = 1;
        buf_add(h, ev, n);
        if (all) stream_close(h);
        stream_kick(h);
    }
    api_req_t *wake = !h->stream && all ? h->r : NULL;
    if (wake) api_req_wake(wake); /* under h->mu: cleanup cannot free r meanwhile */
    pthread_mutex_unlock(&h->mu);
    gen_unref(h);
}

/* The request's log fields and metrics: token counts, TTFT, finish reason. h->mu held. */
static void note_result(gen_http_t *h, api_req_t *r) {
    json_t *f = json_pack("{s:i,s:i,s:i,s:s,s:i}", "prompt_tokens", h->usage.prompt_tokens, "completion_tokens",
                          h->usage.completion_tokens, "cached_tokens", h->usage.cached_tokens, "finish_reason",
                          api_gen_sched_finish_word(h->worst), "choices", h->n);
    if (h->ttft_s >= 0) json_object_set_new(f, "ttft_s", json_real(h->ttft_s));
    if (h->preemptions) json_object_set_new(f, "preemptions", json_integer(h->preemptions));
    if (h->g->user[0]) json_object_set_new(f, "user", json_string(h->g->user));
    json_decref(r->log_extra);
    r->log_extra = f;
}

static int gen_finish(api_req_t *r) {
    gen_http_t *h = r->work;
    pthread_mutex_lock(&h->mu);
    note_result(h, r);
    sched_finish_t w = h->worst;
    char err[256];
    snprintf(err, sizeof err, "%s", h->err);
    size_t len = 0;
    char *body = NULL;
    if (w == SCHED_FINISH_STOP || w == SCHED_FINISH_LENGTH)
        body = api_gen_answer_json(h->g, h->id, h->created, h->ch, &h->usage, &len);
    pthread_mutex_unlock(&h->mu);
    switch (w) {
    case SCHED_FINISH_STOP:
    case SCHED_FINISH_LENGTH:
        if (!body) return api_respond_error(r, 503, "out_of_memory", NULL, "out of memory writing the answer");
        return api_respond_raw(r, 200, body, len, "application/json");
    case SCHED_FINISH_DEADLINE:
        return api_respond_error(r, 408, "deadline_exceeded", NULL, "the request ran past its deadline: %s", err);
    case SCHED_FINISH_CANCELLED: return api_respond_error(r, 503, "cancelled", NULL, "the request was cancelled");
    case SCHED_FINISH_SHUTDOWN:
        return api_respond_error(r, 503, "shutting_down", NULL, "server shutting down: %s", err);
    default: return api_respond_error(r, 500, "compute_failed", NULL, "%s", err[0] ? err : "generation failed");
    }
}

/* The connection closed (answered, or the client went away). */
static void gen_cleanup(api_req_t *r) {
    gen_http_t *h = r->work;
    r->work = NULL;
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    h->r = NULL;
    h->conn = NULL;
    int n = h->n_submitted;
    uint64_t ids[API_GEN_MAX_N * API_GEN_MAX_PROMPTS];
    int live = 0;
    for (int i = 0; i < n; i++)
        if (!h->done[i]) ids[live++] = h->ids[i];
    pthread_mutex_unlock(&h->mu);
    for (int i = 0; i < live; i++) h->ops->cancel(h->sched, ids[i]); /* a client gone: its blocks go back */
    gen_unref(h);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos;
    gen_http_t *h = cls;
    pthread_mutex_lock(&h->mu);
    if (h->off < h->len) {
        size_t n = h->len - h->off < max ? h->len - h->off : max;
        memcpy(out, h->buf + h->off, n);
        h->off += n;
        pthread_mutex_unlock(&h->mu);
        return (ssize_t)n;
    }
    if (h->ended || !h->conn) {
        api_req_t *r = h->r;
        if (r) note_result(h, r);
        pthread_mutex_unlock(&h->mu);
        if (r) api_req_note(r);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    h->suspended = 1;
    MHD_suspend_connection(h->conn);
    pthread_mutex_unlock(&h->mu);
    return 0;
}

static void stream_free(void *cls) { gen_unref(cls); }

/* Silent for a while (a long prefill, a queue, a slow step): an SSE comment,
 * which clients skip, so nothing between us and the client takes the stream
 * for a dead one. Only when nothing else waits to go. */
static void stream_keepalive(void *cls) {
    gen_http_t *h = cls;
    pthread_mutex_lock(&h->mu);
    if (h->conn && !h->ended && h->off == h->len) {
        static const char KEEPALIVE[] = ": keep-alive\n\n";
        buf_add(h, strdup(KEEPALIVE), sizeof KEEPALIVE - 1);
        stream_kick(h);
    }
    pthread_mutex_unlock(&h->mu);
}

static int route_gen(api_req_t *r, api_gen_kind_t kind) {
    json_error_t je;
    json_t *body = json_loadb(r->body, r->body_len, 0, &je);
    if (!body)
        return api_respond_error(r, 400, "invalid_json", NULL, "request body is not valid JSON: %s (at byte %d)",
                                 je.text, je.position);
    api_err_t e = {0};
    api_gen_req_t *g = NULL;
    int rc = api_gen_parse(r->ctx->reg, body, kind, &g, &e);
    json_decref(body);
    if (rc) return api_respond_error(r, e.status, e.code, e.param, "%s", e.message);
    snprintf(r->model_name, sizeof r->model_name, "%s", g->model_name);
    if (!r->ctx->sched || !r->ctx->sched_ops) { /* checked after the body: a bad request is 400 on any server */
        api_gen_req_free(g);
        return api_respond_error(r, 503, "generation_unavailable", NULL, "this server has no generation scheduler");
    }
    char err[512];
    gen_http_t *h = calloc(1, sizeof *h);
    int n = api_gen_choices(g);
    if (h) {
        h->ch = calloc((size_t)n, sizeof *h->ch);
        h->slots = calloc((size_t)n, sizeof *h->slots);
        h->ids = calloc((size_t)n, sizeof *h->ids);
        h->done = calloc((size_t)n, sizeof *h->done);
        h->role_sent = calloc((size_t)n, sizeof *h->role_sent);
    }
    if (!h || !h->ch || !h->slots || !h->ids || !h->done || !h->role_sent) {
        if (h) free(h->ch), free(h->slots), free(h->ids), free(h->done), free(h->role_sent);
        free(h);
        api_gen_req_free(g);
        return api_respond_error(r, 503, "out_of_memory", NULL, "out of memory");
    }
    pthread_mutex_init(&h->mu, NULL);
    h->refs = 1; /* the request's */
    h->r = r;
    h->conn = r->conn;
    h->sched = r->ctx->sched;
    h->ops = r->ctx->sched_ops;
    h->g = g;
    h->tok = registry_tokenizer(r->ctx->reg, g->model, err, sizeof err);
    h->n = n;
    h->stream = g->stream;
    h->ttft_s = -1;
    h->worst = SCHED_FINISH_STOP;
    h->created = (int64_t)time(NULL);
    snprintf(h->id, sizeof h->id, "%s-%.32s", kind == API_GEN_CHAT ? "chatcmpl" : "cmpl", r->request_id);
    r->work = h;
    r->cleanup = gen_cleanup;
    r->finish = gen_finish;
    api_ctl_charge_tokens(r->ctx->ctl, r->key, batcher_now_ns(), g->prompt_len[0]);
    /* only a deadline the request asks for: a long generation is no stuck request (--request-timeout-ms is
     * not applied), and a client that gives up disconnects, which cancels */
    int64_t deadline = g->deadline_ms > 0 ? batcher_now_ns() + g->deadline_ms * 1000000LL : 0;
    /* one count more than submitted while submitting: a choice that ends
     * before the next is submitted must not end the request */
    h->n_submitted = 1;
    for (int i = 0; i < n; i++) {
        h->slots[i] = (gen_slot_t){h, i};
        sched_req_t q = api_gen_sched_req(g, i, g->priority, deadline, on_delta, on_done, &h->slots[i]);
        pthread_mutex_lock(&h->mu);
        h->refs++; /* the submit's: its on_done may come before submit returns */
        h->n_submitted++;
        pthread_mutex_unlock(&h->mu);
        uint64_t id = 0;
        rc = h->ops->submit(h->sched, &q, &id, err, sizeof err);
        pthread_mutex_lock(&h->mu);
        if (rc) {
            h->refs--;
            h->n_submitted--;
            h->refused = 1;
        } else {
            h->ids[i] = id;
        }
        pthread_mutex_unlock(&h->mu);
        if (rc) break;
    }
    pthread_mutex_lock(&h->mu);
    h->n_submitted--;
    int m = h->n_submitted;
    /* every choice may have ended already: the non-streamed answer is due now */
    int finished = !rc && !h->stream && h->n_done == m;
    if (!rc && h->stream && h->n_done == m) stream_close(h); /* all ended while submitting */
    pthread_mutex_unlock(&h->mu);
    if (rc) {
        /* those already accepted end at their next step; their on_done sees `refused` */
        for (int i = 0; i < m; i++) h->ops->cancel(h->sched, h->ids[i]);
        switch (rc) {
        case SCHED_EINVAL: return api_respond_error(r, 400, "invalid_value", NULL, "%s", err);
        case SCHED_ETOOBIG: return api_respond_error(r, 400, "context_length_exceeded", "max_tokens", "%s", err);
        case SCHED_EFULL: return api_respond_error(r, 429, "queue_full", NULL, "%s", err);
        case SCHED_EDRAIN: return api_respond_error(r, 503, "shutting_down", NULL, "%s", err);
        case SCHED_EMODEL: return api_respond_error(r, 503, "model_unavailable", "model", "%s", err);
        default: return api_respond_error(r, 503, "out_of_memory", NULL, "%s", err);
        }
    }
    if (finished) return gen_finish(r);
    if (!h->stream) return API_ASYNC;
    pthread_mutex_lock(&h->mu);
    h->refs++; /* the response's */
    pthread_mutex_unlock(&h->mu);
    if (api_respond_stream(r, 200, "text/event-stream", stream_reader, stream_keepalive, h, stream_free))
        return api_respond_error(r, 503, "out_of_memory", NULL, "out of memory starting the stream");
    return API_DONE;
}

int api_route_chat_completions(api_req_t *r) { return route_gen(r, API_GEN_CHAT); }
int api_route_completions(api_req_t *r) { return route_gen(r, API_GEN_COMPLETION); }
