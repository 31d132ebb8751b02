/* api/http/auth.h - API keys with scopes, kept as SHA-256 hashes in a key file.
 *
 * The key file holds one key per line, never the key itself:
 *   # comment
 *   NAME sha256:<64 hex> scopes=infer,admin [rps=N] [tokens_per_s=N]
 * rps and tokens_per_s are the key's rate limits (0 or absent: the server's
 * defaults). `sluice keys add` makes a random key, prints it once and appends
 * its line (api_keys_append).
 *
 * A presented key is hashed and compared with every stored hash in constant
 * time (CRYPTO_memcmp, no early exit), so neither the comparison nor the
 * position of the matching line leaks through timing.
 *
 * Ownership: api_keys_load returns a table the caller frees with
 * api_keys_destroy (NULL: no-op). Thread-safety: a loaded table is read-only,
 * so lookups are safe from any thread.
 */
#ifndef SLUICE_API_AUTH_H
#define SLUICE_API_AUTH_H

#include <stddef.h>

enum { API_SCOPE_INFER = 1u, API_SCOPE_ADMIN = 2u };

#define API_KEY_NAME_MAX 64
#define API_KEY_HASH_BYTES 32

typedef struct {
    char name[API_KEY_NAME_MAX];
    unsigned char hash[API_KEY_HASH_BYTES]; /* SHA-256 of the key */
    unsigned scopes;                        /* API_SCOPE_* bits */
    double rps;                             /* requests per second; 0: server default */
    double tokens_per_s;                    /* input tokens per second; 0: server default */
} api_key_t;

typedef struct api_keys api_keys_t;

/* 0, or -1 with a message naming the file and line. */
int api_keys_load(const char *path, api_keys_t **out, char *err, size_t errlen);
void api_keys_destroy(api_keys_t *k);
int api_keys_count(const api_keys_t *k);
const api_key_t *api_keys_get(const api_keys_t *k, int i);
/* Index of the key whose hash matches, or -1. Time depends on the number of
 * keys only, not on which (if any) matches. */
int api_keys_lookup(const api_keys_t *k, const char *key, size_t len);

/* "infer", "admin", "infer,admin" -> bits; 0 or -1. */
int api_scopes_parse(const char *s, unsigned *out);
/* "infer,admin" into buf. */
const char *api_scopes_name(unsigned scopes, char *buf, size_t len);

void api_sha256(const void *data, size_t len, unsigned char out[API_KEY_HASH_BYTES]);
/* 1 when equal; constant time (CRYPTO_memcmp). */
int api_hash_equal(const unsigned char a[API_KEY_HASH_BYTES], const unsigned char b[API_KEY_HASH_BYTES]);

/* A new random key ("sk-sluice-" + 64 hex) into buf (>= 80 bytes): 0 or -1. */
int api_key_generate(char *buf, size_t len);
/* Append the key's line (its hash, never the key) to path, creating it with
 * mode 0600. The name must be unique in the file. 0 or -1 with a message. */
int api_keys_append(const char *path, const char *name, const char *key, unsigned scopes, double rps,
                    double tokens_per_s, char *err, size_t errlen);

#endif
