/* kernels/util.h - the small helpers every layer uses, in one home: clocks,
 * sleeps, condition-variable deadlines and formatting into an error buffer.
 * They sit in the lowest layer so kernels, engine, batcher and api share
 * them (queue/ keeps its own functions, as it links hiredis alone; the
 * UTIL_EMBED macro it shares, being no code).
 *
 * Thread-safety: every call is thread-safe.
 */
#ifndef SLUICE_UTIL_H
#define SLUICE_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in ns: durations, deadlines, rate limits. */
int64_t util_now_ns(void);
/* CLOCK_REALTIME in ms since the epoch: times other processes see (Redis task deadlines). */
int64_t util_wall_ms(void);
void util_sleep_ms(int ms);
/* An absolute time ns_from_now on `clock` (pthread_cond_timedwait takes the
 * clock its condition variable was made with: CLOCK_REALTIME by default). */
void util_deadline(struct timespec *ts, clockid_t clock, int64_t ns_from_now);

/* printf into err (errlen bytes; NULL or 0: nothing), always NUL-terminated. */
void util_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void util_verrf(char *err, size_t errlen, const char *fmt, va_list ap);

/* Grow a byte buffer *buf of *cap bytes to hold at least `need`, doubling from
 * `first` (the size of the first allocation). 0, or -1 with *buf and *cap as
 * they were when memory runs out. */
int util_grow(char **buf, size_t *cap, size_t need, size_t first);

/* A file of the repository as a NUL-terminated array in .rodata, through the
 * assembler's .incbin: no generator step and no xxd, the same for gcc, clang
 * and every build folder. path is relative to the repository root, where
 * make runs the compiler; the Makefile makes the object depend on the file
 * (the compiler's dependency files do not see it). A macro alone: no link
 * dependency, so queue/ uses it too. */
#define UTIL_EMBED(sym, path)                                                                              \
    __asm__(".pushsection .rodata\n.global " #sym "\n.hidden " #sym "\n.type " #sym ", @object\n" #sym ":\n" \
            ".incbin \"" path "\"\n.byte 0\n.size " #sym ", . - " #sym "\n.popsection\n");              \
    extern const char sym[]

#endif
