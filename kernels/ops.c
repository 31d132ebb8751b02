/* kernels/ops.c - backend selection and dtype helpers shared by all backends. */
#include <stdio.h>
#include <string.h>
#include "kernels/ops.h"

size_t ops_dtype_size(ops_dtype_t dtype) { return dtype == OPS_BF16 || dtype == OPS_F16 ? 2 : 4; }

const char *ops_dtype_name(ops_dtype_t dtype) {
    return dtype == OPS_BF16 ? "bf16" : dtype == OPS_F16 ? "fp16" : "fp32";
}

ops_t *ops_create(const char *device, ops_dtype_t cuda_dtype, int cpu_threads, char *err,
                  size_t errlen, char *note, size_t notelen) {
    if (note && notelen) note[0] = '\0';
    if (!device || !strcmp(device, "auto")) {
        char why[256];
        ops_t *ops = ops_cuda_create(0, cuda_dtype, why, sizeof why);
        if (ops) return ops;
        if (note && notelen) snprintf(note, notelen, "no usable GPU (%s): using the CPU backend", why);
        ops = ops_cpu_create(cpu_threads);
        if (!ops && err) snprintf(err, errlen, "cannot create the CPU backend: out of memory");
        return ops;
    }
    if (!strcmp(device, "cuda")) return ops_cuda_create(0, cuda_dtype, err, errlen);
    if (!strcmp(device, "cpu")) {
        ops_t *ops = ops_cpu_create(cpu_threads);
        if (!ops && err) snprintf(err, errlen, "cannot create the CPU backend: out of memory");
        return ops;
    }
    if (err && errlen) snprintf(err, errlen, "unknown device '%s' (expected cpu, cuda or auto)", device);
    return NULL;
}

int32_t ops_argmax_row(const float *x, int n) {
    int best = -1; /* a strictly larger value replaces it: the first of equal maxima stays, NaN never wins */
    for (int i = 0; i < n; i++)
        if (x[i] == x[i] && (best < 0 || x[i] > x[best])) best = i;
    return best < 0 ? 0 : best;
}
