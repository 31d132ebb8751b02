/* tests/support_cli.c - in-process CLI runs with stdout captured (support_cli.h). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "tests/support_cli.h"

int support_cli_capture(int (*fn)(int, char **), int argc, const char **argv, char *out, size_t outlen) {
    fflush(stdout);
    char path[] = "/tmp/sluice-cli-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    int saved = dup(1);
    dup2(fd, 1);
    int rc = fn(argc, (char **)argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, out, outlen - 1);
    out[n > 0 ? n : 0] = 0;
    close(fd);
    unlink(path);
    return rc;
}
