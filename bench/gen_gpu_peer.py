#!/usr/bin/env python3
"""bench/gen_gpu_peer.py - the peer of bench/gen_gpu.c's speed figures: HF
transformers on the same card, fp16, static cache, model.generate, on a
LlamaForCausalLM with SmolLM2-135M's configuration and random weights (the
GPU machine has no network and the GGUF does not travel whole; speed does not
depend on the values). Also the card's yardsticks measured in the same run:
device-to-device copy bandwidth and the fp16 tensor-core matmul rate.

One JSON object per figure on stdout, prefixed "peer ", and all of them in
--out. --device cpu --tiny is the rehearsal (no GPU: a 2-layer model, small
sizes, fp32).

usage: python3 bench/gen_gpu_peer.py --out FILE [--streams 1,8,32,128,256]
           [--prompt 128] [--new 256] [--device cuda|cpu] [--tiny]
"""
import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--streams", default="1,8,32,128,256")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true")
    a = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dev = a.device
    dtype = torch.float16 if dev == "cuda" else torch.float32
    figures = []

    def emit(d):
        figures.append(d)
        print("peer " + json.dumps(d), flush=True)

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    def timed(fn, reps):
        fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        return (time.perf_counter() - t0) / reps

    if dev == "cuda":
        emit({"figure": "card", "name": torch.cuda.get_device_name(0), "torch": torch.__version__})
        n = 1 << 30
        src = torch.empty(n, dtype=torch.uint8, device=dev)
        dst = torch.empty_like(src)
        s = timed(lambda: dst.copy_(src), 20)
        emit({"figure": "copy_bandwidth", "bytes": n, "gb_per_s": 2 * n / s / 1e9})  # read + write
        del src, dst
        m = 8192
        x = torch.randn(m, m, dtype=torch.float16, device=dev)
        y = torch.randn(m, m, dtype=torch.float16, device=dev)
        s = timed(lambda: x @ y, 20)
        emit({"figure": "fp16_matmul", "m": m, "tflops": 2 * m**3 / s / 1e12})
        del x, y

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=True)
    if a.tiny:
        cfg.num_hidden_layers = 2
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(dev, dtype).eval()
    streams = [int(s) for s in a.streams.split(",") if s]

    def prompts(b):
        return torch.tensor([[17 + (i * 7919 + k * 104729) % 49000 for i in range(a.prompt)] for k in range(b)],
                            device=dev)

    def generate(ids, new):
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, cache_implementation="static", pad_token_id=0)

    with torch.inference_mode():
        # prefill: 16 prompts of 128 in one forward
        ids = prompts(max(1, 2048 // a.prompt))
        s = timed(lambda: model(ids), 3)
        emit({"figure": "prefill", "tokens": ids.numel(), "s": s, "tokens_per_s": ids.numel() / s})
        for b in streams:
            ids = prompts(b)
            try:
                generate(ids, 2)  # warm-up (the static cache, kernels)
                sync()
                t0 = time.perf_counter()
                generate(ids, 1)
                sync()
                ttft = time.perf_counter() - t0
                t0 = time.perf_counter()
                out = generate(ids, a.new)
                sync()
                total = time.perf_counter() - t0
                new = out.shape[1] - ids.shape[1]
                emit({"figure": "streams", "streams": b, "prompt": a.prompt, "new": new, "ttft_s": ttft,
                      "total_s": total, "ms_per_step": 1e3 * (total - ttft) / max(1, new - 1),
                      "output_tokens_per_s": b * new / total})
            except Exception as e:  # out of memory at a large batch: say so, keep the others
                emit({"figure": "streams", "streams": b, "error": str(e)[:200]})
                if dev == "cuda":
                    torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
