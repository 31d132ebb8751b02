/* engine/tokenizer.c - BERT WordPiece tokenizer, token for token the same as HF
 * `tokenizers` (BertNormalizer + BertPreTokenizer + WordPiece + added tokens).
 *
 * tok_encode is one pass over the bytes with no allocation: special tokens
 * ("[MASK]", ...) are matched on the raw text first, as HF's added-token
 * splitter does; every other code point is cleaned, spaced (CJK), decomposed
 * and stripped of Mn marks, lower-cased, then appended to the current word or
 * ends it (whitespace, punctuation). A finished word (at most 100 chars, in a
 * stack buffer) goes through greedy longest-match WordPiece against two open
 * addressing hash tables: whole-word pieces and "##" continuation pieces keyed
 * without their prefix, so a lookup never builds a string. For each start the
 * hashes of all candidate ends come from one incremental FNV-1a pass.
 *
 * Character classes follow HF exactly, through utf8proc's Unicode data (our
 * only table is the short list of exceptions described below):
 *   whitespace  White_Space (Zs, Zl, Zp, U+0009..U+000D, U+0085) -> ' '
 *   control     Cc, Cf, Co (Cn kept), but not \t \n \r -> dropped, as are
 *               U+0000 and U+FFFD; so U+000B, U+000C, U+0085 are dropped too
 *   punctuation every ASCII non-alphanumeric printable, plus P* categories
 *   CJK         the 8 ideograph blocks of HF's is_chinese_char
 * Accent stripping is NFD (canonical decomposition and ordering) then dropping
 * Mn; lower-casing (after it, as HF) is the full per-character mapping, which
 * differs from utf8proc's simple one only for U+0130.
 *
 * HF classifies with the `unicode_categories` crate, whose tables are older
 * than utf8proc's; a handful of code points changed category since. Those
 * found by comparing every code point against HF are listed in
 * hf_category_override() below, each with its reason.
 */
#include "engine/tokenizer.h"
#include "kernels/util.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#define WORD_MAX_CHARS 100              /* HF max_input_chars_per_word */
#define WORD_MAX_BYTES (WORD_MAX_CHARS * 4)
#define VOCAB_MAX_BYTES (256u << 20)    /* a vocab file larger than this is refused */
#define DECOMP_MAX 32                   /* NFD of one code point (Unicode max is 4) */
#define FILTER_LOG2 18                  /* 32 KiB filter per map: ~11% false hits at 30k keys */

typedef struct {
    uint32_t hash;  /* FNV-1a of the key */
    int32_t id;     /* -1: empty slot */
    uint32_t off;   /* key bytes at tok->blob + off */
    uint32_t len;   /* key length in bytes */
} vocab_slot_t;

typedef struct {
    vocab_slot_t *slots;
    uint32_t mask;  /* slots - 1 (a power of two, at least twice the keys) */
    int max_key;    /* longest key, bytes */
    uint64_t *seen; /* (2^FILTER_LOG2 / 64) bitset over the top hash bits: most misses end here */
} vocab_map_t;

typedef struct {
    char *text;     /* raw bytes matched in the input */
    size_t len;
    int32_t id;
} special_t;

typedef struct wordpiece {
    tok_t base;             /* the interface (engine/tok.h): first */
    tok_options_t opt;
    char *blob;             /* vocab file bytes, each piece NUL-terminated in place */
    uint32_t *piece_off;    /* (n_pieces) offset of piece id in blob */
    int n_pieces;
    vocab_map_t whole;      /* piece -> id */
    vocab_map_t cont;       /* "##x" -> id, keyed by "x" */
    int32_t cls, sep, pad, unk;
    special_t *specials;    /* (n_specials) added tokens, matched before normalisation */
    int n_specials;
    uint8_t special_first[256]; /* 1: some special starts with this byte */
} wordpiece_t;

static const tok_vtable_t WORDPIECE;
static void wp_destroy(tok_t *tt);
static int32_t wp_lookup(const tok_t *tt, const char *piece);


/* ---------------------------------------------------------------- vocab map */

static inline uint32_t fnv_step(uint32_t h, uint8_t b) { return (h ^ b) * 16777619u; }
#define FNV_SEED 2166136261u

static uint32_t fnv(const char *s, size_t n) {
    uint32_t h = FNV_SEED;
    for (size_t i = 0; i < n; i++) h = fnv_step(h, (uint8_t)s[i]);
    return h;
}

static int map_init(vocab_map_t *m, int n_keys) {
    uint32_t cap = 16;
    while (cap < (uint32_t)n_keys * 2u) cap <<= 1;
    m->slots = malloc(cap * sizeof *m->slots);
    m->seen = calloc((1u << FILTER_LOG2) / 64, sizeof *m->seen);
    if (!m->slots || !m->seen) return -1;
    for (uint32_t i = 0; i < cap; i++) m->slots[i].id = -1;
    m->mask = cap - 1;
    m->max_key = 0;
    return 0;
}

/* Later duplicates win, as when HF reads a vocab file into a HashMap. The
 * slots array is sized for every key, so a free slot is always found. */
static void map_put(vocab_map_t *m, const char *blob, uint32_t off, uint32_t len, int32_t id) {
    uint32_t h = fnv(blob + off, len), bit = h >> (32 - FILTER_LOG2);
    m->seen[bit / 64] |= 1ull << (bit % 64);
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        vocab_slot_t *s = &m->slots[i];
        if (s->id < 0) {
            *s = (vocab_slot_t){h, id, off, len};
            if ((int)len > m->max_key) m->max_key = (int)len;
            return;
        }
        if (s->hash == h && s->len == len && !memcmp(blob + s->off, blob + off, len)) {
            s->id = id;
            return;
        }
    }
}

/* Keys are a few bytes long: a plain loop beats a call to memcmp. */
static inline int same_bytes(const char *a, const char *b, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static int32_t map_get(const vocab_map_t *m, const char *blob, const char *key, uint32_t len,
                       uint32_t h) {
    uint32_t bit = h >> (32 - FILTER_LOG2);
    if (!(m->seen[bit / 64] >> (bit % 64) & 1)) return -1;
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const vocab_slot_t *s = &m->slots[i];
        if (s->id < 0) return -1;
        if (s->hash == h && s->len == len && same_bytes(blob + s->off, key, len)) return s->id;
    }
}

/* --------------------------------------------------------- character classes */

enum { CLS_DROP, CLS_SPACE, CLS_PUNCT, CLS_OTHER };

/* HF's is_chinese_char: the CJK Unified Ideographs blocks and extensions, and
 * the compatibility ideographs. */
static int is_cjk(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* Code points HF's category tables (the `unicode_categories` crate, older than
 * Unicode 11) do not know, so HF neither drops, splits nor strips them, while
 * utf8proc 2.8 (Unicode 15.0) files them as Cf, Mn or P*. Found by encoding
 * every code point alone and inside a word with HF tokenizers 0.23 and with
 * this file, and kept when the two differ; a range may bridge code points on
 * which the override changes nothing (letters, symbols, unassigned). The
 * corpus fixture sweeps these ranges, so a utf8proc upgrade that moves them is
 * caught by the parity test. Sorted, disjoint, inclusive. */
static const int32_t hf_unknown[][2] = {
    {0x61D, 0x61D}, {0x7FD, 0x7FD}, {0x890, 0x8E2}, {0x9FD, 0x9FE}, {0xA76, 0xA76}, {0xAFA, 0xAFF},
    {0xB55, 0xB55}, {0xC04, 0xC3C}, {0xC77, 0xC77}, {0xC84, 0xC84}, {0xD00, 0xD00}, {0xD3B, 0xD3C},
    {0xD81, 0xD81}, {0xEBA, 0xEBA}, {0xECE, 0xECE}, {0x180F, 0x1886}, {0x1ABF, 0x1ACE},
    {0x1B7D, 0x1B7E}, {0x1DF6, 0x1DFB}, {0x2E43, 0x2E5D}, {0xA82C, 0xA82C}, {0xA8C5, 0xA8C5},
    {0xA8FF, 0xA8FF}, {0xA9BD, 0xA9BD}, {0x10D24, 0x10F89}, {0x11070, 0x11074}, {0x110C2, 0x110CD},
    {0x111CF, 0x111CF}, {0x1123E, 0x11241}, {0x1133B, 0x1133B},
    {0x11438, 0x1145E}, {0x11660, 0x1166C}, {0x116B9, 0x116B9}, {0x1182F, 0x11FFF},
    {0x12FF1, 0x13455}, {0x16E97, 0x16F4F}, {0x16FE2, 0x16FE4}, {0x1CF00, 0x1CF46},
    {0x1E000, 0x1E4EF}, {0x1E944, 0x1E95F}
};

/* The general category HF's tables give, where it differs from utf8proc's:
 * -1 when they agree. */
static int hf_category_override(int32_t c) {
    if (c == 0x166D) return UTF8PROC_CATEGORY_PO; /* CANADIAN SYLLABICS CHI SIGN: So since 12.0 */
    if (c == 0x1734) return UTF8PROC_CATEGORY_MN; /* HANUNOO SIGN PAMUDPOD: Mc since 14.0 */
    if (c == 0x111C9) return UTF8PROC_CATEGORY_PO; /* SHARADA SANDHI MARK: Mn since 11.0 */
    if (c < hf_unknown[0][0]) return -1;
    int lo = 0, hi = (int)(sizeof hf_unknown / sizeof hf_unknown[0]) - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (c < hf_unknown[mid][0]) hi = mid - 1;
        else if (c > hf_unknown[mid][1]) lo = mid + 1;
        else return UTF8PROC_CATEGORY_CN;
    }
    return -1;
}

static int category_of(int32_t c, const utf8proc_property_t *p) {
    int cat = p->category;
    /* letters, numbers, enclosing marks and all symbols but So classify the
     * same under either category: no need to search the overrides */
    if (cat <= UTF8PROC_CATEGORY_LO || cat == UTF8PROC_CATEGORY_ME ||
        (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO) ||
        (cat >= UTF8PROC_CATEGORY_SM && cat <= UTF8PROC_CATEGORY_SK))
        return cat;
    int o = hf_category_override(c);
    return o >= 0 ? o : cat;
}

static int category(int32_t c) { return category_of(c, utf8proc_get_property(c)); }

/* Class of a raw code point (of category cat) for clean_text: dropped,
 * whitespace, or kept. */
static int clean_class(int32_t c, int cat) {
    if (c == '\t' || c == '\n' || c == '\r') return CLS_SPACE;
    if (c == 0 || c == 0xFFFD) return CLS_DROP;
    switch (cat) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS: return CLS_DROP;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP: return CLS_SPACE;
    default: return CLS_OTHER;
    }
}

static int is_punct(int32_t c, int cat) {
    if (c < 0x80)
        return c > 0x20 && c < 0x7F && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                                         (c >= 'A' && c <= 'Z'));
    return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

/* ASCII bytes: the class after clean_text and pre-tokenization, in one lookup. */
static uint8_t ascii_class[128];

static void ascii_class_init(void) {
    for (int c = 0; c < 128; c++) {
        int k = clean_class(c, category(c));
        ascii_class[c] = (uint8_t)(k == CLS_OTHER && is_punct(c, -1) ? CLS_PUNCT : k);
    }
}

/* ------------------------------------------------------------------- encoder */

typedef struct {
    const wordpiece_t *t;
    int32_t *ids;       /* output; body pieces go to ids[1 + i] for i < cap */
    int cap;            /* room for body pieces (limit - 2) */
    int n;              /* body pieces so far, untruncated (saturates) */
    char word[WORD_MAX_BYTES + 4];
    uint16_t end[WORD_MAX_CHARS + 1]; /* byte offset after each char of the word */
    int wchars;         /* chars in the word, up to WORD_MAX_CHARS + 1 (too long) */
    int32_t run[WORD_MAX_CHARS + 1]; /* kept marks (ccc > 0) awaiting canonical ordering */
    uint8_t run_ccc[WORD_MAX_CHARS + 1];
    int nrun;           /* marks in the run, up to one past the buffer (too long) */
} enc_t;

static inline void put_id(enc_t *e, int32_t id) {
    if (e->n < e->cap) e->ids[1 + e->n] = id;
    if (e->n < INT_MAX - 2) e->n++; /* saturates: gigabytes of input stay defined */
}

/* Greedy longest-match WordPiece over the finished word. */
static void end_word(enc_t *e) {
    int nch = e->wchars;
    if (!nch) return;
    e->wchars = 0;
    const wordpiece_t *t = e->t;
    if (nch > WORD_MAX_CHARS) {
        put_id(e, t->unk);
        return;
    }
    int32_t pieces[WORD_MAX_CHARS];
    uint32_t hash[WORD_MAX_CHARS];
    int np = 0, first = 0; /* first: index of the char the current piece starts at */
    while (first < nch) {
        const vocab_map_t *m = first ? &t->cont : &t->whole;
        int start = first ? e->end[first - 1] : 0;
        /* hash of word[start, end[j]) for every candidate end j */
        uint32_t h = FNV_SEED;
        int last = first - 1, pos = start;
        for (int j = first; j < nch && e->end[j] - start <= m->max_key; j++) {
            for (; pos < e->end[j]; pos++) h = fnv_step(h, (uint8_t)e->word[pos]);
            hash[j] = h;
            last = j;
        }
        int32_t id = -1;
        int j = last;
        for (; j >= first; j--) {
            id = map_get(m, t->blob, e->word + start, (uint32_t)(e->end[j] - start), hash[j]);
            if (id >= 0) break;
        }
        if (id < 0) {
            put_id(e, t->unk);
            return;
        }
        pieces[np++] = id;
        first = j + 1;
    }
    for (int i = 0; i < np; i++) put_id(e, pieces[i]);
}

static inline void word_append(enc_t *e, int32_t c) {
    if (e->wchars < WORD_MAX_CHARS) {
        int at = e->wchars ? e->end[e->wchars - 1] : 0;
        at += (int)utf8proc_encode_char(c, (utf8proc_uint8_t *)e->word + at);
        e->end[e->wchars] = (uint16_t)at;
    }
    if (e->wchars <= WORD_MAX_CHARS) e->wchars++; /* past the limit only "too long" matters */
}

/* A normalised code point (after NFD and accent stripping) of category cat:
 * lower-case it and let it extend or end the word. Whitespace is only ' ' by
 * now: clean_text mapped the rest, and neither NFD nor lower-casing makes any. */
static void emit(enc_t *e, int32_t c, int cat) {
    if (e->t->opt.lowercase) {
        if (c == 0x130) { /* full mapping: i + combining dot above */
            word_append(e, 'i');
            word_append(e, 0x307);
            return;
        }
        int32_t lc = utf8proc_tolower(c);
        if (lc != c) cat = category(c = lc);
    }
    if (c == ' ') {
        end_word(e);
    } else if (is_punct(c, cat)) {
        end_word(e);
        word_append(e, c);
        end_word(e);
    } else {
        word_append(e, c);
    }
}

/* Canonical ordering of the pending marks: a stable sort by combining class.
 * Only marks that survive stripping are kept here (Mn are dropped), and a run
 * longer than a word makes the word [UNK] whatever the order. */
static void flush_run(enc_t *e) {
    int n = e->nrun < WORD_MAX_CHARS + 1 ? e->nrun : WORD_MAX_CHARS + 1;
    for (int i = 1; i < n; i++) {
        int32_t c = e->run[i];
        uint8_t k = e->run_ccc[i];
        int j = i;
        for (; j > 0 && e->run_ccc[j - 1] > k; j--) {
            e->run[j] = e->run[j - 1];
            e->run_ccc[j] = e->run_ccc[j - 1];
        }
        e->run[j] = c;
        e->run_ccc[j] = k;
    }
    for (int i = 0; i < n; i++) emit(e, e->run[i], category(e->run[i]));
    for (int i = n; i < e->nrun; i++) word_append(e, 'x'); /* only the count matters now */
    e->nrun = 0;
}

/* A cleaned code point of category cat: decompose and strip accents when
 * configured. */
static void normalize(enc_t *e, int32_t c, int cat) {
    if (!e->t->opt.strip_accents) {
        emit(e, c, cat);
        return;
    }
    utf8proc_int32_t d[DECOMP_MAX];
    int bound = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char(c, d, DECOMP_MAX, UTF8PROC_DECOMPOSE, &bound);
    if (n < 0 || n > DECOMP_MAX) { d[0] = c; n = 1; }
    for (utf8proc_ssize_t i = 0; i < n; i++) {
        const utf8proc_property_t *p = utf8proc_get_property(d[i]);
        int dcat = d[i] == c ? cat : category_of(d[i], p);
        int mn = dcat == UTF8PROC_CATEGORY_MN;
        if (p->combining_class == 0) {
            if (e->nrun) flush_run(e);
            if (!mn) emit(e, d[i], dcat);
        } else if (!mn) {
            if (e->nrun < WORD_MAX_CHARS + 1) {
                e->run[e->nrun] = d[i];
                e->run_ccc[e->nrun] = (uint8_t)p->combining_class;
            }
            if (e->nrun <= WORD_MAX_CHARS + 1) e->nrun++;
        }
    }
}

/* End of a stretch of text (end of input or a special token): nothing carries over. */
static void end_segment(enc_t *e) {
    if (e->nrun) flush_run(e);
    end_word(e);
}

static const special_t *match_special(const wordpiece_t *t, const uint8_t *s, size_t left) {
    const special_t *best = NULL;
    for (int i = 0; i < t->n_specials; i++) {
        const special_t *sp = &t->specials[i];
        if (sp->len <= left && (!best || sp->len > best->len) && !memcmp(s, sp->text, sp->len))
            best = sp;
    }
    return best;
}

static int wp_encode(const tok_t *tt, const char *text, size_t len, int32_t *ids, int max_ids,
                     int *n_untruncated, char *err, size_t errlen) {
    const wordpiece_t *t = (const wordpiece_t *)tt;
    if (!t || !ids || (!text && len)) {
        util_errf(err, errlen, "tok_encode: NULL tokenizer, text or ids");
        return TOK_EINVAL;
    }
    int limit = t->opt.max_len < max_ids ? t->opt.max_len : max_ids;
    if (limit < 2) {
        util_errf(err, errlen, "tok_encode: room for %d ids, need at least 2 ([CLS] [SEP])", max_ids);
        return TOK_EINVAL;
    }
    enc_t e;
    e.t = t;
    e.ids = ids;
    e.cap = limit - 2;
    e.n = 0;
    e.wchars = 0;
    e.nrun = 0;
    const uint8_t *s = (const uint8_t *)text;
    const int lower = t->opt.lowercase, cjk = t->opt.tokenize_cjk;
    size_t i = 0;
    while (i < len) {
        uint8_t b = s[i];
        if (t->special_first[b]) {
            const special_t *sp = match_special(t, s + i, len - i);
            if (sp) {
                end_segment(&e);
                put_id(&e, sp->id);
                i += sp->len;
                continue;
            }
        }
        if (b < 0x80) { /* ASCII: a starter, no decomposition */
            if (e.nrun) flush_run(&e);
            switch (ascii_class[b]) {
            case CLS_DROP: break;
            case CLS_SPACE: end_word(&e); break;
            case CLS_PUNCT:
                end_word(&e);
                word_append(&e, b);
                end_word(&e);
                break;
            default:
                if (e.wchars < WORD_MAX_CHARS) {
                    int at = e.wchars ? e.end[e.wchars - 1] : 0;
                    e.word[at] = (char)(lower && b >= 'A' && b <= 'Z' ? b + 32 : b);
                    e.end[e.wchars] = (uint16_t)(at + 1);
                }
                if (e.wchars <= WORD_MAX_CHARS) e.wchars++;
            }
            i++;
            continue;
        }
        utf8proc_int32_t c;
        utf8proc_ssize_t n = utf8proc_iterate(s + i, (utf8proc_ssize_t)(len - i), &c);
        if (n < 0) {
            util_errf(err, errlen, "invalid UTF-8 at byte %zu (0x%02X)", i, b);
            return TOK_EUTF8;
        }
        i += (size_t)n;
        int cat = category(c);
        int k = clean_class(c, cat);
        if (k == CLS_DROP) continue;
        if (k == CLS_SPACE) {
            normalize(&e, ' ', UTF8PROC_CATEGORY_ZS);
        } else if (cjk && is_cjk(c)) {
            normalize(&e, ' ', UTF8PROC_CATEGORY_ZS);
            normalize(&e, c, cat);
            normalize(&e, ' ', UTF8PROC_CATEGORY_ZS);
        } else {
            normalize(&e, c, cat);
        }
    }
    end_segment(&e);
    int body = e.n < e.cap ? e.n : e.cap;
    ids[0] = t->cls;
    ids[body + 1] = t->sep;
    if (n_untruncated) *n_untruncated = e.n > INT_MAX - 2 ? INT_MAX : e.n + 2;
    return body + 2;
}

/* ------------------------------------------------------------ construction */

static char *read_file(const char *path, size_t max, size_t *len, int *rc, char *err,
                       size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        util_errf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        *rc = TOK_EIO;
        return NULL;
    }
    char *buf = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        util_errf(err, errlen, "%s is not a regular file", path);
        *rc = TOK_EIO;
        goto fail;
    }
    if ((size_t)st.st_size > max) {
        util_errf(err, errlen, "%s is %lld bytes, more than the %zu allowed", path,
                (long long)st.st_size, max);
        *rc = TOK_EFORMAT;
        goto fail;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        util_errf(err, errlen, "out of memory reading %s", path);
        *rc = TOK_ENOMEM;
        goto fail;
    }
    size_t got = fread(buf, 1, (size_t)st.st_size, f);
    if (got != (size_t)st.st_size || ferror(f)) {
        util_errf(err, errlen, "cannot read %s", path);
        *rc = TOK_EIO;
        goto fail;
    }
    buf[got] = 0;
    *len = got;
    fclose(f);
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

static int set_specials(wordpiece_t *t, special_t *sp, int n) {
    for (int i = 0; i < t->n_specials; i++) free(t->specials[i].text);
    free(t->specials);
    t->specials = sp;
    t->n_specials = n;
    memset(t->special_first, 0, sizeof t->special_first);
    for (int i = 0; i < n; i++) t->special_first[(uint8_t)sp[i].text[0]] = 1;
    return 0;
}

/* HF BertTokenizer's special tokens, those present in the vocab. */
static int default_specials(wordpiece_t *t) {
    static const char *names[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    special_t *sp = calloc(5, sizeof *sp);
    if (!sp) return TOK_ENOMEM;
    int n = 0;
    for (int i = 0; i < 5; i++) {
        int32_t id = wp_lookup(&t->base, names[i]);
        if (id < 0) continue;
        sp[n].text = strdup(names[i]);
        if (!sp[n].text) {
            for (int j = 0; j < n; j++) free(sp[j].text);
            free(sp);
            return TOK_ENOMEM;
        }
        sp[n].len = strlen(names[i]);
        sp[n++].id = id;
    }
    return set_specials(t, sp, n);
}

int tok_create(const char *vocab_path, const tok_options_t *opt, tok_t **out, char *err,
               size_t errlen) {
    int rc = TOK_EINVAL;
    wordpiece_t *t = NULL;
    if (!vocab_path || !opt || !out) {
        util_errf(err, errlen, "tok_create: NULL argument");
        return TOK_EINVAL;
    }
    *out = NULL;
    if (opt->max_len < 2) {
        util_errf(err, errlen, "tokenizer max_len %d: need at least 2 ([CLS] [SEP])", opt->max_len);
        return TOK_EINVAL;
    }
    static pthread_once_t classes_once = PTHREAD_ONCE_INIT;
    pthread_once(&classes_once, ascii_class_init);
    t = calloc(1, sizeof *t);
    if (!t) goto nomem;
    t->base.vt = &WORDPIECE;
    t->opt = *opt;
    size_t len = 0;
    t->blob = read_file(vocab_path, VOCAB_MAX_BYTES, &len, &rc, err, errlen);
    if (!t->blob) goto fail;
    /* One piece per line; a final line without '\n' counts, "\r\n" is accepted. */
    int n = 0;
    for (size_t i = 0; i < len; i++) n += t->blob[i] == '\n';
    if (len && t->blob[len - 1] != '\n') n++;
    if (n == 0) {
        util_errf(err, errlen, "vocab %s is empty", vocab_path);
        rc = TOK_EFORMAT;
        goto fail;
    }
    t->piece_off = malloc((size_t)n * sizeof *t->piece_off);
    if (!t->piece_off) goto nomem;
    if (map_init(&t->whole, n) || map_init(&t->cont, n)) goto nomem;
    size_t at = 0;
    for (int id = 0; id < n; id++) {
        char *nl = memchr(t->blob + at, '\n', len - at);
        size_t e = nl ? (size_t)(nl - t->blob) : len;
        size_t plen = e - at;
        if (plen && t->blob[at + plen - 1] == '\r') plen--;
        t->blob[at + plen] = 0;
        if (plen > 1024) {
            util_errf(err, errlen, "vocab %s line %d is %zu bytes long; not a vocab file?",
                    vocab_path, id + 1, plen);
            rc = TOK_EFORMAT;
            goto fail;
        }
        if (utf8proc_decompose((const utf8proc_uint8_t *)t->blob + at, (utf8proc_ssize_t)plen,
                               NULL, 0, 0) < 0) {
            util_errf(err, errlen, "vocab %s line %d is not valid UTF-8", vocab_path, id + 1);
            rc = TOK_EFORMAT;
            goto fail;
        }
        t->piece_off[id] = (uint32_t)at;
        map_put(&t->whole, t->blob, (uint32_t)at, (uint32_t)plen, id);
        if (plen > 2 && t->blob[at] == '#' && t->blob[at + 1] == '#')
            map_put(&t->cont, t->blob, (uint32_t)at + 2, (uint32_t)plen - 2, id);
        at = e + 1;
    }
    t->n_pieces = n;
    static const char *need[] = {"[CLS]", "[SEP]", "[PAD]", "[UNK]"};
    int32_t *dst[] = {&t->cls, &t->sep, &t->pad, &t->unk};
    for (int i = 0; i < 4; i++) {
        *dst[i] = wp_lookup(&t->base, need[i]);
        if (*dst[i] < 0) {
            util_errf(err, errlen, "vocab %s has no %s line (not a BERT WordPiece vocab?)",
                    vocab_path, need[i]);
            rc = TOK_EFORMAT;
            goto fail;
        }
    }
    if (default_specials(t)) goto nomem;
    *out = &t->base;
    return TOK_OK;
nomem:
    util_errf(err, errlen, "out of memory loading vocab %s", vocab_path);
    rc = TOK_ENOMEM;
fail:
    if (t) wp_destroy(&t->base);
    return rc;
}

static void wp_destroy(tok_t *tt) {
    wordpiece_t *t = (wordpiece_t *)tt;
    if (!t) return;
    set_specials(t, NULL, 0);
    free(t->whole.slots);
    free(t->whole.seen);
    free(t->cont.slots);
    free(t->cont.seen);
    free(t->piece_off);
    free(t->blob);
    free(t);
}

/* ------------------------------------------------------ model folder configs */

/* A JSON file of the model folder: NULL without error when it does not exist. */
static json_t *load_json(const char *dir, const char *name, int *rc, char *err, size_t errlen) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) {
        util_errf(err, errlen, "model path %s is too long", dir);
        *rc = TOK_EINVAL;
        return NULL;
    }
    struct stat st;
    if (stat(path, &st)) return NULL;
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) {
        util_errf(err, errlen, "%s: line %d: %s", path, je.line, je.text);
        *rc = TOK_EFORMAT;
        return NULL;
    }
    if (!json_is_object(j)) {
        util_errf(err, errlen, "%s: not a JSON object", path);
        json_decref(j);
        *rc = TOK_EFORMAT;
        return NULL;
    }
    return j;
}

/* Boolean field: 1/0, or `dflt` when absent or null. */
static int json_flag(json_t *o, const char *key, int dflt) {
    json_t *v = o ? json_object_get(o, key) : NULL;
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* Settings from tokenizer.json (what HF `tokenizers` itself runs on): the
 * normalizer flags, the WordPiece model's parameters, the added tokens. */
static int apply_tokenizer_json(json_t *tj, const char *dir, tok_options_t *o, json_t **added,
                                char *err, size_t errlen) {
    json_t *norm = json_object_get(tj, "normalizer"), *pre = json_object_get(tj, "pre_tokenizer");
    if (norm) { /* HF runs no normalizer at all when it is null: not something we do */
        const char *type = json_string_value(json_object_get(norm, "type"));
        if (!type || strcmp(type, "BertNormalizer") || !json_flag(norm, "clean_text", 1)) {
            util_errf(err, errlen, "%s/tokenizer.json: normalizer %s is not supported (BertNormalizer "
                    "with clean_text only)", dir, type ? type : "null");
            return TOK_EFORMAT;
        }
        o->lowercase = json_flag(norm, "lowercase", 1);
        o->strip_accents = json_flag(norm, "strip_accents", o->lowercase);
        o->tokenize_cjk = json_flag(norm, "handle_chinese_chars", 1);
    }
    if (pre) {
        const char *type = json_string_value(json_object_get(pre, "type"));
        if (!type || strcmp(type, "BertPreTokenizer")) {
            util_errf(err, errlen, "%s/tokenizer.json: pre_tokenizer %s is not supported "
                    "(BertPreTokenizer only)", dir, type ? type : "null");
            return TOK_EFORMAT;
        }
    }
    json_t *model = json_object_get(tj, "model");
    if (json_is_object(model)) {
        const char *type = json_string_value(json_object_get(model, "type"));
        const char *prefix = json_string_value(json_object_get(model, "continuing_subword_prefix"));
        json_t *mc = json_object_get(model, "max_input_chars_per_word");
        if ((type && strcmp(type, "WordPiece")) || (prefix && strcmp(prefix, "##")) ||
            (mc && json_integer_value(mc) != WORD_MAX_CHARS)) {
            util_errf(err, errlen, "%s/tokenizer.json: model %s (prefix %s, %lld chars per word) is "
                    "not supported (WordPiece, \"##\", %d only)", dir, type ? type : "?",
                    prefix ? prefix : "?", mc ? (long long)json_integer_value(mc) : -1LL,
                    WORD_MAX_CHARS);
            return TOK_EFORMAT;
        }
    }
    json_t *at = json_object_get(tj, "added_tokens");
    if (json_is_array(at)) *added = at;
    return TOK_OK;
}

static int load_added_tokens(wordpiece_t *t, json_t *added, const char *dir, char *err, size_t errlen) {
    size_t n = json_array_size(added);
    special_t *sp = calloc(n ? n : 1, sizeof *sp);
    if (!sp) return TOK_ENOMEM;
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(added, i);
        const char *content = json_string_value(json_object_get(a, "content"));
        json_t *idv = json_object_get(a, "id");
        if (!content || !*content || !json_is_integer(idv) || json_integer_value(idv) < 0 ||
            json_integer_value(idv) >= t->n_pieces) {
            util_errf(err, errlen, "%s/tokenizer.json: added_tokens[%zu] needs a content and an id "
                    "inside the vocab (%d pieces)", dir, i, t->n_pieces);
            for (int j = 0; j < k; j++) free(sp[j].text);
            free(sp);
            return TOK_EFORMAT;
        }
        sp[k].text = strdup(content);
        if (!sp[k].text) {
            for (int j = 0; j < k; j++) free(sp[j].text);
            free(sp);
            return TOK_ENOMEM;
        }
        sp[k].len = strlen(content);
        sp[k++].id = (int32_t)json_integer_value(idv);
    }
    return set_specials(t, sp, k);
}

int tok_create_for_model(const char *model_dir, tok_t **out, char *err, size_t errlen) {
    if (!model_dir || !out) {
        util_errf(err, errlen, "tok_create_for_model: NULL argument");
        return TOK_EINVAL;
    }
    *out = NULL;
    int rc = TOK_OK;
    wordpiece_t *t = NULL;
    json_t *tc = NULL, *sb = NULL, *tj = NULL, *added = NULL;
    char vocab[4096];
    if (snprintf(vocab, sizeof vocab, "%s/vocab.txt", model_dir) >= (int)sizeof vocab) {
        util_errf(err, errlen, "model path %s is too long", model_dir);
        return TOK_EINVAL;
    }
    tc = load_json(model_dir, "tokenizer_config.json", &rc, err, errlen);
    if (rc) goto fail;
    sb = load_json(model_dir, "sentence_bert_config.json", &rc, err, errlen);
    if (rc) goto fail;
    tj = load_json(model_dir, "tokenizer.json", &rc, err, errlen);
    if (rc) goto fail;

    tok_options_t o;
    o.lowercase = json_flag(tc, "do_lower_case", 1);
    o.strip_accents = json_flag(tc, "strip_accents", o.lowercase);
    o.tokenize_cjk = json_flag(tc, "tokenize_chinese_chars", 1);
    o.max_len = 512;
    json_t *ml = tc ? json_object_get(tc, "model_max_length") : NULL;
    /* HF writes a huge number (1e30) when there is no limit. */
    if (json_is_number(ml) && json_number_value(ml) >= 2 && json_number_value(ml) <= 1e6)
        o.max_len = (int)json_number_value(ml);
    json_t *ms = sb ? json_object_get(sb, "max_seq_length") : NULL;
    if (ms) {
        if (!json_is_integer(ms) || json_integer_value(ms) < 2 || json_integer_value(ms) > 1000000) {
            util_errf(err, errlen, "%s/sentence_bert_config.json: max_seq_length must be an integer "
                    "in [2, 1000000]", model_dir);
            rc = TOK_EFORMAT;
            goto fail;
        }
        o.max_len = (int)json_integer_value(ms);
    }
    if (tj && (rc = apply_tokenizer_json(tj, model_dir, &o, &added, err, errlen))) goto fail;

    tok_t *base = NULL;
    rc = tok_create(vocab, &o, &base, err, errlen);
    if (rc) goto fail;
    t = (wordpiece_t *)base;
    if (added && (rc = load_added_tokens(t, added, model_dir, err, errlen))) {
        if (rc == TOK_ENOMEM) util_errf(err, errlen, "out of memory loading %s", model_dir);
        goto fail;
    }
    json_decref(tc);
    json_decref(sb);
    json_decref(tj);
    *out = &t->base;
    return TOK_OK;
fail:
    if (t) wp_destroy(&t->base);
    json_decref(tc);
    json_decref(sb);
    json_decref(tj);
    return rc;
}

/* ---------------------------------------------------------------- lookups */

static const wordpiece_t *wp(const tok_t *t) { return (const wordpiece_t *)t; }

static int wp_vocab_size(const tok_t *t) { return wp(t)->n_pieces; }
static int wp_max_len(const tok_t *t) { return wp(t)->opt.max_len; }

static const char *wp_piece(const tok_t *tt, int32_t id) {
    const wordpiece_t *t = wp(tt);
    return id >= 0 && id < t->n_pieces ? t->blob + t->piece_off[id] : NULL;
}

static int32_t wp_lookup(const tok_t *tt, const char *piece) {
    const wordpiece_t *t = wp(tt);
    if (!piece) return -1;
    size_t n = strlen(piece);
    if (n > UINT32_MAX) return -1;
    return map_get(&t->whole, t->blob, piece, (uint32_t)n, fnv(piece, n));
}

static int32_t wp_special(const tok_t *tt, const char *role) {
    const wordpiece_t *t = wp(tt);
    if (!role) return -1;
    if (!strcmp(role, "cls")) return t->cls;
    if (!strcmp(role, "sep")) return t->sep;
    if (!strcmp(role, "pad")) return t->pad;
    if (!strcmp(role, "unk")) return t->unk;
    if (!strcmp(role, "mask")) return wp_lookup(tt, "[MASK]");
    return -1;
}

/* As HF's WordPiece decoder: pieces joined by spaces, "##" pieces glued to
 * the one before; [CLS], [SEP] and [PAD] are left out. */
static int wp_decode_next(const tok_t *tt, tok_decode_state_t *st, int32_t id, char *out, size_t cap) {
    const wordpiece_t *t = wp(tt);
    const char *p = wp_piece(tt, id);
    if (!p) return TOK_EINVAL;
    if (id == t->cls || id == t->sep || id == t->pad) return 0;
    int cont = p[0] == '#' && p[1] == '#' && p[2];
    if (cont) p += 2;
    size_t n = strlen(p), w = 0;
    if (st->n_tokens++ > 0 && !cont && w < cap) out[w++] = ' ';
    if (n > cap - w) n = cap - w;
    memcpy(out + w, p, n);
    return (int)(w + n);
}

static const tok_vtable_t WORDPIECE = {
    .kind = "wordpiece",
    .encode = wp_encode,
    .decode_next = wp_decode_next,
    .special = wp_special,
    .lookup = wp_lookup,
    .piece = wp_piece,
    .vocab_size = wp_vocab_size,
    .max_len = wp_max_len,
    .destroy = wp_destroy,
};
