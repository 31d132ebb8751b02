/* bench/expand_bench.c - queries/s of ops->similarity_topk over an index of unit vectors.
 *
 *   bench-expand_bench --index FILE [--dim D] [--k 10] [--batch 64] [--queries 1024]
 *                      [--reps 3] [--threads 0] [--device cpu|cuda] [--dtype fp32|bf16] [--dump F]
 *
 * FILE is an expand index cache (.safetensors, tensor "embeddings") or raw
 * float32 rows of --dim values. Query i is index row (i * 7919) mod N (the
 * peer script uses the same rule), sent in batches of --batch: upload the
 * batch, similarity_topk, download the answer, as engine/expand.c does. The
 * index is uploaded once, outside the timing. Prints one JSON line with the
 * best and median wall time of --reps timed passes over all queries and the
 * least process CPU time of a pass (best_cpu_s); --dump writes the
 * ids of the last pass (int32, queries x k) for a recall check against a peer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include "engine/safetensors.h"
#include "kernels/ops.h"

#define BENCH_QUERY_STRIDE 7919

static double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (all threads): on a shared machine the
 * fairer measure of work than wall time. */
static double bench_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The index rows as float32 (malloc'd), *N x *D. */
static float *bench_load(const char *path, int dim, int *N, int *D) {
    size_t len = strlen(path);
    if (len > 12 && !strcmp(path + len - 12, ".safetensors")) {
        st_file_t *f;
        char err[512];
        if (st_open(path, &f, err, sizeof err)) {
            fprintf(stderr, "expand-bench: %s\n", err);
            return NULL;
        }
        const st_tensor_t *t = st_find(f, "embeddings");
        float *x = t && t->ndim == 2 ? malloc((size_t)t->numel * sizeof *x) : NULL;
        if (x) {
            st_to_f32(t, x);
            *N = (int)t->shape[0];
            *D = (int)t->shape[1];
        } else {
            fprintf(stderr, "expand-bench: %s has no (N, D) tensor \"embeddings\"\n", path);
        }
        st_close(f);
        return x;
    }
    FILE *fp = fopen(path, "rb");
    if (!fp || dim <= 0 || fseek(fp, 0, SEEK_END)) {
        fprintf(stderr, "expand-bench: cannot read %s (raw float32 needs --dim)\n", path);
        if (fp) fclose(fp);
        return NULL;
    }
    long bytes = ftell(fp);
    rewind(fp);
    *D = dim;
    *N = (int)(bytes / (long)sizeof(float) / dim);
    float *x = malloc((size_t)*N * dim * sizeof *x);
    if (!x || fread(x, sizeof(float), (size_t)*N * dim, fp) != (size_t)*N * dim) {
        fprintf(stderr, "expand-bench: short read of %s\n", path);
        free(x);
        x = NULL;
    }
    fclose(fp);
    return x;
}

typedef struct {
    const char *index, *device, *dtype, *dump;
    int dim, k, batch, queries, reps, threads;
} bench_opts_t;

static int bench_parse(int argc, char **argv, bench_opts_t *o) {
    *o = (bench_opts_t){.device = "cpu", .dtype = "fp32", .k = 10, .batch = 64, .queries = 1024, .reps = 3};
    for (int i = 1; i < argc && (argc - 1) % 2 == 0; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--index")) o->index = v;
        else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--dtype")) o->dtype = v;
        else if (!strcmp(a, "--dump")) o->dump = v;
        else if (!strcmp(a, "--dim")) o->dim = atoi(v);
        else if (!strcmp(a, "--k")) o->k = atoi(v);
        else if (!strcmp(a, "--batch")) o->batch = atoi(v);
        else if (!strcmp(a, "--queries")) o->queries = atoi(v);
        else if (!strcmp(a, "--reps")) o->reps = atoi(v);
        else if (!strcmp(a, "--threads")) o->threads = atoi(v);
        else {
            fprintf(stderr, "expand-bench: unknown option %s\n", a);
            return -1;
        }
    }
    if ((argc - 1) % 2 || !o->index || o->k < 1 || o->batch < 1 || o->queries < 1 || o->reps < 1) {
        fprintf(stderr, "usage: bench-expand_bench --index FILE [--dim D] [--k K] [--batch B] [--queries Q] "
                        "[--reps R] [--threads T] [--device cpu|cuda] [--dtype fp32|bf16] [--dump F]\n");
        return -1;
    }
    return 0;
}

/* One timed pass over all queries; ids of the pass land in ids_out (queries x k). */
static int bench_pass(ops_t *ops, const float *Xh, void *dX, int N, int D, const bench_opts_t *o, float *dQ,
                      int32_t *d_idx, float *d_score, void *ws, float *qbuf, int32_t *ids_out, float *scores) {
    for (int q0 = 0; q0 < o->queries; q0 += o->batch) {
        int nb = o->queries - q0 < o->batch ? o->queries - q0 : o->batch;
        for (int i = 0; i < nb; i++)
            memcpy(qbuf + (size_t)i * D, Xh + (size_t)(((long long)(q0 + i) * BENCH_QUERY_STRIDE) % N) * D,
                   (size_t)D * sizeof(float));
        if (ops->upload(ops, dQ, qbuf, (size_t)nb * D * sizeof(float)) ||
            ops->similarity_topk(ops, d_idx, d_score, dQ, dX, nb, N, D, o->k, ws) ||
            ops->download(ops, ids_out + (size_t)q0 * o->k, d_idx, (size_t)nb * o->k * sizeof(int32_t)) ||
            ops->download(ops, scores, d_score, (size_t)nb * o->k * sizeof(float)) || ops->sync(ops)) {
            fprintf(stderr, "expand-bench: %s\n", ops->err);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    bench_opts_t o;
    if (bench_parse(argc, argv, &o)) return 2;
    int N = 0, D = 0;
    float *X = bench_load(o.index, o.dim, &N, &D);
    if (!X) return 1;
    if (o.k > N || o.k > 1000) {
        fprintf(stderr, "expand-bench: k=%d over min(N=%d, 1000)\n", o.k, N);
        return 2;
    }
    char err[512], note[512];
    ops_t *ops = ops_create(o.device, strcmp(o.dtype, "bf16") ? OPS_F32 : OPS_BF16, o.threads, err, sizeof err, note,
                            sizeof note);
    if (!ops) {
        fprintf(stderr, "expand-bench: %s\n", err);
        return 1;
    }
    size_t ws_bytes = ops->topk_workspace(ops, o.batch, N, o.k);
    void *dX = ops->mem_alloc(ops, (size_t)N * D * ops_dtype_size(ops->dtype));
    float *dQ = ops->mem_alloc(ops, (size_t)o.batch * D * sizeof(float));
    int32_t *d_idx = ops->mem_alloc(ops, (size_t)o.batch * o.k * sizeof(int32_t));
    float *d_score = ops->mem_alloc(ops, (size_t)o.batch * o.k * sizeof(float));
    void *ws = ops->mem_alloc(ops, ws_bytes ? ws_bytes : 1);
    float *qbuf = malloc((size_t)o.batch * D * sizeof(float)), *scores = malloc((size_t)o.batch * o.k * sizeof(float));
    int32_t *ids = malloc((size_t)o.queries * o.k * sizeof(int32_t));
    double *times = malloc((size_t)o.reps * sizeof(double)), best_cpu = 1e30;
    int rc = 1;
    if (!dX || !dQ || !d_idx || !d_score || !ws || !qbuf || !scores || !ids || !times) {
        fprintf(stderr, "expand-bench: out of memory (%s)\n", ops->err);
        goto done;
    }
    if (ops->upload_weight(ops, dX, X, (size_t)N * D) || ops->sync(ops)) {
        fprintf(stderr, "expand-bench: upload: %s\n", ops->err);
        goto done;
    }
    /* one untimed pass warms caches, pools and (cuda) the GEMM heuristics */
    if (bench_pass(ops, X, dX, N, D, &o, dQ, d_idx, d_score, ws, qbuf, ids, scores)) goto done;
    for (int r = 0; r < o.reps; r++) {
        double t0 = bench_now(), c0 = bench_cpu();
        if (bench_pass(ops, X, dX, N, D, &o, dQ, d_idx, d_score, ws, qbuf, ids, scores)) goto done;
        times[r] = bench_now() - t0;
        if (bench_cpu() - c0 < best_cpu) best_cpu = bench_cpu() - c0;
    }
    qsort(times, (size_t)o.reps, sizeof *times, bench_cmp_double);
    printf("{\"engine\":\"sluice\",\"device\":\"%s\",\"dtype\":\"%s\",\"n\":%d,\"d\":%d,\"k\":%d,\"batch\":%d,"
           "\"queries\":%d,\"best_s\":%.6f,\"median_s\":%.6f,\"best_cpu_s\":%.6f,\"qps\":%.1f}\n",
           ops->name, ops_dtype_name(ops->dtype), N, D, o.k, o.batch, o.queries, times[0], times[o.reps / 2], best_cpu,
           o.queries / times[0]);
    if (o.dump) {
        FILE *fp = fopen(o.dump, "wb");
        if (!fp || fwrite(ids, sizeof(int32_t), (size_t)o.queries * o.k, fp) != (size_t)o.queries * o.k) {
            fprintf(stderr, "expand-bench: cannot write %s\n", o.dump);
            if (fp) fclose(fp);
            goto done;
        }
        fclose(fp);
    }
    rc = 0;
done:
    ops->mem_free(ops, ws);
    ops->mem_free(ops, d_score);
    ops->mem_free(ops, d_idx);
    ops->mem_free(ops, dQ);
    ops->mem_free(ops, dX);
    ops_destroy(ops);
    free(X);
    free(qbuf);
    free(scores);
    free(ids);
    free(times);
    return rc;
}
