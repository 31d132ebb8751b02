/* engine/tokenizer.h - BERT WordPiece tokenizer, identical to HF BertTokenizer.
 *
 * Pipeline (as HF tokenizers' BertNormalizer + BertPreTokenizer + WordPiece):
 * special tokens written in the text ("[MASK]", "[SEP]", ...) are matched on
 * the raw bytes first and kept whole, as HF does with its added tokens; the
 * rest is cleaned (drop U+0000, U+FFFD and Cc/Cf/Co characters other than
 * \t \n \r, map whitespace to spaces), CJK ideographs get spaces around them,
 * accents are stripped (NFD, drop Mn) and text lower-cased when configured,
 * split on whitespace and punctuation (all ASCII non-alphanumerics and P*),
 * then greedy longest-match WordPiece with "##" continuation pieces; a word
 * longer than 100 characters, or one with no full cover, becomes [UNK]. The
 * output is [CLS] pieces... [SEP], truncated to [CLS] + the first pieces +
 * [SEP]. Parity with HF `tokenizers` is tested on a 4,800-line corpus.
 *
 * Invalid UTF-8 input is rejected with TOK_EUTF8 and "invalid UTF-8 at byte N"
 * (the API answers 400): we do not guess what the bytes meant.
 *
 * This is one kind behind the tokenizer interface (engine/tok.h): the
 * tokenizers made here are used through the tok_* calls there (encode,
 * decode, special tokens by role: cls, sep, pad, unk, mask).
 *
 * Ownership: tok_t owns its vocabulary. tok_encode and the lookups are
 * read-only and thread-safe on one tok_t.
 */
#ifndef SLUICE_TOKENIZER_H
#define SLUICE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/tok.h"

typedef struct {
    int lowercase;      /* 1 for uncased models */
    int strip_accents;  /* 1 for uncased models (HF default: follows lowercase) */
    int tokenize_cjk;   /* 1: spaces around CJK ideographs */
    int max_len;        /* total ids including [CLS] and [SEP], >= 2 */
} tok_options_t;

/* vocab.txt: one piece per line, id = line number. Needs [CLS], [SEP], [UNK], [PAD].
 * The special tokens matched in text are the BERT ones present: [PAD] [UNK]
 * [CLS] [SEP] [MASK]. */
int tok_create(const char *vocab_path, const tok_options_t *opt, tok_t **out, char *err,
               size_t errlen);
/* Create the tokenizer a model folder describes: vocab.txt, tokenizer_config.json
 * (do_lower_case, strip_accents, tokenize_chinese_chars) and
 * sentence_bert_config.json (max_seq_length; else model_max_length, else 512).
 * When tokenizer.json is there (what HF itself runs), its BertNormalizer flags
 * and added_tokens win; another normalizer or model type is TOK_EFORMAT. */
int tok_create_for_model(const char *model_dir, tok_t **out, char *err, size_t errlen);

/* WordPiece behind tok_encode (engine/tok.h): text (len bytes, need not be
 * NUL-terminated; NULL when len is 0) into ids (capacity max_ids; at most
 * min(opt.max_len, max_ids) are written, the last always [SEP]; max_ids < 2
 * is TOK_EINVAL). Returns the count written (>= 2) or a negative TOK_E* code
 * with a message in err. No allocation: safe and cheap on the request path.
 * tok_decode joins pieces as HF's WordPiece decoder does, without [CLS],
 * [SEP] and [PAD]. */

#endif
