/* engine/bpe.h - byte-level BPE tokenizer (GPT-2 family), built from a GGUF's
 * own vocabulary: token for token the same as HF `tokenizers` with
 * pre_tokenizer Sequence[Digits(individual_digits=True),
 * ByteLevel(add_prefix_space=False, use_regex=True)], which is what llama.cpp
 * runs for `tokenizer.ggml.pre` = "smollm" (SmolLM2).
 *
 * Encoding pipeline:
 *   1. special tokens (every token of type CONTROL or USER_DEFINED, e.g.
 *      "<|im_start|>") are matched in the raw bytes first, leftmost-longest,
 *      when BPE_PARSE_SPECIAL is given; otherwise their text is plain text
 *      (use that for text from users, so it cannot forge "<|im_end|>");
 *   2. the text between them is split: every \p{N} character alone, then the
 *      GPT-2 pattern inside each remaining piece:
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      (\s is White_Space: U+0009..U+000D, U+0085 and Z*, as Oniguruma's);
 *   3. each chunk's bytes are mapped to GPT-2's printable byte alphabet (a
 *      byte the vocabulary has no token for is dropped, as HF does) and
 *      merged by rank (lowest rank first, leftmost on ties) with a binary heap;
 *   4. the final symbols are looked up in the vocabulary.
 * The splitter is hand-written over utf8proc's categories with an ASCII table.
 *
 * Invalid UTF-8 input is refused with BPE_EUTF8 and "invalid UTF-8 at byte N".
 * Scratch memory per call is linear in the longest pre-token chunk (40 bytes
 * per byte of it; a chunk is one run of letters, of punctuation or of
 * whitespace), never in the whole input: an 8 MB text of words costs a few
 * KB besides its ids, a 1 MB run of letters 40 MB. Callers bound the input.
 *
 * Decoding maps ids back to bytes (the byte-level reverse map; special tokens
 * to their text, or nothing with BPE_SKIP_SPECIAL). bpe_decode_step is the
 * streaming form: it never emits part of a UTF-8 character (an incomplete
 * sequence is held back until completed) and replaces each maximal ill-formed
 * subsequence with U+FFFD (as Python's errors="replace" and Rust's
 * from_utf8_lossy), a held-back tail at bpe_decode_flush. bpe_decode is the
 * same over a whole list, so streaming and whole decoding agree byte for byte.
 *
 * Ownership: bpe_t owns copies of everything it was built from (the GGUF may
 * be closed afterwards). Encoding, decoding and lookups are read-only and
 * thread-safe on one bpe_t; a bpe_decoder_t belongs to one stream.
 */
#ifndef SLUICE_BPE_H
#define SLUICE_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

enum {
    BPE_OK = 0,
    BPE_EIO = -1,
    BPE_EFORMAT = -2, /* bad vocabulary / unsupported tokenizer */
    BPE_ENOMEM = -3,
    BPE_EUTF8 = -4,   /* invalid UTF-8 input */
    BPE_EINVAL = -5,  /* bad argument (NULL text with len > 0, unknown id, ...) */
};

/* Token types, as llama.cpp stores them in tokenizer.ggml.token_type. */
enum {
    BPE_TT_NORMAL = 1,
    BPE_TT_UNKNOWN = 2,
    BPE_TT_CONTROL = 3,
    BPE_TT_USER_DEFINED = 4,
    BPE_TT_UNUSED = 5,
    BPE_TT_BYTE = 6,
};

/* encode/decode flags */
#define BPE_PARSE_SPECIAL 1u /* encode: special-token text becomes the special id */
#define BPE_SKIP_SPECIAL 2u  /* decode: CONTROL tokens produce no text */

/* The plain-array description bpe_create copies from. Strings are (pointer,
 * length) pairs, as GGUF stores them; token strings are in the byte-level
 * alphabet ("Ġthe"), merges are "left right" with one space. */
typedef struct {
    int n_tokens;
    const char *const *tokens;  /* [n_tokens] */
    const size_t *token_lens;   /* [n_tokens] bytes */
    const int32_t *types;       /* [n_tokens] BPE_TT_*, or NULL: all NORMAL */
    int n_merges;
    const char *const *merges;  /* [n_merges], rank = index */
    const size_t *merge_lens;   /* [n_merges] bytes */
    int32_t bos, eos, unk;      /* ids, or -1 when the model has none */
    int add_bos;                /* 1: prompts start with bos (bpe_encode never adds it) */
} bpe_vocab_t;

typedef struct bpe bpe_t;

/* Build from arrays. Refuses (BPE_EFORMAT, message naming the entry) empty or
 * duplicate tokens, invalid UTF-8, a merge that is not "a b" of two known
 * tokens whose concatenation is a token, special ids out of range. A byte
 * whose single-character token is missing is allowed: it is dropped from the
 * text before merging, as HF's BPE without unk_token does (SmolLM2 lacks 21
 * of the 256, e.g. 0x04 and 0xF1; such text does not round-trip). */
int bpe_create(const bpe_vocab_t *v, bpe_t **out, char *err, size_t errlen);

/* Build from a GGUF's tokenizer.ggml.* keys: model must be "gpt2" and pre
 * "smollm" (any other pre-tokenizer is BPE_EFORMAT naming it: we would
 * tokenize differently from the model's own library). Reads tokens, merges,
 * token_type, bos/eos/unknown_token_id and add_bos_token. */
int bpe_create_from_gguf(const gguf_file_t *f, bpe_t **out, char *err, size_t errlen);

void bpe_destroy(bpe_t *b); /* NULL is a no-op */

/* Encode len bytes of text (NULL allowed when len is 0). *n receives the
 * number of ids the whole text encodes to; the first min(*n, cap) are written
 * to ids (ids may be NULL when cap is 0: a count). Returns BPE_OK or a
 * negative BPE_E* with a message in err. */
int bpe_encode(const bpe_t *b, const char *text, size_t len, int32_t *ids, size_t cap, size_t *n,
               unsigned flags, char *err, size_t errlen);

/* The pre-tokenizer alone (step 2 above, no special tokens): the end offset
 * of each chunk of text, as HF's pre_tokenize_str would cut it. *n receives
 * the chunk count; the first min(*n, cap) ends are written. BPE_EUTF8 on
 * invalid UTF-8. For tests, benchmarks and debugging. */
int bpe_pretokenize(const char *text, size_t len, size_t *ends, size_t cap, size_t *n, char *err,
                    size_t errlen);

/* The bytes a token stands for (byte-level decoded; a special token's text).
 * NULL for an id out of range. Not NUL-terminated. */
const char *bpe_token_bytes(const bpe_t *b, int32_t id, size_t *len);
/* The token's string as stored in the vocabulary ("Ġthe"), NUL-terminated. */
const char *bpe_token_text(const bpe_t *b, int32_t id);
/* Id of a vocabulary string ("Ġthe", "<|im_end|>"), or -1. */
int32_t bpe_lookup(const bpe_t *b, const char *text, size_t len);
int bpe_token_type(const bpe_t *b, int32_t id); /* BPE_TT_*, or -1 out of range */

int bpe_vocab_size(const bpe_t *b);
int32_t bpe_bos_id(const bpe_t *b); /* -1 when none */
int32_t bpe_eos_id(const bpe_t *b);
int32_t bpe_unk_id(const bpe_t *b);
/* Whether the model wants bos before a prompt (tokenizer.ggml.add_bos_token,
 * false when absent, as llama.cpp for gpt2 vocabularies; SmolLM2: false). */
int bpe_add_bos(const bpe_t *b);

/* ---- streaming decoder ----
 * Plain struct: zero it (or bpe_decoder_init) to start a stream. */
typedef struct {
    unsigned char pend[4]; /* bytes of an incomplete UTF-8 character */
    int npend;
    unsigned flags;        /* BPE_SKIP_SPECIAL */
} bpe_decoder_t;

void bpe_decoder_init(bpe_decoder_t *d, unsigned flags);
/* Out capacity that always suffices for one bpe_decode_step on this vocabulary
 * (every byte of the longest token replaced by U+FFFD, plus the held bytes). */
size_t bpe_decode_step_max(const bpe_t *b);
/* Append token id; writes the complete characters now available (valid UTF-8,
 * possibly none) to out and returns their byte count, or BPE_EINVAL for an id
 * out of range or cap < bpe_decode_step_max(b). */
int bpe_decode_step(const bpe_t *b, bpe_decoder_t *d, int32_t id, char *out, size_t cap);
/* End of stream: a held-back incomplete character becomes U+FFFD. Returns the
 * bytes written (0 or 3); out needs 4 bytes. The decoder is reset. */
int bpe_decode_flush(bpe_decoder_t *d, char *out, size_t cap);

/* Whole decoding: the concatenation of the steps and the flush. *n receives
 * the full length; min(*n, cap) bytes are written. BPE_EINVAL on a bad id. */
int bpe_decode(const bpe_t *b, const int32_t *ids, size_t n_ids, char *out, size_t cap, size_t *n,
               unsigned flags);

#endif
