#!/bin/sh
# Generation served over HTTP, sluice against llama.cpp's server, same run, same
# GGUF, same prompts (Debian's fortunes as chat messages), same threads:
# `sluice-bench gen` (streaming chat, closed loop) at each concurrency against
# `sluice serve` (CPU backend), then against `llama-server` with as many parallel
# slots as the largest concurrency. Prints the load average with each side; the
# box may be shared, so read the ratios of one run, not absolutes.
#
# usage: sh bench/gen_serve_compare.sh [CONCURRENCY_LIST] [THREADS]
#   (default 1,8,32 and 2 threads). llama-server comes from bench/llamacpp_build.sh.
#   MAX_TOKENS=64 DURATION=20 WARMUP=3
#   OLD_SLUICE=/path/to/another/bin/sluice: that build served and measured too,
#   right after this one (an A/B of a change in the same run).
set -e
CONC=${1:-1,8,32}
THREADS=${2:-2}
GGUF=models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
MAX_TOKENS=${MAX_TOKENS:-64}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
[ -f "$GGUF" ] || { echo "gen_serve_compare: $GGUF is missing (make model)"; exit 1; }
make -s bin/sluice bin/sluice-bench
sh bench/fetch_corpus.sh >/dev/null
BIN=$(sh bench/llamacpp_build.sh | tail -1)
SLOTS=$(echo "$CONC" | tr ',' '\n' | sort -n | tail -1)
PIDS=""
trap 'for p in $PIDS; do kill $p 2>/dev/null; done' EXIT

wait_up() { # url
    i=0
    until curl -sf "$1" >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -gt 600 ] && { echo "gen_serve_compare: $1 never answered"; exit 1; }
        sleep 0.2
    done
}
bench() { # label url model
    echo "== $1, load $(cut -d' ' -f1-3 /proc/loadavg)"
    bin/sluice-bench gen --url "$2" --model "$3" --concurrency "$CONC" --max-tokens "$MAX_TOKENS" \
        --duration "$DURATION" --warmup "$WARMUP" --corpus bench/data/fortunes.txt
}

echo "== $(date -u +%Y-%m-%dT%H:%MZ) $(git rev-parse --short HEAD 2>/dev/null) $(nproc) cores:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
bin/sluice serve --port 8391 --models models --redis none --device cpu --cpu-threads "$THREADS" \
    --max-running-seqs "$SLOTS" --log-level warn &
PIDS="$PIDS $!"
wait_up http://127.0.0.1:8391/readyz
bench "sluice serve ($THREADS threads)" http://127.0.0.1:8391 smollm2-135m-instruct
kill $PIDS 2>/dev/null; wait 2>/dev/null || true; PIDS=""

if [ -n "$OLD_SLUICE" ]; then
    "$OLD_SLUICE" serve --port 8393 --models models --redis none --device cpu --cpu-threads "$THREADS" \
        --max-running-seqs "$SLOTS" --log-level warn &
    PIDS="$PIDS $!"
    wait_up http://127.0.0.1:8393/readyz
    bench "$OLD_SLUICE serve ($THREADS threads)" http://127.0.0.1:8393 smollm2-135m-instruct
    kill $PIDS 2>/dev/null; wait 2>/dev/null || true; PIDS=""
fi

"$BIN/llama-server" -m "$GGUF" -t "$THREADS" -np "$SLOTS" -c $((SLOTS * 1024)) --port 8392 --log-disable \
    >/dev/null 2>&1 &
PIDS="$PIDS $!"
wait_up http://127.0.0.1:8392/health
bench "llama.cpp llama-server ($THREADS threads, $SLOTS slots)" http://127.0.0.1:8392 smollm2
echo "== done, load $(cut -d' ' -f1-3 /proc/loadavg)"
