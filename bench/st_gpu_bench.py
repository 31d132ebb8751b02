#!/usr/bin/env python3
"""The PyTorch half of bench/gpu-check.sh: the card's bf16 GEMM rate and copy
bandwidth, sentence-transformers (fp16) at the shapes sluice is timed at, and
sentence-transformers' own embeddings against the ones sluice dumped.

usage: st_gpu_bench.py --model DIR --out FILE.json [--fixture F] [--dump DIR]
                       [--shapes 1x16,...] [--seconds S] [--device cuda|cpu]

Shapes NxL are fed as token ids (the same LCG as bench/gpu_bench.c: [CLS],
ids in [2000, 29000), [SEP]) with an all-ones attention mask straight into the
model's forward (Transformer, mean pooling, normalise), so no tokenizer time
is counted; the ids go up and the embeddings come down inside the timed
region, as they do for sluice. The mixed batch is the fixture's texts through
`encode` (tokenization included; one batch, and batches of 32, the better
counts) and through the forward on pre-tokenized, padded features.
Only torch, sentence-transformers and the standard library are used.
"""
import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MASK64 = (1 << 64) - 1


def synth_ids(n, length, cls_id, sep_id):
    """bench/gpu_bench.c's synth_ids, bit for bit."""
    x = 0x9E3779B97F4A7C15 ^ ((n * 1000003 + length) & MASK64)
    rows = []
    for _ in range(n):
        row = [cls_id]
        for _ in range(length - 2):
            x = (x * 6364136223846793005 + 1442695040888963407) & MASK64
            row.append(2000 + (x >> 33) % 27000)
        row.append(sep_id)
        rows.append(row)
    return rows


def sync(torch, device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_fn(fn, seconds, torch, device, warmup=3, min_reps=5, max_reps=1000):
    for _ in range(warmup):
        fn()
    sync(torch, device)
    ms, start = [], time.perf_counter()
    while len(ms) < max_reps and (len(ms) < min_reps or time.perf_counter() - start < seconds):
        t0 = time.perf_counter()
        fn()
        sync(torch, device)
        ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "p90_ms": ms[int(0.9 * (len(ms) - 1))],
            "reps": len(ms)}


def gemm_rate(torch, device, n=8192, reps=10):
    """bf16 n^3 matrix product on random data: TFLOP/s (median of reps, events)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(torch, device)
    times = []
    for _ in range(reps):
        if device == "cuda":
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            a @ b
            e1.record()
            e1.synchronize()
            times.append(e0.elapsed_time(e1) * 1e-3)
        else:
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"n": n, "median_s": t, "tflops": 2 * n ** 3 / t / 1e12}


def copy_bandwidth(torch, device, nbytes=2 << 30, reps=10):
    """device-to-device copy, bytes read + written per second (GB/s)."""
    src = torch.empty(nbytes // 2, device=device, dtype=torch.bfloat16).uniform_()
    dst = torch.empty_like(src)
    for _ in range(2):
        dst.copy_(src)
    sync(torch, device)
    t = time_fn(lambda: dst.copy_(src), 0, torch, device, warmup=0, min_reps=reps)["median_ms"] * 1e-3
    return {"bytes": nbytes, "median_s": t, "gb_per_s": 2 * nbytes / t / 1e9}


def cosines(torch, a, b):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fixture", default="tests/fixtures/embeddings.jsonl")
    ap.add_argument("--dump", default=None, help="folder with sluice's emb-*.f32")
    ap.add_argument("--shapes", default="1x16,1x32,32x128,256x128,1024x128")
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--skip-gemm", action="store_true")
    ap.add_argument("--fp32", action="store_true", help="time in fp32 (CPU rehearsal: fp16 on a CPU is slow)")
    ap.add_argument("--mixed-limit", type=int, default=0, help="first N fixture texts only (CPU rehearsal)")
    ap.add_argument("--topk-sizes", default="", help="index sizes for torch.topk (empty: skip), e.g. 20000,1000000")
    ap.add_argument("--topk-nq", default="1,256")
    ap.add_argument("--topk-k", default="10,100")
    ap.add_argument("--topk-dim", type=int, default=384)
    args = ap.parse_args()
    report = {"errors": []}

    def save():
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, args.out)

    def step(name, fn):
        """Run one part; a failure is recorded and the rest goes on."""
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # noqa: BLE001 - the report says what broke
            report["errors"].append("%s: %s: %s" % (name, type(e).__name__, e))
            print("st_gpu_bench: %s failed: %s: %s" % (name, type(e).__name__, e), file=sys.stderr, flush=True)
        print("st_gpu_bench: %s done in %.1f s" % (name, time.perf_counter() - t0), file=sys.stderr, flush=True)
        save()

    import torch
    dev = args.device
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 references stay fp32
    torch.backends.cudnn.allow_tf32 = False
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "device": dev}
    if dev == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, capability="%d.%d" % (p.major, p.minor), sms=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2 ** 30, 1), cuda=torch.version.cuda)
    report["env"] = env
    save()
    if not args.skip_gemm:
        step("gemm_bf16", lambda: gemm_rate(torch, dev))
        step("copy", lambda: copy_bandwidth(torch, dev))
        if dev == "cuda":
            torch.cuda.empty_cache()

    import sentence_transformers
    from sentence_transformers import SentenceTransformer
    env["sentence_transformers"] = sentence_transformers.__version__
    try:
        import transformers
        env["transformers"] = transformers.__version__
    except ImportError:
        pass

    state = {}

    def load():
        t0 = time.perf_counter()
        m = SentenceTransformer(args.model, device=dev).eval()
        m.float() if args.fp32 else m.half()
        state["m"] = m
        auto = m[0].auto_model
        return {"seconds": time.perf_counter() - t0, "dtype": str(next(m.parameters()).dtype),
                "attn_implementation": getattr(auto.config, "_attn_implementation", None),
                "max_seq_length": m.max_seq_length}

    step("st_load", load)
    if "m" not in state:
        return finish(report, save)
    m = state["m"]
    tok = m.tokenizer
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id

    def forward(features):
        with torch.inference_mode():
            out = m({k: v.to(dev) if torch.is_tensor(v) else v for k, v in features.items()})
            return out["sentence_embedding"].float().cpu()

    def shapes():
        rows = []
        for shape in args.shapes.split(","):
            n, length = (int(v) for v in shape.split("x"))
            ids = torch.tensor(synth_ids(n, length, cls_id, sep_id), dtype=torch.long)
            feats = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                     "token_type_ids": torch.zeros_like(ids)}
            t = time_fn(lambda: forward(feats), args.seconds, torch, dev)
            t.update(n=n, len=length, tokens=n * length,
                     tokens_per_s=n * length / (t["median_ms"] * 1e-3), seqs_per_s=n / (t["median_ms"] * 1e-3))
            rows.append(t)
            print("st_gpu_bench: %dx%d %.3f ms" % (n, length, t["median_ms"]), file=sys.stderr, flush=True)
        return rows

    step("st_shapes", shapes)

    texts = []
    if os.path.exists(args.fixture):
        with open(args.fixture, encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f if line.strip()]
        if args.mixed_limit:
            texts = texts[:args.mixed_limit]

    def mixed():
        # `preprocess` in newer releases, `tokenize` before (deprecated since)
        feats = (getattr(m, "preprocess", None) or m.tokenize)(texts)
        real = int(feats["attention_mask"].sum())
        res = {"n": len(texts), "tokens": real, "padded_tokens": int(feats["input_ids"].numel())}
        fwd = time_fn(lambda: forward(feats), args.seconds, torch, dev)
        res["forward_pretokenized"] = dict(fwd, tokens_per_s=real / (fwd["median_ms"] * 1e-3))
        for bs in (len(texts), 32):
            t = time_fn(lambda: m.encode(texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False),
                        args.seconds, torch, dev, warmup=2)
            res["encode_bs%d" % bs] = dict(t, tokens_per_s=real / (t["median_ms"] * 1e-3))
        best = min((k for k in res if k.startswith("encode_bs")), key=lambda k: res[k]["median_ms"])
        res["encode_best"] = dict(res[best], batch=best)
        return res

    if texts:
        step("st_mixed", mixed)

    def agreement():
        """sentence-transformers' embeddings of the fixture (fp32 and fp16 compute, these
        same fp16-stored weights) against the ones sluice dumped."""
        import array
        H = (getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension)()
        res = {}
        with torch.inference_mode():
            ref16 = torch.as_tensor(m.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False))
        m32 = m.float()
        with torch.inference_mode():
            ref32 = torch.as_tensor(m32.encode(texts, batch_size=32, convert_to_numpy=True,
                                               show_progress_bar=False))
        m.float() if args.fp32 else m.half()
        for name in ("cpu-fp32", "cuda-fp32", "cuda-bf16", "cuda-fp16"):
            path = os.path.join(args.dump, "emb-%s.f32" % name)
            if not os.path.exists(path):
                continue
            a = array.array("f")
            with open(path, "rb") as f:
                a.frombytes(f.read())
            x = torch.tensor(a, dtype=torch.float32).reshape(-1, H)[:len(texts)]  # --mixed-limit
            if x.shape[0] != len(texts):
                res[name] = {"error": "%d rows, fixture has %d" % (x.shape[0], len(texts))}
                continue
            c32, c16 = cosines(torch, x, ref32), cosines(torch, x, ref16)
            res[name] = {"min_cos_vs_st_fp32": float(c32.min()), "worst": int(c32.argmin()),
                         "mean_cos_vs_st_fp32": float(c32.mean()), "min_cos_vs_st_fp16": float(c16.min())}
        c = cosines(torch, ref16, ref32)
        res["st-fp16"] = {"min_cos_vs_st_fp32": float(c.min())}
        return res

    if texts and args.dump:
        step("agreement", agreement)
    if args.topk_sizes:
        step("torch_topk", lambda: torch_topk(torch, dev, args))
    return finish(report, save)


def torch_topk(torch, dev, args):
    """torch.topk over the same matrix product as sluice's similarity_topk: an
    index of N random unit vectors (bf16 or fp32), nq queries already on the
    device, scores in fp32 (bf16 operands, fp32 output where torch.mm offers
    out_dtype, else bf16 scores upcast), results copied to the host in the
    timed region, as gpu-bench does."""
    rows, D = [], args.topk_dim
    sizes = [int(v) for v in args.topk_sizes.split(",")]
    nqs = [int(v) for v in args.topk_nq.split(",")]
    ks = [int(v) for v in args.topk_k.split(",")]
    gen = torch.Generator(device=dev).manual_seed(20261127)
    for N in sizes:
        x32 = torch.nn.functional.normalize(torch.rand(N, D, device=dev, generator=gen) * 2 - 1, dim=1)
        for dname, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            xt = x32.to(dt).t()
            for nq in nqs:
                q = torch.nn.functional.normalize(torch.rand(nq, D, device=dev, generator=gen) * 2 - 1, dim=1).to(dt)
                how = "fp32"
                if dt == torch.bfloat16:
                    try:
                        torch.mm(q, xt, out_dtype=torch.float32)
                        how = "bf16 x bf16 -> fp32 (mm out_dtype)"
                    except (TypeError, RuntimeError):
                        how = "bf16 x bf16 -> bf16, upcast"
                for k in ks:
                    if k > N:
                        continue

                    def run():
                        if how.startswith("bf16 x bf16 -> fp32"):
                            scores = torch.mm(q, xt, out_dtype=torch.float32)
                        else:
                            scores = torch.mm(q, xt).float()
                        vals, idx = torch.topk(scores, k, dim=1)
                        return vals.cpu(), idx.cpu()

                    with torch.inference_mode():
                        t = time_fn(run, args.seconds, torch, dev, warmup=2)
                    t.update(N=N, D=D, nq=nq, k=k, dtype=dname, product=how,
                             queries_per_s=nq / (t["median_ms"] * 1e-3))
                    rows.append(t)
            del xt
        del x32
        if dev == "cuda":
            torch.cuda.empty_cache()
    return rows


def finish(report, save):
    save()
    print("st_gpu_bench: %d error(s)" % len(report["errors"]), file=sys.stderr)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
