#!/bin/sh
# Latency against throughput of `sluice serve` on this machine: starts the
# server (HTTP only) on a free port, lets `sluice-bench --sweep` raise an
# open-loop request rate until p99 breaks the target, and keeps the table,
# the JSON report and the PNG under $OUT.
#
# usage: bench/sweep.sh [P99_TARGET_MS]          (default 200)
# environment: DEVICE (cpu), INPUTS_PER_REQUEST (1), LIMIT (1000 sentences),
#   WARMUP (3 s), DURATION (10 s per step), MAX_STEPS (12), RATE and RATE_STEP
#   (default: from a closed-loop probe), SERVE_FLAGS (more `sluice serve` flags),
#   OUT (bench/out/sweep-DATE)
set -e
cd "$(dirname "$0")/.."
TARGET=${1:-200}
DEVICE=${DEVICE:-cpu}
K=${INPUTS_PER_REQUEST:-1}
LIMIT=${LIMIT:-1000}
OUT=${OUT:-bench/out/sweep-$(date -u +%Y%m%dT%H%M%SZ)}
MODEL=models/all-minilm-l6-v2
mkdir -p "$OUT"
make --no-print-directory model >/dev/null
# shellcheck disable=SC2046
make --no-print-directory $([ "$DEVICE" = cpu ] && echo CUDA=0) bin/sluice bin/sluice-bench >/dev/null
sh bench/fetch_corpus.sh >/dev/null

PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# shellcheck disable=SC2086
bin/sluice serve --port 0 --port-file "$OUT/port" --redis none --device "$DEVICE" \
    --models "$(dirname "$MODEL")" --preload "$(basename "$MODEL")" --log-level warn $SERVE_FLAGS \
    >"$OUT/serve.log" 2>&1 &
PID=$!
i=0
until [ -s "$OUT/port" ] &&
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(cat "$OUT/port")/readyz")" = 200 ]; do
    i=$((i + 1))
    if [ $i -gt 600 ] || ! kill -0 "$PID" 2>/dev/null; then
        echo "sweep: sluice serve did not become ready:" >&2
        tail -5 "$OUT/serve.log" >&2
        exit 1
    fi
    sleep 0.1
done
echo "sweep: $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), device $DEVICE," \
    "commit $(git rev-parse --short HEAD 2>/dev/null || echo none), $(date -u +%Y-%m-%dT%H:%MZ)" | tee "$OUT/machine.txt"
bin/sluice-bench --url "http://127.0.0.1:$(cat "$OUT/port")" --corpus bench/data/fortunes.txt --limit "$LIMIT" \
    --inputs-per-request "$K" --warmup "${WARMUP:-3}" --duration "${DURATION:-10}" --max-steps "${MAX_STEPS:-12}" \
    ${RATE:+--rate "$RATE"} ${RATE_STEP:+--rate-step "$RATE_STEP"} \
    --sweep --p99-target-ms "$TARGET" --json "$OUT/sweep.json" --png "$OUT/sweep.png" | tee "$OUT/sweep.md"
echo "sweep: table, JSON and plot in $OUT"
