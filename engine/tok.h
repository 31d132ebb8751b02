/* engine/tok.h - the tokenizer interface: text to ids, ids back to bytes,
 * special tokens by name, vocabulary size. One table of function pointers
 * per tokenizer kind: WordPiece (engine/tokenizer.h, BERT) now, byte-level
 * BPE next; every caller (the job layer, the CLI, the engine) goes through
 * the tok_* calls here and never learns which kind it holds.
 *
 * Encoding adds what the model expects around the text ([CLS] .. [SEP] for
 * WordPiece; BOS for a decoder when its config says so) and truncates to
 * min(max_len, max_ids), keeping the closing special token. Decoding is
 * incremental: tok_decode_next turns one more id into the bytes it completes
 * (a byte-level BPE token may end mid-way through a UTF-8 character: those
 * bytes wait in the state until the character is whole), so a stream of
 * generated tokens can be sent as it comes.
 *
 * Special-token names are roles, not pieces: "bos", "eos", "cls", "sep",
 * "pad", "unk", "mask"; a kind maps the ones it has (-1 otherwise). A
 * special token by its text ("<|im_end|>", "[SEP]") is tok_lookup.
 *
 * Kinds: WordPiece (engine/tokenizer.h), byte-level BPE (engine/tok_bpe.h).
 *
 * Ownership: a tokenizer owns its vocabulary; tok_destroy frees it (NULL:
 * no-op). Thread-safety: every call but destroy is read-only on the
 * tokenizer and safe from any thread (a decode state belongs to its caller).
 */
#ifndef SLUICE_TOK_H
#define SLUICE_TOK_H

#include <stddef.h>
#include <stdint.h>

enum { TOK_OK = 0, TOK_EIO = -1, TOK_EFORMAT = -2, TOK_ENOMEM = -3, TOK_EUTF8 = -4, TOK_EINVAL = -5 };

typedef struct tok tok_t;

/* Incremental decode: zero it before the first token of a stream. */
typedef struct {
    int n_tokens;                       /* tokens decoded so far */
    _Alignas(8) unsigned char impl[32]; /* the kind's own (BPE: bytes of an incomplete UTF-8 character) */
} tok_decode_state_t;

typedef struct tok_vtable {
    const char *kind; /* "wordpiece", "bpe" */
    int (*encode)(const tok_t *t, const char *text, size_t len, int32_t *ids, int max_ids, int *n_untruncated,
                  char *err, size_t errlen);
    /* bytes of token id after those already decoded: written to out (cap
     * bytes), count returned (0: nothing new, e.g. a special token or half a
     * character), or TOK_EINVAL for an id out of range. */
    int (*decode_next)(const tok_t *t, tok_decode_state_t *st, int32_t id, char *out, size_t cap);
    /* End of stream: what the state still holds (NULL: a kind that holds nothing). */
    int (*decode_flush)(const tok_t *t, tok_decode_state_t *st, char *out, size_t cap);
    int32_t (*special)(const tok_t *t, const char *role);
    int32_t (*lookup)(const tok_t *t, const char *piece);
    const char *(*piece)(const tok_t *t, int32_t id);
    int (*vocab_size)(const tok_t *t);
    int (*max_len)(const tok_t *t);
    void (*destroy)(tok_t *t);
} tok_vtable_t;

/* The first member of every tokenizer implementation. */
struct tok {
    const tok_vtable_t *vt;
};

/* Encode text (len bytes, need not be NUL-terminated; NULL when len is 0)
 * into ids (capacity max_ids; at most min(max_len, max_ids) are written).
 * Returns the count written or a negative TOK_E* code with a message in err;
 * *n_untruncated, if not NULL, receives the count before truncation (so
 * callers can refuse over-long input). */
int tok_encode(const tok_t *t, const char *text, size_t len, int32_t *ids, int max_ids, int *n_untruncated,
               char *err, size_t errlen);
int tok_decode_next(const tok_t *t, tok_decode_state_t *st, int32_t id, char *out, size_t cap);
/* End a stream: bytes still held (an incomplete character becomes U+FFFD). */
int tok_decode_flush(const tok_t *t, tok_decode_state_t *st, char *out, size_t cap);
/* Decode n ids at once into out (NUL-terminated, truncated to cap): the byte
 * count, or TOK_EINVAL. */
int tok_decode(const tok_t *t, const int32_t *ids, int n, char *out, size_t cap);
int32_t tok_special(const tok_t *t, const char *role); /* -1 when the kind has none */
int32_t tok_lookup(const tok_t *t, const char *piece); /* -1 when absent */
const char *tok_piece(const tok_t *t, int32_t id);     /* NULL when out of range */
int tok_vocab_size(const tok_t *t);
int tok_max_len(const tok_t *t);
const char *tok_kind(const tok_t *t);
void tok_destroy(tok_t *t); /* NULL is a no-op */

/* The encoder roles, as ids (tok_special). */
int32_t tok_cls_id(const tok_t *t);
int32_t tok_sep_id(const tok_t *t);
int32_t tok_pad_id(const tok_t *t);
int32_t tok_unk_id(const tok_t *t);

#endif
