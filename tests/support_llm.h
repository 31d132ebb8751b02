/* tests/support_llm.h - the decoder model the generation tests run on.
 *
 * The SmolLM2-135M-Instruct GGUF that `make model` fetches, or the file named
 * by $SLUICE_TEST_LLM. Paths are relative to the repository root, where the
 * tests run.
 */
#ifndef SLUICE_TESTS_SUPPORT_LLM_H
#define SLUICE_TESTS_SUPPORT_LLM_H

#include "engine/gguf.h"

const char *support_llm_path(void);
/* Opens it, failing the test (with a hint to run `make model`) if it cannot. */
gguf_file_t *support_llm_open(void);

#endif
