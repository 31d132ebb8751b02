#!/usr/bin/env python3
"""HTTP client of bench/gpu-serve-check.sh (standard library only).

    gpu_serve_client.py PORT MODEL REFERENCE.jsonl

Sends the fixture sentences (all but the blank ones, which the API refuses) to POST /v1/embeddings from 64 threads, 4 inputs a
request, several rounds; checks every vector against the reference (the CPU
backend's `sluice embed` output for the same texts, same weights): cosine >=
0.9999; reads the server's mean batch size from /metrics; prints one JSON line.
Exit 1 on any failed request or vector.
"""
import json
import math
import sys
import threading
import time
import urllib.request

port, model, ref_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
base = f"http://127.0.0.1:{port}"
texts = [json.loads(l)["text"] for l in open("tests/fixtures/embeddings.jsonl", encoding="utf-8")]
ref = [json.loads(l)["embedding"] for l in open(ref_path, encoding="utf-8")]
assert len(ref) == len(texts), (len(ref), len(texts))
# the API refuses an empty input (400, by design): leave the fixture's blank lines out
keep = [i for i, t in enumerate(texts) if t.strip()]
texts, ref = [texts[i] for i in keep], [ref[i] for i in keep]

jobs = [list(range(i, min(i + 4, len(texts)))) for i in range(0, len(texts), 4)] * 8  # 8 rounds
lock = threading.Lock()
state = {"next": 0, "bad": 0, "errors": 0, "worst": 1.0, "sentences": 0}


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def worker():
    while True:
        with lock:
            if state["next"] >= len(jobs):
                return
            idx = jobs[state["next"]]
            state["next"] += 1
        body = json.dumps({"model": model, "input": [texts[i] for i in idx]}).encode()
        req = urllib.request.Request(base + "/v1/embeddings", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                data = json.load(r)["data"]
        except Exception as e:  # noqa: BLE001 - counted and reported
            with lock:
                state["errors"] += 1
                if state["errors"] <= 3:
                    print(f"request failed: {e}", file=sys.stderr)
            continue
        for d in data:
            c = cosine(d["embedding"], ref[idx[d["index"]]])
            with lock:
                state["worst"] = min(state["worst"], c)
                state["bad"] += c < 0.9999
                state["sentences"] += 1


t0 = time.time()
threads = [threading.Thread(target=worker) for _ in range(64)]
for t in threads:
    t.start()
for t in threads:
    t.join()
secs = time.time() - t0
metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
vals = {}
for line in metrics.splitlines():
    for key in ("sluice_batch_size_sum", "sluice_batch_size_count"):
        if line.startswith(key):
            vals[key] = vals.get(key, 0.0) + float(line.split()[-1])
mean_batch = vals.get("sluice_batch_size_sum", 0) / max(vals.get("sluice_batch_size_count", 0), 1)
out = {"check": "gpu-serve", "requests": len(jobs), "sentences": state["sentences"], "errors": state["errors"],
       "min_cosine_vs_cpu": round(state["worst"], 7), "below_0.9999": state["bad"],
       "mean_batch_size": round(mean_batch, 2), "seconds": round(secs, 3),
       "sentences_per_s": round(state["sentences"] / secs, 1)}
print(json.dumps(out))
sys.exit(1 if state["errors"] or state["bad"] or state["sentences"] != 8 * len(texts) else 0)
