/* engine/gguf.c - the GGUF reader.
 *
 * A GGUF file is: "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv metadata
 * entries (string key, u32 value type, value); n_tensors tensor infos (string
 * name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset); padding to
 * general.alignment; the data section the offsets index into. Strings are a
 * u64 length and that many bytes; arrays a u32 element type, a u64 count and
 * the elements. Everything is little-endian.
 *
 * The file may come from anywhere, so every read goes through a cursor that
 * checks the bytes are there, every count is weighed against the bytes left
 * before anything is allocated for it, and tables grow only as entries are
 * actually parsed: a lying count costs a message, not memory. Nothing reads
 * the data section; gguf_open hands out no pointer until all checks passed.
 */
#include "engine/gguf.h"

#include "engine/mapfile.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "GGUF is little-endian; this reader assumes a little-endian host"
#endif

#define GGUF_MAGIC "GGUF"
#define DEFAULT_ALIGNMENT 32
#define ALIGNMENT_KEY "general.alignment"
#define ERR_NAME_SHOWN 96 /* bytes of a key or tensor name quoted in a message */
#define HEADER_BYTES 24   /* magic, version, n_tensors, n_kv */
/* Fewest bytes one entry can take, to weigh a count against the file:
 * key length, 1 key byte, value type, a 1-byte value; name length, 1 name
 * byte, n_dims, one dim, type, offset. */
#define MIN_KV_BYTES 14u
#define MIN_TENSOR_BYTES 33u

typedef struct {
    const char *key; /* into the mapping, key_len bytes, not terminated */
    size_t key_len;
    gguf_vtype_t type;
    gguf_vtype_t elem_type; /* arrays */
    size_t n;               /* arrays: elements; strings: bytes */
    const uint8_t *val;     /* scalar value, string bytes, or first array element */
    const uint8_t **strs;   /* string arrays: (n) pointers at each element's u64 length */
} gguf_kv_t;

struct gguf_file {
    char *path;
    void *map;      /* whole file, PROT_READ */
    size_t map_len; /* bytes */
    uint32_t version;
    size_t alignment;   /* bytes, a power of two */
    size_t data_offset; /* bytes from the file start to the data section */
    gguf_kv_t *kv;      /* (n_kv) in file order */
    int *kv_sorted;     /* (n_kv) indices into kv, by key bytes */
    int n_kv;
    gguf_tensor_t *tensors; /* (n_tensors) in file order */
    int *t_sorted;          /* (n_tensors) indices into tensors, by name */
    int n_tensors;
};

/* ---- types ---- */

/* Every ggml type id we know a name for (retired ids left NULL), so a refusal
 * can say "Q6_K" rather than a number. block == 0: not supported here. */
static const struct {
    const char *name;
    int block;          /* elements per block */
    size_t block_bytes; /* bytes per block */
} TTYPES[] = {
    [0] = {"F32", 1, 4},     [1] = {"F16", 1, 2},      [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},  [6] = {"Q5_0", 0, 0},     [7] = {"Q5_1", 0, 0},
    [8] = {"Q8_0", 32, 34},  [9] = {"Q8_1", 0, 0},     [10] = {"Q2_K", 0, 0},
    [11] = {"Q3_K", 0, 0},   [12] = {"Q4_K", 0, 0},    [13] = {"Q5_K", 0, 0},
    [14] = {"Q6_K", 0, 0},   [15] = {"Q8_K", 0, 0},    [16] = {"IQ2_XXS", 0, 0},
    [17] = {"IQ2_XS", 0, 0}, [18] = {"IQ3_XXS", 0, 0}, [19] = {"IQ1_S", 0, 0},
    [20] = {"IQ4_NL", 0, 0}, [21] = {"IQ3_S", 0, 0},   [22] = {"IQ2_S", 0, 0},
    [23] = {"IQ4_XS", 0, 0}, [24] = {"I8", 0, 0},      [25] = {"I16", 0, 0},
    [26] = {"I32", 0, 0},    [27] = {"I64", 0, 0},     [28] = {"F64", 0, 0},
    [29] = {"IQ1_M", 0, 0},  [30] = {"BF16", 1, 2},    [34] = {"TQ1_0", 0, 0},
    [35] = {"TQ2_0", 0, 0},  [39] = {"MXFP4", 0, 0},
};
#define N_TTYPES ((unsigned)(sizeof TTYPES / sizeof TTYPES[0]))

const char *gguf_type_name(gguf_type_t t) {
    if ((unsigned)t < N_TTYPES && TTYPES[t].name) return TTYPES[t].name;
    static _Thread_local char buf[24]; /* per thread: the call stays thread-safe */
    snprintf(buf, sizeof buf, "type %u", (unsigned)t);
    return buf;
}

int gguf_type_block(gguf_type_t t) { return (unsigned)t < N_TTYPES ? TTYPES[t].block : 0; }

size_t gguf_type_block_bytes(gguf_type_t t) {
    return (unsigned)t < N_TTYPES ? TTYPES[t].block_bytes : 0;
}

static const char *const VTYPE_NAMES[] = {"UINT8",   "INT8",   "UINT16", "INT16", "UINT32",
                                          "INT32",   "FLOAT32", "BOOL",  "STRING", "ARRAY",
                                          "UINT64",  "INT64",  "FLOAT64"};
static const size_t VTYPE_SIZE[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8}; /* 0: not fixed */
#define N_VTYPES 13u

static const char *vtype_name(uint32_t t) { return t < N_VTYPES ? VTYPE_NAMES[t] : "?"; }

/* ---- errors ---- */

/* "path: message" */
__attribute__((format(printf, 5, 6))) static int gguf_fail(char *err, size_t errlen, int code,
                                                           const char *path, const char *fmt,
                                                           ...) {
    va_list ap;
    va_start(ap, fmt);
    mapfile_vfail(err, errlen, code, path, NULL, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- the cursor ---- */

typedef struct {
    const uint8_t *base;
    size_t len, pos; /* bytes */
    const char *path;
    char *err;
    size_t errlen;
    char what[ERR_NAME_SHOWN + 64]; /* the part being read, for messages */
} reader_t;

static int rd_need(reader_t *r, uint64_t n, const char *field) {
    if (n <= r->len - r->pos) return GGUF_OK;
    return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path,
                     "%s: %s needs %llu bytes at byte %zu but the file ends at %zu (truncated?)",
                     r->what, field, (unsigned long long)n, r->pos, r->len);
}

static int rd_u32(reader_t *r, uint32_t *v, const char *field) {
    int rc = rd_need(r, 4, field);
    if (rc) return rc;
    memcpy(v, r->base + r->pos, 4);
    r->pos += 4;
    return GGUF_OK;
}

static int rd_u64(reader_t *r, uint64_t *v, const char *field) {
    int rc = rd_need(r, 8, field);
    if (rc) return rc;
    memcpy(v, r->base + r->pos, 8);
    r->pos += 8;
    return GGUF_OK;
}

/* A length-prefixed string of at most max bytes, left in the mapping. */
static int rd_str(reader_t *r, uint64_t max, const char **s, size_t *len, const char *field) {
    uint64_t n;
    int rc = rd_u64(r, &n, field);
    if (rc) return rc;
    if (n > max)
        return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path,
                         "%s: %s length %llu is over the limit of %llu bytes", r->what, field,
                         (unsigned long long)n, (unsigned long long)max);
    if ((rc = rd_need(r, n, field))) return rc;
    *s = (const char *)r->base + r->pos;
    *len = (size_t)n;
    r->pos += (size_t)n;
    return GGUF_OK;
}

/* Grow *arr (of elem bytes each, *cap of them) so index n fits. */
static int grow(void **arr, int *cap, int n, size_t elem) {
    if (n < *cap) return 0;
    int next = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)next * elem);
    if (!p) return -1;
    *arr = p;
    *cap = next;
    return 0;
}

/* ---- metadata ---- */

static int parse_value(reader_t *r, gguf_kv_t *kv) {
    uint32_t type;
    int rc = rd_u32(r, &type, "value type");
    if (rc) return rc;
    if (type >= N_VTYPES)
        return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path, "%s: unknown value type %u",
                         r->what, type);
    kv->type = (gguf_vtype_t)type;
    if (type == GGUF_V_STRING) {
        const char *s;
        if ((rc = rd_str(r, GGUF_MAX_STRING, &s, &kv->n, "string"))) return rc;
        kv->val = (const uint8_t *)s;
        return GGUF_OK;
    }
    if (type != GGUF_V_ARRAY) {
        if ((rc = rd_need(r, VTYPE_SIZE[type], "value"))) return rc;
        kv->val = r->base + r->pos;
        r->pos += VTYPE_SIZE[type];
        return GGUF_OK;
    }
    uint32_t et;
    uint64_t n;
    if ((rc = rd_u32(r, &et, "array element type"))) return rc;
    if (et >= N_VTYPES)
        return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path,
                         "%s: unknown array element type %u", r->what, et);
    if (et == GGUF_V_ARRAY)
        return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path,
                         "%s: arrays of arrays are not supported", r->what);
    if ((rc = rd_u64(r, &n, "array length"))) return rc;
    if (n > GGUF_MAX_ARRAY)
        return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path,
                         "%s: array of %llu elements is over the limit of %u", r->what,
                         (unsigned long long)n, GGUF_MAX_ARRAY);
    kv->elem_type = (gguf_vtype_t)et;
    kv->n = (size_t)n;
    kv->val = r->base + r->pos;
    if (et != GGUF_V_STRING) {
        if ((rc = rd_need(r, n * VTYPE_SIZE[et], "array data"))) return rc; /* n <= 2^26 */
        r->pos += (size_t)n * VTYPE_SIZE[et];
        return GGUF_OK;
    }
    /* Each string takes at least its 8-byte length: a count the rest of the
     * file cannot hold is refused before its table is allocated. */
    if (n > (r->len - r->pos) / 8)
        return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path,
                         "%s: array of %llu strings cannot fit in the %zu bytes left", r->what,
                         (unsigned long long)n, r->len - r->pos);
    kv->strs = malloc((n ? n : 1) * sizeof *kv->strs);
    if (!kv->strs)
        return gguf_fail(r->err, r->errlen, GGUF_ENOMEM, r->path,
                         "%s: out of memory for %llu strings", r->what, (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        kv->strs[i] = r->base + r->pos;
        uint64_t len;
        if (r->len - r->pos >= 8) memcpy(&len, r->base + r->pos, 8);
        if (r->len - r->pos < 8 || len > GGUF_MAX_STRING || len > r->len - r->pos - 8) {
            /* the field named only now: a vocabulary has ~10^5 strings */
            char field[48];
            snprintf(field, sizeof field, "string %llu", (unsigned long long)i);
            const char *s;
            size_t slen;
            rc = rd_str(r, GGUF_MAX_STRING, &s, &slen, field);
            return rc ? rc : GGUF_EFORMAT; /* rd_str sees the same bytes and fails */
        }
        r->pos += 8 + (size_t)len;
    }
    return GGUF_OK;
}

static int cmp_bytes(const char *a, size_t alen, const char *b, size_t blen) {
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c) return c;
    return (alen > blen) - (alen < blen);
}

static int cmp_kv_index(const void *a, const void *b, void *ctx) {
    const gguf_kv_t *kv = ctx, *x = &kv[*(const int *)a], *y = &kv[*(const int *)b];
    return cmp_bytes(x->key, x->key_len, y->key, y->key_len);
}

static int parse_metadata(gguf_file_t *f, reader_t *r, uint64_t n_kv) {
    int cap = 0, rc;
    for (uint64_t i = 0; i < n_kv; i++) {
        snprintf(r->what, sizeof r->what, "metadata entry %llu", (unsigned long long)i);
        if (grow((void **)&f->kv, &cap, f->n_kv, sizeof *f->kv))
            return gguf_fail(r->err, r->errlen, GGUF_ENOMEM, r->path, "out of memory");
        gguf_kv_t *kv = &f->kv[f->n_kv];
        memset(kv, 0, sizeof *kv);
        f->n_kv++; /* counted now so close frees its string table */
        if ((rc = rd_str(r, GGUF_MAX_KEY, &kv->key, &kv->key_len, "key"))) return rc;
        if (kv->key_len == 0)
            return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path, "%s: empty key", r->what);
        char shown[ERR_NAME_SHOWN + 4];
        mapfile_shown_name(kv->key, kv->key_len, shown, sizeof shown);
        snprintf(r->what, sizeof r->what, "metadata key '%s'", shown);
        if ((rc = parse_value(r, kv))) return rc;
    }
    return GGUF_OK;
}

/* Sorted index for lookups; equal neighbours are duplicate keys. */
static int index_metadata(gguf_file_t *f, char *err, size_t errlen) {
    f->kv_sorted = malloc((size_t)(f->n_kv ? f->n_kv : 1) * sizeof *f->kv_sorted);
    if (!f->kv_sorted) return gguf_fail(err, errlen, GGUF_ENOMEM, f->path, "out of memory");
    for (int i = 0; i < f->n_kv; i++) f->kv_sorted[i] = i;
    qsort_r(f->kv_sorted, (size_t)f->n_kv, sizeof *f->kv_sorted, cmp_kv_index, f->kv);
    for (int i = 1; i < f->n_kv; i++) {
        const gguf_kv_t *a = &f->kv[f->kv_sorted[i - 1]], *b = &f->kv[f->kv_sorted[i]];
        if (cmp_bytes(a->key, a->key_len, b->key, b->key_len) == 0) {
            char shown[ERR_NAME_SHOWN + 4];
            mapfile_shown_name(a->key, a->key_len, shown, sizeof shown);
            return gguf_fail(err, errlen, GGUF_EFORMAT, f->path, "duplicate metadata key '%s'",
                             shown);
        }
    }
    return GGUF_OK;
}

/* Binary search of a sorted index; name_at gives entry i's name. */
static int find_sorted(const gguf_file_t *f, const int *sorted, int n,
                       const char *(*name_at)(const gguf_file_t *, int, size_t *),
                       const char *key) {
    size_t len = strlen(key);
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        size_t mlen = 0;
        const char *name = name_at(f, sorted[mid], &mlen);
        int c = cmp_bytes(key, len, name, mlen);
        if (c == 0) return sorted[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

static const gguf_kv_t *find_kv(const gguf_file_t *f, const char *key) {
    if (!f || !key) return NULL;
    int i = find_sorted(f, f->kv_sorted, f->n_kv, gguf_key_name, key);
    return i < 0 ? NULL : &f->kv[i];
}

static int read_alignment(gguf_file_t *f, char *err, size_t errlen) {
    f->alignment = DEFAULT_ALIGNMENT;
    const gguf_kv_t *kv = find_kv(f, ALIGNMENT_KEY);
    if (!kv) return GGUF_OK;
    if (kv->type != GGUF_V_UINT32)
        return gguf_fail(err, errlen, GGUF_EFORMAT, f->path, "%s is %s, not UINT32", ALIGNMENT_KEY,
                         vtype_name(kv->type));
    uint32_t a;
    memcpy(&a, kv->val, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return gguf_fail(err, errlen, GGUF_EFORMAT, f->path, "%s %u is not a power of two",
                         ALIGNMENT_KEY, a);
    f->alignment = a;
    return GGUF_OK;
}

/* ---- tensors ---- */

typedef struct {
    uint64_t offset; /* bytes into the data section */
    size_t nbytes;
} extent_t;

static int parse_tensor_info(gguf_file_t *f, reader_t *r, gguf_tensor_t *t, uint64_t *offset) {
    const char *name;
    size_t len;
    int rc = rd_str(r, GGUF_MAX_NAME - 1, &name, &len, "name");
    if (rc) return rc;
    if (len == 0)
        return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path, "%s: empty name", r->what);
    char shown[ERR_NAME_SHOWN + 4];
    mapfile_shown_name(name, len, shown, sizeof shown);
    if (memchr(name, 0, len))
        return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path,
                         "%s: name '%s' holds a NUL byte", r->what, shown);
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    snprintf(r->what, sizeof r->what, "tensor '%s'", shown);

    uint32_t nd;
    if ((rc = rd_u32(r, &nd, "n_dims"))) return rc;
    if (nd < 1 || nd > GGUF_MAX_DIMS)
        return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path, "%s: %u dims (1 to %d allowed)",
                         r->what, nd, GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    t->numel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        if ((rc = rd_u64(r, &ne, "dim"))) return rc;
        if (ne == 0 || ne > INT64_MAX)
            return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path,
                             "%s: ne[%u] = %llu (must be 1 to 2^63-1)", r->what, d,
                             (unsigned long long)ne);
        if ((uint64_t)t->numel > (uint64_t)INT64_MAX / ne)
            return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path,
                             "%s: element count overflows at ne[%u] = %llu", r->what, d,
                             (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        t->numel *= (int64_t)ne;
    }
    uint32_t type;
    if ((rc = rd_u32(r, &type, "type"))) return rc;
    t->type = (gguf_type_t)type;
    int block = gguf_type_block(t->type);
    if (block == 0) {
        const char *name = gguf_type_name(t->type); /* "type 77" for ids ggml does not name */
        return gguf_fail(r->err, r->errlen, GGUF_ETYPE, r->path,
                         "%s: %s%s is not supported (F32, F16, BF16, Q8_0, Q4_0 and Q4_1 are)",
                         r->what, strncmp(name, "type ", 5) ? "type " : "", name);
    }
    if (t->ne[0] % block != 0)
        return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path,
                         "%s: row length ne[0] = %lld is not a multiple of the %s block of %d",
                         r->what, (long long)t->ne[0], gguf_type_name(t->type), block);
    uint64_t blocks = (uint64_t)t->numel / (uint64_t)block;
    size_t bb = gguf_type_block_bytes(t->type);
    if (blocks > (uint64_t)INT64_MAX / bb || blocks > SIZE_MAX / bb)
        return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path, "%s: byte size overflows",
                         r->what);
    t->nbytes = (size_t)(blocks * bb);
    if ((rc = rd_u64(r, offset, "offset"))) return rc;
    if (*offset % f->alignment != 0)
        return gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path,
                         "%s: offset %llu is not a multiple of the alignment %zu", r->what,
                         (unsigned long long)*offset, f->alignment);
    return GGUF_OK;
}

static int cmp_tensor_index(const void *a, const void *b, void *ctx) {
    const gguf_tensor_t *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

static int cmp_extent_index(const void *a, const void *b, void *ctx) {
    const extent_t *e = ctx, *x = &e[*(const int *)a], *y = &e[*(const int *)b];
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

/* Names unique, every extent inside the data section, no two sharing a byte. */
static int check_tensors(gguf_file_t *f, const extent_t *ext, char *err, size_t errlen) {
    int n = f->n_tensors, rc = GGUF_OK;
    size_t data_len = f->map_len - f->data_offset;
    for (int i = 0; i < n; i++) {
        if (ext[i].offset > data_len || ext[i].nbytes > data_len - ext[i].offset) {
            char shown[ERR_NAME_SHOWN + 4];
            mapfile_shown_name(f->tensors[i].name, strlen(f->tensors[i].name), shown, sizeof shown);
            return gguf_fail(err, errlen, GGUF_EFORMAT, f->path,
                             "tensor '%s': bytes [%llu, +%zu) run past the data section (%zu "
                             "bytes from byte %zu; truncated?)",
                             shown, (unsigned long long)ext[i].offset, ext[i].nbytes, data_len,
                             f->data_offset);
        }
    }
    int *by_offset = malloc((size_t)(n ? n : 1) * sizeof *by_offset);
    f->t_sorted = malloc((size_t)(n ? n : 1) * sizeof *f->t_sorted);
    if (!by_offset || !f->t_sorted) {
        free(by_offset);
        return gguf_fail(err, errlen, GGUF_ENOMEM, f->path, "out of memory");
    }
    for (int i = 0; i < n; i++) by_offset[i] = f->t_sorted[i] = i;
    qsort_r(f->t_sorted, (size_t)n, sizeof *f->t_sorted, cmp_tensor_index, f->tensors);
    qsort_r(by_offset, (size_t)n, sizeof *by_offset, cmp_extent_index, (void *)ext);
    for (int i = 1; i < n && rc == GGUF_OK; i++) {
        const char *a = f->tensors[f->t_sorted[i - 1]].name, *b = f->tensors[f->t_sorted[i]].name;
        if (strcmp(a, b) == 0) {
            char shown[ERR_NAME_SHOWN + 4];
            mapfile_shown_name(a, strlen(a), shown, sizeof shown);
            rc = gguf_fail(err, errlen, GGUF_EFORMAT, f->path, "duplicate tensor name '%s'", shown);
        }
    }
    /* Sorted by offset, each extent must start at or after the previous end
     * (every tensor has at least one byte). */
    for (int i = 1; i < n && rc == GGUF_OK; i++) {
        const extent_t *p = &ext[by_offset[i - 1]], *c = &ext[by_offset[i]];
        if (c->offset < p->offset + p->nbytes) {
            const char *a = f->tensors[by_offset[i]].name, *b = f->tensors[by_offset[i - 1]].name;
            char sa[ERR_NAME_SHOWN + 4], sb[ERR_NAME_SHOWN + 4];
            mapfile_shown_name(a, strlen(a), sa, sizeof sa);
            mapfile_shown_name(b, strlen(b), sb, sizeof sb);
            rc = gguf_fail(err, errlen, GGUF_EFORMAT, f->path,
                           "tensor '%s': bytes [%llu, +%zu) overlap tensor '%s' [%llu, +%zu)", sa,
                           (unsigned long long)c->offset, c->nbytes, sb,
                           (unsigned long long)p->offset, p->nbytes);
        }
    }
    free(by_offset);
    return rc;
}

static int parse_tensors(gguf_file_t *f, reader_t *r, uint64_t n_tensors) {
    int cap = 0, ext_cap = 0, rc = GGUF_OK;
    extent_t *ext = NULL;
    for (uint64_t i = 0; i < n_tensors; i++) {
        snprintf(r->what, sizeof r->what, "tensor info %llu", (unsigned long long)i);
        if (grow((void **)&f->tensors, &cap, f->n_tensors, sizeof *f->tensors) ||
            grow((void **)&ext, &ext_cap, f->n_tensors, sizeof *ext)) {
            rc = gguf_fail(r->err, r->errlen, GGUF_ENOMEM, r->path, "out of memory");
            goto done;
        }
        gguf_tensor_t *t = &f->tensors[f->n_tensors];
        memset(t, 0, sizeof *t);
        if ((rc = parse_tensor_info(f, r, t, &ext[f->n_tensors].offset))) goto done;
        ext[f->n_tensors].nbytes = t->nbytes;
        f->n_tensors++;
    }
    /* The data section starts at the end of the infos, padded to the alignment. */
    size_t pad = (f->alignment - r->pos % f->alignment) % f->alignment;
    if (f->n_tensors > 0 && pad > r->len - r->pos) {
        rc = gguf_fail(r->err, r->errlen, GGUF_EFORMAT, r->path,
                       "the data section would start at byte %zu, past the end of the %zu-byte "
                       "file (truncated?)",
                       r->pos + pad, r->len);
        goto done;
    }
    f->data_offset = pad > r->len - r->pos ? r->len : r->pos + pad;
    if ((rc = check_tensors(f, ext, r->err, r->errlen))) goto done;
    const uint8_t *data = (const uint8_t *)f->map + f->data_offset;
    for (int i = 0; i < f->n_tensors; i++) f->tensors[i].data = data + ext[i].offset;
done:
    free(ext);
    return rc;
}

/* ---- open / close ---- */

static int parse(gguf_file_t *f, char *err, size_t errlen) {
    reader_t r = {.base = f->map, .len = f->map_len, .path = f->path, .err = err,
                  .errlen = errlen, .what = "header"};
    if (f->map_len < 4 || memcmp(f->map, GGUF_MAGIC, 4) != 0) {
        char shown[8] = "";
        if (f->map_len >= 4) mapfile_shown_name(f->map, 4, shown, sizeof shown);
        return gguf_fail(err, errlen, GGUF_EFORMAT, f->path,
                         "not a GGUF file (magic '%s', expected 'GGUF')", shown);
    }
    r.pos = 4;
    uint64_t n_tensors, n_kv;
    int rc;
    if ((rc = rd_u32(&r, &f->version, "version"))) return rc;
    if (f->version != 2 && f->version != 3)
        return gguf_fail(err, errlen, GGUF_EFORMAT, f->path,
                         "GGUF version %u is not supported (2 and 3 are)%s", f->version,
                         (f->version & 0xffff) == 0 ? "; a big-endian file?" : "");
    if ((rc = rd_u64(&r, &n_tensors, "tensor count")) || (rc = rd_u64(&r, &n_kv, "key count")))
        return rc;
    size_t left = r.len - r.pos;
    if (n_kv > left / MIN_KV_BYTES || n_kv > INT_MAX)
        return gguf_fail(err, errlen, GGUF_EFORMAT, f->path,
                         "%llu metadata entries cannot fit in the %zu bytes after the header",
                         (unsigned long long)n_kv, left);
    if (n_tensors > left / MIN_TENSOR_BYTES || n_tensors > INT_MAX)
        return gguf_fail(err, errlen, GGUF_EFORMAT, f->path,
                         "%llu tensors cannot fit in the %zu bytes after the header",
                         (unsigned long long)n_tensors, left);
    if ((rc = parse_metadata(f, &r, n_kv)) || (rc = index_metadata(f, err, errlen)) ||
        (rc = read_alignment(f, err, errlen)))
        return rc;
    return parse_tensors(f, &r, n_tensors);
}

int gguf_open(const char *path, gguf_file_t **out, char *err, size_t errlen) {
    if (out) *out = NULL;
    if (!path || !out)
        return gguf_fail(err, errlen, GGUF_EIO, path ? path : "(null)",
                         "gguf_open needs a path and an output pointer");
    int rc = GGUF_OK;
    gguf_file_t *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return gguf_fail(err, errlen, GGUF_ENOMEM, path, "out of memory");
    }
    void *map;
    rc = mapfile_open(path, HEADER_BYTES, "24-byte GGUF header", &map, &f->map_len, err, errlen);
    if (rc) {
        rc = rc == MAPFILE_ESHORT ? GGUF_EFORMAT : GGUF_EIO;
        goto fail;
    }
    f->map = map;
    if ((rc = parse(f, err, errlen))) goto fail;
    *out = f;
    return GGUF_OK;
fail:
    gguf_close(f);
    return rc;
}

void gguf_close(gguf_file_t *f) {
    if (!f) return;
    mapfile_close(f->map, f->map_len);
    for (int i = 0; i < f->n_kv; i++) free(f->kv[i].strs);
    free(f->kv);
    free(f->kv_sorted);
    free(f->tensors);
    free(f->t_sorted);
    free(f->path);
    free(f);
}

uint32_t gguf_version(const gguf_file_t *f) { return f ? f->version : 0; }
size_t gguf_alignment(const gguf_file_t *f) { return f ? f->alignment : 0; }
size_t gguf_data_offset(const gguf_file_t *f) { return f ? f->data_offset : 0; }

const void *gguf_data(const gguf_file_t *f, size_t *len) {
    if (len) *len = f ? f->map_len - f->data_offset : 0;
    return f ? (const uint8_t *)f->map + f->data_offset : NULL;
}

/* ---- tensors ---- */

int gguf_n_tensors(const gguf_file_t *f) { return f ? f->n_tensors : 0; }

const gguf_tensor_t *gguf_tensor(const gguf_file_t *f, int i) {
    return (f && i >= 0 && i < f->n_tensors) ? &f->tensors[i] : NULL;
}

static const char *tensor_name_at(const gguf_file_t *f, int i, size_t *len) {
    *len = strlen(f->tensors[i].name);
    return f->tensors[i].name;
}

const gguf_tensor_t *gguf_find_tensor(const gguf_file_t *f, const char *name) {
    if (!f || !name) return NULL;
    int i = find_sorted(f, f->t_sorted, f->n_tensors, tensor_name_at, name);
    return i < 0 ? NULL : &f->tensors[i];
}

/* ---- metadata ---- */

int gguf_n_keys(const gguf_file_t *f) { return f ? f->n_kv : 0; }

const char *gguf_key_name(const gguf_file_t *f, int i, size_t *len) {
    if (!f || i < 0 || i >= f->n_kv) return NULL;
    if (len) *len = f->kv[i].key_len;
    return f->kv[i].key;
}

int gguf_key_type(const gguf_file_t *f, const char *key, gguf_vtype_t *type) {
    const gguf_kv_t *kv = find_kv(f, key);
    if (!kv) return GGUF_ENOTFOUND;
    if (type) *type = kv->type;
    return GGUF_OK;
}

int gguf_get_int(const gguf_file_t *f, const char *key, int64_t *out) {
    const gguf_kv_t *kv = find_kv(f, key);
    if (!kv) return GGUF_ENOTFOUND;
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
    } v;
    int64_t x;
    switch (kv->type) {
    case GGUF_V_UINT8: memcpy(&v.u8, kv->val, 1), x = v.u8; break;
    case GGUF_V_INT8: memcpy(&v.i8, kv->val, 1), x = v.i8; break;
    case GGUF_V_UINT16: memcpy(&v.u16, kv->val, 2), x = v.u16; break;
    case GGUF_V_INT16: memcpy(&v.i16, kv->val, 2), x = v.i16; break;
    case GGUF_V_UINT32: memcpy(&v.u32, kv->val, 4), x = v.u32; break;
    case GGUF_V_INT32: memcpy(&v.i32, kv->val, 4), x = v.i32; break;
    case GGUF_V_INT64: memcpy(&v.i64, kv->val, 8), x = v.i64; break;
    case GGUF_V_UINT64:
        memcpy(&v.u64, kv->val, 8);
        if (v.u64 > INT64_MAX) return GGUF_ETYPE;
        x = (int64_t)v.u64;
        break;
    default: return GGUF_ETYPE;
    }
    if (out) *out = x;
    return GGUF_OK;
}

int gguf_get_float(const gguf_file_t *f, const char *key, double *out) {
    const gguf_kv_t *kv = find_kv(f, key);
    if (!kv) return GGUF_ENOTFOUND;
    double x;
    if (kv->type == GGUF_V_FLOAT32) {
        float v;
        memcpy(&v, kv->val, 4);
        x = v;
    } else if (kv->type == GGUF_V_FLOAT64) {
        memcpy(&x, kv->val, 8);
    } else {
        return GGUF_ETYPE;
    }
    if (out) *out = x;
    return GGUF_OK;
}

int gguf_get_bool(const gguf_file_t *f, const char *key, int *out) {
    const gguf_kv_t *kv = find_kv(f, key);
    if (!kv) return GGUF_ENOTFOUND;
    if (kv->type != GGUF_V_BOOL) return GGUF_ETYPE;
    if (out) *out = kv->val[0] != 0;
    return GGUF_OK;
}

int gguf_get_str(const gguf_file_t *f, const char *key, const char **s, size_t *len) {
    const gguf_kv_t *kv = find_kv(f, key);
    if (!kv) return GGUF_ENOTFOUND;
    if (kv->type != GGUF_V_STRING) return GGUF_ETYPE;
    if (s) *s = (const char *)kv->val;
    if (len) *len = kv->n;
    return GGUF_OK;
}

int gguf_get_arr(const gguf_file_t *f, const char *key, gguf_vtype_t *elem_type, size_t *n) {
    const gguf_kv_t *kv = find_kv(f, key);
    if (!kv) return GGUF_ENOTFOUND;
    if (kv->type != GGUF_V_ARRAY) return GGUF_ETYPE;
    if (elem_type) *elem_type = kv->elem_type;
    if (n) *n = kv->n;
    return GGUF_OK;
}

const void *gguf_arr_data(const gguf_file_t *f, const char *key) {
    const gguf_kv_t *kv = find_kv(f, key);
    if (!kv || kv->type != GGUF_V_ARRAY || kv->elem_type == GGUF_V_STRING) return NULL;
    return kv->val;
}

const char *gguf_arr_str(const gguf_file_t *f, const char *key, size_t i, size_t *len) {
    const gguf_kv_t *kv = find_kv(f, key);
    if (!kv || kv->type != GGUF_V_ARRAY || kv->elem_type != GGUF_V_STRING || i >= kv->n)
        return NULL;
    uint64_t n;
    memcpy(&n, kv->strs[i], 8); /* validated at open */
    if (len) *len = (size_t)n;
    return (const char *)kv->strs[i] + 8;
}
