#!/bin/sh
# CPU embedding throughput: sluice (CPU backend) against sentence-transformers
# (PyTorch, CPU) and onnxruntime (CPU, fp32, the same model exported to ONNX),
# on the same real sentences, in one run. Prints JSON lines, then a table with
# the ratios to sluice. usage: bench/cpu_compare.sh [LIMIT] [BATCH...]
# (defaults: 1000 sentences of the fortunes corpus; batches 1 32 256)
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
for b in $BATCHES; do
    bin/bench-embed_bench --model $MODEL --device cpu --corpus bench/data/fortunes.txt --limit "$LIMIT" --batch "$b" | tee -a "$OUT"
done
HF_HUB_OFFLINE=1 "$VENV/bin/python" bench/cpu_peers.py $MODEL bench/data/fortunes.txt "$LIMIT" $BATCHES 2>/dev/null | tee -a "$OUT"
echo
echo "| batch | system | sentences/s | tokens/s | sluice / system |"
echo "| ---: | --- | ---: | ---: | ---: |"
python3 - "$OUT" <<'PY'
import json, sys
rows = [r for r in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")) if "system" in r]
ours = {r["batch"]: r["sentences_per_s"] for r in rows if r["system"] == "sluice"}
for r in sorted(rows, key=lambda r: (r["batch"], r["system"] != "sluice", r["system"])):
    ratio = ours.get(r["batch"], 0) / r["sentences_per_s"] if r["sentences_per_s"] else 0
    print(f"| {r['batch']} | {r['system']} | {r['sentences_per_s']:.1f} | {r['tokens_per_s']:.0f} | {ratio:.2f}x |")
PY
