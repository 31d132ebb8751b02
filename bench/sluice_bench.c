/* bench/sluice_bench.c - sluice-bench, the load generator for sluice (and for
 * any server with the OpenAI embeddings API).
 *
 *   bin/sluice-bench [http] --url http://127.0.0.1:8080 [--concurrency N | --rate R] [options]
 *   bin/sluice-bench queue --redis redis://127.0.0.1:6379/0 [--queue NAME] [options]
 *   bin/sluice-bench --sweep --p99-target-ms MS [options]          (open-loop rate sweep, PNG)
 *   bin/sluice-bench gen --url URL [--concurrency 1,8,32,64] [--rate R] (chat streams: TTFT, ITL, tokens/s)
 *
 * HTTP mode sends POST {url}/v1/embeddings. Closed loop (the default): N
 * keep-alive connections, each sends its next request as soon as its answer
 * is in. Open loop (--rate R): requests arrive as a Poisson process at R per
 * second whatever the server does; one that finds every connection busy waits
 * in the client, and its latency counts from its scheduled arrival, so a slow
 * server cannot hide its queueing (no coordinated omission). One thread drives
 * every connection with epoll; the client does little per request (no JSON
 * parse of the answer, only its status and usage.total_tokens), so on a small
 * machine it leaves the cores to the server.
 *
 * Queue mode enqueues the same requests as Redis tasks (queue/queue.h) and
 * times each from enqueue to its terminal state (queue_wait), one thread and
 * one Redis connection per concurrent task.
 *
 * Measured window: requests scheduled after the warm-up and before the end of
 * --duration; each of them is waited for (up to --timeout). Throughput is the
 * 200 answers among them over the time from the window's start to the last
 * answer; latency percentiles are over those 200 answers (nearest rank);
 * every other outcome is counted by status. With --sweep, the open-loop rate
 * steps up until p99 breaks the target, then bisects twice. The server's own batch figures come from the
 * difference of two /metrics scrapes around the window (when it has them).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/cli/cli_common.h"
#include "queue/queue.h"

#define BENCH_MAX_CONNS 4096
#define BENCH_MAX_STATUS 600

enum { MODE_HTTP = 0, MODE_QUEUE = 1 };

typedef struct {
    int mode;
    const char *url;             /* base URL: http://host[:port][/prefix] */
    const char *model;           /* sent as "model"; NULL: left out (a server with one model) */
    const char *corpus;          /* one text per line */
    const char *vocab;           /* generated inputs: whole-word tokens from this vocab.txt */
    int gen_tokens, gen_tokens_sd; /* generated inputs: words (= tokens) per text, normal(mean, sd) */
    int limit;                   /* corpus lines used; 0: all */
    int inputs_per_request;
    int concurrency;             /* closed loop: connections; open loop: most connections */
    double rate;                 /* requests/s; 0: closed loop */
    double warmup_s, duration_s, timeout_s;
    const char *json_path, *png_path, *api_key, *encoding_format, *metrics_url;
    int sweep, max_steps;
    double p99_target_ms, rate_step;
    const char *redis_url, *queue_name, *op;
    const char *signing_key;     /* queue mode: HMAC key for the tasks (as the workers have it), or NULL */
    unsigned long long seed;
    int progress;                /* 1 on, 0 off, -1 auto (a line a second on a tty, every 5 s otherwise) */
} bench_opts_t;

typedef struct {
    char **texts;
    int n;
    double mean_chars;
    const char *source;          /* for the report */
} bench_inputs_t;

/* Figures of one measured run. */
typedef struct {
    double *lat;                 /* seconds, of each 200 answer in the window */
    size_t n_lat, cap_lat;
    long status[BENCH_MAX_STATUS]; /* answers by HTTP status (queue mode: 200 done, 500 failed, 504 expired) */
    long conn_errors, timeouts, unsent;
    long sent, ok, inputs, tokens;
    int tokens_known;            /* some answer carried usage.total_tokens */
    double t0, t_last;           /* window start; last measured answer */
    double offered_rate;         /* open loop: requests/s asked for; 0 closed */
    int concurrency;
    /* server figures (deltas of /metrics over the window); have_* 0 when absent */
    int have_batch_size, have_batch_tokens, have_queue_wait;
    double batch_size, batch_tokens, queue_wait_ms;
    /* summary */
    double rps, ips, tps, p50, p90, p99, p999, mean, max, elapsed;
    long errors;
    char first_error[256];       /* the first failure, for the reader: an answer's body or a message */
    double loadavg;              /* 1-minute load average at the end (noise: compare with the cores) */
} run_stats_t;

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig) {
    (void)sig;
    g_stop = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- random numbers (xorshift64*) ---- */

static unsigned long long g_rng = 0x9E3779B97F4A7C15ULL;
static double rng_uniform(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return ((g_rng * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0);
}
static double rng_exp(double rate) { return -log(1.0 - rng_uniform()) / rate; }
static double rng_normal(void) {
    double u = rng_uniform(), v = rng_uniform();
    return sqrt(-2.0 * log(1.0 - u)) * cos(2 * M_PI * v);
}

/* ---- growable string ---- */

typedef struct {
    char *p;
    size_t n, cap;
} sbuf_t;

static int sb_reserve(sbuf_t *b, size_t more) {
    if (b->n + more + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}
static int sb_add(sbuf_t *b, const char *s, size_t len) {
    if (sb_reserve(b, len)) return -1;
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
    return 0;
}
static int sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sb_printf(sbuf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0 || sb_reserve(b, (size_t)len)) return -1;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)len + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)len;
    return 0;
}
/* A JSON string literal of s (UTF-8 passes through). */
static int sb_json_str(sbuf_t *b, const char *s) {
    if (sb_add(b, "\"", 1)) return -1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            if (sb_add(b, esc, 2)) return -1;
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            if (sb_add(b, esc, 6)) return -1;
        } else if (sb_add(b, (const char *)p, 1)) {
            return -1;
        }
    }
    return sb_add(b, "\"", 1);
}

/* ---- inputs ---- */

static int inputs_from_corpus(const char *path, int limit, bench_inputs_t *in, char *err, size_t errlen) {
    char **lines = NULL;
    int n = 0;
    if (cli_read_lines(path, &lines, &n, err, errlen)) return -1;
    int m = 0;
    double chars = 0;
    for (int i = 0; i < n; i++) { /* empty lines are not inputs (the server answers 400 to them) */
        if (lines[i][0] && (limit <= 0 || m < limit)) {
            chars += strlen(lines[i]);
            lines[m++] = lines[i];
        } else {
            free(lines[i]);
        }
    }
    if (m == 0) {
        snprintf(err, errlen, "%s: no non-empty line", path);
        free(lines);
        return -1;
    }
    in->texts = lines;
    in->n = m;
    in->mean_chars = chars / m;
    in->source = path;
    return 0;
}

/* Generated texts of a stated length: each word a whole-word entry of the
 * model's WordPiece vocabulary (lowercase letters only), so a text of w words
 * is w tokens, w + 2 with [CLS] and [SEP]. w ~ normal(mean, sd), at least 1. */
static int inputs_generated(const char *vocab, int mean, int sd, int count, bench_inputs_t *in, char *err,
                            size_t errlen) {
    char **lines = NULL;
    int n = 0;
    if (cli_read_lines(vocab, &lines, &n, err, errlen)) return -1;
    int w = 0;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(lines[i]);
        int ok = len >= 2;
        for (size_t k = 0; ok && k < len; k++) ok = lines[i][k] >= 'a' && lines[i][k] <= 'z';
        if (ok) lines[w++] = lines[i];
        else free(lines[i]);
    }
    if (w < 100) {
        snprintf(err, errlen, "%s: only %d whole-word entries; is it a WordPiece vocab.txt?", vocab, w);
        cli_free_lines(lines, w);
        return -1;
    }
    in->texts = calloc((size_t)count, sizeof *in->texts);
    if (!in->texts) {
        cli_free_lines(lines, w);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    double chars = 0;
    for (int i = 0; i < count; i++) {
        int words = (int)lround(mean + sd * rng_normal());
        if (words < 1) words = 1;
        sbuf_t b = {0};
        for (int k = 0; k < words; k++) {
            const char *word = lines[(int)(rng_uniform() * w)];
            if ((k && sb_add(&b, " ", 1)) || sb_add(&b, word, strlen(word))) {
                free(b.p);
                cli_free_lines(in->texts, i);
                cli_free_lines(lines, w);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
        }
        in->texts[i] = b.p;
        chars += b.n;
    }
    cli_free_lines(lines, w);
    in->n = count;
    in->mean_chars = chars / count;
    in->source = "generated";
    return 0;
}

/* Append the next k inputs (wrapping round the texts) as a JSON array. */
static int sb_inputs(sbuf_t *b, const bench_opts_t *o, const bench_inputs_t *in, int *cursor) {
    int bad = sb_add(b, "[", 1);
    for (int i = 0; i < o->inputs_per_request; i++) {
        if (i) bad |= sb_add(b, ",", 1);
        bad |= sb_json_str(b, in->texts[*cursor]);
        *cursor = (*cursor + 1) % in->n;
    }
    return bad | sb_add(b, "]", 1);
}

/* The JSON body of one embeddings request. */
static char *build_body(const bench_opts_t *o, const bench_inputs_t *in, int *cursor, size_t *len) {
    sbuf_t b = {0};
    int bad = sb_add(&b, "{", 1);
    if (o->model) bad |= sb_add(&b, "\"model\":", 8) | sb_json_str(&b, o->model) | sb_add(&b, ",", 1);
    if (o->encoding_format)
        bad |= sb_add(&b, "\"encoding_format\":", 18) | sb_json_str(&b, o->encoding_format) | sb_add(&b, ",", 1);
    bad |= sb_add(&b, "\"input\":", 8) | sb_inputs(&b, o, in, cursor) | sb_add(&b, "}", 1);
    if (bad) {
        free(b.p);
        return NULL;
    }
    *len = b.n;
    return b.p;
}

/* usage.total_tokens of an answer (it sits at the end of sluice's and
 * OpenAI's answers; the whole body is searched otherwise), or -1. */
static long parse_total_tokens(const char *body, size_t len) {
    static const char key[] = "\"total_tokens\"";
    const char *p = NULL;
    size_t tail = len > 256 ? 256 : len;
    p = memmem(body + len - tail, tail, key, sizeof key - 1);
    if (!p) p = memmem(body, len, key, sizeof key - 1);
    if (!p) return -1;
    p += sizeof key - 1;
    const char *end = body + len;
    while (p < end && (*p == ' ' || *p == ':')) p++;
    if (p >= end || !isdigit((unsigned char)*p)) return -1;
    return strtol(p, NULL, 10);
}

/* ---- URL and the blocking GET (for /metrics and the reachability check) ---- */

typedef struct {
    char host[256];
    char port[16];
    char prefix[256];            /* path before /v1/..., without a trailing '/' */
    struct sockaddr_storage addr;
    socklen_t addrlen;
} target_t;

static int target_parse(const char *url, target_t *t, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    if (strncmp(url, "http://", 7)) {
        snprintf(err, errlen, "--url %s: only http:// URLs are supported", url);
        return -1;
    }
    const char *h = url + 7, *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    char hostport[sizeof t->host];
    if (hl == 0 || hl >= sizeof hostport) {
        snprintf(err, errlen, "--url %s: no host", url);
        return -1;
    }
    memcpy(hostport, h, hl);
    hostport[hl] = 0;
    char *colon = strrchr(hostport, ':');
    if (hostport[0] == '[') { /* [v6]:port */
        char *close = strchr(hostport, ']');
        if (!close) {
            snprintf(err, errlen, "--url %s: bad IPv6 host", url);
            return -1;
        }
        *close = 0;
        snprintf(t->host, sizeof t->host, "%s", hostport + 1);
        snprintf(t->port, sizeof t->port, "%s", close[1] == ':' ? close + 2 : "80");
    } else if (colon) {
        *colon = 0;
        snprintf(t->host, sizeof t->host, "%s", hostport);
        snprintf(t->port, sizeof t->port, "%s", colon + 1);
    } else {
        snprintf(t->host, sizeof t->host, "%s", hostport);
        snprintf(t->port, sizeof t->port, "80");
    }
    snprintf(t->prefix, sizeof t->prefix, "%s", slash ? slash : "");
    size_t pl = strlen(t->prefix);
    while (pl && t->prefix[pl - 1] == '/') t->prefix[--pl] = 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(t->host, t->port, &hints, &res);
    if (rc || !res) {
        snprintf(err, errlen, "--url %s: %s", url, gai_strerror(rc));
        return -1;
    }
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* Decode a chunked body in place; returns its length, or -1 when incomplete. */
static long dechunk(char *body, size_t len) {
    size_t in = 0, out = 0;
    for (;;) {
        char *eol = memmem(body + in, len - in, "\r\n", 2);
        if (!eol) return -1;
        long size = strtol(body + in, NULL, 16);
        in = (size_t)(eol - body) + 2;
        if (size == 0) return (long)out;
        if (size < 0 || in + (size_t)size + 2 > len) return -1;
        memmove(body + out, body + in, (size_t)size);
        out += (size_t)size;
        in += (size_t)size + 2;
    }
}

/* GET url (absolute http URL) with a deadline; returns the status with the
 * body in *body (malloc'd, NUL-terminated), or -1 with err. */
static int http_get(const char *url, double timeout_s, char **body, char *err, size_t errlen) {
    target_t t;
    *body = NULL;
    if (target_parse(url, &t, err, errlen)) return -1;
    int fd = socket(t.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    double deadline = now_s() + timeout_s;
    sbuf_t req = {0}, resp = {0};
    int status = -1;
    if (connect(fd, (struct sockaddr *)&t.addr, t.addrlen) && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect %s:%s: %s", t.host, t.port, strerror(errno));
        goto out;
    }
    struct pollfd pf = {.fd = fd, .events = POLLOUT};
    if (poll(&pf, 1, (int)(timeout_s * 1000)) != 1) {
        snprintf(err, errlen, "connect %s:%s: timed out", t.host, t.port);
        goto out;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr) {
        snprintf(err, errlen, "connect %s:%s: %s", t.host, t.port, strerror(soerr));
        goto out;
    }
    if (sb_printf(&req, "GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n", t.prefix[0] ? t.prefix : "/",
                  t.host, t.port)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (send(fd, req.p, req.n, MSG_NOSIGNAL) != (ssize_t)req.n) { /* a few hundred bytes fit any socket buffer */
        snprintf(err, errlen, "send: %s", strerror(errno));
        goto out;
    }
    for (;;) {
        double left = deadline - now_s();
        pf.events = POLLIN;
        if (left <= 0 || poll(&pf, 1, (int)(left * 1000) + 1) != 1) {
            snprintf(err, errlen, "GET %s: timed out", url);
            goto out;
        }
        if (sb_reserve(&resp, 65536)) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        ssize_t k = recv(fd, resp.p + resp.n, 65536, 0);
        if (k < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (k < 0) {
            snprintf(err, errlen, "recv: %s", strerror(errno));
            goto out;
        }
        if (k == 0) break;
        resp.n += (size_t)k;
        resp.p[resp.n] = 0;
    }
    char *hdr_end = resp.p ? strstr(resp.p, "\r\n\r\n") : NULL;
    if (!hdr_end || sscanf(resp.p, "HTTP/1.%*d %d", &status) != 1) {
        snprintf(err, errlen, "GET %s: not an HTTP answer", url);
        status = -1;
        goto out;
    }
    char *b = hdr_end + 4;
    size_t blen = resp.n - (size_t)(b - resp.p);
    *hdr_end = 0;
    int chunked = strcasestr(resp.p, "\ntransfer-encoding: chunked") != NULL;
    if (chunked) {
        long l = dechunk(b, blen);
        blen = l < 0 ? 0 : (size_t)l;
    }
    *body = malloc(blen + 1);
    if (*body) {
        memcpy(*body, b, blen);
        (*body)[blen] = 0;
    }
out:
    close(fd);
    free(req.p);
    free(resp.p);
    return status;
}

/* ---- the server's /metrics (Prometheus text) ---- */

/* What one scrape gives: histogram sums and counts where the server has them
 * (sluice_batch_size, sluice_batch_tokens, sluice_queue_wait_seconds), else
 * the plain counters (sluice_batches_total, sluice_batch_sequences_total,
 * sluice_batch_tokens_total, sluice_queue_wait_seconds_total over the items
 * that reached compute). Series with labels (one per model) are summed. */
enum { M_HBS_SUM, M_HBS_CNT, M_HBT_SUM, M_HBT_CNT, M_HQW_SUM, M_HQW_CNT, M_BATCHES, M_SEQS, M_TOKENS, M_QW, M_ITEMS,
       M_N };
static const struct {
    const char *name, *label; /* label: a substring the series' labels must hold, or NULL */
} METRICS[M_N] = {
    {"sluice_batch_size_sum", NULL},         {"sluice_batch_size_count", NULL},
    {"sluice_batch_tokens_sum", NULL},       {"sluice_batch_tokens_count", NULL},
    {"sluice_queue_wait_seconds_sum", NULL}, {"sluice_queue_wait_seconds_count", NULL},
    {"sluice_batches_total", NULL},          {"sluice_batch_sequences_total", NULL},
    {"sluice_batch_tokens_total", NULL},     {"sluice_queue_wait_seconds_total", NULL},
    {"sluice_items_total", "outcome=\"ok\""},
};

typedef struct {
    int ok;
    double v[M_N];
    unsigned seen;               /* bit i: METRICS[i] was present */
} metrics_snap_t;

static void metrics_scrape(const bench_opts_t *o, metrics_snap_t *m) {
    memset(m, 0, sizeof *m);
    if (!o->metrics_url || !o->metrics_url[0]) return;
    char *body = NULL, err[256];
    int st = http_get(o->metrics_url, 5.0, &body, err, sizeof err);
    if (st != 200 || !body) {
        free(body);
        return;
    }
    m->ok = 1;
    char *save = NULL;
    for (char *line = strtok_r(body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') continue;
        size_t nl = strcspn(line, "{ ");
        char *val = strrchr(line, ' ');
        if (!val) continue;
        for (int i = 0; i < M_N; i++) {
            if (strlen(METRICS[i].name) != nl || strncmp(line, METRICS[i].name, nl)) continue;
            if (METRICS[i].label && !memmem(line, (size_t)(val - line), METRICS[i].label, strlen(METRICS[i].label)))
                continue;
            m->v[i] += strtod(val + 1, NULL);
            m->seen |= 1u << i;
        }
    }
    free(body);
}

/* Mean of (sum, count) between two scrapes; 0 when absent or nothing happened. */
static int metrics_mean(const metrics_snap_t *a, const metrics_snap_t *b, int sum, int cnt, double *out) {
    unsigned need = (1u << sum) | (1u << cnt);
    if ((a->seen & need) != need || (b->seen & need) != need) return 0;
    double d = b->v[cnt] - a->v[cnt];
    if (d <= 0) return 0;
    *out = (b->v[sum] - a->v[sum]) / d;
    return 1;
}

static void metrics_delta(const metrics_snap_t *a, const metrics_snap_t *b, run_stats_t *s) {
    if (!a->ok || !b->ok) return;
    s->have_batch_size = metrics_mean(a, b, M_HBS_SUM, M_HBS_CNT, &s->batch_size) ||
                         metrics_mean(a, b, M_SEQS, M_BATCHES, &s->batch_size);
    s->have_batch_tokens = metrics_mean(a, b, M_HBT_SUM, M_HBT_CNT, &s->batch_tokens) ||
                           metrics_mean(a, b, M_TOKENS, M_BATCHES, &s->batch_tokens);
    s->have_queue_wait = metrics_mean(a, b, M_HQW_SUM, M_HQW_CNT, &s->queue_wait_ms) ||
                         metrics_mean(a, b, M_QW, M_ITEMS, &s->queue_wait_ms);
    s->queue_wait_ms *= 1e3;
}

/* ---- statistics ---- */

static void stats_init(run_stats_t *s, double rate, int concurrency) {
    memset(s, 0, sizeof *s);
    s->offered_rate = rate;
    s->concurrency = concurrency;
}
static void stats_note_error(run_stats_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void stats_note_error(run_stats_t *s, const char *fmt, ...) {
    if (s->first_error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->first_error, sizeof s->first_error, fmt, ap);
    va_end(ap);
    for (char *p = s->first_error; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
}
static void stats_free(run_stats_t *s) {
    free(s->lat);
    s->lat = NULL;
}
static void stats_latency(run_stats_t *s, double lat) {
    if (s->n_lat == s->cap_lat) {
        size_t cap = s->cap_lat ? 2 * s->cap_lat : 4096;
        double *p = realloc(s->lat, cap * sizeof *p);
        if (!p) return; /* out of memory: the sample is left out, the counts stay right */
        s->lat = p;
        s->cap_lat = cap;
    }
    s->lat[s->n_lat++] = lat;
}
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double pct(const double *v, size_t n, double p) { /* nearest rank */
    if (!n) return 0;
    size_t k = (size_t)ceil(p * n);
    return v[k ? k - 1 : 0];
}
static double loadavg_1m(void) {
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

static void stats_summarize(run_stats_t *s) {
    s->loadavg = loadavg_1m();
    s->elapsed = s->t_last > s->t0 ? s->t_last - s->t0 : 0;
    s->errors = s->conn_errors + s->timeouts;
    for (int i = 0; i < BENCH_MAX_STATUS; i++)
        if (i != 200) s->errors += s->status[i];
    if (s->elapsed > 0) {
        s->rps = s->ok / s->elapsed;
        s->ips = s->inputs / s->elapsed;
        s->tps = s->tokens_known ? s->tokens / s->elapsed : 0;
    }
    qsort(s->lat, s->n_lat, sizeof *s->lat, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < s->n_lat; i++) sum += s->lat[i];
    s->mean = s->n_lat ? 1e3 * sum / s->n_lat : 0;
    s->max = s->n_lat ? 1e3 * s->lat[s->n_lat - 1] : 0;
    s->p50 = 1e3 * pct(s->lat, s->n_lat, 0.50);
    s->p90 = 1e3 * pct(s->lat, s->n_lat, 0.90);
    s->p99 = 1e3 * pct(s->lat, s->n_lat, 0.99);
    s->p999 = 1e3 * pct(s->lat, s->n_lat, 0.999);
}

/* ---- progress line ---- */

typedef struct {
    int on, tty;
    double every, next, t_last;
    long ok_last;
} progress_t;

static void progress_init(progress_t *p, const bench_opts_t *o, double t) {
    p->tty = isatty(2);
    p->on = o->progress < 0 ? 1 : o->progress;
    p->every = p->tty ? 1.0 : 5.0;
    p->next = t + p->every;
    p->t_last = t;
    p->ok_last = 0;
}
static void progress_tick(progress_t *p, double t, double t_measure, double t_end, long done, long errors,
                          int in_flight, long backlog) {
    if (!p->on || t < p->next) return;
    double rate = (done - p->ok_last) / (t - p->t_last);
    const char *phase = t < t_measure ? "warm-up" : t < t_end ? "measure" : "drain";
    double left = t < t_end ? t_end - t : 0;
    fprintf(stderr, "%s[%-7s %5.0fs left] %8.1f answers/s  in flight %4d  waiting %5ld  errors %ld%s",
            p->tty ? "\r\033[K" : "", phase, left, rate, in_flight, backlog, errors, p->tty ? "" : "\n");
    p->ok_last = done;
    p->t_last = t;
    p->next = t + p->every;
}
static void progress_end(progress_t *p) {
    if (p->on && p->tty) fprintf(stderr, "\r\033[K");
}

/* ---- HTTP mode: one epoll loop over keep-alive connections ---- */

enum { C_FREE = 0, C_IDLE, C_CONNECTING, C_SENDING, C_RECEIVING };

typedef struct {
    int fd;                      /* -1 when C_FREE */
    int state;
    int reused;                  /* a request went out on it before: a silent close gets one resend */
    int resent;
    char *req;                   /* headers + body of the request in flight */
    size_t req_len, req_off;
    char *resp;                  /* the answer so far */
    size_t resp_len, resp_cap;
    size_t body_off;             /* 0 until the headers are in */
    long content_len;            /* -1: chunked or until close */
    int chunked, conn_close, status;
    double t_sched;              /* latency counts from here (arrival, open loop; send, closed) */
    double retry_at;             /* closed loop: after a connection error, wait before the next request */
    int n_inputs, measured;
} hconn_t;

typedef struct {
    const bench_opts_t *o;
    const bench_inputs_t *in;
    target_t t;
    char hdr_prefix[768];        /* request line and fixed headers */
    hconn_t *c;
    int nc, epfd, in_flight;
    int cursor;
    double t_measure, t_end, t_hard_end;
    double *backlog;             /* open loop: scheduled arrivals waiting for a connection (ring) */
    size_t bl_head, bl_n, bl_cap;
    run_stats_t *s;
    long done_all, err_all;      /* every answer, warm-up included (progress line) */
    int refused;                 /* the server refused our key (401/403): nothing to measure */
} hrun_t;

static void hconn_close(hrun_t *h, hconn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(h->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = C_FREE;
    c->reused = 0;
}

static void hconn_watch(hrun_t *h, hconn_t *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - h->c)};
    epoll_ctl(h->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void hconn_count_error(hrun_t *h, hconn_t *c, int timeout, const char *why) {
    h->err_all++;
    if (c->measured) {
        if (timeout) h->s->timeouts++;
        else h->s->conn_errors++;
        h->s->t_last = now_s();
    }
    stats_note_error(h->s, "%s%s", timeout ? "" : "connection: ", why);
    h->in_flight--;
    c->retry_at = now_s() + 0.1;
    free(c->req);
    c->req = NULL;
    hconn_close(h, c);
}

static int hconn_connect(hrun_t *h, hconn_t *c) {
    c->fd = socket(h->t.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)(c - h->c)};
    if (epoll_ctl(h->epfd, EPOLL_CTL_ADD, c->fd, &ev)) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    if (connect(c->fd, (struct sockaddr *)&h->t.addr, h->t.addrlen) && errno != EINPROGRESS) {
        hconn_close(h, c);
        return -1;
    }
    c->state = C_CONNECTING;
    return 0;
}

static void hconn_send_some(hrun_t *h, hconn_t *c) {
    while (c->req_off < c->req_len) {
        ssize_t k = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN) {
            hconn_watch(h, c, EPOLLOUT);
            return;
        }
        if (k <= 0) {
            if (c->reused && !c->resent) { /* the server closed an idle keep-alive connection: resend */
                c->resent = 1;
                c->req_off = 0;
                hconn_close(h, c);
                if (hconn_connect(h, c) == 0) return;
            }
            hconn_count_error(h, c, 0, k < 0 ? strerror(errno) : "connection closed while sending");
            return;
        }
        c->req_off += (size_t)k;
    }
    c->state = C_RECEIVING;
    c->resp_len = 0;
    c->body_off = 0;
    hconn_watch(h, c, EPOLLIN);
}

/* Start one request on c, scheduled at t_sched. */
static void hconn_start(hrun_t *h, hconn_t *c, double t_sched) {
    size_t blen = 0;
    char *body = build_body(h->o, h->in, &h->cursor, &blen);
    sbuf_t r = {0};
    if (!body || sb_printf(&r, "%sContent-Length: %zu\r\n\r\n", h->hdr_prefix, blen) || sb_add(&r, body, blen)) {
        free(body);
        free(r.p);
        fprintf(stderr, "sluice-bench: out of memory building a request\n");
        g_stop = 1;
        return;
    }
    free(body);
    c->req = r.p;
    c->req_len = r.n;
    c->req_off = 0;
    c->t_sched = t_sched;
    c->n_inputs = h->o->inputs_per_request;
    c->measured = t_sched >= h->t_measure && t_sched < h->t_end;
    c->resent = 0;
    if (c->measured) h->s->sent++;
    h->in_flight++;
    if (c->state == C_FREE) {
        if (hconn_connect(h, c)) hconn_count_error(h, c, 0, strerror(errno));
        return;
    }
    c->state = C_SENDING;
    hconn_send_some(h, c);
}

static void hconn_finish(hrun_t *h, hconn_t *c, const char *body, size_t blen) {
    double t = now_s();
    h->done_all++;
    if (c->status != 200) h->err_all++;
    if (c->status == 401 || c->status == 403) h->refused = 1;
    if (c->measured) {
        run_stats_t *s = h->s;
        s->t_last = t;
        if (c->status > 0 && c->status < BENCH_MAX_STATUS) s->status[c->status]++;
        if (c->status != 200)
            stats_note_error(s, "HTTP %d: %.*s", c->status, blen ? (int)(blen < 200 ? blen : 200) : 9,
                             blen ? body : "(no body)");
        if (c->status == 200) {
            s->ok++;
            s->inputs += c->n_inputs;
            stats_latency(s, t - c->t_sched);
            long tok = parse_total_tokens(body, blen);
            if (tok >= 0) {
                s->tokens += tok;
                s->tokens_known = 1;
            }
        }
    }
    h->in_flight--;
    free(c->req);
    c->req = NULL;
    c->reused = 1;
    if (c->conn_close) {
        hconn_close(h, c);
    } else {
        c->state = C_IDLE;
        hconn_watch(h, c, EPOLLIN); /* notices a close by the server */
    }
}

/* Parse what has arrived; finish the request when the answer is whole. */
static void hconn_parse(hrun_t *h, hconn_t *c) {
    if (!c->body_off) {
        char *e = memmem(c->resp, c->resp_len, "\r\n\r\n", 4);
        if (!e) return;
        c->body_off = (size_t)(e - c->resp) + 4;
        *e = 0;
        c->status = 0;
        if (sscanf(c->resp, "HTTP/1.%*d %d", &c->status) != 1) c->status = 0;
        c->content_len = -1;
        c->chunked = 0;
        c->conn_close = !strncmp(c->resp, "HTTP/1.0", 8);
        for (char *l = strstr(c->resp, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
            char *v = l + 2;
            if (!strncasecmp(v, "content-length:", 15)) c->content_len = strtol(v + 15, NULL, 10);
            else if (!strncasecmp(v, "transfer-encoding:", 18) && strcasestr(v, "chunked")) c->chunked = 1;
            else if (!strncasecmp(v, "connection:", 11) && strcasestr(v, "close")) c->conn_close = 1;
        }
        *e = '\r';
        if (c->status == 100) { /* 100 Continue: drop it and read on */
            memmove(c->resp, c->resp + c->body_off, c->resp_len - c->body_off);
            c->resp_len -= c->body_off;
            c->body_off = 0;
            hconn_parse(h, c);
            return;
        }
    }
    char *body = c->resp + c->body_off;
    size_t have = c->resp_len - c->body_off;
    if (c->chunked) {
        if (have < 5 || memcmp(body + have - 5, "0\r\n\r\n", 5)) return;
        long l = dechunk(body, have);
        if (l < 0) return;
        hconn_finish(h, c, body, (size_t)l);
    } else if (c->content_len >= 0) {
        if (have < (size_t)c->content_len) return;
        hconn_finish(h, c, body, (size_t)c->content_len);
    }
    /* no length and not chunked: the answer ends when the server closes */
}

static void hconn_readable(hrun_t *h, hconn_t *c) {
    for (;;) {
        if (c->resp_len + 65536 + 1 > c->resp_cap) {
            size_t cap = c->resp_cap ? c->resp_cap * 2 : 131072;
            while (cap < c->resp_len + 65536 + 1) cap *= 2;
            char *p = realloc(c->resp, cap);
            if (!p) {
                hconn_count_error(h, c, 0, "out of memory for an answer");
                return;
            }
            c->resp = p;
            c->resp_cap = cap;
        }
        ssize_t k = recv(c->fd, c->resp + c->resp_len, c->resp_cap - c->resp_len - 1, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN) break;
        if (k <= 0) {
            if (c->state == C_IDLE) { /* the server closed an idle connection: fine */
                hconn_close(h, c);
                return;
            }
            if (c->body_off && !c->chunked && c->content_len < 0) { /* answer delimited by the close */
                c->conn_close = 1;
                hconn_finish(h, c, c->resp + c->body_off, c->resp_len - c->body_off);
                return;
            }
            if (c->resp_len == 0 && c->reused && !c->resent) { /* closed before our request was read */
                c->resent = 1;
                hconn_close(h, c);
                c->req_off = 0;
                if (hconn_connect(h, c) == 0) return;
            }
            hconn_count_error(h, c, 0, k < 0 ? strerror(errno) : "connection closed before the answer was whole");
            return;
        }
        if (c->state == C_IDLE) continue; /* bytes nobody asked for: ignore */
        c->resp_len += (size_t)k;
        hconn_parse(h, c);
        if (c->state != C_RECEIVING) return;
    }
}

static void hconn_event(hrun_t *h, hconn_t *c, uint32_t ev) {
    if (c->state == C_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr || (ev & (EPOLLERR | EPOLLHUP))) {
            hconn_count_error(h, c, 0, strerror(soerr ? soerr : ECONNREFUSED));
            return;
        }
        c->state = C_SENDING;
        hconn_send_some(h, c);
        return;
    }
    if (c->state == C_SENDING && (ev & EPOLLOUT)) {
        hconn_send_some(h, c);
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) hconn_readable(h, c);
}

static void backlog_push(hrun_t *h, double t) {
    if (h->bl_n == h->bl_cap) {
        size_t cap = h->bl_cap ? 2 * h->bl_cap : 1024;
        double *p = malloc(cap * sizeof *p);
        if (!p) {
            if (t >= h->t_measure) h->s->unsent++;
            return;
        }
        for (size_t i = 0; i < h->bl_n; i++) p[i] = h->backlog[(h->bl_head + i) % h->bl_cap];
        free(h->backlog);
        h->backlog = p;
        h->bl_cap = cap;
        h->bl_head = 0;
    }
    h->backlog[(h->bl_head + h->bl_n) % h->bl_cap] = t;
    h->bl_n++;
}

/* One measured run over HTTP. rate 0: closed loop at concurrency. */
static int run_http(const bench_opts_t *o, const bench_inputs_t *in, double rate, int concurrency, run_stats_t *s,
                    char *err, size_t errlen) {
    hrun_t h = {.o = o, .in = in, .s = s, .epfd = -1};
    stats_init(s, rate, concurrency);
    if (target_parse(o->url, &h.t, err, errlen)) return -1;
    int l = snprintf(h.hdr_prefix, sizeof h.hdr_prefix,
                     "POST %s/v1/embeddings HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                     "User-Agent: sluice-bench\r\n%s%s%s",
                     h.t.prefix, h.t.host, h.t.port, o->api_key ? "Authorization: Bearer " : "",
                     o->api_key ? o->api_key : "", o->api_key ? "\r\n" : "");
    if (l < 0 || (size_t)l >= sizeof h.hdr_prefix) {
        snprintf(err, errlen, "URL or API key too long");
        return -1;
    }
    h.nc = concurrency;
    h.c = calloc((size_t)h.nc, sizeof *h.c);
    h.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!h.c || h.epfd < 0) {
        snprintf(err, errlen, "out of memory or epoll: %s", strerror(errno));
        free(h.c);
        if (h.epfd >= 0) close(h.epfd);
        return -1;
    }
    for (int i = 0; i < h.nc; i++) h.c[i].fd = -1;
    metrics_snap_t m0, m1;
    double t_start = now_s();
    h.t_measure = t_start + o->warmup_s;
    h.t_end = h.t_measure + o->duration_s;
    h.t_hard_end = h.t_end + o->timeout_s;
    s->t0 = h.t_measure;
    int scraped = 0;
    double next_arrival = rate > 0 ? t_start + rng_exp(rate) : 0;
    progress_t pr;
    progress_init(&pr, o, t_start);
    struct epoll_event evs[256];
    for (;;) {
        double t = now_s();
        if ((g_stop || h.refused) && h.t_end > t) { /* Ctrl-C, or a refused key: end now, report what there is */
            if (h.refused) {
                stats_note_error(s, "the server refuses the key (401/403): see --api-key");
                fprintf(stderr, "sluice-bench: the server answered 401/403; stopping (give a key with --api-key)\n");
            }
            h.t_end = t;
            h.t_hard_end = t + o->timeout_s;
            if (h.t_measure > t) h.t_measure = t;
        }
        if (!scraped && t >= h.t_measure) {
            metrics_scrape(o, &m0);
            scraped = 1;
            t = now_s();
        }
        if (t < h.t_end) {
            if (rate > 0) {
                while (next_arrival <= t && next_arrival < h.t_end) {
                    backlog_push(&h, next_arrival);
                    next_arrival += rng_exp(rate);
                }
            }
            for (int i = 0; i < h.nc; i++) {
                hconn_t *c = &h.c[i];
                if (c->state != C_FREE && c->state != C_IDLE) continue;
                if (rate > 0) {
                    if (!h.bl_n) break;
                    double ts = h.backlog[h.bl_head];
                    h.bl_head = (h.bl_head + 1) % h.bl_cap;
                    h.bl_n--;
                    hconn_start(&h, c, ts);
                } else if (t >= c->retry_at) {
                    hconn_start(&h, c, t);
                }
            }
        } else {
            for (; h.bl_n; h.bl_n--) { /* arrivals the client never got a connection for */
                if (h.backlog[h.bl_head] >= h.t_measure) s->unsent++;
                h.bl_head = (h.bl_head + 1) % h.bl_cap;
            }
            if (!h.in_flight) break;
            if (t >= h.t_hard_end) {
                for (int i = 0; i < h.nc; i++)
                    if (h.c[i].state >= C_CONNECTING) hconn_count_error(&h, &h.c[i], 1, "request timed out");
                break;
            }
        }
        /* timeouts of single requests */
        for (int i = 0; i < h.nc; i++) {
            hconn_t *c = &h.c[i];
            if (c->state >= C_CONNECTING && t - c->t_sched > o->timeout_s) hconn_count_error(&h, c, 1, "request timed out");
        }
        progress_tick(&pr, t, h.t_measure, h.t_end, h.done_all, h.err_all, h.in_flight, (long)h.bl_n);
        double wake = t + 0.25;
        if (rate > 0 && next_arrival < wake && t < h.t_end) wake = next_arrival;
        if (rate == 0 && t < h.t_end)
            for (int i = 0; i < h.nc; i++)
                if (h.c[i].state <= C_IDLE && h.c[i].retry_at < wake) wake = h.c[i].retry_at;
        int ms = wake > t ? (int)ceil((wake - t) * 1000) : 0;
        int n = epoll_wait(h.epfd, evs, 256, ms);
        for (int i = 0; i < n; i++) hconn_event(&h, &h.c[evs[i].data.u32], evs[i].events);
    }
    progress_end(&pr);
    if (scraped) {
        metrics_scrape(o, &m1);
        metrics_delta(&m0, &m1, s);
    }
    for (int i = 0; i < h.nc; i++) {
        hconn_close(&h, &h.c[i]);
        free(h.c[i].req);
        free(h.c[i].resp);
    }
    free(h.c);
    free(h.backlog);
    close(h.epfd);
    stats_summarize(s);
    return 0;
}

/* ---- reports ---- */

static void print_row_header(FILE *f) {
    fprintf(f, "| load | requests/s | inputs/s | tokens/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | "
               "server batch | batch tokens | queue wait ms |\n");
    fprintf(f, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |\n");
}

static void errors_text(const run_stats_t *s, char *out, size_t len) {
    size_t l = 0;
    out[0] = 0;
    for (int i = 0; i < BENCH_MAX_STATUS; i++)
        if (i != 200 && s->status[i] && l < len)
            l += (size_t)snprintf(out + l, len - l, "%s%d: %ld", l ? ", " : "", i, s->status[i]);
    if (s->conn_errors && l < len) l += (size_t)snprintf(out + l, len - l, "%sconn: %ld", l ? ", " : "", s->conn_errors);
    if (s->timeouts && l < len) l += (size_t)snprintf(out + l, len - l, "%stimeout: %ld", l ? ", " : "", s->timeouts);
    if (s->unsent && l < len) l += (size_t)snprintf(out + l, len - l, "%sunsent: %ld", l ? ", " : "", s->unsent);
    if (!l) snprintf(out, len, "0");
}

static void print_row(FILE *f, const run_stats_t *s) {
    char load[64], errs[256], bs[32] = "n/a", bt[32] = "n/a", qw[32] = "n/a", tps[32] = "n/a";
    if (s->offered_rate > 0) snprintf(load, sizeof load, "open %.1f req/s", s->offered_rate);
    else snprintf(load, sizeof load, "closed c=%d", s->concurrency);
    errors_text(s, errs, sizeof errs);
    if (s->have_batch_size) snprintf(bs, sizeof bs, "%.2f", s->batch_size);
    if (s->have_batch_tokens) snprintf(bt, sizeof bt, "%.0f", s->batch_tokens);
    if (s->have_queue_wait) snprintf(qw, sizeof qw, "%.2f", s->queue_wait_ms);
    if (s->tokens_known) snprintf(tps, sizeof tps, "%.0f", s->tps);
    fprintf(f, "| %s | %.1f | %.1f | %s | %.1f | %.1f | %.1f | %.1f | %s | %s | %s | %s |\n", load, s->rps, s->ips,
            tps, s->p50, s->p90, s->p99, s->p999, errs, bs, bt, qw);
}

static json_t *run_json(const run_stats_t *s) {
    json_t *st = json_object();
    for (int i = 0; i < BENCH_MAX_STATUS; i++)
        if (s->status[i]) {
            char k[8];
            snprintf(k, sizeof k, "%d", i);
            json_object_set_new(st, k, json_integer(s->status[i]));
        }
    json_t *r = json_pack("{s:s, s:f, s:i, s:f, s:I, s:I, s:I, s:I, s:f, s:f, s:o, s:o,"
                          " s:{s:f, s:f, s:f, s:f, s:f, s:f}, s:{s:o, s:I, s:I, s:I, s:I}}",
                          "loop", s->offered_rate > 0 ? "open" : "closed", "offered_requests_per_s", s->offered_rate,
                          "concurrency", s->concurrency, "seconds", s->elapsed, "requests_sent", (json_int_t)s->sent,
                          "requests_ok", (json_int_t)s->ok, "inputs", (json_int_t)s->inputs, "tokens",
                          (json_int_t)s->tokens, "requests_per_s", s->rps, "inputs_per_s", s->ips, "tokens_per_s",
                          s->tokens_known ? json_real(s->tps) : json_null(), "latency_samples",
                          json_integer((json_int_t)s->n_lat), "latency_ms", "p50", s->p50, "p90", s->p90, "p99",
                          s->p99, "p99.9", s->p999, "mean", s->mean, "max", s->max, "errors", "by_status", st,
                          "connection", (json_int_t)s->conn_errors, "timeout", (json_int_t)s->timeouts, "unsent",
                          (json_int_t)s->unsent, "total", (json_int_t)s->errors);
    json_t *srv = json_object();
    if (s->have_batch_size) json_object_set_new(srv, "mean_batch_size", json_real(s->batch_size));
    if (s->have_batch_tokens) json_object_set_new(srv, "mean_batch_tokens", json_real(s->batch_tokens));
    if (s->have_queue_wait) json_object_set_new(srv, "mean_queue_wait_ms", json_real(s->queue_wait_ms));
    json_object_set_new(r, "server", srv);
    json_object_set_new(r, "loadavg_1m", json_real(s->loadavg));
    if (s->first_error[0]) json_object_set_new(r, "first_error", json_string(s->first_error));
    return r;
}

static json_t *report_head(const bench_opts_t *o, const bench_inputs_t *in) {
    char host[256] = "", cpu[256] = "", date[64];
    gethostname(host, sizeof host - 1);
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
                snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
                cpu[strcspn(cpu, "\n")] = 0;
                break;
            }
        fclose(f);
    }
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    return json_pack("{s:s, s:s, s:s, s:s?, s:s, s:i, s:f, s:i, s:f, s:f, s:f, s:{s:s, s:s, s:I}, s:s, s:f}", "tool",
                     "sluice-bench", "mode", o->mode == MODE_HTTP ? "http" : "queue", "target",
                     o->mode == MODE_HTTP ? o->url : o->redis_url, "model", o->model, "inputs", in->source,
                     "input_texts", in->n, "mean_input_chars", in->mean_chars, "inputs_per_request",
                     o->inputs_per_request, "warmup_s", o->warmup_s, "duration_s", o->duration_s, "timeout_s",
                     o->timeout_s, "machine", "host", host, "cpu", cpu, "cores", (json_int_t)sysconf(_SC_NPROCESSORS_ONLN),
                     "date", date, "loadavg_1m_start", loadavg_1m());
}

/* ---- queue mode ---- */

/* Closed loop: `concurrency` threads, each with its own Redis connection,
 * enqueue a task and wait for its end, again and again. Open loop: one
 * producer thread enqueues at the Poisson times and hands each id to the
 * waiter threads (FIFO). A waiter busy with an earlier task reaches a later
 * one only when it is free; a task that had already ended by then is timed
 * by Redis's own clock instead (its enqueue to its end, in ms, plus the time
 * from its scheduled arrival until the enqueue returned), so the waiters'
 * lag does not count; it leaves out the last wake-up, well under a
 * millisecond on loopback. A task ends done
 * (counted as 200), in the DLQ (500), expired (504) or cancelled (499); an
 * enqueue refused because the queue is full counts as 429. */

typedef struct {
    char id[QUEUE_ID_MAX];
    double t_sched;              /* scheduled arrival (monotonic s) */
    double t_enqueued;           /* when the enqueue call returned */
    int measured;
} qtask_t;

typedef struct {
    const bench_opts_t *o;
    const bench_inputs_t *in;
    queue_config_t cfg;
    double rate, t_measure, t_end, t_hard_end;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int cursor;
    qtask_t *ring;               /* open loop: enqueued, not yet waited on */
    size_t r_head, r_n, r_cap;
    int producer_done;
    int in_flight;
    long done_all, err_all;
    run_stats_t *s;
    char err[256];               /* first connection failure */
} qrun_t;

static char *qrun_payload(qrun_t *q) {
    pthread_mutex_lock(&q->mu);
    sbuf_t b = {0};
    int bad = sb_inputs(&b, q->o, q->in, &q->cursor);
    pthread_mutex_unlock(&q->mu);
    char err[128];
    char *p = bad ? NULL : queue_payload_build(q->o->model, q->o->op, b.p, NULL, NULL, err, sizeof err);
    free(b.p);
    return p;
}

/* Record the end of one task (status 0: connection error, -1: timed out). */
/* lat < 0: measured here, from the scheduled arrival to now. */
static void qrun_record(qrun_t *q, const qtask_t *t, int status, const char *result, size_t result_len,
                        double lat) {
    double now = now_s();
    pthread_mutex_lock(&q->mu);
    q->done_all++;
    q->in_flight--;
    if (status != 200) q->err_all++;
    if (t->measured) {
        run_stats_t *s = q->s;
        s->t_last = now;
        if (status == 0) s->conn_errors++;
        else if (status < 0) s->timeouts++;
        else s->status[status]++;
        if (status == 200) {
            s->ok++;
            s->inputs += q->o->inputs_per_request;
            stats_latency(s, lat >= 0 ? lat : now - t->t_sched);
            long tok = result ? parse_total_tokens(result, result_len) : -1;
            if (tok >= 0) {
                s->tokens += tok;
                s->tokens_known = 1;
            }
        }
    }
    pthread_mutex_unlock(&q->mu);
}

static int qrun_status(queue_state_t st) {
    switch (st) {
    case QUEUE_S_DONE: return 200;
    case QUEUE_S_DLQ: return 500;
    case QUEUE_S_EXPIRED: return 504;
    case QUEUE_S_CANCELLED: return 499;
    default: return -1;
    }
}

/* Enqueue one task: QUEUE_OK, or a negative QUEUE_E* (EBUSY: the queue is full). */
static int qrun_enqueue(qrun_t *q, queue_conn_t *c, qtask_t *t) {
    pthread_mutex_lock(&q->mu);
    q->in_flight++;
    if (t->measured) q->s->sent++;
    pthread_mutex_unlock(&q->mu);
    char *payload = qrun_payload(q);
    if (!payload) return QUEUE_ENOMEM;
    queue_task_t task = {.payload = payload, .payload_len = strlen(payload)};
    int rc = queue_enqueue(c, &task, t->id, NULL);
    t->t_enqueued = now_s();
    free(payload);
    return rc;
}

/* Record a refused enqueue: 429 when the queue is full, else a connection error. */
static void qrun_refused(qrun_t *q, queue_conn_t *c, const qtask_t *t, int rc) {
    pthread_mutex_lock(&q->mu);
    stats_note_error(q->s, "enqueue: %s", rc == QUEUE_ENOMEM ? "cannot build the payload" : queue_last_error(c));
    pthread_mutex_unlock(&q->mu);
    qrun_record(q, t, rc == QUEUE_EBUSY ? 429 : 0, NULL, 0, -1);
}

/* A CLOCK_MONOTONIC time as unix seconds (Redis stamps tasks in unix ms). */
static double qrun_unix_s(double mono) {
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    return rt.tv_sec + rt.tv_nsec * 1e-9 - (now_s() - mono);
}

static void qrun_wait(qrun_t *q, queue_conn_t *c, const qtask_t *t) {
    double left = q->t_hard_end - now_s();
    double per = q->o->timeout_s - (now_s() - t->t_sched);
    if (per < left) left = per;
    queue_info_t info;
    if (left <= 0) {
        qrun_record(q, t, -1, NULL, 0, -1);
        return;
    }
    double t_pick = now_s();
    int rc = queue_wait(c, t->id, (int64_t)(left * 1000) + 1, &info);
    if (rc) {
        pthread_mutex_lock(&q->mu);
        stats_note_error(q->s, "wait: %s", queue_last_error(c));
        pthread_mutex_unlock(&q->mu);
        qrun_record(q, t, 0, NULL, 0, -1);
        return;
    }
    int st = qrun_status(info.state);
    if (st != 200) {
        pthread_mutex_lock(&q->mu);
        stats_note_error(q->s, "task %s ended %s: %.200s", t->id, queue_state_name(info.state),
                         info.error ? info.error : "(no error text)");
        pthread_mutex_unlock(&q->mu);
    }
    double lat = -1; /* ended before this waiter got to it: Redis's clock */
    if (info.finished_ms > 0 && info.enqueued_ms > 0 && info.finished_ms / 1e3 < qrun_unix_s(t_pick))
        lat = (t->t_enqueued - t->t_sched) + (info.finished_ms - info.enqueued_ms) / 1e3;
    qrun_record(q, t, st, info.result, info.result_len, lat);
    queue_info_clear(&info);
}

static queue_conn_t *qrun_connect(qrun_t *q) {
    char err[256];
    queue_conn_t *c = queue_connect(&q->cfg, err, sizeof err);
    if (!c) {
        pthread_mutex_lock(&q->mu);
        if (!q->err[0]) snprintf(q->err, sizeof q->err, "%s", err);
        pthread_mutex_unlock(&q->mu);
    }
    return c;
}

static void *qrun_closed_thread(void *arg) {
    qrun_t *q = arg;
    queue_conn_t *c = qrun_connect(q);
    if (!c) return NULL;
    while (!g_stop) {
        double t = now_s();
        if (t >= q->t_end) break;
        qtask_t task = {.t_sched = t, .measured = t >= q->t_measure};
        int rc = qrun_enqueue(q, c, &task);
        if (rc) {
            qrun_refused(q, c, &task, rc);
            usleep(rc == QUEUE_EBUSY ? 10000 : 100000); /* full or Redis trouble: do not spin */
            continue;
        }
        qrun_wait(q, c, &task);
    }
    queue_close(c);
    return NULL;
}

static void *qrun_waiter_thread(void *arg) {
    qrun_t *q = arg;
    queue_conn_t *c = qrun_connect(q);
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->r_n && !q->producer_done) pthread_cond_wait(&q->cv, &q->mu);
        if (!q->r_n) break;
        qtask_t t = q->ring[q->r_head];
        q->r_head = (q->r_head + 1) % q->r_cap;
        q->r_n--;
        pthread_mutex_unlock(&q->mu);
        if (c) qrun_wait(q, c, &t);
        else qrun_record(q, &t, 0, NULL, 0, -1);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    queue_close(c);
    return NULL;
}

static void *qrun_producer_thread(void *arg) {
    qrun_t *q = arg;
    queue_conn_t *c = qrun_connect(q);
    double next = now_s() + rng_exp(q->rate);
    while (c && !g_stop && next < q->t_end) {
        double t = now_s();
        if (next > t) {
            usleep((useconds_t)((next - t) * 1e6));
            continue;
        }
        qtask_t task = {.t_sched = next, .measured = next >= q->t_measure};
        next += rng_exp(q->rate);
        int rc = qrun_enqueue(q, c, &task);
        if (rc) {
            qrun_refused(q, c, &task, rc);
            continue;
        }
        pthread_mutex_lock(&q->mu);
        if (q->r_n == q->r_cap) {
            size_t cap = q->r_cap ? 2 * q->r_cap : 1024;
            qtask_t *p = malloc(cap * sizeof *p);
            if (!p) {
                pthread_mutex_unlock(&q->mu);
                qrun_record(q, &task, 0, NULL, 0, -1);
                continue;
            }
            for (size_t i = 0; i < q->r_n; i++) p[i] = q->ring[(q->r_head + i) % q->r_cap];
            free(q->ring);
            q->ring = p;
            q->r_cap = cap;
            q->r_head = 0;
        }
        q->ring[(q->r_head + q->r_n) % q->r_cap] = task;
        q->r_n++;
        pthread_cond_signal(&q->cv);
        pthread_mutex_unlock(&q->mu);
    }
    pthread_mutex_lock(&q->mu);
    q->producer_done = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    queue_close(c);
    return NULL;
}

static int run_queue(const bench_opts_t *o, const bench_inputs_t *in, double rate, int concurrency, run_stats_t *s,
                     char *err, size_t errlen) {
    qrun_t q = {.o = o, .in = in, .rate = rate, .s = s};
    stats_init(s, rate, concurrency);
    queue_config_defaults(&q.cfg);
    q.cfg.url = o->redis_url;
    q.cfg.name = o->queue_name;
    if (o->signing_key && o->signing_key[0]) {
        q.cfg.signing_key = (const unsigned char *)o->signing_key;
        q.cfg.signing_key_len = strlen(o->signing_key);
    }
    queue_conn_t *probe = queue_connect(&q.cfg, err, errlen); /* fail fast with the reason */
    if (!probe) return -1;
    queue_close(probe);
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.cv, NULL);
    int nth = concurrency + (rate > 0);
    pthread_t *th = calloc((size_t)nth, sizeof *th);
    if (!th) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    metrics_snap_t m0, m1;
    double t_start = now_s();
    q.t_measure = t_start + o->warmup_s;
    q.t_end = q.t_measure + o->duration_s;
    q.t_hard_end = q.t_end + o->timeout_s;
    s->t0 = q.t_measure;
    int started = 0;
    for (int i = 0; i < nth; i++) {
        void *(*fn)(void *) = rate <= 0 ? qrun_closed_thread : i == 0 ? qrun_producer_thread : qrun_waiter_thread;
        if (pthread_create(&th[i], NULL, fn, &q)) break;
        started++;
    }
    if (started == 0 || (rate > 0 && started < 2)) { /* no producer or no waiter: nothing would end */
        g_stop = 1;
        for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
        free(th);
        snprintf(err, errlen, "cannot start threads");
        return -1;
    }
    progress_t pr;
    progress_init(&pr, o, t_start);
    int scraped = 0;
    for (;;) { /* the main thread only watches: progress, /metrics, the end */
        double t = now_s();
        if (!scraped && t >= q.t_measure) {
            metrics_scrape(o, &m0);
            scraped = 1;
        }
        pthread_mutex_lock(&q.mu);
        long done = q.done_all, errs = q.err_all, waiting = (long)q.r_n;
        int fl = q.in_flight, finished = (t >= q.t_end || g_stop) && (rate <= 0 || q.producer_done) && fl == 0;
        pthread_mutex_unlock(&q.mu);
        progress_tick(&pr, t, q.t_measure, q.t_end, done, errs, fl, waiting);
        if (finished || t > q.t_hard_end + 5) break;
        usleep(50000);
    }
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    progress_end(&pr);
    if (scraped) {
        metrics_scrape(o, &m1);
        metrics_delta(&m0, &m1, s);
    }
    free(th);
    free(q.ring);
    pthread_mutex_destroy(&q.mu);
    pthread_cond_destroy(&q.cv);
    if (q.err[0] && s->ok == 0) {
        snprintf(err, errlen, "%s", q.err);
        return -1;
    }
    stats_summarize(s);
    return 0;
}

/* ---- sweep ---- */

static int draw_sweep(const bench_opts_t *o, run_stats_t *steps, int n, const char *png) {
    char dat[] = "/tmp/sluice-bench-XXXXXX";
    int fd = mkstemp(dat);
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "w");
    for (int i = 0; i < n; i++)
        fprintf(f, "%.3f %.3f %.3f %.3f %.3f\n", steps[i].ips, steps[i].p50, steps[i].p90, steps[i].p99,
                steps[i].p999);
    fclose(f);
    char gp[] = "/tmp/sluice-bench-gp-XXXXXX";
    fd = mkstemp(gp);
    if (fd < 0) {
        unlink(dat);
        return -1;
    }
    f = fdopen(fd, "w");
    fprintf(f,
            "set terminal pngcairo size 900,560 font 'sans,10'\n"
            "set output '%s'\n"
            "set title 'sluice-bench: latency vs throughput (open loop, %d input%s per request)'\n"
            "set xlabel 'throughput (inputs/s)'\nset ylabel 'latency (ms)'\n"
            "set grid\nset key left top\nset yrange [0:*]\n"
            "plot '%s' using 1:2 with linespoints title 'p50', '' using 1:3 with linespoints title 'p90', "
            "'' using 1:4 with linespoints title 'p99', %g with lines dashtype 2 title 'p99 target'\n",
            png, o->inputs_per_request, o->inputs_per_request == 1 ? "" : "s", dat, o->p99_target_ms);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>&1", gp);
    int rc = system(cmd);
    unlink(dat);
    unlink(gp);
    return rc == 0 ? 0 : -1;
}

typedef int (*run_fn)(const bench_opts_t *, const bench_inputs_t *, double, int, run_stats_t *, char *, size_t);

/* ---- options ---- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: sluice-bench [http|queue] [options]\n"
            "Load generator for sluice's POST /v1/embeddings (or any OpenAI-compatible embeddings server),\n"
            "or for its Redis task queue.\n\n"
            "load\n"
            "  --url URL               server base URL (default http://127.0.0.1:8080)\n"
            "  --concurrency N         closed loop: N keep-alive connections (default 8);\n"
            "                          open loop: at most N connections (default 256)\n"
            "  --rate R                open loop: Poisson arrivals at R requests/s (default: closed loop)\n"
            "  --warmup S              seconds before measuring (default 2)\n"
            "  --duration S            seconds measured (default 10)\n"
            "  --timeout S             per request, and for the drain after the window (default 30)\n"
            "  --model NAME            \"model\" sent (default: none, the server's only model)\n"
            "  --inputs-per-request K  texts per request (default 1)\n"
            "  --encoding-format F     float | base64 (default: not sent, float)\n"
            "  --api-key KEY           sent as Authorization: Bearer KEY\n"
            "inputs\n"
            "  --corpus FILE           one text per line (bench/fetch_corpus.sh writes bench/data/fortunes.txt)\n"
            "  --limit N               use the first N lines\n"
            "  --gen-tokens MEAN[:SD]  generated texts of MEAN words (normal, SD default 0), each word one\n"
            "                          whole-word token of --vocab, so MEAN+2 tokens with [CLS]/[SEP]\n"
            "  --vocab FILE            (default models/all-minilm-l6-v2/vocab.txt)\n"
            "  --seed N                random seed (arrivals, generated texts; default 1)\n"
            "report\n"
            "  --json FILE             write the JSON report\n"
            "  --metrics-url URL       server metrics (default URL/metrics; 'none' to skip)\n"
            "  --progress on|off|auto  progress line on stderr (auto: every second on a tty, else every 5 s)\n"
            "sweep\n"
            "  --sweep                 open-loop rate steps until p99 breaks --p99-target-ms\n"
            "  --p99-target-ms MS      (default 100)\n"
            "  --rate R --rate-step D  first rate and step (default: from a closed-loop probe of capacity)\n"
            "  --max-steps N           (default 12)\n"
            "  --png FILE              latency-vs-throughput plot (default sluice-bench-sweep.png)\n"
            "queue mode\n"
            "  --redis URL             (default redis://127.0.0.1:6379/0)\n"
            "  --queue NAME            (default sluice)\n"
            "  --op NAME               task op (default embed)\n"
            "  --task-signing-key KEY  sign tasks as the workers expect (default $SLUICE_TASK_SIGNING_KEY)\n");
}

static int parse_opts(int argc, char **argv, bench_opts_t *o, char *err, size_t errlen) {
    static char metrics[600];
    *o = (bench_opts_t){.url = "http://127.0.0.1:8080", .inputs_per_request = 1, .concurrency = 0, .warmup_s = 2,
                        .duration_s = 10, .timeout_s = 30, .p99_target_ms = 100, .max_steps = 12,
                        .redis_url = "redis://127.0.0.1:6379/0", .queue_name = "sluice", .op = "embed",
                        .seed = 1, .progress = -1, .vocab = "models/all-minilm-l6-v2/vocab.txt"};
    int i = 1;
    if (i < argc && !strcmp(argv[i], "http")) i++;
    else if (i < argc && !strcmp(argv[i], "queue")) o->mode = MODE_QUEUE, i++;
    for (; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define FLAG(name) (!strcmp(a, name))
#define NEED()                                                              \
    do {                                                                    \
        if (!v) {                                                           \
            snprintf(err, errlen, "option %s needs a value", a);            \
            return -1;                                                      \
        }                                                                   \
        i++;                                                                \
    } while (0)
        if (FLAG("--help") || FLAG("-h")) {
            usage(stdout);
            exit(0);
        } else if (FLAG("--sweep")) {
            o->sweep = 1;
        } else if (FLAG("--url")) { NEED(); o->url = v; }
        else if (FLAG("--model")) { NEED(); o->model = v; }
        else if (FLAG("--corpus")) { NEED(); o->corpus = v; }
        else if (FLAG("--vocab")) { NEED(); o->vocab = v; }
        else if (FLAG("--gen-tokens")) {
            NEED();
            if (sscanf(v, "%d:%d", &o->gen_tokens, &o->gen_tokens_sd) < 1 || o->gen_tokens < 1) {
                snprintf(err, errlen, "--gen-tokens MEAN[:SD], MEAN >= 1");
                return -1;
            }
        } else if (FLAG("--limit")) { NEED(); o->limit = atoi(v); }
        else if (FLAG("--inputs-per-request")) { NEED(); o->inputs_per_request = atoi(v); }
        else if (FLAG("--concurrency")) { NEED(); o->concurrency = atoi(v); }
        else if (FLAG("--rate")) { NEED(); o->rate = atof(v); }
        else if (FLAG("--rate-step")) { NEED(); o->rate_step = atof(v); }
        else if (FLAG("--max-steps")) { NEED(); o->max_steps = atoi(v); }
        else if (FLAG("--warmup")) { NEED(); o->warmup_s = atof(v); }
        else if (FLAG("--duration")) { NEED(); o->duration_s = atof(v); }
        else if (FLAG("--timeout")) { NEED(); o->timeout_s = atof(v); }
        else if (FLAG("--json")) { NEED(); o->json_path = v; }
        else if (FLAG("--png")) { NEED(); o->png_path = v; }
        else if (FLAG("--api-key")) { NEED(); o->api_key = v; }
        else if (FLAG("--encoding-format")) { NEED(); o->encoding_format = v; }
        else if (FLAG("--metrics-url")) { NEED(); o->metrics_url = v; }
        else if (FLAG("--p99-target-ms")) { NEED(); o->p99_target_ms = atof(v); }
        else if (FLAG("--redis")) { NEED(); o->redis_url = v; }
        else if (FLAG("--queue")) { NEED(); o->queue_name = v; }
        else if (FLAG("--op")) { NEED(); o->op = v; }
        else if (FLAG("--task-signing-key")) { NEED(); o->signing_key = v; }
        else if (FLAG("--seed")) { NEED(); o->seed = strtoull(v, NULL, 10); }
        else if (FLAG("--progress")) {
            NEED();
            o->progress = !strcmp(v, "on") ? 1 : !strcmp(v, "off") ? 0 : -1;
        } else {
            snprintf(err, errlen, "unknown option '%s' (try --help)", a);
            return -1;
        }
#undef FLAG
#undef NEED
    }
    if (!o->signing_key) o->signing_key = getenv("SLUICE_TASK_SIGNING_KEY");
    if (o->mode == MODE_QUEUE && !o->model) {
        snprintf(err, errlen, "queue mode needs --model NAME (a task names its model)");
        return -1;
    }
    if (!o->corpus && !o->gen_tokens) {
        snprintf(err, errlen, "give --corpus FILE or --gen-tokens MEAN[:SD] (try --help)");
        return -1;
    }
    if (o->inputs_per_request < 1 || o->duration_s <= 0 || o->warmup_s < 0 || o->timeout_s <= 0 || o->rate < 0 ||
        o->concurrency < 0 || o->concurrency > BENCH_MAX_CONNS) {
        snprintf(err, errlen, "need --inputs-per-request >= 1, --duration > 0, --timeout > 0, --warmup >= 0, "
                              "--rate >= 0, --concurrency 1..%d",
                 BENCH_MAX_CONNS);
        return -1;
    }
    static char url[512]; /* without trailing slashes: paths are appended */
    snprintf(url, sizeof url, "%s", o->url);
    for (size_t l = strlen(url); l > 7 && url[l - 1] == '/';) url[--l] = 0;
    o->url = url;
    if (!o->metrics_url) {
        snprintf(metrics, sizeof metrics, "%s/metrics", o->url);
        o->metrics_url = o->mode == MODE_HTTP ? metrics : "";
    } else if (!strcmp(o->metrics_url, "none")) {
        o->metrics_url = "";
    }
    if (!o->png_path) o->png_path = "sluice-bench-sweep.png";
    g_rng ^= o->seed * 0xD1B54A32D192ED03ULL;
    if (!g_rng) g_rng = 1;
    return 0;
}

static int write_json(const char *path, json_t *doc) {
    if (!path) return 0;
    if (json_dump_file(doc, path, JSON_INDENT(2) | JSON_REAL_PRECISION(6))) {
        fprintf(stderr, "sluice-bench: cannot write %s\n", path);
        return -1;
    }
    fprintf(stderr, "sluice-bench: JSON report in %s\n", path);
    return 0;
}

static void print_server_note(const bench_opts_t *o, const run_stats_t *s) {
    if (s->first_error[0]) printf("\nfirst error: %s\n", s->first_error);
    printf("\nload average (1 min) at the end: %.2f on %ld cores%s\n", s->loadavg, sysconf(_SC_NPROCESSORS_ONLN),
           s->loadavg > sysconf(_SC_NPROCESSORS_ONLN) ? " (busy machine: figures are noisy)" : "");
    if (!o->metrics_url[0]) return;
    if (!s->have_batch_size && !s->have_batch_tokens && !s->have_queue_wait)
        printf("\nserver figures: %s has no batch histograms (or did not answer); columns show n/a\n",
               o->metrics_url);
}

/* One step of the sweep: run at `rate`, print and record it. 1 when the
 * target broke (p99 over it, or more than 1% errors), 0 when it held, -1 on
 * a failure to run. */
static int sweep_step(const bench_opts_t *o, const bench_inputs_t *in, run_fn run, double rate, int conc,
                      run_stats_t *st, json_t *runs) {
    char err[512];
    if (run(o, in, rate, conc, st, err, sizeof err)) {
        fprintf(stderr, "sluice-bench: %s\n", err);
        return -1;
    }
    print_row(stdout, st);
    if (st->first_error[0]) printf("  (first error: %s)\n", st->first_error);
    fflush(stdout);
    json_array_append_new(runs, run_json(st));
    long asked = st->sent + st->unsent;
    /* an overloaded server shows in p99 (arrivals wait for a connection or in its queue) */
    int broke = st->p99 > o->p99_target_ms || st->errors > 0.01 * (asked ? asked : 1);
    if (broke)
        fprintf(stderr, "sluice-bench: the target broke at %.1f requests/s offered (p99 %.1f ms, %ld errors, "
                        "%.1f requests/s answered)\n",
                rate, st->p99, st->errors, st->rps);
    return broke;
}

static int cmp_offered(const void *a, const void *b) {
    double x = ((const run_stats_t *)a)->offered_rate, y = ((const run_stats_t *)b)->offered_rate;
    return (x > y) - (x < y);
}

/* Step the open-loop rate up from `start` by `step` until the target breaks,
 * then halve the gap between the last rate that held and the first that
 * broke, twice, to place the knee closer than one step. Prints the table,
 * adds the runs and the summary to the report, draws the PNG. */
static int run_sweep(const bench_opts_t *o, const bench_inputs_t *in, run_fn run, double start, double step,
                     int conc, json_t *doc, json_t *runs) {
    enum { BISECTIONS = 2 };
    run_stats_t *steps = calloc((size_t)o->max_steps + BISECTIONS, sizeof *steps);
    if (!steps) return 1;
    int n = 0, status = 0, rc = 0;
    double best = 0, held = 0, broke_at = 0;
    printf("\n");
    print_row_header(stdout);
    for (; n < o->max_steps && !g_stop; n++) {
        double rate = start + n * step;
        rc = sweep_step(o, in, run, rate, conc, &steps[n], runs);
        if (rc < 0) break;
        if (rc == 0) {
            held = rate;
            if (steps[n].ips > best) best = steps[n].ips;
        } else {
            broke_at = rate;
            n++;
            break;
        }
    }
    if (rc < 0) status = 1;
    for (int k = 0; k < BISECTIONS && rc > 0 && held > 0 && !g_stop; k++, n++) {
        double rate = (held + broke_at) / 2;
        rc = sweep_step(o, in, run, rate, conc, &steps[n], runs);
        if (rc < 0) {
            status = 1;
            break;
        }
        if (rc == 0) {
            held = rate;
            if (steps[n].ips > best) best = steps[n].ips;
        } else {
            broke_at = rate;
        }
        rc = 1; /* keep bisecting between held and broke_at */
    }
    printf("\nsustained under p99 %.0f ms: %.1f inputs/s%s\n", o->p99_target_ms, best,
           best > 0 ? "" : " (no step met the target: start lower with --rate)");
    json_object_set_new(doc, "sweep",
                        json_pack("{s:f, s:f, s:f, s:s}", "p99_target_ms", o->p99_target_ms,
                                  "max_inputs_per_s_under_target", best, "max_offered_requests_per_s_under_target",
                                  held, "png", o->png_path));
    qsort(steps, (size_t)n, sizeof *steps, cmp_offered); /* bisection steps in rate order for the plot */
    if (n > 0) {
        if (draw_sweep(o, steps, n, o->png_path) == 0) fprintf(stderr, "sluice-bench: plot in %s\n", o->png_path);
        else fprintf(stderr, "sluice-bench: gnuplot failed or is missing (make deps installs it); no plot\n");
    }
    for (int i = 0; i < n; i++) stats_free(&steps[i]);
    free(steps);
    return status;
}

/* ---- generation mode: chat streams, TTFT and inter-token latency ----
 *
 *   bin/sluice-bench gen --url URL [--concurrency 1,8,32,64] [--rate R] [--max-tokens N]
 *                        [--duration S] [--corpus FILE] [--model NAME] [--json FILE]
 *
 * Each request is a streamed chat completion (temperature 0, stream_options
 * include_usage) whose user message is the next corpus line. One client
 * thread per concurrent stream, one connection per request (HTTP/1.0: the
 * body is the raw event stream). TTFT: request start (open loop: its
 * scheduled arrival) to the first event carrying text; inter-token latency:
 * between two text events of one stream; output tokens/s: the usage chunks'
 * completion_tokens of streams finished in the window over the window. Closed
 * loop: each thread sends its next request when its stream ends. Open loop
 * (--rate): Poisson arrivals into a queue the threads take from. */

typedef struct {
    const char *url, *model, *corpus, *json_path;
    int conc[16], n_conc, max_tokens;
    double rate, duration_s, warmup_s, timeout_s;
} gen_opts_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const gen_opts_t *o;
    target_t tgt;
    char **prompts;
    int n_prompts, next_prompt;
    double t0, t_measure, t_end;
    /* open loop: scheduled arrivals not yet taken */
    double *arrivals;
    size_t n_arr, cap_arr, taken;
    int stop;
    /* results of requests that started in the window */
    double *ttft, *itl;
    size_t n_ttft, cap_ttft, n_itl, cap_itl;
    long ok, failed, out_tokens;
    double t_last;
    char first_error[256];
} gen_run_t;

static int push_d(double **v, size_t *n, size_t *cap, double x) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 1024;
        double *p = realloc(*v, c * sizeof *p);
        if (!p) return -1;
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = x;
    return 0;
}

/* One streamed chat request; its TTFT, its inter-token gaps and its output tokens. */
static int gen_one(gen_run_t *g, const char *prompt, double t_sched, double *ttft, double **itl, size_t *n_itl,
                   size_t *cap_itl, long *tokens, char *err, size_t errlen) {
    const gen_opts_t *o = g->o;
    sbuf_t body = {0};
    sb_printf(&body, "{\"messages\":[{\"role\":\"user\",\"content\":");
    sb_json_str(&body, prompt);
    sb_printf(&body, "}],\"max_tokens\":%d,\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}",
              o->max_tokens);
    if (o->model) {
        sb_printf(&body, ",\"model\":");
        sb_json_str(&body, o->model);
    }
    sb_printf(&body, "}");
    int fd = -1, rc = -1;
    sbuf_t req = {0}, in = {0};
    sb_printf(&req, "POST %s/v1/chat/completions HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\n\r\n", g->tgt.prefix, g->tgt.host, body.n);
    sb_add(&req, body.p, body.n);
    fd = socket(g->tgt.addr.ss_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&g->tgt.addr, g->tgt.addrlen)) {
        snprintf(err, errlen, "connect: %s", strerror(errno));
        goto out;
    }
    struct timeval tv = {(time_t)o->timeout_s, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (size_t w = 0; w < req.n;) {
        ssize_t k = write(fd, req.p + w, req.n - w);
        if (k <= 0) {
            snprintf(err, errlen, "write: %s", strerror(errno));
            goto out;
        }
        w += (size_t)k;
    }
    *ttft = -1;
    *tokens = 0;
    double last = 0;
    size_t scan = 0;
    int status = 0, done = 0;
    char buf[16384];
    for (;;) {
        ssize_t k = read(fd, buf, sizeof buf);
        if (k < 0) {
            snprintf(err, errlen, "read: %s", errno == EAGAIN ? "timed out" : strerror(errno));
            goto out;
        }
        if (k == 0) break;
        double t = now_s();
        sb_add(&in, buf, (size_t)k);
        if (!status) {
            char *hend = strstr(in.p, "\r\n\r\n");
            if (!hend) continue;
            status = atoi(strchr(in.p, ' ') ? strchr(in.p, ' ') + 1 : "0");
            scan = (size_t)(hend + 4 - in.p);
            if (status != 200) continue;
        }
        if (status != 200) continue;
        for (;;) { /* whole events: "data: ...\n\n" */
            char *ev = strstr(in.p + scan, "data: "), *end = ev ? strstr(ev, "\n\n") : NULL;
            if (!end) break;
            scan = (size_t)(end + 2 - in.p);
            if (!strncmp(ev + 6, "[DONE]", 6)) {
                done = 1;
                continue;
            }
            json_t *j = json_loadb(ev + 6, (size_t)(end - ev - 6), 0, NULL);
            json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
            json_t *c = json_object_get(json_object_get(ch, "delta"), "content");
            if (json_is_string(c) && json_string_length(c) > 0) {
                if (*ttft < 0) *ttft = t - t_sched;
                else push_d(itl, n_itl, cap_itl, t - last);
                last = t;
            }
            json_t *u = json_object_get(j, "usage");
            if (json_is_object(u)) *tokens = (long)json_integer_value(json_object_get(u, "completion_tokens"));
            json_decref(j);
        }
    }
    if (status != 200) {
        snprintf(err, errlen, "HTTP %d: %.160s", status, status && strstr(in.p, "\r\n\r\n") ? strstr(in.p, "\r\n\r\n") + 4 : "");
        goto out;
    }
    if (!done) {
        snprintf(err, errlen, "the stream ended without [DONE]");
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) close(fd);
    free(body.p);
    free(req.p);
    free(in.p);
    return rc;
}

static void *gen_thread(void *arg) {
    gen_run_t *g = arg;
    double *itl = NULL;
    size_t n_itl = 0, cap_itl = 0;
    for (;;) {
        double t_sched;
        pthread_mutex_lock(&g->mu);
        if (g->o->rate > 0) { /* open loop: the next arrival, when it is due */
            while (!g->stop && g->taken >= g->n_arr) pthread_cond_wait(&g->cv, &g->mu);
            if (g->stop && g->taken >= g->n_arr) {
                pthread_mutex_unlock(&g->mu);
                break;
            }
            t_sched = g->arrivals[g->taken++];
        } else {
            t_sched = now_s();
            if (t_sched >= g->t_end || g_stop) {
                pthread_mutex_unlock(&g->mu);
                break;
            }
        }
        const char *prompt = g->prompts[g->next_prompt++ % g->n_prompts];
        pthread_mutex_unlock(&g->mu);
        double ttft;
        long tokens;
        char err[256];
        n_itl = 0;
        int rc = gen_one(g, prompt, t_sched, &ttft, &itl, &n_itl, &cap_itl, &tokens, err, sizeof err);
        double t = now_s();
        pthread_mutex_lock(&g->mu);
        if (t_sched >= g->t_measure && t_sched < g->t_end) {
            if (rc) {
                g->failed++;
                if (!g->first_error[0]) snprintf(g->first_error, sizeof g->first_error, "%s", err);
            } else {
                g->ok++;
                g->out_tokens += tokens;
                if (ttft >= 0) push_d(&g->ttft, &g->n_ttft, &g->cap_ttft, ttft);
                for (size_t i = 0; i < n_itl; i++) push_d(&g->itl, &g->n_itl, &g->cap_itl, itl[i]);
                if (t > g->t_last) g->t_last = t;
            }
        }
        pthread_mutex_unlock(&g->mu);
    }
    free(itl);
    return NULL;
}

/* One run at one concurrency: its row and its JSON. */
static json_t *gen_run_once(const gen_opts_t *o, char **prompts, int n_prompts, int conc, char *err, size_t errlen) {
    gen_run_t g = {.o = o, .prompts = prompts, .n_prompts = n_prompts};
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    if (target_parse(o->url, &g.tgt, err, errlen)) return NULL;
    g.t0 = now_s();
    g.t_measure = g.t0 + o->warmup_s;
    g.t_end = g.t_measure + o->duration_s;
    pthread_t *th = calloc((size_t)conc, sizeof *th);
    int started = 0;
    for (int i = 0; th && i < conc; i++)
        if (!pthread_create(&th[i], NULL, gen_thread, &g)) started++;
    if (o->rate > 0) { /* the arrivals, as a Poisson process, until the end of the window */
        double t = g.t0;
        while (!g_stop && (t += rng_exp(o->rate)) < g.t_end) {
            double now = now_s();
            if (t > now) usleep((useconds_t)((t - now) * 1e6));
            pthread_mutex_lock(&g.mu);
            push_d(&g.arrivals, &g.n_arr, &g.cap_arr, t);
            pthread_cond_signal(&g.cv);
            pthread_mutex_unlock(&g.mu);
        }
        pthread_mutex_lock(&g.mu);
        g.stop = 1;
        pthread_cond_broadcast(&g.cv);
        pthread_mutex_unlock(&g.mu);
    }
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    free(th);
    double win = (g.t_last > g.t_measure ? g.t_last : g.t_end) - g.t_measure;
    qsort(g.ttft, g.n_ttft, sizeof *g.ttft, cmp_double);
    qsort(g.itl, g.n_itl, sizeof *g.itl, cmp_double);
    double tps = win > 0 ? g.out_tokens / win : 0;
    double la = loadavg_1m();
    printf("%-6s %5d %7ld %6ld %10.1f %9.1f %9.1f %8.1f %8.1f %8.2f\n", o->rate > 0 ? "open" : "closed", conc, g.ok,
           g.failed, tps, pct(g.ttft, g.n_ttft, 0.5) * 1e3, pct(g.ttft, g.n_ttft, 0.99) * 1e3,
           pct(g.itl, g.n_itl, 0.5) * 1e3, pct(g.itl, g.n_itl, 0.99) * 1e3, la);
    fflush(stdout);
    if (g.first_error[0]) fprintf(stderr, "sluice-bench gen: first failure: %s\n", g.first_error);
    json_t *row = json_pack("{s:s,s:i,s:f,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f}", "loop", o->rate > 0 ? "open" : "closed",
                            "concurrency", conc, "rate", o->rate, "ok", (json_int_t)g.ok, "failed", (json_int_t)g.failed,
                            "output_tokens", (json_int_t)g.out_tokens, "output_tokens_per_s", tps, "ttft_p50_s",
                            pct(g.ttft, g.n_ttft, 0.5), "ttft_p99_s", pct(g.ttft, g.n_ttft, 0.99), "itl_p50_s",
                            pct(g.itl, g.n_itl, 0.5), "itl_p99_s", pct(g.itl, g.n_itl, 0.99), "loadavg_1m", la);
    free(g.ttft);
    free(g.itl);
    free(g.arrivals);
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
    return row;
}

static const char *const GEN_PROMPTS[] = {
    "Write a short poem about the sea.", "Explain what a hash table is.", "Give three tips for learning to cook.",
    "What causes the seasons on Earth?", "Describe a busy market in the morning.", "Why is the sky blue?",
    "Summarise the plot of a detective story in two sentences.", "List some uses of copper."};

static int gen_main(int argc, char **argv) {
    gen_opts_t o = {.url = "http://127.0.0.1:8080", .max_tokens = 64, .duration_s = 20, .warmup_s = 3,
                    .timeout_s = 120, .conc = {1, 8, 32, 64}, .n_conc = 4};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: sluice-bench gen [--url URL] [--model NAME] [--concurrency 1,8,32,64] [--rate R]\n"
                   "                        [--max-tokens 64] [--duration 20] [--warmup 3] [--timeout 120]\n"
                   "                        [--corpus FILE] [--json FILE]\n");
            return 0;
        }
        if (!v) {
            fprintf(stderr, "sluice-bench gen: option %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--url")) o.url = v;
        else if (!strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--corpus")) o.corpus = v;
        else if (!strcmp(a, "--json")) o.json_path = v;
        else if (!strcmp(a, "--rate")) o.rate = atof(v);
        else if (!strcmp(a, "--max-tokens")) o.max_tokens = atoi(v);
        else if (!strcmp(a, "--duration")) o.duration_s = atof(v);
        else if (!strcmp(a, "--warmup")) o.warmup_s = atof(v);
        else if (!strcmp(a, "--timeout")) o.timeout_s = atof(v);
        else if (!strcmp(a, "--concurrency")) {
            o.n_conc = 0;
            for (const char *p = v; *p && o.n_conc < 16; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ',')) {
                o.conc[o.n_conc] = atoi(p);
                if (o.conc[o.n_conc] < 1 || o.conc[o.n_conc] > 1024) {
                    fprintf(stderr, "sluice-bench gen: --concurrency takes 1..1024, comma-separated\n");
                    return 2;
                }
                o.n_conc++;
            }
        } else {
            fprintf(stderr, "sluice-bench gen: unknown option %s\n", a);
            return 2;
        }
    }
    if (o.max_tokens < 1 || o.duration_s <= 0 || o.rate < 0) {
        fprintf(stderr, "sluice-bench gen: --max-tokens, --duration must be positive, --rate not negative\n");
        return 2;
    }
    char **prompts = (char **)GEN_PROMPTS, err[512];
    int n_prompts = (int)(sizeof GEN_PROMPTS / sizeof GEN_PROMPTS[0]), owned = 0;
    if (o.corpus) {
        if (cli_read_lines(o.corpus, &prompts, &n_prompts, err, sizeof err) || n_prompts == 0) {
            fprintf(stderr, "sluice-bench gen: %s\n", n_prompts ? err : "the corpus is empty");
            return 2;
        }
        owned = 1;
    }
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "sluice-bench gen: %s, %d prompts from %s, max_tokens %d, %s\n", o.url, n_prompts,
            o.corpus ? o.corpus : "the built-in list", o.max_tokens, o.rate > 0 ? "open loop" : "closed loop");
    printf("%-6s %5s %7s %6s %10s %9s %9s %8s %8s %8s\n", "loop", "conc", "ok", "failed", "out_tok/s", "ttft_p50",
           "ttft_p99", "itl_p50", "itl_p99", "load1m");
    json_t *runs = json_array();
    int status = 0;
    for (int k = 0; k < o.n_conc && !g_stop; k++) {
        json_t *row = gen_run_once(&o, prompts, n_prompts, o.conc[k], err, sizeof err);
        if (!row) {
            fprintf(stderr, "sluice-bench gen: %s\n", err);
            status = 1;
            break;
        }
        if (json_integer_value(json_object_get(row, "ok")) == 0) status = 1;
        json_array_append_new(runs, row);
    }
    if (o.json_path) {
        json_t *doc = json_pack("{s:s,s:s,s:i,s:o}", "mode", "gen", "url", o.url, "max_tokens", o.max_tokens, "runs",
                                json_incref(runs));
        if (json_dump_file(doc, o.json_path, JSON_INDENT(1))) fprintf(stderr, "sluice-bench gen: cannot write %s\n", o.json_path);
        json_decref(doc);
    }
    json_decref(runs);
    if (owned) cli_free_lines(prompts, n_prompts);
    return status;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "gen")) return gen_main(argc - 1, argv + 1);
    bench_opts_t o;
    char err[512];
    if (parse_opts(argc, argv, &o, err, sizeof err)) {
        fprintf(stderr, "sluice-bench: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    bench_inputs_t in = {0};
    int rc = o.corpus ? inputs_from_corpus(o.corpus, o.limit, &in, err, sizeof err)
                      : inputs_generated(o.vocab, o.gen_tokens, o.gen_tokens_sd, 4096, &in, err, sizeof err);
    if (rc) {
        fprintf(stderr, "sluice-bench: %s\n", err);
        return 2;
    }
    run_fn run = o.mode == MODE_HTTP ? run_http : run_queue;
    if (o.mode == MODE_HTTP) { /* fail fast, with the reason, when nothing listens there */
        char *body = NULL, url[600];
        snprintf(url, sizeof url, "%s/healthz", o.url);
        int st = http_get(url, 5.0, &body, err, sizeof err);
        free(body);
        if (st < 0) {
            fprintf(stderr, "sluice-bench: %s is not answering: %s\n", o.url, err);
            cli_free_lines(in.texts, in.n);
            return 1;
        }
    }
    fprintf(stderr, "sluice-bench: %s %s, %d texts from %s (mean %.0f chars), %d per request\n",
            o.mode == MODE_HTTP ? "http" : "queue", o.mode == MODE_HTTP ? o.url : o.redis_url, in.n, in.source,
            in.mean_chars, o.inputs_per_request);
    json_t *doc = report_head(&o, &in), *runs = json_array(), *cmd = json_array();
    for (int i = 0; i < argc; i++) json_array_append_new(cmd, json_string(argv[i]));
    json_object_set_new(doc, "command", cmd);
    int status = 0;
    if (!o.sweep) {
        run_stats_t s;
        int conc = o.concurrency ? o.concurrency : o.rate > 0 ? 256 : 8;
        if (run(&o, &in, o.rate, conc, &s, err, sizeof err)) {
            fprintf(stderr, "sluice-bench: %s\n", err);
            status = 1;
        } else {
            json_array_append_new(runs, run_json(&s));
            printf("\n");
            print_row_header(stdout);
            print_row(stdout, &s);
            print_server_note(&o, &s);
            if (s.ok == 0) status = 1;
        }
        stats_free(&s);
    } else {
        double start = o.rate, step = o.rate_step;
        int conc = o.concurrency ? o.concurrency : 256;
        if (start <= 0) { /* probe capacity: closed loop, then step from a quarter of it */
            run_stats_t probe;
            bench_opts_t po = o;
            po.duration_s = o.duration_s / 2 > 3 ? o.duration_s / 2 : 3;
            fprintf(stderr, "sluice-bench: probing capacity (closed loop, concurrency 16, %.0f s)\n", po.duration_s);
            if (run(&po, &in, 0, 16, &probe, err, sizeof err) || probe.rps <= 0) {
                fprintf(stderr, "sluice-bench: capacity probe failed: %s\n", probe.rps <= 0 ? "no answer" : err);
                stats_free(&probe);
                status = 1;
                goto done;
            }
            fprintf(stderr, "sluice-bench: capacity about %.1f requests/s; p50 %.1f ms at concurrency 16\n",
                    probe.rps, probe.p50);
            start = probe.rps * 0.2;
            if (step <= 0) step = probe.rps * 0.1;
            stats_free(&probe);
        }
        if (step <= 0) step = start;
        status |= run_sweep(&o, &in, run, start, step, conc, doc, runs);
    }
done:
    json_object_set_new(doc, "runs", runs);
    if (write_json(o.json_path, doc)) status = 1;
    json_decref(doc);
    cli_free_lines(in.texts, in.n);
    return status;
}

