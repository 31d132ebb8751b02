/* api/log.h - structured JSON log lines on stderr, and the trace ids they carry.
 *
 * One event, one line: {"time":"2026-01-02T03:04:05.678Z","level":"info",
 * "msg":"...", ...fields}. Fields come as a jansson object (json_pack), so
 * numbers stay numbers; by convention request_id, model, batch_id and
 * durations in seconds (`*_s`).
 *
 * Thread-safety: every call is thread-safe; a line is written with one
 * write(2), so lines from different threads never interleave.
 */
#ifndef SLUICE_API_LOG_H
#define SLUICE_API_LOG_H

#include <jansson.h>

typedef enum { API_LOG_DEBUG = 0, API_LOG_INFO = 1, API_LOG_WARN = 2, API_LOG_ERROR = 3 } api_log_level_t;

/* "debug", "info", "warn", "error" -> 0; anything else -> -1. */
int api_log_set_level(const char *name);
api_log_level_t api_log_level(void);
const char *api_log_level_name(api_log_level_t l);

/* Log msg with the object `fields` (stolen; NULL for none). */
void api_log(api_log_level_t level, const char *msg, json_t *fields);

/* A W3C traceparent (version 00: 00-<32 hex>-<16 hex>-<2 hex>, ids not all
 * zero); 1 when valid. Both intakes carry a valid one into the logs. */
int api_traceparent_valid(const char *s);

#endif
