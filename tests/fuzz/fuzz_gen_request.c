/* tests/fuzz/fuzz_gen_request.c - libFuzzer target for the generation
 * request parser of `sluice serve`: the steps a POST /v1/chat/completions or
 * /v1/completions body goes through before it reaches the scheduler (the
 * nesting check at the door, jansson, then api_gen_parse as a chat body and
 * as a completion body: strict fields, the chat template, tokenization with
 * the real SmolLM2 tokenizer, the context check). Any crash, sanitizer
 * report, leak or timeout is a finding.
 *
 * Built with clang by `make fuzz` (build/fuzz/fuzz_gen_request); tests/run.sh
 * runs it for its share of FUZZ_SECONDS from the seeds in tests/fuzz/seeds_gen/.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/config.h"
#include "api/gen_job.h"
#include "api/http/ctl.h"
#include "engine/registry.h"

static registry_t *reg;
static api_config_t cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *m = getenv("SLUICE_TEST_LLM");
    api_config_defaults(&cfg);
    registry_opts_t ro = {.models_dir = m && *m ? m : "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
                          .device = "cpu", .cpu_threads = 1, .budget = (size_t)64 << 20};
    char err[512];
    if (registry_create(&ro, &reg, err, sizeof err)) {
        fprintf(stderr, "fuzz_gen_request: %s\n", err);
        exit(1);
    }
    char terr[256];
    if (registry_count(reg) < 1 || !registry_tokenizer(reg, 0, terr, sizeof terr) ||
        registry_chat_template(reg, 0).kind == CHAT_NONE) {
        fprintf(stderr, "fuzz_gen_request: no decoder with a tokenizer and a chat template at %s\n", ro.models_dir);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (api_json_depth((const char *)data, size) > cfg.max_json_depth) return 0;
    json_t *body = json_loadb((const char *)data, size, 0, NULL);
    if (!body) return 0;
    static const api_gen_kind_t kinds[] = {API_GEN_CHAT, API_GEN_COMPLETION};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        api_err_t e;
        api_gen_req_t *g = NULL;
        if (api_gen_parse(reg, body, kinds[k], &g, &e) == 0) {
            /* what the route does next with a parsed request: one scheduler request per choice */
            for (int c = 0; c < api_gen_choices(g); c++)
                (void)api_gen_sched_req(g, c, g->priority, 0, NULL, NULL, NULL);
            api_gen_req_free(g);
        }
    }
    json_decref(body);
    return 0;
}
