/* tests/support_llm.c - see support_llm.h. */
#include "tests/support_llm.h"

#include <criterion/criterion.h>
#include <stdlib.h>

const char *support_llm_path(void) {
    const char *p = getenv("SLUICE_TEST_LLM");
    return p && *p ? p : "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
}

gguf_file_t *support_llm_open(void) {
    gguf_file_t *f = NULL;
    char err[512];
    int rc = gguf_open(support_llm_path(), &f, err, sizeof err);
    cr_assert_eq(rc, GGUF_OK, "gguf_open(%s): %s (run `make model`, or set SLUICE_TEST_LLM)", support_llm_path(),
                 err);
    return f;
}
