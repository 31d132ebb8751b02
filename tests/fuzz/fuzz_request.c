/* tests/fuzz/fuzz_request.c - libFuzzer target for the request parser of
 * `sluice serve`: the same steps a POST /v1/embeddings or /v1/expand body
 * goes through before it reaches the batcher (the nesting check at the door,
 * jansson, then the op's parser: validation and tokenization against the real
 * model's tokenizer), plus the traceparent check. Any crash, sanitizer report,
 * leak or timeout is a finding.
 *
 * Built with clang by `make fuzz` (build/fuzz/fuzz_request); tests/run.sh runs
 * it for a bounded time from the seeds in tests/fuzz/seeds/.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/config.h"
#include "api/http/ctl.h"
#include "api/embed_job.h"
#include "api/expand_job.h"
#include "api/log.h"
#include "engine/registry.h"

static registry_t *reg;
static api_config_t cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *m = getenv("SLUICE_TEST_MODEL");
    api_config_defaults(&cfg);
    registry_opts_t ro = {.models_dir = m && *m ? m : "models/all-minilm-l6-v2", .device = "cpu", .cpu_threads = 1,
                          .budget = (size_t)64 << 20,
                          .engine = {.max_batch_tokens = 512, .max_batch_seqs = 16}};
    char err[512];
    if (registry_create(&ro, &reg, err, sizeof err)) {
        fprintf(stderr, "fuzz_request: %s\n", err);
        exit(1);
    }
    char terr[256];
    if (registry_count(reg) < 1 || !registry_tokenizer(reg, 0, terr, sizeof terr)) {
        fprintf(stderr, "fuzz_request: no model/tokenizer under %s\n", ro.models_dir);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char tp[64];
    snprintf(tp, sizeof tp, "%.*s", (int)(size < 63 ? size : 63), text);
    (void)api_traceparent_valid(tp);
    if (api_json_depth(text, size) <= cfg.max_json_depth) {
        json_error_t je;
        json_t *body = json_loadb(text, size, 0, &je);
        if (body) {
            api_err_t e;
            api_job_env_t env = {.reg = reg, .cfg = &cfg}; /* no batcher: the expand state stays NULL */
            api_job_t *j = NULL;
            if (api_embed_parse(&env, body, &j, &e) == 0) api_job_free(j);
            j = NULL;
            if (api_expand_parse(&env, body, &j, &e) == 0) api_job_free(j);
            json_decref(body);
        }
    }
    free(text);
    return 0;
}
