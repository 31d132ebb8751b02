/* api/config.h - the settings of `sluice serve`, from four places.
 *
 * One table (api/config.c) names every setting once; it drives the flags
 * (--max-batch-seqs 32), the environment (SLUICE_MAX_BATCH_SEQS=32), the
 * JSON config file ({"max_batch_seqs": 32}) and --help. Later sources win:
 * defaults < config file < environment < flags.
 *
 * Sizes accept K/M/G/T suffixes (powers of 1024); durations are in the unit
 * their name says (_ms).
 */
#ifndef SLUICE_API_CONFIG_H
#define SLUICE_API_CONFIG_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    /* HTTP */
    char host[64];
    int port;                 /* 0: any free port (see port_file) */
    int http_threads;
    int max_connections;
    size_t max_body_bytes;
    int max_inputs;           /* inputs per request */
    int request_timeout_ms;   /* default deadline of an HTTP request */
    char port_file[512];      /* write the bound port here once listening */
    int max_json_depth;       /* nesting of arrays/objects in a body (400 above) */
    /* hostile and careless clients (docs/operations.md, "Limits on clients") */
    int max_connections_per_client; /* open connections from one client address (0: no limit) */
    int idle_timeout_ms;      /* a connection with no traffic this long is closed */
    int header_timeout_ms;    /* the whole header block within this of the connection or the
                                 previous answer (0: none) */
    int body_timeout_ms;      /* a body may fall behind min_body_rate by this much (0: no deadline) */
    size_t min_body_rate;     /* bytes/s a body must keep up, past body_timeout_ms */
    size_t max_inflight_body_bytes;   /* request bodies being received, all connections (503 above) */
    size_t max_response_backlog_bytes;/* answers queued but not yet sent, all connections (503 above) */
    int max_expand_results;   /* /v1/expand terms x k per request (413 above) */
    /* keys, rate limits, cache (api/http/ctl.h) */
    char key_file[512];       /* API keys (sha256 hashes); "": no auth, loopback only */
    int auth_probes;          /* /healthz, /readyz, /metrics need a key too */
    int rate_limit_rps;       /* per key, requests/s (0: none); the key file may override */
    int rate_limit_tokens_per_s; /* per key, input tokens/s (0: none) */
    int cache_ttl_ms;         /* result cache TTL (0: cache off) */
    int cache_max_entries;
    size_t cache_max_bytes;
    /* models and device */
    char models[512];
    char preload[512];        /* comma-separated model names, or "all" */
    char device[16];          /* auto | cpu | cuda */
    size_t gpu_memory_budget; /* bytes; 0: 80% of free device memory */
    size_t host_memory_budget;/* bytes; 0: min(2 GiB, half the RAM) */
    int cpu_threads;
    char dtype[8];            /* cuda precision: fp16 | bf16 | fp32 */
    int workspace_tokens;     /* engine workspace: tokens per batch at most */
    int workspace_seqs;       /* and sequences */
    /* batching */
    int max_batch_seqs;
    int max_batch_tokens;
    int max_queue_delay_ms;
    int max_pending_items;
    size_t max_pending_bytes;
    /* generation (batcher/sched.h, per decoder model) */
    int kv_cache_tokens;      /* KV cache in tokens (rounded up to blocks); 0: kv_cache_bytes */
    size_t kv_cache_bytes;    /* KV cache; 0: kv_cache_percent of the memory budget left then */
    int kv_cache_percent;     /* 1..100 */
    int max_running_seqs;     /* sequences generating at once */
    int step_tokens;          /* new tokens per engine step: decode tokens + prefill chunks */
    int max_waiting_seqs;     /* waiting requests before 429 */
    /* Redis */
    char redis[256];          /* redis://host:port/db; "" or "none": no Redis intake */
    char queue[128];          /* queue names, comma-separated */
    int redis_wait_replicas;  /* WAIT after each write (queue_config_t.wait_replicas); 0: off */
    int redis_wait_timeout_ms;
    int lease_ms;
    int result_ttl_s;
    int dedup_ttl_s;          /* a dedup key lives at most this long, and never past its task's result */
    char task_signing_key[256]; /* HMAC-SHA256 key for Redis tasks ("": none) */
    int task_signed_max_age_s; /* a signed Redis task signed longer ago than this is refused, never run */
    /* lifecycle */
    int drain_timeout_ms;
    char log_level[16];
} api_config_t;

/* The lease a Redis task is held for between renewals, unless lease_ms says
 * otherwise (also what a lease_ms <= 0 means). */
#define API_DEFAULT_LEASE_MS 30000

void api_config_defaults(api_config_t *c);

struct sched_config; /* batcher/sched.h */
/* The generation scheduler's settings from c. */
void api_config_sched(const api_config_t *c, struct sched_config *out);

/* Apply the config file named by --config / SLUICE_CONFIG (if any), then
 * SLUICE_* variables, then the flags in argv (argv[0] is skipped).
 * Returns 0, 1 when --help was printed to `help_out`, or -1 with a message. */
int api_config_load(api_config_t *c, int argc, char **argv, FILE *help_out, char *err,
                    size_t errlen);
/* Set one setting by its name ("max_batch_seqs" or "max-batch-seqs"). */
int api_config_set(api_config_t *c, const char *name, const char *value, char *err, size_t errlen);
void api_config_help(FILE *out);
/* The i-th name of the preload list ("all" is one name) into buf: 0, or -1
 * past the end. */
int api_config_preload_name(const api_config_t *c, int i, char *buf, size_t len);
/* Is model `name` to be loaded at start (named in the list, or "all")? */
int api_config_preloads(const api_config_t *c, const char *name);
/* Parse "64M", "2G", "1048576" into bytes; -1 on error. */
long long api_parse_size(const char *s);

#endif
