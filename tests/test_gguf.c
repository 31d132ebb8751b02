/* tests/test_gguf.c - the GGUF loader against the real SmolLM2 file, files
 * written by tests/support_gguf.c, hostile files crafted at test time (each
 * must fail with the right code and a message naming the file and the fault)
 * and random mutations of a small valid file. Under AddressSanitizer
 * (build/asan) the mutation suites catch any read outside the mapping.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "tests/support_gguf.h"
#include "tests/support_fuzz.h"
#include "tests/support_leaks.h"
#include "tests/support_tmpdir.h"

#define LLM_PATH "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf" /* make model */

TestSuite(gguf, .init = tmpdir_init, .fini = tmpdir_fini);
TestSuite(gguf_bad, .init = tmpdir_init, .fini = tmpdir_fini);
TestSuite(gguf_fuzz, .init = tmpdir_init, .fini = tmpdir_fini);

static gguf_file_t *open_ok(const char *path) {
    gguf_file_t *f = NULL;
    char err[512] = "";
    int rc = gguf_open(path, &f, err, sizeof err);
    cr_assert_eq(rc, GGUF_OK, "gguf_open(%s) = %d: %s", path, rc, err);
    cr_assert_not_null(f);
    return f;
}

static int64_t get_int(const gguf_file_t *f, const char *key) {
    int64_t v = -1;
    cr_assert_eq(gguf_get_int(f, key, &v), GGUF_OK, "%s", key);
    return v;
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    bits = exp == 31 ? sign | 0x7f800000u | (mant << 13)
                     : sign | ((exp + 112) << 23) | (mant << 13);
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

/* ---- the real model ---- */

Test(gguf, real_model) {
    const char *path = getenv("SLUICE_TEST_LLM"); /* another copy of the same file */
    if (!path || !*path) path = LLM_PATH;
    if (access(path, R_OK) != 0) cr_skip_test("%s is missing (run `make model`)", path);
    gguf_file_t *f = open_ok(path);
    cr_assert_eq(gguf_version(f), 3);
    cr_assert_eq(gguf_n_tensors(f), 272);
    cr_assert_eq(gguf_alignment(f), 32);
    cr_assert_eq(gguf_n_keys(f), 33);

    const char *s;
    size_t len;
    cr_assert_eq(gguf_get_str(f, "general.architecture", &s, &len), GGUF_OK);
    cr_assert(len == 5 && memcmp(s, "llama", 5) == 0);
    cr_assert_eq(gguf_get_str(f, "tokenizer.ggml.pre", &s, &len), GGUF_OK);
    cr_assert(len == 6 && memcmp(s, "smollm", 6) == 0);
    cr_assert_eq(gguf_get_str(f, "tokenizer.ggml.model", &s, &len), GGUF_OK);
    cr_assert(len == 4 && memcmp(s, "gpt2", 4) == 0);
    cr_assert_eq(gguf_get_str(f, "tokenizer.chat_template", &s, &len), GGUF_OK);
    cr_assert_gt(len, 0);
    cr_assert_eq(get_int(f, "llama.block_count"), 30);
    cr_assert_eq(get_int(f, "llama.embedding_length"), 576);
    cr_assert_eq(get_int(f, "llama.feed_forward_length"), 1536);
    cr_assert_eq(get_int(f, "llama.attention.head_count"), 9);
    cr_assert_eq(get_int(f, "llama.attention.head_count_kv"), 3);
    cr_assert_eq(get_int(f, "llama.context_length"), 8192);
    cr_assert_eq(get_int(f, "llama.vocab_size"), 49152);
    cr_assert_eq(get_int(f, "llama.rope.dimension_count"), 64);
    cr_assert_eq(get_int(f, "tokenizer.ggml.bos_token_id"), 1);
    cr_assert_eq(get_int(f, "tokenizer.ggml.eos_token_id"), 2);
    double v;
    cr_assert_eq(gguf_get_float(f, "llama.rope.freq_base", &v), GGUF_OK);
    cr_assert_eq(v, 100000.0);
    cr_assert_eq(gguf_get_float(f, "llama.attention.layer_norm_rms_epsilon", &v), GGUF_OK);
    cr_assert_eq((float)v, 1e-5f);
    int b = -1;
    cr_assert_eq(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b), GGUF_OK);
    cr_assert_eq(b, 0);

    /* getters refuse the wrong type and unknown keys */
    cr_assert_eq(gguf_get_int(f, "general.architecture", NULL), GGUF_ETYPE);
    cr_assert_eq(gguf_get_float(f, "llama.block_count", NULL), GGUF_ETYPE);
    cr_assert_eq(gguf_get_bool(f, "llama.block_count", NULL), GGUF_ETYPE);
    cr_assert_eq(gguf_get_str(f, "llama.block_count", NULL, NULL), GGUF_ETYPE);
    cr_assert_eq(gguf_get_arr(f, "llama.block_count", NULL, NULL), GGUF_ETYPE);
    cr_assert_eq(gguf_get_int(f, "no.such.key", NULL), GGUF_ENOTFOUND);
    cr_assert_eq(gguf_get_int(f, "general.alignment", NULL), GGUF_ENOTFOUND);
    gguf_vtype_t vt;
    cr_assert_eq(gguf_key_type(f, "llama.rope.freq_base", &vt), GGUF_OK);
    cr_assert_eq(vt, GGUF_V_FLOAT32);

    /* vocabulary and merges */
    size_t n;
    cr_assert_eq(gguf_get_arr(f, "tokenizer.ggml.tokens", &vt, &n), GGUF_OK);
    cr_assert_eq(vt, GGUF_V_STRING);
    cr_assert_eq(n, 49152);
    s = gguf_arr_str(f, "tokenizer.ggml.tokens", 1, &len);
    cr_assert(s && len == 12 && memcmp(s, "<|im_start|>", 12) == 0, "token 1: '%.*s'", (int)len,
              s);
    s = gguf_arr_str(f, "tokenizer.ggml.tokens", 2, &len);
    cr_assert(s && len == 10 && memcmp(s, "<|im_end|>", 10) == 0, "token 2: '%.*s'", (int)len, s);
    cr_assert_not_null(gguf_arr_str(f, "tokenizer.ggml.tokens", 49151, &len));
    cr_assert_null(gguf_arr_str(f, "tokenizer.ggml.tokens", 49152, &len));
    cr_assert_null(gguf_arr_data(f, "tokenizer.ggml.tokens"));
    cr_assert_eq(gguf_get_arr(f, "tokenizer.ggml.merges", &vt, &n), GGUF_OK);
    cr_assert_eq(vt, GGUF_V_STRING);
    cr_assert_eq(n, 48900);
    s = gguf_arr_str(f, "tokenizer.ggml.merges", 0, &len);
    cr_assert(s && len > 2 && memchr(s, ' ', len), "merge 0 has no space");
    cr_assert_eq(gguf_get_arr(f, "tokenizer.ggml.token_type", &vt, &n), GGUF_OK);
    cr_assert_eq(vt, GGUF_V_INT32);
    cr_assert_eq(n, 49152);
    const void *tt = gguf_arr_data(f, "tokenizer.ggml.token_type");
    cr_assert_not_null(tt);
    int32_t type0, type1000;
    memcpy(&type0, tt, 4);
    memcpy(&type1000, (const char *)tt + 4000, 4);
    cr_assert_eq(type0, 3, "token 0 type %d (control)", type0);
    cr_assert_eq(type1000, 1, "token 1000 type %d (normal)", type1000);

    /* tensors */
    const uint8_t *base = NULL;
    const gguf_tensor_t *te = gguf_find_tensor(f, "token_embd.weight");
    cr_assert_not_null(te);
    cr_assert_eq(te, gguf_tensor(f, 0));
    cr_assert_eq(te->type, GGUF_T_Q8_0);
    cr_assert_eq(te->n_dims, 2);
    cr_assert_eq(te->ne[0], 576);
    cr_assert_eq(te->ne[1], 49152);
    cr_assert_eq(te->ne[2], 1);
    cr_assert_eq(te->numel, 576LL * 49152);
    cr_assert_eq(te->nbytes, 576u / 32 * 34 * 49152);
    cr_assert_null(gguf_find_tensor(f, "output.weight"), "output is tied to token_embd");
    cr_assert_null(gguf_find_tensor(f, "no.such.tensor"));
    cr_assert_eq(gguf_data_offset(f), 1785664);
    size_t data_len;
    base = (const uint8_t *)gguf_data(f, &data_len) - 1785664;
    cr_assert_eq(data_len, 98362432 - 1785664);
    cr_assert_eq((const uint8_t *)te->data, base + 1785664, "token_embd.weight comes first");
    int n_q41 = 0, n_f32 = 0;
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor_t *t = gguf_tensor(f, i);
        cr_assert_eq(gguf_find_tensor(f, t->name), t);
        cr_assert_eq((uintptr_t)t->data % 32, 0, "%s is not aligned", t->name);
        cr_assert_geq((const uint8_t *)t->data, base + 1785664);
        cr_assert_leq((const uint8_t *)t->data + t->nbytes, base + 98362432);
        if (strncmp(t->name, "blk.", 4) == 0 && strstr(t->name, "norm")) {
            cr_assert_eq(t->type, GGUF_T_F32, "%s", t->name);
            cr_assert_eq(t->n_dims, 1);
            cr_assert_eq(t->ne[0], 576);
            n_f32++;
        } else if (strncmp(t->name, "blk.", 4) == 0) {
            cr_assert_eq(t->type, GGUF_T_Q4_1, "%s is %s", t->name, gguf_type_name(t->type));
            cr_assert_eq(t->n_dims, 2);
            n_q41++;
        }
    }
    cr_assert_eq(n_q41, 30 * 7);
    cr_assert_eq(n_f32, 30 * 2, "block norms"); /* output_norm.weight is not blk.* */
    const gguf_tensor_t *on = gguf_find_tensor(f, "output_norm.weight");
    cr_assert(on && on->type == GGUF_T_F32 && on->ne[0] == 576);
    const gguf_tensor_t *k = gguf_find_tensor(f, "blk.0.attn_k.weight");
    cr_assert(k && k->ne[0] == 576 && k->ne[1] == 192 && k->nbytes == 69120);
    const gguf_tensor_t *d = gguf_find_tensor(f, "blk.29.ffn_down.weight");
    cr_assert(d && d->ne[0] == 1536 && d->ne[1] == 576 && d->nbytes == 552960);
    /* the first Q8_0 block scale is a finite, small half */
    uint16_t h;
    memcpy(&h, te->data, 2);
    float scale = f16_to_f32(h);
    cr_assert(isfinite(scale) && fabsf(scale) < 1.0f && scale != 0, "scale %g", scale);
    gguf_close(f);
    gguf_close(NULL);
    assert_no_leaks();
}

/* ---- files of the test writer ---- */

/* A small valid file: every supported type, metadata of every kind. */
static gw_t *small_model(void) {
    gw_t *w = gw_new();
    gw_kv_str(w, "general.architecture", "llama");
    gw_kv_u32(w, "llama.block_count", 2);
    gw_kv_f32(w, "llama.rope.freq_base", 10000.0f);
    gw_kv_bool(w, "tokenizer.ggml.add_bos_token", 1);
    const char *toks[] = {"<s>", "a", "b", ""};
    gw_kv_arr_str(w, "tokenizer.ggml.tokens", 4, toks);
    int32_t types[] = {3, 1, 1, 1};
    gw_kv_arr(w, "tokenizer.ggml.token_type", GGUF_V_INT32, 4, types);
    gw_kv_i32(w, "neg", -7);
    gw_kv_u64(w, "big", 1ull << 40);
    uint64_t e1[] = {32}, e2[] = {64, 3}, e3[] = {32, 2, 2}, e4[] = {2, 1, 1, 3};
    gw_tensor(w, "f32", GGUF_T_F32, 1, e1, NULL);
    gw_tensor(w, "q4_1", GGUF_T_Q4_1, 2, e2, NULL);
    gw_tensor(w, "q8_0", GGUF_T_Q8_0, 3, e3, NULL);
    gw_tensor(w, "q4_0", GGUF_T_Q4_0, 2, e2, NULL);
    gw_tensor(w, "f16", GGUF_T_F16, 4, e4, NULL);
    gw_tensor(w, "bf16", GGUF_T_BF16, 1, e1, NULL);
    return w;
}

Test(gguf, writer_round_trip) {
    gw_t *w = small_model();
    const char *path = tmpdir_file("small.gguf");
    cr_assert_eq(gw_write(w, path), 0);
    gguf_file_t *f = open_ok(path);
    cr_assert_eq(gguf_version(f), 3);
    cr_assert_eq(gguf_alignment(f), 32);
    cr_assert_eq(gguf_n_keys(f), 8);
    cr_assert_eq(gguf_n_tensors(f), 6);
    size_t len;
    const char *k = gguf_key_name(f, 1, &len);
    cr_assert(k && len == 17 && memcmp(k, "llama.block_count", 17) == 0);
    cr_assert_null(gguf_key_name(f, 8, &len));
    cr_assert_eq(get_int(f, "llama.block_count"), 2);
    cr_assert_eq(get_int(f, "neg"), -7);
    cr_assert_eq(get_int(f, "big"), 1ll << 40);
    int b;
    cr_assert_eq(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b), GGUF_OK);
    cr_assert_eq(b, 1);
    const char *s = gguf_arr_str(f, "tokenizer.ggml.tokens", 3, &len);
    cr_assert(s && len == 0);
    s = gguf_arr_str(f, "tokenizer.ggml.tokens", 1, &len);
    cr_assert(s && len == 1 && s[0] == 'a');
    static const struct {
        const char *name;
        gguf_type_t type;
        int n_dims;
        int64_t numel;
        size_t nbytes;
    } want[] = {{"f32", GGUF_T_F32, 1, 32, 128},  {"q4_1", GGUF_T_Q4_1, 2, 192, 120},
                {"q8_0", GGUF_T_Q8_0, 3, 128, 136}, {"q4_0", GGUF_T_Q4_0, 2, 192, 108},
                {"f16", GGUF_T_F16, 4, 6, 12},    {"bf16", GGUF_T_BF16, 1, 32, 64}};
    for (int i = 0; i < 6; i++) {
        const gguf_tensor_t *t = gguf_tensor(f, i);
        cr_assert_str_eq(t->name, want[i].name);
        cr_assert_eq(t->type, want[i].type, "%s", t->name);
        cr_assert_eq(t->n_dims, want[i].n_dims, "%s", t->name);
        cr_assert_eq(t->numel, want[i].numel, "%s", t->name);
        cr_assert_eq(t->nbytes, want[i].nbytes, "%s", t->name);
        cr_assert_eq(gguf_find_tensor(f, t->name), t);
        /* the bytes are the writer's pattern, at the right place */
        const uint8_t *p = t->data;
        for (size_t j = 0; j < t->nbytes; j++)
            cr_assert_eq(p[j], (uint8_t)(j * 31 + 7 + (size_t)i), "%s byte %zu", t->name, j);
    }
    cr_assert_null(gguf_tensor(f, 6));
    cr_assert_null(gguf_tensor(f, -1));
    gguf_close(f);
    gw_free(w);
    assert_no_leaks();
}

Test(gguf, type_names_and_blocks) {
    cr_assert_str_eq(gguf_type_name(GGUF_T_Q4_1), "Q4_1");
    cr_assert_str_eq(gguf_type_name(GGUF_T_BF16), "BF16");
    cr_assert_str_eq(gguf_type_name((gguf_type_t)14), "Q6_K");
    cr_assert_str_eq(gguf_type_name((gguf_type_t)77), "type 77");
    cr_assert_str_eq(gguf_type_name((gguf_type_t)4), "type 4");
    cr_assert_eq(gguf_type_block(GGUF_T_Q8_0), 32);
    cr_assert_eq(gguf_type_block(GGUF_T_F16), 1);
    cr_assert_eq(gguf_type_block((gguf_type_t)14), 0);
    cr_assert_eq(gguf_type_block_bytes(GGUF_T_Q8_0), 34);
    cr_assert_eq(gguf_type_block_bytes(GGUF_T_Q4_0), 18);
    cr_assert_eq(gguf_type_block_bytes(GGUF_T_Q4_1), 20);
    cr_assert_eq(gguf_type_block_bytes(GGUF_T_F32), 4);
    cr_assert_eq(gguf_type_block_bytes(GGUF_T_F16), 2);
    cr_assert_eq(gguf_type_block_bytes(GGUF_T_BF16), 2);
    cr_assert_eq(gguf_type_block_bytes((gguf_type_t)1000), 0);
}

Test(gguf, alignment_key_and_empty_files) {
    /* general.alignment 64: offsets and the data section follow it */
    gw_t *w = gw_new();
    gw_alignment(w, 64);
    uint64_t ne[] = {32};
    gw_tensor(w, "a", GGUF_T_F16, 1, ne, NULL);
    gw_tensor(w, "b", GGUF_T_F32, 1, ne, NULL);
    const char *path = tmpdir_file("a64.gguf");
    cr_assert_eq(gw_write(w, path), 0);
    gguf_file_t *f = open_ok(path);
    cr_assert_eq(gguf_alignment(f), 64);
    cr_assert_eq(gguf_data_offset(f) % 64, 0);
    cr_assert_eq(gguf_data_offset(f), w->data_pos);
    size_t len;
    const uint8_t *data = gguf_data(f, &len);
    cr_assert_eq((const uint8_t *)gguf_find_tensor(f, "b")->data - data, 64);
    cr_assert_eq(len, 64 + 128);
    gguf_close(f);
    gw_free(w);

    /* no tensors, no keys: a valid, empty model file; version 2 is read too */
    w = gw_new();
    w->version = 2;
    cr_assert_eq(gw_write(w, path), 0);
    f = open_ok(path);
    cr_assert_eq(gguf_version(f), 2);
    cr_assert_eq(gguf_n_tensors(f), 0);
    cr_assert_eq(gguf_n_keys(f), 0);
    cr_assert_null(gguf_find_tensor(f, "a"));
    cr_assert_eq(gguf_get_int(f, "a", NULL), GGUF_ENOTFOUND);
    gguf_close(f);
    gw_free(w);
    assert_no_leaks();
}

Test(gguf, many_keys_and_tensors) {
    gw_t *w = gw_new();
    char name[64];
    for (int i = 0; i < 3000; i++) {
        snprintf(name, sizeof name, "key.%d", (i * 7919) % 3000);
        gw_kv_u32(w, name, (uint32_t)((i * 7919) % 3000));
    }
    uint64_t ne[] = {1};
    for (int i = 0; i < 500; i++) {
        snprintf(name, sizeof name, "t.%d", 499 - i);
        gw_tensor(w, name, GGUF_T_F32, 1, ne, NULL);
    }
    const char *path = tmpdir_file("many.gguf");
    cr_assert_eq(gw_write(w, path), 0);
    gguf_file_t *f = open_ok(path);
    for (int i = 0; i < 3000; i++) {
        snprintf(name, sizeof name, "key.%d", i);
        cr_assert_eq(get_int(f, name), i);
    }
    for (int i = 0; i < 500; i++) {
        snprintf(name, sizeof name, "t.%d", i);
        const gguf_tensor_t *t = gguf_find_tensor(f, name);
        cr_assert(t && strcmp(t->name, name) == 0 && t == gguf_tensor(f, 499 - i), "%s", name);
    }
    cr_assert_null(gguf_find_tensor(f, "t."));
    cr_assert_null(gguf_find_tensor(f, "t.5000"));
    cr_assert_eq(gguf_get_int(f, "key.", NULL), GGUF_ENOTFOUND);
    gguf_close(f);
    gw_free(w);
    assert_no_leaks();
}

/* ---- hostile files: each one refused with its code, the path and the fault ---- */

static void expect_fail(const char *path, int code, const char *what) {
    gguf_file_t *f = (gguf_file_t *)1;
    char err[512] = "";
    int rc = gguf_open(path, &f, err, sizeof err);
    cr_assert_eq(rc, code, "rc %d (want %d): %s", rc, code, err);
    cr_assert_null(f);
    cr_assert(strstr(err, path), "the message does not name the file: %s", err);
    cr_assert(strstr(err, what), "the message lacks \"%s\": %s", what, err);
    cr_assert_null(strchr(err, '\n'), "not one line: %s", err);
    /* no message buffer, or a tiny one: the same code, no overflow */
    f = (gguf_file_t *)1;
    cr_assert_eq(gguf_open(path, &f, NULL, 0), code);
    cr_assert_null(f);
    char tiny[8];
    cr_assert_eq(gguf_open(path, &f, tiny, sizeof tiny), code);
    cr_assert_eq(strlen(tiny), sizeof tiny - 1);
}

static void expect_fail_bytes(const void *p, size_t len, int code, const char *what) {
    const char *path = tmpdir_file("bad.gguf");
    cr_assert_eq(gw_write_bytes(path, p, len), 0);
    expect_fail(path, code, what);
}

/* Builds w, frees it, expects the refusal. */
static void expect_fail_gw(gw_t *w, int code, const char *what) {
    uint8_t *p;
    size_t len;
    gw_build(w, &p, &len);
    expect_fail_bytes(p, len, code, what);
    free(p);
    gw_free(w);
    assert_no_leaks();
}

/* One key and two tensors (F32 [32] and Q4_1 [64, 2]) to break one field of. */
static gw_t *base_model(void) {
    gw_t *w = gw_new();
    gw_kv_str(w, "general.architecture", "llama");
    uint64_t e1[] = {32}, e2[] = {64, 2};
    gw_tensor(w, "norm", GGUF_T_F32, 1, e1, NULL);
    gw_tensor(w, "w", GGUF_T_Q4_1, 2, e2, NULL);
    return w;
}

/* A header and then raw bytes (the metadata entries by hand). */
static void header_then(gw_buf_t *b, uint64_t n_tensors, uint64_t n_kv) {
    memset(b, 0, sizeof *b);
    gw_buf_bytes(b, "GGUF", 4);
    gw_buf_u32(b, 3);
    gw_buf_u64(b, n_tensors);
    gw_buf_u64(b, n_kv);
}

/* A test that breaks the base model with the statements given (on w) and
 * expects code and a message holding `what`. */
#define BAD_MODEL(test, code, what, ...)                                                          \
    Test(gguf_bad, test) {                                                                         \
        gw_t *w = base_model();                                                                    \
        __VA_ARGS__                                                                                \
        expect_fail_gw(w, code, what);                                                             \
    }

Test(gguf_bad, base_model_is_valid) { /* the base the others break */
    gw_t *w = base_model();
    const char *path = tmpdir_file("base.gguf");
    cr_assert_eq(gw_write(w, path), 0);
    gguf_file_t *f = open_ok(path);
    cr_assert_eq(gguf_n_tensors(f), 2);
    gguf_close(f);
    gw_free(w);
    assert_no_leaks();
}

static void expect_eio(const char *path, const char *words) { expect_fail(path, GGUF_EIO, words); }

/* a missing file, a folder, a FIFO (without hanging) */
Test(gguf_bad, not_a_regular_file) { tmpdir_bad_file_paths("gguf", expect_eio); }

Test(gguf_bad, null_arguments) {
    gguf_file_t *f = (gguf_file_t *)1;
    char err[256];
    cr_assert_eq(gguf_open(NULL, &f, err, sizeof err), GGUF_EIO);
    cr_assert_null(f);
    cr_assert_eq(gguf_open("x.gguf", NULL, err, sizeof err), GGUF_EIO);
    cr_assert_eq(gguf_n_tensors(NULL), 0);
    cr_assert_null(gguf_tensor(NULL, 0));
    cr_assert_null(gguf_find_tensor(NULL, "a"));
    cr_assert_eq(gguf_get_int(NULL, "a", NULL), GGUF_ENOTFOUND);
    cr_assert_null(gguf_arr_str(NULL, "a", 0, NULL));
}

Test(gguf_bad, empty_file) { expect_fail_bytes("", 0, GGUF_EFORMAT, "shorter"); }

Test(gguf_bad, shorter_than_the_header) {
    gw_buf_t b;
    header_then(&b, 0, 0);
    expect_fail_bytes(b.p, 23, GGUF_EFORMAT, "shorter than the 24-byte GGUF header");
    gw_buf_free(&b);
}

Test(gguf_bad, bad_magic) {
    gw_buf_t b;
    header_then(&b, 0, 0);
    memcpy(b.p, "GGML", 4);
    expect_fail_bytes(b.p, b.len, GGUF_EFORMAT, "not a GGUF file (magic 'GGML'");
    memcpy(b.p, "\x1b[2J", 4); /* control bytes are not echoed */
    expect_fail_bytes(b.p, b.len, GGUF_EFORMAT, "magic '?[2J'");
    gw_buf_free(&b);
}

BAD_MODEL(version_1, GGUF_EFORMAT, "GGUF version 1 is not supported",
          w->version = 1;)

BAD_MODEL(version_4, GGUF_EFORMAT, "GGUF version 4 is not supported",
          w->version = 4;)

BAD_MODEL(big_endian_version, GGUF_EFORMAT, "big-endian",
          w->version = 0x03000000u;)

BAD_MODEL(key_count_past_the_file, GGUF_EFORMAT, "4611686018427387904 metadata entries cannot fit",
          w->n_kv_field = (int64_t)1 << 62;)

BAD_MODEL(tensor_count_past_the_file, GGUF_EFORMAT, "tensors cannot fit",
          w->n_tensors_field = INT64_MAX;)

Test(gguf_bad, key_count_one_too_many) {
    gw_t *w = gw_new(); /* no tensors: the missing entry is read past the end */
    gw_kv_str(w, "a", "a value long enough for two entries by the count check");
    w->n_kv_field = 2;
    w->alignment = 1; /* no padding after the metadata */
    expect_fail_gw(w, GGUF_EFORMAT, "metadata entry 1: key needs 8 bytes");
}

Test(gguf_bad, tensor_count_one_too_many) {
    gw_t *w = base_model();
    w->n_tensors_field = 3; /* the third info is read from the padding and data */
    uint8_t *p;
    size_t len;
    gw_build(w, &p, &len);
    gw_free(w);
    expect_fail_bytes(p, len, GGUF_EFORMAT, "tensor info 2");
    free(p);
}

Test(gguf_bad, truncated_at_every_byte) {
    gw_t *w = small_model();
    uint8_t *p;
    size_t len;
    gw_build(w, &p, &len);
    const char *path = tmpdir_file("cut.gguf");
    for (size_t n = 0; n < len; n++) {
        cr_assert_eq(gw_write_bytes(path, p, n), 0);
        gguf_file_t *f = (gguf_file_t *)1;
        char err[512] = "";
        int rc = gguf_open(path, &f, err, sizeof err);
        cr_assert_eq(rc, GGUF_EFORMAT, "cut at %zu of %zu: rc %d: %s", n, len, rc, err);
        cr_assert_null(f);
        cr_assert(strstr(err, path), "%s", err);
        static const char *const truncation[] = {"shorter", "cannot fit", "the file ends at",
                                                 "the data section would start",
                                                 "run past the data section"};
        int known = 0;
        for (int k = 0; k < 5; k++) known |= strstr(err, truncation[k]) != NULL;
        cr_assert(known, "cut at %zu: %s", n, err);
        const char *why = n < 24 ? "shorter" : n >= w->data_pos ? "run past the data section" : "";
        cr_assert(strstr(err, why), "cut at %zu (data at %zu): %s", n, w->data_pos, err);
    }
    free(p);
    gw_free(w);
    assert_no_leaks();
}

BAD_MODEL(key_length_over_limit, GGUF_EFORMAT,
          "metadata entry 1: key length 1099511627776 is over the limit",
          gw_buf_u64(&w->kv, (uint64_t)1 << 40);
          w->n_kv++;)

BAD_MODEL(key_length_past_the_file, GGUF_EFORMAT, "key needs 60000 bytes",
          gw_buf_u64(&w->kv, 60000);
          w->n_kv++;)

BAD_MODEL(empty_key, GGUF_EFORMAT, "metadata entry 1: empty key",
          gw_kv_u32(w, "", 1);)

BAD_MODEL(duplicate_key, GGUF_EFORMAT, "duplicate metadata key 'llama.block_count'",
          gw_kv_u32(w, "llama.block_count", 1);
          gw_kv_str(w, "llama.block_count", "two");)

BAD_MODEL(unknown_value_type, GGUF_EFORMAT, "metadata key 'odd': unknown value type 13",
          uint32_t v = 0;
          gw_kv_raw(w, "odd", 13, &v, 4);)

BAD_MODEL(value_type_huge, GGUF_EFORMAT, "unknown value type 4294967295",
          gw_kv_raw(w, "odd", 0xffffffffu, NULL, 0);)

BAD_MODEL(string_over_limit, GGUF_EFORMAT,
          "metadata key 's': string length 67108865 is over the limit",
          uint64_t len = (uint64_t)GGUF_MAX_STRING + 1;
          gw_kv_raw(w, "s", GGUF_V_STRING, &len, 8);)

BAD_MODEL(string_past_the_file, GGUF_EFORMAT, "metadata key 's': string needs 100000 bytes",
          uint64_t len = 100000;
          gw_kv_raw(w, "s", GGUF_V_STRING, &len, 8);)

Test(gguf_bad, scalar_value_cut_off) {
    gw_buf_t b;
    header_then(&b, 0, 1);
    gw_buf_str(&b, "big");
    gw_buf_u32(&b, GGUF_V_UINT64);
    gw_buf_u32(&b, 7); /* 4 of the 8 bytes */
    expect_fail_bytes(b.p, b.len, GGUF_EFORMAT, "metadata key 'big': value needs 8 bytes");
    gw_buf_free(&b);
}

/* An array entry "arr" with this element type and count and no elements. */
static void expect_bad_array(uint32_t elem_type, uint64_t count, const char *what) {
    gw_t *w = base_model();
    uint8_t payload[12];
    memcpy(payload, &elem_type, 4);
    memcpy(payload + 4, &count, 8);
    gw_kv_raw(w, "arr", GGUF_V_ARRAY, payload, sizeof payload);
    expect_fail_gw(w, GGUF_EFORMAT, what);
}

Test(gguf_bad, unknown_array_element_type) {
    expect_bad_array(99, 0, "metadata key 'arr': unknown array element type 99");
}

Test(gguf_bad, nested_array) {
    expect_bad_array(GGUF_V_ARRAY, 1, "arrays of arrays are not supported");
}

Test(gguf_bad, array_over_limit) {
    expect_bad_array(GGUF_V_UINT8, GGUF_MAX_ARRAY + 1,
                     "array of 67108865 elements is over the limit");
}

Test(gguf_bad, array_count_past_the_file) {
    expect_bad_array(GGUF_V_FLOAT64, 1000000, "metadata key 'arr': array data needs 8000000 bytes");
}

Test(gguf_bad, string_array_count_past_the_file) {
    expect_bad_array(GGUF_V_STRING, 50000000, "array of 50000000 strings cannot fit");
}

BAD_MODEL(string_array_element_past_the_file, GGUF_EFORMAT,
          "metadata key 'tokens': string 1 needs 67108864 bytes",
          gw_buf_t b = {0};
          gw_buf_u32(&b, GGUF_V_STRING);
          gw_buf_u64(&b, 3);
          gw_buf_str(&b, "a");
          gw_buf_u64(&b, 1ull << 26); /* under the limit, past the end */
          gw_kv_raw(w, "tokens", GGUF_V_ARRAY, b.p, b.len);
          gw_buf_free(&b);)

BAD_MODEL(string_array_element_over_limit, GGUF_EFORMAT,
          "string 0 length 18446744073709551615 is over the limit",
          gw_buf_t b = {0};
          gw_buf_u32(&b, GGUF_V_STRING);
          gw_buf_u64(&b, 2);
          gw_buf_u64(&b, UINT64_MAX);
          gw_kv_raw(w, "tokens", GGUF_V_ARRAY, b.p, b.len);
          gw_buf_free(&b);)

BAD_MODEL(alignment_not_a_power_of_two, GGUF_EFORMAT, "general.alignment 48 is not a power of two",
          gw_alignment(w, 48);)

BAD_MODEL(alignment_zero, GGUF_EFORMAT, "general.alignment 0 is not a power of two",
          gw_kv_u32(w, "general.alignment", 0);)

BAD_MODEL(alignment_wrong_type, GGUF_EFORMAT, "general.alignment is UINT64, not UINT32",
          gw_kv_u64(w, "general.alignment", 32);)

BAD_MODEL(empty_tensor_name, GGUF_EFORMAT, "tensor info 1: empty name",
          w->tensors[1].name_len = 0;)

BAD_MODEL(tensor_name_too_long, GGUF_EFORMAT,
          "tensor info 2: name length 256 is over the limit of 255",
          char name[GGUF_MAX_NAME + 1];
          memset(name, 'x', GGUF_MAX_NAME);
          name[GGUF_MAX_NAME] = '\0';
          uint64_t ne[] = {32};
          gw_tensor(w, name, GGUF_T_F32, 1, ne, NULL);)

Test(gguf_bad, tensor_name_of_255_bytes_is_fine) {
    gw_t *w = base_model();
    char name[GGUF_MAX_NAME];
    memset(name, 'x', GGUF_MAX_NAME - 1);
    name[GGUF_MAX_NAME - 1] = '\0';
    uint64_t ne[] = {32};
    gw_tensor(w, name, GGUF_T_F32, 1, ne, NULL);
    const char *path = tmpdir_file("long.gguf");
    cr_assert_eq(gw_write(w, path), 0);
    gguf_file_t *f = open_ok(path);
    cr_assert_not_null(gguf_find_tensor(f, name));
    gguf_close(f);
    gw_free(w);
}

BAD_MODEL(nul_in_tensor_name, GGUF_EFORMAT, "holds a NUL byte",
          w->tensors[1].name[0] = '\0'; /* "\0" then nothing: would alias "" */)

BAD_MODEL(duplicate_tensor_name, GGUF_EFORMAT, "duplicate tensor name 'norm'",
          uint64_t ne[] = {32};
          gw_tensor(w, "norm", GGUF_T_F32, 1, ne, NULL);)

BAD_MODEL(zero_dims, GGUF_EFORMAT, "tensor 'norm': 0 dims (1 to 4 allowed)",
          w->tensors[0].n_dims = 0;)

BAD_MODEL(five_dims, GGUF_EFORMAT, "tensor 't5': 5 dims",
          uint64_t ne[] = {32, 1, 1, 1, 1};
          gw_tensor(w, "t5", GGUF_T_F32, 5, ne, NULL);)

BAD_MODEL(huge_dim_count, GGUF_EFORMAT, "2147483647 dims",
          /* the writer emits 8 dims: the reader must stop at n_dims */
          w->tensors[1].n_dims = 0x7fffffff;)

BAD_MODEL(zero_extent, GGUF_EFORMAT, "tensor 'w': ne[1] = 0",
          w->tensors[1].ne[1] = 0;)

BAD_MODEL(extent_over_int64, GGUF_EFORMAT, "tensor 'norm': ne[0] = 9223372036854775808",
          w->tensors[0].ne[0] = (uint64_t)1 << 63;)

BAD_MODEL(element_count_overflows, GGUF_EFORMAT, "tensor 'big': element count overflows at ne[2]",
          uint64_t ne[] = {1ull << 31, 1ull << 31, 4};
          gw_tensor(w, "big", GGUF_T_F32, 3, ne, NULL);)

BAD_MODEL(byte_size_overflows, GGUF_EFORMAT, "tensor 'big': byte size overflows",
          uint64_t ne[] = {1ull << 61, 2}; /* 2^62 elements fit int64; 2^64 bytes do not */
          gw_tensor(w, "big", GGUF_T_F32, 2, ne, NULL);)

BAD_MODEL(unsupported_type, GGUF_ETYPE,
          "tensor 'w': type Q6_K is not supported (F32, F16, BF16, Q8_0, Q4_0 and Q4_1 are)",
          w->tensors[1].type = 14;)

BAD_MODEL(unknown_type, GGUF_ETYPE, "tensor 'norm': type 77 is not supported",
          w->tensors[0].type = 77;)

BAD_MODEL(retired_type_id, GGUF_ETYPE, "tensor 'norm': type 4 is not supported",
          w->tensors[0].type = 4; /* Q4_2, removed from ggml */)

Test(gguf_bad, row_not_whole_blocks) {
    gw_t *w = base_model();
    w->tensors[1].ne[0] = 48;
    expect_fail_gw(w, GGUF_EFORMAT,
                   "tensor 'w': row length ne[0] = 48 is not a multiple of the Q4_1 block of 32");
}

BAD_MODEL(misaligned_offset, GGUF_EFORMAT,
          "tensor 'w': offset 144 is not a multiple of the alignment 32",
          w->tensors[1].offset_set = 1;
          w->tensors[1].offset = 144; /* natural 128 + 16 */)

BAD_MODEL(offset_past_the_data, GGUF_EFORMAT,
          "tensor 'w': bytes [4096, +80) run past the data section",
          w->tensors[1].offset_set = 1;
          w->tensors[1].offset = 4096;)

BAD_MODEL(offset_near_2_to_64, GGUF_EFORMAT, "run past the data section",
          w->tensors[1].offset_set = 1;
          w->tensors[1].offset = UINT64_MAX - 31; /* aligned; offset + size wraps */)

BAD_MODEL(tensor_crosses_the_end, GGUF_EFORMAT,
          "tensor 'w': bytes [160, +80) run past the data section (208",
          w->tensors[1].offset_set = 1;
          /* the data section is 128 + 80 bytes: [160, 240) crosses its end */
          w->tensors[1].offset = 160;)

Test(gguf_bad, data_section_cut) {
    gw_t *w = base_model();
    uint8_t *p;
    size_t len;
    gw_build(w, &p, &len);
    gw_free(w);
    expect_fail_bytes(p, len - 1, GGUF_EFORMAT, "tensor 'w': bytes [128, +80) run past");
    free(p);
}

Test(gguf_bad, data_section_missing) {
    gw_t *w = base_model(); /* infos end off the alignment; the file ends with them */
    uint8_t *p;
    size_t len;
    gw_build(w, &p, &len);
    size_t end = w->tensors[1].info_pos + 8 + 1 + 4 + 16 + 4 + 8;
    cr_assert_neq(end % 32, 0);
    gw_free(w);
    expect_fail_bytes(p, end, GGUF_EFORMAT, "the data section would start at byte");
    free(p);
}

BAD_MODEL(tensors_overlap, GGUF_EFORMAT,
          "tensor 'w': bytes [96, +80) overlap tensor 'norm' [0, +128)",
          w->tensors[1].offset_set = 1;
          w->tensors[1].offset = 96; /* inside 'norm' [0, 128) */)

BAD_MODEL(tensors_share_an_offset, GGUF_EFORMAT, "overlap tensor",
          uint64_t ne[] = {32};
          gw_tensor_t *t = gw_tensor(w, "copy", GGUF_T_F32, 1, ne, NULL);
          t->offset_set = 1;
          t->offset = 0;)

BAD_MODEL(control_bytes_in_names_are_not_echoed, GGUF_ETYPE, "tensor '?[31mred?': type Q6_K",
          uint64_t ne[] = {32};
          gw_tensor(w, "\x1b[31mred\n", 14, 1, ne, NULL);)

BAD_MODEL(long_names_are_cut_in_messages, GGUF_ETYPE, "nnn...': type Q6_K",
          char name[250];
          memset(name, 'n', sizeof name - 1);
          name[sizeof name - 1] = '\0';
          uint64_t ne[] = {32};
          gw_tensor(w, name, 14, 1, ne, NULL);)

/* ---- random mutations of a valid file ---- */

static int cmp_tensor_data(const void *a, const void *b) {
    const char *x = (*(const gguf_tensor_t *const *)a)->data;
    const char *y = (*(const gguf_tensor_t *const *)b)->data;
    return (x > y) - (x < y);
}

/* p[0, n) lies inside the file [lo, hi). */
static int inside(const void *p, size_t n, const uint8_t *lo, const uint8_t *hi) {
    const uint8_t *q = p;
    return q >= lo && q <= hi && n <= (size_t)(hi - q);
}

/* Write bytes as the file and open it: a refusal must be clean and name the
 * file; an acceptance must give keys and tensors that are consistent and lie
 * inside the file, tensors disjoint and aligned. Every byte handed out is
 * read, so a pointer past the mapping faults. Returns 1 when it opened. */
static int open_mutant(const char *path, const uint8_t *buf, size_t n, uint64_t seed, int iter) {
    cr_assert_eq(gw_write_bytes(path, buf, n), 0);
    gguf_file_t *f = (gguf_file_t *)1;
    char err[512] = "";
    int rc = gguf_open(path, &f, err, sizeof err);
    if (rc != GGUF_OK) {
        cr_assert_null(f);
        cr_assert(rc == GGUF_EFORMAT || rc == GGUF_ETYPE, "seed %llu iter %d: rc %d: %s",
                  (unsigned long long)seed, iter, rc, err);
        cr_assert(strstr(err, path), "seed %llu iter %d: %s", (unsigned long long)seed, iter, err);
        return 0;
    }
    size_t data_len;
    const uint8_t *data = gguf_data(f, &data_len);
    const uint8_t *lo = data - gguf_data_offset(f), *hi = data + data_len;
    cr_assert_eq((size_t)(hi - lo), n, "seed %llu iter %d", (unsigned long long)seed, iter);
    size_t align = gguf_alignment(f);
    cr_assert(align > 0 && (align & (align - 1)) == 0);
    unsigned sum = 0;
    for (int i = 0; i < gguf_n_keys(f); i++) {
        size_t klen;
        const char *key = gguf_key_name(f, i, &klen);
        cr_assert(key && klen > 0 && inside(key, klen, lo, hi));
        if (memchr(key, 0, klen)) continue; /* not reachable by name */
        char name[GGUF_MAX_KEY + 1];
        memcpy(name, key, klen);
        name[klen] = '\0';
        gguf_vtype_t type, et;
        size_t count, len;
        cr_assert_eq(gguf_key_type(f, name, &type), GGUF_OK);
        const char *s;
        if (type == GGUF_V_STRING) {
            cr_assert_eq(gguf_get_str(f, name, &s, &len), GGUF_OK);
            cr_assert(inside(s, len, lo, hi));
            for (size_t k = 0; k < len; k++) sum += (unsigned char)s[k];
        } else if (type == GGUF_V_ARRAY) {
            cr_assert_eq(gguf_get_arr(f, name, &et, &count), GGUF_OK);
            cr_assert(count <= GGUF_MAX_ARRAY && et != GGUF_V_ARRAY);
            for (size_t k = 0; et == GGUF_V_STRING && k < count; k++) {
                s = gguf_arr_str(f, name, k, &len);
                cr_assert(s && inside(s, len, lo, hi));
                for (size_t j = 0; j < len; j++) sum += (unsigned char)s[j];
            }
            if (et != GGUF_V_STRING) {
                static const size_t size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
                const uint8_t *p = gguf_arr_data(f, name);
                cr_assert(p && inside(p, count * size[et], lo, hi));
                for (size_t j = 0; j < count * size[et]; j++) sum += p[j];
            }
        } else {
            int64_t iv;
            double dv;
            int bv;
            sum += (unsigned)(gguf_get_int(f, name, &iv) == GGUF_OK ? iv : 0);
            if (gguf_get_float(f, name, &dv) == GGUF_OK && dv > 0 && dv < 1e9) sum += (unsigned)dv;
            sum += (unsigned)(gguf_get_bool(f, name, &bv) == GGUF_OK ? bv : 0);
        }
    }
    int count = gguf_n_tensors(f);
    const gguf_tensor_t **by_data = calloc((size_t)count + 1, sizeof *by_data);
    for (int i = 0; i < count; i++) {
        const gguf_tensor_t *t = by_data[i] = gguf_tensor(f, i);
        cr_assert(t->name[0] && strlen(t->name) < GGUF_MAX_NAME);
        cr_assert_eq(gguf_find_tensor(f, t->name), t, "seed %llu iter %d", (unsigned long long)seed,
                     iter);
        cr_assert(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS);
        int64_t numel = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) {
            cr_assert_geq(t->ne[d], 1);
            if (d >= t->n_dims) cr_assert_eq(t->ne[d], 1);
            numel *= t->ne[d];
        }
        cr_assert_eq(numel, t->numel);
        int block = gguf_type_block(t->type);
        cr_assert_gt(block, 0);
        cr_assert_eq(t->ne[0] % block, 0);
        cr_assert_eq(t->nbytes, (size_t)numel / (size_t)block * gguf_type_block_bytes(t->type));
        cr_assert(inside(t->data, t->nbytes, data, hi), "seed %llu iter %d: '%s' outside the data",
                  (unsigned long long)seed, iter, t->name);
        cr_assert_eq((size_t)((const uint8_t *)t->data - data) % align, 0);
        for (size_t k = 0; k < t->nbytes; k++) sum += ((const uint8_t *)t->data)[k];
    }
    qsort(by_data, (size_t)count, sizeof *by_data, cmp_tensor_data);
    for (int i = 1; i < count; i++)
        cr_assert((const uint8_t *)by_data[i]->data >=
                      (const uint8_t *)by_data[i - 1]->data + by_data[i - 1]->nbytes,
                  "seed %llu iter %d: '%s' overlaps '%s'", (unsigned long long)seed, iter,
                  by_data[i]->name, by_data[i - 1]->name);
    free(by_data);
    gguf_close(f);
    (void)sum;
    return 1;
}

/* A byte-mutation run: the file the mutants go to, its seed, the length of
 * the header, metadata, infos and padding. */
typedef struct {
    const char *path;
    uint64_t seed;
    size_t head;
} mutant_t;

/* One edit: a bit flip anywhere or in the head, a random byte in the head,
 * truncation, or a few bytes of garbage at the end. */
static void byte_edit(uint8_t *buf, size_t *n, size_t len, uint64_t r, void *ctx) {
    size_t at = (size_t)((r >> 8) % ((mutant_t *)ctx)->head);
    switch (r % 6) {
    case 0: if (*n) buf[(r >> 8) % *n] ^= (uint8_t)(1u << ((r >> 40) % 8)); break;
    case 1:
    case 2: buf[at] ^= (uint8_t)(1u << ((r >> 40) % 8)); break;
    case 3: buf[at] = (uint8_t)(r >> 40); break;
    case 4: *n = (size_t)((r >> 8) % (len + 1)); break; /* truncate */
    case 5: { /* grow */
        size_t add = (size_t)((r >> 16) % 64);
        if (add > len + 64 - *n) add = len + 64 - *n;
        memset(buf + *n, (int)(r >> 40), add);
        *n += add;
        break;
    }
    }
}

static int try_mutant(const uint8_t *buf, size_t n, int iter, void *ctx) {
    mutant_t *m = ctx;
    return open_mutant(m->path, buf, n, m->seed, iter);
}

/* Byte-level damage: bit flips anywhere, random bytes in the header and
 * infos, truncation, growth. */
Test(gguf_fuzz, random_byte_mutations, .timeout = 300) {
    gw_t *w = small_model();
    uint8_t *orig;
    size_t len;
    gw_build(w, &orig, &len);
    size_t head = w->data_pos; /* header, metadata, infos and padding */
    gw_free(w);
    mutant_t m = {tmpdir_file("mut.gguf"), fuzz_seed(0x9e3779b97f4a7c15ull), head};
    uint64_t seed = m.seed;
    int iters = 3000, opened = fuzz_byte_mutants(orig, len, seed, iters, byte_edit, try_mutant, &m);
    cr_log_info("byte mutations: %d opened, %d refused (seed %llu)", opened, iters - opened,
                (unsigned long long)seed);
    cr_assert_gt(opened, 0);
    cr_assert_lt(opened, iters);
    free(orig);
    assert_no_leaks();
}

/* The numbers of the layout (counts, lengths, types, dims, offsets) replaced
 * by edge values, at the exact places of the tensor infos and at random
 * places in the metadata: these get past the first checks and exercise the
 * range, size, overflow and overlap ones. */
Test(gguf_fuzz, random_word_mutations, .timeout = 300) {
    static const uint64_t edge[] = {0,
                                    1,
                                    2,
                                    3,
                                    4,
                                    7,
                                    8,
                                    9,
                                    12,
                                    13,
                                    14,
                                    16,
                                    30,
                                    31,
                                    32,
                                    33,
                                    64,
                                    96,
                                    128,
                                    160,
                                    192,
                                    255,
                                    256,
                                    4096,
                                    65535,
                                    65536,
                                    0x7fffffffull,
                                    0x80000000ull,
                                    0xffffffffull,
                                    1ull << 32,
                                    (1ull << 26) + 1,
                                    1ull << 62,
                                    (uint64_t)INT64_MAX,
                                    1ull << 63,
                                    UINT64_MAX - 31,
                                    UINT64_MAX};
    const size_t n_edge = sizeof edge / sizeof edge[0];
    gw_t *w = small_model();
    uint8_t *orig;
    size_t len;
    gw_build(w, &orig, &len);
    /* the places of every u32/u64 field of the tensor infos and the header */
    size_t fields[64], widths[64], n_fields = 0;
    fields[n_fields] = 4, widths[n_fields++] = 4;  /* version */
    fields[n_fields] = 8, widths[n_fields++] = 8;  /* n_tensors */
    fields[n_fields] = 16, widths[n_fields++] = 8; /* n_kv */
    for (int i = 0; i < w->n_tensors; i++) {
        const gw_tensor_t *t = &w->tensors[i];
        size_t p = t->info_pos;
        fields[n_fields] = p, widths[n_fields++] = 8; /* name length */
        p += 8 + t->name_len;
        fields[n_fields] = p, widths[n_fields++] = 4; /* n_dims */
        p += 4;
        for (uint32_t d = 0; d < t->n_dims; d++, p += 8)
            fields[n_fields] = p, widths[n_fields++] = 8; /* ne[d] */
        fields[n_fields] = p, widths[n_fields++] = 4; /* type */
        fields[n_fields] = p + 4, widths[n_fields++] = 8; /* offset */
    }
    size_t kv_lo = w->kv_pos, kv_hi = w->tensors[0].info_pos;
    gw_free(w);
    uint8_t *buf = malloc(len);
    const char *path = tmpdir_file("word.gguf");
    uint64_t seed = fuzz_seed(0x9e3779b97f4a7c15ull), s = seed | 1;
    int opened = 0, iters = 3000;
    for (int iter = 0; iter < iters; iter++) {
        memcpy(buf, orig, len);
        int edits = 1 + (int)(rng_next(&s) % 3);
        for (int k = 0; k < edits; k++) {
            uint64_t r = rng_next(&s), v = edge[(r >> 16) % n_edge];
            if ((r >> 40) % 4 == 0) v = (uint64_t)((int64_t)v + (int64_t)((r >> 44) % 65) - 32);
            size_t at, width;
            if (r % 3) {
                size_t i = (size_t)((r >> 8) % n_fields);
                at = fields[i], width = widths[i];
            } else { /* anywhere in the metadata */
                width = (r >> 50) % 2 ? 8 : 4;
                at = kv_lo + (size_t)((r >> 8) % (kv_hi - kv_lo - width));
            }
            memcpy(buf + at, &v, width); /* the low bytes, little-endian */
        }
        opened += open_mutant(path, buf, len, seed, iter);
    }
    cr_log_info("word mutations: %d opened, %d refused (seed %llu)", opened, iters - opened,
                (unsigned long long)seed);
    cr_assert_gt(opened, 0);
    cr_assert_lt(opened, iters);
    free(buf);
    free(orig);
    assert_no_leaks();
}
