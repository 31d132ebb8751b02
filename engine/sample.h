/* engine/sample.h - choosing the next token, and knowing when to stop.
 *
 * A request's sampler (sample_seq_t) keeps its parameters, its own PRNG and
 * the token counts the penalties need. sample_next turns one row of logits
 * into a token id:
 *   1. penalties: repetition (HF's rule: a positive logit of a token seen in
 *      the prompt or the output is divided by it, a negative one multiplied),
 *      then presence and frequency (OpenAI's: minus presence if the token was
 *      generated at all, minus frequency * times generated);
 *   2. temperature <= 0: the arg max (lowest id on ties), no randomness;
 *   3. else logits / temperature, top-k, softmax, top-p (the smallest set of
 *      most likely tokens whose mass reaches top_p), min-p (drop tokens below
 *      min_p * the best one's probability), renormalise, one draw.
 * The draw comes from xoshiro256** seeded by splitmix64(seed): one 53-bit
 * uniform per sampled token, in a fixed summation order, so the same seed
 * gives the same tokens on any machine and any thread count. Tokens whose
 * scaled logit is more than 30 below the best (probability ratio < 1e-13) are
 * left out of the candidate set; their total mass is below the draw's
 * resolution.
 *
 * Stopping: sample_accept takes the sampled token and its text (as the
 * detokenizer streams it: whole UTF-8 characters) and says what to stream and
 * whether generation is over: a stop token id (its text is never streamed), a
 * stop string (matched across token boundaries: text that might begin a stop
 * string is held back until it cannot, so nothing is streamed and later
 * retracted; the stop string and anything after it are dropped), or max_tokens.
 * sample_check_budget refuses, up front, a prompt that leaves no room in the
 * context, and fits max_tokens to the context.
 *
 * Ownership: a sample_seq_t owns its counts and buffers (host memory, made by
 * sample_seq_init, freed by sample_seq_free). The params' stop strings are
 * copied. Thread-safety: one sample_seq_t per request, used by one thread at a
 * time; distinct ones are independent.
 */
#ifndef SLUICE_SAMPLE_H
#define SLUICE_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

enum { SAMPLE_OK = 0, SAMPLE_EINVAL = -1, SAMPLE_ENOMEM = -2 };

#define SAMPLE_MAX_STOP_IDS 8
#define SAMPLE_MAX_STOPS 8        /* stop strings per request */
#define SAMPLE_MAX_STOP_LEN 256   /* bytes of one stop string */

typedef struct {
    float temperature;        /* <= 0: greedy */
    int top_k;                /* 0: off */
    float top_p;              /* (0, 1]; 1: off */
    float min_p;              /* [0, 1); 0: off */
    float repetition_penalty; /* >= 1 typical; 1: off (0 is read as 1) */
    float presence_penalty;   /* 0: off */
    float frequency_penalty;  /* 0: off */
    uint64_t seed;
    int max_tokens;           /* tokens to generate; 0: up to the context limit */
    int32_t stop_ids[SAMPLE_MAX_STOP_IDS]; /* e.g. <|im_end|> 2, <|endoftext|> 0 */
    int n_stop_ids;
    const char *stops[SAMPLE_MAX_STOPS];   /* stop strings (NUL-terminated, non-empty) */
    int n_stops;
} sample_params_t;

/* Greedy, no penalties, no stops, max_tokens 0. */
sample_params_t sample_params_default(void);

typedef enum {
    SAMPLE_CONTINUE = 0,
    SAMPLE_STOP_TOKEN = 1,   /* a stop token id was sampled */
    SAMPLE_STOP_STRING = 2,  /* a stop string appeared in the text */
    SAMPLE_LENGTH = 3,       /* max_tokens reached */
} sample_finish_t;

typedef struct {
    uint64_t s[4];
} sample_rng_t;

void sample_rng_seed(sample_rng_t *r, uint64_t seed);
uint64_t sample_rng_next(sample_rng_t *r);
double sample_rng_uniform(sample_rng_t *r); /* [0, 1), 53 bits */

typedef struct {
    sample_params_t p;      /* stop strings point into stop_buf */
    int vocab;
    sample_rng_t rng;
    uint32_t *counts;       /* (vocab) times generated */
    uint8_t *in_prompt;     /* (vocab) 1 if in the prompt */
    float *scratch;         /* (vocab) penalised logits */
    int32_t *cand;          /* (vocab) candidate ids */
    int n_generated;
    char *stop_buf;         /* copies of the stop strings */
    char *held;             /* text held back: may begin a stop string */
    size_t n_held;
    size_t held_cap;
    char *out;              /* what sample_accept hands back */
    size_t out_cap;
    int finished;           /* a sample_finish_t once over */
} sample_seq_t;

/* Check p (ranges, stop strings non-empty and short enough, stop ids inside
 * the vocabulary) and set up a sampler for one request with its prompt ids
 * (for the repetition penalty). */
int sample_seq_init(sample_seq_t *s, const sample_params_t *p, int vocab, const int32_t *prompt, int n_prompt,
                    char *err, size_t errlen);
void sample_seq_free(sample_seq_t *s); /* zeroed or freed: a no-op */

/* Up front: n_prompt must be 1 .. n_ctx - 1; *max_tokens 0 becomes the room
 * left (n_ctx - n_prompt); more than that is refused with the numbers. */
int sample_check_budget(int n_prompt, int n_ctx, int *max_tokens, char *err, size_t errlen);

/* The next token from logits (vocab floats; not modified). */
int32_t sample_next(sample_seq_t *s, const float *logits);

/* Record a sampled token and its text (len bytes; whole UTF-8 characters).
 * *out / *out_len: text to stream now (valid until the next call). Returns
 * SAMPLE_CONTINUE or why generation ended; when it ends, *out holds
 * everything still held back that belongs to the answer. */
sample_finish_t sample_accept(sample_seq_t *s, int32_t token, const char *text, size_t len, const char **out,
                              size_t *out_len);

#endif
