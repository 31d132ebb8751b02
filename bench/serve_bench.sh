#!/bin/sh
# Throughput and latency of `sluice serve` on the CPU backend at HTTP
# concurrency 1, 16 and 64 (closed loop, sluice-bench), plus the share of
# server time spent outside compute, from the server's own counters:
#   outside = 1 - (compute seconds of the batches each request rode in) /
#                 (seconds each request spent in the server, receipt to answer)
# split into the wait in the pending queue (for the batch window, or for the
# batch ahead to finish) and the rest: HTTP, JSON, tokenization, packing and
# writing the answer.
#
# usage: bench/serve_bench.sh [MODEL_DIR]     (after `make`)
# env:   CONCURRENCY="1 16 64" DURATION=10 WARMUP=2 TOKENS=16 DELAY_MS=5
#        SERVE_FLAGS="..." (more sluice serve flags) OUT=bench/out
# Writes $OUT/serve_bench.md (a Markdown table) and one sluice-bench JSON per level.
set -e
MODEL_DIR=${1:-models/all-minilm-l6-v2}
CONCURRENCY=${CONCURRENCY:-"1 16 64"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
TOKENS=${TOKENS:-16}
DELAY_MS=${DELAY_MS:-5}
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
TMP=$(mktemp -d)
SERVE_PID=""
cleanup() { [ -n "$SERVE_PID" ] && kill -TERM "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

[ -x bin/sluice ] && [ -x bin/sluice-bench ] || { echo "serve_bench: build first (make)"; exit 1; }
# shellcheck disable=SC2086
bin/sluice serve --port 0 --port-file "$TMP/port" --device cpu --redis none --log-level warn \
    --models "$MODEL_DIR" --preload all --max-queue-delay-ms "$DELAY_MS" $SERVE_FLAGS 2>"$TMP/serve.log" &
SERVE_PID=$!
i=0
while [ ! -s "$TMP/port" ]; do
    sleep 0.1; i=$((i + 1))
    [ $i -gt 300 ] && { echo "serve_bench: server did not start"; cat "$TMP/serve.log"; exit 1; }
done
PORT=$(cat "$TMP/port")
URL=http://127.0.0.1:$PORT
until curl -sf "$URL/readyz" >/dev/null; do sleep 0.1; done

metric() { # name -> value from /metrics
    curl -s "$URL/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}

{
    echo "sluice serve on the CPU backend: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load generator on the same machine"
    echo "model $(basename "$MODEL_DIR"), one generated input of $TOKENS words per request, max_queue_delay ${DELAY_MS} ms, ${DURATION} s per level after ${WARMUP} s warm-up"
    echo
    echo "| concurrency | requests/s | p50 ms | p99 ms | mean batch | server ms/request | compute ms | queue wait ms | other ms | outside compute | of which other |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} >"$OUT/serve_bench.md"

for c in $CONCURRENCY; do
    r0=$(metric sluice_embed_request_seconds_total); k0=$(metric sluice_embed_compute_seconds_total)
    n0=$(metric sluice_embed_requests_total)
    w0=$(metric sluice_queue_wait_seconds_sum); wc0=$(metric sluice_queue_wait_seconds_count)
    bin/sluice-bench --url "$URL" --concurrency "$c" --warmup "$WARMUP" --duration "$DURATION" \
        --gen-tokens "$TOKENS" --progress off --json "$OUT/serve_bench_c$c.json" >"$TMP/bench.out" 2>&1 ||
        { cat "$TMP/bench.out"; exit 1; }
    r1=$(metric sluice_embed_request_seconds_total); k1=$(metric sluice_embed_compute_seconds_total)
    n1=$(metric sluice_embed_requests_total)
    w1=$(metric sluice_queue_wait_seconds_sum); wc1=$(metric sluice_queue_wait_seconds_count)
    python3 - "$OUT/serve_bench_c$c.json" "$c" "$r0" "$r1" "$k0" "$k1" "$n0" "$n1" "$w0" "$w1" "$wc0" "$wc1" \
        >>"$OUT/serve_bench.md" <<'PY'
import json, sys
path, c, r0, r1, k0, k1, n0, n1, w0, w1, wc0, wc1 = sys.argv[1:]
run = json.load(open(path))["runs"][0]
req, comp, n = float(r1) - float(r0), float(k1) - float(k0), float(n1) - float(n0)
wait = (float(w1) - float(w0)) / max(1.0, float(wc1) - float(wc0))
lat = run["latency_ms"]
batch = run.get("server", {}).get("mean_batch_size", float("nan"))
per, cper = req / n, comp / n
other = per - cper - wait
print("| %s | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f%% | %.0f%% |" % (
    c, run["requests_per_s"], lat["p50"], lat["p99"], batch, 1e3 * per, 1e3 * cper, 1e3 * wait,
    1e3 * other, 100 * (1 - cper / per), 100 * other / per))
PY
done
cat "$OUT/serve_bench.md"
