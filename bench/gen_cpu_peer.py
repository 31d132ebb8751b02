#!/usr/bin/env python3
"""The peer side of bench/gen_cpu_compare.sh: transformers fp32 on the CPU
running the same GGUF (dequantized) on the same prompts as bin/bench-gen_cpu:
prefill tokens/s of one prompt, decode tokens/s with 1, 8 and 32 sequences
(all the same length, so no padding; attention mask all ones; KV cache on).

usage: gen_cpu_peer.py GGUF [--threads N] [--prompt N] [--steps N] [--batches 1,8,32] [--cpu-time]
--cpu-time: one thread, timed by the process's CPU time (as bench-gen_cpu --cpu-time 1).
"""
import argparse
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def prompt_id(b, i):
    return 17 + (i * 7919 + b * 104729) % 49000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--cpu-time", action="store_true")
    a = ap.parse_args()
    clock = time.perf_counter
    if a.cpu_time:
        a.threads, clock = 1, time.process_time
        print("timing: process CPU time, 1 thread")
    torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(a.gguf), gguf_file=os.path.basename(a.gguf),
                                                 dtype=torch.float32)
    model.eval()

    def ids(B, n, start=0):
        return torch.tensor([[prompt_id(b, start + i) for i in range(n)] for b in range(B)], dtype=torch.long)

    with torch.no_grad():
        x = ids(1, a.prompt)
        model(input_ids=x, attention_mask=torch.ones_like(x))  # warm-up
        t = []
        for _ in range(3):
            t0 = clock()
            model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True)
            t.append(clock() - t0)
        s = statistics.median(t)
        print(f"transformers prefill {a.prompt} tokens: {a.prompt / s:.1f} tokens/s", flush=True)
        for B in [int(v) for v in a.batches.split(",")]:
            x = ids(B, a.prompt)
            out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True)
            past = out.past_key_values
            nxt = torch.tensor([[prompt_id(b, a.prompt)] for b in range(B)], dtype=torch.long)
            n_ctx = a.prompt
            t0 = clock()
            for _ in range(a.steps):
                n_ctx += 1
                out = model(input_ids=nxt, attention_mask=torch.ones((B, n_ctx), dtype=torch.long),
                            past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            s = clock() - t0
            print(f"transformers decode batch {B:2d} ({a.steps} steps): {B * a.steps / s:.1f} tokens/s", flush=True)


if __name__ == "__main__":
    main()
