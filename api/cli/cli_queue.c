/* api/cli/cli_queue.c - `sluice queue ...`: operate a Redis task queue by hand
 * (enqueue, look at, cancel, stats, the dead-letter queue). Output is one
 * JSON document per line, except enqueue which prints the task id.
 * Exit codes as api/cli.h: 2 bad usage, 1 Redis down or the call refused. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api/cli/cli.h"
#include "api/redis/tasks.h"
#include "queue/queue.h"

static const char usage_text[] =
    "usage: sluice queue [--redis URL] [--queue NAME] [--task-signing-key KEY] COMMAND ...\n"
    "  enqueue (--payload JSON | --model M --op OP --input JSON [--request-id ID])\n"
    "          [--priority 0..255] [--delay-ms N] [--ttl-ms N] [--max-attempts N] [--dedup KEY]\n"
    "  get ID [--wait SECONDS]      state, result and details (waits for the end up to SECONDS)\n"
    "  cancel ID\n"
    "  stats                        depth by state and counters\n"
    "  dlq list [--offset N] [--count N]\n"
    "  dlq requeue (ID | --all)\n"
    "  dlq purge [--keep N] [--older-than-ms N]   (no option: purge all)\n"
    "defaults: --redis redis://127.0.0.1:6379/0 --queue sluice; the signing key may also come\n"
    "from SLUICE_TASK_SIGNING_KEY.\n";

/* Options that take a value; a flag (no value) is marked so. */
static const struct {
    const char *name;
    int flag;
} known[] = {
    {"--redis", 0},    {"--queue", 0},     {"--task-signing-key", 0}, {"--payload", 0},  {"--model", 0},
    {"--op", 0},       {"--input", 0},     {"--request-id", 0},       {"--priority", 0}, {"--delay-ms", 0},
    {"--ttl-ms", 0},   {"--max-attempts", 0}, {"--dedup", 0},         {"--wait", 0},     {"--offset", 0},
    {"--count", 0},    {"--keep", 0},      {"--older-than-ms", 0},    {"--all", 1},
};
enum { NKNOWN = sizeof known / sizeof known[0], MAXPOS = 4 };

typedef struct {
    const char *val[NKNOWN]; /* NULL: not given; flags get "1" */
    const char *pos[MAXPOS];
    int npos;
} args_t;

static int bad_usage(const char *fmt, const char *what) {
    fprintf(stderr, "sluice queue: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, " (try sluice queue --help)\n");
    return 2;
}

static const char *opt(const args_t *a, const char *name) {
    for (int i = 0; i < NKNOWN; i++)
        if (!strcmp(known[i].name, name)) return a->val[i];
    return NULL;
}

/* A whole number in [lo, hi] from an option, or the default. -1 on bad input. */
static int opt_int(const args_t *a, const char *name, long long lo, long long hi, long long def, long long *out) {
    const char *s = opt(a, name);
    *out = def;
    if (!s) return 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        fprintf(stderr, "sluice queue: %s wants a whole number in %lld..%lld, not '%s'\n", name, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, args_t *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "--", 2)) {
            int k = 0;
            while (k < NKNOWN && strcmp(known[k].name, argv[i])) k++;
            if (k == NKNOWN) return bad_usage("unknown option '%s'", argv[i]);
            if (known[k].flag) {
                a->val[k] = "1";
            } else {
                if (i + 1 >= argc) return bad_usage("%s needs a value", argv[i]);
                a->val[k] = argv[++i];
            }
        } else {
            if (a->npos == MAXPOS) return bad_usage("unexpected argument '%s'", argv[i]);
            a->pos[a->npos++] = argv[i];
        }
    }
    return 0;
}

static void print_json(json_t *o) {
    char *s = json_dumps(o, JSON_COMPACT);
    if (s) puts(s);
    free(s);
    json_decref(o);
}

static int cmd_enqueue(queue_conn_t *c, const args_t *a) {
    long long prio, delay, ttl, attempts;
    if (opt_int(a, "--priority", 0, QUEUE_PRIORITY_MAX, 0, &prio) || opt_int(a, "--delay-ms", 0, 1LL << 40, 0, &delay) ||
        opt_int(a, "--ttl-ms", 0, 1LL << 40, 0, &ttl) || opt_int(a, "--max-attempts", 0, 1000, 0, &attempts))
        return 2;
    const char *payload = opt(a, "--payload");
    char *built = NULL, err[256];
    if (!payload) {
        if (!opt(a, "--model") || !opt(a, "--op")) return bad_usage("%s", "enqueue needs --payload JSON or --model and --op");
        built = queue_payload_build(opt(a, "--model"), opt(a, "--op"), opt(a, "--input"), opt(a, "--request-id"), NULL,
                                    err, sizeof err);
        if (!built) {
            fprintf(stderr, "sluice queue: %s\n", err);
            return 2;
        }
        payload = built;
    }
    queue_task_t t = {.payload = payload, .payload_len = strlen(payload), .priority = (int)prio, .delay_ms = delay,
                      .ttl_ms = ttl, .max_attempts = (int)attempts, .dedup_key = opt(a, "--dedup")};
    char id[QUEUE_ID_MAX];
    int outcome = 0;
    int rc = queue_enqueue(c, &t, id, &outcome);
    free(built);
    if (rc) {
        fprintf(stderr, "sluice queue: enqueue: %s\n", queue_last_error(c));
        return rc == QUEUE_EINVAL ? 2 : 1;
    }
    printf("%s%s\n", id, outcome == QUEUE_ENQ_DEDUPED ? " deduped" : "");
    return 0;
}

static int cmd_get(queue_conn_t *c, const args_t *a) {
    long long wait;
    if (a->npos != 2) return bad_usage("%s", "get needs one task id");
    if (opt_int(a, "--wait", 0, 3600, 0, &wait)) return 2;
    queue_info_t i;
    int rc = wait ? queue_wait(c, a->pos[1], wait * 1000, &i) : queue_get(c, a->pos[1], &i);
    if (rc) {
        fprintf(stderr, "sluice queue: get: %s\n", queue_last_error(c));
        return rc == QUEUE_EINVAL ? 2 : 1;
    }
    json_t *o = api_task_info_json(a->pos[1], &i); /* the names GET /v1/tasks/{id} uses */
    if (o) {
        json_object_set_new(o, "queue", json_string(queue_name(c)));
        json_object_set_new(o, "payload", api_json_or_string(i.payload, i.payload_len));
        print_json(o);
    }
    queue_info_clear(&i);
    return 0;
}

static int cmd_cancel(queue_conn_t *c, const args_t *a) {
    if (a->npos != 2) return bad_usage("%s", "cancel needs one task id");
    int outcome;
    if (queue_cancel(c, a->pos[1], &outcome)) {
        fprintf(stderr, "sluice queue: cancel: %s\n", queue_last_error(c));
        return 1;
    }
    puts(outcome == QUEUE_CANCELLED_NOW ? "cancelled" : "cancel requested (the task is running)");
    return 0;
}

static int cmd_stats(queue_conn_t *c) {
    queue_stats_t s;
    if (queue_stats(c, &s)) {
        fprintf(stderr, "sluice queue: stats: %s\n", queue_last_error(c));
        return 1;
    }
    print_json(json_pack("{s:s, s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                         "s:I, s:I}}",
                         "queue", queue_name(c), "depth", "ready", (json_int_t)s.ready, "delayed",
                         (json_int_t)s.delayed, "leased", (json_int_t)s.leased, "dlq", (json_int_t)s.dlq, "counters",
                         "enqueued", (json_int_t)s.enqueued, "acked", (json_int_t)s.acked, "retried",
                         (json_int_t)s.retried, "failed", (json_int_t)s.failed, "expired", (json_int_t)s.expired,
                         "cancelled", (json_int_t)s.cancelled, "deduped", (json_int_t)s.deduped, "rejected",
                         (json_int_t)s.rejected, "reaped", (json_int_t)s.reaped, "released", (json_int_t)s.released,
                         "requeued", (json_int_t)s.requeued, "purged", (json_int_t)s.purged, "bad_signature",
                         (json_int_t)s.bad_signature));
    return 0;
}

static int cmd_dlq(queue_conn_t *c, const args_t *a) {
    const char *sub = a->npos > 1 ? a->pos[1] : "";
    if (!strcmp(sub, "list")) {
        long long off, count;
        if (opt_int(a, "--offset", 0, 1LL << 40, 0, &off) || opt_int(a, "--count", 1, 10000, 100, &count)) return 2;
        queue_dlq_entry_t *e = calloc((size_t)count, sizeof *e);
        size_t got = 0;
        if (!e || queue_dlq_list(c, (size_t)off, (size_t)count, e, &got)) {
            fprintf(stderr, "sluice queue: dlq list: %s\n", e ? queue_last_error(c) : "out of memory");
            free(e);
            return 1;
        }
        for (size_t i = 0; i < got; i++)
            print_json(json_pack("{s:s, s:I, s:i, s:i, s:s}", "id", e[i].id, "dead_at_ms", (json_int_t)e[i].dead_ms,
                                 "attempts", e[i].attempts, "max_attempts", e[i].max_attempts, "error",
                                 e[i].error ? e[i].error : ""));
        queue_dlq_entries_clear(e, got);
        free(e);
        return 0;
    }
    if (!strcmp(sub, "requeue")) {
        int all = opt(a, "--all") != NULL;
        if (all ? a->npos != 2 : a->npos != 3) return bad_usage("%s", "dlq requeue needs one task id or --all");
        int64_t moved = 0;
        if (queue_dlq_requeue(c, all ? NULL : a->pos[2], &moved)) {
            fprintf(stderr, "sluice queue: dlq requeue: %s\n", queue_last_error(c));
            return 1;
        }
        printf("requeued %lld\n", (long long)moved);
        return 0;
    }
    if (!strcmp(sub, "purge")) {
        long long keep, age;
        if (opt_int(a, "--keep", 0, 1LL << 40, -1, &keep) || opt_int(a, "--older-than-ms", 1, 1LL << 50, 0, &age))
            return 2;
        if (keep < 0 && !age) keep = 0; /* no cap given: everything */
        int64_t removed = 0;
        if (queue_dlq_purge(c, keep, age, &removed)) {
            fprintf(stderr, "sluice queue: dlq purge: %s\n", queue_last_error(c));
            return 1;
        }
        printf("purged %lld\n", (long long)removed);
        return 0;
    }
    return bad_usage("dlq wants list, requeue or purge, not '%s'", sub);
}

int cli_queue(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
    args_t a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    if (a.npos == 0) return bad_usage("%s", "a command is needed");
    const char *cmd = a.pos[0];
    static const char *const cmds[] = {"enqueue", "get", "cancel", "stats", "dlq"};
    int k = 0;
    while (k < 5 && strcmp(cmds[k], cmd)) k++;
    if (k == 5) return bad_usage("unknown command '%s'", cmd);
    if ((k == 0 || k == 3) && a.npos != 1) return bad_usage("unexpected argument '%s'", a.pos[1]);

    queue_config_t cfg;
    queue_config_defaults(&cfg);
    cfg.url = opt(&a, "--redis");
    cfg.name = opt(&a, "--queue");
    cfg.reconnect_ms = 1000; /* a person is waiting: say Redis is down quickly */
    const char *key = opt(&a, "--task-signing-key");
    if (!key) key = getenv("SLUICE_TASK_SIGNING_KEY");
    if (key && *key) {
        cfg.signing_key = (const unsigned char *)key;
        cfg.signing_key_len = strlen(key);
    }
    char err[512];
    queue_url_t url;
    if (cfg.url && queue_url_parse(cfg.url, &url, err, sizeof err)) return fprintf(stderr, "sluice queue: %s\n", err), 2;
    queue_conn_t *c = queue_connect(&cfg, err, sizeof err);
    if (!c) {
        fprintf(stderr, "sluice queue: %s\n", err);
        return strstr(err, "queue name") || strstr(err, "config") ? 2 : 1;
    }
    switch (k) {
    case 0: rc = cmd_enqueue(c, &a); break;
    case 1: rc = cmd_get(c, &a); break;
    case 2: rc = cmd_cancel(c, &a); break;
    case 3: rc = cmd_stats(c); break;
    default: rc = cmd_dlq(c, &a); break;
    }
    queue_close(c);
    return rc;
}
