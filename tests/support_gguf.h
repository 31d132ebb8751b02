/* tests/support_gguf.h - a GGUF writer for tests: small valid files built in
 * memory, and hostile ones (every field of the layout can be overridden).
 *
 *   gw_t *w = gw_new();
 *   gw_kv_str(w, "general.architecture", "llama");
 *   gw_kv_u32(w, "llama.block_count", 2);
 *   int64_t ne[2] = {64, 3};
 *   gw_tensor(w, "blk.0.attn_q.weight", GGUF_T_Q4_1, 2, ne, NULL);  // NULL: pattern bytes
 *   gw_write(w, path);   // or gw_build(w, &bytes, &len)
 *   gw_free(w);
 *
 * Layout of what gw_build emits: header (version, tensor and key counts), the
 * metadata entries in the order added, the tensor infos in the order added,
 * zero padding to w->alignment, then each tensor's bytes at its natural offset
 * (the running total, each start padded to w->alignment). A crafted file
 * changes the fields below before building: w->version, w->n_tensors_field /
 * w->n_kv_field (the counts written; -1 = the true ones), a tensor's n_dims,
 * ne, type or offset (offset_set = 1: that number goes into the info; the
 * bytes stay at the natural place). After gw_build, info_pos / data_pos say
 * where each part landed, for byte-level damage.
 *
 * Metadata can be any bytes: gw_kv_raw appends a key and a hand-made value
 * (type and payload), so unknown types and lying lengths are easy to write.
 * All calls abort the test process on out-of-memory (tests only).
 */
#ifndef SLUICE_TESTS_SUPPORT_GGUF_H
#define SLUICE_TESTS_SUPPORT_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

/* A growable byte buffer with little-endian appenders. */
typedef struct {
    uint8_t *p;
    size_t len, cap; /* bytes */
} gw_buf_t;

void gw_buf_bytes(gw_buf_t *b, const void *p, size_t n);
void gw_buf_u8(gw_buf_t *b, uint8_t v);
void gw_buf_u32(gw_buf_t *b, uint32_t v);
void gw_buf_u64(gw_buf_t *b, uint64_t v);
void gw_buf_str(gw_buf_t *b, const char *s);              /* u64 length + bytes */
void gw_buf_strn(gw_buf_t *b, const char *s, size_t len); /* may hold NULs */
void gw_buf_free(gw_buf_t *b);

typedef struct {
    char *name; /* name_len bytes (copied; may hold NULs) */
    size_t name_len;
    uint32_t type;      /* a gguf_type_t, or any id */
    uint32_t n_dims;    /* as written; up to 8 dims are kept in ne */
    uint64_t ne[8];     /* elements per dim, as written */
    uint64_t offset;    /* with offset_set: written instead of the natural offset */
    int offset_set;
    const void *data;   /* the bytes placed in the data section (NULL: a pattern) */
    size_t nbytes;      /* natural byte size (0 if the type or dims make none) */
    size_t natural;     /* set by gw_build: natural offset into the data section */
    size_t info_pos;    /* set by gw_build: file byte where this tensor's info starts */
} gw_tensor_t;

typedef struct {
    uint32_t version;        /* 3 */
    int64_t n_tensors_field; /* count written in the header; -1: the true count */
    int64_t n_kv_field;      /* likewise */
    uint32_t alignment;      /* padding used by gw_build (32); gw_alignment also writes the key */
    gw_buf_t kv;             /* the metadata entries, serialized */
    int n_kv;
    gw_tensor_t *tensors;
    int n_tensors, cap_tensors;
    size_t kv_pos;   /* set by gw_build: file byte where the metadata starts (24) */
    size_t data_pos; /* set by gw_build: file byte where the data section starts */
} gw_t;

gw_t *gw_new(void);
void gw_free(gw_t *w); /* NULL is a no-op */

/* ---- metadata ---- */
void gw_kv_u32(gw_t *w, const char *key, uint32_t v);
void gw_kv_i32(gw_t *w, const char *key, int32_t v);
void gw_kv_u64(gw_t *w, const char *key, uint64_t v);
void gw_kv_f32(gw_t *w, const char *key, float v);
void gw_kv_bool(gw_t *w, const char *key, int v);
void gw_kv_str(gw_t *w, const char *key, const char *v);
void gw_kv_arr_str(gw_t *w, const char *key, size_t n, const char *const *v);
/* n packed elements of elem_type (a numeric gguf_vtype_t) from data. */
void gw_kv_arr(gw_t *w, const char *key, gguf_vtype_t elem_type, size_t n, const void *data);
/* A key, then the value type and raw payload exactly as given. */
void gw_kv_raw(gw_t *w, const char *key, uint32_t type, const void *payload, size_t len);
/* Sets the padding and writes general.alignment (UINT32). */
void gw_alignment(gw_t *w, uint32_t alignment);

/* ---- tensors ---- */
/* Adds a tensor; ne has n_dims entries (n_dims <= 8). data: nbytes of the
 * natural size, or NULL for a deterministic pattern. The returned entry may be
 * edited until gw_build (the pointer is valid until the next gw_tensor). */
gw_tensor_t *gw_tensor(gw_t *w, const char *name, uint32_t type, uint32_t n_dims,
                       const uint64_t *ne, const void *data);

/* The natural byte size of a tensor of this type and these dims, or 0 when the
 * type is unsupported, the row is not whole blocks or the size is over 64 MiB. */
size_t gw_tensor_bytes(uint32_t type, uint32_t n_dims, const uint64_t *ne);

/* ---- output ---- */
/* The whole file in a malloc'd buffer (*out, *len bytes). */
void gw_build(gw_t *w, uint8_t **out, size_t *len);
/* gw_build, then the bytes written to path; 0 or -1 (errno set). */
int gw_write(gw_t *w, const char *path);
/* Write any bytes to path; 0 or -1. */
int gw_write_bytes(const char *path, const void *p, size_t len);

#endif
