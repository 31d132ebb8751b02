#!/bin/sh
# Redis queue throughput: starts a private redis-server (no persistence, as
# a plain `redis-server` would run; AOF=1 for appendonly yes + everysec), runs
# redis-benchmark -t set,get for context, then bench-queue_bench with 1, 2 and
# 4 workers (enqueue -> lease 64 -> ack). Stops the server at the end.
# usage: bench/queue_bench.sh [TASKS]      (from the repository root)
# env: AOF=1 (appendonly yes, everysec), PREFILL=1 (time enqueue and lease+ack apart),
#      REDIS_ARGS="--hash-max-listpack-value 256" (more redis-server options)
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
    --save "" --appendonly $APPENDONLY --appendfsync everysec $REDIS_ARGS >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
i=0
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "redis-server did not start" >&2; exit 1; }; sleep 0.05
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(redis-server --version | cut -d' ' -f1-3); AOF: $APPENDONLY${REDIS_ARGS:+; $REDIS_ARGS}; load average: $(cut -d" " -f1-3 /proc/loadavg)"
echo "== redis-benchmark -t set,get -q -n 200000 (50 clients, no pipelining)"
redis-benchmark -p "$PORT" -t set,get -q -n 200000 | tr '\r' '\n' | grep 'requests per second'
echo "== redis-benchmark -t set -P 64 (pipelined: what one Redis core executes)"
redis-benchmark -p "$PORT" -t set -q -n 1000000 -P 64 | tr '\r' '\n' | grep 'requests per second'
# utime + stime of the server, in clock ticks
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
PREFILL=${PREFILL:+--prefill}
for w in 1 2 4; do
    redis-cli -p "$PORT" flushall >/dev/null
    echo "== queue: enqueue -> lease(64) -> ack, $w worker thread(s)"
    cpu0=$(cpu_ticks)
    "$BIN/bench-queue_bench" --redis "redis://127.0.0.1:$PORT/0" --tasks "$TASKS" --workers "$w" --batch 64 $PREFILL
    # CPU the server itself spent per task (user + system, from /proc): unlike
    # wall time, it does not grow when other processes load the machine.
    cpu1=$(cpu_ticks)
    awk -v t=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" -v n="$TASKS" \
        'BEGIN { us = t * 1e6 / hz / n; printf "   redis-server CPU: %.1f us per task (one Redis core would carry ~%.0f tasks/s)\n", us, 1e6 / us }'
done
