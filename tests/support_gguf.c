/* tests/support_gguf.c - the test GGUF writer (see support_gguf.h). */
#include "tests/support_gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NATURAL_BYTES (64u << 20) /* larger tensors are written without data */

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "support_gguf: out of memory (%zu bytes)\n", n);
        abort();
    }
    return q;
}

/* ---- buffer ---- */

void gw_buf_bytes(gw_buf_t *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
}

void gw_buf_u8(gw_buf_t *b, uint8_t v) { gw_buf_bytes(b, &v, 1); }
void gw_buf_u32(gw_buf_t *b, uint32_t v) { gw_buf_bytes(b, &v, 4); } /* little-endian host */
void gw_buf_u64(gw_buf_t *b, uint64_t v) { gw_buf_bytes(b, &v, 8); }

void gw_buf_strn(gw_buf_t *b, const char *s, size_t len) {
    gw_buf_u64(b, len);
    gw_buf_bytes(b, s, len);
}

void gw_buf_str(gw_buf_t *b, const char *s) { gw_buf_strn(b, s, strlen(s)); }

void gw_buf_free(gw_buf_t *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- builder ---- */

gw_t *gw_new(void) {
    gw_t *w = xrealloc(NULL, sizeof *w);
    memset(w, 0, sizeof *w);
    w->version = 3;
    w->n_tensors_field = -1;
    w->n_kv_field = -1;
    w->alignment = 32;
    return w;
}

void gw_free(gw_t *w) {
    if (!w) return;
    gw_buf_free(&w->kv);
    for (int i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->tensors);
    free(w);
}

void gw_kv_raw(gw_t *w, const char *key, uint32_t type, const void *payload, size_t len) {
    gw_buf_str(&w->kv, key);
    gw_buf_u32(&w->kv, type);
    gw_buf_bytes(&w->kv, payload, len);
    w->n_kv++;
}

void gw_kv_u32(gw_t *w, const char *key, uint32_t v) { gw_kv_raw(w, key, GGUF_V_UINT32, &v, 4); }
void gw_kv_i32(gw_t *w, const char *key, int32_t v) { gw_kv_raw(w, key, GGUF_V_INT32, &v, 4); }
void gw_kv_u64(gw_t *w, const char *key, uint64_t v) { gw_kv_raw(w, key, GGUF_V_UINT64, &v, 8); }
void gw_kv_f32(gw_t *w, const char *key, float v) { gw_kv_raw(w, key, GGUF_V_FLOAT32, &v, 4); }

void gw_kv_bool(gw_t *w, const char *key, int v) {
    uint8_t b = v != 0;
    gw_kv_raw(w, key, GGUF_V_BOOL, &b, 1);
}

void gw_kv_str(gw_t *w, const char *key, const char *v) {
    gw_buf_str(&w->kv, key);
    gw_buf_u32(&w->kv, GGUF_V_STRING);
    gw_buf_str(&w->kv, v);
    w->n_kv++;
}

void gw_kv_arr_str(gw_t *w, const char *key, size_t n, const char *const *v) {
    gw_buf_str(&w->kv, key);
    gw_buf_u32(&w->kv, GGUF_V_ARRAY);
    gw_buf_u32(&w->kv, GGUF_V_STRING);
    gw_buf_u64(&w->kv, n);
    for (size_t i = 0; i < n; i++) gw_buf_str(&w->kv, v[i]);
    w->n_kv++;
}

void gw_kv_arr(gw_t *w, const char *key, gguf_vtype_t elem_type, size_t n, const void *data) {
    static const size_t size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    size_t es = (unsigned)elem_type < 13 ? size[elem_type] : 0;
    gw_buf_str(&w->kv, key);
    gw_buf_u32(&w->kv, GGUF_V_ARRAY);
    gw_buf_u32(&w->kv, (uint32_t)elem_type);
    gw_buf_u64(&w->kv, n);
    gw_buf_bytes(&w->kv, data, n * es);
    w->n_kv++;
}

void gw_alignment(gw_t *w, uint32_t alignment) {
    gw_kv_u32(w, "general.alignment", alignment);
    w->alignment = alignment;
}

size_t gw_tensor_bytes(uint32_t type, uint32_t n_dims, const uint64_t *ne) {
    int block = gguf_type_block((gguf_type_t)type);
    if (block == 0 || n_dims == 0 || n_dims > 8) return 0;
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0 || ne[d] > MAX_NATURAL_BYTES || numel > MAX_NATURAL_BYTES / ne[d])
            return 0;
        numel *= ne[d];
    }
    if (ne[0] % (uint64_t)block) return 0;
    uint64_t bytes = numel / (uint64_t)block * gguf_type_block_bytes((gguf_type_t)type);
    return bytes > MAX_NATURAL_BYTES ? 0 : (size_t)bytes;
}

gw_tensor_t *gw_tensor(gw_t *w, const char *name, uint32_t type, uint32_t n_dims,
                       const uint64_t *ne, const void *data) {
    if (w->n_tensors == w->cap_tensors) {
        w->cap_tensors = w->cap_tensors ? w->cap_tensors * 2 : 8;
        w->tensors = xrealloc(w->tensors, (size_t)w->cap_tensors * sizeof *w->tensors);
    }
    gw_tensor_t *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name_len = strlen(name);
    t->name = xrealloc(NULL, t->name_len + 1);
    memcpy(t->name, name, t->name_len + 1);
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < n_dims && d < 8; d++) t->ne[d] = ne[d];
    t->data = data;
    return t;
}

static size_t pad_to(size_t n, uint32_t alignment) {
    if (alignment == 0) return n;
    return (n + alignment - 1) / alignment * alignment;
}

void gw_build(gw_t *w, uint8_t **out, size_t *len) {
    gw_buf_t b = {0};
    gw_buf_bytes(&b, "GGUF", 4);
    gw_buf_u32(&b, w->version);
    gw_buf_u64(&b, w->n_tensors_field >= 0 ? (uint64_t)w->n_tensors_field : (uint64_t)w->n_tensors);
    gw_buf_u64(&b, w->n_kv_field >= 0 ? (uint64_t)w->n_kv_field : (uint64_t)w->n_kv);
    w->kv_pos = b.len;
    gw_buf_bytes(&b, w->kv.p, w->kv.len);
    size_t natural = 0;
    for (int i = 0; i < w->n_tensors; i++) {
        gw_tensor_t *t = &w->tensors[i];
        t->nbytes = gw_tensor_bytes(t->type, t->n_dims, t->ne);
        t->natural = natural;
        natural = pad_to(natural + t->nbytes, w->alignment);
        t->info_pos = b.len;
        gw_buf_strn(&b, t->name, t->name_len);
        gw_buf_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims && d < 8; d++) gw_buf_u64(&b, t->ne[d]);
        gw_buf_u32(&b, t->type);
        gw_buf_u64(&b, t->offset_set ? t->offset : t->natural);
    }
    static const uint8_t zeros[64] = {0};
    while (b.len != pad_to(b.len, w->alignment)) {
        size_t n = pad_to(b.len, w->alignment) - b.len;
        gw_buf_bytes(&b, zeros, n < sizeof zeros ? n : sizeof zeros);
    }
    w->data_pos = b.len;
    for (int i = 0; i < w->n_tensors; i++) {
        const gw_tensor_t *t = &w->tensors[i];
        while (b.len < w->data_pos + t->natural) {
            size_t n = w->data_pos + t->natural - b.len;
            gw_buf_bytes(&b, zeros, n < sizeof zeros ? n : sizeof zeros);
        }
        if (t->data) {
            gw_buf_bytes(&b, t->data, t->nbytes);
        } else {
            for (size_t k = 0; k < t->nbytes; k++) gw_buf_u8(&b, (uint8_t)(k * 31 + 7 + (size_t)i));
        }
    }
    *out = b.p;
    *len = b.len;
}

int gw_write_bytes(const char *path, const void *p, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    int ok = len == 0 || fwrite(p, 1, len, fp) == len;
    if (fclose(fp) != 0) ok = 0;
    return ok ? 0 : -1;
}

int gw_write(gw_t *w, const char *path) {
    uint8_t *p;
    size_t len;
    gw_build(w, &p, &len);
    int rc = gw_write_bytes(path, p, len);
    free(p);
    return rc;
}
