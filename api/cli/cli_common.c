/* api/cli/cli_common.c - shared plumbing of the one-shot CLI commands. */
#include "api/cli/cli_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_model_open(const char *dir, const char *device, const char *dtype, const engine_opts_t *opts,
                   size_t extra_bytes, cli_model_t *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    ops_dtype_t dt;
    if (!dtype || !strcmp(dtype, "fp16")) dt = OPS_F16;
    else if (!strcmp(dtype, "bf16")) dt = OPS_BF16;
    else if (!strcmp(dtype, "fp32")) dt = OPS_F32;
    else {
        snprintf(err, errlen, "unknown --dtype '%s' (expected bf16, fp16 or fp32)", dtype);
        return 2;
    }
    size_t wbytes, wsbytes;
    /* check the folder before we start a device for it */
    if (engine_model_need(dir, dt, opts, &wbytes, &wsbytes, err, errlen)) return 2;
    char note[512];
    out->ops = ops_create(device ? device : "auto", dt, 0, err, errlen, note, sizeof note);
    if (!out->ops) return strstr(err, "unknown device") ? 2 : 1;
    if (note[0]) fprintf(stderr, "sluice: %s\n", note);
    /* the CPU backend is fp32 whatever was asked: size for what we got */
    if (out->ops->dtype != dt && engine_model_need(dir, out->ops->dtype, opts, &wbytes, &wsbytes, err, errlen))
        goto fail;
    out->arena = arena_create(out->ops, wbytes + wsbytes + extra_bytes + (1 << 20), err, errlen);
    if (!out->arena) goto fail;
    int rc = engine_model_load(dir, out->ops, out->arena, opts, &out->model, err, errlen);
    if (rc) {
        cli_model_close(out);
        return rc == ENGINE_EMODEL ? 2 : 1;
    }
    return 0;
fail:
    cli_model_close(out);
    return 1;
}

void cli_model_close(cli_model_t *cm) {
    engine_model_destroy(cm->model);
    arena_destroy(cm->arena);
    ops_destroy(cm->ops);
    memset(cm, 0, sizeof *cm);
}

int cli_read_lines(const char *path, char ***lines, int *n, char *err, size_t errlen) {
    *lines = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int count = 0, alloc = 0;
    char **arr = NULL;
    while ((len = getline(&line, &cap, f)) >= 0) {
        if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
        if (count == alloc) {
            alloc = alloc ? 2 * alloc : 256;
            char **na = realloc(arr, (size_t)alloc * sizeof *na);
            if (!na) goto oom;
            arr = na;
        }
        if (!(arr[count] = strdup(line))) goto oom;
        count++;
    }
    int rerr = ferror(f);
    free(line);
    fclose(f);
    if (rerr) {
        cli_free_lines(arr, count);
        snprintf(err, errlen, "%s: read error", path);
        return -1;
    }
    *lines = arr;
    *n = count;
    return 0;
oom:
    free(line);
    fclose(f);
    cli_free_lines(arr, count);
    snprintf(err, errlen, "%s: out of memory", path);
    return -1;
}

void cli_free_lines(char **lines, int n) {
    for (int i = 0; i < n; i++) free(lines[i]);
    free(lines);
}
