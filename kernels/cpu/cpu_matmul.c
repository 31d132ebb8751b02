/* kernels/cpu/cpu_matmul.c - out = epilogue(in @ W^T + bias) with our GEMM (cpu_gemm.c).
 *
 * The output is cut into tiles (row blocks when there are many tokens, column
 * blocks of W when there are few), one pool task each: the product on the
 * tile, then the bias / bias+GELU epilogue on the same tile while it is still
 * in cache. W is read as uploaded (row-major, K-contiguous): no per-call
 * packing.
 */
/* Let loops with selects vectorise (see cpu_math.h). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "vect-cost-model=dynamic", "fp-contract=fast")
#endif
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_math.h"

typedef struct {
    float *out;
    const float *in;
    const float *W;
    const float *bias;
    int T, K, N;
    ops_epilogue_t epi;
    int row_block; /* rows per task (split by rows) or T */
    int col_block; /* columns per task (split by columns) or N */
    int col_tasks; /* tasks along N */
} matmul_job_t;

/* out rows += bias, then GELU (erf form, as BERT) for OPS_EPI_BIAS_GELU. */
CPU_HOT static void epilogue_rows(float *out, int rows, int cols, int ldc, const float *bias, ops_epilogue_t epi) {
    for (int r = 0; r < rows; r++) {
        float *restrict o = out + (size_t)r * ldc;
        if (epi == OPS_EPI_BIAS) {
            for (int c = 0; c < cols; c++) o[c] += bias[c];
            continue;
        }
        int c = 0;
        for (; c + CPU_VEC_BLOCK <= cols; c += CPU_VEC_BLOCK)
            for (int k = 0; k < CPU_VEC_BLOCK; k++) o[c + k] = cpu_gelu_erf(o[c + k] + bias[c + k]);
        for (; c < cols; c++) o[c] = cpu_gelu_erf(o[c] + bias[c]);
    }
}

static void matmul_task(void *ctx, int task, int worker) {
    (void)worker;
    const matmul_job_t *j = ctx;
    int r0 = (task / j->col_tasks) * j->row_block;
    int c0 = (task % j->col_tasks) * j->col_block;
    int rows = j->T - r0 < j->row_block ? j->T - r0 : j->row_block;
    int cols = j->N - c0 < j->col_block ? j->N - c0 : j->col_block;
    if (rows <= 0 || cols <= 0) return;
    float *out = j->out + (size_t)r0 * j->N + c0;
    ops_cpu_gemm_nt(out, j->N, j->in + (size_t)r0 * j->K, j->K, j->W + (size_t)c0 * j->K, j->K, rows, cols, j->K);
    if (j->epi != OPS_EPI_NONE) epilogue_rows(out, rows, cols, j->N, j->bias + c0, j->epi);
}

static int ceil_div(int a, int b) { return (a + b - 1) / b; }
static int round_up(int a, int m) { return ceil_div(a, m) * m; }

int ops_cpu_matmul(ops_t *ops, void *out, const void *in, const void *W, const float *bias, int T, int K, int N,
                   ops_epilogue_t epi) {
    if (T < 0 || K <= 0 || N <= 0)
        return ops_cpu_fail(ops, OPS_EINVAL, "matmul: bad shape T=%d K=%d N=%d (T >= 0, K > 0, N > 0)", T, K, N);
    if (epi != OPS_EPI_NONE && epi != OPS_EPI_BIAS && epi != OPS_EPI_BIAS_GELU)
        return ops_cpu_fail(ops, OPS_EINVAL, "matmul: unknown epilogue %d", (int)epi);
    if (epi != OPS_EPI_NONE && !bias) return ops_cpu_fail(ops, OPS_EINVAL, "matmul: epilogue %d needs a bias", (int)epi);
    if (T == 0) return OPS_OK;
    if (!out || !in || !W) return ops_cpu_fail(ops, OPS_EINVAL, "matmul: NULL buffer");
    if (out == in) return ops_cpu_fail(ops, OPS_EINVAL, "matmul: out must not alias in");

    ops_cpu_impl_t *impl = ops->impl;
    int nt = impl->threads;
    matmul_job_t j = {.out = out, .in = in, .W = W, .bias = bias, .T = T, .K = K, .N = N, .epi = epi,
                      .row_block = T, .col_block = N, .col_tasks = 1};
    int n_tasks = 1;
    if (nt > 1) {
        if (T >= 64 * nt) {
            /* Many tokens: row blocks, two per thread so a core slowed by
             * another process does not hold up the whole op. */
            int tasks = T >= 256 * nt ? 2 * nt : nt;
            j.row_block = round_up(ceil_div(T, tasks), 16);
            n_tasks = ceil_div(T, j.row_block);
        } else if (N >= 32 * nt) {
            /* Few tokens: split W's rows (the output columns) instead, about
             * four blocks per thread (at least 32 columns each), so when
             * another process holds one core the others take its share. */
            int tasks = N >= 128 * nt ? 4 * nt : nt;
            j.col_block = round_up(ceil_div(N, tasks), 16);
            j.col_tasks = ceil_div(N, j.col_block);
            n_tasks = j.col_tasks;
        }
    }
    ops_cpu_threadpool_run(impl->pool, matmul_task, &j, n_tasks);
    return OPS_OK;
}
