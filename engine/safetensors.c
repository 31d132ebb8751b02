/* engine/safetensors.c - the safetensors reader and float32 writer.
 *
 * A .safetensors file is: u64 little-endian header length N, N bytes of JSON
 * ({name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}), then the
 * data section that data_offsets index into. The file may come from anywhere,
 * so st_open checks every number in the header against the file before any
 * tensor pointer is handed out; nothing reads the data section until then.
 *
 * Dtypes: F32, F16 and BF16 become tensors. Float dtypes we cannot convert
 * (F64, F8_*, ...) and unknown dtype strings are an error: they would be
 * weights read wrongly. Integer and BOOL tensors are buffers, not weights
 * (HF BERT files carry an I64 "embeddings.position_ids"), so they are checked
 * like any other (size, range, overlap) and then left out of the table.
 */
#include "engine/safetensors.h"
#include "kernels/util.h"

#include "engine/mapfile.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader assumes a little-endian host"
#endif

#define METADATA_KEY "__metadata__"
#define ERR_NAME_SHOWN 96 /* bytes of a tensor name quoted in a message */

struct st_file {
    char *path;
    void *map;            /* whole file, PROT_READ */
    size_t map_len;       /* bytes */
    st_tensor_t *tensors; /* (n) sorted by name, for st_find */
    int n;
    char **meta_keys; /* (n_meta) */
    char **meta_vals; /* (n_meta) */
    int n_meta;
};

/* ---- dtypes ---- */

enum dtype_use { DT_TENSOR, DT_BUFFER, DT_UNSUPPORTED };

static const struct {
    const char *name;
    size_t size; /* bytes per element; 0 for sub-byte formats */
    enum dtype_use use;
    st_dtype_t dtype; /* for DT_TENSOR */
} DTYPES[] = {
    {"F32", 4, DT_TENSOR, ST_F32},     {"F16", 2, DT_TENSOR, ST_F16},
    {"BF16", 2, DT_TENSOR, ST_BF16},   {"I8", 1, DT_BUFFER, 0},
    {"I16", 2, DT_BUFFER, 0},          {"I32", 4, DT_BUFFER, 0},
    {"I64", 8, DT_BUFFER, 0},          {"U8", 1, DT_BUFFER, 0},
    {"U16", 2, DT_BUFFER, 0},          {"U32", 4, DT_BUFFER, 0},
    {"U64", 8, DT_BUFFER, 0},          {"BOOL", 1, DT_BUFFER, 0},
    {"F64", 8, DT_UNSUPPORTED, 0},     {"C64", 8, DT_UNSUPPORTED, 0},
    {"F8_E4M3", 1, DT_UNSUPPORTED, 0}, {"F8_E5M2", 1, DT_UNSUPPORTED, 0},
    {"F8_E8M0", 1, DT_UNSUPPORTED, 0}, {"F6_E2M3", 0, DT_UNSUPPORTED, 0},
    {"F6_E3M2", 0, DT_UNSUPPORTED, 0}, {"F4", 0, DT_UNSUPPORTED, 0},
};
#define N_DTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

size_t st_dtype_size(st_dtype_t dtype) {
    switch (dtype) {
    case ST_F32: return 4;
    case ST_F16: return 2;
    case ST_BF16: return 2;
    }
    return 0;
}

const char *st_dtype_name(st_dtype_t dtype) {
    switch (dtype) {
    case ST_F32: return "F32";
    case ST_F16: return "F16";
    case ST_BF16: return "BF16";
    }
    return "?";
}

/* ---- errors ---- */

/* "path: tensor 'name': message" (no tensor part when name is NULL). */
__attribute__((format(printf, 6, 7))) static int st_fail(char *err, size_t errlen, int code,
                                                         const char *path, const char *tensor,
                                                         const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    mapfile_vfail(err, errlen, code, path, tensor, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- header validation ---- */

/* One header entry, buffers included, as validated against the file. */
typedef struct {
    const char *name; /* owned by the parsed JSON */
    int dtype_index;  /* into DTYPES */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; /* bytes into the data section */
} st_entry_t;

/* A JSON integer in [0, INT64_MAX] into *v; 0 if it is not one. */
static int json_nonneg_int(const json_t *j, int64_t *v) {
    if (!json_is_integer(j) || json_integer_value(j) < 0) return 0;
    *v = (int64_t)json_integer_value(j);
    return 1;
}

static int parse_shape(const char *path, const char *name, const json_t *shape, st_entry_t *e,
                       char *err, size_t errlen) {
    if (!json_is_array(shape))
        return st_fail(err, errlen, ST_EFORMAT, path, name, "\"shape\" is missing or not an array");
    size_t nd = json_array_size(shape);
    if (nd > ST_MAX_DIMS)
        return st_fail(err, errlen, ST_EFORMAT, path, name, "shape has %zu dims (at most %d)", nd,
                       ST_MAX_DIMS);
    e->ndim = (int)nd;
    e->numel = 1;
    int overflow = 0;
    for (size_t d = 0; d < nd; d++) {
        int64_t v;
        if (!json_nonneg_int(json_array_get(shape, d), &v))
            return st_fail(err, errlen, ST_EFORMAT, path, name,
                           "shape[%zu] is not a non-negative integer", d);
        e->shape[d] = v;
        if (v != 0 && e->numel > INT64_MAX / v)
            overflow = 1;
        else
            e->numel *= v;
    }
    /* A zero dim makes the product 0 even after an overflowing prefix. */
    for (size_t d = 0; d < nd; d++)
        if (e->shape[d] == 0) overflow = 0, e->numel = 0;
    if (overflow) return st_fail(err, errlen, ST_EFORMAT, path, name, "shape product overflows");
    return ST_OK;
}

static int parse_entry(const char *path, const char *name, const json_t *info, size_t data_len,
                       st_entry_t *e, char *err, size_t errlen) {
    e->name = name;
    if (strlen(name) >= ST_MAX_NAME)
        return st_fail(err, errlen, ST_EFORMAT, path, name, "name is %zu bytes (at most %d)",
                       strlen(name), ST_MAX_NAME - 1);
    if (!json_is_object(info))
        return st_fail(err, errlen, ST_EFORMAT, path, name, "entry is not a JSON object");

    const json_t *dt = json_object_get(info, "dtype");
    if (!json_is_string(dt))
        return st_fail(err, errlen, ST_EFORMAT, path, name, "\"dtype\" is missing or not a string");
    const char *dts = json_string_value(dt);
    e->dtype_index = -1;
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(dts, DTYPES[i].name) == 0) e->dtype_index = i;
    if (e->dtype_index < 0) {
        char shown[ERR_NAME_SHOWN + 4];
        mapfile_shown_name(dts, strlen(dts), shown, sizeof shown);
        return st_fail(err, errlen, ST_EFORMAT, path, name, "unknown dtype \"%s\"", shown);
    }
    if (DTYPES[e->dtype_index].use == DT_UNSUPPORTED)
        return st_fail(err, errlen, ST_EFORMAT, path, name,
                       "dtype %s is not supported (F32, F16 and BF16 are)", dts);

    int rc = parse_shape(path, name, json_object_get(info, "shape"), e, err, errlen);
    if (rc) return rc;
    size_t esize = DTYPES[e->dtype_index].size;
    if ((uint64_t)e->numel > (uint64_t)INT64_MAX / esize)
        return st_fail(err, errlen, ST_EFORMAT, path, name, "byte size overflows");
    uint64_t nbytes = (uint64_t)e->numel * esize;

    const json_t *off = json_object_get(info, "data_offsets");
    int64_t b, en;
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !json_nonneg_int(json_array_get(off, 0), &b) ||
        !json_nonneg_int(json_array_get(off, 1), &en))
        return st_fail(err, errlen, ST_EFORMAT, path, name,
                       "\"data_offsets\" is missing or not [begin, end] of non-negative integers");
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    if (e->begin > e->end)
        return st_fail(err, errlen, ST_EFORMAT, path, name, "data_offsets begin %llu > end %llu",
                       (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_len)
        return st_fail(
            err, errlen, ST_EFORMAT, path, name,
            "data_offsets end %llu is past the data section (%zu bytes; file truncated?)",
            (unsigned long long)e->end, data_len);
    if (e->end - e->begin != nbytes)
        return st_fail(err, errlen, ST_EFORMAT, path, name,
                       "data_offsets cover %llu bytes but %s shape needs %llu",
                       (unsigned long long)(e->end - e->begin), dts, (unsigned long long)nbytes);
    return ST_OK;
}

static int cmp_entry_offset(const void *a, const void *b) {
    const st_entry_t *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Two non-empty ranges may not share a byte; empty ranges occupy none. */
static int check_overlaps(const char *path, st_entry_t *entries, int n, char *err, size_t errlen) {
    qsort(entries, (size_t)n, sizeof *entries, cmp_entry_offset);
    const st_entry_t *last = NULL; /* non-empty entry reaching furthest so far */
    for (int i = 0; i < n; i++) {
        if (entries[i].begin == entries[i].end) continue;
        if (last && entries[i].begin < last->end) {
            char other[ERR_NAME_SHOWN + 4];
            mapfile_shown_name(last->name, strlen(last->name), other, sizeof other);
            return st_fail(err, errlen, ST_EFORMAT, path, entries[i].name,
                           "data [%llu, %llu) overlaps tensor '%s' [%llu, %llu)",
                           (unsigned long long)entries[i].begin, (unsigned long long)entries[i].end,
                           other, (unsigned long long)last->begin, (unsigned long long)last->end);
        }
        if (!last || entries[i].end > last->end) last = &entries[i];
    }
    return ST_OK;
}

static int parse_metadata(st_file_t *f, const json_t *meta, char *err, size_t errlen) {
    if (!json_is_object(meta))
        return st_fail(err, errlen, ST_EFORMAT, f->path, NULL, "\"%s\" is not a JSON object",
                       METADATA_KEY);
    size_t n = json_object_size(meta);
    f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
    f->meta_vals = calloc(n ? n : 1, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals)
        return st_fail(err, errlen, ST_ENOMEM, f->path, NULL, "out of memory for metadata");
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)meta, key, val) {
        if (!json_is_string(val)) {
            char shown[ERR_NAME_SHOWN + 4];
            mapfile_shown_name(key, strlen(key), shown, sizeof shown);
            return st_fail(err, errlen, ST_EFORMAT, f->path, NULL,
                           "\"%s\" value of key '%s' is not a string", METADATA_KEY, shown);
        }
        f->meta_keys[f->n_meta] = strdup(key);
        f->meta_vals[f->n_meta] = strdup(json_string_value(val));
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_vals[f->n_meta - 1])
            return st_fail(err, errlen, ST_ENOMEM, f->path, NULL, "out of memory for metadata");
    }
    return ST_OK;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const st_tensor_t *)a)->name, ((const st_tensor_t *)b)->name);
}

/* Parse and validate the header, then build the tensor table. */
static int parse_header(st_file_t *f, const char *header, size_t header_len, const uint8_t *data,
                        size_t data_len, char *err, size_t errlen) {
    json_error_t je;
    json_t *root = json_loadb(header, header_len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        const char *what = json_error_code(&je) == json_error_duplicate_key
                               ? "duplicate tensor name"
                               : "header is not valid JSON";
        return st_fail(err, errlen, ST_EFORMAT, f->path, NULL, "%s: %s (header byte %d)", what,
                       je.text, je.position);
    }
    int rc = ST_OK;
    st_entry_t *entries = NULL;
    if (!json_is_object(root)) {
        rc = st_fail(err, errlen, ST_EFORMAT, f->path, NULL, "header is JSON but not an object");
        goto done;
    }
    size_t n_keys = json_object_size(root);
    entries = calloc(n_keys ? n_keys : 1, sizeof *entries);
    f->tensors = calloc(n_keys ? n_keys : 1, sizeof *f->tensors);
    if (!entries || !f->tensors) {
        rc = st_fail(err, errlen, ST_ENOMEM, f->path, NULL, "out of memory for %zu header entries",
                     n_keys);
        goto done;
    }
    int n = 0;
    const char *key;
    const json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, METADATA_KEY) == 0)
            rc = parse_metadata(f, val, err, errlen);
        else
            rc = parse_entry(f->path, key, val, data_len, &entries[n++], err, errlen);
        if (rc) goto done;
    }
    rc = check_overlaps(f->path, entries, n, err, errlen);
    if (rc) goto done;

    for (int i = 0; i < n; i++) {
        const st_entry_t *e = &entries[i];
        if (DTYPES[e->dtype_index].use != DT_TENSOR) continue;
        st_tensor_t *t = &f->tensors[f->n++];
        strcpy(t->name, e->name); /* length checked in parse_entry */
        t->dtype = DTYPES[e->dtype_index].dtype;
        t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof t->shape);
        t->numel = e->numel;
        t->data = data + e->begin;
        t->nbytes = (size_t)(e->end - e->begin);
    }
    qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, cmp_tensor_name);
done:
    free(entries);
    json_decref(root);
    return rc;
}

/* ---- open / close / lookups ---- */

int st_open(const char *path, st_file_t **out, char *err, size_t errlen) {
    if (out) *out = NULL;
    if (!path || !out)
        return st_fail(err, errlen, ST_EIO, path ? path : "(null)", NULL,
                       "st_open needs a path and an output pointer");
    int rc = ST_OK;
    st_file_t *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return st_fail(err, errlen, ST_ENOMEM, path, NULL, "out of memory");
    }
    void *map;
    rc = mapfile_open(path, 8, "8-byte header length", &map, &f->map_len, err, errlen);
    if (rc) {
        rc = rc == MAPFILE_ESHORT ? ST_EFORMAT : ST_EIO;
        goto fail;
    }
    f->map = map;

    uint64_t header_len;
    memcpy(&header_len, f->map, 8); /* little-endian host, checked at compile time */
    if (header_len > ST_MAX_HEADER) {
        rc = st_fail(err, errlen, ST_EFORMAT, path, NULL,
                     "header length %llu is over the limit of %u bytes",
                     (unsigned long long)header_len, ST_MAX_HEADER);
        goto fail;
    }
    if (header_len > f->map_len - 8) {
        rc = st_fail(err, errlen, ST_EFORMAT, path, NULL,
                     "header length %llu is past the end of the %zu-byte file",
                     (unsigned long long)header_len, f->map_len);
        goto fail;
    }
    const uint8_t *base = f->map;
    size_t data_off = 8 + (size_t)header_len;
    rc = parse_header(f, (const char *)base + 8, (size_t)header_len, base + data_off,
                      f->map_len - data_off, err, errlen);
    if (rc) goto fail;
    *out = f;
    return ST_OK;
fail:
    st_close(f);
    return rc;
}

void st_close(st_file_t *f) {
    if (!f) return;
    mapfile_close(f->map, f->map_len);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->tensors);
    free(f->path);
    free(f);
}

int st_count(const st_file_t *f) { return f ? f->n : 0; }

const st_tensor_t *st_get(const st_file_t *f, int i) {
    return (f && i >= 0 && i < f->n) ? &f->tensors[i] : NULL;
}

const st_tensor_t *st_find(const st_file_t *f, const char *name) {
    if (!f || !name || strlen(name) >= ST_MAX_NAME) return NULL;
    st_tensor_t key;
    strcpy(key.name, name);
    return bsearch(&key, f->tensors, (size_t)f->n, sizeof key, cmp_tensor_name);
}

const char *st_metadata(const st_file_t *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

/* ---- conversion ---- */

/* IEEE half to single, exactly: every half value is a float value. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in float */
        float v = (float)mant * 0x1p-24f;
        memcpy(&bits, &v, 4);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13); /* inf, or NaN with its payload */
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

void st_to_f32(const st_tensor_t *t, float *dst) {
    if (!t || !dst || t->numel <= 0) return;
    const uint8_t *src = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case ST_F32: memcpy(dst, src, n * 4); break;
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2); /* data may be unaligned */
            dst[i] = f16_to_f32(h);
        }
        break;
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&dst[i], &bits, 4);
        }
        break;
    }
}

/* ---- writer ---- */

static int write_check_inputs(const char *path, int n, const char *const *names, const int *ndims,
                              const int64_t *const *shapes, const float *const *data, int n_meta,
                              const char *const *meta_keys, const char *const *meta_vals, char *err,
                              size_t errlen) {
    if (n < 0 || n_meta < 0 || (n > 0 && (!names || !ndims || !shapes || !data)) ||
        (n_meta > 0 && (!meta_keys || !meta_vals)))
        return st_fail(err, errlen, ST_EFORMAT, path, NULL, "bad arguments to st_write_f32");
    for (int i = 0; i < n; i++) {
        const char *name = names[i];
        if (!name) return st_fail(err, errlen, ST_EFORMAT, path, NULL, "tensor %d has no name", i);
        if (strlen(name) >= ST_MAX_NAME)
            return st_fail(err, errlen, ST_EFORMAT, path, name, "name is %zu bytes (at most %d)",
                           strlen(name), ST_MAX_NAME - 1);
        if (strcmp(name, METADATA_KEY) == 0)
            return st_fail(err, errlen, ST_EFORMAT, path, name, "name is reserved");
        for (int j = 0; j < i; j++)
            if (strcmp(names[j], name) == 0)
                return st_fail(err, errlen, ST_EFORMAT, path, name, "duplicate tensor name");
        if (ndims[i] < 0 || ndims[i] > ST_MAX_DIMS || (ndims[i] > 0 && !shapes[i]))
            return st_fail(err, errlen, ST_EFORMAT, path, name, "ndim %d is not in [0, %d]",
                           ndims[i], ST_MAX_DIMS);
        int64_t numel = 1;
        for (int d = 0; d < ndims[i]; d++) {
            int64_t v = shapes[i][d];
            if (v < 0)
                return st_fail(err, errlen, ST_EFORMAT, path, name, "shape[%d] is negative", d);
            if (v != 0 && numel > INT64_MAX / 4 / v)
                return st_fail(err, errlen, ST_EFORMAT, path, name, "shape product overflows");
            numel *= v;
        }
        if (numel > 0 && !data[i])
            return st_fail(err, errlen, ST_EFORMAT, path, name, "data is NULL");
    }
    for (int i = 0; i < n_meta; i++)
        if (!meta_keys[i] || !meta_vals[i])
            return st_fail(err, errlen, ST_EFORMAT, path, NULL, "metadata entry %d is NULL", i);
    return ST_OK;
}

static int64_t numel_of(int ndim, const int64_t *shape) {
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= shape[d];
    return numel;
}

/* The JSON header in tensor order, data packed back to back from offset 0. */
static int build_header(const char *path, int n, const char *const *names, const int *ndims,
                        const int64_t *const *shapes, int n_meta, const char *const *meta_keys,
                        const char *const *meta_vals, char **out, char *err, size_t errlen) {
    json_t *root = json_object();
    int rc = ST_OK;
    if (!root) return st_fail(err, errlen, ST_ENOMEM, path, NULL, "out of memory");
    if (n_meta > 0) {
        json_t *meta = json_object();
        if (json_object_set_new(root, METADATA_KEY, meta) != 0) goto nomem;
        for (int i = 0; i < n_meta; i++) {
            json_t *v = json_string(meta_vals[i]);
            if (!v || json_object_set_new(meta, meta_keys[i], v) != 0) {
                rc = st_fail(err, errlen, ST_EFORMAT, path, NULL,
                             "metadata entry %d is not valid UTF-8", i);
                goto done;
            }
        }
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        uint64_t nbytes = (uint64_t)numel_of(ndims[i], shapes[i]) * 4;
        json_t *shape = json_array(), *info = json_object();
        if (!info || json_object_set_new(info, "shape", shape) != 0) {
            json_decref(info);
            goto nomem;
        }
        for (int d = 0; d < ndims[i]; d++)
            if (json_array_append_new(shape, json_integer(shapes[i][d])) != 0) {
                json_decref(info);
                goto nomem;
            }
        if (json_object_set_new(info, "dtype", json_string("F32")) != 0 ||
            json_object_set_new(
                info, "data_offsets",
                json_pack("[II]", (json_int_t)offset, (json_int_t)(offset + nbytes))) != 0) {
            json_decref(info);
            goto nomem;
        }
        if (json_object_set_new(root, names[i], info) != 0) {
            rc = st_fail(err, errlen, ST_EFORMAT, path, names[i], "name is not valid UTF-8");
            goto done;
        }
        offset += nbytes;
    }
    *out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!*out) goto nomem;
    goto done;
nomem:
    rc = st_fail(err, errlen, ST_ENOMEM, path, NULL, "out of memory building the header");
done:
    json_decref(root);
    return rc;
}

int st_write_f32(const char *path, int n, const char *const *names, const int *ndims,
                 const int64_t *const *shapes, const float *const *data, int n_meta,
                 const char *const *meta_keys, const char *const *meta_vals, char *err,
                 size_t errlen) {
    if (!path) return st_fail(err, errlen, ST_EIO, "(null)", NULL, "st_write_f32 needs a path");
    int rc = write_check_inputs(path, n, names, ndims, shapes, data, n_meta, meta_keys, meta_vals,
                                err, errlen);
    if (rc) return rc;
    char *header = NULL, *tmp = NULL;
    FILE *fp = NULL;
    rc = build_header(path, n, names, ndims, shapes, n_meta, meta_keys, meta_vals, &header, err,
                      errlen);
    if (rc) return rc;

    /* Pad with spaces (valid JSON) so the data section starts 8-byte aligned. */
    size_t hlen = strlen(header), pad = (8 - hlen % 8) % 8;
    uint64_t total = hlen + pad;
    static const char spaces[] = "        ";

    size_t tmp_len = strlen(path) + sizeof ".tmp.XXXXXX";
    tmp = malloc(tmp_len);
    if (!tmp) {
        rc = st_fail(err, errlen, ST_ENOMEM, path, NULL, "out of memory");
        goto done;
    }
    snprintf(tmp, tmp_len, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        rc = st_fail(err, errlen, ST_EIO, path, NULL, "cannot create a temporary file: %s",
                     strerror(errno));
        free(tmp);
        tmp = NULL;
        goto done;
    }
    if (fchmod(fd, 0644) != 0 || !(fp = fdopen(fd, "wb"))) {
        rc = st_fail(err, errlen, ST_EIO, path, NULL, "cannot set up %s: %s", tmp, strerror(errno));
        close(fd);
        goto done;
    }
    int ok = fwrite(&total, 8, 1, fp) == 1 && fwrite(header, 1, hlen, fp) == hlen &&
             fwrite(spaces, 1, pad, fp) == pad;
    for (int i = 0; ok && i < n; i++) {
        size_t count = (size_t)numel_of(ndims[i], shapes[i]);
        ok = count == 0 || fwrite(data[i], 4, count, fp) == count;
    }
    ok = ok && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int close_failed = fclose(fp) != 0;
    fp = NULL;
    if (!ok || close_failed) {
        rc = st_fail(err, errlen, ST_EIO, path, NULL, "cannot write %s: %s", tmp, strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        rc = st_fail(err, errlen, ST_EIO, path, NULL, "cannot rename %s into place: %s", tmp,
                     strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL;
done:
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(header);
    return rc;
}
