/* tests/test_safetensors.c - the safetensors loader against the real model,
 * its own writer, exact half-precision conversion, and hostile files crafted
 * at test time (every one must fail cleanly with the file and tensor named).
 * The random-mutation suite is the poor man's fuzzer; under AddressSanitizer
 * (build/asan) it catches any read outside the mapping or the header.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/safetensors.h"
#include "tests/support_fuzz.h"
#include "tests/support_leaks.h"
#include "tests/support_tmpdir.h"

TestSuite(safetensors, .init = tmpdir_init, .fini = tmpdir_fini);
TestSuite(bad_files, .init = tmpdir_init, .fini = tmpdir_fini);

static const char *write_raw(const char *name, const void *bytes, size_t len) {
    const char *path = tmpdir_file(name);
    FILE *fp = fopen(path, "wb");
    cr_assert(fp, "fopen %s: %s", path, strerror(errno));
    cr_assert(len == 0 || fwrite(bytes, 1, len, fp) == len);
    cr_assert(fclose(fp) == 0);
    return path;
}

/* A safetensors file: u64 length, the header as given, then data (or zeros). */
static const char *write_st(const char *name, const char *header, const void *data,
                            size_t data_len) {
    size_t hlen = strlen(header);
    uint64_t len = hlen;
    unsigned char *buf = calloc(1, 8 + hlen + data_len + 1);
    cr_assert(buf);
    memcpy(buf, &len, 8);
    memcpy(buf + 8, header, hlen);
    if (data) memcpy(buf + 8 + hlen, data, data_len);
    const char *path = write_raw(name, buf, 8 + hlen + data_len);
    free(buf);
    return path;
}

static void expect_open_fails(const char *path, const char *tensor, const char *detail) {
    char err[512] = "";
    st_file_t *f = (st_file_t *)1;
    int rc = st_open(path, &f, err, sizeof err);
    cr_assert_lt(rc, 0, "st_open(%s) succeeded on a bad file", path);
    cr_assert_null(f, "out must be NULL on failure");
    cr_assert(strstr(err, path), "message does not name the file: %s", err);
    if (tensor)
        cr_assert(strstr(err, tensor), "message does not name tensor '%s': %s", tensor, err);
    if (detail) cr_assert(strstr(err, detail), "message lacks '%s': %s", detail, err);
    assert_no_leaks();
}

static st_file_t *open_ok(const char *path) {
    char err[512] = "";
    st_file_t *f = NULL;
    int rc = st_open(path, &f, err, sizeof err);
    cr_assert_eq(rc, ST_OK, "st_open(%s): %s", path, err);
    cr_assert_not_null(f);
    return f;
}

static uint32_t float_bits(float v) {
    uint32_t b;
    memcpy(&b, &v, 4);
    return b;
}

/* ---- the real model ---- */

Test(safetensors, real_model) {
    const char *dir = getenv("SLUICE_TEST_MODEL");
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors",
             dir && *dir ? dir : "models/all-minilm-l6-v2");
    cr_assert(access(path, R_OK) == 0, "%s is missing (run `make model`)", path);
    st_file_t *f = open_ok(path);

    /* 104 entries; the I64 buffer embeddings.position_ids is left out. */
    cr_assert_eq(st_count(f), 103, "count %d", st_count(f));
    cr_assert_null(st_find(f, "embeddings.position_ids"));
    cr_assert_str_eq(st_metadata(f, "format"), "pt");
    cr_assert_null(st_metadata(f, "no-such-key"));
    cr_assert_null(st_find(f, "no.such.tensor"));

    const st_tensor_t *we = st_find(f, "embeddings.word_embeddings.weight");
    cr_assert_not_null(we);
    cr_assert_eq(we->dtype, ST_F32);
    cr_assert_eq(we->ndim, 2);
    cr_assert_eq(we->shape[0], 30522);
    cr_assert_eq(we->shape[1], 384);
    cr_assert_eq(we->numel, 30522LL * 384);
    cr_assert_eq(we->nbytes, 30522u * 384u * 4u);
    float v;
    memcpy(&v, (const float *)we->data + 101 * 384, 4); /* [CLS] row, first value */
    cr_assert_eq(float_bits(v), 0xbc90568eu);

    const st_tensor_t *q = st_find(f, "encoder.layer.0.attention.self.query.weight");
    cr_assert_not_null(q);
    cr_assert_eq(q->ndim, 2);
    cr_assert_eq(q->shape[0], 384);
    cr_assert_eq(q->shape[1], 384);
    float *qf = malloc(q->nbytes);
    st_to_f32(q, qf);
    cr_assert_eq(float_bits(qf[384 * 384 - 1]), 0xbdae91c0u);
    free(qf);

    const st_tensor_t *ln = st_find(f, "embeddings.LayerNorm.weight");
    cr_assert_not_null(ln);
    cr_assert_eq(ln->ndim, 1);
    cr_assert_eq(ln->shape[0], 384);
    float lnf[384];
    st_to_f32(ln, lnf);
    cr_assert_eq(float_bits(lnf[0]), 0x3f19535eu);

    /* Every tensor: sorted by name, size consistent, and all data in one span
     * no larger than the file's data section, without overlaps. */
    const char *lo = NULL, *hi = NULL;
    size_t total = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor_t *t = st_get(f, i);
        cr_assert_not_null(t);
        if (i > 0) cr_assert_lt(strcmp(st_get(f, i - 1)->name, t->name), 0);
        cr_assert_eq(st_find(f, t->name), t);
        cr_assert_eq(t->nbytes, (size_t)t->numel * st_dtype_size(t->dtype));
        const char *b = t->data, *e = b + t->nbytes;
        if (!lo || b < lo) lo = b;
        if (!hi || e > hi) hi = e;
        total += t->nbytes;
    }
    cr_assert_null(st_get(f, st_count(f)));
    cr_assert_null(st_get(f, -1));
    struct stat sb;
    cr_assert(stat(path, &sb) == 0);
    cr_assert_leq((size_t)(hi - lo), (size_t)sb.st_size);
    cr_assert_leq(total, (size_t)(hi - lo));
    st_close(f);
    assert_no_leaks();
}

/* ---- writer round trip ---- */

Test(safetensors, write_read_round_trip) {
    float m[12], s = 42.5f, vec[5] = {1e-30f, -0.0f, INFINITY, 3.25f, -7.0f};
    for (int i = 0; i < 12; i++) m[i] = (float)i * 0.5f - 1.0f;
    const char *names[] = {"vec", "layer.weight", "scalar", "empty"};
    int ndims[] = {1, 2, 0, 2};
    int64_t sh_vec[] = {5}, sh_m[] = {3, 4}, sh_empty[] = {0, 5};
    const int64_t *shapes[] = {sh_vec, sh_m, NULL, sh_empty};
    const float *data[] = {vec, m, &s, NULL};
    const char *mk[] = {"format", "kind"}, *mv[] = {"sluice", "term-index"};
    const char *path = tmpdir_file("rt.safetensors");
    char err[512] = "";
    int rc = st_write_f32(path, 4, names, ndims, shapes, data, 2, mk, mv, err, sizeof err);
    cr_assert_eq(rc, ST_OK, "%s", err);

    st_file_t *f = open_ok(path);
    cr_assert_eq(st_count(f), 4);
    cr_assert_str_eq(st_get(f, 0)->name, "empty"); /* table sorted by name */
    cr_assert_str_eq(st_get(f, 3)->name, "vec");
    cr_assert_str_eq(st_metadata(f, "format"), "sluice");
    cr_assert_str_eq(st_metadata(f, "kind"), "term-index");

    const st_tensor_t *t = st_find(f, "layer.weight");
    cr_assert_eq(t->ndim, 2);
    cr_assert_eq(t->shape[0], 3);
    cr_assert_eq(t->shape[1], 4);
    float got[12];
    st_to_f32(t, got);
    cr_assert_arr_eq(got, m, sizeof m);
    t = st_find(f, "vec");
    st_to_f32(t, got);
    cr_assert_arr_eq(got, vec, sizeof vec);
    t = st_find(f, "scalar");
    cr_assert_eq(t->ndim, 0);
    cr_assert_eq(t->numel, 1);
    st_to_f32(t, got);
    cr_assert_eq(got[0], 42.5f);
    t = st_find(f, "empty");
    cr_assert_eq(t->numel, 0);
    cr_assert_eq(t->nbytes, 0);
    st_close(f);

    /* The data section starts 8-byte aligned and the file holds nothing else. */
    FILE *fp = fopen(path, "rb");
    uint64_t hlen;
    cr_assert(fread(&hlen, 8, 1, fp) == 1);
    fclose(fp);
    cr_assert_eq(hlen % 8, 0, "header length %llu", (unsigned long long)hlen);
    struct stat sb;
    stat(path, &sb);
    cr_assert_eq((uint64_t)sb.st_size, 8 + hlen + (5 + 12 + 1) * 4);

    /* Overwriting replaces the file and leaves no temporary behind. */
    float one = 1.0f;
    const char *n2[] = {"only"};
    int nd2[] = {0};
    const int64_t *sh2[] = {NULL};
    const float *d2[] = {&one};
    rc = st_write_f32(path, 1, n2, nd2, sh2, d2, 0, NULL, NULL, err, sizeof err);
    cr_assert_eq(rc, ST_OK, "%s", err);
    f = open_ok(path);
    cr_assert_eq(st_count(f), 1);
    cr_assert_null(st_metadata(f, "format"));
    st_to_f32(st_find(f, "only"), got);
    cr_assert_eq(got[0], 1.0f);
    st_close(f);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", tmpdir_get());
    cr_assert_eq(system(cmd), 0, "temporary files left in %s", tmpdir_get());
    assert_no_leaks();
}

Test(safetensors, write_rejects_bad_input) {
    const char *path = tmpdir_file("w.safetensors");
    char err[512], long_name[300];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    float d = 0;
    const float *data[] = {&d, &d};
    int64_t neg[] = {-2}, ok[] = {1};
    const int64_t *shapes[] = {ok, ok};
    int nd[] = {1, 1};
    const struct {
        const char *names[2];
        const int64_t *shape0;
        int ndim0;
        const char *detail;
    } cases[] = {
        {{"a", "a"}, ok, 1, "duplicate"},
        {{long_name, "b"}, ok, 1, "at most"},
        {{"__metadata__", "b"}, ok, 1, "reserved"},
        {{"a", "b"}, neg, 1, "negative"},
        {{"a", "b"}, ok, 9, "ndim"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        shapes[0] = cases[i].shape0;
        nd[0] = cases[i].ndim0;
        err[0] = 0;
        int rc =
            st_write_f32(path, 2, cases[i].names, nd, shapes, data, 0, NULL, NULL, err, sizeof err);
        cr_assert_lt(rc, 0, "case %zu accepted", i);
        cr_assert(strstr(err, path) && strstr(err, cases[i].detail), "case %zu: %s", i, err);
        cr_assert(access(path, F_OK) != 0, "case %zu left a file", i);
    }
    /* A directory that does not exist: an I/O error naming the path. */
    const char *nowhere = tmpdir_file("no-such-dir/w.safetensors");
    shapes[0] = ok;
    nd[0] = 1;
    const char *names[] = {"a", "b"};
    int rc = st_write_f32(nowhere, 2, names, nd, shapes, data, 0, NULL, NULL, err, sizeof err);
    cr_assert_eq(rc, ST_EIO);
    cr_assert(strstr(err, nowhere), "%s", err);
    assert_no_leaks();
}

/* ---- exact half-precision conversion ---- */

Test(safetensors, f16_bf16_known_bits) {
    static const uint16_t h[] = {0x0000, 0x8000, 0x3c00, 0xc000, 0x7bff, 0x0001,
                                 0x03ff, 0x0400, 0x7c00, 0xfc00, 0x3555, 0x8001};
    static const float hv[] = {
        0.0f,       -0.0f,    1.0f,     -2.0f,     65504.0f,        0x1p-24f,
        0x3ffp-24f, 0x1p-14f, INFINITY, -INFINITY, 0.333251953125f, -0x1p-24f};
    static const uint16_t b[] = {0x3f80, 0xc0a0, 0x7f80, 0x0001, 0x4049, 0xff80};
    static const uint32_t bv[] = {0x3f800000, 0xc0a00000, 0x7f800000,
                                  0x00010000, 0x40490000, 0xff800000};
    static const uint16_t nan_h = 0x7e01, nan_b = 0x7fc1;
    unsigned char data[64];
    memcpy(data, h, sizeof h);      /* [0, 24) */
    memcpy(data + 24, b, sizeof b); /* [24, 36) */
    memcpy(data + 36, &nan_h, 2);   /* [36, 38) */
    memcpy(data + 38, &nan_b, 2);   /* [38, 40) */
    /* The odd header length leaves the data unaligned: conversion must not care. */
    const char *hdr = "{\"h\":{\"dtype\":\"F16\",\"shape\":[12],\"data_offsets\":[0,24]},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[24,36]},"
                      "\"nh\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[36,38]},"
                      "\"nb\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[38,40]}}";
    st_file_t *f = open_ok(write_st("half.safetensors", hdr, data, 40));
    float out[12];
    const st_tensor_t *t = st_find(f, "h");
    cr_assert_eq(t->dtype, ST_F16);
    cr_assert_str_eq(st_dtype_name(t->dtype), "F16");
    cr_assert_eq(st_dtype_size(t->dtype), 2);
    st_to_f32(t, out);
    for (int i = 0; i < 12; i++)
        cr_assert_eq(float_bits(out[i]), float_bits(hv[i]), "F16 0x%04x -> %08x, want %08x", h[i],
                     float_bits(out[i]), float_bits(hv[i]));
    t = st_find(f, "b");
    cr_assert_eq(t->dtype, ST_BF16);
    cr_assert_str_eq(st_dtype_name(t->dtype), "BF16");
    st_to_f32(t, out);
    for (int i = 0; i < 6; i++) cr_assert_eq(float_bits(out[i]), bv[i], "BF16 0x%04x", b[i]);
    st_to_f32(st_find(f, "nh"), out);
    cr_assert(isnan(out[0]));
    cr_assert_eq(float_bits(out[0]), 0x7fc02000u, "F16 NaN payload: %08x", float_bits(out[0]));
    st_to_f32(st_find(f, "nb"), out);
    cr_assert_eq(float_bits(out[0]), 0x7fc10000u);
    st_close(f);
    assert_no_leaks();
}

/* All 65536 half values against an independent double-precision decode. */
Test(safetensors, f16_exhaustive) {
    uint16_t *all = malloc(65536 * 2);
    for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    const char *hdr =
        "{\"all\":{\"dtype\":\"F16\",\"shape\":[256,256],\"data_offsets\":[0,131072]}}";
    st_file_t *f = open_ok(write_st("all.safetensors", hdr, all, 65536 * 2));
    float *out = malloc(65536 * 4);
    st_to_f32(st_find(f, "all"), out);
    for (int i = 0; i < 65536; i++) {
        int sign = i >> 15, exp = (i >> 10) & 31, mant = i & 1023;
        double want = exp == 0 ? ldexp(mant, -24) : ldexp(1024 + mant, exp - 25);
        if (sign) want = -want;
        if (exp == 31) {
            if (mant) {
                cr_assert(isnan(out[i]), "0x%04x should be NaN", i);
                continue;
            }
            want = sign ? -INFINITY : INFINITY;
        }
        cr_assert_eq(float_bits(out[i]), float_bits((float)want), "F16 0x%04x -> %.9g, want %.9g",
                     i, out[i], want);
    }
    free(out);
    free(all);
    st_close(f);
    assert_no_leaks();
}

/* ---- files that are valid ---- */

Test(safetensors, integer_buffers_are_checked_and_left_out) {
    const char *hdr = "{\"ids\":{\"dtype\":\"I64\",\"shape\":[1,2],\"data_offsets\":[0,16]},"
                      "\"mask\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[24,27]},"
                      "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}";
    st_file_t *f = open_ok(write_st("buf.safetensors", hdr, NULL, 27));
    cr_assert_eq(st_count(f), 1);
    cr_assert_not_null(st_find(f, "w"));
    cr_assert_null(st_find(f, "ids"));
    cr_assert_null(st_find(f, "mask"));
    st_close(f);
    assert_no_leaks();
}

Test(safetensors, empty_header_object_and_padding) {
    st_file_t *f = open_ok(write_st("none.safetensors", "{}      ", NULL, 0));
    cr_assert_eq(st_count(f), 0);
    cr_assert_null(st_get(f, 0));
    st_close(f);
    /* Zero-size tensors occupy no bytes, so they overlap nothing. */
    f = open_ok(write_st("zero.safetensors",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"z\":{\"dtype\":\"F16\",\"shape\":[0,7],\"data_offsets\":[4,4]}}",
                         NULL, 8));
    cr_assert_eq(st_count(f), 2);
    cr_assert_eq(st_find(f, "z")->numel, 0);
    st_close(f);
    st_close(NULL);
    cr_assert_eq(st_count(NULL), 0);
    cr_assert_null(st_find(NULL, "a"));
    cr_assert_null(st_metadata(NULL, "a"));
    assert_no_leaks();
}

/* ---- crafted bad files: the file itself ---- */

static void expect_refused(const char *path, const char *words) { expect_open_fails(path, NULL, words); }

/* a missing file, a folder, a FIFO (without hanging) */
Test(bad_files, not_a_regular_file) { tmpdir_bad_file_paths("safetensors", expect_refused); }

Test(bad_files, empty_file) {
    expect_open_fails(write_raw("empty.safetensors", "", 0), NULL, "shorter");
}

Test(bad_files, shorter_than_8_bytes) {
    expect_open_fails(write_raw("short.safetensors", "\x05\0\0\0\0", 5), NULL, "shorter");
}

Test(bad_files, header_length_past_end) {
    unsigned char buf[20] = {0xe8, 0x03}; /* 1000 */
    memcpy(buf + 8, "{}", 2);
    expect_open_fails(write_raw("past.safetensors", buf, sizeof buf), NULL, "past the end");
}

Test(bad_files, header_length_over_limit) {
    uint64_t len = (uint64_t)ST_MAX_HEADER + 1;
    unsigned char buf[16] = {0};
    memcpy(buf, &len, 8);
    expect_open_fails(write_raw("huge.safetensors", buf, sizeof buf), NULL, "over the limit");
    len = UINT64_MAX;
    memcpy(buf, &len, 8);
    expect_open_fails(write_raw("max.safetensors", buf, sizeof buf), NULL, "over the limit");
}

/* ---- crafted bad files: the header ---- */

#define BAD_HEADER(test, header, data_len, tensor, detail)                                         \
    Test(bad_files, test) {                                                                        \
        expect_open_fails(write_st(#test ".safetensors", header, NULL, data_len), tensor, detail); \
    }

#define F32_ENTRY(name, shape, b, e)                                                               \
    "\"" name "\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

BAD_HEADER(header_empty, "", 0, NULL, "not valid JSON")
BAD_HEADER(header_not_json, "{\"w\": {\"dtype\": ", 0, NULL, "not valid JSON")
BAD_HEADER(header_trailing_garbage, "{} x", 0, NULL, "not valid JSON")
BAD_HEADER(header_invalid_utf8, "{\"w\xff\":{}}", 0, NULL, "not valid JSON")
BAD_HEADER(header_not_object, "[1, 2, 3]", 0, NULL, "not an object")
BAD_HEADER(duplicate_names,
           "{" F32_ENTRY("dup.w", "[1]", 0, 4) "," F32_ENTRY("dup.w", "[1]", 4, 8) "}", 8, "dup.w",
           "duplicate")
BAD_HEADER(entry_not_object, "{\"w\": 5}", 0, "w", "not a JSON object")
BAD_HEADER(dtype_missing, "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "w", "dtype")
BAD_HEADER(dtype_not_string, "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "w",
           "dtype")
BAD_HEADER(unknown_dtype, "{\"w.q\":{\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
           "w.q", "Q4_K")
BAD_HEADER(unsupported_f64, "{\"w.d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
           "w.d", "F64")
BAD_HEADER(unsupported_f8, "{\"w.8\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}",
           4, "w.8", "F8_E4M3")
BAD_HEADER(shape_missing, "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "w", "shape")
BAD_HEADER(shape_not_array, "{" F32_ENTRY("w", "3", 0, 12) "}", 12, "w", "shape")
BAD_HEADER(shape_negative, "{" F32_ENTRY("w.neg", "[-1,3]", 0, 12) "}", 12, "w.neg", "shape[0]")
BAD_HEADER(shape_not_integer, "{" F32_ENTRY("w.frac", "[3,2.5]", 0, 12) "}", 12, "w.frac",
           "shape[1]")
BAD_HEADER(shape_string, "{" F32_ENTRY("w.str", "[\"3\"]", 0, 12) "}", 12, "w.str", "shape[0]")
BAD_HEADER(shape_too_many_dims, "{" F32_ENTRY("w.9d", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 4, "w.9d",
           "dims")
BAD_HEADER(shape_product_overflow, "{" F32_ENTRY("w.big", "[4294967296,4294967296]", 0, 4) "}", 4,
           "w.big", "overflow")
BAD_HEADER(byte_size_overflow, "{" F32_ENTRY("w.bytes", "[4611686018427387904]", 0, 4) "}", 4,
           "w.bytes", "overflow")
BAD_HEADER(shape_size_mismatch, "{" F32_ENTRY("w.mis", "[2,3]", 0, 20) "}", 24, "w.mis", "needs 24")
BAD_HEADER(offsets_missing, "{\"w.o\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "w.o", "data_offsets")
BAD_HEADER(offsets_wrong_arity, "{\"w.o\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
           4, "w.o", "data_offsets")
BAD_HEADER(offsets_negative, "{" F32_ENTRY("w.o", "[1]", -4, 0) "}", 4, "w.o", "data_offsets")
BAD_HEADER(offsets_begin_after_end, "{" F32_ENTRY("w.be", "[1]", 8, 4) "}", 8, "w.be", "begin")
BAD_HEADER(offsets_out_of_range, "{" F32_ENTRY("w.far", "[1]", 100, 104) "}", 8, "w.far", "past")
BAD_HEADER(truncated_data,
           "{" F32_ENTRY("w.a", "[2]", 0, 8) "," F32_ENTRY("w.trunc", "[4]", 8, 24) "}", 16,
           "w.trunc", "truncated")
BAD_HEADER(overlapping_tensors,
           "{" F32_ENTRY("w.first", "[4]", 0, 16) "," F32_ENTRY("w.second", "[4]", 8, 24) "}", 24,
           "w.second", "w.first")
BAD_HEADER(overlap_inside_another,
           "{" F32_ENTRY("w.outer", "[8]", 0, 32) "," F32_ENTRY("w.inner", "[1]", 16, 20) "}", 32,
           "w.inner", "w.outer")
BAD_HEADER(buffer_out_of_range,
           "{\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8, "ids", "past")
/* clang-format off */
BAD_HEADER(buffer_overlaps_tensor,
           "{\"ids\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]},"
           F32_ENTRY("w", "[2]", 0, 8) "}", 8, "ids", "overlaps")
/* clang-format on */
BAD_HEADER(metadata_not_object, "{\"__metadata__\": [\"a\"]}", 0, NULL, "__metadata__")
BAD_HEADER(metadata_not_strings, "{\"__metadata__\":{\"format\":\"pt\",\"version\":2}}", 0, NULL,
           "version")

Test(bad_files, name_too_long) {
    char name[400], header[600];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    snprintf(header, sizeof header,
             "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", name);
    name[64] = 0; /* the message quotes a long name's beginning */
    expect_open_fails(write_st("long.safetensors", header, NULL, 4), name, "at most 255");
}

Test(bad_files, control_bytes_in_name_are_not_echoed) {
    const char *p = write_st(
        "ctl.safetensors",
        "{\"w\\u001b[31m\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", NULL, 4);
    char err[512];
    st_file_t *f;
    cr_assert_lt(st_open(p, &f, err, sizeof err), 0);
    cr_assert_null(strchr(err, '\x1b'), "%s", err);
    cr_assert(strstr(err, "w?[31m"), "%s", err);
    /* A tiny error buffer is truncated, never overrun. */
    char small[8];
    cr_assert_lt(st_open(p, &f, small, sizeof small), 0);
    cr_assert_eq(strlen(small), 7);
    cr_assert_lt(st_open(p, &f, NULL, 0), 0);
    assert_no_leaks();
}

/* ---- random mutation of valid files ---- */

static int cmp_tensor_data(const void *a, const void *b) {
    const char *x = (*(const st_tensor_t *const *)a)->data;
    const char *y = (*(const st_tensor_t *const *)b)->data;
    return (x > y) - (x < y);
}

/* Write bytes as the file and open it: a refusal must be clean and name the
 * file; an acceptance must give tensors that are consistent, disjoint and
 * inside the data section. Returns 1 when the file opened. */
static int open_mutant(const char *path, const unsigned char *buf, size_t n, uint64_t seed,
                       int iter) {
    FILE *fp = fopen(path, "wb");
    cr_assert(fp && (n == 0 || fwrite(buf, 1, n, fp) == n) && fclose(fp) == 0);
    st_file_t *f = (st_file_t *)1;
    char err[512] = "";
    if (st_open(path, &f, err, sizeof err) != ST_OK) {
        cr_assert_null(f);
        cr_assert(strstr(err, path), "seed %llu iter %d: %s", (unsigned long long)seed, iter, err);
        return 0;
    }
    uint64_t hlen;
    memcpy(&hlen, buf, 8);
    cr_assert_leq(8 + hlen, n);
    int count = st_count(f);
    const st_tensor_t **by_data = calloc((size_t)count + 1, sizeof *by_data);
    for (int i = 0; i < count; i++) {
        const st_tensor_t *t = by_data[i] = st_get(f, i);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
        cr_assert_eq(numel, t->numel);
        cr_assert_eq(t->nbytes, (size_t)numel * st_dtype_size(t->dtype));
        float *out = malloc(t->nbytes * 2 + 4); /* reads every byte of the tensor */
        st_to_f32(t, out);
        free(out);
    }
    qsort(by_data, (size_t)count, sizeof *by_data, cmp_tensor_data);
    const char *end = NULL; /* furthest byte of a non-empty tensor so far */
    for (int i = 0; i < count; i++) {
        const char *p = by_data[i]->data;
        if (by_data[i]->nbytes == 0) continue;
        cr_assert(!end || p >= end, "seed %llu iter %d: '%s' overlaps", (unsigned long long)seed,
                  iter, by_data[i]->name);
        end = p + by_data[i]->nbytes;
    }
    if (count > 0) {
        const char *lo = by_data[0]->data;
        cr_assert_leq((uint64_t)(end ? end - lo : 0), n - 8 - hlen,
                      "seed %llu iter %d: tensors span past the data", (unsigned long long)seed,
                      iter);
    }
    free(by_data);
    st_close(f);
    return 1;
}

/* A byte-mutation run: the file the mutants go to, its seed, the header's length. */
typedef struct {
    const char *path;
    uint64_t seed, hlen;
} mutant_t;

/* One edit: a bit flip anywhere, JSON punctuation or a random byte in the
 * header, truncation, or a byte of the length field. */
static void byte_edit(uint8_t *buf, size_t *n, size_t len, uint64_t r, void *ctx) {
    static const char punct[] = "0123456789-[]{},:\"eE.\\ 9";
    size_t at = 8 + (size_t)((r >> 8) % ((mutant_t *)ctx)->hlen); /* mostly the header */
    switch (r % 6) {
    case 0: if (*n) buf[(r >> 8) % *n] ^= (unsigned char)(1u << ((r >> 40) % 8)); break;
    case 1:
    case 2: buf[at] = (unsigned char)punct[(r >> 40) % (sizeof punct - 1)]; break;
    case 3: buf[at] = (unsigned char)(r >> 40); break;
    case 4: *n = (size_t)((r >> 8) % (len + 1)); break;           /* truncate */
    case 5: buf[(r >> 8) % 8] = (unsigned char)(r >> 40); break; /* length field */
    }
}

static int try_mutant(const uint8_t *buf, size_t n, int iter, void *ctx) {
    mutant_t *m = ctx;
    return open_mutant(m->path, buf, n, m->seed, iter);
}

/* Byte-level damage: bit flips, JSON punctuation, truncation, length field. */
Test(safetensors, random_byte_mutations, .timeout = 120) {
    float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {7, 8, 9}, c = 10;
    const char *names[] = {"enc.a", "enc.b", "c"};
    int nd[] = {2, 1, 0};
    int64_t sa[] = {2, 3}, sb[] = {3};
    const int64_t *shapes[] = {sa, sb, NULL};
    const float *data[] = {a, b, &c};
    const char *mk[] = {"format"}, *mv[] = {"pt"};
    const char *path = tmpdir_file("mut.safetensors");
    char err[512];
    cr_assert_eq(st_write_f32(path, 3, names, nd, shapes, data, 1, mk, mv, err, sizeof err), 0,
                 "%s", err);
    FILE *fp = fopen(path, "rb");
    unsigned char orig[1024];
    size_t len = fread(orig, 1, sizeof orig, fp);
    fclose(fp);
    cr_assert_lt(len, sizeof orig);
    uint64_t hlen;
    memcpy(&hlen, orig, 8);

    mutant_t m = {path, fuzz_seed(0x5eed5a17u), hlen};
    uint64_t seed = m.seed;
    int iters = 2000, opened = fuzz_byte_mutants(orig, len, seed, iters, byte_edit, try_mutant, &m);
    cr_log_info("byte mutations: %d opened, %d refused (seed %llu)", opened, iters - opened,
                (unsigned long long)seed);
    cr_assert_gt(opened, 0);
    cr_assert_lt(opened, iters);
    assert_no_leaks();
}

/* Add one delta to both data_offsets of a random tensor in hdr. */
static void shift_a_range(char *hdr, size_t cap, uint64_t r) {
    static const long long deltas[] = {-16, -8, -4, -2, -1, 1, 2, 4, 6, 8, 16, 24};
    const char *key = "\"data_offsets\":[";
    char *at[16];
    int n = 0;
    for (char *p = strstr(hdr, key); p && n < 16; p = strstr(p + 1, key)) at[n++] = p + strlen(key);
    long long b, e, d = deltas[(r >> 8) % (sizeof deltas / sizeof deltas[0])];
    int used;
    if (n == 0 || sscanf(at[r % (uint64_t)n], "%lld,%lld]%n", &b, &e, &used) != 2 || b + d < 0)
        return;
    char *start = at[r % (uint64_t)n], rest[1024];
    snprintf(rest, sizeof rest, "%s", start + used);
    snprintf(start, cap - (size_t)(start - hdr), "%lld,%lld]%s", b + d, e + d, rest);
}

/* Header-aware damage: numbers in the header replaced by edge values (the
 * header length kept right), so shapes and offsets get past the JSON parser
 * and exercise the range, size and overlap checks. */
Test(safetensors, random_number_mutations, .timeout = 120) {
    static const char header[] =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[24,30]},"
        "\"s\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[30,32]},"
        "\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[32,40]},"
        "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[40,40]}}";
    static const char *const edge[] = {"0",
                                       "1",
                                       "2",
                                       "3",
                                       "4",
                                       "6",
                                       "8",
                                       "16",
                                       "23",
                                       "24",
                                       "30",
                                       "32",
                                       "39",
                                       "40",
                                       "41",
                                       "-1",
                                       "-0",
                                       "1.5",
                                       "1e1",
                                       "255",
                                       "256",
                                       "65536",
                                       "4294967296",
                                       "4611686018427387904",
                                       "9223372036854775807",
                                       "9223372036854775808",
                                       "18446744073709551616",
                                       "00"};
    const size_t n_edge = sizeof edge / sizeof edge[0], data_len = 40;
    const char *path = tmpdir_file("num.safetensors");
    unsigned char data[40];
    for (size_t i = 0; i < data_len; i++) data[i] = (unsigned char)(i * 37 + 11);
    char hdr[1024], next[1024];
    unsigned char buf[8 + 1024 + 40];
    uint64_t seed = fuzz_seed(0x5eed5a17u), s = seed | 1;
    int opened = 0, iters = 2000;
    for (int iter = 0; iter < iters; iter++) {
        strcpy(hdr, header);
        int edits = 1 + (int)(rng_next(&s) % 3);
        for (int k = 0; k < edits; k++) {
            if (rng_next(&s) % 3 == 0) { /* move one tensor's range: overlaps, gaps, overruns */
                shift_a_range(hdr, sizeof hdr, rng_next(&s));
                continue;
            }
            /* the k-th run of digits (with its sign), chosen at random */
            size_t runs[64], run_len[64], n_runs = 0;
            for (size_t i = 0; hdr[i] && n_runs < 64; i++) {
                if (!strchr("-0123456789", hdr[i]) ||
                    (i > 0 && (isalnum((unsigned char)hdr[i - 1]) || strchr("-.", hdr[i - 1]))))
                    continue; /* inside a number, or a dtype name like F32 */
                size_t j = i + 1;
                while (hdr[j] && strchr("0123456789.eE", hdr[j])) j++;
                runs[n_runs] = i, run_len[n_runs++] = j - i;
            }
            if (n_runs == 0) break;
            uint64_t r = rng_next(&s);
            size_t pick = (size_t)(r % n_runs);
            const char *with = edge[(r >> 16) % n_edge];
            snprintf(next, sizeof next, "%.*s%s%s", (int)runs[pick], hdr, with,
                     hdr + runs[pick] + run_len[pick]);
            strcpy(hdr, next);
        }
        uint64_t hlen = strlen(hdr);
        memcpy(buf, &hlen, 8);
        memcpy(buf + 8, hdr, hlen);
        memcpy(buf + 8 + hlen, data, data_len);
        opened += open_mutant(path, buf, 8 + hlen + data_len, seed, iter);
    }
    cr_log_info("number mutations: %d opened, %d refused (seed %llu)", opened, iters - opened,
                (unsigned long long)seed);
    cr_assert_gt(opened, 0);
    cr_assert_lt(opened, iters);
    assert_no_leaks();
}
