#!/usr/bin/env python3
"""Reference token ids for the tokenizer parity test (tests/test_tokenizer.c).

Runs HF `tokenizers` (the library behind the model's own fast tokenizer) over
every line of tests/fixtures/tokenizer_corpus.jsonl with the model's
tokenizer.json, truncation and padding off, and writes
tests/fixtures/tokenizer_ids.jsonl: one {"kind", "text", "ids"} per line.
It also checks that HF's truncation to 256 is [CLS] + the first 254 pieces +
[SEP], which is what the C test derives from the full ids.

--build-corpus first (re)writes the corpus from text found on this machine
that nobody here wrote (licenses, Python docstrings and source, man pages,
C headers, gettext translations in ~40 languages), plus generated edge cases
(accents and combining marks, CJK, emoji, control and zero-width characters,
special-token strings, over-long words and lines, empty lines) and a sweep of
the code points whose class matters (marks, punctuation, spaces, controls,
case and decomposition mappings, the CJK range edges, and a sample of the rest).
The sweep uses Python's unicodedata only to choose code points; the expected
ids always come from HF.

Needs only `tokenizers` (pip install tokenizers; a throwaway venv is fine):
    python3 -m venv /tmp/venv-tok && /tmp/venv-tok/bin/pip install tokenizers
    /tmp/venv-tok/bin/python tests/tools/gen_tokenizer_fixture.py [MODEL_DIR] [--build-corpus]
(`make fixtures` runs it through tests/tools/make_fixtures.sh.) After upgrading
utf8proc or tokenizers, `--check-codepoints bin/sluice` compares all 1.1M code
points and lists the ones engine/tokenizer.c must add to its exceptions.
"""
import argparse
import ast
import glob
import gzip
import json
import os
import random
import sys
import unicodedata

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
SEED = 20261127

# HF's is_chinese_char blocks (edges are swept).
CJK = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
       (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]


def clean_line(s):
    return s.rstrip("\n")


def license_lines(rng):
    out = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isdir(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [clean_line(x) for x in f]
        out += rng.sample(lines, min(len(lines), 45))
    return out


def docstrings(rng, n):
    docs = []
    for path in sorted(glob.glob(f"/usr/lib/python3.{sys.version_info.minor}/*.py") or
                       glob.glob("/usr/lib/python3*/*.py")):
        try:
            tree = ast.parse(open(path, encoding="utf-8").read())
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                d = ast.get_docstring(node)
                if d and len(d) > 20:
                    docs.append(d)
    picked = rng.sample(docs, min(n, len(docs)))
    out = []
    for i, d in enumerate(picked):
        # most as one paragraph line; some keep their newlines and indentation
        out.append(d if i % 4 == 0 else " ".join(d.split("\n\n")[0].split()))
    return out


def source_lines(rng, n):
    lines = []
    for pattern in (f"/usr/lib/python3.{sys.version_info.minor}/*.py", "/usr/include/*.h"):
        for path in sorted(glob.glob(pattern))[:80]:
            try:
                with open(path, encoding="utf-8") as f:
                    lines += [clean_line(x) for x in f if x.strip()]
            except UnicodeDecodeError:
                continue
    return rng.sample(lines, min(n, len(lines)))


def man_lines(rng, n):
    lines = []
    for path in sorted(glob.glob("/usr/share/man/man1/*.1.gz"))[:400:4]:
        try:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                lines += [clean_line(x) for x in f if x.strip()]
        except OSError:
            continue
    return rng.sample(lines, min(n, len(lines)))


def translations(rng, per_lang):
    """msgstr strings of gettext catalogs: real sentences in many scripts."""
    import gettext
    langs = ["fr", "de", "es", "pt_BR", "it", "nl", "sv", "da", "fi", "pl", "cs", "sk", "hu", "ro",
             "tr", "vi", "id", "ca", "eu", "gl", "ru", "uk", "bg", "sr", "el", "he", "ar", "fa",
             "hi", "bn", "ta", "te", "th", "ka", "hy", "am", "ja", "zh_CN", "zh_TW", "ko", "is",
             "lt", "lv", "et", "ga", "cy"]
    out = []
    for lang in langs:
        strings = []
        for dom in ("glib20", "gtk20", "coreutils", "apt", "iso_3166-1", "iso_639-3"):
            path = f"/usr/share/locale/{lang}/LC_MESSAGES/{dom}.mo"
            if not os.path.exists(path):
                continue
            try:
                with open(path, "rb") as f:
                    cat = gettext.GNUTranslations(f)._catalog
            except Exception:  # a catalog we cannot parse: skip it
                continue
            strings += sorted(v for k, v in cat.items() if k and isinstance(v, str) and v.strip())
        out += rng.sample(strings, min(per_lang, len(strings)))
    return out


def edge_cases(rng):
    L = []
    # empty and blank
    L += ["", " ", "   ", "\t", "\n", "\r\n", " \t \n ", "\u3000", "\u00a0\u00a0"]
    # accents, precomposed and decomposed, case mappings
    L += ["Café crème brûlée à la façon de Noël", "Cafe\u0301 cre\u0300me", "Ångström Å Å Å",
          "mañana ñandú NIÑO", "über Müller GRÜßE straße STRASSE ẞ", "İstanbul ıi İI",
          "ΟΔΟΣ οδος Σίσυφος ΆΈΉΊΌΎΏ", "Tiếng Việt có dấu: Nguyễn Trãi, Hà Nội", "Dvořák Škoda Łódź Ærø",
          "a\u0323\u0302 a\u0302\u0323 ệ \u1ec7", "q\u0307\u0323 q\u0323\u0307",
          "x\U0001D165\U0001D16E y\U0001D16E\U0001D165 \U0001D15F\U0001D165",
          "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f"
          "A\u0310\u0352\u0303\u0334\u0339\u031f L\u0489G\u0358O\u0361",
          "\u0301 leading mark", "mark after space \u0301 and CJK 中\u0301 and punct .\u0301",
          "ﬁne ﬂow ﬀ ½ ² ℌ ™ ㎏ Ⅻ", "ǅungla ǈ ǋ", "ΐ ΰ ϓ", "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３",
          "Hangul 한국어 텍스트 가나다 힣", "ひらがな カタカナ ｶﾀｶﾅ 日本語の文章です。",
          "中文句子，标点符号！“引号”（括号）", "繁體中文：臺灣", "𠀀𠀁 𪜀 𫝀 𫠠 𬺰 丽 𯨟 豈 鶴",
          "\u2e80 \u2f00 \u3005 \u3007 \u9fff\ua000 \u4dbf\u4dc0 \u33ff\u3400",
          "عربي: مرحبا بالعالم", "עברית: שלום עולם", "हिन्दी: नमस्ते दुनिया", "ไทย: สวัสดีชาวโลก",
          "ქართული ენა", "Հայերեն", "አማርኛ", "Ελληνικά: Καλημέρα κόσμε", "Русский: Съешь же ещё"]
    # emoji: ZWJ sequences, skin tones, flags, variation selectors, keycaps, newer emoji
    L += ["I ❤️ NY 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 1️⃣ #️⃣ ©️ ™️", "🥰🥳🦄 🫠🫡 🪿", "smile:) :-( <3 ¯\\_(ツ)_/¯",
          "emoji🙂inside😉words", "☕ ♥ ★ ✓ ✔ ✗ ☺ ☹ ⚡ 🔥💯"]
    # control, format and zero-width characters
    L += ["tab\there", "cr\rhere", "nul\x00here", "bell\x07here", "vt\x0bff\x0cfs\x1cus\x1f.",
          "esc\x1b[31mred\x1b[0m", "del\x7fhere", "nel\x85here", "zw\u200bsp zw\u200cnj zw\u200dj",
          "word\u2060joiner \ufeffbom", "repl\ufffdacement \ufffd", "soft\u00adhyphen", "ls\u2028ps\u2029end",
          "pua\ue000\uf8ff\U000f0000", "bidi\u202aLRE\u202c \u200eLRM\u200f", "\x00\x01\x02\x03",
          "\u0600\u0601\u061c\u06dd arabic format", "mongolian\u180evs", "interlinear\ufff9a\ufffb",
          "tag\U000E0041\U000E007F", "nbsp\u00a0thin\u2009hair\u200afig\u2007ideo\u3000space"]
    # special-token strings in text (HF matches added tokens on the raw text)
    L += ["[MASK]", "the [MASK] sat on the mat", "[CLS] hello [SEP] world [SEP]", "[mask] [Mask]",
          "[UNK][PAD][MASK]", "foo[SEP]bar", "[[MASK]]", "[MASK", "MASK]", "[MA SK]", "[ MASK ]",
          "x[MASK]y[CLS]z", "é[MASK]é", "中[SEP]文", "[MASK]" * 10]
    # words around the 100-character limit (counted after normalisation)
    for n in (98, 99, 100, 101, 102, 150, 400):
        L.append("a" * n)
        L.append("word " + "ab" * (n // 2) + " end")
    L += ["é" * 100, "é" * 101, "e\u0301" * 100, "e\u0301" * 101, "É" * 101, "ǅ" * 100, "İ" * 60,
          "İ" * 101, "x" + "\u0301" * 300 + "y", "x" + "\U0001D165" * 99, "x" + "\U0001D165" * 100,
          "x" + "\U0001D165\u0301" * 120, "中" * 300, "antidisestablishmentarianism" * 4,
          "pneumonoultramicroscopicsilicovolcanoconiosis",
          "https://example.com/" + "path/segment-" * 12 + "?q=" + "x" * 80,
          "9" * 120, "12345678901234567890", "x" * 100 + ".", "." * 300]
    # punctuation-heavy
    L += ["Hello, world! How's it going? (Fine.) [ok] {yes} <no>", "e.g., i.e., etc., U.S.A., Ph.D.",
          "don't won't can't it's y'all rock'n'roll", "C++ C# F# .NET node.js ~/.bashrc", "a/b\\c|d",
          "$100.00 €50 £30 ¥1000 ₹500 ₿0.01 10% 5‰", "1+1=2; 3*4=12; 2^10=1024; x<y>z; a&&b||c",
          "email: someone@example.org, #hashtag @mention ## ###", "“smart quotes” ‘single’ «guillemets» „low“",
          "em—dash en–dash ‒ ― … ‽ ⁇ ‼ ¿¡ ¶ § † ‡ • ‣ ⁂", "「括弧」『二重』【隅付き】〔亀甲〕",
          "!!!???...,,,;;;:::", "@#$%^&*()_+-=[]{}|;':\",./<>?`~", "---===+++***///"]
    # random mixes from a pool, seeded
    pool = ("the of and to in is was for on that with as by at from it be this are or an "
            "Running jumped happily Unbelievable tokenization WordPiece HuggingFace sluice GPU CUDA "
            "naïve café résumé coöperate façade Zürich São Paulo Kraków Øresund "
            "日本 東京 中国 北京 한국 서울 привет мир γειά σου مرحبا שלום नमस्ते "
            "😀 👍 🇺🇸 ❤️ , . ! ? ; : ' \" ( ) [ ] - -- ... / \\ @ # $ % & * + = < > ~ ` ^ | "
            "\t \u200b \u00ad \ufffd \x00 [MASK] [SEP] 3.14 1,000,000 2026-11-27 12:30").split(" ")
    pool += ["\t", "\n", "\u00a0", "e\u0301", "A\u030a"]
    for _ in range(500):
        k = rng.randint(1, 40)
        sep = rng.choice([" ", "", " ", " ", "\n"])
        L.append(sep.join(rng.choice(pool) for _ in range(k)))
    return L


def long_lines(rng, paragraphs):
    out = []
    for i in range(40):
        k = rng.randint(12, 30) if i < 35 else rng.randint(40, 80)
        out.append(" ".join(rng.sample(paragraphs, min(k, len(paragraphs)))))
    return out


def sweep():
    """Code points whose class matters, 24 per line, each alone and inside a word."""
    pick = set()
    for c in range(0x80, 0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        cat = unicodedata.category(ch)
        if cat[0] in "MPZ" or cat in ("Cc", "Cf") or unicodedata.decomposition(ch) or \
                ch.lower() != ch or ch.upper() != ch:
            pick.add(c)
        elif cat == "Co" and (c & 0xFFF) == 0:
            pick.add(c)
        elif c % 151 == 0:
            pick.add(c)
    for lo, hi in CJK:
        pick.update(x for x in (lo - 1, lo, hi, hi + 1) if not 0xD800 <= x <= 0xDFFF)
    # every code point of the ranges where HF's old category tables differ from utf8proc's
    for lo, hi in [(0x61D, 0x61D), (0x7FD, 0x7FD), (0x890, 0x8E2), (0x1ABF, 0x1ACE), (0x2E43, 0x2E5D),
                   (0x10D24, 0x10F89), (0x1182F, 0x11FFF), (0x12FF1, 0x13455), (0x1E000, 0x1E4EF),
                   (0x166D, 0x166D), (0x1734, 0x1734), (0x111C9, 0x111C9)]:
        pick.update(range(lo, hi + 1))
    cps = sorted(pick)
    out = []
    for i in range(0, len(cps), 24):
        out.append(" ".join(f"{chr(c)} x{chr(c)}x" for c in cps[i:i + 24]))
    return out


def build_corpus(path):
    rng = random.Random(SEED)
    items = []
    lic = license_lines(rng)
    docs = docstrings(rng, 700)
    items += [("license", x) for x in lic]
    items += [("docstring", x) for x in docs]
    items += [("source", x) for x in source_lines(rng, 300)]
    items += [("man", x) for x in man_lines(rng, 300)]
    items += [("translation", x) for x in translations(rng, 25)]
    items += [("edge", x) for x in edge_cases(rng)]
    items += [("long", x) for x in long_lines(rng, [d for d in docs if len(d) > 200] + lic)]
    items += [("sweep", x) for x in sweep()]
    with open(path, "w", encoding="utf-8") as f:
        for kind, text in items:
            f.write(json.dumps({"kind": kind, "text": text}, ensure_ascii=False) + "\n")
    counts = {}
    for kind, _ in items:
        counts[kind] = counts.get(kind, 0) + 1
    print(f"corpus: {len(items)} lines {counts} -> {path}")


def check_codepoints(tk, sluice, model):
    """Every code point, alone and inside a word, through HF and `sluice tokenize`;
    prints the differing code points as ranges (what hf_category_override in
    engine/tokenizer.c must list after a utf8proc or tokenizers upgrade)."""
    import subprocess
    import tempfile
    cps = [c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF and c not in (0x0A, 0x0D)]
    texts = []
    for c in cps:
        texts += [" " + chr(c), "x" + chr(c) + "x"]
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt") as f:
        f.write("\n".join(texts) + "\n")
        f.flush()
        out = subprocess.run([sluice, "tokenize", "--model", model, "--file", f.name],
                             capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{sluice} tokenize failed: {out.stderr.strip()}")
    ours = [json.loads(x)["ids"] for x in out.stdout.splitlines()]
    if len(ours) != len(texts):
        sys.exit(f"{sluice} printed {len(ours)} lines for {len(texts)} inputs")
    bad = []
    for i in range(0, len(texts), 50000):
        for k, e in enumerate(tk.encode_batch(texts[i:i + 50000])):
            if e.ids != ours[i + k] and (not bad or bad[-1] != cps[(i + k) // 2]):
                bad.append(cps[(i + k) // 2])
    ranges = []
    for c in bad:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    for lo, hi in ranges:
        print(f"differs: U+{lo:04X}..U+{hi:04X} ({unicodedata.category(chr(lo))} in Python's "
              f"Unicode {unicodedata.unidata_version})")
    print(f"{len(cps)} code points checked, {len(bad)} differ")
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", nargs="?", help="model folder (same as --model)")
    ap.add_argument("--model", default="models/all-minilm-l6-v2")
    ap.add_argument("--corpus", default=os.path.join(FIX, "tokenizer_corpus.jsonl"))
    ap.add_argument("--out", default=os.path.join(FIX, "tokenizer_ids.jsonl"))
    ap.add_argument("--build-corpus", action="store_true", help="rewrite the corpus first")
    ap.add_argument("--check-codepoints", metavar="SLUICE",
                    help="compare every code point with this sluice binary instead")
    args = ap.parse_args()
    if args.model_dir:
        args.model = args.model_dir
    from tokenizers import Tokenizer, __version__ as tk_version

    tk = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tk.no_truncation()
    tk.no_padding()
    if args.check_codepoints:
        sys.exit(check_codepoints(tk, args.check_codepoints, args.model))
    if args.build_corpus:
        build_corpus(args.corpus)
    rows = [json.loads(x) for x in open(args.corpus, encoding="utf-8")]
    texts = [r["text"] for r in rows]
    full = [e.ids for e in tk.encode_batch(texts)]
    cls, sep = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
    tk.enable_truncation(256)
    cut = [e.ids for e in tk.encode_batch(texts)]
    for i, (f, c) in enumerate(zip(full, cut)):
        want = f if len(f) <= 256 else f[:255] + [sep]
        if c != want or f[0] != cls or f[-1] != sep:
            sys.exit(f"line {i + 1}: HF truncation is not [CLS] + first 254 + [SEP]")
    with open(args.out, "w", encoding="utf-8") as f:
        for r, ids in zip(rows, full):
            f.write(json.dumps({"kind": r["kind"], "text": r["text"], "ids": ids},
                               ensure_ascii=False, separators=(",", ":")) + "\n")
    n_long = sum(len(x) > 256 for x in full)
    print(f"fixture: {len(rows)} lines, {sum(map(len, full))} ids, {n_long} over 256 ids, "
          f"tokenizers {tk_version} -> {args.out}")


if __name__ == "__main__":
    main()
