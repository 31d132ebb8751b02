/* api/config.c - one table of settings: flags, SLUICE_* environment, JSON file, --help. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api/config.h"
#include "batcher/batcher.h"
#include "batcher/sched.h"
#include "engine/engine.h"
#include "queue/queue.h"

typedef enum { OPT_STR, OPT_INT, OPT_SIZE, OPT_BOOL } opt_kind_t;

typedef struct {
    const char *name; /* snake_case; the flag is --name with '-' for '_' */
    opt_kind_t kind;
    size_t off;
    size_t len;       /* OPT_STR: buffer size */
    const char *help;
} opt_t;

#define S(f) OPT_STR, offsetof(api_config_t, f), sizeof(((api_config_t *)0)->f)
#define I(f) OPT_INT, offsetof(api_config_t, f), 0
#define Z(f) OPT_SIZE, offsetof(api_config_t, f), 0
#define B(f) OPT_BOOL, offsetof(api_config_t, f), 0

static const opt_t options[] = {
    {"host", S(host), "address to listen on"},
    {"port", I(port), "HTTP port (0: any free port; see --port-file)"},
    {"http_threads", I(http_threads), "HTTP threads (libmicrohttpd thread pool)"},
    {"max_connections", I(max_connections), "open HTTP connections at most"},
    {"max_body_bytes", Z(max_body_bytes), "largest request body (413 above)"},
    {"max_inputs", I(max_inputs), "inputs per request at most (413 above)"},
    {"request_timeout_ms", I(request_timeout_ms), "default deadline of an HTTP request (408 after)"},
    {"port_file", S(port_file), "write the bound port to this file once listening"},
    {"max_json_depth", I(max_json_depth), "deepest nesting of arrays/objects in a request body (400 above)"},
    {"max_connections_per_client", I(max_connections_per_client), "open connections from one client address at most (0: no limit)"},
    {"idle_timeout_ms", I(idle_timeout_ms), "close a connection without traffic for this long"},
    {"header_timeout_ms", I(header_timeout_ms), "the whole request header block must arrive within this of the connection or the previous answer (0: no deadline)"},
    {"body_timeout_ms", I(body_timeout_ms), "close a request whose body falls this far behind --min-body-rate (0: no deadline)"},
    {"min_body_rate", Z(min_body_rate), "bytes per second a request body must keep up (see --body-timeout-ms)"},
    {"max_inflight_body_bytes", Z(max_inflight_body_bytes), "request bodies being received, all connections together (503 above)"},
    {"max_response_backlog_bytes", Z(max_response_backlog_bytes), "answers queued but not yet read by their clients, all together (503 above)"},
    {"max_expand_results", I(max_expand_results), "/v1/expand: terms x k per request at most (413 above)"},
    {"key_file", S(key_file), "API keys file (sluice keys add); without it: no auth and loopback only"},
    {"auth_probes", B(auth_probes), "/healthz, /readyz and /metrics need a key too"},
    {"rate_limit_rps", I(rate_limit_rps), "requests per second per key (0: no limit; the key file may override)"},
    {"rate_limit_tokens_per_s", I(rate_limit_tokens_per_s), "input tokens per second per key (0: no limit)"},
    {"cache_ttl_ms", I(cache_ttl_ms), "embeddings result cache: how long an answer is reused (0: off)"},
    {"cache_max_entries", I(cache_max_entries), "result cache: answers kept at most"},
    {"cache_max_bytes", Z(cache_max_bytes), "result cache: bytes kept at most"},
    {"models", S(models), "folder of model folders (a config.json: encoder; a .gguf: decoder)"},
    {"preload", S(preload), "models to load at start, comma-separated, or 'all' (others load on first use)"},
    {"device", S(device), "auto | cpu | cuda"},
    {"gpu_memory_budget", Z(gpu_memory_budget), "device bytes for weights + workspaces (0: 80% of free)"},
    {"host_memory_budget", Z(host_memory_budget), "host bytes for weights + workspaces on cpu (0: min(2G, RAM/2))"},
    {"cpu_threads", I(cpu_threads), "compute threads on the CPU backend (0: one per core)"},
    {"dtype", S(dtype), "cuda precision: fp16 | bf16 | fp32 (fp32 accumulation always; the cpu backend is fp32)"},
    {"workspace_tokens", I(workspace_tokens), "engine workspace per model: tokens per batch at most"},
    {"workspace_seqs", I(workspace_seqs), "engine workspace per model: sequences per batch at most"},
    {"max_batch_seqs", I(max_batch_seqs), "sequences per micro-batch (live: PATCH /v1/admin/config)"},
    {"max_batch_tokens", I(max_batch_tokens), "tokens per micro-batch (live)"},
    {"max_queue_delay_ms", I(max_queue_delay_ms), "longest wait for a fuller batch (live)"},
    {"max_pending_items", I(max_pending_items), "pending queue per model, items (429 above)"},
    {"max_pending_bytes", Z(max_pending_bytes), "pending queue per model, bytes (429 above)"},
    {"kv_cache_tokens", I(kv_cache_tokens), "KV cache per decoder model in tokens, rounded up to blocks (0: kv_cache_bytes)"},
    {"kv_cache_bytes", Z(kv_cache_bytes), "KV cache per decoder model (0: kv_cache_percent of the budget left when it loads)"},
    {"kv_cache_percent", I(kv_cache_percent), "KV cache per decoder model, percent of the memory budget left when it loads"},
    {"max_running_seqs", I(max_running_seqs), "sequences a decoder model generates at once"},
    {"step_tokens", I(step_tokens), "new tokens per generation step: one per running sequence + prefill chunks"},
    {"max_waiting_seqs", I(max_waiting_seqs), "generation requests waiting per decoder model (429 above)"},
    {"redis", S(redis), "Redis URL redis://host:port/db, or a cluster's seeds redis+cluster://h1:p1,h2:p2 ('none': no Redis intake)"},
    {"queue", S(queue), "Redis queue names to serve, comma-separated"},
    {"redis_wait_replicas", I(redis_wait_replicas), "writes to Redis return once this many replicas have them (WAIT; 0: off; also ?wait_replicas= on the URL)"},
    {"redis_wait_timeout_ms", I(redis_wait_timeout_ms), "one WAIT's limit (0: the URL's, else 1000)"},
    {"lease_ms", I(lease_ms), "Redis task lease; renewed while the task waits or computes"},
    {"result_ttl_s", I(result_ttl_s), "how long Redis keeps a task's result"},
    {"dedup_ttl_s", I(dedup_ttl_s), "longest life of a task's dedup_key (it also ends with the task's result)"},
    {"task_signing_key", S(task_signing_key), "sign Redis tasks enqueued here and refuse unsigned ones (HMAC-SHA256; prefer the environment)"},
    {"task_signed_max_age_s", I(task_signed_max_age_s), "refuse a signed Redis task signed longer ago than this (a captured task replayed late); its tombstone lives this long + 5 min"},
    {"drain_timeout_ms", I(drain_timeout_ms), "on SIGTERM: time to finish in-flight work"},
    {"log_level", S(log_level), "debug | info | warn | error"},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

void api_config_defaults(api_config_t *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->host, sizeof c->host, "127.0.0.1");
    c->port = 8080;
    c->http_threads = 4;
    c->max_connections = 4096;
    c->max_body_bytes = 2u << 20;
    c->max_inputs = 2048;
    c->request_timeout_ms = 30000;
    c->max_json_depth = 32;
    c->max_connections_per_client = 256;
    c->idle_timeout_ms = 60000;
    c->header_timeout_ms = 20000;
    c->body_timeout_ms = 20000;
    c->min_body_rate = 1024;
    c->max_inflight_body_bytes = (size_t)256 << 20;
    c->max_response_backlog_bytes = (size_t)256 << 20;
    c->max_expand_results = 100000;
    c->cache_max_entries = 10000;
    c->cache_max_bytes = (size_t)64 << 20;
    snprintf(c->models, sizeof c->models, "models");
    snprintf(c->device, sizeof c->device, "auto");
    snprintf(c->dtype, sizeof c->dtype, "fp16");
    c->workspace_tokens = ENGINE_DEFAULT_BATCH_TOKENS;
    c->workspace_seqs = ENGINE_DEFAULT_BATCH_SEQS;
    batcher_limits_t lim; /* the batching defaults live with the batcher */
    batcher_limits_default(&lim);
    c->max_batch_seqs = lim.max_batch_seqs;
    c->max_batch_tokens = lim.max_batch_tokens;
    c->max_queue_delay_ms = lim.max_queue_delay_us / 1000;
    c->max_pending_items = lim.max_pending_items;
    c->max_pending_bytes = lim.max_pending_bytes;
    sched_config_t sc; /* the generation defaults live with the scheduler */
    sched_config_default(&sc);
    c->kv_cache_percent = (int)(sc.kv_share * 100 + 0.5f);
    c->max_running_seqs = sc.max_seqs;
    c->step_tokens = sc.step_tokens;
    c->max_waiting_seqs = sc.max_waiting;
    snprintf(c->redis, sizeof c->redis, "redis://127.0.0.1:6379/0");
    snprintf(c->queue, sizeof c->queue, "sluice");
    c->lease_ms = API_DEFAULT_LEASE_MS;
    c->result_ttl_s = 3600;
    c->dedup_ttl_s = 3600;
    c->task_signed_max_age_s = 86400;
    c->drain_timeout_ms = 30000;
    snprintf(c->log_level, sizeof c->log_level, "info");
}

void api_config_sched(const api_config_t *c, sched_config_t *out) {
    sched_config_default(out);
    out->kv_tokens = c->kv_cache_tokens;
    out->kv_bytes = c->kv_cache_bytes;
    if (c->kv_cache_percent > 0 && c->kv_cache_percent <= 100) out->kv_share = c->kv_cache_percent / 100.0f;
    if (c->max_running_seqs > 0) out->max_seqs = c->max_running_seqs;
    if (c->step_tokens > 0) out->step_tokens = c->step_tokens;
    if (c->max_waiting_seqs > 0) out->max_waiting = c->max_waiting_seqs;
}

long long api_parse_size(const char *s) {
    if (!s || !*s) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return -1;
    long long mul = 1;
    switch (toupper((unsigned char)*end)) {
    case '\0': break;
    case 'K': mul = 1LL << 10; end++; break;
    case 'M': mul = 1LL << 20; end++; break;
    case 'G': mul = 1LL << 30; end++; break;
    case 'T': mul = 1LL << 40; end++; break;
    default: return -1;
    }
    if (toupper((unsigned char)*end) == 'I') end++;
    if (toupper((unsigned char)*end) == 'B') end++;
    if (*end) return -1;
    return (long long)(v * mul);
}

static const opt_t *find_option(const char *name) {
    char key[64];
    size_t i = 0;
    for (; name[i] && i < sizeof key - 1; i++) key[i] = name[i] == '-' ? '_' : name[i];
    key[i] = '\0';
    for (size_t k = 0; k < N_OPTIONS; k++)
        if (!strcmp(options[k].name, key)) return &options[k];
    return NULL;
}

static int set_option(api_config_t *c, const opt_t *o, const char *value, char *err, size_t errlen) {
    char *p = (char *)c + o->off;
    char *end;
    switch (o->kind) {
    case OPT_STR:
        if (strlen(value) >= o->len) {
            snprintf(err, errlen, "%s: value longer than %zu bytes", o->name, o->len - 1);
            return -1;
        }
        memcpy(p, value, strlen(value) + 1);
        return 0;
    case OPT_INT: {
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < 0 || v > 2147483647L) {
            snprintf(err, errlen, "%s: expected a non-negative integer, got '%s'", o->name, value);
            return -1;
        }
        *(int *)p = (int)v;
        return 0;
    }
    case OPT_SIZE: {
        long long v = api_parse_size(value);
        if (v < 0) {
            snprintf(err, errlen, "%s: expected a size like 512M or 2G, got '%s'", o->name, value);
            return -1;
        }
        *(size_t *)p = (size_t)v;
        return 0;
    }
    case OPT_BOOL:
        if (!strcmp(value, "1") || !strcmp(value, "true") || !strcmp(value, "yes")) *(int *)p = 1;
        else if (!strcmp(value, "0") || !strcmp(value, "false") || !strcmp(value, "no")) *(int *)p = 0;
        else {
            snprintf(err, errlen, "%s: expected true or false, got '%s'", o->name, value);
            return -1;
        }
        return 0;
    }
    return -1;
}

int api_config_set(api_config_t *c, const char *name, const char *value, char *err, size_t errlen) {
    const opt_t *o = find_option(name);
    if (!o) {
        snprintf(err, errlen, "unknown setting '%s'", name);
        return -1;
    }
    return set_option(c, o, value, err, errlen);
}

static int load_file(api_config_t *c, const char *path, char *err, size_t errlen) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j || !json_is_object(j)) {
        snprintf(err, errlen, "config file %s: %s (line %d)", path, j ? "not a JSON object" : je.text,
                 je.line);
        json_decref(j);
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        char buf[600];
        if (json_is_string(v)) snprintf(buf, sizeof buf, "%s", json_string_value(v));
        else if (json_is_integer(v)) snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        else if (json_is_real(v)) snprintf(buf, sizeof buf, "%.0f", json_real_value(v));
        else if (json_is_boolean(v)) snprintf(buf, sizeof buf, "%s", json_is_true(v) ? "true" : "false");
        else if (json_is_array(v)) { /* lists: "queue": ["a","b"], "preload": [...] */
            buf[0] = '\0';
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e) {
                if (!json_is_string(e)) continue;
                size_t l = strlen(buf);
                snprintf(buf + l, sizeof buf - l, "%s%s", l ? "," : "", json_string_value(e));
            }
        } else {
            snprintf(err, errlen, "config file %s: %s has an unsupported type", path, key);
            json_decref(j);
            return -1;
        }
        char e2[256];
        if (api_config_set(c, key, buf, e2, sizeof e2)) {
            snprintf(err, errlen, "config file %s: %s", path, e2);
            json_decref(j);
            return -1;
        }
    }
    json_decref(j);
    return 0;
}

static int load_env(api_config_t *c, char *err, size_t errlen) {
    for (size_t k = 0; k < N_OPTIONS; k++) {
        char var[80] = "SLUICE_";
        size_t l = strlen(var);
        for (const char *s = options[k].name; *s && l < sizeof var - 1; s++) var[l++] = (char)toupper((unsigned char)*s);
        var[l] = '\0';
        const char *v = getenv(var);
        if (!v) continue;
        char e2[256];
        if (set_option(c, &options[k], v, e2, sizeof e2)) {
            snprintf(err, errlen, "%s: %s", var, e2);
            return -1;
        }
    }
    return 0;
}

void api_config_help(FILE *out) {
    api_config_t d;
    api_config_defaults(&d);
    fprintf(out,
            "usage: sluice serve [options]\n\n"
            "Serve embeddings over HTTP (/v1/embeddings, /v1/tasks) and from Redis queues.\n"
            "Each option can also come from the environment (SLUICE_<NAME>, e.g. SLUICE_PORT=9000)\n"
            "or a JSON config file ({\"port\": 9000}); flags win over the environment, which wins\n"
            "over the file. Sizes take K/M/G suffixes.\n\n"
            "  --config FILE              JSON config file (also SLUICE_CONFIG)\n");
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const opt_t *o = &options[k];
        char flag[64], def[64];
        size_t l = 0;
        for (const char *s = o->name; *s && l < sizeof flag - 1; s++) flag[l++] = *s == '_' ? '-' : *s;
        flag[l] = '\0';
        const char *p = (const char *)&d + o->off;
        switch (o->kind) {
        case OPT_STR: snprintf(def, sizeof def, "%s", *p ? p : "\"\""); break;
        case OPT_INT: snprintf(def, sizeof def, "%d", *(const int *)p); break;
        case OPT_SIZE: snprintf(def, sizeof def, "%zu", *(const size_t *)p); break;
        case OPT_BOOL: snprintf(def, sizeof def, "%s", *(const int *)p ? "true" : "false"); break;
        }
        fprintf(out, "  --%-24s %s (default %s)\n", flag, o->help, def);
    }
    fprintf(out, "  --help                     this text\n");
}

int api_config_load(api_config_t *c, int argc, char **argv, FILE *help_out, char *err,
                    size_t errlen) {
    const char *file = getenv("SLUICE_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            api_config_help(help_out ? help_out : stdout);
            return 1;
        }
        if (!strcmp(argv[i], "--config") && i + 1 < argc) file = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9)) file = argv[i] + 9;
    }
    if (file && *file && load_file(c, file, err, errlen)) return -1;
    if (load_env(c, err, errlen)) return -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2)) {
            snprintf(err, errlen, "unexpected argument '%s' (try --help)", a);
            return -1;
        }
        const char *eq = strchr(a, '=');
        char name[64];
        const char *value;
        size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nl >= sizeof name) nl = sizeof name - 1;
        memcpy(name, a + 2, nl);
        name[nl] = '\0';
        if (!strcmp(name, "config")) {
            if (!eq) i++;
            continue;
        }
        const opt_t *o = find_option(name);
        if (!o) {
            snprintf(err, errlen, "unknown option '--%s' (try --help)", name);
            return -1;
        }
        if (eq) value = eq + 1;
        else if (o->kind == OPT_BOOL && (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2))) value = "true";
        else if (i + 1 < argc) value = argv[++i];
        else {
            snprintf(err, errlen, "option '--%s' needs a value", name);
            return -1;
        }
        if (set_option(c, o, value, err, errlen)) return -1;
    }
    /* queue names: the one check `sluice queue` applies too (queue_name_valid), as a usage error */
    for (const char *p = c->queue; *p;) {
        size_t len = strcspn(p, ",");
        char name[QUEUE_NAME_MAX];
        snprintf(name, sizeof name, "%.*s", (int)len, p);
        if (len >= QUEUE_NAME_MAX || !queue_name_valid(name)) {
            snprintf(err, errlen, "queue name '%.*s': use 1..%d of [A-Za-z0-9_.:-], comma-separated", (int)len, p,
                     QUEUE_NAME_MAX - 1);
            return -1;
        }
        p += len + (p[len] == ',');
    }
    /* names the flags, the environment and the file all share: refuse a typo here, as a usage error */
    if (strcmp(c->device, "auto") && strcmp(c->device, "cpu") && strcmp(c->device, "cuda")) {
        snprintf(err, errlen, "device '%s' is not one of auto, cpu, cuda", c->device);
        return -1;
    }
    if (strcmp(c->dtype, "fp16") && strcmp(c->dtype, "bf16") && strcmp(c->dtype, "fp32")) {
        snprintf(err, errlen, "dtype '%s' is not one of fp16, bf16, fp32", c->dtype);
        return -1;
    }
    return 0;
}

int api_config_preload_name(const api_config_t *c, int i, char *buf, size_t len) {
    const char *p = c->preload;
    for (int k = 0; *p; k++) {
        size_t n = strcspn(p, ",");
        if (k == i) {
            snprintf(buf, len, "%.*s", (int)(n < len ? n : len - 1), p);
            return 0;
        }
        p += n + (p[n] == ',');
    }
    return -1;
}

int api_config_preloads(const api_config_t *c, const char *name) {
    if (!strcmp(c->preload, "all")) return 1;
    char buf[512];
    for (int i = 0; !api_config_preload_name(c, i, buf, sizeof buf); i++)
        if (!strcmp(buf, name)) return 1;
    return 0;
}
