#!/bin/sh
# Redis queue throughput: starts a private redis-server (no persistence, as
# a plain `redis-server` would run; AOF=1 for appendonly yes + everysec), runs
# redis-benchmark -t set,get for context, then bench-queue_bench with 1, 2 and
# 4 workers (enqueue -> lease 64 -> ack). Stops the server at the end.
# usage: bench/queue_bench.sh [TASKS]      (from the repository root)
set -e
TASKS=${1:-200000}
BIN=${BIN:-bin}
make --no-print-directory CUDA=0 "$BIN/bench-queue_bench" >/dev/null
DIR=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
AOF=${AOF:-0}
APPENDONLY=no
[ "$AOF" = 1 ] && APPENDONLY=yes
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --daemonize no --logfile "$DIR/redis.log" \
    --save "" --appendonly $APPENDONLY --appendfsync everysec >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
i=0
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "redis-server did not start" >&2; exit 1; }; sleep 0.05
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(redis-server --version | cut -d' ' -f1-3); AOF: $APPENDONLY; load average: $(cut -d" " -f1-3 /proc/loadavg)"
echo "== redis-benchmark -t set,get -q -n 200000 (50 clients, no pipelining)"
redis-benchmark -p "$PORT" -t set,get -q -n 200000 | tr '\r' '\n' | grep 'requests per second'
for w in 1 2 4; do
    redis-cli -p "$PORT" flushall >/dev/null
    echo "== queue: enqueue -> lease(64) -> ack, $w worker thread(s)"
    redis-cli -p "$PORT" config resetstat >/dev/null
    "$BIN/bench-queue_bench" --redis "redis://127.0.0.1:$PORT/0" --tasks "$TASKS" --workers "$w" --batch 64
    # Redis CPU per task, from the server's own accounting of the script calls
    redis-cli -p "$PORT" info commandstats | tr -d '\r' | awk -F'[=,:]' -v n="$TASKS" \
        '/^cmdstat_evalsha/ { printf "   redis: %d script calls, %.1f us each, %.2f us of Redis time per task\n", $3, $7, $5 / n }'
done
