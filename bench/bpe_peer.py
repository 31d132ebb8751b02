#!/usr/bin/env python3
"""Peer for bin/bench-bpe_bench: HF `tokenizers` (Rust) on the same corpus,
built as tests/tools/gen_bpe_fixture.py builds the reference tokenizer.

    bpe_peer.py GGUF [CORPUS.jsonl] [SECONDS]

Prints JSON lines like the C driver: `encode` one line at a time on one
thread (what bpe_encode does per request), and `encode_batch` over the whole
corpus (HF's own thread pool, every core). Median of 3 passes of at least
SECONDS/3 s after a warm-up; the load average with each figure.
"""
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "tools"))
import gen_bpe_fixture  # noqa: E402


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().strip()


def timed(fn, min_s):
    fn()
    runs = []
    for _ in range(3):
        reps, t0 = 0, time.perf_counter()
        while True:
            fn()
            reps += 1
            t = time.perf_counter() - t0
            if t >= min_s:
                break
        runs.append(t / reps)
    return statistics.median(runs)


def main():
    gguf = sys.argv[1]
    corpus = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/bpe_corpus.jsonl"
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    texts = [json.loads(l)["text"] for l in open(corpus, encoding="utf-8")]
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    tok = gen_bpe_fixture.hf_from_arrays(gguf)
    ntok = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))

    def one():
        for t in texts:
            tok.encode(t, add_special_tokens=False)

    def batch():
        tok.encode_batch(texts, add_special_tokens=False)

    for name, fn in (("hf_encode", one), ("hf_encode_batch", batch)):
        s = timed(fn, seconds / 3)
        print(json.dumps({"run": name, "MB_per_s": round(nbytes / s / 1e6, 2), "tokens_per_s": round(ntok / s),
                          "ms_per_pass": round(s * 1e3, 2), "loadavg": loadavg()}))


if __name__ == "__main__":
    main()
