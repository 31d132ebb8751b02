/* api/http/metrics.c - per-route counters and histograms, and the extra series of /metrics. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http/cache.h"
#include "api/http/metrics.h"
#include "api/http/ratelimit.h"
#include "api/redis/tasks.h"
#include "queue/queue.h"

/* seconds: from half a millisecond (a probe) to a minute (a long-poll) */
static const double BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                 0.25,   0.5,   1,      2.5,   5,    10,    30,    60};
#define N_BUCKETS (int)(sizeof BUCKETS / sizeof BUCKETS[0])

typedef struct {
    uint64_t b[N_BUCKETS + 1]; /* last: above every edge */
    double sum;
    uint64_t count;
} hist_t;

typedef uint64_t status_row_t[600];

static const char *const GEN_KINDS_NAMES[] = {"ttft", "itl", "e2e", "queue"};
#define GEN_KINDS 4

struct api_metrics {
    pthread_mutex_t mu;
    int n_routes;               /* route labels (api_route_label), the last "other" */
    const char **routes;        /* (n_routes) */
    status_row_t *status;       /* (n_routes) answers by status code */
    hist_t *dur;                /* (n_routes) */
    hist_t *compute; /* (n_models) */
    hist_t *gen;     /* (n_models, GEN_KINDS): generation latencies */
    int n_models;
    atomic_ullong auth[API_AUTH_N];
    atomic_ullong rate[3];
};

int api_metrics_create(int n_models, const api_route_t *table, int n_table, api_metrics_t **out) {
    *out = NULL;
    api_metrics_t *m = calloc(1, sizeof *m);
    if (!m) return -1;
    pthread_mutex_init(&m->mu, NULL);
    m->n_models = n_models;
    m->n_routes = api_route_label_count(table, n_table);
    m->compute = calloc((size_t)(n_models > 0 ? n_models : 1), sizeof *m->compute);
    m->gen = calloc((size_t)(n_models > 0 ? n_models : 1) * GEN_KINDS, sizeof *m->gen);
    m->routes = calloc((size_t)m->n_routes, sizeof *m->routes);
    m->status = calloc((size_t)m->n_routes, sizeof *m->status);
    m->dur = calloc((size_t)m->n_routes, sizeof *m->dur);
    if (!m->compute || !m->gen || !m->routes || !m->status || !m->dur) {
        api_metrics_destroy(m);
        return -1;
    }
    for (int i = 0; i < m->n_routes; i++) m->routes[i] = api_route_label(table, n_table, i);
    *out = m;
    return 0;
}

void api_metrics_destroy(api_metrics_t *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m->compute);
    free(m->gen);
    free(m->routes);
    free(m->status);
    free(m->dur);
    free(m);
}

static void hist_add(hist_t *h, double v) {
    int i = 0;
    while (i < N_BUCKETS && v > BUCKETS[i]) i++;
    h->b[i]++;
    h->sum += v;
    h->count++;
}

void api_metrics_request(api_metrics_t *m, int r, unsigned status, double seconds) {
    if (!m) return;
    if (r < 0 || r >= m->n_routes) r = m->n_routes - 1;
    pthread_mutex_lock(&m->mu);
    if (status < 600) m->status[r][status]++;
    hist_add(&m->dur[r], seconds);
    pthread_mutex_unlock(&m->mu);
}

void api_metrics_batch(api_metrics_t *m, int model, double compute_s) {
    if (!m || model < 0 || model >= m->n_models) return;
    pthread_mutex_lock(&m->mu);
    hist_add(&m->compute[model], compute_s);
    pthread_mutex_unlock(&m->mu);
}

void api_metrics_gen_observe(void *user, int model, const char *kind, double seconds) {
    api_metrics_t *m = user;
    if (!m || model < 0 || model >= m->n_models || !kind) return;
    for (int k = 0; k < GEN_KINDS; k++)
        if (!strcmp(kind, GEN_KINDS_NAMES[k])) {
            pthread_mutex_lock(&m->mu);
            hist_add(&m->gen[(size_t)model * GEN_KINDS + k], seconds);
            pthread_mutex_unlock(&m->mu);
        }
}

void api_metrics_auth_reject(api_metrics_t *m, int reason) {
    if (m && reason >= 0 && reason < API_AUTH_N) atomic_fetch_add(&m->auth[reason], 1);
}

void api_metrics_rate_limited(api_metrics_t *m, int which) {
    if (m && which > 0 && which < 3) atomic_fetch_add(&m->rate[which], 1);
}

/* ---------------------------------------------------------------- text */

typedef struct {
    char **buf;
    size_t *len, *cap;
    int oom;
} out_t;

static void P(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void P(out_t *o, const char *fmt, ...) {
    if (o->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = *o->cap - *o->len;
        int n = vsnprintf(*o->buf + *o->len, room, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if ((size_t)n < room) {
            *o->len += (size_t)n;
            return;
        }
        size_t nc = *o->cap * 2 + (size_t)n + 1;
        char *nb = realloc(*o->buf, nc);
        if (!nb) {
            o->oom = 1;
            return;
        }
        *o->buf = nb;
        *o->cap = nc;
    }
}

/* Label values here are model and queue names and fixed words; escape anyway. */
static const char *esc(const char *s, char *buf, size_t len) {
    size_t j = 0;
    for (; *s && j + 2 < len; s++) {
        if (*s == '"' || *s == '\\') buf[j++] = '\\';
        if (*s == '\n') {
            buf[j++] = '\\';
            buf[j++] = 'n';
            continue;
        }
        buf[j++] = *s;
    }
    buf[j] = '\0';
    return buf;
}

static void hist_out(out_t *o, const char *name, const char *label, const char *value, const hist_t *h) {
    char e[300];
    esc(value, e, sizeof e);
    uint64_t cum = 0;
    for (int i = 0; i < N_BUCKETS; i++) {
        cum += h->b[i];
        P(o, "%s_bucket{%s=\"%s\",le=\"%g\"} %llu\n", name, label, e, BUCKETS[i], (unsigned long long)cum);
    }
    P(o, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %llu\n", name, label, e, (unsigned long long)h->count);
    P(o, "%s_sum{%s=\"%s\"} %.9g\n%s_count{%s=\"%s\"} %llu\n", name, label, e, h->sum, name, label, e,
      (unsigned long long)h->count);
}

/* The generation series of every decoder model (those the scheduler has seen). */
static void gen_out(out_t *o, const api_metrics_sources_t *src, const hist_t *gen, int n_models) {
    registry_t *reg = src->reg;
    int nm = reg ? registry_count(reg) : 0;
    if (nm > n_models) nm = n_models;
    sched_stats_t *st = calloc((size_t)(nm > 0 ? nm : 1), sizeof *st);
    if (!st) return;
    char e[300];
    for (int i = 0; i < nm; i++) src->sched_stats(src->sched, i, &st[i]);
    static const char *const help[GEN_KINDS] = {
        "Submit to first generated token.", "Between two tokens of one request.", "Submit to the last token.",
        "Submit to first admission into the running set."};
    for (int k = 0; k < GEN_KINDS; k++) {
        P(o, "# HELP sluice_gen_%s_seconds %s\n# TYPE sluice_gen_%s_seconds histogram\n", GEN_KINDS_NAMES[k], help[k],
          GEN_KINDS_NAMES[k]);
        char name[64];
        snprintf(name, sizeof name, "sluice_gen_%s_seconds", GEN_KINDS_NAMES[k]);
        for (int i = 0; i < nm; i++) {
            registry_model_info_t info;
            if (!st[i].submitted && !gen[(size_t)i * GEN_KINDS + k].count) continue;
            if (registry_info(reg, i, &info)) continue;
            hist_out(o, name, "model", info.name, &gen[(size_t)i * GEN_KINDS + k]);
        }
    }
    const struct { const char *name, *help; size_t off; } counters[] = {
        {"sluice_gen_requests_total", "Generation requests (choices) finished.", offsetof(sched_stats_t, finished)},
        {"sluice_gen_prompt_tokens_total", "Prompt tokens of finished requests.", offsetof(sched_stats_t, prompt_tokens)},
        {"sluice_gen_prefill_tokens_total", "Tokens prefilled (prefix-cache hits skip them, recompute adds).",
         offsetof(sched_stats_t, prefill_tokens)},
        {"sluice_gen_generated_tokens_total", "Tokens generated.", offsetof(sched_stats_t, generated_tokens)},
        {"sluice_gen_preemptions_total", "Running sequences preempted for KV blocks (recomputed later).",
         offsetof(sched_stats_t, preemptions)},
        {"sluice_gen_prefix_cache_lookups_total", "Full prompt blocks looked up in the prefix cache.",
         offsetof(sched_stats_t, prefix_lookups)},
        {"sluice_gen_prefix_cache_hits_total", "Of them, found.", offsetof(sched_stats_t, prefix_hits)},
    };
    for (size_t c = 0; c < sizeof counters / sizeof counters[0]; c++) {
        P(o, "# HELP %s %s\n# TYPE %s counter\n", counters[c].name, counters[c].help, counters[c].name);
        for (int i = 0; i < nm; i++) {
            registry_model_info_t info;
            if (!st[i].submitted || registry_info(reg, i, &info)) continue;
            P(o, "%s{model=\"%s\"} %llu\n", counters[c].name, esc(info.name, e, sizeof e),
              (unsigned long long)*(const uint64_t *)((const char *)&st[i] + counters[c].off));
        }
    }
    for (int fam = 0; fam < 2; fam++) {
        if (fam == 0) P(o, "# HELP sluice_gen_sequences Generation sequences by state.\n# TYPE sluice_gen_sequences gauge\n");
        else
            P(o, "# HELP sluice_gen_kv_blocks KV cache blocks: used (by sequences or the prefix cache), cached "
                 "(prefix cache only, evictable), total.\n# TYPE sluice_gen_kv_blocks gauge\n");
        for (int i = 0; i < nm; i++) {
            registry_model_info_t info;
            if (!st[i].submitted || registry_info(reg, i, &info)) continue;
            esc(info.name, e, sizeof e);
            if (fam == 0) {
                P(o, "sluice_gen_sequences{model=\"%s\",state=\"running\"} %d\n", e, st[i].running);
                P(o, "sluice_gen_sequences{model=\"%s\",state=\"waiting\"} %d\n", e, st[i].waiting);
            } else {
                P(o, "sluice_gen_kv_blocks{model=\"%s\",state=\"used\"} %d\n", e, st[i].kv_blocks_used);
                P(o, "sluice_gen_kv_blocks{model=\"%s\",state=\"cached\"} %d\n", e, st[i].kv_blocks_cached);
                P(o, "sluice_gen_kv_blocks{model=\"%s\",state=\"total\"} %d\n", e, st[i].kv_blocks_total);
            }
        }
    }
    free(st);
}

int api_metrics_append(api_metrics_t *m, const api_metrics_sources_t *src, char **buf, size_t *len, size_t *cap) {
    if (!m) return 0;
    out_t o = {buf, len, cap, 0};
    size_t len0 = *len;
    char e[300];
    /* per route */
    /* copy under the lock, write without it */
    const int nr = m->n_routes;
    const char **labels = m->routes;
    status_row_t *status = malloc((size_t)nr * sizeof *status);
    hist_t *dur = malloc((size_t)nr * sizeof *dur);
    hist_t *comp = calloc((size_t)(m->n_models > 0 ? m->n_models : 1), sizeof *comp);
    hist_t *gen = calloc((size_t)(m->n_models > 0 ? m->n_models : 1) * GEN_KINDS, sizeof *gen);
    if (!status || !dur || !comp || !gen) {
        free(status);
        free(dur);
        free(comp);
        free(gen);
        return -1;
    }
    pthread_mutex_lock(&m->mu);
    memcpy(status, m->status, (size_t)nr * sizeof *status);
    memcpy(dur, m->dur, (size_t)nr * sizeof *dur);
    memcpy(comp, m->compute, (size_t)m->n_models * sizeof *comp);
    memcpy(gen, m->gen, (size_t)m->n_models * GEN_KINDS * sizeof *gen);
    pthread_mutex_unlock(&m->mu);

    P(&o, "# HELP sluice_requests_total HTTP requests answered, by route pattern and status code.\n");
    P(&o, "# TYPE sluice_requests_total counter\n");
    for (int r = 0; r < nr; r++)
        for (int st = 100; st < 600; st++)
            if (status[r][st])
                P(&o, "sluice_requests_total{route=\"%s\",status=\"%d\"} %llu\n", labels[r], st,
                  (unsigned long long)status[r][st]);
    P(&o, "# HELP sluice_request_duration_seconds Receipt to response, by route pattern.\n");
    P(&o, "# TYPE sluice_request_duration_seconds histogram\n");
    for (int r = 0; r < nr; r++)
        if (dur[r].count) hist_out(&o, "sluice_request_duration_seconds", "route", labels[r], &dur[r]);

    registry_t *reg = src->reg;
    int nm = reg ? registry_count(reg) : 0;
    P(&o, "# HELP sluice_compute_seconds Forward pass of one micro-batch, by model.\n");
    P(&o, "# TYPE sluice_compute_seconds histogram\n");
    for (int i = 0; i < nm && i < m->n_models; i++) {
        registry_model_info_t info;
        if (registry_info(reg, i, &info)) continue;
        hist_out(&o, "sluice_compute_seconds", "model", info.name, &comp[i]);
    }
    if (src->sched && src->sched_stats) gen_out(&o, src, gen, m->n_models);
    /* per model */
    static const char *states[] = {"unloaded", "loading", "ready", "failed"};
    P(&o, "# HELP sluice_model_state 1 for the state the model is in.\n# TYPE sluice_model_state gauge\n");
    for (int i = 0; i < nm; i++) {
        registry_model_info_t info;
        if (registry_info(reg, i, &info)) continue;
        esc(info.name, e, sizeof e);
        for (int k = 0; k < 4; k++)
            P(&o, "sluice_model_state{model=\"%s\",state=\"%s\"} %d\n", e, states[k], (int)info.state == k);
    }
    P(&o, "# HELP sluice_model_memory_bytes Arena bytes held by the model (weights, workspace).\n"
          "# TYPE sluice_model_memory_bytes gauge\n");
    for (int i = 0; i < nm; i++) {
        registry_model_info_t info;
        if (registry_info(reg, i, &info)) continue;
        esc(info.name, e, sizeof e);
        P(&o, "sluice_model_memory_bytes{model=\"%s\",device=\"%s\",kind=\"weights\"} %zu\n", e,
          registry_device_name(reg), info.state == REGISTRY_READY ? info.weight_bytes : 0);
        P(&o, "sluice_model_memory_bytes{model=\"%s\",device=\"%s\",kind=\"workspace\"} %zu\n", e,
          registry_device_name(reg), info.state == REGISTRY_READY ? info.workspace_bytes : 0);
    }
    for (int counter = 0; counter < 2; counter++) {
        const char *fam = counter ? "sluice_model_errors_total" : "sluice_model_requests_total";
        P(&o, "# TYPE %s counter\n", fam);
        for (int i = 0; i < nm; i++) {
            registry_model_info_t info;
            if (registry_info(reg, i, &info)) continue;
            P(&o, "%s{model=\"%s\"} %llu\n", fam, esc(info.name, e, sizeof e),
              (unsigned long long)(counter ? info.errors : info.requests));
        }
    }
    batcher_stats_t bs;
    batcher_t *bat = src->bat;
    if (bat) {
        batcher_stats(bat, &bs);
        P(&o, "# TYPE sluice_paused gauge\nsluice_paused %d\n", bs.paused);
        P(&o, "# TYPE sluice_draining gauge\nsluice_draining %d\n", bs.draining);
        P(&o, "# TYPE sluice_pending_bytes gauge\nsluice_pending_bytes %zu\n", bs.pending_bytes);
        P(&o, "# TYPE sluice_unsent_answer_bytes gauge\nsluice_unsent_answer_bytes %zu\n", bs.unsent_bytes);
        P(&o, "# TYPE sluice_in_flight_batches gauge\nsluice_in_flight_batches %d\n", bs.in_flight_batches);
    }

    /* the Redis queues: depth by state, counters since the queue began */
    api_tasks_t *t = src->tasks;
    if (t) {
        uint64_t reconnects = 0, errors = 0;
        queue_io_counters(&reconnects, &errors);
        P(&o, "# HELP sluice_redis_reconnects_total Redis connections made again after a loss.\n"
              "# TYPE sluice_redis_reconnects_total counter\nsluice_redis_reconnects_total %llu\n",
          (unsigned long long)reconnects);
        P(&o, "# HELP sluice_redis_errors_total Failed Redis attempts: connects, lost replies, transient errors.\n"
              "# TYPE sluice_redis_errors_total counter\nsluice_redis_errors_total %llu\n",
          (unsigned long long)errors);
        int nq = api_tasks_queue_count(t);
        queue_stats_t *qs = calloc((size_t)(nq > 0 ? nq : 1), sizeof *qs);
        int *ok = calloc((size_t)(nq > 0 ? nq : 1), sizeof *ok);
        char (*names)[QUEUE_NAME_MAX] = calloc((size_t)(nq > 0 ? nq : 1), QUEUE_NAME_MAX);
        if (qs && ok && names) {
            /* one series per queue; while a queue's intake is reconnecting, a scrape
             * does not wait on a dead Redis for its stats */
            P(&o, "# HELP sluice_redis_up 1 while the queue's Redis connections (intake, completion) are up.\n"
                  "# TYPE sluice_redis_up gauge\n");
            for (int q = 0; q < nq; q++) {
                int up = api_tasks_queue_up(t, q, names[q]);
                esc(names[q], e, sizeof e);
                P(&o, "sluice_redis_up{queue=\"%s\"} %d\n", e, up == 1);
                ok[q] = up == 1 && api_tasks_queue_stats(t, q, names[q], &qs[q]) == 0;
            }
            P(&o, "# HELP sluice_queue_depth Tasks in the Redis queue by state.\n# TYPE sluice_queue_depth gauge\n");
            for (int q = 0; q < nq; q++) {
                if (!ok[q]) continue;
                esc(names[q], e, sizeof e);
                P(&o, "sluice_queue_depth{queue=\"%s\",state=\"ready\"} %lld\n", e, (long long)qs[q].ready);
                P(&o, "sluice_queue_depth{queue=\"%s\",state=\"delayed\"} %lld\n", e, (long long)qs[q].delayed);
                P(&o, "sluice_queue_depth{queue=\"%s\",state=\"leased\"} %lld\n", e, (long long)qs[q].leased);
                P(&o, "sluice_queue_depth{queue=\"%s\",state=\"dlq\"} %lld\n", e, (long long)qs[q].dlq);
            }
            P(&o, "# HELP sluice_queue_tasks_total Queue events since the queue began (all workers).\n"
                  "# TYPE sluice_queue_tasks_total counter\n");
            for (int q = 0; q < nq; q++) {
                if (!ok[q]) continue;
                esc(names[q], e, sizeof e);
                const struct { const char *n; int64_t v; } ev[] = {
                    {"enqueued", qs[q].enqueued}, {"acked", qs[q].acked},         {"retried", qs[q].retried},
                    {"failed", qs[q].failed},     {"expired", qs[q].expired},     {"cancelled", qs[q].cancelled},
                    {"deduped", qs[q].deduped},   {"rejected", qs[q].rejected},   {"reaped", qs[q].reaped},
                    {"released", qs[q].released}, {"requeued", qs[q].requeued},   {"purged", qs[q].purged},
                    {"bad_signature", qs[q].bad_signature},
                };
                for (size_t k = 0; k < sizeof ev / sizeof ev[0]; k++)
                    P(&o, "sluice_queue_tasks_total{queue=\"%s\",event=\"%s\"} %lld\n", e, ev[k].n, (long long)ev[k].v);
            }
        }
        free(qs);
        free(ok);
        free(names);
    }

    /* auth, rate limits, cache */
    static const char *reasons[] = {"missing_key", "invalid_key", "wrong_scope"};
    P(&o, "# HELP sluice_auth_rejections_total Requests refused by the API key check (401, 403).\n"
          "# TYPE sluice_auth_rejections_total counter\n");
    for (int k = 0; k < API_AUTH_N; k++)
        P(&o, "sluice_auth_rejections_total{reason=\"%s\"} %llu\n", reasons[k], (unsigned long long)atomic_load(&m->auth[k]));
    P(&o, "# HELP sluice_rate_limited_total Requests refused by a key's rate limit (429).\n"
          "# TYPE sluice_rate_limited_total counter\n");
    P(&o, "sluice_rate_limited_total{limit=\"requests\"} %llu\n", (unsigned long long)atomic_load(&m->rate[API_RL_REQUESTS]));
    P(&o, "sluice_rate_limited_total{limit=\"tokens\"} %llu\n", (unsigned long long)atomic_load(&m->rate[API_RL_TOKENS]));
    api_cache_stats_t cs;
    api_cache_stats(src->cache, &cs);
    P(&o, "# HELP sluice_cache_hits_total Embeddings answered from the result cache.\n"
          "# TYPE sluice_cache_hits_total counter\nsluice_cache_hits_total %llu\n", (unsigned long long)cs.hits);
    P(&o, "# TYPE sluice_cache_misses_total counter\nsluice_cache_misses_total %llu\n", (unsigned long long)cs.misses);
    P(&o, "# TYPE sluice_cache_entries gauge\nsluice_cache_entries %zu\n", cs.entries);
    P(&o, "# TYPE sluice_cache_bytes gauge\nsluice_cache_bytes %zu\n", cs.bytes);
    free(status);
    free(dur);
    free(comp);
    free(gen);
    if (o.oom) {
        *len = len0;
        return -1;
    }
    return 0;
}
