/* engine/safetensors.h - read-only, validated access to .safetensors files.
 *
 * st_open maps the file read-only and validates everything before it returns:
 * header length within the file and under ST_MAX_HEADER, the header is
 * well-formed JSON object of tensors (plus an optional "__metadata__" object of
 * strings), every shape is non-negative with product * dtype size == byte range,
 * every range lies inside the data section, and no two ranges overlap. Any
 * failure returns a negative code and a message naming the file and the tensor.
 * After a successful open, tensor data pointers are safe to read.
 *
 * Dtypes: F32, F16 and BF16 tensors make up the table (st_count/st_get, sorted
 * by name). Other float dtypes (F64, F8_*...) and unknown dtype strings are an
 * error naming the dtype. Integer and BOOL entries are buffers, not weights (HF
 * BERT files hold an I64 "embeddings.position_ids"): they are validated like the
 * rest, then left out of the table, so st_find returns NULL for them.
 * Data is aligned to its dtype only when the writer padded the header (the
 * reference writer and st_write_f32 do); st_to_f32 reads any alignment.
 *
 * Ownership: st_file_t owns the mapping and the tensor table; st_tensor_t
 * pointers and their data stay valid until st_close. All read calls are
 * thread-safe on an open file. The file must not be truncated while it is open
 * (as with any mapping, reading a vanished page faults).
 */
#ifndef SLUICE_SAFETENSORS_H
#define SLUICE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_HEADER (100u * 1024u * 1024u) /* bytes, as the reference implementation */
#define ST_MAX_DIMS 8
#define ST_MAX_NAME 256

typedef enum { ST_F32 = 0, ST_F16 = 1, ST_BF16 = 2 } st_dtype_t;

enum { ST_OK = 0, ST_EIO = -1, ST_EFORMAT = -2, ST_ENOMEM = -3, ST_ENOTFOUND = -4 };

typedef struct {
    char name[ST_MAX_NAME];
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;     /* product of shape (1 for a scalar) */
    const void *data;  /* inside the mapping, read-only */
    size_t nbytes;
} st_tensor_t;

typedef struct st_file st_file_t;

int st_open(const char *path, st_file_t **out, char *err, size_t errlen);
void st_close(st_file_t *f); /* NULL is a no-op */

int st_count(const st_file_t *f);
const st_tensor_t *st_get(const st_file_t *f, int i);
const st_tensor_t *st_find(const st_file_t *f, const char *name); /* NULL if absent */
/* Value of a "__metadata__" key, or NULL. */
const char *st_metadata(const st_file_t *f, const char *key);

/* Convert a tensor to float32 into dst (numel floats). */
void st_to_f32(const st_tensor_t *t, float *dst);
size_t st_dtype_size(st_dtype_t dtype);
const char *st_dtype_name(st_dtype_t dtype);

/* Write a safetensors file of float32 tensors (atomically: temp file + rename).
 * names[i], shapes[i] (ndims[i] dims), data[i]; meta_keys/meta_vals may be NULL. */
int st_write_f32(const char *path, int n, const char *const *names, const int *ndims,
                 const int64_t *const *shapes, const float *const *data, int n_meta,
                 const char *const *meta_keys, const char *const *meta_vals, char *err,
                 size_t errlen);

#endif
