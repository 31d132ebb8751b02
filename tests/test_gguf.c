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
#include "tests/support_leaks.h"
#include "tests/support_tmpdir.h"

#define LLM_PATH "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"

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
    bits = exp == 31 ? sign | 0x7f800000u | (mant << 13) : sign | ((exp + 112) << 23) | (mant << 13);
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

/* ---- the real model ---- */

Test(gguf, real_model) {
    if (access(LLM_PATH, R_OK) != 0)
        cr_skip_test("%s is missing (run `make model`)", LLM_PATH);
    gguf_file_t *f = open_ok(LLM_PATH);
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
    base = (const uint8_t *)te->data - 1785664; /* the data section starts at byte 1,785,664 */
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
