/* kernels/cpu/ops_cpu.c - the CPU backend: lifetime, host memory, the op table.
 *
 * The reference backend: every op is float32 on host memory. Our own ops run
 * on a fixed thread pool sized to the cores; OpenBLAS is set to one thread and
 * called from inside that pool on slices of the work, so our threads and
 * OpenBLAS threads never compete for the cores (and a slice's epilogue runs
 * while its output is still in cache).
 */
#include <cblas.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/topk.h"
#include "kernels/util.h"

#define CPU_ALIGN 64

int ops_cpu_fail(ops_t *ops, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    util_verrf(ops->err, sizeof ops->err, fmt, ap);
    va_end(ap);
    return code;
}

int ops_cpu_check_seq_off(ops_t *ops, const char *what, const int32_t *seq_off, int B) {
    if (B < 0) return ops_cpu_fail(ops, OPS_EINVAL, "%s: B = %d sequences (must be >= 0)", what, B);
    if (!seq_off) return ops_cpu_fail(ops, OPS_EINVAL, "%s: seq_off is NULL", what);
    if (seq_off[0] != 0) return ops_cpu_fail(ops, OPS_EINVAL, "%s: seq_off[0] = %d (must be 0)", what, seq_off[0]);
    int longest = 0;
    for (int b = 0; b < B; b++) {
        int len = seq_off[b + 1] - seq_off[b];
        if (seq_off[b + 1] < seq_off[b])
            return ops_cpu_fail(ops, OPS_EINVAL, "%s: seq_off decreases at sequence %d (%d -> %d)", what, b,
                                seq_off[b], seq_off[b + 1]);
        if (len > longest) longest = len;
    }
    return longest;
}

int ops_cpu_ensure_scratch(ops_t *ops, const char *what, size_t floats) {
    ops_cpu_impl_t *impl = ops->impl;
    for (int w = 0; w < impl->threads; w++) {
        if (impl->scratch_floats[w] >= floats) continue;
        float *p = malloc(floats * sizeof(float));
        if (!p) return ops_cpu_fail(ops, OPS_ENOMEM, "%s: cannot allocate %zu bytes of scratch", what, floats * sizeof(float));
        free(impl->scratch[w]);
        impl->scratch[w] = p;
        impl->scratch_floats[w] = floats;
    }
    return OPS_OK;
}

/* F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does
 * not know the name "f16c" (gcc does), and the fuzz build uses clang. */
static inline int cpu_has_f16c(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1u), "c"(0u));
    (void)a;
    (void)b;
    (void)d;
    return (c >> 29) & 1u;
#else
    return 0;
#endif
}

/* The one CPU-feature probe of the backend (the decoder ops and the
 * encoder's GEMM both ask it), capped by $SLUICE_CPU_ISA. */
int ops_cpu_isa(void) {
    static atomic_int cached = -1;
    int v = atomic_load(&cached);
    if (v < 0) {
        v = OPS_CPU_PORTABLE;
#if defined(__x86_64__) && defined(__GNUC__)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c())
            v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") ? OPS_CPU_AVX512
                                                                                        : OPS_CPU_AVX2;
#endif
        const char *cap = getenv("SLUICE_CPU_ISA");
        if (cap && strcmp(cap, "portable") == 0) v = OPS_CPU_PORTABLE;
        if (cap && strcmp(cap, "avx2") == 0 && v > OPS_CPU_AVX2) v = OPS_CPU_AVX2;
        atomic_store(&cached, v);
    }
    return v;
}

static void cpu_destroy(ops_t *ops) {
    if (!ops) return;
    ops_cpu_impl_t *impl = ops->impl;
    if (impl) {
        ops_cpu_threadpool_destroy(impl->pool);
        if (impl->scratch)
            for (int i = 0; i < impl->threads; i++) free(impl->scratch[i]);
        free(impl->scratch);
        free(impl->scratch_floats);
        free(impl);
    }
    free(ops);
}

static ops_t *cpu_clone(ops_t *ops) {
    ops_cpu_impl_t *impl = ops->impl;
    ops_t *sibling = ops_cpu_create(impl->threads);
    if (!sibling) ops_cpu_fail(ops, OPS_ENOMEM, "cpu clone: out of memory");
    return sibling;
}

static void *cpu_mem_alloc(ops_t *ops, size_t bytes) {
    size_t rounded = (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    if (rounded < bytes) { /* overflow */
        ops_cpu_fail(ops, OPS_ENOMEM, "cpu mem_alloc: %zu bytes is too large", bytes);
        return NULL;
    }
    if (rounded == 0) rounded = CPU_ALIGN;
    void *p = aligned_alloc(CPU_ALIGN, rounded);
    if (!p) ops_cpu_fail(ops, OPS_ENOMEM, "cpu mem_alloc: cannot allocate %zu bytes", bytes);
    return p;
}

static void cpu_mem_free(ops_t *ops, void *p) {
    (void)ops;
    free(p);
}

/* Host RAM from /proc/meminfo: MemAvailable is what a new allocation can get
 * without swapping, so it is the "free" figure budgets are checked against. */
static int cpu_mem_info(ops_t *ops, size_t *free_bytes, size_t *total_bytes) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return ops_cpu_fail(ops, OPS_EDEVICE, "cpu mem_info: cannot open /proc/meminfo");
    unsigned long long avail_kb = 0, total_kb = 0;
    int have_avail = 0, have_total = 0;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemAvailable: %llu kB", &avail_kb) == 1) have_avail = 1;
        if (sscanf(line, "MemTotal: %llu kB", &total_kb) == 1) have_total = 1;
    }
    fclose(f);
    if (!have_avail || !have_total)
        return ops_cpu_fail(ops, OPS_EDEVICE, "cpu mem_info: MemAvailable/MemTotal missing from /proc/meminfo");
    if (free_bytes) *free_bytes = (size_t)avail_kb * 1024;
    if (total_bytes) *total_bytes = (size_t)total_kb * 1024;
    return OPS_OK;
}

static int cpu_copy(ops_t *ops, void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return OPS_OK;
    if (!dst || !src) return ops_cpu_fail(ops, OPS_EINVAL, "cpu copy: NULL buffer for %zu bytes", bytes);
    memcpy(dst, src, bytes);
    return OPS_OK;
}

static int cpu_upload_weight(ops_t *ops, void *dst, const float *src_host, size_t n) {
    if (n > SIZE_MAX / sizeof(float)) return ops_cpu_fail(ops, OPS_EINVAL, "cpu upload_weight: n = %zu too large", n);
    return cpu_copy(ops, dst, src_host, n * sizeof(float));
}

static int cpu_sync(ops_t *ops) {
    (void)ops; /* every op completes before it returns */
    return OPS_OK;
}

/* The cores this process may run on: its affinity mask (taskset, a cgroup
 * cpuset) when there is one, which can be fewer than the machine's. */
static long cpu_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

ops_t *ops_cpu_create(int threads) {
    if (threads <= 0) threads = (int)cpu_cores();
    ops_t *ops = calloc(1, sizeof *ops);
    ops_cpu_impl_t *impl = calloc(1, sizeof *impl);
    if (!ops || !impl) goto fail;
    *ops = (ops_t){
        .name = "cpu",
        .dtype = OPS_F32,
        .impl = impl,
        .destroy = cpu_destroy,
        .clone = cpu_clone,
        .mem_alloc = cpu_mem_alloc,
        .mem_free = cpu_mem_free,
        .mem_info = cpu_mem_info,
        .upload = cpu_copy,
        .download = cpu_copy,
        .upload_weight = cpu_upload_weight,
        .sync = cpu_sync,
        .embed_ln = ops_cpu_embed_ln,
        .matmul = ops_cpu_matmul,
        .add_ln = ops_cpu_add_ln,
        .attention = ops_cpu_attention,
        .mean_pool = ops_cpu_mean_pool,
        .topk_workspace = cpu_topk_workspace,
        .similarity_topk = cpu_similarity_topk,
        .kv_dtype = OPS_F32,
        .matmul_q = ops_cpu_matmul_q,
        .embed_q = ops_cpu_embed_q,
        .add_rms_norm = ops_cpu_add_rms_norm,
        .rope = ops_cpu_rope,
        .silu_mul = ops_cpu_silu_mul,
        .kv_store = ops_cpu_kv_store,
        .attention_paged = ops_cpu_attention_paged,
        .argmax = ops_cpu_argmax,
        .capture_begin = NULL,
        .capture_end = NULL,
        .graph_launch = NULL,
        .graph_destroy = NULL,
    };
    impl->threads = threads;
    impl->scratch = calloc((size_t)threads, sizeof *impl->scratch);
    impl->scratch_floats = calloc((size_t)threads, sizeof *impl->scratch_floats);
    if (!impl->scratch || !impl->scratch_floats) goto fail;
    impl->pool = ops_cpu_threadpool_create(threads);
    if (!impl->pool) goto fail;
    /* Parallelism comes from our pool, which hands OpenBLAS slices; a
     * multi-threaded OpenBLAS inside it would oversubscribe the cores. */
    openblas_set_num_threads(1);
    return ops;
fail:
    if (ops && ops->impl) {
        cpu_destroy(ops);
    } else {
        free(impl);
        free(ops);
    }
    return NULL;
}
