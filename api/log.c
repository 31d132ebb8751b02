/* api/log.c - JSON lines on stderr, one write(2) each. */
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "api/log.h"

static atomic_int log_level = API_LOG_INFO;
static const char *level_names[] = {"debug", "info", "warn", "error"};

int api_log_set_level(const char *name) {
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, level_names[i])) {
            atomic_store(&log_level, i);
            return 0;
        }
    return -1;
}

api_log_level_t api_log_level(void) { return (api_log_level_t)atomic_load(&log_level); }

const char *api_log_level_name(api_log_level_t l) {
    return l >= API_LOG_DEBUG && l <= API_LOG_ERROR ? level_names[l] : "info";
}

void api_log(api_log_level_t level, const char *msg, json_t *fields) {
    if ((int)level < atomic_load(&log_level)) {
        json_decref(fields);
        return;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[96];
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    json_t *o = json_object();
    json_object_set_new(o, "time", json_string(ts));
    json_object_set_new(o, "level", json_string(api_log_level_name(level)));
    json_object_set_new(o, "msg", json_string(msg ? msg : ""));
    if (json_is_object(fields)) json_object_update(o, fields);
    json_decref(fields);
    char *line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(6));
    json_decref(o);
    if (!line) return;
    size_t n = strlen(line);
    line[n] = '\n'; /* json_dumps gives n+1 bytes: reuse the NUL */
    ssize_t w = write(2, line, n + 1);
    (void)w;
    free(line);
}

static int hex_run(const char *s, int n) {
    int nonzero = 0;
    for (int i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return -1;
        if (s[i] != '0') nonzero = 1;
    }
    return nonzero;
}

int api_traceparent_valid(const char *s) {
    if (!s || strlen(s) != 55) return 0;
    if (strncmp(s, "00-", 3) || s[35] != '-' || s[52] != '-') return 0;
    return hex_run(s + 3, 32) == 1 && hex_run(s + 36, 16) == 1 && hex_run(s + 53, 2) >= 0;
}
