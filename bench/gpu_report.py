#!/usr/bin/env python3
"""The last step of bench/gpu-check.sh: gather what the stages left in OUTDIR,
write OUTDIR/gpu-check.json and print the summary table (last, so the device
tool's output tail shows it). Standard library only.

Exit status: 0 every stage passed and every target was met, 1 a stage or a
parity check failed, 2 all passed but a performance target was missed. The
targets are checked for bf16 and for fp16; the profile stage (ncu) is
information only and does not count.
"""
import argparse
import json
import os
import re

# bf16 (and fp16) throughput at 128-token sequences vs the card's GEMM rate,
# speed-up over sentence-transformers on the mixed batch, one 32-token sentence
# (issue 3, item 8)
TARGET_SHARE, TARGET_MIXED_SPEEDUP, TARGET_LATENCY_MS = 0.40, 3.0, 0.3
INFO_STAGES = ("profile",)  # reported, never failing the run


def read_jsonl(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        pass
    return rows


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def env_from_log(path):
    env = {}
    if not os.path.exists(path):
        return env
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        for key in ("date", "commit", "host", "nvcc"):
            if line.startswith(key + ": ") and key not in env:
                env[key] = line[len(key) + 2:]
        if line.startswith("name, driver_version") and i + 1 < len(lines):
            keys = [k.strip().split(" ")[0] for k in line.split(",")]
            vals = [v.strip() for v in lines[i + 1].split(",")]
            env["gpu"] = dict(zip(keys, vals))
        m = re.match(r"Cuda compilation tools, release ([\d.]+)", line)
        if m:
            env["nvcc_release"] = m.group(1)
    return env


def flops_per_token(cfg, length):
    """Forward FLOPs per token of a BERT encoder at sequence length L (a
    multiply-add is 2): per layer Q,K,V and output projections 8H^2, the FFN
    4HI, attention scores and weighted sum 4LH; embeddings, LayerNorms,
    softmax and pooling are left out (under 1%)."""
    H, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    return layers * (8 * H * H + 4 * H * inter + 4 * length * H)


def fmt(x, spec="%.3f"):
    return "-" if x is None else spec % x


def rate(x):
    if x is None:
        return "-"
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            return "%.2f%s" % (x / div, unit)
    return "%.0f" % x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", required=True)
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--model", default=".deps/model-f16")
    ap.add_argument("--rehearse", default="0")
    args = ap.parse_args()
    out = args.outdir

    stages = []
    if os.path.exists(args.stages):
        with open(args.stages) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 3:
                    stages.append({"stage": parts[0], "status": parts[1], "seconds": int(parts[2]),
                                   "note": parts[3] if len(parts) > 3 else ""})
    env = env_from_log(args.log)
    rows = read_jsonl(os.path.join(out, "sluice.jsonl"))
    st = read_json(os.path.join(out, "st.json"))
    cfg = read_json(os.path.join(args.model, "config.json")) or {
        "hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6}

    # kernel parity: the driver's own closing line, else its exit status
    kp = {"status": next((s["status"] for s in stages if s["stage"] == "kernel-parity"), "missing")}
    kp_log = os.path.join(out, "gpu-parity.log")
    if os.path.exists(kp_log):
        with open(kp_log, errors="replace") as f:
            text = f.read()
        m = re.findall(r"(\d+) passed, (\d+) failed(?:, (\d+) skipped)?", text)
        if m:
            kp.update(passed=int(m[-1][0]), failed=int(m[-1][1]), skipped=int(m[-1][2] or 0))
        kp["failed_lines"] = [l for l in text.splitlines() if re.search(r"\bFAIL", l)][:20]

    e2e = [r for r in rows if r.get("check") in ("e2e", "tokens")]
    bench = [r for r in rows if "bench" in r]

    def sluice(dtype, kind, n=None, length=None):
        for r in bench:
            if r.get("dtype") == dtype and r["bench"] == kind and "median_ms" in r and \
                    (n is None or (r["n"] == n and r["len"] == length)):
                return r
        return None

    st_shapes = {(r["n"], r["len"]): r for r in st.get("st_shapes", []) or []}
    st_mixed = st.get("st_mixed") or {}
    gemm = (st.get("gemm_bf16") or {}).get("tflops")
    main_dtype = "fp32" if args.rehearse == "1" else "bf16"
    half_dtype = "fp32" if args.rehearse == "1" else "fp16"  # the rehearsal has only the CPU's fp32

    shapes = sorted({(r["n"], r["len"]) for r in bench if r["bench"] == "shape" and "median_ms" in r} |
                    set(st_shapes), key=lambda s: (s[1], s[0]))
    table = []
    for n, length in shapes:
        b, f32, s = sluice("bf16", "shape", n, length), sluice("fp32", "shape", n, length), st_shapes.get((n, length))
        b2 = sluice(main_dtype, "shape_pipelined", n, length)
        h, h2 = sluice("fp16", "shape", n, length), sluice("fp16", "shape_pipelined", n, length)
        table.append({"shape": "%dx%d" % (n, length), "tokens": n * length,
                      "sluice_bf16_ms": b and b["median_ms"], "sluice_bf16_tok_s": b and b["tokens_per_s"],
                      "sluice_bf16_2inflight_tok_s": b2 and b2["tokens_per_s"],
                      "sluice_fp16_ms": h and h["median_ms"], "sluice_fp16_tok_s": h and h["tokens_per_s"],
                      "sluice_fp16_2inflight_tok_s": h2 and h2["tokens_per_s"],
                      "sluice_fp32_ms": f32 and f32["median_ms"], "sluice_fp32_tok_s": f32 and f32["tokens_per_s"],
                      "st_fp16_ms": s and s["median_ms"], "st_fp16_tok_s": s and s["tokens_per_s"],
                      "speedup_bf16_vs_st": b and s and s["median_ms"] / b["median_ms"],
                      "speedup_fp16_vs_st": h and s and s["median_ms"] / h["median_ms"]})
    mixed = {}
    for kind, st_key, label in (("mixed", "forward_pretokenized", "mixed, pre-tokenized"),
                                ("mixed_with_tokenize", "encode_best", "mixed, texts in")):
        b, f32, s = sluice("bf16", kind), sluice("fp32", kind), st_mixed.get(st_key)
        h = sluice("fp16", kind)
        if args.rehearse == "1":
            b = h = sluice("fp32", kind)
        row = {"shape": label, "tokens": (b or f32 or {}).get("tokens") or st_mixed.get("tokens"),
               "sluice_bf16_ms": b and b["median_ms"], "sluice_bf16_tok_s": b and b["tokens_per_s"],
               "sluice_fp16_ms": h and h["median_ms"], "sluice_fp16_tok_s": h and h["tokens_per_s"],
               "sluice_fp32_ms": f32 and f32["median_ms"], "sluice_fp32_tok_s": f32 and f32["tokens_per_s"],
               "st_fp16_ms": s and s["median_ms"], "st_fp16_tok_s": s and s.get("tokens_per_s"),
               "speedup_bf16_vs_st": b and s and s["median_ms"] / b["median_ms"],
               "speedup_fp16_vs_st": h and s and s["median_ms"] / h["median_ms"]}
        if s and "batch" in s:
            row["st_config"] = s["batch"]
        table.append(row)
        mixed[kind] = row

    # share of the card's bf16 GEMM rate at 128-token sequences (fp16's dense
    # tensor-core rate is the same on the cards we use)
    fpt = flops_per_token(cfg, 128)

    def dtype_targets(dt, label):
        # the best of one batch at a time and two in flight (as the batcher runs a GPU)
        best = max((r for r in bench if r.get("dtype") == dt and r["bench"] in ("shape", "shape_pipelined")
                    and r.get("len") == 128 and "tokens_per_s" in r), key=lambda r: r["tokens_per_s"], default=None)
        share = best and gemm and best["tokens_per_s"] * fpt / (gemm * 1e12)
        lat = sluice(dt, "shape", 1, 32)
        mixed_speedup = mixed["mixed_with_tokenize"]["speedup_%s_vs_st" % label]
        t = {
            "share_of_gemm_at_128": {"value": share, "target": TARGET_SHARE,
                                     "met": share is not None and share >= TARGET_SHARE,
                                     "tokens_per_s": best and best["tokens_per_s"],
                                     "shape": best and "%dx%d%s" % (best["n"], best["len"],
                                                                    " (2 in flight)" if best["bench"] == "shape_pipelined" else ""),
                                     "gemm_tflops": gemm, "flops_per_token": fpt},
            "mixed_speedup_vs_st": {"value": mixed_speedup, "target": TARGET_MIXED_SPEEDUP,
                                    "met": mixed_speedup is not None and mixed_speedup >= TARGET_MIXED_SPEEDUP},
            "latency_1x32_ms": {"value": lat and lat["median_ms"], "target": TARGET_LATENCY_MS,
                                "met": lat is not None and lat["median_ms"] <= TARGET_LATENCY_MS},
        }
        return best, t

    best128, tb = dtype_targets(main_dtype, "bf16")
    best128_h, th = dtype_targets(half_dtype, "fp16")
    # bf16 under the original keys; fp16 under fp16_*
    targets = {"bf16_share_of_gemm_at_128": tb["share_of_gemm_at_128"],
               "mixed_speedup_vs_st": tb["mixed_speedup_vs_st"], "latency_1x32_ms": tb["latency_1x32_ms"],
               "fp16_share_of_gemm_at_128": th["share_of_gemm_at_128"],
               "fp16_mixed_speedup_vs_st": th["mixed_speedup_vs_st"], "fp16_latency_1x32_ms": th["latency_1x32_ms"]}

    # expand: similarity GEMM + top-k, sluice against torch.topk on the same shapes
    torch_topk = {(r["dtype"], r["N"], r["nq"], r["k"]): r for r in st.get("torch_topk", []) or []}
    topk_table = []
    for r in bench:
        if r["bench"] != "topk" or "median_ms" not in r:
            continue
        t = torch_topk.get((r["dtype"], r["N"], r["nq"], r["k"]))
        topk_table.append({"dtype": r["dtype"], "N": r["N"], "nq": r["nq"], "k": r["k"],
                           "sluice_ms": r["median_ms"], "sluice_qps": r["queries_per_s"],
                           "recall_first_query": r.get("recall_first_query"),
                           "torch_ms": t and t["median_ms"], "torch_qps": t and t["queries_per_s"],
                           "torch_product": t and t.get("product"),
                           "speedup_vs_torch": t and t["median_ms"] / r["median_ms"]})
    topk_low_recall = [r for r in topk_table if (r["recall_first_query"] or 0) < 0.95]

    e2e_fail = [r for r in e2e if r.get("check") == "e2e" and r.get("pass") is False]
    stage_fail = [s for s in stages if s["status"] != "pass" and s["stage"] not in INFO_STAGES]
    profile = read_json(os.path.join(out, "profile.json"))
    if stage_fail or e2e_fail or topk_low_recall or not stages:
        rc = 1
    elif not all(t["met"] for t in targets.values()):
        rc = 2
    else:
        rc = 0
    report = {"env": env, "torch_env": st.get("env"), "stages": stages, "kernel_parity": kp, "e2e": e2e,
              "table": table, "topk_table": topk_table, "targets": targets, "gemm_bf16": st.get("gemm_bf16"), "copy": st.get("copy"),
              "st_load": st.get("st_load"), "st_mixed": st_mixed, "agreement_with_st": st.get("agreement"),
              "sluice_raw": bench, "errors": st.get("errors", []), "rehearsal": args.rehearse == "1",
              "profile": profile or None,
              "exit": rc}
    with open(os.path.join(out, "gpu-check.json"), "w") as f:
        json.dump(report, f, indent=1)

    # ---- the table ----
    gpu = env.get("gpu", {})
    p = print
    p("")
    p("sluice gpu-check%s: %s, driver %s, %s | commit %s | %s" % (
        " (REHEARSAL: cpu, tiny shapes)" if args.rehearse == "1" else "", gpu.get("name", "no GPU"),
        gpu.get("driver_version", "-"), gpu.get("memory.total", "-"), env.get("commit", "?"), env.get("date", "?")))
    p("stages: " + "  ".join("%s %s (%ds)" % (s["stage"], s["status"].upper() if s["status"] != "pass" else "ok",
                                              s["seconds"]) for s in stages))
    kp_txt = kp["status"] + ("" if "passed" not in kp else " (%d passed, %d failed, %d skipped)" % (
        kp["passed"], kp["failed"], kp["skipped"]))
    p("kernel parity: " + kp_txt)
    for r in e2e:
        if r.get("check") == "tokens":
            p("tokenizer: %d/%d sentences match sentence-transformers' ids" % (
                r["match_sentence_transformers"], r["n"]))
        elif r.get("backend", "").startswith("cuda"):
            if "min_cos" in r:
                p("e2e %-9s vs cpu: min cos %.7f (>= %g), alone+sub-batch vs batched %.7f, rerun diff %.2g, vs ST-fp32 fixture %.6f: %s"
                  % (r["backend"], r["min_cos"], r["threshold"], r["sub_batch_min_cos"], r["rerun_max_abs_diff"],
                     r["fixture_min_cos"], "PASS" if r["pass"] else "FAIL"))
            else:
                p("e2e %-9s: FAIL (%s)" % (r["backend"], r.get("error", "?")))
    agr = st.get("agreement") or {}
    if agr:
        p("vs sentence-transformers fp32 (same fp16 weights), min cos: " + ", ".join(
            "%s %.7f" % (k, v["min_cos_vs_st_fp32"]) for k, v in agr.items() if "min_cos_vs_st_fp32" in v))
    if gemm:
        cp = (st.get("copy") or {}).get("gb_per_s")
        p("card: bf16 GEMM 8192^3 %.0f TFLOP/s%s; model %.1f MFLOP/token at L=128 -> %s tokens/s at 100%%" % (
            gemm, ", copy %.0f GB/s" % cp if cp else "", fpt / 1e6, rate(gemm * 1e12 / fpt)))
    for e in st.get("errors", []):
        p("sentence-transformers error: " + e)
    p("")
    p("%-20s %6s | %7s %7s %7s | %7s %7s %7s | %7s %7s | %7s %7s | %5s %5s" % (
        "batch", "tokens", "bf16 ms", "tok/s", "2 fl", "fp16 ms", "tok/s", "2 fl", "fp32 ms", "tok/s",
        "ST16 ms", "tok/s", "bf/ST", "fp/ST"))
    for r in table:
        p("%-20s %6s | %7s %7s %7s | %7s %7s %7s | %7s %7s | %7s %7s | %5s %5s" % (
            r["shape"], r["tokens"] or "-", fmt(r["sluice_bf16_ms"]), rate(r["sluice_bf16_tok_s"]),
            rate(r.get("sluice_bf16_2inflight_tok_s")),
            fmt(r.get("sluice_fp16_ms")), rate(r.get("sluice_fp16_tok_s")), rate(r.get("sluice_fp16_2inflight_tok_s")),
            fmt(r["sluice_fp32_ms"]), rate(r["sluice_fp32_tok_s"]), fmt(r["st_fp16_ms"]), rate(r["st_fp16_tok_s"]),
            fmt(r["speedup_bf16_vs_st"], "%.2f"), fmt(r.get("speedup_fp16_vs_st"), "%.2f")))
    if topk_table:
        p("")
        p("%-16s %8s %4s %4s | %9s %9s | %9s %9s | %7s | %6s" % (
            "expand top-k", "N", "nq", "k", "sluice ms", "q/s", "torch ms", "q/s", "x torch", "recall"))
        for r in sorted(topk_table, key=lambda r: (r["dtype"], r["N"], r["nq"], r["k"])):
            p("%-16s %8d %4d %4d | %9s %9s | %9s %9s | %7s | %6s" % (
                "D=384 " + r["dtype"], r["N"], r["nq"], r["k"], fmt(r["sluice_ms"]), rate(r["sluice_qps"]),
                fmt(r["torch_ms"]), rate(r["torch_qps"]), fmt(r["speedup_vs_torch"], "%.2f"),
                fmt(r["recall_first_query"], "%.2f")))
    p("")
    if profile.get("families"):
        p("%s: %s" % (profile.get("title", "ncu"), ", ".join(
            "%s %.1f%%" % (f["family"], 100 * f["share"]) for f in profile["families"])))
    for label, dt, best, t in (("bf16", main_dtype, best128, tb), ("fp16", half_dtype, best128_h, th)):
        if best and gemm:
            p("%s at L=128: best %s tokens/s (%s) x %.1f MFLOP/token = %.0f TFLOP/s of the card's %.0f" % (
                label, rate(best["tokens_per_s"]), t["share_of_gemm_at_128"]["shape"], fpt / 1e6,
                best["tokens_per_s"] * fpt / 1e12, gemm))
    for label, t in (("bf16", tb), ("fp16", th)):
        s128, mx, lt = t["share_of_gemm_at_128"], t["mixed_speedup_vs_st"], t["latency_1x32_ms"]
        p("targets %s: share of GEMM rate at L=128 %s (>= %.0f%%) %s | mixed vs ST %s (>= %.0fx) %s | 1x32 %s ms (<= %.1f) %s"
          % (label, fmt(s128["value"] and 100 * s128["value"], "%.1f%%"), 100 * TARGET_SHARE,
             "met" if s128["met"] else "MISSED", fmt(mx["value"], "%.2fx"), TARGET_MIXED_SPEEDUP,
             "met" if mx["met"] else "MISSED", fmt(lt["value"]), TARGET_LATENCY_MS, "met" if lt["met"] else "MISSED"))
    p("result: %s (exit %d)" % ({0: "ALL PASSED", 1: "FAILED", 2: "passed, target(s) missed"}[rc], rc))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
