#!/bin/sh
# CPU embedding throughput: sluice (CPU backend) against sentence-transformers
# (PyTorch, CPU) and onnxruntime (CPU, fp32, the same model exported to ONNX),
# on the same real sentences, in one run. Prints JSON lines, then a table with
# the ratios to sluice. usage: [ROUNDS=N] [PEERS=a,b] [PIN=cpus] bench/cpu_compare.sh [LIMIT] [BATCH...]
# (defaults: 1000 sentences of the fortunes corpus; batches 1 32 256; one
# round; both peers, see bench/cpu_peers.py)
set -e
cd "$(dirname "$0")/.."
LIMIT=${1:-1000}
shift 2>/dev/null || true
BATCHES=${*:-1 32 256}
MODEL=models/all-minilm-l6-v2
VENV=build/venv-bench
make --no-print-directory model >/dev/null
make --no-print-directory CUDA=0 bin/bench-embed_bench >/dev/null
sh bench/fetch_corpus.sh >/dev/null
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check sentence-transformers onnxruntime onnx
fi
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
# ROUNDS > 1 alternates the systems (sluice, then its peers, batch by batch,
# round after round), so load from other jobs falls on all of them alike;
# each round's ratios use that round's figures, with the 1-minute load average.
# PIN=CPULIST runs every system under `taskset -c CPULIST` (each then uses
# just those cores), e.g. PIN=0 for a one-core comparison on a busy machine.
ROUNDS=${ROUNDS:-1}
RUN=""
[ -n "$PIN" ] && RUN="taskset -c $PIN"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    for b in $BATCHES; do
        echo "{\"round\": $r, \"load\": $(cut -d' ' -f1 /proc/loadavg)}" >> "$OUT"
        $RUN bin/bench-embed_bench --model $MODEL --device cpu --corpus bench/data/fortunes.txt --limit "$LIMIT" --batch "$b" | tee -a "$OUT"
        HF_HUB_OFFLINE=1 $RUN "$VENV/bin/python" bench/cpu_peers.py $MODEL bench/data/fortunes.txt "$LIMIT" "$b" 2>/dev/null | tee -a "$OUT"
    done
    r=$((r + 1))
done
echo
echo "| round | batch | system | sentences/s | tokens/s | sluice / system | load (1 min) |"
echo "| ---: | ---: | --- | ---: | ---: | ---: | ---: |"
python3 - "$OUT" <<'PY'
import json, sys
rows, rnd, load = [], 0, 0.0
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if "round" in r:
        rnd, load = r["round"], r["load"]
    elif "system" in r:
        rows.append(dict(r, round=rnd, load=load))
ours = {(r["round"], r["batch"]): r["sentences_per_s"] for r in rows if r["system"] == "sluice"}
for r in sorted(rows, key=lambda r: (r["batch"], r["round"], r["system"] != "sluice", r["system"])):
    ratio = ours.get((r["round"], r["batch"]), 0) / r["sentences_per_s"] if r["sentences_per_s"] else 0
    print(f"| {r['round']} | {r['batch']} | {r['system']} | {r['sentences_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
          f"{ratio:.2f}x | {r['load']:.2f} |")
PY
