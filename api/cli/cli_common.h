/* api/cli/cli_common.h - what the one-shot CLI commands (embed, expand, ...) share:
 * option parsing helpers and a model opened on a backend with an arena sized
 * to fit it exactly. The server does not use this (it has the registry). */
#ifndef SLUICE_CLI_COMMON_H
#define SLUICE_CLI_COMMON_H

#include "engine/engine.h"

typedef struct {
    ops_t *ops;
    arena_t *arena;
    engine_model_t *model;
} cli_model_t;

/* Open `dir` on device "cpu" | "cuda" | "auto" with dtype "fp32" | "bf16" |
 * "fp16" (bf16 and fp16 only apply to cuda; NULL means bf16). extra_bytes are added to the arena for the
 * caller's own buffers. On failure: returns 2 for a bad model folder or option,
 * 1 for a runtime failure, with one line in err. */
int cli_model_open(const char *dir, const char *device, const char *dtype, const engine_opts_t *opts,
                   size_t extra_bytes, cli_model_t *out, char *err, size_t errlen);
void cli_model_close(cli_model_t *cm);

/* Read a whole text file into lines (without their '\n'); *n lines. Returns 0
 * or -1 with err. Lines and the array are malloc'ed; free with cli_free_lines. */
int cli_read_lines(const char *path, char ***lines, int *n, char *err, size_t errlen);
void cli_free_lines(char **lines, int n);

#endif
