/* engine/gguf.h - read-only, validated access to GGUF (v2/v3) model files.
 *
 * gguf_open maps the file read-only and validates everything before it
 * returns: magic "GGUF", version 2 or 3, tensor and key counts against what the
 * file can hold, every string and array length inside the file (and under
 * GGUF_MAX_STRING / GGUF_MAX_ARRAY), every metadata value type known, keys
 * unique, tensor names unique and non-empty, 1..4 dims each >= 1 with a product
 * that does not overflow, the row length (ne[0]) a multiple of the type's block,
 * tensor types among the supported ones (others are refused naming the tensor
 * and its type), general.alignment (default 32) a power of two, every offset a
 * multiple of it, every tensor's bytes inside the file's data section and no two
 * tensors overlapping. Any failure returns a negative GGUF_E* code and a one-line
 * message naming the file and what was wrong (GGUF_ETYPE: a tensor of a type
 * this engine cannot compute with; GGUF_EFORMAT: anything else malformed;
 * GGUF_EIO: cannot open/map; GGUF_ENOMEM). After a successful open every
 * pointer this module hands out is safe to read. Arrays of arrays are refused;
 * keys must be non-empty and at most GGUF_MAX_KEY bytes; tensor names must not
 * hold a NUL byte.
 *
 * Layout reminder: ne[0] is the fastest-varying dimension (a matrix of N rows of
 * K values has ne = {K, N}); a row of a quantized matrix is ne[0]/32 blocks back
 * to back. Block formats (little-endian, packed):
 *   Q8_0: 34 bytes {fp16 d; int8 qs[32]}                y[j] = d * qs[j]
 *   Q4_0: 18 bytes {fp16 d; uint8 qs[16]}               y[j] = d * ((qs[j] & 15) - 8), y[j+16] = d * ((qs[j] >> 4) - 8)
 *   Q4_1: 20 bytes {fp16 d; fp16 m; uint8 qs[16]}       y[j] = d * (qs[j] & 15) + m,   y[j+16] = d * (qs[j] >> 4) + m
 *
 * Strings in GGUF are length-prefixed, not NUL-terminated: they come back as
 * (pointer, length) into the mapping. Tensor names are copied and terminated.
 *
 * Ownership: gguf_file_t owns the mapping and its tables; every pointer stays
 * valid until gguf_close. All read calls are thread-safe on an open file.
 */
#ifndef SLUICE_GGUF_H
#define SLUICE_GGUF_H

#include <stddef.h>
#include <stdint.h>

#define GGUF_MAX_DIMS 4
#define GGUF_MAX_NAME 256                     /* bytes of a tensor name, as ggml */
#define GGUF_MAX_KEY 65535u                   /* bytes of a metadata key, as the GGUF spec */
#define GGUF_MAX_STRING (64u * 1024u * 1024u) /* bytes of one metadata string */
#define GGUF_MAX_ARRAY (64u * 1024u * 1024u)  /* elements of one metadata array */

enum { GGUF_OK = 0, GGUF_EIO = -1, GGUF_EFORMAT = -2, GGUF_ENOMEM = -3, GGUF_ENOTFOUND = -4, GGUF_ETYPE = -5 };

/* Tensor types: the ggml type ids, as stored in the file. */
typedef enum {
    GGUF_T_F32 = 0,
    GGUF_T_F16 = 1,
    GGUF_T_Q4_0 = 2,
    GGUF_T_Q4_1 = 3,
    GGUF_T_Q8_0 = 8,
    GGUF_T_BF16 = 30,
} gguf_type_t;

/* Metadata value types, as stored in the file. */
typedef enum {
    GGUF_V_UINT8 = 0, GGUF_V_INT8 = 1, GGUF_V_UINT16 = 2, GGUF_V_INT16 = 3,
    GGUF_V_UINT32 = 4, GGUF_V_INT32 = 5, GGUF_V_FLOAT32 = 6, GGUF_V_BOOL = 7,
    GGUF_V_STRING = 8, GGUF_V_ARRAY = 9, GGUF_V_UINT64 = 10, GGUF_V_INT64 = 11,
    GGUF_V_FLOAT64 = 12,
} gguf_vtype_t;

typedef struct {
    char name[GGUF_MAX_NAME];
    gguf_type_t type;
    int n_dims;                 /* 1..4 */
    int64_t ne[GGUF_MAX_DIMS];  /* elements per dim, ne[0] fastest; unused dims are 1 */
    int64_t numel;              /* product of ne */
    const void *data;           /* inside the mapping, aligned to the file's alignment (or
                                   the page size, if that is smaller) */
    size_t nbytes;
} gguf_tensor_t;

typedef struct gguf_file gguf_file_t;

int gguf_open(const char *path, gguf_file_t **out, char *err, size_t errlen);
void gguf_close(gguf_file_t *f); /* NULL is a no-op */

uint32_t gguf_version(const gguf_file_t *f);
size_t gguf_alignment(const gguf_file_t *f);
/* The data section: where it starts in the file (bytes), and the section
 * itself inside the mapping (*len bytes, to the end of the file); every tensor
 * lies inside it. Lets a backend copy or advise all weights at once. */
size_t gguf_data_offset(const gguf_file_t *f);
const void *gguf_data(const gguf_file_t *f, size_t *len);

/* ---- tensors (in file order) ---- */
int gguf_n_tensors(const gguf_file_t *f);
const gguf_tensor_t *gguf_tensor(const gguf_file_t *f, int i);
const gguf_tensor_t *gguf_find_tensor(const gguf_file_t *f, const char *name); /* NULL if absent */

/* ---- metadata ----
 * Scalar getters return GGUF_OK, GGUF_ENOTFOUND (no such key) or GGUF_ETYPE
 * (the key holds another type). gguf_get_int accepts any integer type whose
 * value fits int64; gguf_get_float accepts FLOAT32 and FLOAT64. */
int gguf_n_keys(const gguf_file_t *f);
const char *gguf_key_name(const gguf_file_t *f, int i, size_t *len); /* not NUL-terminated */
int gguf_key_type(const gguf_file_t *f, const char *key, gguf_vtype_t *type);
int gguf_get_int(const gguf_file_t *f, const char *key, int64_t *out);
int gguf_get_float(const gguf_file_t *f, const char *key, double *out);
int gguf_get_bool(const gguf_file_t *f, const char *key, int *out);
int gguf_get_str(const gguf_file_t *f, const char *key, const char **s, size_t *len);

/* Arrays: element type and count. Numeric arrays: gguf_arr_data points at the
 * n packed little-endian elements inside the mapping (possibly unaligned: read
 * them with memcpy). String arrays: gguf_arr_str returns element i. */
int gguf_get_arr(const gguf_file_t *f, const char *key, gguf_vtype_t *elem_type, size_t *n);
const void *gguf_arr_data(const gguf_file_t *f, const char *key);
const char *gguf_arr_str(const gguf_file_t *f, const char *key, size_t i, size_t *len);

/* ---- types ---- */
/* The ggml name of any type id ("Q4_1", also "Q6_K" and other types we do not
 * support), or "type 77" for ids ggml does not name (then in a per-thread
 * buffer, valid until the thread's next call). */
const char *gguf_type_name(gguf_type_t t);
/* Elements per block (32 for Q*, 1 otherwise) and bytes per block (34, 18, 20,
 * 4, 2, 2); both 0 for a type this module does not support. */
int gguf_type_block(gguf_type_t t);
size_t gguf_type_block_bytes(gguf_type_t t);

#endif
