#!/bin/sh
# Queue throughput on a Redis Cluster: one master against three. Starts three
# cluster-enabled redis-servers (masters only, no persistence, as
# bench/queue_bench.sh), then runs three bench-queue_bench processes at once
# (enqueue -> lease 64 -> ack, WORKERS threads each), one per queue:
#   1 master:  the three queues' slots all on one master
#   3 masters: one queue per master
# and prints tasks/s over all three and the CPU all redis-servers spent per
# task (user + system from /proc, not wall time). Same run, same machine.
# usage: bench/cluster_bench.sh [TASKS per queue]   (from the repository root)
set -e
TASKS=${1:-50000}
WORKERS=${WORKERS:-1}
BIN=${BIN:-bin}
make --no-print-directory CUDA=0 "$BIN/bench-queue_bench" >/dev/null
DIR=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORTS=""
for i in 1 2 3; do
    p=$(free_port)
    mkdir -p "$DIR/$p"
    redis-server --port "$p" --bind 127.0.0.1 --dir "$DIR/$p" --daemonize no --logfile "$DIR/$p/redis.log" \
        --save "" --appendonly no --cluster-enabled yes --cluster-config-file nodes.conf >/dev/null 2>&1 &
    PIDS="$PIDS $!"
    PORTS="$PORTS $p"
    j=0
    until redis-cli -p "$p" ping >/dev/null 2>&1; do
        j=$((j + 1)); [ $j -gt 300 ] && { echo "redis-server did not start: $(tail -3 "$DIR/$p/redis.log")" >&2; exit 1; }; sleep 0.05
    done
done
set -- $PORTS
redis-cli --cluster create 127.0.0.1:$1 127.0.0.1:$2 127.0.0.1:$3 --cluster-yes >"$DIR/create.log" 2>&1
until redis-cli -p "$1" cluster info | grep -q 'cluster_state:ok'; do sleep 0.1; done
sleep 1
URL="redis+cluster://127.0.0.1:$1,127.0.0.1:$2,127.0.0.1:$3"

# The master serving queue $1: the one that runs a script on its key.
owner() {
    for p in $PORTS; do
        redis-cli -p "$p" eval 'return 1' 1 "{$1}:seq" 2>/dev/null | grep -qx 1 && { echo "$p"; return; }
    done
}
ONE="" SPREAD="" seen=""
first=$(owner b0)
i=0
while [ $(echo $ONE | wc -w) -lt 3 ] || [ $(echo $SPREAD | wc -w) -lt 3 ]; do
    name=b$i; o=$(owner $name); i=$((i + 1))
    [ "$o" = "$first" ] && [ $(echo $ONE | wc -w) -lt 3 ] && ONE="$ONE $name"
    case " $seen " in *" $o "*) ;; *) seen="$seen $o"; SPREAD="$SPREAD $name" ;; esac
done

cpu_ticks() { t=0; for p in $PIDS; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done; echo $t; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(redis-server --version | cut -d' ' -f1-3)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null); $TASKS tasks per queue, 3 queues, $WORKERS worker thread(s) per queue"
run() { # label, queue names
    label=$1; shift
    for p in $PORTS; do redis-cli -p "$p" flushall >/dev/null; done
    load=$(cut -d" " -f1-3 /proc/loadavg)
    cpu0=$(cpu_ticks)
    t0=$(date +%s.%N)
    bp=""
    for q in "$@"; do
        "$BIN/bench-queue_bench" --redis "$URL" --queue "$q" --tasks "$TASKS" --workers "$WORKERS" --batch 64 \
            >"$DIR/$q.out" 2>&1 &
        bp="$bp $!"
    done
    for p in $bp; do wait "$p" || { cat "$DIR"/*.out; exit 1; }; done
    t1=$(date +%s.%N)
    cpu1=$(cpu_ticks)
    awk -v t0="$t0" -v t1="$t1" -v n=$((TASKS * $#)) -v ticks=$((cpu1 - cpu0)) -v hz="$(getconf CLK_TCK)" \
        -v label="$label" -v load="$load" \
        'BEGIN { printf "%-10s %8.0f tasks/s  redis CPU %5.1f us/task  (%.2f s; load average before: %s)\n",
                 label, n / (t1 - t0), ticks * 1e6 / hz / n, t1 - t0, load }'
}
run "1 master" $ONE
run "3 masters" $SPREAD
run "1 master" $ONE
run "3 masters" $SPREAD
