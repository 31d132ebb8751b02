#!/bin/sh
# Two `sluice serve` workers behind nginx (Debian package) with the example
# config packaging/nginx-sluice.conf: checks that both workers answer through
# it, that a long-poll passes unbuffered, that a worker draining on SIGTERM
# costs no failed request (nginx moves its 503s to the other worker), and
# runs sluice-bench through nginx and against one worker directly (same run).
# usage: bench/lb_bench.sh [MODEL_DIR]   (after `make`; needs nginx, redis-server)
# env: DURATION=5 CONCURRENCY=16 TOKENS=16
set -e
MODEL_DIR=${1:-models/all-minilm-l6-v2}
DURATION=${DURATION:-5}
CONCURRENCY=${CONCURRENCY:-16}
TOKENS=${TOKENS:-16}
for t in nginx redis-server curl; do
    command -v $t >/dev/null 2>&1 || [ -x /usr/sbin/$t ] || { echo "lb_bench: SKIP: $t not found"; exit 0; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x bin/sluice ] && [ -x bin/sluice-bench ] || { echo "lb_bench: build first (make)"; exit 1; }
TMP=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM
fail() { echo "lb_bench: FAIL: $*"; for f in "$TMP"/*.log; do echo "-- $f"; tail -5 "$f"; done; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$TMP" --save "" --appendonly no --logfile "$TMP/redis.log" &
PIDS="$PIDS $!"
for w in 1 2; do
    bin/sluice serve --port 0 --port-file "$TMP/port$w" --device cpu --cpu-threads 1 --log-level warn \
        --redis "redis://127.0.0.1:$RPORT/0" --models "$MODEL_DIR" --preload all --drain-timeout-ms 3000 \
        2>"$TMP/worker$w.log" &
    eval "W$w=$!"
    PIDS="$PIDS $!"
done
for w in 1 2; do
    i=0
    until [ -s "$TMP/port$w" ] && curl -sf "http://127.0.0.1:$(cat "$TMP/port$w")/readyz" >/dev/null; do
        i=$((i + 1)); [ $i -gt 300 ] && fail "worker $w not ready"; sleep 0.1
    done
done
P1=$(cat "$TMP/port1") P2=$(cat "$TMP/port2") LB=$(free_port)
mkdir -p "$TMP/nginx"
sed -e "s/127.0.0.1:8081/127.0.0.1:$P1/" -e "s/127.0.0.1:8082/127.0.0.1:$P2/" \
    -e "s/listen 127.0.0.1:8080/listen 127.0.0.1:$LB/" packaging/nginx-sluice.conf >"$TMP/nginx/sluice.conf"
cat >"$TMP/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    include $TMP/nginx/sluice.conf;
}
CONF
"$NGINX" -t -q -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" 2>"$TMP/nginx-t.log" || fail "nginx -t: $(cat "$TMP/nginx-t.log")"
"$NGINX" -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" 2>>"$TMP/nginx.log" &
PIDS="$PIDS $!"
URL=http://127.0.0.1:$LB
i=0
until curl -sf "$URL/readyz" >/dev/null; do i=$((i + 1)); [ $i -gt 50 ] && fail "nginx not answering"; sleep 0.1; done

# Both workers serve through nginx.
seen=""
for i in 1 2 3 4 5 6; do
    w=$(curl -s -o /dev/null -D - -H 'Content-Type: application/json' -d '{"input":"hello"}' "$URL/v1/embeddings" |
        tr -d '\r' | sed -n 's/^X-Sluice-Worker: //p')
    seen="$seen $w"
done
echo "$seen" | grep -q ":$P1" && echo "$seen" | grep -q ":$P2" || fail "requests did not reach both workers:$seen"
# A long-poll passes: a task's result waited for through nginx.
id=$(curl -sf -H 'Content-Type: application/json' -d '{"input":"a task"}' "$URL/v1/tasks" | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')
[ -n "$id" ] || fail "POST /v1/tasks through nginx"
curl -sf "$URL/v1/tasks/$id?wait=5" | grep -q '"state":"done"' || fail "GET /v1/tasks/$id?wait=5 through nginx"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $("$NGINX" -v 2>&1 | cut -d' ' -f3)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null); workers: --device cpu --cpu-threads 1; sluice-bench --concurrency $CONCURRENCY --gen-tokens $TOKENS --duration $DURATION"
# One sluice-bench run; prints its table row: | load | requests/s | inputs/s |
# tokens/s | p50 | p90 | p99 | p99.9 | errors | ...
bench() { # label url
    load=$(cut -d" " -f1-3 /proc/loadavg)
    bin/sluice-bench --url "$2" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 1 \
        --gen-tokens "$TOKENS" --vocab "$MODEL_DIR/vocab.txt" --metrics-url none --progress off \
        --json "$TMP/$1.json" >"$TMP/$1.txt" 2>&1 || fail "sluice-bench $1: $(tail -3 "$TMP/$1.txt")"
    line=$(grep '^| closed' "$TMP/$1.txt" | head -1)
    echo "$1: $line (load average before: $load)"
}
bench one-worker "http://127.0.0.1:$P1"
bench nginx-2-workers "$URL"

# Drain: SIGTERM worker 1 while load runs through nginx: no request fails.
( sleep 2; kill -TERM "$W1" ) &
bench nginx-drain "$URL"
errors=$(grep '^| closed' "$TMP/nginx-drain.txt" | head -1 | awk -F'|' '{ gsub(/ /, "", $10); print $10 }')
[ "$errors" = 0 ] || fail "$errors failed requests while a worker drained"
echo "lb_bench: PASS (both workers served, long-poll through nginx, drain with no failed request)"
