/* kernels/cuda/none.c - stands in for the CUDA backend when the binary is
 * built without nvcc (CUDA=0): the backend is reported unavailable. */
#include <stdio.h>
#include "kernels/ops.h"

ops_t *ops_cuda_create(int device, ops_dtype_t dtype, char *err, size_t errlen) {
    (void)device;
    (void)dtype;
    if (err && errlen) snprintf(err, errlen, "this binary was built without the CUDA backend (CUDA=0)");
    return NULL;
}

int ops_cuda_built(void) { return 0; }
