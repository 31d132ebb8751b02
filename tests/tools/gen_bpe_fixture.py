#!/usr/bin/env python3
"""Reference token ids for the byte-level BPE parity test (tests/test_bpe.c).

The reference is HF `tokenizers` on the GGUF's own vocabulary and merges, as
transformers' GGUF loader builds it (AutoTokenizer.from_pretrained(dir,
gguf_file=...)), with its pre-tokenizer replaced by what the file's
`tokenizer.ggml.pre` = "smollm" means (and what SmolLM2's own tokenizer.json
has):
    Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)]
transformers' GGUF path ignores tokenizer.ggml.pre and leaves the digit split
out, so "a  1" would tokenize differently; this script checks that it now
gives ["a", "ĠĠ", "1"]. The same tokenizer rebuilt by hand from the `gguf`
package's arrays (tokenizers.models.BPE + the special tokens of type CONTROL)
must give the same ids on every line, or the script fails.

Writes tests/fixtures/bpe_corpus.jsonl ({"kind", "text"} per line; built with
--build-corpus) and tests/fixtures/bpe_ids.jsonl ({"ids"} per corpus line,
special tokens parsed, nothing added: add_bos_token is false; "rt": 1 when
HF's decode gives the text back, else "dec": what HF's decode gives).

The corpus: a sample of tests/fixtures/tokenizer_corpus.jsonl (prose,
licences, docstrings, source, man pages, translations in ~40 languages, the
code point sweep and edge cases) plus generated lines: code, numbers in many
scripts, whitespace runs (tabs, CR/LF, NBSP, U+3000, U+0085, U+2028), emoji
sequences, CJK, accented and combining text, RTL, contractions, and the
model's control-token strings inside text.

usage: gen_bpe_fixture.py GGUF [--build-corpus]   (tests/tools/make_fixtures.sh runs it)
"""
import argparse
import json
import os
import random
import sys

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
SEED = 20261203


def hf_from_transformers(gguf_path):
    from tokenizers import pre_tokenizers as pt
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)),
                                        gguf_file=os.path.basename(gguf_path))
    hf = tok.backend_tokenizer
    hf.pre_tokenizer = pt.Sequence([pt.Digits(individual_digits=True),
                                    pt.ByteLevel(add_prefix_space=False, use_regex=True)])
    hf.post_processor = None  # nothing added (add_bos_token is false)
    return hf


def hf_from_arrays(gguf_path):
    import gguf
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from tokenizers import pre_tokenizers as pt

    r = gguf.GGUFReader(gguf_path)
    f = r.fields
    assert f["tokenizer.ggml.model"].contents() == "gpt2"
    assert f["tokenizer.ggml.pre"].contents() == "smollm"
    toks = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ")) for m in f["tokenizer.ggml.merges"].contents()]
    t = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(toks)}, merges=merges))
    t.pre_tokenizer = pt.Sequence([pt.Digits(individual_digits=True),
                                   pt.ByteLevel(add_prefix_space=False, use_regex=True)])
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([AddedToken(s, special=True, normalized=False)
                          for s, ty in zip(toks, types) if ty in (3, 4)])
    return t


def generated_lines(rng):
    out = []
    words = ("the quick brown fox jumps over lazy dog model token batch queue server engine "
             "don't it's we're they've I'm you'll he'd WE'RE Can'T O'Neil rock'n'roll").split()
    # whitespace runs
    spaces = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u0085",
              "\u2028", "\u2029", "\u2003", "\u200b", " \t ", "\x0b", "\x0c", "    \n\t  "]
    for _ in range(300):
        n = rng.randint(1, 8)
        s = ""
        for _ in range(n):
            s += rng.choice(words + ["1", "42", "3.14", "!", "...", "'s", "'", "(", ")"])
            s += rng.choice(spaces)
        out.append(("whitespace", s))
    # numbers in many scripts and shapes
    digits = ["0123456789", "٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "０１２３４５６７８９",
              "²³¹¼½¾", "ⅠⅡⅢⅣⅫ", "①②③", "〇一二三", "𝟎𝟏𝟐𝟑"]
    for _ in range(250):
        d = rng.choice(digits)
        num = "".join(rng.choice(d) for _ in range(rng.randint(1, 12)))
        tmpl = rng.choice(["{}", "x{}", " {}", "  {}", "a  {}", "{} items", "${}.99", "v{}.{}.{}",
                           "{}-{}-{}", "+1 ({}) {}-{}", "{}%", "{}e-{}", "0x{}ff", "call {}, then {}"])
        out.append(("numbers", tmpl.format(*([num] * tmpl.count("{}")))))
    # code
    code = [
        "int main(int argc, char **argv) {\n    return argc > 1 ? 0 : 1;\n}",
        "for (size_t i = 0; i < n; i++) sum += a[i] * b[i];",
        "def f(x):\n\treturn [y ** 2 for y in range(x) if y % 3 == 0]",
        "    if __name__ == \"__main__\":\n        main()",
        "{\"model\": \"smollm2\", \"max_tokens\": 128, \"stop\": [\"\\n\"]}",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
        "const x = (a, b) => a?.b ?? `${b}`;",
        "#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))",
        "fn main() { let v: Vec<u8> = vec![1, 2, 3]; println!(\"{:?}\", v); }",
        "<div class=\"x\">&nbsp;&lt;tag&gt;</div>",
        "$ make -j2 CUDA=0 build/tests/test_bpe && ./build/tests/test_bpe --jobs 1",
        "x+=1;y-=2;z*=3;w/=4;q%=5;a<<=1;b>>=2;c&=d|e^~f",
        "matrix[i][j] = matrix[i-1][j-1] + (s[i] == t[j] ? 0 : 1);",
        "    \n\n    return None  # nothing\n",
        "git commit -m 'fix: don't crash'  # it's fine",
        "https://example.com/path?q=1&r=two#frag",
        "user@example.org; C:\\Windows\\System32\\drivers\\etc\\hosts",
    ]
    for _ in range(250):
        a = rng.choice(code)
        if rng.random() < 0.5:
            a = a + rng.choice(spaces) + rng.choice(code)
        out.append(("code", a))
    # scripts: CJK, accented, RTL, emoji
    samples = [
        "日本語のテキストと漢字、カタカナ。", "中文分词测试：你好，世界！", "한국어 문장입니다. 안녕하세요",
        "Café naïve résumé coöperate façade Ångström", "e\u0301 a\u0300 o\u0308 n\u0303 combining",
        "Zürich Straße Œuvre ĳ ǅ ﬁ ﬂ", "Ελληνικά κείμενα με τόνους", "Русский текст с ёлкой",
        "שלום עולם, זה טקסט בעברית", "مرحبا بالعالم، هذا نص عربي ١٢٣", "‏RTL mark‎ and ‪embed‬",
        "हिन्दी पाठ का उदाहरण", "ภาษาไทยไม่มีช่องว่าง", "Tiếng Việt có dấu",
        "😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇯🇵", "emoji😀inside😀words", "❤️ ☕ ✔︎ ©®™",
        "𝓕𝓪𝓷𝓬𝔂 𝕿𝖊𝖝𝖙", "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ", "ℌ𝔢𝔩𝔩𝔬 ℵ₀ ∑∫∂√∞", "\u200d\u200c\ufeff zero width",
        "\U0010ffff\U000e0001 tags", "\x01\x02\x1f\x7f controls",
    ]
    for _ in range(400):
        k = rng.randint(1, 3)
        s = rng.choice(spaces).join(rng.choice(samples) for _ in range(k))
        out.append(("scripts", s))
    # control-token strings inside text
    specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>",
                "<jupyter_code>", "<empty_output>", "<|im_sta", "im_end|>", "<|im_start|", "<<|im_end|>>"]
    for _ in range(200):
        parts = []
        for _ in range(rng.randint(1, 5)):
            parts.append(rng.choice(specials))
            parts.append(rng.choice(["", "user\nhi", "assistant\n", " text ", "\n", "12", "  "]))
        out.append(("special", "".join(parts)))
    # very long words and runs (the merge loop on long chunks)
    for n in (300, 1000, 3000):
        out.append(("longword", "a" * n))
        out.append(("longword", "ab" * (n // 2)))
        out.append(("longword", " " * n + "x"))
        out.append(("longword", "!?" * (n // 2)))
        out.append(("longword", "\u00e9" * n))
        out.append(("longword", "1" * n))
    return out


def build_corpus():
    rng = random.Random(SEED)
    base = [json.loads(l) for l in open(os.path.join(FIX, "tokenizer_corpus.jsonl"), encoding="utf-8")]
    keep = {"edge": 1.0, "sweep": 0.6, "long": 0.5, "license": 0.25, "docstring": 0.3, "source": 0.5,
            "man": 0.4, "translation": 0.4}
    lines = [(r["kind"], r["text"]) for r in base if rng.random() < keep.get(r["kind"], 0.3)]
    lines += generated_lines(rng)
    # the edge cases the C test names
    lines += [("edge", "a  1"), ("edge", ""), ("edge", " "), ("edge", "hello world"),
              ("edge", "I'm sure it's 2024-12-03, isn't it?")]
    with open(os.path.join(FIX, "bpe_corpus.jsonl"), "w", encoding="utf-8") as f:
        for kind, text in lines:
            f.write(json.dumps({"kind": kind, "text": text}, ensure_ascii=False) + "\n")
    print(f"bpe corpus: {len(lines)} lines", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--build-corpus", action="store_true")
    a = ap.parse_args()
    if a.build_corpus:
        build_corpus()
    hf = hf_from_transformers(a.gguf)
    ref = hf_from_arrays(a.gguf)
    want = ["a", "ĠĠ", "1"]
    got = hf.encode("a  1", add_special_tokens=False).tokens
    if got != want:
        sys.exit(f"'a  1' gives {got}, expected {want}: the digit split is missing")
    lines = [json.loads(l)["text"] for l in open(os.path.join(FIX, "bpe_corpus.jsonl"), encoding="utf-8")]
    n_tok = n_lossy = 0
    with open(os.path.join(FIX, "bpe_ids.jsonl"), "w") as f:
        for i, text in enumerate(lines):
            ids = hf.encode(text, add_special_tokens=False).ids
            ids2 = ref.encode(text, add_special_tokens=False).ids
            if ids != ids2:
                sys.exit(f"line {i + 1}: transformers' tokenizer and the one built from the arrays disagree")
            # bytes without a token of their own (the vocabulary lacks 21 of
            # the 256, e.g. 0x04 and the lead byte 0xF1) are dropped by HF's
            # BPE (no unk_token): such a line does not round-trip
            dec = hf.decode(ids, skip_special_tokens=False)
            rt = dec == text
            n_tok += len(ids)
            n_lossy += not rt
            rec = {"ids": ids, "rt": int(rt)}
            if not rt:
                rec["dec"] = dec  # what HF makes of the bytes left (U+FFFD for broken characters)
            f.write(json.dumps(rec, separators=(",", ":"), ensure_ascii=False) + "\n")
    print(f"bpe ids: {len(lines)} lines, {n_tok} tokens, {n_lossy} lines with dropped bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
