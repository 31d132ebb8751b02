#!/usr/bin/env python3
"""Peers for the CPU embedding benchmark, on the same corpus as bench-embed_bench.

    cpu_peers.py MODEL_DIR CORPUS LIMIT BATCH [BATCH...]

sentence-transformers (PyTorch, CPU, fp32) `encode`, and onnxruntime (CPU,
fp32) running the same model exported to ONNX, with HF tokenizers, mean
pooling and L2 normalisation in numpy. Each prints one JSON line per batch
size with the median of 3 passes after a warm-up, like the C driver.
Threads: both peers use every core they may run on (torch.set_num_threads, ORT intra-op).
PEERS (environment, comma-separated; default both) picks the systems timed.
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

model_dir, corpus, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
batches = [int(b) for b in sys.argv[4:]]
with open(corpus, encoding="utf-8", errors="replace") as f:
    texts = [line.rstrip("\n") for line in f][:limit]
cores = len(os.sched_getaffinity(0))  # the cores taskset leaves us, as sluice counts them
torch.set_num_threads(cores)


def timed(fn, repeat=3):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


st = SentenceTransformer(model_dir, device="cpu")
tok = st.tokenizer
max_len = st.max_seq_length
n_tokens = sum(len(ids) for ids in tok(texts, truncation=True, max_length=max_len)["input_ids"])


def report(system, bs, secs):
    print(json.dumps({"system": system, "device": "cpu", "dtype": "fp32", "batch": bs, "sentences": len(texts),
                      "tokens": n_tokens, "seconds": round(secs, 4),
                      "sentences_per_s": round(len(texts) / secs, 1), "tokens_per_s": round(n_tokens / secs)}),
          flush=True)


peers = os.environ.get("PEERS", "sentence-transformers,onnxruntime").split(",")
for bs in batches if "sentence-transformers" in peers else []:
    with torch.inference_mode():
        report("sentence-transformers", bs, timed(lambda: st.encode(texts, batch_size=bs, show_progress_bar=False)))

# onnxruntime: export the transformer once (cached next to the corpus)
import onnxruntime as ort

onnx_path = os.path.join(os.path.dirname(os.path.abspath(corpus)), "minilm.onnx")
if not os.path.exists(onnx_path):
    class Encoder(torch.nn.Module):  # positional inputs for the exporter
        def __init__(self, hf):
            super().__init__()
            self.hf = hf

        def forward(self, input_ids, attention_mask):
            return self.hf(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    hf = Encoder(st[0].auto_model.eval())
    dummy = tok(["hello world"], return_tensors="pt")
    torch.onnx.export(hf, (dummy["input_ids"], dummy["attention_mask"]), onnx_path,
                      input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                      dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"},
                                    "last_hidden_state": {0: "b", 1: "t"}}, opset_version=17, dynamo=False)
so = ort.SessionOptions()
so.intra_op_num_threads = cores
sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # as sentence-transformers does


def ort_encode(bs):
    out = [None] * len(texts)
    for s in range(0, len(order), bs):
        idx = order[s:s + bs]
        enc = tok([texts[i] for i in idx], truncation=True, max_length=max_len, padding=True, return_tensors="np")
        h = sess.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                            "attention_mask": enc["attention_mask"].astype(np.int64)})[0]
        m = enc["attention_mask"][..., None].astype(np.float32)
        e = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        for k, i in enumerate(idx):
            out[i] = e[k]
    return out


for bs in batches if "onnxruntime" in peers else []:
    report("onnxruntime", bs, timed(lambda: ort_encode(bs)))

# the exported model must compute what sentence-transformers does
ref = st.encode(texts[:64], batch_size=64, show_progress_bar=False)
texts_all, texts = texts, texts[:64]
order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
got = np.stack(ort_encode(64))
print(json.dumps({"check": "onnxruntime vs sentence-transformers", "max_abs_diff": float(np.abs(got - ref).max())}),
      flush=True)
