/* engine/tok_bpe.h - the byte-level BPE tokenizer (engine/bpe.h) behind the
 * tokenizer interface (engine/tok.h), so a decoder family's callers use the
 * same tok_* calls as an encoder's.
 *
 * Encoding parses special-token text ("<|im_start|>") into its id, puts BOS
 * first when the model asks for it (bpe_add_bos) and keeps the first
 * max_len ids; decoding drops control tokens and streams whole UTF-8
 * characters (an incomplete one waits in the decode state; tok_decode_flush
 * ends a stream). Roles: "bos", "eos", "unk" (the model's ids, -1 when none).
 *
 * Ownership: the tokenizer owns its bpe_t (tok_destroy frees it).
 * Thread-safety: as engine/tok.h.
 */
#ifndef SLUICE_TOK_BPE_H
#define SLUICE_TOK_BPE_H

#include "engine/bpe.h"
#include "engine/gguf.h"
#include "engine/tok.h"

/* Wrap b (stolen, also on failure); max_len: ids per encode at most (the
 * model's context). TOK_OK, or TOK_ENOMEM / TOK_EINVAL with a message. */
int tok_bpe_wrap(bpe_t *b, int max_len, tok_t **out, char *err, size_t errlen);
/* The tokenizer of a GGUF model file (tokenizer.ggml.*; max_len from
 * <arch>.context_length, else 2048). */
int tok_bpe_from_gguf(const gguf_file_t *f, tok_t **out, char *err, size_t errlen);
/* The bpe_t inside (for the chat template and the sampler). */
const bpe_t *tok_bpe(const tok_t *t);

#endif
