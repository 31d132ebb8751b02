/* bench/dnnl/dnnl_matmul.c - the weight-matrix products of all-MiniLM-L6-v2 on
 * one core: oneDNN's matmul with the weights reordered once to the blocked
 * layout it picks (format "any"), bias and exact GELU as its post-ops, beside
 * the CPU backend's ops->matmul (our GEMM on the weights as uploaded, its own
 * epilogue) and a bare OpenBLAS sgemm (no epilogue, re-packs every call).
 *
 *   sh bench/dnnl/run.sh     (fetches libdnnl-dev into build/dnnl, builds, runs)
 *
 * Not built by the Makefile (oneDNN is not a dependency of sluice): the
 * comparison that chose our own kernel, kept so it can be rerun. Process CPU
 * time, one thread each (OMP_NUM_THREADS=1), median of 9 timings of a batch
 * of calls, so the figures hold on a busy machine.
 */
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "kernels/ops.h"

#define CHECK(x)                                                               \
    do {                                                                       \
        dnnl_status_t s_ = (x);                                                \
        if (s_ != dnnl_success) {                                              \
            fprintf(stderr, "%s:%d: %s -> %d\n", __FILE__, __LINE__, #x, s_); \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float *random_floats(size_t n, float amp) {
    float *p = malloc(n * sizeof *p);
    if (!p) exit(1);
    for (size_t i = 0; i < n; i++) p[i] = amp * ((float)rand() / (float)RAND_MAX * 2.0f - 1.0f);
    return p;
}

/* Median seconds per call: 9 timings of `calls` calls each, after a warm-up. */
#define MEDIAN_PER_CALL(result, calls, body)                      \
    do {                                                          \
        double t_[9];                                             \
        body;                                                     \
        for (int r_ = 0; r_ < 9; r_++) {                          \
            double t0_ = cpu_s();                                 \
            for (int c_ = 0; c_ < (calls); c_++) body;            \
            t_[r_] = (cpu_s() - t0_) / (calls);                   \
        }                                                         \
        qsort(t_, 9, sizeof t_[0], cmp_double);                   \
        (result) = t_[4];                                         \
    } while (0)

static void bench(ops_t *ops, dnnl_engine_t eng, dnnl_stream_t strm, int T, int K, int N, int gelu,
                  const char *name) {
    float *in = random_floats((size_t)T * K, 1.0f), *W = random_floats((size_t)N * K, 0.05f);
    float *bias = random_floats(N, 0.5f), *out = malloc((size_t)T * N * sizeof *out);

    /* oneDNN: weights logically (K, N); ours are (N, K) row-major = tag ba. */
    dnnl_memory_desc_t src_md, w_user_md, w_any_md, b_md, dst_md;
    dnnl_dims_t sd = {T, K}, wd = {K, N}, bd = {1, N}, dd = {T, N};
    CHECK(dnnl_memory_desc_init_by_tag(&src_md, 2, sd, dnnl_f32, dnnl_ab));
    CHECK(dnnl_memory_desc_init_by_tag(&w_user_md, 2, wd, dnnl_f32, dnnl_ba));
    CHECK(dnnl_memory_desc_init_by_tag(&w_any_md, 2, wd, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&b_md, 2, bd, dnnl_f32, dnnl_ab));
    CHECK(dnnl_memory_desc_init_by_tag(&dst_md, 2, dd, dnnl_f32, dnnl_ab));
    dnnl_matmul_desc_t md;
    CHECK(dnnl_matmul_desc_init(&md, &src_md, &w_any_md, &b_md, &dst_md));
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po;
    CHECK(dnnl_primitive_attr_create(&attr));
    CHECK(dnnl_post_ops_create(&po));
    if (gelu) CHECK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_erf, 0.0f, 0.0f));
    CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
    dnnl_primitive_desc_t pd;
    CHECK(dnnl_primitive_desc_create(&pd, &md, attr, eng, NULL));
    const dnnl_memory_desc_t *w_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_t m_src, m_wuser, m_w, m_b, m_dst;
    CHECK(dnnl_memory_create(&m_src, &src_md, eng, in));
    CHECK(dnnl_memory_create(&m_wuser, &w_user_md, eng, W));
    CHECK(dnnl_memory_create(&m_w, w_md, eng, DNNL_MEMORY_ALLOCATE));
    CHECK(dnnl_memory_create(&m_b, &b_md, eng, bias));
    CHECK(dnnl_memory_create(&m_dst, &dst_md, eng, out));
    /* the reorder to the blocked layout, once (as at model load) */
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t reorder;
    CHECK(dnnl_reorder_primitive_desc_create(&rpd, &w_user_md, eng, w_md, eng, NULL));
    CHECK(dnnl_primitive_create(&reorder, rpd));
    dnnl_exec_arg_t rargs[] = {{DNNL_ARG_FROM, m_wuser}, {DNNL_ARG_TO, m_w}};
    CHECK(dnnl_primitive_execute(reorder, strm, 2, rargs));
    CHECK(dnnl_stream_wait(strm));
    dnnl_primitive_t mm;
    CHECK(dnnl_primitive_create(&mm, pd));
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, m_src}, {DNNL_ARG_WEIGHTS, m_w}, {DNNL_ARG_BIAS, m_b}, {DNNL_ARG_DST, m_dst}};
    const char *impl = NULL;
    CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));

    int calls = (int)(1e9 / (2.0 * T * K * N)) + 1;
    double t_dnnl, t_ours, t_blas;
    MEDIAN_PER_CALL(t_dnnl, calls, {
        CHECK(dnnl_primitive_execute(mm, strm, 4, args));
        CHECK(dnnl_stream_wait(strm));
    });
    ops_epilogue_t epi = gelu ? OPS_EPI_BIAS_GELU : OPS_EPI_BIAS;
    MEDIAN_PER_CALL(t_ours, calls, {
        if (ops->matmul(ops, out, in, W, bias, T, K, N, epi)) exit(1);
    });
    MEDIAN_PER_CALL(t_blas, calls, {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, in, K, W, K, 0.0f, out, N);
    });
    double gf = 2.0 * T * K * N * 1e-9;
    printf("%-12s T=%5d K=%5d N=%5d | sluice %7.1f GFLOP/s | oneDNN %7.1f GFLOP/s (%s) | openblas %7.1f GFLOP/s | "
           "sluice/oneDNN %.2fx\n",
           name, T, K, N, gf / t_ours, gf / t_dnnl, impl, gf / t_blas, t_dnnl / t_ours);
    dnnl_primitive_destroy(mm);
    dnnl_primitive_destroy(reorder);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_primitive_desc_destroy(pd);
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    dnnl_memory_destroy(m_src), dnnl_memory_destroy(m_wuser), dnnl_memory_destroy(m_w);
    dnnl_memory_destroy(m_b), dnnl_memory_destroy(m_dst);
    free(in), free(W), free(bias), free(out);
}

int main(void) {
    ops_t *ops = ops_cpu_create(1);
    if (!ops) return 1;
    openblas_set_num_threads(1);
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags));
    double load[3] = {0};
    getloadavg(load, 3);
    printf("one thread each, process CPU time, load average %.2f\n", load[0]);
    static const int tokens[] = {16, 54, 128, 2048};
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
        int T = tokens[i];
        bench(ops, eng, strm, T, 384, 1152, 0, "qkv");
        bench(ops, eng, strm, T, 384, 384, 0, "attn-out");
        bench(ops, eng, strm, T, 384, 1536, 1, "ffn-up+gelu");
        bench(ops, eng, strm, T, 1536, 384, 0, "ffn-down");
    }
    dnnl_stream_destroy(strm);
    dnnl_engine_destroy(eng);
    ops_destroy(ops);
    return 0;
}
