/* api/http/cache.c - hash table (chained) + insertion-ordered list for eviction and expiry. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/http/auth.h"
#include "api/http/cache.h"
#include "batcher/batcher.h"

typedef struct entry {
    unsigned char key[API_CACHE_KEY_BYTES];
    char *body;
    size_t len;
    int64_t expires_ns;
    struct entry *chain;      /* same bucket */
    struct entry *older, *newer;
} entry_t;

struct api_cache {
    pthread_mutex_t mu;
    entry_t **buckets;
    size_t n_buckets;         /* power of two */
    entry_t *oldest, *newest;
    size_t max_entries, max_bytes;
    int64_t ttl_ns;
    api_cache_stats_t st;
};

int api_cache_create(size_t max_entries, size_t max_bytes, int ttl_ms, api_cache_t **out) {
    *out = NULL;
    api_cache_t *c = calloc(1, sizeof *c);
    if (!c) return -1;
    c->n_buckets = 16;
    while (c->n_buckets < 2 * max_entries) c->n_buckets *= 2;
    c->buckets = calloc(c->n_buckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return -1;
    }
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    c->ttl_ns = (int64_t)ttl_ms * 1000000;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return 0;
}

static size_t bucket_of(const api_cache_t *c, const unsigned char *key) {
    size_t h;
    memcpy(&h, key, sizeof h); /* the key is a SHA-256: any bytes are uniform */
    return h & (c->n_buckets - 1);
}

static void unlink_entry(api_cache_t *c, entry_t *e) {
    entry_t **pp = &c->buckets[bucket_of(c, e->key)];
    while (*pp && *pp != e) pp = &(*pp)->chain;
    if (*pp) *pp = e->chain;
    if (e->older) e->older->newer = e->newer;
    else c->oldest = e->newer;
    if (e->newer) e->newer->older = e->older;
    else c->newest = e->older;
    c->st.entries--;
    c->st.bytes -= e->len;
    free(e->body);
    free(e);
}

void api_cache_destroy(api_cache_t *c) {
    if (!c) return;
    while (c->oldest) unlink_entry(c, c->oldest);
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void api_cache_key(const char *scope, const char *model, const json_t *body, unsigned char key[API_CACHE_KEY_BYTES]) {
    static const char *const fields[] = {"input", "encoding_format", "dimensions", "truncate"};
    json_t *o = json_object();
    json_object_set_new(o, "model", json_string(model));
    json_object_set_new(o, "~scope", json_string(scope ? scope : "")); /* no request field has this name */
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        json_t *v = json_object_get(body, fields[i]);
        if (v && !json_is_null(v)) json_object_set(o, fields[i], v);
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    json_decref(o);
    api_sha256(text ? text : "", text ? strlen(text) : 0, key);
    free(text);
}

static void expire(api_cache_t *c, int64_t now) {
    while (c->oldest && c->oldest->expires_ns <= now) unlink_entry(c, c->oldest);
}

char *api_cache_get(api_cache_t *c, const unsigned char key[API_CACHE_KEY_BYTES], size_t *len) {
    if (!c) return NULL;
    char *out = NULL;
    pthread_mutex_lock(&c->mu);
    expire(c, batcher_now_ns());
    for (entry_t *e = c->buckets[bucket_of(c, key)]; e; e = e->chain)
        if (!memcmp(e->key, key, API_CACHE_KEY_BYTES)) {
            out = malloc(e->len + 1);
            if (out) {
                memcpy(out, e->body, e->len);
                out[e->len] = '\0';
                *len = e->len;
            }
            break;
        }
    if (out) c->st.hits++;
    else c->st.misses++;
    pthread_mutex_unlock(&c->mu);
    return out;
}

void api_cache_put(api_cache_t *c, const unsigned char key[API_CACHE_KEY_BYTES], const char *body, size_t len) {
    if (!c || c->max_entries == 0 || len > c->max_bytes) return;
    entry_t *e = calloc(1, sizeof *e);
    char *copy = malloc(len);
    if (!e || !copy) {
        free(e);
        free(copy);
        return;
    }
    memcpy(copy, body, len);
    memcpy(e->key, key, API_CACHE_KEY_BYTES);
    e->body = copy;
    e->len = len;
    int64_t now = batcher_now_ns();
    e->expires_ns = now + c->ttl_ns;
    pthread_mutex_lock(&c->mu);
    expire(c, now);
    for (entry_t *o = c->buckets[bucket_of(c, key)]; o; o = o->chain)
        if (!memcmp(o->key, key, API_CACHE_KEY_BYTES)) { /* a concurrent twin got here first */
            unlink_entry(c, o);
            break;
        }
    while (c->oldest && (c->st.entries + 1 > c->max_entries || c->st.bytes + len > c->max_bytes))
        unlink_entry(c, c->oldest);
    size_t b = bucket_of(c, key);
    e->chain = c->buckets[b];
    c->buckets[b] = e;
    e->older = c->newest;
    if (c->newest) c->newest->newer = e;
    else c->oldest = e;
    c->newest = e;
    c->st.entries++;
    c->st.bytes += len;
    pthread_mutex_unlock(&c->mu);
}

void api_cache_stats(api_cache_t *c, api_cache_stats_t *out) {
    memset(out, 0, sizeof *out);
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    pthread_mutex_unlock(&c->mu);
}
