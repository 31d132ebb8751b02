#!/usr/bin/env python3
"""Reference embeddings for the engine parity test, from the model's own library.

Writes tests/fixtures/embeddings.jsonl: one JSON object per sentence with
"text", "tokens" (ids after truncation, as sentence-transformers feeds them to
the model) and "embedding" (sentence-transformers `encode`, float32,
normalised as the model's modules say).

Sentences: real English no one here wrote (the license texts Debian ships in
/usr/share/common-licenses, cut at sentence ends), plus short and very long
inputs so lengths run from 1 token to past the 256-token truncation.

Run through `make fixtures` (needs PyPI: it makes a throwaway virtualenv with
sentence-transformers); CI only reads the committed fixture.
"""
import glob
import json
import os
import random
import re
import sys

from sentence_transformers import SentenceTransformer

model_dir = sys.argv[1] if len(sys.argv) > 1 else "models/all-minilm-l6-v2"
out_path = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/embeddings.jsonl"

rng = random.Random(20261127)
text = ""
for path in sorted(glob.glob("/usr/share/common-licenses/*")):
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            text += f.read() + "\n"
sentences = [re.sub(r"\s+", " ", s).strip() for s in re.split(r"(?<=[.!?])\s+", text)]
sentences = [s for s in sentences if 3 <= len(s) <= 600]
sentences = sorted(set(sentences))
rng.shuffle(sentences)

picked = sentences[:170]
# long inputs: runs of consecutive sentences, 150 to 400+ words, truncated at 256 tokens
for i in range(25):
    start = rng.randrange(0, len(sentences) - 60)
    picked.append(" ".join(sentences[start:start + rng.randint(8, 40)]))
picked += ["a", "Hi", "OK.", "?", "", "   ", "Naïve café façade — déjà vu.", "北京欢迎你", "Emoji: 🙂👍🏽",
           "The quick brown fox jumps over the lazy dog.", "supercalifragilisticexpialidocious " * 3,
           "x" * 150, "tab\tseparated\ttext", "UPPER lower MiXeD"]

model = SentenceTransformer(model_dir, device="cpu")
tok = model.tokenizer
emb = model.encode(picked, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
max_len = model.max_seq_length
os.makedirs(os.path.dirname(out_path), exist_ok=True)
with open(out_path, "w", encoding="utf-8") as f:
    for s, e in zip(picked, emb):
        ids = tok(s, truncation=True, max_length=max_len)["input_ids"]
        f.write(json.dumps({"text": s, "tokens": ids, "embedding": [float(x) for x in e]},
                           ensure_ascii=False) + "\n")
lens = sorted(len(tok(s)["input_ids"]) for s in picked)
print(f"{out_path}: {len(picked)} sentences, untruncated tokens {lens[0]}..{lens[-1]}, max_seq_length {max_len}")
