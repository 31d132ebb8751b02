/* tests/test_harden.c - a running server against hostile and careless clients
 * (issue 17), over loopback: the attacker binds 127.0.0.2, the legitimate
 * client 127.0.0.1. Idle and slow sockets, bodies held open, huge answers left
 * unread, /v1/expand amplification, and ambiguous HTTP framing. Each test is
 * bounded to a few seconds.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <hiredis.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "api/config.h"
#include "api/http/auth.h"
#include "batcher/batcher.h"
#include "queue/queue.h"
#include "tests/support_http.h"
#include "tests/support_redis.h"
#include "tests/support_server.h"

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A TCP connection from src (e.g. "127.0.0.2") to the server; rcvbuf > 0
 * shrinks the receive buffer (a slow reader). -1 when refused. */
static int raw_connect(const char *src, int port, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in me = {.sin_family = AF_INET};
    inet_pton(AF_INET, src, &me.sin_addr);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&me, sizeof me) || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int raw_send(int fd, const char *s) { return send(fd, s, strlen(s), MSG_NOSIGNAL) == (ssize_t)strlen(s) ? 0 : -1; }

/* Read what comes within timeout_ms into buf (NUL-terminated); *closed set
 * when the server closed the connection. Returns the HTTP status, or 0. */
static int raw_read(int fd, char *buf, size_t cap, int timeout_ms, int *closed) {
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t len = 0;
    *closed = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET)) {
            *closed = 1;
            break;
        }
        if (r < 0) break;
        len += (size_t)r;
        if (len + 1 >= cap) break;
    }
    buf[len] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) status = 0;
    return status;
}

/* Has the server closed fd (EOF or reset within timeout_ms)? */
static int raw_closed(int fd, int timeout_ms) {
    char buf[4096];
    int closed;
    raw_read(fd, buf, sizeof buf, timeout_ms, &closed);
    return closed;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void start(support_server_t *s, api_config_t *c) {
    cr_assert_eq(support_server_start(s, c), 0, "server: %s", s->err);
}

/* A real redis-server, and a test server serving queue on it, once its
 * intake is up. */
static void start_on_redis(support_redis_t *redis, support_server_t *s, const char *queue) {
    cr_assert_eq(support_redis_start(redis, NULL), 0, "redis: %s", redis->err);
    static api_config_t c; /* the server keeps a pointer to it */
    support_server_config(&c);
    snprintf(c.redis, sizeof c.redis, "%s", redis->url);
    snprintf(c.queue, sizeof c.queue, "%s", queue);
    start(s, &c);
    for (int i = 0; i < 300 && api_serve_queue_up(s->srv) != 1; i++) sleep_ms(10);
    cr_assert_eq(api_serve_queue_up(s->srv), 1, "the Redis intake never came up");
}

/* The legitimate client: a probe and a small embeddings request, both answered. */
static void legit_ok(int port, const char *when) {
    http_resp_t r;
    cr_assert_eq(http_request(port, "GET", "/healthz", NULL, NULL, 0, &r, 3000), 0, "%s: /healthz unanswered", when);
    cr_assert_eq(r.status, 200, "%s: /healthz answered %d", when, r.status);
    http_resp_free(&r);
    const char *body = "{\"input\":\"hello\"}";
    cr_assert_eq(http_request(port, "POST", "/v1/embeddings", (const char *const[]){"Content-Type: application/json", NULL},
                              body, strlen(body), &r, 5000),
                 0, "%s: /v1/embeddings unanswered", when);
    cr_assert_eq(r.status, 200, "%s: /v1/embeddings answered %d: %s", when, r.status, r.body);
    http_resp_free(&r);
}

/* 1. One address opening more idle sockets than the server takes in all:
 * past its own limit they are refused, and 127.0.0.1 still gets answers. */
Test(harden, idle_sockets_from_one_address) {
    api_config_t c;
    support_server_config(&c);
    c.max_connections = 96;
    c.max_connections_per_client = 16;
    c.header_timeout_ms = 0; /* only the per-address limit is under test */
    support_server_t s;
    start(&s, &c);
    enum { N = 160 };
    int fds[N];
    for (int i = 0; i < N; i++) fds[i] = raw_connect("127.0.0.2", s.port, 0);
    sleep_ms(300); /* the server has accepted (and refused) them */
    for (int i = 0; i < 3; i++) legit_ok(s.port, "during 160 idle sockets from 127.0.0.2");
    int open = 0;
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0 && !raw_closed(fds[i], 1)) open++;
    cr_assert_leq(open, 16, "%d idle sockets from one address kept open; the limit is 16", open);
    for (int i = 0; i < N; i++)
        if (fds[i] >= 0) close(fds[i]);
    support_server_stop(&s);
}

/* 1. Slowloris: a header block sent a byte at a time and a body trickled
 * below the minimum rate are cut off at their deadlines; a client that sends
 * its body at a fair pace is not. */
Test(harden, slow_headers_and_bodies_dropped) {
    api_config_t c;
    support_server_config(&c);
    c.header_timeout_ms = 1000;
    c.body_timeout_ms = 1000;
    c.min_body_rate = 1024;
    support_server_t s;
    start(&s, &c);
    enum { SLOW = 4 };
    int hdr[SLOW], body[SLOW];
    for (int i = 0; i < SLOW; i++) {
        hdr[i] = raw_connect("127.0.0.2", s.port, 0);
        body[i] = raw_connect("127.0.0.2", s.port, 0);
        cr_assert(hdr[i] >= 0 && body[i] >= 0);
        raw_send(hdr[i], "GET /healthz HTTP/1.1\r\nHost: x\r\n");
        raw_send(body[i], "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          "Content-Length: 100000\r\n\r\n{\"input\":\"");
    }
    int fair = raw_connect("127.0.0.1", s.port, 0);
    cr_assert(fair >= 0);
    char payload[512];
    memset(payload, 'a', sizeof payload - 1);
    payload[sizeof payload - 1] = '\0';
    char head[256];
    snprintf(head, sizeof head, "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                "Connection: close\r\nContent-Length: %zu\r\n\r\n{\"input\":\"",
             (size_t)(12 * 511 + 12));
    raw_send(fair, head);
    /* 2.4 s: a byte each 200 ms on the slow ones (5 B/s), 511 B each 200 ms on the fair one (2.5 KB/s) */
    for (int t = 0; t < 12; t++) {
        sleep_ms(200);
        for (int i = 0; i < SLOW; i++) {
            raw_send(hdr[i], "X");
            raw_send(body[i], "a");
        }
        raw_send(fair, payload);
        if (t == 5) legit_ok(s.port, "during slow clients");
    }
    for (int i = 0; i < SLOW; i++) {
        cr_assert(raw_closed(hdr[i], 500), "a header block trickled for 2.4 s was not cut off at 1 s");
        cr_assert(raw_closed(body[i], 500), "a body at 5 B/s was not cut off (minimum 1024 B/s past 1 s)");
        close(hdr[i]);
        close(body[i]);
    }
    raw_send(fair, "\"}");
    char buf[65536];
    int closed;
    int st = raw_read(fair, buf, sizeof buf, 5000, &closed);
    cr_assert(st == 200 || st == 413, "the fair client was answered %d (want an answer, not a dropped "
                                      "connection): %.200s", st, buf);
    close(fair);
    support_server_stop(&s);
}

/* 3. Bodies held open by one address take the in-flight body budget; past it a
 * new body is answered 503 before it is read, and small requests still pass. */
Test(harden, inflight_body_budget) {
    api_config_t c;
    support_server_config(&c);
    c.max_inflight_body_bytes = 1u << 20;
    support_server_t s;
    start(&s, &c);
    int a = raw_connect("127.0.0.2", s.port, 0), b = raw_connect("127.0.0.2", s.port, 0);
    cr_assert(a >= 0 && b >= 0);
    const char *head = "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Content-Length: 700000\r\n\r\n{\"input\":\"";
    raw_send(a, head);
    sleep_ms(200);
    raw_send(b, head);
    char buf[4096];
    int closed;
    int st = raw_read(b, buf, sizeof buf, 2000, &closed);
    cr_assert_eq(st, 503, "a second 700 KB body over a 1 MB budget: answered %d, want 503", st);
    cr_assert(strstr(buf, "Retry-After"), "503 without Retry-After: %s", buf);
    cr_assert(closed, "the connection of a refused body stays open");
    legit_ok(s.port, "with 700 KB of body held");
    close(a);
    close(b);
    sleep_ms(200);
    legit_ok(s.port, "after the bodies left");
    support_server_stop(&s);
}

/* 2. /v1/expand: terms x k bounded per request, named in the 413. */
Test(harden, expand_amplification_bounded) {
    api_config_t c;
    support_server_config(&c);
    c.max_expand_results = 5000;
    support_server_t s;
    start(&s, &c);
    size_t cap = 64 + 2048 * 8;
    char *body = malloc(cap);
    size_t n = (size_t)snprintf(body, cap, "{\"k\":1000,\"terms\":[");
    for (int i = 0; i < 2048; i++) n += (size_t)snprintf(body + n, cap - n, "%s\"t%d\"", i ? "," : "", i % 10);
    snprintf(body + n, cap - n, "]}");
    http_resp_t r;
    cr_assert_eq(http_post_json(s.port, "/v1/expand", body, &r), 0);
    cr_assert_eq(r.status, 413, "2048 terms x k=1000 answered %d: %.300s", r.status, r.body);
    cr_assert(strstr(r.body, "2048") && strstr(r.body, "1000") && strstr(r.body, "5000"),
              "the 413 does not name the numbers: %s", r.body);
    http_resp_free(&r);
    free(body);
    support_server_stop(&s);
}

/* The body of 512 one-word inputs: an answer of about 2 MB; *len its length. */
static char *big_answer_body(size_t *len) {
    size_t cap = 64 + 512 * 6;
    char *body = malloc(cap);
    size_t n = (size_t)snprintf(body, cap, "{\"input\":[");
    for (int i = 0; i < 512; i++) n += (size_t)snprintf(body + n, cap - n, "%s\"a\"", i ? "," : "");
    n += (size_t)snprintf(body + n, cap - n, "]}");
    *len = n;
    return body;
}

/* POST body to /v1/embeddings from a slow reader (127.0.0.2, a 2 KB receive
 * buffer) that reads nothing yet: the fd. */
static int slow_post(int port, const char *body, size_t n) {
    int fd = raw_connect("127.0.0.2", port, 2048);
    cr_assert(fd >= 0);
    char head[256];
    snprintf(head, sizeof head, "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                "Connection: close\r\nContent-Length: %zu\r\n\r\n", n);
    raw_send(fd, head);
    raw_send(fd, body);
    return fd;
}

/* 2. Answers left unread by a slow reader count against a process-wide
 * backlog; past it new work is answered 503 with Retry-After (probes pass),
 * and the budget comes back when the reader goes. */
Test(harden, response_backlog_budget) {
    api_config_t c;
    support_server_config(&c);
    c.max_response_backlog_bytes = 512u << 10;
    support_server_t s;
    start(&s, &c);
    size_t n;
    char *body = big_answer_body(&n);
    int slow = slow_post(s.port, body, n);
    int refused = 0;
    for (int t = 0; t < 50 && !refused; t++) { /* the answer is computed, then waits on the reader */
        sleep_ms(100);
        http_resp_t r;
        cr_assert_eq(http_post_json(s.port, "/v1/embeddings", "{\"input\":\"hi\"}", &r), 0);
        if (r.status == 503) {
            char ra[16];
            cr_assert(http_header(&r, "Retry-After", ra, sizeof ra), "503 without Retry-After");
            cr_assert(strstr(r.body, "max-response-backlog-bytes"), "503 does not name the flag: %s", r.body);
            refused = 1;
        } else {
            cr_assert_eq(r.status, 200, "answered %d: %s", r.status, r.body);
        }
        http_resp_free(&r);
    }
    cr_assert(refused, "2 MB waiting on a slow reader never tripped a 512 KB backlog budget");
    http_resp_t r;
    cr_assert_eq(http_get(s.port, "/healthz", &r), 0);
    cr_assert_eq(r.status, 200, "a probe was refused under the backlog: %d", r.status);
    http_resp_free(&r);
    close(slow);
    sleep_ms(300);
    legit_ok(s.port, "after the slow reader left");
    free(body);
    support_server_stop(&s);
}

/* A gauge of /metrics (the line "name value"); -1 when absent. */
static double gauge(int port, const char *name) {
    http_resp_t r;
    cr_assert_eq(http_get(port, "/metrics", &r), 0);
    double v = -1;
    size_t n = strlen(name);
    for (const char *p = r.body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, name, n) && p[n] == ' ') {
            v = strtod(p + n + 1, NULL);
            break;
        }
    http_resp_free(&r);
    return v;
}

/* Send body on a slow reader's socket (127.0.0.2, 2 KB receive buffer) and
 * wait until its answer is held unsent (the gauge over min_bytes): the fd. */
static int slow_reader_with_answer(int port, const char *body, size_t n, double min_bytes) {
    int fd = slow_post(port, body, n);
    for (int t = 0; t < 300 && gauge(port, "sluice_unsent_answer_bytes") < min_bytes; t++) sleep_ms(50);
    cr_assert_geq(gauge(port, "sluice_unsent_answer_bytes"), min_bytes, "the answer never waited on the reader");
    return fd;
}

/* Wait for the unsent-answer gauge to fall to 0; its last value. */
static double unsent_drains(int port) {
    double v = -1;
    for (int t = 0; t < 100 && (v = gauge(port, "sluice_unsent_answer_bytes")) != 0; t++) sleep_ms(50);
    return v;
}

/* 2. An answer left unread counts against its model's pending-bytes budget
 * until it is sent: past the budget the model answers 429 naming the bytes
 * (where it answered 200 with the same budget before), and the budget comes
 * back on every end: the reader reads it all, the reader goes away, and the
 * 429s themselves once sent. */
Test(harden, unsent_answers_count_against_pending_bytes, .timeout = 120) {
    api_config_t c;
    support_server_config(&c);
    c.max_pending_bytes = 1u << 20; /* the 512-input request's own item (about 0.8 MB) fits */
    c.max_response_backlog_bytes = 0; /* off: the model's budget alone is under test */
    support_server_t s;
    start(&s, &c);
    size_t n;
    char *body = big_answer_body(&n);
    legit_ok(s.port, "before");
    int slow = slow_reader_with_answer(s.port, body, n, 1u << 20);
    http_resp_t r;
    cr_assert_eq(http_post_json(s.port, "/v1/embeddings", "{\"input\":\"hi\"}", &r), 0);
    cr_assert_eq(r.status, 429, "2 MB unread over a 1 MB pending budget: answered %d: %s", r.status, r.body);
    char ra[16];
    cr_assert(http_header(&r, "Retry-After", ra, sizeof ra), "429 without Retry-After");
    cr_assert(strstr(r.body, "not yet read") && strstr(r.body, "1048576"), "the 429 does not give the numbers: %s",
              r.body);
    fprintf(stderr, "unsent answers: %s\n", r.body);
    http_resp_free(&r);
    batcher_stats_t st;
    batcher_stats(api_serve_batcher(s.srv), &st);
    cr_assert_geq(st.unsent_bytes, (size_t)1 << 20);
    /* sent: the reader reads the whole answer */
    char *buf = malloc(8u << 20);
    int closed;
    raw_read(slow, buf, 8u << 20, 10000, &closed);
    cr_assert(closed && strstr(buf, "\"embedding\""), "the slow reader did not get its answer");
    close(slow);
    double left = unsent_drains(s.port);
    cr_assert_eq(left, 0, "%.0f bytes still held after the answer was read", left);
    legit_ok(s.port, "after the answer was read");
    /* client gone: the reader leaves with its answer unread */
    slow = slow_reader_with_answer(s.port, body, n, 1u << 20);
    close(slow);
    left = unsent_drains(s.port);
    cr_assert_eq(left, 0, "%.0f bytes still held after the reader left", left);
    legit_ok(s.port, "after the reader left");
    batcher_stats(api_serve_batcher(s.srv), &st);
    cr_assert_eq(st.unsent_bytes, 0);
    free(buf);
    free(body);
    support_server_stop(&s);
}

/* 8. Framing two parties could read two ways (RFC 9112 6.1, 6.3, 3.2): 400
 * and the connection closed, before any body is read; plain chunked works. */
Test(harden, ambiguous_framing_refused) {
    api_config_t c;
    support_server_config(&c);
    support_server_t s;
    start(&s, &c);
    const char *smuggle = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    char cl_te[512];
    snprintf(cl_te, sizeof cl_te,
             "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\n"
             "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s", smuggle);
    const struct {
        const char *what, *req;
    } cases[] = {
        {"Content-Length and Transfer-Encoding", cl_te},
        {"two Content-Length values",
         "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 17\r\n"
         "Content-Length: 5\r\n\r\n{\"input\":\"hello\"}"},
        {"HTTP/1.1 without Host", "GET /healthz HTTP/1.1\r\n\r\n"},
        {"Transfer-Encoding: xchunked",
         "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: xchunked\r\n\r\n"
         "11\r\n{\"input\":\"hello\"}\r\n0\r\n\r\n"},
        {"Transfer-Encoding: chunked, identity",
         "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         "Transfer-Encoding: chunked, identity\r\n\r\n11\r\n{\"input\":\"hello\"}\r\n0\r\n\r\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = raw_connect("127.0.0.2", s.port, 0);
        cr_assert(fd >= 0);
        raw_send(fd, cases[i].req);
        char buf[8192];
        int closed;
        int st = raw_read(fd, buf, sizeof buf, 2000, &closed);
        cr_expect_eq(st, 400, "%s: answered %d, want 400: %.300s", cases[i].what, st, buf);
        cr_expect(closed, "%s: the connection stays open after the 400", cases[i].what);
        cr_expect_null(strstr(buf + 12, "HTTP/1.1 200"), "%s: a request smuggled in the body ran", cases[i].what);
        close(fd);
    }
    /* the control: a well-formed chunked body is served */
    int fd = raw_connect("127.0.0.1", s.port, 0);
    raw_send(fd, "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n11\r\n{\"input\":\"hello\"}\r\n0\r\n\r\n");
    char buf[65536];
    int closed;
    int st = raw_read(fd, buf, sizeof buf, 5000, &closed);
    cr_assert_eq(st, 200, "a chunked body answered %d: %.300s", st, buf);
    close(fd);
    support_server_stop(&s);
}

/* 4. SIGTERM while the intake is busy decoding big tasks: every lease is
 * acked or handed back before the process exits, and it exits within the
 * drain timeout plus the margin docs/operations.md states (one batch and 3 s).
 * Three rounds on the same queue. */
Test(harden, sigterm_leaves_no_lease, .timeout = 240) {
    support_redis_t redis;
    cr_assert_eq(support_redis_start(&redis, NULL), 0, "redis: %s", redis.err);
    char err[512];
    queue_conn_t *qc = support_redis_queue(&redis, "hq", err, sizeof err);
    cr_assert(qc, "%s", err);
    enum { N = 64, BYTES = 2 << 20 };
    char *text = malloc(BYTES + 64);
    for (int i = 0; i < BYTES; i++) text[i] = "abcdefgh "[i % 9];
    text[BYTES] = '\0';
    json_t *in = json_string(text);
    char *inputs = json_dumps(in, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(in);
    free(text);
    char *payload = queue_payload_build("all-minilm-l6-v2", "embed", inputs, NULL, NULL, err, sizeof err);
    cr_assert(payload, "%s", err);
    free(inputs);
    queue_task_t tasks[N];
    for (int i = 0; i < N; i++) tasks[i] = (queue_task_t){.payload = payload, .payload_len = strlen(payload)};
    static char ids[N][QUEUE_ID_MAX];
    int status[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i += 4) /* 8 MB a round trip: within the client's command timeout */
            cr_assert_eq(queue_enqueue_many(qc, tasks + i, 4, ids + i, status + i), 0, "enqueue: %s",
                         queue_last_error(qc));
        support_proc_t p;
        /* 2 MB tasks must be decoded, not refused for their size */
        const char *extra[] = {"--redis", redis.url, "--queue", "hq", "--drain-timeout-ms", "2000",
                               "--max-batch-tokens", "512", "--max-body-bytes", "4M", NULL};
        cr_assert_eq(support_proc_start(&p, extra), 0, "%s", p.err);
        sleep_ms(3000);
        double t0 = now_s();
        int rc = support_proc_stop(&p, SIGTERM, 30000);
        double took = now_s() - t0;
        queue_stats_t st;
        cr_assert_eq(queue_stats(qc, &st), 0);
        cr_assert_eq(rc, 0, "round %d: exit status %d", round, rc);
        cr_assert_eq(st.leased, 0, "round %d: %lld tasks still leased after the worker exited (%.1f s after SIGTERM)",
                     round, (long long)st.leased, took);
        fprintf(stderr, "sigterm round %d: exit %.2f s after SIGTERM, %lld leased\n", round, took, (long long)st.leased);
        cr_assert_lt(took, 2.0 + 5.0, "round %d: exit %.1f s after SIGTERM with a 2 s drain", round, took);
    }
    free(payload);
    queue_close(qc);
    support_redis_stop(&redis);
}

/* Two counters of INFO stats (connections received, commands processed). */
static void redis_counters(const support_redis_t *r, long long *conns, long long *cmds) {
    redisContext *c = redisConnect("127.0.0.1", r->port);
    cr_assert(c && !c->err, "redis connect");
    redisReply *rep = redisCommand(c, "INFO stats");
    cr_assert(rep && rep->type == REDIS_REPLY_STRING, "INFO stats");
    const char *a = strstr(rep->str, "total_connections_received:"), *b = strstr(rep->str, "total_commands_processed:");
    cr_assert(a && b);
    *conns = atoll(a + strlen("total_connections_received:"));
    *cmds = atoll(b + strlen("total_commands_processed:"));
    freeReplyObject(rep);
    redisFree(c);
}

static int count_lines(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0)
        if (strstr(line, needle)) n++;
    free(line);
    fclose(f);
    return n;
}

/* 6. Redis out of memory (noeviction) while a task computes: the worker
 * backs off with jitter instead of reconnecting in a loop, collapses its
 * warnings, writes the task's outcome line once, and acks once Redis has
 * room again. */
Test(harden, redis_error_storm_backs_off, .timeout = 120) {
    support_redis_t redis;
    cr_assert_eq(support_redis_start(&redis, NULL), 0, "redis: %s", redis.err);
    char err[512];
    queue_conn_t *qc = support_redis_queue(&redis, "eq", err, sizeof err);
    cr_assert(qc, "%s", err);
    /* one task that computes for a while: 512 sentences */
    json_t *in = json_array();
    for (int i = 0; i < 512; i++) json_array_append_new(in, json_sprintf("sentence number %d of a long task about queues", i));
    char *inputs = json_dumps(in, JSON_COMPACT);
    json_decref(in);
    char *payload = queue_payload_build("all-minilm-l6-v2", "embed", inputs, NULL, NULL, err, sizeof err);
    free(inputs);
    cr_assert(payload, "%s", err);
    queue_task_t task = {.payload = payload, .payload_len = strlen(payload)};
    char id[QUEUE_ID_MAX];
    cr_assert_eq(queue_enqueue(qc, &task, id, NULL), 0, "%s", queue_last_error(qc));
    support_proc_t p;
    const char *extra[] = {"--redis", redis.url, "--queue", "eq", "--log-level", "info", NULL};
    cr_assert_eq(support_proc_start(&p, extra), 0, "%s", p.err);
    queue_stats_t st = {0};
    for (int i = 0; i < 200 && st.leased == 0; i++) {
        sleep_ms(20);
        cr_assert_eq(queue_stats(qc, &st), 0);
    }
    cr_assert_eq(st.leased, 1, "the worker never leased the task");
    /* Redis full: every write refused with -OOM */
    char *fill = malloc(1536 * 1024 + 1);
    memset(fill, 'x', 1536 * 1024);
    fill[1536 * 1024] = '\0';
    support_redis_cmd(&redis, (const char *const[]){"SET", "fill", fill, NULL});
    free(fill);
    support_redis_cmd(&redis, (const char *const[]){"CONFIG", "SET", "maxmemory-policy", "noeviction", NULL});
    cr_assert_eq(support_redis_cmd(&redis, (const char *const[]){"CONFIG", "SET", "maxmemory", "1mb", NULL}), 0);
    /* the compute ends under it: its outcome line is out and its ack refused */
    for (int i = 0; i < 1500 && count_lines(p.log, "\"msg\":\"task\"") < 1; i++) sleep_ms(20);
    cr_assert_eq(count_lines(p.log, "\"msg\":\"task\""), 1, "the task never finished computing");
    long long c0, m0, c1, m1;
    redis_counters(&redis, &c0, &m0);
    int w0 = count_lines(p.log, "\"level\":\"warn\"");
    sleep_ms(3000);
    redis_counters(&redis, &c1, &m1);
    int w1 = count_lines(p.log, "\"level\":\"warn\"");
    fprintf(stderr, "redis out of memory for 3 s: %lld connections, %lld commands, %d warnings\n", c1 - c0, m1 - m0,
            w1 - w0);
    cr_assert_lt(c1 - c0, 40, "%lld connections in 3 s of Redis errors: no backoff", c1 - c0);
    cr_assert_lt(m1 - m0, 1000, "%lld commands in 3 s of Redis errors: no backoff", m1 - m0);
    cr_assert_leq(w1 - w0, 8, "%d warning lines in 3 s of the same Redis error", w1 - w0);
    /* room again: the result lands, and the task's line was written once */
    support_redis_cmd(&redis, (const char *const[]){"CONFIG", "SET", "maxmemory", "0", NULL});
    support_redis_cmd(&redis, (const char *const[]){"DEL", "fill", NULL});
    queue_info_t info;
    memset(&info, 0, sizeof info);
    int rc = queue_wait(qc, id, 20000, &info);
    cr_assert_eq(rc, 0, "%s", queue_last_error(qc));
    cr_assert_str_eq(queue_state_name(info.state), "done", "the task ended %s", queue_state_name(info.state));
    queue_info_clear(&info);
    int tasks = count_lines(p.log, "\"msg\":\"task\"");
    cr_assert_eq(tasks, 1, "%d outcome lines for one task (one per settle retry?)", tasks);
    cr_assert_eq(support_proc_stop(&p, SIGTERM, 30000), 0);
    free(payload);
    queue_close(qc);
    support_redis_stop(&redis);
}

/* 6. The /v1/tasks routes against a Redis that answers every write with an
 * error (maxmemory 1, noeviction): each request is answered 503 at once with
 * Retry-After, and Redis is asked again only after a growing, jittered
 * backoff (a circuit breaker), not by every request; once Redis has room,
 * the route works again within the backoff's cap. */
Test(harden, task_routes_back_off_a_failing_redis, .timeout = 120) {
    support_redis_t redis;
    support_server_t s;
    start_on_redis(&redis, &s, "bq");
    const char *task = "{\"input\":\"hello\",\"delay_ms\":600000}"; /* never runs during the test */
    http_resp_t r;
    cr_assert_eq(http_post_json(s.port, "/v1/tasks", task, &r), 0);
    cr_assert_eq(r.status, 202, "%s", r.body);
    http_resp_free(&r);
    support_redis_cmd(&redis, (const char *const[]){"CONFIG", "SET", "maxmemory-policy", "noeviction", NULL});
    cr_assert_eq(support_redis_cmd(&redis, (const char *const[]){"CONFIG", "SET", "maxmemory", "1", NULL}), 0);
    sleep_ms(300); /* the worker's own threads meet the errors and back off */
    long long c0, m0, c1, m1;
    redis_counters(&redis, &c0, &m0);
    int n = 0, refused = 0;
    double worst = 0, t_end = now_s() + 2.0;
    while (now_s() < t_end) {
        double t0 = now_s();
        cr_assert_eq(http_post_json(s.port, "/v1/tasks", task, &r), 0, "no answer");
        double took = now_s() - t0;
        worst = took > worst ? took : worst;
        n++;
        if (r.status == 503) {
            char ra[16];
            cr_assert(http_header(&r, "Retry-After", ra, sizeof ra) && atoi(ra) >= 1, "503 without Retry-After");
            refused++;
        } else {
            cr_assert_fail("a POST against a Redis out of memory answered %d: %s", r.status, r.body);
        }
        http_resp_free(&r);
    }
    redis_counters(&redis, &c1, &m1);
    /* less INFO's own connection and command; the rest includes the worker's own lease polls (about 100
     * commands a second), where a request each would be thousands */
    long long conns = c1 - c0 - 1, cmds = m1 - m0 - 1;
    fprintf(stderr, "failing redis, 2 s: %d requests (%d answered 503, the slowest in %.3f s); Redis saw %lld "
            "connections and %lld commands in all\n", n, refused, worst, conns, cmds);
    cr_assert_geq(n, 50, "only %d requests in 2 s: answers are not prompt", n);
    cr_assert_lt(worst, 0.5, "a request waited %.2f s on a failing Redis", worst);
    cr_assert_lt(conns, 20, "%d requests in 2 s made %lld connections to a failing Redis: no backoff", n, conns);
    cr_assert_lt(cmds, 600, "%d requests in 2 s sent %lld commands to a failing Redis: no backoff", n, cmds);
    /* room again: a request gets through within the backoff's cap (5 s), and then every one does */
    support_redis_cmd(&redis, (const char *const[]){"CONFIG", "SET", "maxmemory", "0", NULL});
    int st = 0;
    double t_ok = now_s();
    for (int i = 0; i < 80 && st != 202; i++) {
        cr_assert_eq(http_post_json(s.port, "/v1/tasks", task, &r), 0);
        st = r.status;
        http_resp_free(&r);
        if (st != 202) sleep_ms(100);
    }
    cr_assert_eq(st, 202, "the route never recovered after Redis had room again");
    fprintf(stderr, "recovered %.2f s after Redis had room\n", now_s() - t_ok);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(http_post_json(s.port, "/v1/tasks", task, &r), 0);
        cr_assert_eq(r.status, 202, "after recovery: %d %s", r.status, r.body);
        http_resp_free(&r);
    }
    /* Redis stopped: prompt 503s with Retry-After, never a hang */
    support_redis_stop(&redis);
    worst = 0;
    for (int i = 0; i < 200; i++) {
        double t0 = now_s();
        cr_assert_eq(http_post_json(s.port, "/v1/tasks", task, &r), 0, "no answer with Redis stopped");
        worst = now_s() - t0 > worst ? now_s() - t0 : worst;
        char ra[16];
        cr_assert_eq(r.status, 503, "with Redis stopped: %d %s", r.status, r.body);
        cr_assert(http_header(&r, "Retry-After", ra, sizeof ra), "503 without Retry-After");
        http_resp_free(&r);
    }
    cr_assert_lt(worst, 0.5, "a request waited %.2f s on a stopped Redis", worst);
    support_server_stop(&s);
}

/* One call as the holder of key (NULL: none); the status, and the body parsed into *out (may be NULL). */
static int as_key(int port, const char *key, const char *method, const char *path, const char *body, json_t **out,
                  int *cache_hit) {
    char auth[128];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
    const char *hdr[] = {auth, "Content-Type: application/json", NULL};
    http_resp_t r;
    cr_assert_eq(http_request(port, method, path, hdr, body, body ? strlen(body) : 0, &r, 10000), 0, "%s %s", method,
                 path);
    char buf[16];
    if (cache_hit) *cache_hit = http_header(&r, "X-Cache", buf, sizeof buf) != NULL;
    if (out) *out = json_loadb(r.body, r.body_len, 0, NULL);
    int st = r.status;
    http_resp_free(&r);
    return st;
}

/* 5. Tenants: key B cannot find, read or cancel key A's task, the same
 * dedup_key gives each key its own task, an admin key reads every task, and
 * the result cache never answers one key with another's entry. */
Test(harden, tenants_are_isolated, .timeout = 120) {
    support_redis_t redis;
    cr_assert_eq(support_redis_start(&redis, NULL), 0, "redis: %s", redis.err);
    char path[128], err[256], keys[3][96];
    snprintf(path, sizeof path, "/tmp/sluice-test-harden-%d.keys", (int)getpid());
    unlink(path);
    const char *names[] = {"alice", "bob", "root"};
    unsigned scopes[] = {API_SCOPE_INFER, API_SCOPE_INFER, API_SCOPE_INFER | API_SCOPE_ADMIN};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(api_key_generate(keys[i], sizeof keys[i]), 0);
        cr_assert_eq(api_keys_append(path, names[i], keys[i], scopes[i], 0, 0, err, sizeof err), 0, "%s", err);
    }
    api_config_t c;
    support_server_config(&c);
    snprintf(c.key_file, sizeof c.key_file, "%s", path);
    snprintf(c.redis, sizeof c.redis, "%s", redis.url);
    snprintf(c.queue, sizeof c.queue, "tq");
    c.cache_ttl_ms = 60000;
    support_server_t s;
    start(&s, &c);
    for (int i = 0; i < 300 && api_serve_queue_up(s.srv) != 1; i++) sleep_ms(10);
    cr_assert_eq(api_serve_queue_up(s.srv), 1, "redis intake never came up");
    json_t *j;
    cr_assert_eq(as_key(s.port, keys[0], "POST", "/v1/tasks", "{\"input\":\"alice's secret\",\"dedup_key\":\"d1\"}",
                        &j, NULL), 202);
    char a_id[QUEUE_ID_MAX], b_id[QUEUE_ID_MAX];
    snprintf(a_id, sizeof a_id, "%s", json_string_value(json_object_get(j, "id")));
    json_decref(j);
    cr_assert_eq(as_key(s.port, keys[1], "POST", "/v1/tasks", "{\"input\":\"bob's text\",\"dedup_key\":\"d1\"}", &j,
                        NULL), 202);
    snprintf(b_id, sizeof b_id, "%s", json_string_value(json_object_get(j, "id")));
    cr_assert(json_is_false(json_object_get(j, "deduplicated")), "bob's task was folded into alice's");
    json_decref(j);
    cr_assert_str_neq(a_id, b_id, "the same dedup_key from two keys gave one task");
    char p_a[256];
    snprintf(p_a, sizeof p_a, "/v1/tasks/%s", a_id);
    cr_assert_eq(as_key(s.port, keys[1], "GET", p_a, NULL, NULL, NULL), 404, "bob reads alice's task");
    cr_assert_eq(as_key(s.port, keys[1], "DELETE", p_a, NULL, NULL, NULL), 404, "bob cancels alice's task");
    cr_assert_eq(as_key(s.port, keys[0], "GET", p_a, NULL, &j, NULL), 200, "alice cannot read her own task");
    cr_assert_str_neq(json_string_value(json_object_get(j, "state")), "cancelled");
    json_decref(j);
    cr_assert_eq(as_key(s.port, keys[2], "GET", p_a, NULL, NULL, NULL), 200, "the admin key cannot read a task");
    /* a batch is its poster's, task by task: its dedup_key is bob's, alice cannot reach its tasks */
    cr_assert_eq(as_key(s.port, keys[1], "POST", "/v1/tasks/batch",
                        "{\"tasks\":[{\"input\":\"bob 1\",\"dedup_key\":\"d1\"},{\"input\":\"bob 2\",\"dedup_key\":\"d2\"}]}",
                        &j, NULL), 202);
    json_t *e0 = json_array_get(json_object_get(j, "data"), 0), *e1 = json_array_get(json_object_get(j, "data"), 1);
    cr_assert_str_eq(json_string_value(json_object_get(e0, "id")), b_id, "bob's batch did not find his own dedup_key");
    cr_assert(json_is_false(json_object_get(e1, "deduplicated")));
    char p_b2[256];
    snprintf(p_b2, sizeof p_b2, "/v1/tasks/%s", json_string_value(json_object_get(e1, "id")));
    json_decref(j);
    cr_assert_eq(as_key(s.port, keys[0], "GET", p_b2, NULL, NULL, NULL), 404, "alice reads bob's batch task");
    cr_assert_eq(as_key(s.port, keys[0], "DELETE", p_b2, NULL, NULL, NULL), 404, "alice cancels bob's batch task");
    cr_assert_eq(as_key(s.port, keys[1], "GET", p_b2, NULL, NULL, NULL), 200, "bob cannot read his batch task");
    cr_assert_eq(as_key(s.port, keys[0], "POST", "/v1/tasks/batch", "{\"tasks\":[{\"input\":\"a\",\"dedup_key\":\"d2\"}]}",
                        &j, NULL), 202);
    cr_assert(json_is_false(json_object_get(json_array_get(json_object_get(j, "data"), 0), "deduplicated")),
              "alice's batch task was folded into bob's");
    json_decref(j);
    /* the queue's stats and dead letters span every tenant: admin keys only */
    cr_assert_eq(as_key(s.port, keys[0], "GET", "/v1/admin/dlq", NULL, NULL, NULL), 403);
    cr_assert_eq(as_key(s.port, keys[0], "GET", "/v1/admin/queue/stats", NULL, NULL, NULL), 403);
    cr_assert_eq(as_key(s.port, keys[2], "GET", "/v1/admin/queue/stats", NULL, NULL, NULL), 200);
    /* 11. an id longer than any task's is no task: 404, not 503 */
    char p_long[128];
    snprintf(p_long, sizeof p_long, "/v1/tasks/%s", "0123456789012345678901234567890123456789012345678901");
    cr_assert_eq(as_key(s.port, keys[0], "GET", p_long, NULL, NULL, NULL), 404, "a 52-character task id");
    cr_assert_eq(as_key(s.port, keys[0], "DELETE", p_long, NULL, NULL, NULL), 404, "a 52-character task id");
    /* the cache: alice's answer is her hit, never bob's */
    int hit;
    const char *same = "{\"input\":\"the same words\"}";
    cr_assert_eq(as_key(s.port, keys[0], "POST", "/v1/embeddings", same, NULL, &hit), 200);
    cr_assert_eq(as_key(s.port, keys[0], "POST", "/v1/embeddings", same, NULL, &hit), 200);
    cr_assert(hit, "alice's repeat was not a cache hit (is the cache on?)");
    cr_assert_eq(as_key(s.port, keys[1], "POST", "/v1/embeddings", same, NULL, &hit), 200);
    cr_assert(!hit, "bob was answered from alice's cache entry");
    support_server_stop(&s);
    unlink(path);
    support_redis_stop(&redis);
}

typedef struct {
    int port;
    char id[QUEUE_ID_MAX];
    int status;
    double took;
} poll_arg_t;

static void *long_poll(void *arg) {
    poll_arg_t *a = arg;
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s?wait=2", a->id);
    double t0 = now_s();
    http_resp_t r;
    a->status = http_request(a->port, "GET", path, NULL, NULL, 0, &r, 10000) ? 0 : r.status;
    a->took = now_s() - t0;
    if (a->status) http_resp_free(&r);
    return NULL;
}

/* 9. Long-polls: 100 waiters on tasks that do not end cost Redis a handful
 * of commands, not 40 looks a second each; a waiter whose task ends is
 * answered at once. */
Test(harden, long_polls_do_not_poll_redis, .timeout = 120) {
    support_redis_t redis;
    support_server_t s;
    start_on_redis(&redis, &s, "wq");
    char err[512];
    queue_conn_t *qc = support_redis_queue(&redis, "wq", err, sizeof err);
    cr_assert(qc, "%s", err);
    char *payload = queue_payload_build("all-minilm-l6-v2", "embed", "\"hello\"", NULL, NULL, err, sizeof err);
    cr_assert(payload);
    enum { N = 100 };
    static poll_arg_t args[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) { /* delayed a minute: nobody runs them during the test */
        queue_task_t task = {.payload = payload, .payload_len = strlen(payload), .delay_ms = 60000};
        cr_assert_eq(queue_enqueue(qc, &task, args[i].id, NULL), 0, "%s", queue_last_error(qc));
        args[i].port = s.port;
    }
    long long c0, m0, c1, m1;
    for (int i = 0; i < N; i++) pthread_create(&th[i], NULL, long_poll, &args[i]);
    /* the middle second of the waits: every waiter parked, none at its end */
    sleep_ms(700);
    redis_counters(&redis, &c0, &m0);
    sleep_ms(1000);
    redis_counters(&redis, &c1, &m1);
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) cr_assert_eq(args[i].status, 200, "long-poll %d answered %d", i, args[i].status);
    /* what is left is the worker's own lease polling (about 50 calls a second) */
    fprintf(stderr, "100 parked long-polls, 1 s: %lld Redis commands\n", m1 - m0);
    cr_assert_lt(m1 - m0, 400, "%lld Redis commands in 1 s for 100 parked waiters (polling?)", m1 - m0);
    /* a task that ends wakes its waiter at once */
    queue_task_t task = {.payload = payload, .payload_len = strlen(payload)};
    poll_arg_t one = {.port = s.port};
    cr_assert_eq(queue_enqueue(qc, &task, one.id, NULL), 0);
    long_poll(&one);
    cr_assert_eq(one.status, 200);
    cr_assert_lt(one.took, 1.9, "a waiter on a task that ended was held %.2f s", one.took);
    /* Task ends are published only while the waiter thread has marked the queue listened to
     * ({q}:subs): tasks that end just before, while and after their waiters register (delays
     * spread over 0.6 s) are each answered at their end, none left to the 2 s limit or the 5 s
     * safety look. */
    enum { M = 16 };
    static poll_arg_t race[M];
    pthread_t rth[M];
    for (int i = 0; i < M; i++) {
        queue_task_t t = {.payload = payload, .payload_len = strlen(payload), .delay_ms = i * 40};
        cr_assert_eq(queue_enqueue(qc, &t, race[i].id, NULL), 0);
        race[i].port = s.port;
    }
    for (int i = 0; i < M; i++) pthread_create(&rth[i], NULL, long_poll, &race[i]);
    for (int i = 0; i < M; i++) pthread_join(rth[i], NULL);
    for (int i = 0; i < M; i++) {
        cr_expect_eq(race[i].status, 200);
        cr_expect_lt(race[i].took, 1.9, "waiter %d (its task due after %d ms) was held %.2f s", i, i * 40,
                     race[i].took);
    }
    free(payload);
    support_server_stop(&s);
    queue_close(qc);
    support_redis_stop(&redis);
}

/* reqs POST /v1/embeddings of `inputs` short inputs each, sent from
 * 127.0.0.2 on sockets fd[0..reqs) that are left unread (a heavy client). */
static void send_heavy(int port, int inputs, int reqs, int *fd) {
    size_t cap = 64 + (size_t)inputs * 64;
    char *body = malloc(cap);
    size_t n = (size_t)snprintf(body, cap, "{\"input\":[");
    for (int i = 0; i < inputs; i++)
        n += (size_t)snprintf(body + n, cap - n, "%s\"input %d of a heavy client's request\"", i ? "," : "", i);
    n += (size_t)snprintf(body + n, cap - n, "]}");
    char head[256];
    snprintf(head, sizeof head, "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                "Content-Length: %zu\r\n\r\n", n);
    for (int i = 0; i < reqs; i++) {
        fd[i] = raw_connect("127.0.0.2", port, 0);
        cr_assert(fd[i] >= 0);
        raw_send(fd[i], head);
        raw_send(fd[i], body);
    }
    free(body);
}

/* 10. Work whose client has gone is dropped before compute: three large
 * requests from 127.0.0.2 whose sockets close while they wait are cancelled
 * (not computed), and a small request from 127.0.0.1 is answered. */
Test(harden, client_gone_work_dropped, .timeout = 120) {
    api_config_t c;
    support_server_config(&c);
    c.max_batch_seqs = 16;
    support_server_t s;
    start(&s, &c);
    enum { INPUTS = 512, REQS = 3 };
    int fd[REQS];
    send_heavy(s.port, INPUTS, REQS, fd);
    batcher_stats_t st;
    for (int t = 0; t < 500; t++) { /* the first one computing: it too must stop early */
        batcher_stats(api_serve_batcher(s.srv), &st);
        if (st.seqs > 0) break;
        sleep_ms(20);
    }
    for (int i = 0; i < REQS; i++) close(fd[i]);
    legit_ok(s.port, "after three clients left");
    for (int t = 0; t < 600; t++) { /* until the three are settled */
        batcher_stats(api_serve_batcher(s.srv), &st);
        if (st.items_ok + st.items_cancelled >= REQS + 1) break; /* and the legitimate request */
        sleep_ms(100);
    }
    fprintf(stderr, "clients gone: %llu items cancelled, %llu sequences computed of %d sent\n",
            (unsigned long long)st.items_cancelled, (unsigned long long)st.seqs, REQS * INPUTS);
    cr_assert_geq(st.items_cancelled, 1, "no request of a client that left was dropped before compute");
    /* one may have started: its batches in flight end, the rest of it is never computed */
    cr_assert_lt(st.seqs, (uint64_t)INPUTS / 2, "%llu sequences of clients that left were computed",
                 (unsigned long long)st.seqs);
    support_server_stop(&s);
}

/* 11. The key file: `keys add` never writes through a symlink and makes an
 * existing file 0600; the server refuses a key file group or others may
 * read; `serve` refuses a queue name `sluice queue` would refuse (exit 2). */
Test(harden, key_file_mode_and_queue_names) {
    char path[128], link[160], err[256], key[96];
    snprintf(path, sizeof path, "/tmp/sluice-test-harden-mode-%d.keys", (int)getpid());
    snprintf(link, sizeof link, "%s.link", path);
    unlink(path), unlink(link);
    cr_assert_eq(api_key_generate(key, sizeof key), 0);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fclose(f);
    chmod(path, 0644);
    cr_assert_eq(api_keys_append(path, "one", key, API_SCOPE_INFER, 0, 0, err, sizeof err), 0, "%s", err);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "keys add left the key file mode %03o", (unsigned)(st.st_mode & 0777));
    cr_assert_eq(symlink(path, link), 0);
    cr_assert_neq(api_keys_append(link, "two", key, API_SCOPE_INFER, 0, 0, err, sizeof err), 0,
                  "keys add wrote through a symlink");
    chmod(path, 0640);
    api_config_t c;
    support_server_config(&c);
    snprintf(c.key_file, sizeof c.key_file, "%s", path);
    support_server_t s;
    cr_assert_neq(support_server_start(&s, &c), 0, "a key file of mode 0640 was accepted");
    cr_assert(strstr(s.err, "chmod 600"), "the refusal does not say what to do: %s", s.err);
    unlink(path), unlink(link);
    const char *bin = getenv("SLUICE_BIN") ? getenv("SLUICE_BIN") : "bin/sluice";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "timeout 20 %s serve --queue 'bad}name' --redis none >/dev/null 2>&1", bin);
    int rc = system(cmd);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "serve --queue 'bad}name' exited %d, want 2",
              WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
}

/* Copy a task's hash (captured as HGETALL words) into queue q's keys and make it ready. */
static void reinsert(redisContext *rc, const char *q, const char *id, redisReply *fields, const char *score) {
    char key[256];
    snprintf(key, sizeof key, "{%s}:t:%s", q, id);
    const char *argv[64];
    size_t lens[64];
    int n = 0;
    argv[n] = "HSET", lens[n++] = 4;
    argv[n] = key, lens[n++] = strlen(key);
    for (size_t i = 0; i < fields->elements && n < 62; i++) {
        const char *f = fields->element[i]->str;
        /* as it was when captured: waiting, never leased */
        argv[n] = f, lens[n++] = fields->element[i]->len;
    }
    redisReply *r = redisCommandArgv(rc, n, argv, lens);
    cr_assert(r && r->type != REDIS_REPLY_ERROR, "HSET: %s", r ? r->str : rc->errstr);
    freeReplyObject(r);
    r = redisCommand(rc, "HSET %s state ready", key);
    freeReplyObject(r);
    r = redisCommand(rc, "ZADD {%s}:ready %s %s", q, score, id);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER, "ZADD");
    freeReplyObject(r);
}

/* 7. Signed tasks: a captured task put back after it ran is refused
 * (tombstone), a copy in another queue is refused (the queue is signed), a
 * changed priority is refused, and so is one older than the stated age. */
Test(harden, signed_tasks_not_replayed_or_moved, .timeout = 60) {
    support_redis_t redis;
    cr_assert_eq(support_redis_start(&redis, NULL), 0, "redis: %s", redis.err);
    static const unsigned char key[] = "a shared signing secret";
    queue_config_t cfg;
    queue_config_defaults(&cfg);
    cfg.url = redis.url;
    cfg.signing_key = key;
    cfg.signing_key_len = sizeof key - 1;
    char err[256];
    cfg.name = "sq";
    queue_conn_t *sq = queue_connect(&cfg, err, sizeof err);
    cfg.name = "sq2";
    queue_conn_t *sq2 = queue_connect(&cfg, err, sizeof err);
    cr_assert(sq && sq2, "%s", err);
    redisContext *rc = redisConnect("127.0.0.1", redis.port);
    cr_assert(rc && !rc->err);
    const char *payload = "{\"model\":\"m\",\"op\":\"embed\",\"inputs\":\"x\"}";
    queue_task_t task = {.payload = payload, .payload_len = strlen(payload), .priority = 3};
    char id[QUEUE_ID_MAX];
    cr_assert_eq(queue_enqueue(sq, &task, id, NULL), 0);
    redisReply *fields = redisCommand(rc, "HGETALL {sq}:t:%s", id);
    redisReply *score = redisCommand(rc, "ZSCORE {sq}:ready %s", id);
    cr_assert(fields && fields->type == REDIS_REPLY_ARRAY && score && score->type == REDIS_REPLY_STRING);
    /* it runs once */
    queue_lease_t l[4];
    int got = 0;
    cr_assert_eq(queue_lease(sq, 4, "w", 30000, l, &got), 0);
    cr_assert_eq(got, 1, "the signed task was refused: %s", queue_last_error(sq));
    cr_assert_eq(queue_ack(sq, l[0].id, l[0].token, "{}", 2, 0), 0);
    queue_lease_clear(l, (size_t)got);
    /* replayed: the captured hash back in ready */
    reinsert(rc, "sq", id, fields, score->str);
    cr_assert_eq(queue_lease(sq, 4, "w", 30000, l, &got), 0);
    cr_assert_eq(got, 0, "a finished signed task put back ran again");
    queue_info_t info;
    cr_assert_eq(queue_get(sq, id, &info), 0);
    cr_expect_str_eq(info.error ? info.error : "", "replayed");
    queue_info_clear(&info);
    /* moved: the same hash in another queue */
    reinsert(rc, "sq2", id, fields, score->str);
    cr_assert_eq(queue_lease(sq2, 4, "w", 30000, l, &got), 0);
    cr_assert_eq(got, 0, "a signed task copied into another queue ran");
    /* a changed priority */
    char id2[QUEUE_ID_MAX];
    cr_assert_eq(queue_enqueue(sq, &task, id2, NULL), 0);
    freeReplyObject(redisCommand(rc, "HSET {sq}:t:%s prio 200", id2));
    cr_assert_eq(queue_lease(sq, 4, "w", 30000, l, &got), 0);
    cr_assert_eq(got, 0, "a signed task whose priority was changed ran");
    /* too old for a worker that takes signed tasks up to 50 ms old */
    char id3[QUEUE_ID_MAX];
    cr_assert_eq(queue_enqueue(sq, &task, id3, NULL), 0);
    sleep_ms(200);
    cfg.name = "sq";
    cfg.signed_max_age_ms = 50;
    queue_conn_t *strict = queue_connect(&cfg, err, sizeof err);
    cr_assert(strict);
    cr_assert_eq(queue_lease(strict, 4, "w", 30000, l, &got), 0);
    cr_assert_eq(got, 0, "a signed task older than the stated age ran");
    cr_assert_eq(queue_get(sq, id3, &info), 0);
    cr_expect_str_eq(info.error ? info.error : "", "signature_too_old");
    queue_info_clear(&info);
    freeReplyObject(fields);
    freeReplyObject(score);
    redisFree(rc);
    queue_close(strict);
    queue_close(sq);
    queue_close(sq2);
    support_redis_stop(&redis);
}

/* 7. `serve --task-signed-max-age-s`: a signed task whose signature is older
 * than the flag's age when the intake leases it (here: delayed past it) goes
 * to the DLQ as signature_too_old, never run; a fresh one runs. */
Test(harden, signed_max_age_flag_refuses_old_tasks, .timeout = 60) {
    support_redis_t redis;
    cr_assert_eq(support_redis_start(&redis, NULL), 0, "redis: %s", redis.err);
    static const char key[] = "a shared signing secret";
    api_config_t c;
    support_server_config(&c);
    char err[256];
    cr_assert_eq(api_config_set(&c, "task-signed-max-age-s", "1", err, sizeof err), 0, "%s", err);
    cr_assert_eq(api_config_set(&c, "task-signing-key", key, err, sizeof err), 0, "%s", err);
    snprintf(c.redis, sizeof c.redis, "%s", redis.url);
    snprintf(c.queue, sizeof c.queue, "aq");
    support_server_t s;
    start(&s, &c);
    queue_config_t qcfg;
    queue_config_defaults(&qcfg);
    qcfg.url = redis.url;
    qcfg.name = "aq";
    qcfg.signing_key = (const unsigned char *)key;
    qcfg.signing_key_len = sizeof key - 1;
    queue_conn_t *qc = queue_connect(&qcfg, err, sizeof err);
    cr_assert(qc, "%s", err);
    char *payload = queue_payload_build("all-minilm-l6-v2", "embed", "\"x\"", NULL, NULL, err, sizeof err);
    cr_assert(payload, "%s", err);
    queue_task_t task = {.payload = payload, .payload_len = strlen(payload)};
    char fresh[QUEUE_ID_MAX], old[QUEUE_ID_MAX];
    cr_assert_eq(queue_enqueue(qc, &task, fresh, NULL), 0);
    task.delay_ms = 1500; /* leased 1.5 s after it was signed: older than 1 s */
    cr_assert_eq(queue_enqueue(qc, &task, old, NULL), 0);
    queue_info_t info;
    cr_assert_eq(queue_wait(qc, fresh, 20000, &info), 0);
    cr_expect_str_eq(queue_state_name(info.state), "done");
    queue_info_clear(&info);
    cr_assert_eq(queue_wait(qc, old, 20000, &info), 0);
    cr_expect_str_eq(queue_state_name(info.state), "dlq", "a task signed longer ago than the flag's age ran");
    cr_expect_str_eq(info.error ? info.error : "", "signature_too_old");
    queue_info_clear(&info);
    cr_assert_neq(api_config_set(&c, "task-signed-max-age-s", "-5", err, sizeof err), 0);
    free(payload);
    support_server_stop(&s);
    queue_close(qc);
    support_redis_stop(&redis);
}

/* 10. Fair sharing: four requests of 512 inputs from 127.0.0.2, then one of
 * one input from 127.0.0.1: the small one is answered before the big ones
 * are through, not after all of them. */
Test(harden, heavy_client_does_not_starve_others, .timeout = 120) {
    api_config_t c;
    support_server_config(&c);
    c.max_batch_seqs = 16;
    support_server_t s;
    start(&s, &c);
    enum { INPUTS = 512, REQS = 4 };
    batcher_stats_t st0, st1;
    batcher_stats(api_serve_batcher(s.srv), &st0);
    int fd[REQS];
    send_heavy(s.port, INPUTS, REQS, fd);
    sleep_ms(300);
    double t0 = now_s();
    http_resp_t r;
    cr_assert_eq(http_post_json(s.port, "/v1/embeddings", "{\"input\":\"one small question\"}", &r), 0);
    double took = now_s() - t0;
    batcher_stats(api_serve_batcher(s.srv), &st1);
    cr_assert_eq(r.status, 200);
    http_resp_free(&r);
    int heavy_done = (int)(st1.items_ok - st0.items_ok) - 1;
    fprintf(stderr, "fairness: the small request took %.2f s; %d of %d heavy requests were done by then\n", took,
            heavy_done, REQS);
    cr_assert_lt(heavy_done, REQS, "the small request waited for every heavy one (%.2f s)", took);
    for (int i = 0; i < REQS; i++) close(fd[i]);
    support_server_stop(&s);
}

/* 11. A task payload over --max-body-bytes ends done with a 413 error, never decoded. */
Test(harden, task_payload_capped, .timeout = 60) {
    support_redis_t redis;
    cr_assert_eq(support_redis_start(&redis, NULL), 0, "redis: %s", redis.err);
    char err[256];
    queue_conn_t *qc = support_redis_queue(&redis, "pq", err, sizeof err);
    cr_assert(qc, "%s", err);
    api_config_t c;
    support_server_config(&c);
    snprintf(c.redis, sizeof c.redis, "%s", redis.url);
    snprintf(c.queue, sizeof c.queue, "pq");
    c.max_body_bytes = 64u << 10;
    support_server_t s;
    start(&s, &c);
    size_t big = 100u << 10;
    char *inputs = malloc(big + 3);
    inputs[0] = '"';
    memset(inputs + 1, 'a', big);
    inputs[big + 1] = '"';
    inputs[big + 2] = '\0';
    char *payload = queue_payload_build("all-minilm-l6-v2", "embed", inputs, NULL, NULL, err, sizeof err);
    free(inputs);
    cr_assert(payload, "%s", err);
    queue_task_t task = {.payload = payload, .payload_len = strlen(payload)};
    char id[QUEUE_ID_MAX];
    cr_assert_eq(queue_enqueue(qc, &task, id, NULL), 0);
    queue_info_t info;
    cr_assert_eq(queue_wait(qc, id, 20000, &info), 0);
    cr_assert_str_eq(queue_state_name(info.state), "done");
    cr_assert(info.result && strstr(info.result, "payload_too_large") && strstr(info.result, "413"),
              "a 100 KB payload over a 64 KB limit: %s", info.result ? info.result : "(no result)");
    queue_info_clear(&info);
    /* the worker never read it: Redis withholds a payload over the lease's limit */
    queue_config_t qcfg;
    queue_config_defaults(&qcfg);
    qcfg.url = redis.url;
    qcfg.name = "pq2";
    qcfg.max_payload_bytes = 64u << 10;
    queue_conn_t *small = queue_connect(&qcfg, err, sizeof err);
    cr_assert(small, "%s", err);
    cr_assert_eq(queue_enqueue(small, &task, id, NULL), 0);
    queue_lease_t l;
    int got = 0;
    cr_assert_eq(queue_lease(small, 1, "w", 30000, &l, &got), 0);
    cr_assert_eq(got, 1);
    cr_assert_eq(l.payload_len, 0, "a payload over the lease's limit was sent (%zu bytes)", l.payload_len);
    cr_assert_eq(l.payload_withheld, strlen(payload));
    queue_lease_clear(&l, 1);
    queue_close(small);
    free(payload);
    support_server_stop(&s);
    queue_close(qc);
    support_redis_stop(&redis);
}
