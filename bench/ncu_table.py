#!/usr/bin/env python3
"""The profile stage of bench/gpu-check.sh: read Nsight Compute's CSV of one
forward pass (ncu -i REPORT --csv --page details --print-units base, one row per
kernel launch and metric; or --page raw, one row per launch) and print where
the time goes: per kernel name its launches, summed gpu__time_duration and
share, then the same summed by op family (GEMM, attention, LayerNorm, ...).
Also reads Nsight Systems' per-kernel sums (nsys stats --report
cuda_gpu_kern_sum --format csv), the fallback where ncu may not read the GPU's
counters. Kernels of the model load (the float32 -> bf16/fp16 weight
conversion) are left out. Standard library only.

usage: ncu_table.py CSV [--json OUT] [--title T]
       ncu_table.py --selftest [--json OUT]   (a made-up CSV: checks the parser without a GPU)
Exit status: 0 a table was printed, 1 the CSV held no kernel durations.
"""
import argparse
import csv
import io
import json
import re
import sys

METRIC = "gpu__time_duration.sum"
UNIT_S = {"nsecond": 1e-9, "ns": 1e-9, "usecond": 1e-6, "us": 1e-6, "msecond": 1e-3, "ms": 1e-3,
          "second": 1.0, "s": 1.0}
LOAD_KERNELS = re.compile(r"f32_to_act")  # weight conversion at load, before the pass
FAMILIES = [  # first match wins
    ("attention", re.compile(r"attention")),
    ("bias/GELU", re.compile(r"bias_act")),
    ("LayerNorm", re.compile(r"add_ln|embed_ln|layernorm", re.I)),
    ("pooling", re.compile(r"pool")),
    ("GEMM (cuBLASLt)", re.compile(r"gemm|nvjet|cutlass|xmma|sm\d+_|ampere_|hopper_|cublas|splitK|reduce", re.I)),
]


def short_name(name):
    """'void attention_mma_kernel<__half, 32>(T1 *, ...)' -> 'attention_mma_kernel<__half, 32>'."""
    name = name.strip()
    if name.startswith("void "):
        name = name[5:]
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # the parameter list: the first '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            cut = i
            break
    name = name[:cut]
    return name if len(name) <= 72 else name[:69] + "..."


def family(name):
    for fam, rx in FAMILIES:
        if rx.search(name):
            return fam
    return "other"


def number(text):
    text = (text or "").strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def nsys_sums(text):
    """(kernel name, seconds, launches) per kernel from nsys's cuda_gpu_kern_sum CSV."""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if "Instances" in l and "Name" in l), None)
    if start is None:
        return []
    rows = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    head = [h.strip() for h in rows[0]]
    tcol = next((i for i, h in enumerate(head) if h.startswith("Total Time")), None)
    if tcol is None or "Name" not in head:
        return []
    ncol, icol = head.index("Name"), head.index("Instances")
    scale = 1e-9 if "(ns)" in head[tcol] else 1e-6 if "(us)" in head[tcol] else 1e-3 if "(ms)" in head[tcol] else 1e-9
    out = []
    for r in rows[1:]:
        if len(r) > max(tcol, ncol, icol):
            t, n = number(r[tcol]), number(r[icol])
            if t is not None and n is not None:
                out.append((r[ncol], t * scale, int(n)))
    return out


def launches(text):
    """(kernel name, seconds, launches) from ncu's details or raw CSV (one launch a row)."""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if '"Kernel Name"' in l or '"Function Name"' in l), None)
    if start is None:
        return []
    rows = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    head = rows[0]
    kcol = head.index("Kernel Name") if "Kernel Name" in head else head.index("Function Name")
    out = []
    if "Metric Value" in head:  # details: one row per (launch, metric)
        mn, mu, mv = head.index("Metric Name"), head.index("Metric Unit"), head.index("Metric Value")
        for r in rows[1:]:
            if len(r) > max(kcol, mn, mu, mv) and r[mn] == METRIC:
                v = number(r[mv])
                if v is not None:
                    out.append((r[kcol], v * UNIT_S.get(r[mu].strip(), 1e-9), 1))
    elif METRIC in head:  # raw: one row per launch, the units in the row below the header
        mc = head.index(METRIC)
        scale = 1e-9
        for r in rows[1:]:
            if len(r) <= max(kcol, mc):
                continue
            if r[mc].strip() in UNIT_S:
                scale = UNIT_S[r[mc].strip()]
                continue
            v = number(r[mc])
            if v is not None:
                out.append((r[kcol], v * scale, 1))
    return out


def summarize(rows):
    kept = [r for r in rows if not LOAD_KERNELS.search(r[0])]
    total = sum(t for _, t, _ in kept)
    per = {}
    for n, t, calls in kept:
        k = short_name(n)
        c, s = per.get(k, (0, 0.0))
        per[k] = (c + calls, s + t)
    kernels = [{"kernel": k, "family": family(k), "calls": c, "total_ms": s * 1e3, "share": s / total if total else 0}
               for k, (c, s) in sorted(per.items(), key=lambda kv: -kv[1][1])]
    fams = {}
    for k in kernels:
        f = fams.setdefault(k["family"], {"family": k["family"], "calls": 0, "total_ms": 0.0, "share": 0.0})
        f["calls"] += k["calls"]
        f["total_ms"] += k["total_ms"]
        f["share"] += k["share"]
    return {"launches": sum(r[2] for r in kept), "load_launches_left_out": sum(r[2] for r in rows) - sum(r[2] for r in kept),
            "total_ms": total * 1e3,
            "kernels": kernels, "families": sorted(fams.values(), key=lambda f: -f["total_ms"])}


def print_table(s, title):
    p = print
    p(title)
    p("%d launches, %.3f ms of kernel time (%s; %d load-time launches left out)" % (
        s["launches"], s["total_ms"], "ncu: one kernel at a time" if s["source"] == "ncu" else "nsys: as they ran",
        s["load_launches_left_out"]))
    p("%-72s %6s %10s %7s" % ("kernel", "calls", "total ms", "share"))
    for k in s["kernels"]:
        p("%-72s %6d %10.3f %6.1f%%" % (k["kernel"], k["calls"], k["total_ms"], 100 * k["share"]))
    p("by family: " + ", ".join("%s %.1f%% (%.3f ms)" % (f["family"], 100 * f["share"], f["total_ms"])
                                for f in s["families"]))


SELFTEST = '''==PROF== Connected to process 123
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","1","gpu-bench","h","void f32_to_act_kernel<__nv_bfloat16>(T1 *, const float *, long)","1","13","(256, 1, 1)","(1728, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","3,104"
"1","1","gpu-bench","h","void embed_ln_kernel<__nv_bfloat16>(T1 *, const int *, const int *, const float *, const float *, const float *, const float *, const float *, int, int, float)","1","13","(256, 1, 1)","(16384, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","41,216"
"2","1","gpu-bench","h","nvjet_tst_192x192_64x4_2x1_v_bz_coopA_TNT","1","13","(384, 1, 1)","(132, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","101,568"
"3","1","gpu-bench","h","void bias_act_kernel<__nv_bfloat16, false, 8>(T1 *, const float *, int, int)","1","13","(160, 1, 1)","(65535, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","60,000"
"4","1","gpu-bench","h","void attention_mma_kernel<__nv_bfloat16, 32>(T1 *, const T1 *, const int *, int, float)","1","13","(128, 1, 1)","(1024, 2, 12)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","usecond","80.5"
"5","1","gpu-bench","h","nvjet_tst_192x192_64x4_2x1_v_bz_coopA_TNT","1","13","(384, 1, 1)","(132, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","nsecond","99,000"
'''

NSYS_SELFTEST = '''Processing [profile.sqlite] with [cuda_gpu_kern_sum.py]...
Time (%),Total Time (ns),Instances,Avg (ns),Med (ns),Min (ns),Max (ns),StdDev (ns),Name
60.1,4500000,24,187500.0,180000.0,170000,210000,1000.0,"void attention_mma_kernel<__nv_bfloat16, 32>(T1 *, const T1 *, const int *, int, float)"
39.9,2990000,24,124583.3,124000.0,120000,130000,900.0,nvjet_tst_192x192_64x4_2x1_v_bz_coopA_TNT
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv", nargs="?")
    ap.add_argument("--json")
    ap.add_argument("--title", default="ncu: kernel time per kernel")
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args()
    if a.selftest:
        text, a.title = SELFTEST, "ncu_table self-test (made-up CSV: no GPU here)"
    else:
        with open(a.csv, errors="replace") as f:
            text = f.read()
    rows, source = launches(text), "ncu"
    if not rows:
        rows, source = nsys_sums(text), "nsys"
    if not rows:
        print("ncu_table: no %s rows (ncu) nor kernel sums (nsys) in %s" % (METRIC, a.csv or "the self-test"))
        return 1
    s = summarize(rows)
    s["source"] = source
    s["title"] = a.title
    print_table(s, a.title)
    if a.selftest:
        fams = {f["family"]: f for f in s["families"]}
        ok = (s["launches"] == 5 and s["load_launches_left_out"] == 1 and fams["GEMM (cuBLASLt)"]["calls"] == 2 and
              abs(s["total_ms"] - 0.382284) < 1e-6 and s["kernels"][0]["kernel"] == "nvjet_tst_192x192_64x4_2x1_v_bz_coopA_TNT"
              and "attention" in fams and "LayerNorm" in fams and "bias/GELU" in fams)
        n = nsys_sums(NSYS_SELFTEST)
        ok = ok and len(n) == 2 and n[0][2] == 24 and abs(n[0][1] - 0.0045) < 1e-12 and n[1][0].startswith("nvjet")
        print("ncu_table self-test: %s" % ("ok" if ok else "FAILED"))
        if not ok:
            return 1
    if a.json:
        with open(a.json, "w") as f:
            json.dump(s, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
