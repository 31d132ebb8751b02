/* api/http/ratelimit.h - token buckets per API key: requests per second and input
 * tokens per second.
 *
 * Bucket i belongs to key i of the key file; one more bucket (the last) is
 * shared by requests without a key (a server without a key file). The
 * request bucket holds one second's worth (at least 1); a request takes 1 or
 * is refused with the seconds until one is there. The token bucket is charged
 * after the request is tokenized (its size is only known then) and may go
 * into debt: a request is let in while the bucket is above zero, so one large
 * request is never refused forever, and the debt delays the next ones.
 * A rate of 0 means no limit.
 *
 * Thread-safety: every call is thread-safe (one mutex; a few arithmetic
 * operations under it).
 */
#ifndef SLUICE_API_RATELIMIT_H
#define SLUICE_API_RATELIMIT_H

#include <stdint.h>

typedef struct api_ratelimit api_ratelimit_t;

enum { API_RL_OK = 0, API_RL_REQUESTS = 1, API_RL_TOKENS = 2 };

int api_ratelimit_create(int n_buckets, api_ratelimit_t **out); /* 0 or -1 (out of memory) */
void api_ratelimit_destroy(api_ratelimit_t *rl);
void api_ratelimit_configure(api_ratelimit_t *rl, int bucket, double rps, double tokens_per_s);
/* Take one request at now_ns (CLOCK_MONOTONIC): API_RL_OK, or API_RL_REQUESTS /
 * API_RL_TOKENS with *retry_after_s (>= 1) set. */
int api_ratelimit_take(api_ratelimit_t *rl, int bucket, int64_t now_ns, int *retry_after_s);
/* Charge the input tokens of an admitted request. */
void api_ratelimit_charge(api_ratelimit_t *rl, int bucket, int64_t now_ns, double tokens);

#endif
