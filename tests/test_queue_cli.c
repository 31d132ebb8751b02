/* tests/test_queue_cli.c - `sluice queue ...` (api/cli/cli_queue.c), run
 * in-process against a real redis-server: output, and exit codes 0/1/2. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "api/cli/cli.h"
#include "tests/support_cli.h"
#include "tests/test_queue.h"

TestSuite(queue_cli, .init = redis_up, .fini = redis_down, .timeout = 60);

static char out[8192];

/* Run cli_queue with --redis/--queue set and the given words (NULL-ended);
 * its stdout lands in `out`. Returns the exit code. */
static int run(const char *first, ...) {
    const char *argv[32] = {"queue", "--redis", srv.url, "--queue", "cli"};
    int argc = 5;
    va_list ap;
    va_start(ap, first);
    for (const char *w = first; w && argc < 31; w = va_arg(ap, const char *)) argv[argc++] = w;
    va_end(ap);
    int rc = support_cli_capture(cli_queue, argc, argv, out, sizeof out);
    cr_assert_geq(rc, 0);
    return rc;
}

Test(queue_cli, enqueue_get_cancel_stats) {
    cr_assert_eq(run("enqueue", "--model", "minilm", "--op", "embed", "--input", "[\"hi\"]", "--priority", "7", NULL), 0);
    char id[QUEUE_ID_MAX];
    cr_assert_eq(sscanf(out, "%39s", id), 1);
    cr_expect_eq(strlen(id), 32);
    cr_assert_eq(run("get", id, NULL), 0);
    cr_expect(strstr(out, "\"state\":\"ready\"") && strstr(out, "\"priority\":7") && strstr(out, "\"model\":\"minilm\""),
              "%s", out);
    cr_assert_eq(run("enqueue", "--payload", "{}", "--dedup", "k", NULL), 0);
    cr_assert_eq(run("enqueue", "--payload", "{}", "--dedup", "k", NULL), 0);
    cr_expect(strstr(out, "deduped") != NULL, "%s", out);
    cr_assert_eq(run("cancel", id, NULL), 0);
    cr_expect_str_eq(out, "cancelled\n");
    cr_expect_eq(run("cancel", id, NULL), 1, "already ended");
    cr_assert_eq(run("get", id, "--wait", "1", NULL), 0);
    cr_expect(strstr(out, "\"state\":\"cancelled\"") != NULL, "%s", out);
    cr_assert_eq(run("stats", NULL), 0);
    cr_expect(strstr(out, "\"ready\":1") && strstr(out, "\"cancelled\":1") && strstr(out, "\"deduped\":1"), "%s", out);
}

Test(queue_cli, dlq_list_requeue_purge) {
    queue_config_t cfg = test_config();
    cfg.name = "cli";
    cfg.max_attempts = 1;
    queue_conn_t *c = open_with(&cfg);
    for (int i = 0; i < 3; i++) {
        char id[QUEUE_ID_MAX];
        put(c, "x", 0, id);
        queue_lease_t l[1];
        int got = 0;
        cr_assert_eq(queue_lease(c, 1, "w", 5000, l, &got), 0);
        cr_assert_eq(queue_fail(c, l[0].id, l[0].token, "broken", NULL, NULL), 0);
        queue_lease_clear(l, got);
    }
    cr_assert_eq(run("dlq", "list", NULL), 0);
    cr_expect(strstr(out, "\"error\":\"broken\"") != NULL, "%s", out);
    char first[QUEUE_ID_MAX];
    cr_assert_eq(sscanf(out, "{\"id\":\"%32[0-9a-f]", first), 1, "%s", out);
    cr_assert_eq(run("dlq", "requeue", first, NULL), 0);
    cr_expect_str_eq(out, "requeued 1\n");
    cr_assert_eq(run("dlq", "requeue", "--all", NULL), 0);
    cr_expect_str_eq(out, "requeued 2\n");
    cr_expect_eq(stats_of(c).ready, 3);
    queue_lease_t l[3];
    int got = 0;
    cr_assert_eq(queue_lease(c, 3, "w", 5000, l, &got), 0);
    for (int i = 0; i < got; i++) queue_fail(c, l[i].id, l[i].token, "again", NULL, NULL);
    queue_lease_clear(l, got);
    cr_assert_eq(run("dlq", "purge", NULL), 0);
    cr_expect_str_eq(out, "purged 3\n");
    queue_close(c);
}

Test(queue_cli, usage_and_redis_down) {
    cr_expect_eq(run(NULL), 2);
    cr_expect_eq(run("frobnicate", NULL), 2);
    cr_expect_eq(run("get", NULL), 2);
    cr_expect_eq(run("enqueue", "--priority", "300", "--payload", "{}", NULL), 2);
    cr_expect_eq(run("enqueue", "--bogus", NULL), 2);
    cr_expect_eq(run("dlq", "requeue", NULL), 2);
    cr_expect_eq(run("get", "nosuchtask", NULL), 1);
    support_redis_kill(&srv, 1);
    cr_expect_eq(run("stats", NULL), 1);
}
