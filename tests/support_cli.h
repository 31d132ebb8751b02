/* tests/support_cli.h - run a CLI entry point (api/cli.h) in-process with its
 * stdout captured. Not thread-safe (it redirects fd 1). */
#ifndef SLUICE_SUPPORT_CLI_H
#define SLUICE_SUPPORT_CLI_H

#include <stddef.h>

/* fn(argc, argv) with stdout going to out (NUL-ended, truncated to outlen).
 * Returns fn's exit code, or -1 when the capture file cannot be made. */
int support_cli_capture(int (*fn)(int, char **), int argc, const char **argv, char *out, size_t outlen);

#endif
