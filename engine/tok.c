/* engine/tok.c - calls through a tokenizer's table. */
#include <stdio.h>

#include "engine/tok.h"

int tok_encode(const tok_t *t, const char *text, size_t len, int32_t *ids, int max_ids, int *n_untruncated,
               char *err, size_t errlen) {
    if (!t) {
        if (err && errlen) snprintf(err, errlen, "tok_encode: NULL tokenizer");
        return TOK_EINVAL;
    }
    return t->vt->encode(t, text, len, ids, max_ids, n_untruncated, err, errlen);
}

int tok_decode_next(const tok_t *t, tok_decode_state_t *st, int32_t id, char *out, size_t cap) {
    return t->vt->decode_next(t, st, id, out, cap);
}

int tok_decode_flush(const tok_t *t, tok_decode_state_t *st, char *out, size_t cap) {
    return t->vt->decode_flush ? t->vt->decode_flush(t, st, out, cap) : 0;
}

int tok_decode(const tok_t *t, const int32_t *ids, int n, char *out, size_t cap) {
    tok_decode_state_t st = {0};
    size_t w = 0;
    if (!cap) return TOK_EINVAL;
    for (int i = 0; i < n; i++) {
        int k = t->vt->decode_next(t, &st, ids[i], out + w, cap - 1 - w);
        if (k < 0) return k;
        w += (size_t)k;
    }
    int k = tok_decode_flush(t, &st, out + w, cap - 1 - w);
    if (k > 0) w += (size_t)k;
    out[w] = '\0';
    return (int)w;
}

int32_t tok_special(const tok_t *t, const char *role) { return t->vt->special(t, role); }
int32_t tok_lookup(const tok_t *t, const char *piece) { return t->vt->lookup(t, piece); }
const char *tok_piece(const tok_t *t, int32_t id) { return t->vt->piece(t, id); }
int tok_vocab_size(const tok_t *t) { return t->vt->vocab_size(t); }
int tok_max_len(const tok_t *t) { return t->vt->max_len(t); }
const char *tok_kind(const tok_t *t) { return t->vt->kind; }

void tok_destroy(tok_t *t) {
    if (t) t->vt->destroy(t);
}

int32_t tok_cls_id(const tok_t *t) { return tok_special(t, "cls"); }
int32_t tok_sep_id(const tok_t *t) { return tok_special(t, "sep"); }
int32_t tok_pad_id(const tok_t *t) { return tok_special(t, "pad"); }
int32_t tok_unk_id(const tok_t *t) { return tok_special(t, "unk"); }
