#!/bin/sh
# The same real sentences through sluice and its peers on this machine, in one
# run:
#   served:  sluice serve (CPU backend) and infinity-emb (PyPI; PyTorch on the
#            CPU, served from the same local model folder) are both started,
#            then loaded in turn by bin/sluice-bench over HTTP with the same
#            closed loop, ROUNDS times (sluice, infinity, sluice, infinity...),
#            so a neighbour's load that comes and goes hits both alike; each
#            round's ratio is taken between its two adjacent loads:
#            sentences/s and p99 request latency;
#   offline: bench/cpu_compare.sh, which runs the sluice engine, sentence-
#            transformers (PyTorch) and onnxruntime over the same sentences in
#            batches: sentences/s (no request latency there).
# Prints one table with the ratios to sluice (served rows to sluice serve in
# the same round, offline rows to the sluice engine) and keeps every JSON and
# log under $OUT.
#
# usage: bench/compare.sh [LIMIT]      (default 1000 sentences of the fortunes corpus)
# environment: CONCURRENCY (8), INPUTS_PER_REQUEST (4), WARMUP (5 s), DURATION (20 s),
#   ROUNDS (2), BATCH (32, offline), PEERS ("infinity"; "" skips the served peer),
#   OFFLINE (1; 0 skips cpu_compare.sh), OUT (bench/out/compare-DATE)
set -e
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LIMIT=${1:-1000}
CONC=${CONCURRENCY:-8}
K=${INPUTS_PER_REQUEST:-4}
WARMUP=${WARMUP:-5}
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-2}
BATCH=${BATCH:-32}
PEERS=${PEERS-infinity}
OFFLINE=${OFFLINE:-1}
MODEL=models/all-minilm-l6-v2
NAME=all-minilm-l6-v2
CORPUS=bench/data/fortunes.txt
VENV=build/venv-infinity
OUT=${OUT:-bench/out/compare-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
NOTES="$OUT/notes.txt"
: >"$NOTES"
note() { echo "compare: $*" >&2; echo "$*" >>"$NOTES"; }

make --no-print-directory model >/dev/null
make --no-print-directory CUDA=0 bin/sluice bin/sluice-bench >/dev/null
sh bench/fetch_corpus.sh >/dev/null
note "machine: $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1); commit $(git rev-parse --short HEAD 2>/dev/null || echo none); $(date -u +%Y-%m-%dT%H:%MZ)"
note "served load: closed loop, $CONC connections, $K sentences per request, ${WARMUP}s warm-up, ${DURATION}s measured, $ROUNDS rounds, first $LIMIT sentences of $CORPUS"

SLUICE_PID=""
PEER_PID=""
stop_servers() {
    for p in $SLUICE_PID $PEER_PID; do kill "$p" 2>/dev/null || true; done
    for p in $SLUICE_PID $PEER_PID; do wait "$p" 2>/dev/null || true; done
    SLUICE_PID=""
    PEER_PID=""
}
trap stop_servers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_http URL SECONDS PID: until URL answers 200 (0), or the time is up or PID died (1)
wait_http() {
    i=0
    while [ $i -lt $(($2 * 10)) ]; do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null)" = 200 ] && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

load() { # name url
    echo "== $1 on $2" >&2
    bin/sluice-bench --url "$2" --model "$NAME" --corpus "$CORPUS" --limit "$LIMIT" --concurrency "$CONC" \
        --inputs-per-request "$K" --warmup "$WARMUP" --duration "$DURATION" --json "$OUT/$1.json" \
        | tee "$OUT/$1.md"
}

# sluice serve, CPU backend, HTTP only
SLUICE_URL=""
bin/sluice serve --port 0 --port-file "$OUT/sluice.port" --redis none --device cpu --models "$(dirname "$MODEL")" \
    --preload "$NAME" --log-level warn >"$OUT/sluice-serve.log" 2>&1 &
SLUICE_PID=$!
i=0
while [ ! -s "$OUT/sluice.port" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
PORT=$(cat "$OUT/sluice.port" 2>/dev/null || true)
if [ -n "$PORT" ] && wait_http "http://127.0.0.1:$PORT/readyz" 60 "$SLUICE_PID"; then
    SLUICE_URL="http://127.0.0.1:$PORT"
else
    note "sluice serve did not become ready (see $OUT/sluice-serve.log)"
fi

# infinity-emb, the served peer (its own venv; offline, from the local folder)
PEER_URL=""
case " $PEERS " in *" infinity "*)
    if [ ! -x "$VENV/bin/infinity_emb" ]; then
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check "infinity-emb[server,torch]" >"$OUT/pip-infinity.log" 2>&1 ||
            note "infinity-emb did not install from PyPI (see $OUT/pip-infinity.log)"
    fi
    if [ -x "$VENV/bin/infinity_emb" ]; then
        PORT=$(free_port)
        HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 \
            "$VENV/bin/infinity_emb" v2 --model-id "$ROOT/$MODEL" --served-model-name "$NAME" --engine torch \
            --device cpu --host 127.0.0.1 --port "$PORT" --url-prefix /v1 --no-vector-disk-cache \
            >"$OUT/infinity.log" 2>&1 &
        PEER_PID=$!
        if wait_http "http://127.0.0.1:$PORT/v1/models" 300 "$PEER_PID"; then
            PEER_URL="http://127.0.0.1:$PORT"
            note "infinity-emb $("$VENV/bin/pip" show infinity-emb 2>/dev/null | sed -n 's/^Version: //p'), torch $("$VENV/bin/pip" show torch 2>/dev/null | sed -n 's/^Version: //p'), engine torch, device cpu, batch size 32 (its default)"
        else
            note "infinity-emb did not start offline from $MODEL (last lines of $OUT/infinity.log):"
            tail -5 "$OUT/infinity.log" | sed 's/^/    /' | tee -a "$NOTES" >&2
        fi
    fi
    ;;
esac

# the rounds: both servers are up, and each is idle while the other is loaded
r=1
while [ $r -le "$ROUNDS" ]; do
    [ -n "$SLUICE_URL" ] && load "sluice-r$r" "$SLUICE_URL"
    [ -n "$PEER_URL" ] && load "infinity-r$r" "$PEER_URL"
    r=$((r + 1))
done
stop_servers

# offline batches: sluice engine, sentence-transformers, onnxruntime
if [ "$OFFLINE" = 1 ]; then
    echo "== offline, batch $BATCH: bench/cpu_compare.sh $LIMIT $BATCH" >&2
    LOAD0=$(cut -d' ' -f1 /proc/loadavg)
    sh bench/cpu_compare.sh "$LIMIT" "$BATCH" >"$OUT/offline.txt" 2>"$OUT/offline.err" ||
        note "bench/cpu_compare.sh failed (see $OUT/offline.err)"
    note "offline: load average (1 min) $LOAD0 before, $(cut -d' ' -f1 /proc/loadavg) after, on $(nproc) cores"
fi

echo
echo "| system | how | sentences/s | p99 ms | sluice / system | load (1 min) |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
python3 - "$OUT" "$BATCH" "$ROUNDS" <<'PY'
import json, os, sys
out, batch, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
labels = {"sluice": "sluice serve (C, CPU backend)", "infinity": "infinity-emb (PyTorch)"}
for r in range(1, rounds + 1):
    got = {}
    for name in labels:
        p = os.path.join(out, f"{name}-r{r}.json")
        if os.path.exists(p):
            got[name] = json.load(open(p))["runs"][0]
    base = got.get("sluice", {}).get("inputs_per_s", 0)
    for name, run in got.items():
        ips, errs = run["inputs_per_s"], run["errors"]["total"]
        ratio = f"{base / ips:.2f}x" if ips and base else "n/a"
        how = f"HTTP, closed loop, round {r}" + (f", {errs} errors" if errs else "")
        print(f"| {labels[name]} | {how} | {ips:.1f} | {run['latency_ms']['p99']:.1f} | {ratio} | "
              f"{run.get('loadavg_1m', -1):.1f} |")
rows = []
p = os.path.join(out, "offline.txt")
if os.path.exists(p):
    rows = [json.loads(l) for l in open(p) if l.startswith("{")]
rows = [r for r in rows if r.get("batch") == batch]
ours = next((r["sentences_per_s"] for r in rows if r["system"] == "sluice"), 0)
for r in sorted(rows, key=lambda r: r["system"] != "sluice"):
    ratio = f"{ours / r['sentences_per_s']:.2f}x" if ours and r["sentences_per_s"] else "n/a"
    label = "sluice engine (C)" if r["system"] == "sluice" else r["system"]
    print(f"| {label} | offline, batch {batch} | {r['sentences_per_s']:.1f} | n/a | {ratio} | see note |")
PY
echo
sed 's/^/note: /' "$NOTES"
echo "JSON reports and logs: $OUT"
