/* api/http/auth.c - the key file, SHA-256 hashes and the constant-time key check. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/http/auth.h"

struct api_keys {
    api_key_t *keys;
    int n;
};

void api_sha256(const void *data, size_t len, unsigned char out[API_KEY_HASH_BYTES]) {
    unsigned int n = 0;
    if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL)) memset(out, 0, API_KEY_HASH_BYTES);
}

int api_hash_equal(const unsigned char a[API_KEY_HASH_BYTES], const unsigned char b[API_KEY_HASH_BYTES]) {
    return CRYPTO_memcmp(a, b, API_KEY_HASH_BYTES) == 0;
}

int api_scopes_parse(const char *s, unsigned *out) {
    unsigned bits = 0;
    while (s && *s) {
        size_t n = strcspn(s, ",");
        if (n == 5 && !strncmp(s, "infer", 5)) bits |= API_SCOPE_INFER;
        else if (n == 5 && !strncmp(s, "admin", 5)) bits |= API_SCOPE_ADMIN;
        else return -1;
        s += n + (s[n] == ',');
    }
    if (!bits) return -1;
    *out = bits;
    return 0;
}

const char *api_scopes_name(unsigned scopes, char *buf, size_t len) {
    snprintf(buf, len, "%s%s%s", scopes & API_SCOPE_INFER ? "infer" : "",
             (scopes & API_SCOPE_INFER) && (scopes & API_SCOPE_ADMIN) ? "," : "",
             scopes & API_SCOPE_ADMIN ? "admin" : "");
    return buf;
}

static int hex_nibble(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= API_KEY_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.@", s[i])) return 0;
    return 1;
}

/* One line into *k; 0, 1 (blank or comment) or -1 with a message. */
static int parse_line(char *line, api_key_t *k, char *err, size_t errlen) {
    char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save);
    if (!tok || tok[0] == '#') return 1;
    memset(k, 0, sizeof *k);
    if (!name_ok(tok)) {
        snprintf(err, errlen, "bad key name '%.64s' (letters, digits, - _ . @)", tok);
        return -1;
    }
    snprintf(k->name, sizeof k->name, "%s", tok);
    int have_hash = 0;
    while ((tok = strtok_r(NULL, " \t\r\n", &save))) {
        if (!strncmp(tok, "sha256:", 7)) {
            const char *h = tok + 7;
            if (strlen(h) != 2 * API_KEY_HASH_BYTES) goto bad_hash;
            for (int i = 0; i < API_KEY_HASH_BYTES; i++) {
                int a = hex_nibble(h[2 * i]), b = hex_nibble(h[2 * i + 1]);
                if (a < 0 || b < 0) goto bad_hash;
                k->hash[i] = (unsigned char)(a << 4 | b);
            }
            have_hash = 1;
        } else if (!strncmp(tok, "scopes=", 7)) {
            if (api_scopes_parse(tok + 7, &k->scopes)) {
                snprintf(err, errlen, "key %s: scopes must be infer, admin or infer,admin (got '%.64s')", k->name, tok + 7);
                return -1;
            }
        } else if (!strncmp(tok, "rps=", 4) || !strncmp(tok, "tokens_per_s=", 13)) {
            int is_rps = tok[0] == 'r';
            const char *v = strchr(tok, '=') + 1;
            char *end;
            errno = 0;
            double d = strtod(v, &end);
            if (errno || end == v || *end || d < 0 || d > 1e9) {
                snprintf(err, errlen, "key %s: %s needs a number >= 0", k->name, is_rps ? "rps" : "tokens_per_s");
                return -1;
            }
            if (is_rps) k->rps = d;
            else k->tokens_per_s = d;
        } else {
            snprintf(err, errlen, "key %s: unknown field '%.64s'", k->name, tok);
            return -1;
        }
    }
    if (!have_hash || !k->scopes) {
        snprintf(err, errlen, "key %s: needs sha256:<hex> and scopes=", k->name);
        return -1;
    }
    return 0;
bad_hash:
    snprintf(err, errlen, "key %s: sha256: must be 64 hex digits", k->name);
    return -1;
}

int api_keys_load(const char *path, api_keys_t **out, char *err, size_t errlen) {
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "key file %s: %s", path, strerror(errno));
        return -1;
    }
    /* as ssh does with private keys: a file others may read or change is refused */
    struct stat st;
    if (fstat(fileno(f), &st) || (st.st_mode & 077)) {
        snprintf(err, errlen, "key file %s: mode %03o lets group or others read or write it; chmod 600 %s", path,
                 (unsigned)(st.st_mode & 0777), path);
        fclose(f);
        return -1;
    }
    api_keys_t *t = calloc(1, sizeof *t);
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, cap_keys = 0;
    if (!t) goto oom;
    while (getline(&line, &cap, f) > 0) {
        lineno++;
        api_key_t k;
        char e2[256];
        int rc = parse_line(line, &k, e2, sizeof e2);
        if (rc == 1) continue;
        if (rc < 0) {
            snprintf(err, errlen, "key file %s line %d: %s", path, lineno, e2);
            goto fail;
        }
        for (int i = 0; i < t->n; i++)
            if (!strcmp(t->keys[i].name, k.name)) {
                snprintf(err, errlen, "key file %s line %d: key name %s used twice", path, lineno, k.name);
                goto fail;
            }
        if (t->n == cap_keys) {
            cap_keys = cap_keys ? cap_keys * 2 : 8;
            api_key_t *nk = realloc(t->keys, (size_t)cap_keys * sizeof *nk);
            if (!nk) goto oom;
            t->keys = nk;
        }
        t->keys[t->n++] = k;
    }
    if (t->n == 0) {
        snprintf(err, errlen, "key file %s holds no keys (add one with: sluice keys add --scope infer --file %s)", path, path);
        goto fail;
    }
    free(line);
    fclose(f);
    *out = t;
    return 0;
oom:
    snprintf(err, errlen, "out of memory reading %s", path);
fail:
    free(line);
    fclose(f);
    api_keys_destroy(t);
    return -1;
}

void api_keys_destroy(api_keys_t *k) {
    if (!k) return;
    free(k->keys);
    free(k);
}

int api_keys_count(const api_keys_t *k) { return k ? k->n : 0; }

const api_key_t *api_keys_get(const api_keys_t *k, int i) {
    return k && i >= 0 && i < k->n ? &k->keys[i] : NULL;
}

int api_keys_lookup(const api_keys_t *k, const char *key, size_t len) {
    if (!k) return -1;
    unsigned char h[API_KEY_HASH_BYTES];
    api_sha256(key, len, h);
    int found = -1;
    /* every key is compared, and the match is picked without a branch on the
     * secret's position, so the time depends only on the number of keys */
    for (int i = 0; i < k->n; i++) {
        int eq = api_hash_equal(h, k->keys[i].hash);
        int mask = -(eq & (found < 0));
        found = (found & ~mask) | (i & mask);
    }
    return found;
}

int api_key_generate(char *buf, size_t len) {
    unsigned char raw[32];
    if (len < 80 || RAND_bytes(raw, sizeof raw) != 1) return -1;
    int n = snprintf(buf, len, "sk-sluice-");
    for (size_t i = 0; i < sizeof raw; i++) n += snprintf(buf + n, len - (size_t)n, "%02x", raw[i]);
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

int api_keys_append(const char *path, const char *name, const char *key, unsigned scopes, double rps,
                    double tokens_per_s, char *err, size_t errlen) {
    if (!name_ok(name)) {
        snprintf(err, errlen, "bad key name '%.64s' (letters, digits, - _ . @; at most %d bytes)", name,
                 API_KEY_NAME_MAX - 1);
        return -1;
    }
    /* the name must be new: read what is there (a missing file is fine) */
    FILE *f = fopen(path, "r");
    if (f) {
        char *line = NULL;
        size_t cap = 0;
        int dup = 0;
        while (!dup && getline(&line, &cap, f) > 0) {
            char first[API_KEY_NAME_MAX + 2];
            if (sscanf(line, " %65s", first) == 1 && !strcmp(first, name)) dup = 1;
        }
        free(line);
        fclose(f);
        if (dup) {
            snprintf(err, errlen, "key file %s already has a key named %s", path, name);
            return -1;
        }
    }
    unsigned char h[API_KEY_HASH_BYTES];
    api_sha256(key, strlen(key), h);
    char line[512], scopes_s[32];
    int n = snprintf(line, sizeof line, "%s sha256:", name);
    for (int i = 0; i < API_KEY_HASH_BYTES; i++) n += snprintf(line + n, sizeof line - (size_t)n, "%02x", h[i]);
    n += snprintf(line + n, sizeof line - (size_t)n, " scopes=%s", api_scopes_name(scopes, scopes_s, sizeof scopes_s));
    if (rps > 0) n += snprintf(line + n, sizeof line - (size_t)n, " rps=%g", rps);
    if (tokens_per_s > 0) n += snprintf(line + n, sizeof line - (size_t)n, " tokens_per_s=%g", tokens_per_s);
    n += snprintf(line + n, sizeof line - (size_t)n, "\n");
    /* never through a symlink; an existing file is made 0600 (the server refuses anything wider) */
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, errno == ELOOP ? "it is a symbolic link" : strerror(errno));
        return -1;
    }
    if (fchmod(fd, 0600)) {
        snprintf(err, errlen, "cannot make %s mode 600: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    ssize_t w = write(fd, line, (size_t)n);
    int rc = (w == n && fsync(fd) == 0) ? 0 : -1;
    if (close(fd)) rc = -1;
    if (rc) snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    return rc;
}
