/* engine/bpe.c - byte-level BPE (GPT-2 family) with the "smollm"
 * pre-tokenizer, token for token the same as HF `tokenizers` (see bpe.h).
 *
 * Tables: the vocabulary is an open-addressing hash from token string to id;
 * merges a hash from the pair (left id, right id) to (rank, merged id). A chunk
 * starts as one symbol per byte (the byte's single-character token), kept in a
 * doubly linked list; candidate pairs go into a binary min-heap keyed by
 * (rank, left position), so the lowest rank merges first and ties go to the
 * leftmost pair, as HF's BinaryHeap of Merge does. Stale heap entries (a side
 * already merged away) are recognised on pop and dropped. Cost is
 * O(n log n) per chunk, so a long word (a 1 MB run of letters) stays fast.
 *
 * Pre-tokenizer: one hand-written pass over the code points (classes from an
 * ASCII table, else utf8proc's general category) that treats every \p{N}
 * character as a chunk of its own and a hard boundary for the GPT-2 rules,
 * which is exactly Digits(individual_digits) followed by the regex inside each
 * piece. PCRE2 was measured against it (bench/bpe_bench.c: PCRE2 10.42, JIT,
 * UTF+UCP, one pattern equivalent to the two steps) on the 3,789-line
 * parity corpus (427 KB), split only, one thread, on the shared 2-core dev
 * box (load 2.7-4.5), five runs: hand-written 124-238 MB/s, PCRE2 JIT
 * 104-153 MB/s, the hand-written one 1.19-1.63x faster in every run. We keep
 * it: faster (a chunk is ~4 bytes here, and each pcre2_match call has a fixed
 * set-up cost), and Debian's PCRE2 10.42 has Unicode 14 tables: it cuts 7
 * corpus lines (Unicode 15 letters such as Kawi U+11F17) differently from HF,
 * where utf8proc 2.8 (Unicode 15) agrees. Whole bpe_encode on the same corpus:
 * 17-32 MB/s (10-18 M tokens/s), 8-15x HF tokenizers' encode line by line
 * (2.1-2.3 MB/s, bench/bpe_peer.py, same runs); the merge loop, not the
 * splitter, takes ~85% of the time.
 */
#include "engine/bpe.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define MAX_TOKEN_BYTES 1024 /* longest vocabulary entry we accept */

typedef struct {
    uint32_t hash;
    int32_t id; /* -1: empty */
} vslot_t;

typedef struct {
    uint64_t key;   /* left id << 32 | right id */
    int32_t rank;   /* -1: empty */
    int32_t merged; /* id of left+right */
} mslot_t;

struct bpe {
    int n_tokens;
    char *blob;           /* every token string, NUL-terminated, back to back */
    uint32_t *off;        /* [n_tokens] string of token i at blob + off[i] */
    uint32_t *len;        /* [n_tokens] its length in bytes */
    int32_t *type;        /* [n_tokens] BPE_TT_* */
    char *dblob;          /* decoded bytes of every token */
    uint32_t *doff;       /* [n_tokens] */
    uint32_t *dlen;       /* [n_tokens] */
    size_t max_dlen;      /* longest decoded token, bytes */
    vslot_t *vocab;       /* [vmask + 1] */
    uint32_t vmask;
    mslot_t *merges;      /* [mmask + 1] */
    uint32_t mmask;
    int32_t byte_id[256]; /* id of the single-character token of each byte */
    int32_t *special;     /* ids of CONTROL/USER_DEFINED tokens, longest first */
    int n_special;
    uint8_t special_first[256]; /* 1: some special token starts with this byte */
    int32_t bos, eos, unk;
    int add_bos;
};

static int fail(char *err, size_t errlen, int code, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static uint32_t fnv1a(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint32_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static uint32_t table_mask(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    return (uint32_t)(cap - 1);
}

/* ---- GPT-2 byte <-> printable character map ---- */

static int byte_printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; }

/* byte -> code point of its printable stand-in */
static void byte_map(uint32_t cp[256]) {
    int extra = 0;
    for (int b = 0; b < 256; b++) cp[b] = byte_printable(b) ? (uint32_t)b : (uint32_t)(256 + extra++);
}

/* code point -> byte, or -1 when cp is not in the byte alphabet */
static int cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_printable((int)cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1; /* 68 non-printable bytes */
    int k = (int)(cp - 256), extra = 0;
    for (int b = 0; b < 256; b++)
        if (!byte_printable(b) && extra++ == k) return b;
    return -1;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 character at s (n bytes available), 0 if invalid. */
static int utf8_valid_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2 || c > 0xF4) return 0;
    int need = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (n < (size_t)need) return 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (c == 0xE0) lo = 0xA0;
    else if (c == 0xED) hi = 0x9F;
    else if (c == 0xF0) lo = 0x90;
    else if (c == 0xF4) hi = 0x8F;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < need; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return need;
}

/* Offset of the first invalid byte, or n when all of s is valid UTF-8. */
static size_t utf8_check(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int k = utf8_valid_len(s + i, n - i);
        if (!k) return i;
        i += (size_t)k;
    }
    return n;
}

static uint32_t utf8_decode(const unsigned char *s, int *len) {
    unsigned c = s[0];
    if (c < 0x80) { *len = 1; return c; }
    if (c < 0xE0) { *len = 2; return ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu); }
    if (c < 0xF0) { *len = 3; return ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu); }
    *len = 4;
    return ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
}

static int utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- character classes of the pre-tokenizer ---- */

enum { C_OTHER = 0, C_L = 1, C_N = 2, C_S = 3 };

static uint8_t ascii_class[128]; /* set once by init_ascii_class */
static pthread_once_t ascii_once = PTHREAD_ONCE_INIT;

static int class_of(uint32_t cp) {
    if (cp < 128) return ascii_class[cp];
    if (cp == 0x85) return C_S;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return C_L;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return C_N;
    case UTF8PROC_CATEGORY_ZS: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP:
        return C_S;
    default:
        return C_OTHER;
    }
}

static void init_ascii_class(void) {
    for (int c = 0; c < 128; c++) {
        int k = C_OTHER;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) k = C_L;
        else if (c >= '0' && c <= '9') k = C_N;
        else if (c == ' ' || (c >= 9 && c <= 13)) k = C_S;
        ascii_class[c] = (uint8_t)k;
    }
}

/* Class of the character at s[i] (i < n), its byte length in *cl. */
static inline int class_at(const unsigned char *s, size_t i, int *cl) {
    if (s[i] < 0x80) {
        *cl = 1;
        return ascii_class[s[i]];
    }
    return class_of(utf8_decode(s + i, cl));
}

/* End of the run of class k (C_L or C_OTHER) starting at i, whose character
 * is of class k. A \p{N} character ends it, as any other class does. */
static size_t run_end(const unsigned char *s, size_t i, size_t n, int k) {
    while (i < n) {
        int cl, c = class_at(s, i, &cl);
        if (c != k) break;
        i += (size_t)cl;
    }
    return i;
}

/* Length of the next pre-token chunk of s[i..n) (valid UTF-8, i < n). */
static size_t next_chunk(const unsigned char *s, size_t i, size_t n) {
    int cl, c = class_at(s, i, &cl);
    if (c == C_N) return (size_t)cl; /* Digits(individual_digits=True) */
    if (s[i] == '\'' && i + 1 < n) { /* 's|'t|'re|'ve|'m|'ll|'d */
        unsigned a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
    if (c == C_S) {
        size_t j = i + (size_t)cl;
        if (s[i] == ' ' && j < n) { /* ' ?\p{L}+' or ' ?[^\s\p{L}\p{N}]+' */
            int cl2, c2 = class_at(s, j, &cl2);
            if (c2 == C_L || c2 == C_OTHER) return run_end(s, j, n, c2) - i;
        }
        /* \s+(?!\S)|\s+ : the whole run when it ends the piece (end of text or
         * a digit next), else all but its last character, else that one. */
        size_t last = i, end = i;
        while (end < n) {
            int cle, ce = class_at(s, end, &cle);
            if (ce != C_S) {
                if (ce == C_N) return end - i;
                break;
            }
            last = end;
            end += (size_t)cle;
        }
        if (end >= n) return end - i;
        return last > i ? last - i : end - i;
    }
    return run_end(s, i, n, c) - i; /* \p{L}+ or [^\s\p{L}\p{N}]+ */
}

/* ---- hash lookups ---- */

static int32_t vocab_find(const bpe_t *b, const char *s, size_t n) {
    uint32_t h = fnv1a(s, n);
    for (uint32_t i = h & b->vmask;; i = (i + 1) & b->vmask) {
        const vslot_t *v = &b->vocab[i];
        if (v->id < 0) return -1;
        if (v->hash == h && b->len[v->id] == n && memcmp(b->blob + b->off[v->id], s, n) == 0) return v->id;
    }
}

static const mslot_t *merge_find(const bpe_t *b, int32_t l, int32_t r) {
    uint64_t k = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    for (uint32_t i = pair_hash(k) & b->mmask;; i = (i + 1) & b->mmask) {
        const mslot_t *m = &b->merges[i];
        if (m->rank < 0) return NULL;
        if (m->key == k) return m;
    }
}

/* ---- creation ---- */

int bpe_create(const bpe_vocab_t *v, bpe_t **out, char *err, size_t errlen) {
    int rc = BPE_ENOMEM;
    *out = NULL;
    if (!v || v->n_tokens <= 0 || !v->tokens || !v->token_lens || v->n_merges < 0 ||
        (v->n_merges > 0 && (!v->merges || !v->merge_lens)))
        return fail(err, errlen, BPE_EINVAL, "bpe: empty or incomplete vocabulary");
    if (v->n_tokens > (1 << 24)) return fail(err, errlen, BPE_EFORMAT, "bpe: %d tokens is too many", v->n_tokens);
    pthread_once(&ascii_once, init_ascii_class);
    bpe_t *b = calloc(1, sizeof *b);
    if (!b) goto fail;
    int n = b->n_tokens = v->n_tokens;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t l = v->token_lens[i];
        if (l == 0 || l > MAX_TOKEN_BYTES || !v->tokens[i]) {
            rc = fail(err, errlen, BPE_EFORMAT, "bpe: token %d is empty or longer than %d bytes", i,
                      MAX_TOKEN_BYTES);
            goto fail;
        }
        total += l + 1;
    }
    b->blob = malloc(total);
    b->off = malloc(sizeof *b->off * (size_t)n);
    b->len = malloc(sizeof *b->len * (size_t)n);
    b->type = malloc(sizeof *b->type * (size_t)n);
    b->dblob = malloc(total); /* a decoded token is never longer than its string */
    b->doff = malloc(sizeof *b->doff * (size_t)n);
    b->dlen = malloc(sizeof *b->dlen * (size_t)n);
    b->vmask = table_mask((size_t)n);
    b->vocab = malloc(sizeof *b->vocab * ((size_t)b->vmask + 1));
    if (!b->blob || !b->off || !b->len || !b->type || !b->dblob || !b->doff || !b->dlen || !b->vocab)
        goto fail;
    for (uint32_t i = 0; i <= b->vmask; i++) b->vocab[i].id = -1;

    uint32_t cpmap[256];
    byte_map(cpmap);
    size_t at = 0, dat = 0;
    for (int i = 0; i < n; i++) {
        size_t l = v->token_lens[i];
        const char *s = v->tokens[i];
        int32_t ty = v->types ? v->types[i] : BPE_TT_NORMAL;
        if (utf8_check((const unsigned char *)s, l) != l) {
            rc = fail(err, errlen, BPE_EFORMAT, "bpe: token %d is not valid UTF-8", i);
            goto fail;
        }
        if (vocab_find(b, s, l) >= 0) {
            rc = fail(err, errlen, BPE_EFORMAT, "bpe: token %d \"%.*s\" appears twice", i, (int)l, s);
            goto fail;
        }
        memcpy(b->blob + at, s, l);
        b->blob[at + l] = 0;
        b->off[i] = (uint32_t)at;
        b->len[i] = (uint32_t)l;
        b->type[i] = ty;
        at += l + 1;
        uint32_t h = fnv1a(s, l), k = h & b->vmask;
        while (b->vocab[k].id >= 0) k = (k + 1) & b->vmask;
        b->vocab[k].hash = h;
        b->vocab[k].id = i;
        /* decoded bytes: special tokens are their text; a normal token maps
         * each character back to its byte (a character outside the byte
         * alphabet passes through as UTF-8, as HF's ByteLevel decoder) */
        b->doff[i] = (uint32_t)dat;
        if (ty == BPE_TT_CONTROL || ty == BPE_TT_USER_DEFINED) {
            memcpy(b->dblob + dat, s, l);
            dat += l;
        } else {
            for (size_t j = 0; j < l;) {
                int cl;
                uint32_t cp = utf8_decode((const unsigned char *)s + j, &cl);
                int by = cp_to_byte(cp);
                if (by >= 0) b->dblob[dat++] = (char)by;
                else {
                    memcpy(b->dblob + dat, s + j, (size_t)cl);
                    dat += (size_t)cl;
                }
                j += (size_t)cl;
            }
        }
        b->dlen[i] = (uint32_t)(dat - b->doff[i]);
        if (b->dlen[i] > b->max_dlen) b->max_dlen = b->dlen[i];
    }
    /* SmolLM2's vocabulary lacks 21 of the 256 byte tokens (0x04, 0xF1, ...):
     * such a byte gets -1 and is dropped from its chunk before merging, as HF's
     * BPE does when it has no unk_token (so its neighbours may merge). */
    for (int by = 0; by < 256; by++) {
        char u[4];
        int ul = utf8_encode(cpmap[by], u);
        b->byte_id[by] = vocab_find(b, u, (size_t)ul);
    }

    b->mmask = table_mask((size_t)v->n_merges);
    b->merges = malloc(sizeof *b->merges * ((size_t)b->mmask + 1));
    if (!b->merges) goto fail;
    for (uint32_t i = 0; i <= b->mmask; i++) b->merges[i].rank = -1;
    char buf[2 * MAX_TOKEN_BYTES];
    for (int r = 0; r < v->n_merges; r++) {
        const char *m = v->merges[r];
        size_t ml = v->merge_lens[r];
        const char *sp = m ? memchr(m, ' ', ml) : NULL;
        size_t ll = sp ? (size_t)(sp - m) : 0, rl = sp ? ml - ll - 1 : 0;
        int32_t l = sp ? vocab_find(b, m, ll) : -1, rr = sp ? vocab_find(b, sp + 1, rl) : -1;
        int32_t mid = -1;
        if (l >= 0 && rr >= 0 && ll + rl <= sizeof buf) {
            memcpy(buf, m, ll);
            memcpy(buf + ll, sp + 1, rl);
            mid = vocab_find(b, buf, ll + rl);
        }
        if (mid < 0) {
            rc = fail(err, errlen, BPE_EFORMAT, "bpe: merge %d \"%.*s\" is not two tokens whose join is a token",
                      r, (int)(ml > 200 ? 200 : ml), m ? m : "");
            goto fail;
        }
        uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)rr;
        uint32_t k = pair_hash(key) & b->mmask;
        while (b->merges[k].rank >= 0 && b->merges[k].key != key) k = (k + 1) & b->mmask;
        if (b->merges[k].rank >= 0) continue; /* a repeated merge keeps its first (lowest) rank */
        b->merges[k] = (mslot_t){.key = key, .rank = r, .merged = mid};
    }

    for (int i = 0; i < n; i++)
        if (b->type[i] == BPE_TT_CONTROL || b->type[i] == BPE_TT_USER_DEFINED) b->n_special++;
    if (b->n_special) {
        b->special = malloc(sizeof *b->special * (size_t)b->n_special);
        if (!b->special) goto fail;
        int k = 0;
        for (int i = 0; i < n; i++)
            if (b->type[i] == BPE_TT_CONTROL || b->type[i] == BPE_TT_USER_DEFINED) {
                /* insertion by length, longest first: the first hit is the longest */
                int j = k++;
                while (j > 0 && b->len[b->special[j - 1]] < b->len[i]) {
                    b->special[j] = b->special[j - 1];
                    j--;
                }
                b->special[j] = i;
                b->special_first[(unsigned char)b->blob[b->off[i]]] = 1;
            }
    }
    int32_t ids[3] = {v->bos, v->eos, v->unk};
    static const char *const what[3] = {"bos", "eos", "unk"};
    for (int i = 0; i < 3; i++)
        if (ids[i] < -1 || ids[i] >= n) {
            rc = fail(err, errlen, BPE_EFORMAT, "bpe: the %s id is out of range (%d tokens)", what[i], n);
            goto fail;
        }
    b->bos = v->bos;
    b->eos = v->eos;
    b->unk = v->unk;
    b->add_bos = v->add_bos != 0;
    *out = b;
    return BPE_OK;
fail:
    if (rc == BPE_ENOMEM) fail(err, errlen, rc, "bpe: out of memory");
    bpe_destroy(b);
    return rc;
}

void bpe_destroy(bpe_t *b) {
    if (!b) return;
    free(b->blob);
    free(b->off);
    free(b->len);
    free(b->type);
    free(b->dblob);
    free(b->doff);
    free(b->dlen);
    free(b->vocab);
    free(b->merges);
    free(b->special);
    free(b);
}

/* ---- GGUF ---- */

static int gguf_str_is(const gguf_file_t *f, const char *key, const char *want, char *err, size_t errlen) {
    const char *s;
    size_t l;
    if (gguf_get_str(f, key, &s, &l) != GGUF_OK)
        return fail(err, errlen, BPE_EFORMAT, "bpe: the model has no string %s", key);
    if (l != strlen(want) || memcmp(s, want, l) != 0)
        return fail(err, errlen, BPE_EFORMAT, "bpe: %s is \"%.*s\"; only \"%s\" is supported", key,
                    (int)(l > 64 ? 64 : l), s, want);
    return BPE_OK;
}

static int gguf_str_array(const gguf_file_t *f, const char *key, int *n, const char ***s, size_t **l,
                          char *err, size_t errlen) {
    gguf_vtype_t et;
    size_t cnt;
    if (gguf_get_arr(f, key, &et, &cnt) != GGUF_OK || et != GGUF_V_STRING)
        return fail(err, errlen, BPE_EFORMAT, "bpe: the model has no string array %s", key);
    if (cnt > (1u << 24)) return fail(err, errlen, BPE_EFORMAT, "bpe: %s has %zu entries", key, cnt);
    *s = malloc(sizeof **s * (cnt ? cnt : 1));
    *l = malloc(sizeof **l * (cnt ? cnt : 1));
    if (!*s || !*l) return fail(err, errlen, BPE_ENOMEM, "bpe: out of memory");
    for (size_t i = 0; i < cnt; i++) {
        (*s)[i] = gguf_arr_str(f, key, i, &(*l)[i]);
        if (!(*s)[i]) return fail(err, errlen, BPE_EFORMAT, "bpe: %s[%zu] unreadable", key, i);
    }
    *n = (int)cnt;
    return BPE_OK;
}

/* The id stored under key: -1 when absent, -2 when present but not a valid
 * id (bpe_create then refuses it as out of range). */
static int32_t gguf_id(const gguf_file_t *f, const char *key) {
    int64_t v;
    int rc = gguf_get_int(f, key, &v);
    if (rc == GGUF_ENOTFOUND) return -1;
    return rc == GGUF_OK && v >= 0 && v < INT32_MAX ? (int32_t)v : -2;
}

int bpe_create_from_gguf(const gguf_file_t *f, bpe_t **out, char *err, size_t errlen) {
    bpe_vocab_t v = {0};
    int32_t *types = NULL;
    int rc;
    *out = NULL;
    if ((rc = gguf_str_is(f, "tokenizer.ggml.model", "gpt2", err, errlen)) < 0) return rc;
    if ((rc = gguf_str_is(f, "tokenizer.ggml.pre", "smollm", err, errlen)) < 0) return rc;
    rc = gguf_str_array(f, "tokenizer.ggml.tokens", &v.n_tokens, (const char ***)&v.tokens,
                        (size_t **)&v.token_lens, err, errlen);
    if (rc < 0) goto done;
    rc = gguf_str_array(f, "tokenizer.ggml.merges", &v.n_merges, (const char ***)&v.merges,
                        (size_t **)&v.merge_lens, err, errlen);
    if (rc < 0) goto done;
    gguf_vtype_t et;
    size_t cnt;
    if (gguf_get_arr(f, "tokenizer.ggml.token_type", &et, &cnt) == GGUF_OK) {
        if ((et != GGUF_V_INT32 && et != GGUF_V_UINT32) || cnt != (size_t)v.n_tokens) {
            rc = fail(err, errlen, BPE_EFORMAT, "bpe: tokenizer.ggml.token_type is not %d int32", v.n_tokens);
            goto done;
        }
        types = malloc(sizeof *types * (cnt ? cnt : 1));
        if (!types) {
            rc = fail(err, errlen, BPE_ENOMEM, "bpe: out of memory");
            goto done;
        }
        memcpy(types, gguf_arr_data(f, "tokenizer.ggml.token_type"), sizeof *types * cnt);
        v.types = types;
    }
    v.bos = gguf_id(f, "tokenizer.ggml.bos_token_id");
    v.eos = gguf_id(f, "tokenizer.ggml.eos_token_id");
    v.unk = gguf_id(f, "tokenizer.ggml.unknown_token_id");
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &v.add_bos) != GGUF_OK) v.add_bos = 0;
    rc = bpe_create(&v, out, err, errlen);
done:
    free((void *)v.tokens);
    free((void *)v.token_lens);
    free((void *)v.merges);
    free((void *)v.merge_lens);
    free(types);
    return rc;
}

/* ---- encoding ---- */

typedef struct {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
    uint32_t len;       /* bytes covered; 0 once merged into its left neighbour */
} sym_t;

typedef struct {
    int32_t rank;
    int32_t pos; /* the left symbol */
} cand_t;

typedef struct {
    sym_t *sym;
    cand_t *heap;
    size_t cap;    /* symbols the arrays hold; the heap holds 3x */
    int32_t *out;  /* caller's ids */
    size_t outcap, n;
} enc_t;

static int enc_reserve(enc_t *e, size_t n) {
    if (n <= e->cap) return 0;
    size_t c = e->cap ? e->cap : 64;
    while (c < n) c *= 2;
    sym_t *s = realloc(e->sym, sizeof *s * c);
    if (!s) return -1;
    e->sym = s;
    cand_t *h = realloc(e->heap, sizeof *h * 3 * c);
    if (!h) return -1;
    e->heap = h;
    e->cap = c;
    return 0;
}

static inline int cand_less(cand_t a, cand_t b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(cand_t *h, size_t *n, cand_t c) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(c, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static cand_t heap_pop(cand_t *h, size_t *n) {
    cand_t top = h[0], last = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, s = i;
        cand_t best = last;
        if (l < m && cand_less(h[l], best)) { s = l; best = h[l]; }
        if (r < m && cand_less(h[r], best)) s = r;
        if (s == i) break;
        h[i] = h[s];
        i = s;
    }
    if (m) h[i] = last;
    return top;
}

static inline void emit(enc_t *e, int32_t id) {
    if (e->n < e->outcap) e->out[e->n] = id;
    e->n++;
}

static void try_pair(const bpe_t *b, enc_t *e, size_t *nh, int32_t pos) {
    int32_t nx = e->sym[pos].next;
    if (nx < 0) return;
    const mslot_t *m = merge_find(b, e->sym[pos].id, e->sym[nx].id);
    if (m) heap_push(e->heap, nh, (cand_t){m->rank, pos});
}

/* BPE over one pre-token chunk (n >= 1 bytes). */
static int encode_chunk(const bpe_t *b, enc_t *e, const unsigned char *s, size_t n) {
    if (n == 1) {
        if (b->byte_id[s[0]] >= 0) emit(e, b->byte_id[s[0]]);
        return 0;
    }
    if (n > INT32_MAX / 2) return -2; /* positions are int32 */
    if (enc_reserve(e, n) < 0) return -1;
    sym_t *sym = e->sym;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (b->byte_id[s[i]] >= 0) {
            sym[k] = (sym_t){b->byte_id[s[i]], (int32_t)k - 1, (int32_t)k + 1, 1};
            k++;
        }
    if (k == 0) return 0;
    sym[k - 1].next = -1;
    n = k;
    size_t nh = 0;
    for (size_t i = 0; i + 1 < n; i++) try_pair(b, e, &nh, (int32_t)i);
    while (nh) {
        cand_t c = heap_pop(e->heap, &nh);
        sym_t *l = &sym[c.pos];
        if (l->len == 0 || l->next < 0) continue;
        sym_t *r = &sym[l->next];
        const mslot_t *m = merge_find(b, l->id, r->id);
        if (!m || m->rank != c.rank) continue; /* stale: a side changed */
        l->id = m->merged;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = c.pos;
        if (l->prev >= 0) try_pair(b, e, &nh, l->prev);
        try_pair(b, e, &nh, c.pos);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) emit(e, sym[i].id);
    return 0;
}

/* Pre-tokenize and encode text without special tokens. */
static int encode_plain(const bpe_t *b, enc_t *e, const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = next_chunk(s, i, n);
        int rc = encode_chunk(b, e, s + i, k);
        if (rc < 0) return rc;
        i += k;
    }
    return 0;
}

/* Longest special token at s[i..n), its id, or -1. */
static int32_t special_at(const bpe_t *b, const unsigned char *s, size_t i, size_t n) {
    if (!b->special_first[s[i]]) return -1;
    for (int k = 0; k < b->n_special; k++) {
        int32_t id = b->special[k];
        size_t l = b->len[id];
        if (l <= n - i && memcmp(s + i, b->blob + b->off[id], l) == 0) return id;
    }
    return -1;
}

int bpe_encode(const bpe_t *b, const char *text, size_t len, int32_t *ids, size_t cap, size_t *n,
               unsigned flags, char *err, size_t errlen) {
    *n = 0;
    if (!b || (!text && len) || (!ids && cap)) return fail(err, errlen, BPE_EINVAL, "bpe: bad arguments");
    const unsigned char *s = (const unsigned char *)text;
    size_t bad = utf8_check(s, len);
    if (bad != len) return fail(err, errlen, BPE_EUTF8, "invalid UTF-8 at byte %zu", bad);
    enc_t e = {.out = ids, .outcap = cap};
    int rc = 0;
    size_t start = 0;
    if ((flags & BPE_PARSE_SPECIAL) && b->n_special) {
        for (size_t i = 0; i < len && rc == 0;) {
            int32_t id = special_at(b, s, i, len);
            if (id < 0) {
                i++;
                continue;
            }
            rc = encode_plain(b, &e, s + start, i - start);
            emit(&e, id);
            i += b->len[id];
            start = i;
        }
    }
    if (rc == 0) rc = encode_plain(b, &e, s + start, len - start);
    free(e.sym);
    free(e.heap);
    if (rc == -2) return fail(err, errlen, BPE_EINVAL, "bpe: one run of letters, punctuation or spaces over 1 GiB");
    if (rc < 0) return fail(err, errlen, BPE_ENOMEM, "bpe: out of memory");
    *n = e.n;
    return BPE_OK;
}

int bpe_pretokenize(const char *text, size_t len, size_t *ends, size_t cap, size_t *n, char *err,
                    size_t errlen) {
    *n = 0;
    if ((!text && len) || (!ends && cap)) return fail(err, errlen, BPE_EINVAL, "bpe: bad arguments");
    const unsigned char *s = (const unsigned char *)text;
    size_t bad = utf8_check(s, len);
    if (bad != len) return fail(err, errlen, BPE_EUTF8, "invalid UTF-8 at byte %zu", bad);
    pthread_once(&ascii_once, init_ascii_class);
    size_t k = 0;
    for (size_t i = 0; i < len; k++) {
        i += next_chunk(s, i, len);
        if (k < cap) ends[k] = i;
    }
    *n = k;
    return BPE_OK;
}

/* ---- lookups ---- */

const char *bpe_token_bytes(const bpe_t *b, int32_t id, size_t *len) {
    if (!b || id < 0 || id >= b->n_tokens) return NULL;
    *len = b->dlen[id];
    return b->dblob + b->doff[id];
}

const char *bpe_token_text(const bpe_t *b, int32_t id) {
    return b && id >= 0 && id < b->n_tokens ? b->blob + b->off[id] : NULL;
}

int32_t bpe_lookup(const bpe_t *b, const char *text, size_t len) { return b && text ? vocab_find(b, text, len) : -1; }

int bpe_token_type(const bpe_t *b, int32_t id) { return b && id >= 0 && id < b->n_tokens ? b->type[id] : -1; }

int bpe_vocab_size(const bpe_t *b) { return b->n_tokens; }
int32_t bpe_bos_id(const bpe_t *b) { return b->bos; }
int32_t bpe_eos_id(const bpe_t *b) { return b->eos; }
int32_t bpe_unk_id(const bpe_t *b) { return b->unk; }
int bpe_add_bos(const bpe_t *b) { return b->add_bos; }

/* ---- decoding ---- */

static const char REPL[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; /* U+FFFD */

void bpe_decoder_init(bpe_decoder_t *d, unsigned flags) {
    memset(d, 0, sizeof *d);
    d->flags = flags;
}

size_t bpe_decode_step_max(const bpe_t *b) { return 3 * (b->max_dlen + 4); }

/* Feed bytes through the held-back prefix: emit every complete character,
 * U+FFFD for each maximal ill-formed subsequence, keep a possibly-complete
 * tail in d->pend. Returns bytes written. */
static size_t feed(bpe_decoder_t *d, const unsigned char *s, size_t n, char *out) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned c = s[i];
        if (d->npend == 0) {
            if (c < 0x80) {
                out[w++] = (char)c;
                continue;
            }
            if (c < 0xC2 || c > 0xF4) {
                memcpy(out + w, REPL, 3);
                w += 3;
                continue;
            }
            d->pend[d->npend++] = (unsigned char)c;
            continue;
        }
        /* a continuation is expected: check c against the lead's ranges */
        unsigned lead = d->pend[0], lo = 0x80, hi = 0xBF;
        if (d->npend == 1) {
            if (lead == 0xE0) lo = 0xA0;
            else if (lead == 0xED) hi = 0x9F;
            else if (lead == 0xF0) lo = 0x90;
            else if (lead == 0xF4) hi = 0x8F;
        }
        if (c < lo || c > hi) { /* the held bytes are a maximal ill-formed subsequence */
            memcpy(out + w, REPL, 3);
            w += 3;
            d->npend = 0;
            i--; /* c starts afresh */
            continue;
        }
        d->pend[d->npend++] = (unsigned char)c;
        int need = lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
        if (d->npend == need) {
            memcpy(out + w, d->pend, (size_t)need);
            w += (size_t)need;
            d->npend = 0;
        }
    }
    return w;
}

int bpe_decode_step(const bpe_t *b, bpe_decoder_t *d, int32_t id, char *out, size_t cap) {
    if (!b || !d || id < 0 || id >= b->n_tokens || cap < bpe_decode_step_max(b)) return BPE_EINVAL;
    if ((d->flags & BPE_SKIP_SPECIAL) && b->type[id] == BPE_TT_CONTROL) return 0;
    return (int)feed(d, (const unsigned char *)b->dblob + b->doff[id], b->dlen[id], out);
}

int bpe_decode_flush(bpe_decoder_t *d, char *out, size_t cap) {
    int had = d->npend > 0;
    d->npend = 0;
    if (!had) return 0;
    if (cap < 3) return BPE_EINVAL;
    memcpy(out, REPL, 3);
    return 3;
}

int bpe_decode(const bpe_t *b, const int32_t *ids, size_t n_ids, char *out, size_t cap, size_t *n,
               unsigned flags) {
    *n = 0;
    if (!b || (!ids && n_ids) || (!out && cap)) return BPE_EINVAL;
    bpe_decoder_t d;
    bpe_decoder_init(&d, flags);
    size_t smax = bpe_decode_step_max(b);
    char *tmp = malloc(smax);
    if (!tmp) return BPE_ENOMEM;
    size_t total = 0;
    for (size_t i = 0; i <= n_ids; i++) {
        int w = i < n_ids ? bpe_decode_step(b, &d, ids[i], tmp, smax) : bpe_decode_flush(&d, tmp, smax);
        if (w < 0) {
            free(tmp);
            return w;
        }
        if (total < cap) memcpy(out + total, tmp, (size_t)w < cap - total ? (size_t)w : cap - total);
        total += (size_t)w;
    }
    free(tmp);
    *n = total;
    return BPE_OK;
}
