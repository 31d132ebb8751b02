#!/usr/bin/env python3
"""bench/gen_gpu_report.py - the table of bench/gpu-gen-check.sh: stages,
parity, sluice's generation figures beside transformers', and the issue's
targets (H100/H200): batch 1 <= 0.3 ms per token and >= 20x transformers;
256 streams >= 150,000 output tokens/s and >= 10x transformers at its best
batch; prefill >= 30% of the measured fp16 tensor-core rate.

Exit status: 0 all stages passed and every target met; 1 a stage failed;
2 stages passed but a target was missed (in a rehearsal targets are shown, not
judged).
"""
import argparse
import json


def load_lines(path, prefix):
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix + " {"):
                    out.append(json.loads(line[len(prefix) + 1:]))
    except OSError:
        pass
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", required=True)
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rehearse", default="0")
    a = ap.parse_args()
    stages = [l.rstrip("\n").split("\t") for l in open(a.stages) if l.strip()]
    sl = load_lines(a.sluice, "gen-gpu")
    try:
        peer = json.load(open(a.peer))
    except (OSError, ValueError):
        peer = []

    print("stage            status   seconds  note")
    for s in stages:
        print(f"{s[0]:<16} {s[1]:<8} {s[2]:>7}  {s[3] if len(s) > 3 else ''}")
    failed = any(s[1] in ("fail", "timeout") for s in stages)

    e2e = [d for d in sl if d.get("check") == "e2e"]
    bits = [d for d in sl if d.get("check") not in (None, "e2e")]
    if e2e:
        worst = max(d["logit_rel_err"] for d in e2e)
        bad = sum(not d["pass"] for d in e2e)
        print(f"\nparity: {len(e2e)} prompts, worst last-token logit error {worst:.2e} (tol {e2e[0]['tol']:.0e}), "
              f"greedy ids from the device, {bad} failed")
    for d in bits:  # batch invariance per matmul_q path, graphs against plain launches
        print(f"  {d['check']:<28} {'bit-identical' if d.get('pass') else 'DIFFERS'} over {d.get('steps')} steps"
              f" ({d.get('graphs_captured', '?')} graphs captured)")

    def by(figs, fig):
        return [d for d in figs if d.get("figure") == fig]

    heads = [d for d in sl if "model_layers" in d]
    mt0 = heads[0].get("mma_min_t") if heads else None  # the default threshold: the first run's

    def main_run(d):
        return d.get("mma_min_t") == mt0

    s_streams = {d["streams"]: d for d in by(sl, "streams") if d.get("graphs", 1) and main_run(d)}
    s_plain = {d["streams"]: d for d in by(sl, "streams") if not d.get("graphs", 1) and main_run(d)}
    p_streams = {d["streams"]: d for d in by(peer, "streams") if "error" not in d}
    print("\nstreams  sluice tok/s  ms/step  TTFT ms | transformers tok/s  ms/step  TTFT ms | ratio")
    for n in sorted(set(s_streams) | set(p_streams)):
        s, p = s_streams.get(n, {}), p_streams.get(n, {})
        r = s.get("output_tokens_per_s", 0) / p["output_tokens_per_s"] if s and p else float("nan")
        print(f"{n:>7}  {s.get('output_tokens_per_s', float('nan')):>12.1f}  {s.get('ms_per_step', float('nan')):>7.3f}"
              f"  {1e3 * s.get('ttft_s', float('nan')):>7.2f} | {p.get('output_tokens_per_s', float('nan')):>18.1f}"
              f"  {p.get('ms_per_step', float('nan')):>7.3f}  {1e3 * p.get('ttft_s', float('nan')):>7.2f} | {r:.2f}x")
    if s_plain:
        print("\nstreams  decode tok/s with graphs  without  (ms/step with / without)")
        for n in sorted(s_plain):
            g, q = s_streams.get(n, {}), s_plain[n]
            print(f"{n:>7}  {g.get('decode_tokens_per_s', float('nan')):>24.1f}  {q.get('decode_tokens_per_s', 0):>7.1f}"
                  f"  ({g.get('ms_per_step', float('nan')):.3f} / {q.get('ms_per_step', 0):.3f})")
    variants = [d for d in by(sl, "streams") + by(sl, "prefill") if not main_run(d)]
    if variants:
        print(f"\nmatmul_q tensor-core threshold moved (default mma_min_t {mt0}; 0 = never):")
        for d in variants:
            what = (f"prefill {d['tokens']} tokens: {d['tokens_per_s']:.0f} tok/s" if d["figure"] == "prefill" else
                    f"{d['streams']} streams: {d['decode_tokens_per_s']:.1f} decode tok/s, {d['ms_per_step']:.3f} ms/step")
            print(f"  mma_min_t {d.get('mma_min_t')}: {what}")
    sp = [d for d in by(sl, "prefill") if main_run(d)]
    pp = by(peer, "prefill")
    mm, bw = by(peer, "fp16_matmul"), by(peer, "copy_bandwidth")
    if sp:
        share = f", {100 * sp[0]['tflops'] / mm[0]['tflops']:.1f}% of the fp16 matmul rate" if mm else ""
        print(f"\nprefill {sp[0]['tokens']} tokens: sluice {sp[0]['tokens_per_s']:.0f} tok/s ({sp[0]['tflops']:.2f} TFLOP/s"
              f"{share})" + (f"; transformers {pp[0]['tokens_per_s']:.0f} tok/s" if pp else ""))
    if bw:
        print(f"copy bandwidth {bw[0]['gb_per_s']:.0f} GB/s; fp16 matmul {mm[0]['tflops']:.0f} TFLOP/s" if mm else "")

    targets = []
    if 1 in s_streams:
        ms = s_streams[1]["ms_per_step"]
        targets.append(("batch 1 <= 0.3 ms per token", ms <= 0.3, f"{ms:.3f} ms"))
        if 1 in p_streams:
            r = s_streams[1]["output_tokens_per_s"] / p_streams[1]["output_tokens_per_s"]
            targets.append(("batch 1 >= 20x transformers", r >= 20, f"{r:.1f}x"))
    if 256 in s_streams:
        t = s_streams[256]["output_tokens_per_s"]
        targets.append(("256 streams >= 150,000 tok/s", t >= 150000, f"{t:.0f}"))
        if p_streams:
            best = max(d["output_tokens_per_s"] for d in p_streams.values())
            targets.append(("256 streams >= 10x transformers' best", t >= 10 * best, f"{t / best:.1f}x"))
    if sp and mm:
        share = sp[0]["tflops"] / mm[0]["tflops"]
        targets.append(("prefill >= 30% of fp16 tensor-core rate", share >= 0.3, f"{100 * share:.1f}%"))
    print("\ntarget                                   met    value")
    for name, ok, val in targets:
        print(f"{name:<40} {'yes' if ok else 'NO':<6} {val}")
    missed = any(not ok for _, ok, _ in targets)
    with open(a.out, "w") as f:
        json.dump({"stages": stages, "sluice": sl, "peer": peer,
                   "targets": [{"target": n, "met": ok, "value": v} for n, ok, v in targets]}, f, indent=1)
    if failed:
        return 1
    return 2 if missed and a.rehearse != "1" else 0


if __name__ == "__main__":
    raise SystemExit(main())
