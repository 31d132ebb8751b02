/* bench/bench_time.h - the clock and median helpers the op microbenchmarks share
 * (header-only: each bench/NAME.c links alone against libsluice.a).
 *
 * bench_clock is CLOCK_MONOTONIC (wall time) unless a driver switches it to
 * CLOCK_PROCESS_CPUTIME_ID for A/B runs on a busy machine. */
#ifndef SLUICE_BENCH_TIME_H
#define SLUICE_BENCH_TIME_H

#include <stdlib.h>
#include <time.h>

static clockid_t bench_clock = CLOCK_MONOTONIC;

static inline double bench_now_s(void) {
    struct timespec ts;
    clock_gettime(bench_clock, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of n timings (sorts them in place). */
static inline double bench_median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
    return t[n / 2];
}

#endif
