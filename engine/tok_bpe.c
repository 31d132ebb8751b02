/* engine/tok_bpe.c - engine/bpe.h through the tokenizer table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tok_bpe.h"
#include "kernels/util.h"

typedef struct {
    tok_t base; /* the interface: first */
    bpe_t *bpe;
    int max_len;
} bpe_tok_t;

_Static_assert(sizeof(bpe_decoder_t) <= sizeof(((tok_decode_state_t *)0)->impl),
               "tok_decode_state_t.impl holds a bpe_decoder_t");

static const bpe_tok_t *bt(const tok_t *t) { return (const bpe_tok_t *)t; }

static int map_rc(int rc) {
    switch (rc) {
    case BPE_OK: return TOK_OK;
    case BPE_EUTF8: return TOK_EUTF8;
    case BPE_ENOMEM: return TOK_ENOMEM;
    case BPE_EFORMAT: return TOK_EFORMAT;
    case BPE_EIO: return TOK_EIO;
    default: return TOK_EINVAL;
    }
}

static int b_encode(const tok_t *t, const char *text, size_t len, int32_t *ids, int max_ids, int *n_untruncated,
                    char *err, size_t errlen) {
    const bpe_tok_t *b = bt(t);
    int limit = b->max_len < max_ids ? b->max_len : max_ids;
    if (limit < 1) {
        util_errf(err, errlen, "tok_encode: room for %d ids", max_ids);
        return TOK_EINVAL;
    }
    int bos = bpe_add_bos(b->bpe) && bpe_bos_id(b->bpe) >= 0;
    if (bos) ids[0] = bpe_bos_id(b->bpe);
    size_t n = 0;
    int rc = bpe_encode(b->bpe, text, len, ids + bos, (size_t)(limit - bos), &n, BPE_PARSE_SPECIAL, err, errlen);
    if (rc) return map_rc(rc);
    size_t total = n + (size_t)bos;
    if (n_untruncated) *n_untruncated = total > 0x7fffffff ? 0x7fffffff : (int)total;
    return total < (size_t)limit ? (int)total : limit;
}

static int b_decode_next(const tok_t *t, tok_decode_state_t *st, int32_t id, char *out, size_t cap) {
    const bpe_t *b = bt(t)->bpe;
    bpe_decoder_t *d = (bpe_decoder_t *)(void *)st->impl;
    if (st->n_tokens++ == 0) bpe_decoder_init(d, BPE_SKIP_SPECIAL);
    /* bpe_decode_step wants room for its worst case; a token's bytes are short */
    char local[1024], *buf = local;
    size_t need = bpe_decode_step_max(b);
    if (need > sizeof local && !(buf = malloc(need))) return TOK_ENOMEM;
    int k = bpe_decode_step(b, d, id, buf, need > sizeof local ? need : sizeof local);
    if (k > 0) {
        if ((size_t)k > cap) k = (int)cap;
        memcpy(out, buf, (size_t)k);
    }
    if (buf != local) free(buf);
    return k < 0 ? TOK_EINVAL : k;
}

static int b_decode_flush(const tok_t *t, tok_decode_state_t *st, char *out, size_t cap) {
    (void)t;
    if (st->n_tokens == 0) return 0;
    char buf[8];
    int k = bpe_decode_flush((bpe_decoder_t *)(void *)st->impl, buf, sizeof buf);
    if (k > (int)cap) k = (int)cap;
    if (k > 0) memcpy(out, buf, (size_t)k);
    return k < 0 ? 0 : k;
}

static int32_t b_special(const tok_t *t, const char *role) {
    const bpe_t *b = bt(t)->bpe;
    if (!role) return -1;
    if (!strcmp(role, "bos")) return bpe_bos_id(b);
    if (!strcmp(role, "eos")) return bpe_eos_id(b);
    if (!strcmp(role, "unk")) return bpe_unk_id(b);
    return -1;
}

static int32_t b_lookup(const tok_t *t, const char *piece) {
    return piece ? bpe_lookup(bt(t)->bpe, piece, strlen(piece)) : -1;
}

static const char *b_piece(const tok_t *t, int32_t id) { return bpe_token_text(bt(t)->bpe, id); }
static int b_vocab_size(const tok_t *t) { return bpe_vocab_size(bt(t)->bpe); }
static int b_max_len(const tok_t *t) { return bt(t)->max_len; }

static void b_destroy(tok_t *t) {
    bpe_tok_t *b = (bpe_tok_t *)t;
    bpe_destroy(b->bpe);
    free(b);
}

static const tok_vtable_t BPE = {
    .kind = "bpe",
    .encode = b_encode,
    .decode_next = b_decode_next,
    .decode_flush = b_decode_flush,
    .special = b_special,
    .lookup = b_lookup,
    .piece = b_piece,
    .vocab_size = b_vocab_size,
    .max_len = b_max_len,
    .destroy = b_destroy,
};

int tok_bpe_wrap(bpe_t *bpe, int max_len, tok_t **out, char *err, size_t errlen) {
    *out = NULL;
    if (!bpe || max_len < 1) {
        bpe_destroy(bpe);
        util_errf(err, errlen, "tok_bpe_wrap: no tokenizer or max_len %d", max_len);
        return TOK_EINVAL;
    }
    bpe_tok_t *b = calloc(1, sizeof *b);
    if (!b) {
        bpe_destroy(bpe);
        util_errf(err, errlen, "out of memory");
        return TOK_ENOMEM;
    }
    b->base.vt = &BPE;
    b->bpe = bpe;
    b->max_len = max_len;
    *out = &b->base;
    return TOK_OK;
}

int tok_bpe_from_gguf(const gguf_file_t *f, tok_t **out, char *err, size_t errlen) {
    *out = NULL;
    bpe_t *bpe = NULL;
    int rc = bpe_create_from_gguf(f, &bpe, err, errlen);
    if (rc) return map_rc(rc);
    int64_t ctx = 2048;
    const char *arch = NULL;
    size_t alen = 0;
    if (!gguf_get_str(f, "general.architecture", &arch, &alen) && alen < 64) {
        char key[96];
        snprintf(key, sizeof key, "%.*s.context_length", (int)alen, arch);
        int64_t v;
        if (!gguf_get_int(f, key, &v) && v > 0 && v <= 1 << 24) ctx = v;
    }
    return tok_bpe_wrap(bpe, (int)ctx, out, err, errlen);
}

const bpe_t *tok_bpe(const tok_t *t) { return t && t->vt == &BPE ? bt(t)->bpe : NULL; }
